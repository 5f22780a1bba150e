//! The credential vault in memory.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::domain::{ActorId, CredentialRef, CredentialStatus};
use crate::ports::{
    CredentialVault, NewCredential, ResolvedCredential, Secret, StoredCredential, VaultError,
};

/// A [`CredentialVault`] in memory.
///
/// References are opaque and deterministic: `cred_1`, `cred_2`, ... in order of storing, per
/// vault. Secrets never leave it except through [`CredentialVault::resolve`]; its `Debug`
/// shows only how many credentials it holds. Revocation is remembered for ever; expiry
/// follows [`crate::ports::CredentialDisplay::expired_at`].
#[derive(Default)]
pub struct MemoryVault {
    state: Mutex<VaultState>,
}

#[derive(Default)]
struct VaultState {
    next: u64,
    credentials: BTreeMap<CredentialRef, Entry>,
}

struct Entry {
    stored: StoredCredential,
    secret: Secret,
    cvc: Option<Secret>,
    revoked: bool,
}

impl Entry {
    fn status(&self, now: DateTime<Utc>) -> CredentialStatus {
        if self.revoked {
            CredentialStatus::Revoked
        } else if self.stored.display.expired_at(now) {
            CredentialStatus::Expired
        } else {
            CredentialStatus::Usable
        }
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

/// The `VaultError::Invalid` field name for a bad display field.
fn display_field(field: &'static str) -> &'static str {
    match field {
        "brand" => "display.brand",
        "last4" => "display.last4",
        "exp_month" => "display.exp_month",
        "exp_year" => "display.exp_year",
        _ => "display",
    }
}

fn not_found(reference: &CredentialRef) -> VaultError {
    VaultError::NotFound {
        reference: reference.clone(),
    }
}

#[async_trait]
impl CredentialVault for MemoryVault {
    async fn store(&self, credential: NewCredential) -> Result<StoredCredential, VaultError> {
        credential
            .display
            .validate()
            .map_err(|field| VaultError::Invalid {
                field: display_field(field),
            })?;
        if credential.secret.is_empty() {
            return Err(VaultError::Invalid { field: "secret" });
        }
        if credential.cvc.as_ref().is_some_and(Secret::is_empty) {
            return Err(VaultError::Invalid { field: "cvc" });
        }
        let mut state = self.lock();
        state.next = state.next.saturating_add(1);
        let reference = CredentialRef::new(format!("cred_{}", state.next))
            .map_err(|e| VaultError::Other(Box::new(e)))?;
        let stored = StoredCredential {
            reference: reference.clone(),
            kind: credential.kind,
            owner: credential.owner,
            buyer_id: credential.buyer_id,
            display: credential.display,
        };
        state.credentials.insert(
            reference,
            Entry {
                stored: stored.clone(),
                secret: credential.secret,
                cvc: credential.cvc,
                revoked: false,
            },
        );
        Ok(stored)
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
        match entry.status(now) {
            CredentialStatus::Usable => Ok(ResolvedCredential {
                stored: entry.stored.clone(),
                secret: entry.secret.clone(),
                cvc: entry.cvc.clone(),
            }),
            status @ (CredentialStatus::Revoked
            | CredentialStatus::Expired
            | CredentialStatus::Suspended) => Err(VaultError::NotUsable {
                reference: reference.clone(),
                status,
            }),
        }
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
