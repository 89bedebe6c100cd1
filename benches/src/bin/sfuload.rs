//! An SFU load generator: R rooms of P participants, each the core's sans-IO
//! [`Bot`] (a str0m client) over a real WebSocket (signaling at `ws://HOST/ws`)
//! and a real UDP socket on loopback, against a running `switchboard` server.
//!
//!     sfuload --http 127.0.0.1:8080 --rooms 1 --participants 16 --seconds 10
//!
//! Bots are spread over `--threads` threads; each thread owns its bots'
//! sockets in one mio `Poll` and sleeps until a socket is readable or the
//! earliest bot deadline. Every bot publishes audio (50 packets/s) and video
//! (`--video-pps`, per simulcast layer with `--simulcast`), 160-byte payloads
//! carrying the send time, and subscribes to everyone else in its room.
//!
//! Phases: join and connect (until every bot is connected and receives audio
//! and video from every other bot of its room, or `--connect-timeout`; it
//! measures anyway after a timeout and says so), a warm-up (`--warmup`), then
//! the measured window (`--seconds`), then `--drain` seconds for late packets.
//! Counting is by send time, so a queue in the server neither inflates nor
//! hides anything: `published` is what the bots sent during the window;
//! `received` is what subscribers got of the packets sent during the window
//! (whenever they arrived, up to the drain); `expected` is, per subscriber,
//! what the others of its room published that the SFU forwards (audio, and
//! one of the three layers with `--simulcast`). Subscriber-tracks are the
//! (publisher, kind) pairs each subscriber received in the window. The whole
//! run is bounded by `--max-seconds`; it stops by itself.
//!
//! Output: one JSON line on stdout (keys as in `Report`), then a human
//! summary on stderr, including the server's CPU (from /proc/PID/stat, PID
//! from `--server-pid` or the process listening on the HTTP port) and the
//! load generator's own, since both share the machine's cores.

use std::collections::BTreeMap;
use std::io::ErrorKind;
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use clap::Parser;
use mio::net::UdpSocket;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};
use switchboard_core::lab::{Bot, Latency, Received};
use tungstenite::{Message, WebSocket};

#[derive(Parser, Debug)]
#[command(about = "SFU load generator: rooms of bots over WebSocket + UDP on loopback")]
struct Args {
    /// The server's HTTP address (signaling at /ws).
    #[arg(long, default_value = "127.0.0.1:8080")]
    http: SocketAddr,
    /// Rooms.
    #[arg(long, default_value_t = 1)]
    rooms: usize,
    /// Participants per room.
    #[arg(long, default_value_t = 4)]
    participants: usize,
    /// Threads driving the bots [default: available cores].
    #[arg(long)]
    threads: Option<usize>,
    /// Video packets per second per bot (per layer with --simulcast).
    #[arg(long, default_value_t = 100)]
    video_pps: u32,
    /// Publish video as three simulcast layers (l, m, h).
    #[arg(long)]
    simulcast: bool,
    /// Seconds between the end of the connect phase and the window.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Seconds of the measured window.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Most seconds to wait for every bot to connect and hear every other.
    #[arg(long, default_value_t = 20.0)]
    connect_timeout: f64,
    /// Seconds after the window to wait for packets published in it (later ones count as lost).
    #[arg(long, default_value_t = 1.0)]
    drain: f64,
    /// Hard bound on the whole run, in seconds.
    #[arg(long, default_value_t = 60.0)]
    max_seconds: f64,
    /// The server's pid (for its CPU time); found from the HTTP port's listening socket when absent.
    #[arg(long)]
    server_pid: Option<u32>,
}

/// The measured window, set once by the main thread when the connect phase ends.
#[derive(Clone, Copy)]
struct Plan {
    start: Instant,
    end: Instant,
    /// When the threads report: `end` plus the drain time for late packets.
    report: Instant,
}

/// What the threads share: the plan, the stop flag, and progress counters.
struct Shared {
    plan: OnceLock<Plan>,
    stop: AtomicBool,
    deadline: Instant,
    connected: AtomicUsize,
    meshed: AtomicUsize,
    /// Threads that failed to set up their bots.
    failed: AtomicUsize,
}

/// One bot with its sockets.
struct Live {
    bot: Bot,
    room: usize,
    ws: WebSocket<TcpStream>,
    ws_ok: bool,
    udp: UdpSocket,
    local: SocketAddr,
    start: Option<Snap>,
    end: Option<Snap>,
    meshed: bool,
    connected: bool,
}

/// A bot's counters at one moment.
#[derive(Clone)]
struct Snap {
    sent: (u64, u64),
    received: Received,
}

/// What one bot did over the window.
#[derive(Debug, Clone, Default)]
struct BotResult {
    room: usize,
    sent_audio: u64,
    sent_video: u64,
    received: u64,
    tracks: u64,
    connected: bool,
    meshed: bool,
}

/// What one thread reports at the end of the window.
struct ThreadResult {
    bots: Vec<BotResult>,
    latency: Latency,
    /// How late the thread woke for its timers in the window (the machine's scheduling delay, and its own).
    wake_late: Latency,
    ws_errors: u64,
    send_errors: u64,
}

const WAKER: Token = Token(usize::MAX);

fn snap(b: &Bot) -> Snap {
    Snap { sent: b.sent(), received: b.received().clone() }
}

/// Whether the bot is connected and hears audio and video from `others` publishers.
fn hears_all(b: &Bot, others: usize) -> bool {
    b.is_connected() && b.received().values().filter(|(a, v)| *a > 0 && *v > 0).count() >= others
}

/// Raises a UDP socket's receive buffer (the generator must not be where packets drop).
fn raise_rcvbuf(s: &UdpSocket, bytes: i32) {
    let fd = s.as_raw_fd();
    let len = std::mem::size_of::<i32>() as libc::socklen_t;
    let p = (&bytes as *const i32).cast();
    // SAFETY: fd is a live socket owned by `s`; the option value is a valid i32 of `len` bytes.
    unsafe {
        if libc::setsockopt(fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, p, len) != 0 {
            libc::setsockopt(fd, libc::SOL_SOCKET, libc::SO_RCVBUF, p, len);
        }
    }
}

fn start_bot(args: &Args, epoch: Instant, room: usize, idx: usize, run: &str) -> std::io::Result<Live> {
    let tcp = TcpStream::connect_timeout(&args.http, Duration::from_secs(5))?;
    tcp.set_read_timeout(Some(Duration::from_secs(5)))?;
    tcp.set_nodelay(true)?;
    let (ws, _) = tungstenite::client(format!("ws://{}/ws", args.http), tcp).map_err(|e| std::io::Error::other(e.to_string()))?;
    ws.get_ref().set_nonblocking(true)?;
    let std_udp = std::net::UdpSocket::bind("127.0.0.1:0")?;
    std_udp.set_nonblocking(true)?;
    let udp = UdpSocket::from_std(std_udp);
    raise_rcvbuf(&udp, 4 << 20);
    let local = udp.local_addr()?;
    let tag: [u8; 8] = format!("r{:03}p{:03}", room % 1000, idx % 1000).into_bytes().try_into().expect("8 bytes");
    let mut bot = Bot::new(Instant::now(), local, &format!("sfuload-{run}-{room}"), tag)
        .with_epoch(epoch)
        .with_video_interval(Duration::from_secs(1) / args.video_pps.max(1));
    if args.simulcast {
        bot = bot.with_simulcast();
    }
    Ok(Live { bot, room, ws, ws_ok: true, udp, local, start: None, end: None, meshed: false, connected: false })
}

/// Sends what the bot has queued: signaling and datagrams.
fn flush(l: &mut Live, send_errors: &mut u64, ws_errors: &mut u64) {
    while let Some(text) = l.bot.poll_signal() {
        if !l.ws_ok {
            continue;
        }
        match l.ws.send(Message::text(text)) {
            Ok(()) => {}
            // Queued in tungstenite's buffer; flushed when the socket is writable.
            Err(tungstenite::Error::Io(e)) if e.kind() == ErrorKind::WouldBlock => {}
            Err(_) => {
                l.ws_ok = false;
                *ws_errors += 1;
            }
        }
    }
    while let Some((to, data)) = l.bot.poll_transmit() {
        if l.udp.send_to(&data, to).is_err() {
            *send_errors += 1;
        }
    }
}

fn read_ws(l: &mut Live, ws_errors: &mut u64) {
    while l.ws_ok {
        match l.ws.read() {
            Ok(Message::Text(t)) => l.bot.handle_signal(Instant::now(), t.as_str()),
            Ok(_) => {}
            Err(tungstenite::Error::Io(e)) if e.kind() == ErrorKind::WouldBlock => break,
            Err(_) => {
                l.ws_ok = false;
                *ws_errors += 1;
            }
        }
    }
    if l.ws_ok {
        match l.ws.flush() {
            Ok(()) => {}
            Err(tungstenite::Error::Io(e)) if e.kind() == ErrorKind::WouldBlock => {}
            Err(_) => {
                l.ws_ok = false;
                *ws_errors += 1;
            }
        }
    }
}

/// One thread: creates its bots, then drives them until told to stop (or the deadline).
fn worker(
    args: Arc<Args>,
    shared: Arc<Shared>,
    mine: Vec<(usize, usize)>,
    epoch: Instant,
    run: String,
    mut poll: Poll,
    done: mpsc::Sender<ThreadResult>,
) -> std::io::Result<()> {
    let mut events = Events::with_capacity(1024);
    let mut bots = Vec::with_capacity(mine.len());
    let (mut ws_errors, mut send_errors) = (0u64, 0u64);
    let others = args.participants.saturating_sub(1);
    for (i, &(room, idx)) in mine.iter().enumerate() {
        let mut l = start_bot(&args, epoch, room, idx, &run)?;
        poll.registry().register(&mut l.udp, Token(2 * i), Interest::READABLE)?;
        let fd = l.ws.get_ref().as_raw_fd();
        poll.registry().register(&mut SourceFd(&fd), Token(2 * i + 1), Interest::READABLE | Interest::WRITABLE)?;
        flush(&mut l, &mut send_errors, &mut ws_errors);
        read_ws(&mut l, &mut ws_errors);
        bots.push(l);
    }
    let mut buf = vec![0u8; 2048];
    let mut reported = false;
    let mut windowed = false;
    let mut wake_late = Latency::default();
    let mut next_status = Instant::now();
    loop {
        let now = Instant::now();
        if now >= shared.deadline || shared.stop.load(Ordering::Relaxed) {
            break;
        }
        let plan = shared.plan.get().copied();
        // Phase boundaries, checked before this wake's work so the window holds whole wakes.
        if let Some(p) = plan {
            if !windowed {
                windowed = true;
                for l in bots.iter_mut() {
                    l.bot.set_latency_window(p.start, p.end);
                }
            }
            if now >= p.start && bots.first().is_some_and(|b| b.start.is_none()) {
                for l in bots.iter_mut() {
                    l.start = Some(snap(&l.bot));
                    l.bot.reset_latency();
                }
                wake_late.clear();
            }
            if now >= p.end && bots.first().is_some_and(|b| b.end.is_none()) {
                for l in bots.iter_mut() {
                    l.end = Some(snap(&l.bot));
                }
            }
            if now >= p.report && !reported {
                reported = true;
                let mut latency = Latency::default();
                let results = bots
                    .iter()
                    .map(|l| {
                        // Received: what was published in the window and arrived by the report
                        // (the latency window counts by send time); tracks: what flowed in the window.
                        latency.merge(l.bot.latency());
                        let s0 = l.start.clone().unwrap_or_else(|| snap(&l.bot));
                        let s1 = l.end.clone().unwrap_or_else(|| snap(&l.bot));
                        let mut tracks = 0;
                        for (tag, (a, v)) in &s1.received {
                            let (a0, v0) = s0.received.get(tag).copied().unwrap_or_default();
                            tracks += u64::from(a > &a0) + u64::from(v > &v0);
                        }
                        BotResult {
                            room: l.room,
                            sent_audio: s1.sent.0 - s0.sent.0,
                            sent_video: s1.sent.1 - s0.sent.1,
                            received: l.bot.latency().count(),
                            tracks,
                            connected: l.bot.is_connected(),
                            meshed: l.meshed,
                        }
                    })
                    .collect();
                let _ = done.send(ThreadResult { bots: results, latency, wake_late: wake_late.clone(), ws_errors, send_errors });
            }
        }
        if plan.is_none() && now >= next_status {
            next_status = now + Duration::from_millis(50);
            for l in bots.iter_mut() {
                if !l.connected && l.bot.is_connected() {
                    l.connected = true;
                    shared.connected.fetch_add(1, Ordering::Relaxed);
                }
                if !l.meshed && hears_all(&l.bot, others) {
                    l.meshed = true;
                    shared.meshed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        // Sleep until a socket is ready or the earliest deadline.
        let mut wake = shared.deadline.min(now + Duration::from_millis(200));
        if plan.is_none() {
            wake = wake.min(next_status);
        }
        if let Some(p) = plan {
            if bots.first().is_some_and(|b| b.start.is_none()) {
                wake = wake.min(p.start);
            } else if bots.first().is_some_and(|b| b.end.is_none()) {
                wake = wake.min(p.end);
            } else if !reported {
                wake = wake.min(p.report);
            }
        }
        for l in &bots {
            wake = wake.min(l.bot.poll_timeout());
        }
        let timeout = wake.saturating_duration_since(now);
        if let Err(e) = poll.poll(&mut events, Some(timeout)) {
            if e.kind() != ErrorKind::Interrupted {
                return Err(e);
            }
        }
        if events.is_empty() {
            wake_late.record(Instant::now().saturating_duration_since(wake));
        }
        for ev in events.iter() {
            if ev.token() == WAKER {
                continue;
            }
            let (i, is_ws) = (ev.token().0 / 2, ev.token().0 % 2 == 1);
            let Some(l) = bots.get_mut(i) else { continue };
            if is_ws {
                read_ws(l, &mut ws_errors);
            } else {
                loop {
                    match l.udp.recv_from(&mut buf) {
                        Ok((n, from)) => l.bot.handle_datagram(Instant::now(), from, l.local, &buf[..n]),
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == ErrorKind::Interrupted => {}
                        // ICMP errors (e.g. a port unreachable) surface here; keep reading.
                        Err(_) => {}
                    }
                }
            }
            flush(l, &mut send_errors, &mut ws_errors);
        }
        let now = Instant::now();
        for l in bots.iter_mut() {
            if l.bot.poll_timeout() <= now {
                l.bot.handle_timeout(now);
                flush(l, &mut send_errors, &mut ws_errors);
            }
        }
    }
    Ok(())
}

/// utime and stime of a process (or `self`), in seconds, from /proc/PID/stat.
fn cpu_times(pid: &str) -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may contain spaces), which ends at the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 after the state (field 3).
    let (user, sys): (u64, u64) = (f.get(11)?.parse().ok()?, f.get(12)?.parse().ok()?);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = if hz > 0 { hz as f64 } else { 100.0 };
    Some((user as f64 / hz, sys as f64 / hz))
}

/// utime + stime of a process (or `self`), in seconds.
fn cpu_seconds(pid: &str) -> Option<f64> {
    cpu_times(pid).map(|(u, s)| u + s)
}

/// UDP counters of the whole host (/proc/net/snmp): RcvbufErrors, SndbufErrors.
fn udp_errors() -> (u64, u64) {
    let Ok(text) = std::fs::read_to_string("/proc/net/snmp") else { return (0, 0) };
    let lines: Vec<&str> = text.lines().filter(|l| l.starts_with("Udp:")).collect();
    let (Some(names), Some(values)) = (lines.first(), lines.get(1)) else { return (0, 0) };
    let map: BTreeMap<&str, u64> = names.split_whitespace().zip(values.split_whitespace()).filter_map(|(n, v)| Some((n, v.parse().ok()?))).collect();
    let get = |k| map.get(k).copied().unwrap_or(0);
    (get("RcvbufErrors"), get("SndbufErrors"))
}

/// Datagrams the kernel dropped on the UDP sockets of process `pid` (or
/// `self`) because they were full: the `drops` column of /proc/net/udp{,6}
/// for the socket inodes among /proc/PID/fd.
fn udp_drops(pid: &str) -> u64 {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else { return 0 };
    let inodes: std::collections::BTreeSet<String> = fds
        .flatten()
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .filter_map(|l| l.to_str().and_then(|s| s.strip_prefix("socket:[")?.strip_suffix(']').map(str::to_string)))
        .collect();
    let mut drops = 0;
    for file in ["/proc/net/udp", "/proc/net/udp6"] {
        let Ok(text) = std::fs::read_to_string(file) else { continue };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            // ... inode is field 10, drops the last (13th).
            if f.len() >= 13 && inodes.contains(f[9]) {
                drops += f[12].parse::<u64>().unwrap_or(0);
            }
        }
    }
    drops
}

/// The pid of the process listening on TCP `addr`: its socket's inode from
/// /proc/net/tcp{,6}, then the process with that socket among /proc/*/fd.
fn pid_listening_on(addr: SocketAddr) -> Option<u32> {
    let port = format!("{:04X}", addr.port());
    let mut inodes = Vec::new();
    for file in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(file) else { continue };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            // local_address is "ADDR:PORT" in hex; state 0A is LISTEN; the inode is field 10.
            if f.len() > 9 && f[1].rsplit(':').next() == Some(port.as_str()) && f[3] == "0A" {
                inodes.push(format!("socket:[{}]", f[9]));
            }
        }
    }
    if inodes.is_empty() {
        return None;
    }
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else { continue };
        for fd in fds.flatten() {
            if let Ok(link) = std::fs::read_link(fd.path()) {
                if inodes.iter().any(|i| link.as_os_str() == i.as_str()) {
                    return Some(pid);
                }
            }
        }
    }
    None
}

/// The run's result, printed as one JSON line.
#[derive(Debug, Default)]
struct Report {
    rooms: usize,
    participants: usize,
    bots: usize,
    threads: usize,
    video_pps: u32,
    simulcast: bool,
    connected: usize,
    meshed: usize,
    connect_s: f64,
    window_s: f64,
    subscriber_tracks: u64,
    published: u64,
    expected: u64,
    received: u64,
    delivery_pct: f64,
    min_bot_delivery_pct: f64,
    forwarded_pps: f64,
    latency_samples: u64,
    latency_p50_ms: f64,
    latency_p90_ms: f64,
    latency_p99_ms: f64,
    latency_p999_ms: f64,
    latency_max_ms: f64,
    loadgen_wake_late_p99_ms: f64,
    loadgen_wake_late_max_ms: f64,
    server_pid: Option<u32>,
    server_cpu_s: Option<f64>,
    server_cpu_us_per_forwarded: Option<f64>,
    server_user_us_per_forwarded: Option<f64>,
    server_sys_us_per_forwarded: Option<f64>,
    subscriber_tracks_per_core: Option<f64>,
    loadgen_cpu_s: f64,
    udp_rcvbuf_errors: u64,
    udp_sndbuf_errors: u64,
    server_udp_drops: Option<u64>,
    loadgen_udp_drops: u64,
    ws_errors: u64,
    send_errors: u64,
}

impl Report {
    fn json(&self) -> String {
        let opt = |v: Option<f64>, p: usize| v.map_or("null".to_string(), |v| format!("{v:.p$}"));
        format!(
            concat!(
                "{{\"rooms\":{},\"participants\":{},\"bots\":{},\"threads\":{},\"video_pps\":{},\"simulcast\":{},",
                "\"connected\":{},\"meshed\":{},\"connect_s\":{:.2},\"window_s\":{:.2},\"subscriber_tracks\":{},",
                "\"published\":{},\"expected\":{},\"received\":{},\"delivery_pct\":{:.3},\"min_bot_delivery_pct\":{:.3},",
                "\"forwarded_pps\":{:.0},\"latency_samples\":{},\"latency_p50_ms\":{:.3},\"latency_p90_ms\":{:.3},\"latency_p99_ms\":{:.3},\"latency_p999_ms\":{:.3},\"latency_max_ms\":{:.3},",
                "\"loadgen_wake_late_p99_ms\":{:.3},\"loadgen_wake_late_max_ms\":{:.3},",
                "\"server_pid\":{},\"server_cpu_s\":{},\"server_cpu_us_per_forwarded\":{},\"server_user_us_per_forwarded\":{},\"server_sys_us_per_forwarded\":{},\"subscriber_tracks_per_core\":{},\"loadgen_cpu_s\":{:.2},",
                "\"udp_rcvbuf_errors\":{},\"udp_sndbuf_errors\":{},\"server_udp_drops\":{},\"loadgen_udp_drops\":{},\"ws_errors\":{},\"send_errors\":{}}}"
            ),
            self.rooms,
            self.participants,
            self.bots,
            self.threads,
            self.video_pps,
            self.simulcast,
            self.connected,
            self.meshed,
            self.connect_s,
            self.window_s,
            self.subscriber_tracks,
            self.published,
            self.expected,
            self.received,
            self.delivery_pct,
            self.min_bot_delivery_pct,
            self.forwarded_pps,
            self.latency_samples,
            self.latency_p50_ms,
            self.latency_p90_ms,
            self.latency_p99_ms,
            self.latency_p999_ms,
            self.latency_max_ms,
            self.loadgen_wake_late_p99_ms,
            self.loadgen_wake_late_max_ms,
            self.server_pid.map_or("null".to_string(), |p| p.to_string()),
            opt(self.server_cpu_s, 2),
            opt(self.server_cpu_us_per_forwarded, 2),
            opt(self.server_user_us_per_forwarded, 2),
            opt(self.server_sys_us_per_forwarded, 2),
            opt(self.subscriber_tracks_per_core, 0),
            self.loadgen_cpu_s,
            self.udp_rcvbuf_errors,
            self.udp_sndbuf_errors,
            self.server_udp_drops.map_or("null".to_string(), |d| d.to_string()),
            self.loadgen_udp_drops,
            self.ws_errors,
            self.send_errors,
        )
    }
}

fn main() {
    let args = Arc::new(Args::parse());
    let began = Instant::now();
    let deadline = began + Duration::from_secs_f64(args.max_seconds.max(1.0));
    let threads = args.threads.unwrap_or_else(|| thread::available_parallelism().map_or(2, |n| n.get())).max(1);
    let server_pid = args.server_pid.or_else(|| pid_listening_on(args.http));
    if server_pid.is_none() {
        eprintln!("sfuload: no --server-pid and no process found listening on {}: server CPU not measured", args.http);
    }
    let shared = Arc::new(Shared {
        plan: OnceLock::new(),
        stop: AtomicBool::new(false),
        deadline,
        connected: AtomicUsize::new(0),
        meshed: AtomicUsize::new(0),
        failed: AtomicUsize::new(0),
    });
    let total = args.rooms * args.participants;
    let run = std::process::id().to_string();
    // Bot k goes to thread k % threads: every thread gets bots of every room.
    let mut assign: Vec<Vec<(usize, usize)>> = vec![Vec::new(); threads];
    for k in 0..total {
        assign[k % threads].push((k / args.participants, k % args.participants));
    }
    let (tx, rx) = mpsc::channel();
    let mut wakers = Vec::new();
    let mut handles = Vec::new();
    for mine in assign.into_iter().filter(|m| !m.is_empty()) {
        let poll = Poll::new().expect("mio poll");
        wakers.push(Waker::new(poll.registry(), WAKER).expect("mio waker"));
        let (args, shared, tx, run) = (args.clone(), shared.clone(), tx.clone(), run.clone());
        handles.push(thread::spawn(move || {
            if let Err(e) = worker(args, shared.clone(), mine, began, run, poll, tx) {
                eprintln!("sfuload: worker failed: {e}");
                shared.failed.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    drop(tx);
    let threads = handles.len();

    // Connect: until every bot hears every other bot of its room, bounded.
    let budget = args.warmup.max(0.0) + args.seconds.max(0.0) + args.drain.max(0.0) + 1.0;
    let connect_until = (began + Duration::from_secs_f64(args.connect_timeout.max(0.0))).min(deadline.checked_sub(Duration::from_secs_f64(budget)).unwrap_or(began));
    let mut last_print = Instant::now();
    while shared.meshed.load(Ordering::Relaxed) < total && Instant::now() < connect_until {
        if shared.failed.load(Ordering::Relaxed) > 0 {
            shared.stop.store(true, Ordering::Relaxed);
            for w in &wakers {
                let _ = w.wake();
            }
            for h in handles {
                let _ = h.join();
            }
            eprintln!("sfuload: giving up: a thread could not set up its bots (is the server at {} running?)", args.http);
            std::process::exit(1);
        }
        thread::sleep(Duration::from_millis(20));
        if last_print.elapsed() >= Duration::from_secs(1) {
            last_print = Instant::now();
            eprintln!("sfuload: connecting: {}/{total} connected, {}/{total} hear everyone", shared.connected.load(Ordering::Relaxed), shared.meshed.load(Ordering::Relaxed));
        }
    }
    let connect_s = began.elapsed().as_secs_f64();
    let connected = shared.connected.load(Ordering::Relaxed);
    let meshed = shared.meshed.load(Ordering::Relaxed);
    if meshed < total {
        eprintln!("sfuload: connect phase timed out after {connect_s:.1} s: {connected}/{total} connected, {meshed}/{total} hear everyone; measuring anyway");
    }
    let start = Instant::now() + Duration::from_secs_f64(args.warmup.max(0.0));
    let end = (start + Duration::from_secs_f64(args.seconds.max(0.1))).min(deadline - Duration::from_millis(500)).max(start);
    let report = (end + Duration::from_secs_f64(args.drain.max(0.0))).min(deadline - Duration::from_millis(250)).max(end);
    let _ = shared.plan.set(Plan { start, end, report });
    for w in &wakers {
        let _ = w.wake();
    }

    // The window: CPU and host UDP counters read at its edges.
    thread::sleep(start.saturating_duration_since(Instant::now()));
    let cpu0 = server_pid.and_then(|p| cpu_times(&p.to_string()));
    let self0 = cpu_seconds("self").unwrap_or(0.0);
    let udp0 = udp_errors();
    let drops0 = (server_pid.map(|p| udp_drops(&p.to_string())), udp_drops("self"));
    let t0 = Instant::now();
    thread::sleep(end.saturating_duration_since(Instant::now()));
    let cpu1 = server_pid.and_then(|p| cpu_times(&p.to_string()));
    let self1 = cpu_seconds("self").unwrap_or(0.0);
    let udp1 = udp_errors();
    let drops1 = (server_pid.map(|p| udp_drops(&p.to_string())), udp_drops("self"));
    let window_s = t0.elapsed().as_secs_f64();

    let mut results = Vec::new();
    while results.len() < threads {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(r) => results.push(r),
            Err(_) => break,
        }
    }
    shared.stop.store(true, Ordering::Relaxed);
    for w in &wakers {
        let _ = w.wake();
    }
    for h in handles {
        let _ = h.join();
    }
    if results.len() < threads {
        eprintln!("sfuload: only {} of {threads} threads reported the window", results.len());
    }

    // Per room: what each publisher sent that the SFU forwards (one layer of its video).
    let layers = if args.simulcast { 3 } else { 1 };
    let mut latency = Latency::default();
    let mut wake_late = Latency::default();
    let mut bots: Vec<BotResult> = Vec::new();
    let mut r = Report { rooms: args.rooms, participants: args.participants, bots: total, threads, video_pps: args.video_pps, simulcast: args.simulcast, ..Report::default() };
    for t in &results {
        latency.merge(&t.latency);
        wake_late.merge(&t.wake_late);
        bots.extend(t.bots.iter().cloned());
        r.ws_errors += t.ws_errors;
        r.send_errors += t.send_errors;
    }
    let mut forwardable: BTreeMap<usize, u64> = BTreeMap::new();
    for b in &bots {
        *forwardable.entry(b.room).or_default() += b.sent_audio + b.sent_video / layers;
    }
    let mut min_pct = f64::INFINITY;
    for b in &bots {
        let expected = forwardable[&b.room] - (b.sent_audio + b.sent_video / layers);
        r.published += b.sent_audio + b.sent_video;
        r.expected += expected;
        r.received += b.received;
        r.subscriber_tracks += b.tracks;
        r.connected += usize::from(b.connected);
        r.meshed += usize::from(b.meshed);
        if expected > 0 {
            min_pct = min_pct.min(100.0 * b.received as f64 / expected as f64);
        }
    }
    r.connect_s = connect_s;
    r.window_s = window_s;
    r.delivery_pct = if r.expected > 0 { 100.0 * r.received as f64 / r.expected as f64 } else { 0.0 };
    r.min_bot_delivery_pct = if min_pct.is_finite() { min_pct } else { 0.0 };
    r.forwarded_pps = r.received as f64 / window_s.max(1e-9);
    r.latency_samples = latency.count();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    r.latency_p50_ms = ms(latency.quantile(0.5));
    r.latency_p90_ms = ms(latency.quantile(0.9));
    r.latency_p99_ms = ms(latency.quantile(0.99));
    r.latency_p999_ms = ms(latency.quantile(0.999));
    r.latency_max_ms = ms(latency.max());
    r.loadgen_wake_late_p99_ms = ms(wake_late.quantile(0.99));
    r.loadgen_wake_late_max_ms = ms(wake_late.max());
    r.server_pid = server_pid;
    let per = |s: f64| (r.received > 0).then(|| s * 1e6 / r.received as f64);
    let cpu = cpu0.zip(cpu1).map(|(a, b)| (b.0 - a.0, b.1 - a.1));
    r.server_cpu_s = cpu.map(|(u, s)| u + s);
    r.server_cpu_us_per_forwarded = r.server_cpu_s.and_then(per);
    r.server_user_us_per_forwarded = cpu.and_then(|(u, _)| per(u));
    r.server_sys_us_per_forwarded = cpu.and_then(|(_, s)| per(s));
    // Subscriber-tracks one core of server CPU serves, counted only when under 0.1% was lost.
    r.subscriber_tracks_per_core =
        r.server_cpu_s.filter(|s| *s > 0.0 && r.delivery_pct >= 99.9).map(|s| r.subscriber_tracks as f64 / (s / window_s));
    r.loadgen_cpu_s = self1 - self0;
    r.udp_rcvbuf_errors = udp1.0.saturating_sub(udp0.0);
    r.udp_sndbuf_errors = udp1.1.saturating_sub(udp0.1);
    r.server_udp_drops = drops0.0.zip(drops1.0).map(|(a, b)| b.saturating_sub(a));
    r.loadgen_udp_drops = drops1.1.saturating_sub(drops0.1);
    println!("{}", r.json());
    eprintln!(
        "sfuload: {} room(s) x {} participants on {} threads, {} video pps{}: {}/{} connected, {}/{} heard everyone after {:.1} s",
        r.rooms,
        r.participants,
        r.threads,
        r.video_pps,
        if r.simulcast { " x3 simulcast layers" } else { "" },
        r.connected,
        r.bots,
        r.meshed,
        r.bots,
        r.connect_s
    );
    eprintln!(
        "  window {:.1} s: {} subscriber-tracks; published {}, expected {}, received {}: delivery {:.2}% (worst bot {:.2}%), {:.0} forwarded packets/s",
        r.window_s, r.subscriber_tracks, r.published, r.expected, r.received, r.delivery_pct, r.min_bot_delivery_pct, r.forwarded_pps
    );
    eprintln!(
        "  latency publisher->subscriber: p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms ({} samples)",
        r.latency_p50_ms, r.latency_p90_ms, r.latency_p99_ms, r.latency_p999_ms, r.latency_max_ms, r.latency_samples
    );
    eprintln!(
        "  load generator timer wakes late by p99 {:.2} ms, max {:.2} ms (scheduling delay on a shared machine shows here)",
        r.loadgen_wake_late_p99_ms, r.loadgen_wake_late_max_ms
    );
    match (r.server_cpu_s, r.server_cpu_us_per_forwarded) {
        (Some(s), Some(us)) => eprintln!(
            "  server (pid {}) CPU {:.2} s = {:.0}% of a core, {:.1} us per forwarded packet ({:.1} user, {:.1} kernel); load generator CPU {:.2} s = {:.0}% of a core",
            server_pid.unwrap_or(0),
            s,
            100.0 * s / window_s,
            us,
            r.server_user_us_per_forwarded.unwrap_or(0.0),
            r.server_sys_us_per_forwarded.unwrap_or(0.0),
            r.loadgen_cpu_s,
            100.0 * r.loadgen_cpu_s / window_s
        ),
        _ => eprintln!("  server CPU not measured; load generator CPU {:.2} s", r.loadgen_cpu_s),
    }
    let server_drops = r.server_udp_drops.unwrap_or(0);
    if r.udp_rcvbuf_errors + r.udp_sndbuf_errors + server_drops + r.loadgen_udp_drops + r.ws_errors + r.send_errors > 0 {
        eprintln!(
            "  errors: UDP drops at full socket buffers: server {server_drops}, load generator {}; whole host RcvbufErrors {} SndbufErrors {}; signaling {}, UDP sends {}",
            r.loadgen_udp_drops, r.udp_rcvbuf_errors, r.udp_sndbuf_errors, r.ws_errors, r.send_errors
        );
    }
}
