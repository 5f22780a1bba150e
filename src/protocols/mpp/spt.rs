//! The Stripe charge method's credential, issued for real: a [`ChallengeResponder`] that asks
//! Stripe for a shared payment token (`POST /v1/shared_payment/issued_tokens`) whose usage
//! limits are the challenge's [`Grant`].
//!
//! | form field | value |
//! |---|---|
//! | `payment_method` | the buyer's payment method (`pm_...`), resolved through the vault from the grant's credential |
//! | `usage_limits[currency]` | the grant's currency, lower case |
//! | `usage_limits[max_amount]` | the grant's maximum, in minor units |
//! | `usage_limits[expires_at]` | the grant's expiry, unix seconds |
//! | `seller_details[network_id]` | the challenge's `methodDetails.networkId` |
//!
//! The request carries `Idempotency-Key: mpp-spt-` + 48 hex digits of the SHA-256 of the
//! challenge's realm and id, so asking again for the same challenge returns the same token.
//!
//! Before anything is sent the grant is checked against the challenge: the same id and
//! currency, a maximum of at most the challenge's amount, an expiry after now and at most the
//! challenge's, the challenge's network id; a grant wider than the challenge is refused with
//! [`ResponderError::Grant`] and nothing is issued. (The grant is already within the mandate:
//! the engine decided the amount and [`Grant::for_offer`] caps the expiry at the mandate's.)
//!
//! Errors are classified by the Stripe adapter's table ([`crate::adapters::http::classify`]):
//! a 4xx or a card error is [`ResponderError::Refused`], a 429 or a request never sent
//! [`ResponderError::Transient`], a 5xx, 408, 409, an `idempotency_error`, a timeout after
//! sending or an unreadable 2xx [`ResponderError::Ambiguous`] (a token may exist: the engine
//! keeps the hold). The API key and the payment method never appear in `Debug` or an error.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use sha2::{Digest as _, Sha256};

use super::challenge::Challenge;
use super::credential::Payload;
use super::payer::short;
use super::respond::{ChallengeResponder, Grant, IssuedToken, ResponderError};
use crate::adapters::http::classify::{classify, sanitize, Answer};
use crate::adapters::http::{
    stripe_client, stripe_send, stripe_url, Form, StripeCall, StripeConfig, StripeConfigError,
    StripeError,
};
use crate::ports::{Clock, CredentialKind, CredentialVault, ProviderError};
use crate::protocols::asset::{money_from_base_units, AssetRegistry};

/// The longest shared payment token id accepted from the issuer.
const MAX_TOKEN_LEN: usize = 255;

/// Issues Stripe shared payment tokens for `stripe` challenges (see the module docs).
pub struct StripeSptResponder {
    client: reqwest::Client,
    config: StripeConfig,
    vault: Arc<dyn CredentialVault>,
    clock: Arc<dyn Clock>,
    issued: Mutex<HashMap<String, IssuedToken>>,
}

impl fmt::Debug for StripeSptResponder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StripeSptResponder")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl StripeSptResponder {
    /// A responder calling the API of `config` (its base URL, key, timeouts and
    /// `Stripe-Version`), resolving payment methods through `vault` at the `clock`'s time.
    pub fn new(
        config: StripeConfig,
        vault: Arc<dyn CredentialVault>,
        clock: Arc<dyn Clock>,
    ) -> Result<StripeSptResponder, StripeConfigError> {
        Ok(StripeSptResponder {
            client: stripe_client(&config)?,
            config,
            vault,
            clock,
            issued: Mutex::new(HashMap::new()),
        })
    }

    /// The idempotency key of issuing a token for `challenge`.
    pub fn key_for(challenge: &Challenge) -> String {
        let h = hex::encode(Sha256::digest(
            format!("{}\n{}", challenge.realm(), challenge.id()).as_bytes(),
        ));
        format!("mpp-spt-{}", &h[..48])
    }

    fn issued(&self) -> std::sync::MutexGuard<'_, HashMap<String, IssuedToken>> {
        self.issued
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn grant_error(field: &'static str, reason: impl Into<String>) -> ResponderError {
    ResponderError::Grant {
        field,
        reason: reason.into(),
    }
}

/// The challenge's network id (`methodDetails.networkId`).
fn network_id(challenge: &Challenge) -> Option<&str> {
    challenge
        .request()
        .get("methodDetails")
        .and_then(|d| d.get("networkId"))
        .and_then(serde_json::Value::as_str)
}

/// Refuses a grant wider than `challenge` or expired at `now`.
pub(crate) fn check_grant(
    challenge: &Challenge,
    grant: &Grant,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<(), ResponderError> {
    if grant.challenge_id != challenge.id() {
        return Err(grant_error(
            "challenge_id",
            "the grant is for another challenge",
        ));
    }
    let charge = challenge
        .charge()
        .map_err(|e| grant_error("request", e.to_string()))?;
    let asset = AssetRegistry::new()
        .currency(challenge.method(), &charge.currency)
        .map_err(|e| grant_error("currency", e.to_string()))?;
    let amount = money_from_base_units("amount", &charge.amount, asset.currency, asset.decimals)
        .map_err(|e| grant_error("amount", e.to_string()))?;
    if grant.currency != amount.currency() || grant.max_amount.currency() != amount.currency() {
        return Err(grant_error(
            "currency",
            format!(
                "the grant is in {}, the challenge in {}",
                grant.max_amount.currency().code(),
                amount.currency().code()
            ),
        ));
    }
    if grant.max_amount.minor_units() <= 0 {
        return Err(grant_error("max_amount", "must be more than zero"));
    }
    if grant.max_amount.minor_units() > amount.minor_units() {
        return Err(grant_error(
            "max_amount",
            format!("{} is more than the challenge's {amount}", grant.max_amount),
        ));
    }
    if grant.expires_at <= now {
        return Err(grant_error("expires_at", "the grant has expired"));
    }
    if let Some(expires) = challenge.expires_at()
        && grant.expires_at > expires
    {
        return Err(grant_error(
            "expires_at",
            "the grant outlives the challenge's expiry",
        ));
    }
    match (network_id(challenge), grant.network_id.as_deref()) {
        (Some(c), Some(g)) if c == g => Ok(()),
        (None, _) => Err(grant_error(
            "network_id",
            "the challenge names no seller network profile (methodDetails.networkId): a token without seller details could be used by any seller",
        )),
        _ => Err(grant_error(
            "network_id",
            "the grant's seller differs from the challenge's",
        )),
    }
}

fn classified(e: StripeError) -> ResponderError {
    match ProviderError::from(e) {
        ProviderError::Transient { message, .. } => ResponderError::Transient { reason: message },
        ProviderError::Ambiguous { message } => ResponderError::Ambiguous { reason: message },
        other => ResponderError::Refused {
            reason: other.to_string(),
        },
    }
}

#[derive(serde::Deserialize)]
struct IssuedTokenJson {
    id: String,
}

#[async_trait]
impl ChallengeResponder for StripeSptResponder {
    fn method(&self) -> &str {
        "stripe"
    }

    async fn respond(
        &self,
        challenge: &Challenge,
        grant: &Grant,
    ) -> Result<IssuedToken, ResponderError> {
        if challenge.method() != "stripe" {
            return Err(ResponderError::Method {
                method: challenge.method().to_owned(),
            });
        }
        let now = self.clock.now();
        check_grant(challenge, grant, now)?;
        let book_key = format!("{}\n{}", challenge.realm(), challenge.id());
        if let Some(token) = self.issued().get(&book_key) {
            return Ok(token.clone());
        }
        let call = StripeCall::IssueToken;
        let reference = grant
            .credential
            .as_ref()
            .ok_or_else(|| grant_error("credential", "no payment credential in the grant"))?;
        let credential = self
            .vault
            .resolve(reference, now)
            .await
            .map_err(|e| match e {
                crate::ports::VaultError::Unavailable { message } => {
                    ResponderError::Transient { reason: message }
                }
                other => ResponderError::Refused {
                    reason: other.to_string(),
                },
            })?;
        if credential.stored.kind != CredentialKind::PaymentMethod {
            return Err(ResponderError::Refused {
                reason: format!(
                    "{reference}: a {:?} credential; a shared payment token is issued on a payment method (pm_...)",
                    credential.stored.kind
                ),
            });
        }
        let pm = credential.secret.expose();
        let network = grant.network_id.clone().unwrap_or_default();
        let form: Form = vec![
            ("payment_method".into(), pm.to_owned()),
            (
                "usage_limits[currency]".into(),
                grant.currency.code().to_ascii_lowercase(),
            ),
            (
                "usage_limits[max_amount]".into(),
                grant.max_amount.minor_units().to_string(),
            ),
            (
                "usage_limits[expires_at]".into(),
                grant.expires_at.timestamp().to_string(),
            ),
            ("seller_details[network_id]".into(), network),
        ];
        let url = stripe_url(&self.config, &["v1", "shared_payment", "issued_tokens"])
            .map_err(classified)?;
        let key = StripeSptResponder::key_for(challenge);
        let (status, retry_after, body) = stripe_send(
            &self.client,
            &self.config,
            call,
            reqwest::Method::POST,
            url,
            Some(&key),
            Some(&form),
        )
        .await
        .map_err(classified)?;
        let id = match classify(call, status, retry_after.as_deref(), &body, Some(pm)) {
            Answer::Success(body) => serde_json::from_slice::<IssuedTokenJson>(body)
                .ok()
                .map(|t| t.id)
                .filter(|id| {
                    !id.is_empty()
                        && id.len() <= MAX_TOKEN_LEN
                        && id.bytes().all(|b| b.is_ascii_graphic())
                })
                .ok_or_else(|| {
                    classified(StripeError::MalformedBody {
                        call,
                        status,
                        detail: "issued token: no usable `id`".into(),
                    })
                })?,
            Answer::Card(error) | Answer::NotFound(error) => {
                return Err(ResponderError::Refused {
                    reason: format!(
                        "HTTP {status}, code {:?}: {}",
                        error.code,
                        sanitize(error.message.as_deref().unwrap_or(""), Some(pm))
                    ),
                })
            }
            Answer::Failed(e) => return Err(classified(e)),
        };
        let mut payload = serde_json::Map::new();
        payload.insert("spt".into(), id.clone().into());
        let token = IssuedToken {
            reference: format!("spt-{}", short(&id)),
            payload: Payload::new(payload),
        };
        Ok(self.issued().entry(book_key).or_insert(token).clone())
    }
}
