//! Attenuated children: mandate specs narrower than or equal to their parent in every
//! dimension, so `parent.derive(child)` accepts them.

use chrono::Duration;
use proptest::prelude::*;
use proptest::strategy::BoxedStrategy;

use crate::domain::{
    CartBinding, CartSnapshot, ConfirmationCondition, ConfirmationRule, Currency, CurrencyScope,
    Mandate, MandateId, MandateScope, MandateSpec, Mcc, MerchantScope, PaymentAction, SellerId,
    Sku, Validity,
};

use super::child_limits::{child_amount, child_budgets, child_count};
use super::fit::{chance, fits};
use super::mandate::{actor, lifecycle_from, lifecycle_noise, status_for};
use super::pick::pick;
use super::scope::{condition, urgency};
use super::target::{with_own, Target};
use super::values::{evidence_refs, id, mcc, snapshot_id, unique};
use super::{cash, reference_time};

/// An attenuated child of `parent`: narrower or equal in every dimension, so
/// `parent.derive(child)` accepts it whenever `parent` is active (I6). Its id extends the
/// parent's (`<parent>.<suffix>`), its buyer is the parent's, its actor is random.
pub fn child_of(parent: &Mandate) -> BoxedStrategy<MandateSpec> {
    child_spec(parent, None, 50)
}

/// Like [`child_of`], but each narrowing keeps, with probability `fit` percent (0 to 100; more
/// counts as 100), what a request of `action` on `snapshot` needs when the parent grants it.
pub fn child_for(
    parent: &Mandate,
    snapshot: &CartSnapshot,
    action: PaymentAction,
    fit: u8,
) -> BoxedStrategy<MandateSpec> {
    child_spec(parent, Some(Target::of(snapshot, action)), fit)
}

pub(super) fn child_merchants(
    p: &MerchantScope,
    t: Option<&Target>,
    fit: u8,
) -> BoxedStrategy<MerchantScope> {
    match p.clone() {
        MerchantScope::Single { merchant_id } => prop_oneof![
            3 => Just(MerchantScope::Single { merchant_id: merchant_id.clone() }),
            1 => Just(MerchantScope::Allowlist { merchant_ids: vec![merchant_id] }),
        ]
        .boxed(),
        MerchantScope::Allowlist { merchant_ids } => {
            let keep = t
                .map(|t| t.merchant.merchant_id.clone())
                .filter(|m| merchant_ids.contains(m));
            let len = merchant_ids.len();
            (
                fits(fit),
                any::<bool>(),
                prop::sample::subsequence(merchant_ids.clone(), 1..=len.max(1)),
                prop::sample::select(merchant_ids),
            )
                .prop_map(move |(ok, single, sub, one)| {
                    let keep = keep.as_ref().filter(|_| ok);
                    if single {
                        MerchantScope::Single {
                            merchant_id: keep.cloned().unwrap_or(one),
                        }
                    } else {
                        MerchantScope::Allowlist {
                            merchant_ids: with_own(sub, keep),
                        }
                    }
                })
                .boxed()
        }
        MerchantScope::Marketplace {
            marketplace_id,
            allowed_sellers,
        } => {
            let seller = t.and_then(|t| t.merchant.seller_id.clone());
            let no_seller = t.is_some() && seller.is_none();
            let sellers: BoxedStrategy<Option<Vec<SellerId>>> = match allowed_sellers {
                None => (
                    fits(fit),
                    prop::option::of(unique(id::<SellerId>("seller"), 0..=2)),
                )
                    .prop_map(move |(ok, s)| {
                        if ok && no_seller {
                            None
                        } else {
                            s.map(|s| with_own(s, seller.as_ref().filter(|_| ok)))
                        }
                    })
                    .boxed(),
                Some(list) => {
                    let keep = seller.filter(|s| list.contains(s));
                    let len = list.len();
                    (fits(fit), prop::sample::subsequence(list, 0..=len))
                        .prop_map(move |(ok, sub)| {
                            Some(with_own(sub, keep.as_ref().filter(|_| ok)))
                        })
                        .boxed()
                }
            };
            sellers
                .prop_map(move |allowed_sellers| MerchantScope::Marketplace {
                    marketplace_id: marketplace_id.clone(),
                    allowed_sellers,
                })
                .boxed()
        }
    }
}

pub(super) fn child_mccs(
    p: Option<Vec<Mcc>>,
    t: Option<&Target>,
    fit: u8,
) -> BoxedStrategy<Option<Vec<Mcc>>> {
    let own = t.map(|t| t.merchant.mcc);
    match p {
        None => (fits(fit), prop::option::of(unique(mcc(), 0..=2)))
            .prop_map(move |(ok, s)| s.map(|s| with_own(s, own.as_ref().filter(|_| ok))))
            .boxed(),
        Some(list) => {
            let keep = own.filter(|m| list.contains(m));
            let len = list.len();
            (fits(fit), prop::sample::subsequence(list, 0..=len))
                .prop_map(move |(ok, sub)| Some(with_own(sub, keep.as_ref().filter(|_| ok))))
                .boxed()
        }
    }
}

pub(super) fn child_cart(
    p: &CartBinding,
    t: Option<&Target>,
    fit: u8,
) -> BoxedStrategy<CartBinding> {
    let (skus, allowed_lines) = match p {
        CartBinding::Snapshot { .. } => return Just(p.clone()).boxed(),
        CartBinding::Open {
            allowed_skus,
            max_line_items,
        } => (allowed_skus.clone(), *max_line_items),
    };
    let own_id = t.map(|t| t.snapshot_id);
    let own_skus: Vec<Sku> = t.map(|t| t.skus.clone()).unwrap_or_default();
    let lines = t.map_or(0, |t| t.lines);
    let sku_strategy: BoxedStrategy<Option<Vec<Sku>>> = match skus {
        None => {
            let own = own_skus.clone();
            (fits(fit), prop::option::of(unique(id::<Sku>("SKU"), 0..=2)))
                .prop_map(move |(ok, s)| {
                    s.map(|mut s| {
                        if ok {
                            for k in &own {
                                s = with_own(s, Some(k));
                            }
                        }
                        s
                    })
                })
                .boxed()
        }
        Some(list) => {
            let keep: Vec<Sku> = own_skus
                .iter()
                .filter(|s| list.contains(s))
                .cloned()
                .collect();
            let len = list.len();
            (fits(fit), prop::sample::subsequence(list, 0..=len))
                .prop_map(move |(ok, mut sub)| {
                    if ok {
                        for k in &keep {
                            sub = with_own(sub, Some(k));
                        }
                    }
                    Some(sub)
                })
                .boxed()
        }
    };
    let line_strategy: BoxedStrategy<Option<u32>> = match allowed_lines {
        None => (fits(fit), prop::option::of(0u32..=8))
            .prop_map(move |(ok, n)| n.map(|n| if ok { n.max(lines) } else { n }))
            .boxed(),
        Some(max) => (fits(fit), 0u32..=max)
            .prop_map(move |(ok, n)| Some(if ok && lines <= max { n.max(lines) } else { n }))
            .boxed(),
    };
    prop_oneof![
        1 => (fits(fit), snapshot_id()).prop_map(move |(ok, s)| CartBinding::Snapshot {
            snapshot_id: own_id.filter(|_| ok).unwrap_or(s),
        }),
        3 => (sku_strategy, line_strategy).prop_map(|(allowed_skus, max_line_items)| {
            CartBinding::Open { allowed_skus, max_line_items }
        }),
    ]
    .boxed()
}

pub(super) fn child_actions(
    p: crate::domain::ActionSet,
    t: Option<&Target>,
    fit: u8,
) -> BoxedStrategy<crate::domain::ActionSet> {
    let all: Vec<PaymentAction> = p.iter().collect();
    let keep = t.map(|t| t.action).filter(|a| p.contains(*a));
    let len = all.len();
    (fits(fit), prop::sample::subsequence(all, 1..=len.max(1)))
        .prop_map(move |(ok, sub)| {
            let mut set: crate::domain::ActionSet = sub.into_iter().collect();
            if let Some(a) = keep.filter(|_| ok) {
                set.insert(a);
            }
            set
        })
        .boxed()
}

/// A condition that asks in every case `p` asks (a lower threshold, a lower urgency).
pub(super) fn child_condition(p: &ConfirmationCondition) -> BoxedStrategy<ConfirmationCondition> {
    use ConfirmationCondition as K;
    match p {
        K::AboveAmount { amount } => {
            let hi = amount.minor_units();
            let currency = amount.currency();
            pick()
                .prop_map(move |k| K::AboveAmount {
                    amount: cash(k.between(0, hi), currency),
                })
                .boxed()
        }
        K::UrgencyAtLeast { urgency: u } => {
            let u = *u;
            urgency()
                .prop_map(move |c| K::UrgencyAtLeast { urgency: c.min(u) })
                .boxed()
        }
        K::Always | K::AmountChanged | K::CartChanged | K::ShippingChanged | K::PolicyChanged => {
            Just(p.clone()).boxed()
        }
    }
}

pub(super) fn child_confirmation(
    p: &ConfirmationRule,
    cur: Currency,
    around: i64,
) -> BoxedStrategy<ConfirmationRule> {
    let inherited: Vec<BoxedStrategy<ConfirmationCondition>> =
        p.conditions.iter().map(child_condition).collect();
    let baseline = p.baseline.clone();
    (
        inherited,
        prop::collection::vec(condition(around, cur), 0..=1),
        chance(1, 10),
        any::<bool>(),
    )
        .prop_map(move |(mut conditions, extra, always, keep_baseline)| {
            conditions.extend(extra);
            if always {
                conditions = vec![ConfirmationCondition::Always];
            }
            ConfirmationRule {
                conditions,
                baseline: baseline.clone().filter(|_| keep_baseline),
            }
        })
        .boxed()
}

/// A sub-interval of `p`, containing `reference_time()` when it fits and `p` does.
pub(super) fn child_validity(p: &Validity, fit: u8) -> BoxedStrategy<Validity> {
    let p = p.clone();
    (fits(fit), pick(), pick())
        .prop_map(move |(ok, a, b)| {
            let now = reference_time();
            let (nb, exp) = (p.not_before, p.expires_at);
            let secs = (exp - nb).num_seconds();
            if secs < 2 {
                return p.clone();
            }
            if ok && p.contains(now) {
                let before = (now - nb).num_seconds();
                let after = (exp - now).num_seconds();
                let cut_nb = a.between(0, before);
                // `exp` is after `now`; cut at most down to one second after it (or keep exp).
                let cut_exp = if after >= 2 {
                    b.between(0, after - 1)
                } else {
                    0
                };
                return Validity {
                    not_before: nb + Duration::seconds(cut_nb),
                    expires_at: exp - Duration::seconds(cut_exp),
                };
            }
            let cut_nb = a.between(0, secs - 1);
            let cut_exp = b.between(0, secs - 1 - cut_nb);
            Validity {
                not_before: nb + Duration::seconds(cut_nb),
                expires_at: exp - Duration::seconds(cut_exp),
            }
        })
        .boxed()
}

pub(super) fn child_spec(
    parent: &Mandate,
    t: Option<Target>,
    fit: u8,
) -> BoxedStrategy<MandateSpec> {
    let p = parent.spec().clone();
    let cur = parent.currency();
    let tr = t.as_ref();
    let around = tr.map_or(0, |t| t.total);
    (
        ("[a-z0-9]{1,4}", actor(), evidence_refs(), lifecycle_noise()),
        (
            child_merchants(&p.scope.merchants, tr, fit),
            child_mccs(p.scope.mccs.clone(), tr, fit),
            child_cart(&p.scope.cart, tr, fit),
            child_actions(p.scope.actions, tr, fit),
        ),
        child_amount(&p.scope.amount, tr, fit, cur),
        child_budgets(&p.scope.budgets, tr, fit, cur),
        child_confirmation(&p.scope.confirmation, cur, around),
        (
            child_count(p.scope.max_uses, fit),
            child_validity(&p.scope.validity, fit),
            status_for(fit),
            chance(1, 2),
        ),
    )
        .prop_filter_map(
            "valid child id",
            move |(
                (suffix, actor, evidence_refs, noise),
                (merchants, mccs, cart, actions),
                amount,
                budgets,
                confirmation,
                (max_uses, validity, status, conversion),
            )| {
                let id = MandateId::new(format!("{}.{suffix}", p.id))
                    .or_else(|_| MandateId::new(format!("child.{suffix}")))
                    .ok()
                    .filter(|id| *id != p.id)?;
                let created = validity.not_before;
                Some(MandateSpec {
                    id,
                    buyer_id: p.buyer_id.clone(),
                    actor,
                    parent_id: Some(p.id.clone()),
                    scope: MandateScope {
                        merchants,
                        mccs,
                        cart,
                        amount,
                        currency: CurrencyScope {
                            currency: cur,
                            conversion_allowed: p.scope.currency.conversion_allowed && conversion,
                        },
                        budgets,
                        actions,
                        confirmation,
                        max_uses,
                        validity,
                    },
                    lifecycle: lifecycle_from(status, created, noise),
                    evidence_refs,
                })
            },
        )
        .boxed()
}
