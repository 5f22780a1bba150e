//! Every port in memory: thread-safe, for tests and single-process use (feature `memory`).
//!
//! Nothing survives the process. For durable state use a database-backed store.

mod audit;
mod clock;
mod store;
mod vault;

pub use audit::*;
pub use clock::*;
pub use store::*;
pub use vault::*;
