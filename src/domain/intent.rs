//! Purchase intents: the structured declaration an agent emits before buying, hashed
//! with the same JCS construction as snapshot ids so it can be bound to a payment.

use serde::{Deserialize, Serialize};

use super::canonical::{canonical_sha256, Canonical, IntentHash, Jcs, Sink};
use super::error::{check_len, err, ValidationError, ValidationKind};
use super::ids::{ActorId, Mcc, MerchantId, TaskId, Text};
use super::money::Money;
use super::scope::Urgency;
use super::snapshot::MAX_QUANTITY;

pub use super::limits::MAX_INTENT_LINES;

/// One line of an intent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(
    feature = "json-schema",
    derive(schemars::JsonSchema),
    schemars(rename = "IntentLine")
)]
#[serde(remote = "Self")]
#[serde(deny_unknown_fields)]
pub struct IntentLine {
    /// What.
    pub description: Text,
    /// How many (1 to 1,000,000).
    #[serde(deserialize_with = "super::snapshot::quantity")]
    pub quantity: u32,
    /// At what unit price.
    pub unit_price: Money,
}

impl Canonical for IntentLine {
    fn write_canonical<S: Sink>(&self, o: &mut Jcs<'_, S>) {
        o.begin();
        o.field_str("description", self.description.as_str());
        o.field_uint("quantity", u64::from(self.quantity));
        o.field_money("unit_price", &self.unit_price);
        o.end();
    }
}

/// What an agent declares it intends to buy and why: the plain data, validated by
/// [`PurchaseIntent::new`].
///
/// ```
/// use agent_mandate::domain::PurchaseIntent;
/// let intent: PurchaseIntent = serde_json::from_str(r#"{
///   "agent_id": "agent_123", "task_id": "task_9", "merchant_id": "merchant_001", "mcc": "5411",
///   "line_items": [{"description": "Coffee beans", "quantity": 2,
///                   "unit_price": {"amount": "12.5", "currency": "USD"}}],
///   "business_justification": "Office coffee for the week", "urgency": "routine"
/// }"#).unwrap();
/// assert_eq!(intent.total().to_string(), "25.00 USD");
/// assert!(intent.intent_hash().to_string().starts_with("sha256:"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(
    feature = "json-schema",
    derive(schemars::JsonSchema),
    schemars(rename = "PurchaseIntentSpec")
)]
#[serde(remote = "Self")]
#[serde(deny_unknown_fields)]
pub struct PurchaseIntentSpec {
    /// The agent.
    pub agent_id: ActorId,
    /// The task that triggered the purchase.
    pub task_id: TaskId,
    /// The merchant.
    pub merchant_id: MerchantId,
    /// Its category.
    pub mcc: Mcc,
    /// What (1 to 50 lines).
    pub line_items: Vec<IntentLine>,
    /// Why.
    pub business_justification: Text,
    /// How urgent the agent says it is (not hashed: it does not change what is bought).
    pub urgency: Urgency,
}

/// A validated purchase intent: 1 to 50 lines, quantities of at least 1, one currency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
#[serde(try_from = "PurchaseIntentSpec", into = "PurchaseIntentSpec")]
pub struct PurchaseIntent {
    spec: PurchaseIntentSpec,
    total: Money,
}

impl PurchaseIntent {
    /// Validates `spec` and computes its total.
    pub fn new(spec: PurchaseIntentSpec) -> Result<PurchaseIntent, ValidationError> {
        let Some(first) = spec.line_items.first() else {
            return Err(err("line_items", ValidationKind::Empty));
        };
        check_len("line_items", &spec.line_items, MAX_INTENT_LINES)?;
        let currency = first.unit_price.currency();
        let mut total = Money::zero(currency);
        for (i, line) in spec.line_items.iter().enumerate() {
            if line.quantity == 0 || line.quantity > MAX_QUANTITY {
                return Err(err(
                    format!("line_items[{i}].quantity"),
                    ValidationKind::OutOfRange {
                        min: 1,
                        max: u64::from(MAX_QUANTITY),
                        value: u64::from(line.quantity),
                    },
                ));
            }
            total = line
                .unit_price
                .checked_mul(line.quantity)
                .and_then(|l| total.checked_add(&l))
                .map_err(|e| err(format!("line_items[{i}].unit_price"), e.into()))?;
        }
        Ok(PurchaseIntent { spec, total })
    }

    /// The plain data.
    pub fn spec(&self) -> &PurchaseIntentSpec {
        &self.spec
    }

    /// The sum of the lines.
    pub fn total(&self) -> Money {
        self.total
    }

    /// `sha256:` + hex of SHA-256 over the JCS form of agent, task, merchant, MCC, lines, total
    /// and justification (urgency is not hashed: it does not change what is bought).
    pub fn intent_hash(&self) -> IntentHash {
        IntentHash::from_bytes(canonical_sha256(self))
    }
}

impl TryFrom<PurchaseIntentSpec> for PurchaseIntent {
    type Error = ValidationError;
    fn try_from(spec: PurchaseIntentSpec) -> Result<Self, Self::Error> {
        PurchaseIntent::new(spec)
    }
}

impl From<PurchaseIntent> for PurchaseIntentSpec {
    fn from(intent: PurchaseIntent) -> Self {
        intent.spec
    }
}

impl Canonical for PurchaseIntent {
    fn write_canonical<S: Sink>(&self, o: &mut Jcs<'_, S>) {
        let i = &self.spec;
        o.begin();
        o.field_str("agent_id", i.agent_id.as_str());
        o.field_str("business_justification", i.business_justification.as_str());
        o.field_list("line_items", &i.line_items);
        o.field_str("mcc", i.mcc.as_str());
        o.field_str("merchant_id", i.merchant_id.as_str());
        o.field_str("task_id", i.task_id.as_str());
        o.field_money("total_amount", &self.total);
        o.end();
    }
}

crate::json::object_only!(IntentLine);
crate::json::object_only!(PurchaseIntentSpec);
