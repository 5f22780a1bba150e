//! agent-mandate: a [`Case`] as an [`EvaluationDocument`] in the library's own types.
//!
//! Every level becomes a [`Mandate`] (allowlisted merchants and MCCs, per-transaction maximum,
//! and either the leaf's 24 h window or an ancestor's lifetime budget); the request pays the
//! total of a one-line [`CartSnapshot`] whose checkout is valid, with a usable credential and a
//! confirmation rule that never asks. The chain, snapshot and usage are built once, outside any
//! timed loop; a decision is `evaluate(&document.input())`.

use agent_mandate::domain::{
    evaluate, Actor, ActorId, ActorKind, AmountScope, Budgets, BuyerId, CartBinding, CartContent,
    CartSnapshot, Channel, CheckoutContext, CheckoutId, CheckoutState, ConfirmationRule,
    CredentialStatus, Currency, CurrencyScope, EvaluationDocument, Lifecycle, LineItem, Mandate,
    MandateId, MandateScope, MandateSpec, MandateStatus, Mcc, Merchant, MerchantId, MerchantScope,
    Money, Outcome, PaymentAction, PaymentRequest, Sku, Suspensions, Text, Totals, Usage, Validity,
    WindowLimit, WindowUsage,
};
use chrono::{DateTime, Utc};

use crate::case::{ActorRef, Case, Kind, Level, Status, WINDOW_SECONDS};
use crate::SetupError;

/// Whether agent-mandate allows the request.
pub fn allows(document: &EvaluationDocument) -> bool {
    evaluate(&document.input()).outcome == Outcome::Allowed
}

/// The evaluation document of `case`.
pub fn document(case: &Case) -> Result<EvaluationDocument, SetupError> {
    let now = time(case.now)?;
    let buyer = BuyerId::new(&case.buyer)?;
    let mut chain: Vec<Mandate> = Vec::with_capacity(case.chain.len());
    let mut usage: Vec<Usage> = Vec::with_capacity(case.chain.len());
    for level in &case.chain {
        let parent_id = chain.last().map(|p| p.id().clone());
        let mandate = mandate(level, &buyer, parent_id, now)?;
        usage.push(usage_of(level, &mandate)?);
        chain.push(mandate);
    }

    let currency = Currency::from_code(case.currency)?;
    let amount = Money::from_minor(case.amount, currency)?;
    let zero = Money::zero(currency);
    let snapshot = CartSnapshot::new(CartContent {
        id: None,
        cart_id: None,
        merchant: Merchant {
            merchant_id: MerchantId::new(&case.merchant)?,
            marketplace_id: None,
            seller_id: None,
            mcc: Mcc::new(&case.mcc)?,
        },
        items: vec![LineItem {
            sku: Sku::new(format!("SKU-{}", case.index))?,
            description: Text::new("Generated item")?,
            quantity: 1,
            unit_price: amount,
        }],
        totals: Totals {
            subtotal: amount,
            shipping: zero,
            tax: zero,
            discount: zero,
            total: amount,
        },
        context: CheckoutContext {
            region: None,
            channel: Channel::Agent,
            buyer_type: None,
        },
        fact_refs: Vec::new(),
        policy_refs: Vec::new(),
        created_at: time(case.now - 300)?,
        expires_at: time(case.now + 3_600)?,
    })?;
    let leaf = case.leaf();
    let request = PaymentRequest {
        actor: actor(&case.actor)?,
        buyer_id: buyer,
        mandate_id: MandateId::new(&leaf.id)?,
        action: PaymentAction::Authorize,
        merchant_id: snapshot.merchant().merchant_id.clone(),
        snapshot_id: snapshot.id(),
        amount,
        urgency: None,
    };
    Ok(EvaluationDocument {
        request,
        checkout: CheckoutState::Valid {
            checkout_id: CheckoutId::new(format!("checkout_{}", case.index))?,
            snapshot_id: snapshot.id(),
        },
        chain,
        snapshot,
        usage,
        confirmations: Vec::new(),
        suspensions: Suspensions::default(),
        credential: Some(CredentialStatus::Usable),
        now,
        resource_payments: None,
        controls: None,
    })
}

fn time(secs: i64) -> Result<DateTime<Utc>, SetupError> {
    DateTime::from_timestamp(secs, 0).ok_or_else(|| SetupError::new(format!("time {secs}")))
}

fn actor(a: &ActorRef) -> Result<Actor, SetupError> {
    Ok(Actor {
        id: ActorId::new(&a.id)?,
        kind: match a.kind {
            Kind::Human => ActorKind::Human,
            Kind::Agent => ActorKind::Agent,
            Kind::System => ActorKind::System,
        },
    })
}

fn mandate(
    level: &Level,
    buyer: &BuyerId,
    parent_id: Option<MandateId>,
    now: DateTime<Utc>,
) -> Result<Mandate, SetupError> {
    let currency = Currency::from_code(level.currency)?;
    let money = |minor: i64| Money::from_minor(minor, currency);
    let per_tx = money(level.per_tx)?;
    let created = time(level.valid_from.min(level.expires_at - 1) - 86_400)?;
    let mut lifecycle = Lifecycle::new(MandateStatus::Active, created);
    match level.status {
        Status::Active => {}
        Status::Revoked => {
            lifecycle.status = MandateStatus::Revoked;
            lifecycle.revoked_at = Some(now);
            lifecycle.revoked_reason = Some(Text::new("revoked by the buyer")?);
        }
        Status::Used => {
            lifecycle.status = MandateStatus::Used;
            lifecycle.used_at = Some(now);
        }
        Status::PendingConfirmation => {
            lifecycle = Lifecycle::new(MandateStatus::PendingConfirmation, created);
        }
    }
    let windows = match level.window {
        Some(w) => vec![WindowLimit {
            window_seconds: WINDOW_SECONDS as u64,
            max_amount: Some(money(w.cap)?),
            max_count: None,
        }],
        None => Vec::new(),
    };
    let lifetime = level.lifetime.map(|b| money(b.cap)).transpose()?;
    Ok(Mandate::new(MandateSpec {
        id: MandateId::new(&level.id)?,
        buyer_id: buyer.clone(),
        actor: actor(&level.actor)?,
        parent_id,
        scope: MandateScope {
            merchants: MerchantScope::Allowlist {
                merchant_ids: level
                    .merchants
                    .iter()
                    .map(MerchantId::new)
                    .collect::<Result<_, _>>()?,
            },
            mccs: Some(
                level
                    .mccs
                    .iter()
                    .map(|m| Mcc::new(m))
                    .collect::<Result<_, _>>()?,
            ),
            cart: CartBinding::Open {
                allowed_skus: None,
                max_line_items: None,
            },
            amount: AmountScope {
                max_amount: per_tx,
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
                per_transaction: Some(per_tx),
                windows,
                lifetime,
            },
            actions: PaymentAction::ALL.into_iter().collect(),
            confirmation: ConfirmationRule::never(),
            max_uses: None,
            validity: Validity {
                not_before: time(level.valid_from)?,
                expires_at: time(level.expires_at)?,
            },
        },
        lifecycle,
        evidence_refs: Vec::new(),
    })?)
}

/// The leaf's window usage, or an ancestor's spend split into spent and held.
fn usage_of(level: &Level, mandate: &Mandate) -> Result<Usage, SetupError> {
    let currency = mandate.currency();
    let mut usage = Usage::zero(mandate.id().clone(), currency);
    if let Some(w) = level.window {
        usage.spent = Money::from_minor(w.used, currency)?;
        usage.windows = vec![WindowUsage {
            window_seconds: WINDOW_SECONDS as u64,
            amount: Money::from_minor(w.used, currency)?,
            count: 0,
        }];
    }
    if let Some(b) = level.lifetime {
        let held = b.used / 3;
        usage.spent = Money::from_minor(b.used - held, currency)?;
        usage.held = Money::from_minor(held, currency)?;
    }
    Ok(usage)
}
