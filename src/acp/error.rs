//! Every refusal of the delegate payment endpoint, with the published status, `type`, `code`
//! and `param` it answers with.

use std::time::Duration;

use serde::Serialize;

/// The API versions this reader implements, newest first.
pub const SUPPORTED_VERSIONS: &[&str] = &["2026-04-17"];

/// Why a delegate payment request was refused. Each variant answers with one status and one
/// error body (see [`AcpError::status`] and [`AcpError::body`]); nothing is stored for any of
/// them except [`AcpError::Unavailable`] and [`AcpError::Internal`], which are never cached
/// against the idempotency key.
///
/// | variant | status | `type` | `code` |
/// |---|---|---|---|
/// | `Unauthorized` | 401 | `unauthorized` | `unauthorized` |
/// | `MissingVersion`, `UnsupportedVersion` | 400 | `invalid_request` | `missing_api_version`, `unsupported_api_version` (+ `supported_versions`) |
/// | `IdempotencyKeyRequired`, `InvalidIdempotencyKey` | 400 | `invalid_request` | `idempotency_key_required` |
/// | `Malformed` (schema) | 400 | `invalid_request` | `invalid_card` (+ `param`) |
/// | `Invalid` (semantics) | 422 | `invalid_request` | `invalid_card` (+ `param`) |
/// | `IdempotencyConflict` | 422 | `invalid_request` | `idempotency_conflict` |
/// | `IdempotencyInFlight` | 409 (+ `Retry-After`) | `invalid_request` | `idempotency_in_flight` |
/// | `RateLimited` | 429 (+ `Retry-After`) | `rate_limit_exceeded` | `too_many_requests` |
/// | `Unavailable` | 503 | `service_unavailable` | `service_unavailable` |
/// | `Internal` | 500 | `processing_error` | `internal_server_error` |
///
/// ```
/// use agent_mandate::acp::AcpError;
/// let e = AcpError::Invalid { param: "$.allowance.currency".into(), message: "unknown currency".into() };
/// assert_eq!(e.status(), 422);
/// assert_eq!(e.body().code, "invalid_card");
/// assert_eq!(e.body().param.as_deref(), Some("$.allowance.currency"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AcpError {
    /// No authenticated caller, a missing or malformed `Authorization`, or (with a platform key
    /// configured) a missing, malformed or wrong `Signature`, or a `Timestamp` missing or out of
    /// the window. The reason stays in the server's logs; the answer says only `Unauthorized`.
    #[error("unauthorized: {reason}")]
    Unauthorized {
        /// Why (for logs only).
        reason: String,
    },
    /// No `API-Version` header.
    #[error("API-Version header is required")]
    MissingVersion,
    /// An `API-Version` this server does not implement.
    #[error("API version {version:?} is not supported")]
    UnsupportedVersion {
        /// The version asked for (at most 64 bytes of it).
        version: String,
    },
    /// No `Idempotency-Key` header.
    #[error("Idempotency-Key header is required")]
    IdempotencyKeyRequired,
    /// An `Idempotency-Key` that is empty, longer than 255 characters or not visible ASCII.
    #[error("Idempotency-Key {reason}")]
    InvalidIdempotencyKey {
        /// What is wrong.
        reason: &'static str,
    },
    /// The request does not follow the published schema (or a header its format): unreadable
    /// JSON, a missing or unknown field, a value of the wrong type, length or pattern.
    #[error("{param}: {message}")]
    Malformed {
        /// The RFC 9535 JSONPath of the field (`$.allowance.currency`) or the header name.
        param: String,
        /// What is wrong.
        message: String,
    },
    /// The request follows the schema but cannot be honoured: a card number that fails its
    /// check digit, an expired card or allowance, an unknown currency, an amount the currency
    /// cannot hold.
    #[error("{param}: {message}")]
    Invalid {
        /// The RFC 9535 JSONPath of the field.
        param: String,
        /// What is wrong.
        message: String,
    },
    /// The key was used by this caller with another body. Permanent.
    #[error("Idempotency-Key has already been used with a different request body")]
    IdempotencyConflict,
    /// The first request with this key is still running. Retry after the hint.
    #[error("A request with this Idempotency-Key is currently being processed")]
    IdempotencyInFlight {
        /// When to retry.
        retry_after: Duration,
    },
    /// Too many requests from this caller. Retry after the hint.
    #[error("Too many requests, please retry later")]
    RateLimited {
        /// When to retry.
        retry_after: Duration,
    },
    /// A port (store, vault) cannot be reached now. Retry later; never cached.
    #[error("service unavailable: {reason}")]
    Unavailable {
        /// Why (for logs only).
        reason: String,
    },
    /// Anything else that went wrong on the server. Never cached.
    #[error("internal error: {reason}")]
    Internal {
        /// Why (for logs only).
        reason: String,
    },
}

/// The error body: the published `Error` object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AcpErrorBody {
    /// The category.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The code.
    pub code: &'static str,
    /// A human-readable message (generic for 401 and 5xx).
    pub message: String,
    /// The JSONPath of the offending field, or the header's name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub param: Option<String>,
    /// The versions this server accepts, newest first (version errors only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub supported_versions: Option<Vec<&'static str>>,
}

impl AcpError {
    pub(crate) fn malformed(param: impl Into<String>, message: impl Into<String>) -> AcpError {
        AcpError::Malformed {
            param: param.into(),
            message: message.into(),
        }
    }

    pub(crate) fn invalid(param: impl Into<String>, message: impl Into<String>) -> AcpError {
        AcpError::Invalid {
            param: param.into(),
            message: message.into(),
        }
    }

    /// The HTTP status it answers with.
    pub fn status(&self) -> u16 {
        match self {
            AcpError::Unauthorized { .. } => 401,
            AcpError::MissingVersion
            | AcpError::UnsupportedVersion { .. }
            | AcpError::IdempotencyKeyRequired
            | AcpError::InvalidIdempotencyKey { .. }
            | AcpError::Malformed { .. } => 400,
            AcpError::Invalid { .. } | AcpError::IdempotencyConflict => 422,
            AcpError::IdempotencyInFlight { .. } => 409,
            AcpError::RateLimited { .. } => 429,
            AcpError::Unavailable { .. } => 503,
            AcpError::Internal { .. } => 500,
        }
    }

    /// The retry hint (`Retry-After`), for 409 and 429.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            AcpError::IdempotencyInFlight { retry_after }
            | AcpError::RateLimited { retry_after } => Some(*retry_after),
            _ => None,
        }
    }

    /// Whether the same request may succeed later unchanged.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            AcpError::IdempotencyInFlight { .. }
                | AcpError::RateLimited { .. }
                | AcpError::Unavailable { .. }
                | AcpError::Internal { .. }
        )
    }

    /// The body it answers with.
    pub fn body(&self) -> AcpErrorBody {
        let plain = |kind, code, message: String| AcpErrorBody {
            kind,
            code,
            message,
            param: None,
            supported_versions: None,
        };
        match self {
            AcpError::Unauthorized { .. } => {
                plain("unauthorized", "unauthorized", "Unauthorized".into())
            }
            AcpError::MissingVersion | AcpError::UnsupportedVersion { .. } => AcpErrorBody {
                kind: "invalid_request",
                code: if matches!(self, AcpError::MissingVersion) {
                    "missing_api_version"
                } else {
                    "unsupported_api_version"
                },
                message: self.to_string(),
                param: Some("API-Version".into()),
                supported_versions: Some(SUPPORTED_VERSIONS.to_vec()),
            },
            AcpError::IdempotencyKeyRequired => plain(
                "invalid_request",
                "idempotency_key_required",
                self.to_string(),
            ),
            AcpError::InvalidIdempotencyKey { .. } => AcpErrorBody {
                param: Some("Idempotency-Key".into()),
                ..plain(
                    "invalid_request",
                    "idempotency_key_required",
                    self.to_string(),
                )
            },
            AcpError::Malformed { param, message } | AcpError::Invalid { param, message } => {
                AcpErrorBody {
                    param: Some(param.clone()),
                    ..plain("invalid_request", "invalid_card", message.clone())
                }
            }
            AcpError::IdempotencyConflict => {
                plain("invalid_request", "idempotency_conflict", self.to_string())
            }
            AcpError::IdempotencyInFlight { .. } => {
                plain("invalid_request", "idempotency_in_flight", self.to_string())
            }
            AcpError::RateLimited { .. } => {
                plain("rate_limit_exceeded", "too_many_requests", self.to_string())
            }
            AcpError::Unavailable { .. } => plain(
                "service_unavailable",
                "service_unavailable",
                "Service unavailable".into(),
            ),
            AcpError::Internal { .. } => plain(
                "processing_error",
                "internal_server_error",
                "Internal server error".into(),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_side_and_auth_details_stay_out_of_the_body() {
        for e in [
            AcpError::Unauthorized {
                reason: "bad signature for key k1".into(),
            },
            AcpError::Unavailable {
                reason: "postgres://u:hunter2@db".into(),
            },
            AcpError::Internal {
                reason: "hunter2".into(),
            },
        ] {
            let body = serde_json::to_string(&e.body()).unwrap();
            assert!(!body.contains("hunter2") && !body.contains("k1"), "{body}");
        }
    }

    #[test]
    fn only_transient_refusals_are_retryable() {
        assert!(!AcpError::IdempotencyConflict.is_retryable());
        assert!(AcpError::RateLimited {
            retry_after: Duration::from_secs(1)
        }
        .is_retryable());
        assert!(!AcpError::invalid("$.x", "y").is_retryable());
    }
}
