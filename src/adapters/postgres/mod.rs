//! The [`Store`](crate::ports::Store), [`AuditSink`](crate::ports::AuditSink) and
//! [`CredentialVault`](crate::ports::CredentialVault) ports on PostgreSQL (feature `postgres`), for many service instances sharing one database.
//!
//! * [`PostgresStore`]: every table of the store, with the budget ledger kept as counters per
//!   mandate (`accounts`) plus one row per hold and per (mandate, hold) for rolling windows.
//! * [`PostgresAuditSink`]: the hash-chained audit trail, appends serialised across
//!   connections and processes.
//! * [`PostgresVault`]: the credential vault, secrets sealed with envelope encryption under a
//!   [`VaultKeyring`](crate::adapters::keyring::VaultKeyring).
//! * [`PostgresConfig`]: the connection string (never printed), an optional schema, the pool
//!   size and the retry bound.
//!
//! # Guarantees
//!
//! * **No overspend (I2), no deadlock.** A hold locks the accounts of its whole chain with one
//!   `SELECT .. ORDER BY mandate_id FOR UPDATE` (a single global lock order), reads the window
//!   sums under those locks, checks every limit and writes, all in one transaction. Commits,
//!   releases and refunds lock the same rows in the same order before they touch the hold. So
//!   two transactions never wait on each other in a cycle, and a check always sees every hold
//!   committed before it. Deadlocks and serialization failures reported by the server anyway
//!   (SQLSTATE `40P01`, `40001`) are retried a bounded number of times, then reported as
//!   [`StoreError::Unavailable`](crate::ports::StoreError::Unavailable).
//! * **Exact money and time.** Amounts are integer minor units (`BIGINT` per hold, `NUMERIC`
//!   for running totals, which cannot overflow) beside a currency code column; times are
//!   `NUMERIC` nanoseconds since the Unix epoch, so a hold reads back at the exact instant
//!   it was placed, over chrono's whole range.
//! * **Bad data is an error, never a default.** Records are JSON text (serde); a row that does
//!   not decode, names an unknown status or currency, or holds a negative or inconsistent
//!   amount is [`StoreError::Corrupt`](crate::ports::StoreError::Corrupt) naming its table
//!   and key.
//! * **Schema versions.** The migrations are embedded and applied on connect, under a lock, in
//!   one transaction; a database whose `am_meta.schema_version` is newer than this code is
//!   refused with `Corrupt { table: "am_meta", key: "schema_version", .. }`. A service that
//!   runs its migrations itself turns them off ([`PostgresConfig::with_migrations`], or the
//!   `from_pool_checked` constructors) and applies [`MIGRATIONS`] with its own tool or calls
//!   [`migrate`]; connecting then only checks the version and refuses a database that is
//!   behind with [`StoreError::SchemaBehind`](crate::ports::StoreError::SchemaBehind).
//!
//! # Windows
//!
//! Unlike the memory store (whose windows only move forward), a window here is evaluated
//! exactly as the port describes it, whatever order the times come in: at `now`, a window of
//! `S` seconds counts the holds of the mandate with `at > now - S` (held: their amount;
//! committed for more than zero: the amount committed less refunds that restored windows).
//! It is a range scan over `hold_levels (mandate_id, at_ns, ..)`, so its cost grows with the
//! holds inside the window, not with the history.
//!
//! # Idempotency and fencing (I3, I13)
//!
//! Each port call is one transaction. `begin_idempotent` gives every start or takeover of a
//! record a new token from the sequence `lease_tokens`; the caller's fence carries it. A write
//! that carries a fence (`complete_idempotent`, `abandon_idempotent`, `change_attempt`,
//! `place_hold`) checks it in its own transaction and keeps the record locked until it commits,
//! so a caller whose lease was taken over, or whose record was completed, abandoned or purged,
//! gets `Fenced` and writes nothing. `purge_idempotent` deletes ended records. See
//! `PostgresStore` for the details.
//!
//! # The audit outbox (I15)
//!
//! `change_attempt` and `write_audited` stage their audit events in `audit_pending` in the
//! transaction of the write they describe; the engine drains them to the audit sink
//! (`staged_audit`, `ack_audit`). Staging transactions take their ids one at a time (a table
//! lock held to the commit), so ids follow commit order and acknowledging through an id never
//! drops an event nobody read.
//!
//! # Connecting
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use agent_mandate::adapters::postgres::{PostgresAuditSink, PostgresConfig, PostgresStore};
//! let config = PostgresConfig::new("postgres://app@127.0.0.1:5432/payments");
//! let store = PostgresStore::connect_with(&config).await?;
//! let audit = PostgresAuditSink::from_pool(store.pool().clone()).await?;
//! # let _ = audit;
//! # Ok(())
//! # }
//! ```
//!
//! Connections are plain TCP or Unix sockets (`NoTls`); for TLS build a
//! [`deadpool_postgres::Pool`] with a TLS connector and use [`PostgresStore::from_pool`].

mod audit;
mod change;
mod codec;
mod config;
mod holds;
mod idempotency;
mod inputs;
mod ledger;
mod outbox;
mod payment;
mod piped;
mod records;
mod review;
mod schema;
mod store;
#[cfg(feature = "tokens")]
mod tokens;
mod tx;
mod vault;

pub use audit::PostgresAuditSink;
pub use config::PostgresConfig;
pub use review::PostgresReviewQueue;
pub use schema::{
    migrate, migrate_client, migrate_with, schema_version, MIGRATIONS, SCHEMA_VERSION,
};
pub use store::PostgresStore;
#[cfg(feature = "tokens")]
pub use tokens::PostgresTokenStore;
pub use vault::PostgresVault;

/// The connection pool type the adapters share.
pub use deadpool_postgres::Pool;
