//! Binding relay sockets on the configured addresses, in the configured port range.

use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};

use switchboard_core::turn::PortRequest;
use switchboard_core::Family;

/// Picks relay addresses: the configured IP of the family asked for, and
/// ports tried from a random start across the range.
#[derive(Debug)]
pub struct RelayPorts {
    ips: Vec<IpAddr>,
    min: u16,
    max: u16,
    next: u32,
}

/// Most bind attempts for one relay before giving up (the client gets 508).
pub const MAX_BIND_ATTEMPTS: u32 = 128;

fn bind_one(addr: SocketAddr) -> io::Result<UdpSocket> {
    let s = UdpSocket::bind(addr)?;
    s.set_nonblocking(true)?;
    Ok(s)
}

impl RelayPorts {
    /// Relays on `ips` (at most one per family), ports `min..=max`,
    /// starting the search at a random offset.
    pub fn new(ips: Vec<IpAddr>, min: u16, max: u16) -> Self {
        let mut b = [0u8; 4];
        getrandom::getrandom(&mut b).expect("the OS random source is available");
        RelayPorts { ips, min, max, next: u32::from_le_bytes(b) }
    }

    /// The relay IP for `family`, if one is configured.
    pub fn ip(&self, family: Family) -> Option<IpAddr> {
        self.ips.iter().copied().find(|i| i.is_ipv4() == (family == Family::V4))
    }

    /// Binds non-blocking UDP sockets on `ip` as `want` says: the relay, and
    /// for [`PortRequest::EvenPair`] the reserved socket at the next port.
    /// [`PortRequest::Reserved`] is already bound: it is refused here.
    pub fn bind(&mut self, ip: IpAddr, want: PortRequest) -> io::Result<(UdpSocket, Option<UdpSocket>)> {
        if let PortRequest::Reserved(addr) = want {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("{addr} is reserved, not to be bound again")));
        }
        let span = u32::from(self.max - self.min) + 1;
        let mut last = io::Error::new(io::ErrorKind::AddrInUse, "no free relay port in range");
        for _ in 0..MAX_BIND_ATTEMPTS.min(span) {
            let mut port = u32::from(self.min) + self.next % span;
            self.next = self.next.wrapping_add(if want == PortRequest::Any { 1 } else { 2 });
            if want != PortRequest::Any && port % 2 == 1 {
                port += 1;
            }
            let needed = if want == PortRequest::EvenPair { port + 1 } else { port };
            if needed > u32::from(self.max) {
                continue;
            }
            let first = match bind_one(SocketAddr::new(ip, port as u16)) {
                Ok(s) => s,
                Err(e) => {
                    last = e;
                    continue;
                }
            };
            if want != PortRequest::EvenPair {
                return Ok((first, None));
            }
            match bind_one(SocketAddr::new(ip, (port + 1) as u16)) {
                Ok(second) => return Ok((first, Some(second))),
                Err(e) => last = e,
            }
        }
        Err(last)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn even_and_pairs() {
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let mut p = RelayPorts::new(vec![ip], 40000, 40999);
        assert_eq!(p.ip(Family::V4), Some(ip));
        assert_eq!(p.ip(Family::V6), None);
        let (s, none) = p.bind(ip, PortRequest::Even).unwrap();
        assert_eq!(s.local_addr().unwrap().port() % 2, 0);
        assert!(none.is_none());
        let (a, b) = p.bind(ip, PortRequest::EvenPair).unwrap();
        let pa = a.local_addr().unwrap().port();
        assert_eq!(pa % 2, 0);
        assert_eq!(b.unwrap().local_addr().unwrap().port(), pa + 1);
        let (any, _) = p.bind(ip, PortRequest::Any).unwrap();
        assert!((40000..=40999).contains(&any.local_addr().unwrap().port()));
    }
}
