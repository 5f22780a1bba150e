//! Transactions: error classification and the bounded retry of transactions that lost a
//! deadlock or serialization race.

use deadpool_postgres::{Object, Pool, PoolError};
use tokio_postgres::error::SqlState;

use crate::ports::{AuditError, HoldError, StoreError};

/// The errors of one port: how a database failure is reported through it.
pub(crate) trait PortError: Sized {
    /// The backend cannot be reached or gave up (retryable).
    fn unavailable(message: String) -> Self;
    /// Anything else.
    fn other(error: Box<dyn std::error::Error + Send + Sync>) -> Self;
}

impl PortError for StoreError {
    fn unavailable(message: String) -> Self {
        StoreError::Unavailable { message }
    }
    fn other(error: Box<dyn std::error::Error + Send + Sync>) -> Self {
        StoreError::Other(error)
    }
}

impl PortError for HoldError {
    fn unavailable(message: String) -> Self {
        HoldError::Store(StoreError::unavailable(message))
    }
    fn other(error: Box<dyn std::error::Error + Send + Sync>) -> Self {
        HoldError::Store(StoreError::other(error))
    }
}

impl PortError for AuditError {
    fn unavailable(message: String) -> Self {
        AuditError::Unavailable { message }
    }
    fn other(error: Box<dyn std::error::Error + Send + Sync>) -> Self {
        AuditError::Other(error)
    }
}

/// How a transaction body failed.
#[derive(Debug)]
pub(crate) enum Tx<E> {
    /// The database reported an error (classified by [`settle`]).
    Pg(tokio_postgres::Error),
    /// The connection failed while committing: the transaction may or may not have committed.
    CommitUnknown(tokio_postgres::Error),
    /// The port's own answer (refused, not found, corrupt...): nothing was written.
    Fail(E),
}

impl<E> From<tokio_postgres::Error> for Tx<E> {
    fn from(e: tokio_postgres::Error) -> Self {
        Tx::Pg(e)
    }
}

impl<E> Tx<E> {
    /// Classifies an error of `COMMIT`: an error the server reported means it rolled back;
    /// a lost connection leaves the outcome unknown.
    pub(crate) fn commit(e: tokio_postgres::Error) -> Self {
        if e.as_db_error().is_some() {
            Tx::Pg(e)
        } else {
            Tx::CommitUnknown(e)
        }
    }
}

/// Whether `e` is a lost race that a new run of the transaction may win.
fn is_race(e: &tokio_postgres::Error) -> bool {
    matches!(
        e.code(),
        Some(c) if *c == SqlState::T_R_SERIALIZATION_FAILURE || *c == SqlState::T_R_DEADLOCK_DETECTED
    )
}

/// Whether `e` says the server cannot be reached or cannot serve now.
fn is_unavailable(e: &tokio_postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    match e.code() {
        Some(c) => {
            let code = c.code();
            // 08: connection exception; 53: insufficient resources; 57P0x: shutting down,
            // cannot connect now; 55P03: lock not available (lock_timeout).
            code.starts_with("08")
                || code.starts_with("53")
                || code.starts_with("57P0")
                || code == "55P03"
                || code == "57014"
        }
        None => {
            let mut source = std::error::Error::source(e);
            while let Some(s) = source {
                if s.is::<std::io::Error>() {
                    return true;
                }
                source = s.source();
            }
            false
        }
    }
}

/// A database error as the port reports it.
pub(crate) fn classify<E: PortError>(e: tokio_postgres::Error) -> E {
    if is_unavailable(&e) || is_race(&e) {
        E::unavailable(format!("postgres: {e}"))
    } else {
        E::other(Box::new(e))
    }
}

/// A connection from `pool`.
pub(crate) async fn client<E: PortError>(pool: &Pool) -> Result<Object, E> {
    pool.get().await.map_err(|e| match e {
        PoolError::Backend(e) => classify(e),
        PoolError::Timeout(kind) => {
            E::unavailable(format!("postgres: no connection in time ({kind:?})"))
        }
        PoolError::Closed => E::unavailable("postgres: the pool is closed".into()),
        other => E::other(format!("postgres pool: {other}").into()),
    })
}

/// The outcome of one run of a transaction: `Some` to return, `None` to run it again (a
/// lost deadlock or serialization race, fewer than `max` times so far).
pub(crate) fn settle<T, E: PortError>(
    outcome: Result<T, Tx<E>>,
    tries: &mut u32,
    max: u32,
) -> Option<Result<T, E>> {
    match outcome {
        Ok(v) => Some(Ok(v)),
        Err(Tx::Fail(e)) => Some(Err(e)),
        Err(Tx::Pg(e)) if is_race(&e) => {
            if *tries < max {
                *tries += 1;
                None
            } else {
                Some(Err(E::unavailable(format!(
                    "postgres: still losing races after {} tries: {e}",
                    *tries + 1
                ))))
            }
        }
        Err(Tx::Pg(e)) => Some(Err(classify(e))),
        Err(Tx::CommitUnknown(e)) => Some(Err(E::other(
            format!(
                "postgres: the connection failed while committing, the write may or may not \
                 have been applied (read the record again before retrying): {e}"
            )
            .into(),
        ))),
    }
}

/// The outcome of statements run on a connection outside an explicit transaction (each
/// statement commits on its own): nothing to retry, a database error is classified as a
/// single statement's is.
pub(crate) fn once<T, E: PortError>(outcome: Result<T, Tx<E>>) -> Result<T, E> {
    match outcome {
        Ok(v) => Ok(v),
        Err(Tx::Fail(e)) => Err(e),
        Err(Tx::Pg(e)) | Err(Tx::CommitUnknown(e)) => Err(classify(e)),
    }
}

/// Runs `$body` (a block that uses the transaction `$tx` and `?`) in a transaction of
/// `$isolation` on a connection of `$pool`; commits when the block returns a value, rolls
/// back on `Err`. A run that lost a deadlock or serialization race is repeated, at most
/// `$retries` times. Evaluates to `Result<T, $err>`.
macro_rules! in_transaction {
    ($pool:expr, $retries:expr, $isolation:expr, $err:ty, |$tx:ident| $body:block) => {{
        let mut tries: u32 = 0;
        loop {
            let outcome: Result<_, $crate::adapters::postgres::tx::Tx<$err>> = async {
                let mut client = $crate::adapters::postgres::tx::client::<$err>($pool)
                    .await
                    .map_err($crate::adapters::postgres::tx::Tx::Fail)?;
                let $tx = client
                    .build_transaction()
                    .isolation_level($isolation)
                    .start()
                    .await?;
                let value = $body;
                $tx.commit()
                    .await
                    .map_err($crate::adapters::postgres::tx::Tx::commit)?;
                Ok(value)
            }
            .await;
            if let Some(done) =
                $crate::adapters::postgres::tx::settle::<_, $err>(outcome, &mut tries, $retries)
            {
                break done;
            }
        }
    }};
}

pub(crate) use in_transaction;

/// Runs two futures concurrently on this task. Two queries of one connection polled
/// together are pipelined by `tokio_postgres`: both are sent before either answer is
/// awaited, one network round trip for both.
pub(crate) async fn join2<A, B>(a: A, b: B) -> (A::Output, B::Output)
where
    A: std::future::Future,
    B: std::future::Future,
{
    use std::task::Poll;
    let mut a = std::pin::pin!(a);
    let mut b = std::pin::pin!(b);
    let mut ra = None;
    let mut rb = None;
    std::future::poll_fn(move |cx| {
        if ra.is_none()
            && let Poll::Ready(v) = a.as_mut().poll(cx)
        {
            ra = Some(v);
        }
        if rb.is_none()
            && let Poll::Ready(v) = b.as_mut().poll(cx)
        {
            rb = Some(v);
        }
        match (ra.take(), rb.take()) {
            (Some(x), Some(y)) => Poll::Ready((x, y)),
            (x, y) => {
                ra = x;
                rb = y;
                Poll::Pending
            }
        }
    })
    .await
}
