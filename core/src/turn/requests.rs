//! The TURN requests (RFC 8656 §7-§12): authentication, Allocate (and the
//! relay socket that completes it), Refresh, CreatePermission, ChannelBind.
//!
//! A request is read once, through the checked view it arrived in. Each
//! handler returns its success response or an [`ErrorResponse`], and
//! [`TurnServer::send_error`] is the one place that turns the latter into
//! bytes.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use stun_codec::rfc5389::attributes::{Nonce, Realm, Software, XorMappedAddress};
use stun_codec::rfc5766::attributes::{Lifetime, ReservationToken, XorRelayAddress};
use stun_codec::MessageClass;

use crate::hash::Map;
use crate::ids::{AllocationId, Client, Family, Via};
use crate::stun::message::{self, Attribute, Integrity, Message};
use crate::stun::view::{self as stun_view, attr, method, StunView};
use crate::stun::{unknown_attribute_response, unknown_required};

use super::allocation::{
    clamp_lifetime, Additional, Allocation, Channel, Timer, CHANNEL_LIFETIME, PERMISSION_LIFETIME,
    RESERVATION_LIFETIME,
};
use super::auth::{PasswordAlgorithm, SessionKey, PASSWORD_ALGORITHMS};
use super::{ErrorResponse, Output, PortRequest, Transmit, TurnServer};

/// REQUESTED-TRANSPORT's protocol numbers: UDP, and TCP (RFC 6062).
const PROTO_UDP: u8 = 17;
const PROTO_TCP: u8 = 6;

/// The authenticated identity of a request.
struct Auth {
    username: String,
    key: SessionKey,
}

/// A handler's answer: the success response (`None` when it comes later, or
/// was already sent), or the error response to send.
type Reply = Result<Option<Message<Attribute>>, ErrorResponse>;

/// The attributes of a request that the handlers read, from the view. The
/// view's values were checked well-formed ([`StunView::known_attributes_well_formed`]),
/// so a reader only decides what a value means.
mod read {
    use super::*;

    fn u32_of(v: &[u8]) -> Option<u32> {
        Some(u32::from_be_bytes(v.try_into().ok()?))
    }

    /// LIFETIME.
    pub fn lifetime(v: &StunView<'_>) -> Option<Duration> {
        v.find(attr::LIFETIME).and_then(u32_of).map(|s| Duration::from_secs(u64::from(s)))
    }

    /// The protocol of REQUESTED-TRANSPORT.
    pub fn transport(v: &StunView<'_>) -> Option<u8> {
        v.find(attr::REQUESTED_TRANSPORT)?.first().copied()
    }

    /// EVEN-PORT: whether the next port is to be reserved too (the R bit).
    pub fn even_port(v: &StunView<'_>) -> Option<bool> {
        v.find(attr::EVEN_PORT)?.first().map(|b| b & 0x80 != 0)
    }

    /// RESERVATION-TOKEN.
    pub fn reservation_token(v: &StunView<'_>) -> Option<u64> {
        Some(u64::from_be_bytes(v.find(attr::RESERVATION_TOKEN)?.try_into().ok()?))
    }

    /// REQUESTED-ADDRESS-FAMILY.
    pub fn family(v: &StunView<'_>) -> Option<Family> {
        match v.find(attr::REQUESTED_ADDRESS_FAMILY)?.first()? {
            1 => Some(Family::V4),
            2 => Some(Family::V6),
            _ => None,
        }
    }

    /// ADDITIONAL-ADDRESS-FAMILY (RFC 8656's 0x8000, or the draft's 0x8032 that coturn's clients send): the
    /// family byte as sent (1 IPv4, 2 IPv6), checked by the caller.
    pub fn additional_family(v: &StunView<'_>) -> Option<u8> {
        let a = v.find(attr::ADDITIONAL_ADDRESS_FAMILY).or_else(|| v.find(attr::ADDITIONAL_ADDRESS_FAMILY_DRAFT))?;
        a.first().copied()
    }

    /// Every XOR-PEER-ADDRESS.
    pub fn peers(v: &StunView<'_>) -> Vec<SocketAddr> {
        let tid = v.transaction_id();
        v.find_all(attr::XOR_PEER_ADDRESS).filter_map(|a| stun_view::decode_xor_address(a, &tid)).collect()
    }

    /// The number of CHANNEL-NUMBER.
    pub fn channel_number(v: &StunView<'_>) -> Option<u16> {
        match v.find(attr::CHANNEL_NUMBER) {
            Some([a, b, _, _]) => Some(u16::from_be_bytes([*a, *b])),
            _ => None,
        }
    }
}

impl TurnServer {
    /// Answers a request of `method` other than Binding.
    pub(super) fn handle_request(&mut self, now: Instant, client: Client, v: &StunView<'_>, method: u16) {
        let tid = v.transaction_id();
        if !matches!(
            method,
            method::ALLOCATE | method::REFRESH | method::CREATE_PERMISSION | method::CHANNEL_BIND | method::CONNECT | method::CONNECTION_BIND
        ) {
            self.send_error(now, client, method, tid, ErrorResponse::BadRequest, None, v.fingerprint_ok().is_some());
            return;
        }
        let unknown = unknown_required(v);
        if !unknown.is_empty() {
            self.stats.error_responses += 1;
            let resp = unknown_attribute_response(v, &unknown);
            self.transmit(client, resp);
            return;
        }
        let auth = match self.authenticate(now, client, v) {
            Ok(a) => a,
            Err(e) => {
                self.send_error(now, client, method, tid, e, None, v.fingerprint_ok().is_some());
                return;
            }
        };
        let reply = if !v.known_attributes_well_formed() {
            Err(ErrorResponse::BadRequest)
        } else {
            match method {
                method::ALLOCATE => self.allocate(now, client, v, &auth),
                method::REFRESH => self.refresh(now, client, v, &auth),
                method::CREATE_PERMISSION => self.create_permission(now, client, v, &auth),
                method::CONNECT => self.connect(now, client, v, auth.key, &auth.username).map(|()| None),
                method::CONNECTION_BIND => self.connection_bind(client, v, auth.key, &auth.username).map(|()| None),
                _ => self.channel_bind(now, client, v, &auth),
            }
        };
        match reply {
            Ok(Some(mut m)) => {
                self.add_software(&mut m);
                let bytes = message::encode_with(m, Some(auth.key.integrity()), true);
                self.transmit(client, bytes);
            }
            Ok(None) => {}
            Err(e) => self.send_error(now, client, method, tid, e, Some(auth.key.integrity()), true),
        }
    }

    /// Long-term credential check (RFC 8489 §9.2.4), in its order: no
    /// integrity 401; missing USERNAME, REALM or NONCE 400; a password
    /// algorithm named without the list this server offers, or not from it,
    /// 400; a nonce not ours or too old 438; an unknown user or a wrong key
    /// 401. MESSAGE-INTEGRITY-SHA256 is checked when present (then a
    /// MESSAGE-INTEGRITY beside it is not), MESSAGE-INTEGRITY otherwise.
    fn authenticate(&self, now: Instant, client: Client, v: &StunView<'_>) -> Result<Auth, ErrorResponse> {
        if v.integrity_offset().is_none() {
            return Err(ErrorResponse::Unauthorized);
        }
        let (Some(user), Some(_realm), Some(nonce)) = (v.find(attr::USERNAME), v.find(attr::REALM), v.find(attr::NONCE)) else {
            return Err(ErrorResponse::BadRequest);
        };
        let (Ok(user), Ok(nonce)) = (std::str::from_utf8(user), std::str::from_utf8(nonce)) else {
            return Err(ErrorResponse::BadRequest);
        };
        let algorithm = match (v.find(attr::PASSWORD_ALGORITHMS), v.find(attr::PASSWORD_ALGORITHM)) {
            (None, None) => PasswordAlgorithm::Md5,
            (Some(offered), Some(chosen)) if offered == PASSWORD_ALGORITHMS => {
                match stun_view::password_algorithms(chosen).next() {
                    Some((n, params)) if params.is_empty() && chosen.len() == 4 => {
                        PasswordAlgorithm::from_number(n).ok_or(ErrorResponse::BadRequest)?
                    }
                    _ => return Err(ErrorResponse::BadRequest),
                }
            }
            _ => return Err(ErrorResponse::BadRequest),
        };
        let unix = self.clock.unix(now);
        if !self.creds.check_nonce(nonce, unix, client.remote) {
            return Err(ErrorResponse::StaleNonce);
        }
        let key = self.creds.key_with(user, unix, algorithm).map_err(|_| ErrorResponse::Unauthorized)?;
        let sha256 = v.has_integrity_sha256();
        let ok = if sha256 { v.check_integrity_sha256(&key) } else { v.check_integrity(&key) };
        if !ok {
            return Err(ErrorResponse::Unauthorized);
        }
        Ok(Auth { username: user.to_owned(), key: SessionKey::new(&key, sha256) })
    }

    /// Allocate (RFC 8656 §7.2): checks the request and asks the shell for a
    /// relay socket; [`TurnServer::handle_relay_bound`] answers.
    fn allocate(&mut self, now: Instant, client: Client, v: &StunView<'_>, auth: &Auth) -> Reply {
        let tid = v.transaction_id();
        if let Some(id) = self.by_client.get(&client) {
            let a = &self.allocations[id];
            if a.allocate_tid == tid {
                // A retransmission: answer as before, or not yet if the relay is still binding.
                if let Some(resp) = a.allocate_response.clone() {
                    self.transmit(client, resp);
                }
                return Ok(None);
            }
            return Err(ErrorResponse::AllocationMismatch);
        }
        let Some(transport) = read::transport(v) else {
            return Err(ErrorResponse::BadRequest);
        };
        let even = read::even_port(v);
        let token = read::reservation_token(v);
        let requested_family = read::family(v);
        // RFC 6062 §5.1: a TCP relay for a client over TCP or TLS, without the UDP-only attributes.
        let tcp = match transport {
            PROTO_UDP => false,
            PROTO_TCP => {
                let udp_only = even.is_some() || token.is_some() || v.find(attr::DONT_FRAGMENT).is_some() || read::additional_family(v).is_some();
                if !matches!(client.via, Via::Tcp(_)) || udp_only {
                    return Err(ErrorResponse::BadRequest);
                }
                true
            }
            _ => return Err(ErrorResponse::UnsupportedTransportProtocol),
        };
        if token.is_some() && (even.is_some() || requested_family.is_some()) {
            return Err(ErrorResponse::BadRequest);
        }
        // A dual allocation (RFC 8656 §7.2): IPv4, and IPv6 beside it. Only IPv6 may be the additional
        // family, and not with REQUESTED-ADDRESS-FAMILY or a reservation. EVEN-PORT applies to the IPv4
        // relay (coturn's clients send it with R=0); a pair reservation (R=1) with it is refused here.
        let additional = match read::additional_family(v) {
            None => Additional::None,
            Some(2) if token.is_none() && requested_family.is_none() && even != Some(true) => {
                if self.config.relay_families.1 {
                    Additional::Wanted
                } else {
                    Additional::Unsupported
                }
            }
            Some(_) => return Err(ErrorResponse::BadRequest),
        };
        let (family, port) = match token {
            Some(t) => {
                // Peek only: the reservation is spent when the allocation is made below. It may
                // have been made by another server sharing the ledger (another worker's).
                let Some(relay) = self.config.reservations.get(t) else {
                    return Err(ErrorResponse::InsufficientCapacity);
                };
                (Family::of(relay), PortRequest::Reserved(relay))
            }
            None => {
                let port = match even {
                    None => PortRequest::Any,
                    Some(false) => PortRequest::Even,
                    Some(true) => PortRequest::EvenPair,
                };
                (requested_family.unwrap_or(Family::V4), port)
            }
        };
        let available = match family {
            Family::V4 => self.config.relay_families.0,
            Family::V6 => self.config.relay_families.1,
        };
        if !available {
            return Err(ErrorResponse::AddressFamilyNotSupported);
        }
        // Taken here, given back when the allocation ends (`delete_allocation`), or at once if the token was spent.
        if !self.config.quotas.try_take(&auth.username, self.config.user_quota, self.config.total_quota) {
            return Err(ErrorResponse::AllocationQuotaReached);
        }
        let lifetime = clamp_lifetime(read::lifetime(v));
        if let Some(t) = token {
            // Spent here, once: another worker may have spent it since it was looked at above.
            if self.config.reservations.take(t).is_none() {
                self.config.quotas.give_back(&auth.username);
                return Err(ErrorResponse::InsufficientCapacity);
            }
            self.reservations.remove(&t);
        }
        let id = AllocationId(self.next_id);
        self.next_id += 1;
        let expires = now + lifetime;
        self.allocations.insert(
            id,
            Allocation {
                client,
                username: auth.username.clone(),
                key: auth.key,
                family,
                relay: None,
                additional,
                tcp,
                expires,
                allocate_tid: tid,
                allocate_response: None,
                lifetime,
                port,
                permissions: Map::with_hasher(self.hasher.clone()),
                channels: Map::with_hasher(self.hasher.clone()),
                channel_of_peer: Map::with_hasher(self.hasher.clone()),
                to_peer_budget: Default::default(),
                to_client_budget: Default::default(),
            },
        );
        self.by_client.insert(client, id);
        self.timers.push(expires, Timer::Allocation(id));
        self.stats.allocations += 1;
        self.stats.allocations_created += 1;
        self.out.push_back(if tcp { Output::BindTcpRelay { allocation: id, family } } else { Output::BindRelay { allocation: id, family, port } });
        Ok(None)
    }

    /// Reports the result of an [`Output::BindRelay`]: the bound local
    /// address, or `None` if no socket could be bound (the client gets 508),
    /// and for [`PortRequest::EvenPair`] the reserved address of port P + 1.
    pub fn handle_relay_bound(
        &mut self,
        now: Instant,
        allocation: AllocationId,
        bound: Option<SocketAddr>,
        reserved: Option<SocketAddr>,
    ) {
        let now = self.time.advance(now);
        let Some(alloc) = self.allocations.get_mut(&allocation) else {
            // The allocation went away while the socket was being bound.
            for relay in bound.into_iter().chain(reserved) {
                self.out.push_back(Output::ReleaseRelay { allocation, relay });
            }
            return;
        };
        if alloc.relay.is_some() && alloc.additional == Additional::Binding {
            // The second relay of a dual allocation. Without it the allocation stands with its first
            // relay, and the answer says why in ADDRESS-ERROR-CODE.
            match bound.filter(|b| Family::of(*b) == Family::V6) {
                Some(b) => {
                    alloc.additional = Additional::Bound(b);
                    self.by_relay.insert(b, allocation);
                }
                None => {
                    alloc.additional = Additional::Failed;
                    if let Some(relay) = bound {
                        self.out.push_back(Output::ReleaseRelay { allocation, relay });
                    }
                }
            }
            if let Some(relay) = reserved {
                self.out.push_back(Output::ReleaseRelay { allocation, relay });
            }
            self.answer_allocate(now, allocation, None);
            return;
        }
        let pair_missing = alloc.port == PortRequest::EvenPair && reserved.is_none();
        if alloc.relay.is_some() || bound.is_none() || pair_missing {
            let stale = alloc.relay.is_some();
            for relay in bound.into_iter().chain(reserved) {
                self.out.push_back(Output::ReleaseRelay { allocation, relay });
            }
            if !stale {
                let (client, key, tid) = (alloc.client, alloc.key, alloc.allocate_tid);
                self.delete_allocation(allocation);
                self.send_error(now, client, method::ALLOCATE, tid, ErrorResponse::InsufficientCapacity, Some(key.integrity()), true);
            }
            return;
        }
        let Some(relay) = bound else { return };
        alloc.relay = Some(relay);
        self.by_relay.insert(relay, allocation);
        if alloc.additional == Additional::Wanted {
            // One relay at a time, so that the shell's answer (which has no family when it failed) is unambiguous.
            alloc.additional = Additional::Binding;
            if let Some(relay) = reserved {
                self.out.push_back(Output::ReleaseRelay { allocation, relay });
            }
            self.out.push_back(Output::BindRelay { allocation, family: Family::V6, port: PortRequest::Any });
            return;
        }
        self.answer_allocate(now, allocation, reserved);
    }

    /// The success response to an allocation whose relays are bound (with a RESERVATION-TOKEN for the
    /// `reserved` port of an even pair), kept for retransmissions and sent.
    fn answer_allocate(&mut self, now: Instant, allocation: AllocationId, reserved: Option<SocketAddr>) {
        let Some(alloc) = self.allocations.get_mut(&allocation) else { return };
        let Some(relay) = alloc.relay else { return };
        let external = self.config.external_ip;
        let advertised = |relay: SocketAddr| match external {
            Some(ip) if ip.is_ipv4() == relay.is_ipv4() => SocketAddr::new(ip, relay.port()),
            _ => relay,
        };
        let mut m = message::response(method::ALLOCATE, MessageClass::SuccessResponse, alloc.allocate_tid);
        m.add_attribute(XorRelayAddress::new(advertised(relay)));
        if let Additional::Bound(second) = alloc.additional {
            m.add_attribute(XorRelayAddress::new(advertised(second)));
        }
        if let Ok(l) = Lifetime::new(alloc.lifetime) {
            m.add_attribute(l);
        }
        m.add_attribute(XorMappedAddress::new(alloc.client.remote));
        if let Some(reserved) = reserved.filter(|_| alloc.port == PortRequest::EvenPair) {
            let token = self.rng.next_u64();
            let expires = now + RESERVATION_LIFETIME;
            self.reservations.insert(token, allocation);
            self.config.reservations.insert(token, reserved);
            self.timers.push(expires, Timer::Reservation(token));
            m.add_attribute(ReservationToken::new(token));
        }
        if let Some(s) = self.config.software.as_ref().and_then(|s| Software::new(s.clone()).ok()) {
            m.add_attribute(s);
        }
        let mut bytes = message::encode_with(m, None, false);
        let address_error = match alloc.additional {
            Additional::Unsupported => Some(ErrorResponse::AddressFamilyNotSupported.code()),
            Additional::Failed => Some(ErrorResponse::InsufficientCapacity.code()),
            _ => None,
        };
        if let Some(code) = address_error.filter(|_| bytes.len() >= stun_view::HEADER_LEN) {
            // ADDRESS-ERROR-CODE (RFC 8656 §18.12), which stun_codec does not know: the family not
            // allocated (IPv6), then the code as in ERROR-CODE, and its reason.
            let mut value = vec![2, 0, (code / 100) as u8, (code % 100) as u8];
            value.extend_from_slice(message::reason(code).as_bytes());
            message::append_attribute(&mut bytes, attr::ADDRESS_ERROR_CODE, &value);
        }
        message::seal(&mut bytes, Some(alloc.key.integrity()), true);
        alloc.allocate_response = Some(bytes.clone());
        let client = alloc.client;
        self.out.push_back(Output::Transmit(Transmit { to: client, payload: bytes }));
    }

    /// The allocation of `client`, checked against the request's username.
    fn owned_allocation(&mut self, client: Client, auth: &Auth) -> Result<(AllocationId, &mut Allocation), ErrorResponse> {
        let id = *self.by_client.get(&client).ok_or(ErrorResponse::AllocationMismatch)?;
        let a = self.allocations.get_mut(&id).ok_or(ErrorResponse::AllocationMismatch)?;
        if a.relay.is_none() {
            return Err(ErrorResponse::AllocationMismatch);
        }
        if a.username != auth.username {
            return Err(ErrorResponse::WrongCredentials);
        }
        Ok((id, a))
    }

    /// Refresh (RFC 8656 §8): a new lifetime, or zero to delete.
    fn refresh(&mut self, now: Instant, client: Client, v: &StunView<'_>, auth: &Auth) -> Reply {
        let requested = read::lifetime(v);
        let wanted_family = read::family(v);
        let (id, a) = self.owned_allocation(client, auth)?;
        if wanted_family.is_some_and(|f| a.relay_for(f).is_none()) {
            return Err(ErrorResponse::PeerAddressFamilyMismatch);
        }
        let granted = if requested == Some(Duration::ZERO) {
            self.delete_allocation(id);
            Duration::ZERO
        } else {
            let l = clamp_lifetime(requested);
            a.expires = now + l;
            l
        };
        let mut m = message::response(method::REFRESH, MessageClass::SuccessResponse, v.transaction_id());
        if let Ok(l) = Lifetime::new(granted) {
            m.add_attribute(l);
        }
        Ok(Some(m))
    }

    /// Whether an allocation with relays of `families` (IPv4, IPv6) may relay to `peer`.
    fn check_peer(&self, families: (bool, bool), peer: SocketAddr) -> Result<(), ErrorResponse> {
        let served = match Family::of(peer) {
            Family::V4 => families.0,
            Family::V6 => families.1,
        };
        if !served {
            return Err(ErrorResponse::PeerAddressFamilyMismatch);
        }
        if !self.config.peer_policy.is_allowed(peer.ip()) {
            return Err(ErrorResponse::Forbidden);
        }
        Ok(())
    }

    /// CreatePermission (RFC 8656 §9): all of the peers, or none.
    fn create_permission(&mut self, now: Instant, client: Client, v: &StunView<'_>, auth: &Auth) -> Reply {
        let peers = read::peers(v);
        if peers.is_empty() {
            return Err(ErrorResponse::BadRequest);
        }
        let max = self.config.max_permissions;
        let (id, a) = self.owned_allocation(client, auth)?;
        let family = (a.relay_for(Family::V4).is_some(), a.relay_for(Family::V6).is_some());
        let new = peers.iter().filter(|p| !a.permissions.contains_key(&p.ip())).count();
        let over = a.permissions.len() + new > max;
        for p in &peers {
            self.check_peer(family, *p)?;
        }
        if over {
            return Err(ErrorResponse::InsufficientCapacity);
        }
        let a = self.allocations.get_mut(&id).ok_or(ErrorResponse::AllocationMismatch)?;
        for p in peers {
            if a.permissions.insert(p.ip(), now + PERMISSION_LIFETIME).is_none() {
                self.timers.push(now + PERMISSION_LIFETIME, Timer::Permission(id, p.ip()));
            }
        }
        Ok(Some(message::response(method::CREATE_PERMISSION, MessageClass::SuccessResponse, v.transaction_id())))
    }

    /// ChannelBind (RFC 8656 §11): binds or refreshes a channel, and its peer's permission.
    fn channel_bind(&mut self, now: Instant, client: Client, v: &StunView<'_>, auth: &Auth) -> Reply {
        let Some(number) = read::channel_number(v) else {
            return Err(ErrorResponse::BadRequest);
        };
        let Some(peer) = v.xor_address(attr::XOR_PEER_ADDRESS) else {
            return Err(ErrorResponse::BadRequest);
        };
        let last = if self.config.strict_channel_numbers { 0x4FFF } else { 0x7FFF };
        if !(0x4000..=last).contains(&number) {
            return Err(ErrorResponse::BadRequest);
        }
        let max = self.config.max_permissions;
        let (id, a) = self.owned_allocation(client, auth)?;
        if a.tcp {
            // RFC 6062 §5.1: no channels on a TCP relay.
            return Err(ErrorResponse::BadRequest);
        }
        let family = (a.relay_for(Family::V4).is_some(), a.relay_for(Family::V6).is_some());
        // A number is bound to one peer, and a peer to one number, for the channel's life.
        if a.channels.get(&number).is_some_and(|c| c.peer != peer)
            || a.channel_of_peer.get(&peer).is_some_and(|n| *n != number)
        {
            return Err(ErrorResponse::BadRequest);
        }
        let new_permission = !a.permissions.contains_key(&peer.ip());
        if new_permission && a.permissions.len() >= max {
            return Err(ErrorResponse::InsufficientCapacity);
        }
        self.check_peer(family, peer)?;
        let a = self.allocations.get_mut(&id).ok_or(ErrorResponse::AllocationMismatch)?;
        let expires = now + CHANNEL_LIFETIME;
        if a.channels.insert(number, Channel { peer, expires }).is_none() {
            self.timers.push(expires, Timer::Channel(id, number));
        }
        a.channel_of_peer.insert(peer, number);
        if a.permissions.insert(peer.ip(), now + PERMISSION_LIFETIME).is_none() {
            self.timers.push(now + PERMISSION_LIFETIME, Timer::Permission(id, peer.ip()));
        }
        Ok(Some(message::response(method::CHANNEL_BIND, MessageClass::SuccessResponse, v.transaction_id())))
    }

    /// Sends the error response `e` to a request of `method` with `tid`: with
    /// REALM, a fresh NONCE and PASSWORD-ALGORITHMS when it challenges, the
    /// integrity attribute and SOFTWARE when `key` (the request was
    /// authenticated), and FINGERPRINT when `fingerprint` (an unauthenticated
    /// request gets one only if it carried one, as coturn does). An answer to
    /// an unauthenticated request stays small (no SOFTWARE, a compact nonce):
    /// it must not be worth spoofing a source address for.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn send_error(&mut self, now: Instant, to: Client, method: u16, tid: [u8; 12], e: ErrorResponse, key: Option<Integrity<'_>>, fingerprint: bool) {
        if e.challenges() && key.is_none() {
            // A 401 to an unauthenticated request: at most a few per second per source address, so a
            // flood with a spoofed source does not turn into a stream of answers toward it.
            let slot = (self.hasher.hash_one(to.remote.ip()) as usize) % self.challenges.len();
            if !self.challenges[slot].take(now, super::rate::CHALLENGES_PER_SECOND, super::rate::CHALLENGE_BURST, 1) {
                self.stats.challenges_rate_limited += 1;
                return;
            }
        }
        self.stats.error_responses += 1;
        let mut m = message::error_response(method, tid, e.code());
        if e.challenges() {
            if let Ok(r) = Realm::new(self.creds.realm().to_owned()) {
                m.add_attribute(r);
            }
            let nonce = self.creds.make_nonce(self.clock.unix(now), to.remote);
            if let Ok(n) = Nonce::new(nonce) {
                m.add_attribute(n);
            }
        }
        if key.is_some() {
            self.add_software(&mut m);
        }
        let mut bytes = message::encode_with(m, None, false);
        if bytes.len() < stun_view::HEADER_LEN {
            return;
        }
        if e.challenges() {
            // PASSWORD-ALGORITHMS (RFC 8489 §9.2.4), which stun_codec does not know; the nonce's
            // security-feature bits say it is here.
            message::append_attribute(&mut bytes, attr::PASSWORD_ALGORITHMS, &PASSWORD_ALGORITHMS);
        }
        message::seal(&mut bytes, key, fingerprint || key.is_some());
        self.transmit(to, bytes);
    }

    fn add_software(&self, m: &mut Message<Attribute>) {
        if let Some(s) = &self.config.software {
            if let Ok(s) = Software::new(s.clone()) {
                m.add_attribute(s);
            }
        }
    }
}
