//! A small reorder buffer keyed by extended sequence number: packets go in in
//! arrival order and come out in sequence order, each with a flag saying
//! whether packets are missing before it.
//!
//! A missing packet is waited for until the buffer holds `capacity` packets
//! or the oldest held packet has waited `max_wait` (by arrival times, which
//! are the only clock here); then it is given up as lost. Memory is bounded
//! by `capacity` packets of at most `MAX_PAYLOAD` bytes each.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// A packet held for recording, its payload copied out of the caller's buffer.
#[derive(Debug, Clone)]
pub(crate) struct Held {
    /// Extended sequence number.
    pub seq: u64,
    /// Unwrapped RTP timestamp.
    pub ts: i64,
    /// RTP marker bit.
    pub marker: bool,
    /// RTP payload.
    pub payload: Vec<u8>,
    /// When it arrived.
    pub arrival: Instant,
}

/// What became of a pushed packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Push {
    /// Held for release in order.
    Held,
    /// Already held, or already released or given up: a duplicate or a packet too late to use.
    Stale,
}

/// The buffer.
#[derive(Debug)]
pub(crate) struct Reorder {
    /// The next sequence number to release (u128 so that u64::MAX + 1 exists).
    next: Option<u128>,
    held: BTreeMap<u64, Held>,
    capacity: usize,
    max_wait: Duration,
    latest: Option<Instant>,
    /// Arrival of the first packet: the wait for the stream's start runs from it.
    first_arrival: Option<Instant>,
    /// Sequence numbers given up as lost so far.
    pub lost: u64,
}

impl Reorder {
    pub(crate) fn new(capacity: usize, max_wait: Duration) -> Self {
        Reorder { next: None, held: BTreeMap::new(), capacity: capacity.max(1), max_wait, latest: None, first_arrival: None, lost: 0 }
    }

    pub(crate) fn push(&mut self, packet: Held) -> Push {
        self.latest = Some(self.latest.map_or(packet.arrival, |l| l.max(packet.arrival)));
        self.first_arrival.get_or_insert(packet.arrival);
        let late = self.next.is_some_and(|next| u128::from(packet.seq) < next);
        if late || self.held.contains_key(&packet.seq) {
            return Push::Stale;
        }
        self.held.insert(packet.seq, packet);
        Push::Held
    }

    /// The next packet in order, with whether a gap precedes it. With `flush`,
    /// nothing more will come, so every gap is given up at once.
    ///
    /// The first packet is not released at once either: the stream's first
    /// packets may arrive out of order too, so the buffer waits as it would
    /// for a gap before it decides where the stream starts.
    pub(crate) fn pop(&mut self, flush: bool) -> Option<(Held, bool)> {
        let (&first, oldest) = self.held.first_key_value()?;
        let in_order = self.next == Some(u128::from(first));
        if !in_order {
            let since = if self.next.is_none() { self.first_arrival } else { Some(oldest.arrival) };
            let waited = match (self.latest, since) {
                (Some(latest), Some(since)) => latest.saturating_duration_since(since),
                _ => Duration::ZERO,
            };
            let full = self.held.len() >= self.capacity;
            if !(flush || full || waited >= self.max_wait) {
                return None;
            }
        }
        let gap = match self.next {
            Some(next) if !in_order => {
                let missing = u64::try_from(u128::from(first).saturating_sub(next)).unwrap_or(u64::MAX);
                self.lost = self.lost.saturating_add(missing);
                true
            }
            _ => false,
        };
        let (_, packet) = self.held.pop_first()?;
        self.next = Some(u128::from(first) + 1);
        Some((packet, gap))
    }

    /// Number of packets held.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.held.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(seq: u64, at: Instant) -> Held {
        Held { seq, ts: 0, marker: false, payload: vec![seq as u8], arrival: at }
    }

    fn drain(r: &mut Reorder, flush: bool) -> Vec<(u64, bool)> {
        std::iter::from_fn(|| r.pop(flush)).map(|(p, gap)| (p.seq, gap)).collect()
    }

    #[test]
    fn reorders_and_drops_duplicates() {
        let t = crate::time::test_start();
        let mut r = Reorder::new(8, Duration::from_millis(100));
        assert_eq!(r.push(held(10, t)), Push::Held);
        assert_eq!(r.push(held(9, t)), Push::Held);
        assert_eq!(drain(&mut r, false), [], "waits to see where the stream starts");
        assert_eq!(r.push(held(10, t)), Push::Stale, "duplicate before anything was released");
        r.push(held(8, t + Duration::from_millis(100)));
        assert_eq!(drain(&mut r, false), [(8, false), (9, false), (10, false)]);
        let t = t + Duration::from_millis(100);
        assert_eq!(r.push(held(12, t)), Push::Held);
        assert_eq!(drain(&mut r, false), [], "waits for 11");
        assert_eq!(r.push(held(12, t)), Push::Stale, "duplicate while held");
        assert_eq!(r.push(held(11, t)), Push::Held);
        assert_eq!(drain(&mut r, false), [(11, false), (12, false)]);
        assert_eq!(r.push(held(11, t)), Push::Stale, "duplicate after release");
        assert_eq!(r.lost, 0);
    }

    #[test]
    fn gives_up_on_a_gap_by_time() {
        let t = crate::time::test_start();
        let mut r = Reorder::new(100, Duration::from_millis(100));
        r.push(held(1, t));
        r.push(held(3, t + Duration::from_millis(100)));
        assert_eq!(drain(&mut r, false), [(1, false)]);
        r.push(held(4, t + Duration::from_millis(150)));
        assert_eq!(drain(&mut r, false), []);
        r.push(held(5, t + Duration::from_millis(200)));
        assert_eq!(drain(&mut r, false), [(3, true), (4, false), (5, false)]);
        assert_eq!(r.lost, 1);
        assert_eq!(r.push(held(2, t)), Push::Stale, "too late");
    }

    #[test]
    fn gives_up_on_a_gap_when_full_and_survives_huge_jumps() {
        let t = crate::time::test_start();
        let mut r = Reorder::new(4, Duration::from_secs(10));
        r.push(held(0, t));
        assert_eq!(drain(&mut r, true), [(0, false)]);
        for s in [u64::MAX - 5, 1 << 40, 1 << 50] {
            r.push(held(s, t));
        }
        assert_eq!(drain(&mut r, false), []);
        r.push(held(1 << 41, t));
        assert_eq!(r.len(), 4);
        assert_eq!(drain(&mut r, false), [(1 << 40, true)], "one given up, then there is room to wait again");
        assert_eq!(drain(&mut r, true), [(1 << 41, true), (1 << 50, true), (u64::MAX - 5, true)]);
        assert_eq!(r.push(held(u64::MAX, t)), Push::Held);
        assert_eq!(drain(&mut r, true), [(u64::MAX, true)]);
        assert_eq!(r.push(held(u64::MAX, t)), Push::Stale, "the end of the sequence space is still a duplicate");
    }
}
