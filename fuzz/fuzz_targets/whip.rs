//! WHIP and WHEP requests into a whole engine with an SFU: arbitrary methods,
//! paths, queries, tokens, content types and bodies (some a real offer made
//! by a str0m bot, some that offer cut or overwritten), PATCHes and DELETEs
//! on the sessions made, recording requests, media datagrams and time steps.
//! No panic; every answer is one of the statuses WHIP/WHEP define here; the
//! engine never holds more sessions than it answered 201 for.
#![no_main]

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use switchboard_core::lab::Bot;
use switchboard_core::sfu::SfuConfig;
use switchboard_core::whip::{HttpRequest, WhipConfig};
use switchboard_core::{Config, ConnId, Input, Output, Switchboard};

/// A real offer (a str0m bot's: sendonly audio and video), and a receive-only one.
fn offers() -> &'static (String, String) {
    static OFFERS: OnceLock<(String, String)> = OnceLock::new();
    OFFERS.get_or_init(|| {
        let offer = |bot: Bot| {
            let mut bot = bot;
            bot.handle_signal(Instant::now(), r#"{"type":"joined","room":"r","id":"-","mode":"sfu","peers":[],"iceServers":[]}"#);
            while let Some(text) = bot.poll_signal() {
                let v: serde_json::Value = serde_json::from_str(&text).unwrap();
                if v["type"] == "offer" {
                    return v["sdp"].as_str().unwrap().to_owned();
                }
            }
            panic!("the bot made no offer")
        };
        let addr: SocketAddr = "10.0.1.1:5000".parse().unwrap();
        (offer(Bot::new(Instant::now(), addr, "r", *b"fuzz-pub")), offer(Bot::new(Instant::now(), addr, "r", *b"fuzz-sub").viewer()))
    })
}

#[derive(Arbitrary, Debug)]
enum Body {
    Offer,
    ViewerOffer,
    Cut(u16),
    Overwrite { at: u16, bytes: Vec<u8> },
    Raw(Vec<u8>),
}

#[derive(Arbitrary, Debug)]
enum Op {
    Post { whep: bool, room: u8, query: String, auth: u8, ctype: u8, body: Body },
    Patch { session: u8, auth: u8, ctype: u8, if_match: Option<String>, body: String },
    Delete { session: u8, auth: u8 },
    Raw { method: u8, path: String, query: String, auth: u8, body: Vec<u8> },
    Record { room: u8, query: String, auth: u8 },
    Datagram { from: u8, body: Vec<u8> },
    Wait(u16),
}

const METHODS: [&str; 7] = ["GET", "POST", "PATCH", "DELETE", "OPTIONS", "PUT", "HEAD"];
const CTYPES: [&str; 4] = ["application/sdp", "application/trickle-ice-sdpfrag", "text/plain", "application/SDP; charset=utf-8"];
const STATUSES: [u16; 14] = [200, 201, 202, 204, 400, 401, 404, 405, 409, 412, 413, 415, 422, 503];

fn auth(a: u8) -> Option<&'static str> {
    match a % 3 {
        0 => Some("Bearer tok"),
        1 => Some("Bearer nope"),
        _ => None,
    }
}

fuzz_target!(|ops: Vec<Op>| {
    let (offer, viewer) = offers();
    let start = Instant::now();
    let mut now = start;
    let media: SocketAddr = "10.0.0.100:7882".parse().unwrap();
    let config = Config {
        sfu: Some(SfuConfig { record: true, ..SfuConfig::new(media) }),
        signal: switchboard_core::signal::SignalConfig { sfu_capacity: 4, ..Default::default() },
        whip: WhipConfig { tokens: vec!["tok".into()], secret: Some("s3cret".into()) },
        ..Config::default()
    };
    let mut sb = Switchboard::new(config, start, 1_800_000_000, &[5; 32]);
    let mut locations: Vec<String> = Vec::new();
    let mut created = 0u64;
    for op in ops.into_iter().take(48) {
        let mut owned_body: Vec<u8> = Vec::new();
        let (method, path, query, authz, ctype, if_match): (&str, String, String, Option<&str>, Option<&str>, Option<String>) = match op {
            Op::Post { whep, room, query, auth: a, ctype, body } => {
                let template = if whep { viewer } else { offer };
                owned_body = match body {
                    Body::Offer => offer.as_bytes().to_vec(),
                    Body::ViewerOffer => viewer.as_bytes().to_vec(),
                    Body::Cut(n) => template.as_bytes()[..(n as usize).min(template.len())].to_vec(),
                    Body::Overwrite { at, bytes } => {
                        let mut b = template.as_bytes().to_vec();
                        let at = (at as usize).min(b.len());
                        let end = (at + bytes.len()).min(b.len());
                        b[at..end].copy_from_slice(&bytes[..end - at]);
                        b
                    }
                    Body::Raw(b) => b,
                };
                let path = format!("/{}/room{}", if whep { "whep" } else { "whip" }, room % 3);
                (METHODS[1], path, query, auth(a), Some(CTYPES[ctype as usize % 4]), None)
            }
            Op::Patch { session, auth: a, ctype, if_match, body } => {
                owned_body = body.into_bytes();
                let path = locations.get(session as usize % locations.len().max(1)).cloned().unwrap_or_else(|| "/whip/room0/none".into());
                (METHODS[2], path, String::new(), auth(a), Some(CTYPES[ctype as usize % 4]), if_match)
            }
            Op::Delete { session, auth: a } => {
                let path = locations.get(session as usize % locations.len().max(1)).cloned().unwrap_or_else(|| "/whep/room0/none".into());
                (METHODS[3], path, String::new(), auth(a), None, None)
            }
            Op::Raw { method, path, query, auth: a, body } => {
                owned_body = body;
                (METHODS[method as usize % METHODS.len()], path, query, auth(a), None, None)
            }
            Op::Record { room, query, auth: a } => (METHODS[1], format!("/recordings/room{}", room % 3), query, auth(a), None, None),
            Op::Datagram { from, body } => {
                let remote = SocketAddr::from(([10, 0, 1, from], 5000));
                let _ = sb.handle_input(now, Input::MediaDatagram { remote, data: &body });
                (METHODS[0], String::new(), String::new(), None, None, None)
            }
            Op::Wait(ms) => {
                now += Duration::from_millis(u64::from(ms) * 10);
                let _ = sb.handle_input(now, Input::Timeout);
                (METHODS[0], String::new(), String::new(), None, None, None)
            }
        };
        if !path.is_empty() {
            let request = HttpRequest { method, path: &path, query: &query, authorization: authz, content_type: ctype, if_match: if_match.as_deref(), body: &owned_body };
            let _ = sb.handle_input(now, Input::Http { conn: ConnId(7), request });
        }
        loop {
            match sb.poll_output() {
                Output::HttpResponse { response, .. } => {
                    assert!(STATUSES.contains(&response.status), "status {}", response.status);
                    if response.status == 201 {
                        created += 1;
                        let loc = response.headers.iter().find(|(k, _)| *k == "Location").map(|(_, v)| v.clone());
                        locations.push(loc.expect("a 201 has a Location"));
                    }
                }
                Output::Timeout(_) => break,
                _ => {}
            }
        }
        let st = sb.stats().whip;
        assert!(st.whip_sessions + st.whep_sessions <= created, "{st:?} with {created} created");
    }
});
