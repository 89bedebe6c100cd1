//! Recording end to end: ffmpeg makes 10 s of VP8 (IVF), Opus (Ogg) and
//! H.264 (Annex B); str0m's packetizers turn them into RTP, with sender
//! reports that put audio 40 ms after video on the sender's clock, and with
//! packets lost, delayed, duplicated and reordered; the core's recorders
//! write files; ffprobe (nobody here wrote it) reads and decodes them, whole
//! and cut short as a killed process would leave them.
//!
//! ffmpeg and ffprobe (Debian's `ffmpeg`) are required: without them the test fails.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use str0m::unversioned::{H264Packetizer, OpusPacketizer, Packetizer, Vp8Packetizer};
use switchboard_core::record::{FileOp, Origin, RecCodec, RecPacket, RecStats, SenderReport, TrackRecorder};

/// The sender's wallclock (unix µs) when video frame 0 was captured.
const WALL: u64 = 1_700_000_000_000_000;
/// Audio starts this long after video on the sender's clock.
const AUDIO_LATER_US: u64 = 40_000;
const MTU: usize = 1100;

fn run(tool: &str, args: &[&str]) -> std::process::Output {
    let out = Command::new(tool)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{tool} is needed for the recording test (Debian package ffmpeg): {e}"));
    assert!(out.status.success(), "{tool} {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    out
}

fn ffmpeg(args: &[&str]) {
    let mut all = vec!["-v", "error", "-y"];
    all.extend_from_slice(args);
    run("ffmpeg", &all);
}

/// ffprobe's format duration and first stream's codec, start time, size.
fn probe(path: &Path) -> Value {
    let out = run(
        "ffprobe",
        &[
            "-v",
            "error",
            "-show_entries",
            "format=duration:stream=start_time,codec_name,width,height",
            "-of",
            "json",
            path.to_str().unwrap(),
        ],
    );
    serde_json::from_slice(&out.stdout).expect("ffprobe json")
}

/// Frames ffprobe decodes from the first stream.
fn decoded_frames(path: &Path) -> u64 {
    let out = run(
        "ffprobe",
        &[
            "-v",
            "error",
            "-count_frames",
            "-select_streams",
            "0",
            "-show_entries",
            "stream=nb_read_frames",
            "-of",
            "csv=p=0",
            path.to_str().unwrap(),
        ],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    text.trim().trim_end_matches(',').parse().unwrap_or_else(|_| panic!("nb_read_frames of {}: {text:?}", path.display()))
}

fn num(v: &Value, path: &[&str]) -> f64 {
    let mut v = v;
    for p in path {
        v = match p.parse::<usize>() {
            Ok(i) => &v[i],
            Err(_) => &v[*p],
        };
    }
    v.as_str().and_then(|s| s.parse().ok()).or(v.as_f64()).unwrap_or_else(|| panic!("{path:?} in {v}"))
}

/// IVF frames (pts in the file's time base, bytes).
fn ivf_frames(file: &[u8]) -> Vec<Vec<u8>> {
    let mut frames = Vec::new();
    let mut at = 32;
    while at + 12 <= file.len() {
        let len = u32::from_le_bytes(file[at..at + 4].try_into().unwrap()) as usize;
        frames.push(file[at + 12..at + 12 + len].to_vec());
        at += 12 + len;
    }
    frames
}

/// Ogg packets, reassembled from page segments; the first two are OpusHead and OpusTags.
fn ogg_packets(file: &[u8]) -> Vec<Vec<u8>> {
    let mut packets = Vec::new();
    let mut partial = Vec::new();
    let mut at = 0;
    while at + 27 <= file.len() {
        assert_eq!(&file[at..at + 4], b"OggS");
        let n = file[at + 26] as usize;
        let lacing = &file[at + 27..at + 27 + n];
        let mut data = at + 27 + n;
        for &l in lacing {
            partial.extend_from_slice(&file[data..data + l as usize]);
            data += l as usize;
            if l < 255 {
                packets.push(std::mem::take(&mut partial));
            }
        }
        at = data;
    }
    packets
}

/// Annex-B access units: a new one starts at an AUD, SPS, PPS or SEI after a slice,
/// or at a slice whose first_mb_in_slice is 0 after a slice.
fn annexb_access_units(file: &[u8]) -> Vec<Vec<u8>> {
    let mut starts = Vec::new();
    let mut i = 0;
    while i + 3 <= file.len() {
        if file[i..i + 3] == [0, 0, 1] {
            starts.push(i + 3);
            i += 3;
        } else {
            i += 1;
        }
    }
    let mut units: Vec<Vec<u8>> = Vec::new();
    let mut current = Vec::new();
    let mut has_slice = false;
    for (k, &s) in starts.iter().enumerate() {
        let mut end = starts.get(k + 1).map_or(file.len(), |&n| n - 3);
        while end > s && file[end - 1] == 0 {
            end -= 1; // the leading zero of a 4-byte start code
        }
        let nal = &file[s..end];
        let kind = nal[0] & 0x1f;
        let slice = kind == 1 || kind == 5;
        let starts_unit = if slice { nal.get(1).is_some_and(|b| b & 0x80 != 0) } else { matches!(kind, 6..=9) };
        if has_slice && starts_unit {
            units.push(std::mem::take(&mut current));
            has_slice = false;
        }
        current.extend_from_slice(&[0, 0, 0, 1]);
        current.extend_from_slice(nal);
        has_slice |= slice;
    }
    if !current.is_empty() {
        units.push(current);
    }
    units
}

/// One thing that reaches the recorder of a track.
#[derive(Clone)]
enum Event {
    Rtp { seq: u64, ts: u32, marker: bool, payload: Vec<u8> },
    Sr(SenderReport),
}

/// (arrival ms, track, event)
type Timeline = Vec<(u64, usize, Event)>;

/// RTP for a track of media units captured `period_us` apart from `start_us` on the sender clock,
/// arriving 5 ms after capture, with SRs (the first at `first_sr_ms`, then every second).
#[allow(clippy::too_many_arguments)]
fn packetize(
    track: usize,
    units: &[Vec<u8>],
    packetizer: &mut dyn FnMut(&[u8]) -> Vec<Vec<u8>>,
    clock: u64,
    start_us: u64,
    period_us: u64,
    base_ts: u32,
    first_sr_ms: u64,
    timeline: &mut Timeline,
) -> Vec<usize> {
    let ts_at = |us: u64| base_ts.wrapping_add(((us - WALL) * clock / 1_000_000) as u32);
    let mut seq = 1000u64;
    let mut unit_first_packet = Vec::new();
    for (i, unit) in units.iter().enumerate() {
        let capture = start_us + i as u64 * period_us;
        let payloads = packetizer(unit);
        unit_first_packet.push(timeline.len());
        let last = payloads.len() - 1;
        for (k, payload) in payloads.into_iter().enumerate() {
            let event = Event::Rtp { seq, ts: ts_at(capture), marker: k == last, payload };
            timeline.push(((capture - WALL) / 1000 + 5, track, event));
            seq += 1;
        }
    }
    let end_ms = (start_us - WALL) / 1000 + units.len() as u64 * period_us / 1000;
    let mut at = first_sr_ms;
    while at < end_ms {
        let ntp_micros = WALL + (at - 3) * 1000;
        timeline.push((at, track, Event::Sr(SenderReport { ntp_micros, rtp: ts_at(ntp_micros) })));
        at += 1000;
    }
    unit_first_packet
}

fn str0m_packetizer(mut p: impl Packetizer) -> impl FnMut(&[u8]) -> Vec<Vec<u8>> {
    move |unit| p.packetize(MTU, unit).expect("packetize")
}

/// VP9 RTP payloads (RFC 9628, non-flexible mode, one spatial layer, 15-bit picture ID), by hand:
/// str0m does not export a VP9 packetizer.
fn vp9_packetizer() -> impl FnMut(&[u8]) -> Vec<Vec<u8>> {
    let mut picture_id = 0u16;
    move |frame| {
        // frame_type is the sixth bit of a profile 0 frame header: 0 for a keyframe.
        let inter = frame[0] & 0x04 != 0;
        let chunks: Vec<&[u8]> = frame.chunks(MTU - 3).collect();
        let last = chunks.len() - 1;
        let out = chunks
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let mut b0 = 0x80; // I
                b0 |= if inter { 0x40 } else { 0 };
                b0 |= if i == 0 { 0x08 } else { 0 };
                b0 |= if i == last { 0x04 } else { 0 };
                let pid = 0x8000 | picture_id;
                [&[b0][..], &pid.to_be_bytes(), c].concat()
            })
            .collect();
        picture_id = (picture_id + 1) & 0x7fff;
        out
    }
}

/// What the shell would have on disk: the ops in order, to replay whole or cut short.
#[derive(Default)]
struct Written {
    ops: Vec<FileOp>,
}

impl Written {
    /// The file as it stands after the ops, cut at `limit` appended bytes (a kill mid-write).
    fn file(&self, limit: usize) -> Vec<u8> {
        let mut f = Vec::new();
        for op in &self.ops {
            match op {
                FileOp::Append(b) => {
                    let room = limit.saturating_sub(f.len());
                    f.extend_from_slice(&b[..b.len().min(room)]);
                    if room < b.len() {
                        break;
                    }
                }
                FileOp::Patch { offset, bytes } => {
                    let at = *offset as usize;
                    f[at..at + bytes.len()].copy_from_slice(bytes);
                }
            }
        }
        f
    }
}

struct Track {
    rec: TrackRecorder,
    written: Written,
    keyframe_asks: u32,
}

/// Feed a participant's timeline (ordered by arrival) to its recorders, which share one origin.
fn record(mut timeline: Timeline, codecs: &[(RecCodec, u32)]) -> Vec<Track> {
    timeline.sort_by_key(|(at, _, _)| *at);
    let t0 = Instant::now();
    let mut origin = Origin::default();
    let mut tracks: Vec<Track> = codecs
        .iter()
        .map(|&(c, rate)| Track { rec: TrackRecorder::new(c, rate), written: Written::default(), keyframe_asks: 0 })
        .collect();
    let mut ops = Vec::new();
    for (at, track, event) in timeline {
        let t = &mut tracks[track];
        match event {
            Event::Rtp { seq, ts, marker, payload } => {
                let p = RecPacket { seq, ts, marker, payload: &payload, arrival: t0 + Duration::from_millis(at) };
                t.rec.packet(&p, &mut origin, &mut ops);
            }
            Event::Sr(sr) => t.rec.sender_report(sr, &mut origin, &mut ops),
        }
        t.keyframe_asks += u32::from(t.rec.wants_keyframe());
        t.written.ops.append(&mut ops);
    }
    for t in &mut tracks {
        t.rec.finish(&mut origin, &mut ops);
        t.written.ops.append(&mut ops);
    }
    tracks
}

fn delay(timeline: &mut Timeline, i: usize, ms: u64) {
    timeline[i].0 += ms;
}

fn lose(timeline: &mut Timeline, i: usize) {
    timeline[i].0 = u64::MAX; // dropped below
}

fn duplicate(timeline: &mut Timeline, i: usize, ms: u64) {
    let mut copy = timeline[i].clone();
    copy.0 += ms;
    timeline.push(copy);
}

fn scratch() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("switchboard-recording-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn save(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

fn report(name: &str, stats: &RecStats) {
    eprintln!("{name}: {stats:?}");
}

#[test]
fn vp8_and_opus_recordings_line_up_and_survive_a_kill() {
    let dir = scratch();
    let src_v = dir.join("in.ivf");
    let src_a = dir.join("in.ogg");
    ffmpeg(&["-f", "lavfi", "-i", "testsrc=size=320x240:rate=30", "-t", "10", "-c:v", "libvpx", "-g", "60", "-f", "ivf"]
        .iter()
        .copied()
        .chain([src_v.to_str().unwrap()])
        .collect::<Vec<_>>());
    ffmpeg(&["-f", "lavfi", "-i", "sine=f=440", "-t", "10", "-c:a", "libopus", src_a.to_str().unwrap()]);
    let frames = ivf_frames(&std::fs::read(&src_v).unwrap());
    let packets: Vec<Vec<u8>> = ogg_packets(&std::fs::read(&src_a).unwrap()).into_iter().skip(2).collect();
    assert_eq!(frames.len(), 300);
    // 20 ms packets; libopus pads the end to cover its pre-skip.
    assert!((500..=501).contains(&packets.len()), "{} Opus packets", packets.len());
    let audio_kept = packets.len() as u64 - 3;

    let mut timeline = Timeline::new();
    // Video's RTP timestamps wrap about 4 s in. Video's first SR comes at 300 ms, audio's at 700 ms:
    // video maps first, and its first keyframe is the participant's origin.
    let firsts = packetize(0, &frames, &mut str0m_packetizer(Vp8Packetizer::default()), 90_000, WALL, 33_333, 0xfffa_0000, 300, &mut timeline);
    let audio_from = timeline.len();
    let audio_start = WALL + AUDIO_LATER_US;
    packetize(1, &packets, &mut str0m_packetizer(OpusPacketizer), 48_000, audio_start, 20_000, 0x1234_5678, 700, &mut timeline);

    // Lose the first packet of the frame before each of two keyframes (costing just that frame),
    // delay a few (a retransmission), duplicate some, swap two. (A track's packets are in order
    // in the timeline until it is sorted by arrival, its SRs after them.)
    let keyframes: Vec<usize> = (1..frames.len()).filter(|&i| frames[i][0] & 1 == 0).collect();
    assert!(keyframes.len() >= 2, "keyframes at {keyframes:?}");
    for &k in &keyframes[..2] {
        lose(&mut timeline, firsts[k - 1]);
    }
    delay(&mut timeline, firsts[30], 150);
    delay(&mut timeline, firsts[150] + 1, 200);
    duplicate(&mut timeline, firsts[45], 50);
    delay(&mut timeline, firsts[70], 1);
    for k in [100, 300, 301] {
        lose(&mut timeline, audio_from + k);
    }
    delay(&mut timeline, audio_from + 200, 60);
    duplicate(&mut timeline, audio_from + 250, 30);
    timeline.retain(|(at, _, _)| *at != u64::MAX);

    let tracks = record(timeline, &[(RecCodec::Vp8, 90_000), (RecCodec::Opus, 48_000)]);
    let (video, audio) = (&tracks[0], &tracks[1]);
    report("video", &video.rec.stats());
    report("audio", &audio.rec.stats());
    assert_eq!(video.rec.stats().frames_written, 298, "all but the two frames that lost a packet");
    assert_eq!(audio.rec.stats().frames_written, audio_kept, "all but three lost packets");
    assert_eq!(video.rec.stats().duplicates, 1);
    assert_eq!(audio.rec.stats().duplicates, 1);
    assert!(video.keyframe_asks >= 1, "a lost frame asks for a keyframe");
    assert!(!video.rec.stats().mapped_by_arrival && !audio.rec.stats().mapped_by_arrival);

    let v_path = save(&dir, "video.ivf", &video.written.file(usize::MAX));
    let a_path = save(&dir, "audio.ogg", &audio.written.file(usize::MAX));
    let v = probe(&v_path);
    let a = probe(&a_path);
    eprintln!("video: {v}\naudio: {a}");
    assert_eq!(v["streams"][0]["codec_name"], "vp8");
    assert_eq!(v["streams"][0]["width"], 320);
    assert_eq!(v["streams"][0]["height"], 240);
    assert_eq!(a["streams"][0]["codec_name"], "opus");
    for (name, p) in [("video", &v), ("audio", &a)] {
        let d = num(p, &["format", "duration"]);
        assert!((d - 10.0).abs() <= 0.5, "{name} duration {d}");
    }
    let v_start = num(&v, &["streams", "0", "start_time"]);
    let a_start = num(&a, &["streams", "0", "start_time"]);
    eprintln!("start_time: video {v_start}, audio {a_start}");
    assert!(((a_start - v_start) - 0.040).abs() <= 0.020, "audio starts {} s after video", a_start - v_start);

    let v_frames = decoded_frames(&v_path);
    let a_frames = decoded_frames(&a_path);
    eprintln!("decoded: video {v_frames}, audio {a_frames}");
    assert!(v_frames >= 250, "video frames decoded: {v_frames}");
    assert_eq!(v_frames, 298);
    assert_eq!(a_frames, audio_kept);

    // Killed mid-write: the file as the ops left it at an arbitrary byte, mid-frame / mid-page.
    for (track, name, at) in [(video, "cut.ivf", 0.61), (audio, "cut.ogg", 0.43)] {
        let whole = track.written.file(usize::MAX).len();
        let cut = track.written.file((whole as f64 * at) as usize + 7);
        let p = save(&dir, name, &cut);
        let info = probe(&p);
        let decoded = decoded_frames(&p);
        eprintln!("{name}: {} of {whole} bytes, {decoded} frames decoded, {info}", cut.len());
        assert!(decoded > 0, "{name} decodes after a cut");
        let expect = if name.ends_with("ivf") { 298.0 } else { audio_kept as f64 };
        assert!((decoded as f64) > expect * at * 0.5 && (decoded as f64) < expect, "{name}: {decoded}");
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn h264_recording_decodes() {
    let dir = scratch().join("h264");
    std::fs::create_dir_all(&dir).unwrap();
    let src = dir.join("in.h264");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc=size=320x240:rate=30",
        "-t",
        "10",
        "-c:v",
        "libx264",
        "-g",
        "60",
        "-bf",
        "0",
        "-bsf:v",
        "h264_mp4toannexb",
        "-f",
        "h264",
        src.to_str().unwrap(),
    ]);
    let units = annexb_access_units(&std::fs::read(&src).unwrap());
    assert_eq!(units.len(), 300);
    let mut timeline = Timeline::new();
    let firsts = packetize(0, &units, &mut str0m_packetizer(H264Packetizer::default()), 90_000, WALL, 33_333, 7, 200, &mut timeline);
    // Lose the first packet of the frame before the second keyframe.
    let idr = |u: &Vec<u8>| u.windows(5).any(|w| w[..4] == [0, 0, 0, 1] && w[4] & 0x1f == 5);
    let keyframes: Vec<usize> = (1..units.len()).filter(|&i| idr(&units[i])).collect();
    assert!(!keyframes.is_empty(), "IDR frames after the first");
    lose(&mut timeline, firsts[keyframes[0] - 1]);
    duplicate(&mut timeline, firsts[10], 20);
    timeline.retain(|(at, _, _)| *at != u64::MAX);
    let tracks = record(timeline, &[(RecCodec::H264, 90_000)]);
    let t = &tracks[0];
    report("h264", &t.rec.stats());
    assert_eq!(t.rec.extension(), "h264");
    assert_eq!(t.rec.stats().frames_written, 299);
    let p = save(&dir, "video.h264", &t.written.file(usize::MAX));
    let info = probe(&p);
    eprintln!("h264: {info}");
    assert_eq!(info["streams"][0]["codec_name"], "h264");
    assert_eq!(info["streams"][0]["width"], 320);
    // A raw Annex-B stream carries no timestamps: ffprobe's duration for it is a guess
    // from an assumed frame rate, so it is not checked. The frames must all decode.
    assert_eq!(decoded_frames(&p), 299);
    let whole = t.written.file(usize::MAX);
    let cut = t.written.file(whole.len() / 2 + 3);
    let p = save(&dir, "cut.h264", &cut);
    let decoded = decoded_frames(&p);
    eprintln!("cut.h264: {} of {} bytes, {decoded} frames decoded", cut.len(), whole.len());
    assert!(decoded > 100, "h264 decodes after a cut: {decoded}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn vp9_recording_decodes() {
    let dir = scratch().join("vp9");
    std::fs::create_dir_all(&dir).unwrap();
    let src = dir.join("in.ivf");
    // Realtime settings as WebRTC uses them: no hidden alt-ref frames, so no superframes.
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc=size=320x240:rate=30",
        "-t",
        "10",
        "-c:v",
        "libvpx-vp9",
        "-g",
        "60",
        "-deadline",
        "realtime",
        "-cpu-used",
        "8",
        "-lag-in-frames",
        "0",
        "-auto-alt-ref",
        "0",
        "-f",
        "ivf",
        src.to_str().unwrap(),
    ]);
    let frames = ivf_frames(&std::fs::read(&src).unwrap());
    assert_eq!(frames.len(), 300);
    let mut timeline = Timeline::new();
    let firsts = packetize(0, &frames, &mut vp9_packetizer(), 90_000, WALL, 33_333, 0x8000_0000, 300, &mut timeline);
    let keyframes: Vec<usize> = (1..frames.len()).filter(|&i| frames[i][0] & 0x04 == 0).collect();
    assert!(!keyframes.is_empty(), "keyframes after the first");
    lose(&mut timeline, firsts[keyframes[0] - 1]);
    timeline.retain(|(at, _, _)| *at != u64::MAX);
    let tracks = record(timeline, &[(RecCodec::Vp9, 90_000)]);
    let t = &tracks[0];
    report("vp9", &t.rec.stats());
    assert_eq!(t.rec.stats().frames_written, 299);
    let p = save(&dir, "video.ivf", &t.written.file(usize::MAX));
    let info = probe(&p);
    eprintln!("vp9: {info}");
    assert_eq!(info["streams"][0]["codec_name"], "vp9");
    assert_eq!(info["streams"][0]["width"], 320, "size from the keyframe header");
    assert_eq!(info["streams"][0]["height"], 240);
    let d = num(&info, &["format", "duration"]);
    assert!((d - 10.0).abs() <= 0.5, "duration {d}");
    assert_eq!(decoded_frames(&p), 299);
    std::fs::remove_dir_all(&dir).ok();
}
