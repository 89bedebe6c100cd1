//! RFC 5780 NAT behaviour discovery, the client side.
//!
//! Two local UDP sockets, so that one test's packets cannot open the NAT's
//! filter for another's:
//!
//! - the **mapping** socket sends test I to the server's primary address,
//!   test II to its alternate IP (primary port) and, when the mapped address
//!   changed, test III to the alternate IP and port (§4.3). The same mapped
//!   address throughout is endpoint-independent mapping; a new one for a new
//!   IP only is address-dependent; a new one for a new port too is address-
//!   and port-dependent.
//! - the **filtering** socket only ever sends to the primary address, asking
//!   with CHANGE-REQUEST to be answered from the other IP and port (test II),
//!   then, if that answer never arrives, from the other port only (test III)
//!   (§4.4). An answer that arrives is a filter that let it in; silence until
//!   the timeout is a filter that did not.
//!
//! Filtering starts once test I shows the server has a second address
//! (OTHER-ADDRESS); both sockets' tests then run side by side.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Instant;

use super::{error_code, header, plain_address, Due, NatType, Retransmit, Timing};
use crate::rng::{Rng, Seed};
use crate::stun::message;
use crate::stun::view::{attr, decode_xor_address, method, Class, StunView};

/// CHANGED-ADDRESS (RFC 3489), which older servers send instead of OTHER-ADDRESS.
const CHANGED_ADDRESS: u16 = 0x0005;

/// One of the probe's two local sockets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NatSocket {
    /// Sends the mapping tests (to three server addresses).
    Mapping,
    /// Sends the filtering tests (to the primary address only).
    Filtering,
}

/// A datagram to send from one of the probe's sockets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatTransmit {
    /// The socket it leaves from.
    pub socket: NatSocket,
    /// Where it goes.
    pub to: SocketAddr,
    /// The STUN request.
    pub payload: Vec<u8>,
}

/// A NAT's mapping or filtering behaviour (RFC 4787, RFC 5780).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Behaviour {
    /// The same for every destination (or source).
    EndpointIndependent,
    /// Depends on the remote IP address.
    AddressDependent,
    /// Depends on the remote IP address and port.
    AddressAndPortDependent,
}

impl Behaviour {
    /// How the seeds write it: "endpoint-independent".
    pub fn name(self) -> &'static str {
        match self {
            Behaviour::EndpointIndependent => "endpoint-independent",
            Behaviour::AddressDependent => "address-dependent",
            Behaviour::AddressAndPortDependent => "address- and port-dependent",
        }
    }

    /// A short stable identifier, for JSON.
    pub fn id(self) -> &'static str {
        match self {
            Behaviour::EndpointIndependent => "endpoint-independent",
            Behaviour::AddressDependent => "address-dependent",
            Behaviour::AddressAndPortDependent => "address-and-port-dependent",
        }
    }
}

/// Something that kept the probe from a full answer.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum NatProblem {
    /// The server did not answer a plain Binding request.
    NoAnswer,
    /// The server answered a plain Binding request with this error.
    BindingRefused(u16, String),
    /// The server has no second address (no OTHER-ADDRESS in its answer): only
    /// the mapped address can be known.
    NoOtherAddress,
    /// CHANGE-REQUEST was refused with this error (420: no second address).
    ChangeRequestRefused(u16, String),
    /// The answer to a CHANGE-REQUEST came from the address asked, not the
    /// other one: the server ignores CHANGE-REQUEST, so filtering is unknown.
    ChangeRequestIgnored,
    /// The server's alternate address did not answer the mapping test sent there.
    AlternateSilent(SocketAddr),
}

/// What the probe found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatReport {
    /// The server's primary address.
    pub server: SocketAddr,
    /// The mapping socket's local address, as the shell gave it.
    pub local: Option<SocketAddr>,
    /// The public address the server saw (test I).
    pub mapped: Option<SocketAddr>,
    /// The server's alternate address (OTHER-ADDRESS).
    pub other_address: Option<SocketAddr>,
    /// Whether the mapped address differs from the local one (`None`: local unknown, or no answer).
    pub behind_nat: Option<bool>,
    /// The mapping behaviour, once known.
    pub mapping: Option<Behaviour>,
    /// The filtering behaviour, once known.
    pub filtering: Option<Behaviour>,
    /// Every address an answer came from (RESPONSE-ORIGIN as seen), in order.
    pub answered_from: Vec<SocketAddr>,
    /// What kept the answer from being complete.
    pub problems: Vec<NatProblem>,
}

impl NatReport {
    /// The classic name, when the behaviours it needs are known.
    pub fn nat_type(&self) -> Option<NatType> {
        NatType::classify(self.behind_nat, self.mapping, self.filtering)
    }

    /// Whether the server answered at all.
    pub fn reached(&self) -> bool {
        self.mapped.is_some()
    }
}

/// The tests, in RFC 5780's numbering.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Test {
    MappingI,
    MappingII,
    MappingIII,
    FilteringII,
    FilteringIII,
}

/// A request in flight.
#[derive(Debug, Clone)]
struct InFlight {
    test: Test,
    tid: [u8; 12],
    to: SocketAddr,
    request: Vec<u8>,
    timer: Retransmit,
}

/// The answer to a request, checked.
#[derive(Debug)]
enum Answer {
    Success { mapped: Option<SocketAddr>, other: Option<SocketAddr> },
    Error(u16, String),
}

/// RFC 5780 NAT behaviour discovery against one server, as a state machine.
/// See the [module docs](self) for the tests and [`super`] for the drive contract.
#[derive(Debug)]
pub struct NatProbe {
    timing: Timing,
    rng: Rng,
    /// At most one request in flight per socket: index 0 mapping, 1 filtering.
    slots: [Option<InFlight>; 2],
    out: VecDeque<NatTransmit>,
    report: NatReport,
    /// Mapped addresses of tests I and II.
    m1: Option<SocketAddr>,
    m2: Option<SocketAddr>,
}

impl NatProbe {
    /// Starts the probe of `server` at `now`: test I is ready to send.
    /// `mapping_local` is the mapping socket's local address (with a real IP,
    /// not the unspecified one), to tell whether there is a NAT at all.
    pub fn new(now: Instant, server: SocketAddr, mapping_local: Option<SocketAddr>, timing: Timing, seed: &Seed) -> Self {
        let mut p = NatProbe {
            timing,
            rng: Rng::new(seed, "nat probe transaction ids"),
            slots: [None, None],
            out: VecDeque::new(),
            report: NatReport {
                server,
                local: mapping_local,
                mapped: None,
                other_address: None,
                behind_nat: None,
                mapping: None,
                filtering: None,
                answered_from: Vec::new(),
                problems: Vec::new(),
            },
            m1: None,
            m2: None,
        };
        p.send(now, Test::MappingI, server, 0);
        p
    }

    /// What the probe found so far; final once [`Self::is_done`].
    pub fn report(&self) -> &NatReport {
        &self.report
    }

    /// Whether every test has ended.
    pub fn is_done(&self) -> bool {
        self.slots.iter().all(Option::is_none)
    }

    /// The next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<NatTransmit> {
        self.out.pop_front()
    }

    /// When [`Self::handle_timeout`] is due; `None` when done.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.slots.iter().flatten().map(|f| f.timer.wake()).min()
    }

    /// Retransmits, or gives up on, what is due at `now`. Safe to call early or twice.
    pub fn handle_timeout(&mut self, now: Instant) {
        for slot in 0..2 {
            let Some(f) = self.slots[slot].as_mut() else { continue };
            match f.timer.poll(now) {
                Due::Wait => {}
                Due::Resend => {
                    let t = NatTransmit { socket: socket_of(slot), to: f.to, payload: f.request.clone() };
                    self.out.push_back(t);
                }
                Due::Expired => {
                    let test = f.test;
                    self.slots[slot] = None;
                    self.expired(now, test);
                }
            }
        }
    }

    /// A datagram from `from` arrived on `socket`. Anything that is not the
    /// answer to the request in flight on that socket is ignored.
    pub fn handle_input(&mut self, now: Instant, socket: NatSocket, from: SocketAddr, bytes: &[u8]) {
        let slot = match socket {
            NatSocket::Mapping => 0,
            NatSocket::Filtering => 1,
        };
        let Some(f) = &self.slots[slot] else { return };
        let Some(answer) = check_answer(bytes, &f.tid) else { return };
        let (test, to) = (f.test, f.to);
        self.slots[slot] = None;
        if !self.report.answered_from.contains(&from) && self.report.answered_from.len() < 8 {
            self.report.answered_from.push(from);
        }
        match answer {
            Answer::Success { mapped, other } => self.success(now, test, to, from, mapped, other),
            Answer::Error(code, reason) => self.error(test, code, reason),
        }
    }

    fn send(&mut self, now: Instant, test: Test, to: SocketAddr, change: u8) {
        let mut tid = [0u8; 12];
        self.rng.fill(&mut tid);
        let mut request = header(method::BINDING, Class::Request, &tid);
        if change != 0 {
            message::append_attribute(&mut request, attr::CHANGE_REQUEST, &[0, 0, 0, change]);
        }
        message::append_fingerprint(&mut request);
        let slot = match test {
            Test::MappingI | Test::MappingII | Test::MappingIII => 0,
            Test::FilteringII | Test::FilteringIII => 1,
        };
        self.out.push_back(NatTransmit { socket: socket_of(slot), to, payload: request.clone() });
        let timer = Retransmit::start(now, self.timing, false);
        self.slots[slot] = Some(InFlight { test, tid, to, request, timer });
    }

    fn success(&mut self, now: Instant, test: Test, to: SocketAddr, from: SocketAddr, mapped: Option<SocketAddr>, other: Option<SocketAddr>) {
        let server = self.report.server;
        match test {
            Test::MappingI => {
                let Some(m1) = mapped else {
                    self.report.problems.push(NatProblem::BindingRefused(0, "no mapped address in the answer".into()));
                    return;
                };
                self.m1 = Some(m1);
                self.report.mapped = Some(m1);
                self.report.behind_nat = self.report.local.map(|l| l != m1);
                if self.report.behind_nat == Some(false) {
                    // RFC 5780 §4.3: the mapped address is the local one: no NAT, so no mapping to vary.
                    self.report.mapping = Some(Behaviour::EndpointIndependent);
                }
                match other {
                    Some(o) if o.ip() != server.ip() && o.port() != server.port() && o.is_ipv4() == server.is_ipv4() => {
                        self.report.other_address = Some(o);
                        self.send(now, Test::MappingII, SocketAddr::new(o.ip(), server.port()), 0);
                        self.send(now, Test::FilteringII, server, 0x06);
                    }
                    _ => self.report.problems.push(NatProblem::NoOtherAddress),
                }
            }
            Test::MappingII => {
                let Some(m2) = mapped else { return };
                self.m2 = Some(m2);
                if Some(m2) == self.m1 {
                    self.report.mapping = Some(Behaviour::EndpointIndependent);
                } else if let Some(o) = self.report.other_address {
                    self.send(now, Test::MappingIII, o, 0);
                }
            }
            Test::MappingIII => {
                let Some(m3) = mapped else { return };
                self.report.mapping = Some(if Some(m3) == self.m2 {
                    Behaviour::AddressDependent
                } else {
                    Behaviour::AddressAndPortDependent
                });
            }
            Test::FilteringII | Test::FilteringIII => {
                // The answer must come from where it was asked to: else the server ignored CHANGE-REQUEST.
                let changed_ip = from.ip() != to.ip();
                let changed_port = from.port() != to.port();
                match (test, changed_ip, changed_port) {
                    (Test::FilteringII, true, true) => self.report.filtering = Some(Behaviour::EndpointIndependent),
                    (Test::FilteringIII, false, true) => self.report.filtering = Some(Behaviour::AddressDependent),
                    _ => self.report.problems.push(NatProblem::ChangeRequestIgnored),
                }
            }
        }
    }

    fn error(&mut self, test: Test, code: u16, reason: String) {
        match test {
            Test::MappingI => self.report.problems.push(NatProblem::BindingRefused(code, reason)),
            Test::FilteringII | Test::FilteringIII => self.report.problems.push(NatProblem::ChangeRequestRefused(code, reason)),
            // A plain Binding request refused at the alternate address: it cannot tell the mapping.
            Test::MappingII | Test::MappingIII => {}
        }
    }

    fn expired(&mut self, now: Instant, test: Test) {
        let server = self.report.server;
        match test {
            Test::MappingI => {
                self.report.problems.push(NatProblem::NoAnswer);
            }
            Test::MappingII | Test::MappingIII => {
                let to = match (test, self.report.other_address) {
                    (Test::MappingII, Some(o)) => SocketAddr::new(o.ip(), server.port()),
                    (_, Some(o)) => o,
                    (_, None) => server,
                };
                self.report.problems.push(NatProblem::AlternateSilent(to));
            }
            // Silence is the answer of the filtering tests: a filter dropped what came from elsewhere.
            Test::FilteringII => self.send(now, Test::FilteringIII, server, 0x02),
            Test::FilteringIII => self.report.filtering = Some(Behaviour::AddressAndPortDependent),
        }
    }
}

fn socket_of(slot: usize) -> NatSocket {
    if slot == 0 {
        NatSocket::Mapping
    } else {
        NatSocket::Filtering
    }
}

/// The answer to the Binding request with `tid`, if `bytes` is one.
fn check_answer(bytes: &[u8], tid: &[u8; 12]) -> Option<Answer> {
    let v = StunView::new_checked(bytes).ok()?;
    if v.transaction_id() != *tid || v.method() != method::BINDING || v.fingerprint_ok() == Some(false) {
        return None;
    }
    match v.class() {
        Class::Success => {
            let mapped = v
                .find(attr::XOR_MAPPED_ADDRESS)
                .and_then(|a| decode_xor_address(a, tid))
                .or_else(|| v.find(attr::MAPPED_ADDRESS).and_then(plain_address));
            let other = v.find(attr::OTHER_ADDRESS).or_else(|| v.find(CHANGED_ADDRESS)).and_then(plain_address);
            Some(Answer::Success { mapped, other })
        }
        Class::Error => {
            let (code, reason) = v.find(attr::ERROR_CODE).and_then(error_code).unwrap_or((0, String::new()));
            Some(Answer::Error(code, reason))
        }
        Class::Request | Class::Indication => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stun::{NatDiscovery, StunServer};
    use std::collections::HashMap;
    use std::time::Duration;

    const SERVER: &str = "192.0.2.10:3478";
    const ALT_IP: &str = "192.0.2.20";

    /// A simulated NAT between the probe's two sockets and a real `StunServer`
    /// answering on four addresses, on simulated time.
    struct Net {
        stun: StunServer,
        nat: Option<NatDiscovery>,
        mapping: Behaviour,
        filtering: Behaviour,
        /// (socket, destination as the mapping's key) -> public address.
        maps: HashMap<(NatSocket, SocketAddr), SocketAddr>,
        /// (socket, remote) pairs sent to: the filter's state.
        sent: Vec<(NatSocket, SocketAddr)>,
        next_port: u16,
        public_ip: &'static str,
        /// Whether the server answers from the address asked, whatever CHANGE-REQUEST says.
        ignores_change: bool,
    }

    impl Net {
        fn new(mapping: Behaviour, filtering: Behaviour) -> Self {
            Net {
                stun: StunServer::new(),
                nat: Some(NatDiscovery::new(SERVER.parse().unwrap(), ALT_IP.parse().unwrap())),
                mapping,
                filtering,
                maps: HashMap::new(),
                sent: Vec::new(),
                next_port: 40000,
                public_ip: "203.0.113.9",
                ignores_change: false,
            }
        }

        fn local(socket: NatSocket) -> SocketAddr {
            match socket {
                NatSocket::Mapping => "10.0.0.2:5000".parse().unwrap(),
                NatSocket::Filtering => "10.0.0.2:5001".parse().unwrap(),
            }
        }

        /// The public address of `socket` toward `to`.
        fn map(&mut self, socket: NatSocket, to: SocketAddr) -> SocketAddr {
            let key = match self.mapping {
                Behaviour::EndpointIndependent => SocketAddr::new([0, 0, 0, 0].into(), 0),
                Behaviour::AddressDependent => SocketAddr::new(to.ip(), 0),
                Behaviour::AddressAndPortDependent => to,
            };
            if self.public_ip == "none" {
                return Net::local(socket);
            }
            let (ip, next) = (self.public_ip, &mut self.next_port);
            *self.maps.entry((socket, key)).or_insert_with(|| {
                *next += 1;
                SocketAddr::new(ip.parse().unwrap(), *next)
            })
        }

        fn lets_in(&self, socket: NatSocket, from: SocketAddr) -> bool {
            self.sent.iter().any(|(s, to)| {
                *s == socket
                    && match self.filtering {
                        Behaviour::EndpointIndependent => true,
                        Behaviour::AddressDependent => to.ip() == from.ip(),
                        Behaviour::AddressAndPortDependent => *to == from,
                    }
            })
        }

        /// Runs the probe to its end; returns its report and how long it took.
        fn run(&mut self) -> (NatReport, Duration) {
            let t0 = crate::time::test_start();
            let mut p = NatProbe::new(t0, SERVER.parse().unwrap(), Some(Net::local(NatSocket::Mapping)), Timing::default(), &[3; 32]);
            let mut now = t0;
            for _ in 0..1000 {
                while let Some(t) = p.poll_transmit() {
                    let public = self.map(t.socket, t.to);
                    self.sent.push((t.socket, t.to));
                    let Some((resp, source, _to)) = self.answer(public, t.to, &t.payload) else { continue };
                    if self.lets_in(t.socket, source) {
                        p.handle_input(now, t.socket, source, &resp);
                    }
                }
                let Some(next) = p.poll_timeout() else { return (p.report().clone(), now - t0) };
                now = next;
                p.handle_timeout(now);
            }
            panic!("the probe did not finish");
        }

        fn answer(&mut self, from: SocketAddr, local: SocketAddr, req: &[u8]) -> Option<(Vec<u8>, SocketAddr, SocketAddr)> {
            let v = StunView::new_checked(req).ok()?;
            match self.nat {
                Some(n) if n.serves(local) => {
                    let (resp, source, to) = self.stun.answer_discovery(&v, &n, local, from, true);
                    Some((resp, if self.ignores_change { local } else { source }, to))
                }
                Some(_) => None,
                None if local == SERVER.parse().unwrap() => self.stun.handle_packet(from, req).map(|r| (r, local, from)),
                None => None,
            }
        }
    }

    use Behaviour::*;

    #[test]
    fn finds_every_combination_of_mapping_and_filtering() {
        for mapping in [EndpointIndependent, AddressDependent, AddressAndPortDependent] {
            for filtering in [EndpointIndependent, AddressDependent, AddressAndPortDependent] {
                let (r, took) = Net::new(mapping, filtering).run();
                assert_eq!((r.mapping, r.filtering), (Some(mapping), Some(filtering)), "{r:?}");
                assert_eq!(r.behind_nat, Some(true));
                assert!(r.problems.is_empty(), "{r:?}");
                assert_eq!(r.other_address, Some("192.0.2.20:3479".parse().unwrap()));
                // Only filtering waits for silence: one timeout per filtered test.
                let silences = match filtering {
                    EndpointIndependent => 0,
                    AddressDependent => 1,
                    AddressAndPortDependent => 2,
                };
                assert_eq!(took, Timing::default().timeout * silences, "{mapping:?}/{filtering:?}");
                let name = r.nat_type().unwrap();
                match (mapping, filtering) {
                    (EndpointIndependent, EndpointIndependent) => assert_eq!(name, NatType::FullCone),
                    (EndpointIndependent, AddressDependent) => assert_eq!(name, NatType::RestrictedCone),
                    (EndpointIndependent, AddressAndPortDependent) => assert_eq!(name, NatType::PortRestrictedCone),
                    _ => assert_eq!(name, NatType::Symmetric),
                }
            }
        }
    }

    #[test]
    fn no_nat_is_the_open_internet() {
        let mut net = Net::new(EndpointIndependent, EndpointIndependent);
        net.public_ip = "none";
        let (r, _) = net.run();
        assert_eq!(r.behind_nat, Some(false));
        assert_eq!(r.mapped, Some(Net::local(NatSocket::Mapping)));
        assert_eq!(r.nat_type(), Some(NatType::OpenInternet));
        // Answers came from the primary, the alternate IP, and the alternate IP and port.
        let from: Vec<String> = r.answered_from.iter().map(|a| a.to_string()).collect();
        for a in ["192.0.2.10:3478", "192.0.2.20:3478", "192.0.2.20:3479"] {
            assert!(from.contains(&a.to_string()), "{from:?}");
        }
    }

    #[test]
    fn a_server_without_a_second_address_gives_the_mapped_address_only() {
        let mut net = Net::new(EndpointIndependent, EndpointIndependent);
        net.nat = None;
        let (r, took) = net.run();
        assert_eq!(r.mapped.map(|m| m.ip().to_string()), Some("203.0.113.9".into()));
        assert_eq!((r.mapping, r.filtering, r.nat_type()), (None, None, None));
        assert_eq!(r.problems, [NatProblem::NoOtherAddress]);
        assert_eq!(took, Duration::ZERO);
    }

    #[test]
    fn a_server_that_ignores_change_request_is_not_taken_for_no_filtering() {
        let mut net = Net::new(EndpointIndependent, AddressAndPortDependent);
        net.ignores_change = true;
        let (r, _) = net.run();
        assert_eq!(r.filtering, None);
        assert!(r.problems.contains(&NatProblem::ChangeRequestIgnored), "{r:?}");
    }

    #[test]
    fn silence_is_no_answer_after_the_timeout_with_retransmissions() {
        let t0 = crate::time::test_start();
        let timing = Timing::default();
        let mut p = NatProbe::new(t0, SERVER.parse().unwrap(), None, timing, &[1; 32]);
        let mut sent = 0;
        for _ in 0..100 {
            while p.poll_transmit().is_some() {
                sent += 1;
            }
            let Some(t) = p.poll_timeout() else { break };
            p.handle_timeout(t);
        }
        assert!(p.is_done());
        assert_eq!(sent, 4, "0, 0.3, 0.9 and 2.1 s");
        assert_eq!(p.report().problems, [NatProblem::NoAnswer]);
        assert!(!p.report().reached());
    }

    #[test]
    fn hostile_answers_are_ignored_or_reported_never_a_panic() {
        let t0 = crate::time::test_start();
        let server: SocketAddr = SERVER.parse().unwrap();
        let mut p = NatProbe::new(t0, server, None, Timing::default(), &[1; 32]);
        let req = p.poll_transmit().unwrap().payload;
        let tid: [u8; 12] = req[8..20].try_into().unwrap();
        // Garbage, truncations, a wrong transaction ID: ignored.
        for junk in [&b""[..], b"\x01\x01\x00\x08", &req[..19], &[0xff; 64]] {
            p.handle_input(t0, NatSocket::Mapping, server, junk);
        }
        let mut wrong = header(method::BINDING, Class::Success, &[0; 12]);
        message::append_attribute(&mut wrong, attr::XOR_MAPPED_ADDRESS, &[0, 1, 0, 0, 1, 2, 3, 4]);
        p.handle_input(t0, NatSocket::Mapping, server, &wrong);
        assert!(!p.is_done());
        // An answer with malformed addresses and OTHER-ADDRESS of the wrong length: no mapped address.
        let mut bad = header(method::BINDING, Class::Success, &tid);
        message::append_attribute(&mut bad, attr::XOR_MAPPED_ADDRESS, &[0, 9, 0]);
        message::append_attribute(&mut bad, attr::OTHER_ADDRESS, &[0, 1, 0, 0, 1]);
        p.handle_input(t0, NatSocket::Mapping, server, &bad);
        assert!(p.is_done());
        assert_eq!(p.report().mapped, None);
        // An error with a malformed ERROR-CODE.
        let mut p = NatProbe::new(t0, server, None, Timing::default(), &[1; 32]);
        let mut err = header(method::BINDING, Class::Error, &tid);
        message::append_attribute(&mut err, attr::ERROR_CODE, &[0xff]);
        p.handle_input(t0, NatSocket::Mapping, server, &err);
        assert!(matches!(p.report().problems[..], [NatProblem::BindingRefused(0, _)]));
    }
}
