//! What a shell implements and keeps per connection: the [`Sockets`] the
//! [`Driver`](crate::driver::Driver) sends through, and the bounded
//! [`OutQueue`] of bytes waiting for a slow stream client.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::net::{SocketAddr, UdpSocket};

use switchboard_core::ConnId;

/// Datagrams, reads or accepts a shell handles from one socket before the others get a turn.
pub const BATCH: usize = 64;
/// Most bytes queued toward one slow stream client; beyond it, messages are dropped.
pub const MAX_STREAM_BACKLOG: usize = 1 << 20;
/// Size of a read from a stream connection.
pub const STREAM_CHUNK: usize = 16 * 1024;

/// What a shell does with the sockets it owns. Every method must return at
/// once (non-blocking); a datagram that cannot be sent now is dropped, as the
/// network would.
pub trait Sockets {
    /// Sends a datagram to `remote` from the UDP socket bound at `local` (a
    /// listener of the table, or a relay). A shell may queue it (copied) and
    /// send what it queued in one batch ([`udp::SendBatch`](crate::udp::SendBatch))
    /// before it next waits for readiness.
    fn send_datagram(&mut self, local: SocketAddr, remote: SocketAddr, data: &[u8]);
    /// Queues bytes on a stream connection (TURN over TCP, or HTTP); false if
    /// its queue is full ([`MAX_STREAM_BACKLOG`]) and the bytes were dropped.
    fn send_stream(&mut self, conn: ConnId, data: &[u8]) -> bool;
    /// Flushes what it can and closes the stream connection `conn`.
    fn close_stream(&mut self, conn: ConnId);
    /// Takes a freshly bound, non-blocking UDP socket (a relay) and reads it
    /// like the listeners; false if it could not be registered (the socket
    /// is then dropped).
    fn add_udp(&mut self, socket: UdpSocket, local: SocketAddr) -> bool;
    /// Closes the UDP socket bound at `local`.
    fn close_udp(&mut self, local: SocketAddr);
    /// Takes a listening, non-blocking TCP socket (a TCP relay, RFC 6062) and
    /// accepts on it like the listeners, reporting each connection to
    /// [`Driver::conn_opened`](crate::driver::Driver::conn_opened) as
    /// [`ConnKind::RelayPeer`](crate::listen::ConnKind::RelayPeer); false if
    /// it could not be registered (it is then dropped).
    fn add_listener(&mut self, listener: std::net::TcpListener, local: SocketAddr) -> bool;
    /// Closes the TCP listener bound at `local`.
    fn close_listener(&mut self, local: SocketAddr);
    /// Takes a non-blocking TCP stream and reads it like accepted ones: one
    /// that is connected (`connecting` false: from another worker), or one
    /// whose connect is under way, whose outcome the shell reports to
    /// [`Driver::conn_connected`](crate::driver::Driver::conn_connected) when
    /// it is writable (then reads it). Its handle, or `None` if it could not
    /// be registered.
    fn add_stream(&mut self, stream: std::net::TcpStream, connecting: bool) -> Option<ConnId>;
    /// Takes stream `conn` out of the event loop (to give it to another
    /// worker), with the bytes queued for it and not sent yet.
    fn take_stream(&mut self, conn: ConnId) -> Option<(std::net::TcpStream, Vec<u8>)>;
}

/// Bytes waiting to be written to a stream client, bounded so that a client
/// that does not read costs messages, not the server's memory.
#[derive(Debug, Default)]
pub struct OutQueue {
    buf: VecDeque<u8>,
    dropped: u64,
}

impl OutQueue {
    /// Queues `data` whole, or drops it whole (and counts it) if the queue is
    /// full. One write larger than the cap is taken when nothing else waits (an
    /// HTTP answer such as a recording download, bounded by its own limit).
    pub fn push(&mut self, data: &[u8]) -> bool {
        if !self.buf.is_empty() && self.buf.len() + data.len() > MAX_STREAM_BACKLOG {
            self.dropped += 1;
            return false;
        }
        self.buf.extend(data);
        true
    }

    /// Takes every byte still queued (a stream that moves to another worker).
    pub fn take_all(&mut self) -> Vec<u8> {
        self.buf.drain(..).collect()
    }

    /// Writes as much as `w` takes now. `Ok(())` when done or when `w` would
    /// block (see [`OutQueue::is_empty`]); an error means the stream is broken
    /// and the queue was cleared.
    pub fn write_to(&mut self, mut w: impl Write) -> io::Result<()> {
        while !self.buf.is_empty() {
            let (a, _) = self.buf.as_slices();
            match w.write(a) {
                Ok(0) => {
                    self.buf.clear();
                    return Err(io::ErrorKind::WriteZero.into());
                }
                Ok(n) => {
                    self.buf.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.buf.clear();
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// Whether everything queued was written.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Messages dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Slow(usize);
    impl Write for Slow {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            if self.0 == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = b.len().min(self.0);
            self.0 -= n;
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn out_queue_bounds_and_partial_writes() {
        let mut q = OutQueue::default();
        assert!(q.push(&[1; 1000]));
        q.write_to(Slow(300)).unwrap();
        assert!(!q.is_empty());
        q.write_to(Slow(10_000)).unwrap();
        assert!(q.is_empty());
        assert!(q.push(&vec![0; MAX_STREAM_BACKLOG]));
        assert!(!q.push(&[1]));
        assert_eq!(q.dropped(), 1);
        // One write over the cap goes when nothing else waits, and then nothing more.
        let mut q = OutQueue::default();
        assert!(q.push(&vec![0; 3 * MAX_STREAM_BACKLOG]));
        assert!(!q.push(&[1]));
    }
}
