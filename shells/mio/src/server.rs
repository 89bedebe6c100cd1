//! The mio event loop: readiness in, the shared [`Driver`] in the middle,
//! sockets out.
//!
//! Everything protocol lives in `switchboard-core`, the order of calls and
//! the dispatch by listener in `switchboard_common::driver`; this file only
//! waits for readiness and moves bytes. One event loop per worker thread
//! (see `switchboard_common::workers`), edge-triggered readiness, reads in
//! bounded batches so that one busy socket cannot starve the others.
//! Every UDP socket (listener or relay) is read by [`Io::read_udp`], every TCP
//! listener accepted on by [`Io::accept`].

use std::collections::VecDeque;
use std::io::{self, Read};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::unix::SourceFd;
use std::net::UdpSocket;
use std::os::fd::AsRawFd;
use mio::{Events, Interest, Poll, Token};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;
use switchboard_common::driver::Driver;
use switchboard_common::listen::{ConnKind, Socket};
use switchboard_common::sockets::{OutQueue, Sockets, BATCH, STREAM_CHUNK};
use switchboard_common::udp::{self, SendBatch};
use switchboard_common::workers::{self, Setup, StopReport};
use switchboard_common::Settings;
use switchboard_core::hash::Map;
use switchboard_core::ConnId;
use tracing::{info, warn};

const SIGNALS: Token = Token(0);
/// Mail from another worker.
const MAIL: Token = Token(1);
const FIRST_DYNAMIC: usize = 16;

struct Conn {
    stream: TcpStream,
    id: ConnId,
    out: OutQueue,
    writable: bool,
    /// A connection to a TCP relay's peer whose connect is under way.
    connecting: bool,
}

/// What a token stands for.
enum Slot {
    /// The UDP socket bound at this address (in `Io::udp`).
    Udp(SocketAddr),
    /// A TCP listener bound at `local`, whose connections carry `kind`.
    Listener { listener: TcpListener, local: SocketAddr, kind: ConnKind },
    /// An accepted connection.
    Conn(Conn),
}

/// The sockets, apart from the driver so both can be borrowed at once.
struct Io {
    poll: Poll,
    slots: Map<Token, Slot>,
    /// Every UDP socket by local address (the table's listeners and the
    /// relays), with its token and what waits to be sent from it.
    udp: Map<SocketAddr, (UdpSocket, Token, SendBatch)>,
    /// The UDP sockets with datagrams queued, sent before the next wait.
    queued: Vec<SocketAddr>,
    conn_tokens: Map<ConnId, Token>,
    /// TCP relay listeners (RFC 6062) by address.
    relay_listeners: Map<SocketAddr, Token>,
    next_token: usize,
}

/// Runs the server until SIGINT or SIGTERM: worker 0 on this thread (it
/// also watches the signals), the others on threads of their own.
pub fn run(settings: Settings) -> io::Result<()> {
    let setups = workers::prepare(&settings)?;
    let signals = Signals::new([SIGINT, SIGTERM])?;
    print!("{}", switchboard_common::banner::banner("switchboard", &settings, switchboard_common::unix_now()));
    info!(workers = setups.len(), listeners = ?setups[0].listeners, relay_ips = ?settings.relay_ips, "serving");
    let (first, others) = workers::start_others(setups, |s| serve(s, None))?;
    let report = serve(first, Some(signals));
    others.stop(report)
}

/// One worker's event loop, until a signal (worker 0) or [`workers::Mail::Stop`].
fn serve(setup: Setup, mut signals: Option<Signals>) -> io::Result<StopReport> {
    let Setup { settings, listeners, sockets, worker } = setup;
    let mut io = Io {
        poll: Poll::new()?,
        slots: switchboard_common::new_map(),
        udp: switchboard_common::new_map(),
        conn_tokens: switchboard_common::new_map(),
        relay_listeners: switchboard_common::new_map(),
        next_token: FIRST_DYNAMIC,
        queued: Vec::new(),
    };
    for (l, socket) in sockets {
        match socket {
            Socket::Udp(s) => io.register_udp(s, l.addr)?,
            Socket::Tcp(s, kind) => {
                let mut listener = TcpListener::from_std(s);
                let t = io.token();
                io.poll.registry().register(&mut listener, t, Interest::READABLE)?;
                io.slots.insert(t, Slot::Listener { listener, local: l.addr, kind });
            }
        }
    }
    if let Some(signals) = &mut signals {
        io.poll.registry().register(signals, SIGNALS, Interest::READABLE)?;
    }
    let waker = std::sync::Arc::new(mio::Waker::new(io.poll.registry(), MAIL)?);
    worker.on_mail(move || {
        let _ = waker.wake();
    });
    let mut driver = Driver::new(&settings, listeners, worker);
    driver.start(&mut io);
    // Mail sent before the waker was installed.
    if driver.mail(&mut io) {
        return Ok(stop(&mut driver, &mut io));
    }
    // Sockets with data left unread after a batch (readiness is edge-triggered).
    let mut backlog: VecDeque<Token> = VecDeque::new();
    let mut events = Events::with_capacity(1024);
    loop {
        io.send_queued();
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
            match ev.token() {
                SIGNALS => {
                    if signals.as_mut().is_some_and(|s| s.pending().next().is_some()) {
                        return Ok(stop(&mut driver, &mut io));
                    }
                    continue;
                }
                MAIL => {
                    if driver.mail(&mut io) {
                        return Ok(stop(&mut driver, &mut io));
                    }
                    continue;
                }
                _ => {}
            }
            if ev.is_writable() {
                io.writable(&mut driver, ev.token());
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

/// Stops a worker's engine gracefully and sends what that decided.
fn stop(driver: &mut Driver, io: &mut Io) -> StopReport {
    let report = driver.shutdown(io);
    io.send_queued();
    report
}

impl Io {
    /// Reads a batch from the socket at `t`; true if data may be left.
    fn readable(&mut self, d: &mut Driver, t: Token) -> bool {
        match self.slots.get(&t) {
            Some(&Slot::Udp(local)) => self.read_udp(d, local),
            Some(Slot::Listener { .. }) => self.accept(d, t),
            Some(Slot::Conn(c)) if c.connecting => {
                self.finish_connect(d, t);
                false
            }
            Some(Slot::Conn(_)) => self.read_conn(d, t),
            None => false,
        }
    }

    /// A socket can be written: a connect under way has an outcome, or queued bytes can go.
    fn writable(&mut self, d: &mut Driver, t: Token) {
        match self.slots.get(&t) {
            Some(Slot::Conn(c)) if c.connecting => self.finish_connect(d, t),
            _ => self.flush(t),
        }
    }

    /// Tells the driver whether the connect on `t` succeeded; it is then read like any connection.
    /// A wake-up while the connect is still under way (a spurious event) changes nothing.
    fn finish_connect(&mut self, d: &mut Driver, t: Token) {
        let Some(Slot::Conn(c)) = self.slots.get_mut(&t) else { return };
        let ok = match (c.stream.take_error(), c.stream.peer_addr()) {
            (Ok(None), Ok(_)) => true,
            (Ok(None), Err(e)) if matches!(e.kind(), io::ErrorKind::NotConnected | io::ErrorKind::WouldBlock) => return,
            _ => false,
        };
        c.connecting = false;
        let id = c.id;
        self.flush(t);
        d.conn_connected(self, id, ok);
    }

    fn token(&mut self) -> Token {
        self.next_token += 1;
        Token(self.next_token)
    }

    /// Registers a non-blocking UDP socket; it stays a std socket, so the
    /// batched calls of [`udp`] take it as it is.
    fn register_udp(&mut self, socket: UdpSocket, local: SocketAddr) -> io::Result<()> {
        let t = self.token();
        self.poll.registry().register(&mut SourceFd(&socket.as_raw_fd()), t, Interest::READABLE)?;
        self.slots.insert(t, Slot::Udp(local));
        self.udp.insert(local, (socket, t, SendBatch::new()));
        Ok(())
    }

    /// Any UDP socket: a listener of the table or a relay.
    fn read_udp(&mut self, d: &mut Driver, local: SocketAddr) -> bool {
        d.read_datagrams(self, local, |io, batch| match io.udp.get(&local) {
            Some((s, _, _)) => udp::recv_batch(s, batch),
            None => Err(io::ErrorKind::NotFound.into()),
        })
    }

    /// Sends what every UDP socket has queued, in batches.
    fn send_queued(&mut self) {
        for local in self.queued.drain(..) {
            if let Some((s, _, out)) = self.udp.get_mut(&local) {
                out.send(s);
            }
        }
    }

    /// Any TCP listener of the table.
    fn accept(&mut self, d: &mut Driver, t: Token) -> bool {
        for _ in 0..BATCH {
            let Some(Slot::Listener { listener, local, kind }) = self.slots.get(&t) else { return false };
            let (local, kind) = (*local, *kind);
            let (mut stream, remote) = match listener.accept() {
                Ok(x) => x,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) => {
                    warn!(%local, "accept: {e}");
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
            self.slots.insert(t, Slot::Conn(Conn { stream, id, out: OutQueue::default(), writable: false, connecting: false }));
            self.conn_tokens.insert(id, t);
            d.conn_opened(self, id, kind, local, remote);
        }
        true
    }

    fn read_conn(&mut self, d: &mut Driver, t: Token) -> bool {
        let mut chunk = [0u8; STREAM_CHUNK];
        for _ in 0..BATCH {
            let Some(Slot::Conn(c)) = self.slots.get_mut(&t) else { return false };
            let id = c.id;
            match c.stream.read(&mut chunk) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                r => {
                    if !d.conn_read(self, id, r.map(|n| &chunk[..n])) {
                        return false;
                    }
                }
            }
        }
        true
    }

    fn flush(&mut self, t: Token) {
        let Some(Slot::Conn(c)) = self.slots.get_mut(&t) else { return };
        if c.connecting {
            return;
        }
        let _ = c.out.write_to(&mut c.stream);
        let want = !c.out.is_empty();
        if want != c.writable {
            let interest = if want { Interest::READABLE | Interest::WRITABLE } else { Interest::READABLE };
            let _ = self.poll.registry().reregister(&mut c.stream, t, interest);
            c.writable = want;
        }
    }
}

impl Sockets for Io {
    fn send_datagram(&mut self, local: SocketAddr, remote: SocketAddr, data: &[u8]) {
        if let Some((s, _, out)) = self.udp.get_mut(&local) {
            if out.queue(s, remote, data) {
                self.queued.push(local);
            }
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

    fn close_stream(&mut self, id: ConnId) {
        let Some(t) = self.conn_tokens.remove(&id) else { return };
        self.flush(t);
        if let Some(Slot::Conn(mut c)) = self.slots.remove(&t) {
            let _ = self.poll.registry().deregister(&mut c.stream);
            let _ = c.stream.shutdown(std::net::Shutdown::Both);
        }
    }

    fn add_udp(&mut self, socket: UdpSocket, local: SocketAddr) -> bool {
        self.register_udp(socket, local).is_ok()
    }

    fn close_udp(&mut self, local: SocketAddr) {
        if let Some((s, t, mut out)) = self.udp.remove(&local) {
            // What it was told to send before it was released still goes.
            out.send(&s);
            let _ = self.poll.registry().deregister(&mut SourceFd(&s.as_raw_fd()));
            self.slots.remove(&t);
        }
    }

    fn add_listener(&mut self, listener: std::net::TcpListener, local: SocketAddr) -> bool {
        let mut listener = TcpListener::from_std(listener);
        let t = self.token();
        if self.poll.registry().register(&mut listener, t, Interest::READABLE).is_err() {
            return false;
        }
        self.slots.insert(t, Slot::Listener { listener, local, kind: ConnKind::RelayPeer });
        self.relay_listeners.insert(local, t);
        true
    }

    fn close_listener(&mut self, local: SocketAddr) {
        let Some(t) = self.relay_listeners.remove(&local) else { return };
        if let Some(Slot::Listener { mut listener, .. }) = self.slots.remove(&t) {
            let _ = self.poll.registry().deregister(&mut listener);
        }
    }

    fn add_stream(&mut self, stream: std::net::TcpStream, connecting: bool) -> Option<ConnId> {
        stream.set_nonblocking(true).ok()?;
        let mut stream = TcpStream::from_std(stream);
        let _ = stream.set_nodelay(true);
        let t = self.token();
        let interest = if connecting { Interest::READABLE | Interest::WRITABLE } else { Interest::READABLE };
        self.poll.registry().register(&mut stream, t, interest).ok()?;
        let id = ConnId(t.0 as u64);
        self.slots.insert(t, Slot::Conn(Conn { stream, id, out: OutQueue::default(), writable: connecting, connecting }));
        self.conn_tokens.insert(id, t);
        Some(id)
    }

    fn take_stream(&mut self, id: ConnId) -> Option<(std::net::TcpStream, Vec<u8>)> {
        let t = self.conn_tokens.remove(&id)?;
        let Some(Slot::Conn(mut c)) = self.slots.remove(&t) else { return None };
        let _ = self.poll.registry().deregister(&mut c.stream);
        let _ = c.out.write_to(&mut c.stream);
        let unsent = c.out.take_all();
        Some((std::net::TcpStream::from(c.stream), unsent))
    }
}
