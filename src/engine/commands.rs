//! Commands (typed inputs) and their outcomes.
//!
//! A command body says what to do, never who asks: every engine method takes the authenticated
//! [`Principal`](crate::domain::Principal) as a separate first argument, and the permission
//! table on each method says which principals it accepts. Bodies are `Deserialize` (they may
//! come from a request body); a principal never is.
//!
//! Commands and outcomes are `#[non_exhaustive]`: build a command with its `new` constructor
//! (required fields) and its `with_*` methods (optional ones), so that a field added later is
//! not a breaking change; match outcomes with a wildcard arm.
//!
//! ```
//! use agent_mandate::domain::{AttemptId, Currency, IdempotencyKey, Money};
//! use agent_mandate::engine::CapturePayment;
//!
//! let key = IdempotencyKey::new("capture-1")?;
//! let attempt = AttemptId::new("att_1")?;
//! let full = CapturePayment::new(key.clone(), attempt.clone());
//! assert_eq!(full.amount, None);
//! let eur: Currency = "EUR".parse()?;
//! let part = CapturePayment::new(key, attempt).with_amount(Money::parse("12.50", eur)?);
//! assert!(part.amount.is_some());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use serde::{Deserialize, Serialize};

use crate::domain::{
    AttemptId, AuthorityDecision, CartSnapshot, CheckoutState, Confirmation, CredentialRef,
    IdempotencyKey, LifecycleEvent, MandateId, MandateSpec, Money, Operation, Order, Party,
    PaymentAttempt, PaymentRequest, Text,
};

/// Create a root mandate, `pending_confirmation` or `active` (as its lifecycle says). Asked by
/// the mandate's buyer or a system acting for them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateMandate {
    /// Idempotency key.
    pub key: IdempotencyKey,
    /// The mandate.
    pub spec: MandateSpec,
}

/// Derive a child mandate from `spec.parent_id` (attenuation enforced, I6). Asked by the
/// parent's actor or the parent's buyer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct DeriveMandate {
    /// Idempotency key.
    pub key: IdempotencyKey,
    /// The child; `parent_id` names the parent.
    pub spec: MandateSpec,
}

/// Confirm, reject or revoke a mandate (or mark it used or expired). Confirm and reject are the
/// buyer's alone; see [`Engine::change_mandate`](super::Engine::change_mandate) for the rest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct ChangeMandate {
    /// Idempotency key.
    pub key: IdempotencyKey,
    /// The mandate.
    pub mandate_id: MandateId,
    /// What.
    pub event: LifecycleEvent,
}

/// Turn the kill switch on or off for an actor or a buyer. Asked by an operator or a system (a
/// buyer for themself).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct SetSuspension {
    /// Idempotency key.
    pub key: IdempotencyKey,
    /// The party.
    pub party: Party,
    /// On or off.
    pub suspended: bool,
    /// Why.
    pub reason: Text,
}

/// Record a buyer confirmation (bound to a snapshot and a scope). Asked by that buyer only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct RecordConfirmation {
    /// Idempotency key.
    pub key: IdempotencyKey,
    /// The confirmation.
    pub confirmation: Confirmation,
}

/// Decide without side effects (a dry run of [`ExecutePayment`] or any other action).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct Evaluate {
    /// The request.
    pub request: PaymentRequest,
    /// The snapshot.
    pub snapshot: CartSnapshot,
    /// The upstream checkout state.
    pub checkout: CheckoutState,
    /// The credential that would be presented.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<CredentialRef>,
}

/// Decide at execution time, hold the budget, authorize at the PSP.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct ExecutePayment {
    /// Idempotency key (scoped to the request's actor, who alone may ask).
    pub key: IdempotencyKey,
    /// The `authorize_payment` request.
    pub request: PaymentRequest,
    /// The snapshot it is for.
    pub snapshot: CartSnapshot,
    /// The upstream checkout state.
    pub checkout: CheckoutState,
    /// The credential to charge.
    pub credential: CredentialRef,
    /// Capture in the same PSP call.
    #[serde(default)]
    pub capture: bool,
    /// The purchase intent the agent declared before shopping: a cart that departs from it
    /// is refused with `INTENT_MISMATCH` (and, with the control on, suspends the agent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intent: Option<crate::domain::PurchaseIntent>,
    /// The agent's declaration of this payment (snapshot and amount), needed with the
    /// buyer's confirmation above the dual-confirmation amount.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub declaration: Option<crate::domain::Declaration>,
}

/// Capture an authorized attempt, in full (`amount: None`) or in part. Asked by the attempt's
/// actor only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct CapturePayment {
    /// Idempotency key.
    pub key: IdempotencyKey,
    /// The attempt.
    pub attempt_id: AttemptId,
    /// How much (default: everything authorized).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount: Option<Money>,
}

/// Void an authorized attempt. Asked by the attempt's actor, its buyer or an operator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct VoidPayment {
    /// Idempotency key.
    pub key: IdempotencyKey,
    /// The attempt.
    pub attempt_id: AttemptId,
}

/// Refund a captured attempt, in full (`amount: None`: all not yet refunded) or in part. Asked by
/// the attempt's actor, its buyer or an operator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct RefundPayment {
    /// Idempotency key.
    pub key: IdempotencyKey,
    /// The attempt.
    pub attempt_id: AttemptId,
    /// How much.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount: Option<Money>,
}

/// Commit the order of an attempt: once per attempt, from an accepted payment state. Asked by
/// the attempt's actor, its buyer or an operator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct CommitOrder {
    /// Idempotency key.
    pub key: IdempotencyKey,
    /// The attempt.
    pub attempt_id: AttemptId,
    /// The upstream checkout state now (checked once more).
    pub checkout: CheckoutState,
}

impl CreateMandate {
    /// A root mandate under `key`.
    pub fn new(key: IdempotencyKey, spec: MandateSpec) -> Self {
        CreateMandate { key, spec }
    }
}

impl DeriveMandate {
    /// A child mandate under `key` (`spec.parent_id` names the parent).
    pub fn new(key: IdempotencyKey, spec: MandateSpec) -> Self {
        DeriveMandate { key, spec }
    }
}

impl ChangeMandate {
    /// Applies `event` to `mandate_id` under `key`.
    pub fn new(key: IdempotencyKey, mandate_id: MandateId, event: LifecycleEvent) -> Self {
        ChangeMandate {
            key,
            mandate_id,
            event,
        }
    }
}

impl SetSuspension {
    /// Turns the kill switch of `party` on (`suspended`) or off, for `reason`.
    pub fn new(key: IdempotencyKey, party: Party, suspended: bool, reason: Text) -> Self {
        SetSuspension {
            key,
            party,
            suspended,
            reason,
        }
    }
}

impl RecordConfirmation {
    /// Records `confirmation` under `key`.
    pub fn new(key: IdempotencyKey, confirmation: Confirmation) -> Self {
        RecordConfirmation { key, confirmation }
    }
}

impl Evaluate {
    /// A dry run of `request` for `snapshot` in `checkout`, with no credential named.
    pub fn new(request: PaymentRequest, snapshot: CartSnapshot, checkout: CheckoutState) -> Self {
        Evaluate {
            request,
            snapshot,
            checkout,
            credential: None,
        }
    }

    /// Names the credential that would be presented (its status is then part of the decision).
    pub fn with_credential(mut self, credential: impl Into<Option<CredentialRef>>) -> Self {
        self.credential = credential.into();
        self
    }
}

impl ExecutePayment {
    /// Authorizes `request` for `snapshot` with `credential` under `key` (authorization only;
    /// see [`ExecutePayment::with_capture`]).
    pub fn new(
        key: IdempotencyKey,
        request: PaymentRequest,
        snapshot: CartSnapshot,
        checkout: CheckoutState,
        credential: CredentialRef,
    ) -> Self {
        ExecutePayment {
            key,
            request,
            snapshot,
            checkout,
            credential,
            capture: false,
            intent: None,
            declaration: None,
        }
    }

    /// Captures in the same PSP call (`true`) or only authorizes (`false`, the default).
    pub fn with_capture(mut self, capture: bool) -> Self {
        self.capture = capture;
        self
    }

    /// Binds the payment to the purchase intent the agent declared (see
    /// [`crate::domain::intent_mismatch`] for what is compared).
    pub fn with_intent(mut self, intent: crate::domain::PurchaseIntent) -> Self {
        self.intent = Some(intent);
        self
    }

    /// Adds the agent's declaration of this payment (dual confirmation).
    pub fn with_declaration(mut self, declaration: crate::domain::Declaration) -> Self {
        self.declaration = Some(declaration);
        self
    }
}

impl CapturePayment {
    /// Captures everything authorized on `attempt_id`.
    pub fn new(key: IdempotencyKey, attempt_id: AttemptId) -> Self {
        CapturePayment {
            key,
            attempt_id,
            amount: None,
        }
    }

    /// Captures `amount` only (a partial capture); `None` captures everything authorized.
    pub fn with_amount(mut self, amount: impl Into<Option<Money>>) -> Self {
        self.amount = amount.into();
        self
    }
}

impl VoidPayment {
    /// Voids the authorization of `attempt_id`.
    pub fn new(key: IdempotencyKey, attempt_id: AttemptId) -> Self {
        VoidPayment { key, attempt_id }
    }
}

impl RefundPayment {
    /// Refunds everything captured and not yet refunded on `attempt_id`.
    pub fn new(key: IdempotencyKey, attempt_id: AttemptId) -> Self {
        RefundPayment {
            key,
            attempt_id,
            amount: None,
        }
    }

    /// Refunds `amount` only (a partial refund); `None` refunds all not yet refunded.
    pub fn with_amount(mut self, amount: impl Into<Option<Money>>) -> Self {
        self.amount = amount.into();
        self
    }
}

impl CommitOrder {
    /// Commits the order of `attempt_id`, checking `checkout` once more.
    pub fn new(key: IdempotencyKey, attempt_id: AttemptId, checkout: CheckoutState) -> Self {
        CommitOrder {
            key,
            attempt_id,
            checkout,
        }
    }
}

/// What a payment command did.
///
/// JSON: an object tagged by `outcome`: `{"outcome": "refused", "decision": {..}}`,
/// `{"outcome": "done", "attempt": {..}, "decision": {..}}` (no `decision` for a void),
/// `{"outcome": "replayed", "attempt": {..}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
#[serde(
    into = "super::wire::PaymentOutcomeWire",
    from = "super::wire::PaymentOutcomeWire"
)]
#[non_exhaustive]
pub enum PaymentOutcome {
    /// The decision was not `allowed`: nothing was held, nothing sent to the PSP.
    Refused(AuthorityDecision),
    /// The command ran now. `decision` is the one made for it (none for a void, which needs
    /// authority beyond the permission to ask).
    Done {
        /// The attempt after the command.
        attempt: PaymentAttempt,
        /// The decision.
        decision: Option<AuthorityDecision>,
    },
    /// The key was seen before with the same command: the attempt as it is now, and no PSP
    /// call was made.
    Replayed {
        /// The attempt.
        attempt: PaymentAttempt,
    },
    /// Allowed and held, waiting in its review window: nothing was sent. The payment goes to
    /// the PSP at `until` (`Engine::run_due_reviews`) unless the buyer cancels it
    /// (`Engine::cancel_review`) or its authority lapses meanwhile.
    Scheduled {
        /// The attempt (`authority_validated`, its hold placed).
        attempt: PaymentAttempt,
        /// The decision made for it (none when a retry of the key finds it waiting).
        decision: Option<AuthorityDecision>,
        /// When it may be sent.
        until: chrono::DateTime<chrono::Utc>,
    },
}

impl PaymentOutcome {
    /// The attempt, unless refused.
    pub fn attempt(&self) -> Option<&PaymentAttempt> {
        match self {
            PaymentOutcome::Refused(_) => None,
            PaymentOutcome::Done { attempt, .. }
            | PaymentOutcome::Replayed { attempt }
            | PaymentOutcome::Scheduled { attempt, .. } => Some(attempt),
        }
    }

    /// The decision made now, if any.
    pub fn decision(&self) -> Option<&AuthorityDecision> {
        match self {
            PaymentOutcome::Refused(d) => Some(d),
            PaymentOutcome::Done { decision, .. } | PaymentOutcome::Scheduled { decision, .. } => {
                decision.as_ref()
            }
            PaymentOutcome::Replayed { .. } => None,
        }
    }

    /// Whether it was answered from an idempotency record.
    pub fn is_replay(&self) -> bool {
        matches!(self, PaymentOutcome::Replayed { .. })
    }
}

/// The recovery started after a failed order commitment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Recovery {
    /// Void (authorized) or refund (captured).
    pub operation: Operation,
    /// The attempt after the recovery call.
    pub attempt: PaymentAttempt,
    /// Why the recovery call did not complete, if it did not (retry it with a void or
    /// refund command, or reconcile).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What a commit-order command did.
///
/// JSON: an object tagged by `outcome`: `{"outcome": "committed", "order": {..}, "decision":
/// {..}}`, `{"outcome": "existing", "order": {..}}`, `{"outcome": "failed", "reason": "..",
/// "decision": {..}, "recovery": {..}}` (`decision` only when a decision refused the order).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
#[serde(tag = "outcome", rename_all = "snake_case", deny_unknown_fields)]
#[expect(
    clippy::large_enum_variant,
    reason = "returned once per order commitment; boxing would only add an allocation"
)]
#[non_exhaustive]
pub enum OrderOutcome {
    /// The order was committed now.
    Committed {
        /// The order.
        order: Order,
        /// The decision.
        decision: AuthorityDecision,
    },
    /// The attempt already has an order (a replay, or a second commit with another key): no
    /// second order (I4).
    Existing {
        /// The order.
        order: Order,
    },
    /// The order could not be committed after money moved; the recovery was started and
    /// recorded.
    Failed {
        /// Why.
        reason: String,
        /// The decision, when the order was refused by one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        decision: Option<AuthorityDecision>,
        /// The recovery.
        recovery: Recovery,
    },
}
