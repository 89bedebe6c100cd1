//! What the server tells a person at start: where it listens and how to try it.

use std::fmt::Write as _;

use switchboard_core::turn::auth::{rest_password, rest_username};

use crate::Settings;

/// How long the sample credential printed at start stays valid.
pub const SAMPLE_CREDENTIAL_SECS: u64 = 24 * 3600;

/// The start banner. It names the listening addresses and, when no secret
/// was configured, gives a sample time-limited TURN REST credential (never
/// the secret itself, and never through the log).
pub fn banner(binary: &str, s: &Settings, unix_now: u64) -> String {
    let mut out = String::new();
    let l = s.turn_listen;
    let _ = writeln!(out, "{binary} {} is serving", env!("CARGO_PKG_VERSION"));
    let _ = writeln!(out, "  STUN/TURN  udp+tcp {l}   (realm \"{}\")", s.turn.realm);
    let ips: Vec<String> = s.relay_ips.iter().map(|i| i.to_string()).collect();
    let _ = writeln!(out, "  relays     udp {} ports {}-{}", ips.join(", "), s.ports.0, s.ports.1);
    let _ = writeln!(out, "Try it:");
    let _ = writeln!(out, "  turnutils_stunclient -p {} {}", l.port(), l.ip());
    for (user, _) in s.turn.users.iter().take(1) {
        let _ = writeln!(out, "  turnutils_uclient -p {} -u {user} -w <password> -y {}   (static user)", l.port(), l.ip());
    }
    if s.generated_secret {
        let user = rest_username(unix_now + SAMPLE_CREDENTIAL_SECS, Some("demo"));
        let secret = s.turn.static_auth_secret.as_deref().unwrap_or_default();
        let pass = rest_password(secret.as_bytes(), &user);
        let _ = writeln!(out, "  turnutils_uclient -p {} -u '{user}' -w '{pass}' -y {}", l.port(), l.ip());
        let _ = writeln!(out, "  (a sample TURN credential valid for 24 h; no --static-auth-secret was given, so a random one was made for this run)");
    } else {
        let _ = writeln!(out, "  TURN REST credentials: username \"<unix-expiry>:<name>\", password base64(HMAC-SHA1(secret, username))");
    }
    if !s.turn.peer_policy.allow_loopback {
        let _ = writeln!(out, "  relaying to loopback and private peers is refused; --allow-loopback-peers opens loopback for local tests");
    }
    out
}
