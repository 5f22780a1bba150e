//! Usage records: fitted to a mandate's limits (room or none), or huge ones for robustness.

use proptest::prelude::*;
use proptest::strategy::BoxedStrategy;

use crate::domain::{Mandate, MandateId, Money, Usage, WindowUsage};

use super::cash;
use super::fit::{fits, misses_less};
use super::pick::pick;
use super::scope::window_seconds;
use super::values::{currency, money_up_to_limit};

/// Usage of `mandate` (in its currency) for a payment of `amount`: each limit (window amount
/// and count, lifetime, uses, attempts) leaves room with probability `fit` percent (0 to 100;
/// more counts as 100), often exactly enough, and is reached or passed otherwise; a window's
/// usage is sometimes missing (never at `fit` 100).
pub fn usage_for(mandate: &Mandate, amount: Money, fit: u8) -> BoxedStrategy<Usage> {
    let need = if amount.currency() == mandate.currency() {
        amount.minor_units()
    } else {
        0
    };
    usage_near(mandate, need, fit)
}

pub(super) fn used_under(limit: Option<i64>, need: i64, fit: u8) -> BoxedStrategy<i64> {
    (fits(fit), pick(), 0i64..=1_000)
        .prop_map(move |(ok, k, free)| match limit {
            Some(l) if ok => k.between(0, l - need),
            Some(l) => k.up(l - need + 1),
            None => free,
        })
        .boxed()
}

pub(super) fn count_under(limit: Option<u32>, fit: u8) -> BoxedStrategy<u32> {
    (fits(fit), 0u32..=3, 0u32..=2)
        .prop_map(move |(ok, n, over)| match limit {
            Some(l) if ok && l >= 1 => n.min(l - 1),
            Some(l) => l.saturating_add(over),
            None => n,
        })
        .boxed()
}

/// The lower of two optional limits (`None` is no limit).
pub(super) fn tightest<T: Ord>(a: Option<T>, b: Option<T>) -> Option<T> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

pub(super) fn usage_near(m: &Mandate, need: i64, fit: u8) -> BoxedStrategy<Usage> {
    let cur = m.currency();
    let scope = m.scope();
    // One usage per window length, under the tightest limits of the windows of that length.
    let mut lengths: std::collections::BTreeMap<u64, (Option<i64>, Option<u32>)> =
        std::collections::BTreeMap::new();
    for w in &scope.budgets.windows {
        let e = lengths.entry(w.window_seconds).or_insert((None, None));
        let amount = w.max_amount.map(|a| a.minor_units());
        e.0 = tightest(e.0, amount);
        e.1 = tightest(e.1, w.max_count);
    }
    let windows: Vec<BoxedStrategy<Option<WindowUsage>>> = lengths
        .into_iter()
        .map(|(seconds, (amount, count))| {
            (
                misses_less(fit, 3),
                used_under(amount, need, fit),
                count_under(count, fit),
            )
                .prop_map(move |(present, amount, count)| {
                    present.then(|| WindowUsage {
                        window_seconds: seconds,
                        amount: cash(amount, cur),
                        count,
                    })
                })
                .boxed()
        })
        .collect();
    let id = m.id().clone();
    (
        used_under(scope.budgets.lifetime.map(|l| l.minor_units()), need, fit),
        any::<u16>(),
        windows,
        count_under(scope.max_uses, fit),
        count_under(scope.amount.max_payment_attempts, fit),
    )
        .prop_map(move |(used, share, windows, uses, attempts)| {
            let held = i64::try_from(i128::from(used) * i128::from(share) / i128::from(u16::MAX))
                .unwrap_or(0);
            Usage {
                mandate_id: id.clone(),
                spent: cash(used - held, cur),
                held: cash(held, cur),
                windows: windows.into_iter().flatten().collect(),
                uses,
                attempts,
            }
        })
        .boxed()
}

pub(super) fn huge_usage(ids: Vec<MandateId>) -> BoxedStrategy<Usage> {
    (prop::sample::select(ids), currency())
        .prop_flat_map(|(mandate_id, c)| {
            (
                money_up_to_limit(c),
                money_up_to_limit(c),
                prop::collection::vec(
                    (window_seconds(), money_up_to_limit(c), any::<u32>()),
                    0..=3,
                ),
                any::<u32>(),
                any::<u32>(),
            )
                .prop_map(move |(spent, held, windows, uses, attempts)| Usage {
                    mandate_id: mandate_id.clone(),
                    spent,
                    held,
                    windows: windows
                        .into_iter()
                        .map(|(window_seconds, amount, count)| WindowUsage {
                            window_seconds,
                            amount,
                            count,
                        })
                        .collect(),
                    uses,
                    attempts,
                })
        })
        .boxed()
}
