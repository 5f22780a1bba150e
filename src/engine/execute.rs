//! Evaluate and execute: the decision at execution time, the hold, the authorization.

use chrono::{DateTime, Utc};

use super::commands::{Evaluate, ExecutePayment, PaymentOutcome};
use super::controls::{CardKey, Payer};
use super::error::EngineError;
use super::observe::{self, Psp};
use super::{attempt_id_for, scope, Engine};
use crate::domain::{
    evaluate, execution_fingerprint, json_fingerprint, ActorId, ActorKind, AttemptEvent, AttemptId,
    AttemptStatus, AuditEvent, AuditKind, AuthorityDecision, Blocker, BlockerCode, CartSnapshot,
    CheckoutState, Confirmation, CredentialRef, CredentialStatus, EvaluationInput, HoldAction,
    IdempotencyKey, LimitKind, Mandate, Money, Operation, Outcome, PaymentAction, PaymentAttempt,
    PaymentRequest, Principal, ProviderReport, ProviderStatus, Suspensions, Usage,
};
use crate::ports::{
    AttemptChange, AuthorizeRequest, HoldError, HoldLevel, HoldOp, HoldRequest, Lookup,
    ProviderError, StoreError, StoredResult, VaultError, VoidRequest, Write,
};

/// What a decision reads from the ports.
pub(super) struct Context {
    pub(super) chain: Vec<Mandate>,
    usage: Vec<Usage>,
    pub(super) confirmations: Vec<Confirmation>,
    suspensions: Suspensions,
    credential: Option<CredentialStatus>,
    /// The card the presented credential is (the breaker's key).
    card: Option<CardKey>,
}

/// Whether `attempt` is the one `command` makes: its request, credential, capture flag and
/// checkout. A command that differs in any is another payment, never a run of this attempt.
pub(super) fn records(attempt: &PaymentAttempt, command: &ExecutePayment) -> bool {
    attempt.request == command.request
        && attempt.credential == command.credential
        && attempt.capture_on_authorize == command.capture
        && attempt.checkout_id == *command.checkout.checkout_id()
}

impl Context {
    /// The context of the inputs a store read in one go, with the credential's status.
    pub(super) fn of(
        inputs: crate::ports::PaymentInputs,
        credential: Option<(CredentialStatus, CardKey)>,
    ) -> Context {
        let (credential, card) = credential.map_or((None, None), |(s, c)| (Some(s), Some(c)));
        Context {
            chain: inputs.chain,
            usage: inputs.usage,
            confirmations: inputs.confirmations,
            suspensions: inputs.suspensions,
            credential,
            card,
        }
    }

    /// Whom the controls hold to account for `request` under this chain.
    pub(super) fn payer(&self, request: &PaymentRequest) -> Option<Payer> {
        Payer::of(request, &self.chain, self.card.as_ref())
    }

    pub(super) fn decide(
        &self,
        request: &PaymentRequest,
        snapshot: &CartSnapshot,
        checkout: &CheckoutState,
        now: DateTime<Utc>,
        resource_payments: Option<crate::domain::ResourcePayments>,
        controls: Option<&crate::domain::ControlSignals>,
    ) -> AuthorityDecision {
        evaluate(&EvaluationInput {
            request,
            chain: &self.chain,
            snapshot,
            checkout,
            usage: &self.usage,
            confirmations: &self.confirmations,
            suspensions: &self.suspensions,
            credential: self.credential,
            now,
            resource_payments,
            controls,
        })
    }
}

pub(super) fn decision_event(
    command: &str,
    request: &PaymentRequest,
    decision: &AuthorityDecision,
    attempt_id: Option<&AttemptId>,
) -> AuditEvent {
    AuditEvent {
        at: decision.evaluated_at,
        kind: AuditKind::Decision {
            command: command.to_owned(),
            actor_id: request.actor.id.clone(),
            mandate_id: request.mandate_id.clone(),
            action: request.action,
            amount: request.amount,
            snapshot_id: request.snapshot_id,
            outcome: decision.outcome,
            blockers: decision.blockers.clone(),
            evidence: decision.evidence.clone(),
            request_digest: decision.request_digest,
            attempt_id: attempt_id.cloned(),
        },
    }
}

impl Engine {
    /// Reads everything the decision needs for `request` at `now`.
    pub(super) async fn context(
        &self,
        request: &PaymentRequest,
        credential: Option<&CredentialRef>,
        now: DateTime<Utc>,
    ) -> Result<Context, EngineError> {
        let store = &self.ports.store;
        let chain = observe::store("chain", store.chain(&request.mandate_id)).await?;
        let usage = if request.action.creates_spend() && !chain.is_empty() {
            observe::store("usage", store.usage(&chain, now)).await?
        } else {
            Vec::new()
        };
        // Confirmations matter only to an authorization under a rule that may ask for one.
        let confirmations = if request.action == PaymentAction::Authorize
            && chain.iter().any(|m| !m.scope().confirmation.is_never())
        {
            observe::store(
                "confirmations",
                store.confirmations(&request.buyer_id, &request.snapshot_id),
            )
            .await?
        } else {
            Vec::new()
        };
        let mut actors: Vec<ActorId> = chain.iter().map(|m| m.actor().id.clone()).collect();
        actors.push(request.actor.id.clone());
        let suspensions =
            observe::store("suspensions", store.suspensions(&actors, &request.buyer_id)).await?;
        let credential = match credential {
            Some(r) => self.credential_status(r, request, now).await?,
            None => None,
        };
        let (credential, card) = credential.map_or((None, None), |(s, c)| (Some(s), Some(c)));
        Ok(Context {
            chain,
            usage,
            confirmations,
            suspensions,
            credential,
            card,
        })
    }

    /// The status of a credential for this request, and the card it is: `None` (not
    /// presented) when the vault does not know it or it belongs to another actor or buyer.
    /// The credentials' kill switch is the decision's (read with the suspensions).
    pub(super) async fn credential_status(
        &self,
        reference: &CredentialRef,
        request: &PaymentRequest,
        now: DateTime<Utc>,
    ) -> Result<Option<(CredentialStatus, CardKey)>, EngineError> {
        let vault = &self.ports.vault;
        let (stored, status) = match observe::vault(
            "describe_and_status",
            vault.describe_and_status(reference, now),
        )
        .await
        {
            Ok(s) => s,
            Err(VaultError::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(self.vault_failed(e, now).await),
        };
        if stored.owner != request.actor.id || stored.buyer_id != request.buyer_id {
            // Another actor's or another buyer's credential: as if there were none (its
            // status says nothing to this caller).
            return Ok(None);
        }
        Ok(Some((status, CardKey::of(&stored))))
    }

    /// A vault error on the way to a decision: a decryption or integrity error counts toward
    /// the vault-error control (whose alert is audited here); the error is returned as it was.
    async fn vault_failed(&self, e: VaultError, now: DateTime<Utc>) -> EngineError {
        if matches!(
            e,
            VaultError::Integrity { .. }
                | VaultError::KeyUnavailable { .. }
                | VaultError::Corrupt { .. }
        ) && let Some(alert) = self.record_vault_error(now)
        {
            // The alert is on the trail or waits in the outbox; the command fails with
            // the vault's error either way.
            let _ = self.audit(&[alert]).await;
        }
        e.into()
    }

    /// Decides without side effects: nothing is held, sent, stored or audited. `by` must be
    /// the request's actor, its buyer or an operator (a decision tells what a mandate allows);
    /// anyone else is [`EngineError::NotPermitted`].
    pub async fn evaluate(
        &self,
        by: &Principal,
        command: &Evaluate,
    ) -> Result<AuthorityDecision, EngineError> {
        observe::Command::new("evaluate", Some(by), None)
            .mandate(&command.request.mandate_id)
            .run(self.evaluate_body(by, command))
            .await
    }

    async fn evaluate_body(
        &self,
        by: &Principal,
        command: &Evaluate,
    ) -> Result<AuthorityDecision, EngineError> {
        let req = &command.request;
        let refused = || {
            EngineError::NotPermitted {
            reason: format!(
                "{by} may not evaluate a request of actor {} under mandate {}: only the mandate's actor, its buyer or an operator may",
                req.actor.id, req.mandate_id
            ),
        }
        };
        if !(by.acts_as(&req.actor, &req.buyer_id)
            || by.is_buyer(&req.buyer_id)
            || by.is_operator())
        {
            return Err(refused());
        }
        let now = self.now();
        let ctx = self
            .context(&command.request, command.credential.as_ref(), now)
            .await?;
        // What the request says about its actor and buyer is the caller's word: the mandate
        // it names decides who may see a decision about it.
        if let Some(leaf) = ctx.chain.last()
            && !(by.acts_as(leaf.actor(), leaf.buyer_id())
                || by.is_buyer(leaf.buyer_id())
                || by.is_operator())
        {
            return Err(refused());
        }
        let loops = self.loops.count(
            self.config.loop_limit,
            &command.request,
            &command.snapshot,
            now,
        );
        let payer = ctx.payer(&command.request);
        // A dry run carries no intent: the intent the execution must declare is not asked of
        // it (the execution is refused without one all the same).
        let signals = self
            .control_signals(payer.as_ref(), &command.request, None, None, now)
            .and_then(|mut s| {
                s.intent_required = false;
                (!s.is_empty()).then_some(s)
            });
        let decision = ctx.decide(
            &command.request,
            &command.snapshot,
            &command.checkout,
            now,
            loops,
            signals.as_ref(),
        );
        observe::decision("evaluate", &decision);
        Ok(decision)
    }

    /// Executes a payment: decides at execution time with the stored usage, holds the budget
    /// on the whole chain, authorizes at the PSP with the attempt-derived key, and records
    /// every step. A decision other than `allowed` is an `Ok(PaymentOutcome::Refused)`.
    ///
    /// Idempotency (I3): the same key and command returns the attempt as it is now
    /// ([`PaymentOutcome::Replayed`]) without calling the PSP; the same key with another
    /// command is [`EngineError::IdempotencyConflict`]; a transient PSP failure releases the
    /// hold and leaves the key free for a retry; a retry after a crash resumes the attempt
    /// (reconciling it first if it reached the PSP).
    ///
    /// `by` must act as the request's actor (an agent or system principal with its kind and
    /// id; the buyer for a `human` actor of their own mandate): anyone else, an operator
    /// included, is [`EngineError::NotPermitted`] before anything is decided, held or recorded.
    pub async fn execute_payment(
        &self,
        by: &Principal,
        command: &ExecutePayment,
    ) -> Result<PaymentOutcome, EngineError> {
        observe::Command::new("execute_payment", Some(by), Some(&command.key))
            .mandate(&command.request.mandate_id)
            .attempt_with(|| attempt_id_for(&key_owner(&command.request.actor), &command.key))
            .run(self.execute_payment_body(by, command))
            .await
    }

    async fn execute_payment_body(
        &self,
        by: &Principal,
        command: &ExecutePayment,
    ) -> Result<PaymentOutcome, EngineError> {
        let req = &command.request;
        if !by.acts_as(&req.actor, &req.buyer_id) {
            return Err(EngineError::NotPermitted {
                reason: format!(
                    "{by} may not pay as actor {}: a payment is requested by the mandate's actor only",
                    req.actor.id
                ),
            });
        }
        if req.action != PaymentAction::Authorize {
            return Err(EngineError::Invalid {
                field: "request.action".into(),
                message: "execute_payment takes an authorize_payment request".into(),
            });
        }
        let owner = key_owner(&req.actor);
        let scope = scope(&owner, "execute_payment", &command.key);
        let fingerprint = execution_fingerprint(
            req,
            &command.checkout,
            command.credential.as_str(),
            command.capture,
        );
        let attempt_id = attempt_id_for(&owner, &command.key);
        // A payment held for review goes the general path (its hold, then the window).
        if !self.review_applies(req)
            && let Some(outcome) = self
                .execute_opened(by, command, &scope, &fingerprint, &attempt_id)
                .await?
        {
            return Ok(outcome);
        }
        let id = &attempt_id;
        self.keyed(
            &scope,
            "execute_payment",
            &fingerprint,
            Some(StoredResult::Attempt(attempt_id.clone())),
            move |_, _| async move {
                Ok(PaymentOutcome::Replayed {
                    attempt: self.load_attempt(id).await?,
                })
            },
            move |now, finish| async move {
                let outcome = self
                    .execute_started(by, command, id.clone(), now, finish.as_deref())
                    .await?;
                // A refusal changed nothing lasting: the key is freed and a retry decides
                // again. After an error whatever happened is on the attempt record, which a
                // retry with the key resumes.
                let stored = match &outcome {
                    PaymentOutcome::Done { attempt, .. }
                    | PaymentOutcome::Scheduled { attempt, .. } => {
                        Some(StoredResult::Attempt(attempt.id.clone()))
                    }
                    PaymentOutcome::Refused(_) | PaymentOutcome::Replayed { .. } => None,
                };
                Ok((outcome, stored))
            },
        )
        .await
    }

    pub(super) async fn load_attempt(&self, id: &AttemptId) -> Result<PaymentAttempt, EngineError> {
        observe::store("attempt", self.ports.store.attempt(id))
            .await?
            .ok_or_else(|| EngineError::NotFound {
                entity: "attempt",
                id: id.to_string(),
            })
    }

    async fn execute_started(
        &self,
        by: &Principal,
        command: &ExecutePayment,
        attempt_id: AttemptId,
        now: DateTime<Utc>,
        finish: Option<&super::Finish>,
    ) -> Result<PaymentOutcome, EngineError> {
        let req = &command.request;
        let store = &self.ports.store;
        let mut existing = observe::store("attempt", store.attempt(&attempt_id)).await?;
        if let Some(a) = &existing {
            observe::resumed();
            // The key's record may be gone (a transient failure or a refusal freed it, or its
            // retention ended), but the attempt the key made remembers the command: another
            // command under the same key is a conflict, never a run on the old attempt (I3).
            if !records(a, command) {
                return Err(EngineError::IdempotencyConflict {
                    key: command.key.clone(),
                    operation: "execute_payment",
                });
            }
            if let Some(waiting) = self.review_resumed(a).await? {
                return Ok(waiting);
            }
            match a.status {
                AttemptStatus::NotStarted | AttemptStatus::AuthorityValidated => {
                    // A crash may have left the hold of the next submission in place: release
                    // it and skip its id, fenced by this command's lease.
                    let mut next = a.clone();
                    next.submissions = a.submissions.saturating_add(1);
                    if let Some(h) = observe::store("hold", store.hold(&next.hold_id())).await? {
                        next.updated_at = now;
                        let held = h.state == crate::ports::HoldState::Held;
                        let hold_id = next.hold_id();
                        let mut events = Vec::new();
                        if held {
                            events.push(AuditEvent {
                                at: now,
                                kind: AuditKind::Hold {
                                    attempt_id: a.id.clone(),
                                    action: HoldAction::Released,
                                    amount: h.amount,
                                    mandate_ids: h.mandate_ids.clone(),
                                    policy: None,
                                },
                            });
                        }
                        let ops: &[HoldOp] = if held { &[HoldOp::Release] } else { &[] };
                        observe::store(
                            "change_attempt",
                            store.change_attempt(&AttemptChange {
                                next: &next,
                                expected: a.status,
                                hold_id: &hold_id,
                                holds: ops,
                                fence: finish.map(super::Finish::fence),
                                completion: None,
                                events: &events,
                            }),
                        )
                        .await?;
                        existing = Some(next);
                    }
                }
                AttemptStatus::PendingProviderResponse
                | AttemptStatus::Ambiguous
                | AttemptStatus::RequiresBuyerAction => {
                    let attempt = self.reconcile_attempt(a.clone(), finish).await?;
                    return Ok(PaymentOutcome::Done {
                        attempt,
                        decision: None,
                    });
                }
                AttemptStatus::Authorized
                | AttemptStatus::PartiallyCaptured
                | AttemptStatus::Captured
                | AttemptStatus::Failed
                | AttemptStatus::Cancelled
                | AttemptStatus::PartiallyRefunded
                | AttemptStatus::Refunded => {
                    return Ok(PaymentOutcome::Done {
                        attempt: a.clone(),
                        decision: None,
                    });
                }
            }
        }

        let mut events = Vec::with_capacity(8);
        let mut tries = 0u8;
        let mut payer = None;
        let mut signals = None;
        let (decision, chain_levels, usage_after, validated) = loop {
            let mut ctx = self.context(req, Some(&command.credential), now).await?;
            // The request names its actor; the mandate decides whose it is. A principal that
            // is not the mandate's actor is refused before anything is decided or recorded
            // (nothing lands on another buyer's trail, no block is counted against anyone).
            if let Some(leaf) = ctx.chain.last()
                && !by.acts_as(leaf.actor(), leaf.buyer_id())
            {
                return Err(EngineError::NotPermitted {
                    reason: format!(
                        "{by} may not pay under mandate {}: only its actor may",
                        leaf.id()
                    ),
                });
            }
            let loops = self
                .loops
                .count(self.config.loop_limit, req, &command.snapshot, now);
            // The controls' signals, for the payer the chain names (read once: a retry after
            // a lost hold race decides again with the same signals).
            if tries == 0 {
                payer = ctx.payer(req);
                signals = self.control_signals(
                    payer.as_ref(),
                    req,
                    command.intent.as_ref(),
                    command.declaration.as_ref(),
                    now,
                );
            }
            if signals.as_ref().is_some_and(|s| !s.confirm.is_empty())
                && ctx.confirmations.is_empty()
            {
                // A control asks for the buyer's confirmation: read them even when no rule
                // of the chain would.
                ctx.confirmations = observe::store(
                    "confirmations",
                    store.confirmations(&req.buyer_id, &req.snapshot_id),
                )
                .await?;
            }
            let decision = ctx.decide(
                req,
                &command.snapshot,
                &command.checkout,
                now,
                loops,
                signals.as_ref(),
            );
            observe::decision("execute_payment", &decision);
            events.push(decision_event(
                "execute_payment",
                req,
                &decision,
                Some(&attempt_id),
            ));
            if !decision.is_allowed() {
                return self
                    .refuse(
                        payer.as_ref(),
                        req,
                        decision,
                        signals.as_ref(),
                        events,
                        now,
                        true,
                    )
                    .await;
            }
            if tries == 0 {
                self.control_allowed(payer.as_ref(), req, &ctx.chain, now, &mut events);
                if req.actor.kind == ActorKind::Agent {
                    observe::store("reset_blocks", store.reset_blocks(&req.actor.id)).await?;
                }
                observe::store("put_snapshot", store.put_snapshot(&command.snapshot)).await?;
            }
            let attempt = match existing.take() {
                Some(a) => a,
                None => {
                    // Created already validated: one write, both states on the audit trail.
                    let fresh = fresh_attempt(command, &attempt_id, now);
                    let validated = fresh.apply(&AttemptEvent::Validate, now)?;
                    events.push(super::transition_event(&fresh, &validated, "validate", now));
                    self.write(Write::InsertAttempt(&validated), &mut events)
                        .await?;
                    validated
                }
            };
            let attempt = if attempt.status == AttemptStatus::NotStarted {
                self.transition(&attempt, &AttemptEvent::Validate, now, &mut events, finish)
                    .await?
            } else {
                attempt
            };
            let submitted = attempt.apply(&AttemptEvent::Submit, now)?;
            let mut hold = HoldRequest::on_chain(submitted.hold_id(), req.amount, now, &ctx.chain);
            hold.fence = finish.map(|f| f.fence().clone());
            match observe::store("place_hold", store.place_hold(&hold)).await {
                Ok(usage_after) => {
                    observe::hold(true);
                    break (decision, hold.levels, usage_after, attempt);
                }
                Err(HoldError::Refused { .. }) if tries < self.config.hold_retries => {
                    // Usage moved between the read and the hold: decide again.
                    observe::hold(false);
                    tries += 1;
                    observe::retry(tries);
                    existing = Some(attempt);
                }
                Err(HoldError::Refused {
                    mandate_id,
                    limit,
                    counter,
                    would_be,
                    max,
                }) => {
                    observe::hold(false);
                    let code = match (&limit, counter) {
                        (Some(LimitKind::Lifetime), _) => BlockerCode::LifetimeLimitExceeded,
                        (Some(LimitKind::WindowAmount { .. }), _) => {
                            BlockerCode::WindowAmountExceeded
                        }
                        (Some(LimitKind::WindowCount { .. }), _) => {
                            BlockerCode::WindowCountExceeded
                        }
                        (None, Some("attempts")) => BlockerCode::AttemptsExhausted,
                        (None, _) => BlockerCode::MandateUsed,
                    };
                    let blocker = Blocker::new(
                        code,
                        format!(
                            "the budget hold was refused on mandate {mandate_id}: usage would reach {would_be}, the limit is {max}"
                        ),
                    )
                    .on(&mandate_id);
                    let refused = AuthorityDecision {
                        outcome: Outcome::Blocked,
                        blockers: vec![blocker],
                        evidence: decision.evidence.clone(),
                        request_digest: decision.request_digest,
                        evaluated_at: now,
                    };
                    observe::decision("execute_payment", &refused);
                    events.push(decision_event(
                        "execute_payment",
                        req,
                        &refused,
                        Some(&attempt_id),
                    ));
                    // Lost a race at the atomic hold: never counted toward suspension.
                    return self
                        .refuse(
                            payer.as_ref(),
                            req,
                            refused,
                            signals.as_ref(),
                            events,
                            now,
                            false,
                        )
                        .await;
                }
                Err(e) => return Err(e.into()),
            }
        };

        events.push(AuditEvent {
            at: now,
            kind: AuditKind::Hold {
                attempt_id: attempt_id.clone(),
                action: HoldAction::Placed,
                amount: req.amount,
                mandate_ids: chain_levels.iter().map(|l| l.mandate_id.clone()).collect(),
                policy: None,
            },
        });
        let from = events.len();
        self.threshold_events(&chain_levels, &usage_after, &req.amount, now, &mut events);
        self.threshold_alerts(payer.as_ref(), &mut events, from);
        if let Some(until) = self.review_until(req, now) {
            return self
                .schedule_review(command, validated, decision, events, until, now)
                .await;
        }
        // The decision, the hold and the submission are staged in one store change before
        // money can move (I15). The submission time is read now, and the PSP is called right
        // after, only while the call can end inside this command's lease (I13).
        let submit_at = self.now();
        let pending = self
            .transition(
                &validated,
                &AttemptEvent::Submit,
                submit_at,
                &mut events,
                finish,
            )
            .await?;
        self.may_call_psp(&command.key, now, submit_at)?;
        self.authorize_pending(command, pending, decision, payer.as_ref(), events, finish)
            .await
    }

    /// Sends the authorization of a submitted attempt (`pending`, its submission stored) and
    /// stores the answer; `events` are the command's events not yet staged.
    pub(super) async fn authorize_pending(
        &self,
        command: &ExecutePayment,
        pending: PaymentAttempt,
        decision: AuthorityDecision,
        payer: Option<&Payer>,
        mut events: Vec<AuditEvent>,
        finish: Option<&super::Finish>,
    ) -> Result<PaymentOutcome, EngineError> {
        let req = &command.request;
        let auth = AuthorizeRequest {
            key: pending.provider_key(Operation::Authorize),
            attempt_id: pending.id.clone(),
            amount: req.amount,
            credential: command.credential.clone(),
            capture: command.capture,
            snapshot_id: req.snapshot_id,
            merchant_id: req.merchant_id.clone(),
            buyer_id: req.buyer_id.clone(),
        };
        let result = observe::psp(
            Psp::Authorize,
            &pending.id,
            self.ports.provider.authorize(&auth),
        )
        .await;
        let at = self.now();
        let failed_authentication = match &result {
            Err(ProviderError::Invalid { .. }) => true,
            Ok(report) => {
                report.status == ProviderStatus::Declined
                    && self.is_auth_failure(payer, report.decline_code.as_deref())
            }
            Err(_) => false,
        };
        if failed_authentication {
            let alerts = self.record_auth_failure(payer, &command.credential, at);
            events.extend(alerts);
        }
        let outcome = match result {
            Ok(report) => {
                self.absorb(
                    &pending,
                    report,
                    Operation::Authorize,
                    at,
                    &mut events,
                    finish,
                )
                .await
            }
            Err(ProviderError::Invalid { .. }) => {
                self.transition_finishing(&pending, &AttemptEvent::Reject, at, &mut events, finish)
                    .await
            }
            Err(e @ ProviderError::Transient { .. }) => {
                // Provably not processed (the adapter's classification): the hold is
                // released and the key freed; a retry holds and sends again, with the same
                // PSP key.
                match self
                    .transition(&pending, &AttemptEvent::Retryable, at, &mut events, finish)
                    .await
                {
                    Ok(_) => {
                        self.audit(&[]).await?;
                        return Err(EngineError::Provider(e));
                    }
                    Err(other) => Err(other),
                }
            }
            Err(ProviderError::Ambiguous { .. }) => {
                self.transition_finishing(
                    &pending,
                    &AttemptEvent::Lost(Operation::Authorize),
                    at,
                    &mut events,
                    finish,
                )
                .await
            }
        };
        let done = match outcome {
            Ok(done) => done,
            Err(EngineError::Store(
                e @ (StoreError::Fenced { .. } | StoreError::Conflict { .. }),
            )) => {
                // This command lost its lease while the PSP answered (a peer slower than its
                // deadline): another caller owns the attempt now. If that caller already gave
                // the attempt up (failed, hold released), money the PSP holds for it has no
                // budget behind it: void it.
                // The same when another caller (the sweep) changed the attempt under us.
                self.compensate_late_authorization(&pending.id).await?;
                return Err(EngineError::Store(e));
            }
            Err(e) => return Err(e),
        };
        self.audit(&events).await?;
        if matches!(
            done.status,
            AttemptStatus::Authorized | AttemptStatus::Captured | AttemptStatus::PartiallyCaptured
        ) {
            self.loops.record(
                self.config.loop_limit,
                req,
                &command.snapshot,
                decision.evaluated_at,
            );
            self.record_payment(payer, decision.evaluated_at);
        }
        Ok(PaymentOutcome::Done {
            attempt: done,
            decision: Some(decision),
        })
    }

    /// `Ok` when a PSP call started at `at` ends (by the PSP's deadline) at least the margin
    /// before the lease of a command started at `started` lapses, and the submission was
    /// stored at most the margin ago: a call that may outlive the lease, or that starts after
    /// its submission's "not found" could be taken as final, is not sent (I13). Nothing was
    /// sent; the attempt keeps its hold and a retry with the key (or the sweep) resolves it.
    pub(super) fn may_call_psp(
        &self,
        key: &IdempotencyKey,
        started: DateTime<Utc>,
        submitted: DateTime<Utc>,
    ) -> Result<(), EngineError> {
        let at = self.now();
        let deadline = self.ports.provider.deadline();
        let margin = chrono::Duration::from_std(self.config.deadline_margin)
            .unwrap_or(chrono::Duration::MAX);
        let budget = self
            .config
            .lease
            .checked_sub(deadline)
            .and_then(|d| d.checked_sub(self.config.deadline_margin))
            .and_then(|d| chrono::Duration::from_std(d).ok())
            .unwrap_or(chrono::Duration::zero());
        let late_for_lease = started
            .checked_add_signed(budget)
            .is_none_or(|end| at > end);
        let late_for_submission = submitted
            .checked_add_signed(margin)
            .is_none_or(|end| at > end);
        if late_for_lease || late_for_submission {
            return Err(EngineError::LeaseExpired { key: key.clone() });
        }
        Ok(())
    }

    /// An authorization answered after its command lost the lease: when the attempt was
    /// failed meanwhile (its hold released), the authorization the PSP made has no budget
    /// behind it, so it is voided at the PSP and the recovery audited. Otherwise the current
    /// owner, or the sweep, records the PSP's answer by lookup.
    pub(super) async fn compensate_late_authorization(
        &self,
        id: &AttemptId,
    ) -> Result<(), EngineError> {
        let Some(current) = observe::store("attempt", self.ports.store.attempt(id)).await? else {
            return Ok(());
        };
        if current.status != AttemptStatus::Failed {
            return Ok(());
        }
        let lookup = match current.submitted_at {
            Some(submitted_at) => Lookup::KeySubmitted {
                key: current.provider_key(Operation::Authorize),
                submitted_at,
            },
            None => Lookup::Key(current.provider_key(Operation::Authorize)),
        };
        let Some(found) = observe::psp(
            Psp::Lookup,
            &current.id,
            self.ports.provider.lookup(&lookup),
        )
        .await?
        else {
            return Ok(());
        };
        let (Some(reference), true) = (found.reference.clone(), report_moves_money(&found)) else {
            return Ok(());
        };
        let now = self.now();
        let void = VoidRequest {
            key: current.provider_key(Operation::Void),
            reference,
            attempt_id: current.id.clone(),
        };
        let reason = match observe::psp(Psp::Void, &current.id, self.ports.provider.void(&void)).await {
            Ok(r) => format!(
                "an authorization answered after its command lost the lease, for an attempt failed meanwhile; the PSP reports it {:?} after the void",
                r.status
            ),
            Err(e) => format!(
                "an authorization answered after its command lost the lease, for an attempt failed meanwhile; the void failed: {e}"
            ),
        };
        self.audit(&[AuditEvent {
            at: now,
            kind: AuditKind::Recovery {
                attempt_id: current.id.clone(),
                operation: Operation::Void,
                status: current.status,
                reason,
            },
        }])
        .await
    }

    /// Applies a PSP report; a report the state machine refuses (inconsistent amounts, an
    /// impossible status) makes the attempt ambiguous rather than trusting it.
    async fn absorb(
        &self,
        attempt: &PaymentAttempt,
        report: ProviderReport,
        operation: Operation,
        at: DateTime<Utc>,
        events: &mut Vec<AuditEvent>,
        finish: Option<&super::Finish>,
    ) -> Result<PaymentAttempt, EngineError> {
        // An answer to the call itself that says the PSP has no such payment contradicts the
        // call: only a lookup after the deadline may fail a submission (I13).
        let contradicts =
            operation == Operation::Authorize && matches!(report.status, ProviderStatus::NotFound);
        match attempt
            .apply(&AttemptEvent::Report(report), at)
            .map_err(EngineError::from)
            .and_then(|next| {
                if contradicts {
                    Err(EngineError::Invalid {
                        field: "report.status".into(),
                        message: "not found in answer to the authorization".into(),
                    })
                } else {
                    Ok(next)
                }
            }) {
            Ok(next) => {
                self.store_transition_finishing(attempt, next, "report", at, events, finish)
                    .await
            }
            Err(_) => {
                self.transition_finishing(
                    attempt,
                    &AttemptEvent::Lost(operation),
                    at,
                    events,
                    finish,
                )
                .await
            }
        }
    }

    /// Records a refusal: audit, the consecutive-block control, nothing held. `counted`: the
    /// refusal may count toward auto-suspension (a decision's, not a lost hold race); it
    /// counts when one of its blockers is in the configured `suspend_on` set.
    #[expect(
        clippy::too_many_arguments,
        reason = "the refusal's parts, each borrowed from the caller"
    )]
    async fn refuse(
        &self,
        payer: Option<&Payer>,
        req: &PaymentRequest,
        decision: AuthorityDecision,
        signals: Option<&crate::domain::ControlSignals>,
        mut events: Vec<AuditEvent>,
        now: DateTime<Utc>,
        counted: bool,
    ) -> Result<PaymentOutcome, EngineError> {
        let mut suspend =
            self.control_refusal(payer, req, &decision, signals, counted, now, &mut events);
        if let Some(rp) = self.config.loop_limit
            && decision.has(crate::domain::BlockerCode::ResourceLoopDetected)
        {
            events.push(AuditEvent {
                at: now,
                kind: AuditKind::LoopDetected {
                    actor_id: req.actor.id.clone(),
                    mandate_id: req.mandate_id.clone(),
                    merchant_id: req.merchant_id.clone(),
                    snapshot_id: req.snapshot_id,
                    max_payments: rp.max_payments,
                    window_seconds: rp.window_seconds,
                },
            });
        }
        // Controls count an agent's own violations: only an agent's requests (an agent
        // principal asking as itself) count, never a person's or a process's that shares its id.
        if counted
            && req.actor.kind == ActorKind::Agent
            && self.config.counts_toward_suspension(&decision)
        {
            let count =
                observe::store("record_block", self.ports.store.record_block(&req.actor.id))
                    .await?;
            if self.config.auto_suspend_after == Some(count) {
                let party = crate::domain::Party::Actor(req.actor.id.clone());
                events.push(AuditEvent {
                    at: now,
                    kind: AuditKind::AutoSuspended {
                        actor_id: req.actor.id.clone(),
                        consecutive_blocks: count,
                    },
                });
                if !suspend {
                    events.extend(self.consecutive_alert(payer, count, now));
                }
                self.write(
                    Write::Suspend {
                        party: &party,
                        suspended: true,
                    },
                    &mut events,
                )
                .await?;
                observe::auto_suspended(&req.actor.id, count);
                suspend = false;
            }
        }
        if suspend {
            // A control suspends the agent at once (an intent mismatch, violations past the
            // rolling window's count): its alert goes with the suspension.
            let party = crate::domain::Party::Actor(req.actor.id.clone());
            self.write(
                Write::Suspend {
                    party: &party,
                    suspended: true,
                },
                &mut events,
            )
            .await?;
            observe::auto_suspended(&req.actor.id, 0);
        }
        self.audit(&events).await?;
        Ok(PaymentOutcome::Refused(decision))
    }

    /// Threshold events: a level's lifetime or window usage crossed the configured
    /// share with this hold.
    pub(super) fn threshold_events(
        &self,
        levels: &[HoldLevel],
        usage_after: &[Usage],
        amount: &Money,
        now: DateTime<Utc>,
        events: &mut Vec<AuditEvent>,
    ) {
        let Some(pct) = self.config.threshold_percent else {
            return;
        };
        let pct = i128::from(pct);
        let add = i128::from(amount.minor_units());
        let crossed = |after: i128, delta: i128, max: i128| {
            let before = after - delta;
            before * 100 < max * pct && after * 100 >= max * pct
        };
        for (level, usage) in levels.iter().zip(usage_after) {
            let mut push = |limit: LimitKind, used: String, max: String| {
                events.push(AuditEvent {
                    at: now,
                    kind: AuditKind::Threshold {
                        mandate_id: level.mandate_id.clone(),
                        limit,
                        used,
                        max,
                        percent: pct as u8,
                    },
                });
            };
            if let Some(max) = &level.limits.lifetime {
                let after =
                    i128::from(usage.spent.minor_units()) + i128::from(usage.held.minor_units());
                if crossed(after, add, i128::from(max.minor_units())) {
                    let used = usage.spent.checked_add(&usage.held).unwrap_or(usage.held);
                    push(LimitKind::Lifetime, used.to_string(), max.to_string());
                }
            }
            for w in &level.limits.windows {
                let Some(wu) = usage.window(w.window_seconds) else {
                    continue;
                };
                if let Some(max) = &w.max_amount
                    && crossed(
                        i128::from(wu.amount.minor_units()),
                        add,
                        i128::from(max.minor_units()),
                    )
                {
                    push(
                        LimitKind::WindowAmount {
                            window_seconds: w.window_seconds,
                        },
                        wu.amount.to_string(),
                        max.to_string(),
                    );
                }
                if let Some(max) = w.max_count
                    && crossed(i128::from(wu.count), 1, i128::from(max))
                {
                    push(
                        LimitKind::WindowCount {
                            window_seconds: w.window_seconds,
                        },
                        wu.count.to_string(),
                        max.to_string(),
                    );
                }
            }
        }
    }
}

/// Whether a PSP report says money is (or may be) held or taken at the PSP.
fn report_moves_money(report: &ProviderReport) -> bool {
    match report.status {
        ProviderStatus::Authorized | ProviderStatus::Captured | ProviderStatus::RequiresAction => {
            true
        }
        ProviderStatus::Declined | ProviderStatus::Cancelled | ProviderStatus::NotFound => false,
        ProviderStatus::Unknown(_) => true,
    }
}

pub(super) fn fingerprint_of<T: serde::Serialize>(
    command: &T,
) -> Result<crate::domain::ContentDigest, EngineError> {
    json_fingerprint(command).map_err(|e| EngineError::Invalid {
        field: "command".into(),
        message: e.to_string(),
    })
}

/// The id an execute command's key and attempt id are scoped to: an agent's own id (so an
/// agent's attempt ids are `attempt_id_for(agent, key)`), `kind:id` for a person's or a
/// process's request, so no principal can take a key an agent of the same id will use.
fn key_owner(actor: &crate::domain::Actor) -> crate::domain::ActorId {
    match actor.kind {
        ActorKind::Agent => actor.id.clone(),
        ActorKind::Human => crate::domain::ActorId::derived(format!("human:{}", actor.id)),
        ActorKind::System => crate::domain::ActorId::derived(format!("system:{}", actor.id)),
    }
}

/// The attempt an execute command makes, before its decision is recorded.
pub(super) fn fresh_attempt(
    command: &ExecutePayment,
    attempt_id: &AttemptId,
    now: DateTime<Utc>,
) -> PaymentAttempt {
    PaymentAttempt::new(
        attempt_id.clone(),
        command.request.clone(),
        command.credential.clone(),
        command.checkout.checkout_id().clone(),
        command.capture,
        now,
    )
}
