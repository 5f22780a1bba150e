//! The Stripe wire format: the JSON shapes the adapter reads, and their mapping to a
//! [`ProviderReport`]. Every field a peer may omit is optional; nothing here panics on any body.

use serde::Deserialize;

use crate::domain::{Currency, Money, ProviderRef, ProviderReport, ProviderStatus};

/// A PaymentIntent, as much of it as the adapter reads.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct PaymentIntentJson {
    pub id: String,
    pub status: String,
    pub amount: i64,
    pub currency: String,
    #[serde(default)]
    pub amount_received: Option<i64>,
    #[serde(default)]
    pub last_payment_error: Option<ErrorJson>,
    #[serde(default)]
    pub latest_charge: Option<ChargeField>,
}

/// `latest_charge` is an id unless expanded (the adapter always asks for it expanded).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(crate) enum ChargeField {
    Expanded(Box<ChargeJson>),
    Id(String),
}

/// A Charge, as much of it as the adapter reads.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct ChargeJson {
    #[serde(default)]
    pub status: Option<String>,
    pub amount: i64,
    /// Present on Stripe since API version 2019-12; absent on localstripe.
    #[serde(default)]
    pub amount_captured: Option<i64>,
    #[serde(default)]
    pub amount_refunded: i64,
    #[serde(default)]
    pub captured: bool,
    #[serde(default)]
    pub refunds: Option<ListJson<RefundJson>>,
    #[serde(default)]
    pub payment_intent: Option<String>,
}

/// A Refund, as much of it as the adapter reads.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct RefundJson {
    pub amount: i64,
    #[serde(default)]
    pub payment_intent: Option<String>,
}

/// A list page.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct ListJson<T> {
    pub data: Vec<T>,
    #[serde(default)]
    pub has_more: bool,
}

/// A list item of `GET /v1/payment_intents`: only what the key lookup reads.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct PaymentIntentSummary {
    pub id: String,
    #[serde(default)]
    pub metadata: Option<serde_json::Map<String, serde_json::Value>>,
}

/// The `error` object of a failed request.
#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct ErrorJson {
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    #[serde(default)]
    pub code: Option<String>,
    #[serde(default)]
    pub decline_code: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
    /// The charge of a card error (Stripe and localstripe).
    #[serde(default)]
    pub charge: Option<String>,
    /// The PaymentIntent of a card error during confirmation (Stripe).
    #[serde(default)]
    pub payment_intent: Option<Box<PaymentIntentJson>>,
}

/// `{"error": {...}}`.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct ErrorEnvelope {
    pub error: ErrorJson,
}

/// The metadata key carrying the authorization's idempotency key (for `Lookup::Key`).
pub(crate) const META_KEY: &str = "agent_mandate_key";
/// The metadata key carrying the attempt id.
pub(crate) const META_ATTEMPT: &str = "agent_mandate_attempt_id";
/// The metadata key carrying the snapshot id.
pub(crate) const META_SNAPSHOT: &str = "agent_mandate_snapshot_id";
/// The metadata key carrying the merchant of record.
pub(crate) const META_MERCHANT: &str = "agent_mandate_merchant_id";
/// The metadata key carrying the buyer.
pub(crate) const META_BUYER: &str = "agent_mandate_buyer_id";

impl ErrorJson {
    /// The most specific decline code: `decline_code`, else `code`, else `card_declined`.
    pub fn decline_code(&self) -> String {
        self.decline_code
            .clone()
            .or_else(|| self.code.clone())
            .filter(|c| !c.is_empty())
            .unwrap_or_else(|| "card_declined".to_owned())
    }
}

/// Whether a PaymentIntent carries `key` as its authorization key.
pub(crate) fn has_key(
    metadata: Option<&serde_json::Map<String, serde_json::Value>>,
    key: &str,
) -> bool {
    metadata
        .and_then(|m| m.get(META_KEY))
        .and_then(serde_json::Value::as_str)
        .is_some_and(|k| k == key)
}

/// The currency of a Stripe amount (`"eur"`).
pub(crate) fn currency_of(code: &str) -> Result<Currency, String> {
    Currency::from_code(&code.to_ascii_uppercase()).map_err(|e| {
        format!(
            "currency {:?}: {e}",
            code.chars().take(8).collect::<String>()
        )
    })
}

/// Stripe minor units to [`Money`] (refuses a negative amount).
pub(crate) fn money(field: &str, minor: i64, currency: Currency) -> Result<Money, String> {
    Money::from_minor(minor, currency).map_err(|e| format!("{field} = {minor}: {e}"))
}

/// What the PSP says about the payment, from a PaymentIntent (with `latest_charge`
/// expanded). `Err` names the field that is missing or impossible.
///
/// | PaymentIntent status | report |
/// |---|---|
/// | `requires_capture` | `Authorized` for `amount` |
/// | `succeeded` | `Captured`: captured `amount_received`, refunded from the charge |
/// | `canceled` | `Cancelled` (authorized: `amount` if the charge was authorized, else zero) |
/// | `requires_action` | `RequiresAction` (nothing authorized yet) |
/// | `requires_payment_method` with a `last_payment_error` | `Declined` with its code |
/// | anything else (`processing`, `requires_confirmation`, a new status) | `Unknown(status)`, never terminal |
pub(crate) fn report_of(pi: &PaymentIntentJson) -> Result<ProviderReport, String> {
    let currency = currency_of(&pi.currency)?;
    let reference = ProviderRef::new(&pi.id).map_err(|e| format!("id: {e}"))?;
    let zero = Money::zero(currency);
    let amount = money("amount", pi.amount, currency)?;
    let charge = match &pi.latest_charge {
        Some(ChargeField::Expanded(c)) => Some(c.as_ref()),
        Some(ChargeField::Id(_)) | None => None,
    };
    let charge_authorized = charge.is_some_and(|c| c.status.as_deref() == Some("succeeded"));
    let mut report = ProviderReport {
        reference: Some(reference),
        status: ProviderStatus::Unknown(pi.status.clone()),
        authorized: zero,
        captured: zero,
        refunded: zero,
        decline_code: None,
    };
    match pi.status.as_str() {
        "requires_capture" => {
            report.status = ProviderStatus::Authorized;
            report.authorized = amount;
        }
        "succeeded" => {
            let (captured, refunded) = settled_amounts(pi, charge)?;
            report.status = ProviderStatus::Captured;
            report.authorized = amount;
            report.captured = money("amount_received", captured, currency)?;
            report.refunded = money("latest_charge.amount_refunded", refunded, currency)?;
        }
        "canceled" => {
            report.status = ProviderStatus::Cancelled;
            if charge_authorized {
                report.authorized = amount;
            }
        }
        "requires_action" => report.status = ProviderStatus::RequiresAction,
        "requires_payment_method" => {
            if let Some(e) = &pi.last_payment_error {
                report.status = ProviderStatus::Declined;
                report.decline_code = Some(e.decline_code());
            }
        }
        _ => {}
    }
    Ok(report)
}

/// `(captured, refunded)` in minor units of a succeeded PaymentIntent.
///
/// Stripe reports `amount_received` on the PaymentIntent and `amount_captured` /
/// `amount_refunded` on the charge. localstripe reports neither `amount_received` nor
/// `amount_captured`, and records the released rest of a partial capture as a refund without
/// a `payment_intent`; the adapter refunds through `payment_intent`, so on that shape the
/// refunds carrying one are the real refunds and the others are the released rest.
fn settled_amounts(
    pi: &PaymentIntentJson,
    charge: Option<&ChargeJson>,
) -> Result<(i64, i64), String> {
    let charge = match (charge, &pi.latest_charge) {
        (Some(c), _) => c,
        (None, Some(ChargeField::Id(id))) => {
            return Err(format!(
                "latest_charge: {id} is not expanded on a succeeded payment"
            ))
        }
        (None, _) => return Err("latest_charge: missing on a succeeded payment".into()),
    };
    if let Some(captured) = pi.amount_received.or(charge.amount_captured) {
        return Ok((captured, charge.amount_refunded));
    }
    // The localstripe shape.
    let refunds = charge
        .refunds
        .as_ref()
        .map(|l| l.data.as_slice())
        .unwrap_or(&[]);
    let (mut released, mut refunded) = (0i64, 0i64);
    for r in refunds {
        if r.payment_intent.is_some() {
            refunded = refunded.saturating_add(r.amount);
        } else {
            released = released.saturating_add(r.amount);
        }
    }
    let captured = if charge.captured {
        charge.amount.saturating_sub(released)
    } else {
        0
    };
    Ok((captured, refunded))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pi(json: serde_json::Value) -> PaymentIntentJson {
        serde_json::from_value(json).expect("a PaymentIntent")
    }

    #[test]
    fn stripe_shape_partial_capture_and_refund() {
        let r = report_of(&pi(serde_json::json!({
            "id": "pi_1", "status": "succeeded", "amount": 1000, "currency": "eur",
            "amount_received": 400,
            "latest_charge": {"status": "succeeded", "amount": 1000, "amount_captured": 400,
                              "amount_refunded": 100, "captured": true}
        })))
        .expect("report");
        assert_eq!(r.status, ProviderStatus::Captured);
        assert_eq!(
            (
                r.authorized.minor_units(),
                r.captured.minor_units(),
                r.refunded.minor_units()
            ),
            (1000, 400, 100)
        );
    }

    #[test]
    fn localstripe_shape_partial_capture_and_refund() {
        let r = report_of(&pi(serde_json::json!({
            "id": "pi_1", "status": "succeeded", "amount": 1000, "currency": "eur",
            "latest_charge": {"status": "succeeded", "amount": 1000, "amount_refunded": 700,
                              "captured": true, "refunds": {"data": [
                                  {"amount": 600, "payment_intent": null},
                                  {"amount": 100, "payment_intent": "pi_1"}]}}
        })))
        .expect("report");
        assert_eq!(
            (r.captured.minor_units(), r.refunded.minor_units()),
            (400, 100)
        );
    }

    #[test]
    fn unknown_and_intermediate_statuses_are_never_terminal() {
        for status in [
            "processing",
            "requires_confirmation",
            "requires_payment_method",
            "brand_new",
        ] {
            let r = report_of(&pi(serde_json::json!({
                "id": "pi_1", "status": status, "amount": 1000, "currency": "eur"
            })))
            .expect("report");
            assert_eq!(r.status, ProviderStatus::Unknown(status.into()));
        }
    }

    #[test]
    fn decline_and_three_ds_and_cancel() {
        let r = report_of(&pi(serde_json::json!({
            "id": "pi_1", "status": "requires_payment_method", "amount": 1000, "currency": "usd",
            "last_payment_error": {"code": "card_declined", "decline_code": "insufficient_funds"}
        })))
        .expect("report");
        assert_eq!(r.status, ProviderStatus::Declined);
        assert_eq!(r.decline_code.as_deref(), Some("insufficient_funds"));
        let r = report_of(&pi(serde_json::json!({
            "id": "pi_1", "status": "requires_action", "amount": 1000, "currency": "usd"
        })))
        .expect("report");
        assert_eq!(r.status, ProviderStatus::RequiresAction);
        assert!(r.authorized.is_zero());
        let r = report_of(&pi(serde_json::json!({
            "id": "pi_1", "status": "canceled", "amount": 1000, "currency": "usd",
            "latest_charge": {"status": "succeeded", "amount": 1000, "captured": false}
        })))
        .expect("report");
        assert_eq!(r.status, ProviderStatus::Cancelled);
        assert_eq!(r.authorized.minor_units(), 1000);
    }

    #[test]
    fn impossible_fields_are_named() {
        let bad = |json: serde_json::Value| report_of(&pi(json)).expect_err("refused");
        assert!(bad(serde_json::json!({
            "id": "pi_1", "status": "requires_capture", "amount": -5, "currency": "eur"
        }))
        .contains("amount"));
        assert!(bad(serde_json::json!({
            "id": "pi_1", "status": "requires_capture", "amount": 5, "currency": "zzz"
        }))
        .contains("currency"));
        assert!(bad(serde_json::json!({
            "id": "pi_1", "status": "succeeded", "amount": 5, "currency": "eur",
            "latest_charge": "ch_1"
        }))
        .contains("latest_charge"));
    }
}
