//! The payment service provider port.

use std::fmt::Debug;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::{
    AttemptId, BuyerId, CredentialRef, MerchantId, Money, ProviderKey, ProviderRef, ProviderReport,
    SnapshotId,
};

/// Authorize `amount` on a credential (and capture at once when `capture` is set).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthorizeRequest {
    /// The PSP idempotency key, derived from the attempt: a retry sends the same key.
    pub key: ProviderKey,
    /// The attempt (send it as metadata, for reconciliation).
    pub attempt_id: AttemptId,
    /// The amount, in the currency's minor units at the PSP.
    pub amount: Money,
    /// The credential; only the PSP adapter resolves it, through the vault.
    pub credential: CredentialRef,
    /// Capture in the same call.
    pub capture: bool,
    /// The snapshot paid for (metadata, for reconciliation and disputes).
    pub snapshot_id: SnapshotId,
    /// The merchant of record.
    pub merchant_id: MerchantId,
    /// The buyer.
    pub buyer_id: BuyerId,
}

/// Capture an authorization, fully or in part (the rest is released at the PSP).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaptureRequest {
    /// The PSP idempotency key for this capture.
    pub key: ProviderKey,
    /// The payment.
    pub reference: ProviderRef,
    /// The attempt.
    pub attempt_id: AttemptId,
    /// How much to capture.
    pub amount: Money,
}

/// Cancel an authorization before capture.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VoidRequest {
    /// The PSP idempotency key for this void.
    pub key: ProviderKey,
    /// The payment.
    pub reference: ProviderRef,
    /// The attempt.
    pub attempt_id: AttemptId,
}

/// Revoke the PSP's side of a scoped payment token (see
/// [`PaymentProvider::revokes_tokens`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevokeTokenRequest {
    /// The token.
    pub token_id: super::TokenId,
    /// The vault credential the token charges.
    pub credential: crate::domain::CredentialRef,
}

/// Refund a capture, fully or in part.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundRequest {
    /// The PSP idempotency key for this refund (each refund of an attempt has its own).
    pub key: ProviderKey,
    /// The payment.
    pub reference: ProviderRef,
    /// The attempt.
    pub attempt_id: AttemptId,
    /// How much.
    pub amount: Money,
}

/// How to find a payment at the PSP.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Lookup {
    /// By the PSP's reference.
    Reference(ProviderRef),
    /// By the idempotency key of its authorization (when the response was lost).
    Key(ProviderKey),
    /// By the idempotency key of its authorization, with the time the authorization with
    /// this key was last sent (by the caller's clock). An adapter whose PSP cannot find a
    /// payment by key directly may use the time to bound its search (the Stripe adapter lists
    /// only the PaymentIntents created in a window around it); any adapter may treat it
    /// exactly like [`Lookup::Key`].
    KeySubmitted {
        /// The authorization's idempotency key.
        key: ProviderKey,
        /// When the authorization with this key was last sent.
        submitted_at: DateTime<Utc>,
    },
}

impl Lookup {
    /// The authorization key, for the two lookups by key.
    pub fn key(&self) -> Option<&ProviderKey> {
        match self {
            Lookup::Reference(_) => None,
            Lookup::Key(key) | Lookup::KeySubmitted { key, .. } => Some(key),
        }
    }
}

/// A PSP call that did not produce a report. A decline is not an error: it is an `Ok` report
/// with [`crate::domain::ProviderStatus::Declined`] and the PSP's code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProviderError {
    /// The PSP refused the request as malformed or impossible (bad credential reference,
    /// capture of a cancelled payment...). Definitive: retrying the same request fails again.
    #[error("the PSP refused the request: {message}")]
    Invalid {
        /// The PSP's explanation (never a credential).
        message: String,
    },
    /// The PSP provably did not process the request: it was never sent (connection refused,
    /// DNS failure, connect timeout), or the PSP documents the answer as "not processed" (a
    /// 429 rate limit). The engine releases the hold on it, so never return it for an answer
    /// that came after the request may have reached the PSP (a 5xx from a gateway, a 409):
    /// that is `Ambiguous`. Safe to retry with the same key, after `retry_after` if given.
    #[error("the PSP is unavailable: {message}")]
    Transient {
        /// Why.
        message: String,
        /// When to retry, if the PSP said.
        retry_after: Option<Duration>,
    },
    /// The request may or may not have taken effect (timeout after sending, connection lost
    /// before the response, a 5xx or 409 answer, anything unexpected: the default whenever
    /// "not processed" is not proven). Money may have moved: never retry blindly, reconcile with
    /// [`PaymentProvider::lookup`]. The engine keeps the hold (I5).
    #[error("the PSP outcome is unknown: {message}")]
    Ambiguous {
        /// What happened.
        message: String,
    },
}

impl ProviderError {
    /// Whether the same request may be sent again with the same key.
    pub fn is_retryable(&self) -> bool {
        matches!(self, ProviderError::Transient { .. })
    }
}

/// A payment service provider.
///
/// Every mutating call carries a [`ProviderKey`]; an adapter must send it as the PSP's
/// idempotency key, so a second call with the same key returns the first call's result and
/// moves no money twice. Amounts are [`Money`] (convert with [`Money::minor_units`]).
/// Contract (checked by `testkit::payment_provider_conformance`): every report names a
/// reference once the PSP knows the payment; amounts are in the request's currency;
/// `lookup` of an unknown payment is `Ok(None)`; an unknown PSP
/// status is reported as `Unknown`, never mapped to a terminal one.
#[async_trait]
pub trait PaymentProvider: Send + Sync + Debug {
    /// The hard deadline of every call: the adapter answers (a report or an error) within
    /// this time of the call, whatever the network does (a timeout becomes `Ambiguous` for a
    /// mutating call). The engine refuses a configuration whose idempotency lease is not
    /// longer than this plus a margin (I13), and a PSP "not found" fails a submission only
    /// after this time (plus the margin) has passed since it was sent.
    fn deadline(&self) -> Duration;

    /// Authorizes (and captures, if asked). Retry semantics: `Transient` -> same request,
    /// same key; `Ambiguous` -> `lookup(Lookup::Key(key))` before anything else.
    async fn authorize(&self, request: &AuthorizeRequest) -> Result<ProviderReport, ProviderError>;

    /// Captures. Same retry semantics as `authorize`.
    async fn capture(&self, request: &CaptureRequest) -> Result<ProviderReport, ProviderError>;

    /// Voids. Same retry semantics as `authorize`.
    async fn void(&self, request: &VoidRequest) -> Result<ProviderReport, ProviderError>;

    /// Refunds. Same retry semantics as `authorize`.
    async fn refund(&self, request: &RefundRequest) -> Result<ProviderReport, ProviderError>;

    /// Reads the PSP's current view of a payment; `None` when the PSP has no such payment (it
    /// never received the authorization). Moves no money; always safe to retry.
    async fn lookup(&self, lookup: &Lookup) -> Result<Option<ProviderReport>, ProviderError>;

    /// Whether this PSP keeps a side of scoped payment tokens that
    /// [`PaymentProvider::revoke_token`] can revoke. `false` unless an adapter says otherwise:
    /// the token's own revocation (its record, mandate and vault credential) does not need it.
    fn revokes_tokens(&self) -> bool {
        false
    }

    /// Revokes the PSP's side of a token. Called only when
    /// [`PaymentProvider::revokes_tokens`] is `true`; the default answers `Invalid`.
    async fn revoke_token(&self, request: &RevokeTokenRequest) -> Result<(), ProviderError> {
        Err(ProviderError::Invalid {
            message: format!("this PSP cannot revoke token {}", request.token_id),
        })
    }
}
