//! Where the operator commands find the state: a SQLite file or a PostgreSQL database, opened
//! without running migrations (only `migrate` changes the schema), and the engine built on it.
//! No vault is opened; no PSP is called except by `reconcile`.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use agent_mandate::adapters::Migrated;
use agent_mandate::domain::ProviderReport;
use agent_mandate::domain::{ActorId, CredentialRef, CredentialStatus, IdempotencyKey};
use agent_mandate::engine::{Engine, EngineConfig};
use agent_mandate::ports::{
    AuditSink, AuthorizeRequest, CaptureRequest, CredentialVault, Lookup, NewCredential,
    PaymentProvider, Ports, ProviderError, RefundRequest, ResolvedCredential, Store, StoreError,
    StoreOutcome, StoredCredential, SystemClock, VaultError, VoidRequest,
};

use crate::Failure;

/// The environment variable that carries the PostgreSQL URL (so the password is not on the
/// command line, where `ps` shows it).
pub const POSTGRES_URL_ENV: &str = "AGENT_MANDATE_POSTGRES_URL";

/// Where the state is.
#[derive(Debug, Clone)]
pub enum Backend {
    /// A SQLite file.
    Sqlite(String),
    /// A PostgreSQL database: the URL (never printed) and the schema, if not the default.
    Postgres { url: String, schema: Option<String> },
}

impl Backend {
    /// The secrets the backend's configuration holds, to be scrubbed from every output.
    pub fn secrets(&self) -> Vec<String> {
        match self {
            Backend::Sqlite(_) => Vec::new(),
            Backend::Postgres { url, .. } => postgres_password(url).into_iter().collect(),
        }
    }
}

#[cfg(feature = "postgres")]
fn postgres_password(url: &str) -> Option<String> {
    let config: tokio_postgres::Config = url.parse().ok()?;
    config
        .get_password()
        .map(|p| String::from_utf8_lossy(p).into_owned())
}

#[cfg(not(feature = "postgres"))]
fn postgres_password(_: &str) -> Option<String> {
    None
}

/// The store and the audit trail of a backend.
pub struct Opened {
    pub store: Arc<dyn Store>,
    pub audit: Arc<dyn AuditSink>,
}

fn store_failure(what: &str, e: &StoreError) -> Failure {
    match e {
        StoreError::SchemaBehind { .. } => Failure::Io(format!(
            "{what}: {e} (run `agent-mandate migrate` with the same database options)"
        )),
        _ => Failure::Io(format!("{what}: {e}")),
    }
}

/// Opens `backend` with the migrations off: a database that is behind is refused.
pub async fn open(backend: &Backend) -> Result<Opened, Failure> {
    match backend {
        Backend::Sqlite(path) => open_sqlite(path),
        Backend::Postgres { url, schema } => open_postgres(url, schema.as_deref()).await,
    }
}

/// Brings the schema of `backend` to this version's (creating a SQLite file if missing).
pub async fn migrate(backend: &Backend) -> Result<Migrated, Failure> {
    match backend {
        Backend::Sqlite(path) => migrate_sqlite(path),
        Backend::Postgres { url, schema } => migrate_postgres(url, schema.as_deref()).await,
    }
}

#[cfg(feature = "sqlite")]
fn open_sqlite(path: &str) -> Result<Opened, Failure> {
    use agent_mandate::adapters::sqlite::{SqliteConfig, SqliteDatabase};
    if !std::path::Path::new(path).is_file() {
        return Err(Failure::Io(format!("no database file {path}")));
    }
    let db = SqliteDatabase::open(SqliteConfig::file(path).run_migrations(false))
        .map_err(|e| store_failure(&format!("cannot open {path}"), &e))?;
    Ok(Opened {
        store: Arc::new(db.store()),
        audit: Arc::new(db.audit_sink()),
    })
}

#[cfg(feature = "sqlite")]
fn migrate_sqlite(path: &str) -> Result<Migrated, Failure> {
    agent_mandate::adapters::sqlite::migrate_file(path)
        .map_err(|e| store_failure(&format!("cannot migrate {path}"), &e))
}

#[cfg(not(feature = "sqlite"))]
fn open_sqlite(_: &str) -> Result<Opened, Failure> {
    Err(needs("--sqlite", "sqlite"))
}

#[cfg(not(feature = "sqlite"))]
fn migrate_sqlite(_: &str) -> Result<Migrated, Failure> {
    Err(needs("--sqlite", "sqlite"))
}

#[cfg(feature = "postgres")]
fn postgres_config(
    url: &str,
    schema: Option<&str>,
) -> agent_mandate::adapters::postgres::PostgresConfig {
    let mut config = agent_mandate::adapters::postgres::PostgresConfig::new(url)
        .with_max_connections(2)
        .with_timeout(Duration::from_secs(5))
        .with_migrations(false);
    if let Some(s) = schema {
        config = config.with_schema(s);
    }
    config
}

#[cfg(feature = "postgres")]
async fn open_postgres(url: &str, schema: Option<&str>) -> Result<Opened, Failure> {
    use agent_mandate::adapters::postgres::{PostgresAuditSink, PostgresStore};
    let config = postgres_config(url, schema);
    let store = PostgresStore::connect_with(&config)
        .await
        .map_err(|e| store_failure("cannot open the postgres database", &e))?;
    let audit = PostgresAuditSink::from_pool_checked(store.pool().clone())
        .await
        .map_err(|e| Failure::Io(format!("cannot open the postgres audit trail: {e}")))?;
    Ok(Opened {
        store: Arc::new(store),
        audit: Arc::new(audit),
    })
}

#[cfg(feature = "postgres")]
async fn migrate_postgres(url: &str, schema: Option<&str>) -> Result<Migrated, Failure> {
    agent_mandate::adapters::postgres::migrate_with(&postgres_config(url, schema))
        .await
        .map_err(|e| store_failure("cannot migrate the postgres database", &e))
}

#[cfg(not(feature = "postgres"))]
async fn open_postgres(_: &str, _: Option<&str>) -> Result<Opened, Failure> {
    Err(needs("--postgres", "postgres"))
}

#[cfg(not(feature = "postgres"))]
async fn migrate_postgres(_: &str, _: Option<&str>) -> Result<Migrated, Failure> {
    Err(needs("--postgres", "postgres"))
}

/// The error of an option whose feature this binary was built without.
#[allow(dead_code, reason = "used only in builds without some feature")]
pub fn needs(option: &str, feature: &str) -> Failure {
    Failure::Usage(format!(
        "{option} needs the {feature} feature (cargo install agent-mandate --features {feature})"
    ))
}

/// The engine over `opened`, with `provider` as its PSP (the offline stand-in when `None`).
pub fn engine(
    opened: &Opened,
    provider: Option<Arc<dyn PaymentProvider>>,
) -> Result<Engine, Failure> {
    let ports = Ports {
        store: opened.store.clone(),
        provider: provider.unwrap_or_else(|| Arc::new(Offline)),
        vault: Arc::new(Offline),
        audit: opened.audit.clone(),
        clock: Arc::new(SystemClock),
    };
    Engine::new(ports, EngineConfig::default())
        .map_err(|e| Failure::Usage(format!("cannot build the engine: {e}")))
}

/// Stands in for the PSP and the vault: the commands other than `reconcile` never call a
/// PSP, and none opens the vault.
#[derive(Debug)]
pub struct Offline;

fn offline() -> ProviderError {
    ProviderError::Invalid {
        message: "the command line tool calls a PSP only in `reconcile`".into(),
    }
}

fn no_vault() -> VaultError {
    VaultError::Unavailable {
        message: "the command line tool does not open the vault".into(),
    }
}

#[async_trait]
impl PaymentProvider for Offline {
    fn deadline(&self) -> Duration {
        Duration::ZERO
    }
    async fn authorize(&self, _: &AuthorizeRequest) -> Result<ProviderReport, ProviderError> {
        Err(offline())
    }
    async fn capture(&self, _: &CaptureRequest) -> Result<ProviderReport, ProviderError> {
        Err(offline())
    }
    async fn void(&self, _: &VoidRequest) -> Result<ProviderReport, ProviderError> {
        Err(offline())
    }
    async fn refund(&self, _: &RefundRequest) -> Result<ProviderReport, ProviderError> {
        Err(offline())
    }
    async fn lookup(&self, _: &Lookup) -> Result<Option<ProviderReport>, ProviderError> {
        Err(offline())
    }
}

#[async_trait]
impl CredentialVault for Offline {
    async fn store(
        &self,
        _: &IdempotencyKey,
        _: NewCredential,
    ) -> Result<StoreOutcome, VaultError> {
        Err(no_vault())
    }
    async fn describe(&self, _: &CredentialRef) -> Result<StoredCredential, VaultError> {
        Err(no_vault())
    }
    async fn resolve(
        &self,
        _: &CredentialRef,
        _: DateTime<Utc>,
    ) -> Result<ResolvedCredential, VaultError> {
        Err(no_vault())
    }
    async fn status(
        &self,
        _: &CredentialRef,
        _: DateTime<Utc>,
    ) -> Result<CredentialStatus, VaultError> {
        Err(no_vault())
    }
    async fn revoke(&self, _: &CredentialRef) -> Result<bool, VaultError> {
        Err(no_vault())
    }
    async fn revoke_owner(&self, _: &ActorId) -> Result<u32, VaultError> {
        Err(no_vault())
    }
}
