//! [`PostgresReviewQueue`]: the review queue on PostgreSQL (migration 8). A close or a
//! postponement locks the entry's row (`SELECT ... FOR UPDATE`) in its transaction, so of two
//! instances closing one entry exactly one succeeds.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use deadpool_postgres::{GenericClient, Pool};
use tokio_postgres::IsolationLevel;

use super::schema::prepare;
use super::tx::{client, in_transaction, once, Tx};
use crate::domain::{AttemptId, BuyerId};
use crate::ports::{ReviewEntry, ReviewQueue, ReviewState, StoreError, MAX_REVIEW_BATCH};

/// The [`ReviewQueue`] on PostgreSQL.
///
/// ```no_run
/// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
/// use agent_mandate::adapters::postgres::{PostgresReviewQueue, PostgresStore};
/// let store = PostgresStore::connect(&std::env::var("DATABASE_URL")?).await?;
/// let queue = PostgresReviewQueue::from_pool(store.pool().clone()).await?;
/// # let _ = queue;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct PostgresReviewQueue {
    pool: Pool,
    retries: u32,
}

impl std::fmt::Debug for PostgresReviewQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresReviewQueue")
            .finish_non_exhaustive()
    }
}

impl PostgresReviewQueue {
    /// Uses an existing pool (for example [`super::PostgresStore::pool`]) and applies the
    /// migrations (a no-op when they are applied already).
    pub async fn from_pool(pool: Pool) -> Result<PostgresReviewQueue, StoreError> {
        let retries = 8;
        prepare(&pool, None, retries, true).await?;
        Ok(PostgresReviewQueue { pool, retries })
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

fn encode(e: &ReviewEntry) -> Result<String, Tx<StoreError>> {
    serde_json::to_string(e).map_err(|err| Tx::Fail(StoreError::Other(Box::new(err))))
}

fn decode(key: &str, body: &str) -> Result<ReviewEntry, Tx<StoreError>> {
    serde_json::from_str(body).map_err(|err| {
        Tx::Fail(StoreError::Corrupt {
            table: TABLE,
            key: key.to_owned(),
            message: err.to_string(),
        })
    })
}

async fn read<C: GenericClient>(
    c: &C,
    id: &str,
    lock: bool,
) -> Result<Option<ReviewEntry>, Tx<StoreError>> {
    let sql = if lock {
        "SELECT body FROM review_queue WHERE attempt_id = $1 FOR UPDATE"
    } else {
        "SELECT body FROM review_queue WHERE attempt_id = $1"
    };
    match c.query_opt(sql, &[&id]).await? {
        None => Ok(None),
        Some(row) => {
            let body: String = row.try_get(0)?;
            decode(id, &body).map(Some)
        }
    }
}

async fn write<C: GenericClient>(c: &C, e: &ReviewEntry) -> Result<(), Tx<StoreError>> {
    let body = encode(e)?;
    c.execute(
        "INSERT INTO review_queue (attempt_id, buyer_id, state, due_ns, body) \
         VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (attempt_id) DO UPDATE SET state = EXCLUDED.state, \
         due_ns = EXCLUDED.due_ns, body = EXCLUDED.body",
        &[
            &e.attempt_id.as_str(),
            &e.buyer_id.as_str(),
            &e.state.as_str(),
            &nanos(e.due_at),
            &body,
        ],
    )
    .await?;
    Ok(())
}

/// The entries of `rows`. A row that does not decode is left for an operator (its hold kept:
/// the sweep keeps the hold of an entry it cannot read) and never stops the others.
fn rows(rows: Vec<tokio_postgres::Row>) -> Result<Vec<ReviewEntry>, Tx<StoreError>> {
    let mut out = Vec::with_capacity(rows.len());
    for r in &rows {
        let id: String = r.try_get(0)?;
        let body: String = r.try_get(1)?;
        match decode(&id, &body) {
            Ok(e) => out.push(e),
            Err(_) => {
                tracing::warn!(attempt_id = %id, "review queue: a row does not decode");
            }
        }
    }
    Ok(out)
}

fn limit_of(limit: usize) -> i64 {
    i64::try_from(limit.min(MAX_REVIEW_BATCH)).unwrap_or(0)
}

impl PostgresReviewQueue {
    /// Changes a pending entry with `f` under its row lock; `false` when none is pending.
    async fn change(
        &self,
        attempt_id: &AttemptId,
        f: impl Fn(&mut ReviewEntry) + Send + Sync,
    ) -> Result<bool, StoreError> {
        let id = attempt_id.as_str();
        in_transaction!(
            &self.pool,
            self.retries,
            IsolationLevel::ReadCommitted,
            StoreError,
            |tx| {
                match read(&tx, id, true).await? {
                    Some(mut e) if e.state == ReviewState::Pending => {
                        f(&mut e);
                        write(&tx, &e).await?;
                        true
                    }
                    _ => false,
                }
            }
        )
    }
}

#[async_trait]
impl ReviewQueue for PostgresReviewQueue {
    async fn schedule(&self, entry: &ReviewEntry) -> Result<ReviewEntry, StoreError> {
        let id = entry.attempt_id.as_str();
        in_transaction!(
            &self.pool,
            self.retries,
            IsolationLevel::ReadCommitted,
            StoreError,
            |tx| {
                let body = encode(entry)?;
                let inserted = tx
                    .execute(
                        "INSERT INTO review_queue (attempt_id, buyer_id, state, due_ns, body) \
                         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (attempt_id) DO NOTHING",
                        &[
                            &id,
                            &entry.buyer_id.as_str(),
                            &entry.state.as_str(),
                            &nanos(entry.due_at),
                            &body,
                        ],
                    )
                    .await?;
                if inserted == 1 {
                    entry.clone()
                } else {
                    read(&tx, id, false).await?.ok_or_else(|| {
                        Tx::Fail(StoreError::Corrupt {
                            table: TABLE,
                            key: id.to_owned(),
                            message: "the entry vanished during its insert".into(),
                        })
                    })?
                }
            }
        )
    }

    async fn entry(&self, attempt_id: &AttemptId) -> Result<Option<ReviewEntry>, StoreError> {
        let c = client::<StoreError>(&self.pool).await?;
        once(read(&c, attempt_id.as_str(), false).await)
    }

    async fn due(&self, now: DateTime<Utc>, limit: usize) -> Result<Vec<ReviewEntry>, StoreError> {
        let c = client::<StoreError>(&self.pool).await?;
        let found = c
            .query(
                "SELECT attempt_id, body FROM review_queue \
                 WHERE state = 'pending' AND due_ns <= $1 \
                 ORDER BY due_ns, attempt_id LIMIT $2",
                &[&nanos(now), &limit_of(limit)],
            )
            .await
            .map_err(Tx::from);
        once(found.and_then(rows))
    }

    async fn pending_for(
        &self,
        buyer: &BuyerId,
        limit: usize,
    ) -> Result<Vec<ReviewEntry>, StoreError> {
        let c = client::<StoreError>(&self.pool).await?;
        let found = c
            .query(
                "SELECT attempt_id, body FROM review_queue \
                 WHERE state = 'pending' AND buyer_id = $1 \
                 ORDER BY due_ns, attempt_id LIMIT $2",
                &[&buyer.as_str(), &limit_of(limit)],
            )
            .await
            .map_err(Tx::from);
        once(found.and_then(rows))
    }

    async fn complete(
        &self,
        attempt_id: &AttemptId,
        at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        self.change(attempt_id, |e| {
            e.state = ReviewState::Sent;
            e.closed_at = Some(at);
        })
        .await
    }

    async fn cancel(&self, attempt_id: &AttemptId, at: DateTime<Utc>) -> Result<bool, StoreError> {
        self.change(attempt_id, |e| {
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
        self.change(attempt_id, |e| {
            e.due_at = due_at;
            e.tries = e.tries.saturating_add(1);
        })
        .await
    }
}
