//! Paying an offer through the engine, whatever protocol carried it: the payer's identity,
//! the engine command of an offer (its one-line cart snapshot, captured at once) and why a
//! payment was not made.

use sha2::{Digest as _, Sha256};

use crate::domain::{
    Actor, AttemptStatus, AuthorityDecision, BlockerCode, BuyerId, CartSnapshot, CheckoutId,
    CheckoutState, CredentialRef, IdempotencyKey, Mandate, MandateId, PaymentAction,
    PaymentAttempt, PaymentRequest, Principal,
};
use crate::engine::{Engine, ExecutePayment, PaymentOutcome};
use crate::protocols::charge::ChargeOffer;
use crate::protocols::error::OfferError;

/// Why a payer did not pay.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum PayError {
    /// The mandate does not allow it: the decision, with every blocker.
    #[error("refused by the mandate: {codes:?}")]
    Refused {
        /// The blocker codes.
        codes: Vec<BlockerCode>,
        /// The decision.
        decision: Box<AuthorityDecision>,
    },
    /// The offer cannot be stated in mandate terms.
    #[error(transparent)]
    Offer(#[from] OfferError),
    /// The payment did not complete (declined, ambiguous, or the credential was not issued).
    #[error("payment not completed: {reason}")]
    NotPaid {
        /// Why (no secret material).
        reason: String,
    },
}

/// Who pays, under which mandate, with which credential.
#[derive(Debug, Clone)]
pub struct PayerIdentity {
    /// The authenticated principal the host runs the agent as.
    pub principal: Principal,
    /// The mandate's actor (the agent).
    pub actor: Actor,
    /// The buyer.
    pub buyer_id: BuyerId,
    /// The mandate paid under.
    pub mandate_id: MandateId,
    /// The mandate's expiry (no grant outlives it).
    pub mandate_expires: chrono::DateTime<chrono::Utc>,
    /// The buyer's payment credential in the vault, behind the issued tokens.
    pub credential: CredentialRef,
}

impl PayerIdentity {
    /// The identity of `mandate`'s actor, paying with `credential`.
    pub fn of(principal: Principal, mandate: &Mandate, credential: CredentialRef) -> PayerIdentity {
        let spec = mandate.spec();
        PayerIdentity {
            principal,
            actor: spec.actor.clone(),
            buyer_id: spec.buyer_id.clone(),
            mandate_id: spec.id.clone(),
            mandate_expires: spec.scope.validity.expires_at,
            credential,
        }
    }
}

/// The first 16 hex digits of the SHA-256 of `s`.
pub(crate) fn short(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))[..16].to_owned()
}

/// Executes `offer` (its cart `snapshot`) with capture under `key`, as checkout
/// `checkout_id`: the attempt when it is captured, else why not. The same key again is a
/// replay of the command (the same attempt).
pub(crate) async fn execute_offer(
    engine: &Engine,
    who: &PayerIdentity,
    offer: &ChargeOffer,
    snapshot: CartSnapshot,
    key: IdempotencyKey,
    checkout_id: &str,
) -> Result<PaymentAttempt, PayError> {
    let checkout_id = CheckoutId::new(checkout_id).map_err(|e| OfferError::Invalid {
        field: "id",
        reason: e.to_string(),
    })?;
    let command = ExecutePayment {
        key,
        request: PaymentRequest {
            actor: who.actor.clone(),
            buyer_id: who.buyer_id.clone(),
            mandate_id: who.mandate_id.clone(),
            action: PaymentAction::Authorize,
            merchant_id: offer.merchant_id.clone(),
            snapshot_id: snapshot.id(),
            amount: offer.amount,
            urgency: None,
        },
        checkout: CheckoutState::Valid {
            checkout_id,
            snapshot_id: snapshot.id(),
        },
        snapshot,
        credential: who.credential.clone(),
        capture: true,
        intent: None,
        declaration: None,
    };
    let outcome = engine
        .execute_payment(&who.principal, &command)
        .await
        .map_err(|e| PayError::NotPaid {
            reason: e.to_string(),
        })?;
    let attempt = match outcome {
        PaymentOutcome::Refused(decision) => {
            return Err(PayError::Refused {
                codes: decision.codes(),
                decision: Box::new(decision),
            })
        }
        PaymentOutcome::Done { attempt, .. }
        | PaymentOutcome::Replayed { attempt }
        | PaymentOutcome::Scheduled { attempt, .. } => attempt,
    };
    if attempt.status != AttemptStatus::Captured {
        return Err(PayError::NotPaid {
            reason: format!("attempt {} is {:?}", attempt.id, attempt.status),
        });
    }
    Ok(attempt)
}
