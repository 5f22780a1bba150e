//! Ports: the small traits the engine needs from the outside world.
//!
//! Each is `Send + Sync + Debug` and object safe (`#[async_trait]` where async), so an engine
//! is built from one [`Ports`] value of `Arc<dyn Port>`s. The engine is the only code that
//! calls them. Implementations live in [`crate::adapters`] behind cargo features; the contract
//! tests every implementation must pass are in `agent_mandate::testkit` (feature `testkit`).
//!
//! | port | what it does | errors |
//! |---|---|---|
//! | [`Store`] | mandates, confirmations, snapshots, the budget ledger (atomic holds), payment attempts, idempotency records, orders, control counters | [`StoreError`], [`HoldError`] |
//! | [`PaymentProvider`] | authorize, capture, void, refund, lookup at a PSP | [`ProviderError`] (declines are data) |
//! | [`CredentialVault`] | keeps credentials, hands out opaque references | [`VaultError`] |
//! | [`AuditSink`] | the append-only, hash-chained audit trail | [`AuditError`] |
//! | [`Clock`] | the time | none |
//! | [`TokenStore`] | scoped payment tokens and their redemptions | [`TokenStoreError`] |
//! | [`TokenGenerator`] | random token values | [`TokenGeneratorError`] |
//! | [`ReviewQueue`] | payments held in their review window (given to the engine with `Engine::with_reviews`, not part of [`Ports`]) | [`StoreError`] |
//! | [`AlertSink`] | alerts of the engine's controls, for the buyer, security or operations (given to the engine with `Engine::with_alerts`, not part of [`Ports`]) | [`AlertError`] |

mod alerts;
mod audit;
mod clock;
mod payment;
mod provider;
mod review;
mod store;
mod tokens;
mod vault;

use std::fmt;
use std::sync::Arc;

pub use alerts::{Alert, AlertError, AlertKind, AlertSink, Audience, Severity};
pub use audit::{verify_events, AuditError, AuditReceipt, AuditSegment, AuditSink, TrailId};
pub use clock::{Clock, SystemClock};
pub use payment::{InputsQuery, OpenPayment, Opened, PaymentInputs};
pub use provider::{
    AuthorizeRequest, CaptureRequest, Lookup, PaymentProvider, ProviderError, RefundRequest,
    RevokeTokenRequest, VoidRequest,
};
pub use review::{ReviewEntry, ReviewQueue, ReviewState, MAX_REVIEW_BATCH};
pub use store::{
    AttemptChange, Begin, BudgetLimits, ChallengeConsumed, ChallengeUse, Completion, Fence,
    HoldError, HoldLevel, HoldOp, HoldRecord, HoldRequest, HoldState, IdempotencyScope,
    InsertOrder, RefundPolicy, StagedEvent, Store, StoreError, StoredResult, Write, Written,
};
pub use tokens::{
    ClaimOutcome, InsertToken, PeriodCap, Redeemer, Redemption, RedemptionState,
    RevocationProgress, TokenDisplay, TokenGenerator, TokenGeneratorError, TokenHash, TokenId,
    TokenLimits, TokenRecord, TokenSelector, TokenStatus, TokenStore, TokenStoreError, TokenUses,
};
pub use vault::{
    CredentialDisplay, CredentialKind, CredentialVault, FundingType, NewCredential,
    ResolvedCredential, Secret, StoreOutcome, StoredCredential, VaultError,
};

/// Everything an engine needs, in one value (the rustls `CryptoProvider` pattern).
#[derive(Clone)]
pub struct Ports {
    /// Durable state.
    pub store: Arc<dyn Store>,
    /// The PSP.
    pub provider: Arc<dyn PaymentProvider>,
    /// Credentials.
    pub vault: Arc<dyn CredentialVault>,
    /// The audit trail.
    pub audit: Arc<dyn AuditSink>,
    /// The time.
    pub clock: Arc<dyn Clock>,
}

impl fmt::Debug for Ports {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ports")
            .field("store", &self.store)
            .field("provider", &self.provider)
            .field("vault", &self.vault)
            .field("audit", &self.audit)
            .field("clock", &self.clock)
            .finish()
    }
}
