//! The payment's unit of work on SQLite: its reads in one read transaction (one job on a read
//! connection), its first write transaction in one job of a group commit.

use rusqlite::Connection;

use super::ledger;
use super::store::{
    attempt_row, begin_in, chain_in, confirmations_in, insert_attempt_in, put_snapshot_in,
    reset_blocks_in, stage_in, suspensions_in,
};
use crate::domain::{
    ActorId, AttemptId, AuditEvent, BuyerId, CartSnapshot, ContentDigest, MandateId,
    PaymentAttempt, SnapshotId,
};
use crate::ports::{
    Begin, HoldError, HoldRequest, IdempotencyScope, InputsQuery, Opened, PaymentInputs, StoreError,
};

/// An owned [`InputsQuery`], for the connection's thread.
pub(super) struct Inputs {
    attempt_id: AttemptId,
    mandate_id: MandateId,
    actor_id: ActorId,
    buyer_id: BuyerId,
    snapshot_id: SnapshotId,
    now: chrono::DateTime<chrono::Utc>,
    usage: bool,
    confirmations: bool,
}

impl Inputs {
    pub(super) fn of(q: &InputsQuery<'_>) -> Inputs {
        Inputs {
            attempt_id: q.attempt_id.clone(),
            mandate_id: q.mandate_id.clone(),
            actor_id: q.actor_id.clone(),
            buyer_id: q.buyer_id.clone(),
            snapshot_id: *q.snapshot_id,
            now: q.now,
            usage: q.usage,
            confirmations: q.confirmations,
        }
    }

    /// Reads them (in the caller's read transaction).
    pub(super) fn read(&self, conn: &Connection) -> Result<PaymentInputs, StoreError> {
        let query = InputsQuery {
            attempt_id: &self.attempt_id,
            mandate_id: &self.mandate_id,
            actor_id: &self.actor_id,
            buyer_id: &self.buyer_id,
            snapshot_id: &self.snapshot_id,
            now: self.now,
            usage: self.usage,
            confirmations: self.confirmations,
        };
        let attempt = attempt_row(conn, self.attempt_id.as_str())?;
        let chain = chain_in(conn, &self.mandate_id)?;
        let usage = if self.usage && !chain.is_empty() {
            ledger::usage(conn, &chain, self.now)?
        } else {
            Vec::new()
        };
        let confirmations = if PaymentInputs::wants_confirmations(&query, &chain) {
            confirmations_in(conn, &self.buyer_id, &self.snapshot_id.to_string())?
        } else {
            Vec::new()
        };
        let actors = PaymentInputs::actors(&chain, &self.actor_id);
        let suspensions = suspensions_in(conn, &actors, &self.buyer_id)?;
        Ok(PaymentInputs {
            attempt,
            chain,
            usage,
            confirmations,
            suspensions,
        })
    }
}

/// An owned [`crate::ports::OpenPayment`], for the connection's thread.
pub(super) struct Open {
    /// Events straight to the trail ([`crate::ports::Store::direct_trail`]).
    pub(super) direct: bool,
    pub(super) scope: IdempotencyScope,
    pub(super) fingerprint: ContentDigest,
    pub(super) now: chrono::DateTime<chrono::Utc>,
    pub(super) lease: std::time::Duration,
    pub(super) submitted: PaymentAttempt,
    pub(super) hold: HoldRequest,
    pub(super) snapshot: CartSnapshot,
    pub(super) reset_blocks: Option<ActorId>,
    pub(super) events: Vec<AuditEvent>,
}

/// Why the job rolls back without an error of the caller's: nothing was written.
enum Undone {
    Hold(HoldError),
    Answer(Opened),
}

impl From<StoreError> for Undone {
    fn from(e: StoreError) -> Self {
        Undone::Hold(HoldError::Store(e))
    }
}

impl From<HoldError> for Undone {
    fn from(e: HoldError) -> Self {
        Undone::Hold(e)
    }
}

/// The open transaction's outcome as the job reports it: `Err` rolls its savepoint back.
pub(super) type Outcome = Result<Opened, OpenFailure>;

/// A job's `Err`: a real failure, or an answer that writes nothing (so the savepoint is
/// rolled back) but is not a failure for the caller.
#[derive(Debug)]
pub(super) enum OpenFailure {
    /// The caller's error.
    Failed(HoldError),
    /// Nothing written, and this is the answer.
    Nothing(Opened),
}

impl From<StoreError> for OpenFailure {
    fn from(e: StoreError) -> Self {
        OpenFailure::Failed(HoldError::Store(e))
    }
}

impl Open {
    /// Runs the first transaction of the payment (in a savepoint of the caller's).
    pub(super) fn run(self, conn: &Connection) -> Outcome {
        match self.write(conn) {
            Ok(opened) => Ok(opened),
            Err(Undone::Hold(e)) => Err(OpenFailure::Failed(e)),
            Err(Undone::Answer(a)) => Err(OpenFailure::Nothing(a)),
        }
    }

    fn write(self, conn: &Connection) -> Result<Opened, Undone> {
        if attempt_row(conn, self.submitted.id.as_str())?.is_some() {
            return Err(Undone::Answer(Opened::AttemptExists));
        }
        let fence = match begin_in(conn, self.scope, self.fingerprint, self.now, self.lease)? {
            Begin::Started(fence) => fence,
            other => return Err(Undone::Answer(Opened::Key(other))),
        };
        if let Some(actor) = &self.reset_blocks {
            reset_blocks_in(conn, actor)?;
        }
        put_snapshot_in(conn, &self.snapshot)?;
        insert_attempt_in(conn, &self.submitted)?;
        let usage = ledger::place(conn, &self.hold)?;
        stage_in(conn, &self.events, self.direct)?;
        Ok(Opened::Started { fence, usage })
    }
}
