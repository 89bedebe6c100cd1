//! Bandwidth allocation for one subscriber, as a pure function
//! ([`allocate`]): which layer of each video leg it gets, or none (paused),
//! so that what it receives fits what can reach it. Degrade, never collapse:
//! lower layers go first, then the least important videos pause; audio is
//! never touched.
//!
//! The rules, with `budget = available − audio` and the video legs in
//! priority order (the caller's order: legs whose layer the subscriber chose
//! by hand first, then publishers in join order):
//!
//! 1. Each leg in turn gets its lowest layer while the running total fits;
//!    from the first that does not fit on, every leg is paused.
//! 2. With what is left, legs go up one layer at a time, in priority order,
//!    round after round (round robin), while the total fits.
//!
//! Hysteresis, so that a constant estimate near an edge does not make it
//! flap: a step *up* from the leg's current state (resuming a paused leg, or
//! a layer above its current one) needs the new total × [`UP_MARGIN_PCT`] /
//! 100 to fit the budget; keeping what it has (or going down) needs only the
//! total to fit. Going down therefore happens at once, going back up needs
//! 15% of headroom.
//!
//! A layer measured at 0 bps above a leg's lowest (the publisher does not
//! send it now) is never chosen; the lowest layer is chosen at its measured
//! rate, 0 included (nothing is known yet, so nothing is paused for it).
//!
//! The rates come from a [`RateMeter`] per published layer: bytes over
//! windows of [`RATE_WINDOW`] on the `now` the SFU is given.

use std::time::{Duration, Instant};

/// What one video leg gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Allocation {
    /// Nothing: the leg forwards no packet.
    Paused,
    /// This layer (index into the leg's layers, lowest first; 0 without simulcast).
    Layer(usize),
}

/// One video leg, as the allocator sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VideoLeg<'a> {
    /// Measured bitrate of each layer it may get, lowest first, in bits per second.
    pub layers: &'a [u64],
    /// What it gets now.
    pub current: Allocation,
    /// Whether a paused leg may resume now (false during the hold after a
    /// pause, see [`RESUME_HOLD`]): if not, it stays paused and takes nothing.
    pub may_resume: bool,
}

/// How long a video the allocator paused stays paused before it may resume,
/// unless what the subscriber may receive grew by the margin to go up since
/// (a cap lifted, an estimate recovered). Each resume costs a keyframe, and a
/// keyframe raises the publisher's measured rate: without a hold, a rate near
/// the edge flapped every 1-2 s in Chromium.
pub const RESUME_HOLD: Duration = Duration::from_secs(5);

/// How much headroom a step up needs, in percent of the new total: 115 means
/// the new total must fit within budget / 1.15.
pub const UP_MARGIN_PCT: u64 = 115;

/// Whether `total` fits `budget`, for a step up (with the margin) or not.
fn fits(total: u64, budget: u64, up: bool) -> bool {
    if up {
        u128::from(total) * u128::from(UP_MARGIN_PCT) <= u128::from(budget) * 100
    } else {
        total <= budget
    }
}

/// Whether getting `to` is a step up from `from`.
fn is_up(from: Allocation, to: usize) -> bool {
    match from {
        Allocation::Paused => true,
        Allocation::Layer(l) => to > l,
    }
}

/// Allocates `available_bps` (the subscriber's egress estimate, capped) among
/// its video `legs` (in priority order, most important first) after its
/// audio (`audio_bps`, always kept). Returns one [`Allocation`] per leg, in
/// the same order. See the module's documentation for the rules.
pub fn allocate(available_bps: u64, audio_bps: u64, legs: &[VideoLeg<'_>]) -> Vec<Allocation> {
    let budget = available_bps.saturating_sub(audio_bps);
    let mut out = vec![Allocation::Paused; legs.len()];
    let mut used: u64 = 0;
    // 1. The lowest layer of each leg in priority order, while it fits.
    for (i, leg) in legs.iter().enumerate() {
        // A leg with no layer (nothing known of it) gets nothing, and takes nothing; so does one held paused.
        let Some(&cost) = leg.layers.first() else { continue };
        if leg.current == Allocation::Paused && !leg.may_resume {
            continue;
        }
        let total = used.saturating_add(cost);
        if !fits(total, budget, is_up(leg.current, 0)) {
            break;
        }
        used = total;
        out[i] = Allocation::Layer(0);
    }
    // 2. Round robin: one layer up per leg per round, while it fits.
    loop {
        let mut progressed = false;
        for (i, leg) in legs.iter().enumerate() {
            let Allocation::Layer(l) = out[i] else { continue };
            // The next layer the publisher sends.
            let Some(next) = (l + 1..leg.layers.len()).find(|&n| leg.layers[n] > 0) else { continue };
            let total = used.saturating_sub(leg.layers[l]).saturating_add(leg.layers[next]);
            if fits(total, budget, is_up(leg.current, next)) {
                used = total;
                out[i] = Allocation::Layer(next);
                progressed = true;
            }
        }
        if !progressed {
            return out;
        }
    }
}

/// The window over which a [`RateMeter`] measures.
pub const RATE_WINDOW: Duration = Duration::from_secs(1);

/// The bitrate of one stream: the bytes recorded over the last full window
/// of about [`RATE_WINDOW`], divided by its length. No allocation, no clock
/// read: time is the `now` given. A stream silent for two windows measures 0
/// ([`RateMeter::bps`]: whether it is sent now), but what it costs when it
/// is sent ([`RateMeter::cost`]) is kept: the windows' rates smoothed (half
/// the last window, half the cost before), so that a keyframe's window does
/// not double it and a publisher's silence (a stall, a frozen tab) does not
/// make its video look free.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RateMeter {
    /// Where the current window started, and the bytes in it so far.
    window: Option<(Instant, u64)>,
    /// The last full window's rate, bits per second.
    bps: u64,
    /// The smoothed rate of the windows that had packets, bits per second.
    cost: u64,
}

impl RateMeter {
    /// `bytes` of one packet at `now`.
    pub fn record(&mut self, now: Instant, bytes: u64) {
        let (start, total) = self.window.get_or_insert((now, 0));
        let elapsed = now.saturating_duration_since(*start);
        if elapsed >= RATE_WINDOW {
            let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX).max(1);
            self.bps = u64::try_from(u128::from(*total) * 8 * 1_000_000_000 / u128::from(nanos)).unwrap_or(u64::MAX);
            // A window stretched by a silence (the stream stalled, then came back) says nothing of its cost.
            if self.bps > 0 && elapsed < 2 * RATE_WINDOW {
                self.cost = if self.cost == 0 { self.bps } else { self.cost / 2 + self.bps / 2 };
            }
            *start = now;
            *total = 0;
        }
        *total = total.saturating_add(bytes);
    }

    /// The rate at `now`, bits per second: 0 before a full window, or after two windows without a packet.
    pub fn bps(&self, now: Instant) -> u64 {
        match self.window {
            Some((start, _)) if now.saturating_duration_since(start) < 2 * RATE_WINDOW => self.bps,
            _ => 0,
        }
    }

    /// What the stream costs when it is sent, bits per second: the smoothed
    /// rate of its windows with packets, kept through silence; 0 before the
    /// first full window.
    pub fn cost(&self) -> u64 {
        self.cost
    }
}

#[cfg(test)]
mod tests {
    use super::Allocation::{Layer, Paused};
    use super::*;

    /// Three simulcast layers: 100, 300 and 1000 kbps.
    const SIM: &[u64] = &[100_000, 300_000, 1_000_000];
    const AUDIO: u64 = 50_000;

    /// Runs the allocator on `n` simulcast legs from `current`, feeding its output back each time.
    fn step(available: u64, current: &mut [Allocation]) {
        let legs: Vec<VideoLeg> = current.iter().map(|c| VideoLeg { layers: SIM, current: *c, may_resume: true }).collect();
        let out = allocate(available, AUDIO, &legs);
        current.copy_from_slice(&out);
    }

    #[test]
    fn the_rate_meter_measures_whole_windows_on_the_time_given() {
        let t0 = crate::time::test_start();
        let mut m = RateMeter::default();
        assert_eq!(m.bps(t0), 0);
        // 200 bytes every 20 ms: 80 kbps.
        for i in 0..=150u64 {
            m.record(t0 + Duration::from_millis(20 * i), 200);
        }
        let now = t0 + Duration::from_millis(3000);
        assert!((79_000..=81_000).contains(&m.bps(now)), "{}", m.bps(now));
        // Silent for two windows: nothing.
        assert_eq!(m.bps(now + 2 * RATE_WINDOW), 0);
    }

    #[test]
    fn plenty_gives_every_leg_its_top_layer() {
        let mut a = [Paused; 3];
        step(10_000_000, &mut a);
        assert_eq!(a, [Layer(2); 3]);
    }

    #[test]
    fn degrades_by_lower_layers_first_then_pauses_the_least_important() {
        let mut a = [Layer(2); 3];
        // Top layers for all cost 3000k: with 2050k, the lowest-priority leg drops first,
        // round robin: [2, 1, 1] = 1600k fits, [2, 2, 1] = 2300k does not.
        step(AUDIO + 2_050_000, &mut a);
        assert_eq!(a, [Layer(2), Layer(1), Layer(1)]);
        step(AUDIO + 900_000, &mut a);
        assert_eq!(a, [Layer(1), Layer(1), Layer(1)], "900k: each at the middle layer");
        step(AUDIO + 500_000, &mut a);
        assert_eq!(a, [Layer(1), Layer(0), Layer(0)], "500k: all at the lowest, the first one up");
        step(AUDIO + 250_000, &mut a);
        assert_eq!(a, [Layer(0), Layer(0), Paused], "250k: the least important pauses first");
        step(AUDIO + 150_000, &mut a);
        assert_eq!(a, [Layer(0), Paused, Paused]);
        step(AUDIO + 50_000, &mut a);
        assert_eq!(a, [Paused; 3], "nothing fits: every video pauses");
    }

    #[test]
    fn audio_is_taken_first_and_never_counted_twice() {
        // Only audio fits: the videos pause, the budget never goes negative.
        let mut a = [Layer(0); 2];
        step(AUDIO, &mut a);
        assert_eq!(a, [Paused; 2]);
        step(0, &mut a);
        assert_eq!(a, [Paused; 2]);
        // Audio alone over the estimate: still no panic, still paused.
        assert_eq!(allocate(10, 1_000_000, &[VideoLeg { layers: SIM, current: Layer(0), may_resume: true }]), vec![Paused]);
    }

    #[test]
    fn resumes_as_the_estimate_recovers() {
        let mut a = [Paused; 3];
        let mut seen = Vec::new();
        for kbps in [0, 150, 300, 500, 1000, 2000, 4000] {
            step(AUDIO + kbps * 1000, &mut a);
            seen.push(a);
        }
        assert_eq!(seen[0], [Paused; 3]);
        assert_eq!(seen[1], [Layer(0), Paused, Paused], "115k of headroom is enough for one");
        assert_eq!(seen[2], [Layer(0), Layer(0), Paused], "300k / 1.15 = 260k: two, not three");
        assert_eq!(seen[3], [Layer(0), Layer(0), Layer(0)]);
        assert_eq!(seen[6], [Layer(2); 3]);
        // Every step only goes up: a recovering estimate never takes anything away.
        for w in seen.windows(2) {
            for (before, after) in w[0].iter().zip(w[1].iter()) {
                let rank = |x: &Allocation| match x {
                    Paused => 0,
                    Layer(l) => l + 1,
                };
                assert!(rank(after) >= rank(before), "{:?} -> {:?}", w[0], w[1]);
            }
        }
    }

    #[test]
    fn a_constant_estimate_near_an_edge_does_not_flap() {
        // Just above what two lowest layers need: the second leg keeps flowing once it flows...
        let mut a = [Layer(0); 3];
        let edge = AUDIO + 200_000 + 5_000;
        for _ in 0..20 {
            step(edge, &mut a);
            assert_eq!(a, [Layer(0), Layer(0), Paused]);
        }
        // ...but a paused leg does not resume with so little headroom.
        let mut b = [Layer(0), Paused, Paused];
        for _ in 0..20 {
            step(edge, &mut b);
            assert_eq!(b, [Layer(0), Paused, Paused]);
        }
        // Measured rates that wobble by 2% across the edge: one step down, then it stays down
        // (resuming needs 15% of headroom), instead of flapping with the wobble.
        let mut c = [Layer(0), Layer(0), Paused];
        let mut changes = 0;
        for i in 0..40u64 {
            let wobble = if i % 2 == 0 { 0 } else { 4_000 };
            let layers = [100_000 + wobble, 300_000, 1_000_000];
            let legs: Vec<VideoLeg> = c.iter().map(|x| VideoLeg { layers: &layers, current: *x, may_resume: true }).collect();
            let out = allocate(AUDIO + 206_000, AUDIO, &legs);
            changes += usize::from(out != c);
            c.copy_from_slice(&out);
        }
        assert_eq!((changes, c), (1, [Layer(0), Paused, Paused]));
        // Layer switches: at 1.1x of what [1, 0] needs, a leg at 1 stays, a leg at 0 does not go up.
        let need = 300_000 + 100_000;
        let legs = [VideoLeg { layers: SIM, current: Layer(1), may_resume: true }, VideoLeg { layers: SIM, current: Layer(0), may_resume: true }];
        assert_eq!(allocate(AUDIO + need * 110 / 100, AUDIO, &legs), vec![Layer(1), Layer(0)]);
        let legs = [VideoLeg { layers: SIM, current: Layer(0), may_resume: true }, VideoLeg { layers: SIM, current: Layer(0), may_resume: true }];
        assert_eq!(allocate(AUDIO + need * 110 / 100, AUDIO, &legs), vec![Layer(0), Layer(0)]);
        assert_eq!(allocate(AUDIO + need * 116 / 100, AUDIO, &legs), vec![Layer(1), Layer(0)]);
    }

    #[test]
    fn a_leg_held_paused_stays_paused_and_takes_nothing() {
        // Plenty for both, but the first is in its hold: it stays paused, the second gets everything.
        let legs = [VideoLeg { layers: SIM, current: Paused, may_resume: false }, VideoLeg { layers: SIM, current: Paused, may_resume: true }];
        assert_eq!(allocate(10_000_000, AUDIO, &legs), vec![Paused, Layer(2)]);
        // A held leg does not stop the legs after it from getting their lowest layers.
        let legs = [VideoLeg { layers: SIM, current: Paused, may_resume: false }, VideoLeg { layers: SIM, current: Layer(0), may_resume: true }];
        assert_eq!(allocate(AUDIO + 150_000, AUDIO, &legs), vec![Paused, Layer(0)]);
    }

    #[test]
    fn the_cost_survives_silence_and_smooths_a_keyframe() {
        let t0 = crate::time::test_start();
        let mut m = RateMeter::default();
        assert_eq!(m.cost(), 0);
        // 100 kbps for 3 s (125 bytes every 10 ms)...
        let mut t = t0;
        for _ in 0..300 {
            m.record(t, 125);
            t += Duration::from_millis(10);
        }
        assert!((99_000..=101_000).contains(&m.cost()), "{}", m.cost());
        // ...then a window with a 25 kB keyframe in it (300 kbps): the cost goes halfway, not threefold.
        m.record(t, 25_000);
        for _ in 0..100 {
            t += Duration::from_millis(10);
            m.record(t, 125);
        }
        assert!(m.cost() < 220_000 && m.cost() > 150_000, "{}", m.cost());
        // Silent for 5 s: it is not sent now, but it still costs what it did.
        t += Duration::from_secs(5);
        assert_eq!(m.bps(t), 0);
        let before = m.cost();
        assert!(before > 150_000);
        // It comes back: the window stretched over the silence does not lower the cost.
        m.record(t, 125);
        t += Duration::from_millis(10);
        m.record(t, 125);
        assert_eq!(m.cost(), before);
    }

    #[test]
    fn single_layer_legs_and_layers_not_sent() {
        // A non-simulcast leg has one layer; a simulcast layer measured at 0 is not sent and not chosen.
        let one = [400_000];
        let no_top = [100_000, 300_000, 0];
        let legs = [VideoLeg { layers: &one, current: Paused, may_resume: true }, VideoLeg { layers: &no_top, current: Paused, may_resume: true }];
        assert_eq!(allocate(10_000_000, 0, &legs), vec![Layer(0), Layer(1)]);
        // Nothing measured yet: the lowest layer, nothing paused.
        let unknown = [0, 0, 0];
        let legs = [VideoLeg { layers: &unknown, current: Paused, may_resume: true }; 4];
        assert_eq!(allocate(AUDIO, AUDIO, &legs), vec![Layer(0); 4]);
        // A leg with no layer at all is paused; the others go on.
        let legs = [VideoLeg { layers: &[], current: Layer(0), may_resume: true }, VideoLeg { layers: &one, current: Layer(0), may_resume: true }];
        assert_eq!(allocate(10_000_000, 0, &legs), vec![Paused, Layer(0)]);
    }
}
