//! The trail check: does every stored state change have its audit event (I15)?

use std::collections::{HashMap, HashSet};

use super::error::EngineError;
use super::observe;
use super::Engine;
use crate::domain::{AttemptId, AttemptStatus, AuditEvent, AuditKind, OrderId};

/// How many attempts [`Engine::verify_trail`] looks at by default.
pub const TRAIL_CHECK_LIMIT: usize = 100_000;

/// A stored state whose audit event is missing from the trail (and from the outbox).
///
/// JSON: an object tagged by `type` (`attempt_transition`, `order_committed`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
#[non_exhaustive]
pub enum MissingEvent {
    /// The attempt is in `status`, but no transition event to that status names it.
    AttemptTransition {
        /// The attempt.
        attempt_id: AttemptId,
        /// Its stored status.
        status: AttemptStatus,
    },
    /// The attempt has an order, but no `order_committed` event names it.
    OrderCommitted {
        /// The attempt.
        attempt_id: AttemptId,
        /// The order.
        order_id: OrderId,
    },
}

impl std::fmt::Display for MissingEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MissingEvent::AttemptTransition { attempt_id, status } => write!(
                f,
                "attempt {attempt_id} is {status} but the trail has no transition to {status}"
            ),
            MissingEvent::OrderCommitted {
                attempt_id,
                order_id,
            } => write!(
                f,
                "order {order_id} of attempt {attempt_id} is stored but the trail has no order_committed event"
            ),
        }
    }
}

/// What [`Engine::verify_trail`] found.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct TrailReport {
    /// Attempts checked.
    pub attempts: usize,
    /// Events in the audit trail.
    pub trail_events: u64,
    /// Events staged in the store's outbox, not yet delivered to the sink (not missing: the
    /// next flush delivers them).
    pub staged_events: usize,
    /// Events that appear more than once in the trail (a crash between the sink's append and
    /// the outbox's acknowledgement delivers again: at least once, never lost).
    pub repeated_events: u64,
    /// Stored states without their event, in the order found.
    pub missing: Vec<MissingEvent>,
}

impl TrailReport {
    /// Whether every stored state has its event.
    pub fn is_complete(&self) -> bool {
        self.missing.is_empty()
    }
}

impl Engine {
    /// Compares the stored state with the audit trail (and the events still staged in the
    /// store's outbox) and names every stored state whose event is missing (I15): an attempt
    /// whose current status has no transition event, an order without its
    /// `order_committed` event. Looks at up to `limit` attempts. Moves nothing and delivers
    /// nothing; run [`Engine::flush_audit`] first to deliver what waits.
    ///
    /// The chain's own integrity is [`crate::ports::AuditSink::verify`].
    pub async fn verify_trail(&self, limit: usize) -> Result<TrailReport, EngineError> {
        observe::Command::new("verify_trail", None, None)
            .run(self.verify_trail_body(limit))
            .await
    }

    async fn verify_trail_body(&self, limit: usize) -> Result<TrailReport, EngineError> {
        let store = &self.ports.store;
        let staged = observe::store("staged_audit", store.staged_audit(usize::MAX)).await?;
        observe::outbox_depth(staged.len());
        let mut report = TrailReport {
            staged_events: staged.len(),
            ..TrailReport::default()
        };
        let mut transitions: HashSet<(AttemptId, AttemptStatus)> = HashSet::new();
        let mut orders: HashSet<AttemptId> = HashSet::new();
        let mut seen: HashMap<String, u32> = HashMap::new();
        let mut note = |event: &AuditEvent| match &event.kind {
            AuditKind::AttemptTransition { attempt_id, to, .. } => {
                transitions.insert((attempt_id.clone(), *to));
            }
            AuditKind::OrderCommitted { attempt_id, .. } => {
                orders.insert(attempt_id.clone());
            }
            _ => {}
        };
        let mut next = 1u64;
        loop {
            let page = observe::audit("read", self.ports.audit.read(next, 1024)).await?;
            if page.is_empty() {
                break;
            }
            next += page.len() as u64;
            for chained in page {
                report.trail_events += 1;
                let n = seen.entry(chained.body.clone()).or_insert(0);
                *n += 1;
                if *n > 1 {
                    report.repeated_events += 1;
                }
                if let Ok(event) = chained.event() {
                    note(&event);
                }
            }
        }
        for s in &staged {
            note(&s.event);
        }
        let attempts =
            observe::store("attempts_in", store.attempts_in(&AttemptStatus::ALL, limit)).await?;
        report.attempts = attempts.len();
        for a in attempts {
            // An attempt is inserted already validated, with its transition event.
            if a.status != AttemptStatus::NotStarted
                && !transitions.contains(&(a.id.clone(), a.status))
            {
                report.missing.push(MissingEvent::AttemptTransition {
                    attempt_id: a.id.clone(),
                    status: a.status,
                });
            }
            if let Some(order) = observe::store("order_for", store.order_for(&a.id)).await?
                && !orders.contains(&a.id)
            {
                report.missing.push(MissingEvent::OrderCommitted {
                    attempt_id: a.id.clone(),
                    order_id: order.id,
                });
            }
        }
        Ok(report)
    }

    /// Deletes the idempotency records that ended by now (completed records past their
    /// retention, in-flight records whose lease lapsed); returns how many. Run it
    /// periodically: nothing else removes them. A key whose record is gone starts afresh;
    /// the attempt it made is found again by its derived id, so a late retry never pays
    /// twice.
    pub async fn purge_idempotency(&self) -> Result<u64, EngineError> {
        observe::Command::new("purge_idempotency", None, None)
            .run(self.purge_idempotency_body())
            .await
    }

    async fn purge_idempotency_body(&self) -> Result<u64, EngineError> {
        Ok(observe::store(
            "purge_idempotent",
            self.ports.store.purge_idempotent(self.now()),
        )
        .await?)
    }
}
