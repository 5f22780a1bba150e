//! SQLite adapters (feature `sqlite`): the embedded, durable default.
//!
//! One [`SqliteDatabase`] is one SQLite file (or an in-memory database) with the schema of this
//! crate, migrated on open. It hands out the [`Store`](crate::ports::Store)
//! ([`SqliteStore`]) and the [`AuditSink`](crate::ports::AuditSink) ([`SqliteAuditSink`]) over
//! the same connection, so a service keeps all its state in one file.
//!
//! # Durability and concurrency
//!
//! * The journal is in WAL mode and `synchronous=FULL` by default: a call that returned `Ok`
//!   survives a crash of the process and of the machine. [`Synchronous::Normal`] trades the
//!   last transactions before a power loss (never a process crash) for speed.
//! * Every port call is one transaction, or part of one: concurrent writes queued on the
//!   connection's thread are committed together (group commit: one `BEGIN IMMEDIATE`, a
//!   savepoint per call so a failing call rolls back alone, one `COMMIT`, and no call is
//!   answered before that commit; [`SqliteDatabase::group_commit_stats`] tells the batch
//!   sizes). Reads run on a few WAL read connections ([`SqliteConfig::readers`]), never
//!   behind a write. Writes start `BEGIN IMMEDIATE`, so two connections
//!   (two processes, or two `SqliteDatabase`s on one file) serialise on SQLite's write lock and
//!   a hold checks the caps against what every other writer committed: no overspend across
//!   processes. A writer waits up to [`SqliteConfig::busy_timeout`] for the lock, then the call
//!   fails with the retryable [`StoreError::Unavailable`].
//! * SQLite calls block, so each database owns a dedicated thread with its connection; async
//!   calls hand it a job and await the answer, and never stall an async runtime (any runtime:
//!   the adapter needs no tokio runtime).
//!
//! # Schema
//!
//! The migrations are embedded and applied on open, in one transaction; the version is
//! SQLite's `user_version`. A service that runs its migrations itself turns that off
//! ([`SqliteConfig::run_migrations`]) and applies [`MIGRATIONS`] (the SQL, each recording
//! its version) with its own tool, or calls [`migrate`] / [`migrate_file`]; opening then
//! checks the version and refuses a database that is behind with
//! [`StoreError::SchemaBehind`], never running on an old schema. A database written by a newer version of this crate is refused
//! with [`StoreError::Corrupt`] naming `schema` (never read with a schema this code does not
//! know). Records keep their JSON form in a `body` column beside the columns the queries use;
//! amounts are integer minor units with a currency code; times are nanoseconds since the Unix
//! epoch. A row that cannot be read back is a [`StoreError::Corrupt`] naming its table and key.
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! use agent_mandate::adapters::sqlite::{SqliteConfig, SqliteDatabase};
//! use agent_mandate::domain::examples;
//! use agent_mandate::ports::{AuditSink, Store};
//!
//! let dir = std::env::temp_dir().join(format!("am-doc-{}", std::process::id()));
//! std::fs::create_dir_all(&dir).unwrap();
//! let path = dir.join("mandates.db");
//! # let _ = std::fs::remove_file(&path);
//! let db = SqliteDatabase::open(SqliteConfig::file(&path)).unwrap();
//! let store = db.store();
//! let mandate = examples::travel_backpack_mandate();
//! store.insert_mandate(&mandate).await.unwrap();
//! drop((store, db));
//!
//! // Reopened: the mandate is still there.
//! let db = SqliteDatabase::open(SqliteConfig::file(&path)).unwrap();
//! assert_eq!(db.store().mandate(mandate.id()).await.unwrap(), Some(mandate));
//! assert!(db.audit_sink().verify().await.unwrap().is_none());
//! # std::fs::remove_dir_all(&dir).unwrap();
//! # });
//! ```

mod audit;
mod codec;
mod ledger;
#[cfg(feature = "http")]
mod outbox;
mod payment;
mod review;
mod schema;
mod store;
#[cfg(feature = "tokens")]
mod tokens;
mod vault;
mod worker;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use audit::SqliteAuditSink;
#[cfg(feature = "http")]
pub use outbox::SqliteOutbox;
pub use review::SqliteReviewQueue;
pub use schema::{migrate, migrate_file, schema_version, MIGRATIONS, SCHEMA_VERSION};
pub use store::SqliteStore;
#[cfg(feature = "tokens")]
pub use tokens::SqliteTokenStore;
pub use vault::SqliteVault;
pub use worker::{GroupCommitStats, BATCH_BUCKETS};

use crate::ports::StoreError;
use worker::Worker;

/// How hard SQLite syncs to disk (`PRAGMA synchronous`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Synchronous {
    /// Every commit is synced (`FULL`, the default): nothing acknowledged is lost, even on
    /// power loss.
    #[default]
    Full,
    /// In WAL mode, commits are synced at checkpoints (`NORMAL`): a process crash loses
    /// nothing; a power loss may lose the last commits.
    Normal,
}

impl Synchronous {
    fn pragma(self) -> &'static str {
        match self {
            Synchronous::Full => "FULL",
            Synchronous::Normal => "NORMAL",
        }
    }
}

/// Where and how to open a database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqliteConfig {
    /// The file; `None` for a private in-memory database (gone with the value).
    pub path: Option<PathBuf>,
    /// See [`Synchronous`].
    pub synchronous: Synchronous,
    /// How long a write waits for another connection's write lock before failing with
    /// [`StoreError::Unavailable`].
    pub busy_timeout: Duration,
    /// Read connections of a file database (WAL readers, each on its own thread): reads of
    /// attempts, usage, audit segments and dispute evidence run there and never queue behind
    /// writes. 0 runs every read on the writer's connection; a private in-memory database
    /// has none whatever this says.
    pub readers: usize,
    /// Whether opening applies the migrations the database lacks (the default). Off, opening
    /// only checks the schema version and refuses a database that is behind with
    /// [`StoreError::SchemaBehind`] naming both versions: for a service that runs the
    /// migrations itself ([`migrate`], [`migrate_file`], or the SQL of [`MIGRATIONS`]).
    pub run_migrations: bool,
}

impl SqliteConfig {
    /// A database file (created if missing), `synchronous=FULL`, 5 s busy timeout.
    pub fn file(path: impl AsRef<Path>) -> SqliteConfig {
        SqliteConfig {
            path: Some(path.as_ref().to_path_buf()),
            synchronous: Synchronous::Full,
            busy_timeout: Duration::from_secs(5),
            readers: DEFAULT_READERS,
            run_migrations: true,
        }
    }

    /// A private in-memory database (tests, examples): same schema and queries, no file.
    pub fn in_memory() -> SqliteConfig {
        SqliteConfig {
            path: None,
            synchronous: Synchronous::Full,
            busy_timeout: Duration::from_secs(5),
            readers: 0,
            run_migrations: true,
        }
    }

    /// With another [`Synchronous`] level.
    pub fn synchronous(mut self, level: Synchronous) -> SqliteConfig {
        self.synchronous = level;
        self
    }

    /// With another busy timeout.
    pub fn busy_timeout(mut self, timeout: Duration) -> SqliteConfig {
        self.busy_timeout = timeout;
        self
    }

    /// With `n` read connections (see [`SqliteConfig::readers`]).
    pub fn readers(mut self, n: usize) -> SqliteConfig {
        self.readers = n;
        self
    }

    /// With the migrations on open turned on (the default) or off (see
    /// [`SqliteConfig::run_migrations`]).
    ///
    /// ```
    /// use agent_mandate::adapters::sqlite::{migrate, SqliteConfig, SqliteDatabase};
    /// use agent_mandate::ports::StoreError;
    /// let dir = std::env::temp_dir().join(format!("am-doc-mig-{}", std::process::id()));
    /// std::fs::create_dir_all(&dir).unwrap();
    /// let path = dir.join("fresh.db");
    /// # let _ = std::fs::remove_file(&path);
    /// let config = SqliteConfig::file(&path).run_migrations(false);
    /// assert!(matches!(
    ///     SqliteDatabase::open(config.clone()),
    ///     Err(StoreError::SchemaBehind { found: 0, .. })
    /// ));
    /// migrate(&mut rusqlite::Connection::open(&path).unwrap()).unwrap();
    /// assert!(SqliteDatabase::open(config).is_ok());
    /// # std::fs::remove_dir_all(&dir).unwrap();
    /// ```
    pub fn run_migrations(mut self, run: bool) -> SqliteConfig {
        self.run_migrations = run;
        self
    }
}

/// Read connections of a file database unless configured otherwise.
pub const DEFAULT_READERS: usize = 2;

/// An open database: one connection on its own thread, the schema migrated.
///
/// Cheap to clone (the clones share the connection). [`SqliteDatabase::store`] and
/// [`SqliteDatabase::audit_sink`] give the ports; open the same file twice for two
/// independent connections (they serialise their writes through SQLite's lock).
#[derive(Clone)]
pub struct SqliteDatabase {
    worker: Arc<Worker>,
    path: Option<PathBuf>,
}

impl fmt::Debug for SqliteDatabase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteDatabase")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl SqliteDatabase {
    /// Opens (creating if needed) and migrates the database (or, with
    /// [`SqliteConfig::run_migrations`] off, checks that it is current: else
    /// [`StoreError::SchemaBehind`]). Fails with
    /// [`StoreError::Corrupt`] if the file holds a schema from a newer version of this crate
    /// or is not a database, [`StoreError::Unavailable`] if it cannot be opened.
    pub fn open(config: SqliteConfig) -> Result<SqliteDatabase, StoreError> {
        let path = config.path.clone();
        let worker = Worker::start(config)?;
        Ok(SqliteDatabase {
            worker: Arc::new(worker),
            path,
        })
    }

    /// The [`Store`](crate::ports::Store) on this database.
    pub fn store(&self) -> SqliteStore {
        SqliteStore::new(self.clone(), false)
    }

    /// The [`Store`](crate::ports::Store) on this database, appending its audit events
    /// straight to this database's trail (the one [`SqliteDatabase::audit_sink`] reads) in the
    /// transaction of the change they describe, instead of staging them in the outbox for the
    /// engine to deliver: a payment is then two write transactions in all, with no delivery
    /// round (alert events still go through the outbox, see
    /// [`Store::direct_trail`](crate::ports::Store::direct_trail)). Give the engine this
    /// database's [`SqliteDatabase::audit_sink`] (or one opened on the same file): the engine
    /// refuses another sink.
    ///
    /// ```
    /// use agent_mandate::adapters::sqlite::{SqliteConfig, SqliteDatabase};
    /// use agent_mandate::ports::{AuditSink, Store};
    /// let db = SqliteDatabase::open(SqliteConfig::in_memory()).unwrap();
    /// assert_eq!(db.store_with_trail().direct_trail(), db.audit_sink().trail_id());
    /// assert_eq!(db.store().direct_trail(), None);
    /// ```
    pub fn store_with_trail(&self) -> SqliteStore {
        SqliteStore::new(self.clone(), true)
    }

    /// The name of this database's audit trail: its file, or (in memory) this handle.
    pub(super) fn trail_id(&self) -> crate::ports::TrailId {
        match &self.path {
            Some(p) => crate::ports::TrailId::new(format!("sqlite:{}", p.display())),
            None => {
                crate::ports::TrailId::new(format!("sqlite:memory:{:p}", Arc::as_ptr(&self.worker)))
            }
        }
    }

    /// The [`AuditSink`](crate::ports::AuditSink) on this database.
    pub fn audit_sink(&self) -> SqliteAuditSink {
        SqliteAuditSink::new(self.clone())
    }

    /// The [`CredentialVault`](crate::ports::CredentialVault) on this database, sealing
    /// secrets under `keyring` (see [`crate::adapters::keyring`]). Open it with a keyring that
    /// holds every key its rows were sealed under.
    pub fn vault(&self, keyring: crate::adapters::keyring::VaultKeyring) -> SqliteVault {
        SqliteVault::new(self.clone(), keyring)
    }

    /// The scoped payment [`TokenStore`](crate::ports::TokenStore) on this database
    /// (features `sqlite` and `tokens`).
    #[cfg(feature = "tokens")]
    pub fn token_store(&self) -> SqliteTokenStore {
        SqliteTokenStore::new(self.clone())
    }

    /// The durable webhook [`Outbox`](crate::adapters::http::Outbox) on this database
    /// (features `sqlite` and `http`).
    #[cfg(feature = "http")]
    pub fn outbox(&self) -> SqliteOutbox {
        SqliteOutbox::new(self.clone())
    }

    /// The [`ReviewQueue`](crate::ports::ReviewQueue) of payments in their review window on
    /// this database (migration 9).
    pub fn review_queue(&self) -> SqliteReviewQueue {
        SqliteReviewQueue::new(self.clone())
    }

    /// The file, if any.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// How many write transactions the connection's thread committed and how many jobs
    /// each carried (group commit: see the module docs).
    pub fn group_commit_stats(&self) -> GroupCommitStats {
        self.worker.stats()
    }

    /// Runs `f` alone on the connection's thread and returns its result (`f` manages its
    /// own transaction, if any).
    pub(crate) async fn call<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut rusqlite::Connection) -> R + Send + 'static,
    ) -> Result<R, StoreError> {
        self.worker.call(f).await
    }

    /// Runs `f` inside the next group commit, in a savepoint of its own; answers after the
    /// commit. An `Err` from `f` rolls back `f`'s writes only.
    pub(crate) async fn write<R, E>(
        &self,
        f: impl FnOnce(&rusqlite::Connection) -> Result<R, E> + Send + 'static,
    ) -> Result<R, E>
    where
        R: Send + 'static,
        E: From<StoreError> + Send + 'static,
    {
        self.worker.write(f).await
    }

    /// Runs `f` on a read connection (the writer's when there is none).
    pub(crate) async fn read<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut rusqlite::Connection) -> R + Send + 'static,
    ) -> Result<R, StoreError> {
        self.worker.read(f).await
    }
}
