//! [`SqliteOutbox`]: the webhook outbox in the `audit_outbox` table (features `sqlite` and
//! `http`).

use async_trait::async_trait;
use rusqlite::params;

use super::audit::{audit_error, parse_hash};
use super::codec::sql_error;
use super::SqliteDatabase;
use crate::adapters::http::Outbox;
use crate::domain::ChainedEvent;
use crate::ports::AuditError;

/// A durable [`Outbox`] for [`WebhookAuditSink`](crate::adapters::http::WebhookAuditSink):
/// events wait in the `audit_outbox` table of a [`SqliteDatabase`] until the receiver
/// acknowledged them, across restarts. Each call is one transaction; a delivered event keeps
/// its row (without its body), so enqueueing it again changes nothing. The `delivered`
/// column is 0 for a pending event, 1 for a delivered one and 2 for a dead-lettered one (the
/// receiver refused it permanently), which keeps its row and its body.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// use agent_mandate::adapters::http::Outbox;
/// use agent_mandate::adapters::sqlite::{SqliteConfig, SqliteDatabase};
/// use agent_mandate::domain::{AuditHash, ChainedEvent};
///
/// let outbox = SqliteDatabase::open(SqliteConfig::in_memory()).unwrap().outbox();
/// let event = ChainedEvent::link(1, AuditHash::GENESIS, "{}".into());
/// outbox.enqueue(&event).await.unwrap();
/// assert_eq!(outbox.pending(10).await.unwrap(), vec![event]);
/// outbox.mark_delivered(1).await.unwrap();
/// assert!(outbox.pending(10).await.unwrap().is_empty());
/// # });
/// ```
#[derive(Debug, Clone)]
pub struct SqliteOutbox {
    db: SqliteDatabase,
}

impl SqliteOutbox {
    pub(super) fn new(db: SqliteDatabase) -> SqliteOutbox {
        SqliteOutbox { db }
    }
}

fn seq_param(seq: u64) -> Result<i64, AuditError> {
    i64::try_from(seq).map_err(|_| AuditError::Corrupt {
        seq,
        message: "the sequence number does not fit SQLite's integers".into(),
    })
}

impl SqliteOutbox {
    /// The events in `state` (0 pending, 2 dead-lettered), lowest seq first.
    async fn rows(&self, state: i64, limit: usize) -> Result<Vec<ChainedEvent>, AuditError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = self
            .db
            .call(move |conn| {
                conn.prepare_cached(
                    "SELECT seq, prev_hash, hash, body FROM audit_outbox \
                     WHERE delivered = ?1 ORDER BY seq LIMIT ?2",
                )
                .and_then(|mut s| {
                    s.query_map([state, limit], |r| {
                        Ok((
                            r.get::<_, i64>(0)?,
                            r.get::<_, String>(1)?,
                            r.get::<_, String>(2)?,
                            r.get::<_, String>(3)?,
                        ))
                    })?
                    .collect::<Result<Vec<_>, _>>()
                })
                .map_err(|e| {
                    sql_error(
                        "audit_outbox",
                        if state == 0 {
                            "pending"
                        } else {
                            "dead_lettered"
                        },
                        e,
                    )
                })
            })
            .await
            .and_then(|r| r)
            .map_err(audit_error)?;
        rows.into_iter()
            .map(|(seq, prev, h, body)| {
                let seq = u64::try_from(seq).map_err(|_| AuditError::Corrupt {
                    seq: 0,
                    message: format!("outbox sequence number {seq} is negative"),
                })?;
                Ok(ChainedEvent {
                    seq,
                    prev_hash: parse_hash(seq, &prev)?,
                    hash: parse_hash(seq, &h)?,
                    body,
                })
            })
            .collect()
    }
}

#[async_trait]
impl Outbox for SqliteOutbox {
    async fn enqueue(&self, event: &ChainedEvent) -> Result<(), AuditError> {
        let seq = seq_param(event.seq)?;
        let (prev, hash, body) = (
            event.prev_hash.to_hex(),
            event.hash.to_hex(),
            event.body.clone(),
        );
        self.db
            .call(move |conn| {
                conn.prepare_cached(
                    "INSERT OR IGNORE INTO audit_outbox (seq, prev_hash, hash, body, delivered) \
                     VALUES (?1, ?2, ?3, ?4, 0)",
                )
                .and_then(|mut s| s.execute(params![seq, prev, hash, body]))
                .map(|_| ())
                .map_err(|e| sql_error("audit_outbox", &seq.to_string(), e))
            })
            .await
            .and_then(|r| r)
            .map_err(audit_error)
    }

    async fn pending(&self, limit: usize) -> Result<Vec<ChainedEvent>, AuditError> {
        self.rows(0, limit).await
    }

    async fn mark_delivered(&self, seq: u64) -> Result<(), AuditError> {
        let seq = seq_param(seq)?;
        self.db
            .call(move |conn| {
                conn.prepare_cached(
                    "INSERT INTO audit_outbox (seq, prev_hash, hash, body, delivered) \
                     VALUES (?1, '', '', '', 1) \
                     ON CONFLICT (seq) DO UPDATE SET delivered = 1, body = ''",
                )
                .and_then(|mut s| s.execute([seq]))
                .map(|_| ())
                .map_err(|e| sql_error("audit_outbox", &seq.to_string(), e))
            })
            .await
            .and_then(|r| r)
            .map_err(audit_error)
    }

    async fn mark_dead_lettered(&self, seq: u64) -> Result<(), AuditError> {
        let seq = seq_param(seq)?;
        self.db
            .call(move |conn| {
                conn.prepare_cached(
                    "UPDATE audit_outbox SET delivered = 2 WHERE seq = ?1 AND delivered = 0",
                )
                .and_then(|mut s| s.execute([seq]))
                .map(|_| ())
                .map_err(|e| sql_error("audit_outbox", &seq.to_string(), e))
            })
            .await
            .and_then(|r| r)
            .map_err(audit_error)
    }

    async fn dead_lettered(&self, limit: usize) -> Result<Vec<ChainedEvent>, AuditError> {
        self.rows(2, limit).await
    }

    async fn last_enqueued(&self) -> Result<Option<u64>, AuditError> {
        let max = self
            .db
            .call(|conn| {
                conn.query_row("SELECT MAX(seq) FROM audit_outbox", [], |r| {
                    r.get::<_, Option<i64>>(0)
                })
                .map_err(|e| sql_error("audit_outbox", "last_enqueued", e))
            })
            .await
            .and_then(|r| r)
            .map_err(audit_error)?;
        Ok(max.and_then(|m| u64::try_from(m).ok()))
    }

    async fn pending_count(&self) -> Result<usize, AuditError> {
        let n = self
            .db
            .call(|conn| {
                conn.query_row(
                    "SELECT COUNT(*) FROM audit_outbox WHERE delivered = 0",
                    [],
                    |r| r.get::<_, i64>(0),
                )
                .map_err(|e| sql_error("audit_outbox", "pending_count", e))
            })
            .await
            .and_then(|r| r)
            .map_err(audit_error)?;
        Ok(usize::try_from(n).unwrap_or(0))
    }
}
