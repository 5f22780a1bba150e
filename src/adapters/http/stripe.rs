//! A Stripe-compatible [`PaymentProvider`]: PaymentIntents with manual capture.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use async_trait::async_trait;

use crate::domain::{Money, ProviderKey, ProviderReport};
use crate::ports::{
    AuthorizeRequest, CaptureRequest, Clock, CredentialKind, CredentialVault, Lookup,
    PaymentProvider, ProviderError, RefundRequest, Secret, VaultError, VoidRequest,
};

use super::classify::{classify, sanitize, transport, Answer, StripeCall, StripeError};
use super::stripe_wire::{
    self as wire, ErrorJson, ListJson, PaymentIntentJson, PaymentIntentSummary,
};

/// The largest body the adapter reads from the PSP.
const MAX_BODY: usize = 1 << 20;

/// The Stripe API version the adapter is written against (sent as `Stripe-Version`).
pub const STRIPE_API_VERSION: &str = "2024-06-20";

/// How to reach a Stripe-compatible PSP. The API key is a [`Secret`]: it never shows in
/// `Debug`, errors or logs.
///
/// ```
/// use std::time::Duration;
/// use agent_mandate::adapters::http::StripeConfig;
/// use agent_mandate::ports::Secret;
/// let config = StripeConfig::new("http://127.0.0.1:8420", Secret::new("sk_test_123"))
///     .unwrap()
///     .with_timeouts(Duration::from_secs(2), Duration::from_secs(20));
/// assert!(!format!("{config:?}").contains("sk_test_123"));
/// assert!(StripeConfig::new("ftp://example", Secret::new("k")).is_err());
/// assert!(StripeConfig::new("https://user:pw@api.example", Secret::new("k")).is_err());
/// ```
#[derive(Clone)]
pub struct StripeConfig {
    base_url: reqwest::Url,
    api_key: Secret,
    connect_timeout: Duration,
    request_timeout: Duration,
    max_idle_per_host: usize,
    lookup_pages: u32,
    lookup_skew: Duration,
    api_version: Option<String>,
    shared_payment_tokens: bool,
}

impl fmt::Debug for StripeConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StripeConfig")
            .field("base_url", &self.base_url.as_str())
            .field("api_key", &self.api_key)
            .field("connect_timeout", &self.connect_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("max_idle_per_host", &self.max_idle_per_host)
            .field("lookup_pages", &self.lookup_pages)
            .field("lookup_skew", &self.lookup_skew)
            .field("api_version", &self.api_version)
            .field("shared_payment_tokens", &self.shared_payment_tokens)
            .finish()
    }
}

/// A configuration or client construction failure (names the field).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StripeConfigError {
    /// A field is unusable.
    #[error("invalid Stripe configuration: {field}: {message}")]
    Invalid {
        /// The field (`base_url`, `api_key`).
        field: &'static str,
        /// Why.
        message: String,
    },
    /// The HTTP client cannot be built (TLS setup).
    #[error("cannot build the HTTP client: {message}")]
    Client {
        /// Why.
        message: String,
    },
}

impl StripeConfig {
    /// `base_url`: `https://api.stripe.com` or a Stripe-compatible endpoint (`http` is
    /// accepted for a local test server). Defaults: connect timeout 5 s, request timeout
    /// 30 s, `Stripe-Version` [`STRIPE_API_VERSION`], key lookups read up to 10 pages of 100
    /// in a window of 10 minutes either side of the submission.
    pub fn new(base_url: &str, api_key: Secret) -> Result<StripeConfig, StripeConfigError> {
        let invalid = |field, message: String| StripeConfigError::Invalid { field, message };
        let mut url = reqwest::Url::parse(base_url)
            .map_err(|e| invalid("base_url", format!("not a URL: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") || url.cannot_be_a_base() {
            return Err(invalid("base_url", "must be an http(s) URL".into()));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(invalid("base_url", "must have no query or fragment".into()));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(invalid(
                "base_url",
                "must not carry credentials (the API key is separate)".into(),
            ));
        }
        if !url.path().ends_with('/') {
            let path = format!("{}/", url.path());
            url.set_path(&path);
        }
        if api_key.is_empty() || api_key.expose().chars().any(|c| c.is_control() || c == ' ') {
            return Err(invalid(
                "api_key",
                "must be non-empty, without spaces or control characters".into(),
            ));
        }
        Ok(StripeConfig {
            base_url: url,
            api_key,
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(20),
            max_idle_per_host: 8,
            lookup_pages: 10,
            lookup_skew: Duration::from_secs(600),
            api_version: Some(STRIPE_API_VERSION.to_owned()),
            shared_payment_tokens: false,
        })
    }

    /// Sets the connect timeout (a connect failure is `Transient`: nothing was sent) and the
    /// whole-request timeout (past it the outcome is `Ambiguous`).
    pub fn with_timeouts(mut self, connect: Duration, request: Duration) -> StripeConfig {
        self.connect_timeout = connect;
        self.request_timeout = request;
        self
    }

    /// Idle connections kept per host (0: a new connection per request).
    pub fn with_max_idle_per_host(mut self, n: usize) -> StripeConfig {
        self.max_idle_per_host = n;
        self
    }

    /// How many pages of 100 PaymentIntents a lookup by key lists before it gives up with
    /// [`StripeError::LookupExhausted`] (`Invalid`: it never claims an absence it has not
    /// checked, and never answers `Transient` for ever). At least 1.
    pub fn with_lookup_pages(mut self, pages: u32) -> StripeConfig {
        self.lookup_pages = pages.max(1);
        self
    }

    /// The clock skew allowed between this host and the PSP for
    /// [`Lookup::KeySubmitted`]: the list is bounded to PaymentIntents created from
    /// `submitted_at - skew` to `submitted_at + request timeout + skew`.
    pub fn with_lookup_skew(mut self, skew: Duration) -> StripeConfig {
        self.lookup_skew = skew;
        self
    }

    /// The `Stripe-Version` header (`None`: the account's default version).
    pub fn with_api_version(mut self, version: Option<String>) -> StripeConfig {
        self.api_version = version;
        self
    }

    /// Whether a credential of kind [`CredentialKind::SharedPaymentToken`] is charged as
    /// Stripe's `shared_payment_granted_token` (the Stripe charge method of the Machine
    /// Payments Protocol: the seller charges the token an agent issued), with
    /// `automatic_payment_methods[enabled]=true` and `[allow_redirects]=never` instead of a
    /// `payment_method`. Off by default: only payment methods are charged (a Stripe-compatible
    /// server without shared payment tokens, such as localstripe, refuses the field).
    pub fn with_shared_payment_tokens(mut self, on: bool) -> StripeConfig {
        self.shared_payment_tokens = on;
        self
    }

    /// The base URL.
    pub fn base_url(&self) -> &str {
        self.base_url.as_str()
    }
}

/// A [`PaymentProvider`] on a Stripe-compatible API (Stripe, or a local server such as
/// localstripe).
///
/// | port call | Stripe request |
/// |---|---|
/// | `authorize` | `POST /v1/payment_intents` with `confirm=true`, `capture_method=manual` (`automatic` when capturing at once), the `payment_method` the vault resolves, metadata `agent_mandate_{key,attempt_id,snapshot_id,merchant_id,buyer_id}` |
/// | `capture` | `POST /v1/payment_intents/{id}/capture` with `amount_to_capture` |
/// | `void` | `POST /v1/payment_intents/{id}/cancel` |
/// | `refund` | `POST /v1/refunds` with `payment_intent` and `amount`, then the PaymentIntent |
/// | `lookup(Reference)` | `GET /v1/payment_intents/{id}` (404: `None`) |
/// | `lookup(Key)`, `lookup(KeySubmitted)` | `GET /v1/payment_intents/search?query=metadata['agent_mandate_key']:'<key>'`; on a miss (the search index lags) or where search is not supported (404 or 400, remembered), `GET /v1/payment_intents` pages matching metadata `agent_mandate_key`, bounded by `created[gte]`/`created[lte]` around `submitted_at` for `KeySubmitted` (where the server refuses the filter, 400, remembered: unfiltered) and by [`StripeConfig::with_lookup_pages`] |
///
/// A lookup by key answers `Ok(None)` only after reading the whole (windowed) list; when the
/// page bound is reached first it is [`StripeError::LookupExhausted`], an `Invalid` error:
/// the engine keeps the attempt `ambiguous` with its hold (I5) and stops retrying, and an
/// operator resolves it (by reference, or with a larger bound or a narrower window).
///
/// Every mutating call sends the request's key as `Idempotency-Key`. Amounts are minor units
/// of the currency's ISO 4217 exponent; a three-decimal amount must end in 0 (Stripe's rule),
/// and ISK and UGX (which Stripe takes in a legacy two-decimal form) are refused. Errors
/// follow the table in [`super::classify`]. Only `payment_method` credentials (`pm_...`) are
/// accepted, and shared payment tokens when [`StripeConfig::with_shared_payment_tokens`] is on
/// (sent as `shared_payment_granted_token`).
pub struct StripeProvider {
    client: reqwest::Client,
    config: StripeConfig,
    vault: Arc<dyn CredentialVault>,
    clock: Arc<dyn Clock>,
    /// The server answered the Search API with 404 or 400: do not ask again.
    search_unsupported: AtomicBool,
    /// The server refused the `created` filter of the list (400): do not send it again.
    created_filter_unsupported: AtomicBool,
}

impl fmt::Debug for StripeProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StripeProvider")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// A request body: form fields.
pub(crate) type Form = Vec<(String, String)>;

impl StripeProvider {
    /// A provider that resolves credentials through `vault` at the `clock`'s time.
    pub fn new(
        config: StripeConfig,
        vault: Arc<dyn CredentialVault>,
        clock: Arc<dyn Clock>,
    ) -> Result<StripeProvider, StripeConfigError> {
        let client = stripe_client(&config)?;
        Ok(StripeProvider {
            client,
            config,
            vault,
            clock,
            search_unsupported: AtomicBool::new(false),
            created_filter_unsupported: AtomicBool::new(false),
        })
    }

    fn url(&self, segments: &[&str]) -> Result<reqwest::Url, StripeError> {
        stripe_url(&self.config, segments)
    }

    /// Sends one request and reads the answer (status, `Retry-After`, at most 1 MiB of body).
    async fn send(
        &self,
        call: StripeCall,
        method: reqwest::Method,
        url: reqwest::Url,
        key: Option<&ProviderKey>,
        form: Option<&Form>,
    ) -> Result<(u16, Option<String>, Vec<u8>), StripeError> {
        stripe_send(
            &self.client,
            &self.config,
            call,
            method,
            url,
            key.map(ProviderKey::as_str),
            form,
        )
        .await
    }

    /// A mutating call on a PaymentIntent that answers with it. `decline_in`: the currency
    /// of an authorization, whose card error is a decline (`None` for the other calls, where
    /// a card error is a refusal).
    async fn post_intent(
        &self,
        call: StripeCall,
        segments: &[&str],
        key: &ProviderKey,
        mut form: Form,
        redact: Option<&str>,
        decline_in: Option<crate::domain::Currency>,
    ) -> Result<ProviderReport, StripeError> {
        form.push(("expand[]".into(), "latest_charge".into()));
        let url = self.url(segments)?;
        let (status, retry_after, body) = self
            .send(call, reqwest::Method::POST, url, Some(key), Some(&form))
            .await?;
        match (
            classify(call, status, retry_after.as_deref(), &body, redact),
            decline_in,
        ) {
            (Answer::Success(body), _) => parse_report(call, status, body),
            (Answer::Card(error), Some(currency)) => Ok(self.declined(&error, key, currency).await),
            (Answer::Card(error) | Answer::NotFound(error), _) => Err(StripeError::Refused {
                call,
                status,
                code: error.code.clone(),
                message: sanitize(error.message.as_deref().unwrap_or(""), redact),
            }),
            (Answer::Failed(e), _) => Err(e),
        }
    }

    /// The report of a declined authorization: the PaymentIntent the error names (Stripe),
    /// else the one its charge names (localstripe), else the one carrying the key; failing
    /// all of these, a `Declined` report without a reference (the decline is definitive).
    async fn declined(
        &self,
        error: &ErrorJson,
        key: &ProviderKey,
        currency: crate::domain::Currency,
    ) -> ProviderReport {
        let code = error.decline_code();
        let from_pi = |pi: &PaymentIntentJson| {
            wire::report_of(pi).ok().map(|mut r| {
                r.status = crate::domain::ProviderStatus::Declined;
                r.decline_code = Some(code.clone());
                r.captured = Money::zero(r.captured.currency());
                r
            })
        };
        if let Some(report) = error.payment_intent.as_deref().and_then(from_pi) {
            return report;
        }
        let mut found = None;
        if let Some(charge) = &error.charge
            && let Ok(Some((_, pi))) = self.intent_of_charge(charge).await
        {
            found = Some(pi);
        }
        if found.is_none()
            && let Ok(Some((_, pi))) = self.find_by_key(key, None).await
        {
            found = Some(pi);
        }
        if let Some(report) = found.as_ref().and_then(from_pi) {
            return report;
        }
        let zero = Money::zero(currency);
        ProviderReport {
            reference: None,
            status: crate::domain::ProviderStatus::Declined,
            authorized: zero,
            captured: zero,
            refunded: zero,
            decline_code: Some(code),
        }
    }

    async fn get_json(
        &self,
        url: reqwest::Url,
    ) -> Result<Option<(u16, serde_json::Value)>, StripeError> {
        let call = StripeCall::Lookup;
        let (status, retry_after, body) = self
            .send(call, reqwest::Method::GET, url, None, None)
            .await?;
        match classify(call, status, retry_after.as_deref(), &body, None) {
            Answer::Success(body) => serde_json::from_slice(body)
                .map(|v| Some((status, v)))
                .map_err(|e| StripeError::MalformedBody {
                    call,
                    status,
                    detail: format!("not JSON: {e}"),
                }),
            Answer::NotFound(_) => Ok(None),
            Answer::Card(error) => Err(StripeError::Refused {
                call,
                status,
                code: error.code.clone(),
                message: sanitize(error.message.as_deref().unwrap_or(""), None),
            }),
            Answer::Failed(e) => Err(e),
        }
    }

    /// `GET /v1/payment_intents/{id}` with the charge expanded; `None` on 404.
    async fn retrieve(&self, id: &str) -> Result<Option<(u16, PaymentIntentJson)>, StripeError> {
        let mut url = self.url(&["v1", "payment_intents", id])?;
        url.query_pairs_mut()
            .append_pair("expand[]", "latest_charge");
        match self.get_json(url).await? {
            None => Ok(None),
            Some((status, value)) => serde_json::from_value::<PaymentIntentJson>(value)
                .map(|pi| Some((status, pi)))
                .map_err(|e| StripeError::MalformedBody {
                    call: StripeCall::Lookup,
                    status,
                    detail: format!("PaymentIntent: {e}"),
                }),
        }
    }

    async fn intent_of_charge(
        &self,
        charge: &str,
    ) -> Result<Option<(u16, PaymentIntentJson)>, StripeError> {
        let url = self.url(&["v1", "charges", charge])?;
        let Some((status, value)) = self.get_json(url).await? else {
            return Ok(None);
        };
        let charge: wire::ChargeJson =
            serde_json::from_value(value).map_err(|e| StripeError::MalformedBody {
                call: StripeCall::Lookup,
                status,
                detail: format!("Charge: {e}"),
            })?;
        match charge.payment_intent {
            Some(pi) => self.retrieve(&pi).await,
            None => Ok(None),
        }
    }

    /// Finds the PaymentIntent whose metadata carries `key`: the Search API first (a hit is
    /// retrieved; a miss proves nothing, the index lags), then the list, windowed around
    /// `submitted_at` when given. `Ok(None)` only after the whole (windowed) list was read.
    async fn find_by_key(
        &self,
        key: &ProviderKey,
        submitted_at: Option<DateTime<Utc>>,
    ) -> Result<Option<(u16, PaymentIntentJson)>, StripeError> {
        if !self.search_unsupported.load(Ordering::Relaxed)
            && let Some(id) = self.search_by_key(key).await?
        {
            return self.retrieve(&id).await;
        }
        let window = submitted_at.map(|at| self.window(at));
        let filtered = window.filter(|_| !self.created_filter_unsupported.load(Ordering::Relaxed));
        match self.list_by_key(key, filtered).await {
            Err(StripeError::Refused { status: 400, .. }) if filtered.is_some() => {
                // The server does not take the `created` filter (localstripe): list unfiltered.
                // Remembered unless the unfiltered list is refused alike (then the 400 was
                // about something else).
                let found = self.list_by_key(key, None).await;
                if !matches!(found, Err(StripeError::Refused { status: 400, .. })) {
                    self.created_filter_unsupported
                        .store(true, Ordering::Relaxed);
                }
                found
            }
            other => other,
        }
    }

    /// `[submitted_at - skew, submitted_at + request timeout + skew]`, in unix seconds.
    fn window(&self, submitted_at: DateTime<Utc>) -> (i64, i64) {
        let skew = i64::try_from(self.config.lookup_skew.as_secs()).unwrap_or(i64::MAX);
        let timeout = i64::try_from(self.config.request_timeout.as_secs()).unwrap_or(i64::MAX);
        let at = submitted_at.timestamp();
        (
            at.saturating_sub(skew),
            at.saturating_add(timeout)
                .saturating_add(skew)
                .saturating_add(1),
        )
    }

    /// `GET /v1/payment_intents/search`: the id of a PaymentIntent carrying `key`, if the
    /// index has one. A 404 or 400 means the server has no Search API: remembered, `None`.
    async fn search_by_key(&self, key: &ProviderKey) -> Result<Option<String>, StripeError> {
        let call = StripeCall::Lookup;
        let escaped = key.as_str().replace('\\', "\\\\").replace('\'', "\\'");
        let mut url = self.url(&["v1", "payment_intents", "search"])?;
        url.query_pairs_mut()
            .append_pair(
                "query",
                &format!("metadata['{}']:'{escaped}'", wire::META_KEY),
            )
            .append_pair("limit", "100");
        let (status, value) = match self.get_json(url).await {
            Ok(Some(found)) => found,
            Ok(None) | Err(StripeError::Refused { status: 400, .. }) => {
                self.search_unsupported.store(true, Ordering::Relaxed);
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        let page: ListJson<PaymentIntentSummary> =
            serde_json::from_value(value).map_err(|e| StripeError::MalformedBody {
                call,
                status,
                detail: format!("PaymentIntent search result: {e}"),
            })?;
        Ok(page
            .data
            .iter()
            .find(|pi| wire::has_key(pi.metadata.as_ref(), key.as_str()))
            .map(|pi| pi.id.clone()))
    }

    /// Lists `GET /v1/payment_intents` (created in `window`, when given) for the one whose
    /// metadata carries `key`, at most the configured pages.
    async fn list_by_key(
        &self,
        key: &ProviderKey,
        window: Option<(i64, i64)>,
    ) -> Result<Option<(u16, PaymentIntentJson)>, StripeError> {
        let call = StripeCall::Lookup;
        let mut after: Option<String> = None;
        for _ in 0..self.config.lookup_pages {
            let mut url = self.url(&["v1", "payment_intents"])?;
            url.query_pairs_mut().append_pair("limit", "100");
            if let Some((gte, lte)) = window {
                url.query_pairs_mut()
                    .append_pair("created[gte]", &gte.to_string())
                    .append_pair("created[lte]", &lte.to_string());
            }
            if let Some(a) = &after {
                url.query_pairs_mut().append_pair("starting_after", a);
            }
            let Some((status, value)) = self.get_json(url).await? else {
                return Err(StripeError::MalformedBody {
                    call,
                    status: 404,
                    detail: "the PaymentIntent list is not found".into(),
                });
            };
            let page: ListJson<PaymentIntentSummary> =
                serde_json::from_value(value).map_err(|e| StripeError::MalformedBody {
                    call,
                    status,
                    detail: format!("PaymentIntent list: {e}"),
                })?;
            if let Some(pi) = page
                .data
                .iter()
                .find(|pi| wire::has_key(pi.metadata.as_ref(), key.as_str()))
            {
                return self.retrieve(&pi.id).await;
            }
            match (page.has_more, page.data.last()) {
                (true, Some(last)) => after = Some(last.id.clone()),
                _ => return Ok(None),
            }
        }
        Err(StripeError::LookupExhausted {
            pages: self.config.lookup_pages,
            window,
        })
    }
}

fn parse_report(call: StripeCall, status: u16, body: &[u8]) -> Result<ProviderReport, StripeError> {
    let pi: PaymentIntentJson =
        serde_json::from_slice(body).map_err(|e| StripeError::MalformedBody {
            call,
            status,
            detail: format!("PaymentIntent: {e}"),
        })?;
    wire::report_of(&pi).map_err(|detail| StripeError::MalformedBody {
        call,
        status,
        detail,
    })
}

/// The HTTP client of a Stripe-compatible API: the configuration's timeouts and idle pool,
/// redirects never followed.
pub(crate) fn stripe_client(config: &StripeConfig) -> Result<reqwest::Client, StripeConfigError> {
    super::tls::client_builder()
        .map_err(|e| StripeConfigError::Client {
            message: e.to_string(),
        })?
        .connect_timeout(config.connect_timeout)
        .timeout(config.request_timeout)
        .pool_max_idle_per_host(config.max_idle_per_host)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("agent-mandate/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| StripeConfigError::Client {
            message: e.to_string(),
        })
}

/// The URL of `segments` under the configuration's base URL.
pub(crate) fn stripe_url(
    config: &StripeConfig,
    segments: &[&str],
) -> Result<reqwest::Url, StripeError> {
    let mut url = config.base_url.clone();
    {
        let mut path = url.path_segments_mut().map_err(|()| StripeError::Request {
            call: StripeCall::Lookup,
            field: "base_url",
            message: "cannot be a base".into(),
        })?;
        path.pop_if_empty();
        path.extend(segments);
    }
    Ok(url)
}

/// Sends one request to a Stripe-compatible API (bearer API key, `Stripe-Version`,
/// `Idempotency-Key` when given, a form body when given) and reads the answer: status,
/// `Retry-After`, at most 1 MiB of body. Transport failures are classified by
/// [`transport`]; the API key never appears in an error.
pub(crate) async fn stripe_send(
    client: &reqwest::Client,
    config: &StripeConfig,
    call: StripeCall,
    method: reqwest::Method,
    url: reqwest::Url,
    key: Option<&str>,
    form: Option<&Form>,
) -> Result<(u16, Option<String>, Vec<u8>), StripeError> {
    let mut request = client
        .request(method, url)
        .bearer_auth(config.api_key.expose());
    if let Some(version) = &config.api_version {
        request = request.header("Stripe-Version", version);
    }
    if let Some(key) = key {
        request = request.header("Idempotency-Key", key);
    }
    if let Some(form) = form {
        request = request.form(form);
    }
    let mut response = request.send().await.map_err(|e| transport(call, &e))?;
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| transport(call, &e))? {
        if body.len().saturating_add(chunk.len()) > MAX_BODY {
            return Err(StripeError::MalformedBody {
                call,
                status,
                detail: format!("body larger than {MAX_BODY} bytes"),
            });
        }
        body.extend_from_slice(&chunk);
    }
    Ok((status, retry_after, body))
}

/// Stripe's amount for `money`: minor units of the ISO exponent, positive; three-decimal
/// amounts must end in 0; ISK and UGX are refused (Stripe takes them in a legacy two-decimal
/// form).
/// Stripe's minimum charge amount in `currency` (in its minor units), for the currencies whose
/// minimum Stripe publishes as a fixed amount; `None` for the others (Stripe then checks).
/// Card networks do not take smaller charges: an authorization below it is refused before any
/// call.
///
/// ```
/// use agent_mandate::adapters::http::stripe_minimum_charge;
/// use agent_mandate::domain::Currency;
/// assert_eq!(stripe_minimum_charge(Currency::EUR), Some(50));
/// assert_eq!(stripe_minimum_charge(Currency::JPY), Some(50));
/// ```
pub fn stripe_minimum_charge(currency: crate::domain::Currency) -> Option<i64> {
    Some(match currency.code() {
        "USD" | "EUR" | "CAD" | "AUD" | "CHF" | "NZD" | "SGD" | "BRL" | "INR" => 50,
        "GBP" => 30,
        "JPY" => 50,
        "DKK" => 250,
        "NOK" | "SEK" => 300,
        "HKD" => 400,
        "MXN" | "THB" => 1000,
        "PLN" | "RON" | "AED" | "MYR" => 200,
        "BGN" => 100,
        "CZK" => 1500,
        "HUF" => 17500,
        _ => return None,
    })
}

fn stripe_amount(call: StripeCall, money: &Money) -> Result<(i64, String), StripeError> {
    let currency = money.currency();
    let code = currency.code();
    if matches!(code, "ISK" | "UGX") {
        return Err(StripeError::Request {
            call,
            field: "amount.currency",
            message: format!("{code}: Stripe takes it in a legacy two-decimal form, not mapped"),
        });
    }
    let minor = money.minor_units();
    if minor <= 0 {
        return Err(StripeError::Request {
            call,
            field: "amount",
            message: "must be more than zero".into(),
        });
    }
    if call == StripeCall::Authorize
        && let Some(min) = stripe_minimum_charge(currency)
        && minor < min
    {
        return Err(StripeError::Request {
            call,
            field: "amount",
            message: format!(
                "{money} is below Stripe's minimum charge of {}",
                currency.format_minor(i128::from(min))
            ),
        });
    }
    if currency.exponent() == 3 && minor % 10 != 0 {
        return Err(StripeError::Request {
            call,
            field: "amount",
            message: format!("{money}: Stripe takes three-decimal amounts in multiples of 10"),
        });
    }
    Ok((minor, code.to_ascii_lowercase()))
}

fn vault_error(call: StripeCall, e: VaultError) -> StripeError {
    match e {
        VaultError::Unavailable { message } => StripeError::VaultUnavailable { call, message },
        VaultError::Other(e) => StripeError::VaultUnavailable {
            call,
            message: e.to_string(),
        },
        other => StripeError::Request {
            call,
            field: "credential",
            message: other.to_string(),
        },
    }
}

/// The calls themselves; the [`PaymentProvider`] methods run them under the hard deadline.
impl StripeProvider {
    async fn authorize_call(
        &self,
        req: &AuthorizeRequest,
    ) -> Result<ProviderReport, ProviderError> {
        let call = StripeCall::Authorize;
        let (amount, currency) = stripe_amount(call, &req.amount)?;
        let credential = self
            .vault
            .resolve(&req.credential, self.clock.now())
            .await
            .map_err(|e| vault_error(call, e))?;
        let spt = match credential.stored.kind {
            CredentialKind::PaymentMethod => false,
            CredentialKind::SharedPaymentToken if self.config.shared_payment_tokens => true,
            kind => {
                return Err(StripeError::Request {
                    call,
                    field: "credential",
                    message: format!(
                        "{}: a {kind:?} credential; this adapter takes payment methods (pm_...){}",
                        req.credential,
                        if kind == CredentialKind::SharedPaymentToken {
                            " (shared payment tokens are off: StripeConfig::with_shared_payment_tokens)"
                        } else {
                            ""
                        }
                    ),
                }
                .into());
            }
        };
        let pm = credential.secret.expose();
        let capture_method = if req.capture { "automatic" } else { "manual" };
        let mut form: Form = vec![
            ("amount".into(), amount.to_string()),
            ("currency".into(), currency),
        ];
        if spt {
            form.extend([
                ("shared_payment_granted_token".into(), pm.to_owned()),
                ("automatic_payment_methods[enabled]".into(), "true".into()),
                (
                    "automatic_payment_methods[allow_redirects]".into(),
                    "never".into(),
                ),
            ]);
        } else {
            form.extend([
                ("payment_method".into(), pm.to_owned()),
                ("payment_method_types[]".into(), "card".into()),
            ]);
        }
        form.extend([
            ("capture_method".into(), capture_method.into()),
            ("confirm".into(), "true".into()),
            (format!("metadata[{}]", wire::META_KEY), req.key.to_string()),
            (
                format!("metadata[{}]", wire::META_ATTEMPT),
                req.attempt_id.to_string(),
            ),
            (
                format!("metadata[{}]", wire::META_SNAPSHOT),
                req.snapshot_id.to_string(),
            ),
            (
                format!("metadata[{}]", wire::META_MERCHANT),
                req.merchant_id.to_string(),
            ),
            (
                format!("metadata[{}]", wire::META_BUYER),
                req.buyer_id.to_string(),
            ),
        ]);
        let report = self
            .post_intent(
                call,
                &["v1", "payment_intents"],
                &req.key,
                form,
                Some(pm),
                Some(req.amount.currency()),
            )
            .await?;
        Ok(report)
    }

    async fn capture_call(&self, req: &CaptureRequest) -> Result<ProviderReport, ProviderError> {
        let call = StripeCall::Capture;
        let (amount, _) = stripe_amount(call, &req.amount)?;
        let form: Form = vec![("amount_to_capture".into(), amount.to_string())];
        let id = req.reference.as_str();
        Ok(self
            .post_intent(
                call,
                &["v1", "payment_intents", id, "capture"],
                &req.key,
                form,
                None,
                None,
            )
            .await?)
    }

    async fn void_call(&self, req: &VoidRequest) -> Result<ProviderReport, ProviderError> {
        let call = StripeCall::Void;
        let id = req.reference.as_str();
        Ok(self
            .post_intent(
                call,
                &["v1", "payment_intents", id, "cancel"],
                &req.key,
                Vec::new(),
                None,
                None,
            )
            .await?)
    }

    async fn refund_call(&self, req: &RefundRequest) -> Result<ProviderReport, ProviderError> {
        let call = StripeCall::Refund;
        let (amount, _) = stripe_amount(call, &req.amount)?;
        let form: Form = vec![
            ("payment_intent".into(), req.reference.to_string()),
            ("amount".into(), amount.to_string()),
            (
                format!("metadata[{}]", wire::META_ATTEMPT),
                req.attempt_id.to_string(),
            ),
        ];
        let url = self.url(&["v1", "refunds"])?;
        let (status, retry_after, body) = self
            .send(
                call,
                reqwest::Method::POST,
                url,
                Some(&req.key),
                Some(&form),
            )
            .await?;
        match classify(call, status, retry_after.as_deref(), &body, None) {
            Answer::Success(_) => {}
            Answer::Card(error) | Answer::NotFound(error) => {
                return Err(StripeError::Refused {
                    call,
                    status,
                    code: error.code.clone(),
                    message: sanitize(error.message.as_deref().unwrap_or(""), None),
                }
                .into())
            }
            Answer::Failed(e) => return Err(e.into()),
        }
        // The refund is made: from here a failure to read the payment back is ambiguous
        // (money moved; reconcile with a lookup), never transient.
        let ambiguous = |e: StripeError| ProviderError::Ambiguous {
            message: format!("refund accepted, payment not read back: {e}"),
        };
        let (status, pi) = self
            .retrieve(req.reference.as_str())
            .await
            .map_err(ambiguous)?
            .ok_or_else(|| ProviderError::Ambiguous {
                message: format!("refund accepted, payment {} not found", req.reference),
            })?;
        wire::report_of(&pi).map_err(|detail| {
            ambiguous(StripeError::MalformedBody {
                call,
                status,
                detail,
            })
        })
    }

    async fn lookup_call(&self, lookup: &Lookup) -> Result<Option<ProviderReport>, ProviderError> {
        let pi = match lookup {
            Lookup::Reference(r) => self.retrieve(r.as_str()).await?,
            Lookup::Key(k) => self.find_by_key(k, None).await?,
            Lookup::KeySubmitted { key, submitted_at } => {
                self.find_by_key(key, Some(*submitted_at)).await?
            }
        };
        let Some((status, pi)) = pi else {
            return Ok(None);
        };
        let report = wire::report_of(&pi).map_err(|detail| StripeError::MalformedBody {
            call: StripeCall::Lookup,
            status,
            detail,
        })?;
        Ok(Some(report))
    }
}

/// The hard deadline of a call: it answers within [`PaymentProvider::deadline`] whatever the
/// network does (a key lookup that pages, a retry inside a call). Past it a call that can move
/// money is `Ambiguous` (the request may have been sent) and a lookup `Transient`.
async fn within<T>(
    deadline: Duration,
    call: StripeCall,
    f: impl std::future::Future<Output = Result<T, ProviderError>>,
) -> Result<T, ProviderError> {
    match tokio::time::timeout(deadline, f).await {
        Ok(result) => result,
        Err(_) => {
            let message = format!(
                "stripe {call:?}: no answer within the adapter's deadline of {} s",
                deadline.as_secs()
            );
            Err(if call.mutates() {
                ProviderError::Ambiguous { message }
            } else {
                ProviderError::Transient {
                    message,
                    retry_after: None,
                }
            })
        }
    }
}

#[async_trait]
impl PaymentProvider for StripeProvider {
    /// The connect timeout plus twice the request timeout (a call makes at most two requests
    /// in a row), enforced as a hard deadline around each call.
    fn deadline(&self) -> Duration {
        self.config
            .connect_timeout
            .saturating_add(self.config.request_timeout.saturating_mul(2))
    }

    async fn authorize(&self, req: &AuthorizeRequest) -> Result<ProviderReport, ProviderError> {
        within(
            self.deadline(),
            StripeCall::Authorize,
            self.authorize_call(req),
        )
        .await
    }

    async fn capture(&self, req: &CaptureRequest) -> Result<ProviderReport, ProviderError> {
        within(self.deadline(), StripeCall::Capture, self.capture_call(req)).await
    }

    async fn void(&self, req: &VoidRequest) -> Result<ProviderReport, ProviderError> {
        within(self.deadline(), StripeCall::Void, self.void_call(req)).await
    }

    async fn refund(&self, req: &RefundRequest) -> Result<ProviderReport, ProviderError> {
        within(self.deadline(), StripeCall::Refund, self.refund_call(req)).await
    }

    async fn lookup(&self, lookup: &Lookup) -> Result<Option<ProviderReport>, ProviderError> {
        within(
            self.deadline(),
            StripeCall::Lookup,
            self.lookup_call(lookup),
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Currency;

    fn amount(text: &str, currency: Currency) -> Result<(i64, String), StripeError> {
        stripe_amount(
            StripeCall::Authorize,
            &Money::parse(text, currency).expect("money"),
        )
    }

    #[test]
    fn amounts_are_minor_units_of_the_currency_exponent() {
        assert_eq!(
            amount("129.00", Currency::EUR).expect("ok"),
            (12900, "eur".into())
        );
        assert_eq!(
            amount("1000", Currency::JPY).expect("ok"),
            (1000, "jpy".into())
        );
        assert_eq!(
            amount("1.250", Currency::BHD).expect("ok"),
            (1250, "bhd".into())
        );
        let field = |r: Result<(i64, String), StripeError>| match r {
            Err(StripeError::Request { field, .. }) => field,
            other => panic!("{other:?}"),
        };
        assert_eq!(field(amount("1.255", Currency::BHD)), "amount");
        assert_eq!(field(amount("0.00", Currency::EUR)), "amount");
        let isk = Currency::from_code("ISK").expect("ISK");
        assert_eq!(field(amount("100", isk)), "amount.currency");
    }

    #[test]
    fn authorizations_below_the_minimum_charge_are_refused() {
        let field = |r: Result<(i64, String), StripeError>| match r {
            Err(StripeError::Request { field, .. }) => field,
            other => panic!("expected a request error, got {other:?}"),
        };
        assert_eq!(field(amount("0.49", Currency::EUR)), "amount");
        assert_eq!(field(amount("0.01", Currency::USD)), "amount");
        assert_eq!(field(amount("0.29", Currency::GBP)), "amount");
        assert_eq!(field(amount("49", Currency::JPY)), "amount");
        assert!(amount("0.50", Currency::EUR).is_ok());
        assert!(amount("0.30", Currency::GBP).is_ok());
        // Captures and refunds of part of a payment may be smaller.
        let part = Money::parse("0.10", Currency::EUR).expect("money");
        assert!(stripe_amount(StripeCall::Capture, &part).is_ok());
        assert!(stripe_amount(StripeCall::Refund, &part).is_ok());
    }

    #[test]
    fn the_config_names_the_bad_field() {
        let field = |url: &str, key: &str| match StripeConfig::new(url, Secret::new(key)) {
            Err(StripeConfigError::Invalid { field, .. }) => field,
            other => panic!("{other:?}"),
        };
        assert_eq!(field("not a url", "k"), "base_url");
        assert_eq!(field("https://x.example/?a=b", "k"), "base_url");
        assert_eq!(field("https://x.example", ""), "api_key");
        assert_eq!(field("https://x.example", "sk test"), "api_key");
        let c = StripeConfig::new("http://127.0.0.1:1/prefix", Secret::new("sk_x")).expect("ok");
        assert_eq!(c.base_url(), "http://127.0.0.1:1/prefix/");
    }
}
