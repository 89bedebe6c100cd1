//! # switchboard-core
//!
//! The sans-IO protocol engine of Switchboard: STUN (RFC 8489) and TURN
//! (RFC 8656), signaling rooms, and an SFU on str0m. It owns no sockets, reads
//! no clock and starts no threads: time comes in as an argument, randomness
//! as a seed, packets as borrowed bytes, and what to send comes back out.
//!
//! Start at [`Switchboard`] for the whole server and its drive contract, or
//! use a part alone: [`turn::TurnServer`] (which also answers Binding),
//! [`stun::StunServer`], [`signal::Signaling`] or `sfu::Sfu`. `examples/`
//! shows a complete server in a plain blocking loop. With `sfu`,
//! `record::TrackRecorder` turns one track's RTP into a container file's bytes.
//! [`probe`] is the client side of `switchboard probe`: RFC 5780 NAT discovery and
//! an end-to-end TURN check, sans-IO too.
//!
//! Cargo features: `sfu` (default) builds the SFU, with str0m and its crypto;
//! without it the core is STUN/TURN and signaling, and `sfu` rooms are
//! refused with `unsupported-mode`. `lab` adds the SFU's test rigs
//! (`lab::Bot`, `lab::Lab`) for tests, benchmarks and load generators.
//!
//! A panic is a bug: every byte from the network is parsed through checked
//! views, and malformed input is dropped and counted, or answered with the
//! protocol's error.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod directory;
pub mod engine;
pub mod framing;
pub mod hash;
pub mod ids;
pub mod probe;
#[cfg(all(feature = "sfu", any(test, feature = "lab")))]
pub mod lab;
#[cfg(feature = "sfu")]
pub mod record;
pub mod rng;
#[cfg(feature = "sfu")]
pub mod sfu;
pub mod signal;
pub mod stun;
pub mod time;
pub mod turn;
#[cfg(feature = "sfu")]
pub mod whip;

pub use engine::{Config, Forward, Input, Output, Placement, Stats, Switchboard};
pub use ids::{AllocationId, Client, ConnId, Family, Via};
pub use rng::Seed;
