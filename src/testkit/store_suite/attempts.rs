//! Payment attempts, idempotency records, orders and the control counters (I3, I4).

use super::*;

/// A new attempt for `id` under `mandate`.
pub(super) fn new_attempt(
    id: &AttemptId,
    mandate: &MandateId,
    created_at: DateTime<Utc>,
) -> PaymentAttempt {
    let mut request = examples::authorize_request(&examples::travel_backpack_snapshot());
    request.mandate_id = mandate.clone();
    PaymentAttempt::new(
        id.clone(),
        request,
        parse::<CredentialRef>("cred_store_suite"),
        parse::<CheckoutId>("checkout_store_suite"),
        false,
        created_at,
    )
}

/// Payment attempts: insert (a taken id is a `Conflict`), read back, compare-and-set on the
/// status, and `attempts_in` (only the statuses asked, oldest first, at most `limit`).
pub async fn store_attempts(store: &dyn Store) {
    let tag = tag();
    let id = |n: &str| parse::<AttemptId>(&format!("{tag}-{n}"));
    let m = root(&format!("{tag}-mandate"), &Caps::default());
    insert_all(store, &[&m]).await;
    let base = t(-3600);
    let a1 = new_attempt(&id("a1"), m.id(), base);
    let a2 = new_attempt(&id("a2"), m.id(), base - Duration::seconds(10));
    let a3 = new_attempt(&id("a3"), m.id(), base + Duration::seconds(10));
    let a4 = new_attempt(&id("a4"), m.id(), base - Duration::seconds(20));
    for a in [&a1, &a2, &a3, &a4] {
        store
            .insert_attempt(a)
            .await
            .unwrap_or_else(|e| panic!("store rule insert_attempt: {e}"));
    }
    conflict(
        "insert_attempt: a taken id",
        store.insert_attempt(&a1).await,
    );
    match store.attempt(&a1.id).await {
        Ok(Some(a)) => assert_eq!(a, a1, "store rule attempt: reads back what was stored"),
        other => panic!("store rule attempt: the stored attempt, got {other:?}"),
    }
    assert!(
        matches!(store.attempt(&id("none")).await, Ok(None)),
        "store rule attempt: an unknown id is None"
    );

    let rule = "update_attempt: compare and set";
    let validate = |a: &PaymentAttempt| {
        a.apply(&AttemptEvent::Validate, t(0))
            .unwrap_or_else(|e| panic!("store rule fixture: {e}"))
    };
    let v1 = validate(&a1);
    store
        .update_attempt(&v1, AttemptStatus::NotStarted)
        .await
        .unwrap_or_else(|e| panic!("store rule {rule}: {e}"));
    conflict(
        rule,
        store.update_attempt(&v1, AttemptStatus::NotStarted).await,
    );
    match store.attempt(&a1.id).await {
        Ok(Some(a)) => assert_eq!(a, v1, "store rule {rule}: the new state is stored"),
        other => panic!("store rule {rule}: the stored attempt, got {other:?}"),
    }
    let ghost = new_attempt(&id("ghost"), m.id(), base);
    not_found(
        "update_attempt: an unknown attempt",
        store
            .update_attempt(&ghost, AttemptStatus::NotStarted)
            .await,
    );
    for a in [&a2, &a3] {
        store
            .update_attempt(&validate(a), AttemptStatus::NotStarted)
            .await
            .unwrap_or_else(|e| panic!("store rule {rule}: {e}"));
    }

    let rule = "attempts_in";
    let wanted = [AttemptStatus::AuthorityValidated];
    let all = store
        .attempts_in(&wanted, 1_000_000)
        .await
        .unwrap_or_else(|e| panic!("store rule {rule}: {e}"));
    assert!(
        all.iter().all(|a| wanted.contains(&a.status)),
        "store rule {rule}: only the statuses asked for"
    );
    assert!(
        all.windows(2).all(|w| w[0].created_at <= w[1].created_at),
        "store rule {rule}: oldest first"
    );
    let ours: Vec<&AttemptId> = all
        .iter()
        .map(|a| &a.id)
        .filter(|i| [&a1.id, &a2.id, &a3.id, &a4.id].contains(i))
        .collect();
    assert_eq!(
        ours,
        vec![&a2.id, &a1.id, &a3.id],
        "store rule {rule}: every attempt in the statuses, oldest first"
    );
    let first = store
        .attempts_in(&wanted, 1)
        .await
        .unwrap_or_else(|e| panic!("store rule {rule}: {e}"));
    assert!(
        first.len() == 1 && first[0].created_at <= a2.created_at,
        "store rule {rule}: at most `limit`, the oldest"
    );
    assert!(
        matches!(store.attempts_in(&wanted, 0).await, Ok(v) if v.is_empty())
            && matches!(store.attempts_in(&[], 10).await, Ok(v) if v.is_empty()),
        "store rule {rule}: nothing for limit 0 or no status"
    );
}

/// Idempotency records (I3, I13): `Started` with a fence for a new key; `InFlight` with the
/// lease's remainder for the same fingerprint while the lease runs; `Conflict` naming the
/// recorded fingerprint for another; a lapsed lease is taken over under a new token and the
/// old holder is fenced out of completing, abandoning or checking; a completed record is
/// replayed until its retention ends, then treated as absent; `abandon` frees an in-flight
/// key and refuses a fence that does not hold it; keys are scoped by actor and operation;
/// tokens are never reused, also after an abandon.
pub async fn store_idempotency(store: &dyn Store) {
    let tag = tag();
    let scope = |actor: &str, operation: &str| IdempotencyScope {
        actor_id: parse(&format!("{tag}-{actor}")),
        operation: operation.to_string(),
        key: parse::<IdempotencyKey>(&format!("{tag}-key")),
    };
    let s = scope("agent", "execute_payment");
    let fp1 = ContentDigest::from_bytes([1; 32]);
    let fp2 = ContentDigest::from_bytes([2; 32]);
    let lease = StdDuration::from_secs(30);
    let begin = |s: &IdempotencyScope, fp: ContentDigest, at: i64| {
        let s = s.clone();
        async move {
            store
                .begin_idempotent(&s, &fp, t(at), lease)
                .await
                .unwrap_or_else(|e| panic!("store rule begin_idempotent: {e}"))
        }
    };
    let started = |b: Begin, rule: &str| -> Fence {
        match b {
            Begin::Started(fence) => fence,
            other => panic!("store rule idempotency: {rule}: started, got {other:?}"),
        }
    };
    let fenced = |r: Result<(), StoreError>, rule: &str| {
        assert!(
            matches!(r, Err(StoreError::Fenced { .. })),
            "store rule fencing: {rule}: Fenced, got {r:?}"
        );
    };

    let first = started(begin(&s, fp1, 0).await, "a new key");
    assert_eq!(
        first.scope, s,
        "store rule idempotency: the fence names its record"
    );
    store
        .check_fence(&first)
        .await
        .unwrap_or_else(|e| panic!("store rule fencing: the holder's fence holds: {e}"));
    match begin(&s, fp1, 10).await {
        Begin::InFlight { retry_after } => assert!(
            retry_after > StdDuration::from_secs(19) && retry_after <= StdDuration::from_secs(20),
            "store rule idempotency: retry after the rest of the lease, got {retry_after:?}"
        ),
        other => panic!("store rule idempotency: in flight, got {other:?}"),
    }
    assert_eq!(
        begin(&s, fp2, 10).await,
        Begin::Conflict { recorded: fp1 },
        "store rule idempotency: another fingerprint while in flight"
    );
    let other_actor = started(
        begin(&scope("other-agent", "execute_payment"), fp2, 10).await,
        "keys are scoped by actor",
    );
    let other_op = started(
        begin(&scope("agent", "revoke_mandate"), fp2, 10).await,
        "keys are scoped by operation",
    );
    let second = started(begin(&s, fp1, 30).await, "a lapsed lease is taken over");
    assert_ne!(
        second.token, first.token,
        "store rule fencing: a takeover gets a new token"
    );
    let result = StoredResult::Attempt(parse(&format!("{tag}-attempt")));
    fenced(
        store.check_fence(&first).await,
        "the old holder after a takeover",
    );
    fenced(
        store.complete_idempotent(&first, &result, t(3600)).await,
        "the old holder cannot complete",
    );
    fenced(
        store.abandon_idempotent(&first).await,
        "the old holder cannot abandon",
    );
    let wrong_scope = Fence {
        scope: scope("other-agent", "execute_payment"),
        token: second.token,
    };
    fenced(
        store.check_fence(&wrong_scope).await,
        "a token holds only its own record",
    );

    store
        .complete_idempotent(&second, &result, t(3600))
        .await
        .unwrap_or_else(|e| panic!("store rule complete_idempotent: {e}"));
    fenced(
        store.check_fence(&second).await,
        "a completed record holds no lease",
    );
    assert_eq!(
        begin(&s, fp1, 40).await,
        Begin::Replay(result.clone()),
        "store rule idempotency: a completed key replays"
    );
    assert_eq!(
        begin(&s, fp2, 40).await,
        Begin::Conflict { recorded: fp1 },
        "store rule idempotency: another fingerprint after completion"
    );
    fenced(
        store.abandon_idempotent(&second).await,
        "a completed record is not abandoned",
    );
    assert_eq!(
        begin(&s, fp1, 3599).await,
        Begin::Replay(result),
        "store rule idempotency: kept until its retention ends (abandon only drops in-flight \
         records)"
    );
    let third = started(
        begin(&s, fp2, 3600).await,
        "absent once the retention ended",
    );
    store
        .abandon_idempotent(&third)
        .await
        .unwrap_or_else(|e| panic!("store rule abandon_idempotent: {e}"));
    fenced(store.check_fence(&third).await, "an abandoned record");
    let fourth = started(begin(&s, fp1, 3601).await, "an abandoned key is free");
    for old in [&first, &second, &third] {
        assert_ne!(
            fourth.token, old.token,
            "store rule fencing: tokens are never reused"
        );
    }
    fenced(
        store.abandon_idempotent(&third).await,
        "the fence of an abandoned lease does not hold the key started again",
    );
    store
        .check_fence(&fourth)
        .await
        .unwrap_or_else(|e| panic!("store rule fencing: the new holder: {e}"));
    fenced(
        store
            .abandon_idempotent(&Fence {
                scope: scope("nobody", "execute_payment"),
                token: 1,
            })
            .await,
        "an unknown key",
    );
    fenced(
        store
            .complete_idempotent(
                &Fence {
                    scope: scope("nobody", "execute_payment"),
                    token: 1,
                },
                &StoredResult::Done,
                t(0),
            )
            .await,
        "complete_idempotent: an unknown key",
    );
    for f in [other_actor, other_op, fourth] {
        store
            .abandon_idempotent(&f)
            .await
            .unwrap_or_else(|e| panic!("store rule abandon_idempotent: {e}"));
    }
}

/// Purge (I3): records whose lease lapsed or whose retention ended by `now` are deleted and
/// counted; records still in force stay, and their holders' fences still hold.
pub async fn store_purge(store: &dyn Store) {
    let tag = tag();
    let scope = |name: &str| IdempotencyScope {
        actor_id: parse(&format!("{tag}-agent")),
        operation: "execute_payment".to_string(),
        key: parse::<IdempotencyKey>(&format!("{tag}-{name}")),
    };
    let fp = ContentDigest::from_bytes([7; 32]);
    let lease = StdDuration::from_secs(30);
    let begin = |name: &str, at: i64| {
        let s = scope(name);
        async move {
            match store.begin_idempotent(&s, &fp, t(at), lease).await {
                Ok(Begin::Started(fence)) => fence,
                other => panic!("store rule purge: begin: {other:?}"),
            }
        }
    };
    let lapsed = begin("lapsed", 0).await;
    let live = begin("live", 100).await;
    let done = begin("done", 0).await;
    let kept = begin("kept", 0).await;
    store
        .complete_idempotent(&done, &StoredResult::Done, t(50))
        .await
        .unwrap_or_else(|e| panic!("store rule purge: complete: {e}"));
    store
        .complete_idempotent(&kept, &StoredResult::Done, t(500))
        .await
        .unwrap_or_else(|e| panic!("store rule purge: complete: {e}"));
    let purged = store
        .purge_idempotent(t(110))
        .await
        .unwrap_or_else(|e| panic!("store rule purge: {e}"));
    assert!(
        purged >= 2,
        "store rule purge: the lapsed and the retained-out records are deleted, got {purged}"
    );
    assert!(
        matches!(
            store.check_fence(&lapsed).await,
            Err(StoreError::Fenced { .. })
        ),
        "store rule purge: a purged lease holds nothing"
    );
    store
        .check_fence(&live)
        .await
        .unwrap_or_else(|e| panic!("store rule purge: a live lease survives: {e}"));
    assert_eq!(
        store
            .begin_idempotent(&scope("kept"), &fp, t(110), lease)
            .await
            .ok(),
        Some(Begin::Replay(StoredResult::Done)),
        "store rule purge: a record within its retention is kept"
    );
    assert!(
        matches!(
            store
                .begin_idempotent(&scope("done"), &fp, t(110), lease)
                .await,
            Ok(Begin::Started(_))
        ),
        "store rule purge: a purged key starts afresh"
    );
    let _ = store.abandon_idempotent(&live).await;
}

/// The audit outbox (I15): staged events come back in staging order with increasing ids; an
/// acknowledgement drops exactly the events up to its id; an attempt change and an audited
/// write stage their events with them, and a refused change stages nothing.
pub async fn store_audit_outbox(store: &dyn Store) {
    let tag = tag();
    // Drain whatever earlier suites left.
    loop {
        let old = store
            .staged_audit(1000)
            .await
            .unwrap_or_else(|e| panic!("store rule outbox: staged: {e}"));
        let Some(last) = old.last() else { break };
        store
            .ack_audit(last.id)
            .await
            .unwrap_or_else(|e| panic!("store rule outbox: ack: {e}"));
    }
    let event = |n: u32| AuditEvent {
        at: t(i64::from(n)),
        kind: AuditKind::Suspension {
            party: Party::Actor(parse(&format!("{tag}-agent-{n}"))),
            suspended: true,
            by: crate::domain::Principal::Operator(parse(&format!("{tag}-operator"))),
            reason: format!("outbox check {n}"),
        },
    };
    store
        .stage_audit(&[event(1), event(2)])
        .await
        .unwrap_or_else(|e| panic!("store rule outbox: stage: {e}"));
    store
        .stage_audit(&[event(3)])
        .await
        .unwrap_or_else(|e| panic!("store rule outbox: stage: {e}"));
    let staged = store
        .staged_audit(10)
        .await
        .unwrap_or_else(|e| panic!("store rule outbox: staged: {e}"));
    assert_eq!(
        staged.iter().map(|e| e.event.clone()).collect::<Vec<_>>(),
        vec![event(1), event(2), event(3)],
        "store rule outbox: staging order"
    );
    assert!(
        staged.windows(2).all(|w| w[0].id < w[1].id),
        "store rule outbox: ids increase"
    );
    assert_eq!(
        store.staged_audit(1).await.ok().map(|v| v.len()),
        Some(1),
        "store rule outbox: the limit"
    );
    store
        .ack_audit(staged[1].id)
        .await
        .unwrap_or_else(|e| panic!("store rule outbox: ack: {e}"));
    let rest = store
        .staged_audit(10)
        .await
        .unwrap_or_else(|e| panic!("store rule outbox: staged: {e}"));
    assert_eq!(
        rest.iter().map(|e| e.event.clone()).collect::<Vec<_>>(),
        vec![event(3)],
        "store rule outbox: an ack drops exactly the events up to its id"
    );
    store
        .ack_audit(rest[0].id)
        .await
        .unwrap_or_else(|e| panic!("store rule outbox: ack: {e}"));

    // An audited write stages its events; a refused one stages nothing.
    let m = root(&format!("{tag}-mandate"), &Caps::default());
    store
        .write_audited(Write::InsertMandate(&m), &[event(4)])
        .await
        .unwrap_or_else(|e| panic!("store rule outbox: audited insert: {e}"));
    assert!(
        store
            .write_audited(Write::InsertMandate(&m), &[event(5)])
            .await
            .is_err(),
        "store rule outbox: a duplicate mandate is refused"
    );
    let staged = store
        .staged_audit(10)
        .await
        .unwrap_or_else(|e| panic!("store rule outbox: staged: {e}"));
    assert_eq!(
        staged.iter().map(|e| e.event.clone()).collect::<Vec<_>>(),
        vec![event(4)],
        "store rule outbox: the events of a refused write are not staged"
    );
    if let Some(last) = staged.last() {
        store
            .ack_audit(last.id)
            .await
            .unwrap_or_else(|e| panic!("store rule outbox: ack: {e}"));
    }
}

/// Orders (I4): one per attempt; a second insert for the attempt answers `Existing` with the
/// first and changes nothing.
pub async fn store_orders(store: &dyn Store) {
    let tag = tag();
    let snapshot = examples::travel_backpack_snapshot();
    let m = root(&format!("{tag}-mandate"), &Caps::default());
    insert_all(store, &[&m]).await;
    let attempt = new_attempt(&parse(&format!("{tag}-attempt")), m.id(), t(0));
    store
        .insert_attempt(&attempt)
        .await
        .unwrap_or_else(|e| panic!("store rule insert_attempt: {e}"));
    let order = |n: &str| Order {
        id: parse::<OrderId>(&format!("{tag}-{n}")),
        attempt_id: parse(&format!("{tag}-attempt")),
        snapshot_id: snapshot.id(),
        buyer_id: examples::buyer(),
        merchant_id: snapshot.merchant().merchant_id.clone(),
        amount: snapshot.total(),
        committed_at: t(0),
    };
    let first = order("order1");
    let rule = "insert_order: one per attempt";
    assert_eq!(
        store.insert_order(&first).await.ok(),
        Some(InsertOrder::Inserted),
        "store rule {rule}: the first is inserted"
    );
    for again in [first.clone(), order("order2")] {
        assert_eq!(
            store.insert_order(&again).await.ok(),
            Some(InsertOrder::Existing(first.clone())),
            "store rule {rule}: another insert answers the first order"
        );
    }
    assert_eq!(
        store.order_for(&first.attempt_id).await.ok(),
        Some(Some(first)),
        "store rule order_for: the attempt's order"
    );
    assert!(
        matches!(
            store.order_for(&parse(&format!("{tag}-none"))).await,
            Ok(None)
        ),
        "store rule order_for: none for an attempt without an order"
    );
}

/// Controls: `record_block` counts per actor, `reset_blocks` starts again at zero.
pub async fn store_controls(store: &dyn Store) {
    let tag = tag();
    let a: ActorId = parse(&format!("{tag}-a"));
    let b: ActorId = parse(&format!("{tag}-b"));
    let block = |actor: &ActorId| {
        let actor = actor.clone();
        async move {
            store
                .record_block(&actor)
                .await
                .unwrap_or_else(|e| panic!("store rule record_block: {e}"))
        }
    };
    for expected in 1..=3 {
        assert_eq!(
            block(&a).await,
            expected,
            "store rule record_block: counts in a row"
        );
    }
    assert_eq!(block(&b).await, 1, "store rule record_block: per actor");
    store
        .reset_blocks(&a)
        .await
        .unwrap_or_else(|e| panic!("store rule reset_blocks: {e}"));
    assert_eq!(block(&a).await, 1, "store rule reset_blocks: starts again");
    assert_eq!(
        block(&b).await,
        2,
        "store rule reset_blocks: only that actor"
    );
}
