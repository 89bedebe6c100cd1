//! Six bots (the core's str0m `Bot`, over a real WebSocket and real UDP
//! sockets on loopback) in one SFU room of each real binary: each receives
//! every other bot's audio and video, with the counts checked.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use serde_json::Value;
use switchboard_core::lab::Bot;
use switchboard_tests::{Server, SERVERS};
use tungstenite::{Message, WebSocket};

struct Live {
    bot: Bot,
    ws: WebSocket<TcpStream>,
    udp: UdpSocket,
    local: SocketAddr,
}

fn start_bot(s: &Server, i: u8) -> Live {
    let tcp = TcpStream::connect(("127.0.0.1", s.http_port)).unwrap();
    let (ws, _) = tungstenite::client(format!("ws://127.0.0.1:{}/ws", s.http_port), tcp).expect("websocket");
    ws.get_ref().set_nonblocking(true).unwrap();
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_nonblocking(true).unwrap();
    let local = udp.local_addr().unwrap();
    let mut tag = *b"bot-0000";
    tag[7] = b'0' + i;
    Live { bot: Bot::new(Instant::now(), local, "bots", tag), ws, udp, local }
}

/// Runs the bots' I/O for `d`: signaling, datagrams, timers.
fn run(bots: &mut [Live], d: Duration) {
    let end = Instant::now() + d;
    let mut buf = vec![0u8; 2048];
    while Instant::now() < end {
        let now = Instant::now();
        for b in bots.iter_mut() {
            while let Some(text) = b.bot.poll_signal() {
                b.ws.send(Message::text(text)).expect("send signaling");
            }
            loop {
                match b.ws.read() {
                    Ok(Message::Text(t)) => b.bot.handle_signal(now, t.as_str()),
                    Ok(_) => {}
                    Err(tungstenite::Error::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) => panic!("signaling: {e}"),
                }
            }
            while let Ok((n, from)) = b.udp.recv_from(&mut buf) {
                b.bot.handle_datagram(now, from, b.local, &buf[..n]);
            }
            if b.bot.poll_timeout() <= now {
                b.bot.handle_timeout(now);
            }
            while let Some((to, data)) = b.bot.poll_transmit() {
                let _ = b.udp.send_to(&data, to);
            }
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn six_bots_each_receive_every_other_bot() {
    for bin in SERVERS {
        let s = Server::start(bin, &[]);
        let mut bots: Vec<Live> = (0..6).map(|i| start_bot(&s, i)).collect();
        run(&mut bots, Duration::from_secs(5));
        let stats: Value = {
            let (_, body) = s.get("/stats");
            serde_json::from_str(&body).unwrap()
        };
        for (i, b) in bots.iter().enumerate() {
            assert!(b.bot.is_connected(), "{bin}: bot {i} did not connect");
            let got: BTreeMap<String, (u64, u64)> = b.bot.received().iter().map(|(k, v)| (String::from_utf8_lossy(k).into_owned(), *v)).collect();
            assert_eq!(got.len(), 5, "{bin}: bot {i} hears {got:?}");
            assert!(!got.contains_key(&String::from_utf8_lossy(&b.bot.tag()).into_owned()), "{bin}: bot {i} hears itself");
            for (tag, (audio, video)) in &got {
                // About 4 s of publishing at 50 audio and 30 video packets per second reach each subscriber.
                assert!(*audio >= 100 && *video >= 60, "{bin}: bot {i} from {tag}: {audio} audio, {video} video");
            }
            println!("{bin}: bot {i} sent {:?}, received {got:?}", b.bot.sent());
        }
        let room = &stats["sfu_rooms"][0];
        assert_eq!(room["participants"].as_array().map(Vec::len), Some(6), "{bin}: {stats}");
        assert!(stats["sfu"]["forwarded_packets"].as_u64().unwrap() > 6 * 5 * 160, "{bin}: {stats}");
    }
}
