//! How a Stripe-compatible PSP's answer (or its absence) is classified.
//!
//! The rule for the calls that can move money (authorize, capture, void, refund) is
//! *ambiguous by default*: any answer that comes after the request may have reached the PSP
//! is `Ambiguous` (the engine keeps the hold and reconciles with a lookup, I5, I13), unless
//! it proves that nothing was processed. A gateway or load balancer in front of the PSP can
//! answer 500, 502 or 504 after the PSP authorized; a 409 means another request with the same
//! key is (or was) being processed. Only two things prove "not processed": the request never
//! left (connection refused, DNS failure, connect timeout), or the PSP documents the answer
//! as not processed (Stripe: 429 rate limiting).
//!
//! | what happened | mutating call (authorize, capture, void, refund) | lookup |
//! |---|---|---|
//! | 2xx with a readable body | the report | the report |
//! | 402, or an error of type `card_error`, on authorize | `Ok` report `Declined` with the decline code | - |
//! | 402 / `card_error` on capture, void, refund | `Invalid` (naming the code) | `Invalid` |
//! | 404 | `Invalid` | `Ok(None)` |
//! | 429 (rate limited: documented as not processed) | `Transient` (with `Retry-After`) | `Transient` |
//! | 5xx (from the PSP or a gateway before it), 408, 409, an error of type `idempotency_error` | `Ambiguous` ([`StripeError::Indeterminate`]) | `Transient` |
//! | other 4xx (400, 401, 403, 422, ...) | `Invalid` | `Invalid` |
//! | 1xx / 3xx (not followed), any other status | `Ambiguous` | `Transient` |
//! | connection refused, DNS failure, connect timeout (nothing sent) | `Transient` | `Transient` |
//! | timeout or connection lost after the request was sent | `Ambiguous` | `Transient` |
//! | a lookup by key that reads its page bound without an answer | - | `Invalid` ([`StripeError::LookupExhausted`]) |
//! | 2xx with an unreadable body, a body over 1 MiB | `Ambiguous` ([`StripeError::MalformedBody`] with the status) | `Transient` |
//!
//! An `idempotency_error` (Stripe: the key was already used with other parameters) says a
//! request with this key was processed before: the money may have moved, so it is never a
//! definitive refusal. A lookup moves no money, so its failures are `Transient` (except a
//! definitive 4xx refusal).

use std::time::Duration;

use crate::ports::ProviderError;

use super::stripe_wire::{ErrorEnvelope, ErrorJson};

/// Which PSP call, for error messages and classification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StripeCall {
    /// Create and confirm a PaymentIntent.
    Authorize,
    /// Capture a PaymentIntent.
    Capture,
    /// Cancel a PaymentIntent.
    Void,
    /// Create a Refund.
    Refund,
    /// Retrieve or list PaymentIntents (moves no money).
    Lookup,
    /// Issue a shared payment token (`POST /v1/shared_payment/issued_tokens`): grants a
    /// seller authority to charge, so an unknown outcome is ambiguous.
    IssueToken,
}

impl StripeCall {
    /// The stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            StripeCall::Authorize => "authorize",
            StripeCall::Capture => "capture",
            StripeCall::Void => "void",
            StripeCall::Refund => "refund",
            StripeCall::Lookup => "lookup",
            StripeCall::IssueToken => "issue_token",
        }
    }

    /// Whether the call can move money (so an unknown outcome is ambiguous).
    pub fn mutates(self) -> bool {
        match self {
            StripeCall::Authorize
            | StripeCall::Capture
            | StripeCall::Void
            | StripeCall::Refund
            | StripeCall::IssueToken => true,
            StripeCall::Lookup => false,
        }
    }
}

impl std::fmt::Display for StripeCall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A Stripe adapter failure. Never carries the API key or a credential (a PSP message that
/// echoes the payment method is redacted). Converts into [`ProviderError`] by the table in
/// this module's docs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StripeError {
    /// The PSP refused the request (4xx other than 404 on a lookup, 408, 409 and 429, and
    /// not an `idempotency_error`). Definitive: `Invalid`.
    #[error("{call}: the PSP refused the request (HTTP {status}, code {code:?}): {message}")]
    Refused {
        /// The call.
        call: StripeCall,
        /// The HTTP status.
        status: u16,
        /// The PSP's error code, if any.
        code: Option<String>,
        /// The PSP's message.
        message: String,
    },
    /// The PSP did not process the request (429: Stripe documents a rate-limited request as
    /// not processed). Retry with the same key: `Transient`.
    #[error("{call}: the PSP is unavailable (HTTP {status}): {message}")]
    Unavailable {
        /// The call.
        call: StripeCall,
        /// The HTTP status.
        status: u16,
        /// The PSP's message.
        message: String,
        /// The `Retry-After` the PSP sent.
        retry_after: Option<Duration>,
    },
    /// The PSP, or a gateway in front of it, answered with an error that does not prove the
    /// request was not processed (5xx, 408, 409, `idempotency_error`): `Ambiguous` for a
    /// mutating call (money may have moved; reconcile with a lookup), `Transient` for a lookup.
    #[error("{call}: the outcome is unknown (HTTP {status}, code {code:?}): {message}")]
    Indeterminate {
        /// The call.
        call: StripeCall,
        /// The HTTP status.
        status: u16,
        /// The PSP's error code or type, if any.
        code: Option<String>,
        /// The PSP's message.
        message: String,
        /// The `Retry-After` the answer carried (used for a lookup's retry).
        retry_after: Option<Duration>,
    },
    /// The request never reached the PSP (connection refused, DNS, connect timeout):
    /// `Transient`.
    #[error("{call}: the request was not sent: {message}")]
    NotSent {
        /// The call.
        call: StripeCall,
        /// Why.
        message: String,
    },
    /// The request was sent and no complete answer came back (timeout, connection lost):
    /// `Ambiguous` for a mutating call, `Transient` for a lookup.
    #[error("{call}: no answer after sending the request: {message}")]
    NoAnswer {
        /// The call.
        call: StripeCall,
        /// Why.
        message: String,
    },
    /// The PSP answered with a body the adapter cannot read, or a status it does not expect.
    /// With a 2xx on a mutating call money may have moved: `Ambiguous`; otherwise classified
    /// by its status.
    #[error("{call}: unreadable answer (HTTP {status}): {detail}")]
    MalformedBody {
        /// The call.
        call: StripeCall,
        /// The HTTP status.
        status: u16,
        /// What is wrong (names the field).
        detail: String,
    },
    /// The request cannot be built (amount, currency, credential). Nothing was sent:
    /// `Invalid`.
    #[error("{call}: invalid {field}: {message}")]
    Request {
        /// The call.
        call: StripeCall,
        /// The field (`amount`, `amount.currency`, `credential`).
        field: &'static str,
        /// Why.
        message: String,
    },
    /// A lookup by key read its page bound ([`super::StripeConfig::with_lookup_pages`])
    /// without finding the key or the end of the list: neither presence nor absence is
    /// proven, and asking again reads the same pages. `Invalid` (so the engine does not
    /// retry for ever; the attempt stays `ambiguous` with its hold until an operator resolves
    /// it, by reference or with a larger bound or narrower window).
    #[error("lookup by key: not found in {pages} pages of 100 PaymentIntents{}, and the list goes on; absence not proven", window.map(|(gte, lte)| format!(" created {gte}..={lte}")).unwrap_or_default())]
    LookupExhausted {
        /// The page bound.
        pages: u32,
        /// The `created` window listed (unix seconds, inclusive), if the list was windowed.
        window: Option<(i64, i64)>,
    },
    /// The vault could not be reached to resolve the credential. Nothing was sent:
    /// `Transient`.
    #[error("{call}: the vault is unavailable: {message}")]
    VaultUnavailable {
        /// The call.
        call: StripeCall,
        /// Why.
        message: String,
    },
}

impl From<StripeError> for ProviderError {
    fn from(e: StripeError) -> ProviderError {
        let message = e.to_string();
        match e {
            StripeError::Refused { .. }
            | StripeError::Request { .. }
            | StripeError::LookupExhausted { .. } => ProviderError::Invalid { message },
            StripeError::Unavailable { retry_after, .. } => ProviderError::Transient {
                message,
                retry_after,
            },
            StripeError::NotSent { .. } | StripeError::VaultUnavailable { .. } => {
                ProviderError::Transient {
                    message,
                    retry_after: None,
                }
            }
            StripeError::Indeterminate {
                call, retry_after, ..
            } => {
                if call.mutates() {
                    ProviderError::Ambiguous { message }
                } else {
                    ProviderError::Transient {
                        message,
                        retry_after,
                    }
                }
            }
            StripeError::NoAnswer { call, .. } => {
                if call.mutates() {
                    ProviderError::Ambiguous { message }
                } else {
                    ProviderError::Transient {
                        message,
                        retry_after: None,
                    }
                }
            }
            StripeError::MalformedBody { call, status, .. } => match status {
                429 => ProviderError::Transient {
                    message,
                    retry_after: None,
                },
                400..=499 if status != 408 && status != 409 => ProviderError::Invalid { message },
                _ if call.mutates() => ProviderError::Ambiguous { message },
                _ => ProviderError::Transient {
                    message,
                    retry_after: None,
                },
            },
        }
    }
}

/// A classified HTTP answer.
#[derive(Debug)]
pub(crate) enum Answer<'a> {
    /// 2xx: the body to parse.
    Success(&'a [u8]),
    /// A card error (402 or `type: card_error`): a decline, for an authorization.
    Card(Box<ErrorJson>),
    /// 404.
    NotFound(Box<ErrorJson>),
    /// Everything else, as an error.
    Failed(StripeError),
}

/// Classifies an HTTP answer by status, error body and `Retry-After` (never panics on any
/// body). `redact` is removed from every PSP message (the payment method the request sent).
pub(crate) fn classify<'a>(
    call: StripeCall,
    status: u16,
    retry_after: Option<&str>,
    body: &'a [u8],
    redact: Option<&str>,
) -> Answer<'a> {
    if (200..300).contains(&status) {
        return Answer::Success(body);
    }
    let parsed = serde_json::from_slice::<ErrorEnvelope>(body).ok();
    let error = parsed.map(|p| p.error).unwrap_or_default();
    let message = sanitize(
        error.message.as_deref().unwrap_or("(no error message)"),
        redact,
    );
    if status == 402 || error.kind.as_deref() == Some("card_error") {
        return Answer::Card(Box::new(error));
    }
    let retry_after = retry_after.and_then(parse_retry_after);
    if error.kind.as_deref() == Some("idempotency_error") {
        // A request with this key was processed before (with other parameters, or still in
        // flight): never a definitive refusal.
        return Answer::Failed(StripeError::Indeterminate {
            call,
            status,
            code: Some("idempotency_error".into()),
            message,
            retry_after,
        });
    }
    match status {
        404 => Answer::NotFound(Box::new(error)),
        429 => Answer::Failed(StripeError::Unavailable {
            call,
            status,
            message,
            retry_after,
        }),
        408 | 409 | 500..=599 => Answer::Failed(StripeError::Indeterminate {
            call,
            status,
            code: error.code.clone().or_else(|| error.kind.clone()),
            message,
            retry_after,
        }),
        400..=499 => Answer::Failed(StripeError::Refused {
            call,
            status,
            code: error.code.clone(),
            message,
        }),
        _ => Answer::Failed(StripeError::MalformedBody {
            call,
            status,
            detail: format!("unexpected HTTP status {status}"),
        }),
    }
}

/// The PSP's message, cut to 300 characters, with `redact` removed.
pub(crate) fn sanitize(message: &str, redact: Option<&str>) -> String {
    let mut text: String = message.chars().take(300).collect();
    if let Some(secret) = redact.filter(|s| !s.is_empty()) {
        text = text.replace(secret, "[REDACTED]");
    }
    text
}

/// `Retry-After` in seconds (the HTTP-date form is ignored).
fn parse_retry_after(value: &str) -> Option<Duration> {
    value
        .trim()
        .parse::<u64>()
        .ok()
        .map(|s| Duration::from_secs(s.min(3600)))
}

/// Classifies a transport failure: nothing sent -> [`StripeError::NotSent`]; sent, no
/// complete answer -> [`StripeError::NoAnswer`].
pub(crate) fn transport(call: StripeCall, e: &reqwest::Error) -> StripeError {
    // reqwest's Display names the URL; keep only the error kind and its sources.
    let mut message = String::new();
    let mut source: Option<&dyn std::error::Error> = std::error::Error::source(e);
    while let Some(s) = source {
        if !message.is_empty() {
            message.push_str(": ");
        }
        message.push_str(&s.to_string());
        source = s.source();
    }
    if e.is_connect() {
        StripeError::NotSent {
            call,
            message: format!("connect: {message}"),
        }
    } else if e.is_builder() {
        StripeError::Request {
            call,
            field: "request",
            message,
        }
    } else if e.is_timeout() {
        StripeError::NoAnswer {
            call,
            message: format!("timed out: {message}"),
        }
    } else {
        StripeError::NoAnswer { call, message }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(call: StripeCall, status: u16, body: &[u8]) -> Result<&'static str, ProviderError> {
        match classify(call, status, Some("7"), body, Some("pm_secret")) {
            Answer::Success(_) => Ok("success"),
            Answer::Card(_) => Ok("card"),
            Answer::NotFound(_) => Ok("not_found"),
            Answer::Failed(e) => Err(e.into()),
        }
    }

    #[test]
    fn the_classification_table() {
        use StripeCall::*;
        assert_eq!(class(Authorize, 200, b"{}").ok(), Some("success"));
        assert_eq!(class(Authorize, 402, b"garbage").ok(), Some("card"));
        assert_eq!(
            class(Capture, 400, br#"{"error":{"type":"card_error"}}"#).ok(),
            Some("card")
        );
        assert_eq!(class(Lookup, 404, b"").ok(), Some("not_found"));
        assert!(matches!(
            class(Authorize, 400, b"{}"),
            Err(ProviderError::Invalid { .. })
        ));
        assert!(matches!(
            class(Authorize, 401, b"<html>"),
            Err(ProviderError::Invalid { .. })
        ));
        for status in [408, 409, 429, 500, 502, 503, 599] {
            assert!(
                matches!(
                    class(Lookup, status, b"\xff\xfe"),
                    Err(ProviderError::Transient { .. })
                ),
                "a lookup moves no money: {status}"
            );
        }
        assert!(matches!(
            class(Refund, 429, b"\xff\xfe"),
            Err(ProviderError::Transient { .. })
        ));
        match class(Authorize, 429, b"{}") {
            Err(ProviderError::Transient { retry_after, .. }) => {
                assert_eq!(retry_after, Some(Duration::from_secs(7)))
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            class(Authorize, 302, b""),
            Err(ProviderError::Ambiguous { .. })
        ));
        assert!(matches!(
            class(Lookup, 302, b""),
            Err(ProviderError::Transient { .. })
        ));
    }

    #[test]
    fn a_psp_message_never_echoes_the_credential() {
        let body = br#"{"error":{"type":"invalid_request_error","message":"No such PaymentMethod: 'pm_secret'"}}"#;
        let e = class(StripeCall::Authorize, 400, body).expect_err("refused");
        assert!(!e.to_string().contains("pm_secret"), "{e}");
        assert!(e.to_string().contains("[REDACTED]"), "{e}");
    }

    #[test]
    fn malformed_bodies_are_classified_by_status_and_call() {
        let err = |call, status| -> ProviderError {
            StripeError::MalformedBody {
                call,
                status,
                detail: "x".into(),
            }
            .into()
        };
        assert!(matches!(
            err(StripeCall::Capture, 200),
            ProviderError::Ambiguous { .. }
        ));
        assert!(matches!(
            err(StripeCall::Lookup, 200),
            ProviderError::Transient { .. }
        ));
        assert!(matches!(
            err(StripeCall::Capture, 400),
            ProviderError::Invalid { .. }
        ));
        assert!(matches!(
            err(StripeCall::Capture, 503),
            ProviderError::Ambiguous { .. }
        ));
        assert!(matches!(
            err(StripeCall::Capture, 429),
            ProviderError::Transient { .. }
        ));
        assert!(matches!(
            err(StripeCall::Lookup, 503),
            ProviderError::Transient { .. }
        ));
    }

    const MUTATING: [StripeCall; 4] = [
        StripeCall::Authorize,
        StripeCall::Capture,
        StripeCall::Void,
        StripeCall::Refund,
    ];

    /// I5, I13, I2: a gateway in front of the PSP answers 500, 502, 503 or 504 (or the PSP
    /// answers 409: a request with this key is in flight) after the PSP may have authorized.
    /// Classified `Transient`, the engine released the hold and let a second payment past
    /// the cap; every such answer on a call that can move money must be `Ambiguous`.
    #[test]
    fn gateway_5xx_and_409_after_sending_are_ambiguous_on_every_mutating_call() {
        let bodies: [&[u8]; 3] = [
            b"",
            b"<html>Bad Gateway</html>",
            br#"{"error":{"type":"api_error","message":"boom"}}"#,
        ];
        for call in MUTATING {
            for status in [500, 502, 503, 504, 409, 408] {
                for body in bodies {
                    let class = class(call, status, body);
                    assert!(
                        matches!(class, Err(ProviderError::Ambiguous { .. })),
                        "{call} HTTP {status} {body:?}: {class:?}"
                    );
                }
            }
        }
    }

    /// I5, I13: an `idempotency_error` says a request with this key was processed before; a
    /// definitive refusal would fail an attempt whose money may have moved.
    #[test]
    fn idempotency_error_is_ambiguous_never_a_refusal() {
        let body = br#"{"error":{"type":"idempotency_error","message":"Keys for idempotent requests can only be used with the same parameters"}}"#;
        for call in MUTATING {
            for status in [400, 409] {
                assert!(
                    matches!(
                        class(call, status, body),
                        Err(ProviderError::Ambiguous { .. })
                    ),
                    "{call} {status}"
                );
            }
        }
    }

    /// I13: `Transient` only where nothing was processed: a rate limit the PSP documents as
    /// not processed (with its `Retry-After`), a request that was never sent.
    #[test]
    fn only_provably_unprocessed_answers_are_transient() {
        for call in MUTATING {
            match class(call, 429, br#"{"error":{"type":"rate_limit_error"}}"#) {
                Err(ProviderError::Transient { retry_after, .. }) => {
                    assert_eq!(retry_after, Some(Duration::from_secs(7)), "{call}")
                }
                other => panic!("{call}: {other:?}"),
            }
            let not_sent: ProviderError = StripeError::NotSent {
                call,
                message: "connect: connection refused".into(),
            }
            .into();
            assert!(
                matches!(not_sent, ProviderError::Transient { .. }),
                "{call}"
            );
            let lost: ProviderError = StripeError::NoAnswer {
                call,
                message: "connection reset".into(),
            }
            .into();
            assert!(matches!(lost, ProviderError::Ambiguous { .. }), "{call}");
        }
    }

    #[test]
    fn no_body_and_status_makes_it_panic() {
        let bodies: [&[u8]; 6] = [
            b"",
            b"null",
            b"[]",
            b"{\"error\":null}",
            b"{\"error\":{\"message\":12,\"type\":[]}}",
            &[0xff; 64],
        ];
        for status in [
            0u16, 1, 99, 100, 200, 204, 301, 399, 400, 402, 404, 418, 500, 999,
        ] {
            for body in bodies {
                for call in [StripeCall::Authorize, StripeCall::Lookup] {
                    let _ = classify(call, status, Some("-1"), body, None);
                    let _ = classify(call, status, Some("x"), body, Some(""));
                }
            }
        }
    }

    proptest::proptest! {
        /// I12: any status, any body, any `Retry-After`: a classification, never a panic, and
        /// the redacted payment method never in the error; a body that parses as a
        /// PaymentIntent gives a report or a typed refusal, never a panic.
        #[test]
        fn any_answer_is_classified_without_panic(
            status in 100u16..600,
            body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256),
            retry in proptest::option::of("[ -~]{0,12}"),
            call in proptest::sample::select(vec![
                StripeCall::Authorize,
                StripeCall::Capture,
                StripeCall::Void,
                StripeCall::Refund,
                StripeCall::Lookup,
            ]),
        ) {
            let mut with_secret = body.clone();
            with_secret.extend_from_slice(b"{\"error\":{\"message\":\"pm_secret leaked\"}}");
            for b in [&body, &with_secret] {
                match classify(call, status, retry.as_deref(), b, Some("pm_secret")) {
                    Answer::Success(raw) => {
                        if let Ok(pi) =
                            serde_json::from_slice::<crate::adapters::http::stripe_wire::PaymentIntentJson>(raw)
                        {
                            let _ = crate::adapters::http::stripe_wire::report_of(&pi);
                        }
                    }
                    Answer::Failed(e) => {
                        let text = format!("{e} {e:?}");
                        proptest::prop_assert!(!text.contains("pm_secret"), "{}", text);
                    }
                    Answer::Card(_) | Answer::NotFound(_) => {}
                }
            }
        }
    }
}
