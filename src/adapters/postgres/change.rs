//! [`Store::change_attempt`](crate::ports::Store::change_attempt) in one transaction: the
//! attempt's compare-and-set update, its hold operations and the completion of the command's
//! idempotency record commit together or not at all.

use tokio_postgres::IsolationLevel;

use super::codec::{encode, time_param, At};
use super::holds::resolve_in;
use super::store::PostgresStore;
use super::tx::{in_transaction, Tx};
use crate::domain::AttemptStatus;
use crate::ports::{AttemptChange, StoreError};

impl PostgresStore {
    pub(super) async fn change_attempt_tx(
        &self,
        change: &AttemptChange<'_>,
    ) -> Result<(), StoreError> {
        let next = change.next;
        let id = next.id.as_str();
        let body = encode("attempt", next)?;
        let expected = change.expected.as_str();
        let status = next.status.as_str();
        let completion = match change.completion {
            Some(c) => Some((c, encode("result", &c.result)?, time_param(c.retain_until)?)),
            None => None,
        };
        in_transaction!(
            &self.pool,
            self.retries,
            IsolationLevel::ReadCommitted,
            StoreError,
            |tx| {
                // The attempt row first (compare and set), then the hold (its accounts in the
                // global order, then the hold row), then the idempotency record: every
                // transaction that takes more than one of these locks takes them in this order.
                let st = tx
                    .prepare_cached(
                        "UPDATE attempts SET status = $3, body = $4 WHERE id = $1 AND status = $2",
                    )
                    .await?;
                let n = tx.execute(&st, &[&id, &expected, &status, &body]).await?;
                if n != 1 {
                    let row = tx
                        .query_opt("SELECT status FROM attempts WHERE id = $1", &[&id])
                        .await?;
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
                    let text: String = at.get(&row, "status").map_err(Tx::Fail)?;
                    let known = AttemptStatus::ALL.into_iter().find(|s| s.as_str() == text);
                    let Some(current) = known else {
                        return Err(Tx::Fail(at.corrupt(format!("unknown status {text:?}"))));
                    };
                    return Err(Tx::Fail(StoreError::Conflict {
                        entity: "attempt",
                        id: id.to_string(),
                        message: format!("the status is {current}, not {}", change.expected),
                    }));
                }
                for op in change.holds {
                    resolve_in(&tx, change.hold_id, *op).await?;
                }
                if let Some((c, result, retain)) = &completion {
                    let st = tx
                        .prepare_cached(
                            "UPDATE idempotency SET state = 'completed', result = $4, \
                             retain_until_ns = $5, lease_until_ns = NULL \
                             WHERE actor_id = $1 AND operation = $2 AND key = $3",
                        )
                        .await?;
                    let n = tx
                        .execute(
                            &st,
                            &[
                                &c.scope.actor_id.as_str(),
                                &c.scope.operation,
                                &c.scope.key.as_str(),
                                result,
                                retain,
                            ],
                        )
                        .await?;
                    if n == 0 {
                        return Err(Tx::Fail(StoreError::NotFound {
                            entity: "idempotency record",
                            id: format!(
                                "{}/{}/{}",
                                c.scope.actor_id, c.scope.operation, c.scope.key
                            ),
                        }));
                    }
                }
            }
        )
    }
}
