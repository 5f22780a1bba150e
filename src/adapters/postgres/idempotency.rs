//! Idempotency records of [`PostgresStore`] (I3) and the fencing of their leases (I13): one
//! row per (actor, operation, key).
//!
//! `begin_idempotent` inserts the record, or locks the existing one and decides, in one
//! transaction: of two callers racing for one new key, exactly one inserts it (the other waits
//! on the key's unique index, then sees the record and answers `InFlight` or `Conflict`).
//! A lapsed lease or an ended retention is taken over in the same locked transaction.
//!
//! Every start or takeover stores a new token from the sequence `lease_tokens` (a sequence
//! never hands out a value twice, even when the transaction that drew it rolls back), and the
//! caller's [`Fence`] carries it. A write guarded by a fence checks, in its own transaction,
//! that the record is still in flight under that token, and keeps the row locked until it
//! commits: a takeover, completion, abandon or purge of the record waits for it, and one that
//! committed first makes the check fail with [`StoreError::Fenced`].

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use deadpool_postgres::GenericClient;
use rust_decimal::Decimal;
use tokio_postgres::{IsolationLevel, Row};

use super::codec::{encode, time_param, At};
use super::store::PostgresStore;
use super::tx::{in_transaction, once, Tx};
use crate::domain::ContentDigest;
use crate::ports::{Begin, Fence, IdempotencyScope, StoreError, StoredResult};

pub(super) fn scope_key(scope: &IdempotencyScope) -> String {
    format!("{}/{}/{}", scope.actor_id, scope.operation, scope.key)
}

pub(super) fn fenced(fence: &Fence) -> StoreError {
    StoreError::Fenced {
        key: scope_key(&fence.scope),
    }
}

/// The token as stored (`BIGINT`); a token no sequence of ours can have given out holds no
/// record.
pub(super) fn token_param(fence: &Fence) -> Result<i64, StoreError> {
    i64::try_from(fence.token).map_err(|_| fenced(fence))
}

/// How [`check_fence_in`] locks the record it checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum FenceLock {
    /// Reads it (nothing is written under the fence).
    Read,
    /// `FOR SHARE`: no takeover, completion, abandon or purge until the caller commits.
    Share,
}

/// `Ok` while `fence`'s record is in flight under its token, else [`StoreError::Fenced`];
/// with a lock, the record stays as checked until the caller's transaction ends.
pub(super) async fn check_fence_in<C: GenericClient>(
    client: &C,
    fence: &Fence,
    lock: FenceLock,
) -> Result<(), Tx<StoreError>> {
    let token = token_param(fence).map_err(Tx::Fail)?;
    let sql = match lock {
        FenceLock::Read => {
            "SELECT 1 FROM idempotency WHERE actor_id = $1 AND operation = $2 AND key = $3 \
             AND state = 'in_flight' AND token = $4"
        }
        FenceLock::Share => {
            "SELECT 1 FROM idempotency WHERE actor_id = $1 AND operation = $2 AND key = $3 \
             AND state = 'in_flight' AND token = $4 FOR SHARE"
        }
    };
    let scope = &fence.scope;
    let st = client.prepare_cached(sql).await?;
    let row = client
        .query_opt(
            &st,
            &[
                &scope.actor_id.as_str(),
                &scope.operation,
                &scope.key.as_str(),
                &token,
            ],
        )
        .await?;
    match row {
        Some(_) => Ok(()),
        None => Err(Tx::Fail(fenced(fence))),
    }
}

/// Completes `fence`'s record with `result` (encoded), kept until `retain` (a time
/// parameter), in one statement that checks the fence: [`StoreError::Fenced`] unless the
/// record is in flight under the fence's token.
pub(super) async fn complete_in<C: GenericClient>(
    client: &C,
    fence: &Fence,
    result: &str,
    retain: &Decimal,
) -> Result<(), Tx<StoreError>> {
    let token = token_param(fence).map_err(Tx::Fail)?;
    let scope = &fence.scope;
    let st = client
        .prepare_cached(
            "UPDATE idempotency SET state = 'completed', result = $4, retain_until_ns = $5, \
             lease_until_ns = NULL WHERE actor_id = $1 AND operation = $2 AND key = $3 \
             AND state = 'in_flight' AND token = $6",
        )
        .await?;
    let n = client
        .execute(
            &st,
            &[
                &scope.actor_id.as_str(),
                &scope.operation,
                &scope.key.as_str(),
                &result,
                retain,
                &token,
            ],
        )
        .await?;
    if n == 0 {
        return Err(Tx::Fail(fenced(fence)));
    }
    Ok(())
}

/// A token read back from the database.
pub(super) fn token_of(key: &str, token: i64) -> Result<u64, StoreError> {
    u64::try_from(token).map_err(|_| {
        super::codec::corrupt(
            "idempotency",
            key,
            format!("lease token {token} is negative"),
        )
    })
}

impl PostgresStore {
    pub(super) async fn begin_idempotent_row(
        &self,
        scope: &IdempotencyScope,
        fingerprint: &ContentDigest,
        now: DateTime<Utc>,
        lease: Duration,
    ) -> Result<Begin, StoreError> {
        in_transaction!(
            &self.pool,
            self.retries,
            IsolationLevel::ReadCommitted,
            StoreError,
            |tx| { begin_in(&tx, scope, fingerprint, now, lease).await? }
        )
    }

    pub(super) async fn complete_idempotent_row(
        &self,
        fence: &Fence,
        result: &StoredResult,
        retain_until: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let result = encode("result", result)?;
        let retain = time_param(retain_until)?;
        let client = self.client().await?;
        once(complete_in(&client, fence, &result, &retain).await)
    }

    pub(super) async fn abandon_idempotent_row(&self, fence: &Fence) -> Result<(), StoreError> {
        let token = token_param(fence)?;
        let scope = &fence.scope;
        let client = self.client().await?;
        // One statement: the record goes only if it is still in flight under the fence.
        let outcome: Result<u64, Tx<StoreError>> = async {
            let st = client
                .prepare_cached(
                    "DELETE FROM idempotency WHERE actor_id = $1 AND operation = $2 \
                     AND key = $3 AND state = 'in_flight' AND token = $4",
                )
                .await?;
            Ok(client
                .execute(
                    &st,
                    &[
                        &scope.actor_id.as_str(),
                        &scope.operation,
                        &scope.key.as_str(),
                        &token,
                    ],
                )
                .await?)
        }
        .await;
        match once(outcome)? {
            0 => Err(fenced(fence)),
            _ => Ok(()),
        }
    }

    pub(super) async fn check_fence_row(&self, fence: &Fence) -> Result<(), StoreError> {
        let client = self.client().await?;
        once(check_fence_in(&client, fence, FenceLock::Read).await)
    }

    pub(super) async fn purge_idempotent_rows(
        &self,
        now: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        let now = time_param(now)?;
        in_transaction!(
            &self.pool,
            self.retries,
            IsolationLevel::ReadCommitted,
            StoreError,
            |tx| {
                // A record locked by a fenced write is deleted after that write commits (or
                // not at all, if it completed the record with a later retention).
                let st = tx
                    .prepare_cached(
                        "DELETE FROM idempotency WHERE \
                           (state = 'completed' AND retain_until_ns <= $1) OR \
                           (state = 'in_flight' AND lease_until_ns <= $1)",
                    )
                    .await?;
                tx.execute(&st, &[&now]).await?
            }
        )
    }
}

/// What an existing idempotency record answers at `now`; `None` when the caller takes it over
/// (its lease lapsed or its retention ended).
fn decide(
    row: &Row,
    key: &str,
    fingerprint: &ContentDigest,
    now: DateTime<Utc>,
) -> Result<Option<Begin>, StoreError> {
    let at = At {
        table: "idempotency",
        key,
    };
    let recorded: String = at.get(row, "fingerprint")?;
    let recorded = ContentDigest::parse(&recorded)
        .map_err(|e| at.corrupt(format!("fingerprint {recorded:?}: {e}")))?;
    let state: String = at.get(row, "state")?;
    match state.as_str() {
        "in_flight" => {
            let until = at.get::<Option<rust_decimal::Decimal>>(row, "lease_until_ns")?;
            let until = until.ok_or_else(|| at.corrupt("an in-flight record without a lease"))?;
            let until = at.time("lease_until_ns", until)?;
            if now >= until {
                return Ok(None);
            }
            Ok(Some(if recorded == *fingerprint {
                Begin::InFlight {
                    retry_after: (until - now).to_std().unwrap_or(Duration::ZERO),
                }
            } else {
                Begin::Conflict { recorded }
            }))
        }
        "completed" => {
            let until = at.get::<Option<rust_decimal::Decimal>>(row, "retain_until_ns")?;
            let until = until.ok_or_else(|| at.corrupt("a completed record without retention"))?;
            let until = at.time("retain_until_ns", until)?;
            if now >= until {
                return Ok(None);
            }
            if recorded != *fingerprint {
                return Ok(Some(Begin::Conflict { recorded }));
            }
            let result = at.get::<Option<String>>(row, "result")?;
            let result = result.ok_or_else(|| at.corrupt("a completed record without a result"))?;
            Ok(Some(Begin::Replay(at.decode(&result)?)))
        }
        other => Err(at.corrupt(format!("unknown state {other:?}"))),
    }
}

/// Looks up or starts the record of `scope` inside the caller's transaction (READ
/// COMMITTED): see [`PostgresStore::begin_idempotent_row`].
pub(super) async fn begin_in(
    tx: &deadpool_postgres::Transaction<'_>,
    scope: &IdempotencyScope,
    fingerprint: &ContentDigest,
    now: DateTime<Utc>,
    lease: Duration,
) -> Result<Begin, Tx<StoreError>> {
    let lease_until = TimeDelta::from_std(lease)
        .ok()
        .and_then(|d| now.checked_add_signed(d))
        .unwrap_or(DateTime::<Utc>::MAX_UTC);
    let lease_param = time_param(lease_until).map_err(Tx::Fail)?;
    let fp = fingerprint.to_string();
    let key = scope_key(scope);
    let pk = (
        scope.actor_id.as_str(),
        scope.operation.as_str(),
        scope.key.as_str(),
    );
    let started = |token: i64| -> Result<Begin, Tx<StoreError>> {
        Ok(Begin::Started(Fence {
            scope: scope.clone(),
            token: token_of(&key, token).map_err(Tx::Fail)?,
        }))
    };
    // The record may be deleted (abandoned, purged) between our conflicting insert
    // and the read that follows: then insert again (each statement of a READ
    // COMMITTED transaction sees what committed before it).
    let mut attempts = 0u32;
    let answer = loop {
        attempts += 1;
        let st = tx
            .prepare_cached(
                "INSERT INTO idempotency (actor_id, operation, key, fingerprint, \
                 state, lease_until_ns, token) \
                 VALUES ($1, $2, $3, $4, 'in_flight', $5, nextval('lease_tokens')) \
                 ON CONFLICT DO NOTHING RETURNING token",
            )
            .await?;
        let inserted = tx
            .query_opt(&st, &[&pk.0, &pk.1, &pk.2, &fp, &lease_param])
            .await?;
        if let Some(row) = inserted {
            break started(row.try_get(0)?)?;
        }
        let st = tx
            .prepare_cached(
                "SELECT fingerprint, state, lease_until_ns, result, retain_until_ns \
                 FROM idempotency WHERE actor_id = $1 AND operation = $2 \
                 AND key = $3 FOR UPDATE",
            )
            .await?;
        let row = tx.query_opt(&st, &[&pk.0, &pk.1, &pk.2]).await?;
        let Some(row) = row else {
            if attempts >= 8 {
                return Err(Tx::Fail(StoreError::Unavailable {
                    message: format!("idempotency record {key} keeps being created and dropped"),
                }));
            }
            continue;
        };
        let answer = decide(&row, &key, fingerprint, now).map_err(Tx::Fail)?;
        if let Some(answer) = answer {
            break answer;
        }
        // Taken over: a new token, so the previous holder's fence no longer
        // matches.
        let st = tx
            .prepare_cached(
                "UPDATE idempotency SET fingerprint = $4, state = 'in_flight', \
                 lease_until_ns = $5, result = NULL, retain_until_ns = NULL, \
                 token = nextval('lease_tokens') \
                 WHERE actor_id = $1 AND operation = $2 AND key = $3 \
                 RETURNING token",
            )
            .await?;
        let row = tx
            .query_one(&st, &[&pk.0, &pk.1, &pk.2, &fp, &lease_param])
            .await?;
        break started(row.try_get(0)?)?;
    };
    Ok(answer)
}
