//! A headless SFU participant ("bot"): a str0m client (full ICE, RTP mode)
//! that joins an SFU room over the signaling protocol, publishes synthetic
//! audio (50 packets/s) and video (30 packets/s by default) RTP, subscribes to everyone
//! else, and counts what it receives from each publisher.
//!
//! Sans-IO like the rest of the core: feed it the signaling text it receives
//! ([`Bot::handle_signal`]) and the datagrams ([`Bot::handle_datagram`]), call
//! [`Bot::handle_timeout`] at [`Bot::poll_timeout`], and send what
//! [`Bot::poll_signal`] and [`Bot::poll_transmit`] return. Used by the core's
//! tests and benchmarks (bots and the SFU wired in memory, see
//! [`super::Lab`]) and by the end-to-end tests (real sockets).
//!
//! Every payload starts with the publisher's 8-byte tag, so a receiver knows
//! whose packet it got without trusting any header. Video payloads have one
//! VP8 descriptor byte (0x10) before the tag, so the tag's first byte is
//! where a VP8 payload header starts: with it even (bit 0, the inverse key
//! frame flag, clear), as in `bot-0000`, every video packet is a keyframe to
//! the SFU; with it odd, none is. After the tag come the simulcast
//! layer byte (`l`, `m`, `h`, or `-`) and the send time: nanoseconds since the
//! bot's epoch ([`Bot::with_epoch`]) as a big-endian u64, from which a
//! receiver sharing that epoch records publisher-to-subscriber latency
//! ([`Bot::latency`]).

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::format::Codec;
use str0m::media::{Direction, MediaKind, Mid, Pt, Rid, Simulcast, SimulcastLayer};
use str0m::net::{Protocol, Receive};
use str0m::rtp::{ExtensionValues, RtpWrite, Ssrc};
use str0m::{Candidate, Event, Rtc, RtcConfig};

const AUDIO_INTERVAL: Duration = Duration::from_millis(20);
const VIDEO_INTERVAL: Duration = Duration::from_millis(33);
/// RTP clock ticks (90 kHz) per video packet at the default interval: 30 frames per second.
const VIDEO_CLOCK_DEFAULT: u32 = 90_000 / 30;

/// Sub-buckets per power of two of [`Latency`] (about 6% resolution).
const SUB: u32 = 16;
/// Buckets of [`Latency`]: microseconds 0..16 one each, then 16 per power of two up to 2^24 µs (about 17 s).
const BUCKETS: usize = (SUB + (24 - 4) * SUB + SUB) as usize;

/// A small fixed-bucket histogram of latencies (log-linear in microseconds,
/// about 6% resolution, values past ~17 s fall in the last bucket), with the
/// exact count, sum and maximum. Recording costs no allocation.
#[derive(Clone, PartialEq, Eq)]
pub struct Latency {
    buckets: [u64; BUCKETS],
    count: u64,
    sum_ns: u64,
    max_ns: u64,
}

impl Default for Latency {
    fn default() -> Self {
        Latency { buckets: [0; BUCKETS], count: 0, sum_ns: 0, max_ns: 0 }
    }
}

impl std::fmt::Debug for Latency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Latency")
            .field("count", &self.count)
            .field("p50", &self.quantile(0.5))
            .field("p99", &self.quantile(0.99))
            .field("max", &self.max())
            .finish()
    }
}

impl Latency {
    fn bucket(us: u64) -> usize {
        if us < u64::from(SUB) {
            return us as usize;
        }
        let e = 63 - us.leading_zeros(); // >= 4
        let i = SUB + (e - 4) * SUB + ((us >> (e - 4)) as u32 & (SUB - 1));
        (i as usize).min(BUCKETS - 1)
    }

    /// The middle of bucket `i`, in microseconds.
    fn value(i: usize) -> f64 {
        let i = i as u32;
        if i < SUB {
            return f64::from(i) + 0.5;
        }
        let e = (i - SUB) / SUB + 4;
        let low = (1u64 << e) + u64::from((i - SUB) % SUB) * (1u64 << (e - 4));
        low as f64 + (1u64 << (e - 4)) as f64 / 2.0
    }

    /// Records one latency.
    pub fn record(&mut self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.buckets[Self::bucket(ns / 1000)] += 1;
        self.count += 1;
        self.sum_ns = self.sum_ns.saturating_add(ns);
        self.max_ns = self.max_ns.max(ns);
    }

    /// Adds `other`'s samples to these.
    pub fn merge(&mut self, other: &Latency) {
        for (a, b) in self.buckets.iter_mut().zip(other.buckets.iter()) {
            *a += b;
        }
        self.count += other.count;
        self.sum_ns = self.sum_ns.saturating_add(other.sum_ns);
        self.max_ns = self.max_ns.max(other.max_ns);
    }

    /// Forgets every sample.
    pub fn clear(&mut self) {
        *self = Latency::default();
    }

    /// Samples recorded.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The largest sample (exact).
    pub fn max(&self) -> Duration {
        Duration::from_nanos(self.max_ns)
    }

    /// The mean (exact); zero without samples.
    pub fn mean(&self) -> Duration {
        Duration::from_nanos(self.sum_ns.checked_div(self.count).unwrap_or(0))
    }

    /// The `q` quantile (0.0..=1.0), to the bucket's resolution and never
    /// above the maximum; zero without samples.
    pub fn quantile(&self, q: f64) -> Duration {
        if self.count == 0 {
            return Duration::ZERO;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.count as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                let ns = (Self::value(i) * 1000.0) as u64;
                return Duration::from_nanos(ns.min(self.max_ns));
            }
        }
        self.max()
    }
}

/// Packets a bot received, per publisher tag: (audio, video).
pub type Received = BTreeMap<[u8; 8], (u64, u64)>;

/// What a bot saw of one publisher's video: packets per simulcast layer
/// (b'-' without simulcast), the largest jump between consecutive sequence
/// numbers, and whether RTP timestamps ever went backwards.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VideoSeen {
    /// Packets per layer byte.
    pub per_layer: BTreeMap<u8, u64>,
    /// The layer of the last packet.
    pub last_layer: u8,
    /// Largest forward jump of the sequence number.
    pub max_seq_jump: u64,
    /// Whether a timestamp went backwards.
    pub ts_backwards: bool,
    last: Option<(u64, u32)>,
}

#[derive(Debug)]
struct Sender {
    mid: Mid,
    rid: Option<Rid>,
    kind: MediaKind,
    ssrc: Option<Ssrc>,
    pt: Option<Pt>,
    seq: u64,
    next: Instant,
    interval: Duration,
    frame: u32,
    /// RTP clock ticks per packet.
    clock: u32,
}

/// The send time written into payloads: nanoseconds from `epoch` to `now`.
fn send_time(epoch: Instant, now: Instant) -> u64 {
    u64::try_from(now.saturating_duration_since(epoch).as_nanos()).unwrap_or(u64::MAX)
}

/// A bot participant.
pub struct Bot {
    rtc: Rtc,
    tag: [u8; 8],
    room: String,
    senders: Vec<Sender>,
    pending: Option<SdpPendingOffer>,
    publishing: bool,
    connected: bool,
    signal_out: VecDeque<String>,
    transmit: VecDeque<(SocketAddr, Vec<u8>)>,
    timeout: Instant,
    received: Received,
    video: BTreeMap<[u8; 8], VideoSeen>,
    sent: (u64, u64),
    simulcast: bool,
    /// Whether the lower simulcast layers send fewer packets (see [`Bot::with_scaled_layers`]).
    scaled_layers: bool,
    listen_only: bool,
    /// The audio level (dBov) its audio packets carry (RFC 6464), if any.
    audio_level: Option<i8>,
    /// Whether it only receives, on audio and video m-lines of its own offer (a WHEP client).
    viewer: bool,
    /// Interval between video packets (per simulcast layer).
    video_interval: Duration,
    /// RTP clock ticks per video packet.
    video_clock: u32,
    /// Send times in payloads count from here.
    epoch: Instant,
    /// Publisher-to-subscriber latency of the packets received.
    latency: Latency,
    /// Only packets sent in this span (ns since `epoch`) are recorded in `latency`.
    latency_window: Option<(u64, u64)>,
    /// Peer ids by name (the tag as text), from joined/otherjoin.
    peers: BTreeMap<String, String>,
    /// The `paused` messages received: (peer id, paused), in order.
    paused: Vec<(String, bool)>,
    /// The `speaker` messages it received, in order.
    speakers: Vec<String>,
    /// The `record` messages it received, in order: (on, by).
    recording: Vec<(bool, String)>,
    /// The server's offers so far, and the last one.
    offers: (u32, Option<String>),
}

impl std::fmt::Debug for Bot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bot").field("tag", &self.tag).field("room", &self.room).field("connected", &self.connected).finish_non_exhaustive()
    }
}

impl Bot {
    /// A bot that will join `room`, with its UDP socket at `local`, tagging
    /// its packets with `tag`. It sends its `join` at once (see [`Bot::poll_signal`]).
    pub fn new(now: Instant, local: SocketAddr, room: &str, tag: [u8; 8]) -> Self {
        let crypto = Arc::new(str0m::crypto::from_feature_flags());
        let mut rtc = RtcConfig::new().set_crypto_provider(crypto).set_rtp_mode(true).build(now);
        if let Ok(c) = Candidate::host(local, "udp") {
            rtc.add_local_candidate(c);
        }
        let mut bot = Bot {
            rtc,
            tag,
            room: room.into(),
            senders: Vec::new(),
            pending: None,
            publishing: false,
            connected: false,
            signal_out: VecDeque::new(),
            transmit: VecDeque::new(),
            timeout: now,
            received: Received::new(),
            video: BTreeMap::new(),
            sent: (0, 0),
            simulcast: false,
            scaled_layers: false,
            listen_only: false,
            audio_level: None,
            viewer: false,
            video_interval: VIDEO_INTERVAL,
            video_clock: VIDEO_CLOCK_DEFAULT,
            epoch: now,
            latency: Latency::default(),
            latency_window: None,
            peers: BTreeMap::new(),
            paused: Vec::new(),
            offers: (0, None),
            speakers: Vec::new(),
            recording: Vec::new(),
        };
        let name = String::from_utf8_lossy(&tag).into_owned();
        bot.signal_out.push_back(json!({"type": "join", "room": room, "name": name, "mode": "sfu"}).to_string());
        bot.drive(now);
        bot
    }

    /// Publishes video as three simulcast layers, rids `l`, `m`, `h` (call before it joins).
    pub fn with_simulcast(mut self) -> Self {
        self.simulcast = true;
        self
    }

    /// Publishes simulcast layers at different rates, as browsers do: `l` a
    /// quarter and `m` half as many packets as `h` (which sends one every
    /// video interval). Implies [`Bot::with_simulcast`].
    pub fn with_scaled_layers(mut self) -> Self {
        self.simulcast = true;
        self.scaled_layers = true;
        self
    }

    /// Publishes one video packet (one frame) every `interval` per layer
    /// instead of every 33 ms (call before it joins). The RTP timestamp
    /// advances with it (90 kHz clock). Clamped to at least 1 ms.
    pub fn with_video_interval(mut self, interval: Duration) -> Self {
        let interval = interval.max(Duration::from_millis(1));
        self.video_interval = interval;
        self.video_clock = u32::try_from(interval.as_micros() * 90 / 1000).unwrap_or(u32::MAX).max(1);
        self
    }

    /// Counts the send times written into payloads from `epoch` instead of
    /// from the `now` given to [`Bot::new`]. Bots that should measure each
    /// other's latency must share an epoch.
    pub fn with_epoch(mut self, epoch: Instant) -> Self {
        self.epoch = epoch;
        self
    }

    /// Publisher-to-subscriber latency of what it received since it started
    /// or since [`Bot::reset_latency`]: the `now` of the [`Bot::handle_datagram`]
    /// that delivered a packet minus the send time in its payload (packets
    /// with a send time in the future of `now` are not counted).
    pub fn latency(&self) -> &Latency {
        &self.latency
    }

    /// Forgets the latencies recorded so far (to measure a window).
    pub fn reset_latency(&mut self) {
        self.latency.clear();
    }

    /// From now on records in [`Bot::latency`] only the packets whose send
    /// time is in `from..until` (whenever they arrive), so that its count is
    /// what this bot received of what was published in that span, however
    /// late it arrives. Without a window every packet is recorded.
    pub fn set_latency_window(&mut self, from: Instant, until: Instant) {
        self.latency_window = Some((send_time(self.epoch, from), send_time(self.epoch, until)));
    }

    /// Its audio packets carry this audio level (dBov, RFC 6464).
    pub fn with_audio_level(mut self, dbov: i8) -> Self {
        self.audio_level = Some(dbov);
        self
    }

    /// Sends its audio at another level (dBov) from now on.
    pub fn set_audio_level(&mut self, dbov: i8) {
        self.audio_level = Some(dbov);
    }

    /// Publishes nothing, and offers to receive one audio and one video
    /// track (a WHEP client's offer); no data channel.
    pub fn viewer(mut self) -> Self {
        self.viewer = true;
        self
    }

    /// Publishes nothing: only subscribes (call before it joins).
    pub fn listen_only(mut self) -> Self {
        self.listen_only = true;
        self
    }

    /// Whether it publishes (joined, answered, and not unpublished).
    pub fn is_publishing(&self) -> bool {
        self.publishing && !self.senders.is_empty()
    }

    /// Stops publishing: its m-lines become inactive, renegotiated with an offer.
    pub fn unpublish(&mut self, now: Instant) {
        if self.pending.is_some() || !self.publishing {
            return;
        }
        let mids: Vec<Mid> = self.senders.iter().map(|s| s.mid).collect();
        self.senders.clear();
        let mut api = self.rtc.sdp_api();
        for mid in mids {
            api.set_direction(mid, Direction::Inactive);
        }
        if let Some((offer, pending)) = api.apply() {
            self.pending = Some(pending);
            self.signal_out.push_back(json!({"type": "offer", "sdp": offer.to_sdp_string()}).to_string());
        }
        self.drive(now);
    }

    /// Asks the server for simulcast layer `rid` of the bot named `name`'s video.
    pub fn request_layer(&mut self, name: &str, rid: &str) -> bool {
        let Some(id) = self.peers.get(name) else { return false };
        self.signal_out.push_back(json!({"type": "layer", "peer": id, "rid": rid}).to_string());
        true
    }

    /// The peer id of the bot named `name` (its tag as text), once known.
    pub fn peer_id(&self, name: &str) -> Option<&str> {
        self.peers.get(name).map(String::as_str)
    }

    /// The peer ids of the `speaker` messages it received, in order.
    pub fn speakers(&self) -> &[String] {
        &self.speakers
    }

    /// The `record` messages it received, in order: (on, by).
    pub fn recording(&self) -> &[(bool, String)] {
        &self.recording
    }

    /// How many SDP offers the server sent it, and the last one.
    pub fn offers(&self) -> (u32, Option<&str>) {
        (self.offers.0, self.offers.1.as_deref())
    }

    /// The `paused` messages it received, in order: (peer id, paused).
    pub fn paused_messages(&self) -> &[(String, bool)] {
        &self.paused
    }

    /// What it saw of each publisher's video.
    pub fn video_seen(&self) -> &BTreeMap<[u8; 8], VideoSeen> {
        &self.video
    }

    /// This bot's tag.
    pub fn tag(&self) -> [u8; 8] {
        self.tag
    }

    /// Whether ICE and DTLS are up.
    pub fn is_connected(&self) -> bool {
        self.connected
    }

    /// What it received so far, per publisher tag.
    pub fn received(&self) -> &Received {
        &self.received
    }

    /// Packets it sent: (audio, video).
    pub fn sent(&self) -> (u64, u64) {
        self.sent
    }

    /// A signaling text message from the server.
    pub fn handle_signal(&mut self, now: Instant, text: &str) {
        let Ok(v) = serde_json::from_str::<Value>(text) else { return };
        match v["type"].as_str() {
            Some("joined") => {
                for p in v["peers"].as_array().into_iter().flatten() {
                    self.peers.insert(p["name"].as_str().unwrap_or("").into(), p["id"].as_str().unwrap_or("").into());
                }
                // Publish audio and video, send only; the server offers what others publish.
                let layers: Vec<&str> = if self.simulcast { vec!["l", "m", "h"] } else { Vec::new() };
                let simulcast = self.simulcast.then(|| {
                    let mut sc = Simulcast::new();
                    for r in &layers {
                        sc.add_send_layer(SimulcastLayer::new(r));
                    }
                    sc
                });
                if self.viewer {
                    let mut api = self.rtc.sdp_api();
                    api.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None);
                    api.add_media(MediaKind::Video, Direction::RecvOnly, None, None, None);
                    if let Some((offer, pending)) = api.apply() {
                        self.pending = Some(pending);
                        self.signal_out.push_back(json!({"type": "offer", "sdp": offer.to_sdp_string()}).to_string());
                    }
                    self.drive(now);
                    return;
                }
                if self.listen_only {
                    let mut api = self.rtc.sdp_api();
                    api.add_channel("bot".into());
                    if let Some((offer, pending)) = api.apply() {
                        self.pending = Some(pending);
                        self.signal_out.push_back(json!({"type": "offer", "sdp": offer.to_sdp_string()}).to_string());
                    }
                    self.drive(now);
                    return;
                }
                let mut api = self.rtc.sdp_api();
                let audio = api.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
                let video = api.add_media(MediaKind::Video, Direction::SendOnly, None, None, simulcast);
                api.add_channel("bot".into());
                if let Some((offer, pending)) = api.apply() {
                    self.pending = Some(pending);
                    self.signal_out.push_back(json!({"type": "offer", "sdp": offer.to_sdp_string()}).to_string());
                }
                self.senders.push(Sender { mid: audio, rid: None, kind: MediaKind::Audio, ssrc: None, pt: None, seq: 1, next: now, interval: AUDIO_INTERVAL, frame: 0, clock: 48_000 / 50 });
                let rids: Vec<Option<Rid>> = if layers.is_empty() { vec![None] } else { layers.iter().map(|r| Some(Rid::from(*r))).collect() };
                for rid in rids {
                    // With scaled layers: l every 4th, m every 2nd interval, each frame advancing the clock as much.
                    let scale: u32 = match rid.as_deref() {
                        Some("l") if self.scaled_layers => 4,
                        Some("m") if self.scaled_layers => 2,
                        _ => 1,
                    };
                    let interval = self.video_interval * scale;
                    let clock = self.video_clock.saturating_mul(scale);
                    self.senders.push(Sender { mid: video, rid, kind: MediaKind::Video, ssrc: None, pt: None, seq: 1, next: now, interval, frame: 0, clock });
                }
            }
            Some("record") => {
                self.recording.push((v["on"].as_bool().unwrap_or(false), v["by"].as_str().unwrap_or("").into()));
            }
            Some("speaker") => {
                self.speakers.push(v["peer"].as_str().unwrap_or("").into());
            }
            Some("paused") => {
                if let (Some(peer), Some(paused)) = (v["peer"].as_str(), v["paused"].as_bool()) {
                    self.paused.push((peer.into(), paused));
                }
            }
            Some("otherjoin") => {
                self.peers.insert(v["name"].as_str().unwrap_or("").into(), v["id"].as_str().unwrap_or("").into());
            }
            Some("answer") => {
                if let (Some(pending), Ok(answer)) = (self.pending.take(), SdpAnswer::from_sdp_string(v["sdp"].as_str().unwrap_or(""))) {
                    let _ = self.rtc.sdp_api().accept_answer(pending, answer);
                    self.publishing = true;
                }
            }
            Some("offer") => {
                self.offers = (self.offers.0 + 1, v["sdp"].as_str().map(str::to_owned));
                if let Ok(offer) = SdpOffer::from_sdp_string(v["sdp"].as_str().unwrap_or("")) {
                    if let Ok(answer) = self.rtc.sdp_api().accept_offer(offer) {
                        self.signal_out.push_back(json!({"type": "answer", "sdp": answer.to_sdp_string()}).to_string());
                    }
                }
            }
            _ => {}
        }
        self.drive(now);
    }

    /// A datagram from `from` on the bot's socket at `local`.
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, local: SocketAddr, data: &[u8]) {
        if let Ok(r) = Receive::new(Protocol::Udp, from, local, data) {
            let _ = self.rtc.handle_input(str0m::Input::Receive(now, r));
        }
        self.drive(now);
    }

    /// Time passed: publish what is due and run str0m's timers.
    pub fn handle_timeout(&mut self, now: Instant) {
        let _ = self.rtc.handle_input(str0m::Input::Timeout(now));
        self.drive(now);
        if self.connected && self.publishing {
            self.publish(now);
        }
    }

    /// When [`Bot::handle_timeout`] is due.
    pub fn poll_timeout(&self) -> Instant {
        let next_send = self.senders.iter().filter(|_| self.connected && self.publishing).map(|s| s.next).min();
        next_send.map_or(self.timeout, |n| n.min(self.timeout))
    }

    /// The next signaling message to send.
    pub fn poll_signal(&mut self) -> Option<String> {
        self.signal_out.pop_front()
    }

    /// The next datagram to send: (destination, bytes).
    pub fn poll_transmit(&mut self) -> Option<(SocketAddr, Vec<u8>)> {
        self.transmit.pop_front()
    }

    fn publish(&mut self, now: Instant) {
        for i in 0..self.senders.len() {
            // After a stall (its process or the network frozen), a publisher sends on from now,
            // as an encoder does, not a burst of everything it missed.
            if now.saturating_duration_since(self.senders[i].next) > Duration::from_millis(500) {
                self.senders[i].next = now;
            }
            while self.senders[i].next <= now {
                let s = &mut self.senders[i];
                s.next += s.interval;
                if s.ssrc.is_none() || s.pt.is_none() {
                    let mid = s.mid;
                    let want = if s.kind == MediaKind::Audio { Codec::Opus } else { Codec::Vp8 };
                    let pts: Vec<Pt> = self.rtc.media(mid).map(|m| m.remote_pts().to_vec()).unwrap_or_default();
                    let pt = self.rtc.codec_config().iter().find(|p| p.spec().codec == want && pts.contains(&p.pt())).map(|p| p.pt());
                    let rid = s.rid;
                    let ssrc = self.rtc.direct_api().stream_tx_by_mid(mid, rid).map(|t| t.ssrc());
                    let s = &mut self.senders[i];
                    s.pt = pt;
                    s.ssrc = ssrc;
                }
                let s = &mut self.senders[i];
                let (Some(ssrc), Some(pt)) = (s.ssrc, s.pt) else { break };
                // Payload: (video) a VP8 descriptor byte, the tag, the layer byte, the send time.
                let mut payload = Vec::with_capacity(200);
                if s.kind == MediaKind::Video {
                    payload.push(0x10);
                }
                payload.extend_from_slice(&self.tag);
                payload.push(s.rid.map_or(b'-', |r| r.as_bytes().first().copied().unwrap_or(b'?')));
                payload.extend_from_slice(&send_time(self.epoch, now).to_be_bytes());
                payload.resize(160, 0xA5);
                let clock = s.clock;
                s.frame += 1;
                let time = s.frame.wrapping_mul(clock);
                let seq = s.seq;
                s.seq += 1;
                let kind = s.kind;
                if let Some(tx) = self.rtc.direct_api().stream_tx(&ssrc) {
                    let mut ext = ExtensionValues::default();
                    if kind == MediaKind::Audio {
                        // str0m writes the extension only with both values.
                        ext.audio_level = self.audio_level;
                        ext.voice_activity = self.audio_level.map(|l| l > -50);
                    }
                    tx.write_rtp(RtpWrite::new(pt, seq.into(), time, now, Arc::<[u8]>::from(payload)).marker(kind == MediaKind::Video).ext_vals(ext));
                    if kind == MediaKind::Audio {
                        self.sent.0 += 1;
                    } else {
                        self.sent.1 += 1;
                    }
                }
                self.drive(now);
            }
        }
    }

    fn drive(&mut self, now: Instant) {
        let mut refeeds = 0;
        loop {
            match self.rtc.poll_output() {
                Ok(str0m::Output::Timeout(at)) => {
                    if at <= now && refeeds < 4 {
                        refeeds += 1;
                        let _ = self.rtc.handle_input(str0m::Input::Timeout(now));
                        continue;
                    }
                    self.timeout = at.max(now + Duration::from_millis(1));
                    return;
                }
                Ok(str0m::Output::Transmit(t)) => self.transmit.push_back((t.destination, t.contents.into())),
                Ok(str0m::Output::Event(e)) => match e {
                    Event::Connected => self.connected = true,
                    Event::RtpPacket(p) => {
                        let video = p.payload.first() == Some(&0x10);
                        let start = usize::from(video);
                        if let Some(tag) = p.payload.get(start..start + 8) {
                            let mut t = [0u8; 8];
                            t.copy_from_slice(tag);
                            if let Some(sent) = p.payload.get(start + 9..start + 17) {
                                let sent = u64::from_be_bytes(sent.try_into().unwrap_or([0; 8]));
                                let at = send_time(self.epoch, now);
                                let in_window = self.latency_window.is_none_or(|(a, b)| a <= sent && sent < b);
                                if sent <= at && in_window {
                                    self.latency.record(Duration::from_nanos(at - sent));
                                }
                            }
                            let e = self.received.entry(t).or_default();
                            if video {
                                e.1 += 1;
                                let layer = p.payload.get(9).copied().unwrap_or(b'?');
                                let seen = self.video.entry(t).or_default();
                                *seen.per_layer.entry(layer).or_default() += 1;
                                seen.last_layer = layer;
                                let (seq, ts) = (*p.seq_no, p.header.timestamp);
                                if let Some((ls, lt)) = seen.last {
                                    if seq > ls {
                                        seen.max_seq_jump = seen.max_seq_jump.max(seq - ls);
                                        // Backwards by more than half the 32-bit space is a wrap; less is a step back.
                                        if ts.wrapping_sub(lt) > u32::MAX / 2 {
                                            seen.ts_backwards = true;
                                        }
                                    }
                                }
                                if seen.last.is_none_or(|(ls, _)| seq > ls) {
                                    seen.last = Some((seq, ts));
                                }
                            } else {
                                e.0 += 1;
                            }
                        }
                    }
                    _ => {}
                },
                Err(_) => {
                    self.timeout = now + Duration::from_secs(3600);
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod latency_tests {
    use super::Latency;
    use std::time::Duration;

    #[test]
    fn quantiles_within_the_bucket_resolution() {
        let mut l = Latency::default();
        assert_eq!(l.quantile(0.5), Duration::ZERO);
        for us in 1..=10_000u64 {
            l.record(Duration::from_micros(us));
        }
        assert_eq!(l.count(), 10_000);
        assert_eq!(l.max(), Duration::from_micros(10_000));
        for (q, want) in [(0.5, 5_000.0), (0.99, 9_900.0), (0.01, 100.0)] {
            let got = l.quantile(q).as_secs_f64() * 1e6;
            assert!((got - want).abs() / want < 0.07, "q{q}: {got} µs, want {want}");
        }
        assert!(l.quantile(1.0) <= l.max());
        let mut m = Latency::default();
        m.record(Duration::from_secs(100));
        m.merge(&l);
        assert_eq!(m.count(), 10_001);
        assert_eq!(m.max(), Duration::from_secs(100));
        m.clear();
        assert_eq!(m.count(), 0);
    }
}
