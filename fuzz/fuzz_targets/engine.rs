//! The whole engine fed an arbitrary sequence of inputs: datagrams and stream
//! bytes from several clients (garbage, and well-formed requests signed with
//! good, wrong or stale credentials), peer datagrams on the relays it bound,
//! failed binds, closes, and time jumping forwards and backwards.
//!
//! TCP relays (RFC 6062) too: TCP allocations, Connect and ConnectionBind
//! (with CONNECTION-IDs the engine gave out, and forged ones), peers that
//! connect to a relay or that the engine connected to, their bytes, and
//! closes on either end.
//!
//! Invariants checked on every step: no panic; data goes to a peer only
//! through a relay the engine was given and still holds, and only to a peer
//! the policy allows (datagrams and TCP connections alike); data goes to a
//! client or a stream only if it exists; every control message the engine
//! sends parses as STUN.
#![no_main]

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use switchboard_core::stun::message::{append_attribute as raw_attr, append_fingerprint, append_integrity, append_integrity_sha256};
use switchboard_core::stun::view::{attr, encode_xor_address, method, StunView, MAGIC_COOKIE};
use switchboard_core::turn::auth::{long_term_key, long_term_key_sha256, rest_password, PASSWORD_ALGORITHMS};
use switchboard_core::stun::NatDiscovery;
use switchboard_core::turn::{PortRequest, TurnConfig, RELAY_HEADROOM, RELAY_TAILROOM};
use switchboard_core::{AllocationId, Client, Config, ConnId, Forward, Input, Output, Switchboard, Via};

const REALM: &str = "fuzz";
const SECRET: &str = "fuzz-secret";
const UNIX_START: u64 = 1_800_000_000;
const LISTEN: &str = "192.0.2.10:3478";

/// Peers: public ones the policy allows, and every refused form.
const PEERS: &[&str] = &[
    "8.8.8.8:5000",
    "1.1.1.1:53",
    "[2606:4700::1]:9",
    "127.0.0.1:3480",
    "10.0.0.1:9",
    "169.254.169.254:80",
    "0.0.0.0:1",
    "[::1]:9",
    "[::]:9",
    "[::ffff:127.0.0.1]:9",
    "[::127.0.0.1]:9",
    "[64:ff9b::a00:1]:9",
    "[2002:7f00:1::]:9",
    "[2001:0:7f00:1::]:9",
    "[fe80::1]:9",
    "[fc00::1]:9",
    "100.64.0.1:9",
    "224.0.0.1:9",
    "255.255.255.255:9",
];

#[derive(Arbitrary, Debug)]
enum Auth {
    None,
    Static,
    Rest { expired: bool },
    WrongPassword,
    StaleNonce,
    /// RFC 8489: PASSWORD-ALGORITHMS echoed (or a tampered list), PASSWORD-ALGORITHM `alg`, MESSAGE-INTEGRITY-SHA256.
    Sha256 { alg: u16, tampered: bool },
}

#[derive(Arbitrary, Debug)]
enum Attr {
    Transport(u8),
    Lifetime(u32),
    Peer(u8),
    PeerIp([u8; 16], u16, bool),
    Channel(u16),
    EvenPort(bool),
    Token([u8; 8]),
    Family(u8),
    DontFragment,
    Data(Vec<u8>),
    Raw(u16, Vec<u8>),
    /// RFC 5780.
    ChangeRequest(u8),
    ResponsePort(u16),
    Padding(u16),
    /// RFC 6062: a CONNECTION-ID the engine gave out (by index), or any.
    KnownConnection(u8),
    ConnectionId(u32),
}

#[derive(Arbitrary, Debug)]
enum Op {
    Udp { client: u8, data: Vec<u8> },
    Request { client: u8, method: u8, attrs: Vec<Attr>, auth: Auth, fingerprint: bool },
    Channel { client: u8, number: u16, len: u8 },
    Send { client: u8, peer: u8, data: Vec<u8> },
    FromPeer { relay: u8, peer: u8, len: u16 },
    Open { conn: u8 },
    Close { conn: u8 },
    Advance(u16),
    Back(u8),
    FailBinds(bool),
    /// RFC 6062: the shell's answer to a ConnectPeer (by index), opened or failed.
    PeerConnected { which: u8, ok: bool },
    /// RFC 6062: a peer connects to a relay (by index) the engine bound.
    PeerAccept { relay: u8, peer: u8 },
    /// RFC 6062: bytes from a peer connection (by index).
    PeerBytes { conn: u8, data: Vec<u8> },
    /// RFC 6062: a peer connection closes.
    PeerClose { conn: u8 },
}

struct Driver {
    sb: Switchboard,
    base: Instant,
    now: Instant,
    latest: Instant,
    nonces: HashMap<Client, String>,
    relays: HashSet<SocketAddr>,
    reserved: HashSet<SocketAddr>,
    relay_list: Vec<SocketAddr>,
    open: HashSet<u64>,
    next_port: u16,
    fail_binds: bool,
    tid: u32,
    /// RFC 6062: ConnectPeer requests not answered yet, CONNECTION-IDs seen, peer connections opened.
    connects: Vec<u32>,
    connection_ids: Vec<u32>,
    peer_conns: Vec<u64>,
    next_conn: u64,
}

fn client_of(c: u8) -> Client {
    let i = c % 8;
    if i < 4 {
        // Each UDP client on one of the four RFC 5780 addresses.
        Client { via: Via::Udp(nat().addresses()[usize::from(i)]), remote: SocketAddr::new([198, 51, 100, 1].into(), 40000 + u16::from(i)) }
    } else {
        Client { via: Via::Tcp(ConnId(u64::from(i - 4))), remote: SocketAddr::new([198, 51, 100, 2].into(), 40000 + u16::from(i)) }
    }
}

/// The server's RFC 5780 addresses: the listener and a second IP.
fn nat() -> NatDiscovery {
    NatDiscovery::new(LISTEN.parse().unwrap(), [192, 0, 2, 20].into())
}

fn peer_of(p: u8) -> SocketAddr {
    PEERS[usize::from(p) % PEERS.len()].parse().unwrap()
}

impl Driver {
    fn new() -> Self {
        let base = Instant::now();
        let mut turn = TurnConfig::default();
        turn.realm = REALM.into();
        turn.users = vec![("alice".into(), "alicepw".into())];
        turn.static_auth_secret = Some(SECRET.into());
        turn.relay_families = (true, true);
        turn.nat_discovery = Some(nat());
        turn.total_quota = 6;
        turn.user_quota = 4;
        turn.max_permissions = 8;
        Driver {
            sb: Switchboard::new(Config { turn, ..Config::default() }, base, UNIX_START, &[7; 32]),
            base,
            now: base,
            latest: base,
            nonces: HashMap::new(),
            relays: HashSet::new(),
            reserved: HashSet::new(),
            relay_list: Vec::new(),
            open: HashSet::new(),
            next_port: 50000,
            fail_binds: false,
            tid: 0,
            connects: Vec::new(),
            connection_ids: Vec::new(),
            peer_conns: Vec::new(),
            next_conn: 100,
        }
    }

    fn unix_now(&self) -> u64 {
        UNIX_START + self.latest.duration_since(self.base).as_secs()
    }

    fn check_to_peer(&self, relay: SocketAddr, peer: SocketAddr) {
        assert!(self.relays.contains(&relay), "relayed through {relay}, which the engine does not hold");
        assert!(self.sb.turn().config().peer_policy.is_allowed(peer.ip()), "relayed to refused peer {peer}");
    }

    fn forward(&self, f: Forward) {
        match f {
            Forward::None => {}
            Forward::ToPeer(r) => self.check_to_peer(r.relay, r.peer),
            Forward::ToClient(r) => {
                if let Via::Tcp(c) = r.to.via {
                    assert!(self.open.contains(&c.0), "relayed to a closed stream");
                }
            }
        }
    }

    fn input(&mut self, input: Input<'_>) {
        let f = self.sb.handle_input(self.now, input);
        self.forward(f);
        self.drain();
    }

    fn drain(&mut self) {
        let mut binds = Vec::new();
        loop {
            match self.sb.poll_output() {
                Output::Transmit(t) => {
                    let v = StunView::new_checked(&t.payload).expect("engine sent an unparsable message");
                    // FINGERPRINT is right where it is; only an error to an unauthenticated request without one
                    // goes without (as coturn answers).
                    assert_ne!(v.fingerprint_ok(), Some(false));
                    if v.fingerprint_ok().is_none() {
                        assert_eq!(v.class(), switchboard_core::stun::view::Class::Error, "no FINGERPRINT on a success");
                        assert!(v.integrity_offset().is_none(), "no FINGERPRINT on an authenticated answer");
                    }
                    // A response leaves from one of the server's own addresses (CHANGE-REQUEST picks which),
                    // to a client's IP (RESPONSE-PORT may change only the port).
                    if let Via::Udp(from) = t.to.via {
                        assert!(nat().addresses().contains(&from), "sent from {from}");
                        assert_eq!(t.to.remote.ip(), std::net::IpAddr::from([198, 51, 100, 1]), "sent to {}", t.to.remote);
                    }
                    if let Some(n) = v.find(attr::NONCE) {
                        self.nonces.insert(t.to, String::from_utf8(n.to_vec()).expect("nonce is text"));
                    }
                    if let Some(id) = v.find(attr::CONNECTION_ID) {
                        self.connection_ids.push(u32::from_be_bytes(id.try_into().expect("CONNECTION-ID is 4 bytes")));
                    }
                    if let Via::Tcp(c) = t.to.via {
                        assert!(self.open.contains(&c.0), "a message to a closed stream");
                    }
                }
                Output::ToPeer { relay, peer, .. } => self.check_to_peer(relay, peer),
                Output::BindRelay { allocation, family, port } => binds.push((allocation, family, port)),
                Output::BindTcpRelay { allocation, family } => binds.push((allocation, family, PortRequest::Any)),
                Output::ConnectPeer { relay, peer, connection } => {
                    self.check_to_peer(relay, peer);
                    self.connects.push(connection);
                }
                Output::ToStream { conn, .. } => assert!(self.open.contains(&conn.0), "bytes to a closed stream {conn:?}"),
                Output::HandOff { conn, .. } => {
                    // One worker here: only a forged CONNECTION-ID names another; the stream leaves.
                    assert!(self.open.remove(&conn.0), "handed off a stream that is not open");
                }
                Output::ReleaseRelay { relay, .. } => {
                    assert!(self.relays.remove(&relay) || self.reserved.remove(&relay), "released {relay} twice");
                }
                Output::CloseStream(c) => {
                    self.open.remove(&c.0);
                }
                Output::Timeout(_) => break,
                _ => {}
            }
        }
        for (allocation, family, port) in binds {
            self.bind(allocation, family == switchboard_core::Family::V6, port);
        }
    }

    fn bind(&mut self, allocation: AllocationId, v6: bool, port: PortRequest) {
        let ip: IpAddr = if v6 { "2001:db8::1".parse().unwrap() } else { "203.0.113.1".parse().unwrap() };
        let (bound, reserved) = if self.fail_binds {
            (None, None)
        } else {
            match port {
                PortRequest::Reserved(addr) => {
                    assert!(self.reserved.remove(&addr), "asked to use a reservation it does not hold");
                    (Some(addr), None)
                }
                PortRequest::EvenPair => {
                    self.next_port = (self.next_port + 2) & !1;
                    let a = SocketAddr::new(ip, self.next_port);
                    (Some(a), Some(SocketAddr::new(ip, self.next_port + 1)))
                }
                PortRequest::Any | PortRequest::Even => {
                    self.next_port = (self.next_port + 2) & !1;
                    (Some(SocketAddr::new(ip, self.next_port)), None)
                }
            }
        };
        if let Some(b) = bound {
            self.relays.insert(b);
            self.relay_list.push(b);
        }
        if let Some(r) = reserved {
            self.reserved.insert(r);
        }
        self.input(Input::RelayBound { allocation, bound, reserved });
    }

    fn client_input(&mut self, client: Client, data: &[u8]) {
        match client.via {
            Via::Udp(local) => self.input(Input::Datagram { local, remote: client.remote, buf: data, packet: 0..data.len() }),
            Via::Tcp(conn) => {
                if self.open.contains(&conn.0) {
                    self.input(Input::StreamData { conn, data });
                }
            }
        }
    }

    fn request(&mut self, client: Client, m: u16, attrs: Vec<Attr>, auth: Auth, fingerprint: bool) -> Vec<u8> {
        self.tid += 1;
        let mut tid = [0u8; 12];
        tid[..4].copy_from_slice(&self.tid.to_be_bytes());
        let mut b = Vec::with_capacity(128);
        b.extend_from_slice(&m.to_be_bytes());
        b.extend_from_slice(&[0, 0]);
        b.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
        b.extend_from_slice(&tid);
        let mut x = [0u8; 20];
        for a in attrs.into_iter().take(12) {
            match a {
                Attr::Transport(t) => raw_attr(&mut b, attr::REQUESTED_TRANSPORT, &[t, 0, 0, 0]),
                Attr::Lifetime(l) => raw_attr(&mut b, attr::LIFETIME, &l.to_be_bytes()),
                Attr::Peer(p) => {
                    let n = encode_xor_address(peer_of(p), &tid, &mut x);
                    raw_attr(&mut b, attr::XOR_PEER_ADDRESS, &x[..n]);
                }
                Attr::PeerIp(ip, port, v6) => {
                    let ip: IpAddr = if v6 { ip.into() } else { [ip[0], ip[1], ip[2], ip[3]].into() };
                    let n = encode_xor_address(SocketAddr::new(ip, port), &tid, &mut x);
                    raw_attr(&mut b, attr::XOR_PEER_ADDRESS, &x[..n]);
                }
                Attr::Channel(n) => raw_attr(&mut b, attr::CHANNEL_NUMBER, &[(n >> 8) as u8, n as u8, 0, 0]),
                Attr::EvenPort(r) => raw_attr(&mut b, attr::EVEN_PORT, &[if r { 0x80 } else { 0 }]),
                Attr::Token(t) => raw_attr(&mut b, attr::RESERVATION_TOKEN, &t),
                Attr::Family(f) => raw_attr(&mut b, attr::REQUESTED_ADDRESS_FAMILY, &[f, 0, 0, 0]),
                Attr::DontFragment => raw_attr(&mut b, attr::DONT_FRAGMENT, &[]),
                Attr::Data(d) => raw_attr(&mut b, attr::DATA, &d),
                Attr::Raw(t, v) => raw_attr(&mut b, t, &v),
                Attr::ChangeRequest(c) => raw_attr(&mut b, attr::CHANGE_REQUEST, &[0, 0, 0, c]),
                Attr::ResponsePort(p) => raw_attr(&mut b, attr::RESPONSE_PORT, &[(p >> 8) as u8, p as u8, 0, 0]),
                Attr::Padding(n) => raw_attr(&mut b, attr::PADDING, &vec![0; usize::from(n % 2048)]),
                Attr::KnownConnection(i) => {
                    if !self.connection_ids.is_empty() {
                        let id = self.connection_ids[usize::from(i) % self.connection_ids.len()];
                        raw_attr(&mut b, attr::CONNECTION_ID, &id.to_be_bytes());
                    }
                }
                Attr::ConnectionId(id) => raw_attr(&mut b, attr::CONNECTION_ID, &id.to_be_bytes()),
            }
        }
        let nonce = self.nonces.get(&client).cloned();
        let (user, key, nonce) = match auth {
            Auth::None => return self.finish(b, None, fingerprint),
            Auth::Static => ("alice".to_string(), long_term_key("alice", REALM, "alicepw"), nonce),
            Auth::Rest { expired } => {
                let exp = if expired { self.unix_now() - 1 } else { self.unix_now() + 3600 };
                let user = format!("{exp}:bob");
                let pw = rest_password(SECRET.as_bytes(), &user);
                let key = long_term_key(&user, REALM, &pw);
                (user, key, nonce)
            }
            Auth::WrongPassword => ("alice".to_string(), long_term_key("alice", REALM, "nope"), nonce),
            Auth::StaleNonce => ("alice".to_string(), long_term_key("alice", REALM, "alicepw"), Some("sb1stale".into())),
            Auth::Sha256 { alg, tampered } => {
                raw_attr(&mut b, attr::USERNAME, b"alice");
                raw_attr(&mut b, attr::REALM, REALM.as_bytes());
                raw_attr(&mut b, attr::NONCE, nonce.unwrap_or_default().as_bytes());
                let offered: &[u8] = if tampered { &[0, 1, 0, 0] } else { &PASSWORD_ALGORITHMS };
                raw_attr(&mut b, attr::PASSWORD_ALGORITHMS, offered);
                raw_attr(&mut b, attr::PASSWORD_ALGORITHM, &[(alg >> 8) as u8, alg as u8, 0, 0]);
                let key = if alg == 1 { long_term_key("alice", REALM, "alicepw").to_vec() } else { long_term_key_sha256("alice", REALM, "alicepw").to_vec() };
                append_integrity_sha256(&mut b, &key);
                return self.finish(b, None, fingerprint);
            }
        };
        raw_attr(&mut b, attr::USERNAME, user.as_bytes());
        raw_attr(&mut b, attr::REALM, REALM.as_bytes());
        raw_attr(&mut b, attr::NONCE, nonce.unwrap_or_default().as_bytes());
        self.finish(b, Some(key), fingerprint)
    }

    fn finish(&self, mut b: Vec<u8>, key: Option<[u8; 16]>, fingerprint: bool) -> Vec<u8> {
        if let Some(k) = key {
            append_integrity(&mut b, &k);
        }
        if fingerprint {
            append_fingerprint(&mut b);
        }
        b
    }

    fn step(&mut self, op: Op) {
        match op {
            Op::Udp { client, data } => self.client_input(client_of(client), &data),
            Op::Request { client, method: m, attrs, auth, fingerprint } => {
                let m = [
                    method::BINDING,
                    method::ALLOCATE,
                    method::REFRESH,
                    method::CREATE_PERMISSION,
                    method::CHANNEL_BIND,
                    method::SEND,
                    method::CONNECT,
                    method::CONNECTION_BIND,
                    0x00D,
                ][usize::from(m) % 9];
                let c = client_of(client);
                let b = self.request(c, m, attrs, auth, fingerprint);
                self.client_input(c, &b);
            }
            Op::Channel { client, number, len } => {
                let mut b = number.to_be_bytes().to_vec();
                b.extend_from_slice(&u16::from(len).to_be_bytes());
                b.resize(4 + usize::from(len).next_multiple_of(4), 0xAB);
                self.client_input(client_of(client), &b);
            }
            Op::Send { client, peer, data } => {
                let mut b = Vec::new();
                b.extend_from_slice(&0x0016u16.to_be_bytes());
                b.extend_from_slice(&[0, 0]);
                b.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
                b.extend_from_slice(&[5; 12]);
                let mut x = [0u8; 20];
                let n = encode_xor_address(peer_of(peer), &[5; 12], &mut x);
                raw_attr(&mut b, attr::XOR_PEER_ADDRESS, &x[..n]);
                raw_attr(&mut b, attr::DATA, &data);
                self.client_input(client_of(client), &b);
            }
            Op::FromPeer { relay, peer, len } => {
                if self.relay_list.is_empty() {
                    return;
                }
                // Also feed relays already released: the engine must ignore them.
                let relay = self.relay_list[usize::from(relay) % self.relay_list.len()];
                let len = usize::from(len) % 2000;
                let mut buf = vec![0x5Au8; RELAY_HEADROOM + len + RELAY_TAILROOM];
                let f = self.sb.handle_input(self.now, Input::RelayDatagram {
                    relay,
                    peer: peer_of(peer),
                    buf: &mut buf,
                    payload: RELAY_HEADROOM..RELAY_HEADROOM + len,
                });
                if let Forward::ToClient(r) = &f {
                    assert!(self.relays.contains(&relay), "data from a released relay reached a client");
                    assert!(r.range.start <= RELAY_HEADROOM && r.range.end <= buf.len());
                }
                self.forward(f);
                self.drain();
            }
            Op::PeerConnected { which, ok } => {
                if self.connects.is_empty() {
                    return;
                }
                let connection = self.connects.remove(usize::from(which) % self.connects.len());
                let conn = ok.then(|| {
                    self.next_conn += 1;
                    self.open.insert(self.next_conn);
                    self.peer_conns.push(self.next_conn);
                    ConnId(self.next_conn)
                });
                self.input(Input::PeerConnected { connection, conn });
            }
            Op::PeerAccept { relay, peer } => {
                if self.relay_list.is_empty() {
                    return;
                }
                let relay = self.relay_list[usize::from(relay) % self.relay_list.len()];
                self.next_conn += 1;
                self.open.insert(self.next_conn);
                self.peer_conns.push(self.next_conn);
                self.input(Input::RelayStreamAccepted { relay, peer: peer_of(peer), conn: ConnId(self.next_conn) });
            }
            Op::PeerBytes { conn, data } => {
                if self.peer_conns.is_empty() {
                    return;
                }
                let c = self.peer_conns[usize::from(conn) % self.peer_conns.len()];
                if self.open.contains(&c) {
                    self.input(Input::StreamData { conn: ConnId(c), data: &data });
                }
            }
            Op::PeerClose { conn } => {
                if self.peer_conns.is_empty() {
                    return;
                }
                let c = self.peer_conns[usize::from(conn) % self.peer_conns.len()];
                if self.open.remove(&c) {
                    self.input(Input::StreamClosed { conn: ConnId(c) });
                }
            }
            Op::Open { conn } => {
                let c = client_of(4 + conn % 4);
                let Via::Tcp(id) = c.via else { unreachable!() };
                if self.open.insert(id.0) {
                    self.input(Input::StreamOpened { conn: id, local: LISTEN.parse().unwrap(), remote: c.remote });
                }
            }
            Op::Close { conn } => {
                let id = u64::from(conn % 4);
                if self.open.remove(&id) {
                    self.input(Input::StreamClosed { conn: ConnId(id) });
                }
            }
            Op::Advance(s) => {
                self.latest += Duration::from_secs(u64::from(s));
                self.now = self.latest;
                self.input(Input::Timeout);
            }
            Op::Back(s) => {
                self.now = self.latest.checked_sub(Duration::from_secs(u64::from(s))).unwrap_or(self.latest);
            }
            Op::FailBinds(f) => self.fail_binds = f,
        }
    }
}

fuzz_target!(|ops: Vec<Op>| {
    let mut d = Driver::new();
    for op in ops.into_iter().take(256) {
        d.step(op);
    }
    d.sb.shutdown(d.now);
    d.drain();
    assert!(d.relays.is_empty() && d.reserved.is_empty(), "sockets left after shutdown: {:?} {:?}", d.relays, d.reserved);
    assert_eq!(d.sb.stats().turn.allocations, 0);
});
