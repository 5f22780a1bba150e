//! A hostile review of the review window: each test is one attack on a payment held before the
//! PSP (who may cancel it, what the agent may do to it meanwhile, what the queue may lie about,
//! crashes between the queue and the store, concurrent runs, budget double counts, clock edges).
#![cfg(all(feature = "testkit", feature = "sqlite"))]

mod common;
#[allow(unused_imports)]
use common::principals::*;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use agent_mandate::adapters::memory::MemoryReviewQueue;
use agent_mandate::domain::{
    examples, AttemptId, AttemptStatus, BuyerId, CartSnapshot, Currency, LifecycleEvent, Operation,
    Party, PaymentAttempt, Principal, ProviderStatus, Text,
};
use agent_mandate::engine::{
    ChangeMandate, Controls, Engine, EngineConfig, EngineError, ExecutePayment, PaymentOutcome,
    ReviewResult, ReviewWindow, SetSuspension, MAX_REVIEW_TRIES,
};
use agent_mandate::ports::{ReviewEntry, ReviewQueue, ReviewState, StoreError};
use agent_mandate::testkit::{Fault, Op};
use common::engine::{
    agent_capture, agent_refund, agent_void, backpack_spec, key, world_with, World,
};

// ---------------------------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------------------------

fn config() -> EngineConfig {
    EngineConfig::default()
        .with_controls(Controls::off().with_review_window(Some(Default::default())))
}

fn config_with(window: ReviewWindow) -> EngineConfig {
    EngineConfig::default().with_controls(Controls::off().with_review_window(Some(window)))
}

/// How a [`HostileQueue`] misbehaves.
#[derive(Debug, Default)]
struct Faults {
    /// `schedule` fails this many times without writing anything.
    schedule_fails: AtomicU32,
    /// `schedule` writes the entry, then answers an error, this many times (a lost answer).
    schedule_lies: AtomicU32,
    /// `complete` fails this many times without writing anything.
    complete_fails: AtomicU32,
    /// `cancel` fails this many times without writing anything.
    cancel_fails: AtomicU32,
    /// `due` hands back entries whose command is replaced by this text (a tampered row).
    tampered_command: Mutex<Option<String>>,
}

/// A review queue over the memory one that fails, lies or hands back tampered rows.
#[derive(Debug, Clone)]
struct HostileQueue {
    inner: MemoryReviewQueue,
    faults: Arc<Faults>,
}

impl HostileQueue {
    fn new(inner: MemoryReviewQueue) -> HostileQueue {
        HostileQueue {
            inner,
            faults: Arc::new(Faults::default()),
        }
    }
}

fn take(counter: &AtomicU32) -> bool {
    counter
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
}

fn down() -> StoreError {
    StoreError::Unavailable {
        message: "review queue down (injected)".into(),
    }
}

#[async_trait]
impl ReviewQueue for HostileQueue {
    async fn schedule(&self, entry: &ReviewEntry) -> Result<ReviewEntry, StoreError> {
        if take(&self.faults.schedule_fails) {
            return Err(down());
        }
        let stored = self.inner.schedule(entry).await?;
        if take(&self.faults.schedule_lies) {
            return Err(down());
        }
        Ok(stored)
    }
    async fn entry(&self, attempt_id: &AttemptId) -> Result<Option<ReviewEntry>, StoreError> {
        self.inner.entry(attempt_id).await
    }
    async fn due(&self, now: DateTime<Utc>, limit: usize) -> Result<Vec<ReviewEntry>, StoreError> {
        let mut due = self.inner.due(now, limit).await?;
        if let Some(cmd) = self.faults.tampered_command.lock().expect("lock").clone() {
            for e in &mut due {
                e.command = cmd.clone();
            }
        }
        Ok(due)
    }
    async fn pending_for(
        &self,
        buyer: &BuyerId,
        limit: usize,
    ) -> Result<Vec<ReviewEntry>, StoreError> {
        self.inner.pending_for(buyer, limit).await
    }
    async fn complete(
        &self,
        attempt_id: &AttemptId,
        at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        if take(&self.faults.complete_fails) {
            return Err(down());
        }
        self.inner.complete(attempt_id, at).await
    }
    async fn cancel(&self, attempt_id: &AttemptId, at: DateTime<Utc>) -> Result<bool, StoreError> {
        if take(&self.faults.cancel_fails) {
            return Err(down());
        }
        self.inner.cancel(attempt_id, at).await
    }
    async fn postpone(
        &self,
        attempt_id: &AttemptId,
        due_at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        self.inner.postpone(attempt_id, due_at).await
    }
}

struct Hostile {
    w: World,
    queue: HostileQueue,
}

async fn hostile_world_with(config: EngineConfig) -> Hostile {
    let w = world_with(config, backpack_spec(true)).await;
    let queue = HostileQueue::new(MemoryReviewQueue::new());
    let engine = w.engine.clone().with_reviews(Arc::new(queue.clone()));
    Hostile {
        w: World { engine, ..w },
        queue,
    }
}

async fn hostile_world() -> Hostile {
    hostile_world_with(config()).await
}

/// Another engine over the same ports and queue: a restart, or a second instance.
fn rebuilt(h: &Hostile) -> Engine {
    Engine::new(h.w.mem.ports.clone(), config())
        .expect("engine")
        .with_reviews(Arc::new(h.queue.clone()))
}

fn now(w: &World) -> DateTime<Utc> {
    agent_mandate::ports::Clock::now(&*w.mem.clock)
}

fn advance(w: &World, secs: i64) {
    w.mem.clock.advance(chrono::Duration::seconds(secs));
}

async fn schedule(w: &World, k: &str) -> PaymentAttempt {
    match w
        .engine
        .execute_payment(&agent_p(), &w.execute(k))
        .await
        .expect("execute")
    {
        PaymentOutcome::Scheduled { attempt, .. } => attempt,
        other => panic!("expected a scheduled payment, got {other:?}"),
    }
}

async fn held(w: &World) -> i64 {
    w.usage().await.held.minor_units()
}

async fn attempt(w: &World, id: &AttemptId) -> PaymentAttempt {
    w.engine
        .ports()
        .store
        .attempt(id)
        .await
        .expect("read")
        .expect("kept")
}

async fn entry_state(queue: &dyn ReviewQueue, id: &AttemptId) -> ReviewState {
    queue
        .entry(id)
        .await
        .expect("entry")
        .expect("an entry")
        .state
}

fn auths(w: &World, a: &PaymentAttempt) -> u32 {
    w.psp
        .authorizations_for(&a.provider_key(Operation::Authorize))
}

/// The story's cart with other shipping: another amount, same merchant, within the mandate.
fn cheaper_snapshot() -> CartSnapshot {
    CartSnapshot::new(examples::backpack_content("0.00", "5.00", Currency::EUR)).expect("snapshot")
}

fn command_for(w: &World, k: &str, snapshot: &CartSnapshot) -> ExecutePayment {
    ExecutePayment::new(
        key(k),
        examples::authorize_request(snapshot),
        snapshot.clone(),
        examples::valid_checkout(snapshot.id()),
        w.card.clone(),
    )
}

// ---------------------------------------------------------------------------------------------
// Who may cancel
// ---------------------------------------------------------------------------------------------

/// Every principal that is neither the payment's buyer nor an operator is refused, whatever it
/// asserts: the agent that asked for the payment, another buyer, a system process, a provider.
/// A refused cancel changes nothing: the payment still goes out at the end of its window. (I14)
#[tokio::test]
async fn nobody_but_the_buyer_or_an_operator_cancels_and_a_refusal_changes_nothing() {
    let h = hostile_world().await;
    let w = &h.w;
    let a = schedule(w, "pay-1").await;
    let strangers = [
        agent_p(),
        Principal::Agent("agent_other_9".parse().expect("id")),
        Principal::Buyer("buyer_999".parse().expect("id")),
        system_p(),
        Principal::Provider("psp_1".parse().expect("id")),
    ];
    for who in strangers {
        let err = w
            .engine
            .cancel_review(&who, &a.id)
            .await
            .expect_err("refused");
        assert!(
            matches!(err, EngineError::NotPermitted { .. }),
            "{who}: {err:?}"
        );
    }
    assert_eq!(held(w).await, 14400);
    assert_eq!(entry_state(&h.queue, &a.id).await, ReviewState::Pending);
    assert_eq!(
        attempt(w, &a.id).await.status,
        AttemptStatus::AuthorityValidated
    );
    advance(w, 30);
    let runs = w.engine.run_due_reviews(10).await.expect("run");
    assert!(
        matches!(&runs[0].outcome, Ok(ReviewResult::Sent(_))),
        "{:?}",
        runs[0].outcome
    );
    assert_eq!(auths(w, &a), 1);
}

/// Cancelling an attempt that never waited in a window (an urgent payment, sent at once) is
/// refused even by its buyer: `cancel_review` is not a back door to void or fail payments. (I14)
#[tokio::test]
async fn cancel_review_on_a_payment_that_never_waited_changes_nothing() {
    let h = hostile_world().await;
    let w = &h.w;
    let mut cmd = w.execute("urgent");
    cmd.request.urgency = Some(agent_mandate::domain::Urgency::Critical);
    let a = match w
        .engine
        .execute_payment(&agent_p(), &cmd)
        .await
        .expect("execute")
    {
        PaymentOutcome::Done { attempt, .. } => attempt,
        other => panic!("{other:?}"),
    };
    assert_eq!(a.status, AttemptStatus::Authorized);
    for who in [buyer_p(), operator_p()] {
        assert!(w.engine.cancel_review(&who, &a.id).await.is_err());
    }
    assert_eq!(attempt(w, &a.id).await.status, AttemptStatus::Authorized);
    assert_eq!(held(w).await, 14400);
    // An unknown attempt: not found, nothing created.
    let ghost: AttemptId = "att_does_not_exist".parse().expect("id");
    assert!(matches!(
        w.engine.cancel_review(&buyer_p(), &ghost).await,
        Err(EngineError::NotFound { .. })
    ));
}

// ---------------------------------------------------------------------------------------------
// What the agent may do to its own waiting payment
// ---------------------------------------------------------------------------------------------

/// During the window the agent re-sends its key (same body: the same answer, no second hold,
/// no PSP call; another body: a conflict), and asks to capture, void or refund the waiting
/// attempt (all refused, nothing sent, the hold kept). The payment then goes out once. (I3, I14)
#[tokio::test]
async fn the_agent_can_neither_resend_nor_settle_its_waiting_payment() {
    let h = hostile_world().await;
    let w = &h.w;
    let a = schedule(w, "pay-1").await;
    advance(w, 10);
    // Same key, same body.
    let again = w
        .engine
        .execute_payment(&agent_p(), &w.execute("pay-1"))
        .await
        .expect("retry");
    match &again {
        PaymentOutcome::Replayed { attempt } | PaymentOutcome::Scheduled { attempt, .. } => {
            assert_eq!(attempt.id, a.id);
            assert_eq!(attempt.status, AttemptStatus::AuthorityValidated);
        }
        other => panic!("{other:?}"),
    }
    // Same key, another body (another cart, and the same cart marked urgent to jump the window).
    let other = command_for(w, "pay-1", &cheaper_snapshot());
    let err = w
        .engine
        .execute_payment(&agent_p(), &other)
        .await
        .expect_err("conflict");
    assert!(
        matches!(err, EngineError::IdempotencyConflict { .. }),
        "{err:?}"
    );
    let mut urgent = w.execute("pay-1");
    urgent.request.urgency = Some(agent_mandate::domain::Urgency::Critical);
    let err = w
        .engine
        .execute_payment(&agent_p(), &urgent)
        .await
        .expect_err("conflict");
    assert!(
        matches!(err, EngineError::IdempotencyConflict { .. }),
        "{err:?}"
    );
    // Capture, void, refund of a payment never sent.
    assert!(w
        .engine
        .capture(&agent_p(), &agent_capture("cap-1", &a.id, None))
        .await
        .is_err());
    assert!(w
        .engine
        .void(&agent_p(), &agent_void("void-1", &a.id))
        .await
        .is_err());
    assert!(w
        .engine
        .void(&buyer_p(), &agent_void("void-2", &a.id))
        .await
        .is_err());
    assert!(w
        .engine
        .refund(&agent_p(), &agent_refund("ref-1", &a.id, None))
        .await
        .is_err());
    assert_eq!(w.psp.calls(Op::Authorize), 0);
    assert_eq!(w.psp.calls(Op::Capture), 0);
    assert_eq!(w.psp.calls(Op::Void), 0);
    assert_eq!(w.psp.calls(Op::Refund), 0);
    assert_eq!(held(w).await, 14400, "one hold, never two");
    assert_eq!(
        attempt(w, &a.id).await.status,
        AttemptStatus::AuthorityValidated
    );
    assert_eq!(entry_state(&h.queue, &a.id).await, ReviewState::Pending);
    advance(w, 20);
    let runs = w.engine.run_due_reviews(10).await.expect("run");
    assert_eq!(runs.len(), 1);
    assert!(
        matches!(&runs[0].outcome, Ok(ReviewResult::Sent(_))),
        "{:?}",
        runs[0].outcome
    );
    assert_eq!(auths(w, &a), 1);
    assert_eq!(held(w).await, 14400);
}

/// Re-sending the key after the window sent the payment replays it; after the buyer cancelled
/// it, replays the cancelled attempt: never a second payment, never a resurrection. (I3)
#[tokio::test]
async fn a_key_resent_after_cancel_does_not_resurrect_the_payment() {
    let h = hostile_world().await;
    let w = &h.w;
    let a = schedule(w, "pay-1").await;
    w.engine
        .cancel_review(&buyer_p(), &a.id)
        .await
        .expect("cancel");
    advance(w, 5);
    let again = w
        .engine
        .execute_payment(&agent_p(), &w.execute("pay-1"))
        .await
        .expect("retry");
    let status = match &again {
        PaymentOutcome::Replayed { attempt }
        | PaymentOutcome::Done { attempt, .. }
        | PaymentOutcome::Scheduled { attempt, .. } => attempt.status,
        other => panic!("{other:?}"),
    };
    assert_eq!(status, AttemptStatus::Cancelled, "{again:?}");
    // Past the idempotency record's retention: the attempt the key made still answers.
    advance(w, 25 * 3600);
    let late = w
        .engine
        .execute_payment(&agent_p(), &w.execute("pay-1"))
        .await
        .expect("late retry");
    let status = match &late {
        PaymentOutcome::Replayed { attempt }
        | PaymentOutcome::Done { attempt, .. }
        | PaymentOutcome::Scheduled { attempt, .. } => attempt.status,
        other => panic!("{other:?}"),
    };
    assert_eq!(status, AttemptStatus::Cancelled, "{late:?}");
    assert!(w.engine.run_due_reviews(10).await.expect("run").is_empty());
    assert_eq!(w.psp.calls(Op::Authorize), 0);
    assert_eq!(held(w).await, 0);
}

// ---------------------------------------------------------------------------------------------
// Authority lapsing during the window
// ---------------------------------------------------------------------------------------------

/// The buyer revokes the mandate during the window: the payment is withdrawn at its end, its
/// hold released, nothing sent. (I1)
#[tokio::test]
async fn a_mandate_revoked_during_the_window_is_never_paid() {
    let h = hostile_world().await;
    let w = &h.w;
    let a = schedule(w, "pay-1").await;
    w.engine
        .change_mandate(
            &buyer_p(),
            &ChangeMandate::new(
                key("revoke"),
                w.mandate.id().clone(),
                LifecycleEvent::Revoke {
                    reason: Text::new("changed my mind").expect("text"),
                },
            ),
        )
        .await
        .expect("revoke");
    advance(w, 30);
    let runs = w.engine.run_due_reviews(10).await.expect("run");
    assert!(
        matches!(&runs[0].outcome, Ok(ReviewResult::Withdrawn { .. })),
        "{:?}",
        runs[0].outcome
    );
    assert_eq!(w.psp.calls(Op::Authorize), 0);
    assert_eq!(held(w).await, 0);
    assert_eq!(attempt(w, &a.id).await.status, AttemptStatus::Cancelled);
    assert_eq!(entry_state(&h.queue, &a.id).await, ReviewState::Cancelled);
}

/// The buyer is suspended during the window: withdrawn, nothing sent. (I1)
#[tokio::test]
async fn a_buyer_suspended_during_the_window_is_never_charged() {
    let h = hostile_world().await;
    let w = &h.w;
    let a = schedule(w, "pay-1").await;
    w.engine
        .set_suspension(
            &operator_p(),
            &SetSuspension::new(
                key("suspend-buyer"),
                Party::Buyer(examples::buyer()),
                true,
                Text::new("fraud report").expect("text"),
            ),
        )
        .await
        .expect("suspend");
    advance(w, 30);
    let runs = w.engine.run_due_reviews(10).await.expect("run");
    assert!(
        matches!(&runs[0].outcome, Ok(ReviewResult::Withdrawn { reason }) if reason.contains("BUYER_SUSPENDED")),
        "{:?}",
        runs[0].outcome
    );
    assert_eq!(w.psp.calls(Op::Authorize), 0);
    assert_eq!(held(w).await, 0);
    assert_eq!(attempt(w, &a.id).await.status, AttemptStatus::Cancelled);
}

/// The agent's credentials are revoked (not just switched off) during the window: withdrawn. (I1)
#[tokio::test]
async fn credentials_revoked_during_the_window_withdraw_the_payment() {
    let h = hostile_world().await;
    let w = &h.w;
    let a = schedule(w, "pay-1").await;
    w.engine
        .revoke_credentials(&operator_p(), &examples::agent().id)
        .await
        .expect("revoke credentials");
    advance(w, 30);
    let runs = w.engine.run_due_reviews(10).await.expect("run");
    assert!(
        matches!(&runs[0].outcome, Ok(ReviewResult::Withdrawn { .. })),
        "{:?}",
        runs[0].outcome
    );
    assert_eq!(w.psp.calls(Op::Authorize), 0);
    assert_eq!(held(w).await, 0);
    assert_eq!(attempt(w, &a.id).await.status, AttemptStatus::Cancelled);
}

// ---------------------------------------------------------------------------------------------
// The window's length and the clock
// ---------------------------------------------------------------------------------------------

/// The window's bounds are enforced (1 s to 24 h), and a 1 s window is not due a tick
/// early, and is due exactly at its end. (I1)
#[tokio::test]
async fn window_bounds_and_the_exact_due_instant() {
    assert!(ReviewWindow::new(Duration::from_millis(999)).is_err());
    assert!(ReviewWindow::new(Duration::ZERO).is_err());
    assert!(ReviewWindow::new(Duration::from_secs(24 * 3600) + Duration::from_nanos(1)).is_err());
    assert!(ReviewWindow::new(Duration::from_secs(24 * 3600)).is_ok());
    let window = ReviewWindow::new(Duration::from_secs(1)).expect("1 s");
    let h = hostile_world_with(config_with(window)).await;
    let w = &h.w;
    let start = now(w);
    let a = match w
        .engine
        .execute_payment(&agent_p(), &w.execute("pay-1"))
        .await
        .expect("execute")
    {
        PaymentOutcome::Scheduled { attempt, until, .. } => {
            assert_eq!(until, start + chrono::Duration::seconds(1));
            attempt
        }
        other => panic!("{other:?}"),
    };
    // The clock port counts microseconds: one tick before the end, then the end itself.
    w.mem.clock.advance(chrono::Duration::microseconds(999_999));
    assert!(w.engine.run_due_reviews(10).await.expect("run").is_empty());
    assert_eq!(w.psp.calls(Op::Authorize), 0);
    w.mem.clock.advance(chrono::Duration::microseconds(1));
    let runs = w.engine.run_due_reviews(10).await.expect("run");
    assert_eq!(runs.len(), 1);
    assert_eq!(auths(w, &a), 1);
}

/// A 24 h window, far past the idempotency lease and the PSP's deadline: the sweep keeps the
/// hold, a retry of the key answers without a second hold, and the payment is sent once at
/// the end. A run limited to 0 entries sends nothing. (I2)
#[tokio::test]
async fn a_day_long_window_survives_the_sweep_and_key_retries() {
    let window = ReviewWindow::new(Duration::from_secs(24 * 3600)).expect("24 h");
    let h = hostile_world_with(config_with(window)).await;
    let w = &h.w;
    let a = schedule(w, "pay-1").await;
    advance(w, 23 * 3600);
    w.engine.reconcile_pending(100).await.expect("sweep");
    assert_eq!(
        held(w).await,
        14400,
        "the sweep keeps a waiting payment's hold"
    );
    let again = w
        .engine
        .execute_payment(&agent_p(), &w.execute("pay-1"))
        .await
        .expect("retry");
    assert!(
        matches!(
            &again,
            PaymentOutcome::Replayed { .. } | PaymentOutcome::Scheduled { .. }
        ),
        "{again:?}"
    );
    assert_eq!(held(w).await, 14400, "no second hold");
    advance(w, 3600);
    assert!(w.engine.run_due_reviews(0).await.expect("run").is_empty());
    assert_eq!(w.psp.calls(Op::Authorize), 0);
    let runs = w.engine.run_due_reviews(10).await.expect("run");
    assert_eq!(runs.len(), 1);
    // A day later the checkout or snapshot may have gone stale: either it is sent, or it is
    // withdrawn with its hold released. Never both, never a leak.
    match &runs[0].outcome {
        Ok(ReviewResult::Sent(_)) => {
            assert_eq!(auths(w, &a), 1);
            assert_eq!(held(w).await, 14400);
        }
        Ok(ReviewResult::Withdrawn { .. }) => {
            assert_eq!(w.psp.calls(Op::Authorize), 0);
            assert_eq!(held(w).await, 0);
        }
        other => panic!("{other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// The queue lies, fails, or is tampered with
// ---------------------------------------------------------------------------------------------

/// The queue fails to schedule (nothing written): the agent gets an error; its retry of the key
/// schedules the payment with one hold, never two (the first is released or reused). (I2)
#[tokio::test]
async fn a_failed_schedule_then_a_retry_holds_the_budget_once() {
    let h = hostile_world().await;
    let w = &h.w;
    h.queue.faults.schedule_fails.store(1, Ordering::SeqCst);
    assert!(w
        .engine
        .execute_payment(&agent_p(), &w.execute("pay-1"))
        .await
        .is_err());
    assert_eq!(
        w.psp.calls(Op::Authorize),
        0,
        "nothing sent without an entry"
    );
    let a = schedule(w, "pay-1").await;
    assert_eq!(held(w).await, 14400, "one hold after the retry");
    advance(w, 30);
    let runs = w.engine.run_due_reviews(10).await.expect("run");
    assert!(
        matches!(&runs[0].outcome, Ok(ReviewResult::Sent(_))),
        "{:?}",
        runs[0].outcome
    );
    assert_eq!(auths(w, &a), 1);
    assert_eq!(held(w).await, 14400);
}

/// The queue writes the entry but its answer is lost: the agent's retry finds the payment
/// waiting (one hold); the payment is sent once. (I2, I3)
#[tokio::test]
async fn a_lost_schedule_answer_then_a_retry_neither_doubles_nor_loses() {
    let h = hostile_world().await;
    let w = &h.w;
    h.queue.faults.schedule_lies.store(1, Ordering::SeqCst);
    assert!(w
        .engine
        .execute_payment(&agent_p(), &w.execute("pay-1"))
        .await
        .is_err());
    assert_eq!(held(w).await, 14400);
    let a = schedule(w, "pay-1").await;
    assert_eq!(held(w).await, 14400, "still one hold");
    advance(w, 30);
    let runs = w.engine.run_due_reviews(10).await.expect("run");
    assert_eq!(runs.len(), 1);
    assert!(
        matches!(&runs[0].outcome, Ok(ReviewResult::Sent(_))),
        "{:?}",
        runs[0].outcome
    );
    assert_eq!(auths(w, &a), 1);
    assert_eq!(w.psp.calls(Op::Authorize), 1);
    assert_eq!(held(w).await, 14400);
}

/// The PSP authorized, then closing the entry failed (a crash between store and queue): the
/// next run closes it after the attempt, without a second send. (I3)
#[tokio::test]
async fn an_entry_left_pending_after_the_send_is_closed_not_resent() {
    let h = hostile_world().await;
    let w = &h.w;
    let a = schedule(w, "pay-1").await;
    h.queue.faults.complete_fails.store(1, Ordering::SeqCst);
    advance(w, 30);
    let runs = w.engine.run_due_reviews(10).await.expect("run");
    assert!(
        matches!(&runs[0].outcome, Ok(ReviewResult::Sent(_))),
        "{:?}",
        runs[0].outcome
    );
    assert_eq!(entry_state(&h.queue, &a.id).await, ReviewState::Pending);
    let runs = rebuilt(&h).run_due_reviews(10).await.expect("run");
    assert!(
        matches!(
            &runs[0].outcome,
            Ok(ReviewResult::Closed {
                status: AttemptStatus::Authorized
            })
        ),
        "{:?}",
        runs[0].outcome
    );
    assert_eq!(entry_state(&h.queue, &a.id).await, ReviewState::Sent);
    assert_eq!(auths(w, &a), 1);
    assert_eq!(w.psp.calls(Op::Authorize), 1);
}

/// The buyer's cancel won the attempt but closing the entry failed: the payment is never sent,
/// and the next due run closes the entry as cancelled. (I1)
#[tokio::test]
async fn an_entry_left_pending_after_the_cancel_is_closed_not_sent() {
    let h = hostile_world().await;
    let w = &h.w;
    let a = schedule(w, "pay-1").await;
    h.queue.faults.cancel_fails.store(1, Ordering::SeqCst);
    // The queue's failure is reported; the payment is cancelled all the same.
    assert!(w.engine.cancel_review(&buyer_p(), &a.id).await.is_err());
    assert_eq!(attempt(w, &a.id).await.status, AttemptStatus::Cancelled);
    assert_eq!(held(w).await, 0);
    advance(w, 30);
    let runs = rebuilt(&h).run_due_reviews(10).await.expect("run");
    assert!(
        matches!(
            &runs[0].outcome,
            Ok(ReviewResult::Closed {
                status: AttemptStatus::Cancelled
            })
        ),
        "{:?}",
        runs[0].outcome
    );
    assert_eq!(entry_state(&h.queue, &a.id).await, ReviewState::Cancelled);
    assert_eq!(w.psp.calls(Op::Authorize), 0);
    assert_eq!(held(w).await, 0);
}

/// A queue row whose command is not JSON: withdrawn, hold released, nothing sent. (I1, I12)
#[tokio::test]
async fn a_garbled_queue_command_is_withdrawn_not_sent() {
    let h = hostile_world().await;
    let w = &h.w;
    let a = schedule(w, "pay-1").await;
    *h.queue.faults.tampered_command.lock().expect("lock") = Some("{\"key\":".into());
    advance(w, 30);
    let runs = w.engine.run_due_reviews(10).await.expect("run");
    assert!(
        matches!(&runs[0].outcome, Ok(ReviewResult::Withdrawn { .. })),
        "{:?}",
        runs[0].outcome
    );
    assert_eq!(w.psp.calls(Op::Authorize), 0);
    assert_eq!(held(w).await, 0);
    assert_eq!(attempt(w, &a.id).await.status, AttemptStatus::Cancelled);
}

/// A queue row whose command was rewritten to another valid cart (another amount, under the
/// same mandate): the attempt, the hold and the audit trail say EUR 144.00, so the PSP must
/// never be asked for anything else under this attempt's key. (I1)
#[tokio::test]
async fn a_tampered_queue_amount_is_not_what_the_psp_charges() {
    let h = hostile_world().await;
    let w = &h.w;
    let a = schedule(w, "pay-1").await;
    let forged = command_for(w, "pay-1", &cheaper_snapshot());
    assert_ne!(forged.request.amount, a.request.amount);
    *h.queue.faults.tampered_command.lock().expect("lock") =
        Some(serde_json::to_string(&forged).expect("json"));
    advance(w, 30);
    let _ = w.engine.run_due_reviews(10).await.expect("run");
    for p in w.psp.payments() {
        assert_eq!(
            p.authorized, a.request.amount,
            "the PSP was asked for another amount than the attempt's: {p:?}"
        );
    }
}

/// A queue row whose command was rewritten to capture in the authorization: the attempt was
/// scheduled as authorize-only, so no money may be captured. (I1)
#[tokio::test]
async fn a_tampered_queue_capture_flag_does_not_capture() {
    let h = hostile_world().await;
    let w = &h.w;
    let a = schedule(w, "pay-1").await;
    assert!(!a.capture_on_authorize);
    let mut forged = w.execute("pay-1");
    forged.capture = true;
    *h.queue.faults.tampered_command.lock().expect("lock") =
        Some(serde_json::to_string(&forged).expect("json"));
    advance(w, 30);
    let _ = w.engine.run_due_reviews(10).await.expect("run");
    assert_eq!(w.psp.calls(Op::Capture), 0);
    for p in w.psp.payments() {
        assert!(
            p.status != ProviderStatus::Captured && p.captured.is_zero(),
            "an authorize-only payment was captured: {p:?}"
        );
    }
}

/// A queue row whose command names another stored card of the same agent: the attempt was
/// decided for the first card, so the second must not be charged. (I1)
#[tokio::test]
async fn a_tampered_queue_credential_is_not_charged() {
    let h = hostile_world().await;
    let w = &h.w;
    let a = schedule(w, "pay-1").await;
    let other = w
        .engine
        .store_credential(
            &buyer_p(),
            &key("card-2"),
            common::engine::card(&examples::agent().id, "pm_card_mastercard"),
        )
        .await
        .expect("second card")
        .value
        .reference;
    assert_ne!(other, a.credential);
    let mut forged = w.execute("pay-1");
    forged.credential = other;
    *h.queue.faults.tampered_command.lock().expect("lock") =
        Some(serde_json::to_string(&forged).expect("json"));
    advance(w, 30);
    let runs = w.engine.run_due_reviews(10).await.expect("run");
    assert_eq!(
        w.psp.calls(Op::Authorize),
        0,
        "sent with a credential the attempt never named: {:?}",
        runs[0].outcome
    );
}

/// One corrupt row in the SQLite queue (its body is not an entry) must not stop every other
/// payment from being sent: the healthy entry is still processed. (I12)
#[tokio::test]
async fn sqlite_one_corrupt_row_does_not_block_every_review() {
    use agent_mandate::adapters::sqlite::{SqliteConfig, SqliteDatabase};
    use agent_mandate::ports::Ports;
    let dir = std::env::temp_dir().join(format!("am-hostile-review-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("queue.db");
    let _ = std::fs::remove_file(&path);
    let w = world_with(config(), backpack_spec(true)).await;
    let db = SqliteDatabase::open(SqliteConfig::file(&path)).expect("db");
    let engine = Engine::new(
        Ports {
            ..w.mem.ports.clone()
        },
        config(),
    )
    .expect("engine")
    .with_reviews(Arc::new(db.review_queue()));
    let mut ids = Vec::new();
    for k in ["pay-1", "pay-2"] {
        match engine
            .execute_payment(&agent_p(), &w.execute(k))
            .await
            .expect("execute")
        {
            PaymentOutcome::Scheduled { attempt, .. } => ids.push(attempt.id),
            other => panic!("{other:?}"),
        }
    }
    // Corrupt the first row behind the adapter's back.
    {
        let conn = rusqlite::Connection::open(&path).expect("open");
        let n = conn
            .execute(
                "UPDATE review_queue SET body = 'not json' WHERE attempt_id = ?1",
                [ids[0].as_str()],
            )
            .expect("update");
        assert_eq!(n, 1);
    }
    advance(&w, 30);
    let runs = engine.run_due_reviews(10);
    let runs = runs.await;
    let sent = w.psp.calls(Op::Authorize);
    let _ = std::fs::remove_dir_all(&dir);
    let runs = runs.expect("a corrupt row fails its entry, not the whole run");
    assert!(
        runs.iter()
            .any(|r| r.attempt_id == ids[1] && matches!(r.outcome, Ok(ReviewResult::Sent(_)))),
        "{runs:?}"
    );
    assert_eq!(sent, 1);
}

// ---------------------------------------------------------------------------------------------
// Concurrency, transient failures and the hold
// ---------------------------------------------------------------------------------------------

/// After a transient failure released the hold, two instances run the due payment at once:
/// both may try to place the hold again; exactly one sends, and the budget is held once. (I2, I3)
#[tokio::test]
async fn two_instances_after_a_transient_failure_hold_once_and_send_once() {
    for round in 0..10 {
        let h = hostile_world().await;
        let w = &h.w;
        let a = schedule(w, &format!("pay-{round}")).await;
        w.psp.inject(Some(Op::Authorize), Fault::Transient);
        advance(w, 30);
        let runs = w.engine.run_due_reviews(10).await.expect("run");
        assert!(
            matches!(&runs[0].outcome, Ok(ReviewResult::Postponed { .. })),
            "{:?}",
            runs[0].outcome
        );
        assert_eq!(held(w).await, 0);
        advance(w, 30);
        let (e1, e2) = (rebuilt(&h), rebuilt(&h));
        let (r1, r2) = tokio::join!(
            tokio::spawn(async move { e1.run_due_reviews(10).await }),
            tokio::spawn(async move { e2.run_due_reviews(10).await })
        );
        let _ = (r1.expect("task"), r2.expect("task"));
        // A run that lost with an error leaves the entry for the next run: let it settle.
        let _ = rebuilt(&h).run_due_reviews(10).await;
        let end = attempt(w, &a.id).await;
        assert_eq!(end.status, AttemptStatus::Authorized, "round {round}");
        assert_eq!(auths(w, &a), 1, "round {round}");
        assert_eq!(held(w).await, 14400, "round {round}: held once");
        assert_eq!(entry_state(&h.queue, &a.id).await, ReviewState::Sent);
    }
}

/// A PSP that fails transiently every time: the payment is tried `MAX_REVIEW_TRIES` times,
/// then withdrawn with its hold released; the sweep in between never takes the waiting
/// payment's state away, and the buyer is never charged. (I2, I13)
#[tokio::test]
async fn a_psp_that_always_fails_transiently_ends_withdrawn_without_a_leaked_hold() {
    let h = hostile_world().await;
    let w = &h.w;
    let a = schedule(w, "pay-1").await;
    let mut last = None;
    for i in 0..MAX_REVIEW_TRIES {
        w.psp.inject(Some(Op::Authorize), Fault::Transient);
        advance(w, 30);
        // The sweep past the lease between tries: a postponed payment is not an orphan.
        advance(w, 120);
        w.engine.reconcile_pending(100).await.expect("sweep");
        let runs = w.engine.run_due_reviews(10).await.expect("run");
        assert_eq!(runs.len(), 1, "try {i}");
        last = Some(format!("{:?}", runs[0].outcome));
    }
    let last = last.expect("ran");
    assert!(last.contains("Withdrawn"), "{last}");
    assert_eq!(w.psp.calls(Op::Authorize), MAX_REVIEW_TRIES);
    assert_eq!(held(w).await, 0);
    assert_eq!(attempt(w, &a.id).await.status, AttemptStatus::Cancelled);
    assert_eq!(entry_state(&h.queue, &a.id).await, ReviewState::Cancelled);
    assert!(w.psp.payments().is_empty(), "nothing processed");
}

/// The PSP delivers the authorization twice (a proxy retry): one payment at the PSP, one hold. (I3)
#[tokio::test]
async fn a_duplicated_delivery_of_the_send_charges_once() {
    let h = hostile_world().await;
    let w = &h.w;
    let a = schedule(w, "pay-1").await;
    w.psp.inject(Some(Op::Authorize), Fault::DuplicateDelivery);
    advance(w, 30);
    let runs = w.engine.run_due_reviews(10).await.expect("run");
    assert!(
        matches!(&runs[0].outcome, Ok(ReviewResult::Sent(_))),
        "{:?}",
        runs[0].outcome
    );
    assert_eq!(common::engine::psp_money(&w.psp), 14400);
    assert_eq!(held(w).await, 14400);
    assert_eq!(attempt(w, &a.id).await.status, AttemptStatus::Authorized);
}

/// A cancel and two runs at once, many rounds: the payment is either cancelled (nothing sent,
/// nothing held) or sent once (held once): never both, never neither. (I1, I3)
#[tokio::test]
async fn a_cancel_racing_two_runs_ends_cancelled_xor_sent() {
    for round in 0..15 {
        let h = hostile_world().await;
        let w = &h.w;
        let a = schedule(w, &format!("pay-{round}")).await;
        advance(w, 30);
        let (e1, e2, c) = (rebuilt(&h), rebuilt(&h), rebuilt(&h));
        let id = a.id.clone();
        let (_r1, _r2, cancel) = tokio::join!(
            tokio::spawn(async move { e1.run_due_reviews(10).await }),
            tokio::spawn(async move { e2.run_due_reviews(10).await }),
            tokio::spawn(async move { c.cancel_review(&buyer_p(), &id).await })
        );
        let cancelled = cancel.expect("task").is_ok();
        let _ = rebuilt(&h).run_due_reviews(10).await;
        let end = attempt(w, &a.id).await;
        if cancelled {
            assert_eq!(end.status, AttemptStatus::Cancelled, "round {round}");
            assert_eq!(w.psp.calls(Op::Authorize), 0, "round {round}");
            assert_eq!(held(w).await, 0, "round {round}");
            assert_eq!(entry_state(&h.queue, &a.id).await, ReviewState::Cancelled);
        } else {
            assert_eq!(end.status, AttemptStatus::Authorized, "round {round}");
            assert_eq!(auths(w, &a), 1, "round {round}");
            assert_eq!(held(w).await, 14400, "round {round}");
            assert_eq!(entry_state(&h.queue, &a.id).await, ReviewState::Sent);
        }
    }
}

/// The buyer's cancel is answered `Ok` while the queue failed to close the entry: until the
/// entry's due time (up to 24 h) the buyer's "Waiting for you" page (`pending_for`) still lists
/// the cancelled purchase as "about to be paid", and its Cancel button answers 409. An `Ok`
/// must mean the entry is closed, or the cancel must report the queue's failure.
#[tokio::test]
async fn a_cancel_answered_ok_leaves_no_pending_entry_behind() {
    let h = hostile_world().await;
    let w = &h.w;
    let a = schedule(w, "pay-1").await;
    h.queue.faults.cancel_fails.store(1, Ordering::SeqCst);
    let answer = w.engine.cancel_review(&buyer_p(), &a.id).await;
    assert_eq!(attempt(w, &a.id).await.status, AttemptStatus::Cancelled);
    let listed = h
        .queue
        .pending_for(&examples::buyer(), 50)
        .await
        .expect("list")
        .iter()
        .any(|e| e.attempt_id == a.id);
    assert!(
        answer.is_err() || !listed,
        "cancel answered Ok but the purchase is still listed as about to be paid"
    );
}
