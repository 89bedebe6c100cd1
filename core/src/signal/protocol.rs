//! The signaling protocol: JSON text messages over a WebSocket, each an object
//! with a `type`. These types are the exact wire shapes; field names are as
//! written on the wire (camelCase where WebRTC's own names are).
//!
//! Client to server:
//!
//! ```json
//! {"type":"join","room":"demo","name":"Ada","mode":"p2p"}   // name and mode optional (mode defaults to p2p)
//! {"type":"leave"}
//! {"type":"message","to":"3f2a9c01","data":{"sdp":"..."}}   // to optional: absent = everyone else in the room
//! {"type":"chat","text":"hello"}
//! // sfu rooms only, addressed to the server:
//! {"type":"offer","sdp":"v=0..."}
//! {"type":"answer","sdp":"v=0..."}                          // to the server's offer
//! {"type":"candidate","candidate":"candidate:...","sdpMid":"0","sdpMLineIndex":0}   // sdpMid, sdpMLineIndex optional
//! {"type":"layer","peer":"77b0e1d2","rid":"h"}              // simulcast layer of that peer's video, or "auto"
//! {"type":"maxbitrate","bps":300000}                       // send me at most this (null: no limit of mine)
//! ```
//!
//! Server to client:
//!
//! ```json
//! {"type":"joined","room":"demo","id":"3f2a9c01","mode":"p2p","peers":[{"id":"77b0e1d2","name":"Bob"}],
//!  "iceServers":[{"urls":["stun:127.0.0.1:3478"]},
//!                {"urls":["turn:127.0.0.1:3478?transport=udp","turn:127.0.0.1:3478?transport=tcp"],
//!                 "username":"1795377754:3f2a9c01","credential":"..."}]}
//! {"type":"otherjoin","room":"demo","id":"77b0e1d2","name":"Bob"}
//! {"type":"full","room":"demo"}
//! {"type":"leaved","room":"demo"}
//! {"type":"bye","room":"demo","id":"77b0e1d2"}
//! {"type":"message","from":"77b0e1d2","data":{"sdp":"..."}}
//! {"type":"chat","from":"77b0e1d2","name":"Bob","text":"hello"}
//! // sfu rooms only, from the server:
//! {"type":"offer","sdp":"v=0..."}                           // the tracks it sends you changed
//! {"type":"answer","sdp":"v=0..."}                          // to your offer
//! {"type":"candidate","candidate":"candidate:...","sdpMid":"0","sdpMLineIndex":0}
//! {"type":"paused","peer":"77b0e1d2","paused":true}         // that peer's video is paused for you (bandwidth)
//! {"type":"error","code":"not-joined","message":"join a room first"}
//! ```
//!
//! In `sfu` rooms the server, not another peer, is the other end of `offer`,
//! `answer` and `candidate`; [`super::Signaling`] checks and passes them on as
//! [`super::RoomEvent`]s and carries the media server's replies.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// How a room carries media.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Browsers connect to each other; the server relays signaling (and TURN when needed).
    P2p,
    /// Every participant connects to the server, which forwards media.
    Sfu,
}

/// A message from a client. Unknown fields are ignored (newer clients may send more).
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ClientMsg {
    /// Join (and create, if new) a room.
    Join {
        /// Room name: 1 to 64 characters, no control characters.
        room: String,
        /// Display name, up to 64 characters.
        #[serde(default)]
        name: Option<String>,
        /// Media mode; p2p when absent.
        #[serde(default)]
        mode: Option<Mode>,
    },
    /// Leave the room.
    Leave {},
    /// Opaque data for one peer (`to`) or for every other peer in the room.
    Message {
        /// The peer id, or absent for all others.
        #[serde(default)]
        to: Option<String>,
        /// Anything JSON; relayed as it came.
        data: Value,
    },
    /// A chat line for everyone in the room.
    Chat {
        /// The text, at most 4096 characters.
        text: String,
    },
    /// SFU rooms: an SDP offer to the server.
    Offer {
        /// The SDP.
        sdp: String,
    },
    /// SFU rooms: the answer to the server's offer.
    Answer {
        /// The SDP.
        sdp: String,
    },
    /// SFU rooms: a trickled ICE candidate for the server.
    Candidate {
        /// The `candidate:...` line (an empty one ends gathering).
        candidate: String,
        /// Media id (ignored: the server uses one transport).
        #[serde(default, rename = "sdpMid")]
        sdp_mid: Option<String>,
        /// m-line index (ignored).
        #[serde(default, rename = "sdpMLineIndex")]
        sdp_mline_index: Option<u32>,
    },
    /// SFU rooms: receive simulcast layer `rid` of `peer`'s video.
    Layer {
        /// The publisher's peer id.
        peer: String,
        /// The layer (one of the rids it publishes).
        rid: String,
    },
    /// SFU rooms: send me at most `bps` bits per second (`null`: no limit of
    /// mine; the server's own cap still applies). Videos that do not fit go
    /// down a simulcast layer, then pause (told with `paused`); audio is kept.
    /// `{"type":"maxbitrate","bps":300000}`
    MaxBitrate {
        /// The most bits per second, or none.
        #[serde(default)]
        bps: Option<u64>,
    },
    /// SFU rooms: record the room on the server (`true`) or stop (`false`);
    /// everyone in the room is told with `record {on, by}`.
    /// `{"type":"record","on":true}`
    Record {
        /// Whether to record.
        on: bool,
    },
}

/// A peer as listed in `joined`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PeerInfo<'a> {
    /// Its id.
    pub id: &'a str,
    /// Its display name (empty when none was given).
    pub name: &'a str,
}

/// One entry of `iceServers`, as `RTCPeerConnection` takes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IceServer {
    /// `stun:` or `turn:` URLs.
    pub urls: Vec<String>,
    /// TURN REST username (`expiry:peer-id`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// TURN REST password.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

/// A message to a client.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ServerMsg<'a> {
    /// You are in `room` as `id`, with these other `peers`.
    Joined {
        /// The room.
        room: &'a str,
        /// Your id.
        id: &'a str,
        /// The room's mode.
        mode: Mode,
        /// The others already there.
        peers: Vec<PeerInfo<'a>>,
        /// STUN and TURN servers to use, with fresh credentials.
        #[serde(rename = "iceServers")]
        ice_servers: &'a [IceServer],
    },
    /// Someone joined your room.
    #[serde(rename = "otherjoin")]
    OtherJoin {
        /// The room.
        room: &'a str,
        /// Their id.
        id: &'a str,
        /// Their name.
        name: &'a str,
    },
    /// The room is at capacity; you are not in it.
    Full {
        /// The room.
        room: &'a str,
    },
    /// You left the room.
    Leaved {
        /// The room.
        room: &'a str,
    },
    /// Someone left your room (or disconnected).
    Bye {
        /// The room.
        room: &'a str,
        /// Their id.
        id: &'a str,
    },
    /// Data from another peer.
    Message {
        /// Their id.
        from: &'a str,
        /// The data as they sent it.
        data: &'a Value,
    },
    /// A chat line.
    Chat {
        /// Sender id.
        from: &'a str,
        /// Sender name.
        name: &'a str,
        /// The text.
        text: &'a str,
    },
    /// SFU rooms: the server's SDP offer (its tracks for you changed).
    Offer {
        /// The SDP.
        sdp: &'a str,
    },
    /// SFU rooms: the server's answer to your offer.
    Answer {
        /// The SDP.
        sdp: &'a str,
    },
    /// SFU rooms: the server's ICE candidate (also in its SDP; sent for clients that trickle).
    Candidate {
        /// The `candidate:...` line.
        candidate: &'a str,
        /// Media id of the first m-line.
        #[serde(rename = "sdpMid")]
        sdp_mid: Option<&'a str>,
        /// 0: the server bundles everything on one transport.
        #[serde(rename = "sdpMLineIndex")]
        sdp_mline_index: u32,
    },
    /// SFU rooms: the video of peer `peer` is paused for you because your
    /// bandwidth (the server's estimate of it, or its cap per subscriber) does
    /// not allow it (`paused: true`), or flows again (`paused: false`). Audio
    /// is never paused. `{"type":"paused","peer":ID,"paused":true}`
    Paused {
        /// The publisher's id.
        peer: &'a str,
        /// Whether its video is paused now.
        paused: bool,
    },
    /// SFU rooms: peer `peer` is speaking now, by the audio levels of its
    /// packets (RFC 6464), debounced; sent to everyone in the room when it
    /// changes, and to a participant that joins. `{"type":"speaker","peer":ID}`
    Speaker {
        /// The speaker's id.
        peer: &'a str,
    },
    /// SFU rooms: the room is recorded on the server now (`on: true`) or no
    /// longer; `by` is who asked (a peer id, `http` or `config`). Sent to
    /// everyone in the room when it changes, and to a joiner of a recorded
    /// room. `{"type":"record","on":true,"by":ID}`
    Record {
        /// Whether the room is recorded.
        on: bool,
        /// Who turned it on or off.
        by: &'a str,
    },
    /// Your last message was refused; the connection stays open.
    Error {
        /// A stable code (see [`ErrorCode`]).
        code: ErrorCode,
        /// A human-readable explanation.
        message: &'a str,
    },
}

/// Why a client message was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum ErrorCode {
    /// Not JSON, or not an object with a string `type`.
    BadJson,
    /// A `type` this server does not know.
    UnknownType,
    /// A field missing, of the wrong type, unknown, or out of range.
    BadMessage,
    /// Larger than the limit.
    TooLarge,
    /// Too many messages too fast; this one was dropped.
    RateLimited,
    /// The message needs a room; send `join` first.
    NotJoined,
    /// Already in a room; send `leave` first.
    AlreadyJoined,
    /// No such peer in your room.
    NoSuchPeer,
    /// The room exists with another mode.
    ModeMismatch,
    /// The mode is not available on this server.
    UnsupportedMode,
    /// The message is for SFU rooms only.
    NotSfu,
    /// This server does not record (it has no recording directory).
    NotRecording,
}
