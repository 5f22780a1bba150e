//! Mandates: the platform's structured record of delegated authority, and their lifecycle.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::error::{check_len, err, ValidationError, ValidationKind};
use super::ids::{ActorId, BuyerId, EvidenceRef, MandateId, Text};
use super::money::{Currency, Money, MoneyError};
use super::scope::{CartBinding, ConfirmationCondition, MandateScope, MerchantScope};

pub use super::limits::{MAX_LIST, MAX_WINDOWS, MAX_WINDOW_SECONDS};

/// What kind of party an actor is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum ActorKind {
    /// A person.
    Human,
    /// An AI agent.
    Agent,
    /// A system process.
    System,
}

/// A party that requests payment actions.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(
    feature = "json-schema",
    derive(schemars::JsonSchema),
    schemars(rename = "Actor")
)]
#[serde(remote = "Self")]
#[serde(deny_unknown_fields)]
pub struct Actor {
    /// Its id.
    pub id: ActorId,
    /// Its kind.
    pub kind: ActorKind,
}

/// Where a mandate is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum MandateStatus {
    /// Created, waiting for the buyer.
    PendingConfirmation,
    /// Usable.
    Active,
    /// Used up.
    Used,
    /// Past its expiry.
    Expired,
    /// Revoked by the buyer, support or a rule.
    Revoked,
    /// Refused by the buyer.
    Rejected,
}

impl MandateStatus {
    /// Every status, in lifecycle order.
    pub const ALL: [MandateStatus; 6] = [
        MandateStatus::PendingConfirmation,
        MandateStatus::Active,
        MandateStatus::Used,
        MandateStatus::Expired,
        MandateStatus::Revoked,
        MandateStatus::Rejected,
    ];

    /// Whether no event leaves this status.
    pub fn is_terminal(self) -> bool {
        match self {
            MandateStatus::PendingConfirmation | MandateStatus::Active => false,
            MandateStatus::Used
            | MandateStatus::Expired
            | MandateStatus::Revoked
            | MandateStatus::Rejected => true,
        }
    }

    /// The stable wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            MandateStatus::PendingConfirmation => "pending_confirmation",
            MandateStatus::Active => "active",
            MandateStatus::Used => "used",
            MandateStatus::Expired => "expired",
            MandateStatus::Revoked => "revoked",
            MandateStatus::Rejected => "rejected",
        }
    }
}

impl fmt::Display for MandateStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Status plus the timestamps and reasons of how it got there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(
    feature = "json-schema",
    derive(schemars::JsonSchema),
    schemars(rename = "Lifecycle")
)]
#[serde(remote = "Self")]
#[serde(deny_unknown_fields)]
pub struct Lifecycle {
    /// Current status.
    pub status: MandateStatus,
    /// Creation time.
    #[serde(deserialize_with = "crate::domain::canonical::time")]
    pub created_at: DateTime<Utc>,
    /// When the buyer confirmed it (became active).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[serde(deserialize_with = "crate::domain::canonical::opt_time")]
    pub activated_at: Option<DateTime<Utc>>,
    /// When it was used up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[serde(deserialize_with = "crate::domain::canonical::opt_time")]
    pub used_at: Option<DateTime<Utc>>,
    /// When it was marked expired.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[serde(deserialize_with = "crate::domain::canonical::opt_time")]
    pub expired_at: Option<DateTime<Utc>>,
    /// When it was revoked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[serde(deserialize_with = "crate::domain::canonical::opt_time")]
    pub revoked_at: Option<DateTime<Utc>>,
    /// Why it was revoked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_reason: Option<Text>,
    /// When it was rejected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[serde(deserialize_with = "crate::domain::canonical::opt_time")]
    pub rejected_at: Option<DateTime<Utc>>,
    /// Why it was rejected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejected_reason: Option<Text>,
}

impl Lifecycle {
    /// A fresh lifecycle in `status` (`Active` or `PendingConfirmation`).
    pub fn new(status: MandateStatus, created_at: DateTime<Utc>) -> Lifecycle {
        Lifecycle {
            status,
            created_at,
            activated_at: (status == MandateStatus::Active).then_some(created_at),
            used_at: None,
            expired_at: None,
            revoked_at: None,
            revoked_reason: None,
            rejected_at: None,
            rejected_reason: None,
        }
    }
}

/// An event of the mandate lifecycle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(
    feature = "json-schema",
    derive(schemars::JsonSchema),
    schemars(rename = "LifecycleEvent")
)]
#[serde(remote = "Self")]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum LifecycleEvent {
    /// The buyer confirmed the mandate.
    Confirm,
    /// The buyer refused it.
    Reject {
        /// Why.
        reason: Text,
    },
    /// Authority withdrawn.
    Revoke {
        /// Why.
        reason: Text,
    },
    /// All its uses are spent.
    MarkUsed,
    /// Its validity ended.
    Expire,
}

impl LifecycleEvent {
    /// The stable wire name.
    pub fn as_str(&self) -> &'static str {
        match self {
            LifecycleEvent::Confirm => "confirm",
            LifecycleEvent::Reject { .. } => "reject",
            LifecycleEvent::Revoke { .. } => "revoke",
            LifecycleEvent::MarkUsed => "mark_used",
            LifecycleEvent::Expire => "expire",
        }
    }
}

/// An illegal lifecycle transition. The mandate is left as it was.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("mandate {mandate_id}: cannot {event} while {status}")]
pub struct LifecycleError {
    /// The mandate.
    pub mandate_id: MandateId,
    /// Its status.
    pub status: MandateStatus,
    /// The refused event.
    pub event: &'static str,
}

/// The plain data of a mandate, as given. [`Mandate::new`] validates it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(
    feature = "json-schema",
    derive(schemars::JsonSchema),
    schemars(rename = "MandateSpec")
)]
#[serde(remote = "Self")]
#[serde(deny_unknown_fields)]
pub struct MandateSpec {
    /// The mandate's id.
    pub id: MandateId,
    /// The buyer whose authority this is.
    pub buyer_id: BuyerId,
    /// The actor allowed to act.
    pub actor: Actor,
    /// The mandate this one was derived from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_id: Option<MandateId>,
    /// What it permits.
    pub scope: MandateScope,
    /// Where it is in its life.
    pub lifecycle: Lifecycle,
    /// Evidence it rests on (an AP2 mandate, a signed instruction).
    #[serde(default)]
    pub evidence_refs: Vec<EvidenceRef>,
}

/// A validated mandate.
///
/// Rules: every amount of the scope is in the scope's currency; `expires_at` after
/// `not_before`; at least one action; lists at most 1,000 long and free of duplicates; at most
/// 16 windows ([`MAX_WINDOWS`]), each 1 s to 10 years long and limiting something; a mandate is
/// not its own parent; the lifecycle timestamps match the status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
#[serde(try_from = "MandateSpec", into = "MandateSpec")]
pub struct Mandate {
    spec: MandateSpec,
}

impl Mandate {
    /// Validates `spec`.
    pub fn new(spec: MandateSpec) -> Result<Mandate, ValidationError> {
        validate(&spec)?;
        Ok(Mandate { spec })
    }

    /// The plain data.
    pub fn spec(&self) -> &MandateSpec {
        &self.spec
    }

    /// The id.
    pub fn id(&self) -> &MandateId {
        &self.spec.id
    }

    /// The buyer.
    pub fn buyer_id(&self) -> &BuyerId {
        &self.spec.buyer_id
    }

    /// The actor.
    pub fn actor(&self) -> &Actor {
        &self.spec.actor
    }

    /// The parent, for a derived mandate.
    pub fn parent_id(&self) -> Option<&MandateId> {
        self.spec.parent_id.as_ref()
    }

    /// The scope.
    pub fn scope(&self) -> &MandateScope {
        &self.spec.scope
    }

    /// The currency of the authority.
    pub fn currency(&self) -> Currency {
        self.spec.scope.currency.currency
    }

    /// The lifecycle.
    pub fn lifecycle(&self) -> &Lifecycle {
        &self.spec.lifecycle
    }

    /// The current status.
    pub fn status(&self) -> MandateStatus {
        self.spec.lifecycle.status
    }

    /// Applies a lifecycle event at `now`. The table of legal transitions:
    ///
    /// | from                   | confirm | reject   | revoke  | mark_used | expire  |
    /// |------------------------|---------|----------|---------|-----------|---------|
    /// | `pending_confirmation` | active  | rejected | revoked | -         | expired |
    /// | `active`               | -       | -        | revoked | used      | expired |
    /// | terminal               | -       | -        | -       | -         | -       |
    ///
    /// Confirming at or after `expires_at` is refused too. Terminal states absorb: every event
    /// on them is an error and nothing changes.
    ///
    /// ```
    /// # use agent_mandate::domain::*;
    /// # let m = agent_mandate::domain::examples::travel_backpack_mandate();
    /// # let now = m.scope().validity.not_before;
    /// let revoked = m.apply(&LifecycleEvent::Revoke { reason: "buyer changed mind".parse().unwrap() }, now).unwrap();
    /// assert_eq!(revoked.status(), MandateStatus::Revoked);
    /// assert!(revoked.apply(&LifecycleEvent::Confirm, now).is_err());
    /// ```
    pub fn apply(
        &self,
        event: &LifecycleEvent,
        now: DateTime<Utc>,
    ) -> Result<Mandate, LifecycleError> {
        use LifecycleEvent as E;
        use MandateStatus as S;
        let refuse = || LifecycleError {
            mandate_id: self.spec.id.clone(),
            status: self.status(),
            event: event.as_str(),
        };
        let mut next = self.spec.lifecycle.clone();
        match (self.status(), event) {
            (S::PendingConfirmation, E::Confirm) => {
                if now >= self.spec.scope.validity.expires_at {
                    return Err(refuse());
                }
                next.status = S::Active;
                next.activated_at = Some(now);
            }
            (S::PendingConfirmation, E::Reject { reason }) => {
                next.status = S::Rejected;
                next.rejected_at = Some(now);
                next.rejected_reason = Some(reason.clone());
            }
            (S::PendingConfirmation | S::Active, E::Revoke { reason }) => {
                next.status = S::Revoked;
                next.revoked_at = Some(now);
                next.revoked_reason = Some(reason.clone());
            }
            (S::Active, E::MarkUsed) => {
                next.status = S::Used;
                next.used_at = Some(now);
            }
            (S::PendingConfirmation | S::Active, E::Expire) => {
                next.status = S::Expired;
                next.expired_at = Some(now);
            }
            (S::PendingConfirmation, E::MarkUsed)
            | (S::Active, E::Confirm | E::Reject { .. })
            | (S::Used | S::Expired | S::Revoked | S::Rejected, _) => return Err(refuse()),
        }
        let mut spec = self.spec.clone();
        spec.lifecycle = next;
        Ok(Mandate { spec })
    }
}

impl TryFrom<MandateSpec> for Mandate {
    type Error = ValidationError;
    fn try_from(spec: MandateSpec) -> Result<Self, Self::Error> {
        Mandate::new(spec)
    }
}

impl From<Mandate> for MandateSpec {
    fn from(m: Mandate) -> Self {
        m.spec
    }
}

fn same_currency(field: &str, money: &Money, currency: Currency) -> Result<(), ValidationError> {
    if money.currency() != currency {
        return Err(err(
            field,
            ValidationKind::Money(MoneyError::CurrencyMismatch {
                left: currency,
                right: money.currency(),
            }),
        ));
    }
    Ok(())
}

fn unique<T: Ord + fmt::Display>(field: &str, items: &[T]) -> Result<(), ValidationError> {
    check_len(field, items, MAX_LIST)?;
    let mut sorted: Vec<&T> = items.iter().collect();
    sorted.sort();
    if let Some(w) = sorted.windows(2).find(|w| w[0] == w[1]) {
        return Err(err(
            field,
            ValidationKind::Duplicate {
                value: w[0].to_string(),
            },
        ));
    }
    Ok(())
}

fn validate(spec: &MandateSpec) -> Result<(), ValidationError> {
    let scope = &spec.scope;
    let currency = scope.currency.currency;
    if spec.parent_id.as_ref() == Some(&spec.id) {
        return Err(err(
            "parent_id",
            ValidationKind::Inconsistent {
                reason: "a mandate cannot be its own parent",
            },
        ));
    }
    match &scope.merchants {
        MerchantScope::Single { .. } => {}
        MerchantScope::Marketplace {
            allowed_sellers, ..
        } => {
            if let Some(sellers) = allowed_sellers {
                unique("scope.merchants.allowed_sellers", sellers)?;
            }
        }
        MerchantScope::Allowlist { merchant_ids } => {
            if merchant_ids.is_empty() {
                return Err(err("scope.merchants.merchant_ids", ValidationKind::Empty));
            }
            unique("scope.merchants.merchant_ids", merchant_ids)?;
        }
    }
    if let Some(mccs) = &scope.mccs {
        unique("scope.mccs", mccs)?;
    }
    if let CartBinding::Open {
        allowed_skus: Some(skus),
        ..
    } = &scope.cart
    {
        unique("scope.cart.allowed_skus", skus)?;
    }
    same_currency(
        "scope.amount.max_amount",
        &scope.amount.max_amount,
        currency,
    )?;
    if let Some(m) = &scope.budgets.per_transaction {
        same_currency("scope.budgets.per_transaction", m, currency)?;
    }
    if let Some(m) = &scope.budgets.lifetime {
        same_currency("scope.budgets.lifetime", m, currency)?;
    }
    check_len("scope.budgets.windows", &scope.budgets.windows, MAX_WINDOWS)?;
    for (i, w) in scope.budgets.windows.iter().enumerate() {
        let field = format!("scope.budgets.windows[{i}]");
        if w.window_seconds == 0 || w.window_seconds > MAX_WINDOW_SECONDS {
            return Err(err(
                format!("{field}.window_seconds"),
                ValidationKind::OutOfRange {
                    min: 1,
                    max: MAX_WINDOW_SECONDS,
                    value: w.window_seconds,
                },
            ));
        }
        if w.max_amount.is_none() && w.max_count.is_none() {
            return Err(err(
                field,
                ValidationKind::Inconsistent {
                    reason: "a window must limit an amount, a count or both",
                },
            ));
        }
        if let Some(m) = &w.max_amount {
            same_currency(&format!("{field}.max_amount"), m, currency)?;
        }
    }
    if scope.actions.is_empty() {
        return Err(err("scope.actions", ValidationKind::Empty));
    }
    check_len(
        "scope.confirmation.conditions",
        &scope.confirmation.conditions,
        MAX_LIST,
    )?;
    for (i, c) in scope.confirmation.conditions.iter().enumerate() {
        if let ConfirmationCondition::AboveAmount { amount } = c {
            same_currency(
                &format!("scope.confirmation.conditions[{i}].amount"),
                amount,
                currency,
            )?;
        }
    }
    if let Some(b) = &scope.confirmation.baseline {
        same_currency("scope.confirmation.baseline.total", &b.total, currency)?;
        same_currency(
            "scope.confirmation.baseline.shipping",
            &b.shipping,
            currency,
        )?;
    }
    if scope.validity.expires_at <= scope.validity.not_before {
        return Err(err(
            "scope.validity.expires_at",
            ValidationKind::NotAfter {
                after: "not_before",
            },
        ));
    }
    unique("evidence_refs", &spec.evidence_refs)?;
    validate_lifecycle(&spec.lifecycle)
}

fn validate_lifecycle(l: &Lifecycle) -> Result<(), ValidationError> {
    let need = |present: bool, field: &'static str| {
        if present {
            Ok(())
        } else {
            Err(err(
                format!("lifecycle.{field}"),
                ValidationKind::Inconsistent {
                    reason: "required by the status",
                },
            ))
        }
    };
    match l.status {
        MandateStatus::PendingConfirmation => Ok(()),
        MandateStatus::Active => need(l.activated_at.is_some(), "activated_at"),
        MandateStatus::Used => need(l.used_at.is_some(), "used_at"),
        MandateStatus::Expired => need(l.expired_at.is_some(), "expired_at"),
        MandateStatus::Revoked => need(l.revoked_at.is_some(), "revoked_at"),
        MandateStatus::Rejected => need(l.rejected_at.is_some(), "rejected_at"),
    }
}

crate::json::object_only!(Actor);
crate::json::object_only!(Lifecycle);
crate::json::object_only!(LifecycleEvent);
crate::json::object_only!(MandateSpec);
