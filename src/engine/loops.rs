//! Loop detection: payments per resource (the single line of a one-line cart, at one merchant,
//! under one mandate) within the configured window, counted in this engine's process.
//!
//! The count lives in memory: a restarted process starts from zero, and several processes
//! count apart. The mandate's window limits (amount and count) are durable and hold across
//! processes; loop detection is the finer, per-resource guard on top of them.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use chrono::{DateTime, Duration, Utc};

use crate::domain::{
    CartSnapshot, LoopLimit, MandateId, MerchantId, PaymentRequest, ResourcePayments, Sku,
};

type Key = (MandateId, MerchantId, Sku);

/// The most resources remembered (the least recently paid are dropped past it).
const MAX_KEYS: usize = 100_000;

#[derive(Debug, Default)]
pub(super) struct LoopCounter {
    paid: Mutex<HashMap<Key, VecDeque<DateTime<Utc>>>>,
}

pub(super) fn key(request: &PaymentRequest, snapshot: &CartSnapshot) -> Option<Key> {
    match snapshot.items() {
        [line] => Some((
            request.mandate_id.clone(),
            request.merchant_id.clone(),
            line.sku.clone(),
        )),
        _ => None,
    }
}

fn window(limit: &LoopLimit) -> Duration {
    Duration::seconds(i64::try_from(limit.window_seconds).unwrap_or(i64::MAX))
}

impl LoopCounter {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, VecDeque<DateTime<Utc>>>> {
        // Every update is a push or a pop on one entry: a panic elsewhere leaves it usable.
        self.paid
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Payments of the request's resource in the window ending at `now`.
    pub(super) fn count(
        &self,
        limit: Option<LoopLimit>,
        request: &PaymentRequest,
        snapshot: &CartSnapshot,
        now: DateTime<Utc>,
    ) -> Option<ResourcePayments> {
        let limit = limit?;
        let key = key(request, snapshot)?;
        let since = now - window(&limit);
        let mut map = self.lock();
        let paid = match map.get_mut(&key) {
            Some(times) => {
                while times.front().is_some_and(|t| *t <= since) {
                    times.pop_front();
                }
                u32::try_from(times.iter().filter(|t| **t <= now).count()).unwrap_or(u32::MAX)
            }
            None => 0,
        };
        Some(ResourcePayments { limit, paid })
    }

    /// Records a payment of the request's resource at `now`.
    pub(super) fn record(
        &self,
        limit: Option<LoopLimit>,
        request: &PaymentRequest,
        snapshot: &CartSnapshot,
        now: DateTime<Utc>,
    ) {
        let (Some(limit), Some(key)) = (limit, key(request, snapshot)) else {
            return;
        };
        let mut map = self.lock();
        if map.len() >= MAX_KEYS && !map.contains_key(&key) {
            let since = now - window(&limit);
            map.retain(|_, times| times.back().is_some_and(|t| *t > since));
            if map.len() >= MAX_KEYS {
                map.clear();
            }
        }
        let times = map.entry(key).or_default();
        times.push_back(now);
        let cap = usize::try_from(limit.max_payments)
            .unwrap_or(usize::MAX)
            .saturating_add(1);
        while times.len() > cap {
            times.pop_front();
        }
    }
}
