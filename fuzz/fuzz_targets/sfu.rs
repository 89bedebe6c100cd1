//! SFU input: two participants joined, then arbitrary SDP offers and answers,
//! candidates, layer requests (naming any connection) and datagrams (some shaped as STUN with the
//! participant's ICE ufrag, as DTLS, as RTP) from arbitrary addresses, with
//! time steps. No panic; unknown datagrams are counted, not routed.
#![no_main]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use switchboard_core::sfu::{Sfu, SfuConfig};
use switchboard_core::ConnId;

#[derive(Arbitrary, Debug)]
enum Op {
    Offer(String),
    Answer(String),
    Candidate(String),
    Layer(u8, String),
    Datagram { from: u8, kind: u8, body: Vec<u8> },
    Wait(u16),
    Leave,
    Join,
}

fuzz_target!(|ops: Vec<Op>| {
    let start = Instant::now();
    let mut now = start;
    let media: SocketAddr = "10.0.0.1:7882".parse().unwrap();
    let mut sfu = Sfu::new(SfuConfig::new(media), start, &[9; 32]);
    let conn = ConnId(1);
    // A second participant, so that layer choices can name a publisher in the room.
    let other = ConnId(2);
    sfu.join(now, conn, "r".into(), "p1".into());
    sfu.join(now, other, "r".into(), "p2".into());
    for op in ops.into_iter().take(64) {
        match op {
            Op::Offer(sdp) => sfu.handle_offer(now, conn, &sdp),
            Op::Answer(sdp) => sfu.handle_answer(now, conn, &sdp),
            Op::Candidate(candidate) => sfu.handle_candidate(now, conn, &candidate),
            Op::Layer(peer, rid) => sfu.set_layer(now, conn, ConnId(u64::from(peer)), &rid),
            Op::Datagram { from, kind, body } => {
                let from = SocketAddr::from(([10, 0, 1, from], 5000));
                let mut d = match kind % 4 {
                    // STUN binding request header; USERNAME is up to the fuzzer.
                    0 => vec![0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12],
                    1 => vec![0x16, 0xfe, 0xfd],
                    2 => vec![0x80, 0x60],
                    _ => Vec::new(),
                };
                d.extend_from_slice(&body);
                if kind % 4 == 0 && d.len() >= 20 {
                    let len = ((d.len() - 20) as u16).to_be_bytes();
                    d[2] = len[0];
                    d[3] = len[1];
                }
                sfu.handle_datagram(now, from, &d);
            }
            Op::Wait(ms) => {
                now += Duration::from_millis(u64::from(ms));
                sfu.handle_timeout(now);
            }
            Op::Leave => sfu.leave(now, conn),
            Op::Join => sfu.join(now, conn, "r".into(), "p1".into()),
        }
        while sfu.poll_output().is_some() {}
        if let Some(t) = sfu.poll_timeout() {
            assert!(t >= now, "a timer in the past");
        }
    }
});
