//! [`PostgresStore`]: the [`Store`] port on PostgreSQL.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use deadpool_postgres::{Object, Pool};

use super::config::PostgresConfig;
use super::schema::prepare;
use super::tx::client;
use crate::domain::{
    ActorId, AttemptId, AttemptStatus, AuditEvent, BuyerId, CartSnapshot, Confirmation,
    ContentDigest, Mandate, MandateId, MandateStatus, Money, Order, Party, PaymentAttempt,
    SnapshotId, Suspensions, Usage,
};
use crate::ports::{
    AttemptChange, Begin, ChallengeConsumed, ChallengeUse, Fence, HoldError, HoldOp, HoldRecord,
    HoldRequest, IdempotencyScope, InputsQuery, InsertOrder, OpenPayment, Opened, PaymentInputs,
    RefundPolicy, StagedEvent, Store, StoreError, StoredResult, Write, Written,
};

/// The [`Store`] port on PostgreSQL: shared by any number of connections and processes.
///
/// See the [module documentation](super) for the guarantees, the schema conventions and how
/// windows are evaluated. Every method is one transaction (or one statement) on a connection
/// of the pool; no lock of this process is held across an `await`.
///
/// **Idempotency.** `begin_idempotent` inserts the record or locks the existing one
/// (`SELECT .. FOR UPDATE`) and decides (new, replay, conflict, in flight, lease lapsed or
/// retention ended: taken over) in one transaction, so two callers racing for one key get
/// exactly one `Started`; a start or takeover stores a new token from the sequence
/// `lease_tokens`, which the returned fence carries. `complete_idempotent` and
/// `abandon_idempotent` are one statement each, matching the record only while it is in
/// flight under the fence's token (else `Fenced`). `change_attempt` and `place_hold` check
/// their fences first in their own transaction and keep the records locked (`FOR SHARE`, or
/// `FOR UPDATE` for the record the change completes) until they commit, so a takeover,
/// completion, abandon or purge either waits for them or, having committed first, fences them
/// out. A change that finishes a command completes its record in the same transaction as the
/// attempt, its hold operations and its audit events.
///
/// **Audit outbox.** `write_audited` runs any write of the engine and stages its events in one
/// transaction (the port's single writes share the same code, run alone); see the
/// [module documentation](super) for how ids follow commit order.
///
/// `confirmations` come back in id order, `attempts_in` by creation time then id.
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use agent_mandate::adapters::postgres::PostgresStore;
/// use agent_mandate::domain::examples;
/// use agent_mandate::ports::Store;
///
/// let store = PostgresStore::connect("postgres://app@127.0.0.1:5432/payments").await?;
/// let mandate = examples::travel_backpack_mandate();
/// store.insert_mandate(&mandate).await?;
/// let chain = store.chain(mandate.id()).await?;
/// let usage = store.usage(&chain, examples::now()).await?;
/// assert!(usage[0].held.is_zero());
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct PostgresStore {
    pub(super) pool: Pool,
    pub(super) retries: u32,
    /// The trail events are appended to directly ([`PostgresStore::with_trail`]).
    pub(super) trail: Option<crate::ports::TrailId>,
}

impl fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let status = self.pool.status();
        f.debug_struct("PostgresStore")
            .field("max_connections", &status.max_size)
            .field("open_connections", &status.size)
            .field("retries", &self.retries)
            .finish_non_exhaustive()
    }
}

impl PostgresStore {
    /// Connects to `url` with the default [`PostgresConfig`] and applies the migrations.
    pub async fn connect(url: &str) -> Result<PostgresStore, StoreError> {
        PostgresStore::connect_with(&PostgresConfig::new(url)).await
    }

    /// Connects with `config` (creating its schema if it names one) and applies the
    /// migrations (with [`PostgresConfig::with_migrations`] off: checks the schema version
    /// instead and creates nothing).
    pub async fn connect_with(config: &PostgresConfig) -> Result<PostgresStore, StoreError> {
        let pool = config.pool()?;
        prepare(
            &pool,
            config.schema(),
            config.max_retries(),
            config.runs_migrations(),
        )
        .await?;
        Ok(PostgresStore {
            pool,
            retries: config.max_retries(),
            trail: None,
        })
    }

    /// Uses an existing pool (its connections' `search_path` decides the schema) and applies
    /// the migrations. Transactions that lose a deadlock are retried 8 times.
    pub async fn from_pool(pool: Pool) -> Result<PostgresStore, StoreError> {
        let retries = 8;
        prepare(&pool, None, retries, true).await?;
        Ok(PostgresStore {
            pool,
            retries,
            trail: None,
        })
    }

    /// Uses an existing pool like [`PostgresStore::from_pool`] but runs no migration: checks
    /// that the schema is current ([`StoreError::SchemaBehind`] when behind), for a service
    /// that runs the migrations itself ([`super::migrate`]).
    pub async fn from_pool_checked(pool: Pool) -> Result<PostgresStore, StoreError> {
        let retries = 8;
        prepare(&pool, None, retries, false).await?;
        Ok(PostgresStore {
            pool,
            retries,
            trail: None,
        })
    }

    /// This store appending its audit events straight to the trail of its own database and
    /// schema (the one a [`super::PostgresAuditSink`] on the same database reads), in the
    /// transaction of the change they describe, instead of staging them in the outbox for
    /// the engine to deliver: a payment is then two write transactions in all (alert events
    /// still go through the outbox, see [`Store::direct_trail`]). Each of those transactions
    /// then holds the trail's head row until it commits, as the sink's own append does, so
    /// writes that carry events are serialised (the outbox's table lock serialised them
    /// already). Give the engine a sink on the same database and schema: it refuses another.
    pub async fn with_trail(mut self) -> Result<PostgresStore, StoreError> {
        self.trail = Some(super::audit::trail_of(&self.pool).await?);
        Ok(self)
    }

    /// The pool, to share it with a [`super::PostgresAuditSink`].
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    pub(super) async fn client(&self) -> Result<Object, StoreError> {
        client(&self.pool).await
    }
}

#[async_trait]
impl Store for PostgresStore {
    fn direct_trail(&self) -> Option<crate::ports::TrailId> {
        self.trail.clone()
    }

    async fn insert_mandate(&self, mandate: &Mandate) -> Result<(), StoreError> {
        self.insert_mandate_row(mandate).await
    }

    async fn mandate(&self, id: &MandateId) -> Result<Option<Mandate>, StoreError> {
        self.mandate_row(id).await
    }

    async fn update_mandate(
        &self,
        mandate: &Mandate,
        expected: MandateStatus,
    ) -> Result<(), StoreError> {
        self.update_mandate_row(mandate, expected).await
    }

    async fn chain(&self, leaf: &MandateId) -> Result<Vec<Mandate>, StoreError> {
        self.chain_rows(leaf).await
    }

    async fn set_suspended(&self, party: &Party, suspended: bool) -> Result<(), StoreError> {
        self.set_suspended_row(party, suspended).await
    }

    async fn suspensions(
        &self,
        actors: &[ActorId],
        buyer: &BuyerId,
    ) -> Result<Suspensions, StoreError> {
        self.suspension_rows(actors, buyer).await
    }

    async fn insert_confirmation(&self, confirmation: &Confirmation) -> Result<(), StoreError> {
        self.insert_confirmation_row(confirmation).await
    }

    async fn confirmations(
        &self,
        buyer: &BuyerId,
        snapshot: &SnapshotId,
    ) -> Result<Vec<Confirmation>, StoreError> {
        self.confirmation_rows(buyer, snapshot).await
    }

    async fn put_snapshot(&self, snapshot: &CartSnapshot) -> Result<(), StoreError> {
        self.put_snapshot_row(snapshot).await
    }

    async fn snapshot(&self, id: &SnapshotId) -> Result<Option<CartSnapshot>, StoreError> {
        self.snapshot_row(id).await
    }

    async fn usage(&self, chain: &[Mandate], now: DateTime<Utc>) -> Result<Vec<Usage>, StoreError> {
        self.ledger_usage(chain, now).await
    }

    async fn place_hold(&self, hold: &HoldRequest) -> Result<Vec<Usage>, HoldError> {
        self.ledger_place(hold).await
    }

    async fn commit_hold(&self, attempt_id: &AttemptId, amount: Money) -> Result<(), StoreError> {
        self.ledger_resolve(attempt_id, HoldOp::Commit(amount))
            .await
    }

    async fn release_hold(&self, attempt_id: &AttemptId) -> Result<(), StoreError> {
        self.ledger_resolve(attempt_id, HoldOp::Release).await
    }

    async fn refund_hold(
        &self,
        attempt_id: &AttemptId,
        amount: Money,
        policy: RefundPolicy,
    ) -> Result<(), StoreError> {
        self.ledger_resolve(attempt_id, HoldOp::Refund(amount, policy))
            .await
    }

    async fn hold(&self, attempt_id: &AttemptId) -> Result<Option<HoldRecord>, StoreError> {
        self.ledger_hold(attempt_id).await
    }

    async fn insert_attempt(&self, attempt: &PaymentAttempt) -> Result<(), StoreError> {
        self.insert_attempt_row(attempt).await
    }

    async fn attempt(&self, id: &AttemptId) -> Result<Option<PaymentAttempt>, StoreError> {
        self.attempt_row(id).await
    }

    async fn update_attempt(
        &self,
        attempt: &PaymentAttempt,
        expected: AttemptStatus,
    ) -> Result<(), StoreError> {
        self.update_attempt_row(attempt, expected).await
    }

    async fn change_attempt(&self, change: &AttemptChange<'_>) -> Result<(), StoreError> {
        self.change_attempt_piped(change).await
    }

    async fn write_audited(
        &self,
        write: Write<'_>,
        events: &[AuditEvent],
    ) -> Result<Written, StoreError> {
        self.write_audited_tx(write, events).await
    }

    async fn payment_inputs(&self, query: &InputsQuery<'_>) -> Result<PaymentInputs, StoreError> {
        self.payment_inputs_pipelined(query).await
    }

    async fn open_payment(&self, open: &OpenPayment<'_>) -> Result<Opened, HoldError> {
        self.open_payment_piped(open).await
    }

    async fn stage_audit(&self, events: &[AuditEvent]) -> Result<(), StoreError> {
        self.stage_audit_rows(events).await
    }

    async fn staged_audit(&self, limit: usize) -> Result<Vec<StagedEvent>, StoreError> {
        self.staged_audit_rows(limit).await
    }

    async fn ack_audit(&self, through: u64) -> Result<(), StoreError> {
        self.ack_audit_rows(through).await
    }

    async fn attempts_in(
        &self,
        statuses: &[AttemptStatus],
        limit: usize,
    ) -> Result<Vec<PaymentAttempt>, StoreError> {
        self.attempt_rows_in(statuses, limit).await
    }

    async fn begin_idempotent(
        &self,
        scope: &IdempotencyScope,
        fingerprint: &ContentDigest,
        now: DateTime<Utc>,
        lease: Duration,
    ) -> Result<Begin, StoreError> {
        self.begin_idempotent_row(scope, fingerprint, now, lease)
            .await
    }

    async fn complete_idempotent(
        &self,
        fence: &Fence,
        result: &StoredResult,
        retain_until: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.complete_idempotent_row(fence, result, retain_until)
            .await
    }

    async fn abandon_idempotent(&self, fence: &Fence) -> Result<(), StoreError> {
        self.abandon_idempotent_row(fence).await
    }

    async fn check_fence(&self, fence: &Fence) -> Result<(), StoreError> {
        self.check_fence_row(fence).await
    }

    async fn purge_idempotent(&self, now: DateTime<Utc>) -> Result<u64, StoreError> {
        self.purge_idempotent_rows(now).await
    }

    async fn insert_order(&self, order: &Order) -> Result<InsertOrder, StoreError> {
        self.insert_order_row(order).await
    }

    async fn order_for(&self, attempt_id: &AttemptId) -> Result<Option<Order>, StoreError> {
        self.order_row(attempt_id).await
    }

    async fn record_block(&self, actor: &ActorId) -> Result<u32, StoreError> {
        self.record_block_row(actor).await
    }

    async fn reset_blocks(&self, actor: &ActorId) -> Result<(), StoreError> {
        self.reset_blocks_row(actor).await
    }
    async fn consume_challenge(
        &self,
        use_: &ChallengeUse,
    ) -> Result<ChallengeConsumed, StoreError> {
        self.consume_challenge_row(use_).await
    }

    async fn purge_challenges(&self, now: DateTime<Utc>) -> Result<u64, StoreError> {
        self.purge_challenge_rows(now).await
    }
}
