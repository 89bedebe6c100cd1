//! The header of a TURN Data indication (RFC 8656 §11.4), written in front of
//! a payload that is already in place, so that relaying copies nothing.
//!
//! A Data indication is read back like any STUN message, with
//! [`super::view::StunView`]; this module only writes one.
//!
//! ```text
//! STUN header (20) | XOR-PEER-ADDRESS (4 + 8 or 20) | DATA header (4) | payload | padding
//! ```

use std::net::SocketAddr;

use super::view::{self, attr, method, Class, HEADER_LEN, MAGIC_COOKIE};

/// The longest header, for an IPv6 peer.
pub const MAX_HEADER_LEN: usize = HEADER_LEN + 4 + 20 + 4;

/// The header's length for a message from `peer`.
pub fn header_len(peer: SocketAddr) -> usize {
    let addr = if peer.is_ipv4() { 8 } else { 20 };
    HEADER_LEN + 4 + addr + 4
}

/// Zero bytes that follow a payload of `len` bytes to end the DATA attribute on a 4-byte boundary.
pub fn padding(len: usize) -> usize {
    len.next_multiple_of(4) - len
}

/// Writes the header of a Data indication with transaction ID `tid`, from
/// `peer`, carrying `payload_len` bytes, at the end of `headroom` (the bytes
/// just before the payload). Returns where the header starts in `headroom`,
/// or `None` if it does not fit there or the message would be too long.
pub fn emit_header(headroom: &mut [u8], tid: &[u8; 12], peer: SocketAddr, payload_len: usize) -> Option<usize> {
    // Written in place, field by field from the end of the headroom (the payload's start): the
    // relay path calls this per packet, and a staging buffer or re-sliced header cost ~20% there.
    let end = headroom.len();
    let mut addr = [0u8; 20];
    let alen = view::encode_xor_address(peer, tid, &mut addr);
    let hlen = HEADER_LEN + 4 + alen + 4;
    let start = end.checked_sub(hlen)?;
    let body = u16::try_from(hlen - HEADER_LEN + payload_len + padding(payload_len)).ok()?;
    let data_len = u16::try_from(payload_len).ok()?;
    headroom[start..start + 2].copy_from_slice(&view::message_type(method::DATA, Class::Indication).to_be_bytes());
    headroom[start + 2..start + 4].copy_from_slice(&body.to_be_bytes());
    headroom[start + 4..start + 8].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
    headroom[start + 8..start + 20].copy_from_slice(tid);
    headroom[start + 20..start + 22].copy_from_slice(&attr::XOR_PEER_ADDRESS.to_be_bytes());
    headroom[start + 22..start + 24].copy_from_slice(&(alen as u16).to_be_bytes());
    headroom[start + 24..start + 24 + alen].copy_from_slice(&addr[..alen]);
    headroom[end - 4..end - 2].copy_from_slice(&attr::DATA.to_be_bytes());
    headroom[end - 2..end].copy_from_slice(&data_len.to_be_bytes());
    Some(start)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stun::view::StunView;

    #[test]
    fn emitted_header_parses_back_through_the_view() {
        for (peer, payload) in [("192.0.2.7:9", &b"hello"[..]), ("[2001:db8::7]:65535", b""), ("10.0.0.1:1", b"1234")] {
            let peer: SocketAddr = peer.parse().unwrap();
            let tid = [5u8; 12];
            let mut buf = vec![0xEEu8; MAX_HEADER_LEN + payload.len() + 3];
            buf[MAX_HEADER_LEN..MAX_HEADER_LEN + payload.len()].copy_from_slice(payload);
            let end = MAX_HEADER_LEN + payload.len();
            buf[end..end + padding(payload.len())].fill(0);
            let start = emit_header(&mut buf[..MAX_HEADER_LEN], &tid, peer, payload.len()).unwrap();
            assert_eq!(MAX_HEADER_LEN - start, header_len(peer));
            let v = StunView::new_checked(&buf[start..end + padding(payload.len())]).unwrap();
            assert_eq!((v.class(), v.method()), (Class::Indication, method::DATA));
            assert_eq!(v.transaction_id(), tid);
            assert_eq!(v.xor_address(attr::XOR_PEER_ADDRESS), Some(peer));
            assert_eq!(v.find(attr::DATA), Some(payload));
        }
    }

    #[test]
    fn refuses_what_does_not_fit() {
        let peer: SocketAddr = "[2001:db8::7]:1".parse().unwrap();
        assert_eq!(emit_header(&mut [0u8; MAX_HEADER_LEN - 1], &[0; 12], peer, 1), None);
        assert_eq!(emit_header(&mut [0u8; MAX_HEADER_LEN], &[0; 12], peer, 0xFFFF), None);
    }
}
