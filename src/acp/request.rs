//! The delegate payment request, read strictly against the published schema (API version
//! 2026-04-17), then checked for what the schema cannot say.
//!
//! Reading ([`DelegatePaymentRequest::parse`]) refuses, as `400` ([`AcpError::Malformed`]):
//! text that is not JSON, duplicate keys, `null` anywhere a value is expected, every unknown
//! field (every object of the schema has `additionalProperties: false`), a missing required
//! field, a value of the wrong JSON type (an integer written `2000.0` or `2e3` included: one
//! spelling per number), an enum value outside its list, a string longer than its `maxLength`
//! (counted in characters, as JSON Schema counts), `allowance.currency` outside `^[a-z]{3}$`,
//! `display_last4` outside `^[0-9]{4}$`, `country` not two characters, and a time that is not
//! RFC 3339.
//!
//! Checking ([`DelegatePaymentRequest::check`]) refuses, as `422` ([`AcpError::Invalid`]):
//! a card number that is not 12 to 19 digits (an FPAN must also pass its Luhn check digit),
//! an `exp_month` other than `01`..`12`, an `exp_year` other than four digits from 2000 to
//! 2199, only one of the two, a card whose expiry month has passed, a CVC other than 3 or 4
//! digits, an `iin` other than 6 to 8 digits or (for an FPAN) not the number's prefix, a
//! `display_last4` that is not the FPAN's last four, an `eci_value` other than two digits, a
//! `display_brand` the vault cannot show (1 to 32 ASCII letters, digits, `_`, `-`), a
//! currency that is not an ISO 4217 payment currency, a `max_amount` of zero or less or more
//! than the currency can hold (10^15 major units), an allowance that has already expired,
//! a merchant id the mandate cannot name (more than 128 bytes, white space or invisible
//! characters), a risk signal whose action is `blocked`, and more than 50 metadata entries or
//! a metadata key over 40 or value over 500 characters (either map).

use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, Utc};
use serde::{Deserialize, Deserializer};

use super::error::AcpError;
use crate::domain::{Currency, MerchantId, Money};
use crate::json::from_json;
use crate::ports::{FundingType, Secret};

/// Most entries of a metadata map.
pub const MAX_METADATA_ENTRIES: usize = 50;
/// Longest metadata key, in characters.
pub const MAX_METADATA_KEY: usize = 40;
/// Longest metadata value, in characters.
pub const MAX_METADATA_VALUE: usize = 500;

fn secret<'de, D: Deserializer<'de>>(d: D) -> Result<Secret, D::Error> {
    String::deserialize(d).map(Secret::new)
}

fn opt_secret<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Secret>, D::Error> {
    String::deserialize(d).map(|s| Some(Secret::new(s)))
}

/// The card to tokenize (`PaymentMethodCard`). Its number, CVC and cryptogram are secrets:
/// they never show in `Debug`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct PaymentMethodCard {
    /// Always `card`.
    #[serde(rename = "type")]
    pub kind: CardType,
    /// A funding PAN or a network token.
    pub card_number_type: CardNumberType,
    /// The number.
    #[serde(deserialize_with = "secret")]
    pub number: Secret,
    /// Two-digit month.
    #[serde(default)]
    pub exp_month: Option<String>,
    /// Four-digit year.
    #[serde(default)]
    pub exp_year: Option<String>,
    /// Cardholder name.
    #[serde(default)]
    pub name: Option<String>,
    /// The CVC.
    #[serde(default, deserialize_with = "opt_secret")]
    pub cvc: Option<Secret>,
    /// A network token's cryptogram.
    #[serde(default, deserialize_with = "opt_secret")]
    pub cryptogram: Option<Secret>,
    /// Electronic Commerce Indicator.
    #[serde(default)]
    pub eci_value: Option<String>,
    /// Checks the platform performed.
    #[serde(default)]
    pub checks_performed: Option<Vec<CheckPerformed>>,
    /// Issuer identification number.
    #[serde(default)]
    pub iin: Option<String>,
    /// Funding type.
    pub display_card_funding_type: DisplayFunding,
    /// Wallet, if any.
    #[serde(default)]
    pub display_wallet_type: Option<String>,
    /// Brand for display.
    #[serde(default)]
    pub display_brand: Option<String>,
    /// Last four for display.
    #[serde(default)]
    pub display_last4: Option<String>,
    /// Free-form strings.
    pub metadata: BTreeMap<String, String>,
    /// A virtual card number.
    #[serde(default, rename = "virtual")]
    pub is_virtual: Option<bool>,
}

/// `payment_method.type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum CardType {
    /// A card.
    Card,
}

/// `payment_method.card_number_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum CardNumberType {
    /// A funding PAN.
    Fpan,
    /// A network token.
    NetworkToken,
}

/// One of `checks_performed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum CheckPerformed {
    /// Address verification.
    Avs,
    /// Card verification value.
    Cvv,
    /// Account name inquiry.
    Ani,
    /// Zero-amount authorization.
    Auth0,
}

/// `display_card_funding_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum DisplayFunding {
    /// Credit.
    Credit,
    /// Debit.
    Debit,
    /// Prepaid.
    Prepaid,
}

impl DisplayFunding {
    /// The vault's funding type.
    pub fn funding(self) -> FundingType {
        match self {
            DisplayFunding::Credit => FundingType::Credit,
            DisplayFunding::Debit => FundingType::Debit,
            DisplayFunding::Prepaid => FundingType::Prepaid,
        }
    }
}

/// The allowance: how the token may be used.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Allowance {
    /// Always `one_time`.
    pub reason: AllowanceReason,
    /// Most that may be charged, in minor units.
    pub max_amount: i64,
    /// Lowercase ISO 4217 code.
    pub currency: String,
    /// The checkout session the payment is for.
    pub checkout_session_id: String,
    /// The merchant allowed to use the token.
    pub merchant_id: String,
    /// When the token stops being usable (RFC 3339).
    pub expires_at: String,
}

/// `allowance.reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum AllowanceReason {
    /// One payment.
    OneTime,
}

/// `billing_address`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Address {
    /// Full name.
    pub name: String,
    /// Street line 1.
    pub line_one: String,
    /// Street line 2.
    #[serde(default)]
    pub line_two: Option<String>,
    /// City.
    pub city: String,
    /// State or region.
    pub state: String,
    /// ISO 3166-1 alpha-2.
    pub country: String,
    /// Postal code.
    pub postal_code: String,
}

/// One risk signal.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct RiskSignal {
    /// Always `card_testing`.
    #[serde(rename = "type")]
    pub kind: RiskType,
    /// Score.
    pub score: i64,
    /// Recommended action.
    pub action: RiskAction,
}

/// `risk_signals[].type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum RiskType {
    /// Card testing.
    CardTesting,
}

/// `risk_signals[].action`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum RiskAction {
    /// Refuse: the delegation is refused (422).
    Blocked,
    /// Review.
    ManualReview,
    /// Go ahead.
    Authorized,
}

/// A delegate payment request body (`DelegatePaymentRequest`).
///
/// ```
/// use agent_mandate::acp::DelegatePaymentRequest;
/// let body = br#"{"payment_method": {"type": "card", "card_number_type": "fpan",
///   "number": "4242424242424242", "display_card_funding_type": "credit", "metadata": {}},
///   "allowance": {"reason": "one_time", "max_amount": 2000, "currency": "usd",
///   "checkout_session_id": "cs_1", "merchant_id": "acme", "expires_at": "2030-01-01T00:00:00Z"},
///   "risk_signals": [], "metadata": {}}"#;
/// let request = DelegatePaymentRequest::parse(body).unwrap();
/// assert_eq!(request.allowance.max_amount, 2000);
/// assert!(!format!("{request:?}").contains("4242424242424242"));
/// let bad = DelegatePaymentRequest::parse(br#"{"payment_method": 1}"#).unwrap_err();
/// assert_eq!(bad.status(), 400);
/// assert_eq!(bad.body().param.as_deref(), Some("$.payment_method"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct DelegatePaymentRequest {
    /// The card.
    pub payment_method: PaymentMethodCard,
    /// Its allowance.
    pub allowance: Allowance,
    /// Billing address.
    #[serde(default)]
    pub billing_address: Option<Address>,
    /// Risk signals.
    pub risk_signals: Vec<RiskSignal>,
    /// Free-form strings, echoed in the answer.
    pub metadata: BTreeMap<String, String>,
}

/// What [`DelegatePaymentRequest::check`] derives: the values the mandate and the vault take.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CheckedAllowance {
    /// `max_amount` in its currency.
    pub max_amount: Money,
    /// The merchant.
    pub merchant_id: MerchantId,
    /// The allowance's expiry.
    pub expires_at: DateTime<Utc>,
    /// The card's expiry (month, year), when given.
    pub card_expiry: Option<(u8, u16)>,
    /// The last four digits to show.
    pub last4: String,
}

/// Converts a path of `json::from_json` (`allowance.currency`, `risk_signals[0]`) to JSONPath.
fn json_path(path: &str) -> String {
    if path.is_empty() {
        "$".to_owned()
    } else if path.starts_with('[') {
        format!("${path}")
    } else {
        format!("$.{path}")
    }
}

fn chars_at_most(param: &str, value: &str, max: usize) -> Result<(), AcpError> {
    let n = value.chars().count();
    if n > max {
        return Err(AcpError::malformed(
            param,
            format!("at most {max} characters ({n} given)"),
        ));
    }
    Ok(())
}

fn digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// The Luhn check digit of a string of ASCII digits.
fn luhn(number: &str) -> bool {
    let mut sum = 0u32;
    for (i, b) in number.bytes().rev().enumerate() {
        let mut d = u32::from(b.wrapping_sub(b'0'));
        if i % 2 == 1 {
            d *= 2;
            if d > 9 {
                d -= 9;
            }
        }
        sum += d;
    }
    sum.is_multiple_of(10)
}

fn check_metadata(at: &str, map: &BTreeMap<String, String>) -> Result<(), AcpError> {
    if map.len() > MAX_METADATA_ENTRIES {
        return Err(AcpError::invalid(
            at,
            format!("at most {MAX_METADATA_ENTRIES} entries"),
        ));
    }
    for (k, v) in map {
        if k.chars().count() > MAX_METADATA_KEY || k.is_empty() {
            return Err(AcpError::invalid(
                at,
                format!("keys are 1 to {MAX_METADATA_KEY} characters"),
            ));
        }
        if v.chars().count() > MAX_METADATA_VALUE {
            return Err(AcpError::invalid(
                format!("{at}.{k}"),
                format!("at most {MAX_METADATA_VALUE} characters"),
            ));
        }
    }
    Ok(())
}

impl DelegatePaymentRequest {
    /// Reads a body by the schema (see the module documentation). Every refusal is
    /// [`AcpError::Malformed`] naming the field as a JSONPath.
    pub fn parse(body: &[u8]) -> Result<DelegatePaymentRequest, AcpError> {
        let text = std::str::from_utf8(body)
            .map_err(|_| AcpError::malformed("$", "the body is not UTF-8"))?;
        let request: DelegatePaymentRequest = from_json(text).map_err(|e| {
            // The path names the missing or unknown member itself. A message about a secret
            // member never repeats its value (serde's "invalid type: integer `4242...`").
            let secret = [
                "payment_method.number",
                "payment_method.cvc",
                "payment_method.cryptogram",
            ]
            .iter()
            .any(|p| e.field().starts_with(p));
            let message = if secret {
                "must be a string".to_owned()
            } else {
                e.message().to_owned()
            };
            AcpError::malformed(json_path(e.field()), message)
        })?;
        request.check_schema()?;
        Ok(request)
    }

    /// What serde cannot say of the schema: lengths and patterns.
    fn check_schema(&self) -> Result<(), AcpError> {
        let pm = &self.payment_method;
        for (param, value, max) in [
            ("$.payment_method.exp_month", pm.exp_month.as_deref(), 2),
            ("$.payment_method.exp_year", pm.exp_year.as_deref(), 4),
            (
                "$.payment_method.cvc",
                pm.cvc.as_ref().map(Secret::expose),
                4,
            ),
            ("$.payment_method.eci_value", pm.eci_value.as_deref(), 2),
            ("$.payment_method.iin", pm.iin.as_deref(), 8),
            (
                "$.payment_method.display_last4",
                pm.display_last4.as_deref(),
                4,
            ),
        ] {
            if let Some(v) = value {
                chars_at_most(param, v, max)?;
            }
        }
        if let Some(l4) = &pm.display_last4
            && (l4.len() != 4 || !digits(l4))
        {
            return Err(AcpError::malformed(
                "$.payment_method.display_last4",
                "must match ^[0-9]{4}$",
            ));
        }
        if let Some(a) = &self.billing_address {
            chars_at_most("$.billing_address.name", &a.name, 256)?;
            chars_at_most("$.billing_address.line_one", &a.line_one, 60)?;
            if let Some(l2) = &a.line_two {
                chars_at_most("$.billing_address.line_two", l2, 60)?;
            }
            chars_at_most("$.billing_address.city", &a.city, 60)?;
            chars_at_most("$.billing_address.postal_code", &a.postal_code, 20)?;
            if a.country.chars().count() != 2 {
                return Err(AcpError::malformed(
                    "$.billing_address.country",
                    "exactly 2 characters (ISO 3166-1 alpha-2)",
                ));
            }
        }
        let al = &self.allowance;
        if al.currency.len() != 3 || !al.currency.bytes().all(|b| b.is_ascii_lowercase()) {
            return Err(AcpError::malformed(
                "$.allowance.currency",
                "must match ^[a-z]{3}$ (lowercase ISO 4217)",
            ));
        }
        chars_at_most("$.allowance.merchant_id", &al.merchant_id, 256)?;
        crate::domain::parse_time(&al.expires_at)
            .map_err(|m| AcpError::malformed("$.allowance.expires_at", m))?;
        Ok(())
    }

    /// Checks what the schema cannot (see the module documentation) at `now`. Every refusal
    /// is [`AcpError::Invalid`] naming the field.
    pub fn check(&self, now: DateTime<Utc>) -> Result<CheckedAllowance, AcpError> {
        let pm = &self.payment_method;
        let number = pm.number.expose();
        let param = "$.payment_method.number";
        if !(12..=19).contains(&number.len()) || !digits(number) {
            return Err(AcpError::invalid(param, "Invalid card number provided"));
        }
        let fpan = pm.card_number_type == CardNumberType::Fpan;
        if fpan && !luhn(number) {
            return Err(AcpError::invalid(param, "Invalid card number provided"));
        }
        let card_expiry = match (&pm.exp_month, &pm.exp_year) {
            (None, None) => None,
            (Some(_), None) => {
                return Err(AcpError::invalid(
                    "$.payment_method.exp_year",
                    "exp_year is required with exp_month",
                ))
            }
            (None, Some(_)) => {
                return Err(AcpError::invalid(
                    "$.payment_method.exp_month",
                    "exp_month is required with exp_year",
                ))
            }
            (Some(m), Some(y)) => {
                let month = (m.len() == 2 && digits(m))
                    .then(|| m.parse::<u8>().ok())
                    .flatten()
                    .filter(|m| (1..=12).contains(m))
                    .ok_or_else(|| {
                        AcpError::invalid(
                            "$.payment_method.exp_month",
                            "Invalid card expiration month",
                        )
                    })?;
                let year = (y.len() == 4 && digits(y))
                    .then(|| y.parse::<u16>().ok())
                    .flatten()
                    .filter(|y| (2000..=2199).contains(y))
                    .ok_or_else(|| {
                        AcpError::invalid(
                            "$.payment_method.exp_year",
                            "Invalid card expiration year",
                        )
                    })?;
                if (i32::from(year), u32::from(month)) < (now.year(), now.month()) {
                    return Err(AcpError::invalid(
                        "$.payment_method.exp_year",
                        "The card has expired",
                    ));
                }
                Some((month, year))
            }
        };
        if let Some(cvc) = &pm.cvc {
            let c = cvc.expose();
            if !(3..=4).contains(&c.len()) || !digits(c) {
                return Err(AcpError::invalid("$.payment_method.cvc", "Invalid CVC"));
            }
        }
        if let Some(iin) = &pm.iin
            && (!(6..=8).contains(&iin.len())
                || !digits(iin)
                || (fpan && !number.starts_with(iin.as_str())))
        {
            return Err(AcpError::invalid(
                "$.payment_method.iin",
                "iin must be 6 to 8 digits (an FPAN's own prefix)",
            ));
        }
        let own_last4 = &number[number.len() - 4..];
        let last4 = match &pm.display_last4 {
            Some(l4) if fpan && l4 != own_last4 => {
                return Err(AcpError::invalid(
                    "$.payment_method.display_last4",
                    "display_last4 is not the card number's last four digits",
                ))
            }
            Some(l4) => l4.clone(),
            None => own_last4.to_owned(),
        };
        if let Some(eci) = &pm.eci_value
            && (eci.len() != 2 || !digits(eci))
        {
            return Err(AcpError::invalid(
                "$.payment_method.eci_value",
                "eci_value must be two digits",
            ));
        }
        if let Some(brand) = &pm.display_brand {
            let ok = !brand.is_empty()
                && brand.len() <= 32
                && brand
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
            if !ok {
                return Err(AcpError::invalid(
                    "$.payment_method.display_brand",
                    "display_brand must be 1 to 32 ASCII letters, digits, _ or -",
                ));
            }
        }
        check_metadata("$.payment_method.metadata", &pm.metadata)?;
        check_metadata("$.metadata", &self.metadata)?;
        for (i, s) in self.risk_signals.iter().enumerate() {
            if s.action == RiskAction::Blocked {
                return Err(AcpError::invalid(
                    format!("$.risk_signals[{i}].action"),
                    "a risk signal recommends blocking this card",
                ));
            }
        }

        let al = &self.allowance;
        let currency = Currency::from_code(&al.currency.to_ascii_uppercase())
            .map_err(|e| AcpError::invalid("$.allowance.currency", format!("{e}")))?;
        if al.max_amount <= 0 {
            return Err(AcpError::invalid(
                "$.allowance.max_amount",
                "max_amount must be more than zero",
            ));
        }
        let max_amount = Money::from_minor(al.max_amount, currency).map_err(|e| {
            AcpError::invalid(
                "$.allowance.max_amount",
                format!("max_amount in minor units of {currency}: {e}"),
            )
        })?;
        let merchant_id = MerchantId::new(&al.merchant_id)
            .map_err(|e| AcpError::invalid("$.allowance.merchant_id", format!("{e}")))?;
        let expires_at = crate::domain::parse_time(&al.expires_at)
            .map_err(|m| AcpError::malformed("$.allowance.expires_at", m))?;
        if expires_at <= now {
            return Err(AcpError::invalid(
                "$.allowance.expires_at",
                "The allowance has already expired",
            ));
        }
        if al.checkout_session_id.is_empty() {
            return Err(AcpError::invalid(
                "$.allowance.checkout_session_id",
                "checkout_session_id must not be empty",
            ));
        }
        Ok(CheckedAllowance {
            max_amount,
            merchant_id,
            expires_at,
            card_expiry,
            last4,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn luhn_accepts_test_cards_and_refuses_a_changed_digit() {
        assert!(luhn("4242424242424242"));
        assert!(luhn("5555555555554444"));
        assert!(!luhn("4242424242424241"));
    }

    #[test]
    fn paths_are_jsonpaths() {
        assert_eq!(json_path(""), "$");
        assert_eq!(json_path("allowance.currency"), "$.allowance.currency");
        assert_eq!(json_path("[0]"), "$[0]");
    }
}
