//! The connection's thread: jobs in through a channel, answers out through one-shot channels.

use std::sync::mpsc;
use std::sync::Mutex;
use std::thread;

use rusqlite::Connection;

use super::{schema, SqliteConfig};
use crate::ports::StoreError;

type Job = Box<dyn FnOnce(&mut Connection) + Send>;

/// Owns the connection on a dedicated thread; the thread ends when the last handle is dropped.
pub(super) struct Worker {
    jobs: Mutex<mpsc::Sender<Job>>,
}

impl Worker {
    /// Opens the connection, sets it up and migrates the schema (on the caller's thread), then
    /// moves it to its own thread.
    pub(super) fn start(config: SqliteConfig) -> Result<Worker, StoreError> {
        let mut conn = match &config.path {
            Some(path) => Connection::open(path),
            None => Connection::open_in_memory(),
        }
        .map_err(|e| unavailable(format!("cannot open the database: {e}")))?;
        schema::prepare(&mut conn, &config)?;
        let (jobs, inbox) = mpsc::channel::<Job>();
        thread::Builder::new()
            .name("agent-mandate-sqlite".into())
            .spawn(move || {
                while let Ok(job) = inbox.recv() {
                    job(&mut conn);
                }
            })
            .map_err(|e| unavailable(format!("cannot start the database thread: {e}")))?;
        Ok(Worker {
            jobs: Mutex::new(jobs),
        })
    }

    /// Runs `f` on the connection's thread.
    pub(super) async fn call<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> R + Send + 'static,
    ) -> Result<R, StoreError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move |conn| {
            // The caller may have stopped waiting (its future was dropped): nothing to do.
            let _ = tx.send(f(conn));
        });
        self.jobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .send(job)
            .map_err(|_| unavailable("the database thread has stopped".into()))?;
        rx.await
            .map_err(|_| unavailable("the database thread stopped during the call".into()))
    }
}

pub(super) fn unavailable(message: String) -> StoreError {
    StoreError::Unavailable { message }
}
