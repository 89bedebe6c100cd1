//! Shared parts of Switchboard's benchmarks: a minimal TURN client (the
//! messages of one allocation with a permission and a channel), used both by
//! the criterion benches in-process and by the `turnload` load generator
//! against real servers.

use std::net::SocketAddr;

use switchboard_core::stun::channel_data::{emit_header, HEADER_LEN};
use switchboard_core::stun::message::{append_attribute, append_fingerprint, append_integrity};
use switchboard_core::stun::view::{attr, encode_xor_address, method, Class, StunView, MAGIC_COOKIE};
use switchboard_core::turn::auth::long_term_key;

/// Long-term credentials and the server's challenge.
#[derive(Debug, Clone)]
pub struct Auth {
    /// User name.
    pub user: String,
    /// Realm (from the server's 401).
    pub realm: String,
    /// Nonce (from the server's 401 or 438).
    pub nonce: String,
    /// MD5(user:realm:pass).
    pub key: [u8; 16],
}

/// A STUN request (class request) of `method` with `tid`, the given raw
/// attributes, and long-term authentication when `auth` is given.
pub fn request(m: u16, tid: [u8; 12], attrs: &[(u16, Vec<u8>)], auth: Option<&Auth>) -> Vec<u8> {
    let mut b = Vec::with_capacity(160);
    b.extend_from_slice(&m.to_be_bytes());
    b.extend_from_slice(&[0, 0]);
    b.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
    b.extend_from_slice(&tid);
    for (t, v) in attrs {
        append_attribute(&mut b, *t, v);
    }
    if let Some(a) = auth {
        append_attribute(&mut b, attr::USERNAME, a.user.as_bytes());
        append_attribute(&mut b, attr::REALM, a.realm.as_bytes());
        append_attribute(&mut b, attr::NONCE, a.nonce.as_bytes());
        append_integrity(&mut b, &a.key);
        append_fingerprint(&mut b);
    }
    b
}

/// A Binding request, as `turnutils_stunclient` sends it.
pub fn binding_request(tid: [u8; 12]) -> Vec<u8> {
    request(method::BINDING, tid, &[], None)
}

/// An XOR-PEER-ADDRESS attribute value.
pub fn xor_peer(peer: SocketAddr, tid: &[u8; 12]) -> (u16, Vec<u8>) {
    let mut x = [0u8; 20];
    let n = encode_xor_address(peer, tid, &mut x);
    (attr::XOR_PEER_ADDRESS, x[..n].to_vec())
}

/// A ChannelData message: channel number, length, payload, padding to 4.
pub fn channel_data(number: u16, payload: &[u8]) -> Vec<u8> {
    let mut b = vec![0; HEADER_LEN + payload.len().next_multiple_of(4)];
    // The header fits its four bytes; a payload over 64 KiB is cut, as the length field would be.
    let len = payload.len().min(usize::from(u16::MAX));
    let _ = emit_header(number, len, &mut b[..HEADER_LEN]);
    b[HEADER_LEN..HEADER_LEN + len].copy_from_slice(&payload[..len]);
    b
}

/// Why a set-up step failed.
#[derive(Debug)]
pub struct SetupError(pub String);

impl std::fmt::Display for SetupError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SetupError {}

/// A Refresh with LIFETIME 0: ends the allocation (RFC 8656 §7.3).
pub fn release(auth: &Auth, tid: [u8; 12]) -> Vec<u8> {
    request(method::REFRESH, tid, &[(attr::LIFETIME, vec![0; 4])], Some(auth))
}

/// Sets up an allocation with a permission and channel `channel` to `peer`,
/// exchanging messages through `exchange` (send a request, return its
/// response). Returns the relayed address, and the credentials with the
/// server's nonce for later requests (such as [`release`]).
pub fn setup_channel(
    mut exchange: impl FnMut(&[u8]) -> Result<Vec<u8>, SetupError>,
    user: &str,
    pass: &str,
    peer: SocketAddr,
    channel: u16,
) -> Result<(SocketAddr, Auth), SetupError> {
    let mut n = 0u32;
    let mut tid = move || {
        n += 1;
        let mut t = [0x42u8; 12];
        t[..4].copy_from_slice(&n.to_be_bytes());
        t
    };
    let udp = (attr::REQUESTED_TRANSPORT, vec![17, 0, 0, 0]);
    let challenge = exchange(&request(method::ALLOCATE, tid(), std::slice::from_ref(&udp), None))?;
    let v = StunView::new_checked(&challenge).map_err(|e| SetupError(format!("bad 401: {e:?}")))?;
    let text = |t| v.find(t).map(|b| String::from_utf8_lossy(b).into_owned());
    let (Some(realm), Some(nonce)) = (text(attr::REALM), text(attr::NONCE)) else {
        return Err(SetupError("the server did not challenge the Allocate".into()));
    };
    let auth = Auth { key: long_term_key(user, &realm, pass), user: user.into(), realm, nonce };
    let ok = |resp: &[u8], what: &str| -> Result<(), SetupError> {
        let v = StunView::new_checked(resp).map_err(|e| SetupError(format!("{what}: bad response {e:?}")))?;
        if v.class() != Class::Success {
            let code = v.find(attr::ERROR_CODE).map(|e| u16::from(e[2]) * 100 + u16::from(e[3]));
            return Err(SetupError(format!("{what} failed: {code:?}")));
        }
        Ok(())
    };
    let resp = exchange(&request(method::ALLOCATE, tid(), &[udp], Some(&auth)))?;
    ok(&resp, "Allocate")?;
    let relay = StunView::new_checked(&resp)
        .ok()
        .and_then(|v| v.xor_address(attr::XOR_RELAYED_ADDRESS))
        .ok_or_else(|| SetupError("no XOR-RELAYED-ADDRESS".into()))?;
    let t = tid();
    let resp = exchange(&request(method::CREATE_PERMISSION, t, &[xor_peer(peer, &t)], Some(&auth)))?;
    ok(&resp, "CreatePermission")?;
    let t = tid();
    let number = (attr::CHANNEL_NUMBER, vec![(channel >> 8) as u8, channel as u8, 0, 0]);
    let resp = exchange(&request(method::CHANNEL_BIND, t, &[number, xor_peer(peer, &t)], Some(&auth)))?;
    ok(&resp, "ChannelBind")?;
    Ok((relay, auth))
}
