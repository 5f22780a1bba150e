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

async fn counted_payments(store: Arc<dyn Store>, audit: Arc<dyn AuditSink>) -> Vec<CallCounts> {
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
    per_payment
}

fn check(backend: &str, counts: &[CallCounts]) {
    for (i, c) in counts.iter().enumerate() {
        eprintln!(
            "{backend} payment {i}: {} writes, {} reads: {:?}",
            c.writes, c.reads, c.by_method
        );
        assert!(
            c.writes <= WRITES_PER_PAYMENT,
            "{backend}: payment {i} made {} write calls, the bound is {WRITES_PER_PAYMENT}: {:?}",
            c.writes,
            c.by_method
        );
        assert!(
            c.reads <= READS_PER_PAYMENT,
            "{backend}: payment {i} made {} reads, the bound is {READS_PER_PAYMENT}: {:?}",
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
