//! Signaling: rooms of peers exchanging offers, answers, candidates and chat
//! over WebSocket text messages (the protocol is in [`protocol`]).
//!
//! [`Signaling`] is a sans-IO state machine like the rest of the core: the
//! shell tells it when a connection opens, hands it each text message and
//! tells it when the connection closes, then drains [`Signaling::poll_output`]
//! for the text messages to send. It never closes a connection itself: bad
//! input gets an `error` message and the connection goes on.
//!
//! It owns rooms and peer ids, for both modes. What concerns the media of
//! `sfu` rooms (joins and leaves, the SDP, candidates and layer choices
//! addressed to the server) comes out of [`Signaling::poll_room_event`] as
//! [`RoomEvent`]s, with peer ids already resolved to connections, for a media
//! server to act on; what that media server says back goes in through
//! [`Signaling::send_sfu`], so that everything on the WebSocket is encoded
//! and counted here. It knows nothing of the SFU itself:
//! [`crate::Switchboard`] wires the two.

pub mod protocol;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::Value;

use crate::hash::{self, Map};
use crate::ids::{ConnId, MediaRole};
use crate::rng::{Rng, Seed};
use crate::time::{Monotonic, WallClock};
use crate::turn::auth::{rest_password, rest_username};

pub use protocol::{ClientMsg, ErrorCode, IceServer, Mode, PeerInfo, ServerMsg};

/// Longest room name, in characters.
pub const MAX_ROOM_NAME: usize = 64;
/// Longest display name, in characters.
pub const MAX_NAME: usize = 64;
/// Longest chat line, in characters.
pub const MAX_CHAT: usize = 4096;

/// Configuration of [`Signaling`].
#[derive(Clone)]
pub struct SignalConfig {
    /// Most peers in a p2p room.
    pub p2p_capacity: usize,
    /// Most peers in an SFU room.
    pub sfu_capacity: usize,
    /// Whether `sfu` rooms can be joined (they need the SFU).
    pub sfu_enabled: bool,
    /// Largest message accepted, in bytes; larger ones get `too-large`
    /// (except SDP, see `max_sdp_bytes`).
    pub max_message_bytes: usize,
    /// Largest `offer` or `answer` (to the SFU, never relayed to peers) accepted, in bytes.
    /// SDP grows by ~2.7 KB per m-line (str0m's default codecs) and an SFU participant has
    /// two m-lines per other participant: 64 KiB stops at 13 participants, and an answer
    /// refused leaves the server's offer pending, so the room stops negotiating new tracks.
    pub max_sdp_bytes: usize,
    /// Messages a connection may send in a burst.
    pub rate_burst: u32,
    /// Messages per second a connection may send, sustained.
    pub rate_per_second: u32,
    /// `stun:` URLs handed out in `joined`.
    pub stun_urls: Vec<String>,
    /// `turn:` URLs handed out in `joined`, with REST credentials.
    pub turn_urls: Vec<String>,
    /// The TURN REST secret for those credentials (the TURN server's).
    pub turn_secret: Option<String>,
    /// How long a handed-out TURN credential is valid.
    pub credential_ttl: Duration,
}

impl Default for SignalConfig {
    fn default() -> Self {
        SignalConfig {
            p2p_capacity: 2,
            sfu_capacity: 16,
            sfu_enabled: false,
            max_message_bytes: 64 * 1024,
            // The shells' WebSocket message limit: about 190 participants' SDP.
            max_sdp_bytes: 1024 * 1024,
            rate_burst: 100,
            rate_per_second: 50,
            stun_urls: Vec::new(),
            turn_urls: Vec::new(),
            turn_secret: None,
            credential_ttl: Duration::from_secs(24 * 3600),
        }
    }
}

impl std::fmt::Debug for SignalConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignalConfig")
            .field("p2p_capacity", &self.p2p_capacity)
            .field("sfu_capacity", &self.sfu_capacity)
            .field("sfu_enabled", &self.sfu_enabled)
            .field("max_message_bytes", &self.max_message_bytes)
            .field("max_sdp_bytes", &self.max_sdp_bytes)
            .field("rate_burst", &self.rate_burst)
            .field("rate_per_second", &self.rate_per_second)
            .field("stun_urls", &self.stun_urls)
            .field("turn_urls", &self.turn_urls)
            .field("turn_secret", &self.turn_secret.as_ref().map(|_| "<redacted>"))
            .field("credential_ttl", &self.credential_ttl)
            .finish()
    }
}

/// A text message to send on a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Send {
    /// The connection.
    pub conn: ConnId,
    /// The JSON text.
    pub text: String,
}

/// What signaling tells the media server about an `sfu` room.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RoomEvent {
    /// `conn` joined the `sfu` room `room` as peer `id`.
    Join {
        /// The signaling connection.
        conn: ConnId,
        /// The room's name.
        room: String,
        /// The peer's id (what the others know it by).
        id: String,
        /// What it does with media (a browser on signaling: [`MediaRole::Member`]).
        role: MediaRole,
    },
    /// `conn` left its `sfu` room (or disconnected).
    Leave {
        /// The signaling connection.
        conn: ConnId,
    },
    /// An SDP offer from the peer to the server.
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
    /// A trickled ICE candidate (`candidate:...` line) for the server.
    Candidate {
        /// The signaling connection.
        conn: ConnId,
        /// The candidate line.
        candidate: String,
    },
    /// The peer wants simulcast layer `rid` of the video of `publisher`, a
    /// peer of its room (instead of the layer its bandwidth picks).
    Layer {
        /// The signaling connection.
        conn: ConnId,
        /// The publisher's signaling connection.
        publisher: ConnId,
        /// The layer, or `auto`.
        rid: String,
    },
    /// The peer asks to be sent at most `bps` bits per second (`None`: no
    /// limit of its own).
    MaxBitrate {
        /// The signaling connection.
        conn: ConnId,
        /// The most bits per second, or none.
        bps: Option<u64>,
    },
    /// The peer asks to record its room (or to stop).
    Record {
        /// The signaling connection.
        conn: ConnId,
        /// Whether to record.
        on: bool,
    },
    /// Record the `sfu` room `room` (or stop), asked over HTTP. It is about a
    /// room, not a connection: [`RoomEvent::conn`] is `None`.
    RecordRoom {
        /// The room.
        room: String,
        /// Whether to record.
        on: bool,
    },
}

impl RoomEvent {
    /// The signaling connection it is about (`None` for [`RoomEvent::RecordRoom`]).
    pub fn conn(&self) -> Option<ConnId> {
        match self {
            RoomEvent::Join { conn, .. }
            | RoomEvent::Leave { conn }
            | RoomEvent::Offer { conn, .. }
            | RoomEvent::Answer { conn, .. }
            | RoomEvent::Candidate { conn, .. }
            | RoomEvent::Layer { conn, .. }
            | RoomEvent::MaxBitrate { conn, .. }
            | RoomEvent::Record { conn, .. } => Some(*conn),
            RoomEvent::RecordRoom { .. } => None,
        }
    }
}

/// Counters of the signaling server.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SignalStats {
    /// Rooms now.
    pub rooms: u64,
    /// Connections now (joined or not).
    pub connections: u64,
    /// Peers in rooms now.
    pub peers: u64,
    /// Messages received.
    pub messages_in: u64,
    /// Messages sent.
    pub messages_out: u64,
    /// Error replies sent.
    pub errors: u64,
    /// Messages dropped by the rate limit.
    pub rate_limited: u64,
}

/// Why [`Signaling::join_media_client`] refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinRefused {
    /// The room name or display name is not valid.
    BadName,
    /// SFU rooms are not available.
    NoSfu,
    /// The room exists as a p2p room.
    ModeMismatch,
    /// The room is full.
    Full,
}

#[derive(Debug)]
struct Peer {
    id: String,
    name: String,
    role: MediaRole,
    room: Option<String>,
    /// Token bucket, in thousandths of a message.
    tokens: u64,
    refilled: Instant,
    /// Whether the client was told it is being rate limited (once per episode).
    limited: bool,
}

#[derive(Debug)]
struct Room {
    mode: Mode,
    /// In join order.
    members: Vec<ConnId>,
}

/// The signaling server: rooms, peers and the relay of their messages.
#[derive(Debug)]
pub struct Signaling {
    config: SignalConfig,
    clock: WallClock,
    time: Monotonic,
    rng: Rng,
    peers: Map<ConnId, Peer>,
    ids: Map<String, ConnId>,
    rooms: Map<String, Room>,
    out: VecDeque<Send>,
    room_events: VecDeque<RoomEvent>,
    stats: SignalStats,
}

/// What went wrong with one client message.
struct Refusal(ErrorCode, &'static str);

impl Signaling {
    /// A signaling server started at `now` (unix time `unix_now`), seeded with `seed`.
    pub fn new(config: SignalConfig, now: Instant, unix_now: u64, seed: &Seed) -> Self {
        Signaling {
            config,
            clock: WallClock::new(now, unix_now),
            time: Monotonic::new(now),
            rng: Rng::new(seed, "signal ids"),
            peers: Map::with_hasher(hash::hasher(seed)),
            ids: Map::with_hasher(hash::hasher(seed)),
            rooms: Map::with_hasher(hash::hasher(seed)),
            out: VecDeque::new(),
            room_events: VecDeque::new(),
            stats: SignalStats::default(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &SignalConfig {
        &self.config
    }

    /// Counters so far.
    pub fn stats(&self) -> SignalStats {
        let mut s = self.stats.clone();
        s.rooms = self.rooms.len() as u64;
        s.connections = self.peers.len() as u64;
        s.peers = self.rooms.values().map(|r| r.members.len() as u64).sum();
        s
    }

    /// A signaling connection opened (a WebSocket was accepted).
    pub fn handle_open(&mut self, now: Instant, conn: ConnId) {
        let now = self.time.advance(now);
        let id = loop {
            let id = format!("{:016x}", self.rng.next_u64());
            if !self.ids.contains_key(&id) {
                break id;
            }
        };
        self.ids.insert(id.clone(), conn);
        let tokens = u64::from(self.config.rate_burst) * 1000;
        self.peers.insert(conn, Peer { id, name: String::new(), role: MediaRole::Member, room: None, tokens, refilled: now, limited: false });
    }

    /// A signaling connection closed: a leave, with `bye` to the others.
    pub fn handle_close(&mut self, now: Instant, conn: ConnId) {
        self.time.advance(now);
        self.leave_room(conn, false);
        if let Some(p) = self.peers.remove(&conn) {
            self.ids.remove(&p.id);
        }
    }

    /// A text message arrived on `conn`.
    pub fn handle_text(&mut self, now: Instant, conn: ConnId, text: &str) {
        let now = self.time.advance(now);
        if !self.peers.contains_key(&conn) {
            return;
        }
        self.stats.messages_in += 1;
        if !self.take_token(now, conn) {
            return;
        }
        if let Err(Refusal(code, message)) = self.dispatch(now, conn, text) {
            self.stats.errors += 1;
            self.send(conn, &ServerMsg::Error { code, message });
        }
    }

    /// The next message to send, if any. Drain after every `handle_*` call.
    pub fn poll_output(&mut self) -> Option<Send> {
        self.out.pop_front()
    }

    /// The next event for the media server (joins, leaves, SDP, candidates
    /// and layer choices of `sfu` rooms), if any. Drain after every
    /// `handle_*` call.
    pub fn poll_room_event(&mut self) -> Option<RoomEvent> {
        self.room_events.pop_front()
    }

    /// Sends what the media server says to the peer on `conn` (`offer`,
    /// `answer`, `candidate` or `error`), encoded and counted like every
    /// other message. Dropped if `conn` is not open.
    pub fn send_sfu(&mut self, conn: ConnId, msg: &ServerMsg<'_>) {
        if !self.peers.contains_key(&conn) {
            return;
        }
        if matches!(msg, ServerMsg::Error { .. }) {
            self.stats.errors += 1;
        }
        self.send(conn, msg);
    }

    /// A member the server makes for a media client without a WebSocket (a
    /// WHIP publisher or WHEP viewer, on connection `conn`, a number the
    /// embedder keeps apart from the shell's): it joins `sfu` room `room` as
    /// `name` and the room sees it as any other peer (`otherjoin`, `bye`).
    /// Returns its peer id. What signaling would send it is the embedder's to
    /// drop; its SDP and candidates go in through [`Signaling::media_client_event`],
    /// and [`Signaling::handle_close`] ends it.
    pub fn join_media_client(&mut self, now: Instant, conn: ConnId, room: &str, name: &str, role: MediaRole) -> Result<String, JoinRefused> {
        let now = self.time.advance(now);
        if !self.config.sfu_enabled {
            return Err(JoinRefused::NoSfu);
        }
        match self.rooms.get(room) {
            Some(r) if r.mode != Mode::Sfu => return Err(JoinRefused::ModeMismatch),
            Some(r) if r.members.len() >= self.config.sfu_capacity => return Err(JoinRefused::Full),
            _ => {}
        }
        self.handle_open(now, conn);
        if let Some(p) = self.peers.get_mut(&conn) {
            p.role = role;
        }
        match self.join(now, conn, room.to_owned(), name.to_owned(), Mode::Sfu) {
            Ok(()) => Ok(self.peers.get(&conn).map(|p| p.id.clone()).unwrap_or_default()),
            Err(_) => {
                self.handle_close(now, conn);
                Err(JoinRefused::BadName)
            }
        }
    }

    /// An offer or candidate of a media client made by [`Signaling::join_media_client`], for the media server.
    pub fn media_client_event(&mut self, event: RoomEvent) {
        if let Some(conn) = event.conn() {
            let _ = self.pass_to_sfu(conn, event);
        }
    }

    /// Whether `room` is an `sfu` room with members.
    pub fn is_sfu_room(&self, room: &str) -> bool {
        self.rooms.get(room).is_some_and(|r| r.mode == Mode::Sfu)
    }

    /// Asks the media server to record `room` (or to stop), for an HTTP call;
    /// false if it is not an `sfu` room with members.
    pub fn record_room(&mut self, room: &str, on: bool) -> bool {
        if !self.is_sfu_room(room) {
            return false;
        }
        self.room_events.push_back(RoomEvent::RecordRoom { room: room.to_owned(), on });
        true
    }

    /// The peer id of connection `conn`, if it is open.
    pub fn peer_id(&self, conn: ConnId) -> Option<&str> {
        self.peers.get(&conn).map(|p| p.id.as_str())
    }

    /// The connection of peer `id`, if it is open.
    pub fn conn_of(&self, id: &str) -> Option<ConnId> {
        self.ids.get(id).copied()
    }

    /// This server's STUN and TURN URLs, with a fresh REST credential for the
    /// TURN ones made for connection `conn` (as `joined` hands them out).
    pub fn ice_servers_for(&self, now: Instant, conn: ConnId) -> Vec<IceServer> {
        self.ice_servers(now, conn)
    }

    /// The token bucket: true if the message may be handled.
    fn take_token(&mut self, now: Instant, conn: ConnId) -> bool {
        let (burst, rate) = (u64::from(self.config.rate_burst) * 1000, u64::from(self.config.rate_per_second));
        let Some(p) = self.peers.get_mut(&conn) else { return false };
        let elapsed = now.saturating_duration_since(p.refilled);
        let refill = (elapsed.as_millis() as u64).saturating_mul(rate);
        if refill > 0 {
            p.tokens = (p.tokens + refill).min(burst);
            p.refilled = now;
        }
        if p.tokens >= 1000 {
            p.tokens -= 1000;
            p.limited = false;
            return true;
        }
        self.stats.rate_limited += 1;
        if !p.limited {
            p.limited = true;
            self.stats.errors += 1;
            let m = ServerMsg::Error { code: ErrorCode::RateLimited, message: "too many messages; this one and those until the rate drops are dropped" };
            self.send(conn, &m);
        }
        false
    }

    fn dispatch(&mut self, now: Instant, conn: ConnId, text: &str) -> Result<(), Refusal> {
        let too_large = Refusal(ErrorCode::TooLarge, "message larger than the limit");
        if text.len() > self.config.max_message_bytes.max(self.config.max_sdp_bytes) {
            return Err(too_large);
        }
        let value: Value = serde_json::from_str(text).map_err(|_| Refusal(ErrorCode::BadJson, "not JSON"))?;
        let Some(typ) = value.get("type").and_then(Value::as_str) else {
            return Err(Refusal(ErrorCode::BadJson, "not an object with a string \"type\""));
        };
        let limit = if matches!(typ, "offer" | "answer") { self.config.max_sdp_bytes } else { self.config.max_message_bytes };
        if text.len() > limit {
            return Err(too_large);
        }
        if !matches!(typ, "join" | "leave" | "message" | "chat" | "offer" | "answer" | "candidate" | "layer" | "maxbitrate" | "record") {
            return Err(Refusal(ErrorCode::UnknownType, "unknown message type"));
        }
        let msg: ClientMsg = serde_json::from_value(value).map_err(|_| Refusal(ErrorCode::BadMessage, "a field is missing or has the wrong type"))?;
        match msg {
            ClientMsg::Join { room, name, mode } => self.join(now, conn, room, name.unwrap_or_default(), mode.unwrap_or(Mode::P2p)),
            ClientMsg::Leave {} => {
                if !self.leave_room(conn, true) {
                    return Err(Refusal(ErrorCode::NotJoined, "not in a room"));
                }
                Ok(())
            }
            ClientMsg::Message { to, data } => self.relay(conn, to, &data),
            ClientMsg::Chat { text } => self.chat(conn, &text),
            ClientMsg::Offer { sdp } => self.pass_to_sfu(conn, RoomEvent::Offer { conn, sdp }),
            ClientMsg::Answer { sdp } => self.pass_to_sfu(conn, RoomEvent::Answer { conn, sdp }),
            ClientMsg::Layer { peer, rid } => {
                let room = self.sfu_room(conn)?;
                let publisher = self.ids.get(&peer).copied().filter(|c| room.members.contains(c));
                let publisher = publisher.ok_or(Refusal(ErrorCode::NoSuchPeer, "no such peer in your room"))?;
                self.pass_to_sfu(conn, RoomEvent::Layer { conn, publisher, rid })
            }
            ClientMsg::MaxBitrate { bps } => {
                self.sfu_room(conn)?;
                self.pass_to_sfu(conn, RoomEvent::MaxBitrate { conn, bps })
            }
            ClientMsg::Record { on } => self.pass_to_sfu(conn, RoomEvent::Record { conn, on }),
            ClientMsg::Candidate { candidate, .. } => {
                if candidate.is_empty() {
                    return Ok(()); // end of gathering
                }
                self.pass_to_sfu(conn, RoomEvent::Candidate { conn, candidate })
            }
        }
    }

    /// The `sfu` room `conn` is in.
    fn sfu_room(&self, conn: ConnId) -> Result<&Room, Refusal> {
        let p = self.peers.get(&conn).ok_or(Refusal(ErrorCode::NotJoined, "not connected"))?;
        let room = p.room.as_ref().ok_or(Refusal(ErrorCode::NotJoined, "join a room first"))?;
        let room = self.rooms.get(room).filter(|r| r.mode == Mode::Sfu);
        room.ok_or(Refusal(ErrorCode::NotSfu, "offer, answer and candidate are for sfu rooms"))
    }

    /// Passes a message for the media server on, if `conn` is in an `sfu` room.
    fn pass_to_sfu(&mut self, conn: ConnId, event: RoomEvent) -> Result<(), Refusal> {
        self.sfu_room(conn)?;
        self.room_events.push_back(event);
        Ok(())
    }

    fn join(&mut self, now: Instant, conn: ConnId, room: String, name: String, mode: Mode) -> Result<(), Refusal> {
        let valid = |s: &str, max: usize| s.chars().count() <= max && !s.chars().any(char::is_control);
        if room.is_empty() || !valid(&room, MAX_ROOM_NAME) {
            return Err(Refusal(ErrorCode::BadMessage, "room names are 1 to 64 characters, no control characters"));
        }
        if !valid(&name, MAX_NAME) {
            return Err(Refusal(ErrorCode::BadMessage, "names are at most 64 characters, no control characters"));
        }
        if mode == Mode::Sfu && !self.config.sfu_enabled {
            return Err(Refusal(ErrorCode::UnsupportedMode, "sfu rooms are not available on this server"));
        }
        if self.peers.get(&conn).is_some_and(|p| p.room.is_some()) {
            return Err(Refusal(ErrorCode::AlreadyJoined, "already in a room; leave first"));
        }
        let capacity = match mode {
            Mode::P2p => self.config.p2p_capacity,
            Mode::Sfu => self.config.sfu_capacity,
        };
        if let Some(r) = self.rooms.get(&room) {
            if r.mode != mode {
                return Err(Refusal(ErrorCode::ModeMismatch, "the room exists with another mode"));
            }
            if r.members.len() >= capacity {
                self.send(conn, &ServerMsg::Full { room: &room });
                return Ok(());
            }
        }
        let ice = self.ice_servers(now, conn);
        let r = self.rooms.entry(room.clone()).or_insert_with(|| Room { mode, members: Vec::new() });
        let others = r.members.clone();
        r.members.push(conn);
        let p = self.peers.get_mut(&conn).expect("checked above");
        p.name = name;
        p.room = Some(room.clone());
        let (id, name) = (p.id.clone(), p.name.clone());
        let peers: Vec<PeerInfo<'_>> = others
            .iter()
            .filter_map(|c| self.peers.get(c))
            .map(|p| PeerInfo { id: &p.id, name: &p.name })
            .collect();
        let joined = encode(&ServerMsg::Joined { room: &room, id: &id, mode, peers, ice_servers: &ice });
        self.push(conn, joined);
        let other = encode(&ServerMsg::OtherJoin { room: &room, id: &id, name: &name });
        for c in others {
            self.push(c, other.clone());
        }
        if mode == Mode::Sfu {
            let role = self.peers.get(&conn).map(|p| p.role.clone()).unwrap_or_default();
            self.room_events.push_back(RoomEvent::Join { conn, room, id, role });
        }
        Ok(())
    }

    /// Removes `conn` from its room: `bye` to the others, `leaved` to it if
    /// `tell` (an explicit leave). False if it was in no room.
    fn leave_room(&mut self, conn: ConnId, tell: bool) -> bool {
        let Some(p) = self.peers.get_mut(&conn) else { return false };
        let Some(room) = p.room.take() else { return false };
        let id = p.id.clone();
        let mut others = Vec::new();
        if let Some(r) = self.rooms.get_mut(&room) {
            if r.mode == Mode::Sfu {
                self.room_events.push_back(RoomEvent::Leave { conn });
            }
            r.members.retain(|c| *c != conn);
            others = r.members.clone();
            if r.members.is_empty() {
                self.rooms.remove(&room);
            }
        }
        if tell {
            self.send(conn, &ServerMsg::Leaved { room: &room });
        }
        let bye = encode(&ServerMsg::Bye { room: &room, id: &id });
        for c in others {
            self.push(c, bye.clone());
        }
        true
    }

    /// The members of `conn`'s room other than it, and its id and name.
    fn room_of(&self, conn: ConnId) -> Result<(Vec<ConnId>, &Peer), Refusal> {
        let p = self.peers.get(&conn).ok_or(Refusal(ErrorCode::NotJoined, "not connected"))?;
        let room = p.room.as_ref().ok_or(Refusal(ErrorCode::NotJoined, "join a room first"))?;
        let others = self.rooms.get(room).map(|r| r.members.iter().copied().filter(|c| *c != conn).collect()).unwrap_or_default();
        Ok((others, p))
    }

    fn relay(&mut self, conn: ConnId, to: Option<String>, data: &Value) -> Result<(), Refusal> {
        let (others, p) = self.room_of(conn)?;
        let text = encode(&ServerMsg::Message { from: &p.id, data });
        let targets: Vec<ConnId> = match to {
            None => others,
            Some(to) => {
                let t = self.ids.get(&to).copied().filter(|c| others.contains(c));
                vec![t.ok_or(Refusal(ErrorCode::NoSuchPeer, "no such peer in your room"))?]
            }
        };
        for c in targets {
            self.push(c, text.clone());
        }
        Ok(())
    }

    fn chat(&mut self, conn: ConnId, text: &str) -> Result<(), Refusal> {
        if text.chars().count() > MAX_CHAT {
            return Err(Refusal(ErrorCode::BadMessage, "chat lines are at most 4096 characters"));
        }
        let (others, p) = self.room_of(conn)?;
        let msg = encode(&ServerMsg::Chat { from: &p.id, name: &p.name, text });
        for c in others {
            self.push(c, msg.clone());
        }
        Ok(())
    }

    /// This server's STUN and TURN URLs, with a fresh REST credential for the TURN ones.
    fn ice_servers(&self, now: Instant, conn: ConnId) -> Vec<IceServer> {
        let mut v = Vec::new();
        if !self.config.stun_urls.is_empty() {
            v.push(IceServer { urls: self.config.stun_urls.clone(), username: None, credential: None });
        }
        if let (false, Some(secret)) = (self.config.turn_urls.is_empty(), &self.config.turn_secret) {
            let expiry = self.clock.unix(now) + self.config.credential_ttl.as_secs();
            let id = self.peers.get(&conn).map(|p| p.id.as_str());
            let username = rest_username(expiry, id);
            let credential = rest_password(secret.as_bytes(), &username);
            v.push(IceServer { urls: self.config.turn_urls.clone(), username: Some(username), credential: Some(credential) });
        }
        v
    }

    fn send(&mut self, conn: ConnId, msg: &ServerMsg<'_>) {
        let text = encode(msg);
        self.push(conn, text);
    }

    fn push(&mut self, conn: ConnId, text: String) {
        self.stats.messages_out += 1;
        self.out.push_back(Send { conn, text });
    }
}

fn encode(msg: &ServerMsg<'_>) -> String {
    serde_json::to_string(msg).expect("server messages always serialize")
}
