//! Crash recovery on a durable store: the engine runs in a child process that is killed with
//! SIGKILL at a persistence point of the payment path; a new process opens the same database
//! and the same (durable, fake) PSP, reconciles, retries the client's commands, and finds every
//! attempt consistent with the PSP: no hold lost, nothing charged twice, one order per attempt.
//!
//! The child is this test binary run again with `CRASH_CHILD_*` variables set (the `child`
//! test does nothing without them). It prints `CRASHPOINT <name>` when it reaches the point and
//! then waits; the parent kills it there.
#![cfg(all(feature = "sqlite", feature = "testkit"))]

mod common;
#[allow(unused_imports)]
use common::principals::*;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use agent_mandate::adapters::keyring::{VaultKey, VaultKeyring};
use agent_mandate::adapters::memory::ManualClock;
use agent_mandate::adapters::sqlite::{SqliteConfig, SqliteDatabase};
use agent_mandate::domain::{
    examples, ActorId, AttemptId, AttemptStatus, AuditEvent, BuyerId, CartSnapshot, Confirmation,
    ContentDigest, CredentialRef, Mandate, MandateId, MandateStatus, Money, Order, Party,
    PaymentAttempt, ProviderReport, ProviderStatus, SnapshotId, Suspensions, Usage,
};
use agent_mandate::engine::{
    attempt_id_for, CapturePayment, CommitOrder, CreateMandate, Engine, EngineConfig, OrderOutcome,
    TRAIL_CHECK_LIMIT,
};
use agent_mandate::ports::{
    AttemptChange, AuditSink, AuthorizeRequest, Begin, CaptureRequest, CredentialVault, Fence,
    HoldError, HoldRecord, HoldRequest, HoldState, IdempotencyScope, InsertOrder, Lookup,
    PaymentProvider, Ports, ProviderError, RefundPolicy, RefundRequest, StagedEvent, Store,
    StoreError, StoredResult, VoidRequest, Write, Written,
};
use common::backends::Backend;
use common::durable_psp::JournalPsp;
use common::engine::{backpack_spec, card, key};

/// The persistence points of the payment path where the child is killed.
const POINTS: [&str; 5] = [
    // The budget hold is stored; the attempt is not yet marked submitted.
    "after_hold",
    // The attempt is marked submitted (its events staged with it); nothing sent yet.
    "after_submit",
    // The PSP authorized (durably); the engine has not stored the answer.
    "after_authorize",
    // The PSP captured (durably); the engine has not stored the answer.
    "after_capture",
    // Payment captured and stored; the order is about to be written.
    "before_order",
];

/// Marks `point` as reached (a file the parent polls for) and waits to be killed.
fn crash_here(point: &str) -> ! {
    if let Ok(dir) = std::env::var("CRASH_CHILD_DIR") {
        let marker = Path::new(&dir).join("reached");
        std::fs::write(&marker, point).expect("marker");
    }
    loop {
        std::thread::sleep(Duration::from_secs(60));
    }
}

/// Stops the process at `point` (when armed).
#[derive(Debug)]
struct Tripwire {
    point: String,
    /// Payments of the run before the one that crashes (their calls pass).
    skip: std::sync::atomic::AtomicU32,
}

impl Tripwire {
    fn hit(&self, point: &str) {
        if self.point == point {
            use std::sync::atomic::Ordering;
            if self.skip.load(Ordering::SeqCst) == 0 {
                crash_here(point);
            }
        }
    }

    fn payment_done(&self) {
        use std::sync::atomic::Ordering;
        let _ = self
            .skip
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
    }
}

#[derive(Debug)]
struct CrashingStore {
    inner: Arc<dyn Store>,
    wire: Arc<Tripwire>,
}

#[async_trait]
impl Store for CrashingStore {
    async fn insert_mandate(&self, m: &Mandate) -> Result<(), StoreError> {
        self.inner.insert_mandate(m).await
    }
    async fn mandate(&self, id: &MandateId) -> Result<Option<Mandate>, StoreError> {
        self.inner.mandate(id).await
    }
    async fn update_mandate(&self, m: &Mandate, e: MandateStatus) -> Result<(), StoreError> {
        self.inner.update_mandate(m, e).await
    }
    async fn chain(&self, leaf: &MandateId) -> Result<Vec<Mandate>, StoreError> {
        self.inner.chain(leaf).await
    }
    async fn set_suspended(&self, p: &Party, s: bool) -> Result<(), StoreError> {
        self.inner.set_suspended(p, s).await
    }
    async fn suspensions(&self, a: &[ActorId], b: &BuyerId) -> Result<Suspensions, StoreError> {
        self.inner.suspensions(a, b).await
    }
    async fn insert_confirmation(&self, c: &Confirmation) -> Result<(), StoreError> {
        self.inner.insert_confirmation(c).await
    }
    async fn confirmations(
        &self,
        b: &BuyerId,
        s: &SnapshotId,
    ) -> Result<Vec<Confirmation>, StoreError> {
        self.inner.confirmations(b, s).await
    }
    async fn put_snapshot(&self, s: &CartSnapshot) -> Result<(), StoreError> {
        self.inner.put_snapshot(s).await
    }
    async fn snapshot(&self, id: &SnapshotId) -> Result<Option<CartSnapshot>, StoreError> {
        self.inner.snapshot(id).await
    }
    async fn usage(&self, c: &[Mandate], now: DateTime<Utc>) -> Result<Vec<Usage>, StoreError> {
        self.inner.usage(c, now).await
    }
    async fn place_hold(&self, h: &HoldRequest) -> Result<Vec<Usage>, HoldError> {
        let out = self.inner.place_hold(h).await;
        self.wire.hit("after_hold");
        out
    }
    async fn commit_hold(&self, a: &AttemptId, m: Money) -> Result<(), StoreError> {
        self.inner.commit_hold(a, m).await
    }
    async fn release_hold(&self, a: &AttemptId) -> Result<(), StoreError> {
        self.inner.release_hold(a).await
    }
    async fn refund_hold(
        &self,
        a: &AttemptId,
        m: Money,
        p: RefundPolicy,
    ) -> Result<(), StoreError> {
        self.inner.refund_hold(a, m, p).await
    }
    async fn hold(&self, a: &AttemptId) -> Result<Option<HoldRecord>, StoreError> {
        self.inner.hold(a).await
    }
    async fn insert_attempt(&self, a: &PaymentAttempt) -> Result<(), StoreError> {
        self.inner.insert_attempt(a).await
    }
    async fn attempt(&self, id: &AttemptId) -> Result<Option<PaymentAttempt>, StoreError> {
        self.inner.attempt(id).await
    }
    async fn update_attempt(&self, a: &PaymentAttempt, e: AttemptStatus) -> Result<(), StoreError> {
        self.inner.update_attempt(a, e).await
    }
    async fn attempts_in(
        &self,
        s: &[AttemptStatus],
        limit: usize,
    ) -> Result<Vec<PaymentAttempt>, StoreError> {
        self.inner.attempts_in(s, limit).await
    }
    async fn begin_idempotent(
        &self,
        s: &IdempotencyScope,
        f: &ContentDigest,
        now: DateTime<Utc>,
        lease: Duration,
    ) -> Result<Begin, StoreError> {
        self.inner.begin_idempotent(s, f, now, lease).await
    }
    async fn complete_idempotent(
        &self,
        f: &Fence,
        r: &StoredResult,
        until: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.inner.complete_idempotent(f, r, until).await
    }
    async fn abandon_idempotent(&self, f: &Fence) -> Result<(), StoreError> {
        self.inner.abandon_idempotent(f).await
    }
    async fn check_fence(&self, f: &Fence) -> Result<(), StoreError> {
        self.inner.check_fence(f).await
    }
    async fn purge_idempotent(&self, now: DateTime<Utc>) -> Result<u64, StoreError> {
        self.inner.purge_idempotent(now).await
    }
    async fn change_attempt(&self, c: &AttemptChange<'_>) -> Result<(), StoreError> {
        let out = self.inner.change_attempt(c).await;
        if out.is_ok() && c.next.status == AttemptStatus::PendingProviderResponse {
            self.wire.hit("after_submit");
        }
        out
    }
    async fn write_audited(
        &self,
        w: Write<'_>,
        events: &[AuditEvent],
    ) -> Result<Written, StoreError> {
        if matches!(w, Write::InsertOrder(_)) {
            self.wire.hit("before_order");
        }
        self.inner.write_audited(w, events).await
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
    async fn insert_order(&self, o: &Order) -> Result<InsertOrder, StoreError> {
        self.wire.hit("before_order");
        self.inner.insert_order(o).await
    }
    async fn order_for(&self, a: &AttemptId) -> Result<Option<Order>, StoreError> {
        self.inner.order_for(a).await
    }
    async fn record_block(&self, a: &ActorId) -> Result<u32, StoreError> {
        self.inner.record_block(a).await
    }
    async fn reset_blocks(&self, a: &ActorId) -> Result<(), StoreError> {
        self.inner.reset_blocks(a).await
    }
    async fn consume_challenge(
        &self,
        u: &agent_mandate::ports::ChallengeUse,
    ) -> Result<agent_mandate::ports::ChallengeConsumed, StoreError> {
        self.inner.consume_challenge(u).await
    }

    async fn purge_challenges(
        &self,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<u64, StoreError> {
        self.inner.purge_challenges(now).await
    }
}

#[derive(Debug)]
struct CrashingPsp {
    inner: Arc<JournalPsp>,
    wire: Arc<Tripwire>,
}

#[async_trait]
impl PaymentProvider for CrashingPsp {
    fn deadline(&self) -> Duration {
        Duration::from_secs(10)
    }

    async fn authorize(&self, r: &AuthorizeRequest) -> Result<ProviderReport, ProviderError> {
        let out = self.inner.authorize(r).await;
        self.wire.hit("after_authorize");
        out
    }
    async fn capture(&self, r: &CaptureRequest) -> Result<ProviderReport, ProviderError> {
        let out = self.inner.capture(r).await;
        self.wire.hit("after_capture");
        out
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

/// The files (and database) of one run.
struct Run {
    dir: PathBuf,
    backend: Backend,
}

impl Run {
    fn db(&self) -> PathBuf {
        self.dir.join("state.db")
    }

    fn journal(&self) -> PathBuf {
        self.dir.join("psp.json")
    }

    /// The run as the child's environment describes it.
    fn from_env(dir: &str) -> Run {
        let backend = match (
            std::env::var("CRASH_CHILD_PG_URL"),
            std::env::var("CRASH_CHILD_PG_SCHEMA"),
        ) {
            (Ok(url), Ok(schema)) => Backend::Postgres { url, schema },
            _ => Backend::Sqlite,
        };
        Run {
            dir: PathBuf::from(dir),
            backend,
        }
    }

    /// The store and audit sink of the run, opened anew (as a restarted process would).
    async fn open(&self) -> (Arc<dyn Store>, Arc<dyn AuditSink>) {
        self.backend.open(&self.db()).await
    }
}

/// An engine on the run's database and PSP journal, with the clock at `now`.
async fn engine_on(
    run: &Run,
    now: DateTime<Utc>,
    wire: Option<Arc<Tripwire>>,
) -> (Engine, Arc<dyn AuditSink>, Arc<JournalPsp>) {
    let (store, audit) = run.open().await;
    let psp = Arc::new(JournalPsp::open(&run.journal()));
    let (store, provider): (Arc<dyn Store>, Arc<dyn PaymentProvider>) = match wire {
        Some(wire) => (
            Arc::new(CrashingStore {
                inner: store,
                wire: wire.clone(),
            }),
            Arc::new(CrashingPsp {
                inner: psp.clone(),
                wire,
            }),
        ),
        None => (store, psp.clone()),
    };
    // The vault is not what this test is about: every process opens the run's vault file and
    // stores the card under the same key, which answers the reference stored first.
    let keyring = VaultKeyring::new(VaultKey::new("test", [7; 32]).expect("key"));
    let vault = Arc::new(
        SqliteDatabase::open(SqliteConfig::file(run.dir.join("vault.db")))
            .expect("vault db")
            .vault(keyring),
    );
    the_card(vault.as_ref()).await;
    let ports = Ports {
        store,
        provider,
        vault,
        audit: audit.clone(),
        clock: Arc::new(ManualClock::new(now)),
    };
    (
        Engine::new(ports, EngineConfig::default()).expect("engine configuration"),
        audit,
        psp,
    )
}

/// The agent's card: stored under one key, so every process gets the same reference.
async fn the_card(vault: &dyn CredentialVault) -> CredentialRef {
    vault
        .store(&key("card"), card(&examples::agent().id, "pm_card_visa"))
        .await
        .expect("card")
        .credential
        .reference
}

fn execute(k: &str, credential: CredentialRef) -> agent_mandate::engine::ExecutePayment {
    let snapshot = examples::travel_backpack_snapshot();
    agent_mandate::engine::ExecutePayment::new(
        key(k),
        examples::authorize_request(&snapshot),
        snapshot.clone(),
        examples::valid_checkout(snapshot.id()),
        credential,
    )
}

fn capture(k: &str, attempt: &AttemptId) -> CapturePayment {
    CapturePayment::new(key(k), attempt.clone())
}

fn commit(k: &str, attempt: &AttemptId) -> CommitOrder {
    CommitOrder::new(
        key(k),
        attempt.clone(),
        examples::valid_checkout(examples::travel_backpack_snapshot().id()),
    )
}

/// One payment as a client runs it: execute, capture, commit the order.
async fn pay(engine: &Engine, n: u32) -> AttemptId {
    let out = engine
        .execute_payment(
            &agent_p(),
            &execute(
                &format!("pay-{n}"),
                the_card(engine.ports().vault.as_ref()).await,
            ),
        )
        .await
        .expect("execute");
    let attempt = out.attempt().expect("allowed").clone();
    if attempt.status == AttemptStatus::Authorized {
        engine
            .capture(&agent_p(), &capture(&format!("capture-{n}"), &attempt.id))
            .await
            .expect("capture");
    }
    let order = engine
        .commit_order(&agent_p(), &commit(&format!("order-{n}"), &attempt.id))
        .await
        .expect("order");
    assert!(
        matches!(
            order,
            OrderOutcome::Committed { .. } | OrderOutcome::Existing { .. }
        ),
        "{order:?}"
    );
    attempt.id
}

/// The child: a first payment completes, the second is killed at the point.
#[tokio::test]
async fn child() {
    let (Ok(dir), Ok(point)) = (
        std::env::var("CRASH_CHILD_DIR"),
        std::env::var("CRASH_CHILD_POINT"),
    ) else {
        return;
    };
    let run = Run::from_env(&dir);
    let wire = Arc::new(Tripwire {
        point,
        skip: std::sync::atomic::AtomicU32::new(1),
    });
    let (engine, _db, _psp) = engine_on(&run, examples::now(), Some(wire.clone())).await;
    engine
        .create_mandate(
            &buyer_p(),
            &CreateMandate::new(key("create-mandate-001"), backpack_spec(true)),
        )
        .await
        .expect("mandate");
    pay(&engine, 1).await;
    wire.payment_done();
    pay(&engine, 2).await;
    panic!("the child finished without reaching its crash point");
}

/// Runs the child until it reaches `point`, then kills it with SIGKILL.
fn run_child_until(run: &Run, point: &str) {
    let dir = &run.dir;
    let exe = std::env::current_exe().expect("test binary");
    let mut command = Command::new(exe);
    command
        .args(["--exact", "child", "--test-threads=1"])
        .env("CRASH_CHILD_DIR", dir)
        .env("CRASH_CHILD_POINT", point);
    if let Backend::Postgres { url, schema } = &run.backend {
        command
            .env("CRASH_CHILD_PG_URL", url)
            .env("CRASH_CHILD_PG_SCHEMA", schema);
    }
    let mut child = command
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn the child");
    let marker = dir.join("reached");
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let reached = loop {
        if let Ok(text) = std::fs::read_to_string(&marker)
            && text == point
        {
            break true;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("the child exited ({status}) without reaching {point}");
        }
        if std::time::Instant::now() > deadline {
            break false;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    // `Child::kill` sends SIGKILL on Unix: no destructor, no flush, no rollback code runs.
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_file(&marker);
    assert!(reached, "the child did not reach {point} within 120 s");
}

fn status_of(report: &ProviderReport) -> AttemptStatus {
    match report.status {
        ProviderStatus::Authorized => AttemptStatus::Authorized,
        ProviderStatus::Captured if report.captured == report.authorized => AttemptStatus::Captured,
        ProviderStatus::Captured => AttemptStatus::PartiallyCaptured,
        ProviderStatus::Cancelled => AttemptStatus::Cancelled,
        ref other => panic!("the journal PSP never reports {other:?}"),
    }
}

/// Every attempt agrees with the PSP; holds and usage agree with both.
async fn assert_consistent(engine: &Engine, psp: &JournalPsp, point: &str) {
    let store = &engine.ports().store;
    let attempts = store
        .attempts_in(&AttemptStatus::ALL, 1000)
        .await
        .expect("attempts");
    let payments = psp.payments();
    let mut held = 0i64;
    let mut spent = 0i64;
    for a in &attempts {
        let ctx = format!("{point}: attempt {} ({})", a.id, a.status);
        assert!(
            psp.effects("authorize", a.id.as_str()) <= 1,
            "{ctx}: authorized twice"
        );
        assert!(
            psp.effects("capture", a.id.as_str()) <= 1,
            "{ctx}: captured twice"
        );
        let at_psp: Vec<_> = payments
            .iter()
            .filter(|p| p.attempt_id == a.id.as_str())
            .collect();
        assert!(at_psp.len() <= 1, "{ctx}: two payments at the PSP");
        let hold = store.hold(&a.hold_id()).await.expect("hold");
        match at_psp.first() {
            Some(p) => {
                assert_eq!(a.status, status_of(&p.report), "{ctx}: status vs the PSP");
                assert_eq!(a.captured, p.report.captured, "{ctx}: captured vs the PSP");
                let hold = hold.unwrap_or_else(|| panic!("{ctx}: the hold is lost"));
                match a.status {
                    AttemptStatus::Authorized => {
                        assert_eq!(hold.state, HoldState::Held, "{ctx}");
                        held += hold.amount.minor_units();
                    }
                    _ => {
                        assert_eq!(hold.state, HoldState::Committed, "{ctx}");
                        assert_eq!(hold.committed, a.captured, "{ctx}");
                        spent += hold.committed.minor_units();
                    }
                }
            }
            None => {
                // The PSP never saw it: nothing may count as spent for it.
                assert!(
                    matches!(
                        a.status,
                        AttemptStatus::AuthorityValidated | AttemptStatus::Failed
                    ),
                    "{ctx}: unknown to the PSP"
                );
                if let Some(h) = hold {
                    assert_ne!(h.state, HoldState::Committed, "{ctx}");
                    if h.state == HoldState::Held {
                        held += h.amount.minor_units();
                    }
                }
            }
        }
        if let Some(order) = store.order_for(&a.id).await.expect("order") {
            assert!(
                matches!(
                    a.status,
                    AttemptStatus::Captured | AttemptStatus::PartiallyCaptured
                ),
                "{ctx}: an order for an attempt that is not paid ({order:?})"
            );
        }
    }
    let mandate = store
        .mandate(&examples::travel_backpack_mandate().id().clone())
        .await
        .expect("read")
        .expect("the mandate survived");
    let usage = store
        .usage(std::slice::from_ref(&mandate), examples::now())
        .await
        .expect("usage")
        .remove(0);
    assert_eq!(usage.spent.minor_units(), spent, "{point}: spent");
    assert_eq!(
        usage.held.minor_units(),
        held,
        "{point}: held (no hold lost)"
    );
    // I15: every committed change has its events, delivered or waiting in the outbox; after
    // a flush, all of them are in the trail.
    let trail = engine
        .verify_trail(TRAIL_CHECK_LIMIT)
        .await
        .unwrap_or_else(|e| panic!("{point}: trail check: {e}"));
    assert!(trail.is_complete(), "{point}: I15: {:?}", trail.missing);
    engine
        .flush_audit()
        .await
        .unwrap_or_else(|e| panic!("{point}: flush: {e}"));
    let trail = engine
        .verify_trail(TRAIL_CHECK_LIMIT)
        .await
        .unwrap_or_else(|e| panic!("{point}: trail check: {e}"));
    assert!(
        trail.is_complete() && trail.staged_events == 0,
        "{point}: I15 after a flush: {trail:?}"
    );
}

fn temp_dir(name: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("agent-mandate-crash-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

#[tokio::test]
async fn sqlite_a_payment_killed_at_each_persistence_point_recovers() {
    for point in POINTS {
        let dir = temp_dir(&format!("sqlite-{point}"));
        let run = Run {
            dir: dir.clone(),
            backend: Backend::Sqlite,
        };
        crash_and_recover(&run, point).await;
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[cfg(feature = "postgres")]
#[tokio::test]
async fn postgres_a_payment_killed_at_each_persistence_point_recovers() {
    let Some(url) = common::backends::database_url() else {
        return;
    };
    for point in POINTS {
        let dir = temp_dir(&format!("pg-{point}"));
        let schema = format!("crash_{}_{}", std::process::id(), point);
        let run = Run {
            dir: dir.clone(),
            backend: Backend::Postgres {
                url: url.clone(),
                schema: schema.clone(),
            },
        };
        crash_and_recover(&run, point).await;
        run.backend.drop_schema().await;
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// Kills a child at `point`, restarts on the same state, reconciles and checks; then retries
/// the client's commands and checks again.
async fn crash_and_recover(run: &Run, point: &str) {
    run_child_until(run, point);
    // Restart after every lease has lapsed.
    let later = examples::now() + chrono::Duration::minutes(10);
    let (engine, audit, psp) = engine_on(run, later, None).await;

    // Every change the killed process committed has its events (I15), before anything runs.
    let trail = engine
        .verify_trail(TRAIL_CHECK_LIMIT)
        .await
        .unwrap_or_else(|e| panic!("{point}: trail check: {e}"));
    assert!(
        trail.is_complete(),
        "{point}: I15 after the crash: {:?}",
        trail.missing
    );

    // The audit chain survived the kill.
    audit
        .verify()
        .await
        .unwrap_or_else(|e| panic!("{point}: the audit chain after the crash: {e}"));

    // Reconcile every attempt against the PSP.
    let store = engine.ports().store.clone();
    for a in store.attempts_in(&AttemptStatus::ALL, 1000).await.unwrap() {
        engine
            .reconcile(&a.id)
            .await
            .unwrap_or_else(|e| panic!("{point}: reconcile {}: {e}", a.id));
    }
    assert_consistent(&engine, &psp, point).await;
    let crashed = attempt_id_for(&examples::agent().id, &key("pay-2"));
    let before = store.attempt(&crashed).await.unwrap().map(|a| a.status);
    eprintln!("{point}: after restart and reconcile, the crashed payment is {before:?}");

    // The client retries its commands with the same keys: the payment completes once.
    let again = if point == "after_submit" {
        // Nothing reached the PSP and the submission's deadline has passed: the attempt
        // failed (I13, after its deadline only) and its hold was released; the client pays
        // again under a new key.
        let a = store.attempt(&crashed).await.unwrap().expect("attempt");
        assert_eq!(a.status, AttemptStatus::Failed, "{point}");
        assert_eq!(psp.effects("authorize", crashed.as_str()), 0, "{point}");
        3
    } else {
        let second = pay(&engine, 2).await;
        assert_eq!(second, crashed);
        2
    };
    pay(&engine, again).await;
    // And a replay of everything changes nothing.
    pay(&engine, again).await;
    assert_consistent(&engine, &psp, point).await;
    for n in [1u32, again] {
        let id = attempt_id_for(&examples::agent().id, &key(&format!("pay-{n}")));
        let a = store.attempt(&id).await.unwrap().expect("attempt");
        assert_eq!(a.status, AttemptStatus::Captured, "{point}: payment {n}");
        assert_eq!(psp.effects("authorize", id.as_str()), 1, "{point}: {n}");
        assert_eq!(psp.effects("capture", id.as_str()), 1, "{point}: {n}");
        assert!(
            store.order_for(&id).await.unwrap().is_some(),
            "{point}: {n}"
        );
    }
    let head = audit
        .verify()
        .await
        .expect("the chain verifies after recovery");
    assert!(head.is_some());
}
