//! Adapters: implementations of the ports, each behind a cargo feature.
//!
//! | feature | module | ports |
//! |---|---|---|
//! | `memory` | [`memory`] | every port, in memory and thread-safe, plus a manual clock |
//! | `postgres` | [`postgres`] | store and audit sink on PostgreSQL (tokio-postgres, deadpool), shared by many processes |
//!
//! [`crate::ports::SystemClock`] needs no feature.

#[cfg(feature = "memory")]
pub mod memory;
#[cfg(feature = "postgres")]
pub mod postgres;
