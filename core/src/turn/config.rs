//! What a [`super::TurnServer`] is configured with.

use std::net::IpAddr;

use super::policy::PeerPolicy;

/// Configuration of a [`super::TurnServer`]. Its `Debug` output redacts secrets.
#[derive(Clone)]
pub struct TurnConfig {
    /// The realm of long-term credentials.
    pub realm: String,
    /// Static users as (name, password).
    pub users: Vec<(String, String)>,
    /// The TURN REST API shared secret (coturn's `static-auth-secret`).
    pub static_auth_secret: Option<String>,
    /// The key nonces are made and checked with. Servers that share it accept
    /// each other's nonces (one engine per worker thread needs that); shells
    /// make a random one at start. `None`: derived from the server's seed.
    pub nonce_key: Option<[u8; 32]>,
    /// Which peers may be relayed to.
    pub peer_policy: PeerPolicy,
    /// Most allocations one user may hold; 0 for no limit.
    pub user_quota: u32,
    /// Most allocations in total; 0 for no limit.
    pub total_quota: u32,
    /// Most payload bytes per second one allocation relays in each direction (coturn's `max-bps`, which
    /// is bytes despite its name); 0 for no limit. What exceeds it is dropped and counted.
    pub max_bps: u64,
    /// Where allocations are counted against the quotas. Servers made from
    /// clones of one config share it (one engine per worker thread needs
    /// that); see [`super::quota`].
    pub quotas: super::QuotaLedger,
    /// Where RESERVATION-TOKENs are kept; shared, like `quotas`, by the
    /// servers made from clones of this config.
    pub reservations: super::ReservationLedger,
    /// Whether relay sockets of each family can be bound (IPv4, IPv6).
    pub relay_families: (bool, bool),
    /// The address to advertise in XOR-RELAYED-ADDRESS instead of the bound
    /// one, for a server behind NAT (same family only).
    pub external_ip: Option<IpAddr>,
    /// SOFTWARE attribute to send, if any.
    pub software: Option<String>,
    /// Most permissions one allocation may hold.
    pub max_permissions: usize,
    /// Accept only RFC 8656 channel numbers (0x4000-0x4FFF). When false (the
    /// default), the RFC 5766 range 0x4000-0x7FFF is accepted too, as coturn
    /// does and as its own clients need.
    pub strict_channel_numbers: bool,
    /// RFC 5780 NAT behaviour discovery, when the server has a second address:
    /// Binding requests get OTHER-ADDRESS and RESPONSE-ORIGIN, and
    /// CHANGE-REQUEST, RESPONSE-PORT and PADDING are honoured. `None`:
    /// CHANGE-REQUEST gets 420, as RFC 5780 says for a server without one.
    pub nat_discovery: Option<crate::stun::NatDiscovery>,
    /// Which of the servers sharing the TURN port this one is (a worker's
    /// index): the top byte of the CONNECTION-IDs it makes (RFC 6062), so a
    /// data connection that another server accepted is handed here.
    pub server_index: u8,
}

impl Default for TurnConfig {
    fn default() -> Self {
        TurnConfig {
            realm: "switchboard".into(),
            users: Vec::new(),
            static_auth_secret: None,
            nonce_key: None,
            peer_policy: PeerPolicy::default(),
            user_quota: 0,
            max_bps: 0,
            total_quota: 0,
            quotas: super::QuotaLedger::new(),
            reservations: super::ReservationLedger::default(),
            relay_families: (true, false),
            external_ip: None,
            software: Some(concat!("switchboard ", env!("CARGO_PKG_VERSION")).into()),
            max_permissions: 128,
            strict_channel_numbers: false,
            nat_discovery: None,
            server_index: 0,
        }
    }
}

impl std::fmt::Debug for TurnConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TurnConfig")
            .field("realm", &self.realm)
            .field("users", &self.users.iter().map(|(u, _)| u.as_str()).collect::<Vec<_>>())
            .field("static_auth_secret", &self.static_auth_secret.as_ref().map(|_| "<redacted>"))
            .field("nonce_key", &self.nonce_key.as_ref().map(|_| "<redacted>"))
            .field("peer_policy", &self.peer_policy)
            .field("user_quota", &self.user_quota)
            .field("max_bps", &self.max_bps)
            .field("total_quota", &self.total_quota)
            .field("relay_families", &self.relay_families)
            .field("external_ip", &self.external_ip)
            .field("max_permissions", &self.max_permissions)
            .field("strict_channel_numbers", &self.strict_channel_numbers)
            .field("nat_discovery", &self.nat_discovery)
            .finish()
    }
}
