//! The payment's unit of work on PostgreSQL, step by step: the decision's inputs in two
//! pipelined round trips (the fallback of the one-round-trip reads of [`super::inputs`]), and
//! the first write transaction of a payment with its independent writes pipelined (the path
//! of a key that is not new; a new key takes the three round trips of [`super::piped`]).

use tokio_postgres::IsolationLevel;

use super::codec::encode;
use super::idempotency::begin_in;
use super::ledger::{place_in, usage_in, READ_ACCOUNTS, WINDOW_SUMS};
use super::outbox::stage_in;
use super::records::{
    first_inputs, insert_attempt_in, suspensions_of, ATTEMPT, CHAIN, CONFIRMATIONS, MAX_LEVELS,
    SUSPENSIONS,
};
use super::store::PostgresStore;
use super::tx::{classify, in_transaction, join2, Tx};
use crate::ports::{Begin, HoldError, InputsQuery, OpenPayment, Opened, PaymentInputs, StoreError};

impl PostgresStore {
    /// The two-step reads of [`crate::ports::Store::payment_inputs`] (used when the one-round-
    /// trip reads of [`super::inputs`] disagree with the chain): the attempt, the chain and the
    /// confirmations in one pipelined round trip, then the suspensions and the accounts of the
    /// chain in a second (a third only for the window sums of a chain with rolling windows). Every
    /// statement is prepared once per connection. The reads are not one snapshot: the hold
    /// checks every limit again atomically.
    pub(super) async fn payment_inputs_rows(
        &self,
        query: &InputsQuery<'_>,
    ) -> Result<PaymentInputs, StoreError> {
        let client = self.client().await?;
        let fail = classify::<StoreError>;
        let attempt_st = client.prepare_cached(ATTEMPT).await.map_err(fail)?;
        let chain_st = client.prepare_cached(CHAIN).await.map_err(fail)?;
        let conf_st = client.prepare_cached(CONFIRMATIONS).await.map_err(fail)?;
        let susp_st = client.prepare_cached(SUSPENSIONS).await.map_err(fail)?;
        let read_st = client.prepare_cached(READ_ACCOUNTS).await.map_err(fail)?;
        let sums_st = client.prepare_cached(WINDOW_SUMS).await.map_err(fail)?;
        let snapshot = query.snapshot_id.to_string();
        let depth = MAX_LEVELS as i32;
        let (attempt, (chain, confirmations)) = join2(
            client.query_opt(&attempt_st, &[&query.attempt_id.as_str()]),
            join2(
                client.query(&chain_st, &[&query.mandate_id.as_str(), &depth]),
                async {
                    if query.confirmations {
                        client
                            .query(&conf_st, &[&query.buyer_id.as_str(), &snapshot])
                            .await
                            .map(Some)
                    } else {
                        Ok(None)
                    }
                },
            ),
        )
        .await;
        let (attempt, chain, confirmations) = first_inputs(query, attempt, chain, confirmations)?;
        let actors = PaymentInputs::actors(&chain, query.actor_id);
        let asked: Vec<&str> = actors.iter().map(|a| a.as_str()).collect();
        let (suspensions, usage) = join2(
            client.query(&susp_st, &[&asked, &query.buyer_id.as_str()]),
            async {
                if query.usage && !chain.is_empty() {
                    usage_in(&**client, &read_st, &sums_st, &chain, query.now).await
                } else {
                    Ok(Vec::new())
                }
            },
        )
        .await;
        let suspensions = suspensions_of(&suspensions.map_err(fail)?, &actors, query.buyer_id)?;
        let usage = super::tx::once::<_, StoreError>(usage)?;
        Ok(PaymentInputs {
            attempt,
            chain,
            usage,
            confirmations,
            suspensions,
        })
    }

    /// [`crate::ports::Store::open_payment`] in one transaction (READ COMMITTED): the
    /// attempt looked up, the idempotency record started (its row locked to the commit),
    /// the hold placed (its accounts locked in the global order, as `place_hold`), then the
    /// attempt, the snapshot and the reset of the block count sent together (pipelined),
    /// and the events staged. A refused hold, an answer other than `Started` or any error
    /// rolls it all back.
    pub(super) async fn open_payment_tx(
        &self,
        open: &OpenPayment<'_>,
    ) -> Result<Opened, HoldError> {
        let snapshot_body = encode("snapshot", open.snapshot)?;
        let snapshot_id = open.snapshot.id().to_string();
        let events: Vec<_> = open
            .created
            .iter()
            .chain(open.submitted_events)
            .cloned()
            .collect();
        let direct = self.trail.is_some();
        in_transaction!(
            &self.pool,
            self.retries,
            IsolationLevel::ReadCommitted,
            HoldError,
            |tx| {
                // An answer other than `Started` has written nothing: the (empty) transaction
                // commits.
                let st = tx.prepare_cached(ATTEMPT).await?;
                let exists = tx
                    .query_opt(&st, &[&open.submitted.id.as_str()])
                    .await?
                    .is_some();
                if exists {
                    Opened::AttemptExists
                } else {
                    match begin_in(&tx, open.scope, open.fingerprint, open.now, open.lease)
                        .await
                        .map_err(to_hold)?
                    {
                        Begin::Started(fence) => {
                            let usage = place_in(&tx, open.hold).await?;
                            let snap = tx
                                .prepare_cached(
                                    "INSERT INTO snapshots (id, body) VALUES ($1, $2) \
                                     ON CONFLICT (id) DO NOTHING",
                                )
                                .await?;
                            let blocks = tx
                                .prepare_cached("DELETE FROM blocks WHERE actor_id = $1")
                                .await?;
                            let actor = open.reset_blocks.map(|a| a.as_str());
                            let (inserted, (snapshot, reset)) = join2(
                                insert_attempt_in(&tx, open.submitted),
                                join2(tx.execute(&snap, &[&snapshot_id, &snapshot_body]), async {
                                    match actor {
                                        Some(a) => tx.execute(&blocks, &[&a]).await.map(|_| ()),
                                        None => Ok(()),
                                    }
                                }),
                            )
                            .await;
                            inserted.map_err(to_hold)?;
                            snapshot?;
                            reset?;
                            stage_in(&tx, &events, direct).await.map_err(to_hold)?;
                            Opened::Started { fence, usage }
                        }
                        other => Opened::Key(other),
                    }
                }
            }
        )
    }
}

/// A store failure inside the open transaction, as the hold's error.
fn to_hold(e: Tx<StoreError>) -> Tx<HoldError> {
    match e {
        Tx::Pg(e) => Tx::Pg(e),
        Tx::CommitUnknown(e) => Tx::CommitUnknown(e),
        Tx::Fail(e) => Tx::Fail(HoldError::Store(e)),
    }
}
