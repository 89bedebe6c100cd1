//! WHIP (RFC 9725) and WHEP: media in and out of SFU rooms over plain HTTP,
//! for clients that do not speak this server's signaling (OBS, GStreamer,
//! encoders, players).
//!
//! `POST /whip/{room}` with an SDP offer makes a publisher in the room;
//! `POST /whep/{room}` (optionally `?peer=ID`) a viewer. Each session is a
//! member of the room made by the server ([`Signaling::join_media_client`]
//! on a connection number of its own, [`MEDIA_CLIENT_CONNS`] and up), so
//! the room's browsers see it as any other participant, and its SDP goes to
//! the SFU as a browser's does. The answer comes back (from whichever
//! worker hosts the room) as an [`crate::sfu::SfuMessage::Answer`], and
//! becomes the `201 Created`. `PATCH` on the session's `Location` trickles
//! candidates (`application/trickle-ice-sdpfrag`), `DELETE` ends it,
//! `OPTIONS` answers CORS preflights. Every request but `OPTIONS` needs
//! `Authorization: Bearer TOKEN`: a static token from the configuration, or
//! a REST token made from the shared secret ([`rest_token`]).
//!
//! This module decides the HTTP answers (status, headers, body) as values;
//! the shell writes them. [`crate::Switchboard`] wires it to signaling and
//! the SFU.

use std::time::Instant;

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha1::Sha1;

use crate::hash::{self, Map};
use crate::ids::{ConnId, MediaRole};
use crate::rng::{Rng, Seed};
use crate::signal::{IceServer, JoinRefused, MAX_NAME, MAX_ROOM_NAME};
use crate::time::WallClock;
use crate::turn::auth::{rest_password, rest_username};

/// Connection numbers of WHIP and WHEP sessions start here: shells number
/// their connections from 0, far below.
pub const MEDIA_CLIENT_CONNS: u64 = 1 << 62;

/// Largest SDP or SDP fragment accepted in a request body.
pub const MAX_BODY: usize = 64 * 1024;

/// Configuration of WHIP and WHEP.
#[derive(Clone, Default)]
pub struct WhipConfig {
    /// Bearer tokens accepted as they are.
    pub tokens: Vec<String>,
    /// The secret REST tokens are checked with (the TURN REST secret when `None`).
    pub secret: Option<String>,
}

impl std::fmt::Debug for WhipConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WhipConfig").field("tokens", &self.tokens.len()).field("secret", &self.secret.as_ref().map(|_| "<redacted>")).finish()
    }
}

/// A REST token for WHIP and WHEP valid until `expiry_unix`:
/// `EXPIRY[:NAME]:HMAC`, the TURN REST username and password of the same
/// secret joined by `:`.
pub fn rest_token(secret: &str, expiry_unix: u64, name: Option<&str>) -> String {
    let user = rest_username(expiry_unix, name);
    let pass = rest_password(secret.as_bytes(), &user);
    format!("{user}:{pass}")
}

/// Whether `token` is one of `config`'s static tokens, or a REST token of its
/// secret ([`rest_token`]) not expired at `unix_now`. Compared in constant time.
pub fn token_ok(config: &WhipConfig, unix_now: u64, token: &str) -> bool {
    if config.tokens.iter().any(|t| ct_eq(t.as_bytes(), token.as_bytes())) {
        return true;
    }
    let Some(secret) = &config.secret else { return false };
    let Some((user, pass)) = token.rsplit_once(':') else { return false };
    let expiry = user.split(':').next().and_then(|e| e.parse::<u64>().ok());
    if expiry.is_none_or(|e| e < unix_now) {
        return false;
    }
    let Ok(mac) = base64::engine::general_purpose::STANDARD.decode(pass) else { return false };
    let mut m = Hmac::<Sha1>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    m.update(user.as_bytes());
    m.verify_slice(&mac).is_ok()
}

/// An HTTP request for WHIP or WHEP, as the shell parsed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpRequest<'a> {
    /// The method.
    pub method: &'a str,
    /// The path, without the query.
    pub path: &'a str,
    /// The query, without the `?`.
    pub query: &'a str,
    /// `Authorization`.
    pub authorization: Option<&'a str>,
    /// `Content-Type`.
    pub content_type: Option<&'a str>,
    /// `If-Match`.
    pub if_match: Option<&'a str>,
    /// The body.
    pub body: &'a [u8],
}

/// The answer to an [`HttpRequest`], for the shell to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    /// The status code.
    pub status: u16,
    /// Headers besides `Content-Length` and the connection's own.
    pub headers: Vec<(&'static str, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl HttpResponse {
    fn new(status: u16) -> Self {
        HttpResponse { status, headers: cors(), body: Vec::new() }
    }

    /// An error with a one-line reason as the body.
    fn error(status: u16, reason: &str) -> Self {
        let mut r = Self::new(status);
        r.headers.push(("Content-Type", "text/plain; charset=utf-8".into()));
        r.body = format!("{reason}\n").into_bytes();
        r
    }

    /// 401, with the challenge a client needs.
    fn unauthorized() -> Self {
        let mut r = Self::error(401, "a bearer token is required (Authorization: Bearer TOKEN)");
        r.headers.push(("WWW-Authenticate", "Bearer realm=\"switchboard\"".into()));
        r
    }

    /// The status line's reason phrase.
    pub fn reason(&self) -> &'static str {
        match self.status {
            200 => "OK",
            201 => "Created",
            202 => "Accepted",
            204 => "No Content",
            400 => "Bad Request",
            401 => "Unauthorized",
            404 => "Not Found",
            405 => "Method Not Allowed",
            409 => "Conflict",
            412 => "Precondition Failed",
            413 => "Content Too Large",
            415 => "Unsupported Media Type",
            422 => "Unprocessable Content",
            503 => "Service Unavailable",
            _ => "",
        }
    }
}

/// What every WHIP and WHEP answer carries so that pages on other origins may use them.
fn cors() -> Vec<(&'static str, String)> {
    vec![
        ("Access-Control-Allow-Origin", "*".into()),
        ("Access-Control-Expose-Headers", "Location, ETag, Link, Accept-Patch, WWW-Authenticate".into()),
    ]
}

/// Whether `path` is WHIP's or WHEP's (the shell hands those to the engine).
pub fn is_media_path(path: &str) -> bool {
    path.starts_with("/whip/") || path.starts_with("/whep/")
}

/// Whether a request is the engine's: WHIP, WHEP, and `POST /recordings/{room}?on=…`
/// (recording on or off; listing and downloading recordings is the shell's).
pub fn is_engine_request(method: &str, path: &str) -> bool {
    is_media_path(path) || (path.starts_with("/recordings/") && method != "GET" && method != "HEAD")
}

/// Which way media goes in a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// WHIP: into the room.
    Publish,
    /// WHEP: out of it.
    Play,
}

impl Direction {
    fn path(self) -> &'static str {
        match self {
            Direction::Publish => "whip",
            Direction::Play => "whep",
        }
    }
}

/// One WHIP or WHEP session.
#[derive(Debug)]
pub(crate) struct Session {
    direction: Direction,
    room: String,
    conn: ConnId,
    etag: String,
    /// The client's ICE ufrag, from its offer (a fragment with another one is an ICE restart).
    ufrag: Option<String>,
    /// The HTTP connection waiting for the answer to the `POST`.
    awaiting: Option<ConnId>,
}

/// Counters of WHIP and WHEP.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct WhipStats {
    /// WHIP sessions now.
    pub whip_sessions: u64,
    /// WHEP sessions now.
    pub whep_sessions: u64,
    /// Requests handled.
    pub requests: u64,
    /// Requests refused 401 (no or a wrong token).
    pub unauthorized: u64,
    /// Requests refused with another 4xx or 5xx.
    pub refused: u64,
    /// Sessions ended by `DELETE`.
    pub deleted: u64,
    /// Sessions ended because the client went quiet.
    pub timed_out: u64,
}

/// What the engine is to do for a request.
#[derive(Debug)]
pub(crate) enum Action {
    /// Answer at once.
    Respond(HttpResponse),
    /// Make the session's member in `room` and hand its offer to the SFU; the
    /// answer (or refusal) answers HTTP connection `http`.
    Join { conn: ConnId, room: String, name: String, role: MediaRole, sdp: String },
    /// Trickled candidates for the session's member; then 204.
    Candidates { conn: ConnId, candidates: Vec<String> },
    /// End the session's member; then 200.
    End { conn: ConnId },
    /// Record `room` (or stop); then 202, or 404 if it is not an SFU room with members.
    Record { room: String, on: bool },
}

/// The WHIP and WHEP sessions of one engine (worker 0).
pub(crate) struct Sessions {
    config: WhipConfig,
    rng: Rng,
    clock: WallClock,
    by_id: Map<String, Session>,
    by_conn: Map<ConnId, String>,
    next: u64,
    stats: WhipStats,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions").field("sessions", &self.by_id.len()).finish_non_exhaustive()
    }
}

impl Sessions {
    pub(crate) fn new(config: WhipConfig, now: Instant, unix_now: u64, seed: &Seed) -> Self {
        Sessions {
            config,
            rng: Rng::new(seed, "whip sessions"),
            clock: WallClock::new(now, unix_now),
            by_id: Map::with_hasher(hash::hasher(seed)),
            by_conn: Map::with_hasher(hash::hasher(seed)),
            next: 0,
            stats: WhipStats::default(),
        }
    }

    pub(crate) fn stats(&self) -> WhipStats {
        let mut s = self.stats.clone();
        s.whip_sessions = self.by_id.values().filter(|x| x.direction == Direction::Publish).count() as u64;
        s.whep_sessions = self.by_id.values().filter(|x| x.direction == Direction::Play).count() as u64;
        s
    }

    /// Whether `conn` is a session's member (not a shell's connection).
    pub(crate) fn is_session(conn: ConnId) -> bool {
        conn.0 >= MEDIA_CLIENT_CONNS
    }

    /// Whether `auth` carries a token this server accepts.
    fn authorized(&self, now: Instant, auth: Option<&str>) -> bool {
        let token = auth.and_then(|a| a.strip_prefix("Bearer ").or_else(|| a.strip_prefix("bearer "))).map(str::trim);
        token.is_some_and(|t| token_ok(&self.config, self.clock.unix(now), t))
    }

    /// Decides what a request asks (`http`: the connection it came on).
    pub(crate) fn handle(&mut self, now: Instant, http: ConnId, req: &HttpRequest<'_>) -> Action {
        self.stats.requests += 1;
        let action = self.decide(now, http, req);
        if let Action::Respond(r) = &action {
            match r.status {
                401 => self.stats.unauthorized += 1,
                s if s >= 400 => self.stats.refused += 1,
                _ => {}
            }
        }
        action
    }

    fn decide(&mut self, now: Instant, http: ConnId, req: &HttpRequest<'_>) -> Action {
        let refuse = |status, reason: &str| Action::Respond(HttpResponse::error(status, reason));
        let mut parts = req.path.trim_start_matches('/').splitn(3, '/');
        let direction = match parts.next() {
            Some("whip") => Direction::Publish,
            Some("whep") => Direction::Play,
            Some("recordings") => return self.record(now, parts.next(), req),
            _ => return refuse(404, "not a WHIP or WHEP path"),
        };
        let Some(room) = parts.next().and_then(percent_decode).filter(|r| valid(r, MAX_ROOM_NAME) && !r.is_empty()) else {
            return refuse(404, "room names are 1 to 64 characters, no control characters");
        };
        let session = parts.next().filter(|s| !s.is_empty());
        if req.method == "OPTIONS" {
            let mut r = HttpResponse::new(204);
            let methods = if session.is_some() { "PATCH, DELETE, OPTIONS" } else { "POST, OPTIONS" };
            r.headers.push(("Access-Control-Allow-Methods", methods.into()));
            r.headers.push(("Access-Control-Allow-Headers", "Authorization, Content-Type, If-Match".into()));
            r.headers.push(("Access-Control-Max-Age", "86400".into()));
            if session.is_none() {
                r.headers.push(("Accept-Post", "application/sdp".into()));
            }
            return Action::Respond(r);
        }
        if !self.authorized(now, req.authorization) {
            return Action::Respond(HttpResponse::unauthorized());
        }
        if req.body.len() > MAX_BODY {
            return refuse(413, "the body is larger than 64 KiB");
        }
        match (session, req.method) {
            (None, "POST") => self.create(http, direction, room, req),
            (None, _) => {
                let mut r = HttpResponse::error(405, "POST an SDP offer here");
                r.headers.push(("Allow", "POST, OPTIONS".into()));
                Action::Respond(r)
            }
            (Some(id), method) => {
                let Some(s) = self.by_id.get(id).filter(|s| s.room == room && s.direction == direction) else {
                    return refuse(404, "no such session");
                };
                match method {
                    "DELETE" => Action::End { conn: s.conn },
                    "PATCH" => self.patch(id, req),
                    _ => {
                        let mut r = HttpResponse::error(405, "PATCH (trickle ICE) or DELETE a session");
                        r.headers.push(("Allow", "PATCH, DELETE, OPTIONS".into()));
                        Action::Respond(r)
                    }
                }
            }
        }
    }

    /// `POST /recordings/{room}?on=1` (or `on=0`): recording on or off, with a token.
    fn record(&mut self, now: Instant, room: Option<&str>, req: &HttpRequest<'_>) -> Action {
        let refuse = |status, reason: &str| Action::Respond(HttpResponse::error(status, reason));
        let Some(room) = room.and_then(percent_decode).filter(|r| valid(r, MAX_ROOM_NAME) && !r.is_empty()) else {
            return refuse(404, "POST /recordings/ROOM?on=1 (or on=0)");
        };
        if req.method == "OPTIONS" {
            let mut r = HttpResponse::new(204);
            r.headers.push(("Access-Control-Allow-Methods", "POST, OPTIONS".into()));
            r.headers.push(("Access-Control-Allow-Headers", "Authorization".into()));
            return Action::Respond(r);
        }
        if !self.authorized(now, req.authorization) {
            return Action::Respond(HttpResponse::unauthorized());
        }
        if req.method != "POST" {
            let mut r = HttpResponse::error(405, "POST /recordings/ROOM?on=1 (or on=0)");
            r.headers.push(("Allow", "POST, OPTIONS".into()));
            return Action::Respond(r);
        }
        let on = req.query.split('&').find_map(|kv| kv.strip_prefix("on=")).map(|v| matches!(v, "1" | "true" | "on"));
        match on {
            Some(on) => Action::Record { room, on },
            None => refuse(400, "say on=1 or on=0"),
        }
    }

    /// The answer to a recording request that was passed on (202) or found no room (404).
    pub(crate) fn recording(found: bool) -> HttpResponse {
        if found {
            HttpResponse::new(202)
        } else {
            HttpResponse::error(404, "no SFU room of that name has members")
        }
    }

    /// `POST /whip/{room}` or `/whep/{room}`: checks the offer and makes the session.
    fn create(&mut self, http: ConnId, direction: Direction, room: String, req: &HttpRequest<'_>) -> Action {
        let refuse = |status, reason: &str| Action::Respond(HttpResponse::error(status, reason));
        if !req.content_type.is_some_and(|c| c.split(';').next().is_some_and(|t| t.trim().eq_ignore_ascii_case("application/sdp"))) {
            return refuse(415, "the offer must be application/sdp");
        }
        let Ok(sdp) = std::str::from_utf8(req.body) else {
            return refuse(400, "the SDP is not UTF-8");
        };
        if let Err(why) = check_offer(sdp, direction) {
            return refuse(400, why);
        }
        let mut name = None;
        let mut peer = None;
        for (k, v) in req.query.split('&').filter_map(|kv| kv.split_once('=')) {
            match k {
                "name" => name = percent_decode(v),
                "peer" => peer = percent_decode(v),
                _ => {}
            }
        }
        let name = name.unwrap_or_else(|| direction.path().to_uppercase());
        if !valid(&name, MAX_NAME) {
            return refuse(400, "names are at most 64 characters, no control characters");
        }
        let role = match direction {
            Direction::Publish => MediaRole::Publisher,
            Direction::Play => MediaRole::Viewer { peer },
        };
        let conn = ConnId(MEDIA_CLIENT_CONNS + self.next);
        self.next += 1;
        let id = loop {
            let id = format!("{:016x}", self.rng.next_u64());
            if !self.by_id.contains_key(&id) {
                break id;
            }
        };
        let etag = format!("{:016x}", self.rng.next_u64());
        let ufrag = attribute(sdp, "ice-ufrag").map(str::to_owned);
        self.by_conn.insert(conn, id.clone());
        self.by_id.insert(id, Session { direction, room: room.clone(), conn, etag, ufrag, awaiting: Some(http) });
        Action::Join { conn, room, name, role, sdp: sdp.to_owned() }
    }

    /// `PATCH` on a session: trickled candidates.
    fn patch(&mut self, id: &str, req: &HttpRequest<'_>) -> Action {
        let refuse = |status, reason: &str| Action::Respond(HttpResponse::error(status, reason));
        let Some(s) = self.by_id.get(id) else { return refuse(404, "no such session") };
        if req.if_match.is_some_and(|m| m.trim() != "*" && m.trim().trim_matches('"') != s.etag) {
            return refuse(412, "If-Match does not match the session's ETag");
        }
        if !req.content_type.is_some_and(|c| c.split(';').next().is_some_and(|t| t.trim().eq_ignore_ascii_case("application/trickle-ice-sdpfrag"))) {
            return refuse(415, "PATCH takes application/trickle-ice-sdpfrag");
        }
        let Ok(frag) = std::str::from_utf8(req.body) else { return refuse(400, "the fragment is not UTF-8") };
        if attribute(frag, "ice-ufrag").is_some_and(|u| s.ufrag.as_deref() != Some(u)) {
            return refuse(422, "ICE restarts are not supported: make a new session");
        }
        let candidates: Vec<String> = frag.lines().filter_map(|l| l.trim().strip_prefix("a=candidate:")).map(|c| format!("candidate:{c}")).collect();
        Action::Candidates { conn: s.conn, candidates }
    }

    /// The answer for the session of member `conn`: `201 Created`. `None` if
    /// no request waits for one.
    pub(crate) fn answered(&mut self, conn: ConnId, sdp: &str, ice: &[IceServer]) -> Option<(ConnId, HttpResponse)> {
        let s = self.by_conn.get(&conn).and_then(|id| self.by_id.get_mut(id).map(|s| (id, s)));
        let (id, s) = s?;
        let http = s.awaiting.take()?;
        let mut r = HttpResponse::new(201);
        r.headers.push(("Content-Type", "application/sdp".into()));
        r.headers.push(("Location", format!("/{}/{}/{id}", s.direction.path(), percent_encode(&s.room))));
        r.headers.push(("ETag", format!("\"{}\"", s.etag)));
        r.headers.push(("Accept-Patch", "application/trickle-ice-sdpfrag".into()));
        for server in ice {
            for url in &server.urls {
                let mut link = format!("<{url}>; rel=\"ice-server\"");
                if let (Some(u), Some(c)) = (&server.username, &server.credential) {
                    link.push_str(&format!("; username=\"{u}\"; credential=\"{c}\"; credential-type=\"password\""));
                }
                r.headers.push(("Link", link));
            }
        }
        r.body = sdp.as_bytes().to_vec();
        Some((http, r))
    }

    /// The SFU refused the session's offer: the waiting request gets 400.
    pub(crate) fn refused(&mut self, conn: ConnId, reason: &str) -> Option<(ConnId, HttpResponse)> {
        let http = self.by_conn.get(&conn).and_then(|id| self.by_id.get_mut(id)).and_then(|s| s.awaiting.take())?;
        self.stats.refused += 1;
        Some((http, HttpResponse::error(400, reason)))
    }

    /// Signaling refused the member: the answer to the waiting request.
    pub(crate) fn join_refused(&mut self, conn: ConnId, why: JoinRefused) -> Option<(ConnId, HttpResponse)> {
        let http = self.end(conn)?.awaiting?;
        self.stats.refused += 1;
        let r = match why {
            JoinRefused::Full => HttpResponse::error(503, "the room is full"),
            JoinRefused::ModeMismatch => HttpResponse::error(409, "the room exists as a p2p room; WHIP and WHEP need an sfu room"),
            JoinRefused::NoSfu => HttpResponse::error(503, "this server has no SFU"),
            JoinRefused::BadName => HttpResponse::error(400, "bad room or participant name"),
        };
        Some((http, r))
    }

    /// The session of member `conn` ends (`DELETE`, a refusal, or the client went quiet).
    pub(crate) fn end(&mut self, conn: ConnId) -> Option<Session> {
        let id = self.by_conn.remove(&conn)?;
        self.by_id.remove(&id)
    }

    pub(crate) fn count_deleted(&mut self) {
        self.stats.deleted += 1;
    }

    pub(crate) fn count_timed_out(&mut self) {
        self.stats.timed_out += 1;
    }

    /// The answer to a `DELETE` or `PATCH` that was done.
    pub(crate) fn done(status: u16) -> HttpResponse {
        HttpResponse::new(status)
    }
}

/// Why an offer cannot make a session, if it cannot.
fn check_offer(sdp: &str, direction: Direction) -> Result<(), &'static str> {
    #[cfg(feature = "sfu")]
    if str0m::change::SdpOffer::from_sdp_string(sdp).is_err() {
        return Err("not an SDP offer (it does not parse)");
    }
    let media = sdp.lines().filter(|l| l.starts_with("m=audio") || l.starts_with("m=video")).count();
    if media == 0 {
        return Err("the offer has no audio or video m-line");
    }
    if attribute(sdp, "ice-ufrag").is_none() || attribute(sdp, "fingerprint").is_none() {
        return Err("the offer lacks ICE credentials or a DTLS fingerprint");
    }
    let sends = sdp.lines().any(|l| matches!(l.trim(), "a=sendonly" | "a=sendrecv"));
    let receives = sdp.lines().any(|l| matches!(l.trim(), "a=recvonly" | "a=sendrecv"));
    match direction {
        Direction::Publish if !sends => Err("a WHIP offer must send media (sendonly or sendrecv)"),
        Direction::Play if !receives => Err("a WHEP offer must receive media (recvonly or sendrecv)"),
        _ => Ok(()),
    }
}

/// The value of the first `a=NAME:` line.
fn attribute<'a>(sdp: &'a str, name: &str) -> Option<&'a str> {
    sdp.lines().find_map(|l| l.trim().strip_prefix("a=").and_then(|a| a.strip_prefix(name)).and_then(|a| a.strip_prefix(':'))).map(str::trim)
}

fn valid(s: &str, max: usize) -> bool {
    s.chars().count() <= max && !s.chars().any(char::is_control)
}

/// `%XX` decoded (and `+` as a space); `None` if not valid UTF-8 or a bad escape.
fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = s.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// A room name as a path segment.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Equal, in time that does not depend on where they differ.
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    const OFFER: &str = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\na=fingerprint:sha-256 00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF\r\na=setup:actpass\r\na=sendonly\r\na=rtcp-mux\r\na=rtpmap:96 VP8/90000\r\n";

    fn sessions() -> Sessions {
        let config = WhipConfig { tokens: vec!["static-one".into()], secret: Some("s3cret".into()) };
        Sessions::new(config, crate::time::test_start(), 1_800_000_000, &[7; 32])
    }

    fn req<'a>(method: &'a str, path: &'a str, auth: Option<&'a str>, body: &'a str) -> HttpRequest<'a> {
        HttpRequest { method, path, query: "name=OBS", authorization: auth, content_type: Some("application/sdp"), if_match: None, body: body.as_bytes() }
    }

    fn status(a: &Action) -> u16 {
        match a {
            Action::Respond(r) => r.status,
            Action::Join { .. } => 1,
            Action::Candidates { .. } => 2,
            Action::End { .. } => 3,
            Action::Record { .. } => 4,
        }
    }

    #[test]
    fn tokens_static_and_rest_are_checked() {
        let mut s = sessions();
        let now = crate::time::test_start();
        let good = rest_token("s3cret", 1_800_000_100, Some("obs"));
        let expired = rest_token("s3cret", 1_700_000_000, Some("obs"));
        let other = rest_token("other", 1_800_000_100, Some("obs"));
        for (auth, want) in [
            (None, 401),
            (Some("Bearer nope".to_owned()), 401),
            (Some("Basic static-one".to_owned()), 401),
            (Some(format!("Bearer {expired}")), 401),
            (Some(format!("Bearer {other}")), 401),
            (Some("Bearer static-one".to_owned()), 1),
            (Some(format!("Bearer {good}")), 1),
        ] {
            let a = s.handle(now, ConnId(1), &req("POST", "/whip/room", auth.as_deref(), OFFER));
            assert_eq!(status(&a), want, "{auth:?}");
            if let Action::Respond(r) = a {
                assert!(r.headers.iter().any(|(k, v)| *k == "WWW-Authenticate" && v.starts_with("Bearer")));
            }
        }
        assert_eq!(s.stats().unauthorized, 5);
        // A secret never appears in Debug output.
        assert!(!format!("{:?}", s.config).contains("s3cret"));
    }

    #[test]
    fn malformed_offers_get_400_with_a_reason() {
        let mut s = sessions();
        let now = crate::time::test_start();
        let auth = Some("Bearer static-one");
        for (body, why) in [
            ("hello", "does not parse"),
            ("", "does not parse"),
            (&OFFER.replace("a=sendonly", "a=recvonly"), "must send media"),
        ] {
            match s.handle(now, ConnId(1), &req("POST", "/whip/room", auth, body)) {
                Action::Respond(r) => {
                    assert_eq!(r.status, 400, "{body:?}");
                    assert!(String::from_utf8_lossy(&r.body).contains(why), "{:?}", String::from_utf8_lossy(&r.body));
                }
                other => panic!("{other:?}"),
            }
        }
        let mut wrong = req("POST", "/whip/room", auth, OFFER);
        wrong.content_type = Some("text/plain");
        assert_eq!(status(&s.handle(now, ConnId(1), &wrong)), 415);
        assert_eq!(status(&s.handle(now, ConnId(1), &req("GET", "/whip/room", auth, ""))), 405);
        let big = "x".repeat(MAX_BODY + 1);
        assert_eq!(status(&s.handle(now, ConnId(1), &req("POST", "/whip/room", auth, &big))), 413);
        assert_eq!(status(&s.handle(now, ConnId(1), &req("POST", "/whip/", auth, OFFER))), 404);
        assert_eq!(status(&s.handle(now, ConnId(1), &req("POST", "/whip/a%ZZ", auth, OFFER))), 404);
    }

    #[test]
    fn a_session_is_answered_patched_and_deleted() {
        let mut s = sessions();
        let now = crate::time::test_start();
        let auth = Some("Bearer static-one");
        let Action::Join { conn, room, name, role, .. } = s.handle(now, ConnId(9), &req("POST", "/whip/my%20room", auth, OFFER)) else { panic!() };
        assert_eq!((room.as_str(), name.as_str(), role), ("my room", "OBS", MediaRole::Publisher));
        assert!(Sessions::is_session(conn) && !Sessions::is_session(ConnId(9)));
        let ice = [IceServer { urls: vec!["turn:127.0.0.1:3478".into()], username: Some("u".into()), credential: Some("c".into()) }];
        let (http, r) = s.answered(conn, "v=0\r\n", &ice).expect("a request waits");
        assert_eq!((http, r.status), (ConnId(9), 201));
        let header = |k: &str| r.headers.iter().find(|(h, _)| *h == k).map(|(_, v)| v.clone()).unwrap();
        let location = header("Location");
        assert!(location.starts_with("/whip/my%20room/"), "{location}");
        assert!(header("Link").contains("rel=\"ice-server\"; username=\"u\""));
        assert!(s.answered(conn, "v=0\r\n", &ice).is_none(), "answered once");
        assert_eq!(s.stats().whip_sessions, 1);
        // PATCH: candidates, If-Match, ICE restart refused.
        let etag = header("ETag");
        let frag = "a=ice-ufrag:abcd\r\na=ice-pwd:x\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:0\r\na=candidate:1 1 udp 2130706431 10.0.0.1 5000 typ host\r\na=end-of-candidates\r\n";
        let mut p = req("PATCH", &location, auth, frag);
        p.content_type = Some("application/trickle-ice-sdpfrag");
        p.if_match = Some(&etag);
        match s.handle(now, ConnId(9), &p) {
            Action::Candidates { conn: c, candidates } => {
                assert_eq!(c, conn);
                assert_eq!(candidates, ["candidate:1 1 udp 2130706431 10.0.0.1 5000 typ host"]);
            }
            other => panic!("{other:?}"),
        }
        p.if_match = Some("\"other\"");
        assert_eq!(status(&s.handle(now, ConnId(9), &p)), 412);
        p.if_match = None;
        let restart = frag.replace("abcd", "efgh");
        p.body = restart.as_bytes();
        assert_eq!(status(&s.handle(now, ConnId(9), &p)), 422);
        // The wrong direction or room is another session: 404. DELETE ends it.
        assert_eq!(status(&s.handle(now, ConnId(9), &req("DELETE", &location.replace("/whip/", "/whep/"), auth, ""))), 404);
        assert_eq!(status(&s.handle(now, ConnId(9), &req("DELETE", &location, auth, ""))), 3);
        assert!(s.end(conn).is_some());
        assert_eq!(status(&s.handle(now, ConnId(9), &req("DELETE", &location, auth, ""))), 404);
        // CORS preflight needs no token.
        match s.handle(now, ConnId(9), &req("OPTIONS", "/whep/room", None, "")) {
            Action::Respond(r) => {
                assert_eq!(r.status, 204);
                assert!(r.headers.iter().any(|(k, v)| *k == "Access-Control-Allow-Headers" && v.contains("Authorization")));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn whep_takes_a_pinned_peer() {
        let mut s = sessions();
        let offer = OFFER.replace("a=sendonly", "a=recvonly");
        let mut r = req("POST", "/whep/room", Some("Bearer static-one"), &offer);
        r.query = "peer=abc";
        let Action::Join { role, .. } = s.handle(crate::time::test_start(), ConnId(1), &r) else { panic!() };
        assert_eq!(role, MediaRole::Viewer { peer: Some("abc".into()) });
        assert_eq!(s.stats().whep_sessions, 1);
    }
}
