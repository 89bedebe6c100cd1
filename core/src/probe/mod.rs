//! The client side of `switchboard probe`, sans-IO like the servers: what NAT
//! a host is behind (RFC 5780 behaviour discovery), whether two hosts behind
//! such NATs can call each other directly, and whether a TURN server relays
//! end to end.
//!
//! - [`nat::NatProbe`]: the RFC 5780 mapping (§4.3) and filtering (§4.4)
//!   tests from two local UDP sockets, with retransmissions;
//! - [`turn::TurnProbe`]: Allocate, CreatePermission, a relayed round trip
//!   with Send/Data indications and another on a channel, then a release,
//!   over datagrams or a byte stream (TCP, TLS);
//! - [`NatType`] and [`direct_call_possible`]: the classic names of NATs and
//!   the table of which pairs connect directly and which need TURN.
//!
//! # Driving a probe
//!
//! Both probes follow the servers' contract: after creating one and after
//! every `handle_*` call, drain `poll_transmit()` (send each one), then wait
//! for input until `poll_timeout()` and call `handle_timeout(now)` when it
//! passes. The probe is finished when `is_done()`; its `report()` says what
//! it found. Every wait is bounded by the configured timeout, so a probe
//! always finishes, whatever the network does.

pub mod nat;
pub mod turn;

use std::time::{Duration, Instant};

pub use nat::{Behaviour, NatProbe, NatProblem, NatReport, NatSocket, NatTransmit};
pub use turn::{TurnFailure, TurnProbe, TurnProbeConfig, TurnReport, TurnStep, TurnTransmit, TurnTransport};

/// How long a probe waits (RFC 8489 §6.2.1 retransmissions, bounded).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// The first retransmission timeout over UDP; it doubles after each retransmission.
    pub rto: Duration,
    /// How long one request (or one relayed round trip) may take in all before it
    /// counts as unanswered. For RFC 5780 filtering tests an unanswered request is
    /// the answer ("filtered"), so this is how long those take on a filtering NAT.
    pub timeout: Duration,
}

impl Default for Timing {
    /// An RTO of 300 ms and 3 s per request: four transmissions over UDP
    /// (at 0, 0.3, 0.9 and 2.1 s). RFC 8489's 39.5 s are for a server that
    /// may be busy; a person waiting for a probe is not.
    fn default() -> Self {
        Timing { rto: Duration::from_millis(300), timeout: Duration::from_secs(3) }
    }
}

/// The retransmission timer of one request (RFC 8489 §6.2.1), with a deadline.
#[derive(Debug, Clone, Copy)]
struct Retransmit {
    next: Instant,
    rto: Duration,
    deadline: Instant,
    /// Over a stream nothing is retransmitted (RFC 8489 §6.2.2): only the deadline counts.
    reliable: bool,
}

/// What a [`Retransmit`] says at some instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Due {
    /// Nothing yet.
    Wait,
    /// Send the request again.
    Resend,
    /// Give up: no answer before the deadline.
    Expired,
}

impl Retransmit {
    fn start(now: Instant, timing: Timing, reliable: bool) -> Self {
        // A zero RTO would resend in a loop; a millisecond keeps the work bounded.
        let rto = timing.rto.max(Duration::from_millis(1));
        Retransmit { next: now + rto, rto, deadline: now + timing.timeout, reliable }
    }

    /// When to look again.
    fn wake(&self) -> Instant {
        if self.reliable {
            self.deadline
        } else {
            self.next.min(self.deadline)
        }
    }

    /// Advances to `now`. Safe to call early or twice.
    fn poll(&mut self, now: Instant) -> Due {
        if now >= self.deadline {
            Due::Expired
        } else if !self.reliable && now >= self.next {
            self.rto = self.rto.saturating_mul(2);
            self.next = now + self.rto;
            Due::Resend
        } else {
            Due::Wait
        }
    }
}

/// The classic names of NAT types (RFC 3489's, which the WebRTC tutorials
/// use), from RFC 5780's mapping and filtering behaviours.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NatType {
    /// No NAT, and nothing filters what comes in.
    OpenInternet,
    /// Endpoint-independent mapping and filtering: once out, anyone can send in.
    FullCone,
    /// Endpoint-independent mapping, address-dependent filtering: only hosts
    /// the client sent to can send in, from any of their ports.
    RestrictedCone,
    /// Endpoint-independent mapping, address- and port-dependent filtering:
    /// only the exact addresses and ports the client sent to can send in.
    PortRestrictedCone,
    /// The mapping depends on the destination: each peer sees another public port.
    Symmetric,
}

impl NatType {
    /// The type of a NAT with these behaviours; `behind_nat` false means the
    /// mapped address is the local one (a filtering firewall is then named by
    /// its filtering, as the cone with the same filtering). `None` when the
    /// behaviours needed are not known.
    pub fn classify(behind_nat: Option<bool>, mapping: Option<Behaviour>, filtering: Option<Behaviour>) -> Option<NatType> {
        match (mapping, filtering) {
            (Some(Behaviour::AddressDependent | Behaviour::AddressAndPortDependent), _) => Some(NatType::Symmetric),
            (Some(Behaviour::EndpointIndependent), Some(Behaviour::EndpointIndependent)) => {
                Some(if behind_nat == Some(false) { NatType::OpenInternet } else { NatType::FullCone })
            }
            (Some(Behaviour::EndpointIndependent), Some(Behaviour::AddressDependent)) => Some(NatType::RestrictedCone),
            (Some(Behaviour::EndpointIndependent), Some(Behaviour::AddressAndPortDependent)) => Some(NatType::PortRestrictedCone),
            _ => None,
        }
    }

    /// The name the seeds use ("port-restricted cone NAT").
    pub fn name(self) -> &'static str {
        match self {
            NatType::OpenInternet => "no NAT (open internet)",
            NatType::FullCone => "full cone NAT",
            NatType::RestrictedCone => "restricted cone NAT",
            NatType::PortRestrictedCone => "port-restricted cone NAT",
            NatType::Symmetric => "symmetric NAT",
        }
    }

    /// A short stable identifier, for JSON.
    pub fn id(self) -> &'static str {
        match self {
            NatType::OpenInternet => "open-internet",
            NatType::FullCone => "full-cone",
            NatType::RestrictedCone => "restricted-cone",
            NatType::PortRestrictedCone => "port-restricted-cone",
            NatType::Symmetric => "symmetric",
        }
    }

    /// Every type, in the order of the table.
    pub const ALL: [NatType; 5] =
        [NatType::OpenInternet, NatType::FullCone, NatType::RestrictedCone, NatType::PortRestrictedCone, NatType::Symmetric];
}

/// Whether two hosts can call each other directly (ICE host or server-reflexive
/// candidates), and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    /// True: hole punching works; false: the call needs a TURN relay.
    pub direct: bool,
    /// One sentence saying why.
    pub reason: &'static str,
}

/// The standard table of hole punching between two NAT types: a symmetric NAT
/// with another symmetric one, or with a port-restricted cone, needs TURN
/// (the symmetric side's port toward the other is one nobody could learn, and
/// the other side only lets in the exact port it sent to); every other pair
/// connects directly. Symmetric in its arguments.
pub fn direct_call_possible(a: NatType, b: NatType) -> Verdict {
    use NatType::*;
    match (a, b) {
        (OpenInternet, _) | (_, OpenInternet) => Verdict {
            direct: true,
            reason: "one side has no NAT: the other can always reach its address",
        },
        (Symmetric, Symmetric) => Verdict {
            direct: false,
            reason: "both NATs pick a new port for each destination, so neither side can learn the port to send to",
        },
        (Symmetric, PortRestrictedCone) | (PortRestrictedCone, Symmetric) => Verdict {
            direct: false,
            reason: "the symmetric NAT sends from a port the port-restricted cone never sent to, and it lets only that exact port in",
        },
        (FullCone, _) | (_, FullCone) => Verdict {
            direct: true,
            reason: "a full cone NAT lets anyone in once its host has sent out",
        },
        (Symmetric, RestrictedCone) | (RestrictedCone, Symmetric) => Verdict {
            direct: true,
            reason: "the restricted cone filters by address only, so the symmetric NAT's new port gets in, and the answer goes back the way it came",
        },
        _ => Verdict {
            direct: true,
            reason: "both NATs keep one public port for every destination, so each side's reflexive address works once both have sent",
        },
    }
}

/// The header of a STUN message of `method` and `class` with transaction ID
/// `tid` and no attributes yet (they are appended with
/// [`crate::stun::message::append_attribute`], which keeps the length right).
fn header(method: u16, class: crate::stun::view::Class, tid: &[u8; 12]) -> Vec<u8> {
    use crate::stun::view::{message_type, MAGIC_COOKIE};
    let mut b = Vec::with_capacity(128);
    b.extend_from_slice(&message_type(method, class).to_be_bytes());
    b.extend_from_slice(&[0, 0]);
    b.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
    b.extend_from_slice(tid);
    b
}

/// An error code and its reason phrase from an ERROR-CODE value (RFC 8489
/// §14.8), the reason cut to printable text; `None` when malformed.
fn error_code(value: &[u8]) -> Option<(u16, String)> {
    let [_, _, class, number, reason @ ..] = value else { return None };
    let code = u16::from(class & 0x07) * 100 + u16::from(*number);
    let reason: String = String::from_utf8_lossy(reason).chars().filter(|c| !c.is_control()).take(128).collect();
    Some((code, reason))
}

/// A transport address in MAPPED-ADDRESS form (RFC 8489 §14.1), as
/// MAPPED-ADDRESS, OTHER-ADDRESS and RESPONSE-ORIGIN carry it.
fn plain_address(v: &[u8]) -> Option<std::net::SocketAddr> {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
    let port = u16::from_be_bytes([*v.get(2)?, *v.get(3)?]);
    match (v.get(1), v.len()) {
        (Some(1), 8) => Some(SocketAddr::new(IpAddr::V4(Ipv4Addr::new(v[4], v[5], v[6], v[7])), port)),
        (Some(2), 20) => {
            let mut ip = [0u8; 16];
            ip.copy_from_slice(&v[4..20]);
            Some(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(ip)), port))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use NatType::*;

    #[test]
    fn the_direct_call_table() {
        // Which pairs need TURN: symmetric with symmetric or with port-restricted cone, nothing else.
        for a in NatType::ALL {
            for b in NatType::ALL {
                let v = direct_call_possible(a, b);
                assert_eq!(v, direct_call_possible(b, a), "{a:?}/{b:?} is symmetric");
                let needs_turn = matches!((a, b), (Symmetric, Symmetric) | (Symmetric, PortRestrictedCone) | (PortRestrictedCone, Symmetric));
                assert_eq!(v.direct, !needs_turn, "{a:?} with {b:?}: {}", v.reason);
                assert!(!v.reason.is_empty());
            }
        }
        assert!(direct_call_possible(Symmetric, RestrictedCone).direct);
        assert!(direct_call_possible(Symmetric, FullCone).direct);
        assert!(direct_call_possible(OpenInternet, Symmetric).direct);
    }

    #[test]
    fn classic_names_from_mapping_and_filtering() {
        use Behaviour::*;
        let c = NatType::classify;
        assert_eq!(c(Some(false), Some(EndpointIndependent), Some(EndpointIndependent)), Some(OpenInternet));
        assert_eq!(c(Some(true), Some(EndpointIndependent), Some(EndpointIndependent)), Some(FullCone));
        assert_eq!(c(Some(true), Some(EndpointIndependent), Some(AddressDependent)), Some(RestrictedCone));
        assert_eq!(c(Some(true), Some(EndpointIndependent), Some(AddressAndPortDependent)), Some(PortRestrictedCone));
        assert_eq!(c(Some(true), Some(AddressDependent), Some(EndpointIndependent)), Some(Symmetric));
        assert_eq!(c(Some(true), Some(AddressAndPortDependent), None), Some(Symmetric));
        // A firewall without NAT is named by its filtering.
        assert_eq!(c(Some(false), Some(EndpointIndependent), Some(AddressAndPortDependent)), Some(PortRestrictedCone));
        assert_eq!(c(Some(true), Some(EndpointIndependent), None), None);
        assert_eq!(c(None, None, Some(EndpointIndependent)), None);
    }

    #[test]
    fn retransmissions_double_and_stop_at_the_deadline() {
        let t0 = crate::time::test_start();
        let timing = Timing { rto: Duration::from_millis(100), timeout: Duration::from_millis(1000) };
        let mut r = Retransmit::start(t0, timing, false);
        let mut sends = Vec::new();
        let mut now = t0;
        for _ in 0..100 {
            now = r.wake();
            match r.poll(now) {
                Due::Resend => sends.push(now - t0),
                Due::Expired => break,
                Due::Wait => {}
            }
        }
        let ms: Vec<u128> = sends.iter().map(Duration::as_millis).collect();
        assert_eq!(ms, [100, 300, 700]);
        assert_eq!(now - t0, Duration::from_millis(1000));
        let mut s = Retransmit::start(t0, timing, true);
        assert_eq!(s.wake(), t0 + timing.timeout);
        assert_eq!(s.poll(t0 + Duration::from_millis(500)), Due::Wait);
        assert_eq!(s.poll(t0 + timing.timeout), Due::Expired);
    }

    #[test]
    fn hostile_attribute_values_do_not_panic() {
        assert_eq!(error_code(&[0, 0, 4]), None);
        assert_eq!(error_code(&[0, 0, 0xFF, 0xFF, 0xFF]).map(|c| c.0), Some(7 * 100 + 255));
        assert_eq!(plain_address(&[0, 1, 0]), None);
        assert_eq!(plain_address(&[0, 2, 0, 1, 1, 2, 3, 4]), None);
        assert_eq!(plain_address(&[0, 1, 0, 80, 10, 0, 0, 1]), Some("10.0.0.1:80".parse().unwrap()));
    }
}
