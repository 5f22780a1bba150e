//! The review window: an allowed, non-urgent payment of an agent is held (its budget hold
//! placed) and sent to the PSP only after the window, unless the buyer cancels it.
//!
//! The states of one payment, and what moves it:
//!
//! ```text
//! execute_payment (allowed, hold placed)
//!   -> attempt authority_validated + review entry pending     PaymentOutcome::Scheduled{until}
//! cancel_review (the buyer, an operator; CAS on the attempt)
//!   -> attempt cancelled, hold released, entry cancelled      audit review/cancelled
//! run_due_reviews at or after `until`:
//!   authority lapsed (revoked, expired, suspended, credential killed)
//!   -> attempt cancelled, hold released, entry cancelled      audit review/withdrawn
//!   else submit (CAS authority_validated -> pending, hold verified) -> PSP -> entry sent
//! ```
//!
//! Exactly one of send and cancel wins: both are compare-and-set changes of the attempt from
//! `authority_validated`, in the store. The queue ([`ReviewQueue`]) is bookkeeping that the
//! next run repairs after a crash (an entry whose attempt left `authority_validated` is closed
//! after the attempt's state), so a crash loses no payment and sends none twice; the PSP key
//! is the attempt's (`<attempt>-authorize`) whoever sends it.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::commands::{ExecutePayment, PaymentOutcome};
use super::config::ConfigError;
use super::error::EngineError;
use super::execute::decision_event;
use super::observe;
use super::Engine;
use crate::domain::{
    ActorKind, AttemptEvent, AttemptId, AttemptStatus, AuditEvent, AuditKind, AuthorityDecision,
    BlockerCode, HoldAction, Outcome, PaymentAttempt, PaymentRequest, Principal, Urgency,
};
use crate::ports::{
    AttemptChange, HoldError, HoldOp, HoldRequest, HoldState, ProviderError, ReviewEntry,
    ReviewQueue, ReviewState, StoreError, Write,
};

/// The longest review window (a day: a hold kept longer is a payment nobody is waiting for).
pub const MAX_REVIEW_WINDOW: Duration = Duration::from_secs(24 * 3600);

/// How many times a due payment is put off after a transient PSP failure before it is
/// withdrawn.
pub const MAX_REVIEW_TRIES: u32 = 5;

/// The review window control ([`crate::engine::Controls::with_review_window`]): how long a
/// non-urgent payment of an agent waits before it goes to the PSP, and from which urgency a
/// payment skips the window.
///
/// ```
/// use std::time::Duration;
/// use agent_mandate::domain::Urgency;
/// use agent_mandate::engine::ReviewWindow;
/// let window = ReviewWindow::new(Duration::from_secs(60))?.with_urgent_from(Urgency::Critical);
/// assert_eq!(window.length(), Duration::from_secs(60));
/// assert_eq!(ReviewWindow::default().length(), Duration::from_secs(30));
/// assert_eq!(ReviewWindow::new(Duration::ZERO).unwrap_err().field, "review_window");
/// # Ok::<(), agent_mandate::engine::ConfigError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReviewWindow {
    length: Duration,
    urgent_from: Urgency,
}

impl Default for ReviewWindow {
    /// 30 seconds; `time_sensitive` and `critical` payments skip it.
    fn default() -> Self {
        ReviewWindow {
            length: Duration::from_secs(30),
            urgent_from: Urgency::TimeSensitive,
        }
    }
}

impl ReviewWindow {
    /// A window of `length`; refuses less than one second and more than
    /// [`MAX_REVIEW_WINDOW`].
    pub fn new(length: Duration) -> Result<ReviewWindow, ConfigError> {
        if length < Duration::from_secs(1) || length > MAX_REVIEW_WINDOW {
            return Err(ConfigError {
                field: "review_window",
                message: "must be 1 s to 24 hours",
            });
        }
        Ok(ReviewWindow {
            length,
            ..ReviewWindow::default()
        })
    }

    /// Payments whose request states this urgency or a higher one skip the window (the
    /// default is `time_sensitive`). A request without an urgency is not urgent.
    pub fn with_urgent_from(mut self, urgency: Urgency) -> Self {
        self.urgent_from = urgency;
        self
    }

    /// How long a payment waits.
    pub fn length(&self) -> Duration {
        self.length
    }

    /// The lowest urgency that skips the window.
    pub fn urgent_from(&self) -> Urgency {
        self.urgent_from
    }
}

/// What [`Engine::run_due_reviews`] did with one due entry.
#[derive(Debug)]
#[non_exhaustive]
pub enum ReviewResult {
    /// Sent to the PSP: the attempt after its answer (authorized, failed, ambiguous...).
    Sent(Box<PaymentAttempt>),
    /// Its authority lapsed during the window: cancelled, its hold released.
    Withdrawn {
        /// The blocker codes (or the reason) that withdrew it.
        reason: String,
    },
    /// A transient PSP failure: nothing processed, the hold released; due again at `until`.
    Postponed {
        /// When it is due again.
        until: DateTime<Utc>,
    },
    /// The attempt had already left the window (sent by another instance, cancelled, or
    /// sent before a crash): the entry was closed after it, nothing sent.
    Closed {
        /// The attempt's status.
        status: AttemptStatus,
    },
}

/// One entry of a [`Engine::run_due_reviews`] run.
#[derive(Debug)]
pub struct ReviewRun {
    /// The attempt.
    pub attempt_id: AttemptId,
    /// What happened, or the error that left the entry pending (it is retried next run).
    pub outcome: Result<ReviewResult, EngineError>,
}

/// Budget codes a decision gives at the end of the window because of the payment's own hold,
/// which already reserves its budget: they do not withdraw it.
fn held_budget(code: BlockerCode) -> bool {
    matches!(
        code,
        BlockerCode::LifetimeLimitExceeded
            | BlockerCode::WindowAmountExceeded
            | BlockerCode::WindowCountExceeded
            | BlockerCode::MandateUsed
            | BlockerCode::AttemptsExhausted
    )
}

impl Engine {
    /// The engine with `queue` for payments held in their review window. The window applies
    /// only with both this queue and [`crate::engine::Controls::review_window`] set.
    ///
    /// ```
    /// # #[cfg(feature = "testkit")] {
    /// use std::sync::Arc;
    /// use agent_mandate::adapters::memory::{MemoryPorts, MemoryReviewQueue};
    /// use agent_mandate::engine::{Controls, Engine, EngineConfig};
    /// use agent_mandate::testkit::FakePsp;
    /// let memory = MemoryPorts::new(agent_mandate::domain::examples::now(), |vault, _| {
    ///     Arc::new(FakePsp::with_vault(vault))
    /// });
    /// let config = EngineConfig::default().with_controls(Controls::recommended());
    /// let engine = Engine::new(memory.ports.clone(), config)
    ///     .unwrap()
    ///     .with_reviews(Arc::new(MemoryReviewQueue::new()));
    /// assert!(engine.reviews().is_some());
    /// # }
    /// ```
    pub fn with_reviews(mut self, queue: Arc<dyn ReviewQueue>) -> Engine {
        self.reviews = Some(queue);
        self
    }

    /// The review queue, when one is attached.
    pub fn reviews(&self) -> Option<&Arc<dyn ReviewQueue>> {
        self.reviews.as_ref()
    }

    /// When a payment of `req` decided at `now` may be sent, if it is held for review: an
    /// agent's request, not urgent, with the control and a queue.
    pub(super) fn review_until(
        &self,
        req: &PaymentRequest,
        now: DateTime<Utc>,
    ) -> Option<DateTime<Utc>> {
        let window = self.config.controls().review_window()?;
        self.reviews.as_ref()?;
        if req.actor.kind != ActorKind::Agent
            || req.urgency.is_some_and(|u| u >= window.urgent_from())
        {
            return None;
        }
        let length = chrono::Duration::from_std(window.length()).ok()?;
        now.checked_add_signed(length)
    }

    /// Whether `req` would be held for review (the two-transaction path leaves it to the
    /// general one).
    pub(super) fn review_applies(&self, req: &PaymentRequest) -> bool {
        self.review_until(req, self.now()).is_some()
    }

    /// Holds `validated` (its hold placed) for review instead of sending it: stages the
    /// command's events with the `scheduled` one, then schedules the entry. A crash between
    /// the two leaves an attempt with a hold and no entry, which the key's next caller
    /// resumes (or the sweep releases) as any crash before a submission.
    pub(super) async fn schedule_review(
        &self,
        command: &ExecutePayment,
        validated: PaymentAttempt,
        decision: AuthorityDecision,
        mut events: Vec<AuditEvent>,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<PaymentOutcome, EngineError> {
        let Some(queue) = self.reviews.clone() else {
            return Err(EngineError::Invalid {
                field: "reviews".into(),
                message: "no review queue is attached".into(),
            });
        };
        let req = &command.request;
        events.push(review_event(
            &validated,
            "scheduled",
            Some(until),
            None,
            None,
            now,
        ));
        self.write(Write::Events, &mut events).await?;
        let body = serde_json::to_string(command).map_err(|e| EngineError::Invalid {
            field: "command".into(),
            message: e.to_string(),
        })?;
        let stored = observe::store(
            "review_schedule",
            queue.schedule(&ReviewEntry {
                attempt_id: validated.id.clone(),
                buyer_id: req.buyer_id.clone(),
                actor_id: req.actor.id.clone(),
                mandate_id: req.mandate_id.clone(),
                merchant_id: req.merchant_id.clone(),
                amount: req.amount,
                scheduled_at: now,
                due_at: until,
                state: ReviewState::Pending,
                closed_at: None,
                tries: 0,
                command: body,
            }),
        )
        .await?;
        let _ = self.flush_audit().await;
        Ok(PaymentOutcome::Scheduled {
            attempt: validated,
            decision: Some(decision),
            until: stored.due_at,
        })
    }

    /// A retry of the key of an attempt that waits in its window: the same answer again.
    pub(super) async fn review_resumed(
        &self,
        attempt: &PaymentAttempt,
    ) -> Result<Option<PaymentOutcome>, EngineError> {
        let Some(queue) = &self.reviews else {
            return Ok(None);
        };
        if attempt.status != AttemptStatus::AuthorityValidated {
            return Ok(None);
        }
        match observe::store("review_entry", queue.entry(&attempt.id)).await? {
            Some(e) if e.state == ReviewState::Pending => Ok(Some(PaymentOutcome::Scheduled {
                attempt: attempt.clone(),
                decision: None,
                until: e.due_at,
            })),
            _ => Ok(None),
        }
    }

    /// Whether the validated attempt `id` waits in its review window (its hold is not an
    /// orphan for the sweep).
    pub(super) async fn in_review(&self, id: &AttemptId) -> bool {
        let Some(queue) = &self.reviews else {
            return false;
        };
        // When the queue cannot be read, the hold is kept: releasing it could let the send
        // go out without budget.
        match queue.entry(id).await {
            Ok(None) => false,
            Ok(Some(e)) => e.state == ReviewState::Pending,
            Err(_) => true,
        }
    }

    /// Cancels a payment in its review window: the attempt is cancelled, its hold released,
    /// the entry closed, and the cancellation audited with who asked. Only the buyer of the
    /// payment or an operator may cancel; anyone else (the agent that asked for it, another
    /// buyer) is [`EngineError::NotPermitted`]. A payment already sent (or cancelled) is
    /// [`EngineError::Transition`]: exactly one of send and cancel wins. When the attempt is
    /// cancelled but the queue fails to close its entry, the queue's error is returned (the
    /// payment is cancelled all the same and can no longer be sent; the next
    /// [`Engine::run_due_reviews`] closes the entry).
    pub async fn cancel_review(
        &self,
        by: &Principal,
        attempt_id: &AttemptId,
    ) -> Result<PaymentAttempt, EngineError> {
        observe::Command::new("cancel_review", Some(by), None)
            .attempt(attempt_id)
            .run(self.cancel_review_body(by, attempt_id))
            .await
    }

    async fn cancel_review_body(
        &self,
        by: &Principal,
        attempt_id: &AttemptId,
    ) -> Result<PaymentAttempt, EngineError> {
        let attempt = self.load_attempt(attempt_id).await?;
        if !(by.is_buyer(&attempt.request.buyer_id) || by.is_operator()) {
            return Err(EngineError::NotPermitted {
                reason: format!(
                    "{by} may not cancel attempt {attempt_id}: only its buyer or an operator may"
                ),
            });
        }
        let Some(queue) = self.reviews.clone() else {
            return Err(not_in_review(attempt_id));
        };
        let entry = observe::store("review_entry", queue.entry(attempt_id)).await?;
        if attempt.status == AttemptStatus::AuthorityValidated
            && !entry
                .as_ref()
                .is_some_and(|e| e.state == ReviewState::Pending)
        {
            return Err(not_in_review(attempt_id));
        }
        let now = self.now();
        let cancelled = self
            .withdraw(&attempt, "cancelled", Some(by.clone()), None, now)
            .await?;
        // The attempt is cancelled (nothing can send it any more); an entry the queue failed
        // to close is closed by the next run. The caller hears of the failure.
        let closed = observe::store("review_cancel", queue.cancel(attempt_id, now)).await;
        let _ = self.flush_audit().await;
        closed?;
        Ok(cancelled)
    }

    /// Ends a validated attempt that was never sent: cancelled, the hold of its next
    /// submission released (when held), with its events, in one compare-and-set change.
    async fn withdraw(
        &self,
        attempt: &PaymentAttempt,
        step: &str,
        by: Option<Principal>,
        reason: Option<String>,
        now: DateTime<Utc>,
    ) -> Result<PaymentAttempt, EngineError> {
        let next = attempt.apply(&AttemptEvent::Withdraw, now)?;
        let hold_id = attempt.apply(&AttemptEvent::Submit, now)?.hold_id();
        let hold = observe::store("hold", self.ports.store.hold(&hold_id)).await?;
        let held = hold.filter(|h| h.state == HoldState::Held);
        let mut events = vec![super::transition_event(attempt, &next, "withdraw", now)];
        if let Some(h) = &held {
            events.push(AuditEvent {
                at: now,
                kind: AuditKind::Hold {
                    attempt_id: attempt.id.clone(),
                    action: HoldAction::Released,
                    amount: h.amount,
                    mandate_ids: h.mandate_ids.clone(),
                    policy: None,
                },
            });
        }
        events.push(review_event(attempt, step, None, by, reason, now));
        let ops: &[HoldOp] = if held.is_some() {
            &[HoldOp::Release]
        } else {
            &[]
        };
        observe::store(
            "change_attempt",
            self.ports.store.change_attempt(&AttemptChange {
                next: &next,
                expected: attempt.status,
                hold_id: &hold_id,
                holds: ops,
                fence: None,
                completion: None,
                events: &events,
            }),
        )
        .await?;
        observe::transition(&next.id, attempt.status, next.status);
        Ok(next)
    }

    /// Sends the payments whose review window has ended (at most `limit`, earliest first) to
    /// the PSP through the attempt state machine, after checking their authority again (a
    /// revocation, expiry or suspension during the window, or the credentials' kill switch,
    /// withdraws the payment and releases its hold). Safe to run on several instances at
    /// once and after a crash: only the instance whose submission wins the attempt's
    /// compare-and-set calls the PSP. The time is the clock port's.
    ///
    /// The host calls it from a loop:
    ///
    /// ```no_run
    /// # async fn host(engine: agent_mandate::engine::Engine) {
    /// loop {
    ///     for run in engine.run_due_reviews(100).await.unwrap_or_default() {
    ///         if let Err(e) = run.outcome {
    ///             eprintln!("review of {} left for the next run: {e}", run.attempt_id);
    ///         }
    ///     }
    ///     tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    /// }
    /// # }
    /// ```
    pub async fn run_due_reviews(&self, limit: usize) -> Result<Vec<ReviewRun>, EngineError> {
        observe::Command::new("run_due_reviews", None, None)
            .run(self.run_due_reviews_body(limit))
            .await
    }

    async fn run_due_reviews_body(&self, limit: usize) -> Result<Vec<ReviewRun>, EngineError> {
        let Some(queue) = self.reviews.clone() else {
            return Ok(Vec::new());
        };
        let now = self.now();
        let due = observe::store("review_due", queue.due(now, limit)).await?;
        let mut out = Vec::with_capacity(due.len());
        for entry in due {
            let attempt_id = entry.attempt_id.clone();
            let outcome = self.run_review(queue.as_ref(), entry).await;
            out.push(ReviewRun {
                attempt_id,
                outcome,
            });
        }
        let _ = self.flush_audit().await;
        Ok(out)
    }

    async fn run_review(
        &self,
        queue: &dyn ReviewQueue,
        entry: ReviewEntry,
    ) -> Result<ReviewResult, EngineError> {
        let store = &self.ports.store;
        let now = self.now();
        let attempt = self.load_attempt(&entry.attempt_id).await?;
        if attempt.status != AttemptStatus::AuthorityValidated {
            return self.close_after(queue, &attempt, now).await;
        }
        let command: ExecutePayment = match serde_json::from_str(&entry.command) {
            Ok(c) => c,
            Err(e) => {
                let reason = format!("the scheduled command cannot be read: {e}");
                return self.withdrawn(queue, &attempt, reason, now).await;
            }
        };
        // The queue is another port (possibly another database): what it hands back is sent
        // only if it is the command the attempt records, the one decided and audited.
        if !super::execute::records(&attempt, &command) {
            let reason = "the scheduled command does not match its attempt \
                          (request, credential, capture or checkout changed in the queue)"
                .to_owned();
            return self.withdrawn(queue, &attempt, reason, now).await;
        }
        let req = &command.request;
        // Authority again, at the end of the window: the chain's state, suspensions, the
        // credential (the kill switch included). The payment's own hold already reserves its
        // budget, so the usage codes it causes do not count.
        // Of the controls, only an open circuit breaker speaks again: the confirmations they
        // asked for and the intent were settled when the payment was scheduled.
        let ctx = self.context(req, Some(&command.credential), now).await?;
        let payer = ctx.payer(req);
        let breaker = self
            .control_signals(payer.as_ref(), req, None, None, now)
            .and_then(|s| s.circuit_open)
            .map(|scope| crate::domain::ControlSignals {
                circuit_open: Some(scope),
                ..crate::domain::ControlSignals::default()
            });
        let full = ctx.decide(
            req,
            &command.snapshot,
            &command.checkout,
            now,
            None,
            breaker.as_ref(),
        );
        let blockers: Vec<_> = full
            .blockers
            .iter()
            .filter(|b| !held_budget(b.code))
            .cloned()
            .collect();
        let decision = AuthorityDecision {
            outcome: if blockers.is_empty() {
                Outcome::Allowed
            } else {
                full.outcome
            },
            blockers,
            ..full
        };
        observe::decision("run_due_reviews", &decision);
        let mut events = vec![decision_event(
            "run_due_reviews",
            req,
            &decision,
            Some(&attempt.id),
        )];
        if !decision.is_allowed() {
            self.write(Write::Events, &mut events).await?;
            let reason = decision
                .codes()
                .iter()
                .map(|c| c.as_str())
                .collect::<Vec<_>>()
                .join(",");
            return self.withdrawn(queue, &attempt, reason, now).await;
        }
        // The hold of the submission: placed at scheduling; placed again after a transient
        // failure released it.
        let hold_id = attempt.apply(&AttemptEvent::Submit, now)?.hold_id();
        let mut placed_now = false;
        match observe::store("hold", store.hold(&hold_id)).await? {
            Some(h) if h.state == HoldState::Held => {}
            Some(_) => {
                self.write(Write::Events, &mut events).await?;
                let reason = "its budget hold is no longer held".to_owned();
                return self.withdrawn(queue, &attempt, reason, now).await;
            }
            None => {
                let hold = HoldRequest::on_chain(hold_id.clone(), req.amount, now, &ctx.chain);
                match observe::store("place_hold", store.place_hold(&hold)).await {
                    Ok(_) => {
                        placed_now = true;
                        events.push(AuditEvent {
                            at: now,
                            kind: AuditKind::Hold {
                                attempt_id: attempt.id.clone(),
                                action: HoldAction::Placed,
                                amount: req.amount,
                                mandate_ids: hold
                                    .levels
                                    .iter()
                                    .map(|l| l.mandate_id.clone())
                                    .collect(),
                                policy: None,
                            },
                        })
                    }
                    Err(HoldError::Refused { .. }) => {
                        self.write(Write::Events, &mut events).await?;
                        let reason = "its budget hold was refused when placed again".to_owned();
                        return self.withdrawn(queue, &attempt, reason, now).await;
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        }
        events.push(review_event(&attempt, "sent", None, None, None, now));
        let submit_at = self.now();
        let pending = match self
            .transition(
                &attempt,
                &AttemptEvent::Submit,
                submit_at,
                &mut events,
                None,
            )
            .await
        {
            Ok(p) => p,
            Err(EngineError::Store(StoreError::Conflict { .. } | StoreError::Fenced { .. })) => {
                // Another instance sent it, or the buyer cancelled it, first.
                let _ = self.audit(&[]).await;
                let current = self.load_attempt(&attempt.id).await?;
                if placed_now {
                    // The hold this run placed again (after a transient failure) lost to a
                    // cancel that read no hold: it is released, never left counting.
                    self.release_stray_hold(&current, &hold_id, now).await?;
                }
                return self.close_after(queue, &current, now).await;
            }
            Err(e) => return Err(e),
        };
        match self
            .authorize_pending(&command, pending, decision, payer.as_ref(), events, None)
            .await
        {
            Ok(outcome) => {
                let _ = observe::store("review_complete", queue.complete(&attempt.id, now)).await;
                match outcome {
                    PaymentOutcome::Done { attempt, .. }
                    | PaymentOutcome::Replayed { attempt }
                    | PaymentOutcome::Scheduled { attempt, .. } => {
                        Ok(ReviewResult::Sent(Box::new(attempt)))
                    }
                    PaymentOutcome::Refused(_) => Ok(ReviewResult::Closed {
                        status: AttemptStatus::Failed,
                    }),
                }
            }
            Err(EngineError::Provider(ProviderError::Transient { .. }))
                if entry.tries + 1 < MAX_REVIEW_TRIES =>
            {
                // Nothing processed, the hold released, the attempt validated again: due again
                // after one more window.
                let length = self
                    .config
                    .controls()
                    .review_window()
                    .map(|w| w.length())
                    .unwrap_or(Duration::from_secs(30));
                let until = now
                    .checked_add_signed(
                        chrono::Duration::from_std(length).unwrap_or(chrono::Duration::zero()),
                    )
                    .unwrap_or(now);
                observe::store("review_postpone", queue.postpone(&attempt.id, until)).await?;
                Ok(ReviewResult::Postponed { until })
            }
            Err(e) => {
                // The attempt left the window (pending, ambiguous: reconciliation owns it), or
                // came back to it after the last transient failure (withdrawn).
                let current = self.load_attempt(&attempt.id).await?;
                if current.status == AttemptStatus::AuthorityValidated {
                    let reason =
                        format!("the PSP failed transiently {MAX_REVIEW_TRIES} times: {e}");
                    return self.withdrawn(queue, &current, reason, now).await;
                }
                let _ = observe::store("review_complete", queue.complete(&attempt.id, now)).await;
                Err(e)
            }
        }
    }

    /// Releases `hold_id` when it is held for an attempt that was cancelled without being
    /// sent (a hold placed by a run that then lost the attempt to a cancel).
    async fn release_stray_hold(
        &self,
        current: &PaymentAttempt,
        hold_id: &AttemptId,
        now: DateTime<Utc>,
    ) -> Result<(), EngineError> {
        if current.status != AttemptStatus::Cancelled || current.provider_ref.is_some() {
            return Ok(());
        }
        let Some(h) = observe::store("hold", self.ports.store.hold(hold_id)).await? else {
            return Ok(());
        };
        if h.state != HoldState::Held {
            return Ok(());
        }
        let events = [AuditEvent {
            at: now,
            kind: AuditKind::Hold {
                attempt_id: current.id.clone(),
                action: HoldAction::Released,
                amount: h.amount,
                mandate_ids: h.mandate_ids.clone(),
                policy: None,
            },
        }];
        observe::store(
            "change_attempt",
            self.ports.store.change_attempt(&AttemptChange {
                next: current,
                expected: current.status,
                hold_id,
                holds: &[HoldOp::Release],
                fence: None,
                completion: None,
                events: &events,
            }),
        )
        .await?;
        Ok(())
    }

    /// Withdraws a payment whose authority lapsed in its window, and closes its entry.
    async fn withdrawn(
        &self,
        queue: &dyn ReviewQueue,
        attempt: &PaymentAttempt,
        reason: String,
        now: DateTime<Utc>,
    ) -> Result<ReviewResult, EngineError> {
        match self
            .withdraw(attempt, "withdrawn", None, Some(reason.clone()), now)
            .await
        {
            Ok(_) => {
                observe::store("review_cancel", queue.cancel(&attempt.id, now)).await?;
                Ok(ReviewResult::Withdrawn { reason })
            }
            Err(EngineError::Store(StoreError::Conflict { .. })) => {
                let current = self.load_attempt(&attempt.id).await?;
                self.close_after(queue, &current, now).await
            }
            Err(e) => Err(e),
        }
    }

    /// Closes the entry of an attempt that left the window, after the attempt's state.
    async fn close_after(
        &self,
        queue: &dyn ReviewQueue,
        attempt: &PaymentAttempt,
        now: DateTime<Utc>,
    ) -> Result<ReviewResult, EngineError> {
        let never_sent =
            attempt.status == AttemptStatus::Cancelled && attempt.provider_ref.is_none();
        if never_sent {
            observe::store("review_cancel", queue.cancel(&attempt.id, now)).await?;
        } else if attempt.status != AttemptStatus::AuthorityValidated {
            observe::store("review_complete", queue.complete(&attempt.id, now)).await?;
        }
        Ok(ReviewResult::Closed {
            status: attempt.status,
        })
    }
}

fn not_in_review(id: &AttemptId) -> EngineError {
    EngineError::Invalid {
        field: "attempt_id".into(),
        message: format!("attempt {id} is not in a review window"),
    }
}

fn review_event(
    attempt: &PaymentAttempt,
    step: &str,
    until: Option<DateTime<Utc>>,
    by: Option<Principal>,
    reason: Option<String>,
    now: DateTime<Utc>,
) -> AuditEvent {
    AuditEvent {
        at: now,
        kind: AuditKind::Review {
            attempt_id: attempt.id.clone(),
            buyer_id: attempt.request.buyer_id.clone(),
            step: step.to_owned(),
            until,
            by,
            reason,
        },
    }
}
