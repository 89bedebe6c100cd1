//! `switchboard probe [SERVER]`: the shell of the core's probes
//! ([`switchboard_core::probe`]). It binds the sockets, connects TCP and TLS,
//! moves bytes between them and the probes, and prints what they found, as
//! text for a person or JSON for a script.
//!
//! It is a client command, kept simple: blocking std sockets, one reader
//! thread per socket that stamps each arrival with the time and hands it to
//! the main thread over a channel, and the main thread that owns the probe
//! (and the TLS session) and waits on that channel until the probe's next
//! timeout. Every wait is bounded.

use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, ToSocketAddrs, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{json, Value};
use switchboard_core::probe::{
    direct_call_possible, NatProbe, NatProblem, NatReport, NatSocket, NatType, Timing, TurnFailure, TurnProbe,
    TurnProbeConfig, TurnReport, TurnTransmit, TurnTransport,
};
use switchboard_core::turn::auth::{rest_password, rest_username};

use crate::cli::ProbeArgs;

/// The STUN/TURN port when SERVER names none.
const DEFAULT_PORT: u16 = 3478;
/// How long a reader thread blocks before it looks at the stop flag.
const READ_SLICE: Duration = Duration::from_millis(50);
/// Where Debian, Ubuntu, Fedora and Alpine keep the system's CA certificates.
const SYSTEM_CAS: &[&str] = &["/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt", "/etc/ssl/cert.pem"];

/// Runs `probe`; returns the exit code: 0 when everything asked for worked,
/// 1 when the server cannot be reached or a TURN check fails, 2 on a usage error.
pub fn run(name: &str, args: ProbeArgs) -> i32 {
    match probe(&args) {
        Ok((out, code)) => {
            if args.json {
                println!("{}", serde_json::to_string_pretty(&out.json).unwrap_or_default());
            } else {
                print!("{}", out.text);
            }
            code
        }
        Err(e) => {
            eprintln!("{name} probe: {e}");
            2
        }
    }
}

/// What to print.
struct Printed {
    text: String,
    json: Value,
}

/// One TURN check's outcome: the core's report, or why it could not start.
struct TurnOutcome {
    transport: &'static str,
    server: String,
    report: Option<TurnReport>,
    error: Option<String>,
}

impl TurnOutcome {
    fn ok(&self) -> bool {
        self.error.is_none() && self.report.as_ref().is_some_and(TurnReport::ok)
    }
}

fn probe(args: &ProbeArgs) -> Result<(Printed, i32), String> {
    if !(args.timeout.is_finite() && args.timeout > 0.0 && args.timeout <= 600.0) {
        return Err("--timeout must be between 0 and 600 seconds".into());
    }
    let timing = Timing { timeout: Duration::from_secs_f64(args.timeout), ..Timing::default() };
    let server = resolve(&args.server, DEFAULT_PORT)?;
    let creds = credentials(args)?;
    let tls = match &args.turn_tls {
        Some(t) if creds.is_some() => Some(tls_target(t, args.ca.as_deref())?),
        Some(_) => return Err("--turn-tls needs credentials: --user NAME:PASS or --static-auth-secret".into()),
        None => None,
    };
    let local_ip = route_to(server).map_err(|e| format!("no route to {server}: {e}"))?;

    let nat = nat_probe(server, local_ip, timing).map_err(|e| format!("cannot bind UDP sockets: {e}"))?;
    let mut turns = Vec::new();
    if let Some((user, pass)) = &creds {
        if nat.reached() {
            turns.push(turn_check(Via::Udp, server, user, pass, local_ip, timing));
            turns.push(turn_check(Via::Tcp, server, user, pass, local_ip, timing));
        }
        if let Some((addr, tls)) = tls {
            let ip = route_to(addr).unwrap_or(local_ip);
            turns.push(turn_check(Via::Tls(tls), addr, user, pass, ip, timing));
        }
    }
    let code = if nat.reached() && turns.iter().all(TurnOutcome::ok) { 0 } else { 1 };
    let user = creds.as_ref().map(|c| c.0.as_str());
    Ok((Printed { text: text(&nat, &turns, user), json: to_json(&nat, &turns) }, code))
}

/// HOST[:PORT] (or [V6]:PORT) to an address, IPv4 first.
fn resolve(s: &str, default_port: u16) -> Result<SocketAddr, String> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    if let Ok(ip) = s.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, default_port));
    }
    let (host, port) = match s.rsplit_once(':') {
        Some((h, p)) => (h, p.parse::<u16>().map_err(|_| format!("{s}: not HOST[:PORT]"))?),
        None => (s, default_port),
    };
    let addrs: Vec<SocketAddr> = (host, port).to_socket_addrs().map_err(|e| format!("{host}: {e}"))?.collect();
    addrs.iter().find(|a| a.is_ipv4()).or(addrs.first()).copied().ok_or_else(|| format!("{host}: no address"))
}

/// The credentials to check TURN with, if any: a static user, or a REST user made from the secret.
fn credentials(args: &ProbeArgs) -> Result<Option<(String, String)>, String> {
    if let Some(u) = &args.user {
        let (name, pass) = u.split_once(':').ok_or("--user takes NAME:PASS")?;
        return Ok(Some((name.to_owned(), pass.to_owned())));
    }
    Ok(args.static_auth_secret.as_ref().map(|secret| {
        let user = rest_username(crate::unix_now() + 3600, Some("probe"));
        let pass = rest_password(secret.as_bytes(), &user);
        (user, pass)
    }))
}

/// The local IP the system would send to `to` from (no packet is sent).
fn route_to(to: SocketAddr) -> io::Result<IpAddr> {
    let any = if to.is_ipv4() { IpAddr::V4(Ipv4Addr::UNSPECIFIED) } else { IpAddr::V6(Ipv6Addr::UNSPECIFIED) };
    let s = UdpSocket::bind((any, 0))?;
    s.connect(to)?;
    Ok(s.local_addr()?.ip())
}

/// The TLS target of --turn-tls: its address, and a client configuration with its name.
fn tls_target(target: &str, ca: Option<&std::path::Path>) -> Result<(SocketAddr, Tls), String> {
    let addr = resolve(target, 5349)?;
    let host = match target.rsplit_once(':') {
        Some((h, p)) if p.parse::<u16>().is_ok() => h,
        _ => target,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
    let name = ServerName::try_from(host.clone()).map_err(|e| format!("--turn-tls {host}: {e}"))?;
    let mut roots = rustls::RootCertStore::empty();
    let files: Vec<std::path::PathBuf> = match ca {
        Some(f) => vec![f.to_owned()],
        None => SYSTEM_CAS.iter().map(std::path::PathBuf::from).filter(|p| p.exists()).take(1).collect(),
    };
    for f in &files {
        let certs = CertificateDer::pem_file_iter(f).map_err(|e| format!("{}: {e}", f.display()))?;
        for c in certs {
            let c = c.map_err(|e| format!("{}: {e}", f.display()))?;
            // A system bundle may hold a certificate rustls cannot use; the others still count.
            let _ = roots.add(c);
        }
    }
    if roots.is_empty() {
        return Err("no CA certificate to check the TLS server with: give --ca FILE".into());
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok((addr, Tls { config: Arc::new(config), name }))
}

/// A TLS client configuration and the name the server's certificate must carry.
struct Tls {
    config: Arc<rustls::ClientConfig>,
    name: ServerName<'static>,
}

/// What the reader threads hand the main thread.
enum Event {
    Datagram { socket: usize, from: SocketAddr, data: Vec<u8>, at: Instant },
    Stream { data: Vec<u8>, at: Instant },
    Closed { at: Instant },
}

/// The reader threads of one probe, stopped and joined when dropped.
struct Readers {
    tx: Sender<Event>,
    rx: Receiver<Event>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Readers {
    fn new() -> Readers {
        let (tx, rx) = mpsc::channel();
        Readers { tx, rx, stop: Arc::new(AtomicBool::new(false)), threads: Vec::new() }
    }

    /// Reads datagrams from `socket` (a clone) as socket number `id`.
    fn udp(&mut self, id: usize, socket: &UdpSocket) -> io::Result<()> {
        let socket = socket.try_clone()?;
        socket.set_read_timeout(Some(READ_SLICE))?;
        let (tx, stop) = (self.tx.clone(), self.stop.clone());
        self.threads.push(std::thread::spawn(move || {
            let mut buf = vec![0u8; 65536];
            while !stop.load(Ordering::Relaxed) {
                match socket.recv_from(&mut buf) {
                    Ok((n, from)) => {
                        let at = Instant::now();
                        if tx.send(Event::Datagram { socket: id, from, data: buf[..n].to_vec(), at }).is_err() {
                            return;
                        }
                    }
                    Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {}
                    // An ICMP error (nothing listens there) reported on the socket: the probe's timeout decides.
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        }));
        Ok(())
    }

    /// Reads the bytes of `stream` (a clone) until it closes.
    fn tcp(&mut self, stream: &TcpStream) -> io::Result<()> {
        let mut stream = stream.try_clone()?;
        stream.set_read_timeout(Some(READ_SLICE))?;
        let (tx, stop) = (self.tx.clone(), self.stop.clone());
        self.threads.push(std::thread::spawn(move || {
            let mut buf = vec![0u8; 65536];
            while !stop.load(Ordering::Relaxed) {
                match stream.read(&mut buf) {
                    Ok(0) => {
                        let _ = tx.send(Event::Closed { at: Instant::now() });
                        return;
                    }
                    Ok(n) => {
                        if tx.send(Event::Stream { data: buf[..n].to_vec(), at: Instant::now() }).is_err() {
                            return;
                        }
                    }
                    Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted) => {}
                    Err(_) => {
                        let _ = tx.send(Event::Closed { at: Instant::now() });
                        return;
                    }
                }
            }
        }));
        Ok(())
    }

    /// The next event, waiting until `until` at most.
    fn next(&self, until: Instant) -> Option<Event> {
        self.rx.recv_timeout(until.saturating_duration_since(Instant::now())).ok()
    }
}

impl Drop for Readers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// A UDP socket on `ip`, any port.
fn udp_on(ip: IpAddr) -> io::Result<UdpSocket> {
    UdpSocket::bind((ip, 0))
}

/// A hard bound on any probe's run, whatever its timers say.
fn hard_deadline(timing: Timing) -> Instant {
    Instant::now() + timing.timeout * 8 + Duration::from_secs(1)
}

/// RFC 5780 discovery from two sockets on `local_ip`.
fn nat_probe(server: SocketAddr, local_ip: IpAddr, timing: Timing) -> io::Result<NatReport> {
    let mapping = udp_on(local_ip)?;
    let filtering = udp_on(local_ip)?;
    let mut readers = Readers::new();
    readers.udp(0, &mapping)?;
    readers.udp(1, &filtering)?;
    let mut p = NatProbe::new(Instant::now(), server, Some(mapping.local_addr()?), timing, &crate::os_seed());
    let end = hard_deadline(timing);
    while Instant::now() < end {
        while let Some(t) = p.poll_transmit() {
            let socket = if t.socket == NatSocket::Mapping { &mapping } else { &filtering };
            // A failed send is a lost packet: retransmission and the timeout cover it.
            let _ = socket.send_to(&t.payload, t.to);
        }
        let Some(wake) = p.poll_timeout() else { break };
        match readers.next(wake.min(end)) {
            Some(Event::Datagram { socket, from, data, at }) => {
                let socket = if socket == 0 { NatSocket::Mapping } else { NatSocket::Filtering };
                p.handle_input(at, socket, from, &data);
            }
            Some(Event::Stream { .. } | Event::Closed { .. }) => {}
            None => p.handle_timeout(Instant::now()),
        }
    }
    Ok(p.report().clone())
}

/// The connection to the TURN server.
enum Conn {
    Udp(UdpSocket, SocketAddr),
    Tcp(TcpStream),
    Tls(TcpStream, Box<rustls::ClientConnection>),
}

impl Conn {
    /// Sends `bytes` to the server (encrypting them on TLS).
    fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        match self {
            Conn::Udp(s, to) => s.send_to(bytes, *to).map(drop),
            Conn::Tcp(s) => s.write_all(bytes),
            Conn::Tls(s, tls) => {
                tls.writer().write_all(bytes)?;
                flush_tls(s, tls)
            }
        }
    }
}

/// Writes whatever TLS records are waiting (handshake, data, alerts).
fn flush_tls(s: &mut TcpStream, tls: &mut rustls::ClientConnection) -> io::Result<()> {
    while tls.wants_write() {
        tls.write_tls(s)?;
    }
    Ok(())
}

/// How a TURN check reaches the server.
enum Via {
    Udp,
    Tcp,
    Tls(Tls),
}

/// One TURN check over `via`, with the peer socket on `local_ip`.
fn turn_check(via: Via, server: SocketAddr, user: &str, pass: &str, local_ip: IpAddr, timing: Timing) -> TurnOutcome {
    let transport = match via {
        Via::Udp => "udp",
        Via::Tcp => "tcp",
        Via::Tls(_) => "tls",
    };
    let mut outcome = TurnOutcome { transport, server: server.to_string(), report: None, error: None };
    match turn_run(via, server, user, pass, local_ip, timing) {
        Ok(r) => outcome.report = Some(r),
        Err(e) => outcome.error = Some(e),
    }
    outcome
}

/// The server's socket in [`Readers`]; the peer's is 1.
const SERVER_SOCKET: usize = 0;
const PEER_SOCKET: usize = 1;

fn turn_run(via: Via, server: SocketAddr, user: &str, pass: &str, local_ip: IpAddr, timing: Timing) -> Result<TurnReport, String> {
    let io = |e: io::Error| e.to_string();
    let mut readers = Readers::new();
    let peer = udp_on(local_ip).map_err(io)?;
    readers.udp(PEER_SOCKET, &peer).map_err(io)?;
    let connect = |server| {
        let s = TcpStream::connect_timeout(&server, timing.timeout).map_err(|e| format!("cannot connect to {server}: {e}"))?;
        let _ = s.set_nodelay(true);
        Ok::<_, String>(s)
    };
    let mut conn = match via {
        Via::Udp => {
            let s = udp_on(local_ip).map_err(io)?;
            readers.udp(SERVER_SOCKET, &s).map_err(io)?;
            Conn::Udp(s, server)
        }
        Via::Tcp => {
            let s = connect(server)?;
            readers.tcp(&s).map_err(io)?;
            Conn::Tcp(s)
        }
        Via::Tls(t) => {
            let mut s = connect(server)?;
            readers.tcp(&s).map_err(io)?;
            let mut c = rustls::ClientConnection::new(t.config, t.name).map_err(|e| format!("TLS: {e}"))?;
            flush_tls(&mut s, &mut c).map_err(io)?;
            Conn::Tls(s, Box::new(c))
        }
    };
    let transport = if matches!(conn, Conn::Udp(..)) { TurnTransport::Datagram } else { TurnTransport::Stream };
    let config = TurnProbeConfig {
        transport,
        username: user.to_owned(),
        password: pass.to_owned(),
        peer_local: peer.local_addr().map_err(io)?,
        timing,
    };
    let mut p = TurnProbe::new(Instant::now(), config, &crate::os_seed());
    let end = hard_deadline(timing);
    while Instant::now() < end {
        while let Some(t) = p.poll_transmit() {
            match t {
                TurnTransmit::ToServer(bytes) => {
                    if let Err(e) = conn.send(&bytes) {
                        if !matches!(conn, Conn::Udp(..)) {
                            return Err(format!("writing to {server}: {e}"));
                        }
                    }
                }
                TurnTransmit::FromPeer { to, payload } => {
                    let _ = peer.send_to(&payload, to);
                }
            }
        }
        let Some(wake) = p.poll_timeout() else { break };
        match readers.next(wake.min(end)) {
            Some(Event::Datagram { socket: SERVER_SOCKET, data, at, .. }) => p.handle_server_bytes(at, &data),
            Some(Event::Datagram { from, data, at, .. }) => p.handle_peer_datagram(at, from, &data),
            Some(Event::Stream { data, at }) => match &mut conn {
                Conn::Tls(s, tls) => {
                    let plain = tls_read(tls, &data).map_err(|e| format!("TLS with {server}: {e}"))?;
                    flush_tls(s, tls).map_err(io)?;
                    if !plain.is_empty() {
                        p.handle_server_bytes(at, &plain);
                    }
                }
                _ => p.handle_server_bytes(at, &data),
            },
            Some(Event::Closed { at }) => p.handle_closed(at),
            None => p.handle_timeout(Instant::now()),
        }
    }
    if let Conn::Tcp(s) | Conn::Tls(s, _) = &conn {
        let _ = s.shutdown(std::net::Shutdown::Both);
    }
    Ok(p.report().clone())
}

/// Decrypts `data` read from the socket; returns the plaintext it completes.
fn tls_read(tls: &mut rustls::ClientConnection, mut data: &[u8]) -> Result<Vec<u8>, rustls::Error> {
    let mut plain = Vec::new();
    // Each round takes some bytes, or stops: bounded by the data's length.
    while !data.is_empty() {
        let n = tls.read_tls(&mut data).map_err(|e| rustls::Error::General(e.to_string()))?;
        let state = tls.process_new_packets()?;
        let want = state.plaintext_bytes_to_read();
        if want > 0 {
            let at = plain.len();
            plain.resize(at + want, 0);
            let got = tls.reader().read(&mut plain[at..]).unwrap_or(0);
            plain.truncate(at + got);
        }
        if n == 0 {
            break;
        }
    }
    Ok(plain)
}

/// Milliseconds, to a tenth of a microsecond's worth of decimals.
fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e7).round() / 1e4
}

/// The sentence about calls: which other sides connect directly and which need TURN.
fn call_sentence(t: NatType) -> String {
    let same = direct_call_possible(t, t).direct;
    let others: Vec<&str> = NatType::ALL.iter().filter(|o| **o != t && direct_call_possible(t, **o).direct != same).map(|o| o.name()).collect();
    if matches!(t, NatType::OpenInternet | NatType::FullCone) {
        return "You can call anyone directly, whatever NAT they are behind: TURN is needed only for someone whose own network blocks UDP.".into();
    }
    let first = if same { "Two people behind such NATs can call each other directly" } else { "Two people behind such NATs will need TURN" };
    if others.is_empty() {
        return format!("{first}.");
    }
    let list = others.join(" or a ");
    if same {
        format!("{first}; with a {list} on the other side they will need TURN.")
    } else {
        format!("{first}; with a {list} on the other side they can call directly.")
    }
}

fn problem_text(p: &NatProblem, server: SocketAddr) -> String {
    match p {
        NatProblem::NoAnswer => format!("The server did not answer at {server} (UDP): is it running, and is the port open?"),
        NatProblem::BindingRefused(code, reason) => format!("The server refused a Binding request: {code} {reason}."),
        NatProblem::NoOtherAddress => "The server has no second address (no OTHER-ADDRESS in its answer; `switchboard serve --alt-ip` \
             gives it one): only your public address can be known, not how your NAT maps and filters."
            .into(),
        NatProblem::ChangeRequestRefused(code, reason) => {
            format!("The server refused CHANGE-REQUEST ({code} {reason}): it has no second address, so filtering is unknown.")
        }
        NatProblem::ChangeRequestIgnored => "The server ignores CHANGE-REQUEST (its answer came from the address asked), so filtering is unknown.".into(),
        NatProblem::AlternateSilent(a) => format!("The server's alternate address {a} did not answer, so the mapping is unknown."),
        _ => format!("{p:?}"),
    }
}

fn failure_text(f: &TurnFailure) -> String {
    match f {
        TurnFailure::NoAnswer(step) => format!("no answer to {}", step.name()),
        TurnFailure::WrongCredentials => "the server refused the user name or password (wrong credentials)".into(),
        TurnFailure::Rejected { step, code, reason } => format!("{} refused: {code} {reason}", step.name()),
        TurnFailure::BadIntegrity(step) => format!("the answer to {} failed its integrity check (another password?)", step.name()),
        TurnFailure::NoRelayedData(step) => format!("nothing came back through the relay: {}", step.name()),
        TurnFailure::Desynchronized => "the server's stream is not STUN".into(),
        TurnFailure::Closed(step) => format!("the server closed the connection during {}", step.name()),
        _ => format!("{f:?}"),
    }
}

fn text(nat: &NatReport, turns: &[TurnOutcome], user: Option<&str>) -> String {
    use std::fmt::Write as _;
    let mut t = String::new();
    let _ = writeln!(t, "Switchboard probe of {}", nat.server);
    let _ = writeln!(t);
    let _ = writeln!(t, "Your NAT (RFC 5780)");
    if let (Some(local), Some(mapped)) = (nat.local, nat.mapped) {
        let same = if mapped == local { " (the same: no NAT)" } else { "" };
        let _ = writeln!(t, "  Local address:   {local}");
        let _ = writeln!(t, "  Public address:  {mapped}{same}");
    }
    if let Some(o) = nat.other_address {
        let _ = writeln!(t, "  Server's second address: {o}");
    }
    let unknown = "unknown";
    if nat.reached() {
        let _ = writeln!(t, "  Mapping:         {}", nat.mapping.map_or(unknown, |b| b.name()));
        let _ = writeln!(t, "  Filtering:       {}", nat.filtering.map_or(unknown, |b| b.name()));
    }
    for p in &nat.problems {
        let _ = writeln!(t, "  {}", problem_text(p, nat.server));
    }
    if let Some(ty) = nat.nat_type() {
        let _ = writeln!(t);
        match (ty, nat.behind_nat) {
            (NatType::OpenInternet, _) => {
                let _ = writeln!(t, "You are not behind a NAT (open internet): your address is your public address.");
            }
            (_, Some(false)) => {
                let _ = writeln!(t, "You are not behind a NAT, but a firewall filters like a {}.", ty.name());
            }
            _ => {
                let _ = writeln!(t, "You are behind a {}.", ty.name());
            }
        }
        let _ = writeln!(t, "{}", call_sentence(ty));
        let _ = writeln!(t);
        let _ = writeln!(t, "  Calling someone behind    Direct?");
        for other in NatType::ALL {
            let v = direct_call_possible(ty, other);
            let _ = writeln!(t, "  {:<25} {}", other.name(), if v.direct { "yes" } else { "no, needs TURN" });
        }
    }
    if user.is_none() {
        let _ = writeln!(t);
        let _ = writeln!(t, "TURN not checked: give --user NAME:PASS or --static-auth-secret SECRET (and --turn-tls HOST:PORT for TLS).");
    }
    if !turns.is_empty() {
        let _ = writeln!(t);
        let _ = writeln!(t, "TURN (user {})", user.unwrap_or("?"));
        for o in turns {
            let _ = write!(t, "  {} {:<21} ", o.transport, o.server);
            match (&o.error, &o.report) {
                (Some(e), _) => {
                    let _ = writeln!(t, "FAILED: {e}");
                }
                (None, Some(r)) if r.ok() => {
                    let relayed = r.relayed.map(|a| a.to_string()).unwrap_or_default();
                    let rtt = |d: Option<Duration>| d.map_or("-".into(), |d| format!("{:.2} ms", ms(d)));
                    let _ = writeln!(
                        t,
                        "ok: allocated {relayed}, permission, round trip {} (indications), {} (channel), released ({})",
                        rtt(r.rtt_indication),
                        rtt(r.rtt_channel),
                        if r.sha256 { "SHA-256 key, MESSAGE-INTEGRITY-SHA256" } else { "MD5 key, MESSAGE-INTEGRITY" }
                    );
                }
                (None, Some(r)) => {
                    let why = r.failure.as_ref().map_or("incomplete".into(), failure_text);
                    let _ = writeln!(t, "FAILED: {why}");
                }
                (None, None) => {
                    let _ = writeln!(t, "not run");
                }
            }
        }
    }
    t
}

fn addr(a: Option<SocketAddr>) -> Value {
    a.map_or(Value::Null, |a| Value::String(a.to_string()))
}

fn to_json(nat: &NatReport, turns: &[TurnOutcome]) -> Value {
    let ty = nat.nat_type();
    let second = nat.other_address.is_some()
        && !nat.problems.iter().any(|p| matches!(p, NatProblem::NoOtherAddress | NatProblem::ChangeRequestRefused(..)));
    let calls: Vec<Value> = ty
        .map(|ty| {
            NatType::ALL
                .iter()
                .map(|o| {
                    let v = direct_call_possible(ty, *o);
                    json!({ "other": o.id(), "direct": v.direct, "reason": v.reason })
                })
                .collect()
        })
        .unwrap_or_default();
    let turn: Vec<Value> = turns
        .iter()
        .map(|o| {
            let r = o.report.clone().unwrap_or_default();
            let error = o.error.clone().or_else(|| r.failure.as_ref().map(failure_text));
            json!({
                "transport": o.transport,
                "server": o.server,
                "ok": o.ok(),
                "error": error,
                "wrong_credentials": r.failure == Some(TurnFailure::WrongCredentials),
                "realm": r.realm,
                "password_algorithm": if r.realm.is_none() { Value::Null } else if r.sha256 { "SHA-256".into() } else { "MD5".into() },
                "relayed": addr(r.relayed),
                "mapped": addr(r.mapped),
                "lifetime_s": r.lifetime.map(|l| l.as_secs()),
                "permission": r.permission,
                "channel": r.channel,
                "peer": addr(r.peer),
                "rtt_ms": r.rtt_indication.map(ms),
                "rtt_channel_ms": r.rtt_channel.map(ms),
                "released": r.released,
            })
        })
        .collect();
    json!({
        "server": nat.server.to_string(),
        "reached": nat.reached(),
        "nat": {
            "local": addr(nat.local),
            "mapped": addr(nat.mapped),
            "behind_nat": nat.behind_nat,
            "other_address": addr(nat.other_address),
            "second_address": second,
            "mapping": nat.mapping.map(|b| b.id()),
            "filtering": nat.filtering.map(|b| b.id()),
            "type": ty.map(NatType::id),
            "name": ty.map(NatType::name),
            "answered_from": nat.answered_from.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
            "problems": nat.problems.iter().map(|p| problem_text(p, nat.server)).collect::<Vec<_>>(),
        },
        "summary": ty.map(call_sentence),
        "calls": calls,
        "turn": turn,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_call_sentence_in_the_seeds_words() {
        assert_eq!(
            call_sentence(NatType::PortRestrictedCone),
            "Two people behind such NATs can call each other directly; with a symmetric NAT on the other side they will need TURN."
        );
        assert_eq!(
            call_sentence(NatType::Symmetric),
            "Two people behind such NATs will need TURN; with a no NAT (open internet) or a full cone NAT or a restricted cone NAT on the other side they can call directly."
        );
        assert_eq!(call_sentence(NatType::RestrictedCone), "Two people behind such NATs can call each other directly.");
    }

    #[test]
    fn server_addresses_with_and_without_ports() {
        assert_eq!(resolve("127.0.0.1", 3478).unwrap(), "127.0.0.1:3478".parse().unwrap());
        assert_eq!(resolve("127.0.0.1:9", 3478).unwrap(), "127.0.0.1:9".parse().unwrap());
        assert_eq!(resolve("[::1]:9", 3478).unwrap(), "[::1]:9".parse().unwrap());
        assert_eq!(resolve("::1", 3478).unwrap(), "[::1]:3478".parse().unwrap());
        assert_eq!(resolve("localhost:7", 3478).unwrap().port(), 7);
        assert!(resolve("localhost:x", 3478).is_err());
    }
}
