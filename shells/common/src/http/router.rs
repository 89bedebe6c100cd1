//! The HTTP routes: which response a request gets. The web client's files,
//! `/healthz`, `/stats` (the engine's counters as JSON) and the `/ws` upgrade
//! to signaling. Reads the engine through [`StatsView`] and changes nothing.

use std::borrow::Cow;

use serde_json::Value;
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
    /// `shells/web/dashboard.html`.
    pub const DASHBOARD_HTML: &str = include_str!("../../../web/dashboard.html");
    /// `shells/web/dashboard.js`.
    pub const DASHBOARD_JS: &str = include_str!("../../../web/dashboard.js");
}

/// A read-only view of what `/stats` reports: each worker's counters, as
/// [`snapshot`] makes them.
pub trait StatsView {
    /// One snapshot per worker, worker 0 first (`Null` for a worker that has
    /// not published yet).
    fn snapshots(&self) -> Vec<Value>;
}

impl StatsView for Switchboard {
    fn snapshots(&self) -> Vec<Value> {
        vec![snapshot(self)]
    }
}

/// One engine's counters as the `/stats` JSON, headline figures first.
pub fn snapshot(engine: &Switchboard) -> Value {
    let s: Stats = engine.stats();
    serde_json::json!({
        "rooms": s.signal.rooms,
        "peers": s.signal.peers,
        "allocations": s.turn.allocations,
        "relayed_packets": s.turn.to_peer_packets + s.turn.to_client_packets,
        "relayed_bytes": s.turn.to_peer_bytes + s.turn.to_client_bytes,
        "turn": s.turn,
        "signal": s.signal,
        "streams": s.streams,
        "stream_handoffs": s.stream_handoffs,
        "sfu": s.sfu,
        "sfu_rooms": engine.sfu_rooms(),
        "whip": s.whip,
    })
}

/// Adds `b` into `a`: numbers are summed, objects key by key, lists joined.
fn add(a: &mut Value, b: &Value) {
    match (a, b) {
        (a @ Value::Null, b) => *a = b.clone(),
        (Value::Number(x), Value::Number(y)) => {
            let sum = match (x.as_u64(), y.as_u64()) {
                (Some(x), Some(y)) => serde_json::Number::from(x.saturating_add(y)),
                _ => serde_json::Number::from_f64(x.as_f64().unwrap_or(0.0) + y.as_f64().unwrap_or(0.0))
                    .unwrap_or_else(|| serde_json::Number::from(0)),
            };
            *x = sum;
        }
        (Value::Object(x), Value::Object(y)) => {
            for (k, v) in y {
                add(x.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        (Value::Array(x), Value::Array(y)) => x.extend(y.iter().cloned()),
        _ => {}
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
    /// A WHIP or WHEP request: the engine answers it (`Input::Http`).
    Engine(Request),
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
    if switchboard_core::whip::is_engine_request(&req.method, &req.path) {
        return Reply::Engine(req);
    }
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
        "/dashboard" | "/dashboard.html" => ok("text/html; charset=utf-8", assets::DASHBOARD_HTML),
        "/dashboard.js" => ok("text/javascript; charset=utf-8", assets::DASHBOARD_JS),
        "/healthz" => ok("text/plain", "ok\n"),
        "/favicon.ico" => response("204 No Content", "image/x-icon", &b""[..], false),
        "/stats" => response("200 OK", "application/json", stats_json(stats).into_bytes(), false),
        "/metrics" => response(
            "200 OK",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            super::metrics::render(&summed(stats)).into_bytes(),
            false,
        ),
        _ => response("404 Not Found", "text/plain", &b"not found\n"[..], false),
    })
}

/// `/stats`: the counters as JSON, summed over the workers, headline
/// figures first, then `workers`: what each worker holds now.
pub fn stats_json(view: &impl StatsView) -> String {
    summed(view).to_string()
}

/// Every worker's counters summed, with `workers`: what each holds now.
pub fn summed(view: &impl StatsView) -> Value {
    let workers = view.snapshots();
    let mut total = Value::Null;
    for w in &workers {
        add(&mut total, w);
    }
    let each: Vec<Value> = workers
        .iter()
        .enumerate()
        .map(|(i, w)| {
            serde_json::json!({
                "worker": i,
                "allocations": w["allocations"],
                "turn_requests": w["turn"]["requests"],
                "binding_requests": w["turn"]["stun"]["binding_requests"],
                "relayed_packets": w["relayed_packets"],
                "sfu_rooms": w["sfu_rooms"].as_array().map_or(0, Vec::len),
                "sfu_participants": w["sfu"]["participants"],
                "forwarded_packets": w["sfu"]["forwarded_packets"],
            })
        })
        .collect();
    if let Value::Object(m) = &mut total {
        m.insert("workers".into(), Value::Array(each));
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two workers: one with 3 allocations, one with 2 and an SFU room.
    struct Counters;
    impl StatsView for Counters {
        fn snapshots(&self) -> Vec<Value> {
            let one = serde_json::json!({"allocations": 3, "turn": {"allocations": 3, "stun": {"binding_requests": 7}}, "sfu_rooms": []});
            let two = serde_json::json!({"allocations": 2, "turn": {"allocations": 2, "stun": {"binding_requests": 1}},
                "sfu": {"participants": 4}, "sfu_rooms": [{"room": "r", "loss": 0.5}]});
            vec![one, two]
        }
    }

    fn get(path: &str, key: Option<&str>) -> Reply {
        route(Request { method: "GET".into(), path: path.into(), websocket_key: key.map(str::to_owned), ..Default::default() }, &Counters)
    }

    fn status(r: Reply) -> &'static str {
        match r {
            Reply::Respond(r) => r.status,
            Reply::Signaling(_) => "101",
            Reply::Engine(_) => "engine",
        }
    }

    #[test]
    fn routes() {
        assert_eq!(get("/ws", Some("k")), Reply::Signaling("k".into()));
        assert_eq!(status(get("/ws", None)), "404 Not Found");
        assert_eq!(status(get("/", None)), "200 OK");
        assert_eq!(status(get("/favicon.ico", None)), "204 No Content");
        assert_eq!(status(get("/dashboard", None)), "200 OK");
        assert_eq!(status(get("/dashboard.js", None)), "200 OK");
        let Reply::Respond(stats) = get("/stats", None) else { panic!() };
        let v: serde_json::Value = serde_json::from_slice(&stats.body).unwrap();
        assert_eq!(v["allocations"], 5, "summed over the workers");
        assert_eq!(v["turn"]["stun"]["binding_requests"], 8, "nested counters too");
        assert_eq!(v["sfu_rooms"][0]["loss"], 0.5, "lists are joined, not summed");
        assert_eq!(v["workers"][0]["allocations"], 3);
        assert_eq!(v["workers"][1]["sfu_rooms"], 1);
        assert_eq!(v["workers"][1]["sfu_participants"], 4);
        let one = stats_json(&Switchboard::new(Default::default(), std::time::Instant::now(), 0, &[0; 32]));
        let one: serde_json::Value = serde_json::from_str(&one).unwrap();
        assert_eq!((one["allocations"].as_u64(), one["workers"].as_array().map(Vec::len)), (Some(0), Some(1)));
        let post = route(Request { method: "POST".into(), path: "/".into(), ..Default::default() }, &Counters);
        assert_eq!(status(route(Request { method: "POST".into(), path: "/whip/room".into(), ..Default::default() }, &Counters)), "engine");
        assert_eq!(status(get("/whep/room/abc", None)), "engine");
        assert!(matches!(post, Reply::Respond(Response { close: true, status: "405 Method Not Allowed", .. })));
    }
}
