//! The listener table: every socket a server listens on, keyed by its local
//! address, with what it is for.
//!
//! A shell binds the table's entries once ([`Listeners::bind`]), reads every
//! UDP socket with one routine and accepts on every TCP listener with another;
//! the [`Driver`](crate::driver::Driver) looks the local address up here to
//! know whether a datagram is TURN, media or relayed, and a connection's
//! [`ConnKind`] comes from the listener that accepted it. A new listener (a
//! second address, TLS) is one more entry, not a code path in each shell.

use std::io;
use std::net::{SocketAddr, TcpListener, UdpSocket};

use tracing::warn;

use crate::Settings;

/// What a listening socket is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ListenerKind {
    /// STUN/TURN over UDP.
    TurnUdp,
    /// STUN/TURN over TCP.
    TurnTcp,
    /// HTTP: the web client, `/ws` signaling, `/healthz`, `/stats`.
    Http,
    /// The SFU's media socket (UDP, ICE-lite, DTLS-SRTP).
    Media,
}

/// What a stream connection carries, from the listener that accepted it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConnKind {
    /// STUN/TURN messages and ChannelData, framed on the stream.
    TurnStream,
    /// HTTP/1.1, possibly upgraded to a WebSocket.
    Http,
}

impl ListenerKind {
    /// Whether the socket is UDP (else a TCP listener).
    pub fn is_udp(self) -> bool {
        self.conn_kind().is_none()
    }

    /// What a connection accepted on such a listener carries (`None`: it is UDP).
    pub fn conn_kind(self) -> Option<ConnKind> {
        match self {
            ListenerKind::TurnTcp => Some(ConnKind::TurnStream),
            ListenerKind::Http => Some(ConnKind::Http),
            ListenerKind::TurnUdp | ListenerKind::Media => None,
        }
    }
}

/// One entry of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listener {
    /// What it is for.
    pub kind: ListenerKind,
    /// Its local address (once bound, the bound one: a port 0 is resolved).
    pub addr: SocketAddr,
}

/// A bound listening socket, non-blocking, for a shell to register.
#[derive(Debug)]
pub enum Socket {
    /// A UDP socket: read it with the shell's datagram routine.
    Udp(UdpSocket),
    /// A TCP listener whose connections carry `kind`: accept on it with the
    /// shell's accept routine.
    Tcp(TcpListener, ConnKind),
}

/// The listener table. Small (a handful of entries), so lookups scan it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Listeners {
    entries: Vec<Listener>,
    /// Receive and send buffer to ask for each UDP listener, bytes (0: the kernel's default).
    udp_buffer: usize,
}

impl Listeners {
    /// The listeners `settings` ask for, in binding order: STUN/TURN on UDP
    /// and TCP, HTTP, SFU media.
    pub fn configured(settings: &Settings) -> Self {
        let mut t = Listeners { udp_buffer: settings.udp_buffer, ..Listeners::default() };
        t.push(ListenerKind::TurnUdp, settings.turn_listen);
        t.push(ListenerKind::TurnTcp, settings.turn_listen);
        t.push(ListenerKind::Http, settings.http_listen);
        t.push(ListenerKind::Media, settings.media_listen);
        t
    }

    /// Adds an entry.
    pub fn push(&mut self, kind: ListenerKind, addr: SocketAddr) {
        self.entries.push(Listener { kind, addr });
    }

    /// The entries, in order.
    pub fn iter(&self) -> impl Iterator<Item = Listener> + '_ {
        self.entries.iter().copied()
    }

    /// What the UDP socket bound at `local` is for; `None` if it is not a listener
    /// (TCP and UDP listeners may share an address).
    pub fn udp_kind_at(&self, local: SocketAddr) -> Option<ListenerKind> {
        self.entries.iter().find(|l| l.kind.is_udp() && l.addr == local).map(|l| l.kind)
    }

    /// The address of the first listener of `kind`.
    pub fn addr_of(&self, kind: ListenerKind) -> Option<SocketAddr> {
        self.entries.iter().find(|l| l.kind == kind).map(|l| l.addr)
    }

    /// Binds every entry, non-blocking. Returns the table with the bound
    /// addresses (a port 0 resolved) and the sockets, in the same order.
    pub fn bind(&self) -> io::Result<(Listeners, Vec<(Listener, Socket)>)> {
        let mut bound = Listeners { udp_buffer: self.udp_buffer, ..Listeners::default() };
        let mut sockets = Vec::with_capacity(self.entries.len());
        for l in self.iter() {
            let (socket, addr) = match l.kind.conn_kind() {
                None => {
                    let s = bind_udp(l.addr, self.udp_buffer)?;
                    let addr = s.local_addr()?;
                    (Socket::Udp(s), addr)
                }
                Some(kind) => {
                    let s = TcpListener::bind(l.addr)?;
                    s.set_nonblocking(true)?;
                    let addr = s.local_addr()?;
                    (Socket::Tcp(s, kind), addr)
                }
            };
            bound.push(l.kind, addr);
            sockets.push((Listener { kind: l.kind, addr }, socket));
        }
        Ok((bound, sockets))
    }
}

/// A non-blocking UDP socket bound at `addr`, with receive and send buffers
/// of `buffer` bytes asked for (0: the kernel's default). Where the kernel
/// grants less, a warning names the sysctl to raise: a burst larger than the
/// receive buffer is lost before the server sees it.
fn bind_udp(addr: SocketAddr, buffer: usize) -> io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket as RawSocket, Type};
    let s = RawSocket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if buffer > 0 {
        // Linux reports twice what it grants (the doubling covers its bookkeeping).
        let granted = |n: usize| if cfg!(target_os = "linux") { n / 2 } else { n };
        let _ = s.set_recv_buffer_size(buffer);
        let _ = s.set_send_buffer_size(buffer);
        let (rcv, snd) = (s.recv_buffer_size().map(granted)?, s.send_buffer_size().map(granted)?);
        if rcv < buffer {
            warn!(%addr, asked = buffer, granted = rcv, "UDP receive buffer capped by the kernel: raise net.core.rmem_max");
        }
        if snd < buffer {
            warn!(%addr, asked = buffer, granted = snd, "UDP send buffer capped by the kernel: raise net.core.wmem_max");
        }
    }
    s.bind(&addr.into())?;
    s.set_nonblocking(true)?;
    Ok(s.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn udp_listeners_get_the_buffers_asked_for_up_to_the_kernel_cap() {
        let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let read_max = |f: &str| std::fs::read_to_string(f).ok().and_then(|v| v.trim().parse::<usize>().ok());
        let (rmax, wmax) = (read_max("/proc/sys/net/core/rmem_max"), read_max("/proc/sys/net/core/wmem_max"));
        let asked = 1 << 20;
        let s = socket2::Socket::from(bind_udp(addr, asked).unwrap());
        // Linux reports twice what it grants; it grants up to the sysctl cap.
        let want = |max: Option<usize>| 2 * max.map_or(asked, |m| asked.min(m));
        assert!(s.recv_buffer_size().unwrap() >= want(rmax), "{:?}", s.recv_buffer_size());
        assert!(s.send_buffer_size().unwrap() >= want(wmax), "{:?}", s.send_buffer_size());
        // 0 leaves the kernel's default, which is smaller.
        let d = socket2::Socket::from(bind_udp(addr, 0).unwrap());
        assert!(d.recv_buffer_size().unwrap() < 2 * asked);
    }

    #[test]
    fn binds_every_entry_and_tells_udp_kinds_apart() {
        let mut plan = Listeners::default();
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        for kind in [ListenerKind::TurnUdp, ListenerKind::TurnTcp, ListenerKind::Http, ListenerKind::Media] {
            plan.push(kind, any);
        }
        let (table, sockets) = plan.bind().unwrap();
        assert_eq!(sockets.len(), 4);
        for ((l, socket), entry) in sockets.iter().zip(table.iter()) {
            assert_eq!(*l, entry);
            assert_ne!(l.addr.port(), 0, "the bound port is in the table");
            match socket {
                Socket::Udp(s) => assert!(l.kind.is_udp() && s.local_addr().unwrap() == l.addr),
                Socket::Tcp(s, kind) => assert!(Some(*kind) == l.kind.conn_kind() && s.local_addr().unwrap() == l.addr),
            }
        }
        let turn = table.addr_of(ListenerKind::TurnUdp).unwrap();
        let media = table.addr_of(ListenerKind::Media).unwrap();
        assert_eq!(table.udp_kind_at(turn), Some(ListenerKind::TurnUdp));
        assert_eq!(table.udp_kind_at(media), Some(ListenerKind::Media));
        // A TCP listener's address is no UDP listener, nor is a relay's.
        assert_eq!(table.udp_kind_at(table.addr_of(ListenerKind::Http).unwrap()), None);
        assert_eq!(table.udp_kind_at("127.0.0.1:1".parse().unwrap()), None);
        assert_eq!(ListenerKind::TurnTcp.conn_kind(), Some(ConnKind::TurnStream));
        assert_eq!(ListenerKind::Http.conn_kind(), Some(ConnKind::Http));
    }
}
