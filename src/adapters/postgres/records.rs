//! The record tables of [`PostgresStore`]: mandates, suspensions, confirmations, snapshots,
//! attempts, orders and block counters. Each write is a function on a connection or a
//! transaction (`*_in`), run alone by its port method and with its audit events by
//! `write_audited`.

use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use tokio_postgres::{IsolationLevel, Row};

use super::codec::{encode, time_param, At};
use super::store::PostgresStore;
use super::tx::{classify, in_transaction, once, Tx};
use crate::domain::{
    ActorId, AttemptId, AttemptStatus, BuyerId, CartSnapshot, Confirmation, Mandate, MandateId,
    MandateStatus, Order, Party, PaymentAttempt, SnapshotId, Suspensions,
};
use crate::ports::{
    ChallengeConsumed, ChallengeUse, InputsQuery, InsertOrder, PaymentInputs, StoreError,
};

/// Longest chain `chain` follows (as the memory store).
pub(super) const MAX_LEVELS: usize = 64;

fn mandate_status(at: &At<'_>, text: &str) -> Result<MandateStatus, StoreError> {
    MandateStatus::ALL
        .into_iter()
        .find(|s| s.as_str() == text)
        .ok_or_else(|| at.corrupt(format!("unknown status {text:?}")))
}

pub(super) fn attempt_status(at: &At<'_>, text: &str) -> Result<AttemptStatus, StoreError> {
    AttemptStatus::ALL
        .into_iter()
        .find(|s| s.as_str() == text)
        .ok_or_else(|| at.corrupt(format!("unknown status {text:?}")))
}

/// A mandate from a row `(id, status, body)`: the body decodes, and agrees with the columns.
pub(super) fn mandate_of(row: &Row) -> Result<Mandate, StoreError> {
    let id: String = row
        .try_get("id")
        .map_err(|e| StoreError::Other(Box::new(e)))?;
    let at = At {
        table: "mandates",
        key: &id,
    };
    let status = mandate_status(&at, &at.get::<String>(row, "status")?)?;
    let mandate: Mandate = at.decode(&at.get::<String>(row, "body")?)?;
    if mandate.id().as_str() != id {
        return Err(at.corrupt(format!("the body is mandate {}", mandate.id())));
    }
    if mandate.status() != status {
        return Err(at.corrupt(format!(
            "the status column says {status}, the body {}",
            mandate.status()
        )));
    }
    Ok(mandate)
}

/// An attempt from a row `(id, status, body)`.
pub(super) fn attempt_of(row: &Row) -> Result<PaymentAttempt, StoreError> {
    let id: String = row
        .try_get("id")
        .map_err(|e| StoreError::Other(Box::new(e)))?;
    let at = At {
        table: "attempts",
        key: &id,
    };
    let status = attempt_status(&at, &at.get::<String>(row, "status")?)?;
    let attempt: PaymentAttempt = at.decode(&at.get::<String>(row, "body")?)?;
    if attempt.id.as_str() != id {
        return Err(at.corrupt(format!("the body is attempt {}", attempt.id)));
    }
    if attempt.status != status {
        return Err(at.corrupt(format!(
            "the status column says {status}, the body {}",
            attempt.status
        )));
    }
    Ok(attempt)
}

fn conflict(entity: &'static str, id: &str, message: impl Into<String>) -> StoreError {
    StoreError::Conflict {
        entity,
        id: id.to_string(),
        message: message.into(),
    }
}

impl PostgresStore {
    pub(super) async fn insert_mandate_row(&self, mandate: &Mandate) -> Result<(), StoreError> {
        let client = self.client().await?;
        once(insert_mandate_in(&client, mandate).await)
    }

    pub(super) async fn mandate_row(&self, id: &MandateId) -> Result<Option<Mandate>, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT id, status, body FROM mandates WHERE id = $1",
                &[&id.as_str()],
            )
            .await
            .map_err(classify::<StoreError>)?;
        row.as_ref().map(mandate_of).transpose()
    }

    pub(super) async fn update_mandate_row(
        &self,
        mandate: &Mandate,
        expected: MandateStatus,
    ) -> Result<(), StoreError> {
        in_transaction!(
            &self.pool,
            self.retries,
            IsolationLevel::ReadCommitted,
            StoreError,
            |tx| {
                update_mandate_in(&tx, mandate, expected).await?;
            }
        )
    }

    pub(super) async fn chain_rows(&self, leaf: &MandateId) -> Result<Vec<Mandate>, StoreError> {
        let client = self.client().await?;
        // The leaf and its ancestors, nearest first, one statement (one snapshot); the depth
        // bound stops a loop.
        let rows = client
            .query(CHAIN, &[&leaf.as_str(), &(MAX_LEVELS as i32)])
            .await
            .map_err(classify::<StoreError>)?;
        chain_of(&rows, leaf)
    }

    pub(super) async fn set_suspended_row(
        &self,
        party: &Party,
        suspended: bool,
    ) -> Result<(), StoreError> {
        let client = self.client().await?;
        once(set_suspended_in(&client, party, suspended).await)
    }

    pub(super) async fn suspension_rows(
        &self,
        actors: &[ActorId],
        buyer: &BuyerId,
    ) -> Result<Suspensions, StoreError> {
        let asked: Vec<&str> = actors.iter().map(|a| a.as_str()).collect();
        let client = self.client().await?;
        let rows = client
            .query(SUSPENSIONS, &[&asked, &buyer.as_str()])
            .await
            .map_err(classify::<StoreError>)?;
        suspensions_of(&rows, actors, buyer)
    }

    pub(super) async fn insert_confirmation_row(
        &self,
        confirmation: &Confirmation,
    ) -> Result<(), StoreError> {
        let client = self.client().await?;
        once(insert_confirmation_in(&client, confirmation).await)
    }

    pub(super) async fn confirmation_rows(
        &self,
        buyer: &BuyerId,
        snapshot: &SnapshotId,
    ) -> Result<Vec<Confirmation>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(CONFIRMATIONS, &[&buyer.as_str(), &snapshot.to_string()])
            .await
            .map_err(classify::<StoreError>)?;
        confirmations_of(&rows, buyer, snapshot)
    }

    pub(super) async fn put_snapshot_row(&self, snapshot: &CartSnapshot) -> Result<(), StoreError> {
        let body = encode("snapshot", snapshot)?;
        let client = self.client().await?;
        client
            .execute(
                "INSERT INTO snapshots (id, body) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING",
                &[&snapshot.id().to_string(), &body],
            )
            .await
            .map_err(classify::<StoreError>)?;
        Ok(())
    }

    pub(super) async fn snapshot_row(
        &self,
        id: &SnapshotId,
    ) -> Result<Option<CartSnapshot>, StoreError> {
        let key = id.to_string();
        let client = self.client().await?;
        let row = client
            .query_opt("SELECT body FROM snapshots WHERE id = $1", &[&key])
            .await
            .map_err(classify::<StoreError>)?;
        let Some(row) = row else {
            return Ok(None);
        };
        let at = At {
            table: "snapshots",
            key: &key,
        };
        let snapshot: CartSnapshot = at.decode(&at.get::<String>(&row, "body")?)?;
        // The id is the content's hash: an edited body no longer matches it (I7).
        if snapshot.id() != *id {
            return Err(at.corrupt(format!(
                "the content hashes to {}, not to its id",
                snapshot.id()
            )));
        }
        Ok(Some(snapshot))
    }

    pub(super) async fn insert_attempt_row(
        &self,
        attempt: &PaymentAttempt,
    ) -> Result<(), StoreError> {
        let client = self.client().await?;
        once(insert_attempt_in(&client, attempt).await)
    }

    pub(super) async fn attempt_row(
        &self,
        id: &AttemptId,
    ) -> Result<Option<PaymentAttempt>, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT id, status, body FROM attempts WHERE id = $1",
                &[&id.as_str()],
            )
            .await
            .map_err(classify::<StoreError>)?;
        row.as_ref().map(attempt_of).transpose()
    }

    pub(super) async fn update_attempt_row(
        &self,
        attempt: &PaymentAttempt,
        expected: AttemptStatus,
    ) -> Result<(), StoreError> {
        let client = self.client().await?;
        once(update_attempt_in(&client, attempt, expected).await)
    }

    pub(super) async fn attempt_rows_in(
        &self,
        statuses: &[AttemptStatus],
        limit: usize,
    ) -> Result<Vec<PaymentAttempt>, StoreError> {
        if statuses.is_empty() || limit == 0 {
            return Ok(Vec::new());
        }
        let names: Vec<&str> = statuses.iter().map(|s| s.as_str()).collect();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT id, status, body FROM attempts WHERE status = ANY($1) \
                 ORDER BY created_at_ns, id LIMIT $2",
                &[&names, &limit],
            )
            .await
            .map_err(classify::<StoreError>)?;
        rows.iter().map(attempt_of).collect()
    }

    pub(super) async fn insert_order_row(&self, order: &Order) -> Result<InsertOrder, StoreError> {
        in_transaction!(
            &self.pool,
            self.retries,
            IsolationLevel::ReadCommitted,
            StoreError,
            |tx| { insert_order_in(&tx, order).await? }
        )
    }

    pub(super) async fn order_row(
        &self,
        attempt_id: &AttemptId,
    ) -> Result<Option<Order>, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT body FROM orders WHERE attempt_id = $1",
                &[&attempt_id.as_str()],
            )
            .await
            .map_err(classify::<StoreError>)?;
        let Some(row) = row else {
            return Ok(None);
        };
        let at = At {
            table: "orders",
            key: attempt_id.as_str(),
        };
        let order: Order = at.decode(&at.get::<String>(&row, "body")?)?;
        if order.attempt_id != *attempt_id {
            return Err(at.corrupt("the body is another attempt's order"));
        }
        Ok(Some(order))
    }

    pub(super) async fn record_block_row(&self, actor: &ActorId) -> Result<u32, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_one(
                "INSERT INTO blocks (actor_id, count) VALUES ($1, 1) ON CONFLICT (actor_id) \
                 DO UPDATE SET count = LEAST(blocks.count + 1, 4294967295) RETURNING count",
                &[&actor.as_str()],
            )
            .await
            .map_err(classify::<StoreError>)?;
        let at = At {
            table: "blocks",
            key: actor.as_str(),
        };
        let n: i64 = at.get(&row, "count")?;
        let n = at.count("count", n)?;
        Ok(u32::try_from(n).unwrap_or(u32::MAX))
    }

    pub(super) async fn reset_blocks_row(&self, actor: &ActorId) -> Result<(), StoreError> {
        let client = self.client().await?;
        client
            .execute("DELETE FROM blocks WHERE actor_id = $1", &[&actor.as_str()])
            .await
            .map_err(classify::<StoreError>)?;
        Ok(())
    }
    /// One statement for a first use (an insert that does nothing on conflict), a read of the
    /// recorded digest otherwise: the primary key makes two concurrent first uses one.
    pub(super) async fn consume_challenge_row(
        &self,
        use_: &ChallengeUse,
    ) -> Result<ChallengeConsumed, StoreError> {
        let client = self.client().await?;
        let credential = use_.credential.to_string();
        let expires = time_param(use_.expires_at)?;
        let inserted = client
            .execute(
                "INSERT INTO challenges (challenge_id, credential, expires_at_ns) \
                 VALUES ($1, $2, $3) ON CONFLICT (challenge_id) DO NOTHING",
                &[&use_.challenge_id, &credential, &expires],
            )
            .await
            .map_err(classify::<StoreError>)?;
        if inserted == 1 {
            return Ok(ChallengeConsumed::First);
        }
        let row = client
            .query_opt(
                "SELECT credential FROM challenges WHERE challenge_id = $1",
                &[&use_.challenge_id],
            )
            .await
            .map_err(classify::<StoreError>)?;
        let at = At {
            table: "challenges",
            key: &use_.challenge_id,
        };
        match row {
            // Purged between the two statements: only an expired record is purged, and an
            // expired challenge is refused before it is consumed; count it as used.
            None => Ok(ChallengeConsumed::Used),
            Some(row) => {
                let recorded: String = at.get(&row, "credential")?;
                Ok(if recorded == credential {
                    ChallengeConsumed::SameCredential
                } else {
                    ChallengeConsumed::Used
                })
            }
        }
    }

    pub(super) async fn purge_challenge_rows(&self, now: DateTime<Utc>) -> Result<u64, StoreError> {
        let client = self.client().await?;
        let now = time_param(now)?;
        client
            .execute("DELETE FROM challenges WHERE expires_at_ns <= $1", &[&now])
            .await
            .map_err(classify::<StoreError>)
    }
}

// ------------------------------------------------------------------------------------------
// The writes, on a connection or inside the caller's transaction: the port's methods run
// them alone, `write_audited` with the staging of their audit events.

/// Inserts a new mandate; `Conflict` if the id is taken.
pub(super) async fn insert_mandate_in<C: GenericClient>(
    client: &C,
    mandate: &Mandate,
) -> Result<(), Tx<StoreError>> {
    let body = encode("mandate", mandate).map_err(Tx::Fail)?;
    let st = client
        .prepare_cached(
            "INSERT INTO mandates (id, parent_id, status, currency, body) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (id) DO NOTHING",
        )
        .await?;
    let n = client
        .execute(
            &st,
            &[
                &mandate.id().as_str(),
                &mandate.parent_id().map(|p| p.as_str()),
                &mandate.status().as_str(),
                &mandate.currency().code(),
                &body,
            ],
        )
        .await?;
    if n == 0 {
        return Err(Tx::Fail(conflict(
            "mandate",
            mandate.id().as_str(),
            "the id is taken",
        )));
    }
    Ok(())
}

/// Replaces a mandate's lifecycle if its status is still `expected`. Locks the row (`FOR
/// UPDATE`), so `client` must be a transaction for the compare and set to hold.
pub(super) async fn update_mandate_in<C: GenericClient>(
    client: &C,
    mandate: &Mandate,
    expected: MandateStatus,
) -> Result<(), Tx<StoreError>> {
    let id = mandate.id().as_str();
    let st = client
        .prepare_cached("SELECT id, status, body FROM mandates WHERE id = $1 FOR UPDATE")
        .await?;
    let row = client.query_opt(&st, &[&id]).await?;
    let Some(row) = row else {
        return Err(Tx::Fail(StoreError::NotFound {
            entity: "mandate",
            id: id.to_string(),
        }));
    };
    let stored = mandate_of(&row).map_err(Tx::Fail)?;
    let next = crate::adapters::mandate_rules::relifecycle(&stored, mandate, expected)
        .map_err(Tx::Fail)?;
    let body = encode("mandate", &next).map_err(Tx::Fail)?;
    let st = client
        .prepare_cached("UPDATE mandates SET status = $2, body = $3 WHERE id = $1")
        .await?;
    client
        .execute(&st, &[&id, &next.status().as_str(), &body])
        .await?;
    Ok(())
}

/// Turns the kill switch of `party` on or off.
pub(super) async fn set_suspended_in<C: GenericClient>(
    client: &C,
    party: &Party,
    suspended: bool,
) -> Result<(), Tx<StoreError>> {
    let (kind, id) = match party {
        Party::Actor(a) => ("actor", a.as_str()),
        Party::Buyer(b) => ("buyer", b.as_str()),
        Party::Credentials(a) => ("credentials", a.as_str()),
    };
    let sql = if suspended {
        "INSERT INTO suspensions (kind, party_id) VALUES ($1, $2) ON CONFLICT DO NOTHING"
    } else {
        "DELETE FROM suspensions WHERE kind = $1 AND party_id = $2"
    };
    let st = client.prepare_cached(sql).await?;
    client.execute(&st, &[&kind, &id]).await?;
    Ok(())
}

/// Records a confirmation: the same one twice is a no-op, another with its id a `Conflict`.
pub(super) async fn insert_confirmation_in<C: GenericClient>(
    client: &C,
    confirmation: &Confirmation,
) -> Result<(), Tx<StoreError>> {
    let body = encode("confirmation", confirmation).map_err(Tx::Fail)?;
    let id = confirmation.id.as_str();
    let st = client
        .prepare_cached(
            "INSERT INTO confirmations (id, buyer_id, snapshot_id, body) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (id) DO NOTHING",
        )
        .await?;
    let n = client
        .execute(
            &st,
            &[
                &id,
                &confirmation.buyer_id.as_str(),
                &confirmation.snapshot_id.to_string(),
                &body,
            ],
        )
        .await?;
    if n == 1 {
        return Ok(());
    }
    let st = client
        .prepare_cached("SELECT body FROM confirmations WHERE id = $1")
        .await?;
    let row = client.query_opt(&st, &[&id]).await?;
    let at = At {
        table: "confirmations",
        key: id,
    };
    let stored: Option<Confirmation> = match &row {
        Some(row) => Some(
            at.decode(&at.get::<String>(row, "body").map_err(Tx::Fail)?)
                .map_err(Tx::Fail)?,
        ),
        None => None,
    };
    match stored {
        Some(stored) if stored == *confirmation => Ok(()),
        _ => Err(Tx::Fail(conflict(
            "confirmation",
            id,
            "another confirmation has this id",
        ))),
    }
}

/// Inserts a new attempt; `Conflict` if the id is taken.
pub(super) async fn insert_attempt_in<C: GenericClient>(
    client: &C,
    attempt: &PaymentAttempt,
) -> Result<(), Tx<StoreError>> {
    let body = encode("attempt", attempt).map_err(Tx::Fail)?;
    let created = time_param(attempt.created_at).map_err(Tx::Fail)?;
    let st = client
        .prepare_cached(
            "INSERT INTO attempts (id, status, created_at_ns, body) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (id) DO NOTHING",
        )
        .await?;
    let n = client
        .execute(
            &st,
            &[
                &attempt.id.as_str(),
                &attempt.status.as_str(),
                &created,
                &body,
            ],
        )
        .await?;
    if n == 0 {
        return Err(Tx::Fail(conflict(
            "attempt",
            attempt.id.as_str(),
            "the id is taken",
        )));
    }
    Ok(())
}

/// Replaces an attempt if its status is still `expected` (compare and set in one statement);
/// `NotFound` or `Conflict` (naming the current status) otherwise.
pub(super) async fn update_attempt_in<C: GenericClient>(
    client: &C,
    attempt: &PaymentAttempt,
    expected: AttemptStatus,
) -> Result<(), Tx<StoreError>> {
    let body = encode("attempt", attempt).map_err(Tx::Fail)?;
    let id = attempt.id.as_str();
    let st = client
        .prepare_cached("UPDATE attempts SET status = $3, body = $4 WHERE id = $1 AND status = $2")
        .await?;
    let n = client
        .execute(
            &st,
            &[&id, &expected.as_str(), &attempt.status.as_str(), &body],
        )
        .await?;
    if n == 1 {
        return Ok(());
    }
    let st = client
        .prepare_cached("SELECT status FROM attempts WHERE id = $1")
        .await?;
    let row = client.query_opt(&st, &[&id]).await?;
    let Some(row) = row else {
        return Err(Tx::Fail(StoreError::NotFound {
            entity: "attempt",
            id: id.to_string(),
        }));
    };
    let at = At {
        table: "attempts",
        key: id,
    };
    let status = at
        .get::<String>(&row, "status")
        .and_then(|text| attempt_status(&at, &text))
        .map_err(Tx::Fail)?;
    Err(Tx::Fail(conflict(
        "attempt",
        id,
        format!("the status is {status}, not {expected}"),
    )))
}

/// Commits an order unless the attempt has one (I4).
pub(super) async fn insert_order_in<C: GenericClient>(
    client: &C,
    order: &Order,
) -> Result<InsertOrder, Tx<StoreError>> {
    let body = encode("order", order).map_err(Tx::Fail)?;
    let attempt = order.attempt_id.as_str();
    let st = client
        .prepare_cached(
            "INSERT INTO orders (attempt_id, order_id, body) VALUES ($1, $2, $3) \
             ON CONFLICT DO NOTHING",
        )
        .await?;
    let n = client
        .execute(&st, &[&attempt, &order.id.as_str(), &body])
        .await?;
    if n == 1 {
        return Ok(InsertOrder::Inserted);
    }
    let st = client
        .prepare_cached("SELECT body FROM orders WHERE attempt_id = $1")
        .await?;
    if let Some(row) = client.query_opt(&st, &[&attempt]).await? {
        let at = At {
            table: "orders",
            key: attempt,
        };
        let body: String = at.get(&row, "body").map_err(Tx::Fail)?;
        let existing: Order = at.decode(&body).map_err(Tx::Fail)?;
        if existing.attempt_id != order.attempt_id {
            return Err(Tx::Fail(at.corrupt("the body is another attempt's order")));
        }
        return Ok(InsertOrder::Existing(existing));
    }
    let st = client
        .prepare_cached("SELECT attempt_id FROM orders WHERE order_id = $1")
        .await?;
    let other: Option<String> = match client.query_opt(&st, &[&order.id.as_str()]).await? {
        Some(row) => row.try_get(0)?,
        None => None,
    };
    Err(Tx::Fail(conflict(
        "order",
        order.id.as_str(),
        format!(
            "the id is taken by the order of attempt {}",
            other.as_deref().unwrap_or("(gone)")
        ),
    )))
}

/// The leaf and its ancestors, nearest first, one statement (one snapshot); the depth bound
/// (`$2`) stops a loop.
pub(super) const CHAIN: &str = "WITH RECURSIVE up (id, parent_id, status, body, depth) AS ( \
       SELECT id, parent_id, status, body, 0 FROM mandates WHERE id = $1 \
       UNION ALL \
       SELECT m.id, m.parent_id, m.status, m.body, up.depth + 1 \
       FROM mandates m JOIN up ON m.id = up.parent_id WHERE up.depth < $2 \
     ) SELECT id, parent_id, status, body FROM up ORDER BY depth";

/// Suspended actors, and actors whose credentials are switched off, among `$1`, and the
/// buyer `$2`.
pub(super) const SUSPENSIONS: &str = "SELECT kind, party_id FROM suspensions \
     WHERE (kind IN ('actor', 'credentials') AND party_id = ANY($1)) \
     OR (kind = 'buyer' AND party_id = $2)";

/// The confirmations of buyer `$1` for snapshot `$2`.
pub(super) const CONFIRMATIONS: &str =
    "SELECT id, body FROM confirmations WHERE buyer_id = $1 AND snapshot_id = $2 ORDER BY id";

/// An attempt by id.
pub(super) const ATTEMPT: &str = "SELECT id, status, body FROM attempts WHERE id = $1";

/// The chain from the rows of [`CHAIN`] (leaf first), root first.
pub(super) fn chain_of(rows: &[Row], leaf: &MandateId) -> Result<Vec<Mandate>, StoreError> {
    let mut chain: Vec<Mandate> = Vec::with_capacity(rows.len());
    for row in rows {
        let m = mandate_of(row)?;
        // The chain follows the column: it must say what the body says.
        let parent: Option<String> = row
            .try_get("parent_id")
            .map_err(|e| StoreError::Other(Box::new(e)))?;
        if parent.as_deref() != m.parent_id().map(|p| p.as_str()) {
            return Err(StoreError::Corrupt {
                table: "mandates",
                key: m.id().to_string(),
                message: format!(
                    "the parent_id column says {parent:?}, the body {:?}",
                    m.parent_id().map(|p| p.as_str())
                ),
            });
        }
        if let Some(child) = chain.last() {
            let corrupt = |message: String| StoreError::Corrupt {
                table: "mandates",
                key: child.id().to_string(),
                message,
            };
            if chain.len() >= MAX_LEVELS {
                return Err(corrupt(format!(
                    "the chain of {leaf} is deeper than {MAX_LEVELS} levels"
                )));
            }
            if chain.iter().any(|c| c.id() == m.id()) {
                return Err(corrupt(format!("the parents loop back to {}", m.id())));
            }
        }
        chain.push(m);
    }
    if let Some(top) = chain.last()
        && let Some(parent) = top.parent_id()
    {
        return Err(StoreError::Corrupt {
            table: "mandates",
            key: top.id().to_string(),
            message: format!("the parent {parent} is missing"),
        });
    }
    chain.reverse();
    Ok(chain)
}

/// The suspensions from the rows of [`SUSPENSIONS`].
pub(super) fn suspensions_of(
    rows: &[Row],
    actors: &[ActorId],
    buyer: &BuyerId,
) -> Result<Suspensions, StoreError> {
    let mut pairs: Vec<(&str, String)> = Vec::with_capacity(rows.len());
    for row in rows {
        let kind: &str = row.try_get(0).map_err(|e| StoreError::Other(Box::new(e)))?;
        let id: String = row.try_get(1).map_err(|e| StoreError::Other(Box::new(e)))?;
        pairs.push((kind, id));
    }
    Ok(suspensions_from(&pairs, actors, buyer))
}

/// The suspensions from `(kind, party id)` pairs of the `suspensions` table, among `actors`
/// and `buyer`.
pub(super) fn suspensions_from(
    pairs: &[(&str, String)],
    actors: &[ActorId],
    buyer: &BuyerId,
) -> Suspensions {
    let mut suspended_actors: Vec<&str> = Vec::new();
    let mut switched_off: Vec<&str> = Vec::new();
    let mut buyers = Vec::new();
    for (kind, id) in pairs {
        match *kind {
            "buyer" if id == buyer.as_str() => buyers = vec![buyer.clone()],
            "buyer" => {}
            "credentials" => switched_off.push(id),
            _ => suspended_actors.push(id),
        }
    }
    let mut found: Vec<ActorId> = Vec::new();
    let mut credentials: Vec<ActorId> = Vec::new();
    for a in actors {
        if suspended_actors.contains(&a.as_str()) && !found.contains(a) {
            found.push(a.clone());
        }
        if switched_off.contains(&a.as_str()) && !credentials.contains(a) {
            credentials.push(a.clone());
        }
    }
    Suspensions {
        actors: found,
        buyers,
        credentials,
    }
}

/// The attempt, the chain and the confirmations of a payment's inputs.
pub(super) type FirstInputs = (Option<PaymentAttempt>, Vec<Mandate>, Vec<Confirmation>);

/// The attempt, the chain and the confirmations of the decision's inputs from the answers of
/// [`ATTEMPT`], [`CHAIN`] and [`CONFIRMATIONS`] (`None`: not asked), decoded in the order they
/// depend on each other, so the chain's own faults (a corrupt body, a loop, a missing parent)
/// are reported before anything read against it. Confirmations are kept only when a rule of
/// the chain may ask for them.
pub(super) fn first_inputs(
    query: &InputsQuery<'_>,
    attempt: Result<Option<Row>, tokio_postgres::Error>,
    chain: Result<Vec<Row>, tokio_postgres::Error>,
    confirmations: Result<Option<Vec<Row>>, tokio_postgres::Error>,
) -> Result<FirstInputs, StoreError> {
    let fail = classify::<StoreError>;
    let attempt = attempt
        .map_err(fail)?
        .as_ref()
        .map(attempt_of)
        .transpose()?;
    let chain = chain_of(&chain.map_err(fail)?, query.mandate_id)?;
    let confirmations = match confirmations.map_err(fail)? {
        Some(rows) if PaymentInputs::wants_confirmations(query, &chain) => {
            confirmations_of(&rows, query.buyer_id, query.snapshot_id)?
        }
        _ => Vec::new(),
    };
    Ok((attempt, chain, confirmations))
}

/// The confirmations from the rows of [`CONFIRMATIONS`].
pub(super) fn confirmations_of(
    rows: &[Row],
    buyer: &BuyerId,
    snapshot: &SnapshotId,
) -> Result<Vec<Confirmation>, StoreError> {
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let id: String = row
            .try_get("id")
            .map_err(|e| StoreError::Other(Box::new(e)))?;
        let at = At {
            table: "confirmations",
            key: &id,
        };
        let c: Confirmation = at.decode(&at.get::<String>(row, "body")?)?;
        if c.id.as_str() != id || c.buyer_id != *buyer || c.snapshot_id != *snapshot {
            return Err(at.corrupt("the body does not match the id, buyer or snapshot columns"));
        }
        out.push(c);
    }
    Ok(out)
}
