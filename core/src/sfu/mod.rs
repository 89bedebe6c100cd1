//! The SFU: rooms where every participant connects once, to the server, and
//! the server forwards each participant's RTP to everyone else.
//!
//! One str0m [`Rtc`] per participant, in ICE-lite and RTP mode, all on one UDP
//! media address. A datagram reaches its participant in O(1): by its source
//! address once ICE has verified it, else by the local part of the STUN
//! USERNAME (the ICE ufrag this server chose). Every mutation of an `Rtc` is
//! followed by draining its `poll_output` (str0m's drive contract; in RTP mode
//! an undrained `Rtc` drops packets).
//!
//! Signaling reaches the SFU as [`SfuEvent`]s from [`crate::signal::Signaling`]
//! (join, leave, offer, answer, candidate); what it says back (answers, and
//! its own offers when a subscriber's tracks change) comes out as
//! [`SfuOutput::Signal`].

pub mod bot;
pub mod lab;
#[cfg(test)]
mod tests;

use std::collections::{BinaryHeap, VecDeque};
use std::cmp::Reverse;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::channel::ChannelId;
use str0m::bwe::{Bitrate, BweKind};
use str0m::format::Codec;
use str0m::media::{Direction, KeyframeRequestKind, MediaKind, Mid, Pt, Rid};
use str0m::net::{Protocol, Receive};
use str0m::rtp::{ExtensionValues, RtpPacket, RtpWrite, Ssrc};
use str0m::{Candidate, Event, IceCreds, Rtc, RtcConfig};

use crate::hash::{self, Map};
use crate::ids::ConnId;
use crate::rng::{Rng, Seed};
use crate::signal::protocol::{ErrorCode, ServerMsg};
use crate::time::Monotonic;

/// Times one drive re-runs str0m's timers for work due now, before deferring it.
const MAX_REFEEDS: u32 = 4;

/// The least time between two keyframe requests forwarded to one publisher's track.
pub const KEYFRAME_INTERVAL: Duration = Duration::from_millis(500);

/// Configuration of the [`Sfu`].
#[derive(Debug, Clone)]
pub struct SfuConfig {
    /// The media address: where the shell's UDP media socket is bound, and the
    /// host candidate handed to browsers.
    pub media_addr: SocketAddr,
}

/// What signaling tells the SFU.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SfuEvent {
    /// `conn` joined SFU room `room` as peer `id`.
    Join {
        /// The signaling connection.
        conn: ConnId,
        /// Its peer id.
        id: String,
        /// The room.
        room: String,
    },
    /// `conn` left (or disconnected).
    Leave {
        /// The signaling connection.
        conn: ConnId,
    },
    /// An SDP offer from the participant.
    Offer {
        /// The signaling connection.
        conn: ConnId,
        /// The SDP.
        sdp: String,
    },
    /// An SDP answer to the server's offer.
    Answer {
        /// The signaling connection.
        conn: ConnId,
        /// The SDP.
        sdp: String,
    },
    /// A trickled ICE candidate (`candidate:...` line).
    Candidate {
        /// The signaling connection.
        conn: ConnId,
        /// The candidate line.
        candidate: String,
    },
    /// The participant wants simulcast layer `rid` of peer `peer`'s video
    /// (instead of the layer its bandwidth estimate picks).
    Layer {
        /// The signaling connection.
        conn: ConnId,
        /// The publisher's peer id.
        peer: String,
        /// The layer.
        rid: String,
    },
}

/// What the SFU asks of its embedder.
#[derive(Debug)]
#[non_exhaustive]
pub enum SfuOutput {
    /// A signaling text message for `conn`.
    Signal {
        /// The connection.
        conn: ConnId,
        /// The JSON text.
        text: String,
    },
    /// A datagram from the media socket.
    Transmit {
        /// Destination.
        to: SocketAddr,
        /// The bytes.
        data: Vec<u8>,
    },
}

/// Counters of one participant, for `/stats`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ParticipantStats {
    /// Peer id.
    pub id: String,
    /// Tracks it publishes.
    pub tracks_published: u64,
    /// Tracks it receives.
    pub tracks_subscribed: u64,
    /// RTP packets received from it.
    pub packets_in: u64,
    /// RTP payload bytes received from it.
    pub bytes_in: u64,
    /// RTP packets forwarded to it.
    pub packets_out: u64,
    /// RTP payload bytes forwarded to it.
    pub bytes_out: u64,
    /// Whether ICE and DTLS are up.
    pub connected: bool,
    /// Round-trip time to it, in milliseconds (from RTCP), when known.
    pub rtt_ms: Option<u64>,
    /// Fraction of its packets lost on the way in, when known.
    pub loss: Option<f32>,
    /// Egress bandwidth estimate toward it, bits per second, when known.
    pub bwe_bps: Option<u64>,
    /// The simulcast layer it receives of each simulcast track, as `peer-id:rid`.
    pub layers: Vec<String>,
}

impl Eq for ParticipantStats {}

/// Counters of one room, for `/stats`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RoomStats {
    /// Room name.
    pub room: String,
    /// Its participants.
    pub participants: Vec<ParticipantStats>,
}

/// Counters of the SFU.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SfuStats {
    /// Participants now.
    pub participants: u64,
    /// Datagrams on the media port that matched no participant.
    pub unrouted_datagrams: u64,
    /// RTP packets forwarded (counting each subscriber).
    pub forwarded_packets: u64,
    /// Keyframe requests forwarded to publishers.
    pub keyframe_requests: u64,
    /// Keyframe requests dropped by the throttle.
    pub keyframe_requests_throttled: u64,
    /// Simulcast layer switches made (at keyframes).
    pub layer_switches: u64,
    /// Data channel messages not relayed to a participant because its channel's buffer was full.
    pub datachannel_dropped: u64,
}

type TrackId = u64;

#[derive(Debug)]
struct Track {
    owner: ConnId,
    mid: Mid,
    kind: MediaKind,
    /// Who receives it (participants with a leg for it).
    subscribers: Vec<ConnId>,
    last_keyframe_request: Option<Instant>,
    /// Simulcast layers, lowest first as the publisher listed them; empty without simulcast.
    layers: Vec<Rid>,
}

/// One track going out to one subscriber.
#[derive(Debug)]
struct Leg {
    track: TrackId,
    mid: Mid,
    kind: MediaKind,
    /// Known once the offer with this m-line is answered.
    ssrc: Option<Ssrc>,
    /// Payload type mapping, publisher's to subscriber's (filled on first use).
    pts: Vec<(Pt, Option<Pt>)>,
    /// Added to the publisher's extended sequence number.
    seq_offset: Option<i64>,
    /// Added to the publisher's RTP timestamp (changes at layer switches).
    ts_offset: u32,
    /// The last sequence number and timestamp sent on this leg.
    last_out: Option<(u64, u32)>,
    /// Simulcast: the layer forwarded now, and the one wanted.
    layer: Option<Rid>,
    target: Option<Rid>,
    /// Whether the subscriber chose the layer (else bandwidth does).
    manual: bool,
}

impl Leg {
    fn new(track: TrackId, mid: Mid, kind: MediaKind, layers: &[Rid]) -> Leg {
        Leg { track, mid, kind, ssrc: None, pts: Vec::new(), seq_offset: None, ts_offset: 0, last_out: None, layer: None, target: layers.first().copied(), manual: false }
    }
}

struct Participant {
    id: String,
    room: String,
    rtc: Rtc,
    ufrag: String,
    addr: Option<SocketAddr>,
    timeout: Instant,
    /// Incoming SSRC to track and simulcast layer, learnt from str0m's stream table.
    ssrc_tracks: Vec<(Ssrc, Option<TrackId>, Option<Rid>)>,
    published: Vec<TrackId>,
    legs: Vec<Leg>,
    pending: Option<SdpPendingOffer>,
    /// Legs to add or remove at the next negotiation.
    dirty: bool,
    /// Whether a first offer from the client was accepted.
    negotiated: bool,
    /// m-lines of ended tracks to stop at the next negotiation.
    stale_mids: Vec<Mid>,
    channel: Option<ChannelId>,
    stats: ParticipantStats,
}

/// The selective forwarding unit.
pub struct Sfu {
    config: SfuConfig,
    rtc_config: RtcConfig,
    rng: Rng,
    time: Monotonic,
    participants: Map<ConnId, Participant>,
    by_ufrag: Map<String, ConnId>,
    by_addr: Map<SocketAddr, ConnId>,
    rooms: Map<String, Vec<ConnId>>,
    tracks: Map<TrackId, Track>,
    next_track: TrackId,
    timers: BinaryHeap<Reverse<(Instant, ConnId)>>,
    out: VecDeque<SfuOutput>,
    stats: SfuStats,
}

impl std::fmt::Debug for Sfu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sfu").field("config", &self.config).field("participants", &self.participants.len()).finish_non_exhaustive()
    }
}

impl Sfu {
    /// An SFU started at `now`, seeded with `seed`. One DTLS certificate is
    /// made here and shared by every participant's connection.
    pub fn new(config: SfuConfig, now: Instant, seed: &Seed) -> Self {
        let crypto = Arc::new(str0m::crypto::from_feature_flags());
        let cert = crypto.dtls_provider.generate_certificate().expect("the crypto provider makes DTLS certificates");
        let rtc_config = RtcConfig::new().set_crypto_provider(crypto).set_dtls_cert(cert).set_ice_lite(true)
            .set_rtp_mode(true)
            .enable_bwe(Some(Bitrate::kbps(800)))
            .set_stats_interval(Some(Duration::from_secs(1)));
        Sfu {
            config,
            rtc_config,
            rng: Rng::new(seed, "sfu ice"),
            time: Monotonic::new(now),
            participants: Map::with_hasher(hash::hasher(seed)),
            by_ufrag: Map::with_hasher(hash::hasher(seed)),
            by_addr: Map::with_hasher(hash::hasher(seed)),
            rooms: Map::with_hasher(hash::hasher(seed)),
            tracks: Map::with_hasher(hash::hasher(seed)),
            next_track: 0,
            timers: BinaryHeap::new(),
            out: VecDeque::new(),
            stats: SfuStats::default(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &SfuConfig {
        &self.config
    }

    /// Counters so far.
    pub fn stats(&self) -> SfuStats {
        let mut s = self.stats.clone();
        s.participants = self.participants.len() as u64;
        s
    }

    /// Per room and participant counters, rooms sorted by name.
    pub fn room_stats(&self) -> Vec<RoomStats> {
        let mut rooms: Vec<RoomStats> = self
            .rooms
            .iter()
            .map(|(room, members)| RoomStats {
                room: room.clone(),
                participants: members
                    .iter()
                    .filter_map(|c| self.participants.get(c))
                    .map(|p| {
                        let mut s = p.stats.clone();
                        s.id = p.id.clone();
                        s.tracks_published = p.published.len() as u64;
                        s.tracks_subscribed = p.legs.len() as u64;
                        s.layers = p
                            .legs
                            .iter()
                            .filter_map(|l| {
                                let t = self.tracks.get(&l.track).filter(|t| !t.layers.is_empty())?;
                                let owner = &self.participants.get(&t.owner)?.id;
                                Some(format!("{owner}:{}", l.layer.map_or("-".to_string(), |r| r.to_string())))
                            })
                            .collect();
                        s
                    })
                    .collect(),
            })
            .collect();
        rooms.sort_by(|a, b| a.room.cmp(&b.room));
        rooms
    }

    /// The next output, if any.
    pub fn poll_output(&mut self) -> Option<SfuOutput> {
        self.out.pop_front()
    }

    /// When [`Sfu::handle_timeout`] is due next.
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        while let Some(Reverse((at, conn))) = self.timers.peek().copied() {
            match self.participants.get(&conn) {
                Some(p) if p.timeout == at => return Some(at),
                _ => {
                    self.timers.pop();
                }
            }
        }
        None
    }

    /// Drives every participant whose timer is due.
    pub fn handle_timeout(&mut self, now: Instant) {
        let now = self.time.advance(now);
        while let Some(Reverse((at, conn))) = self.timers.peek().copied() {
            if at > now {
                break;
            }
            self.timers.pop();
            let due = self.participants.get(&conn).is_some_and(|p| p.timeout == at);
            if due {
                if let Some(p) = self.participants.get_mut(&conn) {
                    let _ = p.rtc.handle_input(str0m::Input::Timeout(now));
                }
                self.drive(now, conn);
            }
        }
    }

    /// A signaling event.
    pub fn handle_event(&mut self, now: Instant, ev: SfuEvent) {
        let now = self.time.advance(now);
        match ev {
            SfuEvent::Join { conn, id, room } => self.join(now, conn, id, room),
            SfuEvent::Leave { conn } => self.leave(now, conn),
            SfuEvent::Offer { conn, sdp } => self.offer(now, conn, &sdp),
            SfuEvent::Answer { conn, sdp } => self.answer(now, conn, &sdp),
            SfuEvent::Layer { conn, peer, rid } => self.set_layer(now, conn, &peer, &rid),
            SfuEvent::Candidate { conn, candidate } => {
                let Some(p) = self.participants.get_mut(&conn) else { return };
                let line = candidate.strip_prefix("a=").unwrap_or(&candidate);
                match Candidate::from_sdp_string(line) {
                    Ok(c) => p.rtc.add_remote_candidate(c),
                    Err(_) => self.error(conn, ErrorCode::BadMessage, "not an ICE candidate"),
                }
                self.drive(now, conn);
            }
        }
    }

    /// A datagram on the media socket from `from`.
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, data: &[u8]) {
        let now = self.time.advance(now);
        let conn = match self.by_addr.get(&from) {
            Some(c) => *c,
            None => match stun_local_ufrag(data).and_then(|u| self.by_ufrag.get(u)) {
                Some(c) => *c,
                None => {
                    self.stats.unrouted_datagrams += 1;
                    return;
                }
            },
        };
        let Some(p) = self.participants.get_mut(&conn) else { return };
        let Ok(recv) = Receive::new(Protocol::Udp, from, self.config.media_addr, data) else {
            self.stats.unrouted_datagrams += 1;
            return;
        };
        if p.rtc.handle_input(str0m::Input::Receive(now, recv)).is_err() {
            self.stats.unrouted_datagrams += 1;
        }
        self.drive(now, conn);
    }

    fn join(&mut self, now: Instant, conn: ConnId, id: String, room: String) {
        let ufrag = format!("{:016x}", self.rng.next_u64());
        let pass = format!("{:016x}{:016x}", self.rng.next_u64(), self.rng.next_u64());
        let mut rtc = self.rtc_config.clone().set_local_ice_credentials(IceCreds { ufrag: ufrag.clone(), pass }).build(now);
        if let Ok(c) = Candidate::host(self.config.media_addr, "udp") {
            rtc.add_local_candidate(c);
        }
        self.by_ufrag.insert(ufrag.clone(), conn);
        let members = self.rooms.entry(room.clone()).or_default();
        members.push(conn);
        let p = Participant {
            id,
            room,
            rtc,
            ufrag,
            addr: None,
            timeout: now,
            ssrc_tracks: Vec::new(),
            published: Vec::new(),
            legs: Vec::new(),
            pending: None,
            dirty: true,
            negotiated: false,
            stale_mids: Vec::new(),
            channel: None,
            stats: ParticipantStats::default(),
        };
        self.participants.insert(conn, p);
        self.drive(now, conn);
    }

    fn leave(&mut self, now: Instant, conn: ConnId) {
        let Some(mut p) = self.participants.remove(&conn) else { return };
        p.rtc.disconnect();
        self.by_ufrag.remove(&p.ufrag);
        if let Some(a) = p.addr {
            self.by_addr.remove(&a);
        }
        if let Some(m) = self.rooms.get_mut(&p.room) {
            m.retain(|c| *c != conn);
            if m.is_empty() {
                self.rooms.remove(&p.room);
            }
        }
        // Its subscriptions end.
        for leg in &p.legs {
            if let Some(t) = self.tracks.get_mut(&leg.track) {
                t.subscribers.retain(|c| *c != conn);
            }
        }
        // Its tracks end everywhere.
        for tid in p.published {
            self.remove_track(now, tid);
        }
    }

    /// Ends a track: every subscriber's leg is stopped and renegotiated away.
    fn remove_track(&mut self, now: Instant, tid: TrackId) {
        let Some(t) = self.tracks.remove(&tid) else { return };
        if let Some(p) = self.participants.get_mut(&t.owner) {
            p.published.retain(|x| *x != tid);
            p.ssrc_tracks.iter_mut().filter(|e| e.1 == Some(tid)).for_each(|e| e.1 = None);
        }
        for sub in t.subscribers {
            let Some(s) = self.participants.get_mut(&sub) else { continue };
            let Some(i) = s.legs.iter().position(|l| l.track == tid) else { continue };
            let leg = s.legs.remove(i);
            if s.pending.is_some() {
                // An offer is out: stop the m-line with the next one.
                s.stale_mids.push(leg.mid);
                s.dirty = true;
                continue;
            }
            let mut api = s.rtc.sdp_api();
            api.stop_media(leg.mid);
            if let Some((offer, pending)) = api.apply() {
                s.pending = Some(pending);
                let text = encode(&ServerMsg::Offer { sdp: &offer.to_sdp_string() });
                self.out.push_back(SfuOutput::Signal { conn: sub, text });
            }
            self.drive(now, sub);
        }
    }

    fn offer(&mut self, now: Instant, conn: ConnId, sdp: &str) {
        let Some(p) = self.participants.get_mut(&conn) else {
            return self.error(conn, ErrorCode::NotJoined, "join an sfu room first");
        };
        let Ok(offer) = SdpOffer::from_sdp_string(sdp) else {
            return self.error(conn, ErrorCode::BadMessage, "not an SDP offer");
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
                let text = encode(&ServerMsg::Answer { sdp: &sdp });
                self.out.push_back(SfuOutput::Signal { conn, text });
                // Trickle the server's one candidate too, after the answer.
                if let Ok(c) = Candidate::host(self.config.media_addr, "udp") {
                    let mid = sdp.lines().find_map(|l| l.strip_prefix("a=mid:")).map(str::trim);
                    let line = c.to_sdp_string();
                    let text = encode(&ServerMsg::Candidate { candidate: &line, sdp_mid: mid, sdp_mline_index: 0 });
                    self.out.push_back(SfuOutput::Signal { conn, text });
                }
            }
            Err(_) => self.error(conn, ErrorCode::BadMessage, "the offer cannot be accepted"),
        }
        self.drive(now, conn);
        self.negotiate(now, conn);
    }

    fn answer(&mut self, now: Instant, conn: ConnId, sdp: &str) {
        let Some(p) = self.participants.get_mut(&conn) else { return };
        let Ok(answer) = SdpAnswer::from_sdp_string(sdp) else {
            return self.error(conn, ErrorCode::BadMessage, "not an SDP answer");
        };
        let Some(pending) = p.pending.take() else {
            return self.error(conn, ErrorCode::BadMessage, "no offer of the server is pending");
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

    /// Offers the participant the tracks of its room it lacks, if no offer is pending.
    fn negotiate(&mut self, now: Instant, conn: ConnId) {
        let Some(p) = self.participants.get(&conn) else { return };
        if !p.dirty || !p.negotiated || p.pending.is_some() {
            return;
        }
        // (track, kind, its publisher's peer id as the stream id)
        let wanted: Vec<(TrackId, MediaKind, String)> = self
            .rooms
            .get(&p.room)
            .into_iter()
            .flatten()
            .filter(|c| **c != conn)
            .filter_map(|c| self.participants.get(c))
            .flat_map(|o| o.published.iter().map(move |t| (*t, o.id.clone())))
            .filter(|(t, _)| !p.legs.iter().any(|l| l.track == *t))
            .filter_map(|(t, owner)| self.tracks.get(&t).map(|tr| (t, tr.kind, owner)))
            .collect();
        let Some(p) = self.participants.get_mut(&conn) else { return };
        p.dirty = false;
        if wanted.is_empty() && p.stale_mids.is_empty() {
            return;
        }
        let stale = std::mem::take(&mut p.stale_mids);
        let mut api = p.rtc.sdp_api();
        for mid in stale {
            api.stop_media(mid);
        }
        let mut legs = Vec::new();
        for (tid, kind, owner) in wanted {
            let mid = api.add_media(kind, Direction::SendOnly, Some(owner), Some(format!("t{tid}")), None);
            if let Some(t) = self.tracks.get_mut(&tid) {
                legs.push(Leg::new(tid, mid, kind, &t.layers));
                t.subscribers.push(conn);
            }
        }
        let applied = api.apply();
        let p = self.participants.get_mut(&conn).expect("present");
        p.legs.extend(legs);
        if let Some((offer, pending)) = applied {
            p.pending = Some(pending);
            let text = encode(&ServerMsg::Offer { sdp: &offer.to_sdp_string() });
            self.out.push_back(SfuOutput::Signal { conn, text });
        }
        self.drive(now, conn);
    }

    /// Drains one participant's Rtc: transmits, events, and its next timeout.
    fn drive(&mut self, now: Instant, conn: ConnId) {
        let mut new_tracks = Vec::new();
        let mut want_keyframes: Vec<TrackId> = Vec::new();
        let mut ended_tracks: Vec<TrackId> = Vec::new();
        let mut refeeds = 0;
        loop {
            let Some(p) = self.participants.get_mut(&conn) else { return };
            let out = match p.rtc.poll_output() {
                Ok(o) => o,
                Err(_) => {
                    // A broken connection: it stops here; signaling's leave removes it.
                    p.timeout = now + Duration::from_secs(3600);
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
                    // Bounded work per call: what is still due (the pacer) waits a millisecond.
                    let at = at.max(now + Duration::from_millis(1));
                    p.timeout = at;
                    self.timers.push(Reverse((at, conn)));
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
                    Event::MediaAdded(m)
                        if matches!(m.direction, Direction::RecvOnly | Direction::SendRecv) && !p.legs.iter().any(|l| l.mid == m.mid) => {
                            let tid = self.next_track;
                            self.next_track += 1;
                            p.published.push(tid);
                            let layers = m.simulcast.map(|s| s.recv.into_iter().map(|l| l.rid).collect()).unwrap_or_default();
                            self.tracks.insert(tid, Track { owner: conn, mid: m.mid, kind: m.kind, subscribers: Vec::new(), last_keyframe_request: None, layers });
                            new_tracks.push(tid);
                        }
                    Event::MediaChanged(m)
                        // The publisher stopped sending on an m-line: that track ends.
                        if !matches!(m.direction, Direction::RecvOnly | Direction::SendRecv) => {
                            let ended: Vec<TrackId> = p.published.iter().copied().filter(|t| self.tracks.get(t).is_some_and(|t| t.mid == m.mid)).collect();
                            ended_tracks.extend(ended);
                        }
                    Event::RtpPacket(pkt) => self.forward(now, conn, pkt),
                    Event::KeyframeRequest(r) => {
                        let track = p.legs.iter().find(|l| l.mid == r.mid).map(|l| l.track);
                        if let Some(t) = track {
                            self.request_keyframe(now, t);
                        }
                    }
                    Event::PeerStats(st) => {
                        p.stats.rtt_ms = st.rtt.map(|d| d.as_millis() as u64);
                        p.stats.loss = st.ingress_loss_fraction;
                    }
                    Event::EgressBitrateEstimate(BweKind::Twcc { estimate, .. } | BweKind::Remb { estimate, .. }) => {
                        p.stats.bwe_bps = Some(estimate.as_u64());
                        choose_layers(p, estimate.as_u64(), &self.tracks);
                        want_keyframes.extend(p.legs.iter().filter(|l| l.target != l.layer && l.target.is_some()).map(|l| l.track));
                    }
                    Event::ChannelOpen(id, _) => p.channel = Some(id),
                    Event::ChannelClose(_) => p.channel = None,
                    Event::ChannelData(d) => self.relay_data(now, conn, d.binary, &d.data),
                    _ => {}
                },
            }
        }
        for t in want_keyframes {
            self.request_keyframe(now, t);
        }
        for t in ended_tracks {
            self.remove_track(now, t);
        }
        if !new_tracks.is_empty() {
            // Everyone else in the room gets the new tracks.
            let room = self.participants.get(&conn).map(|p| p.room.clone()).unwrap_or_default();
            let others: Vec<ConnId> = self.rooms.get(&room).into_iter().flatten().copied().filter(|c| *c != conn).collect();
            for o in others {
                if let Some(p) = self.participants.get_mut(&o) {
                    p.dirty = true;
                }
                self.negotiate(now, o);
            }
        }
    }

    /// Forwards one RTP packet from publisher `from` to every subscriber of its track
    /// (for simulcast, to those who receive its layer, switching layers at keyframes).
    fn forward(&mut self, now: Instant, from: ConnId, pkt: RtpPacket) {
        let Some(p) = self.participants.get_mut(&from) else { return };
        p.stats.packets_in += 1;
        p.stats.bytes_in += pkt.payload.len() as u64;
        let ssrc = pkt.header.ssrc;
        let (track, rid) = match p.ssrc_tracks.iter().find(|(s, _, _)| *s == ssrc) {
            Some((_, t, r)) => (*t, *r),
            None => {
                let (mid, rid) = p.rtc.direct_api().stream_rx(&ssrc).map(|s| (s.mid(), s.rid())).unzip();
                let rid = rid.flatten();
                let t = mid.and_then(|m| p.published.iter().copied().find(|t| self.tracks.get(t).is_some_and(|t| t.mid == m)));
                p.ssrc_tracks.push((ssrc, t, rid));
                (t, rid)
            }
        };
        let Some(tid) = track else { return };
        let pub_params = p.rtc.codec_config().find(|c| c.pt() == pkt.header.payload_type).copied();
        let Some(t) = self.tracks.get_mut(&tid) else { return };
        let simulcast = !t.layers.is_empty();
        let keyframe = t.kind == MediaKind::Video && pub_params.is_some_and(|pp| is_keyframe(pp.spec().codec, &pkt.payload));
        let subscribers = std::mem::take(&mut t.subscribers);
        let mut wants_keyframe = false;
        for &sub in &subscribers {
            let Some(s) = self.participants.get_mut(&sub) else { continue };
            let Some(leg) = s.legs.iter_mut().find(|l| l.track == tid) else { continue };
            let Some(out_ssrc) = leg.ssrc else { continue };
            if simulcast && leg.layer != rid {
                // Another layer: switch to it only if it is the one wanted and this packet starts a keyframe.
                if leg.target != rid {
                    continue;
                }
                if !keyframe {
                    // Keep asking (throttled) until the wanted layer sends one.
                    wants_keyframe = true;
                    continue;
                }
                leg.layer = rid;
                let seq_in = *pkt.seq_no as i64;
                let ts_in = pkt.header.timestamp;
                match leg.last_out {
                    Some((seq, ts)) => {
                        // Continuous toward the subscriber: next sequence number, a frame later.
                        leg.seq_offset = Some(seq as i64 + 1 - seq_in);
                        leg.ts_offset = ts.wrapping_add(3000).wrapping_sub(ts_in);
                    }
                    None => leg.seq_offset = None,
                }
                self.stats.layer_switches += 1;
            }
            let pt = match leg.pts.iter().find(|(i, _)| *i == pkt.header.payload_type) {
                Some((_, o)) => *o,
                None => {
                    let o = pub_params.and_then(|pp| s.rtc.codec_config().match_params(pp).map(|m| m.pt()));
                    let o = o.filter(|pt| s.rtc.media(leg.mid).is_some_and(|m| m.remote_pts().contains(pt)));
                    leg.pts.push((pkt.header.payload_type, o));
                    o
                }
            };
            let Some(pt) = pt else { continue };
            // Sequence numbers continue from a small start on each leg, so the receiver's
            // rollover counter starts at 0 whatever the publisher's is.
            let seq_in = *pkt.seq_no as i64;
            let offset = *leg.seq_offset.get_or_insert(1000 - seq_in);
            let seq_out = (seq_in + offset).max(0) as u64;
            let ts_out = pkt.header.timestamp.wrapping_add(leg.ts_offset);
            if leg.last_out.is_none_or(|(seq, _)| seq_out > seq) {
                leg.last_out = Some((seq_out, ts_out));
            }
            let kind = leg.kind;
            let ext = ExtensionValues {
                audio_level: pkt.header.ext_vals.audio_level,
                voice_activity: pkt.header.ext_vals.voice_activity,
                video_orientation: pkt.header.ext_vals.video_orientation,
                ..ExtensionValues::default()
            };
            if let Some(tx) = s.rtc.direct_api().stream_tx(&out_ssrc) {
                let w = RtpWrite::new(pt, seq_out.into(), ts_out, pkt.timestamp, pkt.payload.clone())
                    .marker(pkt.header.marker)
                    .nackable(kind == MediaKind::Video)
                    .ext_vals(ext);
                tx.write_rtp(w);
                s.stats.packets_out += 1;
                s.stats.bytes_out += pkt.payload.len() as u64;
                self.stats.forwarded_packets += 1;
            }
            self.drive(now, sub);
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

    /// A participant's choice of layer for one publisher's video.
    fn set_layer(&mut self, now: Instant, conn: ConnId, peer: &str, rid: &str) {
        let Some(owner) = self.rooms_peer(conn, peer) else {
            return self.error(conn, ErrorCode::NoSuchPeer, "no such peer in your room");
        };
        let owned: Vec<TrackId> = self.participants.get(&owner).map(|o| o.published.clone()).unwrap_or_default();
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
                    if leg.target != Some(rid) {
                        leg.target = Some(rid);
                        changed.push(leg.track);
                    }
                }
            }
        }
        if changed.is_empty() && !owned.iter().any(|t| self.tracks.get(t).is_some_and(|t| t.layers.contains(&rid))) {
            return self.error(conn, ErrorCode::BadMessage, "that peer publishes no such simulcast layer");
        }
        for t in changed {
            self.request_keyframe(now, t);
        }
    }

    /// The participant with peer id `peer` in `conn`'s room.
    fn rooms_peer(&self, conn: ConnId, peer: &str) -> Option<ConnId> {
        let room = &self.participants.get(&conn)?.room;
        self.rooms.get(room)?.iter().copied().find(|c| self.participants.get(c).is_some_and(|p| p.id == peer))
    }

    /// Asks the publisher of `track` for a keyframe, at most once per [`KEYFRAME_INTERVAL`].
    fn request_keyframe(&mut self, now: Instant, track: TrackId) {
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
        let ssrcs: Vec<Ssrc> = p.ssrc_tracks.iter().filter(|(_, t, _)| *t == Some(track)).map(|(s, _, _)| *s).collect();
        let mut sent = false;
        for ssrc in ssrcs {
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

    /// What a participant sends on its data channel goes to everyone else in the room.
    fn relay_data(&mut self, now: Instant, from: ConnId, binary: bool, data: &[u8]) {
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
            self.drive(now, m);
        }
    }

    fn error(&mut self, conn: ConnId, code: ErrorCode, message: &str) {
        let text = encode(&ServerMsg::Error { code, message });
        self.out.push_back(SfuOutput::Signal { conn, text });
    }
}

/// The local (first) part of a STUN Binding request's USERNAME: the ufrag
/// this server gave the participant. Parsed with a checked walk over the
/// attributes; anything else is `None`.
fn stun_local_ufrag(data: &[u8]) -> Option<&str> {
    if data.len() < 20 || data[0] > 1 || data[4..8] != [0x21, 0x12, 0xA4, 0x42] {
        return None;
    }
    let end = 20 + usize::from(u16::from_be_bytes([data[2], data[3]]));
    let body = data.get(20..end)?;
    let mut i = 0;
    while i + 4 <= body.len() {
        let typ = u16::from_be_bytes([body[i], body[i + 1]]);
        let len = usize::from(u16::from_be_bytes([body[i + 2], body[i + 3]]));
        let value = body.get(i + 4..i + 4 + len)?;
        if typ == 0x0006 {
            let user = std::str::from_utf8(value).ok()?;
            return user.split(':').next();
        }
        i += 4 + len.next_multiple_of(4);
    }
    None
}

/// Whether an RTP payload starts a keyframe, for the codecs browsers send.
fn is_keyframe(codec: Codec, payload: &[u8]) -> bool {
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
fn choose_layers(p: &mut Participant, estimate_bps: u64, tracks: &Map<TrackId, Track>) {
    let n = p.legs.iter().filter(|l| tracks.get(&l.track).is_some_and(|t| !t.layers.is_empty())).count().max(1) as u64;
    let budget = estimate_bps / n;
    for leg in p.legs.iter_mut().filter(|l| !l.manual) {
        let Some(t) = tracks.get(&leg.track) else { continue };
        if t.layers.is_empty() {
            continue;
        }
        // Typical browser layers: quarter, half and full resolution.
        let idx = if budget >= 1_500_000 { 2 } else if budget >= 500_000 { 1 } else { 0 };
        leg.target = t.layers.get(idx.min(t.layers.len() - 1)).copied();
    }
}

fn encode(msg: &ServerMsg<'_>) -> String {
    serde_json::to_string(msg).expect("server messages always serialize")
}
