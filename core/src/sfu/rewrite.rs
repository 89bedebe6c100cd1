//! The per-subscriber rewrite of a forwarded RTP packet, as a pure function
//! of the leg's state and the packet: [`LegRewrite::rewrite`].
//!
//! Each leg (one track toward one subscriber) numbers its packets from
//! [`FIRST_SEQ`], whatever the publisher's numbers are, so the subscriber's
//! rollover counter starts at 0; it works on str0m's extended (64-bit)
//! sequence numbers, so a publisher's wrap at 65535 is no jump. It maps the
//! publisher's payload types to the subscriber's, and for a simulcast track
//! forwards one layer, switching to the wanted one only at a keyframe of that
//! layer, with the sequence number continuing by one and the timestamp a
//! frame later ([`SWITCH_TS_STEP`]). A leg may be paused (bandwidth): it
//! forwards nothing, and resumes at a keyframe with the sequence number
//! continuing by one (the timestamp runs on if it resumes the same layer,
//! else it moves one frame as at a switch). No allocation.

use str0m::media::{Pt, Rid};

/// The first sequence number sent on a leg.
pub const FIRST_SEQ: u64 = 1000;

/// How far the RTP timestamp moves at a layer switch: one frame at 30 fps
/// of the 90 kHz video clock.
pub const SWITCH_TS_STEP: u32 = 3000;

/// What the rewrite needs of one incoming packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Incoming {
    /// The publisher's payload type.
    pub pt: Pt,
    /// The publisher's extended sequence number.
    pub seq: u64,
    /// The publisher's RTP timestamp.
    pub ts: u32,
    /// The simulcast layer it belongs to (`None` without simulcast).
    pub rid: Option<Rid>,
    /// Whether it starts a keyframe.
    pub keyframe: bool,
}

/// What to do with one packet on one leg.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Not for this leg: another layer, or a payload type the subscriber lacks.
    Skip,
    /// Of the wanted layer, but not a keyframe: skip it and ask the publisher for one.
    AwaitKeyframe,
    /// Send it with these header fields.
    Write {
        /// The subscriber's payload type.
        pt: Pt,
        /// The leg's extended sequence number.
        seq: u64,
        /// The leg's RTP timestamp.
        ts: u32,
        /// Whether this packet switched the leg to another layer (not: resumed the same one).
        switched: bool,
    },
}

/// The rewrite state of one leg.
#[derive(Debug, Clone, Default)]
pub struct LegRewrite {
    /// Payload type mapping, publisher's to subscriber's (`None`: the subscriber has none).
    pts: Vec<(Pt, Option<Pt>)>,
    /// Added to the publisher's extended sequence number; set by the first packet.
    seq_offset: Option<i64>,
    /// Added to the publisher's RTP timestamp (changes at layer switches).
    ts_offset: u32,
    /// The highest sequence number sent, and its timestamp.
    last_out: Option<(u64, u32)>,
    /// Whether the track has simulcast layers.
    simulcast: bool,
    /// The layer forwarded now.
    layer: Option<Rid>,
    /// The layer wanted.
    target: Option<Rid>,
    /// Whether nothing is forwarded (the subscriber's bandwidth does not allow it).
    paused: bool,
    /// Whether the next packet forwarded must be a keyframe (resuming after a pause).
    resuming: bool,
    /// Whether the leg carries another track since its last packet ([`LegRewrite::rebind`]).
    rebound: bool,
}

impl LegRewrite {
    /// A fresh leg; for a simulcast track, wanting layer `target` first.
    pub fn new(target: Option<Rid>, simulcast: bool) -> Self {
        LegRewrite { target, simulcast, ..Self::default() }
    }

    /// The same leg carrying another track from now on (an m-line reused):
    /// toward the subscriber the sequence numbers run on by one and the
    /// timestamp moves a frame, as at a layer switch; video waits for a
    /// keyframe. Payload types are learnt again.
    pub fn rebind(&self, target: Option<Rid>, simulcast: bool, video: bool) -> LegRewrite {
        LegRewrite { target, simulcast, last_out: self.last_out, resuming: video && self.last_out.is_some(), rebound: true, ..Self::default() }
    }

    /// The subscriber's payload type for the publisher's `pt`: `None` if not
    /// learnt yet, `Some(None)` if the subscriber has no match.
    pub fn mapped_pt(&self, pt: Pt) -> Option<Option<Pt>> {
        self.pts.iter().find(|(i, _)| *i == pt).map(|(_, o)| *o)
    }

    /// Records the subscriber's payload type for the publisher's `pt`.
    pub fn learn_pt(&mut self, pt: Pt, out: Option<Pt>) {
        if self.mapped_pt(pt).is_none() {
            self.pts.push((pt, out));
        }
    }

    /// The layer forwarded now.
    pub fn layer(&self) -> Option<Rid> {
        self.layer
    }

    /// The layer wanted.
    pub fn target(&self) -> Option<Rid> {
        self.target
    }

    /// Wants layer `rid` from the next keyframe of it on.
    pub fn set_target(&mut self, rid: Option<Rid>) {
        self.target = rid;
    }

    /// Whether a keyframe is awaited: a layer is wanted that is not the one
    /// forwarded, or the leg resumes after a pause.
    pub fn wants_switch(&self) -> bool {
        !self.paused && (self.resuming || (self.target.is_some() && self.target != self.layer))
    }

    /// Whether the leg is paused.
    pub fn is_paused(&self) -> bool {
        self.paused
    }

    /// Pauses the leg (it forwards nothing), or resumes it from the next keyframe on.
    pub fn set_paused(&mut self, paused: bool) {
        if paused == self.paused {
            return;
        }
        self.paused = paused;
        // Resuming waits for a keyframe (if anything was ever sent; before that, the first packet waits anyway).
        self.resuming = !paused && self.last_out.is_some();
    }

    /// Decides what to do with packet `p` on this leg, and updates the leg.
    /// A packet that is skipped changes nothing.
    pub fn rewrite(&mut self, p: &Incoming) -> Decision {
        if self.paused {
            return Decision::Skip;
        }
        let switch = (self.simulcast && self.layer != p.rid) || self.resuming;
        if switch {
            // Another layer (or resuming): only the one wanted, and from a keyframe on.
            if self.simulcast && self.target != p.rid {
                return Decision::Skip;
            }
            if !p.keyframe {
                return Decision::AwaitKeyframe;
            }
        }
        let Some(Some(pt)) = self.mapped_pt(p.pt) else { return Decision::Skip };
        let seq_in = i64::try_from(p.seq).unwrap_or(i64::MAX);
        // Resuming the layer it had: the same clock, so the timestamp runs on with the time paused.
        let same_layer = self.layer == p.rid && !self.rebound;
        self.rebound = false;
        if switch {
            self.layer = p.rid;
            self.resuming = false;
            match self.last_out {
                Some((seq, ts)) => {
                    // Continuous toward the subscriber: next sequence number, a frame later.
                    let next = i64::try_from(seq).unwrap_or(i64::MAX).saturating_add(1);
                    self.seq_offset = Some(next.saturating_sub(seq_in));
                    if !same_layer {
                        self.ts_offset = ts.wrapping_add(SWITCH_TS_STEP).wrapping_sub(p.ts);
                    }
                }
                None => self.seq_offset = None,
            }
        }
        let offset = match (self.seq_offset, self.last_out) {
            (Some(o), _) => o,
            // The first packet of a rebound leg: continuous with what the leg sent before.
            (None, Some((seq, ts))) => {
                self.ts_offset = ts.wrapping_add(SWITCH_TS_STEP).wrapping_sub(p.ts);
                i64::try_from(seq).unwrap_or(i64::MAX).saturating_add(1).saturating_sub(seq_in)
            }
            (None, None) => i64::try_from(FIRST_SEQ).unwrap_or(0).saturating_sub(seq_in),
        };
        self.seq_offset = Some(offset);
        // A packet reordered from before a switch may land below 0: it is sent as 0.
        let seq = u64::try_from(seq_in.saturating_add(offset)).unwrap_or(0);
        let ts = p.ts.wrapping_add(self.ts_offset);
        if self.last_out.is_none_or(|(last, _)| seq > last) {
            self.last_out = Some((seq, ts));
        }
        Decision::Write { pt, seq, ts, switched: switch && !same_layer }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VP8: Pt = Pt::new_with_value(96);
    const SUB_VP8: Pt = Pt::new_with_value(102);

    fn pkt(seq: u64, ts: u32) -> Incoming {
        Incoming { pt: VP8, seq, ts, rid: None, keyframe: false }
    }

    fn layer(seq: u64, ts: u32, rid: &str, keyframe: bool) -> Incoming {
        Incoming { pt: VP8, seq, ts, rid: Some(Rid::from(rid)), keyframe }
    }

    fn leg() -> LegRewrite {
        let mut l = LegRewrite::new(None, false);
        l.learn_pt(VP8, Some(SUB_VP8));
        l
    }

    fn written(d: Decision) -> (Pt, u64, u32, bool) {
        match d {
            Decision::Write { pt, seq, ts, switched } => (pt, seq, ts, switched),
            other => panic!("expected a write, got {other:?}"),
        }
    }

    #[test]
    fn a_rebound_leg_runs_on_from_what_it_sent() {
        let mut l = leg();
        for i in 0..5 {
            written(l.rewrite(&pkt(70 + i, 9000 + 3000 * i as u32)));
        }
        // Audio: the next packet of another source follows at once.
        let mut a = l.rebind(None, false, false);
        assert_eq!(a.rewrite(&pkt(50_000, 777)), Decision::Skip, "payload types are learnt again");
        a.learn_pt(VP8, Some(SUB_VP8));
        assert_eq!(written(a.rewrite(&pkt(50_000, 777))), (SUB_VP8, 1005, 21_000 + SWITCH_TS_STEP, false));
        assert_eq!(written(a.rewrite(&pkt(50_001, 877))), (SUB_VP8, 1006, 21_100 + SWITCH_TS_STEP, false));
        // Video: from a keyframe of the new source on.
        let mut v = l.rebind(None, false, true);
        v.learn_pt(VP8, Some(SUB_VP8));
        assert_eq!(v.rewrite(&pkt(50_000, 777)), Decision::AwaitKeyframe);
        let key = Incoming { keyframe: true, ..pkt(50_001, 877) };
        assert_eq!(written(v.rewrite(&key)), (SUB_VP8, 1005, 21_000 + SWITCH_TS_STEP, true));
        // A fresh leg starts at FIRST_SEQ as before.
        let mut f = LegRewrite::new(None, false).rebind(None, false, true);
        f.learn_pt(VP8, Some(SUB_VP8));
        assert_eq!(written(f.rewrite(&pkt(50_000, 777))), (SUB_VP8, FIRST_SEQ, 777, false));
    }

    #[test]
    fn sequence_numbers_start_at_1000_and_follow_the_publisher() {
        let mut l = leg();
        assert_eq!(written(l.rewrite(&pkt(52_000, 7))), (SUB_VP8, 1000, 7, false));
        assert_eq!(written(l.rewrite(&pkt(52_001, 3007))).1, 1001);
        // A gap and a reordered packet keep their distance.
        assert_eq!(written(l.rewrite(&pkt(52_005, 6007))).1, 1005);
        assert_eq!(written(l.rewrite(&pkt(52_003, 5007))).1, 1003);
    }

    #[test]
    fn a_publisher_rollover_is_no_jump_for_the_subscriber() {
        let mut l = leg();
        // The publisher's counter has wrapped three times and is about to wrap again.
        let base = (3 << 16) + 65_534;
        let seqs: Vec<u64> = (0..5).map(|i| written(l.rewrite(&pkt(base + i, 0))).1).collect();
        assert_eq!(seqs, vec![1000, 1001, 1002, 1003, 1004], "continuous across the publisher's wrap");
        // The subscriber's numbers stay far below its own first wrap: its rollover counter is 0.
        assert!(seqs.iter().all(|s| *s < 1 << 16));
    }

    #[test]
    fn timestamps_pass_through_with_their_wrap() {
        let mut l = leg();
        assert_eq!(written(l.rewrite(&pkt(1, u32::MAX - 100))).2, u32::MAX - 100);
        assert_eq!(written(l.rewrite(&pkt(2, 2900))).2, 2900);
    }

    #[test]
    fn an_unmapped_payload_type_is_skipped_and_changes_nothing() {
        let mut l = LegRewrite::new(None, false);
        assert_eq!(l.rewrite(&pkt(10, 0)), Decision::Skip, "not learnt yet");
        l.learn_pt(VP8, None);
        assert_eq!(l.rewrite(&pkt(11, 0)), Decision::Skip, "the subscriber has no match");
        l.learn_pt(Pt::new_with_value(111), Some(Pt::new_with_value(109)));
        let opus = Incoming { pt: Pt::new_with_value(111), ..pkt(500, 0) };
        assert_eq!(written(l.rewrite(&opus)).1, 1000, "the skipped packets set no offset");
    }

    #[test]
    fn layers_switch_only_at_a_keyframe_of_the_wanted_layer() {
        let mut l = LegRewrite::new(Some(Rid::from("l")), true);
        l.learn_pt(VP8, Some(SUB_VP8));
        // Nothing is forwarded until the first keyframe of the wanted layer.
        assert_eq!(l.rewrite(&layer(100, 9000, "l", false)), Decision::AwaitKeyframe);
        assert_eq!(l.rewrite(&layer(500, 90_000, "h", true)), Decision::Skip, "not the wanted layer");
        assert_eq!(written(l.rewrite(&layer(101, 12_000, "l", true))), (SUB_VP8, 1000, 12_000, true));
        assert_eq!(written(l.rewrite(&layer(102, 15_000, "l", false))), (SUB_VP8, 1001, 15_000, false));
        assert!(!l.wants_switch());
        // Now "h" is wanted: its non-keyframes wait, "l" goes on until the switch.
        l.set_target(Some(Rid::from("h")));
        assert!(l.wants_switch());
        assert_eq!(l.rewrite(&layer(501, 93_000, "h", false)), Decision::AwaitKeyframe);
        assert_eq!(written(l.rewrite(&layer(103, 18_000, "l", false))).1, 1002);
        // The keyframe of "h": the next sequence number, one frame after the last timestamp.
        assert_eq!(written(l.rewrite(&layer(502, 96_000, "h", true))), (SUB_VP8, 1003, 18_000 + SWITCH_TS_STEP, true));
        assert_eq!(l.layer(), Some(Rid::from("h")));
        assert_eq!(written(l.rewrite(&layer(503, 99_000, "h", false))), (SUB_VP8, 1004, 24_000, false));
        // "l" is no longer forwarded.
        assert_eq!(l.rewrite(&layer(104, 21_000, "l", true)), Decision::Skip);
    }

    #[test]
    fn a_paused_leg_sends_nothing_and_resumes_at_a_keyframe_without_a_gap() {
        let mut l = leg();
        assert_eq!(written(l.rewrite(&pkt(500, 3000))).1, 1000);
        l.set_paused(true);
        assert!(l.is_paused() && !l.wants_switch());
        assert_eq!(l.rewrite(&Incoming { keyframe: true, ..pkt(501, 6000) }), Decision::Skip);
        assert_eq!(l.rewrite(&pkt(502, 9000)), Decision::Skip);
        l.set_paused(false);
        assert!(l.wants_switch(), "resuming asks for a keyframe");
        assert_eq!(l.rewrite(&pkt(600, 300_000)), Decision::AwaitKeyframe);
        // The keyframe: the next sequence number, the publisher's time (same stream, same clock).
        assert_eq!(written(l.rewrite(&Incoming { keyframe: true, ..pkt(601, 303_000) })), (SUB_VP8, 1001, 303_000, false));
        assert_eq!(written(l.rewrite(&pkt(602, 306_000))), (SUB_VP8, 1002, 306_000, false));
        assert!(!l.wants_switch());
        // A simulcast leg that resumes on another layer moves one frame, as at a switch.
        let mut s = LegRewrite::new(Some(Rid::from("l")), true);
        s.learn_pt(VP8, Some(SUB_VP8));
        written(s.rewrite(&layer(1, 9000, "l", true)));
        s.set_paused(true);
        s.set_target(Some(Rid::from("h")));
        assert_eq!(s.rewrite(&layer(50, 500_000, "h", true)), Decision::Skip);
        s.set_paused(false);
        assert_eq!(s.rewrite(&layer(2, 12_000, "l", true)), Decision::Skip, "not the wanted layer");
        assert_eq!(written(s.rewrite(&layer(51, 503_000, "h", true))), (SUB_VP8, 1001, 9000 + SWITCH_TS_STEP, true));
    }

    #[test]
    fn a_switch_on_an_unmapped_payload_type_does_not_happen() {
        let mut l = LegRewrite::new(Some(Rid::from("l")), true);
        l.learn_pt(VP8, Some(SUB_VP8));
        written(l.rewrite(&layer(1, 0, "l", true)));
        l.set_target(Some(Rid::from("h")));
        let odd = Incoming { pt: Pt::new_with_value(45), ..layer(900, 0, "h", true) };
        assert_eq!(l.rewrite(&odd), Decision::Skip);
        assert_eq!(l.layer(), Some(Rid::from("l")), "still on the old layer");
    }
}
