//! Property tests: round trips of what the server encodes, and random input
//! sequences that must never panic, never relay without a permission and
//! never relay to a refused address.

use super::tests::{client, config, creds, error_code, request, Creds, REALM};
use super::*;
use std::net::IpAddr;
use std::time::Duration;

use crate::stun::message::{self, Attribute, Message};
use crate::stun::view::{self, attr};
use stun_codec::rfc5766::attributes::{Lifetime, RequestedTransport, XorPeerAddress};
use stun_codec::rfc8656::attributes::{AddressFamily, RequestedAddressFamily};
use stun_codec::MessageClass;
use crate::framing::StreamFramer;
use crate::stun::message::encode;
use proptest::prelude::*;
use stun_codec::rfc5389::attributes::Username;
use stun_codec::rfc5766::attributes::Data;
use stun_codec::TransactionId;

fn any_addr() -> impl Strategy<Value = SocketAddr> {
    prop_oneof![
        (any::<[u8; 4]>(), any::<u16>()).prop_map(|(ip, p)| SocketAddr::new(IpAddr::from(ip), p)),
        (any::<[u8; 16]>(), any::<u16>()).prop_map(|(ip, p)| SocketAddr::new(IpAddr::from(ip), p)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// What the server encodes parses back, field for field, with valid
    /// MESSAGE-INTEGRITY and FINGERPRINT.
    #[test]
    fn stun_encode_decode_round_trip(
        tid in any::<[u8; 12]>(),
        peers in prop::collection::vec(any_addr(), 0..4),
        lifetime in any::<u32>(),
        user in "[a-zA-Z0-9:._-]{1,64}",
        data in prop::collection::vec(any::<u8>(), 0..300),
        key in any::<[u8; 16]>(),
        sign in any::<bool>(),
    ) {
        let mut m = Message::new(MessageClass::Request, stun_codec::Method::new(method::CREATE_PERMISSION).unwrap(), TransactionId::new(tid));
        for p in &peers {
            m.add_attribute(XorPeerAddress::new(*p));
        }
        m.add_attribute(Lifetime::new(Duration::from_secs(u64::from(lifetime))).unwrap());
        m.add_attribute(Username::new(user.clone()).unwrap());
        m.add_attribute(Data::new(data.clone()).unwrap());
        let bytes = encode(m, sign.then_some(&key[..]), true);
        let v = StunView::new_checked(&bytes).unwrap();
        prop_assert_eq!(v.transaction_id(), tid);
        prop_assert_eq!((v.class(), v.method()), (Class::Request, method::CREATE_PERMISSION));
        let got: Vec<SocketAddr> = v.attributes().filter(|a| a.typ == attr::XOR_PEER_ADDRESS)
            .map(|a| view::decode_xor_address(a.value, &tid).unwrap()).collect();
        prop_assert_eq!(&got, &peers);
        prop_assert_eq!(v.find(attr::LIFETIME), Some(&lifetime.to_be_bytes()[..]));
        prop_assert_eq!(v.find(attr::USERNAME), Some(user.as_bytes()));
        prop_assert_eq!(v.find(attr::DATA), Some(&data[..]));
        prop_assert_eq!(v.fingerprint_ok(), Some(true));
        prop_assert_eq!(v.check_integrity(&key), sign);
        let decoded = message::decode(&bytes).unwrap();
        prop_assert_eq!(decoded.get_attribute::<Lifetime>().unwrap().lifetime().as_secs(), u64::from(lifetime));
        prop_assert_eq!(decoded.get_attribute::<Data>().unwrap().data(), &data[..]);
    }

    /// ChannelData framing written by the server parses back through the
    /// stream framer, however the stream is cut.
    #[test]
    fn channel_data_round_trip_through_framer(
        msgs in prop::collection::vec((0x4000u16..=0x7FFF, prop::collection::vec(any::<u8>(), 0..200)), 1..8),
        cuts in prop::collection::vec(1usize..50, 1..20),
    ) {
        let mut stream = Vec::new();
        for (n, payload) in &msgs {
            let mut buf = vec![0u8; RELAY_HEADROOM + payload.len() + RELAY_TAILROOM];
            buf[RELAY_HEADROOM..RELAY_HEADROOM + payload.len()].copy_from_slice(payload);
            let pad = (4 - payload.len() % 4) % 4;
            buf[RELAY_HEADROOM - 4..RELAY_HEADROOM - 2].copy_from_slice(&n.to_be_bytes());
            buf[RELAY_HEADROOM - 2..RELAY_HEADROOM].copy_from_slice(&(payload.len() as u16).to_be_bytes());
            stream.extend_from_slice(&buf[RELAY_HEADROOM - 4..RELAY_HEADROOM + payload.len() + pad]);
        }
        let mut f = StreamFramer::new();
        let mut got = Vec::new();
        let mut rest = &stream[..];
        let mut i = 0;
        while !rest.is_empty() {
            let n = cuts[i % cuts.len()].min(rest.len());
            f.push(&rest[..n]);
            rest = &rest[n..];
            i += 1;
            while let Some(r) = f.next_frame().unwrap() {
                let fr = &f.buffer()[r];
                let len = u16::from_be_bytes([fr[2], fr[3]]) as usize;
                got.push((u16::from_be_bytes([fr[0], fr[1]]), fr[4..4 + len].to_vec()));
            }
        }
        prop_assert_eq!(got, msgs);
    }
}

/// One step of a random session.
#[derive(Debug, Clone)]
enum Op {
    Garbage(usize, Vec<u8>),
    Allocate(usize, bool),
    Permit(usize, usize),
    Bind(usize, u16, usize),
    Send(usize, usize),
    Channel(usize, u16),
    Peer(usize, usize),
    Refresh(usize, u32),
    Close(usize),
    Advance(u64),
    Back(u64),
}

/// Peers: some public, some the policy must refuse in every form.
const PEERS: &[&str] = &[
    "8.8.8.8:5000", "8.8.8.8:6000", "1.1.1.1:53", "127.0.0.1:3480", "10.0.0.1:9", "169.254.169.254:80",
    "0.0.0.0:1", "192.168.1.1:1", "[2606:4700::1]:9", "[::ffff:127.0.0.1]:9", "[::1]:9", "[64:ff9b::7f00:1]:9",
];
const CLIENTS: usize = 3;

fn op() -> impl Strategy<Value = Op> {
    let c = 0..CLIENTS;
    let p = 0..PEERS.len();
    prop_oneof![
        (c.clone(), prop::collection::vec(any::<u8>(), 0..64)).prop_map(|(c, b)| Op::Garbage(c, b)),
        (c.clone(), any::<bool>()).prop_map(|(c, v6)| Op::Allocate(c, v6)),
        (c.clone(), p.clone()).prop_map(|(c, p)| Op::Permit(c, p)),
        (c.clone(), 0x3FF0u16..0x4010, p.clone()).prop_map(|(c, n, p)| Op::Bind(c, n, p)),
        (c.clone(), p.clone()).prop_map(|(c, p)| Op::Send(c, p)),
        (c.clone(), 0x3FF0u16..0x4010).prop_map(|(c, n)| Op::Channel(c, n)),
        (c.clone(), p).prop_map(|(c, p)| Op::Peer(c, p)),
        (c.clone(), prop_oneof![Just(0u32), 1u32..5000]).prop_map(|(c, l)| Op::Refresh(c, l)),
        c.prop_map(Op::Close),
        (1u64..400).prop_map(Op::Advance),
        (1u64..100).prop_map(Op::Back),
    ]
}

/// Drives a server with random operations and checks every relay decision
/// against a model of the permissions the server confirmed.
struct Model {
    s: TurnServer,
    now: Instant,
    wall: Instant,
    cr: Creds,
    relay_of: [Option<SocketAddr>; CLIENTS],
    /// (client, peer IP) -> when a success response installed the permission.
    permits: std::collections::HashMap<(usize, IpAddr), Instant>,
    tid: u32,
}

impl Model {
    fn client(i: usize) -> Client {
        client(1000 + i as u16)
    }

    fn tid(&mut self) -> [u8; 12] {
        self.tid += 1;
        let mut t = [0u8; 12];
        t[..4].copy_from_slice(&self.tid.to_be_bytes());
        t
    }

    fn forget(&mut self, c: usize) {
        self.relay_of[c] = None;
        self.permits.retain(|(k, _), _| *k != c);
    }

    /// Collects outputs: binds relays, notes releases, returns the responses to client `c`.
    fn drain(&mut self) -> Vec<Vec<u8>> {
        let mut responses = Vec::new();
        while let Some(o) = self.s.poll_output() {
            match o {
                Output::Transmit(t) => responses.push(t.payload),
                Output::BindRelay { allocation, family, .. } => {
                    let ip: IpAddr = if family == Family::V4 { "10.0.0.1".parse().unwrap() } else { "2001:db8::1".parse().unwrap() };
                    let relay = SocketAddr::new(ip, 50000 + allocation.0 as u16);
                    self.s.handle_relay_bound(self.now, allocation, Some(relay), Some(SocketAddr::new(ip, 40000 + allocation.0 as u16)));
                }
                Output::ReleaseRelay { relay, .. } => {
                    if let Some(c) = self.relay_of.iter().position(|r| *r == Some(relay)) {
                        self.forget(c);
                    }
                }
                // Only UDP relays here.
                _ => {}
            }
        }
        responses
    }

    fn signed(&mut self, c: usize, m: u16, attrs: Vec<Attribute>) -> Vec<Vec<u8>> {
        let cl = Self::client(c);
        let tid = self.tid();
        let req = request(m, tid, vec![], None);
        let _ = self.s.handle_client(self.wall, cl, &req, 0..req.len());
        let nonce = self.drain().iter().find_map(|r| {
            let v = StunView::new_checked(r).ok()?;
            Some(String::from_utf8(v.find(attr::NONCE)?.to_vec()).unwrap())
        });
        let Some(nonce) = nonce else { return vec![] };
        let tid = self.tid();
        let req = request(m, tid, attrs, Some((&self.cr, &nonce)));
        let route = self.s.handle_client(self.wall, cl, &req, 0..req.len());
        assert!(route.is_none());
        self.drain()
    }

    fn check_route(&self, c: usize, peer: SocketAddr, relay: SocketAddr) {
        assert!(self.s.config().peer_policy.is_allowed(peer.ip()), "relayed to refused {peer}");
        assert_eq!(self.relay_of[c], Some(relay), "relayed through another client's relay");
        let at = self.permits.get(&(c, peer.ip())).unwrap_or_else(|| panic!("relayed to {peer} without a permission"));
        assert!(self.now.duration_since(*at) < PERMISSION_LIFETIME, "relayed to {peer} on an expired permission");
    }

    fn step(&mut self, op: Op) {
        let peer_of = |p: usize| PEERS[p].parse::<SocketAddr>().unwrap();
        match op {
            Op::Garbage(c, b) => {
                let r = self.s.handle_client(self.wall, Self::client(c), &b, 0..b.len());
                if let Some(r) = r {
                    self.check_route(c, r.peer, r.relay);
                }
                self.drain();
            }
            Op::Allocate(c, v6) => {
                let mut attrs: Vec<Attribute> = vec![RequestedTransport::new(17).into()];
                if v6 {
                    attrs.push(RequestedAddressFamily::new(AddressFamily::V6).into());
                }
                for r in self.signed(c, method::ALLOCATE, attrs) {
                    let v = StunView::new_checked(&r).unwrap();
                    if v.class() == Class::Success {
                        self.relay_of[c] = v.xor_address(attr::XOR_RELAYED_ADDRESS);
                    }
                }
            }
            Op::Permit(c, p) | Op::Bind(c, _, p) => {
                let peer = peer_of(p);
                let (m, mut attrs): (u16, Vec<Attribute>) = match op {
                    Op::Bind(..) => (method::CHANNEL_BIND, vec![]),
                    _ => (method::CREATE_PERMISSION, vec![]),
                };
                attrs.push(XorPeerAddress::new(peer).into());
                let responses = if let Op::Bind(_, n, _) = op {
                    // CHANNEL-NUMBER by hand (stun_codec refuses some numbers).
                    let cl = Self::client(c);
                    let tid = self.tid();
                    let req = request(m, tid, vec![], None);
                    let _ = self.s.handle_client(self.wall, cl, &req, 0..req.len());
                    let nonce = self.drain().iter().find_map(|r| StunView::new_checked(r).ok()?.find(attr::NONCE).map(|n| String::from_utf8(n.to_vec()).unwrap()));
                    let Some(nonce) = nonce else { return };
                    let tid = self.tid();
                    let mut req = request(m, tid, attrs, None);
                    super::tests::raw_attr(&mut req, attr::CHANNEL_NUMBER, &[(n >> 8) as u8, n as u8, 0, 0]);
                    let req = super::tests::sign(req, &self.cr, &nonce);
                    let _ = self.s.handle_client(self.wall, cl, &req, 0..req.len());
                    self.drain()
                } else {
                    self.signed(c, m, attrs)
                };
                for r in responses {
                    if StunView::new_checked(&r).unwrap().class() == Class::Success {
                        assert!(self.s.config().peer_policy.is_allowed(peer.ip()), "permission granted for refused {peer}");
                        self.permits.insert((c, peer.ip()), self.now);
                    } else if !self.s.config().peer_policy.is_allowed(peer.ip()) && self.relay_of[c].is_some() {
                        let code = error_code(&r);
                        assert!(matches!(code, Some(403 | 443 | 400 | 438 | 401)), "{code:?} for refused {peer}");
                    }
                }
            }
            Op::Send(c, p) => {
                let peer = peer_of(p);
                let mut m = Message::new(MessageClass::Indication, stun_codec::Method::new(method::SEND).unwrap(), TransactionId::new([1; 12]));
                m.add_attribute(XorPeerAddress::new(peer));
                m.add_attribute(Data::new(b"payload".to_vec()).unwrap());
                let bytes = encode(m, None, false);
                if let Some(r) = self.s.handle_client(self.wall, Self::client(c), &bytes, 0..bytes.len()) {
                    self.check_route(c, r.peer, r.relay);
                    assert_eq!(&bytes[r.range], b"payload");
                }
            }
            Op::Channel(c, n) => {
                let mut b = n.to_be_bytes().to_vec();
                b.extend_from_slice(&[0, 3, 1, 2, 3]);
                if let Some(r) = self.s.handle_client(self.wall, Self::client(c), &b, 0..b.len()) {
                    self.check_route(c, r.peer, r.relay);
                }
            }
            Op::Peer(c, p) => {
                let Some(relay) = self.relay_of[c] else { return };
                let peer = peer_of(p);
                let mut buf = vec![0u8; RELAY_HEADROOM + 10 + RELAY_TAILROOM];
                if let Some(r) = self.s.handle_peer(self.wall, relay, peer, &mut buf, RELAY_HEADROOM..RELAY_HEADROOM + 10) {
                    assert_eq!(r.to, Self::client(c));
                    let at = self.permits.get(&(c, peer.ip())).expect("peer data let in without a permission");
                    assert!(self.now.duration_since(*at) < PERMISSION_LIFETIME);
                }
            }
            Op::Refresh(c, l) => {
                let out = self.signed(c, method::REFRESH, vec![Lifetime::new(Duration::from_secs(u64::from(l))).unwrap().into()]);
                if l == 0 && out.iter().any(|r| StunView::new_checked(r).unwrap().class() == Class::Success) {
                    self.forget(c);
                }
            }
            Op::Close(c) => {
                // A UDP "close" is just silence; model a TCP-style close of the allocation.
                self.s.handle_client_closed(self.wall, Self::client(c));
                self.drain();
            }
            Op::Advance(secs) => {
                self.now += Duration::from_secs(secs);
                self.wall = self.now;
                self.s.handle_timeout(self.wall);
                self.drain();
            }
            Op::Back(secs) => {
                // Time fed backwards is ignored by the server; the model keeps its clock.
                self.wall = self.now.checked_sub(Duration::from_secs(secs)).unwrap_or(self.now);
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn random_sessions_never_relay_without_permission_or_to_refused_peers(ops in prop::collection::vec(op(), 1..60)) {
        let now = crate::time::test_start();
        let mut cfg = config();
        cfg.total_quota = 4;
        let mut m = Model {
            s: TurnServer::new(cfg, now, 1_700_000_000, &[9; 32]),
            now,
            wall: now,
            cr: creds("alice", "alicepw"),
            relay_of: [None; CLIENTS],
            permits: Default::default(),
            tid: 0,
        };
        let _ = REALM;
        for op in ops {
            m.step(op);
        }
    }
}
