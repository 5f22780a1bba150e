//! The commands on a SQLite database: the trail check and the purge of idempotency records.
//! They read and change the store and the audit trail only; no PSP and no vault is touched.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use agent_mandate::adapters::sqlite::{SqliteConfig, SqliteDatabase};
use agent_mandate::domain::ProviderReport;
use agent_mandate::domain::{ActorId, CredentialRef, CredentialStatus, IdempotencyKey};
use agent_mandate::engine::{Engine, EngineConfig, TRAIL_CHECK_LIMIT};
use agent_mandate::ports::{
    AuthorizeRequest, CaptureRequest, CredentialVault, Lookup, NewCredential, PaymentProvider,
    Ports, ProviderError, RefundRequest, ResolvedCredential, StoreOutcome, StoredCredential,
    SystemClock, VaultError, VoidRequest,
};

/// Stands in for the PSP and the vault: these commands never call either.
#[derive(Debug)]
struct Offline;

fn offline() -> ProviderError {
    ProviderError::Invalid {
        message: "the command line tool does not call a PSP".into(),
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

/// Runs `command` (`verify-trail` or `purge`) on the SQLite database at `path`.
pub fn run(command: &str, path: &str) -> Result<String, (u8, String)> {
    if !std::path::Path::new(path).is_file() {
        return Err((2, format!("error: no database file {path}")));
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .map_err(|e| (2, format!("error: cannot start the runtime: {e}")))?;
    runtime.block_on(async {
        let db = SqliteDatabase::open(SqliteConfig::file(path))
            .map_err(|e| (2, format!("error: cannot open {path}: {e}")))?;
        let ports = Ports {
            store: Arc::new(db.store()),
            provider: Arc::new(Offline),
            vault: Arc::new(Offline),
            audit: Arc::new(db.audit_sink()),
            clock: Arc::new(SystemClock),
        };
        let engine = Engine::new(ports, EngineConfig::default())
            .map_err(|e| (2, format!("error: {e}")))?;
        match command {
            "purge" => {
                let n = engine
                    .purge_idempotency()
                    .await
                    .map_err(|e| (2, format!("error: {e}")))?;
                Ok(format!("purged {n} idempotency record(s)"))
            }
            _ => {
                engine
                    .ports()
                    .audit
                    .verify()
                    .await
                    .map_err(|e| (1, format!("error: the audit chain does not verify: {e}")))?;
                let report = engine
                    .verify_trail(TRAIL_CHECK_LIMIT)
                    .await
                    .map_err(|e| (2, format!("error: {e}")))?;
                let mut out = format!(
                    "attempts checked: {}\ntrail events: {}\nstaged, not yet delivered: {}\nrepeated deliveries: {}\nmissing events: {}",
                    report.attempts,
                    report.trail_events,
                    report.staged_events,
                    report.repeated_events,
                    report.missing.len()
                );
                for m in &report.missing {
                    out.push_str(&format!("\n  {m}"));
                }
                if report.is_complete() {
                    Ok(out)
                } else {
                    Err((1, out))
                }
            }
        }
    })
}
