//! The engine's error type: one enum for the boundary, with a retry classification.

use std::time::Duration;

use crate::domain::{
    AttemptError, AttemptStatus, DelegationError, IdempotencyKey, LifecycleError, ValidationError,
};
use crate::ports::{AuditError, HoldError, ProviderError, StoreError, VaultError};

/// Why a command did not complete. A refused *decision* is not an error: it is an `Ok`
/// outcome carrying the decision. Errors are for what prevented a safe answer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// The key was used before for a command with different content: nothing was executed
    /// (ACP answers 422). Use a new key for a new command.
    #[error("idempotency key {key} was used for a different {operation} command")]
    IdempotencyConflict {
        /// The key.
        key: IdempotencyKey,
        /// The operation.
        operation: &'static str,
    },
    /// The same key is being executed right now (ACP answers 409). Retry after the hint.
    #[error("idempotency key {key} is in flight; retry after {retry_after:?}")]
    IdempotencyInFlight {
        /// The key.
        key: IdempotencyKey,
        /// When to retry.
        retry_after: Duration,
    },
    /// The command ran so long that a PSP call could outlive its idempotency lease (or start
    /// after its submission could be taken as lost), so nothing was sent to the PSP (I13).
    /// Whatever the command stored stays (an attempt keeps its hold); retry with the same key:
    /// it resumes the attempt.
    #[error("idempotency key {key}: too late in the lease for a PSP call; nothing was sent")]
    LeaseExpired {
        /// The key.
        key: IdempotencyKey,
    },
    /// Bad input, named by field (I11). Nothing was persisted.
    #[error("invalid {field}: {message}")]
    Invalid {
        /// The field.
        field: String,
        /// What is wrong.
        message: String,
    },
    /// The command refers to something that does not exist.
    #[error("no {entity} {id}")]
    NotFound {
        /// `mandate`, `attempt`, `snapshot`...
        entity: &'static str,
        /// Its id.
        id: String,
    },
    /// The principal may not issue this command (the permission tables are on each engine
    /// method and in the README). Nothing was decided, held, sent or recorded.
    #[error("not permitted: {reason}")]
    NotPermitted {
        /// Why.
        reason: String,
    },
    /// The attempt is not in a state that allows the command; nothing was sent to the PSP.
    #[error(transparent)]
    Transition(#[from] AttemptError),
    /// An order cannot be committed from the attempt's state; nothing changed.
    #[error("no order can be committed while the attempt is {status}")]
    OrderNotAllowed {
        /// The attempt's state.
        status: AttemptStatus,
    },
    /// A mandate lifecycle change is not legal.
    #[error(transparent)]
    Lifecycle(#[from] LifecycleError),
    /// A derived mandate would widen its parent (I6).
    #[error(transparent)]
    Delegation(#[from] DelegationError),
    /// The PSP failed; see [`ProviderError`] for whether to retry.
    #[error(transparent)]
    Provider(#[from] ProviderError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The audit sink failed.
    #[error(transparent)]
    Audit(#[from] AuditError),
    /// The vault failed.
    #[error(transparent)]
    Vault(#[from] VaultError),
}

impl EngineError {
    /// Whether the same command, with the same key, may be sent again.
    pub fn is_retryable(&self) -> bool {
        match self {
            EngineError::IdempotencyInFlight { .. } | EngineError::LeaseExpired { .. } => true,
            EngineError::Provider(e) => e.is_retryable(),
            EngineError::Store(e) => e.is_retryable(),
            EngineError::Audit(AuditError::Unavailable { .. }) => true,
            EngineError::Vault(VaultError::Unavailable { .. }) => true,
            _ => false,
        }
    }

    pub(crate) fn invalid(field: &str, e: &ValidationError) -> EngineError {
        EngineError::Invalid {
            field: if e.field().is_empty() {
                field.to_owned()
            } else {
                format!("{field}.{}", e.field())
            },
            message: e.kind().to_string(),
        }
    }
}

impl From<HoldError> for EngineError {
    fn from(e: HoldError) -> Self {
        match e {
            HoldError::Store(s) => EngineError::Store(s),
            other => EngineError::Store(StoreError::Other(Box::new(other))),
        }
    }
}
