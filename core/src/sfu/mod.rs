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
//! The SFU knows nothing of the signaling protocol. Its embedder tells it who
//! joins which room ([`Sfu::join`], with the room's key and the participant's
//! stream label), and hands it what the participant says (offer, answer,
//! candidate, layer choice); what the SFU says back comes out as typed
//! [`SfuMessage`]s in [`SfuOutput::Signal`], for the embedder to put on the
//! signaling connection. [`crate::Switchboard`] is that embedder.
//!
//! # The drive contract
//!
//! After every `join`, `leave`, `handle_*` or `set_layer` call, drain
//! [`Sfu::poll_output`] until it returns `None`, then call
//! [`Sfu::handle_timeout`] when [`Sfu::poll_timeout`] says (early or twice is
//! fine).
//!
//! The files: `negotiate` (join, leave, offers and answers),
//! `rtc` (draining one participant's `Rtc`), `forward` (fanning RTP and data
//! channel messages out), `rewrite` (the per-subscriber rewrite, a pure
//! function), `simulcast` (layer choice and keyframes), `timers` (one deadline
//! per participant) and `stats`.

pub mod allocate;
pub mod estimate;
mod forward;
mod negotiate;
mod record;
pub mod rewrite;
mod rtc;
mod simulcast;
mod speaker;
mod viewer;
mod stats;
mod timers;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use str0m::change::SdpPendingOffer;
use str0m::channel::ChannelId;
use str0m::media::{MediaKind, Mid, Rid};
use str0m::net::{Protocol, Receive};
use str0m::rtp::Ssrc;
use str0m::{Rtc, RtcConfig};

use crate::hash::{self, Map};
use crate::ids::{ConnId, MediaRole};
use crate::rng::{Rng, Seed};
use crate::stun::view::{attr, method, StunView};
use crate::time::Monotonic;

use allocate::RateMeter;
use estimate::EgressEstimate;
use rewrite::LegRewrite;
pub use simulcast::KEYFRAME_INTERVAL;
pub use record::RecordOp;
use record::{RoomRecording, TrackRec};
pub use speaker::SPEAKER_INTERVAL;
pub use viewer::MEDIA_CLIENT_IDLE;
use speaker::{RoomSpeaker, Speech};
pub use stats::{ParticipantStats, RoomStats, SfuStats};
use timers::Deadlines;

/// Configuration of the [`Sfu`].
#[derive(Debug, Clone)]
pub struct SfuConfig {
    /// The media address: where the shell's UDP media socket is bound, and the
    /// host candidate handed to browsers.
    pub media_addr: SocketAddr,
    /// The most bits per second sent to one subscriber (its egress estimate
    /// is capped by this); `None` for no cap. See [`allocate`].
    pub max_subscriber_bps: Option<u64>,
    /// Whether rooms may be recorded (the embedder writes [`SfuOutput::Record`] somewhere).
    pub record: bool,
    /// Rooms recorded from their first member on (when `record`).
    pub record_rooms: Vec<String>,
}

impl SfuConfig {
    /// Media at `media_addr`, no cap on a subscriber's bitrate.
    pub fn new(media_addr: SocketAddr) -> Self {
        SfuConfig { media_addr, max_subscriber_bps: None, record: false, record_rooms: Vec::new() }
    }
}

/// How often each subscriber's bandwidth is allocated again (the layers' rates
/// change), besides at every new estimate and track change.
const ALLOCATION_INTERVAL: Duration = Duration::from_secs(1);

/// What the SFU asks of its embedder.
#[derive(Debug)]
#[non_exhaustive]
pub enum SfuOutput {
    /// A message for the participant on signaling connection `conn`.
    Signal {
        /// The connection.
        conn: ConnId,
        /// What to tell it.
        msg: SfuMessage,
    },
    /// A recording file of track `file` (numbered by the SFU): create it,
    /// write to it, or close it. See `record`.
    Record {
        /// The file.
        file: u64,
        /// What to do.
        op: RecordOp,
    },
    /// A datagram from the media socket.
    Transmit {
        /// Destination.
        to: SocketAddr,
        /// The bytes.
        data: Vec<u8>,
    },
}

/// What the SFU tells one participant over signaling.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SfuMessage {
    /// The server's SDP offer (the tracks it sends the participant changed).
    Offer {
        /// The SDP.
        sdp: String,
    },
    /// The server's answer to the participant's offer.
    Answer {
        /// The SDP.
        sdp: String,
    },
    /// The server's ICE candidate (also in its SDP; for clients that trickle).
    Candidate {
        /// The `candidate:...` line.
        candidate: String,
        /// Media id of the first m-line.
        sdp_mid: Option<String>,
        /// 0: everything is bundled on one transport.
        sdp_mline_index: u32,
    },
    /// The video of publisher `peer` is paused for this participant (its
    /// bandwidth does not allow it), or flows again.
    Paused {
        /// The publisher's stream label (signaling's peer id).
        peer: String,
        /// Whether it is paused now.
        paused: bool,
    },
    /// Participant `peer` of the room is speaking now (the most active audio
    /// of the last second or so, debounced); sent to everyone in the room.
    Speaker {
        /// The speaker's stream label (signaling's peer id).
        peer: String,
    },
    /// The room is being recorded (`on`), or no longer; `by` is the peer id
    /// of who asked (or `http`, `config`).
    Recording {
        /// Whether it is recorded now.
        on: bool,
        /// Who turned it on or off.
        by: String,
    },
    /// A WHIP or WHEP client is taken for gone (nothing came from it for
    /// [`MEDIA_CLIENT_IDLE`]): the embedder ends its session and its leave.
    Ended {
        /// Why.
        reason: &'static str,
    },
    /// What the participant asked cannot be done.
    Error {
        /// Why.
        code: SfuError,
        /// A human-readable explanation.
        message: &'static str,
    },
}

/// Why the SFU refused what a participant asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SfuError {
    /// The connection is not a participant.
    NotJoined,
    /// The offer is not SDP, or cannot be accepted.
    BadOffer,
    /// The answer is not SDP, or no offer of the server is pending.
    BadAnswer,
    /// The candidate line is not an ICE candidate.
    BadCandidate,
    /// The publisher named in a layer choice is not in the participant's room.
    NoSuchPeer,
    /// The publisher sends no such simulcast layer.
    NoSuchLayer,
    /// This server records nothing.
    NotRecording,
}

/// A published track, numbered by the SFU.
type TrackId = u64;

/// One participant's published track.
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
    /// Measured bitrate of each layer (one without simulcast), as received.
    rates: Vec<RateMeter>,
    /// Its recording, while its room is recorded.
    rec: Option<TrackRec>,
}

impl Track {
    fn new(owner: ConnId, mid: Mid, kind: MediaKind, layers: Vec<Rid>) -> Track {
        let rates = vec![RateMeter::default(); layers.len().max(1)];
        Track { owner, mid, kind, subscribers: Vec::new(), last_keyframe_request: None, layers, rates, rec: None }
    }
}

/// One track going out to one subscriber.
#[derive(Debug)]
struct Leg {
    track: TrackId,
    mid: Mid,
    kind: MediaKind,
    /// Known once the offer with this m-line is answered.
    ssrc: Option<Ssrc>,
    /// Payload types, sequence numbers, timestamps and simulcast layer.
    rewrite: LegRewrite,
    /// The layer the subscriber chose (the most it gets; else bandwidth alone chooses).
    manual: Option<Rid>,
    /// When the allocation paused it, and what the subscriber could receive then.
    held: Option<(Instant, u64)>,
}

impl Leg {
    fn new(track: TrackId, mid: Mid, kind: MediaKind, layers: &[Rid]) -> Leg {
        Leg { track, mid, kind, ssrc: None, rewrite: LegRewrite::new(layers.first().copied(), !layers.is_empty()), manual: None, held: None }
    }
}

/// An m-line of a subscriber whose track ended: made inactive at the next
/// negotiation, unless a new track of its kind takes it first.
#[derive(Debug)]
struct Slot {
    mid: Mid,
    kind: MediaKind,
    /// The leg's rewrite state, so a reused m-line's sequence numbers run on.
    rewrite: LegRewrite,
    /// Whether the participant was told it is inactive.
    inactive: bool,
}

/// An offer of the server that awaits the participant's answer.
struct Pending {
    offer: SdpPendingOffer,
    /// Its SDP, to send again if no answer comes.
    sdp: String,
    /// When it was last sent.
    sent_at: Instant,
    /// How many times it was sent again.
    resent: u32,
}

impl Pending {
    /// When it is due to be sent again (or given up on), if it still may be.
    fn retry_at(&self) -> Option<Instant> {
        (self.resent <= OFFER_RETRIES).then_some(self.sent_at + OFFER_RETRY)
    }
}

/// How long an offer waits for its answer before it is sent again (signaling
/// is reliable, but a page may drop a message, e.g. while busy with its own
/// offer): without an answer, the participant would never again be offered
/// the room's new tracks.
pub const OFFER_RETRY: Duration = Duration::from_secs(10);

/// How many times an unanswered offer is sent again before the SFU gives up
/// on it (and counts it in [`SfuStats::offers_unanswered`]).
pub const OFFER_RETRIES: u32 = 3;

/// One participant: its connection and what is routed through it.
struct Participant {
    /// Its stream label (signaling's peer id): the msid stream id of its tracks.
    label: String,
    /// The key of its room.
    room: String,
    rtc: Rtc,
    ufrag: String,
    addr: Option<SocketAddr>,
    /// Incoming SSRC to track and simulcast layer, learnt from str0m's stream table.
    ssrc_tracks: Vec<(Ssrc, Option<TrackId>, Option<Rid>)>,
    published: Vec<TrackId>,
    legs: Vec<Leg>,
    /// The server's offer awaiting its answer.
    pending: Option<Pending>,
    /// Legs to add or remove at the next negotiation.
    dirty: bool,
    /// Whether a first offer from the client was accepted.
    negotiated: bool,
    /// m-lines whose track ended, free for the next track of their kind
    /// (an SDP m-line is never removed: it is reused, so the SDP stays the
    /// size of the most tracks the participant ever had at once).
    idle: Vec<Slot>,
    channel: Option<ChannelId>,
    /// Whether it waits in [`Sfu::to_drive`].
    drive_queued: bool,
    stats: ParticipantStats,
    /// The most bits per second it is sent ([`SfuConfig::max_subscriber_bps`] unless changed).
    max_bps: Option<u64>,
    /// When its bandwidth was last allocated.
    allocated_at: Option<Instant>,
    /// What can reach it, from its loss reports.
    estimate: EgressEstimate,
    /// What it is sent (RTP payload bytes, the unit of the layers' rates).
    egress: RateMeter,
    /// Its recent loud audio packets.
    speech: Speech,
    /// What it does with media.
    role: MediaRole,
    /// When a datagram last came from it.
    heard: Instant,
    /// Whether it was reported [`SfuOutput::Signal`] `Ended`.
    ended: bool,
    /// The time origin its tracks' recordings share.
    origin: crate::record::Origin,
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
    /// Participants by room key: who gets whose tracks and data.
    rooms: Map<String, Vec<ConnId>>,
    tracks: Map<TrackId, Track>,
    next_track: TrackId,
    deadlines: Deadlines,
    /// Participants written to (forwarded RTP, data, keyframe requests) and
    /// not drained yet: each is drained once, before the next output is handed
    /// out, however many packets it was given in between.
    to_drive: Vec<ConnId>,
    /// The batch being drained (kept for its capacity).
    driving: Vec<ConnId>,
    out: VecDeque<SfuOutput>,
    stats: SfuStats,
    /// When the SFU started: the origin of the speaker intervals.
    epoch: Instant,
    /// Each room's speaker.
    speakers: Map<String, RoomSpeaker>,
    /// Rooms being recorded.
    recordings: Map<String, RoomRecording>,
    /// The next recording file's number.
    next_file: u64,
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
            // No str0m estimator (and so no pacer): see `estimate`.
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
            deadlines: Deadlines::new(seed),
            to_drive: Vec::new(),
            driving: Vec::new(),
            out: VecDeque::new(),
            stats: SfuStats::default(),
            epoch: now,
            speakers: Map::with_hasher(hash::hasher(seed)),
            recordings: Map::with_hasher(hash::hasher(seed)),
            next_file: 0,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &SfuConfig {
        &self.config
    }

    /// The next output, if any. Drain after every call that takes `now` (or
    /// after a batch of them: participants written to are drained here, once
    /// per batch rather than once per packet).
    pub fn poll_output(&mut self) -> Option<SfuOutput> {
        if self.out.is_empty() {
            self.drive_queued();
        }
        self.out.pop_front()
    }

    /// When [`Sfu::handle_timeout`] is due next. O(1): the earliest of one
    /// deadline per participant, kept in a keyed queue (or now, while
    /// participants wait to be drained by [`Sfu::poll_output`]).
    pub fn poll_timeout(&self) -> Option<Instant> {
        if !self.to_drive.is_empty() {
            return Some(self.time.now());
        }
        self.deadlines.first().map(|(at, _)| at)
    }

    /// Queues `conn` to be drained before the next output: what was written
    /// to its `Rtc` (RTP, data, keyframe requests) goes out in one drain.
    fn drive_later(&mut self, conn: ConnId) {
        if let Some(p) = self.participants.get_mut(&conn) {
            if !p.drive_queued {
                p.drive_queued = true;
                self.to_drive.push(conn);
            }
        }
    }

    /// Drains every participant queued by [`Sfu::drive_later`]. A drain may
    /// queue others (a subscriber's keyframe request reaches its publisher,
    /// whose packets reach subscribers); each round only drains what str0m
    /// already holds, so this ends.
    fn drive_queued(&mut self) {
        let now = self.time.now();
        while !self.to_drive.is_empty() {
            // The two lists trade places, so neither is reallocated per batch.
            let mut batch = std::mem::take(&mut self.driving);
            std::mem::swap(&mut batch, &mut self.to_drive);
            for conn in batch.drain(..) {
                if let Some(p) = self.participants.get_mut(&conn) {
                    p.drive_queued = false;
                    self.drive(now, conn);
                }
            }
            self.driving = batch;
            if !self.out.is_empty() {
                return;
            }
        }
    }

    /// Drives every participant whose deadline is due.
    pub fn handle_timeout(&mut self, now: Instant) {
        let now = self.time.advance(now);
        // Each pass moves the due participant's deadline past `now` or removes
        // it, so this ends after at most one pass per participant.
        while let Some((at, conn)) = self.deadlines.first() {
            if at > now {
                break;
            }
            match self.participants.get_mut(&conn) {
                Some(p) => {
                    let _ = p.rtc.handle_input(str0m::Input::Timeout(now));
                    self.check_idle(now, conn);
                    self.retry_offer(now, conn);
                    self.drive(now, conn);
                    if self.deadlines.get(conn).is_some_and(|at| at <= now) {
                        self.deadlines.remove(conn);
                    }
                }
                None => self.deadlines.remove(conn),
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
        p.heard = now;
        let Ok(recv) = Receive::new(Protocol::Udp, from, self.config.media_addr, data) else {
            self.stats.unrouted_datagrams += 1;
            return;
        };
        if p.rtc.handle_input(str0m::Input::Receive(now, recv)).is_err() {
            self.stats.unrouted_datagrams += 1;
        }
        self.drive(now, conn);
    }

    /// Sends participant `conn` the server's pending offer again if it went
    /// unanswered for [`OFFER_RETRY`], at most [`OFFER_RETRIES`] times.
    fn retry_offer(&mut self, now: Instant, conn: ConnId) {
        let Some(p) = self.participants.get_mut(&conn) else { return };
        let Some(pending) = p.pending.as_mut() else { return };
        if pending.retry_at().is_none_or(|at| now < at) {
            return;
        }
        pending.resent += 1;
        pending.sent_at = now;
        if pending.resent > OFFER_RETRIES {
            self.stats.offers_unanswered += 1;
            return;
        }
        let sdp = pending.sdp.clone();
        self.stats.offers_resent += 1;
        self.signal(conn, SfuMessage::Offer { sdp });
    }

    /// Tells participant `conn` that what it asked cannot be done.
    fn error(&mut self, conn: ConnId, code: SfuError, message: &'static str) {
        self.signal(conn, SfuMessage::Error { code, message });
    }

    fn signal(&mut self, conn: ConnId, msg: SfuMessage) {
        self.out.push_back(SfuOutput::Signal { conn, msg });
    }
}

/// The local (first) part of a STUN Binding message's USERNAME: the ufrag
/// this server gave the participant. Anything else is `None`.
fn stun_local_ufrag(data: &[u8]) -> Option<&str> {
    let view = StunView::new_checked(data).ok()?;
    if view.method() != method::BINDING {
        return None;
    }
    let user = std::str::from_utf8(view.find(attr::USERNAME)?).ok()?;
    user.split(':').next()
}
