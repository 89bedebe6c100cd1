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
}

/// The lifetime granted for a requested one: the default when absent, else
/// at least the default and at most [`MAX_LIFETIME`].
pub(super) fn clamp_lifetime(requested: Option<Duration>) -> Duration {
    match requested {
        None => DEFAULT_LIFETIME,
        Some(r) => r.clamp(DEFAULT_LIFETIME, MAX_LIFETIME),
    }
}

/// The relay address and allocation of `client`, once its relay is bound.
/// Takes the two maps rather than the server, so that the caller can count
/// into the server's stats while it holds the allocation.
pub(super) fn relay_of<'a>(
    by_client: &Map<Client, AllocationId>,
    allocations: &'a mut Map<AllocationId, Allocation>,
    client: Client,
) -> Option<(SocketAddr, &'a mut Allocation)> {
    let a = allocations.get_mut(by_client.get(&client)?)?;
    Some((a.relay?, a))
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
        let Some(a) = self.allocations.remove(&id) else { return };
        self.by_client.remove(&a.client);
        self.config.quotas.give_back(&a.username);
        self.stats.allocations -= 1;
        if let Some(relay) = a.relay {
            self.by_relay.remove(&relay);
            self.out.push_back(Output::ReleaseRelay { allocation: id, relay });
        }
    }

    /// Handles one due timer entry: expires its object, or schedules it again
    /// if it was refreshed meanwhile.
    pub(super) fn expire(&mut self, t: Timer, now: Instant) {
        match t {
            Timer::Reservation(token) => self.release_reservation(token),
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
