//! Authority from authenticated principals (I14): the permission table of every command, tried
//! with every kind of principal, and the reproductions of callers who were trusted for what
//! they said they were.
//!
//! The host authenticates; the engine compares the principal it is handed with the identities
//! recorded on the mandate (its buyer, its actor) and the attempt (its actor, its buyer).
#![cfg(feature = "testkit")]

mod common;

use agent_mandate::domain::examples;
use agent_mandate::domain::{
    AttemptStatus, AuditKind, BlockerCode, Confirmation, ConfirmationRule, ConfirmationScope,
    Lifecycle, LifecycleEvent, MandateStatus, Outcome, Party, PaymentAction, PaymentAttempt,
    Principal,
};
use agent_mandate::engine::{
    ChangeMandate, CommitOrder, CreateMandate, DeriveMandate, EngineConfig, EngineError, Evaluate,
    OrderOutcome, PaymentOutcome, RecordConfirmation, SetSuspension,
};
use common::engine::{
    agent_capture, agent_refund, agent_void, backpack_spec, card, key, world, world_with, World,
};
use common::principals::{agent_p, buyer_p, operator_p, system_p};
use common::{eur, id};

/// Another buyer, authenticated as themself.
fn mallory() -> Principal {
    Principal::Buyer(id("buyer_mallory"))
}

/// Another agent.
fn other_agent() -> Principal {
    Principal::Agent(id("agent_other_9"))
}

/// Every kind of principal, the story's and strangers.
fn everyone() -> Vec<(&'static str, Principal)> {
    vec![
        ("agent", agent_p()),
        ("buyer", buyer_p()),
        ("operator", operator_p()),
        ("system", system_p()),
        ("another buyer", mallory()),
        ("another agent", other_agent()),
        // The agent's own id, presented as a person: still not the buyer.
        (
            "agent id as a buyer",
            Principal::Buyer(id(examples::agent().id.as_str())),
        ),
        // The buyer's id, presented as an agent: not the mandate's actor.
        (
            "buyer id as an agent",
            Principal::Agent(id(examples::buyer().as_str())),
        ),
    ]
}

fn attempt(outcome: &PaymentOutcome) -> PaymentAttempt {
    outcome
        .attempt()
        .cloned()
        .unwrap_or_else(|| panic!("no attempt: {outcome:?}"))
}

fn not_permitted<T: std::fmt::Debug>(who: &str, r: Result<T, EngineError>) {
    match r {
        Err(EngineError::NotPermitted { reason }) => {
            assert!(!reason.is_empty(), "{who}: the refusal says why");
        }
        other => panic!("{who}: expected NotPermitted, got {other:?}"),
    }
}

/// The buyer's confirmation of the story's payment (`by` is who the body says confirmed).
fn confirmation(w: &World, n: u32) -> Confirmation {
    Confirmation {
        id: id(&format!("conf_{n}")),
        buyer_id: examples::buyer(),
        confirmed_by: common::human(),
        confirmed_at: examples::now(),
        expires_at: None,
        snapshot_id: w.snapshot.id(),
        scope: ConfirmationScope {
            mandate_id: w.mandate.id().clone(),
            actions: [PaymentAction::Authorize].into_iter().collect(),
            max_amount: eur("144.00"),
        },
        channel_ref: id("push:device_42"),
    }
}

async fn pending_world() -> World {
    let mut spec = backpack_spec(false);
    spec.lifecycle = Lifecycle::new(MandateStatus::PendingConfirmation, examples::now());
    world_with(EngineConfig::default(), spec).await
}

async fn always_confirm_world() -> World {
    let mut spec = backpack_spec(false);
    spec.scope.confirmation = ConfirmationRule::always();
    world_with(EngineConfig::default(), spec).await
}

// ----- the reproductions -----

/// Reproduction: an agent calling as a human confirmed its own pending mandate. Only the
/// mandate's buyer confirms or rejects; the mandate stays pending for everyone else.
#[tokio::test]
async fn only_the_buyer_confirms_or_rejects_a_pending_mandate() {
    let w = pending_world().await;
    for (who, p) in everyone() {
        if p == buyer_p() {
            continue;
        }
        for (n, event) in [
            LifecycleEvent::Confirm,
            LifecycleEvent::Reject {
                reason: "no".parse().unwrap(),
            },
        ]
        .into_iter()
        .enumerate()
        {
            let r = w
                .engine
                .change_mandate(
                    &p,
                    &ChangeMandate::new(key(&format!("c-{n}")), w.mandate.id().clone(), event),
                )
                .await;
            not_permitted(who, r);
        }
    }
    let still = w
        .engine
        .ports()
        .store
        .mandate(w.mandate.id())
        .await
        .unwrap();
    assert_eq!(
        still.map(|m| m.status()),
        Some(MandateStatus::PendingConfirmation)
    );
    let PaymentOutcome::Refused(d) = w
        .engine
        .execute_payment(&agent_p(), &w.execute("pay-1"))
        .await
        .unwrap()
    else {
        panic!("paid under a pending mandate")
    };
    assert!(d.has(BlockerCode::MandatePendingConfirmation));
    let m = w
        .engine
        .change_mandate(
            &buyer_p(),
            &ChangeMandate::new(
                key("c-buyer"),
                w.mandate.id().clone(),
                LifecycleEvent::Confirm,
            ),
        )
        .await
        .unwrap();
    assert_eq!(m.value.status(), MandateStatus::Active);
    let Some(AuditKind::MandateTransition { by, .. }) = last_transition(&w).await else {
        panic!("no transition audited")
    };
    assert_eq!(by, buyer_p(), "the audit names the authenticated principal");
}

async fn last_transition(w: &World) -> Option<AuditKind> {
    w.engine.flush_audit().await.unwrap();
    w.mem
        .audit
        .events()
        .iter()
        .rev()
        .filter_map(|e| e.event().ok())
        .map(|e| e.kind)
        .find(|k| matches!(k, AuditKind::MandateTransition { .. }))
}

/// Reproduction: an agent recorded "the buyer's" confirmation and then paid under an "always
/// confirm" rule. Only the buyer records a confirmation, whatever the body says confirmed it;
/// without it the payment still needs confirmation.
#[tokio::test]
async fn only_the_buyer_records_a_confirmation_and_an_agent_cannot_pay_without_one() {
    let w = always_confirm_world().await;
    for (who, p) in everyone() {
        if p == buyer_p() {
            continue;
        }
        let r = w
            .engine
            .record_confirmation(
                &p,
                &RecordConfirmation::new(key("rc-1"), confirmation(&w, 1)),
            )
            .await;
        not_permitted(who, r);
    }
    let PaymentOutcome::Refused(d) = w
        .engine
        .execute_payment(&agent_p(), &w.execute("pay-1"))
        .await
        .unwrap()
    else {
        panic!("paid without the buyer's confirmation")
    };
    assert_eq!(d.outcome, Outcome::RequiresConfirmation);
    // The buyer, with a body that names an agent as the confirmer: refused by field.
    let mut forged = confirmation(&w, 2);
    forged.confirmed_by = examples::agent();
    let err = w
        .engine
        .record_confirmation(&buyer_p(), &RecordConfirmation::new(key("rc-2"), forged))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, EngineError::Invalid { field, .. } if field == "confirmation.confirmed_by"),
        "{err:?}"
    );
    // The buyer, for another buyer's confirmation: not theirs to give.
    let mut theirs = confirmation(&w, 3);
    theirs.buyer_id = id("buyer_mallory");
    not_permitted(
        "buyer for another buyer",
        w.engine
            .record_confirmation(&buyer_p(), &RecordConfirmation::new(key("rc-3"), theirs))
            .await,
    );
    w.engine
        .record_confirmation(
            &buyer_p(),
            &RecordConfirmation::new(key("rc-4"), confirmation(&w, 4)),
        )
        .await
        .unwrap();
    let out = w
        .engine
        .execute_payment(&agent_p(), &w.execute("pay-2"))
        .await
        .unwrap();
    assert_eq!(attempt(&out).status, AttemptStatus::Authorized);
}

/// Reproduction: a human who is not the buyer derived a child from the buyer's mandate. The
/// parent's actor and the parent's buyer derive; an agent derives only from its own mandate.
#[tokio::test]
async fn only_the_parents_actor_or_buyer_derives() {
    let w = world().await;
    let child = |n: u32| {
        let mut spec = backpack_spec(false);
        spec.id = id(&format!("mandate_child_{n}"));
        spec.parent_id = Some(w.mandate.id().clone());
        spec.actor = common::sub_agent();
        spec
    };
    for (n, (who, p)) in everyone().into_iter().enumerate() {
        let r = w
            .engine
            .derive_mandate(
                &p,
                &DeriveMandate::new(key(&format!("d-{n}")), child(n as u32)),
            )
            .await;
        if p == agent_p() || p == buyer_p() {
            let m = r.unwrap_or_else(|e| panic!("{who}: {e}"));
            assert_eq!(m.value.parent_id(), Some(w.mandate.id()));
        } else {
            not_permitted(who, r);
        }
    }
}

/// Reproduction: a human who was not the buyer voided the buyer's payment and committed (and so
/// cancelled) its order. Void, refund and commit are for the attempt's actor, its buyer and an
/// operator; capture for its actor only. Every refusal leaves the attempt as it was.
#[tokio::test]
async fn follow_ups_are_for_the_actor_the_buyer_and_operators_and_capture_for_the_actor() {
    for (who, p) in everyone() {
        let settles = p == agent_p() || p == buyer_p() || p.is_operator();
        // Void.
        let w = world().await;
        let a = attempt(
            &w.engine
                .execute_payment(&agent_p(), &w.execute("pay-1"))
                .await
                .unwrap(),
        );
        let r = w.engine.void(&p, &agent_void("v-1", &a.id)).await;
        if settles {
            let v = r.unwrap_or_else(|e| panic!("{who} void: {e}"));
            assert_eq!(attempt(&v).status, AttemptStatus::Cancelled, "{who}");
        } else {
            not_permitted(who, r);
        }
        // Capture, then refund and commit on a captured payment.
        let w = world().await;
        let a = attempt(
            &w.engine
                .execute_payment(&agent_p(), &w.execute("pay-1"))
                .await
                .unwrap(),
        );
        let r = w
            .engine
            .capture(&p, &agent_capture("c-by", &a.id, None))
            .await;
        if p == agent_p() {
            assert_eq!(attempt(&r.unwrap()).status, AttemptStatus::Captured);
        } else {
            not_permitted(who, r);
            w.engine
                .capture(&agent_p(), &agent_capture("c-1", &a.id, None))
                .await
                .unwrap();
        }
        let r = w
            .engine
            .commit_order(
                &p,
                &CommitOrder::new(
                    key("o-1"),
                    a.id.clone(),
                    examples::valid_checkout(w.snapshot.id()),
                ),
            )
            .await;
        if settles {
            assert!(
                matches!(r, Ok(OrderOutcome::Committed { .. })),
                "{who} commit: {r:?}"
            );
        } else {
            not_permitted(who, r);
            let now = w
                .engine
                .ports()
                .store
                .attempt(&a.id)
                .await
                .unwrap()
                .unwrap();
            assert_eq!(
                now.status,
                AttemptStatus::Captured,
                "{who}: nothing started"
            );
            assert!(w
                .engine
                .ports()
                .store
                .order_for(&a.id)
                .await
                .unwrap()
                .is_none());
        }
        let r = w
            .engine
            .refund(&p, &agent_refund("r-1", &a.id, Some(eur("10.00"))))
            .await;
        if settles {
            let r = r.unwrap_or_else(|e| panic!("{who} refund: {e}"));
            assert_eq!(
                attempt(&r).status,
                AttemptStatus::PartiallyRefunded,
                "{who}"
            );
        } else {
            not_permitted(who, r);
        }
    }
}

/// Only the mandate's actor pays under it: an operator, the buyer (the actor is an agent) or
/// another agent presenting the agent's request is refused before anything is held or audited.
#[tokio::test]
async fn only_the_requests_actor_executes_a_payment() {
    let w = world().await;
    for (n, (who, p)) in everyone().into_iter().enumerate() {
        if p == agent_p() {
            continue;
        }
        let before = w.mem.audit.events().len() + w.mem.store.staged_events().len();
        let r = w
            .engine
            .execute_payment(&p, &w.execute(&format!("pay-{n}")))
            .await;
        not_permitted(who, r);
        let after = w.mem.audit.events().len() + w.mem.store.staged_events().len();
        assert_eq!(before, after, "{who}: nothing audited");
    }
    assert!(w.usage().await.held.is_zero(), "nothing held");
    // Evaluate (a dry run) is also for the actor, the buyer and operators.
    let cmd = w.execute("eval");
    let eval =
        Evaluate::new(cmd.request, cmd.snapshot, cmd.checkout).with_credential(cmd.credential);
    for (who, p) in everyone() {
        let r = w.engine.evaluate(&p, &eval).await;
        if p == agent_p() || p == buyer_p() || p.is_operator() {
            assert!(r.unwrap().is_allowed(), "{who}");
        } else {
            not_permitted(who, r);
        }
    }
}

/// Root authority comes from the buyer or a system acting for them; revocation from the buyer,
/// an operator, a system or an actor of the chain; the kill switch from operators and systems
/// (a buyer for themself only).
#[tokio::test]
async fn mandate_creation_revocation_and_the_kill_switch_follow_the_table() {
    for (n, (who, p)) in everyone().into_iter().enumerate() {
        let w = world().await;
        let mut spec = backpack_spec(false);
        spec.id = id(&format!("mandate_root_{n}"));
        let r = w
            .engine
            .create_mandate(&p, &CreateMandate::new(key("create-2"), spec))
            .await;
        if p == buyer_p() || p.is_system() {
            r.unwrap_or_else(|e| panic!("{who} create: {e}"));
        } else {
            not_permitted(who, r);
        }
        let r = w
            .engine
            .set_suspension(
                &p,
                &SetSuspension::new(
                    key("s-1"),
                    Party::Actor(examples::agent().id),
                    true,
                    "review".parse().unwrap(),
                ),
            )
            .await;
        if p.is_operator() || p.is_system() {
            r.unwrap_or_else(|e| panic!("{who} suspend: {e}"));
        } else {
            not_permitted(who, r);
        }
        let r = w
            .engine
            .set_suspension(
                &p,
                &SetSuspension::new(
                    key("s-2"),
                    Party::Buyer(examples::buyer()),
                    true,
                    "stop everything".parse().unwrap(),
                ),
            )
            .await;
        if p == buyer_p() || p.is_operator() || p.is_system() {
            r.unwrap_or_else(|e| panic!("{who} suspend buyer: {e}"));
        } else {
            not_permitted(who, r);
        }
        let r = w
            .engine
            .change_mandate(
                &p,
                &ChangeMandate::new(
                    key("rv-1"),
                    w.mandate.id().clone(),
                    LifecycleEvent::Revoke {
                        reason: "done".parse().unwrap(),
                    },
                ),
            )
            .await;
        if p == buyer_p() || p == agent_p() || p.is_operator() || p.is_system() {
            r.unwrap_or_else(|e| panic!("{who} revoke: {e}"));
        } else {
            not_permitted(who, r);
        }
    }
}

/// Cards are stored by their buyer or a system; an agent's credentials are revoked by the agent
/// itself, an operator or a system.
#[tokio::test]
async fn credentials_follow_the_table() {
    for (n, (who, p)) in everyone().into_iter().enumerate() {
        let w = world().await;
        let r = w
            .engine
            .store_credential(
                &p,
                &key(&format!("card-{n}")),
                card(&examples::agent().id, "pm_card_mastercard"),
            )
            .await;
        if p == buyer_p() || p.is_system() {
            r.unwrap_or_else(|e| panic!("{who} store: {e}"));
        } else {
            not_permitted(who, r);
        }
        let r = w.engine.revoke_credentials(&p, &examples::agent().id).await;
        if p == agent_p() || p.is_operator() || p.is_system() {
            r.unwrap_or_else(|e| panic!("{who} revoke cards: {e}"));
        } else {
            not_permitted(who, r);
        }
    }
}

/// Principals never share idempotency records: the buyer and the agent may use the same key
/// for their own commands, and neither replays the other's answer.
#[tokio::test]
async fn the_same_key_from_two_principals_is_two_commands() {
    let w = world().await;
    let a = attempt(
        &w.engine
            .execute_payment(&agent_p(), &w.execute("pay-1"))
            .await
            .unwrap(),
    );
    w.engine
        .capture(&agent_p(), &agent_capture("c-1", &a.id, None))
        .await
        .unwrap();
    let by_agent = w
        .engine
        .refund(
            &agent_p(),
            &agent_refund("same-key", &a.id, Some(eur("10.00"))),
        )
        .await
        .unwrap();
    let by_buyer = w
        .engine
        .refund(
            &buyer_p(),
            &agent_refund("same-key", &a.id, Some(eur("10.00"))),
        )
        .await
        .unwrap();
    assert!(!by_agent.is_replay() && !by_buyer.is_replay());
    assert_eq!(attempt(&by_buyer).refunded, eur("20.00"));
    let again = w
        .engine
        .refund(
            &buyer_p(),
            &agent_refund("same-key", &a.id, Some(eur("10.00"))),
        )
        .await
        .unwrap();
    assert!(again.is_replay(), "the buyer's own key replays");
}

/// The operator's void of open authorizations after a revocation, and nobody else's but the
/// buyer's or a system's.
#[tokio::test]
async fn voiding_the_open_authorizations_under_a_mandate_follows_the_table() {
    for (who, p) in everyone() {
        let w = world().await;
        let a = attempt(
            &w.engine
                .execute_payment(&agent_p(), &w.execute("pay-1"))
                .await
                .unwrap(),
        );
        let r = w.engine.void_open_authorizations(&p, w.mandate.id()).await;
        if p == buyer_p() || p.is_operator() || p.is_system() {
            let voided = r.unwrap_or_else(|e| panic!("{who}: {e}"));
            assert_eq!(voided.len(), 1, "{who}");
            assert_eq!(voided[0].id, a.id);
        } else {
            not_permitted(who, r);
        }
    }
}
