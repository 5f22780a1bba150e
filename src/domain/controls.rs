//! Safety controls as decision inputs: what the engine's controls found about a request
//! (an open circuit breaker, the purchase intent the agent declared, reasons the buyer must
//! confirm), and the risk vector of every blocker code. Pure: the engine counts and keeps
//! state; the decision only reads these signals.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::canonical::SnapshotId;
use super::decision::BlockerCode;
use super::ids::ActorId;
use super::intent::PurchaseIntent;
use super::mandate::ActorKind;
use super::mandate::Mandate;
use super::money::Money;
use super::request::PaymentRequest;
use super::snapshot::CartSnapshot;

/// What a blocker says went wrong, in the four questions a payment risk review asks: is it
/// the wrong place (merchant, seller, category), the wrong thing (cart, intent, action,
/// resource), the wrong amount (total, currency, limits), or the wrong credential (who pays
/// with what). Lifecycle, upstream and confirmation codes have none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum RiskVector {
    /// Paying someone the authority does not cover.
    WrongPlace,
    /// Buying something the authority does not cover.
    WrongThing,
    /// Paying an amount the authority does not cover.
    WrongAmount,
    /// Paying as someone, or with something, the authority does not cover.
    WrongCredential,
}

impl RiskVector {
    /// Every vector.
    pub const ALL: &'static [RiskVector] = &[
        RiskVector::WrongPlace,
        RiskVector::WrongThing,
        RiskVector::WrongAmount,
        RiskVector::WrongCredential,
    ];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            RiskVector::WrongPlace => "wrong_place",
            RiskVector::WrongThing => "wrong_thing",
            RiskVector::WrongAmount => "wrong_amount",
            RiskVector::WrongCredential => "wrong_credential",
        }
    }
}

impl fmt::Display for RiskVector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl BlockerCode {
    /// The risk vector the code belongs to (`None`: lifecycle, upstream, confirmation).
    ///
    /// ```
    /// use agent_mandate::domain::{BlockerCode, RiskVector};
    /// assert_eq!(BlockerCode::MerchantMismatch.risk_vector(), Some(RiskVector::WrongPlace));
    /// assert_eq!(BlockerCode::MandateExpired.risk_vector(), None);
    /// ```
    pub fn risk_vector(self) -> Option<RiskVector> {
        use BlockerCode as C;
        use RiskVector as R;
        // Every code is listed (no wildcard): a new code must be classified here.
        match self {
            C::MerchantMismatch | C::SellerNotAllowed | C::MccNotAllowed => Some(R::WrongPlace),
            C::CartSnapshotMismatch
            | C::CartOutsideIntent
            | C::ActionNotAllowed
            | C::ResourceLoopDetected
            | C::IntentMismatch => Some(R::WrongThing),
            C::AmountMismatch
            | C::AmountExceedsMandate
            | C::LowerAmountNotAllowed
            | C::PartialCaptureNotAllowed
            | C::CurrencyMismatch
            | C::TransactionLimitExceeded
            | C::WindowAmountExceeded
            | C::WindowCountExceeded
            | C::LifetimeLimitExceeded => Some(R::WrongAmount),
            C::ActorNotAuthorized | C::BuyerMismatch | C::CredentialNotUsable | C::CircuitOpen => {
                Some(R::WrongCredential)
            }
            C::CheckoutNotValid
            | C::CheckoutExpired
            | C::AuthorityMissing
            | C::ChainInvalid
            | C::ActorSuspended
            | C::BuyerSuspended
            | C::SnapshotExpired
            | C::MandateNotYetValid
            | C::MandateExpired
            | C::MandateRevoked
            | C::MandateUsed
            | C::MandatePendingConfirmation
            | C::MandateRejected
            | C::AncestorNotActive
            | C::UsageUnavailable
            | C::AttemptsExhausted
            | C::ConfirmationRequired
            | C::ConfirmationDeclined => None,
        }
    }
}

/// Which circuit breaker refuses the payment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum BreakerScope {
    /// The credential presented failed authentication too often.
    Credential,
    /// The agent's payments failed authentication too often.
    Agent,
}

impl BreakerScope {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerScope::Credential => "credential",
            BreakerScope::Agent => "agent",
        }
    }
}

/// Why a control asks for the buyer's confirmation before this payment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum ConfirmReason {
    /// Velocity hold: the agent made `payments` payments in the last `window_seconds`.
    Velocity {
        /// Payments counted in the window.
        payments: u32,
        /// The window.
        window_seconds: u64,
    },
    /// The merchant is outside the buyer's allowlist.
    MerchantNotAllowlisted,
    /// The amount is above the dual-confirmation amount: the agent's declaration and the
    /// buyer's confirmation, each bound to the snapshot, are both required.
    DualConfirmation {
        /// The configured amount (payments above it need both).
        above: Money,
    },
}

/// The agent's declaration of the payment it is about to make: bound to the snapshot and the
/// amount. Required, with the buyer's confirmation, above the dual-confirmation amount.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct Declaration {
    /// The snapshot the agent declares it pays.
    pub snapshot_id: SnapshotId,
    /// The amount it declares.
    pub amount: Money,
}

impl Declaration {
    /// A declaration for `snapshot_id` and `amount`.
    pub fn new(snapshot_id: SnapshotId, amount: Money) -> Declaration {
        Declaration {
            snapshot_id,
            amount,
        }
    }

    /// Whether it is bound to the request's snapshot and amount.
    pub fn binds(&self, request: &PaymentRequest) -> bool {
        self.snapshot_id == request.snapshot_id && self.amount == request.amount
    }
}

/// What the engine's controls found about a request, as an input of the decision
/// ([`EvaluationInput::controls`](super::EvaluationInput::controls)).
///
/// ```
/// use agent_mandate::domain::{BreakerScope, ControlSignals};
/// let mut signals = ControlSignals::default();
/// assert!(signals.is_empty());
/// signals.circuit_open = Some(BreakerScope::Agent);
/// assert!(!signals.is_empty());
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(
    feature = "json-schema",
    derive(schemars::JsonSchema),
    schemars(rename = "ControlSignals")
)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ControlSignals {
    /// An open circuit breaker (failed authentications): `CIRCUIT_OPEN`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub circuit_open: Option<BreakerScope>,
    /// The purchase intent the agent declared; a cart that does not match it is
    /// `INTENT_MISMATCH`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intent: Option<PurchaseIntent>,
    /// Reasons the buyer must confirm this payment (`CONFIRMATION_REQUIRED` unless a
    /// confirmation of the snapshot satisfies them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub confirm: Vec<ConfirmReason>,
    /// The agent's declaration (needed by [`ConfirmReason::DualConfirmation`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub declaration: Option<Declaration>,
    /// A purchase intent is required: an authorization without [`ControlSignals::intent`] is
    /// `INTENT_MISMATCH` ("no purchase intent was declared").
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub intent_required: bool,
}

impl ControlSignals {
    /// Whether no control has anything to say.
    pub fn is_empty(&self) -> bool {
        self.circuit_open.is_none()
            && self.intent.is_none()
            && self.confirm.is_empty()
            && !self.intent_required
    }
}

/// The actor the safety controls hold to account for `request` under `chain` (root to leaf):
/// the request's own actor when it is an agent; for a `system` payer (a scoped token's actor,
/// an ACP allowance's, any process paying), the nearest actor of kind agent holding a mandate
/// of the chain above it, or the system actor itself when none does; `None` for a `human`
/// actor (the buyer paying in person: no control applies to the buyer's own actions).
///
/// So an agent cannot leave its controls behind by paying through a token: the token's
/// redemption counts, and is held or refused, as the agent's.
///
/// ```
/// use agent_mandate::domain::{accountable_actor, examples, Actor, ActorKind};
/// let doc = examples::travel_backpack_document();
/// let agent = doc.request.actor.id.clone();
/// assert_eq!(accountable_actor(&doc.request, &doc.chain), Some(&agent));
/// let mut by_token = doc.request.clone();
/// by_token.actor = Actor { id: "tok_1".parse().unwrap(), kind: ActorKind::System };
/// assert_eq!(accountable_actor(&by_token, &doc.chain), Some(&agent));
/// let mut in_person = doc.request.clone();
/// in_person.actor.kind = ActorKind::Human;
/// assert_eq!(accountable_actor(&in_person, &doc.chain), None);
/// ```
pub fn accountable_actor<'a>(
    request: &'a PaymentRequest,
    chain: &'a [Mandate],
) -> Option<&'a ActorId> {
    match request.actor.kind {
        ActorKind::Human => None,
        ActorKind::Agent => Some(&request.actor.id),
        ActorKind::System => Some(
            chain
                .iter()
                .rev()
                .map(Mandate::actor)
                .find(|a| a.kind == ActorKind::Agent)
                .map_or(&request.actor.id, |a| &a.id),
        ),
    }
}

/// Where the cart at execution departs from the purchase intent the agent declared; `None`
/// when it matches. Compared: the agent, the merchant and its category, and line by line the
/// quantity and unit price (the intent's descriptions are the agent's words, not compared).
///
/// ```
/// use agent_mandate::domain::{examples, intent_mismatch};
/// let doc = examples::travel_backpack_document();
/// let intent = examples::intent_for(&doc.request, &doc.snapshot);
/// assert_eq!(intent_mismatch(&intent, &doc.request, &doc.snapshot), None);
/// ```
pub fn intent_mismatch(
    intent: &PurchaseIntent,
    request: &PaymentRequest,
    snapshot: &CartSnapshot,
) -> Option<String> {
    let spec = intent.spec();
    if spec.agent_id != request.actor.id {
        return Some(format!(
            "the intent was declared by {}, the payment is asked by {}",
            spec.agent_id, request.actor.id
        ));
    }
    let merchant = snapshot.merchant();
    if spec.merchant_id != request.merchant_id || spec.merchant_id != merchant.merchant_id {
        return Some(format!(
            "the intent names merchant {}, the cart is at {}",
            spec.merchant_id, merchant.merchant_id
        ));
    }
    if spec.mcc != merchant.mcc {
        return Some(format!(
            "the intent names category {}, the merchant's is {}",
            spec.mcc, merchant.mcc
        ));
    }
    let items = snapshot.items();
    if spec.line_items.len() != items.len() {
        return Some(format!(
            "the intent has {} lines, the cart {}",
            spec.line_items.len(),
            items.len()
        ));
    }
    for (i, (want, got)) in spec.line_items.iter().zip(items).enumerate() {
        if want.quantity != got.quantity || want.unit_price != got.unit_price {
            return Some(format!(
                "line {i}: the intent declares {} x {}, the cart has {} x {}",
                want.quantity, want.unit_price, got.quantity, got.unit_price
            ));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_has_a_stated_vector_and_vectors_have_names() {
        let mut seen = std::collections::BTreeSet::new();
        for &code in BlockerCode::ALL {
            if let Some(v) = code.risk_vector() {
                seen.insert(v);
            }
        }
        assert_eq!(seen.len(), RiskVector::ALL.len(), "every vector is used");
        for v in RiskVector::ALL {
            assert_eq!(
                serde_json::to_string(v).unwrap(),
                format!("\"{}\"", v.as_str())
            );
        }
    }
}
