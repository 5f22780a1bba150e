//! Regression tests of money safety under slow PSPs and lost audit appends: each reproduces a
//! failure a review found (an overspend of a lifetime cap with no crash, audit events that
//! vanished while the chain still verified) and names the invariant it defends.
#![cfg(feature = "testkit")]

mod common;
#[allow(unused_imports)]
use common::principals::*;

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use agent_mandate::domain::{AttemptStatus, AuditEvent, AuditKind, ChainedEvent, ProviderReport};
use agent_mandate::engine::{
    ConfigError, Engine, EngineConfig, EngineError, MissingEvent, PaymentOutcome, TRAIL_CHECK_LIMIT,
};
use agent_mandate::ports::{
    AuditError, AuditReceipt, AuditSink, AuthorizeRequest, CaptureRequest, Lookup, PaymentProvider,
    Ports, ProviderError, RefundRequest, Store, StoreError, VoidRequest,
};
use agent_mandate::testkit::{FakePsp, Op};
use common::engine::{capped_world, eur, psp_money, World};

/// A PSP that declares a 10 s deadline but holds its first authorization until the test opens
/// the gate (a peer slower than every timeout, that lies about its deadline).
#[derive(Debug)]
struct GatedPsp {
    inner: Arc<FakePsp>,
    gate: tokio::sync::Semaphore,
    entered: tokio::sync::Notify,
    first: AtomicBool,
}

#[async_trait]
impl PaymentProvider for GatedPsp {
    fn deadline(&self) -> Duration {
        Duration::from_secs(10)
    }
    async fn authorize(&self, r: &AuthorizeRequest) -> Result<ProviderReport, ProviderError> {
        if !self.first.swap(true, Ordering::SeqCst) {
            self.entered.notify_one();
            let _permit = self.gate.acquire().await.expect("gate");
        }
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

/// I13: the engine refuses a lease that does not outlast the PSP's deadline plus the margin
/// (the old default: a 30 s lease and a 30 s Stripe request timeout).
#[tokio::test]
async fn a_lease_not_longer_than_the_psp_deadline_is_refused() {
    let w = capped_world().await;
    #[derive(Debug)]
    struct ThirtySeconds(Arc<FakePsp>);
    #[async_trait]
    impl PaymentProvider for ThirtySeconds {
        fn deadline(&self) -> Duration {
            Duration::from_secs(30)
        }
        async fn authorize(&self, r: &AuthorizeRequest) -> Result<ProviderReport, ProviderError> {
            self.0.authorize(r).await
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
    let ports = Ports {
        provider: Arc::new(ThirtySeconds(w.psp.clone())),
        ..w.mem.ports.clone()
    };
    let config = EngineConfig::default()
        .with_lease(Duration::from_secs(30), Duration::from_secs(5))
        .expect("lease");
    let err = Engine::new(ports.clone(), config).expect_err("30 s lease, 30 s deadline");
    assert_eq!(err.field, "lease");
    let ok = EngineConfig::default()
        .with_lease(Duration::from_secs(36), Duration::from_secs(5))
        .expect("lease");
    assert!(Engine::new(ports, ok).is_ok(), "36 s > 30 s + 5 s");
    let zero: Result<EngineConfig, ConfigError> =
        EngineConfig::default().with_lease(Duration::ZERO, Duration::ZERO);
    assert_eq!(zero.expect_err("zero lease").field, "lease");
    assert_eq!(
        EngineConfig::default()
            .with_lease(Duration::from_secs(5), Duration::from_secs(5))
            .expect_err("margin as long as the lease")
            .field,
        "deadline_margin"
    );
}

/// Reproduction: a PSP authorization that answers after the idempotency lease ran out. A
/// retry with the same key takes the record over, finds nothing at the PSP and fails the
/// attempt (its deadline has passed); a second payment then takes the budget. The first
/// authorization lands late: before the fix 288.00 EUR were authorized on a 150.00 EUR
/// lifetime cap, and the late caller completed a record it no longer owned. Now the late
/// caller is fenced out (its changes refused), the late authorization is voided at the PSP,
/// and the key's record stays the new owner's (I2, I3, I13).
#[tokio::test]
async fn slow_psp_outliving_the_lease_cannot_overspend() {
    let w = capped_world().await;
    let gated = Arc::new(GatedPsp {
        inner: w.psp.clone(),
        gate: tokio::sync::Semaphore::new(0),
        entered: tokio::sync::Notify::new(),
        first: AtomicBool::new(false),
    });
    let ports = Ports {
        provider: gated.clone(),
        ..w.mem.ports.clone()
    };
    let engine = Engine::new(ports, EngineConfig::default()).expect("engine");
    let first_cmd = w.execute("pay-slow");
    let slow = {
        let engine = engine.clone();
        let cmd = first_cmd.clone();
        tokio::spawn(async move { engine.execute_payment(&payer(&cmd), &cmd).await })
    };
    gated.entered.notified().await;

    // The lease (60 s) lapses while the PSP sits on the request.
    w.mem.clock.advance(chrono::Duration::seconds(61));
    let retried = engine
        .execute_payment(&payer(&first_cmd), &first_cmd)
        .await
        .expect("retry");
    let failed = retried.attempt().expect("attempt").clone();
    assert_eq!(
        failed.status,
        AttemptStatus::Failed,
        "past its deadline, the PSP's 'not found' is final"
    );
    let second = engine
        .execute_payment(&agent_p(), &w.execute("pay-second"))
        .await
        .expect("second payment");
    assert_eq!(
        second.attempt().expect("attempt").status,
        AttemptStatus::Authorized
    );

    // The first authorization lands now.
    gated.gate.add_permits(1);
    let late = slow.await.expect("task");
    assert!(
        matches!(late, Err(EngineError::Store(StoreError::Fenced { .. }))),
        "the stale holder changes nothing: {late:?}"
    );
    assert!(
        psp_money(&w.psp) <= 15_000,
        "I2: PSP money {} on a 150.00 EUR cap",
        psp_money(&w.psp)
    );
    assert_eq!(
        psp_money(&w.psp),
        14_400,
        "the late authorization was voided"
    );
    let stored = w
        .mem
        .store
        .attempt(&failed.id)
        .await
        .expect("read")
        .expect("attempt");
    assert_eq!(
        stored.status,
        AttemptStatus::Failed,
        "the late answer did not overwrite"
    );
    // The key's record belongs to the retry, which completed it: the stale holder neither
    // completed nor freed it.
    let again = engine
        .execute_payment(&payer(&first_cmd), &first_cmd)
        .await
        .expect("replay");
    assert!(
        matches!(again, PaymentOutcome::Replayed { .. }),
        "{again:?}"
    );
    assert_eq!(
        w.psp
            .authorizations_for(&failed.provider_key(agent_mandate::domain::Operation::Authorize)),
        1
    );
    let kinds = audit_kinds(&w).await;
    assert!(
        kinds.iter().any(
            |k| matches!(k, AuditKind::Recovery { attempt_id, .. } if *attempt_id == failed.id)
        ),
        "the void of the late authorization is audited"
    );
}

/// I13: before the submission's deadline a PSP "not found" proves nothing: a retry with the
/// key (after a crash freed it) and the sweep both keep the attempt and its hold.
#[tokio::test]
async fn not_found_before_the_deadline_keeps_the_hold() {
    let w = capped_world().await;
    w.psp.inject(
        Some(Op::Authorize),
        agent_mandate::testkit::Fault::TimeoutBeforeEffect,
    );
    let first = w
        .engine
        .execute_payment(&agent_p(), &w.execute("pay-1"))
        .await
        .expect("execute");
    let a = first.attempt().expect("attempt").clone();
    assert_eq!(a.status, AttemptStatus::Ambiguous);
    for _ in 0..2 {
        let swept = w.engine.reconcile_pending(10).await.expect("sweep");
        assert_eq!(swept[0].status, AttemptStatus::Ambiguous);
        assert_eq!(w.usage().await.held, eur("144.00"), "I5: the hold stays");
        let other = w
            .engine
            .execute_payment(&agent_p(), &w.execute("pay-2"))
            .await
            .expect("second");
        assert!(
            matches!(other, PaymentOutcome::Refused(_)),
            "I2: the cap is still taken by the unknown attempt"
        );
        w.mem.clock.advance(chrono::Duration::seconds(9));
    }
    w.mem.clock.advance(chrono::Duration::seconds(3));
    let swept = w.engine.reconcile_pending(10).await.expect("sweep");
    assert_eq!(swept[0].status, AttemptStatus::Failed, "past the deadline");
    assert_eq!(w.usage().await.held, eur("0.00"));
}

/// An audit sink that refuses appends while `down` is set, and counts them.
#[derive(Debug)]
struct FlakySink {
    inner: Arc<dyn AuditSink>,
    down: AtomicBool,
    refused: AtomicU32,
}

#[async_trait]
impl AuditSink for FlakySink {
    async fn append(&self, event: &AuditEvent) -> Result<AuditReceipt, AuditError> {
        if self.down.load(Ordering::SeqCst) {
            self.refused.fetch_add(1, Ordering::SeqCst);
            return Err(AuditError::Unavailable {
                message: "the sink is down".into(),
            });
        }
        self.inner.append(event).await
    }
    async fn append_all(&self, events: &[AuditEvent]) -> Result<Option<AuditReceipt>, AuditError> {
        if self.down.load(Ordering::SeqCst) {
            self.refused.fetch_add(1, Ordering::SeqCst);
            return Err(AuditError::Unavailable {
                message: "the sink is down".into(),
            });
        }
        self.inner.append_all(events).await
    }
    async fn read(&self, from_seq: u64, limit: usize) -> Result<Vec<ChainedEvent>, AuditError> {
        self.inner.read(from_seq, limit).await
    }
    async fn head(&self) -> Result<Option<AuditReceipt>, AuditError> {
        self.inner.head().await
    }
}

async fn audit_kinds(w: &World) -> Vec<AuditKind> {
    w.mem
        .audit
        .read(1, 100_000)
        .await
        .expect("read")
        .iter()
        .map(|e| e.event().expect("event").kind)
        .collect()
}

/// Reproduction: the audit append failed after the store change (the sink was down); the
/// change stayed (payment authorized, mandate revoked) and its events were gone for good,
/// while the chain still verified. Now the events are staged in the store with the change
/// (I15): the command succeeds, the trail check counts them as staged, and the next flush
/// (any later command, a replay, or `flush_audit`) delivers every one of them.
#[tokio::test]
async fn a_failed_audit_append_loses_no_event() {
    let w = capped_world().await;
    let sink = Arc::new(FlakySink {
        inner: w.mem.audit.clone(),
        down: AtomicBool::new(true),
        refused: AtomicU32::new(0),
    });
    let ports = Ports {
        audit: sink.clone(),
        ..w.mem.ports.clone()
    };
    let engine = Engine::new(ports, EngineConfig::default()).expect("engine");
    let before = w.mem.audit.read(1, 100_000).await.expect("read").len();
    let paid = engine
        .execute_payment(&agent_p(), &w.execute("pay-1"))
        .await
        .expect("the payment is not failed by the sink");
    let a = paid.attempt().expect("attempt").clone();
    assert_eq!(a.status, AttemptStatus::Authorized);
    assert!(
        sink.refused.load(Ordering::SeqCst) > 0,
        "the sink was asked"
    );
    assert_eq!(
        w.mem.audit.read(1, 100_000).await.expect("read").len(),
        before,
        "nothing reached the sink"
    );
    let report = engine.verify_trail(TRAIL_CHECK_LIMIT).await.expect("check");
    assert!(report.is_complete(), "{:?}", report.missing);
    assert!(
        report.staged_events >= 4,
        "decision, transitions, hold: {report:?}"
    );
    assert!(
        matches!(
            engine.flush_audit().await,
            Err(EngineError::Audit(AuditError::Unavailable { .. }))
        ),
        "an explicit flush reports the outage"
    );

    // The sink comes back; the replay of the same command delivers what waited.
    sink.down.store(false, Ordering::SeqCst);
    let again = engine
        .execute_payment(&agent_p(), &w.execute("pay-1"))
        .await
        .expect("replay");
    assert!(again.is_replay());
    let report = engine.verify_trail(TRAIL_CHECK_LIMIT).await.expect("check");
    assert_eq!(report.staged_events, 0, "delivered: {report:?}");
    assert!(report.is_complete(), "{:?}", report.missing);
    assert_eq!(report.repeated_events, 0);
    let kinds = audit_kinds(&w).await;
    assert!(kinds.iter().any(|k| matches!(
        k,
        AuditKind::AttemptTransition { attempt_id, to: AttemptStatus::Authorized, .. } if *attempt_id == a.id
    )));
    assert!(kinds
        .iter()
        .any(|k| matches!(k, AuditKind::Decision { .. })));
    w.mem.audit.verify().await.expect("I9: the chain verifies");
}

/// The trail check names a stored state whose event is missing (a write made behind the
/// engine's back), and stays quiet when every state has its event (I15).
#[tokio::test]
async fn the_trail_check_names_a_state_without_its_event() {
    let w = capped_world().await;
    let paid = w
        .engine
        .execute_payment(&agent_p(), &w.execute("pay-1"))
        .await
        .expect("pay");
    let a = paid.attempt().expect("attempt").clone();
    let clean = w
        .engine
        .verify_trail(TRAIL_CHECK_LIMIT)
        .await
        .expect("check");
    assert!(clean.is_complete(), "{:?}", clean.missing);
    assert_eq!(clean.attempts, 1);

    // Captured in the store, with no event for it.
    let mut captured = a.clone();
    captured.status = AttemptStatus::Captured;
    captured.captured = a.authorized;
    w.mem
        .store
        .update_attempt(&captured, AttemptStatus::Authorized)
        .await
        .expect("write behind the engine's back");
    let report = w
        .engine
        .verify_trail(TRAIL_CHECK_LIMIT)
        .await
        .expect("check");
    assert_eq!(
        report.missing,
        vec![MissingEvent::AttemptTransition {
            attempt_id: a.id.clone(),
            status: AttemptStatus::Captured,
        }]
    );
    assert!(report.missing[0].to_string().contains(a.id.as_str()));
}

/// Idempotency records are purged once their retention ended (they grew without bound); a
/// purged key starts afresh, and the attempt it made is found again by its derived id, so a
/// late retry pays nothing twice (I3).
#[tokio::test]
async fn purged_records_free_their_keys_without_paying_twice() {
    let w = capped_world().await;
    let first = w
        .engine
        .execute_payment(&agent_p(), &w.execute("pay-1"))
        .await
        .expect("pay");
    let a = first.attempt().expect("attempt").clone();
    assert_eq!(w.engine.purge_idempotency().await.expect("purge"), 0);
    w.mem.clock.advance(chrono::Duration::hours(25));
    let purged = w.engine.purge_idempotency().await.expect("purge");
    assert!(purged >= 1, "the execute record and the setup's: {purged}");
    let late = w
        .engine
        .execute_payment(&agent_p(), &w.execute("pay-1"))
        .await
        .expect("late retry");
    assert_eq!(late.attempt().expect("attempt").id, a.id);
    assert_eq!(w.psp.calls(Op::Authorize), 1, "I3: one authorization");
}
