//! The store's audit outbox (I15): `audit_pending (id, body)`, events as their serde JSON,
//! staged in the transaction of the state change they describe and drained to the audit sink
//! in id order.
//!
//! # Ids follow commit order
//!
//! A `BIGSERIAL` alone hands out ids in the order transactions draw them, not the order they
//! commit: a drainer could see (and acknowledge through) id 6 while the transaction holding
//! id 5 is still open, and `ack_audit(6)` would then delete event 5 once it commits, before
//! anyone read it. So every transaction that stages events first takes
//! `LOCK TABLE audit_pending IN EXCLUSIVE MODE` (it conflicts with itself and with writes of
//! the table, not with reads) and keeps it until it commits: ids are drawn by one transaction
//! at a time, and every id below a visible one belongs to a transaction that has ended. The
//! lock is taken last in each transaction (after every row lock the write needs), so the
//! stretch during which stagers queue is the insert and the commit, and a holder never waits
//! for another lock (no deadlock).

use deadpool_postgres::GenericClient;
use tokio_postgres::IsolationLevel;

use super::codec::{encode, At};
use super::store::PostgresStore;
use super::tx::{classify, in_transaction, Tx};
use crate::domain::AuditEvent;
use crate::ports::{StagedEvent, StoreError};

/// Appends `events`, in order, to the outbox inside the caller's transaction (which must be an
/// explicit transaction: the table lock lasts until it ends).
///
/// With `direct`, appends them to the trail instead, in the same transaction, all but the
/// alert events, which are staged ([`crate::ports::Store::direct_trail`]).
pub(super) async fn stage_in<C: GenericClient>(
    client: &C,
    events: &[AuditEvent],
    direct: bool,
) -> Result<(), Tx<StoreError>> {
    if events.is_empty() {
        return Ok(());
    }
    let staged: Vec<&AuditEvent> = if direct {
        let (alerts, trail): (Vec<&AuditEvent>, Vec<&AuditEvent>) = events
            .iter()
            .partition(|e| matches!(e.kind, crate::domain::AuditKind::Alert { .. }));
        if !trail.is_empty() {
            super::audit::append_in(client, &trail)
                .await
                .map_err(|e| match e {
                    Tx::Pg(e) => Tx::Pg(e),
                    Tx::CommitUnknown(e) => Tx::CommitUnknown(e),
                    Tx::Fail(crate::ports::AuditError::Unavailable { message }) => {
                        Tx::Fail(StoreError::Unavailable { message })
                    }
                    Tx::Fail(other) => Tx::Fail(StoreError::Other(Box::new(other))),
                })?;
        }
        alerts
    } else {
        events.iter().collect()
    };
    if staged.is_empty() {
        return Ok(());
    }
    let bodies = staged
        .into_iter()
        .map(|e| encode("audit event", e))
        .collect::<Result<Vec<String>, StoreError>>()
        .map_err(Tx::Fail)?;
    client
        .batch_execute("LOCK TABLE audit_pending IN EXCLUSIVE MODE")
        .await?;
    // One insert per event, in order, so the ids follow the order of `events`.
    let st = client
        .prepare_cached("INSERT INTO audit_pending (body) VALUES ($1)")
        .await?;
    for body in &bodies {
        client.execute(&st, &[body]).await?;
    }
    Ok(())
}

impl PostgresStore {
    pub(super) async fn stage_audit_rows(&self, events: &[AuditEvent]) -> Result<(), StoreError> {
        if events.is_empty() {
            return Ok(());
        }
        in_transaction!(
            &self.pool,
            self.retries,
            IsolationLevel::ReadCommitted,
            StoreError,
            |tx| {
                stage_in(&tx, events, self.trail.is_some()).await?;
            }
        )
    }

    pub(super) async fn staged_audit_rows(
        &self,
        limit: usize,
    ) -> Result<Vec<StagedEvent>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let client = self.client().await?;
        let st = client
            .prepare_cached("SELECT id, body FROM audit_pending ORDER BY id LIMIT $1")
            .await
            .map_err(classify::<StoreError>)?;
        let rows = client
            .query(&st, &[&limit])
            .await
            .map_err(classify::<StoreError>)?;
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            let id: i64 = row
                .try_get("id")
                .map_err(|e| StoreError::Other(Box::new(e)))?;
            let key = id.to_string();
            let at = At {
                table: "audit_pending",
                key: &key,
            };
            let id = u64::try_from(id).map_err(|_| at.corrupt("a negative id"))?;
            let event: AuditEvent = at.decode(&at.get::<String>(row, "body")?)?;
            out.push(StagedEvent { id, event });
        }
        Ok(out)
    }

    pub(super) async fn ack_audit_rows(&self, through: u64) -> Result<(), StoreError> {
        // Ids are positive `BIGINT`s: anything past `i64::MAX` covers them all.
        let through = i64::try_from(through).unwrap_or(i64::MAX);
        let client = self.client().await?;
        let st = client
            .prepare_cached("DELETE FROM audit_pending WHERE id <= $1")
            .await
            .map_err(classify::<StoreError>)?;
        client
            .execute(&st, &[&through])
            .await
            .map_err(classify::<StoreError>)?;
        Ok(())
    }
}
