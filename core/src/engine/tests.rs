//! The engine's stream (TURN over TCP) path: input is decided in
//! `handle_input`, and `poll_output` only hands it out.

use std::time::Instant;

use super::*;
use crate::stun::view::{attr, method, StunView};
use crate::turn::tests::{channel_data, config, creds, error_code, peer, raw_attr, request, sign, Creds};
use stun_codec::rfc5766::attributes::{RequestedTransport, XorPeerAddress};

const CONN: ConnId = ConnId(7);

/// ChannelData as framed on a stream: padded to four bytes (RFC 8656 §12.5).
fn framed(number: u16, data: &[u8]) -> Vec<u8> {
    let mut b = channel_data(number, data);
    b.resize(b.len().next_multiple_of(4), 0);
    b
}

fn drain(sb: &mut Switchboard) -> Vec<String> {
    let mut out = Vec::new();
    loop {
        match sb.poll_output() {
            Output::Timeout(_) => return out,
            o => out.push(format!("{o:?}")),
        }
    }
}

/// Sends one request on the stream and returns the response.
fn exchange(sb: &mut Switchboard, now: Instant, req: &[u8]) -> Vec<u8> {
    assert_eq!(sb.handle_input(now, Input::StreamData { conn: CONN, data: req }), Forward::None);
    match sb.poll_output() {
        Output::Transmit(t) => t.payload,
        o => panic!("expected a response, got {o:?}"),
    }
}

fn nonce(sb: &mut Switchboard, now: Instant, tid: u8) -> String {
    let r = exchange(sb, now, &request(method::REFRESH, [tid; 12], vec![], None));
    assert_eq!(error_code(&r), Some(401));
    String::from_utf8(StunView::new_checked(&r).unwrap().find(attr::NONCE).unwrap().to_vec()).unwrap()
}

/// An engine with a TCP client holding an allocation and channel 0x4000 to `peer()`.
fn engine_with_channel(now: Instant, alice: &Creds) -> (Switchboard, SocketAddr) {
    let mut sb = Switchboard::new(Config { turn: config(), ..Config::default() }, now, 1_700_000_000, &[3; 32]);
    let local = "10.0.0.1:3478".parse().unwrap();
    let _ = sb.handle_input(now, Input::StreamOpened { conn: CONN, local, remote: "203.0.113.9:1000".parse().unwrap() });
    let n = nonce(&mut sb, now, 1);
    let req = request(method::ALLOCATE, [2; 12], vec![RequestedTransport::new(17).into()], Some((alice, &n)));
    let _ = sb.handle_input(now, Input::StreamData { conn: CONN, data: &req });
    let Output::BindRelay { allocation, .. } = sb.poll_output() else { panic!("no BindRelay") };
    let relay: SocketAddr = "10.0.0.1:50000".parse().unwrap();
    let _ = sb.handle_input(now, Input::RelayBound { allocation, bound: Some(relay), reserved: None });
    assert_eq!(drain(&mut sb).len(), 1, "the Allocate response");
    let n = nonce(&mut sb, now, 3);
    let mut req = request(method::CHANNEL_BIND, [4; 12], vec![XorPeerAddress::new(peer()).into()], None);
    raw_attr(&mut req, attr::CHANNEL_NUMBER, &[0x40, 0, 0, 0]);
    let r = exchange(&mut sb, now, &sign(req, alice, &n));
    assert_eq!(error_code(&r), None);
    (sb, relay)
}

#[test]
fn stream_frames_are_decided_on_input_and_handed_out_in_order() {
    let now = crate::time::test_start();
    let alice = creds("alice", "alicepw");
    let (mut sb, relay) = engine_with_channel(now, &alice);
    // Two frames, then bytes that cannot be framed: both frames still reach the
    // peer, before the relay is released and the stream closed.
    let mut bytes = framed(0x4000, b"one");
    bytes.extend(framed(0x4000, b"second"));
    bytes.push(0xFF);
    let _ = sb.handle_input(now, Input::StreamData { conn: CONN, data: &bytes });
    let stats = sb.stats();
    assert_eq!((stats.turn.to_peer_packets, stats.streams_desynchronized), (2, 1), "decided in handle_input");
    for payload in [&b"one"[..], b"second"] {
        match sb.poll_output() {
            Output::ToPeer { relay: r, peer: p, payload: got } => assert_eq!((r, p, got), (relay, peer(), payload)),
            o => panic!("expected ToPeer, got {o:?}"),
        }
    }
    assert!(matches!(sb.poll_output(), Output::ReleaseRelay { relay: r, .. } if r == relay));
    assert!(matches!(sb.poll_output(), Output::CloseStream(CONN)));
    assert!(matches!(sb.poll_output(), Output::Timeout(_)));
    assert_eq!(sb.stats().streams, 0);
}

#[test]
fn a_frame_split_across_reads_is_relayed_once_complete() {
    let now = crate::time::test_start();
    let alice = creds("alice", "alicepw");
    let (mut sb, relay) = engine_with_channel(now, &alice);
    let cd = framed(0x4000, b"split payload");
    for (i, chunk) in cd.chunks(5).enumerate() {
        let _ = sb.handle_input(now, Input::StreamData { conn: CONN, data: chunk });
        match sb.poll_output() {
            Output::ToPeer { relay: r, payload, .. } => {
                assert_eq!(i, cd.len().div_ceil(5) - 1, "only when the frame is complete");
                assert_eq!((r, payload), (relay, &b"split payload"[..]));
            }
            Output::Timeout(_) => {}
            o => panic!("unexpected {o:?}"),
        }
    }
}

#[cfg(feature = "sfu")]
#[test]
fn the_sfu_paused_message_on_the_wire() {
    let msg = SfuMessage::Paused { peer: "p7".into(), paused: true };
    let v = serde_json::to_value(to_wire(&msg)).unwrap();
    assert_eq!(v, serde_json::json!({"type": "paused", "peer": "p7", "paused": true}));
    let msg = SfuMessage::Paused { peer: "p7".into(), paused: false };
    assert_eq!(serde_json::to_value(to_wire(&msg)).unwrap()["paused"], false);
}

/// Worker `w` of two, with an SFU.
#[cfg(feature = "sfu")]
fn worker(w: usize, now: Instant) -> Switchboard {
    let config = Config {
        sfu: Some(SfuConfig::new(SocketAddr::from(([127, 0, 0, 1], 7882 + w as u16)))),
        placement: Placement { worker: WorkerId(w), workers: 2 },
        ..Config::default()
    };
    Switchboard::new(config, now, 1_700_000_000, &[w as u8; 32])
}

/// Drains an engine, handing room events and SFU messages to the other as
/// a shell's channels would; returns the signaling text sent per connection.
#[cfg(feature = "sfu")]
fn deliver(from: &mut Switchboard, to: &mut Switchboard, now: Instant) -> Vec<(ConnId, String)> {
    let mut mail = Vec::new();
    let mut texts = Vec::new();
    loop {
        match from.poll_output() {
            Output::Timeout(_) => break,
            Output::ToWorker { worker, event } => {
                assert_eq!(worker, to.placement().worker);
                mail.push(Input::RoomEvent(event));
            }
            Output::ToSignaling { conn, msg } => mail.push(Input::SfuMessage { conn, msg }),
            Output::SignalSend(m) => texts.push((m.conn, m.text.to_string())),
            _ => {}
        }
    }
    for input in mail {
        assert_eq!(to.handle_input(now, input), Forward::None);
    }
    texts
}

#[cfg(feature = "sfu")]
#[test]
fn sfu_rooms_are_placed_on_workers_and_answer_through_signaling_on_worker_0() {
    let now = crate::time::test_start();
    let (mut w0, mut w1) = (worker(0, now), worker(1, now));
    let (a, b, c) = (ConnId(1), ConnId(2), ConnId(3));
    for conn in 1..=4 {
        let _ = w0.handle_input(now, Input::SignalOpened { conn: ConnId(conn) });
    }
    let say = |sb: &mut Switchboard, conn, text: &str| {
        let _ = sb.handle_input(now, Input::SignalText { conn, text });
    };
    // The first room goes to the idle worker 0, the second to worker 1; a room's second participant follows it.
    say(&mut w0, a, r#"{"type":"join","room":"one","mode":"sfu"}"#);
    say(&mut w0, b, r#"{"type":"join","room":"two","mode":"sfu"}"#);
    say(&mut w0, c, r#"{"type":"join","room":"two","mode":"sfu"}"#);
    let joined = deliver(&mut w0, &mut w1, now);
    assert_eq!(joined.iter().filter(|(_, t)| t.contains(r#""type":"joined""#)).count(), 3, "{joined:?}");
    assert_eq!(w0.sfu().unwrap().stats().participants, 1, "room one on worker 0");
    assert_eq!(w1.sfu().unwrap().stats().participants, 2, "room two, both participants, on worker 1");
    // An offer the SFU refuses: answered by the worker hosting the room, sent by signaling on worker 0.
    say(&mut w0, c, r#"{"type":"offer","sdp":"not sdp"}"#);
    let passed = deliver(&mut w0, &mut w1, now);
    assert!(passed.is_empty(), "worker 0 only passed it on: {passed:?}");
    assert!(deliver(&mut w1, &mut w0, now).is_empty(), "worker 1 does not signal itself");
    let sent = deliver(&mut w0, &mut w1, now);
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0].0, c);
    assert!(sent[0].1.contains(r#""type":"error""#), "{sent:?}");
    // Leaving (here by disconnecting) reaches the room's worker; the emptied room is forgotten, so
    // the next room goes to the worker with fewer participants (worker 1 now has none).
    let _ = w0.handle_input(now, Input::SignalClosed { conn: b });
    let _ = w0.handle_input(now, Input::SignalClosed { conn: c });
    deliver(&mut w0, &mut w1, now);
    assert_eq!(w1.sfu().unwrap().stats().participants, 0);
    say(&mut w0, ConnId(4), r#"{"type":"join","room":"three","mode":"sfu"}"#);
    deliver(&mut w0, &mut w1, now);
    assert_eq!(w1.sfu().unwrap().stats().participants, 1, "room three placed on the emptied worker 1");
}
