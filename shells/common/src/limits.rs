//! Limits on stream connections (HTTP, WebSocket, TURN over TCP and TLS), on
//! by default: how many may be open in total and from one address
//! ([`ConnLimits`], shared by every worker), and how long a connection may
//! take to say something useful ([`Clocks`]): a request head within the
//! header timeout, the next request on a kept-alive connection within the idle
//! timeout, a sign of life on a WebSocket (pinged halfway) within its idle
//! timeout, a first byte on a TURN stream within the header timeout.
//!
//! Pure logic fed with the time; the [`Driver`](crate::driver::Driver)
//! applies it. A connection refused because a cap is reached is closed at
//! once; those already open go on.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use switchboard_core::hash::Map;
use switchboard_core::ConnId;

/// How long a connection may wait in each state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// For a complete request head (from the connection's start, or from the
    /// first byte of a later request); for a TURN stream, for its first byte.
    pub header: Duration,
    /// For the next request on a kept-alive HTTP connection.
    pub idle: Duration,
    /// For any frame on a WebSocket (a ping is sent halfway).
    pub websocket: Duration,
}

/// Caps on open stream connections, in total and per source address,
/// shared by the workers (cloning shares it). Touched when a connection
/// opens or closes, never per byte.
#[derive(Debug, Clone)]
pub struct ConnLimits(Arc<Mutex<Counts>>);

#[derive(Debug)]
struct Counts {
    total_cap: usize,
    per_ip_cap: usize,
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The server holds its most connections.
    Total,
    /// Its source address holds its most.
    PerAddress,
}

impl ConnLimits {
    /// Caps of `total` and `per_ip` open connections (0: no cap).
    pub fn new(total: usize, per_ip: usize) -> Self {
        ConnLimits(Arc::new(Mutex::new(Counts { total_cap: total, per_ip_cap: per_ip, total: 0, per_ip: HashMap::new() })))
    }

    fn counts(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Changes the total cap (set at start, from the descriptor limit).
    pub fn set_total(&self, total: usize) {
        self.counts().total_cap = total;
    }

    /// The caps: (total, per address); 0 is none.
    pub fn caps(&self) -> (usize, usize) {
        let c = self.counts();
        (c.total_cap, c.per_ip_cap)
    }

    /// Takes a slot for a connection from `ip`, or says which cap is reached.
    pub fn try_open(&self, ip: IpAddr) -> Result<(), Refused> {
        let mut c = self.counts();
        if c.total_cap > 0 && c.total >= c.total_cap {
            return Err(Refused::Total);
        }
        let cap = c.per_ip_cap;
        let n = c.per_ip.entry(ip).or_insert(0);
        if cap > 0 && *n >= cap {
            return Err(Refused::PerAddress);
        }
        *n += 1;
        c.total += 1;
        Ok(())
    }

    /// Gives back the slot of a connection from `ip` that closed.
    pub fn release(&self, ip: IpAddr) {
        let mut c = self.counts();
        if let Some(n) = c.per_ip.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                c.per_ip.remove(&ip);
            }
            c.total -= 1;
        }
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.counts().total
    }
}

/// What a connection is waiting for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// A request head (or a TURN stream's first byte) since this instant.
    Head(Instant),
    /// The next request on a kept-alive connection, since this instant.
    KeepAlive(Instant),
    /// Any frame on a WebSocket: the last came at this instant; `pinged` once
    /// a ping was sent for this silence.
    WebSocket {
        /// The last frame.
        last: Instant,
        /// Whether a ping went out since.
        pinged: bool,
    },
    /// Nothing: a TURN stream that spoke (its allocation's lifetime governs it).
    Nothing,
}

/// What to do with a connection whose time came.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// Close it: it waited too long.
    Close,
    /// Ping it (a quiet WebSocket).
    Ping,
}

#[derive(Debug)]
struct Clock {
    ip: IpAddr,
    wait: Wait,
    /// When a check of it is in the heap (at most one that counts).
    scheduled: Option<Instant>,
}

/// Every open connection's source address and what it waits for, with one
/// timer each (a heap entry; stale ones are skipped when popped).
#[derive(Debug)]
pub struct Clocks {
    timeouts: Timeouts,
    conns: Map<ConnId, Clock>,
    heap: BinaryHeap<Reverse<(Instant, ConnId)>>,
}

impl Clocks {
    /// No connections yet.
    pub fn new(timeouts: Timeouts) -> Self {
        Clocks { timeouts, conns: crate::new_map(), heap: BinaryHeap::new() }
    }

    /// When `wait` runs out (or, for a quiet WebSocket, its ping is due).
    fn due(&self, wait: Wait) -> Option<Instant> {
        let t = &self.timeouts;
        match wait {
            Wait::Head(since) => Some(since + t.header),
            Wait::KeepAlive(since) => Some(since + t.idle),
            Wait::WebSocket { last, pinged: false } => Some(last + t.websocket / 2),
            Wait::WebSocket { last, pinged: true } => Some(last + t.websocket),
            Wait::Nothing => None,
        }
    }

    /// A connection from `ip` opened at `now`: it waits for its first request.
    pub fn open(&mut self, conn: ConnId, ip: IpAddr, now: Instant) {
        let due = now + self.timeouts.header;
        self.conns.insert(conn, Clock { ip, wait: Wait::Head(now), scheduled: Some(due) });
        self.heap.push(Reverse((due, conn)));
    }

    /// What `conn` waits for now.
    pub fn wait(&self, conn: ConnId) -> Option<Wait> {
        self.conns.get(&conn).map(|c| c.wait)
    }

    /// `conn` now waits for `wait`.
    pub fn set(&mut self, conn: ConnId, wait: Wait) {
        let due = self.due(wait);
        let Some(c) = self.conns.get_mut(&conn) else { return };
        c.wait = wait;
        // A later due time is found when the earlier check fires; only an earlier one needs an entry now.
        if let Some(due) = due.filter(|d| c.scheduled.is_none_or(|s| *d < s)) {
            c.scheduled = Some(due);
            self.heap.push(Reverse((due, conn)));
        }
    }

    /// `conn` closed: its source address, to give its slot back.
    pub fn remove(&mut self, conn: ConnId) -> Option<IpAddr> {
        self.conns.remove(&conn).map(|c| c.ip)
    }

    /// When [`Clocks::expired`] has something to do next.
    pub fn next(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((t, _))| *t)
    }

    /// The connections whose time came by `now`, with what to do. A pinged
    /// WebSocket is then waited for until its idle timeout.
    pub fn expired(&mut self, now: Instant, out: &mut Vec<(ConnId, Due)>) {
        while let Some(&Reverse((at, conn))) = self.heap.peek() {
            if at > now {
                break;
            }
            self.heap.pop();
            let Some(c) = self.conns.get_mut(&conn).filter(|c| c.scheduled == Some(at)) else { continue };
            c.scheduled = None;
            let wait = c.wait;
            match self.due(wait) {
                Some(due) if due <= now => match wait {
                    Wait::WebSocket { last, pinged: false } => {
                        out.push((conn, Due::Ping));
                        self.set(conn, Wait::WebSocket { last, pinged: true });
                    }
                    _ => out.push((conn, Due::Close)),
                },
                // It made progress since: check again when its new wait runs out.
                Some(_) => self.set(conn, wait),
                None => {}
            }
        }
    }

    /// Whether none is tracked.
    pub fn is_empty(&self) -> bool {
        self.conns.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, last])
    }

    #[test]
    fn caps_in_total_and_per_address() {
        let l = ConnLimits::new(5, 2);
        assert_eq!(l.try_open(ip(1)), Ok(()));
        assert_eq!(l.try_open(ip(1)), Ok(()));
        assert_eq!(l.try_open(ip(1)), Err(Refused::PerAddress));
        assert_eq!(l.try_open(ip(2)), Ok(()));
        assert_eq!(l.try_open(ip(3)), Ok(()));
        assert_eq!(l.try_open(ip(4)), Ok(()));
        assert_eq!(l.try_open(ip(5)), Err(Refused::Total));
        l.release(ip(1));
        assert_eq!(l.open(), 4);
        assert_eq!(l.try_open(ip(1)), Ok(()), "a slot given back is taken again");
        // A release of an address with nothing open changes nothing.
        l.release(ip(9));
        assert_eq!(l.open(), 5);
        let none = ConnLimits::new(0, 0);
        for _ in 0..1000 {
            assert_eq!(none.try_open(ip(1)), Ok(()));
        }
    }

    #[test]
    fn each_wait_runs_out_on_its_own_timeout() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut c = Clocks::new(Timeouts { header: s(10), idle: s(60), websocket: s(40) });
        let (head, kept, ws, turn) = (ConnId(1), ConnId(2), ConnId(3), ConnId(4));
        for conn in [head, kept, ws, turn] {
            c.open(conn, ip(1), t0);
        }
        c.set(kept, Wait::KeepAlive(t0 + s(1)));
        c.set(ws, Wait::WebSocket { last: t0 + s(1), pinged: false });
        c.set(turn, Wait::Nothing);
        let mut out = Vec::new();
        c.expired(t0 + s(9), &mut out);
        assert!(out.is_empty(), "{out:?}");
        c.expired(t0 + s(10), &mut out);
        assert_eq!(out, vec![(head, Due::Close)], "a request head not complete in 10 s");
        out.clear();
        c.remove(head);
        c.expired(t0 + s(21), &mut out);
        assert_eq!(out, vec![(ws, Due::Ping)], "a quiet WebSocket is pinged halfway");
        out.clear();
        // The pong (any frame) resets it.
        c.set(ws, Wait::WebSocket { last: t0 + s(30), pinged: false });
        c.expired(t0 + s(49), &mut out);
        assert!(out.is_empty(), "{out:?}");
        c.expired(t0 + s(50), &mut out);
        assert_eq!(out, vec![(ws, Due::Ping)]);
        out.clear();
        c.expired(t0 + s(61), &mut out);
        assert_eq!(out, vec![(kept, Due::Close)], "no next request within the idle timeout");
        out.clear();
        c.remove(kept);
        c.expired(t0 + s(70), &mut out);
        assert_eq!(out, vec![(ws, Due::Close)], "no answer to the ping within the idle timeout");
        out.clear();
        c.remove(ws);
        c.expired(t0 + s(100_000), &mut out);
        assert!(out.is_empty(), "a TURN stream that spoke has no timeout: {out:?}");
        assert_eq!(c.next(), None);
    }

    #[test]
    fn a_slow_request_after_a_kept_alive_one_gets_the_header_timeout() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut c = Clocks::new(Timeouts { header: s(10), idle: s(60), websocket: s(40) });
        c.open(ConnId(1), ip(1), t0);
        c.set(ConnId(1), Wait::KeepAlive(t0 + s(1)));
        // The first byte of the next request at 5 s: it has until 15 s, not 61 s.
        c.set(ConnId(1), Wait::Head(t0 + s(5)));
        let mut out = Vec::new();
        c.expired(t0 + s(14), &mut out);
        assert!(out.is_empty());
        c.expired(t0 + s(15), &mut out);
        assert_eq!(out, vec![(ConnId(1), Due::Close)]);
    }
}
