//! Found by hostile review: a run that places a payment's hold again (after a transient PSP
//! failure) while the buyer cancels it must not leave that hold counting on a cancelled
//! attempt (I2, I5). The store pauses the placement so the cancel runs in between.
#![cfg(feature = "testkit")]

mod common;
#[allow(unused_imports)]
use common::principals::*;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use agent_mandate::adapters::memory::{MemoryReviewQueue, MemoryStore};
use agent_mandate::domain::{
    ActorId, AttemptId, AttemptStatus, AuditEvent, BuyerId, CartSnapshot, Confirmation,
    ContentDigest, Mandate, MandateId, MandateStatus, Money, Order, Party, PaymentAttempt,
    SnapshotId, Suspensions, Usage,
};
use agent_mandate::engine::{Controls, Engine, EngineConfig, PaymentOutcome, ReviewResult};
use agent_mandate::ports::{
    AttemptChange, Begin, Fence, HoldError, HoldRecord, HoldRequest, IdempotencyScope, InputsQuery,
    InsertOrder, OpenPayment, Opened, PaymentInputs, Ports, RefundPolicy, StagedEvent, Store,
    StoreError, StoredResult, Write, Written,
};
use agent_mandate::testkit::{Fault, Op};
use common::engine::{backpack_spec, world_with};

#[derive(Debug)]
struct GatedStore {
    inner: Arc<MemoryStore>,
    armed: AtomicBool,
    entered: tokio::sync::Notify,
    gate: tokio::sync::Semaphore,
}

#[async_trait]
impl Store for GatedStore {
    async fn insert_mandate(&self, mandate: &Mandate) -> Result<(), StoreError> {
        self.inner.insert_mandate(mandate).await
    }
    async fn mandate(&self, id: &MandateId) -> Result<Option<Mandate>, StoreError> {
        self.inner.mandate(id).await
    }
    async fn update_mandate(
        &self,
        mandate: &Mandate,
        expected: MandateStatus,
    ) -> Result<(), StoreError> {
        self.inner.update_mandate(mandate, expected).await
    }
    async fn chain(&self, leaf: &MandateId) -> Result<Vec<Mandate>, StoreError> {
        self.inner.chain(leaf).await
    }
    async fn set_suspended(&self, party: &Party, suspended: bool) -> Result<(), StoreError> {
        self.inner.set_suspended(party, suspended).await
    }
    async fn suspensions(
        &self,
        actors: &[ActorId],
        buyer: &BuyerId,
    ) -> Result<Suspensions, StoreError> {
        self.inner.suspensions(actors, buyer).await
    }
    async fn insert_confirmation(&self, confirmation: &Confirmation) -> Result<(), StoreError> {
        self.inner.insert_confirmation(confirmation).await
    }
    async fn confirmations(
        &self,
        buyer: &BuyerId,
        snapshot: &SnapshotId,
    ) -> Result<Vec<Confirmation>, StoreError> {
        self.inner.confirmations(buyer, snapshot).await
    }
    async fn put_snapshot(&self, snapshot: &CartSnapshot) -> Result<(), StoreError> {
        self.inner.put_snapshot(snapshot).await
    }
    async fn snapshot(&self, id: &SnapshotId) -> Result<Option<CartSnapshot>, StoreError> {
        self.inner.snapshot(id).await
    }
    async fn usage(&self, chain: &[Mandate], now: DateTime<Utc>) -> Result<Vec<Usage>, StoreError> {
        self.inner.usage(chain, now).await
    }
    async fn place_hold(&self, hold: &HoldRequest) -> Result<Vec<Usage>, HoldError> {
        if self.armed.swap(false, Ordering::SeqCst) {
            // Let the test run its cancel before this placement lands.
            self.entered.notify_one();
            let _permit = self.gate.acquire().await.expect("gate");
        }
        self.inner.place_hold(hold).await
    }
    async fn commit_hold(&self, attempt_id: &AttemptId, amount: Money) -> Result<(), StoreError> {
        self.inner.commit_hold(attempt_id, amount).await
    }
    async fn release_hold(&self, attempt_id: &AttemptId) -> Result<(), StoreError> {
        self.inner.release_hold(attempt_id).await
    }
    async fn refund_hold(
        &self,
        attempt_id: &AttemptId,
        amount: Money,
        policy: RefundPolicy,
    ) -> Result<(), StoreError> {
        self.inner.refund_hold(attempt_id, amount, policy).await
    }
    async fn hold(&self, attempt_id: &AttemptId) -> Result<Option<HoldRecord>, StoreError> {
        self.inner.hold(attempt_id).await
    }
    async fn insert_attempt(&self, attempt: &PaymentAttempt) -> Result<(), StoreError> {
        self.inner.insert_attempt(attempt).await
    }
    async fn attempt(&self, id: &AttemptId) -> Result<Option<PaymentAttempt>, StoreError> {
        self.inner.attempt(id).await
    }
    async fn update_attempt(
        &self,
        attempt: &PaymentAttempt,
        expected: AttemptStatus,
    ) -> Result<(), StoreError> {
        self.inner.update_attempt(attempt, expected).await
    }
    async fn change_attempt(&self, change: &AttemptChange<'_>) -> Result<(), StoreError> {
        self.inner.change_attempt(change).await
    }
    async fn write_audited(
        &self,
        write: Write<'_>,
        events: &[AuditEvent],
    ) -> Result<Written, StoreError> {
        self.inner.write_audited(write, events).await
    }
    async fn payment_inputs(&self, query: &InputsQuery<'_>) -> Result<PaymentInputs, StoreError> {
        self.inner.payment_inputs(query).await
    }
    async fn open_payment(&self, open: &OpenPayment<'_>) -> Result<Opened, HoldError> {
        self.inner.open_payment(open).await
    }
    async fn stage_audit(&self, events: &[AuditEvent]) -> Result<(), StoreError> {
        self.inner.stage_audit(events).await
    }
    async fn staged_audit(&self, limit: usize) -> Result<Vec<StagedEvent>, StoreError> {
        self.inner.staged_audit(limit).await
    }
    async fn ack_audit(&self, through: u64) -> Result<(), StoreError> {
        self.inner.ack_audit(through).await
    }
    async fn attempts_in(
        &self,
        statuses: &[AttemptStatus],
        limit: usize,
    ) -> Result<Vec<PaymentAttempt>, StoreError> {
        self.inner.attempts_in(statuses, limit).await
    }
    async fn begin_idempotent(
        &self,
        scope: &IdempotencyScope,
        fingerprint: &ContentDigest,
        now: DateTime<Utc>,
        lease: Duration,
    ) -> Result<Begin, StoreError> {
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
        self.inner
            .complete_idempotent(fence, result, retain_until)
            .await
    }
    async fn abandon_idempotent(&self, fence: &Fence) -> Result<(), StoreError> {
        self.inner.abandon_idempotent(fence).await
    }
    async fn check_fence(&self, fence: &Fence) -> Result<(), StoreError> {
        self.inner.check_fence(fence).await
    }
    async fn purge_idempotent(&self, now: DateTime<Utc>) -> Result<u64, StoreError> {
        self.inner.purge_idempotent(now).await
    }
    async fn consume_challenge(
        &self,
        use_: &agent_mandate::ports::ChallengeUse,
    ) -> Result<agent_mandate::ports::ChallengeConsumed, StoreError> {
        self.inner.consume_challenge(use_).await
    }
    async fn purge_challenges(&self, now: DateTime<Utc>) -> Result<u64, StoreError> {
        self.inner.purge_challenges(now).await
    }
    async fn insert_order(&self, order: &Order) -> Result<InsertOrder, StoreError> {
        self.inner.insert_order(order).await
    }
    async fn order_for(&self, attempt_id: &AttemptId) -> Result<Option<Order>, StoreError> {
        self.inner.order_for(attempt_id).await
    }
    async fn record_block(&self, actor: &ActorId) -> Result<u32, StoreError> {
        self.inner.record_block(actor).await
    }
    async fn reset_blocks(&self, actor: &ActorId) -> Result<(), StoreError> {
        self.inner.reset_blocks(actor).await
    }
}

#[tokio::test]
async fn a_hold_placed_again_while_the_buyer_cancels_is_released() {
    let config = EngineConfig::default()
        .with_controls(Controls::off().with_review_window(Some(Default::default())));
    let w = world_with(config.clone(), backpack_spec(true)).await;
    let store = Arc::new(GatedStore {
        inner: w.mem.store.clone(),
        armed: AtomicBool::new(false),
        entered: tokio::sync::Notify::new(),
        gate: tokio::sync::Semaphore::new(0),
    });
    let queue = MemoryReviewQueue::new();
    let ports = Ports {
        store: store.clone(),
        ..w.mem.ports.clone()
    };
    let engine = Engine::new(ports, config)
        .expect("engine")
        .with_reviews(Arc::new(queue));
    let PaymentOutcome::Scheduled { attempt, .. } = engine
        .execute_payment(&agent_p(), &w.execute("pay-1"))
        .await
        .expect("execute")
    else {
        panic!("expected scheduled");
    };
    // A transient failure: the hold is released and the payment due again.
    w.psp.inject(Some(Op::Authorize), Fault::Transient);
    w.mem.clock.advance(chrono::Duration::seconds(30));
    let runs = engine.run_due_reviews(10).await.expect("run");
    assert!(
        matches!(runs[0].outcome, Ok(ReviewResult::Postponed { .. })),
        "{:?}",
        runs[0].outcome
    );
    assert_eq!(w.usage().await.held.minor_units(), 0);
    // The next run pauses while placing the hold again; the buyer cancels meanwhile.
    w.mem.clock.advance(chrono::Duration::seconds(30));
    store.armed.store(true, Ordering::SeqCst);
    let runner = {
        let engine = engine.clone();
        tokio::spawn(async move { engine.run_due_reviews(10).await })
    };
    store.entered.notified().await;
    let cancelled = engine
        .cancel_review(&buyer_p(), &attempt.id)
        .await
        .expect("cancel");
    assert_eq!(cancelled.status, AttemptStatus::Cancelled);
    store.gate.add_permits(1);
    let runs = runner.await.expect("task").expect("run");
    assert!(
        matches!(
            runs[0].outcome,
            Ok(ReviewResult::Closed {
                status: AttemptStatus::Cancelled
            })
        ),
        "{:?}",
        runs[0].outcome
    );
    assert_eq!(
        w.psp.calls(Op::Authorize),
        1,
        "only the transient call reached the PSP"
    );
    assert_eq!(
        w.usage().await.held.minor_units(),
        0,
        "no hold counts for the cancelled payment"
    );
}
