//! Hash maps keyed by a seed-derived secret: resistant to collision floods
//! from hostile keys (client addresses), and deterministic for a given seed.

use crate::rng::{derive, Seed};

/// A hash map with a keyed, seeded hasher.
pub type Map<K, V> = std::collections::HashMap<K, V, ahash::RandomState>;

/// The hasher state derived from `seed`. Clone it into every map.
pub fn hasher(seed: &Seed) -> ahash::RandomState {
    let d = derive(seed, "hash map keys");
    let k = |i: usize| u64::from_le_bytes(d[i * 8..i * 8 + 8].try_into().expect("8 bytes"));
    ahash::RandomState::with_seeds(k(0), k(1), k(2), k(3))
}
