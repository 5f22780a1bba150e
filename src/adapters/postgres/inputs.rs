//! The decision's inputs on PostgreSQL in one round trip.
//!
//! Today's reads depend on the chain: the suspensions are those of the chain's actors, the
//! usage that of the chain's accounts over each mandate's window lengths. Here every statement
//! is computable from the query alone: the statements that depend on the chain carry the
//! recursive chain query themselves and read what they need (actor ids, window lengths) from
//! the mandate rows' stored bodies as `jsonb`, so the attempt, the chain, the confirmations,
//! the suspensions and the usage are sent together, pipelined, in one round trip.
//!
//! They run as separate statements (each its own snapshot), so a mandate can change between
//! them. Each dependent statement therefore also returns what it read of the chain (the
//! mandate ids, and the actor ids or the window lengths), and that is checked against the
//! chain decoded from the chain statement: on any difference the answer is not used and the
//! reads run again the two-step way (the chain first, then what depends on it, computed from
//! the decoded chain), so a mandate revoked, re-parented or edited between two statements can
//! never produce usage or suspensions of another chain than the one returned.
//!
//! Why `jsonb` from the body and not new columns (a migration backfilled from the bodies):
//! the body is what the adapter decodes and checks, so a value read from it cannot drift from
//! the mandate the engine sees, no write path has to keep a copy in step, and old databases
//! need no backfill; parsing a body of a few kilobytes per level costs microseconds on the
//! server, against a round trip saved. A body that is not valid JSON fails the dependent
//! statements, but the chain statement reports it first (as `Corrupt`, the same as before).

use rust_decimal::Decimal;
use tokio_postgres::Row;

use super::codec::{time_param, At};
use super::ledger::{
    bad_hold, distinct_seconds, usage_report, window_amount, window_checked, Account,
};
use super::records::{first_inputs, suspensions_from, ATTEMPT, CONFIRMATIONS, MAX_LEVELS};
use super::store::PostgresStore;
use super::tx::classify;
use crate::domain::{ActorId, Mandate, Usage};
use crate::ports::{InputsQuery, PaymentInputs, StoreError};

/// The chain of `$1` (leaf first, depth bounded by `$2`) with each mandate's body, the prefix
/// of every statement below.
const CHAIN_CTE: &str = "WITH RECURSIVE up (id, parent_id, body, depth) AS ( \
       SELECT id, parent_id, body, 0 FROM mandates WHERE id = $1 \
       UNION ALL \
       SELECT m.id, m.parent_id, m.body, up.depth + 1 \
       FROM mandates m JOIN up ON m.id = up.parent_id WHERE up.depth < $2 \
     )";

/// The chain's mandate ids and actor ids (leaf first) as this statement saw them, and the
/// suspensions among those actors, the requesting actor `$3` and the buyer `$4` (one row).
pub(super) fn suspensions_sql() -> String {
    format!(
        "{CHAIN_CTE}, c AS (SELECT depth, id, (body::jsonb) #>> '{{actor,id}}' AS actor FROM up) \
         SELECT ch.ids, ch.actors, sp.kinds, sp.parties FROM \
           (SELECT array_agg(id ORDER BY depth) AS ids, \
                   array_agg(actor ORDER BY depth) AS actors FROM c) ch, \
           (SELECT array_agg(kind ORDER BY kind, party_id) AS kinds, \
                   array_agg(party_id ORDER BY kind, party_id) AS parties \
            FROM suspensions WHERE \
              (kind IN ('actor', 'credentials') \
                AND (party_id = $3 OR party_id IN (SELECT actor FROM c WHERE actor IS NOT NULL))) \
              OR (kind = 'buyer' AND party_id = $4)) sp"
    )
}

/// Per level of the chain (leaf first) and per distinct window length of its mandate (in the
/// order the limits list them): the account (absent columns when the mandate has none yet)
/// and the window's sums at `$3` (nanoseconds), with the checks of every hold read that
/// [`super::ledger`]'s window sums make. A level without windows has one row, `seconds` null.
pub(super) fn usage_sql() -> String {
    format!(
        "{CHAIN_CTE}, c AS (SELECT depth, id, body::jsonb AS doc FROM up), \
         w AS (SELECT c.depth, (e.value ->> 'window_seconds')::numeric AS seconds, \
                      min(e.ord) AS ord \
               FROM c CROSS JOIN LATERAL jsonb_array_elements( \
                 CASE WHEN jsonb_typeof(c.doc #> '{{scope,budgets,windows}}') = 'array' \
                      THEN c.doc #> '{{scope,budgets,windows}}' ELSE '[]'::jsonb END) \
                 WITH ORDINALITY AS e(value, ord) \
               GROUP BY c.depth, 2) \
         SELECT c.depth, c.id, a.mandate_id AS account, a.currency, a.held, a.spent, a.uses, \
                a.attempts, w.seconds, s.amount, s.count, s.orphan, s.bad \
         FROM c LEFT JOIN accounts a ON a.mandate_id = c.id \
         LEFT JOIN w ON w.depth = c.depth \
         LEFT JOIN LATERAL ( \
           SELECT {amount}, \
             COUNT(h.attempt_id) FILTER (WHERE h.state = 'held' \
               OR (h.state = 'committed' AND h.committed > 0)) AS count, \
             MIN(hl.attempt_id) FILTER (WHERE h.attempt_id IS NULL) AS orphan, \
             {bad} \
           FROM hold_levels hl LEFT JOIN holds h ON h.attempt_id = hl.attempt_id \
           WHERE a.mandate_id IS NOT NULL AND w.seconds IS NOT NULL \
             AND hl.mandate_id = c.id AND hl.at_ns > $3 - w.seconds * 1000000000 \
         ) s ON true \
         ORDER BY c.depth, w.ord",
        amount = window_amount!(),
        bad = bad_hold!("a.currency"),
    )
}

/// Why the one-round-trip answer was not used.
#[derive(Debug)]
pub(super) enum Disagree {
    /// A dependent statement saw another chain than the chain statement (a mandate changed
    /// between them), or read a body the chain statement did not.
    Chain(String),
    /// A dependent statement failed on data (a body that changed into something `jsonb`
    /// refuses between the statements).
    Data(String),
}

impl Disagree {
    /// What disagreed (mandate and actor ids, window lengths, an SQLSTATE: no secret).
    pub(super) fn reason(&self) -> &str {
        match self {
            Disagree::Chain(why) | Disagree::Data(why) => why,
        }
    }
}

/// The suspensions from the row of [`suspensions_sql`], checked against `chain` (root first).
pub(super) fn suspensions_checked(
    row: &Row,
    chain: &[Mandate],
    query: &InputsQuery<'_>,
) -> Result<Result<crate::domain::Suspensions, Disagree>, StoreError> {
    let other = |e: tokio_postgres::Error| StoreError::Other(Box::new(e));
    let ids: Option<Vec<String>> = row.try_get("ids").map_err(other)?;
    let actors: Option<Vec<Option<String>>> = row.try_get("actors").map_err(other)?;
    let expected_ids: Vec<&str> = chain.iter().rev().map(|m| m.id().as_str()).collect();
    let expected_actors: Vec<Option<&str>> = chain
        .iter()
        .rev()
        .map(|m| Some(m.actor().id.as_str()))
        .collect();
    let ids = ids.unwrap_or_default();
    let actors = actors.unwrap_or_default();
    if ids
        .iter()
        .map(String::as_str)
        .ne(expected_ids.iter().copied())
        || actors
            .iter()
            .map(Option::as_deref)
            .ne(expected_actors.iter().copied())
    {
        return Ok(Err(Disagree::Chain(format!(
            "the suspensions were read for mandates {ids:?} and actors {actors:?}"
        ))));
    }
    let kinds: Option<Vec<String>> = row.try_get("kinds").map_err(other)?;
    let parties: Option<Vec<String>> = row.try_get("parties").map_err(other)?;
    let kinds = kinds.unwrap_or_default();
    let parties = parties.unwrap_or_default();
    if kinds.len() != parties.len() {
        return Err(StoreError::Other(
            "postgres: the suspensions came back uneven".into(),
        ));
    }
    let wanted: Vec<ActorId> = PaymentInputs::actors(chain, query.actor_id);
    let pairs: Vec<(&str, String)> = kinds
        .iter()
        .map(String::as_str)
        .zip(parties)
        .collect::<Vec<_>>();
    Ok(Ok(suspensions_from(&pairs, &wanted, query.buyer_id)))
}

/// The usage of each level of `chain` (root first) from the rows of [`usage_sql`], checked
/// against `chain`: the same mandates, and for each the same window lengths.
pub(super) fn usage_checked(
    rows: &[Row],
    chain: &[Mandate],
) -> Result<Result<Vec<Usage>, Disagree>, StoreError> {
    let other = |e: tokio_postgres::Error| StoreError::Other(Box::new(e));
    // The rows of each level, leaf first.
    let mut levels: Vec<(i32, String, Vec<&Row>)> = Vec::new();
    for row in rows {
        let depth: i32 = row.try_get("depth").map_err(other)?;
        let id: String = row.try_get("id").map_err(other)?;
        match levels.last_mut() {
            Some((d, _, rows)) if *d == depth => rows.push(row),
            _ => levels.push((depth, id, vec![row])),
        }
    }
    if levels.len() != chain.len() {
        return Ok(Err(Disagree::Chain(format!(
            "the usage was read for {} levels, the chain has {}",
            levels.len(),
            chain.len()
        ))));
    }
    let mut out = Vec::with_capacity(chain.len());
    for (m, (_, id, rows)) in chain.iter().zip(levels.iter().rev()) {
        if id != m.id().as_str() {
            return Ok(Err(Disagree::Chain(format!(
                "the usage was read for mandate {id} where the chain has {}",
                m.id()
            ))));
        }
        let seconds = distinct_seconds(&m.scope().budgets.windows);
        let read: Vec<Option<Decimal>> = rows
            .iter()
            .map(|r| r.try_get::<_, Option<Decimal>>("seconds"))
            .collect::<Result<_, _>>()
            .map_err(other)?;
        let same = if seconds.is_empty() {
            read == [None]
        } else {
            read.len() == seconds.len()
                && read
                    .iter()
                    .zip(&seconds)
                    .all(|(r, s)| *r == Some(Decimal::from(*s)))
        };
        if !same {
            return Ok(Err(Disagree::Chain(format!(
                "the usage of mandate {id} was read over windows {read:?}, its limits name \
                 {seconds:?} seconds"
            ))));
        }
        let at = At {
            table: "accounts",
            key: id,
        };
        let first = rows[0];
        let account: Option<String> = at.get(first, "account")?;
        let account = match account {
            None => None,
            Some(_) => {
                let currency = at.currency(&at.get::<String>(first, "currency")?)?;
                if currency != m.currency() {
                    return Err(super::codec::corrupt(
                        "accounts",
                        id,
                        format!(
                            "the account is in {currency}, the mandate in {}",
                            m.currency()
                        ),
                    ));
                }
                Some(Account {
                    currency,
                    held: at.total("held", at.get(first, "held")?)?,
                    spent: at.total("spent", at.get(first, "spent")?)?,
                    uses: at.count("uses", at.get(first, "uses")?)?,
                    attempts: at.count("attempts", at.get(first, "attempts")?)?,
                })
            }
        };
        let mut windows = Vec::with_capacity(seconds.len());
        for (row, s) in rows.iter().zip(&seconds) {
            let sums = if account.is_some() {
                window_checked(row, id)?
            } else {
                (0, 0)
            };
            windows.push((*s, sums));
        }
        out.push(usage_report(m, account, &windows));
    }
    Ok(Ok(out))
}

impl PostgresStore {
    /// [`crate::ports::Store::payment_inputs`] in one round trip (see the module docs); the
    /// two-step reads when a dependent statement disagrees with the chain.
    pub(super) async fn payment_inputs_pipelined(
        &self,
        query: &InputsQuery<'_>,
    ) -> Result<PaymentInputs, StoreError> {
        match self.inputs_one_trip(query).await? {
            Ok(inputs) => Ok(inputs),
            Err(why) => {
                tracing::debug!(
                    reason = why.reason(),
                    "postgres: the decision's inputs disagree with the chain; read again in two steps"
                );
                self.payment_inputs_rows(query).await
            }
        }
    }

    pub(super) async fn inputs_one_trip(
        &self,
        query: &InputsQuery<'_>,
    ) -> Result<Result<PaymentInputs, Disagree>, StoreError> {
        let client = self.client().await?;
        let fail = classify::<StoreError>;
        let susp_sql = suspensions_sql();
        let usage_sql = usage_sql();
        // Prepared once per connection; on a new connection the five are prepared together.
        let (attempt_st, (chain_st, (conf_st, (susp_st, usage_st)))) = super::tx::join2(
            client.prepare_cached(ATTEMPT),
            super::tx::join2(
                client.prepare_cached(super::records::CHAIN),
                super::tx::join2(
                    client.prepare_cached(CONFIRMATIONS),
                    super::tx::join2(
                        client.prepare_cached(&susp_sql),
                        client.prepare_cached(&usage_sql),
                    ),
                ),
            ),
        )
        .await;
        let (attempt_st, chain_st, conf_st, susp_st, usage_st) = (
            attempt_st.map_err(fail)?,
            chain_st.map_err(fail)?,
            conf_st.map_err(fail)?,
            susp_st.map_err(fail)?,
            usage_st.map_err(fail)?,
        );
        let snapshot = query.snapshot_id.to_string();
        let depth = MAX_LEVELS as i32;
        let leaf = query.mandate_id.as_str();
        let now = time_param(query.now)?;
        let (attempt, (chain, (confirmations, (suspensions, usage)))) = super::tx::join2(
            client.query_opt(&attempt_st, &[&query.attempt_id.as_str()]),
            super::tx::join2(
                client.query(&chain_st, &[&leaf, &depth]),
                super::tx::join2(
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
                    super::tx::join2(
                        client.query_one(
                            &susp_st,
                            &[
                                &leaf,
                                &depth,
                                &query.actor_id.as_str(),
                                &query.buyer_id.as_str(),
                            ],
                        ),
                        async {
                            if query.usage {
                                client
                                    .query(&usage_st, &[&leaf, &depth, &now])
                                    .await
                                    .map(Some)
                            } else {
                                Ok(None)
                            }
                        },
                    ),
                ),
            ),
        )
        .await;
        // Decoded as the two-step reads decode them, so both report the same faults.
        let (attempt, chain, confirmations) = first_inputs(query, attempt, chain, confirmations)?;
        let suspensions = match suspensions {
            Ok(row) => match suspensions_checked(&row, &chain, query)? {
                Ok(s) => s,
                Err(why) => return Ok(Err(why)),
            },
            Err(e) => return data_or(e),
        };
        let usage = match usage {
            Ok(Some(rows)) if !chain.is_empty() => match usage_checked(&rows, &chain)? {
                Ok(u) => u,
                Err(why) => return Ok(Err(why)),
            },
            Ok(_) => Vec::new(),
            Err(e) => return data_or(e),
        };
        Ok(Ok(PaymentInputs {
            attempt,
            chain,
            usage,
            confirmations,
            suspensions,
        }))
    }
}

/// A dependent statement's failure once the chain decoded: a data exception (SQLSTATE class
/// 22, a body `jsonb` refuses) means a body changed after the chain statement read it, so the
/// reads run again; anything else is reported.
fn data_or<T>(e: tokio_postgres::Error) -> Result<Result<T, Disagree>, StoreError> {
    match e.code() {
        Some(code) if code.code().starts_with("22") => Ok(Err(Disagree::Data(format!(
            "a dependent statement failed on data: {}",
            code.code()
        )))),
        _ => Err(classify::<StoreError>(e)),
    }
}
