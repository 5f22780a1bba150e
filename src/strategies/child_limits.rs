//! The limits of attenuated children: amount scope, caps, counts, windows and budgets no
//! looser than the parent's.

use proptest::prelude::*;
use proptest::strategy::BoxedStrategy;

use crate::domain::{AmountScope, Budgets, Currency, WindowLimit, MAX_WINDOW_SECONDS};

use super::cash;
use super::fit::{chance, fits};
use super::pick::pick;
use super::scope::{limit_for, uses_limit, window_for};
use super::target::Target;

/// A cap no higher than the parent's (`None` only where the parent has none); at least `need`
/// when it fits.
pub(super) fn child_cap(parent: Option<i64>, need: i64, fit: u8) -> BoxedStrategy<Option<i64>> {
    match parent {
        Some(p) => (fits(fit), pick())
            .prop_map(move |(ok, k)| {
                Some(if ok && need <= p {
                    k.between(need, p)
                } else {
                    k.between(0, p)
                })
            })
            .boxed(),
        None => prop::option::of(limit_for(fit, need)).boxed(),
    }
}

pub(super) fn child_count(parent: Option<u32>, fit: u8) -> BoxedStrategy<Option<u32>> {
    match parent {
        Some(p) => (fits(fit), 0u32..=p)
            .prop_map(move |(ok, n)| Some(if ok && p >= 1 { n.max(1) } else { n }))
            .boxed(),
        None => uses_limit(fit),
    }
}

pub(super) fn child_amount(
    p: &AmountScope,
    t: Option<&Target>,
    fit: u8,
    cur: Currency,
) -> BoxedStrategy<AmountScope> {
    let p = p.clone();
    let t = t.filter(|t| t.currency == cur).cloned();
    (
        fits(fit),
        (any::<bool>(), any::<bool>()),
        (chance(7, 10), any::<bool>()),
        child_count(p.max_payment_attempts, fit),
        pick(),
    )
        .prop_map(move |(ok, (ship, tax), (lower, partial), attempts, k)| {
            // A parent without lower amounts allows exactly its maximum: so does the child.
            let pinned = !p.allow_lower_amount;
            let (ship, tax) = if ok || pinned {
                (p.includes_shipping, p.includes_tax)
            } else {
                (p.includes_shipping || ship, p.includes_tax || tax)
            };
            let lower = p.allow_lower_amount && lower;
            let hi = p.max_amount.minor_units();
            let max = match t.as_ref().map(|t| t.scoped(ship, tax)) {
                _ if pinned => hi,
                Some(lo) if ok && lo <= hi => {
                    if lower {
                        k.between(lo, hi)
                    } else {
                        lo
                    }
                }
                _ => k.between(0, hi),
            };
            AmountScope {
                max_amount: cash(max, cur),
                includes_shipping: ship,
                includes_tax: tax,
                allow_lower_amount: lower,
                allow_partial_capture: p.allow_partial_capture && partial,
                max_payment_attempts: attempts,
            }
        })
        .boxed()
}

pub(super) fn child_window(
    p: &WindowLimit,
    need: i64,
    fit: u8,
    cur: Currency,
) -> BoxedStrategy<WindowLimit> {
    let seconds = p.window_seconds;
    (
        prop_oneof![3 => Just(seconds), 1 => seconds..=MAX_WINDOW_SECONDS.max(seconds)],
        child_cap(p.max_amount.map(|m| m.minor_units()), need, fit),
        child_count(p.max_count, fit),
    )
        .prop_map(move |(window_seconds, amount, count)| WindowLimit {
            window_seconds,
            max_amount: amount.map(|a| cash(a, cur)),
            max_count: if amount.is_none() && count.is_none() {
                Some(0)
            } else {
                count
            },
        })
        .boxed()
}

pub(super) fn child_budgets(
    p: &Budgets,
    t: Option<&Target>,
    fit: u8,
    cur: Currency,
) -> BoxedStrategy<Budgets> {
    let need = t.map_or(0, |t| t.total);
    let windows: Vec<BoxedStrategy<WindowLimit>> = p
        .windows
        .iter()
        .map(|w| child_window(w, need, fit, cur))
        .collect();
    (
        child_cap(p.per_transaction.map(|m| m.minor_units()), need, fit),
        windows,
        prop::collection::vec(window_for(need, fit, cur), 0..=1),
        child_cap(p.lifetime.map(|m| m.minor_units()), need, fit),
    )
        .prop_map(move |(per_transaction, mut windows, extra, lifetime)| {
            windows.extend(extra);
            Budgets {
                per_transaction: per_transaction.map(|m| cash(m, cur)),
                windows,
                lifetime: lifetime.map(|m| cash(m, cur)),
            }
        })
        .boxed()
}
