//! Draining one participant's str0m `Rtc` after every mutation: its
//! datagrams go out, its events become SFU actions (new and ended tracks,
//! RTP to forward, keyframe requests, statistics, bandwidth estimates, data
//! channels), and its next timeout becomes the participant's deadline.

use std::time::{Duration, Instant};

use str0m::bwe::BweKind;
use str0m::media::Direction;
use str0m::Event;

use super::{Pending, Sfu, SfuOutput, Slot, Track, TrackId, ALLOCATION_INTERVAL};
use crate::ids::MediaRole;
use crate::ids::ConnId;

/// Times one drive re-runs str0m's timers for work due now, before deferring it.
const MAX_REFEEDS: u32 = 4;

/// The least time until a participant's next deadline, so that one drive does
/// bounded work (str0m's pacer may say "now" again and again).
const MIN_WAIT: Duration = Duration::from_millis(1);

impl Sfu {
    /// Drains one participant's Rtc: transmits, events, and its next deadline.
    pub(super) fn drive(&mut self, now: Instant, conn: ConnId) {
        let mut new_tracks = false;
        let mut ended_tracks: Vec<TrackId> = Vec::new();
        let mut refeeds = 0;
        let mut reallocate = false;
        let mut bind_viewer = false;
        let mut reports = Vec::new();
        loop {
            let Some(p) = self.participants.get_mut(&conn) else { return };
            let out = match p.rtc.poll_output() {
                Ok(o) => o,
                Err(_) => {
                    // A broken connection: it stops here; signaling's leave removes it (a WHIP or
                    // WHEP client has no signaling to close: it is ended now).
                    self.deadlines.remove(conn);
                    if p.role != MediaRole::Member && !p.ended {
                        p.ended = true;
                        self.stats.media_clients_lost += 1;
                        self.signal(conn, super::SfuMessage::Ended { reason: "the connection broke" });
                    }
                    break;
                }
            };
            match out {
                str0m::Output::Timeout(at) => {
                    if at <= now && refeeds < MAX_REFEEDS {
                        // str0m queued work for "now" (e.g. after write_rtp): run it and drain again.
                        refeeds += 1;
                        let _ = p.rtc.handle_input(str0m::Input::Timeout(now));
                        continue;
                    }
                    // The earlier of str0m's timeout and an unanswered offer's retry.
                    let at = p.pending.as_ref().and_then(Pending::retry_at).map_or(at, |r| r.min(at));
                    // Every so often the layers' rates have changed: allocate again.
                    reallocate |= p.allocated_at.is_none_or(|t| now >= t + ALLOCATION_INTERVAL);
                    self.deadlines.set(conn, at.max(now + MIN_WAIT));
                    break;
                }
                str0m::Output::Transmit(t) => {
                    if p.addr != Some(t.destination) {
                        // ICE verified this address (str0m answers only checks it accepted).
                        if let Some(old) = p.addr.replace(t.destination) {
                            self.by_addr.remove(&old);
                        }
                        self.by_addr.insert(t.destination, conn);
                    }
                    self.out.push_back(SfuOutput::Transmit { to: t.destination, data: t.contents.into() });
                }
                str0m::Output::Event(ev) => match ev {
                    Event::Connected => p.stats.connected = true,
                    // A viewer's m-line (it receives, we send): bound to a track below.
                    Event::MediaAdded(m)
                        if matches!(p.role, MediaRole::Viewer { .. }) && m.direction == Direction::SendOnly && !p.idle.iter().any(|s| s.mid == m.mid) =>
                    {
                        p.idle.push(Slot { mid: m.mid, kind: m.kind, rewrite: Default::default(), inactive: true });
                        bind_viewer = true;
                    }
                    // Nothing else a viewer offers is published.
                    Event::MediaAdded(_) if matches!(p.role, MediaRole::Viewer { .. }) => {}
                    Event::MediaAdded(m)
                        if matches!(m.direction, Direction::RecvOnly | Direction::SendRecv) && !p.legs.iter().any(|l| l.mid == m.mid) =>
                    {
                        let tid = self.next_track;
                        self.next_track += 1;
                        p.published.push(tid);
                        let layers = m.simulcast.map(|s| s.recv.into_iter().map(|l| l.rid).collect()).unwrap_or_default();
                        self.tracks.insert(tid, Track::new(conn, m.mid, m.kind, layers));
                        new_tracks = true;
                    }
                    Event::MediaChanged(m)
                        // The publisher stopped sending on an m-line: that track ends.
                        if !matches!(m.direction, Direction::RecvOnly | Direction::SendRecv) =>
                    {
                        let tracks = &self.tracks;
                        ended_tracks.extend(p.published.iter().copied().filter(|t| tracks.get(t).is_some_and(|t| t.mid == m.mid)));
                    }
                    Event::RtpPacket(pkt) => self.forward(now, conn, pkt),
                    Event::KeyframeRequest(r) => {
                        if let Some(t) = p.legs.iter().find(|l| l.mid == r.mid).map(|l| l.track) {
                            self.request_keyframe(now, t);
                        }
                    }
                    Event::PeerStats(st) => {
                        p.stats.rtt_ms = st.rtt.map(|d| d.as_millis() as u64);
                        p.stats.loss = st.ingress_loss_fraction;
                        p.stats.egress_loss = st.egress_loss_fraction;
                        if let Some(loss) = st.egress_loss_fraction {
                            reallocate |= p.estimate.on_loss(now, loss, p.egress.bps(now));
                        }
                    }
                    // Only REMB reaches here: str0m's own estimator is off (see `estimate`).
                    Event::EgressBitrateEstimate(BweKind::Twcc { estimate, .. } | BweKind::Remb { estimate, .. }) => {
                        reallocate |= p.estimate.on_remb(estimate.as_u64());
                    }
                    Event::ChannelOpen(id, _) => p.channel = Some(id),
                    Event::ChannelClose(_) => p.channel = None,
                    Event::ChannelData(d) => self.relay_data(conn, d.binary, &d.data),
                    // For recordings: RTP time to the sender's wallclock.
                    Event::SenderFeedback(fb) if !self.recordings.is_empty() => reports.push((fb.mid, fb.rid, fb.sender_info)),
                    _ => {}
                },
            }
        }
        // At a new estimate, and every so often as the layers' rates change.
        if reallocate {
            self.allocate(now, conn);
        }
        let mut touched = Vec::new();
        for t in ended_tracks {
            self.remove_track(now, t, &mut touched);
        }
        self.renegotiate(now, touched);
        if new_tracks {
            self.announce_tracks(now, conn);
        }
        if bind_viewer {
            self.bind_viewer(now, conn);
        }
        for (mid, rid, info) in reports {
            self.record_sender_report(conn, mid, rid, &info);
        }
    }
}
