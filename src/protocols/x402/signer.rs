//! Producing the scheme payload of a `PAYMENT-SIGNATURE` for a requirement the mandate
//! allowed: the [`X402Signer`] port, its [`X402Grant`] and a test double.
//!
//! For the `exact` scheme on an EVM network the payload is an EIP-3009
//! `transferWithAuthorization` authorization and its EIP-712 signature; the grant fixes every
//! field of it: `to` is the requirement's `payTo`, `value` exactly its `amount` of its `asset`
//! on its `network`, and the validity window runs from the decision to the earlier of the
//! requirement's `maxTimeoutSeconds` and the mandate's expiry. A signer refuses a grant that is
//! not exactly its requirement, or has expired ([`check_grant`]).

use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;

use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};
use sha2::{Digest as _, Sha256};

use super::PaymentRequirements;
use crate::domain::Money;
use crate::protocols::charge::ChargeOffer;

/// What one signature may authorize: exactly one requirement, within the mandate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct X402Grant {
    /// The payment's identity (the offer's, or the offer's and the caller's call id).
    pub payment_id: String,
    /// The scheme (`exact`).
    pub scheme: String,
    /// The CAIP-2 network.
    pub network: String,
    /// The asset (token address).
    pub asset: String,
    /// The recipient.
    pub pay_to: String,
    /// The amount in the asset's atomic units: exactly the requirement's.
    pub amount: String,
    /// The same amount in the mandate's currency (what the engine decided and held).
    pub money: Money,
    /// Not valid before: the time of the decision.
    pub valid_after: DateTime<Utc>,
    /// Not valid from: the earlier of the requirement's timeout and the mandate's expiry.
    pub valid_before: DateTime<Utc>,
}

impl X402Grant {
    /// The grant for `accepted` (stated as `offer`) decided at `now`, under a mandate valid
    /// until `mandate_expires`.
    pub fn for_offer(
        payment_id: &str,
        accepted: &PaymentRequirements,
        offer: &ChargeOffer,
        now: DateTime<Utc>,
        mandate_expires: DateTime<Utc>,
    ) -> X402Grant {
        let timeout = i64::try_from(accepted.max_timeout_seconds).unwrap_or(i64::MAX);
        let by_offer = offer
            .expires_at
            .unwrap_or_else(|| now + Duration::seconds(timeout));
        X402Grant {
            payment_id: payment_id.to_owned(),
            scheme: accepted.scheme.clone(),
            network: accepted.network.clone(),
            asset: accepted.asset.clone(),
            pay_to: accepted.pay_to.clone(),
            amount: accepted.amount.clone(),
            money: offer.amount,
            valid_after: now,
            valid_before: by_offer.min(mandate_expires),
        }
    }
}

/// Why no signature was produced. [`SignerError::Transient`] may be retried; the others are
/// definitive.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignerError {
    /// The scheme or network is not this signer's.
    #[error("scheme {scheme:?} on {network:?} is not handled by this signer")]
    Unsupported {
        /// The scheme.
        scheme: String,
        /// The network.
        network: String,
    },
    /// The grant is not exactly the requirement (another network, asset, recipient or
    /// amount), its window is wider than the requirement allows, or it has expired: nothing
    /// was signed.
    #[error("the grant is not within the requirement: {field}: {reason}")]
    Grant {
        /// The grant's field.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// The signer refused (key unavailable, policy).
    #[error("the signer refused: {reason}")]
    Refused {
        /// Why (no key material).
        reason: String,
    },
    /// A failure worth retrying (a remote signer unreachable).
    #[error("the signer failed transiently: {reason}")]
    Transient {
        /// Why.
        reason: String,
    },
}

/// A signed scheme payload: a reference safe to record and the payload (a bearer
/// authorization: never printed).
#[derive(Clone, PartialEq, Eq)]
pub struct SignedPayload {
    /// A reference that reveals nothing of the signature.
    pub reference: String,
    /// The scheme payload (`exact` on EVM: `signature` and `authorization`).
    pub payload: serde_json::Map<String, serde_json::Value>,
}

impl fmt::Debug for SignedPayload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignedPayload")
            .field("reference", &self.reference)
            .field("payload", &"<redacted>")
            .finish()
    }
}

/// Produces the scheme payload for a requirement within a grant. Implementations must be
/// idempotent per [`X402Grant::payment_id`]: asked again, they return the same payload.
#[async_trait]
pub trait X402Signer: Send + Sync + fmt::Debug {
    /// Whether it can sign for `requirement` (its scheme and network).
    fn accepts(&self, requirement: &PaymentRequirements) -> bool;

    /// The scheme payload for `accepted` within `grant`.
    async fn sign(
        &self,
        accepted: &PaymentRequirements,
        grant: &X402Grant,
    ) -> Result<SignedPayload, SignerError>;
}

fn grant_error(field: &'static str, reason: &str) -> SignerError {
    SignerError::Grant {
        field,
        reason: reason.to_owned(),
    }
}

fn same_asset(a: &str, b: &str) -> bool {
    if a.starts_with("0x") || a.starts_with("0X") {
        a.eq_ignore_ascii_case(b)
    } else {
        a == b
    }
}

/// Refuses a grant that is not exactly `accepted` (scheme, network, asset, recipient, amount),
/// whose window is empty, longer than the requirement's `maxTimeoutSeconds`, or over at `now`.
pub fn check_grant(
    accepted: &PaymentRequirements,
    grant: &X402Grant,
    now: DateTime<Utc>,
) -> Result<(), SignerError> {
    if grant.scheme != accepted.scheme {
        return Err(grant_error("scheme", "differs from the requirement's"));
    }
    if grant.network != accepted.network {
        return Err(grant_error("network", "differs from the requirement's"));
    }
    if !same_asset(&grant.asset, &accepted.asset) {
        return Err(grant_error("asset", "differs from the requirement's"));
    }
    if !same_asset(&grant.pay_to, &accepted.pay_to) {
        return Err(grant_error("payTo", "differs from the requirement's"));
    }
    if grant.amount != accepted.amount {
        return Err(grant_error(
            "amount",
            "the exact scheme pays exactly the requirement's amount",
        ));
    }
    if grant.valid_before <= grant.valid_after {
        return Err(grant_error("validBefore", "the window is empty"));
    }
    let timeout = i64::try_from(accepted.max_timeout_seconds).unwrap_or(i64::MAX);
    if grant.valid_before - grant.valid_after > Duration::seconds(timeout) {
        return Err(grant_error(
            "validBefore",
            "the window is longer than the requirement's maxTimeoutSeconds",
        ));
    }
    if grant.valid_before <= now {
        return Err(grant_error("validBefore", "the grant has expired"));
    }
    Ok(())
}

/// An [`X402Signer`] for tests: `exact` on the networks it is given, paying from `from`. Its
/// payload has the shape of an EIP-3009 authorization (`from`, `to`, `value`, `validAfter`,
/// `validBefore`, a `nonce` derived from the payment id) with a `signature` that is a hash,
/// not an EIP-712 signature: a seller that verifies signatures refuses it. Records every
/// grant; answers the same payment id with the same payload; can be told to fail.
pub struct FixedX402Signer {
    from: String,
    networks: Vec<String>,
    grants: Mutex<Vec<X402Grant>>,
    signed: Mutex<HashMap<String, SignedPayload>>,
    failure: Mutex<Option<SignerError>>,
}

impl fmt::Debug for FixedX402Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FixedX402Signer")
            .field("from", &self.from)
            .field("networks", &self.networks)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl FixedX402Signer {
    /// A signer paying from `from` on `networks`.
    pub fn new(from: &str, networks: &[&str]) -> FixedX402Signer {
        FixedX402Signer {
            from: from.to_owned(),
            networks: networks.iter().map(|n| (*n).to_owned()).collect(),
            grants: Mutex::new(Vec::new()),
            signed: Mutex::new(HashMap::new()),
            failure: Mutex::new(None),
        }
    }

    /// Every grant it was asked to sign, in order (also the refused ones).
    pub fn grants(&self) -> Vec<X402Grant> {
        lock(&self.grants).clone()
    }

    /// From now on every signing fails with `error` (`None`: signs again).
    pub fn fail_with(&self, error: Option<SignerError>) {
        *lock(&self.failure) = error;
    }
}

#[async_trait]
impl X402Signer for FixedX402Signer {
    fn accepts(&self, requirement: &PaymentRequirements) -> bool {
        requirement.scheme == "exact" && self.networks.contains(&requirement.network)
    }

    async fn sign(
        &self,
        accepted: &PaymentRequirements,
        grant: &X402Grant,
    ) -> Result<SignedPayload, SignerError> {
        lock(&self.grants).push(grant.clone());
        if !self.accepts(accepted) {
            return Err(SignerError::Unsupported {
                scheme: accepted.scheme.clone(),
                network: accepted.network.clone(),
            });
        }
        if let Some(e) = lock(&self.failure).clone() {
            return Err(e);
        }
        check_grant(accepted, grant, grant.valid_after)?;
        let mut signed = lock(&self.signed);
        let out = signed
            .entry(grant.payment_id.clone())
            .or_insert_with(|| {
                let nonce = format!(
                    "0x{}",
                    hex::encode(Sha256::digest(format!("nonce\n{}", grant.payment_id)))
                );
                let authorization = serde_json::json!({
                    "from": self.from,
                    "to": grant.pay_to,
                    "value": grant.amount,
                    "validAfter": grant.valid_after.timestamp().to_string(),
                    "validBefore": grant.valid_before.timestamp().to_string(),
                    "nonce": nonce,
                });
                let digest = Sha256::digest(authorization.to_string());
                let signature = format!(
                    "0x{}{}1b",
                    hex::encode(digest),
                    hex::encode(Sha256::digest(digest))
                );
                let mut payload = serde_json::Map::new();
                payload.insert("signature".into(), signature.into());
                payload.insert("authorization".into(), authorization);
                SignedPayload {
                    reference: format!("x402-sig-{}", &nonce[2..18]),
                    payload,
                }
            })
            .clone();
        Ok(out)
    }
}
