//! Long-term credentials (RFC 8489 §9.2) with both password algorithms (MD5
//! and SHA-256), the TURN REST API scheme, and stateless nonces.
//!
//! A nonce is RFC 8489's nonce cookie with the "password algorithms" security
//! feature (`obMatJos2gAAA`), then 16 characters of URL-safe base64 of the
//! issue time and an HMAC over that time and the client's IP address,
//! keyed by the nonce key ([`super::TurnConfig::nonce_key`]). Checking one
//! needs no state, so a flood of unauthenticated requests costs no memory, and
//! servers that share the key accept each other's nonces.

use std::net::{IpAddr, SocketAddr};

use std::collections::BTreeMap;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use md5::{Digest, Md5};
use sha1::Sha1;
use sha2::Sha256;

use crate::stun::message::Integrity;

/// How long a nonce is accepted (RFC 8656 suggests an hour at most; we use 10 minutes).
pub const NONCE_LIFETIME_SECS: u64 = 600;
/// RFC 8489 §9.2's nonce cookie, `obMatJos2`, and the 24 bits of STUN security features in base64: bit 0,
/// "password algorithms", set (`gAAA`), so that a client knows PASSWORD-ALGORITHMS was offered and a
/// man in the middle that strips it is noticed. After it: the issue time (4 bytes, unix seconds) and a
/// 7-byte HMAC of it and the client's address, 15 characters of unpadded URL-safe base64 (28 in all: small,
/// because a 401 to an unauthenticated request must not be a reflection amplifier; 56 bits of MAC are
/// plenty for a value that only proves freshness, the key proves who is asking).
const NONCE_PREFIX: &str = "obMatJos2gAAA";
/// The bytes after the prefix: 4 of time, 7 of HMAC.
const NONCE_RAW: usize = 11;

/// A password algorithm (RFC 8489 §18.5): how the long-term key is derived from the password.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PasswordAlgorithm {
    /// MD5(username ":" realm ":" password), 16 bytes: RFC 5389's, what every client uses.
    Md5,
    /// SHA-256(username ":" realm ":" password), 32 bytes.
    Sha256,
}

impl PasswordAlgorithm {
    /// The IANA number (RFC 8489 §18.5).
    pub fn number(self) -> u16 {
        match self {
            PasswordAlgorithm::Md5 => 1,
            PasswordAlgorithm::Sha256 => 2,
        }
    }

    /// The algorithm with IANA number `n`.
    pub fn from_number(n: u16) -> Option<Self> {
        match n {
            1 => Some(PasswordAlgorithm::Md5),
            2 => Some(PasswordAlgorithm::Sha256),
            _ => None,
        }
    }
}

/// The PASSWORD-ALGORITHMS value this server sends with every challenge: SHA-256, then MD5, neither
/// with parameters. A request that names an algorithm must echo exactly this list (RFC 8489 §9.2.4).
pub const PASSWORD_ALGORITHMS: [u8; 8] = [0, 2, 0, 0, 0, 1, 0, 0];

/// The long-term credential key with SHA-256 (RFC 8489 §18.5.1.2): SHA-256(username ":" realm ":" password).
pub fn long_term_key_sha256(username: &str, realm: &str, password: &str) -> [u8; 32] {
    credential_digest::<Sha256>(username, realm, password).into()
}

/// `D(username ":" realm ":" password)`: the long-term key with either password algorithm.
fn credential_digest<D: Digest>(username: &str, realm: &str, password: &str) -> md5::digest::Output<D> {
    let mut h = D::new();
    for (i, part) in [username, realm, password].into_iter().enumerate() {
        if i > 0 {
            h.update(b":");
        }
        h.update(part.as_bytes());
    }
    h.finalize()
}

/// A long-term key (16 bytes with MD5, 32 with SHA-256) and the integrity attribute the messages of
/// its session carry: MESSAGE-INTEGRITY-SHA256 when the client's request did, else MESSAGE-INTEGRITY
/// (RFC 8489 §9.2.4: a response uses the request's). Its `Debug` output never shows the key.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct SessionKey {
    bytes: [u8; 32],
    len: u8,
    sha256_integrity: bool,
}

impl std::fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionKey").field("len", &self.len).field("sha256_integrity", &self.sha256_integrity).finish_non_exhaustive()
    }
}

impl SessionKey {
    /// `key` (16 or 32 bytes; longer is cut), sealing with MESSAGE-INTEGRITY-SHA256 when `sha256_integrity`.
    pub fn new(key: &[u8], sha256_integrity: bool) -> Self {
        let mut bytes = [0u8; 32];
        let len = key.len().min(32);
        bytes[..len].copy_from_slice(&key[..len]);
        SessionKey { bytes, len: len as u8, sha256_integrity }
    }

    /// The key's bytes.
    pub fn key(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }

    /// The integrity attribute and key to seal this session's messages with.
    pub fn integrity(&self) -> Integrity<'_> {
        if self.sha256_integrity {
            Integrity::Sha256(self.key())
        } else {
            Integrity::Sha1(self.key())
        }
    }
}

/// The long-term credential key: MD5(username ":" realm ":" password).
pub fn long_term_key(username: &str, realm: &str, password: &str) -> [u8; 16] {
    credential_digest::<Md5>(username, realm, password).into()
}

/// The TURN REST API password for `username`: base64(HMAC-SHA1(secret, username)),
/// as coturn's `static-auth-secret` computes it.
pub fn rest_password(secret: &[u8], username: &str) -> String {
    let mut mac = Hmac::<Sha1>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(username.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// A TURN REST API username valid until `expiry_unix`: `expiry[:name]`.
pub fn rest_username(expiry_unix: u64, name: Option<&str>) -> String {
    match name {
        Some(n) if !n.is_empty() => format!("{expiry_unix}:{n}"),
        _ => expiry_unix.to_string(),
    }
}

/// Why a username has no key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CredentialError {
    /// No such static user, and not a REST API username.
    UnknownUser,
    /// A REST API username whose expiry has passed.
    Expired,
}

/// The credential store of a TURN server. Its `Debug` output never shows keys.
pub struct Credentials {
    realm: String,
    /// Each static user's keys: MD5 and SHA-256.
    users: BTreeMap<String, ([u8; 16], [u8; 32])>,
    rest_secret: Option<Vec<u8>>,
    nonce_key: [u8; 32],
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("realm", &self.realm)
            .field("users", &self.users.len())
            .field("rest_secret", &self.rest_secret.as_ref().map(|_| "<redacted>"))
            .finish_non_exhaustive()
    }
}

impl Credentials {
    /// A store for `realm` with static `users` (name, password) and an optional REST secret.
    pub fn new(realm: &str, users: &[(String, String)], rest_secret: Option<&str>, nonce_key: [u8; 32]) -> Self {
        let users = users
            .iter()
            .map(|(u, p)| (u.clone(), (long_term_key(u, realm, p), long_term_key_sha256(u, realm, p))))
            .collect();
        Credentials {
            realm: realm.to_owned(),
            users,
            rest_secret: rest_secret.map(|s| s.as_bytes().to_vec()),
            nonce_key,
        }
    }

    /// The realm.
    pub fn realm(&self) -> &str {
        &self.realm
    }

    /// The MD5 key for `username` at unix time `now_unix`.
    pub fn key_for(&self, username: &str, now_unix: u64) -> Result<[u8; 16], CredentialError> {
        let k = self.key_with(username, now_unix, PasswordAlgorithm::Md5)?;
        let mut out = [0u8; 16];
        out.copy_from_slice(&k[..16]);
        Ok(out)
    }

    /// The key for `username` at unix time `now_unix` with `algorithm`: 16 bytes (MD5) or 32 (SHA-256).
    pub fn key_with(&self, username: &str, now_unix: u64, algorithm: PasswordAlgorithm) -> Result<Vec<u8>, CredentialError> {
        if let Some((md5, sha256)) = self.users.get(username) {
            return Ok(match algorithm {
                PasswordAlgorithm::Md5 => md5.to_vec(),
                PasswordAlgorithm::Sha256 => sha256.to_vec(),
            });
        }
        let Some(secret) = &self.rest_secret else {
            return Err(CredentialError::UnknownUser);
        };
        let digits = username.split(':').next().unwrap_or("");
        let Ok(expiry) = digits.parse::<u64>() else {
            return Err(CredentialError::UnknownUser);
        };
        if expiry <= now_unix {
            return Err(CredentialError::Expired);
        }
        let password = rest_password(secret, username);
        Ok(match algorithm {
            PasswordAlgorithm::Md5 => long_term_key(username, &self.realm, &password).to_vec(),
            PasswordAlgorithm::Sha256 => long_term_key_sha256(username, &self.realm, &password).to_vec(),
        })
    }

    /// The MAC of a nonce: over its time and the client's IP. Not its port: a client that opens another
    /// connection (a TCP relay's data connection, RFC 6062) reuses its nonce, as coturn's clients do, and
    /// what the nonce proves (the client receives at that address) is the IP's.
    fn nonce_mac(&self, ts: u64, client: SocketAddr) -> Hmac<Sha1> {
        let mut mac = Hmac::<Sha1>::new_from_slice(&self.nonce_key).expect("HMAC takes any key length");
        mac.update(&ts.to_be_bytes());
        match client.ip() {
            IpAddr::V4(a) => mac.update(&a.octets()),
            IpAddr::V6(a) => mac.update(&a.octets()),
        }
        mac
    }

    /// A fresh nonce for `client` at unix time `now_unix`.
    pub fn make_nonce(&self, now_unix: u64, client: SocketAddr) -> String {
        let ts = now_unix.min(u64::from(u32::MAX));
        let tag = self.nonce_mac(ts, client).finalize().into_bytes();
        let mut raw = [0u8; NONCE_RAW];
        raw[..4].copy_from_slice(&(ts as u32).to_be_bytes());
        raw[4..].copy_from_slice(&tag[..NONCE_RAW - 4]);
        let mut s = String::with_capacity(NONCE_PREFIX.len() + 15);
        s.push_str(NONCE_PREFIX);
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode_string(raw, &mut s);
        s
    }

    /// Whether `nonce` was made by this store for `client` within the last
    /// [`NONCE_LIFETIME_SECS`]. The MAC is compared in constant time.
    pub fn check_nonce(&self, nonce: &str, now_unix: u64, client: SocketAddr) -> bool {
        let Some(rest) = nonce.strip_prefix(NONCE_PREFIX) else {
            return false;
        };
        let mut raw = [0u8; NONCE_RAW];
        if rest.len() != 15 || base64::engine::general_purpose::URL_SAFE_NO_PAD.decode_slice(rest, &mut raw) != Ok(NONCE_RAW) {
            return false;
        }
        let ts = u64::from(u32::from_be_bytes([raw[0], raw[1], raw[2], raw[3]]));
        let fresh = ts <= now_unix && now_unix - ts < NONCE_LIFETIME_SECS;
        self.nonce_mac(ts, client).verify_truncated_left(&raw[4..]).is_ok() && fresh
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> Credentials {
        Credentials::new("realm", &[("alice".into(), "pw".into())], Some("s3cret"), [3; 32])
    }

    #[test]
    fn static_and_rest_keys() {
        let c = store();
        assert_eq!(c.key_for("alice", 0), Ok(long_term_key("alice", "realm", "pw")));
        assert_eq!(c.key_for("bob", 0), Err(CredentialError::UnknownUser));
        let user = rest_username(1000, Some("bob"));
        let k = c.key_for(&user, 999).unwrap();
        assert_eq!(k, long_term_key(&user, "realm", &rest_password(b"s3cret", &user)));
        assert_eq!(c.key_for(&user, 1000), Err(CredentialError::Expired));
        assert_eq!(c.key_for("1000", 999).map(|_| ()), Ok(()));
    }

    #[test]
    fn rest_password_matches_coturn_reference() {
        // echo -n "1600000000:alice" | openssl dgst -sha1 -hmac "north" -binary | base64
        assert_eq!(rest_password(b"north", "1600000000:alice"), "gq98pTOhhHaAu0we9aV79kOVVv0=");
    }

    #[test]
    fn nonces_are_bound_to_client_and_expire() {
        let c = store();
        let a: SocketAddr = "192.0.2.1:1000".parse().unwrap();
        let same_ip: SocketAddr = "192.0.2.1:1001".parse().unwrap();
        let b: SocketAddr = "192.0.2.2:1000".parse().unwrap();
        let n = c.make_nonce(5000, a);
        assert!(c.check_nonce(&n, 5000, a));
        assert!(c.check_nonce(&n, 5000, same_ip), "another connection of the same host");
        assert!(c.check_nonce(&n, 5000 + NONCE_LIFETIME_SECS - 1, a));
        assert!(!c.check_nonce(&n, 5000 + NONCE_LIFETIME_SECS, a));
        assert!(!c.check_nonce(&n, 5000, b));
        assert!(!c.check_nonce(&n, 4999, a));
        let other = Credentials::new("realm", &[], None, [4; 32]);
        assert!(!other.check_nonce(&n, 5000, a));
        assert!(!c.check_nonce("obMatJos2gAAAzzzz", 5000, a));
        assert!(!c.check_nonce("obMatJos2gAAAééééééééééééééé", 5000, a));
        assert!(!c.check_nonce("obMatJos2gAAA###############", 5000, a));
        assert!(!c.check_nonce(&n.replace("obMatJos2gAAA", "obMatJos2AAAA"), 5000, a), "the security features are part of the nonce");
        assert_eq!(n.len(), 28, "{n}");
        assert!(n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'), "a quoted-string's characters: {n}");
    }
}
