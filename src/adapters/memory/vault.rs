//! The credential vault in memory.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::adapters::vault_rules::{
    new_reference, no_fresh_reference, not_found, status_of, usable, REFERENCE_TRIES,
};
use crate::domain::{ActorId, CredentialRef, CredentialStatus, IdempotencyKey};
use crate::ports::{
    CredentialVault, NewCredential, ResolvedCredential, Secret, StoreOutcome, StoredCredential,
    VaultError,
};

/// A [`CredentialVault`] in memory.
///
/// References are opaque and random: `cred_` and 128 bits from the operating system's random
/// number generator, checked against every reference the vault holds, so they say nothing about
/// the credential or the order of storing and are never handed out twice (a vault started
/// again does not hand out the references of an earlier one). `store` is idempotent per
/// (owner, key): the same content answers the stored credential as a replay, other content is
/// [`VaultError::IdempotencyConflict`] (the content is compared field by field, the secrets in
/// constant time). Secrets never leave it except through [`CredentialVault::resolve`]; its
/// `Debug` shows only how many credentials it holds. Revocation is remembered for ever; expiry
/// follows [`crate::ports::CredentialDisplay::expired_at`].
///
/// Nothing survives the value: use the SQLite or PostgreSQL vault for credentials that must
/// outlive the process.
#[derive(Default)]
pub struct MemoryVault {
    state: Mutex<VaultState>,
}

#[derive(Default)]
struct VaultState {
    credentials: BTreeMap<CredentialRef, Entry>,
    keys: HashMap<(ActorId, IdempotencyKey), CredentialRef>,
}

struct Entry {
    stored: StoredCredential,
    secret: Secret,
    cvc: Option<Secret>,
    revoked: bool,
}

impl Entry {
    fn status(&self, now: DateTime<Utc>) -> CredentialStatus {
        status_of(self.revoked, &self.stored.display, now)
    }

    /// Whether `c` is the content this entry was stored with.
    fn same_content(&self, c: &NewCredential) -> bool {
        let s = &self.stored;
        // Evaluate every comparison (no early exit on the secrets).
        let secrets = (self.secret == c.secret) & (self.cvc == c.cvc);
        secrets
            && s.kind == c.kind
            && s.owner == c.owner
            && s.buyer_id == c.buyer_id
            && s.display == c.display
    }
}

impl MemoryVault {
    /// An empty vault.
    pub fn new() -> MemoryVault {
        MemoryVault::default()
    }

    fn lock(&self) -> MutexGuard<'_, VaultState> {
        // Every change is a single insert or flag write: a poisoned lock is still consistent.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl fmt::Debug for MemoryVault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryVault")
            .field("credentials", &self.lock().credentials.len())
            .finish()
    }
}

#[async_trait]
impl CredentialVault for MemoryVault {
    async fn store(
        &self,
        key: &IdempotencyKey,
        credential: NewCredential,
    ) -> Result<StoreOutcome, VaultError> {
        credential.validate()?;
        let mut state = self.lock();
        let scope = (credential.owner.clone(), key.clone());
        if let Some(reference) = state.keys.get(&scope) {
            let entry = state
                .credentials
                .get(reference)
                .ok_or_else(|| not_found(reference))?;
            return if entry.same_content(&credential) {
                Ok(StoreOutcome {
                    credential: entry.stored.clone(),
                    replay: true,
                })
            } else {
                Err(VaultError::IdempotencyConflict {
                    owner: credential.owner,
                    key: key.clone(),
                })
            };
        }
        let mut reference = None;
        for _ in 0..REFERENCE_TRIES {
            let fresh = new_reference()?;
            if !state.credentials.contains_key(&fresh) {
                reference = Some(fresh);
                break;
            }
        }
        let reference = reference.ok_or_else(no_fresh_reference)?;
        let stored = StoredCredential {
            reference: reference.clone(),
            kind: credential.kind,
            owner: credential.owner,
            buyer_id: credential.buyer_id,
            display: credential.display,
        };
        state.keys.insert(scope, reference.clone());
        state.credentials.insert(
            reference,
            Entry {
                stored: stored.clone(),
                secret: credential.secret,
                cvc: credential.cvc,
                revoked: false,
            },
        );
        Ok(StoreOutcome {
            credential: stored,
            replay: false,
        })
    }

    async fn describe(&self, reference: &CredentialRef) -> Result<StoredCredential, VaultError> {
        self.lock()
            .credentials
            .get(reference)
            .map(|e| e.stored.clone())
            .ok_or_else(|| not_found(reference))
    }

    async fn resolve(
        &self,
        reference: &CredentialRef,
        now: DateTime<Utc>,
    ) -> Result<ResolvedCredential, VaultError> {
        let state = self.lock();
        let entry = state
            .credentials
            .get(reference)
            .ok_or_else(|| not_found(reference))?;
        usable(reference, entry.status(now))?;
        Ok(ResolvedCredential {
            stored: entry.stored.clone(),
            secret: entry.secret.clone(),
            cvc: entry.cvc.clone(),
        })
    }

    async fn status(
        &self,
        reference: &CredentialRef,
        now: DateTime<Utc>,
    ) -> Result<CredentialStatus, VaultError> {
        self.lock()
            .credentials
            .get(reference)
            .map(|e| e.status(now))
            .ok_or_else(|| not_found(reference))
    }

    async fn describe_and_status(
        &self,
        reference: &CredentialRef,
        now: DateTime<Utc>,
    ) -> Result<(StoredCredential, CredentialStatus), VaultError> {
        self.lock()
            .credentials
            .get(reference)
            .map(|e| (e.stored.clone(), e.status(now)))
            .ok_or_else(|| not_found(reference))
    }

    /// Returns `true` when this call revoked the credential, `false` when it was already
    /// revoked (the port takes no time, so expiry is not considered).
    async fn revoke(&self, reference: &CredentialRef) -> Result<bool, VaultError> {
        let mut state = self.lock();
        let entry = state
            .credentials
            .get_mut(reference)
            .ok_or_else(|| not_found(reference))?;
        let was_live = !entry.revoked;
        entry.revoked = true;
        Ok(was_live)
    }

    async fn revoke_owner(&self, owner: &ActorId) -> Result<u32, VaultError> {
        let mut state = self.lock();
        let mut count = 0u32;
        for entry in state.credentials.values_mut() {
            if &entry.stored.owner == owner && !entry.revoked {
                entry.revoked = true;
                count = count.saturating_add(1);
            }
        }
        Ok(count)
    }
}
