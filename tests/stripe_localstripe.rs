//! The Stripe adapter against a real Stripe-compatible server (localstripe): the PSP
//! conformance suite, and whole engine flows. Skipped (passing, with a `SKIPPED:` line) when
//! `LOCALSTRIPE_URL` is not set; `scripts/with-localstripe.sh` sets it.
//!
//! localstripe ignores `Idempotency-Key` and accepts capture after cancel and refunds above
//! the captured amount: the tests at the end show the engine refuses those transitions before
//! any HTTP request (I3, and the attempt state machine).

#![cfg(all(feature = "http", feature = "testkit"))]

mod common;
#[allow(unused_imports)]
use common::principals::*;
#[path = "common/fault_proxy.rs"]
mod fault_proxy;
#[path = "common/localstripe.rs"]
mod localstripe;

use agent_mandate::adapters::http::StripeProvider;
use agent_mandate::domain::{
    AttemptStatus, BuyerId, Currency, MerchantId, Money, ProviderStatus, SnapshotId,
};
use agent_mandate::engine::EngineError;
use agent_mandate::ports::{Lookup, PaymentProvider};
use agent_mandate::testkit::{payment_provider_conformance, ProviderCapabilities, ProviderFixture};

use common::engine::{agent_capture, agent_refund, agent_void};
use common::eur;
use fault_proxy::FaultProxy;
use localstripe::{localstripe_url, run_prefix, stripe_world, StripeWorld};

/// What localstripe supports, for the conformance suite: it ignores `Idempotency-Key` (so
/// `psp_idempotent_authorize` cannot pass against it: the engine's keyed commands are what
/// prevent a second authorization, see `engine_refuses_*` below), and it accepts capture
/// after cancel and refunds above the captured amount (so `psp_illegal_transitions` is
/// skipped). Partial capture, partial refunds and lookup by key (a metadata scan) work.
fn localstripe_caps() -> ProviderCapabilities {
    ProviderCapabilities {
        honors_idempotency_keys: false,
        refuses_illegal_transitions: false,
        ..ProviderCapabilities::default()
    }
}

#[tokio::test]
async fn psp_conformance_suite_against_localstripe() {
    let Some(url) = localstripe_url("psp_conformance_suite_against_localstripe") else {
        return;
    };
    let w = stripe_world(&url, localstripe::config(&url)).await;
    let fixture = ProviderFixture {
        good: w.good.clone(),
        declining: w.declining.clone(),
        three_ds: Some(w.three_ds.clone()),
        amount: Money::from_minor(1000, Currency::EUR).expect("amount"),
        merchant_id: MerchantId::new("merchant_suite").expect("id"),
        buyer_id: BuyerId::new("buyer_suite").expect("id"),
        snapshot_id: SnapshotId::from_bytes([7; 32]),
        key_prefix: run_prefix("suite"),
    };
    let report = payment_provider_conformance(&*w.psp, &fixture, &localstripe_caps()).await;
    eprintln!("conformance against localstripe: {report:?}");
    assert_eq!(
        report.skipped,
        vec!["psp_idempotent_authorize", "psp_illegal_transitions"],
        "only the checks localstripe cannot support are skipped"
    );
    assert_eq!(report.passed.len(), 8, "{report:?}");
}

/// Authorize, partial capture, partial refund, full refund; the PSP's view after each step
/// matches the attempt; metadata carries the attempt and snapshot.
#[tokio::test]
async fn engine_flow_authorize_partial_capture_refund() {
    let Some(url) = localstripe_url("engine_flow_authorize_partial_capture_refund") else {
        return;
    };
    let w = stripe_world(&url, localstripe::config(&url)).await;
    let p = run_prefix("flow");
    let done = w
        .engine
        .execute_payment(&agent_p(), &w.execute(&format!("{p}-exec"), &w.good, false))
        .await
        .expect("executed");
    let a = done.attempt().expect("attempt").clone();
    assert_eq!(a.status, AttemptStatus::Authorized);
    let reference = a.provider_ref.clone().expect("a PaymentIntent id");
    assert!(reference.as_str().starts_with("pi_"), "{reference}");
    assert_eq!(w.usage().await.held, a.request.amount);

    // The PaymentIntent carries the attempt and snapshot (for reconciliation).
    let pi = raw_intent(&url, reference.as_str()).await;
    assert_eq!(pi["capture_method"], "manual");
    assert_eq!(pi["metadata"]["agent_mandate_attempt_id"], a.id.as_str());
    assert_eq!(
        pi["metadata"]["agent_mandate_snapshot_id"],
        a.request.snapshot_id.to_string()
    );
    assert_eq!(
        pi["amount"].as_i64(),
        Some(a.request.amount.minor_units()),
        "minor units"
    );

    let part = eur("100.00");
    let captured = w
        .engine
        .capture(
            &agent_p(),
            &agent_capture(&format!("{p}-cap"), &a.id, Some(part)),
        )
        .await
        .expect("captured");
    let a = captured.attempt().expect("attempt").clone();
    assert_eq!(a.status, AttemptStatus::PartiallyCaptured);
    assert_eq!(a.captured, part);
    let seen = psp_view(&w.psp, &reference).await;
    assert_eq!(
        (seen.status.clone(), seen.captured),
        (ProviderStatus::Captured, part)
    );

    let refunded = w
        .engine
        .refund(
            &agent_p(),
            &agent_refund(&format!("{p}-ref-1"), &a.id, Some(eur("40.00"))),
        )
        .await
        .expect("refunded");
    let a = refunded.attempt().expect("attempt").clone();
    assert_eq!(a.status, AttemptStatus::PartiallyRefunded);
    assert_eq!(a.refunded, eur("40.00"));
    let refunded = w
        .engine
        .refund(
            &agent_p(),
            &agent_refund(&format!("{p}-ref-2"), &a.id, None),
        )
        .await
        .expect("refunded");
    let a = refunded.attempt().expect("attempt").clone();
    assert_eq!(a.status, AttemptStatus::Refunded);
    let seen = psp_view(&w.psp, &reference).await;
    assert_eq!((seen.captured, seen.refunded), (part, part));

    // Reconcile reads the same view and changes nothing.
    let again = w.engine.reconcile(&a.id).await.expect("reconciled");
    assert_eq!(again.status, AttemptStatus::Refunded);
}

/// Authorize then void: the PaymentIntent is canceled, the hold released.
#[tokio::test]
async fn engine_flow_void_releases_the_hold() {
    let Some(url) = localstripe_url("engine_flow_void_releases_the_hold") else {
        return;
    };
    let w = stripe_world(&url, localstripe::config(&url)).await;
    let p = run_prefix("void");
    let a = authorized(&w, &p).await;
    let voided = w
        .engine
        .void(&agent_p(), &agent_void(&format!("{p}-void"), &a.id))
        .await
        .expect("voided");
    let a = voided.attempt().expect("attempt").clone();
    assert_eq!(a.status, AttemptStatus::Cancelled);
    assert!(w.usage().await.held.is_zero());
    let reference = a.provider_ref.clone().expect("reference");
    assert_eq!(
        psp_view(&w.psp, &reference).await.status,
        ProviderStatus::Cancelled
    );
}

/// `pm_card_chargeCustomerFail`: a decline is data; the attempt fails with the code and the
/// hold is released.
#[tokio::test]
async fn engine_flow_declining_card() {
    let Some(url) = localstripe_url("engine_flow_declining_card") else {
        return;
    };
    let w = stripe_world(&url, localstripe::config(&url)).await;
    let p = run_prefix("decline");
    let done = w
        .engine
        .execute_payment(
            &agent_p(),
            &w.execute(&format!("{p}-exec"), &w.declining, false),
        )
        .await
        .expect("a decline is not an error");
    let a = done.attempt().expect("attempt");
    assert_eq!(a.status, AttemptStatus::Failed);
    assert_eq!(a.decline_code.as_deref(), Some("card_declined"));
    assert!(
        a.provider_ref.is_some(),
        "the declined PaymentIntent is named"
    );
    assert!(w.usage().await.held.is_zero());
}

/// The 3-D Secure card: `requires_action` -> `requires_buyer_action`, hold kept; reconcile
/// leaves it there; a void cancels it.
#[tokio::test]
async fn engine_flow_three_ds_requires_buyer_action() {
    let Some(url) = localstripe_url("engine_flow_three_ds_requires_buyer_action") else {
        return;
    };
    let w = stripe_world(&url, localstripe::config(&url)).await;
    let p = run_prefix("threeds");
    let done = w
        .engine
        .execute_payment(
            &agent_p(),
            &w.execute(&format!("{p}-exec"), &w.three_ds, false),
        )
        .await
        .expect("executed");
    let a = done.attempt().expect("attempt").clone();
    assert_eq!(a.status, AttemptStatus::RequiresBuyerAction);
    assert_eq!(w.usage().await.held, a.request.amount, "I5: the hold stays");
    let again = w.engine.reconcile(&a.id).await.expect("reconciled");
    assert_eq!(again.status, AttemptStatus::RequiresBuyerAction);
    let voided = w
        .engine
        .void(&agent_p(), &agent_void(&format!("{p}-void"), &a.id))
        .await
        .expect("voided");
    assert_eq!(
        voided.attempt().expect("attempt").status,
        AttemptStatus::Cancelled
    );
    assert!(w.usage().await.held.is_zero());
}

/// localstripe would capture a cancelled PaymentIntent; the engine refuses before any HTTP
/// request (the proxy sees none).
#[tokio::test]
async fn engine_refuses_capture_after_void_before_any_http_call() {
    let Some(url) = localstripe_url("engine_refuses_capture_after_void_before_any_http_call")
    else {
        return;
    };
    let proxy = FaultProxy::start(&url).await;
    let config = localstripe::config(&proxy.url).with_max_idle_per_host(0);
    let w = stripe_world(&url, config).await;
    let p = run_prefix("capvoid");
    let a = authorized(&w, &p).await;
    w.engine
        .void(&agent_p(), &agent_void(&format!("{p}-void"), &a.id))
        .await
        .expect("voided");
    let before = proxy.count();
    let refused = w
        .engine
        .capture(&agent_p(), &agent_capture(&format!("{p}-cap"), &a.id, None))
        .await;
    assert!(
        matches!(refused, Err(EngineError::Transition(_))),
        "{refused:?}"
    );
    assert_eq!(proxy.since(before), Vec::<String>::new(), "no HTTP call");
}

/// localstripe would refund twice; the engine refuses a refund of a refunded attempt and a
/// refund above what is left, before any HTTP request.
#[tokio::test]
async fn engine_refuses_double_refund_before_any_http_call() {
    let Some(url) = localstripe_url("engine_refuses_double_refund_before_any_http_call") else {
        return;
    };
    let proxy = FaultProxy::start(&url).await;
    let config = localstripe::config(&proxy.url).with_max_idle_per_host(0);
    let w = stripe_world(&url, config).await;
    let p = run_prefix("dblref");
    let done = w
        .engine
        .execute_payment(&agent_p(), &w.execute(&format!("{p}-exec"), &w.good, true))
        .await
        .expect("executed");
    let a = done.attempt().expect("attempt").clone();
    assert_eq!(a.status, AttemptStatus::Captured);
    let before = proxy.count();
    let above = a.captured.checked_add(&eur("0.01")).expect("amount");
    let refused = w
        .engine
        .refund(
            &agent_p(),
            &agent_refund(&format!("{p}-ref-above"), &a.id, Some(above)),
        )
        .await;
    assert!(refused.is_err(), "{refused:?}");
    assert_eq!(proxy.since(before), Vec::<String>::new(), "no HTTP call");

    let full = w
        .engine
        .refund(
            &agent_p(),
            &agent_refund(&format!("{p}-ref-1"), &a.id, None),
        )
        .await
        .expect("refunded");
    assert_eq!(
        full.attempt().expect("attempt").status,
        AttemptStatus::Refunded
    );
    let before = proxy.count();
    let refused = w
        .engine
        .refund(
            &agent_p(),
            &agent_refund(&format!("{p}-ref-2"), &a.id, Some(eur("1.00"))),
        )
        .await;
    assert!(
        matches!(refused, Err(EngineError::Transition(_))),
        "{refused:?}"
    );
    assert_eq!(proxy.since(before), Vec::<String>::new(), "no HTTP call");
    let seen = psp_view(&w.psp, a.provider_ref.as_ref().expect("ref")).await;
    assert_eq!(seen.refunded, a.captured, "refunded once, not twice");
}

/// The same execute command twice: one PaymentIntent, one authorization (I3), although
/// localstripe ignores `Idempotency-Key`: the replay is answered by the engine.
#[tokio::test]
async fn engine_replay_sends_no_second_authorization() {
    let Some(url) = localstripe_url("engine_replay_sends_no_second_authorization") else {
        return;
    };
    let proxy = FaultProxy::start(&url).await;
    let config = localstripe::config(&proxy.url).with_max_idle_per_host(0);
    let w = stripe_world(&url, config).await;
    let p = run_prefix("replay");
    let command = w.execute(&format!("{p}-exec"), &w.good, false);
    let first = w
        .engine
        .execute_payment(&payer(&command), &command)
        .await
        .expect("executed");
    let before = proxy.count();
    let second = w
        .engine
        .execute_payment(&payer(&command), &command)
        .await
        .expect("replayed");
    assert!(second.is_replay());
    assert_eq!(first.attempt(), second.attempt());
    assert_eq!(proxy.since(before), Vec::<String>::new(), "no HTTP call");
}

async fn authorized(w: &StripeWorld, p: &str) -> agent_mandate::domain::PaymentAttempt {
    let done = w
        .engine
        .execute_payment(&agent_p(), &w.execute(&format!("{p}-exec"), &w.good, false))
        .await
        .expect("executed");
    let a = done.attempt().expect("attempt").clone();
    assert_eq!(a.status, AttemptStatus::Authorized);
    a
}

async fn psp_view(
    psp: &StripeProvider,
    reference: &agent_mandate::domain::ProviderRef,
) -> agent_mandate::domain::ProviderReport {
    psp.lookup(&Lookup::Reference(reference.clone()))
        .await
        .expect("lookup")
        .expect("found")
}

async fn raw_intent(url: &str, id: &str) -> serde_json::Value {
    agent_mandate::adapters::http::client_builder()
        .unwrap()
        .build()
        .unwrap()
        .get(format!("{url}/v1/payment_intents/{id}"))
        .bearer_auth(localstripe::API_KEY)
        .send()
        .await
        .expect("localstripe")
        .bytes()
        .await
        .map(|b| serde_json::from_slice(&b).expect("JSON"))
        .expect("body")
}
