//! The agent's side of a 402 exchange over HTTP: send, and on `402` with `Payment` challenges
//! decide, pay, and send again with the credential; the answer comes back with its receipt.
//!
//! The deciding and paying is a [`Payer`] (the engine-backed one is
//! [`EnginePayer`](super::EnginePayer)): nothing is paid unless it allows the offer.

use std::sync::Arc;

use reqwest::header::{HeaderMap, AUTHORIZATION, WWW_AUTHENTICATE};

use super::challenge::Challenge;
use super::credential::Receipt;
use super::digest::digest_matches;
use super::payer::{PayError, Payer};
use crate::ports::Clock;
use crate::protocols::error::{OfferError, WireError};
use crate::protocols::origin::{no_redirect_client, Origin};

/// The `Payment-Receipt` header.
pub const PAYMENT_RECEIPT: &str = "payment-receipt";

/// Why a paid request failed. Nothing was paid unless the variant says so.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The HTTP exchange failed (connection, timeout): the message only.
    #[error("http: {0}")]
    Http(String),
    /// The request's body cannot be sent twice (a stream): it cannot be paid for.
    #[error("the request body is a stream and cannot be sent again after payment")]
    BodyNotReplayable,
    /// The 402 answer cannot be read.
    #[error("402 answer: {0}")]
    Wire(#[from] WireError),
    /// No challenge of the 402 answer is payable (or none was given); why for each.
    #[error("no payable challenge among {}", refused.len())]
    NoPayableChallenge {
        /// Why each challenge was refused.
        refused: Vec<OfferError>,
    },
    /// The challenge binds a body digest the request's body does not have.
    #[error("the challenge's digest does not match the request body")]
    DigestMismatch,
    /// The payer did not pay.
    #[error(transparent)]
    Pay(#[from] PayError),
    /// The server answered the paid request with a redirect (3xx). The paid request is sent
    /// without following redirects, so the credential went to the origin that asked for it
    /// and nowhere else: paid, possibly, and not served.
    #[error("the server redirected the paid request: status {status}")]
    Redirected {
        /// The status.
        status: u16,
    },
    /// The client for the paid request (one that follows no redirect) cannot be built.
    #[error("the client for the paid request cannot be built: {0}")]
    Setup(String),
    /// The server refused the credential (a second 402 or another failure status): paid,
    /// possibly, and not served. `problem` is its problem details body, if any.
    #[error("the server refused the credential: status {status}")]
    Rejected {
        /// The status.
        status: u16,
        /// The problem details body (at most 4 KiB of it).
        problem: Option<String>,
    },
}

/// A served answer, with the receipt of the payment made for it.
#[derive(Debug)]
pub struct PaidResponse {
    /// Status.
    pub status: u16,
    /// Headers.
    pub headers: HeaderMap,
    /// Body.
    pub body: Vec<u8>,
    /// The receipt (`Payment-Receipt`), when a payment was made and the server sent one.
    pub receipt: Option<Receipt>,
    /// The challenge paid, if any.
    pub challenge_id: Option<String>,
}

/// A `reqwest` client that pays 402 `Payment` challenges through a [`Payer`].
///
/// The seller's origin is the merchant the mandate is checked against: the origin the request
/// was sent to (after any redirect of the unpaid request), whose name the challenge's realm
/// must be (see [`Challenge::offer`]) unless the host bound another realm to that origin
/// ([`PaidClient::with_bound_realm`]); the resource URL is the line of the cart snapshot.
///
/// The unpaid request goes through the caller's client; the paid one (with `Authorization`)
/// through a client of this crate that follows no redirect: a 3xx answer to it is
/// [`ClientError::Redirected`], and the credential never reaches another URL.
#[derive(Debug, Clone)]
pub struct PaidClient {
    http: reqwest::Client,
    paid: Result<reqwest::Client, String>,
    payer: Arc<dyn Payer>,
    clock: Arc<dyn Clock>,
    realms: Vec<(Option<Origin>, String)>,
}

const MAX_BODY: usize = 16 * 1024 * 1024;

impl PaidClient {
    /// A client sending the unpaid request with `http`, paying through `payer`, reading time
    /// from `clock`; the paid request goes through a client that follows no redirect (built
    /// here with [`client_builder`](crate::adapters::http::client_builder), 10 s to connect,
    /// 60 s per request).
    pub fn new(http: reqwest::Client, payer: Arc<dyn Payer>, clock: Arc<dyn Clock>) -> PaidClient {
        PaidClient {
            http,
            paid: no_redirect_client(),
            payer,
            clock,
            realms: Vec::new(),
        }
    }

    /// The host (not the peer) binds `realm` to the origin of `origin_url` (scheme, host,
    /// port): a challenge from that origin must then name exactly `realm`, which is the
    /// merchant (a seller known by a name other than its host, e.g. behind a gateway). An
    /// `origin_url` that is not an absolute URL binds nothing (the strict check applies).
    ///
    /// ```
    /// # #[cfg(feature = "testkit")] {
    /// # use std::sync::Arc;
    /// # use agent_mandate::protocols::mpp::{PaidClient, Payer};
    /// # fn f(payer: Arc<dyn Payer>, clock: Arc<dyn agent_mandate::ports::Clock>) {
    /// let http = agent_mandate::adapters::http::client_builder().unwrap().build().unwrap();
    /// let client = PaidClient::new(http, payer, clock)
    ///     .with_bound_realm("http://127.0.0.1:8080", "api.example.com");
    /// # drop(client); }
    /// # }
    /// ```
    pub fn with_bound_realm(mut self, origin_url: &str, realm: &str) -> PaidClient {
        self.realms
            .push((Origin::of_url(origin_url), realm.to_owned()));
        self
    }

    fn bound_realm(&self, url: &str) -> Option<&str> {
        let origin = Origin::of_url(url)?;
        self.realms
            .iter()
            .find(|(o, _)| o.as_ref() == Some(&origin))
            .map(|(_, r)| r.as_str())
    }

    /// Sends `request`; on a 402 with payable challenges, pays the first one the payer can
    /// state in mandate terms (in the server's order) and sends the request again with the
    /// credential.
    pub async fn send(&self, request: reqwest::Request) -> Result<PaidResponse, ClientError> {
        let retry = request.try_clone().ok_or(ClientError::BodyNotReplayable)?;
        let paid = self.paid.clone().map_err(ClientError::Setup)?;
        let body: Vec<u8> = request
            .body()
            .and_then(|b| b.as_bytes())
            .map(<[u8]>::to_vec)
            .unwrap_or_default();
        let first = self.http.execute(request).await.map_err(http)?;
        if first.status().as_u16() != 402 {
            return finish(first, None).await;
        }
        // The offer is the answer's, read against the URL that answered 402 (after any
        // redirect), and the paid retry goes there, not to the URL first asked.
        let url = first.url().to_string();
        let mut retry = retry;
        *retry.url_mut() = first.url().clone();
        let values: Vec<String> = first
            .headers()
            .get_all(WWW_AUTHENTICATE)
            .iter()
            .filter_map(|v| v.to_str().ok().map(str::to_owned))
            .collect();
        let parsed = Challenge::parse_all(values.iter().map(String::as_str))?;
        let now = self.clock.now();
        let methods = self.payer.methods();
        let methods: Vec<&str> = methods.iter().map(String::as_str).collect();
        let mut refused = Vec::new();
        let mut chosen = None;
        for c in parsed {
            match c {
                Err(e) => refused.push(OfferError::Wire(e)),
                Ok(c) => match c.offer_bound(
                    &methods,
                    self.payer.assets(),
                    &url,
                    self.bound_realm(&url),
                    now,
                ) {
                    Ok(offer) => {
                        chosen = Some((c, offer));
                        break;
                    }
                    Err(e) => refused.push(e),
                },
            }
        }
        let Some((challenge, offer)) = chosen else {
            return Err(ClientError::NoPayableChallenge { refused });
        };
        if let Some(d) = challenge.digest()
            && !digest_matches(d, &body)?
        {
            return Err(ClientError::DigestMismatch);
        }
        let credential = self.payer.pay(&challenge, &offer).await?;
        let value = credential.to_header()?;
        let value =
            reqwest::header::HeaderValue::from_str(&value).map_err(|_| WireError::Invalid {
                field: "Authorization",
                reason: "not a header value",
            })?;
        retry.headers_mut().insert(AUTHORIZATION, value);
        let second = paid.execute(retry).await.map_err(http)?;
        if second.status().is_redirection() {
            return Err(ClientError::Redirected {
                status: second.status().as_u16(),
            });
        }
        if !second.status().is_success() {
            let status = second.status().as_u16();
            let problem = second
                .text()
                .await
                .ok()
                .map(|t| t.chars().take(4096).collect());
            return Err(ClientError::Rejected { status, problem });
        }
        finish(second, Some(challenge.id().to_owned())).await
    }
}

fn http(e: reqwest::Error) -> ClientError {
    // Without the URL: it may carry query parameters the caller considers private.
    ClientError::Http(e.without_url().to_string())
}

async fn finish(
    resp: reqwest::Response,
    challenge_id: Option<String>,
) -> Result<PaidResponse, ClientError> {
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let receipt = match (&challenge_id, headers.get(PAYMENT_RECEIPT)) {
        (Some(_), Some(v)) => Some(Receipt::parse(v.to_str().map_err(|_| {
            WireError::Invalid {
                field: "Payment-Receipt",
                reason: "not ASCII",
            }
        })?)?),
        _ => None,
    };
    let bytes = resp.bytes().await.map_err(http)?;
    if bytes.len() > MAX_BODY {
        return Err(ClientError::Http("answer body above 16 MiB".into()));
    }
    Ok(PaidResponse {
        status,
        headers,
        body: bytes.to_vec(),
        receipt,
        challenge_id,
    })
}
