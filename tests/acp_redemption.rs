//! Redemption of a vault token for an ACP checkout session: the published checkout examples
//! become cart snapshots and pay through the engine (I1: an allowed decision at execution
//! time before any PSP call); the allowance's merchant, session, maximum, expiry and single
//! use refuse everything else, each refusal audited (I9) with its blocker codes.
#![cfg(all(
    feature = "acp",
    feature = "axum",
    feature = "testkit",
    feature = "http"
))]

mod acp_support;

use acp_support::*;
use agent_mandate::acp::{CheckoutSession, RedeemError, Redemption};
use agent_mandate::domain::{AttemptStatus, IdempotencyKey, MerchantId};
use serde_json::{json, Value};

const CO: &str = "examples.agentic_checkout.json";
const SC: &str = "schema.agentic_checkout.json";

fn session(name: &str) -> Value {
    if name.starts_with("create_multi_item") {
        example("examples.multi_item_checkout.json", name)
    } else {
        example(CO, name)
    }
}

/// Delegates a token for `session_id` at `merchant` with `max` cents, over HTTP.
async fn token(h: &Harness, key: &str, session_id: &str, merchant: &str, max: i64) -> String {
    let a = h
        .delegate(key, &request_for(session_id, merchant, max))
        .await;
    assert_eq!(a.status, 201, "{}", a.body);
    a.body["id"].as_str().unwrap().to_owned()
}

fn decision_events(h: &Harness) -> Vec<Value> {
    audit_bodies(&h.memory)
        .into_iter()
        .filter(|b| b.to_string().contains("\"decision\""))
        .collect()
}

#[tokio::test]
async fn every_ready_checkout_example_pays_once_through_the_engine() {
    for (name, total) in [
        ("get_checkout_session_response", "4.30 USD"),
        ("update_checkout_session_response", "8.30 USD"),
        ("create_checkout_session_response", "4.80 USD"),
        ("checkout_session_with_payment_declined", "4.30 USD"),
        ("create_multi_item_checkout_response", "13.05 USD"),
    ] {
        let h = harness(|c| c).await;
        let s = session(name);
        let id = s["id"].as_str().unwrap();
        let vt = token(&h, "d-1", id, "acme_store", 2000).await;
        let a = h.redeem("acme_store", "complete-1", &vt, &s).await;
        assert_eq!(a.status, 201, "{name}: {}", a.body);
        let attempt = &a.body["attempt"];
        assert_eq!(attempt["status"], "captured", "{name}");
        if !total.is_empty() {
            let amount = format!(
                "{} {}",
                attempt["captured"]["amount"].as_str().unwrap(),
                attempt["captured"]["currency"].as_str().unwrap()
            );
            assert_eq!(amount, total, "{name}");
        }
        // The same completion again is a replay: no second PSP call.
        let again = h.redeem("acme_store", "complete-1", &vt, &s).await;
        assert_eq!(again.status, 200, "{name}: {}", again.body);
        assert_eq!(again.headers["idempotent-replayed"], "true");
        // Another completion with the same token is a second use: refused.
        let second = h.redeem("acme_store", "complete-2", &vt, &s).await;
        assert_eq!(second.status, 409, "{name}: {}", second.body);
        assert_eq!(second.body["code"], "token_already_used");
        assert_valid(SC, "Error", &second.body);
    }
}

#[tokio::test]
async fn a_completed_session_cannot_be_paid_again() {
    let h = harness(|c| c).await;
    let s = session("complete_checkout_session_response");
    let vt = token(&h, "d-done", s["id"].as_str().unwrap(), "acme_store", 2000).await;
    let a = h.redeem("acme_store", "c-done", &vt, &s).await;
    assert_eq!(a.status, 409, "{}", a.body);
    assert_eq!(a.body["code"], "checkout_not_ready");
    assert!(decision_events(&h)
        .iter()
        .any(|e| e.to_string().contains("STATUS_COMPLETED")));
}

#[tokio::test]
async fn a_session_that_is_not_ready_is_refused_with_its_upstream_reasons() {
    let h = harness(|c| c).await;
    let s = session("checkout_session_with_out_of_stock");
    let vt = token(&h, "d-oos", s["id"].as_str().unwrap(), "acme_store", 2000).await;
    let a = h.redeem("acme_store", "c-oos", &vt, &s).await;
    assert_eq!(a.status, 409, "{}", a.body);
    assert_eq!(a.body["code"], "checkout_not_ready");
    assert_valid(SC, "Error", &a.body);
    let events = decision_events(&h);
    assert!(
        events
            .iter()
            .any(|e| e.to_string().contains("OUT_OF_STOCK")),
        "the decision names the session's own error"
    );
}

struct Case {
    name: &'static str,
    merchant: &'static str,
    session: &'static str,
    max: i64,
    advance_days: i64,
    code: &'static str,
    status: u16,
    blocker: &'static str,
}

#[tokio::test]
async fn the_allowance_refuses_everything_outside_it_and_audits_why() {
    let cases = [
        Case {
            name: "wrong merchant",
            merchant: "evil_store",
            session: "checkout_session_123",
            max: 2000,
            advance_days: 0,
            code: "merchant_mismatch",
            status: 403,
            blocker: "MERCHANT_MISMATCH",
        },
        Case {
            name: "wrong session",
            merchant: "acme_store",
            session: "checkout_session_other",
            max: 2000,
            advance_days: 0,
            code: "checkout_session_mismatch",
            status: 403,
            blocker: "ACP_CHECKOUT_SESSION_MISMATCH",
        },
        Case {
            name: "over the maximum",
            merchant: "acme_store",
            session: "checkout_session_123",
            max: 429,
            advance_days: 0,
            code: "amount_exceeds_allowance",
            status: 422,
            blocker: "AMOUNT_EXCEEDS_MANDATE",
        },
        Case {
            name: "after expiry",
            merchant: "acme_store",
            session: "checkout_session_123",
            max: 2000,
            advance_days: 11,
            code: "allowance_expired",
            status: 422,
            blocker: "MANDATE_EXPIRED",
        },
    ];
    for c in cases {
        let h = harness(|c| c).await;
        let s = session("get_checkout_session_response");
        let vt = token(&h, "d", c.session, "acme_store", c.max).await;
        h.memory
            .clock
            .advance(chrono::Duration::days(c.advance_days));
        let a = h.redeem(c.merchant, "c", &vt, &s).await;
        assert_eq!(a.status, c.status, "{}: {}", c.name, a.body);
        assert_eq!(a.body["code"], c.code, "{}", c.name);
        assert_valid(SC, "Error", &a.body);
        let events = decision_events(&h);
        assert!(
            events.iter().any(|e| e.to_string().contains(c.blocker)),
            "{}: the refusal is audited with {}: {events:?}",
            c.name,
            c.blocker
        );
        assert!(
            !audit_bodies(&h.memory)
                .iter()
                .any(|b| b.to_string().contains("pending_provider_response")),
            "{}: nothing was sent to the PSP",
            c.name
        );
        // The allowance still pays its own session at its merchant (except once expired).
        if c.name == "wrong merchant" {
            let ok = h.redeem("acme_store", "c-ok", &vt, &s).await;
            assert_eq!(ok.status, 201, "{}: {}", c.name, ok.body);
        }
    }
}

#[tokio::test]
async fn the_rust_api_refuses_a_second_use_and_unknown_tokens() {
    let (_memory, service) = service(|c| c);
    let s = session("get_checkout_session_response");
    let body = request_for("checkout_session_123", "acme_store", 2000);
    let headers = agent_mandate::acp::RequestHeaders::new()
        .with("Authorization", "Bearer t")
        .with("Content-Type", "application/json")
        .with("API-Version", VERSION)
        .with("Idempotency-Key", "rust-1");
    let platform = agent_mandate::domain::Principal::Agent("p".parse().unwrap());
    let done = service
        .delegate(
            Some(&platform),
            None,
            &headers,
            &serde_json::to_vec(&body).unwrap(),
        )
        .await
        .unwrap();
    let parsed = CheckoutSession::parse(&serde_json::to_vec(&s).unwrap()).unwrap();
    let merchant = MerchantId::new("acme_store").unwrap();
    let paid = service
        .redeem(&Redemption::new(
            done.token.clone(),
            merchant.clone(),
            parsed.clone(),
            IdempotencyKey::new("k1").unwrap(),
        ))
        .await
        .unwrap();
    assert_eq!(paid.attempt.status, AttemptStatus::Captured);
    let second = service
        .redeem(&Redemption::new(
            done.token.clone(),
            merchant.clone(),
            parsed.clone(),
            IdempotencyKey::new("k2").unwrap(),
        ))
        .await
        .unwrap_err();
    assert!(matches!(second, RedeemError::AlreadyUsed(_)), "{second:?}");
    for bad in ["vt_cred_nope", "cred_x", "", "vt_"] {
        let e = service
            .redeem(&Redemption::new(
                bad,
                merchant.clone(),
                parsed.clone(),
                IdempotencyKey::new("k3").unwrap(),
            ))
            .await
            .unwrap_err();
        assert_eq!(e, RedeemError::UnknownToken, "{bad}");
        assert_eq!(e.status(), 404);
    }
}

#[tokio::test]
async fn sessions_that_cannot_be_snapshots_are_refused_naming_the_member() {
    let h = harness(|c| c).await;
    let base = session("get_checkout_session_response");
    let vt = token(&h, "d", "checkout_session_123", "acme_store", 2000).await;
    let mut wrong_total = base.clone();
    wrong_total["totals"][4]["amount"] = json!(431);
    let mut fee = base.clone();
    fee["totals"]
        .as_array_mut()
        .unwrap()
        .push(json!({"type": "fee", "display_text": "Fee", "amount": 50}));
    let mut refunded = base.clone();
    refunded["totals"]
        .as_array_mut()
        .unwrap()
        .push(json!({"type": "amount_refunded", "display_text": "Refunded", "amount": 50}));
    let mut no_price = base.clone();
    no_price["line_items"][0]["totals"] = json!([]);
    let mut bad_currency = base.clone();
    bad_currency["currency"] = json!("xyz");
    for (what, s) in [
        ("totals that do not add up", wrong_total),
        ("a fee the total does not include", fee),
        ("a refunded session", refunded),
        ("a line without a price", no_price),
        ("an unknown currency", bad_currency),
    ] {
        let a = h
            .redeem("acme_store", &what.replace(' ', "-"), &vt, &s)
            .await;
        assert_eq!(a.status, 400, "{what}: {}", a.body);
        assert_eq!(a.body["code"], "invalid_checkout_session", "{what}");
        assert!(a.body["param"].as_str().unwrap().starts_with('$'), "{what}");
        assert_valid(SC, "Error", &a.body);
    }
}

/// The merchant reusing its key for another completion gets the permanent conflict, not a
/// 503 that tells it to retry the same key forever; nothing is charged twice.
#[tokio::test]
async fn acp_redeem_same_key_other_session_is_422_not_503() {
    let h = harness(|c| c).await;
    let s = session("get_checkout_session_response");
    let id = s["id"].as_str().unwrap();
    let vt = token(&h, "d-conflict", id, "acme_store", 2000).await;
    let a = h.redeem("acme_store", "c-1", &vt, &s).await;
    assert_eq!(a.status, 201, "{}", a.body);
    let mut other = s.clone();
    other["id"] = json!("checkout_session_other");
    let b = h.redeem("acme_store", "c-1", &vt, &other).await;
    assert_eq!(b.status, 422, "{}", b.body);
    assert_eq!(b.body["code"], "idempotency_conflict");
    assert_eq!(b.body["type"], "invalid_request");
    assert!(b.headers.get("retry-after").is_none());
    assert_valid(SC, "Error", &b.body);
    // The first completion still replays.
    let again = h.redeem("acme_store", "c-1", &vt, &s).await;
    assert_eq!(again.status, 200, "{}", again.body);
}
