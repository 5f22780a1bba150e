//! A clock that only moves when told to (the quinn-proto virtual clock).

use std::sync::atomic::{AtomicI64, Ordering};

use chrono::{DateTime, Utc};

use crate::ports::Clock;

/// A [`Clock`] that stands still until the test moves it: every test is deterministic and
/// timeouts, expiries and rolling windows are tested without sleeping.
///
/// Thread-safe (an atomic count of microseconds since the Unix epoch); share it as
/// `Arc<ManualClock>`, which coerces to `Arc<dyn Clock>`. Sub-microsecond precision is dropped;
/// times saturate at chrono's representable range instead of overflowing.
///
/// ```
/// use agent_mandate::adapters::memory::ManualClock;
/// use agent_mandate::ports::Clock;
/// use chrono::{Duration, TimeZone, Utc};
/// let start = Utc.with_ymd_and_hms(2026, 6, 28, 12, 0, 0).unwrap();
/// let clock = ManualClock::new(start);
/// assert_eq!(clock.now(), start);
/// clock.advance(Duration::minutes(5));
/// clock.advance_std(std::time::Duration::from_secs(60));
/// assert_eq!(clock.now(), start + Duration::minutes(6));
/// clock.set(start);
/// assert_eq!(clock.now(), start);
/// ```
#[derive(Debug)]
pub struct ManualClock {
    micros: AtomicI64,
}

fn bounds() -> (i64, i64) {
    (
        DateTime::<Utc>::MIN_UTC.timestamp_micros(),
        DateTime::<Utc>::MAX_UTC.timestamp_micros(),
    )
}

fn to_micros(t: DateTime<Utc>) -> i64 {
    let (min, max) = bounds();
    t.timestamp_micros().clamp(min, max)
}

fn from_micros(micros: i64) -> DateTime<Utc> {
    let (min, max) = bounds();
    DateTime::from_timestamp_micros(micros.clamp(min, max)).unwrap_or(DateTime::<Utc>::UNIX_EPOCH)
}

impl ManualClock {
    /// A clock showing `start`.
    pub fn new(start: DateTime<Utc>) -> ManualClock {
        ManualClock {
            micros: AtomicI64::new(to_micros(start)),
        }
    }

    /// Sets the time (it may go backwards: tests of clock skew need that).
    pub fn set(&self, t: DateTime<Utc>) {
        self.micros.store(to_micros(t), Ordering::SeqCst);
    }

    /// Moves the time by `by` (negative moves it back) and returns the new time.
    pub fn advance(&self, by: chrono::Duration) -> DateTime<Utc> {
        let delta = by
            .num_microseconds()
            .unwrap_or(if by < chrono::Duration::zero() {
                i64::MIN
            } else {
                i64::MAX
            });
        self.add_micros(delta)
    }

    /// Moves the time forward by a `std` duration and returns the new time.
    pub fn advance_std(&self, by: std::time::Duration) -> DateTime<Utc> {
        self.add_micros(i64::try_from(by.as_micros()).unwrap_or(i64::MAX))
    }

    fn add_micros(&self, delta: i64) -> DateTime<Utc> {
        let (min, max) = bounds();
        let step = |m: i64| m.saturating_add(delta).clamp(min, max);
        let previous = self
            .micros
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |m| Some(step(m)))
            .unwrap_or_else(|m| m);
        from_micros(step(previous))
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        from_micros(self.micros.load(Ordering::SeqCst))
    }
}
