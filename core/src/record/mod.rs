//! Recording: the RTP packets of one track in, the bytes of a container file out.
//!
//! A [`TrackRecorder`] turns one published track into one file: Opus into Ogg
//! (RFC 7845), VP8 and VP9 into IVF, H.264 into a raw Annex-B stream. It
//! decides every byte and says where it goes as [`FileOp`]s; the shell only
//! appends them to a file (and patches header fields in place). Each append
//! is a whole unit (a header, an Ogg page, an IVF frame), so a file cut short
//! by a crash is readable up to the last complete write.
//!
//! # Time
//!
//! The recorder reads no clock. Media time comes from RTP timestamps, tied to
//! the sender's wallclock by the track's first RTCP sender report:
//! `t = sr.ntp_micros + (rtp - sr.rtp) * 1e6 / clock_rate`, with the RTP
//! timestamp unwrapped to 64 bits. All tracks of one participant share an
//! [`Origin`]: the first frame any of them writes sets it, and every file's
//! timestamps are `t - origin`, so audio and video line up as the sender
//! captured them, not as each file happened to start. Frames before the
//! origin are dropped: if the track that maps first starts later than another
//! track's first frames, those are lost (for video, until the next keyframe,
//! which is asked for).
//!
//! Until its first sender report a track holds its packets (at most
//! [`STASH_PACKETS`] packets, [`STASH_BYTES`] bytes or [`STASH_SPAN`] of
//! arrival time). Past that, or at [`TrackRecorder::finish`], it falls back to
//! mapping by arrival: its first held packet is placed at its arrival time,
//! related to the sender clock through an anchor that an SR-mapped track of
//! the same participant left in the [`Origin`] (its packet's arrival and media
//! time); with no such anchor the whole participant runs on arrival time.
//! Later tracks follow whichever clock the participant runs on.
//! [`RecStats::mapped_by_arrival`] says when this happened.
//!
//! # Loss
//!
//! Packets pass a small reorder buffer keyed by extended sequence number;
//! duplicates (RTX) are dropped. For video, a frame missing a packet is
//! dropped, and so is every frame after it until a keyframe, which
//! [`TrackRecorder::wants_keyframe`] asks for. For Opus, a lost packet is a
//! jump in granule position, which decoders fill with concealment.
//!
//! # Bounds
//!
//! No input panics, and memory is bounded: payloads over [`MAX_PAYLOAD`]
//! bytes and frames over [`MAX_FRAME`] bytes are dropped, and every buffer
//! has a packet count limit.

mod ivf;
mod ogg;
mod payload;
mod reorder;

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use reorder::{Held, Push, Reorder};

/// Packets held per track while waiting for its first sender report.
pub const STASH_PACKETS: usize = 2000;
/// Bytes of payload held per track while waiting for its first sender report.
pub const STASH_BYTES: usize = 4 << 20;
/// Arrival-time span held per track while waiting for its first sender report.
pub const STASH_SPAN: Duration = Duration::from_secs(10);
/// Largest RTP payload recorded; larger ones are counted malformed.
pub const MAX_PAYLOAD: usize = 16 << 10;
/// Largest video frame recorded; larger ones are dropped as lost.
pub const MAX_FRAME: usize = 4 << 20;
/// How often (in media time) an IVF header's duration is rewritten.
const IVF_PATCH_EVERY_MS: i64 = 1000;
/// While frames wait for a keyframe, it is asked for again after this long (by arrival), in case
/// the request or the keyframe was lost.
pub const KEYFRAME_REASK: Duration = Duration::from_secs(1);
/// Ogg stream serial number: fixed, each track is its own file.
const OGG_SERIAL: u32 = 0x5357_4244; // "SWBD"

/// A codec that can be recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RecCodec {
    /// Opus, into Ogg.
    Opus,
    /// VP8, into IVF (VP80).
    Vp8,
    /// VP9, into IVF (VP90), spatial layer 0 only.
    Vp9,
    /// H.264, into a raw Annex-B stream.
    H264,
}

impl RecCodec {
    /// The codec of an SDP/str0m MIME type such as "audio/opus" or "video/VP8" (case-insensitive).
    pub fn from_mime(mime: &str) -> Option<Self> {
        let codecs =
            [("audio/opus", Self::Opus), ("video/vp8", Self::Vp8), ("video/vp9", Self::Vp9), ("video/h264", Self::H264)];
        codecs.into_iter().find(|(m, _)| m.eq_ignore_ascii_case(mime)).map(|(_, c)| c)
    }

    /// Whether this is a video codec.
    pub fn is_video(self) -> bool {
        self != Self::Opus
    }
}

/// One RTP packet of the recorded track.
#[derive(Debug, Clone, Copy)]
pub struct RecPacket<'a> {
    /// Extended (64-bit) sequence number, as str0m gives it.
    pub seq: u64,
    /// RTP timestamp.
    pub ts: u32,
    /// RTP marker bit.
    pub marker: bool,
    /// RTP payload.
    pub payload: &'a [u8],
    /// When it arrived.
    pub arrival: Instant,
}

/// The timing part of an RTCP sender report (RFC 3550 §6.4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SenderReport {
    /// The sender's wallclock (unix µs) from the NTP timestamp.
    pub ntp_micros: u64,
    /// The RTP timestamp that corresponds to it.
    pub rtp: u32,
}

/// What to do to the track's file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileOp {
    /// Append these bytes at the end.
    Append(Vec<u8>),
    /// Overwrite bytes already written (a header field) at this offset.
    Patch {
        /// Offset from the start of the file.
        offset: u64,
        /// The new bytes.
        bytes: Vec<u8>,
    },
}

/// The shared time origin of one participant's tracks, so audio and video line up.
/// Create one per participant with `Origin::default()` and pass it to each of its recorders.
#[derive(Debug, Default, Clone)]
pub struct Origin {
    /// The participant's time zero (sender wallclock µs, or arrival-based µs, see `by_arrival`).
    start: Option<i64>,
    /// An arrival instant and the participant-clock time of a packet that arrived then.
    anchor: Option<(Instant, i64)>,
    /// The participant's clock is arrival time (no track had a sender report in time).
    by_arrival: bool,
}

impl Origin {
    /// The participant's time zero in sender wallclock µs, once a track has written a frame
    /// (None also when the participant runs on arrival time, which has no wallclock).
    pub fn micros(&self) -> Option<u64> {
        if self.by_arrival {
            return None;
        }
        self.start.and_then(|s| u64::try_from(s).ok())
    }
}

/// Counters of one track recorder.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecStats {
    /// Packets given to [`TrackRecorder::packet`].
    pub packets: u64,
    /// Packets dropped as duplicates or as too late to put in order.
    pub duplicates: u64,
    /// Sequence numbers never received (given up by the reorder buffer).
    pub lost: u64,
    /// Packets dropped as unparseable, oversized or out of time order.
    pub malformed: u64,
    /// Video frames or Opus packets written.
    pub frames_written: u64,
    /// Opus samples (48 kHz) written.
    pub samples_written: u64,
    /// Video frames dropped: incomplete, or not decodable while waiting for a keyframe.
    pub frames_dropped: u64,
    /// Frames or Opus packets dropped because they were before the participant's origin.
    pub before_origin: u64,
    /// Times [`TrackRecorder::wants_keyframe`] said yes.
    pub keyframe_requests: u64,
    /// Bytes appended to the file.
    pub bytes: u64,
    /// The track was placed in time by packet arrival, not by a sender report.
    pub mapped_by_arrival: bool,
}

/// RTP timestamp unwrapping to 64 bits, around the highest timestamp seen.
#[derive(Debug, Default)]
struct Unwrap {
    highest: Option<i64>,
}

impl Unwrap {
    fn ext(&mut self, ts: u32) -> i64 {
        let Some(h) = self.highest else {
            self.highest = Some(i64::from(ts));
            return i64::from(ts);
        };
        // The nearest value with these low 32 bits: at most 2^31 either way.
        let ext = h.saturating_add(i64::from(ts.wrapping_sub(h as u32) as i32));
        self.highest = Some(h.max(ext));
        ext
    }
}

/// Media time of one RTP timestamp: `micros` at `ts`.
#[derive(Debug, Clone, Copy)]
struct Mapping {
    micros: i64,
    ts: i64,
}

/// A video frame being assembled.
#[derive(Debug)]
struct Frame {
    ts: i64,
    data: Vec<u8>,
    /// A packet is missing or unusable: the frame will be dropped.
    damaged: bool,
    /// H.264: an IDR slice or SPS was seen.
    keyframe: bool,
    /// H.264: a fragmented NAL unit is open.
    fu_open: bool,
}

/// Where the file stands.
#[derive(Debug, Default)]
struct FileState {
    /// Bytes appended so far: the offset of the next append.
    len: u64,
    started: bool,
    /// Ogg: next page sequence number, the last page (offset, bytes) for the final EOS patch,
    /// and the granule at the end of the last packet.
    page_seq: u32,
    last_page: Option<(u64, Vec<u8>)>,
    granule: Option<i64>,
    /// IVF: first and last pts, the last frame interval and when the duration was last patched.
    first_pts: Option<i64>,
    last_pts: Option<i64>,
    interval: i64,
    patched_at: i64,
}

/// Records one track: RTP packets in, [`FileOp`]s for one file out. See the module docs.
#[derive(Debug)]
pub struct TrackRecorder {
    codec: RecCodec,
    clock_rate: u32,
    unwrap: Unwrap,
    /// The first sender report: (wallclock µs, unwrapped RTP timestamp).
    sr: Option<Mapping>,
    map: Option<Mapping>,
    stash: VecDeque<Held>,
    stash_bytes: usize,
    reorder: Reorder,
    frame: Option<Frame>,
    /// Frames are dropped until a keyframe is written.
    waiting_key: bool,
    /// When a keyframe was last asked for during this wait (arrival time).
    key_asked_at: Option<Instant>,
    /// The latest arrival seen: the recorder's only sense of time passing.
    latest_arrival: Option<Instant>,
    key_request: bool,
    file: FileState,
    stats: RecStats,
    finished: bool,
    /// Audio of a participant that also sends video: its packets wait (at most
    /// [`DEFER_ORIGIN_PACKETS`]) for the video to set the participant's time
    /// zero at its first keyframe, so both files start at the same instant.
    defer_origin: bool,
    deferred: VecDeque<Held>,
}

/// Most audio packets (3 s of 20 ms Opus frames) that wait for the video to start; then audio starts alone.
pub const DEFER_ORIGIN_PACKETS: usize = 150;

impl TrackRecorder {
    /// A recorder for one track of `codec` whose RTP clock runs at `clock_rate` Hz.
    pub fn new(codec: RecCodec, clock_rate: u32) -> Self {
        // Video waits longer for a missing packet (a NACK round trip), audio keeps latency short.
        let reorder = if codec.is_video() {
            Reorder::new(128, Duration::from_millis(500))
        } else {
            Reorder::new(16, Duration::from_millis(100))
        };
        TrackRecorder {
            codec,
            clock_rate: clock_rate.max(1),
            unwrap: Unwrap::default(),
            sr: None,
            map: None,
            stash: VecDeque::new(),
            stash_bytes: 0,
            reorder,
            frame: None,
            waiting_key: true,
            key_asked_at: None,
            latest_arrival: None,
            key_request: false,
            defer_origin: false,
            deferred: VecDeque::new(),
            file: FileState::default(),
            stats: RecStats::default(),
            finished: false,
        }
    }

    /// The file name extension for this codec's container.
    pub fn extension(&self) -> &'static str {
        match self.codec {
            RecCodec::Opus => "ogg",
            RecCodec::Vp8 | RecCodec::Vp9 => "ivf",
            RecCodec::H264 => "h264",
        }
    }

    /// Take one RTP packet of the track.
    pub fn packet(&mut self, p: &RecPacket<'_>, origin: &mut Origin, out: &mut Vec<FileOp>) {
        if self.finished {
            return;
        }
        self.stats.packets += 1;
        self.latest_arrival = Some(self.latest_arrival.map_or(p.arrival, |l| l.max(p.arrival)));
        if p.payload.len() > MAX_PAYLOAD {
            self.stats.malformed += 1;
            return;
        }
        let held =
            Held { seq: p.seq, ts: self.unwrap.ext(p.ts), marker: p.marker, payload: p.payload.to_vec(), arrival: p.arrival };
        if self.map.is_some() {
            if origin.anchor.is_none() && !origin.by_arrival {
                origin.anchor = Some((held.arrival, self.micros(held.ts)));
            }
            self.order(held, origin, out);
            return;
        }
        self.stash_bytes += held.payload.len();
        self.stash.push_back(held);
        self.try_map(false, origin, out);
    }

    /// Take an RTCP sender report of the track. Only the first one is used.
    pub fn sender_report(&mut self, sr: SenderReport, origin: &mut Origin, out: &mut Vec<FileOp>) {
        if self.finished || self.sr.is_some() {
            return;
        }
        let micros = i64::try_from(sr.ntp_micros).unwrap_or(i64::MAX);
        self.sr = Some(Mapping { micros, ts: self.unwrap.ext(sr.rtp) });
        self.try_map(false, origin, out);
    }

    /// The track ended: write what can be written and the final header patches.
    /// Later calls do nothing.
    pub fn finish(&mut self, origin: &mut Origin, out: &mut Vec<FileOp>) {
        if self.finished {
            return;
        }
        self.try_map(true, origin, out);
        self.release(true, origin, out);
        // Audio still waiting for a video that never started: written from its own start.
        self.defer_origin = false;
        while let Some(held) = self.deferred.pop_front() {
            self.write_opus(&held, origin, out);
        }
        if self.frame.take().is_some() {
            // No marker: its last packets may never have come.
            self.stats.frames_dropped += 1;
        }
        self.finished = true;
        match self.codec {
            RecCodec::Opus => {
                if let Some((offset, mut page)) = self.file.last_page.take() {
                    if let Some(flags) = page.get_mut(ogg::FLAGS_AT) {
                        *flags |= ogg::EOS;
                    }
                    ogg::seal(&mut page);
                    if let Some(bytes) = page.get(ogg::FLAGS_AT..ogg::CRC_END) {
                        out.push(FileOp::Patch { offset: offset + ogg::FLAGS_AT as u64, bytes: bytes.to_vec() });
                    }
                }
            }
            RecCodec::Vp8 | RecCodec::Vp9 => self.patch_duration(out),
            RecCodec::H264 => {}
        }
    }

    /// For an audio track of a participant that also sends video: do not set
    /// the participant's time zero, wait (a bounded while) for the video's first
    /// keyframe to set it, so that both files start together.
    pub fn defer_origin_to_video(&mut self) {
        if self.codec == RecCodec::Opus {
            self.defer_origin = true;
        }
    }

    /// True once after a video frame was lost (or a frame had to be skipped
    /// while waiting for a keyframe): the SFU should send a PLI. While frames
    /// keep waiting, it turns true again every [`KEYFRAME_REASK`].
    pub fn wants_keyframe(&mut self) -> bool {
        let yes = std::mem::take(&mut self.key_request);
        if yes {
            self.stats.keyframe_requests += 1;
        }
        yes
    }

    /// Counters so far.
    pub fn stats(&self) -> RecStats {
        RecStats { lost: self.reorder.lost, ..self.stats }
    }

    /// Set the track's mapping to media time if it can be set now, then let the held packets through.
    fn try_map(&mut self, finishing: bool, origin: &mut Origin, out: &mut Vec<FileOp>) {
        if self.map.is_some() {
            return;
        }
        if let (Some(sr), false) = (self.sr, origin.by_arrival) {
            self.map = Some(sr);
            if let (None, Some(last)) = (origin.anchor, self.stash.back()) {
                origin.anchor = Some((last.arrival, self.micros(last.ts)));
            }
        } else {
            let (Some(first), Some(last)) = (self.stash.front(), self.stash.back()) else { return };
            let overflow = self.stash.len() > STASH_PACKETS
                || self.stash_bytes > STASH_BYTES
                || last.arrival.saturating_duration_since(first.arrival) > STASH_SPAN;
            let follow = origin.by_arrival && self.sr.is_some();
            if !(overflow || follow || finishing) {
                return;
            }
            let micros = match origin.anchor {
                Some((at, micros)) => micros.saturating_add(signed_micros(first.arrival, at)),
                None => {
                    origin.by_arrival = true;
                    origin.anchor = Some((first.arrival, 0));
                    0
                }
            };
            self.map = Some(Mapping { micros, ts: first.ts });
            self.stats.mapped_by_arrival = true;
        }
        while let Some(held) = self.stash.pop_front() {
            self.order(held, origin, out);
        }
        self.stash_bytes = 0;
    }

    /// Put a packet through the reorder buffer and handle what comes out in order.
    fn order(&mut self, held: Held, origin: &mut Origin, out: &mut Vec<FileOp>) {
        if self.reorder.push(held) == Push::Stale {
            self.stats.duplicates += 1;
        }
        self.release(false, origin, out);
    }

    fn release(&mut self, flush: bool, origin: &mut Origin, out: &mut Vec<FileOp>) {
        while let Some((held, gap)) = self.reorder.pop(flush) {
            match self.codec {
                RecCodec::Opus => self.opus(&held, origin, out),
                _ => self.video(held, gap, origin, out),
            }
        }
    }

    /// Sender-clock µs of an unwrapped RTP timestamp.
    fn micros(&self, ts: i64) -> i64 {
        let Some(m) = self.map.or(self.sr) else { return 0 };
        let delta = i128::from(ts) - i128::from(m.ts);
        let t = i128::from(m.micros) + delta * 1_000_000 / i128::from(self.clock_rate);
        clamp(t)
    }

    /// Time since `start` of an unwrapped RTP timestamp, in units of 1/`rate` s, rounded down.
    /// Exact in RTP ticks: a 48 kHz stream gets the same granule steps as its timestamps.
    fn since(&self, ts: i64, start: i64, rate: i64) -> i64 {
        let Some(m) = self.map else { return 0 };
        let clock = i128::from(self.clock_rate);
        let num = (i128::from(m.micros) - i128::from(start)) * clock + (i128::from(ts) - i128::from(m.ts)) * 1_000_000;
        clamp((num * i128::from(rate)).div_euclid(1_000_000 * clock))
    }

    fn append(&mut self, bytes: Vec<u8>, out: &mut Vec<FileOp>) {
        self.file.len += bytes.len() as u64;
        self.stats.bytes += bytes.len() as u64;
        out.push(FileOp::Append(bytes));
    }

    /// Opus packets in order: held while they wait for the participant's video to set its time zero,
    /// then written from that instant on (the ones before it are dropped as before the origin).
    fn opus(&mut self, p: &Held, origin: &mut Origin, out: &mut Vec<FileOp>) {
        if self.defer_origin && origin.start.is_none() && !self.finished {
            self.deferred.push_back(p.clone());
            if self.deferred.len() < DEFER_ORIGIN_PACKETS {
                return;
            }
            // The video did not start in time: audio starts alone.
            self.defer_origin = false;
        }
        self.defer_origin = false;
        while let Some(held) = self.deferred.pop_front() {
            self.write_opus(&held, origin, out);
        }
        self.write_opus(p, origin, out)
    }

    fn write_opus(&mut self, p: &Held, origin: &mut Origin, out: &mut Vec<FileOp>) {
        let Some(samples) = ogg::opus_samples(&p.payload) else {
            self.stats.malformed += 1;
            return;
        };
        let start = *origin.start.get_or_insert(self.micros(p.ts));
        let begin = self.since(p.ts, start, 48_000);
        if begin < 0 {
            self.stats.before_origin += 1;
            return;
        }
        let end = begin.saturating_add(i64::from(samples));
        if self.file.granule.is_some_and(|g| begin < g) {
            // Overlaps audio already written: the timestamps went backwards.
            self.stats.malformed += 1;
            return;
        }
        if !self.file.started {
            self.file.started = true;
            let mut headers = Vec::new();
            for (flags, packet) in [(ogg::BOS, ogg::opus_head()), (0, ogg::opus_tags())] {
                headers.extend(ogg::page(flags, 0, OGG_SERIAL, self.file.page_seq, &packet).unwrap_or_default());
                self.file.page_seq += 1;
            }
            self.file.last_page = None;
            self.append(headers, out);
        }
        let Some(page) = ogg::page(0, end as u64, OGG_SERIAL, self.file.page_seq, &p.payload) else {
            self.stats.malformed += 1;
            return;
        };
        self.file.page_seq = self.file.page_seq.wrapping_add(1);
        self.file.granule = Some(end);
        self.file.last_page = Some((self.file.len, page.clone()));
        self.append(page, out);
        self.stats.frames_written += 1;
        self.stats.samples_written += u64::from(samples);
    }

    fn video(&mut self, p: Held, gap: bool, origin: &mut Origin, out: &mut Vec<FileOp>) {
        if gap {
            // The frame in progress lost a packet or its end, or whole frames were lost between
            // frames: either way the chain of reference frames is broken until a keyframe.
            if let Some(f) = self.frame.as_mut() {
                f.damaged = true;
            }
            self.waiting_key = true;
            self.ask_keyframe();
        }
        if self.frame.as_ref().is_some_and(|f| f.ts != p.ts) {
            // The next frame began without a marker: the previous one ended.
            if let Some(f) = self.frame.take() {
                self.complete(f, origin, out);
            }
        }
        let parsed = match self.codec {
            RecCodec::Vp8 => payload::vp8(&p.payload),
            RecCodec::Vp9 => payload::vp9(&p.payload),
            _ => Some(payload::Vpx { head: payload::h264_head(&p.payload), end: false, skip: false, data: &[] }),
        };
        let Some(parsed) = parsed else {
            self.stats.malformed += 1;
            let frame = self.frame.get_or_insert_with(|| Frame::new(p.ts));
            frame.damaged = true;
            if p.marker {
                if let Some(f) = self.frame.take() {
                    self.complete(f, origin, out);
                }
            }
            return;
        };
        if parsed.skip {
            if p.marker {
                if let Some(f) = self.frame.take() {
                    self.complete(f, origin, out);
                }
            }
            return;
        }
        let frame = self.frame.get_or_insert_with(|| Frame { damaged: !parsed.head, ..Frame::new(p.ts) });
        if !frame.damaged {
            if self.codec == RecCodec::H264 {
                match payload::h264(&p.payload, &mut frame.data, &mut frame.fu_open) {
                    Some(key) => frame.keyframe |= key,
                    None => frame.damaged = true,
                }
            } else {
                frame.data.extend_from_slice(parsed.data);
            }
            if frame.data.len() > MAX_FRAME {
                frame.damaged = true;
            }
            if frame.damaged {
                frame.data = Vec::new();
            }
        }
        if p.marker || parsed.end {
            if let Some(f) = self.frame.take() {
                self.complete(f, origin, out);
            }
        }
    }

    /// A frame's last packet is in: write it, or drop it and wait for a keyframe.
    fn complete(&mut self, frame: Frame, origin: &mut Origin, out: &mut Vec<FileOp>) {
        if frame.damaged || frame.fu_open || frame.data.is_empty() {
            self.stats.frames_dropped += 1;
            self.waiting_key = true;
            self.ask_keyframe();
            return;
        }
        let (keyframe, size) = match self.codec {
            RecCodec::Vp8 => (payload::vp8_keyframe(&frame.data), payload::vp8_size(&frame.data)),
            RecCodec::Vp9 => payload::vp9_frame(&frame.data).unwrap_or((false, None)),
            _ => (frame.keyframe, None),
        };
        if self.waiting_key && !keyframe {
            self.stats.frames_dropped += 1;
            self.ask_keyframe();
            return;
        }
        let start = *origin.start.get_or_insert(self.micros(frame.ts));
        let pts = self.since(frame.ts, start, 1000);
        if pts < 0 {
            self.stats.before_origin += 1;
            self.ask_keyframe_if_waiting();
            return;
        }
        if self.file.last_pts.is_some_and(|last| pts < last) {
            self.stats.malformed += 1;
            self.ask_keyframe_if_waiting();
            return;
        }
        self.waiting_key = false;
        self.key_asked_at = None;
        if self.codec == RecCodec::H264 {
            self.file.started = true;
            self.append(frame.data, out);
            self.stats.frames_written += 1;
            return;
        }
        if !self.file.started {
            self.file.started = true;
            let fourcc = if self.codec == RecCodec::Vp8 { b"VP80" } else { b"VP90" };
            let (w, h) = size.unwrap_or((0, 0));
            self.append(ivf::header(fourcc, w, h, 0).to_vec(), out);
            self.file.first_pts = Some(pts);
            self.file.patched_at = pts;
        }
        if let Some(last) = self.file.last_pts {
            self.file.interval = pts - last;
        }
        self.file.last_pts = Some(pts);
        self.append(ivf::frame(pts as u64, &frame.data), out);
        self.stats.frames_written += 1;
        if pts - self.file.patched_at >= IVF_PATCH_EVERY_MS {
            self.file.patched_at = pts;
            self.patch_duration(out);
        }
    }

    /// Ask for a keyframe, unless one was asked for less than [`KEYFRAME_REASK`] ago (by arrival).
    fn ask_keyframe(&mut self) {
        let now = self.latest_arrival;
        let recent = match (self.key_asked_at, now) {
            (Some(asked), Some(now)) => now.saturating_duration_since(asked) < KEYFRAME_REASK,
            (Some(_), None) => true,
            (None, _) => false,
        };
        if !recent {
            self.key_asked_at = now;
            self.key_request = true;
        }
    }

    fn ask_keyframe_if_waiting(&mut self) {
        if self.waiting_key {
            self.ask_keyframe();
        }
    }

    /// Rewrite the IVF header's duration: from the first frame to the end of the last one.
    fn patch_duration(&mut self, out: &mut Vec<FileOp>) {
        let (Some(first), Some(last)) = (self.file.first_pts, self.file.last_pts) else { return };
        let ms = last.saturating_add(self.file.interval).saturating_sub(first);
        let ms = u32::try_from(ms).unwrap_or(u32::MAX);
        out.push(FileOp::Patch { offset: ivf::DURATION_AT, bytes: ms.to_le_bytes().to_vec() });
    }
}

impl Frame {
    fn new(ts: i64) -> Self {
        Frame { ts, data: Vec::new(), damaged: false, keyframe: false, fu_open: false }
    }
}

/// `a - b` in µs, negative when `a` is earlier.
fn signed_micros(a: Instant, b: Instant) -> i64 {
    match a.checked_duration_since(b) {
        Some(d) => clamp(d.as_micros() as i128),
        None => clamp(-(b.saturating_duration_since(a).as_micros() as i128)),
    }
}

fn clamp(v: i128) -> i64 {
    i64::try_from(v).unwrap_or(if v < 0 { i64::MIN } else { i64::MAX })
}

#[cfg(test)]
mod tests;
