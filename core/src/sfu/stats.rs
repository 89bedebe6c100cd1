//! Counters of the SFU, of its rooms and of each participant, for `/stats`.

use serde::Serialize;

use super::Sfu;

/// Counters of one participant, for `/stats`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ParticipantStats {
    /// Its stream label (signaling's peer id).
    pub id: String,
    /// Tracks it publishes.
    pub tracks_published: u64,
    /// Tracks it receives (offered and answered; an offer still unanswered does not count).
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
    /// Fraction of what it was sent that it reported lost (TWCC, last second), when known.
    pub egress_loss: Option<f32>,
    /// Egress bandwidth estimate toward it, bits per second (see [`super::estimate`]).
    pub bwe_bps: Option<u64>,
    /// The simulcast layer it receives of each simulcast track, as `peer-id:rid`.
    pub layers: Vec<String>,
    /// Publishers (peer ids) whose video is paused for it: its bandwidth does not allow it.
    pub paused: Vec<String>,
}

impl Eq for ParticipantStats {}

/// Counters of one room, for `/stats`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RoomStats {
    /// Room key (signaling's room name).
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
    /// Offers of the server sent again because no answer came within [`super::OFFER_RETRY`].
    pub offers_resent: u64,
    /// Offers given up on after [`super::OFFER_RETRIES`] resends without an answer.
    pub offers_unanswered: u64,
    /// Times a room's speaker changed (`speaker` messages sent to its members).
    pub speaker_changes: u64,
    /// WHIP and WHEP clients ended without a DELETE: nothing came from them for
    /// [`super::MEDIA_CLIENT_IDLE`], or their connection broke.
    pub media_clients_lost: u64,
    /// Times a room's recording was turned on.
    pub recordings_started: u64,
    /// Bytes handed out to be written to recording files.
    pub recorded_bytes: u64,
}

impl Sfu {
    /// Counters so far.
    pub fn stats(&self) -> SfuStats {
        let mut s = self.stats.clone();
        s.participants = self.participants.len() as u64;
        s
    }

    /// Per room and participant counters, rooms sorted by key.
    pub fn room_stats(&self) -> Vec<RoomStats> {
        let mut rooms: Vec<RoomStats> = self
            .rooms
            .iter()
            .map(|(room, members)| RoomStats {
                room: room.clone(),
                participants: members.iter().filter_map(|c| self.participant_stats(*c)).collect(),
            })
            .collect();
        rooms.sort_by(|a, b| a.room.cmp(&b.room));
        rooms
    }

    fn participant_stats(&self, conn: crate::ids::ConnId) -> Option<ParticipantStats> {
        let p = self.participants.get(&conn)?;
        let mut s = p.stats.clone();
        s.id = p.label.clone();
        s.tracks_published = p.published.len() as u64;
        // Legs the participant answered for (an offered one has no send stream yet).
        s.tracks_subscribed = p.legs.iter().filter(|l| l.ssrc.is_some()).count() as u64;
        s.layers = p
            .legs
            .iter()
            .filter_map(|l| {
                let t = self.tracks.get(&l.track).filter(|t| !t.layers.is_empty())?;
                let owner = &self.participants.get(&t.owner)?.label;
                Some(format!("{owner}:{}", l.rewrite.layer().map_or("-".to_string(), |r| r.to_string())))
            })
            .collect();
        s.paused = p
            .legs
            .iter()
            .filter(|l| l.rewrite.is_paused())
            .filter_map(|l| Some(self.participants.get(&self.tracks.get(&l.track)?.owner)?.label.clone()))
            .collect();
        s.paused.dedup();
        Some(s)
    }
}
