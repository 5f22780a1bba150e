//! Adapters: implementations of the ports, each behind a cargo feature.
//!
//! | feature | module | ports |
//! |---|---|---|
//! | `memory` | [`memory`] | every port, in memory and thread-safe, plus a manual clock |
//! | `sqlite` | [`sqlite`] | [`Store`](crate::ports::Store), [`AuditSink`](crate::ports::AuditSink) and an encrypted [`CredentialVault`](crate::ports::CredentialVault) in one SQLite file (the durable default) |
//! | `postgres` | [`postgres`] | [`Store`](crate::ports::Store), [`AuditSink`](crate::ports::AuditSink) and an encrypted [`CredentialVault`](crate::ports::CredentialVault) on PostgreSQL (tokio-postgres, deadpool), shared by many processes |
//! | `sqlite` or `postgres` | [`keyring`] | the keys of the durable vaults and their envelope encryption |
//! | `sqlite` or `postgres` | [`Migration`], [`Migrated`] | the exported schema migrations (see each backend's `MIGRATIONS` and `migrate`) |
//! | `memory`, `sqlite` or `postgres` | [`shard`] | a router that picks a store (or engine) by root mandate |
//! | `http` | [`http`] | a Stripe-compatible [`crate::ports::PaymentProvider`], a signed-webhook [`crate::ports::AuditSink`] with an outbox |
//!
//! [`crate::ports::SystemClock`] needs no feature.

#[cfg(any(feature = "memory", feature = "sqlite", feature = "postgres"))]
mod audit_index;
#[cfg(any(feature = "memory", feature = "sqlite", feature = "postgres"))]
mod hold_rules;
#[cfg(feature = "http")]
pub mod http;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub mod keyring;
#[cfg(any(feature = "memory", feature = "sqlite", feature = "postgres"))]
mod mandate_rules;
#[cfg(feature = "memory")]
pub mod memory;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod migration;
#[cfg(any(feature = "memory", feature = "sqlite", feature = "postgres"))]
pub mod shard;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub use migration::{Migrated, Migration};
#[cfg(any(feature = "memory", feature = "sqlite", feature = "postgres"))]
mod vault_rules;

#[cfg(feature = "sqlite")]
pub mod sqlite;

#[cfg(feature = "postgres")]
pub mod postgres;
