//! The review queue's conformance suite on every adapter: memory, SQLite, and PostgreSQL when
//! `DATABASE_URL` is set (run it under `scripts/with-postgres.sh`).
#![cfg(all(feature = "testkit", feature = "sqlite"))]

use std::sync::Arc;

use agent_mandate::adapters::memory::MemoryReviewQueue;
use agent_mandate::adapters::sqlite::{SqliteConfig, SqliteDatabase};
use agent_mandate::testkit::review_queue_suite;

#[tokio::test]
async fn memory_review_queue_keeps_the_contract() {
    review_queue_suite(Arc::new(MemoryReviewQueue::new()), "mem").await;
}

#[tokio::test]
async fn sqlite_review_queue_keeps_the_contract() {
    let db = SqliteDatabase::open(SqliteConfig::in_memory()).expect("db");
    review_queue_suite(Arc::new(db.review_queue()), "sqlite").await;
}

#[tokio::test]
async fn sqlite_review_queue_survives_reopening_the_file() {
    let dir = std::env::temp_dir().join(format!("am-review-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("review.db");
    let _ = std::fs::remove_file(&path);
    {
        let db = SqliteDatabase::open(SqliteConfig::file(&path)).expect("db");
        review_queue_suite(Arc::new(db.review_queue()), "file").await;
    }
    let db = SqliteDatabase::open(SqliteConfig::file(&path)).expect("reopened");
    let queue = db.review_queue();
    let id = "file_a"
        .parse::<agent_mandate::domain::AttemptId>()
        .expect("id");
    let kept = agent_mandate::ports::ReviewQueue::entry(&queue, &id)
        .await
        .expect("entry")
        .expect("the entry survives the restart");
    assert_eq!(kept.tries, 1);
    let _ = std::fs::remove_dir_all(&dir);
}

#[cfg(feature = "postgres")]
#[tokio::test]
async fn postgres_review_queue_keeps_the_contract() {
    let Ok(url) = std::env::var("DATABASE_URL") else {
        eprintln!("DATABASE_URL unset: the PostgreSQL review queue is not tested here");
        return;
    };
    let store = agent_mandate::adapters::postgres::PostgresStore::connect(&url)
        .await
        .expect("connect");
    let queue =
        agent_mandate::adapters::postgres::PostgresReviewQueue::from_pool(store.pool().clone())
            .await
            .expect("queue");
    let prefix = format!("pg{}", std::process::id());
    review_queue_suite(Arc::new(queue), &prefix).await;
}
