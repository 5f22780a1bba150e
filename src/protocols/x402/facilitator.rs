//! The x402 facilitator interface (`POST /verify`, `POST /settle`) as a port, and its HTTP
//! client; and the resource server's verification order in front of it.
//!
//! [`verify_payment`] checks a `PAYMENT-SIGNATURE` in the order the specification gives the
//! resource server: the header is read (version 2), its `accepted` must be exactly one of the
//! requirements the route offers now, then the facilitator verifies it; only a verified payload
//! is settled ([`Facilitator::settle`]).
//!
//! Errors are classified as the Stripe adapter classifies a PSP's: a verification moves no
//! money, so its failures are [`FacilitatorError::Transient`] unless the facilitator refused
//! the request (4xx); a settlement broadcasts a transfer, so any failure after the request may
//! have been sent (5xx, 408, 409, a timeout, an unreadable answer) is
//! [`FacilitatorError::Ambiguous`].
//!
//! Not built: settling through the seller's engine (a mandate, a hold and an attempt per
//! settlement, as `EngineSettler` does for MPP) and an x402 middleware.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::{PaymentPayload, PaymentRequirements, SettlementResponse};
use crate::protocols::error::WireError;

/// The facilitator's answer to `/verify`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VerifyResponse {
    /// Whether the payload is valid.
    pub is_valid: bool,
    /// Why not (`insufficient_funds`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invalid_reason: Option<String>,
    /// The payer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payer: Option<String>,
}

/// The body of `/verify` and `/settle`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct FacilitatorRequest<'a> {
    x402_version: u32,
    payment_payload: &'a PaymentPayload,
    payment_requirements: &'a PaymentRequirements,
}

/// A facilitator failure. Never carries the payload.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FacilitatorError {
    /// The facilitator refused the request (4xx): definitive.
    #[error("{call}: the facilitator refused the request (HTTP {status})")]
    Refused {
        /// `verify` or `settle`.
        call: &'static str,
        /// The status.
        status: u16,
    },
    /// Nothing was processed (not sent, 429, or a failed verification): retry.
    #[error("{call}: the facilitator is unavailable: {reason}")]
    Transient {
        /// `verify` or `settle`.
        call: &'static str,
        /// Why.
        reason: String,
    },
    /// A settlement may have been broadcast: reconcile before paying again.
    #[error("{call}: the outcome is unknown: {reason}")]
    Ambiguous {
        /// `settle`.
        call: &'static str,
        /// Why.
        reason: String,
    },
}

/// The facilitator interface.
#[async_trait]
pub trait Facilitator: Send + Sync + fmt::Debug {
    /// `POST /verify`.
    async fn verify(
        &self,
        payload: &PaymentPayload,
        requirements: &PaymentRequirements,
    ) -> Result<VerifyResponse, FacilitatorError>;

    /// `POST /settle`.
    async fn settle(
        &self,
        payload: &PaymentPayload,
        requirements: &PaymentRequirements,
    ) -> Result<SettlementResponse, FacilitatorError>;
}

/// A facilitator over HTTP (`{base}/verify`, `{base}/settle`, JSON bodies).
#[derive(Debug, Clone)]
pub struct HttpFacilitator {
    client: reqwest::Client,
    base: reqwest::Url,
}

/// The largest answer read from a facilitator.
const MAX_ANSWER: usize = 64 * 1024;

impl HttpFacilitator {
    /// A client of the facilitator at `base` (http or https, no query), with a connect timeout
    /// and a whole-request timeout.
    pub fn new(
        base: &str,
        connect: Duration,
        request: Duration,
    ) -> Result<HttpFacilitator, WireError> {
        let invalid = |reason| WireError::Invalid {
            field: "facilitator URL",
            reason,
        };
        let mut base = reqwest::Url::parse(base).map_err(|_| invalid("not a URL"))?;
        if !matches!(base.scheme(), "http" | "https")
            || base.cannot_be_a_base()
            || base.query().is_some()
        {
            return Err(invalid("must be an http(s) URL without a query"));
        }
        if !base.path().ends_with('/') {
            let p = format!("{}/", base.path());
            base.set_path(&p);
        }
        let client = crate::adapters::http::client_builder()
            .map_err(|_| invalid("cannot configure TLS for the HTTP client"))?
            .connect_timeout(connect)
            .timeout(request)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|_| invalid("cannot build the HTTP client"))?;
        Ok(HttpFacilitator { client, base })
    }

    async fn post<T: serde::de::DeserializeOwned>(
        &self,
        call: &'static str,
        payload: &PaymentPayload,
        requirements: &PaymentRequirements,
    ) -> Result<T, FacilitatorError> {
        let settle = call == "settle";
        let unknown = |reason: String| {
            if settle {
                FacilitatorError::Ambiguous { call, reason }
            } else {
                FacilitatorError::Transient { call, reason }
            }
        };
        let url = self
            .base
            .join(call)
            .map_err(|_| FacilitatorError::Refused { call, status: 0 })?;
        let body = serde_json::to_vec(&FacilitatorRequest {
            x402_version: 2,
            payment_payload: payload,
            payment_requirements: requirements,
        })
        .map_err(|_| FacilitatorError::Refused { call, status: 0 })?;
        let sent = self
            .client
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await;
        let mut resp = match sent {
            Ok(r) => r,
            Err(e) if e.is_connect() => {
                return Err(FacilitatorError::Transient {
                    call,
                    reason: "connect failed: nothing sent".into(),
                })
            }
            Err(e) => return Err(unknown(format!("no answer: {}", e.without_url()))),
        };
        let status = resp.status().as_u16();
        let mut bytes = Vec::new();
        loop {
            match resp.chunk().await {
                Ok(Some(c)) if bytes.len() + c.len() <= MAX_ANSWER => bytes.extend_from_slice(&c),
                Ok(Some(_)) => return Err(unknown("answer larger than 64 KiB".into())),
                Ok(None) => break,
                Err(e) => return Err(unknown(format!("answer lost: {}", e.without_url()))),
            }
        }
        match status {
            200..=299 => serde_json::from_slice(&bytes)
                .map_err(|_| unknown(format!("HTTP {status}: unreadable answer"))),
            429 => Err(FacilitatorError::Transient {
                call,
                reason: "rate limited (HTTP 429)".into(),
            }),
            408 | 409 | 500..=599 => Err(unknown(format!("HTTP {status}"))),
            400..=499 => Err(FacilitatorError::Refused { call, status }),
            _ => Err(unknown(format!("unexpected HTTP {status}"))),
        }
    }
}

#[async_trait]
impl Facilitator for HttpFacilitator {
    async fn verify(
        &self,
        payload: &PaymentPayload,
        requirements: &PaymentRequirements,
    ) -> Result<VerifyResponse, FacilitatorError> {
        self.post("verify", payload, requirements).await
    }

    async fn settle(
        &self,
        payload: &PaymentPayload,
        requirements: &PaymentRequirements,
    ) -> Result<SettlementResponse, FacilitatorError> {
        let r: SettlementResponse = self.post("settle", payload, requirements).await?;
        if r.success && r.transaction.is_empty() {
            return Err(FacilitatorError::Ambiguous {
                call: "settle",
                reason: "success without a transaction".into(),
            });
        }
        Ok(r)
    }
}

/// Why a `PAYMENT-SIGNATURE` was not accepted, in the order it is checked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PaymentCheckError {
    /// The header cannot be read (answer 400, `invalid_payload`).
    #[error("invalid_payload: {0}")]
    Payload(#[from] WireError),
    /// Its `accepted` is not one of the route's requirements (`invalid_payment_requirements`).
    #[error("invalid_payment_requirements: the accepted requirement is not offered")]
    NotOffered,
    /// The facilitator says it is not valid (its `invalidReason`).
    #[error("invalid: {reason}")]
    Invalid {
        /// The facilitator's reason.
        reason: String,
    },
    /// The facilitator could not answer.
    #[error(transparent)]
    Facilitator(#[from] FacilitatorError),
}

/// Checks `header` (a `PAYMENT-SIGNATURE` value) against the requirements the route offers
/// now, then with the facilitator: the payload and the requirement it pays, verified.
pub async fn verify_payment(
    facilitator: &dyn Facilitator,
    header: &str,
    offered: &[PaymentRequirements],
) -> Result<(PaymentPayload, PaymentRequirements, VerifyResponse), PaymentCheckError> {
    let payload = PaymentPayload::parse(header)?;
    let requirement = offered
        .iter()
        .find(|r| **r == payload.accepted)
        .cloned()
        .ok_or(PaymentCheckError::NotOffered)?;
    let verified = facilitator.verify(&payload, &requirement).await?;
    if !verified.is_valid {
        return Err(PaymentCheckError::Invalid {
            reason: verified
                .invalid_reason
                .unwrap_or_else(|| "unexpected_verify_error".into())
                .chars()
                .take(128)
                .collect(),
        });
    }
    Ok((payload, requirement, verified))
}
