//! Signaling and HTTP against each real binary, with a WebSocket client
//! (tungstenite) and raw TCP: bad input gets an `error` and the room goes
//! on; oversized messages; floods; stalled clients do not stall the server;
//! /healthz, /stats and the web client's files.

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use switchboard_tests::{Server, SERVERS};
use tungstenite::{Message, WebSocket};

type Ws = WebSocket<TcpStream>;

fn connect(s: &Server) -> Ws {
    let tcp = TcpStream::connect(("127.0.0.1", s.http_port)).expect("connect");
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let (ws, _) = tungstenite::client(format!("ws://127.0.0.1:{}/ws", s.http_port), tcp).expect("websocket handshake");
    ws
}

fn send(ws: &mut Ws, v: Value) {
    ws.send(Message::text(v.to_string())).expect("send");
}

/// The next JSON message (within the read timeout).
fn recv(ws: &mut Ws) -> Value {
    loop {
        match ws.read().expect("read") {
            Message::Text(t) => return serde_json::from_str(t.as_str()).expect("server sends JSON"),
            Message::Close(_) => panic!("closed"),
            _ => {}
        }
    }
}

fn join(ws: &mut Ws, room: &str, name: &str) -> String {
    send(ws, json!({"type": "join", "room": room, "name": name}));
    let m = recv(ws);
    assert_eq!(m["type"], "joined", "{m}");
    m["id"].as_str().unwrap().to_string()
}

#[test]
fn bad_input_gets_errors_and_the_room_goes_on() {
    for bin in SERVERS {
        let s = Server::start(bin, &[]);
        let mut a = connect(&s);
        let mut b = connect(&s);
        // Anything before join.
        send(&mut a, json!({"type": "chat", "text": "too early"}));
        assert_eq!(recv(&mut a)["code"], "not-joined", "{bin}");
        let a_id = join(&mut a, "r", "Ada");
        let b_id = join(&mut b, "r", "Bob");
        assert_eq!(recv(&mut a)["type"], "otherjoin");
        let bad: Vec<(Message, &str)> = vec![
            (Message::text("not json"), "bad-json"),
            (Message::text(r#"{"type":"dance"}"#), "unknown-type"),
            (Message::text(r#"{"type":"chat"}"#), "bad-message"),
            (Message::text(r#"{"type":"message","to":"nobody","data":1}"#), "no-such-peer"),
            (Message::text(json!({"type": "message", "data": "x".repeat(100 * 1024)}).to_string()), "too-large"),
            (Message::binary(vec![0xff, 0xfe, 0x00]), "bad-json"),
        ];
        for (m, code) in bad {
            a.send(m).unwrap();
            let e = recv(&mut a);
            assert_eq!((e["type"].as_str(), e["code"].as_str()), (Some("error"), Some(code)), "{bin}: {e}");
        }
        // The room goes on both ways, and nothing the other sent was lost.
        send(&mut b, json!({"type": "chat", "text": "still here"}));
        assert_eq!(recv(&mut a), json!({"type": "chat", "from": b_id, "name": "Bob", "text": "still here"}));
        send(&mut a, json!({"type": "message", "data": {"sdp": "v=0"}}));
        assert_eq!(recv(&mut b), json!({"type": "message", "from": a_id, "data": {"sdp": "v=0"}}));
        // Beyond the WebSocket limit (1 MiB) the connection is closed; that is a leave.
        let _ = a.send(Message::text("x".repeat(2 << 20)));
        assert_eq!(recv(&mut b), json!({"type": "bye", "room": "r", "id": a_id}), "{bin}");
    }
}

#[test]
fn floods_are_limited_per_connection() {
    for bin in SERVERS {
        let s = Server::start(bin, &[]);
        let mut c = connect(&s);
        let mut d = connect(&s);
        join(&mut c, "flood", "C");
        join(&mut d, "flood", "D");
        recv(&mut c); // otherjoin
        for i in 0..400 {
            send(&mut c, json!({"type": "chat", "text": format!("spam {i}")}));
        }
        // c hears exactly one rate-limited error.
        let e = recv(&mut c);
        assert_eq!(e["code"], "rate-limited", "{bin}: {e}");
        // d got a prefix of the flood, in order, then nothing more of it.
        let mut got = 0;
        d.get_mut().set_read_timeout(Some(Duration::from_millis(500))).unwrap();
        while let Ok(Message::Text(t)) = d.read() {
            let m: Value = serde_json::from_str(t.as_str()).unwrap();
            assert_eq!(m["text"], format!("spam {got}"), "{bin}");
            got += 1;
        }
        assert!((50..400).contains(&got), "{bin}: {got} of 400 flood messages passed");
        // After a pause, c is heard again.
        std::thread::sleep(Duration::from_secs(1));
        d.get_mut().set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        send(&mut c, json!({"type": "chat", "text": "calm now"}));
        assert_eq!(recv(&mut d)["text"], "calm now", "{bin}");
    }
}

#[test]
fn stalled_clients_do_not_stall_the_server() {
    for bin in SERVERS {
        let s = Server::start(bin, &[]);
        // Clients that send half a request and wait.
        let mut half: Vec<TcpStream> = (0..20)
            .map(|_| {
                let mut t = TcpStream::connect(("127.0.0.1", s.http_port)).unwrap();
                t.write_all(b"GET /index.html HT").unwrap();
                t
            })
            .collect();
        // A peer that never reads, while its room-mate sends it megabytes.
        let mut deaf = connect(&s);
        let mut loud = connect(&s);
        join(&mut deaf, "stall", "deaf");
        join(&mut loud, "stall", "loud");
        let blob = "y".repeat(60 * 1024);
        for _ in 0..100 {
            send(&mut loud, json!({"type": "message", "data": blob}));
        }
        // Everyone else is served at once.
        let t0 = Instant::now();
        let (status, body) = s.get("/healthz");
        assert_eq!((status, body.as_str()), (200, "ok\n"), "{bin}");
        let mut x = connect(&s);
        let mut y = connect(&s);
        join(&mut x, "other", "x");
        join(&mut y, "other", "y");
        send(&mut y, json!({"type": "chat", "text": "prompt"}));
        assert_eq!(recv(&mut x)["type"], "otherjoin");
        assert_eq!(recv(&mut x)["text"], "prompt");
        assert!(t0.elapsed() < Duration::from_secs(3), "{bin}: others waited {:?}", t0.elapsed());
        half.clear();
        drop(deaf);
    }
}

#[test]
fn healthz_stats_and_the_web_client() {
    for bin in SERVERS {
        let s = Server::start(bin, &[]);
        assert_eq!(s.get("/healthz"), (200, "ok\n".into()), "{bin}");
        let mut a = connect(&s);
        join(&mut a, "stats-room", "A");
        let (status, body) = s.get("/stats");
        assert_eq!(status, 200);
        let v: Value = serde_json::from_str(&body).expect("/stats is JSON");
        for key in ["rooms", "peers", "allocations", "relayed_packets", "relayed_bytes"] {
            assert!(v[key].is_u64(), "{bin}: /stats lacks {key}: {v}");
        }
        assert_eq!((v["rooms"].as_u64(), v["peers"].as_u64()), (Some(1), Some(1)), "{bin}: {v}");
        let (status, page) = s.get("/");
        assert_eq!(status, 200);
        assert!(page.contains("<title>Switchboard</title>") && page.contains("/app.js"), "{bin}");
        let (status, js) = s.get("/app.js");
        assert_eq!(status, 200);
        assert!(js.contains("RTCPeerConnection"), "{bin}");
        assert_eq!(s.get("/style.css").0, 200);
        assert_eq!(s.get("/nope").0, 404);
    }
}

#[test]
fn a_client_that_does_not_read_is_disconnected_not_silently_skipped() {
    for bin in SERVERS {
        let s = Server::start(bin, &[]);
        let mut deaf = connect(&s);
        let mut loud = connect(&s);
        let deaf_id = join(&mut deaf, "slow", "deaf");
        join(&mut loud, "slow", "loud");
        loud.get_mut().set_read_timeout(Some(Duration::from_millis(20))).unwrap();
        let blob = "z".repeat(60 * 1024);
        let end = Instant::now() + Duration::from_secs(20);
        let mut bye = None;
        // Megabytes toward a peer that never reads: kernel buffers fill, then the server's queue (1 MiB).
        while bye.is_none() && Instant::now() < end {
            send(&mut loud, json!({"type": "message", "data": blob}));
            while let Ok(Message::Text(t)) = loud.read() {
                let m: Value = serde_json::from_str(t.as_str()).unwrap();
                if m["type"] == "bye" {
                    bye = Some(m);
                }
            }
        }
        assert_eq!(bye, Some(json!({"type": "bye", "room": "slow", "id": deaf_id})), "{bin}: the deaf client was never disconnected");
        drop(deaf);
    }
}
