//! Holds after they are placed: commit, release, refund, and reading a hold back (see the
//! locking rules in [`super::ledger`]: the chain's accounts first, in mandate id order, then
//! the hold).

use rust_decimal::Decimal;
use tokio_postgres::{IsolationLevel, Row};

use super::codec::At;
use super::ledger::{accounts, missing_account, LOCK_ACCOUNTS};
use super::store::PostgresStore;
use super::tx::{in_transaction, Tx};
use crate::adapters::hold_rules::{self, Figures};
use crate::domain::{AttemptId, MandateId};
use crate::ports::{HoldOp, HoldRecord, HoldState, StoreError};

pub(super) const HOLD_COLUMNS: &str =
    "attempt_id, currency, amount, committed, refunded, lifetime_back, \
     window_back, at_ns, state, mandate_ids";

/// A hold row, checked.
pub(super) struct StoredHold {
    pub(super) record: HoldRecord,
    pub(super) lifetime_back: i64,
    pub(super) window_back: i64,
}

pub(super) fn hold_of(row: &Row) -> Result<StoredHold, StoreError> {
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
        how: HoldOp,
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
    how: HoldOp,
) -> Result<(), Tx<StoreError>> {
    let attempt = attempt_id.as_str();
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
    let figures = Figures {
        state: h.state,
        currency: h.amount.currency(),
        amount: h.amount.minor_units(),
        committed: h.committed.minor_units(),
        refunded: h.refunded.minor_units(),
        lifetime_back: stored.lifetime_back,
        window_back: stored.window_back,
    };
    let r = hold_rules::resolve(attempt_id, &figures, how).map_err(Tx::Fail)?;
    let (held, spent, uses) = (r.held, r.spent, r.uses);
    let new_state = hold_rules::state_name(r.next.state);
    let (committed, refunded, lifetime_back, window_back) = (
        r.next.committed,
        r.next.refunded,
        r.next.lifetime_back,
        r.next.window_back,
    );
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
