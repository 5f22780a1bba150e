//! Controls count only an agent's own requests: the buyer paying in person (a `human` actor
//! of their own mandate) and an operator settling the agent's payments never move a counter,
//! open a breaker, hold a payment or raise an alert, under the tightest settings. The same
//! settings do act on the agent (so this test can fail).

#![cfg(feature = "testkit")]

mod common;
mod controls_support;

use std::sync::Arc;
use std::time::Duration;

use agent_mandate::adapters::memory::MemoryAlerts;
use agent_mandate::domain::examples;
use agent_mandate::engine::{
    Breaker, Controls, EngineConfig, ExecutePayment, MerchantControl, PaymentOutcome, Rate,
};
use agent_mandate::testkit::{Fault, Op};
use common::engine::*;
use common::principals::*;
use controls_support::*;

fn tightest() -> Controls {
    let hour = Duration::from_secs(3600);
    Controls::recommended()
        .with_violations(Some(Rate::new(0, hour).expect("rate")))
        .with_velocity(Some(Rate::new(1, hour).expect("rate")))
        .with_auth_failures(Some(
            Breaker::new(Rate::new(0, hour).expect("rate"), hour).expect("breaker"),
        ))
        .with_dual_confirmation_above(Some(eur("1.00")))
        .with_merchants(MerchantControl::Allowlist(vec!["merchant_999"
            .parse()
            .expect("id")]))
        .expect("allowlist")
}

#[tokio::test]
async fn the_buyers_own_payments_never_fire_a_control() {
    let mut spec = backpack_spec(true);
    spec.actor = common::human();
    let config = EngineConfig::default()
        .with_auto_suspend_after(Some(1))
        .expect("config")
        .with_controls(tightest());
    let mut w = world_with(config, spec).await;
    let sink = Arc::new(MemoryAlerts::new());
    w.engine = w.engine.clone().with_alerts(sink.clone());
    w.snapshot = day_snapshot();
    w.card = w
        .engine
        .store_credential(
            &buyer_p(),
            &key("own-card"),
            card(&common::human().id, "pm_card_visa"),
        )
        .await
        .expect("card")
        .value
        .reference;
    let human_pay = |k: &str| {
        let mut cmd: ExecutePayment = pay(&w, k);
        cmd.request.actor = common::human();
        cmd
    };
    let mut violation = human_pay("v0");
    violation.request.amount = eur("143.00");
    for i in 0..3 {
        let mut v = violation.clone();
        v.key = key(&format!("v{i}"));
        let out = w
            .engine
            .execute_payment(&buyer_p(), &v)
            .await
            .expect("answer");
        assert!(matches!(out, PaymentOutcome::Refused(_)));
    }
    for i in 0..3 {
        w.psp.inject(Some(Op::Authorize), Fault::Invalid);
        let _ = w
            .engine
            .execute_payment(&buyer_p(), &human_pay(&format!("f{i}")))
            .await;
    }
    let mut attempts = Vec::new();
    for i in 0..3 {
        let out = w
            .engine
            .execute_payment(&buyer_p(), &human_pay(&format!("p{i}")))
            .await
            .expect("answer");
        match out {
            PaymentOutcome::Done { attempt, .. } => attempts.push(attempt),
            other => panic!("the buyer's payment {i} is not held by a control: {other:?}"),
        }
    }
    // An operator settles: voids and refunds are nobody's violation or payment.
    w.engine
        .void(&operator_p(), &agent_void("op-void", &attempts[0].id))
        .await
        .expect("void");
    assert!(sink.alerts().is_empty(), "{:?}", kind_names(&sink.alerts()));
    assert!(trail_alerts(&w, "violations_suspended").is_empty());
    let s = w
        .mem
        .ports
        .store
        .suspensions(&[common::human().id], &examples::buyer())
        .await
        .expect("suspensions");
    assert!(s.actors.is_empty() && s.buyers.is_empty(), "{s:?}");
}

/// The same settings on the agent: its first violation suspends it and security is told.
#[tokio::test]
async fn the_same_settings_do_act_on_the_agent() {
    let (w, sink) = controlled(tightest(), None).await;
    let out = run(&w, &violation(&w, "v0")).await;
    assert!(matches!(out, PaymentOutcome::Refused(_)));
    assert!(suspended(&w).await);
    assert_eq!(alerts_of(&sink, "violations_suspended").len(), 1);
}
