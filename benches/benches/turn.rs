//! Core cost of the hot paths, in-process (no sockets): the Binding answer,
//! and the relay path both ways (client ChannelData to peer; peer datagram to
//! client as ChannelData, and as a Data indication).
//!
//!     cargo bench -p switchboard-benches --bench turn

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use switchboard_benches::{binding_request, channel_data, setup_channel, SetupError};
use switchboard_core::turn::{PortRequest, TurnConfig, RELAY_HEADROOM, RELAY_TAILROOM};
use switchboard_core::{Config, Forward, Input, Output, Switchboard};

const LISTEN: &str = "192.0.2.1:3478";
const CLIENT: &str = "198.51.100.7:40000";
/// A public address: the default policy refuses documentation ranges. No traffic is sent (no sockets here).
const PEER: &str = "8.8.8.8:5000";
const RELAY: &str = "192.0.2.1:50000";

fn engine() -> Switchboard {
    let turn = TurnConfig { users: vec![("bench".into(), "benchpw".into())], ..TurnConfig::default() };
    Switchboard::new(Config { turn, ..Config::default() }, Instant::now(), 1_800_000_000, &[1; 32])
}

/// Feeds one client datagram, binds any relay asked for, returns the response.
fn exchange(sb: &mut Switchboard, now: Instant, data: &[u8]) -> Result<Vec<u8>, SetupError> {
    let packet = 0..data.len();
    let f = sb.handle_input(now, Input::Datagram { local: LISTEN.parse().unwrap(), remote: CLIENT.parse().unwrap(), buf: data, packet });
    assert_eq!(f, Forward::None);
    let mut resp = None;
    loop {
        match sb.poll_output() {
            Output::Transmit(t) => resp = Some(t.payload),
            Output::BindRelay { allocation, port: PortRequest::Any, .. } => {
                let _ = sb.handle_input(now, Input::RelayBound { allocation, bound: Some(RELAY.parse().unwrap()), reserved: None });
            }
            Output::Timeout(_) => break,
            o => panic!("unexpected {o:?}"),
        }
    }
    resp.ok_or_else(|| SetupError("no response".into()))
}

/// An engine with one allocation, a permission and channel 0x4000 to PEER.
fn relaying_engine(now: Instant) -> Switchboard {
    let mut sb = engine();
    setup_channel(|b| exchange(&mut sb, now, b), "bench", "benchpw", PEER.parse().unwrap(), 0x4000).expect("set-up");
    sb
}

fn binding(c: &mut Criterion) {
    let mut sb = engine();
    let now = Instant::now();
    let req = binding_request([7; 12]);
    let (local, remote): (SocketAddr, SocketAddr) = (LISTEN.parse().unwrap(), CLIENT.parse().unwrap());
    let mut g = c.benchmark_group("stun");
    g.throughput(Throughput::Elements(1));
    g.bench_function("binding_request_to_response", |b| {
        b.iter(|| {
            let _ = sb.handle_input(now, Input::Datagram { local, remote, buf: black_box(&req), packet: 0..req.len() });
            while let Output::Transmit(t) = sb.poll_output() {
                black_box(t);
            }
        })
    });
    g.finish();
}

fn relay(c: &mut Criterion) {
    let now = Instant::now();
    let mut sb = relaying_engine(now);
    let (local, client, peer, relay): (SocketAddr, SocketAddr, SocketAddr, SocketAddr) =
        (LISTEN.parse().unwrap(), CLIENT.parse().unwrap(), PEER.parse().unwrap(), RELAY.parse().unwrap());
    let mut g = c.benchmark_group("turn_relay");
    for size in [100usize, 1200] {
        g.throughput(Throughput::Bytes(size as u64));
        let cd = channel_data(0x4000, &vec![0xAB; size]);
        g.bench_with_input(BenchmarkId::new("client_to_peer_channel_data", size), &cd, |b, cd| {
            b.iter(|| match sb.handle_input(now, Input::Datagram { local, remote: client, buf: black_box(cd), packet: 0..cd.len() }) {
                Forward::ToPeer(r) => black_box(r),
                f => panic!("not relayed: {f:?}"),
            })
        });
        let mut buf = vec![0u8; RELAY_HEADROOM + size + RELAY_TAILROOM];
        g.bench_function(BenchmarkId::new("peer_to_client_channel_data", size), |b| {
            b.iter(|| {
                let payload = RELAY_HEADROOM..RELAY_HEADROOM + size;
                match sb.handle_input(now, Input::RelayDatagram { relay, peer, buf: black_box(&mut buf), payload }) {
                    Forward::ToClient(r) => black_box(r),
                    f => panic!("not relayed: {f:?}"),
                }
            })
        });
    }
    g.finish();

    // Without a channel, peer data goes back as a Data indication.
    let mut sb = engine();
    let other: SocketAddr = "1.1.1.1:6000".parse().unwrap();
    setup_channel(|b| exchange(&mut sb, now, b), "bench", "benchpw", other, 0x4001).expect("set-up");
    let mut g = c.benchmark_group("turn_relay");
    let size = 1200;
    g.throughput(Throughput::Bytes(size as u64));
    let mut buf = vec![0u8; RELAY_HEADROOM + size + RELAY_TAILROOM];
    // Permissions are per IP, channels per transport address: another port of the
    // channel peer's IP has a permission but no channel.
    let same_ip_other_port: SocketAddr = "1.1.1.1:6001".parse().unwrap();
    g.bench_function(BenchmarkId::new("peer_to_client_data_indication", size), |b| {
        b.iter(|| {
            let payload = RELAY_HEADROOM..RELAY_HEADROOM + size;
            match sb.handle_input(now, Input::RelayDatagram { relay, peer: same_ip_other_port, buf: black_box(&mut buf), payload }) {
                Forward::ToClient(r) => black_box(r),
                f => panic!("not relayed: {f:?}"),
            }
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = binding, relay
}
criterion_main!(benches);
