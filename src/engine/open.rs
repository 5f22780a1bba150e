//! A payment in two write transactions: the common case of `execute_payment` (a new key, no
//! attempt yet, an allowed decision, a hold that fits) reads its inputs in one call
//! ([`Store::payment_inputs`](crate::ports::Store::payment_inputs)), writes the idempotency
//! record, the submitted attempt, its hold and their events in one
//! ([`Store::open_payment`](crate::ports::Store::open_payment)), calls the PSP, and stores
//! the answer with the completion of the record in one more
//! ([`Store::change_attempt`](crate::ports::Store::change_attempt)). Anything else (a
//! replay, a key in flight or in conflict, an attempt to resume, a refusal, a hold refused
//! at the cap) is left to the general path, which decides again from scratch: this path
//! writes nothing in those cases.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use super::commands::{ExecutePayment, PaymentOutcome};
use super::error::EngineError;
use super::execute::{decision_event, Context};
use super::observe;
use super::{transition_event, Engine, Finish};
use crate::domain::{
    ActorKind, AttemptEvent, AttemptId, AuditEvent, AuditKind, ContentDigest, HoldAction,
    PaymentAction, Principal,
};
use crate::ports::{
    Completion, HoldError, HoldRequest, IdempotencyScope, InputsQuery, OpenPayment, Opened,
    StoredResult,
};

impl Engine {
    /// The two-transaction path of [`Engine::execute_payment`]; `None` hands the command to
    /// the general path (nothing was written).
    pub(super) async fn execute_opened(
        &self,
        by: &Principal,
        command: &ExecutePayment,
        scope: &IdempotencyScope,
        fingerprint: &ContentDigest,
        attempt_id: &AttemptId,
    ) -> Result<Option<PaymentOutcome>, EngineError> {
        let req = &command.request;
        let store = &self.ports.store;
        let now = self.now();
        let inputs = observe::store(
            "payment_inputs",
            store.payment_inputs(&InputsQuery {
                attempt_id,
                mandate_id: &req.mandate_id,
                actor_id: &req.actor.id,
                buyer_id: &req.buyer_id,
                snapshot_id: &req.snapshot_id,
                now,
                usage: req.action.creates_spend(),
                confirmations: req.action == PaymentAction::Authorize,
            }),
        )
        .await?;
        if inputs.attempt.is_some() {
            return Ok(None);
        }
        let credential = self
            .credential_status(&command.credential, req, now)
            .await?;
        let ctx = Context::of(inputs, credential);
        // Only the mandate's actor pays under it: anyone else is refused by the general path,
        // before anything is recorded.
        match ctx.chain.last() {
            Some(leaf) if by.acts_as(leaf.actor(), leaf.buyer_id()) => {}
            _ => return Ok(None),
        }
        let loops = self
            .loops
            .count(self.config.loop_limit, req, &command.snapshot, now);
        let payer = ctx.payer(req);
        let signals = self.control_signals(
            payer.as_ref(),
            req,
            command.intent.as_ref(),
            command.declaration.as_ref(),
            now,
        );
        if signals.as_ref().is_some_and(|s| !s.confirm.is_empty()) {
            // A control asks for the buyer's confirmation: the general path reads them.
            return Ok(None);
        }
        let decision = ctx.decide(
            req,
            &command.snapshot,
            &command.checkout,
            now,
            loops,
            signals.as_ref(),
        );
        if !decision.is_allowed() {
            return Ok(None);
        }
        let fresh = super::execute::fresh_attempt(command, attempt_id, now);
        let validated = fresh.apply(&AttemptEvent::Validate, now)?;
        // The submission time is read now, and the PSP is called right after the open
        // transaction, only while the call can end inside the command's lease (I13).
        let submit_at = self.now();
        let pending = validated.apply(&AttemptEvent::Submit, submit_at)?;
        let hold = HoldRequest::on_chain(pending.hold_id(), req.amount, now, &ctx.chain);
        let created = [
            decision_event("execute_payment", req, &decision, Some(attempt_id)),
            transition_event(&fresh, &validated, "validate", now),
        ];
        let submitted_events = [
            AuditEvent {
                at: now,
                kind: AuditKind::Hold {
                    attempt_id: attempt_id.clone(),
                    action: HoldAction::Placed,
                    amount: req.amount,
                    mandate_ids: hold.levels.iter().map(|l| l.mandate_id.clone()).collect(),
                    policy: None,
                },
            },
            transition_event(&validated, &pending, "submit", submit_at),
        ];
        let opened = observe::store(
            "open_payment",
            store.open_payment(&OpenPayment {
                scope,
                fingerprint,
                now,
                lease: self.config.lease,
                validated: &validated,
                submitted: &pending,
                hold: &hold,
                snapshot: &command.snapshot,
                // Controls count agents only.
                reset_blocks: (req.actor.kind == ActorKind::Agent).then_some(&req.actor.id),
                created: &created,
                submitted_events: &submitted_events,
            }),
        )
        .await;
        let (fence, usage_after) = match opened {
            Ok(Opened::Started { fence, usage }) => {
                observe::decision("execute_payment", &decision);
                observe::hold(true);
                (fence, usage)
            }
            // Lost a race at the hold, or the key or the attempt is not new: the general
            // path decides again (and refuses, replays or resumes).
            Ok(Opened::Key(_) | Opened::AttemptExists) => return Ok(None),
            Err(HoldError::Refused { .. }) => {
                observe::hold(false);
                return Ok(None);
            }
            Err(e) => return Err(e.into()),
        };
        let retain =
            chrono::Duration::from_std(self.config.retention).unwrap_or(chrono::Duration::days(1));
        let result = StoredResult::Attempt(attempt_id.clone());
        let finish = Arc::new(Finish {
            completion: Some(Completion {
                fence: fence.clone(),
                result: result.clone(),
                retain_until: now + retain,
            }),
            fence,
            used: AtomicBool::new(false),
        });
        // Threshold events go with the change that records the PSP's answer.
        let mut later = Vec::new();
        self.threshold_events(&hold.levels, &usage_after, &req.amount, now, &mut later);
        self.threshold_alerts(payer.as_ref(), &mut later, 0);
        // The controls' alerts of an allowed payment (a new merchant, an expiry close) go
        // with the change that records the PSP's answer; only now that the payment is open,
        // so a fallback to the general path announces them there instead.
        self.control_allowed(payer.as_ref(), req, &ctx.chain, now, &mut later);
        let run = async {
            self.may_call_psp(&command.key, now, submit_at)?;
            self.authorize_pending(
                command,
                pending,
                decision,
                payer.as_ref(),
                later,
                Some(&finish),
            )
            .await
        }
        .await;
        match run {
            Ok(outcome @ PaymentOutcome::Done { .. }) => {
                if !finish.is_used() {
                    self.complete(&finish.fence, &result, now).await?;
                }
                Ok(Some(outcome))
            }
            Ok(other) => {
                self.abandon(&finish.fence).await;
                Ok(Some(other))
            }
            Err(e) => {
                self.abandon(&finish.fence).await;
                Err(e)
            }
        }
    }
}
