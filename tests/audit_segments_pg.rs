//! Audit segments on the PostgreSQL sink: the segment suite, tampering done behind the
//! sink's back, and the migration that indexes an existing trail.
//!
//! Needs `DATABASE_URL` (without it, each test says SKIPPED and passes):
//! `scripts/with-postgres.sh cargo test --all-features --test audit_segments_pg`.
#![cfg(all(feature = "postgres", feature = "testkit"))]

use std::sync::atomic::{AtomicU64, Ordering};

use agent_mandate::adapters::postgres::{PostgresAuditSink, PostgresConfig, MIGRATIONS};
use agent_mandate::domain::{
    ActorId, AttemptId, AuditEvent, AuditHash, AuditKind, AuditSubject, ChainFault, ChainedEvent,
    WindowFault, CHECKPOINT_INTERVAL,
};
use agent_mandate::ports::{AuditError, AuditSink};
use agent_mandate::testkit::{audit_segment_conformance, audit_sink_conformance};
use chrono::DateTime;

const K: u64 = CHECKPOINT_INTERVAL;

fn database_url() -> Option<String> {
    match std::env::var("DATABASE_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            eprintln!("SKIPPED: DATABASE_URL not set");
            None
        }
    }
}

static SCHEMAS: AtomicU64 = AtomicU64::new(0);

fn config(url: &str) -> (PostgresConfig, String) {
    let schema = format!(
        "seg_{}_{}",
        std::process::id(),
        SCHEMAS.fetch_add(1, Ordering::Relaxed)
    );
    (
        PostgresConfig::new(url)
            .with_schema(&schema)
            .with_max_connections(2),
        schema,
    )
}

async fn sql(config: &PostgresConfig, text: &str) {
    let pool = config.pool().unwrap();
    pool.get().await.unwrap().batch_execute(text).await.unwrap();
}

async fn drop_schema(url: &str, schema: &str) {
    sql(
        &PostgresConfig::new(url),
        &format!("DROP SCHEMA IF EXISTS {schema} CASCADE"),
    )
    .await;
}

fn target() -> AttemptId {
    AttemptId::new("att_target").unwrap()
}

fn event(i: u64) -> AuditEvent {
    let kind = if i == K + 10 || i == K + 100 {
        AuditKind::OrderFailed {
            attempt_id: target(),
            reason: format!("target {i}"),
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

async fn seeded(config: &PostgresConfig) -> PostgresAuditSink {
    let sink = PostgresAuditSink::connect_with(config).await.unwrap();
    let events: Vec<AuditEvent> = (1..=3 * K + 50).map(event).collect();
    for chunk in events.chunks(200) {
        sink.append_all(chunk).await.unwrap();
    }
    sink
}

async fn fault(sink: &PostgresAuditSink) -> Option<WindowFault> {
    sink.segment(&AuditSubject::Attempt(target()))
        .await
        .unwrap()
        .fault
}

#[tokio::test]
async fn postgres_sink_passes_the_segment_suite() {
    let Some(url) = database_url() else { return };
    let (config, schema) = config(&url);
    let sink = PostgresAuditSink::connect_with(&config).await.unwrap();
    audit_segment_conformance(&sink).await;
    audit_sink_conformance(&sink).await;
    audit_segment_conformance(&sink).await;
    drop_schema(&url, &schema).await;
}

#[tokio::test]
async fn postgres_segment_reads_the_window_and_names_tampering() {
    let Some(url) = database_url() else { return };
    let (config, schema) = config(&url);
    let sink = seeded(&config).await;
    let seg = sink
        .segment(&AuditSubject::Attempt(target()))
        .await
        .unwrap();
    assert_eq!(seg.fault, None);
    assert_eq!(
        seg.events.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![K + 10, K + 100]
    );
    assert_eq!(seg.verified, vec![(K + 1, 2 * K)]);

    // An event of the window edited.
    sql(
        &config,
        &format!(
            "UPDATE audit_events SET body = replace(body, 'agent_x', 'agent_y') WHERE seq = {}",
            K + 50
        ),
    )
    .await;
    match fault(&sink).await {
        Some(WindowFault::Chain(b)) => assert_eq!((b.seq, b.fault), (K + 50, ChainFault::Edited)),
        other => panic!("expected an edit, got {other:?}"),
    }
    assert!(matches!(sink.verify().await, Err(AuditError::Broken(_))));
    drop_schema(&url, &schema).await;

    // A checkpoint edited; then one dropped.
    let (config, schema) = config_again(&url);
    let sink = seeded(&config).await;
    sql(
        &config,
        &format!(
            "UPDATE audit_checkpoints SET hash = (SELECT hash FROM audit_events WHERE seq = {}) \
             WHERE seq = {}",
            K + 5,
            2 * K
        ),
    )
    .await;
    assert_eq!(
        fault(&sink).await,
        Some(WindowFault::Checkpoint { seq: 2 * K })
    );
    assert!(matches!(
        sink.verify().await,
        Err(AuditError::Checkpoint { seq }) if seq == 2 * K
    ));
    drop_schema(&url, &schema).await;

    let (config, schema) = config_again(&url);
    let sink = seeded(&config).await;
    sql(
        &config,
        &format!("DELETE FROM audit_checkpoints WHERE seq = {K}"),
    )
    .await;
    assert_eq!(
        fault(&sink).await,
        Some(WindowFault::Checkpoint { seq: 2 * K })
    );
    assert!(matches!(
        sink.verify().await,
        Err(AuditError::Checkpoint { .. })
    ));
    drop_schema(&url, &schema).await;
}

fn config_again(url: &str) -> (PostgresConfig, String) {
    config(url)
}

#[tokio::test]
async fn postgres_migration_indexes_an_existing_trail() {
    let Some(url) = database_url() else { return };
    let (config, schema) = config(&url);
    sql(
        &PostgresConfig::new(&url),
        &format!("CREATE SCHEMA {schema}"),
    )
    .await;
    let before: Vec<_> = MIGRATIONS
        .iter()
        .take_while(|m| m.name != "audit_subjects_and_checkpoints")
        .collect();
    for m in &before {
        sql(&config, &format!("BEGIN; {} COMMIT;", m.sql)).await;
    }
    let mut text = String::from("BEGIN;");
    let mut prev = AuditHash::GENESIS;
    let n = 2 * K + 3;
    for seq in 1..=n {
        let e = ChainedEvent::link(seq, prev, event(seq).to_body());
        text.push_str(&format!(
            "INSERT INTO audit_events (seq, prev_hash, hash, body) VALUES ({seq}, '{}', '{}', '{}');",
            prev.to_hex(),
            e.hash.to_hex(),
            e.body.replace('\'', "''")
        ));
        prev = e.hash;
    }
    // One body that is not JSON: skipped by the index, named by verify.
    text.push_str(&format!(
        "UPDATE audit_head SET seq = {n}, hash = '{}'; COMMIT;",
        prev.to_hex()
    ));
    sql(&config, &text).await;
    let sink = PostgresAuditSink::connect_with(&config).await.unwrap();
    let seg = sink
        .segment(&AuditSubject::Attempt(target()))
        .await
        .unwrap();
    assert_eq!(seg.fault, None);
    assert_eq!(
        seg.events.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![K + 10, K + 100]
    );
    assert_eq!(seg.verified, vec![(1, n)]);
    sink.append(&event(1)).await.unwrap();
    let seg = sink
        .segment(&AuditSubject::Attempt(target()))
        .await
        .unwrap();
    assert_eq!(seg.verified, vec![(K + 1, 2 * K)]);
    assert!(sink.verify().await.is_ok());
    drop_schema(&url, &schema).await;
}
