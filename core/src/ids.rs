//! Handles and addresses that cross module and shell lines.

use std::fmt;
use std::net::SocketAddr;

/// A stream (TCP) connection, numbered by the shell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

/// What a member of an SFU room does with media.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum MediaRole {
    /// A browser on signaling: publishes, and is offered everyone else's tracks.
    #[default]
    Member,
    /// Publishes only, and takes no offers from the server (a WHIP client).
    Publisher,
    /// Receives only, on the m-lines of its own offer (a WHEP client): one
    /// audio and one video source at a time, the publisher with stream label
    /// `peer` or, without one, the room's speaker (else its first publisher).
    Viewer {
        /// The publisher it watches, if pinned.
        peer: Option<String>,
    },
}

/// A TURN allocation, numbered by the core.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AllocationId(pub u64);

impl fmt::Display for AllocationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "alloc#{}", self.0)
    }
}

/// How a client reaches the server: which listener or connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Via {
    /// Datagrams to the UDP listener bound at this local address.
    Udp(SocketAddr),
    /// A stream connection.
    Tcp(ConnId),
}

/// A client of the STUN/TURN port: its transport and its remote address.
/// This is the RFC 8656 "5-tuple" of an allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Client {
    /// The listener or connection.
    pub via: Via,
    /// The client's address as the server sees it.
    pub remote: SocketAddr,
}

/// An IP address family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

impl Family {
    /// The family of `addr`.
    pub fn of(addr: SocketAddr) -> Family {
        if addr.is_ipv4() {
            Family::V4
        } else {
            Family::V6
        }
    }
}
