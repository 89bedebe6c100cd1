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
#[cfg(test)]
mod vectors;

use std::net::SocketAddr;

use stun_codec::rfc5389::attributes::{MappedAddress, UnknownAttributes, XorMappedAddress};
use stun_codec::{AttributeType, MessageClass};

use self::message::KNOWN_ATTRIBUTES;
use self::view::{attr, method, Class, StunView};

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

/// The four addresses of RFC 5780 NAT behaviour discovery: the primary
/// (the STUN/TURN listener), and the alternate IP and port (coturn's
/// convention: the listening port + 1). The server listens on every
/// combination of the two IPs and the two ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NatDiscovery {
    /// The primary address.
    pub primary: SocketAddr,
    /// The alternate address: the other IP, and the other port.
    pub alternate: SocketAddr,
}

impl NatDiscovery {
    /// The primary IP and port with the alternate ones: `primary` and
    /// (`alternate_ip`, primary port + 1).
    pub fn new(primary: SocketAddr, alternate_ip: std::net::IpAddr) -> Self {
        NatDiscovery { primary, alternate: SocketAddr::new(alternate_ip, primary.port().wrapping_add(1)) }
    }

    /// The four local addresses: primary, alternate port, alternate IP, both.
    pub fn addresses(&self) -> [SocketAddr; 4] {
        let (p, a) = (self.primary, self.alternate);
        [p, SocketAddr::new(p.ip(), a.port()), SocketAddr::new(a.ip(), p.port()), a]
    }

    /// Whether `local` is one of the four.
    pub fn serves(&self, local: SocketAddr) -> bool {
        self.addresses().contains(&local)
    }

    /// The other IP and port than those of `local` (OTHER-ADDRESS, RFC 5780 §7.4).
    pub fn other(&self, local: SocketAddr) -> SocketAddr {
        let ip = if local.ip() == self.primary.ip() { self.alternate.ip() } else { self.primary.ip() };
        let port = if local.port() == self.primary.port() { self.alternate.port() } else { self.primary.port() };
        SocketAddr::new(ip, port)
    }

    /// Where a response to a request received at `local` goes out from, for a
    /// CHANGE-REQUEST asking to change the IP and/or the port.
    pub fn source(&self, local: SocketAddr, change_ip: bool, change_port: bool) -> SocketAddr {
        let other = self.other(local);
        SocketAddr::new(if change_ip { other.ip() } else { local.ip() }, if change_port { other.port() } else { local.port() })
    }
}

/// Largest PADDING echoed in a response (RFC 5780 §7.6: to test fragmentation; a larger one is cut).
pub const MAX_PADDING: usize = 1500;

/// How a Binding request asked to be answered (RFC 5780 §7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Discovery {
    /// CHANGE-REQUEST: from the other IP, the other port.
    pub change_ip: bool,
    /// See `change_ip`.
    pub change_port: bool,
    /// RESPONSE-PORT: to this port of the client's IP.
    pub response_port: Option<u16>,
    /// PADDING: its length.
    pub padding: usize,
}

impl Discovery {
    /// The RFC 5780 attributes of `view`; `None` for a malformed one (400).
    pub fn of(view: &StunView<'_>) -> Option<Discovery> {
        let mut d = Discovery::default();
        if let Some(v) = view.find(attr::CHANGE_REQUEST) {
            let v: [u8; 4] = v.try_into().ok()?;
            d.change_ip = v[3] & 0x04 != 0;
            d.change_port = v[3] & 0x02 != 0;
        }
        if let Some(v) = view.find(attr::RESPONSE_PORT) {
            let v: [u8; 4] = v.try_into().ok()?;
            d.response_port = Some(u16::from_be_bytes([v[0], v[1]])).filter(|p| *p != 0);
        }
        if let Some(v) = view.find(attr::PADDING) {
            d.padding = v.len().min(MAX_PADDING);
        }
        Some(d)
    }
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
    /// Binding requests answered with RFC 5780's attributes (NAT discovery).
    pub discovery_requests: u64,
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

    /// Answers a Binding request received at `local` from `from` with RFC
    /// 5780's attributes (`nat` serves `local`): OTHER-ADDRESS,
    /// RESPONSE-ORIGIN, and PADDING as long as the request's. Returns the
    /// response, the local address it must leave from (CHANGE-REQUEST), and
    /// the address it goes to (RESPONSE-PORT). `over_udp`: CHANGE-REQUEST and
    /// RESPONSE-PORT mean nothing on a stream and get 400 there.
    pub fn answer_discovery(&mut self, view: &StunView<'_>, nat: &NatDiscovery, local: SocketAddr, from: SocketAddr, over_udp: bool) -> (Vec<u8>, SocketAddr, SocketAddr) {
        let unknown: Vec<u16> = unknown_required(view).into_iter().filter(|t| *t != attr::CHANGE_REQUEST && *t != attr::RESPONSE_PORT && *t != attr::PADDING).collect();
        if !unknown.is_empty() {
            self.stats.error_responses += 1;
            return (unknown_attribute_response(view, &unknown), local, from);
        }
        let d = match Discovery::of(view) {
            Some(d) if over_udp || (!d.change_ip && !d.change_port && d.response_port.is_none()) => d,
            _ => {
                self.stats.error_responses += 1;
                let m = message::error_response(method::BINDING, view.transaction_id(), 400);
                return (message::encode(m, None, true), local, from);
            }
        };
        self.stats.binding_requests += 1;
        self.stats.discovery_requests += 1;
        let source = nat.source(local, d.change_ip, d.change_port);
        let to = d.response_port.map_or(from, |p| SocketAddr::new(from.ip(), p));
        let mut m = message::response(method::BINDING, MessageClass::SuccessResponse, view.transaction_id());
        m.add_attribute(XorMappedAddress::new(from));
        m.add_attribute(MappedAddress::new(from));
        m.add_attribute(stun_codec::rfc5780::attributes::OtherAddress::new(nat.other(local)));
        m.add_attribute(stun_codec::rfc5780::attributes::ResponseOrigin::new(source));
        let mut resp = message::encode(m, None, false);
        if d.padding > 0 {
            // PADDING (an attribute stun_codec does not know), then FINGERPRINT last.
            let pad = vec![0u8; d.padding.div_ceil(4) * 4];
            message::append_attribute(&mut resp, attr::PADDING, &pad);
        }
        message::append_fingerprint(&mut resp);
        (resp, source, to)
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
        // Without a second address (no `NatDiscovery`), CHANGE-REQUEST is unknown: 420, as RFC 5780 says.
        let resp = s.handle_packet("1.2.3.4:5".parse().unwrap(), &req).unwrap();
        let v = StunView::new_checked(&resp).unwrap();
        assert_eq!(v.class(), Class::Error);
        assert_eq!(v.find(attr::ERROR_CODE).unwrap()[2..4], [4, 20]);
        assert_eq!(v.find(attr::UNKNOWN_ATTRIBUTES).unwrap(), &[0x00, 0x03, 0x77, 0x77]);
    }

    fn nat() -> NatDiscovery {
        NatDiscovery::new("192.0.2.10:3478".parse().unwrap(), "192.0.2.20".parse().unwrap())
    }

    #[test]
    fn the_four_addresses_and_the_other_of_each() {
        let n = nat();
        let a: Vec<String> = n.addresses().iter().map(|a| a.to_string()).collect();
        assert_eq!(a, ["192.0.2.10:3478", "192.0.2.10:3479", "192.0.2.20:3478", "192.0.2.20:3479"]);
        for local in n.addresses() {
            let other = n.other(local);
            assert!(other.ip() != local.ip() && other.port() != local.port(), "{local} -> {other}");
            assert_eq!(n.source(local, false, false), local);
            assert_eq!(n.source(local, true, true), other);
            assert_eq!(n.source(local, true, false), SocketAddr::new(other.ip(), local.port()));
            assert_eq!(n.source(local, false, true), SocketAddr::new(local.ip(), other.port()));
        }
        assert!(!n.serves("192.0.2.10:9999".parse().unwrap()));
    }

    #[test]
    fn discovery_answers_from_the_address_asked_to_the_port_asked_with_padding() {
        let mut s = StunServer::new();
        let n = nat();
        let from: SocketAddr = "198.51.100.7:40000".parse().unwrap();
        let local = n.primary;
        // CHANGE-REQUEST: change IP and port; RESPONSE-PORT 40002; 100 bytes of PADDING.
        let req = binding_request(&[(attr::CHANGE_REQUEST, &[0, 0, 0, 0x06]), (attr::RESPONSE_PORT, &[0x9c, 0x42, 0, 0]), (attr::PADDING, &[7; 100])]);
        let view = StunView::new_checked(&req).unwrap();
        let (resp, source, to) = s.answer_discovery(&view, &n, local, from, true);
        assert_eq!(source, n.alternate);
        assert_eq!(to, "198.51.100.7:40002".parse().unwrap());
        let v = StunView::new_checked(&resp).unwrap();
        assert_eq!(v.class(), Class::Success);
        assert_eq!(v.xor_address(attr::XOR_MAPPED_ADDRESS), Some(from));
        assert_eq!(v.fingerprint_ok(), Some(true));
        assert_eq!(v.find(attr::PADDING).map(<[u8]>::len), Some(100));
        // OTHER-ADDRESS and RESPONSE-ORIGIN, in MAPPED-ADDRESS form: family 1, port, IPv4.
        assert_eq!(v.find(attr::OTHER_ADDRESS).unwrap(), &[0, 1, 0x0d, 0x97, 192, 0, 2, 20]);
        assert_eq!(v.find(attr::RESPONSE_ORIGIN).unwrap(), &[0, 1, 0x0d, 0x97, 192, 0, 2, 20]);
        // No attributes: answered from where it came, OTHER-ADDRESS still there.
        let plain = binding_request(&[]);
        let (resp, source, to) = s.answer_discovery(&StunView::new_checked(&plain).unwrap(), &n, local, from, true);
        assert_eq!((source, to), (local, from));
        assert!(StunView::new_checked(&resp).unwrap().find(attr::OTHER_ADDRESS).is_some());
        // Over a stream CHANGE-REQUEST is refused (400); a malformed one too.
        let (resp, _, _) = s.answer_discovery(&view, &n, local, from, false);
        assert_eq!(StunView::new_checked(&resp).unwrap().find(attr::ERROR_CODE).unwrap()[2..4], [4, 0]);
        let bad = binding_request(&[(attr::CHANGE_REQUEST, &[0, 0, 6])]);
        let (resp, _, _) = s.answer_discovery(&StunView::new_checked(&bad).unwrap(), &n, local, from, true);
        assert_eq!(StunView::new_checked(&resp).unwrap().find(attr::ERROR_CODE).unwrap()[2..4], [4, 0]);
        // Other unknown comprehension-required attributes still get 420.
        let unknown = binding_request(&[(attr::CHANGE_REQUEST, &[0, 0, 0, 4]), (0x7777, b"x")]);
        let (resp, _, _) = s.answer_discovery(&StunView::new_checked(&unknown).unwrap(), &n, local, from, true);
        assert_eq!(StunView::new_checked(&resp).unwrap().find(attr::UNKNOWN_ATTRIBUTES).unwrap(), &[0x77, 0x77]);
        assert_eq!(s.stats().discovery_requests, 2);
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
