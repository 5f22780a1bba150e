//! One hot budget on the durable stores: payments per second with 1, 2 and 8 concurrent
//! workers, each beside the raw-SQL ceiling measured in the same run.
//!
//! For each backend (SQLite, WAL, `synchronous=FULL` and `NORMAL`; PostgreSQL when
//! `DATABASE_URL` is set) and each worker count:
//!
//! * **raw**: each worker on its own connection loops over one transaction per payment:
//!   `UPDATE budget SET spent = spent + $amount WHERE id = $id AND spent + $amount <= cap` and,
//!   if a row was updated, `INSERT INTO ledger (...)`, in bench tables of its own (a separate
//!   SQLite file / PostgreSQL schema), with the same connection settings as the adapter.
//! * **reserve**: the same hot budget through the `Store` port, one `place_hold` per payment
//!   on a one-level chain (one mandate with a large lifetime cap): the conditional cap check
//!   and the hold's ledger row in one transaction, the work the raw ceiling does; each worker
//!   with its own connection (its own `SqliteDatabase`, or its own `PostgresStore` with a pool
//!   of 1).
//! * **hold + commit**: `place_hold` then `commit_hold`, two port calls, each its own
//!   transaction (a payment's reservation and its settlement).
//! * **engine** (1 and 8 workers): the full `Engine::execute_payment` with capture on
//!   authorize on the same backend (store and audit sink on it, `FakePsp`, `MemoryVault`).
//!
//! Every worker is an OS thread (a current-thread tokio runtime where async is needed). After
//! every run the budget is read back: spent + held must not exceed the cap (the overspend
//! column) and must equal the payments the workers counted (nothing lost, nothing extra).
//! A cap check per backend then runs 8 workers of each kind against a cap of
//! `CAP_CHECK_PAYMENTS` payments until every worker is refused: exactly that many must pass.
//!
//! Run: `scripts/with-postgres.sh cargo bench --bench store --features sqlite,postgres,testkit`
//!
//! Environment: `STORE_BENCH_SECS` (measured seconds per cell, default 4; 1 s of warm-up is
//! added), `STORE_BENCH_ONLY` (comma-separated substrings of the cell labels to run, e.g.
//! `sqlite-full,engine`), `STORE_BENCH_DIR` (where the SQLite files go, default the system
//! temporary directory), `DATABASE_URL`, `STORE_BENCH_TRAIL` (`1`: the engine cells' stores
//! append their events to their own database's trail, `SqliteDatabase::store_with_trail` /
//! `PostgresStore::with_trail`, instead of the outbox and a delivery round per command).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use agent_mandate::adapters::memory::{ManualClock, MemoryVault};
use agent_mandate::adapters::postgres::{PostgresAuditSink, PostgresConfig, PostgresStore};
use agent_mandate::adapters::sqlite::{SqliteConfig, SqliteDatabase, Synchronous};
use agent_mandate::domain::{
    examples, AttemptId, AttemptStatus, CredentialRef, Currency, Mandate, MandateSpec, Money,
};
use agent_mandate::engine::{CreateMandate, Engine, EngineConfig, ExecutePayment};
use agent_mandate::ports::{
    AuditSink, CredentialDisplay, CredentialKind, CredentialVault, FundingType, HoldError,
    HoldRequest, NewCredential, PaymentProvider, Ports, Secret, Store,
};
use agent_mandate::testkit::FakePsp;
use rusqlite::{params, Connection, TransactionBehavior};

/// Every payment of the raw and adapter loops: 1.00 EUR.
const AMOUNT_MINOR: i64 = 100;
/// The cap of the measured runs: large (never reached in a run), but finite and checked.
const BIG_CAP_MINOR: i64 = 1_000_000_000_000;
/// Payments the cap check allows.
const CAP_CHECK_PAYMENTS: i64 = 50;
const WORKER_COUNTS: [usize; 3] = [1, 2, 8];
const ENGINE_WORKER_COUNTS: [usize; 3] = [1, 2, 8];
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

// ----- the measuring harness -----

/// What a worker's loop reports per iteration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Paid {
    Yes,
    /// Refused at the cap: the budget is full.
    Full,
    /// The backend gave up waiting for a lock (SQLite's busy timeout, a retryable
    /// `Unavailable`): nothing was paid; the same payment is tried again.
    Busy,
    /// The engine failed (counted with the busy ones); the next payment is tried.
    Failed,
}

/// Counters shared by the workers of one run.
struct Shared {
    paid: AtomicU64,
    busy: AtomicU64,
    stop: AtomicBool,
}

/// The result of one cell.
#[derive(Debug, Clone, Copy, Default)]
struct Cell {
    per_sec: f64,
    /// spent + held - cap, when positive.
    overspend: i128,
    /// The budget's spent + held equals the payments counted.
    consistent: bool,
    /// Server-counted transactions per payment (PostgreSQL only).
    tx_per_payment: Option<f64>,
    /// Payments of the whole run, warm-up included.
    paid: u64,
    /// Payments that failed on a lock timeout and were tried again (or, for the engine,
    /// failed), whole run.
    busy: u64,
    /// SQLite group commit over the whole run, warm-up included: (write calls, write
    /// transactions, largest batch).
    batches: Option<(u64, u64, u64)>,
}

/// Runs `workers` threads, each calling `pay(worker, i)` until told to stop, for `warmup +
/// secs`; returns (payments/s over the measured part, all payments counted).
fn drive<W>(workers: usize, warmup: Duration, secs: Duration, make: W) -> (f64, u64, u64)
where
    W: Fn(usize, Arc<Shared>) -> Box<dyn FnOnce() + Send> + Sync,
{
    let shared = Arc::new(Shared {
        paid: AtomicU64::new(0),
        busy: AtomicU64::new(0),
        stop: AtomicBool::new(false),
    });
    let handles: Vec<_> = (0..workers)
        .map(|w| {
            let job = make(w, shared.clone());
            thread::Builder::new()
                .name(format!("bench-worker-{w}"))
                .spawn(job)
                .expect("spawn")
        })
        .collect();
    // Sleeps until `d` has passed or every worker has returned (refused at the cap).
    let nap = |d: Duration| {
        let end = Instant::now() + d;
        while Instant::now() < end && !handles.iter().all(|h| h.is_finished()) {
            thread::sleep((end - Instant::now()).min(Duration::from_millis(20)));
        }
    };
    nap(warmup);
    let (c0, t0) = (shared.paid.load(Ordering::SeqCst), Instant::now());
    nap(secs);
    let (c1, t1) = (shared.paid.load(Ordering::SeqCst), Instant::now());
    shared.stop.store(true, Ordering::SeqCst);
    for h in handles {
        h.join().expect("worker panicked");
    }
    let total = shared.paid.load(Ordering::SeqCst);
    let busy = shared.busy.load(Ordering::SeqCst);
    ((c1 - c0) as f64 / (t1 - t0).as_secs_f64(), total, busy)
}

/// The worker loop: pays until stopped (measured runs) or refused (cap check).
fn work(shared: &Shared, mut pay: impl FnMut(u64) -> Paid) {
    let mut i = 0u64;
    while !shared.stop.load(Ordering::Relaxed) {
        match pay(i) {
            Paid::Yes => {
                shared.paid.fetch_add(1, Ordering::Relaxed);
            }
            Paid::Full => return,
            Paid::Busy => {
                shared.busy.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            Paid::Failed => {
                shared.busy.fetch_add(1, Ordering::Relaxed);
            }
        }
        i += 1;
    }
}

async fn work_async<F, Fut>(shared: &Shared, mut pay: F)
where
    F: FnMut(u64) -> Fut,
    Fut: std::future::Future<Output = Paid>,
{
    let mut i = 0u64;
    while !shared.stop.load(Ordering::Relaxed) {
        match pay(i).await {
            Paid::Yes => {
                shared.paid.fetch_add(1, Ordering::Relaxed);
            }
            Paid::Full => return,
            Paid::Busy => {
                shared.busy.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            Paid::Failed => {
                shared.busy.fetch_add(1, Ordering::Relaxed);
            }
        }
        i += 1;
    }
}

fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn eur_minor(minor: i64) -> Money {
    Money::from_minor(minor, Currency::EUR).expect("amount")
}

fn attempt(w: usize, i: u64) -> AttemptId {
    format!("w{w}-{i}").parse().expect("attempt id")
}

// ----- fixtures -----

/// A root mandate (the Travel Backpack one) with one lifetime cap and no other limit.
fn capped_spec(cap_minor: i64) -> MandateSpec {
    let mut spec = examples::travel_backpack_mandate().spec().clone();
    spec.scope.max_uses = None;
    spec.scope.amount.max_payment_attempts = None;
    spec.scope.budgets.windows.clear();
    spec.scope.budgets.lifetime = Some(eur_minor(cap_minor));
    spec
}

fn capped_mandate(cap_minor: i64) -> Mandate {
    Mandate::new(capped_spec(cap_minor)).expect("mandate")
}

fn card() -> NewCredential {
    NewCredential {
        kind: CredentialKind::PaymentMethod,
        owner: examples::agent().id,
        buyer_id: examples::buyer(),
        secret: Secret::new("pm_card_visa"),
        cvc: None,
        display: CredentialDisplay {
            brand: "visa".into(),
            last4: "4242".into(),
            exp_month: 12,
            exp_year: 2030,
            funding: FundingType::Credit,
        },
    }
}

fn execute_command(card: &CredentialRef, key: String) -> ExecutePayment {
    let snapshot = examples::travel_backpack_snapshot();
    ExecutePayment::new(
        key.parse().expect("key"),
        examples::authorize_request(&snapshot),
        snapshot.clone(),
        examples::valid_checkout(snapshot.id()),
        card.clone(),
    )
    .with_capture(true)
}

/// The vault with the agent's card and the fake PSP on it, shared by every engine of a run.
fn psp_and_vault(
    rt: &tokio::runtime::Runtime,
) -> (Arc<dyn CredentialVault>, Arc<FakePsp>, CredentialRef) {
    let vault: Arc<dyn CredentialVault> = Arc::new(MemoryVault::new());
    let card = rt
        .block_on(vault.store(&"card".parse().expect("key"), card()))
        .expect("card")
        .credential
        .reference;
    let psp = Arc::new(FakePsp::with_vault(vault.clone()));
    (vault, psp, card)
}

fn engine_on(
    store: Arc<dyn Store>,
    audit: Arc<dyn AuditSink>,
    vault: Arc<dyn CredentialVault>,
    psp: Arc<FakePsp>,
) -> Engine {
    let provider: Arc<dyn PaymentProvider> = psp;
    let ports = Ports {
        store,
        provider,
        vault,
        audit,
        clock: Arc::new(ManualClock::new(examples::now())),
    };
    // Threshold events off: the steady path, as in benches/engine.rs.
    let config = EngineConfig::default()
        .with_threshold_percent(None)
        .expect("config");
    Engine::new(ports, config).expect("engine configuration")
}

/// One engine payment; `Yes` when the attempt ended captured.
async fn engine_pay(engine: &Engine, card: &CredentialRef, w: usize, i: u64) -> Paid {
    let out = match engine
        .execute_payment(&agent_p(), &execute_command(card, format!("pay-w{w}-{i}")))
        .await
    {
        Ok(out) => out,
        Err(e) => {
            eprintln!("engine payment pay-w{w}-{i} failed: {e}");
            return Paid::Failed;
        }
    };
    match out.attempt().map(|a| a.status) {
        Some(AttemptStatus::Captured) => Paid::Yes,
        None => Paid::Full,
        Some(other) => panic!("unexpected attempt status {other:?}"),
    }
}

/// Checks the budget through the port after a run: (overspend, consistent with `paid`).
/// `failed`: engine payments that failed part way (each may have left a hold or spend).
async fn check_usage(
    store: &dyn Store,
    mandate: &Mandate,
    paid: u64,
    failed: u64,
    each: i64,
    reserved: bool,
) -> (i128, bool) {
    let chain = store.chain(mandate.id()).await.expect("chain");
    let usage = store.usage(&chain, examples::now()).await.expect("usage");
    let root = &usage[0];
    let used = i128::from(root.spent.minor_units()) + i128::from(root.held.minor_units());
    let cap = i128::from(
        mandate
            .scope()
            .budgets
            .lifetime
            .expect("capped")
            .minor_units(),
    );
    let over = (used - cap).max(0);
    let exact = i128::from(paid) * i128::from(each);
    let consistent = if failed == 0 {
        (reserved || root.held.is_zero()) && used == exact
    } else {
        (exact..=exact + i128::from(failed) * i128::from(each)).contains(&used)
    };
    (over, consistent)
}

// ----- SQLite -----

fn sync_name(s: Synchronous) -> &'static str {
    match s {
        Synchronous::Full => "FULL",
        Synchronous::Normal => "NORMAL",
        _ => "?",
    }
}

/// A raw connection with the adapter's settings (WAL, the same `synchronous`, busy timeout).
fn sqlite_raw_connection(path: &Path, sync: Synchronous) -> Connection {
    let conn = Connection::open(path).expect("open");
    conn.busy_timeout(BUSY_TIMEOUT).expect("busy timeout");
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
        .expect("wal");
    assert_eq!(mode.to_lowercase(), "wal");
    conn.execute_batch(&format!("PRAGMA synchronous = {};", sync_name(sync)))
        .expect("synchronous");
    conn
}

fn sqlite_raw_setup(path: &Path, sync: Synchronous, cap: i64) {
    let conn = sqlite_raw_connection(path, sync);
    conn.execute_batch(
        "CREATE TABLE budget (id INTEGER PRIMARY KEY, spent INTEGER NOT NULL, cap INTEGER NOT NULL);
         CREATE TABLE ledger (payment_id TEXT PRIMARY KEY, budget_id INTEGER NOT NULL,
                              amount INTEGER NOT NULL);",
    )
    .expect("tables");
    conn.execute(
        "INSERT INTO budget (id, spent, cap) VALUES (1, 0, ?1)",
        [cap],
    )
    .expect("budget");
}

/// One raw payment: one `BEGIN IMMEDIATE` transaction, the conditional update, the ledger row.
fn sqlite_raw_pay(conn: &mut Connection, w: usize, i: u64) -> Paid {
    let run = |conn: &mut Connection| -> rusqlite::Result<usize> {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let n = tx
            .prepare_cached(
                "UPDATE budget SET spent = spent + ?1 WHERE id = ?2 AND spent + ?1 <= cap",
            )?
            .execute(params![AMOUNT_MINOR, 1])?;
        if n == 1 {
            tx.prepare_cached(
                "INSERT INTO ledger (payment_id, budget_id, amount) VALUES (?1, ?2, ?3)",
            )?
            .execute(params![format!("w{w}-{i}"), 1, AMOUNT_MINOR])?;
        }
        tx.commit()?;
        Ok(n)
    };
    match run(conn) {
        Ok(1) => Paid::Yes,
        Ok(_) => Paid::Full,
        // The busy timeout, as the adapter's `Unavailable`: rolled back, try again.
        Err(rusqlite::Error::SqliteFailure(e, _))
            if e.code == rusqlite::ErrorCode::DatabaseBusy =>
        {
            Paid::Busy
        }
        Err(e) => panic!("raw payment: {e}"),
    }
}

/// (overspend, consistent) of the raw budget after a run.
fn sqlite_raw_check(path: &Path, sync: Synchronous, paid: u64) -> (i128, bool) {
    let conn = sqlite_raw_connection(path, sync);
    let (spent, cap): (i64, i64) = conn
        .query_row("SELECT spent, cap FROM budget WHERE id = 1", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .expect("budget");
    let (rows, sum): (i64, i64) = conn
        .query_row(
            "SELECT COUNT(*), COALESCE(SUM(amount), 0) FROM ledger",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .expect("ledger");
    let over = i128::from(spent - cap).max(0);
    (
        over,
        rows as u64 == paid && sum == spent && spent == paid as i64 * AMOUNT_MINOR,
    )
}

fn sqlite_raw_run(path: &Path, sync: Synchronous, workers: usize, cap: i64, t: &Timing) -> Cell {
    sqlite_raw_setup(path, sync, cap);
    let (per_sec, paid, busy) = drive(workers, t.warmup, t.secs, |w, shared| {
        let path = path.to_path_buf();
        Box::new(move || {
            let mut conn = sqlite_raw_connection(&path, sync);
            work(&shared, |i| sqlite_raw_pay(&mut conn, w, i));
        })
    });
    let (overspend, consistent) = sqlite_raw_check(path, sync, paid);
    Cell {
        per_sec,
        overspend,
        consistent,
        tx_per_payment: None,
        paid,
        busy,
        batches: None,
    }
}

fn sqlite_open(path: &Path, sync: Synchronous) -> SqliteDatabase {
    SqliteDatabase::open(
        SqliteConfig::file(path)
            .synchronous(sync)
            .busy_timeout(BUSY_TIMEOUT),
    )
    .expect("open")
}

/// One adapter payment: `place_hold` on the one-level chain, then (when `commit`)
/// `commit_hold`. Without the commit it is the reservation alone: the conditional cap check
/// and its ledger row in one transaction, the work the raw ceiling does.
async fn adapter_pay(store: &dyn Store, chain: &[Mandate], w: usize, i: u64, commit: bool) -> Paid {
    let id = attempt(w, i);
    let amount = eur_minor(AMOUNT_MINOR);
    let hold = HoldRequest::on_chain(id.clone(), amount, examples::now(), chain);
    match store.place_hold(&hold).await {
        Ok(_) if !commit => Paid::Yes,
        Ok(_) => {
            // A lock timeout on the commit leaves the hold held: commit it again.
            let mut tries = 0;
            loop {
                match store.commit_hold(&id, amount).await {
                    Ok(()) => break,
                    Err(e) if e.is_retryable() && tries < 100 => tries += 1,
                    Err(e) => panic!("commit_hold: {e}"),
                }
            }
            Paid::Yes
        }
        Err(HoldError::Refused { .. }) => Paid::Full,
        Err(HoldError::Store(e)) if e.is_retryable() => Paid::Busy,
        Err(e) => panic!("place_hold: {e}"),
    }
}

fn sqlite_adapter_run(
    path: &Path,
    sync: Synchronous,
    workers: usize,
    cap: i64,
    t: &Timing,
    commit: bool,
) -> Cell {
    let rt = current_thread();
    let mandate = capped_mandate(cap);
    let setup = sqlite_open(path, sync);
    rt.block_on(setup.store().insert_mandate(&mandate))
        .expect("mandate");
    let chain = Arc::new(
        rt.block_on(setup.store().chain(mandate.id()))
            .expect("chain"),
    );
    let (per_sec, paid, busy) = drive(workers, t.warmup, t.secs, |w, shared| {
        let (path, chain) = (path.to_path_buf(), chain.clone());
        Box::new(move || {
            let store = sqlite_open(&path, sync).store();
            current_thread().block_on(work_async(&shared, |i| {
                adapter_pay(&store, &chain, w, i, commit)
            }));
        })
    });
    let (overspend, consistent) = rt.block_on(check_usage(
        &setup.store(),
        &mandate,
        paid,
        0,
        AMOUNT_MINOR,
        !commit,
    ));
    Cell {
        per_sec,
        overspend,
        consistent,
        tx_per_payment: None,
        paid,
        busy,
        batches: None,
    }
}

/// Whether the engine cells' stores append to their own trail (`STORE_BENCH_TRAIL=1`).
fn own_trail() -> bool {
    std::env::var("STORE_BENCH_TRAIL").is_ok_and(|v| v == "1")
}

/// The engine's store on `db`: through the outbox, or on the database's own trail.
fn engine_store(db: &SqliteDatabase) -> agent_mandate::adapters::sqlite::SqliteStore {
    if own_trail() {
        db.store_with_trail()
    } else {
        db.store()
    }
}

/// The engine's store on PostgreSQL (see [`engine_store`]).
async fn pg_engine_store(store: PostgresStore) -> PostgresStore {
    if own_trail() {
        store.with_trail().await.expect("trail")
    } else {
        store
    }
}

fn sqlite_engine_run(path: &Path, sync: Synchronous, workers: usize, t: &Timing) -> Cell {
    let rt = current_thread();
    let (vault, psp, card) = psp_and_vault(&rt);
    let setup = sqlite_open(path, sync);
    let engine = engine_on(
        Arc::new(engine_store(&setup)),
        Arc::new(setup.audit_sink()),
        vault.clone(),
        psp.clone(),
    );
    let mandate = rt
        .block_on(engine.create_mandate(
            &buyer_p(),
            &CreateMandate::new("create".parse().expect("key"), capped_spec(BIG_CAP_MINOR)),
        ))
        .expect("mandate")
        .value;
    let each = examples::travel_backpack_snapshot().total().minor_units();
    let (per_sec, paid, busy) = drive(workers, t.warmup, t.secs, |w, shared| {
        let (path, vault, psp, card) =
            (path.to_path_buf(), vault.clone(), psp.clone(), card.clone());
        Box::new(move || {
            let db = sqlite_open(&path, sync);
            let engine = engine_on(
                Arc::new(engine_store(&db)),
                Arc::new(db.audit_sink()),
                vault,
                psp,
            );
            current_thread().block_on(work_async(&shared, |i| engine_pay(&engine, &card, w, i)));
        })
    });
    let (overspend, consistent) = rt.block_on(check_usage(
        &setup.store(),
        &mandate,
        paid,
        busy,
        each,
        false,
    ));
    Cell {
        per_sec,
        overspend,
        consistent,
        tx_per_payment: None,
        paid,
        busy,
        batches: None,
    }
}

/// What the connection thread of `db` committed: (write calls, transactions, largest batch).
fn batch_stats(db: &SqliteDatabase) -> Option<(u64, u64, u64)> {
    let s = db.group_commit_stats();
    Some((s.jobs, s.batches, s.largest))
}

/// The engine with every worker on one `SqliteDatabase` (one writer connection, as a service
/// process holds it): concurrent payments' writes share group commits.
fn sqlite_engine_shared_run(path: &Path, sync: Synchronous, workers: usize, t: &Timing) -> Cell {
    let rt = current_thread();
    let (vault, psp, card) = psp_and_vault(&rt);
    let db = sqlite_open(path, sync);
    let engine = engine_on(
        Arc::new(engine_store(&db)),
        Arc::new(db.audit_sink()),
        vault.clone(),
        psp.clone(),
    );
    let mandate = rt
        .block_on(engine.create_mandate(
            &buyer_p(),
            &CreateMandate::new("create".parse().expect("key"), capped_spec(BIG_CAP_MINOR)),
        ))
        .expect("mandate")
        .value;
    let before = batch_stats(&db);
    let each = examples::travel_backpack_snapshot().total().minor_units();
    let (per_sec, paid, busy) = drive(workers, t.warmup, t.secs, |w, shared| {
        let (db, vault, psp, card) = (db.clone(), vault.clone(), psp.clone(), card.clone());
        Box::new(move || {
            let engine = engine_on(
                Arc::new(engine_store(&db)),
                Arc::new(db.audit_sink()),
                vault,
                psp,
            );
            current_thread().block_on(work_async(&shared, |i| engine_pay(&engine, &card, w, i)));
        })
    });
    let batches = match (before, batch_stats(&db)) {
        (Some(a), Some(b)) => Some((b.0 - a.0, b.1 - a.1, b.2)),
        _ => None,
    };
    let (overspend, consistent) =
        rt.block_on(check_usage(&db.store(), &mandate, paid, busy, each, false));
    Cell {
        per_sec,
        overspend,
        consistent,
        tx_per_payment: batches.map(|(_, b, _)| b as f64 / paid.max(1) as f64),
        paid,
        busy,
        batches,
    }
}

/// A fresh directory for one cell's database.
fn cell_dir(root: &Path, name: &str) -> PathBuf {
    let dir = root.join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    dir
}

// ----- PostgreSQL -----

/// A pool of one connection whose `search_path` is `schema` (created if needed).
fn pg_config(url: &str, schema: &str) -> PostgresConfig {
    PostgresConfig::new(url)
        .with_schema(schema)
        .with_max_connections(1)
}

struct Pg {
    url: String,
    admin: agent_mandate::adapters::postgres::Pool,
    rt: tokio::runtime::Runtime,
}

impl Pg {
    fn connect(url: &str) -> Pg {
        let rt = current_thread();
        let admin = PostgresConfig::new(url)
            .with_max_connections(1)
            .pool()
            .expect("pool");
        Pg {
            url: url.to_string(),
            admin,
            rt,
        }
    }

    fn batch(&self, sql: &str) {
        self.rt.block_on(async {
            let c = self.admin.get().await.expect("connection");
            c.batch_execute(sql).await.expect("sql");
        })
    }

    fn settings(&self) -> String {
        self.rt.block_on(async {
            let c = self.admin.get().await.expect("connection");
            let mut out = Vec::new();
            for name in ["server_version", "fsync", "synchronous_commit"] {
                let row = c
                    .query_one(&format!("SHOW {name}"), &[])
                    .await
                    .expect("show");
                out.push(format!("{name}={}", row.get::<_, String>(0)));
            }
            out.join(", ")
        })
    }

    /// Transactions committed in the database so far (server statistics).
    fn commits(&self) -> i64 {
        self.rt.block_on(async {
            let c = self.admin.get().await.expect("connection");
            c.batch_execute("SELECT pg_stat_clear_snapshot()")
                .await
                .expect("clear");
            let row = c
                .query_one(
                    "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()",
                    &[],
                )
                .await
                .expect("stats");
            row.get::<_, i64>(0)
        })
    }

    fn fresh_schema(&self, schema: &str) {
        self.batch(&format!(
            "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema};"
        ));
    }

    fn drop_schema(&self, schema: &str) {
        self.batch(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE;"));
    }

    /// Runs a measured cell and counts the server's commits per payment over it (the worker
    /// connections are closed before the count is read, so their statistics are flushed).
    fn counted(&self, run: impl FnOnce() -> (f64, u64, u64)) -> (f64, u64, u64, Option<f64>) {
        let before = self.commits();
        let (per_sec, paid, busy) = run();
        thread::sleep(Duration::from_millis(700));
        let after = self.commits();
        // Two of the commits are this connection's own statistics reads.
        let tx = (after - before - 2).max(0) as f64 / paid.max(1) as f64;
        (per_sec, paid, busy, Some(tx))
    }
}

fn pg_raw_run(pg: &Pg, schema: &str, workers: usize, cap: i64, t: &Timing) -> Cell {
    pg.fresh_schema(schema);
    pg.batch(&format!(
        "CREATE TABLE {schema}.budget (id BIGINT PRIMARY KEY, spent BIGINT NOT NULL, cap BIGINT NOT NULL);
         CREATE TABLE {schema}.ledger (payment_id TEXT PRIMARY KEY, budget_id BIGINT NOT NULL,
                                       amount BIGINT NOT NULL);
         INSERT INTO {schema}.budget (id, spent, cap) VALUES (1, 0, {cap});"
    ));
    let (per_sec, paid, busy, tx_per_payment) = pg.counted(|| {
        drive(workers, t.warmup, t.secs, |w, shared| {
            let config = pg_config(&pg.url, schema);
            Box::new(move || {
                let rt = current_thread();
                rt.block_on(async {
                    let pool = config.pool().expect("pool");
                    let mut client = pool.get().await.expect("connection");
                    let update = client
                        .prepare(
                            "UPDATE budget SET spent = spent + $1 \
                             WHERE id = $2 AND spent + $1 <= cap",
                        )
                        .await
                        .expect("prepare");
                    let insert = client
                        .prepare("INSERT INTO ledger (payment_id, budget_id, amount) VALUES ($1, $2, $3)")
                        .await
                        .expect("prepare");
                    let mut i = 0u64;
                    while !shared.stop.load(Ordering::Relaxed) {
                        let tx = client.transaction().await.expect("begin");
                        let n = tx
                            .execute(&update, &[&AMOUNT_MINOR, &1i64])
                            .await
                            .expect("update");
                        if n == 1 {
                            tx.execute(&insert, &[&format!("w{w}-{i}"), &1i64, &AMOUNT_MINOR])
                                .await
                                .expect("insert");
                        }
                        tx.commit().await.expect("commit");
                        if n == 0 {
                            break;
                        }
                        shared.paid.fetch_add(1, Ordering::Relaxed);
                        i += 1;
                    }
                });
            })
        })
    });
    let (overspend, consistent) = pg.rt.block_on(async {
        let c = pg.admin.get().await.expect("connection");
        let row = c
            .query_one(
                &format!(
                    "SELECT b.spent, b.cap, (SELECT COUNT(*) FROM {schema}.ledger), \
                            (SELECT COALESCE(SUM(amount), 0)::BIGINT FROM {schema}.ledger) \
                     FROM {schema}.budget b WHERE b.id = 1"
                ),
                &[],
            )
            .await
            .expect("check");
        let (spent, cap, rows, sum): (i64, i64, i64, i64) =
            (row.get(0), row.get(1), row.get(2), row.get(3));
        (
            i128::from(spent - cap).max(0),
            rows as u64 == paid && sum == spent && spent == paid as i64 * AMOUNT_MINOR,
        )
    });
    Cell {
        per_sec,
        overspend,
        consistent,
        tx_per_payment,
        paid,
        busy,
        batches: None,
    }
}

fn pg_adapter_run(
    pg: &Pg,
    schema: &str,
    workers: usize,
    cap: i64,
    t: &Timing,
    commit: bool,
) -> Cell {
    pg.fresh_schema(schema);
    let mandate = capped_mandate(cap);
    let config = pg_config(&pg.url, schema);
    let setup = pg
        .rt
        .block_on(PostgresStore::connect_with(&config))
        .expect("store");
    pg.rt
        .block_on(setup.insert_mandate(&mandate))
        .expect("mandate");
    let chain = Arc::new(pg.rt.block_on(setup.chain(mandate.id())).expect("chain"));
    let (per_sec, paid, busy, tx_per_payment) = pg.counted(|| {
        drive(workers, t.warmup, t.secs, |w, shared| {
            let (config, chain) = (config.clone(), chain.clone());
            Box::new(move || {
                current_thread().block_on(async {
                    let store = PostgresStore::connect_with(&config).await.expect("store");
                    work_async(&shared, |i| adapter_pay(&store, &chain, w, i, commit)).await;
                });
            })
        })
    });
    let (overspend, consistent) = pg.rt.block_on(check_usage(
        &setup,
        &mandate,
        paid,
        0,
        AMOUNT_MINOR,
        !commit,
    ));
    Cell {
        per_sec,
        overspend,
        consistent,
        tx_per_payment,
        paid,
        busy,
        batches: None,
    }
}

fn pg_engine_run(pg: &Pg, schema: &str, workers: usize, t: &Timing) -> Cell {
    pg.fresh_schema(schema);
    let config = pg_config(&pg.url, schema);
    let (vault, psp, card) = psp_and_vault(&pg.rt);
    let (setup, mandate) = pg.rt.block_on(async {
        let store =
            pg_engine_store(PostgresStore::connect_with(&config).await.expect("store")).await;
        let audit = PostgresAuditSink::from_pool(store.pool().clone())
            .await
            .expect("audit");
        let engine = engine_on(
            Arc::new(store.clone()),
            Arc::new(audit),
            vault.clone(),
            psp.clone(),
        );
        let mandate = engine
            .create_mandate(
                &buyer_p(),
                &CreateMandate::new("create".parse().expect("key"), capped_spec(BIG_CAP_MINOR)),
            )
            .await
            .expect("mandate")
            .value;
        (store, mandate)
    });
    let each = examples::travel_backpack_snapshot().total().minor_units();
    let (per_sec, paid, busy, tx_per_payment) = pg.counted(|| {
        drive(workers, t.warmup, t.secs, |w, shared| {
            let (config, vault, psp, card) =
                (config.clone(), vault.clone(), psp.clone(), card.clone());
            Box::new(move || {
                current_thread().block_on(async {
                    let store =
                        pg_engine_store(PostgresStore::connect_with(&config).await.expect("store"))
                            .await;
                    let audit = PostgresAuditSink::from_pool(store.pool().clone())
                        .await
                        .expect("audit");
                    let engine = engine_on(Arc::new(store), Arc::new(audit), vault, psp);
                    work_async(&shared, |i| engine_pay(&engine, &card, w, i)).await;
                });
            })
        })
    });
    let (overspend, consistent) = pg
        .rt
        .block_on(check_usage(&setup, &mandate, paid, busy, each, false));
    Cell {
        per_sec,
        overspend,
        consistent,
        tx_per_payment,
        paid,
        busy,
        batches: None,
    }
}

// ----- the run -----

struct Timing {
    warmup: Duration,
    secs: Duration,
}

/// One row of the table.
struct Row {
    backend: &'static str,
    sync: String,
    workers: usize,
    raw: Option<Cell>,
    /// The reservation alone (`place_hold`).
    reserve: Option<Cell>,
    adapter: Option<Cell>,
    engine: Option<Cell>,
    /// The engine, every worker on one database (SQLite).
    shared: Option<Cell>,
}

struct Filter(Vec<String>);

impl Filter {
    fn from_env() -> Filter {
        Filter(
            std::env::var("STORE_BENCH_ONLY")
                .unwrap_or_default()
                .split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect(),
        )
    }

    fn wants(&self, label: &str) -> bool {
        self.0.is_empty() || self.0.iter().any(|f| label.contains(f.as_str()))
    }
}

fn show(label: &str, cell: &Cell) {
    let mut tx = cell
        .tx_per_payment
        .map(|t| format!(", {t:.2} commits/payment"))
        .unwrap_or_default();
    if let Some((jobs, batches, largest)) = cell.batches {
        tx.push_str(&format!(
            ", {jobs} write calls in {batches} group commits (mean {:.2}, largest {largest})",
            jobs as f64 / batches.max(1) as f64
        ));
    }
    eprintln!(
        "{label:<28} {:>9.0} payments/s  ({} in all, {} busy/failed)  overspend {}  ledger {}{tx}",
        cell.per_sec,
        cell.paid,
        cell.busy,
        cell.overspend,
        if cell.consistent {
            "consistent"
        } else {
            "INCONSISTENT"
        }
    );
    assert_eq!(cell.overspend, 0, "{label}: overspend");
    assert!(
        cell.consistent,
        "{label}: the budget does not match the payments counted"
    );
}

/// 8 workers against a cap of `CAP_CHECK_PAYMENTS` payments, until each is refused: exactly
/// that many must pass.
fn cap_check(label: &str, run: impl FnOnce(i64) -> Cell) {
    let cell = run(CAP_CHECK_PAYMENTS * AMOUNT_MINOR);
    assert_eq!(cell.overspend, 0, "{label}: overspend at the cap");
    assert!(
        cell.consistent,
        "{label}: the budget does not match the payments counted"
    );
    eprintln!(
        "{label:<28} cap of {CAP_CHECK_PAYMENTS} payments, 8 workers until refused: \
         exactly {CAP_CHECK_PAYMENTS} passed, overspend 0"
    );
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else is understood.
    let secs: f64 = std::env::var("STORE_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(4.0);
    let timing = Timing {
        warmup: Duration::from_secs(1),
        secs: Duration::from_secs_f64(secs),
    };
    // The cap check runs until every worker is refused: no warm-up, a generous limit.
    let cap_timing = Timing {
        warmup: Duration::ZERO,
        secs: Duration::from_secs(30),
    };
    let filter = Filter::from_env();
    let root = std::env::var_os("STORE_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir)
        .join(format!("am-store-bench-{}", std::process::id()));
    std::fs::create_dir_all(&root).expect("bench dir");
    eprintln!(
        "store bench: {secs} s per cell after 1 s of warm-up; SQLite files under {}",
        root.display()
    );
    let mut rows = Vec::new();

    for sync in [Synchronous::Full, Synchronous::Normal] {
        let s = sync_name(sync);
        let tag = format!("sqlite-{}", s.to_lowercase());
        let sync_label = format!("WAL, synchronous={s}");
        for &workers in &WORKER_COUNTS {
            let mut row = Row {
                backend: "SQLite",
                sync: sync_label.clone(),
                workers,
                raw: None,
                reserve: None,
                adapter: None,
                engine: None,
                shared: None,
            };
            let label = format!("{tag} raw w{workers}");
            if filter.wants(&label) {
                let dir = cell_dir(&root, &label.replace(' ', "-"));
                let cell =
                    sqlite_raw_run(&dir.join("raw.db"), sync, workers, BIG_CAP_MINOR, &timing);
                show(&label, &cell);
                row.raw = Some(cell);
            }
            let label = format!("{tag} reserve w{workers}");
            if filter.wants(&label) {
                let dir = cell_dir(&root, &label.replace(' ', "-"));
                let cell = sqlite_adapter_run(
                    &dir.join("store.db"),
                    sync,
                    workers,
                    BIG_CAP_MINOR,
                    &timing,
                    false,
                );
                show(&label, &cell);
                row.reserve = Some(cell);
            }
            let label = format!("{tag} adapter w{workers}");
            if filter.wants(&label) {
                let dir = cell_dir(&root, &label.replace(' ', "-"));
                let cell = sqlite_adapter_run(
                    &dir.join("store.db"),
                    sync,
                    workers,
                    BIG_CAP_MINOR,
                    &timing,
                    true,
                );
                show(&label, &cell);
                row.adapter = Some(cell);
            }
            let label = format!("{tag} engine w{workers}");
            if ENGINE_WORKER_COUNTS.contains(&workers) && filter.wants(&label) {
                let dir = cell_dir(&root, &label.replace(' ', "-"));
                let cell = sqlite_engine_run(&dir.join("engine.db"), sync, workers, &timing);
                show(&label, &cell);
                row.engine = Some(cell);
            }
            let label = format!("{tag} shared engine w{workers}");
            if ENGINE_WORKER_COUNTS.contains(&workers) && filter.wants(&label) {
                let dir = cell_dir(&root, &label.replace(' ', "-"));
                let cell = sqlite_engine_shared_run(&dir.join("engine.db"), sync, workers, &timing);
                show(&label, &cell);
                row.shared = Some(cell);
            }
            rows.push(row);
        }
        let label = format!("{tag} capcheck");
        if filter.wants(&label) {
            cap_check(&format!("{tag} raw"), |cap| {
                let dir = cell_dir(&root, &format!("{tag}-cap-raw"));
                sqlite_raw_run(&dir.join("raw.db"), sync, 8, cap, &cap_timing)
            });
            cap_check(&format!("{tag} adapter"), |cap| {
                let dir = cell_dir(&root, &format!("{tag}-cap-adapter"));
                sqlite_adapter_run(&dir.join("store.db"), sync, 8, cap, &cap_timing, true)
            });
        }
    }
    let _ = std::fs::remove_dir_all(&root);

    match std::env::var("DATABASE_URL") {
        Err(_) => eprintln!(
            "PostgreSQL: skipped (DATABASE_URL is not set; run under scripts/with-postgres.sh)"
        ),
        Ok(url) => {
            let pg = Pg::connect(&url);
            let settings = pg.settings();
            eprintln!("PostgreSQL: {settings}");
            let sync = settings
                .split(", ")
                .filter(|s| !s.starts_with("server_version"))
                .collect::<Vec<_>>()
                .join(", ");
            for &workers in &WORKER_COUNTS {
                let mut row = Row {
                    backend: "PostgreSQL",
                    sync: sync.clone(),
                    workers,
                    raw: None,
                    reserve: None,
                    adapter: None,
                    engine: None,
                    shared: None,
                };
                let label = format!("postgres raw w{workers}");
                if filter.wants(&label) {
                    let schema = format!("bench_raw_w{workers}");
                    let cell = pg_raw_run(&pg, &schema, workers, BIG_CAP_MINOR, &timing);
                    pg.drop_schema(&schema);
                    show(&label, &cell);
                    row.raw = Some(cell);
                }
                let label = format!("postgres reserve w{workers}");
                if filter.wants(&label) {
                    let schema = format!("bench_reserve_w{workers}");
                    let cell = pg_adapter_run(&pg, &schema, workers, BIG_CAP_MINOR, &timing, false);
                    pg.drop_schema(&schema);
                    show(&label, &cell);
                    row.reserve = Some(cell);
                }
                let label = format!("postgres adapter w{workers}");
                if filter.wants(&label) {
                    let schema = format!("bench_adapter_w{workers}");
                    let cell = pg_adapter_run(&pg, &schema, workers, BIG_CAP_MINOR, &timing, true);
                    pg.drop_schema(&schema);
                    show(&label, &cell);
                    row.adapter = Some(cell);
                }
                let label = format!("postgres engine w{workers}");
                if ENGINE_WORKER_COUNTS.contains(&workers) && filter.wants(&label) {
                    let schema = format!("bench_engine_w{workers}");
                    let cell = pg_engine_run(&pg, &schema, workers, &timing);
                    pg.drop_schema(&schema);
                    show(&label, &cell);
                    row.engine = Some(cell);
                }
                rows.push(row);
            }
            if filter.wants("postgres capcheck") {
                cap_check("postgres raw", |cap| {
                    let cell = pg_raw_run(&pg, "bench_cap_raw", 8, cap, &cap_timing);
                    pg.drop_schema("bench_cap_raw");
                    cell
                });
                cap_check("postgres adapter", |cap| {
                    let cell = pg_adapter_run(&pg, "bench_cap_adapter", 8, cap, &cap_timing, true);
                    pg.drop_schema("bench_cap_adapter");
                    cell
                });
            }
        }
    }

    println!("{}", table(&rows));
}

fn table(rows: &[Row]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\n| backend | settings | workers | raw payments/s | reserve (place_hold) /s | reserve / raw | \
         hold + commit /s | hold + commit / raw | engine payments/s | engine / raw | \
         engine, one database /s | engine, one database / raw | overspend | \
         commits per payment (raw / reserve / hold + commit / engine / engine, one database) | \
         group commit (write calls / transactions, mean batch, largest) |"
    );
    let _ = writeln!(
        out,
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|"
    );
    let rate = |c: &Option<Cell>| c.map_or("-".to_string(), |c| format!("{:.0}", c.per_sec));
    let ratio = |a: &Option<Cell>, b: &Option<Cell>| match (a, b) {
        (Some(a), Some(b)) if b.per_sec > 0.0 => format!("{:.0}%", 100.0 * a.per_sec / b.per_sec),
        _ => "-".to_string(),
    };
    for r in rows {
        let cells = [&r.raw, &r.reserve, &r.adapter, &r.engine, &r.shared];
        if cells.iter().all(|c| c.is_none()) {
            continue;
        }
        let over: i128 = cells.iter().filter_map(|c| c.map(|c| c.overspend)).sum();
        let tx = |c: &Option<Cell>| {
            c.and_then(|c| c.tx_per_payment)
                .map_or("-".to_string(), |t| format!("{t:.2}"))
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} / {} / {} / {} / {} | {} |",
            r.backend,
            r.sync,
            r.workers,
            rate(&r.raw),
            rate(&r.reserve),
            ratio(&r.reserve, &r.raw),
            rate(&r.adapter),
            ratio(&r.adapter, &r.raw),
            rate(&r.engine),
            ratio(&r.engine, &r.raw),
            rate(&r.shared),
            ratio(&r.shared, &r.raw),
            over,
            tx(&r.raw),
            tx(&r.reserve),
            tx(&r.adapter),
            tx(&r.engine),
            tx(&r.shared),
            r.shared.and_then(|c| c.batches).map_or("-".to_string(), |(j, b, l)| format!(
                "{j} / {b}, {:.2}, {l}",
                j as f64 / b.max(1) as f64
            )),
        );
    }
    out
}

/// The story's buyer, as the host's authentication would hand it to the engine.
fn buyer_p() -> agent_mandate::domain::Principal {
    agent_mandate::domain::Principal::Buyer(examples::buyer())
}

/// The story's agent, authenticated.
fn agent_p() -> agent_mandate::domain::Principal {
    agent_mandate::domain::Principal::Agent(examples::agent().id)
}
