//! What the dashboard shows beyond the engine's reads, as two small ports: the recent alerts
//! ([`AlertFeed`]) and the carts of refused payments ([`CartSource`]).

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::Mutex;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::domain::{
    ActorId, AuditEvent, AuditKind, BuyerId, CartSnapshot, LimitKind, MandateId, Principal,
    SnapshotId,
};
use crate::engine::{Engine, EngineError};

/// How urgent an alert is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum AlertLevel {
    /// Worth a look (a limit's 80% mark crossed).
    Warning,
    /// Something was stopped (an agent suspended, a loop blocked).
    Critical,
}

/// One alert.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Alert {
    /// When.
    pub at: DateTime<Utc>,
    /// How urgent.
    pub level: AlertLevel,
    /// One line.
    pub title: String,
    /// More.
    pub detail: String,
    /// The mandate it is about, if any.
    pub mandate_id: Option<MandateId>,
    /// The agent it is about, if any.
    pub actor_id: Option<ActorId>,
}

impl Alert {
    /// An alert.
    pub fn new(at: DateTime<Utc>, level: AlertLevel, title: impl Into<String>) -> Alert {
        Alert {
            at,
            level,
            title: title.into(),
            detail: String::new(),
            mandate_id: None,
            actor_id: None,
        }
    }

    /// With a detail line.
    pub fn with_detail(mut self, detail: impl Into<String>) -> Alert {
        self.detail = detail.into();
        self
    }

    /// About `mandate`.
    pub fn with_mandate(mut self, mandate: MandateId) -> Alert {
        self.mandate_id = Some(mandate);
        self
    }

    /// About `actor`.
    pub fn with_actor(mut self, actor: ActorId) -> Alert {
        self.actor_id = Some(actor);
        self
    }
}

/// What an [`AlertFeed`] is asked with: the engine, the buyer, and the buyer's audit events
/// the dashboard has already read (oldest first), for feeds built on the trail.
#[derive(Debug)]
#[non_exhaustive]
pub struct AlertContext<'a> {
    /// The engine.
    pub engine: &'a Engine,
    /// The authenticated buyer.
    pub by: &'a Principal,
    /// Their id.
    pub buyer: &'a BuyerId,
    /// Their audit events with sequence numbers, oldest first.
    pub events: &'a [(u64, AuditEvent)],
}

/// The recent alerts of a buyer, newest first, at most `limit`. Plug a real alerts feed in
/// with [`Dashboard::with_alerts`](super::Dashboard::with_alerts).
#[async_trait]
pub trait AlertFeed: Send + Sync + Debug {
    /// The alerts.
    async fn recent(
        &self,
        context: &AlertContext<'_>,
        limit: usize,
    ) -> Result<Vec<Alert>, EngineError>;
}

/// The control events of the buyer's audit trail as alerts: a limit crossing its threshold
/// (80% by default), an automatic suspension, a payment loop blocked.
#[derive(Debug, Clone, Copy, Default)]
pub struct TrailAlerts;

#[async_trait]
impl AlertFeed for TrailAlerts {
    async fn recent(
        &self,
        context: &AlertContext<'_>,
        limit: usize,
    ) -> Result<Vec<Alert>, EngineError> {
        let mut out = Vec::new();
        for (_, e) in context.events.iter().rev() {
            if out.len() >= limit {
                break;
            }
            if let Some(alert) = alert_of(e) {
                out.push(alert);
            }
        }
        Ok(out)
    }
}

/// The alert a control event stands for.
fn alert_of(e: &AuditEvent) -> Option<Alert> {
    match &e.kind {
        AuditKind::Threshold {
            mandate_id,
            limit,
            used,
            max,
            percent,
        } => {
            let what = match limit {
                LimitKind::Lifetime => "lifetime limit".to_owned(),
                LimitKind::WindowAmount { window_seconds } => {
                    format!("{} amount limit", super::view::window_name(*window_seconds))
                }
                LimitKind::WindowCount { window_seconds } => {
                    format!("{} payment count", super::view::window_name(*window_seconds))
                }
            };
            Some(
                Alert::new(
                    e.at,
                    AlertLevel::Warning,
                    format!("{percent}% of the {what} of {mandate_id} used"),
                )
                .with_detail(format!("{used} of {max}"))
                .with_mandate(mandate_id.clone()),
            )
        }
        AuditKind::AutoSuspended {
            actor_id,
            consecutive_blocks,
        } => Some(
            Alert::new(
                e.at,
                AlertLevel::Critical,
                format!("Agent {actor_id} was suspended automatically"),
            )
            .with_detail(format!(
                "{consecutive_blocks} requests in a row were outside its authority; support can lift the suspension"
            ))
            .with_actor(actor_id.clone()),
        ),
        AuditKind::LoopDetected {
            actor_id,
            mandate_id,
            merchant_id,
            max_payments,
            window_seconds,
            ..
        } => Some(
            Alert::new(
                e.at,
                AlertLevel::Critical,
                format!("A payment loop of {actor_id} at {merchant_id} was blocked"),
            )
            .with_detail(format!(
                "the same resource was paid {max_payments} times within {window_seconds} s"
            ))
            .with_mandate(mandate_id.clone())
            .with_actor(actor_id.clone()),
        ),
        // A control's alert, except the 80% mark, which the threshold event above already shows.
        AuditKind::Alert { alert } => {
            if matches!(alert.kind, crate::domain::AlertKind::Threshold { .. }) {
                return None;
            }
            let level = match alert.severity {
                crate::domain::Severity::Critical => AlertLevel::Critical,
                _ => AlertLevel::Warning,
            };
            let shown = Alert::new(e.at, level, alert.message.clone());
            Some(match &alert.actor_id {
                Some(actor) => shown.with_actor(actor.clone()),
                None => shown,
            })
        }
        // Not control events. Listed, so a new kind of event is reviewed here.
        AuditKind::TokenIssued { .. }
        | AuditKind::TokenRedeemed { .. }
        | AuditKind::TokenRefused { .. }
        | AuditKind::TokenRevoked { .. }
        | AuditKind::Decision { .. }
        | AuditKind::MandateCreated { .. }
        | AuditKind::MandateTransition { .. }
        | AuditKind::ConfirmationRecorded { .. }
        | AuditKind::ConfirmationDeclined { .. }
        | AuditKind::Suspension { .. }
        | AuditKind::AttemptTransition { .. }
        | AuditKind::Hold { .. }
        | AuditKind::OrderCommitted { .. }
        | AuditKind::OrderFailed { .. }
        | AuditKind::Recovery { .. }
        | AuditKind::CredentialStored { .. }
        | AuditKind::Delegated { .. }
        | AuditKind::Asked { .. }
        | AuditKind::Review { .. }
        | AuditKind::CredentialRevoked { .. }
        | AuditKind::WebhookDeadLettered { .. }
        | AuditKind::Replay { .. } => None,
    }
}

/// Where the dashboard finds a cart snapshot the engine did not keep: the engine stores the
/// snapshot of a payment it allowed, not of one it refused, so a payment waiting for the
/// buyer's confirmation shows its lines only when the host hands its cart over (from the
/// checkout that asked). The dashboard uses a snapshot only if it hashes to the id the audit
/// trail names.
#[async_trait]
pub trait CartSource: Send + Sync + Debug {
    /// The snapshot with this id, if known.
    async fn snapshot(&self, id: &SnapshotId) -> Option<CartSnapshot>;
}

/// Carts kept in memory, by snapshot id.
///
/// ```
/// use agent_mandate::dashboard::{CartSource, MemoryCarts};
/// use agent_mandate::domain::examples;
/// let carts = MemoryCarts::default();
/// let snapshot = examples::travel_backpack_snapshot();
/// carts.keep(snapshot.clone());
/// # let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
/// assert_eq!(rt.block_on(carts.snapshot(&snapshot.id())), Some(snapshot));
/// ```
#[derive(Debug, Default)]
pub struct MemoryCarts {
    carts: Mutex<HashMap<SnapshotId, CartSnapshot>>,
}

impl MemoryCarts {
    /// Keeps `snapshot` (under its id).
    pub fn keep(&self, snapshot: CartSnapshot) {
        if let Ok(mut carts) = self.carts.lock() {
            carts.insert(snapshot.id(), snapshot);
        }
    }
}

#[async_trait]
impl CartSource for MemoryCarts {
    async fn snapshot(&self, id: &SnapshotId) -> Option<CartSnapshot> {
        self.carts.lock().ok().and_then(|c| c.get(id).cloned())
    }
}
