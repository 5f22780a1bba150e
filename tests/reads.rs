//! Engine reads: what a service shows, to whom (the same principals as the commands), and the
//! same `NotFound` for "not yours" as for "does not exist".
#![cfg(feature = "testkit")]

mod common;

use agent_mandate::domain::examples;
use agent_mandate::domain::{AttemptStatus, Principal};
use agent_mandate::engine::{EngineError, MAX_AUDIT_SEGMENT};
use common::engine::world;
use common::principals::{agent_p, buyer_p, operator_p, system_p};
use common::{eur, id};

fn mallory() -> Principal {
    Principal::Buyer(id("buyer_mallory"))
}

#[tokio::test]
async fn attempts_are_read_by_their_actor_buyer_operators_and_systems_only() {
    let w = world().await;
    let out = w
        .engine
        .execute_payment(&agent_p(), &w.execute("pay-1"))
        .await
        .unwrap();
    let a = out.attempt().unwrap().clone();
    for p in [agent_p(), buyer_p(), operator_p(), system_p()] {
        let read = w.engine.attempt(&p, &a.id).await.unwrap();
        assert_eq!(read.status, AttemptStatus::Authorized, "{p}");
    }
    for p in [mallory(), Principal::Agent(id("agent_other"))] {
        let err = w.engine.attempt(&p, &a.id).await.unwrap_err();
        assert!(matches!(err, EngineError::NotFound { .. }), "{p}: {err:?}");
    }
    let missing = w.engine.attempt(&buyer_p(), &id("att_missing")).await;
    assert!(matches!(missing, Err(EngineError::NotFound { .. })));
}

#[tokio::test]
async fn mandates_and_their_usage_are_read_by_the_buyer_and_the_chains_actors() {
    let w = world().await;
    w.engine
        .execute_payment(&agent_p(), &w.execute("pay-1"))
        .await
        .unwrap();
    for p in [buyer_p(), agent_p(), operator_p(), system_p()] {
        let m = w.engine.mandate(&p, w.mandate.id()).await.unwrap();
        assert_eq!(m.id(), w.mandate.id(), "{p}");
        let u = w.engine.chain_usage(&p, w.mandate.id()).await.unwrap();
        assert_eq!(u.chain.len(), 1);
        assert_eq!(
            u.usage[0].held,
            eur("144.00"),
            "{p}: the authorization is held"
        );
    }
    for p in [mallory(), Principal::Agent(id("agent_other"))] {
        let err = w.engine.mandate(&p, w.mandate.id()).await.unwrap_err();
        assert!(matches!(err, EngineError::NotFound { .. }), "{p}: {err:?}");
        let err = w.engine.chain_usage(&p, w.mandate.id()).await.unwrap_err();
        assert!(matches!(err, EngineError::NotFound { .. }), "{p}: {err:?}");
    }
}

#[tokio::test]
async fn the_trail_and_open_attempts_are_for_operators_and_systems() {
    let w = world().await;
    w.engine
        .execute_payment(&agent_p(), &w.execute("pay-1"))
        .await
        .unwrap();
    w.engine.flush_audit().await.unwrap();
    for p in [operator_p(), system_p()] {
        let seg = w.engine.audit_segment(&p, 1, 3).await.unwrap();
        assert_eq!(seg.len(), 3, "{p}");
        assert_eq!(seg[0].seq, 1);
        assert!(agent_mandate::domain::verify_chain(
            &seg,
            1,
            agent_mandate::domain::AuditHash::GENESIS
        )
        .is_ok());
        let all = w.engine.audit_segment(&p, 0, usize::MAX).await.unwrap();
        assert!(all.len() <= MAX_AUDIT_SEGMENT && all.len() > 3);
        assert!(w.engine.open_attempts(&p, 10).await.unwrap().is_empty());
    }
    for p in [agent_p(), buyer_p(), mallory()] {
        assert!(matches!(
            w.engine.audit_segment(&p, 1, 10).await,
            Err(EngineError::NotPermitted { .. })
        ));
        assert!(matches!(
            w.engine.open_attempts(&p, 10).await,
            Err(EngineError::NotPermitted { .. })
        ));
    }
    let _ = examples::buyer();
}

#[tokio::test]
async fn an_ambiguous_attempt_is_listed_open_until_reconciled() {
    let w = world().await;
    w.psp
        .inject(None, agent_mandate::testkit::Fault::TimeoutAfterEffect);
    let out = w
        .engine
        .execute_payment(&agent_p(), &w.execute("pay-1"))
        .await
        .unwrap();
    let a = out.attempt().unwrap().clone();
    assert_eq!(a.status, AttemptStatus::Ambiguous);
    let open = w.engine.open_attempts(&operator_p(), 10).await.unwrap();
    assert_eq!(open.iter().map(|a| &a.id).collect::<Vec<_>>(), vec![&a.id]);
    w.psp.clear_faults();
    w.engine.reconcile(&a.id).await.unwrap();
    assert!(w
        .engine
        .open_attempts(&operator_p(), 10)
        .await
        .unwrap()
        .is_empty());
}
