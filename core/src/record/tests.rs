//! Recorder tests with synthetic packets: timing, loss, keyframes, hostile input.

use super::*;
use proptest::prelude::*;

const SECOND: u64 = 1_000_000;
/// A sender wallclock (unix µs) for the SRs.
const WALL: u64 = 1_700_000_000 * SECOND;

/// A file as the shell would write it.
#[derive(Default)]
struct Disk(Vec<u8>);

impl Disk {
    fn apply(&mut self, ops: &mut Vec<FileOp>) {
        for op in ops.drain(..) {
            match op {
                FileOp::Append(b) => self.0.extend_from_slice(&b),
                FileOp::Patch { offset, bytes } => {
                    let at = offset as usize;
                    self.0[at..at + bytes.len()].copy_from_slice(&bytes);
                }
            }
        }
    }
}

struct Rig {
    rec: TrackRecorder,
    disk: Disk,
    ops: Vec<FileOp>,
    t0: Instant,
}

impl Rig {
    fn new(codec: RecCodec, clock: u32) -> Self {
        Rig { rec: TrackRecorder::new(codec, clock), disk: Disk::default(), ops: Vec::new(), t0: crate::time::test_start() }
    }

    fn packet(&mut self, origin: &mut Origin, seq: u64, ts: u32, marker: bool, payload: &[u8], at_ms: u64) {
        let p = RecPacket { seq, ts, marker, payload, arrival: self.t0 + Duration::from_millis(at_ms) };
        self.rec.packet(&p, origin, &mut self.ops);
        self.disk.apply(&mut self.ops);
    }

    fn sr(&mut self, origin: &mut Origin, ntp_micros: u64, rtp: u32) {
        self.rec.sender_report(SenderReport { ntp_micros, rtp }, origin, &mut self.ops);
        self.disk.apply(&mut self.ops);
    }

    fn finish(&mut self, origin: &mut Origin) {
        self.rec.finish(origin, &mut self.ops);
        self.disk.apply(&mut self.ops);
    }
}

/// Ogg pages of a file: (flags, granule, packet), with every CRC checked.
fn ogg_pages(file: &[u8]) -> Vec<(u8, u64, Vec<u8>)> {
    let mut pages = Vec::new();
    let mut at = 0;
    while at < file.len() {
        assert_eq!(&file[at..at + 4], b"OggS");
        let n = file[at + 26] as usize;
        let lacing = &file[at + 27..at + 27 + n];
        let len: usize = lacing.iter().map(|&l| l as usize).sum();
        let end = at + 27 + n + len;
        let mut page = file[at..end].to_vec();
        let stored = u32::from_le_bytes(page[22..26].try_into().unwrap());
        page[22..26].fill(0);
        assert_eq!(ogg::crc(&page), stored, "page CRC at {at}");
        let granule = u64::from_le_bytes(file[at + 6..at + 14].try_into().unwrap());
        pages.push((file[at + 5], granule, file[at + 27 + n..end].to_vec()));
        at = end;
    }
    pages
}

/// IVF frames of a file: (pts, first byte).
fn ivf_frames(file: &[u8]) -> Vec<(u64, u8)> {
    let mut frames = Vec::new();
    let mut at = 32;
    while at < file.len() {
        let len = u32::from_le_bytes(file[at..at + 4].try_into().unwrap()) as usize;
        let pts = u64::from_le_bytes(file[at + 4..at + 12].try_into().unwrap());
        frames.push((pts, file[at + 12]));
        at += 12 + len;
    }
    frames
}

/// A 20 ms CELT Opus packet.
const OPUS: [u8; 3] = [31 << 3, 0xaa, 0xbb];

/// VP8 frame bytes: a 320x240 keyframe or a delta frame, `len` long.
fn vp8_frame(key: bool, len: usize) -> Vec<u8> {
    let mut f = if key { vec![0x50, 0x2d, 0x00, 0x9d, 0x01, 0x2a, 0x40, 0x01, 0xf0, 0x00] } else { vec![0x51, 0, 0] };
    f.resize(len, 0x77);
    f
}

/// RTP payloads of one VP8 frame, `n` packets.
fn vp8_packets(frame: &[u8], n: usize) -> Vec<Vec<u8>> {
    let chunk = frame.len().div_ceil(n);
    frame.chunks(chunk).enumerate().map(|(i, c)| [&[if i == 0 { 0x10 } else { 0x00 }][..], c].concat()).collect()
}

#[test]
fn codecs_from_mime() {
    assert_eq!(RecCodec::from_mime("audio/opus"), Some(RecCodec::Opus));
    assert_eq!(RecCodec::from_mime("video/VP8"), Some(RecCodec::Vp8));
    assert_eq!(RecCodec::from_mime("video/vp9"), Some(RecCodec::Vp9));
    assert_eq!(RecCodec::from_mime("video/H264"), Some(RecCodec::H264));
    assert_eq!(RecCodec::from_mime("video/AV1"), None);
    assert_eq!(TrackRecorder::new(RecCodec::Vp9, 90_000).extension(), "ivf");
}

#[test]
fn unwrap_rtp_timestamps() {
    let mut u = Unwrap::default();
    assert_eq!(u.ext(u32::MAX - 10), i64::from(u32::MAX - 10));
    assert_eq!(u.ext(5), (1 << 32) + 5, "forward across the wrap");
    assert_eq!(u.ext(u32::MAX - 20), i64::from(u32::MAX - 20), "a late packet from before the wrap");
    assert_eq!(u.ext(1 << 31), (1 << 32) + (1 << 31));
}

#[test]
fn sender_reports_line_audio_up_with_video_across_a_timestamp_wrap() {
    let mut origin = Origin::default();
    let mut video = Rig::new(RecCodec::Vp8, 90_000);
    let mut audio = Rig::new(RecCodec::Opus, 48_000);
    // Video's SR: wallclock WALL at rtp 1000. Audio's SR: WALL at u32::MAX - 479, so its
    // timestamps wrap 10 ms of audio later.
    video.sr(&mut origin, WALL, 1000);
    let audio_rtp0 = u32::MAX - 479;
    audio.sr(&mut origin, WALL, audio_rtp0);
    // Video's first keyframe is at WALL exactly; audio starts 40 ms later.
    let key = vp8_frame(true, 300);
    for (i, p) in vp8_packets(&key, 3).iter().enumerate() {
        video.packet(&mut origin, 1 + i as u64, 1000, i == 2, p, 0);
    }
    video.finish(&mut origin);
    assert_eq!(origin.micros(), Some(WALL), "the first written frame sets the origin");
    for k in 0..5u32 {
        let ts = audio_rtp0.wrapping_add(40 * 48 + k * 960);
        audio.packet(&mut origin, 100 + u64::from(k), ts, false, &OPUS, 40 + 20 * u64::from(k));
    }
    // A later SR with different numbers is ignored.
    audio.sr(&mut origin, WALL + 77 * SECOND, 0);
    audio.packet(&mut origin, 105, audio_rtp0.wrapping_add(1920 + 5 * 960), false, &OPUS, 140);
    audio.finish(&mut origin);

    let pages = ogg_pages(&audio.disk.0);
    assert_eq!(&pages[0].2[..8], b"OpusHead");
    assert_eq!(pages[0].0, ogg::BOS);
    assert_eq!(&pages[1].2[..8], b"OpusTags");
    let granules: Vec<u64> = pages[2..].iter().map(|p| p.1).collect();
    // 40 ms = 1920 samples before the first packet, each page ends its packet.
    assert_eq!(granules, [2880, 3840, 4800, 5760, 6720, 7680]);
    assert_eq!(pages.last().unwrap().0, ogg::EOS, "EOS patched onto the last page, CRC still valid");
    assert_eq!(audio.rec.stats().samples_written, 6 * 960);

    assert_eq!(&video.disk.0[8..12], b"VP80");
    assert_eq!(&video.disk.0[12..16], &[0x40, 0x01, 0xf0, 0x00], "320x240 from the keyframe");
    assert_eq!(ivf_frames(&video.disk.0), [(0, 0x50)]);
}

#[test]
fn packets_before_the_first_sr_wait_for_it() {
    let mut origin = Origin::default();
    let mut audio = Rig::new(RecCodec::Opus, 48_000);
    for k in 0..10u32 {
        audio.packet(&mut origin, u64::from(k), 5000 + k * 960, false, &OPUS, 20 * u64::from(k));
    }
    assert!(audio.disk.0.is_empty());
    // SR: rtp 5000 was at WALL + 1 s; a video track of the same participant began at WALL + 0.9 s.
    origin.start = Some((WALL + 900_000) as i64);
    audio.sr(&mut origin, WALL + SECOND, 5000);
    let granules: Vec<u64> = ogg_pages(&audio.disk.0)[2..].iter().map(|p| p.1).collect();
    assert_eq!(granules.len(), 10);
    assert_eq!(granules[0], 4800 + 960, "100 ms after the origin");
    assert!(!audio.rec.stats().mapped_by_arrival);
}

#[test]
fn frames_before_the_origin_are_dropped() {
    let mut origin = Origin { start: Some((WALL + SECOND) as i64), ..Origin::default() };
    let mut audio = Rig::new(RecCodec::Opus, 48_000);
    audio.sr(&mut origin, WALL, 0);
    for k in 0..60u32 {
        audio.packet(&mut origin, u64::from(k), k * 960, false, &OPUS, 20 * u64::from(k));
    }
    // Packets at 0..=980 ms are before the origin; the one at 1000 ms starts at granule 0.
    assert_eq!(audio.rec.stats().before_origin, 50);
    assert_eq!(ogg_pages(&audio.disk.0)[2].1, 960);
}

#[test]
fn without_any_sr_a_track_falls_back_to_arrival_time() {
    let mut origin = Origin::default();
    let mut audio = Rig::new(RecCodec::Opus, 48_000);
    // Arriving every 2 ms, so the count limit comes before the 10 s one.
    for k in 0..=STASH_PACKETS as u32 {
        audio.packet(&mut origin, u64::from(k), k * 960, false, &OPUS, 2 * u64::from(k));
        if k < STASH_PACKETS as u32 {
            assert!(audio.disk.0.is_empty(), "held until the stash is full");
        }
    }
    assert!(audio.rec.stats().mapped_by_arrival);
    assert!(origin.by_arrival);
    assert_eq!(audio.rec.stats().frames_written, STASH_PACKETS as u64 + 1);
    // A video track of the same participant that does get an SR follows the arrival clock:
    // its first frame arrives 50 s after audio's first packet.
    let mut video = Rig { t0: audio.t0, ..Rig::new(RecCodec::Vp8, 90_000) };
    video.sr(&mut origin, WALL, 0);
    for (i, p) in vp8_packets(&vp8_frame(true, 100), 2).iter().enumerate() {
        video.packet(&mut origin, i as u64, 0, i == 1, p, 50_000);
    }
    video.finish(&mut origin);
    assert!(video.rec.stats().mapped_by_arrival);
    assert_eq!(ivf_frames(&video.disk.0), [(50_000, 0x50)]);
}

#[test]
fn finish_without_sr_writes_by_arrival() {
    let mut origin = Origin::default();
    let mut audio = Rig::new(RecCodec::Opus, 48_000);
    for k in 0..3u32 {
        audio.packet(&mut origin, u64::from(k), k * 960, false, &OPUS, 20 * u64::from(k));
    }
    audio.finish(&mut origin);
    let pages = ogg_pages(&audio.disk.0);
    assert_eq!(pages.len(), 5);
    assert_eq!(pages[4], (ogg::EOS, 2880, OPUS.to_vec()));
    // Finished means finished.
    audio.packet(&mut origin, 3, 3 * 960, false, &OPUS, 60);
    assert_eq!(audio.rec.stats().packets, 3);
}

/// Feed VP8 frames (each 3 packets, 30 fps) to a recorder with an SR at the start,
/// skipping the packets whose sequence numbers are in `lose`.
fn vp8_run(keyframes: &[usize], frames: usize, lose: &[u64], reorder: bool) -> (Rig, Vec<bool>) {
    let mut origin = Origin::default();
    let mut rig = Rig::new(RecCodec::Vp8, 90_000);
    rig.sr(&mut origin, WALL, 0);
    let mut asks = Vec::new();
    let mut seq = 0;
    let mut pending: Option<(u64, u32, bool, Vec<u8>)> = None;
    for f in 0..frames {
        let frame = vp8_frame(keyframes.contains(&f), 90);
        let ts = f as u32 * 3000;
        for (i, p) in vp8_packets(&frame, 3).into_iter().enumerate() {
            let at = f as u64 * 33;
            if !lose.contains(&seq) {
                if reorder && i == 0 {
                    // Hold the frame's first packet back behind the second.
                    pending = Some((seq, ts, false, p));
                } else {
                    rig.packet(&mut origin, seq, ts, i == 2, &p, at);
                    if let Some((s, t, m, p)) = pending.take() {
                        rig.packet(&mut origin, s, t, m, &p, at);
                    }
                }
            }
            seq += 1;
        }
        asks.push(rig.rec.wants_keyframe());
    }
    rig.finish(&mut origin);
    (rig, asks)
}

#[test]
fn video_frames_in_order_with_reordering() {
    let (rig, asks) = vp8_run(&[0], 10, &[], true);
    let frames = ivf_frames(&rig.disk.0);
    assert_eq!(frames.len(), 10);
    assert_eq!(frames.iter().map(|f| f.0).collect::<Vec<_>>(), [0, 33, 66, 100, 133, 166, 200, 233, 266, 300]);
    assert!(asks.iter().all(|a| !a));
    let duration = u32::from_le_bytes(rig.disk.0[24..28].try_into().unwrap());
    assert_eq!(duration, 334, "last pts + one frame interval");
}

#[test]
fn a_gap_drops_frames_until_the_next_keyframe() {
    // Frame 3's middle packet (seq 10) is lost, given up 500 ms later; frame 20 is the next keyframe.
    let (rig, asks) = vp8_run(&[0, 20], 24, &[10], false);
    let frames = ivf_frames(&rig.disk.0);
    let pts: Vec<u64> = frames.iter().map(|f| f.0).collect();
    assert_eq!(pts, [0, 33, 66, 666, 700, 733, 766]);
    assert_eq!(frames[3].1, 0x50, "resumes at a keyframe");
    let stats = rig.rec.stats();
    assert_eq!(stats.lost, 1);
    assert_eq!(stats.frames_dropped, 17, "the damaged frame and the 16 deltas after it");
    assert_eq!(stats.keyframe_requests, 1, "asked once");
    assert_eq!(asks.iter().filter(|a| **a).count(), 1);
}

#[test]
fn a_lost_first_packet_or_marker_is_a_lost_frame() {
    // seq 9 starts frame 3, seq 14 is frame 4's marker.
    // (Given up at finish: the run is shorter than the reorder wait.)
    for (lose, written) in [(9, 3), (14, 4)] {
        let (mut rig, _) = vp8_run(&[0], 6, &[lose], false);
        assert_eq!(ivf_frames(&rig.disk.0).len(), written, "losing seq {lose}");
        assert_eq!(rig.rec.stats().frames_dropped, 6 - written as u64);
        assert!(rig.rec.wants_keyframe());
    }
}

#[test]
fn the_first_frame_written_is_a_keyframe() {
    let (rig, asks) = vp8_run(&[20], 24, &[], false);
    let frames = ivf_frames(&rig.disk.0);
    assert_eq!(frames.len(), 4);
    assert_eq!(frames[0], (0, 0x50), "the first keyframe is the participant's origin");
    assert_eq!(frames[3].0, 100);
    assert_eq!(asks.iter().filter(|a| **a).count(), 1, "one request while waiting");
}

#[test]
fn a_whole_lost_frame_waits_for_a_keyframe_and_asks_again_each_second() {
    // One packet per frame, 30 fps; frame 5 never arrives, frame 80 is the next keyframe.
    let mut origin = Origin::default();
    let mut rig = Rig::new(RecCodec::Vp8, 90_000);
    rig.sr(&mut origin, WALL, 0);
    let mut asked_at = Vec::new();
    for f in 0..90u64 {
        let at = f * 33;
        if f != 5 {
            let frame = vp8_frame(f == 0 || f == 80, 40);
            rig.packet(&mut origin, f, f as u32 * 3000, true, &vp8_packets(&frame, 1)[0], at);
        }
        if rig.rec.wants_keyframe() {
            asked_at.push(at);
        }
    }
    rig.finish(&mut origin);
    let pts: Vec<u64> = ivf_frames(&rig.disk.0).iter().map(|f| f.0).collect();
    assert_eq!(pts.len(), 5 + 10, "frames 0-4, then 80-89");
    assert_eq!(pts[5], 2666);
    assert_eq!(rig.rec.stats().frames_dropped, 74, "frames 6-79: nothing to decode them from");
    // Given up 500 ms after frame 6 arrived, then again a second later while still waiting.
    assert_eq!(asked_at.len(), 2, "{asked_at:?}");
    assert!(asked_at[0] >= 198 + 500 && asked_at[0] < 198 + 540, "{asked_at:?}");
    assert!(asked_at[1] - asked_at[0] >= 1000 && asked_at[1] - asked_at[0] < 1040, "{asked_at:?}");
}

#[test]
fn duplicates_are_ignored() {
    let mut origin = Origin::default();
    let mut audio = Rig::new(RecCodec::Opus, 48_000);
    audio.sr(&mut origin, WALL, 0);
    for k in [0u32, 1, 1, 2, 0, 3, 2] {
        audio.packet(&mut origin, u64::from(k), k * 960, false, &OPUS, 20 * u64::from(k));
    }
    audio.finish(&mut origin);
    assert_eq!(audio.rec.stats().frames_written, 4);
    assert_eq!(audio.rec.stats().duplicates, 3);
}

#[test]
fn ivf_duration_is_patched_every_second() {
    let mut origin = Origin::default();
    let mut rig = Rig::new(RecCodec::Vp8, 90_000);
    rig.sr(&mut origin, WALL, 0);
    let mut patches = 0;
    for f in 0..100u32 {
        let frame = vp8_frame(f == 0, 50);
        let payload = &vp8_packets(&frame, 1)[0];
        let at = rig.t0 + Duration::from_millis(u64::from(f) * 33);
        let pk = RecPacket { seq: u64::from(f), ts: f * 3000, marker: true, payload, arrival: at };
        rig.rec.packet(&pk, &mut origin, &mut rig.ops);
        patches += rig.ops.iter().filter(|op| matches!(op, FileOp::Patch { offset: 24, .. })).count();
        rig.disk.apply(&mut rig.ops);
    }
    assert_eq!(patches, 3, "at 1, 2 and 3 s of media");
    // Patched at the frame with pts 3000: it ends 34 ms later (the interval before it).
    assert_eq!(u32::from_le_bytes(rig.disk.0[24..28].try_into().unwrap()), 3034);
}

#[test]
fn h264_access_units_to_annex_b() {
    let mut origin = Origin::default();
    let mut rig = Rig::new(RecCodec::H264, 90_000);
    rig.sr(&mut origin, WALL, 0);
    // Frame 0: STAP-A(SPS, PPS), then an IDR slice in FU-A.
    rig.packet(&mut origin, 0, 0, false, &[0x78, 0, 2, 0x67, 0x42, 0, 2, 0x68, 0xce], 0);
    rig.packet(&mut origin, 1, 0, false, &[0x7c, 0x85, 0x88, 0x01], 0);
    rig.packet(&mut origin, 2, 0, true, &[0x7c, 0x45, 0x02], 0);
    // Frame 1: a delta slice. Frame 2: its FU-A end is lost. Frame 3: delta, dropped.
    rig.packet(&mut origin, 3, 3000, true, &[0x41, 0x9a], 33);
    rig.packet(&mut origin, 4, 6000, false, &[0x5c, 0x81, 0x9a], 66);
    rig.packet(&mut origin, 6, 9000, true, &[0x41, 0x9b], 100);
    rig.finish(&mut origin);
    assert_eq!(
        rig.disk.0,
        [0, 0, 0, 1, 0x67, 0x42, 0, 0, 0, 1, 0x68, 0xce, 0, 0, 0, 1, 0x65, 0x88, 0x01, 0x02, 0, 0, 0, 1, 0x41, 0x9a]
    );
    assert_eq!(rig.rec.stats().frames_dropped, 2);
    assert!(rig.rec.wants_keyframe());
    assert!(!rig.rec.wants_keyframe(), "true once");
}

#[test]
fn vp9_records_spatial_layer_zero() {
    let mut origin = Origin::default();
    let mut rig = Rig::new(RecCodec::Vp9, 90_000);
    rig.sr(&mut origin, WALL, 0);
    // A keyframe 320x240 (see payload tests), SID 0 in two packets (B, then E), then SID 1 with the marker.
    let key = [0x82, 0x49, 0x83, 0x42, 0x40, 0x13, 0xf0, 0x0e, 0xf0];
    rig.packet(&mut origin, 0, 0, false, &[&[0x28, 0x00, 0x00][..], &key[..5]].concat(), 0);
    rig.packet(&mut origin, 1, 0, false, &[&[0x24, 0x00, 0x00][..], &key[5..]].concat(), 0);
    rig.packet(&mut origin, 2, 0, true, &[0x2c, 0x02, 0x00, 0x99], 0);
    rig.finish(&mut origin);
    assert_eq!(&rig.disk.0[8..12], b"VP90");
    assert_eq!(&rig.disk.0[12..16], &[0x40, 0x01, 0xf0, 0x00]);
    assert_eq!(&rig.disk.0[32..36], &[9, 0, 0, 0]);
    assert_eq!(&rig.disk.0[44..], &key);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    /// Hostile RTP: any sequence numbers, timestamps, payloads and SRs, in any order.
    /// Nothing panics, buffers stay within their limits, and the output is a file.
    #[test]
    fn hostile_input_never_panics(
        codec in prop::sample::select(vec![RecCodec::Opus, RecCodec::Vp8, RecCodec::Vp9, RecCodec::H264]),
        clock in prop_oneof![Just(0u32), Just(1), Just(48_000), Just(90_000), any::<u32>()],
        steps in prop::collection::vec(
            (
                prop_oneof![0u64..64, any::<u64>()],
                any::<u32>(),
                any::<bool>(),
                prop::collection::vec(any::<u8>(), 0..40),
                0u64..100_000,
                prop::option::weighted(0.05, (any::<u64>(), any::<u32>())),
            ),
            0..300,
        ),
    ) {
        let mut origin = Origin::default();
        let mut rig = Rig::new(codec, clock);
        for (seq, ts, marker, payload, at, sr) in steps {
            if let Some((ntp, rtp)) = sr {
                rig.sr(&mut origin, ntp, rtp);
            }
            rig.packet(&mut origin, seq, ts, marker, &payload, at);
            let _ = rig.rec.wants_keyframe();
            prop_assert!(rig.rec.stash.len() <= STASH_PACKETS + 1);
            prop_assert!(rig.rec.reorder.len() <= 128);
        }
        rig.finish(&mut origin);
        let _ = rig.rec.stats();
    }
}

#[test]
fn huge_jumps_and_empty_payloads_keep_memory_bounded() {
    let mut origin = Origin::default();
    for codec in [RecCodec::Opus, RecCodec::Vp8, RecCodec::Vp9, RecCodec::H264] {
        let mut rig = Rig::new(codec, 90_000);
        rig.sr(&mut origin, u64::MAX, u32::MAX);
        let big = vec![0x10; MAX_PAYLOAD];
        for k in 0..5000u64 {
            let seq = k.wrapping_mul(0x9e37_79b9_7f4a_7c15);
            let payload: &[u8] = if k % 3 == 0 { &[] } else { &big };
            rig.packet(&mut origin, seq, (k as u32).wrapping_mul(0x7fff_ffff), k % 2 == 0, payload, k);
            assert!(rig.rec.reorder.len() <= 128);
            assert!(rig.rec.frame.as_ref().is_none_or(|f| f.data.len() <= MAX_FRAME + MAX_PAYLOAD));
        }
        // Oversized payloads are refused outright.
        rig.packet(&mut origin, 1, 0, true, &vec![0; MAX_PAYLOAD + 1], 0);
        rig.finish(&mut origin);
        assert!(rig.rec.stats().malformed >= 1);
    }
}
