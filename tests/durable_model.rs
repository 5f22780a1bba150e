//! The durable ledgers (SQLite, PostgreSQL) against the naive reference model of
//! `tests/common/ledger_model.rs` (every sum a linear scan over the holds), the one the memory
//! ledger is checked against in `tests/conformance_store.rs`: random sequences of
//! holds, commits, releases, refunds and reads on a three-level chain with small caps and two
//! windows (I2, I5).
//!
//! SQLite runs each case on a fresh in-memory database. PostgreSQL needs `DATABASE_URL` (see
//! `scripts/with-postgres.sh`); without it, it says SKIPPED and passes. Each PostgreSQL case
//! uses mandates and attempts of its own in the schema `am_model_test`. `PROPTEST_CASES`
//! raises the case count (default 24 for PostgreSQL, 64 for SQLite).
#![cfg(all(feature = "sqlite", feature = "testkit"))]

mod common;

#[cfg(feature = "postgres")]
use std::sync::OnceLock;

#[cfg(feature = "postgres")]
use agent_mandate::adapters::postgres::{PostgresConfig, PostgresStore};
use agent_mandate::adapters::sqlite::{SqliteConfig, SqliteDatabase};
use common::ledger_model::{block_on, caps, config, op, run};
use proptest::prelude::*;

/// The database and schema of this run: `None` (and SKIPPED) without `DATABASE_URL`.
#[cfg(feature = "postgres")]
fn database() -> Option<&'static PostgresConfig> {
    static CONFIG: OnceLock<Option<PostgresConfig>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let url = std::env::var("DATABASE_URL")
                .ok()
                .filter(|u| !u.is_empty())?;
            Some(
                PostgresConfig::new(url)
                    .with_schema("am_model_test")
                    .with_max_connections(2),
            )
        })
        .as_ref()
}

#[cfg(feature = "postgres")]
proptest! {
    #![proptest_config(config(24))]

    /// I2, I5: the PostgreSQL ledger agrees with a reference model that scans every hold,
    /// over random sequences of holds, commits, releases, refunds and reads on a three-level
    /// chain with small caps and two windows, at increasing times; held + spent never exceed
    /// a cap.
    #[test]
    fn postgres_ledger_agrees_with_a_linear_scan_model(
        caps in [caps(), caps(), caps()],
        ops in prop::collection::vec(op(), 1..60),
    ) {
        let Some(config) = database() else {
            eprintln!(
                "SKIPPED: DATABASE_URL not set (run scripts/with-postgres.sh cargo test --all-features)"
            );
            return Ok(());
        };
        block_on(async {
            let store = PostgresStore::connect_with(config).await.unwrap();
            run(&store, caps, ops).await
        })?;
    }
}

proptest! {
    #![proptest_config(config(64))]

    /// I2, I5: the SQLite ledger agrees with the same reference model.
    #[test]
    fn sqlite_ledger_agrees_with_a_linear_scan_model(
        caps in [caps(), caps(), caps()],
        ops in prop::collection::vec(op(), 1..60),
    ) {
        block_on(async {
            let db = SqliteDatabase::open(SqliteConfig::in_memory()).unwrap();
            run(&db.store(), caps, ops).await
        })?;
    }
}
