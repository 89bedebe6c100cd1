//! A TURN client that checks a server end to end: Allocate (long-term
//! credentials, 401 then 438 handled), CreatePermission, a relayed round trip
//! with Send and Data indications, ChannelBind, a round trip on the channel,
//! and a Refresh with LIFETIME 0 to release the allocation.
//!
//! The peer of the round trips is the probe itself: a second local UDP socket
//! (the shell's), whose public IP gets the permission. The peer sends first,
//! to the relayed address, which opens its own NAT's filter for the relay;
//! the relay forwards it to the client (Data indication or ChannelData), the
//! client sends it back to the address the relay saw it from (Send indication
//! or ChannelData), and the peer gets it again. The round trip time is from
//! the peer's send to its receipt: peer, relay, client, relay, peer. This
//! works behind any NAT, a symmetric one included, since nobody guesses a
//! port: each side answers the address it was sent from.
//!
//! Over a stream (TCP, TLS) the server's bytes are framed by the STUN length
//! or the ChannelData length padded to four ([`crate::framing`]), and nothing
//! is retransmitted but the peer's UDP datagrams.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::{error_code, header, Due, Retransmit, Timing};
use crate::framing::StreamFramer;
use crate::rng::{Rng, Seed};
use crate::stun::channel_data::ChannelData;
use crate::stun::message;
use crate::stun::view::{attr, encode_xor_address, method, Class, StunView};
use crate::stun::{classify, PacketKind};
use crate::turn::auth::{long_term_key, long_term_key_sha256, SessionKey};

/// The channel the probe binds (the first of RFC 8656's range).
pub const CHANNEL: u16 = 0x4000;
/// Most 438 Stale Nonce answers taken for one request before giving up.
const MAX_STALE: u8 = 3;
/// Most datagrams the peer sends in one round trip (first one and retransmissions).
const MAX_PINGS: usize = 16;
/// What every round trip datagram starts with; then 8 random bytes and a sequence number.
const PING: &[u8; 6] = b"SBPING";

/// How the probe reaches the TURN server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TurnTransport {
    /// UDP: one message per datagram, requests retransmitted.
    Datagram,
    /// TCP or TLS: a byte stream.
    Stream,
}

/// What a [`TurnProbe`] needs.
#[derive(Debug, Clone)]
pub struct TurnProbeConfig {
    /// How it reaches the server.
    pub transport: TurnTransport,
    /// The long-term credential's user name (a REST one is `expiry:name`).
    pub username: String,
    /// Its password.
    pub password: String,
    /// The local address of the peer socket; its port goes into the permission.
    pub peer_local: SocketAddr,
    /// Retransmission and timeout.
    pub timing: Timing,
}

/// What the probe asks its shell to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TurnTransmit {
    /// To the server: one datagram, or bytes for the stream.
    ToServer(Vec<u8>),
    /// A datagram from the peer socket to `to` (the relayed address).
    FromPeer {
        /// Where it goes.
        to: SocketAddr,
        /// The datagram.
        payload: Vec<u8>,
    },
}

/// The steps of the check, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TurnStep {
    /// Allocate a relayed address.
    Allocate,
    /// Permit the peer's IP.
    CreatePermission,
    /// Peer to client by Data indication, back by Send indication.
    IndicationRoundTrip,
    /// Bind a channel to the peer.
    ChannelBind,
    /// Peer to client and back on the channel (ChannelData).
    ChannelRoundTrip,
    /// Release the allocation (Refresh, LIFETIME 0).
    Refresh,
}

impl TurnStep {
    /// How a person would name it.
    pub fn name(self) -> &'static str {
        match self {
            TurnStep::Allocate => "allocate",
            TurnStep::CreatePermission => "create permission",
            TurnStep::IndicationRoundTrip => "relayed round trip (Send/Data indications)",
            TurnStep::ChannelBind => "channel bind",
            TurnStep::ChannelRoundTrip => "relayed round trip (ChannelData)",
            TurnStep::Refresh => "release (Refresh, lifetime 0)",
        }
    }

    /// The request method of a step (the round trips send none: never asked for them).
    fn method(self) -> u16 {
        match self {
            TurnStep::Allocate => method::ALLOCATE,
            TurnStep::CreatePermission => method::CREATE_PERMISSION,
            TurnStep::ChannelBind => method::CHANNEL_BIND,
            TurnStep::Refresh | TurnStep::IndicationRoundTrip | TurnStep::ChannelRoundTrip => method::REFRESH,
        }
    }
}

/// Why the check failed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TurnFailure {
    /// No answer within the timeout.
    NoAnswer(TurnStep),
    /// The server refused the user name or password (401 to a request with credentials, or 441).
    WrongCredentials,
    /// The server answered this step with an error.
    Rejected {
        /// The step.
        step: TurnStep,
        /// The STUN error code (0: a success response without what it must carry).
        code: u16,
        /// Its reason phrase.
        reason: String,
    },
    /// A success response whose MESSAGE-INTEGRITY does not check with our key.
    BadIntegrity(TurnStep),
    /// Nothing came back through the relay within the timeout.
    NoRelayedData(TurnStep),
    /// The server's stream could not be framed any more.
    Desynchronized,
    /// The server closed the stream.
    Closed(TurnStep),
}

/// What the check found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TurnReport {
    /// The realm the server named.
    pub realm: Option<String>,
    /// Whether the server offered SHA-256 (RFC 8489 PASSWORD-ALGORITHMS, with the nonce cookie) and the
    /// probe used it: the SHA-256 key and MESSAGE-INTEGRITY-SHA256. Else MD5 and MESSAGE-INTEGRITY.
    pub sha256: bool,
    /// The relayed address (XOR-RELAYED-ADDRESS).
    pub relayed: Option<SocketAddr>,
    /// The client's address as the server saw it (XOR-MAPPED-ADDRESS).
    pub mapped: Option<SocketAddr>,
    /// The allocation's lifetime.
    pub lifetime: Option<Duration>,
    /// Whether CreatePermission succeeded.
    pub permission: bool,
    /// Whether ChannelBind succeeded.
    pub channel: bool,
    /// The peer socket's address as the relay saw it.
    pub peer: Option<SocketAddr>,
    /// The round trip peer, relay, client, relay, peer with indications.
    pub rtt_indication: Option<Duration>,
    /// The same on the channel.
    pub rtt_channel: Option<Duration>,
    /// Whether the allocation was released (Refresh with LIFETIME 0 answered).
    pub released: bool,
    /// Why it failed, if it did.
    pub failure: Option<TurnFailure>,
}

impl TurnReport {
    /// Whether every step succeeded.
    pub fn ok(&self) -> bool {
        self.failure.is_none() && self.rtt_indication.is_some() && self.rtt_channel.is_some()
    }
}

/// A request in flight.
#[derive(Debug)]
struct Pending {
    step: TurnStep,
    tid: [u8; 12],
    request: Vec<u8>,
    authenticated: bool,
    timer: Retransmit,
}

/// A round trip in flight.
#[derive(Debug)]
struct Trip {
    step: TurnStep,
    token: [u8; 8],
    /// When each ping left the peer, by sequence number.
    sent: Vec<Instant>,
    timer: Retransmit,
}

/// The TURN check as a state machine. See the [module docs](self) and
/// [`super`] for the drive contract.
#[derive(Debug)]
pub struct TurnProbe {
    config: TurnProbeConfig,
    rng: Rng,
    framer: Option<StreamFramer>,
    nonce: Option<String>,
    key: Option<SessionKey>,
    /// The PASSWORD-ALGORITHMS the server offered, echoed in every request when SHA-256 is used.
    offered: Option<Vec<u8>>,
    stale: u8,
    pending: Option<Pending>,
    trip: Option<Trip>,
    out: VecDeque<TurnTransmit>,
    report: TurnReport,
    done: bool,
}

impl TurnProbe {
    /// Starts the check at `now`: the first Allocate is ready to send.
    pub fn new(now: Instant, config: TurnProbeConfig, seed: &Seed) -> Self {
        let framer = (config.transport == TurnTransport::Stream).then(StreamFramer::new);
        let mut p = TurnProbe {
            config,
            rng: Rng::new(seed, "turn probe"),
            framer,
            nonce: None,
            key: None,
            offered: None,
            stale: 0,
            pending: None,
            trip: None,
            out: VecDeque::new(),
            report: TurnReport::default(),
            done: false,
        };
        p.request(now, TurnStep::Allocate);
        p
    }

    /// What the check found so far; final once [`Self::is_done`].
    pub fn report(&self) -> &TurnReport {
        &self.report
    }

    /// Whether the check has ended.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// The next thing to send.
    pub fn poll_transmit(&mut self) -> Option<TurnTransmit> {
        self.out.pop_front()
    }

    /// When [`Self::handle_timeout`] is due; `None` when done.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.done {
            return None;
        }
        let a = self.pending.as_ref().map(|p| p.timer.wake());
        let b = self.trip.as_ref().map(|t| t.timer.wake());
        a.into_iter().chain(b).min()
    }

    /// Retransmits, or gives up on, what is due at `now`. Safe to call early or twice.
    pub fn handle_timeout(&mut self, now: Instant) {
        if let Some(p) = self.pending.as_mut() {
            match p.timer.poll(now) {
                Due::Wait => {}
                Due::Resend => self.out.push_back(TurnTransmit::ToServer(p.request.clone())),
                Due::Expired => {
                    let step = p.step;
                    self.pending = None;
                    self.fail(now, TurnFailure::NoAnswer(step));
                }
            }
        }
        if let Some(t) = self.trip.as_mut() {
            match t.timer.poll(now) {
                Due::Wait => {}
                Due::Resend => self.ping(now),
                Due::Expired => {
                    let step = t.step;
                    self.trip = None;
                    self.fail(now, TurnFailure::NoRelayedData(step));
                }
            }
        }
    }

    /// Bytes from the server: one datagram, or what was read from the stream.
    pub fn handle_server_bytes(&mut self, now: Instant, bytes: &[u8]) {
        if self.done {
            return;
        }
        let Some(framer) = self.framer.as_mut() else {
            self.handle_message(now, bytes);
            return;
        };
        framer.push(bytes);
        let mut frames = Vec::new();
        loop {
            match framer.next_frame() {
                Ok(Some(r)) => frames.push(framer.buffer().get(r).unwrap_or_default().to_vec()),
                Ok(None) => break,
                Err(_) => {
                    self.report.failure.get_or_insert(TurnFailure::Desynchronized);
                    self.finish();
                    return;
                }
            }
        }
        framer.compact();
        for f in frames {
            self.handle_message(now, &f);
        }
    }

    /// The server closed the stream.
    pub fn handle_closed(&mut self, _now: Instant) {
        if self.done {
            return;
        }
        match self.pending.as_ref().map(|p| p.step) {
            // Closing the connection ends a stream allocation too (RFC 8656 §3.1).
            Some(TurnStep::Refresh) => self.report.released = true,
            step => {
                let step = step.or(self.trip.as_ref().map(|t| t.step)).unwrap_or(TurnStep::Allocate);
                self.report.failure.get_or_insert(TurnFailure::Closed(step));
            }
        }
        self.finish();
    }

    /// A datagram that arrived on the peer socket from `from`.
    pub fn handle_peer_datagram(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]) {
        let Some(t) = &self.trip else { return };
        let Some(seq) = ping_seq(bytes, &t.token) else { return };
        let Some(sent) = t.sent.get(usize::from(seq)) else { return };
        let rtt = now.saturating_duration_since(*sent);
        let step = t.step;
        self.trip = None;
        // `from` is the relay's socket; behind an --external-ip server it is not the advertised address.
        let _ = from;
        if step == TurnStep::IndicationRoundTrip {
            self.report.rtt_indication = Some(rtt);
            self.request(now, TurnStep::ChannelBind);
        } else {
            self.report.rtt_channel = Some(rtt);
            self.request(now, TurnStep::Refresh);
        }
    }

    fn handle_message(&mut self, now: Instant, bytes: &[u8]) {
        match classify(bytes) {
            PacketKind::Stun => {
                let Ok(v) = StunView::new_checked(bytes) else { return };
                if v.fingerprint_ok() == Some(false) {
                    return;
                }
                match v.class() {
                    Class::Success | Class::Error => self.on_response(now, &v),
                    Class::Indication if v.method() == method::DATA => {
                        let Some(peer) = v.xor_address(attr::XOR_PEER_ADDRESS) else { return };
                        let Some(data) = v.find(attr::DATA) else { return };
                        if self.is_ping(TurnStep::IndicationRoundTrip, data) {
                            self.report.peer = Some(peer);
                            self.send_indication(peer, data);
                        }
                    }
                    _ => {}
                }
            }
            PacketKind::ChannelData => {
                let Ok(cd) = ChannelData::new_checked(bytes) else { return };
                if cd.number() == CHANNEL && self.is_ping(TurnStep::ChannelRoundTrip, cd.payload()) {
                    let mut b = Vec::with_capacity(4 + cd.payload().len() + 3);
                    b.extend_from_slice(&CHANNEL.to_be_bytes());
                    b.extend_from_slice(&(cd.payload().len() as u16).to_be_bytes());
                    b.extend_from_slice(cd.payload());
                    if self.config.transport == TurnTransport::Stream {
                        // Over a stream ChannelData is padded to four bytes (RFC 8656 §12.5).
                        b.resize(b.len().next_multiple_of(4), 0);
                    }
                    self.out.push_back(TurnTransmit::ToServer(b));
                }
            }
            PacketKind::Other => {}
        }
    }

    /// Whether `data` is a ping of the round trip `step` in flight.
    fn is_ping(&self, step: TurnStep, data: &[u8]) -> bool {
        self.trip.as_ref().is_some_and(|t| t.step == step && ping_seq(data, &t.token).is_some())
    }

    fn on_response(&mut self, now: Instant, v: &StunView<'_>) {
        let Some(p) = self.pending.as_ref() else { return };
        if v.transaction_id() != p.tid || v.method() != p.step.method() {
            return;
        }
        let (step, authenticated) = (p.step, p.authenticated);
        self.pending = None;
        if v.class() == Class::Error {
            let (code, reason) = v.find(attr::ERROR_CODE).and_then(error_code).unwrap_or((0, String::new()));
            return self.on_error(now, v, step, authenticated, code, reason);
        }
        let sealed = |k: &SessionKey| if self.report.sha256 { v.check_integrity_sha256(k.key()) } else { v.check_integrity(k.key()) };
        if authenticated && !self.key.as_ref().is_some_and(sealed) {
            return self.fail(now, TurnFailure::BadIntegrity(step));
        }
        match step {
            TurnStep::Allocate => {
                let Some(relayed) = v.xor_address(attr::XOR_RELAYED_ADDRESS) else {
                    let reason = "no XOR-RELAYED-ADDRESS in the answer".into();
                    return self.fail(now, TurnFailure::Rejected { step, code: 0, reason });
                };
                self.report.relayed = Some(relayed);
                self.report.mapped = v.xor_address(attr::XOR_MAPPED_ADDRESS);
                self.report.lifetime = v
                    .find(attr::LIFETIME)
                    .and_then(|l| <[u8; 4]>::try_from(l).ok())
                    .map(|l| Duration::from_secs(u32::from_be_bytes(l).into()));
                self.request(now, TurnStep::CreatePermission);
            }
            TurnStep::CreatePermission => {
                self.report.permission = true;
                self.start_trip(now, TurnStep::IndicationRoundTrip);
            }
            TurnStep::ChannelBind => {
                self.report.channel = true;
                self.start_trip(now, TurnStep::ChannelRoundTrip);
            }
            TurnStep::Refresh => {
                self.report.released = true;
                self.finish();
            }
            TurnStep::IndicationRoundTrip | TurnStep::ChannelRoundTrip => {}
        }
    }

    fn on_error(&mut self, now: Instant, v: &StunView<'_>, step: TurnStep, authenticated: bool, code: u16, reason: String) {
        let text = |typ| v.find(typ).and_then(|t| std::str::from_utf8(t).ok()).map(str::to_owned);
        match code {
            401 if !authenticated => {
                let (Some(realm), Some(nonce)) = (text(attr::REALM), text(attr::NONCE)) else {
                    return self.fail(now, TurnFailure::Rejected { step, code, reason });
                };
                // RFC 8489 §9.2.3: SHA-256 when the server offers it, with the nonce cookie that says it did.
                let offered = v.find(attr::PASSWORD_ALGORITHMS).filter(|_| nonce.starts_with("obMatJos2"));
                self.report.sha256 = offered.is_some_and(|o| crate::stun::view::password_algorithms(o).any(|(a, p)| a == 2 && p.is_empty()));
                self.offered = offered.filter(|_| self.report.sha256).map(<[u8]>::to_vec);
                self.key = Some(self.key_for(&realm));
                self.report.realm = Some(realm);
                self.nonce = Some(nonce);
                self.request(now, step);
            }
            438 if self.stale < MAX_STALE => {
                self.stale += 1;
                if let Some(nonce) = text(attr::NONCE) {
                    self.nonce = Some(nonce);
                }
                if let Some(realm) = text(attr::REALM).filter(|r| Some(r) != self.report.realm.as_ref()) {
                    self.key = Some(self.key_for(&realm));
                    self.report.realm = Some(realm);
                }
                self.request(now, step);
            }
            401 | 441 => self.fail(now, TurnFailure::WrongCredentials),
            // The allocation is gone already: released all the same.
            437 if step == TurnStep::Refresh => {
                self.report.released = true;
                self.finish();
            }
            _ => self.fail(now, TurnFailure::Rejected { step, code, reason }),
        }
    }

    /// The long-term key for `realm` with the algorithm in use.
    fn key_for(&self, realm: &str) -> SessionKey {
        let (user, pass) = (&self.config.username, &self.config.password);
        if self.report.sha256 {
            SessionKey::new(&long_term_key_sha256(user, realm, pass), true)
        } else {
            SessionKey::new(&long_term_key(user, realm, pass), false)
        }
    }

    /// Records the failure; releases the allocation if there is one, else ends.
    fn fail(&mut self, now: Instant, failure: TurnFailure) {
        let step = match &failure {
            TurnFailure::NoAnswer(s) | TurnFailure::BadIntegrity(s) | TurnFailure::NoRelayedData(s) | TurnFailure::Closed(s) => Some(*s),
            TurnFailure::Rejected { step, .. } => Some(*step),
            TurnFailure::WrongCredentials | TurnFailure::Desynchronized => None,
        };
        self.report.failure.get_or_insert(failure);
        self.trip = None;
        if self.report.relayed.is_some() && step != Some(TurnStep::Refresh) && step != Some(TurnStep::Allocate) {
            self.request(now, TurnStep::Refresh);
        } else {
            self.finish();
        }
    }

    fn finish(&mut self) {
        self.pending = None;
        self.trip = None;
        self.done = true;
    }

    /// Where the permission goes: the peer socket's port at our public IP (a
    /// permission is for the IP only; the peer's packets leave through the same NAT).
    fn permission_peer(&self) -> SocketAddr {
        let local = self.config.peer_local;
        match self.report.mapped {
            Some(m) if m.is_ipv4() == local.is_ipv4() => SocketAddr::new(m.ip(), local.port()),
            _ => local,
        }
    }

    fn request(&mut self, now: Instant, step: TurnStep) {
        let mut tid = [0u8; 12];
        self.rng.fill(&mut tid);
        let mut b = header(step.method(), Class::Request, &tid);
        let mut addr = [0u8; 20];
        match step {
            TurnStep::Allocate => message::append_attribute(&mut b, attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]),
            TurnStep::CreatePermission => {
                let n = encode_xor_address(self.permission_peer(), &tid, &mut addr);
                message::append_attribute(&mut b, attr::XOR_PEER_ADDRESS, &addr[..n]);
            }
            TurnStep::ChannelBind => {
                let peer = self.report.peer.unwrap_or_else(|| self.permission_peer());
                message::append_attribute(&mut b, attr::CHANNEL_NUMBER, &[(CHANNEL >> 8) as u8, CHANNEL as u8, 0, 0]);
                let n = encode_xor_address(peer, &tid, &mut addr);
                message::append_attribute(&mut b, attr::XOR_PEER_ADDRESS, &addr[..n]);
            }
            TurnStep::Refresh => message::append_attribute(&mut b, attr::LIFETIME, &[0, 0, 0, 0]),
            TurnStep::IndicationRoundTrip | TurnStep::ChannelRoundTrip => return,
        }
        let authenticated = match (&self.report.realm, &self.nonce, &self.key) {
            (Some(realm), Some(nonce), Some(key)) => {
                message::append_attribute(&mut b, attr::USERNAME, self.config.username.as_bytes());
                message::append_attribute(&mut b, attr::REALM, realm.as_bytes());
                message::append_attribute(&mut b, attr::NONCE, nonce.as_bytes());
                match &self.offered {
                    Some(offered) if self.report.sha256 => {
                        message::append_attribute(&mut b, attr::PASSWORD_ALGORITHMS, offered);
                        message::append_attribute(&mut b, attr::PASSWORD_ALGORITHM, &[0, 2, 0, 0]);
                        message::append_integrity_sha256(&mut b, key.key());
                    }
                    _ => message::append_integrity(&mut b, key.key()),
                }
                true
            }
            _ => false,
        };
        message::append_fingerprint(&mut b);
        self.out.push_back(TurnTransmit::ToServer(b.clone()));
        let reliable = self.config.transport == TurnTransport::Stream;
        let timer = Retransmit::start(now, self.config.timing, reliable);
        self.pending = Some(Pending { step, tid, request: b, authenticated, timer });
    }

    fn start_trip(&mut self, now: Instant, step: TurnStep) {
        let mut token = [0u8; 8];
        self.rng.fill(&mut token);
        // The peer leg is UDP whatever the client's transport: it is retransmitted.
        let timer = Retransmit::start(now, self.config.timing, false);
        self.trip = Some(Trip { step, token, sent: Vec::new(), timer });
        self.ping(now);
    }

    /// The peer sends the next ping to the relayed address.
    fn ping(&mut self, now: Instant) {
        let (Some(t), Some(relayed)) = (self.trip.as_mut(), self.report.relayed) else { return };
        if t.sent.len() >= MAX_PINGS {
            return;
        }
        let mut payload = PING.to_vec();
        payload.extend_from_slice(&t.token);
        payload.push(t.sent.len() as u8);
        t.sent.push(now);
        self.out.push_back(TurnTransmit::FromPeer { to: relayed, payload });
    }

    /// The client sends `data` back to `peer` through the relay in a Send indication.
    fn send_indication(&mut self, peer: SocketAddr, data: &[u8]) {
        let mut tid = [0u8; 12];
        self.rng.fill(&mut tid);
        let mut b = header(method::SEND, Class::Indication, &tid);
        let mut addr = [0u8; 20];
        let n = encode_xor_address(peer, &tid, &mut addr);
        message::append_attribute(&mut b, attr::XOR_PEER_ADDRESS, &addr[..n]);
        message::append_attribute(&mut b, attr::DATA, data);
        self.out.push_back(TurnTransmit::ToServer(b));
    }
}

/// The sequence number of a ping with `token`, if `data` is one.
fn ping_seq(data: &[u8], token: &[u8; 8]) -> Option<u8> {
    match data {
        [p @ .., seq] if p.len() == PING.len() + 8 && p.starts_with(PING) && p[PING.len()..] == token[..] => Some(*seq),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{AllocationId, Client, ConnId, Via};
    use crate::turn::{Output, TurnConfig, TurnServer, RELAY_HEADROOM, RELAY_TAILROOM};

    const SERVER: &str = "127.0.0.1:3478";
    const CLIENT: &str = "127.0.0.1:5000";
    const PEER: &str = "127.0.0.1:6000";
    const RELAY: &str = "127.0.0.1:50000";

    /// A real `TurnServer` and a probe wired without sockets, on simulated time.
    struct Rig {
        server: TurnServer,
        probe: TurnProbe,
        client: Client,
        now: Instant,
        /// Peer datagrams to drop on their way to the relay.
        lose_pings: usize,
        released: usize,
        server_silent: bool,
    }

    impl Rig {
        fn new(transport: TurnTransport, user: &str, pass: &str) -> Rig {
            let now = crate::time::test_start();
            let mut cfg = TurnConfig { realm: "probe.test".into(), users: vec![("u".into(), "p".into())], ..TurnConfig::default() };
            cfg.peer_policy.allow_loopback = true;
            let server = TurnServer::new(cfg, now, 1_700_000_000, &[5; 32]);
            let config = TurnProbeConfig {
                transport,
                username: user.into(),
                password: pass.into(),
                peer_local: PEER.parse().unwrap(),
                timing: Timing::default(),
            };
            let via = match transport {
                TurnTransport::Datagram => Via::Udp(SERVER.parse().unwrap()),
                TurnTransport::Stream => Via::Tcp(ConnId(1)),
            };
            let probe = TurnProbe::new(now, config, &[6; 32]);
            Rig { server, probe, client: Client { via, remote: CLIENT.parse().unwrap() }, now, lose_pings: 0, released: 0, server_silent: false }
        }

        fn deliver(&mut self, bytes: &[u8]) {
            if matches!(self.client.via, Via::Tcp(_)) {
                // A stream delivers in pieces of any size.
                for piece in bytes.chunks(7) {
                    self.probe.handle_server_bytes(self.now, piece);
                }
            } else {
                self.probe.handle_server_bytes(self.now, bytes);
            }
        }

        /// Runs until the probe is done; returns its report.
        fn run(&mut self) -> TurnReport {
            for _ in 0..10_000 {
                let mut busy = false;
                while let Some(t) = self.probe.poll_transmit() {
                    busy = true;
                    match t {
                        TurnTransmit::ToServer(bytes) if !self.server_silent => {
                            if let Some(route) = self.server.handle_client(self.now, self.client, &bytes, 0..bytes.len()) {
                                assert_eq!(route.peer, PEER.parse().unwrap());
                                self.probe.handle_peer_datagram(self.now, route.relay, &bytes[route.range]);
                            }
                        }
                        TurnTransmit::ToServer(_) => {}
                        TurnTransmit::FromPeer { to, payload } => {
                            assert_eq!(to, RELAY.parse().unwrap());
                            if self.lose_pings > 0 {
                                self.lose_pings -= 1;
                                continue;
                            }
                            let mut buf = vec![0u8; RELAY_HEADROOM + payload.len() + RELAY_TAILROOM];
                            buf[RELAY_HEADROOM..RELAY_HEADROOM + payload.len()].copy_from_slice(&payload);
                            let range = RELAY_HEADROOM..RELAY_HEADROOM + payload.len();
                            if let Some(route) = self.server.handle_peer(self.now, to, PEER.parse().unwrap(), &mut buf, range) {
                                assert_eq!(route.to, self.client);
                                let out = buf[route.range].to_vec();
                                self.deliver(&out);
                            }
                        }
                    }
                }
                while let Some(o) = self.server.poll_output() {
                    busy = true;
                    match o {
                        Output::Transmit(t) => self.deliver(&t.payload),
                        Output::BindRelay { allocation, .. } => self.bound(allocation),
                        Output::ReleaseRelay { .. } => self.released += 1,
                        _ => {}
                    }
                }
                if self.probe.is_done() {
                    return self.probe.report().clone();
                }
                if !busy {
                    let next = [self.probe.poll_timeout(), self.server.poll_timeout()].into_iter().flatten().min().expect("a timer");
                    self.now = self.now.max(next);
                    self.probe.handle_timeout(self.now);
                    self.server.handle_timeout(self.now);
                }
            }
            panic!("the probe did not finish");
        }

        fn bound(&mut self, allocation: AllocationId) {
            self.server.handle_relay_bound(self.now, allocation, Some(RELAY.parse().unwrap()), None);
        }
    }

    #[test]
    fn checks_a_real_turn_server_over_udp_and_over_a_stream() {
        for transport in [TurnTransport::Datagram, TurnTransport::Stream] {
            let mut rig = Rig::new(transport, "u", "p");
            let r = rig.run();
            assert!(r.ok(), "{transport:?}: {r:?}");
            assert_eq!(r.relayed, Some(RELAY.parse().unwrap()));
            assert_eq!(r.mapped, Some(CLIENT.parse().unwrap()));
            assert_eq!(r.peer, Some(PEER.parse().unwrap()));
            assert_eq!(r.realm.as_deref(), Some("probe.test"));
            assert!(r.permission && r.channel && r.released);
            assert_eq!(r.rtt_indication, Some(Duration::ZERO), "simulated time stands still without loss");
            assert_eq!(rig.released, 1, "the relay socket was given back");
            assert_eq!(rig.server.allocation_count(), 0);
            let st = rig.server.stats();
            assert_eq!((st.to_peer_packets, st.to_client_packets), (2, 2), "{st:?}");
        }
    }

    #[test]
    fn lost_pings_are_sent_again_and_the_rtt_is_that_of_the_one_that_arrived() {
        let mut rig = Rig::new(TurnTransport::Datagram, "u", "p");
        rig.lose_pings = 2;
        let r = rig.run();
        assert!(r.ok(), "{r:?}");
        // Pings at 0, 0.3 and 0.9 s; the third one went round at once.
        assert_eq!(r.rtt_indication, Some(Duration::ZERO));
    }

    #[test]
    fn wrong_credentials_are_said_plainly() {
        for (user, pass) in [("u", "wrong"), ("nobody", "p")] {
            let mut rig = Rig::new(TurnTransport::Datagram, user, pass);
            let r = rig.run();
            assert_eq!(r.failure, Some(TurnFailure::WrongCredentials), "{user}: {r:?}");
            assert_eq!(r.relayed, None);
            assert_eq!(rig.server.allocation_count(), 0);
        }
    }

    #[test]
    fn a_silent_server_is_no_answer_to_allocate() {
        let mut rig = Rig::new(TurnTransport::Datagram, "u", "p");
        rig.server_silent = true;
        let t0 = rig.now;
        let r = rig.run();
        assert_eq!(r.failure, Some(TurnFailure::NoAnswer(TurnStep::Allocate)));
        assert_eq!(rig.now - t0, Timing::default().timeout);
    }

    #[test]
    fn hostile_bytes_never_panic() {
        let now = crate::time::test_start();
        let config = TurnProbeConfig {
            transport: TurnTransport::Stream,
            username: "u".into(),
            password: "p".into(),
            peer_local: PEER.parse().unwrap(),
            timing: Timing::default(),
        };
        let mut p = TurnProbe::new(now, config.clone(), &[1; 32]);
        let req = match p.poll_transmit() {
            Some(TurnTransmit::ToServer(b)) => b,
            other => panic!("{other:?}"),
        };
        let tid: [u8; 12] = req[8..20].try_into().unwrap();
        // A 401 without REALM or NONCE, an error with a broken ERROR-CODE: a clear rejection.
        let mut e = header(method::ALLOCATE, Class::Error, &tid);
        message::append_attribute(&mut e, attr::ERROR_CODE, &[0, 0, 4, 1]);
        p.handle_server_bytes(now, &e);
        assert!(matches!(p.report().failure, Some(TurnFailure::Rejected { code: 401, .. })), "{:?}", p.report());
        // Garbage on the stream desynchronizes it.
        let mut p = TurnProbe::new(now, config.clone(), &[1; 32]);
        p.handle_server_bytes(now, b"\x16\x03\x01 not TURN");
        assert_eq!(p.report().failure, Some(TurnFailure::Desynchronized));
        assert!(p.is_done());
        // Over datagrams, junk of every shape is ignored; so are stray peer datagrams.
        let mut p = TurnProbe::new(now, TurnProbeConfig { transport: TurnTransport::Datagram, ..config }, &[1; 32]);
        for junk in [&b""[..], &[0x40, 0, 0, 9, 1], &[0x00, 0x17, 0, 0], &[0xff; 40], &req[..30]] {
            p.handle_server_bytes(now, junk);
            p.handle_peer_datagram(now, SERVER.parse().unwrap(), junk);
        }
        let mut ok = header(method::ALLOCATE, Class::Success, &tid);
        message::append_attribute(&mut ok, attr::XOR_RELAYED_ADDRESS, &[0, 1]);
        p.handle_server_bytes(now, &ok);
        assert!(matches!(p.report().failure, Some(TurnFailure::Rejected { code: 0, .. })), "{:?}", p.report());
        assert!(p.is_done());
    }
}
