//! The command line (clap) and the TOML config file, merged into [`Settings`].
//!
//! Every `serve` flag has a config-file key of the same name
//! (`--turn-listen` is `turn-listen = "..."`). Flags win over the file, the
//! file over defaults. A setting is declared once, in `serve_settings!`.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use serde::Deserialize;
use switchboard_core::turn::policy::{IpNet, PeerPolicy};
use switchboard_core::sfu::SfuConfig;
use switchboard_core::signal::SignalConfig;
use switchboard_core::turn::TurnConfig;

/// Switchboard: STUN, TURN, signaling and SFU in one server.
#[derive(Debug, Parser)]
#[command(
    name = "switchboard",
    version,
    about = "Switchboard: a WebRTC server — STUN, TURN (coturn-compatible), WebSocket signaling rooms, an SFU \
             and a web client, in one binary",
    long_about = "Switchboard: a WebRTC server — STUN, TURN (coturn-compatible), WebSocket signaling rooms, an SFU \
                  and a web client, in one binary.\n\n`switchboard serve` with no flags serves everything on \
                  loopback; open the printed web address in two tabs to make a call. Every flag is also a key of \
                  the --config file."
)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server.
    Serve(ServeArgs),
    /// Print a REST bearer token for WHIP and WHEP (`Authorization: Bearer TOKEN`), made from the
    /// static-auth-secret of the same flags or config file the server runs with.
    Token(TokenArgs),
    /// Tell what NAT this host is behind (RFC 5780, against a server started with --alt-ip), whether two people
    /// behind such NATs can call each other directly or will need TURN, and, given credentials, check a TURN server
    /// end to end over UDP, TCP and TLS. Exits 0 when everything asked for worked, 1 when the server cannot be
    /// reached or a TURN check fails, 2 on a usage error.
    Probe(ProbeArgs),
}

/// Flags of `probe`.
#[derive(Debug, Args)]
pub struct ProbeArgs {
    /// The STUN/TURN server, as HOST[:PORT] (port 3478 when not given).
    #[arg(default_value = "127.0.0.1:3478", value_name = "SERVER")]
    pub server: String,
    /// TURN credentials as NAME:PASS: checks the server's TURN over UDP and TCP (and TLS with --turn-tls).
    #[arg(long, value_name = "NAME:PASS")]
    pub user: Option<String>,
    /// The server's shared secret for TURN REST credentials (as `switchboard serve --static-auth-secret`): the
    /// probe makes a user valid for an hour from it, as the server's own signaling does.
    #[arg(long, env = "SWITCHBOARD_STATIC_AUTH_SECRET", hide_env_values = true, value_name = "SECRET")]
    pub static_auth_secret: Option<String>,
    /// TURN over TLS (`turns:`) at HOST:PORT: checked too, with the credentials. The certificate must be valid for
    /// HOST.
    #[arg(long, value_name = "HOST:PORT")]
    pub turn_tls: Option<String>,
    /// Trust the certificates in this PEM file for --turn-tls (a self-signed one), instead of the system's CAs.
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// Print JSON (one object) instead of text, for scripts.
    #[arg(long)]
    pub json: bool,
    /// Seconds each request may take before it counts as unanswered (RFC 5780's filtering tests wait this long
    /// behind a NAT that filters).
    #[arg(long, default_value_t = 3.0, value_name = "SECS")]
    pub timeout: f64,
}

/// Flags of `token`.
#[derive(Debug, Args)]
pub struct TokenArgs {
    /// How long the token is valid, in seconds.
    #[arg(long, default_value_t = 86400, value_name = "SECS")]
    pub ttl: u64,
    /// A name carried in the token (shown in nothing; for the operator's records).
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// The server's flags or config file, for its secret.
    #[command(flatten)]
    pub serve: ServeArgs,
}

/// Declares the `serve` settings once: each one's flag (clap attributes and
/// doc), its config-file key (the same name, kebab-case) and its default
/// (after `=`; a setting without one stays optional). From that list come
/// [`ServeArgs`] (flags and file, every field optional), its merge
/// (flags win over the file) and the merged values with defaults filled in.
macro_rules! serve_settings {
    ($(
        $(#[$attr:meta])*
        $name:ident: $ty:ty $(= $default:expr)?;
    )*) => {
        /// Flags of `serve`, or the keys of its config file. All optional:
        /// unset flags come from the file, then from defaults.
        #[derive(Debug, Clone, Default, Args, Deserialize)]
        #[serde(rename_all = "kebab-case", deny_unknown_fields)]
        pub struct ServeArgs {
            /// Config file: TOML with the same keys as these flags, or (named *.conf) coturn's turnserver.conf, whose
    /// shared keys are taken and the others listed in the log.
            #[arg(long, value_name = "FILE")]
            #[serde(skip)]
            pub config: Option<PathBuf>,
            $(
                $(#[$attr])*
                pub $name: Option<$ty>,
            )*
        }

        /// Every setting, flags over file over defaults, before it is checked.
        struct Merged {
            $($name: merged_type!($ty $(, $default)?),)*
        }

        impl ServeArgs {
            /// Fields set here win; unset ones are taken from `file`.
            fn or(self, file: ServeArgs) -> ServeArgs {
                ServeArgs { config: self.config, $($name: self.$name.or(file.$name),)* }
            }

            /// Fills in the defaults.
            fn merged(self) -> Merged {
                Merged { $($name: with_default!(self.$name $(, $default)?),)* }
            }
        }
    };
}

/// A setting's type once merged: plain with a default, else optional.
macro_rules! merged_type {
    ($ty:ty) => { Option<$ty> };
    ($ty:ty, $default:expr) => { $ty };
}

/// A setting's value once merged: the default when unset, if it has one.
macro_rules! with_default {
    ($value:expr) => { $value };
    ($value:expr, $default:expr) => { $value.unwrap_or_else(|| $default) };
}

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("a valid default address")
}

serve_settings! {
    /// STUN/TURN listen address, UDP and TCP [default: 127.0.0.1:3478].
    #[arg(long, value_name = "ADDR")]
    turn_listen: SocketAddr = addr("127.0.0.1:3478");
    /// Address to bind relay sockets on; repeat for one IPv4 and one IPv6 [default: 127.0.0.1].
    #[arg(long, value_name = "IP")]
    relay_ip: Vec<IpAddr> = vec![IpAddr::from([127, 0, 0, 1])];
    /// Lowest relay port [default: 49152].
    #[arg(long, value_name = "PORT")]
    min_port: u16 = 49152;
    /// Highest relay port [default: 65535].
    #[arg(long, value_name = "PORT")]
    max_port: u16 = 65535;
    /// Realm of the long-term credentials [default: switchboard].
    #[arg(long)]
    realm: String = "switchboard".into();
    /// A static TURN user as NAME:PASS; repeatable.
    #[arg(long, value_name = "NAME:PASS")]
    user: Vec<String> = Vec::new();
    /// Shared secret for TURN REST API credentials (coturn's static-auth-secret).
    #[arg(long, env = "SWITCHBOARD_STATIC_AUTH_SECRET", hide_env_values = true, value_name = "SECRET")]
    static_auth_secret: String;
    /// Allow relaying to loopback addresses (for local tests only).
    #[arg(long, num_args = 0, default_missing_value = "true")]
    allow_loopback_peers: bool = false;
    /// A peer network to allow even if denied otherwise (CIDR); repeatable.
    #[arg(long, value_name = "CIDR")]
    #[serde(default, deserialize_with = "de_nets")]
    allowed_peer_ip: Vec<IpNet> = Vec::new();
    /// A peer network to refuse (CIDR); repeatable.
    #[arg(long, value_name = "CIDR")]
    #[serde(default, deserialize_with = "de_nets")]
    denied_peer_ip: Vec<IpNet> = Vec::new();
    /// Most allocations per user; 0 for no limit [default: 0].
    #[arg(long, value_name = "N")]
    user_quota: u32 = 0;
    /// Most allocations in total; 0 for no limit [default: 0].
    #[arg(long, value_name = "N")]
    total_quota: u32 = 0;
    /// Most payload bytes per second one allocation relays each way (coturn's max-bps, bytes despite
    /// the name); more is dropped and counted; 0 for no limit [default: 0].
    #[arg(long, value_name = "BYTES")]
    max_bps: u64 = 0;
    /// Public address to advertise for relays when behind NAT.
    #[arg(long, value_name = "IP")]
    external_ip: IpAddr;
    /// Log filter: error, warn, info, debug, trace, or a tracing directive [default: info].
    #[arg(long, value_name = "LEVEL")]
    log_level: String = "info".into();
    /// Log format: `text` (plain, coloured only on a terminal) or `json` (one object per line, for log
    /// shippers) [default: text].
    #[arg(long, value_name = "FORMAT", value_parser = ["text", "json"])]
    log_format: String = "text".into();
    /// HTTP listen address: the web client, /ws signaling, /healthz, /stats [default: 127.0.0.1:8080].
    #[arg(long, value_name = "ADDR")]
    http_listen: SocketAddr = addr("127.0.0.1:8080");
    /// Most peers in a p2p room [default: 2].
    #[arg(long, value_name = "N")]
    room_capacity: usize = 2;
    /// SFU media listen address, UDP: one port for every participant [default: 127.0.0.1:7882].
    #[arg(long, value_name = "ADDR")]
    media_listen: SocketAddr = addr("127.0.0.1:7882");
    /// Most participants in an SFU room [default: 16].
    #[arg(long, value_name = "N")]
    sfu_room_capacity: usize = 16;
    /// Receive and send buffer asked for each UDP listener (STUN/TURN, SFU media), bytes; 0 keeps
    /// the kernel's default. A burst that fits is not lost (about 3,500 full-size packets at the
    /// default). The kernel caps it at net.core.rmem_max/wmem_max, and says so in the log [default: 4194304].
    #[arg(long, value_name = "BYTES")]
    udp_buffer: usize = 4 << 20;
    /// Worker threads, each with its own engine and sockets: TURN clients are spread over them by the
    /// kernel (SO_REUSEPORT), SFU rooms placed whole on one; 0 for one per available core. coturn's
    /// `relay-threads` is the same setting [default: 0].
    #[arg(long, value_name = "N", alias = "relay-threads")]
    #[serde(alias = "relay-threads")]
    workers: usize = 0;
    /// TLS certificate chain, PEM (coturn's `cert`): with --pkey, serves TURN over TLS, HTTPS and WSS.
    /// Reloaded on SIGHUP.
    #[arg(long, value_name = "FILE")]
    cert: PathBuf;
    /// The certificate's private key, PEM (coturn's `pkey`).
    #[arg(long, value_name = "FILE")]
    pkey: PathBuf;
    /// Make a self-signed certificate at start for these host names or addresses (to try TLS on a LAN;
    /// browsers warn). Repeatable; ignored when --cert is given.
    #[arg(long, value_name = "HOST")]
    self_signed: Vec<String> = Vec::new();
    /// TURN over TLS (`turns:`) listen address, with a certificate [default: 127.0.0.1:5349].
    #[arg(long, value_name = "ADDR")]
    tls_listen: SocketAddr = addr("127.0.0.1:5349");
    /// HTTPS and WSS listen address (the same routes as HTTP), with a certificate [default: 127.0.0.1:8443].
    #[arg(long, value_name = "ADDR")]
    https_listen: SocketAddr = addr("127.0.0.1:8443");
    /// Seconds an HTTP client has to send a complete request head (and a TURN over TCP/TLS client its
    /// first bytes) before it is disconnected [default: 10].
    #[arg(long, value_name = "SECS")]
    http_header_timeout: u64 = 10;
    /// Seconds a kept-alive HTTP connection may wait for its next request [default: 60].
    #[arg(long, value_name = "SECS")]
    http_idle_timeout: u64 = 60;
    /// Seconds a WebSocket may stay silent (it is pinged halfway; a pong counts) [default: 60].
    #[arg(long, value_name = "SECS")]
    ws_idle_timeout: u64 = 60;
    /// Most stream connections open at once (HTTP, WebSocket, TURN over TCP and TLS); beyond it new ones are
    /// refused at once; 0: half the process's descriptor limit (raised to its hard limit at start) [default: 0].
    #[arg(long, value_name = "N")]
    max_connections: usize = 0;
    /// Most stream connections open at once from one IP address; 0 for no limit [default: 100].
    #[arg(long, value_name = "N")]
    max_connections_per_ip: usize = 100;
    /// Most bits per second the SFU sends one subscriber: its bandwidth estimate is capped by this, and
    /// the videos that do not fit go to lower simulcast layers, then pause (audio is always sent) [default: no cap].
    #[arg(long, value_name = "BPS")]
    sfu_max_subscriber_bitrate: u64;
    /// A second IP address of this host for RFC 5780 NAT behaviour discovery (what coturn's
    /// turnutils_natdiscovery and `switchboard probe` ask): STUN is served on both IPs and on the TURN port and
    /// the port after it, and Binding requests may ask to be answered from the other IP or port. Needs a
    /// specific --turn-listen IP and port [default: off: CHANGE-REQUEST gets 420].
    #[arg(long, value_name = "IP")]
    alt_ip: IpAddr;
    /// A bearer token WHIP and WHEP clients may present (`Authorization: Bearer TOKEN`; repeat for more). REST
    /// tokens made from --static-auth-secret are taken too: `switchboard token` prints one.
    #[arg(long, value_name = "TOKEN")]
    whip_token: Vec<String> = Vec::new();
    /// Record SFU rooms into this directory (one file per published track: Opus as Ogg, VP8/VP9 as IVF, H.264 as
    /// Annex-B), when a participant sends `record {on: true}`, on `POST /recordings/ROOM?on=1`, or for the rooms of
    /// --record-rooms; listed at /recordings [default: no recording].
    #[arg(long, value_name = "DIR")]
    record_dir: PathBuf;
    /// SFU rooms recorded from their first participant on (needs --record-dir; repeat for more).
    #[arg(long, value_name = "ROOM")]
    record_rooms: Vec<String> = Vec::new();
}

fn de_nets<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Vec<IpNet>>, D::Error> {
    let v: Vec<String> = Vec::deserialize(d)?;
    v.iter().map(|s| s.parse().map_err(serde::de::Error::custom)).collect::<Result<_, _>>().map(Some)
}

/// Everything a shell needs to run, resolved from flags, file and defaults.
#[derive(Clone)]
pub struct Settings {
    /// STUN/TURN listen address.
    pub turn_listen: SocketAddr,
    /// HTTP (web client, WebSocket signaling, health, stats) listen address.
    pub http_listen: SocketAddr,
    /// SFU media listen address (UDP).
    pub media_listen: SocketAddr,
    /// The SFU configuration for the core (its media address is the advertised one).
    pub sfu: SfuConfig,
    /// Relay bind addresses, at most one per family.
    pub relay_ips: Vec<IpAddr>,
    /// Relay port range, inclusive.
    pub ports: (u16, u16),
    /// Receive and send buffer size asked for each UDP listener, in bytes.
    pub udp_buffer: usize,
    /// Worker threads (at least 1).
    pub workers: usize,
    /// TLS listeners and their certificate, when one is configured.
    pub tls: Option<TlsSettings>,
    /// How long a stream connection may wait in each state.
    pub timeouts: crate::limits::Timeouts,
    /// Caps on open stream connections (shared by the workers; a total of 0 is set from the descriptor limit at start).
    pub conn_limits: crate::limits::ConnLimits,
    /// What reading the config file has to say (coturn keys it ignored), for the log.
    pub config_notes: Vec<String>,
    /// Log filter.
    pub log_level: String,
    /// Log format: `text` or `json`.
    pub log_format: String,
    /// Whether the REST secret was generated at start (none was configured).
    pub generated_secret: bool,
    /// The TURN configuration for the core.
    pub turn: TurnConfig,
    /// The signaling configuration for the core (its TURN secret is the TURN server's).
    pub signal: SignalConfig,
    /// WHIP and WHEP: static tokens (REST tokens are checked with the TURN secret).
    pub whip: switchboard_core::whip::WhipConfig,
    /// Where recordings go, if anywhere.
    pub record_dir: Option<PathBuf>,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("turn_listen", &self.turn_listen)
            .field("http_listen", &self.http_listen)
            .field("media_listen", &self.media_listen)
            .field("relay_ips", &self.relay_ips)
            .field("ports", &self.ports)
            .field("udp_buffer", &self.udp_buffer)
            .field("workers", &self.workers)
            .field("tls", &self.tls)
            .field("timeouts", &self.timeouts)
            .field("conn_limits", &self.conn_limits.caps())
            .field("turn", &self.turn)
            .field("signal", &self.signal)
            .field("sfu", &self.sfu)
            .field("whip", &self.whip)
            .field("record_dir", &self.record_dir)
            .finish_non_exhaustive()
    }
}

/// TURN over TLS and HTTPS.
#[derive(Debug, Clone)]
pub struct TlsSettings {
    /// The certificate (shared by every worker; reloaded on SIGHUP).
    pub certs: crate::tls::Certs,
    /// TURN over TLS listen address.
    pub turn_listen: SocketAddr,
    /// HTTPS and WSS listen address.
    pub https_listen: SocketAddr,
}

/// A config problem, said plainly.
#[derive(Debug)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

impl ServeArgs {
    /// Reads the config file, if any, and resolves everything into [`Settings`].
    pub fn resolve(self) -> Result<Settings, ConfigError> {
        let args = self;
        let mut config_notes = Vec::new();
        let file = match &args.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| ConfigError(format!("cannot read config file {}: {e}", path.display())))?;
                if path.extension().is_some_and(|e| e == "conf") {
                    // coturn's turnserver.conf: the keys both servers share.
                    let c = crate::coturn::parse(&text).map_err(|e| ConfigError(format!("{}: {e}", path.display())))?;
                    if !c.ignored.is_empty() {
                        config_notes.push(format!("{}: coturn keys ignored: {}", path.display(), c.ignored.join(", ")));
                    }
                    c.args
                } else {
                    toml::from_str::<ServeArgs>(&text)
                        .map_err(|e| ConfigError(format!("config file {}: {e}", path.display())))?
                }
            }
            None => ServeArgs::default(),
        };
        let a = args.or(file).merged();
        let relay_ips = a.relay_ip;
        let v4 = relay_ips.iter().filter(|i| i.is_ipv4()).count();
        let v6 = relay_ips.len() - v4;
        if relay_ips.is_empty() || v4 > 1 || v6 > 1 {
            return Err(ConfigError("--relay-ip: give one IPv4 address, one IPv6 address, or one of each".into()));
        }
        let ports = (a.min_port, a.max_port);
        if ports.0 == 0 || ports.0 > ports.1 {
            return Err(ConfigError(format!("relay port range {}..{} is empty or starts at 0", ports.0, ports.1)));
        }
        let mut users = Vec::new();
        for u in a.user {
            let Some((name, pass)) = u.split_once(':') else {
                return Err(ConfigError("--user takes NAME:PASS".into()));
            };
            if name.is_empty() {
                return Err(ConfigError("--user: the name is empty".into()));
            }
            users.push((name.to_owned(), pass.to_owned()));
        }
        let generated_secret = a.static_auth_secret.is_none();
        // With no secret configured, one is made at start so relay works out of the box.
        let secret = a.static_auth_secret.unwrap_or_else(crate::random_secret);
        let turn = TurnConfig {
            realm: a.realm,
            users,
            static_auth_secret: Some(secret),
            nonce_key: Some(crate::os_seed()),
            peer_policy: PeerPolicy {
                allow_loopback: a.allow_loopback_peers,
                allowed: a.allowed_peer_ip,
                denied: a.denied_peer_ip,
            },
            user_quota: a.user_quota,
            total_quota: a.total_quota,
            max_bps: a.max_bps,
            relay_families: (v4 > 0, v6 > 0),
            external_ip: a.external_ip,
            nat_discovery: match a.alt_ip {
                None => None,
                Some(ip) if ip == a.turn_listen.ip() || ip.is_ipv4() != a.turn_listen.is_ipv4() => {
                    return Err(ConfigError("--alt-ip must be another address of the --turn-listen IP's family".into()))
                }
                Some(_) if a.turn_listen.ip().is_unspecified() || a.turn_listen.port() == 0 || a.turn_listen.port() == u16::MAX => {
                    return Err(ConfigError("--alt-ip needs a specific --turn-listen address and port (not 0.0.0.0, not port 0)".into()))
                }
                Some(ip) => Some(switchboard_core::stun::NatDiscovery::new(a.turn_listen, ip)),
            },
            ..TurnConfig::default()
        };
        if a.room_capacity == 0 {
            return Err(ConfigError("--room-capacity must be at least 1".into()));
        }
        // The address browsers are told to use for STUN/TURN.
        let public = advertised(a.turn_listen, a.external_ip);
        if a.sfu_room_capacity == 0 {
            return Err(ConfigError("--sfu-room-capacity must be at least 1".into()));
        }
        if !a.record_rooms.is_empty() && a.record_dir.is_none() {
            return Err(ConfigError("--record-rooms needs --record-dir".into()));
        }
        if a.sfu_max_subscriber_bitrate == Some(0) {
            return Err(ConfigError("--sfu-max-subscriber-bitrate must be at least 1 (leave it out for no cap)".into()));
        }
        let media_public = advertised(a.media_listen, a.external_ip);
        let source = match (a.cert, a.pkey) {
            (Some(cert), Some(key)) => Some(crate::tls::CertSource::Files { cert, key }),
            (None, None) if !a.self_signed.is_empty() => Some(crate::tls::CertSource::SelfSigned(a.self_signed.clone())),
            (None, None) => None,
            _ => return Err(ConfigError("--cert and --pkey go together".into())),
        };
        if a.http_header_timeout == 0 || a.http_idle_timeout == 0 || a.ws_idle_timeout < 2 {
            return Err(ConfigError("timeouts must be at least 1 s (--ws-idle-timeout 2 s)".into()));
        }
        let tls = match source {
            Some(source) => Some(TlsSettings {
                certs: crate::tls::Certs::load(source).map_err(|e| ConfigError(e.to_string()))?,
                turn_listen: a.tls_listen,
                https_listen: a.https_listen,
            }),
            None => None,
        };
        let mut turn_urls = vec![format!("turn:{public}?transport=udp"), format!("turn:{public}?transport=tcp")];
        if let Some(t) = &tls {
            // A browser checks the certificate against the URL's host: a self-signed one's first name.
            let host = match (a.self_signed.first(), a.external_ip) {
                (Some(name), None) => name.clone(),
                _ => advertised(t.turn_listen, a.external_ip).ip().to_string(),
            };
            turn_urls.push(format!("turns:{host}:{}?transport=tcp", t.turn_listen.port()));
        }
        let signal = SignalConfig {
            p2p_capacity: a.room_capacity,
            sfu_capacity: a.sfu_room_capacity,
            stun_urls: vec![format!("stun:{public}")],
            turn_urls,
            ..SignalConfig::default()
        };
        Ok(Settings {
            turn_listen: a.turn_listen,
            http_listen: a.http_listen,
            media_listen: a.media_listen,
            sfu: SfuConfig {
                max_subscriber_bps: a.sfu_max_subscriber_bitrate,
                record: a.record_dir.is_some(),
                record_rooms: a.record_rooms,
                ..SfuConfig::new(media_public)
            },
            relay_ips,
            ports,
            udp_buffer: a.udp_buffer,
            workers: match a.workers {
                0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
                n => n,
            },
            tls,
            timeouts: crate::limits::Timeouts {
                header: std::time::Duration::from_secs(a.http_header_timeout),
                idle: std::time::Duration::from_secs(a.http_idle_timeout),
                websocket: std::time::Duration::from_secs(a.ws_idle_timeout),
            },
            conn_limits: crate::limits::ConnLimits::new(a.max_connections, a.max_connections_per_ip),
            config_notes,
            log_level: a.log_level,
            log_format: a.log_format,
            generated_secret,
            turn,
            signal,
            whip: switchboard_core::whip::WhipConfig { tokens: a.whip_token, secret: None },
            record_dir: a.record_dir,
        })
    }
}

/// The address to tell clients for a listener: the external IP when behind NAT,
/// loopback for a wildcard bind, else the bound address; same port.
fn advertised(listen: SocketAddr, external_ip: Option<IpAddr>) -> SocketAddr {
    let ip = match external_ip {
        Some(ip) => ip,
        None if listen.ip().is_unspecified() => IpAddr::from([127, 0, 0, 1]),
        None => listen.ip(),
    };
    SocketAddr::new(ip, listen.port())
}

impl Settings {
    /// The engine configuration for the core.
    pub fn engine_config(&self) -> switchboard_core::Config {
        switchboard_core::Config {
            turn: self.turn.clone(),
            signal: self.signal.clone(),
            sfu: Some(self.sfu.clone()),
            whip: self.whip.clone(),
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> ServeArgs {
        let mut v = vec!["switchboard", "serve"];
        v.extend_from_slice(args);
        match Cli::try_parse_from(v).unwrap().command {
            Command::Serve(a) => a,
            Command::Token(_) | Command::Probe(_) => unreachable!("parsed `serve`"),
        }
    }

    #[test]
    fn token_takes_the_servers_flags() {
        let Command::Token(t) = Cli::try_parse_from(["switchboard", "token", "--ttl", "60", "--static-auth-secret", "s"]).unwrap().command else {
            panic!("not token")
        };
        assert_eq!((t.ttl, t.serve.static_auth_secret.as_deref()), (60, Some("s")));
        let s = parse(&["--whip-token", "a", "--whip-token", "b"]).resolve().unwrap();
        assert_eq!(s.whip.tokens, ["a", "b"]);
        assert!(!format!("{s:?}").contains("\"a\""), "tokens are not in Debug output");
    }

    #[test]
    fn probe_takes_a_server_and_credentials() {
        let Command::Probe(p) = Cli::try_parse_from(["switchboard", "probe"]).unwrap().command else { panic!("not probe") };
        assert_eq!((p.server.as_str(), p.json, p.timeout), ("127.0.0.1:3478", false, 3.0));
        let args = ["switchboard", "probe", "turn.example.com", "--user", "u:p", "--turn-tls", "turn.example.com:5349", "--json"];
        let Command::Probe(p) = Cli::try_parse_from(args).unwrap().command else { panic!("not probe") };
        assert_eq!((p.server.as_str(), p.user.as_deref(), p.turn_tls.as_deref(), p.json), ("turn.example.com", Some("u:p"), Some("turn.example.com:5349"), true));
    }

    /// Writes a config file for one test.
    fn config_file(test: &str, text: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("sb-cli-{test}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn defaults_are_loopback_with_a_generated_secret() {
        let s = parse(&[]).resolve().unwrap();
        assert_eq!(s.turn_listen, "127.0.0.1:3478".parse().unwrap());
        assert_eq!(s.ports, (49152, 65535));
        assert!(s.generated_secret);
        assert!(!s.turn.peer_policy.allow_loopback);
        assert_eq!(s.turn.static_auth_secret.as_ref().unwrap().len(), 32);
        assert_eq!(s.sfu.max_subscriber_bps, None, "no cap on a subscriber's bitrate");
        let s = parse(&["--sfu-max-subscriber-bitrate", "1500000"]).resolve().unwrap();
        assert_eq!(s.sfu.max_subscriber_bps, Some(1_500_000));
    }

    #[test]
    fn flags_win_over_the_file() {
        let path = config_file("flags", "realm = \"filerealm\"\nuser-quota = 3\nuser = [\"a:b\"]\nallow-loopback-peers = true\ndenied-peer-ip = [\"8.8.8.0/24\"]\n");
        let s = parse(&["--config", path.to_str().unwrap(), "--realm", "flagrealm"]).resolve().unwrap();
        assert_eq!(s.turn.realm, "flagrealm");
        assert_eq!(s.turn.user_quota, 3);
        assert_eq!(s.turn.users, vec![("a".to_string(), "b".to_string())]);
        assert!(s.turn.peer_policy.allow_loopback);
        assert_eq!(s.turn.peer_policy.denied.len(), 1);
        std::fs::write(&path, "no-such-key = 1\n").unwrap();
        assert!(parse(&["--config", path.to_str().unwrap()]).resolve().is_err());
    }

    #[test]
    fn secrets_stay_out_of_debug_output() {
        let s = parse(&["--user", "alice:hunter2", "--static-auth-secret", "topsecret"]).resolve().unwrap();
        let shown = format!("{s:?}");
        assert!(!shown.contains("hunter2") && !shown.contains("topsecret"), "{shown}");
        assert!(shown.contains("alice"));
    }

    #[test]
    fn bad_values_are_refused() {
        assert!(parse(&["--user", "nocolon"]).resolve().is_err());
        assert!(parse(&["--min-port", "6000", "--max-port", "5000"]).resolve().is_err());
        assert!(Cli::try_parse_from(["switchboard", "serve", "--denied-peer-ip", "10.0.0.0/99"]).is_err());
        assert!(parse(&["--sfu-max-subscriber-bitrate", "0"]).resolve().is_err());
        assert!(parse(&["--cert", "/nonexistent.pem"]).resolve().is_err(), "--cert without --pkey");
        assert!(parse(&["--cert", "/nonexistent.pem", "--pkey", "/nonexistent.pem"]).resolve().is_err());
        assert!(Cli::try_parse_from(["switchboard", "serve", "--sfu-max-subscriber-bitrate", "-5"]).is_err());
    }

    /// One value for every setting, as a flag and as a file key.
    const EVERY_SETTING: &[(&str, &str, &str)] = &[
        ("turn-listen", "127.0.0.2:4478", "\"127.0.0.2:4478\""),
        ("relay-ip", "127.0.0.3", "[\"127.0.0.3\"]"),
        ("min-port", "40000", "40000"),
        ("max-port", "60000", "60000"),
        ("realm", "r.example", "\"r.example\""),
        ("user", "a:b", "[\"a:b\"]"),
        ("static-auth-secret", "s3cret", "\"s3cret\""),
        ("allow-loopback-peers", "", "true"),
        ("allowed-peer-ip", "10.1.0.0/16", "[\"10.1.0.0/16\"]"),
        ("denied-peer-ip", "8.8.8.0/24", "[\"8.8.8.0/24\"]"),
        ("user-quota", "3", "3"),
        ("total-quota", "9", "9"),
        ("max-bps", "125000", "125000"),
        ("external-ip", "192.0.2.1", "\"192.0.2.1\""),
        ("log-level", "debug", "\"debug\""),
        ("http-listen", "127.0.0.2:9090", "\"127.0.0.2:9090\""),
        ("room-capacity", "5", "5"),
        ("media-listen", "127.0.0.2:7000", "\"127.0.0.2:7000\""),
        ("sfu-room-capacity", "7", "7"),
        ("udp-buffer", "65536", "65536"),
        ("sfu-max-subscriber-bitrate", "1500000", "1500000"),
        ("workers", "7", "7"),
        ("log-format", "json", "\"json\""),
        ("http-header-timeout", "3", "3"),
        ("http-idle-timeout", "30", "30"),
        ("ws-idle-timeout", "20", "20"),
        ("max-connections", "500", "500"),
        ("max-connections-per-ip", "7", "7"),
        ("cert", "{cert}", "\"{cert}\""),
        ("pkey", "{pkey}", "\"{pkey}\""),
        ("self-signed", "lan.example", "[\"lan.example\"]"),
        ("tls-listen", "127.0.0.2:5350", "\"127.0.0.2:5350\""),
        ("https-listen", "127.0.0.2:8444", "\"127.0.0.2:8444\""),
        ("whip-token", "tok", "[\"tok\"]"),
        ("alt-ip", "127.0.0.2", "\"127.0.0.2\""),
        ("record-dir", "/tmp/rec", "\"/tmp/rec\""),
        ("record-rooms", "r", "[\"r\"]"),
    ];

    /// Everything a resolved [`Settings`] holds, secrets included, for comparing.
    fn all_of(s: &Settings) -> String {
        format!("{s:?} {:?} {:?} {} {} {:?}", s.turn.users, s.turn.static_auth_secret, s.log_level, s.log_format, s.whip.tokens)
    }

    #[test]
    fn every_flag_is_a_file_key_with_the_same_meaning() {
        use clap::CommandFactory;
        // The table covers every flag (but --config), so a new setting must be added to it.
        let cmd = Cli::command();
        let serve = cmd.find_subcommand("serve").unwrap();
        let mut flags: Vec<&str> = serve.get_arguments().filter_map(|a| a.get_long()).filter(|l| *l != "config").collect();
        let mut listed: Vec<&str> = EVERY_SETTING.iter().map(|(k, _, _)| *k).collect();
        flags.sort();
        listed.sort();
        assert_eq!(flags, listed);
        let path = config_file("keys", "");
        // A real certificate and key for --cert and --pkey ({cert} and {pkey} in the table).
        let made = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let dir = path.parent().unwrap();
        let (cert, pkey) = (dir.join("cert.pem").display().to_string(), dir.join("key.pem").display().to_string());
        std::fs::write(&cert, made.cert.pem()).unwrap();
        std::fs::write(&pkey, made.signing_key.serialize_pem()).unwrap();
        let fill = |v: &str| v.replace("{cert}", &cert).replace("{pkey}", &pkey);
        // Settings that mean something only with another: what goes with them, as flags and as file lines.
        let companion = |key: &str| -> (Vec<String>, String) {
            match key {
                "cert" => (vec!["--pkey".into(), pkey.clone()], format!("pkey = \"{pkey}\"\n")),
                "pkey" => (vec!["--cert".into(), cert.clone()], format!("cert = \"{cert}\"\n")),
                "tls-listen" | "https-listen" => (vec!["--self-signed".into(), "x".into()], "self-signed = [\"x\"]\n".into()),
                "record-rooms" => (vec!["--record-dir".into(), "/tmp/rec".into()], "record-dir = \"/tmp/rec\"\n".into()),
                _ => (Vec::new(), String::new()),
            }
        };
        let defaults = all_of(&parse(&["--static-auth-secret", "x"]).resolve().unwrap());
        for (key, flag_value, file_value) in EVERY_SETTING {
            let (with_flags, with_lines) = companion(key);
            let flag = format!("--{key}");
            let flag_value = fill(flag_value);
            let mut args = vec![flag.as_str()];
            if !flag_value.is_empty() {
                args.push(&flag_value);
            }
            args.extend(with_flags.iter().map(String::as_str));
            // The secret is random when not given: give it everywhere but where it is tested.
            let secret = if *key == "static-auth-secret" { "" } else { "static-auth-secret = \"x\"\n" };
            std::fs::write(&path, format!("{secret}{with_lines}{key} = {}\n", fill(file_value))).unwrap();
            let by_file = all_of(&parse(&["--config", path.to_str().unwrap()]).resolve().unwrap());
            if !secret.is_empty() {
                args.extend(["--static-auth-secret", "x"]);
            }
            let by_flag = all_of(&parse(&args).resolve().unwrap());
            assert_eq!(by_flag, by_file, "{key}");
            assert_ne!(by_flag, defaults, "{key} changes nothing");
        }
    }

    #[test]
    fn the_example_config_in_dist_has_every_key() {
        let example = include_str!("../../../dist/switchboard.toml");
        for (key, _, _) in EVERY_SETTING {
            assert!(example.contains(&format!("# {key} =")), "dist/switchboard.toml lacks {key}");
        }
        // And it is a valid config once uncommented (the example values).
        let uncommented: String = example
            .lines()
            .filter_map(|l| l.strip_prefix("# ").filter(|l| l.contains(" = ") && !l.starts_with("cert") && !l.starts_with("pkey")))
            .map(|l| format!("{}\n", l.split("  #").next().unwrap_or(l)))
            .collect();
        let path = config_file("dist", &uncommented.replace("static-auth-secret = \"...\"", "static-auth-secret = \"x\""));
        parse(&["--config", path.to_str().unwrap()]).resolve().unwrap();
    }

    #[test]
    fn workers_default_to_the_cores_and_take_coturns_name() {
        let cores = std::thread::available_parallelism().unwrap().get();
        assert_eq!(parse(&[]).resolve().unwrap().workers, cores);
        assert_eq!(parse(&["--relay-threads", "3"]).resolve().unwrap().workers, 3);
        let path = config_file("relay-threads", "relay-threads = 5\n");
        assert_eq!(parse(&["--config", path.to_str().unwrap()]).resolve().unwrap().workers, 5);
    }

    #[test]
    fn a_flag_left_out_keeps_the_file_value() {
        let path = config_file("left-out", "allow-loopback-peers = true\nmin-port = 50000\n");
        let s = parse(&["--config", path.to_str().unwrap(), "--max-port", "50001"]).resolve().unwrap();
        assert!(s.turn.peer_policy.allow_loopback);
        assert_eq!(s.ports, (50000, 50001));
        assert!(!parse(&[]).resolve().unwrap().turn.peer_policy.allow_loopback);
        // A switch takes no value: what follows it is the next flag.
        let s = parse(&["--allow-loopback-peers", "--realm", "x"]).resolve().unwrap();
        assert!(s.turn.peer_policy.allow_loopback && s.turn.realm == "x");
    }
}
