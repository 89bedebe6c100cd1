//! The shells' HTTP side under hostile input: request heads and WebSocket
//! frames in arbitrary chunks into `HttpConn` (answered, upgraded, written to,
//! pinged as the driver does), and arbitrary sequences of opens, waits,
//! closes and clock steps into the connection `Clocks` and `ConnLimits`.
//! Nothing may panic; the limits' counts must come back to zero.

#![no_main]

use std::net::IpAddr;
use std::time::{Duration, Instant};

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use switchboard_common::http::{Event, HttpConn};
use switchboard_common::limits::{Clocks, ConnLimits, Due, Timeouts, Wait};
use switchboard_core::ConnId;

#[derive(Arbitrary, Debug)]
enum Op {
    /// Bytes from the client.
    Feed(Vec<u8>),
    /// The server writes a text message (on a WebSocket).
    Send(String),
    /// A ping for a quiet WebSocket.
    Ping,
    /// Connection limits: open from address `ip`, set a wait, close, let `ms` pass.
    Open(u8, u8),
    Set(u8, u8, u16),
    Close(u8),
    Tick(u16),
}

fuzz_target!(|ops: Vec<Op>| {
    let mut http = HttpConn::default();
    let t0 = Instant::now();
    let mut now = t0;
    let s = Duration::from_secs;
    let mut clocks = Clocks::new(Timeouts { header: s(10), idle: s(60), websocket: s(40) });
    let limits = ConnLimits::new(16, 4);
    let mut open: Vec<(ConnId, IpAddr)> = Vec::new();
    let mut due = Vec::new();
    for op in ops.into_iter().take(256) {
        match op {
            Op::Feed(bytes) => {
                let mut events = Vec::new();
                http.feed(&bytes, &mut events);
                let mut i = 0;
                while i < events.len() {
                    let mut more = Vec::new();
                    match &events[i] {
                        Event::Request(r) => match &r.websocket_key {
                            Some(key) if r.path == "/ws" => http.upgrade(key, &mut more),
                            _ => http.respond("200 OK", "text/plain", b"ok\n", r.path == "/close", &mut more),
                        },
                        Event::BadRequest => http.respond("400 Bad Request", "text/plain", b"bad\n", true, &mut more),
                        Event::Text(_) | Event::Closed => {}
                    }
                    events.extend(more);
                    i += 1;
                    if events.len() > 10_000 {
                        break;
                    }
                }
                let _ = http.take_output();
                let _ = (http.is_done(), http.head_pending(), http.is_websocket());
            }
            Op::Send(text) => http.send_text(text),
            Op::Ping => http.send_ping(),
            Op::Open(c, ip) => {
                let (conn, ip) = (ConnId(u64::from(c)), IpAddr::from([127, 0, 0, ip % 8]));
                if open.iter().all(|(k, _)| *k != conn) && limits.try_open(ip).is_ok() {
                    clocks.open(conn, ip, now);
                    open.push((conn, ip));
                }
            }
            Op::Set(c, kind, ms) => {
                let at = now.checked_sub(Duration::from_millis(u64::from(ms))).unwrap_or(now).max(t0);
                let wait = match kind % 4 {
                    0 => Wait::Head(at),
                    1 => Wait::KeepAlive(at),
                    2 => Wait::WebSocket { last: at, pinged: kind & 4 != 0 },
                    _ => Wait::Nothing,
                };
                clocks.set(ConnId(u64::from(c)), wait);
            }
            Op::Close(c) => {
                if let Some(i) = open.iter().position(|(k, _)| *k == ConnId(u64::from(c))) {
                    let (conn, ip) = open.swap_remove(i);
                    assert_eq!(clocks.remove(conn), Some(ip));
                    limits.release(ip);
                }
            }
            Op::Tick(ms) => {
                now += Duration::from_millis(u64::from(ms) * 10);
                due.clear();
                clocks.expired(now, &mut due);
                for (conn, what) in &due {
                    assert!(open.iter().any(|(k, _)| k == conn), "a closed connection came due");
                    if *what == Due::Close {
                        let i = open.iter().position(|(k, _)| k == conn).unwrap();
                        let (conn, ip) = open.swap_remove(i);
                        clocks.remove(conn);
                        limits.release(ip);
                    }
                }
            }
        }
    }
    assert_eq!(limits.open(), open.len());
    for (conn, ip) in open {
        clocks.remove(conn);
        limits.release(ip);
    }
    assert_eq!(limits.open(), 0);
    assert!(clocks.is_empty());
});
