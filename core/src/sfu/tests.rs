//! The SFU with bots, wired in memory through the whole engine (signaling
//! included), on simulated time: routing, late joiners, leaving, keyframe
//! throttling, renegotiation.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::bot::Bot;
use super::*;
use crate::engine::{Config, Input, Output, Switchboard};

const MEDIA: &str = "10.0.0.100:7882";

struct Net {
    sb: Switchboard,
    now: Instant,
    bots: Vec<(ConnId, SocketAddr, Bot, bool)>,
    deadline: Option<Instant>,
    /// Datagrams the SFU sent to each address (to check nothing reaches a leaver).
    sent_to: Vec<(Instant, SocketAddr)>,
}

impl Net {
    fn new() -> Net {
        let now = Instant::now();
        let config = Config { sfu: Some(SfuConfig { media_addr: MEDIA.parse().unwrap() }), ..Config::default() };
        Net { sb: Switchboard::new(config, now, 1_800_000_000, &[4; 32]), now, bots: Vec::new(), deadline: None, sent_to: Vec::new() }
    }

    fn add_bot(&mut self, i: u8) {
        let conn = ConnId(100 + u64::from(i));
        let addr: SocketAddr = format!("10.0.1.{i}:5000").parse().unwrap();
        let mut tag = *b"bot-0000";
        tag[7] = b'0' + i;
        let _ = self.sb.handle_input(self.now, Input::SignalOpened { conn });
        self.bots.push((conn, addr, Bot::new(self.now, addr, "room", tag), true));
        self.settle();
    }

    fn remove_bot(&mut self, i: usize) {
        let conn = self.bots[i].0;
        self.bots[i].3 = false;
        let _ = self.sb.handle_input(self.now, Input::SignalClosed { conn });
        self.settle();
    }

    /// Moves every message and datagram until nothing moves.
    fn settle(&mut self) {
        let media: SocketAddr = MEDIA.parse().unwrap();
        for _ in 0..10_000 {
            let mut moved = false;
            loop {
                match self.sb.poll_output() {
                    Output::SignalSend(m) => {
                        moved = true;
                        if let Some(b) = self.bots.iter_mut().find(|b| b.0 == m.conn && b.3) {
                            b.2.handle_signal(self.now, &m.text);
                        }
                    }
                    Output::MediaTransmit { to, data } => {
                        moved = true;
                        self.sent_to.push((self.now, to));
                        if let Some(b) = self.bots.iter_mut().find(|b| b.1 == to && b.3) {
                            b.2.handle_datagram(self.now, media, to, &data);
                        }
                    }
                    Output::Timeout(at) => {
                        self.deadline = at;
                        break;
                    }
                    _ => {}
                }
            }
            for i in 0..self.bots.len() {
                if !self.bots[i].3 {
                    continue;
                }
                while let Some(text) = self.bots[i].2.poll_signal() {
                    moved = true;
                    let conn = self.bots[i].0;
                    let _ = self.sb.handle_input(self.now, Input::SignalText { conn, text: &text });
                }
                while let Some((to, data)) = self.bots[i].2.poll_transmit() {
                    moved = true;
                    if to == media {
                        let remote = self.bots[i].1;
                        let _ = self.sb.handle_input(self.now, Input::MediaDatagram { remote, data: &data });
                    }
                }
            }
            if !moved {
                return;
            }
        }
        panic!("the network never settles");
    }

    /// Runs simulated time forward in 5 ms steps.
    fn run(&mut self, d: Duration) {
        let end = self.now + d;
        while self.now < end {
            self.now += Duration::from_millis(5);
            if self.deadline.is_some_and(|t| t <= self.now) {
                let _ = self.sb.handle_input(self.now, Input::Timeout);
            }
            for b in self.bots.iter_mut().filter(|b| b.3) {
                if b.2.poll_timeout() <= self.now {
                    b.2.handle_timeout(self.now);
                }
            }
            self.settle();
        }
    }

    fn received(&self, i: usize) -> &bot::Received {
        self.bots[i].2.received()
    }
}

#[test]
fn six_bots_each_receive_every_other_bot() {
    let mut net = Net::new();
    for i in 0..6 {
        net.add_bot(i);
    }
    net.run(Duration::from_secs(4));
    for i in 0..6 {
        assert!(net.bots[i].2.is_connected(), "bot {i} did not connect");
        let got = net.received(i);
        let me = net.bots[i].2.tag();
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
    let mut net = Net::new();
    for i in 0..3 {
        net.add_bot(i);
    }
    net.run(Duration::from_secs(2));
    net.add_bot(3);
    net.run(Duration::from_secs(2));
    assert_eq!(net.received(3).len(), 3, "the late joiner hears the three");
    for i in 0..3 {
        assert!(net.received(i).contains_key(&net.bots[3].2.tag()), "bot {i} hears the late joiner");
    }
    // Bot 0 leaves: nothing more goes to it, and the others stop receiving it.
    let gone = net.bots[0].1;
    let tag = net.bots[0].2.tag();
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
    let mid = net.received(1)[&net.bots[2].2.tag()];
    net.run(Duration::from_secs(1));
    assert!(net.received(1)[&net.bots[2].2.tag()].1 > mid.1);
}

#[test]
fn keyframe_requests_are_throttled_per_track() {
    let mut net = Net::new();
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
    let mut net = Net::new();
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
    let mut net = Net::new();
    // Bot 0 publishes three layers; bot 1 subscribes.
    let conn = ConnId(100);
    let addr: SocketAddr = "10.0.1.0:5000".parse().unwrap();
    let _ = net.sb.handle_input(net.now, Input::SignalOpened { conn });
    net.bots.push((conn, addr, Bot::new(net.now, addr, "room", *b"bot-0000").with_simulcast(), true));
    net.settle();
    net.add_bot(1);
    net.run(Duration::from_secs(2));
    let a = net.bots[0].2.tag();
    let seen = net.bots[1].2.video_seen()[&a].clone();
    assert!(seen.per_layer.values().sum::<u64>() >= 30, "{seen:?}");
    for rid in ["h", "m", "l", "h"] {
        assert!(net.bots[1].2.request_layer("bot-0000", rid));
        net.settle();
        net.run(Duration::from_millis(500));
        let before = net.bots[1].2.video_seen()[&a].per_layer.get(&rid.as_bytes()[0]).copied().unwrap_or(0);
        net.run(Duration::from_secs(1));
        let seen = &net.bots[1].2.video_seen()[&a];
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
