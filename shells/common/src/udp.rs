//! Batched UDP I/O for the shells: many datagrams per system call on Linux
//! and Android (`recvmmsg`, `sendmmsg`, and UDP GSO for runs of equal-sized
//! datagrams to one remote), a loop of `recv_from` / `send_to` elsewhere.
//!
//! Why: the TURN relay spends most of its CPU in `sendto` and `recvfrom`
//! entry and exit (benches/README), not in the engine. The calls here need no
//! heap allocation once warm: the buffers live in [`RecvBatch`] and
//! [`SendBatch`], and the `mmsghdr`/`iovec`/address arrays are built on the
//! stack for each call (so both types stay `Send` and hold no pointers into
//! themselves).
//!
//! Sockets must be non-blocking. A datagram that cannot be sent now, or that
//! the kernel refuses, is dropped and counted, as the network would drop it.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};

/// Datagrams per batched system call.
pub const BATCH: usize = 32;

/// Most datagrams a shell queues on one socket before sending them at once
/// rather than at the end of its event loop turn (bounds the queue's memory).
pub const MAX_QUEUED: usize = 1024;

/// Most datagrams in one GSO message (the kernel's limit before Linux 5.5; 128 since).
#[cfg(any(target_os = "linux", target_os = "android"))]
const GSO_MAX_SEGMENTS: usize = 64;
/// Most payload bytes in one GSO message: one IPv4 datagram carries at most 65507.
#[cfg(any(target_os = "linux", target_os = "android"))]
const GSO_MAX_BYTES: usize = 65000;

/// Where a held datagram is: its sender, length and slot.
#[derive(Clone, Copy)]
struct Held {
    from: SocketAddr,
    len: usize,
    slot: usize,
}

impl Held {
    const EMPTY: Held = Held { from: SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0), len: 0, slot: 0 };
}

/// Receive buffers for one batched read: [`BATCH`] slots, each a buffer of
/// `headroom + max_datagram + tailroom` bytes where the datagram is received
/// at offset `headroom`, with `tailroom` bytes spare after the largest
/// datagram (the TURN relay path writes framing before and padding after the
/// payload in place).
pub struct RecvBatch {
    /// BATCH slots, `stride` bytes apart: the slot and one byte more, so that
    /// `recv_from` can tell a datagram longer than `max_datagram` (it would fill that byte too).
    buf: Vec<u8>,
    stride: usize,
    headroom: usize,
    max_datagram: usize,
    held: [Held; BATCH],
    len: usize,
    oversized: u64,
}

impl std::fmt::Debug for RecvBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecvBatch")
            .field("headroom", &self.headroom)
            .field("max_datagram", &self.max_datagram)
            .field("len", &self.len)
            .field("oversized", &self.oversized)
            .finish_non_exhaustive()
    }
}

impl RecvBatch {
    /// Buffers for datagrams of at most `max_datagram` bytes, received at
    /// `headroom` with `tailroom` bytes after: allocates
    /// `BATCH * (headroom + max_datagram + tailroom)` bytes (plus one per slot) once.
    pub fn new(headroom: usize, max_datagram: usize, tailroom: usize) -> Self {
        let stride = headroom + max_datagram + tailroom + 1;
        RecvBatch {
            buf: vec![0; BATCH * stride],
            stride,
            headroom,
            max_datagram,
            held: [Held::EMPTY; BATCH],
            len: 0,
            oversized: 0,
        }
    }

    /// Datagrams held after the last [`recv_batch`]: index them `0..len()`.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no datagram is held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The `i`-th datagram's sender and length. Panics if `i >= len()`.
    pub fn meta(&self, i: usize) -> (SocketAddr, usize) {
        let h = &self.held[..self.len][i];
        (h.from, h.len)
    }

    /// Holds `data` from `from` as the one datagram of the batch, as if it had
    /// been received (for tests that drive a reader without a socket).
    #[cfg(test)]
    pub(crate) fn hold_one(&mut self, from: SocketAddr, data: &[u8]) {
        self.buf[self.headroom..self.headroom + data.len()].copy_from_slice(data);
        self.held[0] = Held { from, len: data.len(), slot: 0 };
        self.len = 1;
    }

    /// The `i`-th datagram's whole slot, `headroom + max_datagram + tailroom`
    /// bytes, its payload at `headroom..headroom + len`; mutable, for the
    /// engine to frame it in place. Panics if `i >= len()`.
    pub fn slot_mut(&mut self, i: usize) -> &mut [u8] {
        let start = self.held[..self.len][i].slot * self.stride;
        &mut self.buf[start..start + self.stride - 1]
    }

    /// Where each payload starts in its slot.
    pub fn headroom(&self) -> usize {
        self.headroom
    }

    /// Datagrams dropped on receipt since this batch was made, for being
    /// longer than `max_datagram` (they are never returned).
    pub fn oversized(&self) -> u64 {
        self.oversized
    }

    /// Holds a datagram received into `slot`, or counts it as dropped.
    fn hold(&mut self, slot: usize, from: SocketAddr, len: usize) {
        if len > self.max_datagram {
            self.oversized += 1;
        } else {
            self.held[self.len] = Held { from, len, slot };
            self.len += 1;
        }
    }
}

/// Reads up to [`BATCH`] datagrams from the non-blocking `socket` into
/// `batch`, with one `recvmmsg` on Linux and Android, a loop of `recv_from`
/// elsewhere. Returns `Ok(n)` with `n == batch.len() >= 1`, or
/// `Err(WouldBlock)` when nothing waits.
///
/// A datagram longer than the batch's `max_datagram` is dropped (the kernel's
/// truncation flag tells) and counted in [`RecvBatch::oversized`]; if all
/// were, it reads on. Any other error is returned as is, such as
/// `ConnectionRefused` for an ICMP error that an earlier send caused: the
/// socket still works, and the next call reads on.
pub fn recv_batch(socket: &UdpSocket, batch: &mut RecvBatch) -> io::Result<usize> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    return recv_mmsg(socket, batch);
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    return recv_each(socket, batch);
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn recv_mmsg(socket: &UdpSocket, batch: &mut RecvBatch) -> io::Result<usize> {
    batch.len = 0;
    loop {
        let (head, max) = (batch.headroom, batch.max_datagram);
        let bufs = batch.buf.chunks_exact_mut(batch.stride).map(|s| &mut s[head..head + max]);
        let mut got = [sys::Got::EMPTY; BATCH];
        let n = match sys::recv_mmsg(socket, bufs, &mut got) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        for (slot, g) in got[..n].iter().enumerate() {
            match g.from {
                Some(from) if !g.truncated => batch.hold(slot, from, g.len),
                Some(_) => batch.oversized += 1,
                // Not IPv4 or IPv6: never from a UDP socket.
                None => {}
            }
        }
        if batch.len > 0 {
            return Ok(batch.len);
        }
    }
}

/// [`recv_batch`] without `recvmmsg`: also built on Linux for its tests.
#[cfg(any(test, not(any(target_os = "linux", target_os = "android"))))]
fn recv_each(socket: &UdpSocket, batch: &mut RecvBatch) -> io::Result<usize> {
    batch.len = 0;
    while batch.len < BATCH {
        // One byte more than max_datagram: a longer datagram fills it (or fails with WSAEMSGSIZE on Windows).
        let start = batch.len * batch.stride + batch.headroom;
        match socket.recv_from(&mut batch.buf[start..start + batch.max_datagram + 1]) {
            Ok((n, from)) => batch.hold(batch.len, from, n),
            Err(e) if cfg!(windows) && e.raw_os_error() == Some(10040) => batch.oversized += 1,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            // What was read is returned; a later call sees WouldBlock again (an ICMP error is reported once).
            Err(_) if batch.len > 0 => break,
            Err(e) => return Err(e),
        }
    }
    Ok(batch.len)
}

/// What [`SendBatch::flush`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sent {
    /// Datagrams the kernel took.
    pub sent: usize,
    /// Datagrams dropped: the socket's buffer was full (`WouldBlock`,
    /// `ENOBUFS`) or the kernel refused them (such as `EPERM` from a firewall).
    pub dropped: usize,
    /// Send system calls made (`sendmmsg` or `send_to`).
    pub syscalls: usize,
}

/// A queued datagram: its bytes are `arena[start..start + len]`.
#[derive(Debug, Clone)]
struct Queued {
    remote: SocketAddr,
    start: usize,
    len: usize,
}

/// Datagrams queued for one socket, sent in batches by [`SendBatch::flush`].
/// Each is copied into one arena, so no allocation per datagram once warm.
pub struct SendBatch {
    arena: Vec<u8>,
    queued: Vec<Queued>,
    /// Whether to try UDP GSO: cleared when the kernel refuses it before it ever worked.
    gso: bool,
    /// Whether a GSO message went: a later refusal is about that message, not about GSO.
    #[cfg_attr(not(any(target_os = "linux", target_os = "android")), allow(dead_code))]
    gso_worked: bool,
}

impl std::fmt::Debug for SendBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SendBatch")
            .field("len", &self.queued.len())
            .field("bytes", &self.arena.len())
            .field("gso", &self.gso)
            .finish_non_exhaustive()
    }
}

impl Default for SendBatch {
    fn default() -> Self {
        SendBatch::new()
    }
}

impl SendBatch {
    /// An empty queue.
    pub fn new() -> Self {
        let gso = cfg!(any(target_os = "linux", target_os = "android"));
        SendBatch { arena: Vec::new(), queued: Vec::new(), gso, gso_worked: false }
    }

    /// Queues a copy of `data` for `remote`.
    pub fn push(&mut self, remote: SocketAddr, data: &[u8]) {
        let start = self.arena.len();
        self.arena.extend_from_slice(data);
        self.queued.push(Queued {
            remote,
            start,
            len: data.len(),
        });
    }

    /// Datagrams queued.
    pub fn len(&self) -> usize {
        self.queued.len()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.queued.is_empty()
    }

    /// Whether [`SendBatch::flush`] still tries UDP GSO: false off Linux, on
    /// a kernel without it (before 4.18), or once the kernel refused it.
    pub fn gso(&self) -> bool {
        self.gso
    }

    /// Sends everything queued from the non-blocking `socket` with as few
    /// system calls as it can, then empties the queue.
    ///
    /// On Linux and Android: `sendmmsg` with up to [`BATCH`] messages a call,
    /// where a run of consecutive datagrams to one remote of one length (the
    /// last may be shorter; at most 64 datagrams and 65000 bytes, each fitting
    /// a 1500-byte Ethernet frame) goes as one message with UDP GSO
    /// (`UDP_SEGMENT`), which the kernel splits into those datagrams. If the kernel refuses GSO (`EIO`, `EINVAL`,
    /// `ENOPROTOOPT`) before it ever worked for this batch, it is not tried
    /// again; the run is sent datagram by datagram either way. Elsewhere: a
    /// loop of `send_to`.
    ///
    /// A datagram that cannot be sent now or is refused is dropped and
    /// counted ([`Sent::dropped`]); the rest still go. One that only carried
    /// the report of an earlier ICMP error (`ECONNREFUSED`; not sent, and the
    /// error is cleared by the report) is sent again, once.
    pub fn flush(&mut self, socket: &UdpSocket) -> Sent {
        let sent = if self.queued.is_empty() { Sent::default() } else { self.send_all(socket) };
        self.clear();
        sent
    }

    /// Queues `data` for `remote`, as a shell does between waits, sending
    /// everything from `socket` at once when [`MAX_QUEUED`] are waiting (so the
    /// queue stays bounded). True if the queue was empty: the shell notes the
    /// socket, to [`SendBatch::send`] from it before it next waits.
    pub fn queue(&mut self, socket: &UdpSocket, remote: SocketAddr, data: &[u8]) -> bool {
        let first = self.is_empty();
        self.push(remote, data);
        if self.len() >= MAX_QUEUED {
            self.send(socket);
        }
        first
    }

    /// [`SendBatch::flush`], with what was dropped said in the debug log.
    pub fn send(&mut self, socket: &UdpSocket) {
        let sent = self.flush(socket);
        if sent.dropped > 0 {
            tracing::debug!(local = ?socket.local_addr().ok(), dropped = sent.dropped, "udp send: datagrams dropped");
        }
    }

    fn clear(&mut self) {
        self.arena.clear();
        self.queued.clear();
    }

    #[cfg(any(target_os = "linux", target_os = "android"))]
    fn send_all(&mut self, socket: &UdpSocket) -> Sent {
        self.send_mmsg(socket)
    }

    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    fn send_all(&mut self, socket: &UdpSocket) -> Sent {
        self.send_each(socket)
    }

    /// [`SendBatch::flush`] with `send_to`, without clearing: also built on Linux for its tests.
    #[cfg(any(test, not(any(target_os = "linux", target_os = "android"))))]
    fn send_each(&mut self, socket: &UdpSocket) -> Sent {
        let mut out = Sent::default();
        for q in &self.queued {
            let mut retried = false;
            loop {
                out.syscalls += 1;
                match socket.send_to(&self.arena[q.start..q.start + q.len], q.remote) {
                    Ok(_) => out.sent += 1,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) if e.kind() == io::ErrorKind::ConnectionRefused && !retried => {
                        retried = true;
                        continue;
                    }
                    Err(_) => out.dropped += 1,
                }
                break;
            }
        }
        out
    }
}

/// One message of a `sendmmsg`: `count` queued datagrams from `first`, with
/// GSO segments of `segment` bytes when `count > 1`.
#[cfg(any(target_os = "linux", target_os = "android"))]
#[derive(Clone, Copy)]
struct Plan {
    first: usize,
    count: usize,
    segment: u16,
}

#[cfg(any(target_os = "linux", target_os = "android"))]
impl SendBatch {
    /// How many datagrams from `i` go as one GSO message, and its segment size.
    fn run(&self, i: usize) -> (usize, u16) {
        let first = &self.queued[i];
        let seg = first.len;
        // A segment must fit the path MTU or the kernel refuses the message: take a
        // 1500-byte Ethernet MTU (IPv4 20 + UDP 8 bytes of headers; IPv6 40 + 8).
        let mtu_payload = if first.remote.is_ipv4() { 1472 } else { 1452 };
        if seg == 0 || seg > mtu_payload {
            return (1, 0);
        }
        let (mut count, mut total) = (1, seg);
        for q in &self.queued[i + 1..] {
            // Zero-length datagrams cannot be segments; a shorter one ends the run.
            if count == GSO_MAX_SEGMENTS || q.remote != first.remote || q.len == 0 || q.len > seg {
                break;
            }
            if total + q.len > GSO_MAX_BYTES {
                break;
            }
            count += 1;
            total += q.len;
            if q.len < seg {
                break;
            }
        }
        (count, if count > 1 { seg as u16 } else { 0 })
    }

    fn send_mmsg(&mut self, socket: &UdpSocket) -> Sent {
        let mut out = Sent::default();
        if self.gso && self.queued.len() > 1 && !gso_supported(socket) {
            self.gso = false;
        }
        let total = self.queued.len();
        // First datagram not yet sent or dropped.
        let mut pos = 0;
        // Datagrams before this go one per message: their GSO message was refused.
        let mut plain_until = 0;
        // The datagram already sent again after it carried an earlier ICMP error's report.
        let mut retried = usize::MAX;
        while pos < total {
            let mut plan = [Plan { first: 0, count: 0, segment: 0 }; BATCH];
            let (mut n, mut next) = (0, pos);
            while n < BATCH && next < total {
                let (count, segment) = if self.gso && next >= plain_until { self.run(next) } else { (1, 0) };
                plan[n] = Plan { first: next, count, segment };
                next += count;
                n += 1;
            }
            let (queued, arena) = (&self.queued, &self.arena);
            let msgs = plan[..n].iter().map(|p| {
                let (a, z) = (&queued[p.first], &queued[p.first + p.count - 1]);
                // Datagrams are queued back to back, so a run's bytes are contiguous.
                sys::Msg { to: a.remote, data: &arena[a.start..z.start + z.len], segment: p.segment }
            });
            let result = sys::send_mmsg(socket, msgs);
            out.syscalls += 1;
            let e = match result {
                Ok(k) if k > 0 => {
                    for p in &plan[..k] {
                        out.sent += p.count;
                        self.gso_worked |= p.segment != 0;
                    }
                    pos = plan[k - 1].first + plan[k - 1].count;
                    continue;
                }
                Ok(_) => io::Error::from(io::ErrorKind::WouldBlock),
                Err(e) => e,
            };
            // The first message failed: sendmmsg reports an error only then.
            let p = plan[0];
            let full = e.kind() == io::ErrorKind::WouldBlock || e.raw_os_error() == Some(libc::ENOBUFS);
            match e.kind() {
                io::ErrorKind::Interrupted => {}
                _ if p.segment != 0 && !full => {
                    let refused = matches!(e.raw_os_error(), Some(libc::EIO | libc::EINVAL | libc::ENOPROTOOPT));
                    if refused && !self.gso_worked {
                        tracing::debug!("udp: the kernel refuses GSO ({e}); sending datagram by datagram");
                        self.gso = false;
                    }
                    plain_until = p.first + p.count;
                }
                // Only the report of an earlier ICMP error: this datagram was not sent.
                io::ErrorKind::ConnectionRefused if retried != p.first => retried = p.first,
                _ => {
                    out.dropped += p.count;
                    pos = p.first + p.count;
                }
            }
        }
        out
    }
}

/// Whether the kernel takes UDP GSO (Linux 4.18 on): asked once per process.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn gso_supported(socket: &UdpSocket) -> bool {
    static SUPPORTED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *SUPPORTED.get_or_init(|| sys::gso_supported(socket))
}

/// The system calls for batched UDP (the crate's other unsafe code is in `os`).
#[cfg(any(target_os = "linux", target_os = "android"))]
#[allow(unsafe_code)]
mod sys {
    use std::io;
    use std::mem;
    use std::net::{SocketAddr, UdpSocket};
    use std::os::fd::AsRawFd;
    use std::ptr;

    use socket2::SockAddr;

    use super::BATCH;

    /// What `recvmmsg` said of one message.
    #[derive(Clone, Copy)]
    pub struct Got {
        pub from: Option<SocketAddr>,
        pub len: usize,
        pub truncated: bool,
    }

    impl Got {
        pub const EMPTY: Got = Got { from: None, len: 0, truncated: false };
    }

    /// Receives up to [`BATCH`] datagrams, one into each of `bufs`, with one
    /// `recvmmsg`; what it says of the `i`-th goes to `got[i]`.
    pub fn recv_mmsg<'a>(
        socket: &UdpSocket,
        bufs: impl Iterator<Item = &'a mut [u8]>,
        got: &mut [Got; BATCH],
    ) -> io::Result<usize> {
        let empty = libc::iovec { iov_base: ptr::null_mut(), iov_len: 0 };
        let mut iovs = [empty; BATCH];
        let mut n = 0;
        for (iov, buf) in iovs.iter_mut().zip(bufs) {
            *iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
            n += 1;
        }
        // SAFETY: all-zero bytes are a valid mmsghdr (integers and null pointers) and sockaddr_storage.
        let (mut hdrs, mut addrs): ([libc::mmsghdr; BATCH], [libc::sockaddr_storage; BATCH]) = unsafe { mem::zeroed() };
        let (iov_at, addr_at) = (iovs.as_mut_ptr(), addrs.as_mut_ptr());
        for (i, h) in hdrs[..n].iter_mut().enumerate() {
            h.msg_hdr.msg_name = addr_at.wrapping_add(i).cast();
            h.msg_hdr.msg_namelen = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            h.msg_hdr.msg_iov = iov_at.wrapping_add(i);
            h.msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: hdrs[..n] point at n of the iovecs and address slots above, which outlive the call;
        // each iovec covers a distinct buffer borrowed mutably for 'a; the kernel writes only within them.
        let r = unsafe {
            libc::recvmmsg(socket.as_raw_fd(), hdrs.as_mut_ptr(), n as _, libc::MSG_DONTWAIT as _, ptr::null_mut())
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        let r = r as usize;
        for ((g, h), addr) in got.iter_mut().zip(&hdrs[..r]).zip(&addrs) {
            // SAFETY: the kernel wrote msg_namelen bytes of the sender's address into the zeroed storage.
            let from = unsafe { SockAddr::new(*addr, h.msg_hdr.msg_namelen) };
            let truncated = h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
            *g = Got { from: from.as_socket(), len: h.msg_len as usize, truncated };
        }
        Ok(r)
    }

    /// One message for [`send_mmsg`]: `data` to `to`, split by the kernel
    /// into datagrams of `segment` bytes (GSO) unless `segment` is 0.
    pub struct Msg<'a> {
        pub to: SocketAddr,
        pub data: &'a [u8],
        pub segment: u16,
    }

    /// A UDP_SEGMENT control message as the kernel reads it: the header, then the u16.
    #[repr(C)]
    struct SegmentCmsg {
        hdr: libc::cmsghdr,
        segment: u16,
    }

    // SAFETY: CMSG_SPACE and CMSG_LEN only compute sizes.
    const CMSG_SPACE: usize = unsafe { libc::CMSG_SPACE(2) } as usize;
    // SAFETY: as above.
    const CMSG_LEN: usize = unsafe { libc::CMSG_LEN(2) } as usize;
    const _: () = assert!(mem::size_of::<SegmentCmsg>() >= CMSG_SPACE);
    const _: () = assert!(mem::offset_of!(SegmentCmsg, segment) + 2 == CMSG_LEN);

    /// Sends the first [`BATCH`] of `msgs` with one `sendmmsg`: how many
    /// went (at least one), or the first one's error.
    pub fn send_mmsg<'a>(socket: &UdpSocket, msgs: impl Iterator<Item = Msg<'a>>) -> io::Result<usize> {
        let empty = libc::iovec { iov_base: ptr::null_mut(), iov_len: 0 };
        let mut iovs = [empty; BATCH];
        // SAFETY: all-zero bytes are a valid mmsghdr (integers and null pointers) and cmsghdr.
        let (mut hdrs, mut cmsgs): ([libc::mmsghdr; BATCH], [SegmentCmsg; BATCH]) = unsafe { mem::zeroed() };
        // The addresses in C form, one per message (not per datagram: a GSO run has one).
        let mut names: [Option<SockAddr>; BATCH] = std::array::from_fn(|_| None);
        let mut n = 0;
        for ((((iov, h), c), name), m) in iovs.iter_mut().zip(&mut hdrs).zip(&mut cmsgs).zip(&mut names).zip(msgs) {
            // The kernel only reads the data and the address: the *mut casts are for the C types.
            *iov = libc::iovec { iov_base: m.data.as_ptr().cast_mut().cast(), iov_len: m.data.len() };
            let to = name.insert(SockAddr::from(m.to));
            h.msg_hdr.msg_name = to.as_ptr().cast_mut().cast();
            h.msg_hdr.msg_namelen = to.len();
            h.msg_hdr.msg_iovlen = 1;
            if m.segment != 0 {
                c.hdr.cmsg_len = CMSG_LEN as _;
                c.hdr.cmsg_level = libc::SOL_UDP;
                c.hdr.cmsg_type = libc::UDP_SEGMENT;
                c.segment = m.segment;
                h.msg_hdr.msg_controllen = CMSG_SPACE as _;
            }
            n += 1;
        }
        let (iov_at, cmsg_at) = (iovs.as_mut_ptr(), cmsgs.as_mut_ptr());
        for (i, h) in hdrs[..n].iter_mut().enumerate() {
            h.msg_hdr.msg_iov = iov_at.wrapping_add(i);
            if h.msg_hdr.msg_controllen != 0 {
                h.msg_hdr.msg_control = cmsg_at.wrapping_add(i).cast();
            }
        }
        // SAFETY: hdrs[..n] point at n of the iovecs, control messages and addresses above (which do not move
        // before the call) and at data borrowed for 'a, all of which outlive the call; the kernel only reads
        // them (and writes msg_len).
        let r = unsafe { libc::sendmmsg(socket.as_raw_fd(), hdrs.as_mut_ptr(), n as _, libc::MSG_DONTWAIT as _) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(r as usize)
    }

    /// Whether the kernel knows UDP_SEGMENT (Linux 4.18 on; older ones would
    /// ignore the control message and send a run as one datagram).
    pub fn gso_supported(socket: &UdpSocket) -> bool {
        let mut val: libc::c_int = 0;
        let mut len = mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: val and len are live locals of the sizes given.
        let r = unsafe {
            libc::getsockopt(
                socket.as_raw_fd(),
                libc::SOL_UDP,
                libc::UDP_SEGMENT,
                ptr::addr_of_mut!(val).cast(),
                &mut len,
            )
        };
        r == 0
    }

    /// Sets SO_NO_CHECK, with which the kernel refuses GSO (EINVAL).
    #[cfg(test)]
    pub fn set_no_check(socket: &UdpSocket) {
        let one: libc::c_int = 1;
        let len = mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: one is a live local of the size given.
        let r = unsafe {
            libc::setsockopt(socket.as_raw_fd(), libc::SOL_SOCKET, libc::SO_NO_CHECK, ptr::addr_of!(one).cast(), len)
        };
        assert_eq!(r, 0, "SO_NO_CHECK: {}", io::Error::last_os_error());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::thread::sleep;
    use std::time::{Duration, Instant};

    type Recv = fn(&UdpSocket, &mut RecvBatch) -> io::Result<usize>;
    type Flush = fn(&mut SendBatch, &UdpSocket) -> Sent;

    const LINUX: bool = cfg!(any(target_os = "linux", target_os = "android"));

    /// The batched path, then (on Linux) the loop the other platforms use.
    fn recvs() -> Vec<(&'static str, Recv)> {
        let mut v: Vec<(&'static str, Recv)> = vec![("recv_batch", recv_batch)];
        if LINUX {
            v.push(("recv_from loop", recv_each));
        }
        v
    }

    fn flushes() -> Vec<(&'static str, Flush)> {
        fn each(b: &mut SendBatch, s: &UdpSocket) -> Sent {
            let sent = b.send_each(s);
            b.clear();
            sent
        }
        let mut v: Vec<(&'static str, Flush)> = vec![("flush", SendBatch::flush)];
        if LINUX {
            v.push(("send_to loop", each));
        }
        v
    }

    fn bind(addr: &str) -> io::Result<UdpSocket> {
        let s = UdpSocket::bind(addr)?;
        s.set_nonblocking(true)?;
        // Room for a whole test burst: the default buffer may hold fewer than 100 datagrams.
        socket2::SockRef::from(&s).set_recv_buffer_size(4 << 20)?;
        Ok(s)
    }

    fn local() -> UdpSocket {
        bind("127.0.0.1:0").unwrap()
    }

    /// A datagram that says who sent it and its sequence number, then a pattern.
    fn payload(tag: u8, seq: usize, len: usize) -> Vec<u8> {
        let mut v: Vec<u8> = (0..len).map(|j| (seq * 7 + j * 13) as u8).collect();
        v[..3.min(len)].copy_from_slice(&[tag, seq as u8, (seq >> 8) as u8][..3.min(len)]);
        v
    }

    /// Up to `n` datagrams from `socket` with plain `recv_from`, waiting at most 5 s.
    fn read_n(socket: &UdpSocket, n: usize) -> Vec<(SocketAddr, Vec<u8>)> {
        let deadline = Instant::now() + Duration::from_secs(5);
        let (mut out, mut buf) = (Vec::new(), vec![0; 65536]);
        while out.len() < n && Instant::now() < deadline {
            match socket.recv_from(&mut buf) {
                Ok((k, from)) => out.push((from, buf[..k].to_vec())),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => sleep(Duration::from_millis(1)),
                Err(e) => panic!("recv_from: {e}"),
            }
        }
        out
    }

    /// Up to `n` datagrams with `recv`, waiting at most 5 s; also the most that one call returned.
    fn batch_n(recv: Recv, socket: &UdpSocket, batch: &mut RecvBatch, n: usize) -> (Vec<(SocketAddr, Vec<u8>)>, usize) {
        let deadline = Instant::now() + Duration::from_secs(5);
        let (mut out, mut most) = (Vec::new(), 0);
        while out.len() < n && Instant::now() < deadline {
            match recv(socket, batch) {
                Ok(k) => {
                    assert!(k >= 1 && k == batch.len());
                    most = most.max(k);
                    let h = batch.headroom();
                    for i in 0..k {
                        let (from, len) = batch.meta(i);
                        out.push((from, batch.slot_mut(i)[h..h + len].to_vec()));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => sleep(Duration::from_millis(1)),
                Err(e) => panic!("recv: {e}"),
            }
        }
        (out, most)
    }

    #[test]
    fn batches_are_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<RecvBatch>();
        check::<SendBatch>();
    }

    #[test]
    fn recv_batch_reads_a_burst_from_two_senders_in_order() {
        for (name, recv) in recvs() {
            let rx = local();
            let senders = [local(), local()];
            let mut expected = [Vec::new(), Vec::new()];
            for i in 0..100 {
                let s = usize::from(i % 3 == 0);
                let p = payload(s as u8, expected[s].len(), 3 + (i * 53) % 700);
                senders[s].send_to(&p, rx.local_addr().unwrap()).unwrap();
                expected[s].push(p);
            }
            let mut batch = RecvBatch::new(36, 800, 4);
            let (got, most) = batch_n(recv, &rx, &mut batch, 100);
            assert_eq!(got.len(), 100, "{name}");
            for (s, want) in senders.iter().zip(&expected) {
                let from: Vec<_> = got.iter().filter(|g| g.0 == s.local_addr().unwrap()).map(|g| g.1.clone()).collect();
                assert_eq!(&from, want, "{name}");
            }
            assert_eq!(batch.slot_mut(0).len(), 36 + 800 + 4);
            assert_eq!(batch.oversized(), 0);
            assert!(matches!(recv(&rx, &mut batch), Err(e) if e.kind() == io::ErrorKind::WouldBlock));
            println!("{name}: 100 datagrams, at most {most} per call");
            if LINUX && name == "recv_batch" {
                assert!(most > 1, "recvmmsg returned one datagram a call");
            }
        }
    }

    #[test]
    fn send_batch_delivers_interleaved_datagrams_in_order() {
        for (name, flush) in flushes() {
            let tx = local();
            let rxs = [local(), local()];
            let mut batch = SendBatch::new();
            let mut expected = [Vec::new(), Vec::new()];
            for i in 0..100 {
                let r = i % 2;
                let p = payload(r as u8, expected[r].len(), 3 + (i * 71) % 1400);
                batch.push(rxs[r].local_addr().unwrap(), &p);
                expected[r].push(p);
            }
            assert_eq!(batch.len(), 100);
            let sent = flush(&mut batch, &tx);
            assert!(batch.is_empty());
            assert_eq!((sent.sent, sent.dropped), (100, 0), "{name}");
            for (rx, want) in rxs.iter().zip(&expected) {
                let got = read_n(rx, 50);
                assert!(got.iter().all(|g| g.0 == tx.local_addr().unwrap()));
                assert_eq!(got.into_iter().map(|g| g.1).collect::<Vec<_>>(), *want, "{name}");
            }
            println!("{name}: 100 datagrams in {} system calls", sent.syscalls);
            if LINUX && name == "flush" {
                assert!(sent.syscalls < 100);
            }
        }
    }

    #[test]
    fn gso_runs_arrive_as_separate_datagrams() {
        let tx = local();
        // Plain sockets: no UDP_GRO, so the kernel hands over each segment as its own datagram.
        let (a, b) = (local(), local());
        let (to_a, to_b) = (a.local_addr().unwrap(), b.local_addr().unwrap());
        let mut batch = SendBatch::new();
        let check = |batch: &mut SendBatch, sends: Vec<(SocketAddr, Vec<u8>)>, what: &str| {
            for (to, p) in &sends {
                batch.push(*to, p);
            }
            let sent = batch.flush(&tx);
            assert_eq!((sent.sent, sent.dropped), (sends.len(), 0), "{what}");
            for rx in [&a, &b] {
                let to = rx.local_addr().unwrap();
                let want: Vec<_> = sends.iter().filter(|s| s.0 == to).map(|s| s.1.clone()).collect();
                let got: Vec<_> = read_n(rx, want.len()).into_iter().map(|g| g.1).collect();
                assert_eq!(got, want, "{what}: every datagram with its own boundaries");
            }
            assert!(matches!(a.recv_from(&mut [0; 16]), Err(e) if e.kind() == io::ErrorKind::WouldBlock));
            if batch.gso() {
                println!("{what}: GSO, {} system call(s)", sent.syscalls);
                assert_eq!(sent.syscalls, 1, "{what}");
            } else {
                println!("{what}: GSO unavailable here, {} system call(s)", sent.syscalls);
            }
        };
        let mut sends: Vec<_> = (0..20).map(|i| (to_a, payload(0, i, 1200))).collect();
        sends.push((to_a, payload(0, 20, 300)));
        check(&mut batch, sends, "20 x 1200 + 300");
        // Runs end at 65000 bytes, at 64 datagrams, at another remote, and before an empty datagram.
        let mut sends: Vec<_> = (0..60).map(|i| (to_a, payload(1, i, 1100))).collect();
        sends.extend((0..3).map(|i| (to_b, payload(2, i, 500))));
        sends.extend((0..70).map(|i| (to_a, payload(3, i, 10))));
        sends.extend((0..5).map(|i| (to_a, payload(4, i, 100))));
        sends.push((to_a, Vec::new()));
        sends.push((to_a, payload(5, 0, 100)));
        // Too long for one Ethernet frame: sent without GSO.
        sends.extend((0..3).map(|i| (to_b, payload(6, i, 1500))));
        check(&mut batch, sends, "mixed runs");
        assert_eq!(batch.gso(), LINUX && batch.gso_worked, "GSO is off only if it never worked");
    }

    #[test]
    fn oversized_datagrams_are_dropped_and_counted() {
        for (name, recv) in recvs() {
            for tailroom in [4, 0] {
                let (tx, rx) = (local(), local());
                let to = rx.local_addr().unwrap();
                let mut batch = RecvBatch::new(8, 100, tailroom);
                // Only oversized ones waiting: nothing to return.
                tx.send_to(&[1; 200], to).unwrap();
                tx.send_to(&[2; 101], to).unwrap();
                let r = recv(&rx, &mut batch);
                assert!(matches!(r, Err(e) if e.kind() == io::ErrorKind::WouldBlock), "{name}");
                assert_eq!(batch.oversized(), 2, "{name}");
                for p in [&[3; 200][..], &[4; 50], &[5; 100], &[6; 101], &[7; 1]] {
                    tx.send_to(p, to).unwrap();
                }
                let (got, _) = batch_n(recv, &rx, &mut batch, 3);
                let got: Vec<_> = got.into_iter().map(|g| g.1).collect();
                assert_eq!(got, [vec![4; 50], vec![5; 100], vec![7; 1]], "{name}");
                assert_eq!(batch.oversized(), 4, "{name}");
            }
        }
    }

    #[test]
    fn a_closed_port_or_a_refused_datagram_does_not_stop_the_datagrams_after_it() {
        for (name, flush) in flushes() {
            // Unconnected, as the server's sockets are; and connected, where Linux reports the ICMP error
            // (BSDs refuse a destination on a connected socket).
            for connected in [false, LINUX] {
                let (tx, rx) = (local(), local());
                let dead = local().local_addr().unwrap();
                // An IPv6 remote for an IPv4 socket: the kernel refuses it (EAFNOSUPPORT).
                let refused: SocketAddr = "[::1]:9".parse().unwrap();
                if connected {
                    tx.connect(dead).unwrap();
                }
                let mut batch = SendBatch::new();
                let mut want = Vec::new();
                for round in 0..3 {
                    let mut pushed = 0;
                    for i in 0..10 {
                        if i % 3 == 0 {
                            batch.push(dead, &[0xee; 20]);
                            pushed += 1;
                        }
                        if i % 4 == 1 {
                            batch.push(refused, &[0xdd; 20]);
                            pushed += 1;
                        }
                        let p = payload(round, i, 40);
                        batch.push(rx.local_addr().unwrap(), &p);
                        want.push(p);
                        pushed += 1;
                    }
                    // Ends with the closed port: a connected socket reports it on the next round's first send.
                    batch.push(dead, &[0xee; 20]);
                    let sent = flush(&mut batch, &tx);
                    println!("{name}, connected {connected}, round {round}: {sent:?}");
                    assert_eq!((sent.sent, sent.dropped), (pushed + 1 - 3, 3), "{name}, connected {connected}");
                    // Let the ICMP port unreachable come back before the next round.
                    sleep(Duration::from_millis(20));
                }
                let got: Vec<_> = read_n(&rx, want.len()).into_iter().map(|g| g.1).collect();
                assert_eq!(got, want, "{name}, connected {connected}");
            }
        }
    }

    #[cfg(any(target_os = "linux", target_os = "android"))]
    #[test]
    fn a_refused_gso_message_goes_datagram_by_datagram() {
        if !gso_supported(&local()) {
            println!("skipped: this kernel has no UDP GSO");
            return;
        }
        let rx = local();
        let to = rx.local_addr().unwrap();
        let send = |batch: &mut SendBatch, tx: &UdpSocket, tag: u8| {
            let want: Vec<_> = (0..10).map(|i| payload(tag, i, 1000)).collect();
            for p in &want {
                batch.push(to, p);
            }
            let sent = batch.flush(tx);
            assert_eq!((sent.sent, sent.dropped), (10, 0));
            assert_eq!(read_n(&rx, 10).into_iter().map(|g| g.1).collect::<Vec<_>>(), want);
            sent.syscalls
        };
        // SO_NO_CHECK: the kernel refuses GSO (EINVAL) on this socket. A batch never used with GSO gives it up.
        let tx = local();
        sys::set_no_check(&tx);
        let mut batch = SendBatch::new();
        let syscalls = send(&mut batch, &tx, 0);
        if batch.gso() {
            println!("skipped: this kernel sends GSO with SO_NO_CHECK ({syscalls} system call)");
            return;
        }
        assert_eq!(syscalls, 2, "the GSO message, then the datagrams in one sendmmsg");
        assert_eq!(send(&mut batch, &tx, 1), 1);
        // A batch that sent with GSO before keeps it: the refusal was about the message.
        let mut batch = SendBatch::new();
        assert_eq!(send(&mut batch, &local(), 2), 1);
        assert_eq!(send(&mut batch, &tx, 3), 2);
        assert!(batch.gso());
    }

    #[test]
    fn ipv6_round_trip() {
        let (tx, rx) = match (bind("[::1]:0"), bind("[::1]:0")) {
            (Ok(tx), Ok(rx)) => (tx, rx),
            (Err(e), _) | (_, Err(e)) => {
                println!("skipped: cannot bind [::1]: {e}");
                return;
            }
        };
        let to = rx.local_addr().unwrap();
        for (fname, flush) in flushes() {
            for (rname, recv) in recvs() {
                let mut batch = SendBatch::new();
                // A GSO run, then datagrams of varying lengths.
                let mut want: Vec<_> = (0..5).map(|i| payload(0, i, 1000)).collect();
                want.push(payload(0, 5, 200));
                want.extend((0..10).map(|i| payload(1, i, 3 + i * 37)));
                for p in &want {
                    batch.push(to, p);
                }
                let sent = flush(&mut batch, &tx);
                assert_eq!((sent.sent, sent.dropped), (want.len(), 0), "{fname}");
                let mut rb = RecvBatch::new(4, 1500, 4);
                let (got, _) = batch_n(recv, &rx, &mut rb, want.len());
                assert!(got.iter().all(|g| g.0 == tx.local_addr().unwrap()), "{fname}, {rname}");
                assert_eq!(got.into_iter().map(|g| g.1).collect::<Vec<_>>(), want, "{fname}, {rname}");
            }
        }
    }
}
