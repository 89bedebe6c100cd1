//! Simulcast, bandwidth and keyframes: which layer of each video a subscriber
//! gets, or whether it is paused (chosen by the subscriber up to a layer, and
//! by [`super::allocate`] from its egress estimate, capped), detecting
//! keyframes in the codecs browsers send, and asking publishers for
//! keyframes, throttled per track.

use std::time::{Duration, Instant};

use str0m::format::Codec;
use str0m::media::{KeyframeRequestKind, MediaKind, Rid};

use super::allocate::{allocate, Allocation, VideoLeg, RESUME_HOLD, UP_MARGIN_PCT};
use super::{Sfu, SfuError, SfuMessage, TrackId};
use crate::ids::ConnId;

/// The least time between two keyframe requests forwarded to one publisher's track.
pub const KEYFRAME_INTERVAL: Duration = Duration::from_millis(500);


impl Sfu {
    /// Participant `conn` wants simulcast layer `rid` of the video that
    /// `publisher` (in its room) sends, or `"auto"`: back to the layer its
    /// bandwidth picks. A chosen layer is the most it gets (less if its
    /// bandwidth does not allow it), and its legs come first in the allocation.
    pub fn set_layer(&mut self, now: Instant, conn: ConnId, publisher: ConnId, rid: &str) {
        let now = self.time.advance(now);
        let same_room = |a: ConnId, b: ConnId| match (self.participants.get(&a), self.participants.get(&b)) {
            (Some(a), Some(b)) => a.room == b.room,
            _ => false,
        };
        if !same_room(conn, publisher) {
            return self.error(conn, SfuError::NoSuchPeer, "no such peer in your room");
        }
        let owned: Vec<TrackId> = self.participants.get(&publisher).map(|o| o.published.clone()).unwrap_or_default();
        if rid == "auto" {
            // Back to bandwidth-driven choice.
            if let Some(p) = self.participants.get_mut(&conn) {
                p.legs.iter_mut().filter(|l| owned.contains(&l.track)).for_each(|l| l.manual = None);
            }
            return self.allocate(now, conn);
        }
        let rid = Rid::from(rid);
        if !owned.iter().any(|t| self.tracks.get(t).is_some_and(|t| t.layers.contains(&rid))) {
            return self.error(conn, SfuError::NoSuchLayer, "that peer publishes no such simulcast layer");
        }
        if let Some(p) = self.participants.get_mut(&conn) {
            for leg in p.legs.iter_mut().filter(|l| owned.contains(&l.track)) {
                if self.tracks.get(&leg.track).is_some_and(|t| t.layers.contains(&rid)) {
                    leg.manual = Some(rid);
                }
            }
        }
        self.allocate(now, conn);
    }

    /// Participant `conn` asks to be sent at most `max_bps` bits per second
    /// (`None`: no limit of its own). [`super::SfuConfig::max_subscriber_bps`]
    /// still applies: the lower of the two wins. Its bandwidth is allocated
    /// again at once.
    pub fn set_max_bitrate(&mut self, now: Instant, conn: ConnId, max_bps: Option<u64>) {
        let now = self.time.advance(now);
        let server = self.config.max_subscriber_bps;
        let Some(p) = self.participants.get_mut(&conn) else { return };
        p.max_bps = match (max_bps, server) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.allocate(now, conn);
        self.drive(now, conn);
    }

    /// Allocates participant `conn`'s bandwidth (its egress estimate, capped)
    /// among the videos it receives, with [`allocate`]: audio first and always,
    /// then legs whose layer it chose by hand, then publishers in join order.
    /// Legs that change layer or resume wait for a keyframe, asked of the
    /// publisher; the participant is told of each video paused or resumed.
    pub(super) fn allocate(&mut self, now: Instant, conn: ConnId) {
        let Some(p) = self.participants.get_mut(&conn) else { return };
        p.allocated_at = Some(now);
        let available = p.estimate.bps().min(p.max_bps.unwrap_or(u64::MAX));
        p.stats.bwe_bps = Some(p.estimate.bps());
        let members = self.rooms.get(&p.room).map(Vec::as_slice).unwrap_or_default();
        let mut audio = 0u64;
        let mut video: Vec<(Priority, Vec<u64>, Allocation, bool)> = Vec::new();
        for (i, leg) in p.legs.iter().enumerate() {
            let Some(t) = self.tracks.get(&leg.track) else { continue };
            if t.kind != MediaKind::Video {
                audio = audio.saturating_add(t.rates.iter().map(|r| r.cost()).sum());
                continue;
            }
            // What each layer costs; a layer above the lowest that is not sent now is not offered (0).
            let mut rates: Vec<u64> = t.rates.iter().enumerate().map(|(l, r)| if l == 0 || r.bps(now) > 0 { r.cost() } else { 0 }).collect();
            if let Some(top) = leg.manual.and_then(|m| t.layers.iter().position(|l| *l == m)) {
                rates.truncate(top + 1);
            }
            let current = if leg.rewrite.is_paused() {
                Allocation::Paused
            } else {
                Allocation::Layer(leg.rewrite.target().and_then(|r| t.layers.iter().position(|l| *l == r)).unwrap_or(0))
            };
            let order = members.iter().position(|c| *c == t.owner).unwrap_or(usize::MAX);
            // Held paused for a while after a pause, unless what it may receive grew enough to go up since.
            let may_resume = leg.held.is_none_or(|(at, then)| {
                now >= at + RESUME_HOLD || u128::from(available) * 100 >= u128::from(then) * u128::from(UP_MARGIN_PCT)
            });
            video.push(((leg.manual.is_none(), order, i), rates, current, may_resume));
        }
        video.sort_by_key(|v| v.0);
        let legs: Vec<VideoLeg> =
            video.iter().map(|(_, rates, current, may_resume)| VideoLeg { layers: rates, current: *current, may_resume: *may_resume }).collect();
        let chosen = allocate(available, audio, &legs);
        let mut keyframes = Vec::new();
        let mut told = Vec::new();
        for ((key, _, _, _), a) in video.iter().zip(chosen) {
            let Some(leg) = p.legs.get_mut(key.2) else { continue };
            let Some(t) = self.tracks.get(&leg.track) else { continue };
            let was_paused = leg.rewrite.is_paused();
            match a {
                Allocation::Paused => {
                    if !was_paused {
                        leg.held = Some((now, available));
                    }
                    leg.rewrite.set_paused(true);
                }
                Allocation::Layer(l) => {
                    leg.held = None;
                    leg.rewrite.set_paused(false);
                    if let Some(rid) = t.layers.get(l) {
                        leg.rewrite.set_target(Some(*rid));
                    }
                }
            }
            if leg.rewrite.wants_switch() && leg.ssrc.is_some() {
                keyframes.push(leg.track);
            }
            if was_paused != leg.rewrite.is_paused() {
                told.push((t.owner, leg.rewrite.is_paused()));
            }
        }
        for (owner, paused) in told {
            if let Some(peer) = self.participants.get(&owner).map(|o| o.label.clone()) {
                self.signal(conn, SfuMessage::Paused { peer, paused });
            }
        }
        for t in keyframes {
            self.request_keyframe(now, t);
        }
    }

    /// Asks the publisher of `track` for a keyframe, at most once per [`KEYFRAME_INTERVAL`].
    pub(super) fn request_keyframe(&mut self, now: Instant, track: TrackId) {
        let Some(t) = self.tracks.get_mut(&track) else { return };
        if t.kind != MediaKind::Video {
            return;
        }
        if t.last_keyframe_request.is_some_and(|at| now.saturating_duration_since(at) < KEYFRAME_INTERVAL) {
            self.stats.keyframe_requests_throttled += 1;
            return;
        }
        t.last_keyframe_request = Some(now);
        let (owner, mid) = (t.owner, t.mid);
        let Some(p) = self.participants.get_mut(&owner) else { return };
        let mut api = p.rtc.direct_api();
        // Every layer (rid) of the track.
        let mut sent = false;
        for ssrc in p.ssrc_tracks.iter().filter(|(_, t, _)| *t == Some(track)).map(|(s, _, _)| *s) {
            if let Some(rx) = api.stream_rx(&ssrc) {
                rx.request_keyframe(KeyframeRequestKind::Pli);
                sent = true;
            }
        }
        if !sent {
            if let Some(rx) = api.stream_rx_by_mid(mid, None) {
                rx.request_keyframe(KeyframeRequestKind::Pli);
                sent = true;
            }
        }
        if sent {
            self.stats.keyframe_requests += 1;
        }
        self.drive_later(owner);
    }
}

/// A video leg's place in the allocation, least first: not chosen by hand
/// (false first), its publisher's place in the room's join order, and the
/// leg's index among the subscriber's legs.
type Priority = (bool, usize, usize);

/// Whether an RTP payload starts a keyframe, for the codecs browsers send.
pub(super) fn is_keyframe(codec: Codec, payload: &[u8]) -> bool {
    match codec {
        Codec::Vp8 => str0m::format::detect_vp8_keyframe(payload),
        Codec::H264 => str0m::format::detect_h264_keyframe(payload),
        Codec::Vp9 => str0m::format::detect_vp9_keyframe(payload),
        Codec::Av1 => str0m::format::detect_av1_keyframe(payload),
        _ => false,
    }
}
