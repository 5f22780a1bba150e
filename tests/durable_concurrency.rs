//! I2, I3 and I4 on the durable stores under real concurrency: 8 workers, each with its own
//! connection (its own `SqliteDatabase` on one file, or its own PostgreSQL pool), its own
//! engine and its own OS thread, run 500 payments each on ONE mandate with a tight cap
//! (lifetime EUR 5,760.00: 40 payments of EUR 144.00).
//!
//! Each payment authorizes; even ones are voided (headroom comes back, so the cap stays in
//! play for the whole run), odd ones are captured and their order committed twice. Every
//! tenth payment uses a key shared with the neighbouring worker, executed by both at about
//! the same moment, and both commit its order. A monitor on a connection of its own samples
//! the usage during the run.
//!
//! Checked: no sample and no final usage exceeds the cap (I2); no PSP key authorized twice and
//! a shared key executed at most once at the PSP (I3); one order per attempt, every commit of
//! the same attempt answered with the same order (I4); held + spent equal what the PSP holds
//! and captured; the audit chain verifies.
#![cfg(all(feature = "sqlite", feature = "testkit"))]

mod common;
#[allow(unused_imports)]
use common::principals::*;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agent_mandate::adapters::memory::{ManualClock, MemoryVault};
use agent_mandate::domain::{examples, AttemptId, AttemptStatus, Mandate, Money, Operation};
use agent_mandate::engine::{
    CommitOrder, CreateMandate, Engine, EngineConfig, EngineError, ExecutePayment, OrderOutcome,
    PaymentOutcome,
};
use agent_mandate::ports::{CredentialVault, Ports};
use agent_mandate::testkit::{FakePsp, Op};
use common::backends::Backend;
use common::engine::{agent_capture, agent_void, backpack_spec, card, key};

const WORKERS: usize = 8;
const PER_WORKER: usize = 500;
const CAP: &str = "5760.00";

fn eur(a: &str) -> Money {
    Money::parse(a, agent_mandate::domain::Currency::EUR).expect("amount")
}

/// What the workers share (besides the database).
struct Shared {
    psp: Arc<FakePsp>,
    vault: Arc<MemoryVault>,
    clock: Arc<ManualClock>,
    /// Attempt id -> order ids every commit answered with.
    orders: Mutex<HashMap<AttemptId, Vec<String>>>,
    /// Every attempt that reached the PSP.
    attempts: Mutex<Vec<AttemptId>>,
}

async fn engine_for(backend: &Backend, path: &Path, shared: &Shared) -> Engine {
    let (store, audit) = backend.open(path).await;
    let config = EngineConfig::default()
        .with_auto_suspend_after(None)
        .expect("config");
    Engine::new(
        Ports {
            store,
            provider: shared.psp.clone(),
            vault: shared.vault.clone(),
            audit,
            clock: shared.clock.clone(),
        },
        config,
    )
    .expect("engine configuration")
}

fn execute(k: &str, credential: &agent_mandate::domain::CredentialRef) -> ExecutePayment {
    let snapshot = examples::travel_backpack_snapshot();
    ExecutePayment::new(
        key(k),
        examples::authorize_request(&snapshot),
        snapshot.clone(),
        examples::valid_checkout(snapshot.id()),
        credential.clone(),
    )
}

fn commit(k: &str, attempt: &AttemptId) -> CommitOrder {
    CommitOrder::new(
        key(k),
        attempt.clone(),
        examples::valid_checkout(examples::travel_backpack_snapshot().id()),
    )
}

/// One worker's payments.
async fn worker(
    w: usize,
    engine: Engine,
    shared: Arc<Shared>,
    credential: agent_mandate::domain::CredentialRef,
) {
    for i in 0..PER_WORKER {
        // Every tenth payment shares its key with the neighbouring worker.
        let k = if i % 10 == 0 {
            format!("shared-{}-{i}", w / 2)
        } else {
            format!("w{w}-p{i}")
        };
        let out = match engine
            .execute_payment(&agent_p(), &execute(&k, &credential))
            .await
        {
            Ok(out) => out,
            // The neighbour holds the shared key right now: it executes it.
            Err(EngineError::IdempotencyInFlight { .. }) => continue,
            Err(e) if e.is_retryable() => continue,
            Err(e) => panic!("worker {w} payment {i}: {e}"),
        };
        let attempt = match out {
            PaymentOutcome::Refused(_) => continue,
            PaymentOutcome::Done { attempt, .. } | PaymentOutcome::Replayed { attempt } => attempt,
            other => panic!("worker {w} payment {i}: unexpected outcome {other:?}"),
        };
        if attempt.status != AttemptStatus::Authorized {
            continue;
        }
        shared.attempts.lock().unwrap().push(attempt.id.clone());
        if i % 2 == 0 {
            let _ = engine
                .void(&agent_p(), &agent_void(&format!("{k}-void"), &attempt.id))
                .await;
            continue;
        }
        let captured = engine
            .capture(
                &agent_p(),
                &agent_capture(&format!("{k}-capture"), &attempt.id, None),
            )
            .await;
        if !matches!(
            &captured,
            Ok(PaymentOutcome::Done { .. } | PaymentOutcome::Replayed { .. })
        ) {
            continue;
        }
        // The order is committed twice by this worker (two keys), and by the neighbour for a
        // shared key (its own keys).
        for n in 0..2 {
            let ok = engine
                .commit_order(
                    &agent_p(),
                    &commit(&format!("{k}-order-w{w}-{n}"), &attempt.id),
                )
                .await;
            if let Ok(OrderOutcome::Committed { order, .. } | OrderOutcome::Existing { order }) = ok
            {
                shared
                    .orders
                    .lock()
                    .unwrap()
                    .entry(attempt.id.clone())
                    .or_default()
                    .push(order.id.to_string());
            }
        }
    }
}

async fn run(backend: Backend, dir: PathBuf) {
    let path = dir.join("state.db");
    let vault = Arc::new(MemoryVault::new());
    let shared = Arc::new(Shared {
        psp: Arc::new(FakePsp::with_vault(vault.clone())),
        vault,
        clock: Arc::new(ManualClock::new(examples::now())),
        orders: Mutex::new(HashMap::new()),
        attempts: Mutex::new(Vec::new()),
    });
    let credential = shared
        .vault
        .store(&key("card"), card(&examples::agent().id, "pm_card_visa"))
        .await
        .expect("card")
        .credential
        .reference;
    let setup = engine_for(&backend, &path, &shared).await;
    let mut spec = backpack_spec(true);
    spec.scope.budgets.lifetime = Some(eur(CAP));
    let mandate: Mandate = setup
        .create_mandate(
            &buyer_p(),
            &CreateMandate::new(key("create-mandate-001"), spec),
        )
        .await
        .expect("mandate")
        .value;

    // The monitor samples the usage on its own connection while the workers run.
    let done = Arc::new(AtomicBool::new(false));
    let monitor = {
        let (store, _) = backend.open(&path).await;
        let done = done.clone();
        let mandate = mandate.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            let mut samples = 0u32;
            while !done.load(Ordering::SeqCst) {
                let u = rt
                    .block_on(store.usage(std::slice::from_ref(&mandate), examples::now()))
                    .expect("usage")
                    .remove(0);
                let total = u.spent.checked_add(&u.held).expect("same currency");
                assert!(total.fits_within(&eur(CAP)), "I2: a sample shows {total}");
                samples += 1;
                std::thread::sleep(Duration::from_millis(5));
            }
            samples
        })
    };

    let mut threads = Vec::new();
    for w in 0..WORKERS {
        let engine = engine_for(&backend, &path, &shared).await;
        let shared = shared.clone();
        let credential = credential.clone();
        threads.push(std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime")
                .block_on(worker(w, engine, shared, credential));
        }));
    }
    for t in threads {
        t.join().expect("a worker panicked");
    }
    done.store(true, Ordering::SeqCst);
    let samples = monitor.join().expect("the monitor panicked");

    let store = &setup.ports().store;
    let usage = store
        .usage(std::slice::from_ref(&mandate), examples::now())
        .await
        .expect("usage")
        .remove(0);
    let total = usage.spent.checked_add(&usage.held).expect("currency");
    assert!(total.fits_within(&eur(CAP)), "I2: {total} > {CAP}");

    // I3: every attempt authorized at most once at the PSP; shared keys executed once.
    let attempts = shared.attempts.lock().unwrap().clone();
    let mut distinct: BTreeMap<AttemptId, u32> = BTreeMap::new();
    let mut psp_money = 0i64;
    for id in &attempts {
        *distinct.entry(id.clone()).or_default() += 1;
    }
    for id in distinct.keys() {
        let a = store.attempt(id).await.unwrap().expect("attempt");
        let pk = a.provider_key(Operation::Authorize);
        assert_eq!(shared.psp.authorizations_for(&pk), 1, "I3: {id}");
        match a.status {
            AttemptStatus::Captured => psp_money += a.captured.minor_units(),
            AttemptStatus::Authorized => psp_money += a.authorized.minor_units(),
            AttemptStatus::Cancelled => {}
            other => panic!("attempt {id} ended {other}"),
        }
        // I4: one order per captured attempt, every commit answered with it.
        let order = store.order_for(id).await.unwrap();
        if a.status == AttemptStatus::Captured {
            let order = order.expect("a captured attempt has its order");
            let seen = shared
                .orders
                .lock()
                .unwrap()
                .get(id)
                .cloned()
                .unwrap_or_default();
            assert!(!seen.is_empty(), "{id}: commits recorded");
            assert!(
                seen.iter().all(|o| *o == order.id.to_string()),
                "I4: {id} answered with orders {seen:?}"
            );
        } else {
            assert!(order.is_none(), "I4: an order for {id} ({})", a.status);
        }
    }
    let shared_twice = distinct.values().filter(|&&n| n > 1).count();
    assert_eq!(
        usage.spent.minor_units() + usage.held.minor_units(),
        psp_money,
        "the store's held + spent equal the PSP's money"
    );
    assert!(
        usage.spent.minor_units() > 0,
        "some payments went through under the cap"
    );
    let calls = shared.psp.calls(Op::Authorize) as usize;
    assert_eq!(calls, distinct.len(), "one PSP authorization per attempt");
    setup
        .ports()
        .audit
        .verify()
        .await
        .expect("the audit chain verifies");
    eprintln!(
        "{backend:?}: {} attempts reached the PSP ({shared_twice} shared keys seen by both \
         workers), spent {} held {}, {samples} monitor samples",
        distinct.len(),
        usage.spent,
        usage.held
    );
}

fn temp_dir(name: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("agent-mandate-conc-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_eight_connections_never_overspend_double_authorize_or_double_order() {
    let dir = temp_dir("sqlite");
    run(Backend::Sqlite, dir.clone()).await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_eight_connections_never_overspend_double_authorize_or_double_order() {
    let Some(url) = common::backends::database_url() else {
        return;
    };
    let backend = Backend::Postgres {
        url,
        schema: format!("conc_{}", std::process::id()),
    };
    let dir = temp_dir("pg");
    run(backend.clone(), dir.clone()).await;
    backend.drop_schema().await;
    let _ = std::fs::remove_dir_all(&dir);
}
