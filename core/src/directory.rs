//! Where SFU rooms live: which worker hosts each room.
//!
//! A shell that runs one engine per worker thread puts each SFU room on one
//! worker (so a room's forwarding never crosses threads) and sends every
//! participant of that room there. The decision is made here, in one place,
//! as pure logic: [`place`] chooses a worker for a new room from the workers'
//! loads, and a [`RoomDirectory`] remembers the choice while the room has
//! participants. [`LocalDirectory`] keeps it in memory for one machine; the
//! trait is the seam for a directory shared by several machines (a later
//! issue backs it with Redis: `place_room` is a get-or-set-if-absent, the
//! loads a counter per worker).
//!
//! Load is counted in participants. A room stays where it was placed until
//! its last participant leaves, however the loads change meanwhile. Room
//! names come from clients: they are kept in a `BTreeMap` (no hash to flood,
//! no randomness), and nothing here is on the media path.

use std::collections::BTreeMap;

/// A worker, numbered from 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WorkerId(pub usize);

/// The worker for a new room: the one with the fewest participants, the
/// lowest-numbered among equals. `loads[i]` is worker `i`'s participants.
/// `None` without workers.
pub fn place(loads: &[u64]) -> Option<WorkerId> {
    loads.iter().enumerate().min_by_key(|&(i, l)| (*l, i)).map(|(i, _)| WorkerId(i))
}

/// Which worker hosts each room with participants.
pub trait RoomDirectory {
    /// The worker hosting `room`, placing it with [`place`] if it has none,
    /// and counts one more participant there. Every participant of a room
    /// gets the same worker while the room has any.
    fn join(&mut self, room: &str) -> WorkerId;
    /// One participant of `room` left; the room is forgotten with its last.
    fn leave(&mut self, room: &str);
    /// The worker hosting `room`, if it has participants.
    fn lookup(&self, room: &str) -> Option<WorkerId>;
    /// Participants per worker.
    fn loads(&self) -> Vec<u64>;
}

/// A [`RoomDirectory`] in memory, for the workers of one process.
#[derive(Debug, Clone)]
pub struct LocalDirectory {
    /// Room → (worker, participants).
    rooms: BTreeMap<String, (WorkerId, u64)>,
    loads: Vec<u64>,
}

impl LocalDirectory {
    /// A directory over `workers` workers (at least one).
    pub fn new(workers: usize) -> Self {
        LocalDirectory { rooms: BTreeMap::new(), loads: vec![0; workers.max(1)] }
    }

    /// Rooms per worker.
    pub fn rooms_per_worker(&self) -> Vec<u64> {
        let mut n = vec![0; self.loads.len()];
        for (w, _) in self.rooms.values() {
            n[w.0] += 1;
        }
        n
    }
}

impl RoomDirectory for LocalDirectory {
    fn join(&mut self, room: &str) -> WorkerId {
        let loads = &self.loads;
        let entry = self.rooms.entry(room.to_string()).or_insert_with(|| (place(loads).unwrap_or(WorkerId(0)), 0));
        entry.1 += 1;
        self.loads[entry.0 .0] += 1;
        entry.0
    }

    fn leave(&mut self, room: &str) {
        let Some((w, n)) = self.rooms.get_mut(room) else { return };
        *n -= 1;
        self.loads[w.0] = self.loads[w.0].saturating_sub(1);
        if *n == 0 {
            self.rooms.remove(room);
        }
    }

    fn lookup(&self, room: &str) -> Option<WorkerId> {
        self.rooms.get(room).map(|(w, _)| *w)
    }

    fn loads(&self) -> Vec<u64> {
        self.loads.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_least_loaded_worker_takes_a_new_room() {
        assert_eq!(place(&[]), None);
        assert_eq!(place(&[3, 1, 1]), Some(WorkerId(1)));
        assert_eq!(place(&[0, 0]), Some(WorkerId(0)));
    }

    #[test]
    fn a_room_stays_on_its_worker_until_its_last_participant_leaves() {
        let mut d = LocalDirectory::new(2);
        let a = d.join("a");
        let b = d.join("b");
        assert_ne!(a, b, "two rooms on two idle workers");
        // Room a grows: every participant goes where it is, however loaded.
        for _ in 0..5 {
            assert_eq!(d.join("a"), a);
        }
        assert_eq!(d.loads()[a.0], 6);
        // A new room goes to the lighter worker.
        assert_eq!(d.join("c"), b);
        assert_eq!(d.rooms_per_worker()[b.0], 2);
        for _ in 0..6 {
            d.leave("a");
        }
        assert_eq!(d.lookup("a"), None, "forgotten with its last participant");
        assert_eq!(d.loads()[a.0], 0);
        // Leaving a room that is not there changes nothing.
        d.leave("nowhere");
        assert_eq!(d.loads().iter().sum::<u64>(), 2);
        // Back, it is placed afresh (on the now idle worker).
        assert_eq!(d.join("a"), a);
    }

    #[test]
    fn zero_workers_is_one() {
        let mut d = LocalDirectory::new(0);
        assert_eq!(d.join("r"), WorkerId(0));
    }

    proptest! {
        /// Any sequence of joins and leaves: each room is on one worker while it has participants, the loads
        /// are the participants per worker, and rooms of one participant each never differ by more than one
        /// per worker when they only join.
        #[test]
        fn loads_match_participants(ops in proptest::collection::vec((0u8..8, any::<bool>()), 0..200), workers in 1usize..5) {
            let mut d = LocalDirectory::new(workers);
            let mut members: BTreeMap<u8, u64> = BTreeMap::new();
            let mut home: BTreeMap<u8, WorkerId> = BTreeMap::new();
            for (room, join) in ops {
                let name = format!("r{room}");
                let n = members.entry(room).or_insert(0);
                if join {
                    let w = d.join(&name);
                    if *n > 0 {
                        prop_assert_eq!(Some(&w), home.get(&room));
                    }
                    home.insert(room, w);
                    *n += 1;
                } else if *n > 0 {
                    d.leave(&name);
                    *n -= 1;
                }
                prop_assert_eq!(d.lookup(&name).is_some(), *n > 0);
            }
            let mut want = vec![0u64; workers];
            for (room, n) in &members {
                if *n > 0 {
                    want[home[room].0] += n;
                }
            }
            prop_assert_eq!(d.loads(), want);
        }

        #[test]
        fn single_participant_rooms_spread_evenly(rooms in 1usize..60, workers in 1usize..6) {
            let mut d = LocalDirectory::new(workers);
            for r in 0..rooms {
                d.join(&format!("room{r}"));
            }
            let per = d.rooms_per_worker();
            prop_assert!(per.iter().max().unwrap() - per.iter().min().unwrap() <= 1, "{:?}", per);
        }
    }
}
