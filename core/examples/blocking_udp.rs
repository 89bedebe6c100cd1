//! Switchboard's core in a plain blocking `std::net` program: a STUN and TURN
//! server over UDP with no runtime and no dependencies but the core. Use it as
//! the template for putting the engine in an event loop of your own.
//!
//!     cargo run -p switchboard-core --example blocking_udp -- 127.0.0.1:3478 [--allow-loopback-peers]
//!     turnutils_stunclient -p 3478 127.0.0.1
//!     turnutils_uclient -p 3478 -u demo -w demo -e 127.0.0.1 -r 3480 127.0.0.1   # with turnutils_peer, and the flag
//!
//! Shape: one thread per socket does nothing but block on `recv_from` and
//! pass what it got over a channel; the main thread owns the engine and
//! follows its drive contract: feed one input, act on the `Forward` at once,
//! drain `poll_output`, then wait for the next datagram or the deadline.

use std::collections::HashMap;
use std::io::{self, Read};
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use switchboard_core::turn::{PortRequest, TurnConfig, RELAY_HEADROOM, RELAY_TAILROOM};
use switchboard_core::{Config, Forward, Input, Output, Switchboard};

/// What the reader threads hand to the engine's thread.
enum Event {
    /// A datagram on the listener.
    Client { from: SocketAddr, data: Vec<u8> },
    /// A datagram on a relay socket; the payload is `buf[RELAY_HEADROOM..][..len]`.
    Peer { relay: SocketAddr, from: SocketAddr, buf: Vec<u8>, len: usize },
}

/// A relay socket the engine asked for, and the flag that stops its reader.
struct Relay {
    socket: UdpSocket,
    closed: Arc<AtomicBool>,
}

fn main() -> io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let listen = args.iter().find(|a| !a.starts_with("--")).map_or("127.0.0.1:3478", String::as_str);
    let listener = UdpSocket::bind(listen)?;
    let local = listener.local_addr()?;

    let mut turn = TurnConfig { users: vec![("demo".into(), "demo".into())], ..TurnConfig::default() };
    turn.peer_policy.allow_loopback = args.iter().any(|a| a == "--allow-loopback-peers");
    let mut seed = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut seed)?;
    let unix_now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let mut engine = Switchboard::new(Config { turn, ..Config::default() }, Instant::now(), unix_now, &seed);

    let (tx, rx) = mpsc::channel();
    let reader = listener.try_clone()?;
    let to_engine = tx.clone();
    thread::spawn(move || {
        let mut buf = vec![0u8; 65536];
        while let Ok((n, from)) = reader.recv_from(&mut buf) {
            let _ = to_engine.send(Event::Client { from, data: buf[..n].to_vec() });
        }
    });
    println!("blocking_udp: STUN/TURN on udp {local} (user demo, password demo)");

    let mut relays: HashMap<SocketAddr, Relay> = HashMap::new();
    loop {
        // Drain the engine (the drive contract), binding the relays it asks for.
        let deadline = loop {
            match engine.poll_output() {
                Output::Transmit(t) => {
                    let _ = listener.send_to(&t.payload, t.to.remote);
                }
                Output::BindRelay { allocation, port, .. } => {
                    let bound = bind_relay(local, port, &tx).map(|(addr, relay)| {
                        relays.insert(addr, relay);
                        addr
                    });
                    let _ = engine.handle_input(Instant::now(), Input::RelayBound { allocation, bound, reserved: None });
                }
                Output::ReleaseRelay { relay, .. } => {
                    if let Some(r) = relays.remove(&relay) {
                        r.closed.store(true, Ordering::Relaxed);
                    }
                }
                Output::Timeout(at) => break at,
                // Stream (TCP) outputs do not occur: this server feeds no streams.
                _ => {}
            }
        };
        // Wait for the next datagram, or the deadline.
        let event = match deadline {
            Some(at) => rx.recv_timeout(at.saturating_duration_since(Instant::now())),
            None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
        };
        let now = Instant::now();
        match event {
            Ok(Event::Client { from, data }) => {
                let input = Input::Datagram { local, remote: from, buf: &data, packet: 0..data.len() };
                if let Forward::ToPeer(r) = engine.handle_input(now, input) {
                    if let Some(relay) = relays.get(&r.relay) {
                        let _ = relay.socket.send_to(&data[r.range], r.peer);
                    }
                }
            }
            Ok(Event::Peer { relay, from, mut buf, len }) => {
                let payload = RELAY_HEADROOM..RELAY_HEADROOM + len;
                let input = Input::RelayDatagram { relay, peer: from, buf: &mut buf, payload };
                if let Forward::ToClient(r) = engine.handle_input(now, input) {
                    let _ = listener.send_to(&buf[r.range], r.to.remote);
                }
            }
            Err(RecvTimeoutError::Timeout) => {
                let _ = engine.handle_input(now, Input::Timeout);
            }
            Err(RecvTimeoutError::Disconnected) => return Ok(()),
        }
    }
}

/// Binds a relay socket on the listener's IP and starts its reader thread.
/// Even ports are found by retrying; an even pair (RESERVATION-TOKEN) is not
/// offered here, and the engine answers such a request with an error.
fn bind_relay(local: SocketAddr, port: PortRequest, tx: &Sender<Event>) -> Option<(SocketAddr, Relay)> {
    let socket = match port {
        PortRequest::Any => UdpSocket::bind((local.ip(), 0)).ok()?,
        PortRequest::Even => (0..64)
            .filter_map(|_| UdpSocket::bind((local.ip(), 0)).ok())
            .find(|s| s.local_addr().is_ok_and(|a| a.port() % 2 == 0))?,
        PortRequest::EvenPair | PortRequest::Reserved(_) => return None,
    };
    let addr = socket.local_addr().ok()?;
    // The reader wakes every 200 ms to notice that the relay was released.
    socket.set_read_timeout(Some(Duration::from_millis(200))).ok()?;
    let reader = socket.try_clone().ok()?;
    let closed = Arc::new(AtomicBool::new(false));
    let (stop, tx) = (closed.clone(), tx.clone());
    thread::spawn(move || {
        let mut datagram = vec![0u8; 65536];
        while !stop.load(Ordering::Relaxed) {
            if let Ok((len, from)) = reader.recv_from(&mut datagram) {
                // Room before and after the payload, where the engine writes the client's framing.
                let mut buf = vec![0u8; RELAY_HEADROOM + len + RELAY_TAILROOM];
                buf[RELAY_HEADROOM..RELAY_HEADROOM + len].copy_from_slice(&datagram[..len]);
                if tx.send(Event::Peer { relay: addr, from, buf, len }).is_err() {
                    return;
                }
            }
        }
    });
    Some((addr, Relay { socket, closed }))
}
