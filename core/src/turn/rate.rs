//! Token buckets for the TURN server's rate limits: bytes per second per
//! allocation and direction (`max_bps`, coturn's `max-bps`), and 401 answers
//! per second per source address (so the server cannot be made to send
//! challenges at line rate toward a spoofed victim). Pure arithmetic on the
//! time given; no allocation.

use std::time::{Duration, Instant};

/// A bucket of `rate` tokens per second, holding at most `burst`.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Bucket {
    tokens: u64,
    /// When the tokens were last counted (`None`: never used, full).
    at: Option<Instant>,
}

impl Bucket {
    /// Takes `n` tokens if there are that many; false (taking none) if not.
    pub fn take(&mut self, now: Instant, rate: u64, burst: u64, n: u64) -> bool {
        if rate == 0 {
            return true;
        }
        match self.at {
            None => {
                self.tokens = burst;
                self.at = Some(now);
            }
            Some(at) => {
                let elapsed = now.saturating_duration_since(at).as_micros();
                let refill = u64::try_from(elapsed.saturating_mul(u128::from(rate)) / 1_000_000).unwrap_or(u64::MAX);
                if refill > 0 {
                    let topped = self.tokens.saturating_add(refill);
                    let full = topped >= burst;
                    self.tokens = topped.min(burst);
                    // Keep the fraction of a token earned since: advance by what was credited, unless full.
                    let credited = Duration::from_micros(refill.saturating_mul(1_000_000) / rate);
                    self.at = Some(if full { now } else { at + credited });
                }
            }
        }
        if self.tokens >= n {
            self.tokens -= n;
            true
        } else {
            false
        }
    }
}

/// 401 answers allowed per second per source address, and their burst: enough for a NAT full of clients
/// starting at once, while a spoofed flood toward one victim gets at most ~9 KB/s of answers.
pub(super) const CHALLENGES_PER_SECOND: u64 = 100;
pub(super) const CHALLENGE_BURST: u64 = 200;
/// Slots of the challenge table: addresses share a slot by hash, so it never grows.
pub(super) const CHALLENGE_SLOTS: usize = 4096;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_allows_its_rate_and_burst_and_keeps_fractions() {
        let t0 = crate::time::test_start();
        let mut b = Bucket::default();
        // Full at first: a burst of 1,000 bytes at 1,000 bytes/s.
        assert!(b.take(t0, 1000, 1000, 600));
        assert!(b.take(t0, 1000, 1000, 400));
        assert!(!b.take(t0, 1000, 1000, 1));
        // 1 ms earns one byte; a thousand 1 ms steps earn a thousand, fractions kept.
        let mut got = 0;
        for ms in 1..=1000u64 {
            if b.take(t0 + Duration::from_millis(ms), 1000, 1000, 1) {
                got += 1;
            }
        }
        assert_eq!(got, 1000);
        // Steps shorter than one token's worth still add up.
        let mut b = Bucket::default();
        assert!(b.take(t0, 10, 10, 10));
        let mut got = 0;
        for us in (0..=1_000_000u64).step_by(1000) {
            got += u64::from(b.take(t0 + Duration::from_micros(us), 10, 10, 1));
        }
        assert_eq!(got, 10, "10 per second over one second in 1 ms steps");
        // Time going backwards gives nothing and breaks nothing.
        assert!(!b.take(t0, 10, 10, 1));
        // No rate: no limit.
        assert!(Bucket::default().take(t0, 0, 0, u64::MAX));
    }
}
