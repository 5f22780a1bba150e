//! Every port in memory: thread-safe, for tests and single-process use (feature `memory`).
//!
//! Nothing survives the process. For durable state use a database-backed store.

mod alerts;
mod audit;
mod clock;
pub(crate) mod hash;
mod review;
mod store;
#[cfg(feature = "tokens")]
mod tokens;
mod vault;

pub use alerts::*;
pub use audit::*;
pub use clock::*;
pub use review::MemoryReviewQueue;
pub use store::*;
#[cfg(feature = "tokens")]
pub use tokens::MemoryTokenStore;
pub use vault::*;

use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::ports::{PaymentProvider, Ports};

/// Every memory adapter, with typed handles (for tests and tools) and the [`Ports`] bundle.
///
/// ```
/// # #[cfg(feature = "testkit")] {
/// use std::sync::Arc;
/// use agent_mandate::adapters::memory::MemoryPorts;
/// use agent_mandate::domain::examples;
/// use agent_mandate::testkit::FakePsp;
/// let memory = MemoryPorts::new(examples::now(), |vault, _clock| Arc::new(FakePsp::with_vault(vault)));
/// let engine = agent_mandate::engine::Engine::new(memory.ports.clone(), Default::default()).unwrap();
/// # let _ = engine;
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct MemoryPorts {
    /// The store.
    pub store: Arc<MemoryStore>,
    /// The audit sink.
    pub audit: Arc<MemoryAuditSink>,
    /// The vault.
    pub vault: Arc<MemoryVault>,
    /// The manual clock, starting at `start`.
    pub clock: Arc<ManualClock>,
    /// All of them, with the PSP, as one bundle.
    pub ports: Ports,
}

impl MemoryPorts {
    /// Memory adapters starting at `start`, with the PSP `provider` builds (it gets the vault,
    /// to resolve credentials, and the clock).
    pub fn new(
        start: DateTime<Utc>,
        provider: impl FnOnce(Arc<MemoryVault>, Arc<ManualClock>) -> Arc<dyn PaymentProvider>,
    ) -> MemoryPorts {
        let store = Arc::new(MemoryStore::new());
        let audit = Arc::new(MemoryAuditSink::new());
        let vault = Arc::new(MemoryVault::new());
        let clock = Arc::new(ManualClock::new(start));
        let provider = provider(vault.clone(), clock.clone());
        let ports = Ports {
            store: store.clone(),
            provider,
            vault: vault.clone(),
            audit: audit.clone(),
            clock: clock.clone(),
        };
        MemoryPorts {
            store,
            audit,
            vault,
            clock,
            ports,
        }
    }
}
