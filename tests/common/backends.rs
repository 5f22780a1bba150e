//! The durable backends the integration tests run on: a SQLite file, or a PostgreSQL schema of
//! the test's own (when `DATABASE_URL` is set).

use std::path::Path;
use std::sync::Arc;

use agent_mandate::adapters::sqlite::{SqliteConfig, SqliteDatabase};
use agent_mandate::ports::{AuditSink, Store};

/// Where a test keeps its state.
#[derive(Debug, Clone)]
pub enum Backend {
    Sqlite,
    Postgres { url: String, schema: String },
}

/// `DATABASE_URL`, or `None` after saying the PostgreSQL test is skipped.
pub fn database_url() -> Option<String> {
    match std::env::var("DATABASE_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            eprintln!(
                "SKIPPED: DATABASE_URL not set (run scripts/with-postgres.sh cargo test --all-features)"
            );
            None
        }
    }
}

impl Backend {
    /// A new connection (SQLite: to the file at `sqlite_path`; PostgreSQL: a pool of one
    /// connection on the schema) with the store and the audit sink on it.
    pub async fn open(&self, sqlite_path: &Path) -> (Arc<dyn Store>, Arc<dyn AuditSink>) {
        match self {
            Backend::Sqlite => {
                let db = SqliteDatabase::open(SqliteConfig::file(sqlite_path)).expect("open");
                (Arc::new(db.store()), Arc::new(db.audit_sink()))
            }
            #[cfg(feature = "postgres")]
            Backend::Postgres { url, schema } => {
                use agent_mandate::adapters::postgres::{
                    PostgresAuditSink, PostgresConfig, PostgresStore,
                };
                let config = PostgresConfig::new(url.clone())
                    .with_schema(schema.clone())
                    .with_max_connections(2);
                let store = PostgresStore::connect_with(&config).await.expect("connect");
                let audit = PostgresAuditSink::from_pool(store.pool().clone())
                    .await
                    .expect("audit sink");
                (Arc::new(store), Arc::new(audit))
            }
            #[cfg(not(feature = "postgres"))]
            Backend::Postgres { .. } => unreachable!("PostgreSQL runs need the postgres feature"),
        }
    }

    /// Drops the PostgreSQL schema (nothing for SQLite: the caller removes its directory).
    pub async fn drop_schema(&self) {
        #[cfg(feature = "postgres")]
        if let Backend::Postgres { url, schema } = self {
            let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
                .await
                .expect("connect to drop the schema");
            tokio::spawn(conn);
            client
                .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
                .await
                .expect("drop the schema");
        }
    }
}
