//! Probabilities as whole numbers: how often a generated part fits what a request needs.
//!
//! A *fit* is a percentage, 0 to 100 (a value above 100 counts as 100): the probability that
//! each part of a generated value covers the request it is built around. No floating point is
//! involved; every probability is a ratio of integers.

use std::fmt;

use proptest::prelude::*;
use proptest::strategy::BoxedStrategy;

/// `true` with probability `num / den`: a constant `true` when `num >= den` and a constant
/// `false` when `num` is 0, so shrinking a document that must fit never breaks it. Otherwise
/// it is drawn uniformly from `0..den` and is `true` on the top `num` values, so it shrinks
/// towards `false`.
pub(super) fn chance(num: u32, den: u32) -> BoxedStrategy<bool> {
    if num >= den {
        Just(true).boxed()
    } else if num == 0 {
        Just(false).boxed()
    } else {
        // 0 < num < den, so `den - num` is positive.
        (0..den).prop_map(move |x| x >= den - num).boxed()
    }
}

/// `true` with probability `fit` percent. At 100 (and 0) it is a constant.
pub(super) fn fits(fit: u8) -> BoxedStrategy<bool> {
    chance(u32::from(fit), 100)
}

/// `true` with probability `100 - (100 - fit) / k` percent: it misses `k` times less often
/// than [`fits`] (`k` at least 1). At `fit` 100 it is a constant `true`.
pub(super) fn misses_less(fit: u8, k: u32) -> BoxedStrategy<bool> {
    let k = k.max(1);
    let miss = 100 - u32::from(fit.min(100));
    // 1 - (100 - fit) / (100 k), as a ratio of integers.
    chance(100 * k - miss, 100 * k)
}

/// `Some` value of `s` with probability `percent` percent, else `None` (shrinks towards
/// `None`).
pub(super) fn maybe<T: fmt::Debug + 'static>(
    percent: u8,
    s: impl Strategy<Value = T> + 'static,
) -> BoxedStrategy<Option<T>> {
    (fits(percent), s)
        .prop_map(|(some, v)| some.then_some(v))
        .boxed()
}

/// `good` with probability `fit` percent, else `bad` (both are drawn, so shrinking stays
/// simple).
pub(super) fn choose<T: Clone + fmt::Debug + 'static>(
    fit: u8,
    good: BoxedStrategy<T>,
    bad: BoxedStrategy<T>,
) -> BoxedStrategy<T> {
    (fits(fit), good, bad)
        .prop_map(|(ok, g, b)| if ok { g } else { b })
        .boxed()
}
