//! Settlement after the mandate's authority ends (I16, I1-I5): who may capture, void, refund
//! and commit an order, after expiry, revocation and suspension; follow-ups decided for the
//! attempt, not for the requester; auto-suspension counts misbehaviour, not budget races.
#![cfg(feature = "testkit")]

mod common;
#[allow(unused_imports)]
use common::principals::*;

use agent_mandate::domain::examples;
use agent_mandate::domain::{
    Actor, ActorId, ActorKind, AttemptStatus, AuditKind, BlockerCode, LifecycleEvent, Party,
    PaymentAttempt,
};
use agent_mandate::engine::{
    CapturePayment, ChangeMandate, CommitOrder, EngineConfig, EngineError, OrderOutcome,
    PaymentOutcome, RefundPayment, SetSuspension, VoidPayment, DEFAULT_SUSPEND_ON,
};
use common::engine::{
    agent_capture, agent_refund, agent_void, backpack_spec, key, world, world_with, World,
};
use common::{eur, id};

fn attempt(outcome: &PaymentOutcome) -> PaymentAttempt {
    outcome
        .attempt()
        .cloned()
        .unwrap_or_else(|| panic!("no attempt: {outcome:?}"))
}

fn stranger() -> Actor {
    Actor {
        id: id::<ActorId>("agent_stranger_7"),
        kind: ActorKind::Agent,
    }
}

/// The story's payment, authorized (and captured when `capture`).
async fn paid(w: &World, capture: bool) -> PaymentAttempt {
    let a = attempt(
        &w.engine
            .execute_payment(&agent_p(), &w.execute("pay-1"))
            .await
            .unwrap(),
    );
    assert_eq!(a.status, AttemptStatus::Authorized);
    if !capture {
        return a;
    }
    let c = w
        .engine
        .capture(&agent_p(), &agent_capture("cap-1", &a.id, None))
        .await
        .unwrap();
    let c = attempt(&c);
    assert_eq!(c.status, AttemptStatus::Captured);
    c
}

async fn revoke(w: &World) {
    w.engine
        .change_mandate(
            &buyer_p(),
            &ChangeMandate::new(
                key("revoke-1"),
                w.mandate.id().clone(),
                LifecycleEvent::Revoke {
                    reason: "the buyer changed their mind".parse().unwrap(),
                },
            ),
        )
        .await
        .expect("revoked");
}

async fn suspend_agent(w: &World) {
    w.engine
        .set_suspension(
            &operator_p(),
            &SetSuspension::new(
                key("suspend-1"),
                Party::Actor(examples::agent().id),
                true,
                "fraud report".parse().unwrap(),
            ),
        )
        .await
        .expect("suspended");
}

fn buyer_refund(k: &str, a: &PaymentAttempt, amount: Option<&str>) -> RefundPayment {
    RefundPayment::new(key(k), a.id.clone()).with_amount(amount.map(eur))
}

/// Refunds part by the agent, part by an operator, the rest by the buyer; all done without a
/// decision.
async fn refund_by_everyone_allowed(w: &World, a: &PaymentAttempt) {
    let part = w
        .engine
        .refund(
            &agent_p(),
            &agent_refund("ref-agent", &a.id, Some(eur("44.00"))),
        )
        .await
        .unwrap();
    assert!(
        matches!(&part, PaymentOutcome::Done { decision: None, .. }),
        "the attempt's actor refunds without spending authority: {part:?}"
    );
    assert_eq!(attempt(&part).status, AttemptStatus::PartiallyRefunded);
    let ops = w
        .engine
        .refund(
            &operator_p(),
            &agent_refund("ref-operator", &a.id, Some(eur("50.00"))),
        )
        .await
        .unwrap();
    assert!(
        matches!(&ops, PaymentOutcome::Done { decision: None, .. }),
        "an operator refunds without spending authority: {ops:?}"
    );
    assert_eq!(attempt(&ops).refunded, eur("94.00"));
    let rest = w
        .engine
        .refund(&buyer_p(), &buyer_refund("ref-buyer", a, None))
        .await
        .unwrap();
    assert_eq!(
        attempt(&rest).status,
        AttemptStatus::Refunded,
        "the buyer refunds the rest: {rest:?}"
    );
    assert_eq!(attempt(&rest).refunded, a.captured);
}

#[tokio::test]
async fn refund_after_mandate_expiry_by_actor_operator_and_buyer() {
    let w = world().await;
    let a = paid(&w, true).await;
    w.mem.clock.advance(chrono::Duration::days(2));
    refund_by_everyone_allowed(&w, &a).await;
}

#[tokio::test]
async fn refund_after_revocation_by_actor_operator_and_buyer() {
    let w = world().await;
    let a = paid(&w, true).await;
    revoke(&w).await;
    refund_by_everyone_allowed(&w, &a).await;
}

#[tokio::test]
async fn refund_by_a_suspended_agent_an_operator_and_its_buyer() {
    let w = world().await;
    let a = paid(&w, true).await;
    suspend_agent(&w).await;
    refund_by_everyone_allowed(&w, &a).await;
}

#[tokio::test]
async fn refund_still_checks_who_and_how_much() {
    let w = world().await;
    let a = paid(&w, true).await;
    w.mem.clock.advance(chrono::Duration::days(2));
    let by_stranger = w
        .engine
        .refund(
            &who(&stranger()),
            &RefundPayment::new(key("ref-x"), a.id.clone()),
        )
        .await;
    assert!(
        matches!(by_stranger, Err(EngineError::NotPermitted { .. })),
        "{by_stranger:?}"
    );
    let too_much = w
        .engine
        .refund(&buyer_p(), &buyer_refund("ref-big", &a, Some("144.01")))
        .await;
    assert!(
        matches!(too_much, Err(EngineError::Transition(_))),
        "more than captured: {too_much:?}"
    );
    w.engine
        .refund(&buyer_p(), &buyer_refund("ref-all", &a, None))
        .await
        .unwrap();
    let again = w
        .engine
        .refund(&buyer_p(), &buyer_refund("ref-again", &a, Some("1.00")))
        .await;
    assert!(
        matches!(again, Err(EngineError::Transition(_))),
        "nothing left to refund: {again:?}"
    );
    assert_eq!(w.psp.calls(agent_mandate::testkit::Op::Refund), 1);
}

#[tokio::test]
async fn void_after_expiry_revocation_and_suspension() {
    for case in 0..3 {
        let w = world().await;
        let a = paid(&w, false).await;
        match case {
            0 => {
                w.mem.clock.advance(chrono::Duration::days(2));
            }
            1 => revoke(&w).await,
            _ => suspend_agent(&w).await,
        }
        let v = w
            .engine
            .void(&agent_p(), &agent_void("void-1", &a.id))
            .await
            .unwrap();
        assert_eq!(attempt(&v).status, AttemptStatus::Cancelled, "case {case}");
    }
}

#[tokio::test]
async fn capture_of_an_authorization_made_before_expiry_succeeds_after_it() {
    let w = world().await;
    let a = paid(&w, false).await;
    w.mem.clock.advance(chrono::Duration::days(2));
    let c = w
        .engine
        .capture(&agent_p(), &agent_capture("cap-late", &a.id, None))
        .await
        .unwrap();
    assert_eq!(attempt(&c).status, AttemptStatus::Captured, "{c:?}");
}

#[tokio::test]
async fn capture_after_revocation_is_refused_with_a_typed_refusal() {
    let w = world().await;
    let a = paid(&w, false).await;
    revoke(&w).await;
    let c = w
        .engine
        .capture(&agent_p(), &agent_capture("cap-revoked", &a.id, None))
        .await
        .unwrap();
    match &c {
        PaymentOutcome::Refused(d) => assert!(d.has(BlockerCode::MandateRevoked), "{d:?}"),
        other => panic!("expected a refusal: {other:?}"),
    }
    // The buyer may not capture it (a capture takes money: only the attempt's actor asks);
    // voiding stays open.
    let by_buyer = w
        .engine
        .capture(
            &buyer_p(),
            &CapturePayment::new(key("cap-buyer"), a.id.clone()),
        )
        .await;
    assert!(
        matches!(by_buyer, Err(EngineError::NotPermitted { .. })),
        "only the attempt's actor captures: {by_buyer:?}"
    );
    let v = w
        .engine
        .void(
            &buyer_p(),
            &VoidPayment::new(key("void-buyer"), a.id.clone()),
        )
        .await
        .unwrap();
    assert_eq!(attempt(&v).status, AttemptStatus::Cancelled);
}

#[tokio::test]
async fn revocation_voids_open_authorizations_when_configured() {
    let config = EngineConfig::default().with_void_on_revoke(true);
    let w = world_with(config, backpack_spec(false)).await;
    let a = paid(&w, false).await;
    revoke(&w).await;
    let now = w.engine.reconcile(&a.id).await.unwrap();
    assert_eq!(now.status, AttemptStatus::Cancelled);
    assert_eq!(w.usage().await.held, eur("0.00"));

    // Off by default: the authorization stays open, for someone to void.
    let w = world().await;
    let a = paid(&w, false).await;
    revoke(&w).await;
    let now = w.engine.reconcile(&a.id).await.unwrap();
    assert_eq!(now.status, AttemptStatus::Authorized);
}

#[tokio::test]
async fn the_buyer_committing_the_order_keeps_the_payment() {
    for capture in [false, true] {
        let w = world().await;
        let a = paid(&w, capture).await;
        let out = w
            .engine
            .commit_order(
                &buyer_p(),
                &CommitOrder::new(
                    key("order-buyer"),
                    a.id.clone(),
                    examples::valid_checkout(w.snapshot.id()),
                ),
            )
            .await
            .unwrap();
        assert!(
            matches!(out, OrderOutcome::Committed { .. }),
            "the buyer's commitment is decided for the attempt's actor: {out:?}"
        );
        let after = w.engine.reconcile(&a.id).await.unwrap();
        assert_eq!(after.status, a.status, "no recovery moved money");
        assert_eq!(w.psp.calls(agent_mandate::testkit::Op::Void), 0);
        assert_eq!(w.psp.calls(agent_mandate::testkit::Op::Refund), 0);
    }
}

#[tokio::test]
async fn a_requester_not_permitted_never_starts_a_recovery() {
    let w = world().await;
    let a = paid(&w, true).await;
    let out = w
        .engine
        .commit_order(
            &who(&stranger()),
            &CommitOrder::new(key("order-x"), a.id.clone(), examples::invalid_checkout()),
        )
        .await;
    assert!(
        matches!(out, Err(EngineError::NotPermitted { .. })),
        "{out:?}"
    );
    assert_eq!(w.psp.calls(agent_mandate::testkit::Op::Refund), 0);
    let after = w.engine.reconcile(&a.id).await.unwrap();
    assert_eq!(after.status, AttemptStatus::Captured);
}

/// A mandate whose lifetime budget leaves room for exactly one payment of the story.
fn one_payment_spec() -> agent_mandate::domain::MandateSpec {
    let mut spec = backpack_spec(true);
    spec.scope.budgets.lifetime = Some(eur("144.00"));
    spec
}

async fn auto_suspended(w: &World) -> bool {
    w.mem.audit.events().iter().any(|e| {
        matches!(
            e.event().expect("event parses").kind,
            AuditKind::AutoSuspended { .. }
        )
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_payments_racing_for_the_last_headroom_suspend_nobody() {
    let w = std::sync::Arc::new(world_with(EngineConfig::default(), one_payment_spec()).await);
    let mut tasks = Vec::new();
    for i in 0..8 {
        let w = w.clone();
        tasks.push(tokio::spawn(async move {
            w.engine
                .execute_payment(&agent_p(), &w.execute(&format!("race-{i}")))
                .await
        }));
    }
    let mut authorized = 0;
    let mut refused = 0;
    for t in tasks {
        match t.await.expect("task") {
            Ok(PaymentOutcome::Done { attempt, .. }) => {
                assert_eq!(attempt.status, AttemptStatus::Authorized);
                authorized += 1;
            }
            Ok(PaymentOutcome::Refused(d)) => {
                assert!(
                    d.blockers
                        .iter()
                        .all(|b| b.code == BlockerCode::LifetimeLimitExceeded),
                    "only the budget refuses: {d:?}"
                );
                refused += 1;
            }
            other => panic!("unexpected: {other:?}"),
        }
    }
    assert_eq!((authorized, refused), (1, 7));
    assert!(!auto_suspended(&w).await, "a budget race suspends nobody");
    // The agent still acts: a void of its payment and a decision without ACTOR_SUSPENDED.
    let again = w
        .engine
        .execute_payment(&agent_p(), &w.execute("after"))
        .await
        .unwrap();
    match again {
        PaymentOutcome::Refused(d) => assert!(!d.has(BlockerCode::ActorSuspended), "{d:?}"),
        other => panic!("expected the budget refusal: {other:?}"),
    }
}

#[tokio::test]
async fn the_counted_blockers_are_configurable() {
    // Default: three budget refusals in a row suspend nobody.
    let w = world_with(EngineConfig::default(), one_payment_spec()).await;
    paid(&w, false).await;
    for i in 0..4 {
        let out = w
            .engine
            .execute_payment(&agent_p(), &w.execute(&format!("over-{i}")))
            .await
            .unwrap();
        assert!(matches!(out, PaymentOutcome::Refused(_)));
    }
    assert!(!auto_suspended(&w).await);

    // Counting budget refusals too: the third suspends.
    let mut codes = DEFAULT_SUSPEND_ON.to_vec();
    codes.push(BlockerCode::LifetimeLimitExceeded);
    let config = EngineConfig::default().with_suspend_on(&codes);
    let w = world_with(config, one_payment_spec()).await;
    paid(&w, false).await;
    for i in 0..3 {
        w.engine
            .execute_payment(&agent_p(), &w.execute(&format!("over-{i}")))
            .await
            .unwrap();
    }
    assert!(auto_suspended(&w).await);

    // Another agent using the mandate is refused before any decision: it suspends nobody.
    let w = world().await;
    for i in 0..3 {
        let mut cmd = w.execute(&format!("wrong-{i}"));
        cmd.request.actor = stranger();
        let out = w.engine.execute_payment(&payer(&cmd), &cmd).await;
        assert!(
            matches!(out, Err(EngineError::NotPermitted { .. })),
            "{out:?}"
        );
    }
    assert!(!auto_suspended(&w).await);

    // The agent's own identity blockers count by default: a card that is not its own, three
    // times in a row.
    for i in 0..3 {
        let mut cmd = w.execute(&format!("card-{i}"));
        cmd.credential = id("cred_not_mine");
        let out = w.engine.execute_payment(&agent_p(), &cmd).await.unwrap();
        let PaymentOutcome::Refused(d) = out else {
            panic!("paid with another card: {out:?}")
        };
        assert!(d.has(BlockerCode::CredentialNotUsable), "{d:?}");
    }
    assert!(auto_suspended(&w).await);
}

/// A child mandate's authorized payment, by the sub-agent.
async fn child_payment(w: &World) -> PaymentAttempt {
    let mut child = backpack_spec(true);
    child.id = id("mandate_child");
    child.parent_id = Some(id("mandate_001"));
    child.actor = common::sub_agent();
    w.engine
        .derive_mandate(
            &agent_p(),
            &agent_mandate::engine::DeriveMandate::new(key("d-1"), child),
        )
        .await
        .expect("derived");
    let sub_card = w
        .engine
        .store_credential(
            &buyer_p(),
            &key("card-sub"),
            common::engine::card(&common::sub_agent().id, "pm_card_visa"),
        )
        .await
        .expect("card")
        .value;
    let mut cmd = w.execute("sub-1");
    cmd.request.actor = common::sub_agent();
    cmd.request.mandate_id = id("mandate_child");
    cmd.credential = sub_card.reference;
    let a = attempt(&w.engine.execute_payment(&payer(&cmd), &cmd).await.unwrap());
    assert_eq!(a.status, AttemptStatus::Authorized);
    a
}

#[tokio::test]
async fn capture_after_the_whole_chain_expired() {
    let w = world_with(EngineConfig::default(), backpack_spec(true)).await;
    let a = child_payment(&w).await;
    w.mem.clock.advance(chrono::Duration::days(2));
    let c = w
        .engine
        .capture(
            &who(&common::sub_agent()),
            &CapturePayment::new(key("cap-child"), a.id.clone()),
        )
        .await
        .unwrap();
    assert_eq!(attempt(&c).status, AttemptStatus::Captured, "{c:?}");
}

#[tokio::test]
async fn revoking_a_parent_voids_the_childs_open_authorization_when_configured() {
    let config = EngineConfig::default().with_void_on_revoke(true);
    let w = world_with(config, backpack_spec(true)).await;
    let a = child_payment(&w).await;
    revoke(&w).await;
    let now = w.engine.reconcile(&a.id).await.unwrap();
    assert_eq!(now.status, AttemptStatus::Cancelled);
    assert_eq!(w.psp.calls(agent_mandate::testkit::Op::Void), 1);
}
