//! Faults between the Stripe adapter and the PSP, injected by a proxy on 127.0.0.1
//! (`common/fault_proxy.rs`): the answer delayed past the timeout or dropped after the PSP
//! processed the request (ambiguous: reconcile via lookup finds what happened, nothing lost,
//! nothing charged twice; I5), 500 and 429 (transient: the retry sends the same
//! `Idempotency-Key`; I3), garbage bodies (typed errors, never a panic; I12), connection
//! refused (transient).
//!
//! Tests marked `localstripe` need `LOCALSTRIPE_URL` (`scripts/with-localstripe.sh`) and are
//! skipped without it; the others answer from the proxy alone and always run.

#![cfg(all(feature = "http", feature = "testkit"))]

mod common;
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
        let body = reqwest::Client::new()
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
        .execute_payment(&w.execute(&format!("{p}-exec"), &w.good, false))
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
        .capture(&agent_capture(&format!("{p}-cap"), &a.id, None))
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
        .execute_payment(&w.execute(&format!("{p}-exec"), &w.good, false))
        .await
        .expect("executed");
    let a = done.attempt().expect("attempt").clone();
    assert_eq!(a.status, AttemptStatus::Authorized);
    proxy.inject("/capture", Fault::Delay(Duration::from_millis(1500)));
    let outcome = w
        .engine
        .capture(&agent_capture(&format!("{p}-cap"), &a.id, None))
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
        .execute_payment(&w.execute(&format!("{p}-exec"), &w.good, true))
        .await
        .expect("executed");
    let a = done.attempt().expect("attempt").clone();
    assert_eq!(a.status, AttemptStatus::Captured);
    proxy.inject("POST /v1/refunds", Fault::DropResponse);
    let outcome = w
        .engine
        .refund(&agent_refund(
            &format!("{p}-ref"),
            &a.id,
            Some(eur("10.00")),
        ))
        .await
        .expect("the command completes");
    let a = outcome.attempt().expect("attempt").clone();
    assert_eq!(a.status, AttemptStatus::Ambiguous);
    assert_eq!(a.pending, Some(Operation::Refund));
    let a = w.engine.reconcile(&a.id).await.expect("reconciled");
    assert_eq!(a.status, AttemptStatus::PartiallyRefunded);
    assert_eq!(a.refunded, eur("10.00"));
}

/// localstripe: 500 then 429 before the PSP sees the authorization: transient, the attempt
/// goes back with its hold released; each retry of the command sends the same
/// `Idempotency-Key`; the third goes through: one PaymentIntent.
#[tokio::test]
async fn authorize_500_and_429_retry_with_the_same_key() {
    let Some(url) = localstripe_url("authorize_500_and_429_retry_with_the_same_key") else {
        return;
    };
    let (proxy, w) = proxied(&url, Duration::from_secs(10)).await;
    let p = run_prefix("retry");
    proxy.inject(
        "POST /v1/payment_intents",
        respond(
            500,
            &[],
            r#"{"error":{"type":"api_error","message":"boom"}}"#,
        ),
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
    let first = w.engine.execute_payment(&command).await;
    assert!(
        matches!(
            first,
            Err(EngineError::Provider(ProviderError::Transient { .. }))
        ),
        "{first:?}"
    );
    assert!(w.usage().await.held.is_zero(), "the hold is released");
    let second = w.engine.execute_payment(&command).await;
    match second {
        Err(EngineError::Provider(ProviderError::Transient { retry_after, .. })) => {
            assert_eq!(retry_after, Some(Duration::from_secs(1)))
        }
        other => panic!("expected a transient error with Retry-After, got {other:?}"),
    }
    let third = w.engine.execute_payment(&command).await.expect("executed");
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
        .execute_payment(&w.execute(&format!("{p}-exec"), &w.good, false))
        .await
        .expect("executed");
    let a = done.attempt().expect("attempt").clone();
    proxy.inject("/capture", respond(200, &[], "{\"id\": 12, \"status\""));
    let outcome = w
        .engine
        .capture(&agent_capture(&format!("{p}-cap"), &a.id, None))
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
/// configured pages is `Transient`, a complete one without the key `Ok(None)`, a match is
/// retrieved by its id.
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
    assert!(matches!(r, Err(ProviderError::Transient { .. })), "{r:?}");

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
