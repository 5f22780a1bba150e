//! A store that appends its events to the audit sink's trail itself
//! (`SqliteDatabase::store_with_trail`, `MemoryStore::with_trail`): the attacks a hostile
//! reviewer would try on it. A crash after the store's commit loses no event (there is no
//! delivery step left to crash in), a change that fails leaves no event, a tampered stored
//! document or trail event is named, and a sink that never answers an append cannot hold up a
//! payment (the payment path no longer calls it).
#![cfg(all(feature = "sqlite", feature = "testkit"))]

mod common;

use std::sync::Arc;
use std::time::Duration;

use agent_mandate::adapters::memory::{ManualClock, MemoryAuditSink, MemoryStore, MemoryVault};
use agent_mandate::adapters::sqlite::{SqliteConfig, SqliteDatabase};
use agent_mandate::domain::{
    examples, AttemptStatus, AuditEvent, AuditKind, ChainFault, ChainedEvent, PaymentAttempt,
};
use agent_mandate::engine::{CreateMandate, Engine, EngineConfig, ExecutePayment};
use agent_mandate::ports::{
    AttemptChange, AuditError, AuditReceipt, AuditSink, CredentialVault, PaymentProvider, Ports,
    Store, StoreError, TrailId,
};
use agent_mandate::testkit::FakePsp;
use async_trait::async_trait;
use common::engine::{backpack_spec, card, key};
use common::principals::{agent_p, buyer_p};

/// An engine on `store` and `audit` with the story's mandate and card; returns it and one
/// payment's attempt (authorized and captured).
async fn paid(store: Arc<dyn Store>, audit: Arc<dyn AuditSink>) -> (Engine, PaymentAttempt) {
    let vault: Arc<dyn CredentialVault> = Arc::new(MemoryVault::new());
    let provider: Arc<dyn PaymentProvider> = Arc::new(FakePsp::with_vault(vault.clone()));
    let ports = Ports {
        store,
        provider,
        vault,
        audit,
        clock: Arc::new(ManualClock::new(examples::now())),
    };
    let engine = Engine::new(ports, EngineConfig::default()).expect("engine");
    engine
        .create_mandate(
            &buyer_p(),
            &CreateMandate::new(key("create"), backpack_spec(true)),
        )
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
    let out = engine
        .execute_payment(
            &agent_p(),
            &ExecutePayment::new(
                key("pay"),
                examples::authorize_request(&snapshot),
                snapshot.clone(),
                examples::valid_checkout(snapshot.id()),
                card,
            )
            .with_capture(true),
        )
        .await
        .expect("payment");
    let attempt = out.attempt().expect("attempt").clone();
    assert_eq!(attempt.status, AttemptStatus::Captured);
    (engine, attempt)
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("am-own-trail-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    dir
}

/// A crash right after the store's commit: the process ends without another call (no flush,
/// no acknowledgement). Reopened, the database's trail holds every event of the payment,
/// chained, and the outbox is empty: nothing was waiting to be delivered.
#[tokio::test]
async fn a_crash_after_the_commit_loses_no_event() {
    let dir = temp_dir("crash");
    let path = dir.join("state.db");
    let attempt = {
        let db = SqliteDatabase::open(SqliteConfig::file(&path)).expect("open");
        let (engine, attempt) =
            paid(Arc::new(db.store_with_trail()), Arc::new(db.audit_sink())).await;
        drop(engine);
        attempt
    };
    let db = SqliteDatabase::open(SqliteConfig::file(&path)).expect("reopen");
    assert!(db
        .store()
        .staged_audit(10)
        .await
        .expect("staged")
        .is_empty());
    let head = db
        .audit_sink()
        .verify()
        .await
        .expect("chain")
        .expect("head");
    let events: Vec<AuditEvent> = db
        .audit_sink()
        .read(1, 100)
        .await
        .expect("read")
        .iter()
        .map(|e| e.event().expect("event"))
        .collect();
    assert_eq!(events.len() as u64, head.seq);
    let to: Vec<AttemptStatus> = events
        .iter()
        .filter_map(|e| match &e.kind {
            AuditKind::AttemptTransition { attempt_id, to, .. } if *attempt_id == attempt.id => {
                Some(*to)
            }
            _ => None,
        })
        .collect();
    assert_eq!(to.last(), Some(&AttemptStatus::Captured), "{to:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A change refused by the store (compare and set on a status the attempt no longer has)
/// rolls its events back with it: the trail's head does not move.
#[tokio::test]
async fn a_change_that_fails_leaves_no_event_on_the_trail() {
    let db = SqliteDatabase::open(SqliteConfig::in_memory()).expect("open");
    let store = db.store_with_trail();
    let (_engine, attempt) = paid(Arc::new(store.clone()), Arc::new(db.audit_sink())).await;
    let before = db.audit_sink().head().await.expect("head");
    let event = AuditEvent {
        at: examples::now(),
        kind: AuditKind::OrderFailed {
            attempt_id: attempt.id.clone(),
            reason: "must not be on the trail".into(),
        },
    };
    let refused = store
        .change_attempt(&AttemptChange {
            next: &attempt,
            expected: AttemptStatus::Authorized,
            hold_id: &attempt.id,
            holds: &[],
            fence: None,
            completion: None,
            events: std::slice::from_ref(&event),
        })
        .await;
    assert!(
        matches!(refused, Err(StoreError::Conflict { .. })),
        "{refused:?}"
    );
    assert_eq!(db.audit_sink().head().await.expect("head"), before);
    assert!(store.staged_audit(10).await.expect("staged").is_empty());
    // The same change with the right status commits, events and all.
    store
        .change_attempt(&AttemptChange {
            expected: AttemptStatus::Captured,
            ..AttemptChange {
                next: &attempt,
                expected: AttemptStatus::Captured,
                hold_id: &attempt.id,
                holds: &[],
                fence: None,
                completion: None,
                events: std::slice::from_ref(&event),
            }
        })
        .await
        .expect("change");
    let after = db.audit_sink().head().await.expect("head").expect("some");
    assert_eq!(Some(after.seq), before.map(|b| b.seq + 1));
}

/// Tampering with what the trail refers to: a stored snapshot edited after the payment no
/// longer hashes to the id the trail's events carry, and the dispute evidence is refused
/// naming it; an event edited on the trail the store wrote is named by the chain check and
/// fails the evidence's `audit_chain` check.
#[tokio::test]
async fn a_tampered_snapshot_or_event_is_named() {
    let dir = temp_dir("tamper");
    let path = dir.join("state.db");
    let db = SqliteDatabase::open(SqliteConfig::file(&path)).expect("open");
    let (engine, attempt) = paid(Arc::new(db.store_with_trail()), Arc::new(db.audit_sink())).await;
    let clean = engine
        .dispute_evidence(&attempt.id)
        .await
        .expect("evidence");
    let check = |e: &agent_mandate::engine::DisputeEvidence, name: &str| {
        e.checks
            .iter()
            .find(|c| c.name == name)
            .map(|c| c.passed)
            .expect("check present")
    };
    assert!(check(&clean, "snapshot_hash"), "{:?}", clean.checks);
    assert!(check(&clean, "audit_chain"), "{:?}", clean.checks);
    let sql = rusqlite::Connection::open(&path).expect("raw");
    let changed = sql
        .execute(
            "UPDATE snapshots SET body = replace(body, 'Travel Backpack', 'Travel Rucksack')",
            [],
        )
        .expect("edit the snapshot");
    assert_eq!(changed, 1);
    // The stored body still claims the id the trail carries; reading it recomputes the
    // content id, so the evidence is refused naming the snapshot rather than served.
    match engine.dispute_evidence(&attempt.id).await {
        Err(agent_mandate::engine::EngineError::Store(StoreError::Corrupt {
            table: "snapshots",
            key,
            message,
        })) => {
            assert_eq!(key, attempt.request.snapshot_id.to_string());
            assert!(message.contains("does not match"), "{message}");
        }
        other => panic!("the edited snapshot is not named: {other:?}"),
    }
    sql.execute(
        "UPDATE snapshots SET body = replace(body, 'Travel Rucksack', 'Travel Backpack')",
        [],
    )
    .expect("undo the edit");
    // An event of the payment, edited in place.
    let seq: i64 = sql
        .query_row(
            "SELECT seq FROM audit_events WHERE body LIKE '%\"type\":\"hold\"%' ORDER BY seq DESC LIMIT 1",
            [],
            |r| r.get(0),
        )
        .expect("a hold event");
    sql.execute(
        "UPDATE audit_events SET body = replace(body, '144.00', '1.00') WHERE seq = ?1",
        [seq],
    )
    .expect("edit the event");
    match db.audit_sink().verify().await {
        Err(AuditError::Broken(b)) => {
            assert_eq!((b.seq, b.fault), (seq as u64, ChainFault::Edited));
        }
        other => panic!("the edit is not named: {other:?}"),
    }
    let evidence = engine
        .dispute_evidence(&attempt.id)
        .await
        .expect("evidence");
    assert!(!check(&evidence, "audit_chain"), "{:?}", evidence.checks);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A sink that never answers an append (slower than every timeout), on the store's trail.
#[derive(Debug)]
struct NeverAppends(Arc<MemoryAuditSink>);

#[async_trait]
impl AuditSink for NeverAppends {
    async fn append(&self, _: &AuditEvent) -> Result<AuditReceipt, AuditError> {
        std::future::pending().await
    }
    async fn append_all(&self, _: &[AuditEvent]) -> Result<Option<AuditReceipt>, AuditError> {
        std::future::pending().await
    }
    fn trail_id(&self) -> Option<TrailId> {
        self.0.trail_id()
    }
    async fn read(&self, from_seq: u64, limit: usize) -> Result<Vec<ChainedEvent>, AuditError> {
        self.0.read(from_seq, limit).await
    }
    async fn head(&self) -> Result<Option<AuditReceipt>, AuditError> {
        self.0.head().await
    }
}

/// With the store on the trail, a payment never calls the sink's append: a sink that would
/// hang forever does not hold it up, and the trail still gets every event.
#[tokio::test]
async fn a_sink_that_never_answers_does_not_hold_up_a_payment() {
    let sink = Arc::new(MemoryAuditSink::new());
    let store = Arc::new(MemoryStore::new().with_trail(sink.clone()));
    let (engine, attempt) = tokio::time::timeout(
        Duration::from_secs(10),
        paid(store.clone(), Arc::new(NeverAppends(sink.clone()))),
    )
    .await
    .expect("the payment does not wait for the sink");
    assert!(store.staged_audit(10).await.expect("staged").is_empty());
    let report = engine.verify_trail(100).await.expect("trail");
    assert!(report.is_complete(), "{report:?}");
    assert!(sink
        .events()
        .iter()
        .any(|e| e.body.contains(attempt.id.as_str())));
    sink.verify().await.expect("chain");
}

/// Alert events are the exception: a store writing the trail still stages them, so the
/// engine's delivery hands them to the alert sink after the trail has them. Every other
/// event goes straight to the trail, in order, on SQLite and in memory.
#[tokio::test]
async fn alert_events_still_wait_in_the_outbox() {
    use agent_mandate::domain::{Alert, AlertKind};
    let alert = Alert::new(
        examples::now(),
        AlertKind::ViolationsSuspended {
            violations: 3,
            window_seconds: 0,
        },
        "three violations in a row",
    )
    .to_event();
    let other = |reason: &str| AuditEvent {
        at: examples::now(),
        kind: AuditKind::OrderFailed {
            attempt_id: "att_1".parse().expect("id"),
            reason: reason.into(),
        },
    };
    let events = [other("first"), alert.clone(), other("second")];
    let db = SqliteDatabase::open(SqliteConfig::in_memory()).expect("open");
    let sink = Arc::new(MemoryAuditSink::new());
    let memory = MemoryStore::new().with_trail(sink.clone());
    let stores: [(&str, &dyn Store, Arc<dyn AuditSink>); 2] = [
        ("sqlite", &db.store_with_trail(), Arc::new(db.audit_sink())),
        ("memory", &memory, sink),
    ];
    for (name, store, trail) in stores {
        store.stage_audit(&events).await.expect("stage");
        let staged = store.staged_audit(10).await.expect("staged");
        assert_eq!(staged.len(), 1, "{name}: {staged:?}");
        assert_eq!(staged[0].event, alert, "{name}");
        let bodies: Vec<String> = trail
            .read(1, 10)
            .await
            .expect("read")
            .into_iter()
            .map(|e| e.body)
            .collect();
        assert_eq!(bodies.len(), 2, "{name}: {bodies:?}");
        assert!(
            bodies[0].contains("first") && bodies[1].contains("second"),
            "{name}"
        );
    }
}
