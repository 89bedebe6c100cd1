//! The data path, both ways (RFC 8656 §11-§12): a client's Send indications
//! and ChannelData become a [`PeerRoute`], a peer's datagram gets its
//! ChannelData or Data indication header written in front of it and becomes
//! a [`ClientRoute`]. Nothing is copied or allocated per packet.

use std::net::SocketAddr;
use std::ops::Range;
use std::time::Instant;

use crate::ids::{Client, Family, Via};
use crate::stun::channel_data::{self, ChannelData};
use crate::stun::data_indication;
use crate::stun::message::KNOWN_ATTRIBUTES;
use crate::stun::view::{attr, StunView};

use super::allocation::bound_allocation;
use super::{ClientRoute, PeerRoute, TurnServer};

/// Bytes a shell must leave free in front of a peer's payload for
/// [`TurnServer::handle_peer`] to write a Data indication header (IPv6 peer).
pub const RELAY_HEADROOM: usize = data_indication::MAX_HEADER_LEN;
/// Bytes a shell must leave free after a peer's payload for attribute padding.
pub const RELAY_TAILROOM: usize = 4;
/// The largest payload that still fits in a Data indication.
pub const MAX_RELAY_PAYLOAD: usize = 0xFFFF - RELAY_HEADROOM;

/// `r` moved `by` bytes on: a range within a packet made a range within the buffer holding it.
fn shifted(r: Range<usize>, by: usize) -> Range<usize> {
    r.start + by..r.end + by
}

impl TurnServer {
    /// Handles a datagram from `peer` that arrived on the relay socket bound at
    /// `relay`. The payload is `buf[payload]`; the server writes a ChannelData
    /// or Data indication header in front of it (it needs
    /// [`RELAY_HEADROOM`] bytes there and [`RELAY_TAILROOM`] after) and
    /// returns what to send to which client, as a range within `buf`.
    pub fn handle_peer(
        &mut self,
        now: Instant,
        relay: SocketAddr,
        peer: SocketAddr,
        buf: &mut [u8],
        payload: Range<usize>,
    ) -> Option<ClientRoute> {
        let now = self.time.advance(now);
        let max_bps = self.config.max_bps;
        let Some(alloc) = self.by_relay.get(&relay).and_then(|id| self.allocations.get_mut(id)) else {
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
        if !alloc.to_client_budget.take(now, max_bps, max_bps, len as u64) {
            self.stats.dropped_rate_limited += 1;
            return None;
        }
        let stream = matches!(alloc.client.via, Via::Tcp(_));
        let channel = alloc
            .channel_of_peer
            .get(&peer)
            .filter(|n| alloc.live_channel(**n, now).is_some());
        let client = alloc.client;
        let (headroom, tail) = buf.split_at_mut(start);
        let (header, pad) = if let Some(&number) = channel {
            // Over a stream, ChannelData is padded to four bytes (RFC 8656 §12.5).
            let pad = if stream { data_indication::padding(len) } else { 0 };
            (channel_data::emit_header(number, len, headroom), pad)
        } else {
            let mut tid = [0u8; 12];
            self.rng.fill(&mut tid);
            (data_indication::emit_header(headroom, &tid, peer, len), data_indication::padding(len))
        };
        let (Some(header), Some(padding)) = (header, tail.get_mut(len..len + pad)) else {
            // Unreachable: the room was checked above.
            self.stats.dropped_malformed += 1;
            return None;
        };
        padding.fill(0);
        self.stats.to_client_packets += 1;
        self.stats.to_client_bytes += len as u64;
        Some(ClientRoute { to: client, range: header..end + pad })
    }

    /// A Send indication (RFC 8656 §11.2) in `buf` at `packet`: its DATA goes to its peer.
    pub(super) fn send_indication_to_peer(&mut self, now: Instant, client: Client, v: &StunView<'_>, packet: Range<usize>) -> Option<PeerRoute> {
        // Indications with unknown comprehension-required attributes are discarded (RFC 8489 §7.3.2).
        if v.attributes().any(|a| a.typ < 0x8000 && !KNOWN_ATTRIBUTES.contains(&a.typ)) {
            self.stats.dropped_malformed += 1;
            return None;
        }
        let (Some(peer), Some(data)) = (v.xor_address(attr::XOR_PEER_ADDRESS), v.attributes().find(|a| a.typ == attr::DATA)) else {
            self.stats.dropped_malformed += 1;
            return None;
        };
        let max_bps = self.config.max_bps;
        let Some(a) = bound_allocation(&self.by_client, &mut self.allocations, client).filter(|a| !a.tcp) else {
            self.stats.dropped_no_allocation += 1;
            return None;
        };
        let Some(relay) = a.relay_for(Family::of(peer)).filter(|_| a.permitted(peer.ip(), now)) else {
            self.stats.dropped_no_permission += 1;
            return None;
        };
        let start = data.offset + 4;
        let range = shifted(start..start + data.value.len(), packet.start);
        if !a.to_peer_budget.take(now, max_bps, max_bps, range.len() as u64) {
            self.stats.dropped_rate_limited += 1;
            return None;
        }
        self.stats.to_peer_packets += 1;
        self.stats.to_peer_bytes += data.value.len() as u64;
        Some(PeerRoute { relay, peer, range })
    }

    /// A ChannelData message (RFC 8656 §12.4) in `buf` at `packet`: its data goes to its channel's peer.
    pub(super) fn channel_data_to_peer(&mut self, now: Instant, client: Client, buf: &[u8], packet: Range<usize>) -> Option<PeerRoute> {
        let Some(cd) = buf.get(packet.clone()).and_then(|p| ChannelData::new_checked(p).ok()) else {
            self.stats.dropped_malformed += 1;
            return None;
        };
        let max_bps = self.config.max_bps;
        let Some(a) = bound_allocation(&self.by_client, &mut self.allocations, client) else {
            self.stats.dropped_no_allocation += 1;
            return None;
        };
        let Some(peer) = a.live_channel(cd.number(), now).map(|c| c.peer) else {
            self.stats.dropped_no_allocation += 1;
            return None;
        };
        let Some(relay) = a.relay_for(Family::of(peer)).filter(|_| a.permitted(peer.ip(), now)) else {
            self.stats.dropped_no_permission += 1;
            return None;
        };
        let range = shifted(cd.payload_range(), packet.start);
        if !a.to_peer_budget.take(now, max_bps, max_bps, range.len() as u64) {
            self.stats.dropped_rate_limited += 1;
            return None;
        }
        self.stats.to_peer_packets += 1;
        self.stats.to_peer_bytes += range.len() as u64;
        Some(PeerRoute { relay, peer, range })
    }
}
