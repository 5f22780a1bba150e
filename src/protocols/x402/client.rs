//! The agent's side of an x402 exchange over HTTP: send, and on `402` with `PAYMENT-REQUIRED`
//! decide, sign, and send again with `PAYMENT-SIGNATURE`; the answer comes back with its
//! `PAYMENT-RESPONSE` settlement as the receipt.
//!
//! Nothing is signed unless the [`X402Payer`] (the engine) allows the offer.

use std::sync::Arc;

use reqwest::header::{HeaderMap, HeaderValue};

use super::payer::X402Payer;
use super::PAYMENT_SIGNATURE;
use super::{PaymentRequired, SettlementResponse, PAYMENT_REQUIRED, PAYMENT_RESPONSE};
use crate::ports::Clock;
use crate::protocols::error::{clip, OfferError, WireError};
use crate::protocols::origin::no_redirect_client;
use crate::protocols::pay::PayError;

/// Why an x402 paid request failed. Nothing was paid unless the variant says so.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum X402ClientError {
    /// The HTTP exchange failed (connection, timeout): the message only.
    #[error("http: {0}")]
    Http(String),
    /// The request's body cannot be sent twice (a stream): it cannot be paid for.
    #[error("the request body is a stream and cannot be sent again after payment")]
    BodyNotReplayable,
    /// A header cannot be read or written.
    #[error("x402 header: {0}")]
    Wire(#[from] WireError),
    /// The 402 answer carries no `PAYMENT-REQUIRED` header.
    #[error("402 without a PAYMENT-REQUIRED header")]
    NoPaymentRequired,
    /// No requirement of the answer is payable; why for each.
    #[error("no payable requirement among {}", refused.len())]
    NoPayableRequirement {
        /// Why each requirement was refused.
        refused: Vec<OfferError>,
    },
    /// The payer did not pay.
    #[error(transparent)]
    Pay(#[from] PayError),
    /// The server answered the paid request with a redirect (3xx). The paid request is sent
    /// without following redirects, so `PAYMENT-SIGNATURE` went to the origin that asked for
    /// it and nowhere else: signed, possibly settled, and not served.
    #[error("the server redirected the paid request: status {status}")]
    Redirected {
        /// The status.
        status: u16,
    },
    /// The client for the paid request (one that follows no redirect) cannot be built.
    #[error("the client for the paid request cannot be built: {0}")]
    Setup(String),
    /// The server served the resource with a successful `PAYMENT-RESPONSE` that is not the
    /// settlement of the requirement paid (another network, amount or payer): it is no
    /// receipt of this payment. Signed, and possibly settled: the settlement and the payment's
    /// identity are kept so the host can dispute.
    #[error("PAYMENT-RESPONSE {field} is {got:?}, the requirement paid says {expected:?}")]
    SettlementMismatch {
        /// The member that differs (`network`, `amount`, `payer`).
        field: &'static str,
        /// What the requirement (or the signed authorization) says.
        expected: String,
        /// What the settlement says (at most 120 characters of it).
        got: String,
        /// The payment's identity.
        payment_id: String,
        /// The settlement as sent.
        settlement: Box<SettlementResponse>,
    },
    /// The server refused the payment (a second 402, or another failure status): signed,
    /// and not served. `settlement` is its `PAYMENT-RESPONSE`, if it sent a readable one.
    #[error("the server refused the payment: status {status}")]
    Rejected {
        /// The status.
        status: u16,
        /// The settlement response (`errorReason`).
        settlement: Option<SettlementResponse>,
    },
}

/// A served answer, with the settlement of the payment made for it.
#[derive(Debug)]
pub struct X402Response {
    /// Status.
    pub status: u16,
    /// Headers.
    pub headers: HeaderMap,
    /// Body.
    pub body: Vec<u8>,
    /// The settlement (`PAYMENT-RESPONSE`), when a payment was made and the server sent one.
    pub settlement: Option<SettlementResponse>,
    /// The identity of the payment made, if any.
    pub payment_id: Option<String>,
}

/// A `reqwest` client that pays x402 requirements through an [`X402Payer`].
///
/// The origin the request was sent to (after any redirect of the unpaid request) is the
/// merchant the mandate is checked against (a `resource.url` of another origin is refused);
/// the URL is the line of the cart snapshot.
///
/// The unpaid request goes through the caller's client; the paid one (with
/// `PAYMENT-SIGNATURE`, a bearer authorization that an HTTP client does not strip on a
/// redirect) through a client of this crate that follows no redirect: a 3xx answer to it is
/// [`X402ClientError::Redirected`]. A successful `PAYMENT-RESPONSE` must be the settlement of
/// the requirement paid ([`X402ClientError::SettlementMismatch`] otherwise).
#[derive(Debug, Clone)]
pub struct X402Client {
    http: reqwest::Client,
    paid: Result<reqwest::Client, String>,
    payer: Arc<X402Payer>,
    clock: Arc<dyn Clock>,
}

const MAX_BODY: usize = 16 * 1024 * 1024;

fn http(e: reqwest::Error) -> X402ClientError {
    // Without the URL: it may carry query parameters the caller considers private.
    X402ClientError::Http(e.without_url().to_string())
}

fn header(resp: &reqwest::Response, name: &'static str) -> Result<Option<String>, WireError> {
    match resp.headers().get(name) {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .map(|s| Some(s.to_owned()))
            .map_err(|_| WireError::Invalid {
                field: name,
                reason: "not ASCII",
            }),
    }
}

impl X402Client {
    /// A client sending the unpaid request with `http`, paying through `payer`, reading time
    /// from `clock`; the paid request goes through a client that follows no redirect (built
    /// with [`client_builder`](crate::adapters::http::client_builder), 10 s to connect, 60 s
    /// per request).
    pub fn new(http: reqwest::Client, payer: Arc<X402Payer>, clock: Arc<dyn Clock>) -> X402Client {
        X402Client {
            http,
            paid: no_redirect_client(),
            payer,
            clock,
        }
    }

    /// Sends `request`; on a 402 pays the first requirement (in the server's order) that the
    /// signer accepts and the payer can state in mandate terms, as the payment of the offer
    /// itself: the same requirement again is a replay of that payment (see
    /// [`X402Client::send_call`] to pay the same requirement once per call).
    pub async fn send(&self, request: reqwest::Request) -> Result<X402Response, X402ClientError> {
        self.send_call(request, None).await
    }

    /// As [`X402Client::send`], the payment identified by the offer and `call` (the caller's
    /// id of this call: a retry of the call reuses it, a new call takes a new one).
    pub async fn send_call(
        &self,
        request: reqwest::Request,
        call: Option<&str>,
    ) -> Result<X402Response, X402ClientError> {
        let retry = request
            .try_clone()
            .ok_or(X402ClientError::BodyNotReplayable)?;
        let paid = self.paid.clone().map_err(X402ClientError::Setup)?;
        let first = self.http.execute(request).await.map_err(http)?;
        if first.status().as_u16() != 402 {
            return finish(first, None).await;
        }
        // The offer is the answer's, read against the URL that answered 402 (after any
        // redirect), and the paid retry goes there, not to the URL first asked.
        let url = first.url().to_string();
        let mut retry = retry;
        *retry.url_mut() = first.url().clone();
        let value = header(&first, PAYMENT_REQUIRED)?.ok_or(X402ClientError::NoPaymentRequired)?;
        let required = PaymentRequired::parse(&value)?;
        let now = self.clock.now();
        let mut refused = Vec::new();
        let mut chosen = None;
        for (accepted, offer) in
            required
                .accepts
                .iter()
                .zip(required.offers(self.payer.assets(), &url, now))
        {
            if !self.payer.accepts(accepted) {
                refused.push(OfferError::UnknownScheme {
                    scheme: format!("{} on {}", accepted.scheme, accepted.network)
                        .chars()
                        .take(64)
                        .collect(),
                });
                continue;
            }
            match offer {
                Ok(offer) => {
                    chosen = Some((accepted.clone(), offer));
                    break;
                }
                Err(e) => refused.push(e),
            }
        }
        let Some((accepted, offer)) = chosen else {
            return Err(X402ClientError::NoPayableRequirement { refused });
        };
        let payload = self.payer.pay(&required, &accepted, &offer, call).await?;
        let payment_id = X402Payer::payment_id(&offer, call);
        let value =
            HeaderValue::from_str(&payload.to_header()?).map_err(|_| WireError::Invalid {
                field: PAYMENT_SIGNATURE,
                reason: "not a header value",
            })?;
        let name = reqwest::header::HeaderName::from_bytes(PAYMENT_SIGNATURE.as_bytes()).map_err(
            |_| WireError::Invalid {
                field: PAYMENT_SIGNATURE,
                reason: "not a header name",
            },
        )?;
        retry.headers_mut().insert(name, value);
        let second = paid.execute(retry).await.map_err(http)?;
        if second.status().is_redirection() {
            return Err(X402ClientError::Redirected {
                status: second.status().as_u16(),
            });
        }
        let settlement = header(&second, PAYMENT_RESPONSE)
            .ok()
            .flatten()
            .and_then(|v| SettlementResponse::parse(&v).ok());
        if !second.status().is_success() || settlement.as_ref().is_some_and(|s| !s.success) {
            return Err(X402ClientError::Rejected {
                status: second.status().as_u16(),
                settlement,
            });
        }
        if let Some(s) = &settlement {
            check_settlement(s, &accepted, &payload.payload).map_err(
                |(field, expected, got)| X402ClientError::SettlementMismatch {
                    field,
                    expected,
                    got: clip(&got, 120),
                    payment_id: payment_id.clone(),
                    settlement: Box::new(s.clone()),
                },
            )?;
        }
        finish(second, Some(payment_id)).await
    }
}

/// A successful settlement is of the requirement paid: the same network, the same amount
/// (when it says one), and the payer that signed (when both say one; EVM addresses compared
/// without regard to case). The mismatch: the member, what was expected, what was said.
fn check_settlement(
    s: &SettlementResponse,
    accepted: &super::PaymentRequirements,
    payload: &serde_json::Map<String, serde_json::Value>,
) -> Result<(), (&'static str, String, String)> {
    if s.network != accepted.network {
        return Err(("network", accepted.network.clone(), s.network.clone()));
    }
    if let Some(amount) = &s.amount
        && *amount != accepted.amount
    {
        return Err(("amount", accepted.amount.clone(), amount.clone()));
    }
    let signer = payload
        .get("authorization")
        .and_then(|a| a.get("from"))
        .and_then(serde_json::Value::as_str);
    if let (Some(payer), Some(from)) = (&s.payer, signer)
        && !payer.eq_ignore_ascii_case(from)
    {
        return Err(("payer", from.to_owned(), payer.clone()));
    }
    Ok(())
}

async fn finish(
    resp: reqwest::Response,
    payment_id: Option<String>,
) -> Result<X402Response, X402ClientError> {
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let settlement = match (&payment_id, header(&resp, PAYMENT_RESPONSE)?) {
        (Some(_), Some(v)) => Some(SettlementResponse::parse(&v)?),
        _ => None,
    };
    let bytes = resp.bytes().await.map_err(http)?;
    if bytes.len() > MAX_BODY {
        return Err(X402ClientError::Http("answer body above 16 MiB".into()));
    }
    Ok(X402Response {
        status,
        headers,
        body: bytes.to_vec(),
        settlement,
        payment_id,
    })
}
