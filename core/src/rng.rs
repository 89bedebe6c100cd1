//! Seeded randomness: the core never asks the OS.

use hmac::{Hmac, Mac};
use sha1::Sha1;

/// The seed an engine is built from. Shells fill it from the OS; tests pick one.
pub type Seed = [u8; 32];

/// Derives an independent 32-byte secret for `purpose` from `seed`, so that
/// what one use reveals (e.g. transaction IDs on the wire) says nothing about
/// another (e.g. the nonce key).
pub fn derive(seed: &Seed, purpose: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    for (i, chunk) in out.chunks_mut(20).enumerate() {
        let mut mac = Hmac::<Sha1>::new_from_slice(seed).expect("HMAC takes any key length");
        mac.update(purpose.as_bytes());
        mac.update(&[i as u8]);
        let tag = mac.finalize().into_bytes();
        chunk.copy_from_slice(&tag[..chunk.len()]);
    }
    out
}

/// A small, fast, deterministic generator (wyrand) for values that must be
/// unpredictable to peers but not secret, such as STUN transaction IDs.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator seeded from `seed` for `purpose`.
    pub fn new(seed: &Seed, purpose: &str) -> Self {
        let d = derive(seed, purpose);
        Rng(u64::from_le_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]]))
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0xa076_1d64_78bd_642f);
        let t = u128::from(self.0) * u128::from(self.0 ^ 0xe703_7ed1_a0b4_28db);
        ((t >> 64) ^ t) as u64
    }

    /// Fills `out` with random bytes.
    pub fn fill(&mut self, out: &mut [u8]) {
        for chunk in out.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}
