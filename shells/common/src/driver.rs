//! The drive loop both shells share: feed the engine what the sockets
//! brought (dispatched by the [`Listeners`] table and the connection's
//! [`ConnKind`]), act on what it decides through the shell's [`Sockets`],
//! bind the relays it asks for, and keep its next deadline. A shell only
//! waits for readiness and moves bytes; the order of calls that the core's
//! drive contract asks for lives here, once.
//!
//! One `Driver` drives one engine and holds no global state, so a process
//! may run several, each with its own sockets.

use std::collections::VecDeque;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::time::Instant;

use switchboard_core::hash::Map;
use switchboard_core::turn::{PortRequest, RELAY_HEADROOM, RELAY_TAILROOM};
use switchboard_core::directory::WorkerId;
use switchboard_core::whip::{HttpRequest, WhipConfig};
use switchboard_core::{AllocationId, Client, ConnId, Family, Forward, Input, Output, Placement, Switchboard, Via};
use tracing::{debug, warn};

use crate::http::router::{self, Reply};
use crate::http::{Event, HttpConn};
use crate::limits::{Clocks, ConnLimits, Due, Wait};
use crate::recordings::Recorder;
use crate::listen::{ConnKind, ListenerKind, Listeners};
use crate::relay::RelayPorts;
use crate::sockets::{Sockets, BATCH};
use crate::tls::{Certs, TlsConn};
use crate::udp::RecvBatch;
use crate::workers::{Mail, StopReport, Worker, PUBLISH_EVERY};
use crate::Settings;

/// The largest datagram read (UDP's limit).
const MAX_DATAGRAM: usize = 65536;

/// A stream connection's state on this side.
enum Conn {
    /// TURN over TCP: the engine frames it.
    TurnStream,
    /// HTTP, possibly a WebSocket to signaling.
    Http(HttpConn),
}

/// The engine with the state that driving it needs: the listener table, its
/// receive buffer (with the head- and tailroom the relay path writes into),
/// relay binding, stream connections and the next deadline.
pub struct Driver {
    engine: Switchboard,
    listeners: Listeners,
    ports: RelayPorts,
    /// Relay sockets handed to the shell and not yet closed.
    relays: Map<SocketAddr, ()>,
    deadline: Option<Instant>,
    pending_binds: Vec<(AllocationId, Family, PortRequest)>,
    /// TCP relays (RFC 6062) to listen on, after this drain.
    pending_tcp_binds: Vec<(AllocationId, Family)>,
    /// TCP relay listeners handed to the shell and not yet closed.
    tcp_relays: Map<SocketAddr, ()>,
    /// Connections to peers under way, with the engine's name for each.
    connecting: Map<ConnId, u32>,
    /// Connections to peers that could not even start, reported after this drain.
    failed_connects: Vec<u32>,
    /// Where datagrams are read, a batch at a time ([`Driver::read_datagrams`]).
    batch: RecvBatch,
    conns: Map<ConnId, Conn>,
    /// The TLS session of each connection accepted on a TLS listener.
    tls: Map<ConnId, TlsConn>,
    /// The certificate TLS listeners present, if any.
    certs: Option<Certs>,
    /// Each stream connection's source address and what it waits for.
    clocks: Clocks,
    /// Caps on open connections (shared by the workers).
    limits: ConnLimits,
    /// Connections refused by a cap, and closed for waiting too long.
    conn_stats: ConnStats,
    /// WebSocket clients whose out-queue overflowed, closed after this drain.
    slow: Vec<ConnId>,
    /// HTTP connections whose deferred answer was written: their next requests are read after this drain.
    resume: Vec<ConnId>,
    /// The recording files this worker's SFU writes, if the server records.
    recorder: Option<Recorder>,
    /// Who may list and download recordings (the WHIP tokens and the REST secret).
    recordings_auth: WhipConfig,
    worker: Worker,
    /// Something happened since the counters were last published (workers 1..).
    dirty: bool,
    published_at: Instant,
}

/// What the driver counts of stream connections, beside the engine's counters.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
struct ConnStats {
    /// Refused at once: the server held `--max-connections`.
    refused_total: u64,
    /// Refused at once: their address held `--max-connections-per-ip`.
    refused_per_ip: u64,
    /// Closed for not sending a request head (or a TURN stream its first bytes) in time.
    header_timeouts: u64,
    /// Closed for idling (kept-alive HTTP, silent WebSockets).
    idle_timeouts: u64,
    /// WebSocket pings sent to quiet clients.
    pings: u64,
}

/// `/stats` on worker 0: its own engine live, the others as last published.
struct AllWorkers<'a> {
    engine: &'a Switchboard,
    worker: &'a Worker,
    conns: &'a ConnStats,
}

impl router::StatsView for AllWorkers<'_> {
    fn snapshots(&self) -> Vec<serde_json::Value> {
        let mut v = vec![snapshot(self.engine, self.conns)];
        v.extend((1..self.worker.count()).map(|i| self.worker.board.get(WorkerId(i))));
        v
    }
}

impl Driver {
    /// A driver for the engine of `worker` configured by `settings`, seeded
    /// from the OS, serving the (bound) `listeners`. The SFU's candidate names
    /// this worker's media port.
    pub fn new(settings: &Settings, listeners: Listeners, worker: Worker) -> Self {
        let seed = crate::os_seed();
        let mut config = settings.engine_config();
        config.placement = Placement { worker: worker.id, workers: worker.count() };
        if let (Some(sfu), Some(media)) = (&mut config.sfu, listeners.addr_of(ListenerKind::Media)) {
            sfu.media_addr.set_port(media.port());
        }
        let engine = Switchboard::new(config, Instant::now(), crate::unix_now(), &seed);
        Driver {
            engine,
            listeners,
            ports: RelayPorts::new(settings.relay_ips.clone(), settings.ports.0, settings.ports.1),
            relays: crate::new_map(),
            deadline: None,
            pending_binds: Vec::new(),
            pending_tcp_binds: Vec::new(),
            tcp_relays: crate::new_map(),
            connecting: crate::new_map(),
            failed_connects: Vec::new(),
            batch: RecvBatch::new(RELAY_HEADROOM, MAX_DATAGRAM, RELAY_TAILROOM),
            conns: crate::new_map(),
            tls: crate::new_map(),
            certs: settings.tls.as_ref().map(|t| t.certs.clone()),
            clocks: Clocks::new(settings.timeouts),
            limits: settings.conn_limits.clone(),
            conn_stats: ConnStats::default(),
            slow: Vec::new(),
            resume: Vec::new(),
            recorder: settings.record_dir.clone().map(Recorder::new),
            recordings_auth: WhipConfig { secret: settings.turn.static_auth_secret.clone(), ..settings.whip.clone() },
            worker,
            dirty: false,
            published_at: Instant::now(),
        }
    }

    /// Handles the mail other workers sent; true if asked to stop (then call
    /// [`Driver::shutdown`]).
    pub fn mail(&mut self, io: &mut impl Sockets) -> bool {
        let mut stop = false;
        // Bounded by what is there now: mail that keeps coming waits for the next wake.
        for _ in 0..4 * BATCH {
            match self.worker.try_recv() {
                Some(Mail::Room(ev)) => self.input(io, Input::RoomEvent(ev)),
                Some(Mail::Sfu { conn, msg }) => self.input(io, Input::SfuMessage { conn, msg }),
                Some(Mail::Adopt(a)) => self.adopt(io, *a),
                Some(Mail::Stop) => stop = true,
                Some(Mail::Wake) => {}
                None => return stop,
            }
        }
        // More is waiting: wake again rather than starve the sockets.
        self.worker.post.send(self.worker.id, Mail::Wake);
        stop
    }

    /// The engine, for its counters.
    pub fn engine(&self) -> &Switchboard {
        &self.engine
    }

    /// When [`Driver::on_timer`] is due next (`None`: nothing pending).
    pub fn deadline(&self) -> Option<Instant> {
        [self.deadline, self.publish_at(), self.clocks.next()].into_iter().flatten().min()
    }

    /// When the counters are to be published next (workers 1.., after a change).
    fn publish_at(&self) -> Option<Instant> {
        (self.dirty && self.worker.id.0 > 0).then(|| self.published_at + PUBLISH_EVERY)
    }

    /// Reads up to [`BATCH`] datagrams from the UDP socket bound at `local`
    /// with `recv` (a non-blocking [`udp::recv_batch`] on it, which takes
    /// many per system call where the OS allows) and handles each; true if
    /// more may be waiting. Stops when `recv` would block, or fails with
    /// `NotFound` (the socket was closed meanwhile). What the engine decides
    /// to send is handed to the shell's [`Sockets`], which may hold it for one
    /// batched send (see [`Sockets::send_datagram`]).
    pub fn read_datagrams<S: Sockets>(
        &mut self,
        io: &mut S,
        local: SocketAddr,
        mut recv: impl FnMut(&mut S, &mut RecvBatch) -> io::Result<usize>,
    ) -> bool {
        let mut more = true;
        let mut read = 0;
        // Which listener (if any) the socket is: the same for the whole batch.
        let kind = self.listeners.udp_kind_at(local);
        while read < BATCH {
            match recv(io, &mut self.batch) {
                Ok(n) => {
                    read += n;
                    let now = Instant::now();
                    for i in 0..n {
                        self.feed(io, now, local, kind, i);
                    }
                }
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::NotFound) => {
                    more = false;
                    break;
                }
                // Such as an ICMP error from an earlier send: the socket still works.
                Err(e) => {
                    debug!(%local, "udp recv: {e}");
                    read += 1;
                }
            }
        }
        // Media datagrams are drained once per batch: the SFU then drains each
        // participant it wrote to once, however many packets it was given.
        self.drain(io);
        more
    }

    /// Hands the `i`-th datagram of the batch, which came to the UDP socket
    /// bound at `local`, to the engine: STUN/TURN or media by the listener
    /// `kind`, else (no listener) it came to a relay. A media datagram's outputs are left for
    /// the next drain (the engine allows a batch of them; see
    /// [`Input::MediaDatagram`]); anything else is drained at once.
    fn feed(&mut self, io: &mut impl Sockets, now: Instant, local: SocketAddr, kind: Option<ListenerKind>, i: usize) {
        let (remote, len) = self.batch.meta(i);
        let buf = self.batch.slot_mut(i);
        let payload = RELAY_HEADROOM..RELAY_HEADROOM + len;
        let input = match kind {
            Some(ListenerKind::Media) => Input::MediaDatagram { remote, data: &buf[payload] },
            Some(_) => Input::Datagram { local, remote, buf, packet: payload },
            // The only other UDP sockets a shell reads are the relays it was given.
            None => Input::RelayDatagram { relay: local, peer: remote, buf, payload },
        };
        let media = matches!(input, Input::MediaDatagram { .. });
        // The forward's range indexes `buf`, whichever way the data goes.
        match self.engine.handle_input(now, input) {
            Forward::None => {}
            Forward::ToPeer(r) => io.send_datagram(r.relay, r.peer, &buf[r.range]),
            Forward::ToClient(r) => to_client(&mut self.tls, io, r.to, &buf[r.range]),
        }
        if !media {
            self.drain(io);
        }
    }

    /// A stream connection of `kind` was accepted on the listener at `local`.
    pub fn conn_opened(&mut self, io: &mut impl Sockets, conn: ConnId, kind: ConnKind, local: SocketAddr, remote: SocketAddr) {
        debug!(%remote, conn = conn.0, ?kind, "stream client connected");
        if let Err(why) = self.limits.try_open(remote.ip()) {
            match why {
                crate::limits::Refused::Total => self.conn_stats.refused_total += 1,
                crate::limits::Refused::PerAddress => self.conn_stats.refused_per_ip += 1,
            }
            debug!(%remote, ?why, "connection refused: at the cap");
            io.close_stream(conn);
            return;
        }
        self.clocks.open(conn, remote.ip(), Instant::now());
        if kind.tls() {
            match self.certs.as_ref().map(TlsConn::new) {
                Some(Ok(t)) => {
                    self.tls.insert(conn, t);
                }
                _ => {
                    io.close_stream(conn);
                    self.forget(conn);
                    return;
                }
            }
        }
        match kind {
            ConnKind::TurnStream | ConnKind::TurnTls => {
                self.conns.insert(conn, Conn::TurnStream);
                self.input(io, Input::StreamOpened { conn, local, remote });
            }
            ConnKind::Http | ConnKind::Https => {
                self.conns.insert(conn, Conn::Http(HttpConn::default()));
            }
            ConnKind::RelayPeer => {
                // A peer may say nothing until the client speaks: no first-bytes timeout.
                self.clocks.set(conn, Wait::Nothing);
                self.conns.insert(conn, Conn::TurnStream);
                self.input(io, Input::RelayStreamAccepted { relay: local, peer: remote, conn });
            }
        }
    }

    /// The outcome of a connection to a peer ([`Sockets::add_stream`] with `connecting`): open, or failed.
    pub fn conn_connected(&mut self, io: &mut impl Sockets, conn: ConnId, connected: bool) {
        let Some(connection) = self.connecting.remove(&conn) else { return };
        if connected {
            self.conns.insert(conn, Conn::TurnStream);
            self.input(io, Input::PeerConnected { connection, conn: Some(conn) });
        } else {
            io.close_stream(conn);
            self.input(io, Input::PeerConnected { connection, conn: None });
        }
    }

    /// A stream another worker handed over (a TCP relay data connection whose allocation is here).
    fn adopt(&mut self, io: &mut impl Sockets, a: crate::workers::Adopted) {
        let (local, remote) = match (a.stream.local_addr(), a.stream.peer_addr()) {
            (Ok(l), Ok(r)) => (l, r),
            _ => return,
        };
        if self.limits.try_open(remote.ip()).is_err() {
            return;
        }
        let Some(conn) = io.add_stream(a.stream, false) else {
            self.limits.release(remote.ip());
            return;
        };
        self.clocks.open(conn, remote.ip(), Instant::now());
        self.clocks.set(conn, Wait::Nothing);
        if let Some(t) = a.tls {
            self.tls.insert(conn, t);
        }
        if !a.unsent.is_empty() {
            let _ = io.send_stream(conn, &a.unsent);
        }
        self.conns.insert(conn, Conn::TurnStream);
        self.input(io, Input::StreamOpened { conn, local, remote });
        self.input(io, Input::StreamData { conn, data: &a.pending });
    }

    /// Gives stream `conn` to worker `to`, with its unhandled bytes: it is no longer this worker's.
    fn hand_off(&mut self, io: &mut impl Sockets, conn: ConnId, to: WorkerId, pending: Vec<u8>) {
        let tls = self.tls.remove(&conn);
        self.conns.remove(&conn);
        self.forget(conn);
        let Some((stream, unsent)) = io.take_stream(conn) else { return };
        if to.0 >= self.worker.count() {
            // A CONNECTION-ID naming no worker: nobody holds it.
            return;
        }
        debug!(conn = conn.0, worker = to.0, "stream handed over");
        self.worker.post.send(to, Mail::Adopt(Box::new(crate::workers::Adopted { stream, tls, pending, unsent })));
    }

    /// Bytes arrived on a stream connection (through its TLS session, if it has one).
    pub fn conn_data(&mut self, io: &mut impl Sockets, conn: ConnId, data: &[u8]) {
        let plain;
        let data = match self.tls.get_mut(&conn) {
            None => data,
            Some(t) => {
                let mut p = Vec::new();
                let read = t.read(data, &mut p);
                let mut out = Vec::new();
                t.take_output(&mut out);
                if !out.is_empty() {
                    let _ = io.send_stream(conn, &out);
                }
                if let Err(e) = read {
                    debug!(conn = conn.0, "tls: {e}");
                    self.close_conn(io, conn);
                    return;
                }
                plain = p;
                &plain[..]
            }
        };
        if data.is_empty() {
            return;
        }
        match self.conns.get(&conn) {
            Some(Conn::TurnStream) => {
                // It spoke: from now on its allocation's lifetime governs it.
                self.clocks.set(conn, Wait::Nothing);
                self.input(io, Input::StreamData { conn, data });
            }
            Some(Conn::Http(_)) => self.http_data(io, conn, data),
            None => {}
        }
    }

    /// A connection is gone: its timer goes and its slot under the caps is given back.
    fn forget(&mut self, conn: ConnId) {
        if let Some(ip) = self.clocks.remove(conn) {
            self.limits.release(ip);
        }
    }

    /// A stream connection ended (end of stream or an error); the shell has
    /// already closed it.
    pub fn conn_closed(&mut self, io: &mut impl Sockets, conn: ConnId) {
        debug!(conn = conn.0, "stream client closed");
        self.tls.remove(&conn);
        self.forget(conn);
        match self.conns.remove(&conn) {
            Some(Conn::TurnStream) => self.input(io, Input::StreamClosed { conn }),
            Some(Conn::Http(h)) if h.is_websocket() => self.input(io, Input::SignalClosed { conn }),
            _ => {}
        }
    }

    /// The outcome of one read from a stream connection: data is handed on;
    /// end of stream or a hard error closes the connection. Returns whether
    /// it is still open (a read that would block, or was interrupted, leaves
    /// it open).
    pub fn conn_read(&mut self, io: &mut impl Sockets, conn: ConnId, read: io::Result<&[u8]>) -> bool {
        match read {
            Ok(data) if !data.is_empty() => self.conn_data(io, conn, data),
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => {}
            _ => {
                // End of stream or a hard error: the client is gone.
                self.close_conn(io, conn);
                return false;
            }
        }
        true
    }

    /// Bytes on an HTTP connection: requests are routed, WebSocket messages go to signaling.
    fn http_data(&mut self, io: &mut impl Sockets, conn: ConnId, data: &[u8]) {
        let Some(Conn::Http(h)) = self.conns.get_mut(&conn) else { return };
        let mut events = Vec::new();
        h.feed(data, &mut events);
        let answered = events.iter().any(|e| matches!(e, Event::Request(_)));
        let mut events: VecDeque<Event> = events.into();
        while let Some(ev) = events.pop_front() {
            let mut more = Vec::new();
            match ev {
                Event::Request(req) if crate::recordings::is_listing(&req) => {
                    let dir = self.recorder.as_ref().map(Recorder::dir);
                    let r = crate::recordings::reply(dir, &self.recordings_auth, &req);
                    let Some(Conn::Http(h)) = self.conns.get_mut(&conn) else { return };
                    h.respond(r.status, r.content_type, &r.body, r.close, &mut more);
                }
                Event::Request(req) => {
                    let view = AllWorkers { engine: &self.engine, worker: &self.worker, conns: &self.conn_stats };
                    let reply = router::route(req, &view);
                    let Some(Conn::Http(h)) = self.conns.get_mut(&conn) else { return };
                    match reply {
                        Reply::Signaling(key) => {
                            h.upgrade(&key, &mut more);
                            self.input(io, Input::SignalOpened { conn });
                        }
                        Reply::Respond(r) => h.respond(r.status, r.content_type, &r.body, r.close, &mut more),
                        Reply::Engine(req) => {
                            // Answered by the engine, maybe after the SFU (on another worker) answered the offer.
                            h.defer();
                            let request = HttpRequest {
                                method: &req.method,
                                path: &req.path,
                                query: &req.query,
                                authorization: req.authorization.as_deref(),
                                content_type: req.content_type.as_deref(),
                                if_match: req.if_match.as_deref(),
                                body: &req.body,
                            };
                            self.input(io, Input::Http { conn, request });
                        }
                    }
                }
                Event::BadRequest => {
                    let Some(Conn::Http(h)) = self.conns.get_mut(&conn) else { return };
                    let r = router::bad_request();
                    h.respond(r.status, r.content_type, &r.body, r.close, &mut more);
                }
                Event::Text(text) => self.input(io, Input::SignalText { conn, text: &text }),
                Event::Closed => self.input(io, Input::SignalClosed { conn }),
            }
            events.extend(more);
        }
        self.rewind(conn, answered);
        self.flush_http(io, conn);
    }

    /// What an HTTP connection waits for after bytes arrived on it (`answered`:
    /// they completed a request): a WebSocket any frame; a kept-alive one its
    /// next request, with the header timeout once that has begun.
    fn rewind(&mut self, conn: ConnId, answered: bool) {
        let Some(Conn::Http(h)) = self.conns.get(&conn) else { return };
        let now = Instant::now();
        let wait = match self.clocks.wait(conn) {
            _ if h.is_websocket() => Wait::WebSocket { last: now, pinged: false },
            _ if h.head_pending() && answered => Wait::Head(now),
            _ if answered => Wait::KeepAlive(now),
            Some(Wait::KeepAlive(_)) if h.head_pending() => Wait::Head(now),
            Some(w) => w,
            None => return,
        };
        self.clocks.set(conn, wait);
    }

    /// Writes what an HTTP connection has to send, and closes it when it is done.
    fn flush_http(&mut self, io: &mut impl Sockets, conn: ConnId) {
        let Some(Conn::Http(h)) = self.conns.get_mut(&conn) else { return };
        let out = h.take_output();
        let overflow = !out.is_empty() && !stream_send(&mut self.tls, io, conn, &out);
        if h.is_done() || overflow {
            self.close_conn(io, conn);
        }
    }

    /// Closes a stream connection from this side (saying goodbye in TLS if it
    /// has a session) and forgets it as [`Driver::conn_closed`] does: a
    /// WebSocket's close is a leave, so a client too slow to take its messages
    /// is disconnected rather than silently missing some, and the others get `bye`.
    fn close_conn(&mut self, io: &mut impl Sockets, conn: ConnId) {
        close_stream(&mut self.tls, io, conn);
        self.conn_closed(io, conn);
    }

    /// Call when the deadline may have passed. Timers wake late or early, so
    /// this checks the clock and does nothing when it is not yet time.
    pub fn on_timer(&mut self, io: &mut impl Sockets) {
        let now = Instant::now();
        if self.deadline.is_some_and(|d| d <= now) {
            self.input(io, Input::Timeout);
        }
        if self.clocks.next().is_some_and(|d| d <= now) {
            self.expire_conns(io, now);
        }
        if self.publish_at().is_some_and(|p| p <= now) {
            self.worker.board.publish(self.worker.id, snapshot(&self.engine, &self.conn_stats));
            self.dirty = false;
            self.published_at = now;
        }
    }

    /// Closes the connections that waited too long, and pings quiet WebSockets.
    fn expire_conns(&mut self, io: &mut impl Sockets, now: Instant) {
        let mut due = Vec::new();
        self.clocks.expired(now, &mut due);
        for (conn, what) in due {
            match what {
                Due::Ping => {
                    if let Some(Conn::Http(h)) = self.conns.get_mut(&conn) {
                        h.send_ping();
                        self.conn_stats.pings += 1;
                        self.flush_http(io, conn);
                    }
                }
                Due::Close => {
                    match self.clocks.wait(conn) {
                        Some(Wait::Head(_)) => self.conn_stats.header_timeouts += 1,
                        _ => self.conn_stats.idle_timeouts += 1,
                    }
                    debug!(conn = conn.0, "closing a connection that waited too long");
                    self.close_conn(io, conn);
                }
            }
        }
    }

    /// Called once at start, before any input.
    pub fn start(&mut self, io: &mut impl Sockets) {
        self.drain(io);
    }

    /// Graceful stop: ends every allocation and stream, releases the relays,
    /// closes every connection, and reports what was done.
    pub fn shutdown(&mut self, io: &mut impl Sockets) -> StopReport {
        let allocations = self.engine.turn().allocation_count();
        self.engine.shutdown(Instant::now());
        self.drain(io);
        let conns: Vec<ConnId> = self.conns.drain().map(|(c, _)| c).collect();
        for conn in conns {
            close_stream(&mut self.tls, io, conn);
            self.forget(conn);
        }
        let stats = self.engine.stats();
        let report = StopReport {
            allocations_released: allocations,
            relays_open: self.relays.len(),
            relayed_packets: stats.turn.to_peer_packets + stats.turn.to_client_packets,
            forwarded_packets: stats.sfu.forwarded_packets,
        };
        debug!(worker = self.worker.id.0, ?report, "worker stopped");
        report
    }

    /// Any input but a datagram (those go through [`Driver::feed`]), then the drain.
    fn input(&mut self, io: &mut impl Sockets, input: Input<'_>) {
        // Only a datagram is forwarded on input; nothing else has bytes to forward.
        let fwd = self.engine.handle_input(Instant::now(), input);
        debug_assert_eq!(fwd, Forward::None);
        self.drain(io);
    }

    /// Drains the engine's outputs (the drive contract), then binds any relays it asked for.
    fn drain(&mut self, io: &mut impl Sockets) {
        loop {
            loop {
                match self.engine.poll_output() {
                    Output::Transmit(t) => to_client(&mut self.tls, io, t.to, &t.payload),
                    Output::ToPeer { relay, peer, payload } => io.send_datagram(relay, peer, payload),
                    Output::BindRelay { allocation, family, port } => self.pending_binds.push((allocation, family, port)),
                    Output::BindTcpRelay { allocation, family } => self.pending_tcp_binds.push((allocation, family)),
                    Output::ConnectPeer { relay, peer, connection } => {
                        match crate::relay::connect_from(relay, peer).ok().and_then(|s| io.add_stream(s, true)) {
                            Some(conn) => {
                                self.connecting.insert(conn, connection);
                            }
                            None => self.failed_connects.push(connection),
                        }
                    }
                    // A byte stream must not lose a piece: one that cannot take it is closed.
                    Output::ToStream { conn, data } if !stream_send(&mut self.tls, io, conn, data) => self.slow.push(conn),
                    Output::HandOff { conn, worker, pending } => self.hand_off(io, conn, worker, pending),
                    Output::ReleaseRelay { allocation, relay } => {
                        if self.relays.remove(&relay).is_some() {
                            io.close_udp(relay);
                        } else if self.tcp_relays.remove(&relay).is_some() {
                            io.close_listener(relay);
                        } else {
                            // An unused reservation.
                            drop(self.worker.parked.take(relay));
                        }
                        debug!(%allocation, %relay, "relay released");
                    }
                    Output::CloseStream(id) => {
                        self.conns.remove(&id);
                        close_stream(&mut self.tls, io, id);
                        self.forget(id);
                    }
                    Output::MediaTransmit { to, data } => {
                        if let Some(media) = self.listeners.addr_of(ListenerKind::Media) {
                            io.send_datagram(media, to, &data);
                        }
                    }
                    Output::SignalSend(m) => {
                        if let Some(Conn::Http(h)) = self.conns.get_mut(&m.conn) {
                            h.send_text(m.text);
                            let out = h.take_output();
                            if !stream_send(&mut self.tls, io, m.conn, &out) {
                                self.slow.push(m.conn);
                            }
                        }
                    }
                    Output::Record { file, op } => {
                        if let Some(r) = &mut self.recorder {
                            r.apply(file, op);
                        }
                    }
                    Output::HttpResponse { conn, response } => {
                        if let Some(Conn::Http(h)) = self.conns.get_mut(&conn) {
                            let status = format!("{} {}", response.status, response.reason());
                            let headers: Vec<(&str, &str)> = response.headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
                            let mut more = Vec::new();
                            h.respond_with(&status, &headers, &response.body, false, &mut more);
                            self.flush_http(io, conn);
                            // Requests that waited behind it are read now.
                            self.resume.push(conn);
                        }
                    }
                    Output::ToWorker { worker, event } => self.worker.post.send(worker, Mail::Room(event)),
                    Output::ToSignaling { conn, msg } => self.worker.post.send(WorkerId(0), Mail::Sfu { conn, msg }),
                    Output::Timeout(at) => {
                        self.deadline = at;
                        self.dirty = true;
                        break;
                    }
                    _ => {}
                }
            }
            for conn in std::mem::take(&mut self.slow) {
                self.close_conn(io, conn);
            }
            for conn in std::mem::take(&mut self.resume) {
                self.http_data(io, conn, &[]);
            }
            let mut fed = false;
            for connection in std::mem::take(&mut self.failed_connects) {
                let fwd = self.engine.handle_input(Instant::now(), Input::PeerConnected { connection, conn: None });
                debug_assert_eq!(fwd, Forward::None);
                fed = true;
            }
            for (allocation, family) in std::mem::take(&mut self.pending_tcp_binds) {
                let bound = self.bind_tcp_relay(io, family);
                let fwd = self.engine.handle_input(Instant::now(), Input::RelayBound { allocation, bound, reserved: None });
                debug_assert_eq!(fwd, Forward::None);
                fed = true;
            }
            if self.pending_binds.is_empty() {
                if fed {
                    // What those inputs decided is drained on the next pass.
                    continue;
                }
                return;
            }
            for (allocation, family, port) in std::mem::take(&mut self.pending_binds) {
                let (bound, reserved) = self.bind_relay(io, family, port);
                if bound.is_none() {
                    warn!(%allocation, ?family, "no relay socket could be bound");
                }
                let fwd = self.engine.handle_input(Instant::now(), Input::RelayBound { allocation, bound, reserved });
                debug_assert_eq!(fwd, Forward::None);
            }
        }
    }

    /// Listens on a TCP relay (RFC 6062) of `family`: its address, or `None`.
    fn bind_tcp_relay(&mut self, io: &mut impl Sockets, family: Family) -> Option<SocketAddr> {
        let ip = self.ports.ip(family)?;
        let listener = match self.ports.bind_tcp(ip) {
            Ok(l) => l,
            Err(e) => {
                warn!(%ip, "bind tcp relay: {e}");
                return None;
            }
        };
        let addr = listener.local_addr().ok()?;
        io.add_listener(listener, addr).then(|| self.tcp_relays.insert(addr, ())).map(|_| addr)
    }

    /// Binds what the core asked for: the relay address, and for an even
    /// pair the reserved one, which is parked (open, not read) where any
    /// worker can take it: the Allocate that redeems its token may land on
    /// another worker.
    fn bind_relay(&mut self, io: &mut impl Sockets, family: Family, port: PortRequest) -> (Option<SocketAddr>, Option<SocketAddr>) {
        let relays = &mut self.relays;
        let mut add = |s: UdpSocket, addr: SocketAddr| io.add_udp(s, addr).then(|| relays.insert(addr, ())).map(|_| addr);
        if let PortRequest::Reserved(addr) = port {
            return (self.worker.parked.take(addr).and_then(|s| add(s, addr)), None);
        }
        let Some(ip) = self.ports.ip(family) else {
            return (None, None);
        };
        let (first, second) = match self.ports.bind(ip, port) {
            Ok(x) => x,
            Err(e) => {
                warn!(%ip, "bind relay: {e}");
                return (None, None);
            }
        };
        let bound = first.local_addr().ok().and_then(|addr| add(first, addr));
        let reserved = second.and_then(|s| {
            let addr = s.local_addr().ok()?;
            self.worker.parked.park(addr, s);
            Some(addr)
        });
        debug!(?bound, ?reserved, "relay bound");
        (bound, reserved)
    }
}

/// One worker's `/stats` snapshot: the engine's counters and the connections'.
fn snapshot(engine: &Switchboard, conns: &ConnStats) -> serde_json::Value {
    let mut v = router::snapshot(engine);
    if let Some(m) = v.as_object_mut() {
        m.insert("connections".into(), serde_json::to_value(conns).unwrap_or_default());
    }
    v
}

/// Sends on a stream connection, through its TLS session if it has one;
/// false if the shell's queue for it overflowed.
fn stream_send(tls: &mut Map<ConnId, TlsConn>, io: &mut impl Sockets, conn: ConnId, data: &[u8]) -> bool {
    let Some(t) = tls.get_mut(&conn) else { return io.send_stream(conn, data) };
    t.write(data);
    let mut out = Vec::new();
    t.take_output(&mut out);
    out.is_empty() || io.send_stream(conn, &out)
}

/// Sends to a STUN/TURN client: a datagram, or on its stream (TCP or TLS).
fn to_client(tls: &mut Map<ConnId, TlsConn>, io: &mut impl Sockets, to: Client, data: &[u8]) {
    match to.via {
        Via::Udp(local) => io.send_datagram(local, to.remote, data),
        // A client that does not read loses messages, as over UDP.
        Via::Tcp(conn) => {
            let _ = stream_send(tls, io, conn, data);
        }
    }
}

/// Closes a stream connection, saying goodbye in TLS first if it has a session.
fn close_stream(tls: &mut Map<ConnId, TlsConn>, io: &mut impl Sockets, conn: ConnId) {
    if let Some(mut t) = tls.remove(&conn) {
        t.close();
        let mut out = Vec::new();
        t.take_output(&mut out);
        let _ = io.send_stream(conn, &out);
    }
    io.close_stream(conn);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records what the driver sends.
    #[derive(Default)]
    struct Recorder {
        datagrams: Vec<(SocketAddr, SocketAddr, Vec<u8>)>,
        streams: Vec<(ConnId, Vec<u8>)>,
    }

    impl Sockets for Recorder {
        fn send_datagram(&mut self, local: SocketAddr, remote: SocketAddr, data: &[u8]) {
            self.datagrams.push((local, remote, data.to_vec()));
        }
        fn send_stream(&mut self, conn: ConnId, data: &[u8]) -> bool {
            self.streams.push((conn, data.to_vec()));
            true
        }
        fn close_stream(&mut self, _: ConnId) {}
        fn add_udp(&mut self, _: UdpSocket, _: SocketAddr) -> bool {
            true
        }
        fn close_udp(&mut self, _: SocketAddr) {}
        fn add_listener(&mut self, _: std::net::TcpListener, _: SocketAddr) -> bool {
            true
        }
        fn close_listener(&mut self, _: SocketAddr) {}
        fn add_stream(&mut self, _: std::net::TcpStream, _: bool) -> Option<ConnId> {
            None
        }
        fn take_stream(&mut self, _: ConnId) -> Option<(std::net::TcpStream, Vec<u8>)> {
            None
        }
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    /// A STUN Binding request (RFC 8489), which the engine answers on the transport it came on.
    const BINDING: [u8; 20] = [0, 1, 0, 0, 0x21, 0x12, 0xa4, 0x42, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12];

    fn driver() -> Driver {
        let settings = crate::ServeArgs::default().resolve().unwrap();
        let mut table = Listeners::default();
        table.push(ListenerKind::TurnUdp, addr("127.0.0.1:3478"));
        table.push(ListenerKind::TurnUdp, addr("127.0.0.2:3478"));
        table.push(ListenerKind::Media, addr("127.0.0.1:7882"));
        Driver::new(&settings, table, Worker::alone())
    }

    fn receive(d: &mut Driver, io: &mut Recorder, local: &str, remote: &str, data: &[u8]) {
        let mut once = Some((addr(remote), data));
        d.read_datagrams(io, addr(local), |_, batch| match once.take() {
            Some((from, data)) => {
                batch.hold_one(from, data);
                Ok(1)
            }
            None => Err(io::ErrorKind::WouldBlock.into()),
        });
    }

    #[test]
    fn datagrams_are_dispatched_by_listener_and_answered_from_it() {
        let mut d = driver();
        let mut io = Recorder::default();
        d.start(&mut io);
        receive(&mut d, &mut io, "127.0.0.2:3478", "10.0.0.1:5000", &BINDING);
        let (local, remote, reply) = io.datagrams.pop().expect("a STUN listener answers a Binding request");
        assert_eq!((local, remote), (addr("127.0.0.2:3478"), addr("10.0.0.1:5000")), "the reply leaves from the listener it came to");
        assert_eq!(&reply[..2], &[1, 1], "a Binding success response");
        receive(&mut d, &mut io, "127.0.0.1:3478", "10.0.0.1:5000", &BINDING);
        assert_eq!(io.datagrams.pop().unwrap().0, addr("127.0.0.1:3478"));
        // To the media socket the same bytes are the SFU's (no such participant: dropped), and
        // to an address that is no listener they came to a relay (no such allocation: dropped).
        receive(&mut d, &mut io, "127.0.0.1:7882", "10.0.0.1:5000", &BINDING);
        receive(&mut d, &mut io, "127.0.0.1:50000", "10.0.0.1:5000", &BINDING);
        assert!(io.datagrams.is_empty());
        assert_eq!(d.engine().stats().turn.stun.binding_requests, 2);
    }

    #[test]
    fn connections_are_dispatched_by_kind() {
        let mut d = driver();
        let mut io = Recorder::default();
        let (local, remote) = (addr("127.0.0.1:3478"), addr("10.0.0.1:5000"));
        d.conn_opened(&mut io, ConnId(1), ConnKind::TurnStream, local, remote);
        d.conn_opened(&mut io, ConnId(2), ConnKind::Http, addr("127.0.0.1:8080"), remote);
        assert!(d.conn_read(&mut io, ConnId(1), Ok(&BINDING)));
        assert!(d.conn_read(&mut io, ConnId(2), Ok(b"GET /healthz HTTP/1.1\r\n\r\n")));
        let (conn, reply) = io.streams.remove(0);
        assert_eq!((conn, &reply[..2]), (ConnId(1), &[1u8, 1][..]), "STUN over TCP answered on its stream");
        let (conn, reply) = io.streams.remove(0);
        assert_eq!(conn, ConnId(2));
        assert!(reply.starts_with(b"HTTP/1.1 200 OK") && reply.ends_with(b"ok\n"));
        // End of stream closes either kind.
        assert!(!d.conn_read(&mut io, ConnId(1), Ok(&[])));
        assert!(!d.conn_read(&mut io, ConnId(2), Err(io::ErrorKind::ConnectionReset.into())));
        assert_eq!(d.engine().stats().streams, 0);
    }
}
