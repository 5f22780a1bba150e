//! The PostgreSQL store and audit sink: the conformance suites, bad data written behind the
//! adapters' backs, schema versions, restarts, and holds from many connections (I2, I9, I12).
//!
//! Every test needs `DATABASE_URL`; without it, it says SKIPPED and passes. Run them with a
//! throwaway cluster:
//!
//! ```text
//! scripts/with-postgres.sh cargo test --features postgres,testkit --test postgres_store
//! ```
//!
//! Each test works in a fresh schema of its own (dropped at the end), so tests run in parallel
//! on one database and may corrupt rows freely.
#![cfg(all(feature = "postgres", feature = "testkit"))]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use agent_mandate::adapters::postgres::{PostgresAuditSink, PostgresConfig, PostgresStore};
use agent_mandate::domain::{
    examples, AttemptId, AuditEvent, AuditKind, ChainFault, ChainedEvent, Currency, HoldAction,
    IdempotencyKey, Mandate, MandateId, Money, WindowLimit,
};
use agent_mandate::ports::{
    AuditError, AuditSink, HoldError, HoldRequest, HoldState, IdempotencyScope, Store, StoreError,
};
use agent_mandate::testkit::{
    audit_sink_conformance, store_conformance, store_conformance_exclusive,
};
use chrono::{DateTime, Duration, Utc};

// ------------------------------------------------------------------------------------------
// Fixtures.

fn database_url() -> Option<String> {
    match std::env::var("DATABASE_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            eprintln!(
                "SKIPPED: DATABASE_URL not set (run scripts/with-postgres.sh cargo test --all-features)"
            );
            None
        }
    }
}

/// A schema of its own for one test; dropped by [`Fresh::drop_schema`].
struct Fresh {
    config: PostgresConfig,
    schema: String,
}

static SCHEMAS: AtomicU64 = AtomicU64::new(0);

fn fresh(url: &str) -> Fresh {
    let nonce = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() % 1_000_000_000_000);
    let schema = format!(
        "t_{}_{}_{}",
        std::process::id(),
        nonce,
        SCHEMAS.fetch_add(1, Ordering::Relaxed)
    );
    Fresh {
        config: PostgresConfig::new(url)
            .with_schema(&schema)
            .with_max_connections(4),
        schema,
    }
}

impl Fresh {
    async fn store(&self) -> PostgresStore {
        PostgresStore::connect_with(&self.config).await.unwrap()
    }

    async fn sink(&self) -> PostgresAuditSink {
        PostgresAuditSink::connect_with(&self.config).await.unwrap()
    }

    /// Runs `sql` in the test's schema, behind the adapters' backs.
    async fn sql(&self, store: &PostgresStore, sql: &str) {
        let client = store.pool().get().await.unwrap();
        client.batch_execute(sql).await.unwrap();
    }

    async fn drop_schema(self, store: &PostgresStore) {
        let client = store.pool().get().await.unwrap();
        client
            .batch_execute(&format!("DROP SCHEMA {} CASCADE", self.schema))
            .await
            .unwrap();
    }
}

fn cents(minor: i64) -> Money {
    Money::from_minor(minor, Currency::EUR).unwrap()
}

fn attempt(n: impl std::fmt::Display) -> AttemptId {
    AttemptId::new(format!("attempt_{n}")).unwrap()
}

#[derive(Debug, Clone, Default)]
struct Caps {
    lifetime: Option<i64>,
    windows: Vec<(u64, Option<i64>, Option<u32>)>,
    uses: Option<u32>,
}

fn mandate(id: &str, parent: Option<&Mandate>, caps: &Caps) -> Mandate {
    let mut spec = examples::travel_backpack_mandate().spec().clone();
    spec.id = MandateId::new(id).unwrap();
    spec.parent_id = parent.map(|p| p.id().clone());
    spec.scope.budgets.lifetime = caps.lifetime.map(cents);
    spec.scope.budgets.windows = caps
        .windows
        .iter()
        .map(|&(window_seconds, amount, count)| WindowLimit {
            window_seconds,
            max_amount: amount.map(cents),
            max_count: count,
        })
        .collect();
    spec.scope.max_uses = caps.uses;
    spec.scope.amount.max_payment_attempts = None;
    Mandate::new(spec).unwrap()
}

/// Root, mid, leaf (root first), stored.
async fn three_levels(store: &PostgresStore, caps: &[Caps; 3]) -> Vec<Mandate> {
    let root = mandate("m_root", None, &caps[0]);
    let mid = mandate("m_mid", Some(&root), &caps[1]);
    let leaf = mandate("m_leaf", Some(&mid), &caps[2]);
    for m in [&root, &mid, &leaf] {
        store.insert_mandate(m).await.unwrap();
    }
    vec![root, mid, leaf]
}

fn event(n: u32) -> AuditEvent {
    AuditEvent {
        at: examples::now() + Duration::seconds(i64::from(n)),
        kind: AuditKind::Hold {
            attempt_id: attempt(n),
            action: HoldAction::Placed,
            amount: cents(i64::from(n) * 100),
            mandate_ids: vec![MandateId::new("m_leaf").unwrap()],
            policy: None,
        },
    }
}

// ------------------------------------------------------------------------------------------
// The conformance suites.

/// I2, I3, I4, I5: the store suite, twice on the same database (the second run sees the
/// first's data).
#[tokio::test]
async fn store_suite_passes_and_runs_again() {
    let Some(url) = database_url() else { return };
    let db = fresh(&url);
    let store = db.store().await;
    store_conformance(&store).await;
    store_conformance(&store).await;
    store_conformance_exclusive(&store).await;
    db.drop_schema(&store).await;
}

/// Two stores (two pools: as two processes) run the suite at the same time on one schema.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_suite_runs_concurrently_from_two_pools() {
    let Some(url) = database_url() else { return };
    let db = fresh(&url);
    let a = db.store().await;
    let b = db.store().await;
    tokio::join!(store_conformance(&a), store_conformance(&b));
    db.drop_schema(&a).await;
}

/// I9: the audit suite on an empty trail, then continued on the same trail.
#[tokio::test]
async fn audit_suite_passes_fresh_and_continued() {
    let Some(url) = database_url() else { return };
    let db = fresh(&url);
    let sink = db.sink().await;
    audit_sink_conformance(&sink).await;
    audit_sink_conformance(&sink).await;
    let store = db.store().await;
    db.drop_schema(&store).await;
}

/// I9: appends from 8 connections at once are numbered 1..=n without a gap and chained.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_appends_from_many_connections_are_serialised() {
    let Some(url) = database_url() else { return };
    let db = fresh(&url);
    let mut tasks = Vec::new();
    for t in 0..8u32 {
        let sink = PostgresAuditSink::connect_with(&db.config.clone().with_max_connections(1))
            .await
            .unwrap();
        tasks.push(tokio::spawn(async move {
            let mut seqs = Vec::new();
            for i in 0..25 {
                let r = if i % 5 == 0 {
                    sink.append_all(&[event(t * 100 + i), event(t * 100 + i + 50)])
                        .await
                        .unwrap()
                        .unwrap()
                } else {
                    sink.append(&event(t * 100 + i)).await.unwrap()
                };
                seqs.push(r.seq);
            }
            seqs
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let sink = db.sink().await;
    let head = sink.verify().await.unwrap().unwrap();
    assert_eq!(head.seq, 8 * (25 + 5), "every event, no gap, no duplicate");
    let all = sink.read(1, 10_000).await.unwrap();
    assert!(all.iter().enumerate().all(|(i, e)| e.seq == i as u64 + 1));
    let store = db.store().await;
    db.drop_schema(&store).await;
}

// ------------------------------------------------------------------------------------------
// Restarts.

/// I9: the chain survives a new connection pool; appends continue after its head.
#[tokio::test]
async fn audit_chain_survives_reconnect() {
    let Some(url) = database_url() else { return };
    let db = fresh(&url);
    let first = db.sink().await;
    let mut last = None;
    for n in 1..=3 {
        last = Some(first.append(&event(n)).await.unwrap());
    }
    drop(first);
    let second = db.sink().await;
    assert_eq!(second.head().await.unwrap(), last);
    assert_eq!(second.verify().await.unwrap(), last);
    let next = second.append(&event(4)).await.unwrap();
    assert_eq!(next.seq, 4);
    audit_sink_conformance(&second).await;
    let store = db.store().await;
    db.drop_schema(&store).await;
}

/// Mandates, attempts, holds and usage survive a new pool, exactly.
#[tokio::test]
async fn data_survives_a_new_pool() {
    let Some(url) = database_url() else { return };
    let db = fresh(&url);
    let caps = Caps {
        lifetime: Some(10_000),
        windows: vec![(3600, Some(5_000), Some(3))],
        uses: Some(5),
    };
    let (chain, usage, record) = {
        let store = db.store().await;
        let chain = three_levels(&store, &[caps.clone(), caps.clone(), caps.clone()]).await;
        // A time with nanoseconds: it must come back exactly.
        let at = examples::now() + Duration::nanoseconds(123_456_789);
        store
            .place_hold(&HoldRequest::on_chain(attempt(1), cents(1_234), at, &chain))
            .await
            .unwrap();
        store
            .place_hold(&HoldRequest::on_chain(attempt(2), cents(766), at, &chain))
            .await
            .unwrap();
        store.commit_hold(&attempt(2), cents(500)).await.unwrap();
        let usage = store.usage(&chain, at).await.unwrap();
        let record = store.hold(&attempt(1)).await.unwrap().unwrap();
        assert_eq!(record.at, at);
        (chain, usage, record)
    };
    let store = db.store().await;
    assert_eq!(store.chain(chain[2].id()).await.unwrap(), chain);
    assert_eq!(store.usage(&chain, record.at).await.unwrap(), usage);
    assert_eq!(store.hold(&attempt(1)).await.unwrap(), Some(record));
    assert_eq!(usage[2].held, cents(1_234));
    assert_eq!(usage[2].spent, cents(500));
    db.drop_schema(&store).await;
}

// ------------------------------------------------------------------------------------------
// Schema versions.

/// A database written by newer code is refused with a typed error, never used or migrated.
#[tokio::test]
async fn a_schema_from_the_future_is_refused() {
    let Some(url) = database_url() else { return };
    let db = fresh(&url);
    let store = db.store().await;
    // Connecting again to a current schema is a no-op.
    db.store().await;
    for (value, what) in [("999", "newer"), ("seven", "garbage")] {
        db.sql(
            &store,
            &format!("UPDATE am_meta SET value = '{value}' WHERE key = 'schema_version'"),
        )
        .await;
        match PostgresStore::connect_with(&db.config).await {
            Err(StoreError::Corrupt { table, key, .. }) => {
                assert_eq!(
                    (table, key.as_str()),
                    ("am_meta", "schema_version"),
                    "{what}"
                )
            }
            other => panic!("{what}: expected Corrupt, got {other:?}"),
        }
        match PostgresAuditSink::connect_with(&db.config).await {
            Err(AuditError::Other(e)) => assert!(
                matches!(
                    e.downcast_ref::<StoreError>(),
                    Some(StoreError::Corrupt {
                        table: "am_meta",
                        ..
                    })
                ),
                "{what}: {e}"
            ),
            other => panic!("{what}: expected the store's Corrupt, got {other:?}"),
        }
    }
    db.drop_schema(&store).await;
}

// ------------------------------------------------------------------------------------------
// Bad data (I12): corrupted rows are Corrupt errors naming the table and key.

fn assert_corrupt<T: std::fmt::Debug>(what: &str, r: Result<T, StoreError>, t: &str, k: &str) {
    match r {
        Err(StoreError::Corrupt { table, key, .. }) => {
            assert_eq!((table, key.as_str()), (t, k), "{what}")
        }
        other => panic!("{what}: expected Corrupt {{ {t}, {k} }}, got {other:?}"),
    }
}

fn assert_hold_corrupt<T: std::fmt::Debug>(what: &str, r: Result<T, HoldError>, t: &str, k: &str) {
    match r {
        Err(HoldError::Store(e)) => assert_corrupt(what, Err::<(), _>(e), t, k),
        other => panic!("{what}: expected Corrupt {{ {t}, {k} }}, got {other:?}"),
    }
}

#[tokio::test]
async fn corrupt_mandates_attempts_and_records_are_named() {
    let Some(url) = database_url() else { return };
    let db = fresh(&url);
    let store = db.store().await;
    let chain = three_levels(&store, &[Caps::default(), Caps::default(), Caps::default()]).await;
    let (root, leaf) = (chain[0].id().clone(), chain[2].id().clone());

    db.sql(
        &store,
        "UPDATE mandates SET body = '{\"id\":' WHERE id = 'm_mid'",
    )
    .await;
    assert_corrupt(
        "invalid JSON body",
        store.mandate(&MandateId::new("m_mid").unwrap()).await,
        "mandates",
        "m_mid",
    );
    assert_corrupt(
        "a chain through it",
        store.chain(&leaf).await,
        "mandates",
        "m_mid",
    );
    db.sql(
        &store,
        "UPDATE mandates SET status = 'paused' WHERE id = 'm_root'",
    )
    .await;
    assert_corrupt(
        "unknown status",
        store.mandate(&root).await,
        "mandates",
        "m_root",
    );

    // Attempts.
    let a = agent_mandate::domain::PaymentAttempt::new(
        attempt(1),
        examples::authorize_request(&examples::travel_backpack_snapshot()),
        "cred_x".parse().unwrap(),
        "checkout_x".parse().unwrap(),
        false,
        examples::now(),
    );
    store.insert_attempt(&a).await.unwrap();
    db.sql(
        &store,
        "UPDATE attempts SET status = 'teleported' WHERE id = 'attempt_1'",
    )
    .await;
    assert_corrupt(
        "unknown attempt status",
        store.attempt(&attempt(1)).await,
        "attempts",
        "attempt_1",
    );
    db.sql(
        &store,
        "UPDATE attempts SET status = 'not_started', body = 'null' WHERE id = 'attempt_1'",
    )
    .await;
    assert_corrupt(
        "attempt body",
        store.attempt(&attempt(1)).await,
        "attempts",
        "attempt_1",
    );
    assert_corrupt(
        "attempts_in",
        store
            .attempts_in(&[agent_mandate::domain::AttemptStatus::NotStarted], 10)
            .await,
        "attempts",
        "attempt_1",
    );

    // Snapshots: an edited body no longer hashes to its id.
    let snapshot = examples::travel_backpack_snapshot();
    store.put_snapshot(&snapshot).await.unwrap();
    let id = snapshot.id().to_string();
    db.sql(
        &store,
        &format!("UPDATE snapshots SET body = replace(body, '129', '12') WHERE id = '{id}'"),
    )
    .await;
    assert_corrupt(
        "edited snapshot",
        store.snapshot(&snapshot.id()).await,
        "snapshots",
        &id,
    );

    // Idempotency records.
    let scope = IdempotencyScope {
        actor_id: "agent_1".parse().unwrap(),
        operation: "execute_payment".into(),
        key: IdempotencyKey::new("key_1").unwrap(),
    };
    let fp = agent_mandate::domain::ContentDigest::from_bytes([7; 32]);
    let lease = std::time::Duration::from_secs(30);
    store
        .begin_idempotent(&scope, &fp, examples::now(), lease)
        .await
        .unwrap();
    db.sql(&store, "UPDATE idempotency SET fingerprint = 'md5:abc'")
        .await;
    let key = "agent_1/execute_payment/key_1";
    assert_corrupt(
        "fingerprint",
        store
            .begin_idempotent(&scope, &fp, examples::now(), lease)
            .await,
        "idempotency",
        key,
    );
    db.sql(
        &store,
        &format!("UPDATE idempotency SET fingerprint = '{fp}', state = 'pondering'"),
    )
    .await;
    assert_corrupt(
        "state",
        store
            .begin_idempotent(&scope, &fp, examples::now(), lease)
            .await,
        "idempotency",
        key,
    );

    // Orders and block counters.
    let order = agent_mandate::domain::Order {
        id: "order_1".parse().unwrap(),
        attempt_id: attempt(1),
        snapshot_id: snapshot.id(),
        buyer_id: examples::buyer(),
        merchant_id: snapshot.merchant().merchant_id.clone(),
        amount: snapshot.total(),
        committed_at: examples::now(),
    };
    store.insert_order(&order).await.unwrap();
    db.sql(&store, "UPDATE orders SET body = '[]'").await;
    assert_corrupt(
        "order body",
        store.order_for(&attempt(1)).await,
        "orders",
        "attempt_1",
    );
    db.sql(&store, "INSERT INTO blocks VALUES ('agent_9', -7)")
        .await;
    assert_corrupt(
        "negative block count",
        store.record_block(&"agent_9".parse().unwrap()).await,
        "blocks",
        "agent_9",
    );
    db.drop_schema(&store).await;
}

#[tokio::test]
async fn corrupt_ledger_rows_are_named() {
    let Some(url) = database_url() else { return };
    let db = fresh(&url);
    let store = db.store().await;
    let caps = Caps {
        lifetime: Some(100_000),
        windows: vec![(3600, Some(100_000), None)],
        uses: None,
    };
    let chain = three_levels(&store, &[caps.clone(), caps.clone(), caps.clone()]).await;
    let at = examples::now();
    let place = |n: u32| {
        let request = HoldRequest::on_chain(attempt(n), cents(100), at, &chain);
        let store = &store;
        async move { store.place_hold(&request).await }
    };
    place(1).await.unwrap();
    place(2).await.unwrap();

    let cases: [(&str, &str); 5] = [
        ("amount = -5", "negative amount"),
        ("currency = 'EURO'", "unknown currency"),
        ("state = 'limbo'", "unknown state"),
        ("committed = 500", "committed more than placed"),
        ("mandate_ids = '{'", "invalid mandate list"),
    ];
    for (set, what) in cases {
        db.sql(
            &store,
            &format!("UPDATE holds SET {set} WHERE attempt_id = 'attempt_1'"),
        )
        .await;
        assert_corrupt(what, store.hold(&attempt(1)).await, "holds", "attempt_1");
        assert_corrupt(
            what,
            store.release_hold(&attempt(1)).await,
            "holds",
            "attempt_1",
        );
        if set != "mandate_ids = '{'" {
            // The window scan of the next hold meets the bad row and names it.
            assert_hold_corrupt(what, place(3).await, "holds", "attempt_1");
            assert_corrupt(what, store.usage(&chain, at).await, "holds", "attempt_1");
        }
        db.sql(
            &store,
            "UPDATE holds SET amount = 100, currency = 'EUR', state = 'held', committed = 0, \
             mandate_ids = '[\"m_leaf\",\"m_mid\",\"m_root\"]' WHERE attempt_id = 'attempt_1'",
        )
        .await;
        assert_eq!(
            store.hold(&attempt(1)).await.unwrap().map(|h| h.state),
            Some(HoldState::Held),
            "{what}: repaired"
        );
    }

    // Accounts.
    db.sql(
        &store,
        "UPDATE accounts SET held = -1 WHERE mandate_id = 'm_mid'",
    )
    .await;
    assert_corrupt(
        "negative held",
        store.usage(&chain, at).await,
        "accounts",
        "m_mid",
    );
    assert_hold_corrupt("negative held", place(4).await, "accounts", "m_mid");
    db.sql(
        &store,
        "UPDATE accounts SET held = 200, currency = 'ZZZ' WHERE mandate_id = 'm_mid'",
    )
    .await;
    assert_corrupt(
        "unknown account currency",
        store.usage(&chain, at).await,
        "accounts",
        "m_mid",
    );
    db.sql(
        &store,
        "UPDATE accounts SET currency = 'EUR' WHERE mandate_id = 'm_mid'",
    )
    .await;

    // A level row without its hold.
    db.sql(
        &store,
        "INSERT INTO hold_levels SELECT 'm_root', at_ns, 'attempt_ghost' FROM holds \
         WHERE attempt_id = 'attempt_1'",
    )
    .await;
    assert_hold_corrupt(
        "orphan level",
        place(5).await,
        "hold_levels",
        "m_root/attempt_ghost",
    );
    // Nothing was held by the refused attempts.
    for n in [3, 4, 5] {
        assert!(store.hold(&attempt(n)).await.unwrap().is_none());
    }
    db.drop_schema(&store).await;
}

// ------------------------------------------------------------------------------------------
// Audit tampering done in the database (I9).

async fn trail_of_six(db: &Fresh) -> (PostgresAuditSink, PostgresStore) {
    let sink = db.sink().await;
    for n in 1..=6 {
        sink.append(&event(n)).await.unwrap();
    }
    sink.verify().await.unwrap();
    (sink, db.store().await)
}

fn assert_broken(
    what: &str,
    r: Result<Option<agent_mandate::ports::AuditReceipt>, AuditError>,
    seq: u64,
    fault: ChainFault,
) {
    match r {
        Err(AuditError::Broken(b)) => assert_eq!((b.seq, b.fault), (seq, fault), "{what}: {b}"),
        other => panic!("{what}: expected a break at {seq}, got {other:?}"),
    }
}

#[tokio::test]
async fn audit_tampering_in_the_database_is_named() {
    let Some(url) = database_url() else { return };
    let cases: Vec<(&str, String, u64, ChainFault)> = vec![
        (
            "an edited body",
            "UPDATE audit_events SET body = replace(body, 'attempt_3', 'attempt_9') WHERE seq = 3"
                .into(),
            3,
            ChainFault::Edited,
        ),
        (
            "a dropped event",
            "DELETE FROM audit_events WHERE seq = 4".into(),
            5,
            ChainFault::Missing,
        ),
        (
            "two swapped events",
            "UPDATE audit_events SET seq = -2 WHERE seq = 2; \
             UPDATE audit_events SET seq = 2 WHERE seq = 3; \
             UPDATE audit_events SET seq = 3 WHERE seq = -2"
                .into(),
            2,
            ChainFault::Edited,
        ),
        (
            "a dropped tail",
            "DELETE FROM audit_events WHERE seq >= 5".into(),
            6,
            ChainFault::Missing,
        ),
    ];
    for (what, sql, seq, fault) in cases {
        let db = fresh(&url);
        let (sink, store) = trail_of_six(&db).await;
        db.sql(&store, &sql).await;
        assert_broken(what, sink.verify().await, seq, fault);
        db.drop_schema(&store).await;
    }

    // The last event rewritten and its hash recomputed: the chain links, the head does not.
    let db = fresh(&url);
    let (sink, store) = trail_of_six(&db).await;
    let six = sink.read(6, 1).await.unwrap().remove(0);
    let forged = ChainedEvent::link(6, six.prev_hash, event(60).to_body());
    db.sql(
        &store,
        &format!(
            "UPDATE audit_events SET body = '{}', hash = '{}' WHERE seq = 6",
            forged.body,
            forged.hash.to_hex()
        ),
    )
    .await;
    assert_broken(
        "a relinked last event",
        sink.verify().await,
        6,
        ChainFault::Edited,
    );
    db.drop_schema(&store).await;

    // An event added after the head, correctly linked: the chain links, but the sink never
    // appended it.
    let db = fresh(&url);
    let (sink, store) = trail_of_six(&db).await;
    let six = sink.read(6, 1).await.unwrap().remove(0);
    let extra = ChainedEvent::link(7, six.hash, event(7).to_body());
    db.sql(
        &store,
        &format!(
            "INSERT INTO audit_events VALUES (7, '{}', '{}', '{}')",
            extra.prev_hash.to_hex(),
            extra.hash.to_hex(),
            extra.body
        ),
    )
    .await;
    assert_broken(
        "an event added behind the sink's back",
        sink.verify().await,
        7,
        ChainFault::Edited,
    );
    // A hash that is not hex is unreadable, naming the event.
    db.sql(&store, "UPDATE audit_events SET hash = 'zz' WHERE seq = 2")
        .await;
    match sink.read(1, 10).await {
        Err(AuditError::Corrupt { seq, .. }) => assert_eq!(seq, 2),
        other => panic!("expected Corrupt at 2, got {other:?}"),
    }
    db.drop_schema(&store).await;
}

// ------------------------------------------------------------------------------------------
// Many connections on one budget (I2).

/// The ledger's state, checked against what the tasks were told: held and spent are exactly
/// the sums of the accepted holds (none lost, none counted twice) and within every cap.
async fn check_phase(
    phase: &str,
    store: &PostgresStore,
    chain: &[Mandate],
    caps: &[Caps; 3],
    expected: &[[i64; 3]; 3],
    at: DateTime<Utc>,
) {
    let usage = store.usage(chain, at).await.unwrap();
    for (m, u) in usage.iter().enumerate() {
        let (held, spent) = (u.held.minor_units(), u.spent.minor_units());
        assert_eq!(
            [held, spent, i64::from(u.uses)],
            expected[m],
            "{phase}: level {m} is the sum of the accepted holds"
        );
        if let Some(cap) = caps[m].lifetime {
            assert!(held + spent <= cap, "{phase}: I2 lifetime of level {m}");
        }
        for (w, limit) in u.windows.iter().zip(&caps[m].windows) {
            assert!(
                limit.1.is_none_or(|cap| w.amount.minor_units() <= cap),
                "{phase}: I2 window"
            );
            assert!(
                limit.2.is_none_or(|cap| w.count <= cap),
                "{phase}: I2 count"
            );
        }
        if let Some(cap) = caps[m].uses {
            assert!(u.uses <= cap, "{phase}: I2 uses of level {m}");
        }
    }
}

/// What a task did to one hold: its levels (0 = root), and its (held, spent, uses) share.
type Effect = (usize, [i64; 3]);

fn add(expected: &mut [[i64; 3]; 3], effects: &[Effect]) {
    for (leaf, share) in effects {
        for level in expected.iter_mut().take(leaf + 1) {
            for k in 0..3 {
                level[k] += share[k];
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_holds_from_eight_connections_never_overspend() {
    let Some(url) = database_url() else { return };
    let db = fresh(&url);
    let caps = [
        Caps {
            lifetime: Some(30_000),
            windows: vec![(3600, Some(25_000), Some(200))],
            uses: None,
        },
        Caps {
            lifetime: Some(24_000),
            windows: vec![],
            uses: Some(150),
        },
        Caps {
            lifetime: Some(16_000),
            windows: vec![(600, None, Some(100))],
            uses: None,
        },
    ];
    let store = db.store().await;
    let chain = three_levels(&store, &caps).await;
    let at = examples::now();
    // Eight stores with one connection each: eight sessions, as eight processes would have.
    let mut stores = Vec::new();
    for _ in 0..8 {
        stores.push(Arc::new(
            PostgresStore::connect_with(&db.config.clone().with_max_connections(1))
                .await
                .unwrap(),
        ));
    }
    let mut expected = [[0i64; 3]; 3];
    let mut accepted: Vec<Vec<(AttemptId, usize, i64)>> = vec![Vec::new(); 8];
    let mut refused = 0;

    for phase in 0..3u32 {
        let mut tasks = Vec::new();
        for (t, s) in stores.iter().enumerate() {
            let s = Arc::clone(s);
            let chain = chain.clone();
            let mine = std::mem::take(&mut accepted[t]);
            tasks.push(tokio::spawn(async move {
                let mut effects: Vec<Effect> = Vec::new();
                let mut kept = Vec::new();
                let mut refused = 0;
                // Resolve what this task holds from the last phase: commit, commit half,
                // release, or keep.
                for (i, (id, leaf, amount)) in mine.into_iter().enumerate() {
                    match (i + t) % 4 {
                        0 => {
                            s.commit_hold(&id, cents(amount)).await.unwrap();
                            effects.push((leaf, [-amount, amount, 0]));
                        }
                        1 => {
                            s.commit_hold(&id, cents(amount / 2)).await.unwrap();
                            effects.push((leaf, [-amount, amount / 2, 0]));
                        }
                        2 => {
                            s.release_hold(&id).await.unwrap();
                            effects.push((leaf, [-amount, 0, -1]));
                        }
                        _ => kept.push((id, leaf, amount)),
                    }
                }
                for i in 0..20i64 {
                    let leaf = ((i + t as i64) % 3) as usize;
                    let amount = (i * 37 + t as i64 * 11) % 400 + 100;
                    let id = attempt(format!("p{phase}_t{t}_{i}"));
                    let request =
                        HoldRequest::on_chain(id.clone(), cents(amount), at, &chain[..=leaf]);
                    match s.place_hold(&request).await {
                        Ok(_) => {
                            effects.push((leaf, [amount, 0, 1]));
                            kept.push((id, leaf, amount));
                        }
                        Err(HoldError::Refused { .. }) => {
                            refused += 1;
                            assert!(
                                s.hold(&id).await.unwrap().is_none(),
                                "a refusal holds nothing"
                            );
                        }
                        Err(e) => panic!("task {t}: {e}"),
                    }
                }
                (effects, kept, refused)
            }));
        }
        for (t, task) in tasks.into_iter().enumerate() {
            let (effects, kept, r) = task.await.unwrap();
            add(&mut expected, &effects);
            accepted[t] = kept;
            refused += r;
        }
        check_phase(
            &format!("phase {phase}"),
            &store,
            &chain,
            &caps,
            &expected,
            at,
        )
        .await;
        // No lost hold: every hold a task was told it has is there and held.
        for (id, _, amount) in accepted.iter().flatten() {
            let h = store.hold(id).await.unwrap().unwrap();
            assert_eq!((h.state, h.amount), (HoldState::Held, cents(*amount)));
        }
    }
    assert!(
        refused > 0,
        "the caps were reached: the test exercised contention"
    );
    let usage = store.usage(&chain, at).await.unwrap();
    assert!(usage[0].attempts >= 60, "{:?}", usage[0]);
    db.drop_schema(&store).await;
}

/// A transaction that loses a deadlock is run again: another session (not this adapter, which
/// always locks accounts before holds) takes the locks in the other order; the server aborts
/// the adapter's transaction (it waited first), the adapter retries, and the commit happens
/// exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_deadlock_is_retried() {
    let Some(url) = database_url() else { return };
    let db = fresh(&url);
    let store = Arc::new(db.store().await);
    let caps = Caps {
        lifetime: Some(10_000),
        ..Caps::default()
    };
    let chain = three_levels(&store, &[caps.clone(), caps.clone(), caps.clone()]).await;
    store
        .place_hold(&HoldRequest::on_chain(
            attempt(1),
            cents(300),
            examples::now(),
            &chain,
        ))
        .await
        .unwrap();
    let other = PostgresStore::connect_with(&db.config).await.unwrap();
    let raw = other.pool().get().await.unwrap();
    // Let the adapter's session detect the deadlock (best effort: needs the privilege).
    let _ = raw.batch_execute("SET deadlock_timeout = '5s'").await;
    raw.batch_execute("BEGIN; SELECT 1 FROM holds WHERE attempt_id = 'attempt_1' FOR UPDATE")
        .await
        .unwrap();
    let committing = {
        let store = Arc::clone(&store);
        tokio::spawn(async move { store.commit_hold(&attempt(1), cents(200)).await })
    };
    // The adapter now holds the accounts and waits for the hold.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    raw.batch_execute("SELECT 1 FROM accounts WHERE mandate_id = 'm_root' FOR UPDATE")
        .await
        .unwrap();
    raw.batch_execute("COMMIT").await.unwrap();
    committing.await.unwrap().unwrap();
    let h = store.hold(&attempt(1)).await.unwrap().unwrap();
    assert_eq!((h.state, h.committed), (HoldState::Committed, cents(200)));
    for u in store.usage(&chain, examples::now()).await.unwrap() {
        assert_eq!((u.held, u.spent, u.uses), (cents(0), cents(200), 1));
    }
    db.drop_schema(&store).await;
}

// ------------------------------------------------------------------------------------------
// Windows: exact, whatever order the times come in.

/// Holds placed at times out of order are counted in each window by their own time, at any
/// `now`, like the port's reference model.
#[tokio::test]
async fn windows_count_out_of_order_times_exactly() {
    let Some(url) = database_url() else { return };
    let db = fresh(&url);
    let store = db.store().await;
    let caps = Caps {
        lifetime: None,
        windows: vec![(3600, None, Some(100_000)), (600, None, Some(100_000))],
        uses: None,
    };
    let m = mandate("m_shuffled", None, &caps);
    store.insert_mandate(&m).await.unwrap();
    let chain = [m.clone()];
    let t0 = examples::now();
    let mut holds: Vec<(i64, i64, HoldState, i64)> = Vec::new();
    for n in 0..60i64 {
        let offset = (n * 263 + 17) % 4000;
        let amount = 100 + offset;
        store
            .place_hold(&HoldRequest::on_chain(
                attempt(n),
                cents(amount),
                t0 + Duration::seconds(offset),
                &chain,
            ))
            .await
            .unwrap();
        let (state, committed) = match n % 3 {
            0 => {
                store
                    .commit_hold(&attempt(n), cents(amount / 2))
                    .await
                    .unwrap();
                (HoldState::Committed, amount / 2)
            }
            1 => {
                store.release_hold(&attempt(n)).await.unwrap();
                (HoldState::Released, 0)
            }
            _ => (HoldState::Held, 0),
        };
        holds.push((offset, amount, state, committed));
    }
    // Forwards and backwards in time.
    let mut times: Vec<i64> = (0..8000).step_by(397).collect();
    times.extend(
        (0..8000)
            .step_by(611)
            .collect::<Vec<i64>>()
            .into_iter()
            .rev(),
    );
    for later in times {
        let usage = store
            .usage(&chain, t0 + Duration::seconds(later))
            .await
            .unwrap();
        for (secs, w) in [(3600i64, &usage[0].windows[0]), (600, &usage[0].windows[1])] {
            let inside = holds
                .iter()
                .filter(|h| h.0 > later - secs && h.2 != HoldState::Released);
            let amount: i64 = inside
                .clone()
                .map(|h| if h.2 == HoldState::Held { h.1 } else { h.3 })
                .sum();
            assert_eq!(
                (w.amount.minor_units(), w.count),
                (amount, inside.count() as u32),
                "{secs} s window at +{later} s"
            );
        }
    }
    db.drop_schema(&store).await;
}

// ------------------------------------------------------------------------------------------
// Secrets (I10).

/// A password in the connection string never shows in Debug output or in errors.
#[tokio::test]
async fn the_password_never_shows() {
    let url = "postgres://app:hunter2-secret@127.0.0.1:1/payments";
    let config = PostgresConfig::new(url).with_timeout(std::time::Duration::from_secs(2));
    assert!(!format!("{config:?}").contains("hunter2"));
    match PostgresStore::connect_with(&config).await {
        Err(e) => {
            assert!(
                e.is_retryable(),
                "a refused connection is Unavailable: {e:?}"
            );
            assert!(!format!("{e} {e:?}").contains("hunter2"), "{e:?}");
        }
        Ok(s) => panic!("connected to port 1? {s:?}"),
    }
    if let Some(url) = database_url() {
        let db = fresh(&url);
        let store = db.store().await;
        assert!(!format!("{store:?}").contains("password"));
        db.drop_schema(&store).await;
    }
}
