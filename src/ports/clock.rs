//! The clock port.

use std::fmt::Debug;

use chrono::{DateTime, Utc};

/// The time, as the engine sees it. The domain never reads a clock: the engine asks this port
/// once per command and passes `now` down.
pub trait Clock: Send + Sync + Debug {
    /// The current time.
    fn now(&self) -> DateTime<Utc>;
}

/// The operating system's clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        DateTime::<Utc>::from(std::time::SystemTime::now())
    }
}
