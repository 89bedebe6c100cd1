//! The whole server as one state machine: [`Switchboard`].
//!
//! It composes the parts (the STUN/TURN server, signaling and, with the `sfu`
//! feature, the SFU) behind one [`Input`] and one [`Output`], and does the
//! framing of stream (TCP) clients so that shells only move bytes. Signaling
//! and the SFU do not know each other: the engine hands signaling's
//! [`signal::RoomEvent`]s to the SFU, and the SFU's messages to signaling,
//! which encodes and counts everything that goes on a WebSocket.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::ops::Range;
use std::time::Instant;

use crate::hash::{self, Map};

#[cfg(feature = "sfu")]
use crate::directory::{LocalDirectory, RoomDirectory};
use crate::directory::WorkerId;
use crate::framing::{StreamFramer, MAX_FRAME};
use crate::ids::{AllocationId, Client, ConnId, Family, Via};
use crate::rng::Seed;
#[cfg(feature = "sfu")]
use crate::sfu::{RoomStats, Sfu, SfuConfig, SfuError, SfuMessage, SfuOutput, SfuStats};
#[cfg(feature = "sfu")]
use crate::signal::{ErrorCode, ServerMsg};
#[cfg(feature = "sfu")]
use crate::whip::{self, HttpRequest, HttpResponse, Sessions, WhipConfig, WhipStats};
use crate::signal::{self, RoomEvent, SignalConfig, SignalStats, Signaling};
use crate::time::Monotonic;
use crate::turn::{self, ClientRoute, PeerRoute, PortRequest, StreamLink, TurnConfig, TurnServer, TurnStats};

/// Configuration of the whole engine.
#[derive(Debug, Clone, Default)]
pub struct Config {
    /// The STUN/TURN server.
    pub turn: TurnConfig,
    /// The signaling server. When its `turn_secret` is `None`, the TURN
    /// server's REST secret is used, so handed-out credentials work.
    pub signal: SignalConfig,
    /// The SFU, if media is served (then `sfu` rooms can be joined).
    #[cfg(feature = "sfu")]
    pub sfu: Option<SfuConfig>,
    /// Which of the process's engines this is, when it runs one per worker thread.
    pub placement: Placement,
    /// WHIP and WHEP (served by worker 0). When its `secret` is `None`, the
    /// TURN server's REST secret checks REST tokens.
    #[cfg(feature = "sfu")]
    pub whip: WhipConfig,
}

/// Where an engine stands among the engines of one process (one per worker
/// thread). Worker 0 hosts signaling (the shell gives it the HTTP listener)
/// and decides where each SFU room lives, with a [`LocalDirectory`]: a room
/// placed on another worker is handed there as [`Output::ToWorker`], and
/// that worker's SFU answers its participants through
/// [`Output::ToSignaling`]. One engine alone is worker 0 of 1 and does
/// everything itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement {
    /// This engine's worker.
    pub worker: WorkerId,
    /// How many workers the process runs (at least 1).
    pub workers: usize,
}

impl Default for Placement {
    fn default() -> Self {
        Placement { worker: WorkerId(0), workers: 1 }
    }
}

/// One input to the engine. Every variant is handled by [`Switchboard::handle_input`].
#[derive(Debug)]
#[non_exhaustive]
pub enum Input<'a> {
    /// A datagram that arrived on the UDP listener bound at `local`: the
    /// bytes `buf[packet]`. A [`Forward::ToPeer`] it returns is a range of `buf`.
    Datagram {
        /// The listener's local address.
        local: SocketAddr,
        /// The sender.
        remote: SocketAddr,
        /// The receive buffer.
        buf: &'a [u8],
        /// Where the datagram lies in `buf`.
        packet: Range<usize>,
    },
    /// A datagram from `peer` on the relay socket bound at `relay`. The
    /// payload is `buf[payload]`, with at least [`turn::RELAY_HEADROOM`] bytes
    /// free before it and [`turn::RELAY_TAILROOM`] after, where the engine
    /// writes the framing for the client.
    RelayDatagram {
        /// The relay socket's local address.
        relay: SocketAddr,
        /// The sender.
        peer: SocketAddr,
        /// The receive buffer.
        buf: &'a mut [u8],
        /// Where the payload lies in `buf`.
        payload: Range<usize>,
    },
    /// A stream connection was accepted.
    StreamOpened {
        /// The shell's handle for it.
        conn: ConnId,
        /// The listener's local address.
        local: SocketAddr,
        /// The client's address.
        remote: SocketAddr,
    },
    /// Bytes arrived on a stream connection. Every complete frame in them is
    /// handled now; relayed data comes out as [`Output::ToPeer`].
    StreamData {
        /// The connection.
        conn: ConnId,
        /// The bytes, in order.
        data: &'a [u8],
    },
    /// A stream connection closed (either side, or an error).
    StreamClosed {
        /// The connection.
        conn: ConnId,
    },
    /// A peer connected to a TCP relay listener ([`Output::BindTcpRelay`]) bound at `relay`; the shell
    /// accepted it as stream `conn` (RFC 6062). Its bytes come as [`Input::StreamData`].
    RelayStreamAccepted {
        /// The TCP relay's address.
        relay: SocketAddr,
        /// The peer.
        peer: SocketAddr,
        /// The shell's handle for the new stream.
        conn: ConnId,
    },
    /// The answer to [`Output::ConnectPeer`]: the new stream connection to the peer, or `None` if it could
    /// not be opened.
    PeerConnected {
        /// The connection it was for.
        connection: u32,
        /// The stream, connected.
        conn: Option<ConnId>,
    },
    /// The answer to [`Output::BindRelay`]: the bound address, or `None` on failure.
    RelayBound {
        /// The allocation it was for.
        allocation: AllocationId,
        /// The bound local address.
        bound: Option<SocketAddr>,
        /// For [`PortRequest::EvenPair`]: the reserved socket at port + 1.
        reserved: Option<SocketAddr>,
    },
    /// A signaling connection (a WebSocket) opened.
    SignalOpened {
        /// The shell's handle for it.
        conn: ConnId,
    },
    /// A text message arrived on a signaling connection.
    SignalText {
        /// The connection.
        conn: ConnId,
        /// The message.
        text: &'a str,
    },
    /// A signaling connection closed (counts as leaving its room).
    SignalClosed {
        /// The connection.
        conn: ConnId,
    },
    /// A datagram on the SFU's media socket. Unlike other inputs, a batch of
    /// these may be fed before draining (what they decide is owned, never a
    /// borrow of the buffer): the SFU then drains each participant it wrote
    /// to once per batch rather than once per datagram.
    MediaDatagram {
        /// The sender.
        remote: SocketAddr,
        /// The datagram.
        data: &'a [u8],
    },
    /// A room event that worker 0 placed on this worker ([`Output::ToWorker`]).
    RoomEvent(RoomEvent),
    /// A WHIP or WHEP request (`/whip/...`, `/whep/...`, see [`whip::is_media_path`])
    /// on HTTP connection `conn`, for worker 0. Its answer comes out as
    /// [`Output::HttpResponse`], at once or when the SFU answered the offer.
    #[cfg(feature = "sfu")]
    Http {
        /// The HTTP connection.
        conn: ConnId,
        /// The request.
        request: HttpRequest<'a>,
    },
    /// What another worker's SFU says to a participant ([`Output::ToSignaling`]),
    /// for signaling on worker 0 to send.
    #[cfg(feature = "sfu")]
    SfuMessage {
        /// The participant's signaling connection.
        conn: ConnId,
        /// The message.
        msg: SfuMessage,
    },
    /// Time passed; expire whatever is due.
    Timeout,
}

/// What to do with the datagram just handed in, decided at once so that
/// relayed data is never copied or queued. Its range indexes the buffer of
/// that input, whichever way the data goes.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use = "a Forward carries relayed data that must be sent"]
pub enum Forward {
    /// Nothing to forward.
    None,
    /// Send `buf[range]` of [`Input::Datagram`] to a peer (see [`PeerRoute`]).
    ToPeer(PeerRoute),
    /// Send `buf[range]` of [`Input::RelayDatagram`] to a client (see [`ClientRoute`]).
    ToClient(ClientRoute),
}

/// One output of the engine; see [`Switchboard::poll_output`].
#[derive(Debug)]
#[non_exhaustive]
pub enum Output<'a> {
    /// Send a control message to a client.
    Transmit(turn::Transmit),
    /// Send `payload` from the relay socket bound at `relay` to `peer`
    /// (data that a stream client sent in ChannelData or a Send indication).
    ToPeer {
        /// The relay socket's local address.
        relay: SocketAddr,
        /// The peer.
        peer: SocketAddr,
        /// The payload, borrowed from the stream's reassembly buffer (so it
        /// was not copied again); valid until the next input.
        payload: &'a [u8],
    },
    /// Bind a UDP relay socket, then answer with [`Input::RelayBound`].
    BindRelay {
        /// The allocation it is for.
        allocation: AllocationId,
        /// The address family wanted.
        family: Family,
        /// Which port.
        port: PortRequest,
    },
    /// Close the relay socket bound at `relay`.
    ReleaseRelay {
        /// The allocation it belonged to.
        allocation: AllocationId,
        /// Its local address.
        relay: SocketAddr,
    },
    /// Listen on a TCP relay socket of `family` (RFC 6062), then answer with
    /// [`Input::RelayBound`]. Bind it with SO_REUSEADDR and SO_REUSEPORT: its
    /// address is also the source of [`Output::ConnectPeer`] connections.
    BindTcpRelay {
        /// The allocation it is for.
        allocation: AllocationId,
        /// The address family wanted.
        family: Family,
    },
    /// Open a TCP connection from the TCP relay address `relay` to `peer`,
    /// then answer with [`Input::PeerConnected`].
    ConnectPeer {
        /// The source address: the TCP relay's.
        relay: SocketAddr,
        /// Where to.
        peer: SocketAddr,
        /// Name it with this in [`Input::PeerConnected`].
        connection: u32,
    },
    /// Send `data` on stream connection `conn` as it is (bytes of a TCP relay,
    /// RFC 6062). If its queue cannot take them, close it and report
    /// [`Input::StreamClosed`]: a byte stream must not lose a piece.
    ToStream {
        /// The stream connection.
        conn: ConnId,
        /// The bytes, borrowed from the other stream's buffer; valid until the next input.
        data: &'a [u8],
    },
    /// Stream `conn` belongs to worker `worker` (a TCP relay data connection
    /// that the kernel gave to this worker): stop reading it here, and give
    /// it to that worker, which feeds its engine [`Input::StreamOpened`] and
    /// then [`Input::StreamData`] with `pending` (what was read of it so far,
    /// decrypted).
    HandOff {
        /// The stream connection (forgotten by this engine).
        conn: ConnId,
        /// The worker it goes to.
        worker: WorkerId,
        /// Its bytes read so far and not handled.
        pending: Vec<u8>,
    },
    /// Close this stream connection (its byte stream cannot be framed, or a TCP relay connection ended).
    CloseStream(ConnId),
    /// Send a text message on a signaling connection.
    SignalSend(signal::Send),
    /// Send a datagram from the SFU's media socket.
    MediaTransmit {
        /// Destination.
        to: SocketAddr,
        /// The datagram.
        data: Vec<u8>,
    },
    /// Hand this event to worker `worker`'s engine as [`Input::RoomEvent`]:
    /// its SFU hosts the room. Events of one connection keep their order.
    ToWorker {
        /// The worker hosting the room.
        worker: WorkerId,
        /// The event.
        event: RoomEvent,
    },
    /// Hand this message to worker 0's engine as [`Input::SfuMessage`]: it
    /// holds the participant's signaling connection.
    #[cfg(feature = "sfu")]
    ToSignaling {
        /// The participant's signaling connection.
        conn: ConnId,
        /// The message.
        msg: SfuMessage,
    },
    /// Create, write to or close recording file `file` (numbered by the SFU
    /// of this engine): see [`crate::sfu::RecordOp`].
    #[cfg(feature = "sfu")]
    Record {
        /// The file.
        file: u64,
        /// What to do.
        op: crate::sfu::RecordOp,
    },
    /// Answer the WHIP or WHEP request on HTTP connection `conn` (dropped if it closed).
    #[cfg(feature = "sfu")]
    HttpResponse {
        /// The HTTP connection.
        conn: ConnId,
        /// The answer.
        response: HttpResponse,
    },
    /// Nothing more to do now: call again after the next input, or at this
    /// instant with [`Input::Timeout`] (`None`: no timer is pending).
    Timeout(Option<Instant>),
}

/// Counters of the engine.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Stats {
    /// The TURN server's counters.
    pub turn: TurnStats,
    /// The signaling server's counters.
    pub signal: SignalStats,
    /// The SFU's counters.
    #[cfg(feature = "sfu")]
    pub sfu: SfuStats,
    /// WHIP and WHEP counters.
    #[cfg(feature = "sfu")]
    pub whip: WhipStats,
    /// Stream connections open now.
    pub streams: u64,
    /// Stream connections closed because their bytes could not be framed.
    pub streams_desynchronized: u64,
    /// TCP relay data connections handed to the worker of their allocation (RFC 6062).
    pub stream_handoffs: u64,
}

/// A stream (TCP) client of the STUN/TURN port.
#[derive(Debug)]
struct Stream {
    client: Client,
    framer: StreamFramer,
    /// False once the engine decided to close it: it stays until
    /// [`Output::CloseStream`] is handed out, so that data decided before
    /// still borrows its buffer.
    open: bool,
}

/// Most bytes a TCP relay's peer connection may send before its client binds
/// it (RFC 6062 ConnectionBind); more closes it.
pub const MAX_WAITING_PEER_BYTES: usize = 64 * 1024;

/// Bytes of a linked pair of streams (RFC 6062), waiting in
/// [`Switchboard::poll_output`]: `range` indexes stream `from`'s framer buffer.
#[derive(Debug)]
struct RawRoute {
    from: ConnId,
    to: ConnId,
    range: std::ops::Range<usize>,
}

/// Client-to-peer data decided from a stream's frames, waiting in
/// [`Switchboard::poll_output`]: `route.range` indexes that stream's framer buffer.
#[derive(Debug)]
struct StreamRoute {
    conn: ConnId,
    route: PeerRoute,
}

/// The Switchboard engine: a sans-IO STUN/TURN server, signaling server and
/// SFU in one state machine.
///
/// # The drive contract
///
/// 1. Feed one [`Input`] with [`Switchboard::handle_input`], with the current
///    time. Everything the input asks for is decided there. Act on the
///    [`Forward`] it returns at once: its range indexes the buffer you
///    passed in.
/// 2. Then call [`Switchboard::poll_output`] until it returns
///    [`Output::Timeout`], acting on each output before asking for the next.
///    It only hands out what was decided. An [`Output::ToPeer`] borrows the
///    stream's reassembly buffer, which is not compacted until those outputs
///    have been handed out, so drain before the next input (a batch of
///    [`Input::MediaDatagram`]s is the exception: drain after the batch).
/// 3. When the time in `Output::Timeout` comes, feed [`Input::Timeout`]. It is
///    fine to feed it early, late or twice; time that goes backwards is ignored.
///
/// Work per input is bounded by the input: a [`Input::StreamData`] handles
/// the frames completed by its bytes, and a stream buffers at most two
/// frames' worth ([`MAX_FRAME`]) before it is closed, so a flood on one
/// stream costs work in proportion to the bytes read, never more.
///
/// The engine never reads a clock, touches a socket or spawns a thread, and
/// with the same seed and inputs it produces the same outputs, byte for byte.
#[derive(Debug)]
pub struct Switchboard {
    turn: TurnServer,
    signal: Signaling,
    #[cfg(feature = "sfu")]
    sfu: Option<Sfu>,
    streams: Map<ConnId, Stream>,
    routes: VecDeque<StreamRoute>,
    /// Bytes of a TCP relay (RFC 6062) waiting in [`Switchboard::poll_output`]: `range` of stream `from`'s buffer goes to `to`.
    raw: VecDeque<RawRoute>,
    /// Streams handed to another worker, with their unhandled bytes.
    handoffs: VecDeque<(ConnId, WorkerId, Vec<u8>)>,
    closing: VecDeque<ConnId>,
    time: Monotonic,
    stats: Stats,
    placement: Placement,
    /// On worker 0 of several: where each SFU room lives.
    #[cfg(feature = "sfu")]
    directory: Option<LocalDirectory>,
    /// On worker 0 of several: each SFU participant's worker and room.
    #[cfg(feature = "sfu")]
    placed: Map<ConnId, (WorkerId, String)>,
    /// Room events for other workers, in order.
    mail: VecDeque<(WorkerId, RoomEvent)>,
    /// WHIP and WHEP sessions (worker 0).
    #[cfg(feature = "sfu")]
    whip: Sessions,
    /// Answers to WHIP and WHEP requests, in order.
    #[cfg(feature = "sfu")]
    http_out: VecDeque<(ConnId, HttpResponse)>,
}

impl Switchboard {
    /// An engine started at `now`, when unix time was `unix_now` seconds,
    /// seeded with `seed` (shells fill it from the OS).
    pub fn new(config: Config, now: Instant, unix_now: u64, seed: &Seed) -> Self {
        let mut signal = config.signal;
        if signal.turn_secret.is_none() {
            signal.turn_secret = config.turn.static_auth_secret.clone();
        }
        #[cfg(feature = "sfu")]
        let sfu = config.sfu.map(|c| Sfu::new(c, now, &crate::rng::derive(seed, "sfu")));
        #[cfg(feature = "sfu")]
        let sfu_enabled = sfu.is_some();
        #[cfg(not(feature = "sfu"))]
        let sfu_enabled = false;
        // Without an SFU, joining an `sfu` room is refused with `unsupported-mode`.
        signal.sfu_enabled = sfu_enabled;
        #[cfg(feature = "sfu")]
        let whip = {
            let mut w = config.whip;
            if w.secret.is_none() {
                w.secret = config.turn.static_auth_secret.clone();
            }
            Sessions::new(w, now, unix_now, &crate::rng::derive(seed, "whip"))
        };
        Switchboard {
            #[cfg(feature = "sfu")]
            whip,
            #[cfg(feature = "sfu")]
            http_out: VecDeque::new(),
            #[cfg(feature = "sfu")]
            sfu,
            signal: Signaling::new(signal, now, unix_now, &crate::rng::derive(seed, "signaling")),
            turn: TurnServer::new(
                // A TCP relay's CONNECTION-IDs name the worker that made them (at most 256 workers tell apart).
                TurnConfig { server_index: config.placement.worker.0.min(255) as u8, ..config.turn },
                now,
                unix_now,
                seed,
            ),
            streams: Map::with_hasher(hash::hasher(seed)),
            routes: VecDeque::new(),
            raw: VecDeque::new(),
            handoffs: VecDeque::new(),
            closing: VecDeque::new(),
            time: Monotonic::new(now),
            stats: Stats::default(),
            placement: config.placement,
            #[cfg(feature = "sfu")]
            directory: (config.placement.worker == WorkerId(0) && config.placement.workers > 1)
                .then(|| LocalDirectory::new(config.placement.workers)),
            #[cfg(feature = "sfu")]
            placed: Map::with_hasher(hash::hasher(seed)),
            mail: VecDeque::new(),
        }
    }

    /// Which worker this engine is.
    pub fn placement(&self) -> Placement {
        self.placement
    }

    /// The TURN server inside.
    pub fn turn(&self) -> &TurnServer {
        &self.turn
    }

    /// The signaling server inside.
    pub fn signaling(&self) -> &Signaling {
        &self.signal
    }

    /// The SFU inside, if configured.
    #[cfg(feature = "sfu")]
    pub fn sfu(&self) -> Option<&Sfu> {
        self.sfu.as_ref()
    }

    #[cfg(all(test, feature = "sfu"))]
    pub(crate) fn sfu_mut(&mut self) -> Option<&mut Sfu> {
        self.sfu.as_mut()
    }

    /// Per room and participant counters of the SFU.
    #[cfg(feature = "sfu")]
    pub fn sfu_rooms(&self) -> Vec<RoomStats> {
        self.sfu.as_ref().map(Sfu::room_stats).unwrap_or_default()
    }

    /// Counters so far.
    pub fn stats(&self) -> Stats {
        let mut s = self.stats.clone();
        s.turn = self.turn.stats();
        s.signal = self.signal.stats();
        #[cfg(feature = "sfu")]
        {
            s.sfu = self.sfu.as_ref().map(Sfu::stats).unwrap_or_default();
            s.whip = self.whip.stats();
        }
        s.streams = self.streams.values().filter(|s| s.open).count() as u64;
        s
    }

    /// Handles one input at `now`. See the drive contract on [`Switchboard`].
    pub fn handle_input(&mut self, now: Instant, input: Input<'_>) -> Forward {
        let now = self.time.advance(now);
        match input {
            Input::Datagram { local, remote, buf, packet } => {
                let client = Client { via: Via::Udp(local), remote };
                match self.turn.handle_client(now, client, buf, packet) {
                    Some(r) => Forward::ToPeer(r),
                    None => Forward::None,
                }
            }
            Input::RelayDatagram { relay, peer, buf, payload } => {
                match self.turn.handle_peer(now, relay, peer, buf, payload) {
                    Some(r) => Forward::ToClient(r),
                    None => Forward::None,
                }
            }
            Input::StreamOpened { conn, remote, .. } => {
                let client = Client { via: Via::Tcp(conn), remote };
                self.streams.insert(conn, Stream { client, framer: StreamFramer::new(), open: true });
                Forward::None
            }
            Input::StreamData { conn, data } => {
                self.stream_data(now, conn, data);
                Forward::None
            }
            Input::StreamClosed { conn } => {
                if let Some(s) = self.streams.remove(&conn).filter(|s| s.open) {
                    self.turn.handle_client_closed(now, s.client);
                }
                Forward::None
            }
            Input::RelayStreamAccepted { relay, peer, conn } => {
                let client = Client { via: Via::Tcp(conn), remote: peer };
                self.streams.insert(conn, Stream { client, framer: StreamFramer::new(), open: true });
                self.turn.handle_relay_accepted(now, relay, peer, conn);
                Forward::None
            }
            Input::PeerConnected { connection, conn } => {
                if let Some(conn) = conn {
                    let remote = self.turn.tcp_connection_peer(connection).unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0)));
                    let client = Client { via: Via::Tcp(conn), remote };
                    self.streams.insert(conn, Stream { client, framer: StreamFramer::new(), open: true });
                }
                self.turn.handle_peer_connected(now, connection, conn);
                Forward::None
            }
            Input::RelayBound { allocation, bound, reserved } => {
                self.turn.handle_relay_bound(now, allocation, bound, reserved);
                Forward::None
            }
            Input::SignalOpened { conn } => {
                self.signal.handle_open(now, conn);
                Forward::None
            }
            Input::SignalText { conn, text } => {
                self.signal.handle_text(now, conn, text);
                self.pump_sfu(now);
                Forward::None
            }
            Input::SignalClosed { conn } => {
                self.signal.handle_close(now, conn);
                self.pump_sfu(now);
                Forward::None
            }
            Input::MediaDatagram { remote, data } => {
                #[cfg(feature = "sfu")]
                if let Some(sfu) = &mut self.sfu {
                    sfu.handle_datagram(now, remote, data);
                }
                #[cfg(not(feature = "sfu"))]
                let _ = (remote, data);
                Forward::None
            }
            Input::RoomEvent(ev) => {
                #[cfg(feature = "sfu")]
                self.apply_room_event(now, ev);
                #[cfg(not(feature = "sfu"))]
                let _ = ev;
                Forward::None
            }
            #[cfg(feature = "sfu")]
            Input::SfuMessage { conn, msg } => {
                if !self.session_message(now, conn, &msg) {
                    self.signal.send_sfu(conn, &to_wire(&msg));
                }
                Forward::None
            }
            #[cfg(feature = "sfu")]
            Input::Http { conn, request } => {
                self.http(now, conn, &request);
                Forward::None
            }
            Input::Timeout => {
                #[cfg(feature = "sfu")]
                if let Some(sfu) = &mut self.sfu {
                    sfu.handle_timeout(now);
                }
                self.turn.handle_timeout(now);
                Forward::None
            }
        }
    }

    /// Hands what signaling decided for SFU rooms to the SFU: this engine's,
    /// or the one of the worker hosting the room.
    #[cfg(feature = "sfu")]
    fn pump_sfu(&mut self, now: Instant) {
        while let Some(ev) = self.signal.poll_room_event() {
            match self.place(&ev) {
                Some(worker) if worker != self.placement.worker => self.mail.push_back((worker, ev)),
                _ => self.apply_room_event(now, ev),
            }
        }
    }

    /// The worker whose SFU gets `ev`, with several workers (`None`: this one).
    /// A join places its room if it has none; a room is forgotten with its last leave.
    #[cfg(feature = "sfu")]
    fn place(&mut self, ev: &RoomEvent) -> Option<WorkerId> {
        let directory = self.directory.as_mut()?;
        match ev {
            RoomEvent::Join { conn, room, .. } => {
                let worker = directory.join(room);
                // A join on a connection already placed (signaling allows one room) replaces it.
                if let Some((_, old)) = self.placed.insert(*conn, (worker, room.clone())) {
                    directory.leave(&old);
                }
                Some(worker)
            }
            RoomEvent::Leave { conn } => {
                let (worker, room) = self.placed.remove(conn)?;
                directory.leave(&room);
                Some(worker)
            }
            RoomEvent::RecordRoom { room, .. } => directory.lookup(room),
            ev => ev.conn().and_then(|c| self.placed.get(&c)).map(|(w, _)| *w),
        }
    }

    #[cfg(feature = "sfu")]
    fn apply_room_event(&mut self, now: Instant, ev: RoomEvent) {
        let Some(sfu) = &mut self.sfu else { return };
        match ev {
            RoomEvent::Join { conn, room, id, role } => sfu.join_as(now, conn, room, id, role),
            RoomEvent::Leave { conn } => sfu.leave(now, conn),
            RoomEvent::Offer { conn, sdp } => sfu.handle_offer(now, conn, &sdp),
            RoomEvent::Answer { conn, sdp } => sfu.handle_answer(now, conn, &sdp),
            RoomEvent::Candidate { conn, candidate } => sfu.handle_candidate(now, conn, &candidate),
            RoomEvent::Layer { conn, publisher, rid } => sfu.set_layer(now, conn, publisher, &rid),
            RoomEvent::MaxBitrate { conn, bps } => sfu.set_max_bitrate(now, conn, bps),
            RoomEvent::Record { conn, on } => sfu.record_by(now, conn, on),
            RoomEvent::RecordRoom { room, on } => {
                let _ = sfu.set_recording(now, &room, on, "http");
            }
        }
    }

    /// A WHIP or WHEP request: answered now, or once the SFU answers its offer.
    #[cfg(feature = "sfu")]
    fn http(&mut self, now: Instant, http: ConnId, req: &HttpRequest<'_>) {
        match self.whip.handle(now, http, req) {
            whip::Action::Respond(r) => self.http_out.push_back((http, r)),
            whip::Action::Join { conn, room, name, role, sdp } => match self.signal.join_media_client(now, conn, &room, &name, role) {
                Err(why) => self.http_out.extend(self.whip.join_refused(conn, why)),
                Ok(_) => {
                    self.pump_sfu(now);
                    self.signal.media_client_event(RoomEvent::Offer { conn, sdp });
                    self.pump_sfu(now);
                }
            },
            whip::Action::Candidates { conn, candidates } => {
                for candidate in candidates {
                    self.signal.media_client_event(RoomEvent::Candidate { conn, candidate });
                }
                self.pump_sfu(now);
                self.http_out.push_back((http, Sessions::done(204)));
            }
            whip::Action::Record { room, on } => {
                let found = self.signal.record_room(&room, on);
                self.pump_sfu(now);
                self.http_out.push_back((http, Sessions::recording(found)));
            }
            whip::Action::End { conn } => {
                self.whip.count_deleted();
                self.end_session(now, conn);
                self.http_out.push_back((http, Sessions::done(200)));
            }
        }
    }

    /// What the SFU says to a WHIP or WHEP session's member; false if `conn` is not one.
    #[cfg(feature = "sfu")]
    fn session_message(&mut self, now: Instant, conn: ConnId, msg: &SfuMessage) -> bool {
        if !Sessions::is_session(conn) {
            return false;
        }
        match msg {
            SfuMessage::Answer { sdp } => {
                let ice = self.signal.ice_servers_for(now, conn);
                self.http_out.extend(self.whip.answered(conn, sdp, &ice));
            }
            SfuMessage::Error { message, .. } => {
                self.http_out.extend(self.whip.refused(conn, message));
                self.end_session(now, conn);
            }
            SfuMessage::Ended { .. } => {
                if self.whip.end(conn).is_some() {
                    self.whip.count_timed_out();
                }
                self.end_session(now, conn);
            }
            // It cannot renegotiate and has no signaling to hear the rest on.
            _ => {}
        }
        true
    }

    /// Ends a WHIP or WHEP session's member: it leaves its room.
    #[cfg(feature = "sfu")]
    fn end_session(&mut self, now: Instant, conn: ConnId) {
        self.whip.end(conn);
        self.signal.handle_close(now, conn);
        self.pump_sfu(now);
    }

    /// Without an SFU no `sfu` room can be joined, so there is nothing to hand on.
    #[cfg(not(feature = "sfu"))]
    fn pump_sfu(&mut self, _now: Instant) {
        while self.signal.poll_room_event().is_some() {}
    }

    /// Frames the bytes of a stream and hands each complete frame to the TURN
    /// server; data for peers is queued as routes into the framer's buffer.
    fn stream_data(&mut self, now: Instant, conn: ConnId, data: &[u8]) {
        let Some(s) = self.streams.get_mut(&conn).filter(|s| s.open) else { return };
        // Routes still queued borrow this buffer: under the drive contract they were
        // handed out before this input, and if not, the buffer is left as it is.
        if !self.routes.iter().any(|r| r.conn == conn) && !self.raw.iter().any(|r| r.from == conn) {
            s.framer.compact();
        }
        s.framer.push(data);
        let link = self.turn.stream_link(conn);
        let limit = if link == StreamLink::Waiting { MAX_WAITING_PEER_BYTES } else { 2 * MAX_FRAME };
        if s.framer.pending() > limit {
            // The shell is not draining between reads, or a peer sends more than it may before it is
            // bound; refuse to buffer without bound.
            self.close_stream(now, conn);
            return;
        }
        match link {
            StreamLink::Waiting => return,
            StreamLink::To(to) => {
                // A TCP relay's bytes (RFC 6062), unframed, to the other end.
                let range = s.framer.take_rest();
                let to_peer = self.turn.is_data_stream(conn);
                self.turn.count_stream_relay(to_peer, range.len());
                self.raw.push_back(RawRoute { from: conn, to, range });
                return;
            }
            StreamLink::Framed => {}
        }
        let desynchronized = loop {
            match s.framer.next_frame() {
                Ok(Some(frame)) => {
                    if let Some(owner) = s.framer.buffer().get(frame.clone()).and_then(|f| self.turn.foreign_connection_bind(f)) {
                        // A TCP relay data connection for another worker's allocation: it goes there, with
                        // its bytes from this message on.
                        let pending = s.framer.buffer()[frame.start..].to_vec();
                        self.streams.remove(&conn);
                        self.stats.stream_handoffs += 1;
                        self.handoffs.push_back((conn, WorkerId(usize::from(owner)), pending));
                        return;
                    }
                    if let Some(route) = self.turn.handle_client(now, s.client, s.framer.buffer(), frame) {
                        self.routes.push_back(StreamRoute { conn, route });
                    }
                    if let StreamLink::To(to) = self.turn.stream_link(conn) {
                        // A ConnectionBind linked this stream: what follows it is the application's.
                        if s.framer.pending() > 0 {
                            let range = s.framer.take_rest();
                            self.turn.count_stream_relay(true, range.len());
                            self.raw.push_back(RawRoute { from: conn, to, range });
                        }
                        break false;
                    }
                }
                Ok(None) => break false,
                Err(_) => break true,
            }
        };
        if desynchronized {
            self.stats.streams_desynchronized += 1;
            self.close_stream(now, conn);
        }
    }

    /// Ends a stream's allocation and queues its [`Output::CloseStream`].
    fn close_stream(&mut self, now: Instant, conn: ConnId) {
        if let Some(s) = self.streams.get_mut(&conn).filter(|s| s.open) {
            s.open = false;
            self.turn.handle_client_closed(now, s.client);
            self.closing.push_back(conn);
        }
    }

    /// The next raw route whose bytes are still in their stream's buffer.
    fn next_raw_route(&mut self) -> Option<RawRoute> {
        while let Some(r) = self.raw.pop_front() {
            if self.streams.get(&r.from).is_some_and(|s| s.framer.buffer().get(r.range.clone()).is_some()) {
                return Some(r);
            }
        }
        None
    }

    /// The next stream route whose payload is still in its stream's buffer.
    fn next_stream_route(&mut self) -> Option<StreamRoute> {
        while let Some(r) = self.routes.pop_front() {
            if self.streams.get(&r.conn).is_some_and(|s| s.framer.buffer().get(r.route.range.clone()).is_some()) {
                return Some(r);
            }
        }
        None
    }

    /// The next output. Call until it returns [`Output::Timeout`].
    pub fn poll_output(&mut self) -> Output<'_> {
        // Stream data first: it was decided before any relay release or close queued after it.
        if let Some(StreamRoute { conn, route }) = self.next_stream_route() {
            // `next_stream_route` checked that the stream and the range exist.
            let payload = &self.streams[&conn].framer.buffer()[route.range];
            return Output::ToPeer { relay: route.relay, peer: route.peer, payload };
        }
        if let Some(r) = self.next_raw_route() {
            let data = &self.streams[&r.from].framer.buffer()[r.range];
            return Output::ToStream { conn: r.to, data };
        }
        if let Some((conn, worker, pending)) = self.handoffs.pop_front() {
            return Output::HandOff { conn, worker, pending };
        }
        while let Some(o) = self.turn.poll_output() {
            return match o {
                turn::Output::Transmit(t) => Output::Transmit(t),
                turn::Output::BindRelay { allocation, family, port } => Output::BindRelay { allocation, family, port },
                turn::Output::ReleaseRelay { allocation, relay } => Output::ReleaseRelay { allocation, relay },
                turn::Output::BindTcpRelay { allocation, family } => Output::BindTcpRelay { allocation, family },
                turn::Output::ConnectPeer { relay, peer, connection } => Output::ConnectPeer { relay, peer, connection },
                turn::Output::CloseStream(conn) => {
                    self.streams.remove(&conn);
                    self.raw.retain(|r| r.from != conn && r.to != conn);
                    Output::CloseStream(conn)
                }
                turn::Output::Linked { data, peer } => {
                    // What the peer sent while it waited goes first, after the ConnectionBind answer (out before this).
                    if let Some(s) = self.streams.get_mut(&peer).filter(|s| s.open && s.framer.pending() > 0) {
                        let range = s.framer.take_rest();
                        self.turn.count_stream_relay(false, range.len());
                        self.raw.push_back(RawRoute { from: peer, to: data, range });
                        return self.poll_output();
                    }
                    continue;
                }
            };
        }
        while let Some(m) = self.signal.poll_output() {
            // A WHIP or WHEP session's member has no WebSocket: what signaling tells it goes nowhere.
            if is_session(m.conn) {
                continue;
            }
            return Output::SignalSend(m);
        }
        #[cfg(feature = "sfu")]
        if let Some((conn, response)) = self.http_out.pop_front() {
            return Output::HttpResponse { conn, response };
        }
        if let Some((worker, event)) = self.mail.pop_front() {
            return Output::ToWorker { worker, event };
        }
        #[cfg(feature = "sfu")]
        while let Some(o) = self.sfu.as_mut().and_then(Sfu::poll_output) {
            match o {
                // Signaling lives on worker 0.
                SfuOutput::Signal { conn, msg } if self.placement.worker != WorkerId(0) => {
                    return Output::ToSignaling { conn, msg };
                }
                SfuOutput::Signal { conn, msg } => {
                    let now = self.time.now();
                    if self.session_message(now, conn, &msg) {
                        // Its answer (or what its end told the room) goes out next.
                        return self.poll_output();
                    }
                    // Signaling encodes and counts it, and hands it out next.
                    self.signal.send_sfu(conn, &to_wire(&msg));
                    if let Some(m) = self.signal.poll_output() {
                        return Output::SignalSend(m);
                    }
                }
                SfuOutput::Transmit { to, data } => return Output::MediaTransmit { to, data },
                SfuOutput::Record { file, op } => return Output::Record { file, op },
            }
        }
        if let Some(conn) = self.closing.pop_front() {
            self.streams.remove(&conn);
            return Output::CloseStream(conn);
        }
        #[cfg(feature = "sfu")]
        let sfu = self.sfu.as_ref().and_then(Sfu::poll_timeout);
        #[cfg(not(feature = "sfu"))]
        let sfu = None;
        let turn = self.turn.poll_timeout();
        Output::Timeout(match (turn, sfu) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        })
    }

    /// Ends every allocation and stream for a graceful stop; drain
    /// [`Switchboard::poll_output`] afterwards to release the relays.
    pub fn shutdown(&mut self, now: Instant) {
        let now = self.time.advance(now);
        let mut conns: Vec<ConnId> = self.streams.keys().copied().collect();
        conns.sort();
        for c in conns {
            self.close_stream(now, c);
        }
        self.turn.shutdown();
    }
}

#[cfg(test)]
mod tests;

/// Whether `conn` is a WHIP or WHEP session's member (none without the SFU).
fn is_session(conn: ConnId) -> bool {
    #[cfg(feature = "sfu")]
    return Sessions::is_session(conn);
    #[cfg(not(feature = "sfu"))]
    {
        let _ = conn;
        false
    }
}

/// What the SFU says to a participant, as the signaling message that carries it.
#[cfg(feature = "sfu")]
fn to_wire(msg: &SfuMessage) -> ServerMsg<'_> {
    match msg {
        SfuMessage::Offer { sdp } => ServerMsg::Offer { sdp },
        SfuMessage::Answer { sdp } => ServerMsg::Answer { sdp },
        SfuMessage::Candidate { candidate, sdp_mid, sdp_mline_index } => {
            ServerMsg::Candidate { candidate, sdp_mid: sdp_mid.as_deref(), sdp_mline_index: *sdp_mline_index }
        }
        SfuMessage::Paused { peer, paused } => ServerMsg::Paused { peer, paused: *paused },
        SfuMessage::Speaker { peer } => ServerMsg::Speaker { peer },
        SfuMessage::Recording { on, by } => ServerMsg::Record { on: *on, by },
        // For WHIP and WHEP sessions only, which the engine ends; never on a WebSocket.
        SfuMessage::Ended { reason } => ServerMsg::Error { code: ErrorCode::BadMessage, message: reason },
        SfuMessage::Error { code, message } => ServerMsg::Error { code: error_code(*code), message },
    }
}

/// The signaling error code for an SFU refusal (the codes clients have always seen).
#[cfg(feature = "sfu")]
fn error_code(e: SfuError) -> ErrorCode {
    match e {
        SfuError::NotJoined => ErrorCode::NotJoined,
        SfuError::NoSuchPeer => ErrorCode::NoSuchPeer,
        SfuError::NotRecording => ErrorCode::NotRecording,
        SfuError::BadOffer | SfuError::BadAnswer | SfuError::BadCandidate | SfuError::NoSuchLayer => ErrorCode::BadMessage,
    }
}
