//! Faults between the Stripe adapter and the PSP, injected by a proxy on 127.0.0.1
//! (`common/fault_proxy.rs`): the answer delayed past the timeout or dropped after the PSP
//! processed the request (ambiguous: reconcile via lookup finds what happened, nothing lost,
//! nothing charged twice; I5), a gateway's 5xx after the PSP authorized (ambiguous: the hold
//! and the caps hold; I2, I13), 429 (transient: the retry sends the same `Idempotency-Key`;
//! I3), garbage bodies (typed errors, never a panic; I12), connection
//! refused (transient).
//!
//! Tests marked `localstripe` need `LOCALSTRIPE_URL` (`scripts/with-localstripe.sh`) and are
//! skipped without it; the others answer from the proxy alone and always run.

#![cfg(all(feature = "http", feature = "testkit"))]

mod common;
#[allow(unused_imports)]
use common::principals::*;
#[path = "common/fault_proxy.rs"]
mod fault_proxy;
#[path = "common/localstripe.rs"]
mod localstripe;

use std::sync::Arc;
use std::time::Duration;

use agent_mandate::adapters::http::StripeProvider;
use agent_mandate::adapters::memory::{ManualClock, MemoryVault};
use agent_mandate::domain::{
    examples, AttemptId, AttemptStatus, BuyerId, Currency, MerchantId, Money, Operation,
    ProviderKey, ProviderRef, SnapshotId,
};
use agent_mandate::engine::EngineError;
use agent_mandate::ports::{
    AuthorizeRequest, CaptureRequest, CredentialVault, Lookup, PaymentProvider, ProviderError,
    RefundRequest, VoidRequest,
};

use common::engine::{agent_capture, agent_refund, card};
use common::eur;
use fault_proxy::{respond, Fault, FaultProxy};
use localstripe::{localstripe_url, run_prefix, stripe_world, StripeWorld};

/// An engine whose PSP traffic goes through a fault proxy in front of localstripe.
async fn proxied(url: &str, request_timeout: Duration) -> (FaultProxy, StripeWorld) {
    let proxy = FaultProxy::start(url).await;
    let config = localstripe::config(&proxy.url)
        .with_timeouts(Duration::from_secs(2), request_timeout)
        .with_max_idle_per_host(0);
    let w = stripe_world(url, config).await;
    (proxy, w)
}

/// How many PaymentIntents at the PSP carry `attempt`'s authorization key.
async fn intents_for(url: &str, attempt: &AttemptId) -> usize {
    let mut n = 0;
    let mut after: Option<String> = None;
    loop {
        let mut u = format!("{url}/v1/payment_intents?limit=100");
        if let Some(a) = &after {
            u.push_str(&format!("&starting_after={a}"));
        }
        let body = agent_mandate::adapters::http::client_builder()
            .unwrap()
            .build()
            .unwrap()
            .get(u)
            .bearer_auth(localstripe::API_KEY)
            .send()
            .await
            .expect("localstripe")
            .bytes()
            .await
            .expect("body");
        let page: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
        let data = page["data"].as_array().cloned().unwrap_or_default();
        n += data
            .iter()
            .filter(|pi| pi["metadata"]["agent_mandate_attempt_id"] == attempt.as_str())
            .count();
        match (page["has_more"].as_bool(), data.last()) {
            (Some(true), Some(last)) => after = last["id"].as_str().map(str::to_owned),
            _ => return n,
        }
    }
}

/// localstripe: the PSP authorizes, the answer is lost; the attempt is ambiguous with its
/// hold; reconcile (lookup by key, the attempt has no reference yet) finds the authorization;
/// exactly one PaymentIntent exists.
#[tokio::test]
async fn authorize_answer_dropped_then_reconciled_by_key() {
    let Some(url) = localstripe_url("authorize_answer_dropped_then_reconciled_by_key") else {
        return;
    };
    let (proxy, w) = proxied(&url, Duration::from_secs(10)).await;
    let p = run_prefix("drop");
    proxy.inject("POST /v1/payment_intents", Fault::DropResponse);
    let done = w
        .engine
        .execute_payment(&agent_p(), &w.execute(&format!("{p}-exec"), &w.good, false))
        .await
        .expect("executed");
    let a = done.attempt().expect("attempt").clone();
    assert_eq!(a.status, AttemptStatus::Ambiguous);
    assert_eq!(a.pending, Some(Operation::Authorize));
    assert_eq!(w.usage().await.held, a.request.amount, "I5: the hold stays");
    assert!(proxy.seen()[0].forwarded, "the PSP did receive it");

    let a = w.engine.reconcile(&a.id).await.expect("reconciled");
    assert_eq!(a.status, AttemptStatus::Authorized);
    assert!(a.provider_ref.is_some());
    assert_eq!(a.authorized, a.request.amount);
    assert_eq!(intents_for(&url, &a.id).await, 1, "charged once");
    assert_eq!(w.usage().await.held, a.request.amount);

    // And the payment goes on normally.
    let captured = w
        .engine
        .capture(&agent_p(), &agent_capture(&format!("{p}-cap"), &a.id, None))
        .await
        .expect("captured");
    assert_eq!(
        captured.attempt().expect("attempt").status,
        AttemptStatus::Captured
    );
}

/// localstripe: the capture's answer comes after the client's timeout; the capture is
/// ambiguous; reconcile by reference finds it captured; the hold becomes spend once.
#[tokio::test]
async fn capture_answer_delayed_past_timeout_then_reconciled() {
    let Some(url) = localstripe_url("capture_answer_delayed_past_timeout_then_reconciled") else {
        return;
    };
    let (proxy, w) = proxied(&url, Duration::from_millis(700)).await;
    let p = run_prefix("delay");
    let done = w
        .engine
        .execute_payment(&agent_p(), &w.execute(&format!("{p}-exec"), &w.good, false))
        .await
        .expect("executed");
    let a = done.attempt().expect("attempt").clone();
    assert_eq!(a.status, AttemptStatus::Authorized);
    proxy.inject("/capture", Fault::Delay(Duration::from_millis(1500)));
    let outcome = w
        .engine
        .capture(&agent_p(), &agent_capture(&format!("{p}-cap"), &a.id, None))
        .await
        .expect("the command completes");
    let a = outcome.attempt().expect("attempt").clone();
    assert_eq!(a.status, AttemptStatus::Ambiguous);
    assert_eq!(a.pending, Some(Operation::Capture));
    assert_eq!(w.usage().await.held, a.request.amount, "I5");

    let a = w.engine.reconcile(&a.id).await.expect("reconciled");
    assert_eq!(a.status, AttemptStatus::Captured);
    assert_eq!(a.captured, a.request.amount);
    let u = w.usage().await;
    assert!(u.held.is_zero(), "{u:?}");
    assert_eq!(u.spent, a.request.amount);
}

/// localstripe: a refund whose answer is lost; reconcile finds the refund (made once).
#[tokio::test]
async fn refund_answer_dropped_then_reconciled() {
    let Some(url) = localstripe_url("refund_answer_dropped_then_reconciled") else {
        return;
    };
    let (proxy, w) = proxied(&url, Duration::from_secs(10)).await;
    let p = run_prefix("dropref");
    let done = w
        .engine
        .execute_payment(&agent_p(), &w.execute(&format!("{p}-exec"), &w.good, true))
        .await
        .expect("executed");
    let a = done.attempt().expect("attempt").clone();
    assert_eq!(a.status, AttemptStatus::Captured);
    proxy.inject("POST /v1/refunds", Fault::DropResponse);
    let outcome = w
        .engine
        .refund(
            &agent_p(),
            &agent_refund(&format!("{p}-ref"), &a.id, Some(eur("10.00"))),
        )
        .await
        .expect("the command completes");
    let a = outcome.attempt().expect("attempt").clone();
    assert_eq!(a.status, AttemptStatus::Ambiguous);
    assert_eq!(a.pending, Some(Operation::Refund));
    let a = w.engine.reconcile(&a.id).await.expect("reconciled");
    assert_eq!(a.status, AttemptStatus::PartiallyRefunded);
    assert_eq!(a.refunded, eur("10.00"));
}

/// localstripe: 429 twice before the PSP sees the authorization (Stripe documents a
/// rate-limited request as not processed): transient, the attempt goes back with its hold
/// released; each retry of the command sends the same `Idempotency-Key`; the third goes
/// through: one PaymentIntent (I3).
#[tokio::test]
async fn authorize_429_retries_with_the_same_key() {
    let Some(url) = localstripe_url("authorize_429_retries_with_the_same_key") else {
        return;
    };
    let (proxy, w) = proxied(&url, Duration::from_secs(10)).await;
    let p = run_prefix("retry");
    proxy.inject(
        "POST /v1/payment_intents",
        respond(429, &[], r#"{"error":{"type":"rate_limit_error"}}"#),
    );
    proxy.inject(
        "POST /v1/payment_intents",
        respond(
            429,
            &[("retry-after", "1")],
            r#"{"error":{"type":"rate_limit_error"}}"#,
        ),
    );
    let command = w.execute(&format!("{p}-exec"), &w.good, false);
    let first = w.engine.execute_payment(&payer(&command), &command).await;
    assert!(
        matches!(
            first,
            Err(EngineError::Provider(ProviderError::Transient { .. }))
        ),
        "{first:?}"
    );
    assert!(w.usage().await.held.is_zero(), "the hold is released");
    let second = w.engine.execute_payment(&payer(&command), &command).await;
    match second {
        Err(EngineError::Provider(ProviderError::Transient { retry_after, .. })) => {
            assert_eq!(retry_after, Some(Duration::from_secs(1)))
        }
        other => panic!("expected a transient error with Retry-After, got {other:?}"),
    }
    let third = w
        .engine
        .execute_payment(&payer(&command), &command)
        .await
        .expect("executed");
    let a = third.attempt().expect("attempt").clone();
    assert_eq!(a.status, AttemptStatus::Authorized);

    let posts: Vec<_> = proxy
        .seen()
        .into_iter()
        .filter(|s| s.method == "POST" && s.path.starts_with("/v1/payment_intents"))
        .collect();
    assert_eq!(posts.len(), 3, "{posts:?}");
    let keys: Vec<_> = posts.iter().map(|s| s.idempotency_key.clone()).collect();
    assert!(keys[0].is_some());
    assert!(keys.iter().all(|k| *k == keys[0]), "same key: {keys:?}");
    assert_eq!(
        keys[0].as_deref(),
        Some(a.provider_key(Operation::Authorize).as_str())
    );
    assert_eq!(
        posts.iter().filter(|s| s.forwarded).count(),
        1,
        "only the last reached the PSP"
    );
    assert_eq!(intents_for(&url, &a.id).await, 1, "charged once");
}

/// A 502 body a gateway (not the PSP) sends.
const BAD_GATEWAY: &[u8] = b"<html><body><h1>502 Bad Gateway</h1></body></html>";

/// localstripe, adapter only (I5, I13): the PSP authorizes, a gateway in front of it
/// answers 502. The adapter must say `Ambiguous` (the old classification said `Transient`:
/// "nothing was processed"), and a lookup by key finds the authorization.
#[tokio::test]
async fn gateway_502_after_the_psp_authorized_is_ambiguous() {
    let Some(url) = localstripe_url("gateway_502_after_the_psp_authorized_is_ambiguous") else {
        return;
    };
    let proxy = FaultProxy::start(&url).await;
    let (psp, mut request) = bare(&proxy.url).await;
    request.key = ProviderKey::new(format!("{}-auth", run_prefix("gw502"))).expect("key");
    proxy.inject(
        "POST /v1/payment_intents",
        Fault::ReplaceResponse {
            status: 502,
            body: BAD_GATEWAY.to_vec(),
        },
    );
    let r = psp.authorize(&request).await;
    assert!(matches!(r, Err(ProviderError::Ambiguous { .. })), "{r:?}");
    assert!(proxy.seen()[0].forwarded, "the PSP did receive it");
    let found = psp
        .lookup(&Lookup::Key(request.key.clone()))
        .await
        .expect("lookup answers")
        .expect("the authorization exists");
    assert_eq!(
        found.status,
        agent_mandate::domain::ProviderStatus::Authorized
    );
    assert_eq!(found.authorized, request.amount);
}

/// localstripe, through the engine (I2, I5, I13): a mandate with a 150.00 EUR lifetime cap;
/// the first payment of 144.00 is authorized at the PSP but a gateway answers 502. The
/// attempt must stay `ambiguous` with its hold, so a second payment of 144.00 (which would
/// make 288.00 authorized on a 150.00 cap) is refused for the lifetime limit and never
/// reaches the PSP; reconcile then finds the first authorized. With the old classification
/// the 502 released the hold and the second payment was authorized too.
#[tokio::test]
async fn gateway_502_after_authorization_keeps_the_hold_and_the_lifetime_cap() {
    let Some(url) =
        localstripe_url("gateway_502_after_authorization_keeps_the_hold_and_the_lifetime_cap")
    else {
        return;
    };
    let proxy = FaultProxy::start(&url).await;
    let config = localstripe::config(&proxy.url)
        .with_timeouts(Duration::from_secs(2), Duration::from_secs(10))
        .with_max_idle_per_host(0);
    let mut spec = common::engine::backpack_spec(false);
    spec.scope.max_uses = None;
    spec.scope.amount.max_payment_attempts = None;
    spec.scope.budgets.windows[0].max_count = None;
    assert_eq!(spec.scope.budgets.lifetime, Some(eur("150.00")));
    let w = localstripe::stripe_world_with(&url, config, spec).await;
    let p = run_prefix("cap502");
    proxy.inject(
        "POST /v1/payment_intents",
        Fault::ReplaceResponse {
            status: 502,
            body: BAD_GATEWAY.to_vec(),
        },
    );
    let first = w
        .engine
        .execute_payment(
            &agent_p(),
            &w.execute(&format!("{p}-first"), &w.good, false),
        )
        .await
        .expect("the command completes");
    let a = first.attempt().expect("attempt").clone();
    assert_eq!(a.status, AttemptStatus::Ambiguous, "I13: 502 is not proof");
    assert_eq!(a.pending, Some(Operation::Authorize));
    assert_eq!(a.request.amount, eur("144.00"));
    assert_eq!(w.usage().await.held, eur("144.00"), "I5: the hold stays");

    let posts_before = proxy.count();
    let second = w
        .engine
        .execute_payment(
            &agent_p(),
            &w.execute(&format!("{p}-second"), &w.good, false),
        )
        .await
        .expect("the command completes");
    match &second {
        agent_mandate::engine::PaymentOutcome::Refused(decision) => assert!(
            decision
                .codes()
                .contains(&agent_mandate::domain::BlockerCode::LifetimeLimitExceeded),
            "{decision:#?}"
        ),
        other => panic!("I2: the second payment must be refused, got {other:#?}"),
    }
    assert_eq!(proxy.count(), posts_before, "I1: nothing sent for it");

    let a = w.engine.reconcile(&a.id).await.expect("reconciled");
    assert_eq!(a.status, AttemptStatus::Authorized);
    assert_eq!(a.authorized, eur("144.00"));
    assert_eq!(intents_for(&url, &a.id).await, 1, "charged once");
    assert_eq!(w.usage().await.held, eur("144.00"));
}

/// localstripe: a 200 with an unreadable body on capture (answered by the proxy, so the PSP
/// did nothing): ambiguous, never a panic; reconcile finds the payment still authorized.
#[tokio::test]
async fn capture_garbage_200_is_ambiguous_and_reconciles_to_the_truth() {
    let Some(url) = localstripe_url("capture_garbage_200_is_ambiguous_and_reconciles_to_the_truth")
    else {
        return;
    };
    let (proxy, w) = proxied(&url, Duration::from_secs(10)).await;
    let p = run_prefix("garbage");
    let done = w
        .engine
        .execute_payment(&agent_p(), &w.execute(&format!("{p}-exec"), &w.good, false))
        .await
        .expect("executed");
    let a = done.attempt().expect("attempt").clone();
    proxy.inject("/capture", respond(200, &[], "{\"id\": 12, \"status\""));
    let outcome = w
        .engine
        .capture(&agent_p(), &agent_capture(&format!("{p}-cap"), &a.id, None))
        .await
        .expect("completes");
    assert_eq!(
        outcome.attempt().expect("attempt").status,
        AttemptStatus::Ambiguous
    );
    let a = w.engine.reconcile(&a.id).await.expect("reconciled");
    assert_eq!(a.status, AttemptStatus::Authorized);
    assert!(a.captured.is_zero());
}

// ---- Without localstripe: the proxy answers by itself. ----

/// A provider whose PSP is `url`, with one stored card.
async fn bare(url: &str) -> (StripeProvider, AuthorizeRequest) {
    let vault = Arc::new(MemoryVault::new());
    let clock = Arc::new(ManualClock::new(examples::now()));
    let credential = vault
        .store(
            &"card".parse().expect("key"),
            card(&examples::agent().id, "pm_card_visa"),
        )
        .await
        .expect("stored")
        .credential
        .reference;
    let config = localstripe::config(url)
        .with_timeouts(Duration::from_millis(500), Duration::from_millis(800))
        .with_max_idle_per_host(0);
    let psp = StripeProvider::new(config, vault, clock).expect("provider");
    let request = AuthorizeRequest {
        key: ProviderKey::new("bare-authorize").expect("key"),
        attempt_id: AttemptId::new("bare").expect("id"),
        amount: Money::from_minor(1000, Currency::EUR).expect("amount"),
        credential,
        capture: false,
        snapshot_id: SnapshotId::from_bytes([1; 32]),
        merchant_id: MerchantId::new("m").expect("id"),
        buyer_id: BuyerId::new("b").expect("id"),
    };
    (psp, request)
}

/// Nothing listens: the request was never sent, so `Transient` (never ambiguous).
#[tokio::test]
async fn connection_refused_is_transient() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let (psp, request) = bare(&format!("http://127.0.0.1:{port}")).await;
    let r = psp.authorize(&request).await;
    assert!(matches!(r, Err(ProviderError::Transient { .. })), "{r:?}");
    let r = psp
        .lookup(&Lookup::Key(ProviderKey::new("k").expect("key")))
        .await;
    assert!(matches!(r, Err(ProviderError::Transient { .. })), "{r:?}");
}

/// No localstripe (I5, I13): a gateway's 500, 502, 503, 504 and a 409 on every call that can
/// move money are `Ambiguous`; a 429 is `Transient`; a lookup's 502 is `Transient`.
#[tokio::test]
async fn gateway_errors_on_money_calls_are_ambiguous_and_429_transient() {
    let proxy = FaultProxy::start("http://127.0.0.1:9").await;
    let (psp, request) = bare(&proxy.url).await;
    let reference = ProviderRef::new("pi_1").expect("ref");
    let key = ProviderKey::new("k").expect("key");
    for status in [500u16, 502, 503, 504, 409, 429] {
        for _ in 0..4 {
            proxy.inject("", respond(status, &[], "<html>gateway</html>"));
        }
        let results = [
            psp.authorize(&request).await,
            psp.capture(&CaptureRequest {
                key: key.clone(),
                reference: reference.clone(),
                attempt_id: request.attempt_id.clone(),
                amount: request.amount,
            })
            .await,
            psp.void(&VoidRequest {
                key: key.clone(),
                reference: reference.clone(),
                attempt_id: request.attempt_id.clone(),
            })
            .await,
            psp.refund(&RefundRequest {
                key: key.clone(),
                reference: reference.clone(),
                attempt_id: request.attempt_id.clone(),
                amount: request.amount,
            })
            .await,
        ];
        for r in results {
            if status == 429 {
                assert!(
                    matches!(r, Err(ProviderError::Transient { .. })),
                    "{status}: {r:?}"
                );
            } else {
                assert!(
                    matches!(r, Err(ProviderError::Ambiguous { .. })),
                    "{status}: {r:?}"
                );
            }
        }
    }
    proxy.inject("", respond(502, &[], "<html>gateway</html>"));
    let r = psp.lookup(&Lookup::Reference(reference)).await;
    assert!(matches!(r, Err(ProviderError::Transient { .. })), "{r:?}");
}

/// A server that accepts and never answers: past the timeout the authorization is
/// `Ambiguous` (it may have been processed), a lookup `Transient`.
#[tokio::test]
async fn silent_server_is_ambiguous_for_money_and_transient_for_lookup() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    let (psp, request) = bare(&url).await;
    let r = psp.authorize(&request).await;
    assert!(matches!(r, Err(ProviderError::Ambiguous { .. })), "{r:?}");
    let r = psp
        .lookup(&Lookup::Reference(ProviderRef::new("pi_x").expect("ref")))
        .await;
    assert!(matches!(r, Err(ProviderError::Transient { .. })), "{r:?}");
}

/// Every call against garbage answers: a typed error carrying the status, never a panic
/// (I12), and never a credential in the message (I10).
#[tokio::test]
async fn garbage_answers_never_panic() {
    let bodies = [
        "",
        "null",
        "[]",
        "{}",
        "{\"error\": 5}",
        "{\"id\": \"pi_1\", \"status\": \"succeeded\", \"amount\": -1, \"currency\": \"eur\"}",
        "{\"id\": \"pi_1\", \"status\": \"succeeded\", \"amount\": 10, \"currency\": \"eur\", \"latest_charge\": 7}",
        "{\"id\": \"\", \"status\": \"requires_capture\", \"amount\": 10, \"currency\": \"eur\"}",
        "{\"id\": \"pi_1\", \"status\": \"requires_capture\", \"amount\": 99999999999999999999, \"currency\": \"eur\"}",
        "\u{0}\u{1}garbage",
    ];
    let statuses = [200u16, 201, 302, 400, 402, 404, 409, 429, 500, 503];
    let proxy = FaultProxy::start("http://127.0.0.1:9").await;
    let (psp, request) = bare(&proxy.url).await;
    let reference = ProviderRef::new("pi_1").expect("ref");
    let amount = request.amount;
    for status in statuses {
        for body in bodies {
            for _ in 0..10 {
                proxy.inject("", respond(status, &[], body));
            }
            let key = ProviderKey::new("k").expect("key");
            let results: Vec<Result<String, ProviderError>> = vec![
                psp.authorize(&request).await.map(|r| format!("{r:?}")),
                psp.capture(&CaptureRequest {
                    key: key.clone(),
                    reference: reference.clone(),
                    attempt_id: request.attempt_id.clone(),
                    amount,
                })
                .await
                .map(|r| format!("{r:?}")),
                psp.void(&VoidRequest {
                    key: key.clone(),
                    reference: reference.clone(),
                    attempt_id: request.attempt_id.clone(),
                })
                .await
                .map(|r| format!("{r:?}")),
                psp.refund(&RefundRequest {
                    key: key.clone(),
                    reference: reference.clone(),
                    attempt_id: request.attempt_id.clone(),
                    amount,
                })
                .await
                .map(|r| format!("{r:?}")),
                psp.lookup(&Lookup::Reference(reference.clone()))
                    .await
                    .map(|r| format!("{r:?}")),
            ];
            for r in results {
                let text = format!("{r:?}");
                assert!(!text.contains("pm_card_visa"), "{text}");
                assert!(!text.contains(localstripe::API_KEY), "{text}");
                if let Err(e) = &r {
                    let good_status = text.contains(&status.to_string())
                        || matches!(e, ProviderError::Ambiguous { .. })
                        || status == 402;
                    assert!(good_status, "status {status}, body {body:?}: {text}");
                }
            }
            // Faults a call did not consume do not leak into the next round.
            proxy.clear_faults();
        }
    }
}

/// `lookup(Key)` claims absence only after reading the whole list: a list longer than the
/// configured pages is the typed `LookupExhausted` (`Invalid`, never a `Transient` retried
/// for ever), a complete one without the key `Ok(None)`, a match is retrieved by its id. The
/// server has no Search API (404): asked once, remembered.
#[tokio::test]
async fn lookup_by_key_never_claims_an_absence_it_did_not_check() {
    let proxy = FaultProxy::start("http://127.0.0.1:9").await;
    let vault = Arc::new(MemoryVault::new());
    let clock = Arc::new(ManualClock::new(examples::now()));
    let config = localstripe::config(&proxy.url)
        .with_max_idle_per_host(0)
        .with_lookup_pages(2);
    let psp = StripeProvider::new(config, vault, clock).expect("provider");
    let key = ProviderKey::new("wanted").expect("key");
    proxy.inject(
        "GET /v1/payment_intents/search",
        respond(404, &[], r#"{"error":{"message":"Not Found"}}"#),
    );
    let page = |has_more: bool, id: &str, k: &str| {
        respond(
            200,
            &[],
            &format!(
                r#"{{"data":[{{"id":"{id}","metadata":{{"agent_mandate_key":"{k}"}}}}],"has_more":{has_more}}}"#
            ),
        )
    };
    proxy.inject("GET /v1/payment_intents", page(true, "pi_a", "other"));
    proxy.inject("GET /v1/payment_intents", page(true, "pi_b", "other"));
    let r = psp.lookup(&Lookup::Key(key.clone())).await;
    match &r {
        Err(ProviderError::Invalid { message }) => {
            assert!(message.contains("absence not proven"), "{message}")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        proxy
            .since(0)
            .iter()
            .filter(|l| l.contains("/search"))
            .count(),
        1
    );

    proxy.inject("GET /v1/payment_intents", page(true, "pi_a", "other"));
    proxy.inject("GET /v1/payment_intents", page(false, "pi_b", "other"));
    assert_eq!(psp.lookup(&Lookup::Key(key.clone())).await, Ok(None));
    let listed = proxy.since(0);
    assert!(
        listed
            .last()
            .is_some_and(|l| l.contains("starting_after=pi_a")),
        "pages follow each other: {listed:?}"
    );

    proxy.inject("GET /v1/payment_intents", page(false, "pi_c", "wanted"));
    proxy.inject(
        "GET /v1/payment_intents/pi_c",
        respond(
            200,
            &[],
            r#"{"id":"pi_c","status":"requires_capture","amount":1000,"currency":"eur"}"#,
        ),
    );
    let found = psp
        .lookup(&Lookup::Key(key))
        .await
        .expect("answer")
        .expect("found");
    assert_eq!(found.reference.as_ref().map(|r| r.as_str()), Some("pi_c"));
    assert_eq!(
        found.authorized,
        Money::from_minor(1000, Currency::EUR).expect("m")
    );
}

// ---- Lookup by key against a small Stripe-like server (axum): search, window, bound. ----

mod lookup_server {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};

    use axum::extract::{Path, State};
    use axum::http::{StatusCode, Uri};
    use serde_json::json;

    /// A JSON answer (axum's `Json` is not enabled here).
    fn answer(status: StatusCode, v: serde_json::Value) -> (StatusCode, String) {
        (status, v.to_string())
    }

    /// The query string's pairs, percent-decoded.
    fn query(uri: &Uri) -> HashMap<String, String> {
        reqwest::Url::parse(&format!("http://x{uri}"))
            .map(|u| u.query_pairs().into_owned().collect())
            .unwrap_or_default()
    }

    /// What the server does: whether it has a Search API and the `created` filter, how many
    /// PaymentIntents it holds (`pi_0` newest .. , each created one second before the
    /// previous, from `newest`), and which one carries the wanted key.
    #[derive(Clone)]
    pub struct Server {
        pub search: bool,
        pub created_filter: bool,
        pub count: i64,
        pub newest: i64,
        pub wanted_at: Option<i64>,
        pub seen: Arc<Mutex<Vec<String>>>,
    }

    fn pi(s: &Server, i: i64) -> serde_json::Value {
        let key = if Some(i) == s.wanted_at {
            "wanted"
        } else {
            "other"
        };
        json!({"id": format!("pi_{i}"), "created": s.newest - i, "status": "requires_capture",
               "amount": 1000, "currency": "eur", "metadata": {"agent_mandate_key": key}})
    }

    async fn search(State(s): State<Server>, uri: Uri) -> (StatusCode, String) {
        s.seen.lock().expect("lock").push(uri.to_string());
        if !s.search {
            return answer(
                StatusCode::NOT_FOUND,
                json!({"error": {"message": "Not Found"}}),
            );
        }
        let data: Vec<_> = s.wanted_at.map(|i| pi(&s, i)).into_iter().collect();
        answer(
            StatusCode::OK,
            json!({"object": "search_result", "data": data, "has_more": false}),
        )
    }

    async fn list(State(s): State<Server>, uri: Uri) -> (StatusCode, String) {
        s.seen.lock().expect("lock").push(uri.to_string());
        let q = query(&uri);
        let gte = q.get("created[gte]").and_then(|v| v.parse::<i64>().ok());
        let lte = q.get("created[lte]").and_then(|v| v.parse::<i64>().ok());
        if (gte.is_some() || lte.is_some()) && !s.created_filter {
            return answer(
                StatusCode::BAD_REQUEST,
                json!({"error": {"type": "invalid_request_error", "message": "Unexpected created"}}),
            );
        }
        let start = q
            .get("starting_after")
            .and_then(|a| a.trim_start_matches("pi_").parse::<i64>().ok())
            .map_or(0, |i| i + 1);
        let all: Vec<i64> = (0..s.count)
            .filter(|i| gte.is_none_or(|g| s.newest - i >= g))
            .filter(|i| lte.is_none_or(|l| s.newest - i <= l))
            .filter(|i| *i >= start)
            .collect();
        let data: Vec<_> = all.iter().take(100).map(|i| pi(&s, *i)).collect();
        answer(
            StatusCode::OK,
            json!({"object": "list", "data": data, "has_more": all.len() > 100}),
        )
    }

    async fn retrieve(State(s): State<Server>, Path(id): Path<String>) -> (StatusCode, String) {
        let i = id.trim_start_matches("pi_").parse::<i64>().unwrap_or(-1);
        answer(StatusCode::OK, pi(&s, i))
    }

    pub async fn start(s: Server) -> String {
        let app = axum::Router::new()
            .route("/v1/payment_intents/search", axum::routing::get(search))
            .route("/v1/payment_intents", axum::routing::get(list))
            .route("/v1/payment_intents/{id}", axum::routing::get(retrieve))
            .with_state(s);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        url
    }
}

fn lookup_psp(url: &str, pages: u32) -> StripeProvider {
    let config = localstripe::config(url)
        .with_lookup_pages(pages)
        .with_lookup_skew(Duration::from_secs(60));
    StripeProvider::new(
        config,
        Arc::new(MemoryVault::new()),
        Arc::new(ManualClock::new(examples::now())),
    )
    .expect("provider")
}

fn server(
    search: bool,
    created_filter: bool,
    count: i64,
    wanted_at: Option<i64>,
) -> lookup_server::Server {
    lookup_server::Server {
        search,
        created_filter,
        count,
        newest: examples::now().timestamp(),
        wanted_at,
        seen: Arc::default(),
    }
}

/// I5, I13: 1,500 PaymentIntents newer than ours (one a second), a bound of 2 pages. A lookup
/// by key alone reads the bound and gives up with the typed `LookupExhausted` (`Invalid`),
/// never an endless `Transient`; with the submission time the list is windowed
/// (`created[gte]`/`created[lte]` around it, skew 60 s, request timeout 10 s) and finds it in
/// one page; the Search API, where the server has it, finds it without any list.
#[tokio::test]
async fn lookup_by_key_is_windowed_around_the_submission_and_bounded() {
    let submitted_at = examples::now() - chrono::Duration::seconds(1_500);
    let key = ProviderKey::new("wanted").expect("key");
    let by_time = Lookup::KeySubmitted {
        key: key.clone(),
        submitted_at,
    };

    // No Search API (asked once), but the `created` filter.
    let s = server(false, true, 2_000, Some(1_500));
    let seen = s.seen.clone();
    let psp = lookup_psp(&lookup_server::start(s).await, 2);
    let r = psp.lookup(&Lookup::Key(key.clone())).await;
    assert!(
        matches!(&r, Err(ProviderError::Invalid { message }) if message.contains("absence not proven")),
        "{r:?}"
    );
    let found = psp.lookup(&by_time).await.expect("answers").expect("found");
    assert_eq!(
        found.reference.as_ref().map(|r| r.as_str()),
        Some("pi_1500")
    );
    let seen = seen.lock().expect("lock").clone();
    assert_eq!(
        seen.iter().filter(|u| u.contains("/search")).count(),
        1,
        "{seen:?}"
    );
    let windowed = seen.last().expect("the windowed list");
    let (at, lo, hi) = (
        submitted_at.timestamp(),
        submitted_at.timestamp() - 60,
        submitted_at.timestamp() + 71,
    );
    assert!(
        windowed.contains(&format!("created%5Bgte%5D={lo}"))
            && windowed.contains(&format!("created%5Blte%5D={hi}")),
        "window around {at}: {windowed}"
    );
    // Absent within the window: `Ok(None)`, read in one page.
    let elsewhere = Lookup::KeySubmitted {
        key: ProviderKey::new("missing").expect("key"),
        submitted_at,
    };
    assert_eq!(psp.lookup(&elsewhere).await, Ok(None));

    // A server without the `created` filter (400, remembered): unfiltered, so bounded.
    let s = server(false, false, 2_000, Some(1_500));
    let seen = s.seen.clone();
    let psp = lookup_psp(&lookup_server::start(s).await, 2);
    let r = psp.lookup(&by_time).await;
    assert!(matches!(r, Err(ProviderError::Invalid { .. })), "{r:?}");
    let r = psp.lookup(&by_time).await;
    assert!(matches!(r, Err(ProviderError::Invalid { .. })), "{r:?}");
    let filtered = seen
        .lock()
        .expect("lock")
        .iter()
        .filter(|u| u.contains("created"))
        .count();
    assert_eq!(filtered, 1, "the refused filter is not sent again");

    // With the Search API: found without listing.
    let s = server(true, true, 2_000, Some(1_500));
    let seen = s.seen.clone();
    let psp = lookup_psp(&lookup_server::start(s).await, 1);
    let found = psp
        .lookup(&Lookup::Key(key))
        .await
        .expect("answers")
        .expect("found");
    assert_eq!(
        found.reference.as_ref().map(|r| r.as_str()),
        Some("pi_1500")
    );
    let seen = seen.lock().expect("lock").clone();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert!(
        seen[0].contains("query=metadata%5B%27agent_mandate_key%27%5D%3A%27wanted%27"),
        "{seen:?}"
    );
}
