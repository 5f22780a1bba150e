//! `Store::change_attempt` on the durable stores is all or nothing: the attempt's
//! compare-and-set update, its hold operations and the completion of the command's
//! idempotency record commit together, or (on any error) none of them does.
#![cfg(all(feature = "sqlite", feature = "testkit"))]

mod common;

use std::sync::Arc;
use std::time::Duration;

use agent_mandate::domain::{
    examples, AttemptEvent, AttemptStatus, AuditEvent, AuditKind, ContentDigest, Currency,
    HoldAction, Money, PaymentAttempt, ProviderReport, ProviderStatus,
};
use agent_mandate::engine::attempt_id_for;
use agent_mandate::ports::{
    AttemptChange, Begin, Completion, Fence, HoldOp, HoldRequest, HoldState, IdempotencyScope,
    Store, StoreError, StoredResult,
};
use common::backends::Backend;
use common::engine::key;

fn eur(a: &str) -> Money {
    Money::parse(a, Currency::EUR).expect("amount")
}

/// An authorized attempt with its hold, and the in-flight record of its command.
async fn authorized(store: &Arc<dyn Store>, tag: &str) -> (PaymentAttempt, Fence, ContentDigest) {
    let mut spec = examples::travel_backpack_mandate().spec().clone();
    spec.id = format!("mandate_{tag}").parse().expect("id");
    let mandate = agent_mandate::domain::Mandate::new(spec).expect("mandate");
    store.insert_mandate(&mandate).await.expect("mandate");
    let k = key(&format!("pay-{tag}"));
    let now = examples::now();
    let scope = IdempotencyScope {
        actor_id: examples::agent().id,
        operation: "execute_payment".into(),
        key: k.clone(),
    };
    let fp = ContentDigest::parse(&format!("sha256:{}", "ab".repeat(32))).expect("digest");
    let Begin::Started(fence) = store
        .begin_idempotent(&scope, &fp, now, Duration::from_secs(30))
        .await
        .expect("begin")
    else {
        panic!("a new key starts")
    };
    let snapshot = examples::travel_backpack_snapshot();
    let mut request = examples::authorize_request(&snapshot);
    request.mandate_id = mandate.id().clone();
    let a = PaymentAttempt::new(
        attempt_id_for(&examples::agent().id, &k),
        request,
        "cred_1".parse().expect("ref"),
        "checkout_789".parse().expect("id"),
        false,
        now,
    );
    let a = a.apply(&AttemptEvent::Validate, now).expect("validate");
    store.insert_attempt(&a).await.expect("insert");
    let pending = a.apply(&AttemptEvent::Submit, now).expect("submit");
    store
        .place_hold(&HoldRequest::on_chain(
            pending.hold_id(),
            eur("144.00"),
            now,
            std::slice::from_ref(&mandate),
        ))
        .await
        .expect("hold");
    store
        .update_attempt(&pending, a.status)
        .await
        .expect("pending");
    let report = ProviderReport {
        reference: Some("pi_1".parse().expect("ref")),
        status: ProviderStatus::Authorized,
        authorized: eur("144.00"),
        captured: eur("0.00"),
        refunded: eur("0.00"),
        decline_code: None,
    };
    let authorized = pending
        .apply(&AttemptEvent::Report(report), now)
        .expect("authorized");
    store
        .update_attempt(&authorized, pending.status)
        .await
        .expect("authorized");
    (authorized, fence, fp)
}

/// The test's own staged events (the marker is in the attempt id of a hold event).
async fn staged_for(store: &std::sync::Arc<dyn Store>, attempt: &PaymentAttempt) -> usize {
    store
        .staged_audit(10_000)
        .await
        .expect("staged")
        .iter()
        .filter(|e| {
            matches!(&e.event.kind, AuditKind::Hold { attempt_id, .. } if *attempt_id == attempt.id)
        })
        .count()
}

fn hold_event(attempt: &PaymentAttempt) -> AuditEvent {
    AuditEvent {
        at: examples::now(),
        kind: AuditKind::Hold {
            attempt_id: attempt.id.clone(),
            action: HoldAction::Committed,
            amount: eur("144.00"),
            mandate_ids: Vec::new(),
            policy: None,
        },
    }
}

async fn all_or_nothing(backend: Backend, dir: &std::path::Path) {
    let (store, _) = backend.open(&dir.join("state.db")).await;
    let now = examples::now();

    // A change whose hold operation fails (the hold was released behind its back): nothing
    // of it commits, neither the attempt nor the completion.
    let (a, fence, fp) = authorized(&store, "fails").await;
    let scope = fence.scope.clone();
    store.release_hold(&a.hold_id()).await.expect("release");
    let captured = a
        .apply(&AttemptEvent::Capture(eur("144.00")), now)
        .expect("capture");
    let completion = Completion {
        fence: fence.clone(),
        result: StoredResult::Attempt(a.id.clone()),
        retain_until: now + chrono::Duration::days(1),
    };
    let hold_id = a.hold_id();
    let err = store
        .change_attempt(&AttemptChange {
            next: &captured,
            expected: a.status,
            hold_id: &hold_id,
            holds: &[HoldOp::Commit(eur("144.00"))],
            fence: Some(&fence),
            completion: Some(&completion),
            events: &[hold_event(&a)],
        })
        .await
        .expect_err("the hold is released");
    assert_eq!(
        staged_for(&store, &a).await,
        0,
        "I15: the events of a change that rolled back are not staged"
    );
    assert!(matches!(err, StoreError::Conflict { .. }), "{err:?}");
    let stored = store.attempt(&a.id).await.expect("read").expect("attempt");
    assert_eq!(
        stored.status,
        AttemptStatus::Authorized,
        "the update rolled back"
    );
    assert!(
        matches!(
            store
                .begin_idempotent(&scope, &fp, now, Duration::from_secs(30))
                .await
                .expect("begin"),
            Begin::InFlight { .. }
        ),
        "the record was not completed"
    );

    // The same change on a hold that is held: all of it commits.
    let (a, fence, fp) = authorized(&store, "commits").await;
    let scope = fence.scope.clone();
    let captured = a
        .apply(&AttemptEvent::Capture(eur("144.00")), now)
        .expect("capture");
    let completion = Completion {
        fence: fence.clone(),
        result: StoredResult::Attempt(a.id.clone()),
        retain_until: now + chrono::Duration::days(1),
    };
    let hold_id = a.hold_id();
    store
        .change_attempt(&AttemptChange {
            next: &captured,
            expected: a.status,
            hold_id: &hold_id,
            holds: &[HoldOp::Commit(eur("144.00"))],
            fence: Some(&fence),
            completion: Some(&completion),
            events: &[hold_event(&a)],
        })
        .await
        .expect("the change commits");
    assert_eq!(
        staged_for(&store, &a).await,
        1,
        "I15: the events of a change commit with it"
    );
    let stored = store.attempt(&a.id).await.expect("read").expect("attempt");
    assert_eq!(stored.status, AttemptStatus::Captured);
    let hold = store.hold(&hold_id).await.expect("read").expect("hold");
    assert_eq!(hold.state, HoldState::Committed);
    assert_eq!(hold.committed, eur("144.00"));
    assert_eq!(
        store
            .begin_idempotent(&scope, &fp, now, Duration::from_secs(30))
            .await
            .expect("begin"),
        Begin::Replay(StoredResult::Attempt(a.id.clone())),
        "the record completed with the change"
    );

    // A lost compare-and-set changes nothing either.
    let again = store
        .change_attempt(&AttemptChange {
            next: &captured,
            expected: AttemptStatus::Authorized,
            hold_id: &hold_id,
            holds: &[HoldOp::Release],
            fence: None,
            completion: None,
            events: &[],
        })
        .await;
    assert!(
        matches!(again, Err(StoreError::Conflict { .. })),
        "{again:?}"
    );
    let hold = store.hold(&hold_id).await.expect("read").expect("hold");
    assert_eq!(hold.state, HoldState::Committed, "the release did not run");
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("am-atomic-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    dir
}

#[tokio::test]
async fn sqlite_change_attempt_is_all_or_nothing() {
    let dir = temp_dir("sqlite");
    all_or_nothing(Backend::Sqlite, &dir).await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[cfg(feature = "postgres")]
#[tokio::test]
async fn postgres_change_attempt_is_all_or_nothing() {
    let Some(url) = common::backends::database_url() else {
        return;
    };
    let backend = Backend::Postgres {
        url,
        schema: format!("atomic_{}", std::process::id()),
    };
    let dir = temp_dir("pg");
    all_or_nothing(backend.clone(), &dir).await;
    backend.drop_schema().await;
    let _ = std::fs::remove_dir_all(&dir);
}
