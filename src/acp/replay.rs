//! The replay cache of accepted request signatures.
//!
//! A signature covers the `Timestamp` and the body, not the `Idempotency-Key` (the published
//! protocol signs no header). Without a memory of the signatures accepted, a captured request
//! could be sent again within the timestamp window under a fresh key and mint a second token.
//! So each accepted signature is remembered, until its timestamp leaves the window, with the
//! caller and the key it came with: the same signature with the same caller and key is the
//! platform's own retry (the idempotency record answers it); with another key or caller it is
//! a replay, refused.
//!
//! The cache is bounded: when it is full of signatures still inside their window, new signed
//! requests are refused with a retry hint (fail closed) rather than forgetting a signature an
//! attacker could then replay. It lives in the process: services behind a load balancer need
//! the platform's retries to reach the same process within the window, or a shared cache.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sha2::{Digest as _, Sha256};

/// The default number of signatures remembered.
pub const DEFAULT_REPLAY_CACHE_CAPACITY: usize = 100_000;

/// What the cache says of a signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Seen {
    /// Not seen: now remembered for this caller and key.
    First,
    /// Seen with this caller and key: the platform's retry.
    SameRequest,
    /// Seen with another caller or key: a replay.
    Replayed,
    /// Full of live signatures: retry after the hint.
    Full {
        /// When the oldest entry leaves its window.
        retry_after: std::time::Duration,
    },
}

/// Accepted signatures (by their SHA-256) and, for each, the digest of the caller and key it
/// came with and the end of its timestamp's window.
#[derive(Debug, Default)]
pub(crate) struct ReplayCache {
    seen: HashMap<[u8; 32], ([u8; 32], DateTime<Utc>)>,
    /// The clock at the last pruning: every signature whose window ended before it may have
    /// been forgotten, so one is refused as a replay (a clock stepped back cannot revive it).
    pruned_through: Option<DateTime<Utc>>,
}

fn digest(parts: &[&[u8]]) -> [u8; 32] {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_be_bytes());
        h.update(p);
    }
    h.finalize().into()
}

impl ReplayCache {
    /// Records `signature` (the digest of the signed message), accepted at `now` for `caller` (its scope id) and
    /// `key`, valid until `until` (its timestamp plus the window), unless seen already.
    pub(crate) fn check_and_record(
        &mut self,
        signature: &[u8],
        caller: &str,
        key: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
        capacity: usize,
    ) -> Seen {
        let sig = digest(&[signature]);
        let request = digest(&[caller.as_bytes(), key.as_bytes()]);
        if let Some((first, end)) = self.seen.get(&sig)
            && *end >= now
        {
            return if *first == request {
                Seen::SameRequest
            } else {
                Seen::Replayed
            };
        }
        if self.pruned_through.is_some_and(|t| until < t) {
            return Seen::Replayed;
        }
        if self.seen.len() >= capacity {
            self.seen.retain(|_, (_, end)| *end >= now);
            self.pruned_through = Some(self.pruned_through.map_or(now, |t| t.max(now)));
        }
        if self.seen.len() >= capacity.max(1) {
            let oldest = self.seen.values().map(|(_, end)| *end).min().unwrap_or(now);
            let wait = (oldest - now).num_milliseconds().max(0) + 1000;
            return Seen::Full {
                retry_after: std::time::Duration::from_millis(u64::try_from(wait).unwrap_or(1000)),
            };
        }
        self.seen.insert(sig, (request, until));
        Seen::First
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.seen.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;

    #[test]
    fn a_signature_is_bound_to_its_first_caller_and_key_until_its_window_ends() {
        let now = crate::domain::examples::now();
        let until = now + Duration::seconds(300);
        let mut c = ReplayCache::default();
        assert_eq!(
            c.check_and_record(b"s1", "p", "k1", now, until, 10),
            Seen::First
        );
        assert_eq!(
            c.check_and_record(b"s1", "p", "k1", now, until, 10),
            Seen::SameRequest
        );
        assert_eq!(
            c.check_and_record(b"s1", "p", "k2", now, until, 10),
            Seen::Replayed
        );
        assert_eq!(
            c.check_and_record(b"s1", "q", "k1", now, until, 10),
            Seen::Replayed
        );
        // At the window's last instant it is still remembered.
        assert_eq!(
            c.check_and_record(b"s1", "p", "k2", until, until, 10),
            Seen::Replayed
        );
        // Caller and key are length-prefixed: ("pk", "1") is not ("p", "k1").
        assert_eq!(
            c.check_and_record(b"s1", "pk", "1", now, until, 10),
            Seen::Replayed
        );
    }

    #[test]
    fn a_full_cache_refuses_new_signatures_until_old_ones_expire() {
        let now = crate::domain::examples::now();
        let until = now + Duration::seconds(10);
        let mut c = ReplayCache::default();
        assert_eq!(
            c.check_and_record(b"a", "p", "k1", now, until, 2),
            Seen::First
        );
        assert_eq!(
            c.check_and_record(b"b", "p", "k2", now, until, 2),
            Seen::First
        );
        assert!(matches!(
            c.check_and_record(b"c", "p", "k3", now, until, 2),
            Seen::Full { retry_after } if retry_after >= std::time::Duration::from_secs(10)
        ));
        // Still remembered: the full cache forgot nothing.
        assert_eq!(
            c.check_and_record(b"a", "p", "k9", now, until, 2),
            Seen::Replayed
        );
        let later = until + Duration::seconds(1);
        assert_eq!(
            c.check_and_record(b"c", "p", "k3", later, later, 2),
            Seen::First
        );
        assert_eq!(c.len(), 1, "expired entries were pruned");
    }
}
