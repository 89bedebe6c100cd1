//! Signaling input: arbitrary text from several connections, opens, closes
//! and time steps. No panic; nothing is sent to a connection that is not
//! open; every reply is JSON with a `type`; room membership never exceeds
//! capacity and counts agree.
#![no_main]

use std::collections::HashSet;
use std::time::{Duration, Instant};

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use switchboard_core::signal::{RoomEvent, SignalConfig, Signaling};
use switchboard_core::ConnId;

#[derive(Arbitrary, Debug)]
enum Op {
    Open(u8),
    Close(u8),
    Text(u8, String),
    Join(u8, u8, bool),
    Chat(u8, String),
    Message(u8, Option<u8>, String),
    Wait(u16),
}

fuzz_target!(|ops: Vec<Op>| {
    let start = Instant::now();
    let mut now = start;
    let cfg = SignalConfig { turn_urls: vec!["turn:127.0.0.1:3478".into()], turn_secret: Some("s".into()), sfu_enabled: true, ..SignalConfig::default() };
    let mut s = Signaling::new(cfg, start, 1_800_000_000, &[3; 32]);
    let mut open = HashSet::new();
    let mut ids: Vec<String> = Vec::new();
    for op in ops.into_iter().take(300) {
        let conn = |c: u8| ConnId(u64::from(c % 8));
        match op {
            Op::Open(c) => {
                if open.insert(conn(c)) {
                    s.handle_open(now, conn(c));
                }
            }
            Op::Close(c) => {
                open.remove(&conn(c));
                s.handle_close(now, conn(c));
            }
            Op::Text(c, t) => s.handle_text(now, conn(c), &t),
            Op::Join(c, r, sfu) => {
                let mode = if sfu { "sfu" } else { "p2p" };
                s.handle_text(now, conn(c), &format!(r#"{{"type":"join","room":"r{}","mode":"{mode}"}}"#, r % 3));
            }
            Op::Chat(c, t) => s.handle_text(now, conn(c), &serde_json_string("chat", "text", &t)),
            Op::Message(c, to, t) => {
                let to = to.and_then(|i| ids.get(usize::from(i) % ids.len().max(1)).cloned()).unwrap_or_default();
                s.handle_text(now, conn(c), &format!(r#"{{"type":"message","to":"{to}","data":{}}}"#, serde_json_string("x", "y", &t)));
            }
            Op::Wait(ms) => now += Duration::from_millis(u64::from(ms)),
        }
        while let Some(ev) = s.poll_room_event() {
            // Only connections in sfu rooms reach the media server, and a layer choice names a peer of the room.
            match ev {
                RoomEvent::Layer { conn, publisher, .. } => assert!(open.contains(&conn) && open.contains(&publisher)),
                RoomEvent::MaxBitrate { conn, .. } => assert!(open.contains(&conn)),
                RoomEvent::Join { conn, .. } | RoomEvent::Offer { conn, .. } | RoomEvent::Answer { conn, .. } | RoomEvent::Candidate { conn, .. } => {
                    assert!(open.contains(&conn))
                }
                _ => {}
            }
        }
        while let Some(m) = s.poll_output() {
            assert!(open.contains(&m.conn), "sent to a connection that is not open");
            let v: serde_json::Value = serde_json::from_str(&m.text).expect("replies are JSON");
            assert!(v["type"].is_string());
            if v["type"] == "joined" {
                ids.push(v["id"].as_str().unwrap().to_string());
            }
        }
        let st = s.stats();
        assert!(st.peers <= st.connections);
        assert!(st.peers <= st.rooms * 16, "a room holds at most its capacity");
        assert_eq!(st.connections as usize, open.len());
    }
});

/// `{"type": typ, key: text}` with `text` escaped.
fn serde_json_string(typ: &str, key: &str, text: &str) -> String {
    serde_json::json!({ "type": typ, key: text }).to_string()
}
