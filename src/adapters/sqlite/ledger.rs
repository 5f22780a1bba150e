//! The budget ledger in SQL (see the contract in [`crate::ports::Store`]).
//!
//! * `accounts`: per mandate, integer counters kept up to date by every hold operation:
//!   `held`, `spent` (committed less refunds that restore the lifetime), `uses` (holds held, or
//!   committed for more than zero), `attempts` (holds ever placed).
//! * `holds`: one row per attempt with its amounts, time and state.
//! * `hold_levels`: (mandate, time, attempt) for every level of every hold: a window's sums are
//!   a range scan of the mandate's holds inside the window, by primary key.
//!
//! Every function runs inside the caller's `BEGIN IMMEDIATE` transaction, so it sees and
//! changes a consistent ledger while every other writer waits.

use chrono::{DateTime, TimeDelta, Utc};
use rusqlite::{params, Connection, OptionalExtension};

use super::codec::{amount, corrupt, currency, decode, encode, nanos, sql_error, time};
use crate::adapters::hold_rules::{self, Figures};
use crate::domain::{
    AttemptId, Currency, LimitKind, Mandate, MandateId, Money, Usage, WindowLimit, WindowUsage,
};
use crate::ports::{HoldError, HoldOp, HoldRecord, HoldRequest, HoldState, StoreError};

/// Longest list of levels a hold may have (as the memory store).
const MAX_LEVELS: usize = 64;

/// A mandate's counters.
#[derive(Debug, Clone, Copy)]
struct Account {
    currency: Currency,
    held: i64,
    spent: i64,
    uses: i64,
    attempts: i64,
}

fn account(conn: &Connection, id: &MandateId) -> Result<Option<Account>, StoreError> {
    let key = id.as_str();
    let row = conn
        .prepare_cached(
            "SELECT currency, held, spent, uses, attempts FROM accounts WHERE mandate_id = ?1",
        )
        .and_then(|mut s| {
            s.query_row([key], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, i64>(4)?,
                ))
            })
            .optional()
        })
        .map_err(|e| sql_error("accounts", key, e))?;
    let Some((code, held, spent, uses, attempts)) = row else {
        return Ok(None);
    };
    if held < 0 || spent < 0 || uses < 0 || attempts < 0 {
        return Err(corrupt(
            "accounts",
            key,
            format!(
                "negative counter (held {held}, spent {spent}, uses {uses}, attempts {attempts})"
            ),
        ));
    }
    Ok(Some(Account {
        currency: currency("accounts", key, &code)?,
        held,
        spent,
        uses,
        attempts,
    }))
}

/// The amount and count of `mandate`'s holds inside the window of `seconds` ending at `now`:
/// held holds count their amount, committed ones what was committed less refunds that restore
/// windows; released holds and commits of zero count nowhere.
fn window(
    conn: &Connection,
    mandate: &MandateId,
    seconds: u64,
    now: DateTime<Utc>,
) -> Result<(i128, i64), StoreError> {
    let key = mandate.as_str();
    let since = i64::try_from(seconds)
        .ok()
        .and_then(TimeDelta::try_seconds)
        .and_then(|d| now.checked_sub_signed(d))
        .and_then(|t| t.timestamp_nanos_opt())
        .unwrap_or(i64::MIN);
    conn.prepare_cached(
        "SELECT COALESCE(SUM(CASE h.state WHEN 'held' THEN h.amount \
                                          ELSE h.committed - h.window_back END), 0), \
                COUNT(*) \
         FROM hold_levels l JOIN holds h ON h.attempt_id = l.attempt_id \
         WHERE l.mandate_id = ?1 AND l.at > ?2 \
           AND (h.state = 'held' OR (h.state = 'committed' AND h.committed > 0))",
    )
    .and_then(|mut s| {
        s.query_row(params![key, since], |r| {
            Ok((r.get::<_, i64>(0)?, r.get(1)?))
        })
    })
    .map(|(sum, count)| (i128::from(sum), count))
    .map_err(|e| sql_error("holds", key, e))
}

fn count(v: i64) -> u32 {
    u32::try_from(v.max(0)).unwrap_or(u32::MAX)
}

/// Window sums: (length in seconds, (amount, count)).
type WindowSums = Vec<(u64, (i128, i64))>;

/// The usage of `mandate_id` from its account, with `windows` evaluated at `now` (those in
/// `known` are not summed again).
fn report(
    conn: &Connection,
    mandate_id: &MandateId,
    acc: Option<Account>,
    currency: Currency,
    windows: &[WindowLimit],
    now: DateTime<Utc>,
    known: &[(u64, (i128, i64))],
) -> Result<Usage, StoreError> {
    let mut out = Usage::zero(mandate_id.clone(), currency);
    if let Some(acc) = acc {
        out.held = Money::from_minor_saturating(i128::from(acc.held), currency);
        out.spent = Money::from_minor_saturating(i128::from(acc.spent), currency);
        out.uses = count(acc.uses);
        out.attempts = count(acc.attempts);
    }
    for w in windows {
        let seen = known.iter().find(|(s, _)| *s == w.window_seconds);
        let (sum, n) = match (seen, acc) {
            (Some(&(_, sums)), _) => sums,
            (None, Some(_)) => window(conn, mandate_id, w.window_seconds, now)?,
            (None, None) => (0, 0),
        };
        out.windows.push(WindowUsage {
            window_seconds: w.window_seconds,
            amount: Money::from_minor_saturating(sum, currency),
            count: count(n),
        });
    }
    Ok(out)
}

/// Usage of each mandate of `chain` at `now`.
pub(super) fn usage(
    conn: &Connection,
    chain: &[Mandate],
    now: DateTime<Utc>,
) -> Result<Vec<Usage>, StoreError> {
    let mut out = Vec::with_capacity(chain.len());
    for m in chain {
        let acc = account(conn, m.id())?;
        if let Some(a) = acc
            && a.currency != m.currency()
        {
            return Err(corrupt(
                "accounts",
                m.id().as_str(),
                format!(
                    "the mandate's holds are not in its currency {}",
                    m.currency()
                ),
            ));
        }
        out.push(report(
            conn,
            m.id(),
            acc,
            m.currency(),
            &m.scope().budgets.windows,
            now,
            &[],
        )?);
    }
    Ok(out)
}

fn other(message: String) -> StoreError {
    StoreError::Other(message.into())
}

fn refused(
    id: &MandateId,
    limit: Option<LimitKind>,
    counter: Option<&'static str>,
    would_be: String,
    max: String,
) -> HoldError {
    HoldError::Refused {
        mandate_id: id.clone(),
        limit,
        counter,
        would_be,
        max,
    }
}

/// The account of `id`, created with the mandate's currency if the store knows the mandate,
/// else the currency of its limits, else the hold's.
fn account_or_create(
    conn: &Connection,
    id: &MandateId,
    limits: &crate::ports::BudgetLimits,
    fallback: Currency,
) -> Result<Account, StoreError> {
    if let Some(acc) = account(conn, id)? {
        return Ok(acc);
    }
    let key = id.as_str();
    let known: Option<String> = conn
        .prepare_cached("SELECT currency FROM mandates WHERE id = ?1")
        .and_then(|mut s| s.query_row([key], |r| r.get(0)).optional())
        .map_err(|e| sql_error("mandates", key, e))?;
    let cur = match known {
        Some(code) => currency("mandates", key, &code)?,
        None => limits
            .lifetime
            .map(|m| m.currency())
            .or_else(|| {
                limits
                    .windows
                    .iter()
                    .find_map(|w| w.max_amount.map(|m| m.currency()))
            })
            .unwrap_or(fallback),
    };
    conn.prepare_cached(
        "INSERT INTO accounts (mandate_id, currency, held, spent, uses, attempts) \
         VALUES (?1, ?2, 0, 0, 0, 0)",
    )
    .and_then(|mut s| s.execute(params![key, cur.code()]))
    .map_err(|e| sql_error("accounts", key, e))?;
    Ok(Account {
        currency: cur,
        held: 0,
        spent: 0,
        uses: 0,
        attempts: 0,
    })
}

/// Adds a hold of `minor` to the account of `id` (creating the account first if missing) and
/// returns the account after the change. The caller checks the limits against it and rolls
/// the transaction back if one is exceeded.
fn bump(
    conn: &Connection,
    id: &MandateId,
    limits: &crate::ports::BudgetLimits,
    fallback: Currency,
    minor: i64,
) -> Result<Account, StoreError> {
    let key = id.as_str();
    for _ in 0..2 {
        let row = conn
            .prepare_cached(
                "UPDATE accounts SET held = held + ?2, uses = uses + 1, attempts = attempts + 1 \
                 WHERE mandate_id = ?1 RETURNING currency, held, spent, uses, attempts",
            )
            .and_then(|mut s| {
                s.query_row(params![key, minor], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, i64>(2)?,
                        r.get::<_, i64>(3)?,
                        r.get::<_, i64>(4)?,
                    ))
                })
                .optional()
            })
            .map_err(|e| sql_error("accounts", key, e))?;
        match row {
            Some((code, held, spent, uses, attempts)) => {
                if held < 0 || spent < 0 || uses < 0 || attempts < 0 {
                    return Err(corrupt(
                        "accounts",
                        key,
                        format!(
                            "negative counter (held {held}, spent {spent}, uses {uses}, \
                             attempts {attempts})"
                        ),
                    ));
                }
                return Ok(Account {
                    currency: currency("accounts", key, &code)?,
                    held,
                    spent,
                    uses,
                    attempts,
                });
            }
            None => {
                account_or_create(conn, id, limits, fallback)?;
            }
        }
    }
    Err(other(format!(
        "the account of mandate {id} cannot be created"
    )))
}

/// Places `req` on every level or none; returns the usage of each level after the hold.
///
/// One transaction (the caller's): the hold row first (a second hold for the attempt is
/// refused by the primary key), then per level, leaf first: the account's counters are raised
/// and read back in one statement, the limits checked against them (a refusal returns an
/// error and the caller's transaction rolls everything back), the window row written.
pub(super) fn place(conn: &Connection, req: &HoldRequest) -> Result<Vec<Usage>, HoldError> {
    if let Some(fence) = &req.fence {
        super::store::check_fence_in(conn, fence)?;
    }
    let id = req.attempt_id.as_str();
    if req.levels.len() > MAX_LEVELS {
        return Err(other(format!(
            "a hold may list at most {MAX_LEVELS} levels, {} given",
            req.levels.len()
        ))
        .into());
    }
    for (i, l) in req.levels.iter().enumerate() {
        if req.levels[..i].iter().any(|p| p.mandate_id == l.mandate_id) {
            return Err(other(format!("a hold lists mandate {} twice", l.mandate_id)).into());
        }
    }
    let cur = req.amount.currency();
    let minor = req.amount.minor_units();
    let at = nanos(req.at)?;
    let ids: Vec<&str> = req.levels.iter().map(|l| l.mandate_id.as_str()).collect();
    let ids_json = encode("holds", id, &ids)?;
    let inserted = conn
        .prepare_cached(
            "INSERT INTO holds (attempt_id, currency, amount, committed, refunded, lifetime_back, \
                                window_back, at, state, mandate_ids) \
             VALUES (?1, ?2, ?3, 0, 0, 0, 0, ?4, 'held', ?5)",
        )
        .and_then(|mut s| s.execute(params![id, cur.code(), minor, at, ids_json]));
    match inserted {
        Ok(_) => {}
        Err(e) if e.sqlite_error_code() == Some(rusqlite::ErrorCode::ConstraintViolation) => {
            return Err(HoldError::Duplicate {
                attempt_id: req.attempt_id.clone(),
            })
        }
        Err(e) => return Err(sql_error("holds", id, e).into()),
    }
    let mut out = Vec::with_capacity(req.levels.len());
    for level in &req.levels {
        let after = bump(conn, &level.mandate_id, &level.limits, cur, minor)?;
        // The window sums the check read, with this hold added (it is inside every window
        // that ends at its own time): the usage after the hold needs no second scan.
        let known: WindowSums = check(conn, level, &after, cur, minor, req.at)?
            .into_iter()
            .map(|(s, (sum, n))| (s, (sum + i128::from(minor), n + 1)))
            .collect();
        let key = level.mandate_id.as_str();
        conn.prepare_cached(
            "INSERT INTO hold_levels (mandate_id, at, attempt_id) VALUES (?1, ?2, ?3)",
        )
        .and_then(|mut s| s.execute(params![key, at, id]))
        .map_err(|e| sql_error("hold_levels", key, e))?;
        out.push(report(
            conn,
            &level.mandate_id,
            Some(after),
            cur,
            &level.limits.windows,
            req.at,
            &known,
        )?);
    }
    Ok(out)
}

/// Checks one level against its account AFTER the hold was added (`acc`) and its windows
/// before the hold's window row is written. Order: currency, lifetime, windows in the order of
/// the limits (amount, then count), uses, attempts. Returns the window sums it read (before
/// the hold).
fn check(
    conn: &Connection,
    level: &crate::ports::HoldLevel,
    acc: &Account,
    cur: Currency,
    minor: i64,
    at: DateTime<Utc>,
) -> Result<WindowSums, HoldError> {
    let limits = &level.limits;
    let id = &level.mandate_id;
    let wrong = |m: &Money| m.currency() != cur;
    if acc.currency != cur
        || limits.lifetime.as_ref().is_some_and(wrong)
        || limits
            .windows
            .iter()
            .any(|w| w.max_amount.as_ref().is_some_and(wrong))
    {
        return Err(HoldError::Currency {
            mandate_id: id.clone(),
            currency: cur.to_string(),
        });
    }
    let amount = i128::from(minor);
    if let Some(cap) = &limits.lifetime {
        let would_be = i128::from(acc.spent) + i128::from(acc.held);
        if would_be > i128::from(cap.minor_units()) {
            return Err(refused(
                id,
                Some(LimitKind::Lifetime),
                None,
                cur.format_minor(would_be),
                cap.to_string(),
            ));
        }
    }
    let mut sums = Vec::with_capacity(limits.windows.len());
    for limit in &limits.windows {
        if limit.max_amount.is_none() && limit.max_count.is_none() {
            continue;
        }
        let (sum, n) = window(conn, id, limit.window_seconds, at)?;
        sums.push((limit.window_seconds, (sum, n)));
        if let Some(cap) = &limit.max_amount {
            let would_be = sum + amount;
            if would_be > i128::from(cap.minor_units()) {
                return Err(refused(
                    id,
                    Some(LimitKind::WindowAmount {
                        window_seconds: limit.window_seconds,
                    }),
                    None,
                    cur.format_minor(would_be),
                    cap.to_string(),
                ));
            }
        }
        if let Some(cap) = limit.max_count
            && n + 1 > i64::from(cap)
        {
            return Err(refused(
                id,
                Some(LimitKind::WindowCount {
                    window_seconds: limit.window_seconds,
                }),
                None,
                (n + 1).to_string(),
                cap.to_string(),
            ));
        }
    }
    for (name, used, cap) in [
        ("uses", acc.uses, limits.max_uses),
        ("attempts", acc.attempts, limits.max_attempts),
    ] {
        if let Some(cap) = cap
            && used > i64::from(cap)
        {
            return Err(refused(
                id,
                None,
                Some(name),
                used.to_string(),
                cap.to_string(),
            ));
        }
    }
    Ok(sums)
}

/// A hold row: its figures (what the shared rules read) and the mandates it counts against.
struct Hold {
    figures: Figures,
    at: i64,
    mandate_ids: Vec<MandateId>,
}

fn load(conn: &Connection, attempt_id: &AttemptId) -> Result<Option<Hold>, StoreError> {
    let key = attempt_id.as_str();
    let row = conn
        .prepare_cached(
            "SELECT currency, amount, committed, refunded, lifetime_back, window_back, at, \
                    state, mandate_ids \
             FROM holds WHERE attempt_id = ?1",
        )
        .and_then(|mut s| {
            s.query_row([key], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    [
                        r.get::<_, i64>(1)?,
                        r.get::<_, i64>(2)?,
                        r.get::<_, i64>(3)?,
                        r.get::<_, i64>(4)?,
                        r.get::<_, i64>(5)?,
                    ],
                    r.get::<_, i64>(6)?,
                    r.get::<_, String>(7)?,
                    r.get::<_, String>(8)?,
                ))
            })
            .optional()
        })
        .map_err(|e| sql_error("holds", key, e))?;
    let Some((code, amounts, at, state, ids)) = row else {
        return Ok(None);
    };
    let [amount, committed, refunded, lifetime_back, window_back] = amounts;
    if amounts.iter().any(|&a| a < 0)
        || committed > amount
        || refunded > committed
        || lifetime_back > refunded
        || window_back > refunded
    {
        return Err(corrupt(
            "holds",
            key,
            format!(
                "inconsistent amounts (amount {amount}, committed {committed}, refunded \
                 {refunded}, restored {lifetime_back} / {window_back})"
            ),
        ));
    }
    let state = match state.as_str() {
        "held" => HoldState::Held,
        "committed" => HoldState::Committed,
        "released" => HoldState::Released,
        other => return Err(corrupt("holds", key, format!("unknown state {other:?}"))),
    };
    Ok(Some(Hold {
        figures: Figures {
            state,
            currency: currency("holds", key, &code)?,
            amount,
            committed,
            refunded,
            lifetime_back,
            window_back,
        },
        at,
        mandate_ids: decode("holds", key, &ids)?,
    }))
}

/// Commits, releases or refunds the hold of `attempt_id` by the shared rules
/// ([`crate::adapters::hold_rules::resolve`]): the accounts of its chain and the hold row.
pub(super) fn resolve(
    conn: &Connection,
    attempt_id: &AttemptId,
    op: HoldOp,
) -> Result<(), StoreError> {
    let hold = load(conn, attempt_id)?.ok_or_else(|| StoreError::NotFound {
        entity: "hold",
        id: attempt_id.to_string(),
    })?;
    let r = hold_rules::resolve(attempt_id, &hold.figures, op)?;
    if r.held != 0 || r.spent != 0 || r.uses != 0 {
        for m in &hold.mandate_ids {
            let key = m.as_str();
            conn.prepare_cached(
                "UPDATE accounts SET held = held + ?2, spent = spent + ?3, uses = uses + ?4 \
                 WHERE mandate_id = ?1",
            )
            .and_then(|mut s| s.execute(params![key, r.held, r.spent, r.uses]))
            .map_err(|e| sql_error("accounts", key, e))?;
        }
    }
    let n = r.next;
    let key = attempt_id.as_str();
    conn.prepare_cached(
        "UPDATE holds SET state = ?2, committed = ?3, refunded = ?4, lifetime_back = ?5, \
                          window_back = ?6 \
         WHERE attempt_id = ?1",
    )
    .and_then(|mut s| {
        s.execute(params![
            key,
            hold_rules::state_name(n.state),
            n.committed,
            n.refunded,
            n.lifetime_back,
            n.window_back
        ])
    })
    .map_err(|e| sql_error("holds", key, e))?;
    Ok(())
}

/// A hold by attempt.
pub(super) fn record(
    conn: &Connection,
    attempt_id: &AttemptId,
) -> Result<Option<HoldRecord>, StoreError> {
    let Some(h) = load(conn, attempt_id)? else {
        return Ok(None);
    };
    let key = attempt_id.as_str();
    let f = h.figures;
    Ok(Some(HoldRecord {
        attempt_id: attempt_id.clone(),
        mandate_ids: h.mandate_ids,
        amount: amount("holds", key, f.amount, f.currency)?,
        committed: amount("holds", key, f.committed, f.currency)?,
        refunded: amount("holds", key, f.refunded, f.currency)?,
        at: time(h.at),
        state: f.state,
    }))
}
