//! The writes that commit with everything they imply, each in one transaction:
//!
//! * [`Store::change_attempt`](crate::ports::Store::change_attempt): the fences checked, the
//!   attempt's compare-and-set update, its hold operations, the completion of the command's
//!   idempotency record and the staging of its audit events (in two round trips: see
//!   [`super::piped`]);
//! * [`Store::write_audited`](crate::ports::Store::write_audited): any other write of the
//!   engine and the staging of its audit events (I15).
//!
//! Lock order, shared by every transaction that takes more than one of these: idempotency
//! records (by scope), the attempt row, the chain's accounts (by mandate id), the hold row, and
//! last the outbox table (see [`super::outbox`]).

use tokio_postgres::IsolationLevel;

use super::outbox::stage_in;
use super::records::{
    insert_attempt_in, insert_confirmation_in, insert_mandate_in, insert_order_in,
    set_suspended_in, update_mandate_in,
};
use super::store::PostgresStore;
use super::tx::in_transaction;
use crate::domain::AuditEvent;
use crate::ports::{AttemptChange, Fence, StoreError, Write, Written};

/// The fences a change checks, each once, in the lock order (by scope); `true` for the one
/// whose record the change completes (locked for update).
pub(super) fn fences_of<'a>(change: &AttemptChange<'a>) -> Vec<(&'a Fence, bool)> {
    let completes = change.completion.map(|c| &c.fence);
    let mut out: Vec<(&'a Fence, bool)> = Vec::with_capacity(2);
    for fence in change.fence.into_iter().chain(completes) {
        let exclusive = completes == Some(fence);
        match out.iter_mut().find(|(f, _)| *f == fence) {
            Some(seen) => seen.1 |= exclusive,
            None => out.push((fence, exclusive)),
        }
    }
    let key = |f: &'a Fence| {
        (
            f.scope.actor_id.as_str(),
            f.scope.operation.as_str(),
            f.scope.key.as_str(),
            f.token,
        )
    };
    out.sort_by(|(a, _), (b, _)| key(a).cmp(&key(b)));
    out
}

impl PostgresStore {
    pub(super) async fn write_audited_tx(
        &self,
        write: Write<'_>,
        events: &[AuditEvent],
    ) -> Result<Written, StoreError> {
        if matches!(write, Write::Events) && events.is_empty() {
            return Ok(Written::Done);
        }
        in_transaction!(
            &self.pool,
            self.retries,
            IsolationLevel::ReadCommitted,
            StoreError,
            |tx| {
                let written = match write {
                    Write::InsertMandate(m) => {
                        insert_mandate_in(&tx, m).await?;
                        Written::Done
                    }
                    Write::UpdateMandate { mandate, expected } => {
                        update_mandate_in(&tx, mandate, expected).await?;
                        Written::Done
                    }
                    Write::Suspend { party, suspended } => {
                        set_suspended_in(&tx, party, suspended).await?;
                        Written::Done
                    }
                    Write::InsertConfirmation(c) => {
                        insert_confirmation_in(&tx, c).await?;
                        Written::Done
                    }
                    Write::InsertAttempt(a) => {
                        insert_attempt_in(&tx, a).await?;
                        Written::Done
                    }
                    Write::InsertOrder(o) => Written::Order(insert_order_in(&tx, o).await?),
                    Write::Events => Written::Done,
                };
                stage_in(&tx, events, self.trail.is_some()).await?;
                written
            }
        )
    }
}
