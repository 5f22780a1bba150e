//! Producing a credential for a challenge the mandate allowed: the [`ChallengeResponder`] port.
//!
//! For the Stripe charge method the agent issues a shared payment token (SPT) whose usage
//! limits are a [`Grant`]: the currency and the maximum amount are the challenge's (already
//! decided under the mandate), the expiry is the earlier of the challenge's and the mandate's,
//! and the seller details are the challenge's Stripe network id. Never wider than either.

use std::fmt;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::challenge::Challenge;
use super::credential::Payload;
use crate::domain::{CredentialRef, Currency, Money};
use crate::protocols::charge::ChargeOffer;

/// The usage limits of a token issued for one challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The challenge answered.
    pub challenge_id: String,
    /// The only currency the token can be used in.
    pub currency: Currency,
    /// The most the seller can charge with it: the challenge's amount.
    pub max_amount: Money,
    /// When the token stops working: the earlier of the challenge's and the mandate's expiry.
    pub expires_at: DateTime<Utc>,
    /// The seller's Stripe network profile (`methodDetails.networkId`), when the challenge
    /// names one.
    pub network_id: Option<String>,
    /// The buyer's payment credential in the vault behind the token (the engine's
    /// authorization sets it; `None` outside the engine).
    pub credential: Option<CredentialRef>,
}

impl Grant {
    /// The grant for `offer` (from `challenge`) under a mandate valid until `mandate_expires`.
    pub fn for_offer(
        challenge: &Challenge,
        offer: &ChargeOffer,
        mandate_expires: DateTime<Utc>,
    ) -> Grant {
        let expires_at = match offer.expires_at {
            Some(e) if e < mandate_expires => e,
            _ => mandate_expires,
        };
        let network_id = challenge
            .request()
            .get("methodDetails")
            .and_then(|d| d.get("networkId"))
            .and_then(serde_json::Value::as_str)
            .map(str::to_owned);
        Grant {
            challenge_id: challenge.id().to_owned(),
            currency: offer.amount.currency(),
            max_amount: offer.amount,
            expires_at,
            network_id,
            credential: None,
        }
    }
}

/// Why no credential was produced. Retry classification: [`ResponderError::Transient`] may be
/// retried; the others are definitive.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ResponderError {
    /// The method is not this responder's.
    #[error("payment method {method:?} is not handled by this responder")]
    Method {
        /// The method.
        method: String,
    },
    /// The grant is wider than the challenge (another currency, a larger amount, a later
    /// expiry, another seller) or has expired: nothing was asked of the issuer.
    #[error("the grant is not within the challenge: {field}: {reason}")]
    Grant {
        /// The grant's field.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// The issuer refused (no funds behind the payment method, revoked, ...).
    #[error("the token issuer refused: {reason}")]
    Refused {
        /// Why (no secret material).
        reason: String,
    },
    /// A failure worth retrying: the issuer did not process the request.
    #[error("the token issuer failed transiently: {reason}")]
    Transient {
        /// Why.
        reason: String,
    },
    /// The request may have been processed (a 5xx, a timeout after sending): a token may
    /// exist. The engine keeps the hold; asking again with the same idempotency key returns
    /// the same token, never a second one.
    #[error("the token issuer's outcome is unknown: {reason}")]
    Ambiguous {
        /// Why.
        reason: String,
    },
}

/// A token issued for a challenge: a reference safe to record (audit, attempt) and the
/// credential payload, which is a secret.
#[derive(Clone)]
pub struct IssuedToken {
    /// A reference to the token that reveals nothing of it.
    pub reference: String,
    /// The credential payload (Stripe: `{"spt": ...}`).
    pub payload: Payload,
}

impl fmt::Debug for IssuedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedToken")
            .field("reference", &self.reference)
            .field("payload", &self.payload)
            .finish()
    }
}

/// Produces the credential payload for a challenge under a grant (the Stripe method: issue an
/// SPT with the grant as usage limits). Implementations must be idempotent per challenge id:
/// asked again for the same challenge they return the same token, never a second one.
#[async_trait]
pub trait ChallengeResponder: Send + Sync + fmt::Debug {
    /// The payment method this responder answers (`stripe`).
    fn method(&self) -> &str;

    /// The token for `challenge` within `grant`.
    async fn respond(
        &self,
        challenge: &Challenge,
        grant: &Grant,
    ) -> Result<IssuedToken, ResponderError>;
}
