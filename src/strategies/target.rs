//! The target a fitted mandate is built around: what a request on a snapshot needs.

use std::collections::BTreeSet;

use crate::domain::{Baseline, CartSnapshot, Currency, Merchant, PaymentAction, Sku, SnapshotId};

use super::cash;

/// What a request on a snapshot looks like, for mandates built to fit (or miss) it.
#[derive(Debug, Clone)]
pub(super) struct Target {
    pub(super) merchant: Merchant,
    pub(super) skus: Vec<Sku>,
    pub(super) lines: u32,
    pub(super) snapshot_id: SnapshotId,
    pub(super) currency: Currency,
    pub(super) action: PaymentAction,
    pub(super) total: i64,
    shipping: i64,
    tax: i64,
    baseline: Baseline,
}

impl Target {
    pub(super) fn of(snapshot: &CartSnapshot, action: PaymentAction) -> Target {
        let skus: BTreeSet<Sku> = snapshot.items().iter().map(|i| i.sku.clone()).collect();
        Target {
            merchant: snapshot.merchant().clone(),
            skus: skus.into_iter().collect(),
            lines: u32::try_from(snapshot.items().len()).unwrap_or(u32::MAX),
            snapshot_id: snapshot.id(),
            currency: snapshot.currency(),
            action,
            total: snapshot.total().minor_units(),
            shipping: snapshot.totals().shipping.minor_units(),
            tax: snapshot.totals().tax.minor_units(),
            baseline: Baseline::of(snapshot),
        }
    }

    /// The part of the total a mandate with these inclusion flags counts.
    pub(super) fn scoped(&self, shipping: bool, tax: bool) -> i64 {
        let mut v = self.total;
        if !shipping {
            v = (v - self.shipping).max(0);
        }
        if !tax {
            v = (v - self.tax).max(0);
        }
        v
    }

    pub(super) fn baseline_in(&self, currency: Currency) -> Baseline {
        let mut b = self.baseline.clone();
        b.total = cash(b.total.minor_units(), currency);
        b.shipping = cash(b.shipping.minor_units(), currency);
        b
    }
}

pub(super) fn with_own<T: Ord + Clone>(mut set: Vec<T>, own: Option<&T>) -> Vec<T> {
    if let Some(o) = own
        && !set.contains(o)
    {
        set.push(o.clone());
    }
    set
}
