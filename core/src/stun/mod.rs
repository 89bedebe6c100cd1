//! STUN (RFC 8489) and the TURN wire formats that share its port: one
//! parser or emitter per format, plus the Binding server.
//!
//! - [`classify`]: which format a packet is, by its first byte (RFC 7983);
//! - [`view`]: the checked view over a STUN message, which every STUN
//!   message the server receives is read through;
//! - [`channel_data`]: the checked view over a ChannelData message, and its header emitter;
//! - [`data_indication`]: the Data indication header emitter of the relay path;
//! - [`message`]: control responses built with `stun_codec`, plus MESSAGE-INTEGRITY and FINGERPRINT.

pub mod channel_data;
pub mod data_indication;
pub mod message;
pub mod view;

use std::net::SocketAddr;

use stun_codec::rfc5389::attributes::{MappedAddress, UnknownAttributes, XorMappedAddress};
use stun_codec::{AttributeType, MessageClass};

use self::message::KNOWN_ATTRIBUTES;
use self::view::{method, Class, StunView};

/// What RFC 7983 says the first byte of a datagram on a STUN/TURN port is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PacketKind {
    /// 0..=3: a STUN message.
    Stun,
    /// 64..=127: a TURN ChannelData message. RFC 7983 gives TURN 64..=79
    /// (channels 0x4000-0x4FFF); RFC 5766 clients, coturn's among them, also
    /// use 0x5000-0x7FFF, and nothing else is multiplexed on this port.
    ChannelData,
    /// Anything else (DTLS, RTP, ZRTP, garbage): not for this port.
    Other,
}

/// Classifies a packet by its first byte (RFC 7983 §7).
pub fn classify(packet: &[u8]) -> PacketKind {
    match packet.first() {
        Some(0..=3) => PacketKind::Stun,
        Some(64..=127) => PacketKind::ChannelData,
        _ => PacketKind::Other,
    }
}

/// Comprehension-required attributes of `view` that this server does not know.
pub fn unknown_required(view: &StunView<'_>) -> Vec<u16> {
    view.attributes()
        .map(|a| a.typ)
        .filter(|t| *t < 0x8000 && !KNOWN_ATTRIBUTES.contains(t))
        .collect()
}

/// A 420 Unknown Attribute response listing `unknown`.
pub fn unknown_attribute_response(view: &StunView<'_>, unknown: &[u16]) -> Vec<u8> {
    let mut m = message::error_response(view.method(), view.transaction_id(), 420);
    m.add_attribute(UnknownAttributes::new(
        unknown.iter().map(|t| AttributeType::new(*t)).collect(),
    ));
    message::encode(m, None, true)
}

/// Counters of the Binding server.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct StunStats {
    /// Binding requests answered with a success response.
    pub binding_requests: u64,
    /// Requests answered with an error response.
    pub error_responses: u64,
    /// Packets dropped: not STUN, malformed, bad FINGERPRINT, or not a request.
    pub dropped: u64,
}

/// A stateless STUN Binding server (RFC 8489 §12), usable on its own.
///
/// It answers Binding requests with XOR-MAPPED-ADDRESS, MAPPED-ADDRESS (for
/// RFC 3489-era clients that read only that) and FINGERPRINT: no SOFTWARE,
/// so that an answer to a spoofed request is not much larger than it.
#[derive(Debug, Clone, Default)]
pub struct StunServer {
    stats: StunStats,
}

impl StunServer {
    /// A Binding server.
    pub fn new() -> Self {
        StunServer::default()
    }

    /// Counters so far.
    pub fn stats(&self) -> &StunStats {
        &self.stats
    }

    /// Handles one packet from `from`; returns the response to send back, if any.
    ///
    /// Anything that is not a well-formed Binding request is dropped and
    /// counted, except a request with unknown comprehension-required
    /// attributes, which gets 420.
    pub fn handle_packet(&mut self, from: SocketAddr, packet: &[u8]) -> Option<Vec<u8>> {
        let Ok(view) = StunView::new_checked(packet) else {
            self.stats.dropped += 1;
            return None;
        };
        if view.fingerprint_ok() == Some(false)
            || view.class() != Class::Request
            || view.method() != method::BINDING
        {
            self.stats.dropped += 1;
            return None;
        }
        Some(self.answer_binding(&view, from))
    }

    /// Answers a validated Binding request from `from`.
    pub fn answer_binding(&mut self, view: &StunView<'_>, from: SocketAddr) -> Vec<u8> {
        let unknown = unknown_required(view);
        if !unknown.is_empty() {
            self.stats.error_responses += 1;
            return unknown_attribute_response(view, &unknown);
        }
        self.stats.binding_requests += 1;
        let mut m = message::response(method::BINDING, MessageClass::SuccessResponse, view.transaction_id());
        m.add_attribute(XorMappedAddress::new(from));
        m.add_attribute(MappedAddress::new(from));
        // No SOFTWARE: a Binding request is unauthenticated, and its answer must not amplify a spoofed one.
        message::encode(m, None, true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stun::view::{attr, message_type, MAGIC_COOKIE};

    fn binding_request(extra: &[(u16, &[u8])]) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&message_type(method::BINDING, Class::Request).to_be_bytes());
        b.extend_from_slice(&[0, 0]);
        b.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
        b.extend_from_slice(&[9; 12]);
        for (t, v) in extra {
            message::append_attribute(&mut b, *t, v);
        }
        b
    }

    #[test]
    fn binding_answers_both_mapped_addresses_with_fingerprint() {
        let mut s = StunServer::new();
        let from: SocketAddr = "192.0.2.1:4242".parse().unwrap();
        let resp = s.handle_packet(from, &binding_request(&[])).unwrap();
        let v = StunView::new_checked(&resp).unwrap();
        assert_eq!(v.class(), Class::Success);
        assert_eq!(v.transaction_id(), [9; 12]);
        assert_eq!(v.xor_address(attr::XOR_MAPPED_ADDRESS), Some(from));
        assert!(v.find(attr::MAPPED_ADDRESS).is_some());
        assert_eq!(v.fingerprint_ok(), Some(true));
        assert_eq!(resp.len(), 52, "header, two 12-byte addresses and FINGERPRINT: no SOFTWARE");
    }

    #[test]
    fn unknown_required_attribute_gets_420() {
        let mut s = StunServer::new();
        let req = binding_request(&[(0x0003, &[0, 0, 0, 4]), (0x7777, b"x"), (0x8888, b"ok")]);
        // (CHANGE-REQUEST, RFC 5780, is not supported yet.)
        let resp = s.handle_packet("1.2.3.4:5".parse().unwrap(), &req).unwrap();
        let v = StunView::new_checked(&resp).unwrap();
        assert_eq!(v.class(), Class::Error);
        assert_eq!(v.find(attr::ERROR_CODE).unwrap()[2..4], [4, 20]);
        assert_eq!(v.find(attr::UNKNOWN_ATTRIBUTES).unwrap(), &[0x00, 0x03, 0x77, 0x77]);
    }

    #[test]
    fn bad_fingerprint_and_garbage_are_dropped_and_counted() {
        let mut s = StunServer::new();
        let mut req = binding_request(&[(attr::FINGERPRINT, &[0, 0, 0, 0])]);
        let n = req.len();
        req[n - 1] = 1;
        assert!(s.handle_packet("1.2.3.4:5".parse().unwrap(), &req).is_none());
        assert!(s.handle_packet("1.2.3.4:5".parse().unwrap(), b"\x16\x03\x01garbage").is_none());
        assert_eq!(s.stats().dropped, 2);
    }
}
