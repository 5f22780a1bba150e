//! Dispute evidence: the package a merchant or platform shows when a buyer says
//! "my agent was not allowed to buy this".

use serde::Serialize;

use super::error::EngineError;
use super::observe;
use super::Engine;
use crate::domain::{
    AttemptId, AuditKind, AuditSubject, Blocker, CartSnapshot, ChainedEvent, Confirmation,
    Evidence, Money, Order, Outcome, PaymentAction, PaymentAttempt, RequestDigest, SnapshotId,
};

/// The decision that allowed the attempt, as recorded in the audit trail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
pub struct RecordedDecision {
    /// The audit event's sequence number.
    pub seq: u64,
    /// The outcome.
    pub outcome: Outcome,
    /// Its blockers (none when allowed).
    pub blockers: Vec<Blocker>,
    /// Its evidence.
    pub evidence: Vec<Evidence>,
    /// The digest of the request decided.
    pub request_digest: RequestDigest,
}

/// One consistency check of the package.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
pub struct DisputeCheck {
    /// What is checked.
    pub name: &'static str,
    /// Whether it holds.
    pub passed: bool,
    /// Details.
    pub detail: String,
}

/// Whether the evidence hangs together.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum DisputeVerdict {
    /// Every check passed: the payment was authorized for this snapshot and amount, by an
    /// allowed decision, and the trail is intact.
    Consistent,
    /// At least one check failed (see `checks`).
    Inconsistent,
}

/// The dispute package of one attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
pub struct DisputeEvidence {
    /// The attempt.
    pub attempt: PaymentAttempt,
    /// The snapshot id (the hash of what was bought).
    pub snapshot_id: SnapshotId,
    /// The snapshot, as stored.
    pub snapshot: Option<CartSnapshot>,
    /// Amount authorized.
    pub authorized: Money,
    /// Amount charged and kept (captured less refunded).
    pub charged: Money,
    /// The decision that allowed it.
    pub decision: Option<RecordedDecision>,
    /// Confirmations the decision cites.
    pub confirmations: Vec<Confirmation>,
    /// The order, if committed.
    pub order: Option<Order>,
    /// Every audit event about the attempt, in order.
    pub audit_segment: Vec<ChainedEvent>,
    /// Each check.
    pub checks: Vec<DisputeCheck>,
    /// The verdict.
    pub verdict: DisputeVerdict,
}

impl Engine {
    /// Builds the dispute package of an attempt, with a verdict on its consistency. Collects
    /// the attempt's audit segment with [`crate::ports::AuditSink::segment`]: a sink that
    /// indexes events and keeps checkpoints verifies only the windows around the attempt's
    /// events (time independent of the trail's length); the provided body reads and verifies
    /// the whole trail.
    pub async fn dispute_evidence(
        &self,
        attempt_id: &AttemptId,
    ) -> Result<DisputeEvidence, EngineError> {
        observe::Command::read("dispute_evidence", None)
            .attempt(attempt_id)
            .run(self.dispute_evidence_body(attempt_id))
            .await
    }

    async fn dispute_evidence_body(
        &self,
        attempt_id: &AttemptId,
    ) -> Result<DisputeEvidence, EngineError> {
        let store = &self.ports.store;
        let attempt = self.load_attempt(attempt_id).await?;
        let snapshot_id = attempt.request.snapshot_id;
        let snapshot = observe::store("snapshot", store.snapshot(&snapshot_id)).await?;
        let order = observe::store("order_for", store.order_for(attempt_id)).await?;
        let subject = AuditSubject::Attempt(attempt_id.clone());
        let found = observe::audit("segment", self.ports.audit.segment(&subject)).await?;

        let mut decision = None;
        for e in &found.events {
            if let Ok(event) = e.event()
                && let AuditKind::Decision {
                    command,
                    outcome,
                    blockers,
                    evidence,
                    request_digest,
                    attempt_id: Some(a),
                    action: PaymentAction::Authorize,
                    ..
                } = event.kind
                && a == *attempt_id
                && command == "execute_payment"
                && outcome == Outcome::Allowed
            {
                decision = Some(RecordedDecision {
                    seq: e.seq,
                    outcome,
                    blockers,
                    evidence,
                    request_digest,
                });
            }
        }

        let cited: Vec<_> = decision
            .iter()
            .flat_map(|d| d.evidence.iter())
            .filter_map(|e| match e {
                Evidence::ConfirmationRecord(id) => Some(id.clone()),
                Evidence::PaymentMandate(_)
                | Evidence::CartSnapshot(_)
                | Evidence::CheckoutState(_) => None,
            })
            .collect();
        let confirmations: Vec<Confirmation> = if cited.is_empty() {
            Vec::new()
        } else {
            store
                .confirmations(&attempt.request.buyer_id, &snapshot_id)
                .await?
                .into_iter()
                .filter(|c| cited.contains(&c.id))
                .collect()
        };

        let charged = attempt.net_captured();
        let mut checks = Vec::new();
        let mut check = |name: &'static str, passed: bool, detail: String| {
            checks.push(DisputeCheck {
                name,
                passed,
                detail,
            });
        };
        match &snapshot {
            Some(s) => check(
                "snapshot_hash",
                s.content().content_id() == snapshot_id,
                format!("the stored snapshot hashes to {}", s.content().content_id()),
            ),
            None => check("snapshot_hash", false, "the snapshot is not stored".into()),
        }
        match &decision {
            Some(d) => {
                check(
                    "decision_allowed",
                    true,
                    format!("audit event {} allowed the authorization", d.seq),
                );
                check(
                    "decision_matches_request",
                    d.request_digest == attempt.request.digest(),
                    format!(
                        "decided request {}, attempt request {}",
                        d.request_digest,
                        attempt.request.digest()
                    ),
                );
            }
            None => check(
                "decision_allowed",
                false,
                "no allowed decision for the attempt is in the audit trail".into(),
            ),
        }
        if let Some(s) = &snapshot {
            check(
                "amount_matches_snapshot",
                attempt.request.amount == s.total(),
                format!(
                    "requested {}, snapshot total {}",
                    attempt.request.amount,
                    s.total()
                ),
            );
        }
        check(
            "charged_within_authorized",
            attempt.captured.fits_within(&attempt.authorized)
                && attempt.authorized.fits_within(&attempt.request.amount),
            format!(
                "requested {}, authorized {}, captured {}, refunded {}",
                attempt.request.amount, attempt.authorized, attempt.captured, attempt.refunded
            ),
        );
        check(
            "confirmations_bind_snapshot",
            confirmations.len() == cited.len()
                && confirmations.iter().all(|c| c.snapshot_id == snapshot_id),
            format!(
                "{} cited, {} found for the snapshot",
                cited.len(),
                confirmations.len()
            ),
        );
        match &found.fault {
            None => check(
                "audit_chain",
                true,
                format!("verified events {}", ranges(&found.verified)),
            ),
            Some(fault) => check("audit_chain", false, fault.to_string()),
        }
        if let Some(o) = &order {
            check(
                "order_matches",
                o.snapshot_id == snapshot_id && o.amount.fits_within(&attempt.authorized),
                format!(
                    "order {} for {} of snapshot {}",
                    o.id, o.amount, o.snapshot_id
                ),
            );
        }
        let verdict = if checks.iter().all(|c| c.passed) {
            DisputeVerdict::Consistent
        } else {
            DisputeVerdict::Inconsistent
        };
        Ok(DisputeEvidence {
            authorized: attempt.authorized,
            charged,
            attempt,
            snapshot_id,
            snapshot,
            decision,
            confirmations,
            order,
            audit_segment: found.events,
            checks,
            verdict,
        })
    }
}

/// `1-256, 513-768` (or `none`).
fn ranges(verified: &[(u64, u64)]) -> String {
    if verified.is_empty() {
        return "none".into();
    }
    verified
        .iter()
        .map(|(a, b)| format!("{a}-{b}"))
        .collect::<Vec<_>>()
        .join(", ")
}
