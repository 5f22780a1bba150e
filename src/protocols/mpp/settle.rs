//! The seller settles a verified credential through the engine: single use of the challenge id
//! (a store operation), the terms, then a payment decided, held, executed by the
//! `PaymentProvider` port and audited like any other.
//!
//! The authority the credential carries (a shared payment token whose usage limits are at
//! most the challenge's amount, currency and expiry) becomes a single-use mandate of the
//! seller's system actor at the seller's merchant for exactly that amount, valid until the
//! challenge expires; the token goes to the vault; the payment is executed with capture under
//! the idempotency key derived from the challenge id and the credential
//! ([`Credential::settlement_key`](super::Credential::settlement_key)): a retry of the same
//! credential is a replay (one charge), another credential for a used id is refused.

use chrono::{Datelike, Duration};
use sha2::{Digest as _, Sha256};

use async_trait::async_trait;

use super::credential::Receipt;
use super::issuer::{ChargeTerms, Verified, VerifyError};
use super::payer::short;
use crate::domain::{
    Actor, ActorKind, AttemptStatus, BuyerId, CartBinding, CheckoutId, CheckoutState,
    ContentDigest, IdempotencyKey, Lifecycle, MandateId, MandateScope, MandateSpec, MandateStatus,
    MerchantId, PaymentAction, PaymentRequest, Principal, Validity,
};
use crate::engine::{CreateMandate, Engine, ExecutePayment, PaymentOutcome};
use crate::ports::{
    ChallengeConsumed, ChallengeUse, CredentialDisplay, CredentialKind, FundingType, NewCredential,
    Secret,
};
use crate::protocols::asset::AssetRegistry;
use crate::protocols::charge::{ChargeContext, ChargeOffer, Protocol};

use super::gate::{SettleError, Settler};

/// A [`Settler`] that runs every settlement through the seller's engine.
#[derive(Debug, Clone)]
pub struct EngineSettler {
    engine: Engine,
    seller: Actor,
    merchant_id: MerchantId,
    context: ChargeContext,
    resource: String,
    challenge_ttl: Duration,
    credential_kind: CredentialKind,
}

impl EngineSettler {
    /// A settler for the route `resource` at `merchant_id` (the realm), as the system actor
    /// `seller` (the host runs it as `Principal::System` of the same id); `challenge_ttl` is the
    /// issuer's (the snapshot of a settlement is dated at its challenge's issue).
    pub fn new(
        engine: Engine,
        seller: Actor,
        merchant_id: MerchantId,
        context: ChargeContext,
        resource: &str,
        challenge_ttl: Duration,
    ) -> EngineSettler {
        EngineSettler {
            engine,
            seller,
            merchant_id,
            context,
            resource: resource.to_owned(),
            challenge_ttl,
            credential_kind: CredentialKind::SharedPaymentToken,
        }
    }

    /// Stores the credential's token in the vault as `kind` (default: a shared payment
    /// token). A PSP adapter that charges only payment methods (the Stripe adapter against
    /// localstripe, which has no shared payment tokens) needs `PaymentMethod`.
    pub fn with_credential_kind(mut self, kind: CredentialKind) -> EngineSettler {
        self.credential_kind = kind;
        self
    }

    fn principal(&self) -> Principal {
        Principal::System(self.seller.id.clone())
    }
}

fn unavailable(e: impl std::fmt::Display) -> SettleError {
    SettleError::Unavailable {
        reason: e.to_string(),
    }
}

fn invalid(e: impl std::fmt::Display) -> SettleError {
    SettleError::NotPaid {
        reason: e.to_string(),
    }
}

fn key(prefix: &str, hash: &str) -> Result<IdempotencyKey, SettleError> {
    IdempotencyKey::new(format!("{prefix}{hash}")).map_err(invalid)
}

#[async_trait]
impl Settler for EngineSettler {
    async fn settle(
        &self,
        verified: &Verified,
        terms: &ChargeTerms,
    ) -> Result<Receipt, SettleError> {
        let credential = &verified.credential;
        let settlement_key = credential.settlement_key().map_err(VerifyError::from)?;
        let hash = settlement_key
            .as_str()
            .trim_start_matches("mpp-")
            .chars()
            .take(40)
            .collect::<String>();

        // 1. Single use of the challenge id.
        let digest =
            ContentDigest::from_bytes(Sha256::digest(settlement_key.as_str().as_bytes()).into());
        let consumed = self
            .engine
            .ports()
            .store
            .consume_challenge(&ChallengeUse {
                challenge_id: verified.challenge_id().to_owned(),
                credential: digest,
                expires_at: verified.expires_at,
            })
            .await
            .map_err(unavailable)?;
        if consumed == ChallengeConsumed::Used {
            return Err(VerifyError::Replayed.into());
        }

        // 2. The terms the route charges now.
        verified.check_terms(terms)?;
        let spt = credential
            .payload
            .str("spt")
            .filter(|s| !s.is_empty())
            .ok_or(VerifyError::Payload { field: "spt" })?;

        // 3. The payment, through the engine.
        let asset = AssetRegistry::new()
            .currency(&terms.method, &terms.request.currency)
            .map_err(invalid)?;
        let amount = crate::protocols::asset::money_from_base_units(
            "amount",
            &terms.request.amount,
            asset.currency,
            asset.decimals,
        )
        .map_err(invalid)?;
        let issued_at = verified.expires_at - self.challenge_ttl;
        let now = self.engine.ports().clock.now();
        let buyer = BuyerId::new(format!("mpp-payer-{}", short(spt))).map_err(invalid)?;
        let mandate_id = MandateId::new(format!("mpp-{hash}")).map_err(invalid)?;
        let offer = ChargeOffer {
            protocol: Protocol::Mpp,
            offer_id: verified.challenge_id().to_owned(),
            merchant_id: self.merchant_id.clone(),
            seller_id: None,
            amount,
            resource: self.resource.clone(),
            description: terms.description.clone(),
            expires_at: Some(verified.expires_at),
        };
        let snapshot = offer.cart(&self.context, issued_at).map_err(invalid)?;
        let principal = self.principal();

        let spec = MandateSpec {
            id: mandate_id.clone(),
            buyer_id: buyer.clone(),
            actor: self.seller.clone(),
            parent_id: None,
            scope: MandateScope {
                mccs: Some(vec![self.context.mcc]),
                ..MandateScope::one_payment(
                    self.merchant_id.clone(),
                    CartBinding::Snapshot {
                        snapshot_id: snapshot.id(),
                    },
                    amount,
                    Validity {
                        not_before: issued_at,
                        expires_at: verified.expires_at,
                    },
                )
            },
            lifecycle: Lifecycle::new(MandateStatus::Active, issued_at),
            evidence_refs: Vec::new(),
        };
        self.engine
            .create_mandate(
                &principal,
                &CreateMandate {
                    key: key("mpp-m-", &hash)?,
                    spec,
                },
            )
            .await
            .map_err(invalid)?;
        let exp = verified.expires_at;
        let stored = self
            .engine
            .store_credential(
                &principal,
                &key("mpp-c-", &hash)?,
                NewCredential {
                    kind: self.credential_kind,
                    owner: self.seller.id.clone(),
                    buyer_id: buyer.clone(),
                    secret: Secret::new(spt),
                    cvc: None,
                    display: CredentialDisplay {
                        brand: "spt".into(),
                        last4: last4(spt),
                        exp_month: u8::try_from(exp.month()).unwrap_or(12),
                        exp_year: u16::try_from(exp.year()).unwrap_or(2199),
                        funding: FundingType::Unknown,
                    },
                },
            )
            .await
            .map_err(invalid)?;
        // Dispute evidence reads the snapshot from the store (the engine stores it only for
        // agents' payments).
        self.engine
            .ports()
            .store
            .put_snapshot(&snapshot)
            .await
            .map_err(unavailable)?;
        let checkout_id = CheckoutId::new(format!("mpp-{hash}")).map_err(invalid)?;
        let command = ExecutePayment {
            key: settlement_key,
            request: PaymentRequest {
                actor: self.seller.clone(),
                buyer_id: buyer,
                mandate_id,
                action: PaymentAction::Authorize,
                merchant_id: self.merchant_id.clone(),
                snapshot_id: snapshot.id(),
                amount,
                urgency: None,
            },
            checkout: CheckoutState::Valid {
                checkout_id,
                snapshot_id: snapshot.id(),
            },
            snapshot,
            credential: stored.value.reference,
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
                return Err(SettleError::NotPaid {
                    reason: format!("refused: {:?}", d.codes()),
                })
            }
            // The same credential again, after its payment completed: the charge intent says a
            // server must not accept a credential twice and the core scheme answers an
            // already-used challenge with `invalid-challenge`, so the resource is not served
            // again (one charge, one serving). The engine replayed the command: no PSP call.
            PaymentOutcome::Replayed { attempt } if attempt.status == AttemptStatus::Captured => {
                return Err(VerifyError::Replayed.into())
            }
            PaymentOutcome::Done { attempt, .. }
            | PaymentOutcome::Replayed { attempt }
            | PaymentOutcome::Scheduled { attempt, .. } => attempt,
        };
        match (attempt.status, &attempt.provider_ref) {
            (AttemptStatus::Captured, Some(reference)) => {
                let mut receipt = Receipt::success(&terms.method, reference.as_str(), now);
                receipt.external_id = credential.payload.str("externalId").map(str::to_owned);
                Ok(receipt)
            }
            (status, _) => Err(SettleError::NotPaid {
                reason: format!(
                    "payment {} is {status:?} ({})",
                    attempt.id,
                    attempt.decline_code.as_deref().unwrap_or("no decline code")
                ),
            }),
        }
    }
}

/// Four digits for the vault's display of a token (a hash of it: a token has no card number).
fn last4(token: &str) -> String {
    let d = Sha256::digest(token.as_bytes());
    let n = u16::from_be_bytes([d[0], d[1]]) % 10_000;
    format!("{n:04}")
}

/// The seller's system actor named `id`.
pub fn seller_actor(id: &str) -> Result<Actor, crate::domain::ValidationError> {
    Ok(Actor {
        id: id.parse()?,
        kind: ActorKind::System,
    })
}
