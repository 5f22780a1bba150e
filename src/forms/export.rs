//! Exports: the effective authority of a chain as a Stripe shared payment token's limits, an
//! ACP delegate-payment allowance and a Visa purchase instruction.
//!
//! Each export checks, in this order, that the target can carry every restriction of the
//! authority and refuses the first it cannot with [`FormError::Unrepresentable`]: a marketplace
//! scope, a cart binding, an exact amount (no lower amount allowed), an attempts limit, a
//! confirmation condition other than "above an amount" (that one is folded into the cap: a form
//! capped at the threshold never needs the confirmation), actions without both authorize and
//! capture (a form pays: it authorizes and captures), several merchants when the form names one
//! and no choice was made, then the target's own gaps (MCCs, uses).

use chrono::{DateTime, SecondsFormat, TimeZone, Utc};
use serde::{Deserialize, Serialize};

use super::authority::EffectiveAuthority;
use super::error::FormError;
use crate::domain::{
    ActionSet, AmountScope, Budgets, CartBinding, ConfirmationCondition, ConfirmationRule,
    Currency, CurrencyScope, Dimension, MandateScope, Mcc, MerchantId, MerchantScope, Money,
    PaymentAction, Validity, WindowLimit, MAX_WINDOW_SECONDS,
};

/// The actions a form grants: a payment through it is authorized and captured.
fn paying() -> ActionSet {
    [PaymentAction::Authorize, PaymentAction::Capture]
        .into_iter()
        .collect()
}

/// Refuses the restrictions no form of this module can carry.
fn common(a: &EffectiveAuthority) -> Result<(), FormError> {
    if let Some(m) = &a.marketplace {
        return Err(FormError::unrepresentable(
            Dimension::Merchants,
            "scope.merchants.marketplace_id",
            format!("mandate {m} is scoped to a marketplace (and its sellers); the form names one merchant"),
        ));
    }
    if let Some((m, field)) = &a.cart {
        return Err(FormError::unrepresentable(
            Dimension::Cart,
            field.clone(),
            format!("mandate {m} binds the cart; the form limits money, not cart content"),
        ));
    }
    if let Some(m) = &a.exact_amount {
        return Err(FormError::unrepresentable(
            Dimension::LowerAmount,
            "scope.amount.allow_lower_amount",
            format!("mandate {m} allows exactly its maximum; the form allows any amount up to a maximum"),
        ));
    }
    if let Some((m, left)) = &a.attempts {
        return Err(FormError::unrepresentable(
            Dimension::Attempts,
            "scope.amount.max_payment_attempts",
            format!("mandate {m} allows {left} more payment attempt(s); the form does not count attempts"),
        ));
    }
    if let Some((m, what)) = &a.confirmation_other {
        return Err(FormError::unrepresentable(
            Dimension::Confirmation,
            "scope.confirmation.conditions",
            format!("mandate {m} asks the buyer ({what}); a payment under the form asks nobody"),
        ));
    }
    if !paying().is_subset_of(a.actions) {
        return Err(FormError::unrepresentable(
            Dimension::Actions,
            "scope.actions",
            "the form pays (authorizes and captures); the chain does not allow both",
        ));
    }
    Ok(())
}

/// The one merchant the form names: the only one, or `chosen` if it is allowed.
fn one_merchant(
    a: &EffectiveAuthority,
    chosen: Option<&MerchantId>,
) -> Result<MerchantId, FormError> {
    match (chosen, a.merchants.as_slice()) {
        (Some(c), list) => {
            if list.contains(c) {
                Ok(c.clone())
            } else {
                Err(FormError::invalid(
                    "merchant_id",
                    format!("{c} is not allowed by every mandate of the chain"),
                ))
            }
        }
        (None, [only]) => Ok(only.clone()),
        (None, list) => Err(FormError::unrepresentable(
            Dimension::Merchants,
            "scope.merchants.merchant_ids",
            format!(
                "{} merchants are allowed; the form names one (choose one of them with `with_merchant`)",
                list.len()
            ),
        )),
    }
}

fn no_mccs(a: &EffectiveAuthority, form: &str) -> Result<(), FormError> {
    match &a.mccs {
        None => Ok(()),
        Some(_) => Err(FormError::unrepresentable(
            Dimension::Mccs,
            "scope.mccs",
            format!("the chain limits merchant category codes; {form} has no MCC"),
        )),
    }
}

/// The expiry written: the authority's, shortened to `shorter` if given, whole seconds down.
fn expiry(
    a: &EffectiveAuthority,
    shorter: Option<DateTime<Utc>>,
) -> Result<DateTime<Utc>, FormError> {
    let t = match shorter {
        Some(s) if s < a.expires_at => s,
        _ => a.expires_at,
    };
    let secs = t.timestamp();
    Utc.timestamp_opt(secs, 0)
        .single()
        .ok_or_else(|| FormError::invalid("expires_at", "outside the representable range"))
}

/// A form's limits in mandate terms (what [`StripeSpt::scope`] and its siblings
/// return): `total` across `uses` payments of at most `per_payment` each.
struct Meaning {
    merchant: MerchantId,
    mcc: Option<Mcc>,
    per_payment: Money,
    total: Money,
    uses: Option<u32>,
    expires_at: DateTime<Utc>,
}

impl Meaning {
    fn scope(self, now: DateTime<Utc>) -> Result<MandateScope, FormError> {
        if self.expires_at <= now {
            return Err(FormError::invalid(
                "expires_at",
                "the form has expired (or expires at `now`)",
            ));
        }
        let currency = self.per_payment.currency();
        Ok(MandateScope {
            merchants: MerchantScope::Single {
                merchant_id: self.merchant,
            },
            mccs: self.mcc.map(|m| vec![m]),
            cart: CartBinding::Open {
                allowed_skus: None,
                max_line_items: None,
            },
            amount: AmountScope {
                max_amount: self.per_payment,
                includes_shipping: true,
                includes_tax: true,
                allow_lower_amount: true,
                allow_partial_capture: false,
                max_payment_attempts: None,
            },
            currency: CurrencyScope {
                currency,
                conversion_allowed: false,
            },
            budgets: Budgets {
                per_transaction: Some(self.per_payment),
                // Spend over the form's life bounds spend inside any window.
                windows: vec![WindowLimit {
                    window_seconds: MAX_WINDOW_SECONDS,
                    max_amount: Some(self.total),
                    max_count: self.uses,
                }],
                lifetime: Some(self.total),
            },
            actions: paying(),
            // Vacuous for a form capped at `per_payment`: no payment under it is above.
            confirmation: ConfirmationRule {
                conditions: vec![ConfirmationCondition::AboveAmount {
                    amount: self.per_payment,
                }],
                baseline: None,
            },
            max_uses: self.uses,
            validity: Validity {
                not_before: now,
                expires_at: self.expires_at,
            },
        })
    }
}

fn money(field: &str, minor: i64, currency: Currency) -> Result<Money, FormError> {
    if minor <= 0 {
        return Err(FormError::invalid(field, "must be more than zero"));
    }
    Money::from_minor(minor, currency).map_err(|e| FormError::invalid(field, e.to_string()))
}

fn lower_currency(field: &str, code: &str) -> Result<Currency, FormError> {
    if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_lowercase()) {
        return Err(FormError::invalid(
            field,
            "expected a lower-case ISO 4217 code",
        ));
    }
    Currency::from_code(&code.to_ascii_uppercase())
        .map_err(|e| FormError::invalid(field, e.to_string()))
}

fn merchant(field: &str, id: &str) -> Result<MerchantId, FormError> {
    MerchantId::new(id).map_err(|e| FormError::invalid(field, e.to_string()))
}

// ---------------------------------------------------------------------------------------------
// Stripe shared payment token
// ---------------------------------------------------------------------------------------------

/// Choices for a Stripe shared payment token export.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct StripeTarget {
    /// The merchant to name when the chain allows several.
    pub merchant_id: Option<MerchantId>,
    /// An expiry earlier than the authority's.
    pub expires_at: Option<DateTime<Utc>>,
    /// The client's reference (`seller_details[external_id]`).
    pub external_id: Option<String>,
}

impl StripeTarget {
    /// No choices: the only merchant, the authority's expiry, no reference.
    pub fn new() -> StripeTarget {
        StripeTarget::default()
    }

    /// Names `merchant` (one of the chain's merchants).
    pub fn with_merchant(mut self, merchant: MerchantId) -> StripeTarget {
        self.merchant_id = Some(merchant);
        self
    }

    /// Expires the token at `at` if that is earlier than the authority's expiry.
    pub fn with_expires_at(mut self, at: DateTime<Utc>) -> StripeTarget {
        self.expires_at = Some(at);
        self
    }

    /// Sets the client's reference.
    pub fn with_external_id(mut self, id: impl Into<String>) -> StripeTarget {
        self.external_id = Some(id.into());
        self
    }
}

/// `usage_limits` of a shared payment token: at most `max_amount` minor units in total, in
/// `currency`, until `expires_at` (unix seconds).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StripeUsageLimits {
    /// ISO 4217, lower case.
    pub currency: String,
    /// Minor units.
    pub max_amount: i64,
    /// Unix seconds.
    pub expires_at: i64,
}

/// `seller_details` of a shared payment token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SellerDetails {
    /// The seller's network profile (the mandate's merchant id).
    pub network_id: String,
    /// The client's reference, when one is given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
}

/// The limits of a Stripe shared payment token, as sent when it is issued.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StripeSpt {
    /// How much, in what, until when.
    pub usage_limits: StripeUsageLimits,
    /// Which seller.
    pub seller_details: SellerDetails,
}

/// Writes `authority` as a shared payment token's limits. The token caps the *total* charged;
/// it neither counts payments nor names a category, so a chain with a uses or window count
/// limit, or with MCCs, is refused (see the module docs for the rest).
///
/// ```
/// use agent_mandate::domain::{examples, CartBinding, Mandate, Usage};
/// use agent_mandate::forms::{to_stripe_spt, EffectiveAuthority, StripeTarget};
/// let mut spec = examples::travel_backpack_mandate().spec().clone();
/// spec.scope.cart = CartBinding::Open { allowed_skus: None, max_line_items: None };
/// spec.scope.mccs = None;
/// spec.scope.max_uses = None;
/// spec.scope.confirmation.conditions.clear();
/// spec.scope.amount.max_payment_attempts = None;
/// spec.scope.budgets = Default::default();
/// let m = Mandate::new(spec).unwrap();
/// let a = EffectiveAuthority::of(std::slice::from_ref(&m), &[Usage::none_for(&m)], examples::now()).unwrap();
/// let spt = to_stripe_spt(&a, &StripeTarget::new()).unwrap();
/// assert_eq!(spt.usage_limits.currency, "eur");
/// ```
pub fn to_stripe_spt(a: &EffectiveAuthority, t: &StripeTarget) -> Result<StripeSpt, FormError> {
    common(a)?;
    let merchant = one_merchant(a, t.merchant_id.as_ref())?;
    no_mccs(a, "a shared payment token")?;
    if a.uses.is_some() {
        return Err(FormError::unrepresentable(
            Dimension::Uses,
            "scope.max_uses",
            "the chain limits the number of payments; a shared payment token caps only the total",
        ));
    }
    if let Some(e) = &t.external_id {
        crate::domain::ProviderRef::new(e)
            .map_err(|err| FormError::invalid("external_id", err.to_string()))?;
    }
    Ok(StripeSpt {
        usage_limits: StripeUsageLimits {
            currency: a.currency.code().to_ascii_lowercase(),
            max_amount: a.max_amount.minor_units(),
            expires_at: expiry(a, t.expires_at)?.timestamp(),
        },
        seller_details: SellerDetails {
            network_id: merchant.as_str().to_owned(),
            external_id: t.external_id.clone(),
        },
    })
}

impl StripeSpt {
    /// What the token allows, in mandate terms, if issued at `now`: one merchant, any number
    /// of payments totalling at most `max_amount`, until `expires_at`.
    pub fn scope(&self, now: DateTime<Utc>) -> Result<MandateScope, FormError> {
        let currency = lower_currency("usage_limits.currency", &self.usage_limits.currency)?;
        let cap = money(
            "usage_limits.max_amount",
            self.usage_limits.max_amount,
            currency,
        )?;
        let expires_at = Utc
            .timestamp_opt(self.usage_limits.expires_at, 0)
            .single()
            .ok_or_else(|| FormError::invalid("usage_limits.expires_at", "out of range"))?;
        Meaning {
            merchant: merchant("seller_details.network_id", &self.seller_details.network_id)?,
            mcc: None,
            per_payment: cap,
            total: cap,
            uses: None,
            expires_at,
        }
        .scope(now)
    }
}

// ---------------------------------------------------------------------------------------------
// ACP allowance
// ---------------------------------------------------------------------------------------------

/// Choices for an ACP allowance export: the checkout session is required.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct AcpTarget {
    /// The checkout session the payment is for.
    pub checkout_session_id: String,
    /// The merchant to name when the chain allows several.
    pub merchant_id: Option<MerchantId>,
    /// An expiry earlier than the authority's.
    pub expires_at: Option<DateTime<Utc>>,
}

impl AcpTarget {
    /// An allowance for `checkout_session_id`.
    pub fn new(checkout_session_id: impl Into<String>) -> AcpTarget {
        AcpTarget {
            checkout_session_id: checkout_session_id.into(),
            merchant_id: None,
            expires_at: None,
        }
    }

    /// Names `merchant` (one of the chain's merchants).
    pub fn with_merchant(mut self, merchant: MerchantId) -> AcpTarget {
        self.merchant_id = Some(merchant);
        self
    }

    /// Expires the allowance at `at` if that is earlier than the authority's expiry.
    pub fn with_expires_at(mut self, at: DateTime<Utc>) -> AcpTarget {
        self.expires_at = Some(at);
        self
    }
}

/// The `allowance` of an ACP delegate-payment request (spec 2026-04-17): one payment
/// (`one_time`) of at most `max_amount` minor units for one checkout session at one merchant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AcpAllowance {
    /// Always `one_time`.
    pub reason: String,
    /// Minor units.
    pub max_amount: i64,
    /// ISO 4217, lower case.
    pub currency: String,
    /// The checkout session.
    pub checkout_session_id: String,
    /// The merchant.
    pub merchant_id: String,
    /// RFC 3339, UTC, whole seconds.
    pub expires_at: String,
}

/// Writes `authority` as an ACP allowance: one payment (so any uses limit is kept), no MCC
/// (a chain with MCCs is refused).
///
/// ```
/// use agent_mandate::domain::{examples, CartBinding, Mandate, Usage};
/// use agent_mandate::forms::{to_acp_allowance, AcpTarget, EffectiveAuthority};
/// let mut spec = examples::travel_backpack_mandate().spec().clone();
/// spec.scope.cart = CartBinding::Open { allowed_skus: None, max_line_items: None };
/// spec.scope.mccs = None;
/// spec.scope.confirmation.conditions.clear();
/// spec.scope.amount.max_payment_attempts = None;
/// let m = Mandate::new(spec).unwrap();
/// let a = EffectiveAuthority::of(std::slice::from_ref(&m), &[Usage::none_for(&m)], examples::now()).unwrap();
/// let allowance = to_acp_allowance(&a, &AcpTarget::new("cs_123")).unwrap();
/// assert_eq!(allowance.reason, "one_time");
/// ```
pub fn to_acp_allowance(a: &EffectiveAuthority, t: &AcpTarget) -> Result<AcpAllowance, FormError> {
    common(a)?;
    let merchant = one_merchant(a, t.merchant_id.as_ref())?;
    no_mccs(a, "an ACP allowance")?;
    crate::domain::CheckoutId::new(&t.checkout_session_id)
        .map_err(|e| FormError::invalid("checkout_session_id", e.to_string()))?;
    Ok(AcpAllowance {
        reason: "one_time".into(),
        max_amount: a.max_amount.minor_units(),
        currency: a.currency.code().to_ascii_lowercase(),
        checkout_session_id: t.checkout_session_id.clone(),
        merchant_id: merchant.as_str().to_owned(),
        expires_at: expiry(a, t.expires_at)?.to_rfc3339_opts(SecondsFormat::Secs, true),
    })
}

impl AcpAllowance {
    /// What the allowance allows, in mandate terms, if issued at `now`: one payment of at most
    /// `max_amount` at `merchant_id` until `expires_at` (the checkout session narrows it
    /// further; a mandate has no term for a session, so it is left out, which over-states).
    pub fn scope(&self, now: DateTime<Utc>) -> Result<MandateScope, FormError> {
        if self.reason != "one_time" {
            return Err(FormError::invalid("reason", "only one_time is defined"));
        }
        let currency = lower_currency("currency", &self.currency)?;
        let cap = money("max_amount", self.max_amount, currency)?;
        let expires_at = crate::domain::parse_time(&self.expires_at)
            .map_err(|e| FormError::invalid("expires_at", e))?;
        Meaning {
            merchant: merchant("merchant_id", &self.merchant_id)?,
            mcc: None,
            per_payment: cap,
            total: cap,
            uses: Some(1),
            expires_at,
        }
        .scope(now)
    }
}

// ---------------------------------------------------------------------------------------------
// Visa purchase instruction
// ---------------------------------------------------------------------------------------------

/// Choices for a Visa purchase instruction export.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct VisaTarget {
    /// The merchant to name when the chain allows several.
    pub merchant_id: Option<MerchantId>,
    /// The MCC to name when the chain allows several.
    pub mcc: Option<Mcc>,
    /// Uses wanted (default 1); at most the chain's uses left.
    pub quantity: Option<u32>,
    /// An expiry earlier than the authority's.
    pub expires_at: Option<DateTime<Utc>>,
}

impl VisaTarget {
    /// No choices: one use, the only merchant and MCC, the authority's expiry.
    pub fn new() -> VisaTarget {
        VisaTarget::default()
    }

    /// Names `merchant` (one of the chain's merchants).
    pub fn with_merchant(mut self, merchant: MerchantId) -> VisaTarget {
        self.merchant_id = Some(merchant);
        self
    }

    /// Names `mcc` (one of the chain's MCCs, or any when the chain does not limit them).
    pub fn with_mcc(mut self, mcc: Mcc) -> VisaTarget {
        self.mcc = Some(mcc);
        self
    }

    /// Asks for `quantity` uses.
    pub fn with_quantity(mut self, quantity: u32) -> VisaTarget {
        self.quantity = Some(quantity);
        self
    }

    /// Expires the instruction at `at` if that is earlier than the authority's expiry.
    pub fn with_expires_at(mut self, at: DateTime<Utc>) -> VisaTarget {
        self.expires_at = Some(at);
        self
    }
}

/// `declineThreshold`: the most one payment may be (major units as a decimal string).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct VisaDeclineThreshold {
    /// Decimal text at the currency's scale (`"129.00"`).
    pub amount: String,
    /// ISO 4217, upper case.
    pub currency_code: String,
}

/// The merchant the credentials request (`transactionData`) must name: the instruction's own
/// fields cannot name one, so the binding is carried by the request that turns the
/// instruction into a cryptogram.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct VisaTransactionData {
    /// The merchant.
    pub merchant_id: String,
}

/// The mandate fields of a Visa Intelligent Commerce purchase instruction, with the merchant
/// its credentials request must carry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct VisaPurchaseInstruction {
    /// The most one payment may be.
    pub decline_threshold: VisaDeclineThreshold,
    /// RFC 3339, UTC, whole seconds.
    pub effective_until_time: String,
    /// How many payments.
    pub quantity: u32,
    /// The merchant category, when the chain limits it (or one was chosen).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merchant_category_code: Option<String>,
    /// The merchant the credentials request must name.
    pub transaction_data: VisaTransactionData,
}

/// Writes `authority` as a Visa purchase instruction: `quantity` payments of at most the
/// decline threshold each; when the chain has a lifetime or window amount left, the threshold
/// is lowered so that `quantity` payments fit it (the narrower form).
pub fn to_visa_instruction(
    a: &EffectiveAuthority,
    t: &VisaTarget,
) -> Result<VisaPurchaseInstruction, FormError> {
    common(a)?;
    let merchant = one_merchant(a, t.merchant_id.as_ref())?;
    let mcc = match (&a.mccs, t.mcc) {
        (None, chosen) => chosen,
        (Some(list), Some(c)) => {
            if !list.contains(&c) {
                return Err(FormError::invalid(
                    "merchant_category_code",
                    format!("{c} is not allowed by every mandate of the chain"),
                ));
            }
            Some(c)
        }
        (Some(list), None) => match list.as_slice() {
            [only] => Some(*only),
            _ => {
                return Err(FormError::unrepresentable(
                    Dimension::Mccs,
                    "scope.mccs",
                    format!(
                        "{} MCCs are allowed; the instruction names one (choose with `with_mcc`)",
                        list.len()
                    ),
                ))
            }
        },
    };
    let quantity = t.quantity.unwrap_or(1);
    if quantity == 0 {
        return Err(FormError::invalid("quantity", "must be at least 1"));
    }
    if let Some(left) = a.uses
        && quantity > left
    {
        return Err(FormError::invalid(
            "quantity",
            format!("{quantity} payments asked, the chain allows {left} more"),
        ));
    }
    let mut per_payment = a.max_amount.minor_units();
    if let Some(total) = &a.total_headroom {
        per_payment = per_payment.min(total.minor_units() / i64::from(quantity));
    }
    let threshold = money("decline_threshold.amount", per_payment, a.currency).map_err(|_| {
        FormError::unrepresentable(
            Dimension::Lifetime,
            "scope.budgets",
            format!("{quantity} payments do not fit the amount left"),
        )
    })?;
    Ok(VisaPurchaseInstruction {
        decline_threshold: VisaDeclineThreshold {
            amount: threshold.amount_text(),
            currency_code: a.currency.code().to_owned(),
        },
        effective_until_time: expiry(a, t.expires_at)?.to_rfc3339_opts(SecondsFormat::Secs, true),
        quantity,
        merchant_category_code: mcc.map(|m| m.as_str().to_owned()),
        transaction_data: VisaTransactionData {
            merchant_id: merchant.as_str().to_owned(),
        },
    })
}

impl VisaPurchaseInstruction {
    /// What the instruction allows, in mandate terms, if created at `now`: `quantity`
    /// payments of at most the threshold each at the merchant (and MCC) until
    /// `effectiveUntilTime`.
    pub fn scope(&self, now: DateTime<Utc>) -> Result<MandateScope, FormError> {
        let currency = Currency::from_code(&self.decline_threshold.currency_code)
            .map_err(|e| FormError::invalid("declineThreshold.currencyCode", e.to_string()))?;
        let per_payment = Money::parse(&self.decline_threshold.amount, currency)
            .map_err(|e| FormError::invalid("declineThreshold.amount", e.to_string()))?;
        if per_payment.is_zero() {
            return Err(FormError::invalid(
                "declineThreshold.amount",
                "must be more than zero",
            ));
        }
        if self.quantity == 0 {
            return Err(FormError::invalid("quantity", "must be at least 1"));
        }
        let total = per_payment
            .checked_mul(self.quantity)
            .map_err(|e| FormError::invalid("quantity", e.to_string()))?;
        let mcc = self
            .merchant_category_code
            .as_deref()
            .map(Mcc::new)
            .transpose()
            .map_err(|e| FormError::invalid("merchantCategoryCode", e.to_string()))?;
        let expires_at = crate::domain::parse_time(&self.effective_until_time)
            .map_err(|e| FormError::invalid("effectiveUntilTime", e))?;
        Meaning {
            merchant: merchant(
                "transactionData.merchantId",
                &self.transaction_data.merchant_id,
            )?,
            mcc,
            per_payment,
            total,
            uses: Some(self.quantity),
            expires_at,
        }
        .scope(now)
    }
}
