//! The SFU's forward path, in-process: one publisher's RTP datagram in
//! (SRTP decrypt, routing, per-subscriber rewrite, SRTP encrypt and
//! queueing for each subscriber), for 1, 10 and 100 subscribers. Throughput
//! is counted in packets x subscribers, so the time per element is the cost
//! per packet per subscriber.
//!
//!     cargo bench -p switchboard-benches --bench sfu

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use switchboard_core::lab::Lab;

fn forward(c: &mut Criterion) {
    let mut g = c.benchmark_group("sfu_forward");
    for n in [1u8, 10, 100] {
        let mut lab = Lab::publisher_and_listeners(Instant::now(), n);
        let subscribed = lab.sb.sfu_rooms()[0].participants.iter().filter(|p| p.tracks_subscribed == 2).count();
        assert_eq!(subscribed, usize::from(n), "every listener subscribes to the publisher's two tracks");
        // From here the SFU's output is counted, not delivered.
        lab.deliver = false;
        let mut queue = lab.next_datagrams(0);
        let check = lab.feed(0, &queue.pop_front().unwrap());
        assert!(check <= usize::from(n) + 2, "one datagram out per subscriber, not more");
        g.throughput(Throughput::Elements(u64::from(n)));
        g.bench_function(BenchmarkId::from_parameter(n), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    if queue.is_empty() {
                        queue = lab.next_datagrams(0);
                    }
                    let d = queue.pop_front().unwrap();
                    let t = Instant::now();
                    std::hint::black_box(lab.feed(0, &d));
                    total += t.elapsed();
                }
                total
            })
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1)).sample_size(30);
    targets = forward
}
criterion_main!(benches);
