//! An [`AlertSink`] that delivers alerts to a webhook, signed and at least once, through the
//! same outbox and delivery as the webhook audit sink.

use std::sync::Arc;

use async_trait::async_trait;

use crate::domain::Alert;
use crate::ports::{AlertError, AlertSink, AuditError, AuditSink, Clock};

use super::outbox::Outbox;
use super::webhook::{WebhookAuditSink, WebhookConfig, WebhookError};

/// Delivers every alert to a webhook: `enqueue` appends the alert's audit event
/// ([`Alert::to_event`]) to a trail of alerts of its own (the inner sink, hash-chained) and
/// to the [`Outbox`], and wakes the delivery loop; the receiver gets it as the webhook audit
/// sink's receivers get events: a signed POST (`webhook-id`, `webhook-timestamp`,
/// `webhook-signature`) of the chained event, retried with backoff until a 2xx, dead-lettered
/// after repeated permanent refusals. `enqueue` waits only for the local append and enqueue,
/// never for the receiver. Start delivery with [`WebhookAlertSink::spawn_delivery`] or drive
/// it with [`WebhookAlertSink::webhook`].
///
/// With a durable inner sink and outbox (the SQLite audit sink and outbox), an alert taken
/// over survives a restart and is delivered after it.
#[derive(Debug, Clone)]
pub struct WebhookAlertSink {
    webhook: Arc<WebhookAuditSink>,
}

impl WebhookAlertSink {
    /// Alerts kept in `trail` and `outbox`, delivered to the webhook of `config`.
    pub async fn new(
        trail: Arc<dyn AuditSink>,
        outbox: Arc<dyn Outbox>,
        config: WebhookConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<WebhookAlertSink, WebhookError> {
        Ok(WebhookAlertSink {
            webhook: WebhookAuditSink::new(trail, outbox, config, clock).await?,
        })
    }

    /// The webhook delivery underneath (delivery passes, dead letters, the outbox).
    pub fn webhook(&self) -> &Arc<WebhookAuditSink> {
        &self.webhook
    }

    /// Starts the background delivery loop (see [`WebhookAuditSink::spawn_delivery`]).
    pub fn spawn_delivery(&self) -> super::webhook::DeliveryLoop {
        self.webhook.spawn_delivery()
    }
}

#[async_trait]
impl AlertSink for WebhookAlertSink {
    async fn enqueue(&self, alert: &Alert) -> Result<(), AlertError> {
        match self.webhook.append(&alert.to_event()).await {
            Ok(_) => Ok(()),
            Err(AuditError::Unavailable { message }) => Err(AlertError::Unavailable { message }),
            Err(e) => Err(AlertError::Other(Box::new(e))),
        }
    }
}
