//! Scoped payment tokens: a credential is never handed to an agent or a seller raw; a token is
//! issued instead, redeemable only by the provider it names, only within its amount,
//! currency, period and use limits, and revocable in one call.
//!
//! A token is three things the crate already has, tied by a [`TokenRecord`]:
//!
//! * a **child mandate** of the buyer's mandate ([`rules::child_spec`]): the token's caps,
//!   period, uses, expiry, merchant and MCC, derived through [`Engine::derive_mandate`], so the
//!   delegation check refuses a token wider than its mandate (I6), and every redemption is
//!   decided, held and charged by [`Engine::execute_payment`] (I1, I2, I3);
//! * a **vault credential** owned by the token's own actor, a copy of the orchestrator's
//!   credential: the token service resolves the orchestrator's secret through the vault port
//!   and stores it again under the token's actor in the same call, holding it only as a
//!   [`Secret`](crate::ports::Secret) (redacted in `Debug`, zeroized on drop); no caller,
//!   PSP or audit event sees it. (This is the one place outside a PSP adapter that resolves
//!   a secret; the copy is not made inside the vault port.)
//! * a **token value** `amtok_<id>_<secret>`, random from a [`TokenGenerator`], shown once
//!   ([`IssuedToken::token`]) and stored only as a SHA-256 hash ([`hash_secret`]).
//!
//! A redemption: parse, find by id, compare the hash in constant time, check the provider,
//! buyer, status, expiry, currency and per-use cap ([`rules::check_presented`]), claim one use
//! atomically in the [`TokenStore`] (refused when revoked or exhausted; the same key answers
//! its recorded outcome), then `execute_payment` with capture under the token's actor, then
//! settle the claim with the outcome. A key claimed before answers its recorded outcome
//! before the token's status and expiry are looked at (they apply to new claims only).
//! Refusals are audited (`token_refused`), at most a bounded number per caller and window
//! ([`TokenService::with_refusal_audit_bound`]): the rest are counted into the next event.
//!
//! Revocation ([`TokenService::revoke`]) marks every selected token revoked in one atomic
//! store step (the order point: a claim is before it or refused), then revokes each token's
//! mandate and vault credential, asks the PSP to revoke its side when the PSP says it can
//! ([`PaymentProvider::revokes_tokens`](crate::ports::PaymentProvider::revokes_tokens)),
//! and audits each token once; the progress is kept on the token
//! ([`RevocationProgress`](crate::ports::RevocationProgress)), so a retry finishes a fan-out
//! a failure left half-way.
//!
//! Redeemers are [`Principal::Provider`](crate::domain::Principal::Provider): a provider is
//! never the host's `System` principal, which the engine trusts with every buyer.
//!
//! ```
//! # #[cfg(feature = "testkit")] {
//! use std::sync::Arc;
//! use agent_mandate::adapters::memory::{MemoryPorts, MemoryTokenStore};
//! use agent_mandate::engine::{Engine, EngineConfig};
//! use agent_mandate::testkit::{FakePsp, SeededTokenGenerator};
//! use agent_mandate::tokens::TokenService;
//! let memory = MemoryPorts::new(agent_mandate::domain::examples::now(), |vault, _| {
//!     Arc::new(FakePsp::with_vault(vault))
//! });
//! let engine = Engine::new(memory.ports.clone(), EngineConfig::default()).unwrap();
//! let tokens = TokenService::new(
//!     engine,
//!     Arc::new(MemoryTokenStore::new()),
//!     Arc::new(SeededTokenGenerator::new(7)),
//! );
//! # let _ = tokens;
//! # }
//! ```

mod commands;
mod issue;
mod redeem;
mod refusals;
mod revoke;
pub mod rules;
mod secret;

use std::sync::Arc;

pub use commands::{
    IssueToken, IssuedToken, RedeemToken, RedemptionOutcome, RefusalCode, RevokeTokens, TokenError,
};
pub use refusals::{DEFAULT_REFUSALS_PER_WINDOW, DEFAULT_REFUSAL_WINDOW_SECONDS};
pub use secret::{hash_secret, OsTokenGenerator, TOKEN_PREFIX};

use crate::domain::{ActorId, AuditEvent};
use crate::engine::Engine;
use crate::ports::{TokenGenerator, TokenId, TokenRecord, TokenStore, Write};

/// Issues, redeems and revokes scoped tokens over an [`Engine`]. Cheap to clone.
#[derive(Debug, Clone)]
pub struct TokenService {
    engine: Engine,
    store: Arc<dyn TokenStore>,
    generator: Arc<dyn TokenGenerator>,
    refusals: refusals::RefusalBound,
}

impl TokenService {
    /// A service over `engine`, keeping tokens in `store`, drawing values from `generator`
    /// (the OS RNG, [`OsTokenGenerator`], outside tests).
    pub fn new(
        engine: Engine,
        store: Arc<dyn TokenStore>,
        generator: Arc<dyn TokenGenerator>,
    ) -> TokenService {
        TokenService {
            engine,
            store,
            generator,
            refusals: refusals::RefusalBound::default(),
        }
    }

    /// Bounds the `token_refused` events one caller causes: at most `limit` per `window`
    /// (by the engine's clock; the defaults are [`DEFAULT_REFUSALS_PER_WINDOW`] per
    /// [`DEFAULT_REFUSAL_WINDOW_SECONDS`]). Beyond it a refusal is still answered, and
    /// counted; the count is written with the caller's next audited refusal (`suppressed`).
    /// A `limit` of 0 is taken as 1, a window under a second as a second.
    ///
    /// ```
    /// # #[cfg(feature = "testkit")] {
    /// # use std::sync::Arc;
    /// # use agent_mandate::adapters::memory::{MemoryPorts, MemoryTokenStore};
    /// # use agent_mandate::engine::{Engine, EngineConfig};
    /// # use agent_mandate::testkit::{FakePsp, SeededTokenGenerator};
    /// # use agent_mandate::tokens::TokenService;
    /// # let memory = MemoryPorts::new(agent_mandate::domain::examples::now(), |vault, _| {
    /// #     Arc::new(FakePsp::with_vault(vault))
    /// # });
    /// # let engine = Engine::new(memory.ports.clone(), EngineConfig::default()).unwrap();
    /// let tokens = TokenService::new(
    ///     engine,
    ///     Arc::new(MemoryTokenStore::new()),
    ///     Arc::new(SeededTokenGenerator::new(7)),
    /// )
    /// .with_refusal_audit_bound(5, chrono::Duration::minutes(1));
    /// # let _ = tokens;
    /// # }
    /// ```
    pub fn with_refusal_audit_bound(mut self, limit: u32, window: chrono::Duration) -> Self {
        self.refusals = refusals::RefusalBound::new(limit, window);
        self
    }

    /// The engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The token store.
    pub fn store(&self) -> &Arc<dyn TokenStore> {
        &self.store
    }

    /// A token's record.
    pub async fn token(&self, id: &TokenId) -> Result<Option<TokenRecord>, TokenError> {
        Ok(self.store.token(id).await?)
    }

    /// Stages `events` in the store's outbox and delivers them (as the engine does).
    async fn audit(&self, events: &[AuditEvent]) -> Result<(), TokenError> {
        self.engine
            .ports()
            .store
            .write_audited(Write::Events, events)
            .await
            .map_err(crate::engine::EngineError::from)?;
        let _ = self.engine.flush_audit().await;
        Ok(())
    }
}

/// The actor id of a token's child mandate: the token's id (a system actor no principal a
/// host builds for a provider can be mistaken for, since the service alone builds it).
pub(crate) fn token_actor_id(id: &TokenId) -> Result<ActorId, TokenError> {
    ActorId::new(id.as_str()).map_err(|e| TokenError::Invalid {
        field: "token_id".into(),
        message: e.to_string(),
    })
}
