//! Allocation quotas, kept in a ledger that several [`super::TurnServer`]s
//! may share.
//!
//! A server counts the allocations it holds per user and in total against
//! [`super::TurnConfig::user_quota`] and `total_quota`. A shell that runs one
//! engine per worker thread gives every engine the same ledger (the
//! [`QuotaLedger`] in the config they are cloned from is one `Arc`), so a
//! quota of 3 admits exactly 3 allocations whichever workers the clients land
//! on. The [`ReservationLedger`] does the same for RESERVATION-TOKENs (RFC
//! 8656 §7.2): a token issued on one worker is redeemed on whichever worker
//! the next Allocate lands on. These are the only state workers share, and
//! they are touched only when an allocation or reservation is made or ends,
//! never on the data path. A lock, not I/O: the core stays sans-IO.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

/// Allocation counts per user and in total. Cloning shares it.
#[derive(Debug, Clone, Default)]
pub struct QuotaLedger(Arc<Mutex<Counts>>);

#[derive(Debug, Default)]
struct Counts {
    per_user: BTreeMap<String, u32>,
    total: u64,
}

impl QuotaLedger {
    /// An empty ledger of its own.
    pub fn new() -> Self {
        Self::default()
    }

    fn counts(&self) -> std::sync::MutexGuard<'_, Counts> {
        // The counts stay consistent whatever panicked while holding them: each change is one step.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes one allocation for `user` if neither `user_quota` (per user) nor
    /// `total_quota` would be exceeded (0: no limit); false, taking nothing,
    /// if one would.
    pub fn try_take(&self, user: &str, user_quota: u32, total_quota: u32) -> bool {
        let mut c = self.counts();
        let held = c.per_user.get(user).copied().unwrap_or(0);
        if (user_quota > 0 && held >= user_quota) || (total_quota > 0 && c.total >= u64::from(total_quota)) {
            return false;
        }
        *c.per_user.entry(user.to_string()).or_insert(0) += 1;
        c.total += 1;
        true
    }

    /// Gives back one allocation of `user` (taken with [`QuotaLedger::try_take`]).
    pub fn give_back(&self, user: &str) {
        let mut c = self.counts();
        if let Some(n) = c.per_user.get_mut(user) {
            *n -= 1;
            if *n == 0 {
                c.per_user.remove(user);
            }
            c.total = c.total.saturating_sub(1);
        }
    }

    /// Allocations `user` holds.
    pub fn held(&self, user: &str) -> u32 {
        self.counts().per_user.get(user).copied().unwrap_or(0)
    }

    /// Allocations held in total.
    pub fn total(&self) -> u64 {
        self.counts().total
    }
}

/// Reserved relay addresses by RESERVATION-TOKEN, for every server that
/// shares it (cloning shares it). The server that reserved the port expires
/// its tokens; any server may redeem one, once.
#[derive(Debug, Clone, Default)]
pub struct ReservationLedger(Arc<Mutex<BTreeMap<u64, std::net::SocketAddr>>>);

impl ReservationLedger {
    fn tokens(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, std::net::SocketAddr>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records a reservation.
    pub fn insert(&self, token: u64, relay: std::net::SocketAddr) {
        self.tokens().insert(token, relay);
    }

    /// The address `token` reserves, if it is still unspent.
    pub fn get(&self, token: u64) -> Option<std::net::SocketAddr> {
        self.tokens().get(&token).copied()
    }

    /// Spends `token`: its address, if it was unspent.
    pub fn take(&self, token: u64) -> Option<std::net::SocketAddr> {
        self.tokens().remove(&token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotas_hold_across_clones_and_giving_back_frees_a_slot() {
        let a = QuotaLedger::new();
        let b = a.clone();
        assert!(a.try_take("alice", 2, 3));
        assert!(b.try_take("alice", 2, 3));
        assert!(!a.try_take("alice", 2, 3), "user quota across clones");
        assert!(b.try_take("bob", 2, 3));
        assert!(!a.try_take("carol", 2, 3), "total quota across clones");
        assert_eq!((a.held("alice"), b.total()), (2, 3));
        b.give_back("alice");
        assert!(a.try_take("carol", 2, 3));
        // Giving back what was never taken changes nothing.
        a.give_back("nobody");
        assert_eq!(b.total(), 3);
        // No limits.
        let free = QuotaLedger::new();
        assert!((0..1000).all(|_| free.try_take("x", 0, 0)));
        // Another ledger is another count.
        assert_eq!(QuotaLedger::new().total(), 0);
    }
}
