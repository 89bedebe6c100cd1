//! Reading coturn's `turnserver.conf`, for people moving from coturn: the
//! keys both servers share become Switchboard's settings, and every other key
//! is listed as ignored (the server logs the list at start).
//!
//! The format: one `key`, `key=value` or `key value` per line; a line
//! starting with `#` is a comment (a `#` later in a line is part of the value); a key may repeat (`user`, `relay-ip`, `denied-peer-ip`, ...).
//! coturn's peer address rules are ranges (`10.0.0.0-10.255.255.255`) or
//! single addresses; they become the smallest list of CIDR networks that
//! covers each range exactly.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use switchboard_core::turn::policy::IpNet;

use crate::ServeArgs;

/// A coturn config read as Switchboard settings.
#[derive(Debug, Default)]
pub struct Converted {
    /// The settings it gives (as a config file's keys would).
    pub args: ServeArgs,
    /// The keys it had that Switchboard does not take (each once, in order), with why where it helps.
    pub ignored: Vec<String>,
}

/// Keys that are on by default here or mean nothing to Switchboard, though coturn needs them.
const HARMLESS: &[&str] = &["lt-cred-mech", "use-auth-secret", "fingerprint", "no-tls", "no-dtls", "no-cli"];

/// Reads `text` as a `turnserver.conf`. Errors name the line.
pub fn parse(text: &str) -> Result<Converted, String> {
    let mut c = Converted::default();
    let a = &mut c.args;
    let (mut ip, mut port, mut tls_port): (Option<IpAddr>, Option<u16>, Option<u16>) = (None, None, None);
    for (n, line) in text.lines().enumerate() {
        // As coturn reads it: a line starting with `#` is a comment; a `#` later on is part of the value.
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (key, value) = match line.split_once(['=', ' ', '\t']) {
            Some((k, v)) => (k.trim(), v.trim().trim_matches('"')),
            None => (line, ""),
        };
        let key = key.trim_start_matches("--");
        let bad = |what: &str| format!("turnserver.conf line {}: {key}: {what}", n + 1);
        let num = |v: &str| v.parse::<u64>().map_err(|_| bad("expected a number"));
        let addr = |v: &str| v.parse::<IpAddr>().map_err(|_| bad("expected an IP address"));
        match key {
            "listening-port" => port = Some(num(value)?.try_into().map_err(|_| bad("not a port"))?),
            "tls-listening-port" => tls_port = Some(num(value)?.try_into().map_err(|_| bad("not a port"))?),
            "listening-ip" if ip.is_none() => ip = Some(addr(value)?),
            "listening-ip" => c.ignored.push(format!("{key}={value} (one listening address is used)")),
            "relay-ip" => a.relay_ip.get_or_insert_with(Vec::new).push(addr(value)?),
            // coturn's PUBLIC/PRIVATE form: the public address is what clients are told.
            "external-ip" => a.external_ip = Some(addr(value.split('/').next().unwrap_or(""))?),
            "min-port" => a.min_port = Some(num(value)?.try_into().map_err(|_| bad("not a port"))?),
            "max-port" => a.max_port = Some(num(value)?.try_into().map_err(|_| bad("not a port"))?),
            "realm" => a.realm = Some(value.to_string()),
            "user" if value.split_once(':').is_some_and(|(_, p)| !p.starts_with("0x")) => {
                a.user.get_or_insert_with(Vec::new).push(value.to_string())
            }
            "user" => c.ignored.push(format!("{key}=... (a key given as 0x..., not a password)")),
            "static-auth-secret" => a.static_auth_secret = Some(value.to_string()),
            "user-quota" => a.user_quota = Some(num(value)?.try_into().map_err(|_| bad("too large"))?),
            "total-quota" => a.total_quota = Some(num(value)?.try_into().map_err(|_| bad("too large"))?),
            "max-bps" => a.max_bps = Some(num(value)?),
            "denied-peer-ip" => a.denied_peer_ip.get_or_insert_with(Vec::new).extend(range(value).ok_or_else(|| bad("expected IP or IP-IP"))?),
            "allowed-peer-ip" => a.allowed_peer_ip.get_or_insert_with(Vec::new).extend(range(value).ok_or_else(|| bad("expected IP or IP-IP"))?),
            "allow-loopback-peers" => a.allow_loopback_peers = Some(true),
            "cert" => a.cert = Some(value.into()),
            "pkey" => a.pkey = Some(value.into()),
            "relay-threads" => a.workers = Some(num(value)?.try_into().map_err(|_| bad("too large"))?),
            k if HARMLESS.contains(&k) => {}
            _ if c.ignored.iter().any(|i| i.split(['=', ' ']).next() == Some(key)) => {}
            _ => c.ignored.push(key.to_string()),
        }
    }
    if ip.is_some() || port.is_some() {
        let ip = ip.unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
        a.turn_listen = Some(SocketAddr::new(ip, port.unwrap_or(3478)));
    }
    if let Some(p) = tls_port {
        a.tls_listen = Some(SocketAddr::new(ip.unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST)), p));
    }
    Ok(c)
}

/// coturn's address rule (`IP` or `FIRST-LAST`) as the CIDR networks that cover exactly that range.
fn range(v: &str) -> Option<Vec<IpNet>> {
    let (first, last) = match v.split_once('-') {
        Some((a, b)) => (a.trim().parse::<IpAddr>().ok()?, b.trim().parse::<IpAddr>().ok()?),
        None => {
            let a = v.trim().parse::<IpAddr>().ok()?;
            (a, a)
        }
    };
    let (lo, hi, bits) = match (first, last) {
        (IpAddr::V4(a), IpAddr::V4(b)) => (u128::from(u32::from(a)), u128::from(u32::from(b)), 32u32),
        (IpAddr::V6(a), IpAddr::V6(b)) => (u128::from(a), u128::from(b), 128u32),
        _ => return None,
    };
    if lo > hi {
        return None;
    }
    let to_ip = |x: u128| if bits == 32 { IpAddr::V4(Ipv4Addr::from(x as u32)) } else { IpAddr::V6(Ipv6Addr::from(x)) };
    let mut nets = Vec::new();
    let mut at = lo;
    loop {
        // The largest aligned block starting at `at` that stays within the range (`at` is aligned to it, so
        // its end does not overflow).
        let end_of = |size: u32| if size >= 128 { u128::MAX } else { at + ((1u128 << size) - 1) };
        let mut size = if at == 0 { bits } else { at.trailing_zeros().min(bits) };
        while size > 0 && end_of(size) > hi {
            size -= 1;
        }
        nets.push(IpNet::new(to_ip(at), (bits - size) as u8)?);
        let end = end_of(size);
        if end >= hi {
            return Some(nets);
        }
        at = end + 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(v: &str) -> Vec<String> {
        range(v).unwrap().iter().map(ToString::to_string).collect()
    }

    #[test]
    fn ranges_become_exact_cidr_lists() {
        assert_eq!(nets("10.0.0.0-10.255.255.255"), ["10.0.0.0/8"]);
        assert_eq!(nets("192.168.1.7"), ["192.168.1.7/32"]);
        assert_eq!(nets("10.0.0.1-10.0.0.6"), ["10.0.0.1/32", "10.0.0.2/31", "10.0.0.4/31", "10.0.0.6/32"]);
        assert_eq!(nets("0.0.0.0-255.255.255.255"), ["0.0.0.0/0"]);
        assert_eq!(nets("fc00::-fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"), ["fc00::/7"]);
        assert_eq!(nets("::-ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"), ["::/0"]);
        assert!(range("10.0.0.9-10.0.0.1").is_none());
        assert!(range("10.0.0.1-::1").is_none());
        assert!(range("nope").is_none());
    }

    #[test]
    fn shared_keys_are_taken_and_the_rest_listed() {
        let c = parse(
            "# a coturn config\nlistening-port=3479\nlistening-ip=127.0.0.2\nlistening-ip=127.0.0.3\nrealm=example.org\n\
             user=alice:sec#ret\nuser=bob:0xabcdef\nlt-cred-mech\nuser-quota=4\ndenied-peer-ip=10.0.0.0-10.255.255.255\n\
             relay-threads 3\nexternal-ip=203.0.113.5/10.0.0.5\nsyslog\nverbose\nverbose\nmobility\n",
        )
        .unwrap();
        let a = &c.args;
        assert_eq!(a.turn_listen, Some("127.0.0.2:3479".parse().unwrap()));
        assert_eq!(a.realm.as_deref(), Some("example.org"));
        assert_eq!(a.user.as_deref(), Some(&["alice:sec#ret".to_string()][..]), "a # in a value is kept, as coturn does");
        assert_eq!(a.user_quota, Some(4));
        assert_eq!(a.workers, Some(3));
        assert_eq!(a.external_ip, Some("203.0.113.5".parse().unwrap()));
        assert_eq!(a.denied_peer_ip.as_ref().map(|v| v.len()), Some(1));
        assert_eq!(c.ignored.len(), 5, "{:?}", c.ignored);
        assert!(c.ignored.iter().any(|i| i.starts_with("listening-ip")) && c.ignored.contains(&"mobility".to_string()));
        assert!(parse("listening-port=http\n").unwrap_err().contains("line 1"));
    }
}
