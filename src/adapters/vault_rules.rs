//! What every vault adapter shares: random references, the status rule, the refusals, and the
//! text form of the enums the durable vaults keep in columns.

use chrono::{DateTime, Utc};

use crate::domain::{CredentialRef, CredentialStatus};
use crate::ports::{CredentialDisplay, VaultError};

/// Bytes from the operating system's random number generator.
pub(crate) fn random<const N: usize>() -> Result<[u8; N], VaultError> {
    let mut out = [0u8; N];
    getrandom::fill(&mut out).map_err(|e| VaultError::Unavailable {
        message: format!("the operating system's random number generator failed: {e}"),
    })?;
    Ok(out)
}

/// A new reference: `cred_` and 128 random bits as 32 lower-case hex digits. It says nothing
/// about the credential, its owner or how many came before; the caller still checks it
/// against the references it holds (a collision is not expected in the life of the universe,
/// but a reference must never be handed out twice).
pub(crate) fn new_reference() -> Result<CredentialRef, VaultError> {
    let bits = random::<16>()?;
    CredentialRef::new(format!("cred_{}", hex::encode(bits)))
        .map_err(|e| VaultError::Other(e.into()))
}

/// How many fresh references a store tries before it gives up (each collides with
/// probability 2^-128 times the number of stored credentials).
pub(crate) const REFERENCE_TRIES: u32 = 4;

/// The error when every try collided (only a broken random number generator gets here).
pub(crate) fn no_fresh_reference() -> VaultError {
    VaultError::Other(
        "every freshly drawn credential reference was already taken: the random number \
         generator is broken"
            .into(),
    )
}

/// The status of a credential: revoked, else expired after its expiry month, else usable.
pub(crate) fn status_of(
    revoked: bool,
    display: &CredentialDisplay,
    now: DateTime<Utc>,
) -> CredentialStatus {
    if revoked {
        CredentialStatus::Revoked
    } else if display.expired_at(now) {
        CredentialStatus::Expired
    } else {
        CredentialStatus::Usable
    }
}

/// `Ok` for a usable credential, `NotUsable` naming the status otherwise.
pub(crate) fn usable(
    reference: &CredentialRef,
    status: CredentialStatus,
) -> Result<(), VaultError> {
    match status {
        CredentialStatus::Usable => Ok(()),
        status @ (CredentialStatus::Revoked
        | CredentialStatus::Expired
        | CredentialStatus::Suspended) => Err(VaultError::NotUsable {
            reference: reference.clone(),
            status,
        }),
    }
}

pub(crate) fn not_found(reference: &CredentialRef) -> VaultError {
    VaultError::NotFound {
        reference: reference.clone(),
    }
}

#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) use columns::*;

/// The text the durable vaults keep for the enums (their serde names), and back.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod columns {
    use crate::domain::CredentialRef;
    use crate::ports::{CredentialKind, FundingType, StoreError, VaultError};

    pub(crate) fn kind_text(kind: CredentialKind) -> &'static str {
        match kind {
            CredentialKind::NetworkToken => "network_token",
            CredentialKind::SharedPaymentToken => "shared_payment_token",
            CredentialKind::VirtualCard => "virtual_card",
            CredentialKind::PaymentMethod => "payment_method",
            CredentialKind::Card => "card",
        }
    }

    pub(crate) fn kind_of(
        reference: &CredentialRef,
        text: &str,
    ) -> Result<CredentialKind, VaultError> {
        [
            CredentialKind::NetworkToken,
            CredentialKind::SharedPaymentToken,
            CredentialKind::VirtualCard,
            CredentialKind::PaymentMethod,
            CredentialKind::Card,
        ]
        .into_iter()
        .find(|k| kind_text(*k) == text)
        .ok_or_else(|| corrupt(reference, format!("unknown kind {text:?}")))
    }

    pub(crate) fn funding_text(funding: FundingType) -> &'static str {
        match funding {
            FundingType::Credit => "credit",
            FundingType::Debit => "debit",
            FundingType::Prepaid => "prepaid",
            FundingType::Unknown => "unknown",
        }
    }

    pub(crate) fn funding_of(
        reference: &CredentialRef,
        text: &str,
    ) -> Result<FundingType, VaultError> {
        [
            FundingType::Credit,
            FundingType::Debit,
            FundingType::Prepaid,
            FundingType::Unknown,
        ]
        .into_iter()
        .find(|f| funding_text(*f) == text)
        .ok_or_else(|| corrupt(reference, format!("unknown funding {text:?}")))
    }

    pub(crate) fn corrupt(reference: &CredentialRef, message: impl Into<String>) -> VaultError {
        VaultError::Corrupt {
            reference: reference.clone(),
            message: message.into(),
        }
    }

    /// A failure of the database, as the vault port reports it (the [`StoreError`] is kept as
    /// the source of `Other`).
    pub(crate) fn from_store(e: StoreError) -> VaultError {
        match e {
            StoreError::Unavailable { message } => VaultError::Unavailable { message },
            other => VaultError::Other(Box::new(other)),
        }
    }
}
