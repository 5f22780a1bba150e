//! The HTTP boundary for services that put the engine behind axum (feature `axum`).
//!
//! Three pieces a handler needs and nothing more:
//!
//! * [`Authenticated`]: the extractor of the caller's [`Principal`]. Your authentication layer
//!   (a tower middleware that checks the session, token or certificate) inserts the principal
//!   into the request's extensions; the extractor reads it from there and answers 401 when it
//!   is missing. It never reads a principal from a header or a body.
//! * [`IdempotencyKeyHeader`]: the `Idempotency-Key` header (required; 1 to 255 visible ASCII
//!   characters, the Agentic Commerce Protocol's rule; keys longer than an
//!   [`IdempotencyKey`] may be are kept as their SHA-256).
//! * [`ApiError`] and [`payment_response`] / [`order_response`]: errors and outcomes as HTTP
//!   answers. Errors use the Agentic Commerce Protocol's error shape (`type`, `code`,
//!   `message`, `param`) with the status of [`EngineError::http_status`] and a `Retry-After`
//!   on retryable errors; a refused decision answers with
//!   [`AuthorityDecision::http_status`] and the decision itself; a replay carries
//!   `Idempotent-Replayed: true`.
//!
//! Messages of server-side errors (5xx) are generic: the detail stays in your logs.

use axum::extract::FromRequestParts;
use axum::http::header::{HeaderName, HeaderValue, RETRY_AFTER};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use sha2::{Digest as _, Sha256};

use crate::domain::{AuthorityDecision, IdempotencyKey, PaymentAttempt, Principal, MAX_ID_LEN};
use crate::engine::{EngineError, OrderOutcome, PaymentOutcome};

/// The longest `Idempotency-Key` header accepted.
pub const MAX_IDEMPOTENCY_KEY_HEADER: usize = 255;

/// The header a replayed answer carries.
pub const IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");

/// An error body in the Agentic Commerce Protocol's shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
pub struct ErrorBody {
    /// The category: `invalid_request`, `unauthorized`, `not_found`, `processing_error`,
    /// `service_unavailable`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The stable code, lowercase (`idempotency_conflict`, `not_permitted`,
    /// `lifetime_limit_exceeded`...).
    pub code: String,
    /// A human-readable message (generic for server-side errors).
    pub message: String,
    /// The offending field, for invalid input.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub param: Option<String>,
}

/// An [`EngineError`] (or a boundary error) as an HTTP answer.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    body: ErrorBody,
    retry_after: Option<std::time::Duration>,
}

impl ApiError {
    /// An error of the boundary itself (a missing header, a missing principal).
    fn boundary(status: StatusCode, kind: &'static str, code: &str, message: &str) -> ApiError {
        ApiError {
            status,
            body: ErrorBody {
                kind,
                code: code.to_owned(),
                message: message.to_owned(),
                param: None,
            },
            retry_after: None,
        }
    }

    /// The status it answers with.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The body it answers with.
    pub fn body(&self) -> &ErrorBody {
        &self.body
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> ApiError {
        let status =
            StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let message = if status.is_server_error() && status != StatusCode::SERVICE_UNAVAILABLE {
            // Store, audit and vault details are for the service's logs, not its callers.
            match e.code() {
                "PSP_OUTCOME_UNKNOWN" => {
                    "the payment service provider's outcome is unknown; the attempt keeps its hold until it is reconciled".to_owned()
                }
                _ => "internal error".to_owned(),
            }
        } else {
            e.to_string()
        };
        ApiError {
            status,
            body: ErrorBody {
                kind: e.error_type().as_str(),
                code: e.code().to_ascii_lowercase(),
                message,
                param: e.param().map(str::to_owned),
            },
            retry_after: e.retry_after(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(self.body)).into_response();
        if let Some(after) = self.retry_after {
            // Whole seconds, rounded up: a client never retries before the hint.
            let secs = after.as_secs() + u64::from(after.subsec_nanos() > 0);
            if let Ok(value) = HeaderValue::from_str(&secs.max(1).to_string()) {
                response.headers_mut().insert(RETRY_AFTER, value);
            }
        }
        response
    }
}

/// The principal your authentication layer established for this request, read from the
/// request's extensions (insert it there with `request.extensions_mut().insert(principal)`
/// after checking the caller). Missing: 401 `unauthorized`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authenticated(pub Principal);

impl<S: Send + Sync> FromRequestParts<S> for Authenticated {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Principal>()
            .cloned()
            .map(Authenticated)
            .ok_or_else(|| {
                ApiError::boundary(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    "unauthorized",
                    "Unauthorized",
                )
            })
    }
}

/// The `Idempotency-Key` header. Missing: 400 `idempotency_key_required`; empty, longer than
/// [`MAX_IDEMPOTENCY_KEY_HEADER`] or not visible ASCII: 400 `invalid_request` with
/// `param: "Idempotency-Key"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKeyHeader(pub IdempotencyKey);

impl IdempotencyKeyHeader {
    /// Parses a header value by the rules above.
    pub fn parse(value: &[u8]) -> Result<IdempotencyKey, ApiError> {
        let bad = |message: &str| {
            let mut e = ApiError::boundary(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "invalid_request",
                message,
            );
            e.body.param = Some("Idempotency-Key".to_owned());
            e
        };
        if value.is_empty() || value.len() > MAX_IDEMPOTENCY_KEY_HEADER {
            return Err(bad("Idempotency-Key must be 1 to 255 characters"));
        }
        if !value.iter().all(|b| b.is_ascii_graphic()) {
            return Err(bad("Idempotency-Key must be visible ASCII characters"));
        }
        let text = String::from_utf8_lossy(value);
        let text = if text.len() <= MAX_ID_LEN {
            text.into_owned()
        } else {
            format!("sha256:{}", hex::encode(Sha256::digest(value)))
        };
        IdempotencyKey::new(&text).map_err(|e| bad(&format!("Idempotency-Key: {e}")))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for IdempotencyKeyHeader {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let Some(value) = parts.headers.get("idempotency-key") else {
            return Err(ApiError::boundary(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "idempotency_key_required",
                "Idempotency-Key header is required",
            ));
        };
        IdempotencyKeyHeader::parse(value.as_bytes()).map(IdempotencyKeyHeader)
    }
}

/// The body of a payment answer.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
pub struct PaymentBody<'a> {
    /// The attempt as it is now.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempt: Option<&'a PaymentAttempt>,
    /// The decision made now, if any (a refusal's, or the one the command ran on).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decision: Option<&'a AuthorityDecision>,
    /// Whether it was answered from the idempotency record.
    pub replayed: bool,
}

/// A payment command's outcome as an HTTP answer: `201` for a command that ran now, `200` for
/// a replay (with `Idempotent-Replayed: true`), and a refused decision with its status
/// (403 `blocked`, 428 `requires_confirmation`, 409 `requires_revalidation`) and the decision
/// in the body.
pub fn payment_response(outcome: &PaymentOutcome) -> Response {
    let status = match outcome {
        PaymentOutcome::Refused(d) => {
            StatusCode::from_u16(d.http_status()).unwrap_or(StatusCode::FORBIDDEN)
        }
        PaymentOutcome::Done { .. } => StatusCode::CREATED,
        PaymentOutcome::Replayed { .. } => StatusCode::OK,
        // Held in its review window: accepted, not yet sent.
        PaymentOutcome::Scheduled { .. } => StatusCode::ACCEPTED,
    };
    let body = PaymentBody {
        attempt: outcome.attempt(),
        decision: outcome.decision(),
        replayed: outcome.is_replay(),
    };
    let mut response = (status, Json(body)).into_response();
    if outcome.is_replay() {
        response
            .headers_mut()
            .insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
    }
    response
}

/// An order commitment as an HTTP answer: `201` committed now, `200` an existing order
/// (`Idempotent-Replayed: true`), `409` when it failed after money moved (the body names the
/// recovery started).
pub fn order_response(outcome: &OrderOutcome) -> Response {
    #[derive(Serialize)]
    struct Body<'a> {
        #[serde(skip_serializing_if = "Option::is_none")]
        order: Option<&'a crate::domain::Order>,
        #[serde(skip_serializing_if = "Option::is_none")]
        decision: Option<&'a AuthorityDecision>,
        #[serde(skip_serializing_if = "Option::is_none")]
        failed: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        recovery: Option<&'a PaymentAttempt>,
        replayed: bool,
    }
    let (status, body) = match outcome {
        OrderOutcome::Committed { order, decision } => (
            StatusCode::CREATED,
            Body {
                order: Some(order),
                decision: Some(decision),
                failed: None,
                recovery: None,
                replayed: false,
            },
        ),
        OrderOutcome::Existing { order } => (
            StatusCode::OK,
            Body {
                order: Some(order),
                decision: None,
                failed: None,
                recovery: None,
                replayed: true,
            },
        ),
        OrderOutcome::Failed {
            reason,
            decision,
            recovery,
        } => (
            StatusCode::CONFLICT,
            Body {
                order: None,
                decision: decision.as_ref(),
                failed: Some(reason),
                recovery: Some(&recovery.attempt),
                replayed: false,
            },
        ),
    };
    let replayed = body.replayed;
    let mut response = (status, Json(body)).into_response();
    if replayed {
        response
            .headers_mut()
            .insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idempotency_key_headers_follow_the_protocol_rules() {
        assert_eq!(
            IdempotencyKeyHeader::parse(b"550e8400-e29b-41d4-a716-446655440000")
                .expect("uuid")
                .as_str(),
            "550e8400-e29b-41d4-a716-446655440000"
        );
        let long = vec![b'k'; 255];
        let a = IdempotencyKeyHeader::parse(&long).expect("255 is accepted");
        assert!(a.as_str().starts_with("sha256:"));
        assert_eq!(a, IdempotencyKeyHeader::parse(&long).expect("same"));
        let mut other = long.clone();
        other[0] = b'j';
        assert_ne!(a, IdempotencyKeyHeader::parse(&other).expect("other"));
        for bad in [
            &b""[..],
            &[b'k'; 256][..],
            b"has space",
            b"tab\there",
            "é".as_bytes(),
        ] {
            let e = IdempotencyKeyHeader::parse(bad).expect_err("refused");
            assert_eq!(e.status(), StatusCode::BAD_REQUEST);
            assert_eq!(e.body().param.as_deref(), Some("Idempotency-Key"));
        }
    }

    #[test]
    fn server_errors_do_not_leak_their_detail() {
        let e = ApiError::from(EngineError::Store(crate::ports::StoreError::Other(
            "connection string postgres://user:hunter2@db".into(),
        )));
        assert_eq!(e.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(e.body().message, "internal error");
        assert_eq!(e.body().code, "store_error");
        assert_eq!(e.body().kind, "processing_error");
    }
}
