//! Members that are not browsers on signaling: WHIP publishers (publish
//! only; the server never offers them anything) and WHEP viewers (receive
//! only, on the m-lines of their own offer, which cannot be renegotiated by
//! the server). A viewer's m-lines are bound to the tracks of one publisher
//! at a time — the one it pinned, else the room's speaker, else the room's
//! first publisher — and when that changes (a publisher comes or goes, the
//! speaker changes) the same m-lines carry the new one: the leg's sequence
//! numbers run on, video resumes at a keyframe asked of the new publisher.
//! No SDP changes, so no renegotiation is needed for the room's changes.
//!
//! Both end when nothing came from them for [`MEDIA_CLIENT_IDLE`] (a WHIP
//! client that vanished without `DELETE`): [`SfuMessage::Ended`] tells the
//! embedder, which ends the session and makes the leave.

use std::time::{Duration, Instant};

use str0m::media::MediaKind;

use super::{Leg, Sfu, SfuMessage, Slot, TrackId};
use crate::ids::{ConnId, MediaRole};

/// How long a WHIP or WHEP client may send nothing (no RTP, RTCP or ICE
/// check) before it is taken for gone.
pub const MEDIA_CLIENT_IDLE: Duration = Duration::from_secs(10);

impl Sfu {
    /// The tracks viewer `conn` should receive now: (kind, track).
    fn viewer_wants(&self, conn: ConnId) -> Vec<(MediaKind, TrackId)> {
        let Some(p) = self.participants.get(&conn) else { return Vec::new() };
        let MediaRole::Viewer { peer } = &p.role else { return Vec::new() };
        let members = self.rooms.get(&p.room).map(Vec::as_slice).unwrap_or_default();
        let publishes = |c: &ConnId| *c != conn && self.participants.get(c).is_some_and(|o| !o.published.is_empty());
        let source = match peer {
            Some(label) => members.iter().copied().find(|c| self.participants.get(c).is_some_and(|o| &o.label == label)),
            None => {
                let speaker = self.speakers.get(&p.room).and_then(|s| s.current()).filter(publishes);
                speaker.or_else(|| members.iter().copied().find(publishes))
            }
        };
        let Some(o) = source.and_then(|c| self.participants.get(&c)) else { return Vec::new() };
        let mut out = Vec::new();
        for kind in [MediaKind::Audio, MediaKind::Video] {
            if let Some(t) = o.published.iter().copied().find(|t| self.tracks.get(t).is_some_and(|t| t.kind == kind)) {
                out.push((kind, t));
            }
        }
        out
    }

    /// Binds viewer `conn`'s m-lines to what it should receive now, moving
    /// them off what it should not.
    pub(super) fn bind_viewer(&mut self, now: Instant, conn: ConnId) {
        let wants = self.viewer_wants(conn);
        let Some(p) = self.participants.get_mut(&conn) else { return };
        // Legs on a track no longer wanted go back to their slot.
        let mut i = 0;
        while i < p.legs.len() {
            if wants.iter().any(|(_, t)| *t == p.legs[i].track) {
                i += 1;
                continue;
            }
            let leg = p.legs.remove(i);
            if let Some(t) = self.tracks.get_mut(&leg.track) {
                t.subscribers.retain(|c| *c != conn);
            }
            p.idle.push(Slot { mid: leg.mid, kind: leg.kind, rewrite: leg.rewrite, inactive: true });
        }
        let mut fresh = Vec::new();
        for (kind, tid) in wants {
            if p.legs.iter().any(|l| l.track == tid) {
                continue;
            }
            let Some(at) = p.idle.iter().position(|s| s.kind == kind) else { continue };
            let Some(t) = self.tracks.get_mut(&tid) else { continue };
            let slot = p.idle.swap_remove(at);
            let mut leg = Leg::new(tid, slot.mid, kind, &t.layers);
            leg.rewrite = slot.rewrite.rebind(t.layers.first().copied(), !t.layers.is_empty(), kind == MediaKind::Video);
            leg.ssrc = p.rtc.direct_api().stream_tx_by_mid(slot.mid, None).map(|s| s.ssrc());
            p.legs.push(leg);
            t.subscribers.push(conn);
            fresh.push(tid);
        }
        self.allocate(now, conn);
        for t in fresh {
            self.request_keyframe(now, t);
        }
    }

    /// Binds every viewer of `room` again (its publishers or speaker changed).
    pub(super) fn bind_viewers(&mut self, now: Instant, room: &str) {
        let viewers: Vec<ConnId> = self
            .rooms
            .get(room)
            .into_iter()
            .flatten()
            .copied()
            .filter(|c| self.participants.get(c).is_some_and(|p| matches!(p.role, MediaRole::Viewer { .. })))
            .collect();
        for v in viewers {
            self.bind_viewer(now, v);
        }
    }

    /// Ends a WHIP or WHEP client that sent nothing for [`MEDIA_CLIENT_IDLE`]: once.
    pub(super) fn check_idle(&mut self, now: Instant, conn: ConnId) {
        let Some(p) = self.participants.get_mut(&conn) else { return };
        if p.role == MediaRole::Member || p.ended || now.saturating_duration_since(p.heard) < MEDIA_CLIENT_IDLE {
            return;
        }
        p.ended = true;
        self.stats.media_clients_lost += 1;
        self.signal(conn, SfuMessage::Ended { reason: "nothing received from the client for 10 s" });
    }
}
