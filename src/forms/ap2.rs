//! AP2 v0.2 mandates in: an open payment mandate (with the open checkout mandate it references
//! and the cart it closed on) as a [`CreateMandate`], a closed checkout mandate as a
//! [`CartSnapshot`] with its hash checked.
//!
//! Signatures are not verified here: the caller verifies the SD-JWT / JWS (the user's key for
//! mandates, the merchant's for the checkout JWT) and passes the verified claims' JSON. Members
//! the AP2 schemas do not define are ignored, as the schemas allow (none of them closes its
//! objects); a constraint `type` the schemas do not define is refused (the schemas' `oneOf` /
//! `anyOf` fail for it).

use base64::Engine as _;
use chrono::{DateTime, Duration, NaiveDate, TimeZone, Utc};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{Map, Number, Value};
use sha2::{Digest as _, Sha256};

use super::error::FormError;
use crate::domain::{
    ActionSet, Actor, AmountScope, Budgets, BuyerId, CartBinding, CartContent, CartId,
    CartSnapshot, Channel, CheckoutContext, ConfirmationRule, Currency, CurrencyScope, Dimension,
    EvidenceRef, IdempotencyKey, Lifecycle, LineItem, MandateId, MandateScope, MandateSpec,
    MandateStatus, Merchant, Money, PaymentAction, Sku, Text, Totals, Validity, WindowLimit,
};
use crate::engine::CreateMandate;

const DAY: u64 = 24 * 3600;

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
}

/// base64url (no padding) of SHA-256 of `bytes`: the digest AP2 uses for references.
fn digest(bytes: &[u8]) -> String {
    b64().encode(Sha256::digest(bytes))
}

/// Parses `json` as `T`, naming the path of the first error.
fn parse<T: DeserializeOwned>(json: &[u8], prefix: &str) -> Result<T, FormError> {
    let mut de = serde_json::Deserializer::from_slice(json);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        FormError::Malformed {
            field: join(prefix, &path),
            reason: e.into_inner().to_string(),
        }
    })?;
    de.end().map_err(|e| FormError::Malformed {
        field: join(prefix, "."),
        reason: e.to_string(),
    })?;
    // No AP2 member is nullable: `null` is refused, never read as "absent" (one meaning per
    // input: `"payee": null` must not lift a restriction).
    let tree: Value = serde_json::from_slice(json).map_err(|e| FormError::Malformed {
        field: join(prefix, "."),
        reason: e.to_string(),
    })?;
    if let Some(path) = first_null(&tree, String::new()) {
        return Err(FormError::Malformed {
            field: join(prefix, &path),
            reason: "null is not a value here; omit the member instead".into(),
        });
    }
    Ok(value)
}

/// The path of the first `null` in `v`, if any.
fn first_null(v: &Value, at: String) -> Option<String> {
    match v {
        Value::Null => Some(if at.is_empty() { ".".into() } else { at }),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, x)| first_null(x, format!("{at}[{i}]"))),
        Value::Object(map) => map.iter().find_map(|(k, x)| {
            first_null(
                x,
                if at.is_empty() {
                    k.clone()
                } else {
                    format!("{at}.{k}")
                },
            )
        }),
        Value::Bool(_) | Value::Number(_) | Value::String(_) => None,
    }
}

fn join(prefix: &str, path: &str) -> String {
    match (prefix.is_empty(), path == ".") {
        (true, _) => path.to_owned(),
        (false, true) => prefix.to_owned(),
        (false, false) => format!("{prefix}.{path}"),
    }
}

fn expect_vct(found: &str, want: &str) -> Result<(), FormError> {
    if found == want {
        Ok(())
    } else {
        Err(FormError::invalid(
            "vct",
            format!("{found:?} is not {want:?}"),
        ))
    }
}

fn currency(field: &str, code: &str) -> Result<Currency, FormError> {
    if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(FormError::invalid(
            field,
            "expected an ISO 4217 alpha-3 code in upper case",
        ));
    }
    Currency::from_code(code).map_err(|e| FormError::invalid(field, e.to_string()))
}

fn minor(field: &str, amount: i64, currency: Currency) -> Result<Money, FormError> {
    if amount < 0 {
        return Err(FormError::invalid(field, "must not be negative"));
    }
    Money::from_minor(amount, currency).map_err(|e| FormError::invalid(field, e.to_string()))
}

fn epoch(field: &str, secs: i64) -> Result<DateTime<Utc>, FormError> {
    Utc.timestamp_opt(secs, 0)
        .single()
        .filter(|t| t.timestamp() >= 0 && t.timestamp() < 253_402_300_800)
        .ok_or_else(|| FormError::invalid(field, "not a Unix time between 1970 and 9999"))
}

/// An AP2 date: an RFC 3339 date-time, or a bare `YYYY-MM-DD` read so that it is right in every
/// time zone (UTC-12 to UTC+14): as a start, the day's latest start (12:00 UTC); as an end, its
/// earliest end (the day ends at 10:00 UTC in UTC+14). A bare date never widens the window.
fn ap2_time(field: &str, text: &str, as_end: bool) -> Result<DateTime<Utc>, FormError> {
    if let Ok(t) = crate::domain::parse_time(text) {
        return Ok(t);
    }
    let d = NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .ok()
        .filter(|_| text.len() == 10)
        .ok_or_else(|| {
            FormError::invalid(field, "expected an RFC 3339 date-time or a YYYY-MM-DD date")
        })?;
    let midnight = Utc.from_utc_datetime(&d.and_time(chrono::NaiveTime::MIN));
    Ok(if as_end {
        midnight + Duration::hours(10)
    } else {
        midnight + Duration::hours(12)
    })
}

fn later(a: Option<DateTime<Utc>>, b: DateTime<Utc>) -> Option<DateTime<Utc>> {
    Some(a.map_or(b, |a| a.max(b)))
}

fn earlier(a: Option<DateTime<Utc>>, b: DateTime<Utc>) -> Option<DateTime<Utc>> {
    Some(a.map_or(b, |a| a.min(b)))
}

fn lower(a: Option<Money>, b: Money) -> Option<Money> {
    Some(match a {
        Some(a) if b.exceeds(&a) => a,
        _ => b,
    })
}

// ---------------------------------------------------------------------------------------------
// Wire shapes (members the schemas define; others are ignored, as the schemas allow)
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
struct MerchantJson {
    id: String,
    #[expect(dead_code, reason = "required by the schema, descriptive only")]
    name: String,
}

#[derive(Debug, Deserialize)]
struct AmountJson {
    amount: i64,
    currency: String,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type")]
enum PaymentConstraint {
    #[serde(rename = "payment.agent_recurrence")]
    AgentRecurrence {
        frequency: Frequency,
        #[serde(default)]
        max_occurrences: Option<i64>,
    },
    #[serde(rename = "payment.allowed_payees")]
    AllowedPayees { allowed: Vec<MerchantJson> },
    #[serde(rename = "payment.allowed_payment_instruments")]
    AllowedPaymentInstruments {
        #[expect(dead_code, reason = "refused whatever it holds")]
        allowed: Vec<Value>,
    },
    #[serde(rename = "payment.allowed_pisps")]
    AllowedPisps {
        #[expect(dead_code, reason = "refused whatever it holds")]
        allowed: Vec<Value>,
    },
    #[serde(rename = "payment.amount_range")]
    AmountRange {
        currency: String,
        max: i64,
        #[serde(default)]
        min: Option<i64>,
    },
    #[serde(rename = "payment.budget")]
    Budget { max: Number, currency: String },
    #[serde(rename = "payment.execution_date")]
    ExecutionDate {
        #[serde(default)]
        not_before: Option<String>,
        #[serde(default)]
        not_after: Option<String>,
    },
    #[serde(rename = "payment.reference")]
    Reference { conditional_transaction_id: String },
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
enum Frequency {
    OnDemand,
    Daily,
    Weekly,
    Biweekly,
    Monthly,
    Quarterly,
    Annually,
}

impl Frequency {
    /// The rolling window allowing one payment that is never wider than the calendar period:
    /// the period's longest length (a month is 31 days, a quarter 92, a year 366).
    fn window_seconds(self) -> Option<u64> {
        match self {
            Frequency::OnDemand => None,
            Frequency::Daily => Some(DAY),
            Frequency::Weekly => Some(7 * DAY),
            Frequency::Biweekly => Some(14 * DAY),
            Frequency::Monthly => Some(31 * DAY),
            Frequency::Quarterly => Some(92 * DAY),
            Frequency::Annually => Some(366 * DAY),
        }
    }
}

#[derive(Debug, Deserialize)]
struct OpenPaymentJson {
    vct: String,
    constraints: Vec<PaymentConstraint>,
    #[expect(
        dead_code,
        reason = "the key binding is the mandate's actor (see the docs)"
    )]
    cnf: Map<String, Value>,
    #[serde(default)]
    payee: Option<MerchantJson>,
    #[serde(default)]
    payment_amount: Option<AmountJson>,
    #[serde(default)]
    payment_instrument: Option<Value>,
    #[serde(default)]
    pisp: Option<Value>,
    #[serde(default)]
    execution_date: Option<String>,
    #[serde(default)]
    iat: Option<i64>,
    #[serde(default)]
    exp: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type")]
enum CheckoutConstraint {
    #[serde(rename = "checkout.allowed_merchants")]
    AllowedMerchants { allowed: Vec<MerchantJson> },
    #[serde(rename = "checkout.line_items")]
    LineItems { items: Vec<LineItemRequirement> },
}

#[derive(Debug, Clone, Deserialize)]
struct LineItemRequirement {
    id: String,
    acceptable_items: Vec<ItemRef>,
    quantity: i64,
}

#[derive(Debug, Clone, Deserialize)]
struct ItemRef {
    id: String,
    #[expect(dead_code, reason = "required by the schema, descriptive only")]
    title: String,
}

#[derive(Debug, Deserialize)]
struct OpenCheckoutJson {
    vct: String,
    constraints: Vec<CheckoutConstraint>,
    #[expect(
        dead_code,
        reason = "the key binding is the mandate's actor (see the docs)"
    )]
    cnf: Map<String, Value>,
    #[serde(default)]
    iat: Option<i64>,
    #[serde(default)]
    exp: Option<i64>,
}

#[derive(Debug, Deserialize)]
struct CheckoutMandateJson {
    vct: String,
    checkout_jwt: String,
    checkout_hash: String,
    #[serde(default)]
    iat: Option<i64>,
    #[serde(default)]
    exp: Option<i64>,
    #[serde(default, rename = "_sd_alg")]
    sd_alg: Option<String>,
}

#[derive(Debug, Deserialize)]
struct JwsHeader {
    alg: String,
}

#[derive(Debug, Deserialize)]
struct CheckoutJson {
    id: String,
    currency: String,
    line_items: Vec<CheckoutLine>,
    totals: Vec<CheckoutTotal>,
    #[serde(default)]
    expires_at: Option<String>,
}

#[derive(Debug, Deserialize)]
struct CheckoutLine {
    item: CheckoutItem,
    quantity: u32,
}

#[derive(Debug, Deserialize)]
struct CheckoutItem {
    id: String,
    title: String,
    price: i64,
}

#[derive(Debug, Deserialize)]
struct CheckoutTotal {
    #[serde(rename = "type")]
    kind: String,
    amount: i64,
}

// ---------------------------------------------------------------------------------------------
// Open checkout mandate
// ---------------------------------------------------------------------------------------------

/// An AP2 open checkout mandate (`mandate.checkout.open.1`): the merchants and line items
/// future checkouts must have. It does not become a mandate of its own: its line items fix
/// quantities, which an open cart binding (SKUs, line count) cannot represent. It is honoured
/// as the reference of an open payment mandate ([`CheckoutReference`]), by checking the cart
/// the payment is bound to against it ([`OpenCheckoutMandate::admits`]).
#[derive(Debug, Clone)]
pub struct OpenCheckoutMandate {
    digest: String,
    merchants: Option<Vec<String>>,
    lines: Vec<LineItemRequirement>,
    iat: Option<DateTime<Utc>>,
    exp: Option<DateTime<Utc>>,
}

impl OpenCheckoutMandate {
    /// Reads the mandate's JSON (the exact bytes its digest is taken over).
    pub fn from_slice(json: &[u8]) -> Result<OpenCheckoutMandate, FormError> {
        let raw: OpenCheckoutJson = parse(json, "")?;
        expect_vct(&raw.vct, "mandate.checkout.open.1")?;
        let mut merchants: Option<Vec<String>> = None;
        let mut lines = Vec::new();
        for (i, c) in raw.constraints.into_iter().enumerate() {
            match c {
                CheckoutConstraint::AllowedMerchants { allowed } => {
                    let ids: Vec<String> = allowed.into_iter().map(|m| m.id).collect();
                    merchants = Some(match merchants {
                        None => ids,
                        Some(prev) => prev.into_iter().filter(|x| ids.contains(x)).collect(),
                    });
                }
                CheckoutConstraint::LineItems { items } => {
                    if items.is_empty() {
                        return Err(FormError::invalid(
                            format!("constraints[{i}].items"),
                            "must hold at least one requirement",
                        ));
                    }
                    for (j, r) in items.iter().enumerate() {
                        if r.quantity <= 0 {
                            return Err(FormError::invalid(
                                format!("constraints[{i}].items[{j}].quantity"),
                                "must be more than zero",
                            ));
                        }
                        if r.acceptable_items.is_empty() {
                            return Err(FormError::invalid(
                                format!("constraints[{i}].items[{j}].acceptable_items"),
                                "must not be empty",
                            ));
                        }
                    }
                    lines.extend(items);
                }
            }
        }
        if lines.is_empty() {
            return Err(FormError::Malformed {
                field: "constraints".into(),
                reason: "must contain a checkout.line_items constraint".into(),
            });
        }
        Ok(OpenCheckoutMandate {
            digest: digest(json),
            merchants,
            lines,
            iat: raw.iat.map(|t| epoch("iat", t)).transpose()?,
            exp: raw.exp.map(|t| epoch("exp", t)).transpose()?,
        })
    }

    /// base64url SHA-256 of the bytes read (what a `payment.reference` names).
    pub fn digest(&self) -> &str {
        &self.digest
    }

    /// Whether `snapshot` is a checkout this mandate allows: its merchant is allowed, every
    /// line item requirement is met by exactly one line of one acceptable item in exactly the
    /// required quantity, and there is no other line.
    pub fn admits(&self, snapshot: &CartSnapshot) -> Result<(), FormError> {
        let merchant = snapshot.merchant().merchant_id.as_str();
        if let Some(list) = &self.merchants
            && !list.iter().any(|m| m == merchant)
        {
            return Err(FormError::invalid(
                "checkout.allowed_merchants",
                format!("merchant {merchant} of the cart is not allowed"),
            ));
        }
        let items = snapshot.items();
        let mut used = vec![false; items.len()];
        for r in &self.lines {
            let matching: Vec<usize> = items
                .iter()
                .enumerate()
                .filter(|(_, l)| r.acceptable_items.iter().any(|a| a.id == l.sku.as_str()))
                .map(|(k, _)| k)
                .collect();
            let [k] = matching.as_slice() else {
                return Err(FormError::invalid(
                    format!("checkout.line_items[{}]", r.id),
                    format!(
                        "{} lines of the cart match; exactly one must",
                        matching.len()
                    ),
                ));
            };
            if used[*k] || i64::from(items[*k].quantity) != r.quantity {
                return Err(FormError::invalid(
                    format!("checkout.line_items[{}].quantity", r.id),
                    format!(
                        "the cart has {} of {}, {} required",
                        items[*k].quantity, items[*k].sku, r.quantity
                    ),
                ));
            }
            used[*k] = true;
        }
        if let Some(k) = used.iter().position(|u| !u) {
            return Err(FormError::invalid(
                "checkout.line_items",
                format!("cart line {} ({}) meets no requirement", k, items[k].sku),
            ));
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Open payment mandate
// ---------------------------------------------------------------------------------------------

/// Who the imported mandate is for, in the crate's terms (AP2 names none of them), and the
/// import time.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Ap2Context {
    /// Idempotency key of the command.
    pub key: IdempotencyKey,
    /// The mandate's id.
    pub mandate_id: MandateId,
    /// The buyer (the user who signed the AP2 mandate).
    pub buyer_id: BuyerId,
    /// The actor holding the key of the mandate's `cnf` claim (the caller checked it).
    pub actor: Actor,
    /// The import time.
    pub now: DateTime<Utc>,
}

impl Ap2Context {
    /// A context for `mandate_id` of `buyer_id`, used by `actor`, imported at `now`.
    pub fn new(
        key: IdempotencyKey,
        mandate_id: MandateId,
        buyer_id: BuyerId,
        actor: Actor,
        now: DateTime<Utc>,
    ) -> Ap2Context {
        Ap2Context {
            key,
            mandate_id,
            buyer_id,
            actor,
            now,
        }
    }
}

/// The checkout an open payment mandate's `payment.reference` names: the open checkout
/// mandate's bytes (its digest must be the reference) and the cart snapshot of the checkout
/// it closed on (from [`import_checkout_mandate`]), which the imported mandate is bound to.
#[derive(Debug, Clone, Copy)]
pub struct CheckoutReference<'a> {
    /// The open checkout mandate's JSON.
    pub open_checkout: &'a [u8],
    /// The cart the payment is for.
    pub snapshot: &'a CartSnapshot,
}

impl<'a> CheckoutReference<'a> {
    /// The reference to `open_checkout`, closed on `snapshot`.
    pub fn new(open_checkout: &'a [u8], snapshot: &'a CartSnapshot) -> CheckoutReference<'a> {
        CheckoutReference {
            open_checkout,
            snapshot,
        }
    }
}

#[derive(Default)]
struct Collected {
    currency: Option<(Currency, String)>,
    max: Option<Money>,
    per_transaction: Option<Money>,
    lifetime: Option<Money>,
    payees: Option<Vec<String>>,
    windows: Vec<WindowLimit>,
    recurring: bool,
    uses: Option<u32>,
    not_before: Option<DateTime<Utc>>,
    expires_at: Option<DateTime<Utc>>,
    references: Vec<String>,
}

impl Collected {
    fn currency(&mut self, field: String, code: &str) -> Result<Currency, FormError> {
        let c = currency(&field, code)?;
        match &self.currency {
            Some((prev, at)) if *prev != c => Err(FormError::invalid(
                field,
                format!("{c} differs from {prev} at {at}"),
            )),
            Some(_) => Ok(c),
            None => {
                self.currency = Some((c, field));
                Ok(c)
            }
        }
    }

    fn constraint(&mut self, i: usize, c: PaymentConstraint) -> Result<(), FormError> {
        let at = |m: &str| format!("constraints[{i}].{m}");
        match c {
            PaymentConstraint::AmountRange { currency, max, min } => {
                let cur = self.currency(at("currency"), &currency)?;
                let max = minor(&at("max"), max, cur)?;
                if let Some(min) = min {
                    if min < 0 {
                        return Err(FormError::invalid(at("min"), "must not be negative"));
                    }
                    if min > 0 {
                        return Err(FormError::unrepresentable(
                            Dimension::LowerAmount,
                            at("min"),
                            "a minimum amount: a mandate allows any amount up to its maximum or exactly it",
                        ));
                    }
                }
                self.max = lower(self.max, max);
                self.per_transaction = lower(self.per_transaction, max);
            }
            PaymentConstraint::Budget { max, currency } => {
                let cur = self.currency(at("currency"), &currency)?;
                // Read in minor units, like `amount_range`: a budget meant in major units
                // becomes smaller, never larger. A fraction is refused.
                let units = max.as_i64().ok_or_else(|| {
                    FormError::invalid(at("max"), "expected a whole number of minor units")
                })?;
                let m = minor(&at("max"), units, cur)?;
                self.lifetime = lower(self.lifetime, m);
                self.max = lower(self.max, m);
            }
            PaymentConstraint::AllowedPayees { allowed } => {
                if allowed.is_empty() {
                    return Err(FormError::invalid(at("allowed"), "must not be empty"));
                }
                let ids: Vec<String> = allowed.into_iter().map(|m| m.id).collect();
                self.payees = Some(match self.payees.take() {
                    None => ids,
                    Some(prev) => prev.into_iter().filter(|x| ids.contains(x)).collect(),
                });
            }
            PaymentConstraint::AllowedPaymentInstruments { .. } => {
                return Err(FormError::unrepresentable(
                    None,
                    at("type"),
                    "payment.allowed_payment_instruments: a mandate does not limit the payment instrument",
                ));
            }
            PaymentConstraint::AllowedPisps { .. } => {
                return Err(FormError::unrepresentable(
                    None,
                    at("type"),
                    "payment.allowed_pisps: a mandate does not limit the payment initiation service provider",
                ));
            }
            PaymentConstraint::ExecutionDate {
                not_before,
                not_after,
            } => {
                if let Some(t) = not_before {
                    self.not_before =
                        later(self.not_before, ap2_time(&at("not_before"), &t, false)?);
                }
                if let Some(t) = not_after {
                    self.expires_at =
                        earlier(self.expires_at, ap2_time(&at("not_after"), &t, true)?);
                }
            }
            PaymentConstraint::AgentRecurrence {
                frequency,
                max_occurrences,
            } => {
                self.recurring = true;
                if let Some(seconds) = frequency.window_seconds() {
                    self.windows.push(WindowLimit {
                        window_seconds: seconds,
                        max_amount: None,
                        max_count: Some(1),
                    });
                }
                if let Some(n) = max_occurrences {
                    let n = u32::try_from(n).ok().filter(|n| *n > 0).ok_or_else(|| {
                        FormError::invalid(at("max_occurrences"), "must be 1 to 4294967295")
                    })?;
                    self.uses = Some(self.uses.map_or(n, |u| u.min(n)));
                }
            }
            PaymentConstraint::Reference {
                conditional_transaction_id,
            } => self.references.push(conditional_transaction_id),
        }
        Ok(())
    }
}

/// Reads an AP2 open payment mandate (`mandate.payment.open.1`) into the command creating the
/// equivalent mandate: bound to the cart of `reference` (checked against the referenced open
/// checkout mandate), at the cart's merchant, with every constraint represented or refused.
/// See `docs/design.forms.md` for the table of members and constraints.
///
/// The mandate is created `active` (the AP2 mandate is the user's signed consent), with the
/// actions prepare, authorize, capture and commit order, and an evidence reference to the
/// checkout it names.
pub fn import_open_payment_mandate(
    json: &[u8],
    ctx: &Ap2Context,
    reference: Option<CheckoutReference<'_>>,
) -> Result<CreateMandate, FormError> {
    let raw: OpenPaymentJson = parse(json, "")?;
    expect_vct(&raw.vct, "mandate.payment.open.1")?;
    if raw.payment_instrument.is_some() {
        return Err(FormError::unrepresentable(
            None,
            "payment_instrument",
            "a mandate does not limit the payment instrument",
        ));
    }
    if raw.pisp.is_some() {
        return Err(FormError::unrepresentable(
            None,
            "pisp",
            "a mandate does not limit the payment initiation service provider",
        ));
    }
    if raw.execution_date.is_some() {
        return Err(FormError::unrepresentable(
            Dimension::NotBefore,
            "execution_date",
            "one execution date is not a validity window (use the payment.execution_date constraint)",
        ));
    }
    let mut c = Collected::default();
    for (i, constraint) in raw.constraints.into_iter().enumerate() {
        c.constraint(i, constraint)?;
    }
    if c.references.is_empty() {
        return Err(FormError::Malformed {
            field: "constraints".into(),
            reason: "must contain a payment.reference constraint".into(),
        });
    }
    if c.payees.as_ref().is_some_and(Vec::is_empty) {
        return Err(FormError::invalid(
            "constraints",
            "no payee is allowed by every payment.allowed_payees",
        ));
    }
    let Some(reference) = reference else {
        return Err(FormError::unrepresentable(
            Dimension::Cart,
            "constraints.payment.reference",
            "the payment is limited to checkouts of an open checkout mandate; pass that mandate and the cart it closed on",
        ));
    };
    let open = OpenCheckoutMandate::from_slice(reference.open_checkout).map_err(|e| match e {
        FormError::Malformed { field, reason } => FormError::Malformed {
            field: join("reference.open_checkout", &field),
            reason,
        },
        FormError::Invalid { field, reason } => FormError::Invalid {
            field: join("reference.open_checkout", &field),
            reason,
        },
        other => other,
    })?;
    for (k, r) in c.references.iter().enumerate() {
        if *r != open.digest {
            return Err(FormError::HashMismatch {
                field: format!("payment.reference[{k}].conditional_transaction_id"),
                claimed: r.clone(),
                computed: open.digest.clone(),
            });
        }
    }
    let snapshot = reference.snapshot;
    open.admits(snapshot)?;
    let merchant = &snapshot.merchant().merchant_id;
    if let Some(payees) = &c.payees
        && !payees.iter().any(|p| p == merchant.as_str())
    {
        return Err(FormError::invalid(
            "constraints.payment.allowed_payees",
            format!("the cart's merchant {merchant} is not an allowed payee"),
        ));
    }
    if let Some(payee) = &raw.payee
        && payee.id != merchant.as_str()
    {
        return Err(FormError::invalid(
            "payee.id",
            format!("{} is not the cart's merchant {merchant}", payee.id),
        ));
    }
    let cur = match &c.currency {
        Some((cur, _)) => *cur,
        None => snapshot.currency(),
    };
    if cur != snapshot.currency() {
        return Err(FormError::invalid(
            "constraints.currency",
            format!("{cur}, the cart is in {}", snapshot.currency()),
        ));
    }
    // The cart's total bounds every payment for it.
    let mut max_amount = lower(c.max, snapshot.total()).unwrap_or(snapshot.total());
    let mut allow_lower_amount = true;
    if let Some(pa) = &raw.payment_amount {
        let pcur = currency("payment_amount.currency", &pa.currency)?;
        if pcur != cur {
            return Err(FormError::invalid(
                "payment_amount.currency",
                format!("{pcur}, the constraints are in {cur}"),
            ));
        }
        let exact = minor("payment_amount.amount", pa.amount, cur)?;
        if exact.exceeds(&max_amount) {
            return Err(FormError::invalid(
                "payment_amount.amount",
                format!("{exact} is above the limit {max_amount}"),
            ));
        }
        max_amount = exact;
        allow_lower_amount = false;
    }
    if max_amount.is_zero() {
        return Err(FormError::invalid("constraints", "no amount can be paid"));
    }
    let not_before = [
        raw.iat.map(|t| epoch("iat", t)).transpose()?,
        c.not_before,
        open.iat,
    ]
    .into_iter()
    .flatten()
    .max()
    .unwrap_or(ctx.now);
    let expires_at = [raw.exp.map(|t| epoch("exp", t)).transpose()?, c.expires_at, open.exp]
        .into_iter()
        .flatten()
        .min()
        .ok_or_else(|| {
            FormError::unrepresentable(
                Dimension::ExpiresAt,
                "exp",
                "the mandate never expires; a mandate needs an expiry (exp or payment.execution_date.not_after)",
            )
        })?;
    if expires_at <= ctx.now {
        return Err(FormError::invalid("exp", "the mandate has expired"));
    }
    if expires_at <= not_before {
        return Err(FormError::invalid("exp", "the validity window is empty"));
    }
    let evidence = EvidenceRef::new(format!("ap2:payment.reference:{}", open.digest))
        .map_err(|e| FormError::invalid("payment.reference", e.to_string()))?;
    let spec = MandateSpec {
        id: ctx.mandate_id.clone(),
        buyer_id: ctx.buyer_id.clone(),
        actor: ctx.actor.clone(),
        parent_id: None,
        scope: MandateScope {
            merchants: crate::domain::MerchantScope::Single {
                merchant_id: merchant.clone(),
            },
            mccs: None,
            cart: CartBinding::Snapshot {
                snapshot_id: snapshot.id(),
            },
            amount: AmountScope {
                max_amount,
                includes_shipping: true,
                includes_tax: true,
                allow_lower_amount,
                allow_partial_capture: false,
                max_payment_attempts: None,
            },
            currency: CurrencyScope {
                currency: cur,
                conversion_allowed: false,
            },
            budgets: Budgets {
                per_transaction: c.per_transaction,
                windows: c.windows,
                lifetime: c.lifetime,
            },
            actions: [
                PaymentAction::Prepare,
                PaymentAction::Authorize,
                PaymentAction::Capture,
                PaymentAction::CommitOrder,
            ]
            .into_iter()
            .collect::<ActionSet>(),
            confirmation: ConfirmationRule::never(),
            // Without payment.agent_recurrence the mandate pays once.
            max_uses: if c.recurring { c.uses } else { Some(1) },
            validity: Validity {
                not_before,
                expires_at,
            },
        },
        lifecycle: Lifecycle::new(MandateStatus::Active, ctx.now),
        evidence_refs: vec![evidence],
    };
    crate::domain::Mandate::new(spec.clone())
        .map_err(|e| FormError::invalid(e.field().to_owned(), e.kind().to_string()))?;
    Ok(CreateMandate::new(ctx.key.clone(), spec))
}

// ---------------------------------------------------------------------------------------------
// Closed checkout mandate
// ---------------------------------------------------------------------------------------------

/// What reading a closed checkout mandate needs besides it: the merchant whose key signed the
/// checkout JWT (verified by the caller) with its category, and the time.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReadCheckout {
    /// The merchant of the checkout.
    pub merchant: Merchant,
    /// The import time.
    pub now: DateTime<Utc>,
}

impl ReadCheckout {
    /// Reads checkouts of `merchant` at `now`.
    pub fn new(merchant: Merchant, now: DateTime<Utc>) -> ReadCheckout {
        ReadCheckout { merchant, now }
    }
}

/// Reads an AP2 closed checkout mandate (`mandate.checkout.1`) as the cart snapshot of its
/// checkout: `checkout_hash` must be the base64url SHA-256 of `checkout_jwt` (refused with
/// [`FormError::HashMismatch`] otherwise; `_sd_alg`, when present, must be `sha-256`), the JWT
/// must be a signed compact JWS (its signature is the caller's to verify), and its payload a
/// checkout whose lines and totals add up.
pub fn import_checkout_mandate(
    json: &[u8],
    read: &ReadCheckout,
) -> Result<CartSnapshot, FormError> {
    let raw: CheckoutMandateJson = parse(json, "")?;
    expect_vct(&raw.vct, "mandate.checkout.1")?;
    if let Some(alg) = &raw.sd_alg
        && alg != "sha-256"
    {
        return Err(FormError::unrepresentable(
            None,
            "_sd_alg",
            format!("hash algorithm {alg:?}; only sha-256 is read"),
        ));
    }
    let computed = digest(raw.checkout_jwt.as_bytes());
    if computed != raw.checkout_hash {
        return Err(FormError::HashMismatch {
            field: "checkout_hash".into(),
            claimed: raw.checkout_hash,
            computed,
        });
    }
    let parts: Vec<&str> = raw.checkout_jwt.split('.').collect();
    let [header, payload, signature] = parts.as_slice() else {
        return Err(FormError::invalid(
            "checkout_jwt",
            "expected a compact JWS (three base64url parts)",
        ));
    };
    let decode = |field: &str, part: &str| {
        b64()
            .decode(part)
            .map_err(|e| FormError::invalid(field, e.to_string()))
    };
    let header: JwsHeader = parse(
        &decode("checkout_jwt.header", header)?,
        "checkout_jwt.header",
    )?;
    if header.alg.eq_ignore_ascii_case("none") || signature.is_empty() {
        return Err(FormError::invalid(
            "checkout_jwt.header.alg",
            "the checkout JWT is unsigned",
        ));
    }
    let checkout: CheckoutJson = parse(
        &decode("checkout_jwt.payload", payload)?,
        "checkout_jwt.payload",
    )?;
    let p = |m: &str| format!("checkout_jwt.payload.{m}");
    let cur = currency(&p("currency"), &checkout.currency)?;
    let mut items = Vec::with_capacity(checkout.line_items.len());
    for (i, l) in checkout.line_items.iter().enumerate() {
        let f = |m: &str| p(&format!("line_items[{i}].{m}"));
        items.push(LineItem {
            sku: Sku::new(&l.item.id)
                .map_err(|e| FormError::invalid(f("item.id"), e.to_string()))?,
            description: Text::new(&l.item.title)
                .map_err(|e| FormError::invalid(f("item.title"), e.to_string()))?,
            quantity: l.quantity,
            unit_price: minor(&f("item.price"), l.item.price, cur)?,
        });
    }
    let zero = Money::zero(cur);
    let mut found: [Option<Money>; 5] = [None; 5];
    for (i, t) in checkout.totals.iter().enumerate() {
        let slot = match t.kind.as_str() {
            "subtotal" => 0,
            "fulfillment" => 1,
            "tax" => 2,
            "discount" => 3,
            "total" => 4,
            other => {
                return Err(FormError::unrepresentable(
                    Dimension::MaxAmount,
                    p(&format!("totals[{i}].type")),
                    format!("a total of type {other:?} has no place in a cart snapshot's totals"),
                ))
            }
        };
        if found[slot].is_some() {
            return Err(FormError::invalid(
                p(&format!("totals[{i}].type")),
                format!("{} is given twice", t.kind),
            ));
        }
        found[slot] = Some(minor(&p(&format!("totals[{i}].amount")), t.amount, cur)?);
    }
    let Some(total) = found[4] else {
        return Err(FormError::Malformed {
            field: p("totals"),
            reason: "must contain a total".into(),
        });
    };
    let mut subtotal = zero;
    for l in &items {
        let line = l
            .line_total()
            .map_err(|e| FormError::invalid(p("line_items"), e.to_string()))?;
        subtotal = subtotal
            .checked_add(&line)
            .map_err(|e| FormError::invalid(p("line_items"), e.to_string()))?;
    }
    let created_at = raw
        .iat
        .map(|t| epoch("iat", t))
        .transpose()?
        .unwrap_or(read.now);
    let expires_at = [
        raw.exp.map(|t| epoch("exp", t)).transpose()?,
        checkout
            .expires_at
            .as_deref()
            .map(|t| {
                crate::domain::parse_time(t).map_err(|e| FormError::invalid(p("expires_at"), e))
            })
            .transpose()?,
    ]
    .into_iter()
    .flatten()
    .min()
    .ok_or_else(|| FormError::Malformed {
        field: "exp".into(),
        reason: "a cart snapshot needs an expiry (exp or the checkout's expires_at)".into(),
    })?;
    if expires_at <= read.now {
        return Err(FormError::invalid("exp", "the checkout has expired"));
    }
    let content = CartContent {
        id: None,
        cart_id: Some(
            CartId::new(&checkout.id).map_err(|e| FormError::invalid(p("id"), e.to_string()))?,
        ),
        merchant: read.merchant.clone(),
        items,
        totals: Totals {
            subtotal: found[0].unwrap_or(subtotal),
            shipping: found[1].unwrap_or(zero),
            tax: found[2].unwrap_or(zero),
            discount: found[3].unwrap_or(zero),
            total,
        },
        context: CheckoutContext {
            region: None,
            channel: Channel::Agent,
            buyer_type: None,
        },
        fact_refs: Vec::new(),
        policy_refs: Vec::new(),
        created_at,
        expires_at,
    };
    CartSnapshot::new(content).map_err(|e| FormError::invalid(p(e.field()), e.kind().to_string()))
}

// ---------------------------------------------------------------------------------------------
// Any AP2 document
// ---------------------------------------------------------------------------------------------

/// What an AP2 document became.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Ap2Import {
    /// An open payment mandate: the command creating its mandate.
    Mandate(Box<CreateMandate>),
    /// A closed checkout mandate: its cart.
    Snapshot(Box<CartSnapshot>),
}

#[derive(Debug, Deserialize)]
struct Kind {
    #[serde(default)]
    vct: Option<String>,
    #[serde(default)]
    status: Option<Value>,
}

/// Reads any AP2 v0.2 document by its `vct`: an open payment mandate with
/// [`import_open_payment_mandate`] (`ctx`, `reference`), a closed checkout mandate with
/// [`import_checkout_mandate`] (`read`). The others are refused with the reason:
///
/// | document | refused because |
/// |---|---|
/// | open checkout mandate (`mandate.checkout.open.1`) | its line items fix quantities; an open cart binding limits SKUs and the line count only (it is read as the [`CheckoutReference`] of an open payment mandate) |
/// | closed payment mandate (`mandate.payment.1`) | it names the payment instrument, which a mandate does not limit |
/// | checkout or payment receipt (no `vct`, a `status`) | a receipt records an outcome and grants no authority |
pub fn import_ap2(
    json: &[u8],
    ctx: &Ap2Context,
    read: &ReadCheckout,
    reference: Option<CheckoutReference<'_>>,
) -> Result<Ap2Import, FormError> {
    let kind: Kind = parse(json, "")?;
    match (kind.vct.as_deref(), kind.status) {
        (Some("mandate.payment.open.1"), _) => import_open_payment_mandate(json, ctx, reference)
            .map(|c| Ap2Import::Mandate(Box::new(c))),
        (Some("mandate.checkout.1"), _) => {
            import_checkout_mandate(json, read).map(|s| Ap2Import::Snapshot(Box::new(s)))
        }
        (Some("mandate.checkout.open.1"), _) => {
            OpenCheckoutMandate::from_slice(json)?;
            Err(FormError::unrepresentable(
                Dimension::Cart,
                "constraints.checkout.line_items.quantity",
                "line items with required quantities: an open cart binding limits SKUs and the line count only; use it as the reference of an open payment mandate",
            ))
        }
        (Some("mandate.payment.1"), _) => Err(FormError::unrepresentable(
            None,
            "payment_instrument",
            "a closed payment mandate names the payment instrument, which a mandate does not limit",
        )),
        (Some(other), _) => Err(FormError::invalid(
            "vct",
            format!("{other:?} is not an AP2 v0.2 mandate type"),
        )),
        (None, Some(_)) => Err(FormError::invalid(
            "status",
            "a receipt records an outcome and grants no authority",
        )),
        (None, None) => Err(FormError::Malformed {
            field: "vct".into(),
            reason: "missing".into(),
        }),
    }
}
