//! Alerts in memory.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use async_trait::async_trait;

use crate::domain::Alert;
use crate::ports::{AlertError, AlertSink};

/// An [`AlertSink`] that keeps every alert in memory, in the order enqueued; it can be made
/// to refuse (`set_failing`) to test that a failing sink never fails a command.
///
/// ```
/// use agent_mandate::adapters::memory::MemoryAlerts;
/// let sink = MemoryAlerts::new();
/// assert!(sink.alerts().is_empty());
/// ```
#[derive(Debug, Default)]
pub struct MemoryAlerts {
    alerts: Mutex<Vec<Alert>>,
    failing: AtomicBool,
}

impl MemoryAlerts {
    /// An empty sink.
    pub fn new() -> MemoryAlerts {
        MemoryAlerts::default()
    }

    /// Every alert taken over so far.
    pub fn alerts(&self) -> Vec<Alert> {
        // A push cannot panic half-way: a poisoned lock still holds a consistent list.
        self.alerts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Makes `enqueue` answer [`AlertError::Unavailable`] (or work again).
    pub fn set_failing(&self, failing: bool) {
        self.failing.store(failing, Ordering::SeqCst);
    }
}

#[async_trait]
impl AlertSink for MemoryAlerts {
    async fn enqueue(&self, alert: &Alert) -> Result<(), AlertError> {
        if self.failing.load(Ordering::SeqCst) {
            return Err(AlertError::Unavailable {
                message: "the memory alert sink is set to fail".into(),
            });
        }
        self.alerts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(alert.clone());
        Ok(())
    }
}
