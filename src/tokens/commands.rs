//! Token commands, their outcomes and errors.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::domain::{
    BuyerId, CredentialRef, IdempotencyKey, MandateId, Money, PaymentAttempt, Text,
};
use crate::engine::EngineError;
use crate::ports::{
    Redeemer, Secret, TokenGeneratorError, TokenId, TokenLimits, TokenRecord, TokenSelector,
    TokenStoreError, VaultError,
};

/// Issue a scoped token under a mandate, charging an orchestrator credential of the vault.
/// Asked by the mandate's actor or its buyer.
///
/// ```
/// use agent_mandate::domain::{Currency, IdempotencyKey, Money};
/// use agent_mandate::ports::{PeriodCap, Redeemer, TokenLimits, TokenUses};
/// use agent_mandate::tokens::IssueToken;
/// let eur: Currency = "EUR".parse()?;
/// let limits = TokenLimits {
///     currency: eur,
///     per_use: None,
///     per_period: Some(PeriodCap { amount: Money::parse("100.00", eur)?, period_seconds: 30 * 86_400 }),
///     uses: TokenUses::CapBounded { max_uses: None },
/// };
/// let redeemer = Redeemer {
///     provider: "cloud-provider".parse()?,
///     merchant_id: "merchant_001".parse()?,
///     seller_id: None,
///     mcc: "5948".parse()?,
/// };
/// let issue = IssueToken::new(
///     IdempotencyKey::new("issue-1")?,
///     "mandate_001".parse()?,
///     "cred_1".parse()?,
///     redeemer,
///     limits,
///     90 * 86_400,
/// );
/// assert_eq!(issue.ttl_seconds, 90 * 86_400);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
#[serde(deny_unknown_fields)]
pub struct IssueToken {
    /// Idempotency key (scoped to who asks).
    pub key: IdempotencyKey,
    /// The mandate the token is issued under.
    pub parent_id: MandateId,
    /// The orchestrator credential it charges (owned by the mandate's actor, of its buyer).
    pub credential: CredentialRef,
    /// Who may redeem it.
    pub redeemer: Redeemer,
    /// Its caps, currency and use policy.
    pub limits: TokenLimits,
    /// How long it may be redeemed, in seconds (ends no later than the mandate).
    pub ttl_seconds: u64,
}

impl IssueToken {
    /// A token under `parent_id` charging `credential`, for `redeemer`, within `limits`, for
    /// `ttl_seconds`.
    pub fn new(
        key: IdempotencyKey,
        parent_id: MandateId,
        credential: CredentialRef,
        redeemer: Redeemer,
        limits: TokenLimits,
        ttl_seconds: u64,
    ) -> Self {
        IssueToken {
            key,
            parent_id,
            credential,
            redeemer,
            limits,
            ttl_seconds,
        }
    }
}

/// Redeem a token: charge `amount` now. Asked by the provider the token names.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
#[serde(deny_unknown_fields)]
pub struct RedeemToken {
    /// Idempotency key (scoped to the provider and the token).
    pub key: IdempotencyKey,
    /// The token value presented.
    #[serde(deserialize_with = "secret")]
    pub token: Secret,
    /// How much to charge.
    pub amount: Money,
    /// The buyer the provider charges for (its customer account): refused when the token is
    /// another buyer's.
    #[serde(default)]
    pub buyer_id: Option<BuyerId>,
    /// What the charge is for (shown in the cart snapshot; never decides).
    #[serde(default)]
    pub description: Option<Text>,
}

fn secret<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Secret, D::Error> {
    String::deserialize(d).map(Secret::new)
}

impl RedeemToken {
    /// Charges `amount` with `token` under `key`.
    pub fn new(key: IdempotencyKey, token: Secret, amount: Money) -> Self {
        RedeemToken {
            key,
            token,
            amount,
            buyer_id: None,
            description: None,
        }
    }

    /// Names the buyer the provider charges for.
    pub fn with_buyer(mut self, buyer: impl Into<Option<BuyerId>>) -> Self {
        self.buyer_id = buyer.into();
        self
    }

    /// Describes the charge.
    pub fn with_description(mut self, description: impl Into<Option<Text>>) -> Self {
        self.description = description.into();
        self
    }
}

/// Revoke every token a selector reaches (and the agent's credentials, the orchestrator
/// credential or the mandate it names), in one call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
#[serde(deny_unknown_fields)]
pub struct RevokeTokens {
    /// What to revoke.
    pub selector: TokenSelector,
    /// Why.
    pub reason: Text,
}

impl RevokeTokens {
    /// Revokes what `selector` reaches, for `reason`.
    pub fn new(selector: TokenSelector, reason: Text) -> Self {
        RevokeTokens { selector, reason }
    }
}

/// A token just issued: its value, shown this once, and its record.
#[derive(Debug)]
#[non_exhaustive]
pub struct IssuedToken {
    /// The value to hand to the provider: `None` for a replayed issue (it is never shown
    /// twice; revoke it and issue another if it was lost).
    pub token: Option<Secret>,
    /// The record (no value, only its hash).
    pub record: TokenRecord,
    /// Whether the key had issued it before.
    pub replay: bool,
}

/// Why a redemption was refused. Stable codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[non_exhaustive]
pub enum RefusalCode {
    /// Not a token value, no such token, or a wrong secret (one answer for the three).
    Unknown,
    /// Presented by another provider than the one it names.
    WrongProvider,
    /// The provider charges for another buyer than the token's.
    WrongBuyer,
    /// Before its issue or at or after its expiry.
    Expired,
    /// Revoked.
    Revoked,
    /// Every use is taken.
    Exhausted,
    /// Another currency than the token's.
    CurrencyMismatch,
    /// Above the per-use cap (or not more than zero).
    OverPerUseCap,
    /// Above the period cap on its own.
    OverPeriodCap,
    /// The authority decision refused it (the blockers say why: a window, the mandate chain).
    DecisionBlocked,
    /// The PSP declined the charge.
    Declined,
}

impl RefusalCode {
    /// Every code.
    pub const ALL: [RefusalCode; 11] = [
        RefusalCode::Unknown,
        RefusalCode::WrongProvider,
        RefusalCode::WrongBuyer,
        RefusalCode::Expired,
        RefusalCode::Revoked,
        RefusalCode::Exhausted,
        RefusalCode::CurrencyMismatch,
        RefusalCode::OverPerUseCap,
        RefusalCode::OverPeriodCap,
        RefusalCode::DecisionBlocked,
        RefusalCode::Declined,
    ];

    /// The stable wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            RefusalCode::Unknown => "TOKEN_UNKNOWN",
            RefusalCode::WrongProvider => "TOKEN_WRONG_PROVIDER",
            RefusalCode::WrongBuyer => "TOKEN_WRONG_BUYER",
            RefusalCode::Expired => "TOKEN_EXPIRED",
            RefusalCode::Revoked => "TOKEN_REVOKED",
            RefusalCode::Exhausted => "TOKEN_EXHAUSTED",
            RefusalCode::CurrencyMismatch => "TOKEN_CURRENCY_MISMATCH",
            RefusalCode::OverPerUseCap => "TOKEN_OVER_PER_USE_CAP",
            RefusalCode::OverPeriodCap => "TOKEN_OVER_PERIOD_CAP",
            RefusalCode::DecisionBlocked => "TOKEN_DECISION_BLOCKED",
            RefusalCode::Declined => "TOKEN_DECLINED",
        }
    }

    /// The code of a wire name.
    pub fn from_wire(text: &str) -> Option<RefusalCode> {
        RefusalCode::ALL.into_iter().find(|c| c.as_str() == text)
    }
}

impl fmt::Display for RefusalCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a redemption did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RedemptionOutcome {
    /// Charged (captured).
    Charged {
        /// The token.
        token_id: TokenId,
        /// The payment attempt.
        attempt: Box<PaymentAttempt>,
        /// Whether the key was redeemed before (no second charge).
        replay: bool,
    },
    /// The PSP's outcome is unknown (or the payment is authorized, not captured): the use
    /// and the hold are kept until the attempt is reconciled.
    Pending {
        /// The token.
        token_id: TokenId,
        /// The payment attempt.
        attempt: Box<PaymentAttempt>,
    },
    /// Refused: nothing charged.
    Refused {
        /// The token, when the value named a stored token and was right (never for
        /// [`RefusalCode::Unknown`]).
        token_id: Option<TokenId>,
        /// Why.
        code: RefusalCode,
        /// The blocker codes of a decision, or the PSP's decline code.
        reasons: Vec<String>,
        /// Whether this is the recorded answer of a key redeemed before.
        replay: bool,
    },
}

impl RedemptionOutcome {
    /// The refusal code, if refused.
    pub fn refusal(&self) -> Option<RefusalCode> {
        match self {
            RedemptionOutcome::Refused { code, .. } => Some(*code),
            RedemptionOutcome::Charged { .. } | RedemptionOutcome::Pending { .. } => None,
        }
    }

    /// The attempt, if the PSP was asked.
    pub fn attempt(&self) -> Option<&PaymentAttempt> {
        match self {
            RedemptionOutcome::Charged { attempt, .. }
            | RedemptionOutcome::Pending { attempt, .. } => Some(attempt),
            RedemptionOutcome::Refused { .. } => None,
        }
    }

    /// Whether it was answered from the redemption's record.
    pub fn is_replay(&self) -> bool {
        match self {
            RedemptionOutcome::Charged { replay, .. }
            | RedemptionOutcome::Refused { replay, .. } => *replay,
            RedemptionOutcome::Pending { .. } => false,
        }
    }
}

/// A token command that could not run. Never carries a token value.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// The principal may not do this. Nothing was done.
    #[error("not permitted: {reason}")]
    NotPermitted {
        /// Why.
        reason: String,
    },
    /// Bad input, named by field. Nothing was stored.
    #[error("invalid {field}: {message}")]
    Invalid {
        /// The field.
        field: String,
        /// What is wrong.
        message: String,
    },
    /// The key was used for another command. Nothing was done.
    #[error("idempotency key {key} was used for a different {operation}")]
    IdempotencyConflict {
        /// The key.
        key: IdempotencyKey,
        /// `issue_token` or `redeem_token`.
        operation: &'static str,
    },
    /// The engine failed (a mandate that would widen its parent is
    /// [`EngineError::Delegation`]).
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The token store failed.
    #[error(transparent)]
    Store(#[from] TokenStoreError),
    /// The vault failed.
    #[error(transparent)]
    Vault(#[from] VaultError),
    /// No randomness.
    #[error(transparent)]
    Generator(#[from] TokenGeneratorError),
}
