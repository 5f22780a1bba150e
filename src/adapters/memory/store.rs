//! [`MemoryStore`]: every table of the [`Store`] port in memory, behind mutexes.

#[path = "ledger.rs"]
mod ledger;

use std::cell::Cell;
use std::fmt;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, TimeDelta, Utc};

use crate::domain::AuditEvent;
use crate::domain::{
    ActorId, AttemptId, AttemptStatus, BuyerId, CartSnapshot, Confirmation, ConfirmationId,
    ContentDigest, Currency, Mandate, MandateId, MandateStatus, Money, Order, OrderId, Party,
    PaymentAttempt, SnapshotId, Suspensions, Usage, WindowUsage,
};
use crate::ports::{
    Begin, ChallengeConsumed, ChallengeUse, Fence, HoldError, HoldOp, HoldRecord, HoldRequest,
    IdempotencyScope, InsertOrder, RefundPolicy, StagedEvent, Store, StoreError, StoredResult,
};

use ledger::{count, money, AttemptIndex, Ledger, RawOut, MAX_LEVELS};

/// The tables' maps use the memory adapters' keyed hasher (several times faster than SipHash
/// on ids).
use super::hash::{FastMap as Map, FastSet as Set};

/// The [`Store`] port in memory: thread safe, nothing survives the process.
///
/// The budget ledger keeps integer counters per mandate and a time-ordered queue per rolling
/// window, so placing, committing and releasing a hold cost O(levels x windows) integer work
/// and a hash lookup, however many holds came before (no scan over history). It sits behind
/// its own mutex; the attempt -> hold index is sharded outside it, and the other tables have a
/// mutex of their own. No lock is ever held across an `await` (every method is synchronous
/// inside).
///
/// Time is never read: holds count in windows by their [`HoldRequest::at`] and usage is read at
/// the `now` given. A window only moves forward: if the times given go backwards, a hold that
/// left a window does not come back, and a hold placed at or before the point a window has
/// already moved past does not enter that window.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// use agent_mandate::adapters::memory::MemoryStore;
/// use agent_mandate::domain::{examples, AttemptId, Currency, Money};
/// use agent_mandate::ports::{HoldError, HoldRequest, Store};
///
/// let store = MemoryStore::new();
/// let mandate = examples::travel_backpack_mandate(); // lifetime cap EUR 150.00
/// store.insert_mandate(&mandate).await.unwrap();
/// let chain = store.chain(mandate.id()).await.unwrap();
/// let eur = |a| Money::parse(a, Currency::EUR).unwrap();
/// let attempt = |id: &str| AttemptId::new(id).unwrap();
///
/// let first = HoldRequest::on_chain(attempt("attempt_1"), eur("144.00"), examples::now(), &chain);
/// let usage = store.place_hold(&first).await.unwrap();
/// assert_eq!(usage[0].held, eur("144.00"));
///
/// let second = HoldRequest::on_chain(attempt("attempt_2"), eur("10.00"), examples::now(), &chain);
/// assert!(matches!(store.place_hold(&second).await, Err(HoldError::Refused { .. })));
///
/// store.commit_hold(&first.attempt_id, eur("144.00")).await.unwrap();
/// let usage = store.usage(&chain, examples::now()).await.unwrap();
/// assert_eq!(usage[0].spent, eur("144.00"));
/// assert!(usage[0].held.is_zero());
/// # });
/// ```
#[derive(Debug, Default)]
pub struct MemoryStore {
    /// The budget ledger.
    ledger: Mutex<Ledger>,
    /// Attempt id -> hold, outside the ledger's lock. Lock order: a shard of `holds`, then
    /// `ledger`, then `tables`; never the reverse.
    holds: AttemptIndex,
    tables: Mutex<Tables>,
    /// The trail events are appended to directly ([`MemoryStore::with_trail`]).
    trail: Option<std::sync::Arc<super::MemoryAuditSink>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    /// This store appending its events straight to `sink`'s trail instead of staging them in
    /// its outbox (alert events excepted, see [`Store::direct_trail`]): a payment's events
    /// reach the trail in the store call that makes the change, with no delivery round.
    /// Give the engine the same `sink` as its audit port.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// use std::sync::Arc;
    /// use agent_mandate::adapters::memory::{MemoryAuditSink, MemoryStore};
    /// use agent_mandate::domain::{AttemptId, AuditEvent, AuditKind};
    /// use agent_mandate::ports::{AuditSink, Store};
    /// let sink = Arc::new(MemoryAuditSink::new());
    /// let store = MemoryStore::new().with_trail(sink.clone());
    /// assert_eq!(store.direct_trail(), sink.trail_id());
    /// let event = AuditEvent {
    ///     at: chrono::DateTime::UNIX_EPOCH,
    ///     kind: AuditKind::OrderFailed {
    ///         attempt_id: AttemptId::new("att_1").unwrap(),
    ///         reason: "out of stock".into(),
    ///     },
    /// };
    /// store.stage_audit(&[event]).await.unwrap();
    /// assert!(store.staged_audit(10).await.unwrap().is_empty());
    /// assert_eq!(sink.head().await.unwrap().map(|r| r.seq), Some(1));
    /// # });
    /// ```
    pub fn with_trail(mut self, sink: std::sync::Arc<super::MemoryAuditSink>) -> MemoryStore {
        self.trail = Some(sink);
        self
    }

    /// The ledger index of the hold of `attempt_id`.
    fn hold_index(&self, attempt_id: &AttemptId) -> Result<u32, StoreError> {
        self.holds
            .get(attempt_id)
            .ok_or_else(|| StoreError::NotFound {
                entity: "hold",
                id: attempt_id.to_string(),
            })
    }

    fn tables(&self) -> MutexGuard<'_, Tables> {
        lock(&self.tables)
    }

    /// The events waiting in the audit outbox, oldest first (a synchronous view for tests and
    /// tools; the port's [`Store::staged_audit`] is the same).
    pub fn staged_events(&self) -> Vec<AuditEvent> {
        self.tables()
            .staged
            .iter()
            .map(|e| e.event.clone())
            .collect()
    }

    /// `Ok` while `fence` holds its record (the tables' lock is held by the caller).
    fn fenced(t: &Tables, fence: &Fence) -> Result<(), StoreError> {
        match t.idempotency.get(&fence.scope) {
            Some(Idempotency::InFlight { token, .. }) if *token == fence.token => Ok(()),
            _ => Err(StoreError::Fenced {
                key: scope_key(&fence.scope),
            }),
        }
    }

    fn ledger(&self) -> MutexGuard<'_, Ledger> {
        lock(&self.ledger)
    }
}

/// Locks `m`, recovering the data of a poisoned mutex (no method panics while holding one, and
/// every write is complete before it returns).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// An idempotency record.
#[derive(Debug, Clone)]
enum Idempotency {
    InFlight {
        fingerprint: ContentDigest,
        lease_until: DateTime<Utc>,
        token: u64,
    },
    Completed {
        fingerprint: ContentDigest,
        result: StoredResult,
        retain_until: DateTime<Utc>,
    },
}

/// Everything but the ledger.
#[derive(Default)]
struct Tables {
    mandates: Map<MandateId, Mandate>,
    suspended_actors: Set<ActorId>,
    suspended_buyers: Set<BuyerId>,
    suspended_credentials: Set<ActorId>,
    confirmations: Map<ConfirmationId, Confirmation>,
    confirmations_for: Map<(BuyerId, SnapshotId), Vec<ConfirmationId>>,
    snapshots: Map<SnapshotId, CartSnapshot>,
    attempts: Map<AttemptId, PaymentAttempt>,
    idempotency: Map<IdempotencyScope, Idempotency>,
    orders: Map<AttemptId, Order>,
    order_ids: Map<OrderId, AttemptId>,
    blocks: Map<ActorId, u32>,
    /// Used 402 challenge ids: the credential digest and the expiry.
    challenges: Map<String, (ContentDigest, DateTime<Utc>)>,
    /// The last lease token given out (tokens are never reused).
    last_token: u64,
    /// The audit outbox: staged events, oldest first, and the last id given out.
    staged: std::collections::VecDeque<StagedEvent>,
    last_staged: u64,
}

impl fmt::Debug for Tables {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tables")
            .field("mandates", &self.mandates.len())
            .field("confirmations", &self.confirmations.len())
            .field("snapshots", &self.snapshots.len())
            .field("attempts", &self.attempts.len())
            .field("idempotency", &self.idempotency.len())
            .field("orders", &self.orders.len())
            .finish_non_exhaustive()
    }
}

fn scope_key(scope: &IdempotencyScope) -> String {
    format!("{}/{}/{}", scope.actor_id, scope.operation, scope.key)
}

/// Money values built recently by this thread: a chain's levels often share amounts, and
/// successive answers too, while building a `Money` (decimal normalisation) costs more than a
/// look through a few entries.
#[derive(Default)]
struct MoneyMemo {
    entries: Vec<(i128, Currency, Money)>,
    next: usize,
}

impl MoneyMemo {
    const SIZE: usize = 16;

    fn get(&mut self, minor: i128, currency: Currency) -> Money {
        if let Some(&(_, _, m)) = self
            .entries
            .iter()
            .find(|(v, c, _)| *v == minor && *c == currency)
        {
            return m;
        }
        let m = money(minor, currency);
        if self.entries.len() < Self::SIZE {
            self.entries.push((minor, currency, m));
        } else if let Some(slot) = self.entries.get_mut(self.next % Self::SIZE) {
            *slot = (minor, currency, m);
        }
        self.next = self.next.wrapping_add(1);
        m
    }
}

/// The usages of `ids` from the raw counters (built outside the lock).
fn usages<'a>(
    ids: impl Iterator<Item = &'a MandateId>,
    raw: &RawOut,
    memo: &mut MoneyMemo,
) -> Vec<Usage> {
    let mut out = Vec::with_capacity(raw.levels.len());
    for (id, r) in ids.zip(&raw.levels) {
        let windows = raw
            .windows
            .get(r.windows.0..r.windows.1)
            .unwrap_or(&[])
            .iter()
            .map(|w| WindowUsage {
                window_seconds: w.seconds,
                amount: memo.get(w.amount, r.currency),
                count: count(w.count),
            })
            .collect();
        out.push(Usage {
            mandate_id: id.clone(),
            spent: memo.get(r.spent, r.currency),
            held: memo.get(r.held, r.currency),
            windows,
            uses: count(r.uses),
            attempts: count(r.attempts),
        });
    }
    out
}

/// Buffers reused by the calls of one thread (no allocation inside the lock).
#[derive(Default)]
struct Scratch {
    out: RawOut,
    levels: Vec<u32>,
    memo: MoneyMemo,
}

thread_local! {
    static SCRATCH: Cell<Scratch> = const {
        Cell::new(Scratch {
            out: RawOut {
                levels: Vec::new(),
                windows: Vec::new(),
            },
            levels: Vec::new(),
            memo: MoneyMemo {
                entries: Vec::new(),
                next: 0,
            },
        })
    };
}

/// Runs `f` with this thread's scratch buffers, emptied (taken out while in use, so a nested
/// call or thread teardown just gets fresh ones).
fn with_scratch<R>(f: impl FnOnce(&mut Scratch) -> R) -> R {
    let mut s = SCRATCH.try_with(Cell::take).unwrap_or_default();
    s.out.levels.clear();
    s.out.windows.clear();
    s.levels.clear();
    let r = f(&mut s);
    // Keep small buffers only: one huge request does not pin its memory to the thread.
    if s.out.windows.capacity() <= 1024 {
        let _ = SCRATCH.try_with(|c| c.set(s));
    }
    r
}

#[async_trait]
impl Store for MemoryStore {
    async fn insert_mandate(&self, mandate: &Mandate) -> Result<(), StoreError> {
        let mut t = self.tables();
        if t.mandates.contains_key(mandate.id()) {
            return Err(StoreError::Conflict {
                entity: "mandate",
                id: mandate.id().to_string(),
                message: "the id is taken".into(),
            });
        }
        t.mandates.insert(mandate.id().clone(), mandate.clone());
        Ok(())
    }

    async fn mandate(&self, id: &MandateId) -> Result<Option<Mandate>, StoreError> {
        Ok(self.tables().mandates.get(id).cloned())
    }

    async fn update_mandate(
        &self,
        mandate: &Mandate,
        expected: MandateStatus,
    ) -> Result<(), StoreError> {
        let mut t = self.tables();
        let id = mandate.id();
        let stored = t.mandates.get(id).ok_or_else(|| StoreError::NotFound {
            entity: "mandate",
            id: id.to_string(),
        })?;
        let next = crate::adapters::mandate_rules::relifecycle(stored, mandate, expected)?;
        t.mandates.insert(id.clone(), next);
        Ok(())
    }

    async fn chain(&self, leaf: &MandateId) -> Result<Vec<Mandate>, StoreError> {
        let t = self.tables();
        let Some(mut current) = t.mandates.get(leaf) else {
            return Ok(Vec::new());
        };
        let mut chain = vec![current.clone()];
        while let Some(parent) = current.parent_id() {
            let corrupt = |message: String| StoreError::Corrupt {
                table: "mandates",
                key: current.id().to_string(),
                message,
            };
            if chain.len() >= MAX_LEVELS {
                return Err(corrupt(format!(
                    "the chain of {leaf} is deeper than {MAX_LEVELS} levels"
                )));
            }
            if chain.iter().any(|m| m.id() == parent) {
                return Err(corrupt(format!("the parents loop back to {parent}")));
            }
            current = t
                .mandates
                .get(parent)
                .ok_or_else(|| corrupt(format!("the parent {parent} is missing")))?;
            chain.push(current.clone());
        }
        chain.reverse();
        Ok(chain)
    }

    async fn set_suspended(&self, party: &Party, suspended: bool) -> Result<(), StoreError> {
        let mut t = self.tables();
        match (party, suspended) {
            (Party::Actor(a), true) => {
                t.suspended_actors.insert(a.clone());
            }
            (Party::Actor(a), false) => {
                t.suspended_actors.remove(a);
            }
            (Party::Buyer(b), true) => {
                t.suspended_buyers.insert(b.clone());
            }
            (Party::Buyer(b), false) => {
                t.suspended_buyers.remove(b);
            }
            (Party::Credentials(a), true) => {
                t.suspended_credentials.insert(a.clone());
            }
            (Party::Credentials(a), false) => {
                t.suspended_credentials.remove(a);
            }
        }
        Ok(())
    }

    async fn suspensions(
        &self,
        actors: &[ActorId],
        buyer: &BuyerId,
    ) -> Result<Suspensions, StoreError> {
        let t = self.tables();
        let mut found: Vec<ActorId> = Vec::new();
        let mut credentials: Vec<ActorId> = Vec::new();
        for a in actors {
            if t.suspended_actors.contains(a) && !found.contains(a) {
                found.push(a.clone());
            }
            if t.suspended_credentials.contains(a) && !credentials.contains(a) {
                credentials.push(a.clone());
            }
        }
        let buyers = if t.suspended_buyers.contains(buyer) {
            vec![buyer.clone()]
        } else {
            Vec::new()
        };
        Ok(Suspensions {
            actors: found,
            buyers,
            credentials,
        })
    }

    async fn insert_confirmation(&self, confirmation: &Confirmation) -> Result<(), StoreError> {
        let mut t = self.tables();
        if let Some(stored) = t.confirmations.get(&confirmation.id) {
            if stored == confirmation {
                return Ok(());
            }
            return Err(StoreError::Conflict {
                entity: "confirmation",
                id: confirmation.id.to_string(),
                message: "another confirmation has this id".into(),
            });
        }
        t.confirmations
            .insert(confirmation.id.clone(), confirmation.clone());
        t.confirmations_for
            .entry((confirmation.buyer_id.clone(), confirmation.snapshot_id))
            .or_default()
            .push(confirmation.id.clone());
        Ok(())
    }

    async fn confirmations(
        &self,
        buyer: &BuyerId,
        snapshot: &SnapshotId,
    ) -> Result<Vec<Confirmation>, StoreError> {
        let t = self.tables();
        let Some(ids) = t.confirmations_for.get(&(buyer.clone(), *snapshot)) else {
            return Ok(Vec::new());
        };
        Ok(ids
            .iter()
            .filter_map(|id| t.confirmations.get(id).cloned())
            .collect())
    }

    async fn put_snapshot(&self, snapshot: &CartSnapshot) -> Result<(), StoreError> {
        self.tables()
            .snapshots
            .entry(snapshot.id())
            .or_insert_with(|| snapshot.clone());
        Ok(())
    }

    async fn snapshot(&self, id: &SnapshotId) -> Result<Option<CartSnapshot>, StoreError> {
        Ok(self.tables().snapshots.get(id).cloned())
    }

    async fn usage(&self, chain: &[Mandate], now: DateTime<Utc>) -> Result<Vec<Usage>, StoreError> {
        with_scratch(|s| {
            {
                let mut ledger = self.ledger();
                for m in chain {
                    ledger.usage_of(m, now, &mut s.out)?;
                }
            }
            Ok(usages(chain.iter().map(|m| m.id()), &s.out, &mut s.memo))
        })
    }

    async fn place_hold(&self, hold: &HoldRequest) -> Result<Vec<Usage>, HoldError> {
        with_scratch(|s| {
            let levels = hold.levels.len().min(MAX_LEVELS);
            let windows = hold
                .levels
                .iter()
                .take(MAX_LEVELS)
                .map(|l| l.limits.windows.len())
                .sum();
            s.out.levels.reserve(levels);
            s.out.windows.reserve(windows);
            s.levels.reserve(levels);
            let id = &hold.attempt_id;
            if let Some(fence) = &hold.fence {
                Self::fenced(&self.tables(), fence)?;
            }
            let placed = self.holds.insert_with(id, || {
                let mut ledger = self.ledger();
                // Lock order: attempt shard, ledger, then tables (only to learn a new
                // account's currency).
                let mut known = |id: &MandateId| -> Option<Currency> {
                    self.tables().mandates.get(id).map(|m| m.currency())
                };
                ledger.place(hold, &mut known, &mut s.levels, &mut s.out)
            });
            match placed {
                None => {
                    return Err(HoldError::Duplicate {
                        attempt_id: id.clone(),
                    })
                }
                Some(placed) => {
                    placed?;
                }
            }
            Ok(usages(
                hold.levels.iter().map(|l| &l.mandate_id),
                &s.out,
                &mut s.memo,
            ))
        })
    }

    async fn commit_hold(&self, attempt_id: &AttemptId, amount: Money) -> Result<(), StoreError> {
        let index = self.hold_index(attempt_id)?;
        self.ledger()
            .resolve_hold(index, attempt_id, HoldOp::Commit(amount))
    }

    async fn release_hold(&self, attempt_id: &AttemptId) -> Result<(), StoreError> {
        let index = self.hold_index(attempt_id)?;
        self.ledger()
            .resolve_hold(index, attempt_id, HoldOp::Release)
    }

    async fn refund_hold(
        &self,
        attempt_id: &AttemptId,
        amount: Money,
        policy: RefundPolicy,
    ) -> Result<(), StoreError> {
        let index = self.hold_index(attempt_id)?;
        self.ledger()
            .resolve_hold(index, attempt_id, HoldOp::Refund(amount, policy))
    }

    async fn hold(&self, attempt_id: &AttemptId) -> Result<Option<HoldRecord>, StoreError> {
        match self.holds.get(attempt_id) {
            Some(index) => self.ledger().record(index, attempt_id),
            None => Ok(None),
        }
    }

    async fn insert_attempt(&self, attempt: &PaymentAttempt) -> Result<(), StoreError> {
        let mut t = self.tables();
        match t.attempts.entry(attempt.id.clone()) {
            std::collections::hash_map::Entry::Occupied(_) => Err(StoreError::Conflict {
                entity: "attempt",
                id: attempt.id.to_string(),
                message: "the id is taken".into(),
            }),
            std::collections::hash_map::Entry::Vacant(slot) => {
                slot.insert(attempt.clone());
                Ok(())
            }
        }
    }

    async fn attempt(&self, id: &AttemptId) -> Result<Option<PaymentAttempt>, StoreError> {
        Ok(self.tables().attempts.get(id).cloned())
    }

    async fn update_attempt(
        &self,
        attempt: &PaymentAttempt,
        expected: AttemptStatus,
    ) -> Result<(), StoreError> {
        let mut t = self.tables();
        let stored = t
            .attempts
            .get_mut(&attempt.id)
            .ok_or_else(|| StoreError::NotFound {
                entity: "attempt",
                id: attempt.id.to_string(),
            })?;
        if stored.status != expected {
            return Err(StoreError::Conflict {
                entity: "attempt",
                id: attempt.id.to_string(),
                message: format!("the status is {}, not {expected}", stored.status),
            });
        }
        *stored = attempt.clone();
        Ok(())
    }

    async fn attempts_in(
        &self,
        statuses: &[AttemptStatus],
        limit: usize,
    ) -> Result<Vec<PaymentAttempt>, StoreError> {
        let t = self.tables();
        let mut found: Vec<&PaymentAttempt> = t
            .attempts
            .values()
            .filter(|a| statuses.contains(&a.status))
            .collect();
        found.sort_by(|a, b| {
            a.created_at
                .cmp(&b.created_at)
                .then_with(|| a.id.cmp(&b.id))
        });
        Ok(found.into_iter().take(limit).cloned().collect())
    }

    async fn begin_idempotent(
        &self,
        scope: &IdempotencyScope,
        fingerprint: &ContentDigest,
        now: DateTime<Utc>,
        lease: Duration,
    ) -> Result<Begin, StoreError> {
        let mut t = self.tables();
        let answer = match t.idempotency.get(scope) {
            None => None,
            Some(Idempotency::Completed { retain_until, .. }) if now >= *retain_until => None,
            Some(Idempotency::InFlight { lease_until, .. }) if now >= *lease_until => None,
            Some(Idempotency::Completed {
                fingerprint: recorded,
                result,
                ..
            }) => Some(if recorded == fingerprint {
                Begin::Replay(result.clone())
            } else {
                Begin::Conflict {
                    recorded: *recorded,
                }
            }),
            Some(Idempotency::InFlight {
                fingerprint: recorded,
                lease_until,
                ..
            }) => Some(if recorded == fingerprint {
                Begin::InFlight {
                    retry_after: (*lease_until - now).to_std().unwrap_or(Duration::ZERO),
                }
            } else {
                Begin::Conflict {
                    recorded: *recorded,
                }
            }),
        };
        if let Some(answer) = answer {
            return Ok(answer);
        }
        let lease_until = TimeDelta::from_std(lease)
            .ok()
            .and_then(|d| now.checked_add_signed(d))
            .unwrap_or(DateTime::<Utc>::MAX_UTC);
        t.last_token = t.last_token.saturating_add(1);
        let token = t.last_token;
        t.idempotency.insert(
            scope.clone(),
            Idempotency::InFlight {
                fingerprint: *fingerprint,
                lease_until,
                token,
            },
        );
        Ok(Begin::Started(Fence {
            scope: scope.clone(),
            token,
        }))
    }

    async fn complete_idempotent(
        &self,
        fence: &Fence,
        result: &StoredResult,
        retain_until: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let mut t = self.tables();
        Self::fenced(&t, fence)?;
        let Some(record) = t.idempotency.get_mut(&fence.scope) else {
            return Err(StoreError::Fenced {
                key: scope_key(&fence.scope),
            });
        };
        let fingerprint = match record {
            Idempotency::InFlight { fingerprint, .. }
            | Idempotency::Completed { fingerprint, .. } => *fingerprint,
        };
        *record = Idempotency::Completed {
            fingerprint,
            result: result.clone(),
            retain_until,
        };
        Ok(())
    }

    async fn abandon_idempotent(&self, fence: &Fence) -> Result<(), StoreError> {
        let mut t = self.tables();
        Self::fenced(&t, fence)?;
        t.idempotency.remove(&fence.scope);
        Ok(())
    }

    async fn check_fence(&self, fence: &Fence) -> Result<(), StoreError> {
        Self::fenced(&self.tables(), fence)
    }

    fn direct_trail(&self) -> Option<crate::ports::TrailId> {
        self.trail.as_ref().and_then(|s| s.trail_id_of())
    }

    async fn stage_audit(&self, events: &[AuditEvent]) -> Result<(), StoreError> {
        if events.is_empty() {
            return Ok(());
        }
        let staged: &[AuditEvent];
        let alerts: Vec<AuditEvent>;
        match &self.trail {
            Some(sink) => {
                alerts = sink.append_direct(events)?;
                staged = &alerts;
            }
            None => staged = events,
        }
        let mut t = self.tables();
        for event in staged {
            t.last_staged = t.last_staged.saturating_add(1);
            let id = t.last_staged;
            t.staged.push_back(StagedEvent {
                id,
                event: event.clone(),
            });
        }
        Ok(())
    }

    async fn staged_audit(&self, limit: usize) -> Result<Vec<StagedEvent>, StoreError> {
        Ok(self.tables().staged.iter().take(limit).cloned().collect())
    }

    async fn ack_audit(&self, through: u64) -> Result<(), StoreError> {
        let mut t = self.tables();
        while t.staged.front().is_some_and(|e| e.id <= through) {
            t.staged.pop_front();
        }
        Ok(())
    }

    async fn purge_idempotent(&self, now: DateTime<Utc>) -> Result<u64, StoreError> {
        let mut t = self.tables();
        let before = t.idempotency.len();
        t.idempotency.retain(|_, record| match record {
            Idempotency::InFlight { lease_until, .. } => now < *lease_until,
            Idempotency::Completed { retain_until, .. } => now < *retain_until,
        });
        Ok((before - t.idempotency.len()) as u64)
    }

    async fn insert_order(&self, order: &Order) -> Result<InsertOrder, StoreError> {
        let mut t = self.tables();
        if let Some(existing) = t.orders.get(&order.attempt_id) {
            return Ok(InsertOrder::Existing(existing.clone()));
        }
        if let Some(other) = t.order_ids.get(&order.id) {
            return Err(StoreError::Conflict {
                entity: "order",
                id: order.id.to_string(),
                message: format!("the id is taken by the order of attempt {other}"),
            });
        }
        t.order_ids
            .insert(order.id.clone(), order.attempt_id.clone());
        t.orders.insert(order.attempt_id.clone(), order.clone());
        Ok(InsertOrder::Inserted)
    }

    async fn order_for(&self, attempt_id: &AttemptId) -> Result<Option<Order>, StoreError> {
        Ok(self.tables().orders.get(attempt_id).cloned())
    }

    async fn record_block(&self, actor: &ActorId) -> Result<u32, StoreError> {
        let mut t = self.tables();
        let n = t.blocks.entry(actor.clone()).or_insert(0);
        *n = n.saturating_add(1);
        Ok(*n)
    }

    async fn reset_blocks(&self, actor: &ActorId) -> Result<(), StoreError> {
        self.tables().blocks.remove(actor);
        Ok(())
    }

    async fn consume_challenge(
        &self,
        use_: &ChallengeUse,
    ) -> Result<ChallengeConsumed, StoreError> {
        let mut t = self.tables();
        match t.challenges.get(&use_.challenge_id) {
            Some((credential, _)) if *credential == use_.credential => {
                Ok(ChallengeConsumed::SameCredential)
            }
            Some(_) => Ok(ChallengeConsumed::Used),
            None => {
                t.challenges.insert(
                    use_.challenge_id.clone(),
                    (use_.credential, use_.expires_at),
                );
                Ok(ChallengeConsumed::First)
            }
        }
    }

    async fn purge_challenges(&self, now: DateTime<Utc>) -> Result<u64, StoreError> {
        let mut t = self.tables();
        let before = t.challenges.len();
        t.challenges.retain(|_, (_, expires)| *expires > now);
        Ok((before - t.challenges.len()) as u64)
    }
}
