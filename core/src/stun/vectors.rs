//! The published test vectors: RFC 5769's for MESSAGE-INTEGRITY (short- and
//! long-term credentials), FINGERPRINT and XOR-MAPPED-ADDRESS, and RFC 8489
//! Appendix B.1 (as corrected by erratum 6268) for MESSAGE-INTEGRITY-SHA256
//! with the SHA-256 password algorithm. Each is checked through the same view
//! the server reads requests with.

use super::message;
use super::view::{attr, password_algorithms, Class, StunView};
use crate::turn::auth::{long_term_key, long_term_key_sha256};

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

/// RFC 5769 §2.1-2.3: the short-term password.
const SHORT_TERM: &[u8] = b"VOkJxbRl1RmTxUk/WvJxBt";
/// "マトリックス", as RFC 5769 §2.4 and RFC 8489 §B.1 use it.
const USER: &str = "\u{30DE}\u{30C8}\u{30EA}\u{30C3}\u{30AF}\u{30B9}";
/// The password after SASLprep / OpaqueString.
const PASSWORD: &str = "TheMatrIX";

/// RFC 5769 §2.1, sample request.
fn sample_request() -> Vec<u8> {
    hex("000100582112a442b7e7a701bc34d686fa87dfae802200105354554e207465737420636c69656e74
         002400046e0001ff80290008932ff9b151263b36000600096576746a3a68367659202020
         000800149aeaa70cbfd8cb56781ef2b5b2d3f249c1b571a280280004e57a3bcf")
}

#[test]
fn rfc5769_sample_request() {
    let b = sample_request();
    let v = StunView::new_checked(&b).unwrap();
    assert_eq!(v.class(), Class::Request);
    assert_eq!(v.find(attr::USERNAME), Some(&b"evtj:h6vY"[..]));
    assert_eq!(v.find(attr::SOFTWARE), Some(&b"STUN test client"[..]));
    assert!(v.check_integrity(SHORT_TERM));
    assert!(!v.check_integrity(b"VOkJxbRl1RmTxUk/WvJxBu"));
    assert_eq!(v.fingerprint_ok(), Some(true));
    // The integrity covers everything before it: one flipped bit in the username and it fails.
    let mut bad = b.clone();
    bad[70] ^= 1;
    assert!(!StunView::new_checked(&bad).unwrap().check_integrity(SHORT_TERM));
}

#[test]
fn rfc5769_sample_responses_ipv4_and_ipv6() {
    let v4 = hex("0101003c2112a442b7e7a701bc34d686fa87dfae8022000b7465737420766563746f7220
                  00200008 0001a147e112a643
                  000800142b91f599fd9e90c38c7489f92af9ba53f06be7d780280004c07d4c96");
    let v = StunView::new_checked(&v4).unwrap();
    assert_eq!(v.class(), Class::Success);
    assert_eq!(v.xor_address(attr::XOR_MAPPED_ADDRESS), Some("192.0.2.1:32853".parse().unwrap()));
    assert!(v.check_integrity(SHORT_TERM));
    assert_eq!(v.fingerprint_ok(), Some(true));

    let v6 = hex("010100482112a442b7e7a701bc34d686fa87dfae8022000b7465737420766563746f7220
                  00200014 0002a1470113a9faa5d3f179bc25f4b5bed2b9d9
                  00080014a382954e4be67bf11784c97c8292c275bfe3ed4180280004c8fb0b4c");
    let v = StunView::new_checked(&v6).unwrap();
    assert_eq!(v.xor_address(attr::XOR_MAPPED_ADDRESS), Some("[2001:db8:1234:5678:11:2233:4455:6677]:32853".parse().unwrap()));
    assert!(v.check_integrity(SHORT_TERM));
    assert_eq!(v.fingerprint_ok(), Some(true));
}

#[test]
fn rfc5769_long_term_request() {
    let b = hex("000100602112a44278ad3433c6ad72c029da412e00060012e3839ee38388e383aae38383e382afe382b90000
                 0015001c662f2f3439396b3935346436 4f4c33346f4c39465354767936347341
                 0014000b6578616d706c652e6f726700
                 00080014f67024656dd64a3e02b8e0712e85c9a28ca89666");
    let v = StunView::new_checked(&b).unwrap();
    assert_eq!(v.find(attr::USERNAME), Some(USER.as_bytes()));
    assert_eq!(v.find(attr::NONCE), Some(&b"f//499k954d6OL34oL9FSTvy64sA"[..]));
    let key = long_term_key(USER, "example.org", PASSWORD);
    assert!(v.check_integrity(&key));
    assert!(!v.check_integrity(&long_term_key(USER, "example.org", "TheMatrIx")));
    // Our encoder seals the same bytes to the same tag.
    let mut again = b[..b.len() - 24].to_vec();
    message::append_integrity(&mut again, &key);
    assert_eq!(again, b);
}

/// RFC 8489 Appendix B.1 as erratum 6268 corrects it (the RFC's own bytes lack PASSWORD-ALGORITHM and
/// their length field is wrong): a Binding request with USERHASH, NONCE with the nonce cookie, REALM,
/// PASSWORD-ALGORITHM SHA-256 and MESSAGE-INTEGRITY-SHA256.
#[test]
fn rfc8489_b1_message_integrity_sha256() {
    let b = hex("000100902112a44278ad3433c6ad72c029da412e
                 001e00204a3cf38fef6992bda952c6780417da0f24819415569e60b205c46e41407f1704
                 001500296f624d61744a6f73324141414366 2f2f3439396b39353464364f4c33346f4c394653547679363473 41000000
                 0014000b6578616d706c652e6f726700
                 001d000400020000
                 001c0020b5c7bf005b6c52a21c51c5e892f81924136296cb927c43149309278cc6518e65");
    let v = StunView::new_checked(&b).unwrap();
    assert!(v.known_attributes_well_formed());
    assert!(v.has_integrity_sha256());
    assert_eq!(v.find(attr::NONCE), Some(&b"obMatJos2AAACf//499k954d6OL34oL9FSTvy64sA"[..]));
    let alg: Vec<_> = password_algorithms(v.find(attr::PASSWORD_ALGORITHM).unwrap()).collect();
    assert_eq!(alg, vec![(2u16, &[][..])]);
    let key = long_term_key_sha256(USER, "example.org", PASSWORD);
    assert!(v.check_integrity_sha256(&key));
    assert!(!v.check_integrity_sha256(&long_term_key(USER, "example.org", PASSWORD)), "the MD5 key must not verify");
    assert!(!v.check_integrity(&key), "there is no MESSAGE-INTEGRITY to check");
    // Our encoder produces the same tag.
    let mut again = b[..b.len() - 36].to_vec();
    message::append_integrity_sha256(&mut again, &key);
    assert_eq!(again, b);
    // A tag truncated to 16 bytes (the shortest allowed: computed over a header that counts the short
    // attribute, then cut) verifies; a wrong one of that length does not, and 12 bytes is malformed.
    let truncated = |n: usize, flip: bool| {
        use hmac::{Hmac, Mac};
        let mut m = b[..b.len() - 36].to_vec();
        let len = (m.len() - 20 + 4 + n) as u16;
        m[2..4].copy_from_slice(&len.to_be_bytes());
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
        mac.update(&m);
        let tag = mac.finalize().into_bytes();
        m.extend_from_slice(&[0x00, 0x1c, 0x00, n as u8]);
        m.extend_from_slice(&tag[..n]);
        if flip {
            *m.last_mut().unwrap() ^= 1;
        }
        StunView::new_checked(&m).unwrap().check_integrity_sha256(&key)
    };
    assert!(truncated(16, false));
    assert!(truncated(20, false));
    assert!(!truncated(16, true));
    assert!(!truncated(12, false));
}

#[test]
fn password_algorithm_lists_parse_and_refuse_garbage() {
    let list: Vec<_> = password_algorithms(&[0, 2, 0, 0, 0, 1, 0, 0]).collect();
    assert_eq!(list, vec![(2, &[][..]), (1, &[][..])]);
    let with_params: Vec<_> = password_algorithms(&[0, 9, 0, 3, 7, 7, 7, 0, 0, 1, 0, 0]).collect();
    assert_eq!(with_params, vec![(9, &[7u8, 7, 7][..]), (1, &[][..])]);
    assert_eq!(password_algorithms(&[0, 2, 0]).count(), None);
    assert_eq!(password_algorithms(&[0, 2, 0, 8, 1, 2, 3, 4]).count(), None);
    assert_eq!(password_algorithms(&[]).count(), Some(0));
}
