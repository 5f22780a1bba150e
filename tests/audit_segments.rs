//! Audit segments on the durable sinks: the index by subject and the chain checkpoints
//! (`AuditSink::segment`), tampering done directly in the database, and the migration that
//! adds them to an existing trail.
#![cfg(all(feature = "sqlite", feature = "testkit"))]

use std::path::PathBuf;

use agent_mandate::adapters::sqlite::{SqliteConfig, SqliteDatabase, MIGRATIONS};
use agent_mandate::domain::{
    ActorId, AttemptId, AuditEvent, AuditKind, AuditSubject, ChainFault, MandateId, WindowFault,
    CHECKPOINT_INTERVAL,
};
use agent_mandate::ports::{AuditError, AuditSink};
use agent_mandate::testkit::{audit_segment_conformance, audit_sink_conformance};
use chrono::DateTime;

const K: u64 = CHECKPOINT_INTERVAL;

fn temp_db(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("am-segments-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("state.db")
}

fn raw(path: &PathBuf, sql: &str) {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.execute_batch(sql).unwrap();
}

fn target() -> AttemptId {
    AttemptId::new("att_target").unwrap()
}

/// Event `i` of the test trail: the target attempt's at `K + 10` and `K + 100`, a decision
/// naming a mandate at 7, events about nobody elsewhere.
fn event(i: u64) -> AuditEvent {
    let kind = if i == K + 10 || i == K + 100 {
        AuditKind::OrderFailed {
            attempt_id: target(),
            reason: format!("target {i}"),
        }
    } else if i == 7 {
        AuditKind::Threshold {
            mandate_id: MandateId::new("mandate_7").unwrap(),
            limit: agent_mandate::domain::LimitKind::Lifetime,
            used: "1".into(),
            max: "2".into(),
            percent: 50,
        }
    } else {
        AuditKind::AutoSuspended {
            actor_id: ActorId::new("agent_x").unwrap(),
            consecutive_blocks: u32::try_from(i).unwrap(),
        }
    };
    AuditEvent {
        at: DateTime::UNIX_EPOCH,
        kind,
    }
}

/// A file with `3K + 50` events.
async fn seeded(name: &str) -> PathBuf {
    let path = temp_db(name);
    let sink = SqliteDatabase::open(SqliteConfig::file(&path))
        .unwrap()
        .audit_sink();
    let events: Vec<AuditEvent> = (1..=3 * K + 50).map(event).collect();
    for chunk in events.chunks(97) {
        sink.append_all(chunk).await.unwrap();
    }
    path
}

fn sink(path: &PathBuf) -> agent_mandate::adapters::sqlite::SqliteAuditSink {
    SqliteDatabase::open(SqliteConfig::file(path))
        .unwrap()
        .audit_sink()
}

async fn fault(path: &PathBuf) -> Option<WindowFault> {
    sink(path)
        .segment(&AuditSubject::Attempt(target()))
        .await
        .unwrap()
        .fault
}

#[tokio::test]
async fn sqlite_sinks_pass_the_segment_suite() {
    let db = SqliteDatabase::open(SqliteConfig::in_memory()).unwrap();
    audit_segment_conformance(&db.audit_sink()).await;
    audit_sink_conformance(&db.audit_sink()).await;
    audit_segment_conformance(&db.audit_sink()).await;
    let path = temp_db("suite");
    let db = SqliteDatabase::open(SqliteConfig::file(&path).readers(2)).unwrap();
    audit_segment_conformance(&db.audit_sink()).await;
}

#[tokio::test]
async fn the_segment_is_the_attempts_window_only() {
    let path = seeded("window").await;
    let seg = sink(&path)
        .segment(&AuditSubject::Attempt(target()))
        .await
        .unwrap();
    assert_eq!(seg.fault, None);
    assert_eq!(
        seg.events.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![K + 10, K + 100]
    );
    assert_eq!(seg.verified, vec![(K + 1, 2 * K)]);
    let seg = sink(&path)
        .segment(&AuditSubject::Mandate(MandateId::new("mandate_7").unwrap()))
        .await
        .unwrap();
    assert_eq!(
        seg.events.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![7]
    );
    assert_eq!(seg.verified, vec![(1, K)]);
}

#[tokio::test]
async fn tampering_in_the_file_is_named_by_the_segment_and_by_verify() {
    let edit_target = format!(
        "UPDATE audit_events SET body = replace(body, 'target', 'tarjet') WHERE seq = {}",
        K + 10
    );
    let edit_neighbour = format!(
        "UPDATE audit_events SET body = replace(body, 'agent_x', 'agent_y') WHERE seq = {}",
        K + 50
    );
    let delete = format!("DELETE FROM audit_events WHERE seq = {}", K + 10);
    let checkpoint_hash = format!(
        "UPDATE audit_checkpoints SET hash = (SELECT hash FROM audit_events WHERE seq = {}) \
         WHERE seq = {}",
        K + 5,
        2 * K
    );
    let checkpoint_gone = format!("DELETE FROM audit_checkpoints WHERE seq = {K}");
    let cases: [(&str, &str, WindowFault); 5] = [
        (
            "the attempt's event edited",
            &edit_target,
            chain(K + 10, ChainFault::Edited),
        ),
        (
            "another event of its window edited",
            &edit_neighbour,
            chain(K + 50, ChainFault::Edited),
        ),
        (
            "the attempt's event deleted",
            &delete,
            chain(K + 11, ChainFault::Missing),
        ),
        (
            "a checkpoint edited",
            &checkpoint_hash,
            WindowFault::Checkpoint { seq: 2 * K },
        ),
        (
            "a checkpoint deleted",
            &checkpoint_gone,
            WindowFault::Checkpoint { seq: 2 * K },
        ),
    ];
    for (what, sql, want) in cases {
        let path = seeded(&what.replace(' ', "-").replace('\'', "")).await;
        assert_eq!(fault(&path).await, None, "{what}: before");
        raw(&path, sql);
        let got = fault(&path).await;
        match (got, want) {
            (Some(WindowFault::Chain(g)), WindowFault::Chain(w)) => {
                assert_eq!((g.seq, g.fault), (w.seq, w.fault), "{what}")
            }
            (g, w) => assert_eq!(g, Some(w), "{what}"),
        }
        assert!(
            matches!(
                sink(&path).verify().await,
                Err(AuditError::Broken(_) | AuditError::Checkpoint { .. })
            ),
            "{what}: the full verify names it too"
        );
    }
}

fn chain(seq: u64, fault: ChainFault) -> WindowFault {
    WindowFault::Chain(agent_mandate::domain::ChainBreak {
        seq,
        expected_seq: seq,
        fault,
    })
}

#[tokio::test]
async fn a_rewrite_relinked_to_the_head_is_caught_by_the_checkpoints() {
    let path = seeded("rewrite").await;
    // Edit event K + 10 and re-link every event after it, as someone who knows the hash
    // scheme (but cannot touch the checkpoints' seals consistently) would.
    let s = sink(&path);
    let mut events = Vec::new();
    let mut from = 1;
    loop {
        let page = s.read(from, 1000).await.unwrap();
        if page.is_empty() {
            break;
        }
        from += page.len() as u64;
        events.extend(page);
    }
    drop(s);
    let conn = rusqlite::Connection::open(&path).unwrap();
    let i = usize::try_from(K + 9).unwrap();
    let mut prev = events[i].prev_hash;
    for (j, e) in events[i..].iter().enumerate() {
        let body = if j == 0 {
            e.body.replace("target", "tarjet")
        } else {
            e.body.clone()
        };
        let link = agent_mandate::domain::ChainedEvent::link(e.seq, prev, body);
        conn.execute(
            "UPDATE audit_events SET prev_hash = ?1, hash = ?2, body = ?3 WHERE seq = ?4",
            rusqlite::params![
                prev.to_hex(),
                link.hash.to_hex(),
                link.body,
                i64::try_from(e.seq).unwrap()
            ],
        )
        .unwrap();
        prev = link.hash;
    }
    drop(conn);
    assert!(agent_mandate::ports::verify_events(&sink(&path))
        .await
        .is_ok());
    assert_eq!(
        fault(&path).await,
        Some(WindowFault::Checkpoint { seq: 2 * K })
    );
    assert!(matches!(
        sink(&path).verify().await,
        Err(AuditError::Checkpoint { seq }) if seq == 2 * K
    ));
}

#[tokio::test]
async fn the_migration_indexes_an_existing_trail_and_the_next_append_seals_it() {
    let path = temp_db("migrate");
    // A trail written before the index and the checkpoints existed.
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        for m in MIGRATIONS.iter().filter(|m| m.version < 6) {
            conn.execute_batch(m.sql).unwrap();
        }
        let mut prev = agent_mandate::domain::AuditHash::GENESIS;
        for seq in 1..=2 * K + 3 {
            let e = agent_mandate::domain::ChainedEvent::link(seq, prev, event(seq).to_body());
            conn.execute(
                "INSERT INTO audit_events (seq, prev_hash, hash, body) VALUES (?1, ?2, ?3, ?4)",
                rusqlite::params![
                    i64::try_from(seq).unwrap(),
                    prev.to_hex(),
                    e.hash.to_hex(),
                    e.body
                ],
            )
            .unwrap();
            prev = e.hash;
        }
    }
    let s = sink(&path);
    // Indexed by the migration; no checkpoint yet: the window runs to the head.
    let seg = s.segment(&AuditSubject::Attempt(target())).await.unwrap();
    assert_eq!(seg.fault, None);
    assert_eq!(
        seg.events.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![K + 10, K + 100]
    );
    assert_eq!(seg.verified, vec![(1, 2 * K + 3)]);
    s.append(&event(1)).await.unwrap();
    let seg = s.segment(&AuditSubject::Attempt(target())).await.unwrap();
    assert_eq!(seg.verified, vec![(K + 1, 2 * K)]);
    assert!(s.verify().await.is_ok());
}
