//! The payment's unit of work: `payment_inputs` and `open_payment` (I2, I3, I15).

use super::*;
use crate::ports::{InputsQuery, OpenPayment, Opened};

/// `payment_inputs` reads what the single reads would; `open_payment` writes the record, the
/// submitted attempt, its hold and its events all together, answers `AttemptExists` and the
/// key's answer (`InFlight`, `Conflict`) without writing anything, and after a hold refused
/// at a limit places no hold and leaves the key free (the attempt is absent, or present as
/// validated without a hold for a store that writes step by step).
pub async fn store_payment_unit_of_work(store: &dyn Store) {
    let tag = tag();
    let root = root(
        &format!("{tag}-root"),
        &Caps {
            lifetime: Some("100.00"),
            ..Caps::default()
        },
    );
    let leaf = child(
        &format!("{tag}-leaf"),
        &root,
        &Caps {
            lifetime: Some("100.00"),
            ..Caps::default()
        },
    );
    insert_all(store, &[&root, &leaf]).await;
    let chain = vec![root.clone(), leaf.clone()];
    let snapshot = examples::travel_backpack_snapshot();
    let actor = examples::agent().id;
    let buyer = examples::buyer();
    let now = t(0);
    let lease = StdDuration::from_secs(60);
    let fp = |c: &str| parse::<ContentDigest>(&format!("sha256:{}", c.repeat(64)));
    let scope = |k: &str| IdempotencyScope {
        actor_id: actor.clone(),
        operation: "execute_payment".into(),
        key: parse::<IdempotencyKey>(&format!("{tag}-{k}")),
    };
    let ids = |n: &str| parse::<AttemptId>(&format!("{tag}-{n}"));
    let attempts = |n: &str| {
        let fresh = attempts::new_attempt(&ids(n), leaf.id(), now);
        let validated = fresh
            .apply(&AttemptEvent::Validate, now)
            .unwrap_or_else(|e| panic!("store rule fixture: {e}"));
        let submitted = validated
            .apply(&AttemptEvent::Submit, now)
            .unwrap_or_else(|e| panic!("store rule fixture: {e}"));
        (validated, submitted)
    };
    let inputs = |n: &'static str| {
        let attempt_id = ids(n);
        let (actor, buyer, leaf_id) = (actor.clone(), buyer.clone(), leaf.id().clone());
        let snapshot_id = snapshot.id();
        async move {
            store
                .payment_inputs(&InputsQuery {
                    attempt_id: &attempt_id,
                    mandate_id: &leaf_id,
                    actor_id: &actor,
                    buyer_id: &buyer,
                    snapshot_id: &snapshot_id,
                    now,
                    usage: true,
                    confirmations: true,
                })
                .await
                .unwrap_or_else(|e| panic!("store rule payment_inputs: {e}"))
        }
    };

    let rule = "payment_inputs: what the single reads answer";
    let before = inputs("a1").await;
    assert!(
        before.attempt.is_none(),
        "store rule {rule}: no attempt yet"
    );
    assert_eq!(
        before.chain, chain,
        "store rule {rule}: the chain, root first"
    );
    assert_eq!(
        before.usage.len(),
        2,
        "store rule {rule}: usage of each level"
    );
    assert!(
        before
            .usage
            .iter()
            .all(|u| u.held.is_zero() && u.spent.is_zero()),
        "store rule {rule}: nothing held yet"
    );
    assert!(
        before.suspensions.actors.is_empty() && before.suspensions.buyers.is_empty(),
        "store rule {rule}: nobody suspended"
    );

    let event = |n: &str| AuditEvent {
        at: now,
        kind: AuditKind::OrderFailed {
            attempt_id: ids(n),
            reason: "store suite".into(),
        },
    };
    let open = |scope: &IdempotencyScope,
                validated: &PaymentAttempt,
                submitted: &PaymentAttempt,
                amount: &str,
                fingerprint: &ContentDigest| {
        let hold = HoldRequest::on_chain(submitted.hold_id(), eur(amount), now, &chain);
        let created = vec![event("created")];
        let later = vec![event("submitted")];
        let (scope, validated, submitted, fingerprint, snapshot) = (
            scope.clone(),
            validated.clone(),
            submitted.clone(),
            *fingerprint,
            snapshot.clone(),
        );
        let actor = actor.clone();
        async move {
            store
                .open_payment(&OpenPayment {
                    scope: &scope,
                    fingerprint: &fingerprint,
                    now,
                    lease,
                    validated: &validated,
                    submitted: &submitted,
                    hold: &hold,
                    snapshot: &snapshot,
                    reset_blocks: Some(&actor),
                    created: &created,
                    submitted_events: &later,
                })
                .await
        }
    };

    let rule = "open_payment: record, attempt and hold together";
    let (v1, s1) = attempts("a1");
    let fence = match open(&scope("k1"), &v1, &s1, "60.00", &fp("a")).await {
        Ok(Opened::Started { fence, usage }) => {
            assert_eq!(usage.len(), 2, "store rule {rule}: usage after, per level");
            assert_eq!(
                usage[1].held,
                eur("60.00"),
                "store rule {rule}: the root holds it"
            );
            fence
        }
        other => panic!("store rule {rule}: Started, got {other:?}"),
    };
    store
        .check_fence(&fence)
        .await
        .unwrap_or_else(|e| panic!("store rule {rule}: the record is in flight: {e}"));
    match store.attempt(&s1.id).await {
        Ok(Some(a)) => assert_eq!(a, s1, "store rule {rule}: the attempt as submitted"),
        other => panic!("store rule {rule}: the attempt, got {other:?}"),
    }
    match store.hold(&s1.hold_id()).await {
        Ok(Some(h)) => assert_eq!(h.state, HoldState::Held, "store rule {rule}: held"),
        other => panic!("store rule {rule}: the hold, got {other:?}"),
    }
    match store.snapshot(&snapshot.id()).await {
        Ok(Some(_)) => {}
        other => panic!("store rule {rule}: the snapshot is kept, got {other:?}"),
    }
    let after = inputs("a1").await;
    assert_eq!(
        after.attempt.as_ref(),
        Some(&s1),
        "store rule payment_inputs: the attempt"
    );
    assert_eq!(
        after.usage[0].held,
        eur("60.00"),
        "store rule payment_inputs: held"
    );

    let rule = "open_payment: an existing attempt writes nothing";
    match open(&scope("k-other"), &v1, &s1, "1.00", &fp("b")).await {
        Ok(Opened::AttemptExists) => {}
        other => panic!("store rule {rule}: AttemptExists, got {other:?}"),
    }
    match store
        .begin_idempotent(&scope("k-other"), &fp("b"), now, lease)
        .await
    {
        Ok(Begin::Started(f)) => {
            let _ = store.abandon_idempotent(&f).await;
        }
        other => panic!("store rule {rule}: the key was not started, got {other:?}"),
    }

    let rule = "open_payment: a key in flight or in conflict writes nothing";
    let (v2, s2) = attempts("a2");
    for (fingerprint, want) in [(fp("a"), "in flight"), (fp("c"), "conflict")] {
        let answer = open(&scope("k1"), &v2, &s2, "1.00", &fingerprint).await;
        let ok = matches!(
            (&answer, want),
            (Ok(Opened::Key(Begin::InFlight { .. })), "in flight")
                | (Ok(Opened::Key(Begin::Conflict { .. })), "conflict")
        );
        assert!(ok, "store rule {rule}: {want}, got {answer:?}");
        assert!(
            matches!(store.attempt(&s2.id).await, Ok(None)),
            "store rule {rule}: no attempt"
        );
        assert!(
            matches!(store.hold(&s2.hold_id()).await, Ok(None)),
            "store rule {rule}: no hold"
        );
    }

    let rule = "open_payment: a refused hold holds nothing and frees the key";
    let (v3, s3) = attempts("a3");
    match open(&scope("k3"), &v3, &s3, "50.00", &fp("d")).await {
        Err(HoldError::Refused { .. }) => {}
        other => panic!("store rule {rule}: Refused, got {other:?}"),
    }
    assert!(
        matches!(store.hold(&s3.hold_id()).await, Ok(None)),
        "store rule {rule}: no hold"
    );
    match store.attempt(&s3.id).await {
        Ok(None) => {}
        Ok(Some(a)) => assert_eq!(
            a.status,
            AttemptStatus::AuthorityValidated,
            "store rule {rule}: at most the validated attempt"
        ),
        Err(e) => panic!("store rule {rule}: {e}"),
    }
    match store
        .begin_idempotent(&scope("k3"), &fp("d"), now, lease)
        .await
    {
        Ok(Begin::Started(f)) => {
            let _ = store.abandon_idempotent(&f).await;
        }
        other => panic!("store rule {rule}: the key is free, got {other:?}"),
    }
    let usage = store
        .usage(&chain, now)
        .await
        .unwrap_or_else(|e| panic!("store rule {rule}: {e}"));
    assert_eq!(
        usage[0].held,
        eur("60.00"),
        "store rule {rule}: only the first hold"
    );
    let _ = store.abandon_idempotent(&fence).await;
}
