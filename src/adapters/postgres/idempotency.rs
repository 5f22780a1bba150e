//! Idempotency records of [`PostgresStore`] (I3): one row per (actor, operation, key).
//!
//! `begin_idempotent` inserts the record, or locks the existing one and decides, in one
//! transaction: of two callers racing for one new key, exactly one inserts it (the other waits
//! on the key's unique index, then sees the record and answers `InFlight` or `Conflict`).
//! A lapsed lease or an ended retention is taken over in the same locked transaction.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use tokio_postgres::{IsolationLevel, Row};

use super::codec::{encode, time_param, At};
use super::store::PostgresStore;
use super::tx::{classify, in_transaction, Tx};
use crate::domain::ContentDigest;
use crate::ports::{Begin, IdempotencyScope, StoreError, StoredResult};

fn scope_key(scope: &IdempotencyScope) -> String {
    format!("{}/{}/{}", scope.actor_id, scope.operation, scope.key)
}

impl PostgresStore {
    pub(super) async fn begin_idempotent_row(
        &self,
        scope: &IdempotencyScope,
        fingerprint: &ContentDigest,
        now: DateTime<Utc>,
        lease: Duration,
    ) -> Result<Begin, StoreError> {
        let lease_until = TimeDelta::from_std(lease)
            .ok()
            .and_then(|d| now.checked_add_signed(d))
            .unwrap_or(DateTime::<Utc>::MAX_UTC);
        let lease_param = time_param(lease_until)?;
        let fp = fingerprint.to_string();
        let key = scope_key(scope);
        let pk = (
            scope.actor_id.as_str(),
            scope.operation.as_str(),
            scope.key.as_str(),
        );
        in_transaction!(
            &self.pool,
            self.retries,
            IsolationLevel::ReadCommitted,
            StoreError,
            |tx| {
                // The record may be deleted (abandoned) between our conflicting insert and
                // the read that follows: then insert again (each statement of a READ
                // COMMITTED transaction sees what committed before it).
                let mut attempts = 0u32;
                loop {
                    attempts += 1;
                    let inserted = tx
                        .execute(
                            "INSERT INTO idempotency (actor_id, operation, key, fingerprint, \
                             state, lease_until_ns) VALUES ($1, $2, $3, $4, 'in_flight', $5) \
                             ON CONFLICT DO NOTHING",
                            &[&pk.0, &pk.1, &pk.2, &fp, &lease_param],
                        )
                        .await?;
                    if inserted == 1 {
                        break Begin::Started;
                    }
                    let row = tx
                        .query_opt(
                            "SELECT fingerprint, state, lease_until_ns, result, retain_until_ns \
                             FROM idempotency WHERE actor_id = $1 AND operation = $2 \
                             AND key = $3 FOR UPDATE",
                            &[&pk.0, &pk.1, &pk.2],
                        )
                        .await?;
                    let Some(row) = row else {
                        if attempts >= 8 {
                            return Err(Tx::Fail(StoreError::Unavailable {
                                message: format!(
                                    "idempotency record {key} keeps being created and dropped"
                                ),
                            }));
                        }
                        continue;
                    };
                    let answer = decide(&row, &key, fingerprint, now).map_err(Tx::Fail)?;
                    if let Some(answer) = answer {
                        break answer;
                    }
                    tx.execute(
                        "UPDATE idempotency SET fingerprint = $4, state = 'in_flight', \
                         lease_until_ns = $5, result = NULL, retain_until_ns = NULL \
                         WHERE actor_id = $1 AND operation = $2 AND key = $3",
                        &[&pk.0, &pk.1, &pk.2, &fp, &lease_param],
                    )
                    .await?;
                    break Begin::Started;
                }
            }
        )
    }

    pub(super) async fn complete_idempotent_row(
        &self,
        scope: &IdempotencyScope,
        result: &StoredResult,
        retain_until: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let result = encode("result", result)?;
        let retain = time_param(retain_until)?;
        let client = self.client().await?;
        let n = client
            .execute(
                "UPDATE idempotency SET state = 'completed', result = $4, retain_until_ns = $5, \
                 lease_until_ns = NULL WHERE actor_id = $1 AND operation = $2 AND key = $3",
                &[
                    &scope.actor_id.as_str(),
                    &scope.operation,
                    &scope.key.as_str(),
                    &result,
                    &retain,
                ],
            )
            .await
            .map_err(classify::<StoreError>)?;
        if n == 0 {
            return Err(StoreError::NotFound {
                entity: "idempotency record",
                id: scope_key(scope),
            });
        }
        Ok(())
    }

    pub(super) async fn abandon_idempotent_row(
        &self,
        scope: &IdempotencyScope,
    ) -> Result<(), StoreError> {
        let client = self.client().await?;
        client
            .execute(
                "DELETE FROM idempotency WHERE actor_id = $1 AND operation = $2 AND key = $3 \
                 AND state = 'in_flight'",
                &[
                    &scope.actor_id.as_str(),
                    &scope.operation,
                    &scope.key.as_str(),
                ],
            )
            .await
            .map_err(classify::<StoreError>)?;
        Ok(())
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
