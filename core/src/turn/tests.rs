//! TURN server tests with simulated time: every rule driven through real bytes.

use super::*;
use std::time::Duration;

use crate::ids::Via;
use crate::stun::message::{self, Attribute, Message};
use crate::stun::view::attr;
use stun_codec::rfc5389::attributes::{Nonce, Realm};
use stun_codec::rfc5766::attributes::{Lifetime, RequestedTransport, XorPeerAddress};
use stun_codec::rfc8656::attributes::{AddressFamily, RequestedAddressFamily};
use stun_codec::MessageClass;
use crate::stun::message::encode;
use crate::stun::view::{decode_xor_address, message_type};
use stun_codec::rfc5389::attributes::Username;
use stun_codec::rfc5766::attributes::{Data, DontFragment};
use stun_codec::TransactionId;

pub(crate) const REALM: &str = "test.realm";
pub(crate) const SECRET: &str = "rest-secret";
pub(crate) const UNIX0: u64 = 1_700_000_000;

pub(crate) fn config() -> TurnConfig {
    TurnConfig {
        realm: REALM.into(),
        users: vec![("alice".into(), "alicepw".into()), ("bob".into(), "bobpw".into())],
        static_auth_secret: Some(SECRET.into()),
        relay_families: (true, true),
        ..TurnConfig::default()
    }
}

pub(crate) fn client(port: u16) -> Client {
    Client { via: Via::Udp("10.0.0.1:3478".parse().unwrap()), remote: SocketAddr::new("203.0.113.50".parse().unwrap(), port) }
}

/// A scripted TURN client over the server's byte interface.
pub(crate) struct Harness {
    pub s: TurnServer,
    pub t0: Instant,
    pub now: Instant,
    next_tid: u8,
    next_port: u16,
}

pub(crate) struct Creds {
    pub user: String,
    pub key: [u8; 16],
}

pub(crate) fn creds(user: &str, pass: &str) -> Creds {
    Creds { user: user.into(), key: auth::long_term_key(user, REALM, pass) }
}

impl Harness {
    pub fn new(cfg: TurnConfig) -> Self {
        Self::with_seed(cfg, [7; 32])
    }

    pub fn with_seed(cfg: TurnConfig, seed: crate::Seed) -> Self {
        let t0 = crate::time::test_start();
        Harness { s: TurnServer::new(cfg, t0, UNIX0, &seed), t0, now: t0, next_tid: 0, next_port: 40000 }
    }

    pub fn advance(&mut self, d: Duration) {
        self.now += d;
        self.s.handle_timeout(self.now);
    }

    pub fn tid(&mut self) -> [u8; 12] {
        self.next_tid = self.next_tid.wrapping_add(1);
        [self.next_tid; 12]
    }

    pub fn outputs(&mut self) -> Vec<Output> {
        std::iter::from_fn(|| self.s.poll_output()).collect()
    }

    /// Sends `bytes` from `c` and returns the one response it gets.
    pub fn exchange(&mut self, c: Client, bytes: &[u8]) -> Vec<u8> {
        assert!(self.s.handle_client(self.now, c, bytes, 0..bytes.len()).is_none());
        let out = self.outputs();
        match out.as_slice() {
            [Output::Transmit(t)] => {
                assert_eq!(t.to, c);
                t.payload.clone()
            }
            other => panic!("expected one response, got {other:?}"),
        }
    }

    pub fn nonce(&mut self, c: Client) -> String {
        let tid = self.tid();
        let r = self.exchange(c, &request(method::REFRESH, tid, vec![], None));
        let v = StunView::new_checked(&r).unwrap();
        assert_eq!(error_code(&r), Some(401));
        String::from_utf8(v.find(attr::NONCE).unwrap().to_vec()).unwrap()
    }

    /// A signed request from `c` with a fresh nonce.
    pub fn signed(&mut self, c: Client, m: u16, attrs: Vec<Attribute>, cr: &Creds) -> (Vec<u8>, [u8; 12]) {
        let nonce = self.nonce(c);
        let tid = self.tid();
        (request(m, tid, attrs, Some((cr, &nonce))), tid)
    }

    /// Allocates for `c`; returns the relay address the shell "bound".
    pub fn allocate(&mut self, c: Client, cr: &Creds) -> SocketAddr {
        let (req, _) = self.signed(c, method::ALLOCATE, vec![RequestedTransport::new(17).into()], cr);
        assert!(self.s.handle_client(self.now, c, &req, 0..req.len()).is_none());
        let out = self.outputs();
        let [Output::BindRelay { allocation, family: Family::V4, port: PortRequest::Any }] = out.as_slice() else {
            panic!("expected BindRelay, got {out:?}")
        };
        self.next_port += 1;
        let relay: SocketAddr = SocketAddr::new("10.0.0.1".parse().unwrap(), self.next_port);
        self.s.handle_relay_bound(self.now, *allocation, Some(relay), None);
        let out = self.outputs();
        let [Output::Transmit(t)] = out.as_slice() else { panic!("{out:?}") };
        let v = StunView::new_checked(&t.payload).unwrap();
        assert_eq!(v.class(), Class::Success, "{:?}", error_code(&t.payload));
        assert!(v.check_integrity(&cr.key));
        assert_eq!(v.fingerprint_ok(), Some(true));
        assert_eq!(v.xor_address(attr::XOR_RELAYED_ADDRESS), Some(relay));
        assert_eq!(v.xor_address(attr::XOR_MAPPED_ADDRESS), Some(c.remote));
        assert_eq!(v.find(attr::LIFETIME), Some(&600u32.to_be_bytes()[..]));
        relay
    }

    pub fn code_of(&mut self, c: Client, m: u16, attrs: Vec<Attribute>, cr: &Creds) -> Option<u16> {
        let (req, _) = self.signed(c, m, attrs, cr);
        let r = self.exchange(c, &req);
        error_code(&r)
    }

    pub fn permit(&mut self, c: Client, cr: &Creds, peer: SocketAddr) -> Option<u16> {
        self.code_of(c, method::CREATE_PERMISSION, vec![XorPeerAddress::new(peer).into()], cr)
    }

    pub fn bind(&mut self, c: Client, cr: &Creds, number: u16, peer: SocketAddr) -> Option<u16> {
        // Built by hand: stun_codec's ChannelNumber refuses numbers past 0x4FFF.
        let nonce = self.nonce(c);
        let tid = self.tid();
        let mut req = request(method::CHANNEL_BIND, tid, vec![XorPeerAddress::new(peer).into()], None);
        raw_attr(&mut req, attr::CHANNEL_NUMBER, &[(number >> 8) as u8, number as u8, 0, 0]);
        let req = sign(req, cr, &nonce);
        let r = self.exchange(c, &req);
        error_code(&r)
    }

    /// Peer to client: returns the framed bytes the client would get.
    pub fn relay_from_peer(&mut self, relay: SocketAddr, peer: SocketAddr, payload: &[u8]) -> Option<Vec<u8>> {
        let mut buf = vec![0xEEu8; RELAY_HEADROOM + payload.len() + RELAY_TAILROOM];
        buf[RELAY_HEADROOM..RELAY_HEADROOM + payload.len()].copy_from_slice(payload);
        let r = self.s.handle_peer(self.now, relay, peer, &mut buf, RELAY_HEADROOM..RELAY_HEADROOM + payload.len())?;
        Some(buf[r.range].to_vec())
    }
}

pub(crate) fn request(m: u16, tid: [u8; 12], attrs: Vec<Attribute>, auth: Option<(&Creds, &str)>) -> Vec<u8> {
    let mut msg = Message::new(MessageClass::Request, stun_codec::Method::new(m).unwrap(), TransactionId::new(tid));
    for a in attrs {
        msg.add_attribute(a);
    }
    match auth {
        Some((cr, nonce)) => {
            msg.add_attribute(Username::new(cr.user.clone()).unwrap());
            msg.add_attribute(Realm::new(REALM.into()).unwrap());
            msg.add_attribute(Nonce::new(nonce.into()).unwrap());
            encode(msg, Some(&cr.key), true)
        }
        None => encode(msg, None, false),
    }
}

pub(crate) fn raw_attr(buf: &mut Vec<u8>, typ: u16, value: &[u8]) {
    message::append_attribute(buf, typ, value);
}

pub(crate) fn sign(mut req: Vec<u8>, cr: &Creds, nonce: &str) -> Vec<u8> {
    raw_attr(&mut req, attr::USERNAME, cr.user.as_bytes());
    raw_attr(&mut req, attr::REALM, REALM.as_bytes());
    raw_attr(&mut req, attr::NONCE, nonce.as_bytes());
    message::append_integrity(&mut req, &cr.key);
    message::append_fingerprint(&mut req);
    req
}

pub(crate) fn error_code(resp: &[u8]) -> Option<u16> {
    let v = StunView::new_checked(resp).ok()?;
    let e = v.find(attr::ERROR_CODE)?;
    Some(u16::from(e[2]) * 100 + u16::from(e[3]))
}

fn send_indication(peer: SocketAddr, data: &[u8]) -> Vec<u8> {
    let mut m = Message::new(MessageClass::Indication, stun_codec::Method::new(method::SEND).unwrap(), TransactionId::new([3; 12]));
    m.add_attribute(XorPeerAddress::new(peer));
    m.add_attribute(Data::new(data.to_vec()).unwrap());
    m.add_attribute(DontFragment);
    encode(m, None, true)
}

pub(crate) fn channel_data(number: u16, data: &[u8]) -> Vec<u8> {
    let mut b = number.to_be_bytes().to_vec();
    b.extend_from_slice(&(data.len() as u16).to_be_bytes());
    b.extend_from_slice(data);
    b
}

const PEER: &str = "8.8.8.8:5000";

pub(crate) fn peer() -> SocketAddr {
    PEER.parse().unwrap()
}

#[test]
fn binding_is_answered_on_the_turn_port() {
    let mut h = Harness::new(config());
    let c = client(1);
    let r = h.exchange(c, &request(method::BINDING, [1; 12], vec![], None));
    let v = StunView::new_checked(&r).unwrap();
    assert_eq!(v.xor_address(attr::XOR_MAPPED_ADDRESS), Some(c.remote));
    assert_eq!(v.fingerprint_ok(), Some(true));
}

#[test]
fn unauthenticated_allocate_gets_401_with_realm_and_nonce() {
    let mut h = Harness::new(config());
    let r = h.exchange(client(1), &request(method::ALLOCATE, [1; 12], vec![RequestedTransport::new(17).into()], None));
    assert_eq!(error_code(&r), Some(401));
    let v = StunView::new_checked(&r).unwrap();
    assert_eq!(v.find(attr::REALM), Some(REALM.as_bytes()));
    assert!(v.find(attr::NONCE).is_some());
    assert!(v.integrity_offset().is_none());
    assert_eq!(h.s.allocation_count(), 0);
}

#[test]
fn allocate_then_allocation_mismatch_and_retransmission() {
    let mut h = Harness::new(config());
    let c = client(1);
    let alice = creds("alice", "alicepw");
    h.allocate(c, &alice);
    assert_eq!(h.code_of(c, method::ALLOCATE, vec![RequestedTransport::new(17).into()], &alice), Some(437));
    // A retransmission (same transaction ID) gets the same success response.
    let nonce = h.nonce(c);
    let mut h2 = Harness::new(config());
    let first = {
        let (req, _) = h2.signed(c, method::ALLOCATE, vec![RequestedTransport::new(17).into()], &alice);
        let _ = h2.s.handle_client(h2.now, c, &req, 0..req.len());
        let Some(Output::BindRelay { allocation, .. }) = h2.s.poll_output() else { panic!() };
        h2.s.handle_relay_bound(h2.now, allocation, Some("10.0.0.1:50000".parse().unwrap()), None);
        let Some(Output::Transmit(t)) = h2.s.poll_output() else { panic!() };
        let again = h2.exchange(c, &req);
        assert_eq!(again, t.payload);
        t.payload
    };
    assert_eq!(StunView::new_checked(&first).unwrap().class(), Class::Success);
    let _ = nonce;
}

#[test]
fn allocate_errors() {
    let mut h = Harness::new(TurnConfig { relay_families: (true, false), ..config() });
    let alice = creds("alice", "alicepw");
    let c = client(1);
    assert_eq!(h.code_of(c, method::ALLOCATE, vec![], &alice), Some(400));
    // TCP relays (RFC 6062) are for clients over TCP: 400 over UDP. Other transports: 442.
    assert_eq!(h.code_of(c, method::ALLOCATE, vec![RequestedTransport::new(6).into()], &alice), Some(400));
    assert_eq!(h.code_of(c, method::ALLOCATE, vec![RequestedTransport::new(132).into()], &alice), Some(442));
    let v6 = RequestedAddressFamily::new(AddressFamily::V6);
    assert_eq!(h.code_of(c, method::ALLOCATE, vec![RequestedTransport::new(17).into(), v6.into()], &alice), Some(440));
    // DONT-FRAGMENT is accepted.
    let (req, _) = h.signed(c, method::ALLOCATE, vec![RequestedTransport::new(17).into(), DontFragment.into()], &alice);
    let _ = h.s.handle_client(h.now, c, &req, 0..req.len());
    assert!(matches!(h.outputs().as_slice(), [Output::BindRelay { .. }]));
    assert_eq!(h.s.allocation_count(), 1);
}

#[test]
fn refresh_and_requests_without_allocation_get_437() {
    let mut h = Harness::new(config());
    let alice = creds("alice", "alicepw");
    let c = client(1);
    assert_eq!(h.code_of(c, method::REFRESH, vec![], &alice), Some(437));
    assert_eq!(h.permit(c, &alice, peer()), Some(437));
    assert_eq!(h.bind(c, &alice, 0x4000, peer()), Some(437));
}

#[test]
fn relay_bind_failure_gives_508_and_frees_quota() {
    let mut h = Harness::new(TurnConfig { total_quota: 1, ..config() });
    let alice = creds("alice", "alicepw");
    let c = client(1);
    let (req, _) = h.signed(c, method::ALLOCATE, vec![RequestedTransport::new(17).into()], &alice);
    let _ = h.s.handle_client(h.now, c, &req, 0..req.len());
    let Some(Output::BindRelay { allocation, .. }) = h.s.poll_output() else { panic!() };
    h.s.handle_relay_bound(h.now, allocation, None, None);
    let Some(Output::Transmit(t)) = h.s.poll_output() else { panic!() };
    assert_eq!(error_code(&t.payload), Some(508));
    assert!(StunView::new_checked(&t.payload).unwrap().check_integrity(&alice.key));
    assert_eq!(h.s.allocation_count(), 0);
    h.allocate(client(2), &alice);
}

#[test]
fn allocation_expires_on_time_from_the_timer_queue() {
    let mut h = Harness::new(config());
    let alice = creds("alice", "alicepw");
    let relay = h.allocate(client(1), &alice);
    assert_eq!(h.s.poll_timeout(), Some(h.now + DEFAULT_LIFETIME));
    h.advance(DEFAULT_LIFETIME - Duration::from_millis(1));
    assert_eq!(h.s.allocation_count(), 1);
    assert!(h.outputs().is_empty());
    h.advance(Duration::from_millis(1));
    assert_eq!(h.s.allocation_count(), 0);
    assert!(matches!(h.outputs().as_slice(), [Output::ReleaseRelay { relay: r, .. }] if *r == relay));
    assert_eq!(h.s.stats().allocations_expired, 1);
}

#[test]
fn refresh_extends_clamps_and_zero_deletes() {
    let mut h = Harness::new(config());
    let alice = creds("alice", "alicepw");
    let c = client(1);
    h.allocate(c, &alice);
    h.advance(Duration::from_secs(500));
    let (req, _) = h.signed(c, method::REFRESH, vec![Lifetime::new(Duration::from_secs(99_999)).unwrap().into()], &alice);
    let r = h.exchange(c, &req);
    assert_eq!(StunView::new_checked(&r).unwrap().find(attr::LIFETIME), Some(&3600u32.to_be_bytes()[..]));
    h.advance(Duration::from_secs(3599));
    assert_eq!(h.s.allocation_count(), 1);
    // A lifetime under the default is raised to the default.
    let (req, _) = h.signed(c, method::REFRESH, vec![Lifetime::new(Duration::from_secs(10)).unwrap().into()], &alice);
    let r = h.exchange(c, &req);
    assert_eq!(StunView::new_checked(&r).unwrap().find(attr::LIFETIME), Some(&600u32.to_be_bytes()[..]));
    let (req, _) = h.signed(c, method::REFRESH, vec![Lifetime::new(Duration::ZERO).unwrap().into()], &alice);
    assert!(h.s.handle_client(h.now, c, &req, 0..req.len()).is_none());
    let out = h.outputs();
    assert!(matches!(out.as_slice(), [Output::ReleaseRelay { .. }, Output::Transmit(_)]), "{out:?}");
    assert_eq!(h.s.allocation_count(), 0);
}

#[test]
fn stale_nonce_gets_438_with_a_fresh_nonce() {
    let mut h = Harness::new(config());
    let alice = creds("alice", "alicepw");
    let c = client(1);
    let nonce = h.nonce(c);
    h.advance(Duration::from_secs(auth::NONCE_LIFETIME_SECS));
    let req = request(method::ALLOCATE, [9; 12], vec![RequestedTransport::new(17).into()], Some((&alice, &nonce)));
    let r = h.exchange(c, &req);
    assert_eq!(error_code(&r), Some(438));
    let fresh = StunView::new_checked(&r).unwrap().find(attr::NONCE).unwrap().to_vec();
    assert_ne!(fresh, nonce.as_bytes());
    // A nonce given to another client IP is not accepted either (one given to another port of the same IP
    // is: see auth's tests).
    let other = h.nonce(Client { via: c.via, remote: "198.51.100.9:1".parse().unwrap() });
    let req = request(method::ALLOCATE, [8; 12], vec![RequestedTransport::new(17).into()], Some((&alice, &other)));
    assert_eq!(error_code(&h.exchange(c, &req)), Some(438));
}

#[test]
fn wrong_password_and_missing_attributes() {
    let mut h = Harness::new(config());
    let c = client(1);
    assert_eq!(h.code_of(c, method::ALLOCATE, vec![RequestedTransport::new(17).into()], &creds("alice", "nope")), Some(401));
    assert_eq!(h.code_of(c, method::ALLOCATE, vec![RequestedTransport::new(17).into()], &creds("mallory", "x")), Some(401));
    // MESSAGE-INTEGRITY without USERNAME/REALM/NONCE is a bad request.
    let mut req = request(method::ALLOCATE, [5; 12], vec![RequestedTransport::new(17).into()], None);
    message::append_integrity(&mut req, &[0; 16]);
    assert_eq!(error_code(&h.exchange(c, &req)), Some(400));
}

#[test]
fn rest_credentials_work_until_they_expire() {
    let mut h = Harness::new(config());
    let user = auth::rest_username(UNIX0 + 100, Some("carol"));
    let cr = creds(&user, &auth::rest_password(SECRET.as_bytes(), &user));
    h.allocate(client(1), &cr);
    h.advance(Duration::from_secs(100));
    // Same credentials, fresh nonce, but the username's expiry has passed.
    assert_eq!(h.code_of(client(2), method::ALLOCATE, vec![RequestedTransport::new(17).into()], &cr), Some(401));
    // A forged password for a valid-looking username fails too.
    let user = auth::rest_username(UNIX0 + 10_000, None);
    assert_eq!(h.code_of(client(3), method::ALLOCATE, vec![RequestedTransport::new(17).into()], &creds(&user, "forged")), Some(401));
}

#[test]
fn quotas_give_486() {
    let mut h = Harness::new(TurnConfig { user_quota: 1, total_quota: 2, ..config() });
    let alice = creds("alice", "alicepw");
    let bob = creds("bob", "bobpw");
    h.allocate(client(1), &alice);
    assert_eq!(h.code_of(client(2), method::ALLOCATE, vec![RequestedTransport::new(17).into()], &alice), Some(486));
    h.allocate(client(3), &bob);
    let carol_user = auth::rest_username(UNIX0 + 1000, Some("carol"));
    let carol = creds(&carol_user, &auth::rest_password(SECRET.as_bytes(), &carol_user));
    assert_eq!(h.code_of(client(4), method::ALLOCATE, vec![RequestedTransport::new(17).into()], &carol), Some(486));
    // Freeing one makes room again.
    let (req, _) = h.signed(client(1), method::REFRESH, vec![Lifetime::new(Duration::ZERO).unwrap().into()], &alice);
    let _ = h.s.handle_client(h.now, client(1), &req, 0..req.len());
    h.outputs();
    h.allocate(client(2), &alice);
}

/// Two servers made from clones of one config (two workers' engines) share its quota ledger: a user quota
/// of 3 admits exactly 3 allocations across both, the total quota holds across both, one ending on either
/// frees a slot on the other, and a server dropped with allocations gives them back.
#[test]
fn quotas_hold_across_servers_that_share_a_config() {
    let cfg = TurnConfig { user_quota: 3, total_quota: 4, ..config() };
    let mut a = Harness::with_seed(cfg.clone(), [1; 32]);
    let mut b = Harness::with_seed(cfg.clone(), [2; 32]);
    let alice = creds("alice", "alicepw");
    let bob = creds("bob", "bobpw");
    a.allocate(client(1), &alice);
    b.allocate(client(2), &alice);
    a.allocate(client(3), &alice);
    let alloc = || vec![RequestedTransport::new(17).into()];
    assert_eq!(b.code_of(client(4), method::ALLOCATE, alloc(), &alice), Some(486), "the 4th of alice's, on the other server");
    assert_eq!(a.code_of(client(4), method::ALLOCATE, alloc(), &alice), Some(486));
    b.allocate(client(5), &bob);
    assert_eq!(a.code_of(client(6), method::ALLOCATE, alloc(), &bob), Some(486), "total quota across both");
    assert_eq!(cfg.quotas.total(), 4);
    // Alice's on server A ends: Bob gets the slot on server B.
    let (req, _) = a.signed(client(1), method::REFRESH, vec![Lifetime::new(Duration::ZERO).unwrap().into()], &alice);
    let _ = a.s.handle_client(a.now, client(1), &req, 0..req.len());
    a.outputs();
    b.allocate(client(6), &bob);
    // Server B goes away holding three: they are given back.
    drop(b);
    assert_eq!((cfg.quotas.total(), cfg.quotas.held("alice"), cfg.quotas.held("bob")), (1, 1, 0));
    a.allocate(client(7), &alice);
    a.allocate(client(8), &alice);
    assert_eq!(a.code_of(client(9), method::ALLOCATE, alloc(), &alice), Some(486));
}

#[test]
fn a_reservation_token_from_one_server_is_redeemed_on_another_once() {
    use stun_codec::rfc5766::attributes::{EvenPort, ReservationToken};
    let cfg = config();
    let mut a = Harness::with_seed(cfg.clone(), [1; 32]);
    let mut b = Harness::with_seed(cfg.clone(), [2; 32]);
    let alice = creds("alice", "alicepw");
    let out = allocate_with(&mut a, client(1), &alice, vec![EvenPort::new(true).into()]);
    let [Output::BindRelay { allocation, .. }] = out.as_slice() else { panic!("{out:?}") };
    let (rtp, rtcp): (SocketAddr, SocketAddr) = ("10.0.0.1:50000".parse().unwrap(), "10.0.0.1:50001".parse().unwrap());
    a.s.handle_relay_bound(a.now, *allocation, Some(rtp), Some(rtcp));
    let out = a.outputs();
    let [Output::Transmit(t)] = out.as_slice() else { panic!("{out:?}") };
    let token = u64::from_be_bytes(StunView::new_checked(&t.payload).unwrap().find(attr::RESERVATION_TOKEN).unwrap().try_into().unwrap());
    // Server B (another worker) redeems it: its shell is asked for the reserved address.
    let out = allocate_with(&mut b, client(2), &alice, vec![ReservationToken::new(token).into()]);
    assert!(matches!(out.as_slice(), [Output::BindRelay { port: PortRequest::Reserved(r), .. }] if *r == rtcp), "{out:?}");
    // Spent: not again on either server; and when A's reservation would have expired, A leaves the socket alone.
    let attrs = || vec![RequestedTransport::new(17).into(), ReservationToken::new(token).into()];
    assert_eq!(a.code_of(client(3), method::ALLOCATE, attrs(), &alice), Some(508));
    assert_eq!(b.code_of(client(4), method::ALLOCATE, attrs(), &alice), Some(508));
    a.advance(RESERVATION_LIFETIME + Duration::from_secs(1));
    let out = a.outputs();
    assert!(!out.iter().any(|o| matches!(o, Output::ReleaseRelay { relay, .. } if *relay == rtcp)), "{out:?}");
}

#[test]
fn wrong_user_on_an_allocation_gets_441() {
    let mut h = Harness::new(config());
    h.allocate(client(1), &creds("alice", "alicepw"));
    assert_eq!(h.code_of(client(1), method::REFRESH, vec![], &creds("bob", "bobpw")), Some(441));
}

#[test]
fn unknown_comprehension_required_attribute_gets_420() {
    let mut h = Harness::new(config());
    let c = client(1);
    let mut req = request(method::ALLOCATE, [4; 12], vec![RequestedTransport::new(17).into()], None);
    raw_attr(&mut req, 0x0026, &[0, 0, 0, 0]); // PADDING (RFC 5780): not supported
    let r = h.exchange(c, &req);
    assert_eq!(error_code(&r), Some(420));
    assert_eq!(StunView::new_checked(&r).unwrap().find(attr::UNKNOWN_ATTRIBUTES), Some(&[0x00, 0x26][..]));
}

#[test]
fn denied_peers_get_403_and_nothing_is_installed() {
    let mut h = Harness::new(config());
    let alice = creds("alice", "alicepw");
    let c = client(1);
    h.allocate(c, &alice);
    for p in ["127.0.0.1:9", "0.0.0.0:9", "10.1.1.1:9", "169.254.169.254:80", "192.168.0.1:9", "100.64.0.1:9", "224.0.0.1:9", "255.255.255.255:9"] {
        assert_eq!(h.permit(c, &alice, p.parse().unwrap()), Some(403), "{p}");
        assert_eq!(h.bind(c, &alice, 0x4001, p.parse().unwrap()), Some(403), "{p}");
    }
    // One bad peer in a list refuses the whole request.
    let attrs = vec![XorPeerAddress::new(peer()).into(), XorPeerAddress::new("127.0.0.1:1".parse().unwrap()).into()];
    assert_eq!(h.code_of(c, method::CREATE_PERMISSION, attrs, &alice), Some(403));
    let ind = send_indication(peer(), b"x");
    assert!(h.s.handle_client(h.now, c, &ind, 0..ind.len()).is_none());
    assert_eq!(h.s.stats().dropped_no_permission, 1);
    // An IPv6 peer on an IPv4 allocation is a family mismatch.
    assert_eq!(h.permit(c, &alice, "[2606:4700::1]:9".parse().unwrap()), Some(443));
}

#[test]
fn ipv6_allocation_refuses_every_embedded_ipv4_bypass() {
    let mut h = Harness::new(config());
    let alice = creds("alice", "alicepw");
    let c = client(1);
    let v6 = RequestedAddressFamily::new(AddressFamily::V6);
    let (req, _) = h.signed(c, method::ALLOCATE, vec![RequestedTransport::new(17).into(), v6.into()], &alice);
    let _ = h.s.handle_client(h.now, c, &req, 0..req.len());
    let Some(Output::BindRelay { allocation, family: Family::V6, .. }) = h.s.poll_output() else { panic!() };
    h.s.handle_relay_bound(h.now, allocation, Some("[2001:db8::1]:50000".parse().unwrap()), None);
    h.outputs();
    // Every form in the policy's list: the IPv6 ones refused (403), the IPv4 ones a family mismatch (443).
    for p in super::policy::BYPASS_FORMS {
        let ip: std::net::IpAddr = p.parse().unwrap();
        let want = if ip.is_ipv6() { 403 } else { 443 };
        assert_eq!(h.permit(c, &alice, SocketAddr::new(ip, 9)), Some(want), "{p}");
    }
    assert_eq!(h.permit(c, &alice, "[2606:4700::1]:9".parse().unwrap()), None);
}

#[test]
fn loopback_is_allowed_only_when_configured() {
    let mut cfg = config();
    cfg.peer_policy.allow_loopback = true;
    let mut h = Harness::new(cfg);
    let alice = creds("alice", "alicepw");
    let c = client(1);
    h.allocate(c, &alice);
    assert_eq!(h.permit(c, &alice, "127.0.0.1:3480".parse().unwrap()), None);
    assert_eq!(h.permit(c, &alice, "10.0.0.1:3480".parse().unwrap()), Some(403));
}

#[test]
fn send_indication_and_data_indication_through_a_permission_with_its_lifetime() {
    let mut h = Harness::new(config());
    let alice = creds("alice", "alicepw");
    let c = client(1);
    let relay = h.allocate(c, &alice);
    let ind = send_indication(peer(), b"hello peer");
    assert!(h.s.handle_client(h.now, c, &ind, 0..ind.len()).is_none(), "no permission yet");
    assert_eq!(h.relay_from_peer(relay, peer(), b"x"), None, "no permission yet");
    assert_eq!(h.permit(c, &alice, peer()), None);
    let route = h.s.handle_client(h.now, c, &ind, 0..ind.len()).unwrap();
    assert_eq!((route.relay, route.peer), (relay, peer()));
    assert_eq!(&ind[route.range], b"hello peer");
    // Any port of a permitted IP may send back; it arrives as a Data indication.
    let other_port: SocketAddr = "8.8.8.8:6000".parse().unwrap();
    let framed = h.relay_from_peer(relay, other_port, b"hello client").unwrap();
    let v = StunView::new_checked(&framed).unwrap();
    assert_eq!((v.class(), v.method()), (Class::Indication, method::DATA));
    assert_eq!(v.xor_address(attr::XOR_PEER_ADDRESS), Some(other_port));
    assert_eq!(v.find(attr::DATA), Some(&b"hello client"[..]));
    // A permission lasts 300 s.
    h.advance(PERMISSION_LIFETIME - Duration::from_secs(1));
    assert!(h.s.handle_client(h.now, c, &ind, 0..ind.len()).is_some());
    h.advance(Duration::from_secs(1));
    assert!(h.s.handle_client(h.now, c, &ind, 0..ind.len()).is_none());
    assert_eq!(h.relay_from_peer(relay, peer(), b"late"), None);
    // Data from an unknown relay address is dropped.
    assert_eq!(h.relay_from_peer("10.9.9.9:1".parse().unwrap(), peer(), b"x"), None);
}

#[test]
fn channel_bind_rules_and_channel_data_both_ways() {
    let mut h = Harness::new(config());
    let alice = creds("alice", "alicepw");
    let c = client(1);
    let relay = h.allocate(c, &alice);
    let other: SocketAddr = "8.8.4.4:5000".parse().unwrap();
    assert_eq!(h.bind(c, &alice, 0x3FFF, peer()), Some(400));
    assert_eq!(h.bind(c, &alice, 0x8000, peer()), Some(400));
    assert_eq!(h.bind(c, &alice, 0x4000, peer()), None);
    assert_eq!(h.bind(c, &alice, 0x4000, peer()), None, "refreshing the same binding is fine");
    assert_eq!(h.bind(c, &alice, 0x4000, other), Some(400), "number already bound to another peer");
    assert_eq!(h.bind(c, &alice, 0x4001, peer()), Some(400), "peer already bound to another number");
    assert_eq!(h.bind(c, &alice, 0x4FFF, other), None);
    let cd = channel_data(0x4000, b"via channel");
    let route = h.s.handle_client(h.now, c, &cd, 0..cd.len()).unwrap();
    assert_eq!((route.relay, route.peer, &cd[route.range.clone()]), (relay, peer(), &b"via channel"[..]));
    // Unbound number, truncated length: dropped.
    let unbound = channel_data(0x4001, b"x");
    assert!(h.s.handle_client(h.now, c, &unbound, 0..unbound.len()).is_none());
    let mut short = channel_data(0x4000, b"abcd");
    short.truncate(6);
    assert!(h.s.handle_client(h.now, c, &short, 0..short.len()).is_none());
    // Peer to client over a channel: ChannelData, unpadded over UDP.
    let framed = h.relay_from_peer(relay, peer(), b"back").unwrap();
    assert_eq!(framed, channel_data(0x4000, b"back"));
    let framed = h.relay_from_peer(relay, peer(), b"odd").unwrap();
    assert_eq!(framed, channel_data(0x4000, b"odd"));
    // The channel lives 600 s, but its permission must be refreshed every 300 s.
    h.advance(Duration::from_secs(290));
    assert_eq!(h.permit(c, &alice, peer()), None);
    assert_eq!(h.code_of(c, method::REFRESH, vec![], &alice), None);
    h.advance(Duration::from_secs(290));
    assert!(h.s.handle_client(h.now, c, &cd, 0..cd.len()).is_some());
    assert_eq!(h.permit(c, &alice, peer()), None);
    h.advance(Duration::from_secs(20));
    assert!(h.s.handle_client(h.now, c, &cd, 0..cd.len()).is_none(), "channel expired at 600 s");
    // Expired: peer data comes back as a Data indication, and the number can be rebound elsewhere.
    let framed = h.relay_from_peer(relay, peer(), b"x").unwrap();
    assert_eq!(StunView::new_checked(&framed).unwrap().method(), method::DATA);
    assert_eq!(h.bind(c, &alice, 0x4000, "8.8.8.8:7000".parse().unwrap()), None);
}

#[test]
fn max_bps_caps_each_direction_of_an_allocation() {
    let mut h = Harness::new(TurnConfig { max_bps: 1000, ..config() });
    let alice = creds("alice", "alicepw");
    let c = client(1);
    let relay = h.allocate(c, &alice);
    assert_eq!(h.bind(c, &alice, 0x4000, peer()), None);
    let cd = channel_data(0x4000, &[7; 600]);
    assert!(h.s.handle_client(h.now, c, &cd, 0..cd.len()).is_some(), "within the first second's bytes");
    assert!(h.s.handle_client(h.now, c, &cd, 0..cd.len()).is_none(), "1,200 bytes in no time: over 1,000 per second");
    // The other direction has its own budget.
    assert!(h.relay_from_peer(relay, peer(), &[1; 900]).is_some());
    assert!(h.relay_from_peer(relay, peer(), &[1; 200]).is_none());
    assert_eq!(h.s.stats().dropped_rate_limited, 2);
    h.advance(Duration::from_millis(600));
    assert!(h.s.handle_client(h.now, c, &cd, 0..cd.len()).is_some(), "600 ms later, 600 more bytes");
    assert!(h.relay_from_peer(relay, peer(), &[1; 500]).is_some());
    // Without max_bps, no limit.
    let mut h = Harness::new(config());
    let relay = h.allocate(c, &alice);
    assert_eq!(h.bind(c, &alice, 0x4000, peer()), None);
    for _ in 0..100 {
        assert!(h.s.handle_client(h.now, c, &cd, 0..cd.len()).is_some());
        assert!(h.relay_from_peer(relay, peer(), &[1; 1200]).is_some());
    }
}

#[test]
fn challenges_to_one_address_are_rate_limited() {
    let mut h = Harness::new(config());
    let alloc = |h: &mut Harness| request(method::ALLOCATE, h.tid(), vec![RequestedTransport::new(17).into()], None);
    let spoofed = client(9);
    let mut answered = 0;
    for _ in 0..250 {
        let req = alloc(&mut h);
        let _ = h.s.handle_client(h.now, spoofed, &req, 0..req.len());
        answered += h.outputs().len();
    }
    assert_eq!(answered, 200, "a burst of 200 401s, then none at the same instant");
    assert_eq!(h.s.stats().challenges_rate_limited, 50);
    // Another port of the same address is not: the limit is per address. Another address is answered.
    let req = alloc(&mut h);
    let _ = h.s.handle_client(h.now, client(10), &req, 0..req.len());
    assert!(h.outputs().is_empty());
    let elsewhere = Client { remote: "198.51.100.7:4000".parse().unwrap(), ..client(9) };
    let req = alloc(&mut h);
    assert_eq!(error_code(&h.exchange(elsewhere, &req)), Some(401));
    // A second later the first gets a hundred more.
    h.advance(Duration::from_secs(1));
    let mut answered = 0;
    for _ in 0..250 {
        let req = alloc(&mut h);
        let _ = h.s.handle_client(h.now, spoofed, &req, 0..req.len());
        answered += h.outputs().len();
    }
    assert_eq!(answered, 100);
}

#[test]
fn tcp_clients_get_padded_channel_data() {
    let mut h = Harness::new(config());
    let alice = creds("alice", "alicepw");
    let c = Client { via: Via::Tcp(crate::ConnId(9)), remote: "203.0.113.9:1000".parse().unwrap() };
    let relay = h.allocate(c, &alice);
    assert_eq!(h.bind(c, &alice, 0x4000, peer()), None);
    let framed = h.relay_from_peer(relay, peer(), b"odd").unwrap();
    assert_eq!(framed, [0x40, 0x00, 0, 3, b'o', b'd', b'd', 0]);
    // The stream closing ends the allocation.
    h.s.handle_client_closed(h.now, c);
    assert_eq!(h.s.allocation_count(), 0);
    assert!(matches!(h.outputs().as_slice(), [Output::ReleaseRelay { .. }]));
}

#[test]
#[allow(clippy::reversed_empty_ranges)] // a reversed range is one of the inputs under test
fn headroom_is_checked_not_assumed() {
    let mut h = Harness::new(config());
    let alice = creds("alice", "alicepw");
    let c = client(1);
    let relay = h.allocate(c, &alice);
    assert_eq!(h.permit(c, &alice, peer()), None);
    let mut buf = [0u8; 64];
    assert!(h.s.handle_peer(h.now, relay, peer(), &mut buf, 2..10).is_none());
    assert!(h.s.handle_peer(h.now, relay, peer(), &mut buf, 48..62).is_none());
    assert!(h.s.handle_peer(h.now, relay, peer(), &mut buf, 50..40).is_none());
    assert!(h.s.handle_peer(h.now, relay, peer(), &mut buf, 48..60).is_some());
}

#[test]
fn time_going_backwards_is_ignored() {
    let mut h = Harness::new(config());
    let alice = creds("alice", "alicepw");
    let c = client(1);
    h.allocate(c, &alice);
    h.advance(Duration::from_secs(100));
    h.s.handle_timeout(h.t0);
    let ind = send_indication(peer(), b"x");
    let _ = h.s.handle_client(h.t0, c, &ind, 0..ind.len());
    assert_eq!(h.s.allocation_count(), 1);
    h.advance(Duration::from_secs(500));
    assert_eq!(h.s.allocation_count(), 0);
}

#[test]
fn garbage_and_responses_are_dropped_and_counted() {
    let mut h = Harness::new(config());
    let c = client(1);
    for junk in [&b""[..], b"\x16\xfe\xfd", b"\x80\x00\x00\x00", b"\x00\x01\x00\x00", b"\x40"] {
        assert!(h.s.handle_client(h.now, c, junk, 0..junk.len()).is_none());
    }
    let mut resp = request(method::BINDING, [1; 12], vec![], None);
    resp[0..2].copy_from_slice(&message_type(method::BINDING, Class::Success).to_be_bytes());
    assert!(h.s.handle_client(h.now, c, &resp, 0..resp.len()).is_none());
    assert!(h.outputs().is_empty());
    assert_eq!(h.s.stats().dropped_malformed, 6);
}

#[test]
fn same_seed_same_bytes() {
    let run = || {
        let mut h = Harness::new(config());
        let alice = creds("alice", "alicepw");
        let c = client(1);
        let relay = h.allocate(c, &alice);
        h.permit(c, &alice, peer());
        h.relay_from_peer(relay, peer(), b"data").unwrap()
    };
    assert_eq!(run(), run());
    let framed = run();
    let v = StunView::new_checked(&framed).unwrap();
    assert_eq!(decode_xor_address(v.find(attr::XOR_PEER_ADDRESS).unwrap(), &v.transaction_id()), Some(peer()));
}

#[test]
fn shutdown_releases_every_relay() {
    let mut h = Harness::new(config());
    let alice = creds("alice", "alicepw");
    h.allocate(client(1), &alice);
    h.allocate(client(2), &alice);
    h.s.shutdown();
    let out = h.outputs();
    assert_eq!(out.iter().filter(|o| matches!(o, Output::ReleaseRelay { .. })).count(), 2);
    assert_eq!(h.s.allocation_count(), 0);
}

fn allocate_with(h: &mut Harness, c: Client, cr: &Creds, extra: Vec<Attribute>) -> Vec<Output> {
    let mut attrs = vec![RequestedTransport::new(17).into()];
    attrs.extend(extra);
    let (req, _) = h.signed(c, method::ALLOCATE, attrs, cr);
    assert!(h.s.handle_client(h.now, c, &req, 0..req.len()).is_none());
    h.outputs()
}

#[test]
fn even_port_and_reservation_tokens() {
    use stun_codec::rfc5766::attributes::{EvenPort, ReservationToken};
    let mut h = Harness::new(config());
    let alice = creds("alice", "alicepw");
    // EVEN-PORT without R: an even port, no token.
    let out = allocate_with(&mut h, client(1), &alice, vec![EvenPort::new(false).into()]);
    assert!(matches!(out.as_slice(), [Output::BindRelay { port: PortRequest::Even, .. }]), "{out:?}");
    // With R: a pair; the response carries a token for the reserved odd port.
    let out = allocate_with(&mut h, client(2), &alice, vec![EvenPort::new(true).into()]);
    let [Output::BindRelay { allocation, port: PortRequest::EvenPair, .. }] = out.as_slice() else { panic!("{out:?}") };
    let (rtp, rtcp): (SocketAddr, SocketAddr) = ("10.0.0.1:50000".parse().unwrap(), "10.0.0.1:50001".parse().unwrap());
    h.s.handle_relay_bound(h.now, *allocation, Some(rtp), Some(rtcp));
    let out = h.outputs();
    let [Output::Transmit(t)] = out.as_slice() else { panic!("{out:?}") };
    let v = StunView::new_checked(&t.payload).unwrap();
    let token = v.find(attr::RESERVATION_TOKEN).unwrap();
    let token = u64::from_be_bytes(token.try_into().unwrap());
    // The token cannot be combined with EVEN-PORT, and an unknown one gets 508.
    let both = vec![ReservationToken::new(token).into(), EvenPort::new(false).into()];
    let mut attrs = vec![RequestedTransport::new(17).into()];
    attrs.extend(both);
    assert_eq!(h.code_of(client(3), method::ALLOCATE, attrs, &alice), Some(400));
    let attrs = vec![RequestedTransport::new(17).into(), ReservationToken::new(token ^ 1).into()];
    assert_eq!(h.code_of(client(3), method::ALLOCATE, attrs, &alice), Some(508));
    // The token gets the reserved socket, once.
    let out = allocate_with(&mut h, client(3), &alice, vec![ReservationToken::new(token).into()]);
    let [Output::BindRelay { allocation, port: PortRequest::Reserved(r), .. }] = out.as_slice() else { panic!("{out:?}") };
    assert_eq!(*r, rtcp);
    h.s.handle_relay_bound(h.now, *allocation, Some(rtcp), None);
    let out = h.outputs();
    let [Output::Transmit(t)] = out.as_slice() else { panic!("{out:?}") };
    assert_eq!(StunView::new_checked(&t.payload).unwrap().xor_address(attr::XOR_RELAYED_ADDRESS), Some(rtcp));
    let attrs = vec![RequestedTransport::new(17).into(), ReservationToken::new(token).into()];
    assert_eq!(h.code_of(client(4), method::ALLOCATE, attrs, &alice), Some(508));
    // A pair request the shell could only half satisfy fails whole, releasing what was bound.
    let out = allocate_with(&mut h, client(5), &alice, vec![EvenPort::new(true).into()]);
    let [Output::BindRelay { allocation, .. }] = out.as_slice() else { panic!("{out:?}") };
    h.s.handle_relay_bound(h.now, *allocation, Some("10.0.0.1:50002".parse().unwrap()), None);
    let out = h.outputs();
    assert!(matches!(out.as_slice(), [Output::ReleaseRelay { .. }, Output::Transmit(t)] if error_code(&t.payload) == Some(508)), "{out:?}");
}

#[test]
fn unused_reservations_are_released_after_30_seconds() {
    use stun_codec::rfc5766::attributes::EvenPort;
    let mut h = Harness::new(config());
    let alice = creds("alice", "alicepw");
    let out = allocate_with(&mut h, client(1), &alice, vec![EvenPort::new(true).into()]);
    let [Output::BindRelay { allocation, .. }] = out.as_slice() else { panic!("{out:?}") };
    let rtcp: SocketAddr = "10.0.0.1:50001".parse().unwrap();
    h.s.handle_relay_bound(h.now, *allocation, Some("10.0.0.1:50000".parse().unwrap()), Some(rtcp));
    h.outputs();
    h.advance(RESERVATION_LIFETIME - Duration::from_millis(1));
    assert!(h.outputs().is_empty());
    h.advance(Duration::from_millis(1));
    assert!(matches!(h.outputs().as_slice(), [Output::ReleaseRelay { relay, .. }] if *relay == rtcp));
}

#[test]
fn strict_channel_numbers_refuse_the_rfc5766_range() {
    let mut h = Harness::new(TurnConfig { strict_channel_numbers: true, ..config() });
    let alice = creds("alice", "alicepw");
    let c = client(1);
    h.allocate(c, &alice);
    assert_eq!(h.bind(c, &alice, 0x5000, peer()), Some(400));
    assert_eq!(h.bind(c, &alice, 0x4FFF, peer()), None);
    let mut lax = Harness::new(config());
    lax.allocate(c, &alice);
    assert_eq!(lax.bind(c, &alice, 0x7FFF, peer()), None);
    let cd = channel_data(0x7FFF, b"legacy");
    assert_eq!(&cd[lax.s.handle_client(lax.now, c, &cd, 0..cd.len()).unwrap().range], b"legacy");
}

#[test]
fn servers_sharing_a_nonce_key_accept_each_others_nonces() {
    let alice = creds("alice", "alicepw");
    let c = client(1);
    let shared = TurnConfig { nonce_key: Some([42; 32]), ..config() };
    let mut a = Harness::with_seed(shared.clone(), [1; 32]);
    let mut b = Harness::with_seed(shared, [2; 32]);
    let nonce = a.nonce(c);
    // Authenticated by b with a's nonce: the answer is about the (missing) allocation.
    let req = request(method::REFRESH, b.tid(), vec![], Some((&alice, &nonce)));
    assert_eq!(error_code(&b.exchange(c, &req)), Some(437));
    // Without a shared key, each derives its own from its seed: the nonce is stale there.
    let mut a = Harness::with_seed(config(), [1; 32]);
    let mut b = Harness::with_seed(config(), [2; 32]);
    let nonce = a.nonce(c);
    let req = request(method::REFRESH, b.tid(), vec![], Some((&alice, &nonce)));
    assert_eq!(error_code(&b.exchange(c, &req)), Some(438));
}

#[test]
fn the_nonce_key_is_redacted_in_debug() {
    let cfg = TurnConfig { nonce_key: Some([42; 32]), ..config() };
    let shown = format!("{cfg:?}");
    assert!(shown.contains("nonce_key: Some(\"<redacted>\")"), "{shown}");
    assert!(!shown.contains("[42"), "{shown}");
}

/// A request signed the RFC 8489 way: PASSWORD-ALGORITHMS echoed, PASSWORD-ALGORITHM `alg`, and
/// MESSAGE-INTEGRITY-SHA256 with `key` (and MESSAGE-INTEGRITY before it with `sha1_too`).
#[allow(clippy::too_many_arguments)]
fn signed_sha256(m: u16, tid: [u8; 12], user: &str, nonce: &str, offered: &[u8], alg: u16, key: &[u8], sha1_too: Option<&[u8]>) -> Vec<u8> {
    let mut req = request(m, tid, vec![RequestedTransport::new(17).into()], None);
    raw_attr(&mut req, attr::USERNAME, user.as_bytes());
    raw_attr(&mut req, attr::REALM, REALM.as_bytes());
    raw_attr(&mut req, attr::NONCE, nonce.as_bytes());
    raw_attr(&mut req, attr::PASSWORD_ALGORITHMS, offered);
    raw_attr(&mut req, attr::PASSWORD_ALGORITHM, &[(alg >> 8) as u8, alg as u8, 0, 0]);
    if let Some(k) = sha1_too {
        message::append_integrity(&mut req, k);
    }
    message::append_integrity_sha256(&mut req, key);
    message::append_fingerprint(&mut req);
    req
}

/// RFC 8489 §9.2: the challenge offers SHA-256 and MD5 (PASSWORD-ALGORITHMS, and the nonce cookie's
/// "password algorithms" bit); a client that picks SHA-256 and seals with MESSAGE-INTEGRITY-SHA256
/// allocates, and every answer of its session (the Allocate success, a later error) is sealed the same
/// way with the SHA-256 key. A static user and a REST user both work. The MD5 / MESSAGE-INTEGRITY way
/// keeps working beside it.
#[test]
fn sha256_password_algorithm_and_message_integrity_sha256() {
    let mut h = Harness::new(config());
    let c = client(7000);
    // The challenge.
    let tid = h.tid();
    let r = h.exchange(c, &request(method::ALLOCATE, tid, vec![RequestedTransport::new(17).into()], None));
    let v = StunView::new_checked(&r).unwrap();
    assert_eq!(error_code(&r), Some(401));
    assert_eq!(v.find(attr::PASSWORD_ALGORITHMS), Some(&auth::PASSWORD_ALGORITHMS[..]));
    assert_eq!(v.fingerprint_ok(), None, "no FINGERPRINT asked for, none sent");
    let nonce = String::from_utf8(v.find(attr::NONCE).unwrap().to_vec()).unwrap();
    assert!(nonce.starts_with("obMatJos2gAAA"), "{nonce}");
    // A request with FINGERPRINT gets one back.
    let tid = h.tid();
    let r = h.exchange(c, &encode(
        {
            let mut m = Message::new(MessageClass::Request, stun_codec::Method::new(method::ALLOCATE).unwrap(), TransactionId::new(tid));
            m.add_attribute(RequestedTransport::new(17));
            m
        },
        None,
        true,
    ));
    assert_eq!(error_code(&r), Some(401));
    assert_eq!(StunView::new_checked(&r).unwrap().fingerprint_ok(), Some(true));

    for (user, pass) in [("alice".to_string(), "alicepw".to_string()), {
        let u = auth::rest_username(UNIX0 + 3600, Some("carol"));
        let p = auth::rest_password(SECRET.as_bytes(), &u);
        (u, p)
    }] {
        let c = client(if user == "alice" { 7001 } else { 7002 });
        let key = auth::long_term_key_sha256(&user, REALM, &pass);
        let nonce = h.nonce(c);
        let tid = h.tid();
        let req = signed_sha256(method::ALLOCATE, tid, &user, &nonce, &auth::PASSWORD_ALGORITHMS, 2, &key, None);
        assert!(h.s.handle_client(h.now, c, &req, 0..req.len()).is_none());
        let out = h.outputs();
        let [Output::BindRelay { allocation, .. }] = out.as_slice() else { panic!("{user}: {out:?}") };
        h.s.handle_relay_bound(h.now, *allocation, Some("10.0.0.1:50000".parse().unwrap()), None);
        let out = h.outputs();
        let [Output::Transmit(t)] = out.as_slice() else { panic!("{out:?}") };
        let v = StunView::new_checked(&t.payload).unwrap();
        assert_eq!(v.class(), Class::Success, "{user}");
        assert!(v.check_integrity_sha256(&key), "{user}: the answer is sealed with MESSAGE-INTEGRITY-SHA256");
        assert!(v.find(attr::MESSAGE_INTEGRITY).is_none());
        assert_eq!(v.fingerprint_ok(), Some(true));
        // A second Allocate from the same client: 437, sealed the same way.
        let nonce = h.nonce(c);
        let tid = h.tid();
        let req = signed_sha256(method::ALLOCATE, tid, &user, &nonce, &auth::PASSWORD_ALGORITHMS, 2, &key, None);
        let r = h.exchange(c, &req);
        assert_eq!(error_code(&r), Some(437));
        assert!(StunView::new_checked(&r).unwrap().check_integrity_sha256(&key));
    }

    // Both integrity attributes, the SHA-1 one made with a wrong key: the SHA-256 one is what counts.
    let c = client(7003);
    let key = auth::long_term_key_sha256("bob", REALM, "bobpw");
    let nonce = h.nonce(c);
    let tid = h.tid();
    let req = signed_sha256(method::ALLOCATE, tid, "bob", &nonce, &auth::PASSWORD_ALGORITHMS, 2, &key, Some(b"wrong"));
    assert!(h.s.handle_client(h.now, c, &req, 0..req.len()).is_none());
    assert!(matches!(h.outputs().as_slice(), [Output::BindRelay { .. }]));

    // MD5 named explicitly, sealed with MESSAGE-INTEGRITY-SHA256 and the MD5 key: fine too.
    let c = client(7004);
    let md5 = auth::long_term_key("bob", REALM, "bobpw");
    let nonce = h.nonce(c);
    let tid = h.tid();
    let req = signed_sha256(method::ALLOCATE, tid, "bob", &nonce, &auth::PASSWORD_ALGORITHMS, 1, &md5, None);
    assert!(h.s.handle_client(h.now, c, &req, 0..req.len()).is_none());
    assert!(matches!(h.outputs().as_slice(), [Output::BindRelay { .. }]));

    // The classic way still works.
    h.allocate(client(7005), &creds("alice", "alicepw"));
}

/// RFC 8489 §9.2.4's refusals: a PASSWORD-ALGORITHMS that is not the one offered (a bid-down by a man in
/// the middle), an algorithm outside it, one attribute without the other: 400. The SHA-256 key with the
/// MD5 algorithm named, or a wrong password: 401.
#[test]
fn password_algorithm_negotiation_refusals() {
    let mut h = Harness::new(config());
    let key = auth::long_term_key_sha256("alice", REALM, "alicepw");
    let md5_only = [0u8, 1, 0, 0];
    let cases: [(&[u8], u16, &[u8], u16); 5] = [
        (&md5_only, 2, &key, 400),
        (&auth::PASSWORD_ALGORITHMS, 3, &key, 400),
        (&auth::PASSWORD_ALGORITHMS, 1, &key, 401),
        (&auth::PASSWORD_ALGORITHMS, 2, b"not the key", 401),
        (&[0, 2, 0, 0, 0, 1, 0], 2, &key, 400),
    ];
    for (i, (offered, alg, k, want)) in cases.into_iter().enumerate() {
        let c = client(7100 + i as u16);
        let nonce = h.nonce(c);
        let tid = h.tid();
        let req = signed_sha256(method::ALLOCATE, tid, "alice", &nonce, offered, alg, k, None);
        let r = h.exchange(c, &req);
        assert_eq!(error_code(&r), Some(want), "case {i}");
    }
    // PASSWORD-ALGORITHM alone.
    let c = client(7200);
    let nonce = h.nonce(c);
    let tid = h.tid();
    let mut req = request(method::ALLOCATE, tid, vec![RequestedTransport::new(17).into()], None);
    raw_attr(&mut req, attr::USERNAME, b"alice");
    raw_attr(&mut req, attr::REALM, REALM.as_bytes());
    raw_attr(&mut req, attr::NONCE, nonce.as_bytes());
    raw_attr(&mut req, attr::PASSWORD_ALGORITHM, &[0, 2, 0, 0]);
    message::append_integrity_sha256(&mut req, &key);
    let r = h.exchange(c, &req);
    assert_eq!(error_code(&r), Some(400));
}

/// Allocates with ADDITIONAL-ADDRESS-FAMILY (attribute `code`, family byte `fam`) for `c`, binding the
/// relays the server asks for (`v6_binds`: whether an IPv6 socket can be bound). Returns the response.
fn dual_allocate(h: &mut Harness, c: Client, code: u16, fam: u8, v6_binds: bool) -> Vec<u8> {
    let alice = creds("alice", "alicepw");
    let nonce = h.nonce(c);
    let tid = h.tid();
    let mut req = request(method::ALLOCATE, tid, vec![RequestedTransport::new(17).into()], None);
    raw_attr(&mut req, code, &[fam, 0, 0, 0]);
    let req = sign(req, &alice, &nonce);
    assert!(h.s.handle_client(h.now, c, &req, 0..req.len()).is_none());
    for _ in 0..3 {
        let out = h.outputs();
        match out.as_slice() {
            [Output::BindRelay { allocation, family: Family::V4, port: PortRequest::Any }] => {
                h.s.handle_relay_bound(h.now, *allocation, Some("10.0.0.1:50000".parse().unwrap()), None);
            }
            [Output::BindRelay { allocation, family: Family::V6, port: PortRequest::Any }] => {
                let bound = v6_binds.then(|| "[2001:db8::1]:50001".parse().unwrap());
                h.s.handle_relay_bound(h.now, *allocation, bound, None);
            }
            [Output::Transmit(t)] => return t.payload.clone(),
            other => panic!("unexpected {other:?}"),
        }
    }
    panic!("no answer to the dual Allocate")
}

/// RFC 8656 ADDITIONAL-ADDRESS-FAMILY: one Allocate gets an IPv4 and an IPv6 relay (two XOR-RELAYED-ADDRESS),
/// with RFC 8656's code and with the draft's 0x8032 that coturn's clients send. Peers of both families get
/// permissions and are relayed through the relay of their family, both ways; a release ends both relays.
#[test]
fn additional_address_family_makes_a_dual_allocation() {
    for code in [attr::ADDITIONAL_ADDRESS_FAMILY, attr::ADDITIONAL_ADDRESS_FAMILY_DRAFT] {
        let mut h = Harness::new(config());
        let alice = creds("alice", "alicepw");
        let c = client(9000);
        let r = dual_allocate(&mut h, c, code, 2, true);
        let v = StunView::new_checked(&r).unwrap();
        assert_eq!(v.class(), Class::Success, "{:?}", error_code(&r));
        assert!(v.check_integrity(&alice.key));
        let tid = v.transaction_id();
        let relays: Vec<SocketAddr> = v.find_all(attr::XOR_RELAYED_ADDRESS).filter_map(|a| decode_xor_address(a, &tid)).collect();
        let (r4, r6): (SocketAddr, SocketAddr) = ("10.0.0.1:50000".parse().unwrap(), "[2001:db8::1]:50001".parse().unwrap());
        assert_eq!(relays, vec![r4, r6], "{code:#x}");
        assert!(v.find(attr::ADDRESS_ERROR_CODE).is_none());

        let p6: SocketAddr = "[2606:4700::1]:7000".parse().unwrap();
        assert_eq!(h.permit(c, &alice, peer()), None);
        assert_eq!(h.permit(c, &alice, p6), None, "an IPv6 peer on a dual allocation");
        assert_eq!(h.bind(c, &alice, 0x4001, p6), None);
        // Client to peers: each through the relay of its family.
        for (p, relay) in [(peer(), r4), (p6, r6)] {
            let ind = send_indication(p, b"hi");
            let route = h.s.handle_client(h.now, c, &ind, 0..ind.len()).unwrap();
            assert_eq!((route.relay, route.peer), (relay, p));
        }
        let cd = channel_data(0x4001, b"on the channel");
        let route = h.s.handle_client(h.now, c, &cd, 0..cd.len()).unwrap();
        assert_eq!((route.relay, route.peer), (r6, p6));
        // Peers to the client: both relays lead to it.
        assert!(h.relay_from_peer(r4, peer(), b"from v4").is_some());
        let back = h.relay_from_peer(r6, p6, b"from v6").unwrap();
        assert_eq!(&back[..2], &[0x40, 0x01], "on the channel");
        // A release ends both relays.
        let (req, _) = h.signed(c, method::REFRESH, vec![Lifetime::new(Duration::ZERO).unwrap().into()], &alice);
        assert!(h.s.handle_client(h.now, c, &req, 0..req.len()).is_none());
        let out = h.outputs();
        let released: Vec<SocketAddr> = out.iter().filter_map(|o| match o {
            Output::ReleaseRelay { relay, .. } => Some(*relay),
            _ => None,
        }).collect();
        assert_eq!(released, vec![r4, r6]);
        assert!(out.iter().any(|o| matches!(o, Output::Transmit(t) if error_code(&t.payload).is_none())), "the Refresh succeeded");
        assert_eq!(h.relay_from_peer(r6, p6, b"late"), None);
    }
}

/// The dual allocation's refusals and partial answers: IPv4 as the additional family, or with
/// REQUESTED-ADDRESS-FAMILY, is 400; a server without IPv6 relays, or one that cannot bind the second
/// socket, allocates the IPv4 relay and says why not the other in ADDRESS-ERROR-CODE (440, 508).
#[test]
fn additional_address_family_refusals_and_address_error_code() {
    let mut h = Harness::new(config());
    let c = client(9100);
    assert_eq!(error_code(&dual_allocate_refused(&mut h, c, &[1, 0, 0, 0], false)), Some(400), "IPv4 as the additional family");
    assert_eq!(error_code(&dual_allocate_refused(&mut h, client(9101), &[2, 0, 0, 0], true)), Some(400), "with REQUESTED-ADDRESS-FAMILY");
    // EVEN-PORT with R=1 (a pair reservation) too; with R=0, as coturn's clients send it, the IPv4 relay is even.
    for (r_bit, want) in [(0x80u8, Some(400)), (0, None)] {
        let c = client(9102 + u16::from(r_bit));
        let nonce = h.nonce(c);
        let tid = h.tid();
        let mut req = request(method::ALLOCATE, tid, vec![RequestedTransport::new(17).into()], None);
        raw_attr(&mut req, attr::EVEN_PORT, &[r_bit]);
        raw_attr(&mut req, attr::ADDITIONAL_ADDRESS_FAMILY_DRAFT, &[2, 0, 0, 0]);
        let req = sign(req, &creds("alice", "alicepw"), &nonce);
        assert!(h.s.handle_client(h.now, c, &req, 0..req.len()).is_none());
        let out = h.outputs();
        match (want, out.as_slice()) {
            (Some(code), [Output::Transmit(t)]) => assert_eq!(error_code(&t.payload), Some(code)),
            (None, [Output::BindRelay { family: Family::V4, port: PortRequest::Even, .. }]) => {}
            other => panic!("R={r_bit:#x}: {other:?}"),
        }
    }

    for (cfg, v6_binds, want) in [(TurnConfig { relay_families: (true, false), ..config() }, true, 440u16), (config(), false, 508)] {
        let mut h = Harness::new(cfg);
        let r = dual_allocate(&mut h, client(9200), attr::ADDITIONAL_ADDRESS_FAMILY, 2, v6_binds);
        let v = StunView::new_checked(&r).unwrap();
        assert_eq!(v.class(), Class::Success);
        assert_eq!(v.find_all(attr::XOR_RELAYED_ADDRESS).count(), 1);
        let e = v.find(attr::ADDRESS_ERROR_CODE).expect("ADDRESS-ERROR-CODE");
        assert_eq!((e[0], u16::from(e[2]) * 100 + u16::from(e[3])), (2, want));
        assert!(v.check_integrity(&creds("alice", "alicepw").key), "ADDRESS-ERROR-CODE is covered by the integrity");
        // An IPv6 peer is a family mismatch on what was allocated.
        assert_eq!(h.permit(client(9200), &creds("alice", "alicepw"), "[2606:4700::1]:9".parse().unwrap()), Some(443));
    }
}

fn dual_allocate_refused(h: &mut Harness, c: Client, aaf: &[u8], with_raf: bool) -> Vec<u8> {
    let alice = creds("alice", "alicepw");
    let nonce = h.nonce(c);
    let tid = h.tid();
    let mut attrs: Vec<Attribute> = vec![RequestedTransport::new(17).into()];
    if with_raf {
        attrs.push(RequestedAddressFamily::new(AddressFamily::V4).into());
    }
    let mut req = request(method::ALLOCATE, tid, attrs, None);
    raw_attr(&mut req, attr::ADDITIONAL_ADDRESS_FAMILY, aaf);
    let req = sign(req, &alice, &nonce);
    h.exchange(c, &req)
}
