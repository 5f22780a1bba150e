//! The authority decision: an outcome with every reason, never a bare boolean.

use std::borrow::Cow;
use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::canonical::{RequestDigest, SnapshotId};
use super::ids::{CheckoutId, ConfirmationId, MandateId};

/// How a blocker affects the outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum BlockerClass {
    /// The request is outside authority: `blocked`.
    Hard,
    /// Something the decision relies on is out of date: `requires_revalidation`.
    Stale,
    /// The buyer has to confirm: `requires_confirmation`.
    Confirmation,
}

macro_rules! blocker_codes {
    ($($(#[$doc:meta])* $variant:ident = $wire:literal, $class:ident, $next:literal;)*) => {
        /// A stable blocker code. Wire names are SCREAMING_SNAKE and never reused.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
        #[non_exhaustive]
        pub enum BlockerCode {
            $($(#[$doc])* #[serde(rename = $wire)] $variant,)*
        }

        impl BlockerCode {
            /// Every code, in the order checks report them.
            pub const ALL: &'static [BlockerCode] = &[$(BlockerCode::$variant,)*];

            /// The wire name.
            pub fn as_str(self) -> &'static str {
                match self { $(BlockerCode::$variant => $wire,)* }
            }

            /// How the code affects the outcome.
            pub fn class(self) -> BlockerClass {
                match self { $(BlockerCode::$variant => BlockerClass::$class,)* }
            }

            /// What the caller should do next.
            pub fn next_action(self) -> &'static str {
                match self { $(BlockerCode::$variant => $next,)* }
            }
        }
    };
}

blocker_codes! {
    /// The checkout is not valid; its upstream blockers are nested as causes.
    CheckoutNotValid = "CHECKOUT_NOT_VALID", Hard,
        "Resolve the checkout blockers before requesting delegated payment.";
    /// The checkout expired.
    CheckoutExpired = "CHECKOUT_EXPIRED", Stale,
        "Prepare the checkout again and take a new snapshot.";
    /// No mandate covers the request.
    AuthorityMissing = "AUTHORITY_MISSING", Hard,
        "Obtain a mandate from the buyer for this purchase.";
    /// The chain given is not a chain from a root to the request's mandate.
    ChainInvalid = "CHAIN_INVALID", Hard,
        "Supply the complete mandate chain from the root to the request's mandate.";
    /// The actor is not the mandate's actor.
    ActorNotAuthorized = "ACTOR_NOT_AUTHORIZED", Hard,
        "Only the mandate's actor may request this payment.";
    /// The actor is suspended.
    ActorSuspended = "ACTOR_SUSPENDED", Hard,
        "Resume the actor before it may act again.";
    /// The buyer is not the mandate's buyer.
    BuyerMismatch = "BUYER_MISMATCH", Hard,
        "Request payment only for the buyer who granted the mandate.";
    /// The buyer is suspended.
    BuyerSuspended = "BUYER_SUSPENDED", Hard,
        "Resume the buyer before payments are made for them.";
    /// The request, checkout or mandate is about another snapshot.
    CartSnapshotMismatch = "CART_SNAPSHOT_MISMATCH", Hard,
        "The cart changed: obtain a new mandate or confirmation for the current snapshot.";
    /// The cart is outside an open intent's limits (SKUs, number of lines).
    CartOutsideIntent = "CART_OUTSIDE_INTENT", Hard,
        "Obtain a mandate that covers this cart.";
    /// The snapshot expired.
    SnapshotExpired = "SNAPSHOT_EXPIRED", Stale,
        "Revalidate the checkout and take a new snapshot.";
    /// The requested amount is not the snapshot's amount.
    AmountMismatch = "AMOUNT_MISMATCH", Hard,
        "Request exactly the amount of the snapshot (captures and refunds: at most it).";
    /// The amount exceeds the mandate's maximum.
    AmountExceedsMandate = "AMOUNT_EXCEEDS_MANDATE", Hard,
        "Ask the buyer for a mandate that covers the final total.";
    /// The amount is below the mandate's amount and lower amounts are not allowed.
    LowerAmountNotAllowed = "LOWER_AMOUNT_NOT_ALLOWED", Hard,
        "Ask the buyer to confirm the lower amount.";
    /// A partial capture where the mandate does not allow one.
    PartialCaptureNotAllowed = "PARTIAL_CAPTURE_NOT_ALLOWED", Hard,
        "Capture the full amount, or obtain a mandate that allows partial capture.";
    /// The currency differs from the mandate's or the snapshot's.
    CurrencyMismatch = "CURRENCY_MISMATCH", Hard,
        "Pay in the mandate's currency; conversion needs its own mandate and evidence.";
    /// The merchant is outside the mandate's merchant scope or differs from the snapshot's.
    MerchantMismatch = "MERCHANT_MISMATCH", Hard,
        "Pay only merchants inside the mandate's scope.";
    /// The marketplace seller is not allowed.
    SellerNotAllowed = "SELLER_NOT_ALLOWED", Hard,
        "Buy only from the sellers the mandate allows.";
    /// The merchant category code is not allowed.
    MccNotAllowed = "MCC_NOT_ALLOWED", Hard,
        "Buy only from merchant categories the mandate allows.";
    /// The action is not allowed by the mandate.
    ActionNotAllowed = "ACTION_NOT_ALLOWED", Hard,
        "Request only the actions the mandate allows.";
    /// The mandate is not valid yet.
    MandateNotYetValid = "MANDATE_NOT_YET_VALID", Hard,
        "Wait until the mandate's validity starts.";
    /// The mandate expired.
    MandateExpired = "MANDATE_EXPIRED", Hard,
        "Ask the buyer for a new mandate.";
    /// The mandate was revoked.
    MandateRevoked = "MANDATE_REVOKED", Hard,
        "Authority was withdrawn; ask the buyer for a new mandate.";
    /// The mandate is used up.
    MandateUsed = "MANDATE_USED", Hard,
        "The mandate has no uses left; ask the buyer for a new mandate.";
    /// The mandate waits for the buyer's confirmation.
    MandatePendingConfirmation = "MANDATE_PENDING_CONFIRMATION", Confirmation,
        "Ask the buyer to confirm the mandate.";
    /// The buyer rejected the mandate.
    MandateRejected = "MANDATE_REJECTED", Hard,
        "The buyer refused this mandate.";
    /// An ancestor mandate is not active; its own reason is nested.
    AncestorNotActive = "ANCESTOR_NOT_ACTIVE", Hard,
        "The delegating mandate no longer grants authority; ask its holder for a new one.";
    /// Usage for a mandate or one of its windows was not supplied.
    UsageUnavailable = "USAGE_UNAVAILABLE", Hard,
        "Supply current usage for every mandate and window of the chain.";
    /// The amount exceeds the per-transaction maximum.
    TransactionLimitExceeded = "TRANSACTION_LIMIT_EXCEEDED", Hard,
        "Request at most the per-transaction maximum.";
    /// The amount would exceed a rolling window's amount.
    WindowAmountExceeded = "WINDOW_AMOUNT_EXCEEDED", Hard,
        "Wait until the window has room, or ask for a higher limit.";
    /// The payment would exceed a rolling window's count.
    WindowCountExceeded = "WINDOW_COUNT_EXCEEDED", Hard,
        "Wait until the window has room, or ask for a higher limit.";
    /// The amount would exceed the lifetime total.
    LifetimeLimitExceeded = "LIFETIME_LIMIT_EXCEEDED", Hard,
        "Ask the buyer for a new mandate.";
    /// No payment attempts left.
    AttemptsExhausted = "ATTEMPTS_EXHAUSTED", Hard,
        "No more attempts are allowed under this mandate.";
    /// The credential cannot be used.
    CredentialNotUsable = "CREDENTIAL_NOT_USABLE", Hard,
        "Present a usable payment credential.";
    /// The buyer must confirm this payment.
    ConfirmationRequired = "CONFIRMATION_REQUIRED", Confirmation,
        "Ask the buyer to confirm this snapshot and amount.";
    /// The buyer declined to confirm this cart under this mandate (and has not confirmed it
    /// since).
    ConfirmationDeclined = "CONFIRMATION_DECLINED", Hard,
        "The buyer refused this cart: do not ask again for it; build another cart if the buyer wants one.";
    /// The same resource was paid for more often in a window than the loop limit allows (an
    /// agent retrying a paid call in a loop).
    ResourceLoopDetected = "RESOURCE_LOOP_DETECTED", Hard,
        "Stop paying for this resource; check why the agent repeats the call, or raise the loop limit.";
    /// A circuit breaker is open: the credential or the agent failed authentication too often
    /// (a control of the engine).
    CircuitOpen = "CIRCUIT_OPEN", Hard,
        "Wait for the cool-down, or have a person check the credential and reset the breaker.";
    /// The cart at execution does not match the purchase intent the agent declared.
    IntentMismatch = "INTENT_MISMATCH", Hard,
        "Pay only the cart the declared intent describes; declare a new intent for another cart.";
}

impl fmt::Display for BlockerCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A nested cause of a blocker: an upstream blocker, or the status of an ancestor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(
    feature = "json-schema",
    derive(schemars::JsonSchema),
    schemars(rename = "Cause")
)]
#[serde(remote = "Self")]
#[serde(deny_unknown_fields)]
pub struct Cause {
    /// Upstream or domain code (`INVENTORY_STALE`, `MANDATE_REVOKED`).
    pub code: String,
    /// What it says.
    pub message: String,
}

/// One reason a request is not simply allowed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(
    feature = "json-schema",
    derive(schemars::JsonSchema),
    schemars(rename = "Blocker")
)]
#[serde(remote = "Self")]
#[serde(deny_unknown_fields)]
pub struct Blocker {
    /// Stable code.
    pub code: BlockerCode,
    /// Human-readable explanation.
    pub message: String,
    /// What to do next.
    pub next_action: Cow<'static, str>,
    /// The mandate of the chain the blocker is about, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mandate_id: Option<MandateId>,
    /// Nested causes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub causes: Vec<Cause>,
}

impl Blocker {
    /// A blocker with the code's next action.
    pub fn new(code: BlockerCode, message: impl Into<String>) -> Blocker {
        Blocker {
            code,
            message: message.into(),
            next_action: Cow::Borrowed(code.next_action()),
            mandate_id: None,
            causes: Vec::new(),
        }
    }

    /// Names the mandate the blocker is about.
    #[must_use]
    pub fn on(mut self, mandate_id: &MandateId) -> Blocker {
        self.mandate_id = Some(mandate_id.clone());
        self
    }

    /// Adds nested causes.
    #[must_use]
    pub fn caused_by(mut self, causes: Vec<Cause>) -> Blocker {
        self.causes = causes;
        self
    }
}

/// The answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The actor may request the action now.
    Allowed,
    /// Outside authority.
    Blocked,
    /// The buyer has to confirm first.
    RequiresConfirmation,
    /// Inputs are stale: revalidate the checkout first.
    RequiresRevalidation,
}

impl Outcome {
    /// The outcome the blockers imply: any hard blocker -> blocked; else anything stale ->
    /// requires_revalidation; else a missing confirmation -> requires_confirmation; else allowed.
    pub fn from_blockers(blockers: &[Blocker]) -> Outcome {
        let mut stale = false;
        let mut confirm = false;
        for b in blockers {
            match b.code.class() {
                BlockerClass::Hard => return Outcome::Blocked,
                BlockerClass::Stale => stale = true,
                BlockerClass::Confirmation => confirm = true,
            }
        }
        if stale {
            Outcome::RequiresRevalidation
        } else if confirm {
            Outcome::RequiresConfirmation
        } else {
            Outcome::Allowed
        }
    }

    /// The stable wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Allowed => "allowed",
            Outcome::Blocked => "blocked",
            Outcome::RequiresConfirmation => "requires_confirmation",
            Outcome::RequiresRevalidation => "requires_revalidation",
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a decision rests on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum Evidence {
    /// A mandate of the chain.
    PaymentMandate(MandateId),
    /// The snapshot.
    CartSnapshot(SnapshotId),
    /// The checkout state.
    CheckoutState(CheckoutId),
    /// A confirmation that satisfied a rule.
    ConfirmationRecord(ConfirmationId),
}

/// The authority decision: outcome, every blocker in a stable order, evidence, the request
/// digest and the evaluation time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
#[serde(try_from = "DecisionWire")]
pub struct AuthorityDecision {
    /// The answer.
    pub outcome: Outcome,
    /// Every reason it is not `allowed`, in check order.
    pub blockers: Vec<Blocker>,
    /// What it rests on.
    pub evidence: Vec<Evidence>,
    /// Digest of the request.
    pub request_digest: RequestDigest,
    /// When it was evaluated.
    pub evaluated_at: DateTime<Utc>,
}

impl AuthorityDecision {
    /// The risk vectors of its blockers, each once, in [`RiskVector`](super::RiskVector)
    /// order (empty when no blocker has one).
    pub fn risk_vectors(&self) -> Vec<super::RiskVector> {
        let mut v: Vec<super::RiskVector> = self
            .blockers
            .iter()
            .filter_map(|b| b.code.risk_vector())
            .collect();
        v.sort();
        v.dedup();
        v
    }

    /// Whether the outcome is `allowed`.
    pub fn is_allowed(&self) -> bool {
        self.outcome == Outcome::Allowed
    }

    /// The codes of the blockers, in order.
    pub fn codes(&self) -> Vec<BlockerCode> {
        self.blockers.iter().map(|b| b.code).collect()
    }

    /// Whether a blocker with `code` is present.
    pub fn has(&self, code: BlockerCode) -> bool {
        self.blockers.iter().any(|b| b.code == code)
    }

    /// The HTTP status a service should answer a refused command with: `allowed` 200,
    /// `blocked` 403 (the authority refuses; the blockers say why), `requires_confirmation` 428
    /// (a precondition is missing: the buyer's confirmation), `requires_revalidation` 409 (the
    /// checkout moved on: fetch it again and ask anew).
    ///
    /// ```
    /// use agent_mandate::domain::{evaluate, examples};
    /// let mut doc = examples::travel_backpack_document();
    /// assert_eq!(evaluate(&doc.input()).http_status(), 200);
    /// doc.checkout = examples::invalid_checkout();
    /// assert_eq!(evaluate(&doc.input()).http_status(), 403);
    /// ```
    pub fn http_status(&self) -> u16 {
        match self.outcome {
            Outcome::Allowed => 200,
            Outcome::Blocked => 403,
            Outcome::RequiresConfirmation => 428,
            Outcome::RequiresRevalidation => 409,
        }
    }
}

/// A readable rendering: the outcome, then every blocker with its mandate, message, next action
/// and nested causes.
///
/// ```
/// use agent_mandate::domain::{evaluate, examples};
/// let mut doc = examples::travel_backpack_document();
/// doc.checkout = examples::invalid_checkout();
/// let text = evaluate(&doc.input()).to_string();
/// assert!(text.starts_with("blocked"));
/// assert!(text.contains("CHECKOUT_NOT_VALID"));
/// assert!(text.contains("INVENTORY_STALE"));
/// ```
impl fmt::Display for AuthorityDecision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} (evaluated at {})",
            self.outcome,
            self.evaluated_at.to_rfc3339()
        )?;
        for b in &self.blockers {
            write!(f, "  - {}", b.code)?;
            if let Some(m) = &b.mandate_id {
                write!(f, " [{m}]")?;
            }
            writeln!(f, ": {}", b.message)?;
            for c in &b.causes {
                writeln!(f, "      caused by {}: {}", c.code, c.message)?;
            }
            writeln!(f, "      next: {}", b.next_action)?;
        }
        write!(f, "  request {}", self.request_digest)
    }
}

#[derive(Deserialize)]
#[cfg_attr(
    feature = "json-schema",
    derive(schemars::JsonSchema),
    schemars(rename = "DecisionWire")
)]
#[serde(remote = "Self")]
#[serde(deny_unknown_fields)]
struct DecisionWire {
    outcome: Outcome,
    #[serde(default)]
    blockers: Vec<Blocker>,
    #[serde(default)]
    evidence: Vec<Evidence>,
    request_digest: RequestDigest,
    #[serde(deserialize_with = "crate::domain::canonical::time")]
    evaluated_at: DateTime<Utc>,
}

impl TryFrom<DecisionWire> for AuthorityDecision {
    type Error = super::error::ValidationError;
    fn try_from(w: DecisionWire) -> Result<Self, Self::Error> {
        if Outcome::from_blockers(&w.blockers) != w.outcome {
            return Err(super::error::err(
                "outcome",
                super::error::ValidationKind::Inconsistent {
                    reason: "the outcome does not follow from the blockers",
                },
            ));
        }
        Ok(AuthorityDecision {
            outcome: w.outcome,
            blockers: w.blockers,
            evidence: w.evidence,
            request_digest: w.request_digest,
            evaluated_at: w.evaluated_at,
        })
    }
}

crate::json::object_only!(Cause);
crate::json::object_only!(Blocker);
crate::json::object_only!(de DecisionWire);
