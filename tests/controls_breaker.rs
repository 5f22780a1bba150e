//! The authentication circuit breaker: more than 5 failed authentications (`Invalid` answers
//! on authorize, 3-D Secure failure declines) in 10 minutes per credential or agent refuse
//! new payments with `CIRCUIT_OPEN` until an operator resets the breaker or the cool-down
//! passes; security is alerted.

#![cfg(feature = "testkit")]

mod common;
mod controls_support;

use std::time::Duration;

use agent_mandate::domain::{BlockerCode, BreakerScope, Outcome, RiskVector};
use agent_mandate::engine::{Breaker, BreakerTarget, Controls, EngineError, PaymentOutcome, Rate};
use agent_mandate::testkit::{Fault, Op};
use common::principals::*;
use controls_support::*;

fn breaker() -> Controls {
    Controls::off().with_auth_failures(Some(
        Breaker::new(
            Rate::new(5, Duration::from_secs(600)).expect("rate"),
            Duration::from_secs(1800),
        )
        .expect("breaker"),
    ))
}

async fn fail_auth(w: &common::engine::World, k: &str, fault: Fault) {
    w.psp.inject(Some(Op::Authorize), fault);
    let out = w.engine.execute_payment(&agent_p(), &pay(w, k)).await;
    match out {
        Err(EngineError::Provider(_)) | Ok(PaymentOutcome::Done { .. }) => {}
        other => panic!("{k}: expected a failed authorization, got {other:?}"),
    }
}

fn circuit_open(o: &PaymentOutcome) -> bool {
    matches!(o, PaymentOutcome::Refused(d) if d.has(BlockerCode::CircuitOpen) && d.outcome == Outcome::Blocked)
}

/// Five failures: the sixth payment still reaches the PSP. The sixth failure opens the
/// breaker: the next payment is refused without a PSP call, security is alerted.
#[tokio::test]
async fn six_failures_open_the_breaker() {
    let (w, sink) = controlled(breaker(), None).await;
    for i in 0..5 {
        fail_auth(&w, &format!("f{i}"), Fault::Invalid).await;
    }
    assert!(
        alerts_of(&sink, "circuit_opened").is_empty(),
        "five: closed"
    );
    let calls = w.psp.calls(Op::Authorize);
    fail_auth(&w, "f5", Fault::Invalid).await;
    assert_eq!(
        w.psp.calls(Op::Authorize),
        calls + 1,
        "the sixth went to the PSP"
    );
    let opened = alerts_of(&sink, "circuit_opened");
    assert_eq!(
        opened.len(),
        2,
        "the credential's and the agent's: {opened:?}"
    );
    assert!(opened
        .iter()
        .all(|a| a.risk == Some(RiskVector::WrongCredential)));
    let calls = w.psp.calls(Op::Authorize);
    let out = run(&w, &pay(&w, "next")).await;
    assert!(circuit_open(&out), "{out:?}");
    assert_eq!(w.psp.calls(Op::Authorize), calls, "refused before the PSP");
}

/// 3-D Secure failures count like `Invalid` answers; other declines do not.
#[tokio::test]
async fn three_d_secure_failures_count_other_declines_do_not() {
    let (w, _) = controlled(breaker(), None).await;
    for i in 0..10 {
        fail_auth(
            &w,
            &format!("d{i}"),
            Fault::Decline("insufficient_funds".into()),
        )
        .await;
    }
    assert!(
        paid(&run(&w, &pay(&w, "ok")).await),
        "plain declines are not authentication failures"
    );
    for i in 0..6 {
        fail_auth(
            &w,
            &format!("t{i}"),
            Fault::Decline("three_d_secure_failed".into()),
        )
        .await;
    }
    assert!(circuit_open(&run(&w, &pay(&w, "held")).await));
}

/// Window edge: a failure exactly ten minutes old has left the window.
#[tokio::test]
async fn failures_count_in_a_rolling_window() {
    let (w, _) = controlled(breaker(), None).await;
    fail_auth(&w, "f0", Fault::Invalid).await;
    advance(&w, 60);
    for i in 1..5 {
        fail_auth(&w, &format!("f{i}"), Fault::Invalid).await;
    }
    advance(&w, 540); // f0 is exactly 10 minutes old
    fail_auth(&w, "f5", Fault::Invalid).await;
    assert!(
        paid(&run(&w, &pay(&w, "ok")).await),
        "f0 is out: five in the window"
    );
    advance(&w, 1);
    fail_auth(&w, "f6", Fault::Invalid).await;
    assert!(circuit_open(&run(&w, &pay(&w, "held")).await));
}

/// The breaker closes after the cool-down (not a second before), or when an operator resets
/// it; an agent or the buyer may not reset it.
#[tokio::test]
async fn cool_down_and_reset() {
    let (w, _) = controlled(breaker(), None).await;
    for i in 0..6 {
        fail_auth(&w, &format!("f{i}"), Fault::Invalid).await;
    }
    advance(&w, 1799);
    assert!(circuit_open(&run(&w, &pay(&w, "early")).await));
    advance(&w, 1);
    assert!(paid(&run(&w, &pay(&w, "cooled")).await));

    for i in 0..6 {
        fail_auth(&w, &format!("g{i}"), Fault::Invalid).await;
    }
    assert!(circuit_open(&run(&w, &pay(&w, "held")).await));
    let agent = BreakerTarget::Agent(agent_mandate::domain::examples::agent().id);
    let card = BreakerTarget::Credential(w.card.clone());
    for who in [agent_p(), buyer_p(), system_p()] {
        assert!(matches!(
            w.engine.reset_breaker(&who, &agent).await,
            Err(EngineError::NotPermitted { .. })
        ));
    }
    w.engine
        .reset_breaker(&operator_p(), &card)
        .await
        .expect("reset");
    let out = run(&w, &pay(&w, "agent-still-open")).await;
    assert!(
        matches!(&out, PaymentOutcome::Refused(d) if d.has(BlockerCode::CircuitOpen)),
        "the agent's breaker is still open: {out:?}"
    );
    w.engine
        .reset_breaker(&operator_p(), &agent)
        .await
        .expect("reset");
    assert!(paid(&run(&w, &pay(&w, "reset")).await));
    let _ = BreakerScope::Agent;
}
