//! An ACP checkout session as a cart snapshot and a checkout state.
//!
//! The session is the merchant's own document (it is handed to [`AcpService::redeem`] by the
//! merchant's host, not by the agent), so it is read for the members the snapshot needs and
//! other members are ignored; the members read are typed strictly (duplicate keys and `null`
//! refused, amounts integers of minor units).
//!
//! | session | snapshot |
//! |---|---|
//! | `id` | `cart_id` (or `acp-session-` + its hash), and the fact reference `acp:checkout_session:<id>` |
//! | `currency` (either case) | the currency of every amount |
//! | `line_items[]`: `item.id` or `sku`, `name` (or `item.name`, `item.id`), `quantity`, `unit_amount` (or `item.unit_amount`, or the line's `items_base_amount` / `base_amount` divided by the quantity) | one line each; a unit price that does not multiply back to the line's base amount is refused |
//! | `totals[]`: `items_base_amount` (must be the sum of the lines), `fulfillment`, `tax`, `items_discount` + `discount`, `total` | subtotal, shipping, tax, discount, total (which must add up: `total = subtotal + shipping + tax - discount`) |
//! | `fee`, `gift_wrap`, `tip` totals | one line each (SKU `acp-total-<type>`, quantity 1), added to the subtotal |
//! | `store_credit` total | added to the discount (it pays part of the total) |
//! | `amount_refunded` (non-zero), a negative amount | refused: not a session to pay |
//! | `expires_at` | the snapshot's expiry (default: now + the configured TTL) |
//! | `status` `ready_for_payment` and no error message (other than `payment_declined`, an earlier attempt's) | checkout `valid`; `expired` or a past `expires_at`: `expired`; anything else: `invalid` with each error message's code (upper case) as an upstream blocker, or `STATUS_<STATUS>` |
//!
//! [`AcpService::redeem`]: super::AcpService::redeem

use chrono::{DateTime, Duration, Utc};
use serde::Deserialize;

use super::delegate::{hash_hex, session_ref};
use crate::domain::{
    CartContent, CartId, CartSnapshot, Channel, CheckoutContext, CheckoutId, CheckoutState,
    Currency, LineItem, Merchant, Money, Sku, Text, Totals, UpstreamBlocker, UpstreamCode,
    MAX_TEXT_LEN,
};

/// A session that cannot be a cart snapshot. Names the member (a JSONPath).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{param}: {message}")]
pub struct SessionError {
    /// The member.
    pub param: String,
    /// What is wrong.
    pub message: String,
}

fn bad(param: impl Into<String>, message: impl Into<String>) -> SessionError {
    SessionError {
        param: param.into(),
        message: message.into(),
    }
}

/// An amount line of a session or a line item.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct SessionTotal {
    /// `items_base_amount`, `subtotal`, `tax`, `fulfillment`, `total`...
    #[serde(rename = "type")]
    pub kind: String,
    /// Minor units.
    pub amount: i64,
    /// What the buyer sees.
    #[serde(default)]
    pub display_text: Option<String>,
}

/// The item of a line.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct SessionItem {
    /// The item id.
    pub id: String,
    /// Its name.
    #[serde(default)]
    pub name: Option<String>,
    /// Its unit price in minor units.
    #[serde(default)]
    pub unit_amount: Option<i64>,
}

/// A line item of a session.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct SessionLineItem {
    /// The line id.
    pub id: String,
    /// The item.
    pub item: SessionItem,
    /// How many.
    pub quantity: u32,
    /// Display name.
    #[serde(default)]
    pub name: Option<String>,
    /// Unit price in minor units.
    #[serde(default)]
    pub unit_amount: Option<i64>,
    /// The merchant's SKU.
    #[serde(default)]
    pub sku: Option<String>,
    /// The line's totals.
    #[serde(default)]
    pub totals: Vec<SessionTotal>,
}

/// A message of a session.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct SessionMessage {
    /// `info`, `warning` or `error`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Its code.
    #[serde(default)]
    pub code: Option<String>,
    /// Its text.
    #[serde(default)]
    pub content: Option<String>,
}

/// The members of an ACP `CheckoutSession` a snapshot needs.
///
/// ```
/// use agent_mandate::acp::CheckoutSession;
/// let s = CheckoutSession::parse(br#"{"id": "cs_1", "status": "ready_for_payment",
///   "currency": "usd", "line_items": [{"id": "li_1", "item": {"id": "item_1"}, "quantity": 2,
///   "unit_amount": 300, "totals": []}],
///   "totals": [{"type": "subtotal", "display_text": "Subtotal", "amount": 600},
///              {"type": "total", "display_text": "Total", "amount": 600}],
///   "messages": [], "links": [], "capabilities": {}, "fulfillment_options": []}"#).unwrap();
/// assert_eq!(s.id, "cs_1");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct CheckoutSession {
    /// The session id.
    pub id: String,
    /// Its status.
    pub status: String,
    /// ISO 4217 currency.
    pub currency: String,
    /// Its lines.
    pub line_items: Vec<SessionLineItem>,
    /// Its totals.
    pub totals: Vec<SessionTotal>,
    /// Its messages.
    #[serde(default)]
    pub messages: Vec<SessionMessage>,
    /// When it expires.
    #[serde(default)]
    pub expires_at: Option<String>,
}

fn text(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len().min(MAX_TEXT_LEN));
    for c in raw.chars().filter(|c| !c.is_control()) {
        if out.len() + c.len_utf8() > MAX_TEXT_LEN {
            break;
        }
        out.push(c);
    }
    out
}

fn money(param: &str, minor: i64, currency: Currency) -> Result<Money, SessionError> {
    Money::from_minor(minor, currency).map_err(|e| bad(param, e.to_string()))
}

impl CheckoutSession {
    /// Reads a session (strict JSON: duplicate keys and `null` refused; members not listed
    /// ignored).
    pub fn parse(body: &[u8]) -> Result<CheckoutSession, SessionError> {
        let text = std::str::from_utf8(body).map_err(|_| bad("$", "not UTF-8"))?;
        crate::json::from_json(text).map_err(|e| {
            let f = e.field();
            bad(
                if f.is_empty() {
                    "$".to_owned()
                } else {
                    format!("$.{f}")
                },
                e.message(),
            )
        })
    }

    fn total(&self, kind: &str) -> Option<i64> {
        self.totals
            .iter()
            .find(|t| t.kind == kind)
            .map(|t| t.amount)
    }

    /// The cart snapshot of this session at the merchant `merchant`, taken at `now`, and the
    /// checkout state it is in (see the module documentation).
    pub fn snapshot(
        &self,
        merchant: Merchant,
        now: DateTime<Utc>,
        ttl: Duration,
    ) -> Result<(CartSnapshot, CheckoutState), SessionError> {
        let currency = Currency::from_code(&self.currency.to_ascii_uppercase())
            .map_err(|e| bad("$.currency", e.to_string()))?;
        if self.id.is_empty() {
            return Err(bad("$.id", "empty session id"));
        }
        for (i, t) in self.totals.iter().enumerate() {
            if t.amount < 0 {
                return Err(bad(format!("$.totals[{i}].amount"), "a negative amount"));
            }
            if t.kind == "amount_refunded" && t.amount != 0 {
                return Err(bad(
                    format!("$.totals[{i}].type"),
                    "a session with refunds is not one to pay",
                ));
            }
        }
        let mut items = Vec::with_capacity(self.line_items.len());
        let mut lines_sum: i64 = 0;
        for (i, l) in self.line_items.iter().enumerate() {
            let at = format!("$.line_items[{i}]");
            let base = l
                .totals
                .iter()
                .find(|t| t.kind == "items_base_amount" || t.kind == "base_amount")
                .map(|t| t.amount);
            let unit = match (l.unit_amount.or(l.item.unit_amount), base) {
                (Some(u), _) => u,
                (None, Some(b)) if l.quantity > 0 && b % i64::from(l.quantity) == 0 => {
                    b / i64::from(l.quantity)
                }
                _ => {
                    return Err(bad(
                        format!("{at}.unit_amount"),
                        "no unit amount, and no base amount the quantity divides",
                    ))
                }
            };
            let line_total = unit
                .checked_mul(i64::from(l.quantity))
                .ok_or_else(|| bad(format!("{at}.unit_amount"), "overflow"))?;
            if base.is_some_and(|b| b != line_total) {
                return Err(bad(
                    format!("{at}.totals"),
                    "unit amount x quantity is not the line's base amount",
                ));
            }
            lines_sum = lines_sum
                .checked_add(line_total)
                .ok_or_else(|| bad("$.line_items", "overflow"))?;
            let sku_text = l.sku.clone().unwrap_or_else(|| l.item.id.clone());
            let sku = Sku::new(&sku_text)
                .or_else(|_| Sku::new(format!("acp-item-{}", &hash_hex(&[&sku_text])[..32])));
            let sku = sku.map_err(|e| bad(format!("{at}.item.id"), e.to_string()))?;
            let name = l
                .name
                .clone()
                .or_else(|| l.item.name.clone())
                .unwrap_or_else(|| l.item.id.clone());
            let description = Text::new(text(&name))
                .or_else(|_| Text::new(text(&l.item.id)))
                .map_err(|e| bad(format!("{at}.name"), e.to_string()))?;
            items.push(LineItem {
                sku,
                description,
                quantity: l.quantity,
                unit_price: money(&format!("{at}.unit_amount"), unit, currency)?,
            });
        }
        let base = self.total("items_base_amount").unwrap_or(lines_sum);
        if base != lines_sum {
            return Err(bad(
                "$.totals",
                "items_base_amount is not the sum of the lines",
            ));
        }
        // Fees, gift wrap and tips are charges without a place in the totals: each becomes a
        // line of its own (SKU `acp-total-<type>`), so the snapshot still holds every charge.
        let mut subtotal = base;
        for (i, t) in self.totals.iter().enumerate() {
            if matches!(t.kind.as_str(), "fee" | "gift_wrap" | "tip") && t.amount > 0 {
                let at = format!("$.totals[{i}]");
                let name = t.display_text.clone().unwrap_or_else(|| t.kind.clone());
                items.push(LineItem {
                    sku: Sku::new(format!("acp-total-{}", t.kind))
                        .map_err(|e| bad(&at, e.to_string()))?,
                    description: Text::new(text(&name))
                        .or_else(|_| Text::new(&t.kind))
                        .map_err(|e| bad(&at, e.to_string()))?,
                    quantity: 1,
                    unit_price: money(&at, t.amount, currency)?,
                });
                subtotal = subtotal
                    .checked_add(t.amount)
                    .ok_or_else(|| bad("$.totals", "overflow"))?;
            }
        }
        // Store credit pays part of the total: it is a discount to the card.
        let discount = ["items_discount", "discount", "store_credit"]
            .iter()
            .try_fold(0i64, |acc, k| acc.checked_add(self.total(k).unwrap_or(0)))
            .ok_or_else(|| bad("$.totals", "overflow"))?;
        let total = self
            .total("total")
            .ok_or_else(|| bad("$.totals", "no total"))?;
        let totals = Totals {
            subtotal: money("$.totals", subtotal, currency)?,
            shipping: money("$.totals", self.total("fulfillment").unwrap_or(0), currency)?,
            tax: money("$.totals", self.total("tax").unwrap_or(0), currency)?,
            discount: money("$.totals", discount, currency)?,
            total: money("$.totals", total, currency)?,
        };
        let session_expiry = match &self.expires_at {
            Some(t) => Some(crate::domain::parse_time(t).map_err(|m| bad("$.expires_at", m))?),
            None => None,
        };
        let expires_at = match session_expiry {
            Some(e) if e > now => e,
            _ => now + ttl,
        };
        let cart_id = CartId::new(&self.id)
            .or_else(|_| CartId::new(format!("acp-session-{}", &hash_hex(&[&self.id])[..32])))
            .map_err(|e| bad("$.id", e.to_string()))?;
        let snapshot = CartSnapshot::new(CartContent {
            id: None,
            cart_id: Some(cart_id.clone()),
            merchant,
            items,
            totals,
            context: CheckoutContext {
                region: None,
                channel: Channel::Agent,
                buyer_type: None,
            },
            fact_refs: vec![session_ref(&self.id).map_err(|e| bad("$.id", e.to_string()))?],
            policy_refs: Vec::new(),
            created_at: now,
            expires_at,
        })
        .map_err(|e| bad(format!("$.{}", e.field()), e.to_string()))?;
        let checkout_id =
            CheckoutId::new(cart_id.as_str()).map_err(|e| bad("$.id", e.to_string()))?;
        let state = self.state(checkout_id, &snapshot, session_expiry, now);
        Ok((snapshot, state))
    }

    fn state(
        &self,
        checkout_id: CheckoutId,
        snapshot: &CartSnapshot,
        expiry: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> CheckoutState {
        if self.status == "expired" || expiry.is_some_and(|e| e <= now) {
            return CheckoutState::Expired {
                checkout_id,
                expired_at: expiry.filter(|e| *e <= now).unwrap_or(now),
            };
        }
        let errors: Vec<&SessionMessage> = self
            .messages
            .iter()
            .filter(|m| m.kind == "error" && m.code.as_deref() != Some("payment_declined"))
            .collect();
        if self.status == "ready_for_payment" && errors.is_empty() {
            return CheckoutState::Valid {
                checkout_id,
                snapshot_id: snapshot.id(),
            };
        }
        let mut blockers: Vec<UpstreamBlocker> = errors
            .iter()
            .take(crate::domain::limits::MAX_UPSTREAM_BLOCKERS)
            .filter_map(|m| {
                let code = m.code.as_deref().unwrap_or("error").to_ascii_uppercase();
                let message = m.content.as_deref().unwrap_or("error");
                let message: String = text(message).chars().take(200).collect();
                Some(UpstreamBlocker {
                    code: UpstreamCode::new(code).ok()?,
                    message: Text::new(if message.trim().is_empty() {
                        "error".to_owned()
                    } else {
                        message
                    })
                    .ok()?,
                })
            })
            .collect();
        if blockers.is_empty() {
            let status: String = self
                .status
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
                .take(64)
                .collect::<String>()
                .to_ascii_uppercase();
            if let (Ok(code), Ok(message)) = (
                UpstreamCode::new(format!("STATUS_{status}")),
                Text::new("the checkout session is not ready for payment"),
            ) {
                blockers.push(UpstreamBlocker { code, message });
            }
        }
        CheckoutState::Invalid {
            checkout_id,
            blockers,
        }
    }
}
