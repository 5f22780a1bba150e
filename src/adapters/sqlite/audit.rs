//! [`SqliteAuditSink`]: the hash-chained audit trail in the `audit_events` table.

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension};

use super::codec::sql_error;
use super::SqliteDatabase;
use crate::domain::{AuditEvent, AuditHash, ChainedEvent};
use crate::ports::{AuditError, AuditReceipt, AuditSink, StoreError};

/// The [`AuditSink`] port on a [`SqliteDatabase`].
///
/// Appends run in a write transaction (`BEGIN IMMEDIATE`): the head is read and the next
/// event inserted under SQLite's write lock, so appends from several connections or
/// processes never share a sequence number. Bodies are stored exactly as hashed, so
/// [`AuditSink::verify`] recomputes every link from the table: an event edited, deleted or
/// moved directly in the database is named by its sequence number.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// use agent_mandate::adapters::sqlite::{SqliteConfig, SqliteDatabase};
/// use agent_mandate::domain::{AttemptId, AuditEvent, AuditKind};
/// use agent_mandate::ports::AuditSink;
///
/// let sink = SqliteDatabase::open(SqliteConfig::in_memory()).unwrap().audit_sink();
/// let event = AuditEvent {
///     at: chrono::DateTime::UNIX_EPOCH,
///     kind: AuditKind::OrderFailed {
///         attempt_id: AttemptId::new("att_1").unwrap(),
///         reason: "out of stock".into(),
///     },
/// };
/// let receipt = sink.append(&event).await.unwrap();
/// assert_eq!(receipt.seq, 1);
/// assert_eq!(sink.verify().await.unwrap(), Some(receipt));
/// # });
/// ```
#[derive(Debug, Clone)]
pub struct SqliteAuditSink {
    db: SqliteDatabase,
}

impl SqliteAuditSink {
    pub(super) fn new(db: SqliteDatabase) -> SqliteAuditSink {
        SqliteAuditSink { db }
    }

    /// The database this sink is on.
    pub fn database(&self) -> &SqliteDatabase {
        &self.db
    }

    async fn append_bodies(&self, bodies: Vec<String>) -> Result<Option<AuditReceipt>, AuditError> {
        self.db
            .write(move |conn| append_in(conn, bodies).map_err(Appending::Audit))
            .await
            .map_err(|e| match e {
                Appending::Audit(e) => e,
                Appending::Store(e) => audit_error(e),
            })
    }
}

/// Maps a store failure of the connection to the audit port's errors.
pub(super) fn audit_error(e: StoreError) -> AuditError {
    match e {
        StoreError::Unavailable { message } => AuditError::Unavailable { message },
        other => AuditError::Other(Box::new(other)),
    }
}

fn head(conn: &Connection) -> Result<Option<AuditReceipt>, AuditError> {
    let row: Option<(i64, String)> = conn
        .prepare_cached("SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1")
        .and_then(|mut s| s.query_row([], |r| Ok((r.get(0)?, r.get(1)?))).optional())
        .map_err(|e| audit_error(sql_error("audit_events", "head", e)))?;
    let Some((seq, hash)) = row else {
        return Ok(None);
    };
    let seq = seq_of(seq)?;
    Ok(Some(AuditReceipt {
        seq,
        hash: parse_hash(seq, &hash)?,
    }))
}

fn seq_of(seq: i64) -> Result<u64, AuditError> {
    u64::try_from(seq)
        .ok()
        .filter(|&s| s > 0)
        .ok_or_else(|| AuditError::Corrupt {
            seq: 0,
            message: format!("sequence number {seq} is not positive"),
        })
}

pub(super) fn parse_hash(seq: u64, hex_text: &str) -> Result<AuditHash, AuditError> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(hex_text, &mut out).map_err(|_| AuditError::Corrupt {
        seq,
        message: "a stored hash is not 64 hex digits".into(),
    })?;
    Ok(AuditHash(out))
}

/// An append's failure: its own, or the batch's.
enum Appending {
    Audit(AuditError),
    Store(StoreError),
}

impl From<StoreError> for Appending {
    fn from(e: StoreError) -> Self {
        Appending::Store(e)
    }
}

/// Appends in the caller's write transaction (a group commit of the connection's thread).
fn append_in(tx: &Connection, bodies: Vec<String>) -> Result<Option<AuditReceipt>, AuditError> {
    let fail = |e| audit_error(sql_error("audit_events", "append", e));
    let (mut seq, mut prev) = match head(tx)? {
        Some(h) => (h.seq, h.hash),
        None => (0, AuditHash::GENESIS),
    };
    {
        let mut insert = tx
            .prepare_cached(
                "INSERT INTO audit_events (seq, prev_hash, hash, body) VALUES (?1, ?2, ?3, ?4)",
            )
            .map_err(fail)?;
        for body in bodies {
            seq += 1;
            let e = ChainedEvent::link(seq, prev, body);
            let n = i64::try_from(seq).map_err(|_| AuditError::Corrupt {
                seq,
                message: "the sequence number overflows".into(),
            })?;
            insert
                .execute(params![n, e.prev_hash.to_hex(), e.hash.to_hex(), e.body])
                .map_err(fail)?;
            prev = e.hash;
        }
    }
    Ok((seq > 0).then_some(AuditReceipt { seq, hash: prev }))
}

#[async_trait]
impl AuditSink for SqliteAuditSink {
    async fn append(&self, event: &AuditEvent) -> Result<AuditReceipt, AuditError> {
        self.append_bodies(vec![event.to_body()])
            .await?
            .ok_or_else(|| AuditError::Unavailable {
                message: "the append wrote nothing".into(),
            })
    }

    async fn append_all(&self, events: &[AuditEvent]) -> Result<Option<AuditReceipt>, AuditError> {
        if events.is_empty() {
            return Ok(None);
        }
        self.append_bodies(events.iter().map(AuditEvent::to_body).collect())
            .await
    }

    async fn read(&self, from_seq: u64, limit: usize) -> Result<Vec<ChainedEvent>, AuditError> {
        let from = i64::try_from(from_seq).unwrap_or(i64::MAX);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.db
            .read(move |conn| {
                let fail = |e| audit_error(sql_error("audit_events", "read", e));
                let mut stmt = conn
                    .prepare_cached(
                        "SELECT seq, prev_hash, hash, body FROM audit_events \
                         WHERE seq >= ?1 ORDER BY seq LIMIT ?2",
                    )
                    .map_err(fail)?;
                let rows = stmt
                    .query_map(params![from, limit], |r| {
                        Ok((
                            r.get::<_, i64>(0)?,
                            r.get::<_, String>(1)?,
                            r.get::<_, String>(2)?,
                            r.get::<_, String>(3)?,
                        ))
                    })
                    .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
                    .map_err(fail)?;
                rows.into_iter()
                    .map(|(seq, prev, hash, body)| {
                        let seq = seq_of(seq)?;
                        Ok(ChainedEvent {
                            seq,
                            prev_hash: parse_hash(seq, &prev)?,
                            hash: parse_hash(seq, &hash)?,
                            body,
                        })
                    })
                    .collect()
            })
            .await
            .map_err(audit_error)?
    }

    async fn head(&self) -> Result<Option<AuditReceipt>, AuditError> {
        self.db.read(|conn| head(conn)).await.map_err(audit_error)?
    }
}
