//! The credential vault port, and the redacting secret type.

use std::fmt;

use async_trait::async_trait;
use chrono::{DateTime, Datelike, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::{ActorId, BuyerId, CredentialRef, CredentialStatus, IdempotencyKey};

/// A secret value (token, PAN, CVC, API key). It never shows itself: `Debug` and `Display`
/// print `[REDACTED]`, it has no `Serialize`, and it is compared in constant time. Only
/// [`Secret::expose`] gives the value, for the one place that must send it (a PSP adapter).
///
/// ```
/// use agent_mandate::ports::Secret;
/// let s = Secret::new("4242424242424242");
/// assert_eq!(format!("{s:?} {s}"), "Secret([REDACTED]) [REDACTED]");
/// assert_eq!(s.expose(), "4242424242424242");
/// ```
#[derive(Clone)]
pub struct Secret(Box<str>);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into().into_boxed_str())
    }

    /// The value. Call it only where the secret must leave the process (a PSP request).
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Length in bytes (safe to show).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl PartialEq for Secret {
    /// Constant time in the contents (`subtle`); the lengths are not secret.
    fn eq(&self, other: &Secret) -> bool {
        bool::from(subtle::ConstantTimeEq::ct_eq(
            self.0.as_bytes(),
            other.0.as_bytes(),
        ))
    }
}

impl Eq for Secret {}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([REDACTED])")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[REDACTED]")
    }
}

impl Drop for Secret {
    /// Overwrites the bytes before the allocation is freed (`zeroize`: volatile writes the
    /// compiler cannot remove). Copies made by the caller of [`Secret::expose`] are theirs.
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.0);
    }
}

impl zeroize::ZeroizeOnDrop for Secret {}

/// What kind of credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum CredentialKind {
    /// A network token (Visa, Mastercard tokenization).
    NetworkToken,
    /// A shared payment token (ACP, Stripe SPT).
    SharedPaymentToken,
    /// A single-use or limited virtual card.
    VirtualCard,
    /// A PSP payment method id (`pm_...`): what a Stripe-compatible PSP expects.
    PaymentMethod,
    /// A card number (a funding PAN) with its expiry: what the Agentic Commerce Protocol's
    /// delegate payment stores for `card_number_type: fpan`.
    Card,
}

/// Funding type of the underlying account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum FundingType {
    /// Credit.
    Credit,
    /// Debit.
    Debit,
    /// Prepaid.
    Prepaid,
    /// Not known.
    Unknown,
}

/// What may be shown about a credential: never the secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct CredentialDisplay {
    /// Brand or network (`visa`).
    pub brand: String,
    /// Last four digits.
    pub last4: String,
    /// Expiry month, 1 to 12.
    pub exp_month: u8,
    /// Expiry year (four digits).
    pub exp_year: u16,
    /// Funding type.
    pub funding: FundingType,
}

impl CredentialDisplay {
    /// Validates: a brand of 1 to 32 ASCII letters, digits, `_` or `-`; `last4` exactly four
    /// ASCII digits; month 1 to 12; year 2000 to 2199. Returns the name of the bad field.
    pub fn validate(&self) -> Result<(), &'static str> {
        let brand_ok = !self.brand.is_empty()
            && self.brand.len() <= 32
            && self
                .brand
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !brand_ok {
            return Err("brand");
        }
        if self.last4.len() != 4 || !self.last4.bytes().all(|b| b.is_ascii_digit()) {
            return Err("last4");
        }
        if !(1..=12).contains(&self.exp_month) {
            return Err("exp_month");
        }
        if !(2000..=2199).contains(&self.exp_year) {
            return Err("exp_year");
        }
        Ok(())
    }

    /// Whether the credential has expired at `now` (it is valid through the end of its
    /// expiry month, UTC).
    pub fn expired_at(&self, now: DateTime<Utc>) -> bool {
        let (y, m) = (now.year(), now.month());
        (y, m) > (i32::from(self.exp_year), u32::from(self.exp_month))
    }
}

/// A credential to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewCredential {
    /// Its kind.
    pub kind: CredentialKind,
    /// The actor allowed to present it.
    pub owner: ActorId,
    /// The buyer whose instrument it is.
    pub buyer_id: BuyerId,
    /// The token value, PAN or payment method id.
    pub secret: Secret,
    /// A CVC or cryptogram, if any.
    pub cvc: Option<Secret>,
    /// What may be shown.
    pub display: CredentialDisplay,
}

impl NewCredential {
    /// Validates what a vault checks before storing (I11): every display field (see
    /// [`CredentialDisplay::validate`]), a non-empty secret, and a CVC that is absent or not
    /// empty. The error names the field (`display.last4`, `secret`, `cvc`).
    pub fn validate(&self) -> Result<(), VaultError> {
        self.display
            .validate()
            .map_err(|field| VaultError::Invalid {
                field: match field {
                    "brand" => "display.brand",
                    "last4" => "display.last4",
                    "exp_month" => "display.exp_month",
                    "exp_year" => "display.exp_year",
                    _ => "display",
                },
            })?;
        if self.secret.is_empty() {
            return Err(VaultError::Invalid { field: "secret" });
        }
        if self.cvc.as_ref().is_some_and(Secret::is_empty) {
            return Err(VaultError::Invalid { field: "cvc" });
        }
        Ok(())
    }
}

/// A stored credential: the reference and what may be shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
pub struct StoredCredential {
    /// The opaque reference.
    pub reference: CredentialRef,
    /// Its kind.
    pub kind: CredentialKind,
    /// The actor allowed to present it.
    pub owner: ActorId,
    /// The buyer.
    pub buyer_id: BuyerId,
    /// What may be shown.
    pub display: CredentialDisplay,
}

/// What [`CredentialVault::store`] answers: the stored credential, and whether the idempotency
/// key had already stored it (a replay: nothing new was stored).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
pub struct StoreOutcome {
    /// The credential the key stored (the first time, or now).
    pub credential: StoredCredential,
    /// Whether the key had stored it before this call.
    pub replay: bool,
}

/// A credential resolved for a PSP call. Its secrets redact themselves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedCredential {
    /// The public part.
    pub stored: StoredCredential,
    /// The token value, PAN or payment method id.
    pub secret: Secret,
    /// A CVC or cryptogram, if any.
    pub cvc: Option<Secret>,
}

/// A vault failure. Never carries a secret.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VaultError {
    /// No credential has this reference. Not retryable.
    #[error("no credential {reference}")]
    NotFound {
        /// The reference.
        reference: CredentialRef,
    },
    /// The credential exists but cannot be used now. Not retryable.
    #[error("credential {reference} is not usable: {status:?}")]
    NotUsable {
        /// The reference.
        reference: CredentialRef,
        /// Why.
        status: CredentialStatus,
    },
    /// The credential to store is malformed (names the field). Nothing was stored.
    #[error("invalid credential: {field}")]
    Invalid {
        /// The field (`display.last4`, `secret`).
        field: &'static str,
    },
    /// The idempotency key was used by this owner to store a different credential (another
    /// secret, CVC, kind, buyer or display). Nothing was stored; not retryable (use a new key
    /// for a new credential). ACP answers 422.
    #[error("idempotency key {key} of {owner} was used to store a different credential")]
    IdempotencyConflict {
        /// The owner the key is scoped to.
        owner: ActorId,
        /// The key.
        key: IdempotencyKey,
    },
    /// A stored credential was sealed under a key the vault's keyring does not hold (a key
    /// retired too early, or the wrong keyring). Not retryable until the key is added back.
    #[error("no key {key_id} in the vault's keyring (for {reference})")]
    KeyUnavailable {
        /// The id of the missing key (never the key).
        key_id: String,
        /// The credential that needs it.
        reference: CredentialRef,
    },
    /// A stored credential fails authentication: the key with its id is not the key that
    /// sealed it, or the row was altered or moved to another reference or owner. Nothing is
    /// returned from it. Not retryable.
    #[error("credential {reference} fails authentication: wrong key or altered record")]
    Integrity {
        /// The credential.
        reference: CredentialRef,
    },
    /// A stored record cannot be read back (a column that is not what the vault writes). Not
    /// retryable.
    #[error("credential {reference} is unreadable: {message}")]
    Corrupt {
        /// The credential.
        reference: CredentialRef,
        /// What is wrong (never a secret).
        message: String,
    },
    /// The vault cannot be reached now; retry later.
    #[error("vault unavailable: {message}")]
    Unavailable {
        /// Why.
        message: String,
    },
    /// Anything else an adapter reports.
    #[error("vault error: {0}")]
    Other(Box<dyn std::error::Error + Send + Sync>),
}

/// Keeps payment credentials and hands out opaque references.
///
/// Contract (checked by `testkit::credential_vault_conformance`): `store` validates and
/// returns a fresh, unguessable reference that was never handed out before (not even by an
/// earlier run of the vault on the same storage); `store` is idempotent per (owner, key): the
/// same key with the same content answers the credential it stored (`replay: true`, whatever
/// its status now), the same key with other content is [`VaultError::IdempotencyConflict`],
/// and a refused (invalid) credential does not use the key; `status` is `Usable` until the credential is revoked (alone or
/// with every credential of its owner) or its expiry month has passed; `resolve` returns the
/// secret only for a usable credential; revocation is permanent and idempotent.
#[async_trait]
pub trait CredentialVault: Send + Sync + fmt::Debug {
    /// Stores a credential under an idempotency key scoped to `credential.owner`.
    async fn store(
        &self,
        key: &IdempotencyKey,
        credential: NewCredential,
    ) -> Result<StoreOutcome, VaultError>;

    /// The public part of a credential.
    async fn describe(&self, reference: &CredentialRef) -> Result<StoredCredential, VaultError>;

    /// The secret, for a PSP adapter; refuses an unusable credential.
    async fn resolve(
        &self,
        reference: &CredentialRef,
        now: DateTime<Utc>,
    ) -> Result<ResolvedCredential, VaultError>;

    /// Whether the credential can be used at `now`.
    async fn status(
        &self,
        reference: &CredentialRef,
        now: DateTime<Utc>,
    ) -> Result<CredentialStatus, VaultError>;

    /// The public part of a credential and whether it can be used at `now`: what
    /// [`CredentialVault::describe`] and [`CredentialVault::status`] answer, in one read (the
    /// engine asks both before every decision). Provided as the two calls; a vault on a
    /// database overrides it with one query.
    async fn describe_and_status(
        &self,
        reference: &CredentialRef,
        now: DateTime<Utc>,
    ) -> Result<(StoredCredential, CredentialStatus), VaultError> {
        let stored = self.describe(reference).await?;
        let status = self.status(reference, now).await?;
        Ok((stored, status))
    }

    /// Revokes one credential; returns whether it was usable before.
    async fn revoke(&self, reference: &CredentialRef) -> Result<bool, VaultError>;

    /// Revokes every credential `owner` holds; returns how many were revoked now.
    async fn revoke_owner(&self, owner: &ActorId) -> Result<u32, VaultError>;
}

#[cfg(test)]
mod tests {
    use super::Secret;

    /// Equality compares every byte (constant time through `subtle`): a difference in the
    /// first or the last byte, or in the length, makes two secrets unequal.
    #[test]
    fn secrets_equal_only_byte_for_byte() {
        let s = Secret::new("sk_test_0123456789");
        assert_eq!(s, Secret::new("sk_test_0123456789"));
        for other in [
            "xk_test_0123456789",
            "sk_test_012345678x",
            "sk_test_012345678",
            "sk_test_01234567890",
            "",
        ] {
            assert_ne!(s, Secret::new(other), "{other}");
        }
        assert_eq!(Secret::new(""), Secret::new(""));
    }

    /// The secret is wiped on drop by `zeroize` (the marker trait says so to generic code).
    #[test]
    fn secrets_are_zeroized_on_drop() {
        fn wiped_on_drop<T: zeroize::ZeroizeOnDrop>() {}
        wiped_on_drop::<Secret>();
        let mut s = Secret::new("4242424242424242");
        zeroize::Zeroize::zeroize(&mut s.0);
        assert!(
            s.expose().bytes().all(|b| b == 0),
            "the bytes are overwritten in place"
        );
        assert_eq!(s.len(), 16);
    }
}
