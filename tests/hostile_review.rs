//! A hostile review of the money-safety fixes: each test is one attack, named for what it does
//! and the invariant it defends. Tests marked "Found by review" failed when written and were
//! fixed; the others are guards. One open finding is ignored with its reason.
#![cfg(feature = "testkit")]

mod common;
#[allow(unused_imports)]
use common::principals::*;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;

use agent_mandate::domain::{
    AttemptEvent, AttemptStatus, AuditEvent, ChainedEvent, Currency, Money, PaymentAttempt,
    Principal, ProviderReport, ProviderStatus,
};
use agent_mandate::engine::{Engine, EngineConfig, EngineError, PaymentOutcome, TRAIL_CHECK_LIMIT};
use agent_mandate::ports::{
    AuditError, AuditReceipt, AuditSink, AuthorizeRequest, CaptureRequest, Clock, HoldRequest,
    Lookup, PaymentProvider, Ports, ProviderError, RefundRequest, Store, VoidRequest,
};
use agent_mandate::testkit::{FakePsp, Op};
use common::engine::{agent_capture, agent_void, capped_world, eur, psp_money, World};

/// A PSP that declares a 10 s deadline but keeps its first authorization in its queue until
/// the test opens the gate. The request is processed by a task of the PSP's own, so it lands
/// even when the engine's call is dropped (the process that sent it crashed).
#[derive(Debug)]
struct QueuedPsp {
    inner: Arc<FakePsp>,
    gate: Arc<tokio::sync::Semaphore>,
    entered: tokio::sync::Notify,
    processed: Arc<tokio::sync::Notify>,
    first: AtomicBool,
}

impl QueuedPsp {
    fn new(inner: Arc<FakePsp>) -> Arc<QueuedPsp> {
        Arc::new(QueuedPsp {
            inner,
            gate: Arc::new(tokio::sync::Semaphore::new(0)),
            entered: tokio::sync::Notify::new(),
            processed: Arc::new(tokio::sync::Notify::new()),
            first: AtomicBool::new(false),
        })
    }
}

#[async_trait]
impl PaymentProvider for QueuedPsp {
    fn deadline(&self) -> Duration {
        Duration::from_secs(10)
    }
    async fn authorize(&self, r: &AuthorizeRequest) -> Result<ProviderReport, ProviderError> {
        if self.first.swap(true, Ordering::SeqCst) {
            return self.inner.authorize(r).await;
        }
        let inner = self.inner.clone();
        let gate = self.gate.clone();
        let processed = self.processed.clone();
        let r = r.clone();
        let task = tokio::spawn(async move {
            let _permit = gate.acquire().await.expect("gate");
            let out = inner.authorize(&r).await;
            processed.notify_one();
            out
        });
        self.entered.notify_one();
        task.await.expect("psp task")
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

/// Found by review (I2, I13). A PSP slower than its declared deadline, and a reconciliation sweep that
/// runs while the command that sent the authorization still holds its lease.
///
/// The sweep leaves a pending attempt to its command only until `submitted_at + deadline +
/// margin` (20 s), not until the command's lease ends (60 s). At 21 s the sweep's lookup finds
/// nothing, fails the attempt and releases its hold; a second payment takes the budget. Then
/// the first authorization lands. The late command still holds a valid lease, so its change is
/// refused with `StoreError::Conflict` (the compare and set on `pending`), not `Fenced`, and
/// `compensate_late_authorization` (which runs only on `Fenced`) never voids the
/// authorization: 288.00 EUR authorized on a 150.00 EUR lifetime cap.
#[tokio::test]
async fn sweep_inside_a_live_lease_fails_a_slow_submission_and_the_late_authorization_overspends() {
    let w = capped_world().await;
    let psp = QueuedPsp::new(w.psp.clone());
    let ports = Ports {
        provider: psp.clone(),
        ..w.mem.ports.clone()
    };
    let engine = Engine::new(ports, EngineConfig::default()).expect("engine");
    let slow = {
        let engine = engine.clone();
        let cmd = w.execute("pay-slow");
        tokio::spawn(async move { engine.execute_payment(&payer(&cmd), &cmd).await })
    };
    psp.entered.notified().await;

    // Past the submission's deadline (10 s + 10 s margin), well inside the 60 s lease.
    w.mem.clock.advance(chrono::Duration::seconds(21));
    let swept = engine.reconcile_pending(10).await.expect("sweep");
    assert_eq!(swept.len(), 1);
    let second = engine
        .execute_payment(&agent_p(), &w.execute("pay-second"))
        .await
        .expect("second payment");

    // The first authorization lands now.
    psp.gate.add_permits(1);
    let late = slow.await.expect("task");
    let first_status = swept[0].status;
    assert!(
        psp_money(&w.psp) <= 15_000,
        "I2: {} minor units held or taken at the PSP on a 150.00 EUR cap \
         (sweep left the first attempt {first_status:?}, second payment {:?}, late command {late:?})",
        psp_money(&w.psp),
        second.attempt().map(|a| a.status),
    );
}

/// Found by review (I2, I13). "Not found" now, "authorized" later: the process that sent the
/// authorization crashes (its future is dropped) while the request sits in the PSP's queue.
/// After the lease and the deadline the sweep's lookup finds nothing and fails the attempt,
/// releasing its hold. The PSP then processes the request (it ignored its declared deadline).
/// No later sweep looks at a failed attempt again, so the authorization stays at the PSP with
/// no budget behind it, forever, and unaudited; the cap is free for another payment.
#[tokio::test]
async fn not_found_then_authorized_after_a_crash_leaves_money_without_a_hold() {
    let w = capped_world().await;
    let psp = QueuedPsp::new(w.psp.clone());
    let ports = Ports {
        provider: psp.clone(),
        ..w.mem.ports.clone()
    };
    let engine = Engine::new(ports, EngineConfig::default()).expect("engine");
    let crashed = {
        let engine = engine.clone();
        let cmd = w.execute("pay-crash");
        tokio::spawn(async move { engine.execute_payment(&payer(&cmd), &cmd).await })
    };
    psp.entered.notified().await;
    crashed.abort(); // the process dies between two awaits
    let _ = crashed.await;

    w.mem.clock.advance(chrono::Duration::seconds(61));
    let swept = engine.reconcile_pending(10).await.expect("sweep");
    assert_eq!(swept[0].status, AttemptStatus::Failed, "past the deadline");

    // The PSP processes the queued request late.
    psp.gate.add_permits(1);
    psp.processed.notified().await;
    assert_eq!(w.psp.calls(Op::Authorize), 1);

    // Sweeps, flushes: nothing notices.
    w.mem.clock.advance(chrono::Duration::seconds(60));
    engine.reconcile_pending(10).await.expect("sweep");
    engine.reconcile_pending(10).await.expect("sweep");
    let usage = w.usage().await;
    let budgeted = usage.held.minor_units() + usage.spent.minor_units();
    assert!(
        psp_money(&w.psp) <= budgeted,
        "I2: the PSP holds {} minor units for a failed attempt whose hold was released \
         (ledger: held {}, spent {})",
        psp_money(&w.psp),
        usage.held,
        usage.spent
    );
}

/// Found by review (I2 budget liveness; I5's converse). A crash between `place_hold` and the
/// `submit` transition (two store writes, two transactions on a durable store) leaves an
/// attempt `authority_validated` with `submissions == 0` and a held hold. Nothing was sent to
/// the PSP. The sweep only looks at `authority_validated` attempts with `submissions > 0`, so
/// the hold is never released unless the caller retries that exact key: the mandate's budget
/// is lost for good.
#[tokio::test]
async fn crash_between_hold_and_submit_leaks_the_hold_past_every_sweep() {
    let w = capped_world().await;
    let now = w.mem.clock.now();
    // The state the crash leaves, written as `execute_started` writes it.
    let cmd = w.execute("pay-crash");
    let id = agent_mandate::engine::attempt_id_for(&cmd.request.actor.id, &cmd.key);
    let fresh = PaymentAttempt::new(
        id.clone(),
        cmd.request.clone(),
        cmd.credential.clone(),
        cmd.checkout.checkout_id().clone(),
        false,
        now,
    );
    let validated = fresh.apply(&AttemptEvent::Validate, now).expect("validate");
    w.mem
        .store
        .insert_attempt(&validated)
        .await
        .expect("insert");
    let submitted = validated.apply(&AttemptEvent::Submit, now).expect("submit");
    let chain = w.mem.store.chain(w.mandate.id()).await.expect("chain");
    w.mem
        .store
        .place_hold(&HoldRequest::on_chain(
            submitted.hold_id(),
            cmd.request.amount,
            now,
            &chain,
        ))
        .await
        .expect("hold");
    assert_eq!(w.usage().await.held, eur("144.00"));

    // Long after every lease and deadline, the operator's sweeps run.
    w.mem.clock.advance(chrono::Duration::hours(2));
    w.engine.reconcile_pending(100).await.expect("sweep");
    w.engine.purge_idempotency().await.expect("purge");
    w.engine.reconcile_pending(100).await.expect("sweep");
    assert_eq!(
        w.usage().await.held,
        eur("0.00"),
        "a hold for a request never sent is still held after every sweep"
    );
}

/// How a lying PSP rewrites its capture answer.
type Rewrite = Box<dyn Fn(ProviderReport) -> ProviderReport + Send>;

/// A PSP whose capture answers lie about what was captured.
struct LyingCapture {
    inner: Arc<FakePsp>,
    rewrite: Mutex<Option<Rewrite>>,
}

impl LyingCapture {
    fn new(
        inner: Arc<FakePsp>,
        rewrite: impl Fn(ProviderReport) -> ProviderReport + Send + 'static,
    ) -> Arc<LyingCapture> {
        Arc::new(LyingCapture {
            inner,
            rewrite: Mutex::new(Some(Box::new(rewrite))),
        })
    }
}

impl std::fmt::Debug for LyingCapture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LyingCapture")
    }
}

#[async_trait]
impl PaymentProvider for LyingCapture {
    fn deadline(&self) -> Duration {
        Duration::from_secs(10)
    }
    async fn authorize(&self, r: &AuthorizeRequest) -> Result<ProviderReport, ProviderError> {
        self.inner.authorize(r).await
    }
    async fn capture(&self, r: &CaptureRequest) -> Result<ProviderReport, ProviderError> {
        let report = self.inner.capture(r).await?;
        let rewrite = self.rewrite.lock().expect("lock").take();
        Ok(match rewrite {
            Some(f) => f(report),
            None => report,
        })
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

async fn authorized_then_lying_capture(
    rewrite: impl Fn(ProviderReport) -> ProviderReport + Send + 'static,
    amount: Option<Money>,
) -> (World, PaymentAttempt) {
    let w = capped_world().await;
    let psp = LyingCapture::new(w.psp.clone(), rewrite);
    let ports = Ports {
        provider: psp,
        ..w.mem.ports.clone()
    };
    let engine = Engine::new(ports, EngineConfig::default()).expect("engine");
    let paid = engine
        .execute_payment(&agent_p(), &w.execute("pay-1"))
        .await
        .expect("pay");
    let a = paid.attempt().expect("attempt").clone();
    assert_eq!(a.status, AttemptStatus::Authorized);
    let captured = engine
        .capture(&agent_p(), &agent_capture("capture-1", &a.id, amount))
        .await;
    let after = w
        .mem
        .store
        .attempt(&a.id)
        .await
        .expect("read")
        .expect("attempt");
    let _ = captured;
    (w, after)
}

/// Found by review (I13: no presumed outcome). The PSP answers a EUR capture with a report in USD.
/// `follow_up_result` cannot apply the report (another currency), so it falls back to "what
/// was asked" because the report's *status* says captured: the attempt is recorded captured
/// 144.00 EUR and the hold committed, on an answer that contradicts the request. An answer
/// the state machine refuses should make the attempt ambiguous (as `absorb` does for an
/// authorization), not confirm the request.
#[tokio::test]
async fn capture_answer_in_another_currency_is_not_taken_as_confirmation() {
    let (_w, after) = authorized_then_lying_capture(
        |mut r| {
            r.authorized = Money::parse("144.00", Currency::USD).expect("usd");
            r.captured = Money::parse("144.00", Currency::USD).expect("usd");
            r
        },
        None,
    )
    .await;
    assert_eq!(
        after.status,
        AttemptStatus::Ambiguous,
        "a USD capture report was recorded as {:?} {} ",
        after.status,
        after.captured
    );
}

/// Found by review (I2, I13). The PSP answers the capture of the 144.00 EUR authorization with
/// "captured 200.00 of 200.00" (more than was ever authorized or held). The report is refused
/// by the state machine (it exceeds the request), and `follow_up_result` records the capture
/// *as asked*: captured 144.00, 144.00 committed. The ledger shows less spend than the PSP
/// says it took; the evidence should leave the attempt ambiguous (and be reported), not be
/// replaced by the request.
#[tokio::test]
async fn capture_answer_for_more_than_authorized_is_not_recorded_as_asked() {
    let (w, after) = authorized_then_lying_capture(
        |mut r| {
            r.authorized = eur("200.00");
            r.captured = eur("200.00");
            r
        },
        None,
    )
    .await;
    let usage = w.usage().await;
    assert_eq!(
        after.status,
        AttemptStatus::Ambiguous,
        "recorded {:?} captured {}; ledger spent {} held {} while the PSP reports 200.00 captured",
        after.status,
        after.captured,
        usage.spent,
        usage.held
    );
}

/// A PSP that processes an authorization but answers "not found".
#[derive(Debug)]
struct NotFoundAnswer(Arc<FakePsp>);

#[async_trait]
impl PaymentProvider for NotFoundAnswer {
    fn deadline(&self) -> Duration {
        Duration::from_secs(10)
    }
    async fn authorize(&self, r: &AuthorizeRequest) -> Result<ProviderReport, ProviderError> {
        let report = self.0.authorize(r).await?;
        let zero = Money::zero(report.authorized.currency());
        Ok(ProviderReport {
            reference: None,
            status: ProviderStatus::NotFound,
            authorized: zero,
            captured: zero,
            refunded: zero,
            decline_code: None,
        })
    }
    async fn capture(&self, r: &CaptureRequest) -> Result<ProviderReport, ProviderError> {
        self.0.capture(r).await
    }
    async fn void(&self, r: &VoidRequest) -> Result<ProviderReport, ProviderError> {
        self.0.void(r).await
    }
    async fn refund(&self, r: &RefundRequest) -> Result<ProviderReport, ProviderError> {
        self.0.refund(r).await
    }
    async fn lookup(&self, l: &Lookup) -> Result<Option<ProviderReport>, ProviderError> {
        self.0.lookup(l).await
    }
}

/// Found by review (I13, I5). "Not found" is an answer to a lookup, never to the request that
/// creates the payment. An authorization answered with a `NotFound` report is absorbed as a
/// definitive failure at once (`absorb` -> `Report(NotFound)` -> failed, hold released),
/// bypassing the deadline rule that guards every other "not found". Here the PSP did
/// authorize: 144.00 EUR at the PSP, nothing held, and the sweep never looks again.
#[tokio::test]
async fn authorize_answered_not_found_does_not_fail_before_the_deadline() {
    let w = capped_world().await;
    let ports = Ports {
        provider: Arc::new(NotFoundAnswer(w.psp.clone())),
        ..w.mem.ports.clone()
    };
    let engine = Engine::new(ports, EngineConfig::default()).expect("engine");
    let out = engine
        .execute_payment(&agent_p(), &w.execute("pay-1"))
        .await
        .expect("pay");
    let a = out.attempt().expect("attempt");
    assert_ne!(
        a.status,
        AttemptStatus::Failed,
        "I13: failed on an authorize answer of 'not found' at submission time; held now {}, PSP {}",
        w.usage().await.held,
        psp_money(&w.psp)
    );
    assert_eq!(w.usage().await.held, eur("144.00"), "I5: the hold stays");
}

/// An audit sink that yields before each batch (a network sink), and can be down.
#[derive(Debug)]
struct SlowSink {
    inner: Arc<dyn AuditSink>,
    down: AtomicBool,
}

#[async_trait]
impl AuditSink for SlowSink {
    async fn append(&self, event: &AuditEvent) -> Result<AuditReceipt, AuditError> {
        tokio::task::yield_now().await;
        self.inner.append(event).await
    }
    async fn append_all(&self, events: &[AuditEvent]) -> Result<Option<AuditReceipt>, AuditError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(AuditError::Unavailable {
                message: "down".into(),
            });
        }
        tokio::task::yield_now().await;
        self.inner.append_all(events).await
    }
    async fn read(&self, from_seq: u64, limit: usize) -> Result<Vec<ChainedEvent>, AuditError> {
        self.inner.read(from_seq, limit).await
    }
    async fn head(&self) -> Result<Option<AuditReceipt>, AuditError> {
        self.inner.head().await
    }
}

/// I9, I15: two engines (two processes) on one store share one audit outbox, and "one flush at
/// a time" holds within an engine only. After a sink outage both flush at once: each may read
/// the same staged batch before either acknowledges it. Delivery is at least once: nothing is
/// lost, the chain verifies, and the repeats are visible to the trail check (the documented
/// behaviour; a store-side claim of batches would make it exactly once).
#[tokio::test]
async fn two_engines_flushing_one_outbox_lose_nothing_and_show_their_repeats() {
    let w = capped_world().await;
    let sink = Arc::new(SlowSink {
        inner: w.mem.audit.clone(),
        down: AtomicBool::new(true),
    });
    let ports = Ports {
        audit: sink.clone(),
        ..w.mem.ports.clone()
    };
    let a = Engine::new(ports.clone(), EngineConfig::default()).expect("engine a");
    let b = Engine::new(ports, EngineConfig::default()).expect("engine b");
    a.execute_payment(&agent_p(), &w.execute("pay-1"))
        .await
        .expect("pay while the sink is down");
    let staged = a.verify_trail(TRAIL_CHECK_LIMIT).await.expect("check");
    assert!(staged.staged_events >= 4, "{staged:?}");
    sink.down.store(false, Ordering::SeqCst);
    let (ra, rb) = tokio::join!(a.flush_audit(), b.flush_audit());
    let delivered = ra.expect("a") + rb.expect("b");
    let report = a.verify_trail(TRAIL_CHECK_LIMIT).await.expect("check");
    assert_eq!(report.staged_events, 0, "{report:?}");
    assert!(report.is_complete(), "{:?}", report.missing);
    assert_eq!(
        report.repeated_events as usize,
        delivered - staged.staged_events,
        "every repeat is counted: {report:?}"
    );
    w.mem.audit.verify().await.expect("I9: the chain verifies");
}

/// Found by review (I14). Authority from what a caller says it is: any caller that labelled
/// itself `ActorKind::Human` could void an agent's authorized payment, whoever it was. The void
/// is open to the attempt's actor, the buyer's principal and an operator only: a person the
/// host authenticated as another buyer is refused, and so is any other agent.
#[tokio::test]
async fn a_caller_asserting_it_is_human_cannot_void_a_strangers_payment() {
    let w = capped_world().await;
    let paid = w
        .engine
        .execute_payment(&agent_p(), &w.execute("pay-1"))
        .await
        .expect("pay");
    let a = paid.attempt().expect("attempt").clone();
    let void = agent_void("void-by-mallory", &a.id);
    for mallory in [
        Principal::Buyer("mallory_the_stranger".parse().expect("id")),
        Principal::Agent("mallory_the_stranger".parse().expect("id")),
        Principal::System("mallory_the_stranger".parse().expect("id")),
    ] {
        let out = w.engine.void(&mallory, &void).await;
        assert!(
            matches!(out, Err(EngineError::NotPermitted { .. })),
            "{mallory}'s void was accepted: {:?}",
            out.map(|o| o.attempt().map(|a| a.status))
        );
    }
    let still = w.engine.ports().store.attempt(&a.id).await.expect("store");
    assert_eq!(
        still.map(|a| a.status),
        Some(agent_mandate::domain::AttemptStatus::Authorized)
    );
}

// ----- guards (pass today) -----

/// GUARD (I13, I3). A retry that takes over a lapsed lease while the PSP still sits on the
/// first request does not send a second authorization: the lookup by key before the deadline
/// proves nothing, so the retry leaves the attempt pending rather than resubmitting.
#[tokio::test]
async fn takeover_before_the_deadline_never_resubmits() {
    let w = capped_world().await;
    let psp = QueuedPsp::new(w.psp.clone());
    let ports = Ports {
        provider: psp.clone(),
        ..w.mem.ports.clone()
    };
    // A short lease: 25 s > 10 s deadline + 10 s margin; the submission deadline is 20 s.
    let config = EngineConfig::default()
        .with_lease(Duration::from_secs(25), Duration::from_secs(10))
        .expect("lease");
    let engine = Engine::new(ports, config).expect("engine");
    let cmd = w.execute("pay-1");
    let slow = {
        let engine = engine.clone();
        let cmd = cmd.clone();
        tokio::spawn(async move { engine.execute_payment(&payer(&cmd), &cmd).await })
    };
    psp.entered.notified().await;
    w.mem.clock.advance(chrono::Duration::seconds(26));
    let retried = engine
        .execute_payment(&payer(&cmd), &cmd)
        .await
        .expect("retry");
    let status = retried.attempt().expect("attempt").status;
    assert!(
        matches!(
            status,
            AttemptStatus::Failed | AttemptStatus::PendingProviderResponse
        ),
        "{status:?}"
    );
    assert_eq!(w.psp.calls(Op::Authorize), 0, "I3: no second send");
    psp.gate.add_permits(1);
    let _ = slow.await;
    assert!(w.psp.calls(Op::Authorize) <= 1, "I3");
}

/// GUARD (I13, fencing). A purge that runs while a command is live leaves its record alone
/// (its lease has not lapsed), and the command completes its record.
#[tokio::test]
async fn purge_racing_a_live_command_keeps_its_record() {
    let w = capped_world().await;
    let psp = QueuedPsp::new(w.psp.clone());
    let ports = Ports {
        provider: psp.clone(),
        ..w.mem.ports.clone()
    };
    let engine = Engine::new(ports, EngineConfig::default()).expect("engine");
    let cmd = w.execute("pay-1");
    let live = {
        let engine = engine.clone();
        let cmd = cmd.clone();
        tokio::spawn(async move { engine.execute_payment(&payer(&cmd), &cmd).await })
    };
    psp.entered.notified().await;
    w.mem.clock.advance(chrono::Duration::seconds(5));
    engine.purge_idempotency().await.expect("purge");
    let during = engine.execute_payment(&payer(&cmd), &cmd).await;
    assert!(
        matches!(during, Err(EngineError::IdempotencyInFlight { .. })),
        "{during:?}"
    );
    psp.gate.add_permits(1);
    let done = live.await.expect("task").expect("live command");
    assert_eq!(
        done.attempt().expect("attempt").status,
        AttemptStatus::Authorized
    );
    let again = engine
        .execute_payment(&payer(&cmd), &cmd)
        .await
        .expect("replay");
    assert!(
        matches!(again, PaymentOutcome::Replayed { .. }),
        "{again:?}"
    );
    assert_eq!(w.psp.calls(Op::Authorize), 1);
}

/// GUARD (I2, I5). A lookup answer that arrives twice (two sweeps, the same report) moves
/// the attempt once and commits nothing twice.
#[tokio::test]
async fn a_report_delivered_twice_moves_the_ledger_once() {
    let w = capped_world().await;
    w.psp.inject(
        Some(Op::Authorize),
        agent_mandate::testkit::Fault::LostResponse,
    );
    let out = w
        .engine
        .execute_payment(&agent_p(), &w.execute("pay-1"))
        .await
        .expect("pay");
    let a = out.attempt().expect("attempt").clone();
    assert_eq!(a.status, AttemptStatus::Ambiguous);
    let one = w.engine.reconcile(&a.id).await.expect("reconcile");
    let two = w.engine.reconcile(&a.id).await.expect("reconcile again");
    assert_eq!(one.status, AttemptStatus::Authorized);
    assert_eq!(two, one);
    assert_eq!(w.usage().await.held, eur("144.00"));
}

/// GUARD (I9, I15). One engine's flusher racing itself (two commands flushing at once over a
/// slow sink) appends each staged event once: the second flush defers to the running one.
#[tokio::test]
async fn one_engine_flushing_twice_at_once_appends_each_event_once() {
    let w = capped_world().await;
    let sink = Arc::new(SlowSink {
        inner: w.mem.audit.clone(),
        down: AtomicBool::new(true),
    });
    let ports = Ports {
        audit: sink.clone(),
        ..w.mem.ports.clone()
    };
    let engine = Engine::new(ports, EngineConfig::default()).expect("engine");
    engine
        .execute_payment(&agent_p(), &w.execute("pay-1"))
        .await
        .expect("pay while the sink is down");
    sink.down.store(false, Ordering::SeqCst);
    let (one, two) = tokio::join!(engine.flush_audit(), engine.flush_audit());
    let _ = engine.flush_audit().await;
    let report = engine.verify_trail(TRAIL_CHECK_LIMIT).await.expect("check");
    assert_eq!(report.staged_events, 0, "{report:?} ({one:?}, {two:?})");
    assert_eq!(report.repeated_events, 0, "{report:?}");
    assert!(report.is_complete(), "{:?}", report.missing);
    w.mem.audit.verify().await.expect("I9: the chain verifies");
}

/// GUARD (I5, I13). The clock jumps backwards (an NTP step) after an ambiguous submission:
/// the sweep's "not found" is not final before the submission's deadline by the new clock,
/// so the attempt and its hold stay; and a second payment still sees the hold.
#[tokio::test]
async fn a_clock_jumping_backwards_does_not_settle_an_ambiguous_submission() {
    let w = capped_world().await;
    w.psp.inject(
        Some(Op::Authorize),
        agent_mandate::testkit::Fault::TimeoutBeforeEffect,
    );
    let a = w
        .engine
        .execute_payment(&agent_p(), &w.execute("pay-1"))
        .await
        .expect("execute")
        .attempt()
        .expect("attempt")
        .clone();
    assert_eq!(a.status, AttemptStatus::Ambiguous);
    w.mem.clock.advance(chrono::Duration::hours(-1));
    let swept = w.engine.reconcile_pending(10).await.expect("sweep");
    assert_eq!(swept[0].status, AttemptStatus::Ambiguous);
    assert_eq!(w.usage().await.held, eur("144.00"), "I5");
    let other = w
        .engine
        .execute_payment(&agent_p(), &w.execute("pay-2"))
        .await
        .expect("second");
    assert!(matches!(other, PaymentOutcome::Refused(_)), "I2: {other:?}");
}
