//! The connection's thread: jobs in through a channel, answers out through one-shot channels.
//!
//! # Group commit
//!
//! Writes are *batched jobs*: a closure that runs inside a write transaction it does not
//! own. The thread takes the first queued job, drains every batched job queued behind it (at
//! most [`MAX_BATCH`]), opens one `BEGIN IMMEDIATE` transaction and runs each job in a
//! savepoint of its own: a job that fails is rolled back to its savepoint alone and keeps its
//! own error; the others go on. One `COMMIT` (one fsync with `synchronous=FULL`) ends the
//! batch, and only then is any job answered: no caller hears `Ok` before its write is
//! durable, and a commit that fails answers every job of the batch with
//! [`StoreError::Unavailable`] (nothing of the batch was written).
//!
//! Jobs that manage their own transaction (the vault, the webhook outbox) run *alone*,
//! between batches, in queue order.
//!
//! # Reads off the writer
//!
//! A file database also opens a few read connections ([`SqliteConfig::readers`]), each on
//! its own thread, taking read jobs from one shared queue. In WAL mode a reader sees every
//! transaction committed before its read transaction began, and a write is answered only
//! after its commit, so a read that follows a write sees it, and reads never queue behind
//! writes (or their fsync).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;

use rusqlite::{Connection, OpenFlags};

use super::codec::sql_error;
use super::{schema, SqliteConfig};
use crate::ports::StoreError;

/// Most jobs in one group commit.
pub(super) const MAX_BATCH: usize = 128;

/// Upper bounds of the batch-size buckets of [`GroupCommitStats::sizes`]: 1, 2, 3-4, 5-8,
/// 9-16, 17-32, 33-64, 65-128.
pub const BATCH_BUCKETS: [usize; 8] = [1, 2, 4, 8, 16, 32, 64, 128];

/// What the connection's thread has committed so far: how many batches, how many jobs, and
/// how the batch sizes were spread. Read it with
/// [`SqliteDatabase::group_commit_stats`](super::SqliteDatabase::group_commit_stats).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GroupCommitStats {
    /// Write transactions committed (or attempted) by the connection's thread.
    pub batches: u64,
    /// Batched jobs run in them.
    pub jobs: u64,
    /// The largest batch.
    pub largest: u64,
    /// Batches per size bucket: `sizes[i]` counts the batches of at most
    /// `BATCH_BUCKETS[i]` jobs and more than `BATCH_BUCKETS[i - 1]`.
    pub sizes: [u64; 8],
}

impl GroupCommitStats {
    /// Jobs per batch on average, in hundredths (no floating point): 250 means 2.5.
    pub fn mean_hundredths(&self) -> u64 {
        self.jobs
            .saturating_mul(100)
            .checked_div(self.batches)
            .unwrap_or(0)
    }
}

#[derive(Debug, Default)]
struct Counters {
    /// Checkpoints run by the checkpointer thread.
    checkpoints: AtomicU64,
    batches: AtomicU64,
    jobs: AtomicU64,
    largest: AtomicU64,
    sizes: [AtomicU64; 8],
}

impl Counters {
    fn record(&self, n: usize) {
        let n64 = n as u64;
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.jobs.fetch_add(n64, Ordering::Relaxed);
        self.largest.fetch_max(n64, Ordering::Relaxed);
        let bucket = BATCH_BUCKETS
            .iter()
            .position(|&b| n <= b)
            .unwrap_or(BATCH_BUCKETS.len() - 1);
        self.sizes[bucket].fetch_add(1, Ordering::Relaxed);
    }

    fn snapshot(&self) -> GroupCommitStats {
        let mut sizes = [0u64; 8];
        for (out, c) in sizes.iter_mut().zip(&self.sizes) {
            *out = c.load(Ordering::Relaxed);
        }
        GroupCommitStats {
            batches: self.batches.load(Ordering::Relaxed),
            jobs: self.jobs.load(Ordering::Relaxed),
            largest: self.largest.load(Ordering::Relaxed),
            sizes,
        }
    }
}

/// A job that runs alone on the connection.
type Alone = Box<dyn FnOnce(&mut Connection) + Send>;

/// A job that runs inside the batch's transaction.
trait Batched: Send {
    /// Runs the job; the answer waits for the commit.
    fn run(self: Box<Self>, conn: &Connection) -> Box<dyn Answer>;
    /// Answers without running (the batch failed before the job's turn).
    fn abort(self: Box<Self>, error: StoreError);
}

/// A batched job's result, waiting for the commit.
trait Answer: Send {
    /// Whether the job failed (its savepoint is rolled back).
    fn failed(&self) -> bool;
    /// Sends the result, or `error` when the batch did not commit.
    fn send(self: Box<Self>, error: Option<StoreError>);
}

struct Pending<F, R, E> {
    f: F,
    tx: tokio::sync::oneshot::Sender<Result<R, E>>,
}

struct Ready<R, E> {
    out: Result<R, E>,
    tx: tokio::sync::oneshot::Sender<Result<R, E>>,
}

impl<F, R, E> Batched for Pending<F, R, E>
where
    F: FnOnce(&Connection) -> Result<R, E> + Send,
    R: Send + 'static,
    E: From<StoreError> + Send + 'static,
{
    fn run(self: Box<Self>, conn: &Connection) -> Box<dyn Answer> {
        let out = (self.f)(conn);
        Box::new(Ready { out, tx: self.tx })
    }

    fn abort(self: Box<Self>, error: StoreError) {
        // The caller may have stopped waiting (its future was dropped): nothing to do.
        let _ = self.tx.send(Err(E::from(error)));
    }
}

impl<R: Send, E: From<StoreError> + Send> Answer for Ready<R, E> {
    fn failed(&self) -> bool {
        self.out.is_err()
    }

    fn send(self: Box<Self>, error: Option<StoreError>) {
        let out = match error {
            Some(e) => Err(E::from(e)),
            None => self.out,
        };
        let _ = self.tx.send(out);
    }
}

enum Job {
    Alone(Alone),
    Batched(Box<dyn Batched>),
}

/// Owns the connection on a dedicated thread (and the read connections on theirs); the
/// threads end when the last handle is dropped.
pub(super) struct Worker {
    jobs: Mutex<mpsc::Sender<Job>>,
    reads: Option<Mutex<mpsc::Sender<Alone>>>,
    counters: Arc<Counters>,
}

impl Worker {
    /// Opens the connection, sets it up and migrates the schema (on the caller's thread), then
    /// moves it to its own thread; then opens the read connections.
    pub(super) fn start(config: SqliteConfig) -> Result<Worker, StoreError> {
        let mut conn = match &config.path {
            Some(path) => Connection::open(path),
            None => Connection::open_in_memory(),
        }
        .map_err(|e| unavailable(format!("cannot open the database: {e}")))?;
        schema::prepare(&mut conn, &config)?;
        let counters = Arc::new(Counters::default());
        if let Some(path) = &config.path {
            start_checkpointer(&mut conn, path, &config, Arc::clone(&counters))?;
        }
        let (jobs, inbox) = mpsc::channel::<Job>();
        let seen = Arc::clone(&counters);
        thread::Builder::new()
            .name("agent-mandate-sqlite".into())
            .spawn(move || serve(conn, &inbox, &seen))
            .map_err(|e| unavailable(format!("cannot start the database thread: {e}")))?;
        let reads = match (&config.path, config.readers) {
            (Some(path), n) if n > 0 => {
                let (reads, queue) = mpsc::channel::<Alone>();
                let queue = Arc::new(Mutex::new(queue));
                for i in 0..n {
                    let mut reader = Connection::open_with_flags(
                        path,
                        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                    )
                    .map_err(|e| unavailable(format!("cannot open a read connection: {e}")))?;
                    reader.set_prepared_statement_cache_capacity(schema::STATEMENT_CACHE);
                    reader
                        .busy_timeout(config.busy_timeout)
                        .and_then(|()| {
                            reader.execute_batch(
                                "PRAGMA query_only = ON; PRAGMA temp_store = MEMORY;",
                            )
                        })
                        .map_err(|e| sql_error("schema", "read connection", e))?;
                    let queue = Arc::clone(&queue);
                    thread::Builder::new()
                        .name(format!("agent-mandate-sqlite-read-{i}"))
                        .spawn(move || loop {
                            let job = {
                                let inbox = queue.lock().unwrap_or_else(|e| e.into_inner());
                                inbox.recv()
                            };
                            match job {
                                Ok(job) => job(&mut reader),
                                Err(_) => break,
                            }
                        })
                        .map_err(|e| unavailable(format!("cannot start a read thread: {e}")))?;
                }
                Some(Mutex::new(reads))
            }
            _ => None,
        };
        Ok(Worker {
            jobs: Mutex::new(jobs),
            reads,
            counters,
        })
    }

    /// What the connection's thread has committed so far.
    pub(super) fn stats(&self) -> GroupCommitStats {
        self.counters.snapshot()
    }

    fn send(&self, job: Job) -> Result<(), StoreError> {
        self.jobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .send(job)
            .map_err(|_| unavailable("the database thread has stopped".into()))
    }

    /// Runs `f` alone on the connection's thread.
    pub(super) async fn call<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> R + Send + 'static,
    ) -> Result<R, StoreError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.send(Job::Alone(Box::new(move |conn| {
            // The caller may have stopped waiting (its future was dropped): nothing to do.
            let _ = tx.send(f(conn));
        })))?;
        rx.await
            .map_err(|_| unavailable("the database thread stopped during the call".into()))
    }

    /// Runs `f` on a read connection (the writer's when there is none). `f` opens its own
    /// read transaction if it needs one snapshot.
    pub(super) async fn read<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> R + Send + 'static,
    ) -> Result<R, StoreError> {
        let Some(reads) = &self.reads else {
            return self.call(f).await;
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Alone = Box::new(move |conn| {
            let _ = tx.send(f(conn));
        });
        reads
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .send(job)
            .map_err(|_| unavailable("the read threads have stopped".into()))?;
        rx.await
            .map_err(|_| unavailable("a read thread stopped during the call".into()))
    }

    /// Runs `f` in the next group commit (see the module docs); answers after the commit.
    pub(super) async fn write<R, E>(
        &self,
        f: impl FnOnce(&Connection) -> Result<R, E> + Send + 'static,
    ) -> Result<R, E>
    where
        R: Send + 'static,
        E: From<StoreError> + Send + 'static,
    {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.send(Job::Batched(Box::new(Pending { f, tx })))?;
        rx.await.map_err(|_| {
            E::from(unavailable(
                "the database thread stopped during the call".into(),
            ))
        })?
    }
}

/// WAL pages written between two requests of the writer to the checkpointer thread (SQLite's
/// own automatic checkpoint runs every 1,000 pages, on the committing connection).
const CHECKPOINT_PAGES: i32 = 1_000;

/// WAL pages at which the writer checkpoints itself (passive). The log restarts from its
/// beginning only when a write begins after a checkpoint that copied every frame, which a
/// checkpoint running beside a busy writer rarely does: this one, on the writer's thread,
/// copies what the checkpointer left (little) and lets the next write restart the log, so it
/// never grows past about this many pages.
const CHECKPOINT_INLINE_PAGES: i32 = 4_000;

/// Moves the WAL checkpoints of a file database off the writer's thread: SQLite's automatic
/// checkpoint copies the log into the database file (and syncs it) on the connection whose
/// commit crossed the threshold, so one write in a thousand pages paid for all of them (about
/// an eighth of the writer's time on the payment path). The writer's WAL hook (which replaces
/// the automatic checkpoint) wakes a thread with a connection of its own that runs a
/// `PASSIVE` checkpoint: it never blocks the writer or the readers, and copies what no reader
/// still needs. Durability does not change: a commit is durable in the log (as `synchronous`
/// says) whether or not it was checkpointed. The thread ends when the writer's connection
/// (which holds the only sender) is closed.
fn start_checkpointer(
    conn: &mut Connection,
    path: &std::path::Path,
    config: &SqliteConfig,
    counters: Arc<Counters>,
) -> Result<(), StoreError> {
    let checkpointer = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| unavailable(format!("cannot open the checkpoint connection: {e}")))?;
    checkpointer
        .busy_timeout(config.busy_timeout)
        .and_then(|()| {
            checkpointer.execute_batch(&format!(
                "PRAGMA synchronous = {}",
                config.synchronous.pragma()
            ))
        })
        .map_err(|e| sql_error("schema", "checkpoint connection", e))?;
    // One pending request is enough: a checkpoint copies every frame committed before it.
    let (wake, due) = mpsc::sync_channel::<()>(1);
    // The log's size when the checkpointer was last asked: asked again every
    // `CHECKPOINT_PAGES` pages, not after every commit past the threshold (each checkpoint
    // syncs the database file).
    let mut asked = 0;
    conn.wal_hook(Some(move |wal: &mut rusqlite::hooks::Wal, pages: i32| {
        if pages < asked {
            // The log restarted.
            asked = 0;
        }
        if pages >= asked.saturating_add(CHECKPOINT_PAGES) {
            asked = pages;
            let _ = wake.try_send(());
        }
        if pages >= CHECKPOINT_INLINE_PAGES {
            // Best effort, as the automatic checkpoint: a busy log is checkpointed later.
            let _ = wal.checkpoint_v2(rusqlite::wal::CheckpointMode::PASSIVE);
        }
        Ok(())
    }))
    .map_err(|e| sql_error("schema", "wal hook", e))?;
    thread::Builder::new()
        .name("agent-mandate-sqlite-checkpoint".into())
        .spawn(move || {
            while due.recv().is_ok() {
                // Best effort: a failed or partial checkpoint is retried at the next request.
                let _ = checkpointer.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
                counters.checkpoints.fetch_add(1, Ordering::Relaxed);
            }
        })
        .map_err(|e| unavailable(format!("cannot start the checkpoint thread: {e}")))?;
    Ok(())
}

/// The connection thread's loop.
fn serve(mut conn: Connection, inbox: &mpsc::Receiver<Job>, counters: &Counters) {
    let mut next = None;
    loop {
        let job = match next.take() {
            Some(job) => job,
            None => match inbox.recv() {
                Ok(job) => job,
                Err(_) => return,
            },
        };
        match job {
            Job::Alone(f) => f(&mut conn),
            Job::Batched(first) => {
                let mut batch = vec![first];
                while batch.len() < MAX_BATCH {
                    match inbox.try_recv() {
                        Ok(Job::Batched(job)) => batch.push(job),
                        Ok(alone @ Job::Alone(_)) => {
                            // Runs after this batch, in queue order.
                            next = Some(alone);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                counters.record(batch.len());
                run_batch(&conn, batch);
            }
        }
    }
}

/// A copy of `e` for each job of a failed batch.
fn replicate(e: &StoreError) -> StoreError {
    match e {
        StoreError::Corrupt {
            table,
            key,
            message,
        } => StoreError::Corrupt {
            table,
            key: key.clone(),
            message: message.clone(),
        },
        other => unavailable(format!("{other}; nothing of the batch was written")),
    }
}

/// One group commit: `BEGIN IMMEDIATE`, each job in its savepoint, `COMMIT`, then the
/// answers. A batch of one job needs no savepoint: the transaction is the job's alone.
fn run_batch(conn: &Connection, mut batch: Vec<Box<dyn Batched>>) {
    if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
        let e = sql_error("batch", "begin", e);
        for job in batch {
            job.abort(replicate(&e));
        }
        return;
    }
    if batch.len() == 1
        && let Some(job) = batch.pop()
    {
        run_alone_in_transaction(conn, job);
        return;
    }
    let mut answers: Vec<Box<dyn Answer>> = Vec::with_capacity(batch.len());
    let mut jobs = batch.into_iter();
    let mut broken = None;
    for job in jobs.by_ref() {
        if let Err(e) = conn.execute_batch("SAVEPOINT job") {
            broken = Some(sql_error("batch", "savepoint", e));
            job.abort(unavailable("the batch failed before this job ran".into()));
            break;
        }
        let answer = job.run(conn);
        if conn.is_autocommit() {
            // The job's failure ended the whole transaction (SQLite rolls back on some I/O
            // and resource errors): nothing of the batch stays.
            answers.push(answer);
            broken = Some(unavailable(
                "a job's error ended the batch's transaction".into(),
            ));
            break;
        }
        let end = if answer.failed() {
            "ROLLBACK TO job; RELEASE job"
        } else {
            "RELEASE job"
        };
        answers.push(answer);
        if let Err(e) = conn.execute_batch(end) {
            broken = Some(sql_error("batch", "savepoint", e));
            break;
        }
    }
    let failure = match broken {
        Some(e) => Some(e),
        None => conn
            .execute_batch("COMMIT")
            .err()
            .map(|e| sql_error("batch", "commit", e)),
    };
    match failure {
        None => {
            for answer in answers {
                answer.send(None);
            }
        }
        Some(e) => {
            // Nothing of the batch stays: roll back whatever is still open.
            if !conn.is_autocommit() {
                let _ = conn.execute_batch("ROLLBACK");
            }
            for answer in answers {
                answer.send(Some(replicate(&e)));
            }
            for job in jobs {
                job.abort(replicate(&e));
            }
        }
    }
}

/// The one job of a batch, in the transaction `run_batch` began: a job that fails rolls the
/// whole transaction back and keeps its own error (what its savepoint would have done, without
/// the savepoint's statement journal, which copied every page the job touched).
fn run_alone_in_transaction(conn: &Connection, job: Box<dyn Batched>) {
    let answer = job.run(conn);
    if conn.is_autocommit() {
        // The job's failure ended the transaction (SQLite rolls back on some I/O and resource
        // errors): answered as a batch whose transaction ended is.
        answer.send(Some(replicate(&unavailable(
            "a job's error ended the batch's transaction".into(),
        ))));
        return;
    }
    if answer.failed() {
        // Nothing of the job stays; its own error is its answer.
        let _ = conn.execute_batch("ROLLBACK");
        answer.send(None);
        return;
    }
    match conn.execute_batch("COMMIT") {
        Ok(()) => answer.send(None),
        Err(e) => {
            let e = sql_error("batch", "commit", e);
            if !conn.is_autocommit() {
                let _ = conn.execute_batch("ROLLBACK");
            }
            answer.send(Some(replicate(&e)));
        }
    }
}

pub(super) fn unavailable(message: String) -> StoreError {
    StoreError::Unavailable { message }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_file(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("am-worker-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir.join("w.db")
    }

    fn worker(path: &std::path::Path) -> Arc<Worker> {
        let w = Worker::start(SqliteConfig::file(path)).unwrap();
        Arc::new(w)
    }

    /// Holds the connection's thread until the returned sender is used, so the jobs queued
    /// meanwhile form one batch.
    fn park(w: &Worker) -> std::sync::mpsc::Sender<()> {
        let (go, wait) = std::sync::mpsc::channel::<()>();
        w.send(Job::Alone(Box::new(move |_| {
            let _ = wait.recv();
        })))
        .unwrap();
        go
    }

    fn insert(n: i64) -> impl FnOnce(&Connection) -> Result<i64, StoreError> + Send + 'static {
        move |conn| {
            conn.execute(
                "INSERT INTO blocks (actor_id, count) VALUES (?1, ?2)",
                rusqlite::params![format!("a{n}"), n],
            )
            .map_err(|e| sql_error("blocks", "insert", e))?;
            Ok(n)
        }
    }

    fn count(path: &std::path::Path) -> i64 {
        let c = Connection::open(path).unwrap();
        c.query_row("SELECT COUNT(*) FROM blocks", [], |r| r.get(0))
            .unwrap()
    }

    type Call =
        std::pin::Pin<Box<dyn std::future::Future<Output = Result<i64, StoreError>> + Send>>;

    /// Polls `call` once, so its job is queued now (calls queue in the order they are made),
    /// and hands it back to be awaited. The connection's thread is parked, so the call cannot
    /// have been answered yet.
    async fn queued(mut call: Call) -> Call {
        std::future::poll_fn(|cx| {
            assert!(call.as_mut().poll(cx).is_pending(), "answered while parked");
            std::task::Poll::Ready(())
        })
        .await;
        call
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn queued_writes_commit_as_one_batch_and_a_failing_job_rolls_back_alone() {
        let path = temp_file("batch");
        let w = worker(&path);
        let go = park(&w);
        let mut calls = Vec::new();
        for n in 0..10i64 {
            let w = Arc::clone(&w);
            calls.push(
                queued(Box::pin(async move {
                    if n == 4 {
                        // Writes, then fails: its savepoint is rolled back, the others stay.
                        w.write(move |conn| {
                            insert(100)(conn)?;
                            Err::<i64, StoreError>(StoreError::Conflict {
                                entity: "test",
                                id: "4".into(),
                                message: "refused".into(),
                            })
                        })
                        .await
                    } else if n == 7 {
                        // A constraint error (the same key as job 6) fails this job only.
                        w.write(insert(6)).await
                    } else {
                        w.write(insert(n)).await
                    }
                }))
                .await,
            );
        }
        // Every job is queued behind the parked one: let it go.
        go.send(()).unwrap();
        let mut ok = 0;
        for (n, call) in calls.into_iter().enumerate() {
            match (n, call.await) {
                (4, Err(StoreError::Conflict { id, .. })) => assert_eq!(id, "4"),
                (7, Err(e)) => assert!(e.to_string().contains("UNIQUE"), "job 7: {e}"),
                (4 | 7, answer) => panic!("job {n} should have failed: {answer:?}"),
                (_, Ok(v)) => {
                    assert_eq!(v, n as i64);
                    ok += 1;
                }
                (_, Err(e)) => panic!("job {n}: {e}"),
            }
        }
        assert_eq!(ok, 8);
        // Jobs 4 and 7 left nothing; the 8 others are committed (read by another connection).
        assert_eq!(count(&path), 8);
        let stats = w.stats();
        assert_eq!(stats.batches, 1, "{stats:?}");
        assert_eq!(stats.jobs, 10);
        assert_eq!(stats.largest, 10);
        assert_eq!(stats.sizes[4], 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_answer_comes_after_the_commit_and_a_reader_sees_it() {
        let path = temp_file("visible");
        let w = worker(&path);
        for n in 0..20i64 {
            w.write(insert(n)).await.unwrap();
            // Answered: committed, so a new connection and the read connections see it.
            assert_eq!(count(&path), n + 1);
            let seen: i64 = w
                .read(|conn| conn.query_row("SELECT COUNT(*) FROM blocks", [], |r| r.get(0)))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(seen, n + 1);
        }
        let stats = w.stats();
        assert_eq!(stats.jobs, 20);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_job_alone_in_its_batch_that_fails_leaves_nothing_and_keeps_its_error() {
        let path = temp_file("alone");
        let w = worker(&path);
        w.write(insert(1)).await.unwrap();
        // Writes, then fails, with no other job in its transaction (no savepoint).
        let failed = w
            .write(move |conn| {
                insert(2)(conn)?;
                Err::<i64, StoreError>(StoreError::Conflict {
                    entity: "test",
                    id: "2".into(),
                    message: "refused".into(),
                })
            })
            .await;
        assert!(
            matches!(failed, Err(StoreError::Conflict { ref id, .. }) if id == "2"),
            "{failed:?}"
        );
        // A constraint error fails it alone too, with the database's error.
        assert!(w.write(insert(1)).await.is_err());
        assert_eq!(count(&path), 1);
        // The connection is usable: the failed jobs left no transaction open.
        w.write(insert(3)).await.unwrap();
        assert_eq!(count(&path), 2);
        let stats = w.stats();
        assert_eq!((stats.batches, stats.jobs, stats.largest), (4, 4, 1));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_checkpointer_thread_copies_the_log_and_keeps_it_bounded() {
        let path = temp_file("checkpoint");
        let w = worker(&path);
        let wal = path.with_extension("db-wal");
        let before = std::fs::metadata(&path).unwrap().len();
        // About 8,000 pages of log: two pages per row (the row and its key in the primary
        // key's index), one commit per row.
        for n in 0..4_000i64 {
            w.write(move |conn| {
                conn.execute(
                    "INSERT INTO blocks (actor_id, count) VALUES (?1, ?2)",
                    rusqlite::params![format!("{n:0>3000}"), n],
                )
                .map_err(|e| sql_error("blocks", "insert", e))?;
                Ok::<_, StoreError>(())
            })
            .await
            .unwrap();
        }
        // The writer asked, the checkpointer copied the log into the database file.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while w.counters.checkpoints.load(Ordering::Relaxed) == 0
            && std::time::Instant::now() < deadline
        {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert!(w.counters.checkpoints.load(Ordering::Relaxed) >= 1);
        let grown = std::fs::metadata(&path).unwrap().len();
        assert!(grown > before + 4 * 1024 * 1024, "{before} -> {grown}");
        // The log restarted after a checkpoint: it holds far fewer than the 8,000 pages
        // written (a frame is a 4 KiB page and its 24-byte header).
        let log = std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
        assert!(log < 5_000 * 4_120, "the log is {log} bytes");
        assert_eq!(count(&path), 4_000);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_batch_that_cannot_begin_answers_every_job_unavailable() {
        let path = temp_file("busy");
        let w = Arc::new(
            Worker::start(
                SqliteConfig::file(&path).busy_timeout(std::time::Duration::from_millis(50)),
            )
            .unwrap(),
        );
        // Another connection holds the write lock.
        let other = Connection::open(&path).unwrap();
        other.execute_batch("BEGIN IMMEDIATE").unwrap();
        let go = park(&w);
        let a = tokio::spawn({
            let w = Arc::clone(&w);
            async move { w.write(insert(1)).await }
        });
        let b = tokio::spawn({
            let w = Arc::clone(&w);
            async move { w.write(insert(2)).await }
        });
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        go.send(()).unwrap();
        for call in [a, b] {
            match call.await.unwrap() {
                Err(e) => assert!(e.is_retryable(), "{e}"),
                Ok(v) => panic!("job {v} answered Ok while the lock was held"),
            }
        }
        other.execute_batch("ROLLBACK").unwrap();
        assert_eq!(count(&path), 0);
        // The thread goes on: the next write commits.
        w.write(insert(3)).await.unwrap();
        assert_eq!(count(&path), 1);
    }
}
