//! One deadline per participant, in a keyed min-heap: setting a deadline
//! that did not move costs nothing, one that moved is re-placed in
//! O(log n), and the earliest is read in O(1). No stale entries pile up,
//! however often a participant is driven.

use std::time::Instant;

use crate::hash::{self, Map};
use crate::ids::ConnId;
use crate::rng::Seed;

/// Deadlines keyed by participant.
#[derive(Debug)]
pub(super) struct Deadlines {
    /// A binary min-heap on the instant.
    heap: Vec<(Instant, ConnId)>,
    /// Where each participant's entry is in `heap`.
    index: Map<ConnId, usize>,
}

impl Deadlines {
    /// No deadlines.
    pub(super) fn new(seed: &Seed) -> Self {
        Deadlines { heap: Vec::new(), index: Map::with_hasher(hash::hasher(seed)) }
    }

    /// The earliest deadline and its participant.
    pub(super) fn first(&self) -> Option<(Instant, ConnId)> {
        self.heap.first().copied()
    }

    /// `conn`'s deadline, if it has one.
    pub(super) fn get(&self, conn: ConnId) -> Option<Instant> {
        self.index.get(&conn).and_then(|&i| self.heap.get(i)).map(|e| e.0)
    }

    /// Sets `conn`'s deadline to `at`.
    pub(super) fn set(&mut self, conn: ConnId, at: Instant) {
        match self.index.get(&conn).copied() {
            Some(i) => {
                let Some(old) = self.heap.get(i).map(|e| e.0) else { return };
                if old == at {
                    return;
                }
                self.heap[i].0 = at;
                if at < old {
                    self.sift_up(i);
                } else {
                    self.sift_down(i);
                }
            }
            None => {
                self.heap.push((at, conn));
                let i = self.heap.len() - 1;
                self.index.insert(conn, i);
                self.sift_up(i);
            }
        }
    }

    /// Removes `conn`'s deadline, if any.
    pub(super) fn remove(&mut self, conn: ConnId) {
        let Some(i) = self.index.remove(&conn) else { return };
        let last = self.heap.len() - 1;
        self.heap.swap(i, last);
        self.heap.pop();
        if i < self.heap.len() {
            self.index.insert(self.heap[i].1, i);
            self.sift_down(i);
            self.sift_up(i);
        }
    }

    fn sift_up(&mut self, mut i: usize) {
        while i > 0 {
            let parent = (i - 1) / 2;
            if self.heap[parent] <= self.heap[i] {
                break;
            }
            self.swap(i, parent);
            i = parent;
        }
    }

    fn sift_down(&mut self, mut i: usize) {
        loop {
            let (l, r) = (2 * i + 1, 2 * i + 2);
            let mut least = i;
            if l < self.heap.len() && self.heap[l] < self.heap[least] {
                least = l;
            }
            if r < self.heap.len() && self.heap[r] < self.heap[least] {
                least = r;
            }
            if least == i {
                return;
            }
            self.swap(i, least);
            i = least;
        }
    }

    fn swap(&mut self, a: usize, b: usize) {
        self.heap.swap(a, b);
        self.index.insert(self.heap[a].1, a);
        self.index.insert(self.heap[b].1, b);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::time::Duration;

    #[test]
    fn one_entry_per_participant_and_the_earliest_first() {
        let t0 = crate::time::test_start();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let mut d = Deadlines::new(&[1; 32]);
        d.set(ConnId(1), ms(30));
        d.set(ConnId(2), ms(10));
        d.set(ConnId(3), ms(20));
        for _ in 0..100 {
            d.set(ConnId(1), ms(30));
        }
        assert_eq!(d.heap.len(), 3);
        assert_eq!(d.first(), Some((ms(10), ConnId(2))));
        d.set(ConnId(2), ms(40));
        assert_eq!(d.first(), Some((ms(20), ConnId(3))));
        d.remove(ConnId(3));
        assert_eq!(d.first(), Some((ms(30), ConnId(1))));
        assert_eq!(d.get(ConnId(2)), Some(ms(40)));
        assert_eq!(d.get(ConnId(3)), None);
    }

    proptest! {
        /// Whatever the sets and removes, `first` is the least live deadline
        /// and every participant has at most one entry.
        #[test]
        fn first_is_the_least_live_deadline(ops in proptest::collection::vec((0u64..8, proptest::option::of(0u64..50)), 0..200)) {
            let t0 = crate::time::test_start();
            let mut d = Deadlines::new(&[2; 32]);
            let mut model = std::collections::BTreeMap::new();
            for (c, at) in ops {
                match at {
                    Some(ms) => {
                        d.set(ConnId(c), t0 + Duration::from_millis(ms));
                        model.insert(c, ms);
                    }
                    None => {
                        d.remove(ConnId(c));
                        model.remove(&c);
                    }
                }
                prop_assert_eq!(d.heap.len(), model.len());
                let least = model.values().min().map(|ms| t0 + Duration::from_millis(*ms));
                prop_assert_eq!(d.first().map(|f| f.0), least);
                for (c, ms) in &model {
                    prop_assert_eq!(d.get(ConnId(*c)), Some(t0 + Duration::from_millis(*ms)));
                }
            }
        }
    }
}
