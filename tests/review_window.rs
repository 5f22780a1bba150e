//! The review window: an agent's non-urgent payment is held and scheduled, sent after the
//! window by `run_due_reviews`, or cancelled by its buyer; crashes, concurrent runs, races with
//! the cancel, suspensions during the window, a slow PSP and a clock going backwards.
#![cfg(all(feature = "testkit", feature = "sqlite"))]

mod common;
#[allow(unused_imports)]
use common::principals::*;

use std::sync::Arc;
use std::time::Duration;

use agent_mandate::adapters::memory::MemoryReviewQueue;
use agent_mandate::domain::{
    AttemptStatus, AuditKind, Party, PaymentAttempt, Principal, Text, Urgency,
};
use agent_mandate::engine::{
    Controls, Engine, EngineConfig, EngineError, PaymentOutcome, ReviewResult, SetSuspension,
};
use agent_mandate::ports::{Ports, ReviewQueue, ReviewState};
use agent_mandate::testkit::Op;
use common::engine::{backpack_spec, key, world_with, World};

fn config() -> EngineConfig {
    EngineConfig::default()
        .with_controls(Controls::off().with_review_window(Some(Default::default())))
}

async fn review_world() -> (World, MemoryReviewQueue) {
    let w = world_with(config(), backpack_spec(true)).await;
    let queue = MemoryReviewQueue::new();
    let engine = w.engine.clone().with_reviews(Arc::new(queue.clone()));
    (World { engine, ..w }, queue)
}

/// Another engine over the same ports and queue: a restart, or a second instance.
fn rebuilt(w: &World, queue: &MemoryReviewQueue) -> Engine {
    Engine::new(w.mem.ports.clone(), config())
        .expect("engine")
        .with_reviews(Arc::new(queue.clone()))
}

async fn schedule(w: &World, k: &str) -> PaymentAttempt {
    match w
        .engine
        .execute_payment(&agent_p(), &w.execute(k))
        .await
        .expect("execute")
    {
        PaymentOutcome::Scheduled {
            attempt,
            until,
            decision,
        } => {
            assert_eq!(attempt.status, AttemptStatus::AuthorityValidated);
            assert!(decision.is_some_and(|d| d.is_allowed()));
            assert_eq!(
                until,
                w.mem.clock.now_for_test() + chrono::Duration::seconds(30)
            );
            attempt
        }
        other => panic!("expected a scheduled payment, got {other:?}"),
    }
}

trait Now {
    fn now_for_test(&self) -> chrono::DateTime<chrono::Utc>;
}
impl Now for agent_mandate::adapters::memory::ManualClock {
    fn now_for_test(&self) -> chrono::DateTime<chrono::Utc> {
        agent_mandate::ports::Clock::now(self)
    }
}

async fn held(w: &World) -> i64 {
    w.usage().await.held.minor_units()
}

fn review_steps(w: &World) -> Vec<String> {
    w.mem
        .audit
        .events()
        .iter()
        .filter_map(|e| match e.event().ok()?.kind {
            AuditKind::Review { step, .. } => Some(step),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn a_non_urgent_payment_waits_its_window_then_goes_to_the_psp_once() {
    let (w, _queue) = review_world().await;
    let a = schedule(&w, "pay-1").await;
    assert_eq!(
        w.psp.calls(Op::Authorize),
        0,
        "nothing is sent in the window"
    );
    assert_eq!(held(&w).await, 14400, "the hold is placed at scheduling");
    w.mem.clock.advance(chrono::Duration::seconds(29));
    assert!(
        w.engine.run_due_reviews(10).await.expect("run").is_empty(),
        "not due yet"
    );
    assert_eq!(w.psp.calls(Op::Authorize), 0);
    w.mem.clock.advance(chrono::Duration::seconds(1));
    let runs = w.engine.run_due_reviews(10).await.expect("run");
    assert_eq!(runs.len(), 1);
    match &runs[0].outcome {
        Ok(ReviewResult::Sent(sent)) => assert_eq!(sent.status, AttemptStatus::Authorized),
        other => panic!("expected sent, got {other:?}"),
    }
    assert_eq!(w.psp.calls(Op::Authorize), 1);
    assert_eq!(
        w.psp
            .authorizations_for(&a.provider_key(agent_mandate::domain::Operation::Authorize)),
        1
    );
    assert!(w
        .engine
        .run_due_reviews(10)
        .await
        .expect("again")
        .is_empty());
    assert_eq!(w.psp.calls(Op::Authorize), 1, "a second run sends nothing");
    assert_eq!(review_steps(&w), vec!["scheduled", "sent"]);
    // A retry of the key replays: no PSP call.
    let replay = w
        .engine
        .execute_payment(&agent_p(), &w.execute("pay-1"))
        .await
        .expect("replay");
    assert!(replay.is_replay());
    assert_eq!(w.psp.calls(Op::Authorize), 1);
}

#[tokio::test]
async fn an_urgent_payment_a_person_or_no_control_skip_the_window() {
    let (w, queue) = review_world().await;
    let mut cmd = w.execute("urgent");
    cmd.request.urgency = Some(Urgency::TimeSensitive);
    let out = w
        .engine
        .execute_payment(&agent_p(), &cmd)
        .await
        .expect("execute");
    assert!(matches!(out, PaymentOutcome::Done { .. }), "{out:?}");
    assert_eq!(w.psp.calls(Op::Authorize), 1);
    // Routine is not urgent.
    let mut cmd = w.execute("routine");
    cmd.request.urgency = Some(Urgency::Routine);
    let out = w
        .engine
        .execute_payment(&agent_p(), &cmd)
        .await
        .expect("execute");
    assert!(matches!(out, PaymentOutcome::Scheduled { .. }), "{out:?}");
    // The control off (the default), with a queue attached: no window.
    let off = Engine::new(w.mem.ports.clone(), EngineConfig::default())
        .expect("engine")
        .with_reviews(Arc::new(queue.clone()));
    let out = off
        .execute_payment(&agent_p(), &w.execute("off"))
        .await
        .expect("execute");
    assert!(matches!(out, PaymentOutcome::Done { .. }), "{out:?}");
    assert!(Controls::default().review_window().is_none());
    assert!(Controls::recommended().review_window().is_some());
}

#[tokio::test]
async fn the_buyer_cancels_in_the_window_the_hold_is_released_and_nothing_is_sent() {
    let (w, queue) = review_world().await;
    let a = schedule(&w, "pay-1").await;
    let cancelled = w
        .engine
        .cancel_review(&buyer_p(), &a.id)
        .await
        .expect("cancel");
    assert_eq!(cancelled.status, AttemptStatus::Cancelled);
    assert_eq!(held(&w).await, 0, "the hold is released");
    assert_eq!(
        queue
            .entry(&a.id)
            .await
            .expect("entry")
            .expect("kept")
            .state,
        ReviewState::Cancelled
    );
    w.mem.clock.advance(chrono::Duration::seconds(60));
    assert!(w.engine.run_due_reviews(10).await.expect("run").is_empty());
    assert_eq!(w.psp.calls(Op::Authorize), 0);
    assert_eq!(review_steps(&w), vec!["scheduled", "cancelled"]);
    // Cancelling twice: refused, nothing changes.
    assert!(matches!(
        w.engine.cancel_review(&buyer_p(), &a.id).await,
        Err(EngineError::Transition(_))
    ));
}

#[tokio::test]
async fn only_the_buyer_or_an_operator_may_cancel() {
    let (w, _queue) = review_world().await;
    let a = schedule(&w, "pay-1").await;
    let other_buyer = Principal::Buyer("buyer_999".parse().expect("id"));
    for who in [agent_p(), other_buyer, system_p()] {
        assert!(
            matches!(
                w.engine.cancel_review(&who, &a.id).await,
                Err(EngineError::NotPermitted { .. })
            ),
            "{who} may not cancel"
        );
    }
    assert_eq!(held(&w).await, 14400, "a refused cancel changes nothing");
    let b = schedule(&w, "pay-2").await;
    w.engine
        .cancel_review(&operator_p(), &b.id)
        .await
        .expect("operator cancels");
    assert_eq!(held(&w).await, 14400);
}

#[tokio::test]
async fn cancel_after_send_is_refused_and_changes_nothing() {
    let (w, _queue) = review_world().await;
    let a = schedule(&w, "pay-1").await;
    w.mem.clock.advance(chrono::Duration::seconds(30));
    w.engine.run_due_reviews(10).await.expect("run");
    let err = w
        .engine
        .cancel_review(&buyer_p(), &a.id)
        .await
        .expect_err("too late");
    assert!(matches!(err, EngineError::Transition(_)), "{err:?}");
    let now = w
        .engine
        .ports()
        .store
        .attempt(&a.id)
        .await
        .expect("read")
        .expect("kept");
    assert_eq!(now.status, AttemptStatus::Authorized);
    assert_eq!(held(&w).await, 14400);
}

#[tokio::test]
async fn credentials_killed_during_the_window_withdraw_the_payment() {
    let (w, _queue) = review_world().await;
    let a = schedule(&w, "pay-1").await;
    w.engine
        .suspend_credentials(
            &operator_p(),
            &agent_mandate::domain::examples::agent().id,
            true,
        )
        .await
        .expect("kill switch");
    w.mem.clock.advance(chrono::Duration::seconds(30));
    let runs = w.engine.run_due_reviews(10).await.expect("run");
    match &runs[0].outcome {
        Ok(ReviewResult::Withdrawn { reason }) => {
            assert!(reason.contains("CREDENTIAL_NOT_USABLE"), "{reason}")
        }
        other => panic!("expected withdrawn, got {other:?}"),
    }
    assert_eq!(w.psp.calls(Op::Authorize), 0);
    assert_eq!(held(&w).await, 0);
    let now = w
        .engine
        .ports()
        .store
        .attempt(&a.id)
        .await
        .expect("read")
        .expect("kept");
    assert_eq!(now.status, AttemptStatus::Cancelled);
    assert_eq!(review_steps(&w), vec!["scheduled", "withdrawn"]);
}

#[tokio::test]
async fn an_actor_suspended_during_the_window_is_not_paid() {
    let (w, _queue) = review_world().await;
    schedule(&w, "pay-1").await;
    w.engine
        .set_suspension(
            &operator_p(),
            &SetSuspension::new(
                key("suspend"),
                Party::Actor(agent_mandate::domain::examples::agent().id),
                true,
                Text::new("compromised").expect("text"),
            ),
        )
        .await
        .expect("suspend");
    w.mem.clock.advance(chrono::Duration::seconds(30));
    let runs = w.engine.run_due_reviews(10).await.expect("run");
    assert!(
        matches!(&runs[0].outcome, Ok(ReviewResult::Withdrawn { reason }) if reason.contains("ACTOR_SUSPENDED")),
        "{:?}",
        runs[0].outcome
    );
    assert_eq!(w.psp.calls(Op::Authorize), 0);
    assert_eq!(held(&w).await, 0);
}

#[tokio::test]
async fn a_restart_between_schedule_and_run_neither_loses_nor_doubles_the_payment() {
    let (w, queue) = review_world().await;
    let a = schedule(&w, "pay-1").await;
    drop(w.engine.clone());
    // Past the idempotency lease: the sweep must not take the waiting hold for an orphan.
    w.mem.clock.advance(chrono::Duration::seconds(90));
    let restarted = rebuilt(&w, &queue);
    restarted.reconcile_pending(100).await.expect("sweep");
    assert_eq!(
        held(&w).await,
        14400,
        "the sweep keeps the hold of a payment in review"
    );
    let runs = restarted.run_due_reviews(10).await.expect("run");
    assert!(
        matches!(&runs[0].outcome, Ok(ReviewResult::Sent(_))),
        "{:?}",
        runs[0].outcome
    );
    assert_eq!(
        w.psp
            .authorizations_for(&a.provider_key(agent_mandate::domain::Operation::Authorize)),
        1
    );
    assert!(rebuilt(&w, &queue)
        .run_due_reviews(10)
        .await
        .expect("again")
        .is_empty());
    assert_eq!(w.psp.calls(Op::Authorize), 1);
}

#[tokio::test]
async fn two_instances_running_due_reviews_at_once_send_once() {
    let (w, queue) = review_world().await;
    let mut ids = Vec::new();
    for i in 0..6 {
        ids.push(schedule(&w, &format!("pay-{i}")).await.id);
    }
    w.mem.clock.advance(chrono::Duration::seconds(30));
    let (e1, e2) = (rebuilt(&w, &queue), rebuilt(&w, &queue));
    let (r1, r2) = tokio::join!(
        tokio::spawn(async move { e1.run_due_reviews(10).await }),
        tokio::spawn(async move { e2.run_due_reviews(10).await })
    );
    let sent = r1
        .expect("task")
        .expect("run")
        .into_iter()
        .chain(r2.expect("task").expect("run"))
        .filter(|r| matches!(r.outcome, Ok(ReviewResult::Sent(_))))
        .count();
    assert_eq!(sent, 6, "each payment is sent by exactly one instance");
    assert_eq!(w.psp.calls(Op::Authorize), 6);
    for id in &ids {
        let a = w
            .engine
            .ports()
            .store
            .attempt(id)
            .await
            .expect("read")
            .expect("kept");
        assert_eq!(
            w.psp
                .authorizations_for(&a.provider_key(agent_mandate::domain::Operation::Authorize)),
            1
        );
    }
}

#[tokio::test]
async fn a_cancel_racing_the_send_ends_in_exactly_one_of_them() {
    for round in 0..20 {
        let (w, queue) = review_world().await;
        let a = schedule(&w, &format!("pay-{round}")).await;
        w.mem.clock.advance(chrono::Duration::seconds(30));
        let sender = rebuilt(&w, &queue);
        let canceller = rebuilt(&w, &queue);
        let id = a.id.clone();
        let (sent, cancelled) = tokio::join!(
            tokio::spawn(async move { sender.run_due_reviews(10).await }),
            tokio::spawn(async move { canceller.cancel_review(&buyer_p(), &id).await })
        );
        let sent = sent
            .expect("task")
            .expect("run")
            .iter()
            .any(|r| matches!(r.outcome, Ok(ReviewResult::Sent(_))));
        let cancelled = cancelled.expect("task").is_ok();
        assert!(
            sent ^ cancelled,
            "round {round}: sent {sent}, cancelled {cancelled}"
        );
        let end = w
            .engine
            .ports()
            .store
            .attempt(&a.id)
            .await
            .expect("read")
            .expect("kept");
        if sent {
            assert_eq!(end.status, AttemptStatus::Authorized);
            assert_eq!(held(&w).await, 14400);
            assert_eq!(w.psp.calls(Op::Authorize), 1);
        } else {
            assert_eq!(end.status, AttemptStatus::Cancelled);
            assert_eq!(held(&w).await, 0);
            assert_eq!(w.psp.calls(Op::Authorize), 0);
        }
        let entry = queue.entry(&a.id).await.expect("entry").expect("kept");
        assert_eq!(
            entry.state,
            if sent {
                ReviewState::Sent
            } else {
                ReviewState::Cancelled
            }
        );
    }
}

#[tokio::test]
async fn a_clock_going_backwards_sends_nothing_early() {
    let (w, _queue) = review_world().await;
    schedule(&w, "pay-1").await;
    w.mem.clock.advance(chrono::Duration::seconds(-3600));
    assert!(w.engine.run_due_reviews(10).await.expect("run").is_empty());
    w.mem.clock.advance(chrono::Duration::seconds(3600 + 29));
    assert!(w.engine.run_due_reviews(10).await.expect("run").is_empty());
    assert_eq!(w.psp.calls(Op::Authorize), 0);
    w.mem.clock.advance(chrono::Duration::seconds(1));
    assert_eq!(w.engine.run_due_reviews(10).await.expect("run").len(), 1);
    assert_eq!(w.psp.calls(Op::Authorize), 1);
}

#[tokio::test]
async fn a_transient_psp_failure_postpones_and_the_next_run_holds_again_and_sends_once() {
    let (w, _queue) = review_world().await;
    let a = schedule(&w, "pay-1").await;
    w.psp.inject(
        Some(Op::Authorize),
        agent_mandate::testkit::Fault::Transient,
    );
    w.mem.clock.advance(chrono::Duration::seconds(30));
    let runs = w.engine.run_due_reviews(10).await.expect("run");
    assert!(
        matches!(&runs[0].outcome, Ok(ReviewResult::Postponed { .. })),
        "{:?}",
        runs[0].outcome
    );
    assert_eq!(held(&w).await, 0, "a transient failure releases the hold");
    w.mem.clock.advance(chrono::Duration::seconds(30));
    let runs = w.engine.run_due_reviews(10).await.expect("run");
    assert!(
        matches!(&runs[0].outcome, Ok(ReviewResult::Sent(_))),
        "{:?}",
        runs[0].outcome
    );
    assert_eq!(held(&w).await, 14400, "held again for the send");
    assert_eq!(
        w.psp
            .authorizations_for(&a.provider_key(agent_mandate::domain::Operation::Authorize)),
        1
    );
}

#[tokio::test]
async fn a_psp_that_never_answers_in_time_leaves_the_payment_to_reconciliation_not_a_resend() {
    let (w, queue) = review_world().await;
    let a = schedule(&w, "pay-1").await;
    w.psp.inject(
        Some(Op::Authorize),
        agent_mandate::testkit::Fault::TimeoutAfterEffect,
    );
    w.mem.clock.advance(chrono::Duration::seconds(30));
    let runs = w.engine.run_due_reviews(10).await.expect("run");
    let after = w
        .engine
        .ports()
        .store
        .attempt(&a.id)
        .await
        .expect("read")
        .expect("kept");
    assert_eq!(
        after.status,
        AttemptStatus::Ambiguous,
        "{:?}",
        runs[0].outcome
    );
    assert_eq!(
        queue
            .entry(&a.id)
            .await
            .expect("entry")
            .expect("kept")
            .state,
        ReviewState::Sent
    );
    w.mem.clock.advance(chrono::Duration::seconds(60));
    assert!(rebuilt(&w, &queue)
        .run_due_reviews(10)
        .await
        .expect("run")
        .is_empty());
    assert_eq!(
        w.psp
            .authorizations_for(&a.provider_key(agent_mandate::domain::Operation::Authorize)),
        1
    );
    assert_eq!(
        held(&w).await,
        14400,
        "the ambiguous attempt keeps its hold (I5)"
    );
}

/// A PSP slower than every timeout while another instance runs: the second instance sees the
/// attempt submitted and closes the entry without a second call.
#[tokio::test]
async fn a_slow_psp_during_run_due_does_not_let_another_instance_send_again() {
    use agent_mandate::domain::ProviderReport;
    use agent_mandate::ports::{
        AuthorizeRequest, CaptureRequest, Lookup, PaymentProvider, ProviderError, RefundRequest,
        VoidRequest,
    };
    #[derive(Debug)]
    struct Slow {
        inner: Arc<agent_mandate::testkit::FakePsp>,
        gate: Arc<tokio::sync::Semaphore>,
        entered: Arc<tokio::sync::Notify>,
    }
    #[async_trait::async_trait]
    impl PaymentProvider for Slow {
        fn deadline(&self) -> Duration {
            Duration::from_secs(10)
        }
        async fn authorize(&self, r: &AuthorizeRequest) -> Result<ProviderReport, ProviderError> {
            self.entered.notify_one();
            let _p = self.gate.acquire().await.expect("gate");
            self.inner.authorize(r).await
        }
        async fn capture(&self, r: &CaptureRequest) -> Result<ProviderReport, ProviderError> {
            self.inner.capture(r).await
        }
        async fn void(&self, r: &VoidRequest) -> Result<ProviderReport, ProviderError> {
            self.inner.void(r).await
        }
        async fn refund(&self, r: &RefundRequest) -> Result<ProviderReport, ProviderError> {
            self.inner.refund(r).await
        }
        async fn lookup(&self, l: &Lookup) -> Result<Option<ProviderReport>, ProviderError> {
            self.inner.lookup(l).await
        }
    }
    let (w, queue) = review_world().await;
    let a = schedule(&w, "pay-1").await;
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let entered = Arc::new(tokio::sync::Notify::new());
    let slow = Arc::new(Slow {
        inner: w.psp.clone(),
        gate: gate.clone(),
        entered: entered.clone(),
    });
    let ports = Ports {
        provider: slow,
        ..w.mem.ports.clone()
    };
    let first = Engine::new(ports.clone(), config())
        .expect("engine")
        .with_reviews(Arc::new(queue.clone()));
    let second = Engine::new(ports, config())
        .expect("engine")
        .with_reviews(Arc::new(queue.clone()));
    w.mem.clock.advance(chrono::Duration::seconds(30));
    let running = tokio::spawn(async move { first.run_due_reviews(10).await });
    entered.notified().await;
    // Far past the PSP's deadline and the lease, while the first call still hangs.
    w.mem.clock.advance(chrono::Duration::seconds(600));
    let runs = second.run_due_reviews(10).await.expect("second run");
    assert!(
        matches!(
            &runs[0].outcome,
            Ok(ReviewResult::Closed {
                status: AttemptStatus::PendingProviderResponse
            })
        ),
        "{:?}",
        runs[0].outcome
    );
    gate.add_permits(1);
    running.await.expect("task").expect("first run");
    assert_eq!(
        w.psp
            .authorizations_for(&a.provider_key(agent_mandate::domain::Operation::Authorize)),
        1
    );
    assert_eq!(w.psp.calls(Op::Authorize), 1);
}

#[tokio::test]
async fn sqlite_a_restart_between_schedule_and_run_sends_once() {
    use agent_mandate::adapters::sqlite::{SqliteConfig, SqliteDatabase};
    let dir = std::env::temp_dir().join(format!("am-review-window-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("store.db");
    let _ = std::fs::remove_file(&path);
    let w = world_with(config(), backpack_spec(true)).await;
    let open = || {
        let db = SqliteDatabase::open(SqliteConfig::file(&path)).expect("db");
        let ports = Ports {
            store: Arc::new(db.store()),
            ..w.mem.ports.clone()
        };
        (db, ports)
    };
    let a_id = {
        let (db, ports) = open();
        let engine = Engine::new(ports, config())
            .expect("engine")
            .with_reviews(Arc::new(db.review_queue()));
        // The mandate lives in the SQLite store for this engine.
        engine
            .create_mandate(
                &buyer_p(),
                &agent_mandate::engine::CreateMandate::new(key("m"), backpack_spec(true)),
            )
            .await
            .expect("mandate");
        match engine
            .execute_payment(&agent_p(), &w.execute("pay-1"))
            .await
            .expect("execute")
        {
            PaymentOutcome::Scheduled { attempt, .. } => attempt.id,
            other => panic!("{other:?}"),
        }
    };
    w.mem.clock.advance(chrono::Duration::seconds(30));
    let (db, ports) = open();
    let engine = Engine::new(ports, config())
        .expect("engine")
        .with_reviews(Arc::new(db.review_queue()));
    let runs = engine.run_due_reviews(10).await.expect("run");
    assert!(
        matches!(&runs[0].outcome, Ok(ReviewResult::Sent(_))),
        "{:?}",
        runs[0].outcome
    );
    assert!(engine.run_due_reviews(10).await.expect("again").is_empty());
    let a = engine
        .ports()
        .store
        .attempt(&a_id)
        .await
        .expect("read")
        .expect("kept");
    assert_eq!(
        w.psp
            .authorizations_for(&a.provider_key(agent_mandate::domain::Operation::Authorize)),
        1
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Review window and a circuit breaker that opens at the first failed authentication.
async fn review_world_with_breaker() -> World {
    let minutes = Duration::from_secs(600);
    let controls = Controls::off()
        .with_review_window(Some(Default::default()))
        .with_auth_failures(Some(
            agent_mandate::engine::Breaker::new(
                agent_mandate::engine::Rate::new(0, minutes).expect("rate"),
                minutes,
            )
            .expect("breaker"),
        ));
    let w = world_with(
        EngineConfig::default().with_controls(controls),
        backpack_spec(true),
    )
    .await;
    let engine = w
        .engine
        .clone()
        .with_reviews(Arc::new(MemoryReviewQueue::new()));
    World { engine, ..w }
}

/// A breaker that opens while a payment waits in its window stops that payment at the end
/// of the window: the run decides again with the breaker, and nothing reaches the PSP (I1).
#[tokio::test]
async fn a_breaker_opened_during_the_window_withdraws_the_payment() {
    let w = review_world_with_breaker().await;
    let a = schedule(&w, "pay-1").await;
    // An urgent payment of the same agent fails its authentication: the breaker opens.
    w.psp
        .inject(Some(Op::Authorize), agent_mandate::testkit::Fault::Invalid);
    let mut cmd = w.execute("urgent");
    cmd.request.urgency = Some(Urgency::TimeSensitive);
    let _ = w.engine.execute_payment(&agent_p(), &cmd).await;
    let calls = w.psp.calls(Op::Authorize);
    assert_eq!(calls, 1);
    w.mem.clock.advance(chrono::Duration::seconds(30));
    let runs = w.engine.run_due_reviews(10).await.expect("run");
    match &runs[0].outcome {
        Ok(ReviewResult::Withdrawn { reason }) => {
            assert!(reason.contains("CIRCUIT_OPEN"), "{reason}")
        }
        other => panic!("expected withdrawn, got {other:?}"),
    }
    assert_eq!(w.psp.calls(Op::Authorize), calls, "nothing sent");
    assert_eq!(held(&w).await, 0, "its hold released");
    let now = w
        .engine
        .ports()
        .store
        .attempt(&a.id)
        .await
        .expect("read")
        .expect("kept");
    assert_eq!(now.status, AttemptStatus::Cancelled);
}

/// A failed authentication of a payment sent from its window counts against the agent like
/// any other: the next payment finds the breaker open (I1).
#[tokio::test]
async fn a_failed_authentication_sent_from_the_window_counts_on_the_breaker() {
    let w = review_world_with_breaker().await;
    schedule(&w, "pay-1").await;
    w.psp
        .inject(Some(Op::Authorize), agent_mandate::testkit::Fault::Invalid);
    w.mem.clock.advance(chrono::Duration::seconds(30));
    let runs = w.engine.run_due_reviews(10).await.expect("run");
    assert_eq!(runs.len(), 1);
    assert_eq!(w.psp.calls(Op::Authorize), 1, "sent once, and refused");
    let mut cmd = w.execute("urgent");
    cmd.request.urgency = Some(Urgency::TimeSensitive);
    let out = w
        .engine
        .execute_payment(&agent_p(), &cmd)
        .await
        .expect("answered");
    assert!(
        matches!(&out, PaymentOutcome::Refused(d) if d.has(agent_mandate::domain::BlockerCode::CircuitOpen)),
        "{out:?}"
    );
    assert_eq!(w.psp.calls(Op::Authorize), 1, "refused before the PSP");
}
