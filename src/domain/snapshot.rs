//! Cart snapshots: the immutable record of what was evaluated, identified by a content hash.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::canonical::{canonical_sha256, Canonical, ContentDigest, Jcs, Sink, SnapshotId};
use super::error::{check_len, err, ValidationError, ValidationKind};
use super::ids::{
    CartId, EvidenceRef, MarketplaceId, Mcc, MerchantId, Region, SellerId, Sku, Text,
};
use super::money::{Currency, Money};

pub use super::limits::{MAX_ITEMS, MAX_QUANTITY, MAX_REFS};

/// The merchant of a checkout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(
    feature = "json-schema",
    derive(schemars::JsonSchema),
    schemars(rename = "Merchant")
)]
#[serde(remote = "Self")]
#[serde(deny_unknown_fields)]
pub struct Merchant {
    /// Merchant of record.
    pub merchant_id: MerchantId,
    /// Marketplace operator, when the sale goes through one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub marketplace_id: Option<MarketplaceId>,
    /// Seller on the marketplace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seller_id: Option<SellerId>,
    /// Merchant category code.
    pub mcc: Mcc,
}

impl Canonical for Merchant {
    fn write_canonical<S: Sink>(&self, o: &mut Jcs<'_, S>) {
        o.begin();
        o.field_opt("marketplace_id", self.marketplace_id.as_ref());
        o.field_str("mcc", self.mcc.as_str());
        o.field_str("merchant_id", self.merchant_id.as_str());
        o.field_opt("seller_id", self.seller_id.as_ref());
        o.end();
    }
}

/// One line of a cart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(
    feature = "json-schema",
    derive(schemars::JsonSchema),
    schemars(rename = "LineItem")
)]
#[serde(remote = "Self")]
#[serde(deny_unknown_fields)]
pub struct LineItem {
    /// Stock-keeping unit.
    pub sku: Sku,
    /// What the buyer sees.
    pub description: Text,
    /// At least 1, at most 1,000,000 (checked when deserialised and by [`CartSnapshot::new`]).
    #[serde(deserialize_with = "quantity")]
    pub quantity: u32,
    /// Price of one unit.
    pub unit_price: Money,
}

/// Deserialises a line quantity: 1 to [`MAX_QUANTITY`].
pub(crate) fn quantity<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    let q = u32::deserialize(d)?;
    if q == 0 || q > MAX_QUANTITY {
        return Err(serde::de::Error::custom(ValidationKind::OutOfRange {
            min: 1,
            max: u64::from(MAX_QUANTITY),
            value: u64::from(q),
        }));
    }
    Ok(q)
}

impl LineItem {
    /// `quantity x unit_price`.
    pub fn line_total(&self) -> Result<Money, ValidationError> {
        self.unit_price
            .checked_mul(self.quantity)
            .map_err(|e| err("unit_price", e.into()))
    }
}

impl Canonical for LineItem {
    fn write_canonical<S: Sink>(&self, o: &mut Jcs<'_, S>) {
        o.begin();
        o.field_str("description", self.description.as_str());
        o.field_uint("quantity", u64::from(self.quantity));
        o.field_str("sku", self.sku.as_str());
        o.field_money("unit_price", &self.unit_price);
        o.end();
    }
}

/// The totals of a cart. `total = subtotal + shipping + tax - discount`, and
/// `subtotal = sum(quantity x unit_price)`, exactly.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(
    feature = "json-schema",
    derive(schemars::JsonSchema),
    schemars(rename = "Totals")
)]
#[serde(remote = "Self")]
#[serde(deny_unknown_fields)]
pub struct Totals {
    /// Sum of the lines.
    pub subtotal: Money,
    /// Shipping charged.
    pub shipping: Money,
    /// Tax charged.
    pub tax: Money,
    /// Discount granted (a non-negative amount that is subtracted).
    pub discount: Money,
    /// What the buyer pays.
    pub total: Money,
}

impl Canonical for Totals {
    fn write_canonical<S: Sink>(&self, o: &mut Jcs<'_, S>) {
        o.begin();
        o.field_money("discount", &self.discount);
        o.field_money("shipping", &self.shipping);
        o.field_money("subtotal", &self.subtotal);
        o.field_money("tax", &self.tax);
        o.field_money("total", &self.total);
        o.end();
    }
}

/// The channel a checkout came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    /// A human on the merchant's storefront.
    Storefront,
    /// An agent acting for the buyer.
    Agent,
    /// A marketplace.
    Marketplace,
}

impl Channel {
    fn as_str(self) -> &'static str {
        match self {
            Channel::Storefront => "storefront",
            Channel::Agent => "agent",
            Channel::Marketplace => "marketplace",
        }
    }
}

/// Kind of buyer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum BuyerType {
    /// A consumer.
    Consumer,
    /// A business.
    Business,
}

impl BuyerType {
    fn as_str(self) -> &'static str {
        match self {
            BuyerType::Consumer => "consumer",
            BuyerType::Business => "business",
        }
    }
}

/// The commercial context a snapshot was evaluated in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(
    feature = "json-schema",
    derive(schemars::JsonSchema),
    schemars(rename = "CheckoutContext")
)]
#[serde(remote = "Self")]
#[serde(deny_unknown_fields)]
pub struct CheckoutContext {
    /// Shipping or tax region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<Region>,
    /// Channel.
    pub channel: Channel,
    /// Kind of buyer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub buyer_type: Option<BuyerType>,
}

impl Canonical for CheckoutContext {
    fn write_canonical<S: Sink>(&self, o: &mut Jcs<'_, S>) {
        o.begin();
        if let Some(b) = self.buyer_type {
            o.field_str("buyer_type", b.as_str());
        }
        o.field_str("channel", self.channel.as_str());
        o.field_opt("region", self.region.as_ref());
        o.end();
    }
}

/// The content of a cart snapshot, as given. Plain data: [`CartSnapshot::new`] validates it.
///
/// `id`, when present, is a claim that is checked against the computed id and is not part of the
/// hashed content. Fact and policy references are sets: they are sorted and de-duplicated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(
    feature = "json-schema",
    derive(schemars::JsonSchema),
    schemars(rename = "CartContent")
)]
#[serde(remote = "Self")]
#[serde(deny_unknown_fields)]
pub struct CartContent {
    /// The claimed snapshot id (optional on input; always present on output).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<SnapshotId>,
    /// The mutable cart this snapshot was taken of.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cart_id: Option<CartId>,
    /// The merchant.
    pub merchant: Merchant,
    /// The lines (1 to 500).
    pub items: Vec<LineItem>,
    /// The totals.
    pub totals: Totals,
    /// Region, channel, buyer type.
    pub context: CheckoutContext,
    /// References to the product facts evaluated.
    #[serde(default)]
    pub fact_refs: Vec<EvidenceRef>,
    /// References to the policy facts evaluated.
    #[serde(default)]
    pub policy_refs: Vec<EvidenceRef>,
    /// When the snapshot was taken.
    #[serde(deserialize_with = "crate::domain::canonical::time")]
    pub created_at: DateTime<Utc>,
    /// When it stops being usable.
    #[serde(deserialize_with = "crate::domain::canonical::time")]
    pub expires_at: DateTime<Utc>,
}

impl CartContent {
    /// The content id, without validating the content (use [`CartSnapshot::new`] for that).
    /// The `id` field itself is not part of what is hashed.
    pub fn content_id(&self) -> SnapshotId {
        SnapshotId::from_bytes(canonical_sha256(self))
    }

    /// The canonical JSON bytes the id is computed over.
    pub fn canonical_json(&self) -> Vec<u8> {
        super::canonical::canonical_bytes(self)
    }
}

impl Canonical for CartContent {
    fn write_canonical<S: Sink>(&self, o: &mut Jcs<'_, S>) {
        o.begin();
        o.field_opt("cart_id", self.cart_id.as_ref());
        o.field("context", &self.context);
        o.field_time("created_at", &self.created_at);
        o.field_time("expires_at", &self.expires_at);
        o.field_str_list("fact_refs", &self.fact_refs);
        o.field_list("items", &self.items);
        o.field("merchant", &self.merchant);
        o.field_str_list("policy_refs", &self.policy_refs);
        o.field("totals", &self.totals);
        o.end();
    }
}

/// A validated, immutable cart snapshot with its content id.
///
/// ```
/// use agent_mandate::domain::CartSnapshot;
/// let json = r#"{
///   "merchant": {"merchant_id": "merchant_001", "mcc": "5948"},
///   "items": [{"sku": "BAG-TRAVEL-42", "description": "Travel Backpack", "quantity": 1,
///              "unit_price": {"amount": "129", "currency": "EUR"}}],
///   "totals": {"subtotal": {"amount": "129.00", "currency": "EUR"},
///              "shipping": {"amount": "9.00", "currency": "EUR"},
///              "tax": {"amount": "15.00", "currency": "EUR"},
///              "discount": {"amount": "0", "currency": "EUR"},
///              "total": {"amount": "153.00", "currency": "EUR"}},
///   "context": {"region": "EU", "channel": "agent"},
///   "created_at": "2026-06-28T08:55:00Z", "expires_at": "2026-06-28T09:55:00Z"
/// }"#;
/// let snapshot: CartSnapshot = serde_json::from_str(json).unwrap();
/// assert!(snapshot.id().to_string().starts_with("sha256:"));
/// assert_eq!(snapshot.total().to_string(), "153.00 EUR");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
#[serde(try_from = "CartContent", into = "CartContent")]
pub struct CartSnapshot {
    id: SnapshotId,
    content: CartContent,
}

impl CartSnapshot {
    /// Validates the content and computes its id.
    ///
    /// Rules: 1 to 500 items; quantity 1 to 1,000,000; one currency throughout; every total
    /// adds up exactly; at most 200 fact and 200 policy references; `expires_at` after
    /// `created_at`; a claimed `id` must equal the computed one.
    pub fn new(mut content: CartContent) -> Result<CartSnapshot, ValidationError> {
        validate(&mut content)?;
        let claimed = content.id.take();
        let id = content.content_id();
        if let Some(claimed) = claimed
            && claimed != id
        {
            return Err(err(
                "id",
                ValidationKind::IdMismatch {
                    claimed: claimed.to_string(),
                    computed: id.to_string(),
                },
            ));
        }
        content.id = Some(id);
        Ok(CartSnapshot { id, content })
    }

    /// The content id (I7).
    pub fn id(&self) -> SnapshotId {
        self.id
    }

    /// The validated content.
    pub fn content(&self) -> &CartContent {
        &self.content
    }

    /// The merchant.
    pub fn merchant(&self) -> &Merchant {
        &self.content.merchant
    }

    /// The totals.
    pub fn totals(&self) -> &Totals {
        &self.content.totals
    }

    /// What the buyer pays.
    pub fn total(&self) -> Money {
        self.content.totals.total
    }

    /// The one currency of the snapshot.
    pub fn currency(&self) -> Currency {
        self.content.totals.total.currency()
    }

    /// The line items.
    pub fn items(&self) -> &[LineItem] {
        &self.content.items
    }

    /// When the snapshot stops being usable.
    pub fn expires_at(&self) -> DateTime<Utc> {
        self.content.expires_at
    }

    /// Whether the snapshot has expired at `now`.
    pub fn is_expired(&self, now: DateTime<Utc>) -> bool {
        now >= self.content.expires_at
    }

    /// The canonical JSON bytes the id is computed over.
    pub fn canonical_json(&self) -> Vec<u8> {
        self.content.canonical_json()
    }

    /// A digest of the items alone (detects "cart changed" for confirmation rules).
    pub fn items_digest(&self) -> ContentDigest {
        struct Items<'a>(&'a [LineItem]);
        impl Canonical for Items<'_> {
            fn write_canonical<S: Sink>(&self, o: &mut Jcs<'_, S>) {
                o.begin();
                o.field_list("items", self.0);
                o.end();
            }
        }
        ContentDigest::from_bytes(canonical_sha256(&Items(&self.content.items)))
    }

    /// A digest of the policy references alone (detects "policy changed").
    pub fn policy_digest(&self) -> ContentDigest {
        struct Policies<'a>(&'a [EvidenceRef]);
        impl Canonical for Policies<'_> {
            fn write_canonical<S: Sink>(&self, o: &mut Jcs<'_, S>) {
                o.begin();
                o.field_str_list("policy_refs", self.0);
                o.end();
            }
        }
        ContentDigest::from_bytes(canonical_sha256(&Policies(&self.content.policy_refs)))
    }
}

impl TryFrom<CartContent> for CartSnapshot {
    type Error = ValidationError;
    fn try_from(content: CartContent) -> Result<Self, Self::Error> {
        CartSnapshot::new(content)
    }
}

impl From<CartSnapshot> for CartContent {
    fn from(snapshot: CartSnapshot) -> Self {
        snapshot.content
    }
}

fn validate(c: &mut CartContent) -> Result<(), ValidationError> {
    if c.items.is_empty() {
        return Err(err("items", ValidationKind::Empty));
    }
    check_len("items", &c.items, MAX_ITEMS)?;
    check_len("fact_refs", &c.fact_refs, MAX_REFS)?;
    check_len("policy_refs", &c.policy_refs, MAX_REFS)?;
    c.fact_refs.sort();
    c.fact_refs.dedup();
    c.policy_refs.sort();
    c.policy_refs.dedup();
    if c.expires_at <= c.created_at {
        return Err(err(
            "expires_at",
            ValidationKind::NotAfter {
                after: "created_at",
            },
        ));
    }
    let currency = c.totals.total.currency();
    let mismatch = |field: String, found: Currency| {
        err(
            field,
            ValidationKind::Money(super::money::MoneyError::CurrencyMismatch {
                left: currency,
                right: found,
            }),
        )
    };
    let t = &c.totals;
    for (name, m) in [
        ("totals.subtotal", &t.subtotal),
        ("totals.shipping", &t.shipping),
        ("totals.tax", &t.tax),
        ("totals.discount", &t.discount),
    ] {
        if m.currency() != currency {
            return Err(mismatch(name.to_owned(), m.currency()));
        }
    }
    let mut subtotal = Money::zero(currency);
    for (i, item) in c.items.iter().enumerate() {
        if item.unit_price.currency() != currency {
            return Err(mismatch(
                format!("items[{i}].unit_price"),
                item.unit_price.currency(),
            ));
        }
        if item.quantity == 0 || item.quantity > MAX_QUANTITY {
            return Err(err(
                format!("items[{i}].quantity"),
                ValidationKind::OutOfRange {
                    min: 1,
                    max: u64::from(MAX_QUANTITY),
                    value: u64::from(item.quantity),
                },
            ));
        }
        let line = item
            .line_total()
            .map_err(|e| e.within(format!("items[{i}]")))?;
        subtotal = subtotal
            .checked_add(&line)
            .map_err(|e| err("items", e.into()))?;
    }
    if subtotal != t.subtotal {
        return Err(err(
            "totals.subtotal",
            ValidationKind::DoesNotAddUp {
                expected: subtotal.amount_text(),
                found: t.subtotal.amount_text(),
            },
        ));
    }
    let gross = t
        .subtotal
        .checked_add(&t.shipping)
        .and_then(|g| g.checked_add(&t.tax))
        .map_err(|e| err("totals", e.into()))?;
    let total = gross.checked_sub(&t.discount).map_err(|_| {
        err(
            "totals.discount",
            ValidationKind::Inconsistent {
                reason: "discount is larger than subtotal + shipping + tax",
            },
        )
    })?;
    if total != t.total {
        return Err(err(
            "totals.total",
            ValidationKind::DoesNotAddUp {
                expected: total.amount_text(),
                found: t.total.amount_text(),
            },
        ));
    }
    Ok(())
}

crate::json::object_only!(Merchant);
crate::json::object_only!(LineItem);
crate::json::object_only!(Totals);
crate::json::object_only!(CheckoutContext);
crate::json::object_only!(CartContent);
