//! A timer queue: a min-heap of deadlines with lazy cancellation.
//!
//! Each timed object (allocation, permission, channel) has at most one entry.
//! When an entry fires, its owner compares it with the object's current
//! deadline: a refreshed object is pushed again, a deleted one is ignored. So
//! a refresh costs nothing here, and `next()` is O(1), never a scan.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

/// A min-heap of `(deadline, key)`.
#[derive(Debug)]
pub struct TimerQueue<K: Ord> {
    heap: BinaryHeap<Reverse<(Instant, K)>>,
}

impl<K: Ord> Default for TimerQueue<K> {
    fn default() -> Self {
        TimerQueue { heap: BinaryHeap::new() }
    }
}

impl<K: Ord> TimerQueue<K> {
    /// Schedules `key` at `at`.
    pub fn push(&mut self, at: Instant, key: K) {
        self.heap.push(Reverse((at, key)));
    }

    /// The earliest deadline, if any.
    pub fn next(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((at, _))| *at)
    }

    /// Removes and returns one key whose deadline is at or before `now`.
    pub fn pop_due(&mut self, now: Instant) -> Option<K> {
        if self.next()? <= now {
            self.heap.pop().map(|Reverse((_, k))| k)
        } else {
            None
        }
    }

    /// Number of entries, live or stale.
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}
