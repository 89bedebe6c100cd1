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
    /// STUN/TURN over TLS (`turns:`).
    TurnTls,
    /// HTTPS and WSS: the same routes as HTTP.
    Https,
}

/// What a stream connection carries, from the listener that accepted it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConnKind {
    /// STUN/TURN messages and ChannelData, framed on the stream.
    TurnStream,
    /// HTTP/1.1, possibly upgraded to a WebSocket.
    Http,
    /// [`ConnKind::TurnStream`] inside TLS.
    TurnTls,
    /// [`ConnKind::Http`] inside TLS.
    Https,
    /// A peer's connection to a TCP relay (RFC 6062): bytes the engine relays.
    RelayPeer,
}

impl ConnKind {
    /// Whether the connection starts with a TLS handshake.
    pub fn tls(self) -> bool {
        matches!(self, ConnKind::TurnTls | ConnKind::Https)
    }
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
            ListenerKind::TurnTls => Some(ConnKind::TurnTls),
            ListenerKind::Https => Some(ConnKind::Https),
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
    /// Whether the STUN/TURN listeners are shared with other workers (SO_REUSEPORT).
    shared: bool,
}

impl Listeners {
    /// The listeners `settings` ask for, in binding order: STUN/TURN on UDP
    /// and TCP, HTTP, SFU media, and with a certificate TURN over TLS and HTTPS.
    pub fn configured(settings: &Settings) -> Self {
        let mut t = Listeners { udp_buffer: settings.udp_buffer, ..Listeners::default() };
        t.push(ListenerKind::TurnUdp, settings.turn_listen);
        t.push(ListenerKind::TurnTcp, settings.turn_listen);
        // RFC 5780: the other three combinations of the two IPs and the two ports, for Binding requests.
        if let Some(nat) = settings.turn.nat_discovery {
            for addr in &nat.addresses()[1..] {
                t.push(ListenerKind::TurnUdp, *addr);
            }
        }
        t.push(ListenerKind::Http, settings.http_listen);
        t.push(ListenerKind::Media, settings.media_listen);
        if let Some(tls) = &settings.tls {
            t.push(ListenerKind::TurnTls, tls.turn_listen);
            t.push(ListenerKind::Https, tls.https_listen);
        }
        t
    }

    /// The listeners of worker `worker` of `workers`, once worker 0's are
    /// bound (`first`, with its ports resolved): the same STUN/TURN
    /// addresses, shared (SO_REUSEPORT, so the kernel spreads clients over
    /// the workers and keeps each on one), and a media port of its own, the
    /// first worker's port + `worker` (or any free port if that one was 0).
    /// HTTP and HTTPS stay on worker 0, with signaling. For worker 0, the configured
    /// table, shared when there are several workers.
    pub fn for_worker(settings: &Settings, worker: usize, first: Option<&Listeners>) -> io::Result<Self> {
        let shared = settings.workers > 1;
        let Some(first) = first.filter(|_| worker > 0) else {
            return Ok(Listeners { shared, ..Listeners::configured(settings) });
        };
        let mut t = Listeners { udp_buffer: settings.udp_buffer, shared, ..Listeners::default() };
        for l in first.iter() {
            match l.kind {
                ListenerKind::TurnUdp | ListenerKind::TurnTcp | ListenerKind::TurnTls => t.push(l.kind, l.addr),
                ListenerKind::Media => {
                    let port = match settings.media_listen.port() {
                        0 => 0,
                        p => p.checked_add(worker as u16).filter(|_| worker < 1 << 16).ok_or_else(|| {
                            io::Error::new(io::ErrorKind::InvalidInput, "--media-listen port + workers passes 65535")
                        })?,
                    };
                    t.push(l.kind, SocketAddr::new(l.addr.ip(), port));
                }
                ListenerKind::Http | ListenerKind::Https => {}
            }
        }
        Ok(t)
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
        let mut bound = Listeners { entries: Vec::new(), ..self.clone() };
        let mut sockets = Vec::with_capacity(self.entries.len());
        for l in self.iter() {
            let shared = self.shared && matches!(l.kind, ListenerKind::TurnUdp | ListenerKind::TurnTcp | ListenerKind::TurnTls);
            let (socket, addr) = match l.kind.conn_kind() {
                None => {
                    let s = bind_udp(l.addr, self.udp_buffer, shared)?;
                    let addr = s.local_addr()?;
                    (Socket::Udp(s), addr)
                }
                Some(kind) => {
                    let s = bind_tcp(l.addr, shared)?;
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
/// `shared`: SO_REUSEPORT, so every worker binds the same address (a
/// worker's STUN/TURN listener).
fn bind_udp(addr: SocketAddr, buffer: usize, shared: bool) -> io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket as RawSocket, Type};
    // Said once per process, not once per worker and socket.
    static CAPPED: std::sync::Once = std::sync::Once::new();
    let s = RawSocket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if buffer > 0 {
        // Linux reports twice what it grants (the doubling covers its bookkeeping).
        let granted = |n: usize| if cfg!(target_os = "linux") { n / 2 } else { n };
        let _ = s.set_recv_buffer_size(buffer);
        let _ = s.set_send_buffer_size(buffer);
        let (rcv, snd) = (s.recv_buffer_size().map(granted)?, s.send_buffer_size().map(granted)?);
        if rcv < buffer || snd < buffer {
            CAPPED.call_once(|| {
                warn!(
                    asked = buffer,
                    receive = rcv,
                    send = snd,
                    "UDP socket buffers capped by the kernel: bursts beyond them are lost; raise net.core.rmem_max \
                     and net.core.wmem_max (sysctl -w net.core.rmem_max={buffer} net.core.wmem_max={buffer})"
                )
            });
        }
    }
    if shared {
        reuse_port(&s)?;
    }
    s.bind(&addr.into())?;
    s.set_nonblocking(true)?;
    Ok(s.into())
}

/// A non-blocking TCP listener at `addr`; `shared` as for [`bind_udp`].
fn bind_tcp(addr: SocketAddr, shared: bool) -> io::Result<TcpListener> {
    use socket2::{Domain, Protocol, Socket as RawSocket, Type};
    let s = RawSocket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    // As std's TcpListener::bind: a restarted server is not kept off its port by old connections.
    #[cfg(unix)]
    s.set_reuse_address(true)?;
    if shared {
        reuse_port(&s)?;
    }
    s.bind(&addr.into())?;
    s.listen(1024)?;
    s.set_nonblocking(true)?;
    Ok(s.into())
}

#[cfg(all(unix, not(any(target_os = "solaris", target_os = "illumos", target_os = "cygwin"))))]
pub(crate) fn reuse_port(s: &socket2::Socket) -> io::Result<()> {
    s.set_reuse_port(true)
}

#[cfg(not(all(unix, not(any(target_os = "solaris", target_os = "illumos", target_os = "cygwin")))))]
pub(crate) fn reuse_port(_: &socket2::Socket) -> io::Result<()> {
    Err(io::Error::new(io::ErrorKind::Unsupported, "several workers need SO_REUSEPORT; run with --workers 1"))
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
        let s = socket2::Socket::from(bind_udp(addr, asked, false).unwrap());
        // Linux reports twice what it grants; it grants up to the sysctl cap.
        let want = |max: Option<usize>| 2 * max.map_or(asked, |m| asked.min(m));
        assert!(s.recv_buffer_size().unwrap() >= want(rmax), "{:?}", s.recv_buffer_size());
        assert!(s.send_buffer_size().unwrap() >= want(wmax), "{:?}", s.send_buffer_size());
        // 0 leaves the kernel's default, which is smaller.
        let d = socket2::Socket::from(bind_udp(addr, 0, false).unwrap());
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
