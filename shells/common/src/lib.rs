//! What Switchboard's shells share apart from their event loops: the command
//! line and config file, logging, seeding, the start banner, the listener
//! table, relay socket binding, batched UDP I/O ([`udp`]), and the
//! [`Driver`](driver::Driver) that runs the core's drive contract.
//!
//! What goes on the wire is decided here only where it is HTTP: the routes
//! and their responses ([`http::router`], including the `/stats` JSON) and
//! the HTTP/1.1 and WebSocket framing ([`http`]). Everything STUN, TURN,
//! signaling and SFU (which bytes a client or peer gets, and when) is the
//! core's decision; the driver only passes it on, closing a stream client
//! whose out-queue overflows (see [`sockets::MAX_STREAM_BACKLOG`]).

// The only unsafe code: the system calls of batched UDP I/O (`udp::sys`) and of `os` (descriptor limit, sysconf).
#![deny(unsafe_code)]
#![deny(missing_docs)]

pub mod banner;
pub mod cli;
pub mod coturn;
pub mod driver;
pub mod http;
pub mod limits;
pub mod listen;
pub mod os;
pub mod probe;
pub mod recordings;
pub mod relay;
pub mod sockets;
pub mod tls;
pub mod udp;
pub mod workers;

pub use cli::{Cli, Command, ServeArgs, Settings};

use std::time::{SystemTime, UNIX_EPOCH};

/// Parses the process's command line (exits with usage on error).
pub fn parse_cli() -> Cli {
    <Cli as clap::Parser>::parse()
}

/// Sets up logging to stderr at `level` (a tracing filter such as `info` or
/// `switchboard=debug`; `RUST_LOG`, when set, wins), as `format`: `json`
/// (one object per line) or text, coloured only when stderr is a terminal.
pub fn init_logging(level: &str, format: &str) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let fmt = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match format {
        "json" => fmt.json().with_current_span(false).with_span_list(false).try_init(),
        _ => fmt.with_ansi(std::io::stderr().is_terminal()).try_init(),
    };
}

/// A seed for the core from the operating system's randomness.
pub fn os_seed() -> switchboard_core::Seed {
    let mut seed = [0u8; 32];
    getrandom::getrandom(&mut seed).expect("the OS random source is available");
    seed
}

/// Seconds since the unix epoch, read once at start for the core.
pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// A random secret for REST credentials when none is configured: 32 hex digits.
pub fn random_secret() -> String {
    let mut b = [0u8; 16];
    getrandom::getrandom(&mut b).expect("the OS random source is available");
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// An empty hash map with an OS-seeded hasher, for a shell's socket tables.
pub fn new_map<K, V>() -> switchboard_core::hash::Map<K, V> {
    switchboard_core::hash::Map::with_hasher(switchboard_core::hash::hasher(&os_seed()))
}

/// Reloads the certificate from its files on every SIGHUP, on a thread of
/// its own: TLS connections opened afterwards get the new one, those open
/// (and every call) go on. A file that does not load leaves the old one.
pub fn reload_on_sighup(certs: tls::Certs) -> std::io::Result<()> {
    let mut signals = signal_hook::iterator::Signals::new([signal_hook::consts::SIGHUP])?;
    std::thread::Builder::new().name("switchboard-sighup".into()).spawn(move || {
        for _ in signals.forever() {
            match certs.reload() {
                Ok(()) => tracing::info!(fingerprint = %certs.fingerprint(), "certificate reloaded"),
                Err(e) => tracing::warn!("certificate not reloaded, the old one stays: {e}"),
            }
        }
    })?;
    Ok(())
}

/// `token`: prints a WHIP/WHEP REST token from the configured secret, and exits.
fn print_token(name: &str, t: cli::TokenArgs) -> ! {
    let settings = match t.serve.resolve() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{name}: {e}");
            std::process::exit(2);
        }
    };
    let secret = settings.turn.static_auth_secret.as_deref().filter(|_| !settings.generated_secret);
    let Some(secret) = secret else {
        eprintln!("{name}: no static-auth-secret is configured (a server without one makes a new secret each run): give --static-auth-secret or --config");
        std::process::exit(2);
    };
    println!("{}", switchboard_core::whip::rest_token(secret, unix_now() + t.ttl, t.name.as_deref()));
    std::process::exit(0);
}

/// The `main` of a shell binary: parses the command line, resolves the
/// settings (exit 2 on a config error), sets up logging, and runs `serve`
/// (exit 1 on an I/O error). `token` and `probe` ([`probe::run`]) run and exit instead.
pub fn main_with(name: &str, serve: impl FnOnce(Settings) -> std::io::Result<()>) {
    let args = match parse_cli().command {
        Command::Serve(args) => args,
        Command::Token(t) => print_token(name, t),
        Command::Probe(p) => std::process::exit(probe::run(name, p)),
    };
    let settings = match args.resolve() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{name}: {e}");
            std::process::exit(2);
        }
    };
    init_logging(&settings.log_level, &settings.log_format);
    for note in &settings.config_notes {
        tracing::warn!("{note}");
    }
    // Each connection and relay socket is a descriptor: take what the system allows.
    let fds = os::raise_fd_limit();
    let (cap, per_ip) = settings.conn_limits.caps();
    if cap == 0 {
        settings.conn_limits.set_total((fds / 2).max(64));
    }
    let (cap, _) = settings.conn_limits.caps();
    tracing::info!(descriptors = fds, max_connections = cap, max_connections_per_ip = per_ip, "connection limits");
    if let Some(tls) = &settings.tls {
        if let Err(e) = reload_on_sighup(tls.certs.clone()) {
            eprintln!("{name}: cannot watch SIGHUP: {e}");
            std::process::exit(1);
        }
    }
    if let Err(e) = serve(settings) {
        eprintln!("{name}: {e}");
        std::process::exit(1);
    }
}
