//! A payment's two write transactions in as few round trips as their data dependencies allow.
//!
//! `BEGIN` goes out with the transaction's first statements and `COMMIT` with its last; in
//! between, every statement that does not need an answer of the one before is sent with it
//! (pipelined on the connection: one round trip for the batch). The server runs them in the
//! order sent, so the lock order is the order of the statements in each batch, the same as the
//! step-by-step transactions of [`super::payment`] and [`super::change`]: idempotency records,
//! the attempt row, the chain's accounts (by mandate id), the hold row, the trail's head, the
//! outbox table.
//!
//! * `open_payment`: (1) `BEGIN`, the attempt looked up, the idempotency record inserted, the
//!   hold's row inserted, the chain's accounts locked, their window sums read; (2) the hold's
//!   levels and counters, the attempt, the snapshot, the block count, and the trail's head
//!   locked with the owners and the last checkpoint read; (3) the events, their index rows, the
//!   head, the outbox, `COMMIT`. Three round trips.
//! * `change_attempt`: (1) `BEGIN`, the fences checked, the attempt's compare-and-set, the
//!   hold's accounts and row locked, the trail's head locked and read; (2) the hold and its
//!   counters, the completion, the events, the head, the outbox, `COMMIT`. Two round trips.
//!
//! All or nothing: a statement sent with `COMMIT` that fails aborts the transaction, and the
//! server answers the `COMMIT` with a rollback; every answer is checked in order and the first
//! failure is reported. So a check whose failure must undo the transaction is made by a
//! statement that fails (a number of the trail already taken is a unique violation, a
//! completion that matches no record divides by zero, a trail head moved since it was read
//! divides by zero), never by a count read after the commit.
//! A connection lost while the last batch is in flight leaves the outcome unknown (reported as
//! such, as for any commit). A call dropped half-way leaves a `ROLLBACK` queued ahead of the
//! connection's next user.
//!
//! The rare paths keep the step-by-step transactions: a key that is not new (replay, in
//! flight, conflict, takeover), a hold with a fence of its own or more levels than allowed, a
//! batch of events that makes a checkpoint due (its seal reads the rows just written, one more
//! round trip).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use deadpool_postgres::Object;
use rust_decimal::Decimal;
use tokio_postgres::{Row, Statement};

use super::audit::{
    plan_append, seal_due, HeadMove, TrailPlan, HEAD_LOCK, INSERT_EVENTS_OR_FAIL, INSERT_INDEX,
    INSERT_OWNERS, LAST_CHECKPOINT, OWNERS, UPDATE_HEAD,
};
use super::codec::{encode, time_param, window_start, At};
use super::holds::{hold_of, HOLD_COLUMNS};
use super::idempotency::{fenced, scope_key, token_of, token_param};
use super::ledger::{
    account_of, bad_hold, check_level, distinct_seconds, limits_currency, missing_account,
    placed_usage, window_amount, window_checked, Account, Sums, LOCK_ACCOUNTS, MAX_LEVELS,
};
use super::records::{attempt_status, ATTEMPT};
use super::store::PostgresStore;
use super::tx::{client, settle, Tx};
use crate::adapters::hold_rules::{self, Figures};
use crate::domain::{AuditEvent, AuditKind, MandateId};
use crate::ports::{AttemptChange, AuditError, Fence, HoldError, OpenPayment, Opened, StoreError};

/// One statement's answer.
enum Answer {
    Rows(Vec<Row>),
    Count(u64),
    Done,
}

type Pending<'a> = Pin<Box<dyn Future<Output = Result<Answer, tokio_postgres::Error>> + Send + 'a>>;

/// A batch of statements sent together, answered in order.
struct Batch<'a> {
    client: &'a Object,
    items: Vec<Pending<'a>>,
}

impl<'a> Batch<'a> {
    fn new(client: &'a Object) -> Batch<'a> {
        Batch {
            client,
            items: Vec::new(),
        }
    }

    /// Adds a simple query (`BEGIN`, `COMMIT`, `LOCK TABLE`); returns its index.
    fn simple(&mut self, sql: &'static str) -> usize {
        let c = self.client;
        self.items.push(Box::pin(async move {
            c.batch_execute(sql).await.map(|_| Answer::Done)
        }));
        self.items.len() - 1
    }

    /// Adds a query whose rows are kept.
    fn query(&mut self, st: &'a Statement, params: Vec<Param<'a>>) -> usize {
        let c = self.client;
        self.items.push(Box::pin(async move {
            c.query(st, &refs(&params)).await.map(Answer::Rows)
        }));
        self.items.len() - 1
    }

    /// Adds a statement whose row count is kept.
    fn execute(&mut self, st: &'a Statement, params: Vec<Param<'a>>) -> usize {
        let c = self.client;
        self.items.push(Box::pin(async move {
            c.execute(st, &refs(&params)).await.map(Answer::Count)
        }));
        self.items.len() - 1
    }

    /// Sends every statement (in the order added) before awaiting any answer.
    ///
    /// A statement the client refuses before sending it (a parameter it cannot encode, a
    /// closed connection) fails on its first poll, before any answer of the server could
    /// have come. Then nothing after it is sent, `COMMIT` included: the statements before it
    /// are in a transaction that can no longer commit (the caller's guard rolls it back), and
    /// the refusal is the batch's answer. Sending the rest would commit the transaction
    /// without the refused statement (a hold placed without its counters, say).
    async fn run(self) -> Result<Answers, tokio_postgres::Error> {
        let mut items = self.items;
        let mut out: Vec<Option<Result<Answer, tokio_postgres::Error>>> =
            items.iter().map(|_| None).collect();
        let mut sent = false;
        std::future::poll_fn(move |cx| {
            let mut pending = false;
            for (slot, item) in out.iter_mut().zip(items.iter_mut()) {
                if slot.is_none() {
                    match item.as_mut().poll(cx) {
                        Poll::Ready(Err(e)) if !sent && e.as_db_error().is_none() => {
                            // Refused before it was sent: the items after it stay unsent.
                            return Poll::Ready(Err(e));
                        }
                        Poll::Ready(v) => *slot = Some(v),
                        Poll::Pending => pending = true,
                    }
                }
            }
            sent = true;
            if pending {
                Poll::Pending
            } else {
                Poll::Ready(Ok(Answers(std::mem::take(&mut out))))
            }
        })
        .await
    }
}

/// Why an answer could not be taken: the statement failed, or the index asked for is not
/// an answer of that kind in the batch (a mix-up of the code, reported as an internal error,
/// never read as "no rows" or "nothing changed").
#[derive(Debug)]
enum Unanswered {
    Pg(tokio_postgres::Error),
    Internal(String),
}

impl From<tokio_postgres::Error> for Unanswered {
    fn from(e: tokio_postgres::Error) -> Self {
        Unanswered::Pg(e)
    }
}

impl<E: super::tx::PortError> From<Unanswered> for Tx<E> {
    fn from(e: Unanswered) -> Self {
        match e {
            Unanswered::Pg(e) => Tx::Pg(e),
            Unanswered::Internal(message) => Tx::Fail(E::other(message.into())),
        }
    }
}

/// The answers of a batch, taken by index.
struct Answers(Vec<Option<Result<Answer, tokio_postgres::Error>>>);

impl Answers {
    /// The answer of statement `i`, once: an index not in the batch (or taken already) is an
    /// internal error.
    fn take(&mut self, i: usize) -> Result<Answer, Unanswered> {
        match self.0.get_mut(i).and_then(Option::take) {
            Some(a) => Ok(a?),
            None => Err(Unanswered::Internal(format!(
                "postgres: statement {i} of a batch of {} has no answer to take",
                self.0.len()
            ))),
        }
    }

    fn rows(&mut self, i: usize) -> Result<Vec<Row>, Unanswered> {
        match self.take(i)? {
            Answer::Rows(r) => Ok(r),
            _ => Err(Unanswered::Internal(format!(
                "postgres: statement {i} of a batch answered no rows"
            ))),
        }
    }

    fn count(&mut self, i: usize) -> Result<u64, Unanswered> {
        match self.take(i)? {
            Answer::Count(n) => Ok(n),
            _ => Err(Unanswered::Internal(format!(
                "postgres: statement {i} of a batch answered no row count"
            ))),
        }
    }

    /// The outcome of the batch that carried `COMMIT` (at `commit`): the first failure in
    /// order, `on_fail` deciding what a database error of statement `i` means; a connection
    /// lost on the way leaves the commit's outcome unknown.
    fn committed<E>(
        mut self,
        commit: usize,
        on_fail: impl Fn(usize, &tokio_postgres::Error) -> Option<E>,
    ) -> Result<(), Tx<E>> {
        let mut first: Option<Tx<E>> = None;
        for (i, slot) in self.0.iter_mut().enumerate() {
            if let Some(Err(e)) = slot.take() {
                if e.as_db_error().is_none() {
                    if first.is_some() {
                        // An earlier statement failed: the transaction was aborted, its
                        // `COMMIT` cannot have committed, whatever became of the connection.
                        continue;
                    }
                    return Err(Tx::CommitUnknown(e));
                }
                if first.is_none() {
                    first = Some(if i == commit {
                        Tx::commit(e)
                    } else {
                        match on_fail(i, &e) {
                            Some(mapped) => Tx::Fail(mapped),
                            None => Tx::Pg(e),
                        }
                    });
                }
            }
        }
        match first {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// Rolls back on drop unless the transaction ended: a `ROLLBACK` is queued on the connection
/// (written ahead of anything its next user sends; its answer is dropped).
struct Open<'a> {
    client: &'a Object,
    open: bool,
}

impl Open<'_> {
    fn ended(&mut self) {
        self.open = false;
    }
}

impl Drop for Open<'_> {
    fn drop(&mut self) {
        if self.open {
            // A simple query is queued on its first poll.
            let rollback = self.client.batch_execute("ROLLBACK");
            let mut rollback = std::pin::pin!(rollback);
            let _ = rollback
                .as_mut()
                .poll(&mut Context::from_waker(Waker::noop()));
        }
    }
}

type Param<'a> = Box<dyn tokio_postgres::types::ToSql + Sync + Send + 'a>;

/// The parameters as the client's query methods take them.
fn refs<'p>(params: &'p [Param<'_>]) -> Vec<&'p (dyn tokio_postgres::types::ToSql + Sync)> {
    params
        .iter()
        .map(|p| &**p as &(dyn tokio_postgres::types::ToSql + Sync))
        .collect()
}

fn p<'a, T: tokio_postgres::types::ToSql + Sync + Send + 'a>(v: T) -> Param<'a> {
    Box::new(v)
}

const BEGIN: &str = "BEGIN ISOLATION LEVEL READ COMMITTED";

const KEY_INSERT: &str = "INSERT INTO idempotency (actor_id, operation, key, fingerprint, \
     state, lease_until_ns, token) \
     VALUES ($1, $2, $3, $4, 'in_flight', $5, nextval('lease_tokens')) \
     ON CONFLICT DO NOTHING RETURNING token";

const HOLD_INSERT: &str = "INSERT INTO holds (attempt_id, currency, amount, at_ns, state, \
     mandate_ids) VALUES ($1, $2, $3, $4, 'held', $5) ON CONFLICT (attempt_id) DO NOTHING";

/// The window sums of [`super::ledger`], the currency each hold is checked against taken from
/// the account (so the statement can go out with the statement that locks the accounts).
const SUMS_LOCKED: &str = concat!(
    "SELECT w.i, ",
    window_amount!(),
    ", COUNT(*) FILTER (WHERE h.state = 'held' OR (h.state = 'committed' AND h.committed > 0)) \
       AS count, \
     MIN(hl.attempt_id) FILTER (WHERE hl.attempt_id IS NOT NULL AND h.attempt_id IS NULL) \
       AS orphan, ",
    bad_hold!("a.currency"),
    " FROM unnest($1::text[], $2::numeric[]) WITH ORDINALITY AS w(mandate_id, start_ns, i) \
     LEFT JOIN accounts a ON a.mandate_id = w.mandate_id \
     LEFT JOIN hold_levels hl ON hl.mandate_id = w.mandate_id \
       AND (w.start_ns IS NULL OR hl.at_ns > w.start_ns) \
     LEFT JOIN holds h ON h.attempt_id = hl.attempt_id \
     GROUP BY w.i, a.currency ORDER BY w.i"
);

const CREATE_ACCOUNTS: &str = "INSERT INTO accounts (mandate_id, currency) \
     SELECT u.id, COALESCE(m.currency, u.currency) \
     FROM unnest($1::text[], $2::text[]) AS u(id, currency) \
     LEFT JOIN mandates m ON m.id = u.id \
     ORDER BY u.id ON CONFLICT (mandate_id) DO NOTHING";

const LEVELS_INSERT: &str = "WITH levels AS ( \
       INSERT INTO hold_levels (mandate_id, at_ns, attempt_id) \
       SELECT unnest($1::text[]), $3, $4) \
     UPDATE accounts SET held = held + $2, uses = uses + 1, \
     attempts = attempts + 1 WHERE mandate_id = ANY($1)";

const ATTEMPT_INSERT: &str =
    "INSERT INTO attempts (id, status, created_at_ns, body) VALUES ($1, $2, $3, $4) \
     ON CONFLICT (id) DO NOTHING";

const SNAPSHOT_INSERT: &str =
    "INSERT INTO snapshots (id, body) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING";

const BLOCKS_RESET: &str = "DELETE FROM blocks WHERE actor_id = $1";

const OUTBOX_LOCK: &str = "LOCK TABLE audit_pending IN EXCLUSIVE MODE";

const OUTBOX_INSERT: &str = "INSERT INTO audit_pending (body) VALUES ($1)";

const FENCE_SHARE: &str = "SELECT 1 FROM idempotency WHERE actor_id = $1 AND operation = $2 \
     AND key = $3 AND state = 'in_flight' AND token = $4 FOR SHARE";

const FENCE_UPDATE: &str = "SELECT 1 FROM idempotency WHERE actor_id = $1 AND operation = $2 \
     AND key = $3 AND state = 'in_flight' AND token = $4 FOR UPDATE";

/// The compare-and-set of an attempt: `n` is 1 when it was set.
const ATTEMPT_CAS: &str = "WITH u AS (UPDATE attempts SET status = $3, body = $4 \
       WHERE id = $1 AND status = $2 RETURNING 1) \
     SELECT (SELECT count(*) FROM u) AS n";

/// The status of an attempt, for the words of a lost compare-and-set (a statement of its
/// own, so its snapshot has every change committed before it).
const ATTEMPT_STATUS: &str = "SELECT status FROM attempts WHERE id = $1";

const HOLD_IDS: &str = "SELECT mandate_ids FROM holds WHERE attempt_id = $1";

/// The accounts of the hold's mandates, locked in the global order.
const LOCK_HOLD_ACCOUNTS: &str = "SELECT mandate_id, currency, held, spent, uses, attempts \
     FROM accounts WHERE mandate_id IN ( \
       SELECT jsonb_array_elements_text(mandate_ids::jsonb) FROM holds WHERE attempt_id = $1) \
     ORDER BY mandate_id FOR UPDATE";

const HOLD_UPDATE: &str = "UPDATE holds SET state = $2, committed = $3, refunded = $4, \
     lifetime_back = $5, window_back = $6 WHERE attempt_id = $1";

const ACCOUNTS_MOVE: &str = "UPDATE accounts SET held = held + $2, spent = spent + $3, \
     uses = uses + $4 WHERE mandate_id = ANY($1)";

/// Completes a record in flight under the token; no such record divides by zero
/// (`division_by_zero`), which aborts the transaction sent with its `COMMIT`.
const COMPLETE_OR_FAIL: &str = "WITH u AS (UPDATE idempotency SET state = 'completed', \
       result = $4, retain_until_ns = $5, lease_until_ns = NULL \
       WHERE actor_id = $1 AND operation = $2 AND key = $3 \
       AND state = 'in_flight' AND token = $6 RETURNING 1) \
     SELECT 1 / count(*) FROM u";

/// The events a transaction writes: chained into the trail (the store writes its own trail)
/// or staged in the outbox (alerts always; everything without a trail).
struct Events<'e> {
    trail: Vec<&'e AuditEvent>,
    staged: Vec<String>,
}

fn split_events(events: &[AuditEvent], direct: bool) -> Result<Events<'_>, StoreError> {
    let (trail, staged): (Vec<&AuditEvent>, Vec<&AuditEvent>) = if direct {
        events
            .iter()
            .partition(|e| !matches!(e.kind, AuditKind::Alert { .. }))
    } else {
        (Vec::new(), events.iter().collect())
    };
    let staged = staged
        .into_iter()
        .map(|e| encode("audit event", e))
        .collect::<Result<Vec<String>, StoreError>>()?;
    Ok(Events { trail, staged })
}

fn audit_to_store(e: AuditError) -> StoreError {
    match e {
        AuditError::Unavailable { message } => StoreError::Unavailable { message },
        other => StoreError::Other(Box::new(other)),
    }
}

fn store_tx<E>(e: Tx<StoreError>, wrap: impl Fn(StoreError) -> E) -> Tx<E> {
    match e {
        Tx::Pg(e) => Tx::Pg(e),
        Tx::CommitUnknown(e) => Tx::CommitUnknown(e),
        Tx::Fail(e) => Tx::Fail(wrap(e)),
    }
}

/// The statements of the trail's head, prepared.
struct TrailStatements {
    head: Statement,
    owners: Statement,
    last: Statement,
    insert: Statement,
    index: Statement,
    learned: Statement,
    update: Statement,
}

/// The trail's statements, in the order [`TrailStatements::of`] takes them.
const TRAIL_SQL: [&str; 7] = [
    HEAD_LOCK,
    OWNERS,
    LAST_CHECKPOINT,
    INSERT_EVENTS_OR_FAIL,
    INSERT_INDEX,
    INSERT_OWNERS,
    UPDATE_HEAD,
];

impl TrailStatements {
    fn of([head, owners, last, insert, index, learned, update]: [Statement; 7]) -> Self {
        TrailStatements {
            head,
            owners,
            last,
            insert,
            index,
            learned,
            update,
        }
    }
}

/// Prepares `sqls` on `c` together: on a connection that has not prepared them yet, every
/// Parse/Describe goes out before any answer is awaited (one round trip for all, where one
/// after another took one each); the ones prepared already come from the cache.
async fn prepare_all<const N: usize>(
    c: &Object,
    sqls: [&str; N],
) -> Result<[Statement; N], Unanswered> {
    type Preparing<'a> =
        Pin<Box<dyn Future<Output = Result<Statement, tokio_postgres::Error>> + Send + 'a>>;
    let mut pending: Vec<Preparing<'_>> = sqls
        .iter()
        .map(|sql| Box::pin(c.prepare_cached(sql)) as Preparing<'_>)
        .collect();
    let mut done: Vec<Option<Statement>> = sqls.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut waiting = false;
        for (slot, f) in done.iter_mut().zip(pending.iter_mut()) {
            if slot.is_none() {
                match f.as_mut().poll(cx) {
                    Poll::Ready(Ok(st)) => *slot = Some(st),
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => waiting = true,
                }
            }
        }
        if waiting {
            Poll::Pending
        } else {
            Poll::Ready(Ok(()))
        }
    })
    .await?;
    let statements: Vec<Statement> = done.into_iter().flatten().collect();
    <[Statement; N]>::try_from(statements)
        .map_err(|_| Unanswered::Internal("postgres: a statement was not prepared".into()))
}

/// The statements of a batch and the trail's, prepared together.
async fn prepare_with_trail<const N: usize>(
    c: &Object,
    sqls: [&str; N],
) -> Result<([Statement; N], TrailStatements), Unanswered> {
    let (own, trail) = super::tx::join2(prepare_all(c, sqls), prepare_all(c, TRAIL_SQL)).await;
    Ok((own?, TrailStatements::of(trail?)))
}

/// Indexes of the trail's reads in a batch.
struct TrailReads {
    head: usize,
    owners: usize,
    last: usize,
}

fn read_trail<'a>(
    b: &mut Batch<'a>,
    st: &'a TrailStatements,
    named: &'a Vec<String>,
) -> TrailReads {
    TrailReads {
        head: b.query(&st.head, vec![]),
        owners: b.query(&st.owners, vec![p(named)]),
        last: b.query(&st.last, vec![]),
    }
}

fn plan_trail(
    a: &mut Answers,
    reads: &TrailReads,
    events: &[&AuditEvent],
) -> Result<TrailPlan, Tx<StoreError>> {
    let head = a.rows(reads.head)?;
    let owners = a.rows(reads.owners)?;
    let last = a.rows(reads.last)?;
    plan_append(head.first(), &owners, last.first(), events)
        .map_err(|e| Tx::Fail(audit_to_store(e)))
}

/// Writes a planned batch: with a checkpoint due, the rows and the seal now (the seal reads
/// the rows); the head is updated in `b` (the batch with `COMMIT`), and the events' rows too
/// when no checkpoint is due. Returns the index of the events' insert in `b`, if there.
async fn write_trail<'a>(
    c: &'a Object,
    b: &mut Batch<'a>,
    st: &'a TrailStatements,
    plan: &'a TrailPlan,
    head: &'a HeadMove,
) -> Result<(Option<usize>, usize), Tx<StoreError>> {
    let mut insert_at = None;
    if plan.due.is_some() {
        c.execute(
            &st.insert,
            &[&plan.seqs, &plan.prevs, &plan.hashes, &plan.bodies],
        )
        .await
        .map_err(|e| match e.code() {
            Some(code) if *code == tokio_postgres::error::SqlState::UNIQUE_VIOLATION => {
                Tx::Fail(audit_to_store(plan.taken()))
            }
            _ => Tx::Pg(e),
        })?;
        if !plan.index.0.is_empty() {
            c.execute(&st.index, &[&plan.index.0, &plan.index.1])
                .await?;
        }
        if !plan.learned.0.is_empty() {
            c.execute(&st.learned, &[&plan.learned.0, &plan.learned.1])
                .await?;
        }
        seal_due(c, plan).await.map_err(Tx::map_audit)?;
    } else {
        insert_at = Some(b.execute(
            &st.insert,
            vec![
                p(&plan.seqs),
                p(&plan.prevs),
                p(&plan.hashes),
                p(&plan.bodies),
            ],
        ));
        if !plan.index.0.is_empty() {
            b.execute(&st.index, vec![p(&plan.index.0), p(&plan.index.1)]);
        }
        if !plan.learned.0.is_empty() {
            b.execute(&st.learned, vec![p(&plan.learned.0), p(&plan.learned.1)]);
        }
    }
    let update_at = b.query(
        &st.update,
        vec![p(head.0), p(&head.1), p(head.2), p(&head.3)],
    );
    Ok((insert_at, update_at))
}

impl Tx<AuditError> {
    fn map_audit(self) -> Tx<StoreError> {
        match self {
            Tx::Pg(e) => Tx::Pg(e),
            Tx::CommitUnknown(e) => Tx::CommitUnknown(e),
            Tx::Fail(e) => Tx::Fail(audit_to_store(e)),
        }
    }
}

/// Stages `bodies` in the outbox in `b` (its table lock first, see [`super::outbox`]).
fn stage<'a>(b: &mut Batch<'a>, st: &'a Statement, bodies: &'a [String]) {
    if bodies.is_empty() {
        return;
    }
    b.simple(OUTBOX_LOCK);
    for body in bodies {
        b.execute(st, vec![p(body)]);
    }
}

/// A change's completion: the record, the encoded result, the retention, the token.
type Finish<'c> = (&'c crate::ports::Completion, String, Decimal, i64);

/// What an open computes once, whatever the tries.
struct OpenPlan<'o> {
    snapshot_id: String,
    snapshot_body: String,
    attempt_body: String,
    created: Decimal,
    at: Decimal,
    lease: Decimal,
    fingerprint: String,
    mandate_ids: String,
    ids: Vec<&'o str>,
    sorted: Vec<&'o str>,
    fallback: Vec<&'o str>,
    /// Window queries: the mandate, the start, and which level and length each is for.
    windows: (Vec<String>, Vec<Option<Decimal>>),
    seconds: Vec<Vec<u64>>,
    events: Vec<AuditEvent>,
}

impl PostgresStore {
    /// [`crate::ports::Store::open_payment`] in three round trips (see the module docs).
    pub(super) async fn open_payment_piped(
        &self,
        open: &OpenPayment<'_>,
    ) -> Result<Opened, HoldError> {
        let ids: Vec<&str> = open
            .hold
            .levels
            .iter()
            .map(|l| l.mandate_id.as_str())
            .collect();
        let mut sorted = ids.clone();
        sorted.sort_unstable();
        let twice = sorted.windows(2).any(|w| w[0] == w[1]);
        if open.hold.fence.is_some() || ids.len() > MAX_LEVELS || twice {
            return self.open_payment_tx(open).await;
        }
        let lease_until = chrono::TimeDelta::from_std(open.lease)
            .ok()
            .and_then(|d| open.now.checked_add_signed(d))
            .unwrap_or(chrono::DateTime::<chrono::Utc>::MAX_UTC);
        let mut windows = (Vec::new(), Vec::new());
        let mut seconds = Vec::with_capacity(ids.len());
        for level in &open.hold.levels {
            let s = distinct_seconds(&level.limits.windows);
            for &len in &s {
                windows.0.push(level.mandate_id.to_string());
                windows.1.push(window_start(open.hold.at, len));
            }
            seconds.push(s);
        }
        let currency = open.hold.amount.currency();
        let plan = OpenPlan {
            snapshot_id: open.snapshot.id().to_string(),
            snapshot_body: encode("snapshot", open.snapshot)?,
            attempt_body: encode("attempt", open.submitted)?,
            created: time_param(open.submitted.created_at)?,
            at: time_param(open.hold.at)?,
            lease: time_param(lease_until)?,
            fingerprint: open.fingerprint.to_string(),
            mandate_ids: encode("mandate ids", &ids)?,
            fallback: open
                .hold
                .levels
                .iter()
                .map(|l| limits_currency(&l.limits).unwrap_or(currency).code())
                .collect(),
            ids,
            sorted,
            windows,
            seconds,
            events: open
                .created
                .iter()
                .chain(open.submitted_events)
                .cloned()
                .collect(),
        };
        let events = split_events(&plan.events, self.trail.is_some())?;
        let mut tries = 0u32;
        loop {
            let outcome = self.open_once(open, &plan, &events).await;
            let outcome = match outcome {
                Ok(None) => return self.open_payment_tx(open).await,
                Ok(Some(v)) => Ok(v),
                Err(e) => Err(e),
            };
            if let Some(done) = settle::<_, HoldError>(outcome, &mut tries, self.retries) {
                return done;
            }
        }
    }

    /// One try; `None` when the key is not new (the step-by-step transaction decides).
    async fn open_once(
        &self,
        open: &OpenPayment<'_>,
        plan: &OpenPlan<'_>,
        events: &Events<'_>,
    ) -> Result<Option<Opened>, Tx<HoldError>> {
        let hold_err = |e: StoreError| HoldError::Store(e);
        let c = client::<HoldError>(&self.pool).await.map_err(Tx::Fail)?;
        let (
            [attempt_st, key_st, hold_st, lock_st, sums_st, levels_st, insert_st, snap_st, blocks_st, outbox_st, create_st],
            trail_st,
        ) = prepare_with_trail(
            &c,
            [
                ATTEMPT,
                KEY_INSERT,
                HOLD_INSERT,
                LOCK_ACCOUNTS,
                SUMS_LOCKED,
                LEVELS_INSERT,
                ATTEMPT_INSERT,
                SNAPSHOT_INSERT,
                BLOCKS_RESET,
                OUTBOX_INSERT,
                CREATE_ACCOUNTS,
            ],
        )
        .await?;
        let scope = open.scope;
        let minor = open.hold.amount.minor_units();
        let currency = open.hold.amount.currency();

        // 1. BEGIN, the attempt, the key, the hold's row, the accounts locked and summed.
        let mut tx = Open {
            client: &c,
            open: true,
        };
        let mut b = Batch::new(&c);
        let begin = b.simple(BEGIN);
        let exists = b.query(&attempt_st, vec![p(open.submitted.id.as_str())]);
        let key = b.query(
            &key_st,
            vec![
                p(scope.actor_id.as_str()),
                p(scope.operation.as_str()),
                p(scope.key.as_str()),
                p(&plan.fingerprint),
                p(plan.lease),
            ],
        );
        let held = b.execute(
            &hold_st,
            vec![
                p(open.hold.attempt_id.as_str()),
                p(currency.code()),
                p(minor),
                p(plan.at),
                p(&plan.mandate_ids),
            ],
        );
        let locked_at = b.query(&lock_st, vec![p(&plan.sorted)]);
        let sums_at = (!plan.windows.0.is_empty())
            .then(|| b.query(&sums_st, vec![p(&plan.windows.0), p(&plan.windows.1)]));
        let mut a = b.run().await?;
        a.take(begin)?;
        if !a.rows(exists)?.is_empty() {
            return Ok(Some(Opened::AttemptExists));
        }
        let Some(token) = a
            .rows(key)?
            .first()
            .map(|r| r.try_get::<_, i64>(0))
            .transpose()?
        else {
            return Ok(None);
        };
        let fence = Fence {
            scope: scope.clone(),
            token: token_of(&scope_key(scope), token).map_err(|e| Tx::Fail(hold_err(e)))?,
        };
        if a.count(held)? == 0 {
            return Err(Tx::Fail(HoldError::Duplicate {
                attempt_id: open.hold.attempt_id.clone(),
            }));
        }
        let mut locked = accounts_of(&a.rows(locked_at)?).map_err(|e| Tx::Fail(hold_err(e)))?;
        let mut sums = match sums_at {
            Some(i) => a.rows(i)?,
            None => Vec::new(),
        };
        if locked.len() < plan.sorted.len() {
            // The chain's first hold: create the missing accounts (in mandate id order), lock
            // them all, sum again.
            c.execute(&create_st, &[&plan.ids, &plan.fallback]).await?;
            locked = accounts_of(&c.query(&lock_st, &[&plan.sorted]).await?)
                .map_err(|e| Tx::Fail(hold_err(e)))?;
            if !plan.windows.0.is_empty() {
                sums = c
                    .query(&sums_st, &[&plan.windows.0, &plan.windows.1])
                    .await?;
            }
        }
        if sums.len() != plan.windows.0.len() {
            return Err(Tx::Fail(hold_err(StoreError::Other(
                "postgres: the window sums came back incomplete".into(),
            ))));
        }
        let mut rows = sums.iter().zip(&plan.windows.0);
        let mut levels: Vec<(Account, Vec<(u64, Sums)>)> = Vec::with_capacity(plan.ids.len());
        for (id, seconds) in plan.ids.iter().zip(&plan.seconds) {
            let account = *locked
                .iter()
                .find(|(m, _)| m == id)
                .map(|(_, a)| a)
                .ok_or_else(|| Tx::Fail(hold_err(missing_account(id))))?;
            let mut w = Vec::with_capacity(seconds.len());
            for &s in seconds {
                let sums = match rows.next() {
                    Some((row, m)) => window_checked(row, m).map_err(|e| Tx::Fail(hold_err(e)))?,
                    None => (0, 0),
                };
                w.push((s, sums));
            }
            levels.push((account, w));
        }
        for (level, (account, windows)) in open.hold.levels.iter().zip(&levels) {
            check_level(
                &level.mandate_id,
                &level.limits,
                account,
                windows,
                open.hold.amount,
            )
            .map_err(Tx::Fail)?;
        }

        // 2. The hold's levels and counters, the attempt, the snapshot, the block count, the
        // trail's head locked and read.
        let delta = Decimal::from(minor);
        let named = super::audit::named_subjects(&events.trail);
        let mut b = Batch::new(&c);
        if !plan.ids.is_empty() {
            b.execute(
                &levels_st,
                vec![
                    p(&plan.ids),
                    p(delta),
                    p(plan.at),
                    p(open.hold.attempt_id.as_str()),
                ],
            );
        }
        let inserted = b.execute(
            &insert_st,
            vec![
                p(open.submitted.id.as_str()),
                p(open.submitted.status.as_str()),
                p(plan.created),
                p(&plan.attempt_body),
            ],
        );
        b.execute(&snap_st, vec![p(&plan.snapshot_id), p(&plan.snapshot_body)]);
        if let Some(actor) = open.reset_blocks {
            b.execute(&blocks_st, vec![p(actor.as_str())]);
        }
        let reads = (!events.trail.is_empty()).then(|| read_trail(&mut b, &trail_st, &named));
        let mut a = b.run().await?;
        for i in 0..a.0.len() {
            if i == inserted {
                if a.count(i)? == 0 {
                    return Err(Tx::Fail(hold_err(StoreError::Conflict {
                        entity: "attempt",
                        id: open.submitted.id.to_string(),
                        message: "the id is taken".into(),
                    })));
                }
            } else if reads
                .as_ref()
                .is_none_or(|r| i != r.head && i != r.owners && i != r.last)
            {
                a.take(i)?;
            }
        }
        let trail = match &reads {
            Some(r) => {
                Some(plan_trail(&mut a, r, &events.trail).map_err(|e| store_tx(e, hold_err))?)
            }
            None => None,
        };

        // 3. The events, the head, the outbox, COMMIT.
        let head = trail.as_ref().map(TrailPlan::head_params);
        let mut b = Batch::new(&c);
        let (insert_at, update_at) = match (&trail, &head) {
            (Some(t), Some(h)) => {
                let (insert, update) = write_trail(&c, &mut b, &trail_st, t, h)
                    .await
                    .map_err(|e| store_tx(e, hold_err))?;
                (insert, Some(update))
            }
            _ => (None, None),
        };
        stage(&mut b, &outbox_st, &events.staged);
        let commit = b.simple("COMMIT");
        // Refused before `COMMIT` went out: not committed, the guard rolls back.
        let a = b.run().await?;
        tx.ended();
        a.committed(commit, |i, e| {
            let code = e.code();
            let taken = Some(i) == insert_at
                && code == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION);
            let moved = Some(i) == update_at
                && code == Some(&tokio_postgres::error::SqlState::DIVISION_BY_ZERO);
            match (&trail, taken, moved) {
                (Some(t), true, _) => Some(hold_err(audit_to_store(t.taken()))),
                (Some(t), _, true) => Some(hold_err(audit_to_store(t.moved()))),
                _ => None,
            }
        })?;
        let usage = placed_usage(open.hold, levels);
        Ok(Some(Opened::Started { fence, usage }))
    }

    /// [`crate::ports::Store::change_attempt`] in two round trips (see the module docs).
    pub(super) async fn change_attempt_piped(
        &self,
        change: &AttemptChange<'_>,
    ) -> Result<(), StoreError> {
        let completion = match change.completion {
            Some(c) => Some((
                c,
                encode("result", &c.result)?,
                time_param(c.retain_until)?,
                token_param(&c.fence)?,
            )),
            None => None,
        };
        let body = encode("attempt", change.next)?;
        let events = split_events(change.events, self.trail.is_some())?;
        let fences = super::change::fences_of(change);
        let mut tokens = Vec::with_capacity(fences.len());
        for (f, _) in &fences {
            tokens.push(token_param(f)?);
        }
        let mut tries = 0u32;
        loop {
            let outcome = self
                .change_once(change, &completion, &body, &events, &fences, &tokens)
                .await;
            if let Some(done) = settle::<_, StoreError>(outcome, &mut tries, self.retries) {
                return done;
            }
        }
    }

    async fn change_once(
        &self,
        change: &AttemptChange<'_>,
        completion: &Option<Finish<'_>>,
        body: &str,
        events: &Events<'_>,
        fences: &[(&Fence, bool)],
        tokens: &[i64],
    ) -> Result<(), Tx<StoreError>> {
        let c = client::<StoreError>(&self.pool).await.map_err(Tx::Fail)?;
        let hold_sql = format!("SELECT {HOLD_COLUMNS} FROM holds WHERE attempt_id = $1 FOR UPDATE");
        let (
            [share_st, update_st, cas_st, ids_st, lock_st, hold_st, hold_up_st, move_st, complete_st, outbox_st],
            trail_st,
        ) = prepare_with_trail(
            &c,
            [
                FENCE_SHARE,
                FENCE_UPDATE,
                ATTEMPT_CAS,
                HOLD_IDS,
                LOCK_HOLD_ACCOUNTS,
                &hold_sql,
                HOLD_UPDATE,
                ACCOUNTS_MOVE,
                COMPLETE_OR_FAIL,
                OUTBOX_INSERT,
            ],
        )
        .await?;
        let attempt = change.next.id.as_str();
        let hold_id = change.hold_id.as_str();

        // 1. BEGIN, the fences, the attempt's compare-and-set, the hold's accounts and row,
        // the trail's head.
        let mut tx = Open {
            client: &c,
            open: true,
        };
        let named = super::audit::named_subjects(&events.trail);
        let mut b = Batch::new(&c);
        let begin = b.simple(BEGIN);
        let mut fence_at = Vec::with_capacity(fences.len());
        for ((fence, exclusive), token) in fences.iter().zip(tokens) {
            let st = if *exclusive { &update_st } else { &share_st };
            let s = &fence.scope;
            fence_at.push(b.query(
                st,
                vec![
                    p(s.actor_id.as_str()),
                    p(s.operation.as_str()),
                    p(s.key.as_str()),
                    p(*token),
                ],
            ));
        }
        let cas = b.query(
            &cas_st,
            vec![
                p(attempt),
                p(change.expected.as_str()),
                p(change.next.status.as_str()),
                p(body),
            ],
        );
        let hold_reads = (!change.holds.is_empty()).then(|| {
            (
                b.query(&ids_st, vec![p(hold_id)]),
                b.query(&lock_st, vec![p(hold_id)]),
                b.query(&hold_st, vec![p(hold_id)]),
            )
        });
        let reads = (!events.trail.is_empty()).then(|| read_trail(&mut b, &trail_st, &named));
        let mut a = b.run().await?;
        a.take(begin)?;
        for ((fence, _), i) in fences.iter().zip(fence_at) {
            if a.rows(i)?.is_empty() {
                return Err(Tx::Fail(fenced(fence)));
            }
        }
        let cas_row = a.rows(cas)?;
        let at = At {
            table: "attempts",
            key: attempt,
        };
        let n: i64 = match cas_row.first() {
            Some(r) => at.get(r, "n").map_err(Tx::Fail)?,
            None => 0,
        };
        if n != 1 {
            // The status that won, read by a statement of its own: the compare-and-set's
            // sibling read saw the snapshot taken before it waited for the row (a change that
            // committed meanwhile is not in it).
            let status_st = c.prepare_cached(ATTEMPT_STATUS).await?;
            let status: Option<String> = match c.query_opt(&status_st, &[&attempt]).await? {
                Some(r) => at.get(&r, "status").map_err(Tx::Fail)?,
                None => None,
            };
            return Err(Tx::Fail(match status {
                None => StoreError::NotFound {
                    entity: "attempt",
                    id: attempt.to_string(),
                },
                Some(text) => {
                    let status = attempt_status(&at, &text).map_err(Tx::Fail)?;
                    StoreError::Conflict {
                        entity: "attempt",
                        id: attempt.to_string(),
                        message: format!("the status is {status}, not {}", change.expected),
                    }
                }
            }));
        }
        let moved = match hold_reads {
            Some((ids_at, lock_at, hold_at)) => {
                let ids_rows = a.rows(ids_at)?;
                let locked = a.rows(lock_at);
                let hold_rows = a.rows(hold_at);
                Some(resolve_all(change, &ids_rows, locked, hold_rows)?)
            }
            None => None,
        };
        let trail = match &reads {
            Some(r) => Some(plan_trail(&mut a, r, &events.trail)?),
            None => None,
        };

        // 2. The hold and its counters, the completion, the events, the head, the outbox,
        // COMMIT.
        let head = trail.as_ref().map(TrailPlan::head_params);
        let mut b = Batch::new(&c);
        if let Some(m) = &moved {
            b.execute(
                &hold_up_st,
                vec![
                    p(hold_id),
                    p(m.state),
                    p(m.figures.committed),
                    p(m.figures.refunded),
                    p(m.figures.lifetime_back),
                    p(m.figures.window_back),
                ],
            );
            if !m.sorted.is_empty() && (m.held != 0 || m.spent != 0 || m.uses != 0) {
                b.execute(
                    &move_st,
                    vec![
                        p(&m.sorted),
                        p(Decimal::from(m.held)),
                        p(Decimal::from(m.spent)),
                        p(m.uses),
                    ],
                );
            }
        }
        let complete_at = completion.as_ref().map(|(done, result, retain, token)| {
            let s = &done.fence.scope;
            b.query(
                &complete_st,
                vec![
                    p(s.actor_id.as_str()),
                    p(s.operation.as_str()),
                    p(s.key.as_str()),
                    p(result.as_str()),
                    p(retain),
                    p(*token),
                ],
            )
        });
        let (insert_at, update_at) = match (&trail, &head) {
            (Some(t), Some(h)) => {
                let (insert, update) = write_trail(&c, &mut b, &trail_st, t, h).await?;
                (insert, Some(update))
            }
            _ => (None, None),
        };
        stage(&mut b, &outbox_st, &events.staged);
        let commit = b.simple("COMMIT");
        // Refused before `COMMIT` went out: not committed, the guard rolls back.
        let a = b.run().await?;
        tx.ended();
        a.committed(commit, |i, e| {
            let code = e.code();
            if Some(i) == complete_at
                && code == Some(&tokio_postgres::error::SqlState::DIVISION_BY_ZERO)
            {
                completion.as_ref().map(|(done, ..)| fenced(&done.fence))
            } else if Some(i) == insert_at
                && code == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION)
            {
                trail.as_ref().map(|t| audit_to_store(t.taken()))
            } else if Some(i) == update_at
                && code == Some(&tokio_postgres::error::SqlState::DIVISION_BY_ZERO)
            {
                trail.as_ref().map(|t| audit_to_store(t.moved()))
            } else {
                None
            }
        })
    }
}

/// The locked accounts, by mandate id.
fn accounts_of(rows: &[Row]) -> Result<Vec<(String, Account)>, StoreError> {
    rows.iter().map(account_of).collect()
}

/// What the hold operations of a change do, all of them applied in order.
struct Moved {
    state: &'static str,
    figures: Figures,
    sorted: Vec<String>,
    held: i64,
    spent: i64,
    uses: i64,
}

/// Applies `change.holds` in order to the hold read under its accounts' locks (the checks of
/// [`super::holds::resolve_in`], each operation on the figures the one before left). The
/// hold's mandates are decoded first: a corrupt list is reported as such, before the failure
/// it causes in the statement that locks their accounts.
fn resolve_all(
    change: &AttemptChange<'_>,
    ids_rows: &[Row],
    locked: Result<Vec<Row>, Unanswered>,
    hold_rows: Result<Vec<Row>, Unanswered>,
) -> Result<Moved, Tx<StoreError>> {
    let attempt = change.hold_id.as_str();
    let Some(ids_row) = ids_rows.first() else {
        return Err(Tx::Fail(StoreError::NotFound {
            entity: "hold",
            id: attempt.to_string(),
        }));
    };
    let at = At {
        table: "holds",
        key: attempt,
    };
    let ids: Vec<MandateId> = at
        .decode(&at.get::<String>(ids_row, "mandate_ids").map_err(Tx::Fail)?)
        .map_err(Tx::Fail)?;
    let mut sorted: Vec<String> = ids.iter().map(|m| m.to_string()).collect();
    sorted.sort_unstable();
    let locked = accounts_of(&locked?).map_err(Tx::Fail)?;
    let hold_rows = hold_rows?;
    let Some(hold_row) = hold_rows.first() else {
        return Err(Tx::Fail(StoreError::NotFound {
            entity: "hold",
            id: attempt.to_string(),
        }));
    };
    let stored = hold_of(hold_row).map_err(Tx::Fail)?;
    let h = &stored.record;
    if h.mandate_ids != ids {
        return Err(Tx::Fail(at.corrupt("the hold's mandates changed")));
    }
    let mut figures = Figures {
        state: h.state,
        currency: h.amount.currency(),
        amount: h.amount.minor_units(),
        committed: h.committed.minor_units(),
        refunded: h.refunded.minor_units(),
        lifetime_back: stored.lifetime_back,
        window_back: stored.window_back,
    };
    // The accounts as each operation finds them.
    let mut accounts: Vec<(String, i128, i128, i64)> = Vec::with_capacity(sorted.len());
    for id in &sorted {
        let a = locked
            .iter()
            .find(|(m, _)| m == id)
            .map(|(_, a)| a)
            .ok_or_else(|| Tx::Fail(missing_account(id)))?;
        accounts.push((id.clone(), a.held, a.spent, a.uses));
    }
    let (mut held, mut spent, mut uses) = (0i64, 0i64, 0i64);
    for op in change.holds {
        let r = hold_rules::resolve(change.hold_id, &figures, *op).map_err(Tx::Fail)?;
        for (id, a_held, a_spent, a_uses) in &mut accounts {
            let ok = *a_held + i128::from(r.held) >= 0
                && *a_spent + i128::from(r.spent) >= 0
                && *a_uses + r.uses >= 0;
            if !ok {
                return Err(Tx::Fail(super::codec::corrupt(
                    "accounts",
                    id,
                    format!("the counters do not cover hold {attempt}"),
                )));
            }
            *a_held += i128::from(r.held);
            *a_spent += i128::from(r.spent);
            *a_uses += r.uses;
        }
        held = held.saturating_add(r.held);
        spent = spent.saturating_add(r.spent);
        uses = uses.saturating_add(r.uses);
        figures = r.next;
    }
    Ok(Moved {
        state: hold_rules::state_name(figures.state),
        figures,
        sorted,
        held,
        spent,
        uses,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A statement the client refuses (a parameter of the wrong type, never sent) in a batch
    /// that carries `COMMIT`: nothing after it is sent, so nothing of the transaction commits.
    /// Before, the rest of the batch went out and `COMMIT` committed the statements around the
    /// refused one.
    #[tokio::test]
    async fn a_statement_refused_by_the_client_before_commit_commits_nothing() {
        let Ok(url) = std::env::var("DATABASE_URL") else {
            eprintln!("skipped: DATABASE_URL is not set");
            return;
        };
        let store = PostgresStore::connect(&url).await.expect("connect");
        let c = store.client().await.expect("client");
        c.batch_execute("CREATE TEMP TABLE piped_refused (v BIGINT)")
            .await
            .expect("table");
        let insert = c
            .prepare("INSERT INTO piped_refused (v) VALUES ($1)")
            .await
            .expect("prepare");
        let mut b = Batch::new(&c);
        b.simple(BEGIN);
        b.execute(&insert, vec![Box::new(1_i64)]);
        // `BIGINT` wants an i64: the client refuses to encode an i32.
        b.execute(&insert, vec![Box::new(2_i32)]);
        b.execute(&insert, vec![Box::new(3_i64)]);
        b.simple("COMMIT");
        let refused = b.run().await.err().expect("the batch is refused");
        assert!(refused.as_db_error().is_none(), "{refused}");
        // What the caller's guard does: the open transaction is rolled back.
        c.batch_execute("ROLLBACK").await.expect("rollback");
        let n: i64 = c
            .query_one("SELECT count(*) FROM piped_refused", &[])
            .await
            .expect("count")
            .get(0);
        assert_eq!(n, 0, "a statement next to the refused one committed");
    }

    /// An index that is not an answer of the batch, or an answer of another kind than asked
    /// for, is an internal error (a mix-up of the code), never "no rows" or "nothing changed".
    /// Before, a missing index read as `Done` and a wrong kind as an empty list or zero.
    #[test]
    fn an_answer_not_in_the_batch_is_an_internal_error() {
        let mut a = Answers(vec![Some(Ok(Answer::Count(1))), Some(Ok(Answer::Done))]);
        assert!(matches!(a.take(7), Err(Unanswered::Internal(_))));
        // A row count asked for as rows, a simple query's answer as a count.
        assert!(matches!(a.rows(0), Err(Unanswered::Internal(_))));
        assert!(matches!(a.count(1), Err(Unanswered::Internal(_))));
        // Taken already.
        assert!(matches!(a.take(0), Err(Unanswered::Internal(_))));
        let mut b = Answers(vec![Some(Ok(Answer::Rows(Vec::new())))]);
        assert!(matches!(b.count(0), Err(Unanswered::Internal(_))));
        // Reported through the port as an error of its own, not a database failure.
        let tx: Tx<StoreError> = Unanswered::Internal("mix-up".into()).into();
        assert!(matches!(tx, Tx::Fail(StoreError::Other(_))));
    }
}
