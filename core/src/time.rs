//! Time as the core sees it: only what it is given.

use std::time::{Duration, Instant};

/// Derives unix time from the `Instant`s the core is fed, given one reading
/// of both at construction (the core never reads a clock itself).
#[derive(Debug, Clone, Copy)]
pub struct WallClock {
    start: Instant,
    unix_at_start: u64,
}

impl WallClock {
    /// `unix_at_start` is the unix time, in seconds, at `start`.
    pub fn new(start: Instant, unix_at_start: u64) -> Self {
        WallClock { start, unix_at_start }
    }

    /// Unix seconds at `now`; an instant before `start` counts as `start`.
    pub fn unix(&self, now: Instant) -> u64 {
        self.unix_at_start + now.saturating_duration_since(self.start).as_secs()
    }
}

/// A monotonic view of fed timestamps: time that goes backwards is ignored.
#[derive(Debug, Clone, Copy)]
pub struct Monotonic {
    last: Instant,
}

impl Monotonic {
    /// Starts at `now`.
    pub fn new(now: Instant) -> Self {
        Monotonic { last: now }
    }

    /// `now`, or the latest time seen if `now` is earlier.
    pub fn advance(&mut self, now: Instant) -> Instant {
        if now > self.last {
            self.last = now;
        }
        self.last
    }

    /// The latest time seen.
    pub fn now(&self) -> Instant {
        self.last
    }
}

/// Seconds as a `Duration`, for readable constants.
pub const fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// The one `Instant` the core's own tests start from. `std` has no way to make
/// an `Instant` but reading the clock; tests read it once, here, and then only
/// add simulated durations to it. Library code never calls this.
#[cfg(test)]
pub(crate) fn test_start() -> Instant {
    Instant::now()
}
