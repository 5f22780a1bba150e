//! The engine end to end on the memory adapters and the fault-injecting PSP: the scenario-table
//! rows that need an engine (provider timeout, retries with the same key, a retry with another
//! snapshot, an order that fails after authorization), and a negative test for every command.
#![cfg(feature = "testkit")]

mod common;
#[allow(unused_imports)]
use common::principals::*;

use agent_mandate::domain::examples;
use agent_mandate::domain::{
    ActorKind, AttemptStatus, AuditKind, BlockerCode, Confirmation, ConfirmationScope,
    LifecycleEvent, MandateStatus, Outcome, Party, PaymentAction,
};
use agent_mandate::engine::{
    ChangeMandate, CommitOrder, DeriveMandate, DisputeVerdict, EngineConfig, EngineError, Evaluate,
    OrderOutcome, PaymentOutcome, RecordConfirmation, SetSuspension, VoidPayment,
};
use agent_mandate::ports::{AuditSink as _, RefundPolicy};
use agent_mandate::testkit::{Fault, Op};
use common::engine::{
    agent_capture, agent_refund, agent_void, backpack_spec, key, roomy_world, world, world_with,
    World,
};
use common::{eur, id};

fn attempt(outcome: &PaymentOutcome) -> agent_mandate::domain::PaymentAttempt {
    outcome
        .attempt()
        .cloned()
        .unwrap_or_else(|| panic!("no attempt: {outcome:?}"))
}

async fn audit_kinds(w: &World) -> Vec<AuditKind> {
    w.mem
        .audit
        .events()
        .iter()
        .map(|e| e.event().expect("event parses").kind)
        .collect()
}

#[tokio::test]
async fn the_story_authorize_capture_commit_and_dispute_evidence() {
    let w = world().await;
    let out = w
        .engine
        .execute_payment(&agent_p(), &w.execute("pay-1"))
        .await
        .unwrap();
    let a = attempt(&out);
    assert_eq!(a.status, AttemptStatus::Authorized);
    assert!(out.decision().unwrap().is_allowed());
    assert_eq!(
        w.usage().await.held,
        eur("144.00"),
        "the hold counts the moment it is placed"
    );

    let cap = w
        .engine
        .capture(&agent_p(), &agent_capture("cap-1", &a.id, None))
        .await
        .unwrap();
    assert_eq!(attempt(&cap).status, AttemptStatus::Captured);
    let u = w.usage().await;
    assert_eq!((u.held, u.spent), (eur("0.00"), eur("144.00")));

    let order = w
        .engine
        .commit_order(
            &agent_p(),
            &CommitOrder::new(
                key("order-1"),
                a.id.clone(),
                examples::valid_checkout(w.snapshot.id()),
            ),
        )
        .await
        .unwrap();
    let OrderOutcome::Committed { order, .. } = order else {
        panic!("{order:?}")
    };
    assert_eq!(order.amount, eur("144.00"));

    // I4: another key, same attempt: the same order.
    let again = w
        .engine
        .commit_order(
            &agent_p(),
            &CommitOrder::new(
                key("order-2"),
                a.id.clone(),
                examples::valid_checkout(w.snapshot.id()),
            ),
        )
        .await
        .unwrap();
    assert_eq!(
        again,
        OrderOutcome::Existing {
            order: order.clone()
        }
    );

    w.mem.audit.verify().await.expect("I9: the chain verifies");
    let evidence = w.engine.dispute_evidence(&a.id).await.unwrap();
    assert_eq!(
        evidence.verdict,
        DisputeVerdict::Consistent,
        "{:#?}",
        evidence.checks
    );
    assert_eq!(evidence.charged, eur("144.00"));
    assert!(evidence.decision.is_some());
    assert!(evidence.audit_segment.len() >= 5);
}

/// Scenario: provider timeout -> ambiguous, hold kept (I5); reconcile resolves it.
#[tokio::test]
async fn provider_timeout_after_the_effect_is_ambiguous_and_keeps_the_hold() {
    let w = world().await;
    w.psp.inject(Some(Op::Authorize), Fault::TimeoutAfterEffect);
    let out = w
        .engine
        .execute_payment(&agent_p(), &w.execute("pay-1"))
        .await
        .unwrap();
    let a = attempt(&out);
    assert_eq!(a.status, AttemptStatus::Ambiguous);
    assert_eq!(
        w.usage().await.held,
        eur("144.00"),
        "I5: the hold stays while ambiguous"
    );

    // No timer resolves it: later, still held.
    w.mem.clock.advance(chrono::Duration::hours(2));
    assert_eq!(
        w.engine
            .ports()
            .store
            .attempt(&a.id)
            .await
            .unwrap()
            .unwrap()
            .status,
        AttemptStatus::Ambiguous
    );

    let r = w.engine.reconcile(&a.id).await.unwrap();
    assert_eq!(r.status, AttemptStatus::Authorized, "the PSP did authorize");
    assert_eq!(w.usage().await.held, eur("144.00"));
    assert_eq!(
        w.psp
            .authorizations_for(&a.provider_key(agent_mandate::domain::Operation::Authorize)),
        1
    );
}

#[tokio::test]
async fn provider_timeout_before_the_effect_reconciles_to_failed_and_releases() {
    let w = world().await;
    w.psp
        .inject(Some(Op::Authorize), Fault::TimeoutBeforeEffect);
    let a = attempt(
        &w.engine
            .execute_payment(&agent_p(), &w.execute("pay-1"))
            .await
            .unwrap(),
    );
    assert_eq!(a.status, AttemptStatus::Ambiguous);
    assert_eq!(w.usage().await.held, eur("144.00"));
    // I13: before the submission's deadline "not found" proves nothing (the request may still
    // be on its way): the attempt stays ambiguous and keeps its hold.
    let r = w.engine.reconcile(&a.id).await.unwrap();
    assert_eq!(r.status, AttemptStatus::Ambiguous, "no outcome is presumed");
    assert_eq!(w.usage().await.held, eur("144.00"));
    w.mem.clock.advance(chrono::Duration::seconds(21));
    let r = w.engine.reconcile(&a.id).await.unwrap();
    assert_eq!(r.status, AttemptStatus::Failed, "the PSP never saw it");
    assert_eq!(w.usage().await.held, eur("0.00"));
}

/// Scenario: retry with the same key -> the existing attempt, no second PSP call (I3).
#[tokio::test]
async fn retry_with_the_same_key_returns_the_attempt_without_a_second_psp_call() {
    let w = world().await;
    let first = attempt(
        &w.engine
            .execute_payment(&agent_p(), &w.execute("pay-1"))
            .await
            .unwrap(),
    );
    let again = w
        .engine
        .execute_payment(&agent_p(), &w.execute("pay-1"))
        .await
        .unwrap();
    assert!(again.is_replay());
    assert_eq!(attempt(&again).id, first.id);
    assert_eq!(w.psp.calls(Op::Authorize), 1);
    assert!(audit_kinds(&w)
        .await
        .iter()
        .any(|k| matches!(k, AuditKind::Replay { .. })));
}

#[tokio::test]
async fn retry_of_an_ambiguous_attempt_with_the_same_key_makes_no_second_authorization() {
    let w = world().await;
    w.psp.inject(Some(Op::Authorize), Fault::LostResponse);
    let first = attempt(
        &w.engine
            .execute_payment(&agent_p(), &w.execute("pay-1"))
            .await
            .unwrap(),
    );
    assert_eq!(first.status, AttemptStatus::Ambiguous);
    let again = w
        .engine
        .execute_payment(&agent_p(), &w.execute("pay-1"))
        .await
        .unwrap();
    assert!(again.is_replay());
    assert_eq!(w.psp.calls(Op::Authorize), 1);
}

/// Scenario: a retry with another snapshot under the same key -> conflict, nothing executed.
#[tokio::test]
async fn retry_with_another_snapshot_under_the_same_key_is_a_conflict() {
    let w = world().await;
    w.engine
        .execute_payment(&agent_p(), &w.execute("pay-1"))
        .await
        .unwrap();
    let mut other = w.execute("pay-1");
    other.snapshot = examples::over_limit_snapshot();
    other.request = examples::authorize_request(&other.snapshot);
    other.checkout = examples::valid_checkout(other.snapshot.id());
    let err = w
        .engine
        .execute_payment(&payer(&other), &other)
        .await
        .unwrap_err();
    assert!(
        matches!(err, EngineError::IdempotencyConflict { .. }),
        "{err}"
    );
    assert_eq!(w.psp.calls(Op::Authorize), 1);
}

/// ... and under a new key, the mandate (one use, EUR 150.00) blocks it: a new mandate is needed.
#[tokio::test]
async fn another_snapshot_under_a_new_key_needs_a_new_mandate() {
    let w = world().await;
    w.engine
        .execute_payment(&agent_p(), &w.execute("pay-1"))
        .await
        .unwrap();
    let mut other = w.execute("pay-2");
    other.snapshot = examples::over_limit_snapshot();
    other.request = examples::authorize_request(&other.snapshot);
    other.checkout = examples::valid_checkout(other.snapshot.id());
    let out = w
        .engine
        .execute_payment(&payer(&other), &other)
        .await
        .unwrap();
    let PaymentOutcome::Refused(d) = out else {
        panic!("{out:?}")
    };
    assert!(d.has(BlockerCode::AmountExceedsMandate));
    assert!(d.has(BlockerCode::MandateUsed) || d.has(BlockerCode::LifetimeLimitExceeded));
    assert_eq!(w.psp.calls(Op::Authorize), 1);
}

#[tokio::test]
async fn same_key_while_in_flight_is_refused_with_a_retry_hint() {
    let w = world().await;
    let cmd = w.execute("pay-1");
    let scope = agent_mandate::ports::IdempotencyScope {
        actor_id: examples::agent().id,
        operation: "execute_payment".into(),
        key: cmd.key.clone(),
    };
    let fp = agent_mandate::domain::execution_fingerprint(
        &cmd.request,
        &cmd.checkout,
        cmd.credential.as_str(),
        false,
    );
    let begun = w
        .engine
        .ports()
        .store
        .begin_idempotent(
            &scope,
            &fp,
            examples::now(),
            std::time::Duration::from_secs(30),
        )
        .await
        .unwrap();
    assert!(matches!(begun, agent_mandate::ports::Begin::Started(_)));
    let err = w
        .engine
        .execute_payment(&payer(&cmd), &cmd)
        .await
        .unwrap_err();
    let EngineError::IdempotencyInFlight { retry_after, .. } = err else {
        panic!("{err}")
    };
    // The holder's lease has 30 s left, but the hint is the configured 1 s: commands finish in
    // milliseconds, so a client is not told to wait out the lease.
    assert_eq!(retry_after, std::time::Duration::from_secs(1));
    assert!(EngineError::IdempotencyInFlight {
        key: key("k"),
        retry_after
    }
    .is_retryable());
    assert_eq!(w.psp.calls(Op::Authorize), 0);
}

/// Scenario: authorized, then the order commitment fails -> no order, recovery recorded.
#[tokio::test]
async fn order_refused_after_authorization_voids_and_records_the_recovery() {
    let w = world().await;
    let a = attempt(
        &w.engine
            .execute_payment(&agent_p(), &w.execute("pay-1"))
            .await
            .unwrap(),
    );
    let out = w
        .engine
        .commit_order(
            &agent_p(),
            &CommitOrder::new(key("order-1"), a.id.clone(), examples::invalid_checkout()),
        )
        .await
        .unwrap();
    let OrderOutcome::Failed {
        recovery, decision, ..
    } = out
    else {
        panic!("{out:?}")
    };
    assert!(decision.unwrap().has(BlockerCode::CheckoutNotValid));
    assert_eq!(recovery.operation, agent_mandate::domain::Operation::Void);
    assert_eq!(recovery.attempt.status, AttemptStatus::Cancelled);
    assert!(recovery.error.is_none());
    assert_eq!(
        w.usage().await.held,
        eur("0.00"),
        "the void released the hold"
    );
    assert!(w
        .engine
        .ports()
        .store
        .order_for(&a.id)
        .await
        .unwrap()
        .is_none());
    let kinds = audit_kinds(&w).await;
    assert!(kinds
        .iter()
        .any(|k| matches!(k, AuditKind::OrderFailed { .. })));
    assert!(kinds
        .iter()
        .any(|k| matches!(k, AuditKind::Recovery { .. })));
    // No duplicate order later either.
    let again = w
        .engine
        .commit_order(
            &agent_p(),
            &CommitOrder::new(
                key("order-2"),
                a.id.clone(),
                examples::valid_checkout(w.snapshot.id()),
            ),
        )
        .await;
    assert!(matches!(
        again,
        Err(EngineError::OrderNotAllowed {
            status: AttemptStatus::Cancelled
        })
    ));
}

#[tokio::test]
async fn order_refused_after_capture_refunds() {
    let w = world().await;
    let mut cmd = w.execute("pay-1");
    cmd.capture = true;
    let a = attempt(&w.engine.execute_payment(&payer(&cmd), &cmd).await.unwrap());
    assert_eq!(a.status, AttemptStatus::Captured);
    let out = w
        .engine
        .commit_order(
            &agent_p(),
            &CommitOrder::new(key("order-1"), a.id.clone(), examples::invalid_checkout()),
        )
        .await
        .unwrap();
    let OrderOutcome::Failed { recovery, .. } = out else {
        panic!("{out:?}")
    };
    assert_eq!(recovery.operation, agent_mandate::domain::Operation::Refund);
    assert_eq!(recovery.attempt.status, AttemptStatus::Refunded);
}

#[tokio::test]
async fn order_is_refused_from_states_without_money() {
    let w = world().await;
    w.psp
        .inject(Some(Op::Authorize), Fault::Decline("card_declined".into()));
    let a = attempt(
        &w.engine
            .execute_payment(&agent_p(), &w.execute("pay-1"))
            .await
            .unwrap(),
    );
    assert_eq!(a.status, AttemptStatus::Failed);
    assert_eq!(a.decline_code.as_deref(), Some("card_declined"));
    assert_eq!(w.usage().await.held, eur("0.00"));
    let err = w
        .engine
        .commit_order(
            &agent_p(),
            &CommitOrder::new(
                key("order-1"),
                a.id.clone(),
                examples::valid_checkout(w.snapshot.id()),
            ),
        )
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        EngineError::OrderNotAllowed {
            status: AttemptStatus::Failed
        }
    ));
}

#[tokio::test]
async fn transient_failure_releases_the_hold_and_the_same_key_retries_once_at_the_psp() {
    let w = world().await;
    w.psp.inject(Some(Op::Authorize), Fault::Transient);
    let err = w
        .engine
        .execute_payment(&agent_p(), &w.execute("pay-1"))
        .await
        .unwrap_err();
    assert!(err.is_retryable(), "{err}");
    assert_eq!(
        w.usage().await.held,
        eur("0.00"),
        "nothing held after a transient failure"
    );
    let out = w
        .engine
        .execute_payment(&agent_p(), &w.execute("pay-1"))
        .await
        .unwrap();
    assert!(
        !out.is_replay(),
        "a transient failure is not a stored result"
    );
    let a = attempt(&out);
    assert_eq!(a.status, AttemptStatus::Authorized);
    assert_eq!(a.submissions, 2);
    assert_eq!(w.usage().await.held, eur("144.00"));
    assert_eq!(
        w.psp
            .authorizations_for(&a.provider_key(agent_mandate::domain::Operation::Authorize)),
        1
    );
}

#[tokio::test]
async fn invalid_at_the_psp_fails_and_releases() {
    let w = world().await;
    w.psp.inject(Some(Op::Authorize), Fault::Invalid);
    let a = attempt(
        &w.engine
            .execute_payment(&agent_p(), &w.execute("pay-1"))
            .await
            .unwrap(),
    );
    assert_eq!(a.status, AttemptStatus::Failed);
    assert_eq!(w.usage().await.held, eur("0.00"));
}

#[tokio::test]
async fn an_unknown_psp_status_leaves_the_attempt_ambiguous_with_its_hold() {
    let w = world().await;
    w.psp.inject(
        Some(Op::Authorize),
        Fault::UnknownStatus("processing_v7".into()),
    );
    let a = attempt(
        &w.engine
            .execute_payment(&agent_p(), &w.execute("pay-1"))
            .await
            .unwrap(),
    );
    assert_eq!(a.status, AttemptStatus::Ambiguous);
    assert_eq!(w.usage().await.held, eur("144.00"));
}

#[tokio::test]
async fn three_d_secure_waits_for_the_buyer_then_reconciles() {
    let w = world().await;
    w.psp.inject(Some(Op::Authorize), Fault::RequiresAction);
    let a = attempt(
        &w.engine
            .execute_payment(&agent_p(), &w.execute("pay-1"))
            .await
            .unwrap(),
    );
    assert_eq!(a.status, AttemptStatus::RequiresBuyerAction);
    assert_eq!(w.usage().await.held, eur("144.00"));
    w.psp
        .complete_buyer_action(a.provider_ref.as_ref().unwrap(), true)
        .unwrap();
    let r = w.engine.reconcile(&a.id).await.unwrap();
    assert_eq!(r.status, AttemptStatus::Authorized);
}

#[tokio::test]
async fn a_refused_decision_holds_nothing_and_calls_no_psp() {
    let w = world().await;
    let mut cmd = w.execute("pay-1");
    cmd.snapshot = examples::over_limit_snapshot();
    cmd.request = examples::authorize_request(&cmd.snapshot);
    cmd.checkout = examples::valid_checkout(cmd.snapshot.id());
    let out = w.engine.execute_payment(&payer(&cmd), &cmd).await.unwrap();
    let PaymentOutcome::Refused(d) = out else {
        panic!("{out:?}")
    };
    assert!(d.has(BlockerCode::AmountExceedsMandate));
    assert_eq!(w.psp.calls(Op::Authorize), 0);
    assert_eq!(w.usage().await.held, eur("0.00"));
    // I1: the refusal is audited with its blockers.
    let kinds = audit_kinds(&w).await;
    assert!(kinds.iter().any(|k| matches!(k, AuditKind::Decision { outcome: Outcome::Blocked, blockers, .. } if !blockers.is_empty())));
}

#[tokio::test]
async fn an_invalid_checkout_blocks_with_upstream_causes() {
    let w = world().await;
    let mut cmd = w.execute("pay-1");
    cmd.checkout = examples::invalid_checkout();
    let PaymentOutcome::Refused(d) = w.engine.execute_payment(&payer(&cmd), &cmd).await.unwrap()
    else {
        panic!()
    };
    let b = d
        .blockers
        .iter()
        .find(|b| b.code == BlockerCode::CheckoutNotValid)
        .unwrap();
    assert_eq!(b.causes.len(), 2);
}

#[tokio::test]
async fn a_credential_of_another_actor_or_revoked_is_not_usable() {
    let w = world().await;
    let other = w
        .engine
        .store_credential(
            &buyer_p(),
            &common::engine::key("card-other"),
            common::engine::card(&id("agent_other"), "pm_card_visa"),
        )
        .await
        .unwrap()
        .value;
    let mut cmd = w.execute("pay-1");
    cmd.credential = other.reference;
    let PaymentOutcome::Refused(d) = w.engine.execute_payment(&payer(&cmd), &cmd).await.unwrap()
    else {
        panic!()
    };
    assert!(d.has(BlockerCode::CredentialNotUsable));

    assert_eq!(
        w.engine
            .revoke_credentials(&operator_p(), &examples::agent().id)
            .await
            .unwrap(),
        1
    );
    let PaymentOutcome::Refused(d) = w
        .engine
        .execute_payment(&agent_p(), &w.execute("pay-2"))
        .await
        .unwrap()
    else {
        panic!()
    };
    assert!(d.has(BlockerCode::CredentialNotUsable));
    assert_eq!(w.psp.calls(Op::Authorize), 0);
}

#[tokio::test]
async fn three_blocked_requests_in_a_row_suspend_the_actor_until_resumed() {
    let w = roomy_world().await;
    let mut bad = w.execute("x");
    bad.snapshot = examples::over_limit_snapshot();
    bad.request = examples::authorize_request(&bad.snapshot);
    bad.checkout = examples::valid_checkout(bad.snapshot.id());
    for i in 0..3 {
        bad.key = key(&format!("bad-{i}"));
        assert!(matches!(
            w.engine.execute_payment(&payer(&bad), &bad).await.unwrap(),
            PaymentOutcome::Refused(_)
        ));
    }
    assert!(audit_kinds(&w).await.iter().any(|k| matches!(
        k,
        AuditKind::AutoSuspended {
            consecutive_blocks: 3,
            ..
        }
    )));
    // A good request is now blocked too.
    let PaymentOutcome::Refused(d) = w
        .engine
        .execute_payment(&agent_p(), &w.execute("good-1"))
        .await
        .unwrap()
    else {
        panic!()
    };
    assert!(d.has(BlockerCode::ActorSuspended));
    // Neither the agent nor the buyer can lift an actor's suspension (it reaches every buyer
    // the agent works for); an operator can.
    let resume = SetSuspension::new(
        key("resume-1"),
        Party::Actor(examples::agent().id),
        false,
        "false alarm".parse().unwrap(),
    );
    for refused in [agent_p(), buyer_p()] {
        assert!(matches!(
            w.engine.set_suspension(&refused, &resume).await,
            Err(EngineError::NotPermitted { .. })
        ));
    }
    w.engine
        .set_suspension(&operator_p(), &resume)
        .await
        .unwrap();
    let out = w
        .engine
        .execute_payment(&agent_p(), &w.execute("good-2"))
        .await
        .unwrap();
    assert_eq!(attempt(&out).status, AttemptStatus::Authorized);
}

#[tokio::test]
async fn an_allowed_request_resets_the_count_of_blocks() {
    let w = roomy_world().await;
    let mut bad = w.execute("x");
    bad.snapshot = examples::over_limit_snapshot();
    bad.request = examples::authorize_request(&bad.snapshot);
    bad.checkout = examples::valid_checkout(bad.snapshot.id());
    for (i, good) in [false, false, true, false, false].into_iter().enumerate() {
        let cmd = if good {
            w.execute(&format!("k-{i}"))
        } else {
            let mut b = bad.clone();
            b.key = key(&format!("k-{i}"));
            b
        };
        w.engine.execute_payment(&payer(&cmd), &cmd).await.unwrap();
    }
    assert!(!audit_kinds(&w)
        .await
        .iter()
        .any(|k| matches!(k, AuditKind::AutoSuspended { .. })));
}

#[tokio::test]
async fn a_buyer_kill_switch_blocks_every_mandate_of_theirs() {
    let w = world().await;
    w.engine
        .set_suspension(
            &buyer_p(),
            &SetSuspension::new(
                key("s-1"),
                Party::Buyer(examples::buyer()),
                true,
                "fraud report".parse().unwrap(),
            ),
        )
        .await
        .unwrap();
    let PaymentOutcome::Refused(d) = w
        .engine
        .execute_payment(&agent_p(), &w.execute("pay-1"))
        .await
        .unwrap()
    else {
        panic!()
    };
    assert!(d.has(BlockerCode::BuyerSuspended));
}

#[tokio::test]
async fn crossing_80_percent_of_a_limit_emits_a_threshold_event() {
    let mut spec = backpack_spec(true);
    spec.scope.budgets.lifetime = Some(eur("170.00"));
    let w = world_with(EngineConfig::default(), spec).await;
    w.engine
        .execute_payment(&agent_p(), &w.execute("pay-1"))
        .await
        .unwrap();
    let kinds = audit_kinds(&w).await;
    assert!(
        kinds.iter().any(|k| matches!(
            k,
            AuditKind::Threshold {
                percent: 80,
                limit: agent_mandate::domain::LimitKind::Lifetime,
                ..
            }
        )),
        "{kinds:#?}"
    );
    // Not under the threshold.
    let w = roomy_world().await;
    w.engine
        .execute_payment(&agent_p(), &w.execute("pay-1"))
        .await
        .unwrap();
    assert!(!audit_kinds(&w)
        .await
        .iter()
        .any(|k| matches!(k, AuditKind::Threshold { .. })));
}

#[tokio::test]
async fn the_transaction_count_window_blocks_the_sixth_payment() {
    let mut spec = backpack_spec(true);
    spec.scope.budgets.windows[0].max_count = Some(2);
    let w = world_with(EngineConfig::default(), spec).await;
    for i in 0..2 {
        let out = w
            .engine
            .execute_payment(&agent_p(), &w.execute(&format!("p-{i}")))
            .await
            .unwrap();
        assert_eq!(attempt(&out).status, AttemptStatus::Authorized);
    }
    let PaymentOutcome::Refused(d) = w
        .engine
        .execute_payment(&agent_p(), &w.execute("p-2"))
        .await
        .unwrap()
    else {
        panic!()
    };
    assert!(d.has(BlockerCode::WindowCountExceeded));
    assert_eq!(w.psp.calls(Op::Authorize), 2);
}

#[tokio::test]
async fn capture_after_void_and_over_refund_are_refused_before_any_psp_call() {
    let w = world().await;
    let a = attempt(
        &w.engine
            .execute_payment(&agent_p(), &w.execute("pay-1"))
            .await
            .unwrap(),
    );
    let voided = w
        .engine
        .void(&agent_p(), &agent_void("void-1", &a.id))
        .await
        .unwrap();
    assert_eq!(attempt(&voided).status, AttemptStatus::Cancelled);
    assert_eq!(w.usage().await.held, eur("0.00"));
    let err = w
        .engine
        .capture(&agent_p(), &agent_capture("cap-1", &a.id, None))
        .await
        .unwrap_err();
    assert!(matches!(err, EngineError::Transition(_)), "{err}");
    assert_eq!(w.psp.calls(Op::Capture), 0);

    let w = roomy_world().await;
    let mut cmd = w.execute("pay-1");
    cmd.capture = true;
    let a = attempt(&w.engine.execute_payment(&payer(&cmd), &cmd).await.unwrap());
    let r = w
        .engine
        .refund(&agent_p(), &agent_refund("r-1", &a.id, Some(eur("100.00"))))
        .await
        .unwrap();
    assert_eq!(attempt(&r).status, AttemptStatus::PartiallyRefunded);
    let err = w
        .engine
        .refund(&agent_p(), &agent_refund("r-2", &a.id, Some(eur("44.01"))))
        .await
        .unwrap_err();
    assert!(matches!(err, EngineError::Transition(_)), "{err}");
    assert_eq!(w.psp.calls(Op::Refund), 1);
}

#[tokio::test]
async fn partial_capture_needs_the_mandate_to_allow_it() {
    let w = roomy_world().await;
    let a = attempt(
        &w.engine
            .execute_payment(&agent_p(), &w.execute("pay-1"))
            .await
            .unwrap(),
    );
    let out = w
        .engine
        .capture(
            &agent_p(),
            &agent_capture("cap-1", &a.id, Some(eur("100.00"))),
        )
        .await
        .unwrap();
    let PaymentOutcome::Refused(d) = out else {
        panic!("{out:?}")
    };
    assert!(d.has(BlockerCode::PartialCaptureNotAllowed));
    assert_eq!(w.psp.calls(Op::Capture), 0);
    assert_eq!(
        w.usage().await.held,
        eur("144.00"),
        "the authorization still holds"
    );
}

#[tokio::test]
async fn partial_capture_commits_part_and_releases_the_rest() {
    let mut spec = backpack_spec(true);
    spec.scope.amount.allow_partial_capture = true;
    let w = world_with(EngineConfig::default(), spec).await;
    let a = attempt(
        &w.engine
            .execute_payment(&agent_p(), &w.execute("pay-1"))
            .await
            .unwrap(),
    );
    let cap = w
        .engine
        .capture(
            &agent_p(),
            &agent_capture("cap-1", &a.id, Some(eur("100.00"))),
        )
        .await
        .unwrap();
    assert_eq!(attempt(&cap).status, AttemptStatus::PartiallyCaptured);
    let u = w.usage().await;
    assert_eq!((u.held, u.spent), (eur("0.00"), eur("100.00")));
}

#[tokio::test]
async fn capture_needs_the_capture_action_in_the_mandate() {
    let mut spec = backpack_spec(true);
    spec.scope.actions = [PaymentAction::Authorize].into_iter().collect();
    let w = world_with(EngineConfig::default(), spec).await;
    let a = attempt(
        &w.engine
            .execute_payment(&agent_p(), &w.execute("pay-1"))
            .await
            .unwrap(),
    );
    let out = w
        .engine
        .capture(&agent_p(), &agent_capture("cap-1", &a.id, None))
        .await
        .unwrap();
    let PaymentOutcome::Refused(d) = out else {
        panic!("{out:?}")
    };
    assert!(d.has(BlockerCode::ActionNotAllowed));
    assert_eq!(w.psp.calls(Op::Capture), 0);
}

#[tokio::test]
async fn refund_policy_decides_whether_headroom_comes_back() {
    for (policy, spent_after) in [
        (RefundPolicy::RETAIN, "144.00"),
        (RefundPolicy::RESTORE_ALL, "0.00"),
    ] {
        let w = world_with(
            EngineConfig::default().with_refund_policy(policy),
            backpack_spec(true),
        )
        .await;
        let mut cmd = w.execute("pay-1");
        cmd.capture = true;
        let a = attempt(&w.engine.execute_payment(&payer(&cmd), &cmd).await.unwrap());
        w.engine
            .refund(&agent_p(), &agent_refund("r-1", &a.id, None))
            .await
            .unwrap();
        assert_eq!(w.usage().await.spent, eur(spent_after), "{policy:?}");
        let kinds = audit_kinds(&w).await;
        assert!(kinds
            .iter()
            .any(|k| matches!(k, AuditKind::Hold { policy: Some(p), .. } if p == policy.name())));
    }
}

#[tokio::test]
async fn void_needs_the_attempts_actor_or_a_human() {
    let w = world().await;
    let a = attempt(
        &w.engine
            .execute_payment(&agent_p(), &w.execute("pay-1"))
            .await
            .unwrap(),
    );
    let err = w
        .engine
        .void(
            &who(&common::sub_agent()),
            &VoidPayment::new(key("v-1"), a.id.clone()),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, EngineError::NotPermitted { .. }));
    assert_eq!(w.psp.calls(Op::Void), 0);
}

#[tokio::test]
async fn mandate_commands_refuse_what_they_must() {
    let w = world().await;
    // An agent cannot grant root authority.
    let mut spec = backpack_spec(false);
    spec.id = id("mandate_agent_made");
    let err = w
        .engine
        .create_mandate(
            &agent_p(),
            &agent_mandate::engine::CreateMandate::new(key("c-2"), spec),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, EngineError::NotPermitted { .. }));
    // A root mandate has no parent.
    let mut spec = backpack_spec(false);
    spec.id = id("mandate_x");
    spec.parent_id = Some(id("mandate_001"));
    let err = w
        .engine
        .create_mandate(
            &buyer_p(),
            &agent_mandate::engine::CreateMandate::new(key("c-3"), spec),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, EngineError::Invalid { ref field, .. } if field == "spec.parent_id"));
    // The same id twice.
    let err = w
        .engine
        .create_mandate(
            &buyer_p(),
            &agent_mandate::engine::CreateMandate::new(key("c-4"), backpack_spec(false)),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, EngineError::Store(_)), "{err}");
    // An agent cannot confirm.
    let err = w
        .engine
        .change_mandate(
            &agent_p(),
            &ChangeMandate::new(key("ch-1"), id("mandate_001"), LifecycleEvent::Confirm),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, EngineError::NotPermitted { .. }));
    // A widening child is refused (I6).
    let mut child = backpack_spec(false);
    child.id = id("mandate_child");
    child.parent_id = Some(id("mandate_001"));
    child.actor = common::sub_agent();
    child.scope.amount.max_amount = eur("200.00");
    let err = w
        .engine
        .derive_mandate(&agent_p(), &DeriveMandate::new(key("d-1"), child))
        .await
        .unwrap_err();
    assert!(matches!(err, EngineError::Delegation(_)), "{err}");
    // Nothing of it was persisted (I11).
    assert!(w
        .engine
        .ports()
        .store
        .mandate(&id("mandate_child"))
        .await
        .unwrap()
        .is_none());
}

#[tokio::test]
async fn revoking_a_parent_blocks_the_child_at_evaluation_time() {
    let w = roomy_world().await;
    let mut child = backpack_spec(true);
    child.id = id("mandate_child");
    child.parent_id = Some(id("mandate_001"));
    child.actor = common::sub_agent();
    let derived = w
        .engine
        .derive_mandate(&agent_p(), &DeriveMandate::new(key("d-1"), child.clone()))
        .await
        .unwrap();
    assert!(!derived.replay);
    // Replay of the same derive.
    assert!(
        w.engine
            .derive_mandate(&agent_p(), &DeriveMandate::new(key("d-1"), child))
            .await
            .unwrap()
            .replay
    );
    let sub_card = w
        .engine
        .store_credential(
            &buyer_p(),
            &common::engine::key("card-sub"),
            common::engine::card(&common::sub_agent().id, "pm_card_visa"),
        )
        .await
        .unwrap()
        .value;
    let mut cmd = w.execute("sub-1");
    cmd.request.actor = common::sub_agent();
    cmd.request.mandate_id = id("mandate_child");
    cmd.credential = sub_card.reference.clone();
    let out = w.engine.execute_payment(&payer(&cmd), &cmd).await.unwrap();
    let a = attempt(&out);
    assert_eq!(a.status, AttemptStatus::Authorized);
    // Spend by the child counts against the parent.
    assert_eq!(w.usage().await.held, eur("144.00"));

    w.engine
        .change_mandate(
            &buyer_p(),
            &ChangeMandate::new(
                key("rv-1"),
                id("mandate_001"),
                LifecycleEvent::Revoke {
                    reason: "buyer changed mind".parse().unwrap(),
                },
            ),
        )
        .await
        .unwrap();
    let mut cmd2 = cmd.clone();
    cmd2.key = key("sub-2");
    let PaymentOutcome::Refused(d) = w
        .engine
        .execute_payment(&payer(&cmd2), &cmd2)
        .await
        .unwrap()
    else {
        panic!()
    };
    assert!(d.has(BlockerCode::AncestorNotActive));
    // The earlier authorization can still be voided under a revoked mandate.
    let v = w
        .engine
        .void(
            &who(&common::sub_agent()),
            &VoidPayment::new(key("v-1"), a.id.clone()),
        )
        .await
        .unwrap();
    assert_eq!(attempt(&v).status, AttemptStatus::Cancelled);
}

#[tokio::test]
async fn pending_mandates_need_a_human_confirmation() {
    let mut spec = backpack_spec(false);
    spec.lifecycle =
        agent_mandate::domain::Lifecycle::new(MandateStatus::PendingConfirmation, examples::now());
    let w = world_with(EngineConfig::default(), spec).await;
    let PaymentOutcome::Refused(d) = w
        .engine
        .execute_payment(&agent_p(), &w.execute("p-1"))
        .await
        .unwrap()
    else {
        panic!()
    };
    assert!(d.has(BlockerCode::MandatePendingConfirmation));
    let m = w
        .engine
        .change_mandate(
            &buyer_p(),
            &ChangeMandate::new(key("c-1"), id("mandate_001"), LifecycleEvent::Confirm),
        )
        .await
        .unwrap();
    assert_eq!(m.value.status(), MandateStatus::Active);
    assert_eq!(
        attempt(
            &w.engine
                .execute_payment(&agent_p(), &w.execute("p-2"))
                .await
                .unwrap()
        )
        .status,
        AttemptStatus::Authorized
    );
}

#[tokio::test]
async fn confirmations_are_recorded_only_from_humans_for_the_right_buyer() {
    let mut spec = backpack_spec(false);
    spec.scope.confirmation = agent_mandate::domain::ConfirmationRule::always();
    let w = world_with(EngineConfig::default(), spec).await;
    let PaymentOutcome::Refused(d) = w
        .engine
        .execute_payment(&agent_p(), &w.execute("p-1"))
        .await
        .unwrap()
    else {
        panic!()
    };
    assert_eq!(d.outcome, Outcome::RequiresConfirmation);
    let mut c = Confirmation {
        id: id("conf_1"),
        buyer_id: examples::buyer(),
        confirmed_by: examples::agent(),
        confirmed_at: examples::now(),
        expires_at: None,
        snapshot_id: w.snapshot.id(),
        scope: ConfirmationScope {
            mandate_id: id("mandate_001"),
            actions: [PaymentAction::Authorize].into_iter().collect(),
            max_amount: eur("144.00"),
        },
        channel_ref: id("push:device_42"),
    };
    let err = w
        .engine
        .record_confirmation(&buyer_p(), &RecordConfirmation::new(key("rc-1"), c.clone()))
        .await
        .unwrap_err();
    assert!(
        matches!(err, EngineError::Invalid { ref field, .. } if field == "confirmation.confirmed_by")
    );
    c.confirmed_by = common::human();
    // The agent may not record the buyer's confirmation, whatever the body says.
    let err = w
        .engine
        .record_confirmation(
            &agent_p(),
            &RecordConfirmation::new(key("rc-agent"), c.clone()),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, EngineError::NotPermitted { .. }), "{err:?}");
    c.buyer_id = id("buyer_other");
    let err = w
        .engine
        .record_confirmation(&buyer_p(), &RecordConfirmation::new(key("rc-2"), c.clone()))
        .await
        .unwrap_err();
    // The buyer may not confirm for another buyer.
    assert!(matches!(err, EngineError::NotPermitted { .. }), "{err:?}");
    c.buyer_id = examples::buyer();
    w.engine
        .record_confirmation(&buyer_p(), &RecordConfirmation::new(key("rc-3"), c.clone()))
        .await
        .unwrap();
    assert!(audit_kinds(&w)
        .await
        .iter()
        .any(|k| matches!(k, AuditKind::ConfirmationRecorded { .. })));
    assert_eq!(
        attempt(
            &w.engine
                .execute_payment(&agent_p(), &w.execute("p-2"))
                .await
                .unwrap()
        )
        .status,
        AttemptStatus::Authorized
    );
    assert_eq!(c.confirmed_by.kind, ActorKind::Human);
}

#[tokio::test]
async fn evaluate_is_a_dry_run() {
    let w = world().await;
    let before = w.mem.audit.events().len();
    let cmd = w.execute("p-1");
    let d = w
        .engine
        .evaluate(
            &agent_p(),
            &Evaluate::new(
                cmd.request.clone(),
                cmd.snapshot.clone(),
                cmd.checkout.clone(),
            )
            .with_credential(w.card.clone()),
        )
        .await
        .unwrap();
    assert!(d.is_allowed());
    assert_eq!(w.mem.audit.events().len(), before);
    assert_eq!(w.usage().await.held, eur("0.00"));
    assert_eq!(w.psp.calls(Op::Authorize), 0);
}

#[tokio::test]
async fn execute_refuses_other_actions_as_bad_input() {
    let w = world().await;
    let mut cmd = w.execute("p-1");
    cmd.request.action = PaymentAction::Capture;
    let err = w
        .engine
        .execute_payment(&payer(&cmd), &cmd)
        .await
        .unwrap_err();
    assert!(matches!(err, EngineError::Invalid { ref field, .. } if field == "request.action"));
}

#[tokio::test]
async fn tampering_with_the_engines_audit_trail_is_detected() {
    for tamper in 0..3 {
        let w = world().await;
        w.engine
            .execute_payment(&agent_p(), &w.execute("pay-1"))
            .await
            .unwrap();
        let n = w.mem.audit.events().len() as u64;
        assert!(n >= 4);
        match tamper {
            0 => assert!(w.mem.audit.tamper_edit_body(3, "{\"type\":\"replay\"}")),
            1 => assert!(w.mem.audit.tamper_remove(3)),
            _ => assert!(w.mem.audit.tamper_swap(2, 3)),
        }
        let err = w.mem.audit.verify().await.unwrap_err();
        let agent_mandate::ports::AuditError::Broken(b) = err else {
            panic!("{err}")
        };
        assert!(b.seq == 3 || b.seq == 4 || b.seq == 2, "{b:?}");
        let ev = w
            .engine
            .dispute_evidence(&agent_mandate::engine::attempt_id_for(
                &examples::agent().id,
                &key("pay-1"),
            ))
            .await
            .unwrap();
        assert_eq!(ev.verdict, DisputeVerdict::Inconsistent);
    }
}

/// A refusal is not a stored result: the same key decides again once the buyer confirmed.
#[tokio::test]
async fn a_refused_key_is_free_to_retry_after_the_cause_is_fixed() {
    let mut spec = backpack_spec(false);
    spec.scope.confirmation = agent_mandate::domain::ConfirmationRule::always();
    let w = world_with(EngineConfig::default(), spec).await;
    let cmd = w.execute("pay-1");
    let PaymentOutcome::Refused(d) = w.engine.execute_payment(&payer(&cmd), &cmd).await.unwrap()
    else {
        panic!()
    };
    assert_eq!(d.outcome, Outcome::RequiresConfirmation);
    // At once, with the same key: decided again, not "in flight".
    assert!(matches!(
        w.engine.execute_payment(&payer(&cmd), &cmd).await.unwrap(),
        PaymentOutcome::Refused(_)
    ));
    w.engine
        .record_confirmation(
            &buyer_p(),
            &RecordConfirmation::new(
                key("rc-1"),
                Confirmation {
                    id: id("conf_1"),
                    buyer_id: examples::buyer(),
                    confirmed_by: common::human(),
                    confirmed_at: examples::now(),
                    expires_at: None,
                    snapshot_id: w.snapshot.id(),
                    scope: ConfirmationScope {
                        mandate_id: id("mandate_001"),
                        actions: [PaymentAction::Authorize].into_iter().collect(),
                        max_amount: eur("144.00"),
                    },
                    channel_ref: id("push:device_42"),
                },
            ),
        )
        .await
        .unwrap();
    let out = w.engine.execute_payment(&payer(&cmd), &cmd).await.unwrap();
    assert!(!out.is_replay());
    assert_eq!(attempt(&out).status, AttemptStatus::Authorized);
}

/// The snapshot's expiry bounds new spend and order commitment, not the settlement of a payment
/// authorized while it was current.
#[tokio::test]
async fn after_the_snapshot_expires_capture_settles_but_no_order_is_committed() {
    let w = world().await;
    let a = attempt(
        &w.engine
            .execute_payment(&agent_p(), &w.execute("pay-1"))
            .await
            .unwrap(),
    );
    w.mem
        .clock
        .set(w.snapshot.expires_at() + chrono::Duration::minutes(5));
    let cap = w
        .engine
        .capture(&agent_p(), &agent_capture("cap-1", &a.id, None))
        .await
        .unwrap();
    assert_eq!(attempt(&cap).status, AttemptStatus::Captured);
    let out = w
        .engine
        .commit_order(
            &agent_p(),
            &CommitOrder::new(
                key("order-1"),
                a.id.clone(),
                examples::valid_checkout(w.snapshot.id()),
            ),
        )
        .await
        .unwrap();
    let OrderOutcome::Failed {
        decision, recovery, ..
    } = out
    else {
        panic!("{out:?}")
    };
    assert!(decision.unwrap().has(BlockerCode::SnapshotExpired));
    assert_eq!(recovery.attempt.status, AttemptStatus::Refunded);
    // A new authorization on the expired snapshot is stale.
    let PaymentOutcome::Refused(d) = w
        .engine
        .execute_payment(&agent_p(), &w.execute("pay-2"))
        .await
        .unwrap()
    else {
        panic!()
    };
    assert!(d.has(BlockerCode::SnapshotExpired));
}

/// A crash between the PSP call and recording its answer leaves the attempt pending with its
/// hold and the key in flight. After the lease lapses, the same command takes the key over and
/// reconciles from the PSP instead of authorizing again (I3, I5).
#[tokio::test]
async fn a_retry_after_a_crash_mid_authorization_reconciles_instead_of_paying_twice() {
    use agent_mandate::domain::{AttemptEvent, Operation, PaymentAttempt};
    use agent_mandate::ports::{
        AuthorizeRequest, HoldRequest, IdempotencyScope, PaymentProvider as _,
    };
    for psp_saw_it in [true, false] {
        let w = world().await;
        let cmd = w.execute("pay-1");
        let store = &w.engine.ports().store;
        let now = examples::now();
        // What the crashed process had done: key in flight, attempt pending, hold placed.
        let scope = IdempotencyScope {
            actor_id: examples::agent().id,
            operation: "execute_payment".into(),
            key: cmd.key.clone(),
        };
        let fp = agent_mandate::domain::execution_fingerprint(
            &cmd.request,
            &cmd.checkout,
            cmd.credential.as_str(),
            false,
        );
        store
            .begin_idempotent(&scope, &fp, now, std::time::Duration::from_secs(30))
            .await
            .unwrap();
        let id = agent_mandate::engine::attempt_id_for(&examples::agent().id, &cmd.key);
        let fresh = PaymentAttempt::new(
            id.clone(),
            cmd.request.clone(),
            cmd.credential.clone(),
            common::id("checkout_789"),
            false,
            now,
        );
        let validated = fresh.apply(&AttemptEvent::Validate, now).unwrap();
        store.insert_attempt(&validated).await.unwrap();
        let pending = validated.apply(&AttemptEvent::Submit, now).unwrap();
        store
            .place_hold(&HoldRequest::on_chain(
                pending.hold_id(),
                cmd.request.amount,
                now,
                std::slice::from_ref(&w.mandate),
            ))
            .await
            .unwrap();
        store
            .update_attempt(&pending, validated.status)
            .await
            .unwrap();
        if psp_saw_it {
            w.psp
                .authorize(&AuthorizeRequest {
                    key: pending.provider_key(Operation::Authorize),
                    attempt_id: id.clone(),
                    amount: cmd.request.amount,
                    credential: cmd.credential.clone(),
                    capture: false,
                    snapshot_id: cmd.request.snapshot_id,
                    merchant_id: cmd.request.merchant_id.clone(),
                    buyer_id: cmd.request.buyer_id.clone(),
                })
                .await
                .unwrap();
        }
        // While the lease runs, the key is in flight and a sweep leaves the attempt alone.
        assert!(matches!(
            w.engine.execute_payment(&payer(&cmd), &cmd).await,
            Err(EngineError::IdempotencyInFlight { .. })
        ));
        assert_eq!(
            w.engine.reconcile(&id).await.unwrap().status,
            AttemptStatus::PendingProviderResponse
        );
        w.mem.clock.advance(chrono::Duration::seconds(31));
        let out = w.engine.execute_payment(&payer(&cmd), &cmd).await.unwrap();
        let a = attempt(&out);
        let key = a.provider_key(Operation::Authorize);
        if psp_saw_it {
            assert_eq!(a.status, AttemptStatus::Authorized);
            assert_eq!(w.usage().await.held, eur("144.00"));
        } else {
            assert_eq!(a.status, AttemptStatus::Failed, "the PSP never saw it");
            assert_eq!(w.usage().await.held, eur("0.00"));
        }
        assert!(w.psp.authorizations_for(&key) <= 1);
        assert_eq!(
            w.psp.calls(Op::Authorize),
            u32::from(psp_saw_it),
            "no second authorization"
        );
        // The record is complete now: the same command is a replay.
        assert!(w
            .engine
            .execute_payment(&payer(&cmd), &cmd)
            .await
            .unwrap()
            .is_replay());
    }
}

/// A crash after the hold was placed but before the attempt was marked submitted: the retry
/// releases that hold, holds anew and authorizes once.
#[tokio::test]
async fn a_retry_after_a_crash_between_hold_and_submit_releases_the_orphan_hold() {
    use agent_mandate::domain::{AttemptEvent, PaymentAttempt};
    use agent_mandate::ports::HoldRequest;
    let w = world().await;
    let cmd = w.execute("pay-1");
    let store = &w.engine.ports().store;
    let now = examples::now();
    let id = agent_mandate::engine::attempt_id_for(&examples::agent().id, &cmd.key);
    let fresh = PaymentAttempt::new(
        id.clone(),
        cmd.request.clone(),
        cmd.credential.clone(),
        common::id("checkout_789"),
        false,
        now,
    );
    let validated = fresh.apply(&AttemptEvent::Validate, now).unwrap();
    store.insert_attempt(&validated).await.unwrap();
    let submitted = validated.apply(&AttemptEvent::Submit, now).unwrap();
    store
        .place_hold(&HoldRequest::on_chain(
            submitted.hold_id(),
            cmd.request.amount,
            now,
            std::slice::from_ref(&w.mandate),
        ))
        .await
        .unwrap();
    assert_eq!(w.usage().await.held, eur("144.00"));
    let out = w.engine.execute_payment(&payer(&cmd), &cmd).await.unwrap();
    let a = attempt(&out);
    assert_eq!(a.status, AttemptStatus::Authorized);
    assert_eq!(w.usage().await.held, eur("144.00"), "one hold, not two");
    assert_eq!(w.psp.calls(Op::Authorize), 1);
    let orphan = store.hold(&submitted.hold_id()).await.unwrap().unwrap();
    assert_eq!(orphan.state, agent_mandate::ports::HoldState::Released);
}
