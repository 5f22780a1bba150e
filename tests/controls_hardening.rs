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

/// A dry run (`Engine::evaluate`) carries no intent: it is not refused for the missing
/// intent the execution must declare; the execution without one is.
#[tokio::test]
async fn the_dry_run_does_not_ask_for_the_intent() {
    use agent_mandate::engine::Evaluate;
    let (w, _) = controlled(Controls::off().with_intent_required(true), None).await;
    let dry = Evaluate::new(
        request(&w),
        w.snapshot.clone(),
        examples::valid_checkout(w.snapshot.id()),
    )
    .with_credential(w.card.clone());
    let d = w.engine.evaluate(&agent_p(), &dry).await.expect("decides");
    assert!(d.is_allowed(), "{d:?}");
    let out = run(&w, &bare_pay(&w, "no-intent")).await;
    assert_eq!(outcome(&out), Some(Outcome::Blocked));
}

/// One system actor may pay for many buyers (the ACP service does): with no agent above it,
/// its velocity counts per buyer, so one buyer's payments never hold another's.
#[tokio::test]
async fn a_shared_system_payer_counts_per_buyer() {
    use agent_mandate::domain::{Actor, ActorKind, BuyerId, Principal};
    use agent_mandate::engine::CreateMandate;
    let system = Actor {
        id: "acp_service".parse().expect("id"),
        kind: ActorKind::System,
    };
    let rate = Rate::new(1, std::time::Duration::from_secs(3600)).expect("rate");
    let mut spec = common::engine::backpack_spec(true);
    spec.actor = system.clone();
    let mut w = common::engine::world_with(
        EngineConfig::default().with_controls(Controls::off().with_velocity(Some(rate))),
        spec.clone(),
    )
    .await;
    w.snapshot = day_snapshot();
    let by = Principal::System(system.id.clone());
    let card = |buyer: &BuyerId| {
        let mut c = common::engine::card(&system.id, "pm_card_visa");
        c.buyer_id = buyer.clone();
        c
    };
    let b1 = examples::buyer();
    let c1 = w
        .engine
        .store_credential(&buyer_p(), &common::engine::key("c1"), card(&b1))
        .await
        .expect("card")
        .value
        .reference;
    let b2: BuyerId = "buyer_second".parse().expect("id");
    let mut spec2 = spec.clone();
    spec2.id = "mandate_second".parse().expect("id");
    spec2.buyer_id = b2.clone();
    let p2 = Principal::Buyer(b2.clone());
    w.engine
        .create_mandate(&p2, &CreateMandate::new(common::engine::key("m2"), spec2))
        .await
        .expect("mandate 2");
    let c2 = w
        .engine
        .store_credential(&p2, &common::engine::key("c2"), card(&b2))
        .await
        .expect("card 2")
        .value
        .reference;
    let pay_for =
        |k: &str, buyer: &BuyerId, mandate: &str, card: &agent_mandate::domain::CredentialRef| {
            let mut cmd = bare_pay(&w, k);
            cmd.request.actor = system.clone();
            cmd.request.buyer_id = buyer.clone();
            cmd.request.mandate_id = mandate.parse().expect("id");
            cmd.credential = card.clone();
            cmd
        };
    let first = w
        .engine
        .execute_payment(&by, &pay_for("b1-1", &b1, "mandate_001", &c1))
        .await
        .expect("answers");
    assert!(paid(&first), "{first:?}");
    let held = w
        .engine
        .execute_payment(&by, &pay_for("b1-2", &b1, "mandate_001", &c1))
        .await
        .expect("answers");
    assert_eq!(
        outcome(&held),
        Some(Outcome::RequiresConfirmation),
        "{held:?}"
    );
    let other = w
        .engine
        .execute_payment(&by, &pay_for("b2-1", &b2, "mandate_second", &c2))
        .await
        .expect("answers");
    assert!(paid(&other), "another buyer is not held: {other:?}");
}
