//! Settlement after authorization: capture, void, refund and reconciliation.

use chrono::{DateTime, Utc};

use super::commands::{CapturePayment, PaymentOutcome, RefundPayment, VoidPayment};
use super::error::EngineError;
use super::execute::{decision_event, fingerprint_of};
use super::observe::{self, Psp};
use std::sync::Arc;

use super::{scope, Engine, Finish};
use crate::domain::{
    AttemptEvent, AttemptId, AttemptStatus, AuditEvent, AuditKind, AuthorityDecision, BlockerCode,
    CheckoutState, HoldAction, Money, Operation, Outcome, PaymentAction, PaymentAttempt,
    PaymentRequest, Principal, ProviderReport, ProviderStatus,
};
use crate::ports::{
    AttemptChange, CaptureRequest, HoldOp, HoldState, IdempotencyScope, Lookup, ProviderError,
    RefundRequest, StoredResult, VoidRequest,
};

impl Engine {
    /// Decides a follow-up action (capture, order commitment) on an attempt's chain. The
    /// decision is made for the attempt: its actor, its mandate, its buyer. Who asks is
    /// checked before, by `may_settle`; a refusal here is never about the requester.
    ///
    /// A capture settles an authorization made while the mandate was valid (I1): the
    /// mandate's expiry since then does not block it. A revocation, a suspension or anything
    /// else still does.
    pub(super) async fn decide_follow_up(
        &self,
        attempt: &PaymentAttempt,
        action: PaymentAction,
        amount: Money,
        checkout: &CheckoutState,
        now: DateTime<Utc>,
        events: &mut Vec<AuditEvent>,
    ) -> Result<(PaymentRequest, AuthorityDecision), EngineError> {
        let mut request = attempt.request.clone();
        request.action = action;
        request.amount = amount;
        let snapshot = observe::store(
            "snapshot",
            self.ports.store.snapshot(&attempt.request.snapshot_id),
        )
        .await?
        .ok_or_else(|| EngineError::NotFound {
            entity: "snapshot",
            id: attempt.request.snapshot_id.to_string(),
        })?;
        let ctx = self.context(&request, None, now).await?;
        let mut decision = ctx.decide(&request, &snapshot, checkout, now, None, None);
        if matches!(action, PaymentAction::Capture | PaymentAction::CommitOrder)
            && attempt.submitted_at.is_some()
        {
            decision = without_expiry(decision);
        }
        observe::decision(action.as_str(), &decision);
        events.push(decision_event(
            action.as_str(),
            &request,
            &decision,
            Some(&attempt.id),
        ));
        Ok((request, decision))
    }

    /// Runs a follow-up command on an attempt under its key: a replay answers with the attempt
    /// as it is now; `body` says whether what it did lasts (a refusal does not).
    async fn keyed_follow_up<F, Fut>(
        &self,
        scope: IdempotencyScope,
        operation: &'static str,
        fingerprint: crate::domain::ContentDigest,
        attempt_id: &AttemptId,
        body: F,
    ) -> Result<PaymentOutcome, EngineError>
    where
        F: FnOnce(DateTime<Utc>, Option<Arc<Finish>>) -> Fut,
        Fut: std::future::Future<Output = Result<(PaymentOutcome, bool), EngineError>>,
    {
        self.keyed(
            &scope,
            operation,
            &fingerprint,
            Some(StoredResult::Attempt(attempt_id.clone())),
            move |_, _| async move {
                Ok(PaymentOutcome::Replayed {
                    attempt: self.load_attempt(attempt_id).await?,
                })
            },
            move |now, finish| async move {
                let (outcome, lasting) = body(now, finish).await?;
                Ok((
                    outcome,
                    lasting.then(|| StoredResult::Attempt(attempt_id.clone())),
                ))
            },
        )
        .await
    }

    /// Captures an authorized attempt (in full or in part; the rest is released). The
    /// transition is checked before the PSP is called: capturing a cancelled, failed or
    /// already captured attempt is refused without any PSP call.
    ///
    /// Only the attempt's actor may capture (a capture takes money): anyone else is
    /// [`EngineError::NotPermitted`].
    pub async fn capture(
        &self,
        by: &Principal,
        command: &CapturePayment,
    ) -> Result<PaymentOutcome, EngineError> {
        observe::Command::new("capture_payment", Some(by), Some(&command.key))
            .attempt(&command.attempt_id)
            .run(self.capture_body(by, command))
            .await
    }

    async fn capture_body(
        &self,
        by: &Principal,
        command: &CapturePayment,
    ) -> Result<PaymentOutcome, EngineError> {
        let scope = scope(&by.scope_id(), "capture_payment", &command.key);
        let fingerprint = fingerprint_of(command)?;
        self.keyed_follow_up(
            scope,
            "capture_payment",
            fingerprint,
            &command.attempt_id,
            |now, finish| async move {
                let attempt = self.load_attempt(&command.attempt_id).await?;
                may_capture(by, &attempt)?;
                let amount = command.amount.unwrap_or(attempt.authorized);
                attempt.apply(&AttemptEvent::Capture(amount), now)?;
                let reference = provider_ref(&attempt)?;
                let mut events = Vec::new();
                let checkout = CheckoutState::Valid {
                    checkout_id: attempt.checkout_id.clone(),
                    snapshot_id: attempt.request.snapshot_id,
                };
                let (_, decision) = self
                    .decide_follow_up(
                        &attempt,
                        PaymentAction::Capture,
                        amount,
                        &checkout,
                        now,
                        &mut events,
                    )
                    .await?;
                if !decision.is_allowed() {
                    self.audit(&events).await?;
                    return Ok((PaymentOutcome::Refused(decision), false));
                }
                self.audit(&events).await?;
                events.clear();
                self.may_call_psp(&command.key, now, self.now())?;
                let call = CaptureRequest {
                    key: attempt.provider_key(Operation::Capture),
                    reference,
                    attempt_id: attempt.id.clone(),
                    amount,
                };
                let result = observe::psp(
                    Psp::Capture,
                    &attempt.id,
                    self.ports.provider.capture(&call),
                )
                .await;
                let at = self.now();
                let next = self
                    .follow_up_result(
                        &attempt,
                        result,
                        AttemptEvent::Capture(amount),
                        Operation::Capture,
                        at,
                        &mut events,
                        finish.as_deref(),
                    )
                    .await;
                self.audit(&events).await?;
                let next = next?;
                Ok((
                    PaymentOutcome::Done {
                        attempt: next,
                        decision: Some(decision),
                    },
                    true,
                ))
            },
        )
        .await
    }

    /// Voids an authorized attempt (or one waiting for the buyer). Needs no decision and no
    /// spending authority (I16): the attempt's actor, its buyer or an operator may cancel, even
    /// after the mandate expired or was revoked, or the actor was suspended; anyone else is
    /// [`EngineError::NotPermitted`].
    pub async fn void(
        &self,
        by: &Principal,
        command: &VoidPayment,
    ) -> Result<PaymentOutcome, EngineError> {
        observe::Command::new("void_payment", Some(by), Some(&command.key))
            .attempt(&command.attempt_id)
            .run(self.void_body(by, command))
            .await
    }

    async fn void_body(
        &self,
        by: &Principal,
        command: &VoidPayment,
    ) -> Result<PaymentOutcome, EngineError> {
        let scope = scope(&by.scope_id(), "void_payment", &command.key);
        let fingerprint = fingerprint_of(command)?;
        self.keyed_follow_up(
            scope,
            "void_payment",
            fingerprint,
            &command.attempt_id,
            |now, finish| async move {
                let attempt = self.load_attempt(&command.attempt_id).await?;
                may_settle(by, &attempt, "void")?;
                self.note_asker(by, &attempt, "void_payment", now).await?;
                attempt.apply(&AttemptEvent::Void, now)?;
                self.may_call_psp(&command.key, now, self.now())?;
                let next = self.void_now(&attempt, now, finish.as_deref()).await?;
                Ok((
                    PaymentOutcome::Done {
                        attempt: next,
                        decision: None,
                    },
                    true,
                ))
            },
        )
        .await
    }

    /// Records who asked for a command on an attempt when it is not the attempt's actor (its
    /// buyer or an operator), before anything is sent: the actor's own commands are implied
    /// by the attempt.
    pub(super) async fn note_asker(
        &self,
        by: &Principal,
        attempt: &PaymentAttempt,
        command: &str,
        now: DateTime<Utc>,
    ) -> Result<(), EngineError> {
        if by.acts_as(&attempt.request.actor, &attempt.request.buyer_id) {
            return Ok(());
        }
        self.audit(&[AuditEvent {
            at: now,
            kind: AuditKind::Asked {
                command: command.to_owned(),
                attempt_id: attempt.id.clone(),
                by: by.clone(),
            },
        }])
        .await
    }

    /// Sends a void and records the result (also the recovery path of an order).
    pub(super) async fn void_now(
        &self,
        attempt: &PaymentAttempt,
        _now: DateTime<Utc>,
        finish: Option<&Finish>,
    ) -> Result<PaymentAttempt, EngineError> {
        let reference = provider_ref(attempt)?;
        let call = VoidRequest {
            key: attempt.provider_key(Operation::Void),
            reference,
            attempt_id: attempt.id.clone(),
        };
        let result = observe::psp(Psp::Void, &attempt.id, self.ports.provider.void(&call)).await;
        let at = self.now();
        let mut events = Vec::new();
        let next = self
            .follow_up_result(
                attempt,
                result,
                AttemptEvent::Void,
                Operation::Void,
                at,
                &mut events,
                finish,
            )
            .await;
        self.audit(&events).await?;
        next
    }

    /// Refunds a captured attempt (in full: everything not yet refunded, or in part). Like a
    /// void, a refund reduces risk and needs no decision and no spending authority (I16):
    /// the attempt's actor, its buyer or an operator may refund after the mandate expired or
    /// was revoked, or the actor was suspended; anyone else is [`EngineError::NotPermitted`]. Still checked: the state machine, and the amount (more than
    /// zero, in the captured currency, at most what is captured and not yet refunded).
    pub async fn refund(
        &self,
        by: &Principal,
        command: &RefundPayment,
    ) -> Result<PaymentOutcome, EngineError> {
        observe::Command::new("refund_payment", Some(by), Some(&command.key))
            .attempt(&command.attempt_id)
            .run(self.refund_body(by, command))
            .await
    }

    async fn refund_body(
        &self,
        by: &Principal,
        command: &RefundPayment,
    ) -> Result<PaymentOutcome, EngineError> {
        let scope = scope(&by.scope_id(), "refund_payment", &command.key);
        let fingerprint = fingerprint_of(command)?;
        self.keyed_follow_up(
            scope,
            "refund_payment",
            fingerprint,
            &command.attempt_id,
            |now, finish| async move {
                let attempt = self.load_attempt(&command.attempt_id).await?;
                may_settle(by, &attempt, "refund")?;
                self.note_asker(by, &attempt, "refund_payment", now).await?;
                let amount = command.amount.unwrap_or_else(|| attempt.net_captured());
                attempt.apply(&AttemptEvent::Refund(amount), now)?;
                self.may_call_psp(&command.key, now, self.now())?;
                let next = self.refund_now(&attempt, amount, finish.as_deref()).await?;
                Ok((
                    PaymentOutcome::Done {
                        attempt: next,
                        decision: None,
                    },
                    true,
                ))
            },
        )
        .await
    }

    /// Sends a refund and records the result (also the recovery path of an order).
    pub(super) async fn refund_now(
        &self,
        attempt: &PaymentAttempt,
        amount: Money,
        finish: Option<&Finish>,
    ) -> Result<PaymentAttempt, EngineError> {
        let reference = provider_ref(attempt)?;
        let call = RefundRequest {
            key: attempt.provider_key(Operation::Refund),
            reference,
            attempt_id: attempt.id.clone(),
            amount,
        };
        let result =
            observe::psp(Psp::Refund, &attempt.id, self.ports.provider.refund(&call)).await;
        let at = self.now();
        let mut events = Vec::new();
        let next = self
            .follow_up_result(
                attempt,
                result,
                AttemptEvent::Refund(amount),
                Operation::Refund,
                at,
                &mut events,
                finish,
            )
            .await;
        self.audit(&events).await?;
        next
    }

    /// Records the PSP's answer to a capture, void or refund.
    #[allow(
        clippy::too_many_arguments,
        reason = "the finishing transition needs the command's completion too"
    )]
    async fn follow_up_result(
        &self,
        attempt: &PaymentAttempt,
        result: Result<ProviderReport, ProviderError>,
        confirmed: AttemptEvent,
        operation: Operation,
        at: DateTime<Utc>,
        events: &mut Vec<AuditEvent>,
        finish: Option<&Finish>,
    ) -> Result<PaymentAttempt, EngineError> {
        match result {
            Ok(report) => {
                // Trust the PSP's amounts when they are consistent; else what was asked,
                // when that is consistent with the report's status; else ambiguous.
                let mut next = match attempt.apply(&AttemptEvent::Report(report.clone()), at) {
                    Ok(next) => next,
                    Err(_) => match attempt.apply(&confirmed, at) {
                        Ok(next)
                            if report_status_matches(&report, next.status)
                                && report_within(&report, attempt) =>
                        {
                            next
                        }
                        _ => {
                            return self
                                .transition_finishing(
                                    attempt,
                                    &AttemptEvent::Lost(operation),
                                    at,
                                    events,
                                    finish,
                                )
                                .await
                        }
                    },
                };
                if next.provider_ref.is_none() {
                    next.provider_ref = report.reference.clone();
                }
                self.store_transition_finishing(
                    attempt,
                    next,
                    confirmed.as_str(),
                    at,
                    events,
                    finish,
                )
                .await
            }
            Err(ProviderError::Ambiguous { .. }) => {
                self.transition_finishing(
                    attempt,
                    &AttemptEvent::Lost(operation),
                    at,
                    events,
                    finish,
                )
                .await
            }
            Err(e) => Err(EngineError::Provider(e)),
        }
    }

    /// Resolves an attempt whose outcome is unknown (pending, ambiguous, waiting for the
    /// buyer) from the PSP's view, and applies what it implies to the hold. An authorized,
    /// captured or partly refunded attempt is brought forward to what the PSP reports (a
    /// capture or refund the PSP made but a crash kept from being stored), never backwards: a
    /// PSP report showing less than recorded is an error. Terminal attempts are returned as
    /// they are. Moves no money.
    ///
    /// No outcome is presumed (I13): a PSP answer of "not found" fails a submission only
    /// once its deadline (the submission time plus the PSP's deadline and the configured
    /// margin) has passed; before that the attempt keeps its state and its hold. A pending
    /// attempt whose command may still be waiting for the PSP is left to that command until
    /// the deadline.
    pub async fn reconcile(&self, attempt_id: &AttemptId) -> Result<PaymentAttempt, EngineError> {
        observe::Command::new("reconcile", None, None)
            .attempt(attempt_id)
            .run(self.reconcile_body(attempt_id))
            .await
    }

    async fn reconcile_body(&self, attempt_id: &AttemptId) -> Result<PaymentAttempt, EngineError> {
        let attempt = self.load_attempt(attempt_id).await?;
        self.reconcile_attempt(attempt, None).await
    }

    /// Reconciles up to `limit` attempts (a sweep to run after a restart and periodically):
    /// every attempt that was ever submitted and is not terminal, those whose outcome is
    /// unknown (pending, ambiguous, waiting for the buyer) first, then those sent back after
    /// a transient failure, then the settled ones that can still move (authorized, captured,
    /// partly refunded). Returns the attempts after reconciliation; an attempt that could
    /// not be reconciled now is returned unchanged. Ends with a flush of the audit outbox.
    pub async fn reconcile_pending(
        &self,
        limit: usize,
    ) -> Result<Vec<PaymentAttempt>, EngineError> {
        observe::Command::new("reconcile_pending", None, None)
            .run(self.reconcile_pending_body(limit))
            .await
    }

    async fn reconcile_pending_body(
        &self,
        limit: usize,
    ) -> Result<Vec<PaymentAttempt>, EngineError> {
        let store = &self.ports.store;
        let mut todo = observe::store(
            "attempts_in",
            store.attempts_in(
                &[
                    AttemptStatus::PendingProviderResponse,
                    AttemptStatus::Ambiguous,
                    AttemptStatus::RequiresBuyerAction,
                ],
                limit,
            ),
        )
        .await?;
        for statuses in [
            &[AttemptStatus::AuthorityValidated][..],
            &[
                AttemptStatus::Authorized,
                AttemptStatus::PartiallyCaptured,
                AttemptStatus::Captured,
                AttemptStatus::PartiallyRefunded,
            ][..],
        ] {
            if todo.len() >= limit {
                break;
            }
            let more = observe::store(
                "attempts_in",
                store.attempts_in(statuses, limit - todo.len()),
            )
            .await?;
            todo.extend(more.into_iter().filter(|a| a.submissions > 0));
        }
        // A crash between placing a hold and submitting leaves a validated attempt with the
        // hold of its next submission held and nothing sent: released once the lease lapsed.
        let validated = observe::store(
            "attempts_in",
            store.attempts_in(&[AttemptStatus::AuthorityValidated], limit),
        )
        .await?;
        for a in &validated {
            // A payment waiting in its review window holds its budget on purpose.
            if self.in_review(&a.id).await {
                continue;
            }
            let _ = self.release_orphan_hold(a).await;
        }
        let mut out = Vec::with_capacity(todo.len());
        for a in todo {
            match self.reconcile_attempt(a.clone(), None).await {
                Ok(next) => out.push(next),
                Err(_) => out.push(a),
            }
        }
        // Submissions failed on a "not found" are looked at again for a day: a PSP that
        // processes a request past its own deadline must not keep money without a hold.
        if out.len() < limit {
            let now = self.now();
            let recheck =
                chrono::Duration::from_std(RECHECK_FAILED).unwrap_or(chrono::Duration::MAX);
            let failed = observe::store(
                "attempts_in",
                store.attempts_in(&[AttemptStatus::Failed], limit - out.len()),
            )
            .await?;
            for a in failed.into_iter().filter(|a| {
                a.provider_ref.is_none() && a.submissions > 0 && !a.not_found_is_final(recheck, now)
            }) {
                let _ = self.compensate_late_authorization(&a.id).await;
            }
        }
        observe::open_attempts(&out);
        // The sweep also delivers what a sink outage left in the audit outbox.
        let _ = self.flush_audit().await;
        Ok(out)
    }

    /// Releases the held hold of a validated attempt's next submission once the lease of the
    /// command that placed it has lapsed (it crashed between the hold and the submission;
    /// nothing was sent). The attempt skips that submission's hold id. A command still alive
    /// past its lease then fails its submission: the submission checks that its hold is held.
    async fn release_orphan_hold(&self, a: &PaymentAttempt) -> Result<(), EngineError> {
        let now = self.now();
        let lease = chrono::Duration::from_std(self.config.lease).unwrap_or(chrono::Duration::MAX);
        if a.status != AttemptStatus::AuthorityValidated
            || a.updated_at
                .checked_add_signed(lease)
                .is_none_or(|end| now < end)
        {
            return Ok(());
        }
        let mut next = a.clone();
        next.submissions = a.submissions.saturating_add(1);
        next.updated_at = now;
        let hold_id = next.hold_id();
        let Some(hold) = observe::store("hold", self.ports.store.hold(&hold_id)).await? else {
            return Ok(());
        };
        if hold.state != HoldState::Held {
            return Ok(());
        }
        let events = [AuditEvent {
            at: now,
            kind: AuditKind::Hold {
                attempt_id: a.id.clone(),
                action: HoldAction::Released,
                amount: hold.amount,
                mandate_ids: hold.mandate_ids.clone(),
                policy: None,
            },
        }];
        observe::store(
            "change_attempt",
            self.ports.store.change_attempt(&AttemptChange {
                next: &next,
                expected: a.status,
                hold_id: &hold_id,
                holds: &[HoldOp::Release],
                fence: None,
                completion: None,
                events: &events,
            }),
        )
        .await?;
        Ok(())
    }

    /// `lease`: the caller holds the attempt's idempotency key (no live command can be
    /// sending it), so a pending attempt may be looked up at once; its changes are fenced.
    pub(super) async fn reconcile_attempt(
        &self,
        attempt: PaymentAttempt,
        lease: Option<&Finish>,
    ) -> Result<PaymentAttempt, EngineError> {
        let now = self.now();
        let settle_after = self.config.settle_after(self.ports.provider.deadline());
        let unknown = matches!(
            attempt.status,
            AttemptStatus::PendingProviderResponse
                | AttemptStatus::Ambiguous
                | AttemptStatus::RequiresBuyerAction
        );
        // Sent back after a transient failure (nothing processed, hold released): a report
        // of money at the PSP would contradict the classification; it is looked at, and
        // reported as an error, never folded in without a hold.
        let returned =
            attempt.status == AttemptStatus::AuthorityValidated && attempt.submissions > 0;
        // A settled attempt that can still move (a capture or refund whose answer a crash
        // lost before it was stored): the PSP's report may move it forward, never back.
        let open = matches!(
            attempt.status,
            AttemptStatus::Authorized
                | AttemptStatus::PartiallyCaptured
                | AttemptStatus::Captured
                | AttemptStatus::PartiallyRefunded
        ) && attempt.provider_ref.is_some();
        if !unknown && !open && !returned {
            return Ok(attempt);
        }
        let final_not_found = attempt.not_found_is_final(settle_after, now);
        if attempt.status == AttemptStatus::PendingProviderResponse && lease.is_none() {
            // A live command may still be waiting for the PSP: leave the attempt to it until
            // its lease has lapsed too (the lease began before the submission), whatever
            // deadline the PSP claims.
            let lease_len =
                chrono::Duration::from_std(self.config.lease).unwrap_or(chrono::Duration::MAX);
            if !final_not_found || !attempt.not_found_is_final(lease_len, now) {
                return Ok(attempt);
            }
        }
        let lookup = match (&attempt.provider_ref, attempt.submitted_at) {
            (Some(r), _) => Lookup::Reference(r.clone()),
            (None, Some(at)) => Lookup::KeySubmitted {
                key: attempt.provider_key(Operation::Authorize),
                submitted_at: at,
            },
            (None, None) => Lookup::Key(attempt.provider_key(Operation::Authorize)),
        };
        let report = observe::psp(
            Psp::Lookup,
            &attempt.id,
            self.ports.provider.lookup(&lookup),
        )
        .await?;
        if returned {
            return match report {
                Some(r) if r.status != ProviderStatus::NotFound => Err(EngineError::Provider(
                    ProviderError::Ambiguous {
                        message: format!(
                            "attempt {} was sent back after a transient PSP failure, but the PSP reports it {:?}: the adapter classified a processed request as transient",
                            attempt.id, r.status
                        ),
                    },
                )),
                _ => Ok(attempt),
            };
        }
        let zero = Money::zero(attempt.request.currency());
        let report = match report {
            Some(r) => r,
            None if !final_not_found => return Ok(attempt),
            None => ProviderReport {
                reference: None,
                status: ProviderStatus::NotFound,
                authorized: zero,
                captured: zero,
                refunded: zero,
                decline_code: None,
            },
        };
        if report.status == ProviderStatus::NotFound && !final_not_found {
            return Ok(attempt);
        }
        let next = attempt.apply(&AttemptEvent::Report(report.clone()), now)?;
        if same_state(&attempt, &next) {
            return Ok(attempt);
        }
        let mut events = Vec::new();
        let next = self
            .store_transition(&attempt, next, "report", now, &mut events, lease)
            .await?;
        self.audit(&[]).await?;
        Ok(next)
    }
}

/// Who may act on an attempt after its authorization to reduce risk or finish it (void,
/// refund, order commitment): the attempt's own actor, its buyer, or an operator. The one place
/// this permission is decided; the decision that follows (if any) is made for the attempt, not
/// for the requester, so a refusal of the requester is always this error and never a decision
/// (and never starts a recovery).
pub(super) fn may_settle(
    by: &Principal,
    attempt: &PaymentAttempt,
    operation: &str,
) -> Result<(), EngineError> {
    let request = &attempt.request;
    if by.acts_as(&request.actor, &request.buyer_id)
        || by.is_buyer(&request.buyer_id)
        || by.is_operator()
    {
        return Ok(());
    }
    Err(EngineError::NotPermitted {
        reason: format!(
            "{by} may not {operation} attempt {}: only its actor, its buyer or an operator may",
            attempt.id
        ),
    })
}

/// Who may capture: only the attempt's own actor. A capture takes money (it is not a step that
/// reduces risk), so neither the buyer nor an operator captures an agent's authorization.
fn may_capture(by: &Principal, attempt: &PaymentAttempt) -> Result<(), EngineError> {
    if by.acts_as(&attempt.request.actor, &attempt.request.buyer_id) {
        return Ok(());
    }
    Err(EngineError::NotPermitted {
        reason: format!(
            "{by} may not capture attempt {}: only its actor may",
            attempt.id
        ),
    })
}

/// A capture or order decision without the mandate expiry blockers (of the leaf, or of an ancestor
/// that is not active only because it expired): the authorization it settles was made while
/// the chain was valid.
fn without_expiry(mut decision: AuthorityDecision) -> AuthorityDecision {
    decision.blockers.retain(|b| match b.code {
        BlockerCode::MandateExpired => false,
        BlockerCode::AncestorNotActive => {
            b.causes.is_empty()
                || b.causes
                    .iter()
                    .any(|c| c.code != BlockerCode::MandateExpired.as_str())
        }
        _ => true,
    });
    decision.outcome = Outcome::from_blockers(&decision.blockers);
    decision
}

/// How long a submission failed on a PSP "not found" is looked up again by the sweep.
pub const RECHECK_FAILED: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

fn same_state(a: &PaymentAttempt, b: &PaymentAttempt) -> bool {
    a.status == b.status
        && a.authorized == b.authorized
        && a.captured == b.captured
        && a.refunded == b.refunded
        && a.provider_ref == b.provider_ref
}

/// Whether a report's amounts leave room for what was asked: in the attempt's currency, nothing
/// authorized beyond the request, captured beyond authorized or refunded beyond captured. A
/// report that contradicts the request is never read as its confirmation.
fn report_within(report: &ProviderReport, attempt: &PaymentAttempt) -> bool {
    let currency = attempt.request.currency();
    report.authorized.currency() == currency
        && report.captured.currency() == currency
        && report.refunded.currency() == currency
        && !report.authorized.exceeds(&attempt.request.amount)
        && !report.captured.exceeds(&attempt.request.amount)
        && !report.captured.exceeds(&attempt.authorized)
        && !report.refunded.exceeds(&attempt.captured)
        && !report.refunded.exceeds(&report.captured)
}

fn report_status_matches(report: &ProviderReport, status: AttemptStatus) -> bool {
    match report.status {
        ProviderStatus::Captured => matches!(
            status,
            AttemptStatus::Captured
                | AttemptStatus::PartiallyCaptured
                | AttemptStatus::Refunded
                | AttemptStatus::PartiallyRefunded
        ),
        ProviderStatus::Cancelled => status == AttemptStatus::Cancelled,
        ProviderStatus::Authorized
        | ProviderStatus::RequiresAction
        | ProviderStatus::Declined
        | ProviderStatus::NotFound
        | ProviderStatus::Unknown(_) => false,
    }
}

fn provider_ref(attempt: &PaymentAttempt) -> Result<crate::domain::ProviderRef, EngineError> {
    attempt
        .provider_ref
        .clone()
        .ok_or_else(|| EngineError::Invalid {
            field: "attempt_id".into(),
            message: format!(
                "attempt {} has no PSP reference yet: reconcile it first",
                attempt.id
            ),
        })
}
