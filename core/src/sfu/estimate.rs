//! Each subscriber's egress bandwidth estimate: how many bits per second can
//! reach it, which [`super::allocate`] then shares among its videos.
//!
//! str0m's own estimator (its delay-based GCC, `RtcConfig::enable_bwe`) is
//! off: it comes with str0m's leaky-bucket pacer, which releases one packet
//! per timeout, so every forwarded packet cost a full `Rtc::handle_timeout`
//! (7–9 µs at 16 participants in the lab, most of the SFU's time), and over
//! loaded loopback it settled at 375–700 kbps, pausing videos a link would
//! carry. Without it str0m sends what it is given at once, and still keeps
//! the transport-wide sequence numbers and the receiver's TWCC feedback:
//! its per-second egress loss (`PeerStats::egress_loss_fraction`) is what
//! this estimate is made from. A loss-based controller in the manner of
//! GCC's loss-based part (RFC draft-ietf-rmcat-gcc §6), with two changes for
//! an SFU that cannot send padding to probe:
//!
//! - Heavy loss (over [`HIGH_LOSS`]) means the link is full: the estimate
//!   drops at once to what got through (the payload rate sent × (1 − loss)),
//!   less a margin, so the allocation fits the link at the next step instead
//!   of halving its way down.
//! - Light loss (under [`LOW_LOSS`]) lets it grow by [`GROWTH_PER_SEC`], up
//!   to twice what is sent (or [`START_BPS`], whichever is more): growth is
//!   bounded by evidence. The allocator resumes a video only with 15% of
//!   headroom, so this growth is the probe; after a cut the next growth waits
//!   [`HOLD`], doubling (up to [`MAX_HOLD`]) while cuts keep following
//!   probes, so a link at its limit sees a probe's loss rarely.
//! - In between, it holds.
//!
//! It starts at [`START_BPS`], so a new call forwards what it is given and
//! degrades on evidence, instead of starting paused. A receiver that says
//! how much it can take (REMB) caps it. Delay (RTT growth) is not used yet.
//! Pure: time is the `now` given.

use std::time::{Duration, Instant};

/// Where every estimate starts, and the least it may grow to without loss, bits per second.
pub const START_BPS: u64 = 5_000_000;
/// The least estimate: below it, loss is not the SFU's doing (audio always goes anyway).
pub const MIN_BPS: u64 = 30_000;
/// Loss above which the link is taken as full.
pub const HIGH_LOSS: f32 = 0.10;
/// Loss below which the estimate may grow.
pub const LOW_LOSS: f32 = 0.02;
/// Growth per second of light loss, in percent.
pub const GROWTH_PER_SEC: u64 = 8;
/// The wait before growing again after a cut, the first time.
pub const HOLD: Duration = Duration::from_secs(4);
/// The longest wait before growing again after repeated cuts.
pub const MAX_HOLD: Duration = Duration::from_secs(64);
/// A cut this long after the last one starts the hold from [`HOLD`] again.
const CALM: Duration = Duration::from_secs(120);

/// One subscriber's egress estimate. See the module's documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EgressEstimate {
    bps: u64,
    /// When the last report was taken (growth is per second of time).
    last_report: Option<Instant>,
    /// No growth before this (after a cut).
    hold_until: Option<Instant>,
    /// The hold after the next cut.
    hold: Duration,
    /// When the last cut was.
    last_cut: Option<Instant>,
    /// The receiver's own limit (REMB), if it sent one.
    remb: Option<u64>,
}

impl Default for EgressEstimate {
    fn default() -> Self {
        EgressEstimate { bps: START_BPS, last_report: None, hold_until: None, hold: HOLD, last_cut: None, remb: None }
    }
}

impl EgressEstimate {
    /// The estimate, bits per second.
    pub fn bps(&self) -> u64 {
        self.remb.map_or(self.bps, |r| self.bps.min(r.max(MIN_BPS)))
    }

    /// A loss report at `now`: `loss` (0..=1) of what was sent over the last
    /// interval, while `sent_bps` was being sent. Returns whether the
    /// estimate changed.
    pub fn on_loss(&mut self, now: Instant, loss: f32, sent_bps: u64) -> bool {
        let before = self.bps;
        let elapsed = self.last_report.map_or(Duration::ZERO, |t| now.saturating_duration_since(t)).min(Duration::from_secs(2));
        self.last_report = Some(now);
        let loss = if loss.is_finite() { loss.clamp(0.0, 1.0) } else { 0.0 };
        if loss > HIGH_LOSS {
            // What got through, less a 5% margin; never up.
            let through = (sent_bps as f64 * f64::from(1.0 - loss) * 0.95) as u64;
            self.bps = self.bps.min(through).max(MIN_BPS);
            let repeated = self.last_cut.is_some_and(|t| now.saturating_duration_since(t) < CALM);
            self.hold = if repeated { (self.hold * 2).min(MAX_HOLD) } else { HOLD };
            self.hold_until = Some(now + self.hold);
            self.last_cut = Some(now);
        } else if loss < LOW_LOSS && self.hold_until.is_none_or(|t| now >= t) {
            let ceiling = START_BPS.max(sent_bps.saturating_mul(2));
            let grown = self.bps.saturating_add(self.bps * GROWTH_PER_SEC * elapsed.as_millis() as u64 / 100_000);
            // Never lowered by the ceiling: only loss lowers it.
            self.bps = self.bps.max(grown.min(ceiling));
        }
        self.bps != before
    }

    /// The receiver's own estimate (REMB): the estimate never exceeds it.
    pub fn on_remb(&mut self, bps: u64) -> bool {
        let before = self.bps();
        self.remb = Some(bps);
        self.bps() != before
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reports once a second from `t` for `secs` seconds, the link carrying
    /// `capacity` and the allocator sending `send(estimate)`; returns the
    /// estimates and the total loss fraction.
    fn run(e: &mut EgressEstimate, t: &mut Instant, secs: u32, capacity: u64, send: impl Fn(u64) -> u64) -> (Vec<u64>, f64) {
        let (mut sent_total, mut lost_total) = (0u64, 0u64);
        let mut seen = Vec::new();
        for _ in 0..secs {
            *t += Duration::from_secs(1);
            let sent = send(e.bps());
            let lost = sent.saturating_sub(capacity);
            sent_total += sent;
            lost_total += lost;
            let loss = if sent == 0 { 0.0 } else { lost as f32 / sent as f32 };
            e.on_loss(*t, loss, sent);
            seen.push(e.bps());
        }
        (seen, lost_total as f64 / sent_total.max(1) as f64)
    }

    /// What an allocator sends: the largest number of 250 kbps videos (plus 50k of audio) that fits.
    fn videos(estimate: u64) -> u64 {
        50_000 + estimate.saturating_sub(50_000) / 250_000 * 250_000
    }

    #[test]
    fn starts_high_and_drops_to_the_link_at_the_first_heavy_loss() {
        let t0 = crate::time::test_start();
        let mut e = EgressEstimate::default();
        assert_eq!(e.bps(), START_BPS);
        assert!(e.on_loss(t0, 0.5, 2_000_000));
        // Half of 2 Mbps got through: 1 Mbps less 5%.
        assert_eq!(e.bps(), 950_000);
        // Moderate loss holds; light loss during the hold holds.
        assert!(!e.on_loss(t0 + Duration::from_secs(1), 0.05, 950_000));
        assert!(!e.on_loss(t0 + Duration::from_secs(1), 0.0, 950_000));
        // After the hold, light loss grows it 8% a second (of the time since the last report).
        assert!(!e.on_loss(t0 + HOLD - Duration::from_millis(1), 0.0, 950_000));
        assert!(e.on_loss(t0 + HOLD + Duration::from_millis(999), 0.0, 950_000));
        assert_eq!(e.bps(), 950_000 + 950_000 * 8 / 100);
    }

    #[test]
    fn growth_is_bounded_by_what_is_sent() {
        let t0 = crate::time::test_start();
        let mut e = EgressEstimate::default();
        let mut t = t0;
        // Sending 3 Mbps with no loss: up to 6 Mbps, not beyond.
        let (seen, loss) = run(&mut e, &mut t, 30, u64::MAX, |_| 3_000_000);
        assert_eq!(loss, 0.0);
        assert_eq!(*seen.last().unwrap(), 6_000_000);
        // Sending little: never below START for lack of use, never above it either.
        let mut e = EgressEstimate::default();
        run(&mut e, &mut t, 30, u64::MAX, |_| 100_000);
        assert_eq!(e.bps(), START_BPS);
    }

    #[test]
    fn on_a_link_at_its_limit_probes_rarely_and_loses_little() {
        let t0 = crate::time::test_start();
        let mut e = EgressEstimate::default();
        let mut t = t0;
        // A 600 kbps link, videos of 250 kbps: two fit (550k), three (800k) do not.
        let (seen, _) = run(&mut e, &mut t, 5, 600_000, videos);
        assert!(seen[0] < 600_000, "down to the link at the first report: {seen:?}");
        // Over ten minutes, the probes for a third video lose well under 1%.
        let (seen, loss) = run(&mut e, &mut t, 600, 600_000, videos);
        assert!(loss < 0.01, "lost {loss}");
        let cuts = seen.windows(2).filter(|w| w[1] < w[0]).count();
        assert!(cuts <= 25, "{cuts} cuts in 600 s");
        assert!(seen.iter().all(|&b| b >= 500_000), "never below the two videos that fit: {:?}", seen.iter().min());
    }

    #[test]
    fn recovers_when_the_link_does() {
        let t0 = crate::time::test_start();
        let mut e = EgressEstimate::default();
        let mut t = t0;
        run(&mut e, &mut t, 20, 300_000, videos);
        assert!(e.bps() < 600_000);
        // The link opens up: the estimate climbs back to what everything needs (4 videos, 1.05 Mbps)
        // within the longest hold plus the growth time.
        let (seen, loss) = run(&mut e, &mut t, 60, u64::MAX, |b| videos(b).min(1_050_000));
        assert_eq!(loss, 0.0);
        assert!(*seen.last().unwrap() >= 1_050_000 * 115 / 100, "{seen:?}");
    }

    #[test]
    fn remb_caps_and_nonsense_is_ignored() {
        let t0 = crate::time::test_start();
        let mut e = EgressEstimate::default();
        assert!(e.on_remb(400_000));
        assert_eq!(e.bps(), 400_000);
        e.on_remb(0);
        assert_eq!(e.bps(), MIN_BPS);
        e.on_remb(u64::MAX);
        assert_eq!(e.bps(), START_BPS);
        e.on_loss(t0, f32::NAN, 1_000_000);
        e.on_loss(t0, -3.0, 1_000_000);
        assert_eq!(e.bps(), START_BPS);
        e.on_loss(t0, 7.0, 1_000_000);
        assert_eq!(e.bps(), MIN_BPS, "loss over 1 counts as all lost");
    }
}
