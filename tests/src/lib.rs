//! Helpers for the end-to-end tests: start a real server binary on loopback,
//! run real peers (coturn's clients) against it, read what they print.
//!
//! The binaries are looked up next to the test executable (`target/<profile>/`);
//! the README's test command builds them first. Tools that a test needs and
//! that are missing make it fail with a message, never skip.

use std::fs::File;
use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The server binaries every end-to-end test runs against.
pub const SERVERS: &[&str] = &["switchboard", "switchboard-smol"];

/// Path of a binary built in this workspace.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    // target/<profile>/deps/<test> -> target/<profile>/<name>
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let p = dir.join(name);
    assert!(p.exists(), "{} is not built; run the README's test command (it builds all binaries first)", p.display());
    p
}

/// Path of an example built in this workspace (`target/<profile>/examples/<name>`).
pub fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let p = dir.join("examples").join(name);
    assert!(p.exists(), "{} is not built; run the README's test command (it builds all examples first)", p.display());
    p
}

/// Fails the test if `tool` is not installed.
pub fn require(tool: &str) {
    let found = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|d| d.join(tool).exists()))
        .unwrap_or(false);
    assert!(found, "{tool} is missing: install it (the README's test command does: apt-get install coturn)");
}

/// A free even port on 127.0.0.1 for UDP and TCP, with the odd port after it
/// free too (turnutils_peer listens on both), distinct within this process.
pub fn free_port() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let base = 20000 + (std::process::id() % 100) * 200;
    let free = |p: u16| UdpSocket::bind(("127.0.0.1", p)).is_ok() && TcpListener::bind(("127.0.0.1", p)).is_ok();
    for _ in 0..1000 {
        let p = (base + (NEXT.fetch_add(2, Ordering::Relaxed) % 20000)) as u16;
        if free(p) && free(p + 1) {
            return p;
        }
    }
    panic!("no free port");
}

/// A temporary directory for one test's files.
pub fn scratch(name: &str) -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let d = std::env::temp_dir().join(format!("sb-e2e-{}-{}-{}", std::process::id(), name, N.fetch_add(1, Ordering::Relaxed)));
    std::fs::create_dir_all(&d).expect("scratch dir");
    d
}

fn read(path: &Path) -> String {
    let mut s = String::new();
    if let Ok(mut f) = File::open(path) {
        let _ = f.read_to_string(&mut s);
    }
    s
}

/// A process started by a test, stopped (by its pid) when dropped.
pub struct Proc {
    child: Option<Child>,
    out: PathBuf,
    err: PathBuf,
}

impl Proc {
    /// Starts `program` with `args`, output to files in `dir`.
    pub fn spawn(program: &Path, args: &[String], dir: &Path, tag: &str) -> Proc {
        let out = dir.join(format!("{tag}.out"));
        let err = dir.join(format!("{tag}.err"));
        let child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(File::create(&out).expect("stdout file"))
            .stderr(File::create(&err).expect("stderr file"))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display()));
        Proc { child: Some(child), out, err }
    }

    /// The pid.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// What it printed on stdout so far.
    pub fn stdout(&self) -> String {
        read(&self.out)
    }

    /// What it printed on stderr so far.
    pub fn stderr(&self) -> String {
        read(&self.err)
    }

    /// Waits until stdout contains `needle`; panics after `limit`.
    pub fn wait_for(&mut self, needle: &str, limit: Duration) {
        let end = Instant::now() + limit;
        while Instant::now() < end {
            if self.stdout().contains(needle) {
                return;
            }
            if let Some(st) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!("exited with {st} before printing {needle:?}\nstdout:\n{}\nstderr:\n{}", self.stdout(), self.stderr());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("no {needle:?} within {limit:?}\nstdout:\n{}\nstderr:\n{}", self.stdout(), self.stderr());
    }

    /// Sends `signal` by name (`TERM`, `INT`).
    pub fn signal(&self, signal: &str) {
        if let Some(c) = &self.child {
            send_signal(c.id(), signal);
        }
    }

    /// Waits for exit up to `limit`; `None` if still running.
    pub fn wait(&mut self, limit: Duration) -> Option<ExitStatus> {
        let end = Instant::now() + limit;
        let c = self.child.as_mut()?;
        loop {
            if let Ok(Some(st)) = c.try_wait() {
                return Some(st);
            }
            if Instant::now() >= end {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// CPU time used so far, in clock ticks (utime + stime from /proc).
    pub fn cpu_ticks(&self) -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap_or_default();
        let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
        let f: Vec<&str> = after.split_whitespace().collect();
        let t = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        t(11) + t(12)
    }
}

/// Sends a signal by name (`TERM`, `INT`, `KILL`) with kill(1), to a pid this test started.
fn send_signal(pid: u32, signal: &str) {
    let _ = Command::new("kill").args(["-s", signal, &pid.to_string()]).status();
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            if let Ok(None) = c.try_wait() {
                send_signal(c.id(), "TERM");
                let end = Instant::now() + Duration::from_secs(3);
                while Instant::now() < end {
                    if let Ok(Some(_)) = c.try_wait() {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

/// Output of a finished command.
pub struct Run {
    /// Exit status (`None`: killed at the time limit).
    pub status: Option<ExitStatus>,
    /// stdout and stderr together.
    pub output: String,
}

/// Runs a command to completion, killing it after `limit`.
pub fn run(program: &str, args: &[String], limit: Duration) -> Run {
    let dir = scratch("run");
    let mut p = Proc::spawn(Path::new(program), args, &dir, "cmd");
    let status = p.wait(limit);
    let output = format!("{}{}", p.stdout(), p.stderr());
    drop(p);
    let _ = std::fs::remove_dir_all(&dir);
    Run { status, output }
}

/// A running server binary on loopback.
pub struct Server {
    /// The process.
    pub proc: Proc,
    /// The STUN/TURN port.
    pub port: u16,
    /// The HTTP port (web client, /ws, /healthz, /stats).
    pub http_port: u16,
    /// Its scratch directory.
    pub dir: PathBuf,
}

impl Server {
    /// Starts server binary `name` with `serve --turn-listen 127.0.0.1:<free port> --http-listen 127.0.0.1:<free port>` plus `extra`.
    pub fn start(name: &str, extra: &[&str]) -> Server {
        Server::start_on(name, "127.0.0.1", extra)
    }

    /// [`Server::start`] with the STUN/TURN listener on `ip` (such as `::1`) and a free port.
    pub fn start_on(name: &str, ip: &str, extra: &[&str]) -> Server {
        let port = free_port();
        let http_port = free_port();
        let dir = scratch(name);
        let ip: std::net::IpAddr = ip.parse().expect("an IP address");
        let mut args = vec!["serve".to_string(), "--turn-listen".into(), SocketAddr::new(ip, port).to_string()];
        args.extend(["--http-listen".into(), format!("127.0.0.1:{http_port}")]);
        // Any free media port for each worker (there may be more workers than free ports after one).
        args.extend(["--media-listen".into(), "127.0.0.1:0".into()]);
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut proc = Proc::spawn(&bin(name), &args, &dir, "server");
        proc.wait_for("is serving", Duration::from_secs(10));
        Server { proc, port, http_port, dir }
    }
}

impl Server {
    /// `GET path` on the server's HTTP port; returns the status and the body.
    pub fn get(&self, path: &str) -> (u16, String) {
        use std::io::Write;
        let mut tcp = std::net::TcpStream::connect(("127.0.0.1", self.http_port)).expect("connect to the HTTP port");
        tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        write!(tcp, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
        let mut all = Vec::new();
        let mut buf = [0u8; 65536];
        // Read until the body is complete (Content-Length): the server keeps connections alive.
        loop {
            let n = tcp.read(&mut buf).expect("response");
            assert!(n > 0, "connection closed before the response was complete");
            all.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&all).to_string();
            if let Some(end) = text.find("\r\n\r\n") {
                let len: usize = text[..end]
                    .lines()
                    .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap()))
                    .unwrap_or(0);
                if all.len() >= end + 4 + len {
                    return (text[9..12].parse().unwrap(), String::from_utf8_lossy(&all[end + 4..end + 4 + len]).to_string());
                }
            }
        }
    }
}

impl Server {
    /// `/stats`, once every worker has published what it did (workers 1.. do every 100 ms).
    pub fn stats(&self) -> serde_json::Value {
        std::thread::sleep(Duration::from_millis(300));
        let (code, body) = self.get("/stats");
        assert_eq!(code, 200, "/stats: {body}");
        serde_json::from_str(&body).expect("/stats is JSON")
    }
}

/// A TCP connection from the local address `from` (port 0: any) to `to`.
pub fn connect_from(from: SocketAddr, to: SocketAddr) -> TcpStream {
    let s = socket2::Socket::new(socket2::Domain::for_address(to), socket2::Type::STREAM, None).expect("a TCP socket");
    s.bind(&from.into()).expect("bind the local address");
    s.connect(&to.into()).expect("connect");
    s.into()
}

/// coturn's `turnutils_uclient` against a TURN port on 127.0.0.1 (UDP unless `extra` says `-t`, TLS with
/// `-t -S`): 4 clients x 100 messages of 160 bytes, echoed by the peer at `peer_port` through the relay.
pub fn uclient(turn_port: u16, peer_port: u16, extra: &[&str]) -> Run {
    require("turnutils_uclient");
    let mut args: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
    let (p, sp) = (peer_port.to_string(), turn_port.to_string());
    args.extend(["-e", "127.0.0.1", "-r", &p, "-X", "-n", "100", "-m", "4", "-l", "160", "-p", &sp, "127.0.0.1"].map(String::from));
    run("turnutils_uclient", &args, Duration::from_secs(60))
}

/// That a [`uclient`] run succeeded and every one of its 400 messages came back.
pub fn assert_all_relayed(server: &Server, r: &Run, what: &str) {
    assert_eq!(r.status.map(|s| s.success()), Some(true), "{what}: uclient failed\n{}\nserver stderr:\n{}", r.output, server.proc.stderr());
    let t = uclient_totals(&r.output).unwrap_or_else(|| panic!("{what}: no totals in\n{}", r.output));
    assert_eq!((t.sent, t.received, t.lost), (400, 400, 0), "{what}\n{}", r.output);
}

/// coturn's echo peer on 127.0.0.1:<port>.
pub fn peer() -> (Proc, u16) {
    peer_on("127.0.0.1")
}

/// coturn's echo peer on `ip` (such as `::1`) and a free port.
pub fn peer_on(ip: &str) -> (Proc, u16) {
    require("turnutils_peer");
    let port = free_port();
    let dir = scratch("peer");
    let p = Proc::spawn(Path::new("turnutils_peer"), &["-L".into(), ip.into(), "-p".into(), port.to_string()], &dir, "peer");
    // The peer prints nothing when ready; give it a moment to bind.
    let ip: std::net::IpAddr = ip.parse().expect("an IP address");
    let end = Instant::now() + Duration::from_secs(5);
    while UdpSocket::bind((ip, port)).is_ok() && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(10));
    }
    (p, port)
}

/// The totals that turnutils_uclient prints at the end of a run.
#[derive(Debug, PartialEq, Eq)]
pub struct UclientTotals {
    /// tot_send_msgs.
    pub sent: u64,
    /// tot_recv_msgs.
    pub received: u64,
    /// "Total lost packets N".
    pub lost: u64,
}

/// Parses the last `tot_send_msgs=…, tot_recv_msgs=…` and `Total lost packets N` lines.
pub fn uclient_totals(output: &str) -> Option<UclientTotals> {
    let num_after = |line: &str, key: &str| -> Option<u64> {
        let rest = &line[line.find(key)? + key.len()..];
        rest.chars().take_while(|c| c.is_ascii_digit()).collect::<String>().parse().ok()
    };
    let totals = output.lines().rev().find(|l| l.contains("tot_send_msgs=") && !l.contains("msz="))?;
    let lost = output.lines().rev().find(|l| l.contains("Total lost packets"))?;
    Some(UclientTotals {
        sent: num_after(totals, "tot_send_msgs=")?,
        received: num_after(totals, "tot_recv_msgs=")?,
        lost: num_after(lost, "Total lost packets ")?,
    })
}
