//! The payment attempt: one enum of states, one transition function, one visible table.
//!
//! An attempt is the execution of one allowed `authorize_payment` decision against a PSP. Its
//! state only changes through [`PaymentAttempt::apply`]; an illegal transition is a typed error
//! and leaves the attempt as it was. Terminal states (`failed`, `cancelled`, `refunded`) absorb.
//! `ambiguous` is left only on evidence (a PSP report), never by guessing, and a PSP status the
//! library does not know never becomes a terminal state.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::ids::{AttemptId, CheckoutId, CredentialRef, ProviderKey, ProviderRef};
use super::money::Money;
use super::request::PaymentRequest;

/// Where a payment attempt is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum AttemptStatus {
    /// Created, nothing checked yet.
    NotStarted,
    /// An `allowed` decision was made at execution time.
    AuthorityValidated,
    /// The hold is placed and the authorization was sent to the PSP; no answer yet.
    PendingProviderResponse,
    /// The PSP asks for a buyer action (3-D Secure); the hold is kept.
    RequiresBuyerAction,
    /// The PSP authorized the amount; the hold is kept.
    Authorized,
    /// Captured for less than authorized; the rest released.
    PartiallyCaptured,
    /// Captured in full.
    Captured,
    /// Declined or refused by the PSP; the hold released. Terminal.
    Failed,
    /// The outcome is unknown (timeout, lost response, unknown status): money may have moved.
    /// The hold is kept until a PSP report resolves it (I5).
    Ambiguous,
    /// Voided before capture; the hold released. Terminal.
    Cancelled,
    /// Part of the captured amount was refunded.
    PartiallyRefunded,
    /// Everything captured was refunded. Terminal.
    Refunded,
}

impl AttemptStatus {
    /// Every status.
    pub const ALL: [AttemptStatus; 12] = [
        AttemptStatus::NotStarted,
        AttemptStatus::AuthorityValidated,
        AttemptStatus::PendingProviderResponse,
        AttemptStatus::RequiresBuyerAction,
        AttemptStatus::Authorized,
        AttemptStatus::PartiallyCaptured,
        AttemptStatus::Captured,
        AttemptStatus::Failed,
        AttemptStatus::Ambiguous,
        AttemptStatus::Cancelled,
        AttemptStatus::PartiallyRefunded,
        AttemptStatus::Refunded,
    ];

    /// The stable wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            AttemptStatus::NotStarted => "not_started",
            AttemptStatus::AuthorityValidated => "authority_validated",
            AttemptStatus::PendingProviderResponse => "pending_provider_response",
            AttemptStatus::RequiresBuyerAction => "requires_buyer_action",
            AttemptStatus::Authorized => "authorized",
            AttemptStatus::PartiallyCaptured => "partially_captured",
            AttemptStatus::Captured => "captured",
            AttemptStatus::Failed => "failed",
            AttemptStatus::Ambiguous => "ambiguous",
            AttemptStatus::Cancelled => "cancelled",
            AttemptStatus::PartiallyRefunded => "partially_refunded",
            AttemptStatus::Refunded => "refunded",
        }
    }

    /// Whether no event can change it any more.
    pub fn is_terminal(self) -> bool {
        match self {
            AttemptStatus::Failed | AttemptStatus::Cancelled | AttemptStatus::Refunded => true,
            AttemptStatus::NotStarted
            | AttemptStatus::AuthorityValidated
            | AttemptStatus::PendingProviderResponse
            | AttemptStatus::RequiresBuyerAction
            | AttemptStatus::Authorized
            | AttemptStatus::PartiallyCaptured
            | AttemptStatus::Captured
            | AttemptStatus::Ambiguous
            | AttemptStatus::PartiallyRefunded => false,
        }
    }

    /// Whether an order may be committed from it (money is authorized or captured and not
    /// given back).
    pub fn accepts_order(self) -> bool {
        match self {
            AttemptStatus::Authorized
            | AttemptStatus::PartiallyCaptured
            | AttemptStatus::Captured => true,
            AttemptStatus::NotStarted
            | AttemptStatus::AuthorityValidated
            | AttemptStatus::PendingProviderResponse
            | AttemptStatus::RequiresBuyerAction
            | AttemptStatus::Failed
            | AttemptStatus::Ambiguous
            | AttemptStatus::Cancelled
            | AttemptStatus::PartiallyRefunded
            | AttemptStatus::Refunded => false,
        }
    }

    /// Whether the PSP may hold money for it that is not yet known (the hold must stay).
    pub fn money_may_move(self) -> bool {
        match self {
            AttemptStatus::PendingProviderResponse
            | AttemptStatus::RequiresBuyerAction
            | AttemptStatus::Authorized
            | AttemptStatus::Ambiguous => true,
            AttemptStatus::NotStarted
            | AttemptStatus::AuthorityValidated
            | AttemptStatus::PartiallyCaptured
            | AttemptStatus::Captured
            | AttemptStatus::Failed
            | AttemptStatus::Cancelled
            | AttemptStatus::PartiallyRefunded
            | AttemptStatus::Refunded => false,
        }
    }

    /// Progress rank of the settled states, to refuse a PSP report that would move backwards.
    fn rank(self) -> Option<u8> {
        match self {
            AttemptStatus::Authorized => Some(1),
            AttemptStatus::PartiallyCaptured | AttemptStatus::Captured => Some(2),
            AttemptStatus::PartiallyRefunded => Some(3),
            AttemptStatus::Refunded | AttemptStatus::Cancelled | AttemptStatus::Failed => Some(4),
            AttemptStatus::NotStarted
            | AttemptStatus::AuthorityValidated
            | AttemptStatus::PendingProviderResponse
            | AttemptStatus::RequiresBuyerAction
            | AttemptStatus::Ambiguous => None,
        }
    }
}

impl fmt::Display for AttemptStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a PSP says about a payment (from a response, a lookup or a webhook).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum ProviderStatus {
    /// The buyer must act (3-D Secure).
    RequiresAction,
    /// Authorized, not captured.
    Authorized,
    /// Captured (in full or in part: see the amounts).
    Captured,
    /// Declined: a definitive refusal, with the PSP's code.
    Declined,
    /// Cancelled (voided) before capture.
    Cancelled,
    /// The PSP has no payment for the key or reference (it never received the request).
    NotFound,
    /// A status this library does not know; carried verbatim, never terminal.
    Unknown(String),
}

/// A PSP's view of one payment: status and amounts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(
    feature = "json-schema",
    derive(schemars::JsonSchema),
    schemars(rename = "ProviderReport")
)]
#[serde(remote = "Self")]
pub struct ProviderReport {
    /// The PSP's reference, once it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<ProviderRef>,
    /// Its status.
    pub status: ProviderStatus,
    /// Amount authorized.
    pub authorized: Money,
    /// Amount captured.
    pub captured: Money,
    /// Amount refunded.
    pub refunded: Money,
    /// The decline code, for a declined payment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decline_code: Option<String>,
}

/// The PSP operation an attempt was waiting for when its outcome became unknown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum Operation {
    /// Authorization (possibly with capture).
    Authorize,
    /// Capture.
    Capture,
    /// Void.
    Void,
    /// Refund.
    Refund,
}

impl Operation {
    /// The stable wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Authorize => "authorize",
            Operation::Capture => "capture",
            Operation::Void => "void",
            Operation::Refund => "refund",
        }
    }
}

/// An event of the attempt state machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum AttemptEvent {
    /// An `allowed` decision was made at execution time.
    Validate,
    /// The hold is placed and the authorization is being sent.
    Submit,
    /// The PSP failed transiently before any effect: back to validated, hold released.
    Retryable,
    /// The PSP refused the request as invalid (definitive).
    Reject,
    /// The outcome of an operation is unknown.
    Lost(Operation),
    /// Evidence from the PSP: a response, a lookup or a webhook.
    Report(ProviderReport),
    /// A capture the PSP confirmed.
    Capture(Money),
    /// A void the PSP confirmed.
    Void,
    /// A refund the PSP confirmed.
    Refund(Money),
    /// Withdrawn before it was sent (the buyer cancelled it in its review window, or its
    /// authority lapsed there): cancelled, nothing sent.
    Withdraw,
}

impl AttemptEvent {
    /// The stable wire name.
    pub fn as_str(&self) -> &'static str {
        match self {
            AttemptEvent::Validate => "validate",
            AttemptEvent::Submit => "submit",
            AttemptEvent::Retryable => "retryable",
            AttemptEvent::Reject => "reject",
            AttemptEvent::Lost(_) => "lost",
            AttemptEvent::Report(_) => "report",
            AttemptEvent::Capture(_) => "capture",
            AttemptEvent::Void => "void",
            AttemptEvent::Refund(_) => "refund",
            AttemptEvent::Withdraw => "withdraw",
        }
    }
}

/// An illegal attempt transition. The attempt is left as it was.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("attempt {attempt_id}: cannot {event} while {status}: {reason}")]
pub struct AttemptError {
    /// The attempt.
    pub attempt_id: AttemptId,
    /// Its status.
    pub status: AttemptStatus,
    /// The refused event.
    pub event: &'static str,
    /// Why.
    pub reason: &'static str,
}

/// What a transition does to the attempt's budget hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HoldEffect {
    /// Commit this much as spend; release the rest.
    Commit(Money),
    /// Release the whole hold.
    Release,
    /// Record a refund of this much (the refund policy says what it gives back).
    Refund(Money),
}

/// One payment attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(
    feature = "json-schema",
    derive(schemars::JsonSchema),
    schemars(rename = "PaymentAttempt")
)]
#[serde(remote = "Self")]
#[serde(deny_unknown_fields)]
pub struct PaymentAttempt {
    /// Its id.
    pub id: AttemptId,
    /// The `authorize_payment` request it executes.
    pub request: PaymentRequest,
    /// The credential presented (a reference; the vault keeps the secret).
    pub credential: CredentialRef,
    /// The checkout session it pays for.
    pub checkout_id: CheckoutId,
    /// Whether the authorization also captures.
    pub capture_on_authorize: bool,
    /// Where it is.
    pub status: AttemptStatus,
    /// The PSP's reference, once known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_ref: Option<ProviderRef>,
    /// Amount authorized by the PSP.
    pub authorized: Money,
    /// Amount captured.
    pub captured: Money,
    /// Amount refunded.
    pub refunded: Money,
    /// Refunds made (each gets its own PSP key).
    pub refunds: u32,
    /// Times the authorization was submitted (a transient PSP failure returns the attempt to
    /// `authority_validated`; each submission has its own budget hold).
    pub submissions: u32,
    /// The decline code, when declined.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decline_code: Option<String>,
    /// The operation whose outcome is unknown, while ambiguous.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<Operation>,
    /// When the authorization was last submitted to the PSP (the clock read at `submit`).
    /// A PSP lookup answering "not found" fails the attempt only once the submission's
    /// deadline (this time plus the PSP's deadline and a margin) has passed (I13).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[serde(deserialize_with = "crate::domain::canonical::opt_time")]
    pub submitted_at: Option<DateTime<Utc>>,
    /// Creation time.
    #[serde(deserialize_with = "crate::domain::canonical::time")]
    pub created_at: DateTime<Utc>,
    /// Last change.
    #[serde(deserialize_with = "crate::domain::canonical::time")]
    pub updated_at: DateTime<Utc>,
}

impl PaymentAttempt {
    /// A new attempt in `not_started`.
    pub fn new(
        id: AttemptId,
        request: PaymentRequest,
        credential: CredentialRef,
        checkout_id: CheckoutId,
        capture_on_authorize: bool,
        now: DateTime<Utc>,
    ) -> PaymentAttempt {
        let zero = Money::zero(request.currency());
        PaymentAttempt {
            id,
            request,
            credential,
            checkout_id,
            capture_on_authorize,
            status: AttemptStatus::NotStarted,
            provider_ref: None,
            authorized: zero,
            captured: zero,
            refunded: zero,
            refunds: 0,
            submissions: 0,
            decline_code: None,
            pending: None,
            submitted_at: None,
            created_at: now,
            updated_at: now,
        }
    }

    /// The key the PSP receives for `operation` (the n-th refund gets its own).
    pub fn provider_key(&self, operation: Operation) -> ProviderKey {
        let text = match operation {
            Operation::Refund => format!("{}-refund-{}", self.id, self.refunds + 1),
            Operation::Authorize | Operation::Capture | Operation::Void => {
                format!("{}-{}", self.id, operation.as_str())
            }
        };
        ProviderKey::derived(text)
    }

    /// The id of the budget hold of the current submission: the attempt id for the first, then
    /// `<attempt id>.<n>` (a resubmission after a transient failure holds anew).
    pub fn hold_id(&self) -> AttemptId {
        if self.submissions <= 1 {
            self.id.clone()
        } else {
            AttemptId::derived(format!("{}.{}", self.id, self.submissions))
        }
    }

    /// Whether a PSP answer of "not found" for this attempt's authorization is final at
    /// `now`: only once the submission's deadline (`submitted_at + deadline`) has passed.
    /// Before it, the request may still be on its way to the PSP or being processed, so the
    /// attempt keeps its state and its hold (I13). An attempt with no recorded submission
    /// time (stored by an older version) counts from its last change.
    pub fn not_found_is_final(&self, deadline: chrono::Duration, now: DateTime<Utc>) -> bool {
        let since = self.submitted_at.unwrap_or(self.updated_at);
        since
            .checked_add_signed(deadline)
            .is_some_and(|end| now >= end)
    }

    /// Captured less refunded: what the buyer has paid and not got back.
    pub fn net_captured(&self) -> Money {
        self.captured
            .saturating_sub(&self.refunded)
            .unwrap_or(self.captured)
    }

    /// Applies `event` at `now`. The table of legal transitions:
    ///
    /// | from                          | event            | to                                   |
    /// |-------------------------------|------------------|--------------------------------------|
    /// | not_started                   | validate         | authority_validated                  |
    /// | authority_validated           | submit           | pending_provider_response            |
    /// | pending_provider_response     | retryable        | authority_validated                  |
    /// | pending_provider_response     | reject           | failed                               |
    /// | pending, requires_buyer_action, authorized, partially_captured, captured, partially_refunded | lost(op) | ambiguous |
    /// | pending, requires_buyer_action, ambiguous | report | what the report says (unknown: ambiguous) |
    /// | authorized, captured, partially_captured, partially_refunded | report | what it says, never backwards |
    /// | authorized                    | capture(a)       | captured (a = authorized) or partially_captured |
    /// | authorized, requires_buyer_action | void         | cancelled                            |
    /// | captured, partially_captured, partially_refunded | refund(a) | partially_refunded or refunded |
    /// | authority_validated           | withdraw         | cancelled (never sent)               |
    /// | failed, cancelled, refunded   | anything         | refused (terminal)                   |
    ///
    /// Every other pair is refused with [`AttemptError`].
    pub fn apply(
        &self,
        event: &AttemptEvent,
        now: DateTime<Utc>,
    ) -> Result<PaymentAttempt, AttemptError> {
        use AttemptEvent as E;
        use AttemptStatus as S;
        let refuse = |reason: &'static str| AttemptError {
            attempt_id: self.id.clone(),
            status: self.status,
            event: event.as_str(),
            reason,
        };
        if self.status.is_terminal() {
            return Err(refuse("the attempt is in a terminal state"));
        }
        let mut next = self.clone();
        next.updated_at = now;
        match (self.status, event) {
            (S::NotStarted, E::Validate) => next.status = S::AuthorityValidated,
            (S::AuthorityValidated, E::Submit) => {
                next.status = S::PendingProviderResponse;
                next.submissions = self.submissions.saturating_add(1);
                next.submitted_at = Some(now);
            }
            (S::PendingProviderResponse, E::Retryable) => next.status = S::AuthorityValidated,
            (S::PendingProviderResponse, E::Reject) => next.status = S::Failed,
            (
                S::PendingProviderResponse
                | S::RequiresBuyerAction
                | S::Authorized
                | S::PartiallyCaptured
                | S::Captured
                | S::PartiallyRefunded,
                E::Lost(op),
            ) => {
                next.status = S::Ambiguous;
                next.pending = Some(*op);
            }
            (S::PendingProviderResponse | S::RequiresBuyerAction | S::Ambiguous, E::Report(r)) => {
                self.absorb_report(&mut next, r, false).map_err(refuse)?;
            }
            (
                S::Authorized | S::PartiallyCaptured | S::Captured | S::PartiallyRefunded,
                E::Report(r),
            ) => {
                self.absorb_report(&mut next, r, true).map_err(refuse)?;
            }
            (S::Authorized, E::Capture(amount)) => {
                if amount.is_zero() {
                    return Err(refuse("a capture must be for more than zero"));
                }
                match amount.try_cmp(&self.authorized) {
                    Ok(std::cmp::Ordering::Greater) => {
                        return Err(refuse("a capture cannot exceed the authorized amount"))
                    }
                    Ok(std::cmp::Ordering::Equal) => next.status = S::Captured,
                    Ok(std::cmp::Ordering::Less) => next.status = S::PartiallyCaptured,
                    Err(_) => return Err(refuse("a capture must be in the authorized currency")),
                }
                next.captured = *amount;
            }
            (S::Authorized | S::RequiresBuyerAction, E::Void) => next.status = S::Cancelled,
            (S::AuthorityValidated, E::Withdraw) => next.status = S::Cancelled,
            (S::Captured | S::PartiallyCaptured | S::PartiallyRefunded, E::Refund(amount)) => {
                if amount.is_zero() {
                    return Err(refuse("a refund must be for more than zero"));
                }
                let Ok(refunded) = self.refunded.checked_add(amount) else {
                    return Err(refuse("a refund must be in the captured currency"));
                };
                match refunded.try_cmp(&self.captured) {
                    Ok(std::cmp::Ordering::Greater) => {
                        return Err(refuse("refunds cannot exceed the captured amount"))
                    }
                    Ok(std::cmp::Ordering::Equal) => next.status = S::Refunded,
                    Ok(std::cmp::Ordering::Less) => next.status = S::PartiallyRefunded,
                    Err(_) => return Err(refuse("a refund must be in the captured currency")),
                }
                next.refunded = refunded;
                next.refunds = self.refunds.saturating_add(1);
            }
            (
                S::NotStarted
                | S::AuthorityValidated
                | S::PendingProviderResponse
                | S::RequiresBuyerAction
                | S::Authorized
                | S::PartiallyCaptured
                | S::Captured
                | S::Failed
                | S::Ambiguous
                | S::Cancelled
                | S::PartiallyRefunded
                | S::Refunded,
                E::Validate
                | E::Submit
                | E::Retryable
                | E::Reject
                | E::Lost(_)
                | E::Report(_)
                | E::Capture(_)
                | E::Void
                | E::Refund(_)
                | E::Withdraw,
            ) => return Err(refuse("not a legal transition")),
        }
        if next.status != S::Ambiguous {
            next.pending = None;
        }
        Ok(next)
    }

    /// Folds a PSP report into `next`. `settled`: the attempt is past authorization, so a
    /// report may not move it backwards and an unknown status is refused.
    fn absorb_report(
        &self,
        next: &mut PaymentAttempt,
        r: &ProviderReport,
        settled: bool,
    ) -> Result<(), &'static str> {
        use AttemptStatus as S;
        let currency = self.request.currency();
        if r.authorized.currency() != currency
            || r.captured.currency() != currency
            || r.refunded.currency() != currency
        {
            return Err("the report is in another currency than the attempt");
        }
        if r.authorized.exceeds(&self.request.amount)
            || r.captured.exceeds(&r.authorized)
            || r.refunded.exceeds(&r.captured)
        {
            return Err("the report's amounts are inconsistent with the attempt");
        }
        let status = match &r.status {
            ProviderStatus::Unknown(_) => {
                if settled {
                    return Err("an unknown PSP status cannot move a settled attempt");
                }
                S::Ambiguous
            }
            ProviderStatus::NotFound => {
                if settled || self.pending.is_some_and(|op| op != Operation::Authorize) {
                    return Err("the PSP no longer knows a payment it reported before");
                }
                S::Failed
            }
            ProviderStatus::RequiresAction => S::RequiresBuyerAction,
            ProviderStatus::Authorized => S::Authorized,
            ProviderStatus::Declined => S::Failed,
            ProviderStatus::Cancelled => S::Cancelled,
            ProviderStatus::Captured => {
                if r.captured.is_zero() {
                    return Err("a captured report with nothing captured");
                }
                if r.refunded.is_zero() {
                    if r.captured == r.authorized {
                        S::Captured
                    } else {
                        S::PartiallyCaptured
                    }
                } else if r.refunded == r.captured {
                    S::Refunded
                } else {
                    S::PartiallyRefunded
                }
            }
        };
        if settled {
            match (self.status.rank(), status.rank()) {
                (Some(now), Some(then)) if then >= now => {}
                _ => return Err("the report would move the attempt backwards"),
            }
            if r.captured.try_cmp(&self.captured).is_ok_and(|o| o.is_lt())
                || r.refunded.try_cmp(&self.refunded).is_ok_and(|o| o.is_lt())
            {
                return Err("the report shows less captured or refunded than recorded");
            }
        }
        next.status = status;
        if r.reference.is_some() {
            next.provider_ref = r.reference.clone();
        }
        next.authorized = r.authorized;
        next.captured = r.captured;
        if r.refunded.exceeds(&self.refunded) {
            next.refunds = self.refunds.saturating_add(1);
        }
        next.refunded = r.refunded;
        if r.status == ProviderStatus::Declined {
            next.decline_code = r.decline_code.clone();
        }
        Ok(())
    }

    /// What moving from `self` to `next` does to the hold (applied in order).
    pub fn hold_effects(&self, next: &PaymentAttempt) -> Vec<HoldEffect> {
        let mut effects = Vec::new();
        let held = matches!(
            self.status,
            AttemptStatus::PendingProviderResponse
                | AttemptStatus::RequiresBuyerAction
                | AttemptStatus::Authorized
                | AttemptStatus::Ambiguous
        ) && self.captured.is_zero();
        if held {
            if !next.captured.is_zero() {
                effects.push(HoldEffect::Commit(next.captured));
            } else if matches!(
                next.status,
                AttemptStatus::Failed
                    | AttemptStatus::Cancelled
                    | AttemptStatus::AuthorityValidated
            ) {
                effects.push(HoldEffect::Release);
            }
        }
        if let Ok(delta) = next.refunded.checked_sub(&self.refunded)
            && !delta.is_zero()
        {
            effects.push(HoldEffect::Refund(delta));
        }
        effects
    }
}

/// A committed order: at most one per attempt (I4).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(
    feature = "json-schema",
    derive(schemars::JsonSchema),
    schemars(rename = "Order")
)]
#[serde(remote = "Self")]
#[serde(deny_unknown_fields)]
pub struct Order {
    /// Its id (derived from the attempt).
    pub id: super::ids::OrderId,
    /// The attempt that paid for it.
    pub attempt_id: AttemptId,
    /// The snapshot bought.
    pub snapshot_id: super::canonical::SnapshotId,
    /// The buyer.
    pub buyer_id: super::ids::BuyerId,
    /// The merchant.
    pub merchant_id: super::ids::MerchantId,
    /// The amount.
    pub amount: Money,
    /// When it was committed.
    #[serde(deserialize_with = "crate::domain::canonical::time")]
    pub committed_at: DateTime<Utc>,
}

crate::json::object_only!(ProviderReport);
crate::json::object_only!(PaymentAttempt);
crate::json::object_only!(Order);
