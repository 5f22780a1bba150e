//! The store port: durable state, and the atomic budget ledger.
//!
//! # The budget contract (I2, I5)
//!
//! A hold is placed for one attempt on a list of levels: the leaf mandate and every ancestor,
//! each with its [`BudgetLimits`]. Placing is all or nothing: for every level,
//!
//! * lifetime: `spent + held + amount <= lifetime`;
//! * each window: `(held + spent inside the window) + amount <= max_amount` and
//!   `(payments inside the window) + 1 <= max_count`;
//! * `uses + 1 <= max_uses` and `attempts + 1 <= max_attempts`;
//!
//! otherwise nothing is held anywhere and [`HoldError::Refused`] names the first level and
//! limit that would be exceeded. A window covers the half-open interval `(now - length, now]`
//! and counts holds and spend by the time the hold was placed. A hold is then resolved at most
//! once: committed (in part: the rest is released), or released. Refunds are recorded against
//! a committed hold and give headroom back only as the [`RefundPolicy`] says. Released holds
//! count nowhere; committed ones count as spend; unresolved ones as held, however old (an
//! ambiguous attempt keeps its hold until evidence resolves it).
//!
//! # Idempotency records
//!
//! [`Store::begin_idempotent`] atomically looks up or creates the record for a scope (actor,
//! operation, key). Records in flight carry a lease: when it lapses (the process holding it
//! died), the next caller takes the record over. Completed records are kept until their
//! retention ends, then treated as absent.

use std::fmt::Debug;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::payment::{InputsQuery, OpenPayment, Opened, PaymentInputs};
use crate::domain::{
    ActorId, AttemptId, AttemptStatus, AuditEvent, BuyerId, CartSnapshot, Confirmation,
    ConfirmationId, ContentDigest, IdempotencyKey, LimitKind, Mandate, MandateId, MandateStatus,
    Money, Order, OrderId, Party, PaymentAttempt, SnapshotId, Suspensions, Usage, WindowLimit,
};

/// The cumulative limits of one mandate, as the ledger enforces them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BudgetLimits {
    /// Most held + spent over the mandate's life.
    pub lifetime: Option<Money>,
    /// Rolling windows.
    pub windows: Vec<WindowLimit>,
    /// Most payments.
    pub max_uses: Option<u32>,
    /// Most attempts (holds placed, whatever became of them).
    pub max_attempts: Option<u32>,
}

impl BudgetLimits {
    /// The limits of `mandate`'s scope.
    pub fn of(mandate: &Mandate) -> BudgetLimits {
        let scope = mandate.scope();
        BudgetLimits {
            lifetime: scope.budgets.lifetime,
            windows: scope.budgets.windows.clone(),
            max_uses: scope.max_uses,
            max_attempts: scope.amount.max_payment_attempts,
        }
    }
}

/// One level of a hold: a mandate and its limits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HoldLevel {
    /// The mandate.
    pub mandate_id: MandateId,
    /// Its limits.
    pub limits: BudgetLimits,
}

/// A hold to place.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HoldRequest {
    /// The attempt that owns it (one hold per attempt).
    pub attempt_id: AttemptId,
    /// How much.
    pub amount: Money,
    /// When (the time windows count it at).
    pub at: DateTime<Utc>,
    /// The leaf mandate first, then each ancestor up to the root.
    pub levels: Vec<HoldLevel>,
    /// The lease of the command placing it (see [`Fence`]); `None` outside a command.
    pub fence: Option<Fence>,
}

impl HoldRequest {
    /// A hold for `attempt_id` on every mandate of `chain` (root first, as
    /// [`Store::chain`] returns it).
    pub fn on_chain(
        attempt_id: AttemptId,
        amount: Money,
        at: DateTime<Utc>,
        chain: &[Mandate],
    ) -> HoldRequest {
        HoldRequest {
            attempt_id,
            amount,
            at,
            levels: chain
                .iter()
                .rev()
                .map(|m| HoldLevel {
                    mandate_id: m.id().clone(),
                    limits: BudgetLimits::of(m),
                })
                .collect(),
            fence: None,
        }
    }
}

/// Where a hold is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HoldState {
    /// Counting as held.
    Held,
    /// Committed as spend (possibly less than placed).
    Committed,
    /// Released: counts nowhere.
    Released,
}

/// A hold as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HoldRecord {
    /// The attempt.
    pub attempt_id: AttemptId,
    /// The mandates it counts against, leaf first.
    pub mandate_ids: Vec<MandateId>,
    /// Amount placed.
    pub amount: Money,
    /// Amount committed (zero unless committed).
    pub committed: Money,
    /// Amount refunded.
    pub refunded: Money,
    /// When it was placed.
    pub at: DateTime<Utc>,
    /// Its state.
    pub state: HoldState,
}

/// Whether a refund gives headroom back.
///
/// The default gives nothing back: a refund does not renew the authority the buyer granted,
/// so an agent cannot cycle buy-refund-buy past the caps. Choose [`RefundPolicy::RESTORE_ALL`]
/// when a refunded purchase should free its budget again.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RefundPolicy {
    /// A refund lowers the lifetime spend.
    pub restores_lifetime: bool,
    /// A refund lowers the window amounts (counts are never given back).
    pub restores_windows: bool,
}

impl RefundPolicy {
    /// Refunds give nothing back (the default).
    pub const RETAIN: RefundPolicy = RefundPolicy {
        restores_lifetime: false,
        restores_windows: false,
    };
    /// Refunds give back lifetime and window headroom.
    pub const RESTORE_ALL: RefundPolicy = RefundPolicy {
        restores_lifetime: true,
        restores_windows: true,
    };

    /// The stable name recorded in audit events.
    pub fn name(self) -> &'static str {
        match (self.restores_lifetime, self.restores_windows) {
            (false, false) => "retain",
            (true, true) => "restore_all",
            (true, false) => "restore_lifetime",
            (false, true) => "restore_windows",
        }
    }
}

/// The scope of an idempotency key: the actor, the operation, the key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct IdempotencyScope {
    /// Who.
    pub actor_id: ActorId,
    /// Which command (`execute_payment`).
    pub operation: String,
    /// The key.
    pub key: IdempotencyKey,
}

/// What a completed command produced, as kept by its idempotency record. A replay reads the
/// entity again, so it sees its current state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StoredResult {
    /// A payment attempt.
    Attempt(AttemptId),
    /// A mandate.
    Mandate(MandateId),
    /// A confirmation.
    Confirmation(ConfirmationId),
    /// An order.
    Order(OrderId),
    /// A command with no entity (suspend, resume).
    Done,
}

/// A caller's lease on an idempotency record (I13): the record's scope and the token the
/// store gave this caller when it started or took over the record.
///
/// Every later write of the command (completing or abandoning the record, changing the
/// attempt, placing or resolving its hold) carries the fence; the store refuses it with
/// [`StoreError::Fenced`] once the record was taken over by another caller (the lease
/// lapsed), completed, abandoned or purged. A stale holder can therefore change nothing.
/// Tokens are never reused by a store, so a record started again after an abandon does not
/// accept an old holder's fence.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Fence {
    /// The record.
    pub scope: IdempotencyScope,
    /// The token of this holder's lease.
    pub token: u64,
}

/// The answer of [`Store::begin_idempotent`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Begin {
    /// The caller owns the key now (a new record, or one taken over after its lease lapsed
    /// or its retention ended): run the command, carrying the fence.
    Started(Fence),
    /// Completed before with the same fingerprint: answer from the record.
    Replay(StoredResult),
    /// The key was used with another fingerprint: execute nothing.
    Conflict {
        /// The fingerprint on record.
        recorded: ContentDigest,
    },
    /// Another caller holds the key and its lease has not lapsed.
    InFlight {
        /// When to try again.
        retry_after: Duration,
    },
}

/// The answer of [`Store::insert_order`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InsertOrder {
    /// This call committed the order.
    Inserted,
    /// An order for the attempt already exists: this one.
    Existing(Order),
}

/// The use of a 402 challenge id by a credential (see [`Store::consume_challenge`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChallengeUse {
    /// The challenge id (1 to 256 bytes).
    pub challenge_id: String,
    /// A digest of the credential presented (never the credential itself).
    pub credential: ContentDigest,
    /// The record is kept at least until then (the challenge's expiry).
    pub expires_at: DateTime<Utc>,
}

/// The answer of [`Store::consume_challenge`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChallengeConsumed {
    /// First use of the id: recorded by this call.
    First,
    /// The id was used before by the same credential: a retry of one payment (it settles under
    /// the same idempotency key, so the engine answers with a replay).
    SameCredential,
    /// The id was used before by another credential: refused (single use).
    Used,
}

/// What a change of an attempt does to its budget hold (see [`Store::change_attempt`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HoldOp {
    /// [`Store::commit_hold`] of this amount.
    Commit(Money),
    /// [`Store::release_hold`].
    Release,
    /// No change: the hold must still be held (the submission of an attempt checks that its
    /// hold was not released behind it, by a sweep that found it orphaned).
    Verify,
    /// [`Store::refund_hold`] of this amount under this policy.
    Refund(Money, RefundPolicy),
}

/// An idempotency record completed by the change that finishes its command (see
/// [`Store::complete_idempotent`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    /// The record, and the lease of the caller completing it.
    pub fence: Fence,
    /// The command's result.
    pub result: StoredResult,
    /// Kept until then.
    pub retain_until: DateTime<Utc>,
}

/// One change of a payment attempt with everything that must commit with it: the hold
/// operations the transition implies and, when the change finishes a command, the completion
/// of the command's idempotency record.
#[derive(Debug, Clone, Copy)]
pub struct AttemptChange<'a> {
    /// The attempt after the change.
    pub next: &'a PaymentAttempt,
    /// The status it must still have (compare and set).
    pub expected: AttemptStatus,
    /// The hold the operations apply to (the attempt's current submission).
    pub hold_id: &'a AttemptId,
    /// Hold operations, in order.
    pub holds: &'a [HoldOp],
    /// The lease of the command making the change: the change is refused with
    /// [`StoreError::Fenced`] unless the record is still in flight under this token.
    /// `None` for changes no command owns (reconciliation sweeps), which rely on the
    /// compare and set alone.
    pub fence: Option<&'a Fence>,
    /// The idempotency record this change completes.
    pub completion: Option<&'a Completion>,
    /// The audit events of the change (its transition, hold operations, and any earlier
    /// event of the command not yet staged), staged in the store's audit outbox with it
    /// (I15).
    pub events: &'a [AuditEvent],
}

/// A write of the engine other than an attempt change, applied with its audit events by
/// [`Store::write_audited`].
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub enum Write<'a> {
    /// [`Store::insert_mandate`].
    InsertMandate(&'a Mandate),
    /// [`Store::update_mandate`] (compare and set on `expected`).
    UpdateMandate {
        /// The mandate after the change.
        mandate: &'a Mandate,
        /// The status it must still have.
        expected: MandateStatus,
    },
    /// [`Store::set_suspended`].
    Suspend {
        /// Who.
        party: &'a Party,
        /// On or off.
        suspended: bool,
    },
    /// [`Store::insert_confirmation`].
    InsertConfirmation(&'a Confirmation),
    /// [`Store::insert_attempt`].
    InsertAttempt(&'a PaymentAttempt),
    /// [`Store::insert_order`]. When the attempt already has an order, nothing is written
    /// and the events are not staged (they describe a commitment that did not happen).
    InsertOrder(&'a Order),
    /// No state change: only the events (a refused decision, a replay, a reconciliation).
    Events,
}

/// What [`Store::write_audited`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Written {
    /// The write is done.
    Done,
    /// The answer of [`Store::insert_order`].
    Order(InsertOrder),
}

/// An audit event waiting in the store's outbox (see [`Store::staged_audit`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StagedEvent {
    /// Its position in the outbox (increasing in staging order).
    pub id: u64,
    /// The event.
    pub event: AuditEvent,
}

/// A store failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A record that must exist does not. Not retryable.
    #[error("no {entity} {id}")]
    NotFound {
        /// `mandate`, `attempt`, `hold`...
        entity: &'static str,
        /// Its key.
        id: String,
    },
    /// A write lost a race or would duplicate a record (`expected` state differs, id taken).
    /// Re-read and decide again.
    #[error("{entity} {id}: {message}")]
    Conflict {
        /// The entity.
        entity: &'static str,
        /// Its key.
        id: String,
        /// What differs.
        message: String,
    },
    /// A stored record cannot be read back (bad data, schema from the future). Names the table
    /// and key. Not retryable.
    #[error("corrupt {table} record {key}: {message}")]
    Corrupt {
        /// The table.
        table: &'static str,
        /// The key.
        key: String,
        /// What is wrong.
        message: String,
    },
    /// The database's schema is older than this code needs and the migrations were turned
    /// off (the service runs them itself): nothing was read or written. Run the migrations
    /// (`migrate`, or the exported SQL), then open again. Not retryable as is.
    #[error(
        "the database schema is at version {found}, this code needs version {expected}: run the \
         migrations first (they are off for this connection)"
    )]
    SchemaBehind {
        /// The version the database has (0: no schema at all).
        found: i64,
        /// The version this code reads and writes.
        expected: i64,
    },
    /// The caller's lease on the idempotency record is gone (another caller took the record
    /// over after the lease lapsed, or it was completed, abandoned or purged): nothing was
    /// written (I13). Not retryable by this caller; a new call with the key starts over.
    #[error("idempotency record {key}: the lease of this caller was lost; nothing was written")]
    Fenced {
        /// The record (`actor/operation/key`).
        key: String,
    },
    /// The backend cannot be reached or timed out; nothing was written. Retryable.
    #[error("store unavailable: {message}")]
    Unavailable {
        /// Why.
        message: String,
    },
    /// Anything else an adapter reports.
    #[error("store error: {0}")]
    Other(Box<dyn std::error::Error + Send + Sync>),
}

impl StoreError {
    /// Whether the same call may be retried.
    pub fn is_retryable(&self) -> bool {
        matches!(self, StoreError::Unavailable { .. })
    }
}

/// A hold that could not be placed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HoldError {
    /// A limit would be exceeded; nothing is held.
    #[error("hold refused on mandate {mandate_id}: {limit:?} would reach {would_be}, the limit is {max}")]
    Refused {
        /// The first level whose limit would be exceeded.
        mandate_id: MandateId,
        /// Which limit; `None` for uses and attempts.
        limit: Option<LimitKind>,
        /// Which counter, when `limit` is `None`: `uses` or `attempts`.
        counter: Option<&'static str>,
        /// Usage after the hold, as text.
        would_be: String,
        /// The limit, as text.
        max: String,
    },
    /// The attempt already has a hold. Nothing changed.
    #[error("attempt {attempt_id} already has a hold")]
    Duplicate {
        /// The attempt.
        attempt_id: AttemptId,
    },
    /// The amount is in another currency than a limit. Nothing is held.
    #[error("hold in {currency} on mandate {mandate_id}, whose limits are in another currency")]
    Currency {
        /// The mandate.
        mandate_id: MandateId,
        /// The hold's currency.
        currency: String,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Durable state. See the module documentation for the budget and idempotency contracts;
/// `testkit::store_conformance` checks them.
#[async_trait]
pub trait Store: Send + Sync + Debug {
    // ----- mandates -----

    /// Inserts a new mandate; [`StoreError::Conflict`] if the id is taken.
    async fn insert_mandate(&self, mandate: &Mandate) -> Result<(), StoreError>;

    /// A mandate by id.
    async fn mandate(&self, id: &MandateId) -> Result<Option<Mandate>, StoreError>;

    /// Replaces a mandate's lifecycle if its status is still `expected` (compare and set);
    /// [`StoreError::Conflict`] otherwise. The scope never changes.
    async fn update_mandate(
        &self,
        mandate: &Mandate,
        expected: MandateStatus,
    ) -> Result<(), StoreError>;

    /// The chain from the root to `leaf` (empty when `leaf` is unknown).
    /// [`StoreError::Corrupt`] when a parent is missing or the parents loop.
    async fn chain(&self, leaf: &MandateId) -> Result<Vec<Mandate>, StoreError>;

    // ----- kill switch -----

    /// Turns the kill switch on or off for a party.
    async fn set_suspended(&self, party: &Party, suspended: bool) -> Result<(), StoreError>;

    /// The suspensions among `actors` and `buyer`.
    async fn suspensions(
        &self,
        actors: &[ActorId],
        buyer: &BuyerId,
    ) -> Result<Suspensions, StoreError>;

    // ----- confirmations and snapshots -----

    /// Records a confirmation; storing the same one twice is a no-op, another with the same id
    /// is a [`StoreError::Conflict`].
    async fn insert_confirmation(&self, confirmation: &Confirmation) -> Result<(), StoreError>;

    /// The confirmations of `buyer` for `snapshot`.
    async fn confirmations(
        &self,
        buyer: &BuyerId,
        snapshot: &SnapshotId,
    ) -> Result<Vec<Confirmation>, StoreError>;

    /// Keeps a snapshot (idempotent: its id is its content).
    async fn put_snapshot(&self, snapshot: &CartSnapshot) -> Result<(), StoreError>;

    /// A snapshot by id.
    async fn snapshot(&self, id: &SnapshotId) -> Result<Option<CartSnapshot>, StoreError>;

    // ----- budget ledger -----

    /// Usage of each mandate of `chain` at `now` (same order), with every window of its limits.
    async fn usage(&self, chain: &[Mandate], now: DateTime<Utc>) -> Result<Vec<Usage>, StoreError>;

    /// Places a hold atomically on every level, or none (see the module docs). Returns the
    /// usage of each level after the hold, in level order, with every window of its limits.
    async fn place_hold(&self, hold: &HoldRequest) -> Result<Vec<Usage>, HoldError>;

    /// Commits `amount` (at most the amount held) of a held hold as spend and releases the
    /// rest. [`StoreError::Conflict`] if the hold is not held.
    async fn commit_hold(&self, attempt_id: &AttemptId, amount: Money) -> Result<(), StoreError>;

    /// Releases a held hold. [`StoreError::Conflict`] if it is not held.
    async fn release_hold(&self, attempt_id: &AttemptId) -> Result<(), StoreError>;

    /// Records a refund of `amount` against a committed hold, under `policy`.
    /// [`StoreError::Conflict`] if it is not committed or the refunds would exceed the
    /// committed amount.
    async fn refund_hold(
        &self,
        attempt_id: &AttemptId,
        amount: Money,
        policy: RefundPolicy,
    ) -> Result<(), StoreError>;

    /// A hold by attempt.
    async fn hold(&self, attempt_id: &AttemptId) -> Result<Option<HoldRecord>, StoreError>;

    // ----- payment attempts -----

    /// Inserts a new attempt; [`StoreError::Conflict`] if the id is taken.
    async fn insert_attempt(&self, attempt: &PaymentAttempt) -> Result<(), StoreError>;

    /// An attempt by id.
    async fn attempt(&self, id: &AttemptId) -> Result<Option<PaymentAttempt>, StoreError>;

    /// Replaces an attempt if its status is still `expected` (compare and set);
    /// [`StoreError::Conflict`] otherwise.
    async fn update_attempt(
        &self,
        attempt: &PaymentAttempt,
        expected: AttemptStatus,
    ) -> Result<(), StoreError>;

    /// Applies `change` all or nothing: the attempt is replaced (compare and set, as
    /// [`Store::update_attempt`]), each hold operation applied (as [`Store::commit_hold`],
    /// [`Store::release_hold`], [`Store::refund_hold`]) and the idempotency record completed
    /// (as [`Store::complete_idempotent`]), or, on any error, none of them.
    ///
    /// The provided implementation makes the calls one after another: right for a store
    /// that cannot crash half-way (memory). A durable store overrides it with one
    /// transaction, so a crash never leaves an attempt captured with its hold still held, or a
    /// command's effect stored without its idempotency record completed.
    async fn change_attempt(&self, change: &AttemptChange<'_>) -> Result<(), StoreError> {
        for fence in change
            .fence
            .into_iter()
            .chain(change.completion.map(|c| &c.fence))
        {
            self.check_fence(fence).await?;
        }
        // Everything that can refuse the change is checked before anything is written, and
        // the attempt is put back if a hold operation still fails: the change is all or
        // nothing for a store whose calls do not interleave with other writers' (memory).
        // The attempt as it was, to put back, only when a hold operation writes.
        let mutates = change.holds.iter().any(|op| !matches!(op, HoldOp::Verify));
        let before = if mutates {
            let id = &change.next.id;
            let before = self
                .attempt(id)
                .await?
                .ok_or_else(|| StoreError::NotFound {
                    entity: "attempt",
                    id: id.to_string(),
                })?;
            if before.status != change.expected {
                return Err(StoreError::Conflict {
                    entity: "attempt",
                    id: id.to_string(),
                    message: format!("the status is {}, not {}", before.status, change.expected),
                });
            }
            Some(before)
        } else {
            None
        };
        if !change.holds.is_empty() {
            let state = self.hold(change.hold_id).await?.map(|h| h.state);
            let first_needs = match change.holds[0] {
                HoldOp::Commit(_) | HoldOp::Release | HoldOp::Verify => HoldState::Held,
                HoldOp::Refund(..) => HoldState::Committed,
            };
            if state != Some(first_needs) {
                return Err(StoreError::Conflict {
                    entity: "hold",
                    id: change.hold_id.to_string(),
                    message: format!(
                        "cannot apply {:?}: the hold is {}",
                        change.holds[0],
                        state.map_or("absent", |s| match s {
                            HoldState::Held => "held",
                            HoldState::Committed => "committed",
                            HoldState::Released => "released",
                        })
                    ),
                });
            }
        }
        self.update_attempt(change.next, change.expected).await?;
        for op in change.holds {
            let applied = match *op {
                HoldOp::Commit(amount) => self.commit_hold(change.hold_id, amount).await,
                HoldOp::Release => self.release_hold(change.hold_id).await,
                HoldOp::Verify => Ok(()),
                HoldOp::Refund(amount, policy) => {
                    self.refund_hold(change.hold_id, amount, policy).await
                }
            };
            if let Err(e) = applied {
                if let Some(before) = &before {
                    let _ = self.update_attempt(before, change.next.status).await;
                }
                return Err(e);
            }
        }
        if let Some(c) = change.completion {
            self.complete_idempotent(&c.fence, &c.result, c.retain_until)
                .await?;
        }
        self.stage_audit(change.events).await
    }

    /// Applies `write` and stages `events` in the audit outbox, all or nothing (I15).
    ///
    /// The provided implementation makes the write, then stages the events: right for a
    /// store that cannot crash half-way (memory). A durable store overrides it with one
    /// transaction.
    async fn write_audited(
        &self,
        write: Write<'_>,
        events: &[AuditEvent],
    ) -> Result<Written, StoreError> {
        let written = match write {
            Write::InsertMandate(m) => self.insert_mandate(m).await.map(|()| Written::Done),
            Write::UpdateMandate { mandate, expected } => self
                .update_mandate(mandate, expected)
                .await
                .map(|()| Written::Done),
            Write::Suspend { party, suspended } => self
                .set_suspended(party, suspended)
                .await
                .map(|()| Written::Done),
            Write::InsertConfirmation(c) => {
                self.insert_confirmation(c).await.map(|()| Written::Done)
            }
            Write::InsertAttempt(a) => self.insert_attempt(a).await.map(|()| Written::Done),
            Write::InsertOrder(o) => self.insert_order(o).await.map(Written::Order),
            Write::Events => Ok(Written::Done),
        }?;
        if !matches!(written, Written::Order(InsertOrder::Existing(_))) {
            self.stage_audit(events).await?;
        }
        Ok(written)
    }

    // ----- the payment's unit of work -----

    /// Everything a payment's decision reads (see [`InputsQuery`]), in as few round trips as
    /// the store can (SQLite: one read transaction; PostgreSQL: two pipelined round trips).
    /// The reads need not be one snapshot: the hold checks every limit again atomically. The
    /// provided implementation makes the single reads one after another
    /// ([`Store::attempt`], [`Store::chain`], [`Store::usage`], [`Store::confirmations`],
    /// [`Store::suspensions`]).
    async fn payment_inputs(&self, query: &InputsQuery<'_>) -> Result<PaymentInputs, StoreError> {
        super::payment::inputs_one_by_one(self, query).await
    }

    /// The first of a payment's two write transactions (see [`OpenPayment`]), all or
    /// nothing: [`Opened::AttemptExists`] or [`Opened::Key`] write nothing, and a refused
    /// hold ([`HoldError::Refused`]) or any error leaves no record, attempt, hold or event.
    /// The second is [`Store::change_attempt`], fenced by the returned lease.
    ///
    /// The provided implementation makes the single writes one after another and undoes
    /// them when a later one fails: right for a store that cannot crash half-way (memory).
    /// A durable store overrides it with one transaction.
    async fn open_payment(&self, open: &OpenPayment<'_>) -> Result<Opened, HoldError> {
        super::payment::open_one_by_one(self, open).await
    }

    // ----- the audit outbox (I15) -----

    /// The audit trail this store appends its events to directly, in the transaction of the
    /// change they describe, instead of staging them in its outbox (`None`: every event is
    /// staged, the engine delivers it to the sink). A store that answers `Some` appends every
    /// event it is given ([`Store::stage_audit`], [`Store::write_audited`],
    /// [`Store::change_attempt`], [`Store::open_payment`]) to that trail, chained and indexed as
    /// the sink's own append does, except alert events ([`crate::domain::AuditKind::Alert`]),
    /// which it still stages: they are handed to the alert sink when the outbox is delivered.
    /// The engine then skips the per-command delivery (unless an alert sink is set) and
    /// refuses, at [`crate::engine::Engine::new`], an audit sink whose
    /// [`AuditSink::trail_id`](crate::ports::AuditSink::trail_id) is another trail.
    /// Provided: `None`.
    fn direct_trail(&self) -> Option<crate::ports::TrailId> {
        None
    }

    /// Appends `events`, in order, to the store's audit outbox. The engine drains the outbox
    /// into the [`crate::ports::AuditSink`] ([`Store::staged_audit`], then
    /// [`Store::ack_audit`]); events stay until acknowledged, so a sink that is down loses
    /// nothing.
    async fn stage_audit(&self, events: &[AuditEvent]) -> Result<(), StoreError>;

    /// The oldest staged events, in staging order, at most `limit`.
    async fn staged_audit(&self, limit: usize) -> Result<Vec<StagedEvent>, StoreError>;

    /// Drops the staged events whose id is at most `through` (they are in the audit sink).
    async fn ack_audit(&self, through: u64) -> Result<(), StoreError>;

    /// Attempts in any of `statuses` (for reconciliation sweeps), oldest first, at most `limit`.
    async fn attempts_in(
        &self,
        statuses: &[AttemptStatus],
        limit: usize,
    ) -> Result<Vec<PaymentAttempt>, StoreError>;

    // ----- idempotency -----

    /// Looks up or creates the record for `scope` (see the module docs). A new or taken-over
    /// record is in flight until `now + lease`, under a token never given out before
    /// ([`Begin::Started`] carries it).
    async fn begin_idempotent(
        &self,
        scope: &IdempotencyScope,
        fingerprint: &ContentDigest,
        now: DateTime<Utc>,
        lease: Duration,
    ) -> Result<Begin, StoreError>;

    /// Completes the record with the command's result, kept until `retain_until`.
    /// [`StoreError::Fenced`] unless the record is in flight under `fence`'s token.
    async fn complete_idempotent(
        &self,
        fence: &Fence,
        result: &StoredResult,
        retain_until: DateTime<Utc>,
    ) -> Result<(), StoreError>;

    /// Drops an in-flight record (the command had no lasting effect: a transient failure or a
    /// refusal), so the key may be used again. [`StoreError::Fenced`] unless the record is
    /// in flight under `fence`'s token (a stale holder never frees a key it lost).
    async fn abandon_idempotent(&self, fence: &Fence) -> Result<(), StoreError>;

    /// `Ok(())` while the record is in flight under `fence`'s token, else
    /// [`StoreError::Fenced`]. Used by the provided [`Store::change_attempt`]; a durable store
    /// checks the fence inside the transaction of the write it guards instead.
    async fn check_fence(&self, fence: &Fence) -> Result<(), StoreError>;

    /// Deletes the idempotency records that have ended by `now`: completed records past their
    /// retention and in-flight records whose lease lapsed (their holders are fenced out
    /// already). Returns how many were deleted. A key whose record is gone starts afresh; an
    /// attempt it made is found again by its derived id, so nothing is executed twice.
    async fn purge_idempotent(&self, now: DateTime<Utc>) -> Result<u64, StoreError>;

    // ----- orders -----

    /// Commits an order unless the attempt already has one (I4).
    async fn insert_order(&self, order: &Order) -> Result<InsertOrder, StoreError>;

    /// The order of an attempt.
    async fn order_for(&self, attempt_id: &AttemptId) -> Result<Option<Order>, StoreError>;

    // ----- controls -----

    /// Counts one more blocked request of `actor` in a row; returns the count.
    async fn record_block(&self, actor: &ActorId) -> Result<u32, StoreError>;

    /// Resets the count of blocked requests in a row (after an allowed one).
    async fn reset_blocks(&self, actor: &ActorId) -> Result<(), StoreError>;

    /// Records the single use of a 402 challenge id, atomically: the first call for an id
    /// answers [`ChallengeConsumed::First`]; a later call with the same credential digest
    /// [`ChallengeConsumed::SameCredential`], with another [`ChallengeConsumed::Used`]. Two
    /// concurrent first calls: exactly one gets `First`.
    async fn consume_challenge(&self, use_: &ChallengeUse)
        -> Result<ChallengeConsumed, StoreError>;

    /// Deletes the records of challenges that expired at or before `now`; returns how many.
    async fn purge_challenges(&self, now: DateTime<Utc>) -> Result<u64, StoreError>;
}
