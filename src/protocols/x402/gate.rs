//! The x402 seller's side over HTTP: an axum middleware that gates a route by its payment
//! requirements.
//!
//! ```ignore
//! let app = Router::new()
//!     .route("/premium", get(premium))
//!     .route_layer(axum::middleware::from_fn_with_state(gate, x402_gate));
//! ```
//!
//! Without `PAYMENT-SIGNATURE` the route answers `402` with `PAYMENT-REQUIRED`. With one, in
//! order: the header is read (unreadable: `400`), its `accepted` must be one of the route's
//! requirements (else `402` with a fresh `PAYMENT-REQUIRED`), the facilitator verifies it
//! (invalid: `402` with a failed `PAYMENT-RESPONSE`), the [`X402EngineSettler`] settles it
//! through the seller's engine (single use, then the facilitator's `/settle`); on success the
//! route runs and its answer carries `PAYMENT-RESPONSE`. A facilitator or store that cannot
//! answer gives `503`.

use std::fmt;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::Response;

use super::facilitator::{verify_payment, Facilitator, PaymentCheckError};
use super::settle::{X402EngineSettler, X402SettleError};
use super::{PaymentRequired, PaymentRequirements, ResourceInfo, SettlementResponse};

/// The state of [`x402_gate`]: the requirements of one route and how to verify and settle.
#[derive(Clone)]
pub struct X402Gate {
    resource: ResourceInfo,
    accepts: Arc<Vec<PaymentRequirements>>,
    facilitator: Arc<dyn Facilitator>,
    settler: Arc<X402EngineSettler>,
}

impl fmt::Debug for X402Gate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("X402Gate")
            .field("resource", &self.resource)
            .field("accepts", &self.accepts)
            .finish_non_exhaustive()
    }
}

impl X402Gate {
    /// A gate for `resource` (its URL is the one the agent pays for), accepting `accepts`.
    pub fn new(
        resource: ResourceInfo,
        accepts: Vec<PaymentRequirements>,
        facilitator: Arc<dyn Facilitator>,
        settler: Arc<X402EngineSettler>,
    ) -> X402Gate {
        X402Gate {
            resource,
            accepts: Arc::new(accepts),
            facilitator,
            settler,
        }
    }

    fn required(&self, error: &str) -> Response {
        let required = PaymentRequired {
            x402_version: 2,
            error: Some(error.to_owned()),
            resource: Some(self.resource.clone()),
            accepts: self.accepts.as_ref().clone(),
            extensions: None,
        };
        match required.to_header() {
            Ok(h) => with(StatusCode::PAYMENT_REQUIRED, "payment-required", &h),
            Err(_) => plain(StatusCode::INTERNAL_SERVER_ERROR),
        }
    }

    fn failed(&self, network: &str, reason: &str) -> Response {
        let r = SettlementResponse {
            success: false,
            error_reason: Some(reason.to_owned()),
            payer: None,
            transaction: String::new(),
            network: network.to_owned(),
            amount: None,
            extensions: None,
        };
        match r.to_header() {
            Ok(h) => with(StatusCode::PAYMENT_REQUIRED, "payment-response", &h),
            Err(_) => plain(StatusCode::INTERNAL_SERVER_ERROR),
        }
    }
}

fn plain(status: StatusCode) -> Response {
    let mut r = Response::new(Body::from("{}"));
    *r.status_mut() = status;
    r
}

fn with(status: StatusCode, name: &'static str, value: &str) -> Response {
    let mut r = plain(status);
    if let Ok(v) = HeaderValue::from_str(value) {
        r.headers_mut().insert(name, v);
    }
    r
}

/// The middleware: use with `axum::middleware::from_fn_with_state(gate, x402_gate)`.
pub async fn x402_gate(State(gate): State<X402Gate>, request: Request, next: Next) -> Response {
    let header = match request.headers().get("payment-signature") {
        None => return gate.required("PAYMENT-SIGNATURE header is required"),
        Some(v) => match v.to_str() {
            Ok(s) => s.to_owned(),
            Err(_) => return plain(StatusCode::BAD_REQUEST),
        },
    };
    let (payload, requirement, _) =
        match verify_payment(gate.facilitator.as_ref(), &header, &gate.accepts).await {
            Ok(v) => v,
            Err(PaymentCheckError::Payload(_)) => return plain(StatusCode::BAD_REQUEST),
            Err(PaymentCheckError::NotOffered) => {
                return gate.required("invalid_payment_requirements")
            }
            Err(PaymentCheckError::Invalid { reason }) => {
                let network = gate
                    .accepts
                    .first()
                    .map(|r| r.network.clone())
                    .unwrap_or_default();
                return gate.failed(&network, &reason);
            }
            Err(_) => return plain(StatusCode::SERVICE_UNAVAILABLE),
        };
    let settled = match gate
        .settler
        .settle(&payload, &requirement, &gate.resource.url)
        .await
    {
        Ok(s) => s,
        Err(X402SettleError::Replayed) => {
            return gate.failed(&requirement.network, "invalid_transaction_state")
        }
        Err(X402SettleError::NotSettled { .. }) => {
            return gate.failed(&requirement.network, "unexpected_settle_error")
        }
        Err(_) => return plain(StatusCode::SERVICE_UNAVAILABLE),
    };
    let mut resp = next.run(request).await;
    if resp.status().is_success()
        && let Some(v) = settled
            .to_header()
            .ok()
            .and_then(|h| HeaderValue::from_str(&h).ok())
    {
        resp.headers_mut().insert("payment-response", v);
    }
    resp
}
