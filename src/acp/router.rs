//! The axum router (features `acp` and `axum`).
//!
//! * `POST /agentic_commerce/delegate_payment`: [`AcpService::delegate`]. `201` with the
//!   published body (`Idempotent-Replayed: true` on a replay), or the published error.
//! * `POST /agentic_commerce/redeem` (this crate's route, not a published one): body
//!   `{"token": "vt_...", "checkout_session": {...}}` and an `Idempotency-Key`; the merchant is
//!   the [`AcpMerchant`] your authentication inserted. `201` `{"attempt": ...}`, or an error in
//!   the protocol's `Error` shape ([`RedeemError::body`]).
//!
//! Your authentication layer inserts the caller's [`Principal`] (the platform) into the
//! request's extensions, and for redemptions the merchant's [`AcpMerchant`]; optionally an
//! [`AcpBuyer`]. The router never reads an identity from a header or a body. Every answer
//! echoes `Request-Id` when the request had a valid one.

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::header::{HeaderValue, CONTENT_TYPE, RETRY_AFTER};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};

use super::checkout::CheckoutSession;
use super::delegate::{AcpService, RequestHeaders, MAX_BODY_BYTES};
use super::error::AcpError;
use super::redeem::{RedeemError, Redemption};
use crate::domain::{BuyerId, IdempotencyKey, MerchantId, Principal};

/// The buyer your authentication knows the platform is acting for (optional).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcpBuyer(pub BuyerId);

/// The merchant your authentication established for a redemption.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcpMerchant(pub MerchantId);

/// The router of `service`.
pub fn router(service: AcpService) -> Router {
    Router::new()
        .route("/agentic_commerce/delegate_payment", post(delegate_payment))
        .route("/agentic_commerce/redeem", post(redeem))
        .with_state(service)
}

fn with_request_id(mut response: Response, request_id: Option<HeaderValue>) -> Response {
    if let Some(id) = request_id {
        response.headers_mut().insert("request-id", id);
    }
    response
}

fn error_response(e: &AcpError) -> Response {
    if e.status() >= 500 || e.status() == 401 {
        tracing::warn!(status = e.status(), error = %e, "acp delegate_payment refused");
    }
    let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = (status, Json(e.body())).into_response();
    if let Some(after) = e.retry_after() {
        let secs = after.as_secs() + u64::from(after.subsec_nanos() > 0);
        if let Ok(v) = HeaderValue::from_str(&secs.max(1).to_string()) {
            response.headers_mut().insert(RETRY_AFTER, v);
        }
    }
    response
}

async fn read_body(body: Body) -> Result<Bytes, AcpError> {
    axum::body::to_bytes(body, MAX_BODY_BYTES)
        .await
        .map_err(|_| {
            AcpError::malformed(
                "$",
                format!("the body is larger than {MAX_BODY_BYTES} bytes or unreadable"),
            )
        })
}

async fn delegate_payment(State(service): State<AcpService>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let mut headers = RequestHeaders::new();
    for (name, value) in &parts.headers {
        headers.insert(name.as_str(), value.as_bytes());
    }
    let request_id = parts
        .headers
        .get("request-id")
        .filter(|v| {
            !v.is_empty() && v.len() <= 255 && v.as_bytes().iter().all(u8::is_ascii_graphic)
        })
        .cloned();
    let principal = parts.extensions.get::<Principal>();
    let buyer = parts.extensions.get::<AcpBuyer>().map(|b| &b.0);
    let answer = match read_body(body).await {
        Ok(bytes) => service.delegate(principal, buyer, &headers, &bytes).await,
        Err(e) => Err(e),
    };
    let response = match answer {
        Ok(done) => {
            let mut r = (StatusCode::CREATED, Json(done.body())).into_response();
            if done.replayed {
                r.headers_mut().insert(
                    crate::service::IDEMPOTENT_REPLAYED,
                    HeaderValue::from_static("true"),
                );
            }
            r
        }
        Err(e) => error_response(&e),
    };
    with_request_id(response, request_id)
}

fn redeem_error(e: &RedeemError) -> Response {
    if e.status() >= 500 {
        tracing::warn!(status = e.status(), error = %e, "acp redemption failed");
    }
    let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = (status, Json(e.body())).into_response();
    if let Some(after) = e.retry_after() {
        let secs = after.as_secs() + u64::from(after.subsec_nanos() > 0);
        if let Ok(v) = HeaderValue::from_str(&secs.max(1).to_string()) {
            response.headers_mut().insert(RETRY_AFTER, v);
        }
    }
    response
}

async fn redeem(State(service): State<AcpService>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let invalid = |code: &str, message: &str| {
        (
            StatusCode::BAD_REQUEST,
            Json(serde_json::json!({"type": "invalid_request", "code": code, "message": message})),
        )
            .into_response()
    };
    let Some(merchant) = parts.extensions.get::<AcpMerchant>().cloned() else {
        return (
            StatusCode::UNAUTHORIZED,
            Json(
                AcpError::Unauthorized {
                    reason: String::new(),
                }
                .body(),
            ),
        )
            .into_response();
    };
    let key = match parts.headers.get("idempotency-key") {
        None => {
            return invalid(
                "idempotency_key_required",
                "Idempotency-Key header is required",
            )
        }
        Some(v) => match std::str::from_utf8(v.as_bytes())
            .ok()
            .and_then(|t| IdempotencyKey::new(t).ok())
        {
            Some(k) => k,
            None => {
                return invalid(
                    "idempotency_key_required",
                    "Idempotency-Key is not a usable key",
                )
            }
        },
    };
    let is_json = parts
        .headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().starts_with("application/json"));
    if !is_json {
        return invalid("invalid_request", "Content-Type must be application/json");
    }
    let Ok(bytes) = axum::body::to_bytes(body, 4 * MAX_BODY_BYTES).await else {
        return invalid("invalid_request", "the body is too large or unreadable");
    };
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Body {
        token: String,
        checkout_session: serde_json::Value,
    }
    let Ok(text) = std::str::from_utf8(&bytes) else {
        return invalid("invalid_request", "the body is not UTF-8");
    };
    let parsed: Body = match crate::json::from_json(text) {
        Ok(b) => b,
        Err(e) => return invalid("invalid_request", &e.to_string()),
    };
    let session = match serde_json::to_vec(&parsed.checkout_session)
        .map_err(|e| e.to_string())
        .and_then(|b| CheckoutSession::parse(&b).map_err(|e| e.to_string()))
    {
        Ok(s) => s,
        Err(m) => {
            return redeem_error(&RedeemError::InvalidSession(
                super::checkout::SessionError {
                    param: "$.checkout_session".into(),
                    message: m,
                },
            ))
        }
    };
    let redemption = Redemption::new(parsed.token, merchant.0, session, key);
    match service.redeem(&redemption).await {
        Ok(done) => {
            let status = if done.replayed {
                StatusCode::OK
            } else {
                StatusCode::CREATED
            };
            let mut r =
                (status, Json(serde_json::json!({"attempt": done.attempt}))).into_response();
            if done.replayed {
                r.headers_mut().insert(
                    crate::service::IDEMPOTENT_REPLAYED,
                    HeaderValue::from_static("true"),
                );
            }
            r
        }
        Err(e) => redeem_error(&e),
    }
}
