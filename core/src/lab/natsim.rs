//! A NAT simulator, sans-IO and seeded: two hosts, each behind one of the
//! seeds' NAT types (or none), doing ICE with each other through a real
//! [`TurnServer`] on the public side, on simulated time.
//!
//! - [`Nat`] is one NAT as a state machine: endpoint-independent mapping for
//!   the three cones, a fresh random port per destination for a symmetric
//!   one (RFC 4787 §4.1), and endpoint-independent, address-dependent or
//!   address-and-port-dependent filtering (§5); mappings may time out.
//! - [`call`] builds a network of two hosts and the server, lets each host
//!   gather a server-reflexive candidate (a Binding request through its NAT)
//!   and, with TURN, a relayed one (an Allocate with long-term credentials),
//!   hands the candidates across out of band, and runs two str0m ICE agents
//!   (one controlling, one controlled) until they agree on a pair. Checks on a
//!   relayed candidate go out in Send indications and come back in Data
//!   indications. Then each side sends one datagram on its selected path, to
//!   show the path carries data. The [`Outcome`] says which pair won.
//!
//! Everything is deterministic for a seed: the NATs' ports, the ICE
//! credentials and tie-breaker, the server's nonces. (str0m draws its STUN
//! transaction IDs from its own generator; they change no routing decision.)
//! Every loop is bounded: a run that does not end in its simulated deadline
//! stops there, and one that keeps the event loop busy without end panics.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use str0m::ice::{IceAgent, IceAgentEvent, IceCreds, StunMessage, StunPacket};
use str0m::net::Protocol;
use str0m::Candidate;

pub use crate::probe::NatType;
use crate::ids::{AllocationId, Client, Via};
use crate::rng::{Rng, Seed};
use crate::stun::message;
use crate::stun::view::{attr, encode_xor_address, message_type, method, Class, StunView, MAGIC_COOKIE};
use crate::turn::policy::IpNet;
use crate::turn::{Output, TurnConfig, TurnServer, RELAY_HEADROOM, RELAY_TAILROOM};

/// The server's STUN/TURN address, on the public side.
pub const SERVER: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1)), 3478);
/// The first relay port the server is given; later allocations get the next ones.
pub const FIRST_RELAY_PORT: u16 = 49152;
/// The TURN user of both hosts, and its password.
pub const TURN_USER: (&str, &str) = ("natsim", "natsim-password");
/// How long the hosts wait for the server to answer their Binding and Allocate requests.
pub const GATHER_DEADLINE: Duration = Duration::from_secs(5);
/// How long ICE may take, from the exchange of candidates, before the call counts as failed.
pub const ICE_DEADLINE: Duration = Duration::from_secs(30);
/// How long both agents' choice must stay the same before it counts as final
/// (a better pair may succeed after a worse one was nominated).
pub const SETTLED: Duration = Duration::from_secs(4);
/// Each host's socket's port (host candidates are `private IP:5000`).
const HOST_PORT: u16 = 5000;
/// Most events one run may handle: far above what any run needs.
const MAX_STEPS: usize = 200_000;
/// What the data check after ICE sends.
const HELLO: &[u8] = b"natsim hello";

/// How a [`Nat`] maps an inside address to a public port (RFC 4787 §4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mapping {
    /// One public port per inside address, whatever the destination (the cones).
    EndpointIndependent,
    /// A new public port for every destination address and port (symmetric).
    AddressAndPortDependent,
}

/// Which datagrams from outside a [`Nat`] lets in to a mapped port (RFC 4787 §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filtering {
    /// Anything (full cone).
    EndpointIndependent,
    /// Only from IPs the inside host sent to through that mapping (restricted cone).
    AddressDependent,
    /// Only from the exact IP and port the inside host sent to (port-restricted cone, symmetric).
    AddressAndPortDependent,
}

/// The behaviour of a NAT type; `None` for no NAT at all.
pub fn behaviour(kind: NatType) -> Option<(Mapping, Filtering)> {
    match kind {
        NatType::OpenInternet => None,
        NatType::FullCone => Some((Mapping::EndpointIndependent, Filtering::EndpointIndependent)),
        NatType::RestrictedCone => Some((Mapping::EndpointIndependent, Filtering::AddressDependent)),
        NatType::PortRestrictedCone => Some((Mapping::EndpointIndependent, Filtering::AddressAndPortDependent)),
        NatType::Symmetric => Some((Mapping::AddressAndPortDependent, Filtering::AddressAndPortDependent)),
    }
}

/// One binding of a [`Nat`]: an inside address (and, for a symmetric NAT, one
/// destination) to a public port, with the destinations sent to through it.
#[derive(Debug, Clone)]
struct Binding {
    inside: SocketAddr,
    /// The destination this binding is for; `None` with endpoint-independent mapping.
    dest: Option<SocketAddr>,
    port: u16,
    /// Where the inside host sent through this binding: what the filter lets back in.
    sent_to: Vec<SocketAddr>,
    /// When the inside host last sent through it (outbound traffic refreshes, RFC 4787 REQ-6).
    last_out: Instant,
}

/// A NAT as a state machine: [`Nat::outbound`] rewrites what leaves, and
/// [`Nat::inbound`] decides what gets in and to whom. Ports are drawn from a
/// seeded generator, so the same seed and traffic give the same ports.
#[derive(Debug, Clone)]
pub struct Nat {
    kind: NatType,
    mapping: Mapping,
    filtering: Filtering,
    public_ip: IpAddr,
    timeout: Option<Duration>,
    rng: Rng,
    bindings: Vec<Binding>,
}

impl Nat {
    /// A NAT of `kind` (not [`NatType::OpenInternet`], which is no NAT: `None`)
    /// with `public_ip`, whose mappings expire after `timeout` without
    /// outbound traffic (never, with `None`).
    pub fn new(kind: NatType, public_ip: IpAddr, timeout: Option<Duration>, seed: &Seed) -> Option<Nat> {
        let (mapping, filtering) = behaviour(kind)?;
        let rng = Rng::new(seed, &format!("natsim nat {public_ip}"));
        Some(Nat { kind, mapping, filtering, public_ip, timeout, rng, bindings: Vec::new() })
    }

    /// Its type.
    pub fn kind(&self) -> NatType {
        self.kind
    }

    /// Its public IP.
    pub fn public_ip(&self) -> IpAddr {
        self.public_ip
    }

    /// Live bindings now.
    pub fn binding_count(&self) -> usize {
        self.bindings.len()
    }

    fn expire(&mut self, now: Instant) {
        if let Some(t) = self.timeout {
            self.bindings.retain(|b| now.saturating_duration_since(b.last_out) < t);
        }
    }

    /// A datagram from `inside` to `dest` leaves: the public source address it
    /// leaves with (a binding is made or refreshed).
    pub fn outbound(&mut self, now: Instant, inside: SocketAddr, dest: SocketAddr) -> SocketAddr {
        self.expire(now);
        let key = match self.mapping {
            Mapping::EndpointIndependent => None,
            Mapping::AddressAndPortDependent => Some(dest),
        };
        let i = match self.bindings.iter().position(|b| b.inside == inside && b.dest == key) {
            Some(i) => i,
            None => {
                let port = self.fresh_port();
                self.bindings.push(Binding { inside, dest: key, port, sent_to: Vec::new(), last_out: now });
                self.bindings.len() - 1
            }
        };
        let b = &mut self.bindings[i];
        b.last_out = now;
        if !b.sent_to.contains(&dest) {
            b.sent_to.push(dest);
        }
        SocketAddr::new(self.public_ip, b.port)
    }

    /// A datagram from `from` arrives at public port `port`: the inside address
    /// it goes to, or `None` when no binding has that port or the filter drops it.
    pub fn inbound(&mut self, now: Instant, from: SocketAddr, port: u16) -> Option<SocketAddr> {
        self.expire(now);
        let b = self.bindings.iter().find(|b| b.port == port)?;
        let pass = match self.filtering {
            Filtering::EndpointIndependent => true,
            Filtering::AddressDependent => b.sent_to.iter().any(|d| d.ip() == from.ip()),
            Filtering::AddressAndPortDependent => b.sent_to.contains(&from),
        };
        pass.then_some(b.inside)
    }

    /// A random public port no binding uses (from 1024 up).
    fn fresh_port(&mut self) -> u16 {
        for _ in 0..1000 {
            let port = 1024 + (self.rng.next_u64() % (65536 - 1024)) as u16;
            if self.bindings.iter().all(|b| b.port != port) {
                return port;
            }
        }
        // 64 512 ports and a handful of bindings: a thousand misses do not happen.
        unreachable!("no free port")
    }
}

/// What kind of address a side was reached at, as the other side saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum End {
    /// Its host candidate (the host has no NAT).
    Host,
    /// Its server-reflexive candidate: the NAT binding the STUN server saw.
    Srflx,
    /// Peer-reflexive: a binding nobody signalled (a symmetric NAT's new port toward this peer).
    Prflx,
    /// Its relayed candidate, on the TURN server.
    Relay,
}

impl End {
    /// The ICE name (`host`, `srflx`, `prflx`, `relay`).
    pub fn name(self) -> &'static str {
        match self {
            End::Host => "host",
            End::Srflx => "srflx",
            End::Prflx => "prflx",
            End::Relay => "relay",
        }
    }
}

/// A selected path: the local address sent from, and the remote address sent to.
pub type Path = (SocketAddr, SocketAddr);

/// How one call went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The NAT of side A (the controlling agent) and of side B.
    pub nats: (NatType, NatType),
    /// Whether the hosts had TURN credentials (and so relayed candidates).
    pub turn: bool,
    /// Both agents chose a pair and a datagram went each way on it.
    pub connected: bool,
    /// The selected path of each side, (local source, remote destination).
    pub selected: (Option<Path>, Option<Path>),
    /// How A was reached (as B sends to it), and how B was reached (as A sends to it).
    pub ends: Option<(End, End)>,
    /// Simulated time from the exchange of candidates to the first nomination on both sides.
    pub time_to_connect: Option<Duration>,
    /// Datagrams the NATs dropped by their filters.
    pub filtered: u64,
    /// Packets the TURN server relayed (client to peer, peer to client).
    pub relayed_packets: (u64, u64),
    /// Whether each side got a relayed address (an allocation on the server).
    pub allocated: (bool, bool),
}

impl Outcome {
    /// Whether the data went through the TURN relay.
    pub fn relayed(&self) -> bool {
        matches!(self.ends, Some((a, b)) if a == End::Relay || b == End::Relay)
    }

    /// The table cell: `direct (srflx↔srflx)`, `relay`, or `fails`.
    pub fn cell(&self) -> String {
        match (self.connected, self.ends) {
            (true, Some((a, b))) if a != End::Relay && b != End::Relay => format!("direct ({}↔{})", a.name(), b.name()),
            (true, Some(_)) => "relay".into(),
            _ => "fails".into(),
        }
    }
}

/// A TURN/STUN request in flight.
#[derive(Debug)]
struct Pending {
    tid: [u8; 12],
    what: Request,
    bytes: Vec<u8>,
    authenticated: bool,
    resend_at: Instant,
    rto: Duration,
    sent: u8,
}

/// What a [`TurnClient`] asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Request {
    Binding,
    Allocate,
    Permission(IpAddr),
}

/// Most transmissions of one request (RFC 8489's Rc is 7; the network here does not lose).
const MAX_SENDS: u8 = 5;
/// The first retransmission timeout; it doubles.
const RTO: Duration = Duration::from_millis(250);
/// Most 438 Stale Nonce answers taken before giving up.
const MAX_STALE: u8 = 3;

/// A minimal STUN/TURN client over one UDP socket: a Binding request (for
/// the server-reflexive address), an Allocate with long-term credentials
/// (401 retried), CreatePermission per peer IP, Send indications out and
/// Data indications in. Bytes for the server come out of `out`.
#[derive(Debug)]
struct TurnClient {
    creds: Option<(String, String)>,
    rng: Rng,
    realm: Option<String>,
    nonce: Option<String>,
    key: Option<[u8; 16]>,
    stale: u8,
    pending: Vec<Pending>,
    out: VecDeque<Vec<u8>>,
    mapped: Option<SocketAddr>,
    relayed: Option<SocketAddr>,
    permitted: Vec<IpAddr>,
    /// Requests that got an error or no answer, with the code (0: none).
    failures: Vec<(Request, u16)>,
}

impl TurnClient {
    fn new(now: Instant, creds: Option<(String, String)>, seed: &Seed, tag: &str) -> Self {
        let mut c = TurnClient {
            creds,
            rng: Rng::new(seed, &format!("natsim turn client {tag}")),
            realm: None,
            nonce: None,
            key: None,
            stale: 0,
            pending: Vec::new(),
            out: VecDeque::new(),
            mapped: None,
            relayed: None,
            permitted: Vec::new(),
            failures: Vec::new(),
        };
        c.request(now, Request::Binding);
        if c.creds.is_some() {
            c.request(now, Request::Allocate);
        }
        c
    }

    /// Whether the Binding and any Allocate are answered (or given up).
    fn gathered(&self) -> bool {
        !self.pending.iter().any(|p| matches!(p.what, Request::Binding | Request::Allocate))
    }

    fn header(&mut self, m: u16, class: Class) -> ([u8; 12], Vec<u8>) {
        let mut tid = [0u8; 12];
        self.rng.fill(&mut tid);
        let mut b = Vec::with_capacity(128);
        b.extend_from_slice(&message_type(m, class).to_be_bytes());
        b.extend_from_slice(&[0, 0]);
        b.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
        b.extend_from_slice(&tid);
        (tid, b)
    }

    fn request(&mut self, now: Instant, what: Request) {
        let m = match what {
            Request::Binding => method::BINDING,
            Request::Allocate => method::ALLOCATE,
            Request::Permission(_) => method::CREATE_PERMISSION,
        };
        let (tid, mut b) = self.header(m, Class::Request);
        match what {
            Request::Binding => {}
            // UDP.
            Request::Allocate => message::append_attribute(&mut b, attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]),
            Request::Permission(ip) => {
                let mut a = [0u8; 20];
                let n = encode_xor_address(SocketAddr::new(ip, 0), &tid, &mut a);
                message::append_attribute(&mut b, attr::XOR_PEER_ADDRESS, &a[..n]);
            }
        }
        let mut authenticated = false;
        if let (Request::Allocate | Request::Permission(_), Some((user, _)), Some(realm), Some(nonce), Some(key)) =
            (what, &self.creds, &self.realm, &self.nonce, &self.key)
        {
            message::append_attribute(&mut b, attr::USERNAME, user.as_bytes());
            message::append_attribute(&mut b, attr::REALM, realm.as_bytes());
            message::append_attribute(&mut b, attr::NONCE, nonce.as_bytes());
            message::append_integrity(&mut b, key);
            authenticated = true;
        }
        message::append_fingerprint(&mut b);
        self.out.push_back(b.clone());
        self.pending.push(Pending { tid, what, bytes: b, authenticated, resend_at: now + RTO, rto: RTO, sent: 1 });
    }

    /// Asks for a permission for `ip` (once per IP).
    fn permit(&mut self, now: Instant, ip: IpAddr) {
        if self.relayed.is_none() || self.permitted.contains(&ip) {
            return;
        }
        self.permitted.push(ip);
        self.request(now, Request::Permission(ip));
    }

    /// Wraps `data` for `peer` in a Send indication.
    fn send(&mut self, peer: SocketAddr, data: &[u8]) {
        let (tid, mut b) = self.header(method::SEND, Class::Indication);
        let mut a = [0u8; 20];
        let n = encode_xor_address(peer, &tid, &mut a);
        message::append_attribute(&mut b, attr::XOR_PEER_ADDRESS, &a[..n]);
        message::append_attribute(&mut b, attr::DATA, data);
        message::append_fingerprint(&mut b);
        self.out.push_back(b);
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.pending.iter().map(|p| p.resend_at).min()
    }

    fn handle_timeout(&mut self, now: Instant) {
        let mut i = 0;
        while i < self.pending.len() {
            let p = &mut self.pending[i];
            if p.resend_at > now {
                i += 1;
            } else if p.sent >= MAX_SENDS {
                let p = self.pending.remove(i);
                self.failures.push((p.what, 0));
            } else {
                p.sent += 1;
                p.rto *= 2;
                p.resend_at = now + p.rto;
                self.out.push_back(p.bytes.clone());
                i += 1;
            }
        }
    }

    /// A datagram from the server: a response, or a Data indication, whose
    /// peer and payload are returned.
    fn handle(&mut self, now: Instant, bytes: &[u8]) -> Option<(SocketAddr, Vec<u8>)> {
        let v = StunView::new_checked(bytes).ok()?;
        if (v.class(), v.method()) == (Class::Indication, method::DATA) {
            return Some((v.xor_address(attr::XOR_PEER_ADDRESS)?, v.find(attr::DATA)?.to_vec()));
        }
        let tid = v.transaction_id();
        let i = self.pending.iter().position(|p| p.tid == tid)?;
        let p = self.pending.remove(i);
        match v.class() {
            Class::Success => {
                if p.authenticated && !self.key.is_some_and(|k| v.check_integrity(&k)) {
                    self.failures.push((p.what, 0));
                    return None;
                }
                match p.what {
                    Request::Binding => self.mapped = v.xor_address(attr::XOR_MAPPED_ADDRESS),
                    Request::Allocate => {
                        self.relayed = v.xor_address(attr::XOR_RELAYED_ADDRESS);
                        self.mapped = self.mapped.or(v.xor_address(attr::XOR_MAPPED_ADDRESS));
                    }
                    Request::Permission(_) => {}
                }
            }
            Class::Error => {
                let code = v.find(attr::ERROR_CODE).and_then(|e| Some(u16::from(*e.get(2)? & 7) * 100 + u16::from(*e.get(3)?)));
                let code = code.unwrap_or(0);
                let text = |a| v.find(a).map(|s| String::from_utf8_lossy(s).into_owned());
                match code {
                    // The challenge: answer it with credentials, once.
                    401 if !p.authenticated && self.creds.is_some() => {
                        let (Some(realm), Some(nonce)) = (text(attr::REALM), text(attr::NONCE)) else {
                            self.failures.push((p.what, code));
                            return None;
                        };
                        if let Some((user, pass)) = &self.creds {
                            self.key = Some(crate::turn::auth::long_term_key(user, &realm, pass));
                        }
                        self.realm = Some(realm);
                        self.nonce = Some(nonce);
                        self.request(now, p.what);
                    }
                    438 if self.stale < MAX_STALE => {
                        self.stale += 1;
                        self.nonce = text(attr::NONCE).or(self.nonce.take());
                        self.request(now, p.what);
                    }
                    _ => self.failures.push((p.what, code)),
                }
            }
            _ => {}
        }
        None
    }
}

/// One side of the call: a host with one UDP socket, its NAT, its ICE agent
/// and its TURN client.
struct Side {
    /// The socket's address (a private one behind a NAT).
    local: SocketAddr,
    nat: Option<Nat>,
    /// One-way latency of its access link.
    latency: Duration,
    agent: IceAgent,
    turn: TurnClient,
    /// The last pair the agent nominated, and when.
    nominated: Option<(Path, Instant)>,
    /// When it first nominated one.
    first_nominated: Option<Instant>,
    /// Datagrams that were not STUN (the data check), with their source and the address they reached.
    received: Vec<(SocketAddr, SocketAddr, Vec<u8>)>,
}

impl fmt::Debug for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Side")
            .field("local", &self.local)
            .field("nat", &self.nat)
            .field("turn", &self.turn)
            .field("nominated", &self.nominated)
            .finish()
    }
}

impl Side {
    /// Its public address: the NAT's IP, or its own.
    fn public_ip(&self) -> IpAddr {
        self.nat.as_ref().map_or(self.local.ip(), Nat::public_ip)
    }
}

/// A datagram in flight on the public side (after the sender's NAT).
#[derive(Debug)]
struct Datagram {
    from: SocketAddr,
    to: SocketAddr,
    payload: Vec<u8>,
}

/// Counters of the simulated network.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct NetStats {
    /// Datagrams delivered to a host or to the server.
    pub delivered: u64,
    /// Dropped by a NAT's filter (or for want of a binding).
    pub filtered: u64,
    /// Dropped: nobody on the public side has that address (a private one).
    pub unroutable: u64,
}

/// Two hosts, their NATs and the server, on simulated time.
#[derive(Debug)]
struct Network {
    now: Instant,
    seq: u64,
    /// Datagrams in flight, by arrival time (then order of sending: the queue is deterministic).
    queue: BTreeMap<(Instant, u64), Datagram>,
    server: TurnServer,
    next_relay_port: u16,
    sides: [Side; 2],
    stats: NetStats,
}

/// One-way latency of the server's access link.
const SERVER_LATENCY: Duration = Duration::from_millis(5);

impl Network {
    /// Host A behind `a` and host B behind `b` (A's agent controls), both
    /// with TURN credentials if `turn`, NAT mappings expiring after
    /// `mapping_timeout`; everything random drawn from `seed`. The hosts'
    /// Binding and Allocate requests are ready to leave.
    fn new(now: Instant, a: NatType, b: NatType, turn: bool, mapping_timeout: Option<Duration>, seed: &Seed) -> Network {
        let mut config = TurnConfig {
            realm: "natsim".into(),
            users: vec![(TURN_USER.0.into(), TURN_USER.1.into())],
            ..TurnConfig::default()
        };
        // The simulated public internet is in documentation ranges, which the default policy refuses as special.
        config.peer_policy.allowed = ["198.51.100.0/24", "203.0.113.0/24"].iter().filter_map(|n| n.parse::<IpNet>().ok()).collect();
        let server = TurnServer::new(config, now, 1_700_000_000, seed);
        let side = |i: u8, kind: NatType, latency: u64| {
            let tag = if i == 1 { "a" } else { "b" };
            let (local, nat) = match kind {
                NatType::OpenInternet => (SocketAddr::from(([203, 0, 113, 10 + i], HOST_PORT)), None),
                _ => {
                    let nat = Nat::new(kind, IpAddr::V4(Ipv4Addr::new(203, 0, 113, i)), mapping_timeout, seed);
                    (SocketAddr::from(([10, 0, i, 2], HOST_PORT)), nat)
                }
            };
            let mut rng = Rng::new(seed, &format!("natsim ice {tag}"));
            let hex = |rng: &mut Rng, n: usize| (0..n).map(|_| format!("{:x}", rng.next_u64() % 16)).collect::<String>();
            let creds = IceCreds { ufrag: hex(&mut rng, 8), pass: hex(&mut rng, 24) };
            let mut agent = IceAgent::with_hmac(creds, str0m::crypto::from_feature_flags().sha1_hmac_provider);
            agent.set_controlling(i == 1);
            agent.set_control_tie_breaker(rng.next_u64());
            let creds = turn.then(|| (TURN_USER.0.to_owned(), TURN_USER.1.to_owned()));
            Side {
                local,
                nat,
                latency: Duration::from_millis(latency),
                agent,
                turn: TurnClient::new(now, creds, seed, tag),
                nominated: None,
                first_nominated: None,
                received: Vec::new(),
            }
        };
        let sides = [side(1, a, 10), side(2, b, 15)];
        Network { now, seq: 0, queue: BTreeMap::new(), server, next_relay_port: FIRST_RELAY_PORT, sides, stats: NetStats::default() }
    }

    /// The one-way latency of the access link of whoever has `ip`.
    fn latency_of(&self, ip: IpAddr) -> Duration {
        if ip == SERVER.ip() {
            return SERVER_LATENCY;
        }
        self.sides.iter().find(|s| s.public_ip() == ip).map_or(Duration::ZERO, |s| s.latency)
    }

    /// Puts a datagram on the public side, from `from` (already translated) to `to`.
    fn send_public(&mut self, from: SocketAddr, to: SocketAddr, payload: Vec<u8>) {
        let at = self.now + self.latency_of(from.ip()) + self.latency_of(to.ip());
        self.seq += 1;
        self.queue.insert((at, self.seq), Datagram { from, to, payload });
    }

    /// Host `i` sends from its socket: through its NAT, if it has one.
    fn host_send(&mut self, i: usize, to: SocketAddr, payload: Vec<u8>) {
        let now = self.now;
        let s = &mut self.sides[i];
        let from = match s.nat.as_mut() {
            Some(nat) => nat.outbound(now, s.local, to),
            None => s.local,
        };
        self.send_public(from, to, payload);
    }

    /// Moves everything the agents, the TURN clients and the server want to send, until nothing moves.
    fn pump(&mut self) {
        for _ in 0..10_000 {
            let mut moved = false;
            for i in 0..2 {
                while let Some(t) = self.sides[i].agent.poll_transmit() {
                    moved = true;
                    let data: Vec<u8> = t.contents.into();
                    if Some(t.source) == self.sides[i].turn.relayed {
                        self.sides[i].turn.send(t.destination, &data);
                    } else {
                        self.host_send(i, t.destination, data);
                    }
                }
                while let Some(ev) = self.sides[i].agent.poll_event() {
                    moved = true;
                    if let IceAgentEvent::NominatedSend { source, destination, .. } = ev {
                        self.sides[i].nominated = Some(((source, destination), self.now));
                        self.sides[i].first_nominated.get_or_insert(self.now);
                    }
                }
                while let Some(bytes) = self.sides[i].turn.out.pop_front() {
                    moved = true;
                    self.host_send(i, SERVER, bytes);
                }
            }
            if !moved {
                return;
            }
        }
        panic!("the hosts never stop sending");
    }

    /// Drains the server's control outputs.
    fn drain_server(&mut self) {
        for _ in 0..10_000 {
            match self.server.poll_output() {
                None => return,
                Some(Output::Transmit(t)) => {
                    let from = match t.to.via {
                        Via::Udp(local) => local,
                        Via::Tcp(_) => SERVER,
                    };
                    self.send_public(from, t.to.remote, t.payload);
                }
                Some(Output::BindRelay { allocation, .. }) => self.bind_relay(allocation),
                Some(_) => {}
            }
        }
        panic!("the server never stops asking");
    }

    fn bind_relay(&mut self, allocation: AllocationId) {
        let relay = SocketAddr::new(SERVER.ip(), self.next_relay_port);
        self.next_relay_port = self.next_relay_port.wrapping_add(1).max(FIRST_RELAY_PORT);
        self.server.handle_relay_bound(self.now, allocation, Some(relay), None);
    }

    /// A datagram arrives where it was sent.
    fn deliver(&mut self, d: Datagram) {
        let now = self.now;
        if d.to == SERVER {
            self.stats.delivered += 1;
            let client = Client { via: Via::Udp(SERVER), remote: d.from };
            if let Some(route) = self.server.handle_client(now, client, &d.payload, 0..d.payload.len()) {
                let payload = d.payload.get(route.range).unwrap_or_default().to_vec();
                self.send_public(route.relay, route.peer, payload);
            }
            self.drain_server();
            return;
        }
        if d.to.ip() == SERVER.ip() {
            // A relay socket.
            self.stats.delivered += 1;
            let mut buf = vec![0u8; RELAY_HEADROOM + d.payload.len() + RELAY_TAILROOM];
            let range = RELAY_HEADROOM..RELAY_HEADROOM + d.payload.len();
            buf[range.clone()].copy_from_slice(&d.payload);
            if let Some(route) = self.server.handle_peer(now, d.to, d.from, &mut buf, range) {
                let from = match route.to.via {
                    Via::Udp(local) => local,
                    Via::Tcp(_) => SERVER,
                };
                let payload = buf.get(route.range).unwrap_or_default().to_vec();
                self.send_public(from, route.to.remote, payload);
            }
            self.drain_server();
            return;
        }
        let Some(i) = self.sides.iter().position(|s| s.public_ip() == d.to.ip()) else {
            self.stats.unroutable += 1;
            return;
        };
        let s = &mut self.sides[i];
        let inside = match s.nat.as_mut() {
            Some(nat) => nat.inbound(now, d.from, d.to.port()),
            None => Some(d.to),
        };
        if inside != Some(s.local) {
            self.stats.filtered += 1;
            return;
        }
        self.stats.delivered += 1;
        if d.from == SERVER {
            if let Some((peer, data)) = s.turn.handle(now, &d.payload) {
                if let Some(relay) = s.turn.relayed {
                    self.receive_app(i, peer, relay, data);
                }
            }
        } else {
            let local = s.local;
            self.receive_app(i, d.from, local, d.payload);
        }
    }

    /// What reached host `i`'s socket (or its relay) from `from` at `to`: ICE's, or the data check's.
    fn receive_app(&mut self, i: usize, from: SocketAddr, to: SocketAddr, data: Vec<u8>) {
        let now = self.now;
        let s = &mut self.sides[i];
        match StunMessage::parse(&data) {
            Ok(message) => {
                let packet = StunPacket { proto: Protocol::Udp, source: from, destination: to, message };
                s.agent.handle_packet(now, packet);
            }
            Err(_) => s.received.push((from, to, data)),
        }
    }

    /// When something is due next.
    fn next_wake(&mut self) -> Option<Instant> {
        let mut next = self.queue.keys().next().map(|k| k.0);
        let mut add = |t: Option<Instant>| {
            if let Some(t) = t {
                next = Some(next.map_or(t, |n| n.min(t)));
            }
        };
        add(self.server.poll_timeout());
        for s in &mut self.sides {
            add(s.agent.poll_timeout());
            add(s.turn.poll_timeout());
        }
        next
    }

    /// Runs until `done` holds (checked whenever nothing is left to send), or
    /// until simulated time reaches `until`; returns whether `done` held.
    fn run_until(&mut self, until: Instant, done: impl Fn(&Network) -> bool) -> bool {
        for _ in 0..MAX_STEPS {
            self.pump();
            if done(self) {
                return true;
            }
            match self.next_wake() {
                Some(t) if t <= until => self.now = self.now.max(t),
                _ => {
                    self.now = self.now.max(until);
                    return done(self);
                }
            }
            while let Some(entry) = self.queue.first_entry() {
                if entry.key().0 > self.now {
                    break;
                }
                let d = entry.remove();
                self.deliver(d);
                self.pump();
            }
            let now = self.now;
            self.server.handle_timeout(now);
            self.drain_server();
            for s in &mut self.sides {
                s.turn.handle_timeout(now);
                if s.agent.poll_timeout().is_some_and(|t| t <= now) {
                    s.agent.handle_timeout(now);
                }
            }
        }
        panic!("the simulation is still busy after {MAX_STEPS} steps");
    }

    /// Gives each agent its own candidates and the other's, and each TURN
    /// client permissions for the other's candidates' IPs.
    fn exchange_candidates(&mut self) {
        let mut gathered: [Vec<Candidate>; 2] = [Vec::new(), Vec::new()];
        for (i, s) in self.sides.iter_mut().enumerate() {
            let mut cands = vec![Candidate::host(s.local, "udp").ok()];
            if let Some(m) = s.turn.mapped.filter(|m| *m != s.local) {
                cands.push(Candidate::server_reflexive(m, s.local, "udp").ok());
            }
            if let Some(r) = s.turn.relayed {
                cands.push(Candidate::relayed(r, s.local, "udp").ok());
            }
            for c in cands.into_iter().flatten() {
                if let Some(c) = s.agent.add_local_candidate(c) {
                    gathered[i].push(c.clone());
                }
            }
        }
        let now = self.now;
        for i in 0..2 {
            let other = 1 - i;
            let creds = self.sides[other].agent.local_credentials().clone();
            let s = &mut self.sides[i];
            s.agent.set_remote_credentials(creds);
            for c in &gathered[other] {
                s.agent.add_remote_candidate(c.clone());
                // Private IPs are refused (403) by the server's policy: harmless.
                s.turn.permit(now, c.addr().ip());
            }
            s.agent.handle_timeout(now);
        }
    }

    /// How side `i` is reached at `addr`.
    fn end_of(&self, i: usize, addr: SocketAddr) -> End {
        let s = &self.sides[i];
        if Some(addr) == s.turn.relayed {
            End::Relay
        } else if addr == s.local {
            End::Host
        } else if Some(addr) == s.turn.mapped {
            End::Srflx
        } else {
            End::Prflx
        }
    }
}

/// Runs one call between a host behind `a` (the controlling side) and one
/// behind `b`, with TURN credentials if `turn`, on simulated time from `t0`.
/// See the [module docs](self).
pub fn call(t0: Instant, a: NatType, b: NatType, turn: bool, seed: &Seed) -> Outcome {
    let mut net = Network::new(t0, a, b, turn, Some(Duration::from_secs(120)), seed);
    for s in &mut net.sides {
        s.agent.handle_timeout(t0);
    }
    // Gathering: the Binding and Allocate answers, through each NAT.
    net.run_until(t0 + GATHER_DEADLINE, |n| n.sides.iter().all(|s| s.turn.gathered()));
    net.exchange_candidates();
    let start = net.now;
    // ICE: until both sides have a pair that has not changed for a while.
    let settled = |n: &Network| n.sides.iter().all(|s| s.nominated.is_some_and(|(_, at)| n.now.saturating_duration_since(at) >= SETTLED));
    net.run_until(start + ICE_DEADLINE, settled);
    let time_to_connect = match (net.sides[0].first_nominated, net.sides[1].first_nominated) {
        (Some(x), Some(y)) => Some(x.max(y).saturating_duration_since(start)),
        _ => None,
    };
    let selected = (net.sides[0].nominated.map(|n| n.0), net.sides[1].nominated.map(|n| n.0));
    // The data check: one datagram each way on the selected path.
    for i in 0..2 {
        let Some(((source, destination), _)) = net.sides[i].nominated else { continue };
        if Some(source) == net.sides[i].turn.relayed {
            net.sides[i].turn.send(destination, HELLO);
        } else {
            net.host_send(i, destination, HELLO.to_vec());
        }
    }
    let end = net.now + Duration::from_secs(1);
    net.run_until(end, |n| n.sides.iter().all(|s| s.received.iter().any(|r| r.2 == HELLO)));
    let data = net.sides.iter().all(|s| s.received.iter().any(|r| r.2 == HELLO));
    let ends = match selected {
        // B sends to A at `to_a`; A sends to B at `to_b`.
        (Some((_, to_b)), Some((_, to_a))) => Some((net.end_of(0, to_a), net.end_of(1, to_b))),
        _ => None,
    };
    Outcome {
        nats: (a, b),
        turn,
        connected: ends.is_some() && data,
        selected,
        ends,
        time_to_connect,
        filtered: net.stats.filtered,
        relayed_packets: {
            let st = net.server.stats();
            (st.to_peer_packets, st.to_client_packets)
        },
        allocated: (net.sides[0].turn.relayed.is_some(), net.sides[1].turn.relayed.is_some()),
    }
}

/// The short label of a NAT type for a table's header.
pub fn label(t: NatType) -> &'static str {
    match t {
        NatType::OpenInternet => "open internet",
        NatType::FullCone => "full cone",
        NatType::RestrictedCone => "restricted cone",
        NatType::PortRestrictedCone => "port-restricted cone",
        NatType::Symmetric => "symmetric",
    }
}

/// A markdown table of outcomes: rows are A's NAT (the controlling side),
/// columns B's, cells [`Outcome::cell`]. Pairs missing from `outcomes` are blank.
pub fn markdown_table(outcomes: &[Outcome]) -> String {
    let mut s = String::from("| A \\ B |");
    for b in NatType::ALL {
        s.push_str(&format!(" {} |", label(b)));
    }
    s.push_str("\n|---|");
    s.push_str(&"---|".repeat(NatType::ALL.len()));
    s.push('\n');
    for a in NatType::ALL {
        s.push_str(&format!("| **{}** |", label(a)));
        for b in NatType::ALL {
            let cell = outcomes.iter().find(|o| o.nats == (a, b)).map(Outcome::cell).unwrap_or_default();
            s.push_str(&format!(" {cell} |"));
        }
        s.push('\n');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use NatType::*;

    const SEEDS: [Seed; 3] = [[1; 32], [2; 32], [0x5b; 32]];

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    /// What the RFCs predict (RFC 4787's behaviours; RFC 8445's checks): only a
    /// symmetric NAT facing a symmetric or port-restricted one needs the relay.
    fn needs_turn(a: NatType, b: NatType) -> bool {
        matches!((a, b), (Symmetric, Symmetric) | (Symmetric, PortRestrictedCone) | (PortRestrictedCone, Symmetric))
    }

    #[test]
    fn each_nat_maps_and_filters_as_its_type_says() {
        let t0 = crate::time::test_start();
        let inside = addr("10.0.0.2:5000");
        let (s1, s2, s1_other_port, other_ip) = (addr("198.51.100.1:3478"), addr("198.51.100.9:4000"), addr("198.51.100.1:9999"), addr("198.51.100.77:3478"));
        for kind in [FullCone, RestrictedCone, PortRestrictedCone, Symmetric] {
            let mut nat = Nat::new(kind, "203.0.113.1".parse().unwrap(), None, &[9; 32]).unwrap();
            // Nothing gets in before the host sends.
            assert_eq!(nat.inbound(t0, s1, 1024), None);
            let m1 = nat.outbound(t0, inside, s1);
            assert_eq!(m1.ip(), nat.public_ip());
            assert_eq!(nat.outbound(t0, inside, s1), m1, "{kind:?}: the same destination keeps its binding");
            let m2 = nat.outbound(t0, inside, s2);
            assert_eq!(m1 == m2, kind != Symmetric, "{kind:?}: mapping");
            // Replies from where it sent always pass.
            assert_eq!(nat.inbound(t0, s1, m1.port()), Some(inside));
            let from_other_port = nat.inbound(t0, s1_other_port, m1.port()).is_some();
            let from_other_ip = nat.inbound(t0, other_ip, m1.port()).is_some();
            let expect = match kind {
                FullCone => (true, true),
                RestrictedCone => (true, false),
                _ => (false, false),
            };
            assert_eq!((from_other_port, from_other_ip), expect, "{kind:?}: filtering");
        }
        assert!(Nat::new(OpenInternet, "203.0.113.1".parse().unwrap(), None, &[9; 32]).is_none());
    }

    #[test]
    fn mappings_time_out_without_outbound_traffic_and_ports_follow_the_seed() {
        let t0 = crate::time::test_start();
        let (inside, dest) = (addr("10.0.0.2:5000"), addr("198.51.100.1:3478"));
        let ip = "203.0.113.1".parse().unwrap();
        let mut nat = Nat::new(PortRestrictedCone, ip, Some(Duration::from_secs(30)), &[9; 32]).unwrap();
        let m = nat.outbound(t0, inside, dest);
        // Inbound traffic does not refresh it.
        assert!(nat.inbound(t0 + Duration::from_secs(29), dest, m.port()).is_some());
        assert!(nat.inbound(t0 + Duration::from_secs(30), dest, m.port()).is_none());
        assert_eq!(nat.binding_count(), 0);
        let mut again = Nat::new(PortRestrictedCone, ip, Some(Duration::from_secs(30)), &[9; 32]).unwrap();
        assert_eq!(again.outbound(t0, inside, dest), m, "same seed, same port");
        let mut other = Nat::new(PortRestrictedCone, ip, None, &[10; 32]).unwrap();
        assert_ne!(other.outbound(t0, inside, dest), m, "another seed, another port");
    }

    /// Every ordered pair of the five types, with TURN and without, over
    /// three seeds: the call always connects with TURN; it is direct exactly
    /// where the RFCs predict; without TURN exactly the pairs that need it fail.
    #[test]
    fn the_nat_table_matches_the_rfcs() {
        let mut first: Option<Vec<Outcome>> = None;
        for seed in SEEDS {
            let mut with_turn = Vec::new();
            let mut without = Vec::new();
            for a in NatType::ALL {
                for b in NatType::ALL {
                    let relay_needed = needs_turn(a, b);
                    // The probe's table (what `switchboard probe` tells people) says the same.
                    assert_eq!(crate::probe::direct_call_possible(a, b).direct, !relay_needed);

                    let o = call(crate::time::test_start(), a, b, true, &seed);
                    assert_eq!(o.allocated, (true, true), "both sides allocate on Switchboard: {o:?}");
                    assert!(o.connected, "{a:?} to {b:?} with TURN must connect: {o:?}");
                    assert_eq!(o.relayed(), relay_needed, "{a:?} to {b:?}: relayed exactly where the RFCs say: {o:?}");
                    if relay_needed {
                        // Through Switchboard's relay, both ways (the checks, the keepalives, the data check).
                        assert!(o.relayed_packets.0 > 0 && o.relayed_packets.1 > 0, "{o:?}");
                    }
                    let (ea, eb) = o.ends.unwrap();
                    if !relay_needed {
                        // An open host is reached at its own address; a cone at the binding the STUN server saw;
                        // a symmetric NAT at a binding made for this peer alone.
                        for (kind, end) in [(a, ea), (b, eb)] {
                            let expect = match kind {
                                OpenInternet => End::Host,
                                Symmetric => End::Prflx,
                                _ => End::Srflx,
                            };
                            assert_eq!(end, expect, "{a:?} to {b:?}: how {kind:?} is reached: {o:?}");
                        }
                    }
                    with_turn.push(o);

                    let o = call(crate::time::test_start(), a, b, false, &seed);
                    assert_eq!(o.allocated, (false, false));
                    assert_eq!(o.connected, !relay_needed, "{a:?} to {b:?} without TURN: {o:?}");
                    assert!(!o.relayed(), "no relay without TURN: {o:?}");
                    if relay_needed {
                        assert!(o.filtered > 0, "the NATs' filters are what stop {a:?} to {b:?}: {o:?}");
                    }
                    without.push(o);
                }
            }
            let cells = |v: &[Outcome]| v.iter().map(Outcome::cell).collect::<Vec<_>>();
            match &first {
                None => {
                    println!("NAT table (A controls; with TURN):\n\n{}", markdown_table(&with_turn));
                    println!("Without TURN:\n\n{}", markdown_table(&without));
                    first = Some(with_turn);
                }
                Some(f) => assert_eq!(cells(f), cells(&with_turn), "the table does not depend on the seed"),
            }
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_call() {
        let one = call(crate::time::test_start(), Symmetric, RestrictedCone, true, &[7; 32]);
        let two = call(crate::time::test_start(), Symmetric, RestrictedCone, true, &[7; 32]);
        assert_eq!(one, two);
        assert!(one.connected && !one.relayed(), "{one:?}");
        let relayed = call(crate::time::test_start(), Symmetric, Symmetric, true, &[7; 32]);
        assert_eq!(relayed, call(crate::time::test_start(), Symmetric, Symmetric, true, &[7; 32]));
        // The relay is Switchboard's: a relayed address on the server's IP.
        let (Some((src_a, dst_a)), Some((src_b, dst_b))) = relayed.selected else { panic!("{relayed:?}") };
        assert!([src_a, dst_a, src_b, dst_b].iter().any(|x| x.ip() == SERVER.ip() && x.port() >= FIRST_RELAY_PORT), "{relayed:?}");
    }
}
