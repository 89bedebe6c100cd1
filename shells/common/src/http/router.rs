//! The HTTP routes: which response a request gets. The web client's files,
//! `/healthz`, `/stats` (the engine's counters as JSON) and the `/ws` upgrade
//! to signaling. Reads the engine through [`StatsView`] and changes nothing.

use std::borrow::Cow;

use switchboard_core::sfu::RoomStats;
use switchboard_core::{Stats, Switchboard};

use super::Request;

/// The web client, embedded at build time.
pub mod assets {
    /// `shells/web/index.html`.
    pub const INDEX_HTML: &str = include_str!("../../../web/index.html");
    /// `shells/web/app.js`.
    pub const APP_JS: &str = include_str!("../../../web/app.js");
    /// `shells/web/style.css`.
    pub const STYLE_CSS: &str = include_str!("../../../web/style.css");
}

/// A read-only view of what `/stats` reports: one engine's counters (or,
/// with several engines, their sum).
pub trait StatsView {
    /// The counters.
    fn stats(&self) -> Stats;
    /// Per SFU room counters.
    fn sfu_rooms(&self) -> Vec<RoomStats>;
}

impl StatsView for Switchboard {
    fn stats(&self) -> Stats {
        Switchboard::stats(self)
    }
    fn sfu_rooms(&self) -> Vec<RoomStats> {
        Switchboard::sfu_rooms(self)
    }
}

/// A response to write with [`HttpConn::respond`](super::HttpConn::respond).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// Status line, e.g. `200 OK`.
    pub status: &'static str,
    /// `Content-Type`.
    pub content_type: &'static str,
    /// The body.
    pub body: Cow<'static, [u8]>,
    /// Whether to close the connection after it.
    pub close: bool,
}

/// What to do with a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// Upgrade to a WebSocket with this `Sec-WebSocket-Key`, for signaling.
    Signaling(String),
    /// Answer it.
    Respond(Response),
}

fn response(status: &'static str, content_type: &'static str, body: impl Into<Cow<'static, [u8]>>, close: bool) -> Response {
    Response { status, content_type, body: body.into(), close }
}

/// The answer to a malformed request (then the connection closes).
pub fn bad_request() -> Response {
    response("400 Bad Request", "text/plain", &b"bad request\n"[..], true)
}

/// Routes a request.
pub fn route(req: Request, stats: &impl StatsView) -> Reply {
    if req.method != "GET" {
        return Reply::Respond(response("405 Method Not Allowed", "text/plain", &b"method not allowed\n"[..], true));
    }
    if let ("/ws", Some(key)) = (req.path.as_str(), req.websocket_key) {
        return Reply::Signaling(key);
    }
    let ok = |typ, body: &'static str| response("200 OK", typ, body.as_bytes(), false);
    Reply::Respond(match req.path.as_str() {
        "/" | "/index.html" => ok("text/html; charset=utf-8", assets::INDEX_HTML),
        "/app.js" => ok("text/javascript; charset=utf-8", assets::APP_JS),
        "/style.css" => ok("text/css; charset=utf-8", assets::STYLE_CSS),
        "/healthz" => ok("text/plain", "ok\n"),
        "/favicon.ico" => response("204 No Content", "image/x-icon", &b""[..], false),
        "/stats" => response("200 OK", "application/json", stats_json(stats).into_bytes(), false),
        _ => response("404 Not Found", "text/plain", &b"not found\n"[..], false),
    })
}

/// `/stats`: the counters as JSON, with the headline figures first.
pub fn stats_json(view: &impl StatsView) -> String {
    let s = view.stats();
    let v = serde_json::json!({
        "rooms": s.signal.rooms,
        "peers": s.signal.peers,
        "allocations": s.turn.allocations,
        "relayed_packets": s.turn.to_peer_packets + s.turn.to_client_packets,
        "relayed_bytes": s.turn.to_peer_bytes + s.turn.to_client_bytes,
        "turn": s.turn,
        "signal": s.signal,
        "streams": s.streams,
        "sfu": s.sfu,
        "sfu_rooms": view.sfu_rooms(),
    });
    v.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Counters;
    impl StatsView for Counters {
        fn stats(&self) -> Stats {
            let mut s = Stats::default();
            s.turn.allocations = 3;
            s
        }
        fn sfu_rooms(&self) -> Vec<RoomStats> {
            Vec::new()
        }
    }

    fn get(path: &str, key: Option<&str>) -> Reply {
        route(Request { method: "GET".into(), path: path.into(), websocket_key: key.map(str::to_owned) }, &Counters)
    }

    fn status(r: Reply) -> &'static str {
        match r {
            Reply::Respond(r) => r.status,
            Reply::Signaling(_) => "101",
        }
    }

    #[test]
    fn routes() {
        assert_eq!(get("/ws", Some("k")), Reply::Signaling("k".into()));
        assert_eq!(status(get("/ws", None)), "404 Not Found");
        assert_eq!(status(get("/", None)), "200 OK");
        assert_eq!(status(get("/favicon.ico", None)), "204 No Content");
        let Reply::Respond(stats) = get("/stats", None) else { panic!() };
        let v: serde_json::Value = serde_json::from_slice(&stats.body).unwrap();
        assert_eq!(v["allocations"], 3);
        let post = route(Request { method: "POST".into(), path: "/".into(), websocket_key: None }, &Counters);
        assert!(matches!(post, Reply::Respond(Response { close: true, status: "405 Method Not Allowed", .. })));
    }
}
