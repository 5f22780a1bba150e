//! Adapters: implementations of the ports, each behind a cargo feature.
//!
//! | feature | module | ports |
//! |---|---|---|
//! | `memory` | [`memory`] | every port, in memory and thread-safe, plus a manual clock |
//! | `sqlite` | [`sqlite`] | [`Store`](crate::ports::Store) and [`AuditSink`](crate::ports::AuditSink) in one SQLite file (the durable default) |
//! | `postgres` | [`postgres`] | [`Store`](crate::ports::Store) and [`AuditSink`](crate::ports::AuditSink) on PostgreSQL (tokio-postgres, deadpool), shared by many processes |
//! | `http` | [`http`] | a Stripe-compatible [`crate::ports::PaymentProvider`], a signed-webhook [`crate::ports::AuditSink`] with an outbox |
//!
//! [`crate::ports::SystemClock`] needs no feature.

#[cfg(any(feature = "memory", feature = "sqlite", feature = "postgres"))]
mod hold_rules;
#[cfg(feature = "http")]
pub mod http;
#[cfg(feature = "memory")]
pub mod memory;

#[cfg(feature = "sqlite")]
pub mod sqlite;

#[cfg(feature = "postgres")]
pub mod postgres;
