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

/// The high-level category of an error, as the Agentic Commerce Protocol's error `type` names
/// them (plus the two it leaves to the host: `unauthorized` and `not_found`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorType {
    /// The request cannot succeed as sent (bad input, a conflict, a refused permission or
    /// transition). `invalid_request`.
    InvalidRequest,
    /// The principal may not issue the command. `unauthorized` (HTTP 403: authenticated, but not
    /// allowed).
    Unauthorized,
    /// Something the command names does not exist. `not_found`.
    NotFound,
    /// The server could not finish: a PSP answer that is unknown, a corrupt record.
    /// `processing_error`.
    ProcessingError,
    /// A dependency is down for now; retry. `service_unavailable`.
    ServiceUnavailable,
}

impl ErrorType {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorType::InvalidRequest => "invalid_request",
            ErrorType::Unauthorized => "unauthorized",
            ErrorType::NotFound => "not_found",
            ErrorType::ProcessingError => "processing_error",
            ErrorType::ServiceUnavailable => "service_unavailable",
        }
    }
}

impl EngineError {
    /// The stable `SCREAMING_SNAKE` code of this error, for clients to branch on (lowercase in
    /// HTTP bodies, where `IDEMPOTENCY_CONFLICT` and `IDEMPOTENCY_IN_FLIGHT` are the Agentic
    /// Commerce Protocol's codes). The table, with [`EngineError::http_status`]:
    ///
    /// | code | status | type | retry |
    /// |---|---|---|---|
    /// | `IDEMPOTENCY_CONFLICT` | 422 | `invalid_request` | no: use a new key |
    /// | `IDEMPOTENCY_IN_FLIGHT` | 409 + `Retry-After` | `invalid_request` | yes, after the hint |
    /// | `LEASE_EXPIRED` | 503 + `Retry-After: 1` | `service_unavailable` | yes, same key |
    /// | `INVALID_INPUT` | 400 | `invalid_request` | no (the field is in `param`) |
    /// | `NOT_FOUND` | 404 | `not_found` | no |
    /// | `NOT_PERMITTED` | 403 | `unauthorized` | no |
    /// | `TRANSITION_NOT_ALLOWED` | 409 | `invalid_request` | no |
    /// | `ORDER_NOT_ALLOWED` | 409 | `invalid_request` | no |
    /// | `LIFECYCLE_NOT_ALLOWED` | 409 | `invalid_request` | no |
    /// | `DELEGATION_WIDENS` | 422 | `invalid_request` | no |
    /// | `PSP_INVALID` | 402 | `invalid_request` | no |
    /// | `PSP_UNAVAILABLE` | 503 + `Retry-After` | `service_unavailable` | yes, same key |
    /// | `PSP_OUTCOME_UNKNOWN` | 502 | `processing_error` | no: the attempt is reconciled |
    /// | `STORE_CONFLICT` | 409 | `invalid_request` | no |
    /// | `STORE_UNAVAILABLE` | 503 | `service_unavailable` | yes, same key |
    /// | `STORE_ERROR` | 500 | `processing_error` | no |
    /// | `AUDIT_UNAVAILABLE` | 503 | `service_unavailable` | yes, same key |
    /// | `AUDIT_ERROR` | 500 | `processing_error` | no |
    /// | `CREDENTIAL_NOT_USABLE` | 422 | `invalid_request` | no |
    /// | `VAULT_UNAVAILABLE` | 503 | `service_unavailable` | yes, same key |
    /// | `VAULT_ERROR` | 500 | `processing_error` | no |
    ///
    /// A refused decision is not an error: see
    /// [`AuthorityDecision::http_status`](crate::domain::AuthorityDecision::http_status).
    pub fn code(&self) -> &'static str {
        match self {
            EngineError::IdempotencyConflict { .. } => "IDEMPOTENCY_CONFLICT",
            EngineError::IdempotencyInFlight { .. } => "IDEMPOTENCY_IN_FLIGHT",
            EngineError::LeaseExpired { .. } => "LEASE_EXPIRED",
            EngineError::Invalid { .. } => "INVALID_INPUT",
            EngineError::NotFound { .. } => "NOT_FOUND",
            EngineError::NotPermitted { .. } => "NOT_PERMITTED",
            EngineError::Transition(_) => "TRANSITION_NOT_ALLOWED",
            EngineError::OrderNotAllowed { .. } => "ORDER_NOT_ALLOWED",
            EngineError::Lifecycle(_) => "LIFECYCLE_NOT_ALLOWED",
            EngineError::Delegation(_) => "DELEGATION_WIDENS",
            EngineError::Provider(ProviderError::Invalid { .. }) => "PSP_INVALID",
            EngineError::Provider(ProviderError::Transient { .. }) => "PSP_UNAVAILABLE",
            EngineError::Provider(_) => "PSP_OUTCOME_UNKNOWN",
            EngineError::Store(StoreError::Conflict { .. }) => "STORE_CONFLICT",
            EngineError::Store(StoreError::Unavailable { .. }) => "STORE_UNAVAILABLE",
            EngineError::Store(_) => "STORE_ERROR",
            EngineError::Audit(AuditError::Unavailable { .. }) => "AUDIT_UNAVAILABLE",
            EngineError::Audit(_) => "AUDIT_ERROR",
            EngineError::Vault(
                VaultError::NotFound { .. }
                | VaultError::NotUsable { .. }
                | VaultError::Invalid { .. },
            ) => "CREDENTIAL_NOT_USABLE",
            EngineError::Vault(VaultError::IdempotencyConflict { .. }) => "IDEMPOTENCY_CONFLICT",
            EngineError::Vault(VaultError::Unavailable { .. }) => "VAULT_UNAVAILABLE",
            EngineError::Vault(_) => "VAULT_ERROR",
        }
    }

    /// The HTTP status a service should answer with (the table is on [`EngineError::code`]).
    pub fn http_status(&self) -> u16 {
        status_for(self.code())
    }

    /// The category (the `type` of an error body).
    pub fn error_type(&self) -> ErrorType {
        type_for(self.http_status())
    }

    /// The offending field of an `INVALID_INPUT` error (the `param` of an error body).
    pub fn param(&self) -> Option<&str> {
        match self {
            EngineError::Invalid { field, .. } => Some(field),
            EngineError::Vault(VaultError::Invalid { field }) => Some(field),
            _ => None,
        }
    }

    /// When to retry, for the errors worth retrying with the same key: the in-flight hint, the
    /// PSP's own hint, one second otherwise. `None`: do not retry this command.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            EngineError::IdempotencyInFlight { retry_after, .. } => Some(*retry_after),
            EngineError::Provider(ProviderError::Transient { retry_after, .. }) => {
                Some(retry_after.unwrap_or(Duration::from_secs(1)))
            }
            e if e.is_retryable() => Some(Duration::from_secs(1)),
            _ => None,
        }
    }

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

/// The status of an error code (the table on [`EngineError::code`]).
fn status_for(code: &str) -> u16 {
    match code {
        "IDEMPOTENCY_CONFLICT" | "DELEGATION_WIDENS" | "CREDENTIAL_NOT_USABLE" => 422,
        "IDEMPOTENCY_IN_FLIGHT"
        | "TRANSITION_NOT_ALLOWED"
        | "ORDER_NOT_ALLOWED"
        | "LIFECYCLE_NOT_ALLOWED"
        | "STORE_CONFLICT" => 409,
        "INVALID_INPUT" => 400,
        "NOT_FOUND" => 404,
        "NOT_PERMITTED" => 403,
        "PSP_INVALID" => 402,
        "PSP_OUTCOME_UNKNOWN" => 502,
        "LEASE_EXPIRED" | "PSP_UNAVAILABLE" | "STORE_UNAVAILABLE" | "AUDIT_UNAVAILABLE"
        | "VAULT_UNAVAILABLE" => 503,
        _ => 500,
    }
}

/// The category of a status.
fn type_for(status: u16) -> ErrorType {
    match status {
        403 => ErrorType::Unauthorized,
        404 => ErrorType::NotFound,
        503 => ErrorType::ServiceUnavailable,
        500 | 502 => ErrorType::ProcessingError,
        _ => ErrorType::InvalidRequest,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The documented table (on `EngineError::code`) is the one the code answers with.
    #[test]
    fn the_documented_table_is_the_one_answered() {
        let source = include_str!("error.rs");
        let mut rows = 0;
        for line in source.lines() {
            let Some(row) = line.trim().strip_prefix("/// | `") else {
                continue;
            };
            let cells: Vec<&str> = row.split('|').map(str::trim).collect();
            let code = cells[0].trim_end_matches('`');
            let status: u16 = cells[1]
                .split_whitespace()
                .next()
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| panic!("status of {code}"));
            assert_eq!(status_for(code), status, "{code}");
            assert_eq!(
                format!("`{}`", type_for(status).as_str()),
                cells[2],
                "{code}"
            );
            assert!(
                code.chars().all(|c| c.is_ascii_uppercase() || c == '_'),
                "{code} is SCREAMING_SNAKE"
            );
            rows += 1;
        }
        assert_eq!(rows, 21, "every code has its row");
    }

    #[test]
    fn errors_map_to_their_codes_and_retry_hints() {
        let key: IdempotencyKey = "k".parse().expect("key");
        let cases: Vec<(EngineError, &str, Option<Duration>)> = vec![
            (
                EngineError::IdempotencyConflict {
                    key: key.clone(),
                    operation: "execute_payment",
                },
                "IDEMPOTENCY_CONFLICT",
                None,
            ),
            (
                EngineError::IdempotencyInFlight {
                    key: key.clone(),
                    retry_after: Duration::from_millis(1500),
                },
                "IDEMPOTENCY_IN_FLIGHT",
                Some(Duration::from_millis(1500)),
            ),
            (
                EngineError::LeaseExpired { key },
                "LEASE_EXPIRED",
                Some(Duration::from_secs(1)),
            ),
            (
                EngineError::Invalid {
                    field: "request.amount".into(),
                    message: "too many decimals".into(),
                },
                "INVALID_INPUT",
                None,
            ),
            (
                EngineError::NotPermitted {
                    reason: "no".into(),
                },
                "NOT_PERMITTED",
                None,
            ),
            (
                EngineError::Provider(ProviderError::Transient {
                    message: "429".into(),
                    retry_after: Some(Duration::from_secs(7)),
                }),
                "PSP_UNAVAILABLE",
                Some(Duration::from_secs(7)),
            ),
            (
                EngineError::Provider(ProviderError::Ambiguous {
                    message: "502".into(),
                }),
                "PSP_OUTCOME_UNKNOWN",
                None,
            ),
            (
                EngineError::Store(StoreError::Unavailable {
                    message: "down".into(),
                }),
                "STORE_UNAVAILABLE",
                Some(Duration::from_secs(1)),
            ),
            (
                EngineError::Vault(VaultError::Invalid { field: "cvc" }),
                "CREDENTIAL_NOT_USABLE",
                None,
            ),
        ];
        for (e, code, retry) in cases {
            assert_eq!(e.code(), code, "{e}");
            assert_eq!(e.retry_after(), retry, "{e}");
            assert_eq!(e.is_retryable(), retry.is_some(), "{e}");
        }
        let invalid = EngineError::Invalid {
            field: "request.amount".into(),
            message: "x".into(),
        };
        assert_eq!(invalid.param(), Some("request.amount"));
        assert_eq!(invalid.http_status(), 400);
        assert_eq!(invalid.error_type(), ErrorType::InvalidRequest);
    }
}
