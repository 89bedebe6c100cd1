//! The mio event loop: sockets in, the engine in the middle, sockets out.
//!
//! Everything protocol lives in `switchboard-core`; this file only moves
//! bytes and time. One thread, edge-triggered readiness, reads in bounded
//! batches so that one busy socket cannot starve the others.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream, UdpSocket};
use mio::{Events, Interest, Poll, Token};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;
use switchboard_common::relay::{RelayPorts, Want};
use switchboard_common::Settings;
use switchboard_core::hash::Map;
use switchboard_core::turn::{PortRequest, RELAY_HEADROOM, RELAY_TAILROOM};
use switchboard_core::{AllocationId, Client, ConnId, Family, Forward, Input, Output, Switchboard, Via};
use tracing::{debug, info, warn};

const SIGNALS: Token = Token(0);
const UDP: Token = Token(1);
const TCP: Token = Token(2);
const FIRST_DYNAMIC: usize = 16;

/// Datagrams or reads handled per socket before the others get a turn.
const BATCH: usize = 64;
/// Most bytes queued toward one slow TCP client; beyond it, messages are dropped.
const MAX_TCP_BACKLOG: usize = 1 << 20;
const BUF_LEN: usize = RELAY_HEADROOM + 65536 + RELAY_TAILROOM;

struct Conn {
    stream: TcpStream,
    id: ConnId,
    out: VecDeque<u8>,
    writable: bool,
}

struct Relay {
    socket: UdpSocket,
    addr: SocketAddr,
}

enum Slot {
    Conn(Conn),
    Relay(Relay),
}

/// The sockets, apart from the engine so both can be borrowed at once.
struct Io {
    poll: Poll,
    udp: UdpSocket,
    udp_addr: SocketAddr,
    tcp: TcpListener,
    slots: Map<Token, Slot>,
    conn_tokens: Map<ConnId, Token>,
    relay_tokens: Map<SocketAddr, Token>,
    next_token: usize,
    ports: RelayPorts,
    tcp_dropped: u64,
}

struct Server {
    engine: Switchboard,
    io: Io,
    settings: Settings,
    /// Sockets with data left unread after a batch (readiness is edge-triggered).
    backlog: VecDeque<Token>,
    deadline: Option<Instant>,
    buf: Vec<u8>,
    pending_binds: Vec<(AllocationId, Family, PortRequest)>,
}

/// Runs the server until SIGINT or SIGTERM.
pub fn run(settings: Settings) -> io::Result<()> {
    let poll = Poll::new()?;
    let mut udp = UdpSocket::bind(settings.turn_listen)?;
    let mut tcp = TcpListener::bind(settings.turn_listen)?;
    let udp_addr = udp.local_addr()?;
    let mut signals = Signals::new([SIGINT, SIGTERM])?;
    poll.registry().register(&mut signals, SIGNALS, Interest::READABLE)?;
    poll.registry().register(&mut udp, UDP, Interest::READABLE)?;
    poll.registry().register(&mut tcp, TCP, Interest::READABLE)?;
    let seed = switchboard_common::os_seed();
    let unix = switchboard_common::unix_now();
    let engine = Switchboard::new(settings.engine_config(), Instant::now(), unix, &seed);
    let h = switchboard_core::hash::hasher(&seed);
    let io = Io {
        poll,
        udp,
        udp_addr,
        tcp,
        slots: Map::with_hasher(h.clone()),
        conn_tokens: Map::with_hasher(h.clone()),
        relay_tokens: Map::with_hasher(h),
        next_token: FIRST_DYNAMIC,
        ports: RelayPorts::new(settings.ports.0, settings.ports.1),
        tcp_dropped: 0,
    };
    print!("{}", switchboard_common::banner::banner("switchboard", &settings, unix));
    info!(listen = %udp_addr, relay_ips = ?settings.relay_ips, "serving STUN/TURN");
    let mut server = Server {
        engine,
        io,
        settings,
        backlog: VecDeque::new(),
        deadline: None,
        buf: vec![0; BUF_LEN],
        pending_binds: Vec::new(),
    };
    server.drain();
    let mut events = Events::with_capacity(1024);
    loop {
        let timeout = if server.backlog.is_empty() {
            server.deadline.map(|d| d.saturating_duration_since(Instant::now()))
        } else {
            Some(Duration::ZERO)
        };
        match server.io.poll.poll(&mut events, timeout) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        for ev in events.iter() {
            if ev.token() == SIGNALS {
                if signals.pending().next().is_some() {
                    server.stop();
                    return Ok(());
                }
                continue;
            }
            if ev.is_writable() {
                server.io.flush(ev.token());
            }
            if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                server.readable(ev.token());
            }
        }
        for _ in 0..server.backlog.len() {
            if let Some(t) = server.backlog.pop_front() {
                server.readable(t);
            }
        }
        // Timers can fire late (or the poll return early): check against the clock.
        let now = Instant::now();
        if server.deadline.is_some_and(|d| d <= now) {
            server.input(now, Input::Timeout);
        }
    }
}

impl Server {
    fn readable(&mut self, t: Token) {
        let more = match t {
            UDP => self.read_udp(),
            TCP => self.accept(),
            t => match self.io.slots.get(&t) {
                Some(Slot::Relay(_)) => self.read_relay(t),
                Some(Slot::Conn(_)) => self.read_conn(t),
                None => false,
            },
        };
        if more {
            self.backlog.push_back(t);
        }
    }

    /// Feeds one input that carries no relayed data, then drains the outputs.
    fn input(&mut self, now: Instant, input: Input<'_>) {
        let fwd = self.engine.handle_input(now, input);
        self.forward(fwd);
        self.drain();
    }

    /// Acts on a forwarding decision about the datagram now in `self.buf`.
    fn forward(&mut self, fwd: Forward) {
        match fwd {
            Forward::None => {}
            Forward::ToPeer(r) => {
                let data = &self.buf[RELAY_HEADROOM..];
                self.io.send_from_relay(r.relay, r.peer, &data[r.payload]);
            }
            Forward::ToClient(r) => self.io.send_to_client(r.to, &self.buf[r.range]),
        }
    }

    fn read_udp(&mut self) -> bool {
        for _ in 0..BATCH {
            let (n, from) = match self.io.udp.recv_from(&mut self.buf[RELAY_HEADROOM..]) {
                Ok(r) => r,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) => {
                    debug!("udp recv: {e}");
                    continue;
                }
            };
            let data = &self.buf[RELAY_HEADROOM..RELAY_HEADROOM + n];
            let input = Input::Datagram { local: self.io.udp_addr, remote: from, data };
            let fwd = self.engine.handle_input(Instant::now(), input);
            self.forward(fwd);
            self.drain();
        }
        true
    }

    fn read_relay(&mut self, t: Token) -> bool {
        for _ in 0..BATCH {
            let Some(Slot::Relay(r)) = self.io.slots.get(&t) else { return false };
            let relay = r.addr;
            let end = self.buf.len() - RELAY_TAILROOM;
            let (n, peer) = match r.socket.recv_from(&mut self.buf[RELAY_HEADROOM..end]) {
                Ok(x) => x,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) => {
                    debug!(%relay, "relay recv: {e}");
                    continue;
                }
            };
            let payload = RELAY_HEADROOM..RELAY_HEADROOM + n;
            let input = Input::RelayDatagram { relay, peer, buf: &mut self.buf, payload };
            let fwd = self.engine.handle_input(Instant::now(), input);
            self.forward(fwd);
            self.drain();
        }
        true
    }

    fn accept(&mut self) -> bool {
        for _ in 0..BATCH {
            let (mut stream, remote) = match self.io.tcp.accept() {
                Ok(x) => x,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) => {
                    warn!("accept: {e}");
                    return false;
                }
            };
            let _ = stream.set_nodelay(true);
            let t = self.io.token();
            if let Err(e) = self.io.poll.registry().register(&mut stream, t, Interest::READABLE) {
                warn!("register tcp: {e}");
                continue;
            }
            let id = ConnId(t.0 as u64);
            self.io.slots.insert(t, Slot::Conn(Conn { stream, id, out: VecDeque::new(), writable: false }));
            self.io.conn_tokens.insert(id, t);
            debug!(%remote, conn = id.0, "tcp client connected");
            self.input(Instant::now(), Input::StreamOpened { conn: id, local: self.io.udp_addr, remote });
        }
        true
    }

    fn read_conn(&mut self, t: Token) -> bool {
        let mut chunk = [0u8; 16384];
        for _ in 0..BATCH {
            let Some(Slot::Conn(c)) = self.io.slots.get_mut(&t) else { return false };
            let id = c.id;
            match c.stream.read(&mut chunk) {
                Ok(n) if n > 0 => self.input(Instant::now(), Input::StreamData { conn: id, data: &chunk[..n] }),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                _ => {
                    // End of stream or a hard error: the client is gone.
                    self.io.close_conn(id);
                    self.input(Instant::now(), Input::StreamClosed { conn: id });
                    return false;
                }
            }
        }
        true
    }

    /// Drains the engine's outputs (the drive contract), then binds any relays it asked for.
    fn drain(&mut self) {
        loop {
            loop {
                match self.engine.poll_output() {
                    Output::Transmit(t) => self.io.send_to_client(t.to, &t.payload),
                    Output::ToPeer { relay, peer, payload } => self.io.send_from_relay(relay, peer, payload),
                    Output::BindRelay { allocation, family, port } => self.pending_binds.push((allocation, family, port)),
                    Output::ReleaseRelay { allocation, relay } => {
                        self.io.release_relay(relay);
                        debug!(%allocation, %relay, "relay released");
                    }
                    Output::CloseStream(id) => self.io.close_conn(id),
                    Output::Timeout(at) => {
                        self.deadline = at;
                        break;
                    }
                    _ => {}
                }
            }
            if self.pending_binds.is_empty() {
                return;
            }
            let now = Instant::now();
            for (allocation, family, port) in std::mem::take(&mut self.pending_binds) {
                let (bound, reserved) = match self.settings.relay_ip(family) {
                    Some(ip) => self.io.bind_relay(ip, port),
                    None => (None, None),
                };
                if bound.is_none() {
                    warn!(%allocation, ?family, "no relay socket could be bound");
                }
                let fwd = self.engine.handle_input(now, Input::RelayBound { allocation, bound, reserved });
                self.forward(fwd);
            }
        }
    }

    fn stop(&mut self) {
        let allocations = self.engine.turn().allocation_count();
        self.engine.shutdown(Instant::now());
        self.drain();
        let conns: Vec<ConnId> = self.io.conn_tokens.keys().copied().collect();
        for id in conns {
            self.io.close_conn(id);
        }
        let stats = self.engine.stats();
        info!(
            allocations_released = allocations,
            relays_open = self.io.relay_tokens.len(),
            relayed_packets = stats.turn.to_peer_packets + stats.turn.to_client_packets,
            tcp_dropped = self.io.tcp_dropped,
            "stopped"
        );
    }
}

impl Io {
    fn token(&mut self) -> Token {
        self.next_token += 1;
        Token(self.next_token)
    }

    fn send_from_relay(&self, relay: SocketAddr, peer: SocketAddr, data: &[u8]) {
        if let Some(Slot::Relay(r)) = self.relay_tokens.get(&relay).and_then(|t| self.slots.get(t)) {
            if let Err(e) = r.socket.send_to(data, peer) {
                debug!(%relay, %peer, "relay send: {e}");
            }
        }
    }

    fn send_to_client(&mut self, to: Client, data: &[u8]) {
        match to.via {
            Via::Udp(_) => {
                if let Err(e) = self.udp.send_to(data, to.remote) {
                    debug!(to = %to.remote, "udp send: {e}");
                }
            }
            Via::Tcp(id) => {
                let Some(&t) = self.conn_tokens.get(&id) else { return };
                let Some(Slot::Conn(c)) = self.slots.get_mut(&t) else { return };
                if c.out.len() + data.len() > MAX_TCP_BACKLOG {
                    // A client that does not read loses messages, not the server's memory.
                    self.tcp_dropped += 1;
                    return;
                }
                c.out.extend(data);
                self.flush(t);
            }
        }
    }

    fn flush(&mut self, t: Token) {
        let Some(Slot::Conn(c)) = self.slots.get_mut(&t) else { return };
        while !c.out.is_empty() {
            let (a, _) = c.out.as_slices();
            match c.stream.write(a) {
                Ok(n) => {
                    c.out.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    c.out.clear();
                    break;
                }
            }
        }
        let want = !c.out.is_empty();
        if want != c.writable {
            let interest = if want { Interest::READABLE | Interest::WRITABLE } else { Interest::READABLE };
            let _ = self.poll.registry().reregister(&mut c.stream, t, interest);
            c.writable = want;
        }
    }

    fn close_conn(&mut self, id: ConnId) {
        let Some(t) = self.conn_tokens.remove(&id) else { return };
        self.flush(t);
        if let Some(Slot::Conn(mut c)) = self.slots.remove(&t) {
            let _ = self.poll.registry().deregister(&mut c.stream);
            let _ = c.stream.shutdown(std::net::Shutdown::Both);
            debug!(conn = id.0, "tcp client closed");
        }
    }

    /// Binds what the core asked for: the relay address, and for an even
    /// pair the reserved one. A reserved socket is already open and kept.
    fn bind_relay(&mut self, ip: std::net::IpAddr, port: PortRequest) -> (Option<SocketAddr>, Option<SocketAddr>) {
        let want = match port {
            PortRequest::Reserved(addr) => return (self.relay_tokens.contains_key(&addr).then_some(addr), None),
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
        let bound = self.add_relay(first);
        let reserved = second.and_then(|s| self.add_relay(s));
        (bound, reserved)
    }

    fn add_relay(&mut self, std: std::net::UdpSocket) -> Option<SocketAddr> {
        let mut socket = UdpSocket::from_std(std);
        let addr = socket.local_addr().ok()?;
        let t = self.token();
        self.poll.registry().register(&mut socket, t, Interest::READABLE).ok()?;
        self.slots.insert(t, Slot::Relay(Relay { socket, addr }));
        self.relay_tokens.insert(addr, t);
        debug!(%addr, "relay bound");
        Some(addr)
    }

    fn release_relay(&mut self, relay: SocketAddr) {
        if let Some(t) = self.relay_tokens.remove(&relay) {
            if let Some(Slot::Relay(mut r)) = self.slots.remove(&t) {
                let _ = self.poll.registry().deregister(&mut r.socket);
            }
        }
    }
}
