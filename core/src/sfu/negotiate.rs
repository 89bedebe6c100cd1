//! Who is in the SFU and what each participant's connection carries: join and
//! leave, the participant's offers and answers, trickled candidates, and the
//! server's own offers when the tracks a subscriber should get change
//! (renegotiation), with glare handled by letting the participant's offer win.

use std::time::Instant;

use str0m::change::{SdpAnswer, SdpOffer};
use str0m::media::{Direction, MediaKind, Mid};
use str0m::{Candidate, IceCreds};

use super::allocate::RateMeter;
use super::estimate::EgressEstimate;
use super::{Leg, Participant, Pending, ParticipantStats, Sfu, SfuError, SfuMessage, Slot, TrackId};
use crate::ids::{ConnId, MediaRole};

impl Sfu {
    /// `conn` joins the room with key `room`; `label` names its media streams
    /// toward the others (the msid stream id; signaling's peer id).
    pub fn join(&mut self, now: Instant, conn: ConnId, room: String, label: String) {
        self.join_as(now, conn, room, label, MediaRole::Member);
    }

    /// `conn` joins as [`Sfu::join`] does, in role `role`: a publisher (WHIP)
    /// is never offered anything; a viewer (WHEP) receives on the m-lines of
    /// its own offer (see `viewer`).
    pub fn join_as(&mut self, now: Instant, conn: ConnId, room: String, label: String, role: MediaRole) {
        let now = self.time.advance(now);
        if self.participants.contains_key(&conn) {
            // Already in: leave first, as signaling does.
            return;
        }
        let ufrag = format!("{:016x}", self.rng.next_u64());
        let pass = format!("{:016x}{:016x}", self.rng.next_u64(), self.rng.next_u64());
        let mut rtc = self.rtc_config.clone().set_local_ice_credentials(IceCreds { ufrag: ufrag.clone(), pass }).build(now);
        if let Ok(c) = Candidate::host(self.config.media_addr, "udp") {
            rtc.add_local_candidate(c);
        }
        self.by_ufrag.insert(ufrag.clone(), conn);
        self.rooms.entry(room.clone()).or_default().push(conn);
        let p = Participant {
            label,
            room,
            rtc,
            ufrag,
            addr: None,
            ssrc_tracks: Vec::new(),
            published: Vec::new(),
            legs: Vec::new(),
            pending: None,
            dirty: true,
            negotiated: false,
            idle: Vec::new(),
            channel: None,
            drive_queued: false,
            stats: ParticipantStats::default(),
            max_bps: self.config.max_subscriber_bps,
            allocated_at: None,
            estimate: EgressEstimate::default(),
            egress: RateMeter::default(),
            speech: Default::default(),
            role,
            heard: now,
            ended: false,
            origin: Default::default(),
        };
        let room = p.room.clone();
        self.participants.insert(conn, p);
        self.tell_speaker(conn, &room);
        self.recording_on_join(now, conn, &room);
        self.drive(now, conn);
    }

    /// `conn` left (or disconnected): its subscriptions end, and its tracks
    /// end for everyone.
    pub fn leave(&mut self, now: Instant, conn: ConnId) {
        let now = self.time.advance(now);
        let Some(mut p) = self.participants.remove(&conn) else { return };
        p.rtc.disconnect();
        self.deadlines.remove(conn);
        self.by_ufrag.remove(&p.ufrag);
        if let Some(a) = p.addr {
            self.by_addr.remove(&a);
        }
        if let Some(m) = self.rooms.get_mut(&p.room) {
            m.retain(|c| *c != conn);
            if m.is_empty() {
                self.rooms.remove(&p.room);
                // Its tracks' files are closed below; a room of that name later starts unrecorded.
                self.recordings.remove(&p.room);
            }
        }
        self.forget_speaker(conn, &p.room);
        for leg in &p.legs {
            if let Some(t) = self.tracks.get_mut(&leg.track) {
                t.subscribers.retain(|c| *c != conn);
            }
        }
        let mut touched = Vec::new();
        for tid in p.published {
            self.remove_track(now, tid, &mut touched);
        }
        self.renegotiate(now, touched);
        self.bind_viewers(now, &p.room);
    }

    /// One negotiation for each participant whose legs changed (however
    /// many of its tracks ended at once).
    pub(super) fn renegotiate(&mut self, now: Instant, mut touched: Vec<ConnId>) {
        touched.sort_unstable();
        touched.dedup();
        for conn in touched {
            match self.participants.get(&conn).map(|p| &p.role) {
                Some(MediaRole::Viewer { .. }) => self.bind_viewer(now, conn),
                _ => self.negotiate(now, conn),
            }
        }
    }

    /// An SDP offer from participant `conn`: answered at once (with the
    /// server's candidate trickled after it), then whatever the server has
    /// to offer it follows.
    pub fn handle_offer(&mut self, now: Instant, conn: ConnId, sdp: &str) {
        let now = self.time.advance(now);
        let Some(p) = self.participants.get_mut(&conn) else {
            return self.error(conn, SfuError::NotJoined, "join an sfu room first");
        };
        let Ok(offer) = SdpOffer::from_sdp_string(sdp) else {
            return self.error(conn, SfuError::BadOffer, "not an SDP offer");
        };
        if p.pending.take().is_some() {
            // Glare: our offer is void; whatever it carried is offered again after this exchange.
            p.dirty = true;
        }
        match p.rtc.sdp_api().accept_offer(offer) {
            Ok(answer) => {
                p.negotiated = true;
                // An ICE restart may change our ufrag.
                let ufrag = p.rtc.direct_api().local_ice_credentials().ufrag;
                if ufrag != p.ufrag {
                    self.by_ufrag.remove(&p.ufrag);
                    self.by_ufrag.insert(ufrag.clone(), conn);
                    p.ufrag = ufrag;
                }
                let sdp = answer.to_sdp_string();
                let candidate = Candidate::host(self.config.media_addr, "udp").ok().map(|c| {
                    let sdp_mid = sdp.lines().find_map(|l| l.strip_prefix("a=mid:")).map(|m| m.trim().to_string());
                    SfuMessage::Candidate { candidate: c.to_sdp_string(), sdp_mid, sdp_mline_index: 0 }
                });
                self.signal(conn, SfuMessage::Answer { sdp });
                if let Some(c) = candidate {
                    self.signal(conn, c);
                }
            }
            Err(_) => self.error(conn, SfuError::BadOffer, "the offer cannot be accepted"),
        }
        self.drive(now, conn);
        self.negotiate(now, conn);
    }

    /// Participant `conn`'s SDP answer to the server's pending offer.
    pub fn handle_answer(&mut self, now: Instant, conn: ConnId, sdp: &str) {
        let now = self.time.advance(now);
        let Some(p) = self.participants.get_mut(&conn) else { return };
        let Ok(answer) = SdpAnswer::from_sdp_string(sdp) else {
            return self.error(conn, SfuError::BadAnswer, "not an SDP answer");
        };
        let Some(pending) = p.pending.take().map(|x| x.offer) else {
            return self.error(conn, SfuError::BadAnswer, "no offer of the server is pending");
        };
        if p.rtc.sdp_api().accept_answer(pending, answer).is_err() {
            p.dirty = true;
        }
        // The legs' send streams exist now.
        let mut fresh = Vec::new();
        for leg in &mut p.legs {
            if leg.ssrc.is_none() {
                leg.ssrc = p.rtc.direct_api().stream_tx_by_mid(leg.mid, None).map(|s| s.ssrc());
                if leg.ssrc.is_some() && leg.kind == MediaKind::Video {
                    fresh.push(leg.track);
                }
            }
        }
        self.drive(now, conn);
        // A new subscriber gets a keyframe fast.
        for t in fresh {
            self.request_keyframe(now, t);
        }
        self.negotiate(now, conn);
    }

    /// A trickled ICE candidate line (`candidate:...`, or with `a=`) from participant `conn`.
    pub fn handle_candidate(&mut self, now: Instant, conn: ConnId, candidate: &str) {
        let now = self.time.advance(now);
        let Some(p) = self.participants.get_mut(&conn) else { return };
        let line = candidate.strip_prefix("a=").unwrap_or(candidate);
        match Candidate::from_sdp_string(line) {
            Ok(c) => p.rtc.add_remote_candidate(c),
            Err(_) => self.error(conn, SfuError::BadCandidate, "not an ICE candidate"),
        }
        self.drive(now, conn);
    }

    /// Ends a track: every subscriber's leg is freed (its m-line waits for
    /// the next track of its kind) and the subscriber is added to `touched`,
    /// to be renegotiated once when everything that changed is done.
    pub(super) fn remove_track(&mut self, now: Instant, tid: TrackId, touched: &mut Vec<ConnId>) {
        self.stop_track_recording(tid);
        let Some(t) = self.tracks.remove(&tid) else { return };
        if let Some(p) = self.participants.get_mut(&t.owner) {
            p.published.retain(|x| *x != tid);
            p.ssrc_tracks.iter_mut().filter(|e| e.1 == Some(tid)).for_each(|e| e.1 = None);
        }
        for sub in t.subscribers {
            let Some(s) = self.participants.get_mut(&sub) else { continue };
            let Some(i) = s.legs.iter().position(|l| l.track == tid) else { continue };
            let leg = s.legs.remove(i);
            s.idle.push(Slot { mid: leg.mid, kind: leg.kind, rewrite: leg.rewrite, inactive: false });
            s.dirty = true;
            touched.push(sub);
            // What it took is free for the others.
            self.allocate(now, sub);
        }
    }

    /// The room's new tracks: everyone else in `conn`'s room is offered them.
    pub(super) fn announce_tracks(&mut self, now: Instant, conn: ConnId) {
        let room = self.participants.get(&conn).map(|p| p.room.as_str()).unwrap_or_default();
        let others: Vec<ConnId> = self.rooms.get(room).into_iter().flatten().copied().filter(|c| *c != conn).collect();
        for o in others {
            if let Some(p) = self.participants.get_mut(&o) {
                p.dirty = true;
            }
            self.renegotiate(now, vec![o]);
        }
    }

    /// Offers the participant the tracks of its room it lacks, if no offer is pending.
    fn negotiate(&mut self, now: Instant, conn: ConnId) {
        let Some(p) = self.participants.get(&conn) else { return };
        if !p.dirty || !p.negotiated || p.pending.is_some() || p.role != MediaRole::Member {
            return;
        }
        // Every track of the others: (track, kind, its publisher's label as the stream id).
        let room: Vec<(TrackId, MediaKind, String)> = self
            .rooms
            .get(&p.room)
            .into_iter()
            .flatten()
            .filter(|c| **c != conn)
            .filter_map(|c| self.participants.get(c))
            .flat_map(|o| o.published.iter().map(move |t| (*t, o.label.clone())))
            .filter_map(|(t, owner)| self.tracks.get(&t).map(|tr| (t, tr.kind, owner)))
            .collect();
        let wanted: Vec<&(TrackId, MediaKind, String)> = room.iter().filter(|(t, ..)| !p.legs.iter().any(|l| l.track == *t)).collect();
        let Some(p) = self.participants.get_mut(&conn) else { return };
        p.dirty = false;
        if wanted.is_empty() && p.idle.iter().all(|s| s.inactive) {
            return;
        }
        let mut api = p.rtc.sdp_api();
        for &(tid, kind, ref owner) in wanted {
            let Some(t) = self.tracks.get_mut(&tid) else { continue };
            let leg = match p.idle.iter().position(|s| s.kind == kind) {
                Some(i) => {
                    // An m-line of an ended track takes the new one: sending again, under the
                    // new publisher's stream id (see `retag_msids`), its numbers running on.
                    let slot = p.idle.swap_remove(i);
                    if !slot.inactive {
                        // Still sending in the SDP the participant has: a change str0m sees.
                        api.set_direction(slot.mid, Direction::Inactive);
                    }
                    api.set_direction(slot.mid, Direction::SendOnly);
                    let mut leg = Leg::new(tid, slot.mid, kind, &t.layers);
                    leg.rewrite = slot.rewrite.rebind(t.layers.first().copied(), !t.layers.is_empty(), kind == MediaKind::Video);
                    leg
                }
                None => {
                    let mid = api.add_media(kind, Direction::SendOnly, Some(owner.clone()), Some(format!("t{tid}")), None);
                    Leg::new(tid, mid, kind, &t.layers)
                }
            };
            p.legs.push(leg);
            t.subscribers.push(conn);
        }
        for slot in p.idle.iter_mut().filter(|s| !s.inactive) {
            api.set_direction(slot.mid, Direction::Inactive);
            slot.inactive = true;
        }
        // `api` borrows the Rtc only; the legs above are the participant's other field.
        if let Some((offer, pending)) = api.apply() {
            let tags: Vec<(Mid, &str, TrackId)> = p
                .legs
                .iter()
                .filter_map(|l| room.iter().find(|(t, ..)| *t == l.track).map(|(t, _, owner)| (l.mid, owner.as_str(), *t)))
                .collect();
            let sdp = retag_msids(&offer.to_sdp_string(), &tags);
            p.pending = Some(Pending { offer: pending, sdp: sdp.clone(), sent_at: now, resent: 0 });
            self.signal(conn, SfuMessage::Offer { sdp });
        }
        // The new legs share its bandwidth.
        self.allocate(now, conn);
        self.drive(now, conn);
    }
}

/// The offer `sdp` with each leg's m-line carrying its current publisher's
/// stream id (`a=msid:` and `a=ssrc:N msid:`): str0m keeps the msid an m-line
/// was added with, and an m-line reused for another publisher's track must
/// name the new one, so that the browser files the track under it. `tags`
/// are (mid, stream id, track); other m-lines are left as they are.
pub(super) fn retag_msids(sdp: &str, tags: &[(Mid, &str, TrackId)]) -> String {
    let mut out = String::with_capacity(sdp.len() + 64);
    // The m-section's lines are held until its a=mid: is known.
    let mut section: Vec<&str> = Vec::new();
    let flush = |section: &mut Vec<&str>, out: &mut String| {
        let mid = section.iter().find_map(|l| l.strip_prefix("a=mid:")).map(str::trim);
        let tag = mid.and_then(|m| tags.iter().find(|(t, ..)| &**t == m));
        for line in section.drain(..) {
            match tag {
                Some((_, stream, track)) if line.starts_with("a=msid:") => {
                    out.push_str(&format!("a=msid:{stream} t{track}"));
                }
                Some((_, stream, track)) if line.starts_with("a=ssrc:") && line.contains(" msid:") => {
                    let head = line.split(" msid:").next().unwrap_or(line);
                    out.push_str(&format!("{head} msid:{stream} t{track}"));
                }
                _ => out.push_str(line),
            }
            out.push_str("\r\n");
        }
    };
    for line in sdp.lines() {
        if line.starts_with("m=") {
            flush(&mut section, &mut out);
        }
        section.push(line);
    }
    flush(&mut section, &mut out);
    out
}
