//! The SQLite adapters against the Store and AuditSink conformance suites, plus durability,
//! bad data and tampering done directly in the database.
#![cfg(all(feature = "sqlite", feature = "testkit"))]

use agent_mandate::adapters::sqlite::{SqliteConfig, SqliteDatabase};
use agent_mandate::testkit::{
    audit_sink_conformance, store_conformance, store_conformance_exclusive,
};

#[tokio::test]
async fn in_memory_database_passes_the_store_suite() {
    let db = SqliteDatabase::open(SqliteConfig::in_memory()).unwrap();
    store_conformance(&db.store()).await;
    store_conformance_exclusive(&db.store()).await;
}

#[tokio::test]
async fn in_memory_database_passes_the_audit_suite() {
    let db = SqliteDatabase::open(SqliteConfig::in_memory()).unwrap();
    audit_sink_conformance(&db.audit_sink()).await;
}

/// A file database: writes through the group commit of the connection's thread, reads on
/// the WAL read connections.
#[tokio::test]
async fn file_database_with_readers_passes_the_store_and_audit_suites() {
    let path = temp_db("suite-readers");
    let db = SqliteDatabase::open(SqliteConfig::file(&path).readers(2)).unwrap();
    store_conformance(&db.store()).await;
    store_conformance_exclusive(&db.store()).await;
    audit_sink_conformance(&db.audit_sink()).await;
    let stats = db.group_commit_stats();
    assert!(stats.batches > 0 && stats.jobs >= stats.batches);
}

// ------------------------------------------------------------------------------------------
// Durability, bad data and tampering done directly in the file.

use std::path::PathBuf;

use agent_mandate::adapters::sqlite::SCHEMA_VERSION;
use agent_mandate::domain::{
    examples, AttemptId, AuditEvent, AuditKind, ChainFault, Currency, Money,
};
use agent_mandate::ports::{AuditError, AuditSink, HoldRequest, HoldState, Store, StoreError};
use chrono::DateTime;

fn temp_db(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("am-sqlite-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("state.db")
}

fn raw(path: &PathBuf, sql: &str) {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.execute_batch(sql).unwrap();
}

fn eur(a: &str) -> Money {
    Money::parse(a, Currency::EUR).unwrap()
}

fn event(n: u32) -> AuditEvent {
    AuditEvent {
        at: DateTime::UNIX_EPOCH,
        kind: AuditKind::OrderFailed {
            attempt_id: AttemptId::new(format!("att_{n}")).unwrap(),
            reason: "out of stock".into(),
        },
    }
}

/// A file with a mandate, a held hold and three audit events.
async fn seeded(name: &str) -> (PathBuf, AttemptId) {
    let path = temp_db(name);
    let db = SqliteDatabase::open(SqliteConfig::file(&path)).unwrap();
    let store = db.store();
    let m = examples::travel_backpack_mandate();
    store.insert_mandate(&m).await.unwrap();
    let id = AttemptId::new("att_hold").unwrap();
    let chain = store.chain(m.id()).await.unwrap();
    store
        .place_hold(&HoldRequest::on_chain(
            id.clone(),
            eur("100.00"),
            examples::now(),
            &chain,
        ))
        .await
        .unwrap();
    for n in 1..=3 {
        db.audit_sink().append(&event(n)).await.unwrap();
    }
    (path, id)
}

#[tokio::test]
async fn state_and_the_audit_chain_survive_a_reopen() {
    let (path, id) = seeded("reopen").await;
    let db = SqliteDatabase::open(SqliteConfig::file(&path)).unwrap();
    let hold = db
        .store()
        .hold(&id)
        .await
        .unwrap()
        .expect("the hold survived");
    assert_eq!(hold.state, HoldState::Held);
    assert_eq!(hold.amount, eur("100.00"));
    assert_eq!(hold.at, examples::now());
    let sink = db.audit_sink();
    let head = sink.verify().await.unwrap().expect("three events");
    assert_eq!(head.seq, 3);
    // Appends continue the chain after the restart.
    assert_eq!(sink.append(&event(4)).await.unwrap().seq, 4);
    assert_eq!(sink.verify().await.unwrap().unwrap().seq, 4);
    let chain = db
        .store()
        .chain(examples::travel_backpack_mandate().id())
        .await
        .unwrap();
    let usage = db.store().usage(&chain, examples::now()).await.unwrap();
    assert_eq!(usage[0].held, eur("100.00"));
}

#[tokio::test]
async fn a_schema_from_the_future_is_refused_by_name() {
    let (path, _) = seeded("future").await;
    raw(
        &path,
        &format!("PRAGMA user_version = {}", SCHEMA_VERSION + 1),
    );
    match SqliteDatabase::open(SqliteConfig::file(&path)) {
        Err(StoreError::Corrupt {
            table,
            key,
            message,
        }) => {
            assert_eq!((table, key.as_str()), ("schema", "user_version"));
            assert!(message.contains("newer"), "{message}");
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

#[tokio::test]
async fn a_file_that_is_not_a_database_is_refused() {
    let path = temp_db("garbage");
    std::fs::write(&path, vec![0x5a; 8192]).unwrap();
    assert!(matches!(
        SqliteDatabase::open(SqliteConfig::file(&path)),
        Err(StoreError::Corrupt { .. })
    ));
}

/// Each corruption, done in SQL behind the adapter's back, is reported as `Corrupt` naming the
/// table and the key: never a panic, never a default.
#[tokio::test]
async fn corrupt_rows_are_named_by_table_and_key() {
    let m = examples::travel_backpack_mandate();
    let mid = m.id().to_string();
    let cases: [(&str, String, &str, &str); 6] = [
        (
            "mandate body",
            format!("UPDATE mandates SET body = '{{\"id\": 7' WHERE id = '{mid}'"),
            "mandates",
            "mandate",
        ),
        (
            "hold state",
            "UPDATE holds SET state = 'frozen'".into(),
            "holds",
            "hold",
        ),
        (
            "negative hold amount",
            "UPDATE holds SET amount = -5".into(),
            "holds",
            "hold",
        ),
        (
            "hold currency",
            "UPDATE holds SET currency = 'XYZ'".into(),
            "holds",
            "hold",
        ),
        (
            "account currency",
            "UPDATE accounts SET currency = 'USD'".into(),
            "accounts",
            "usage",
        ),
        (
            "negative account",
            "UPDATE accounts SET held = -1".into(),
            "accounts",
            "usage",
        ),
    ];
    for (what, sql, table, read) in cases {
        let (path, id) = seeded(&what.replace(' ', "-")).await;
        raw(&path, &sql);
        let store = SqliteDatabase::open(SqliteConfig::file(&path))
            .unwrap()
            .store();
        let err = match read {
            "mandate" => store.mandate(m.id()).await.err(),
            "hold" => store.hold(&id).await.err(),
            _ => store
                .usage(std::slice::from_ref(&m), examples::now())
                .await
                .err(),
        };
        match err {
            Some(StoreError::Corrupt { table: t, key, .. }) => {
                assert_eq!(t, table, "{what}");
                let expected = if table == "holds" {
                    id.as_str()
                } else {
                    mid.as_str()
                };
                assert_eq!(key, expected, "{what}");
            }
            other => panic!("{what}: expected Corrupt, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn audit_tampering_in_the_file_is_named() {
    let cases: [(&str, &str, u64, ChainFault); 3] = [
        (
            "edited body",
            "UPDATE audit_events SET body = replace(body, 'out of stock', 'in stock') WHERE seq = 2",
            2,
            ChainFault::Edited,
        ),
        (
            "deleted event",
            "DELETE FROM audit_events WHERE seq = 2",
            3,
            ChainFault::Missing,
        ),
        (
            "swapped events",
            "UPDATE audit_events SET seq = -seq WHERE seq IN (1, 2); \
             UPDATE audit_events SET seq = 2 WHERE seq = -1; \
             UPDATE audit_events SET seq = 1 WHERE seq = -2;",
            1,
            ChainFault::Edited,
        ),
    ];
    for (what, sql, seq, fault) in cases {
        let (path, _) = seeded(&format!("tamper-{}", what.replace(' ', "-"))).await;
        raw(&path, sql);
        let sink = SqliteDatabase::open(SqliteConfig::file(&path))
            .unwrap()
            .audit_sink();
        match sink.verify().await {
            Err(AuditError::Broken(b)) => {
                assert_eq!(b.seq, seq, "{what}: {b}");
                assert_eq!(b.fault, fault, "{what}: {b}");
            }
            other => panic!("{what}: expected Broken, got {other:?}"),
        }
    }
}

/// The credentials' kill switch is in the file: a reopened database (a restarted service, or
/// a second process on the file) still reports it for the holder.
#[tokio::test]
async fn the_credentials_kill_switch_survives_a_reopen() {
    use agent_mandate::domain::{ActorId, Party};
    let path = temp_db("kill-switch");
    let agent: ActorId = "agent_killed".parse().unwrap();
    {
        let db = SqliteDatabase::open(SqliteConfig::file(&path)).unwrap();
        db.store()
            .set_suspended(&Party::Credentials(agent.clone()), true)
            .await
            .unwrap();
    }
    let db = SqliteDatabase::open(SqliteConfig::file(&path)).unwrap();
    let s = db
        .store()
        .suspensions(std::slice::from_ref(&agent), &examples::buyer())
        .await
        .unwrap();
    assert_eq!(s.credentials, vec![agent.clone()]);
    assert!(s.actors.is_empty(), "the agent itself is not suspended");
}
