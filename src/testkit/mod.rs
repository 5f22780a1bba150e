//! Conformance suites for every port and a fault-injecting fake PSP (feature `testkit`).
//!
//! The suites are plain `async fn`s that panic (like `assert!`) on the first broken rule,
//! naming it. Our adapters run them in `tests/`; a team writing its own adapter runs the same
//! functions against it (see `examples/custom_psp.rs`).

mod audit_suite;
mod counting;
mod fake_psp;
#[cfg(feature = "http")]
mod outbox_suite;
mod provider_suite;
mod review_suite;
mod store_suite;
#[cfg(feature = "tokens")]
mod token_suite;
#[cfg(feature = "tokens")]
mod tokens;
mod vault_suite;

pub use audit_suite::*;
pub use counting::*;
pub use fake_psp::*;
#[cfg(feature = "http")]
pub use outbox_suite::*;
pub use provider_suite::*;
pub use review_suite::review_queue_suite;
pub use store_suite::*;
#[cfg(feature = "tokens")]
pub use token_suite::*;
#[cfg(feature = "tokens")]
pub use tokens::*;
pub use vault_suite::*;
