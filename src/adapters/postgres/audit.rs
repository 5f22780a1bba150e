//! [`PostgresAuditSink`]: the hash-chained audit trail on PostgreSQL (I9).

use std::collections::HashMap;
use std::fmt;

use async_trait::async_trait;
use deadpool_postgres::Pool;
use tokio_postgres::{IsolationLevel, Row};

use super::config::PostgresConfig;
use super::schema::prepare;
use super::tx::{classify, client, in_transaction, Tx};
use crate::adapters::audit_index::{self, Link, Window};
use crate::domain::{
    verify_chain, verify_checkpoints, AuditCheckpoint, AuditEvent, AuditHash, AuditSubject,
    BuyerId, BuyerIndex, ChainBreak, ChainFault, ChainedEvent,
};
use crate::ports::{AuditError, AuditReceipt, AuditSegment, AuditSink, StoreError};

/// Events verified per page.
const PAGE: i64 = 1024;

/// The [`AuditSink`] port on PostgreSQL.
///
/// Events live in `audit_events (seq, prev_hash, hash, body)`, bodies as the exact text that
/// was hashed, hashes as lower-case hex. One row `audit_head (seq, hash)` records the last
/// event appended through the sink. An append locks that row (`SELECT .. FOR UPDATE`), so
/// appends from any number of connections and processes are serialised: each takes the next
/// number with no gap and links to the event before, and the events of one `append_all` are
/// appended together or not at all.
///
/// `verify` reads the head and the events in one snapshot (`REPEATABLE READ`), recomputes
/// every link, and also checks that the chain ends at the recorded head: besides an edited,
/// dropped or swapped event anywhere ([`AuditError::Broken`] naming it), it finds a dropped
/// tail (`Missing`, naming the head's number) and an event written behind the sink's back
/// after the head (`Edited`), and checks every checkpoint. A row whose hash is not hex is
/// [`AuditError::Corrupt`].
///
/// An append also indexes each event by the attempts and mandates it names
/// (`audit_subjects`) and seals a checkpoint every
/// [`CHECKPOINT_INTERVAL`](crate::domain::CHECKPOINT_INTERVAL) events (`audit_checkpoints`),
/// in its transaction; [`AuditSink::segment`] reads, in one snapshot, only the windows
/// between the checkpoints around a subject's events.
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use agent_mandate::adapters::postgres::PostgresAuditSink;
/// use agent_mandate::domain::{examples, AuditEvent, AuditKind};
/// use agent_mandate::ports::AuditSink;
///
/// let sink = PostgresAuditSink::connect("postgres://app@127.0.0.1:5432/payments").await?;
/// let event = AuditEvent {
///     at: examples::now(),
///     kind: AuditKind::AutoSuspended {
///         actor_id: "agent_123".parse()?,
///         consecutive_blocks: 3,
///     },
/// };
/// let receipt = sink.append(&event).await?;
/// assert_eq!(sink.verify().await?, Some(receipt));
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct PostgresAuditSink {
    pool: Pool,
    retries: u32,
    /// Server, database and schema ([`AuditSink::trail_id`]).
    trail: crate::ports::TrailId,
}

impl fmt::Debug for PostgresAuditSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let status = self.pool.status();
        f.debug_struct("PostgresAuditSink")
            .field("max_connections", &status.max_size)
            .field("open_connections", &status.size)
            .finish_non_exhaustive()
    }
}

/// A store failure while connecting, as the audit port reports it (the [`StoreError`] is kept
/// as the source of `Other`, so a schema from the future can still be told apart).
fn from_store(e: StoreError) -> AuditError {
    match e {
        StoreError::Unavailable { message } => AuditError::Unavailable { message },
        other => AuditError::Other(Box::new(other)),
    }
}

fn hash_of(text: &str) -> Option<AuditHash> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(text.as_bytes(), &mut out).ok()?;
    Some(AuditHash(out))
}

/// A row's sequence number (a negative one is corrupt).
fn seq_of(row: &Row) -> Result<u64, AuditError> {
    let seq: i64 = row.try_get("seq").map_err(|e| AuditError::Corrupt {
        seq: 0,
        message: format!("unreadable sequence number: {e}"),
    })?;
    u64::try_from(seq).map_err(|_| AuditError::Corrupt {
        seq: 0,
        message: format!("negative sequence number {seq}"),
    })
}

fn event_of(row: &Row) -> Result<ChainedEvent, AuditError> {
    let seq = seq_of(row)?;
    let corrupt = |message: String| AuditError::Corrupt { seq, message };
    let text = |column: &str| -> Result<String, AuditError> {
        row.try_get(column)
            .map_err(|e| corrupt(format!("column {column}: {e}")))
    };
    let prev = text("prev_hash")?;
    let hash = text("hash")?;
    Ok(ChainedEvent {
        seq,
        prev_hash: hash_of(&prev)
            .ok_or_else(|| corrupt(format!("prev_hash {prev:?} is not a hash")))?,
        hash: hash_of(&hash).ok_or_else(|| corrupt(format!("hash {hash:?} is not a hash")))?,
        body: text("body")?,
    })
}

/// The head row: (seq, hash).
fn head_of(row: &Row) -> Result<(u64, AuditHash), AuditError> {
    let seq = seq_of(row)?;
    let hash: String = row.try_get("hash").map_err(|e| AuditError::Corrupt {
        seq,
        message: format!("head hash: {e}"),
    })?;
    let hash = hash_of(&hash).ok_or_else(|| AuditError::Corrupt {
        seq,
        message: format!("the head's hash {hash:?} is not a hash"),
    })?;
    Ok((seq, hash))
}

fn checkpoint_of(row: &Row) -> Result<AuditCheckpoint, AuditError> {
    let seq = seq_of(row)?;
    let corrupt = |message: String| AuditError::Corrupt { seq, message };
    let hex = |column: &str| -> Result<AuditHash, AuditError> {
        let text: String = row
            .try_get(column)
            .map_err(|e| corrupt(format!("checkpoint {column}: {e}")))?;
        hash_of(&text).ok_or_else(|| corrupt(format!("checkpoint {column} is not a hash")))
    };
    Ok(AuditCheckpoint {
        seq,
        hash: hex("hash")?,
        seal: hex("seal")?,
    })
}

pub(super) fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn head_missing() -> AuditError {
    AuditError::Corrupt {
        seq: 0,
        message: "the audit_head row is missing".into(),
    }
}

impl PostgresAuditSink {
    /// Connects to `url` with the default [`PostgresConfig`] and applies the migrations.
    pub async fn connect(url: &str) -> Result<PostgresAuditSink, AuditError> {
        PostgresAuditSink::connect_with(&PostgresConfig::new(url)).await
    }

    /// Connects with `config` and applies the migrations (with
    /// [`PostgresConfig::with_migrations`] off: checks the schema version instead).
    pub async fn connect_with(config: &PostgresConfig) -> Result<PostgresAuditSink, AuditError> {
        let pool = config.pool().map_err(from_store)?;
        prepare(
            &pool,
            config.schema(),
            config.max_retries(),
            config.runs_migrations(),
        )
        .await
        .map_err(from_store)?;
        let trail = trail_of(&pool).await.map_err(from_store)?;
        Ok(PostgresAuditSink {
            pool,
            retries: config.max_retries(),
            trail,
        })
    }

    /// Uses an existing pool (for example [`super::PostgresStore::pool`]) and applies the
    /// migrations (a no-op when they are applied already).
    pub async fn from_pool(pool: Pool) -> Result<PostgresAuditSink, AuditError> {
        let retries = 8;
        prepare(&pool, None, retries, true)
            .await
            .map_err(from_store)?;
        let trail = trail_of(&pool).await.map_err(from_store)?;
        Ok(PostgresAuditSink {
            pool,
            retries,
            trail,
        })
    }

    /// Uses an existing pool like [`PostgresAuditSink::from_pool`] but runs no migration:
    /// checks that the schema is current (else an error whose source is
    /// [`StoreError::SchemaBehind`](crate::ports::StoreError::SchemaBehind)).
    pub async fn from_pool_checked(pool: Pool) -> Result<PostgresAuditSink, AuditError> {
        let retries = 8;
        prepare(&pool, None, retries, false)
            .await
            .map_err(from_store)?;
        let trail = trail_of(&pool).await.map_err(from_store)?;
        Ok(PostgresAuditSink {
            pool,
            retries,
            trail,
        })
    }
}

/// Locks the trail's head (one appender at a time, whatever the connection or process).
pub(super) const HEAD_LOCK: &str = "SELECT seq, hash FROM audit_head WHERE id = 1 FOR UPDATE";
/// Whose each named mandate and attempt is (`$1`: subject keys).
pub(super) const OWNERS: &str = "SELECT subject, buyer FROM audit_owners WHERE subject = ANY($1)";
/// The last sealed checkpoint.
pub(super) const LAST_CHECKPOINT: &str =
    "SELECT seq, hash, seal FROM audit_checkpoints ORDER BY seq DESC LIMIT 1";
/// The events of a batch; a number already taken is skipped (and the count tells).
const INSERT_EVENTS: &str = "INSERT INTO audit_events (seq, prev_hash, hash, body) \
     SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[]) \
     ON CONFLICT (seq) DO NOTHING";
/// The events of a batch sent with its COMMIT: a number already taken fails the statement
/// (`unique_violation`), so the transaction rolls back.
pub(super) const INSERT_EVENTS_OR_FAIL: &str =
    "INSERT INTO audit_events (seq, prev_hash, hash, body) \
     SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[])";
/// The subject and buyer index rows of a batch.
pub(super) const INSERT_INDEX: &str = "INSERT INTO audit_subjects (subject, seq) \
     SELECT * FROM unnest($1::text[], $2::bigint[]) ON CONFLICT DO NOTHING";
/// The owners a batch teaches.
pub(super) const INSERT_OWNERS: &str = "INSERT INTO audit_owners (subject, buyer) \
     SELECT * FROM unnest($1::text[], $2::text[]) ON CONFLICT DO NOTHING";
/// The new head (`$1`, `$2`), set only over the head the append was planned on (`$3`, `$4`):
/// a head moved by anything else, whatever kept the lock from preventing it (a repair by
/// hand, a writer that forgot the lock), divides by zero (`division_by_zero`), which fails
/// the statement and rolls the append back instead of overwriting the other head.
pub(super) const UPDATE_HEAD: &str = "WITH u AS (UPDATE audit_head SET seq = $1, hash = $2 \
       WHERE id = 1 AND seq = $3 AND hash = $4 RETURNING 1) \
     SELECT 1 / count(*) FROM u";

/// The head's parameters for [`UPDATE_HEAD`]: the new number and hash, the old ones.
pub(super) type HeadMove = (i64, String, i64, String);

/// What appending a batch writes, computed from the head, the owners and the last checkpoint
/// read under the head's lock.
#[derive(Debug, Default)]
pub(super) struct TrailPlan {
    /// The event rows: numbers, previous hashes, hashes, bodies.
    pub(super) seqs: Vec<i64>,
    pub(super) prevs: Vec<String>,
    pub(super) hashes: Vec<String>,
    pub(super) bodies: Vec<String>,
    /// The index rows: subject keys and numbers.
    pub(super) index: (Vec<String>, Vec<i64>),
    /// The owners learned: subject keys and buyers.
    pub(super) learned: (Vec<String>, Vec<String>),
    /// The first and last numbers of the batch, and the last hash.
    pub(super) first: u64,
    pub(super) last: u64,
    pub(super) head_hash: AuditHash,
    /// The head the batch was planned on (its hash; its number is `first - 1`).
    pub(super) from_hash: AuditHash,
    /// The checkpoints due after the batch (from, upto), and the last one sealed.
    pub(super) due: Option<(u64, u64)>,
    pub(super) last_checkpoint: Option<AuditCheckpoint>,
}

impl TrailPlan {
    /// The head's parameters: the new number and hash, then the ones it replaces.
    pub(super) fn head_params(&self) -> HeadMove {
        (
            to_i64(self.last),
            self.head_hash.to_hex(),
            to_i64(self.first.saturating_sub(1)),
            self.from_hash.to_hex(),
        )
    }

    /// The error of a head that moved under the append (see [`UPDATE_HEAD`]).
    pub(super) fn moved(&self) -> AuditError {
        AuditError::Corrupt {
            seq: self.first,
            message: format!(
                "the trail's head is no longer number {} under the append's lock",
                self.first.saturating_sub(1)
            ),
        }
    }

    /// The error of an event row that already exists.
    pub(super) fn taken(&self) -> AuditError {
        AuditError::Corrupt {
            seq: self.first,
            message: format!(
                "an event the sink did not append already has a number from {} to {}",
                self.first, self.last
            ),
        }
    }
}

/// Plans the append of `events` after the head `head`, knowing the `owners` rows and the
/// `last` checkpoint row.
pub(super) fn plan_append(
    head: Option<&Row>,
    owners: &[Row],
    last: Option<&Row>,
    events: &[&AuditEvent],
) -> Result<TrailPlan, AuditError> {
    let head = head.ok_or_else(head_missing)?;
    let (mut seq, mut prev) = head_of(head)?;
    let last_checkpoint = last.map(checkpoint_of).transpose()?;
    let mut known: HashMap<String, BuyerId> = HashMap::new();
    for row in owners {
        let subject: String = row.try_get(0).map_err(|e| AuditError::Other(Box::new(e)))?;
        let buyer: String = row.try_get(1).map_err(|e| AuditError::Other(Box::new(e)))?;
        if let Ok(b) = BuyerId::new(buyer) {
            known.insert(subject, b);
        }
    }
    let mut plan = TrailPlan {
        first: seq + 1,
        from_hash: prev,
        last_checkpoint,
        ..TrailPlan::default()
    };
    let mut buyers = BuyerIndex::new();
    for event in events {
        let body = event.to_body();
        let keys = subject_keys(event);
        let facts = match buyers.facts(&event.kind, |s| {
            Ok::<_, std::convert::Infallible>(known.get(&s.key()).cloned())
        }) {
            Ok(f) => f,
            Err(never) => match never {},
        };
        seq += 1;
        let n = i64::try_from(seq)
            .map_err(|_| AuditError::Other("postgres: the trail is full".into()))?;
        for k in keys {
            plan.index.0.push(k);
            plan.index.1.push(n);
        }
        if let Some(buyer) = facts.buyer {
            for owned in facts.owns {
                let k = owned.key();
                if !known.contains_key(&k) {
                    known.insert(k.clone(), buyer.clone());
                    plan.learned.0.push(k);
                    plan.learned.1.push(buyer.to_string());
                }
            }
            plan.index.0.push(AuditSubject::Buyer(buyer).key());
            plan.index.1.push(n);
        }
        let hash = crate::domain::chain_hash(seq, &prev, &body);
        plan.seqs.push(n);
        plan.prevs.push(prev.to_hex());
        plan.hashes.push(hash.to_hex());
        plan.bodies.push(body);
        prev = hash;
    }
    plan.last = seq;
    plan.head_hash = prev;
    plan.due = audit_index::due(plan.last_checkpoint.as_ref(), seq);
    Ok(plan)
}

/// The subject keys every event of `events` names (what [`OWNERS`] is asked for).
pub(super) fn named_subjects(events: &[&AuditEvent]) -> Vec<String> {
    events.iter().flat_map(|e| subject_keys(e)).collect()
}

/// Seals the checkpoints `plan` makes due, over the links stored (the batch's rows must be
/// inserted already), inside the caller's transaction.
pub(super) async fn seal_due<C: deadpool_postgres::GenericClient>(
    tx: &C,
    plan: &TrailPlan,
) -> Result<(), Tx<AuditError>> {
    let Some((from, upto)) = plan.due else {
        return Ok(());
    };
    let rows = tx
        .query(
            "SELECT seq, prev_hash, hash, '' AS body FROM audit_events \
             WHERE seq >= $1 AND seq <= $2 ORDER BY seq",
            &[&to_i64(from), &to_i64(upto)],
        )
        .await?;
    let links: Vec<Link> = rows
        .iter()
        .map(|r| event_of(r).map(|e| (e.seq, e.prev_hash, e.hash)))
        .collect::<Result<_, _>>()
        .map_err(Tx::Fail)?;
    for c in audit_index::seal(plan.last_checkpoint.as_ref(), &links) {
        tx.execute(
            "INSERT INTO audit_checkpoints (seq, hash, seal) VALUES ($1, $2, $3)",
            &[&to_i64(c.seq), &c.hash.to_hex(), &c.seal.to_hex()],
        )
        .await?;
    }
    Ok(())
}

/// Appends `events` (indexed by their subjects and buyer) in the caller's transaction: the
/// sink's own append, and a store's that writes the trail directly
/// ([`crate::ports::Store::direct_trail`]). Locks the `audit_head` row until the transaction
/// ends, so appends are serialised whoever makes them. The head's lock, the owners and the
/// last checkpoint are read in one pipelined round trip (in that order: the reads after the
/// lock see what the previous appender committed), the rows written in a second.
pub(super) async fn append_in<C: deadpool_postgres::GenericClient>(
    tx: &C,
    events: &[&AuditEvent],
) -> Result<Option<AuditReceipt>, Tx<AuditError>> {
    let named = named_subjects(events);
    let (head_st, (owners_st, last_st)) = super::tx::join2(
        tx.prepare_cached(HEAD_LOCK),
        super::tx::join2(
            tx.prepare_cached(OWNERS),
            tx.prepare_cached(LAST_CHECKPOINT),
        ),
    )
    .await;
    let (head_st, owners_st, last_st) = (head_st?, owners_st?, last_st?);
    let (head, (owners, last)) = super::tx::join2(
        tx.query_opt(&head_st, &[]),
        super::tx::join2(tx.query(&owners_st, &[&named]), tx.query_opt(&last_st, &[])),
    )
    .await;
    let plan = plan_append(head?.as_ref(), &owners?, last?.as_ref(), events).map_err(Tx::Fail)?;
    let (ins_st, (index_st, (owners_ins_st, head_up_st))) = super::tx::join2(
        tx.prepare_cached(INSERT_EVENTS),
        super::tx::join2(
            tx.prepare_cached(INSERT_INDEX),
            super::tx::join2(
                tx.prepare_cached(INSERT_OWNERS),
                tx.prepare_cached(UPDATE_HEAD),
            ),
        ),
    )
    .await;
    let (ins_st, index_st, owners_ins_st, head_up_st) =
        (ins_st?, index_st?, owners_ins_st?, head_up_st?);
    let (written, (indexed, learned)) = super::tx::join2(
        tx.execute(
            &ins_st,
            &[&plan.seqs, &plan.prevs, &plan.hashes, &plan.bodies],
        ),
        super::tx::join2(
            async {
                if plan.index.0.is_empty() {
                    Ok(0)
                } else {
                    tx.execute(&index_st, &[&plan.index.0, &plan.index.1]).await
                }
            },
            async {
                if plan.learned.0.is_empty() {
                    Ok(0)
                } else {
                    tx.execute(&owners_ins_st, &[&plan.learned.0, &plan.learned.1])
                        .await
                }
            },
        ),
    )
    .await;
    if written? != plan.seqs.len() as u64 {
        return Err(Tx::Fail(plan.taken()));
    }
    indexed?;
    learned?;
    seal_due(tx, &plan).await?;
    let (n, hash, from, from_hash) = plan.head_params();
    tx.execute(&head_up_st, &[&n, &hash, &from, &from_hash])
        .await
        .map_err(|e| {
            if e.code() == Some(&tokio_postgres::error::SqlState::DIVISION_BY_ZERO) {
                Tx::Fail(plan.moved())
            } else {
                Tx::Pg(e)
            }
        })?;
    Ok(Some(AuditReceipt {
        seq: plan.last,
        hash: plan.head_hash,
    }))
}

/// The index keys of the subjects `event` names.
pub(super) fn subject_keys(event: &AuditEvent) -> Vec<String> {
    AuditSubject::of(&event.kind)
        .iter()
        .map(AuditSubject::key)
        .collect()
}

/// The name of the trail the connections of `pool` write: server, database and schema.
pub(super) async fn trail_of(pool: &Pool) -> Result<crate::ports::TrailId, StoreError> {
    let c = client(pool).await?;
    let row = c
        .query_one(
            "SELECT coalesce(host(inet_server_addr()), 'local') || ':' || \
             coalesce(inet_server_port()::text, '') || '/' || current_database() || '/' || \
             coalesce(current_schema(), '')",
            &[],
        )
        .await
        .map_err(classify::<StoreError>)?;
    Ok(crate::ports::TrailId::new(format!(
        "postgres:{}",
        row.get::<_, String>(0)
    )))
}

#[async_trait]
impl AuditSink for PostgresAuditSink {
    fn trail_id(&self) -> Option<crate::ports::TrailId> {
        Some(self.trail.clone())
    }

    async fn append(&self, event: &AuditEvent) -> Result<AuditReceipt, AuditError> {
        self.append_all(std::slice::from_ref(event))
            .await?
            .ok_or_else(|| AuditError::Other("postgres: an append returned no receipt".into()))
    }

    async fn append_all(&self, events: &[AuditEvent]) -> Result<Option<AuditReceipt>, AuditError> {
        if events.is_empty() {
            return Ok(None);
        }
        let refs: Vec<&AuditEvent> = events.iter().collect();
        in_transaction!(
            &self.pool,
            self.retries,
            IsolationLevel::ReadCommitted,
            AuditError,
            |tx| { append_in(&tx, &refs).await? }
        )
    }

    async fn read(&self, from_seq: u64, limit: usize) -> Result<Vec<ChainedEvent>, AuditError> {
        let (Ok(from), Ok(limit)) = (i64::try_from(from_seq), i64::try_from(limit)) else {
            return Ok(Vec::new());
        };
        if limit == 0 {
            return Ok(Vec::new());
        }
        let client = client::<AuditError>(&self.pool).await?;
        let rows = client
            .query(
                "SELECT seq, prev_hash, hash, body FROM audit_events WHERE seq >= $1 \
                 ORDER BY seq LIMIT $2",
                &[&from, &limit],
            )
            .await
            .map_err(classify::<AuditError>)?;
        rows.iter().map(event_of).collect()
    }

    async fn head(&self) -> Result<Option<AuditReceipt>, AuditError> {
        let client = client::<AuditError>(&self.pool).await?;
        let row = client
            .query_opt("SELECT seq, hash FROM audit_head WHERE id = 1", &[])
            .await
            .map_err(classify::<AuditError>)?
            .ok_or_else(head_missing)?;
        let (seq, hash) = head_of(&row)?;
        Ok((seq > 0).then_some(AuditReceipt { seq, hash }))
    }

    async fn verify(&self) -> Result<Option<AuditReceipt>, AuditError> {
        in_transaction!(
            &self.pool,
            self.retries,
            IsolationLevel::RepeatableRead,
            AuditError,
            |tx| {
                let head = tx
                    .query_opt("SELECT seq, hash FROM audit_head WHERE id = 1", &[])
                    .await?
                    .ok_or_else(|| Tx::Fail(head_missing()))?;
                let (head_seq, head_hash) = head_of(&head).map_err(Tx::Fail)?;
                let page = tx
                    .prepare_cached(
                        "SELECT seq, prev_hash, hash, body FROM audit_events WHERE seq >= $1 \
                         ORDER BY seq LIMIT $2",
                    )
                    .await?;
                let mut prev = AuditHash::GENESIS;
                let mut next: u64 = 1;
                loop {
                    let from = i64::try_from(next).unwrap_or(i64::MAX);
                    let rows = tx.query(&page, &[&from, &PAGE]).await?;
                    if rows.is_empty() {
                        break;
                    }
                    let events = rows
                        .iter()
                        .map(event_of)
                        .collect::<Result<Vec<_>, _>>()
                        .map_err(Tx::Fail)?;
                    prev = verify_chain(&events, next, prev)
                        .map_err(|b| Tx::Fail(AuditError::Broken(b)))?;
                    next += events.len() as u64;
                }
                let last = next - 1;
                let fault = if last < head_seq {
                    // The tail was dropped.
                    Some((head_seq, last + 1, ChainFault::Missing))
                } else if last > head_seq {
                    // Events the sink never appended, after its head.
                    Some((head_seq + 1, head_seq + 1, ChainFault::Edited))
                } else if prev != head_hash {
                    Some((head_seq, head_seq, ChainFault::Edited))
                } else {
                    None
                };
                if let Some((seq, expected_seq, fault)) = fault {
                    return Err(Tx::Fail(AuditError::Broken(ChainBreak {
                        seq,
                        expected_seq,
                        fault,
                    })));
                }
                let rows = tx
                    .query(
                        "SELECT c.seq, c.hash, c.seal, e.hash AS event_hash \
                         FROM audit_checkpoints c LEFT JOIN audit_events e ON e.seq = c.seq \
                         ORDER BY c.seq",
                        &[],
                    )
                    .await?;
                let mut checkpoints = Vec::with_capacity(rows.len());
                let mut at = std::collections::HashMap::with_capacity(rows.len());
                for r in &rows {
                    let c = checkpoint_of(r).map_err(Tx::Fail)?;
                    let h: Option<String> = r.try_get("event_hash").ok().flatten();
                    if let Some(h) = h.as_deref().and_then(hash_of) {
                        at.insert(c.seq, h);
                    }
                    checkpoints.push(c);
                }
                verify_checkpoints(&checkpoints, |s| at.get(&s).copied())
                    .map_err(|f| Tx::Fail(AuditError::from(f)))?;
                (last > 0).then_some(AuditReceipt {
                    seq: last,
                    hash: prev,
                })
            }
        )
    }

    async fn indexed(
        &self,
        subject: &AuditSubject,
        from_seq: u64,
        limit: usize,
    ) -> Result<Option<Vec<ChainedEvent>>, AuditError> {
        let (Ok(from), Ok(limit)) = (i64::try_from(from_seq), i64::try_from(limit)) else {
            return Ok(Some(Vec::new()));
        };
        let client = client::<AuditError>(&self.pool).await?;
        let rows = client
            .query(
                "SELECT e.seq, e.prev_hash, e.hash, e.body FROM audit_subjects s \
                 JOIN audit_events e ON e.seq = s.seq \
                 WHERE s.subject = $1 AND s.seq >= $2 ORDER BY s.seq LIMIT $3",
                &[&subject.key(), &from, &limit],
            )
            .await
            .map_err(classify::<AuditError>)?;
        rows.iter()
            .map(event_of)
            .collect::<Result<_, _>>()
            .map(Some)
    }

    async fn segment(&self, subject: &AuditSubject) -> Result<AuditSegment, AuditError> {
        let key = subject.key();
        let read = in_transaction!(
            &self.pool,
            self.retries,
            IsolationLevel::RepeatableRead,
            AuditError,
            |tx| {
                let seqs: Vec<u64> = tx
                    .query(
                        "SELECT seq FROM audit_subjects WHERE subject = $1 ORDER BY seq",
                        &[&key],
                    )
                    .await?
                    .iter()
                    .map(seq_of)
                    .collect::<Result<_, _>>()
                    .map_err(Tx::Fail)?;
                let below = tx
                    .prepare_cached(
                        "SELECT seq, hash, seal FROM audit_checkpoints WHERE seq < $1 \
                         ORDER BY seq DESC LIMIT 2",
                    )
                    .await?;
                let above = tx
                    .prepare_cached(
                        "SELECT seq, hash, seal FROM audit_checkpoints WHERE seq >= $1 \
                         ORDER BY seq LIMIT 1",
                    )
                    .await?;
                let window = tx
                    .prepare_cached(
                        "SELECT seq, prev_hash, hash, body FROM audit_events \
                         WHERE seq >= $1 AND seq <= $2 ORDER BY seq",
                    )
                    .await?;
                let mut read: Vec<(Window, Vec<ChainedEvent>)> = Vec::new();
                for n in seqs {
                    if read
                        .iter()
                        .any(|(w, _)| n >= w.first() && w.last().is_none_or(|l| n <= l))
                    {
                        continue;
                    }
                    let b = tx.query(&below, &[&to_i64(n)]).await?;
                    let a = tx.query_opt(&above, &[&to_i64(n)]).await?;
                    let cps = |rows: &[Row]| -> Result<Vec<AuditCheckpoint>, AuditError> {
                        rows.iter().map(checkpoint_of).collect()
                    };
                    let mut b = cps(&b).map_err(Tx::Fail)?;
                    let lo = if b.is_empty() {
                        None
                    } else {
                        Some(b.remove(0))
                    };
                    let w = Window {
                        before: b.pop(),
                        lo,
                        hi: a
                            .as_ref()
                            .map(checkpoint_of)
                            .transpose()
                            .map_err(Tx::Fail)?,
                    };
                    let rows = tx
                        .query(
                            &window,
                            &[&to_i64(w.first()), &to_i64(w.last().unwrap_or(u64::MAX))],
                        )
                        .await?;
                    let events = rows
                        .iter()
                        .map(event_of)
                        .collect::<Result<Vec<_>, _>>()
                        .map_err(Tx::Fail)?;
                    read.push((w, events));
                }
                read
            }
        )?;
        Ok(audit_index::assemble(subject, read))
    }
}
