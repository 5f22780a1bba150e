//! [`SqliteReviewQueue`]: the review queue on a SQLite database (migration 9). Each
//! operation is one statement or one immediate transaction on the connection's thread, so two
//! closes of one entry never both succeed.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::{params, OptionalExtension, TransactionBehavior};

use super::codec::sql_error;
use super::SqliteDatabase;
use crate::domain::{AttemptId, BuyerId};
use crate::ports::{ReviewEntry, ReviewQueue, ReviewState, StoreError, MAX_REVIEW_BATCH};

/// The [`ReviewQueue`] on a [`SqliteDatabase`] ([`SqliteDatabase::review_queue`]).
///
/// ```
/// use agent_mandate::adapters::sqlite::{SqliteConfig, SqliteDatabase};
/// let db = SqliteDatabase::open(SqliteConfig::in_memory()).unwrap();
/// let queue = db.review_queue();
/// # let _ = queue;
/// ```
#[derive(Debug, Clone)]
pub struct SqliteReviewQueue {
    db: SqliteDatabase,
}

impl SqliteReviewQueue {
    pub(super) fn new(db: SqliteDatabase) -> SqliteReviewQueue {
        SqliteReviewQueue { db }
    }
}

const TABLE: &str = "review_queue";

fn nanos(t: DateTime<Utc>) -> i64 {
    // Out of range only past the year 2262; saturates, which keeps the order.
    t.timestamp_nanos_opt().unwrap_or(if t.timestamp() < 0 {
        i64::MIN
    } else {
        i64::MAX
    })
}

fn encode(e: &ReviewEntry) -> Result<String, StoreError> {
    serde_json::to_string(e).map_err(|err| StoreError::Other(Box::new(err)))
}

fn decode(key: &str, body: &str) -> Result<ReviewEntry, StoreError> {
    serde_json::from_str(body).map_err(|err| StoreError::Corrupt {
        table: TABLE,
        key: key.to_owned(),
        message: err.to_string(),
    })
}

fn read(conn: &rusqlite::Connection, id: &str) -> Result<Option<ReviewEntry>, StoreError> {
    let body: Option<String> = conn
        .prepare_cached("SELECT body FROM review_queue WHERE attempt_id = ?1")
        .and_then(|mut s| s.query_row([id], |r| r.get(0)).optional())
        .map_err(|e| sql_error(TABLE, id, e))?;
    body.map(|b| decode(id, &b)).transpose()
}

fn write(conn: &rusqlite::Connection, e: &ReviewEntry) -> Result<(), StoreError> {
    let id = e.attempt_id.as_str();
    conn.prepare_cached(
        "INSERT INTO review_queue (attempt_id, buyer_id, state, due_ns, body) \
         VALUES (?1, ?2, ?3, ?4, ?5) \
         ON CONFLICT (attempt_id) DO UPDATE SET state = excluded.state, \
         due_ns = excluded.due_ns, body = excluded.body",
    )
    .and_then(|mut s| {
        s.execute(params![
            id,
            e.buyer_id.as_str(),
            e.state.as_str(),
            nanos(e.due_at),
            encode(e).map_err(|err| rusqlite::Error::ToSqlConversionFailure(Box::new(err)))?
        ])
    })
    .map_err(|err| sql_error(TABLE, id, err))?;
    Ok(())
}

fn list(
    conn: &rusqlite::Connection,
    sql: &str,
    arg: rusqlite::types::Value,
    limit: usize,
) -> Result<Vec<ReviewEntry>, StoreError> {
    let limit = i64::try_from(limit.min(MAX_REVIEW_BATCH)).unwrap_or(0);
    let mut stmt = conn
        .prepare_cached(sql)
        .map_err(|e| sql_error(TABLE, "list", e))?;
    let rows = stmt
        .query_map(params![arg, limit], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
        })
        .map_err(|e| sql_error(TABLE, "list", e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| sql_error(TABLE, "list", e))?;
    // A row that does not decode is left for an operator (its hold kept: the sweep keeps the
    // hold of an entry it cannot read) and never stops the others.
    Ok(rows
        .iter()
        .filter_map(|(id, body)| match decode(id, body) {
            Ok(e) => Some(e),
            // The decoder's message may quote the row: only the attempt id is logged.
            Err(_) => {
                tracing::warn!(attempt_id = %id, "review queue: a row does not decode");
                None
            }
        })
        .collect())
}

impl SqliteReviewQueue {
    /// Changes a pending entry with `f` in one immediate transaction; `false` when there is
    /// no pending entry.
    async fn change(
        &self,
        attempt_id: &AttemptId,
        f: impl FnOnce(&mut ReviewEntry) + Send + 'static,
    ) -> Result<bool, StoreError> {
        let id = attempt_id.as_str().to_owned();
        self.db
            .call(move |conn| {
                let tx = conn
                    .transaction_with_behavior(TransactionBehavior::Immediate)
                    .map_err(|e| sql_error(TABLE, &id, e))?;
                let Some(mut e) = read(&tx, &id)? else {
                    return Ok(false);
                };
                if e.state != ReviewState::Pending {
                    return Ok(false);
                }
                f(&mut e);
                write(&tx, &e)?;
                tx.commit().map_err(|err| sql_error(TABLE, &id, err))?;
                Ok(true)
            })
            .await?
    }
}

#[async_trait]
impl ReviewQueue for SqliteReviewQueue {
    async fn schedule(&self, entry: &ReviewEntry) -> Result<ReviewEntry, StoreError> {
        let entry = entry.clone();
        self.db
            .call(move |conn| {
                let id = entry.attempt_id.as_str().to_owned();
                let tx = conn
                    .transaction_with_behavior(TransactionBehavior::Immediate)
                    .map_err(|e| sql_error(TABLE, &id, e))?;
                if let Some(existing) = read(&tx, &id)? {
                    return Ok(existing);
                }
                write(&tx, &entry)?;
                tx.commit().map_err(|err| sql_error(TABLE, &id, err))?;
                Ok(entry)
            })
            .await?
    }

    async fn entry(&self, attempt_id: &AttemptId) -> Result<Option<ReviewEntry>, StoreError> {
        let id = attempt_id.as_str().to_owned();
        self.db.call(move |conn| read(conn, &id)).await?
    }

    async fn due(&self, now: DateTime<Utc>, limit: usize) -> Result<Vec<ReviewEntry>, StoreError> {
        let now = nanos(now);
        self.db
            .call(move |conn| {
                list(
                    conn,
                    "SELECT attempt_id, body FROM review_queue \
                     WHERE state = 'pending' AND due_ns <= ?1 \
                     ORDER BY due_ns, attempt_id LIMIT ?2",
                    rusqlite::types::Value::Integer(now),
                    limit,
                )
            })
            .await?
    }

    async fn pending_for(
        &self,
        buyer: &BuyerId,
        limit: usize,
    ) -> Result<Vec<ReviewEntry>, StoreError> {
        let buyer = buyer.as_str().to_owned();
        self.db
            .call(move |conn| {
                list(
                    conn,
                    "SELECT attempt_id, body FROM review_queue \
                     WHERE state = 'pending' AND buyer_id = ?1 \
                     ORDER BY due_ns, attempt_id LIMIT ?2",
                    rusqlite::types::Value::Text(buyer),
                    limit,
                )
            })
            .await?
    }

    async fn complete(
        &self,
        attempt_id: &AttemptId,
        at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        self.change(attempt_id, move |e| {
            e.state = ReviewState::Sent;
            e.closed_at = Some(at);
        })
        .await
    }

    async fn cancel(&self, attempt_id: &AttemptId, at: DateTime<Utc>) -> Result<bool, StoreError> {
        self.change(attempt_id, move |e| {
            e.state = ReviewState::Cancelled;
            e.closed_at = Some(at);
        })
        .await
    }

    async fn postpone(
        &self,
        attempt_id: &AttemptId,
        due_at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        self.change(attempt_id, move |e| {
            e.due_at = due_at;
            e.tries = e.tries.saturating_add(1);
        })
        .await
    }
}
