//! Counting wrappers: how many store and audit calls (hence transactions: every port call of
//! the SQLite and PostgreSQL adapters is one transaction, or one part of a group commit) a
//! command makes.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::domain::{
    ActorId, AttemptId, AttemptStatus, AuditEvent, BuyerId, CartSnapshot, ChainedEvent,
    Confirmation, ContentDigest, Mandate, MandateId, MandateStatus, Money, Order, Party,
    PaymentAttempt, SnapshotId, Suspensions, Usage,
};
use crate::ports::{
    AttemptChange, AuditError, AuditReceipt, AuditSink, Begin, Fence, HoldError, HoldRecord,
    HoldRequest, IdempotencyScope, InputsQuery, InsertOrder, OpenPayment, Opened, PaymentInputs,
    RefundPolicy, StagedEvent, Store, StoreError, StoredResult, Write, Written,
};

/// Calls counted so far, by kind and by port method.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallCounts {
    /// Calls that write (each is a write transaction on the durable stores).
    pub writes: u64,
    /// Calls that only read.
    pub reads: u64,
    /// Every call by its port method name (`store.place_hold`, `audit.append_all`...).
    pub by_method: BTreeMap<&'static str, u64>,
    /// Every call in order, with the probe's reading when it started (0 without a probe,
    /// see [`CallCounter::with_probe`]).
    pub calls: Vec<(&'static str, u64)>,
}

/// A reading taken at the start of every counted call (for example the round trips a proxy
/// has seen so far).
pub type Probe = Arc<dyn Fn() -> u64 + Send + Sync>;

/// The counters a [`CountingStore`] and a [`CountingAuditSink`] share.
#[derive(Clone, Default)]
pub struct CallCounter(Arc<Mutex<CallCounts>>, Option<Probe>);

impl std::fmt::Debug for CallCounter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("CallCounter")
            .field(&self.counts())
            .finish_non_exhaustive()
    }
}

impl CallCounter {
    /// A counter at zero.
    pub fn new() -> CallCounter {
        CallCounter::default()
    }

    /// A counter at zero that reads `probe` at the start of every call and keeps the reading
    /// in [`CallCounts::calls`]: with calls made one at a time, what a call cost by the
    /// probe's measure is the difference to the next call's reading.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use agent_mandate::testkit::CallCounter;
    ///
    /// let counter = CallCounter::with_probe(Arc::new(|| 7));
    /// assert!(counter.counts().calls.is_empty());
    /// ```
    pub fn with_probe(probe: Probe) -> CallCounter {
        CallCounter(Arc::default(), Some(probe))
    }

    /// The counts so far.
    pub fn counts(&self) -> CallCounts {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Back to zero.
    pub fn reset(&self) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = CallCounts::default();
    }

    fn reading(&self) -> u64 {
        self.1.as_ref().map_or(0, |p| p())
    }

    fn write(&self, method: &'static str) {
        let reading = self.reading();
        let mut c = self.0.lock().unwrap_or_else(|e| e.into_inner());
        c.writes += 1;
        *c.by_method.entry(method).or_default() += 1;
        c.calls.push((method, reading));
    }

    fn read(&self, method: &'static str) {
        let reading = self.reading();
        let mut c = self.0.lock().unwrap_or_else(|e| e.into_inner());
        c.reads += 1;
        *c.by_method.entry(method).or_default() += 1;
        c.calls.push((method, reading));
    }
}

/// A [`Store`] that counts the calls it passes on to another store (every method, the
/// provided ones included, goes to the inner store's own implementation).
#[derive(Debug, Clone)]
pub struct CountingStore {
    inner: Arc<dyn Store>,
    counter: CallCounter,
}

impl CountingStore {
    /// Counts the calls to `inner` in `counter`.
    pub fn new(inner: Arc<dyn Store>, counter: CallCounter) -> CountingStore {
        CountingStore { inner, counter }
    }
}

/// An [`AuditSink`] that counts the calls it passes on to another sink.
#[derive(Debug, Clone)]
pub struct CountingAuditSink {
    inner: Arc<dyn AuditSink>,
    counter: CallCounter,
}

impl CountingAuditSink {
    /// Counts the calls to `inner` in `counter`.
    pub fn new(inner: Arc<dyn AuditSink>, counter: CallCounter) -> CountingAuditSink {
        CountingAuditSink { inner, counter }
    }
}

#[async_trait]
impl AuditSink for CountingAuditSink {
    fn trail_id(&self) -> Option<crate::ports::TrailId> {
        self.inner.trail_id()
    }
    async fn append(&self, event: &AuditEvent) -> Result<AuditReceipt, AuditError> {
        self.counter.write("audit.append");
        self.inner.append(event).await
    }
    async fn append_all(&self, events: &[AuditEvent]) -> Result<Option<AuditReceipt>, AuditError> {
        self.counter.write("audit.append_all");
        self.inner.append_all(events).await
    }
    async fn read(&self, from_seq: u64, limit: usize) -> Result<Vec<ChainedEvent>, AuditError> {
        self.counter.read("audit.read");
        self.inner.read(from_seq, limit).await
    }
    async fn head(&self) -> Result<Option<AuditReceipt>, AuditError> {
        self.counter.read("audit.head");
        self.inner.head().await
    }
    async fn verify(&self) -> Result<Option<AuditReceipt>, AuditError> {
        self.counter.read("audit.verify");
        self.inner.verify().await
    }
    async fn indexed(
        &self,
        subject: &crate::domain::AuditSubject,
        from_seq: u64,
        limit: usize,
    ) -> Result<Option<Vec<ChainedEvent>>, AuditError> {
        self.counter.read("audit.indexed");
        self.inner.indexed(subject, from_seq, limit).await
    }
}

#[async_trait]
impl Store for CountingStore {
    fn direct_trail(&self) -> Option<crate::ports::TrailId> {
        self.inner.direct_trail()
    }
    async fn insert_mandate(&self, mandate: &Mandate) -> Result<(), StoreError> {
        self.counter.write("store.insert_mandate");
        self.inner.insert_mandate(mandate).await
    }
    async fn mandate(&self, id: &MandateId) -> Result<Option<Mandate>, StoreError> {
        self.counter.read("store.mandate");
        self.inner.mandate(id).await
    }
    async fn update_mandate(
        &self,
        mandate: &Mandate,
        expected: MandateStatus,
    ) -> Result<(), StoreError> {
        self.counter.write("store.update_mandate");
        self.inner.update_mandate(mandate, expected).await
    }
    async fn chain(&self, leaf: &MandateId) -> Result<Vec<Mandate>, StoreError> {
        self.counter.read("store.chain");
        self.inner.chain(leaf).await
    }
    async fn set_suspended(&self, party: &Party, suspended: bool) -> Result<(), StoreError> {
        self.counter.write("store.set_suspended");
        self.inner.set_suspended(party, suspended).await
    }
    async fn suspensions(
        &self,
        actors: &[ActorId],
        buyer: &BuyerId,
    ) -> Result<Suspensions, StoreError> {
        self.counter.read("store.suspensions");
        self.inner.suspensions(actors, buyer).await
    }
    async fn insert_confirmation(&self, confirmation: &Confirmation) -> Result<(), StoreError> {
        self.counter.write("store.insert_confirmation");
        self.inner.insert_confirmation(confirmation).await
    }
    async fn confirmations(
        &self,
        buyer: &BuyerId,
        snapshot: &SnapshotId,
    ) -> Result<Vec<Confirmation>, StoreError> {
        self.counter.read("store.confirmations");
        self.inner.confirmations(buyer, snapshot).await
    }
    async fn put_snapshot(&self, snapshot: &CartSnapshot) -> Result<(), StoreError> {
        self.counter.write("store.put_snapshot");
        self.inner.put_snapshot(snapshot).await
    }
    async fn snapshot(&self, id: &SnapshotId) -> Result<Option<CartSnapshot>, StoreError> {
        self.counter.read("store.snapshot");
        self.inner.snapshot(id).await
    }
    async fn usage(&self, chain: &[Mandate], now: DateTime<Utc>) -> Result<Vec<Usage>, StoreError> {
        self.counter.read("store.usage");
        self.inner.usage(chain, now).await
    }
    async fn place_hold(&self, hold: &HoldRequest) -> Result<Vec<Usage>, HoldError> {
        self.counter.write("store.place_hold");
        self.inner.place_hold(hold).await
    }
    async fn commit_hold(&self, attempt_id: &AttemptId, amount: Money) -> Result<(), StoreError> {
        self.counter.write("store.commit_hold");
        self.inner.commit_hold(attempt_id, amount).await
    }
    async fn release_hold(&self, attempt_id: &AttemptId) -> Result<(), StoreError> {
        self.counter.write("store.release_hold");
        self.inner.release_hold(attempt_id).await
    }
    async fn refund_hold(
        &self,
        attempt_id: &AttemptId,
        amount: Money,
        policy: RefundPolicy,
    ) -> Result<(), StoreError> {
        self.counter.write("store.refund_hold");
        self.inner.refund_hold(attempt_id, amount, policy).await
    }
    async fn hold(&self, attempt_id: &AttemptId) -> Result<Option<HoldRecord>, StoreError> {
        self.counter.read("store.hold");
        self.inner.hold(attempt_id).await
    }
    async fn insert_attempt(&self, attempt: &PaymentAttempt) -> Result<(), StoreError> {
        self.counter.write("store.insert_attempt");
        self.inner.insert_attempt(attempt).await
    }
    async fn attempt(&self, id: &AttemptId) -> Result<Option<PaymentAttempt>, StoreError> {
        self.counter.read("store.attempt");
        self.inner.attempt(id).await
    }
    async fn update_attempt(
        &self,
        attempt: &PaymentAttempt,
        expected: AttemptStatus,
    ) -> Result<(), StoreError> {
        self.counter.write("store.update_attempt");
        self.inner.update_attempt(attempt, expected).await
    }
    async fn change_attempt(&self, change: &AttemptChange<'_>) -> Result<(), StoreError> {
        self.counter.write("store.change_attempt");
        self.inner.change_attempt(change).await
    }
    async fn write_audited(
        &self,
        write: Write<'_>,
        events: &[AuditEvent],
    ) -> Result<Written, StoreError> {
        self.counter.write("store.write_audited");
        self.inner.write_audited(write, events).await
    }
    async fn payment_inputs(&self, query: &InputsQuery<'_>) -> Result<PaymentInputs, StoreError> {
        self.counter.read("store.payment_inputs");
        self.inner.payment_inputs(query).await
    }
    async fn open_payment(&self, open: &OpenPayment<'_>) -> Result<Opened, HoldError> {
        self.counter.write("store.open_payment");
        self.inner.open_payment(open).await
    }
    async fn stage_audit(&self, events: &[AuditEvent]) -> Result<(), StoreError> {
        self.counter.write("store.stage_audit");
        self.inner.stage_audit(events).await
    }
    async fn staged_audit(&self, limit: usize) -> Result<Vec<StagedEvent>, StoreError> {
        self.counter.read("store.staged_audit");
        self.inner.staged_audit(limit).await
    }
    async fn ack_audit(&self, through: u64) -> Result<(), StoreError> {
        self.counter.write("store.ack_audit");
        self.inner.ack_audit(through).await
    }
    async fn attempts_in(
        &self,
        statuses: &[AttemptStatus],
        limit: usize,
    ) -> Result<Vec<PaymentAttempt>, StoreError> {
        self.counter.read("store.attempts_in");
        self.inner.attempts_in(statuses, limit).await
    }
    async fn begin_idempotent(
        &self,
        scope: &IdempotencyScope,
        fingerprint: &ContentDigest,
        now: DateTime<Utc>,
        lease: Duration,
    ) -> Result<Begin, StoreError> {
        self.counter.write("store.begin_idempotent");
        self.inner
            .begin_idempotent(scope, fingerprint, now, lease)
            .await
    }
    async fn complete_idempotent(
        &self,
        fence: &Fence,
        result: &StoredResult,
        retain_until: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.counter.write("store.complete_idempotent");
        self.inner
            .complete_idempotent(fence, result, retain_until)
            .await
    }
    async fn abandon_idempotent(&self, fence: &Fence) -> Result<(), StoreError> {
        self.counter.write("store.abandon_idempotent");
        self.inner.abandon_idempotent(fence).await
    }
    async fn check_fence(&self, fence: &Fence) -> Result<(), StoreError> {
        self.counter.read("store.check_fence");
        self.inner.check_fence(fence).await
    }
    async fn purge_idempotent(&self, now: DateTime<Utc>) -> Result<u64, StoreError> {
        self.counter.write("store.purge_idempotent");
        self.inner.purge_idempotent(now).await
    }
    async fn consume_challenge(
        &self,
        use_: &crate::ports::ChallengeUse,
    ) -> Result<crate::ports::ChallengeConsumed, StoreError> {
        self.counter.write("store.consume_challenge");
        self.inner.consume_challenge(use_).await
    }
    async fn purge_challenges(&self, now: DateTime<Utc>) -> Result<u64, StoreError> {
        self.counter.write("store.purge_challenges");
        self.inner.purge_challenges(now).await
    }
    async fn insert_order(&self, order: &Order) -> Result<InsertOrder, StoreError> {
        self.counter.write("store.insert_order");
        self.inner.insert_order(order).await
    }
    async fn order_for(&self, attempt_id: &AttemptId) -> Result<Option<Order>, StoreError> {
        self.counter.read("store.order_for");
        self.inner.order_for(attempt_id).await
    }
    async fn record_block(&self, actor: &ActorId) -> Result<u32, StoreError> {
        self.counter.write("store.record_block");
        self.inner.record_block(actor).await
    }
    async fn reset_blocks(&self, actor: &ActorId) -> Result<(), StoreError> {
        self.counter.write("store.reset_blocks");
        self.inner.reset_blocks(actor).await
    }
}
