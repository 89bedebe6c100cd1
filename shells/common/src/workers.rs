//! One engine per worker thread.
//!
//! A server runs `--workers` workers; each is a thread with its own
//! [`Driver`](crate::driver::Driver) (engine, sockets, timers) and nothing on
//! the data path is shared. The kernel spreads STUN/TURN clients over the
//! workers (each binds the same STUN/TURN addresses with SO_REUSEPORT and
//! keeps a client on one); each binds its own relay sockets and its own SFU
//! media port. Worker 0 also serves HTTP and so holds signaling; its engine
//! places each SFU room on a worker (see `switchboard_core::Placement`), and
//! the room's events and the SFU's answers travel as [`Mail`] over a channel
//! per worker, with a waker the worker's event loop installs
//! ([`Worker::on_mail`]).
//!
//! Shared between workers: configuration (the REST secret, the nonce key,
//! users, the peer policy, all cloned from one [`Settings`]), the quota
//! ledger inside it (touched only when an allocation starts or ends), and a
//! [`Board`] where workers 1.. publish their counters a few times a second
//! for `/stats` on worker 0.

use std::collections::BTreeMap;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;

use switchboard_core::directory::WorkerId;
use switchboard_core::sfu::SfuMessage;
use switchboard_core::signal::RoomEvent;
use switchboard_core::ConnId;
use tracing::{error, info};

use crate::listen::{Listener, Listeners, Socket};
use crate::Settings;

/// How often a worker other than 0 publishes its counters, at most.
pub const PUBLISH_EVERY: Duration = Duration::from_millis(100);

/// A stream connection moving from one worker to another, with its state.
#[derive(Debug)]
pub struct Adopted {
    /// The socket (connected, non-blocking).
    pub stream: std::net::TcpStream,
    /// Its TLS session, if it came to the TLS listener.
    pub tls: Option<crate::tls::TlsConn>,
    /// What was read of it (decrypted) and not handled: the receiving engine's first input.
    pub pending: Vec<u8>,
    /// What was queued for it (encrypted) and not sent yet.
    pub unsent: Vec<u8>,
}

/// What one worker sends another.
#[derive(Debug)]
pub enum Mail {
    /// To the worker hosting an SFU room: an event of that room.
    Room(RoomEvent),
    /// To worker 0: what an SFU says to a participant, for signaling to send.
    Sfu {
        /// The participant's signaling connection.
        conn: ConnId,
        /// The message.
        msg: SfuMessage,
    },
    /// A stream that belongs to the receiving worker: a TCP relay data
    /// connection (RFC 6062) whose allocation is there.
    Adopt(Box<Adopted>),
    /// Stop gracefully (from worker 0 to the others; to worker 0, a worker failed).
    Stop,
    /// Nothing: a worker that left mail unread wakes itself to read the rest.
    Wake,
}

type Wake = Arc<OnceLock<Box<dyn Fn() + Send + Sync>>>;

/// The way to every worker's mailbox.
#[derive(Clone)]
pub struct Post {
    boxes: Arc<[(Sender<Mail>, Wake)]>,
}

impl Post {
    /// Puts `mail` in worker `to`'s mailbox and wakes it (dropped if that worker has ended).
    pub fn send(&self, to: WorkerId, mail: Mail) {
        if let Some((tx, wake)) = self.boxes.get(to.0) {
            if tx.send(mail).is_ok() {
                if let Some(wake) = wake.get() {
                    wake();
                }
            }
        }
    }

    /// How many workers there are.
    pub fn workers(&self) -> usize {
        self.boxes.len()
    }
}

/// Counters published by the workers, one JSON snapshot each (see
/// [`router::snapshot`](crate::http::router::snapshot)); worker 0 reads its
/// own engine directly.
#[derive(Debug, Default)]
pub struct Board {
    slots: Mutex<Vec<serde_json::Value>>,
}

impl Board {
    /// Worker `w`'s latest snapshot replaces its previous one.
    pub fn publish(&self, w: WorkerId, snapshot: serde_json::Value) {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        if slots.len() <= w.0 {
            slots.resize(w.0 + 1, serde_json::Value::Null);
        }
        slots[w.0] = snapshot;
    }

    /// Worker `w`'s latest snapshot (`Null` before its first).
    pub fn get(&self, w: WorkerId) -> serde_json::Value {
        let slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        slots.get(w.0).cloned().unwrap_or_default()
    }
}

/// One worker's identity and its ways to the others.
pub struct Worker {
    /// Which worker this is.
    pub id: WorkerId,
    inbox: Receiver<Mail>,
    wake: Wake,
    /// The way to every worker (this one included).
    pub post: Post,
    /// Where counters are published.
    pub board: Arc<Board>,
    /// Reserved relay sockets (EVEN-PORT with R), parked by the worker that
    /// bound them until an Allocate with the token takes them, on whichever
    /// worker it lands.
    pub parked: Parked,
}

/// Relay sockets held for a RESERVATION-TOKEN, shared by the workers. Not
/// read while parked (nothing is relayed through a reserved port); touched
/// only when a reservation is made, redeemed or expires.
#[derive(Debug, Clone, Default)]
pub struct Parked(Arc<Mutex<BTreeMap<SocketAddr, UdpSocket>>>);

impl Parked {
    fn sockets(&self) -> std::sync::MutexGuard<'_, BTreeMap<SocketAddr, UdpSocket>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Parks the socket bound at `addr`.
    pub fn park(&self, addr: SocketAddr, socket: UdpSocket) {
        self.sockets().insert(addr, socket);
    }

    /// Takes the socket parked at `addr`, if any (dropping it closes it).
    pub fn take(&self, addr: SocketAddr) -> Option<UdpSocket> {
        self.sockets().remove(&addr)
    }
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker").field("id", &self.id).field("workers", &self.post.workers()).finish_non_exhaustive()
    }
}

impl Worker {
    /// `n` workers (at least 1) that can reach each other.
    pub fn team(n: usize) -> Vec<Worker> {
        let (mut boxes, mut inboxes) = (Vec::new(), Vec::new());
        for _ in 0..n.max(1) {
            let (tx, rx) = mpsc::channel();
            boxes.push((tx, Wake::default()));
            inboxes.push(rx);
        }
        let post = Post { boxes: boxes.into() };
        let board = Arc::new(Board::default());
        let parked = Parked::default();
        inboxes
            .into_iter()
            .enumerate()
            .map(|(i, inbox)| Worker {
                id: WorkerId(i),
                inbox,
                wake: post.boxes[i].1.clone(),
                post: post.clone(),
                board: board.clone(),
                parked: parked.clone(),
            })
            .collect()
    }

    /// The one worker of a process that runs one.
    pub fn alone() -> Worker {
        Worker::team(1).remove(0)
    }

    /// How many workers there are.
    pub fn count(&self) -> usize {
        self.post.workers()
    }

    /// Installs what wakes this worker's event loop when mail arrives (once;
    /// later calls are ignored). Mail sent before is waiting in the inbox:
    /// read it after installing.
    pub fn on_mail(&self, wake: impl Fn() + Send + Sync + 'static) {
        let _ = self.wake.set(Box::new(wake));
    }

    /// The next mail, if any.
    pub fn try_recv(&self) -> Option<Mail> {
        self.inbox.try_recv().ok()
    }
}

/// A worker's bound listeners and identity, ready to run on its thread.
#[derive(Debug)]
pub struct Setup {
    /// The settings (shared configuration: secret, nonce key, quota ledger).
    pub settings: Settings,
    /// The worker's listener table, bound.
    pub listeners: Listeners,
    /// Its sockets, in table order.
    pub sockets: Vec<(Listener, Socket)>,
    /// Its identity and mailboxes.
    pub worker: Worker,
}

/// Binds every worker's listeners: worker 0's first (a port given as 0 is
/// resolved there), then the others on the same STUN/TURN addresses and
/// their own media ports.
pub fn prepare(settings: &Settings) -> io::Result<Vec<Setup>> {
    let mut setups: Vec<Setup> = Vec::with_capacity(settings.workers);
    for worker in Worker::team(settings.workers) {
        let first = setups.first().map(|s| &s.listeners);
        let (listeners, sockets) = Listeners::for_worker(settings, worker.id.0, first)?.bind()?;
        setups.push(Setup { settings: settings.clone(), listeners, sockets, worker });
    }
    Ok(setups)
}

/// What a worker did, told when it stopped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StopReport {
    /// Allocations ended by the stop.
    pub allocations_released: usize,
    /// Relay sockets still open after it (0 when all went well).
    pub relays_open: usize,
    /// Packets relayed over the server's life.
    pub relayed_packets: u64,
    /// SFU packets forwarded over the server's life.
    pub forwarded_packets: u64,
}

impl std::ops::AddAssign for StopReport {
    fn add_assign(&mut self, o: StopReport) {
        self.allocations_released += o.allocations_released;
        self.relays_open += o.relays_open;
        self.relayed_packets += o.relayed_packets;
        self.forwarded_packets += o.forwarded_packets;
    }
}

/// Workers 1.. running on threads of their own.
pub struct Others {
    post: Post,
    threads: Vec<JoinHandle<io::Result<StopReport>>>,
}

/// Starts workers 1.. of `setups` on threads named `switchboard-w{i}`, each
/// running `run`; returns worker 0's setup for the calling thread to run. A
/// worker that fails tells worker 0 to stop the others.
pub fn start_others(
    mut setups: Vec<Setup>,
    run: fn(Setup) -> io::Result<StopReport>,
) -> io::Result<(Setup, Others)> {
    let rest = setups.split_off(1);
    let first = setups.pop().expect("at least one worker");
    let post = first.worker.post.clone();
    let mut threads = Vec::new();
    for setup in rest {
        let post = post.clone();
        let id = setup.worker.id;
        let t = std::thread::Builder::new().name(format!("switchboard-w{}", id.0)).spawn(move || {
            let r = run(setup);
            if let Err(e) = &r {
                error!(worker = id.0, "worker failed: {e}");
                post.send(WorkerId(0), Mail::Stop);
            }
            r
        })?;
        threads.push(t);
    }
    Ok((first, Others { post, threads }))
}

impl Others {
    /// Stops every other worker, waits for them, and logs what the whole
    /// server did (`first`: worker 0's report). The first error wins.
    pub fn stop(self, first: io::Result<StopReport>) -> io::Result<()> {
        for i in 1..self.post.workers() {
            self.post.send(WorkerId(i), Mail::Stop);
        }
        let mut total = StopReport::default();
        let mut result = first.map(|r| total += r);
        for t in self.threads {
            let r = t.join().unwrap_or_else(|_| Err(io::Error::other("a worker panicked")));
            match r {
                Ok(r) => total += r,
                Err(e) => result = result.and(Err(e)),
            }
        }
        info!(
            workers = self.post.workers(),
            allocations_released = total.allocations_released,
            relays_open = total.relays_open,
            relayed_packets = total.relayed_packets,
            forwarded_packets = total.forwarded_packets,
            "stopped"
        );
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mail_reaches_its_worker_and_wakes_it() {
        let team = Worker::team(3);
        let woken = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let w = woken.clone();
        // Mail before the waker is installed waits in the inbox.
        team[0].post.send(WorkerId(2), Mail::Stop);
        team[2].on_mail(move || {
            w.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        });
        team[0].post.send(WorkerId(2), Mail::Room(RoomEvent::Leave { conn: ConnId(5) }));
        assert_eq!(woken.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert!(matches!(team[2].try_recv(), Some(Mail::Stop)));
        assert!(matches!(team[2].try_recv(), Some(Mail::Room(RoomEvent::Leave { conn: ConnId(5) }))));
        assert!(team[2].try_recv().is_none() && team[1].try_recv().is_none());
        // To a worker that does not exist: dropped.
        team[0].post.send(WorkerId(9), Mail::Stop);
    }

    #[test]
    fn workers_share_the_turn_address_and_have_media_ports_of_their_own() {
        let any = Some("127.0.0.1:0".parse().unwrap());
        let args = crate::ServeArgs {
            workers: Some(3),
            turn_listen: any,
            http_listen: any,
            media_listen: any,
            ..Default::default()
        };
        let settings = args.resolve().unwrap();
        let setups = prepare(&settings).unwrap();
        assert_eq!(setups.len(), 3);
        use crate::listen::ListenerKind::*;
        let turn = setups[0].listeners.addr_of(TurnUdp).unwrap();
        let turn_tcp = setups[0].listeners.addr_of(TurnTcp).unwrap();
        assert_ne!(turn.port(), 0);
        let mut media = Vec::new();
        for (i, s) in setups.iter().enumerate() {
            assert_eq!(s.worker.id, WorkerId(i));
            assert_eq!(s.listeners.addr_of(TurnUdp), Some(turn), "worker {i}");
            assert_eq!(s.listeners.addr_of(TurnTcp), Some(turn_tcp), "worker {i}");
            assert_eq!(s.listeners.addr_of(Http).is_some(), i == 0, "HTTP on worker 0 only");
            media.push(s.listeners.addr_of(Media).unwrap());
        }
        media.sort();
        media.dedup();
        assert_eq!(media.len(), 3, "a media port per worker: {media:?}");
    }
}
