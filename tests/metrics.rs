//! The metrics the engine reports through the `metrics` facade (feature `metrics`): a recorder
//! of the test's own collects every counter, gauge and histogram while scenarios run (an
//! allowed payment, its replay, a blocked payment, a PSP failure, an ambiguous answer and the
//! sweep that resolves it, an auto-suspension, an audit sink outage), and the exact values
//! are compared with what the scenario did. Labels are checked to be bounded: no label value
//! is an id, a key or an amount.
#![cfg(all(feature = "metrics", feature = "testkit"))]

mod common;
use common::principals::*;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use agent_mandate::domain::{
    AttemptStatus, AuditEvent, BlockerCode, ChainedEvent, CredentialRef, Party,
};
use agent_mandate::engine::{Engine, EngineConfig, PaymentOutcome, SetSuspension};
use agent_mandate::ports::{AuditError, AuditReceipt, AuditSink, Ports};
use agent_mandate::testkit::{Fault, Op};
use async_trait::async_trait;
use common::engine::{backpack_spec, key, world_with, World};
use metrics::{
    Counter, CounterFn, Gauge, GaugeFn, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder,
    SharedString, Unit,
};

/// What the recorder saw, by `name{label=value,...}` (labels sorted).
#[derive(Debug, Default)]
struct Seen {
    counters: BTreeMap<String, u64>,
    gauges: BTreeMap<String, f64>,
    histograms: BTreeMap<String, Vec<f64>>,
}

#[derive(Debug, Default, Clone)]
struct Capture(Arc<Mutex<Seen>>);

struct Handle {
    key: String,
    seen: Arc<Mutex<Seen>>,
}

fn render(key: &Key) -> String {
    let mut labels: Vec<String> = key
        .labels()
        .map(|l| format!("{}={}", l.key(), l.value()))
        .collect();
    labels.sort();
    format!("{}{{{}}}", key.name(), labels.join(","))
}

impl CounterFn for Handle {
    fn increment(&self, value: u64) {
        let mut seen = self.seen.lock().expect("lock");
        *seen.counters.entry(self.key.clone()).or_default() += value;
    }
    fn absolute(&self, value: u64) {
        let mut seen = self.seen.lock().expect("lock");
        seen.counters.insert(self.key.clone(), value);
    }
}

impl GaugeFn for Handle {
    fn increment(&self, value: f64) {
        let mut seen = self.seen.lock().expect("lock");
        *seen.gauges.entry(self.key.clone()).or_default() += value;
    }
    fn decrement(&self, value: f64) {
        let mut seen = self.seen.lock().expect("lock");
        *seen.gauges.entry(self.key.clone()).or_default() -= value;
    }
    fn set(&self, value: f64) {
        let mut seen = self.seen.lock().expect("lock");
        seen.gauges.insert(self.key.clone(), value);
    }
}

impl HistogramFn for Handle {
    fn record(&self, value: f64) {
        let mut seen = self.seen.lock().expect("lock");
        seen.histograms
            .entry(self.key.clone())
            .or_default()
            .push(value);
    }
}

impl Capture {
    fn handle(&self, key: &Key) -> Arc<Handle> {
        Arc::new(Handle {
            key: render(key),
            seen: self.0.clone(),
        })
    }

    fn counters(&self) -> BTreeMap<String, u64> {
        self.0.lock().expect("lock").counters.clone()
    }

    fn counter(&self, key: &str) -> u64 {
        self.counters().get(key).copied().unwrap_or(0)
    }

    fn gauge(&self, key: &str) -> Option<f64> {
        self.0.lock().expect("lock").gauges.get(key).copied()
    }

    fn histogram_count(&self, key: &str) -> usize {
        self.0
            .lock()
            .expect("lock")
            .histograms
            .get(key)
            .map_or(0, Vec::len)
    }

    fn keys(&self) -> Vec<String> {
        let seen = self.0.lock().expect("lock");
        seen.counters
            .keys()
            .chain(seen.gauges.keys())
            .chain(seen.histograms.keys())
            .cloned()
            .collect()
    }
}

impl Recorder for Capture {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        Counter::from_arc(self.handle(key))
    }
    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::from_arc(self.handle(key))
    }
    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::from_arc(self.handle(key))
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// Runs `scenario` on `rt` with `capture` as this thread's recorder (the runtime polls on
/// this thread, so every metric of the scenario reaches it, and no other test's does).
fn recorded<T>(
    rt: &tokio::runtime::Runtime,
    capture: &Capture,
    scenario: impl std::future::Future<Output = T>,
) -> T {
    metrics::with_local_recorder(capture, || rt.block_on(scenario))
}

async fn audit_len(w: &World) -> usize {
    w.mem.audit.events().len()
}

/// Every label value is one of a bounded vocabulary: no id, key, amount or digit string.
fn assert_bounded(keys: &[String]) {
    for key in keys {
        let labels = key
            .split_once('{')
            .map(|(_, l)| l.trim_end_matches('}'))
            .unwrap_or("");
        for pair in labels.split(',').filter(|p| !p.is_empty()) {
            let (_, value) = pair.split_once('=').expect("label=value");
            assert!(
                value.chars().all(|c| c.is_ascii_alphabetic() || c == '_'),
                "unbounded label value in {key}"
            );
        }
    }
}

#[test]
fn a_scenario_reports_exact_counters() {
    let rt = runtime();
    let w = rt.block_on(world_with(EngineConfig::default(), backpack_spec(true)));
    let capture = Capture::default();
    let delivered = recorded(&rt, &capture, async {
        let before = audit_len(&w).await;
        // An allowed payment, and its replay.
        let paid = w
            .engine
            .execute_payment(&agent_p(), &w.execute("pay-1"))
            .await
            .expect("pays");
        assert_eq!(
            paid.attempt().map(|a| a.status),
            Some(AttemptStatus::Authorized)
        );
        let again = w
            .engine
            .execute_payment(&agent_p(), &w.execute("pay-1"))
            .await
            .expect("replays");
        assert!(again.is_replay());

        // A blocked payment: a credential the vault does not know.
        let mut blocked = w.execute("pay-2");
        blocked.credential = "cred_999999".parse::<CredentialRef>().expect("ref");
        match w.engine.execute_payment(&agent_p(), &blocked).await {
            Ok(PaymentOutcome::Refused(d)) => assert!(d.has(BlockerCode::CredentialNotUsable)),
            other => panic!("{other:?}"),
        }

        // A PSP failure that provably did not process the request.
        w.psp.inject(Some(Op::Authorize), Fault::Transient);
        let err = w
            .engine
            .execute_payment(&agent_p(), &w.execute("pay-3"))
            .await
            .expect_err("transient");
        assert_eq!(err.code(), "PSP_UNAVAILABLE");

        // An answer lost after the PSP acted: ambiguous, then listed, then swept.
        w.psp.inject(Some(Op::Authorize), Fault::TimeoutAfterEffect);
        let lost = w
            .engine
            .execute_payment(&agent_p(), &w.execute("pay-4"))
            .await
            .expect("ambiguous");
        assert_eq!(
            lost.attempt().map(|a| a.status),
            Some(AttemptStatus::Ambiguous)
        );
        let open = w
            .engine
            .open_attempts(&operator_p(), 100)
            .await
            .expect("open");
        assert_eq!(open.len(), 1);
        let lost = lost.attempt().expect("attempt").id.clone();
        let swept = w.engine.reconcile_pending(100).await.expect("sweep");
        let resolved = swept.iter().find(|a| a.id == lost).expect("swept");
        assert_eq!(resolved.status, AttemptStatus::Authorized);
        audit_len(&w).await - before
    });

    let c = |k: &str| capture.counter(k);
    // Commands by outcome, errors by code.
    assert_eq!(
        c("agent_mandate_commands_total{command=execute_payment,outcome=done}"),
        2
    );
    assert_eq!(
        c("agent_mandate_commands_total{command=execute_payment,outcome=replayed}"),
        1
    );
    assert_eq!(
        c("agent_mandate_commands_total{command=execute_payment,outcome=refused}"),
        1
    );
    assert_eq!(
        c("agent_mandate_commands_total{command=execute_payment,outcome=error}"),
        1
    );
    assert_eq!(
        c("agent_mandate_command_errors_total{code=PSP_UNAVAILABLE,command=execute_payment}"),
        1
    );
    assert_eq!(
        c("agent_mandate_commands_total{command=read_open_attempts,outcome=done}"),
        1
    );
    assert_eq!(
        c("agent_mandate_commands_total{command=reconcile_pending,outcome=done}"),
        1
    );
    // Decisions: pay-1, pay-3 and pay-4 allowed; pay-2 blocked on its credential. The
    // replay decided nothing.
    assert_eq!(
        c("agent_mandate_decisions_total{command=execute_payment,outcome=allowed}"),
        3
    );
    assert_eq!(
        c("agent_mandate_decisions_total{command=execute_payment,outcome=blocked}"),
        1
    );
    assert_eq!(
        c("agent_mandate_decision_blockers_total{code=CREDENTIAL_NOT_USABLE,command=execute_payment}"),
        1
    );
    // Holds: one per allowed decision, none refused.
    assert_eq!(c("agent_mandate_holds_total{result=placed}"), 3);
    assert_eq!(c("agent_mandate_holds_total{result=refused}"), 0);
    // Replays, ambiguity, suspensions.
    assert_eq!(
        c("agent_mandate_idempotency_replays_total{command=execute_payment}"),
        1
    );
    assert_eq!(c("agent_mandate_attempts_ambiguous_total{}"), 1);
    assert_eq!(c("agent_mandate_auto_suspensions_total{}"), 0);
    // PSP calls by call and classification: three authorizations, three lookups.
    let h = |k: &str| capture.histogram_count(k);
    assert_eq!(
        h("agent_mandate_psp_call_duration_seconds{call=authorize,classification=authorized}"),
        1
    );
    assert_eq!(
        h("agent_mandate_psp_call_duration_seconds{call=authorize,classification=transient}"),
        1
    );
    assert_eq!(
        h("agent_mandate_psp_call_duration_seconds{call=authorize,classification=ambiguous}"),
        1
    );
    // The sweep looks up every attempt that may still move: the ambiguous one and the
    // authorized one (the PSP reports both authorized), and the one sent back after the
    // transient failure (the PSP has none).
    assert_eq!(
        h("agent_mandate_psp_call_duration_seconds{call=lookup,classification=authorized}"),
        2
    );
    assert_eq!(
        h("agent_mandate_psp_call_duration_seconds{call=lookup,classification=not_found}"),
        1
    );
    let calls: usize = capture
        .keys()
        .iter()
        .filter(|k| k.starts_with("agent_mandate_psp_call_duration_seconds"))
        .map(|k| h(k))
        .sum();
    assert_eq!(calls, 6, "{:#?}", capture.keys());
    // The gauge of open attempts: the sweep left none ambiguous.
    assert_eq!(
        capture.gauge("agent_mandate_attempts_open{status=ambiguous}"),
        Some(0.0)
    );
    assert_eq!(
        capture.gauge("agent_mandate_attempts_open{status=pending_provider_response}"),
        Some(0.0)
    );
    // The audit outbox: every event reached the sink, nothing waits.
    assert_eq!(
        c("agent_mandate_audit_events_delivered_total{}"),
        delivered as u64
    );
    assert_eq!(
        capture.gauge("agent_mandate_audit_outbox_depth{}"),
        Some(0.0)
    );
    assert_eq!(c("agent_mandate_audit_flush_failures_total{}"), 0);

    // Nothing else was counted, and every label is bounded.
    let counted: u64 = capture
        .counters()
        .iter()
        .filter(|(k, _)| k.starts_with("agent_mandate_commands_total"))
        .map(|(_, v)| v)
        .sum();
    assert_eq!(counted, 7, "{:#?}", capture.counters());
    assert_bounded(&capture.keys());
}

#[test]
fn the_gauge_of_open_attempts_counts_what_is_listed() {
    let rt = runtime();
    let w = rt.block_on(world_with(EngineConfig::default(), backpack_spec(true)));
    let capture = Capture::default();
    recorded(&rt, &capture, async {
        for k in ["lost-1", "lost-2"] {
            w.psp.inject(Some(Op::Authorize), Fault::TimeoutAfterEffect);
            w.engine
                .execute_payment(&agent_p(), &w.execute(k))
                .await
                .expect("ambiguous");
        }
        w.engine
            .open_attempts(&operator_p(), 100)
            .await
            .expect("open");
    });
    assert_eq!(
        capture.gauge("agent_mandate_attempts_open{status=ambiguous}"),
        Some(2.0)
    );
    assert_eq!(
        capture.counter("agent_mandate_attempts_ambiguous_total{}"),
        2
    );
}

#[test]
fn an_auto_suspension_and_blocked_decisions_are_counted() {
    let rt = runtime();
    let config = EngineConfig::default()
        .with_auto_suspend_after(Some(2))
        .expect("config");
    let mut spec = backpack_spec(false);
    spec.scope.max_uses = None;
    spec.scope.amount.max_payment_attempts = None;
    let w = rt.block_on(world_with(config, spec));
    let capture = Capture::default();
    recorded(&rt, &capture, async {
        // The lifetime cap (150.00) takes one 144.00 payment; the second is blocked by the
        // decision (not a hold race: no hold is refused).
        w.engine
            .execute_payment(&agent_p(), &w.execute("pay-1"))
            .await
            .expect("pays");
        let second = w
            .engine
            .execute_payment(&agent_p(), &w.execute("pay-2"))
            .await
            .expect("refused");
        assert!(matches!(second, PaymentOutcome::Refused(_)));
        // Two refusals that count toward suspension (a blocked credential does, the cap
        // does not): the second suspends the agent.
        for k in ["bad-1", "bad-2"] {
            let mut cmd = w.execute(k);
            cmd.credential = "cred_999999".parse::<CredentialRef>().expect("ref");
            let out = w
                .engine
                .execute_payment(&agent_p(), &cmd)
                .await
                .expect("refused");
            assert!(matches!(out, PaymentOutcome::Refused(_)));
        }
        // An operator lifts it (a command with its own counter).
        w.engine
            .set_suspension(
                &operator_p(),
                &SetSuspension::new(
                    key("lift"),
                    Party::Actor(agent_mandate::domain::examples::agent().id),
                    false,
                    "reviewed".parse().expect("text"),
                ),
            )
            .await
            .expect("lifted");
    });
    let c = |k: &str| capture.counter(k);
    assert_eq!(c("agent_mandate_auto_suspensions_total{}"), 1);
    assert_eq!(c("agent_mandate_holds_total{result=placed}"), 1);
    assert_eq!(c("agent_mandate_holds_total{result=refused}"), 0);
    assert_eq!(
        c("agent_mandate_decisions_total{command=execute_payment,outcome=blocked}"),
        3
    );
    assert_eq!(
        c("agent_mandate_commands_total{command=execute_payment,outcome=refused}"),
        3
    );
    assert_eq!(
        c("agent_mandate_commands_total{command=set_suspension,outcome=done}"),
        1
    );
    // The cap blocks all three payments after the first, the credential two of them.
    assert_eq!(
        c("agent_mandate_decision_blockers_total{code=LIFETIME_LIMIT_EXCEEDED,command=execute_payment}"),
        3
    );
    assert_eq!(
        c("agent_mandate_decision_blockers_total{code=CREDENTIAL_NOT_USABLE,command=execute_payment}"),
        2
    );
    assert_bounded(&capture.keys());
}

/// An audit sink that refuses appends while `down` is set.
#[derive(Debug)]
struct FlakySink {
    inner: Arc<dyn AuditSink>,
    down: AtomicBool,
}

#[async_trait]
impl AuditSink for FlakySink {
    async fn append(&self, event: &AuditEvent) -> Result<AuditReceipt, AuditError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(AuditError::Unavailable {
                message: "the sink is down".into(),
            });
        }
        self.inner.append(event).await
    }
    async fn append_all(&self, events: &[AuditEvent]) -> Result<Option<AuditReceipt>, AuditError> {
        if self.down.load(Ordering::SeqCst) {
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

#[test]
fn an_audit_sink_outage_shows_in_the_outbox_metrics() {
    let rt = runtime();
    let w = rt.block_on(world_with(EngineConfig::default(), backpack_spec(true)));
    let sink = Arc::new(FlakySink {
        inner: w.mem.audit.clone(),
        down: AtomicBool::new(true),
    });
    let ports = Ports {
        audit: sink.clone(),
        ..w.mem.ports.clone()
    };
    let engine = Engine::new(ports, EngineConfig::default()).expect("engine");
    let capture = Capture::default();
    let (staged, delivered) = recorded(&rt, &capture, async {
        engine
            .execute_payment(&agent_p(), &w.execute("pay-1"))
            .await
            .expect("pays while the sink is down");
        let report = engine.verify_trail(1_000).await.expect("trail");
        // The trail check read the whole outbox: the gauge is exact.
        assert_eq!(
            capture.gauge("agent_mandate_audit_outbox_depth{}"),
            Some(report.staged_events as f64)
        );
        sink.down.store(false, Ordering::SeqCst);
        let delivered = engine.flush_audit().await.expect("flush");
        (report.staged_events, delivered)
    });
    assert!(staged > 0);
    assert_eq!(delivered, staged);
    let c = |k: &str| capture.counter(k);
    assert!(c("agent_mandate_audit_flush_failures_total{}") >= 1);
    assert_eq!(
        c("agent_mandate_audit_events_delivered_total{}"),
        delivered as u64
    );
    assert_eq!(
        capture.gauge("agent_mandate_audit_outbox_depth{}"),
        Some(0.0)
    );
}
