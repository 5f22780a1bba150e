//! The scope pieces of a root mandate fitted to (or missing) a [`Target`]: merchants, MCCs,
//! cart binding, actions, amount, budgets, confirmation rule, validity and uses.

use proptest::prelude::*;
use proptest::strategy::BoxedStrategy;

use crate::domain::{
    AmountScope, Budgets, CartBinding, ConfirmationCondition, ConfirmationRule, Currency,
    MarketplaceId, Mcc, MerchantId, MerchantScope, PaymentAction, SellerId, Sku, Urgency, Validity,
    WindowLimit, MAX_WINDOW_SECONDS,
};

use super::fit::{chance, choose, fits};
use super::pick::pick;
use super::target::{with_own, Target};
use super::values::{digest, id, mcc, snapshot_id, unique};
use super::{at, cash};

pub(super) fn merchant_scope_for(t: &Target, fit: u8) -> BoxedStrategy<MerchantScope> {
    let own = t.merchant.merchant_id.clone();
    let own2 = own.clone();
    let mut good: Vec<(u32, BoxedStrategy<MerchantScope>)> = vec![
        (4, Just(MerchantScope::Single { merchant_id: own }).boxed()),
        (
            2,
            unique(id::<MerchantId>("merchant"), 0..=2)
                .prop_map(move |s| MerchantScope::Allowlist {
                    merchant_ids: with_own(s, Some(&own2)),
                })
                .boxed(),
        ),
    ];
    if let Some(market) = t.merchant.marketplace_id.clone() {
        let seller = t.merchant.seller_id.clone();
        let sellers: BoxedStrategy<Option<Vec<SellerId>>> = match seller {
            Some(s) => prop::option::of(
                unique(id::<SellerId>("seller"), 0..=2).prop_map(move |v| with_own(v, Some(&s))),
            )
            .boxed(),
            None => Just(None).boxed(),
        };
        good.push((
            2,
            sellers
                .prop_map(move |allowed_sellers| MerchantScope::Marketplace {
                    marketplace_id: market.clone(),
                    allowed_sellers,
                })
                .boxed(),
        ));
    }
    let market = t.merchant.marketplace_id.clone();
    let bad = prop_oneof![
        id::<MerchantId>("merchant").prop_map(|merchant_id| MerchantScope::Single { merchant_id }),
        unique(id::<MerchantId>("merchant"), 1..=2)
            .prop_map(|merchant_ids| MerchantScope::Allowlist { merchant_ids }),
        (
            id::<MarketplaceId>("market"),
            prop::option::of(unique(id::<SellerId>("seller"), 0..=2))
        )
            .prop_map(move |(m, allowed_sellers)| MerchantScope::Marketplace {
                marketplace_id: market.clone().unwrap_or(m),
                allowed_sellers,
            }),
    ];
    choose(
        fit,
        prop::strategy::Union::new_weighted(good).boxed(),
        bad.boxed(),
    )
}

pub(super) fn mcc_scope_for(t: &Target, fit: u8) -> BoxedStrategy<Option<Vec<Mcc>>> {
    let own = t.merchant.mcc;
    choose(
        fit,
        prop_oneof![
            Just(None),
            unique(mcc(), 0..=2).prop_map(move |s| Some(with_own(s, Some(&own)))),
        ]
        .boxed(),
        unique(mcc(), 0..=2).prop_map(Some).boxed(),
    )
}

pub(super) fn cart_binding_for(t: &Target, fit: u8) -> BoxedStrategy<CartBinding> {
    let (id_, skus, lines) = (t.snapshot_id, t.skus.clone(), t.lines);
    let good = prop_oneof![
        2 => Just(CartBinding::Snapshot { snapshot_id: id_ }),
        3 => (
            prop::option::of(unique(id::<Sku>("SKU"), 0..=1).prop_map(move |mut s| {
                for k in &skus {
                    s = with_own(s, Some(k));
                }
                s
            })),
            prop::option::of(lines..=lines.saturating_add(3)),
        )
            .prop_map(|(allowed_skus, max_line_items)| CartBinding::Open {
                allowed_skus,
                max_line_items,
            }),
    ];
    let bad = prop_oneof![
        snapshot_id().prop_map(|snapshot_id| CartBinding::Snapshot { snapshot_id }),
        unique(id::<Sku>("SKU"), 0..=2).prop_map(|s| CartBinding::Open {
            allowed_skus: Some(s),
            max_line_items: None,
        }),
        (0..lines.max(1)).prop_map(|m| CartBinding::Open {
            allowed_skus: None,
            max_line_items: Some(m),
        }),
    ];
    choose(fit, good.boxed(), bad.boxed())
}

pub(super) fn actions_for(
    action: PaymentAction,
    fit: u8,
) -> BoxedStrategy<crate::domain::ActionSet> {
    (
        fits(fit),
        prop::sample::subsequence(PaymentAction::ALL.to_vec(), 0..=5),
    )
        .prop_map(move |(ok, picked)| {
            let mut set: crate::domain::ActionSet = picked.into_iter().collect();
            if ok {
                set.insert(action);
            }
            if set.is_empty() {
                set.insert(if action == PaymentAction::Prepare {
                    PaymentAction::CommitOrder
                } else {
                    PaymentAction::Prepare
                });
            }
            set
        })
        .boxed()
}

pub(super) fn amount_scope_for(t: &Target, fit: u8, cur: Currency) -> BoxedStrategy<AmountScope> {
    let t = t.clone();
    (
        fits(fit),
        (any::<bool>(), any::<bool>()),
        chance(4, 5),
        any::<bool>(),
        prop::option::of(0u32..=4),
        pick(),
    )
        .prop_map(move |(ok, (ship, tax), lower, partial, attempts, p)| {
            let scoped = t.scoped(ship, tax);
            let max = match (ok, lower) {
                (true, true) => p.up(scoped),
                (true, false) => scoped,
                // Without lower amounts, a maximum above the amount misses too.
                (false, false) if p.sel & 0x10 != 0 => scoped.saturating_add(1 + p.delta),
                (false, _) => p.down(scoped),
            };
            AmountScope {
                max_amount: cash(max, cur),
                includes_shipping: ship,
                includes_tax: tax,
                allow_lower_amount: lower,
                allow_partial_capture: partial,
                max_payment_attempts: attempts.map(|a| if ok { a.max(1) } else { a }),
            }
        })
        .boxed()
}

pub(super) fn limit_for(fit: u8, need: i64) -> BoxedStrategy<i64> {
    (fits(fit), pick())
        .prop_map(move |(ok, p)| if ok { p.up(need) } else { p.down(need) })
        .boxed()
}

pub(super) fn window_seconds() -> BoxedStrategy<u64> {
    prop_oneof![
        3 => prop::sample::select(vec![3_600u64, 86_400, 604_800, 2_592_000]),
        1 => 1..=MAX_WINDOW_SECONDS,
    ]
    .boxed()
}

pub(super) fn window_for(need: i64, fit: u8, cur: Currency) -> BoxedStrategy<WindowLimit> {
    (
        fits(fit),
        window_seconds(),
        prop::option::of(limit_for(fit, need)),
        prop::option::of(0u32..=5),
    )
        .prop_map(move |(ok, window_seconds, amount, count)| {
            let count = count.map(|c| if ok { c.max(1) } else { c });
            WindowLimit {
                window_seconds,
                max_amount: amount.map(|a| cash(a, cur)),
                max_count: if amount.is_none() && count.is_none() {
                    Some(if ok { 3 } else { 0 })
                } else {
                    count
                },
            }
        })
        .boxed()
}

pub(super) fn budgets_for(t: &Target, fit: u8, cur: Currency) -> BoxedStrategy<Budgets> {
    (
        prop::option::of(limit_for(fit, t.total)),
        prop::collection::vec(window_for(t.total, fit, cur), 0..=2),
        prop::option::of(limit_for(fit, t.total)),
    )
        .prop_map(move |(per_transaction, windows, lifetime)| Budgets {
            per_transaction: per_transaction.map(|m| cash(m, cur)),
            windows,
            lifetime: lifetime.map(|m| cash(m, cur)),
        })
        .boxed()
}

pub(super) fn urgency() -> BoxedStrategy<Urgency> {
    prop::sample::select(vec![
        Urgency::Routine,
        Urgency::TimeSensitive,
        Urgency::Critical,
    ])
    .boxed()
}

pub(super) fn condition(around: i64, cur: Currency) -> BoxedStrategy<ConfirmationCondition> {
    use ConfirmationCondition as K;
    prop_oneof![
        2 => Just(K::Always),
        3 => (any::<bool>(), pick()).prop_map(move |(up, p)| K::AboveAmount {
            amount: cash(if up { p.up(around) } else { p.down(around) }, cur),
        }),
        1 => urgency().prop_map(|urgency| K::UrgencyAtLeast { urgency }),
        1 => Just(K::AmountChanged),
        1 => Just(K::CartChanged),
        1 => Just(K::ShippingChanged),
        1 => Just(K::PolicyChanged),
    ]
    .boxed()
}

pub(super) fn confirmation_for(t: &Target, cur: Currency) -> BoxedStrategy<ConfirmationRule> {
    let exact = t.baseline_in(cur);
    let other = exact.clone();
    (
        prop_oneof![
            3 => Just(Vec::new()),
            2 => prop::collection::vec(condition(t.total, cur), 1..=2),
        ],
        prop_oneof![
            2 => Just(None),
            2 => Just(Some(exact)),
            1 => (snapshot_id(), digest(), 0i64..=2).prop_map(move |(s, d, which)| {
                let mut b = other.clone();
                match which {
                    0 => b.snapshot_id = s,
                    1 => b.items_digest = d,
                    _ => b.shipping = cash(b.shipping.minor_units() + 1, cur),
                }
                Some(b)
            }),
        ],
    )
        .prop_map(|(conditions, baseline)| ConfirmationRule {
            conditions,
            baseline,
        })
        .boxed()
}

pub(super) fn validity_for(fit: u8) -> BoxedStrategy<Validity> {
    let good = (0i64..=172_800, 1i64..=172_800)
        .prop_map(|(before, after)| (-before, after))
        .boxed();
    let bad = prop_oneof![
        (1i64..=3_600, 1i64..=3_600).prop_map(|(nb, len)| (nb, nb + len)),
        (0i64..=3_600, 0i64..=3_600).prop_map(|(len, ago)| (-ago - len - 1, -ago)),
        Just((-60, 0)),
        Just((0, 60)),
    ]
    .boxed();
    choose(fit, good, bad)
        .prop_map(|(nb, exp)| Validity {
            not_before: at(nb),
            expires_at: at(exp.max(nb + 1)),
        })
        .boxed()
}

pub(super) fn uses_limit(fit: u8) -> BoxedStrategy<Option<u32>> {
    (fits(fit), prop::option::of(0u32..=3))
        .prop_map(|(ok, n)| n.map(|n| if ok { n.max(1) } else { n }))
        .boxed()
}
