//! A checked, zero-copy view over one STUN message (RFC 8489 §5, §14).
//!
//! [`StunView::new_checked`] validates the header and walks every attribute
//! header once; after that no accessor can panic or read out of bounds. The
//! view is what the data path uses (Send indications never allocate) and what
//! checks MESSAGE-INTEGRITY and FINGERPRINT over the exact received bytes.

use hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::Sha256;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The fixed magic cookie of every RFC 5389/8489 message.
pub const MAGIC_COOKIE: u32 = 0x2112_A442;
/// Length of the STUN header.
pub const HEADER_LEN: usize = 20;
/// The value XORed into a FINGERPRINT CRC-32.
pub const FINGERPRINT_XOR: u32 = 0x5354_554e;

/// Attribute type codes used by the server.
#[allow(missing_docs)]
pub mod attr {
    pub const MAPPED_ADDRESS: u16 = 0x0001;
    pub const CHANGE_REQUEST: u16 = 0x0003;
    pub const PADDING: u16 = 0x0026;
    pub const RESPONSE_PORT: u16 = 0x0027;
    pub const RESPONSE_ORIGIN: u16 = 0x802B;
    pub const OTHER_ADDRESS: u16 = 0x802C;
    pub const USERNAME: u16 = 0x0006;
    pub const MESSAGE_INTEGRITY: u16 = 0x0008;
    pub const ERROR_CODE: u16 = 0x0009;
    pub const UNKNOWN_ATTRIBUTES: u16 = 0x000A;
    pub const CHANNEL_NUMBER: u16 = 0x000C;
    pub const LIFETIME: u16 = 0x000D;
    pub const XOR_PEER_ADDRESS: u16 = 0x0012;
    pub const DATA: u16 = 0x0013;
    pub const REALM: u16 = 0x0014;
    pub const NONCE: u16 = 0x0015;
    pub const XOR_RELAYED_ADDRESS: u16 = 0x0016;
    pub const REQUESTED_ADDRESS_FAMILY: u16 = 0x0017;
    pub const EVEN_PORT: u16 = 0x0018;
    pub const REQUESTED_TRANSPORT: u16 = 0x0019;
    pub const DONT_FRAGMENT: u16 = 0x001A;
    pub const MESSAGE_INTEGRITY_SHA256: u16 = 0x001C;
    pub const PASSWORD_ALGORITHM: u16 = 0x001D;
    pub const USERHASH: u16 = 0x001E;
    pub const PASSWORD_ALGORITHMS: u16 = 0x8002;
    pub const ADDITIONAL_ADDRESS_FAMILY: u16 = 0x8000;
    pub const ADDRESS_ERROR_CODE: u16 = 0x8001;
    /// ADDITIONAL-ADDRESS-FAMILY's code in draft-ietf-tram-turnbis, which coturn 4.6's clients still send.
    pub const ADDITIONAL_ADDRESS_FAMILY_DRAFT: u16 = 0x8032;
    pub const XOR_MAPPED_ADDRESS: u16 = 0x0020;
    pub const RESERVATION_TOKEN: u16 = 0x0022;
    pub const CONNECTION_ID: u16 = 0x002A;
    pub const SOFTWARE: u16 = 0x8022;
    pub const FINGERPRINT: u16 = 0x8028;
}

/// STUN method codes used by the server.
#[allow(missing_docs)]
pub mod method {
    pub const BINDING: u16 = 0x001;
    pub const ALLOCATE: u16 = 0x003;
    pub const REFRESH: u16 = 0x004;
    pub const SEND: u16 = 0x006;
    pub const DATA: u16 = 0x007;
    pub const CREATE_PERMISSION: u16 = 0x008;
    pub const CHANNEL_BIND: u16 = 0x009;
    pub const CONNECT: u16 = 0x00A;
    pub const CONNECTION_BIND: u16 = 0x00B;
    pub const CONNECTION_ATTEMPT: u16 = 0x00C;
}

/// The class of a STUN message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// A request, which expects a response.
    Request,
    /// An indication, which never gets one.
    Indication,
    /// A success response.
    Success,
    /// An error response.
    Error,
}

/// Why bytes are not a well-formed STUN message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ParseError {
    /// Shorter than the 20-byte header.
    TooShort,
    /// The two top bits are not zero.
    NotStun,
    /// The magic cookie is missing (an RFC 3489 message, or not STUN).
    BadCookie,
    /// The header's length disagrees with the bytes, or is not a multiple of 4.
    BadLength,
    /// An attribute runs past the end of the message.
    BadAttribute,
}

/// A validated STUN message over borrowed bytes.
#[derive(Debug, Clone, Copy)]
pub struct StunView<'a> {
    bytes: &'a [u8],
}

/// One attribute: its type, its value, and where its header starts.
#[derive(Debug, Clone, Copy)]
pub struct RawAttr<'a> {
    /// Attribute type code.
    pub typ: u16,
    /// The value, without padding.
    pub value: &'a [u8],
    /// Offset of the attribute header within the message.
    pub offset: usize,
}

impl<'a> StunView<'a> {
    /// Validates `bytes` as exactly one STUN message.
    pub fn new_checked(bytes: &'a [u8]) -> Result<Self, ParseError> {
        if bytes.len() < HEADER_LEN {
            return Err(ParseError::TooShort);
        }
        if bytes[0] & 0xC0 != 0 {
            return Err(ParseError::NotStun);
        }
        if u32::from_be_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]) != MAGIC_COOKIE {
            return Err(ParseError::BadCookie);
        }
        let len = u16::from_be_bytes([bytes[2], bytes[3]]) as usize;
        if !len.is_multiple_of(4) || HEADER_LEN + len != bytes.len() {
            return Err(ParseError::BadLength);
        }
        let view = StunView { bytes };
        let mut off = HEADER_LEN;
        while off < bytes.len() {
            if off + 4 > bytes.len() {
                return Err(ParseError::BadAttribute);
            }
            let alen = u16::from_be_bytes([bytes[off + 2], bytes[off + 3]]) as usize;
            let padded = (alen + 3) & !3;
            if off + 4 + padded > bytes.len() {
                return Err(ParseError::BadAttribute);
            }
            off += 4 + padded;
        }
        Ok(view)
    }

    /// The whole message.
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// The 14-bit message type (method and class).
    pub fn message_type(&self) -> u16 {
        u16::from_be_bytes([self.bytes[0], self.bytes[1]])
    }

    /// The method, with the class bits removed.
    pub fn method(&self) -> u16 {
        let t = self.message_type();
        (t & 0x000F) | ((t >> 1) & 0x0070) | ((t >> 2) & 0x0F80)
    }

    /// The class.
    pub fn class(&self) -> Class {
        let t = self.message_type();
        match ((t >> 4) & 1) | ((t >> 7) & 2) {
            0 => Class::Request,
            1 => Class::Indication,
            2 => Class::Success,
            _ => Class::Error,
        }
    }

    /// The 96-bit transaction ID.
    pub fn transaction_id(&self) -> [u8; 12] {
        let mut t = [0u8; 12];
        t.copy_from_slice(&self.bytes[8..20]);
        t
    }

    /// Iterates over all attributes, in order.
    pub fn attributes(&self) -> AttrIter<'a> {
        AttrIter { bytes: self.bytes, off: HEADER_LEN }
    }

    /// The first attribute of type `typ` that is covered by MESSAGE-INTEGRITY
    /// (RFC 8489 §14.5: attributes after it, but FINGERPRINT, are ignored).
    pub fn find(&self, typ: u16) -> Option<&'a [u8]> {
        self.find_all(typ).next()
    }

    /// Every attribute of type `typ` covered by MESSAGE-INTEGRITY, in order
    /// (for attributes a request may repeat, such as XOR-PEER-ADDRESS).
    pub fn find_all(&self, typ: u16) -> impl Iterator<Item = &'a [u8]> {
        let mut past_integrity = false;
        self.attributes()
            .take_while(move |a| {
                let covered = !past_integrity;
                past_integrity |= a.typ == attr::MESSAGE_INTEGRITY || a.typ == attr::MESSAGE_INTEGRITY_SHA256;
                covered
            })
            .filter(move |a| a.typ == typ)
            .map(|a| a.value)
    }

    /// Whether the message carries a FINGERPRINT, and if so whether it is
    /// correct and last. `None` when absent.
    pub fn fingerprint_ok(&self) -> Option<bool> {
        let mut found = None;
        for a in self.attributes() {
            if a.typ == attr::FINGERPRINT {
                found = Some(a);
            } else if found.is_some() {
                // FINGERPRINT must be the last attribute.
                return Some(false);
            }
        }
        let a = found?;
        if a.value.len() != 4 {
            return Some(false);
        }
        let got = u32::from_be_bytes([a.value[0], a.value[1], a.value[2], a.value[3]]);
        Some(crc32fast::hash(&self.bytes[..a.offset]) ^ FINGERPRINT_XOR == got)
    }

    /// Offset of the first integrity attribute (MESSAGE-INTEGRITY or
    /// MESSAGE-INTEGRITY-SHA256) header, if present.
    pub fn integrity_offset(&self) -> Option<usize> {
        self.attributes()
            .find(|a| a.typ == attr::MESSAGE_INTEGRITY || a.typ == attr::MESSAGE_INTEGRITY_SHA256)
            .map(|a| a.offset)
    }

    /// Whether the message carries MESSAGE-INTEGRITY-SHA256 (RFC 8489 §14.6).
    pub fn has_integrity_sha256(&self) -> bool {
        self.attributes().any(|a| a.typ == attr::MESSAGE_INTEGRITY_SHA256)
    }

    /// The header with its length field rewritten as if the attribute at
    /// `offset`, `value_len` long, were the last one (RFC 8489 §14.5, §14.6).
    fn header_ending_at(&self, offset: usize, value_len: usize) -> [u8; HEADER_LEN] {
        let mut header = [0u8; HEADER_LEN];
        header.copy_from_slice(&self.bytes[..HEADER_LEN]);
        let len = (offset + 4 + value_len - HEADER_LEN) as u16;
        header[2..4].copy_from_slice(&len.to_be_bytes());
        header
    }

    /// Checks MESSAGE-INTEGRITY (HMAC-SHA1) with `key`, in constant time.
    /// False when the attribute is absent or malformed.
    pub fn check_integrity(&self, key: &[u8]) -> bool {
        let Some(a) = self.attributes().find(|a| a.typ == attr::MESSAGE_INTEGRITY) else {
            return false;
        };
        if a.value.len() != 20 {
            return false;
        }
        // HMAC accepts keys of any length, so `new_from_slice` cannot fail.
        let mut mac = Hmac::<Sha1>::new_from_slice(key).expect("HMAC takes any key length");
        mac.update(&self.header_ending_at(a.offset, 20));
        mac.update(&self.bytes[HEADER_LEN..a.offset]);
        mac.verify_slice(a.value).is_ok()
    }

    /// Checks MESSAGE-INTEGRITY-SHA256 (HMAC-SHA256, possibly truncated to
    /// 16..=32 bytes in steps of 4) with `key`, in constant time. It covers
    /// a MESSAGE-INTEGRITY before it. False when absent or malformed.
    pub fn check_integrity_sha256(&self, key: &[u8]) -> bool {
        let Some(a) = self.attributes().find(|a| a.typ == attr::MESSAGE_INTEGRITY_SHA256) else {
            return false;
        };
        if !integrity_sha256_len_ok(a.value.len()) {
            return false;
        }
        let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
        mac.update(&self.header_ending_at(a.offset, a.value.len()));
        mac.update(&self.bytes[HEADER_LEN..a.offset]);
        mac.verify_truncated_left(a.value).is_ok()
    }

    /// Decodes an XOR-encoded address attribute (XOR-MAPPED/PEER/RELAYED-ADDRESS).
    pub fn xor_address(&self, typ: u16) -> Option<SocketAddr> {
        decode_xor_address(self.find(typ)?, &self.transaction_id())
    }
}

impl StunView<'_> {
    /// Whether every attribute this server knows is well-formed (length,
    /// address family, UTF-8 text), as a control request must be; unknown
    /// ones are not judged here (see [`super::unknown_required`]).
    pub fn known_attributes_well_formed(&self) -> bool {
        self.attributes().all(|a| attribute_well_formed(a.typ, a.value))
    }
}

/// Whether `value` is a well-formed value for an attribute of type `typ`
/// (true for types this server does not know).
pub fn attribute_well_formed(typ: u16, value: &[u8]) -> bool {
    let text = |max_chars: usize| std::str::from_utf8(value).is_ok_and(|t| t.chars().count() < max_chars);
    match typ {
        attr::MAPPED_ADDRESS | attr::XOR_PEER_ADDRESS | attr::XOR_RELAYED_ADDRESS | attr::XOR_MAPPED_ADDRESS => {
            matches!((value.get(1), value.len()), (Some(1), 8) | (Some(2), 20))
        }
        attr::USERNAME => std::str::from_utf8(value).is_ok() && value.len() < 513,
        attr::REALM | attr::NONCE | attr::SOFTWARE => text(128),
        attr::ERROR_CODE => {
            value.len() >= 4
                && (3..6).contains(&(value[2] & 0b111))
                && value[3] < 100
                && std::str::from_utf8(&value[4..]).is_ok()
        }
        attr::UNKNOWN_ATTRIBUTES => value.len().is_multiple_of(2),
        attr::LIFETIME | attr::REQUESTED_TRANSPORT => value.len() == 4,
        attr::REQUESTED_ADDRESS_FAMILY | attr::ADDITIONAL_ADDRESS_FAMILY | attr::ADDITIONAL_ADDRESS_FAMILY_DRAFT => {
            matches!(value, [1 | 2, _, _, _])
        }
        attr::EVEN_PORT => value.len() == 1,
        attr::DONT_FRAGMENT => value.is_empty(),
        attr::RESERVATION_TOKEN => value.len() == 8,
        attr::CONNECTION_ID => value.len() == 4,
        attr::MESSAGE_INTEGRITY => value.len() == 20,
        attr::MESSAGE_INTEGRITY_SHA256 => integrity_sha256_len_ok(value.len()),
        attr::PASSWORD_ALGORITHM => password_algorithms(value).count() == Some(1),
        attr::PASSWORD_ALGORITHMS => password_algorithms(value).count().is_some_and(|n| n > 0),
        _ => true,
    }
}

/// Whether `len` is a valid MESSAGE-INTEGRITY-SHA256 length (RFC 8489 §14.6).
fn integrity_sha256_len_ok(len: usize) -> bool {
    (16..=32).contains(&len) && len.is_multiple_of(4)
}

/// The entries of a PASSWORD-ALGORITHMS value, or of a PASSWORD-ALGORITHM
/// value (one entry), RFC 8489 §14.11-14.12: each an algorithm number and
/// its parameters, padded to 4 bytes.
pub fn password_algorithms(value: &[u8]) -> PasswordAlgorithms<'_> {
    PasswordAlgorithms { rest: value, bad: false }
}

/// Iterator over the entries of PASSWORD-ALGORITHM(S): `(algorithm, parameters)`.
#[derive(Debug, Clone)]
pub struct PasswordAlgorithms<'a> {
    rest: &'a [u8],
    bad: bool,
}

impl<'a> PasswordAlgorithms<'a> {
    /// How many entries, or `None` when the value is malformed.
    pub fn count(mut self) -> Option<usize> {
        let mut n = 0;
        while self.next().is_some() {
            n += 1;
        }
        (!self.bad).then_some(n)
    }
}

impl<'a> Iterator for PasswordAlgorithms<'a> {
    type Item = (u16, &'a [u8]);

    fn next(&mut self) -> Option<(u16, &'a [u8])> {
        if self.rest.is_empty() || self.bad {
            return None;
        }
        let (head, body) = match self.rest.split_at_checked(4) {
            Some(x) => x,
            None => {
                self.bad = true;
                return None;
            }
        };
        let alg = u16::from_be_bytes([head[0], head[1]]);
        let len = usize::from(u16::from_be_bytes([head[2], head[3]]));
        let padded = len.div_ceil(4) * 4;
        if body.len() < padded {
            self.bad = true;
            return None;
        }
        self.rest = &body[padded..];
        Some((alg, &body[..len]))
    }
}

/// The length of the STUN message at the front of a byte stream, from its
/// header: `Ok(None)` until the length field has arrived, an error as soon
/// as the magic cookie shows it is not STUN. The first byte is the caller's
/// to classify ([`super::classify`]).
pub fn message_len(prefix: &[u8]) -> Result<Option<usize>, ParseError> {
    if let Some(cookie) = prefix.get(4..8) {
        if cookie != MAGIC_COOKIE.to_be_bytes() {
            return Err(ParseError::BadCookie);
        }
    }
    Ok(match prefix {
        [_, _, a, b, ..] => Some(HEADER_LEN + u16::from_be_bytes([*a, *b]) as usize),
        _ => None,
    })
}

/// Iterator over the attributes of a [`StunView`].
#[derive(Debug, Clone)]
pub struct AttrIter<'a> {
    bytes: &'a [u8],
    off: usize,
}

impl<'a> Iterator for AttrIter<'a> {
    type Item = RawAttr<'a>;

    fn next(&mut self) -> Option<RawAttr<'a>> {
        // Bounds were validated by `new_checked`; `get` keeps this panic-free anyway.
        let h = self.bytes.get(self.off..self.off + 4)?;
        let typ = u16::from_be_bytes([h[0], h[1]]);
        let len = u16::from_be_bytes([h[2], h[3]]) as usize;
        let value = self.bytes.get(self.off + 4..self.off + 4 + len)?;
        let a = RawAttr { typ, value, offset: self.off };
        self.off += 4 + ((len + 3) & !3);
        Some(a)
    }
}

/// Decodes an XOR-encoded transport address value (RFC 8489 §14.2).
pub fn decode_xor_address(v: &[u8], tid: &[u8; 12]) -> Option<SocketAddr> {
    if v.len() < 4 {
        return None;
    }
    let port = u16::from_be_bytes([v[2], v[3]]) ^ (MAGIC_COOKIE >> 16) as u16;
    match (v[1], v.len()) {
        (0x01, 8) => {
            let x = u32::from_be_bytes([v[4], v[5], v[6], v[7]]) ^ MAGIC_COOKIE;
            Some(SocketAddr::new(IpAddr::V4(Ipv4Addr::from(x)), port))
        }
        (0x02, 20) => {
            let mut mask = [0u8; 16];
            mask[..4].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
            mask[4..].copy_from_slice(tid);
            let mut ip = [0u8; 16];
            for i in 0..16 {
                ip[i] = v[4 + i] ^ mask[i];
            }
            Some(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(ip)), port))
        }
        _ => None,
    }
}

/// Encodes an XOR-encoded transport address value into `out`; returns its length (8 or 20).
pub fn encode_xor_address(addr: SocketAddr, tid: &[u8; 12], out: &mut [u8; 20]) -> usize {
    out[0] = 0;
    let port = addr.port() ^ (MAGIC_COOKIE >> 16) as u16;
    out[2..4].copy_from_slice(&port.to_be_bytes());
    match addr.ip() {
        IpAddr::V4(ip) => {
            out[1] = 0x01;
            out[4..8].copy_from_slice(&(u32::from(ip) ^ MAGIC_COOKIE).to_be_bytes());
            8
        }
        IpAddr::V6(ip) => {
            out[1] = 0x02;
            let mut mask = [0u8; 16];
            mask[..4].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
            mask[4..].copy_from_slice(tid);
            for (i, b) in ip.octets().iter().enumerate() {
                out[4 + i] = b ^ mask[i];
            }
            20
        }
    }
}

/// Builds a STUN message type from a method and class.
pub fn message_type(method: u16, class: Class) -> u16 {
    let c = match class {
        Class::Request => 0,
        Class::Indication => 1,
        Class::Success => 2,
        Class::Error => 3,
    };
    (method & 0x000F) | ((method & 0x0070) << 1) | ((method & 0x0F80) << 2) | ((c & 1) << 4) | ((c & 2) << 7)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_round_trip() {
        for m in [method::BINDING, method::ALLOCATE, method::SEND, method::CHANNEL_BIND, 0xFFF] {
            for c in [Class::Request, Class::Indication, Class::Success, Class::Error] {
                let t = message_type(m, c);
                let mut b = [0u8; 20];
                b[..2].copy_from_slice(&t.to_be_bytes());
                b[4..8].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
                let v = StunView::new_checked(&b).unwrap();
                assert_eq!(v.method(), m);
                assert_eq!(v.class(), c);
            }
        }
    }

    #[test]
    fn rejects_truncated_attribute() {
        let mut b = vec![0u8; 24];
        b[1] = 1;
        b[3] = 4;
        b[4..8].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
        b[22] = 0;
        b[23] = 8; // claims 8 bytes of value, has 0
        assert_eq!(StunView::new_checked(&b).unwrap_err(), ParseError::BadAttribute);
    }

    #[test]
    fn xor_address_round_trip() {
        let tid = [7u8; 12];
        for a in ["1.2.3.4:5", "[2001:db8::1]:65535"] {
            let a: SocketAddr = a.parse().unwrap();
            let mut out = [0u8; 20];
            let n = encode_xor_address(a, &tid, &mut out);
            assert_eq!(decode_xor_address(&out[..n], &tid), Some(a));
        }
    }
}
