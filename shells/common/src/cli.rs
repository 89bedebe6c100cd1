//! The command line (clap) and the TOML config file, merged into [`Settings`].
//!
//! Every `serve` flag has a config-file key of the same name
//! (`--turn-listen` is `turn-listen = "..."`). Flags win over the file.

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
#[command(name = "switchboard", version, about)]
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
}

/// Flags of `serve`. All optional: unset ones come from the config file, then defaults.
#[derive(Debug, Clone, Default, Args, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct ServeArgs {
    /// Config file (TOML) with the same keys as these flags.
    #[arg(long, value_name = "FILE")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// STUN/TURN listen address, UDP and TCP [default: 127.0.0.1:3478].
    #[arg(long, value_name = "ADDR")]
    pub turn_listen: Option<SocketAddr>,
    /// Address to bind relay sockets on; repeat for one IPv4 and one IPv6 [default: 127.0.0.1].
    #[arg(long, value_name = "IP")]
    pub relay_ip: Option<Vec<IpAddr>>,
    /// Lowest relay port [default: 49152].
    #[arg(long, value_name = "PORT")]
    pub min_port: Option<u16>,
    /// Highest relay port [default: 65535].
    #[arg(long, value_name = "PORT")]
    pub max_port: Option<u16>,
    /// Realm of the long-term credentials [default: switchboard].
    #[arg(long)]
    pub realm: Option<String>,
    /// A static TURN user as NAME:PASS; repeatable.
    #[arg(long, value_name = "NAME:PASS")]
    pub user: Option<Vec<String>>,
    /// Shared secret for TURN REST API credentials (coturn's static-auth-secret).
    #[arg(long, env = "SWITCHBOARD_STATIC_AUTH_SECRET", hide_env_values = true, value_name = "SECRET")]
    pub static_auth_secret: Option<String>,
    /// Allow relaying to loopback addresses (for local tests only).
    #[arg(long)]
    #[serde(default)]
    pub allow_loopback_peers: bool,
    /// A peer network to allow even if denied otherwise (CIDR); repeatable.
    #[arg(long, value_name = "CIDR")]
    #[serde(default, deserialize_with = "de_nets")]
    pub allowed_peer_ip: Option<Vec<IpNet>>,
    /// A peer network to refuse (CIDR); repeatable.
    #[arg(long, value_name = "CIDR")]
    #[serde(default, deserialize_with = "de_nets")]
    pub denied_peer_ip: Option<Vec<IpNet>>,
    /// Most allocations per user; 0 for no limit [default: 0].
    #[arg(long, value_name = "N")]
    pub user_quota: Option<u32>,
    /// Most allocations in total; 0 for no limit [default: 0].
    #[arg(long, value_name = "N")]
    pub total_quota: Option<u32>,
    /// Public address to advertise for relays when behind NAT.
    #[arg(long, value_name = "IP")]
    pub external_ip: Option<IpAddr>,
    /// Log filter: error, warn, info, debug, trace, or a tracing directive [default: info].
    #[arg(long, value_name = "LEVEL")]
    pub log_level: Option<String>,
    /// HTTP listen address: the web client, /ws signaling, /healthz, /stats [default: 127.0.0.1:8080].
    #[arg(long, value_name = "ADDR")]
    pub http_listen: Option<SocketAddr>,
    /// Most peers in a p2p room [default: 2].
    #[arg(long, value_name = "N")]
    pub room_capacity: Option<usize>,
    /// SFU media listen address, UDP: one port for every participant [default: 127.0.0.1:7882].
    #[arg(long, value_name = "ADDR")]
    pub media_listen: Option<SocketAddr>,
    /// Most participants in an SFU room [default: 16].
    #[arg(long, value_name = "N")]
    pub sfu_room_capacity: Option<usize>,
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
    /// Log filter.
    pub log_level: String,
    /// Whether the REST secret was generated at start (none was configured).
    pub generated_secret: bool,
    /// The TURN configuration for the core.
    pub turn: TurnConfig,
    /// The signaling configuration for the core (its TURN secret is the TURN server's).
    pub signal: SignalConfig,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("turn_listen", &self.turn_listen)
            .field("http_listen", &self.http_listen)
            .field("media_listen", &self.media_listen)
            .field("relay_ips", &self.relay_ips)
            .field("ports", &self.ports)
            .field("turn", &self.turn)
            .field("signal", &self.signal)
            .finish_non_exhaustive()
    }
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
    /// Fields set here win; unset ones are taken from `file`.
    fn or(self, file: ServeArgs) -> ServeArgs {
        ServeArgs {
            config: self.config,
            turn_listen: self.turn_listen.or(file.turn_listen),
            relay_ip: self.relay_ip.or(file.relay_ip),
            min_port: self.min_port.or(file.min_port),
            max_port: self.max_port.or(file.max_port),
            realm: self.realm.or(file.realm),
            user: self.user.or(file.user),
            static_auth_secret: self.static_auth_secret.or(file.static_auth_secret),
            allow_loopback_peers: self.allow_loopback_peers || file.allow_loopback_peers,
            allowed_peer_ip: self.allowed_peer_ip.or(file.allowed_peer_ip),
            denied_peer_ip: self.denied_peer_ip.or(file.denied_peer_ip),
            user_quota: self.user_quota.or(file.user_quota),
            total_quota: self.total_quota.or(file.total_quota),
            external_ip: self.external_ip.or(file.external_ip),
            log_level: self.log_level.or(file.log_level),
            http_listen: self.http_listen.or(file.http_listen),
            room_capacity: self.room_capacity.or(file.room_capacity),
            media_listen: self.media_listen.or(file.media_listen),
            sfu_room_capacity: self.sfu_room_capacity.or(file.sfu_room_capacity),
        }
    }

    /// Reads the config file, if any, and resolves everything into [`Settings`].
    pub fn resolve(self) -> Result<Settings, ConfigError> {
        let args = self;
        let file = match &args.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| ConfigError(format!("cannot read config file {}: {e}", path.display())))?;
                toml::from_str::<ServeArgs>(&text)
                    .map_err(|e| ConfigError(format!("config file {}: {e}", path.display())))?
            }
            None => ServeArgs::default(),
        };
        let a = args.or(file);
        let turn_listen = a.turn_listen.unwrap_or_else(|| "127.0.0.1:3478".parse().expect("valid default"));
        let relay_ips = a.relay_ip.unwrap_or_else(|| vec![IpAddr::from([127, 0, 0, 1])]);
        let v4 = relay_ips.iter().filter(|i| i.is_ipv4()).count();
        let v6 = relay_ips.len() - v4;
        if relay_ips.is_empty() || v4 > 1 || v6 > 1 {
            return Err(ConfigError("--relay-ip: give one IPv4 address, one IPv6 address, or one of each".into()));
        }
        let ports = (a.min_port.unwrap_or(49152), a.max_port.unwrap_or(65535));
        if ports.0 == 0 || ports.0 > ports.1 {
            return Err(ConfigError(format!("relay port range {}..{} is empty or starts at 0", ports.0, ports.1)));
        }
        let mut users = Vec::new();
        for u in a.user.unwrap_or_default() {
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
            realm: a.realm.unwrap_or_else(|| "switchboard".into()),
            users,
            static_auth_secret: Some(secret),
            nonce_key: Some(crate::os_seed()),
            peer_policy: PeerPolicy {
                allow_loopback: a.allow_loopback_peers,
                allowed: a.allowed_peer_ip.unwrap_or_default(),
                denied: a.denied_peer_ip.unwrap_or_default(),
            },
            user_quota: a.user_quota.unwrap_or(0),
            total_quota: a.total_quota.unwrap_or(0),
            relay_families: (v4 > 0, v6 > 0),
            external_ip: a.external_ip,
            ..TurnConfig::default()
        };
        let room_capacity = a.room_capacity.unwrap_or(2);
        if room_capacity == 0 {
            return Err(ConfigError("--room-capacity must be at least 1".into()));
        }
        // The address browsers are told to use for STUN/TURN.
        let public = advertised(turn_listen, a.external_ip);
        let sfu_capacity = a.sfu_room_capacity.unwrap_or(16);
        if sfu_capacity == 0 {
            return Err(ConfigError("--sfu-room-capacity must be at least 1".into()));
        }
        let media_listen = a.media_listen.unwrap_or_else(|| "127.0.0.1:7882".parse().expect("valid default"));
        let media_public = advertised(media_listen, a.external_ip);
        let signal = SignalConfig {
            p2p_capacity: room_capacity,
            sfu_capacity,
            stun_urls: vec![format!("stun:{public}")],
            turn_urls: vec![format!("turn:{public}?transport=udp"), format!("turn:{public}?transport=tcp")],
            ..SignalConfig::default()
        };
        Ok(Settings {
            turn_listen,
            http_listen: a.http_listen.unwrap_or_else(|| "127.0.0.1:8080".parse().expect("valid default")),
            media_listen,
            sfu: SfuConfig { media_addr: media_public },
            relay_ips,
            ports,
            log_level: a.log_level.unwrap_or_else(|| "info".into()),
            generated_secret,
            turn,
            signal,
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
        switchboard_core::Config { turn: self.turn.clone(), signal: self.signal.clone(), sfu: Some(self.sfu.clone()) }
    }

    /// The relay bind address for `family`.
    pub fn relay_ip(&self, family: switchboard_core::Family) -> Option<IpAddr> {
        self.relay_ips.iter().copied().find(|i| i.is_ipv4() == (family == switchboard_core::Family::V4))
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
        }
    }

    #[test]
    fn defaults_are_loopback_with_a_generated_secret() {
        let s = parse(&[]).resolve().unwrap();
        assert_eq!(s.turn_listen, "127.0.0.1:3478".parse().unwrap());
        assert_eq!(s.ports, (49152, 65535));
        assert!(s.generated_secret);
        assert!(!s.turn.peer_policy.allow_loopback);
        assert_eq!(s.turn.static_auth_secret.as_ref().unwrap().len(), 32);
    }

    #[test]
    fn flags_win_over_the_file() {
        let dir = std::env::temp_dir().join(format!("sb-cli-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.toml");
        std::fs::write(&path, "realm = \"filerealm\"\nuser-quota = 3\nuser = [\"a:b\"]\nallow-loopback-peers = true\ndenied-peer-ip = [\"8.8.8.0/24\"]\n").unwrap();
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
    }
}
