//! Hardening of the safety controls: the credentials' kill switch is the store's (a second
//! engine over the same store honours it); alerts of a refusal go to the buyer of the
//! mandate, never to the buyer a request merely names; the intent control can require a
//! declared intent.

#![cfg(feature = "testkit")]

mod common;
mod controls_support;

use agent_mandate::domain::{examples, BlockerCode, BuyerId, Outcome};
use agent_mandate::engine::{Controls, Engine, EngineConfig, Rate};
use common::principals::*;
use controls_support::*;

/// The kill switch survives building a second engine over the same store (a restart, or a
/// second instance): the agent's own payment is refused with CREDENTIAL_NOT_USABLE there,
/// and resuming it on the second engine resumes it on the first.
#[tokio::test]
async fn kill_switch_survives_engine_rebuild() {
    let (w, _) = controlled(Controls::off(), None).await;
    w.engine
        .suspend_credentials(&operator_p(), &examples::agent().id, true)
        .await
        .expect("switched off");
    let second = Engine::new(w.mem.ports.clone(), EngineConfig::default()).expect("engine");
    let out = second
        .execute_payment(&agent_p(), &pay(&w, "after-restart"))
        .await
        .expect("answers");
    match &out {
        agent_mandate::engine::PaymentOutcome::Refused(d) => {
            assert!(d.has(BlockerCode::CredentialNotUsable), "{d:?}");
        }
        other => panic!("the second engine paid: {other:?}"),
    }
    second
        .suspend_credentials(&operator_p(), &examples::agent().id, false)
        .await
        .expect("resumed");
    assert!(paid(&run(&w, &pay(&w, "resumed")).await));
}

/// Only an operator or a system may switch credentials; the agent itself and the buyer may
/// not (and nothing is switched).
#[tokio::test]
async fn only_an_operator_or_a_system_switches_credentials() {
    let (w, _) = controlled(Controls::off(), None).await;
    for by in [agent_p(), buyer_p()] {
        assert!(w
            .engine
            .suspend_credentials(&by, &examples::agent().id, true)
            .await
            .is_err());
    }
    assert!(paid(&run(&w, &pay(&w, "still")).await));
}

/// An agent of buyer B names buyer A in its requests (BUYER_MISMATCH) until it is suspended:
/// every alert goes to B, the buyer of its mandate; A's alerts stay empty.
#[tokio::test]
async fn alerts_of_a_buyer_mismatch_go_to_the_mandates_buyer() {
    let controls = Controls::recommended().with_violations(Some(
        Rate::new(1, std::time::Duration::from_secs(3600)).expect("rate"),
    ));
    let (w, sink) = controlled(controls, Some(3)).await;
    let a: BuyerId = "buyer_someone_else".parse().expect("id");
    for i in 0..3 {
        let mut cmd = pay(&w, &format!("lie{i}"));
        cmd.request.buyer_id = a.clone();
        let out = run(&w, &cmd).await;
        assert_eq!(outcome(&out), Some(Outcome::Blocked));
    }
    assert!(suspended(&w).await, "the lies suspended the agent");
    let _ = w.engine.flush_audit().await;
    let all = sink.alerts();
    assert!(
        !all.is_empty(),
        "the suspension was alerted (so this test can fail)"
    );
    assert!(
        all.iter().all(|x| x.buyer_id.as_ref() != Some(&a)),
        "no alert names the asserted buyer: {all:?}"
    );
    assert!(
        all.iter()
            .filter(|x| x.buyer_id.is_some())
            .all(|x| x.buyer_id.as_ref() == Some(&examples::buyer())),
        "{all:?}"
    );
}

/// The intent control can require a declared intent: off by default (a payment without one
/// goes on), on in `recommended()`: without an intent the agent's payment is refused with
/// INTENT_MISMATCH naming the missing intent, and the agent is not suspended for it (it can
/// declare one and pay); with its intent the same payment goes on.
#[tokio::test]
async fn an_agents_payment_without_a_declared_intent_is_refused_when_required() {
    assert!(!Controls::default().intent_required());
    assert!(Controls::recommended().intent_required());
    let (off, _) = controlled(Controls::off(), None).await;
    assert!(paid(&run(&off, &bare_pay(&off, "no-intent")).await));

    let (w, _) = controlled(Controls::off().with_intent_required(true), None).await;
    let out = run(&w, &bare_pay(&w, "no-intent")).await;
    match &out {
        agent_mandate::engine::PaymentOutcome::Refused(d) => {
            let b = d
                .blockers
                .iter()
                .find(|b| b.code == BlockerCode::IntentMismatch)
                .expect("INTENT_MISMATCH");
            assert!(b.message.contains("no purchase intent"), "{b:?}");
        }
        other => panic!("paid without an intent: {other:?}"),
    }
    assert!(!suspended(&w).await, "a missing intent does not suspend");
    assert!(paid(&run(&w, &pay(&w, "with-intent")).await));
}

/// The required intent is the agent's: the buyer paying in person declares none and pays.
#[tokio::test]
async fn the_buyer_in_person_needs_no_intent() {
    let mut spec = common::engine::backpack_spec(true);
    spec.actor = common::human();
    let config = EngineConfig::default().with_controls(Controls::off().with_intent_required(true));
    let mut w = common::engine::world_with(config, spec).await;
    w.snapshot = day_snapshot();
    w.card = w
        .engine
        .store_credential(
            &buyer_p(),
            &common::engine::key("own-card"),
            common::engine::card(&common::human().id, "pm_card_visa"),
        )
        .await
        .expect("card")
        .value
        .reference;
    let mut cmd = bare_pay(&w, "in-person");
    cmd.request.actor = common::human();
    let out = w
        .engine
        .execute_payment(&buyer_p(), &cmd)
        .await
        .expect("answers");
    assert!(paid(&out), "{out:?}");
}

/// A system payer with no agent above it (an ACP allowance's actor holds a root mandate) is
/// held to account itself: the buyer's allowlist holds its payment to another merchant for
/// confirmation; the allowlist naming the merchant lets it pay (so the test can fail).
#[tokio::test]
async fn a_system_payer_without_an_agent_meets_the_buyer_protection_controls() {
    use agent_mandate::domain::{Actor, ActorKind, MerchantId};
    use agent_mandate::engine::MerchantControl;
    let system = Actor {
        id: "acp_allowance_1".parse().expect("id"),
        kind: ActorKind::System,
    };
    for (list, allowed) in [("merchant_999", false), ("merchant_001", true)] {
        let controls = Controls::off()
            .with_merchants(MerchantControl::Allowlist(vec![list
                .parse::<MerchantId>()
                .expect("id")]))
            .expect("allowlist");
        let mut spec = common::engine::backpack_spec(true);
        spec.actor = system.clone();
        let mut w =
            common::engine::world_with(EngineConfig::default().with_controls(controls), spec).await;
        w.snapshot = day_snapshot();
        w.card = w
            .engine
            .store_credential(
                &buyer_p(),
                &common::engine::key("acp-card"),
                common::engine::card(&system.id, "pm_card_visa"),
            )
            .await
            .expect("card")
            .value
            .reference;
        let mut cmd = bare_pay(&w, "acp-pay");
        cmd.request.actor = system.clone();
        let by = agent_mandate::domain::Principal::System(system.id.clone());
        let out = w.engine.execute_payment(&by, &cmd).await.expect("answers");
        if allowed {
            assert!(paid(&out), "{out:?}");
        } else {
            match &out {
                agent_mandate::engine::PaymentOutcome::Refused(d) => {
                    assert!(d.has(BlockerCode::ConfirmationRequired), "{d:?}");
                }
                other => panic!("paid outside the allowlist: {other:?}"),
            }
        }
    }
}
