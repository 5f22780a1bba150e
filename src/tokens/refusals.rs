//! The per-caller bound on `token_refused` audit events: an authenticated caller presenting
//! garbage, unknown or foreign tokens in a loop would otherwise write one audit event per
//! call. Each caller (by its principal) gets at most `limit` audited refusals per `window`;
//! beyond that its refusals are still answered, and counted, and the count rides on its next
//! audited refusal (`suppressed`). Time is the engine's clock, so the bound is tested with
//! virtual time.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Duration, Utc};

use crate::domain::{ActorId, Principal};

/// Audited refusals per caller per window, by default.
pub const DEFAULT_REFUSALS_PER_WINDOW: u32 = 20;
/// The default window, in seconds.
pub const DEFAULT_REFUSAL_WINDOW_SECONDS: i64 = 60;
/// Callers tracked before windows that ended with nothing suppressed are dropped.
const MAX_TRACKED_CALLERS: usize = 10_000;

#[derive(Debug, Clone, Copy)]
struct Window {
    started: DateTime<Utc>,
    audited: u32,
    suppressed: u32,
}

/// What to do with one refusal's event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RefusalAudit {
    /// Write it, carrying how many of the caller's refusals before it were not written.
    Write {
        /// Refusals counted since the last one written (0: none).
        suppressed: u32,
    },
    /// Over the caller's bound: counted, not written now.
    Suppress,
}

/// The bound (shared by the clones of a token service).
#[derive(Debug, Clone)]
pub(crate) struct RefusalBound {
    limit: u32,
    window: Duration,
    callers: Arc<Mutex<HashMap<ActorId, Window>>>,
}

impl Default for RefusalBound {
    fn default() -> Self {
        RefusalBound::new(
            DEFAULT_REFUSALS_PER_WINDOW,
            Duration::seconds(DEFAULT_REFUSAL_WINDOW_SECONDS),
        )
    }
}

impl RefusalBound {
    pub(crate) fn new(limit: u32, window: Duration) -> RefusalBound {
        RefusalBound {
            limit: limit.max(1),
            window: window.max(Duration::seconds(1)),
            callers: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// Decides one refusal of `by` at `now`. A poisoned lock writes the event (the bound is
    /// a protection of the audit trail's size, never a reason to lose an event).
    pub(crate) fn decide(&self, by: &Principal, now: DateTime<Utc>) -> RefusalAudit {
        let Ok(mut callers) = self.callers.lock() else {
            return RefusalAudit::Write { suppressed: 0 };
        };
        if callers.len() >= MAX_TRACKED_CALLERS {
            let window = self.window;
            callers.retain(|_, w| w.suppressed > 0 || now < w.started + window);
        }
        let w = callers.entry(by.scope_id()).or_insert(Window {
            started: now,
            audited: 0,
            suppressed: 0,
        });
        if now >= w.started + self.window || now < w.started {
            w.started = now;
            w.audited = 0;
        }
        if w.audited < self.limit {
            w.audited += 1;
            let suppressed = std::mem::take(&mut w.suppressed);
            RefusalAudit::Write { suppressed }
        } else {
            w.suppressed = w.suppressed.saturating_add(1);
            RefusalAudit::Suppress
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(id: &str) -> Principal {
        Principal::Provider(id.parse().expect("id"))
    }

    #[test]
    fn a_caller_gets_its_limit_per_window_and_the_count_rides_on_the_next() {
        let bound = RefusalBound::new(2, Duration::seconds(60));
        let t0 = crate::domain::examples::now();
        let a = p("a");
        assert_eq!(bound.decide(&a, t0), RefusalAudit::Write { suppressed: 0 });
        assert_eq!(bound.decide(&a, t0), RefusalAudit::Write { suppressed: 0 });
        for _ in 0..5 {
            assert_eq!(bound.decide(&a, t0), RefusalAudit::Suppress);
        }
        // Another caller is not bounded by the first.
        assert_eq!(
            bound.decide(&p("b"), t0),
            RefusalAudit::Write { suppressed: 0 }
        );
        // Same id text, another kind of principal: another caller.
        let sys = Principal::System("a".parse().expect("id"));
        assert_eq!(
            bound.decide(&sys, t0),
            RefusalAudit::Write { suppressed: 0 }
        );
        let t1 = t0 + Duration::seconds(60);
        assert_eq!(bound.decide(&a, t1), RefusalAudit::Write { suppressed: 5 });
        assert_eq!(bound.decide(&a, t1), RefusalAudit::Write { suppressed: 0 });
        assert_eq!(bound.decide(&a, t1), RefusalAudit::Suppress);
    }

    #[test]
    fn a_clock_going_back_starts_a_new_window_instead_of_suppressing_forever() {
        let bound = RefusalBound::new(1, Duration::seconds(60));
        let t0 = crate::domain::examples::now();
        let a = p("a");
        assert_eq!(bound.decide(&a, t0), RefusalAudit::Write { suppressed: 0 });
        assert_eq!(bound.decide(&a, t0), RefusalAudit::Suppress);
        let back = t0 - Duration::seconds(1);
        assert_eq!(
            bound.decide(&a, back),
            RefusalAudit::Write { suppressed: 1 }
        );
    }

    proptest::proptest! {
        /// Whatever the times of a caller's refusals (the clock may even step back), no window
        /// has more than `limit` written events, and nothing is lost: the written events plus
        /// the counts they carry plus what is still pending are every refusal.
        #[test]
        fn the_bound_holds_and_every_refusal_is_accounted_for(
            limit in 1u32..5,
            steps in proptest::collection::vec(-5i64..90, 1..200),
        ) {
            let bound = RefusalBound::new(limit, Duration::seconds(60));
            let a = p("a");
            let mut now = crate::domain::examples::now();
            let mut written: Vec<DateTime<Utc>> = Vec::new();
            let mut carried = 0u64;
            for step in &steps {
                now += Duration::seconds(*step);
                match bound.decide(&a, now) {
                    RefusalAudit::Write { suppressed } => {
                        written.push(now);
                        carried += u64::from(suppressed);
                    }
                    RefusalAudit::Suppress => {}
                }
            }
            let pending = bound
                .callers
                .lock()
                .map(|c| c.get(&a.scope_id()).map_or(0, |w| u64::from(w.suppressed)))
                .unwrap_or(0);
            proptest::prop_assert_eq!(written.len() as u64 + carried + pending, steps.len() as u64);
            // Between two resets, at most `limit` writes.
            let mut started = None::<DateTime<Utc>>;
            let mut in_window = 0u32;
            for t in &written {
                match started {
                    Some(s) if *t >= s && *t < s + Duration::seconds(60) => in_window += 1,
                    _ => {
                        started = Some(*t);
                        in_window = 1;
                    }
                }
                proptest::prop_assert!(in_window <= limit);
            }
        }
    }
}
