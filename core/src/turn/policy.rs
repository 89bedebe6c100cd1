//! Which peer addresses a TURN relay may send to: secure by default.
//!
//! A TURN server relays to any address its clients name, so without a policy
//! it is an open proxy into the server's own network: loopback services, the
//! private LAN, the cloud metadata endpoint. coturn had two CVEs from gaps in
//! exactly this check (CVE-2020-26262 through `0.0.0.0` and `::1`,
//! CVE-2026-27624 through `::ffff:127.0.0.1`). Every IPv6 form that embeds an
//! IPv4 address is therefore reduced to that IPv4 address before any rule is
//! applied, and tunnelling prefixes whose embedded address could point
//! anywhere (6to4, Teredo) are refused outright.
//!
//! Order of the rules: `allowed` CIDRs allow; then `denied` CIDRs deny; then
//! loopback is allowed if `allow_loopback`; then the built-in deny list; then
//! everything else is allowed. (As in coturn, an explicit allow beats an
//! explicit deny, so `--denied-peer-ip 10.0.0.0/8 --allowed-peer-ip 10.1.2.3`
//! opens one host.)

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// An IP network in CIDR notation, such as `10.0.0.0/8` or `fe80::/10`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

/// Why a CIDR string did not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpNetParseError(String);

impl fmt::Display for IpNetParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid IP network {:?}: expected ADDRESS or ADDRESS/PREFIX", self.0)
    }
}

impl std::error::Error for IpNetParseError {}

impl IpNet {
    /// A network; `None` when `prefix` exceeds the address width.
    pub fn new(addr: IpAddr, prefix: u8) -> Option<Self> {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if prefix > max {
            return None;
        }
        // A single IPv6 host that embeds an IPv4 address means that IPv4 host.
        if prefix == max {
            if let Some(v4 @ IpAddr::V4(_)) = canonical(addr) {
                return Some(IpNet { addr: v4, prefix: 32 });
            }
        }
        Some(IpNet { addr, prefix })
    }

    /// Whether `ip` lies in this network (families must match).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX.checked_shl(32 - self.prefix as u32).unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX.checked_shl(128 - self.prefix as u32).unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for IpNet {
    type Err = IpNetParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || IpNetParseError(s.to_owned());
        let (a, p) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = a.trim().parse().map_err(|_| err())?;
        let prefix = match p {
            Some(p) => p.trim().parse::<u8>().map_err(|_| err())?,
            None if addr.is_ipv4() => 32,
            None => 128,
        };
        IpNet::new(addr, prefix).ok_or_else(err)
    }
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// The IPv4 address embedded in an IPv6 address, where one is: IPv4-mapped
/// (`::ffff:a.b.c.d`), IPv4-compatible (`::a.b.c.d`), IPv4-translated
/// (`::ffff:0:a.b.c.d`) and NAT64 well-known prefix (`64:ff9b::a.b.c.d`).
/// An IPv4 address is returned as it is. `::` and `::1` stay IPv6.
pub fn canonical(ip: IpAddr) -> Option<IpAddr> {
    match ip {
        IpAddr::V4(_) => Some(ip),
        IpAddr::V6(v6) => {
            let s = v6.segments();
            let tail = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
            let embeds = match s {
                [0, 0, 0, 0, 0, 0xffff, _, _] => true,
                [0, 0, 0, 0, 0xffff, 0, _, _] => true,
                [0x64, 0xff9b, 0, 0, 0, 0, _, _] => true,
                [0, 0, 0, 0, 0, 0, _, _] => u128::from(v6) > 1,
                _ => false,
            };
            embeds.then_some(IpAddr::V4(tail))
        }
    }
}

fn reduce(ip: IpAddr) -> IpAddr {
    canonical(ip).unwrap_or(ip)
}

/// IPv4 ranges refused by default (RFC 6890 special-purpose and private space).
const DENIED_V4: &[(Ipv4Addr, u8)] = &[
    (Ipv4Addr::new(0, 0, 0, 0), 8),        // "this network", 0.0.0.0 reaches the host itself
    (Ipv4Addr::new(10, 0, 0, 0), 8),       // RFC 1918
    (Ipv4Addr::new(100, 64, 0, 0), 10),    // CGNAT shared space
    (Ipv4Addr::new(127, 0, 0, 0), 8),      // loopback
    (Ipv4Addr::new(169, 254, 0, 0), 16),   // link-local, with 169.254.169.254 metadata
    (Ipv4Addr::new(172, 16, 0, 0), 12),    // RFC 1918
    (Ipv4Addr::new(192, 0, 0, 0), 24),     // IETF protocol assignments
    (Ipv4Addr::new(192, 0, 2, 0), 24),     // TEST-NET-1
    (Ipv4Addr::new(192, 88, 99, 0), 24),   // 6to4 relay anycast
    (Ipv4Addr::new(192, 168, 0, 0), 16),   // RFC 1918
    (Ipv4Addr::new(198, 18, 0, 0), 15),    // benchmarking
    (Ipv4Addr::new(198, 51, 100, 0), 24),  // TEST-NET-2
    (Ipv4Addr::new(203, 0, 113, 0), 24),   // TEST-NET-3
    (Ipv4Addr::new(224, 0, 0, 0), 4),      // multicast
    (Ipv4Addr::new(240, 0, 0, 0), 4),      // reserved, with 255.255.255.255 broadcast
];

/// IPv6 ranges refused by default. Embedded-IPv4 forms never reach this list:
/// they are reduced to IPv4 first.
const DENIED_V6: &[(u16, u16, u16, u8)] = &[
    (0x0000, 0x0000, 0x0000, 96),  // ::/96 leftovers: :: and ::1 (::1 is loopback)
    (0x0064, 0xff9b, 0x0001, 48),  // NAT64 local-use prefix
    (0x0100, 0x0000, 0x0000, 64),  // discard-only
    (0x2001, 0x0000, 0x0000, 23),  // IETF protocol assignments, with Teredo 2001::/32
    (0x2001, 0x0db8, 0x0000, 32),  // documentation
    (0x2002, 0x0000, 0x0000, 16),  // 6to4
    (0x3fff, 0x0000, 0x0000, 20),  // documentation (RFC 9637)
    (0x5f00, 0x0000, 0x0000, 16),  // SRv6 SIDs
    (0xfc00, 0x0000, 0x0000, 7),   // unique local
    (0xfe80, 0x0000, 0x0000, 10),  // link-local
    (0xfec0, 0x0000, 0x0000, 10),  // site-local (deprecated)
    (0xff00, 0x0000, 0x0000, 8),   // multicast
];

fn default_denied(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => DENIED_V4
            .iter()
            .any(|(n, p)| IpNet { addr: IpAddr::V4(*n), prefix: *p }.contains(IpAddr::V4(a))),
        IpAddr::V6(a) => DENIED_V6.iter().any(|(s0, s1, s2, p)| {
            let n = Ipv6Addr::new(*s0, *s1, *s2, 0, 0, 0, 0, 0);
            IpNet { addr: IpAddr::V6(n), prefix: *p }.contains(IpAddr::V6(a))
        }),
    }
}

fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => a.is_loopback(),
        IpAddr::V6(a) => a.is_loopback(),
    }
}

/// The peer address policy of a TURN server.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerPolicy {
    /// Relay to loopback addresses (127.0.0.0/8, ::1, and their IPv6 forms). For tests.
    pub allow_loopback: bool,
    /// Networks always allowed, even inside the default or explicit deny lists.
    pub allowed: Vec<IpNet>,
    /// Networks refused in addition to the built-in list.
    pub denied: Vec<IpNet>,
}

impl PeerPolicy {
    /// Whether the relay may send to `ip`.
    pub fn is_allowed(&self, ip: IpAddr) -> bool {
        let ip = reduce(ip);
        if self.allowed.iter().any(|n| n.contains(ip)) {
            return true;
        }
        if self.denied.iter().any(|n| n.contains(ip)) {
            return false;
        }
        if is_loopback(ip) {
            return self.allow_loopback;
        }
        !default_denied(ip)
    }
}

/// Addresses, in every form an attacker may write them, that reach this host,
/// its networks or the cloud metadata service through a relay, or that are
/// not routable: the default [`PeerPolicy`] refuses each one (IPv4, IPv6,
/// IPv4-mapped, -compatible, NAT64, 6to4, Teredo). The tests check the list
/// in-process and end to end (an IPv6 allocation on `::1` asking for each).
#[rustfmt::skip]
pub const BYPASS_FORMS: &[&str] = &[
    "127.0.0.1", "127.1.2.3", "0.0.0.0", "0.1.2.3", "::", "::1",
    "::ffff:127.0.0.1", "::ffff:7f00:1", "::127.0.0.1", "::ffff:0:127.0.0.1", "64:ff9b::127.0.0.1",
    "::ffff:0.0.0.0", "::0.0.0.0", "::ffff:10.0.0.1", "::10.1.1.1", "64:ff9b::a00:1",
    "10.0.0.1", "172.16.0.1", "172.31.255.255", "192.168.1.1", "100.64.0.1", "100.127.255.255",
    "169.254.169.254", "::ffff:169.254.169.254", "::169.254.169.254", "64:ff9b::169.254.169.254",
    "169.254.0.1", "fe80::1", "febf::1", "fc00::1", "fd12:3456::1", "ff02::1", "ff0e::1",
    "224.0.0.1", "239.255.255.250", "255.255.255.255", "240.0.0.1", "192.0.2.1", "198.51.100.7",
    "203.0.113.9", "198.18.0.1", "2001:db8::1", "2002:7f00:1::1", "2002:c0a8:101::1",
    "2001:0:4136:e378:8000:63bf:3fff:fdd2", "2001::1", "100::1", "3fff::1", "64:ff9b:1::1",
    "::ffff:192.168.0.1", "::ffff:224.0.0.1", "::ffff:255.255.255.255", "fec0::1",
];

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }


    use super::BYPASS_FORMS;

    #[test]
    fn every_bypass_form_is_refused_by_default() {
        let p = PeerPolicy::default();
        for a in BYPASS_FORMS {
            assert!(!p.is_allowed(ip(a)), "{a} must be refused");
        }
    }

    #[test]
    fn public_addresses_are_allowed() {
        let p = PeerPolicy::default();
        for a in ["8.8.8.8", "1.1.1.1", "2606:4700::1111", "::ffff:8.8.8.8", "64:ff9b::8.8.8.8", "100.63.255.255", "172.32.0.1"] {
            assert!(p.is_allowed(ip(a)), "{a} must be allowed");
        }
    }

    #[test]
    fn allow_loopback_opens_only_loopback_in_every_form() {
        let p = PeerPolicy { allow_loopback: true, ..Default::default() };
        for a in ["127.0.0.1", "::1", "::ffff:127.0.0.1", "::127.0.0.2", "64:ff9b::7f00:1"] {
            assert!(p.is_allowed(ip(a)), "{a}");
        }
        for a in ["0.0.0.0", "::", "10.0.0.1", "169.254.169.254", "::ffff:0.0.0.0"] {
            assert!(!p.is_allowed(ip(a)), "{a}");
        }
    }

    #[test]
    fn explicit_lists() {
        let p = PeerPolicy {
            allow_loopback: true,
            allowed: vec!["10.1.2.3".parse().unwrap()],
            denied: vec!["10.0.0.0/8".parse().unwrap(), "8.8.8.0/24".parse().unwrap(), "127.0.0.5".parse().unwrap()],
        };
        assert!(p.is_allowed(ip("10.1.2.3")));
        assert!(p.is_allowed(ip("::ffff:10.1.2.3")));
        assert!(!p.is_allowed(ip("10.1.2.4")));
        assert!(!p.is_allowed(ip("8.8.8.8")));
        assert!(!p.is_allowed(ip("::ffff:8.8.8.8")));
        assert!(!p.is_allowed(ip("127.0.0.5")));
        assert!(p.is_allowed(ip("127.0.0.1")));
    }

    #[test]
    fn cidr_parsing() {
        assert!("10.0.0.0/8".parse::<IpNet>().is_ok());
        assert!("::/0".parse::<IpNet>().is_ok());
        assert!("10.0.0.0/33".parse::<IpNet>().is_err());
        assert!("nonsense".parse::<IpNet>().is_err());
        // A mapped host address in a list means the IPv4 host.
        let n: IpNet = "::ffff:1.2.3.4".parse().unwrap();
        assert!(n.contains(ip("1.2.3.4")));
        let all: IpNet = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(ip("255.1.1.1")));
    }
}
