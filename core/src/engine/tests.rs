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

/// The engine's outputs until `Timeout`, as they are (for the TCP relay tests).
fn outputs(sb: &mut Switchboard) -> Vec<String> {
    drain(sb)
}

/// An engine whose TCP client (on `CONN`) holds a TCP allocation (RFC 6062) with a permission for `peer()`'s IP.
fn engine_with_tcp_allocation(now: Instant, alice: &Creds, placement: Placement) -> (Switchboard, SocketAddr) {
    let turn = TurnConfig { nonce_key: Some([9; 32]), ..config() };
    let mut sb = Switchboard::new(Config { turn, placement, ..Config::default() }, now, 1_700_000_000, &[3; 32]);
    let local = "10.0.0.1:3478".parse().unwrap();
    let _ = sb.handle_input(now, Input::StreamOpened { conn: CONN, local, remote: "203.0.113.9:1000".parse().unwrap() });
    let n = nonce(&mut sb, now, 1);
    let req = request(method::ALLOCATE, [2; 12], vec![RequestedTransport::new(6).into()], Some((alice, &n)));
    let _ = sb.handle_input(now, Input::StreamData { conn: CONN, data: &req });
    let Output::BindTcpRelay { allocation, family: Family::V4 } = sb.poll_output() else { panic!("no BindTcpRelay") };
    let relay: SocketAddr = "10.0.0.1:50000".parse().unwrap();
    let _ = sb.handle_input(now, Input::RelayBound { allocation, bound: Some(relay), reserved: None });
    assert_eq!(drain(&mut sb).len(), 1, "the Allocate response");
    let n = nonce(&mut sb, now, 3);
    let r = exchange(&mut sb, now, &request(method::CREATE_PERMISSION, [4; 12], vec![XorPeerAddress::new(peer()).into()], Some((alice, &n))));
    assert_eq!(error_code(&r), None);
    (sb, relay)
}

fn connection_id(resp: &[u8]) -> u32 {
    let v = StunView::new_checked(resp).unwrap();
    u32::from_be_bytes(v.find(attr::CONNECTION_ID).expect("CONNECTION-ID").try_into().unwrap())
}

/// A new stream `conn` (a data connection) on `sb`: its ConnectionBind for `id`, as a client sends it (first
/// unauthenticated, then signed with the nonce of the 401). Returns the signed request.
fn signed_connection_bind(sb: &mut Switchboard, now: Instant, conn: ConnId, id: u32, alice: &Creds) -> Vec<u8> {
    let _ = sb.handle_input(now, Input::StreamOpened { conn, local: "10.0.0.1:3478".parse().unwrap(), remote: "203.0.113.9:1001".parse().unwrap() });
    let mut req = request(method::CONNECTION_BIND, [10; 12], vec![], None);
    raw_attr(&mut req, attr::CONNECTION_ID, &id.to_be_bytes());
    let _ = sb.handle_input(now, Input::StreamData { conn, data: &req });
    let Output::Transmit(t) = sb.poll_output() else { panic!("no 401 to the unauthenticated ConnectionBind") };
    assert_eq!(error_code(&t.payload), Some(401));
    assert!(matches!(sb.poll_output(), Output::Timeout(_)));
    let n = String::from_utf8(StunView::new_checked(&t.payload).unwrap().find(attr::NONCE).unwrap().to_vec()).unwrap();
    let mut req = request(method::CONNECTION_BIND, [11; 12], vec![], None);
    raw_attr(&mut req, attr::CONNECTION_ID, &id.to_be_bytes());
    sign(req, alice, &n)
}

/// ConnectionBind for `id` on a new stream `conn`; the outputs it brings.
fn connection_bind(sb: &mut Switchboard, now: Instant, conn: ConnId, id: u32, alice: &Creds) -> Vec<String> {
    let req = signed_connection_bind(sb, now, conn, id, alice);
    let _ = sb.handle_input(now, Input::StreamData { conn, data: &req });
    outputs(sb)
}

/// RFC 6062, the client connecting: Connect opens a connection from the relay to the peer (ConnectPeer), its
/// answer carries a CONNECTION-ID, a new data connection binds it, and from then the bytes of each end go to
/// the other unframed — what the peer sent before the bind first, after the ConnectionBind answer. Closing one
/// end closes the other; a second Connect to the same peer is 446.
#[test]
fn tcp_relay_connect_bind_and_bytes_both_ways() {
    let now = crate::time::test_start();
    let alice = creds("alice", "alicepw");
    let (mut sb, relay) = engine_with_tcp_allocation(now, &alice, Placement::default());
    let n = nonce(&mut sb, now, 5);
    let req = request(method::CONNECT, [6; 12], vec![XorPeerAddress::new(peer()).into()], Some((&alice, &n)));
    let _ = sb.handle_input(now, Input::StreamData { conn: CONN, data: &req });
    let Output::ConnectPeer { relay: from, peer: to, connection } = sb.poll_output() else { panic!("no ConnectPeer") };
    assert_eq!((from, to), (relay, peer()));
    assert!(matches!(sb.poll_output(), Output::Timeout(_)), "the Connect is answered when the connection opens");
    const PEER: ConnId = ConnId(100);
    const DATA: ConnId = ConnId(101);
    let _ = sb.handle_input(now, Input::PeerConnected { connection, conn: Some(PEER) });
    let Output::Transmit(t) = sb.poll_output() else { panic!("no Connect answer") };
    assert_eq!((error_code(&t.payload), connection_id(&t.payload)), (None, connection));
    assert!(StunView::new_checked(&t.payload).unwrap().check_integrity(&alice.key));
    // The peer speaks before the client binds: kept.
    let _ = sb.handle_input(now, Input::StreamData { conn: PEER, data: b"early " });
    assert_eq!(outputs(&mut sb), Vec::<String>::new());
    // A second Connect to the same peer: 446.
    let n = nonce(&mut sb, now, 7);
    let r = exchange(&mut sb, now, &request(method::CONNECT, [8; 12], vec![XorPeerAddress::new(peer()).into()], Some((&alice, &n))));
    assert_eq!(error_code(&r), Some(446));
    // The data connection binds: its answer, then the early bytes.
    let out = connection_bind(&mut sb, now, DATA, connection, &alice);
    assert_eq!(out.len(), 2, "{out:?}");
    assert!(out[0].starts_with("Transmit") && out[0].contains("ConnId(101)"), "{out:?}");
    assert!(out[1].contains("ToStream { conn: ConnId(101), data: [101, 97, 114, 108, 121, 32] }"), "{out:?}");
    // Bytes both ways, unframed, whatever they look like (here: a STUN header's first bytes).
    let _ = sb.handle_input(now, Input::StreamData { conn: DATA, data: &[0, 1, 0, 8, 0x21, 0x12] });
    match sb.poll_output() {
        Output::ToStream { conn, data } => assert_eq!((conn, data), (PEER, &[0u8, 1, 0, 8, 0x21, 0x12][..])),
        o => panic!("{o:?}"),
    }
    let _ = sb.handle_input(now, Input::StreamData { conn: PEER, data: b"world" });
    match sb.poll_output() {
        Output::ToStream { conn, data } => assert_eq!((conn, data), (DATA, &b"world"[..])),
        o => panic!("{o:?}"),
    }
    let st = sb.stats().turn;
    assert_eq!((st.tcp_connections, st.to_peer_bytes, st.to_client_bytes), (1, 6, 11));
    // The peer goes: the data connection is closed, the allocation stays.
    let _ = sb.handle_input(now, Input::StreamClosed { conn: PEER });
    assert_eq!(outputs(&mut sb), vec!["CloseStream(ConnId(101))".to_string()]);
    assert_eq!((sb.stats().turn.tcp_connections, sb.stats().turn.allocations), (0, 1));
    let _ = relay;
}

/// RFC 6062, the peer connecting: a peer without a permission is closed at once; one with a permission is
/// announced to the client (ConnectionAttempt with its address and a CONNECTION-ID) and waits for the bind;
/// unbound for 30 s it is closed. The allocation's end closes its connections.
#[test]
fn tcp_relay_accepts_permitted_peers_and_times_out_unbound_ones() {
    let now = crate::time::test_start();
    let alice = creds("alice", "alicepw");
    let (mut sb, relay) = engine_with_tcp_allocation(now, &alice, Placement::default());
    let stranger: SocketAddr = "9.9.9.9:4000".parse().unwrap();
    let _ = sb.handle_input(now, Input::RelayStreamAccepted { relay, peer: stranger, conn: ConnId(200) });
    assert_eq!(outputs(&mut sb), vec!["CloseStream(ConnId(200))".to_string()]);
    for (conn, at) in [(ConnId(201), now), (ConnId(202), now + std::time::Duration::from_secs(1))] {
        let _ = sb.handle_input(at, Input::RelayStreamAccepted { relay, peer: peer(), conn });
        let Output::Transmit(t) = sb.poll_output() else { panic!("no ConnectionAttempt") };
        assert_eq!(t.to.via, Via::Tcp(CONN));
        let v = StunView::new_checked(&t.payload).unwrap();
        assert_eq!((v.class(), v.method()), (crate::stun::view::Class::Indication, method::CONNECTION_ATTEMPT));
        assert_eq!(v.xor_address(attr::XOR_PEER_ADDRESS), Some(peer()));
        assert_eq!(v.fingerprint_ok(), Some(true));
        if conn == ConnId(201) {
            let out = connection_bind(&mut sb, at, ConnId(301), connection_id(&t.payload), &alice);
            assert_eq!(out.len(), 1, "the answer; nothing was waiting: {out:?}");
        }
    }
    // 30 s later the unbound one (202) is closed, the bound one stays.
    let later = now + crate::turn::TCP_CONNECTION_TIMEOUT + std::time::Duration::from_secs(2);
    let _ = sb.handle_input(later, Input::Timeout);
    let out = outputs(&mut sb);
    assert!(out.contains(&"CloseStream(ConnId(202))".to_string()) && !out.iter().any(|o| o.contains("ConnId(201)")), "{out:?}");
    // The control connection goes: the allocation ends and closes the linked pair.
    let _ = sb.handle_input(later, Input::StreamClosed { conn: CONN });
    let out = outputs(&mut sb);
    for c in ["CloseStream(ConnId(201))", "CloseStream(ConnId(301))"] {
        assert!(out.contains(&c.to_string()), "{c} in {out:?}");
    }
    assert_eq!(sb.stats().turn.tcp_connections, 0);
}

/// RFC 6062's failures: a Connect whose connection fails, or takes 30 s, gets 447 (a connection that opens
/// after that is closed); Connect without a permission 403; a TCP allocation over UDP, or ChannelBind on one,
/// 400; ConnectionBind with an unknown CONNECTION-ID 400.
#[test]
fn tcp_relay_failures() {
    let now = crate::time::test_start();
    let alice = creds("alice", "alicepw");
    let (mut sb, _) = engine_with_tcp_allocation(now, &alice, Placement::default());
    // The connection asked for, or the error code of the answer.
    let connect = |sb: &mut Switchboard, to: SocketAddr, tid: u8| -> Result<u32, Option<u16>> {
        let n = nonce(sb, now, tid);
        let req = request(method::CONNECT, [tid + 1; 12], vec![XorPeerAddress::new(to).into()], Some((&alice, &n)));
        let _ = sb.handle_input(now, Input::StreamData { conn: CONN, data: &req });
        match sb.poll_output() {
            Output::ConnectPeer { connection, .. } => Ok(connection),
            Output::Transmit(t) => Err(error_code(&t.payload)),
            o => panic!("{o:?}"),
        }
    };
    let Ok(connection) = connect(&mut sb, peer(), 20) else { panic!() };
    let _ = sb.handle_input(now, Input::PeerConnected { connection, conn: None });
    let Output::Transmit(t) = sb.poll_output() else { panic!() };
    assert_eq!(error_code(&t.payload), Some(447));
    let Ok(connection) = connect(&mut sb, peer(), 30) else { panic!() };
    let later = now + crate::turn::TCP_CONNECTION_TIMEOUT;
    let _ = sb.handle_input(later, Input::Timeout);
    let Output::Transmit(t) = sb.poll_output() else { panic!() };
    assert_eq!(error_code(&t.payload), Some(447));
    let _ = sb.handle_input(later, Input::PeerConnected { connection, conn: Some(ConnId(400)) });
    assert_eq!(outputs(&mut sb), vec!["CloseStream(ConnId(400))".to_string()]);
    assert_eq!(sb.stats().turn.tcp_connect_failures, 2);
    // No permission for this one.
    assert_eq!(connect(&mut sb, "9.9.9.9:80".parse().unwrap(), 40), Err(Some(403)));
    // An unknown CONNECTION-ID.
    let out = connection_bind(&mut sb, later, ConnId(401), 0x00AB_CDEF, &alice);
    assert!(out.len() == 1 && out[0].contains("Transmit"), "{out:?}");
    // A TCP allocation over UDP: 400.
    let udp = Client { via: Via::Udp("10.0.0.1:3478".parse().unwrap()), remote: "203.0.113.9:2000".parse().unwrap() };
    let buf = request(method::ALLOCATE, [50; 12], vec![], None);
    let _ = sb.handle_input(now, Input::Datagram { local: "10.0.0.1:3478".parse().unwrap(), remote: udp.remote, buf: &buf, packet: 0..buf.len() });
    let Output::Transmit(t) = sb.poll_output() else { panic!() };
    let v = StunView::new_checked(&t.payload).unwrap();
    let n = String::from_utf8(v.find(attr::NONCE).unwrap().to_vec()).unwrap();
    let buf = request(method::ALLOCATE, [51; 12], vec![RequestedTransport::new(6).into()], Some((&alice, &n)));
    let _ = sb.handle_input(now, Input::Datagram { local: "10.0.0.1:3478".parse().unwrap(), remote: udp.remote, buf: &buf, packet: 0..buf.len() });
    let Output::Transmit(t) = sb.poll_output() else { panic!() };
    assert_eq!(error_code(&t.payload), Some(400));
    // ChannelBind on the TCP allocation: 400.
    let n = nonce(&mut sb, now, 60);
    let mut req = request(method::CHANNEL_BIND, [61; 12], vec![XorPeerAddress::new(peer()).into()], None);
    raw_attr(&mut req, attr::CHANNEL_NUMBER, &[0x40, 0, 0, 0]);
    let r = exchange(&mut sb, now, &sign(req, &alice, &n));
    assert_eq!(error_code(&r), Some(400));
}

/// A data connection that the kernel gave to another worker than the allocation's: its ConnectionBind names
/// a CONNECTION-ID of worker 0 (the top byte), so worker 1's engine hands the stream to worker 0 with its bytes,
/// and worker 0's engine binds it.
#[test]
fn tcp_relay_data_connection_on_another_worker_is_handed_over() {
    let now = crate::time::test_start();
    let alice = creds("alice", "alicepw");
    let (mut w0, _) = engine_with_tcp_allocation(now, &alice, Placement { worker: WorkerId(0), workers: 2 });
    let n = nonce(&mut w0, now, 5);
    let req = request(method::CONNECT, [6; 12], vec![XorPeerAddress::new(peer()).into()], Some((&alice, &n)));
    let _ = w0.handle_input(now, Input::StreamData { conn: CONN, data: &req });
    let Output::ConnectPeer { connection, .. } = w0.poll_output() else { panic!() };
    assert_eq!(connection >> 24, 0, "worker 0's CONNECTION-ID");
    let _ = w0.handle_input(now, Input::PeerConnected { connection, conn: Some(ConnId(100)) });
    let _ = outputs(&mut w0);

    // Workers share the nonce key, as the shells configure them.
    let mut w1 = Switchboard::new(
        Config { turn: TurnConfig { nonce_key: Some([9; 32]), ..config() }, placement: Placement { worker: WorkerId(1), workers: 2 }, ..Config::default() },
        now,
        1_700_000_000,
        &[4; 32],
    );
    // The client's first ConnectionBind (unauthenticated, as clients send it) lands on worker 1.
    let _ = w1.handle_input(now, Input::StreamOpened { conn: ConnId(55), local: "10.0.0.1:3478".parse().unwrap(), remote: "203.0.113.9:1001".parse().unwrap() });
    let mut req = request(method::CONNECTION_BIND, [10; 12], vec![], None);
    raw_attr(&mut req, attr::CONNECTION_ID, &connection.to_be_bytes());
    let _ = w1.handle_input(now, Input::StreamData { conn: ConnId(55), data: &req });
    let (worker, pending) = match w1.poll_output() {
        Output::HandOff { conn: ConnId(55), worker, pending } => (worker, pending),
        o => panic!("{o:?}"),
    };
    assert_eq!((worker, &pending[..]), (WorkerId(0), &req[..]));
    assert!(matches!(w1.poll_output(), Output::Timeout(_)));
    assert_eq!(w1.stats().stream_handoffs, 1);
    // Worker 0 adopts it under its own handle: the 401, then the signed ConnectionBind binds it.
    let _ = w0.handle_input(now, Input::StreamOpened { conn: ConnId(77), local: "10.0.0.1:3478".parse().unwrap(), remote: "203.0.113.9:1001".parse().unwrap() });
    let _ = w0.handle_input(now, Input::StreamData { conn: ConnId(77), data: &pending });
    let Output::Transmit(t) = w0.poll_output() else { panic!("no 401") };
    assert_eq!(error_code(&t.payload), Some(401));
    let _ = outputs(&mut w0);
    let n = String::from_utf8(StunView::new_checked(&t.payload).unwrap().find(attr::NONCE).unwrap().to_vec()).unwrap();
    let mut req = request(method::CONNECTION_BIND, [11; 12], vec![], None);
    raw_attr(&mut req, attr::CONNECTION_ID, &connection.to_be_bytes());
    let _ = w0.handle_input(now, Input::StreamData { conn: ConnId(77), data: &sign(req, &alice, &n) });
    let out = outputs(&mut w0);
    assert!(out.len() == 1 && out[0].starts_with("Transmit") && out[0].contains("ConnId(77)"), "{out:?}");
    let _ = w0.handle_input(now, Input::StreamData { conn: ConnId(77), data: b"through" });
    assert!(matches!(w0.poll_output(), Output::ToStream { conn: ConnId(100), data: b"through" }));
}
