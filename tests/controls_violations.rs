//! The violations control: an agent's own spending-control violations, more than 3 in a
//! rolling hour or 3 in a row, suspend its authority and alert security; a cart that departs
//! from the declared intent suspends it at once with `INTENT_MISMATCH`.

#![cfg(feature = "testkit")]

mod common;
mod controls_support;

use agent_mandate::domain::{examples, Audience, BlockerCode, Outcome, PurchaseIntent, Severity};
use agent_mandate::engine::{Controls, Rate};
use controls_support::*;

fn hourly(max: u32) -> Controls {
    Controls::off().with_violations(Some(
        Rate::new(max, std::time::Duration::from_secs(3600)).expect("rate"),
    ))
}

/// Three violations in an hour, each followed by a payment (so never three in a row): N-1,
/// nothing. The fourth in the hour suspends and alerts security.
#[tokio::test]
async fn more_than_three_in_an_hour_suspend() {
    let (w, sink) = controlled(hourly(3), Some(3)).await;
    for i in 0..3 {
        let out = run(&w, &violation(&w, &format!("v{i}"))).await;
        assert_eq!(outcome(&out), Some(Outcome::Blocked));
        assert!(paid(&run(&w, &pay(&w, &format!("p{i}"))).await));
        advance(&w, 60);
    }
    assert!(!suspended(&w).await, "three in the hour: not yet");
    assert!(alerts_of(&sink, "violations_suspended").is_empty());
    run(&w, &violation(&w, "v3")).await;
    assert!(suspended(&w).await, "the fourth in the hour suspends");
    let alerts = alerts_of(&sink, "violations_suspended");
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0].audience, Audience::Security);
    assert_eq!(alerts[0].severity, Severity::Critical);
    assert_eq!(trail_alerts(&w, "violations_suspended").len(), 1);
    // Suspended: the next payment is refused.
    let out = run(&w, &pay(&w, "after")).await;
    assert_eq!(outcome(&out), Some(Outcome::Blocked));
}

/// Window edge with the manual clock: a violation exactly one hour old has left the window
/// `(now - 1 h, now]`; one second less and it is still in.
#[tokio::test]
async fn the_window_is_a_rolling_hour() {
    let (w, _) = controlled(hourly(3), None).await;
    run(&w, &violation(&w, "v0")).await; // t0
    advance(&w, 600);
    run(&w, &violation(&w, "v1")).await;
    run(&w, &violation(&w, "v2")).await;
    advance(&w, 3000); // t0 + 1 h exactly: v0 is out
    run(&w, &violation(&w, "v3")).await;
    assert!(
        !suspended(&w).await,
        "v0 left the window at exactly one hour"
    );
    advance(&w, 1); // v1, v2, v3 and this one: four within the hour
    run(&w, &violation(&w, "v4")).await;
    assert!(suspended(&w).await);
}

/// `auto_suspend_after` keeps its meaning: three in a row suspend, with a security alert
/// when the violations control is on; two in a row do not.
#[tokio::test]
async fn three_in_a_row_suspend_with_an_alert() {
    let (w, sink) = controlled(Controls::recommended(), Some(3)).await;
    run(&w, &violation(&w, "v0")).await;
    run(&w, &violation(&w, "v1")).await;
    assert!(!suspended(&w).await);
    run(&w, &violation(&w, "v2")).await;
    assert!(suspended(&w).await);
    let alerts = alerts_of(&sink, "violations_suspended");
    assert_eq!(alerts.len(), 1, "{alerts:?}");
}

/// With the control off nothing is counted in the window (the consecutive count stays).
#[tokio::test]
async fn off_means_off() {
    let (w, sink) = controlled(Controls::off(), None).await;
    for i in 0..6 {
        run(&w, &violation(&w, &format!("v{i}"))).await;
    }
    assert!(!suspended(&w).await);
    assert!(sink.alerts().is_empty());
}

/// A budget refusal (a race for the last headroom) is not a violation.
#[tokio::test]
async fn budget_refusals_are_not_violations() {
    let (w, _) = controlled(hourly(0), None).await;
    let mut cmd = pay(&w, "stale");
    cmd.checkout = agent_mandate::domain::CheckoutState::Expired {
        checkout_id: "checkout_789".parse().expect("id"),
        expired_at: examples::now(),
    };
    let out = run(&w, &cmd).await;
    assert_eq!(outcome(&out), Some(Outcome::RequiresRevalidation));
    assert!(
        !suspended(&w).await,
        "an upstream fact is not the agent's violation"
    );
}

/// A cart that departs from the declared intent: refused with its own code, the agent
/// suspended at once, security alerted with the intent's hash. The matching intent pays.
#[tokio::test]
async fn intent_mismatch_suspends_at_once() {
    let (w, sink) = controlled(Controls::recommended(), Some(3)).await;
    let intent = examples::intent_for(&request(&w), &w.snapshot);
    let ok = run(&w, &pay(&w, "match").with_intent(intent.clone())).await;
    assert!(paid(&ok), "{ok:?}");
    let mut spec = intent.spec().clone();
    spec.line_items[0].quantity = 2;
    let other = PurchaseIntent::new(spec).expect("intent");
    let out = run(&w, &pay(&w, "mismatch").with_intent(other.clone())).await;
    match &out {
        agent_mandate::engine::PaymentOutcome::Refused(d) => {
            assert_eq!(d.outcome, Outcome::Blocked);
            assert!(d.has(BlockerCode::IntentMismatch), "{d:?}");
            assert_eq!(
                d.risk_vectors(),
                vec![agent_mandate::domain::RiskVector::WrongThing]
            );
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert!(suspended(&w).await, "one mismatch suspends");
    let alerts = alerts_of(&sink, "intent_mismatch");
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].audience, Audience::Security);
    assert!(matches!(
        &alerts[0].kind,
        agent_mandate::domain::AlertKind::IntentMismatch { intent_hash, .. }
            if *intent_hash == other.intent_hash()
    ));
}

/// With `intent_suspends` off the mismatch is still refused with its code, and nothing is
/// suspended.
#[tokio::test]
async fn intent_mismatch_without_suspension() {
    let (w, _) = controlled(Controls::off(), None).await;
    let mut spec = examples::intent_for(&request(&w), &w.snapshot)
        .spec()
        .clone();
    spec.merchant_id = "merchant_002".parse().expect("id");
    let out = run(
        &w,
        &pay(&w, "mismatch").with_intent(PurchaseIntent::new(spec).expect("intent")),
    )
    .await;
    assert_eq!(outcome(&out), Some(Outcome::Blocked));
    assert!(!suspended(&w).await);
}
