//! The seller's side over HTTP: an axum middleware (a tower layer) that gates a route by price.
//!
//! ```ignore
//! let app = Router::new()
//!     .route("/v1/answer", get(answer))
//!     .route_layer(axum::middleware::from_fn_with_state(gate, payment_gate));
//! ```
//!
//! Without a credential the route answers `402` with a fresh challenge (bound to the request
//! body's RFC 9530 digest when it has a body) and `payment-required` problem details; with one,
//! the credential is verified (binding, expiry, digest) and handed to a [`Settler`] (single use
//! of the challenge id, then the amount, then the payment); on success the route runs and its
//! answer carries `Payment-Receipt`; on failure the answer is `402` with a fresh challenge and
//! the scheme's problem code. Two `Payment` credentials in one request are a `400`.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::header::{AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE, WWW_AUTHENTICATE};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::Response;

use super::credential::Receipt;
use super::issuer::{ChallengeIssuer, ChargeTerms, Verified, VerifyError};
use super::problem::{Problem, ProblemCode};
use crate::ports::Clock;

/// Why a verified credential was not settled.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum SettleError {
    /// The credential is refused (challenge id used before, terms differ).
    #[error(transparent)]
    Verify(#[from] VerifyError),
    /// The payment was declined or not completed.
    #[error("payment not completed: {reason}")]
    NotPaid {
        /// Why (no secret material).
        reason: String,
    },
    /// The settlement could not run (store or PSP unavailable): retry later.
    #[error("settlement unavailable: {reason}")]
    Unavailable {
        /// Why.
        reason: String,
    },
}

impl SettleError {
    /// The problem details for this failure.
    pub fn problem(&self) -> Problem {
        match self {
            SettleError::Verify(e) => e.problem(),
            SettleError::NotPaid { reason } => {
                Problem::new(ProblemCode::VerificationFailed, reason.clone())
            }
            SettleError::Unavailable { reason } => {
                let mut p = Problem::new(ProblemCode::VerificationFailed, reason.clone());
                p.status = 503;
                p
            }
        }
    }
}

/// Settles a verified credential: records the single use of its challenge id, checks it pays
/// what the route charges, and takes the payment. The engine-backed one is
/// [`EngineSettler`](super::EngineSettler).
#[async_trait]
pub trait Settler: Send + Sync + fmt::Debug {
    /// Settles `verified` for `terms`: the receipt to send.
    async fn settle(
        &self,
        verified: &Verified,
        terms: &ChargeTerms,
    ) -> Result<Receipt, SettleError>;
}

/// The state of [`payment_gate`]: the price of one route and how to settle it.
#[derive(Clone)]
pub struct PaymentGate {
    issuer: Arc<ChallengeIssuer>,
    terms: Arc<ChargeTerms>,
    settler: Arc<dyn Settler>,
    clock: Arc<dyn Clock>,
    max_body: usize,
}

impl fmt::Debug for PaymentGate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PaymentGate")
            .field("realm", &self.issuer.realm())
            .field("terms", &self.terms)
            .finish_non_exhaustive()
    }
}

impl PaymentGate {
    /// A gate charging `terms`, with challenges from `issuer`, settled by `settler`; request
    /// bodies up to 1 MiB are read (a larger one is refused with `413`).
    pub fn new(
        issuer: Arc<ChallengeIssuer>,
        terms: ChargeTerms,
        settler: Arc<dyn Settler>,
        clock: Arc<dyn Clock>,
    ) -> PaymentGate {
        PaymentGate {
            issuer,
            terms: Arc::new(terms),
            settler,
            clock,
            max_body: 1024 * 1024,
        }
    }

    fn challenge_response(&self, body: &[u8], problem: Problem) -> Response {
        let now = self.clock.now();
        let bound = (!body.is_empty()).then_some(body);
        let challenge = self.issuer.issue(&self.terms, bound, now).and_then(|c| {
            let header = c.to_header()?;
            Ok((c.id().to_owned(), header))
        });
        let (id, header) = match challenge {
            Ok(v) => v,
            Err(_) => {
                return plain(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "cannot issue a challenge",
                )
            }
        };
        let mut problem = problem;
        problem.challenge_id = Some(id);
        let status = StatusCode::from_u16(problem.status).unwrap_or(StatusCode::PAYMENT_REQUIRED);
        let mut resp = Response::new(Body::from(problem.to_json()));
        *resp.status_mut() = status;
        let h = resp.headers_mut();
        h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        h.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Ok(v) = HeaderValue::from_str(&header) {
            h.insert(WWW_AUTHENTICATE, v);
        }
        resp
    }
}

fn plain(status: StatusCode, text: &'static str) -> Response {
    let mut resp = Response::new(Body::from(text));
    *resp.status_mut() = status;
    resp
}

/// The middleware: use with `axum::middleware::from_fn_with_state(gate, payment_gate)`.
pub async fn payment_gate(
    State(gate): State<PaymentGate>,
    request: Request,
    next: Next,
) -> Response {
    let (parts, body) = request.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, gate.max_body).await else {
        return plain(StatusCode::PAYLOAD_TOO_LARGE, "request body too large");
    };
    let payment: Vec<&HeaderValue> = parts
        .headers
        .get_all(AUTHORIZATION)
        .iter()
        .filter(|v| v.as_bytes().len() >= 8 && v.as_bytes()[..8].eq_ignore_ascii_case(b"payment "))
        .collect();
    let authorization = match payment.as_slice() {
        [] => {
            return gate.challenge_response(
                &bytes,
                Problem::new(ProblemCode::PaymentRequired, "Payment required for access."),
            )
        }
        [one] => match one.to_str() {
            Ok(s) => s.to_owned(),
            Err(_) => {
                return gate.challenge_response(
                    &bytes,
                    Problem::new(ProblemCode::MalformedCredential, "credential is not ASCII"),
                )
            }
        },
        _ => return plain(StatusCode::BAD_REQUEST, "more than one Payment credential"),
    };
    let now = gate.clock.now();
    let bound = (!bytes.is_empty()).then_some(&bytes[..]);
    let verified = match gate.issuer.verify(&authorization, bound, now) {
        Ok(v) => v,
        Err(e) => return gate.challenge_response(&bytes, e.problem()),
    };
    let receipt = match gate.settler.settle(&verified, &gate.terms).await {
        Ok(r) => r,
        Err(e) => return gate.challenge_response(&bytes, e.problem()),
    };
    let request = Request::from_parts(parts, Body::from(bytes));
    let mut resp = next.run(request).await;
    if resp.status().is_success() {
        if let Some(v) = receipt
            .to_header()
            .ok()
            .and_then(|h| HeaderValue::from_str(&h).ok())
        {
            resp.headers_mut().insert("payment-receipt", v);
        }
        resp.headers_mut()
            .insert(CACHE_CONTROL, HeaderValue::from_static("private"));
    }
    resp
}
