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
//! The data path answers directly instead of queueing, and both of its
//! answers are a range within the buffer the caller passed in:
//! `handle_client` returns a [`PeerRoute`] (send `buf[range]` from this relay
//! socket to this peer), and `handle_peer` writes the ChannelData or Data
//! indication header into headroom in front of the payload and returns a
//! [`ClientRoute`] (send `buf[range]` to this client). Nothing is copied or
//! allocated per relayed packet.
//!
//! # Layout
//!
//! - [`config`]: the configuration, [`TurnConfig`];
//! - `requests`: authentication and the Allocate, Refresh, CreatePermission and ChannelBind handlers;
//! - [`error`]: [`ErrorResponse`], the handlers' error;
//! - `data`: the data path both ways;
//! - `allocation`: allocation, permission, channel and reservation state, and its expiry;
//! - [`auth`], [`policy`], [`timer`]: credentials and nonces, the peer address policy, the timer queue.

pub mod auth;
pub mod config;
pub mod error;
pub mod policy;
pub mod quota;
mod rate;
pub mod timer;

mod allocation;
mod data;
mod requests;
mod tcp;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::ops::Range;
use std::time::Instant;

use crate::hash::{self, Map};
use crate::ids::{AllocationId, Client, ConnId, Family, Via};
use crate::rng::{self, Rng, Seed};
use crate::stun::view::{method, Class, StunView};
use crate::stun::{classify, PacketKind, StunServer, StunStats};
use crate::time::{Monotonic, WallClock};

use self::allocation::{Allocation, Timer};
use self::auth::Credentials;
use self::timer::TimerQueue;

pub use self::allocation::{CHANNEL_LIFETIME, DEFAULT_LIFETIME, MAX_LIFETIME, PERMISSION_LIFETIME, RESERVATION_LIFETIME};
pub use self::config::TurnConfig;
pub use self::data::{MAX_RELAY_PAYLOAD, RELAY_HEADROOM, RELAY_TAILROOM};
pub use self::error::ErrorResponse;
pub use self::quota::{QuotaLedger, ReservationLedger};
pub use self::tcp::{StreamLink, MAX_TCP_CONNECTIONS, TCP_CONNECTION_TIMEOUT};

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
    /// Listen on a TCP relay socket of `family` (RFC 6062), then report with
    /// [`TurnServer::handle_relay_bound`]. Its address is also the source of
    /// the connections to peers ([`Output::ConnectPeer`]): bind it so that
    /// those can share it (SO_REUSEADDR and SO_REUSEPORT).
    BindTcpRelay {
        /// The allocation it is for.
        allocation: AllocationId,
        /// The address family wanted.
        family: Family,
    },
    /// Open a TCP connection from the relay address `relay` to `peer`, then
    /// report with [`TurnServer::handle_peer_connected`].
    ConnectPeer {
        /// The TCP relay's address, the connection's source.
        relay: SocketAddr,
        /// Where to.
        peer: SocketAddr,
        /// The connection it is for (its CONNECTION-ID).
        connection: u32,
    },
    /// Close this stream connection (a peer's, or a client's data connection).
    CloseStream(ConnId),
    /// From now on the bytes of each of these stream connections go, unframed,
    /// to the other ([`TurnServer::stream_link`]); the peer's bytes received so
    /// far go first.
    Linked {
        /// The client's data connection.
        data: ConnId,
        /// The peer connection.
        peer: ConnId,
    },
}

/// Client to peer: send `buf[range]` from the relay socket bound at `relay`
/// to `peer`, where `buf` is the buffer given to [`TurnServer::handle_client`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerRoute {
    /// The relay socket's bound local address.
    pub relay: SocketAddr,
    /// The peer.
    pub peer: SocketAddr,
    /// The payload's range within the buffer you passed.
    pub range: Range<usize>,
}

/// Peer to client: send `buf[range]` to `to`, where `buf` is the buffer
/// given to [`TurnServer::handle_peer`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientRoute {
    /// The client.
    pub to: Client,
    /// The framed message's range within the buffer you passed.
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
    /// Dropped: over the allocation's `max_bps`.
    pub dropped_rate_limited: u64,
    /// 401 answers not sent: their source address asked for more than its share.
    pub challenges_rate_limited: u64,
    /// TCP relay connections to peers (RFC 6062) alive now.
    pub tcp_connections: u64,
    /// Connects that failed or timed out (447).
    pub tcp_connect_failures: u64,
    /// Binding server counters.
    pub stun: StunStats,
}

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
    /// 401 answers per source address (by hash: a fixed table, whatever the sources).
    challenges: Vec<rate::Bucket>,
    allocations: Map<AllocationId, Allocation>,
    by_client: Map<Client, AllocationId>,
    by_relay: Map<SocketAddr, AllocationId>,
    /// The tokens this server issued, with the allocation that reserved each (the address is in the ledger).
    reservations: Map<u64, AllocationId>,
    /// TCP relay connections (RFC 6062) by CONNECTION-ID, and by their stream connections.
    tcp: Map<u32, tcp::TcpConnection>,
    tcp_streams: Map<ConnId, u32>,
    timers: TimerQueue<Timer>,
    out: VecDeque<Output>,
    stats: TurnStats,
}

impl Drop for TurnServer {
    /// What it still holds is given back to a ledger that may outlive it (shared with other workers' servers).
    fn drop(&mut self) {
        for a in self.allocations.values() {
            self.config.quotas.give_back(&a.username);
        }
        for token in self.reservations.keys() {
            self.config.reservations.take(*token);
        }
    }
}

impl TurnServer {
    /// A server started at `now`, when the unix time was `unix_now` seconds,
    /// with randomness from `seed`. Nonces are keyed by the configuration's
    /// `nonce_key`, or when it has none by a key derived from `seed`.
    pub fn new(config: TurnConfig, now: Instant, unix_now: u64, seed: &Seed) -> Self {
        let creds = Credentials::new(
            &config.realm,
            &config.users,
            config.static_auth_secret.as_deref(),
            config.nonce_key.unwrap_or_else(|| rng::derive(seed, "turn nonce key")),
        );
        let h = hash::hasher(seed);
        TurnServer {
            stun: StunServer::new(),
            creds,
            config,
            clock: WallClock::new(now, unix_now),
            time: Monotonic::new(now),
            rng: Rng::new(seed, "turn transaction ids"),
            next_id: 1,
            allocations: Map::with_hasher(h.clone()),
            by_client: Map::with_hasher(h.clone()),
            by_relay: Map::with_hasher(h.clone()),
            reservations: Map::with_hasher(h.clone()),
            tcp: Map::with_hasher(h.clone()),
            tcp_streams: Map::with_hasher(h.clone()),
            hasher: h,
            challenges: vec![rate::Bucket::default(); rate::CHALLENGE_SLOTS],
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

    /// Allocations alive now.
    pub fn allocation_count(&self) -> usize {
        self.allocations.len()
    }

    /// The next control output, if any. Drain after every `handle_*` call.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// When [`TurnServer::handle_timeout`] should be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next()
    }

    /// Handles one packet from `client`, `buf[packet]`: a datagram, or one
    /// framed message of a stream. Returns where to relay data, if it is data
    /// for a peer, as a range within `buf`.
    pub fn handle_client(&mut self, now: Instant, client: Client, buf: &[u8], packet: Range<usize>) -> Option<PeerRoute> {
        let now = self.time.advance(now);
        let Some(bytes) = buf.get(packet.clone()) else {
            self.stats.dropped_malformed += 1;
            return None;
        };
        match classify(bytes) {
            PacketKind::Stun => self.handle_stun(now, client, bytes, packet),
            PacketKind::ChannelData => self.channel_data_to_peer(now, client, buf, packet),
            PacketKind::Other => {
                self.stats.dropped_malformed += 1;
                None
            }
        }
    }

    /// A STUN message from a client: a Send indication, or a request.
    fn handle_stun(&mut self, now: Instant, client: Client, bytes: &[u8], packet: Range<usize>) -> Option<PeerRoute> {
        let Ok(v) = StunView::new_checked(bytes) else {
            self.stats.dropped_malformed += 1;
            return None;
        };
        if v.fingerprint_ok() == Some(false) {
            self.stats.dropped_malformed += 1;
            return None;
        }
        match (v.class(), v.method()) {
            (Class::Indication, method::SEND) => self.send_indication_to_peer(now, client, &v, packet),
            (Class::Request, method::BINDING) => {
                self.stats.requests += 1;
                match (self.config.nat_discovery, client.via) {
                    // RFC 5780: answered from the address CHANGE-REQUEST asks for, to the port RESPONSE-PORT names.
                    (Some(nat), Via::Udp(local)) if nat.serves(local) => {
                        let (resp, source, to) = self.stun.answer_discovery(&v, &nat, local, client.remote, true);
                        self.transmit(Client { via: Via::Udp(source), remote: to }, resp);
                    }
                    (Some(nat), Via::Tcp(_)) => {
                        let (resp, _, _) = self.stun.answer_discovery(&v, &nat, nat.primary, client.remote, false);
                        self.transmit(client, resp);
                    }
                    _ => {
                        let resp = self.stun.answer_binding(&v, client.remote);
                        self.transmit(client, resp);
                    }
                }
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

    /// A stream client went away: its allocation ends with it (RFC 8656 §3.1);
    /// a TCP relay connection (RFC 6062) it was one end of ends too.
    pub fn handle_client_closed(&mut self, now: Instant, client: Client) {
        self.time.advance(now);
        if let Some(id) = self.by_client.get(&client).copied() {
            self.delete_allocation(id);
        }
        if let Via::Tcp(conn) = client.via {
            self.tcp_stream_closed(conn);
        }
    }

    /// Expires whatever is due at `now`. Safe to call early or more than once.
    pub fn handle_timeout(&mut self, now: Instant) {
        let now = self.time.advance(now);
        while let Some(t) = self.timers.pop_due(now) {
            self.expire(t, now);
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
            self.release_reservation(t);
        }
    }

    fn transmit(&mut self, to: Client, payload: Vec<u8>) {
        self.out.push_back(Output::Transmit(Transmit { to, payload }));
    }
}

#[cfg(test)]
mod proptests;
#[cfg(test)]
pub(crate) mod tests;
