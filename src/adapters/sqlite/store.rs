//! [`SqliteStore`]: the [`Store`] port on SQLite.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, TimeDelta, Utc};
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use super::codec::{corrupt, decode, encode, nanos, sql_error, time};
use super::{ledger, SqliteDatabase};
use crate::domain::{
    ActorId, AttemptId, AttemptStatus, AuditEvent, BuyerId, CartSnapshot, Confirmation,
    ContentDigest, Mandate, MandateId, MandateStatus, Money, Order, Party, PaymentAttempt,
    SnapshotId, Suspensions, Usage,
};
use crate::ports::{
    AttemptChange, Begin, ChallengeConsumed, ChallengeUse, Fence, HoldError, HoldOp, HoldRecord,
    HoldRequest, IdempotencyScope, InputsQuery, InsertOrder, OpenPayment, Opened, PaymentInputs,
    RefundPolicy, StagedEvent, Store, StoreError, StoredResult, Write, Written,
};

/// Longest chain [`Store::chain`] follows (as the memory store).
const MAX_DEPTH: usize = 64;

/// The [`Store`] port on a [`SqliteDatabase`]: every call is one transaction, writes take
/// SQLite's write lock at their start (`BEGIN IMMEDIATE`). See the [module docs](super).
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// use agent_mandate::adapters::sqlite::{SqliteConfig, SqliteDatabase};
/// use agent_mandate::domain::{examples, AttemptId, Currency, Money};
/// use agent_mandate::ports::{HoldError, HoldRequest, Store};
///
/// let store = SqliteDatabase::open(SqliteConfig::in_memory()).unwrap().store();
/// let mandate = examples::travel_backpack_mandate(); // lifetime cap EUR 150.00
/// store.insert_mandate(&mandate).await.unwrap();
/// let chain = store.chain(mandate.id()).await.unwrap();
/// let eur = |a| Money::parse(a, Currency::EUR).unwrap();
/// let hold = |id: &str, a| {
///     HoldRequest::on_chain(AttemptId::new(id).unwrap(), eur(a), examples::now(), &chain)
/// };
/// store.place_hold(&hold("attempt_1", "144.00")).await.unwrap();
/// assert!(matches!(
///     store.place_hold(&hold("attempt_2", "10.00")).await,
///     Err(HoldError::Refused { .. })
/// ));
/// # });
/// ```
#[derive(Debug, Clone)]
pub struct SqliteStore {
    db: SqliteDatabase,
    /// Events go straight to the database's audit trail ([`SqliteDatabase::store_with_trail`]).
    direct: bool,
}

impl SqliteStore {
    pub(super) fn new(db: SqliteDatabase, direct: bool) -> SqliteStore {
        SqliteStore { db, direct }
    }

    /// The database this store is on.
    pub fn database(&self) -> &SqliteDatabase {
        &self.db
    }

    /// Runs `f` in a write transaction (`BEGIN IMMEDIATE`), committed if `f` succeeds: the
    /// next group commit of the connection's thread, in a savepoint of its own (an `Err`
    /// rolls back `f`'s writes alone). Answers after the commit.
    async fn write<R, E>(
        &self,
        _what: &'static str,
        f: impl FnOnce(&Connection) -> Result<R, E> + Send + 'static,
    ) -> Result<R, E>
    where
        R: Send + 'static,
        E: From<StoreError> + Send + 'static,
    {
        self.db.write(f).await
    }

    /// Runs `f` in a read transaction (one consistent snapshot) on a read connection.
    async fn read<R>(
        &self,
        what: &'static str,
        f: impl FnOnce(&Connection) -> Result<R, StoreError> + Send + 'static,
    ) -> Result<R, StoreError>
    where
        R: Send + 'static,
    {
        self.db
            .read(move |conn| {
                let tx = conn
                    .transaction_with_behavior(TransactionBehavior::Deferred)
                    .map_err(|e| sql_error(what, "begin", e))?;
                let out = f(&tx)?;
                // Ending a read transaction cannot lose anything.
                let _ = tx.finish();
                Ok(out)
            })
            .await?
    }
}

fn mandate_row(conn: &Connection, id: &str) -> Result<Option<Mandate>, StoreError> {
    let body: Option<String> = conn
        .prepare_cached("SELECT body FROM mandates WHERE id = ?1")
        .and_then(|mut s| s.query_row([id], |r| r.get(0)).optional())
        .map_err(|e| sql_error("mandates", id, e))?;
    let Some(body) = body else { return Ok(None) };
    let m: Mandate = decode("mandates", id, &body)?;
    if m.id().as_str() != id {
        return Err(corrupt(
            "mandates",
            id,
            format!("the body is mandate {}", m.id()),
        ));
    }
    Ok(Some(m))
}

pub(super) fn attempt_row(
    conn: &Connection,
    id: &str,
) -> Result<Option<PaymentAttempt>, StoreError> {
    let body: Option<String> = conn
        .prepare_cached("SELECT body FROM attempts WHERE id = ?1")
        .and_then(|mut s| s.query_row([id], |r| r.get(0)).optional())
        .map_err(|e| sql_error("attempts", id, e))?;
    let Some(body) = body else { return Ok(None) };
    let a: PaymentAttempt = decode("attempts", id, &body)?;
    if a.id.as_str() != id {
        return Err(corrupt(
            "attempts",
            id,
            format!("the body is attempt {}", a.id),
        ));
    }
    Ok(Some(a))
}

fn order_row(conn: &Connection, attempt_id: &str) -> Result<Option<Order>, StoreError> {
    let body: Option<String> = conn
        .prepare_cached("SELECT body FROM orders WHERE attempt_id = ?1")
        .and_then(|mut s| s.query_row([attempt_id], |r| r.get(0)).optional())
        .map_err(|e| sql_error("orders", attempt_id, e))?;
    body.map(|b| decode("orders", attempt_id, &b)).transpose()
}

fn is_unique_violation(e: &rusqlite::Error) -> bool {
    e.sqlite_error_code() == Some(rusqlite::ErrorCode::ConstraintViolation)
}

fn scope_key(scope: &IdempotencyScope) -> String {
    format!("{}/{}/{}", scope.actor_id, scope.operation, scope.key)
}

fn party(p: &Party) -> (&'static str, &str) {
    match p {
        Party::Actor(a) => ("actor", a.as_str()),
        Party::Buyer(b) => ("buyer", b.as_str()),
        Party::Credentials(a) => ("credentials", a.as_str()),
    }
}

/// Replaces an attempt if its status is still `expected`.
fn update_attempt_in(
    conn: &Connection,
    a: &PaymentAttempt,
    expected: AttemptStatus,
) -> Result<(), StoreError> {
    let id = a.id.as_str();
    let status: Option<String> = conn
        .prepare_cached("SELECT status FROM attempts WHERE id = ?1")
        .and_then(|mut s| s.query_row([id], |r| r.get(0)).optional())
        .map_err(|e| sql_error("attempts", id, e))?;
    let Some(status) = status else {
        return Err(StoreError::NotFound {
            entity: "attempt",
            id: id.to_string(),
        });
    };
    if status != expected.as_str() {
        return Err(StoreError::Conflict {
            entity: "attempt",
            id: id.to_string(),
            message: format!("the status is {status}, not {expected}"),
        });
    }
    let body = encode("attempts", id, a)?;
    conn.prepare_cached("UPDATE attempts SET status = ?2, body = ?3 WHERE id = ?1")
        .and_then(|mut s| s.execute(params![id, a.status.as_str(), body]))
        .map_err(|e| sql_error("attempts", id, e))?;
    Ok(())
}

/// Completes an idempotency record.
/// `Ok` while `fence` holds its record (in the caller's transaction).
pub(super) fn check_fence_in(conn: &Connection, fence: &Fence) -> Result<(), StoreError> {
    let scope = &fence.scope;
    let key = scope_key(scope);
    let token = i64::try_from(fence.token).map_err(|_| StoreError::Fenced { key: key.clone() })?;
    let held: Option<i64> = conn
        .prepare_cached(
            "SELECT 1 FROM idempotency WHERE actor_id = ?1 AND operation = ?2 AND key = ?3 \
             AND state = 'in_flight' AND token = ?4",
        )
        .and_then(|mut s| {
            s.query_row(
                params![
                    scope.actor_id.as_str(),
                    scope.operation,
                    scope.key.as_str(),
                    token
                ],
                |r| r.get(0),
            )
            .optional()
        })
        .map_err(|e| sql_error("idempotency", &key, e))?;
    match held {
        Some(_) => Ok(()),
        None => Err(StoreError::Fenced { key }),
    }
}

fn complete_in(
    conn: &Connection,
    fence: &Fence,
    result: &StoredResult,
    retain_until: DateTime<Utc>,
) -> Result<(), StoreError> {
    check_fence_in(conn, fence)?;
    let scope = &fence.scope;
    let key = scope_key(scope);
    let body = encode("idempotency", &key, result)?;
    let until = nanos(retain_until).unwrap_or(i64::MAX);
    let n = conn
        .prepare_cached(
            "UPDATE idempotency SET state = 'completed', lease_until = NULL, \
                                    result = ?4, retain_until = ?5 \
             WHERE actor_id = ?1 AND operation = ?2 AND key = ?3",
        )
        .and_then(|mut s| {
            s.execute(params![
                scope.actor_id.as_str(),
                scope.operation,
                scope.key.as_str(),
                body,
                until
            ])
        })
        .map_err(|e| sql_error("idempotency", &key, e))?;
    if n == 0 {
        return Err(StoreError::NotFound {
            entity: "idempotency record",
            id: key,
        });
    }
    Ok(())
}

fn insert_mandate_in(conn: &Connection, m: &Mandate) -> Result<(), StoreError> {
    let id = m.id().as_str();
    let body = encode("mandates", id, &m)?;
    let parent = m.parent_id().map(|p| p.as_str().to_string());
    conn.prepare_cached(
        "INSERT INTO mandates (id, parent_id, status, currency, body) \
             VALUES (?1, ?2, ?3, ?4, ?5)",
    )
    .and_then(|mut s| {
        s.execute(params![
            id,
            parent,
            m.status().as_str(),
            m.currency().code(),
            body
        ])
    })
    .map_err(|e| {
        if is_unique_violation(&e) {
            StoreError::Conflict {
                entity: "mandate",
                id: id.to_string(),
                message: "the id is taken".into(),
            }
        } else {
            sql_error("mandates", id, e)
        }
    })?;
    Ok(())
}

fn update_mandate_in(
    conn: &Connection,
    m: &Mandate,
    expected: MandateStatus,
) -> Result<(), StoreError> {
    let id = m.id().as_str();
    let stored = mandate_row(conn, id)?.ok_or_else(|| StoreError::NotFound {
        entity: "mandate",
        id: id.to_string(),
    })?;
    let next = crate::adapters::mandate_rules::relifecycle(&stored, m, expected)?;
    let body = encode("mandates", id, &next)?;
    conn.prepare_cached("UPDATE mandates SET status = ?2, body = ?3 WHERE id = ?1 AND status = ?4")
        .and_then(|mut s| s.execute(params![id, next.status().as_str(), body, expected.as_str()]))
        .map_err(|e| sql_error("mandates", id, e))?;
    Ok(())
}

fn insert_confirmation_in(conn: &Connection, c: &Confirmation) -> Result<(), StoreError> {
    let id = c.id.as_str();
    let stored: Option<String> = conn
        .prepare_cached("SELECT body FROM confirmations WHERE id = ?1")
        .and_then(|mut s| s.query_row([id], |r| r.get(0)).optional())
        .map_err(|e| sql_error("confirmations", id, e))?;
    if let Some(body) = stored {
        let stored: Confirmation = decode("confirmations", id, &body)?;
        if stored == *c {
            return Ok(());
        }
        return Err(StoreError::Conflict {
            entity: "confirmation",
            id: id.to_string(),
            message: "another confirmation has this id".into(),
        });
    }
    let body = encode("confirmations", id, &c)?;
    conn.prepare_cached(
        "INSERT INTO confirmations (id, buyer_id, snapshot_id, body) \
             VALUES (?1, ?2, ?3, ?4)",
    )
    .and_then(|mut s| {
        s.execute(params![
            id,
            c.buyer_id.as_str(),
            c.snapshot_id.to_string(),
            body
        ])
    })
    .map_err(|e| sql_error("confirmations", id, e))?;
    Ok(())
}

pub(super) fn insert_attempt_in(conn: &Connection, a: &PaymentAttempt) -> Result<(), StoreError> {
    let id = a.id.as_str();
    let body = encode("attempts", id, &a)?;
    let created = nanos(a.created_at)?;
    conn.prepare_cached(
        "INSERT INTO attempts (id, status, created_at, body) VALUES (?1, ?2, ?3, ?4)",
    )
    .and_then(|mut s| s.execute(params![id, a.status.as_str(), created, body]))
    .map_err(|e| {
        if is_unique_violation(&e) {
            StoreError::Conflict {
                entity: "attempt",
                id: id.to_string(),
                message: "the id is taken".into(),
            }
        } else {
            sql_error("attempts", id, e)
        }
    })?;
    Ok(())
}

fn insert_order_in(conn: &Connection, o: &Order) -> Result<InsertOrder, StoreError> {
    let attempt = o.attempt_id.as_str();
    if let Some(existing) = order_row(conn, attempt)? {
        return Ok(InsertOrder::Existing(existing));
    }
    let other: Option<String> = conn
        .prepare_cached("SELECT attempt_id FROM orders WHERE order_id = ?1")
        .and_then(|mut s| s.query_row([o.id.as_str()], |r| r.get(0)).optional())
        .map_err(|e| sql_error("orders", o.id.as_str(), e))?;
    if let Some(other) = other {
        return Err(StoreError::Conflict {
            entity: "order",
            id: o.id.to_string(),
            message: format!("the id is taken by the order of attempt {other}"),
        });
    }
    let body = encode("orders", attempt, &o)?;
    conn.prepare_cached("INSERT INTO orders (attempt_id, order_id, body) VALUES (?1, ?2, ?3)")
        .and_then(|mut s| s.execute(params![attempt, o.id.as_str(), body]))
        .map_err(|e| sql_error("orders", attempt, e))?;
    Ok(InsertOrder::Inserted)
}

fn set_suspended_in(
    conn: &Connection,
    kind: &str,
    id: &str,
    suspended: bool,
) -> Result<(), StoreError> {
    let sql = if suspended {
        "INSERT OR IGNORE INTO suspensions (kind, party_id) VALUES (?1, ?2)"
    } else {
        "DELETE FROM suspensions WHERE kind = ?1 AND party_id = ?2"
    };
    conn.prepare_cached(sql)
        .and_then(|mut s| s.execute(params![kind, id]))
        .map_err(|e| sql_error("suspensions", id, e))?;
    Ok(())
}

/// The chain from the root to `leaf` (in the caller's transaction).
pub(super) fn chain_in(conn: &Connection, leaf: &MandateId) -> Result<Vec<Mandate>, StoreError> {
    let Some(mut current) = mandate_row(conn, leaf.as_str())? else {
        return Ok(Vec::new());
    };
    let mut chain = vec![current.clone()];
    while let Some(parent) = current.parent_id().cloned() {
        let here = current.id().to_string();
        if chain.len() >= MAX_DEPTH {
            return Err(corrupt(
                "mandates",
                &here,
                format!("the chain of {leaf} is deeper than {MAX_DEPTH} levels"),
            ));
        }
        if chain.iter().any(|m| *m.id() == parent) {
            return Err(corrupt(
                "mandates",
                &here,
                format!("the parents loop back to {parent}"),
            ));
        }
        current = mandate_row(conn, parent.as_str())?
            .ok_or_else(|| corrupt("mandates", &here, format!("the parent {parent} is missing")))?;
        chain.push(current.clone());
    }
    chain.reverse();
    Ok(chain)
}

/// The suspensions among `actors` and `buyer` (in the caller's transaction).
pub(super) fn suspensions_in(
    conn: &Connection,
    actors: &[ActorId],
    buyer: &BuyerId,
) -> Result<Suspensions, StoreError> {
    let mut stmt = conn
        .prepare_cached("SELECT 1 FROM suspensions WHERE kind = ?1 AND party_id = ?2")
        .map_err(|e| sql_error("suspensions", "select", e))?;
    let mut on = |kind: &str, id: &str| {
        stmt.query_row(params![kind, id], |_| Ok(()))
            .optional()
            .map(|r| r.is_some())
            .map_err(|e| sql_error("suspensions", id, e))
    };
    let mut found: Vec<ActorId> = Vec::new();
    let mut credentials: Vec<ActorId> = Vec::new();
    for a in actors {
        if !found.contains(a) && on("actor", a.as_str())? {
            found.push(a.clone());
        }
        if !credentials.contains(a) && on("credentials", a.as_str())? {
            credentials.push(a.clone());
        }
    }
    let buyers = if on("buyer", buyer.as_str())? {
        vec![buyer.clone()]
    } else {
        Vec::new()
    };
    Ok(Suspensions {
        actors: found,
        buyers,
        credentials,
    })
}

/// The confirmations of `buyer` for `snapshot` (in the caller's transaction).
pub(super) fn confirmations_in(
    conn: &Connection,
    buyer: &BuyerId,
    snapshot: &str,
) -> Result<Vec<Confirmation>, StoreError> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT id, body FROM confirmations \
             WHERE buyer_id = ?1 AND snapshot_id = ?2 ORDER BY rowid",
        )
        .map_err(|e| sql_error("confirmations", buyer.as_str(), e))?;
    let rows = stmt
        .query_map(params![buyer.as_str(), snapshot], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
        })
        .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
        .map_err(|e| sql_error("confirmations", buyer.as_str(), e))?;
    rows.iter()
        .map(|(id, body)| decode("confirmations", id, body))
        .collect()
}

/// Keeps a snapshot (in the caller's transaction).
pub(super) fn put_snapshot_in(conn: &Connection, s: &CartSnapshot) -> Result<(), StoreError> {
    let id = s.id().to_string();
    let body = encode("snapshots", &id, &s)?;
    conn.prepare_cached("INSERT OR IGNORE INTO snapshots (id, body) VALUES (?1, ?2)")
        .and_then(|mut st| st.execute(params![id, body]))
        .map_err(|e| sql_error("snapshots", &id, e))?;
    Ok(())
}

/// Looks up or starts the record of `scope` (in the caller's transaction).
pub(super) fn begin_in(
    conn: &Connection,
    scope: IdempotencyScope,
    fingerprint: ContentDigest,
    now: DateTime<Utc>,
    lease: Duration,
) -> Result<Begin, StoreError> {
    let key = scope_key(&scope);
    let keys = params![scope.actor_id.as_str(), scope.operation, scope.key.as_str()];
    let row = conn
        .prepare_cached(
            "SELECT fingerprint, state, lease_until, result, retain_until \
             FROM idempotency WHERE actor_id = ?1 AND operation = ?2 AND key = ?3",
        )
        .and_then(|mut s| {
            s.query_row(keys, |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, Option<i64>>(2)?,
                    r.get::<_, Option<String>>(3)?,
                    r.get::<_, Option<i64>>(4)?,
                ))
            })
            .optional()
        })
        .map_err(|e| sql_error("idempotency", &key, e))?;
    let now_n = nanos(now)?;
    if let Some((recorded, state, lease_until, result, retain_until)) = row {
        let recorded = ContentDigest::parse(&recorded)
            .map_err(|e| corrupt("idempotency", &key, format!("fingerprint: {e}")))?;
        match (state.as_str(), lease_until, result, retain_until) {
            ("completed", _, Some(result), Some(until)) if now_n < until => {
                return Ok(if recorded == fingerprint {
                    Begin::Replay(decode("idempotency", &key, &result)?)
                } else {
                    Begin::Conflict { recorded }
                });
            }
            ("completed", _, Some(_), Some(_)) => {}
            ("in_flight", Some(until), _, _) if now_n < until => {
                return Ok(if recorded == fingerprint {
                    let left = time(until) - now;
                    Begin::InFlight {
                        retry_after: left.to_std().unwrap_or(Duration::ZERO),
                    }
                } else {
                    Begin::Conflict { recorded }
                });
            }
            ("in_flight", Some(_), _, _) => {}
            (other, ..) => {
                return Err(corrupt(
                    "idempotency",
                    &key,
                    format!("state {other:?} with missing or extra fields"),
                ))
            }
        }
    }
    let lease_until = TimeDelta::from_std(lease)
        .ok()
        .and_then(|d| now.checked_add_signed(d))
        .and_then(|t| t.timestamp_nanos_opt())
        .unwrap_or(i64::MAX);
    let token: i64 = conn
        .prepare_cached(
            "INSERT INTO counters (name, value) VALUES ('lease_token', 1) \
             ON CONFLICT (name) DO UPDATE SET value = value + 1 RETURNING value",
        )
        .and_then(|mut s| s.query_row([], |r| r.get(0)))
        .map_err(|e| sql_error("counters", "lease_token", e))?;
    conn.prepare_cached(
        "INSERT INTO idempotency (actor_id, operation, key, fingerprint, state, \
                                  lease_until, result, retain_until, token) \
         VALUES (?1, ?2, ?3, ?4, 'in_flight', ?5, NULL, NULL, ?6) \
         ON CONFLICT (actor_id, operation, key) DO UPDATE SET \
           fingerprint = excluded.fingerprint, state = 'in_flight', \
           lease_until = excluded.lease_until, result = NULL, retain_until = NULL, \
           token = excluded.token",
    )
    .and_then(|mut s| {
        s.execute(params![
            scope.actor_id.as_str(),
            scope.operation,
            scope.key.as_str(),
            fingerprint.to_string(),
            lease_until,
            token
        ])
    })
    .map_err(|e| sql_error("idempotency", &key, e))?;
    let token = u64::try_from(token)
        .map_err(|_| corrupt("counters", "lease_token", format!("value {token}")))?;
    Ok(Begin::Started(Fence { scope, token }))
}

/// Resets the count of blocked requests of `actor` (in the caller's transaction).
pub(super) fn reset_blocks_in(conn: &Connection, actor: &ActorId) -> Result<(), StoreError> {
    conn.prepare_cached("DELETE FROM blocks WHERE actor_id = ?1")
        .and_then(|mut s| s.execute([actor.as_str()]))
        .map_err(|e| sql_error("blocks", actor.as_str(), e))?;
    Ok(())
}

/// Appends `events` to the audit outbox (in the caller's transaction); with `direct`, appends
/// them to the database's audit trail instead, chained and indexed in the same transaction,
/// all but the alert events, which are staged (see [`Store::direct_trail`]).
pub(super) fn stage_in(
    conn: &Connection,
    events: &[AuditEvent],
    direct: bool,
) -> Result<(), StoreError> {
    if events.is_empty() {
        return Ok(());
    }
    let staged: Vec<&AuditEvent> = if direct {
        let (alerts, trail): (Vec<&AuditEvent>, Vec<&AuditEvent>) = events
            .iter()
            .partition(|e| matches!(e.kind, crate::domain::AuditKind::Alert { .. }));
        super::audit::append_direct_in(conn, &trail)?;
        alerts
    } else {
        events.iter().collect()
    };
    if staged.is_empty() {
        return Ok(());
    }
    let mut stmt = conn
        .prepare_cached("INSERT INTO audit_pending (body) VALUES (?1)")
        .map_err(|e| sql_error("audit_pending", "insert", e))?;
    for event in staged {
        let body = encode("audit_pending", "event", event)?;
        stmt.execute([body])
            .map_err(|e| sql_error("audit_pending", "insert", e))?;
    }
    Ok(())
}

#[async_trait]
impl Store for SqliteStore {
    fn direct_trail(&self) -> Option<crate::ports::TrailId> {
        self.direct.then(|| self.db.trail_id())
    }

    async fn insert_mandate(&self, mandate: &Mandate) -> Result<(), StoreError> {
        let m = mandate.clone();
        self.write("mandates", move |conn| insert_mandate_in(conn, &m))
            .await
    }

    async fn mandate(&self, id: &MandateId) -> Result<Option<Mandate>, StoreError> {
        let id = id.clone();
        self.read("mandates", move |conn| mandate_row(conn, id.as_str()))
            .await
    }

    async fn update_mandate(
        &self,
        mandate: &Mandate,
        expected: MandateStatus,
    ) -> Result<(), StoreError> {
        let m = mandate.clone();
        self.write("mandates", move |conn| {
            update_mandate_in(conn, &m, expected)
        })
        .await
    }

    async fn chain(&self, leaf: &MandateId) -> Result<Vec<Mandate>, StoreError> {
        let leaf = leaf.clone();
        self.read("mandates", move |conn| chain_in(conn, &leaf))
            .await
    }

    async fn set_suspended(&self, party_: &Party, suspended: bool) -> Result<(), StoreError> {
        let (kind, id) = party(party_);
        let id = id.to_string();
        self.write("suspensions", move |conn| {
            set_suspended_in(conn, kind, &id, suspended)
        })
        .await
    }

    async fn suspensions(
        &self,
        actors: &[ActorId],
        buyer: &BuyerId,
    ) -> Result<Suspensions, StoreError> {
        let actors = actors.to_vec();
        let buyer = buyer.clone();
        self.read("suspensions", move |conn| {
            suspensions_in(conn, &actors, &buyer)
        })
        .await
    }

    async fn insert_confirmation(&self, confirmation: &Confirmation) -> Result<(), StoreError> {
        let c = confirmation.clone();
        self.write("confirmations", move |conn| {
            insert_confirmation_in(conn, &c)
        })
        .await
    }

    async fn confirmations(
        &self,
        buyer: &BuyerId,
        snapshot: &SnapshotId,
    ) -> Result<Vec<Confirmation>, StoreError> {
        let buyer = buyer.clone();
        let snapshot = snapshot.to_string();
        self.read("confirmations", move |conn| {
            confirmations_in(conn, &buyer, &snapshot)
        })
        .await
    }

    async fn put_snapshot(&self, snapshot: &CartSnapshot) -> Result<(), StoreError> {
        let s = snapshot.clone();
        self.write("snapshots", move |conn| put_snapshot_in(conn, &s))
            .await
    }

    async fn snapshot(&self, id: &SnapshotId) -> Result<Option<CartSnapshot>, StoreError> {
        let id = id.to_string();
        self.read("snapshots", move |conn| {
            let body: Option<String> = conn
                .prepare_cached("SELECT body FROM snapshots WHERE id = ?1")
                .and_then(|mut s| s.query_row([&id], |r| r.get(0)).optional())
                .map_err(|e| sql_error("snapshots", &id, e))?;
            let Some(body) = body else { return Ok(None) };
            let s: CartSnapshot = decode("snapshots", &id, &body)?;
            if s.id().to_string() != id {
                return Err(corrupt(
                    "snapshots",
                    &id,
                    format!("the content hashes to {}", s.id()),
                ));
            }
            Ok(Some(s))
        })
        .await
    }

    async fn usage(&self, chain: &[Mandate], now: DateTime<Utc>) -> Result<Vec<Usage>, StoreError> {
        let chain = chain.to_vec();
        self.read("accounts", move |conn| ledger::usage(conn, &chain, now))
            .await
    }

    async fn place_hold(&self, hold: &HoldRequest) -> Result<Vec<Usage>, HoldError> {
        let hold = hold.clone();
        self.write("holds", move |conn| ledger::place(conn, &hold))
            .await
    }

    async fn commit_hold(&self, attempt_id: &AttemptId, amount: Money) -> Result<(), StoreError> {
        let id = attempt_id.clone();
        self.write("holds", move |conn| {
            ledger::resolve(conn, &id, HoldOp::Commit(amount))
        })
        .await
    }

    async fn release_hold(&self, attempt_id: &AttemptId) -> Result<(), StoreError> {
        let id = attempt_id.clone();
        self.write("holds", move |conn| {
            ledger::resolve(conn, &id, HoldOp::Release)
        })
        .await
    }

    async fn refund_hold(
        &self,
        attempt_id: &AttemptId,
        amount: Money,
        policy: RefundPolicy,
    ) -> Result<(), StoreError> {
        let id = attempt_id.clone();
        self.write("holds", move |conn| {
            ledger::resolve(conn, &id, HoldOp::Refund(amount, policy))
        })
        .await
    }

    async fn hold(&self, attempt_id: &AttemptId) -> Result<Option<HoldRecord>, StoreError> {
        let id = attempt_id.clone();
        self.read("holds", move |conn| ledger::record(conn, &id))
            .await
    }

    async fn insert_attempt(&self, attempt: &PaymentAttempt) -> Result<(), StoreError> {
        let a = attempt.clone();
        self.write("attempts", move |conn| insert_attempt_in(conn, &a))
            .await
    }

    async fn attempt(&self, id: &AttemptId) -> Result<Option<PaymentAttempt>, StoreError> {
        let id = id.clone();
        self.read("attempts", move |conn| attempt_row(conn, id.as_str()))
            .await
    }

    async fn update_attempt(
        &self,
        attempt: &PaymentAttempt,
        expected: AttemptStatus,
    ) -> Result<(), StoreError> {
        let a = attempt.clone();
        self.write("attempts", move |conn| {
            update_attempt_in(conn, &a, expected)
        })
        .await
    }

    async fn change_attempt(&self, change: &AttemptChange<'_>) -> Result<(), StoreError> {
        let next = change.next.clone();
        let expected = change.expected;
        let hold_id = change.hold_id.clone();
        let ops = change.holds.to_vec();
        let completion = change.completion.cloned();
        let fence = change.fence.cloned();
        let events = change.events.to_vec();
        let direct = self.direct;
        self.write("attempts", move |conn| {
            if let Some(f) = &fence {
                check_fence_in(conn, f)?;
            }
            update_attempt_in(conn, &next, expected)?;
            for op in ops {
                ledger::resolve(conn, &hold_id, op)?;
            }
            if let Some(c) = completion {
                complete_in(conn, &c.fence, &c.result, c.retain_until)?;
            }
            stage_in(conn, &events, direct)
        })
        .await
    }

    async fn attempts_in(
        &self,
        statuses: &[AttemptStatus],
        limit: usize,
    ) -> Result<Vec<PaymentAttempt>, StoreError> {
        let statuses: Vec<&'static str> = statuses.iter().map(|s| s.as_str()).collect();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read("attempts", move |conn| {
            if statuses.is_empty() {
                return Ok(Vec::new());
            }
            let marks = vec!["?"; statuses.len()].join(", ");
            let sql = format!(
                "SELECT id, body FROM attempts WHERE status IN ({marks}) \
                 ORDER BY created_at, id LIMIT {limit}"
            );
            let mut stmt = conn
                .prepare_cached(&sql)
                .map_err(|e| sql_error("attempts", "attempts_in", e))?;
            let rows = stmt
                .query_map(rusqlite::params_from_iter(statuses.iter()), |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
                })
                .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
                .map_err(|e| sql_error("attempts", "attempts_in", e))?;
            rows.iter()
                .map(|(id, body)| decode("attempts", id, body))
                .collect()
        })
        .await
    }

    async fn begin_idempotent(
        &self,
        scope: &IdempotencyScope,
        fingerprint: &ContentDigest,
        now: DateTime<Utc>,
        lease: Duration,
    ) -> Result<Begin, StoreError> {
        let scope = scope.clone();
        let fingerprint = *fingerprint;
        self.write("idempotency", move |conn| {
            begin_in(conn, scope, fingerprint, now, lease)
        })
        .await
    }

    async fn complete_idempotent(
        &self,
        fence: &Fence,
        result: &StoredResult,
        retain_until: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let fence = fence.clone();
        let result = result.clone();
        self.write("idempotency", move |conn| {
            complete_in(conn, &fence, &result, retain_until)
        })
        .await
    }

    async fn abandon_idempotent(&self, fence: &Fence) -> Result<(), StoreError> {
        let fence = fence.clone();
        self.write("idempotency", move |conn| {
            check_fence_in(conn, &fence)?;
            let scope = &fence.scope;
            conn.prepare_cached(
                "DELETE FROM idempotency \
                 WHERE actor_id = ?1 AND operation = ?2 AND key = ?3 AND state = 'in_flight'",
            )
            .and_then(|mut s| {
                s.execute(params![
                    scope.actor_id.as_str(),
                    scope.operation,
                    scope.key.as_str()
                ])
            })
            .map_err(|e| sql_error("idempotency", &scope_key(scope), e))?;
            Ok(())
        })
        .await
    }

    async fn write_audited(
        &self,
        write: Write<'_>,
        events: &[AuditEvent],
    ) -> Result<Written, StoreError> {
        /// An owned copy of a [`Write`], for the connection thread.
        enum Owned {
            InsertMandate(Mandate),
            UpdateMandate(Mandate, MandateStatus),
            Suspend(&'static str, String, bool),
            InsertConfirmation(Confirmation),
            InsertAttempt(PaymentAttempt),
            InsertOrder(Order),
            Events,
        }
        let owned = match write {
            Write::InsertMandate(m) => Owned::InsertMandate(m.clone()),
            Write::UpdateMandate { mandate, expected } => {
                Owned::UpdateMandate(mandate.clone(), expected)
            }
            Write::Suspend {
                party: p,
                suspended,
            } => {
                let (kind, id) = party(p);
                Owned::Suspend(kind, id.to_string(), suspended)
            }
            Write::InsertConfirmation(c) => Owned::InsertConfirmation(c.clone()),
            Write::InsertAttempt(a) => Owned::InsertAttempt(a.clone()),
            Write::InsertOrder(o) => Owned::InsertOrder(o.clone()),
            Write::Events => Owned::Events,
        };
        let events = events.to_vec();
        let direct = self.direct;
        self.write("audited write", move |conn| {
            let written = match &owned {
                Owned::InsertMandate(m) => insert_mandate_in(conn, m).map(|()| Written::Done),
                Owned::UpdateMandate(m, expected) => {
                    update_mandate_in(conn, m, *expected).map(|()| Written::Done)
                }
                Owned::Suspend(kind, id, on) => {
                    set_suspended_in(conn, kind, id, *on).map(|()| Written::Done)
                }
                Owned::InsertConfirmation(c) => {
                    insert_confirmation_in(conn, c).map(|()| Written::Done)
                }
                Owned::InsertAttempt(a) => insert_attempt_in(conn, a).map(|()| Written::Done),
                Owned::InsertOrder(o) => insert_order_in(conn, o).map(Written::Order),
                Owned::Events => Ok(Written::Done),
            }?;
            if !matches!(written, Written::Order(InsertOrder::Existing(_))) {
                stage_in(conn, &events, direct)?;
            }
            Ok(written)
        })
        .await
    }

    async fn payment_inputs(&self, query: &InputsQuery<'_>) -> Result<PaymentInputs, StoreError> {
        let inputs = super::payment::Inputs::of(query);
        self.read("payment inputs", move |conn| inputs.read(conn))
            .await
    }

    async fn open_payment(&self, open: &OpenPayment<'_>) -> Result<Opened, HoldError> {
        let job = super::payment::Open {
            direct: self.direct,
            scope: open.scope.clone(),
            fingerprint: *open.fingerprint,
            now: open.now,
            lease: open.lease,
            submitted: open.submitted.clone(),
            hold: open.hold.clone(),
            snapshot: open.snapshot.clone(),
            reset_blocks: open.reset_blocks.cloned(),
            events: open
                .created
                .iter()
                .chain(open.submitted_events)
                .cloned()
                .collect(),
        };
        match self.write("open payment", move |conn| job.run(conn)).await {
            Ok(opened) => Ok(opened),
            Err(super::payment::OpenFailure::Nothing(answer)) => Ok(answer),
            Err(super::payment::OpenFailure::Failed(e)) => Err(e),
        }
    }

    async fn stage_audit(&self, events: &[AuditEvent]) -> Result<(), StoreError> {
        if events.is_empty() {
            return Ok(());
        }
        let events = events.to_vec();
        let direct = self.direct;
        self.write("audit_pending", move |conn| stage_in(conn, &events, direct))
            .await
    }

    async fn staged_audit(&self, limit: usize) -> Result<Vec<StagedEvent>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read("audit_pending", move |conn| {
            let mut stmt = conn
                .prepare_cached("SELECT id, body FROM audit_pending ORDER BY id LIMIT ?1")
                .map_err(|e| sql_error("audit_pending", "select", e))?;
            let rows = stmt
                .query_map([limit], |r| {
                    Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
                })
                .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
                .map_err(|e| sql_error("audit_pending", "select", e))?;
            rows.into_iter()
                .map(|(id, body)| {
                    let key = id.to_string();
                    let event: AuditEvent = decode("audit_pending", &key, &body)?;
                    let id = u64::try_from(id)
                        .map_err(|_| corrupt("audit_pending", &key, "negative id"))?;
                    Ok(StagedEvent { id, event })
                })
                .collect()
        })
        .await
    }

    async fn ack_audit(&self, through: u64) -> Result<(), StoreError> {
        let through = i64::try_from(through).unwrap_or(i64::MAX);
        self.write("audit_pending", move |conn| {
            conn.prepare_cached("DELETE FROM audit_pending WHERE id <= ?1")
                .and_then(|mut s| s.execute([through]))
                .map_err(|e| sql_error("audit_pending", "ack", e))?;
            Ok(())
        })
        .await
    }

    async fn check_fence(&self, fence: &Fence) -> Result<(), StoreError> {
        let fence = fence.clone();
        self.read("idempotency", move |conn| check_fence_in(conn, &fence))
            .await
    }

    async fn purge_idempotent(&self, now: DateTime<Utc>) -> Result<u64, StoreError> {
        let now_n = nanos(now)?;
        self.write("idempotency", move |conn| {
            let n = conn
                .prepare_cached(
                    "DELETE FROM idempotency WHERE \
                       (state = 'completed' AND retain_until <= ?1) OR \
                       (state = 'in_flight' AND lease_until <= ?1)",
                )
                .and_then(|mut s| s.execute([now_n]))
                .map_err(|e| sql_error("idempotency", "purge", e))?;
            Ok(n as u64)
        })
        .await
    }

    async fn insert_order(&self, order: &Order) -> Result<InsertOrder, StoreError> {
        let o = order.clone();
        self.write("orders", move |conn| insert_order_in(conn, &o))
            .await
    }

    async fn order_for(&self, attempt_id: &AttemptId) -> Result<Option<Order>, StoreError> {
        let id = attempt_id.clone();
        self.read("orders", move |conn| order_row(conn, id.as_str()))
            .await
    }

    async fn record_block(&self, actor: &ActorId) -> Result<u32, StoreError> {
        let actor = actor.clone();
        self.write("blocks", move |conn| {
            let id = actor.as_str();
            let n: i64 = conn
                .prepare_cached(
                    "INSERT INTO blocks (actor_id, count) VALUES (?1, 1) \
                     ON CONFLICT (actor_id) DO UPDATE SET count = MIN(count + 1, 4294967295) \
                     RETURNING count",
                )
                .and_then(|mut s| s.query_row([id], |r| r.get(0)))
                .map_err(|e| sql_error("blocks", id, e))?;
            u32::try_from(n).map_err(|_| corrupt("blocks", id, format!("count {n}")))
        })
        .await
    }

    async fn reset_blocks(&self, actor: &ActorId) -> Result<(), StoreError> {
        let actor = actor.clone();
        self.write("blocks", move |conn| reset_blocks_in(conn, &actor))
            .await
    }
    async fn consume_challenge(
        &self,
        use_: &ChallengeUse,
    ) -> Result<ChallengeConsumed, StoreError> {
        let id = use_.challenge_id.clone();
        let credential = use_.credential.to_string();
        let expires = nanos(use_.expires_at)?;
        self.write("challenges", move |conn| {
            let inserted = conn
                .prepare_cached(
                    "INSERT INTO challenges (challenge_id, credential, expires_at) \
                     VALUES (?1, ?2, ?3) ON CONFLICT (challenge_id) DO NOTHING",
                )
                .and_then(|mut s| s.execute(rusqlite::params![id, credential, expires]))
                .map_err(|e| sql_error("challenges", &id, e))?;
            if inserted == 1 {
                return Ok(ChallengeConsumed::First);
            }
            let recorded: String = conn
                .prepare_cached("SELECT credential FROM challenges WHERE challenge_id = ?1")
                .and_then(|mut s| s.query_row([&id], |r| r.get(0)))
                .map_err(|e| sql_error("challenges", &id, e))?;
            Ok(if recorded == credential {
                ChallengeConsumed::SameCredential
            } else {
                ChallengeConsumed::Used
            })
        })
        .await
    }

    async fn purge_challenges(&self, now: DateTime<Utc>) -> Result<u64, StoreError> {
        let now_n = nanos(now)?;
        self.write("challenges", move |conn| {
            let n = conn
                .prepare_cached("DELETE FROM challenges WHERE expires_at <= ?1")
                .and_then(|mut s| s.execute([now_n]))
                .map_err(|e| sql_error("challenges", "purge", e))?;
            Ok(n as u64)
        })
        .await
    }
}
