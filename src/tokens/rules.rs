//! The token's own rules, pure (no IO, no clock: `now` is a parameter): the check of a
//! presented token before anything is claimed, and the child mandate a token's limits map to.

use chrono::{DateTime, Duration, Utc};

use super::commands::RefusalCode;
use crate::domain::{
    ActionSet, Actor, AmountScope, Budgets, BuyerId, CurrencyScope, Lifecycle, Mandate, MandateId,
    MandateScope, MandateSpec, MandateStatus, MerchantScope, Money, PaymentAction, Principal,
    Validity, WindowLimit, MAX_WINDOW_SECONDS,
};
use crate::ports::{Redeemer, TokenLimits, TokenRecord, TokenStatus};

/// Longest time to live of a token (the longest window a mandate may have).
pub const MAX_TOKEN_TTL_SECONDS: u64 = MAX_WINDOW_SECONDS;

/// Checks a presented token against who presents it, the amount and the time, in a fixed
/// order: provider, buyer, status, validity, currency, per-use cap. The first failing rule
/// is the answer. Uses and the period cap are checked atomically later (the claim, the hold).
/// It is [`check_presenter`] then [`check_new_claim`]: a redemption retried under a key
/// already claimed is answered from its record after the first alone.
pub fn check_presented(
    record: &TokenRecord,
    by: &Principal,
    amount: &Money,
    buyer: Option<&BuyerId>,
    now: DateTime<Utc>,
) -> Result<(), RefusalCode> {
    check_presenter(record, by, buyer)?;
    check_new_claim(record, amount, now)
}

/// Who presents the token: only `Principal::Provider` with the id of the redeemer the token
/// names (a `System` principal is the host's own process, never a token's redeemer), for the
/// token's buyer when a buyer is named. Checked for every redemption, a retried one included.
pub fn check_presenter(
    record: &TokenRecord,
    by: &Principal,
    buyer: Option<&BuyerId>,
) -> Result<(), RefusalCode> {
    if !by.is_provider(&record.redeemer.provider) {
        return Err(RefusalCode::WrongProvider);
    }
    if buyer.is_some_and(|b| *b != record.buyer_id) {
        return Err(RefusalCode::WrongBuyer);
    }
    Ok(())
}

/// What a new claim needs: an active token, within its validity, in its currency, within
/// its per-use and period caps. Not checked for a key claimed before (whose recorded outcome
/// is the answer, even after the token was revoked or expired).
pub fn check_new_claim(
    record: &TokenRecord,
    amount: &Money,
    now: DateTime<Utc>,
) -> Result<(), RefusalCode> {
    match record.status {
        TokenStatus::Active => {}
        TokenStatus::Revoked => return Err(RefusalCode::Revoked),
    }
    if now < record.issued_at || now >= record.expires_at {
        return Err(RefusalCode::Expired);
    }
    if amount.currency() != record.limits.currency {
        return Err(RefusalCode::CurrencyMismatch);
    }
    if amount.amount() <= rust_decimal::Decimal::ZERO {
        return Err(RefusalCode::OverPerUseCap);
    }
    if record
        .limits
        .per_use
        .as_ref()
        .is_some_and(|cap| !amount.fits_within(cap))
    {
        return Err(RefusalCode::OverPerUseCap);
    }
    if record
        .limits
        .per_period
        .as_ref()
        .is_some_and(|cap| !amount.fits_within(&cap.amount))
    {
        return Err(RefusalCode::OverPeriodCap);
    }
    Ok(())
}

/// Validates limits and a time to live; returns the field and why.
pub fn check_limits(limits: &TokenLimits, ttl_seconds: u64) -> Result<(), (&'static str, String)> {
    if limits.per_use.is_none() && limits.per_period.is_none() {
        return Err((
            "limits",
            "a token needs a per-use cap, a per-period cap or both".into(),
        ));
    }
    let positive = |m: &Money| m.amount() > rust_decimal::Decimal::ZERO;
    if let Some(cap) = &limits.per_use {
        if cap.currency() != limits.currency {
            return Err(("limits.per_use", format!("must be in {}", limits.currency)));
        }
        if !positive(cap) {
            return Err(("limits.per_use", "must be more than zero".into()));
        }
    }
    if let Some(cap) = &limits.per_period {
        if cap.amount.currency() != limits.currency {
            return Err((
                "limits.per_period.amount",
                format!("must be in {}", limits.currency),
            ));
        }
        if !positive(&cap.amount) {
            return Err(("limits.per_period.amount", "must be more than zero".into()));
        }
        if cap.period_seconds == 0 || cap.period_seconds > MAX_WINDOW_SECONDS {
            return Err((
                "limits.per_period.period_seconds",
                format!("must be between 1 and {MAX_WINDOW_SECONDS}"),
            ));
        }
    }
    if limits.uses.max_uses() == Some(0) {
        return Err(("limits.uses.max_uses", "must be at least 1".into()));
    }
    if ttl_seconds == 0 || ttl_seconds > MAX_TOKEN_TTL_SECONDS {
        return Err((
            "ttl_seconds",
            format!("must be between 1 and {MAX_TOKEN_TTL_SECONDS}"),
        ));
    }
    Ok(())
}

fn min_money(a: Option<Money>, b: Option<Money>) -> Option<Money> {
    match (a, b) {
        (Some(a), Some(b)) => Some(if a.fits_within(&b) { a } else { b }),
        (a, None) => a,
        (None, b) => b,
    }
}

fn min_count(a: Option<u32>, b: Option<u32>) -> Option<u32> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, None) => a,
        (None, b) => b,
    }
}

/// The child mandate a token's limits map to, under `parent`: the parent's scope narrowed to
/// the redeemer (merchant, seller, MCC), the caps (per use: the per-transaction maximum and
/// the maximum amount; per period: one more rolling window), the uses, authorize and capture
/// only, valid from `now` until the earlier of `now + ttl` and the parent's expiry. Everything
/// else is the parent's, so [`Mandate::derive`] accepts it exactly when the token asks for
/// no more than the parent allows (never wider, I6): a wider token is refused at issue.
pub fn child_spec(
    parent: &Mandate,
    id: MandateId,
    actor: Actor,
    redeemer: &Redeemer,
    limits: &TokenLimits,
    ttl_seconds: u64,
    now: DateTime<Utc>,
) -> MandateSpec {
    let p = parent.scope();
    let merchants = match &p.merchants {
        MerchantScope::Marketplace {
            marketplace_id,
            allowed_sellers,
        } => MerchantScope::Marketplace {
            marketplace_id: marketplace_id.clone(),
            allowed_sellers: match &redeemer.seller_id {
                Some(s) => Some(vec![s.clone()]),
                None => allowed_sellers.clone(),
            },
        },
        MerchantScope::Single { .. } | MerchantScope::Allowlist { .. } => MerchantScope::Single {
            merchant_id: redeemer.merchant_id.clone(),
        },
    };
    let per_use = limits.per_use;
    let period_amount = limits.per_period.as_ref().map(|c| c.amount);
    let token_max = min_money(per_use, period_amount);
    // Not clamped to the parent's: a token asking for more is refused by the delegation check.
    let max_amount = token_max.unwrap_or(p.amount.max_amount);
    let mut windows = p.budgets.windows.clone();
    if let Some(cap) = &limits.per_period {
        windows.push(WindowLimit {
            window_seconds: cap.period_seconds,
            max_amount: Some(cap.amount),
            max_count: None,
        });
    }
    let ttl = i64::try_from(ttl_seconds).unwrap_or(i64::MAX);
    let expires_at = now
        .checked_add_signed(Duration::seconds(ttl))
        .unwrap_or(p.validity.expires_at)
        .min(p.validity.expires_at);
    let not_before = now.max(p.validity.not_before);
    MandateSpec {
        id,
        buyer_id: parent.buyer_id().clone(),
        actor,
        parent_id: Some(parent.id().clone()),
        scope: MandateScope {
            merchants,
            mccs: Some(vec![redeemer.mcc]),
            cart: p.cart.clone(),
            amount: AmountScope {
                max_amount,
                includes_shipping: p.amount.includes_shipping,
                includes_tax: p.amount.includes_tax,
                allow_lower_amount: p.amount.allow_lower_amount,
                allow_partial_capture: false,
                max_payment_attempts: p.amount.max_payment_attempts,
            },
            currency: CurrencyScope {
                currency: p.currency.currency,
                conversion_allowed: false,
            },
            budgets: Budgets {
                per_transaction: min_money(p.budgets.per_transaction, per_use),
                windows,
                lifetime: p.budgets.lifetime,
            },
            actions: [PaymentAction::Authorize, PaymentAction::Capture]
                .into_iter()
                .collect::<ActionSet>(),
            confirmation: p.confirmation.clone(),
            max_uses: min_count(p.max_uses, limits.uses.max_uses()),
            validity: Validity {
                not_before,
                expires_at,
            },
        },
        lifecycle: Lifecycle::new(MandateStatus::Active, now),
        evidence_refs: Vec::new(),
    }
}
