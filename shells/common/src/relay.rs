//! Binding relay sockets in the configured port range.

use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};

/// Picks relay ports: tries ports from a random start across the range.
#[derive(Debug)]
pub struct RelayPorts {
    min: u16,
    max: u16,
    next: u32,
}

/// Most bind attempts for one relay before giving up (the client gets 508).
pub const MAX_BIND_ATTEMPTS: u32 = 128;

/// Which ports to bind, as the core asked (its `PortRequest`, minus the reserved case).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    /// Any port.
    Any,
    /// An even port.
    Even,
    /// An even port P and P + 1.
    EvenPair,
}

fn bind_one(addr: SocketAddr) -> io::Result<UdpSocket> {
    let s = UdpSocket::bind(addr)?;
    s.set_nonblocking(true)?;
    Ok(s)
}

impl RelayPorts {
    /// Ports `min..=max`, starting the search at a random offset.
    pub fn new(min: u16, max: u16) -> Self {
        let mut b = [0u8; 4];
        getrandom::getrandom(&mut b).expect("the OS random source is available");
        RelayPorts { min, max, next: u32::from_le_bytes(b) }
    }

    /// Binds non-blocking UDP sockets on `ip` as `want` says: the relay, and
    /// for [`Want::EvenPair`] the reserved socket at the next port.
    pub fn bind(&mut self, ip: IpAddr, want: Want) -> io::Result<(UdpSocket, Option<UdpSocket>)> {
        let span = u32::from(self.max - self.min) + 1;
        let mut last = io::Error::new(io::ErrorKind::AddrInUse, "no free relay port in range");
        for _ in 0..MAX_BIND_ATTEMPTS.min(span) {
            let mut port = u32::from(self.min) + self.next % span;
            self.next = self.next.wrapping_add(if want == Want::Any { 1 } else { 2 });
            if want != Want::Any && port % 2 == 1 {
                port += 1;
            }
            let needed = if want == Want::EvenPair { port + 1 } else { port };
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
            if want != Want::EvenPair {
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
        let mut p = RelayPorts::new(40000, 40999);
        let (s, none) = p.bind(ip, Want::Even).unwrap();
        assert_eq!(s.local_addr().unwrap().port() % 2, 0);
        assert!(none.is_none());
        let (a, b) = p.bind(ip, Want::EvenPair).unwrap();
        let pa = a.local_addr().unwrap().port();
        assert_eq!(pa % 2, 0);
        assert_eq!(b.unwrap().local_addr().unwrap().port(), pa + 1);
        let (any, _) = p.bind(ip, Want::Any).unwrap();
        assert!((40000..=40999).contains(&any.local_addr().unwrap().port()));
    }
}
