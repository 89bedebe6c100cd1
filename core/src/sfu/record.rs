//! Recording rooms on the server, without a transcoder: while a room is
//! recorded, each published track's RTP goes through a
//! [`crate::record::TrackRecorder`] (depacketized, timed by the publisher's
//! RTCP sender reports so one participant's audio and video line up), and
//! the bytes come out as [`SfuOutput::Record`] for the shell to write to one
//! file per track. A room is recorded from `record {on: true}` (any member),
//! from the embedder ([`Sfu::set_recording`], for an HTTP call), or from its
//! creation when it is named in [`SfuConfig::record_rooms`]; everyone in it
//! is told ([`SfuMessage::Recording`]), and a joiner at once.
//!
//! Cost when nothing is recorded: one test of an empty map per packet.

use std::time::{Instant, UNIX_EPOCH};

use str0m::format::{Codec, PayloadParams};
use str0m::media::{MediaKind, Rid};
use str0m::rtp::RtpPacket;

use super::{Sfu, SfuError, SfuMessage, SfuOutput, TrackId};
use crate::ids::{ConnId, MediaRole};
use crate::record::{FileOp, Origin, RecCodec, RecPacket, SenderReport, TrackRecorder};

/// What to do with a recording file.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RecordOp {
    /// Create the file: `name` is relative (`ROOM/PEER-KIND-MID.EXT`, each part
    /// reduced to `[A-Za-z0-9._-]`); the shell places it under its recording
    /// directory, and may prefix the file name to keep it unique.
    Open {
        /// The relative name.
        name: String,
    },
    /// Append these bytes, or patch bytes already written (a header field).
    Write(FileOp),
    /// The track's recording ended: close the file.
    Close,
}

/// One track being recorded.
#[derive(Debug)]
pub(super) struct TrackRec {
    recorder: TrackRecorder,
    file: u64,
    /// The simulcast layer recorded (the highest the publisher lists).
    layer: Option<Rid>,
}

/// A room being recorded.
#[derive(Debug, Clone)]
pub(super) struct RoomRecording {
    /// Who turned it on (a peer id, `http` or `config`).
    by: String,
}

/// The codec a recorder takes for these payload parameters, if any.
fn rec_codec(pp: &PayloadParams) -> Option<RecCodec> {
    match pp.spec().codec {
        Codec::Opus => Some(RecCodec::Opus),
        Codec::Vp8 => Some(RecCodec::Vp8),
        Codec::Vp9 => Some(RecCodec::Vp9),
        Codec::H264 => Some(RecCodec::H264),
        _ => None,
    }
}

/// `s` with every character but `[A-Za-z0-9._-]` as `_` (at most 64), never empty or a dot name.
fn file_part(s: &str) -> String {
    let mut out: String = s.chars().take(64).map(|c| if c.is_ascii_alphanumeric() || "._-".contains(c) { c } else { '_' }).collect();
    if out.is_empty() || out.chars().all(|c| c == '.') {
        out = format!("_{out}");
    }
    out
}

impl Sfu {
    /// Whether `room` is being recorded.
    pub fn is_recording(&self, room: &str) -> bool {
        self.recordings.contains_key(room)
    }

    /// Records `room` from now on (or stops), as `by` asked; everyone in it is
    /// told. Refused when this server records nothing ([`SfuConfig::record`]).
    pub fn set_recording(&mut self, now: Instant, room: &str, on: bool, by: &str) -> Result<(), SfuError> {
        let now = self.time.advance(now);
        if !self.config.record {
            return Err(SfuError::NotRecording);
        }
        if on == self.recordings.contains_key(room) {
            return Ok(());
        }
        let members = self.rooms.get(room).cloned().unwrap_or_default();
        if on {
            self.recordings.insert(room.to_owned(), RoomRecording { by: by.to_owned() });
            // Each video file starts at a keyframe: ask every publisher for one now (and again as each file
            // opens), so that the files start as close to this moment as the encoders allow.
            let videos: Vec<TrackId> = members
                .iter()
                .filter_map(|m| self.participants.get(m))
                .flat_map(|p| p.published.iter().copied())
                .filter(|t| self.tracks.get(t).is_some_and(|t| t.kind == MediaKind::Video))
                .collect();
            for t in videos {
                self.request_keyframe(now, t);
            }
        } else {
            self.recordings.remove(room);
            for m in &members {
                let tracks = self.participants.get(m).map(|p| p.published.clone()).unwrap_or_default();
                for t in tracks {
                    self.stop_track_recording(t);
                }
                // The next recording has its own time origin.
                if let Some(p) = self.participants.get_mut(m) {
                    p.origin = Origin::default();
                }
            }
        }
        self.stats.recordings_started += u64::from(on);
        for m in members {
            if self.participants.get(&m).is_some_and(|p| p.role == MediaRole::Member) {
                self.signal(m, SfuMessage::Recording { on, by: by.to_owned() });
            }
        }
        Ok(())
    }

    /// Participant `conn` asks to record its room (or to stop).
    pub fn record_by(&mut self, now: Instant, conn: ConnId, on: bool) {
        let Some((room, label)) = self.participants.get(&conn).map(|p| (p.room.clone(), p.label.clone())) else {
            return self.error(conn, SfuError::NotJoined, "join an sfu room first");
        };
        if self.set_recording(now, &room, on, &label).is_err() {
            self.error(conn, SfuError::NotRecording, "this server does not record (start it with --record-dir)");
        }
    }

    /// A participant joined `room`: a room named in the configuration starts
    /// recording with its first member; a joiner of a recorded room is told.
    pub(super) fn recording_on_join(&mut self, now: Instant, conn: ConnId, room: &str) {
        if !self.recordings.contains_key(room) && self.config.record_rooms.iter().any(|r| r == room) {
            let _ = self.set_recording(now, room, true, "config");
            return;
        }
        let by = self.recordings.get(room).map(|r| r.by.clone());
        if let (Some(by), Some(MediaRole::Member)) = (by, self.participants.get(&conn).map(|p| &p.role)) {
            self.signal(conn, SfuMessage::Recording { on: true, by });
        }
    }

    /// One RTP packet of track `tid`, published by `from`, while its room is recorded.
    pub(super) fn record_packet(&mut self, now: Instant, from: ConnId, tid: TrackId, pkt: &RtpPacket, pp: Option<PayloadParams>, rid: Option<Rid>) {
        let Some(p) = self.participants.get_mut(&from) else { return };
        if !self.recordings.contains_key(&p.room) {
            return;
        }
        // Whether the participant also sends video (asked only when the track's recording begins).
        let has_video = self.tracks.get(&tid).is_some_and(|t| t.rec.is_none())
            && p.published.iter().any(|v| *v != tid && self.tracks.get(v).is_some_and(|v| v.kind == MediaKind::Video));
        let Some(t) = self.tracks.get_mut(&tid) else { return };
        let mut starts = false;
        if t.rec.is_none() {
            let Some((codec, pp)) = pp.and_then(|pp| rec_codec(&pp).map(|c| (c, pp))) else { return };
            let file = self.next_file;
            self.next_file += 1;
            let mut recorder = TrackRecorder::new(codec, pp.spec().clock_rate.get());
            let kind = if t.kind == MediaKind::Audio { "audio" } else { "video" };
            let name = format!("{}/{}-{kind}-{}.{}", file_part(&p.room), file_part(&p.label), file_part(&t.mid.to_string()), recorder.extension());
            self.out.push_back(SfuOutput::Record { file, op: RecordOp::Open { name } });
            if t.kind == MediaKind::Audio && has_video {
                // A video file can only start at a keyframe, which a busy encoder may take half a second to
                // send: the participant's audio waits for it (a bounded while) so that both files start
                // at the same instant.
                recorder.defer_origin_to_video();
            }
            t.rec = Some(TrackRec { recorder, file, layer: t.layers.last().copied() });
            // A video file starts at a keyframe: ask for one now rather than when the recorder finds it lacks one.
            starts = t.kind == MediaKind::Video;
        }
        let Some(rec) = t.rec.as_mut() else { return };
        if rec.layer != rid {
            return;
        }
        let mut ops = Vec::new();
        let packet = RecPacket { seq: *pkt.seq_no, ts: pkt.header.timestamp, marker: pkt.header.marker, payload: &pkt.payload, arrival: pkt.timestamp };
        rec.recorder.packet(&packet, &mut p.origin, &mut ops);
        let wants_keyframe = rec.recorder.wants_keyframe();
        let file = rec.file;
        self.stats.recorded_bytes += ops.iter().map(|o| match o {
            FileOp::Append(b) => b.len() as u64,
            _ => 0,
        }).sum::<u64>();
        self.out.extend(ops.into_iter().map(|op| SfuOutput::Record { file, op: RecordOp::Write(op) }));
        if wants_keyframe || starts {
            self.request_keyframe(now, tid);
        }
    }

    /// An RTCP sender report from `from` for its m-line `mid` (layer `rid`).
    pub(super) fn record_sender_report(&mut self, from: ConnId, mid: str0m::media::Mid, rid: Option<Rid>, info: &str0m::rtp::rtcp::SenderInfo) {
        let Some(p) = self.participants.get_mut(&from) else { return };
        let Some(t) = p.published.iter().copied().find(|t| self.tracks.get(t).is_some_and(|t| t.mid == mid)) else { return };
        let Some(rec) = self.tracks.get_mut(&t).and_then(|t| t.rec.as_mut()).filter(|r| r.layer == rid) else { return };
        let ntp_micros = info.ntp_time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64);
        let sr = SenderReport { ntp_micros, rtp: info.rtp_time.numer() as u32 };
        let mut ops = Vec::new();
        rec.recorder.sender_report(sr, &mut p.origin, &mut ops);
        let file = rec.file;
        self.out.extend(ops.into_iter().map(|op| SfuOutput::Record { file, op: RecordOp::Write(op) }));
    }

    /// Ends the recording of track `tid`, if it has one: the file is finished and closed.
    pub(super) fn stop_track_recording(&mut self, tid: TrackId) {
        let Some(t) = self.tracks.get_mut(&tid) else { return };
        let Some(mut rec) = t.rec.take() else { return };
        let mut ops = Vec::new();
        let mut spare = Origin::default();
        let origin = self.participants.get_mut(&t.owner).map_or(&mut spare, |p| &mut p.origin);
        rec.recorder.finish(origin, &mut ops);
        let file = rec.file;
        self.out.extend(ops.into_iter().map(|op| SfuOutput::Record { file, op: RecordOp::Write(op) }));
        self.out.push_back(SfuOutput::Record { file, op: RecordOp::Close });
    }
}
