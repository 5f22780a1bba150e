//! [`SqliteAuditSink`]: the hash-chained audit trail in the `audit_events` table.

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension};

use super::codec::sql_error;
use super::SqliteDatabase;
use crate::adapters::audit_index::{self, Link, Window};
use crate::domain::{
    verify_checkpoints, AuditCheckpoint, AuditEvent, AuditHash, AuditKind, AuditSubject, BuyerId,
    BuyerIndex, ChainedEvent,
};
use crate::ports::{verify_events, AuditError, AuditReceipt, AuditSegment, AuditSink, StoreError};

/// The [`AuditSink`] port on a [`SqliteDatabase`].
///
/// Appends run in a write transaction (`BEGIN IMMEDIATE`): the head is read and the next
/// event inserted under SQLite's write lock, so appends from several connections or
/// processes never share a sequence number. Bodies are stored exactly as hashed, so
/// [`AuditSink::verify`] recomputes every link from the table: an event edited, deleted or
/// moved directly in the database is named by its sequence number.
///
/// Each append also indexes the event by the attempts and mandates it names and by its buyer
/// (`audit_subjects`, with `audit_owners` for whose each mandate and attempt is) and seals a checkpoint every
/// [`CHECKPOINT_INTERVAL`](crate::domain::CHECKPOINT_INTERVAL) events (`audit_checkpoints`),
/// in the same transaction; [`AuditSink::segment`] reads and verifies only the windows
/// between the checkpoints around a subject's events, and [`AuditSink::verify`] checks every
/// checkpoint too.
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

    async fn append_bodies(&self, bodies: Vec<Body>) -> Result<Option<AuditReceipt>, AuditError> {
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

/// An event to append: its body, the index keys of its subjects, and its kind (for the buyer
/// index, found in the append's transaction).
type Body = (String, Vec<String>, AuditKind);

fn body_of(event: &AuditEvent) -> Body {
    (
        event.to_body(),
        AuditSubject::of(&event.kind)
            .iter()
            .map(AuditSubject::key)
            .collect(),
        event.kind.clone(),
    )
}

/// Indexes event `n` under its buyer (`audit_owners` says whose each mandate and attempt is),
/// recording the mandates and attempts it ties to that buyer.
fn index_buyer(
    tx: &Connection,
    buyers: &mut BuyerIndex,
    kind: &AuditKind,
    n: i64,
) -> Result<(), AuditError> {
    let fail = |e| audit_error(sql_error("audit_owners", "index", e));
    let mut owner = tx
        .prepare_cached("SELECT buyer FROM audit_owners WHERE subject = ?1")
        .map_err(fail)?;
    let facts = buyers.facts(kind, |s| {
        let found: Option<String> = owner
            .query_row(params![s.key()], |r| r.get(0))
            .optional()
            .map_err(fail)?;
        Ok::<_, AuditError>(found.and_then(|b| BuyerId::new(b).ok()))
    })?;
    let Some(buyer) = facts.buyer else {
        return Ok(());
    };
    let mut own = tx
        .prepare_cached("INSERT OR IGNORE INTO audit_owners (subject, buyer) VALUES (?1, ?2)")
        .map_err(fail)?;
    for s in &facts.owns {
        own.execute(params![s.key(), buyer.as_str()])
            .map_err(fail)?;
    }
    tx.prepare_cached("INSERT OR IGNORE INTO audit_subjects (subject, seq) VALUES (?1, ?2)")
        .and_then(|mut i| i.execute(params![AuditSubject::Buyer(buyer).key(), n]))
        .map_err(fail)?;
    Ok(())
}

/// Up to `limit` events indexed under `key` from `from` on.
fn indexed_in(
    conn: &Connection,
    key: &str,
    from: u64,
    limit: usize,
) -> Result<Vec<ChainedEvent>, AuditError> {
    let fail = |e| audit_error(sql_error("audit_subjects", "indexed", e));
    let mut stmt = conn
        .prepare_cached(
            "SELECT e.seq, e.prev_hash, e.hash, e.body FROM audit_subjects s \
             JOIN audit_events e ON e.seq = s.seq \
             WHERE s.subject = ?1 AND s.seq >= ?2 ORDER BY s.seq LIMIT ?3",
        )
        .map_err(fail)?;
    chained_rows(
        &mut stmt,
        params![key, to_i64(from), i64::try_from(limit).unwrap_or(i64::MAX)],
        fail,
    )
}

/// Runs `stmt` (selecting `seq, prev_hash, hash, body`) and reads its rows as chained events.
fn chained_rows(
    stmt: &mut rusqlite::CachedStatement<'_>,
    params: impl rusqlite::Params,
    fail: impl Fn(rusqlite::Error) -> AuditError,
) -> Result<Vec<ChainedEvent>, AuditError> {
    let rows = stmt
        .query_map(params, |r| {
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
}

fn checkpoint_of(seq: i64, hash: &str, seal: &str) -> Result<AuditCheckpoint, AuditError> {
    let seq = seq_of(seq)?;
    Ok(AuditCheckpoint {
        seq,
        hash: parse_hash(seq, hash)?,
        seal: parse_hash(seq, seal)?,
    })
}

fn checkpoints_where(
    conn: &Connection,
    sql: &str,
    n: i64,
) -> Result<Vec<AuditCheckpoint>, AuditError> {
    let fail = |e| audit_error(sql_error("audit_checkpoints", "read", e));
    let mut stmt = conn.prepare_cached(sql).map_err(fail)?;
    let rows = stmt
        .query_map(params![n], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
            ))
        })
        .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
        .map_err(fail)?;
    rows.iter()
        .map(|(seq, hash, seal)| checkpoint_of(*seq, hash, seal))
        .collect()
}

fn last_checkpoint(conn: &Connection) -> Result<Option<AuditCheckpoint>, AuditError> {
    Ok(checkpoints_where(
        conn,
        "SELECT seq, hash, seal FROM audit_checkpoints WHERE seq <= ?1 ORDER BY seq DESC LIMIT 1",
        i64::MAX,
    )?
    .pop())
}

/// Seals every checkpoint due up to `head`, over links that hold.
fn seal_due(conn: &Connection, head: u64) -> Result<(), AuditError> {
    let last = last_checkpoint(conn)?;
    let Some((from, upto)) = audit_index::due(last.as_ref(), head) else {
        return Ok(());
    };
    let fail = |e| audit_error(sql_error("audit_checkpoints", "seal", e));
    let links: Vec<Link> = {
        let mut stmt = conn
            .prepare_cached(
                "SELECT seq, prev_hash, hash FROM audit_events WHERE seq >= ?1 AND seq <= ?2 \
                 ORDER BY seq",
            )
            .map_err(fail)?;
        let rows = stmt
            .query_map(params![to_i64(from), to_i64(upto)], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                ))
            })
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
            .map_err(fail)?;
        rows.iter()
            .map(|(seq, prev, hash)| {
                let seq = seq_of(*seq)?;
                Ok((seq, parse_hash(seq, prev)?, parse_hash(seq, hash)?))
            })
            .collect::<Result<_, AuditError>>()?
    };
    let mut insert = conn
        .prepare_cached("INSERT INTO audit_checkpoints (seq, hash, seal) VALUES (?1, ?2, ?3)")
        .map_err(fail)?;
    for c in audit_index::seal(last.as_ref(), &links) {
        insert
            .execute(params![to_i64(c.seq), c.hash.to_hex(), c.seal.to_hex()])
            .map_err(fail)?;
    }
    Ok(())
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn event_rows(
    conn: &Connection,
    from: u64,
    to: u64,
    limit: i64,
) -> Result<Vec<ChainedEvent>, AuditError> {
    let fail = |e| audit_error(sql_error("audit_events", "read", e));
    let mut stmt = conn
        .prepare_cached(
            "SELECT seq, prev_hash, hash, body FROM audit_events \
             WHERE seq >= ?1 AND seq <= ?2 ORDER BY seq LIMIT ?3",
        )
        .map_err(fail)?;
    chained_rows(&mut stmt, params![to_i64(from), to_i64(to), limit], fail)
}

/// The subject's segment, in one read transaction.
fn segment_in(conn: &Connection, subject: &AuditSubject) -> Result<AuditSegment, AuditError> {
    let fail = |e| audit_error(sql_error("audit_subjects", "read", e));
    let seqs: Vec<u64> = {
        let mut stmt = conn
            .prepare_cached("SELECT seq FROM audit_subjects WHERE subject = ?1 ORDER BY seq")
            .map_err(fail)?;
        let rows = stmt
            .query_map(params![subject.key()], |r| r.get::<_, i64>(0))
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
            .map_err(fail)?;
        rows.into_iter().map(seq_of).collect::<Result<_, _>>()?
    };
    let windows = audit_index::plan(&seqs, |n| {
        let n = to_i64(n);
        let mut below = checkpoints_where(
            conn,
            "SELECT seq, hash, seal FROM audit_checkpoints WHERE seq < ?1 ORDER BY seq DESC LIMIT 2",
            n,
        )?;
        let hi = checkpoints_where(
            conn,
            "SELECT seq, hash, seal FROM audit_checkpoints WHERE seq >= ?1 ORDER BY seq LIMIT 1",
            n,
        )?
        .pop();
        let lo = if below.is_empty() {
            None
        } else {
            Some(below.remove(0))
        };
        Ok::<_, AuditError>(Window {
            before: below.pop(),
            lo,
            hi,
        })
    })?;
    let mut read = Vec::with_capacity(windows.len());
    for w in windows {
        let events = event_rows(conn, w.first(), w.last().unwrap_or(u64::MAX), i64::MAX)?;
        read.push((w, events));
    }
    Ok(audit_index::assemble(subject, read))
}

/// Every checkpoint against the event at its number.
fn verify_checkpoints_in(conn: &Connection) -> Result<(), AuditError> {
    let fail = |e| audit_error(sql_error("audit_checkpoints", "verify", e));
    let mut stmt = conn
        .prepare_cached(
            "SELECT c.seq, c.hash, c.seal, e.hash FROM audit_checkpoints c \
             LEFT JOIN audit_events e ON e.seq = c.seq ORDER BY c.seq",
        )
        .map_err(fail)?;
    let rows = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, Option<String>>(3)?,
            ))
        })
        .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
        .map_err(fail)?;
    let mut checkpoints = Vec::with_capacity(rows.len());
    let mut at = std::collections::HashMap::with_capacity(rows.len());
    for (seq, hash, seal, event_hash) in &rows {
        let c = checkpoint_of(*seq, hash, seal)?;
        if let Some(h) = event_hash {
            at.insert(c.seq, parse_hash(c.seq, h)?);
        }
        checkpoints.push(c);
    }
    verify_checkpoints(&checkpoints, |s| at.get(&s).copied())?;
    Ok(())
}

/// Appends `events` in the caller's write transaction for a store that writes the trail
/// directly ([`crate::ports::Store::direct_trail`]), as the sink's own append does.
pub(super) fn append_direct_in(
    conn: &Connection,
    events: &[&AuditEvent],
) -> Result<(), StoreError> {
    if events.is_empty() {
        return Ok(());
    }
    let bodies = events.iter().map(|e| body_of(e)).collect();
    append_in(conn, bodies).map(|_| ()).map_err(|e| match e {
        AuditError::Unavailable { message } => StoreError::Unavailable { message },
        other => StoreError::Other(Box::new(other)),
    })
}

/// Appends in the caller's write transaction (a group commit of the connection's thread).
fn append_in(tx: &Connection, bodies: Vec<Body>) -> Result<Option<AuditReceipt>, AuditError> {
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
        let mut index = tx
            .prepare_cached("INSERT OR IGNORE INTO audit_subjects (subject, seq) VALUES (?1, ?2)")
            .map_err(fail)?;
        let mut buyers = BuyerIndex::new();
        for (body, subjects, kind) in bodies {
            seq += 1;
            let e = ChainedEvent::link(seq, prev, body);
            let n = i64::try_from(seq).map_err(|_| AuditError::Corrupt {
                seq,
                message: "the sequence number overflows".into(),
            })?;
            insert
                .execute(params![n, e.prev_hash.to_hex(), e.hash.to_hex(), e.body])
                .map_err(fail)?;
            for subject in subjects {
                index.execute(params![subject, n]).map_err(fail)?;
            }
            index_buyer(tx, &mut buyers, &kind, n)?;
            prev = e.hash;
        }
    }
    seal_due(tx, seq)?;
    Ok((seq > 0).then_some(AuditReceipt { seq, hash: prev }))
}

#[async_trait]
impl AuditSink for SqliteAuditSink {
    async fn append(&self, event: &AuditEvent) -> Result<AuditReceipt, AuditError> {
        self.append_bodies(vec![body_of(event)])
            .await?
            .ok_or_else(|| AuditError::Unavailable {
                message: "the append wrote nothing".into(),
            })
    }

    async fn append_all(&self, events: &[AuditEvent]) -> Result<Option<AuditReceipt>, AuditError> {
        if events.is_empty() {
            return Ok(None);
        }
        self.append_bodies(events.iter().map(body_of).collect())
            .await
    }

    fn trail_id(&self) -> Option<crate::ports::TrailId> {
        Some(self.db.trail_id())
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

    async fn verify(&self) -> Result<Option<AuditReceipt>, AuditError> {
        let head = verify_events(self).await?;
        self.db
            .read(|conn| verify_checkpoints_in(conn))
            .await
            .map_err(audit_error)??;
        Ok(head)
    }

    async fn indexed(
        &self,
        subject: &AuditSubject,
        from_seq: u64,
        limit: usize,
    ) -> Result<Option<Vec<ChainedEvent>>, AuditError> {
        let key = subject.key();
        self.db
            .read(move |conn| indexed_in(conn, &key, from_seq, limit).map(Some))
            .await
            .map_err(audit_error)?
    }

    async fn segment(&self, subject: &AuditSubject) -> Result<AuditSegment, AuditError> {
        let subject = subject.clone();
        self.db
            .read(move |conn| {
                // One snapshot for the index, the checkpoints and the windows.
                let tx = conn
                    .unchecked_transaction()
                    .map_err(|e| audit_error(sql_error("audit_subjects", "segment", e)))?;
                segment_in(&tx, &subject)
            })
            .await
            .map_err(audit_error)?
    }
}
