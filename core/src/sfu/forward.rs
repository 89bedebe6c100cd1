//! Fanning out what a participant sends: each RTP packet to every subscriber
//! of its track (rewritten per leg, see [`super::rewrite`]), and each data
//! channel message to everyone else in the room. The payload is shared, not
//! copied: no allocation per packet here.

use std::time::Instant;

use str0m::media::MediaKind;
use str0m::rtp::{ExtensionValues, RtpPacket, RtpWrite};

use super::rewrite::{Decision, Incoming};
use super::simulcast::is_keyframe;
use super::Sfu;
use crate::ids::ConnId;

impl Sfu {
    /// Forwards one RTP packet from publisher `from` to every subscriber of its track
    /// (for simulcast, to those who receive its layer, switching layers at keyframes).
    pub(super) fn forward(&mut self, now: Instant, from: ConnId, pkt: RtpPacket) {
        let Some(p) = self.participants.get_mut(&from) else { return };
        p.stats.packets_in += 1;
        p.stats.bytes_in += pkt.payload.len() as u64;
        let ssrc = pkt.header.ssrc;
        let (track, rid) = match p.ssrc_tracks.iter().find(|(s, _, _)| *s == ssrc) {
            Some((_, t, r)) => (*t, *r),
            None => {
                // First packet of this SSRC: learn its track and layer once.
                let (mid, rid) = p.rtc.direct_api().stream_rx(&ssrc).map(|s| (s.mid(), s.rid())).unzip();
                let rid = rid.flatten();
                let t = mid.and_then(|m| p.published.iter().copied().find(|t| self.tracks.get(t).is_some_and(|t| t.mid == m)));
                p.ssrc_tracks.push((ssrc, t, rid));
                (t, rid)
            }
        };
        let Some(tid) = track else { return };
        let pub_params = p.rtc.codec_config().find(|c| c.pt() == pkt.header.payload_type).copied();
        if !self.recordings.is_empty() {
            self.record_packet(now, from, tid, &pkt, pub_params, rid);
        }
        let Some(t) = self.tracks.get_mut(&tid) else { return };
        // The layer's rate, in the unit of the egress estimate (see `estimate`): RTP payload bytes.
        let layer = rid.and_then(|r| t.layers.iter().position(|l| *l == r)).unwrap_or(0);
        if let Some(m) = t.rates.get_mut(layer) {
            m.record(now, pkt.payload.len() as u64);
        }
        if t.kind == MediaKind::Audio {
            let level = pkt.header.ext_vals.audio_level;
            self.hear(now, from, level);
        }
        let Some(t) = self.tracks.get_mut(&tid) else { return };
        let keyframe = t.kind == MediaKind::Video && pub_params.is_some_and(|pp| is_keyframe(pp.spec().codec, &pkt.payload));
        let incoming = Incoming { pt: pkt.header.payload_type, seq: *pkt.seq_no, ts: pkt.header.timestamp, rid, keyframe };
        let ext = ExtensionValues {
            audio_level: pkt.header.ext_vals.audio_level,
            voice_activity: pkt.header.ext_vals.voice_activity,
            video_orientation: pkt.header.ext_vals.video_orientation,
            ..ExtensionValues::default()
        };
        let subscribers = std::mem::take(&mut t.subscribers);
        let mut wants_keyframe = false;
        for &sub in &subscribers {
            let Some(s) = self.participants.get_mut(&sub) else { continue };
            let Some(leg) = s.legs.iter_mut().find(|l| l.track == tid) else { continue };
            let Some(out_ssrc) = leg.ssrc else { continue };
            if leg.rewrite.mapped_pt(incoming.pt).is_none() {
                // First packet of this payload type on this leg: find the subscriber's match once.
                let out = pub_params.and_then(|pp| s.rtc.codec_config().match_params(pp).map(|m| m.pt()));
                let out = out.filter(|pt| s.rtc.media(leg.mid).is_some_and(|m| m.remote_pts().contains(pt)));
                leg.rewrite.learn_pt(incoming.pt, out);
            }
            let (pt, seq, ts) = match leg.rewrite.rewrite(&incoming) {
                Decision::Skip => continue,
                Decision::AwaitKeyframe => {
                    // Keep asking (throttled) until the wanted layer sends one.
                    wants_keyframe = true;
                    continue;
                }
                Decision::Write { pt, seq, ts, switched } => {
                    if switched {
                        self.stats.layer_switches += 1;
                    }
                    (pt, seq, ts)
                }
            };
            let nackable = leg.kind == MediaKind::Video;
            if let Some(tx) = s.rtc.direct_api().stream_tx(&out_ssrc) {
                let w = RtpWrite::new(pt, seq.into(), ts, pkt.timestamp, pkt.payload.clone())
                    .marker(pkt.header.marker)
                    .nackable(nackable)
                    .ext_vals(ext.clone());
                tx.write_rtp(w);
                s.stats.packets_out += 1;
                s.stats.bytes_out += pkt.payload.len() as u64;
                s.egress.record(now, pkt.payload.len() as u64);
                self.stats.forwarded_packets += 1;
            }
            self.drive_later(sub);
        }
        if let Some(t) = self.tracks.get_mut(&tid) {
            // Subscribers added while forwarding (none today) are kept.
            let mut subscribers = subscribers;
            subscribers.append(&mut t.subscribers);
            t.subscribers = subscribers;
        }
        if wants_keyframe {
            self.request_keyframe(now, tid);
        }
    }

    /// What a participant sends on its data channel goes to everyone else in the room.
    pub(super) fn relay_data(&mut self, from: ConnId, binary: bool, data: &[u8]) {
        let Some(room) = self.participants.get(&from).map(|p| p.room.clone()) else { return };
        let members = self.rooms.get(&room).cloned().unwrap_or_default();
        for m in members.into_iter().filter(|m| *m != from) {
            let Some(p) = self.participants.get_mut(&m) else { continue };
            if let Some(id) = p.channel {
                if let Some(mut ch) = p.rtc.channel(id) {
                    if !matches!(ch.write(binary, data), Ok(true)) {
                        self.stats.datachannel_dropped += 1;
                    }
                }
            }
            self.drive_later(m);
        }
    }
}
