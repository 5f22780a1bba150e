//! Sharding by root mandate across two PostgreSQL databases: the durable concurrency run
//! (workers on their own connections and OS threads, tight caps, voids, captures, orders
//! committed twice) with several delegation roots spread over two databases by
//! [`ShardRouter`].
//!
//! Checked: no root overspends its cap, at any sample or at the end (I2); every attempt, its
//! hold and its order are on its root's shard and nowhere else; one PSP authorization per
//! attempt (I3); one order per attempt (I4); each shard's held + spent equal what the PSP
//! holds for its attempts; each shard's audit chain verifies on its own.
//!
//! Needs `DATABASE_URL` (a second database is created next to it and dropped at the end):
//! `scripts/with-postgres.sh cargo test --all-features --test sharded_concurrency`.
#![cfg(all(feature = "postgres", feature = "sqlite", feature = "testkit"))]

mod common;
#[allow(unused_imports)]
use common::principals::*;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agent_mandate::adapters::memory::{ManualClock, MemoryVault};
use agent_mandate::adapters::shard::ShardRouter;
use agent_mandate::domain::{
    examples, AttemptId, AttemptStatus, Mandate, MandateId, Money, Operation,
};
use agent_mandate::engine::{
    CommitOrder, CreateMandate, Engine, EngineConfig, EngineError, ExecutePayment, OrderOutcome,
    PaymentOutcome,
};
use agent_mandate::ports::{CredentialVault, Ports};
use agent_mandate::testkit::{FakePsp, Op};
use common::backends::Backend;
use common::engine::{agent_capture, agent_void, backpack_spec, card, key};

const WORKERS: usize = 4;
const PER_WORKER: usize = 120;
const ROOTS: usize = 4;
/// 10 payments of EUR 144.00 per root.
const CAP: &str = "1440.00";

fn eur(a: &str) -> Money {
    Money::parse(a, agent_mandate::domain::Currency::EUR).expect("amount")
}

struct Shared {
    psp: Arc<FakePsp>,
    vault: Arc<MemoryVault>,
    clock: Arc<ManualClock>,
    orders: Mutex<HashMap<AttemptId, Vec<String>>>,
    /// Attempt -> the root it paid under.
    attempts: Mutex<Vec<(AttemptId, usize)>>,
}

async fn engine_for(backend: &Backend, shared: &Shared) -> Engine {
    let (store, audit) = backend.open(Path::new("unused")).await;
    Engine::new(
        Ports {
            store,
            provider: shared.psp.clone(),
            vault: shared.vault.clone(),
            audit,
            clock: shared.clock.clone(),
        },
        EngineConfig::default()
            .with_auto_suspend_after(None)
            .expect("config"),
    )
    .expect("engine")
}

fn root_id(r: usize) -> MandateId {
    MandateId::new(format!("mandate_root_{r}")).expect("id")
}

fn execute(
    k: &str,
    root: usize,
    credential: &agent_mandate::domain::CredentialRef,
) -> ExecutePayment {
    let snapshot = examples::travel_backpack_snapshot();
    let mut request = examples::authorize_request(&snapshot);
    request.mandate_id = root_id(root);
    ExecutePayment::new(
        key(k),
        request,
        snapshot.clone(),
        examples::valid_checkout(snapshot.id()),
        credential.clone(),
    )
}

async fn worker(
    w: usize,
    router: ShardRouter<Engine>,
    shared: Arc<Shared>,
    credential: agent_mandate::domain::CredentialRef,
) {
    for i in 0..PER_WORKER {
        let root = (w + i) % ROOTS;
        let engine = router.for_root(&root_id(root));
        // Keys are scoped by root: a key is unique on its root's shard only.
        let k = if i % 10 == 0 {
            format!("r{root}-shared-{}-{i}", w / 2)
        } else {
            format!("r{root}-w{w}-p{i}")
        };
        let out = match engine
            .execute_payment(&agent_p(), &execute(&k, root, &credential))
            .await
        {
            Ok(out) => out,
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
        shared
            .attempts
            .lock()
            .unwrap()
            .push((attempt.id.clone(), root));
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
        for n in 0..2 {
            let ok = engine
                .commit_order(
                    &agent_p(),
                    &CommitOrder::new(
                        key(&format!("{k}-order-w{w}-{n}")),
                        attempt.id.clone(),
                        examples::valid_checkout(examples::travel_backpack_snapshot().id()),
                    ),
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

/// `url` with its database name replaced by `db`.
fn with_database(url: &str, db: &str) -> String {
    let (base, rest) = url.rsplit_once('/').expect("a database URL ends in /NAME");
    let query = rest
        .split_once('?')
        .map(|(_, q)| format!("?{q}"))
        .unwrap_or_default();
    format!("{base}/{db}{query}")
}

async fn admin(url: &str, sql: &str) {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(conn);
    client.batch_execute(sql).await.expect(sql);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_databases_never_overspend_and_keep_each_tree_on_its_shard() {
    let Some(url) = common::backends::database_url() else {
        return;
    };
    let second = format!("am_shard_b_{}", std::process::id());
    admin(&url, &format!("DROP DATABASE IF EXISTS {second}")).await;
    admin(&url, &format!("CREATE DATABASE {second}")).await;
    let schema = format!("shard_{}", std::process::id());
    let backends = vec![
        Backend::Postgres {
            url: url.clone(),
            schema: schema.clone(),
        },
        Backend::Postgres {
            url: with_database(&url, &second),
            schema: schema.clone(),
        },
    ];

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

    let mut setup = Vec::new();
    for b in &backends {
        setup.push(engine_for(b, &shared).await);
    }
    let setup = ShardRouter::new(setup).expect("router");
    let placement: Vec<usize> = (0..ROOTS)
        .map(|r| setup.index_for_root(&root_id(r)))
        .collect();
    assert!(
        placement.contains(&0) && placement.contains(&1),
        "the roots spread over both shards: {placement:?}"
    );
    let mut mandates: Vec<Mandate> = Vec::new();
    for r in 0..ROOTS {
        let mut spec = backpack_spec(true);
        spec.id = root_id(r);
        spec.scope.budgets.lifetime = Some(eur(CAP));
        let m = setup
            .for_root(&root_id(r))
            .create_mandate(
                &buyer_p(),
                &CreateMandate::new(key(&format!("create-{r}")), spec),
            )
            .await
            .expect("mandate")
            .value;
        mandates.push(m);
    }
    // Each root is on its shard, and on no other.
    for (r, &home) in placement.iter().enumerate() {
        let found = setup
            .locate(&root_id(r), |e| e.ports().store.as_ref())
            .await
            .expect("locate");
        assert_eq!(found, Some(home), "root {r}");
        let other = setup.shards()[1 - home].ports().store.clone();
        assert!(other.mandate(&root_id(r)).await.expect("read").is_none());
    }

    // The monitor samples every root's usage on its shard while the workers run.
    let done = Arc::new(AtomicBool::new(false));
    let monitor = {
        let mut stores = Vec::new();
        for b in &backends {
            stores.push(b.open(Path::new("unused")).await.0);
        }
        let done = done.clone();
        let mandates = mandates.clone();
        let placement = placement.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            let mut samples = 0u32;
            while !done.load(Ordering::SeqCst) {
                for (r, m) in mandates.iter().enumerate() {
                    let u = rt
                        .block_on(
                            stores[placement[r]].usage(std::slice::from_ref(m), examples::now()),
                        )
                        .expect("usage")
                        .remove(0);
                    let total = u.spent.checked_add(&u.held).expect("currency");
                    assert!(total.fits_within(&eur(CAP)), "I2: root {r} shows {total}");
                }
                samples += 1;
                std::thread::sleep(Duration::from_millis(10));
            }
            samples
        })
    };

    let mut threads = Vec::new();
    for w in 0..WORKERS {
        let mut engines = Vec::new();
        for b in &backends {
            engines.push(engine_for(b, &shared).await);
        }
        let router = ShardRouter::new(engines).expect("router");
        let shared = shared.clone();
        let credential = credential.clone();
        threads.push(std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime")
                .block_on(worker(w, router, shared, credential));
        }));
    }
    for t in threads {
        t.join().expect("a worker panicked");
    }
    done.store(true, Ordering::SeqCst);
    let samples = monitor.join().expect("the monitor panicked");

    let attempts = shared.attempts.lock().unwrap().clone();
    let mut distinct: BTreeMap<AttemptId, usize> = BTreeMap::new();
    for (id, root) in &attempts {
        let before = distinct.insert(id.clone(), *root);
        assert!(before.is_none_or(|b| b == *root), "{id} under two roots");
    }
    let mut psp_money = [0i64; ROOTS];
    for (id, &root) in &distinct {
        let home = setup.shards()[placement[root]].ports().store.clone();
        let away = setup.shards()[1 - placement[root]].ports().store.clone();
        let a = home
            .attempt(id)
            .await
            .unwrap()
            .expect("the attempt is on its root's shard");
        assert!(
            away.attempt(id).await.unwrap().is_none(),
            "{id} on the other shard"
        );
        assert!(
            away.hold(id).await.unwrap().is_none(),
            "{id}'s hold on the other shard"
        );
        assert_eq!(a.request.mandate_id, root_id(root));
        assert_eq!(
            shared
                .psp
                .authorizations_for(&a.provider_key(Operation::Authorize)),
            1,
            "I3: {id}"
        );
        match a.status {
            AttemptStatus::Captured => psp_money[root] += a.captured.minor_units(),
            AttemptStatus::Authorized => psp_money[root] += a.authorized.minor_units(),
            AttemptStatus::Cancelled => {}
            other => panic!("attempt {id} ended {other}"),
        }
        let order = home.order_for(id).await.unwrap();
        assert!(away.order_for(id).await.unwrap().is_none());
        if a.status == AttemptStatus::Captured {
            let order = order.expect("a captured attempt has its order");
            let seen = shared
                .orders
                .lock()
                .unwrap()
                .get(id)
                .cloned()
                .unwrap_or_default();
            assert!(!seen.is_empty());
            assert!(
                seen.iter().all(|o| *o == order.id.to_string()),
                "I4: {id} answered with orders {seen:?}"
            );
        } else {
            assert!(order.is_none(), "I4: an order for {id} ({})", a.status);
        }
    }
    let mut spent_on = [0i64; 2];
    for (r, m) in mandates.iter().enumerate() {
        let store = setup.shards()[placement[r]].ports().store.clone();
        let u = store
            .usage(std::slice::from_ref(m), examples::now())
            .await
            .expect("usage")
            .remove(0);
        let total = u.spent.checked_add(&u.held).expect("currency");
        assert!(
            total.fits_within(&eur(CAP)),
            "I2: root {r}: {total} > {CAP}"
        );
        assert_eq!(
            u.spent.minor_units() + u.held.minor_units(),
            psp_money[r],
            "root {r}: the store's held + spent equal the PSP's money"
        );
        spent_on[placement[r]] += u.spent.minor_units();
    }
    assert!(
        spent_on.iter().all(|&s| s > 0),
        "payments went through on both shards: {spent_on:?}"
    );
    assert_eq!(
        shared.psp.calls(Op::Authorize) as usize,
        distinct.len(),
        "one PSP authorization per attempt"
    );
    for e in setup.shards() {
        e.ports()
            .audit
            .verify()
            .await
            .expect("each shard's audit chain verifies");
    }
    eprintln!(
        "two shards: roots on {placement:?}, {} attempts reached the PSP, spent per shard \
         {spent_on:?} (minor units), {samples} monitor samples",
        distinct.len()
    );
    backends[0].drop_schema().await;
    drop(setup);
    admin(
        &url,
        &format!("DROP DATABASE IF EXISTS {second} WITH (FORCE)"),
    )
    .await;
}
