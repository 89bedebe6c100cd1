//! TURN (RFC 8656) over UDP relays: allocations, permissions, channels,
//! long-term and REST credentials, quotas and the peer address policy.
//!
//! # Driving a `TurnServer`
//!
//! The server is a pure state machine. The embedder feeds it:
//! - [`TurnServer::handle_client`]: one datagram, or one framed TCP message,
//!   from a client of the STUN/TURN port;
//! - [`TurnServer::handle_peer`]: one datagram that arrived on a relay socket;
//! - [`TurnServer::handle_relay_bound`]: the answer to an [`Output::BindRelay`];
//! - [`TurnServer::handle_client_closed`]: a TCP client went away;
//! - [`TurnServer::handle_timeout`]: time passed.
//!
//! After any of these, drain [`TurnServer::poll_output`] until it returns
//! `None`, then sleep until [`TurnServer::poll_timeout`].
//!
//! The data path answers directly instead of queueing: `handle_client`
//! returns a [`PeerRoute`] (send these bytes of *your* buffer from this relay
//! socket to this peer) and `handle_peer` writes the ChannelData or Data
//! indication header into headroom in front of the payload and returns a
//! [`ClientRoute`]. Nothing is copied or allocated per relayed packet.

pub mod auth;
pub mod policy;
pub mod timer;

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::time::{Duration, Instant};

use std::collections::BTreeMap;

use crate::hash::{self, Map};
use stun_codec::rfc5389::attributes::{Nonce, Realm, Software, XorMappedAddress};
use stun_codec::rfc5766::attributes::{
    EvenPort, Lifetime, RequestedTransport, ReservationToken, XorPeerAddress,
    XorRelayAddress,
};
use stun_codec::rfc8656::attributes::{AddressFamily, RequestedAddressFamily};
use stun_codec::MessageClass;

use crate::ids::{AllocationId, Client, Family, Via};
use crate::rng::{self, Rng, Seed};
use crate::stun::message::{self, Attribute, Message};
use crate::stun::view::{self, attr, method, Class, StunView};
use crate::stun::{self as stun_mod, classify, PacketKind, StunServer, StunStats};
use crate::time::{secs, Monotonic, WallClock};

use self::auth::Credentials;
use self::policy::PeerPolicy;
use self::timer::TimerQueue;

/// Bytes a shell must leave free in front of a peer's payload for
/// [`TurnServer::handle_peer`] to write a Data indication header (IPv6 peer).
pub const RELAY_HEADROOM: usize = 48;
/// Bytes a shell must leave free after a peer's payload for attribute padding.
pub const RELAY_TAILROOM: usize = 4;
/// The largest payload that still fits in a Data indication.
pub const MAX_RELAY_PAYLOAD: usize = 0xFFFF - RELAY_HEADROOM;

/// Default allocation lifetime (RFC 8656 §7.2).
pub const DEFAULT_LIFETIME: Duration = secs(600);
/// Largest allocation lifetime granted.
pub const MAX_LIFETIME: Duration = secs(3600);
/// Permission lifetime (RFC 8656 §9).
pub const PERMISSION_LIFETIME: Duration = secs(300);
/// Channel binding lifetime (RFC 8656 §12).
pub const CHANNEL_LIFETIME: Duration = secs(600);

/// How long a reserved port (EVEN-PORT with R) waits for its RESERVATION-TOKEN (RFC 8656 §7.2).
pub const RESERVATION_LIFETIME: Duration = secs(30);

const PROTO_UDP: u8 = 17;

/// Configuration of a [`TurnServer`]. Its `Debug` output redacts secrets.
#[derive(Clone)]
pub struct TurnConfig {
    /// The realm of long-term credentials.
    pub realm: String,
    /// Static users as (name, password).
    pub users: Vec<(String, String)>,
    /// The TURN REST API shared secret (coturn's `static-auth-secret`).
    pub static_auth_secret: Option<String>,
    /// Which peers may be relayed to.
    pub peer_policy: PeerPolicy,
    /// Most allocations one user may hold; 0 for no limit.
    pub user_quota: u32,
    /// Most allocations in total; 0 for no limit.
    pub total_quota: u32,
    /// Whether relay sockets of each family can be bound (IPv4, IPv6).
    pub relay_families: (bool, bool),
    /// The address to advertise in XOR-RELAYED-ADDRESS instead of the bound
    /// one, for a server behind NAT (same family only).
    pub external_ip: Option<IpAddr>,
    /// SOFTWARE attribute to send, if any.
    pub software: Option<String>,
    /// Most permissions one allocation may hold.
    pub max_permissions: usize,
    /// Accept only RFC 8656 channel numbers (0x4000-0x4FFF). When false (the
    /// default), the RFC 5766 range 0x4000-0x7FFF is accepted too, as coturn
    /// does and as its own clients need.
    pub strict_channel_numbers: bool,
}

impl Default for TurnConfig {
    fn default() -> Self {
        TurnConfig {
            realm: "switchboard".into(),
            users: Vec::new(),
            static_auth_secret: None,
            peer_policy: PeerPolicy::default(),
            user_quota: 0,
            total_quota: 0,
            relay_families: (true, false),
            external_ip: None,
            software: Some(concat!("switchboard ", env!("CARGO_PKG_VERSION")).into()),
            max_permissions: 128,
            strict_channel_numbers: false,
        }
    }
}

impl std::fmt::Debug for TurnConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TurnConfig")
            .field("realm", &self.realm)
            .field("users", &self.users.iter().map(|(u, _)| u.as_str()).collect::<Vec<_>>())
            .field("static_auth_secret", &self.static_auth_secret.as_ref().map(|_| "<redacted>"))
            .field("peer_policy", &self.peer_policy)
            .field("user_quota", &self.user_quota)
            .field("total_quota", &self.total_quota)
            .field("relay_families", &self.relay_families)
            .field("external_ip", &self.external_ip)
            .field("max_permissions", &self.max_permissions)
            .field("strict_channel_numbers", &self.strict_channel_numbers)
            .finish()
    }
}

/// A control message to send to a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// Where it goes.
    pub to: Client,
    /// The encoded message (a STUN response).
    pub payload: Vec<u8>,
}

/// Which relay port an allocation needs (RFC 8656 §7.2, EVEN-PORT and RESERVATION-TOKEN).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortRequest {
    /// Any port of the range.
    Any,
    /// An even port.
    Even,
    /// An even port P, and P + 1 held in reserve for a later allocation;
    /// report both, or fail both.
    EvenPair,
    /// The socket already bound at this address for an earlier
    /// [`PortRequest::EvenPair`]: keep it and report it as bound.
    Reserved(SocketAddr),
}

/// What the server asks of its embedder.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Output {
    /// Send a control message.
    Transmit(Transmit),
    /// Bind a UDP relay socket of `family`, then report with
    /// [`TurnServer::handle_relay_bound`].
    BindRelay {
        /// The allocation it is for.
        allocation: AllocationId,
        /// The address family wanted.
        family: Family,
        /// Which port.
        port: PortRequest,
    },
    /// Close the relay socket bound at `relay` (an allocation's, or an unused reservation).
    ReleaseRelay {
        /// The allocation it belonged to.
        allocation: AllocationId,
        /// Its bound local address.
        relay: SocketAddr,
    },
}

/// Client to peer: send `packet[payload]` from the relay socket bound at
/// `relay` to `peer`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerRoute {
    /// The relay socket's bound local address.
    pub relay: SocketAddr,
    /// The peer.
    pub peer: SocketAddr,
    /// The payload's range within the packet given to `handle_client`.
    pub payload: Range<usize>,
}

/// Peer to client: send `buf[range]` to `to`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientRoute {
    /// The client.
    pub to: Client,
    /// The framed message's range within the buffer given to `handle_peer`.
    pub range: Range<usize>,
}

/// Counters of a TURN server.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct TurnStats {
    /// Allocations alive now.
    pub allocations: u64,
    /// Allocations created since start.
    pub allocations_created: u64,
    /// Allocations that expired.
    pub allocations_expired: u64,
    /// Packets relayed client to peer.
    pub to_peer_packets: u64,
    /// Payload bytes relayed client to peer.
    pub to_peer_bytes: u64,
    /// Packets relayed peer to client.
    pub to_client_packets: u64,
    /// Payload bytes relayed peer to client.
    pub to_client_bytes: u64,
    /// Requests handled (all methods).
    pub requests: u64,
    /// Error responses sent.
    pub error_responses: u64,
    /// Dropped: neither STUN nor ChannelData, malformed, or bad FINGERPRINT.
    pub dropped_malformed: u64,
    /// Dropped: data with no allocation, channel or relay for it.
    pub dropped_no_allocation: u64,
    /// Dropped: data to or from a peer without a permission.
    pub dropped_no_permission: u64,
    /// Binding server counters.
    pub stun: StunStats,
}

#[derive(Debug)]
struct Channel {
    peer: SocketAddr,
    expires: Instant,
}

#[derive(Debug)]
struct Allocation {
    client: Client,
    username: String,
    key: [u8; 16],
    family: Family,
    relay: Option<SocketAddr>,
    expires: Instant,
    allocate_tid: [u8; 12],
    allocate_response: Option<Vec<u8>>,
    lifetime: Duration,
    port: PortRequest,
    permissions: Map<IpAddr, Instant>,
    channels: Map<u16, Channel>,
    channel_of_peer: Map<SocketAddr, u16>,
}

impl Allocation {
    fn permitted(&self, ip: IpAddr, now: Instant) -> bool {
        self.permissions.get(&ip).is_some_and(|e| *e > now)
    }

    fn live_channel(&self, number: u16, now: Instant) -> Option<&Channel> {
        self.channels.get(&number).filter(|c| c.expires > now)
    }
}

#[derive(Debug)]
struct Reservation {
    relay: SocketAddr,
    owner: AllocationId,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    Reservation(u64),
    Allocation(AllocationId),
    Permission(AllocationId, IpAddr),
    Channel(AllocationId, u16),
}

/// The authenticated identity of a request.
struct Auth {
    username: String,
    key: [u8; 16],
}

/// A request handler's answer: the success response, or an error code.
type Reply = Result<Option<Message<Attribute>>, u16>;

/// A TURN server (which also answers STUN Binding on its port).
#[derive(Debug)]
pub struct TurnServer {
    config: TurnConfig,
    creds: Credentials,
    stun: StunServer,
    clock: WallClock,
    time: Monotonic,
    rng: Rng,
    next_id: u64,
    hasher: ahash::RandomState,
    allocations: Map<AllocationId, Allocation>,
    by_client: Map<Client, AllocationId>,
    by_relay: Map<SocketAddr, AllocationId>,
    per_user: BTreeMap<String, u32>,
    reservations: Map<u64, Reservation>,
    timers: TimerQueue<Timer>,
    out: VecDeque<Output>,
    stats: TurnStats,
}

impl TurnServer {
    /// A server started at `now`, when the unix time was `unix_now` seconds,
    /// with randomness from `seed`.
    pub fn new(config: TurnConfig, now: Instant, unix_now: u64, seed: &Seed) -> Self {
        let creds = Credentials::new(
            &config.realm,
            &config.users,
            config.static_auth_secret.as_deref(),
            rng::derive(seed, "turn nonce key"),
        );
        let h = hash::hasher(seed);
        TurnServer {
            stun: StunServer::new(config.software.clone()),
            creds,
            config,
            clock: WallClock::new(now, unix_now),
            time: Monotonic::new(now),
            rng: Rng::new(seed, "turn transaction ids"),
            next_id: 1,
            allocations: Map::with_hasher(h.clone()),
            by_client: Map::with_hasher(h.clone()),
            by_relay: Map::with_hasher(h.clone()),
            per_user: BTreeMap::new(),
            reservations: Map::with_hasher(h.clone()),
            hasher: h,
            timers: TimerQueue::default(),
            out: VecDeque::new(),
            stats: TurnStats::default(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &TurnConfig {
        &self.config
    }

    /// Counters so far.
    pub fn stats(&self) -> TurnStats {
        let mut s = self.stats.clone();
        s.stun = self.stun.stats().clone();
        s
    }

    /// The unix time at `now`, as derived from the construction-time reading.
    pub fn unix_time(&self, now: Instant) -> u64 {
        self.clock.unix(now)
    }

    /// The next control output, if any. Drain after every `handle_*` call.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// When [`TurnServer::handle_timeout`] should be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next()
    }

    /// Handles one packet from `client`: a datagram, or one framed message of
    /// a stream. Returns where to relay data, if it is data for a peer.
    pub fn handle_client(&mut self, now: Instant, client: Client, packet: &[u8]) -> Option<PeerRoute> {
        let now = self.time.advance(now);
        match classify(packet) {
            PacketKind::Stun => self.handle_stun(now, client, packet),
            PacketKind::ChannelData => self.channel_data_to_peer(now, client, packet),
            PacketKind::Other => {
                self.stats.dropped_malformed += 1;
                None
            }
        }
    }

    /// Handles a datagram from `peer` that arrived on the relay socket bound at
    /// `relay`. The payload is `buf[payload]`; the server writes a ChannelData
    /// or Data indication header in front of it (it needs
    /// [`RELAY_HEADROOM`] bytes there and [`RELAY_TAILROOM`] after) and
    /// returns what to send to which client.
    pub fn handle_peer(
        &mut self,
        now: Instant,
        relay: SocketAddr,
        peer: SocketAddr,
        buf: &mut [u8],
        payload: Range<usize>,
    ) -> Option<ClientRoute> {
        let now = self.time.advance(now);
        let Some(alloc) = self.by_relay.get(&relay).and_then(|id| self.allocations.get(id)) else {
            self.stats.dropped_no_allocation += 1;
            return None;
        };
        if !alloc.permitted(peer.ip(), now) {
            self.stats.dropped_no_permission += 1;
            return None;
        }
        let (start, end) = (payload.start, payload.end);
        let len = end.saturating_sub(start);
        if start > end || end > buf.len() || start < RELAY_HEADROOM || end + RELAY_TAILROOM > buf.len() || len > MAX_RELAY_PAYLOAD {
            self.stats.dropped_malformed += 1;
            return None;
        }
        let pad = (4 - len % 4) % 4;
        let stream = matches!(alloc.client.via, Via::Tcp(_));
        let channel = alloc
            .channel_of_peer
            .get(&peer)
            .filter(|n| alloc.live_channel(**n, now).is_some());
        let range = if let Some(&number) = channel {
            buf[start - 4..start - 2].copy_from_slice(&number.to_be_bytes());
            buf[start - 2..start].copy_from_slice(&(len as u16).to_be_bytes());
            // Over a stream, ChannelData is padded to four bytes (RFC 8656 §12.5).
            let tail = if stream { pad } else { 0 };
            buf[end..end + tail].fill(0);
            start - 4..end + tail
        } else {
            let mut tid = [0u8; 12];
            self.rng.fill(&mut tid);
            let mut addr = [0u8; 20];
            let alen = view::encode_xor_address(peer, &tid, &mut addr);
            let hlen = 20 + 4 + alen + 4;
            let h = start - hlen;
            let body = (hlen - 20 + len + pad) as u16;
            buf[h..h + 2].copy_from_slice(&view::message_type(method::DATA, Class::Indication).to_be_bytes());
            buf[h + 2..h + 4].copy_from_slice(&body.to_be_bytes());
            buf[h + 4..h + 8].copy_from_slice(&view::MAGIC_COOKIE.to_be_bytes());
            buf[h + 8..h + 20].copy_from_slice(&tid);
            buf[h + 20..h + 22].copy_from_slice(&attr::XOR_PEER_ADDRESS.to_be_bytes());
            buf[h + 22..h + 24].copy_from_slice(&(alen as u16).to_be_bytes());
            buf[h + 24..h + 24 + alen].copy_from_slice(&addr[..alen]);
            buf[start - 4..start - 2].copy_from_slice(&attr::DATA.to_be_bytes());
            buf[start - 2..start].copy_from_slice(&(len as u16).to_be_bytes());
            buf[end..end + pad].fill(0);
            h..end + pad
        };
        self.stats.to_client_packets += 1;
        self.stats.to_client_bytes += len as u64;
        Some(ClientRoute { to: alloc.client, range })
    }

    /// Reports the result of an [`Output::BindRelay`]: the bound local
    /// address, or `None` if no socket could be bound (the client gets 508),
    /// and for [`PortRequest::EvenPair`] the reserved address of port P + 1.
    pub fn handle_relay_bound(
        &mut self,
        now: Instant,
        allocation: AllocationId,
        bound: Option<SocketAddr>,
        reserved: Option<SocketAddr>,
    ) {
        let now = self.time.advance(now);
        let Some(alloc) = self.allocations.get_mut(&allocation) else {
            // The allocation went away while the socket was being bound.
            for relay in bound.into_iter().chain(reserved) {
                self.out.push_back(Output::ReleaseRelay { allocation, relay });
            }
            return;
        };
        let pair_missing = alloc.port == PortRequest::EvenPair && reserved.is_none();
        if alloc.relay.is_some() || bound.is_none() || pair_missing {
            let stale = alloc.relay.is_some();
            for relay in bound.into_iter().chain(reserved) {
                self.out.push_back(Output::ReleaseRelay { allocation, relay });
            }
            if !stale {
                let (client, key, tid) = (alloc.client, alloc.key, alloc.allocate_tid);
                self.delete_allocation(allocation);
                self.send_error(client, method::ALLOCATE, tid, 508, Some(&key), now);
            }
            return;
        }
        let Some(relay) = bound else { return };
        alloc.relay = Some(relay);
        let advertised = match self.config.external_ip {
            Some(ip) if ip.is_ipv4() == relay.is_ipv4() => SocketAddr::new(ip, relay.port()),
            _ => relay,
        };
        let mut m = message::response(method::ALLOCATE, MessageClass::SuccessResponse, alloc.allocate_tid);
        m.add_attribute(XorRelayAddress::new(advertised));
        if let Ok(l) = Lifetime::new(alloc.lifetime) {
            m.add_attribute(l);
        }
        m.add_attribute(XorMappedAddress::new(alloc.client.remote));
        if let Some(reserved) = reserved.filter(|_| alloc.port == PortRequest::EvenPair) {
            let token = self.rng.next_u64();
            let expires = now + RESERVATION_LIFETIME;
            self.reservations.insert(token, Reservation { relay: reserved, owner: allocation });
            self.timers.push(expires, Timer::Reservation(token));
            m.add_attribute(ReservationToken::new(token));
        }
        if let Some(s) = self.config.software.as_ref().and_then(|s| Software::new(s.clone()).ok()) {
            m.add_attribute(s);
        }
        let bytes = message::encode(m, Some(&alloc.key), true);
        alloc.allocate_response = Some(bytes.clone());
        let client = alloc.client;
        self.by_relay.insert(relay, allocation);
        self.out.push_back(Output::Transmit(Transmit { to: client, payload: bytes }));
    }

    /// A stream client went away: its allocation ends with it (RFC 8656 §3.1).
    pub fn handle_client_closed(&mut self, now: Instant, client: Client) {
        self.time.advance(now);
        if let Some(id) = self.by_client.get(&client).copied() {
            self.delete_allocation(id);
        }
    }

    /// Expires whatever is due at `now`. Safe to call early or more than once.
    pub fn handle_timeout(&mut self, now: Instant) {
        let now = self.time.advance(now);
        while let Some(t) = self.timers.pop_due(now) {
            match t {
                Timer::Reservation(token) => {
                    if let Some(r) = self.reservations.remove(&token) {
                        self.out.push_back(Output::ReleaseRelay { allocation: r.owner, relay: r.relay });
                    }
                }
                Timer::Allocation(id) => {
                    let Some(a) = self.allocations.get(&id) else { continue };
                    if a.expires <= now {
                        self.stats.allocations_expired += 1;
                        self.delete_allocation(id);
                    } else {
                        self.timers.push(a.expires, t);
                    }
                }
                Timer::Permission(id, ip) => {
                    let Some(a) = self.allocations.get_mut(&id) else { continue };
                    let Some(&exp) = a.permissions.get(&ip) else { continue };
                    if exp <= now {
                        a.permissions.remove(&ip);
                    } else {
                        self.timers.push(exp, t);
                    }
                }
                Timer::Channel(id, number) => {
                    let Some(a) = self.allocations.get_mut(&id) else { continue };
                    let Some(c) = a.channels.get(&number) else { continue };
                    if c.expires <= now {
                        let peer = c.peer;
                        a.channels.remove(&number);
                        a.channel_of_peer.remove(&peer);
                    } else {
                        self.timers.push(c.expires, t);
                    }
                }
            }
        }
    }

    /// Ends every allocation (for a graceful stop): each relay is released.
    pub fn shutdown(&mut self) {
        let mut ids: Vec<_> = self.allocations.keys().copied().collect();
        ids.sort();
        for id in ids {
            self.delete_allocation(id);
        }
        let mut tokens: Vec<u64> = self.reservations.keys().copied().collect();
        tokens.sort();
        for t in tokens {
            if let Some(r) = self.reservations.remove(&t) {
                self.out.push_back(Output::ReleaseRelay { allocation: r.owner, relay: r.relay });
            }
        }
    }

    /// Allocations alive now.
    pub fn allocation_count(&self) -> usize {
        self.allocations.len()
    }

    fn add_software(&self, m: &mut Message<Attribute>) {
        if let Some(s) = &self.config.software {
            if let Ok(s) = Software::new(s.clone()) {
                m.add_attribute(s);
            }
        }
    }

    fn transmit(&mut self, to: Client, payload: Vec<u8>) {
        self.out.push_back(Output::Transmit(Transmit { to, payload }));
    }

    fn send_error(&mut self, to: Client, method: u16, tid: [u8; 12], code: u16, key: Option<&[u8]>, now: Instant) {
        self.stats.error_responses += 1;
        let mut m = message::error_response(method, tid, code);
        if matches!(code, 401 | 438) {
            if let Ok(r) = Realm::new(self.creds.realm().to_owned()) {
                m.add_attribute(r);
            }
            let nonce = self.creds.make_nonce(self.clock.unix(now), to.remote);
            if let Ok(n) = Nonce::new(nonce) {
                m.add_attribute(n);
            }
        }
        self.add_software(&mut m);
        self.transmit(to, message::encode(m, key, true));
    }

    fn handle_stun(&mut self, now: Instant, client: Client, packet: &[u8]) -> Option<PeerRoute> {
        let Ok(v) = StunView::new_checked(packet) else {
            self.stats.dropped_malformed += 1;
            return None;
        };
        if v.fingerprint_ok() == Some(false) {
            self.stats.dropped_malformed += 1;
            return None;
        }
        match (v.class(), v.method()) {
            (Class::Indication, method::SEND) => self.send_indication_to_peer(now, client, &v),
            (Class::Request, method::BINDING) => {
                self.stats.requests += 1;
                let resp = self.stun.answer_binding(&v, client.remote);
                self.transmit(client, resp);
                None
            }
            (Class::Request, m) => {
                self.stats.requests += 1;
                self.handle_request(now, client, &v, m);
                None
            }
            _ => {
                self.stats.dropped_malformed += 1;
                None
            }
        }
    }

    fn handle_request(&mut self, now: Instant, client: Client, v: &StunView<'_>, method: u16) {
        let tid = v.transaction_id();
        if !matches!(method, method::ALLOCATE | method::REFRESH | method::CREATE_PERMISSION | method::CHANNEL_BIND) {
            self.send_error(client, method, tid, 400, None, now);
            return;
        }
        let unknown = stun_mod::unknown_required(v);
        if !unknown.is_empty() {
            self.stats.error_responses += 1;
            let resp = stun_mod::unknown_attribute_response(v, &unknown);
            self.transmit(client, resp);
            return;
        }
        let auth = match self.authenticate(now, client, v) {
            Ok(a) => a,
            Err(code) => {
                self.send_error(client, method, tid, code, None, now);
                return;
            }
        };
        let Some(msg) = message::decode(v.bytes()) else {
            self.send_error(client, method, tid, 400, Some(&auth.key), now);
            return;
        };
        let reply = match method {
            method::ALLOCATE => self.allocate(now, client, &msg, auth.username.clone(), auth.key),
            method::REFRESH => self.refresh(now, client, &msg, &auth),
            method::CREATE_PERMISSION => self.create_permission(now, client, &msg, &auth),
            _ => self.channel_bind(now, client, &msg, v, &auth),
        };
        match reply {
            Ok(Some(mut m)) => {
                self.add_software(&mut m);
                let bytes = message::encode(m, Some(&auth.key), true);
                self.transmit(client, bytes);
            }
            Ok(None) => {}
            Err(code) => self.send_error(client, method, tid, code, Some(&auth.key), now),
        }
    }

    /// Long-term credential check (RFC 8489 §9.2.4). The error is the code to send.
    fn authenticate(&self, now: Instant, client: Client, v: &StunView<'_>) -> Result<Auth, u16> {
        if v.integrity_offset().is_none() {
            return Err(401);
        }
        let (Some(user), Some(_realm), Some(nonce)) = (v.find(attr::USERNAME), v.find(attr::REALM), v.find(attr::NONCE)) else {
            return Err(400);
        };
        let (Ok(user), Ok(nonce)) = (std::str::from_utf8(user), std::str::from_utf8(nonce)) else {
            return Err(400);
        };
        let unix = self.clock.unix(now);
        if !self.creds.check_nonce(nonce, unix, client.remote) {
            return Err(438);
        }
        let key = self.creds.key_for(user, unix).map_err(|_| 401u16)?;
        if !v.check_integrity(&key) {
            return Err(401);
        }
        Ok(Auth { username: user.to_owned(), key })
    }

    fn requested_family(msg: &Message<Attribute>) -> Option<Family> {
        msg.get_attribute::<RequestedAddressFamily>().map(|f| match f.address_family() {
            AddressFamily::V4 => Family::V4,
            AddressFamily::V6 => Family::V6,
        })
    }

    fn allocate(&mut self, now: Instant, client: Client, msg: &Message<Attribute>, username: String, key: [u8; 16]) -> Reply {
        let tid = *msg.transaction_id().as_bytes();
        if let Some(id) = self.by_client.get(&client) {
            let a = &self.allocations[id];
            if a.allocate_tid == tid {
                // A retransmission: answer as before, or not yet if the relay is still binding.
                if let Some(resp) = a.allocate_response.clone() {
                    self.transmit(client, resp);
                }
                return Ok(None);
            }
            return Err(437);
        }
        let Some(transport) = msg.get_attribute::<RequestedTransport>() else {
            return Err(400);
        };
        if transport.protocol() != PROTO_UDP {
            return Err(442);
        }
        let even = msg.get_attribute::<EvenPort>().map(|e| e.is_requested());
        let token = msg.get_attribute::<ReservationToken>().map(|t| t.token());
        let requested_family = Self::requested_family(msg);
        if token.is_some() && (even.is_some() || requested_family.is_some()) {
            return Err(400);
        }
        let (family, port) = match token {
            Some(t) => {
                // Peek only: the reservation is spent when the allocation is made below.
                let Some(r) = self.reservations.get(&t) else { return Err(508) };
                (Family::of(r.relay), PortRequest::Reserved(r.relay))
            }
            None => {
                let port = match even {
                    None => PortRequest::Any,
                    Some(false) => PortRequest::Even,
                    Some(true) => PortRequest::EvenPair,
                };
                (requested_family.unwrap_or(Family::V4), port)
            }
        };
        let available = match family {
            Family::V4 => self.config.relay_families.0,
            Family::V6 => self.config.relay_families.1,
        };
        if !available {
            return Err(440);
        }
        let held = self.per_user.get(&username).copied().unwrap_or(0);
        if (self.config.user_quota > 0 && held >= self.config.user_quota)
            || (self.config.total_quota > 0 && self.allocations.len() as u64 >= u64::from(self.config.total_quota))
        {
            return Err(486);
        }
        let lifetime = clamp_lifetime(msg.get_attribute::<Lifetime>().map(|l| l.lifetime()));
        if let Some(t) = token {
            self.reservations.remove(&t);
        }
        let id = AllocationId(self.next_id);
        self.next_id += 1;
        *self.per_user.entry(username.clone()).or_insert(0) += 1;
        let expires = now + lifetime;
        self.allocations.insert(
            id,
            Allocation {
                client,
                username,
                key,
                family,
                relay: None,
                expires,
                allocate_tid: tid,
                allocate_response: None,
                lifetime,
                port,
                permissions: Map::with_hasher(self.hasher.clone()),
                channels: Map::with_hasher(self.hasher.clone()),
                channel_of_peer: Map::with_hasher(self.hasher.clone()),
            },
        );
        self.by_client.insert(client, id);
        self.timers.push(expires, Timer::Allocation(id));
        self.stats.allocations += 1;
        self.stats.allocations_created += 1;
        self.out.push_back(Output::BindRelay { allocation: id, family, port });
        Ok(None)
    }

    /// The allocation of `client`, checked against the request's username.
    fn owned_allocation(&mut self, client: Client, auth: &Auth) -> Result<(AllocationId, &mut Allocation), u16> {
        let id = *self.by_client.get(&client).ok_or(437u16)?;
        let a = self.allocations.get_mut(&id).ok_or(437u16)?;
        if a.relay.is_none() {
            return Err(437);
        }
        if a.username != auth.username {
            return Err(441);
        }
        Ok((id, a))
    }

    fn refresh(&mut self, now: Instant, client: Client, msg: &Message<Attribute>, auth: &Auth) -> Reply {
        let requested = msg.get_attribute::<Lifetime>().map(|l| l.lifetime());
        let wanted_family = Self::requested_family(msg);
        let (id, a) = self.owned_allocation(client, auth)?;
        if wanted_family.is_some_and(|f| f != a.family) {
            return Err(443);
        }
        let granted = if requested == Some(Duration::ZERO) {
            self.delete_allocation(id);
            Duration::ZERO
        } else {
            let l = clamp_lifetime(requested);
            a.expires = now + l;
            l
        };
        let mut m = message::response(method::REFRESH, MessageClass::SuccessResponse, *msg.transaction_id().as_bytes());
        if let Ok(l) = Lifetime::new(granted) {
            m.add_attribute(l);
        }
        Ok(Some(m))
    }

    fn check_peer(&self, family: Family, peer: SocketAddr) -> Result<(), u16> {
        if Family::of(peer) != family {
            return Err(443);
        }
        if !self.config.peer_policy.is_allowed(peer.ip()) {
            return Err(403);
        }
        Ok(())
    }

    fn create_permission(&mut self, now: Instant, client: Client, msg: &Message<Attribute>, auth: &Auth) -> Reply {
        let peers: Vec<SocketAddr> = msg.attributes().filter_map(|a| match a {
            Attribute::XorPeerAddress(p) => Some(p.address()),
            _ => None,
        }).collect();
        if peers.is_empty() {
            return Err(400);
        }
        let max = self.config.max_permissions;
        let (id, a) = self.owned_allocation(client, auth)?;
        let family = a.family;
        let new = peers.iter().filter(|p| !a.permissions.contains_key(&p.ip())).count();
        let over = a.permissions.len() + new > max;
        for p in &peers {
            self.check_peer(family, *p)?;
        }
        if over {
            return Err(508);
        }
        let a = self.allocations.get_mut(&id).ok_or(437u16)?;
        for p in peers {
            if a.permissions.insert(p.ip(), now + PERMISSION_LIFETIME).is_none() {
                self.timers.push(now + PERMISSION_LIFETIME, Timer::Permission(id, p.ip()));
            }
        }
        Ok(Some(message::response(method::CREATE_PERMISSION, MessageClass::SuccessResponse, *msg.transaction_id().as_bytes())))
    }

    fn channel_bind(&mut self, now: Instant, client: Client, msg: &Message<Attribute>, v: &StunView<'_>, auth: &Auth) -> Reply {
        let number = match v.find(attr::CHANNEL_NUMBER) {
            Some([a, b, _, _]) => u16::from_be_bytes([*a, *b]),
            _ => return Err(400),
        };
        let Some(peer) = msg.get_attribute::<XorPeerAddress>().map(|p| p.address()) else {
            return Err(400);
        };
        let last = if self.config.strict_channel_numbers { 0x4FFF } else { 0x7FFF };
        if !(0x4000..=last).contains(&number) {
            return Err(400);
        }
        let max = self.config.max_permissions;
        let (id, a) = self.owned_allocation(client, auth)?;
        let family = a.family;
        // A number is bound to one peer, and a peer to one number, for the channel's life.
        if a.channels.get(&number).is_some_and(|c| c.peer != peer)
            || a.channel_of_peer.get(&peer).is_some_and(|n| *n != number)
        {
            return Err(400);
        }
        let new_permission = !a.permissions.contains_key(&peer.ip());
        if new_permission && a.permissions.len() >= max {
            return Err(508);
        }
        self.check_peer(family, peer)?;
        let a = self.allocations.get_mut(&id).ok_or(437u16)?;
        let expires = now + CHANNEL_LIFETIME;
        if a.channels.insert(number, Channel { peer, expires }).is_none() {
            self.timers.push(expires, Timer::Channel(id, number));
        }
        a.channel_of_peer.insert(peer, number);
        if a.permissions.insert(peer.ip(), now + PERMISSION_LIFETIME).is_none() {
            self.timers.push(now + PERMISSION_LIFETIME, Timer::Permission(id, peer.ip()));
        }
        Ok(Some(message::response(method::CHANNEL_BIND, MessageClass::SuccessResponse, *msg.transaction_id().as_bytes())))
    }

    fn send_indication_to_peer(&mut self, now: Instant, client: Client, v: &StunView<'_>) -> Option<PeerRoute> {
        // Indications with unknown comprehension-required attributes are discarded (RFC 8489 §7.3.2).
        if v.attributes().any(|a| a.typ < 0x8000 && !message::KNOWN_ATTRIBUTES.contains(&a.typ)) {
            self.stats.dropped_malformed += 1;
            return None;
        }
        let (Some(peer), Some(data)) = (v.xor_address(attr::XOR_PEER_ADDRESS), v.attributes().find(|a| a.typ == attr::DATA)) else {
            self.stats.dropped_malformed += 1;
            return None;
        };
        let Some((relay, a)) = self.relay_of(client) else {
            self.stats.dropped_no_allocation += 1;
            return None;
        };
        if Family::of(peer) != a.family || !a.permitted(peer.ip(), now) {
            self.stats.dropped_no_permission += 1;
            return None;
        }
        let start = data.offset + 4;
        let payload = start..start + data.value.len();
        self.stats.to_peer_packets += 1;
        self.stats.to_peer_bytes += data.value.len() as u64;
        Some(PeerRoute { relay, peer, payload })
    }

    fn channel_data_to_peer(&mut self, now: Instant, client: Client, packet: &[u8]) -> Option<PeerRoute> {
        if packet.len() < 4 {
            self.stats.dropped_malformed += 1;
            return None;
        }
        let number = u16::from_be_bytes([packet[0], packet[1]]);
        let len = u16::from_be_bytes([packet[2], packet[3]]) as usize;
        if 4 + len > packet.len() {
            self.stats.dropped_malformed += 1;
            return None;
        }
        let Some((relay, a)) = self.relay_of(client) else {
            self.stats.dropped_no_allocation += 1;
            return None;
        };
        let Some(peer) = a.live_channel(number, now).map(|c| c.peer) else {
            self.stats.dropped_no_allocation += 1;
            return None;
        };
        if !a.permitted(peer.ip(), now) {
            self.stats.dropped_no_permission += 1;
            return None;
        }
        self.stats.to_peer_packets += 1;
        self.stats.to_peer_bytes += len as u64;
        Some(PeerRoute { relay, peer, payload: 4..4 + len })
    }

    fn relay_of(&self, client: Client) -> Option<(SocketAddr, &Allocation)> {
        let a = self.allocations.get(self.by_client.get(&client)?)?;
        Some((a.relay?, a))
    }

    fn delete_allocation(&mut self, id: AllocationId) {
        let Some(a) = self.allocations.remove(&id) else { return };
        self.by_client.remove(&a.client);
        if let Some(n) = self.per_user.get_mut(&a.username) {
            *n -= 1;
            if *n == 0 {
                self.per_user.remove(&a.username);
            }
        }
        self.stats.allocations -= 1;
        if let Some(relay) = a.relay {
            self.by_relay.remove(&relay);
            self.out.push_back(Output::ReleaseRelay { allocation: id, relay });
        }
    }
}

/// The lifetime granted for a requested one: the default when absent, else
/// at least the default and at most [`MAX_LIFETIME`].
fn clamp_lifetime(requested: Option<Duration>) -> Duration {
    match requested {
        None => DEFAULT_LIFETIME,
        Some(r) => r.clamp(DEFAULT_LIFETIME, MAX_LIFETIME),
    }
}

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;
