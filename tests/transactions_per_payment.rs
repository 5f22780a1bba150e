//! How many store transactions a payment costs on the durable stores, counted through
//! `testkit::CountingStore` / `CountingAuditSink` (every port call of the SQLite and
//! PostgreSQL adapters is one transaction, or one savepoint of a SQLite group commit). The
//! test fails when a payment makes more calls than its bound: a change that adds a round
//! trip to the payment path has to say so here.
#![cfg(all(feature = "sqlite", feature = "testkit"))]

mod common;

use std::sync::Arc;

use agent_mandate::adapters::memory::{ManualClock, MemoryVault};
use agent_mandate::adapters::sqlite::{SqliteConfig, SqliteDatabase};
use agent_mandate::domain::{examples, AttemptStatus};
use agent_mandate::engine::{CreateMandate, Engine, EngineConfig, ExecutePayment};
use agent_mandate::ports::{AuditSink, CredentialVault, PaymentProvider, Ports, Store};
use agent_mandate::testkit::{CallCounter, CallCounts, CountingAuditSink, CountingStore, FakePsp};
use common::engine::{backpack_spec, card, key};
use common::principals::{agent_p, buyer_p};

/// Write transactions of one payment (execute with capture on authorize): the command's two
/// (`open_payment` before the PSP call, `change_attempt` after it) and, with the default
/// configuration, the delivery of its audit events to the sink (`append_all`, `ack_audit`).
const WRITES_PER_PAYMENT: u64 = 4;
/// Reads of one payment: the decision's inputs (`payment_inputs`) and the outbox
/// (`staged_audit`).
const READS_PER_PAYMENT: u64 = 2;
/// Write transactions of one payment when the store appends the events to its own database's
/// trail (`SqliteDatabase::store_with_trail`): `open_payment` and `change_attempt`, each
/// with its events chained into the trail in the same transaction, and no delivery round.
const WRITES_WITH_TRAIL: u64 = 2;
/// Reads of one payment then: the decision's inputs only (no outbox to read).
const READS_WITH_TRAIL: u64 = 1;

async fn counted_payments(store: Arc<dyn Store>, audit: Arc<dyn AuditSink>) -> Vec<CallCounts> {
    counted(store, audit).await.0
}

/// The counts of four payments, and the engine that made them.
async fn counted(store: Arc<dyn Store>, audit: Arc<dyn AuditSink>) -> (Vec<CallCounts>, Engine) {
    let counter = CallCounter::new();
    let vault: Arc<dyn CredentialVault> = Arc::new(MemoryVault::new());
    let psp = Arc::new(FakePsp::with_vault(vault.clone()));
    let provider: Arc<dyn PaymentProvider> = psp;
    let ports = Ports {
        store: Arc::new(CountingStore::new(store, counter.clone())),
        provider,
        vault,
        audit: Arc::new(CountingAuditSink::new(audit, counter.clone())),
        clock: Arc::new(ManualClock::new(examples::now())),
    };
    let config = EngineConfig::default()
        .with_threshold_percent(None)
        .expect("config");
    let engine = Engine::new(ports, config).expect("engine");
    let mut spec = backpack_spec(true);
    spec.scope.max_uses = None;
    spec.scope.amount.max_payment_attempts = None;
    engine
        .create_mandate(&buyer_p(), &CreateMandate::new(key("create"), spec))
        .await
        .expect("mandate");
    let card = engine
        .store_credential(
            &buyer_p(),
            &key("card"),
            card(&examples::agent().id, "pm_card_visa"),
        )
        .await
        .expect("card")
        .value
        .reference;
    let snapshot = examples::travel_backpack_snapshot();
    let mut per_payment = Vec::new();
    for i in 0..4 {
        counter.reset();
        let out = engine
            .execute_payment(
                &agent_p(),
                &ExecutePayment::new(
                    key(&format!("pay-{i}")),
                    examples::authorize_request(&snapshot),
                    snapshot.clone(),
                    examples::valid_checkout(snapshot.id()),
                    card.clone(),
                )
                .with_capture(true),
            )
            .await
            .expect("payment");
        assert_eq!(
            out.attempt().map(|a| a.status),
            Some(AttemptStatus::Captured)
        );
        per_payment.push(counter.counts());
    }
    (per_payment, engine)
}

fn check(backend: &str, counts: &[CallCounts]) {
    check_within(backend, counts, WRITES_PER_PAYMENT, READS_PER_PAYMENT);
}

fn check_within(backend: &str, counts: &[CallCounts], writes: u64, reads: u64) {
    for (i, c) in counts.iter().enumerate() {
        eprintln!(
            "{backend} payment {i}: {} writes, {} reads: {:?}",
            c.writes, c.reads, c.by_method
        );
        assert!(
            c.writes <= writes,
            "{backend}: payment {i} made {} write calls, the bound is {writes}: {:?}",
            c.writes,
            c.by_method
        );
        assert!(
            c.reads <= reads,
            "{backend}: payment {i} made {} reads, the bound is {reads}: {:?}",
            c.reads,
            c.by_method
        );
    }
}

#[tokio::test]
async fn a_payment_on_sqlite_stays_within_its_transactions() {
    let dir = std::env::temp_dir().join(format!("am-tx-per-payment-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let db = SqliteDatabase::open(SqliteConfig::file(dir.join("state.db"))).expect("open");
    let before = db.group_commit_stats();
    let counts = counted_payments(Arc::new(db.store()), Arc::new(db.audit_sink())).await;
    check("sqlite", &counts);
    // One payment at a time: every write call is its own group commit.
    let after = db.group_commit_stats();
    assert_eq!(after.jobs - before.jobs, after.batches - before.batches);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The store and the sink on one SQLite database, the store appending to the trail itself: a
/// payment is two write transactions in all (the same configuration through the outbox makes
/// four, checked below so the bound is known to bite), its events are on the trail, chained,
/// and nothing waits in the outbox.
#[tokio::test]
async fn a_payment_on_sqlite_with_its_own_trail_is_two_write_transactions() {
    let dir = std::env::temp_dir().join(format!("am-tx-trail-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let db = SqliteDatabase::open(SqliteConfig::file(dir.join("state.db"))).expect("open");
    let before = db.group_commit_stats();
    let (counts, engine) =
        counted(Arc::new(db.store_with_trail()), Arc::new(db.audit_sink())).await;
    check_within(
        "sqlite, own trail",
        &counts,
        WRITES_WITH_TRAIL,
        READS_WITH_TRAIL,
    );
    for c in &counts {
        assert_eq!(
            c.writes, WRITES_WITH_TRAIL,
            "open_payment and change_attempt: {:?}",
            c.by_method
        );
    }
    // Two group commits per payment (one at a time), plus the mandate's and the card's.
    let after = db.group_commit_stats();
    assert_eq!(after.jobs - before.jobs, after.batches - before.batches);
    assert!(
        after.batches - before.batches <= 2 * counts.len() as u64 + 4,
        "{after:?}"
    );
    // Every event is on the trail, chained; the outbox is empty; every state has its event.
    assert!(db
        .store()
        .staged_audit(10)
        .await
        .expect("staged")
        .is_empty());
    let head = db.audit_sink().verify().await.expect("chain intact");
    let report = engine.verify_trail(1_000).await.expect("trail");
    assert!(report.is_complete(), "{report:?}");
    assert_eq!(report.staged_events, 0);
    assert_eq!(report.repeated_events, 0);
    assert_eq!(Some(report.trail_events), head.map(|h| h.seq));
    // The mandate's and the card's events, then six per payment (decision, validate, hold
    // placed, submit, the PSP's capturing report, hold committed), all on the trail.
    assert_eq!(
        report.trail_events,
        2 + 6 * counts.len() as u64,
        "{report:?}"
    );
    drop(engine);

    // The bound bites: the same database through the outbox (the configuration before the
    // store wrote its trail) makes more than two write calls per payment.
    let db2 = SqliteDatabase::open(SqliteConfig::file(dir.join("outbox.db"))).expect("open");
    let (outboxed, _) = counted(Arc::new(db2.store()), Arc::new(db2.audit_sink())).await;
    assert!(
        outboxed.iter().all(|c| c.writes > WRITES_WITH_TRAIL),
        "{outboxed:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A store that appends to its own trail refuses an engine whose audit sink is another trail
/// (its events would never reach that sink).
#[tokio::test]
async fn a_store_with_its_own_trail_refuses_another_sink() {
    let db = SqliteDatabase::open(SqliteConfig::in_memory()).expect("open");
    let other = SqliteDatabase::open(SqliteConfig::in_memory()).expect("open");
    let vault: Arc<dyn CredentialVault> = Arc::new(MemoryVault::new());
    let provider: Arc<dyn PaymentProvider> = Arc::new(FakePsp::with_vault(vault.clone()));
    let ports = |audit: Arc<dyn AuditSink>| Ports {
        store: Arc::new(db.store_with_trail()),
        provider: provider.clone(),
        vault: vault.clone(),
        audit,
        clock: Arc::new(ManualClock::new(examples::now())),
    };
    let Err(refused) = Engine::new(ports(Arc::new(other.audit_sink())), EngineConfig::default())
    else {
        panic!("another database's sink is refused");
    };
    assert_eq!(refused.field, "ports.audit");
    let memory = Arc::new(agent_mandate::adapters::memory::MemoryAuditSink::new());
    assert!(Engine::new(ports(memory), EngineConfig::default()).is_err());
    assert!(Engine::new(ports(Arc::new(db.audit_sink())), EngineConfig::default()).is_ok());
}

#[cfg(feature = "postgres")]
#[tokio::test]
async fn a_payment_on_postgres_stays_within_its_transactions() {
    use common::backends::{database_url, Backend};
    let Some(url) = database_url() else { return };
    let backend = Backend::Postgres {
        url,
        schema: format!("tx_per_payment_{}", std::process::id()),
    };
    let (store, audit) = backend.open(std::path::Path::new("unused")).await;
    let counts = counted_payments(store, audit).await;
    check("postgres", &counts);
    backend.drop_schema().await;
}

/// PostgreSQL with the store appending to its own schema's trail: two write transactions per
/// payment, every event on the trail, nothing in the outbox; a sink on another schema is
/// refused.
#[cfg(feature = "postgres")]
#[tokio::test]
async fn a_payment_on_postgres_with_its_own_trail_is_two_write_transactions() {
    use agent_mandate::adapters::postgres::{PostgresAuditSink, PostgresConfig, PostgresStore};
    use common::backends::{database_url, Backend};
    let Some(url) = database_url() else { return };
    let schema = format!("tx_trail_{}", std::process::id());
    let config = PostgresConfig::new(url.clone())
        .with_schema(schema.clone())
        .with_max_connections(2);
    let store = PostgresStore::connect_with(&config)
        .await
        .expect("connect")
        .with_trail()
        .await
        .expect("trail");
    let audit = PostgresAuditSink::from_pool(store.pool().clone())
        .await
        .expect("audit sink");
    assert_eq!(store.direct_trail(), audit.trail_id());
    let plain = PostgresStore::connect_with(&config).await.expect("connect");
    assert!(Store::staged_audit(&plain, 10)
        .await
        .expect("staged")
        .is_empty());
    let (counts, engine) = counted(Arc::new(store), Arc::new(audit.clone())).await;
    check_within(
        "postgres, own trail",
        &counts,
        WRITES_WITH_TRAIL,
        READS_WITH_TRAIL,
    );
    assert!(Store::staged_audit(&plain, 10)
        .await
        .expect("staged")
        .is_empty());
    let report = engine.verify_trail(1_000).await.expect("trail");
    assert!(report.is_complete(), "{report:?}");
    assert_eq!(
        report.trail_events,
        2 + 6 * counts.len() as u64,
        "{report:?}"
    );
    assert!(audit.verify().await.is_ok());
    drop(engine);
    let backend = Backend::Postgres { url, schema };
    backend.drop_schema().await;
}
