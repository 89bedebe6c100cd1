//! The mio event loop: readiness in, the shared [`Driver`] in the middle,
//! sockets out.
//!
//! Everything protocol lives in `switchboard-core` and the order of calls in
//! `switchboard_common::driver`; this file only waits for readiness and moves
//! bytes. One thread, edge-triggered readiness, reads in bounded batches so
//! that one busy socket cannot starve the others.

use std::collections::VecDeque;
use std::io::{self, Read};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream, UdpSocket};
use mio::{Events, Interest, Poll, Token};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;
use switchboard_common::driver::{Driver, OutQueue, Sockets, BATCH, STREAM_CHUNK};
use switchboard_common::Settings;
use switchboard_core::hash::Map;
use switchboard_core::ConnId;
use tracing::{debug, info, warn};

const SIGNALS: Token = Token(0);
const UDP: Token = Token(1);
const TCP: Token = Token(2);
const HTTP: Token = Token(3);
const MEDIA: Token = Token(4);
const FIRST_DYNAMIC: usize = 16;

struct Conn {
    stream: TcpStream,
    id: ConnId,
    /// An HTTP (web client, WebSocket) connection, not TURN over TCP.
    http: bool,
    out: OutQueue,
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

/// The sockets, apart from the driver so both can be borrowed at once.
struct Io {
    poll: Poll,
    udp: UdpSocket,
    udp_addr: SocketAddr,
    tcp: TcpListener,
    http: TcpListener,
    media: UdpSocket,
    slots: Map<Token, Slot>,
    conn_tokens: Map<ConnId, Token>,
    relay_tokens: Map<SocketAddr, Token>,
    next_token: usize,
}

/// Runs the server until SIGINT or SIGTERM.
pub fn run(settings: Settings) -> io::Result<()> {
    let poll = Poll::new()?;
    let mut udp = UdpSocket::bind(settings.turn_listen)?;
    let mut tcp = TcpListener::bind(settings.turn_listen)?;
    let udp_addr = udp.local_addr()?;
    let mut http = TcpListener::bind(settings.http_listen)?;
    let mut media = UdpSocket::bind(settings.media_listen)?;
    let mut signals = Signals::new([SIGINT, SIGTERM])?;
    poll.registry().register(&mut signals, SIGNALS, Interest::READABLE)?;
    poll.registry().register(&mut udp, UDP, Interest::READABLE)?;
    poll.registry().register(&mut tcp, TCP, Interest::READABLE)?;
    poll.registry().register(&mut http, HTTP, Interest::READABLE)?;
    poll.registry().register(&mut media, MEDIA, Interest::READABLE)?;
    let mut driver = Driver::new(&settings);
    let mut io = Io {
        poll,
        udp,
        udp_addr,
        tcp,
        http,
        media,
        slots: switchboard_common::new_map(),
        conn_tokens: switchboard_common::new_map(),
        relay_tokens: switchboard_common::new_map(),
        next_token: FIRST_DYNAMIC,
    };
    print!("{}", switchboard_common::banner::banner("switchboard", &settings, switchboard_common::unix_now()));
    info!(listen = %udp_addr, http = %settings.http_listen, relay_ips = ?settings.relay_ips, "serving");
    driver.start(&mut io);
    // Sockets with data left unread after a batch (readiness is edge-triggered).
    let mut backlog: VecDeque<Token> = VecDeque::new();
    let mut events = Events::with_capacity(1024);
    loop {
        let timeout = if backlog.is_empty() {
            driver.deadline().map(|d| d.saturating_duration_since(Instant::now()))
        } else {
            Some(Duration::ZERO)
        };
        match io.poll.poll(&mut events, timeout) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        for ev in events.iter() {
            if ev.token() == SIGNALS {
                if signals.pending().next().is_some() {
                    driver.shutdown(&mut io);
                    io.close_all();
                    return Ok(());
                }
                continue;
            }
            if ev.is_writable() {
                io.flush(ev.token());
            }
            if (ev.is_readable() || ev.is_read_closed() || ev.is_error()) && io.readable(&mut driver, ev.token()) {
                backlog.push_back(ev.token());
            }
        }
        for _ in 0..backlog.len() {
            if let Some(t) = backlog.pop_front() {
                if io.readable(&mut driver, t) {
                    backlog.push_back(t);
                }
            }
        }
        driver.on_timer(&mut io);
    }
}

impl Io {
    /// Reads a batch from the socket at `t`; true if data may be left.
    fn readable(&mut self, d: &mut Driver, t: Token) -> bool {
        match t {
            UDP => self.read_udp(d),
            TCP => self.accept(d, false),
            HTTP => self.accept(d, true),
            MEDIA => self.read_media(d),
            t => match self.slots.get(&t) {
                Some(Slot::Relay(_)) => self.read_relay(d, t),
                Some(Slot::Conn(_)) => self.read_conn(d, t),
                None => false,
            },
        }
    }

    fn token(&mut self) -> Token {
        self.next_token += 1;
        Token(self.next_token)
    }

    fn read_udp(&mut self, d: &mut Driver) -> bool {
        for _ in 0..BATCH {
            match self.udp.recv_from(d.recv_buf()) {
                Ok((n, from)) => d.datagram(self, self.udp_addr, from, n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) => debug!("udp recv: {e}"),
            }
        }
        true
    }

    fn read_media(&mut self, d: &mut Driver) -> bool {
        for _ in 0..BATCH {
            match self.media.recv_from(d.recv_buf()) {
                Ok((n, from)) => d.media_datagram(self, from, n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) => debug!("media recv: {e}"),
            }
        }
        true
    }

    fn read_relay(&mut self, d: &mut Driver, t: Token) -> bool {
        for _ in 0..BATCH {
            let Some(Slot::Relay(r)) = self.slots.get(&t) else { return false };
            let relay = r.addr;
            match r.socket.recv_from(d.recv_buf()) {
                Ok((n, peer)) => d.relay_datagram(self, relay, peer, n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) => debug!(%relay, "relay recv: {e}"),
            }
        }
        true
    }

    fn accept(&mut self, d: &mut Driver, http: bool) -> bool {
        for _ in 0..BATCH {
            let listener = if http { &self.http } else { &self.tcp };
            let (mut stream, remote) = match listener.accept() {
                Ok(x) => x,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) => {
                    warn!("accept: {e}");
                    return false;
                }
            };
            let _ = stream.set_nodelay(true);
            let t = self.token();
            if let Err(e) = self.poll.registry().register(&mut stream, t, Interest::READABLE) {
                warn!("register tcp: {e}");
                continue;
            }
            let id = ConnId(t.0 as u64);
            self.slots.insert(t, Slot::Conn(Conn { stream, id, http, out: OutQueue::default(), writable: false }));
            self.conn_tokens.insert(id, t);
            if http {
                d.http_opened(self, id);
            } else {
                d.stream_opened(self, id, self.udp_addr, remote);
            }
        }
        true
    }

    fn read_conn(&mut self, d: &mut Driver, t: Token) -> bool {
        let mut chunk = [0u8; STREAM_CHUNK];
        for _ in 0..BATCH {
            let Some(Slot::Conn(c)) = self.slots.get_mut(&t) else { return false };
            let (id, http) = (c.id, c.http);
            match c.stream.read(&mut chunk) {
                Ok(n) if n > 0 && http => d.http_data(self, id, &chunk[..n]),
                Ok(n) if n > 0 => d.stream_data(self, id, &chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                _ => {
                    // End of stream or a hard error: the client is gone.
                    self.close_stream(id);
                    if http {
                        d.http_closed(self, id);
                    } else {
                        d.stream_closed(self, id);
                    }
                    return false;
                }
            }
        }
        true
    }

    fn flush(&mut self, t: Token) {
        let Some(Slot::Conn(c)) = self.slots.get_mut(&t) else { return };
        let _ = c.out.write_to(&mut c.stream);
        let want = !c.out.is_empty();
        if want != c.writable {
            let interest = if want { Interest::READABLE | Interest::WRITABLE } else { Interest::READABLE };
            let _ = self.poll.registry().reregister(&mut c.stream, t, interest);
            c.writable = want;
        }
    }

    fn close_all(&mut self) {
        let conns: Vec<ConnId> = self.conn_tokens.keys().copied().collect();
        for id in conns {
            self.close_stream(id);
        }
    }
}

impl Sockets for Io {
    fn send_datagram(&mut self, to: SocketAddr, data: &[u8]) {
        if let Err(e) = self.udp.send_to(data, to) {
            debug!(%to, "udp send: {e}");
        }
    }

    fn send_media(&mut self, to: SocketAddr, data: &[u8]) {
        if let Err(e) = self.media.send_to(data, to) {
            debug!(%to, "media send: {e}");
        }
    }

    fn send_stream(&mut self, id: ConnId, data: &[u8]) -> bool {
        let Some(&t) = self.conn_tokens.get(&id) else { return true };
        let Some(Slot::Conn(c)) = self.slots.get_mut(&t) else { return true };
        if !c.out.push(data) {
            return false;
        }
        self.flush(t);
        true
    }

    fn send_from_relay(&mut self, relay: SocketAddr, peer: SocketAddr, data: &[u8]) {
        if let Some(Slot::Relay(r)) = self.relay_tokens.get(&relay).and_then(|t| self.slots.get(t)) {
            if let Err(e) = r.socket.send_to(data, peer) {
                debug!(%relay, %peer, "relay send: {e}");
            }
        }
    }

    fn add_relay(&mut self, socket: std::net::UdpSocket, addr: SocketAddr) -> bool {
        let mut socket = UdpSocket::from_std(socket);
        let t = self.token();
        if self.poll.registry().register(&mut socket, t, Interest::READABLE).is_err() {
            return false;
        }
        self.slots.insert(t, Slot::Relay(Relay { socket, addr }));
        self.relay_tokens.insert(addr, t);
        debug!(%addr, "relay bound");
        true
    }

    fn has_relay(&self, addr: SocketAddr) -> bool {
        self.relay_tokens.contains_key(&addr)
    }

    fn release_relay(&mut self, relay: SocketAddr) {
        if let Some(t) = self.relay_tokens.remove(&relay) {
            if let Some(Slot::Relay(mut r)) = self.slots.remove(&t) {
                let _ = self.poll.registry().deregister(&mut r.socket);
            }
        }
    }

    fn close_stream(&mut self, id: ConnId) {
        let Some(t) = self.conn_tokens.remove(&id) else { return };
        self.flush(t);
        if let Some(Slot::Conn(mut c)) = self.slots.remove(&t) {
            let _ = self.poll.registry().deregister(&mut c.stream);
            let _ = c.stream.shutdown(std::net::Shutdown::Both);
        }
    }

    fn relays_open(&self) -> usize {
        self.relay_tokens.len()
    }
}
