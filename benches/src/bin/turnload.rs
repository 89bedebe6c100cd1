//! A TURN load generator: N clients each allocate on a server, bind a channel
//! to a peer socket of their own, and push ChannelData through the relay,
//! which the peer echoes back (client -> relay -> peer -> relay -> client).
//! Bounded in packets and in time; it stops by itself.
//!
//!     turnload --server 127.0.0.1:3478 --user bench:benchpw --clients 4 --packets 50000 --size 200
//!
//! With `--binding` the clients send STUN Binding requests instead (no
//! allocation), each answered by the server.
//!
//! Prints one line of JSON: round trips completed, lost, seconds, rate, and
//! the round-trip time's median and 99th percentile (µs) over every packet.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use clap::Parser;
use switchboard_benches::{binding_request, channel_data, release, setup_channel, SetupError};
use switchboard_core::stun::channel_data::ChannelData;

#[derive(Parser, Debug)]
struct Args {
    /// The TURN server (UDP).
    #[arg(long)]
    server: SocketAddr,
    /// NAME:PASS of a long-term credential.
    #[arg(long)]
    user: String,
    /// Concurrent clients (each with its own allocation and peer).
    #[arg(long, default_value_t = 4)]
    clients: usize,
    /// Round trips per client.
    #[arg(long, default_value_t = 20_000)]
    packets: u64,
    /// Payload bytes per packet.
    #[arg(long, default_value_t = 200)]
    size: usize,
    /// Packets in flight per client.
    #[arg(long, default_value_t = 32)]
    window: u64,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 30)]
    max_seconds: u64,
    /// Send STUN Binding requests (answered by the server) instead of relaying.
    #[arg(long)]
    binding: bool,
}

#[derive(Default, Debug)]
struct Result {
    done: u64,
    lost: u64,
    /// The data phase (set-up excluded).
    span: Option<(Instant, Instant)>,
    /// Round-trip times, µs.
    rtts: Vec<u32>,
}

fn client(args: &Args, idx: usize) -> std::result::Result<Result, SetupError> {
    let io = |e: std::io::Error| SetupError(e.to_string());
    let sock = UdpSocket::bind("127.0.0.1:0").map_err(io)?;
    sock.connect(args.server).map_err(io)?;
    if args.binding {
        return bindings(args, &sock);
    }
    let peer = UdpSocket::bind("127.0.0.1:0").map_err(io)?;
    sock.set_read_timeout(Some(Duration::from_secs(2))).map_err(io)?;
    let (user, pass) = args.user.split_once(':').ok_or_else(|| SetupError("--user NAME:PASS".into()))?;
    let peer_addr = peer.local_addr().map_err(io)?;
    let channel = 0x4000 + idx as u16;
    let (relay, auth) = setup_channel(
        |req| {
            sock.send(req).map_err(io)?;
            let mut buf = [0u8; 1500];
            let n = sock.recv(&mut buf).map_err(io)?;
            Ok(buf[..n].to_vec())
        },
        user,
        pass,
        peer_addr,
        channel,
    )?;
    // The server may advertise an external address; the peer answers whoever sent to it.
    let _ = relay;
    let stop = Arc::new(AtomicBool::new(false));
    let echo = {
        let stop = stop.clone();
        peer.set_read_timeout(Some(Duration::from_millis(100))).map_err(io)?;
        thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while !stop.load(Ordering::Relaxed) {
                if let Ok((n, from)) = peer.recv_from(&mut buf) {
                    let _ = peer.send_to(&buf[..n], from);
                }
            }
        })
    };
    sock.set_read_timeout(Some(Duration::from_millis(200))).map_err(io)?;
    let began = Instant::now();
    let deadline = began + Duration::from_secs(args.max_seconds);
    let mut payload = vec![0x5Au8; args.size.max(8)];
    let (mut sent, mut res) = (0u64, Result::default());
    let mut sent_at = Vec::with_capacity(args.packets as usize);
    let mut buf = [0u8; 2048];
    while res.done + res.lost < args.packets && Instant::now() < deadline {
        while sent < args.packets && sent.saturating_sub(res.done + res.lost) < args.window {
            payload[..8].copy_from_slice(&sent.to_be_bytes());
            sent_at.push(Instant::now());
            sock.send(&channel_data(channel, &payload)).map_err(io)?;
            sent += 1;
        }
        match sock.recv(&mut buf) {
            Ok(n) if ChannelData::new_checked(&buf[..n]).is_ok_and(|cd| cd.number() == channel) => {
                res.done += 1;
                let seq = buf.get(4..12).map_or(u64::MAX, |b| u64::from_be_bytes(b.try_into().unwrap_or_default()));
                if let Some(t) = sent_at.get(seq as usize) {
                    res.rtts.push(t.elapsed().as_micros() as u32);
                }
            }
            Ok(_) => {}
            // Nothing for 200 ms: whatever is in flight is lost.
            Err(_) => res.lost = sent.saturating_sub(res.done),
        }
    }
    res.span = Some((began, Instant::now()));
    stop.store(true, Ordering::Relaxed);
    let _ = echo.join();
    // End the allocation, as a client should: a later run that gets the same source port from the OS would
    // otherwise meet it (437 without a challenge) while it lives.
    let _ = sock.send(&release(&auth, [0x52; 12]));
    let _ = sock.recv(&mut buf);
    Ok(res)
}

/// `--binding`: Binding requests in a window, each answered by the server.
fn bindings(args: &Args, sock: &UdpSocket) -> std::result::Result<Result, SetupError> {
    let io = |e: std::io::Error| SetupError(e.to_string());
    sock.set_read_timeout(Some(Duration::from_millis(200))).map_err(io)?;
    let began = Instant::now();
    let deadline = began + Duration::from_secs(args.max_seconds);
    let (mut sent, mut res) = (0u64, Result::default());
    let mut sent_at = Vec::with_capacity(args.packets as usize);
    let mut buf = [0u8; 2048];
    while res.done + res.lost < args.packets && Instant::now() < deadline {
        while sent < args.packets && sent.saturating_sub(res.done + res.lost) < args.window {
            let mut tid = [0u8; 12];
            tid[4..].copy_from_slice(&sent.to_be_bytes());
            sent_at.push(Instant::now());
            sock.send(&binding_request(tid)).map_err(io)?;
            sent += 1;
        }
        match sock.recv(&mut buf) {
            // A Binding success response (0x0101) to one of ours.
            Ok(n) if n >= 20 && buf[..2] == [1, 1] => {
                res.done += 1;
                let seq = u64::from_be_bytes(buf[12..20].try_into().unwrap_or_default());
                if let Some(t) = sent_at.get(seq as usize) {
                    res.rtts.push(t.elapsed().as_micros() as u32);
                }
            }
            Ok(_) => {}
            Err(_) => res.lost = sent.saturating_sub(res.done),
        }
    }
    res.span = Some((began, Instant::now()));
    Ok(res)
}

fn main() {
    let args = Arc::new(Args::parse());
    let handles: Vec<_> = (0..args.clients)
        .map(|i| {
            let args = args.clone();
            thread::spawn(move || client(&args, i))
        })
        .collect();
    let (mut done, mut lost, mut first, mut last) = (0, 0, None::<Instant>, None::<Instant>);
    let mut rtts = Vec::new();
    for h in handles {
        match h.join().expect("client thread") {
            Ok(r) => {
                done += r.done;
                lost += r.lost;
                rtts.extend(r.rtts);
                let (a, b) = r.span.expect("span");
                first = Some(first.map_or(a, |f| f.min(a)));
                last = Some(last.map_or(b, |l| l.max(b)));
            }
            Err(e) => {
                eprintln!("turnload: client failed: {e}");
                std::process::exit(1);
            }
        }
    }
    let secs = match (first, last) {
        (Some(a), Some(b)) => b.duration_since(a).as_secs_f64(),
        _ => 0.0,
    };
    rtts.sort_unstable();
    let pct = |p: f64| rtts.get(((rtts.len() as f64 * p) as usize).min(rtts.len().saturating_sub(1))).copied().unwrap_or(0);
    println!(
        "{{\"clients\":{},\"size\":{},\"round_trips\":{done},\"lost\":{lost},\"seconds\":{secs:.3},\"round_trips_per_sec\":{:.0},\"rtt_p50_us\":{},\"rtt_p99_us\":{}}}",
        args.clients,
        args.size,
        done as f64 / secs.max(1e-9),
        pct(0.5),
        pct(0.99)
    );
}
