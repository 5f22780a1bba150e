//! [`SqliteVault`]: the [`CredentialVault`] port in the `vault_credentials` table, secrets
//! sealed with envelope encryption (see [`crate::adapters::keyring`]).

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use super::codec::sql_error;
use super::SqliteDatabase;
use crate::adapters::keyring::{Sealed, VaultKeyring};
use crate::adapters::vault_rules::{
    corrupt, from_store, funding_of, funding_text, kind_of, kind_text, new_reference,
    no_fresh_reference, not_found, status_of, usable, REFERENCE_TRIES,
};
use crate::domain::{ActorId, BuyerId, CredentialRef, CredentialStatus, IdempotencyKey};
use crate::ports::{
    CredentialDisplay, CredentialVault, NewCredential, ResolvedCredential, StoreError,
    StoreOutcome, StoredCredential, VaultError,
};

const TABLE: &str = "vault_credentials";

/// Every column but the key and the fingerprint, in the order [`row_of`] reads them.
const COLUMNS: &str = "reference, owner, buyer_id, kind, brand, last4, exp_month, exp_year, \
                       funding, key_id, wrapped_key, ciphertext, revoked";

/// The [`CredentialVault`] port on a [`SqliteDatabase`], sharing its file and connection
/// thread with the store and the audit sink.
///
/// * **References** are `cred_` and 128 bits from the operating system's random number
///   generator, checked against the table before the insert (in the same write transaction);
///   rows are never deleted, so a reference is never handed out twice, also after a restart.
/// * **Idempotent store.** `(owner, idempotency_key)` is unique. A store with a key the owner
///   used before compares the content with the row's fingerprint (an HMAC-SHA256 under a key
///   derived from the keyring key that stored the row, compared in constant time): the same
///   content answers the row as a replay, other content is
///   [`VaultError::IdempotencyConflict`]. The check and the insert are one `BEGIN IMMEDIATE`
///   transaction, so two connections retrying the same key store one credential.
/// * **Encryption.** Only the sealed secret and CVC (`ciphertext`), the wrapped data key and
///   the key id reach the file; the display fields, owner, buyer and kind are plain but bound
///   into the ciphertext's associated data, so `resolve` of an edited or moved row is
///   [`VaultError::Integrity`] and of a row sealed under a key the keyring lacks,
///   [`VaultError::KeyUnavailable`]. `describe`, `status`, `revoke` and `revoke_owner` read
///   only the plain columns (no key needed).
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// use agent_mandate::adapters::keyring::{VaultKey, VaultKeyring};
/// use agent_mandate::adapters::sqlite::{SqliteConfig, SqliteDatabase};
/// use agent_mandate::domain::examples;
/// use agent_mandate::ports::{
///     CredentialDisplay, CredentialKind, CredentialVault, FundingType, NewCredential, Secret,
/// };
///
/// let keyring = VaultKeyring::new(VaultKey::generate("k1").unwrap());
/// let vault = SqliteDatabase::open(SqliteConfig::in_memory()).unwrap().vault(keyring);
/// let card = NewCredential {
///     kind: CredentialKind::PaymentMethod,
///     owner: examples::agent().id,
///     buyer_id: examples::buyer(),
///     secret: Secret::new("pm_card_visa"),
///     cvc: None,
///     display: CredentialDisplay {
///         brand: "visa".into(),
///         last4: "4242".into(),
///         exp_month: 12,
///         exp_year: 2030,
///         funding: FundingType::Credit,
///     },
/// };
/// let key = "store-card-1".parse().unwrap();
/// let first = vault.store(&key, card.clone()).await.unwrap();
/// let retried = vault.store(&key, card).await.unwrap();
/// assert!(retried.replay && retried.credential == first.credential);
/// let resolved = vault.resolve(&first.credential.reference, examples::now()).await.unwrap();
/// assert_eq!(resolved.secret.expose(), "pm_card_visa");
/// # });
/// ```
#[derive(Clone)]
pub struct SqliteVault {
    db: SqliteDatabase,
    keyring: Arc<VaultKeyring>,
}

impl fmt::Debug for SqliteVault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteVault")
            .field("db", &self.db)
            .field("keyring", &self.keyring)
            .finish()
    }
}

impl SqliteVault {
    pub(super) fn new(db: SqliteDatabase, keyring: VaultKeyring) -> SqliteVault {
        SqliteVault {
            db,
            keyring: Arc::new(keyring),
        }
    }

    /// The database this vault is on.
    pub fn database(&self) -> &SqliteDatabase {
        &self.db
    }

    /// Runs `f` on the connection's thread.
    async fn call<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection, &VaultKeyring) -> Result<R, VaultError> + Send + 'static,
    ) -> Result<R, VaultError> {
        let keyring = Arc::clone(&self.keyring);
        self.db
            .call(move |conn| f(conn, &keyring))
            .await
            .map_err(from_store)?
    }
}

impl SqliteVault {
    /// Runs `f` on a read connection (the writer's for a database without read
    /// connections): a credential is answered after its commit, so a read that follows a
    /// store or a revocation sees it.
    async fn read_call<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<R, VaultError> + Send + 'static,
    ) -> Result<R, VaultError> {
        self.db.read(f).await.map_err(from_store)?
    }
}

fn fail(key: &str, e: rusqlite::Error) -> VaultError {
    from_store(sql_error(TABLE, key, e))
}

/// A row as stored.
struct Row {
    stored: StoredCredential,
    sealed: Sealed,
    revoked: bool,
}

impl Row {
    fn status(&self, now: DateTime<Utc>) -> CredentialStatus {
        status_of(self.revoked, &self.stored.display, now)
    }
}

/// The columns of [`COLUMNS`], as SQLite gave them.
type RawRow = (
    String,
    String,
    String,
    String,
    String,
    String,
    i64,
    i64,
    String,
    String,
    Vec<u8>,
    Vec<u8>,
    i64,
);

fn raw(r: &rusqlite::Row<'_>) -> rusqlite::Result<RawRow> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
        r.get(7)?,
        r.get(8)?,
        r.get(9)?,
        r.get(10)?,
        r.get(11)?,
        r.get(12)?,
    ))
}

fn row_of(raw: RawRow) -> Result<Row, VaultError> {
    let (
        reference,
        owner,
        buyer,
        kind,
        brand,
        last4,
        month,
        year,
        funding,
        key_id,
        wrapped,
        ct,
        revoked,
    ) = raw;
    let reference = CredentialRef::new(&reference).map_err(|e| {
        VaultError::Other(format!("{TABLE}: a stored reference is not an id: {e}").into())
    })?;
    let bad = |what: &str| corrupt(&reference, format!("{TABLE}: {what}"));
    let stored = StoredCredential {
        kind: kind_of(&reference, &kind)?,
        owner: ActorId::new(&owner).map_err(|_| bad("owner is not an id"))?,
        buyer_id: BuyerId::new(&buyer).map_err(|_| bad("buyer_id is not an id"))?,
        display: CredentialDisplay {
            brand,
            last4,
            exp_month: u8::try_from(month).map_err(|_| bad("exp_month out of range"))?,
            exp_year: u16::try_from(year).map_err(|_| bad("exp_year out of range"))?,
            funding: funding_of(&reference, &funding)?,
        },
        reference: reference.clone(),
    };
    let revoked = match revoked {
        0 => false,
        1 => true,
        _ => return Err(bad("revoked is not 0 or 1")),
    };
    Ok(Row {
        stored,
        sealed: Sealed {
            key_id,
            wrapped_key: wrapped,
            ciphertext: ct,
        },
        revoked,
    })
}

fn read(conn: &Connection, reference: &CredentialRef) -> Result<Row, VaultError> {
    let key = reference.as_str();
    let raw = conn
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM {TABLE} WHERE reference = ?1"
        ))
        .and_then(|mut s| s.query_row([key], raw).optional())
        .map_err(|e| match sql_error(TABLE, key, e) {
            // A column of the wrong type or NULL: this row is unreadable.
            StoreError::Corrupt { message, .. } => corrupt(reference, message),
            other => from_store(other),
        })?
        .ok_or_else(|| not_found(reference))?;
    row_of(raw)
}

/// The store transaction: replay, conflict, or a new row under a fresh reference.
fn store_in(
    conn: &mut Connection,
    keyring: &VaultKeyring,
    key: &IdempotencyKey,
    credential: NewCredential,
) -> Result<StoreOutcome, VaultError> {
    let scope = format!("{} {}", credential.owner, key);
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(|e| fail(&scope, e))?;
    let earlier: Option<(String, String, Vec<u8>)> = tx
        .prepare_cached(&format!(
            "SELECT reference, key_id, fingerprint FROM {TABLE} \
             WHERE owner = ?1 AND idempotency_key = ?2"
        ))
        .and_then(|mut s| {
            s.query_row(params![credential.owner.as_str(), key.as_str()], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .optional()
        })
        .map_err(|e| fail(&scope, e))?;
    if let Some((reference, key_id, fingerprint)) = earlier {
        let reference = CredentialRef::new(&reference).map_err(|e| {
            VaultError::Other(format!("{TABLE}: a stored reference is not an id: {e}").into())
        })?;
        let row = read(&tx, &reference)?;
        if !keyring.same_content(&reference, &key_id, &fingerprint, &credential)? {
            // A wrong key (same id, other bytes) also fails the comparison: report it as
            // such, not as a conflict, by opening the row.
            keyring.open(&row.stored, &row.sealed)?;
            return Err(VaultError::IdempotencyConflict {
                owner: credential.owner,
                key: key.clone(),
            });
        }
        return Ok(StoreOutcome {
            credential: row.stored,
            replay: true,
        });
    }
    let mut fresh = None;
    for _ in 0..REFERENCE_TRIES {
        let candidate = new_reference()?;
        let taken = tx
            .prepare_cached(&format!("SELECT 1 FROM {TABLE} WHERE reference = ?1"))
            .and_then(|mut s| s.exists([candidate.as_str()]))
            .map_err(|e| fail(candidate.as_str(), e))?;
        if !taken {
            fresh = Some(candidate);
            break;
        }
    }
    let reference = fresh.ok_or_else(no_fresh_reference)?;
    let stored = StoredCredential {
        reference: reference.clone(),
        kind: credential.kind,
        owner: credential.owner.clone(),
        buyer_id: credential.buyer_id.clone(),
        display: credential.display.clone(),
    };
    let sealed = keyring.seal(&stored, &credential)?;
    let (fingerprint_key, fingerprint) = keyring.fingerprint(&credential)?;
    if fingerprint_key != sealed.key_id {
        // Both come from the keyring's current key.
        return Err(VaultError::Other(
            "the keyring changed its current key during a store".into(),
        ));
    }
    let d = &stored.display;
    tx.prepare_cached(&format!(
        "INSERT INTO {TABLE} (reference, owner, idempotency_key, fingerprint, kind, buyer_id, \
         brand, last4, exp_month, exp_year, funding, key_id, wrapped_key, ciphertext, revoked) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, 0)"
    ))
    .and_then(|mut s| {
        s.execute(params![
            reference.as_str(),
            stored.owner.as_str(),
            key.as_str(),
            fingerprint,
            kind_text(stored.kind),
            stored.buyer_id.as_str(),
            d.brand,
            d.last4,
            d.exp_month,
            d.exp_year,
            funding_text(d.funding),
            sealed.key_id,
            sealed.wrapped_key,
            sealed.ciphertext,
        ])
    })
    .map_err(|e| fail(reference.as_str(), e))?;
    tx.commit().map_err(|e| fail(reference.as_str(), e))?;
    Ok(StoreOutcome {
        credential: stored,
        replay: false,
    })
}

#[async_trait]
impl CredentialVault for SqliteVault {
    async fn store(
        &self,
        key: &IdempotencyKey,
        credential: NewCredential,
    ) -> Result<StoreOutcome, VaultError> {
        credential.validate()?;
        let key = key.clone();
        self.call(move |conn, keyring| store_in(conn, keyring, &key, credential))
            .await
    }

    async fn describe(&self, reference: &CredentialRef) -> Result<StoredCredential, VaultError> {
        let reference = reference.clone();
        self.call(move |conn, _| Ok(read(conn, &reference)?.stored))
            .await
    }

    async fn resolve(
        &self,
        reference: &CredentialRef,
        now: DateTime<Utc>,
    ) -> Result<ResolvedCredential, VaultError> {
        let reference = reference.clone();
        self.call(move |conn, keyring| {
            let row = read(conn, &reference)?;
            usable(&reference, row.status(now))?;
            let (secret, cvc) = keyring.open(&row.stored, &row.sealed)?;
            Ok(ResolvedCredential {
                stored: row.stored,
                secret,
                cvc,
            })
        })
        .await
    }

    async fn status(
        &self,
        reference: &CredentialRef,
        now: DateTime<Utc>,
    ) -> Result<CredentialStatus, VaultError> {
        let reference = reference.clone();
        self.call(move |conn, _| Ok(read(conn, &reference)?.status(now)))
            .await
    }

    async fn describe_and_status(
        &self,
        reference: &CredentialRef,
        now: DateTime<Utc>,
    ) -> Result<(StoredCredential, CredentialStatus), VaultError> {
        let reference = reference.clone();
        self.read_call(move |conn| {
            let row = read(conn, &reference)?;
            let status = row.status(now);
            Ok((row.stored, status))
        })
        .await
    }

    /// Returns `true` when this call revoked the credential, `false` when it was already
    /// revoked.
    async fn revoke(&self, reference: &CredentialRef) -> Result<bool, VaultError> {
        let reference = reference.clone();
        self.call(move |conn, _| {
            let key = reference.as_str();
            let changed = conn
                .prepare_cached(&format!(
                    "UPDATE {TABLE} SET revoked = 1 WHERE reference = ?1 AND revoked = 0"
                ))
                .and_then(|mut s| s.execute([key]))
                .map_err(|e| fail(key, e))?;
            if changed == 0 {
                // Already revoked, or unknown.
                read(conn, &reference)?;
            }
            Ok(changed > 0)
        })
        .await
    }

    async fn revoke_owner(&self, owner: &ActorId) -> Result<u32, VaultError> {
        let owner = owner.clone();
        self.call(move |conn, _| {
            let key = owner.as_str();
            let changed = conn
                .prepare_cached(&format!(
                    "UPDATE {TABLE} SET revoked = 1 WHERE owner = ?1 AND revoked = 0"
                ))
                .and_then(|mut s| s.execute([key]))
                .map_err(|e| fail(key, e))?;
            Ok(u32::try_from(changed).unwrap_or(u32::MAX))
        })
        .await
    }
}
