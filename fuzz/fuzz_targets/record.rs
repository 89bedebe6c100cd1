//! The recording path: arbitrary RTP packets (sequence and timestamp steps,
//! marker, payload), sender reports and a finish into a `TrackRecorder` of
//! each codec, with arrival time running on. No panic; what it writes is a
//! file that makes sense as a sequence of operations: it starts with an
//! append, every patch lies within what was appended, and nothing follows
//! `finish` but its own operations.
#![no_main]

use std::time::{Duration, Instant};

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use switchboard_core::record::{FileOp, Origin, RecCodec, RecPacket, SenderReport, TrackRecorder};

#[derive(Arbitrary, Debug)]
enum Op {
    Packet { seq_step: i16, ts_step: i32, marker: bool, payload: Vec<u8>, gap_ms: u8 },
    Report { ntp_step_ms: i32, rtp_step: i32 },
    KeyframeAsked,
}

#[derive(Arbitrary, Debug)]
struct Input {
    codec: u8,
    clock: u32,
    ops: Vec<Op>,
}

fuzz_target!(|input: Input| {
    let codec = [RecCodec::Opus, RecCodec::Vp8, RecCodec::Vp9, RecCodec::H264][input.codec as usize % 4];
    let clock = if input.codec & 4 == 0 { if codec == RecCodec::Opus { 48_000 } else { 90_000 } } else { input.clock };
    let mut rec = TrackRecorder::new(codec, clock);
    let mut origin = Origin::default();
    let mut out = Vec::new();
    let mut now = Instant::now();
    let (mut seq, mut ts) = (1000u64, 0u32);
    let (mut ntp, mut rtp) = (1_800_000_000_000_000u64, 0u32);
    for op in input.ops.into_iter().take(400) {
        match op {
            Op::Packet { seq_step, ts_step, marker, payload, gap_ms } => {
                seq = seq.saturating_add_signed(i64::from(seq_step));
                ts = ts.wrapping_add_signed(ts_step);
                now += Duration::from_millis(u64::from(gap_ms));
                rec.packet(&RecPacket { seq, ts, marker, payload: &payload, arrival: now }, &mut origin, &mut out);
            }
            Op::Report { ntp_step_ms, rtp_step } => {
                ntp = ntp.saturating_add_signed(i64::from(ntp_step_ms) * 1000);
                rtp = rtp.wrapping_add_signed(rtp_step);
                rec.sender_report(SenderReport { ntp_micros: ntp, rtp }, &mut origin, &mut out);
            }
            Op::KeyframeAsked => {
                let _ = rec.wants_keyframe();
            }
        }
    }
    rec.finish(&mut origin, &mut out);
    let mut written = 0u64;
    for (i, op) in out.iter().enumerate() {
        match op {
            FileOp::Append(b) => {
                assert!(!b.is_empty(), "empty append");
                written += b.len() as u64;
            }
            FileOp::Patch { offset, bytes } => {
                assert!(i > 0, "a patch before anything was written");
                assert!(offset + bytes.len() as u64 <= written, "patch {offset}+{} past {written}", bytes.len());
            }
        }
    }
    assert_eq!(written, rec.stats().bytes, "bytes counted = bytes appended");
});
