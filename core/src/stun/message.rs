//! Typed STUN/TURN messages through `stun_codec`, plus the two trailer
//! attributes (MESSAGE-INTEGRITY, FINGERPRINT) appended over the exact bytes.
//!
//! The server reads what it receives through [`super::view::StunView`];
//! [`decode`] is for tests and tools that want an independent, typed reading
//! of what the server encodes.

use bytecodec::{DecodeExt, EncodeExt};
use hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::Sha256;
use stun_codec::rfc5389::attributes::{
    ErrorCode, MappedAddress, Nonce, Realm, Software, UnknownAttributes, Username,
    XorMappedAddress,
};
use stun_codec::rfc5766::attributes::{
    Data, DontFragment, EvenPort, Lifetime, RequestedTransport, ReservationToken,
    XorPeerAddress, XorRelayAddress,
};
use stun_codec::rfc5780::attributes::{OtherAddress, ResponseOrigin};
use stun_codec::rfc8656::attributes::RequestedAddressFamily;
use stun_codec::{MessageClass, MessageDecoder, MessageEncoder, Method, TransactionId};

use super::view::{attr, FINGERPRINT_XOR, HEADER_LEN};

pub use stun_codec::Message;

mod set {
    #![allow(missing_docs)]
    use super::*;
    stun_codec::define_attribute_enums!(
        Attribute,
        AttributeDecoder,
        AttributeEncoder,
        [
            MappedAddress,
            Username,
            ErrorCode,
            UnknownAttributes,
            Realm,
            Nonce,
            XorMappedAddress,
            Software,
            Lifetime,
            XorPeerAddress,
            Data,
            XorRelayAddress,
            EvenPort,
            RequestedTransport,
            DontFragment,
            ReservationToken,
            RequestedAddressFamily,
            OtherAddress,
            ResponseOrigin
        ]
    );
}
pub use set::Attribute;

/// Attribute types this server understands. A comprehension-required
/// attribute outside this list is answered with 420 (RFC 8489 §7.3.1).
pub const KNOWN_ATTRIBUTES: &[u16] = &[
    attr::MAPPED_ADDRESS,
    attr::USERNAME,
    attr::MESSAGE_INTEGRITY,
    attr::ERROR_CODE,
    attr::UNKNOWN_ATTRIBUTES,
    attr::CHANNEL_NUMBER,
    attr::LIFETIME,
    attr::XOR_PEER_ADDRESS,
    attr::DATA,
    attr::REALM,
    attr::NONCE,
    attr::XOR_RELAYED_ADDRESS,
    attr::REQUESTED_ADDRESS_FAMILY,
    attr::REQUESTED_TRANSPORT,
    attr::DONT_FRAGMENT,
    attr::XOR_MAPPED_ADDRESS,
    attr::EVEN_PORT,
    attr::RESERVATION_TOKEN,
    attr::MESSAGE_INTEGRITY_SHA256,
    attr::PASSWORD_ALGORITHM,
    attr::CONNECTION_ID,
    attr::PASSWORD_ALGORITHMS,
];

/// Decodes a message with `stun_codec` (allocates; for tests and tools).
/// `None` when it cannot decode it.
///
/// CHANNEL-NUMBER is left out of the typed set on purpose: `stun_codec`
/// refuses numbers above 0x4FFF, which RFC 5766 clients use, and would fail
/// the whole message. It is read through the view instead.
pub fn decode(bytes: &[u8]) -> Option<Message<Attribute>> {
    let mut decoder = MessageDecoder::<Attribute>::new();
    decoder.decode_from_bytes(bytes).ok()?.ok()
}

/// Starts a response of `class` to a request with `method` and `tid`.
pub fn response(method: u16, class: MessageClass, tid: [u8; 12]) -> Message<Attribute> {
    Message::new(class, Method::new(method).unwrap_or(stun_codec::rfc5389::methods::BINDING), TransactionId::new(tid))
}

/// Starts an error response carrying ERROR-CODE `code`.
pub fn error_response(method: u16, tid: [u8; 12], code: u16) -> Message<Attribute> {
    let mut m = response(method, MessageClass::ErrorResponse, tid);
    // Every code we send is in 300..=699 and the reason is short ASCII, so `new` succeeds.
    if let Ok(ec) = ErrorCode::new(code, reason(code).to_owned()) {
        m.add_attribute(ec);
    }
    m
}

/// The reason phrase sent with an error code.
pub fn reason(code: u16) -> &'static str {
    match code {
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        420 => "Unknown Attribute",
        437 => "Allocation Mismatch",
        438 => "Stale Nonce",
        440 => "Address Family not Supported",
        441 => "Wrong Credentials",
        442 => "Unsupported Transport Protocol",
        443 => "Peer Address Family Mismatch",
        446 => "Connection Already Exists",
        447 => "Connection Timeout or Failure",
        486 => "Allocation Quota Reached",
        500 => "Server Error",
        508 => "Insufficient Capacity",
        _ => "Error",
    }
}

/// The integrity attribute a message is sealed with, and its key.
#[derive(Clone, Copy)]
pub enum Integrity<'k> {
    /// MESSAGE-INTEGRITY (HMAC-SHA1), what every client speaks.
    Sha1(&'k [u8]),
    /// MESSAGE-INTEGRITY-SHA256 (RFC 8489 §14.6), full 32 bytes.
    Sha256(&'k [u8]),
}

impl std::fmt::Debug for Integrity<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Integrity::Sha1(_) => "Integrity::Sha1(<key>)",
            Integrity::Sha256(_) => "Integrity::Sha256(<key>)",
        })
    }
}

/// Encodes `msg`, then appends MESSAGE-INTEGRITY (when `key` is given) and
/// FINGERPRINT (when `fingerprint`).
pub fn encode(msg: Message<Attribute>, key: Option<&[u8]>, fingerprint: bool) -> Vec<u8> {
    encode_with(msg, key.map(Integrity::Sha1), fingerprint)
}

/// Encodes `msg`, then appends the integrity attribute `integrity` asks for
/// and FINGERPRINT (when `fingerprint`).
pub fn encode_with(msg: Message<Attribute>, integrity: Option<Integrity<'_>>, fingerprint: bool) -> Vec<u8> {
    let mut encoder = MessageEncoder::<Attribute>::new();
    // Encoding fails only for attributes over 64 KiB, which this server never builds.
    let mut out = encoder.encode_into_bytes(msg).unwrap_or_default();
    if out.len() < HEADER_LEN {
        return out;
    }
    seal(&mut out, integrity, fingerprint);
    out
}

/// Appends the integrity attribute `integrity` asks for, then FINGERPRINT
/// when `fingerprint`, to an encoded message (after any raw attributes).
pub fn seal(buf: &mut Vec<u8>, integrity: Option<Integrity<'_>>, fingerprint: bool) {
    if buf.len() < HEADER_LEN {
        return;
    }
    match integrity {
        Some(Integrity::Sha1(key)) => append_integrity(buf, key),
        Some(Integrity::Sha256(key)) => append_integrity_sha256(buf, key),
        None => {}
    }
    if fingerprint {
        append_fingerprint(buf);
    }
}

fn set_length(buf: &mut [u8], body_len: usize) {
    buf[2..4].copy_from_slice(&(body_len as u16).to_be_bytes());
}

/// Appends a raw attribute (type, length, value, zero padding to 4 bytes) to
/// an encoded message and updates the header's length. With
/// [`append_integrity`] and [`append_fingerprint`] this builds any message,
/// malformed ones included (for tests and clients).
pub fn append_attribute(buf: &mut Vec<u8>, typ: u16, value: &[u8]) {
    let len = value.len().min(usize::from(u16::MAX));
    buf.extend_from_slice(&typ.to_be_bytes());
    buf.extend_from_slice(&(len as u16).to_be_bytes());
    buf.extend_from_slice(&value[..len]);
    while !buf.len().is_multiple_of(4) {
        buf.push(0);
    }
    let body = buf.len() - HEADER_LEN;
    set_length(buf, body);
}

/// Appends MESSAGE-INTEGRITY (HMAC-SHA1 with `key`) to an encoded message.
pub fn append_integrity(buf: &mut Vec<u8>, key: &[u8]) {
    let body = buf.len() - HEADER_LEN + 24;
    set_length(buf, body);
    // HMAC accepts keys of any length.
    let mut mac = Hmac::<Sha1>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(buf);
    let tag = mac.finalize().into_bytes();
    buf.extend_from_slice(&attr::MESSAGE_INTEGRITY.to_be_bytes());
    buf.extend_from_slice(&20u16.to_be_bytes());
    buf.extend_from_slice(&tag);
}

/// Appends MESSAGE-INTEGRITY-SHA256 (HMAC-SHA256 with `key`, all 32 bytes)
/// to an encoded message.
pub fn append_integrity_sha256(buf: &mut Vec<u8>, key: &[u8]) {
    let body = buf.len() - HEADER_LEN + 36;
    set_length(buf, body);
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(buf);
    let tag = mac.finalize().into_bytes();
    buf.extend_from_slice(&attr::MESSAGE_INTEGRITY_SHA256.to_be_bytes());
    buf.extend_from_slice(&32u16.to_be_bytes());
    buf.extend_from_slice(&tag);
}

/// Appends FINGERPRINT to an encoded message.
pub fn append_fingerprint(buf: &mut Vec<u8>) {
    let body = buf.len() - HEADER_LEN + 8;
    set_length(buf, body);
    let crc = crc32fast::hash(buf) ^ FINGERPRINT_XOR;
    buf.extend_from_slice(&attr::FINGERPRINT.to_be_bytes());
    buf.extend_from_slice(&4u16.to_be_bytes());
    buf.extend_from_slice(&crc.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stun::view::StunView;

    #[test]
    fn integrity_and_fingerprint_verify() {
        let mut m = response(0x003, MessageClass::SuccessResponse, [1; 12]);
        m.add_attribute(Lifetime::new(std::time::Duration::from_secs(600)).unwrap());
        let key = b"0123456789abcdef";
        let bytes = encode(m, Some(key), true);
        let v = StunView::new_checked(&bytes).unwrap();
        assert!(v.check_integrity(key));
        assert!(!v.check_integrity(b"wrong"));
        assert_eq!(v.fingerprint_ok(), Some(true));
        let mut bad = bytes.clone();
        bad[25] ^= 1;
        let v = StunView::new_checked(&bad).unwrap();
        assert!(!v.check_integrity(key));
        assert_eq!(v.fingerprint_ok(), Some(false));
    }
}
