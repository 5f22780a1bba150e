//! The budget ledger of [`PostgresStore`].
//!
//! # Tables
//!
//! * `accounts`: one row per mandate with `held`, `spent` (committed, less refunds that
//!   restore the lifetime), `uses` (holds that are held or committed for more than zero) and
//!   `attempts` (holds ever placed), kept incrementally by every write below.
//! * `holds`: one row per attempt (amounts, time, state, its mandates leaf first).
//! * `hold_levels`: one row per (mandate, hold), keyed `(mandate_id, at_ns, attempt_id)`, so a
//!   window of a mandate is a range scan.
//!
//! # Locking (I2, no deadlock)
//!
//! Every write locks the `accounts` rows of the chain it touches first, all of them, with one
//! `SELECT .. WHERE mandate_id = ANY($1) ORDER BY mandate_id FOR UPDATE`: one global order
//! (by mandate id), so no two transactions can each hold a row the other waits for. Missing
//! account rows are first created with one `INSERT .. ON CONFLICT DO NOTHING` in the same
//! order (a concurrent insert of the same row waits for the first, in that order too). Only
//! then does a write read or lock its `holds` row. Under those locks:
//!
//! * `place_hold` reads the window sums (statements run after the locks see every hold
//!   committed before), checks every level, then inserts the hold and adds to the counters;
//! * `commit_hold`, `release_hold` and `refund_hold` (in `holds.rs`) lock the hold, check its
//!   state and move the counters.
//!
//! A hold of a mandate can only change while its account row is locked, so the checks of a
//! `place_hold` see exactly the state its writes apply to: there is no window between check
//! and write in which another hold could slip in (no overspend), and every hold that was
//! accepted is counted (none lost).

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use tokio_postgres::ToStatement;
use tokio_postgres::{GenericClient, IsolationLevel, Row};

use super::codec::{encode, report, report_count, time_param, window_start, At};
use super::idempotency::{check_fence_in, FenceLock};
use super::store::PostgresStore;
use super::tx::{in_transaction, Tx};
use crate::domain::{
    Currency, LimitKind, Mandate, MandateId, Money, Usage, WindowLimit, WindowUsage,
};
use crate::ports::{BudgetLimits, HoldError, HoldRequest, StoreError};

/// Most levels a hold may list (as the memory store).
pub(super) const MAX_LEVELS: usize = 64;

/// The counters of one mandate, in minor units.
#[derive(Debug, Clone, Copy)]
pub(super) struct Account {
    pub(super) currency: Currency,
    pub(super) held: i128,
    pub(super) spent: i128,
    pub(super) uses: i64,
    pub(super) attempts: i64,
}

/// A window of one account: (amount, count) of the holds inside.
pub(super) type Sums = (i128, i64);

/// One window sum to read: a mandate, the start of its window (exclusive; `None`: all time),
/// the account's currency.
struct WindowQuery {
    mandate_id: String,
    start: Option<Decimal>,
    currency: &'static str,
}

pub(super) const LOCK_ACCOUNTS: &str = "SELECT mandate_id, currency, held, spent, uses, attempts \
     FROM accounts WHERE mandate_id = ANY($1) ORDER BY mandate_id FOR UPDATE";

pub(super) const READ_ACCOUNTS: &str = "SELECT mandate_id, currency, held, spent, uses, attempts \
     FROM accounts WHERE mandate_id = ANY($1)";

/// The amount a window counts of the holds `h` it reads: a held hold's amount, a committed
/// hold's committed amount less what went back to the window. One text for every statement
/// that sums a window (the ledger's, the payment's first round, the decision's inputs).
macro_rules! window_amount {
    () => {
        "COALESCE(SUM(CASE WHEN h.state = 'held' THEN h.amount \
                          WHEN h.state = 'committed' AND h.committed > 0 \
                            THEN h.committed - h.window_back \
                          ELSE 0 END), 0)::numeric AS amount"
    };
}

/// The first hold `h` read for a window that the ledger could not have written (an unknown
/// state, negative or inconsistent amounts, another currency than `$currency`, the column
/// of its account): reported as corrupt, never summed. One text for every window sum.
macro_rules! bad_hold {
    ($currency:literal) => {
        concat!(
            "MIN(h.attempt_id) FILTER (WHERE h.state NOT IN ('held', 'committed', 'released') \
               OR h.amount < 0 OR h.committed < 0 OR h.committed > h.amount \
               OR h.window_back < 0 OR h.window_back > h.committed \
               OR h.currency <> ",
            $currency,
            ") AS bad"
        )
    };
}
pub(super) use {bad_hold, window_amount};

/// Window sums by range scan, with a check of every hold it reads: a hold that is not one the
/// ledger could have written (unknown state, negative or inconsistent amounts, another
/// currency than its account, a level row without its hold) is reported, never summed.
pub(super) const WINDOW_SUMS: &str = concat!(
    "SELECT w.i, ",
    window_amount!(),
    ", COUNT(*) FILTER (WHERE h.state = 'held' OR (h.state = 'committed' AND h.committed > 0)) \
       AS count, \
     MIN(hl.attempt_id) FILTER (WHERE hl.attempt_id IS NOT NULL AND h.attempt_id IS NULL) \
       AS orphan, ",
    bad_hold!("w.currency"),
    " FROM unnest($1::text[], $2::numeric[], $3::text[]) WITH ORDINALITY \
       AS w(mandate_id, start_ns, currency, i) \
     LEFT JOIN hold_levels hl ON hl.mandate_id = w.mandate_id \
       AND (w.start_ns IS NULL OR hl.at_ns > w.start_ns) \
     LEFT JOIN holds h ON h.attempt_id = hl.attempt_id \
     GROUP BY w.i ORDER BY w.i"
);

pub(super) fn account_of(row: &Row) -> Result<(String, Account), StoreError> {
    let id: String = row
        .try_get("mandate_id")
        .map_err(|e| StoreError::Other(Box::new(e)))?;
    let at = At {
        table: "accounts",
        key: &id,
    };
    let currency = at.currency(&at.get::<String>(row, "currency")?)?;
    let account = Account {
        currency,
        held: at.total("held", at.get(row, "held")?)?,
        spent: at.total("spent", at.get(row, "spent")?)?,
        uses: at.count("uses", at.get(row, "uses")?)?,
        attempts: at.count("attempts", at.get(row, "attempts")?)?,
    };
    Ok((id, account))
}

/// The accounts of `ids`, read (`statement` locks them or not).
pub(super) async fn accounts<C, S>(
    client: &C,
    statement: &S,
    ids: &[&str],
) -> Result<HashMap<String, Account>, Tx<StoreError>>
where
    C: GenericClient + Sync,
    S: ?Sized + ToStatement + Sync + Send,
{
    let rows = client.query(statement, &[&ids]).await?;
    let mut out = HashMap::with_capacity(rows.len());
    for row in &rows {
        let (id, account) = account_of(row).map_err(Tx::Fail)?;
        out.insert(id, account);
    }
    Ok(out)
}

/// The sums of `queries`, in order.
async fn window_sums<C: GenericClient + Sync>(
    client: &C,
    statement: &tokio_postgres::Statement,
    queries: &[WindowQuery],
) -> Result<Vec<Sums>, Tx<StoreError>> {
    if queries.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<&str> = queries.iter().map(|q| q.mandate_id.as_str()).collect();
    let starts: Vec<Option<Decimal>> = queries.iter().map(|q| q.start).collect();
    let currencies: Vec<&str> = queries.iter().map(|q| q.currency).collect();
    let rows = client
        .query(statement, &[&ids, &starts, &currencies])
        .await?;
    let mut out = Vec::with_capacity(rows.len());
    for (row, q) in rows.iter().zip(queries) {
        out.push(window_checked(row, &q.mandate_id).map_err(Tx::Fail)?);
    }
    if out.len() != queries.len() {
        return Err(Tx::Fail(StoreError::Other(
            "postgres: the window sums came back incomplete".into(),
        )));
    }
    Ok(out)
}

/// The sums of one window row (`amount`, `count`, `orphan`, `bad` columns) of mandate
/// `mandate_id`: a hold that is not one the ledger could have written is reported, never
/// summed.
pub(super) fn window_checked(row: &Row, mandate_id: &str) -> Result<Sums, StoreError> {
    let at = At {
        table: "accounts",
        key: mandate_id,
    };
    let orphan: Option<String> = at.get(row, "orphan")?;
    if let Some(attempt) = orphan {
        return Err(super::codec::corrupt(
            "hold_levels",
            &format!("{mandate_id}/{attempt}"),
            "a level of a hold that does not exist",
        ));
    }
    let bad: Option<String> = at.get(row, "bad")?;
    if let Some(attempt) = bad {
        return Err(super::codec::corrupt(
            "holds",
            &attempt,
            format!(
                "not a hold the ledger wrote for mandate {mandate_id} (state, amounts or currency)"
            ),
        ));
    }
    let amount = at.total("window amount", at.get(row, "amount")?)?;
    let count = at.count("window count", at.get(row, "count")?)?;
    Ok((amount, count))
}

/// The usage of `m` from its account (none yet: all zero) and its windows' sums.
pub(super) fn usage_report(
    m: &Mandate,
    account: Option<Account>,
    windows: &[(u64, Sums)],
) -> Usage {
    let currency = m.currency();
    let account = account.unwrap_or(Account {
        currency,
        held: 0,
        spent: 0,
        uses: 0,
        attempts: 0,
    });
    usage_of(m.id(), &account, windows, currency)
}

/// The window lengths of `windows`, each once, in order.
pub(super) fn distinct_seconds(windows: &[WindowLimit]) -> Vec<u64> {
    let mut out: Vec<u64> = Vec::with_capacity(windows.len());
    for w in windows {
        if !out.contains(&w.window_seconds) {
            out.push(w.window_seconds);
        }
    }
    out
}

/// The currency of a level's money limits, if it has any.
pub(super) fn limits_currency(limits: &BudgetLimits) -> Option<Currency> {
    limits.lifetime.map(|m| m.currency()).or_else(|| {
        limits
            .windows
            .iter()
            .find_map(|w| w.max_amount.map(|m| m.currency()))
    })
}

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

pub(super) fn minor_text(minor: i128, currency: Currency) -> String {
    let exp = currency.exponent();
    let abs = minor.unsigned_abs();
    let sign = if minor < 0 { "-" } else { "" };
    if exp == 0 {
        return format!("{sign}{abs} {currency}");
    }
    let unit = 10u128.pow(exp);
    format!(
        "{sign}{}.{:0width$} {currency}",
        abs / unit,
        abs % unit,
        width = exp as usize
    )
}

/// Checks one level: currency, lifetime, windows in the order of the limits (amount, then
/// count), uses, attempts. `sums` holds the sums of the level's distinct window lengths.
pub(super) fn check_level(
    mandate_id: &MandateId,
    limits: &BudgetLimits,
    account: &Account,
    sums: &[(u64, Sums)],
    amount: Money,
) -> Result<(), HoldError> {
    let currency = amount.currency();
    let wrong = |m: &Money| m.currency() != currency;
    if account.currency != currency
        || limits.lifetime.as_ref().is_some_and(wrong)
        || limits
            .windows
            .iter()
            .any(|w| w.max_amount.as_ref().is_some_and(wrong))
    {
        return Err(HoldError::Currency {
            mandate_id: mandate_id.clone(),
            currency: currency.to_string(),
        });
    }
    let amount = i128::from(amount.minor_units());
    if let Some(cap) = &limits.lifetime {
        let would_be = account.spent + account.held + amount;
        if would_be > i128::from(cap.minor_units()) {
            return Err(refused(
                mandate_id,
                Some(LimitKind::Lifetime),
                None,
                minor_text(would_be, currency),
                cap.to_string(),
            ));
        }
    }
    for limit in &limits.windows {
        // A window of zero seconds never contains the hold being placed.
        if limit.window_seconds == 0 {
            continue;
        }
        let Some(&(_, (sum, count))) = sums.iter().find(|(s, _)| *s == limit.window_seconds) else {
            continue;
        };
        if let Some(cap) = &limit.max_amount {
            let would_be = sum + amount;
            if would_be > i128::from(cap.minor_units()) {
                return Err(refused(
                    mandate_id,
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
            let would_be = count + 1;
            if would_be > i64::from(cap) {
                return Err(refused(
                    mandate_id,
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
        ("uses", account.uses, limits.max_uses),
        ("attempts", account.attempts, limits.max_attempts),
    ];
    for (name, used, cap) in counters {
        if let Some(cap) = cap
            && used + 1 > i64::from(cap)
        {
            return Err(refused(
                mandate_id,
                None,
                Some(name),
                (used + 1).to_string(),
                cap.to_string(),
            ));
        }
    }
    Ok(())
}

/// The usage report of one mandate.
fn usage_of(
    mandate_id: &MandateId,
    account: &Account,
    windows: &[(u64, Sums)],
    currency: Currency,
) -> Usage {
    Usage {
        mandate_id: mandate_id.clone(),
        spent: report(account.spent, currency),
        held: report(account.held, currency),
        windows: windows
            .iter()
            .map(|&(seconds, (amount, count))| WindowUsage {
                window_seconds: seconds,
                amount: report(amount, currency),
                count: report_count(count),
            })
            .collect(),
        uses: report_count(account.uses),
        attempts: report_count(account.attempts),
    }
}

pub(super) fn missing_account(mandate_id: &str) -> StoreError {
    super::codec::corrupt(
        "accounts",
        mandate_id,
        "the account of a mandate of the hold is missing",
    )
}

impl PostgresStore {
    pub(super) async fn ledger_usage(
        &self,
        chain: &[Mandate],
        now: DateTime<Utc>,
    ) -> Result<Vec<Usage>, StoreError> {
        in_transaction!(
            &self.pool,
            self.retries,
            IsolationLevel::RepeatableRead,
            StoreError,
            |tx| {
                let read = tx.prepare_cached(READ_ACCOUNTS).await?;
                let sums = tx.prepare_cached(WINDOW_SUMS).await?;
                usage_in(&*tx, &read, &sums, chain, now).await?
            }
        )
    }

    pub(super) async fn ledger_place(&self, hold: &HoldRequest) -> Result<Vec<Usage>, HoldError> {
        in_transaction!(
            &self.pool,
            self.retries,
            IsolationLevel::ReadCommitted,
            HoldError,
            |tx| { place_in(&tx, hold).await? }
        )
    }
}

/// A store failure of a ledger read, inside a hold's transaction.
fn to_hold(e: Tx<StoreError>) -> Tx<HoldError> {
    match e {
        Tx::Pg(e) => Tx::Pg(e),
        Tx::CommitUnknown(e) => Tx::CommitUnknown(e),
        Tx::Fail(e) => Tx::Fail(HoldError::Store(e)),
    }
}

/// Places a hold inside the caller's transaction (READ COMMITTED): see
/// [`PostgresStore::ledger_place`] and the module docs.
pub(super) async fn place_in(
    tx: &deadpool_postgres::Transaction<'_>,
    hold: &HoldRequest,
) -> Result<Vec<Usage>, Tx<HoldError>> {
    let other = |message: String| HoldError::Store(StoreError::Other(message.into()));
    if hold.levels.len() > MAX_LEVELS {
        return Err(Tx::Fail(other(format!(
            "a hold may list at most {MAX_LEVELS} levels, {} given",
            hold.levels.len()
        ))));
    }
    let ids: Vec<&str> = hold.levels.iter().map(|l| l.mandate_id.as_str()).collect();
    let mut sorted = ids.clone();
    sorted.sort_unstable();
    if let Some(w) = sorted.windows(2).find(|w| w[0] == w[1]) {
        return Err(Tx::Fail(other(format!(
            "a hold lists mandate {} twice",
            w[0]
        ))));
    }
    let amount = hold.amount;
    let currency = amount.currency();
    let minor = amount.minor_units();
    let at = time_param(hold.at).map_err(|e| Tx::Fail(e.into()))?;
    let attempt = hold.attempt_id.as_str();
    // The currency a new account takes when the store does not know the mandate.
    let fallback: Vec<&str> = hold
        .levels
        .iter()
        .map(|l| limits_currency(&l.limits).unwrap_or(currency).code())
        .collect();
    let mandate_ids = encode("mandate ids", &ids).map_err(|e| Tx::Fail(e.into()))?;
    let duplicate = || {
        Tx::Fail(HoldError::Duplicate {
            attempt_id: hold.attempt_id.clone(),
        })
    };
    // The fence before anything else: a stale holder places nothing. The record
    // stays locked (`FOR SHARE`) until the commit, so it cannot be taken over in
    // between (idempotency records come first in the lock order).
    if let Some(fence) = &hold.fence {
        check_fence_in(tx, fence, FenceLock::Share)
            .await
            .map_err(to_hold)?;
    }
    // The hold row first: the primary key refuses a second hold for the attempt
    // (a concurrent one waits for this transaction's outcome). Nobody else locks a
    // hold row that is not yet visible, so taking it before the accounts cannot
    // deadlock with a commit or release (accounts, then an existing hold).
    let st = tx
        .prepare_cached(
            "INSERT INTO holds (attempt_id, currency, amount, at_ns, state, \
             mandate_ids) VALUES ($1, $2, $3, $4, 'held', $5) \
             ON CONFLICT (attempt_id) DO NOTHING",
        )
        .await?;
    let n = tx
        .execute(
            &st,
            &[&attempt, &currency.code(), &minor, &at, &mandate_ids],
        )
        .await?;
    if n == 0 {
        return Err(duplicate());
    }
    // Lock the chain's accounts in the global order. On a chain's first hold some
    // are missing: create them (in mandate id order, see the module docs) and lock
    // again. A transaction creates accounts only after it holds every existing one
    // it needs, so the creation cannot close a lock cycle.
    let st = tx.prepare_cached(LOCK_ACCOUNTS).await?;
    let mut locked = accounts(&**tx, &st, &sorted).await.map_err(to_hold)?;
    if locked.len() < sorted.len() {
        let create = tx
            .prepare_cached(
                "INSERT INTO accounts (mandate_id, currency) \
                 SELECT u.id, COALESCE(m.currency, u.currency) \
                 FROM unnest($1::text[], $2::text[]) AS u(id, currency) \
                 LEFT JOIN mandates m ON m.id = u.id \
                 ORDER BY u.id ON CONFLICT (mandate_id) DO NOTHING",
            )
            .await?;
        tx.execute(&create, &[&ids, &fallback]).await?;
        locked = accounts(&**tx, &st, &sorted).await.map_err(to_hold)?;
    }
    let mut levels = Vec::with_capacity(hold.levels.len());
    let mut queries = Vec::new();
    for (level, id) in hold.levels.iter().zip(&ids) {
        let account = *locked
            .get(*id)
            .ok_or_else(|| Tx::Fail(HoldError::Store(missing_account(id))))?;
        let seconds = distinct_seconds(&level.limits.windows);
        for &s in &seconds {
            queries.push(WindowQuery {
                mandate_id: id.to_string(),
                start: window_start(hold.at, s),
                currency: account.currency.code(),
            });
        }
        levels.push((account, seconds));
    }
    let mut sums = window_sums(&**tx, &tx.prepare_cached(WINDOW_SUMS).await?, &queries)
        .await
        .map_err(to_hold)?
        .into_iter();
    let levels: Vec<(Account, Vec<(u64, Sums)>)> = levels
        .into_iter()
        .map(|(account, seconds)| {
            let w = seconds
                .into_iter()
                .map(|s| (s, sums.next().unwrap_or((0, 0))))
                .collect();
            (account, w)
        })
        .collect();
    for (level, (account, windows)) in hold.levels.iter().zip(&levels) {
        check_level(&level.mandate_id, &level.limits, account, windows, amount)
            .map_err(Tx::Fail)?;
    }
    // Every level accepts: write the window rows and the counters (one statement;
    // a refusal above returned an error and the transaction rolls back, the hold
    // row with it).
    if !ids.is_empty() {
        let st = tx
            .prepare_cached(
                "WITH levels AS ( \
                   INSERT INTO hold_levels (mandate_id, at_ns, attempt_id) \
                   SELECT unnest($1::text[]), $3, $4) \
                 UPDATE accounts SET held = held + $2, uses = uses + 1, \
                 attempts = attempts + 1 WHERE mandate_id = ANY($1)",
            )
            .await?;
        tx.execute(&st, &[&ids, &Decimal::from(minor), &at, &attempt])
            .await?;
    }
    Ok(placed_usage(hold, levels))
}

/// The usage of each level after `hold` was placed on `levels` (the accounts and window sums
/// read under the locks, before the hold).
pub(super) fn placed_usage(
    hold: &HoldRequest,
    levels: Vec<(Account, Vec<(u64, Sums)>)>,
) -> Vec<Usage> {
    let delta = i128::from(hold.amount.minor_units());
    hold.levels
        .iter()
        .zip(levels)
        .map(|(level, (mut account, windows))| {
            account.held += delta;
            account.uses += 1;
            account.attempts += 1;
            let windows: Vec<(u64, Sums)> = windows
                .into_iter()
                .map(|(s, (sum, count))| {
                    if s == 0 {
                        (s, (sum, count))
                    } else {
                        (s, (sum + delta, count + 1))
                    }
                })
                .collect();
            usage_of(&level.mandate_id, &account, &windows, account.currency)
        })
        .collect::<Vec<Usage>>()
}

/// The usage of each mandate of `chain` at `now` (see [`PostgresStore::ledger_usage`]), with
/// the prepared statements `read` ([`READ_ACCOUNTS`]) and `sums_statement` (the window sums).
pub(super) async fn usage_in<C: GenericClient + Sync>(
    client: &C,
    read: &tokio_postgres::Statement,
    sums_statement: &tokio_postgres::Statement,
    chain: &[Mandate],
    now: DateTime<Utc>,
) -> Result<Vec<Usage>, Tx<StoreError>> {
    let ids: Vec<&str> = chain.iter().map(|m| m.id().as_str()).collect();
    let found = accounts(client, read, &ids).await?;
    let mut queries = Vec::new();
    let mut plan: Vec<Vec<u64>> = Vec::with_capacity(chain.len());
    for m in chain {
        let seconds = distinct_seconds(&m.scope().budgets.windows);
        if let Some(account) = found.get(m.id().as_str()) {
            if account.currency != m.currency() {
                return Err(Tx::Fail(super::codec::corrupt(
                    "accounts",
                    m.id().as_str(),
                    format!(
                        "the account is in {}, the mandate in {}",
                        account.currency,
                        m.currency()
                    ),
                )));
            }
            for &s in &seconds {
                queries.push(WindowQuery {
                    mandate_id: m.id().to_string(),
                    start: window_start(now, s),
                    currency: account.currency.code(),
                });
            }
        }
        plan.push(seconds);
    }
    let mut sums = window_sums(client, sums_statement, &queries)
        .await?
        .into_iter();
    let mut out = Vec::with_capacity(chain.len());
    for (m, seconds) in chain.iter().zip(plan) {
        let currency = m.currency();
        let account = found.get(m.id().as_str()).copied();
        let windows: Vec<(u64, Sums)> = seconds
            .into_iter()
            .map(|s| {
                let sum = if account.is_some() {
                    sums.next().unwrap_or((0, 0))
                } else {
                    (0, 0)
                };
                (s, sum)
            })
            .collect();
        let account = account.unwrap_or(Account {
            currency,
            held: 0,
            spent: 0,
            uses: 0,
            attempts: 0,
        });
        out.push(usage_of(m.id(), &account, &windows, currency));
    }
    Ok(out)
}
