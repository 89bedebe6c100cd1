//! Simulcast and keyframes: which layer each subscriber wants (chosen by the
//! subscriber, or by its bandwidth estimate), detecting keyframes in the
//! codecs browsers send, and asking publishers for keyframes, throttled per
//! track.

use std::time::{Duration, Instant};

use str0m::format::Codec;
use str0m::media::{KeyframeRequestKind, MediaKind, Rid};

use super::{Leg, Sfu, SfuError, Track, TrackId};
use crate::hash::Map;
use crate::ids::ConnId;

/// The least time between two keyframe requests forwarded to one publisher's track.
pub const KEYFRAME_INTERVAL: Duration = Duration::from_millis(500);

/// Egress bandwidth per simulcast leg from which the middle layer is chosen.
const MIDDLE_LAYER_BPS: u64 = 500_000;
/// Egress bandwidth per simulcast leg from which the top layer is chosen.
const TOP_LAYER_BPS: u64 = 1_500_000;

impl Sfu {
    /// Participant `conn` wants simulcast layer `rid` of the video that
    /// `publisher` (in its room) sends, or `"auto"`: back to the layer its
    /// bandwidth estimate picks.
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
            // Back to bandwidth-driven choice at the next estimate.
            if let Some(p) = self.participants.get_mut(&conn) {
                p.legs.iter_mut().filter(|l| owned.contains(&l.track)).for_each(|l| l.manual = false);
            }
            return;
        }
        let rid = Rid::from(rid);
        let mut changed = Vec::new();
        if let Some(p) = self.participants.get_mut(&conn) {
            for leg in p.legs.iter_mut().filter(|l| owned.contains(&l.track)) {
                if self.tracks.get(&leg.track).is_some_and(|t| t.layers.contains(&rid)) {
                    leg.manual = true;
                    if leg.rewrite.target() != Some(rid) {
                        leg.rewrite.set_target(Some(rid));
                        changed.push(leg.track);
                    }
                }
            }
        }
        if changed.is_empty() && !owned.iter().any(|t| self.tracks.get(t).is_some_and(|t| t.layers.contains(&rid))) {
            return self.error(conn, SfuError::NoSuchLayer, "that peer publishes no such simulcast layer");
        }
        for t in changed {
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
        self.drive(now, owner);
    }
}

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

/// Picks each bandwidth-driven simulcast leg's layer from the egress estimate,
/// shared equally among the participant's simulcast video legs.
pub(super) fn choose_layers(legs: &mut [Leg], estimate_bps: u64, tracks: &Map<TrackId, Track>) {
    let n = legs.iter().filter(|l| tracks.get(&l.track).is_some_and(|t| !t.layers.is_empty())).count().max(1) as u64;
    let budget = estimate_bps / n;
    for leg in legs.iter_mut().filter(|l| !l.manual) {
        let Some(t) = tracks.get(&leg.track) else { continue };
        if t.layers.is_empty() {
            continue;
        }
        // Typical browser layers: quarter, half and full resolution.
        let idx = if budget >= TOP_LAYER_BPS { 2 } else if budget >= MIDDLE_LAYER_BPS { 1 } else { 0 };
        leg.rewrite.set_target(t.layers.get(idx.min(t.layers.len() - 1)).copied());
    }
}
