//! The alerts port: where the engine's controls tell people (the buyer, security,
//! operations) what they found.

use std::fmt::Debug;

use async_trait::async_trait;

pub use crate::domain::{Alert, AlertKind, Audience, Severity};

/// An alert sink failure. The engine never fails or waits on a command for it: the alert is
/// on the audit trail already, and the engine retries the hand-over at its next flush.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AlertError {
    /// The sink cannot take the alert now; retry later. Nothing was enqueued.
    #[error("alert sink unavailable: {message}")]
    Unavailable {
        /// Why.
        message: String,
    },
    /// Anything else an adapter reports.
    #[error("alert sink error: {0}")]
    Other(Box<dyn std::error::Error + Send + Sync>),
}

/// Where alerts go.
///
/// Contract: `enqueue` takes the alert over quickly (it is bounded by the engine's
/// `Controls::alert_enqueue_timeout`; a sink that is slower is treated as unavailable) and
/// delivers it at least once from there on: a sink that reaches people over a network keeps
/// the alert in an outbox of its own and delivers in the background (see
/// `adapters::http::WebhookAlertSink`). Enqueueing the same alert twice may deliver it twice
/// (the engine hands an alert over again when it cannot tell whether the first hand-over
/// arrived).
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// use agent_mandate::adapters::memory::MemoryAlerts;
/// use agent_mandate::domain::{examples, Alert, AlertKind};
/// use agent_mandate::ports::AlertSink;
/// let sink = MemoryAlerts::new();
/// let alert = Alert::new(
///     examples::now(),
///     AlertKind::VaultErrors { errors: 2, window_seconds: 3600 },
///     "two vault errors",
/// );
/// sink.enqueue(&alert).await.unwrap();
/// assert_eq!(sink.alerts(), vec![alert]);
/// # });
/// ```
#[async_trait]
pub trait AlertSink: Send + Sync + Debug {
    /// Takes one alert over for delivery.
    async fn enqueue(&self, alert: &Alert) -> Result<(), AlertError>;
}
