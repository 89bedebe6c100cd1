//! Connection limits, end to end, each server binary on loopback: slow
//! clients (half a request, then nothing) are cut at the header timeout, one
//! source address cannot hold more than its cap, a WebSocket that never
//! answers a ping is closed, and a normal client is served throughout. The
//! same for TURN over TCP. Loopback has a whole /8, so the test's clients
//! come from many source addresses.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use switchboard_tests::{Server, SERVERS};

/// A TCP connection from 127.0.0.`host` to `port`.
fn connect_from(host: u8, port: u16) -> TcpStream {
    switchboard_tests::connect_from(SocketAddr::from(([127, 0, 0, host], 0)), SocketAddr::from(([127, 0, 0, 1], port)))
}

/// Whether the server closed `c` (end of stream or reset) within `limit`; bytes it sent first are read past.
fn closed_within(c: &mut TcpStream, limit: Duration) -> bool {
    let end = Instant::now() + limit;
    let mut buf = [0u8; 4096];
    while Instant::now() < end {
        c.set_read_timeout(Some(end.saturating_duration_since(Instant::now()).max(Duration::from_millis(1)))).unwrap();
        match c.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => return false,
            Err(_) => return true,
        }
    }
    false
}

/// `GET /healthz` from 127.0.0.`host`: the body.
fn healthz_from(host: u8, port: u16) -> String {
    let mut c = connect_from(host, port);
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    c.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut s = String::new();
    let _ = c.read_to_string(&mut s);
    s
}

/// A STUN Binding request over TCP from 127.0.0.`host`: whether it was answered.
fn binding_over_tcp_from(host: u8, port: u16) -> bool {
    let mut c = connect_from(host, port);
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    c.write_all(&[0, 1, 0, 0, 0x21, 0x12, 0xa4, 0x42, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]).unwrap();
    let mut head = [0u8; 20];
    c.read_exact(&mut head).is_ok() && head[..2] == [1, 1]
}


const HOSTS: u8 = 30;
const PER_HOST: usize = 100;

/// Opens HOSTS x PER_HOST connections to `port`, each sending `partial`, from 127.0.0.10 on.
fn crowd(port: u16, partial: &[u8]) -> Vec<TcpStream> {
    let mut v = Vec::with_capacity(usize::from(HOSTS) * PER_HOST);
    for h in 0..HOSTS {
        for _ in 0..PER_HOST {
            let mut c = connect_from(10 + h, port);
            c.write_all(partial).unwrap();
            v.push(c);
        }
    }
    v
}

#[test]
fn three_thousand_slow_http_clients_are_cut_and_the_rest_are_served() {
    for bin in SERVERS {
        let cap = PER_HOST.to_string();
        let s = Server::start(bin, &["--http-header-timeout", "8", "--max-connections-per-ip", &cap]);
        let started = Instant::now();
        let mut slow = crowd(s.http_port, b"GET / HTTP/1.1\r\nHost: x\r\n");
        // One more from an address at its cap: refused at once.
        let mut extra = connect_from(10, s.http_port);
        let _ = extra.write_all(b"GET /healthz HTTP/1.1\r\n\r\n");
        assert!(closed_within(&mut extra, Duration::from_secs(1)), "{bin}: a connection past the per-address cap was kept");
        // While 3,000 hang, a client from another address is served.
        assert!(healthz_from(200, s.http_port).ends_with("ok\n"), "{bin}: a normal client was not served");
        assert!(started.elapsed() < Duration::from_secs(8), "{bin}: the test was too slow to see the timeout");
        // At the header timeout every slow one is closed.
        let mut kept = 0;
        for c in &mut slow {
            kept += usize::from(!closed_within(c, Duration::from_secs(10)));
        }
        assert_eq!(kept, 0, "{bin}: {kept} slow connections were still open after the header timeout");
        assert!(healthz_from(200, s.http_port).ends_with("ok\n"), "{bin}");
        let v = s.stats();
        let c = &v["connections"];
        assert!(c["header_timeouts"].as_u64() >= Some(3000), "{bin}: {c}");
        assert!(c["refused_per_ip"].as_u64() >= Some(1), "{bin}: {c}");
    }
}

#[test]
fn slow_turn_over_tcp_clients_are_cut_too() {
    for bin in SERVERS {
        let cap = PER_HOST.to_string();
        let s = Server::start(bin, &["--http-header-timeout", "8", "--max-connections-per-ip", &cap]);
        // Connections that never send a byte (they count against the cap as the others do).
        let mut slow = crowd(s.port, b"");
        let mut extra = connect_from(10, s.port);
        assert!(closed_within(&mut extra, Duration::from_secs(1)), "{bin}: a TURN connection past the per-address cap was kept");
        assert!(binding_over_tcp_from(200, s.port), "{bin}: a normal TURN over TCP client was not answered");
        let mut kept = 0;
        for c in &mut slow {
            kept += usize::from(!closed_within(c, Duration::from_secs(10)));
        }
        assert_eq!(kept, 0, "{bin}: {kept} silent TURN connections were still open after the header timeout");
        // A client that spoke is not cut: its allocation's lifetime governs it.
        let mut c = connect_from(201, s.port);
        c.write_all(&[0, 1, 0, 0, 0x21, 0x12, 0xa4, 0x42, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]).unwrap();
        assert!(!closed_within(&mut c, Duration::from_secs(9)), "{bin}: a TURN client that spoke was cut");
    }
}

#[test]
fn a_websocket_that_never_answers_a_ping_is_closed_and_one_that_does_stays() {
    for bin in SERVERS {
        let s = Server::start(bin, &["--ws-idle-timeout", "2"]);
        // A raw upgrade whose client never reads: the ping goes unanswered.
        let mut mute = connect_from(30, s.http_port);
        mute.write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n").unwrap();
        // A tungstenite client that reads (and so answers pings).
        let (mut live, _) = tungstenite::client(format!("ws://127.0.0.1:{}/ws", s.http_port), connect_from(31, s.http_port)).unwrap();
        live.get_mut().set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        let end = Instant::now() + Duration::from_secs(5);
        let mut pinged = false;
        while Instant::now() < end {
            match live.read() {
                Ok(tungstenite::Message::Ping(_)) => pinged = true,
                Ok(_) => {}
                Err(tungstenite::Error::Io(e)) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
                Err(e) => panic!("{bin}: the answering WebSocket was closed: {e}"),
            }
        }
        assert!(pinged, "{bin}: no ping in 5 s of silence");
        assert!(closed_within(&mut mute, Duration::from_secs(1)), "{bin}: a WebSocket that never answered was kept");
        live.send(tungstenite::Message::text(r#"{"type":"join","room":"r"}"#)).unwrap();
        let v = s.stats();
        assert!(v["connections"]["idle_timeouts"].as_u64() >= Some(1) && v["connections"]["pings"].as_u64() >= Some(2), "{bin}: {v}");
    }
}
