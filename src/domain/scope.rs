//! The scope of a mandate: what, where, how much, how often and under which confirmation rule.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::ser::{SerializeSeq, Serializer};
use serde::{Deserialize, Serialize};

use super::canonical::{ContentDigest, SnapshotId};
use super::ids::{MarketplaceId, Mcc, MerchantId, SellerId, Sku};
use super::money::{Currency, Money};
use super::snapshot::CartSnapshot;

/// Which merchants a mandate covers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(
    feature = "json-schema",
    derive(schemars::JsonSchema),
    schemars(rename = "MerchantScope")
)]
#[serde(remote = "Self")]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum MerchantScope {
    /// Exactly one merchant of record.
    Single {
        /// The merchant.
        merchant_id: MerchantId,
    },
    /// A marketplace, optionally limited to some sellers (absent: any seller of it).
    Marketplace {
        /// The marketplace operator.
        marketplace_id: MarketplaceId,
        /// Sellers allowed on it; `None` means every seller of the marketplace.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        allowed_sellers: Option<Vec<SellerId>>,
    },
    /// Any merchant of a list.
    Allowlist {
        /// The merchants.
        merchant_ids: Vec<MerchantId>,
    },
}

/// What a mandate is bound to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(
    feature = "json-schema",
    derive(schemars::JsonSchema),
    schemars(rename = "CartBinding")
)]
#[serde(remote = "Self")]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum CartBinding {
    /// Exactly one cart snapshot.
    Snapshot {
        /// The snapshot id.
        snapshot_id: SnapshotId,
    },
    /// An open intent: any cart within the other limits of the scope, optionally narrowed.
    Open {
        /// SKUs that may be bought; `None` means any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        allowed_skus: Option<Vec<Sku>>,
        /// Most line items a cart may have; `None` means no limit beyond the snapshot's own.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max_line_items: Option<u32>,
    },
}

/// The amount limit and what it covers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(
    feature = "json-schema",
    derive(schemars::JsonSchema),
    schemars(rename = "AmountScope")
)]
#[serde(remote = "Self")]
#[serde(deny_unknown_fields)]
pub struct AmountScope {
    /// The most that may be charged (in the scope's currency).
    pub max_amount: Money,
    /// Whether shipping counts against `max_amount`.
    pub includes_shipping: bool,
    /// Whether tax counts against `max_amount`.
    pub includes_tax: bool,
    /// Whether a final amount below `max_amount` is acceptable without a new mandate.
    pub allow_lower_amount: bool,
    /// Whether a capture may be for less than the authorized amount.
    pub allow_partial_capture: bool,
    /// Most payment attempts (authorizations) allowed; `None` means no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_payment_attempts: Option<u32>,
}

/// The currency of the authority.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(
    feature = "json-schema",
    derive(schemars::JsonSchema),
    schemars(rename = "CurrencyScope")
)]
#[serde(remote = "Self")]
#[serde(deny_unknown_fields)]
pub struct CurrencyScope {
    /// The currency.
    pub currency: Currency,
    /// Whether a converted payment may be made. This version evaluates no conversion flow: a
    /// checkout in another currency is blocked with `CURRENCY_MISMATCH` either way; the flag is
    /// kept so delegation can refuse a child that would allow what its parent does not.
    #[serde(default)]
    pub conversion_allowed: bool,
}

/// A rolling window limit (`24 h: at most 500.00 and 10 payments`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(
    feature = "json-schema",
    derive(schemars::JsonSchema),
    schemars(rename = "WindowLimit")
)]
#[serde(remote = "Self")]
#[serde(deny_unknown_fields)]
pub struct WindowLimit {
    /// Length of the window in seconds (1 s to 10 years).
    pub window_seconds: u64,
    /// Most held + spent inside the window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_amount: Option<Money>,
    /// Most payments inside the window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_count: Option<u32>,
}

/// Spending controls.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(
    feature = "json-schema",
    derive(schemars::JsonSchema),
    schemars(rename = "Budgets")
)]
#[serde(remote = "Self")]
#[serde(deny_unknown_fields)]
pub struct Budgets {
    /// Most one payment may be for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_transaction: Option<Money>,
    /// Rolling windows.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub windows: Vec<WindowLimit>,
    /// Most held + spent over the mandate's life.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifetime: Option<Money>,
}

/// A payment action an actor may request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum PaymentAction {
    /// Prepare a payment (no money moves).
    #[serde(rename = "prepare_payment")]
    Prepare,
    /// Authorize (place money on hold at the PSP).
    #[serde(rename = "authorize_payment")]
    Authorize,
    /// Capture an authorization, fully or partly.
    #[serde(rename = "capture_payment")]
    Capture,
    /// Refund a capture, fully or partly.
    #[serde(rename = "refund_payment")]
    Refund,
    /// Commit the order.
    CommitOrder,
}

impl PaymentAction {
    /// Every action, in wire order.
    pub const ALL: [PaymentAction; 5] = [
        PaymentAction::Prepare,
        PaymentAction::Authorize,
        PaymentAction::Capture,
        PaymentAction::Refund,
        PaymentAction::CommitOrder,
    ];

    /// The stable wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            PaymentAction::Prepare => "prepare_payment",
            PaymentAction::Authorize => "authorize_payment",
            PaymentAction::Capture => "capture_payment",
            PaymentAction::Refund => "refund_payment",
            PaymentAction::CommitOrder => "commit_order",
        }
    }

    /// Whether the action creates new spend (and so is checked against budgets).
    pub fn creates_spend(self) -> bool {
        match self {
            PaymentAction::Prepare | PaymentAction::Authorize => true,
            PaymentAction::Capture | PaymentAction::Refund | PaymentAction::CommitOrder => false,
        }
    }

    fn bit(self) -> u8 {
        match self {
            PaymentAction::Prepare => 1,
            PaymentAction::Authorize => 2,
            PaymentAction::Capture => 4,
            PaymentAction::Refund => 8,
            PaymentAction::CommitOrder => 16,
        }
    }
}

impl fmt::Display for PaymentAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A set of actions (serialised as a sorted list of wire names).
///
/// ```
/// use agent_mandate::domain::{ActionSet, PaymentAction};
/// let set: ActionSet = [PaymentAction::Authorize, PaymentAction::Capture].into_iter().collect();
/// assert!(set.contains(PaymentAction::Capture));
/// assert!(!set.contains(PaymentAction::Refund));
/// ```
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct ActionSet(u8);

impl ActionSet {
    /// No action.
    pub const EMPTY: ActionSet = ActionSet(0);

    /// Whether `action` is in the set.
    pub fn contains(self, action: PaymentAction) -> bool {
        self.0 & action.bit() != 0
    }

    /// Adds `action`.
    pub fn insert(&mut self, action: PaymentAction) {
        self.0 |= action.bit();
    }

    /// Whether every action of `self` is in `other`.
    pub fn is_subset_of(self, other: ActionSet) -> bool {
        self.0 & !other.0 == 0
    }

    /// Whether the set is empty.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The actions, in wire order.
    pub fn iter(self) -> impl Iterator<Item = PaymentAction> {
        PaymentAction::ALL
            .into_iter()
            .filter(move |a| self.contains(*a))
    }
}

impl FromIterator<PaymentAction> for ActionSet {
    fn from_iter<I: IntoIterator<Item = PaymentAction>>(iter: I) -> Self {
        let mut set = ActionSet::EMPTY;
        for a in iter {
            set.insert(a);
        }
        set
    }
}

impl fmt::Debug for ActionSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

impl Serialize for ActionSet {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(None)?;
        for a in self.iter() {
            seq.serialize_element(&a)?;
        }
        seq.end()
    }
}

impl<'de> Deserialize<'de> for ActionSet {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ActionSet;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list of payment actions")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<ActionSet, A::Error> {
                let mut set = ActionSet::EMPTY;
                while let Some(a) = seq.next_element::<PaymentAction>()? {
                    if set.contains(a) {
                        return Err(de::Error::custom(format!("duplicate action {a}")));
                    }
                    set.insert(a);
                }
                Ok(set)
            }
        }
        d.deserialize_seq(V)
    }
}

/// How urgent the agent says a purchase is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum Urgency {
    /// Normal.
    Routine,
    /// Should happen soon.
    TimeSensitive,
    /// The agent claims it cannot wait.
    Critical,
}

impl Urgency {
    /// The stable wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Urgency::Routine => "routine",
            Urgency::TimeSensitive => "time_sensitive",
            Urgency::Critical => "critical",
        }
    }
}

/// One condition under which the buyer must confirm. A rule holds a list of them; any one that
/// applies requires a confirmation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(
    feature = "json-schema",
    derive(schemars::JsonSchema),
    schemars(rename = "ConfirmationCondition")
)]
#[serde(remote = "Self")]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum ConfirmationCondition {
    /// Every payment.
    Always,
    /// Payments above an amount.
    AboveAmount {
        /// The threshold (a payment of exactly this amount needs no confirmation).
        amount: Money,
    },
    /// Requests whose stated urgency is at least this.
    UrgencyAtLeast {
        /// The threshold.
        urgency: Urgency,
    },
    /// The total differs from the baseline.
    AmountChanged,
    /// The items differ from the baseline.
    CartChanged,
    /// The shipping amount differs from the baseline.
    ShippingChanged,
    /// The policy references differ from the baseline.
    PolicyChanged,
}

/// What the buyer saw when granting the mandate, for the `*_changed` conditions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(
    feature = "json-schema",
    derive(schemars::JsonSchema),
    schemars(rename = "Baseline")
)]
#[serde(remote = "Self")]
#[serde(deny_unknown_fields)]
pub struct Baseline {
    /// The snapshot seen.
    pub snapshot_id: SnapshotId,
    /// Its total.
    pub total: Money,
    /// Its shipping.
    pub shipping: Money,
    /// Digest of its items.
    pub items_digest: ContentDigest,
    /// Digest of its policy references.
    pub policy_digest: ContentDigest,
}

impl Baseline {
    /// The baseline of a snapshot.
    pub fn of(snapshot: &CartSnapshot) -> Baseline {
        Baseline {
            snapshot_id: snapshot.id(),
            total: snapshot.total(),
            shipping: snapshot.totals().shipping,
            items_digest: snapshot.items_digest(),
            policy_digest: snapshot.policy_digest(),
        }
    }
}

/// When the buyer must confirm. Empty conditions: never.
///
/// The rule "confirm above 200.00 or when urgency is critical":
///
/// ```
/// use agent_mandate::domain::{ConfirmationCondition, ConfirmationRule, Currency, Money, Urgency};
/// let rule = ConfirmationRule {
///     conditions: vec![
///         ConfirmationCondition::AboveAmount { amount: Money::parse("200.00", Currency::USD).unwrap() },
///         ConfirmationCondition::UrgencyAtLeast { urgency: Urgency::Critical },
///     ],
///     baseline: None,
/// };
/// assert!(!rule.is_never());
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(
    feature = "json-schema",
    derive(schemars::JsonSchema),
    schemars(rename = "ConfirmationRule")
)]
#[serde(remote = "Self")]
#[serde(deny_unknown_fields)]
pub struct ConfirmationRule {
    /// Conditions, any of which requires a confirmation.
    #[serde(default)]
    pub conditions: Vec<ConfirmationCondition>,
    /// The snapshot the `*_changed` conditions compare with. Without one, any `*_changed`
    /// condition counts as changed (deny by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<Baseline>,
}

impl ConfirmationRule {
    /// The rule that never asks.
    pub fn never() -> ConfirmationRule {
        ConfirmationRule::default()
    }

    /// The rule that always asks.
    pub fn always() -> ConfirmationRule {
        ConfirmationRule {
            conditions: vec![ConfirmationCondition::Always],
            baseline: None,
        }
    }

    /// Whether the rule never asks.
    pub fn is_never(&self) -> bool {
        self.conditions.is_empty()
    }
}

/// When a mandate may be used: `not_before <= now < expires_at`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(
    feature = "json-schema",
    derive(schemars::JsonSchema),
    schemars(rename = "Validity")
)]
#[serde(remote = "Self")]
#[serde(deny_unknown_fields)]
pub struct Validity {
    /// First instant of use.
    #[serde(deserialize_with = "crate::domain::canonical::time")]
    pub not_before: DateTime<Utc>,
    /// First instant it may no longer be used.
    #[serde(deserialize_with = "crate::domain::canonical::time")]
    pub expires_at: DateTime<Utc>,
}

impl Validity {
    /// Whether `now` is inside the window.
    pub fn contains(&self, now: DateTime<Utc>) -> bool {
        self.not_before <= now && now < self.expires_at
    }
}

/// Everything a mandate permits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(
    feature = "json-schema",
    derive(schemars::JsonSchema),
    schemars(rename = "MandateScope")
)]
#[serde(remote = "Self")]
#[serde(deny_unknown_fields)]
pub struct MandateScope {
    /// Which merchants.
    pub merchants: MerchantScope,
    /// Merchant category codes allowed; `None` means any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mccs: Option<Vec<Mcc>>,
    /// Which cart.
    pub cart: CartBinding,
    /// How much.
    pub amount: AmountScope,
    /// In which currency.
    pub currency: CurrencyScope,
    /// Spending controls.
    #[serde(default)]
    pub budgets: Budgets,
    /// Which actions.
    pub actions: ActionSet,
    /// When the buyer must confirm.
    #[serde(default)]
    pub confirmation: ConfirmationRule,
    /// How many payments the mandate may be used for; `None` means no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_uses: Option<u32>,
    /// When.
    pub validity: Validity,
}

impl MandateScope {
    /// The scope of exactly one payment of exactly `amount`: one merchant, any MCC, the given
    /// cart binding, authorize and capture only, no confirmation, one use, one attempt, the
    /// amount as the per-transaction and lifetime limit, shipping and tax included, no currency
    /// conversion, no partial capture.
    ///
    /// This is what a payment for a priced offer (an HTTP 402 challenge, a delegated allowance)
    /// becomes. Narrow or loosen single fields afterwards where the form allows it, for example
    /// `mccs` for the seller's category or `amount.allow_lower_amount` for an allowance that is
    /// a maximum rather than a price.
    ///
    /// ```
    /// use agent_mandate::domain::{CartBinding, Currency, MandateScope, MerchantId, Money, Validity};
    /// use chrono::{Duration, TimeZone, Utc};
    ///
    /// let now = Utc.with_ymd_and_hms(2026, 5, 4, 12, 0, 0).unwrap();
    /// let amount = Money::parse("12.50", Currency::EUR).unwrap();
    /// let scope = MandateScope::one_payment(
    ///     MerchantId::new("m_books").unwrap(),
    ///     CartBinding::Open { allowed_skus: None, max_line_items: None },
    ///     amount,
    ///     Validity { not_before: now, expires_at: now + Duration::minutes(5) },
    /// );
    /// assert_eq!(scope.max_uses, Some(1));
    /// assert_eq!(scope.budgets.lifetime, Some(amount));
    /// assert!(!scope.amount.allow_lower_amount);
    /// ```
    pub fn one_payment(
        merchant_id: MerchantId,
        cart: CartBinding,
        amount: Money,
        validity: Validity,
    ) -> MandateScope {
        MandateScope {
            merchants: MerchantScope::Single { merchant_id },
            mccs: None,
            cart,
            amount: AmountScope {
                max_amount: amount,
                includes_shipping: true,
                includes_tax: true,
                allow_lower_amount: false,
                allow_partial_capture: false,
                max_payment_attempts: Some(1),
            },
            currency: CurrencyScope {
                currency: amount.currency(),
                conversion_allowed: false,
            },
            budgets: Budgets {
                per_transaction: Some(amount),
                windows: Vec::new(),
                lifetime: Some(amount),
            },
            actions: [PaymentAction::Authorize, PaymentAction::Capture]
                .into_iter()
                .collect::<ActionSet>(),
            confirmation: ConfirmationRule::never(),
            max_uses: Some(1),
            validity,
        }
    }
}

crate::json::object_only!(MerchantScope);
crate::json::object_only!(CartBinding);
crate::json::object_only!(AmountScope);
crate::json::object_only!(CurrencyScope);
crate::json::object_only!(WindowLimit);
crate::json::object_only!(Budgets);
crate::json::object_only!(ConfirmationCondition);
crate::json::object_only!(Baseline);
crate::json::object_only!(ConfirmationRule);
crate::json::object_only!(Validity);
crate::json::object_only!(MandateScope);
