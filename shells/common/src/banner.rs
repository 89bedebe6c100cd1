//! What the server tells a person at start: where it listens and how to try it.

use std::fmt::Write as _;

use switchboard_core::turn::auth::{rest_password, rest_username};

use crate::Settings;

/// How long the sample credential printed at start stays valid.
pub const SAMPLE_CREDENTIAL_SECS: u64 = 24 * 3600;

/// The start banner (for stdout, not the log). It names the listening
/// addresses and gives commands that work as printed. When no secret was
/// configured it shows a sample time-limited TURN REST credential, never the
/// secret itself; configured passwords are never shown.
pub fn banner(binary: &str, s: &Settings, unix_now: u64) -> String {
    let mut out = String::new();
    let l = s.turn_listen;
    let (host, port) = (l.ip(), l.port());
    let _ = writeln!(out, "{binary} {} is serving", env!("CARGO_PKG_VERSION"));
    let _ = writeln!(out, "  STUN/TURN  udp+tcp {l}   (realm \"{}\")", s.turn.realm);
    let ips: Vec<String> = s.relay_ips.iter().map(|i| i.to_string()).collect();
    let _ = writeln!(out, "  relays     udp {} ports {}-{}", ips.join(", "), s.ports.0, s.ports.1);
    let _ = writeln!(out, "  web        http://{}/   (signaling at /ws, /healthz, /stats, /metrics)", s.http_listen);
    let m = s.media_listen;
    match (s.workers, m.port()) {
        (1, _) => writeln!(out, "  SFU media  udp {m}"),
        (_, 0) => writeln!(out, "  SFU media  udp {}, a port per worker", m.ip()),
        (n, p) => writeln!(out, "  SFU media  udp {}:{p}-{}   (a port per worker)", m.ip(), p as usize + n - 1),
    }
    .ok();
    if let Some(nat) = s.turn.nat_discovery {
        let a: Vec<String> = nat.addresses().iter().map(ToString::to_string).collect();
        let _ = writeln!(out, "  NAT discovery (RFC 5780) on udp {}", a.join(", "));
    }
    let _ = writeln!(out, "  workers    {}   (threads, each with its own engine and sockets)", s.workers);
    if let Some(t) = &s.tls {
        let _ = writeln!(out, "  TURN/TLS   tcp {}   (turns:)", t.turn_listen);
        let _ = writeln!(out, "  web (TLS)  https://{}/   (wss at /ws)", t.https_listen);
        let what = match t.certs.source() {
            crate::tls::CertSource::Files { cert, .. } => format!("{} (reloaded on SIGHUP)", cert.display()),
            crate::tls::CertSource::SelfSigned(hosts) => format!("self-signed for {}", hosts.join(", ")),
        };
        let _ = writeln!(out, "  certificate {what}, SHA-256 {}", t.certs.fingerprint());
    }
    let _ = writeln!(out, "Open the web page in two browser tabs and join the same room to make a call.");
    let web = format!("http://{}", s.http_listen);
    if s.generated_secret && s.whip.tokens.is_empty() {
        let secret = s.turn.static_auth_secret.as_deref().unwrap_or_default();
        let token = switchboard_core::whip::rest_token(secret, unix_now + SAMPLE_CREDENTIAL_SECS, Some("demo"));
        let _ = writeln!(out, "WHIP/WHEP: POST an SDP offer to {web}/whip/ROOM or {web}/whep/ROOM with");
        let _ = writeln!(out, "  Authorization: Bearer {token}   (valid 24 h, this run only)");
    } else {
        let _ = writeln!(out, "WHIP/WHEP: {web}/whip/ROOM and {web}/whep/ROOM (bearer token: --whip-token, or `switchboard token`)");
    }
    let _ = writeln!(out, "Try it (coturn's clients, Debian package coturn):");
    let _ = writeln!(out, "  turnutils_stunclient -p {port} {host}");
    let creds = if s.generated_secret {
        let user = rest_username(unix_now + SAMPLE_CREDENTIAL_SECS, Some("demo"));
        let secret = s.turn.static_auth_secret.as_deref().unwrap_or_default();
        let pass = rest_password(secret.as_bytes(), &user);
        let _ = writeln!(out, "  TURN credential for this run, valid 24 h: username '{user}' password '{pass}'");
        format!("-u '{user}' -w '{pass}'")
    } else if let Some((user, _)) = s.turn.users.first() {
        format!("-u {user} -w <password>")
    } else {
        let _ = writeln!(out, "  TURN REST credentials: username '<unix-expiry>:<name>', password base64(HMAC-SHA1(secret, username))");
        "-W <secret> -u <name>".to_string()
    };
    if !s.turn.peer_policy.allow_loopback {
        let _ = writeln!(out, "  Relaying to loopback and private peers is refused (403). To relay between local programs, add --allow-loopback-peers and:");
    }
    let _ = writeln!(out, "  turnutils_peer -L 127.0.0.1 -p 3480 &");
    let _ = writeln!(out, "  turnutils_uclient -p {port} {creds} -e 127.0.0.1 -r 3480 {host}");
    out
}
