//! The payment request an actor makes, and the other inputs of a decision.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::canonical::{canonical_sha256, Canonical, Jcs, RequestDigest, Sink, SnapshotId};
use super::checkout::CheckoutState;
use super::confirmation::Confirmation;
use super::ids::{ActorId, BuyerId, MandateId, MerchantId};
use super::limits::{bounded, MAX_CHAIN_LEN, MAX_CONFIRMATIONS, MAX_SUSPENDED};
use super::mandate::{Actor, ActorKind, Mandate};
use super::money::{Currency, Money};
use super::scope::{PaymentAction, Urgency};
use super::snapshot::CartSnapshot;
use super::usage::{ResourcePayments, Usage};

/// "May this actor request this payment action, for this buyer, merchant, cart snapshot, amount,
/// currency and time window, right now?": the request part of the question.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(
    feature = "json-schema",
    derive(schemars::JsonSchema),
    schemars(rename = "PaymentRequest")
)]
#[serde(remote = "Self")]
#[serde(deny_unknown_fields)]
pub struct PaymentRequest {
    /// Who asks.
    pub actor: Actor,
    /// For whom.
    pub buyer_id: BuyerId,
    /// Under which mandate (the leaf of the chain).
    pub mandate_id: MandateId,
    /// What.
    pub action: PaymentAction,
    /// At which merchant.
    pub merchant_id: MerchantId,
    /// For which snapshot.
    pub snapshot_id: SnapshotId,
    /// How much, in which currency.
    pub amount: Money,
    /// The urgency the agent states, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub urgency: Option<Urgency>,
}

impl PaymentRequest {
    /// The currency requested.
    pub fn currency(&self) -> Currency {
        self.amount.currency()
    }

    /// SHA-256 of the request's canonical JSON, recorded in every decision.
    pub fn digest(&self) -> RequestDigest {
        RequestDigest::from_bytes(canonical_sha256(self))
    }
}

fn actor_kind(kind: ActorKind) -> &'static str {
    match kind {
        ActorKind::Human => "human",
        ActorKind::Agent => "agent",
        ActorKind::System => "system",
    }
}

impl Canonical for PaymentRequest {
    fn write_canonical<S: Sink>(&self, o: &mut Jcs<'_, S>) {
        o.begin();
        o.field_str("action", self.action.as_str());
        o.key("actor");
        o.begin();
        o.field_str("id", self.actor.id.as_str());
        o.field_str("kind", actor_kind(self.actor.kind));
        o.end();
        o.field_money("amount", &self.amount);
        o.field_str("buyer_id", self.buyer_id.as_str());
        o.field_str("mandate_id", self.mandate_id.as_str());
        o.field_str("merchant_id", self.merchant_id.as_str());
        o.field_digest("snapshot_id", self.snapshot_id.as_bytes());
        if let Some(u) = self.urgency {
            o.field_str("urgency", u.as_str());
        }
        o.end();
    }
}

/// Whether the payment credential presented can be used now (reported by the vault).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum CredentialStatus {
    /// Usable.
    Usable,
    /// Revoked.
    Revoked,
    /// Past its expiry.
    Expired,
    /// Suspended by the issuer or the platform.
    Suspended,
}

/// Parties whose authority is switched off (the kill switch).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(
    feature = "json-schema",
    derive(schemars::JsonSchema),
    schemars(rename = "Suspensions")
)]
#[serde(remote = "Self")]
#[serde(deny_unknown_fields)]
pub struct Suspensions {
    /// Suspended actors: every mandate they hold or delegated from is blocked. At most
    /// [`MAX_SUSPENDED`] when deserialised.
    #[serde(default, deserialize_with = "bounded::<_, _, MAX_SUSPENDED>")]
    pub actors: Vec<ActorId>,
    /// Suspended buyers: every mandate of theirs is blocked. At most [`MAX_SUSPENDED`] when
    /// deserialised.
    #[serde(default, deserialize_with = "bounded::<_, _, MAX_SUSPENDED>")]
    pub buyers: Vec<BuyerId>,
    /// Actors whose credentials are switched off (the credentials' kill switch): a payment
    /// of such an actor, or of a payer it is accountable for, reads its credential as
    /// suspended (`CREDENTIAL_NOT_USABLE`). At most [`MAX_SUSPENDED`] when deserialised.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "bounded::<_, _, MAX_SUSPENDED>"
    )]
    pub credentials: Vec<ActorId>,
}

impl Suspensions {
    /// Whether `actor` is suspended.
    pub fn actor(&self, actor: &ActorId) -> bool {
        self.actors.contains(actor)
    }

    /// Whether `buyer` is suspended.
    pub fn buyer(&self, buyer: &BuyerId) -> bool {
        self.buyers.contains(buyer)
    }

    /// Whether `actor`'s credentials are switched off.
    pub fn credentials(&self, actor: &ActorId) -> bool {
        self.credentials.contains(actor)
    }
}

/// Everything a decision looks at, borrowed.
#[derive(Debug, Clone, Copy)]
pub struct EvaluationInput<'a> {
    /// The request.
    pub request: &'a PaymentRequest,
    /// The mandate chain from root to leaf (the leaf is the request's mandate).
    pub chain: &'a [Mandate],
    /// The snapshot the request is about.
    pub snapshot: &'a CartSnapshot,
    /// The upstream checkout state.
    pub checkout: &'a CheckoutState,
    /// Usage of every mandate of the chain.
    pub usage: &'a [Usage],
    /// Confirmations on record.
    pub confirmations: &'a [Confirmation],
    /// Suspended actors and buyers.
    pub suspensions: &'a Suspensions,
    /// The status of the credential presented; required to authorize.
    pub credential: Option<CredentialStatus>,
    /// How often the request's resource was paid for in its loop limit's window, when loop
    /// detection applies.
    pub resource_payments: Option<ResourcePayments>,
    /// What the engine's controls found (an open breaker, the declared intent, reasons to
    /// confirm); `None`: no control applies.
    pub controls: Option<&'a super::controls::ControlSignals>,
    /// The time of evaluation.
    pub now: DateTime<Utc>,
}

/// The same inputs, owned: the JSON document of `agent-mandate evaluate`.
///
/// Deserialising refuses a document above the limits of [`limits`](super::limits): at most
/// [`MAX_CHAIN_LEN`] mandates in `chain` and entries in `usage`, [`MAX_CONFIRMATIONS`]
/// confirmations, [`MAX_SUSPENDED`] suspended actors and buyers, and the limits of every value
/// inside (the checkout's upstream blockers, the snapshot's items).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(
    feature = "json-schema",
    derive(schemars::JsonSchema),
    schemars(rename = "EvaluationDocument")
)]
#[serde(remote = "Self")]
#[serde(deny_unknown_fields)]
pub struct EvaluationDocument {
    /// See [`EvaluationInput::request`].
    pub request: PaymentRequest,
    /// See [`EvaluationInput::chain`].
    #[serde(default, deserialize_with = "bounded::<_, _, MAX_CHAIN_LEN>")]
    pub chain: Vec<Mandate>,
    /// See [`EvaluationInput::snapshot`].
    pub snapshot: CartSnapshot,
    /// See [`EvaluationInput::checkout`].
    pub checkout: CheckoutState,
    /// See [`EvaluationInput::usage`].
    #[serde(default, deserialize_with = "bounded::<_, _, MAX_CHAIN_LEN>")]
    pub usage: Vec<Usage>,
    /// See [`EvaluationInput::confirmations`].
    #[serde(default, deserialize_with = "bounded::<_, _, MAX_CONFIRMATIONS>")]
    pub confirmations: Vec<Confirmation>,
    /// See [`EvaluationInput::suspensions`].
    #[serde(default)]
    pub suspensions: Suspensions,
    /// See [`EvaluationInput::credential`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<CredentialStatus>,
    /// See [`EvaluationInput::resource_payments`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_payments: Option<ResourcePayments>,
    /// See [`EvaluationInput::controls`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub controls: Option<super::controls::ControlSignals>,
    /// See [`EvaluationInput::now`].
    #[serde(deserialize_with = "crate::domain::canonical::time")]
    pub now: DateTime<Utc>,
}

impl EvaluationDocument {
    /// Borrows the document as an evaluation input.
    pub fn input(&self) -> EvaluationInput<'_> {
        EvaluationInput {
            request: &self.request,
            chain: &self.chain,
            snapshot: &self.snapshot,
            checkout: &self.checkout,
            usage: &self.usage,
            confirmations: &self.confirmations,
            suspensions: &self.suspensions,
            credential: self.credential,
            resource_payments: self.resource_payments,
            controls: self.controls.as_ref(),
            now: self.now,
        }
    }
}

/// The fingerprint of an execute-payment command: SHA-256 of the JCS form of
/// `{"capture", "checkout", "credential", "request"}` (the snapshot is named by its id inside
/// the request, and the id is its content, I7). Same content, same fingerprint; any change,
/// another one.
pub fn execution_fingerprint(
    request: &PaymentRequest,
    checkout: &CheckoutState,
    credential: &str,
    capture: bool,
) -> super::canonical::ContentDigest {
    struct Cmd<'a>(&'a PaymentRequest, &'a CheckoutState, &'a str, bool);
    impl Canonical for Cmd<'_> {
        fn write_canonical<S: Sink>(&self, o: &mut Jcs<'_, S>) {
            o.begin();
            o.field_str("capture", if self.3 { "true" } else { "false" });
            o.field("checkout", self.1);
            o.field_str("credential", self.2);
            o.field("request", self.0);
            o.end();
        }
    }
    super::canonical::ContentDigest::from_bytes(canonical_sha256(&Cmd(
        request, checkout, credential, capture,
    )))
}

crate::json::object_only!(PaymentRequest);
crate::json::object_only!(Suspensions);
crate::json::object_only!(EvaluationDocument);
