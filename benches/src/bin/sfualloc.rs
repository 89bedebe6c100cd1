//! Heap allocations on the SFU's forward path, counted: one publisher and N
//! listeners in the in-memory lab (`switchboard_core::lab`), connected; then
//! the publisher's datagrams are fed to the engine one by one and the
//! engine's outputs drained (not delivered), with a counting global
//! allocator around the feed and drain only. Reports allocations and bytes
//! per incoming datagram and per forwarded packet.
//!
//!     cargo run --release -p switchboard-benches --bin sfualloc -- [LISTENERS] [DATAGRAMS]
//!
//! What to expect (see benches/README.md): one allocation per forwarded
//! packet is str0m's — each `Output::Transmit` owns a fresh `Vec<u8>`
//! (`DatagramSend`), which the SFU hands on as its own output; the rest is
//! per incoming datagram (str0m's received `RtpPacket` and its payload).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use switchboard_core::lab::Lab;

struct Counting;

static ON: AtomicBool = AtomicBool::new(false);
static ALLOCS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards every call to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if ON.load(Ordering::Relaxed) {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
            BYTES.fetch_add(layout.size() as u64, Ordering::Relaxed);
        }
        // SAFETY: the caller upholds `alloc`'s contract, which we pass on.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if ON.load(Ordering::Relaxed) {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
            BYTES.fetch_add(new_size as u64, Ordering::Relaxed);
        }
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn main() {
    let mut args = std::env::args().skip(1);
    let listeners: u8 = args.next().and_then(|a| a.parse().ok()).unwrap_or(10);
    let datagrams: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(2000);
    let mut lab = Lab::publisher_and_listeners(Instant::now(), listeners);
    lab.deliver = false;
    let (mut fed, mut out) = (0u64, 0u64);
    let (mut allocs, mut bytes) = (0u64, 0u64);
    let forwarded0 = lab.sb.stats().sfu.forwarded_packets;
    while fed < datagrams as u64 {
        for d in lab.next_datagrams(0) {
            ALLOCS.store(0, Ordering::Relaxed);
            BYTES.store(0, Ordering::Relaxed);
            ON.store(true, Ordering::Relaxed);
            let n = lab.feed(0, &d);
            ON.store(false, Ordering::Relaxed);
            allocs += ALLOCS.load(Ordering::Relaxed);
            bytes += BYTES.load(Ordering::Relaxed);
            fed += 1;
            out += n as u64;
        }
    }
    let forwarded = lab.sb.stats().sfu.forwarded_packets - forwarded0;
    println!(
        "{{\"listeners\":{listeners},\"datagrams_in\":{fed},\"datagrams_out\":{out},\"rtp_forwarded\":{forwarded},\"allocations\":{allocs},\"bytes\":{bytes},\"allocations_per_datagram_in\":{:.2},\"allocations_per_forwarded\":{:.3},\"bytes_per_forwarded\":{:.0}}}",
        allocs as f64 / fed as f64,
        allocs as f64 / forwarded.max(1) as f64,
        bytes as f64 / forwarded.max(1) as f64
    );
}
