//! Order commitment: its own transition, exactly one order per attempt (I4), with recovery
//! when it fails after money moved.

use super::commands::{CommitOrder, OrderOutcome, Recovery};
use super::error::EngineError;
use super::execute::fingerprint_of;
use super::observe;
use super::settle::may_settle;
use super::{scope, Engine};
use crate::domain::{
    AttemptStatus, AuditEvent, AuditKind, AuthorityDecision, Operation, Order, OrderId,
    PaymentAction, PaymentAttempt, Principal,
};
use crate::ports::{InsertOrder, StoredResult, Write, Written};

impl Engine {
    /// Commits the order of a paid attempt. `by` must be the attempt's actor, its buyer or an
    /// operator (the permission shared with void and refund); anyone else is
    /// [`EngineError::NotPermitted`] and nothing starts. Allowed only from `authorized`,
    /// `partially_captured` or `captured`; decides once more for the attempt's actor and
    /// mandate, whoever asks (action `commit_order`, the stored snapshot, the checkout state
    /// given now, the current mandate chain). A second
    /// commit for the attempt, under any key, returns the existing order. When the order
    /// cannot be committed after money moved, the recovery starts at once (void an
    /// authorization, refund a capture) and is recorded; [`OrderOutcome::Failed`] says how
    /// far it got.
    pub async fn commit_order(
        &self,
        by: &Principal,
        command: &CommitOrder,
    ) -> Result<OrderOutcome, EngineError> {
        observe::Command::new("commit_order", Some(by), Some(&command.key))
            .attempt(&command.attempt_id)
            .run(self.commit_order_body(by, command))
            .await
    }

    async fn commit_order_body(
        &self,
        by: &Principal,
        command: &CommitOrder,
    ) -> Result<OrderOutcome, EngineError> {
        let scope = scope(&by.scope_id(), "commit_order", &command.key);
        let fingerprint = fingerprint_of(command)?;
        let store = &self.ports.store;
        self.keyed(
            &scope,
            "commit_order",
            &fingerprint,
            None,
            |_, _| async move {
                match observe::store("order_for", store.order_for(&command.attempt_id)).await? {
                    Some(order) => Ok(OrderOutcome::Existing { order }),
                    None => Err(EngineError::OrderNotAllowed {
                        status: self.load_attempt(&command.attempt_id).await?.status,
                    }),
                }
            },
            |now, _| async move {
                let outcome = self.commit_started(by, command, now).await?;
                let stored = match &outcome {
                    OrderOutcome::Committed { order, .. } | OrderOutcome::Existing { order } => {
                        StoredResult::Order(order.id.clone())
                    }
                    // The recovery moved money: the key's answer stays the failed commitment.
                    OrderOutcome::Failed { .. } => {
                        StoredResult::Attempt(command.attempt_id.clone())
                    }
                };
                Ok((outcome, Some(stored)))
            },
        )
        .await
    }

    async fn commit_started(
        &self,
        by: &Principal,
        command: &CommitOrder,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<OrderOutcome, EngineError> {
        let store = &self.ports.store;
        let attempt = self.load_attempt(&command.attempt_id).await?;
        // Only whoever may settle the attempt may commit its order: a refused commitment
        // starts a void or refund. A requester refused here gets `NotPermitted` and nothing
        // starts; the decision below is for the attempt, never about the requester.
        may_settle(by, &attempt, "commit the order of")?;
        self.note_asker(by, &attempt, "commit_order", now).await?;
        if let Some(order) = observe::store("order_for", store.order_for(&attempt.id)).await? {
            return Ok(OrderOutcome::Existing { order });
        }
        if !attempt.status.accepts_order() {
            return Err(EngineError::OrderNotAllowed {
                status: attempt.status,
            });
        }
        let mut events = Vec::new();
        let amount = attempt.request.amount;
        let (_, decision) = self
            .decide_follow_up(
                &attempt,
                PaymentAction::CommitOrder,
                amount,
                &command.checkout,
                now,
                &mut events,
            )
            .await?;
        if !decision.is_allowed() {
            let codes: Vec<&str> = decision.blockers.iter().map(|b| b.code.as_str()).collect();
            let reason = format!("the order was refused: {}", codes.join(", "));
            return self
                .fail_order(attempt, reason, Some(decision), events)
                .await;
        }
        let order = Order {
            id: OrderId::derived(format!("ord_{}", attempt.id)),
            attempt_id: attempt.id.clone(),
            snapshot_id: attempt.request.snapshot_id,
            buyer_id: attempt.request.buyer_id.clone(),
            merchant_id: attempt.request.merchant_id.clone(),
            amount: if attempt.captured.is_zero() {
                attempt.authorized
            } else {
                attempt.captured
            },
            committed_at: now,
        };
        let mut with_commit = events.clone();
        with_commit.push(AuditEvent {
            at: now,
            kind: AuditKind::OrderCommitted {
                order_id: order.id.clone(),
                attempt_id: attempt.id.clone(),
                snapshot_id: order.snapshot_id,
                amount: order.amount,
            },
        });
        match observe::store(
            "write_audited",
            self.ports
                .store
                .write_audited(Write::InsertOrder(&order), &with_commit),
        )
        .await
        {
            Ok(Written::Order(InsertOrder::Existing(order))) => {
                self.audit(&events).await?;
                Ok(OrderOutcome::Existing { order })
            }
            Ok(_) => {
                self.audit(&[]).await?;
                Ok(OrderOutcome::Committed { order, decision })
            }
            Err(e) if e.is_retryable() => {
                // Nothing was written; the caller may retry the commitment itself.
                self.audit(&events).await?;
                Err(e.into())
            }
            Err(e) => {
                let reason = format!("the order could not be stored: {e}");
                self.fail_order(attempt, reason, Some(decision), events)
                    .await
            }
        }
    }

    /// Records the failure and starts the recovery: void an authorization, refund a capture.
    async fn fail_order(
        &self,
        attempt: PaymentAttempt,
        reason: String,
        decision: Option<AuthorityDecision>,
        mut events: Vec<AuditEvent>,
    ) -> Result<OrderOutcome, EngineError> {
        let now = self.now();
        events.push(AuditEvent {
            at: now,
            kind: AuditKind::OrderFailed {
                attempt_id: attempt.id.clone(),
                reason: reason.clone(),
            },
        });
        self.audit(&events).await?;
        let (operation, result) = match attempt.status {
            AttemptStatus::Authorized => {
                (Operation::Void, self.void_now(&attempt, now, None).await)
            }
            AttemptStatus::PartiallyCaptured | AttemptStatus::Captured => {
                let amount = attempt.net_captured();
                (
                    Operation::Refund,
                    self.refund_now(&attempt, amount, None).await,
                )
            }
            AttemptStatus::NotStarted
            | AttemptStatus::AuthorityValidated
            | AttemptStatus::PendingProviderResponse
            | AttemptStatus::RequiresBuyerAction
            | AttemptStatus::Failed
            | AttemptStatus::Ambiguous
            | AttemptStatus::Cancelled
            | AttemptStatus::PartiallyRefunded
            | AttemptStatus::Refunded => {
                return Err(EngineError::OrderNotAllowed {
                    status: attempt.status,
                })
            }
        };
        let (after, error) = match result {
            Ok(a) => (a, None),
            Err(e) => (
                self.load_attempt(&attempt.id).await.unwrap_or(attempt),
                Some(e.to_string()),
            ),
        };
        self.audit(&[AuditEvent {
            at: self.now(),
            kind: AuditKind::Recovery {
                attempt_id: after.id.clone(),
                operation,
                status: after.status,
                reason: match &error {
                    None => reason.clone(),
                    Some(e) => format!("{reason}; the recovery did not complete: {e}"),
                },
            },
        }])
        .await?;
        Ok(OrderOutcome::Failed {
            reason,
            decision,
            recovery: Recovery {
                operation,
                attempt: after,
                error,
            },
        })
    }
}
