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
mod dispute;
mod error;
mod execute;
mod mandates;
mod order;
mod settle;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use sha2::{Digest as _, Sha256};

pub use commands::*;
pub use config::{ConfigError, EngineConfig, MIN_RETENTION};
pub use dispute::{DisputeCheck, DisputeEvidence, DisputeVerdict, RecordedDecision};
pub use error::EngineError;
pub use mandates::Recorded;

use crate::domain::{
    ActorId, AttemptEvent, AttemptId, AuditEvent, AuditKind, ContentDigest, HoldAction, HoldEffect,
    IdempotencyKey, PaymentAttempt,
};
use crate::ports::{
    AttemptChange, Begin, Completion, HoldOp, IdempotencyScope, Ports, StoredResult,
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
/// let engine = Engine::new(memory.ports.clone(), EngineConfig::default());
/// # let _ = engine;
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Engine {
    ports: Ports,
    config: EngineConfig,
}

impl Engine {
    /// An engine over `ports`.
    pub fn new(ports: Ports, config: EngineConfig) -> Engine {
        Engine { ports, config }
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

    /// Starts an idempotent command: `Ok(None)` to run it, `Ok(Some(result))` to replay.
    async fn begin(
        &self,
        scope: &IdempotencyScope,
        operation: &'static str,
        fingerprint: &ContentDigest,
        now: DateTime<Utc>,
    ) -> Result<Option<StoredResult>, EngineError> {
        match self
            .ports
            .store
            .begin_idempotent(scope, fingerprint, now, self.config.lease)
            .await?
        {
            Begin::Started => Ok(None),
            Begin::Replay(result) => Ok(Some(result)),
            Begin::Conflict { .. } => Err(EngineError::IdempotencyConflict {
                key: scope.key.clone(),
                operation,
            }),
            Begin::InFlight { retry_after } => Err(EngineError::IdempotencyInFlight {
                key: scope.key.clone(),
                retry_after,
            }),
        }
    }

    async fn complete(
        &self,
        scope: &IdempotencyScope,
        result: &StoredResult,
        now: DateTime<Utc>,
    ) -> Result<(), EngineError> {
        let retain =
            chrono::Duration::from_std(self.config.retention).unwrap_or(chrono::Duration::days(1));
        self.ports
            .store
            .complete_idempotent(scope, result, now + retain)
            .await?;
        Ok(())
    }

    /// Abandons the key after a command that changed nothing lasting; a failure to abandon
    /// only delays reuse of the key until the lease lapses.
    async fn abandon(&self, scope: &IdempotencyScope) {
        let _ = self.ports.store.abandon_idempotent(scope).await;
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
        if let Some(result) = self.begin(scope, operation, fingerprint, now).await? {
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
        let retain =
            chrono::Duration::from_std(self.config.retention).unwrap_or(chrono::Duration::days(1));
        let finish = finishes.map(|result| {
            Arc::new(Finish {
                completion: Completion {
                    scope: scope.clone(),
                    result,
                    retain_until: now + retain,
                },
                used: AtomicBool::new(false),
            })
        });
        match body(now, finish.clone()).await {
            Ok((value, Some(stored))) => {
                let done = finish
                    .as_ref()
                    .is_some_and(|f| f.is_used() && f.completion.result == stored);
                if !done {
                    self.complete(scope, &stored, now).await?;
                }
                Ok(value)
            }
            Ok((value, None)) => {
                self.abandon(scope).await;
                Ok(value)
            }
            Err(e) => {
                self.abandon(scope).await;
                Err(e)
            }
        }
    }

    async fn audit(&self, events: &[AuditEvent]) -> Result<(), EngineError> {
        if !events.is_empty() {
            self.ports.audit.append_all(events).await?;
        }
        Ok(())
    }

    /// Applies `event` to `attempt`, stores it (compare and set), applies its hold effects and
    /// collects the audit events. Returns the new attempt.
    async fn transition(
        &self,
        attempt: &PaymentAttempt,
        event: &AttemptEvent,
        now: DateTime<Utc>,
        events: &mut Vec<AuditEvent>,
    ) -> Result<PaymentAttempt, EngineError> {
        let next = attempt.apply(event, now)?;
        self.store_transition(attempt, next, event.as_str(), now, events)
            .await
    }

    /// Stores an already computed `next` and applies the hold effects.
    async fn store_transition(
        &self,
        attempt: &PaymentAttempt,
        next: PaymentAttempt,
        event: &str,
        now: DateTime<Utc>,
        events: &mut Vec<AuditEvent>,
    ) -> Result<PaymentAttempt, EngineError> {
        self.store_transition_finishing(attempt, next, event, now, events, None)
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
        self.store_transition_finishing(attempt, next, event.as_str(), now, events, finish)
            .await
    }

    /// Stores `next`, its hold effects and (if given) the command's completion as one
    /// [`AttemptChange`]: all or nothing on a durable store.
    async fn store_transition_finishing(
        &self,
        attempt: &PaymentAttempt,
        next: PaymentAttempt,
        event: &str,
        now: DateTime<Utc>,
        events: &mut Vec<AuditEvent>,
        finish: Option<&Finish>,
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
        let hold_id = attempt.hold_id();
        let completion = finish.and_then(Finish::take);
        let change = AttemptChange {
            next: &next,
            expected: attempt.status,
            hold_id: &hold_id,
            holds: &ops,
            completion,
        };
        if let Err(e) = self.ports.store.change_attempt(&change).await {
            if let Some(f) = finish {
                if completion.is_some() {
                    f.put_back();
                }
            }
            return Err(e.into());
        }
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
        Ok(next)
    }
}

/// A command's idempotency completion, handed to the transition that finishes the command
/// (used at most once: see [`Engine::keyed`]).
#[derive(Debug)]
pub(super) struct Finish {
    completion: Completion,
    used: AtomicBool,
}

impl Finish {
    /// The completion, the first time only.
    fn take(&self) -> Option<&Completion> {
        (!self.used.swap(true, Ordering::SeqCst)).then_some(&self.completion)
    }

    /// The change that took it failed: nothing was written.
    fn put_back(&self) {
        self.used.store(false, Ordering::SeqCst);
    }

    fn is_used(&self) -> bool {
        self.used.load(Ordering::SeqCst)
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
