//! TCP relays (RFC 6062): an allocation whose REQUESTED-TRANSPORT is TCP
//! relays byte streams to peers over TCP connections.
//!
//! - The client asks for a connection to a peer with **Connect**; the server
//!   asks its shell to open one from the relayed address
//!   ([`Output::ConnectPeer`]) and answers with a CONNECTION-ID when it opens
//!   (447 when it fails or takes 30 s).
//! - A peer that connects to the relayed address (the shell accepted it on
//!   the allocation's TCP listener) is announced to the client with a
//!   **ConnectionAttempt** indication, if the peer's IP holds a permission.
//! - Either way the client then opens a new TCP connection to the server, a
//!   *data connection*, and sends **ConnectionBind** with the CONNECTION-ID.
//!   After its success response, the data connection and the peer
//!   connection carry the application's bytes, unframed, each to the other
//!   ([`Output::Linked`]); the engine moves them ([`TurnServer::stream_link`]).
//! - A peer connection not bound within 30 s is closed; closing either
//!   connection of a pair closes the other; an allocation that ends closes
//!   all of its connections.
//!
//! A data connection can land on another server than the allocation's (the
//! workers share the TURN port): a CONNECTION-ID's top byte names the server
//! that made it ([`super::TurnConfig::server_index`]), and
//! [`TurnServer::foreign_connection_bind`] tells the engine to hand such a
//! stream to that server before anything is read from it.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use stun_codec::rfc5766::attributes::XorPeerAddress;
use stun_codec::MessageClass;

use crate::ids::{AllocationId, Client, ConnId, Family, Via};
use crate::stun::message;
use crate::stun::view::{attr, method, Class, StunView};

use super::allocation::Timer;
use super::auth::SessionKey;
use super::{ErrorResponse, Output, TurnServer};

/// How long a Connect may take, and how long a peer connection waits for its ConnectionBind (RFC 6062 §5.2, §5.3).
pub const TCP_CONNECTION_TIMEOUT: Duration = Duration::from_secs(30);
/// Most connections (pending or bound) one TCP allocation may hold.
pub const MAX_TCP_CONNECTIONS: usize = 64;

/// One TCP connection to a peer of a TCP allocation.
#[derive(Debug)]
pub(super) struct TcpConnection {
    pub allocation: AllocationId,
    pub peer: SocketAddr,
    pub state: TcpState,
    /// When a Connect or a waiting peer connection gives up.
    pub deadline: Instant,
}

/// Where a [`TcpConnection`] is.
#[derive(Debug, Clone, Copy)]
pub(super) enum TcpState {
    /// The shell is connecting to the peer; the Connect request (its transaction and key) waits for the answer.
    Connecting { tid: [u8; 12], key: SessionKey },
    /// The peer connection is open; the client's ConnectionBind has not come yet.
    Unbound { peer_conn: ConnId },
    /// Linked: the data connection and the peer connection relay to each other.
    Bound { peer_conn: ConnId, data_conn: ConnId },
}

/// What a stream connection is to the TCP relay (see [`TurnServer::stream_link`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamLink {
    /// A client's stream of STUN messages and ChannelData: framed.
    Framed,
    /// A peer connection whose client has not bound it yet: keep its bytes (bounded) until it is.
    Waiting,
    /// Unframed bytes that go to this connection.
    To(ConnId),
}

impl TurnServer {
    /// What `conn` is to the TCP relay: a framed client stream, a peer
    /// connection waiting for its data connection, or one end of a linked pair.
    pub fn stream_link(&self, conn: ConnId) -> StreamLink {
        let Some(c) = self.tcp_streams.get(&conn).and_then(|id| self.tcp.get(id)) else {
            return StreamLink::Framed;
        };
        match c.state {
            TcpState::Bound { peer_conn, data_conn } if conn == peer_conn => StreamLink::To(data_conn),
            TcpState::Bound { peer_conn, .. } => StreamLink::To(peer_conn),
            _ => StreamLink::Waiting,
        }
    }

    /// If `frame` (one framed message of a stream) is a ConnectionBind for a
    /// connection that another server made, that server's index: the stream
    /// belongs there (hand it over with its bytes from this frame on).
    pub fn foreign_connection_bind(&self, frame: &[u8]) -> Option<u8> {
        let v = StunView::new_checked(frame).ok()?;
        if v.class() != Class::Request || v.method() != method::CONNECTION_BIND {
            return None;
        }
        let id = u32::from_be_bytes(v.find(attr::CONNECTION_ID)?.try_into().ok()?);
        let owner = (id >> 24) as u8;
        (owner != self.config.server_index).then_some(owner)
    }

    /// Whether `conn` is a client's data connection of a linked pair (not the peer's end).
    pub fn is_data_stream(&self, conn: ConnId) -> bool {
        let Some(c) = self.tcp_streams.get(&conn).and_then(|id| self.tcp.get(id)) else { return false };
        matches!(c.state, TcpState::Bound { data_conn, .. } if data_conn == conn)
    }

    /// Counts bytes the engine moved between a linked pair (`to_peer`: from the client's data connection).
    pub fn count_stream_relay(&mut self, to_peer: bool, bytes: usize) {
        if to_peer {
            self.stats.to_peer_bytes += bytes as u64;
        } else {
            self.stats.to_client_bytes += bytes as u64;
        }
    }

    /// A CONNECTION-ID that is free: this server's index, then 24 bits.
    fn new_connection_id(&mut self) -> u32 {
        loop {
            let id = (u32::from(self.config.server_index) << 24) | (self.rng.next_u64() as u32 & 0x00FF_FFFF);
            if !self.tcp.contains_key(&id) {
                return id;
            }
        }
    }

    fn tcp_connections_of(&self, allocation: AllocationId) -> Vec<u32> {
        let mut ids: Vec<u32> = self.tcp.iter().filter(|(_, c)| c.allocation == allocation).map(|(id, _)| *id).collect();
        ids.sort_unstable();
        ids
    }

    /// Connect (RFC 6062 §5.2): asks the shell for a connection from the relayed address to the peer.
    pub(super) fn connect(&mut self, now: Instant, client: Client, v: &StunView<'_>, key: SessionKey, username: &str) -> Result<(), ErrorResponse> {
        let Some(peer) = v.xor_address(attr::XOR_PEER_ADDRESS) else {
            return Err(ErrorResponse::BadRequest);
        };
        let id = *self.by_client.get(&client).ok_or(ErrorResponse::AllocationMismatch)?;
        let a = self.allocations.get(&id).ok_or(ErrorResponse::AllocationMismatch)?;
        let Some(relay) = a.relay else { return Err(ErrorResponse::AllocationMismatch) };
        if a.username != username {
            return Err(ErrorResponse::WrongCredentials);
        }
        if !a.tcp {
            return Err(ErrorResponse::BadRequest);
        }
        if Family::of(peer) != a.family {
            return Err(ErrorResponse::PeerAddressFamilyMismatch);
        }
        if !self.config.peer_policy.is_allowed(peer.ip()) || !a.permitted(peer.ip(), now) {
            return Err(ErrorResponse::Forbidden);
        }
        let mine = self.tcp_connections_of(id);
        if mine.iter().any(|c| self.tcp[c].peer == peer) {
            return Err(ErrorResponse::ConnectionAlreadyExists);
        }
        if mine.len() >= MAX_TCP_CONNECTIONS {
            return Err(ErrorResponse::InsufficientCapacity);
        }
        let connection = self.new_connection_id();
        let deadline = now + TCP_CONNECTION_TIMEOUT;
        let state = TcpState::Connecting { tid: v.transaction_id(), key };
        self.tcp.insert(connection, TcpConnection { allocation: id, peer, state, deadline });
        self.timers.push(deadline, Timer::TcpConnection(connection));
        self.stats.tcp_connections += 1;
        self.out.push_back(Output::ConnectPeer { relay, peer, connection });
        Ok(())
    }

    /// The answer to an [`Output::ConnectPeer`]: the shell's new stream
    /// connection to the peer, or `None` when it could not connect. A stream
    /// for a Connect that already gave up is closed.
    pub fn handle_peer_connected(&mut self, now: Instant, connection: u32, conn: Option<ConnId>) {
        let now = self.time.advance(now);
        let pending = self.tcp.get(&connection).and_then(|c| match c.state {
            TcpState::Connecting { tid, key } => Some((c.allocation, tid, key)),
            _ => None,
        });
        let Some((allocation, tid, key)) = pending else {
            if let Some(conn) = conn {
                self.out.push_back(Output::CloseStream(conn));
            }
            return;
        };
        let client = self.allocations.get(&allocation).map(|a| a.client);
        match (conn, client) {
            (Some(peer_conn), Some(client)) => {
                let deadline = now + TCP_CONNECTION_TIMEOUT;
                if let Some(c) = self.tcp.get_mut(&connection) {
                    c.state = TcpState::Unbound { peer_conn };
                    c.deadline = deadline;
                }
                self.tcp_streams.insert(peer_conn, connection);
                self.timers.push(deadline, Timer::TcpConnection(connection));
                let mut m = message::response(method::CONNECT, MessageClass::SuccessResponse, tid);
                self.add_software_to(&mut m);
                let mut bytes = message::encode_with(m, None, false);
                message::append_attribute(&mut bytes, attr::CONNECTION_ID, &connection.to_be_bytes());
                message::seal(&mut bytes, Some(key.integrity()), true);
                self.transmit(client, bytes);
            }
            (peer_conn, client) => {
                self.tcp.remove(&connection);
                self.stats.tcp_connections -= 1;
                if let Some(conn) = peer_conn {
                    self.out.push_back(Output::CloseStream(conn));
                }
                if let Some(client) = client {
                    self.stats.tcp_connect_failures += 1;
                    self.send_error(now, client, method::CONNECT, tid, ErrorResponse::ConnectionTimeoutOrFailure, Some(key.integrity()), true);
                }
            }
        }
    }

    /// A peer connected to the TCP relay listener bound at `relay`: the shell
    /// accepted it as `conn`. With a permission for the peer's IP the client
    /// is told (ConnectionAttempt); otherwise it is closed.
    pub fn handle_relay_accepted(&mut self, now: Instant, relay: SocketAddr, peer: SocketAddr, conn: ConnId) {
        let now = self.time.advance(now);
        let Some(&id) = self.by_relay.get(&relay) else {
            self.stats.dropped_no_allocation += 1;
            self.out.push_back(Output::CloseStream(conn));
            return;
        };
        let allowed = self.allocations.get(&id).is_some_and(|a| a.tcp && a.permitted(peer.ip(), now))
            && self.config.peer_policy.is_allowed(peer.ip());
        if !allowed || self.tcp_connections_of(id).len() >= MAX_TCP_CONNECTIONS {
            self.stats.dropped_no_permission += 1;
            self.out.push_back(Output::CloseStream(conn));
            return;
        }
        let Some(client) = self.allocations.get(&id).map(|a| a.client) else { return };
        let connection = self.new_connection_id();
        let deadline = now + TCP_CONNECTION_TIMEOUT;
        let state = TcpState::Unbound { peer_conn: conn };
        self.tcp.insert(connection, TcpConnection { allocation: id, peer, state, deadline });
        self.tcp_streams.insert(conn, connection);
        self.timers.push(deadline, Timer::TcpConnection(connection));
        self.stats.tcp_connections += 1;
        let mut tid = [0u8; 12];
        self.rng.fill(&mut tid);
        let mut m = message::response(method::CONNECTION_ATTEMPT, MessageClass::Indication, tid);
        m.add_attribute(XorPeerAddress::new(peer));
        let mut bytes = message::encode_with(m, None, false);
        message::append_attribute(&mut bytes, attr::CONNECTION_ID, &connection.to_be_bytes());
        message::seal(&mut bytes, None, true);
        self.transmit(client, bytes);
    }

    /// ConnectionBind (RFC 6062 §5.4) on a new stream connection: with its
    /// success response sent, the stream and the peer connection are linked.
    pub(super) fn connection_bind(&mut self, client: Client, v: &StunView<'_>, key: SessionKey, username: &str) -> Result<(), ErrorResponse> {
        let Via::Tcp(data_conn) = client.via else { return Err(ErrorResponse::BadRequest) };
        if self.by_client.contains_key(&client) || self.tcp_streams.contains_key(&data_conn) {
            // A control connection, or one already bound: a data connection is a fresh one.
            return Err(ErrorResponse::BadRequest);
        }
        let Some(connection) = v.find(attr::CONNECTION_ID).and_then(|c| <[u8; 4]>::try_from(c).ok()).map(u32::from_be_bytes) else {
            return Err(ErrorResponse::BadRequest);
        };
        let Some(c) = self.tcp.get_mut(&connection) else { return Err(ErrorResponse::BadRequest) };
        let TcpState::Unbound { peer_conn } = c.state else { return Err(ErrorResponse::BadRequest) };
        match self.allocations.get(&c.allocation) {
            Some(a) if a.username == username => {}
            Some(_) => return Err(ErrorResponse::WrongCredentials),
            None => return Err(ErrorResponse::BadRequest),
        }
        c.state = TcpState::Bound { peer_conn, data_conn };
        self.tcp_streams.insert(data_conn, connection);
        let mut m = message::response(method::CONNECTION_BIND, MessageClass::SuccessResponse, v.transaction_id());
        self.add_software_to(&mut m);
        let bytes = message::encode_with(m, Some(key.integrity()), true);
        // The answer first, then the bytes: the client sends nothing before it, and gets nothing before it.
        self.transmit(client, bytes);
        self.out.push_back(Output::Linked { data: data_conn, peer: peer_conn });
        Ok(())
    }

    /// Ends TCP connection `connection`: closes its streams but `except` (already gone).
    pub(super) fn close_tcp_connection(&mut self, connection: u32, except: Option<ConnId>) {
        let Some(c) = self.tcp.remove(&connection) else { return };
        self.stats.tcp_connections -= 1;
        let (a, b) = match c.state {
            TcpState::Connecting { .. } => (None, None),
            TcpState::Unbound { peer_conn } => (Some(peer_conn), None),
            TcpState::Bound { peer_conn, data_conn } => (Some(peer_conn), Some(data_conn)),
        };
        for conn in a.into_iter().chain(b) {
            self.tcp_streams.remove(&conn);
            if Some(conn) != except {
                self.out.push_back(Output::CloseStream(conn));
            }
        }
    }

    /// Ends every TCP connection of an allocation that ends.
    pub(super) fn close_tcp_connections_of(&mut self, allocation: AllocationId) {
        for id in self.tcp_connections_of(allocation) {
            self.close_tcp_connection(id, None);
        }
    }

    /// A stream connection went away: if it was one end of a TCP relay connection, that ends.
    pub(super) fn tcp_stream_closed(&mut self, conn: ConnId) {
        if let Some(id) = self.tcp_streams.get(&conn).copied() {
            self.close_tcp_connection(id, Some(conn));
        }
    }

    /// A TCP connection's timer: a Connect that took too long gets 447; a
    /// peer connection still unbound is closed.
    pub(super) fn expire_tcp_connection(&mut self, connection: u32, now: Instant) {
        let Some(c) = self.tcp.get(&connection) else { return };
        if c.deadline > now {
            return;
        }
        match c.state {
            TcpState::Connecting { tid, key } => {
                let client = self.allocations.get(&c.allocation).map(|a| a.client);
                self.tcp.remove(&connection);
                self.stats.tcp_connections -= 1;
                if let Some(client) = client {
                    self.stats.tcp_connect_failures += 1;
                    self.send_error(now, client, method::CONNECT, tid, ErrorResponse::ConnectionTimeoutOrFailure, Some(key.integrity()), true);
                }
            }
            TcpState::Unbound { .. } => self.close_tcp_connection(connection, None),
            TcpState::Bound { .. } => {}
        }
    }

    /// The peer address of connection `connection`, if it exists.
    pub fn tcp_connection_peer(&self, connection: u32) -> Option<SocketAddr> {
        self.tcp.get(&connection).map(|c| c.peer)
    }

    fn add_software_to(&self, m: &mut message::Message<message::Attribute>) {
        if let Some(s) = self.config.software.as_ref().and_then(|s| stun_codec::rfc5389::attributes::Software::new(s.clone()).ok()) {
            m.add_attribute(s);
        }
    }
}
