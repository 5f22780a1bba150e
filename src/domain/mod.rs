//! The pure domain: money, cart snapshots, mandates, delegation and the authority decision.
//!
//! No IO, no async, no clock reads, no randomness: time enters as a parameter, identifiers are
//! content hashes or supplied by the caller.

mod alert;
mod attempt;
mod audit;
mod buyer_index;
mod canonical;
mod checkout;
mod checkpoint;
mod confirmation;
mod controls;
mod decision;
mod delegation;
mod error;
mod evaluate;
mod event_body;
pub mod examples;
mod ids;
mod intent;
pub mod limits;
mod mandate;
mod money;
mod principal;
mod request;
mod scope;
mod snapshot;
mod usage;

pub use alert::{Alert, AlertKind, Audience, Severity};
pub use attempt::{
    AttemptError, AttemptEvent, AttemptStatus, HoldEffect, Operation, Order, PaymentAttempt,
    ProviderReport, ProviderStatus,
};
pub use audit::{
    chain_hash, verify_chain, AuditEvent, AuditHash, AuditKind, ChainBreak, ChainFault,
    ChainedEvent, HoldAction, LimitKind, Party,
};
pub use buyer_index::{decision_by_a_stranger, BuyerFacts, BuyerIndex};
#[cfg(any(feature = "mpp", feature = "forms", feature = "acp"))]
pub(crate) use canonical::parse_time;
#[cfg(any(feature = "mpp", feature = "x402", feature = "acp"))]
pub(crate) use canonical::write_json_value;
pub use canonical::{json_fingerprint, ContentDigest, IntentHash, RequestDigest, SnapshotId};
pub use checkout::{CheckoutState, UpstreamBlocker};
pub use checkpoint::{
    checkpoint_floor, checkpoint_seal, verify_checkpoints, verify_window, AuditCheckpoint,
    AuditSubject, WindowFault, CHECKPOINT_INTERVAL,
};
pub use confirmation::{Confirmation, ConfirmationScope};
pub use controls::{
    accountable_actor, intent_mismatch, BreakerScope, ConfirmReason, ControlSignals, Declaration,
    RiskVector,
};
pub use decision::{
    AuthorityDecision, Blocker, BlockerClass, BlockerCode, Cause, Evidence, Outcome,
};
pub use delegation::{check_attenuation, widenings, DelegationError, Dimension, Widening};
pub use error::{ValidationError, ValidationKind};
pub use evaluate::evaluate;
pub use event_body::{Cut, Truncation};
pub use ids::{
    ActorId, AttemptId, BuyerId, CartId, ChannelRef, CheckoutId, ConfirmationId, CredentialRef,
    EvidenceRef, IdempotencyKey, MandateId, MarketplaceId, Mcc, MerchantId, OrderId, ProviderKey,
    ProviderRef, Region, SellerId, Sku, TaskId, Text, UpstreamCode, MAX_ID_LEN, MAX_TEXT_LEN,
};
pub use intent::{IntentLine, PurchaseIntent, PurchaseIntentSpec, MAX_INTENT_LINES};
pub use limits::{
    MAX_CHAIN_LEN, MAX_CONFIRMATIONS, MAX_EVENT_BODY_BYTES, MAX_SUSPENDED, MAX_UPSTREAM_BLOCKERS,
    MAX_UPSTREAM_MESSAGE_LEN, MAX_WINDOWS,
};
pub use mandate::{
    Actor, ActorKind, Lifecycle, LifecycleError, LifecycleEvent, Mandate, MandateSpec,
    MandateStatus, MAX_LIST, MAX_WINDOW_SECONDS,
};
pub use money::{Currency, Money, MoneyError};
pub use principal::Principal;
pub use request::{
    execution_fingerprint, CredentialStatus, EvaluationDocument, EvaluationInput, PaymentRequest,
    Suspensions,
};
pub use scope::{
    ActionSet, AmountScope, Baseline, Budgets, CartBinding, ConfirmationCondition,
    ConfirmationRule, CurrencyScope, MandateScope, MerchantScope, PaymentAction, Urgency, Validity,
    WindowLimit,
};
pub use snapshot::{
    BuyerType, CartContent, CartSnapshot, Channel, CheckoutContext, LineItem, Merchant, Totals,
    MAX_ITEMS, MAX_QUANTITY, MAX_REFS,
};
pub use usage::{LoopLimit, ResourcePayments, Usage, UsageSpec, WindowUsage};

/// Canonical JSON bytes of a snapshot's content (what its id hashes); for tooling and tests.
pub fn snapshot_canonical_json(snapshot: &CartSnapshot) -> Vec<u8> {
    snapshot.canonical_json()
}

/// Canonical JSON bytes of a request (what its digest hashes).
pub fn request_canonical_json(request: &PaymentRequest) -> Vec<u8> {
    canonical::canonical_bytes(request)
}
