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
//! The future is `!Send`: the server is single-threaded (its tasks share
//! the engine through an `Rc<RefCell<_>>` on a `LocalExecutor` of its own),
//! so run it with `block_on` on a thread of its own or on a local executor.
//!
//! Like the mio shell, this file only waits for readiness and moves bytes:
//! protocol is in `switchboard-core`, the drive loop in
//! `switchboard_common::driver`.

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
use switchboard_common::driver::{Driver, OutQueue, Sockets, BATCH, STREAM_CHUNK};
use switchboard_common::Settings;
use switchboard_core::hash::Map;
use switchboard_core::ConnId;
use tracing::{debug, info, warn};

struct Conn {
    stream: Rc<Async<TcpStream>>,
    out: OutQueue,
    wake_writer: Sender<()>,
    _tasks: [Task<()>; 2],
}

struct Relay {
    socket: Rc<Async<UdpSocket>>,
    _task: Task<()>,
}

struct Io {
    ex: Rc<LocalExecutor<'static>>,
    state: Weak<RefCell<Shared>>,
    udp: Rc<Async<UdpSocket>>,
    media: Rc<Async<UdpSocket>>,
    conns: Map<ConnId, Conn>,
    relays: Map<SocketAddr, Relay>,
    next_conn: u64,
    armed: Option<std::time::Instant>,
    wake_timer: Sender<()>,
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

/// Serves STUN/TURN as `settings` say until `shutdown` resolves, then stops
/// gracefully (allocations released, sockets closed).
pub async fn serve(settings: Settings, shutdown: impl Future<Output = ()>) -> io::Result<()> {
    let udp = Rc::new(Async::<UdpSocket>::bind(settings.turn_listen)?);
    let tcp = Async::<TcpListener>::bind(settings.turn_listen)?;
    let http = Async::<TcpListener>::bind(settings.http_listen)?;
    let media = Rc::new(Async::<UdpSocket>::bind(settings.media_listen)?);
    let local = udp.get_ref().local_addr()?;
    let ex = Rc::new(LocalExecutor::new());
    let (wake_timer, timer_rx) = channel::bounded(1);
    let state: State = Rc::new_cyclic(|weak| {
        RefCell::new(Shared {
            driver: Driver::new(&settings),
            io: Io {
                ex: ex.clone(),
                state: weak.clone(),
                udp: udp.clone(),
                media: media.clone(),
                conns: switchboard_common::new_map(),
                relays: switchboard_common::new_map(),
                next_conn: 0,
                armed: None,
                wake_timer,
            },
        })
    });
    print!("{}", switchboard_common::banner::banner("switchboard-smol", &settings, switchboard_common::unix_now()));
    info!(listen = %local, http = %settings.http_listen, relay_ips = ?settings.relay_ips, "serving");
    with(&state, |d, io| d.start(io));
    let weak = Rc::downgrade(&state);
    let tasks = [
        ex.spawn(read_udp(weak.clone(), udp, UdpRole::Listener(local))),
        ex.spawn(read_udp(weak.clone(), media, UdpRole::Media)),
        ex.spawn(accept(weak.clone(), tcp, local, false)),
        ex.spawn(accept(weak.clone(), http, local, true)),
        ex.spawn(timer(weak, timer_rx)),
    ];
    ex.run(shutdown).await;
    drop(tasks);
    with(&state, |d, io| {
        d.shutdown(io);
        io.close_all();
    });
    Ok(())
}

/// Which UDP socket a reading task serves.
#[derive(Clone, Copy)]
enum UdpRole {
    /// The STUN/TURN listener bound at this address.
    Listener(SocketAddr),
    /// The relay socket bound at this address.
    Relay(SocketAddr),
    /// The SFU's media socket.
    Media,
}

/// Reads a UDP socket in batches whenever it is readable, until cancelled.
async fn read_udp(state: Weak<RefCell<Shared>>, socket: Rc<Async<UdpSocket>>, role: UdpRole) {
    loop {
        if socket.readable().await.is_err() {
            return;
        }
        let Some(state) = state.upgrade() else { return };
        let more = with(&state, |d, io| {
            for _ in 0..BATCH {
                match (socket.get_ref().recv_from(d.recv_buf()), role) {
                    (Ok((n, from)), UdpRole::Listener(local)) => d.datagram(io, local, from, n),
                    (Ok((n, from)), UdpRole::Relay(relay)) => d.relay_datagram(io, relay, from, n),
                    (Ok((n, from)), UdpRole::Media) => d.media_datagram(io, from, n),
                    (Err(e), _) if e.kind() == io::ErrorKind::WouldBlock => return false,
                    (Err(e), _) => debug!("udp recv: {e}"),
                }
            }
            true
        });
        if more {
            future::yield_now().await;
        }
    }
}

async fn accept(state: Weak<RefCell<Shared>>, tcp: Async<TcpListener>, local: SocketAddr, http: bool) {
    loop {
        let (stream, remote) = match tcp.accept().await {
            Ok(x) => x,
            Err(e) => {
                warn!("accept: {e}");
                Timer::after(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.get_ref().set_nodelay(true);
        let Some(state) = state.upgrade() else { return };
        with(&state, |d, io| {
            io.next_conn += 1;
            let id = ConnId(io.next_conn);
            let stream = Rc::new(stream);
            let (wake_writer, wake_rx) = channel::bounded(1);
            let reader = io.ex.spawn(read_conn(io.state.clone(), stream.clone(), id, http));
            let writer = io.ex.spawn(write_conn(io.state.clone(), stream.clone(), id, wake_rx));
            io.conns.insert(id, Conn { stream, out: OutQueue::default(), wake_writer, _tasks: [reader, writer] });
            if http {
                d.http_opened(io, id);
            } else {
                d.stream_opened(io, id, local, remote);
            }
        });
    }
}

async fn read_conn(state: Weak<RefCell<Shared>>, stream: Rc<Async<TcpStream>>, id: ConnId, http: bool) {
    let mut chunk = vec![0u8; STREAM_CHUNK];
    loop {
        let r = (&*stream).read(&mut chunk).await;
        let Some(state) = state.upgrade() else { return };
        let open = with(&state, |d, io| match r {
            Ok(n) if n > 0 && http => {
                d.http_data(io, id, &chunk[..n]);
                true
            }
            Ok(n) if n > 0 => {
                d.stream_data(io, id, &chunk[..n]);
                true
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => true,
            _ => {
                // End of stream or a hard error: the client is gone.
                io.close_stream(id);
                if http {
                    d.http_closed(io, id);
                } else {
                    d.stream_closed(io, id);
                }
                false
            }
        });
        if !open {
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
    /// Writes what it can of a connection's queue; true if bytes remain.
    fn flush(&mut self, id: ConnId) -> bool {
        let Some(c) = self.conns.get_mut(&id) else { return false };
        let _ = c.out.write_to(c.stream.get_ref());
        !c.out.is_empty()
    }

    fn close_all(&mut self) {
        let ids: Vec<ConnId> = self.conns.keys().copied().collect();
        for id in ids {
            self.close_stream(id);
        }
    }
}

impl Sockets for Io {
    fn send_datagram(&mut self, to: SocketAddr, data: &[u8]) {
        if let Err(e) = self.udp.get_ref().send_to(data, to) {
            debug!(%to, "udp send: {e}");
        }
    }

    fn send_media(&mut self, to: SocketAddr, data: &[u8]) {
        if let Err(e) = self.media.get_ref().send_to(data, to) {
            debug!(%to, "media send: {e}");
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

    fn send_from_relay(&mut self, relay: SocketAddr, peer: SocketAddr, data: &[u8]) {
        if let Some(r) = self.relays.get(&relay) {
            if let Err(e) = r.socket.get_ref().send_to(data, peer) {
                debug!(%relay, %peer, "relay send: {e}");
            }
        }
    }

    fn add_relay(&mut self, socket: UdpSocket, addr: SocketAddr) -> bool {
        let Ok(socket) = Async::new(socket) else { return false };
        let socket = Rc::new(socket);
        let task = self.ex.spawn(read_udp(self.state.clone(), socket.clone(), UdpRole::Relay(addr)));
        self.relays.insert(addr, Relay { socket, _task: task });
        debug!(%addr, "relay bound");
        true
    }

    fn has_relay(&self, addr: SocketAddr) -> bool {
        self.relays.contains_key(&addr)
    }

    fn release_relay(&mut self, relay: SocketAddr) {
        // Dropping the entry cancels its reading task and closes the socket.
        self.relays.remove(&relay);
    }

    fn close_stream(&mut self, id: ConnId) {
        self.flush(id);
        if let Some(c) = self.conns.remove(&id) {
            let _ = c.stream.get_ref().shutdown(std::net::Shutdown::Both);
        }
    }

    fn relays_open(&self) -> usize {
        self.relays.len()
    }
}
