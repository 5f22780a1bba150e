//! The budget ledger of [`super::MemoryStore`]: integer counters per mandate and one time-ordered
//! queue per rolling window, so every operation costs a few hash lookups however long the history.
//!
//! # Layout
//!
//! * An **account** per mandate: `held`, `spent` (committed, less refunds that restore the
//!   lifetime), `uses` (holds placed and not released), `attempts` (holds ever placed), all in
//!   integer minor units, and one [`Window`] per window length ever seen for the mandate.
//! * A **hold** per attempt: its amounts, its time, and its list of accounts (interned: every
//!   hold of the same chain shares one list; the last few chains are recognised without
//!   hashing). The [`AttemptIndex`] maps attempt ids to holds, sharded and locked apart from
//!   the ledger so its cache misses on millions of ids stay out of the ledger's lock.
//! * A **window** keeps the indices of the holds it still contains, in time order, and the
//!   running sums of their current share (amount and count). It covers `(now - length, now]`:
//!   before it is read or checked at `now`, the holds with `at <= now - length` leave it from the
//!   front (amortised O(1) per hold). Its `cutoff` only moves forward; a hold is inside iff
//!   `at > cutoff`, so resolving or refunding a hold adjusts exactly the windows that still hold
//!   it, in O(levels x windows).
//!
//! Time comes from the callers (`HoldRequest::at`, `usage(now)`): the ledger never reads a
//! clock. If the times given go backwards, nothing that left a window comes back (windows never
//! un-evict), and a hold placed at or before a window's cutoff does not enter that window at
//! all (it is neither checked against it nor counted in it). Holds placed later than `now`
//! count in the windows evaluated at `now` (never negatively).

use std::cmp::Reverse;
use std::collections::hash_map::Entry;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::sync::{Mutex, MutexGuard};

use chrono::{DateTime, Utc};

use crate::adapters::hold_rules::{self, Figures};
use crate::domain::{AttemptId, Currency, LimitKind, MandateId, Money};
use crate::ports::{
    BudgetLimits, HoldError, HoldLevel, HoldOp, HoldRecord, HoldRequest, HoldState, StoreError,
};

/// Longest list of levels a hold may have (the store's chains stop at the same depth).
pub(super) const MAX_LEVELS: usize = 64;

pub(super) use crate::adapters::memory::hash::{fold, SeededState, FOLD_A};

type Index<K> = HashMap<K, u32, SeededState>;

/// Shards of the [`AttemptIndex`] (a power of two).
const SHARDS: usize = 32;

/// Attempt id -> hold index, sharded and locked apart from the ledger: its lookups in a table
/// of millions of entries are cache misses, and they run in parallel here instead of inside
/// the ledger's lock. Each shard is keyed by a keyed 64-bit hash of the id (growing the table
/// then never reads the ids again), with the id kept beside the index to check it.
#[derive(Debug)]
pub(super) struct AttemptIndex {
    state: SeededState,
    shards: [Mutex<Shard>; SHARDS],
}

impl Default for AttemptIndex {
    fn default() -> AttemptIndex {
        let state = SeededState::default();
        AttemptIndex {
            state,
            shards: std::array::from_fn(|_| Mutex::new(Shard::default())),
        }
    }
}

/// A `BuildHasher` for keys that are hashes already.
#[derive(Debug, Clone, Copy, Default)]
struct PreHashed;

impl BuildHasher for PreHashed {
    type Hasher = PassThrough;
    fn build_hasher(&self) -> PassThrough {
        PassThrough(0)
    }
}

/// See [`PreHashed`]: a `u64` passes through; anything else is folded in.
#[derive(Debug, Clone, Copy)]
struct PassThrough(u64);

impl Hasher for PassThrough {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = fold(self.0 ^ u64::from(b), FOLD_A);
        }
    }

    fn write_u64(&mut self, i: u64) {
        self.0 = i;
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// One shard of the [`AttemptIndex`].
#[derive(Debug, Default)]
struct Shard {
    by_hash: HashMap<u64, (AttemptId, u32), PreHashed>,
    /// Ids whose hash another id of the shard has already (practically never used).
    collided: HashMap<AttemptId, u32, SeededState>,
}

impl Shard {
    fn get(&self, hash: u64, id: &AttemptId) -> Option<u32> {
        match self.by_hash.get(&hash) {
            Some((known, index)) if known == id => Some(*index),
            Some(_) => self.collided.get(id).copied(),
            None => None,
        }
    }

    /// See [`AttemptIndex::insert_with`].
    fn insert_with<E>(
        &mut self,
        hash: u64,
        id: &AttemptId,
        place: impl FnOnce() -> Result<u32, E>,
    ) -> Option<Result<u32, E>> {
        let Shard { by_hash, collided } = self;
        match by_hash.entry(hash) {
            Entry::Occupied(o) if o.get().0 == *id => None,
            Entry::Occupied(_) => match collided.entry(id.clone()) {
                Entry::Occupied(_) => None,
                Entry::Vacant(v) => {
                    let placed = place();
                    if let Ok(index) = placed {
                        v.insert(index);
                    }
                    Some(placed)
                }
            },
            Entry::Vacant(v) => {
                let placed = place();
                if let Ok(index) = placed {
                    v.insert((id.clone(), index));
                }
                Some(placed)
            }
        }
    }
}

impl AttemptIndex {
    fn shard(&self, id: &AttemptId) -> (u64, MutexGuard<'_, Shard>) {
        let hash = self.state.hash_one(id);
        // Bits the tables' own bucket and tag bits hardly use.
        let i = (hash >> 40) as usize % SHARDS;
        (
            hash,
            self.shards[i].lock().unwrap_or_else(|e| e.into_inner()),
        )
    }

    /// Places a hold for `id` with `place` (run while the shard of `id` is locked, after the
    /// table was probed, so the ledger's lock never waits on that probe) and records the index
    /// it returns; `None` if `id` already has a hold. Lock order: shard, then ledger.
    pub(super) fn insert_with<E>(
        &self,
        id: &AttemptId,
        place: impl FnOnce() -> Result<u32, E>,
    ) -> Option<Result<u32, E>> {
        let (hash, mut shard) = self.shard(id);
        shard.insert_with(hash, id, place)
    }

    /// The hold index of `id`.
    pub(super) fn get(&self, id: &AttemptId) -> Option<u32> {
        let (hash, shard) = self.shard(id);
        shard.get(hash, id)
    }
}

/// A point in time as a totally ordered integer pair (cheap to compare and to shift).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Stamp {
    secs: i64,
    nanos: u32,
}

impl Stamp {
    fn of(t: DateTime<Utc>) -> Stamp {
        Stamp {
            secs: t.timestamp(),
            nanos: t.timestamp_subsec_nanos(),
        }
    }

    /// `self - seconds`; `None` when that is before any representable time.
    fn minus(self, seconds: u64) -> Option<Stamp> {
        let s = i64::try_from(seconds).ok()?;
        Some(Stamp {
            secs: self.secs.checked_sub(s)?,
            nanos: self.nanos,
        })
    }

    fn to_datetime(self) -> Option<DateTime<Utc>> {
        DateTime::from_timestamp(self.secs, self.nanos)
    }
}

/// One hold, in minor units of its currency.
#[derive(Debug, Clone)]
struct Hold {
    chain: u32,
    at: Stamp,
    currency: Currency,
    amount: i64,
    committed: i64,
    refunded: i64,
    /// Refunds that gave window headroom back.
    window_restored: i64,
    state: HoldState,
}

impl Hold {
    /// What the hold counts for in a window that contains it: (amount, count).
    fn window_share(&self) -> (i128, i64) {
        match self.state {
            HoldState::Held => (i128::from(self.amount), 1),
            HoldState::Committed if self.committed == 0 => (0, 0),
            HoldState::Committed => (i128::from(self.committed - self.window_restored), 1),
            HoldState::Released => (0, 0),
        }
    }
}

/// How far back from the newest entry an out-of-order hold is slotted into the time-ordered
/// queue; a hold older than that goes to the straggler heap.
const NEAR: usize = 32;

/// A rolling window of one account.
#[derive(Debug, Clone)]
struct Window {
    seconds: u64,
    /// Holds with `at <= cutoff` have left; `None`: nothing has left yet.
    cutoff: Option<Stamp>,
    /// Holds inside (`at > cutoff`), in time order.
    entries: VecDeque<u32>,
    /// Holds inside that arrived far out of time order (times given by callers whose clocks
    /// disagree), in a min-heap by time: O(log n) instead of a long shift of the queue.
    stragglers: BinaryHeap<Reverse<(Stamp, u32)>>,
    amount: i128,
    count: i64,
}

impl Window {
    fn empty(seconds: u64) -> Window {
        Window {
            seconds,
            cutoff: None,
            entries: VecDeque::new(),
            stragglers: BinaryHeap::new(),
            amount: 0,
            count: 0,
        }
    }

    fn contains(&self, at: Stamp) -> bool {
        self.cutoff.is_none_or(|c| at > c)
    }

    fn subtract(&mut self, hold: Option<&Hold>) {
        if let Some(h) = hold {
            let (amount, count) = h.window_share();
            self.amount -= amount;
            self.count -= count;
        }
    }

    /// Lets the holds with `at <= now - seconds` leave.
    fn evict(&mut self, now: Stamp, holds: &[Hold]) {
        let Some(cut) = now.minus(self.seconds) else {
            return;
        };
        if self.cutoff.is_some_and(|c| c >= cut) {
            return;
        }
        self.cutoff = Some(cut);
        while let Some(&i) = self.entries.front() {
            let hold = holds.get(i as usize);
            if hold.is_some_and(|h| h.at > cut) {
                break;
            }
            self.subtract(hold);
            self.entries.pop_front();
        }
        while let Some(&Reverse((at, i))) = self.stragglers.peek() {
            if at > cut {
                break;
            }
            self.subtract(holds.get(i as usize));
            self.stragglers.pop();
        }
    }

    /// Adds hold `index` (inside the window): appended, slotted in near the end, or kept as a
    /// straggler.
    fn insert(&mut self, index: u32, at: Stamp, holds: &[Hold]) {
        let later = |i: u32| holds.get(i as usize).is_some_and(|h| h.at > at);
        let mut pos = self.entries.len();
        let mut steps = 0;
        while pos > 0 && self.entries.get(pos - 1).is_some_and(|&i| later(i)) {
            if steps == NEAR {
                self.stragglers.push(Reverse((at, index)));
                return;
            }
            pos -= 1;
            steps += 1;
        }
        self.entries.insert(pos, index);
    }
}

/// The counters of one mandate.
#[derive(Debug, Clone)]
struct Account {
    mandate_id: MandateId,
    currency: Currency,
    held: i128,
    spent: i128,
    uses: i64,
    attempts: i64,
    windows: Vec<Window>,
}

/// Usage of one level in raw integers, turned into a [`crate::domain::Usage`] outside the lock.
#[derive(Debug, Clone, Copy)]
pub(super) struct RawUsage {
    pub currency: Currency,
    pub held: i128,
    pub spent: i128,
    pub uses: i64,
    pub attempts: i64,
    /// Range of this level's windows in the [`RawWindow`] buffer.
    pub windows: (usize, usize),
}

/// One window of a [`RawUsage`].
#[derive(Debug, Clone, Copy)]
pub(super) struct RawWindow {
    pub seconds: u64,
    pub amount: i128,
    pub count: i64,
}

/// Output buffers of a ledger read, allocated before the lock is taken.
#[derive(Debug, Default)]
pub(super) struct RawOut {
    pub levels: Vec<RawUsage>,
    pub windows: Vec<RawWindow>,
}

/// The ledger. Not synchronised: the store keeps it behind a mutex.
#[derive(Default)]
pub(super) struct Ledger {
    accounts: Vec<Account>,
    account_index: Index<MandateId>,
    chains: Vec<Box<[u32]>>,
    chain_index: Index<Box<[u32]>>,
    holds: Vec<Hold>,
    /// Recently used chains, to skip hashing every level of a hold on a hot chain.
    recent: Vec<RecentChain>,
    recent_next: usize,
}

/// How many recent chains [`Ledger::resolve`] remembers.
const RECENT: usize = 8;

/// A chain resolved before: its mandate ids (leaf first) and its interned id.
#[derive(Debug, Clone)]
struct RecentChain {
    ids: Vec<MandateId>,
    chain: u32,
}

impl fmt::Debug for Ledger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ledger")
            .field("accounts", &self.accounts.len())
            .field("holds", &self.holds.len())
            .finish()
    }
}

/// A plain message as a boxed error, for [`StoreError::Other`].
#[derive(Debug)]
struct LedgerError(String);

impl fmt::Display for LedgerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for LedgerError {}

fn other(message: String) -> StoreError {
    StoreError::Other(Box::new(LedgerError(message)))
}

/// `minor` units of `currency` as text, like `Money`'s `Display` (`"100.01 EUR"`).
pub(super) fn minor_text(minor: i128, currency: Currency) -> String {
    currency.format_minor(minor)
}

/// `minor` units as `Money`, clamped into the representable range (0 to 10^15 major units).
pub(super) fn money(minor: i128, currency: Currency) -> Money {
    Money::from_minor_saturating(minor, currency)
}

/// A counter as `Usage` reports it (saturating).
pub(super) fn count(v: i64) -> u32 {
    u32::try_from(v.max(0)).unwrap_or(u32::MAX)
}

impl Ledger {
    fn refused(
        mandate_id: &MandateId,
        limit: Option<LimitKind>,
        counter: Option<&'static str>,
        would_be: String,
        max: String,
    ) -> HoldError {
        HoldError::Refused {
            mandate_id: mandate_id.clone(),
            limit,
            counter,
            would_be,
            max,
        }
    }

    /// The account of `mandate_id`, created on first use with the mandate's currency if the
    /// store knows it (`known`), else the currency of its limits, else `fallback`.
    fn account_for(
        &mut self,
        mandate_id: &MandateId,
        limits: &BudgetLimits,
        fallback: Currency,
        known: &mut dyn FnMut(&MandateId) -> Option<Currency>,
    ) -> Result<u32, StoreError> {
        if let Some(&i) = self.account_index.get(mandate_id) {
            return Ok(i);
        }
        let index = u32::try_from(self.accounts.len())
            .map_err(|_| other("the memory ledger is full (2^32 mandates)".into()))?;
        let currency = known(mandate_id)
            .or_else(|| limits.lifetime.map(|m| m.currency()))
            .or_else(|| {
                limits
                    .windows
                    .iter()
                    .find_map(|w| w.max_amount.map(|m| m.currency()))
            })
            .unwrap_or(fallback);
        self.accounts.push(Account {
            mandate_id: mandate_id.clone(),
            currency,
            held: 0,
            spent: 0,
            uses: 0,
            attempts: 0,
            windows: Vec::new(),
        });
        self.account_index.insert(mandate_id.clone(), index);
        Ok(index)
    }

    /// Makes sure account `a` tracks a window of `seconds`. A window first seen for a mandate
    /// that already has holds is built from history at `now` (a scan, once per window length).
    fn ensure_window(&mut self, a: u32, seconds: u64, now: Stamp) {
        let Some(account) = self.accounts.get(a as usize) else {
            return;
        };
        if account.windows.iter().any(|w| w.seconds == seconds) {
            return;
        }
        let mut window = Window::empty(seconds);
        if account.attempts > 0 {
            window.cutoff = now.minus(seconds);
            let mut inside: Vec<(Stamp, u32)> = Vec::new();
            for (i, h) in self.holds.iter().enumerate() {
                let member = self
                    .chains
                    .get(h.chain as usize)
                    .is_some_and(|c| c.contains(&a));
                if member && window.contains(h.at) {
                    let (amount, count) = h.window_share();
                    window.amount += amount;
                    window.count += count;
                    inside.push((h.at, u32::try_from(i).unwrap_or(u32::MAX)));
                }
            }
            inside.sort_unstable();
            window.entries = inside.into_iter().map(|(_, i)| i).collect();
        }
        if let Some(account) = self.accounts.get_mut(a as usize) {
            account.windows.push(window);
        }
    }

    /// Lets every window of account `a` move to `now`.
    fn evict_all(&mut self, a: u32, now: Stamp) {
        let Ledger {
            accounts, holds, ..
        } = self;
        if let Some(account) = accounts.get_mut(a as usize) {
            for w in &mut account.windows {
                w.evict(now, holds);
            }
        }
    }

    /// Appends the usage of account `a` (or zero, for `None`) with the windows of `limits`.
    fn report(
        &self,
        a: Option<u32>,
        currency: Currency,
        windows: &[crate::domain::WindowLimit],
        out: &mut RawOut,
    ) {
        let account = a.and_then(|a| self.accounts.get(a as usize));
        let start = out.windows.len();
        for (i, limit) in windows.iter().enumerate() {
            if windows[..i]
                .iter()
                .any(|w| w.window_seconds == limit.window_seconds)
            {
                continue;
            }
            let w = account.and_then(|acc| {
                acc.windows
                    .iter()
                    .find(|w| w.seconds == limit.window_seconds)
            });
            out.windows.push(RawWindow {
                seconds: limit.window_seconds,
                amount: w.map_or(0, |w| w.amount),
                count: w.map_or(0, |w| w.count),
            });
        }
        let end = out.windows.len();
        out.levels.push(match account {
            Some(acc) => RawUsage {
                currency: acc.currency,
                held: acc.held,
                spent: acc.spent,
                uses: acc.uses,
                attempts: acc.attempts,
                windows: (start, end),
            },
            None => RawUsage {
                currency,
                held: 0,
                spent: 0,
                uses: 0,
                attempts: 0,
                windows: (start, end),
            },
        });
    }

    /// Places `req` on every level or on none; on success `out` holds the usage of each level
    /// after the hold. `levels` is a scratch buffer (its capacity is reused).
    /// Places `req` on every level or on none; on success returns the hold's index and `out`
    /// holds the usage of each level after the hold. `levels` is a scratch buffer. The caller
    /// records the index in the [`AttemptIndex`] (which also refuses duplicates).
    pub(super) fn place(
        &mut self,
        req: &HoldRequest,
        known: &mut dyn FnMut(&MandateId) -> Option<Currency>,
        levels: &mut Vec<u32>,
        out: &mut RawOut,
    ) -> Result<u32, HoldError> {
        if req.levels.len() > MAX_LEVELS {
            return Err(other(format!(
                "a hold may list at most {MAX_LEVELS} levels, {} given",
                req.levels.len()
            ))
            .into());
        }
        let index = u32::try_from(self.holds.len())
            .ok()
            .filter(|&i| i < u32::MAX)
            .ok_or_else(|| other("the memory ledger is full (2^32 holds)".into()))?;
        self.try_place(req, index, known, levels, out)?;
        Ok(index)
    }

    fn try_place(
        &mut self,
        req: &HoldRequest,
        index: u32,
        known: &mut dyn FnMut(&MandateId) -> Option<Currency>,
        levels: &mut Vec<u32>,
        out: &mut RawOut,
    ) -> Result<(), HoldError> {
        let currency = req.amount.currency();
        let amount = i128::from(req.amount.minor_units());
        let at = Stamp::of(req.at);
        let chain = self.resolve(req, currency, known, levels)?;
        for (level, &a) in req.levels.iter().zip(levels.iter()) {
            self.check_level(level, a, currency, amount, at)?;
        }
        // Every level accepts: apply.
        self.holds.push(Hold {
            chain,
            at,
            currency,
            amount: req.amount.minor_units(),
            committed: 0,
            refunded: 0,
            window_restored: 0,
            state: HoldState::Held,
        });
        let Ledger {
            accounts, holds, ..
        } = self;
        for &a in levels.iter() {
            if let Some(acc) = accounts.get_mut(a as usize) {
                acc.held += amount;
                acc.uses += 1;
                acc.attempts += 1;
                for w in &mut acc.windows {
                    if w.contains(at) {
                        w.insert(index, at, holds);
                        w.amount += amount;
                        w.count += 1;
                    }
                }
            }
        }
        for (level, &a) in req.levels.iter().zip(levels.iter()) {
            self.report(Some(a), currency, &level.limits.windows, out);
        }
        Ok(())
    }

    /// The accounts of the request's levels (into `levels`) and the id of their chain: from
    /// the cache of recent chains (no hashing), or looked up, created and interned.
    fn resolve(
        &mut self,
        req: &HoldRequest,
        currency: Currency,
        known: &mut dyn FnMut(&MandateId) -> Option<Currency>,
        levels: &mut Vec<u32>,
    ) -> Result<u32, StoreError> {
        levels.clear();
        let hit = self.recent.iter().find(|c| {
            c.ids.len() == req.levels.len()
                && c.ids
                    .iter()
                    .zip(&req.levels)
                    .all(|(id, l)| *id == l.mandate_id)
        });
        if let Some(c) = hit
            && let Some(accounts) = self.chains.get(c.chain as usize)
        {
            levels.extend_from_slice(accounts);
            return Ok(c.chain);
        }
        for level in &req.levels {
            let a = self.account_for(&level.mandate_id, &level.limits, currency, known)?;
            if levels.contains(&a) {
                return Err(other(format!(
                    "a hold lists mandate {} twice",
                    level.mandate_id
                )));
            }
            levels.push(a);
        }
        let chain = self.intern_chain(levels)?;
        let entry = RecentChain {
            ids: req.levels.iter().map(|l| l.mandate_id.clone()).collect(),
            chain,
        };
        if self.recent.len() < RECENT {
            self.recent.push(entry);
        } else if let Some(slot) = self.recent.get_mut(self.recent_next % RECENT) {
            *slot = entry;
        }
        self.recent_next = self.recent_next.wrapping_add(1);
        Ok(chain)
    }

    /// Checks one level (windows moved to `at` first). Order: currency, lifetime, windows in
    /// the order of the limits (amount, then count), uses, attempts.
    fn check_level(
        &mut self,
        level: &HoldLevel,
        a: u32,
        currency: Currency,
        amount: i128,
        at: Stamp,
    ) -> Result<(), HoldError> {
        let limits = &level.limits;
        let id = &level.mandate_id;
        let wrong = |m: &Money| m.currency() != currency;
        let account_currency = self.accounts.get(a as usize).map(|acc| acc.currency);
        if account_currency != Some(currency)
            || limits.lifetime.as_ref().is_some_and(wrong)
            || limits
                .windows
                .iter()
                .any(|w| w.max_amount.as_ref().is_some_and(wrong))
        {
            return Err(HoldError::Currency {
                mandate_id: id.clone(),
                currency: currency.to_string(),
            });
        }
        for w in &limits.windows {
            self.ensure_window(a, w.window_seconds, at);
        }
        self.evict_all(a, at);
        let Some(acc) = self.accounts.get(a as usize) else {
            return Err(other(format!("no ledger account for mandate {id}")).into());
        };
        if let Some(cap) = &limits.lifetime {
            let would_be = acc.spent + acc.held + amount;
            if would_be > i128::from(cap.minor_units()) {
                return Err(Self::refused(
                    id,
                    Some(LimitKind::Lifetime),
                    None,
                    minor_text(would_be, currency),
                    cap.to_string(),
                ));
            }
        }
        for limit in &limits.windows {
            let Some(w) = acc
                .windows
                .iter()
                .find(|w| w.seconds == limit.window_seconds)
            else {
                continue;
            };
            if !w.contains(at) {
                continue;
            }
            if let Some(cap) = &limit.max_amount {
                let would_be = w.amount + amount;
                if would_be > i128::from(cap.minor_units()) {
                    return Err(Self::refused(
                        id,
                        Some(LimitKind::WindowAmount {
                            window_seconds: limit.window_seconds,
                        }),
                        None,
                        minor_text(would_be, currency),
                        cap.to_string(),
                    ));
                }
            }
            if let Some(cap) = limit.max_count {
                let would_be = w.count + 1;
                if would_be > i64::from(cap) {
                    return Err(Self::refused(
                        id,
                        Some(LimitKind::WindowCount {
                            window_seconds: limit.window_seconds,
                        }),
                        None,
                        would_be.to_string(),
                        cap.to_string(),
                    ));
                }
            }
        }
        let counters = [
            ("uses", acc.uses, limits.max_uses),
            ("attempts", acc.attempts, limits.max_attempts),
        ];
        for (name, used, cap) in counters {
            if let Some(cap) = cap
                && used + 1 > i64::from(cap)
            {
                return Err(Self::refused(
                    id,
                    None,
                    Some(name),
                    (used + 1).to_string(),
                    cap.to_string(),
                ));
            }
        }
        Ok(())
    }

    fn intern_chain(&mut self, levels: &[u32]) -> Result<u32, StoreError> {
        if let Some(&c) = self.chain_index.get(levels) {
            return Ok(c);
        }
        let c = u32::try_from(self.chains.len())
            .map_err(|_| other("the memory ledger is full (2^32 chains)".into()))?;
        let boxed: Box<[u32]> = levels.into();
        self.chains.push(boxed.clone());
        self.chain_index.insert(boxed, c);
        Ok(c)
    }

    /// Hold `index` (of `attempt_id`).
    fn find(&self, index: u32, attempt_id: &AttemptId) -> Result<(usize, &Hold), StoreError> {
        self.holds
            .get(index as usize)
            .map(|h| (index as usize, h))
            .ok_or_else(|| StoreError::NotFound {
                entity: "hold",
                id: attempt_id.to_string(),
            })
    }

    /// Applies a change of the hold at `index` to every account of its chain: `held`, `spent`
    /// and `uses` by the deltas; every window that still contains the hold by the window deltas.
    fn adjust(&mut self, index: usize, d: Deltas) {
        let Some(hold) = self.holds.get(index) else {
            return;
        };
        let at = hold.at;
        let Some(chain) = self.chains.get(hold.chain as usize) else {
            return;
        };
        for &a in chain.iter() {
            if let Some(acc) = self.accounts.get_mut(a as usize) {
                acc.held += d.held;
                acc.spent += d.spent;
                acc.uses += d.uses;
                for w in &mut acc.windows {
                    if w.contains(at) {
                        w.amount += d.window_amount;
                        w.count += d.window_count;
                    }
                }
            }
        }
    }

    /// Commits, releases or refunds the hold at `index` by the shared rules
    /// ([`crate::adapters::hold_rules::resolve`]), then moves the chain's counters and every
    /// window that still contains the hold.
    pub(super) fn resolve_hold(
        &mut self,
        index: u32,
        attempt_id: &AttemptId,
        op: HoldOp,
    ) -> Result<(), StoreError> {
        let (index, hold) = self.find(index, attempt_id)?;
        let figures = Figures {
            state: hold.state,
            currency: hold.currency,
            amount: hold.amount,
            committed: hold.committed,
            refunded: hold.refunded,
            // Lifetime refunds live in the accounts' `spent` only.
            lifetime_back: 0,
            window_back: hold.window_restored,
        };
        let r = hold_rules::resolve(attempt_id, &figures, op)?;
        self.adjust(
            index,
            Deltas {
                held: i128::from(r.held),
                spent: i128::from(r.spent),
                uses: r.uses,
                window_amount: i128::from(r.window_amount),
                window_count: r.window_count,
            },
        );
        if let Some(h) = self.holds.get_mut(index) {
            h.state = r.next.state;
            h.committed = r.next.committed;
            h.refunded = r.next.refunded;
            h.window_restored = r.next.window_back;
        }
        Ok(())
    }

    /// The record of a hold.
    pub(super) fn record(
        &self,
        index: u32,
        attempt_id: &AttemptId,
    ) -> Result<Option<HoldRecord>, StoreError> {
        let corrupt = |message: &str| StoreError::Corrupt {
            table: "holds",
            key: attempt_id.to_string(),
            message: message.to_string(),
        };
        let hold = self
            .holds
            .get(index as usize)
            .ok_or_else(|| corrupt("the hold index points nowhere"))?;
        let chain = self
            .chains
            .get(hold.chain as usize)
            .ok_or_else(|| corrupt("the hold's chain is missing"))?;
        let mandate_ids = chain
            .iter()
            .map(|&a| {
                self.accounts
                    .get(a as usize)
                    .map(|acc| acc.mandate_id.clone())
                    .ok_or_else(|| corrupt("an account of the hold is missing"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let m = |minor: i64| {
            Money::from_minor(minor, hold.currency).map_err(|e| corrupt(&e.to_string()))
        };
        Ok(Some(HoldRecord {
            attempt_id: attempt_id.clone(),
            mandate_ids,
            amount: m(hold.amount)?,
            committed: m(hold.committed)?,
            refunded: m(hold.refunded)?,
            at: hold
                .at
                .to_datetime()
                .ok_or_else(|| corrupt("the hold's time is out of range"))?,
            state: hold.state,
        }))
    }

    /// Usage of `mandate` at `now` with every window of its limits, appended to `out`.
    pub(super) fn usage_of(
        &mut self,
        mandate: &crate::domain::Mandate,
        now: DateTime<Utc>,
        out: &mut RawOut,
    ) -> Result<(), StoreError> {
        let windows = &mandate.scope().budgets.windows;
        let currency = mandate.currency();
        let Some(&a) = self.account_index.get(mandate.id()) else {
            self.report(None, currency, windows, out);
            return Ok(());
        };
        if self.accounts.get(a as usize).map(|acc| acc.currency) != Some(currency) {
            return Err(StoreError::Corrupt {
                table: "ledger",
                key: mandate.id().to_string(),
                message: format!("the mandate's holds are not in its currency {currency}"),
            });
        }
        let now = Stamp::of(now);
        for w in windows {
            self.ensure_window(a, w.window_seconds, now);
        }
        self.evict_all(a, now);
        self.report(Some(a), currency, windows, out);
        Ok(())
    }
}

/// Changes to an account's counters (see [`Ledger::adjust`]).
#[derive(Debug, Clone, Copy)]
struct Deltas {
    held: i128,
    spent: i128,
    uses: i64,
    window_amount: i128,
    window_count: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(text: &str) -> AttemptId {
        AttemptId::new(text).unwrap()
    }

    /// Two ids with the same 64-bit hash are both indexed, each found and refused again.
    #[test]
    fn colliding_attempt_hashes_are_told_apart() {
        let mut shard = Shard::default();
        let (a, b) = (id("attempt_a"), id("attempt_b"));
        assert_eq!(shard.insert_with(7, &a, || Ok::<u32, ()>(1)), Some(Ok(1)));
        assert_eq!(shard.insert_with(7, &b, || Ok::<u32, ()>(2)), Some(Ok(2)));
        assert_eq!((shard.get(7, &a), shard.get(7, &b)), (Some(1), Some(2)));
        assert_eq!(shard.insert_with(7, &a, || Ok::<u32, ()>(3)), None);
        assert_eq!(shard.insert_with(7, &b, || Ok::<u32, ()>(3)), None);
        assert_eq!(shard.get(7, &id("attempt_c")), None);
        assert_eq!(shard.get(8, &a), None);
        // A refused placement records nothing.
        let c = id("attempt_c");
        assert_eq!(
            shard.insert_with(7, &c, || Err::<u32, ()>(())),
            Some(Err(()))
        );
        assert_eq!(shard.get(7, &c), None);
        assert_eq!(
            shard.insert_with(9, &c, || Err::<u32, ()>(())),
            Some(Err(()))
        );
        assert_eq!(shard.get(9, &c), None);
    }

    #[test]
    fn minor_text_matches_money_display() {
        for (minor, currency) in [
            (0, Currency::EUR),
            (5, Currency::EUR),
            (12_900, Currency::EUR),
            (129, Currency::JPY),
            (1_500, Currency::BHD),
        ] {
            let m = Money::from_minor(minor, currency).unwrap();
            assert_eq!(minor_text(i128::from(minor), currency), m.to_string());
        }
    }

    #[test]
    fn money_clamps_into_range() {
        assert!(money(-5, Currency::EUR).is_zero());
        let max = Money::parse("1000000000000000", Currency::EUR).unwrap();
        assert_eq!(money(i128::MAX, Currency::EUR), max);
        assert_eq!(
            money(250, Currency::EUR),
            Money::parse("2.50", Currency::EUR).unwrap()
        );
    }
}
