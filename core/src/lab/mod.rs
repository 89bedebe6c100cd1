//! Test rigs for the SFU, behind the `lab` feature (and in the core's own
//! tests): [`Bot`], a headless str0m participant that speaks the signaling
//! protocol, and [`Lab`], an in-memory network of a [`Switchboard`] engine
//! with an SFU and any number of bots, wired without sockets on simulated
//! time. For tests of the SFU, benchmarks of its forward path and load
//! generators; not for production use.
//!
//! It sits above the engine (it drives a whole [`Switchboard`]), which is
//! why it is a module of its own and not part of [`crate::sfu`].

mod bot;
pub mod natsim;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

pub use bot::{Bot, Latency, Received, VideoSeen};
use crate::engine::{Config, Input, Output, Switchboard};
use crate::ids::ConnId;
use crate::sfu::SfuConfig;

/// The bearer token the lab's engine takes for WHIP and WHEP.
pub const LAB_TOKEN: &str = "lab-token";

/// The SFU's media address in the lab.
pub const MEDIA: &str = "10.0.0.100:7882";

/// One bot in the lab.
#[derive(Debug)]
pub struct Member {
    /// Its signaling connection.
    pub conn: ConnId,
    /// Its address.
    pub addr: SocketAddr,
    /// The bot.
    pub bot: Bot,
    /// Whether it is still connected.
    pub live: bool,
    /// Its downlink, if limited ([`Lab::limit_downlink`]).
    pub downlink: Option<Link>,
    /// How many of the server's next SDP offers to it are lost on the way.
    pub lose_offers: u32,
    /// For a WHIP or WHEP client: its HTTP side (it has no signaling).
    pub http: Option<HttpClient>,
}

/// The HTTP side of a bot that is a WHIP or WHEP client: its offer is
/// `POST`ed to `path`, its candidates `PATCH`ed to the session.
#[derive(Debug, Clone, Default)]
pub struct HttpClient {
    /// Where the offer goes (`/whip/room`, `/whep/room?peer=...`).
    pub path: String,
    /// The bearer token.
    pub token: String,
    /// The session's `Location`, once created.
    pub location: Option<String>,
    /// The status of every answer, in order.
    pub statuses: Vec<u16>,
}

/// A bot's limited downlink: a token-bucket policer in datagram bytes, with
/// [`LINK_BURST`] of burst; what does not fit is dropped and counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Link {
    /// Capacity, bits per second.
    pub bps: u64,
    /// Bits that may pass now.
    tokens: u64,
    /// When `tokens` was last filled.
    filled: Instant,
    /// Datagrams offered to the link, and bytes.
    pub offered: (u64, u64),
    /// Datagrams dropped, and bytes.
    pub dropped: (u64, u64),
}

/// How much of a burst a limited downlink carries: this much time at its capacity.
pub const LINK_BURST: Duration = Duration::from_millis(100);

impl Link {
    fn depth(&self) -> u64 {
        self.bps * LINK_BURST.as_millis() as u64 / 1000
    }

    /// Whether a datagram of `len` bytes at `now` passes.
    fn pass(&mut self, now: Instant, len: usize) -> bool {
        let elapsed = now.saturating_duration_since(self.filled);
        self.filled = now;
        self.tokens = (self.tokens + (self.bps as u128 * elapsed.as_nanos() / 1_000_000_000) as u64).min(self.depth());
        let bits = len as u64 * 8;
        self.offered.0 += 1;
        self.offered.1 += len as u64;
        if self.tokens >= bits {
            self.tokens -= bits;
            true
        } else {
            self.dropped.0 += 1;
            self.dropped.1 += len as u64;
            false
        }
    }
}

/// The engine and its bots.
#[derive(Debug)]
pub struct Lab {
    /// The engine under test.
    pub sb: Switchboard,
    /// Simulated time now.
    pub now: Instant,
    /// The bots, in the order added.
    pub bots: Vec<Member>,
    deadline: Option<Instant>,
    /// Every datagram the SFU sent: when, and to whom.
    pub sent_to: Vec<(Instant, SocketAddr)>,
    /// What the SFU asked to write to recording files, in order.
    pub records: Vec<(u64, crate::sfu::RecordOp)>,
    /// Whether to deliver the SFU's datagrams to the bots (benchmarks turn it off).
    pub deliver: bool,
    /// How far [`Lab::run`] moves time at each step: 1 ms by default, finer
    /// than the bots' packet intervals, so that packets are not bunched into
    /// bursts a real network would not make.
    pub step: Duration,
    media: SocketAddr,
}

impl Lab {
    /// An engine with an SFU at [`MEDIA`] (rooms of up to 256) and no bots,
    /// its simulated time starting at `now`.
    pub fn new(now: Instant) -> Lab {
        let media: SocketAddr = MEDIA.parse().expect("valid address");
        // Rooms big enough for load: 256 participants.
        let signal = crate::signal::SignalConfig { sfu_capacity: 256, ..Default::default() };
        // WHIP and WHEP clients present [`LAB_TOKEN`].
        let whip = crate::whip::WhipConfig { tokens: vec![LAB_TOKEN.into()], secret: None };
        // Rooms may be recorded (the lab keeps what would be written in `records`).
        let sfu = SfuConfig { record: true, ..SfuConfig::new(media) };
        let config = Config { sfu: Some(sfu), signal, whip, ..Config::default() };
        Lab { sb: Switchboard::new(config, now, 1_800_000_000, &[4; 32]), now, bots: Vec::new(), deadline: None, sent_to: Vec::new(), records: Vec::new(), deliver: true, step: Duration::from_millis(1), media }
    }

    /// An engine with one publishing bot (number 0) and `listeners` listening
    /// bots (1..=listeners) in room "room", run until every bot is connected
    /// (the ICE checks and DTLS handshakes take a few simulated seconds): the
    /// rig of the forward-path benchmarks. Panics if they do not connect.
    pub fn publisher_and_listeners(now: Instant, listeners: u8) -> Lab {
        let mut lab = Lab::new(now);
        lab.add_bot(0);
        for i in 1..=listeners {
            let bot = Bot::new(lab.now, Lab::addr(i), "room", *b"listener").listen_only();
            lab.add(i, bot);
        }
        for _ in 0..20 {
            lab.run(Duration::from_millis(500));
            if lab.bots.iter().all(|b| b.bot.is_connected()) {
                break;
            }
        }
        let connected = lab.bots.iter().filter(|b| b.bot.is_connected()).count();
        assert_eq!(connected, usize::from(listeners) + 1, "every bot connects");
        lab
    }

    /// Adds bot number `i` (tag `bot-000i`), joining room "room".
    pub fn add_bot(&mut self, i: u8) {
        let addr = Self::addr(i);
        let mut tag = *b"bot-0000";
        tag[7] = b'0' + i % 10;
        tag[6] = b'0' + (i / 10) % 10;
        tag[5] = b'0' + i / 100;
        let bot = Bot::new(self.now, addr, "room", tag);
        self.add(i, bot);
    }

    /// Adds a bot made by the caller, as number `i`.
    pub fn add(&mut self, i: u8, bot: Bot) {
        let conn = ConnId(100 + u64::from(i));
        let _ = self.sb.handle_input(self.now, Input::SignalOpened { conn });
        self.bots.push(Member { conn, addr: Self::addr(i), bot, live: true, downlink: None, lose_offers: 0, http: None });
        self.settle();
    }

    /// Adds a bot made by the caller, as number `i`, as a WHIP or WHEP
    /// client: its offer is `POST`ed to `path` (`/whip/room`, `/whep/room`)
    /// with `token`, and the `201`'s SDP is its answer.
    pub fn add_http(&mut self, i: u8, mut bot: Bot, path: &str, token: &str) {
        let conn = ConnId(100 + u64::from(i));
        // What `joined` makes a bot do: publish (or, as a viewer, offer to receive).
        bot.handle_signal(self.now, r#"{"type":"joined","room":"room","id":"-","mode":"sfu","peers":[],"iceServers":[]}"#);
        let http = HttpClient { path: path.into(), token: token.into(), ..Default::default() };
        self.bots.push(Member { conn, addr: Self::addr(i), bot, live: true, downlink: None, lose_offers: 0, http: Some(http) });
        self.settle();
    }

    /// One request of bot `index`'s HTTP side; its answer is handled when the engine hands it out.
    pub fn http_request(&mut self, index: usize, method: &str, path: &str, content_type: &str, body: &str) {
        let m = &self.bots[index];
        let auth = m.http.as_ref().map(|h| format!("Bearer {}", h.token));
        let (path, query) = path.split_once('?').unwrap_or((path, ""));
        let request = crate::whip::HttpRequest {
            method,
            path,
            query,
            authorization: auth.as_deref(),
            content_type: Some(content_type),
            if_match: None,
            body: body.as_bytes(),
        };
        let _ = self.sb.handle_input(self.now, Input::Http { conn: m.conn, request });
        self.settle();
    }

    /// Limits bot `index`'s downlink (what the SFU sends it) to `bps`, from now.
    pub fn limit_downlink(&mut self, index: usize, bps: u64) {
        let mut link = Link { bps, tokens: 0, filled: self.now, offered: (0, 0), dropped: (0, 0) };
        link.tokens = link.depth();
        self.bots[index].downlink = Some(link);
    }

    /// The address of bot number `i`.
    pub fn addr(i: u8) -> SocketAddr {
        SocketAddr::from(([10, 0, 1, i], 5000))
    }

    /// Bot `index` (in the order added) disconnects.
    pub fn remove_bot(&mut self, index: usize) {
        let conn = self.bots[index].conn;
        self.bots[index].live = false;
        let _ = self.sb.handle_input(self.now, Input::SignalClosed { conn });
        self.settle();
    }

    /// Moves every message and datagram until nothing moves.
    pub fn settle(&mut self) {
        for _ in 0..100_000 {
            let mut moved = self.drain_engine();
            for i in 0..self.bots.len() {
                if !self.bots[i].live {
                    continue;
                }
                while let Some(text) = self.bots[i].bot.poll_signal() {
                    moved = true;
                    let conn = self.bots[i].conn;
                    let Some(http) = &self.bots[i].http else {
                        let _ = self.sb.handle_input(self.now, Input::SignalText { conn, text: &text });
                        continue;
                    };
                    // A WHIP or WHEP client: its offer is POSTed; trickled candidates are not needed (ICE-lite server).
                    let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
                    if v["type"] == "offer" {
                        let path = http.path.clone();
                        let sdp = v["sdp"].as_str().unwrap_or_default().to_owned();
                        self.http_request(i, "POST", &path, "application/sdp", &sdp);
                    }
                }
                while let Some((to, data)) = self.bots[i].bot.poll_transmit() {
                    moved = true;
                    if to == self.media {
                        let remote = self.bots[i].addr;
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

    /// Delivers the engine's outputs; true if there were any.
    fn drain_engine(&mut self) -> bool {
        let mut moved = false;
        loop {
            match self.sb.poll_output() {
                Output::SignalSend(m) => {
                    moved = true;
                    if let Some(b) = self.bots.iter_mut().find(|b| b.conn == m.conn && b.live) {
                        if b.lose_offers > 0 && m.text.starts_with(r#"{"type":"offer""#) {
                            b.lose_offers -= 1;
                            continue;
                        }
                        b.bot.handle_signal(self.now, &m.text);
                    }
                }
                Output::MediaTransmit { to, data } => {
                    moved = true;
                    self.sent_to.push((self.now, to));
                    if !self.deliver {
                        continue;
                    }
                    if let Some(b) = self.bots.iter_mut().find(|b| b.addr == to && b.live) {
                        if b.downlink.as_mut().is_none_or(|l| l.pass(self.now, data.len())) {
                            b.bot.handle_datagram(self.now, self.media, to, &data);
                        }
                    }
                }
                Output::Record { file, op } => {
                    moved = true;
                    self.records.push((file, op));
                }
                Output::HttpResponse { conn, response } => {
                    moved = true;
                    let now = self.now;
                    if let Some(b) = self.bots.iter_mut().find(|b| b.conn == conn && b.live) {
                        let Some(http) = &mut b.http else { continue };
                        http.statuses.push(response.status);
                        if response.status == 201 {
                            http.location = response.headers.iter().find(|(k, _)| *k == "Location").map(|(_, v)| v.clone());
                            let sdp = String::from_utf8_lossy(&response.body);
                            b.bot.handle_signal(now, &serde_json::json!({"type": "answer", "sdp": sdp}).to_string());
                        }
                    }
                }
                Output::Timeout(at) => {
                    self.deadline = at;
                    return moved;
                }
                _ => moved = true,
            }
        }
    }

    /// Runs simulated time forward in steps of [`Lab::step`].
    pub fn run(&mut self, d: Duration) {
        let end = self.now + d;
        while self.now < end {
            self.now += self.step;
            if self.deadline.is_some_and(|t| t <= self.now) {
                let _ = self.sb.handle_input(self.now, Input::Timeout);
            }
            for b in self.bots.iter_mut().filter(|b| b.live) {
                if b.bot.poll_timeout() <= self.now {
                    b.bot.handle_timeout(self.now);
                }
            }
            self.settle();
        }
    }

    /// What bot `index` received.
    pub fn received(&self, index: usize) -> &Received {
        self.bots[index].bot.received()
    }

    /// Advances time until bot `index` sends datagrams to the SFU, and returns them
    /// (undelivered: feed them with [`Lab::feed`]).
    pub fn next_datagrams(&mut self, index: usize) -> VecDeque<Vec<u8>> {
        let mut out = VecDeque::new();
        while out.is_empty() {
            self.now += Duration::from_millis(1);
            let b = &mut self.bots[index];
            if b.bot.poll_timeout() <= self.now {
                b.bot.handle_timeout(self.now);
            }
            while let Some((to, data)) = b.bot.poll_transmit() {
                if to == self.media {
                    out.push_back(data);
                }
            }
        }
        out
    }

    /// Feeds one datagram from bot `index` to the engine and drains its
    /// outputs (delivering them only if [`Lab::deliver`]); returns how many
    /// datagrams the SFU sent.
    pub fn feed(&mut self, index: usize, data: &[u8]) -> usize {
        let remote = self.bots[index].addr;
        let before = self.sent_to.len();
        let _ = self.sb.handle_input(self.now, Input::MediaDatagram { remote, data });
        self.drain_engine();
        let n = self.sent_to.len() - before;
        if !self.deliver {
            self.sent_to.clear();
        }
        n
    }
}
