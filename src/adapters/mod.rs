//! Adapters: implementations of the ports, each behind a cargo feature.
//!
//! | feature | module | ports |
//! |---|---|---|
//! | `memory` | [`memory`] | every port, in memory and thread-safe, plus a manual clock |
//! | `http` | `http` | a Stripe-compatible [`crate::ports::PaymentProvider`], a signed-webhook [`crate::ports::AuditSink`] with an outbox |
//!
//! [`crate::ports::SystemClock`] needs no feature.

#[cfg(feature = "http")]
pub mod http;
#[cfg(feature = "memory")]
pub mod memory;
