//! The SFU with bots, wired in memory through the whole engine (signaling
//! included), on simulated time: routing, late joiners, leaving, keyframe
//! throttling, renegotiation, bandwidth allocation.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use super::*;
use crate::lab::{Bot, Lab};
use crate::engine::Input;

#[test]
fn six_bots_each_receive_every_other_bot() {
    let mut net = Lab::new(crate::time::test_start());
    for i in 0..6 {
        net.add_bot(i);
    }
    net.run(Duration::from_secs(4));
    for i in 0..6 {
        assert!(net.bots[i].bot.is_connected(), "bot {i} did not connect");
        let got = net.received(i);
        let me = net.bots[i].bot.tag();
        assert!(!got.contains_key(&me), "bot {i} got its own packets back");
        assert_eq!(got.len(), 5, "bot {i} hears {:?}", got.keys().map(|k| String::from_utf8_lossy(k).into_owned()).collect::<Vec<_>>());
        for (tag, (audio, video)) in got {
            // 4 s at 50 and 30 packets/s, minus connection set-up.
            assert!(*audio >= 100 && *video >= 60, "bot {i} from {}: {audio} audio, {video} video", String::from_utf8_lossy(tag));
        }
    }
    let st = net.sb.stats().sfu;
    assert_eq!(st.participants, 6);
    assert_eq!(st.unrouted_datagrams, 0);
    let rooms = net.sb.sfu_rooms();
    assert_eq!(rooms.len(), 1);
    assert!(rooms[0].participants.iter().all(|p| p.connected && p.tracks_published == 2 && p.tracks_subscribed == 10));
}

#[test]
fn late_joiner_receives_tracks_already_published_and_leaver_gets_nothing() {
    let mut net = Lab::new(crate::time::test_start());
    for i in 0..3 {
        net.add_bot(i);
    }
    net.run(Duration::from_secs(2));
    net.add_bot(3);
    net.run(Duration::from_secs(2));
    assert_eq!(net.received(3).len(), 3, "the late joiner hears the three");
    for i in 0..3 {
        assert!(net.received(i).contains_key(&net.bots[3].bot.tag()), "bot {i} hears the late joiner");
    }
    // Bot 0 leaves: nothing more goes to it, and the others stop receiving it.
    let gone = net.bots[0].addr;
    let tag = net.bots[0].bot.tag();
    net.remove_bot(0);
    let left_at = net.now;
    let before: Vec<_> = (1..4).map(|i| net.received(i)[&tag]).collect();
    net.run(Duration::from_secs(2));
    assert!(!net.sent_to.iter().any(|(t, to)| *t > left_at && *to == gone), "datagrams sent to a departed participant");
    let after: Vec<_> = (1..4).map(|i| net.received(i)[&tag]).collect();
    assert_eq!(before, after, "packets of a departed participant still arrive");
    // Its tracks were removed by renegotiation: each remaining bot subscribes to 2 x 2 tracks.
    let rooms = net.sb.sfu_rooms();
    assert!(rooms[0].participants.iter().all(|p| p.tracks_subscribed == 4), "{rooms:?}");
    // And the others still hear each other.
    let mid = net.received(1)[&net.bots[2].bot.tag()];
    net.run(Duration::from_secs(1));
    assert!(net.received(1)[&net.bots[2].bot.tag()].1 > mid.1);
}

#[test]
fn keyframe_requests_are_throttled_per_track() {
    let mut net = Lab::new(crate::time::test_start());
    net.add_bot(0);
    net.add_bot(1);
    net.run(Duration::from_secs(2));
    let now = net.now;
    let sfu = net.sb.sfu_mut().unwrap();
    let video = *sfu.tracks.iter().find(|(_, t)| t.kind == MediaKind::Video).unwrap().0;
    let before = sfu.stats();
    for _ in 0..10 {
        sfu.request_keyframe(now, video);
    }
    let mid = sfu.stats();
    // A subscriber's first keyframe request happened at set-up; within 500 ms of any request, more are dropped.
    assert!(mid.keyframe_requests <= before.keyframe_requests + 1);
    assert!(mid.keyframe_requests_throttled >= before.keyframe_requests_throttled + 9);
    sfu.request_keyframe(now + KEYFRAME_INTERVAL, video);
    assert_eq!(sfu.stats().keyframe_requests, mid.keyframe_requests + 1, "one more after the interval");
}

#[test]
fn unknown_datagrams_are_dropped_and_counted() {
    let mut net = Lab::new(crate::time::test_start());
    net.add_bot(0);
    let stranger: SocketAddr = "10.9.9.9:1".parse().unwrap();
    let junk: [&[u8]; 4] = [b"", b"\x00\x01\x00\x00\x21\x12\xa4\x42garbagegarbage", &[0x80; 40], &[0x16; 30]];
    for d in junk {
        let _ = net.sb.handle_input(net.now, Input::MediaDatagram { remote: stranger, data: d });
    }
    net.settle();
    assert_eq!(net.sb.stats().sfu.unrouted_datagrams, 4);
}

#[test]
fn stun_username_routing_reads_only_the_local_part() {
    let mut m = vec![0x00, 0x01, 0x00, 0x0c, 0x21, 0x12, 0xa4, 0x42];
    m.extend_from_slice(&[0; 12]);
    m.extend_from_slice(&[0x00, 0x06, 0x00, 0x07]);
    m.extend_from_slice(b"abc:xyz\0");
    assert_eq!(stun_local_ufrag(&m), Some("abc"));
    m[3] = 0x40; // length beyond the datagram
    assert_eq!(stun_local_ufrag(&m), None);
}

#[test]
fn simulcast_layer_switches_by_message_keep_sequence_and_time_continuous() {
    let mut net = Lab::new(crate::time::test_start());
    // Bot 0 publishes three layers; bot 1 subscribes.
    let bot = Bot::new(net.now, Lab::addr(0), "room", *b"bot-0000").with_simulcast();
    net.add(0, bot);
    net.add_bot(1);
    net.run(Duration::from_secs(2));
    let a = net.bots[0].bot.tag();
    let seen = net.bots[1].bot.video_seen()[&a].clone();
    assert!(seen.per_layer.values().sum::<u64>() >= 30, "{seen:?}");
    for rid in ["h", "m", "l", "h"] {
        assert!(net.bots[1].bot.request_layer("bot-0000", rid));
        net.settle();
        net.run(Duration::from_millis(500));
        let before = net.bots[1].bot.video_seen()[&a].per_layer.get(&rid.as_bytes()[0]).copied().unwrap_or(0);
        net.run(Duration::from_secs(1));
        let seen = &net.bots[1].bot.video_seen()[&a];
        assert_eq!(seen.last_layer, rid.as_bytes()[0], "after asking for {rid}: {seen:?}");
        // One layer at a time: about 30 packets a second, not 90.
        let got = seen.per_layer[&rid.as_bytes()[0]] - before;
        assert!((25..=35).contains(&got), "{got} packets of layer {rid} in 1 s");
        assert_eq!(seen.max_seq_jump, 1, "sequence numbers continuous across switches: {seen:?}");
        assert!(!seen.ts_backwards, "timestamps went backwards: {seen:?}");
    }
    let st = net.sb.stats().sfu;
    assert!(st.layer_switches >= 4, "{st:?}");
    let rooms = net.sb.sfu_rooms();
    let sub = rooms[0].participants.iter().find(|p| p.tracks_subscribed == 2 && p.layers.len() == 1).expect("subscriber stats");
    assert!(sub.layers[0].ends_with(":h"), "{:?}", sub.layers);
}

#[test]
fn unpublishing_ends_the_tracks_for_everyone() {
    let mut net = Lab::new(crate::time::test_start());
    for i in 0..3 {
        net.add_bot(i);
    }
    net.run(Duration::from_secs(2));
    let tag = net.bots[0].bot.tag();
    let now = net.now;
    net.bots[0].bot.unpublish(now);
    net.settle();
    net.run(Duration::from_millis(500));
    let before: Vec<_> = (1..3).map(|i| net.received(i)[&tag]).collect();
    net.run(Duration::from_secs(1));
    let after: Vec<_> = (1..3).map(|i| net.received(i)[&tag]).collect();
    assert_eq!(before, after, "its packets no longer arrive");
    let rooms = net.sb.sfu_rooms();
    let subs: Vec<u64> = rooms[0].participants.iter().map(|p| p.tracks_subscribed).collect();
    assert_eq!(subs, vec![4, 2, 2], "the unpublished tracks are gone from every subscriber");
    // It still receives the others.
    let got = net.received(0).len();
    assert_eq!(got, 2);
}

mod random {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        Join(u8),
        Leave(u8),
        Unpublish(u8),
        Wait(u16),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => (0u8..5).prop_map(Op::Join),
            1 => (0u8..5).prop_map(Op::Leave),
            1 => (0u8..5).prop_map(Op::Unpublish),
            2 => (100u16..1500).prop_map(Op::Wait),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

        /// Random joins, leaves and unpublishes: no datagram goes to a departed
        /// participant, and in the end every participant receives every
        /// track that is published in its room.
        #[test]
        fn no_packet_to_the_departed_and_no_track_missed(ops in proptest::collection::vec(op(), 1..12)) {
            let mut net = Lab::new(crate::time::test_start());
            // Bot number -> index in net.bots of its current incarnation.
            let mut live: std::collections::BTreeMap<u8, usize> = Default::default();
            let mut unpublished = std::collections::BTreeSet::new();
            let mut departed: Vec<(Instant, SocketAddr)> = Vec::new();
            for op in ops {
                match op {
                    Op::Join(i) if !live.contains_key(&i) => {
                        // A bot that left may come back: a new participant at the same address.
                        net.add_bot(i);
                        live.insert(i, net.bots.len() - 1);
                        unpublished.remove(&i);
                        departed.retain(|(_, a)| *a != Lab::addr(i));
                    }
                    Op::Leave(i) => {
                        if let Some(idx) = live.remove(&i) {
                            net.remove_bot(idx);
                            departed.push((net.now, Lab::addr(i)));
                        }
                    }
                    Op::Unpublish(i) => {
                        if let Some(&idx) = live.get(&i) {
                            let now = net.now;
                            net.bots[idx].bot.unpublish(now);
                            net.settle();
                            if !net.bots[idx].bot.is_publishing() {
                                unpublished.insert(i);
                            }
                        }
                    }
                    Op::Wait(ms) => net.run(Duration::from_millis(u64::from(ms))),
                    _ => {}
                }
                for (at, addr) in &departed {
                    prop_assert!(!net.sent_to.iter().any(|(t, to)| t > at && to == addr), "a datagram went to departed {}", addr);
                }
            }
            // Let everything settle, then measure a window.
            net.run(Duration::from_secs(3));
            let before: Vec<_> = live.values().map(|&i| net.received(i).clone()).collect();
            net.run(Duration::from_secs(1));
            for (k, (&i, &idx)) in live.iter().enumerate() {
                for (&j, &jdx) in live.iter() {
                    if i == j || unpublished.contains(&j) {
                        continue;
                    }
                    let tag = net.bots[jdx].bot.tag();
                    let was = before[k].get(&tag).copied().unwrap_or_default();
                    let now = net.received(idx).get(&tag).copied().unwrap_or_default();
                    prop_assert!(now.0 > was.0 && now.1 > was.1, "bot {} misses bot {}: {:?} -> {:?}", i, j, was, now);
                }
            }
            for (at, addr) in &departed {
                prop_assert!(!net.sent_to.iter().any(|(t, to)| t > at && to == addr), "a datagram went to departed {}", addr);
            }
        }
    }
}

/// Delivery in a room of `n` bots after `settle` of simulated time, measured over `window`:
/// (min audio, min video, mean audio, mean video) of received / (published × subscribers),
/// per subscriber and publisher pair.
#[allow(clippy::needless_range_loop, reason = "s and p index the bots, their counters and the snapshots alike")]
fn room_delivery(n: u8, settle: Duration, window: Duration) -> (f64, f64, f64, f64) {
    let mut net = Lab::new(crate::time::test_start());
    for i in 0..n {
        net.add_bot(i);
    }
    net.run(settle);
    let sent0: Vec<(u64, u64)> = (0..n as usize).map(|i| net.bots[i].bot.sent()).collect();
    let recv0: Vec<_> = (0..n as usize).map(|i| net.received(i).clone()).collect();
    net.run(window);
    let (mut min_a, mut min_v, mut sum_a, mut sum_v, mut pairs) = (f64::MAX, f64::MAX, 0.0, 0.0, 0.0);
    for (s, recv0) in recv0.iter().enumerate() {
        for (p, sent0) in sent0.iter().enumerate() {
            if s == p {
                continue;
            }
            let tag = net.bots[p].bot.tag();
            let (pa, pv) = (net.bots[p].bot.sent().0 - sent0.0, net.bots[p].bot.sent().1 - sent0.1);
            let was = recv0.get(&tag).copied().unwrap_or_default();
            let now = net.received(s).get(&tag).copied().unwrap_or_default();
            let (da, dv) = ((now.0 - was.0) as f64 / pa.max(1) as f64, (now.1 - was.1) as f64 / pv.max(1) as f64);
            min_a = min_a.min(da);
            min_v = min_v.min(dv);
            sum_a += da;
            sum_v += dv;
            pairs += 1.0;
        }
    }
    (min_a, min_v, sum_a / pairs, sum_v / pairs)
}

/// Issue 10: past 12 participants the room stopped negotiating. A subscriber's SDP answer
/// grows ~2.7 KB per m-line; with 26 m-lines (14 participants) it passed signaling's 64 KiB
/// message limit, was refused as `too-large`, and the server's offer stayed pending forever:
/// the last joiners' tracks reached nobody and they received nothing (65% delivered at 16).
#[test]
fn sixteen_bot_room_delivers_every_track() {
    let (min_a, min_v, _, _) = room_delivery(16, Duration::from_secs(4), Duration::from_secs(2));
    assert!(min_a >= 0.999 && min_v >= 0.999, "worst pair: audio {min_a:.4}, video {min_v:.4} delivered");
}

/// Delivery at several room sizes (`SIZES=8,12,16,25`), printed.
#[test]
#[ignore = "measurement: cargo test --release -- --ignored --nocapture room_delivery_sweep"]
fn room_delivery_sweep() {
    let sizes: Vec<u8> = std::env::var("SIZES").ok().map(|s| s.split(',').map(|x| x.parse().unwrap()).collect()).unwrap_or(vec![8, 12, 14, 16]);
    for n in sizes {
        let t = crate::time::test_start();
        let (ma, mv, aa, av) = room_delivery(n, Duration::from_secs(8), Duration::from_secs(4));
        eprintln!("n={n}: delivery min audio {ma:.4} video {mv:.4}, mean audio {aa:.4} video {av:.4} ({:?} wall)", t.elapsed());
    }
}



/// What the listeners had received and the publishers had sent at one moment, to measure a window from.
struct Mark {
    sent: Vec<(u64, u64)>,
    received: Vec<crate::lab::Received>,
}

/// Marks the moment for `publishers` (bot indices) and `listeners`.
fn mark(net: &Lab, publishers: std::ops::Range<usize>, listeners: std::ops::Range<usize>) -> Mark {
    Mark { sent: publishers.map(|p| net.bots[p].bot.sent()).collect(), received: listeners.map(|s| net.received(s).clone()).collect() }
}

/// Per listener, per publisher (the ranges given to [`mark`]): (audio, video) received / published since `m`.
fn delivered_since(net: &Lab, m: &Mark, publishers: std::ops::Range<usize>, listeners: std::ops::Range<usize>) -> Vec<Vec<(f64, f64)>> {
    listeners
        .enumerate()
        .map(|(si, s)| {
            publishers
                .clone()
                .enumerate()
                .map(|(pi, p)| {
                    let tag = net.bots[p].bot.tag();
                    let sent = net.bots[p].bot.sent();
                    let (pa, pv) = (sent.0 - m.sent[pi].0, sent.1 - m.sent[pi].1);
                    let was = m.received[si].get(&tag).copied().unwrap_or_default();
                    let got = net.received(s).get(&tag).copied().unwrap_or_default();
                    ((got.0 - was.0) as f64 / pa.max(1) as f64, (got.1 - was.1) as f64 / pv.max(1) as f64)
                })
                .collect()
        })
        .collect()
}

/// Four publishers; one listener capped (at runtime) to its audio plus two and a half videos, one not.
/// The capped one keeps every audio and the two first publishers' video, and is told the other two
/// are paused; the uncapped one receives everything. Lifting the cap resumes them.
#[test]
fn a_capped_subscriber_keeps_audio_and_pauses_the_least_important_videos() {
    let mut net = Lab::new(crate::time::test_start());
    for i in 0..4 {
        net.add_bot(i);
    }
    for i in 4..6 {
        let bot = Bot::new(net.now, Lab::addr(i), "room", *b"listen-0").listen_only();
        net.add(i, bot);
    }
    net.run(Duration::from_secs(3));
    let capped = net.bots[4].conn;
    let now = net.now;
    let sfu = net.sb.sfu_mut().unwrap();
    // What the tracks measure, per kind.
    let rate = |kind: MediaKind| sfu.tracks.values().filter(|t| t.kind == kind).map(|t| t.rates[0].bps(now)).collect::<Vec<_>>();
    let (audio, video) = (rate(MediaKind::Audio), rate(MediaKind::Video));
    assert_eq!((audio.len(), video.len()), (4, 4));
    let per_video = *video.iter().max().unwrap();
    assert!(video.iter().all(|v| *v > per_video * 9 / 10), "videos measured alike: {video:?}");
    let cap = audio.iter().sum::<u64>() + per_video * 5 / 2;
    sfu.set_max_bitrate(now, capped, Some(cap));
    net.settle();
    net.run(Duration::from_secs(2));
    let window = |net: &mut Lab, d: Duration| {
        let m = mark(net, 0..4, 4..6);
        net.run(d);
        delivered_since(net, &m, 0..4, 4..6)
    };
    let got = window(&mut net, Duration::from_secs(3));
    let (c, u) = (&got[0], &got[1]);
    assert!(c.iter().all(|(a, _)| *a >= 0.99), "the capped listener keeps every audio: {c:?}");
    assert!(c[0].1 >= 0.99 && c[1].1 >= 0.99, "the first two videos flow: {c:?}");
    assert!(c[2].1 == 0.0 && c[3].1 == 0.0, "the last two are paused: {c:?}");
    assert!(u.iter().all(|(a, v)| *a >= 0.99 && *v >= 0.99), "the uncapped listener receives everything: {u:?}");
    let ids: Vec<String> = (0..4).map(|i| net.bots[4].bot.peer_id(&format!("bot-000{i}")).unwrap().to_string()).collect();
    let told = net.bots[4].bot.paused_messages().to_vec();
    assert_eq!(told, vec![(ids[2].clone(), true), (ids[3].clone(), true)]);
    assert!(net.bots[5].bot.paused_messages().is_empty());
    let rooms = net.sb.sfu_rooms();
    let stats = |id: &str| rooms[0].participants.iter().find(|p| p.id == id).unwrap().clone();
    let listeners: Vec<String> = (4..6).map(|i| net.sb.sfu().unwrap().participants[&net.bots[i].conn].label.clone()).collect();
    assert_eq!(stats(&listeners[0]).paused, vec![ids[2].clone(), ids[3].clone()]);
    assert!(stats(&listeners[1]).paused.is_empty());
    // The server stalls for 2.5 s (a frozen process, or publishers gone quiet): their rates go silent, but a
    // silent video is not a free one; nothing paused resumes.
    net.now += Duration::from_millis(2500);
    net.run(Duration::from_secs(3));
    assert_eq!(net.bots[4].bot.paused_messages(), &told[..], "nothing resumed after the stall");
    // The cap lifted: both resume, and are told so.
    let now = net.now;
    net.sb.sfu_mut().unwrap().set_max_bitrate(now, capped, None);
    net.settle();
    net.run(Duration::from_secs(1));
    let told = &net.bots[4].bot.paused_messages()[2..];
    assert_eq!(told, [(ids[2].clone(), false), (ids[3].clone(), false)]);
    let got = window(&mut net, Duration::from_secs(2));
    assert!(got.iter().flatten().all(|(a, v)| *a >= 0.99 && *v >= 0.99), "everything flows again: {got:?}");
    let seen = &net.bots[4].bot.video_seen()[&net.bots[3].bot.tag()];
    assert_eq!(seen.max_seq_jump, 1, "no gap in sequence numbers across the pause: {seen:?}");
    assert!(!seen.ts_backwards);
}

/// A listener whose downlink carries its audio and about two and a half of four videos (a policer in the lab,
/// dropping what does not fit), beside one whose link is free. From the loss it reports, the SFU's estimate
/// for it drops to what gets through and the allocation pauses the least important videos: audio intact,
/// the first videos flowing, told which are paused, and of what is forwarded to it, at least 99% arrives.
/// Nothing here is configured: the SFU learns the limit from the listener's own feedback.
#[test]
fn a_subscriber_behind_a_slow_link_gets_what_fits_and_loses_almost_nothing() {
    let mut net = Lab::new(crate::time::test_start());
    // Videos of 200 packets/s (~320 kbit/s of payload) beside 50 audio packets/s (64 kbit/s).
    for i in 0..4u8 {
        let tag = *b"bot-000\0";
        let mut tag = tag;
        tag[7] = b'0' + i;
        let bot = Bot::new(net.now, Lab::addr(i), "room", tag).with_video_interval(Duration::from_millis(5));
        net.add(i, bot);
    }
    for i in 4..6 {
        let bot = Bot::new(net.now, Lab::addr(i), "room", *b"listen-0").listen_only();
        net.add(i, bot);
    }
    // 2 ms steps: finer than any packet interval here, and half the time of the default.
    net.step = Duration::from_millis(2);
    net.run(Duration::from_secs(2));
    // Datagrams carry ~50 bytes of headers beside a 160-byte payload: audio ~84 kbit/s, a video ~336 kbit/s.
    let link = 4 * 84_000 + 336_000 * 5 / 2;
    net.limit_downlink(4, link);
    // Converge: the first loss report cuts the estimate, the allocation follows; the first probes for more
    // (each a second of loss, then a hold twice as long as the last) fall in this time.
    net.run(Duration::from_secs(30));
    let m = mark(&net, 0..4, 4..6);
    let link0 = net.bots[4].downlink.unwrap();
    net.run(Duration::from_secs(40));
    let l = net.bots[4].downlink.unwrap();
    let (offered, dropped) = (l.offered.0 - link0.offered.0, l.dropped.0 - link0.dropped.0);
    let got = delivered_since(&net, &m, 0..4, 4..6);
    let (slow, free) = (&got[0], &got[1]);
    let est = net.sb.sfu_rooms()[0].participants.iter().map(|p| (p.id.clone(), p.bwe_bps, p.egress_loss, p.paused.clone())).collect::<Vec<_>>();
    let detail = format!("slow {slow:?}\nfree {free:?}\nlink: {dropped} of {offered} dropped\nestimates {est:?}");
    println!("behind the slow link, over 40 s after 30 s to settle:\n{detail}");
    assert!(slow.iter().all(|(a, _)| *a >= 0.99), "audio intact behind the slow link:\n{detail}");
    assert!(slow[0].1 >= 0.95 && slow[1].1 >= 0.95, "the two most important videos flow:\n{detail}");
    assert!(slow[3].1 <= 0.05, "the least important video is paused:\n{detail}");
    assert!((dropped as f64) <= 0.01 * offered as f64, "at least 99% of what is forwarded arrives:\n{detail}");
    assert!(free.iter().all(|(a, v)| *a >= 0.99 && *v >= 0.99), "the free listener gets everything:\n{detail}");
    let ids: Vec<String> = (0..4).map(|i| net.bots[4].bot.peer_id(&format!("bot-000{i}")).unwrap().to_string()).collect();
    let told = net.bots[4].bot.paused_messages();
    assert!(told.contains(&(ids[3].clone(), true)), "told of the pause: {told:?}");
    assert!(net.bots[5].bot.paused_messages().is_empty());
    // The link recovers: the videos resume (after the estimate's hold and growth), and are told so.
    net.bots[4].downlink = None;
    net.run(Duration::from_secs(40));
    let last: BTreeMap<&String, bool> = told_last(net.bots[4].bot.paused_messages());
    assert!(last.values().all(|p| !p), "every video resumed once the link recovered: {last:?}");
    let m = mark(&net, 0..4, 4..5);
    net.run(Duration::from_secs(3));
    let got = delivered_since(&net, &m, 0..4, 4..5);
    assert!(got[0].iter().all(|(_, v)| *v >= 0.99), "all four videos flow again: {got:?}");
}

/// The last paused/resumed state told per publisher.
fn told_last(told: &[(String, bool)]) -> BTreeMap<&String, bool> {
    told.iter().map(|(p, v)| (p, *v)).collect()
}

/// The server's offer to a participant is lost (a page may drop a message): after [`OFFER_RETRY`] it is
/// sent again, the participant answers, and it receives the newcomer's tracks. Without the resend it
/// would never again be offered anything.
#[test]
fn an_unanswered_offer_is_sent_again() {
    let mut net = Lab::new(crate::time::test_start());
    net.add_bot(0);
    net.add_bot(1);
    net.run(Duration::from_secs(2));
    net.bots[0].lose_offers = 1;
    net.add_bot(2);
    let tag = net.bots[2].bot.tag();
    net.run(OFFER_RETRY - Duration::from_secs(1));
    assert_eq!(net.bots[0].lose_offers, 0, "the offer for the newcomer's tracks was lost");
    assert!(!net.received(0).contains_key(&tag), "nothing of the newcomer arrives before the resend");
    assert!(net.received(1).contains_key(&tag));
    net.run(Duration::from_secs(3));
    let got = net.received(0).get(&tag).copied().unwrap_or_default();
    assert!(got.0 > 0 && got.1 > 0, "after the resend, its audio and video arrive: {got:?}");
    let st = net.sb.stats().sfu;
    assert_eq!((st.offers_resent, st.offers_unanswered), (1, 0));
}

/// A participant that never answers is sent the offer [`OFFER_RETRIES`] more times, then given up on
/// (and counted); the others are not held up.
#[test]
fn a_participant_that_never_answers_is_given_up_on() {
    let mut net = Lab::new(crate::time::test_start());
    net.add_bot(0);
    net.add_bot(1);
    net.run(Duration::from_secs(2));
    net.bots[0].lose_offers = u32::MAX;
    net.add_bot(2);
    net.run(OFFER_RETRY * (OFFER_RETRIES + 2));
    let st = net.sb.stats().sfu;
    assert_eq!((st.offers_resent, st.offers_unanswered), (u64::from(OFFER_RETRIES), 1));
    assert!(net.received(1).contains_key(&net.bots[2].bot.tag()));
    assert!(net.received(2).contains_key(&net.bots[1].bot.tag()));
}

/// Simulcast publishers whose layers cost what browsers' do (l a quarter of h, m a half), and a listener
/// whose cap comes down in steps: first each video goes down a layer, then to its lowest, and only then does
/// the least important pause; audio is whole throughout; an uncapped listener keeps the top layers.
#[test]
fn a_capped_subscriber_gets_lower_layers_before_any_video_pauses() {
    let mut net = Lab::new(crate::time::test_start());
    net.step = Duration::from_millis(2);
    for i in 0..2u8 {
        // The tag follows the VP8 descriptor: an even first byte makes every packet a keyframe (see `Bot`).
        let mut tag = *b"botsim-0";
        tag[7] = b'0' + i;
        net.add(i, Bot::new(net.now, Lab::addr(i), "room", tag).with_scaled_layers().with_video_interval(Duration::from_millis(5)));
    }
    for i in 2..4 {
        net.add(i, Bot::new(net.now, Lab::addr(i), "room", *b"listen-0").listen_only());
    }
    net.run(Duration::from_secs(4));
    let capped = net.bots[2].conn;
    let sfu = net.sb.sfu().unwrap();
    let video = |rid: &str| {
        let costs: Vec<u64> = sfu.tracks.values().filter(|t| t.kind == MediaKind::Video).map(|t| {
            let i = t.layers.iter().position(|l| l.to_string() == rid).unwrap();
            t.rates[i].cost()
        }).collect();
        *costs.iter().max().unwrap()
    };
    let audio: u64 = sfu.tracks.values().filter(|t| t.kind == MediaKind::Audio).map(|t| t.rates[0].cost()).sum();
    let (l, m, h) = (video("l"), video("m"), video("h"));
    assert!(l * 3 < h && m * 3 / 2 < h, "layers cost like a browser's: l {l}, m {m}, h {h}");
    // Which layer each of the two publishers' videos reaches listener `s` with over the next 2 s, by packets.
    let layers_seen = |net: &mut Lab, s: usize| {
        let before: Vec<BTreeMap<u8, u64>> = (0..2).map(|p| net.bots[s].bot.video_seen().get(&net.bots[p].bot.tag()).map(|v| v.per_layer.clone()).unwrap_or_default()).collect();
        net.run(Duration::from_secs(2));
        (0..2)
            .map(|p| {
                let now = net.bots[s].bot.video_seen().get(&net.bots[p].bot.tag()).map(|v| v.per_layer.clone()).unwrap_or_default();
                let got: Vec<(u8, u64)> = now.iter().map(|(k, v)| (*k, v - before[p].get(k).copied().unwrap_or(0))).filter(|(_, n)| *n > 0).collect();
                match got.as_slice() {
                    [] => '-',
                    [(k, _)] => *k as char,
                    _ => '*',
                }
            })
            .collect::<String>()
    };
    let step = |net: &mut Lab, cap: u64| {
        let now = net.now;
        net.sb.sfu_mut().unwrap().set_max_bitrate(now, capped, Some(cap));
        net.settle();
        net.run(Duration::from_secs(1));
        (layers_seen(net, 2), net.bots[2].bot.paused_messages().to_vec())
    };
    assert_eq!(layers_seen(&mut net, 2), "hh", "uncapped: the top layers");
    let (seen, told) = step(&mut net, audio + 2 * m + m / 4);
    assert_eq!((seen.as_str(), told.len()), ("mm", 0), "room for two middle layers: both go down one, nothing pauses");
    let (seen, told) = step(&mut net, audio + 2 * l + l / 4);
    assert_eq!((seen.as_str(), told.len()), ("ll", 0), "room for two lowest layers: both at the lowest, nothing pauses");
    let (seen, told) = step(&mut net, audio + l + l / 2);
    assert_eq!(seen, "l-", "room for one: the second publisher's video pauses");
    assert_eq!(told.len(), 1, "{told:?}");
    assert_eq!(layers_seen(&mut net, 3), "hh", "the uncapped listener keeps the top layers");
    // Audio reached the capped listener whole all along.
    for p in 0..2 {
        let sent = net.bots[p].bot.sent().0;
        let got = net.received(2)[&net.bots[p].bot.tag()].0;
        assert!(got as f64 >= 0.98 * sent as f64, "audio of {p}: {got} of {sent}");
    }
}

/// m-lines in an SDP, and how many of them are stopped (port 0) or inactive.
fn m_lines(sdp: &str) -> (usize, usize, usize) {
    let sections: Vec<&str> = sdp.split("\r\nm=").skip(1).collect();
    let stopped = sections.iter().filter(|s| s.split(' ').nth(1) == Some("0")).count();
    let inactive = sections.iter().filter(|s| s.contains("a=inactive")).count();
    (sections.len(), stopped, inactive)
}

/// Issue 13: a room lasts. 100 participants join and leave one by one beside
/// a long-lived one; each joiner's tracks take the m-lines of the last
/// leaver's, so the long-lived participant's SDP stays the size of its room
/// (its 2 tracks, 2 per other member, the data channel), each change costs it
/// one offer, and every joiner is heard through a reused m-line.
#[test]
fn a_hundred_joins_and_leaves_reuse_m_lines_and_renegotiate_once_per_change() {
    let mut net = Lab::new(crate::time::test_start());
    net.add_bot(0);
    net.add_bot(1);
    net.run(Duration::from_secs(3));
    let (_, first) = net.bots[0].bot.offers();
    assert_eq!(m_lines(first.expect("offered bot 1's tracks")), (5, 0, 0));
    for i in 2..=101u8 {
        // The previous joiner leaves: one offer, its two m-lines inactive, none added.
        let before = net.bots[0].bot.offers().0;
        let leaver = net.bots.len() - 1;
        net.remove_bot(leaver);
        net.run(Duration::from_millis(300));
        let (n, sdp) = net.bots[0].bot.offers();
        assert_eq!(n, before + 1, "join {i}: one offer per leave");
        assert_eq!(m_lines(sdp.unwrap_or_default()), (5, 0, 2), "join {i}: after the leave");
        // The next one joins: one offer, the same m-lines sending again under its stream id.
        let before = n;
        net.add_bot(i);
        net.run(Duration::from_millis(1500));
        let (n, sdp) = net.bots[0].bot.offers();
        assert_eq!(n, before + 1, "join {i}: one offer per join");
        let sdp = sdp.unwrap_or_default();
        assert_eq!(m_lines(sdp), (5, 0, 0), "join {i}: {sdp}");
        let id = net.bots[0].bot.peer_id(std::str::from_utf8(&net.bots.last().unwrap().bot.tag()).unwrap()).unwrap().to_owned();
        assert_eq!(sdp.matches(&format!("a=msid:{id} ")).count(), 2, "join {i}: the reused m-lines name the joiner");
        if i % 10 == 1 || i == 2 {
            // Media flows through the reused m-lines, both ways.
            let tag = net.bots.last().unwrap().bot.tag();
            let at = net.received(0).get(&tag).copied().unwrap_or_default();
            net.run(Duration::from_secs(1));
            let now = net.received(0).get(&tag).copied().unwrap_or_default();
            assert!(now.0 > at.0 + 20 && now.1 > at.1 + 10, "join {i}: bot 0 hears the joiner: {at:?} -> {now:?}");
            assert!(net.received(net.bots.len() - 1).contains_key(&net.bots[0].bot.tag()), "join {i}: the joiner hears bot 0");
        }
    }
    let st = net.sb.stats().sfu;
    assert_eq!(st.participants, 2);
}

/// Issue 13: the room is told who speaks. Of three bots only one sends loud
/// audio (-20 dBov; the others -127, silence): everyone, itself included, is
/// told it is the speaker, once. When another one talks louder and longer,
/// the room follows; a short burst does not move it (debounce).
#[test]
fn the_room_is_told_who_speaks_and_a_short_burst_does_not_move_it() {
    let mut net = Lab::new(crate::time::test_start());
    let levels = [-127, -20, -127];
    for (i, l) in levels.iter().enumerate() {
        let mut tag = *b"bot-0000";
        tag[7] = b'0' + i as u8;
        net.add(i as u8, Bot::new(net.now, Lab::addr(i as u8), "room", tag).with_audio_level(*l));
    }
    net.run(Duration::from_secs(4));
    let id = |net: &Lab, i: usize| net.bots[0].bot.peer_id(std::str::from_utf8(&net.bots[i].bot.tag()).unwrap()).map(str::to_owned);
    let one = id(&net, 1).expect("bot 0 knows bot 1");
    for i in 0..3 {
        assert_eq!(net.bots[i].bot.speakers(), std::slice::from_ref(&one), "bot {i}");
    }
    // Bot 2 makes a sound for 200 ms: not enough to take the room.
    net.bots[2].bot.set_audio_level(-10);
    net.run(Duration::from_millis(200));
    net.bots[2].bot.set_audio_level(-127);
    net.run(Duration::from_secs(2));
    assert_eq!(net.bots[0].bot.speakers(), std::slice::from_ref(&one));
    // Bot 1 falls silent and bot 2 speaks: the room follows.
    net.bots[1].bot.set_audio_level(-127);
    net.bots[2].bot.set_audio_level(-25);
    net.run(Duration::from_secs(3));
    let two = id(&net, 2).expect("bot 0 knows bot 2");
    for i in 0..3 {
        assert_eq!(net.bots[i].bot.speakers(), [one.clone(), two.clone()], "bot {i}");
    }
    // A late joiner is told at once.
    net.add_bot(3);
    net.run(Duration::from_millis(100));
    assert_eq!(net.bots[3].bot.speakers(), [two]);
    assert_eq!(net.sb.stats().sfu.speaker_changes, 2);
}

/// Issue 13: WHIP and WHEP on the lab's engine. A bot publishes over WHIP
/// and the room's member hears it as any participant; a WHEP viewer
/// receives the room's first publisher on the m-lines of its own offer, then
/// the other one when the first is DELETEd (no renegotiation), and a pinned
/// viewer gets the one it named. A WHIP client that goes quiet is ended
/// after `MEDIA_CLIENT_IDLE`; a wrong token gets 401.
#[test]
fn whip_publishers_and_whep_viewers_share_the_room() {
    use crate::lab::LAB_TOKEN;
    let mut net = Lab::new(crate::time::test_start());
    net.add_http(0, Bot::new(net.now, Lab::addr(0), "room", *b"whip-pub"), "/whip/room?name=Encoder", LAB_TOKEN);
    net.add_bot(1);
    net.add_http(2, Bot::new(net.now, Lab::addr(2), "room", *b"viewer-1").viewer(), "/whep/room", LAB_TOKEN);
    net.run(Duration::from_secs(4));
    let status = |net: &Lab, i: usize| net.bots[i].http.as_ref().unwrap().statuses.clone();
    assert_eq!(status(&net, 0), [201]);
    assert_eq!(status(&net, 2), [201]);
    assert!(net.bots[0].bot.is_connected() && net.bots[2].bot.is_connected());
    // The member hears the WHIP publisher, and knows it by its name.
    let whip_tag = net.bots[0].bot.tag();
    let heard = net.received(1).get(&whip_tag).copied().unwrap_or_default();
    assert!(heard.0 > 50 && heard.1 > 30, "bot 1 hears the WHIP publisher: {heard:?}");
    let whip_id = net.bots[1].bot.peer_id("Encoder").expect("otherjoin named the WHIP publisher").to_owned();
    assert!(net.bots[1].bot.offers().1.unwrap().contains(&format!("a=msid:{whip_id} ")));
    // The WHIP publisher gets nothing (it cannot renegotiate), the viewer the first publisher only.
    assert!(net.received(0).is_empty(), "{:?}", net.received(0).keys().collect::<Vec<_>>());
    let seen = net.received(2).get(&whip_tag).copied().unwrap_or_default();
    assert!(seen.0 > 50 && seen.1 > 30, "the viewer receives the WHIP publisher: {seen:?}");
    assert!(!net.received(2).contains_key(&net.bots[1].bot.tag()));
    // A pinned viewer gets bot 1.
    let bot1_id = net.sb.signaling().peer_id(net.bots[1].conn).unwrap().to_owned();
    net.add_http(3, Bot::new(net.now, Lab::addr(3), "room", *b"viewer-2").viewer(), &format!("/whep/room?peer={bot1_id}"), LAB_TOKEN);
    net.run(Duration::from_secs(3));
    let got = net.received(3);
    assert!(got.get(&net.bots[1].bot.tag()).is_some_and(|x| x.1 > 30) && !got.contains_key(&whip_tag), "{got:?}");
    // DELETE the WHIP session: the first viewer moves to bot 1 on the same m-lines.
    let location = net.bots[0].http.as_ref().unwrap().location.clone().unwrap();
    let offers_before = net.bots[2].bot.offers().0;
    net.http_request(0, "DELETE", &location, "application/sdp", "");
    assert_eq!(status(&net, 0), [201, 200]);
    net.bots[0].live = false;
    let before = net.received(2).get(&net.bots[1].bot.tag()).copied().unwrap_or_default();
    net.run(Duration::from_secs(2));
    let after = net.received(2).get(&net.bots[1].bot.tag()).copied().unwrap_or_default();
    assert!(after.0 > before.0 + 50 && after.1 > before.1 + 20, "the viewer now receives bot 1: {before:?} -> {after:?}");
    assert_eq!(net.bots[2].bot.offers().0, offers_before, "no renegotiation");
    let st = net.sb.stats();
    assert_eq!((st.whip.whip_sessions, st.whip.whep_sessions, st.whip.deleted), (0, 2, 1));
    assert_eq!(st.sfu.participants, 3);
    // A viewer that goes quiet is ended after MEDIA_CLIENT_IDLE; the room is told it left.
    net.bots[3].live = false;
    net.run(MEDIA_CLIENT_IDLE + Duration::from_secs(2));
    let st = net.sb.stats();
    assert_eq!((st.whip.whep_sessions, st.whip.timed_out, st.sfu.participants, st.sfu.media_clients_lost), (1, 1, 2, 1));
    // A wrong token: 401, nothing joins.
    net.add_http(4, Bot::new(net.now, Lab::addr(4), "room", *b"intruder"), "/whip/room", "wrong");
    assert_eq!(status(&net, 4), [401]);
    assert_eq!(net.sb.stats().sfu.participants, 2);
}

/// Issue 13: a room recorded on request. A member's `record {on}` is told to
/// everyone (and to a joiner); each published track gets a file, opened at
/// its first packet, written as it goes (audio here: the bots' payloads are
/// not real video), and closed when recording stops or its publisher leaves.
/// Over HTTP: 202 for a room with members, 404 otherwise. (The files' content
/// is checked against ffprobe in tests/tests/recording.rs and the browser test.)
#[test]
fn a_room_is_recorded_on_request_and_everyone_is_told() {
    use crate::sfu::RecordOp;
    let mut net = Lab::new(crate::time::test_start());
    net.add_bot(0);
    net.add_bot(1);
    net.run(Duration::from_secs(2));
    assert!(net.records.is_empty(), "nothing is recorded unasked");
    let conn = net.bots[0].conn;
    let _ = net.sb.handle_input(net.now, Input::SignalText { conn, text: r#"{"type":"record","on":true}"# });
    net.run(Duration::from_secs(3));
    let id0 = net.sb.signaling().peer_id(conn).unwrap().to_owned();
    for i in 0..2 {
        assert_eq!(net.bots[i].bot.recording(), [(true, id0.clone())], "bot {i}");
    }
    let opened: Vec<(u64, String)> = net.records.iter().filter_map(|(f, op)| match op {
        RecordOp::Open { name } => Some((*f, name.clone())),
        _ => None,
    }).collect();
    assert_eq!(opened.len(), 4, "one file per published track: {opened:?}");
    assert!(opened.iter().all(|(_, n)| n.starts_with("room/") && (n.ends_with(".ogg") || n.ends_with(".ivf"))), "{opened:?}");
    let appended = |net: &Lab, f: u64| net.records.iter().filter(|(x, op)| *x == f && matches!(op, RecordOp::Write(_))).count();
    for (f, n) in &opened {
        if n.ends_with(".ogg") {
            assert!(appended(&net, *f) > 50, "{n}: {} writes", appended(&net, *f));
        }
    }
    // A joiner is told; its tracks are recorded too.
    net.add_bot(2);
    net.run(Duration::from_secs(2));
    assert_eq!(net.bots[2].bot.recording(), [(true, id0.clone())]);
    let opens = |net: &Lab| net.records.iter().filter(|(_, op)| matches!(op, RecordOp::Open { .. })).count();
    let closes = |net: &Lab| net.records.iter().filter(|(_, op)| matches!(op, RecordOp::Close)).count();
    assert_eq!((opens(&net), closes(&net)), (6, 0));
    // Its publisher leaves: its two files close.
    net.remove_bot(2);
    assert_eq!(closes(&net), 2);
    // Off over HTTP: the rest close, everyone is told.
    let request = crate::whip::HttpRequest {
        method: "POST",
        path: "/recordings/room",
        query: "on=0",
        authorization: Some("Bearer lab-token"),
        content_type: None,
        if_match: None,
        body: b"",
    };
    let _ = net.sb.handle_input(net.now, Input::Http { conn: ConnId(900), request });
    net.settle();
    assert_eq!((opens(&net), closes(&net)), (6, 6));
    assert_eq!(net.bots[1].bot.recording().last(), Some(&(false, "http".to_owned())));
    let request = crate::whip::HttpRequest { path: "/recordings/nobody-here", query: "on=1", ..request };
    let _ = net.sb.handle_input(net.now, Input::Http { conn: ConnId(900), request });
    let mut statuses = Vec::new();
    loop {
        match net.sb.poll_output() {
            crate::engine::Output::HttpResponse { response, .. } => statuses.push(response.status),
            crate::engine::Output::Timeout(_) => break,
            _ => {}
        }
    }
    assert_eq!(statuses, [404]);
    assert_eq!(net.sb.stats().sfu.recordings_started, 1);
}
