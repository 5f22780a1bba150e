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

/// Idempotency records (I3): `Started` for a new key; `InFlight` with the lease's remainder
/// for the same fingerprint while the lease runs; `Conflict` naming the recorded fingerprint
/// for another; a lapsed lease is taken over; a completed record is replayed until its
/// retention ends, then treated as absent; `abandon` frees an in-flight key (and is a no-op
/// otherwise); `complete` of an unknown key is `NotFound`; keys are scoped by actor and
/// operation.
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

    assert_eq!(
        begin(&s, fp1, 0).await,
        Begin::Started,
        "store rule idempotency: a new key"
    );
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
    assert_eq!(
        begin(&scope("other-agent", "execute_payment"), fp2, 10).await,
        Begin::Started,
        "store rule idempotency: keys are scoped by actor"
    );
    assert_eq!(
        begin(&scope("agent", "revoke_mandate"), fp2, 10).await,
        Begin::Started,
        "store rule idempotency: keys are scoped by operation"
    );
    assert_eq!(
        begin(&s, fp1, 30).await,
        Begin::Started,
        "store rule idempotency: a lapsed lease is taken over"
    );

    let result = StoredResult::Attempt(parse(&format!("{tag}-attempt")));
    store
        .complete_idempotent(&s, &result, t(3600))
        .await
        .unwrap_or_else(|e| panic!("store rule complete_idempotent: {e}"));
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
    store
        .abandon_idempotent(&s)
        .await
        .unwrap_or_else(|e| panic!("store rule abandon_idempotent: {e}"));
    assert_eq!(
        begin(&s, fp1, 3599).await,
        Begin::Replay(result),
        "store rule idempotency: kept until its retention ends (abandon only drops in-flight \
         records)"
    );
    assert_eq!(
        begin(&s, fp2, 3600).await,
        Begin::Started,
        "store rule idempotency: absent once the retention ended"
    );
    store
        .abandon_idempotent(&s)
        .await
        .unwrap_or_else(|e| panic!("store rule abandon_idempotent: {e}"));
    assert_eq!(
        begin(&s, fp1, 3601).await,
        Begin::Started,
        "store rule idempotency: an abandoned key is free"
    );
    for _ in 0..2 {
        store
            .abandon_idempotent(&scope("nobody", "execute_payment"))
            .await
            .unwrap_or_else(|e| panic!("store rule abandon_idempotent: an unknown key: {e}"));
    }
    not_found(
        "complete_idempotent: an unknown key",
        store
            .complete_idempotent(
                &scope("nobody", "execute_payment"),
                &StoredResult::Done,
                t(0),
            )
            .await,
    );
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
