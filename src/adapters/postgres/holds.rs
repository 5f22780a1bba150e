//! Holds after they are placed: commit, release, refund, and reading a hold back (see the
//! locking rules in [`super::ledger`]: the chain's accounts first, in mandate id order, then
//! the hold).

use rust_decimal::Decimal;
use tokio_postgres::{IsolationLevel, Row};

use super::codec::At;
use super::ledger::{accounts, minor_text, missing_account, LOCK_ACCOUNTS};
use super::store::PostgresStore;
use super::tx::{in_transaction, Tx};
use crate::domain::{AttemptId, MandateId, Money};
use crate::ports::{HoldRecord, HoldState, RefundPolicy, StoreError};

/// How a held hold is resolved, or a refund recorded.
#[derive(Debug, Clone, Copy)]
pub(super) enum Resolve {
    Commit(Money),
    Release,
    Refund(Money, RefundPolicy),
}

const HOLD_COLUMNS: &str = "attempt_id, currency, amount, committed, refunded, lifetime_back, \
     window_back, at_ns, state, mandate_ids";

/// A hold row, checked.
struct StoredHold {
    record: HoldRecord,
    lifetime_back: i64,
    window_back: i64,
}

fn hold_of(row: &Row) -> Result<StoredHold, StoreError> {
    let id: String = row
        .try_get("attempt_id")
        .map_err(|e| StoreError::Other(Box::new(e)))?;
    let at = At {
        table: "holds",
        key: &id,
    };
    let attempt_id =
        AttemptId::new(&id).map_err(|e| at.corrupt(format!("invalid attempt id: {e}")))?;
    let currency = at.currency(&at.get::<String>(row, "currency")?)?;
    let amount: i64 = at.get(row, "amount")?;
    let committed: i64 = at.get(row, "committed")?;
    let refunded: i64 = at.get(row, "refunded")?;
    let lifetime_back: i64 = at.get(row, "lifetime_back")?;
    let window_back: i64 = at.get(row, "window_back")?;
    let state = match at.get::<String>(row, "state")?.as_str() {
        "held" => HoldState::Held,
        "committed" => HoldState::Committed,
        "released" => HoldState::Released,
        other => return Err(at.corrupt(format!("unknown state {other:?}"))),
    };
    let mandate_ids: Vec<MandateId> = at.decode(&at.get::<String>(row, "mandate_ids")?)?;
    let record = HoldRecord {
        attempt_id,
        mandate_ids,
        amount: at.money("amount", amount, currency)?,
        committed: at.money("committed", committed, currency)?,
        refunded: at.money("refunded", refunded, currency)?,
        at: at.time("at_ns", at.get(row, "at_ns")?)?,
        state,
    };
    let consistent = committed <= amount
        && refunded <= committed
        && (0..=refunded).contains(&lifetime_back)
        && (0..=refunded).contains(&window_back)
        && (state == HoldState::Committed || (committed == 0 && refunded == 0));
    if !consistent {
        return Err(at.corrupt(format!(
            "inconsistent amounts for a {state:?} hold: amount {amount}, committed {committed}, \
             refunded {refunded}, given back {lifetime_back} / {window_back}"
        )));
    }
    Ok(StoredHold {
        record,
        lifetime_back,
        window_back,
    })
}

impl PostgresStore {
    pub(super) async fn ledger_resolve(
        &self,
        attempt_id: &AttemptId,
        how: Resolve,
    ) -> Result<(), StoreError> {
        in_transaction!(
            &self.pool,
            self.retries,
            IsolationLevel::ReadCommitted,
            StoreError,
            |tx| {
                resolve_in(&tx, attempt_id, how).await?;
            }
        )
    }

    pub(super) async fn ledger_hold(
        &self,
        attempt_id: &AttemptId,
    ) -> Result<Option<HoldRecord>, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                &format!("SELECT {HOLD_COLUMNS} FROM holds WHERE attempt_id = $1"),
                &[&attempt_id.as_str()],
            )
            .await
            .map_err(super::tx::classify::<StoreError>)?;
        match row {
            Some(row) => Ok(Some(hold_of(&row)?.record)),
            None => Ok(None),
        }
    }
}

/// Resolves the hold of `attempt_id` (or records a refund) inside the caller's transaction:
/// the accounts of its mandates are locked first (the global order), then the hold.
pub(super) async fn resolve_in(
    tx: &deadpool_postgres::Transaction<'_>,
    attempt_id: &AttemptId,
    how: Resolve,
) -> Result<(), Tx<StoreError>> {
    let attempt = attempt_id.as_str();
    let conflict = |message: String| {
        Tx::Fail(StoreError::Conflict {
            entity: "hold",
            id: attempt.to_string(),
            message,
        })
    };

    // The hold's mandates never change: read them unlocked, lock their accounts
    // (the global order), then lock the hold.
    let st = tx
        .prepare_cached("SELECT mandate_ids FROM holds WHERE attempt_id = $1")
        .await?;
    let row = tx.query_opt(&st, &[&attempt]).await?;
    let Some(row) = row else {
        return Err(Tx::Fail(StoreError::NotFound {
            entity: "hold",
            id: attempt.to_string(),
        }));
    };
    let at = At {
        table: "holds",
        key: attempt,
    };
    let ids: Vec<MandateId> = at
        .decode(&at.get::<String>(&row, "mandate_ids").map_err(Tx::Fail)?)
        .map_err(Tx::Fail)?;
    let mut sorted: Vec<&str> = ids.iter().map(|m| m.as_str()).collect();
    sorted.sort_unstable();
    let st = tx.prepare_cached(LOCK_ACCOUNTS).await?;
    let locked = accounts(&**tx, &st, &sorted).await?;
    let st = tx
        .prepare_cached(&format!(
            "SELECT {HOLD_COLUMNS} FROM holds WHERE attempt_id = $1 FOR UPDATE"
        ))
        .await?;
    let row = tx.query_one(&st, &[&attempt]).await?;
    let stored = hold_of(&row).map_err(Tx::Fail)?;
    let h = &stored.record;
    if h.mandate_ids != ids {
        return Err(Tx::Fail(at.corrupt("the hold's mandates changed")));
    }
    let state = match h.state {
        HoldState::Held => "held",
        HoldState::Committed => "committed",
        HoldState::Released => "released",
    };
    let placed = h.amount.minor_units();
    // (held, spent, uses) deltas of every account, and the hold's new columns.
    let (held, spent, uses, new_state, committed, refunded, lifetime_back, window_back) = match how
    {
        Resolve::Commit(amount) => {
            if h.state != HoldState::Held {
                return Err(conflict(format!("cannot commit: the hold is {state}")));
            }
            if amount.currency() != h.amount.currency() {
                return Err(conflict(format!(
                    "cannot commit {amount}: the hold is in {}",
                    h.amount.currency()
                )));
            }
            let c = amount.minor_units();
            if c > placed {
                return Err(conflict(format!(
                    "cannot commit {amount}: more than the {} held",
                    h.amount
                )));
            }
            let uses = if c == 0 { -1 } else { 0 };
            (-placed, c, uses, "committed", c, 0, 0, 0)
        }
        Resolve::Release => {
            if h.state != HoldState::Held {
                return Err(conflict(format!("cannot release: the hold is {state}")));
            }
            (-placed, 0, -1, "released", 0, 0, 0, 0)
        }
        Resolve::Refund(amount, policy) => {
            if h.state != HoldState::Committed {
                return Err(conflict(format!("cannot refund: the hold is {state}")));
            }
            if amount.currency() != h.amount.currency() {
                return Err(conflict(format!(
                    "cannot refund {amount}: the hold is in {}",
                    h.amount.currency()
                )));
            }
            let r = amount.minor_units();
            let total = h.refunded.minor_units().saturating_add(r);
            if total > h.committed.minor_units() {
                return Err(conflict(format!(
                    "cannot refund {amount}: refunds would reach {}, more than \
                                     the {} committed",
                    minor_text(i128::from(total), h.amount.currency()),
                    h.committed
                )));
            }
            let back_l = if policy.restores_lifetime { r } else { 0 };
            let back_w = if policy.restores_windows { r } else { 0 };
            (
                0,
                -back_l,
                0,
                "committed",
                h.committed.minor_units(),
                total,
                stored.lifetime_back + back_l,
                stored.window_back + back_w,
            )
        }
    };
    for id in &sorted {
        let a = locked
            .get(*id)
            .ok_or_else(|| Tx::Fail(missing_account(id)))?;
        let ok = a.held + i128::from(held) >= 0
            && a.spent + i128::from(spent) >= 0
            && a.uses + uses >= 0;
        if !ok {
            return Err(Tx::Fail(super::codec::corrupt(
                "accounts",
                id,
                format!("the counters do not cover hold {attempt}"),
            )));
        }
    }
    let st = tx
        .prepare_cached(
            "UPDATE holds SET state = $2, committed = $3, refunded = $4, \
             lifetime_back = $5, window_back = $6 WHERE attempt_id = $1",
        )
        .await?;
    tx.execute(
        &st,
        &[
            &attempt,
            &new_state,
            &committed,
            &refunded,
            &lifetime_back,
            &window_back,
        ],
    )
    .await?;
    if !sorted.is_empty() && (held != 0 || spent != 0 || uses != 0) {
        let st = tx
            .prepare_cached(
                "UPDATE accounts SET held = held + $2, spent = spent + $3, \
                             uses = uses + $4 WHERE mandate_id = ANY($1)",
            )
            .await?;
        tx.execute(
            &st,
            &[&sorted, &Decimal::from(held), &Decimal::from(spent), &uses],
        )
        .await?;
    }
    Ok(())
}
