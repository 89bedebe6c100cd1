//! Binding relay sockets on the configured addresses, in the configured port range.

use std::io;
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};

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

impl RelayPorts {
    /// A TCP relay (RFC 6062) on `ip`: a non-blocking listener on a port of
    /// the range, bound with SO_REUSEADDR and SO_REUSEPORT so that the
    /// connections to peers ([`connect_from`]) can leave from its address.
    pub fn bind_tcp(&mut self, ip: IpAddr) -> io::Result<TcpListener> {
        let span = u32::from(self.max - self.min) + 1;
        let mut last = io::Error::new(io::ErrorKind::AddrInUse, "no free relay port in range");
        for _ in 0..MAX_BIND_ATTEMPTS.min(span) {
            let port = (u32::from(self.min) + self.next % span) as u16;
            self.next = self.next.wrapping_add(1);
            let addr = SocketAddr::new(ip, port);
            // SO_REUSEPORT would let this listener join another socket's group on the same port (another
            // worker's relay, another server's listener) and share its connections. So the port must be free
            // of every TCP socket first, which a plain bind (no reuse flags) proves; the lock keeps two workers
            // from proving the same port at once. It must be free for UDP too: a client's UDP and TCP relays
            // never share a port number.
            let _guard = TCP_RELAY_BIND.lock().unwrap_or_else(|e| e.into_inner());
            if UdpSocket::bind(addr).is_err() || TcpListener::bind(addr).is_err() {
                continue;
            }
            match tcp_socket(addr).and_then(|s| {
                s.bind(&addr.into())?;
                s.listen(64)?;
                Ok(TcpListener::from(s))
            }) {
                Ok(l) => return Ok(l),
                Err(e) => last = e,
            }
        }
        Err(last)
    }
}

/// Held while a TCP relay port is proven free and bound (by any worker).
static TCP_RELAY_BIND: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// A TCP socket for a relay address: non-blocking, SO_REUSEADDR and SO_REUSEPORT.
fn tcp_socket(addr: SocketAddr) -> io::Result<socket2::Socket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    s.set_reuse_address(true)?;
    crate::listen::reuse_port(&s)?;
    s.set_nonblocking(true)?;
    Ok(s)
}

/// A non-blocking TCP connection from `from` (a TCP relay's address) to
/// `to`: under way when it returns; it is open when the socket is writable
/// and its error (`take_error`) is none.
pub fn connect_from(from: SocketAddr, to: SocketAddr) -> io::Result<TcpStream> {
    let s = tcp_socket(from)?;
    s.set_nodelay(true)?;
    s.bind(&from.into())?;
    match s.connect(&to.into()) {
        Ok(()) => {}
        // EINPROGRESS: under way.
        Err(e) if in_progress(&e) => {}
        Err(e) => return Err(e),
    }
    Ok(TcpStream::from(s))
}

/// Whether a non-blocking connect's error says it is under way (EINPROGRESS).
fn in_progress(e: &io::Error) -> bool {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    if e.raw_os_error() == Some(libc::EINPROGRESS) {
        return true;
    }
    e.kind() == io::ErrorKind::WouldBlock
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
