//! A 402 offer in mandate terms, whatever protocol carried it: merchant, amount, resource,
//! expiry; and the one-line cart snapshot the decision, the hold, the audit trail and dispute
//! evidence work on, exactly as for a checkout.

use chrono::{DateTime, Duration, Utc};
use sha2::{Digest as _, Sha256};

use super::error::OfferError;
use crate::domain::{
    CartContent, CartSnapshot, Channel, CheckoutContext, EvidenceRef, LineItem, Mcc, Merchant,
    MerchantId, Money, Region, SellerId, Sku, Text, Totals, MAX_TEXT_LEN,
};

/// Which protocol carried an offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// The `Payment` HTTP authentication scheme (Machine Payments Protocol).
    Mpp,
    /// x402 v2.
    X402,
}

impl Protocol {
    /// Its short name (`mpp`, `x402`).
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Mpp => "mpp",
            Protocol::X402 => "x402",
        }
    }
}

/// What a 402 answer asks for, in mandate terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChargeOffer {
    /// The protocol.
    pub protocol: Protocol,
    /// The offer's identity: the MPP challenge id, or the SHA-256 of the x402 requirement.
    pub offer_id: String,
    /// The merchant: the MPP `realm`, or the host of the x402 resource URL.
    pub merchant_id: MerchantId,
    /// The payee inside the merchant, when the offer names one (MPP `recipient`, x402 `payTo`).
    pub seller_id: Option<SellerId>,
    /// The amount, in a mandate currency.
    pub amount: Money,
    /// The resource paid for (the URL).
    pub resource: String,
    /// The offer's description, for display and evidence only (never used to decide).
    pub description: Option<String>,
    /// When the offer expires, if it says.
    pub expires_at: Option<DateTime<Utc>>,
}

/// What the host adds to an offer to make a cart snapshot of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChargeContext {
    /// The merchant category code of paid API calls at this merchant (for example 5817,
    /// digital goods: applications, or 7399, business services).
    pub mcc: Mcc,
    /// The region, if the mandate scopes by region.
    pub region: Option<Region>,
    /// How long the snapshot stays valid when the offer gives no expiry.
    pub default_ttl: Duration,
}

/// The prefix of the SKU of a paid resource.
pub const RESOURCE_SKU_PREFIX: &str = "402-";

impl ChargeOffer {
    /// Refuses an offer whose expiry is at or before `now`.
    pub fn check_expiry(&self, now: DateTime<Utc>) -> Result<(), OfferError> {
        match self.expires_at {
            Some(expires) if expires <= now => Err(OfferError::Expired { expires, now }),
            _ => Ok(()),
        }
    }

    /// The SKU of the resource: `402-` and the first 32 hex digits of the SHA-256 of
    /// `merchant \n resource`. The same resource at the same merchant always has the same SKU,
    /// which is what loop detection counts.
    pub fn resource_sku(&self) -> Result<Sku, OfferError> {
        resource_sku(&self.merchant_id, &self.resource)
    }

    /// The one-line cart snapshot of this offer at `now`: merchant, one item (the resource,
    /// quantity 1, the amount), no shipping, tax or discount, channel `agent`, the offer id as
    /// a fact reference, valid until the offer's expiry (or `now + default_ttl`).
    pub fn cart(
        &self,
        context: &ChargeContext,
        now: DateTime<Utc>,
    ) -> Result<CartSnapshot, OfferError> {
        self.check_expiry(now)?;
        let expires_at = self
            .expires_at
            .unwrap_or_else(|| now + context.default_ttl.max(Duration::seconds(1)));
        let description = line_description(self.description.as_deref(), &self.resource);
        let description = Text::new(description).map_err(|e| OfferError::Invalid {
            field: "description",
            reason: e.to_string(),
        })?;
        let zero = Money::zero(self.amount.currency());
        let offer_ref =
            EvidenceRef::new(offer_ref(self.protocol, &self.offer_id)).map_err(|e| {
                OfferError::Invalid {
                    field: "id",
                    reason: e.to_string(),
                }
            })?;
        CartSnapshot::new(CartContent {
            id: None,
            cart_id: None,
            merchant: Merchant {
                merchant_id: self.merchant_id.clone(),
                marketplace_id: None,
                seller_id: self.seller_id.clone(),
                mcc: context.mcc,
            },
            items: vec![LineItem {
                sku: self.resource_sku()?,
                description,
                quantity: 1,
                unit_price: self.amount,
            }],
            totals: Totals {
                subtotal: self.amount,
                shipping: zero,
                tax: zero,
                discount: zero,
                total: self.amount,
            },
            context: CheckoutContext {
                region: context.region.clone(),
                channel: Channel::Agent,
                buyer_type: None,
            },
            fact_refs: vec![offer_ref],
            policy_refs: Vec::new(),
            created_at: now,
            expires_at,
        })
        .map_err(|e| OfferError::Invalid {
            field: "cart",
            reason: e.to_string(),
        })
    }
}

/// The SKU of `resource` at `merchant` (see [`ChargeOffer::resource_sku`]).
pub fn resource_sku(merchant: &MerchantId, resource: &str) -> Result<Sku, OfferError> {
    let mut h = Sha256::new();
    h.update(merchant.as_str().as_bytes());
    h.update(b"\n");
    h.update(resource.as_bytes());
    let hex = hex::encode(h.finalize());
    let mut sku = String::with_capacity(RESOURCE_SKU_PREFIX.len() + 32);
    sku.push_str(RESOURCE_SKU_PREFIX);
    sku.push_str(&hex[..32]);
    Sku::new(&sku).map_err(|e| OfferError::Invalid {
        field: "resource",
        reason: e.to_string(),
    })
}

/// `mpp:<id>` (or `x402:<id>`); ids that are not valid references are hashed.
fn offer_ref(protocol: Protocol, id: &str) -> String {
    let plain = format!("{}:{}", protocol.as_str(), id);
    if EvidenceRef::new(&plain).is_ok() {
        plain
    } else {
        format!(
            "{}:sha256:{}",
            protocol.as_str(),
            hex::encode(Sha256::digest(id.as_bytes()))
        )
    }
}

/// `description (resource)`, without control characters, at most [`MAX_TEXT_LEN`] bytes.
fn line_description(description: Option<&str>, resource: &str) -> String {
    let raw = match description {
        Some(d) if !d.trim().is_empty() => format!("{d} ({resource})"),
        _ => resource.to_owned(),
    };
    let mut out = String::with_capacity(raw.len().min(MAX_TEXT_LEN));
    for c in raw.chars().filter(|c| !c.is_control()) {
        if out.len() + c.len_utf8() > MAX_TEXT_LEN {
            break;
        }
        out.push(c);
    }
    if out.trim().is_empty() {
        out = "paid HTTP resource".to_owned();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Currency;

    fn offer() -> ChargeOffer {
        ChargeOffer {
            protocol: Protocol::Mpp,
            offer_id: "abc".into(),
            merchant_id: MerchantId::new("api.example.com").unwrap(),
            seller_id: None,
            amount: Money::parse("0.50", Currency::EUR).unwrap(),
            resource: "https://api.example.com/v1/answer".into(),
            description: Some("One answer\n".into()),
            expires_at: None,
        }
    }

    fn ctx() -> ChargeContext {
        ChargeContext {
            mcc: Mcc::new("5817").unwrap(),
            region: None,
            default_ttl: Duration::minutes(5),
        }
    }

    #[test]
    fn one_line_cart_with_the_amount_and_a_stable_resource_sku() {
        let now = crate::domain::examples::now();
        let cart = offer().cart(&ctx(), now).unwrap();
        assert_eq!(cart.total(), offer().amount);
        assert_eq!(cart.items().len(), 1);
        assert_eq!(cart.items()[0].sku, offer().resource_sku().unwrap());
        assert_eq!(
            cart.items()[0].description.as_str(),
            "One answer (https://api.example.com/v1/answer)"
        );
        let mut other = offer();
        other.resource.push('2');
        assert_ne!(
            other.resource_sku().unwrap(),
            offer().resource_sku().unwrap()
        );
    }

    #[test]
    fn an_expired_offer_has_no_cart() {
        let now = crate::domain::examples::now();
        let mut o = offer();
        o.expires_at = Some(now);
        assert!(matches!(
            o.cart(&ctx(), now),
            Err(OfferError::Expired { .. })
        ));
    }

    #[test]
    fn long_or_odd_offer_ids_become_hashed_references() {
        assert_eq!(
            offer_ref(Protocol::Mpp, "a b"),
            format!("mpp:sha256:{}", hex::encode(Sha256::digest(b"a b")))
        );
        assert_eq!(offer_ref(Protocol::X402, "k"), "x402:k");
    }
}
