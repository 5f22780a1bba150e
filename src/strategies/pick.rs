//! Random material to place a generated value relative to a limit: at it, past it, below it
//! or between two bounds, with the boundaries favoured.

use proptest::prelude::*;
use proptest::strategy::BoxedStrategy;

use super::LIMIT;

/// Random material to place a value relative to a limit.
#[derive(Debug, Clone, Copy)]
pub(super) struct Pick {
    pub(super) sel: u8,
    pub(super) delta: i64,
    wide: u64,
}

pub(super) fn pick() -> BoxedStrategy<Pick> {
    (any::<u8>(), 0i64..=100_000, any::<u64>())
        .prop_map(|(sel, delta, wide)| Pick { sel, delta, wide })
        .boxed()
}

impl Pick {
    /// At or above `base`: exactly `base` half the time, the boundary matters.
    pub(super) fn up(self, base: i64) -> i64 {
        let v = match self.sel % 4 {
            0 | 1 => base,
            2 => base.saturating_add(1),
            _ => base.saturating_add(1 + self.delta),
        };
        v.clamp(0, LIMIT)
    }

    /// Below `base` when it can be.
    pub(super) fn down(self, base: i64) -> i64 {
        let v = match self.sel % 4 {
            0 | 1 => base - 1,
            2 => base - 1 - self.delta,
            _ => self.delta.min(base - 1),
        };
        v.clamp(0, LIMIT)
    }

    /// In `lo..=hi` (endpoints favoured); `hi` when the range is empty, so the result never
    /// exceeds `hi`.
    pub(super) fn between(self, lo: i64, hi: i64) -> i64 {
        let (lo, hi) = (lo.clamp(0, LIMIT), hi.clamp(0, LIMIT));
        if lo >= hi {
            return hi;
        }
        match self.sel % 4 {
            0 => lo,
            1 => hi,
            // `hi - lo` is positive and at most LIMIT, so the remainder fits an i64.
            _ => lo + i64::try_from(self.wide % (hi - lo + 1).unsigned_abs()).unwrap_or(0),
        }
    }
}
