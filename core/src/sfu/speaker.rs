//! Who is speaking in a room, from the audio level each publisher's packets
//! carry (RFC 6464, str0m's `audio_level`: 0 dBov loudest, -127 silence).
//!
//! Each participant counts its loud packets (at least [`LOUD_DBOV`]) in
//! [`BUCKETS`] buckets of [`SPEAKER_INTERVAL`]; every interval the room's
//! loudest participant over that window (with at least [`MIN_LOUD`] loud
//! packets) is a candidate, and becomes the speaker once it led for
//! [`STREAK`] decisions in a row, so a cough or a click does not move the
//! room's attention. Silence keeps the last speaker. Work per audio packet:
//! O(1), plus one O(room) decision per interval.

use std::time::{Duration, Instant};

use super::{Sfu, SfuMessage};
use crate::ids::{ConnId, MediaRole};

/// How often a room's speaker is decided.
pub const SPEAKER_INTERVAL: Duration = Duration::from_millis(300);
/// Buckets of loud-packet counts: the window is this many intervals.
pub const BUCKETS: usize = 5;
/// A packet at least this loud (dBov) counts as speech.
pub const LOUD_DBOV: i8 = -50;
/// The fewest loud packets in the window for a participant to be speaking.
pub const MIN_LOUD: u32 = 2;
/// Decisions in a row a new participant must lead before it is the speaker.
pub const STREAK: u32 = 2;

/// One participant's recent loud packets.
#[derive(Debug, Default, Clone)]
pub(super) struct Speech {
    /// Loud packets per interval, indexed by interval number modulo [`BUCKETS`].
    buckets: [u32; BUCKETS],
    /// The interval number of the newest bucket.
    newest: u64,
}

impl Speech {
    /// Moves the window to interval `at`, emptying the buckets it passed.
    fn roll(&mut self, at: u64) {
        if at <= self.newest {
            return;
        }
        for i in (self.newest + 1)..=at.min(self.newest + BUCKETS as u64) {
            self.buckets[(i % BUCKETS as u64) as usize] = 0;
        }
        self.newest = at;
    }

    /// Loud packets in the window ending at interval `at`.
    fn score(&mut self, at: u64) -> u32 {
        self.roll(at);
        self.buckets.iter().sum()
    }
}

/// A room's speaker and the one that may take over.
#[derive(Debug, Default, Clone)]
pub(super) struct RoomSpeaker {
    current: Option<ConnId>,
    candidate: Option<(ConnId, u32)>,
    /// The interval number of the last decision.
    decided: u64,
}

impl RoomSpeaker {
    /// The speaker now, if any.
    pub(super) fn current(&self) -> Option<ConnId> {
        self.current
    }
}

impl Sfu {
    /// The interval number of `now`.
    fn interval(&self, now: Instant) -> u64 {
        (now.saturating_duration_since(self.epoch).as_millis() / SPEAKER_INTERVAL.as_millis()) as u64
    }

    /// An audio packet from `from` with audio level `level` (if it carries one).
    pub(super) fn hear(&mut self, now: Instant, from: ConnId, level: Option<i8>) {
        let at = self.interval(now);
        let Some(p) = self.participants.get_mut(&from) else { return };
        p.speech.roll(at);
        if level.is_some_and(|l| l >= LOUD_DBOV) {
            let b = &mut p.speech.buckets[(at % BUCKETS as u64) as usize];
            *b = b.saturating_add(1);
        }
        // A decision is due once per interval per room: only then is the room's name copied.
        let decided = self.speakers.get(p.room.as_str()).map_or(0, |s| s.decided);
        if at > decided {
            let room = p.room.clone();
            self.decide_speaker(at, &room);
        }
    }

    /// Decides the speaker of `room` at interval `at`, and tells the room when it changes.
    fn decide_speaker(&mut self, at: u64, room: &str) {
        let members = self.rooms.get(room).cloned().unwrap_or_default();
        let mut best: Option<(ConnId, u32)> = None;
        for m in &members {
            let Some(p) = self.participants.get_mut(m) else { continue };
            let score = p.speech.score(at);
            if score >= MIN_LOUD && best.is_none_or(|(_, s)| score > s) {
                best = Some((*m, score));
            }
        }
        let s = self.speakers.entry(room.to_owned()).or_default();
        s.decided = at;
        let Some((leader, _)) = best else {
            s.candidate = None;
            return;
        };
        if s.current == Some(leader) {
            s.candidate = None;
            return;
        }
        let streak = match s.candidate {
            Some((c, n)) if c == leader => n + 1,
            _ => 1,
        };
        s.candidate = Some((leader, streak));
        if streak < STREAK {
            return;
        }
        s.current = Some(leader);
        s.candidate = None;
        self.stats.speaker_changes += 1;
        let Some(peer) = self.participants.get(&leader).map(|p| p.label.clone()) else { return };
        for m in members {
            if self.participants.get(&m).is_some_and(|p| p.role == MediaRole::Member) {
                self.signal(m, SfuMessage::Speaker { peer: peer.clone() });
            }
        }
        // Viewers that follow the speaker switch to it.
        self.bind_viewers(self.time.now(), room);
    }

    /// Tells a participant that just joined who is speaking, if anyone.
    pub(super) fn tell_speaker(&mut self, conn: ConnId, room: &str) {
        let current = self.speakers.get(room).and_then(|s| s.current);
        if let Some(peer) = current.and_then(|c| self.participants.get(&c)).map(|p| p.label.clone()) {
            self.signal(conn, SfuMessage::Speaker { peer });
        }
    }

    /// `conn` left `room`: it is no longer its speaker; the room's state goes with its last member.
    pub(super) fn forget_speaker(&mut self, conn: ConnId, room: &str) {
        if !self.rooms.contains_key(room) {
            self.speakers.remove(room);
            return;
        }
        if let Some(s) = self.speakers.get_mut(room) {
            if s.current == Some(conn) {
                s.current = None;
            }
            if s.candidate.is_some_and(|(c, _)| c == conn) {
                s.candidate = None;
            }
        }
    }
}
