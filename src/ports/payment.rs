//! The payment's unit of work: what a payment reads before its decision
//! ([`Store::payment_inputs`]) and the first of its two write transactions
//! ([`Store::open_payment`]: idempotency record, attempt, holds on the chain and their audit
//! events, before the PSP is called). The second transaction is
//! [`Store::change_attempt`] (transition, hold operation, completion, events).
//!
//! Both methods have provided implementations made of the port's single calls, so a store
//! that implements the single calls is complete; a durable store overrides them to make each
//! one transaction (and, on PostgreSQL, as few round trips as the data dependencies allow).

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::store::{
    AttemptChange, Begin, Fence, HoldError, HoldOp, HoldRequest, IdempotencyScope, Store, Write,
};
use super::StoreError;
use crate::domain::{
    ActorId, AttemptId, AuditEvent, BuyerId, CartSnapshot, Confirmation, ContentDigest, Mandate,
    MandateId, PaymentAttempt, SnapshotId, Suspensions, Usage,
};

/// What [`Store::payment_inputs`] reads.
#[derive(Debug, Clone, Copy)]
pub struct InputsQuery<'a> {
    /// The attempt the command would create or resume.
    pub attempt_id: &'a AttemptId,
    /// The request's mandate (the leaf of the chain).
    pub mandate_id: &'a MandateId,
    /// The requesting actor (its suspension is read with the chain's actors').
    pub actor_id: &'a ActorId,
    /// The buyer.
    pub buyer_id: &'a BuyerId,
    /// The snapshot, for the buyer's confirmations.
    pub snapshot_id: &'a SnapshotId,
    /// The time usage is evaluated at.
    pub now: DateTime<Utc>,
    /// Read the usage of every level of the chain (the action creates spend).
    pub usage: bool,
    /// Read the buyer's confirmations of the snapshot when a mandate of the chain has a
    /// confirmation rule that may ask for one (an authorization).
    pub confirmations: bool,
}

/// Everything a payment's decision reads from the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentInputs {
    /// The attempt, when it exists.
    pub attempt: Option<PaymentAttempt>,
    /// The chain from the root to the mandate (empty when it is unknown).
    pub chain: Vec<Mandate>,
    /// Usage of each level of the chain (same order), when asked for; empty otherwise.
    pub usage: Vec<Usage>,
    /// The buyer's confirmations of the snapshot, when asked for and a rule may need them.
    pub confirmations: Vec<Confirmation>,
    /// Suspensions among the chain's actors, the requesting actor and the buyer.
    pub suspensions: Suspensions,
}

impl PaymentInputs {
    /// The actors whose suspension matters: every mandate's actor, then the requester.
    pub fn actors(chain: &[Mandate], actor: &ActorId) -> Vec<ActorId> {
        let mut actors: Vec<ActorId> = chain.iter().map(|m| m.actor().id.clone()).collect();
        actors.push(actor.clone());
        actors
    }

    /// Whether the confirmations are needed: asked for, and a mandate of `chain` has a rule
    /// that may ask for one.
    pub fn wants_confirmations(query: &InputsQuery<'_>, chain: &[Mandate]) -> bool {
        query.confirmations && chain.iter().any(|m| !m.scope().confirmation.is_never())
    }
}

/// The first transaction of a payment ([`Store::open_payment`]): starts the command's
/// idempotency record, keeps the snapshot, resets the actor's count of blocked requests,
/// inserts the attempt as submitted, places its hold on every level of the chain and stages
/// the audit events, all or nothing.
#[derive(Debug, Clone, Copy)]
pub struct OpenPayment<'a> {
    /// The command's idempotency record.
    pub scope: &'a IdempotencyScope,
    /// The command's fingerprint.
    pub fingerprint: &'a ContentDigest,
    /// When the command started (the lease runs from here).
    pub now: DateTime<Utc>,
    /// The lease of the record.
    pub lease: Duration,
    /// The attempt as validated (`authority_validated`): a new id, never stored.
    pub validated: &'a PaymentAttempt,
    /// The same attempt as submitted (`pending_provider_response`): what a store writes in
    /// one transaction. A store that writes step by step inserts `validated`, places the
    /// hold, then changes it to `submitted` ([`Store::change_attempt`] with
    /// [`HoldOp::Verify`](super::HoldOp::Verify)), the order a crash between two steps is
    /// recovered from.
    pub submitted: &'a PaymentAttempt,
    /// Its hold (keyed by the submission; its own `fence` is not used: the record is
    /// started in the same transaction).
    pub hold: &'a HoldRequest,
    /// The snapshot paid for (kept if new).
    pub snapshot: &'a CartSnapshot,
    /// The actor whose count of blocked requests in a row is reset (an allowed decision).
    pub reset_blocks: Option<&'a ActorId>,
    /// The events of the attempt's creation (the decision, the validation).
    pub created: &'a [AuditEvent],
    /// The events of the hold and the submission.
    pub submitted_events: &'a [AuditEvent],
}

/// What [`Store::open_payment`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Opened {
    /// Everything is written: the command owns the record under `fence`.
    Started {
        /// The command's lease.
        fence: Fence,
        /// Usage of each level after the hold, in level order (as [`Store::place_hold`]).
        usage: Vec<Usage>,
    },
    /// The key is not new (a replay, a conflict, in flight): nothing is written. Never
    /// [`Begin::Started`].
    Key(Begin),
    /// The attempt exists already (a command with this key ran before): nothing is written.
    AttemptExists,
}

/// The provided [`Store::payment_inputs`]: the single reads one after another.
pub(super) async fn inputs_one_by_one<S: Store + ?Sized>(
    store: &S,
    query: &InputsQuery<'_>,
) -> Result<PaymentInputs, StoreError> {
    let attempt = store.attempt(query.attempt_id).await?;
    let chain = store.chain(query.mandate_id).await?;
    let usage = if query.usage && !chain.is_empty() {
        store.usage(&chain, query.now).await?
    } else {
        Vec::new()
    };
    let confirmations = if PaymentInputs::wants_confirmations(query, &chain) {
        store
            .confirmations(query.buyer_id, query.snapshot_id)
            .await?
    } else {
        Vec::new()
    };
    let actors = PaymentInputs::actors(&chain, query.actor_id);
    let suspensions = store.suspensions(&actors, query.buyer_id).await?;
    Ok(PaymentInputs {
        attempt,
        chain,
        usage,
        confirmations,
        suspensions,
    })
}

/// The provided [`Store::open_payment`]: the single writes one after another, in the order
/// the engine's general path makes them (record, snapshot, attempt as validated, hold,
/// submission), each with its events, so a crash between two of them leaves what a retry
/// with the key recovers from. A hold refused at a limit abandons the record: the attempt
/// stays validated, without a hold, for the general path to decide again.
pub(super) async fn open_one_by_one<S: Store + ?Sized>(
    store: &S,
    open: &OpenPayment<'_>,
) -> Result<Opened, HoldError> {
    if store.attempt(&open.validated.id).await?.is_some() {
        return Ok(Opened::AttemptExists);
    }
    let fence = match store
        .begin_idempotent(open.scope, open.fingerprint, open.now, open.lease)
        .await?
    {
        Begin::Started(fence) => fence,
        other => return Ok(Opened::Key(other)),
    };
    let opened = async {
        if let Some(actor) = open.reset_blocks {
            store.reset_blocks(actor).await?;
        }
        store.put_snapshot(open.snapshot).await?;
        store
            .write_audited(Write::InsertAttempt(open.validated), open.created)
            .await?;
        let hold = HoldRequest {
            fence: Some(fence.clone()),
            ..open.hold.clone()
        };
        let usage = store.place_hold(&hold).await?;
        let hold_id = open.submitted.hold_id();
        store
            .change_attempt(&AttemptChange {
                next: open.submitted,
                expected: open.validated.status,
                hold_id: &hold_id,
                holds: &[HoldOp::Verify],
                fence: Some(&fence),
                completion: None,
                events: open.submitted_events,
            })
            .await?;
        Ok::<_, HoldError>(usage)
    }
    .await;
    match opened {
        Ok(usage) => Ok(Opened::Started { fence, usage }),
        Err(e) => {
            // The key is freed; what was written is what the general path resumes from.
            let _ = store.abandon_idempotent(&fence).await;
            match e {
                // Another command with this key inserted the attempt between the check above
                // and this insert (it held the key, lost its hold race and freed the key): a
                // lost race, not a failure. Nothing of this call was written.
                HoldError::Store(StoreError::Conflict {
                    entity: "attempt", ..
                }) => Ok(Opened::AttemptExists),
                e => Err(e),
            }
        }
    }
}
