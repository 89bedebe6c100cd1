//! The state of allocations (RFC 8656 §2.2): their relay, permissions and
//! channels, port reservations, and the timers that expire them.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use crate::hash::Map;
use crate::ids::{AllocationId, Client, Family};
use crate::time::secs;

use super::{Output, PortRequest, TurnServer};

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

/// A channel binding: its number's peer, until when.
#[derive(Debug)]
pub(super) struct Channel {
    pub peer: SocketAddr,
    pub expires: Instant,
}

/// The second relay of a dual allocation (RFC 8656 ADDITIONAL-ADDRESS-FAMILY: an IPv6 relay beside the IPv4 one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Additional {
    /// Not asked for.
    None,
    /// Asked for; bound after the first relay is.
    Wanted,
    /// The shell is binding it.
    Binding,
    /// Bound at this address.
    Bound(SocketAddr),
    /// This server relays no IPv6 (440 in ADDRESS-ERROR-CODE).
    Unsupported,
    /// No socket could be bound (508 in ADDRESS-ERROR-CODE).
    Failed,
}

/// One client's allocation.
#[derive(Debug)]
pub(super) struct Allocation {
    pub client: Client,
    pub username: String,
    /// The long-term key its requests are signed with, for responses sent later.
    pub key: super::auth::SessionKey,
    pub family: Family,
    /// `None` while the shell is binding the relay socket.
    pub relay: Option<SocketAddr>,
    /// A dual allocation's IPv6 relay (`family` is then IPv4).
    pub additional: Additional,
    /// A TCP relay (RFC 6062): `relay` is a TCP listener, and data goes over TCP connections.
    pub tcp: bool,
    pub expires: Instant,
    /// The Allocate request's transaction, to answer retransmissions alike.
    pub allocate_tid: [u8; 12],
    pub allocate_response: Option<Vec<u8>>,
    pub lifetime: Duration,
    pub port: PortRequest,
    pub permissions: Map<IpAddr, Instant>,
    pub channels: Map<u16, Channel>,
    pub channel_of_peer: Map<SocketAddr, u16>,
    /// Bytes it may still relay now, each way (`max_bps`).
    pub to_peer_budget: super::rate::Bucket,
    pub to_client_budget: super::rate::Bucket,
}

impl Allocation {
    /// Whether `ip` holds a live permission.
    pub fn permitted(&self, ip: IpAddr, now: Instant) -> bool {
        self.permissions.get(&ip).is_some_and(|e| *e > now)
    }

    /// The relay that talks to peers of `family`: the allocation's own, or a dual allocation's second.
    pub fn relay_for(&self, family: Family) -> Option<SocketAddr> {
        if family == self.family {
            return self.relay;
        }
        match self.additional {
            Additional::Bound(a) if Family::of(a) == family => Some(a),
            _ => None,
        }
    }

    /// The live channel `number`, if bound.
    pub fn live_channel(&self, number: u16, now: Instant) -> Option<&Channel> {
        self.channels.get(&number).filter(|c| c.expires > now)
    }
}

/// What a timer entry expires. One entry per object; see [`super::timer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Timer {
    Reservation(u64),
    Allocation(AllocationId),
    Permission(AllocationId, IpAddr),
    Channel(AllocationId, u16),
    TcpConnection(u32),
}

/// The lifetime granted for a requested one: the default when absent, else
/// at least the default and at most [`MAX_LIFETIME`].
pub(super) fn clamp_lifetime(requested: Option<Duration>) -> Duration {
    match requested {
        None => DEFAULT_LIFETIME,
        Some(r) => r.clamp(DEFAULT_LIFETIME, MAX_LIFETIME),
    }
}

/// The allocation of `client`, once its relay is bound. Takes the two maps
/// rather than the server, so that the caller can count into the server's
/// stats while it holds the allocation.
pub(super) fn bound_allocation<'a>(
    by_client: &Map<Client, AllocationId>,
    allocations: &'a mut Map<AllocationId, Allocation>,
    client: Client,
) -> Option<&'a mut Allocation> {
    allocations.get_mut(by_client.get(&client)?).filter(|a| a.relay.is_some())
}

impl TurnServer {
    /// Releases the socket a token of this server's reserved, unless the
    /// token was spent (here or by a server sharing the ledger, whose shell
    /// then holds the socket).
    pub(super) fn release_reservation(&mut self, token: u64) {
        let owner = self.reservations.remove(&token);
        if let (Some(allocation), Some(relay)) = (owner, self.config.reservations.take(token)) {
            self.out.push_back(Output::ReleaseRelay { allocation, relay });
        }
    }


    /// Ends an allocation and releases its relay.
    pub(super) fn delete_allocation(&mut self, id: AllocationId) {
        if self.allocations.get(&id).is_some_and(|a| a.tcp) {
            self.close_tcp_connections_of(id);
        }
        let Some(a) = self.allocations.remove(&id) else { return };
        self.by_client.remove(&a.client);
        self.config.quotas.give_back(&a.username);
        self.stats.allocations -= 1;
        let second = match a.additional {
            Additional::Bound(r) => Some(r),
            _ => None,
        };
        for relay in a.relay.into_iter().chain(second) {
            self.by_relay.remove(&relay);
            self.out.push_back(Output::ReleaseRelay { allocation: id, relay });
        }
    }

    /// Handles one due timer entry: expires its object, or schedules it again
    /// if it was refreshed meanwhile.
    pub(super) fn expire(&mut self, t: Timer, now: Instant) {
        match t {
            Timer::Reservation(token) => self.release_reservation(token),
            Timer::TcpConnection(c) => self.expire_tcp_connection(c, now),
            Timer::Allocation(id) => {
                let Some(a) = self.allocations.get(&id) else { return };
                if a.expires <= now {
                    self.stats.allocations_expired += 1;
                    self.delete_allocation(id);
                } else {
                    self.timers.push(a.expires, t);
                }
            }
            Timer::Permission(id, ip) => {
                let Some(a) = self.allocations.get_mut(&id) else { return };
                let Some(&exp) = a.permissions.get(&ip) else { return };
                if exp <= now {
                    a.permissions.remove(&ip);
                } else {
                    self.timers.push(exp, t);
                }
            }
            Timer::Channel(id, number) => {
                let Some(a) = self.allocations.get_mut(&id) else { return };
                let Some(c) = a.channels.get(&number) else { return };
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
