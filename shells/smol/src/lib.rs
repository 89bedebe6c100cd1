//! The Switchboard engine on the smol runtime.
//!
//! [`serve`] runs a server for a [`Settings`] until a future you give
//! resolves; put it in your own smol or async-io program:
//!
//! ```no_run
//! # fn main() -> std::io::Result<()> {
//! let settings = switchboard_common::ServeArgs::default().resolve().expect("defaults are valid");
//! let stop = switchboard_smol::stop_signals()?; // or any future, e.g. a channel's recv()
//! smol::block_on(switchboard_smol::serve(settings, stop))
//! # }
//! ```
//!
//! The server runs `settings.workers` workers (see
//! `switchboard_common::workers`): worker 0 in the future `serve` returns,
//! the others each on a thread of its own with its own executor. The future
//! is `!Send`: a worker's tasks share its engine through an `Rc<RefCell<_>>`
//! on a `LocalExecutor` of its own, so run it with `block_on` on a thread of
//! its own or on a local executor.
//!
//! Like the mio shell, this file only waits for readiness and moves bytes:
//! protocol is in `switchboard-core`, the drive loop and the dispatch by
//! listener in `switchboard_common::driver`. Every UDP socket (listener or
//! relay) is read by one task function, `read_udp`, and every TCP listener
//! accepted on by another, `accept`.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

use std::cell::RefCell;
use std::future::Future;
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::rc::{Rc, Weak};

use smol::channel::{self, Receiver, Sender};
use smol::future::{self, FutureExt};
use smol::io::AsyncReadExt;
use smol::{Async, LocalExecutor, Task, Timer};
use switchboard_common::driver::Driver;
use switchboard_common::listen::{ConnKind, Socket};
use switchboard_common::sockets::{OutQueue, Sockets, STREAM_CHUNK};
use switchboard_common::udp::{self, SendBatch};
use switchboard_common::workers::{self, Setup, StopReport};
use switchboard_common::Settings;
use switchboard_core::hash::Map;
use switchboard_core::ConnId;
use tracing::{info, warn};

struct Conn {
    stream: Rc<Async<TcpStream>>,
    out: OutQueue,
    wake_writer: Sender<()>,
    _tasks: [Task<()>; 2],
}

/// A UDP socket (a listener or a relay), the task reading it, and what
/// waits to be sent from it.
struct Udp {
    socket: Rc<Async<UdpSocket>>,
    out: SendBatch,
    _task: Task<()>,
}

struct Io {
    ex: Rc<LocalExecutor<'static>>,
    state: Weak<RefCell<Shared>>,
    /// Every UDP socket by local address: the table's listeners and the relays.
    udp: Map<SocketAddr, Udp>,
    conns: Map<ConnId, Conn>,
    /// The accepting task of each TCP relay listener (RFC 6062), by address.
    relay_listeners: Map<SocketAddr, Task<()>>,
    next_conn: u64,
    armed: Option<std::time::Instant>,
    wake_timer: Sender<()>,
    /// The UDP sockets with datagrams queued.
    queued: Vec<SocketAddr>,
    /// Wakes the task that sends them, which runs after the tasks already
    /// woken (reads of other sockets add to the same batches).
    wake_sender: Sender<()>,
}

struct Shared {
    driver: Driver,
    io: Io,
}

type State = Rc<RefCell<Shared>>;

/// Runs `f` on the driver and sockets, then re-arms the timer task if the
/// engine's deadline moved.
fn with<R>(state: &State, f: impl FnOnce(&mut Driver, &mut Io) -> R) -> R {
    let mut g = state.borrow_mut();
    let Shared { driver, io } = &mut *g;
    let r = f(driver, io);
    if !io.queued.is_empty() {
        let _ = io.wake_sender.try_send(());
    }
    let deadline = driver.deadline();
    if deadline != io.armed {
        io.armed = deadline;
        let _ = io.wake_timer.try_send(());
    }
    r
}

/// A future that resolves on SIGINT or SIGTERM, for [`serve`]'s `shutdown`.
pub fn stop_signals() -> io::Result<impl Future<Output = ()>> {
    let (rx, tx) = std::os::unix::net::UnixStream::pair()?;
    signal_hook::low_level::pipe::register(signal_hook::consts::SIGINT, tx.try_clone()?)?;
    signal_hook::low_level::pipe::register(signal_hook::consts::SIGTERM, tx)?;
    let rx = Async::new(rx)?;
    Ok(async move {
        let _ = rx.readable().await;
    })
}

/// Serves everything `settings` configure (STUN/TURN over UDP and TCP, the
/// web client and WebSocket signaling over HTTP, SFU media) until `shutdown`
/// resolves, then stops gracefully (allocations released, sockets closed),
/// every worker.
pub async fn serve(settings: Settings, shutdown: impl Future<Output = ()>) -> io::Result<()> {
    let setups = workers::prepare(&settings)?;
    print!("{}", switchboard_common::banner::banner("switchboard-smol", &settings, switchboard_common::unix_now()));
    info!(workers = setups.len(), listeners = ?setups[0].listeners, relay_ips = ?settings.relay_ips, "serving");
    let (first, others) =
        workers::start_others(setups, |s| smol::block_on(serve_worker(s, future::pending::<()>())))?;
    let report = serve_worker(first, shutdown).await;
    others.stop(report)
}

/// One worker, until `shutdown` resolves or it is told to stop.
async fn serve_worker(setup: Setup, shutdown: impl Future<Output = ()>) -> io::Result<StopReport> {
    let Setup { settings, listeners, sockets, worker } = setup;
    let ex = Rc::new(LocalExecutor::new());
    let (wake_timer, timer_rx) = channel::bounded(1);
    let (wake_sender, sender_rx) = channel::bounded(1);
    let (mail_tx, mail_rx) = channel::bounded(1);
    worker.on_mail(move || {
        let _ = mail_tx.try_send(());
    });
    let state: State = Rc::new_cyclic(|weak| {
        RefCell::new(Shared {
            driver: Driver::new(&settings, listeners, worker),
            io: Io {
                ex: ex.clone(),
                state: weak.clone(),
                udp: switchboard_common::new_map(),
                conns: switchboard_common::new_map(),
                relay_listeners: switchboard_common::new_map(),
                next_conn: 0,
                armed: None,
                wake_timer,
                queued: Vec::new(),
                wake_sender,
            },
        })
    });
    let weak = Rc::downgrade(&state);
    let (stop_tx, stop_rx) = channel::bounded(1);
    let mut tasks = vec![
        ex.spawn(timer(weak.clone(), timer_rx)),
        ex.spawn(mail(weak.clone(), mail_rx, stop_tx)),
        ex.spawn(send_queued(weak.clone(), sender_rx)),
    ];
    for (l, socket) in sockets {
        match socket {
            Socket::Udp(s) => with(&state, |_, io| io.add_udp_socket(s, l.addr))?,
            Socket::Tcp(s, kind) => tasks.push(ex.spawn(accept(weak.clone(), Async::new(s)?, l.addr, kind))),
        }
    }
    with(&state, |d, io| d.start(io));
    let stopped = async {
        let _ = stop_rx.recv().await;
    };
    ex.run(shutdown.or(stopped)).await;
    drop(tasks);
    Ok(with(&state, |d, io| {
        let report = d.shutdown(io);
        io.send_queued();
        report
    }))
}

/// Sends what the UDP sockets queued whenever woken.
async fn send_queued(state: Weak<RefCell<Shared>>, woken: Receiver<()>) {
    while woken.recv().await.is_ok() {
        let Some(s) = state.upgrade() else { return };
        s.borrow_mut().io.send_queued();
    }
}

/// Reads the mail from other workers whenever woken (and once at start, for
/// mail sent before the waker was installed); tells `stop` when asked to.
async fn mail(state: Weak<RefCell<Shared>>, woken: Receiver<()>, stop: Sender<()>) {
    loop {
        let Some(s) = state.upgrade() else { return };
        if with(&s, |d, io| d.mail(io)) {
            let _ = stop.try_send(());
            return;
        }
        drop(s);
        if woken.recv().await.is_err() {
            return;
        }
    }
}

/// Reads any UDP socket (a listener of the table or a relay) in batches
/// whenever it is readable, until cancelled.
async fn read_udp(state: Weak<RefCell<Shared>>, socket: Rc<Async<UdpSocket>>, local: SocketAddr) {
    loop {
        if socket.readable().await.is_err() {
            return;
        }
        let Some(state) = state.upgrade() else { return };
        let more = with(&state, |d, io| d.read_datagrams(io, local, |_, batch| udp::recv_batch(socket.get_ref(), batch)));
        if more {
            future::yield_now().await;
        }
    }
}

/// Accepts on any TCP listener of the table, bound at `local`, whose connections carry `kind`.
async fn accept(state: Weak<RefCell<Shared>>, listener: Async<TcpListener>, local: SocketAddr, kind: ConnKind) {
    loop {
        let (stream, remote) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                warn!(%local, "accept: {e}");
                Timer::after(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.get_ref().set_nodelay(true);
        let Some(state) = state.upgrade() else { return };
        with(&state, |d, io| {
            let id = io.add_conn(stream, false);
            d.conn_opened(io, id, kind, local, remote);
        });
    }
}

/// Reads a connection until it ends, or until it is no longer this worker's
/// (handed to another). One whose connect is under way (`connecting`) first
/// waits for the outcome and tells the driver.
async fn read_conn(state: Weak<RefCell<Shared>>, stream: Rc<Async<TcpStream>>, id: ConnId, connecting: bool) {
    if connecting {
        // Writable once the connect has an outcome; a wake-up while it is still under way waits again.
        let mut ok = false;
        for _ in 0..64 {
            if stream.writable().await.is_err() {
                break;
            }
            let s = stream.get_ref();
            match (s.take_error(), s.peer_addr()) {
                (Ok(None), Ok(_)) => ok = true,
                (Ok(None), Err(e)) if matches!(e.kind(), io::ErrorKind::NotConnected | io::ErrorKind::WouldBlock) => continue,
                _ => {}
            }
            break;
        }
        let Some(state) = state.upgrade() else { return };
        with(&state, |d, io| d.conn_connected(io, id, ok));
        if !ok {
            return;
        }
    }
    let mut chunk = vec![0u8; STREAM_CHUNK];
    loop {
        let r = (&*stream).read(&mut chunk).await;
        let Some(state) = state.upgrade() else { return };
        if !with(&state, |d, io| d.conn_read(io, id, r.map(|n| &chunk[..n])) && io.conns.contains_key(&id)) {
            return;
        }
    }
}
/// Writes a connection's queue whenever it is woken, waiting for
/// writability while the client is slow.
async fn write_conn(state: Weak<RefCell<Shared>>, stream: Rc<Async<TcpStream>>, id: ConnId, wake: Receiver<()>) {
    while wake.recv().await.is_ok() {
        loop {
            let Some(state) = state.upgrade() else { return };
            let pending = with(&state, |_, io| io.flush(id));
            drop(state);
            if !pending || stream.writable().await.is_err() {
                break;
            }
        }
    }
}

/// Feeds timeouts. An async timer can wake late or early; the driver checks
/// the deadline against the clock.
async fn timer(state: Weak<RefCell<Shared>>, rearm: Receiver<()>) {
    loop {
        let Some(s) = state.upgrade() else { return };
        let deadline = s.borrow().driver.deadline();
        drop(s);
        let woken = async {
            let _ = rearm.recv().await;
        };
        match deadline {
            Some(at) => {
                async {
                    Timer::at(at).await;
                }
                .or(woken)
                .await
            }
            None => woken.await,
        }
        let Some(s) = state.upgrade() else { return };
        with(&s, |d, io| d.on_timer(io));
    }
}

impl Io {
    /// Starts reading and writing a stream connection; its handle.
    fn add_conn(&mut self, stream: Async<TcpStream>, connecting: bool) -> ConnId {
        self.next_conn += 1;
        let id = ConnId(self.next_conn);
        let stream = Rc::new(stream);
        let (wake_writer, wake_rx) = channel::bounded(1);
        let reader = self.ex.spawn(read_conn(self.state.clone(), stream.clone(), id, connecting));
        let writer = self.ex.spawn(write_conn(self.state.clone(), stream.clone(), id, wake_rx));
        self.conns.insert(id, Conn { stream, out: OutQueue::default(), wake_writer, _tasks: [reader, writer] });
        id
    }

    /// Starts reading a bound UDP socket with [`read_udp`].
    fn add_udp_socket(&mut self, socket: UdpSocket, local: SocketAddr) -> io::Result<()> {
        let socket = Rc::new(Async::new(socket)?);
        let task = self.ex.spawn(read_udp(self.state.clone(), socket.clone(), local));
        self.udp.insert(local, Udp { socket, out: SendBatch::new(), _task: task });
        Ok(())
    }

    /// Sends what every UDP socket has queued, in batches.
    fn send_queued(&mut self) {
        for local in self.queued.drain(..) {
            if let Some(u) = self.udp.get_mut(&local) {
                u.out.send(u.socket.get_ref());
            }
        }
    }

    /// Writes what it can of a connection's queue; true if bytes remain.
    fn flush(&mut self, id: ConnId) -> bool {
        let Some(c) = self.conns.get_mut(&id) else { return false };
        let _ = c.out.write_to(c.stream.get_ref());
        !c.out.is_empty()
    }
}

impl Sockets for Io {
    fn send_datagram(&mut self, local: SocketAddr, remote: SocketAddr, data: &[u8]) {
        if let Some(u) = self.udp.get_mut(&local) {
            if u.out.queue(u.socket.get_ref(), remote, data) {
                self.queued.push(local);
            }
        }
    }

    fn send_stream(&mut self, id: ConnId, data: &[u8]) -> bool {
        let Some(c) = self.conns.get_mut(&id) else { return true };
        if !c.out.push(data) {
            return false;
        }
        if self.flush(id) {
            if let Some(c) = self.conns.get(&id) {
                let _ = c.wake_writer.try_send(());
            }
        }
        true
    }

    fn close_stream(&mut self, id: ConnId) {
        self.flush(id);
        if let Some(c) = self.conns.remove(&id) {
            let _ = c.stream.get_ref().shutdown(std::net::Shutdown::Both);
        }
    }

    fn add_udp(&mut self, socket: UdpSocket, local: SocketAddr) -> bool {
        self.add_udp_socket(socket, local).is_ok()
    }

    fn close_udp(&mut self, local: SocketAddr) {
        // Dropping the entry cancels its reading task and closes the socket,
        // once what it was told to send before is sent.
        if let Some(mut u) = self.udp.remove(&local) {
            u.out.send(u.socket.get_ref());
        }
    }

    fn add_listener(&mut self, listener: TcpListener, local: SocketAddr) -> bool {
        let Ok(listener) = Async::new(listener) else { return false };
        let task = self.ex.spawn(accept(self.state.clone(), listener, local, ConnKind::RelayPeer));
        self.relay_listeners.insert(local, task);
        true
    }

    fn close_listener(&mut self, local: SocketAddr) {
        // Dropping the task cancels it and closes the listener.
        self.relay_listeners.remove(&local);
    }

    fn add_stream(&mut self, stream: TcpStream, connecting: bool) -> Option<ConnId> {
        let _ = stream.set_nodelay(true);
        let stream = Async::new(stream).ok()?;
        Some(self.add_conn(stream, connecting))
    }

    fn take_stream(&mut self, id: ConnId) -> Option<(TcpStream, Vec<u8>)> {
        self.flush(id);
        let mut c = self.conns.remove(&id)?;
        // Its reader may be the task running now: it stops when it sees the connection gone, and drops its
        // handle; the socket goes on in a duplicate of its descriptor, which the other worker registers.
        let stream = c.stream.get_ref().try_clone().ok()?;
        Some((stream, c.out.take_all()))
    }
}
