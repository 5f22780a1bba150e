//! The engine: runs one command through the chain (decision, hold, PSP, order, audit).
//!
//! It is the only code that calls ports. Each command is a typed input with a typed result;
//! every mutating command carries an idempotency key scoped to its actor and operation, and
//! every decision, transition, confirmation, revocation, suspension and control event is
//! written to the audit trail.
//!
//! The flow of [`Engine::execute_payment`]:
//!
//! ```text
//! key -> begin idempotency (replay | conflict | in flight | started)
//!     -> read chain, usage, confirmations, suspensions, credential status (ports)
//!     -> evaluate (domain, pure)            -- not allowed: Refused, nothing held or sent
//!     -> attempt: not_started -> authority_validated
//!     -> place hold on every mandate of the chain (store, atomic; refused: decide again)
//!     -> attempt -> pending_provider_response; audit
//!     -> PSP authorize with the attempt-derived key
//!     -> attempt -> authorized | captured | failed | requires_buyer_action | ambiguous
//!     -> hold: keep | commit | release; thresholds; audit; complete idempotency
//! ```

mod commands;
mod config;
mod controls;
mod decline;
mod dispute;
mod error;
mod execute;
mod loops;
mod mandates;
mod observe;
mod open;
mod order;
mod reads;
mod review;
mod settle;
mod trail;
mod wire;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use sha2::{Digest as _, Sha256};

pub use commands::*;
pub use config::{ConfigError, EngineConfig, DEFAULT_SUSPEND_ON, MIN_RETENTION};
pub use controls::{
    Breaker, BreakerTarget, Controls, MerchantControl, Rate, DEFAULT_AUTH_FAILURE_CODES,
    MAX_ALERT_BACKLOG, MAX_ALERT_ENQUEUE_TIMEOUT,
};
pub use decline::DeclineConfirmation;
pub use dispute::{DisputeCheck, DisputeEvidence, DisputeVerdict, RecordedDecision};
pub use error::{EngineError, ErrorType};
pub use mandates::Recorded;
pub use observe::KeyDigest;
pub use reads::{
    BuyerEvents, ChainUsage, MAX_AUDIT_SEGMENT, MAX_BUYER_EVENTS_SCAN, MAX_OPEN_ATTEMPTS,
};
pub use review::{ReviewResult, ReviewRun, ReviewWindow, MAX_REVIEW_TRIES, MAX_REVIEW_WINDOW};
pub use trail::{MissingEvent, TrailReport, TRAIL_CHECK_LIMIT};

use crate::domain::{
    ActorId, AttemptEvent, AttemptId, AttemptStatus, AuditEvent, AuditKind, ContentDigest,
    HoldAction, HoldEffect, IdempotencyKey, PaymentAttempt,
};
use crate::ports::{
    AttemptChange, Begin, Completion, Fence, HoldOp, IdempotencyScope, Ports, StoredResult, Write,
    Written,
};

/// The application service. Cheap to clone; share one per process.
///
/// ```
/// # #[cfg(feature = "testkit")] {
/// use std::sync::Arc;
/// use agent_mandate::adapters::memory::MemoryPorts;
/// use agent_mandate::engine::{Engine, EngineConfig};
/// use agent_mandate::testkit::FakePsp;
/// let memory = MemoryPorts::new(agent_mandate::domain::examples::now(), |vault, _| {
///     Arc::new(FakePsp::with_vault(vault))
/// });
/// let engine = Engine::new(memory.ports.clone(), EngineConfig::default()).unwrap();
/// # let _ = engine;
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Engine {
    ports: Ports,
    config: EngineConfig,
    flush: Arc<AuditFlush>,
    loops: Arc<loops::LoopCounter>,
    controls: Arc<controls::ControlState>,
    alerts: Option<Arc<dyn crate::ports::AlertSink>>,
    /// The store appends events to the sink's trail itself ([`Store::direct_trail`]).
    direct_trail: bool,
    reviews: Option<Arc<dyn crate::ports::ReviewQueue>>,
}

/// How many staged events one flush step moves.
const FLUSH_BATCH: usize = 256;

/// How many rounds one flush makes at most (a round drains what was staged when it began).
const FLUSH_ROUNDS: u32 = 2;

/// The state of the audit outbox's flusher: one flush at a time, and a flag that a flush
/// asked for while another runs is carried out by the running one.
#[derive(Debug, Default)]
struct AuditFlush {
    busy: AtomicBool,
    dirty: AtomicBool,
}

/// Clears the busy flag when the flush ends, also when its future is dropped half-way.
struct Busy<'a>(&'a AtomicBool);

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

impl Engine {
    /// An engine over `ports`. Refuses a configuration whose idempotency lease does not
    /// outlast the PSP's declared deadline by at least [`EngineConfig::deadline_margin`]
    /// (I13): a command must finish or give up its PSP call before another caller can take
    /// its key over.
    pub fn new(ports: Ports, config: EngineConfig) -> Result<Engine, ConfigError> {
        config.check_deadline(ports.provider.deadline())?;
        let direct_trail = match ports.store.direct_trail() {
            None => false,
            Some(t) if ports.audit.trail_id().as_ref() == Some(&t) => true,
            Some(_) => {
                return Err(ConfigError {
                    field: "ports.audit",
                    message: "is not the trail the store appends its events to",
                });
            }
        };
        Ok(Engine {
            ports,
            config,
            flush: Arc::new(AuditFlush::default()),
            loops: Arc::new(loops::LoopCounter::default()),
            controls: Arc::new(controls::ControlState::default()),
            alerts: None,
            direct_trail,
            reviews: None,
        })
    }

    /// The ports.
    pub fn ports(&self) -> &Ports {
        &self.ports
    }

    /// The configuration.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    fn now(&self) -> DateTime<Utc> {
        self.ports.clock.now()
    }

    /// Starts an idempotent command: `Ok(Err(fence))` to run it under the lease `fence`,
    /// `Ok(Ok(result))` to replay.
    async fn begin(
        &self,
        scope: &IdempotencyScope,
        operation: &'static str,
        fingerprint: &ContentDigest,
        now: DateTime<Utc>,
    ) -> Result<Result<StoredResult, Fence>, EngineError> {
        match observe::store(
            "begin_idempotent",
            self.ports
                .store
                .begin_idempotent(scope, fingerprint, now, self.config.lease),
        )
        .await?
        {
            Begin::Started(fence) => Ok(Err(fence)),
            Begin::Replay(result) => Ok(Ok(result)),
            Begin::Conflict { .. } => Err(EngineError::IdempotencyConflict {
                key: scope.key.clone(),
                operation,
            }),
            Begin::InFlight { retry_after } => Err(EngineError::IdempotencyInFlight {
                key: scope.key.clone(),
                retry_after: retry_after.min(self.config.in_flight_retry_after),
            }),
        }
    }

    async fn complete(
        &self,
        fence: &Fence,
        result: &StoredResult,
        now: DateTime<Utc>,
    ) -> Result<(), EngineError> {
        let retain =
            chrono::Duration::from_std(self.config.retention).unwrap_or(chrono::Duration::days(1));
        observe::store(
            "complete_idempotent",
            self.ports
                .store
                .complete_idempotent(fence, result, now + retain),
        )
        .await?;
        Ok(())
    }

    /// Abandons the key after a command that changed nothing lasting; a failure to abandon
    /// (the lease was lost: another caller owns the key now) only delays reuse of the key.
    async fn abandon(&self, fence: &Fence) {
        let _ = observe::store(
            "abandon_idempotent",
            self.ports.store.abandon_idempotent(fence),
        )
        .await;
    }

    /// Runs a command under its idempotency record: the one mechanism every keyed command
    /// uses. A replay audits itself and answers with `replay(result, now)` (the entity read
    /// again, as it is now). Otherwise `body(now)` runs; it returns its value and the result to
    /// record, or `None` when nothing lasting happened (a refusal, a transient failure), which
    /// frees the key like an error does.
    ///
    /// `finishes`: the result a successful run records, when it is known before the run (an
    /// attempt command). The body then gets a [`Finish`] to hand to the transition that
    /// finishes the command, which completes the record in the same store transaction; if no
    /// transition used it, the record is completed after the body, as for other commands.
    async fn keyed<T, R, RF, B, BF>(
        &self,
        scope: &IdempotencyScope,
        operation: &'static str,
        fingerprint: &ContentDigest,
        finishes: Option<StoredResult>,
        replay: R,
        body: B,
    ) -> Result<T, EngineError>
    where
        R: FnOnce(StoredResult, DateTime<Utc>) -> RF,
        RF: std::future::Future<Output = Result<T, EngineError>>,
        B: FnOnce(DateTime<Utc>, Option<Arc<Finish>>) -> BF,
        BF: std::future::Future<Output = Result<(T, Option<StoredResult>), EngineError>>,
    {
        let now = self.now();
        let fence = match self.begin(scope, operation, fingerprint, now).await? {
            Err(fence) => fence,
            Ok(result) => {
                observe::replay(operation);
                self.audit(&[AuditEvent {
                    at: now,
                    kind: AuditKind::Replay {
                        command: operation.to_owned(),
                        actor_id: scope.actor_id.clone(),
                        key: scope.key.clone(),
                    },
                }])
                .await?;
                return replay(result, now).await;
            }
        };
        let retain =
            chrono::Duration::from_std(self.config.retention).unwrap_or(chrono::Duration::days(1));
        let finish = Arc::new(Finish {
            completion: finishes.map(|result| Completion {
                fence: fence.clone(),
                result,
                retain_until: now + retain,
            }),
            fence,
            used: AtomicBool::new(false),
        });
        match body(now, Some(finish.clone())).await {
            Ok((value, Some(stored))) => {
                let done = finish.is_used()
                    && finish
                        .completion
                        .as_ref()
                        .is_some_and(|c| c.result == stored);
                if !done {
                    self.complete(&finish.fence, &stored, now).await?;
                }
                Ok(value)
            }
            Ok((value, None)) => {
                self.abandon(&finish.fence).await;
                Ok(value)
            }
            Err(e) => {
                self.abandon(&finish.fence).await;
                Err(e)
            }
        }
    }

    /// Stages `events` in the store's audit outbox (on their own: events that go with a
    /// state change are staged in the change's transaction instead), then delivers whatever
    /// is staged to the audit sink. A sink that is down fails nothing: the events wait in
    /// the outbox for the next flush ([`Engine::flush_audit`] reports the error).
    async fn audit(&self, events: &[AuditEvent]) -> Result<(), EngineError> {
        if !events.is_empty() {
            observe::store(
                "write_audited",
                self.ports.store.write_audited(Write::Events, events),
            )
            .await?;
        }
        // A store that appends to the trail itself leaves only alert events in the outbox:
        // delivered here when an alert sink waits for them, else by the next
        // `flush_audit` (the reconciliation sweep makes one).
        if !self.direct_trail || self.alerts.is_some() {
            let _ = self.flush_audit().await;
        }
        Ok(())
    }

    /// Stages `write` with the events not yet staged (`events`, drained on success) in one
    /// store transaction (I15).
    async fn write(
        &self,
        write: Write<'_>,
        events: &mut Vec<AuditEvent>,
    ) -> Result<Written, EngineError> {
        let written = observe::store(
            "write_audited",
            self.ports.store.write_audited(write, events),
        )
        .await?;
        events.clear();
        Ok(written)
    }

    /// Delivers the events staged in the store's outbox to the audit sink, oldest first, and
    /// acknowledges them; returns how many were delivered. Every command calls it; call it
    /// after a sink outage, or periodically, to deliver what waited. One flush runs at a time
    /// per engine; a flush asked for while another runs is carried out by that one.
    ///
    /// Delivery is at least once: a crash between the sink's append and the acknowledgement
    /// appends those events again on the next flush (the trail then shows them twice;
    /// [`Engine::verify_trail`] counts such repeats).
    pub async fn flush_audit(&self) -> Result<usize, EngineError> {
        observe::flush(self.flush_audit_body()).await
    }

    async fn flush_audit_body(&self) -> Result<usize, EngineError> {
        let flush = &self.flush;
        flush.dirty.store(true, Ordering::SeqCst);
        let mut delivered = 0usize;
        loop {
            if flush
                .busy
                .compare_exchange(false, true, Ordering::SeqCst, Ordering::SeqCst)
                .is_err()
            {
                // The running flush sees `dirty` and goes round again.
                return Ok(delivered);
            }
            let busy = Busy(&flush.busy);
            if self.controls_waiting() {
                self.hand_over_alerts(&[]).await;
            }
            // A bounded number of rounds: a command is never kept flushing for others; what
            // is staged meanwhile goes with the next flush.
            let mut rounds = 0;
            while rounds < FLUSH_ROUNDS && flush.dirty.swap(false, Ordering::SeqCst) {
                rounds += 1;
                loop {
                    let batch =
                        observe::store("staged_audit", self.ports.store.staged_audit(FLUSH_BATCH))
                            .await?;
                    let Some(last) = batch.last().map(|e| e.id) else {
                        observe::outbox_drained();
                        break;
                    };
                    let events: Vec<AuditEvent> = batch.into_iter().map(|e| e.event).collect();
                    if let Err(e) =
                        observe::audit("append_all", self.ports.audit.append_all(&events)).await
                    {
                        observe::outbox_stuck(events.len());
                        return Err(e.into());
                    }
                    // Alerts are handed over after the trail has them, before the outbox
                    // forgets them: a crash in between hands them over again (at least once).
                    self.hand_over_alerts(&events).await;
                    observe::store("ack_audit", self.ports.store.ack_audit(last)).await?;
                    delivered += events.len();
                    observe::delivered(events.len());
                    if events.len() < FLUSH_BATCH {
                        // Drained what was there; newer events mark the flush dirty.
                        observe::outbox_drained();
                        break;
                    }
                }
            }
            drop(busy);
            if rounds >= FLUSH_ROUNDS || !flush.dirty.load(Ordering::SeqCst) {
                return Ok(delivered);
            }
        }
    }

    /// Applies `event` to `attempt`, stores it (compare and set, fenced by the command's
    /// `lease` when given), applies its hold effects and stages the audit events (`events`,
    /// drained) in the same store change. Returns the new attempt.
    async fn transition(
        &self,
        attempt: &PaymentAttempt,
        event: &AttemptEvent,
        now: DateTime<Utc>,
        events: &mut Vec<AuditEvent>,
        lease: Option<&Finish>,
    ) -> Result<PaymentAttempt, EngineError> {
        let next = attempt.apply(event, now)?;
        self.change(attempt, next, event.as_str(), now, events, lease, false)
            .await
    }

    /// Stores an already computed `next` (see [`Engine::transition`]).
    async fn store_transition(
        &self,
        attempt: &PaymentAttempt,
        next: PaymentAttempt,
        event: &str,
        now: DateTime<Utc>,
        events: &mut Vec<AuditEvent>,
        lease: Option<&Finish>,
    ) -> Result<PaymentAttempt, EngineError> {
        self.change(attempt, next, event, now, events, lease, false)
            .await
    }

    /// [`Engine::transition`] for the change that finishes a command: its idempotency record
    /// is completed in the same store transaction (when `finish` is still unused).
    async fn transition_finishing(
        &self,
        attempt: &PaymentAttempt,
        event: &AttemptEvent,
        now: DateTime<Utc>,
        events: &mut Vec<AuditEvent>,
        finish: Option<&Finish>,
    ) -> Result<PaymentAttempt, EngineError> {
        let next = attempt.apply(event, now)?;
        self.change(attempt, next, event.as_str(), now, events, finish, true)
            .await
    }

    /// [`Engine::store_transition`] for the change that finishes a command.
    async fn store_transition_finishing(
        &self,
        attempt: &PaymentAttempt,
        next: PaymentAttempt,
        event: &str,
        now: DateTime<Utc>,
        events: &mut Vec<AuditEvent>,
        finish: Option<&Finish>,
    ) -> Result<PaymentAttempt, EngineError> {
        self.change(attempt, next, event, now, events, finish, true)
            .await
    }

    /// Stores `next`, its hold effects, its audit events and (when `finishing`) the
    /// command's completion as one [`AttemptChange`], fenced by the command's lease: all or
    /// nothing on a durable store. On success `events` is empty (staged); on failure it
    /// keeps what it had (the new events described a change that did not happen).
    #[allow(
        clippy::too_many_arguments,
        reason = "one change carries the transition, its events and the command's lease"
    )]
    async fn change(
        &self,
        attempt: &PaymentAttempt,
        next: PaymentAttempt,
        event: &str,
        now: DateTime<Utc>,
        events: &mut Vec<AuditEvent>,
        lease: Option<&Finish>,
        finishing: bool,
    ) -> Result<PaymentAttempt, EngineError> {
        let policy = self.config.refund_policy;
        let effects = attempt.hold_effects(&next);
        let ops: Vec<HoldOp> = effects
            .iter()
            .map(|e| match *e {
                HoldEffect::Commit(amount) => HoldOp::Commit(amount),
                HoldEffect::Release => HoldOp::Release,
                HoldEffect::Refund(amount) => HoldOp::Refund(amount, policy),
            })
            .collect();
        let before = events.len();
        events.push(transition_event(attempt, &next, event, now));
        for effect in effects {
            let (action, amount, policy) = match effect {
                HoldEffect::Commit(amount) => (HoldAction::Committed, amount, None),
                HoldEffect::Release => (HoldAction::Released, attempt.request.amount, None),
                HoldEffect::Refund(amount) => {
                    (HoldAction::Refunded, amount, Some(policy.name().to_owned()))
                }
            };
            events.push(AuditEvent {
                at: now,
                kind: AuditKind::Hold {
                    attempt_id: attempt.id.clone(),
                    action,
                    amount,
                    mandate_ids: Vec::new(),
                    policy,
                },
            });
        }
        // The submission checks, in its transaction, that the hold it goes with is still held
        // (a sweep may have released it as an orphan after the command's lease lapsed).
        let submitting = attempt.status == AttemptStatus::AuthorityValidated
            && next.status == AttemptStatus::PendingProviderResponse;
        let (hold_id, ops) = if submitting {
            (next.hold_id(), vec![HoldOp::Verify])
        } else {
            (attempt.hold_id(), ops)
        };
        let completion = if finishing {
            lease.and_then(Finish::take)
        } else {
            None
        };
        let change = AttemptChange {
            next: &next,
            expected: attempt.status,
            hold_id: &hold_id,
            holds: &ops,
            fence: lease.map(|l| &l.fence),
            completion,
            events,
        };
        if let Err(e) =
            observe::store("change_attempt", self.ports.store.change_attempt(&change)).await
        {
            if let Some(f) = lease
                && completion.is_some()
            {
                f.put_back();
            }
            events.truncate(before);
            return Err(e.into());
        }
        events.clear();
        observe::transition(&next.id, attempt.status, next.status);
        Ok(next)
    }
}

/// A command's lease on its idempotency record, and the completion handed to the transition
/// that finishes the command (used at most once: see [`Engine::keyed`]).
#[derive(Debug)]
pub(super) struct Finish {
    fence: Fence,
    completion: Option<Completion>,
    used: AtomicBool,
}

impl Finish {
    /// The completion, the first time only.
    fn take(&self) -> Option<&Completion> {
        let completion = self.completion.as_ref()?;
        (!self.used.swap(true, Ordering::SeqCst)).then_some(completion)
    }

    /// The change that took it failed: nothing was written.
    fn put_back(&self) {
        self.used.store(false, Ordering::SeqCst);
    }

    fn is_used(&self) -> bool {
        self.used.load(Ordering::SeqCst)
    }

    /// The command's lease.
    pub(super) fn fence(&self) -> &Fence {
        &self.fence
    }
}

pub(super) fn transition_event(
    before: &PaymentAttempt,
    after: &PaymentAttempt,
    event: &str,
    now: DateTime<Utc>,
) -> AuditEvent {
    AuditEvent {
        at: now,
        kind: AuditKind::AttemptTransition {
            attempt_id: after.id.clone(),
            from: before.status,
            to: after.status,
            event: event.to_owned(),
            provider_ref: after.provider_ref.clone(),
            authorized: nonzero(after.authorized),
            captured: nonzero(after.captured),
            refunded: nonzero(after.refunded),
            decline_code: after.decline_code.clone(),
        },
    }
}

fn nonzero(m: crate::domain::Money) -> Option<crate::domain::Money> {
    (!m.is_zero()).then_some(m)
}

/// The attempt id of an execute-payment command: `att_` and 32 hex digits of
/// SHA-256(actor, key). Deterministic, so a retry after a crash finds its attempt.
pub fn attempt_id_for(actor: &ActorId, key: &IdempotencyKey) -> AttemptId {
    let mut h = Sha256::new();
    h.update(b"agent-mandate/attempt/v1\n");
    h.update(actor.as_str().as_bytes());
    h.update(b"\n");
    h.update(key.as_str().as_bytes());
    let digest = h.finalize();
    AttemptId::derived(format!("att_{}", hex::encode(&digest[..16])))
}

fn scope(actor: &ActorId, operation: &str, key: &IdempotencyKey) -> IdempotencyScope {
    IdempotencyScope {
        actor_id: actor.clone(),
        operation: operation.to_owned(),
        key: key.clone(),
    }
}
