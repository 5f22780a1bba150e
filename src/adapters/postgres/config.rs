//! [`PostgresConfig`]: where to connect, and how.

use std::fmt;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::NoTls;

use crate::ports::StoreError;

/// How to reach the database.
///
/// The connection string (URL `postgres://user:password@host:port/db` or `key=value` form) is
/// kept private and never printed: `Debug` shows the hosts, ports, user and database only.
///
/// `schema`, when set, is created if missing and put first on every connection's
/// `search_path`, so all tables live in it: tests use a fresh schema each to stay apart on one
/// database. It must be a plain lower-case identifier (`[a-z_][a-z0-9_]*`, at most 63 bytes).
///
/// ```
/// use agent_mandate::adapters::postgres::PostgresConfig;
/// let config = PostgresConfig::new("postgres://app:s3cret@db.internal:5432/payments")
///     .with_schema("payments_eu")
///     .with_max_connections(32);
/// let shown = format!("{config:?}");
/// assert!(shown.contains("db.internal") && !shown.contains("s3cret"));
/// ```
#[derive(Clone)]
pub struct PostgresConfig {
    url: String,
    schema: Option<String>,
    max_connections: usize,
    timeout: Duration,
    max_retries: u32,
    run_migrations: bool,
}

impl PostgresConfig {
    /// A configuration for `url`, with the defaults: the connection's own `search_path`, 16
    /// connections, a 10 s timeout to connect or wait for a free connection, 8 retries of a
    /// transaction that lost a deadlock or serialization race.
    pub fn new(url: impl Into<String>) -> PostgresConfig {
        PostgresConfig {
            url: url.into(),
            schema: None,
            max_connections: 16,
            timeout: Duration::from_secs(10),
            max_retries: 8,
            run_migrations: true,
        }
    }

    /// Keeps every table in `schema` (created on connect if missing).
    pub fn with_schema(mut self, schema: impl Into<String>) -> PostgresConfig {
        self.schema = Some(schema.into());
        self
    }

    /// The pool's size (at least 1).
    pub fn with_max_connections(mut self, n: usize) -> PostgresConfig {
        self.max_connections = n.max(1);
        self
    }

    /// How long to wait to connect, or for a free connection of the pool.
    pub fn with_timeout(mut self, timeout: Duration) -> PostgresConfig {
        self.timeout = timeout;
        self
    }

    /// How many times a transaction that lost a deadlock or serialization race (SQLSTATE
    /// `40P01`, `40001`) is run again before the call reports
    /// [`StoreError::Unavailable`].
    pub fn with_max_retries(mut self, n: u32) -> PostgresConfig {
        self.max_retries = n;
        self
    }

    /// Whether connecting applies the migrations the database lacks (`true`, the default)
    /// or only checks the schema version (`false`): for a service that runs the migrations
    /// itself ([`super::migrate`], or the SQL of [`super::MIGRATIONS`]). Off, connecting to a
    /// database that is behind fails with [`StoreError::SchemaBehind`] naming both versions,
    /// and nothing is created (not even the schema), so the service's user needs no DDL
    /// rights.
    pub fn with_migrations(mut self, run: bool) -> PostgresConfig {
        self.run_migrations = run;
        self
    }

    /// Whether connecting applies the migrations (see [`PostgresConfig::with_migrations`]).
    pub fn runs_migrations(&self) -> bool {
        self.run_migrations
    }

    /// The schema, if one is set.
    pub fn schema(&self) -> Option<&str> {
        self.schema.as_deref()
    }

    pub(crate) fn max_retries(&self) -> u32 {
        self.max_retries
    }

    fn parsed(&self) -> Result<tokio_postgres::Config, StoreError> {
        // The parser's message never contains the connection string itself.
        self.url
            .parse::<tokio_postgres::Config>()
            .map_err(|e| StoreError::Other(format!("invalid connection string: {e}").into()))
    }

    /// Builds a connection pool (no connection is opened yet).
    pub fn pool(&self) -> Result<Pool, StoreError> {
        let mut pg = self.parsed()?;
        if let Some(schema) = &self.schema {
            check_schema(schema)?;
            pg.options(format!("-c search_path={schema}"));
        }
        pg.connect_timeout(self.timeout);
        if pg.get_application_name().is_none() {
            pg.application_name("agent-mandate");
        }
        let manager = Manager::from_config(
            pg,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        Pool::builder(manager)
            .max_size(self.max_connections)
            .wait_timeout(Some(self.timeout))
            .create_timeout(Some(self.timeout))
            .recycle_timeout(Some(self.timeout))
            .runtime(Runtime::Tokio1)
            .build()
            .map_err(|e| StoreError::Other(format!("cannot build the pool: {e}").into()))
    }
}

/// Refuses anything but a plain lower-case identifier (it is spliced into SQL unquoted).
pub(crate) fn check_schema(schema: &str) -> Result<(), StoreError> {
    let mut chars = schema.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_');
    let rest_ok = chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if first_ok && rest_ok && schema.len() <= 63 {
        Ok(())
    } else {
        Err(StoreError::Other(
            format!("invalid schema name {schema:?}: use [a-z_][a-z0-9_]*, at most 63 bytes")
                .into(),
        ))
    }
}

impl fmt::Debug for PostgresConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = f.debug_struct("PostgresConfig");
        match self.parsed() {
            Ok(pg) => {
                let hosts: Vec<String> = pg
                    .get_hosts()
                    .iter()
                    .map(|h| match h {
                        tokio_postgres::config::Host::Tcp(name) => name.clone(),
                        #[cfg(unix)]
                        tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
                    })
                    .collect();
                s.field("hosts", &hosts)
                    .field("ports", &pg.get_ports())
                    .field("user", &pg.get_user())
                    .field("dbname", &pg.get_dbname())
                    .field("password", &pg.get_password().map(|_| "<redacted>"));
            }
            Err(_) => {
                s.field("url", &"<unparsable, redacted>");
            }
        }
        s.field("schema", &self.schema)
            .field("max_connections", &self.max_connections)
            .field("timeout", &self.timeout)
            .field("max_retries", &self.max_retries)
            .field("run_migrations", &self.run_migrations)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_password() {
        for url in [
            "postgres://app:hunter2@db:5432/x",
            "host=db user=app password=hunter2 dbname=x",
            "postgres://app:hunter2@db:5432/x?sslmode=disable&password=hunter2",
            "not a url hunter2 ://",
        ] {
            let shown = format!("{:?}", PostgresConfig::new(url));
            assert!(!shown.contains("hunter2"), "{shown}");
        }
    }

    #[test]
    fn schema_names_are_plain_identifiers() {
        for ok in ["t_1", "_x", "payments"] {
            assert!(check_schema(ok).is_ok(), "{ok}");
        }
        for bad in ["", "1x", "A", "x;drop", "x y", "x\"", &"a".repeat(64)] {
            assert!(check_schema(bad).is_err(), "{bad}");
        }
    }
}
