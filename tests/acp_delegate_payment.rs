//! The delegate payment endpoint over real HTTP: the published examples in, answers that
//! validate against the published schemas out, idempotency as the protocol's RFC states it
//! (I3: one key, one effect; another body, a conflict that executes nothing), signatures.
#![cfg(all(
    feature = "acp",
    feature = "axum",
    feature = "testkit",
    feature = "http"
))]

mod acp_support;

use acp_support::*;
use agent_mandate::acp::{credential_of, mandate_for, AcpService};
use agent_mandate::domain::{IdempotencyKey, Principal};
use agent_mandate::ports::{CredentialVault as _, Store as _};
use serde_json::{json, Value};

const DP: &str = "schema.delegate_payment.json";
const EX: &str = "examples.delegate_payment.json";

#[tokio::test]
async fn the_published_request_example_gets_the_published_answer_shape() {
    let h = harness(|c| c).await;
    let request = example(EX, "delegate_payment_request");
    assert_valid(DP, "DelegatePaymentRequest", &request);
    let a = h.delegate("idem_abc123", &request).await;
    assert_eq!(a.status, 201, "{}", a.body);
    assert_valid(DP, "DelegatePaymentResponse", &a.body);
    assert_eq!(a.headers["request-id"], "req_123");
    assert!(a.headers.get("idempotent-replayed").is_none());
    let id = a.body["id"].as_str().unwrap();
    assert!(id.starts_with("vt_"), "{id}");
    assert_eq!(a.body["created"], "2025-09-29T11:00:00Z");
    let published = example(EX, "delegate_payment_success_response");
    for k in ["merchant_id", "idempotency_key"] {
        assert!(
            published["metadata"].get(k).is_some(),
            "the example echoes {k}"
        );
    }
    assert_eq!(a.body["metadata"]["merchant_id"], "acme_store");
    assert_eq!(a.body["metadata"]["idempotency_key"], "idem_abc123");
    assert_eq!(a.body["metadata"]["campaign"], "q4");
    // Never the card number.
    assert!(!a.body.to_string().contains("4242424242424242"));

    // The token names a credential in the vault and a single-use mandate of the allowance.
    let reference = credential_of(id).unwrap();
    let stored = h.memory.vault.describe(&reference).await.unwrap();
    assert_eq!(stored.display.last4, "4242");
    let mandate = h
        .memory
        .store
        .mandate(&mandate_for(&reference).unwrap())
        .await
        .unwrap()
        .expect("the allowance's mandate");
    let scope = &mandate.spec().scope;
    assert_eq!(scope.max_uses, Some(1));
    assert_eq!(scope.amount.max_amount.to_string(), "20.00 USD");
    assert_eq!(
        scope.validity.expires_at.to_rfc3339(),
        "2025-10-09T07:20:50.520+00:00"
    );
    assert!(matches!(
        &scope.merchants,
        agent_mandate::domain::MerchantScope::Single { merchant_id } if merchant_id.as_str() == "acme_store"
    ));
}

#[tokio::test]
async fn the_schema_bundles_own_request_examples_are_accepted() {
    let h = harness(|c| c).await;
    let bundle = spec(DP);
    let mut request = bundle["$defs"]["DelegatePaymentRequest"]["example"].clone();
    // The bundle's example allowance expires 2026-02-13 and its card in 11/2026: at our clock.
    assert_valid(DP, "DelegatePaymentRequest", &request);
    let a = h.delegate("bundle-1", &request).await;
    assert_eq!(a.status, 201, "{}", a.body);
    assert_valid(DP, "DelegatePaymentResponse", &a.body);
    // The sub-schema examples compose into a request too.
    request["payment_method"] = bundle["$defs"]["PaymentMethodCard"]["example"].clone();
    request["allowance"] = bundle["$defs"]["Allowance"]["example"].clone();
    request["billing_address"] = bundle["$defs"]["Address"]["example"].clone();
    request["risk_signals"] = json!([bundle["$defs"]["RiskSignal"]["example"].clone()]);
    assert_valid(DP, "DelegatePaymentRequest", &request);
    let a = h.delegate("bundle-2", &request).await;
    assert_eq!(a.status, 201, "{}", a.body);
}

#[tokio::test]
async fn same_key_same_body_replays_the_first_answer() {
    let h = harness(|c| c).await;
    let request = example(EX, "delegate_payment_request");
    let first = h.delegate("k-replay", &request).await;
    assert_eq!(first.status, 201);
    h.memory.clock.advance(chrono::Duration::seconds(30));
    // Key order and white space do not make another body (semantic JSON equality).
    let reordered: Value =
        serde_json::from_str(&serde_json::to_string_pretty(&request).unwrap()).unwrap();
    let mut text = serde_json::to_string_pretty(&reordered).unwrap();
    text = text.replace("\"payment_method\"", "  \"payment_method\"");
    let again = h
        .post_raw(
            "/agentic_commerce/delegate_payment",
            &standard_headers("k-replay"),
            text.into_bytes(),
        )
        .await;
    assert_eq!(again.status, 201, "{}", again.body);
    assert_eq!(
        again.body, first.body,
        "the original answer, created time included"
    );
    assert_eq!(again.headers["idempotent-replayed"], "true");
    assert_eq!(credentials_stored(&h.memory), 1, "one credential stored");
}

#[tokio::test]
async fn same_key_other_body_is_the_published_conflict_and_changes_nothing() {
    let h = harness(|c| c).await;
    let request = example(EX, "delegate_payment_request");
    assert_eq!(h.delegate("k-conflict", &request).await.status, 201);
    let mut other = request.clone();
    other["allowance"]["max_amount"] = json!(2001);
    let a = h.delegate("k-conflict", &other).await;
    assert_eq!(a.status, 422);
    assert_eq!(
        a.body,
        example(EX, "delegate_payment_error_idempotency_conflict")
    );
    assert_eq!(
        a.body,
        example(
            "examples.agentic_checkout.json",
            "error_422_idempotency_conflict"
        )
    );
    assert_valid(DP, "Error", &a.body);
    assert_eq!(credentials_stored(&h.memory), 1);
}

#[tokio::test]
async fn a_missing_key_is_the_published_error() {
    let h = harness(|c| c).await;
    let request = example(EX, "delegate_payment_request");
    let headers: Vec<(&str, &str)> = standard_headers("x")
        .into_iter()
        .filter(|(k, _)| *k != "Idempotency-Key")
        .collect();
    let a = h
        .post_raw(
            "/agentic_commerce/delegate_payment",
            &headers,
            serde_json::to_vec(&request).unwrap(),
        )
        .await;
    assert_eq!(a.status, 400);
    assert_eq!(
        a.body,
        example(EX, "delegate_payment_error_idempotency_key_required")
    );
    assert_eq!(
        a.body,
        example(
            "examples.agentic_checkout.json",
            "error_400_idempotency_key_required"
        )
    );
    assert_valid(DP, "Error", &a.body);
    assert_eq!(credentials_stored(&h.memory), 0);
}

#[tokio::test]
async fn a_key_in_flight_is_the_published_409_with_retry_after() {
    let h = harness(|c| c).await;
    let request = example(EX, "delegate_payment_request");
    // Another request with the same key and body is running: its record is in flight.
    let caller = Principal::Agent("platform_1".parse().unwrap());
    let key = IdempotencyKey::new("k-flight").unwrap();
    let scope = AcpService::delegation_scope(&caller, &key);
    let fingerprint = agent_mandate::domain::json_fingerprint(&request).unwrap();
    let begun = h
        .memory
        .store
        .begin_idempotent(
            &scope,
            &fingerprint,
            start(),
            std::time::Duration::from_secs(60),
        )
        .await
        .unwrap();
    assert!(matches!(begun, agent_mandate::ports::Begin::Started(_)));
    let a = h.delegate("k-flight", &request).await;
    assert_eq!(a.status, 409, "{}", a.body);
    assert_eq!(
        a.body,
        example(EX, "delegate_payment_error_idempotency_in_flight")
    );
    assert_eq!(
        a.body,
        example(
            "examples.agentic_checkout.json",
            "error_409_idempotency_in_flight"
        )
    );
    assert_valid(DP, "Error", &a.body);
    let retry: u64 = a.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(retry >= 1);
    assert_eq!(credentials_stored(&h.memory), 0, "nothing executed");
}

#[tokio::test]
async fn rate_limits_answer_the_published_429() {
    let h = harness(|c| c.with_rate_limit(2, chrono::Duration::seconds(60))).await;
    let request = example(EX, "delegate_payment_request");
    assert_eq!(h.delegate("r1", &request).await.status, 201);
    assert_eq!(h.delegate("r2", &request).await.status, 201);
    let a = h.delegate("r3", &request).await;
    assert_eq!(a.status, 429);
    assert_eq!(a.body, example(EX, "delegate_payment_error_rate_limit"));
    assert_valid(DP, "Error", &a.body);
    assert!(a.headers.get("retry-after").is_some());
    h.memory.clock.advance(chrono::Duration::seconds(61));
    assert_eq!(h.delegate("r3", &request).await.status, 201);
}

#[tokio::test]
async fn signed_requests_verify_and_others_are_401() {
    let h = harness(signed).await;
    let request = example(EX, "delegate_payment_request");
    let ts = "2025-09-29T11:00:30Z";
    let sig = sign(&platform_pair(), ts, &request);
    let mut headers = standard_headers("signed-1");
    headers.push(("Timestamp", ts));
    headers.push(("Signature", &sig));
    // The body as sent is pretty-printed: the signature covers its canonical form.
    let a = h
        .post_raw(
            "/agentic_commerce/delegate_payment",
            &headers,
            serde_json::to_vec_pretty(&request).unwrap(),
        )
        .await;
    assert_eq!(a.status, 201, "{}", a.body);

    let unsigned = h.delegate("signed-2", &request).await;
    assert_eq!(unsigned.status, 401);
    assert_eq!(
        unsigned.body,
        json!({"type": "unauthorized", "code": "unauthorized", "message": "Unauthorized"}),
        "the OpenAPI's 401 example"
    );
}

#[tokio::test]
async fn unknown_versions_name_the_supported_ones() {
    let h = harness(|c| c).await;
    let request = example(EX, "delegate_payment_request");
    let mut headers = standard_headers("v1");
    headers[2] = ("API-Version", "2025-01-01");
    let a = h
        .post_raw(
            "/agentic_commerce/delegate_payment",
            &headers,
            serde_json::to_vec(&request).unwrap(),
        )
        .await;
    assert_eq!(a.status, 400);
    assert_eq!(a.body["code"], "unsupported_api_version");
    assert_eq!(a.body["supported_versions"], json!(["2026-04-17"]));
}
