//! [`PostgresVault`]: the [`CredentialVault`] port in the `vault_credentials` table, secrets
//! sealed with envelope encryption (see [`crate::adapters::keyring`]).

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use deadpool_postgres::Pool;
use tokio_postgres::{IsolationLevel, Row};

use super::config::PostgresConfig;
use super::schema::prepare;
use super::tx::{classify, client, in_transaction, PortError, Tx};
use crate::adapters::keyring::{Sealed, VaultKeyring};
use crate::adapters::vault_rules::{
    corrupt, from_store, funding_of, funding_text, kind_of, kind_text, new_reference,
    no_fresh_reference, not_found, status_of, usable, REFERENCE_TRIES,
};
use crate::domain::{ActorId, BuyerId, CredentialRef, CredentialStatus, IdempotencyKey};
use crate::ports::{
    CredentialDisplay, CredentialVault, NewCredential, ResolvedCredential, StoreOutcome,
    StoredCredential, VaultError,
};

impl PortError for VaultError {
    fn unavailable(message: String) -> Self {
        VaultError::Unavailable { message }
    }
    fn other(error: Box<dyn std::error::Error + Send + Sync>) -> Self {
        VaultError::Other(error)
    }
}

const SELECT_ROW: &str = "SELECT reference, owner, buyer_id, kind, brand, last4, exp_month, \
     exp_year, funding, key_id, wrapped_key, ciphertext, revoked FROM vault_credentials \
     WHERE reference = $1";

/// The [`CredentialVault`] port on PostgreSQL, shared by any number of service instances.
///
/// The same design as [`crate::adapters::sqlite::SqliteVault`]: random `cred_` references of
/// 128 bits checked against the table (rows are never deleted, so none is handed out twice),
/// `(owner, idempotency_key)` unique with a keyed-MAC fingerprint of the content (the same
/// content replays, other content is [`VaultError::IdempotencyConflict`]), and only the sealed
/// secret and CVC, the wrapped data key and the key id in the row beside the plain display
/// fields, which are bound into the ciphertext's associated data.
///
/// Two instances storing with the same key at once store one credential: the insert is
/// `ON CONFLICT DO NOTHING`, and the loser reads the winner's row (read committed) and answers
/// it as a replay, or a conflict.
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use agent_mandate::adapters::keyring::{VaultKey, VaultKeyring};
/// use agent_mandate::adapters::postgres::{PostgresStore, PostgresVault};
/// use agent_mandate::ports::Secret;
///
/// let store = PostgresStore::connect("postgres://app@127.0.0.1:5432/payments").await?;
/// let key = VaultKey::from_hex("2026-01", &Secret::new(std::env::var("VAULT_KEY")?))?;
/// let vault = PostgresVault::from_pool(store.pool().clone(), VaultKeyring::new(key)).await?;
/// # let _ = vault;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct PostgresVault {
    pool: Pool,
    retries: u32,
    keyring: Arc<VaultKeyring>,
}

impl fmt::Debug for PostgresVault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let status = self.pool.status();
        f.debug_struct("PostgresVault")
            .field("max_connections", &status.max_size)
            .field("open_connections", &status.size)
            .field("keyring", &self.keyring)
            .finish_non_exhaustive()
    }
}

impl PostgresVault {
    /// Connects with `config` (creating its schema if it names one) and applies the
    /// migrations (with [`PostgresConfig::with_migrations`] off: checks the schema version
    /// instead and creates nothing).
    pub async fn connect_with(
        config: &PostgresConfig,
        keyring: VaultKeyring,
    ) -> Result<PostgresVault, VaultError> {
        let pool = config.pool().map_err(from_store)?;
        prepare(
            &pool,
            config.schema(),
            config.max_retries(),
            config.runs_migrations(),
        )
        .await
        .map_err(from_store)?;
        Ok(PostgresVault {
            pool,
            retries: config.max_retries(),
            keyring: Arc::new(keyring),
        })
    }

    /// Uses an existing pool (for example [`super::PostgresStore::pool`]) and applies the
    /// migrations (a no-op when they are applied already).
    pub async fn from_pool(pool: Pool, keyring: VaultKeyring) -> Result<PostgresVault, VaultError> {
        let retries = 8;
        prepare(&pool, None, retries, true)
            .await
            .map_err(from_store)?;
        Ok(PostgresVault {
            pool,
            retries,
            keyring: Arc::new(keyring),
        })
    }

    /// Uses an existing pool like [`PostgresVault::from_pool`] but runs no migration: checks
    /// that the schema is current (else an error whose source is
    /// [`StoreError::SchemaBehind`](crate::ports::StoreError::SchemaBehind)).
    pub async fn from_pool_checked(
        pool: Pool,
        keyring: VaultKeyring,
    ) -> Result<PostgresVault, VaultError> {
        let retries = 8;
        prepare(&pool, None, retries, false)
            .await
            .map_err(from_store)?;
        Ok(PostgresVault {
            pool,
            retries,
            keyring: Arc::new(keyring),
        })
    }

    /// The pool.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// One prepared statement per connection (one round trip, where an unprepared query
    /// takes two: parse, then execute).
    async fn read(&self, reference: &CredentialRef) -> Result<StoredRow, VaultError> {
        let client = client::<VaultError>(&self.pool).await?;
        let statement = client
            .prepare_cached(SELECT_ROW)
            .await
            .map_err(classify::<VaultError>)?;
        let row = client
            .query_opt(&statement, &[&reference.as_str()])
            .await
            .map_err(classify::<VaultError>)?
            .ok_or_else(|| not_found(reference))?;
        row_of(reference, &row)
    }
}

/// A row as stored.
struct StoredRow {
    stored: StoredCredential,
    sealed: Sealed,
    revoked: bool,
}

impl StoredRow {
    fn status(&self, now: DateTime<Utc>) -> CredentialStatus {
        status_of(self.revoked, &self.stored.display, now)
    }
}

async fn read<C: GenericClient>(
    client: &C,
    reference: &CredentialRef,
) -> Result<StoredRow, VaultError> {
    let row = client
        .query_opt(SELECT_ROW, &[&reference.as_str()])
        .await
        .map_err(classify::<VaultError>)?
        .ok_or_else(|| not_found(reference))?;
    row_of(reference, &row)
}

fn row_of(reference: &CredentialRef, row: &Row) -> Result<StoredRow, VaultError> {
    fn get<'r, T: tokio_postgres::types::FromSql<'r>>(
        reference: &CredentialRef,
        row: &'r Row,
        column: &str,
    ) -> Result<T, VaultError> {
        row.try_get(column)
            .map_err(|e| corrupt(reference, format!("vault_credentials column {column}: {e}")))
    }
    let bad = |what: &str| corrupt(reference, format!("vault_credentials: {what}"));
    let month: i16 = get(reference, row, "exp_month")?;
    let year: i32 = get(reference, row, "exp_year")?;
    let owner: String = get(reference, row, "owner")?;
    let buyer: String = get(reference, row, "buyer_id")?;
    let kind: String = get(reference, row, "kind")?;
    let funding: String = get(reference, row, "funding")?;
    Ok(StoredRow {
        stored: StoredCredential {
            reference: reference.clone(),
            kind: kind_of(reference, &kind)?,
            owner: ActorId::new(&owner).map_err(|_| bad("owner is not an id"))?,
            buyer_id: BuyerId::new(&buyer).map_err(|_| bad("buyer_id is not an id"))?,
            display: CredentialDisplay {
                brand: get(reference, row, "brand")?,
                last4: get(reference, row, "last4")?,
                exp_month: u8::try_from(month).map_err(|_| bad("exp_month out of range"))?,
                exp_year: u16::try_from(year).map_err(|_| bad("exp_year out of range"))?,
                funding: funding_of(reference, &funding)?,
            },
        },
        sealed: Sealed {
            key_id: get(reference, row, "key_id")?,
            wrapped_key: get(reference, row, "wrapped_key")?,
            ciphertext: get(reference, row, "ciphertext")?,
        },
        revoked: get(reference, row, "revoked")?,
    })
}

fn reference_of(text: &str) -> Result<CredentialRef, VaultError> {
    CredentialRef::new(text).map_err(|e| {
        VaultError::Other(format!("vault_credentials: a stored reference is not an id: {e}").into())
    })
}

#[async_trait]
impl CredentialVault for PostgresVault {
    async fn store(
        &self,
        key: &IdempotencyKey,
        credential: NewCredential,
    ) -> Result<StoreOutcome, VaultError> {
        credential.validate()?;
        let keyring = &*self.keyring;
        let credential = &credential;
        in_transaction!(
            &self.pool,
            self.retries,
            IsolationLevel::ReadCommitted,
            VaultError,
            |tx| {
                let mut outcome = None;
                // Each round either answers from the key's row, or inserts; an insert that
                // did nothing lost a race for the key (the next round reads the winner's row)
                // or drew a taken reference (the next round draws again).
                for _ in 0..=REFERENCE_TRIES {
                    let earlier = tx
                        .query_opt(
                            "SELECT reference, key_id, fingerprint FROM vault_credentials \
                             WHERE owner = $1 AND idempotency_key = $2",
                            &[&credential.owner.as_str(), &key.as_str()],
                        )
                        .await?;
                    if let Some(earlier) = earlier {
                        let text: String = earlier.try_get(0)?;
                        let reference = reference_of(&text).map_err(Tx::Fail)?;
                        let key_id: String = earlier.try_get(1)?;
                        let fingerprint: Vec<u8> = earlier.try_get(2)?;
                        let row = read(&tx, &reference).await.map_err(Tx::Fail)?;
                        let same = keyring
                            .same_content(&reference, &key_id, &fingerprint, credential)
                            .map_err(Tx::Fail)?;
                        if !same {
                            // A wrong key (same id, other bytes) also fails the comparison:
                            // report it as such, not as a conflict, by opening the row.
                            keyring.open(&row.stored, &row.sealed).map_err(Tx::Fail)?;
                            return Err(Tx::Fail(VaultError::IdempotencyConflict {
                                owner: credential.owner.clone(),
                                key: key.clone(),
                            }));
                        }
                        outcome = Some(StoreOutcome {
                            credential: row.stored,
                            replay: true,
                        });
                        break;
                    }
                    let reference = new_reference().map_err(Tx::Fail)?;
                    let stored = StoredCredential {
                        reference: reference.clone(),
                        kind: credential.kind,
                        owner: credential.owner.clone(),
                        buyer_id: credential.buyer_id.clone(),
                        display: credential.display.clone(),
                    };
                    let sealed = keyring.seal(&stored, credential).map_err(Tx::Fail)?;
                    let (_, fingerprint) = keyring.fingerprint(credential).map_err(Tx::Fail)?;
                    let d = &stored.display;
                    let inserted = tx
                        .query_opt(
                            "INSERT INTO vault_credentials (reference, owner, idempotency_key, \
                             fingerprint, kind, buyer_id, brand, last4, exp_month, exp_year, \
                             funding, key_id, wrapped_key, ciphertext, revoked) \
                             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, \
                             $14, FALSE) ON CONFLICT DO NOTHING RETURNING reference",
                            &[
                                &reference.as_str(),
                                &stored.owner.as_str(),
                                &key.as_str(),
                                &fingerprint,
                                &kind_text(stored.kind),
                                &stored.buyer_id.as_str(),
                                &d.brand,
                                &d.last4,
                                &i16::from(d.exp_month),
                                &i32::from(d.exp_year),
                                &funding_text(d.funding),
                                &sealed.key_id,
                                &sealed.wrapped_key,
                                &sealed.ciphertext,
                            ],
                        )
                        .await?;
                    if inserted.is_some() {
                        outcome = Some(StoreOutcome {
                            credential: stored,
                            replay: false,
                        });
                        break;
                    }
                }
                outcome.ok_or_else(|| Tx::Fail(no_fresh_reference()))?
            }
        )
    }

    async fn describe(&self, reference: &CredentialRef) -> Result<StoredCredential, VaultError> {
        Ok(self.read(reference).await?.stored)
    }

    async fn resolve(
        &self,
        reference: &CredentialRef,
        now: DateTime<Utc>,
    ) -> Result<ResolvedCredential, VaultError> {
        let row = self.read(reference).await?;
        usable(reference, row.status(now))?;
        let (secret, cvc) = self.keyring.open(&row.stored, &row.sealed)?;
        Ok(ResolvedCredential {
            stored: row.stored,
            secret,
            cvc,
        })
    }

    async fn status(
        &self,
        reference: &CredentialRef,
        now: DateTime<Utc>,
    ) -> Result<CredentialStatus, VaultError> {
        Ok(self.read(reference).await?.status(now))
    }

    async fn describe_and_status(
        &self,
        reference: &CredentialRef,
        now: DateTime<Utc>,
    ) -> Result<(StoredCredential, CredentialStatus), VaultError> {
        let row = self.read(reference).await?;
        let status = row.status(now);
        Ok((row.stored, status))
    }

    /// Returns `true` when this call revoked the credential, `false` when it was already
    /// revoked.
    async fn revoke(&self, reference: &CredentialRef) -> Result<bool, VaultError> {
        let client = client::<VaultError>(&self.pool).await?;
        let changed = client
            .execute(
                "UPDATE vault_credentials SET revoked = TRUE \
                 WHERE reference = $1 AND NOT revoked",
                &[&reference.as_str()],
            )
            .await
            .map_err(classify::<VaultError>)?;
        if changed == 0 {
            // Already revoked, or unknown.
            read(&client, reference).await?;
        }
        Ok(changed > 0)
    }

    async fn revoke_owner(&self, owner: &ActorId) -> Result<u32, VaultError> {
        let client = client::<VaultError>(&self.pool).await?;
        let changed = client
            .execute(
                "UPDATE vault_credentials SET revoked = TRUE WHERE owner = $1 AND NOT revoked",
                &[&owner.as_str()],
            )
            .await
            .map_err(classify::<VaultError>)?;
        Ok(u32::try_from(changed).unwrap_or(u32::MAX))
    }
}
