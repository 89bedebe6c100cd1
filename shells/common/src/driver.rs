//! The drive loop both shells share: feed the engine, act on what it decides
//! through the shell's [`Sockets`], bind the relays it asks for, and keep its
//! next deadline. A shell only waits for readiness and moves bytes; the order
//! of calls that the core's drive contract asks for lives here, once.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::Instant;

use switchboard_core::turn::{PortRequest, RELAY_HEADROOM, RELAY_TAILROOM};
use switchboard_core::{AllocationId, Client, ConnId, Family, Forward, Input, Output, Switchboard, Via};
use tracing::{debug, info, warn};

use crate::http::{assets, Event, HttpConn};
use crate::relay::{RelayPorts, Want};
use crate::Settings;
use switchboard_core::hash::Map;

/// Datagrams or reads a shell handles from one socket before the others get a turn.
pub const BATCH: usize = 64;
/// Most bytes queued toward one slow stream client; beyond it, messages are dropped.
pub const MAX_STREAM_BACKLOG: usize = 1 << 20;
/// Size of a read from a stream connection.
pub const STREAM_CHUNK: usize = 16 * 1024;
const BUF_LEN: usize = RELAY_HEADROOM + 65536 + RELAY_TAILROOM;

/// What a shell does with the sockets it owns. Every method must return at
/// once (non-blocking); a datagram that cannot be sent now is dropped, as the
/// network would.
pub trait Sockets {
    /// Sends `data` to a client: a datagram from the listener, or bytes queued on its stream.
    fn send_to_client(&mut self, to: Client, data: &[u8]) {
        match to.via {
            Via::Udp(_) => self.send_datagram(to.remote, data),
            Via::Tcp(conn) => {
                // TURN over TCP: a client that does not read loses messages, as over UDP.
                let _ = self.send_stream(conn, data);
            }
        }
    }
    /// Sends a datagram from the STUN/TURN listener.
    fn send_datagram(&mut self, to: SocketAddr, data: &[u8]);
    /// Queues bytes on a stream connection (TURN over TCP, or HTTP); false if
    /// its queue is full ([`MAX_STREAM_BACKLOG`]) and the bytes were dropped.
    fn send_stream(&mut self, conn: ConnId, data: &[u8]) -> bool;
    /// Sends a datagram from the SFU's media socket.
    fn send_media(&mut self, to: SocketAddr, data: &[u8]);
    /// Sends a datagram from the relay socket bound at `relay` to `peer`.
    fn send_from_relay(&mut self, relay: SocketAddr, peer: SocketAddr, data: &[u8]);
    /// Takes a freshly bound, non-blocking relay socket and starts reading it;
    /// false if it could not be registered (the socket is then dropped).
    fn add_relay(&mut self, socket: UdpSocket, addr: SocketAddr) -> bool;
    /// Whether a relay socket is open at `addr`.
    fn has_relay(&self, addr: SocketAddr) -> bool;
    /// Closes the relay socket at `relay`.
    fn release_relay(&mut self, relay: SocketAddr);
    /// Flushes what it can and closes the stream connection `conn`.
    fn close_stream(&mut self, conn: ConnId);
    /// Relay sockets open now (for the stop report).
    fn relays_open(&self) -> usize;
}

/// The engine with the state that driving it needs: its receive buffer
/// (with the head- and tailroom the relay path writes into), relay port
/// selection and the next deadline.
pub struct Driver {
    engine: Switchboard,
    relay_ips: Vec<IpAddr>,
    ports: RelayPorts,
    deadline: Option<Instant>,
    pending_binds: Vec<(AllocationId, Family, PortRequest)>,
    buf: Vec<u8>,
    http: Map<ConnId, HttpConn>,
    /// WebSocket clients whose out-queue overflowed, closed after this drain.
    slow: Vec<ConnId>,
}

impl Driver {
    /// A driver for an engine configured by `settings`, seeded from the OS.
    pub fn new(settings: &Settings) -> Self {
        let seed = crate::os_seed();
        let engine = Switchboard::new(settings.engine_config(), Instant::now(), crate::unix_now(), &seed);
        Driver {
            engine,
            relay_ips: settings.relay_ips.clone(),
            ports: RelayPorts::new(settings.ports.0, settings.ports.1),
            deadline: None,
            pending_binds: Vec::new(),
            buf: vec![0; BUF_LEN],
            http: crate::new_map(),
            slow: Vec::new(),
        }
    }

    /// The engine, for its counters.
    pub fn engine(&self) -> &Switchboard {
        &self.engine
    }

    /// When [`Driver::on_timer`] is due next (`None`: nothing pending).
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// Where to receive the next datagram (listener or relay); then call
    /// [`Driver::datagram`] or [`Driver::relay_datagram`] with its length.
    pub fn recv_buf(&mut self) -> &mut [u8] {
        let end = self.buf.len() - RELAY_TAILROOM;
        &mut self.buf[RELAY_HEADROOM..end]
    }

    /// A datagram of `len` bytes, received into [`Driver::recv_buf`], from `remote` on the listener at `local`.
    pub fn datagram(&mut self, io: &mut impl Sockets, local: SocketAddr, remote: SocketAddr, len: usize) {
        let packet = RELAY_HEADROOM..RELAY_HEADROOM + len;
        let fwd = self.engine.handle_input(Instant::now(), Input::Datagram { local, remote, buf: &self.buf, packet });
        self.forward(io, fwd);
        self.drain(io);
    }

    /// A datagram of `len` bytes, received into [`Driver::recv_buf`], from `peer` on the relay at `relay`.
    pub fn relay_datagram(&mut self, io: &mut impl Sockets, relay: SocketAddr, peer: SocketAddr, len: usize) {
        let payload = RELAY_HEADROOM..RELAY_HEADROOM + len;
        let input = Input::RelayDatagram { relay, peer, buf: &mut self.buf, payload };
        let fwd = self.engine.handle_input(Instant::now(), input);
        self.forward(io, fwd);
        self.drain(io);
    }

    /// A datagram of `len` bytes, received into [`Driver::recv_buf`], from `remote` on the media socket.
    pub fn media_datagram(&mut self, io: &mut impl Sockets, remote: SocketAddr, len: usize) {
        let data = &self.buf[RELAY_HEADROOM..RELAY_HEADROOM + len];
        let fwd = self.engine.handle_input(Instant::now(), Input::MediaDatagram { remote, data });
        self.forward(io, fwd);
        self.drain(io);
    }

    /// A stream connection was accepted.
    pub fn stream_opened(&mut self, io: &mut impl Sockets, conn: ConnId, local: SocketAddr, remote: SocketAddr) {
        debug!(%remote, conn = conn.0, "stream client connected");
        self.input(io, Input::StreamOpened { conn, local, remote });
    }

    /// Bytes arrived on a stream connection.
    pub fn stream_data(&mut self, io: &mut impl Sockets, conn: ConnId, data: &[u8]) {
        self.input(io, Input::StreamData { conn, data });
    }

    /// A stream connection ended (end of stream or an error); the shell has
    /// already closed it.
    pub fn stream_closed(&mut self, io: &mut impl Sockets, conn: ConnId) {
        debug!(conn = conn.0, "stream client closed");
        self.input(io, Input::StreamClosed { conn });
    }

    /// An HTTP connection was accepted.
    pub fn http_opened(&mut self, io: &mut impl Sockets, conn: ConnId) {
        let _ = io;
        self.http.insert(conn, HttpConn::default());
    }

    /// Bytes arrived on an HTTP connection.
    pub fn http_data(&mut self, io: &mut impl Sockets, conn: ConnId, data: &[u8]) {
        let Some(h) = self.http.get_mut(&conn) else { return };
        let mut events = Vec::new();
        h.feed(data, &mut events);
        let mut events: VecDeque<Event> = events.into();
        while let Some(ev) = events.pop_front() {
            let mut more = Vec::new();
            match ev {
                Event::Request(req) => {
                    let Some(h) = self.http.get_mut(&conn) else { return };
                    match (req.method.as_str(), req.path.as_str(), req.websocket_key) {
                        ("GET", "/ws", Some(key)) => {
                            h.upgrade(&key, &mut more);
                            self.input(io, Input::SignalOpened { conn });
                        }
                        ("GET", path, _) => {
                            let stats = if path == "/stats" { Self::stats_of(&self.engine) } else { String::new() };
                            let (status, typ, body): (&str, &str, &[u8]) = match path {
                                "/" | "/index.html" => ("200 OK", "text/html; charset=utf-8", assets::INDEX_HTML.as_bytes()),
                                "/app.js" => ("200 OK", "text/javascript; charset=utf-8", assets::APP_JS.as_bytes()),
                                "/style.css" => ("200 OK", "text/css; charset=utf-8", assets::STYLE_CSS.as_bytes()),
                                "/healthz" => ("200 OK", "text/plain", b"ok\n"),
                                "/favicon.ico" => ("204 No Content", "image/x-icon", b""),
                                "/stats" => ("200 OK", "application/json", stats.as_bytes()),
                                _ => ("404 Not Found", "text/plain", b"not found\n"),
                            };
                            h.respond(status, typ, body, false, &mut more);
                        }
                        _ => h.respond("405 Method Not Allowed", "text/plain", b"method not allowed\n", true, &mut more),
                    }
                }
                Event::BadRequest => {
                    let Some(h) = self.http.get_mut(&conn) else { return };
                    h.respond("400 Bad Request", "text/plain", b"bad request\n", true, &mut more);
                }
                Event::Text(text) => self.input(io, Input::SignalText { conn, text: &text }),
                Event::Closed => self.input(io, Input::SignalClosed { conn }),
            }
            events.extend(more);
        }
        self.flush_http(io, conn);
    }

    /// An HTTP connection ended; the shell has already closed it.
    pub fn http_closed(&mut self, io: &mut impl Sockets, conn: ConnId) {
        if let Some(h) = self.http.remove(&conn) {
            if h.is_websocket() {
                self.input(io, Input::SignalClosed { conn });
            }
        }
    }

    /// Writes what an HTTP connection has to send, and closes it when it is done.
    fn flush_http(&mut self, io: &mut impl Sockets, conn: ConnId) {
        let Some(h) = self.http.get_mut(&conn) else { return };
        let out = h.take_output();
        let overflow = !out.is_empty() && !io.send_stream(conn, &out);
        if h.is_done() || overflow {
            self.close_http(io, conn);
        }
    }

    /// Closes an HTTP connection from this side: a WebSocket's close is a leave.
    fn close_http(&mut self, io: &mut impl Sockets, conn: ConnId) {
        io.close_stream(conn);
        // Still a WebSocket (not closed by its client): a client too slow to take its
        // messages is disconnected rather than silently missing some; the others get `bye`.
        if self.http.remove(&conn).is_some_and(|h| h.is_websocket()) {
            debug!(conn = conn.0, "closing a WebSocket client");
            self.input(io, Input::SignalClosed { conn });
        }
    }

    /// `/stats`: the engine's counters as JSON, with the headline figures first.
    pub fn stats_json(&self) -> String {
        Self::stats_of(&self.engine)
    }

    fn stats_of(engine: &Switchboard) -> String {
        let s = engine.stats();
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
            "sfu_rooms": engine.sfu_rooms(),
        });
        v.to_string()
    }

    /// Call when the deadline may have passed. Timers wake late or early, so
    /// this checks the clock and does nothing when it is not yet time.
    pub fn on_timer(&mut self, io: &mut impl Sockets) {
        if self.deadline.is_some_and(|d| d <= Instant::now()) {
            self.input(io, Input::Timeout);
        }
    }

    /// Called once at start, before any input.
    pub fn start(&mut self, io: &mut impl Sockets) {
        self.drain(io);
    }

    /// Graceful stop: ends every allocation and stream, releases the relays,
    /// and logs what was done.
    pub fn shutdown(&mut self, io: &mut impl Sockets) {
        let allocations = self.engine.turn().allocation_count();
        self.engine.shutdown(Instant::now());
        self.drain(io);
        let stats = self.engine.stats();
        info!(
            allocations_released = allocations,
            relays_open = io.relays_open(),
            relayed_packets = stats.turn.to_peer_packets + stats.turn.to_client_packets,
            "stopped"
        );
    }

    fn input(&mut self, io: &mut impl Sockets, input: Input<'_>) {
        let fwd = self.engine.handle_input(Instant::now(), input);
        self.forward(io, fwd);
        self.drain(io);
    }

    /// Acts on a forwarding decision about the datagram now in `self.buf`.
    fn forward(&mut self, io: &mut impl Sockets, fwd: Forward) {
        match fwd {
            Forward::None => {}
            Forward::ToPeer(r) => io.send_from_relay(r.relay, r.peer, &self.buf[r.range]),
            Forward::ToClient(r) => io.send_to_client(r.to, &self.buf[r.range]),
        }
    }

    /// Drains the engine's outputs (the drive contract), then binds any relays it asked for.
    fn drain(&mut self, io: &mut impl Sockets) {
        loop {
            loop {
                match self.engine.poll_output() {
                    Output::Transmit(t) => io.send_to_client(t.to, &t.payload),
                    Output::ToPeer { relay, peer, payload } => io.send_from_relay(relay, peer, payload),
                    Output::BindRelay { allocation, family, port } => self.pending_binds.push((allocation, family, port)),
                    Output::ReleaseRelay { allocation, relay } => {
                        io.release_relay(relay);
                        debug!(%allocation, %relay, "relay released");
                    }
                    Output::CloseStream(id) => io.close_stream(id),
                    Output::MediaTransmit { to, data } => io.send_media(to, &data),
                    Output::SignalSend(m) => {
                        if let Some(h) = self.http.get_mut(&m.conn) {
                            h.send_text(m.text);
                            let out = h.take_output();
                            if !io.send_stream(m.conn, &out) {
                                self.slow.push(m.conn);
                            }
                        }
                    }
                    Output::Timeout(at) => {
                        self.deadline = at;
                        break;
                    }
                    _ => {}
                }
            }
            for conn in std::mem::take(&mut self.slow) {
                self.close_http(io, conn);
            }
            if self.pending_binds.is_empty() {
                return;
            }
            for (allocation, family, port) in std::mem::take(&mut self.pending_binds) {
                let (bound, reserved) = self.bind_relay(io, family, port);
                if bound.is_none() {
                    warn!(%allocation, ?family, "no relay socket could be bound");
                }
                let fwd = self.engine.handle_input(Instant::now(), Input::RelayBound { allocation, bound, reserved });
                self.forward(io, fwd);
            }
        }
    }

    /// Binds what the core asked for: the relay address, and for an even
    /// pair the reserved one. A reserved socket is already open and kept.
    fn bind_relay(&mut self, io: &mut impl Sockets, family: Family, port: PortRequest) -> (Option<SocketAddr>, Option<SocketAddr>) {
        let Some(ip) = self.relay_ips.iter().copied().find(|i| i.is_ipv4() == (family == Family::V4)) else {
            return (None, None);
        };
        let want = match port {
            PortRequest::Reserved(addr) => return (io.has_relay(addr).then_some(addr), None),
            PortRequest::Any => Want::Any,
            PortRequest::Even => Want::Even,
            PortRequest::EvenPair => Want::EvenPair,
        };
        let (first, second) = match self.ports.bind(ip, want) {
            Ok(x) => x,
            Err(e) => {
                warn!(%ip, "bind relay: {e}");
                return (None, None);
            }
        };
        let mut add = |s: UdpSocket| {
            let addr = s.local_addr().ok()?;
            io.add_relay(s, addr).then_some(addr)
        };
        let bound = add(first);
        let reserved = second.and_then(add);
        (bound, reserved)
    }
}

/// Bytes waiting to be written to a stream client, bounded so that a client
/// that does not read costs messages, not the server's memory.
#[derive(Debug, Default)]
pub struct OutQueue {
    buf: VecDeque<u8>,
    dropped: u64,
}

impl OutQueue {
    /// Queues `data` whole, or drops it whole (and counts it) if the queue is full.
    pub fn push(&mut self, data: &[u8]) -> bool {
        if self.buf.len() + data.len() > MAX_STREAM_BACKLOG {
            self.dropped += 1;
            return false;
        }
        self.buf.extend(data);
        true
    }

    /// Writes as much as `w` takes now. `Ok(())` when done or when `w` would
    /// block (see [`OutQueue::is_empty`]); an error means the stream is broken
    /// and the queue was cleared.
    pub fn write_to(&mut self, mut w: impl Write) -> io::Result<()> {
        while !self.buf.is_empty() {
            let (a, _) = self.buf.as_slices();
            match w.write(a) {
                Ok(0) => {
                    self.buf.clear();
                    return Err(io::ErrorKind::WriteZero.into());
                }
                Ok(n) => {
                    self.buf.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.buf.clear();
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// Whether everything queued was written.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Messages dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Slow(usize);
    impl Write for Slow {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            if self.0 == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = b.len().min(self.0);
            self.0 -= n;
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn out_queue_bounds_and_partial_writes() {
        let mut q = OutQueue::default();
        assert!(q.push(&[1; 1000]));
        q.write_to(Slow(300)).unwrap();
        assert!(!q.is_empty());
        q.write_to(Slow(10_000)).unwrap();
        assert!(q.is_empty());
        assert!(q.push(&vec![0; MAX_STREAM_BACKLOG]));
        assert!(!q.push(&[1]));
        assert_eq!(q.dropped(), 1);
    }
}
