//! I2, I3 and I9 under real concurrency: 8 threads, each with its own current-thread runtime,
//! run 1,000 payments each against ONE delegation chain (a root created by a human, a child
//! derived by the root's agent, a grandchild derived by the child's agent; every payment runs
//! under the grandchild, by its agent, with its own stored credential) whose caps are tight
//! (lifetime and 24 h amount of EUR 6,000, about 44 payments, on all three levels), so most
//! payments are refused.
//!
//! Mixed in: payments that capture on authorization; follow-ups that void, capture and refund
//! (the refund policy is `RESTORE_ALL`, so headroom keeps coming back and the chain stays at its
//! caps for the whole run instead of filling up once); the same idempotency key executed at the same moment by two threads; and
//! PSP faults (`TimeoutAfterEffect`, `TimeoutBeforeEffect`, `Transient`, `Decline`,
//! `DuplicateDelivery`) aimed at chosen attempts. `FakePsp`'s fault queue is shared, so a thin
//! wrapper serialises `authorize` calls and injects the planned fault just before the call it
//! is meant for: the plan is deterministic whatever the interleaving.
//!
//! Checked: a monitor thread samples the usage of every level during the run and after it, and
//! no sample exceeds a cap (I2); the PSP's money (authorized - voided - refunded; per status)
//! equals the store's held + spent on every level; no PSP key authorized twice, no attempt sent
//! to the PSP more often than its faults explain, and every shared key executed at most once
//! (I3); the audit chain verifies (I9).
#![cfg(feature = "testkit")]

mod common;
#[allow(unused_imports)]
use common::principals::*;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use agent_mandate::adapters::memory::MemoryPorts;
use agent_mandate::domain::examples;
use agent_mandate::domain::{
    Actor, ActorId, ActorKind, AttemptId, AttemptStatus, AuditKind, CartSnapshot, CredentialRef,
    Currency, HoldAction, Mandate, MandateSpec, Outcome, PaymentAttempt, ProviderReport,
    ProviderStatus, Usage,
};
use agent_mandate::engine::{
    attempt_id_for, CapturePayment, CreateMandate, DeriveMandate, Engine, EngineConfig,
    EngineError, ExecutePayment, PaymentOutcome, RefundPayment, VoidPayment,
};
use agent_mandate::ports::{
    AuditSink as _, AuthorizeRequest, BudgetLimits, CaptureRequest, Clock as _, Lookup,
    PaymentProvider, ProviderError, RefundPolicy, RefundRequest, VoidRequest,
};
use agent_mandate::testkit::{FakePsp, Fault, Op};
use common::engine::{backpack_spec, card, key};
use common::{eur, id, sub_agent};

const THREADS: usize = 8;
const PER_THREAD: usize = 1_000;
/// Attempts a thread keeps open before it releases the oldest (void, or capture and refund).
const OUTSTANDING: usize = 6;
/// Every cap of every level: lifetime and 24 h amount (about 44 payments of the mix).
const CAP: &str = "6000.00";

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The agent the grandchild is delegated to.
fn leaf_agent() -> Actor {
    Actor {
        id: id::<ActorId>("agent_leaf_9"),
        kind: ActorKind::Agent,
    }
}

/// The idempotency key of payment `i` of thread `t`: every tenth is shared by a pair of threads.
fn payment_key(t: usize, i: usize) -> String {
    if is_shared(i) {
        format!("shared-p{}-{i}", t / 2)
    } else {
        format!("t{t}-{i}")
    }
}

fn is_shared(i: usize) -> bool {
    i % 10 == 3
}

/// The fault planned for payment `i` (never for a shared key: `i % 25` is 1, 2, 4, 5 or 6, so
/// `i` ends in 0, 1, 2, 4, 5, 6, 7 or 9).
fn planned_fault(i: usize) -> Option<Fault> {
    match i % 25 {
        1 => Some(Fault::TimeoutAfterEffect),
        2 => Some(Fault::Transient),
        4 => Some(Fault::Decline("card_declined".into())),
        5 => Some(Fault::DuplicateDelivery),
        6 => Some(Fault::TimeoutBeforeEffect),
        _ => None,
    }
}

/// Wraps the fake PSP: serialises `authorize` so a fault injected for one attempt is consumed
/// by that attempt's call, and counts the calls each attempt made.
#[derive(Debug)]
struct PlannedFaults {
    inner: Arc<FakePsp>,
    /// Fault per attempt; each fires on the attempt's first authorize call only.
    plan: HashMap<AttemptId, Fault>,
    gate: tokio::sync::Mutex<()>,
    calls: Mutex<HashMap<AttemptId, u32>>,
    fired: Mutex<HashMap<AttemptId, Fault>>,
}

#[async_trait::async_trait]
impl PaymentProvider for PlannedFaults {
    fn deadline(&self) -> Duration {
        Duration::from_secs(10)
    }

    async fn authorize(&self, request: &AuthorizeRequest) -> Result<ProviderReport, ProviderError> {
        let _serial = self.gate.lock().await;
        let first = {
            let mut calls = lock(&self.calls);
            let n = calls.entry(request.attempt_id.clone()).or_insert(0);
            *n += 1;
            *n == 1
        };
        if first && let Some(fault) = self.plan.get(&request.attempt_id) {
            self.inner.inject(Some(Op::Authorize), fault.clone());
            lock(&self.fired).insert(request.attempt_id.clone(), fault.clone());
        }
        self.inner.authorize(request).await
    }

    async fn capture(&self, request: &CaptureRequest) -> Result<ProviderReport, ProviderError> {
        self.inner.capture(request).await
    }

    async fn void(&self, request: &VoidRequest) -> Result<ProviderReport, ProviderError> {
        self.inner.void(request).await
    }

    async fn refund(&self, request: &RefundRequest) -> Result<ProviderReport, ProviderError> {
        self.inner.refund(request).await
    }

    async fn lookup(&self, lookup: &Lookup) -> Result<Option<ProviderReport>, ProviderError> {
        self.inner.lookup(lookup).await
    }
}

/// One level of the chain, tight: lifetime and 24 h amount at [`CAP`], no count or use limits.
fn tight(mut spec: MandateSpec) -> MandateSpec {
    spec.scope.budgets.lifetime = Some(eur(CAP));
    spec.scope.budgets.windows[0].max_amount = Some(eur(CAP));
    spec.scope.budgets.windows[0].max_count = None;
    spec.scope.max_uses = None;
    spec.scope.amount.max_payment_attempts = None;
    spec
}

struct Setup {
    mem: MemoryPorts,
    psp: Arc<FakePsp>,
    faults: Arc<PlannedFaults>,
    engine: Engine,
    chain: Vec<Mandate>,
    credential: CredentialRef,
    snapshots: Vec<CartSnapshot>,
}

async fn setup() -> Setup {
    let leaf = leaf_agent();
    let mut plan = HashMap::new();
    for t in 0..THREADS {
        for i in 0..PER_THREAD {
            if let Some(f) = planned_fault(i) {
                plan.insert(attempt_id_for(&leaf.id, &key(&payment_key(t, i))), f);
            }
        }
    }
    let mut slot = None;
    let mem = MemoryPorts::new(examples::now(), |vault, _clock| {
        let psp = Arc::new(FakePsp::with_vault(vault));
        let faults = Arc::new(PlannedFaults {
            inner: psp.clone(),
            plan,
            gate: tokio::sync::Mutex::new(()),
            calls: Mutex::new(HashMap::new()),
            fired: Mutex::new(HashMap::new()),
        });
        slot = Some((psp, faults.clone()));
        faults
    });
    let (psp, faults) = slot.expect("psp built");
    let config = EngineConfig::default()
        .with_auto_suspend_after(None)
        .expect("config")
        .with_refund_policy(RefundPolicy::RESTORE_ALL);
    let engine = Engine::new(mem.ports.clone(), config).expect("engine configuration");

    let mut root = tight(backpack_spec(true));
    root.id = id("mandate_root");
    let root = engine
        .create_mandate(&buyer_p(), &CreateMandate::new(key("create-root"), root))
        .await
        .expect("root created by a human")
        .value;
    assert_eq!(*root.actor(), examples::agent());

    let mut child = tight(root.spec().clone());
    child.id = id("mandate_child");
    child.parent_id = Some(root.id().clone());
    child.actor = sub_agent();
    let child = engine
        .derive_mandate(&agent_p(), &DeriveMandate::new(key("derive-child"), child))
        .await
        .expect("child derived by the root's agent")
        .value;

    let mut grandchild = tight(child.spec().clone());
    grandchild.id = id("mandate_leaf");
    grandchild.parent_id = Some(child.id().clone());
    grandchild.actor = leaf.clone();
    let grandchild = engine
        .derive_mandate(
            &who(&sub_agent()),
            &DeriveMandate::new(key("derive-leaf"), grandchild),
        )
        .await
        .expect("grandchild derived by the child's agent")
        .value;

    let chain = mem.ports.store.chain(grandchild.id()).await.expect("chain");
    assert_eq!(chain.len(), 3);
    let credential = engine
        .store_credential(
            &buyer_p(),
            &key("leaf-card"),
            card(&leaf.id, "pm_card_visa"),
        )
        .await
        .expect("leaf card")
        .value
        .reference;
    // EUR 130.00, 134.00, 139.00 and 144.00.
    let snapshots = ["1.00", "5.00", "10.00", "15.00"]
        .into_iter()
        .map(|tax| {
            CartSnapshot::new(examples::backpack_content("0.00", tax, Currency::EUR))
                .expect("snapshot")
        })
        .collect();
    Setup {
        mem,
        psp,
        faults,
        engine,
        chain,
        credential,
        snapshots,
    }
}

impl Setup {
    fn command(&self, t: usize, i: usize) -> ExecutePayment {
        let snapshot = self.snapshots[i % self.snapshots.len()].clone();
        let mut request = examples::authorize_request(&snapshot);
        request.actor = leaf_agent();
        request.mandate_id = id("mandate_leaf");
        ExecutePayment::new(
            key(&payment_key(t, i)),
            request,
            snapshot.clone(),
            examples::valid_checkout(snapshot.id()),
            self.credential.clone(),
        )
        .with_capture(i.is_multiple_of(5))
    }
}

/// Every cap of every level that `usage` exceeds, as text (empty: none).
fn violations(chain: &[Mandate], usage: &[Usage]) -> Vec<String> {
    let mut out = Vec::new();
    for (m, u) in chain.iter().zip(usage) {
        let limits = BudgetLimits::of(m);
        let used = u.held.minor_units() + u.spent.minor_units();
        if let Some(cap) = limits.lifetime
            && used > cap.minor_units()
        {
            out.push(format!(
                "{}: held {} + spent {} > lifetime {cap}",
                m.id(),
                u.held,
                u.spent
            ));
        }
        for w in &limits.windows {
            let Some(wu) = u.window(w.window_seconds) else {
                out.push(format!(
                    "{}: window {} not reported",
                    m.id(),
                    w.window_seconds
                ));
                continue;
            };
            if w.max_amount.is_some_and(|max| wu.amount.exceeds(&max)) {
                out.push(format!(
                    "{}: window amount {} over its cap",
                    m.id(),
                    wu.amount
                ));
            }
            if w.max_count.is_some_and(|max| wu.count > max) {
                out.push(format!(
                    "{}: window count {} over its cap",
                    m.id(),
                    wu.count
                ));
            }
        }
    }
    out
}

#[derive(Debug, Default)]
struct Tally {
    authorized: u64,
    refused: u64,
    hold_refused: u64,
    failed: u64,
    ambiguous: u64,
    replayed: u64,
    in_flight: u64,
    transient: u64,
    released: u64,
}

impl Tally {
    fn add(&mut self, o: &Tally) {
        self.authorized += o.authorized;
        self.refused += o.refused;
        self.hold_refused += o.hold_refused;
        self.failed += o.failed;
        self.ambiguous += o.ambiguous;
        self.replayed += o.replayed;
        self.in_flight += o.in_flight;
        self.transient += o.transient;
        self.released += o.released;
    }
}

/// What a thread saw for each shared key: `true` when its call executed the payment (an attempt
/// reached the PSP), `false` when it was refused (a refusal frees the key: the other thread
/// decides again), answered as a replay, or in flight.
type SharedLog = Mutex<HashMap<String, Vec<bool>>>;

fn finished(
    out: Result<PaymentOutcome, EngineError>,
    what: &str,
    attempt_id: &AttemptId,
    expected: AttemptStatus,
) -> PaymentAttempt {
    match out {
        Ok(PaymentOutcome::Done { attempt, .. }) if attempt.status == expected => attempt,
        other => panic!("{what} of {attempt_id}: {other:?}"),
    }
}

async fn refund_all(engine: &Engine, a: &PaymentAttempt) {
    let out = engine
        .refund(
            &who(&leaf_agent()),
            &RefundPayment::new(key(&format!("refund-{}", a.id)), a.id.clone()),
        )
        .await;
    finished(out, "refund", &a.id, AttemptStatus::Refunded);
}

/// Releases an attempt the thread holds: void it, or capture it and refund everything, or
/// refund it if it captured on authorization. Returns false if it is still unresolved.
async fn release(engine: &Engine, attempt_id: &AttemptId, n: usize) -> bool {
    let a = engine.reconcile(attempt_id).await.expect("reconcile");
    match a.status {
        AttemptStatus::Authorized if n.is_multiple_of(2) => {
            let out = engine
                .void(
                    &who(&leaf_agent()),
                    &VoidPayment::new(key(&format!("void-{}", a.id)), a.id.clone()),
                )
                .await;
            finished(out, "void", &a.id, AttemptStatus::Cancelled);
            true
        }
        AttemptStatus::Authorized => {
            let out = engine
                .capture(
                    &who(&leaf_agent()),
                    &CapturePayment::new(key(&format!("capture-{}", a.id)), a.id.clone()),
                )
                .await;
            let captured = finished(out, "capture", &a.id, AttemptStatus::Captured);
            refund_all(engine, &captured).await;
            true
        }
        AttemptStatus::Captured => {
            refund_all(engine, &a).await;
            true
        }
        AttemptStatus::Failed | AttemptStatus::Cancelled | AttemptStatus::Refunded => true,
        AttemptStatus::NotStarted
        | AttemptStatus::AuthorityValidated
        | AttemptStatus::PendingProviderResponse
        | AttemptStatus::RequiresBuyerAction
        | AttemptStatus::PartiallyCaptured
        | AttemptStatus::PartiallyRefunded
        | AttemptStatus::Ambiguous => false,
    }
}

async fn run_thread(s: &Setup, t: usize, pair: &tokio::sync::Barrier, shared: &SharedLog) -> Tally {
    let mut tally = Tally::default();
    let mut open: VecDeque<AttemptId> = VecDeque::new();
    for i in 0..PER_THREAD {
        let cmd = s.command(t, i);
        if is_shared(i) {
            // Both threads of the pair send this key at the same moment.
            tokio::time::timeout(Duration::from_secs(20), pair.wait())
                .await
                .expect("the other thread of the pair arrives");
        }
        let mut result = s.engine.execute_payment(&payer(&cmd), &cmd).await;
        if matches!(&result, Err(e) if e.is_retryable() && matches!(e, EngineError::Provider(_))) {
            // A transient PSP failure: the same command, with the same key, once more.
            tally.transient += 1;
            result = s.engine.execute_payment(&payer(&cmd), &cmd).await;
        }
        let executed = match result {
            Ok(PaymentOutcome::Refused(decision)) => {
                tally.refused += 1;
                // Refused by the atomic hold itself: the usage read before it looked fine, but
                // another thread took the headroom in between.
                if decision
                    .blockers
                    .iter()
                    .any(|b| b.message.starts_with("the budget hold was refused"))
                {
                    tally.hold_refused += 1;
                }
                false
            }
            Ok(PaymentOutcome::Replayed { .. }) => {
                tally.replayed += 1;
                false
            }
            Ok(PaymentOutcome::Done { attempt, .. }) => {
                match attempt.status {
                    AttemptStatus::Authorized | AttemptStatus::Captured => tally.authorized += 1,
                    AttemptStatus::Ambiguous => tally.ambiguous += 1,
                    AttemptStatus::Failed => tally.failed += 1,
                    other => panic!("payment {t}/{i} ended {other}"),
                }
                open.push_back(attempt.id);
                true
            }
            Err(EngineError::IdempotencyInFlight { .. }) => {
                tally.in_flight += 1;
                false
            }
            Ok(other) => panic!("payment {t}/{i}: unexpected outcome {other:?}"),
            Err(e) => panic!("payment {t}/{i} ({}): {e}", cmd.key),
        };
        if is_shared(i) {
            lock(shared)
                .entry(cmd.key.to_string())
                .or_default()
                .push(executed);
        }
        // Release the oldest open attempt every fifth payment, and whenever too many are open:
        // the freed headroom is raced for by every thread.
        if (i.is_multiple_of(5) || open.len() > OUTSTANDING)
            && let Some(oldest) = open.pop_front()
        {
            if release(&s.engine, &oldest, i).await {
                tally.released += 1;
            } else {
                open.push_back(oldest);
            }
        }
    }
    tally
}

fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

#[test]
fn eight_threads_on_one_delegation_chain_never_overspend_or_double_authorize() {
    let started = Instant::now();
    let rt = current_thread();
    let s = rt.block_on(setup());
    let pairs: Vec<tokio::sync::Barrier> = (0..THREADS / 2)
        .map(|_| tokio::sync::Barrier::new(2))
        .collect();
    let shared: SharedLog = Mutex::new(HashMap::new());
    let done = AtomicBool::new(false);
    let samples = AtomicU64::new(0);
    let peak = AtomicU64::new(0);
    let seen: Mutex<Vec<String>> = Mutex::new(Vec::new());

    let mut total = Tally::default();
    std::thread::scope(|scope| {
        // The monitor: usage of every level, sampled while the payments run (I2).
        let monitor = scope.spawn(|| {
            let rt = current_thread();
            while !done.load(Ordering::Acquire) {
                let now = s.mem.clock.now();
                let usage = rt
                    .block_on(s.mem.ports.store.usage(&s.chain, now))
                    .expect("usage");
                let bad = violations(&s.chain, &usage);
                if !bad.is_empty() {
                    lock(&seen).extend(bad);
                }
                let leaf = usage.last().expect("leaf usage");
                let used = (leaf.held.minor_units() + leaf.spent.minor_units()).max(0);
                peak.fetch_max(u64::try_from(used).unwrap_or(0), Ordering::Relaxed);
                samples.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_micros(200));
            }
        });
        let workers: Vec<_> = (0..THREADS)
            .map(|t| {
                let (s, pair, shared) = (&s, &pairs[t / 2], &shared);
                scope.spawn(move || current_thread().block_on(run_thread(s, t, pair, shared)))
            })
            .collect();
        for w in workers {
            match w.join() {
                Ok(tally) => total.add(&tally),
                Err(panic) => {
                    done.store(true, Ordering::Release);
                    std::panic::resume_unwind(panic);
                }
            }
        }
        done.store(true, Ordering::Release);
        monitor.join().expect("monitor");
    });
    let run_time = started.elapsed();

    let seen = seen.into_inner().unwrap_or_else(|e| e.into_inner());
    assert!(
        seen.is_empty(),
        "I2: caps exceeded during the run: {seen:#?}"
    );
    let samples = samples.into_inner();
    assert!(samples > 0, "the monitor sampled the usage");
    // The caps were pressing: at some sample, less than one payment of headroom was left.
    let peak = peak.into_inner();
    assert!(
        peak + 14_400 > u64::try_from(eur(CAP).minor_units()).expect("cap"),
        "the monitor saw at most {peak} minor units used"
    );

    let lost_races = rt.block_on(check_after_the_run(&s, &total, &shared));
    let faults = lock(&s.faults.fired).clone();
    let count = |f: fn(&Fault) -> bool| faults.values().filter(|x| f(x)).count();
    eprintln!(
        "concurrency: {} payments on {THREADS} threads in {:.2?}: {} authorized, {} refused \
         ({} by the hold; {lost_races} hold races lost and decided again), {} failed, {} ambiguous, {} replayed, {} in flight, {} transient retries, {} released; \
         faults fired: {} timeout-after, {} timeout-before, {} transient, {} decline, {} \
         duplicate; {samples} monitor samples",
        THREADS * PER_THREAD,
        run_time,
        total.authorized,
        total.refused,
        total.hold_refused,
        total.failed,
        total.ambiguous,
        total.replayed,
        total.in_flight,
        total.transient,
        total.released,
        count(|f| *f == Fault::TimeoutAfterEffect),
        count(|f| *f == Fault::TimeoutBeforeEffect),
        count(|f| *f == Fault::Transient),
        count(|f| matches!(f, Fault::Decline(_))),
        count(|f| *f == Fault::DuplicateDelivery),
    );
}

/// Runs the checks after the run; returns how many allowed decisions lost the race for the
/// hold (another thread took the headroom between the usage read and the hold) and were
/// decided again.
async fn check_after_the_run(s: &Setup, total: &Tally, shared: &SharedLog) -> usize {
    let store = &s.mem.ports.store;
    let now = s.mem.clock.now();

    // Every fault aimed at an attempt fired for that attempt only, and the queue is empty.
    assert_eq!(
        s.psp.queued_faults(),
        0,
        "every injected fault was consumed"
    );
    let fired = lock(&s.faults.fired).clone();
    for kind in [
        Fault::TimeoutAfterEffect,
        Fault::Transient,
        Fault::Decline("card_declined".into()),
        Fault::DuplicateDelivery,
        Fault::TimeoutBeforeEffect,
    ] {
        assert!(
            fired.values().any(|f| *f == kind),
            "no payment with the fault {kind:?} reached the PSP"
        );
    }
    assert_eq!(total.transient, count_of(&fired, &Fault::Transient));
    for (attempt_id, fault) in &fired {
        let a = store
            .attempt(attempt_id)
            .await
            .expect("attempt")
            .expect("a faulted attempt exists");
        if let Fault::Decline(code) = fault {
            assert_eq!(a.status, AttemptStatus::Failed, "{attempt_id}");
            assert_eq!(a.decline_code.as_deref(), Some(code.as_str()));
        }
    }

    // Shared keys: at most one of the two threads executed the payment (I3).
    let shared = lock(shared).clone();
    assert_eq!(shared.len(), (THREADS / 2) * PER_THREAD.div_ceil(10));
    for (k, seen) in &shared {
        assert_eq!(seen.len(), 2, "{k}: both threads sent it");
        assert!(
            seen.iter().filter(|&&executed| executed).count() <= 1,
            "{k}: executed by at most one thread: {seen:?}"
        );
    }

    // I3 at the PSP: no key authorized twice, and no attempt sent more often than a transient
    // fault explains (the PSP would deduplicate a second send; the engine must not make one).
    let mut per_key: HashMap<String, u32> = HashMap::new();
    for e in s.psp.effects().iter().filter(|e| e.op == Op::Authorize) {
        *per_key.entry(e.key.to_string()).or_insert(0) += 1;
    }
    for (k, n) in &per_key {
        assert_eq!(*n, 1, "I3: PSP key {k} authorized {n} times");
    }
    for e in s.psp.effects() {
        assert!(s.psp.authorizations_for(&e.key) <= 1);
    }
    for (attempt_id, calls) in lock(&s.faults.calls).iter() {
        let allowed = 1 + u32::from(fired.get(attempt_id) == Some(&Fault::Transient));
        assert!(
            *calls <= allowed,
            "I3: attempt {attempt_id} sent to the PSP {calls} times"
        );
    }

    // What is still unknown keeps its hold until the submissions' deadline (I13): a sweep
    // before it resolves only what the PSP knows.
    s.engine
        .reconcile_pending(100_000)
        .await
        .expect("reconcile");
    let lost = store
        .attempts_in(&[AttemptStatus::Ambiguous], 100_000)
        .await
        .expect("attempts");
    for a in &lost {
        let hold = store.hold(&a.hold_id()).await.expect("hold").expect("held");
        assert_eq!(
            hold.state,
            agent_mandate::ports::HoldState::Held,
            "I5/I13: an ambiguous attempt keeps its hold before its deadline"
        );
    }
    // Past the deadline, "not found" is final; then the books must agree.
    s.mem.clock.advance(chrono::Duration::minutes(2));
    s.engine
        .reconcile_pending(100_000)
        .await
        .expect("reconcile");
    let unknown = store
        .attempts_in(
            &[
                AttemptStatus::PendingProviderResponse,
                AttemptStatus::Ambiguous,
                AttemptStatus::RequiresBuyerAction,
            ],
            100_000,
        )
        .await
        .expect("attempts");
    assert!(
        unknown.is_empty(),
        "unresolved after reconcile: {unknown:#?}"
    );

    let usage = store.usage(&s.chain, now).await.expect("usage");
    let bad = violations(&s.chain, &usage);
    assert!(bad.is_empty(), "I2 after the run: {bad:#?}");
    let leaf = usage.last().expect("leaf");
    for (m, u) in s.chain.iter().zip(&usage) {
        assert_eq!(
            (u.held, u.spent),
            (leaf.held, leaf.spent),
            "{}: every level counts the grandchild's spend",
            m.id()
        );
    }

    // The PSP's side, per payment status ...
    let (mut authorized, mut kept) = (0i64, 0i64);
    for p in s.psp.payments() {
        match p.status {
            ProviderStatus::Authorized => authorized += p.authorized.minor_units(),
            ProviderStatus::Captured => {
                kept += p.captured.minor_units() - p.refunded.minor_units();
            }
            ProviderStatus::Declined | ProviderStatus::Cancelled => {}
            ProviderStatus::RequiresAction
            | ProviderStatus::NotFound
            | ProviderStatus::Unknown(_) => panic!("unexpected PSP payment {p:?}"),
        }
    }
    assert_eq!(
        leaf.held.minor_units(),
        authorized,
        "held = authorized and not captured at the PSP"
    );
    assert_eq!(
        leaf.spent.minor_units(),
        kept,
        "spent = captured less refunded at the PSP (refunds restore headroom)"
    );
    // ... and in its effects: authorized - voided - refunded = held + spent.
    let voided: i64 = s
        .psp
        .effects()
        .iter()
        .filter(|e| e.op == Op::Void)
        .map(|e| e.amount.minor_units())
        .sum();
    assert_eq!(
        s.psp.total_authorized(Currency::EUR) - voided - s.psp.total_refunded(Currency::EUR),
        leaf.held.minor_units() + leaf.spent.minor_units(),
        "the PSP's money matches the store's held + spent"
    );
    assert!(
        s.psp.total_authorized(Currency::EUR) > eur(CAP).minor_units(),
        "headroom was released and taken again during the run"
    );
    assert!(
        total.refused > total.authorized,
        "most payments are refused: {total:?}"
    );

    s.mem
        .audit
        .verify()
        .await
        .expect("I9: the audit chain verifies");
    let kinds: Vec<AuditKind> = s
        .mem
        .audit
        .events()
        .iter()
        .map(|e| e.event().expect("audit event parses").kind)
        .collect();
    let allowed = kinds
        .iter()
        .filter(|k| {
            matches!(k, AuditKind::Decision { command, outcome: Outcome::Allowed, .. }
                if command == "execute_payment")
        })
        .count();
    let placed = kinds
        .iter()
        .filter(|k| {
            matches!(
                k,
                AuditKind::Hold {
                    action: HoldAction::Placed,
                    ..
                }
            )
        })
        .count();
    assert!(
        allowed >= placed,
        "a hold is placed only after an allowed decision (I1)"
    );
    allowed - placed
}

fn count_of(fired: &HashMap<AttemptId, Fault>, kind: &Fault) -> u64 {
    fired.values().filter(|f| *f == kind).count() as u64
}
