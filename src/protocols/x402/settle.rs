//! The x402 seller settles a verified payload through its engine: single use of the payload's
//! authorization (a store operation), then a payment decided, executed by the
//! [`FacilitatorProvider`] (the engine's payment provider: `POST /settle`) and audited like any
//! other.
//!
//! As for MPP's `EngineSettler`, the authority the payload carries (a signed authorization for
//! exactly the requirement's amount) becomes a single-use mandate of the seller's system actor
//! at the resource's host for exactly that amount, valid for the requirement's
//! `maxTimeoutSeconds`; the payload goes to the vault; the payment is executed with capture
//! under a key derived from the payload: the same payload again is a replay (one settlement),
//! another payload for the same authorization nonce is refused.

use std::sync::Arc;
use std::time::Duration as StdDuration;

use async_trait::async_trait;
use chrono::{Datelike, Duration};
use sha2::{Digest as _, Sha256};

use super::facilitator::{Facilitator, FacilitatorError};
use super::{PaymentPayload, PaymentRequirements, SettlementResponse};
use crate::domain::{
    Actor, AttemptStatus, BuyerId, CartBinding, CheckoutId, CheckoutState, ContentDigest,
    IdempotencyKey, Lifecycle, MandateId, MandateScope, MandateSpec, MandateStatus, Money,
    PaymentAction, PaymentRequest, Principal, ProviderRef, ProviderReport, ProviderStatus,
    Validity,
};
use crate::engine::{CreateMandate, Engine, ExecutePayment, PaymentOutcome};
use crate::ports::{
    AuthorizeRequest, CaptureRequest, ChallengeConsumed, ChallengeUse, Clock, CredentialDisplay,
    CredentialKind, CredentialVault, FundingType, Lookup, NewCredential, PaymentProvider,
    ProviderError, RefundRequest, Secret, VoidRequest,
};
use crate::protocols::asset::AssetRegistry;
use crate::protocols::charge::ChargeContext;

/// Why a verified payload was not settled.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum X402SettleError {
    /// The payload's authorization was used before by another payload (single use).
    #[error("the authorization was used before")]
    Replayed,
    /// The requirement cannot be stated in the seller's terms, or the settlement failed.
    #[error("not settled: {reason}")]
    NotSettled {
        /// Why (no payload material).
        reason: String,
    },
    /// The store or the facilitator is unavailable: retry later.
    #[error("settlement unavailable: {reason}")]
    Unavailable {
        /// Why.
        reason: String,
    },
}

fn not_settled(e: impl std::fmt::Display) -> X402SettleError {
    X402SettleError::NotSettled {
        reason: e.to_string(),
    }
}

fn unavailable(e: impl std::fmt::Display) -> X402SettleError {
    X402SettleError::Unavailable {
        reason: e.to_string(),
    }
}

/// What the vault keeps for a settlement: the payload and the requirement it pays.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Stored {
    payment_payload: PaymentPayload,
    payment_requirements: PaymentRequirements,
}

/// The identity of a payload's authorization: the EVM authorization's network, payer and
/// nonce when present, else the whole scheme payload.
fn authorization_id(payload: &PaymentPayload) -> String {
    let auth = payload.payload.get("authorization");
    let nonce = auth.and_then(|a| a.get("nonce")).and_then(|n| n.as_str());
    let from = auth.and_then(|a| a.get("from")).and_then(|n| n.as_str());
    let basis = match (nonce, from) {
        (Some(n), Some(f)) => format!(
            "{}\n{}\n{}",
            payload.accepted.network,
            f.to_ascii_lowercase(),
            n.to_ascii_lowercase()
        ),
        _ => serde_json::Value::Object(payload.payload.clone()).to_string(),
    };
    format!("x402:{}", hex::encode(Sha256::digest(basis.as_bytes())))
}

/// Settles verified x402 payloads through the seller's engine.
#[derive(Debug, Clone)]
pub struct X402EngineSettler {
    engine: Engine,
    seller: Actor,
    context: ChargeContext,
    assets: AssetRegistry,
}

impl X402EngineSettler {
    /// A settler running `engine` (whose payment provider is a [`FacilitatorProvider`]) as the
    /// system actor `seller`, for the assets the seller registered.
    pub fn new(
        engine: Engine,
        seller: Actor,
        context: ChargeContext,
        assets: AssetRegistry,
    ) -> X402EngineSettler {
        X402EngineSettler {
            engine,
            seller,
            context,
            assets,
        }
    }

    /// Settles `payload` for `requirement` (the route's, already matched and verified) of the
    /// resource at `resource`: the settlement response to send as `PAYMENT-RESPONSE`.
    pub async fn settle(
        &self,
        payload: &PaymentPayload,
        requirement: &PaymentRequirements,
        resource: &str,
    ) -> Result<SettlementResponse, X402SettleError> {
        let now = self.engine.ports().clock.now();
        let stored = Stored {
            payment_payload: payload.clone(),
            payment_requirements: requirement.clone(),
        };
        let secret = serde_json::to_string(&stored).map_err(not_settled)?;
        let hash = hex::encode(Sha256::digest(secret.as_bytes()));
        let hash = &hash[..40];

        // 1. Single use of the authorization.
        let timeout = Duration::seconds(
            i64::try_from(requirement.max_timeout_seconds).unwrap_or(i64::MAX / 2),
        );
        let consumed = self
            .engine
            .ports()
            .store
            .consume_challenge(&ChallengeUse {
                challenge_id: authorization_id(payload),
                credential: ContentDigest::from_bytes(Sha256::digest(secret.as_bytes()).into()),
                expires_at: now + timeout,
            })
            .await
            .map_err(unavailable)?;
        if consumed == ChallengeConsumed::Used {
            return Err(X402SettleError::Replayed);
        }

        // 2. The requirement in the seller's terms.
        let offer = requirement
            .offer(&self.assets, resource, None, now)
            .map_err(not_settled)?;
        let amount = offer.amount;
        let snapshot = offer.cart(&self.context, now).map_err(not_settled)?;
        let principal = Principal::System(self.seller.id.clone());
        let buyer = BuyerId::new(format!("x402-payer-{}", &hash[..16])).map_err(not_settled)?;
        let mandate_id = MandateId::new(format!("x402-{hash}")).map_err(not_settled)?;
        let key =
            |prefix: &str| IdempotencyKey::new(format!("{prefix}{hash}")).map_err(not_settled);
        let expires = snapshot.expires_at();
        let spec = MandateSpec {
            id: mandate_id.clone(),
            buyer_id: buyer.clone(),
            actor: self.seller.clone(),
            parent_id: None,
            scope: MandateScope {
                mccs: Some(vec![self.context.mcc]),
                ..MandateScope::one_payment(
                    offer.merchant_id.clone(),
                    CartBinding::Snapshot {
                        snapshot_id: snapshot.id(),
                    },
                    amount,
                    Validity {
                        not_before: now,
                        expires_at: expires,
                    },
                )
            },
            lifecycle: Lifecycle::new(MandateStatus::Active, now),
            evidence_refs: Vec::new(),
        };
        self.engine
            .create_mandate(
                &principal,
                &CreateMandate {
                    key: key("x402-m-")?,
                    spec,
                },
            )
            .await
            .map_err(not_settled)?;
        let credential = self
            .engine
            .store_credential(
                &principal,
                &key("x402-c-")?,
                NewCredential {
                    kind: CredentialKind::SharedPaymentToken,
                    owner: self.seller.id.clone(),
                    buyer_id: buyer.clone(),
                    secret: Secret::new(secret),
                    cvc: None,
                    display: CredentialDisplay {
                        brand: "x402".into(),
                        last4: format!(
                            "{:04}",
                            u16::from_str_radix(&hash[..4], 16).unwrap_or(0) % 10_000
                        ),
                        exp_month: u8::try_from(expires.month()).unwrap_or(12),
                        exp_year: u16::try_from(expires.year()).unwrap_or(2199),
                        funding: FundingType::Unknown,
                    },
                },
            )
            .await
            .map_err(not_settled)?;
        self.engine
            .ports()
            .store
            .put_snapshot(&snapshot)
            .await
            .map_err(unavailable)?;
        let command = ExecutePayment {
            key: key("x402-s-")?,
            request: PaymentRequest {
                actor: self.seller.clone(),
                buyer_id: buyer,
                mandate_id,
                action: PaymentAction::Authorize,
                merchant_id: offer.merchant_id.clone(),
                snapshot_id: snapshot.id(),
                amount,
                urgency: None,
            },
            checkout: CheckoutState::Valid {
                checkout_id: CheckoutId::new(format!("x402-{hash}")).map_err(not_settled)?,
                snapshot_id: snapshot.id(),
            },
            snapshot,
            credential: credential.value.reference,
            capture: true,
            intent: None,
            declaration: None,
        };
        let outcome = self
            .engine
            .execute_payment(&principal, &command)
            .await
            .map_err(unavailable)?;
        let attempt = match outcome {
            PaymentOutcome::Refused(d) => {
                return Err(not_settled(format!("refused: {:?}", d.codes())))
            }
            PaymentOutcome::Done { attempt, .. }
            | PaymentOutcome::Replayed { attempt }
            | PaymentOutcome::Scheduled { attempt, .. } => attempt,
        };
        match (attempt.status, &attempt.provider_ref) {
            (AttemptStatus::Captured, Some(tx)) => Ok(SettlementResponse {
                success: true,
                error_reason: None,
                payer: payload
                    .payload
                    .get("authorization")
                    .and_then(|a| a.get("from"))
                    .and_then(|f| f.as_str())
                    .map(str::to_owned),
                transaction: tx.as_str().to_owned(),
                network: requirement.network.clone(),
                amount: Some(requirement.amount.clone()),
                extensions: None,
            }),
            (AttemptStatus::Ambiguous, _) => Err(unavailable(format!(
                "payment {} is ambiguous: the transfer may have been broadcast; the hold stays until it is resolved",
                attempt.id
            ))),
            (status, _) => Err(not_settled(format!(
                "payment {} is {status:?} ({})",
                attempt.id,
                attempt.decline_code.as_deref().unwrap_or("no reason")
            ))),
        }
    }
}

/// The seller engine's payment provider for x402: an authorization settles the payload kept
/// in the vault through the facilitator (`POST /settle`), captured at once; a failed
/// settlement (`success: false`) is a decline with its `errorReason`. Capture, void and refund
/// are refused (an on-chain transfer is not taken back here), and a lookup finds nothing (the
/// chain is not read): an ambiguous settlement stays ambiguous, with its hold, for an operator.
#[derive(Debug)]
pub struct FacilitatorProvider {
    facilitator: Arc<dyn Facilitator>,
    vault: Arc<dyn CredentialVault>,
    clock: Arc<dyn Clock>,
    deadline: StdDuration,
}

impl FacilitatorProvider {
    /// A provider settling through `facilitator`, reading payloads from `vault`; its deadline
    /// is 20 s (set the HTTP facilitator's timeouts below it).
    pub fn new(
        facilitator: Arc<dyn Facilitator>,
        vault: Arc<dyn CredentialVault>,
        clock: Arc<dyn Clock>,
    ) -> FacilitatorProvider {
        FacilitatorProvider {
            facilitator,
            vault,
            clock,
            deadline: StdDuration::from_secs(20),
        }
    }

    /// The deadline the engine gives a settlement (the engine's lease must exceed it).
    pub fn with_deadline(mut self, deadline: StdDuration) -> FacilitatorProvider {
        self.deadline = deadline;
        self
    }
}

fn invalid(e: impl std::fmt::Display) -> ProviderError {
    ProviderError::Invalid {
        message: e.to_string(),
    }
}

#[async_trait]
impl PaymentProvider for FacilitatorProvider {
    fn deadline(&self) -> StdDuration {
        self.deadline
    }

    async fn authorize(&self, request: &AuthorizeRequest) -> Result<ProviderReport, ProviderError> {
        let credential = self
            .vault
            .resolve(&request.credential, self.clock.now())
            .await
            .map_err(invalid)?;
        let stored: Stored = serde_json::from_str(credential.secret.expose())
            .map_err(|_| invalid("the vault credential is not an x402 payload"))?;
        let settled = self
            .facilitator
            .settle(&stored.payment_payload, &stored.payment_requirements)
            .await
            .map_err(|e| match e {
                FacilitatorError::Ambiguous { .. } => ProviderError::Ambiguous {
                    message: e.to_string(),
                },
                FacilitatorError::Transient { .. } => ProviderError::Transient {
                    message: e.to_string(),
                    retry_after: None,
                },
                other => invalid(other),
            })?;
        let zero = Money::zero(request.amount.currency());
        if !settled.success {
            return Ok(ProviderReport {
                reference: None,
                status: ProviderStatus::Declined,
                authorized: zero,
                captured: zero,
                refunded: zero,
                decline_code: Some(
                    settled
                        .error_reason
                        .unwrap_or_else(|| "unexpected_settle_error".into())
                        .chars()
                        .take(64)
                        .collect(),
                ),
            });
        }
        Ok(ProviderReport {
            reference: Some(ProviderRef::new(&settled.transaction).map_err(invalid)?),
            status: ProviderStatus::Captured,
            authorized: request.amount,
            captured: request.amount,
            refunded: zero,
            decline_code: None,
        })
    }

    async fn capture(&self, _: &CaptureRequest) -> Result<ProviderReport, ProviderError> {
        Err(invalid("an x402 settlement is captured when settled"))
    }

    async fn void(&self, _: &VoidRequest) -> Result<ProviderReport, ProviderError> {
        Err(invalid("an on-chain transfer cannot be voided"))
    }

    async fn refund(&self, _: &RefundRequest) -> Result<ProviderReport, ProviderError> {
        Err(invalid("x402 refunds are not supported"))
    }

    async fn lookup(&self, _: &Lookup) -> Result<Option<ProviderReport>, ProviderError> {
        Ok(None)
    }
}
