//! The scoped payment token ports: [`TokenStore`] (the token records and their redemptions)
//! and [`TokenGenerator`] (where token values come from), with the records they exchange.
//!
//! A token value is never stored: a [`TokenRecord`] keeps the SHA-256 of its secret part
//! ([`TokenHash`]). What a token may do is a child mandate of the buyer's (its `mandate_id`);
//! the record adds what a mandate does not know: who may redeem it, its use policy, the vault
//! credential it charges and the lineage used to revoke it.
//!
//! ```
//! use agent_mandate::ports::{TokenId, TokenUses};
//! let id = TokenId::new("tok_0123456789abcdef0123456789abcdef")?;
//! assert_eq!(id.as_str().len(), 36);
//! assert_eq!(TokenUses::Single.max_uses(), Some(1));
//! assert_eq!(TokenUses::CapBounded { max_uses: None }.max_uses(), None);
//! # Ok::<(), agent_mandate::domain::ValidationError>(())
//! ```

use std::fmt;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::vault::FundingType;
use crate::domain::{
    ActorId, AttemptId, BuyerId, ContentDigest, CredentialRef, Currency, IdempotencyKey, MandateId,
    Mcc, MerchantId, Money, SellerId, ValidationError, ValidationKind,
};

/// The public id of a token: `tok_` and 32 lower-case hex digits. Not a secret: it appears in
/// the token value (so a redemption finds its record without a search by secret), in audit
/// events and in errors.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TokenId(String);

impl TokenId {
    /// Validates `tok_` + 32 lower-case hex digits.
    pub fn new(text: impl Into<String>) -> Result<TokenId, ValidationError> {
        let text = text.into();
        let ok = text.len() == 36
            && text.starts_with("tok_")
            && text[4..]
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if ok {
            Ok(TokenId(text))
        } else {
            Err(ValidationError::new(
                "token_id",
                ValidationKind::InvalidFormat {
                    expected: "tok_ and 32 lower-case hex digits",
                },
            ))
        }
    }

    /// The id from 16 random bytes.
    pub fn from_bytes(bytes: [u8; 16]) -> TokenId {
        TokenId(format!("tok_{}", hex::encode(bytes)))
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TokenId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for TokenId {
    type Error = ValidationError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        TokenId::new(s)
    }
}

impl From<TokenId> for String {
    fn from(id: TokenId) -> String {
        id.0
    }
}

/// The SHA-256 of a token's secret part (domain-separated, see `tokens::hash_secret`). Its
/// `Debug` shows only a prefix: it is not a secret (the secret has 256 bits of entropy, so
/// the hash cannot be inverted), but nothing needs more than a prefix to tell two apart.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TokenHash(pub [u8; 32]);

impl TokenHash {
    /// Lower-case hex.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Compares in constant time (`subtle`).
    pub fn ct_eq(&self, other: &TokenHash) -> bool {
        bool::from(subtle::ConstantTimeEq::ct_eq(&self.0[..], &other.0[..]))
    }
}

impl fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TokenHash({}..)", &self.to_hex()[..8])
    }
}

impl Serialize for TokenHash {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for TokenHash {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        let mut out = [0u8; 32];
        hex::decode_to_slice(s.as_bytes(), &mut out)
            .map_err(|_| serde::de::Error::custom("expected 64 hex digits"))?;
        Ok(TokenHash(out))
    }
}

/// How often a token may be redeemed. Always stated: there is no default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", deny_unknown_fields)]
pub enum TokenUses {
    /// One successful (or pending) redemption, whatever its amount.
    Single,
    /// Any number of redemptions within the amount caps, and at most `max_uses` when given.
    CapBounded {
        /// Most redemptions (pending or charged); `None`: only the caps bound it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max_uses: Option<u32>,
    },
}

impl TokenUses {
    /// The most uses, if bounded.
    pub fn max_uses(self) -> Option<u32> {
        match self {
            TokenUses::Single => Some(1),
            TokenUses::CapBounded { max_uses } => max_uses,
        }
    }
}

/// A cap on what a token may charge within a rolling period (`100.00 per 30 days`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeriodCap {
    /// Most charged (held or captured) within any period.
    pub amount: Money,
    /// The period's length in seconds (a rolling window ending at the redemption).
    pub period_seconds: u64,
}

/// What a token allows. At least one of `per_use` and `per_period` is given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenLimits {
    /// The currency of every redemption.
    pub currency: Currency,
    /// Most one redemption may charge.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_use: Option<Money>,
    /// Most charged per rolling period.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_period: Option<PeriodCap>,
    /// Single use or cap-bounded multi-use.
    pub uses: TokenUses,
}

/// Who may redeem a token: the provider's principal, and the merchant (and seller) its
/// charges are for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Redeemer {
    /// The provider's id: the redemption must be asked by `Principal::Provider` with this id
    /// (never `Principal::System`: a provider is not the host's own process).
    pub provider: ActorId,
    /// The merchant of record of its charges.
    pub merchant_id: MerchantId,
    /// The seller, on a marketplace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seller_id: Option<SellerId>,
    /// The provider's merchant category code.
    pub mcc: Mcc,
}

/// What a seller may show about the card behind a token (never the card).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenDisplay {
    /// Card brand or network.
    pub brand: String,
    /// Last four digits.
    pub last4: String,
    /// Funding type.
    pub funding: FundingType,
}

/// Whether a token may still be redeemed (expiry and exhaustion are computed, not stored).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenStatus {
    /// Redeemable within its limits.
    Active,
    /// Revoked: never redeemable again.
    Revoked,
}

impl TokenStatus {
    /// The stable wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            TokenStatus::Active => "active",
            TokenStatus::Revoked => "revoked",
        }
    }
}

/// A stored token. Holds the hash of its secret, never the secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenRecord {
    /// Its id.
    pub id: TokenId,
    /// The SHA-256 of its secret part.
    pub hash: TokenHash,
    /// The buyer whose money it spends.
    pub buyer_id: BuyerId,
    /// The actor of the mandate it was issued under (the agent or orchestrator).
    pub issuer: ActorId,
    /// The mandates from the root to the one it was issued under.
    pub lineage: Vec<MandateId>,
    /// Its own child mandate (what it may do).
    pub mandate_id: MandateId,
    /// The vault credential it charges (its own, owned by the token's actor).
    pub credential: CredentialRef,
    /// The orchestrator credential that credential was made from.
    pub source_credential: CredentialRef,
    /// Who may redeem it.
    pub redeemer: Redeemer,
    /// Its limits.
    pub limits: TokenLimits,
    /// What a seller may show.
    pub display: TokenDisplay,
    /// When it was issued.
    pub issued_at: DateTime<Utc>,
    /// When it stops being redeemable.
    pub expires_at: DateTime<Utc>,
    /// Active or revoked.
    pub status: TokenStatus,
    /// When it was revoked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<DateTime<Utc>>,
    /// How far the fan-out of its revocation went (nothing while it is active).
    #[serde(default, skip_serializing_if = "RevocationProgress::is_empty")]
    pub revocation: RevocationProgress,
}

/// How far a revoked token's fan-out went: the steps after the atomic mark (its child
/// mandate, its vault credential, the PSP's side, the `token_revoked` event), so a revocation
/// that failed half-way is finished by a retry. Monotone: a flag once set stays set
/// ([`TokenStore::record_revocation`]).
///
/// ```
/// use agent_mandate::ports::RevocationProgress;
/// let p = RevocationProgress::default();
/// assert!(p.is_empty() && !p.finished);
/// assert!(!RevocationProgress::default().with_psp_revoked().is_empty());
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct RevocationProgress {
    /// The PSP's side of the token is revoked (asked and confirmed).
    #[serde(default)]
    pub psp_revoked: bool,
    /// Every step is done: the mandate and the credential revoked, the PSP's side revoked
    /// (or the PSP keeps none, or refused for good), the `token_revoked` event staged.
    #[serde(default)]
    pub finished: bool,
}

impl RevocationProgress {
    /// Whether no flag is set.
    pub fn is_empty(&self) -> bool {
        !self.psp_revoked && !self.finished
    }

    /// With the PSP's side revoked.
    pub fn with_psp_revoked(mut self) -> Self {
        self.psp_revoked = true;
        self
    }

    /// Finished.
    pub fn with_finished(mut self) -> Self {
        self.finished = true;
        self
    }

    /// The flags of both (set in either).
    pub fn union(self, other: RevocationProgress) -> RevocationProgress {
        RevocationProgress {
            psp_revoked: self.psp_revoked || other.psp_revoked,
            finished: self.finished || other.finished,
        }
    }
}

/// Where a redemption stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "state", deny_unknown_fields)]
pub enum RedemptionState {
    /// Claimed: the charge is on its way (counts as a use).
    Pending,
    /// Charged (captured) by the attempt (counts as a use).
    Charged {
        /// The payment attempt.
        attempt_id: AttemptId,
    },
    /// The PSP's outcome is unknown; the attempt keeps its hold (counts as a use).
    Ambiguous {
        /// The payment attempt.
        attempt_id: AttemptId,
    },
    /// Refused (a decision, a decline): nothing charged, no use counted.
    Refused {
        /// The stable codes of why.
        codes: Vec<String>,
        /// The attempt, when the PSP was asked and declined.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        attempt_id: Option<AttemptId>,
    },
}

impl RedemptionState {
    /// Whether it counts as a use of the token.
    pub fn counts_as_use(&self) -> bool {
        match self {
            RedemptionState::Pending
            | RedemptionState::Charged { .. }
            | RedemptionState::Ambiguous { .. } => true,
            RedemptionState::Refused { .. } => false,
        }
    }

    /// The stable wire name.
    pub fn as_str(&self) -> &'static str {
        match self {
            RedemptionState::Pending => "pending",
            RedemptionState::Charged { .. } => "charged",
            RedemptionState::Ambiguous { .. } => "ambiguous",
            RedemptionState::Refused { .. } => "refused",
        }
    }
}

/// One redemption of a token, keyed by (token, idempotency key).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Redemption {
    /// The token.
    pub token_id: TokenId,
    /// The redeemer's idempotency key.
    pub key: IdempotencyKey,
    /// The fingerprint of what was asked (amount, buyer).
    pub fingerprint: ContentDigest,
    /// The amount asked.
    pub amount: Money,
    /// Where it stands.
    pub state: RedemptionState,
    /// When it was claimed.
    pub claimed_at: DateTime<Utc>,
}

/// What [`TokenStore::claim`] answers.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClaimOutcome {
    /// A new pending redemption was recorded: go on and charge.
    Claimed,
    /// The key was used before with the same fingerprint: the redemption as it is.
    Replay(Redemption),
    /// The key was used before with another fingerprint: nothing done.
    Conflict,
    /// The token is revoked: nothing recorded.
    Revoked,
    /// Every use is taken (pending or charged): nothing recorded.
    Exhausted,
    /// No such token.
    Unknown,
}

/// Which tokens a revocation reaches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "by", deny_unknown_fields)]
pub enum TokenSelector {
    /// One token.
    Token {
        /// The token.
        token_id: TokenId,
    },
    /// Every token issued by an agent (the actor of the mandate it was issued under).
    Issuer {
        /// The agent or orchestrator.
        actor_id: ActorId,
    },
    /// Every token made from an orchestrator credential.
    Credential {
        /// The credential.
        credential: CredentialRef,
    },
    /// Every token issued under a mandate or under a mandate derived from it.
    Mandate {
        /// The mandate.
        mandate_id: MandateId,
    },
}

impl TokenSelector {
    /// Whether `record` is selected.
    pub fn selects(&self, record: &TokenRecord) -> bool {
        match self {
            TokenSelector::Token { token_id } => record.id == *token_id,
            TokenSelector::Issuer { actor_id } => record.issuer == *actor_id,
            TokenSelector::Credential { credential } => record.source_credential == *credential,
            TokenSelector::Mandate { mandate_id } => {
                record.lineage.contains(mandate_id) || record.mandate_id == *mandate_id
            }
        }
    }
}

/// A token store failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenStoreError {
    /// No such token or redemption. Not retryable.
    #[error("no {entity} {id}")]
    NotFound {
        /// What.
        entity: &'static str,
        /// Its id.
        id: String,
    },
    /// A stored record cannot be read back. Not retryable.
    #[error("token store record {key} is unreadable: {message}")]
    Corrupt {
        /// The record's key.
        key: String,
        /// What is wrong.
        message: String,
    },
    /// The store cannot be reached now; retry later.
    #[error("token store unavailable: {message}")]
    Unavailable {
        /// Why.
        message: String,
    },
    /// Anything else an adapter reports.
    #[error("token store error: {0}")]
    Other(Box<dyn std::error::Error + Send + Sync>),
}

impl From<super::StoreError> for TokenStoreError {
    fn from(e: super::StoreError) -> Self {
        match e {
            super::StoreError::Unavailable { message } => TokenStoreError::Unavailable { message },
            other => TokenStoreError::Other(Box::new(other)),
        }
    }
}

/// What [`TokenStore::insert`] answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InsertToken {
    /// Stored now.
    Inserted,
    /// A token with this id exists (a retried issue): the stored record.
    Existing(Box<TokenRecord>),
}

/// Keeps tokens and their redemptions.
///
/// Contract (checked by `testkit::token_store_conformance`): `insert` never overwrites;
/// `claim` is atomic per token: it refuses a revoked token and a token whose uses (pending,
/// charged and ambiguous redemptions) are all taken, answers a key seen before from its
/// record (`Replay` with the same fingerprint, `Conflict` with another), and otherwise records
/// a pending redemption; `settle` moves a pending redemption to its final state once (a
/// settled one is left as it is); `revoke` marks every active selected token revoked in one
/// atomic step and returns those it revoked now (already revoked ones are not returned), so a
/// claim either happens before the revocation or is refused after it; `record_revocation`
/// only ever sets flags, and only on a revoked token.
#[async_trait]
pub trait TokenStore: Send + Sync + fmt::Debug {
    /// Stores a new token.
    async fn insert(&self, record: &TokenRecord) -> Result<InsertToken, TokenStoreError>;

    /// A token by id.
    async fn token(&self, id: &TokenId) -> Result<Option<TokenRecord>, TokenStoreError>;

    /// Claims one use of `redemption.token_id` for `redemption.key` (its state is `Pending`).
    async fn claim(&self, redemption: &Redemption) -> Result<ClaimOutcome, TokenStoreError>;

    /// Records the end of a pending redemption; returns the redemption as stored after.
    async fn settle(
        &self,
        token_id: &TokenId,
        key: &IdempotencyKey,
        state: &RedemptionState,
    ) -> Result<Redemption, TokenStoreError>;

    /// The redemptions of a token, oldest first.
    async fn redemptions(&self, token_id: &TokenId) -> Result<Vec<Redemption>, TokenStoreError>;

    /// The redemption of `token_id` under `key`, if claimed. A redemption looks it up before
    /// the token's status and time are checked (they apply to new claims only). The provided
    /// implementation scans [`TokenStore::redemptions`]; the crate's adapters read it by key.
    async fn redemption(
        &self,
        token_id: &TokenId,
        key: &IdempotencyKey,
    ) -> Result<Option<Redemption>, TokenStoreError> {
        Ok(self
            .redemptions(token_id)
            .await?
            .into_iter()
            .find(|r| r.key == *key))
    }

    /// Revokes every active selected token at `at`; returns those revoked now.
    async fn revoke(
        &self,
        selector: &TokenSelector,
        at: DateTime<Utc>,
    ) -> Result<Vec<TokenRecord>, TokenStoreError>;

    /// Every selected token (active or not), by id.
    async fn tokens(&self, selector: &TokenSelector) -> Result<Vec<TokenRecord>, TokenStoreError>;

    /// Sets the flags of `progress` on a revoked token's [`TokenRecord::revocation`] (never
    /// clears one); returns the record after. An active token is left as it is (its fan-out
    /// has not begun) and returned; an unknown one is `None`.
    async fn record_revocation(
        &self,
        id: &TokenId,
        progress: RevocationProgress,
    ) -> Result<Option<TokenRecord>, TokenStoreError>;
}

/// A source of token values: 32 bytes of secret and 16 of id per token. Implementations
/// must be cryptographically secure (the OS RNG: `tokens::OsTokenGenerator`); a deterministic
/// one is for tests only (`testkit::SeededTokenGenerator`).
pub trait TokenGenerator: Send + Sync + fmt::Debug {
    /// Fills `out` with random bytes, or fails (the OS RNG unavailable).
    fn fill(&self, out: &mut [u8]) -> Result<(), TokenGeneratorError>;
}

/// The generator could not produce randomness. Retryable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no randomness for a token: {message}")]
pub struct TokenGeneratorError {
    /// Why.
    pub message: String,
}
