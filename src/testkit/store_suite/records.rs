//! Mandates, the kill switch, confirmations and snapshots.

use super::*;

/// Mandates: insert (a taken id is a `Conflict`), read back, `chain` root first (empty for an
/// unknown leaf; `Corrupt` on the `mandates` table for a missing parent or a loop, unless the
/// store refused to insert such mandates), and
/// `update_mandate` as a compare-and-set on the status (`Conflict` when it moved, `NotFound`
/// for an unknown mandate).
pub async fn store_mandates(store: &dyn Store) {
    let tag = tag();
    let caps = Caps::default();
    let r = root(&format!("{tag}-root"), &caps);
    let c = child(&format!("{tag}-child"), &r, &caps);
    let l = child(&format!("{tag}-leaf"), &c, &caps);
    insert_all(store, &[&r, &c, &l]).await;
    conflict("insert_mandate: a taken id", store.insert_mandate(&r).await);

    let read = store
        .mandate(r.id())
        .await
        .unwrap_or_else(|e| panic!("store rule mandate: {e}"));
    assert_eq!(
        read.as_ref(),
        Some(&r),
        "store rule mandate: reads back what was stored"
    );
    let unknown: MandateId = parse(&format!("{tag}-unknown"));
    assert!(
        matches!(store.mandate(&unknown).await, Ok(None)),
        "store rule mandate: an unknown id is None"
    );

    let chain = store
        .chain(l.id())
        .await
        .unwrap_or_else(|e| panic!("store rule chain: {e}"));
    assert_eq!(
        chain,
        vec![r.clone(), c.clone(), l.clone()],
        "store rule chain: the chain runs from the root to the leaf"
    );
    match store.chain(r.id()).await {
        Ok(chain) => assert_eq!(chain, vec![r.clone()], "store rule chain: a root alone"),
        Err(e) => panic!("store rule chain: {e}"),
    }
    assert!(
        matches!(store.chain(&unknown).await, Ok(v) if v.is_empty()),
        "store rule chain: an unknown leaf has an empty chain"
    );

    // A missing parent, and parents that loop: a store may refuse to insert such mandates
    // (a foreign key); if it stores them, `chain` reports them as `Corrupt`.
    let mut orphan = spec(&format!("{tag}-orphan"), None, &caps);
    orphan.parent_id = Some(parse(&format!("{tag}-missing")));
    let orphan = Mandate::new(orphan).unwrap_or_else(|e| panic!("store rule fixture: {e}"));
    let (a_id, b_id) = (format!("{tag}-loop-a"), format!("{tag}-loop-b"));
    let mut a = spec(&a_id, None, &caps);
    a.parent_id = Some(parse(&b_id));
    let mut b = spec(&b_id, None, &caps);
    b.parent_id = Some(parse(&a_id));
    let a = Mandate::new(a).unwrap_or_else(|e| panic!("store rule fixture: {e}"));
    let b = Mandate::new(b).unwrap_or_else(|e| panic!("store rule fixture: {e}"));
    for (what, mandates) in [
        ("a missing parent", vec![&orphan]),
        ("parents that loop", vec![&a, &b]),
    ] {
        let mut stored = true;
        for m in &mandates {
            stored = stored && store.insert_mandate(m).await.is_ok();
        }
        if !stored {
            continue;
        }
        match store.chain(mandates[0].id()).await {
            Err(StoreError::Corrupt { table, .. }) => assert_eq!(
                table, "mandates",
                "store rule chain: {what} is Corrupt on the mandates table"
            ),
            other => panic!("store rule chain: {what} must be Corrupt, got {other:?}"),
        }
    }

    // Compare and set.
    let reason = parse("suite");
    let revoked = c
        .apply(&LifecycleEvent::Revoke { reason }, t(0))
        .unwrap_or_else(|e| panic!("store rule fixture: {e}"));
    store
        .update_mandate(&revoked, MandateStatus::Active)
        .await
        .unwrap_or_else(|e| panic!("store rule update_mandate: the expected status: {e}"));
    conflict(
        "update_mandate: the status moved",
        store.update_mandate(&revoked, MandateStatus::Active).await,
    );
    let read = store
        .mandate(c.id())
        .await
        .unwrap_or_else(|e| panic!("store rule mandate: {e}"));
    assert_eq!(
        read.map(|m| m.status()),
        Some(MandateStatus::Revoked),
        "store rule update_mandate: the new lifecycle is stored"
    );
    let ghost = Mandate::new(spec(&format!("{tag}-ghost"), None, &caps))
        .unwrap_or_else(|e| panic!("store rule fixture: {e}"));
    not_found(
        "update_mandate: an unknown mandate",
        store.update_mandate(&ghost, MandateStatus::Active).await,
    );
}

/// The kill switch: `suspensions` reports exactly the suspended parties among those asked
/// about, and lifting a suspension takes effect.
pub async fn store_suspensions(store: &dyn Store) {
    let tag = tag();
    let a1: ActorId = parse(&format!("{tag}-a1"));
    let a2: ActorId = parse(&format!("{tag}-a2"));
    let buyer: BuyerId = parse(&format!("{tag}-buyer"));
    let other: BuyerId = parse(&format!("{tag}-other"));
    let ask = |buyer: BuyerId| {
        let actors = vec![a1.clone(), a2.clone()];
        async move {
            store
                .suspensions(&actors, &buyer)
                .await
                .unwrap_or_else(|e| panic!("store rule suspensions: {e}"))
        }
    };
    let s = ask(buyer.clone()).await;
    assert!(
        s.actors.is_empty() && s.buyers.is_empty(),
        "store rule suspensions: nobody is suspended at first"
    );
    for party in [Party::Actor(a1.clone()), Party::Buyer(buyer.clone())] {
        store
            .set_suspended(&party, true)
            .await
            .unwrap_or_else(|e| panic!("store rule set_suspended: {e}"));
    }
    let s = ask(buyer.clone()).await;
    assert_eq!(
        (s.actors, s.buyers),
        (vec![a1.clone()], vec![buyer.clone()]),
        "store rule suspensions: only the suspended parties are reported"
    );
    let s = ask(other).await;
    assert!(
        s.buyers.is_empty(),
        "store rule suspensions: another buyer is not suspended"
    );
    store
        .set_suspended(&Party::Actor(a1.clone()), false)
        .await
        .unwrap_or_else(|e| panic!("store rule set_suspended: {e}"));
    let s = ask(buyer.clone()).await;
    assert!(
        s.actors.is_empty() && s.buyers == vec![buyer],
        "store rule suspensions: a lifted suspension is gone, the others stay"
    );
}

/// The credentials' kill switch ([`Party::Credentials`]) is kept like the other suspensions:
/// reported among the actors asked about, apart from their suspension (a switched-off
/// credential holder is not a suspended actor, nor the reverse), and gone when lifted. Every
/// engine over the store reads it, so it survives a restart and holds on every instance.
pub async fn store_credential_switch(store: &dyn Store) {
    let tag = tag();
    let a1: ActorId = parse(&format!("{tag}-holder-1"));
    let a2: ActorId = parse(&format!("{tag}-holder-2"));
    let a3: ActorId = parse(&format!("{tag}-holder-3"));
    let buyer: BuyerId = parse(&format!("{tag}-buyer"));
    let ask = || {
        let actors = vec![a1.clone(), a2.clone()];
        let buyer = buyer.clone();
        async move {
            store
                .suspensions(&actors, &buyer)
                .await
                .unwrap_or_else(|e| panic!("store rule suspensions: {e}"))
        }
    };
    assert!(
        ask().await.credentials.is_empty(),
        "store rule credential switch: nobody's credentials are off at first"
    );
    for party in [
        Party::Credentials(a1.clone()),
        Party::Actor(a2.clone()),
        Party::Credentials(a3.clone()),
    ] {
        store
            .set_suspended(&party, true)
            .await
            .unwrap_or_else(|e| panic!("store rule set_suspended {party:?}: {e}"));
    }
    // Twice is once.
    store
        .set_suspended(&Party::Credentials(a1.clone()), true)
        .await
        .unwrap_or_else(|e| panic!("store rule set_suspended: {e}"));
    let s = ask().await;
    assert_eq!(
        (s.credentials.clone(), s.actors.clone()),
        (vec![a1.clone()], vec![a2.clone()]),
        "store rule credential switch: reported apart from actor suspensions, only among the actors asked"
    );
    assert!(
        s.buyers.is_empty(),
        "store rule credential switch: no buyer"
    );
    store
        .set_suspended(&Party::Credentials(a1.clone()), false)
        .await
        .unwrap_or_else(|e| panic!("store rule set_suspended: {e}"));
    let s = ask().await;
    assert!(
        s.credentials.is_empty() && s.actors == vec![a2.clone()],
        "store rule credential switch: lifted, it is gone; the actor suspension stays: {s:?}"
    );
    for party in [Party::Actor(a2), Party::Credentials(a3)] {
        store
            .set_suspended(&party, false)
            .await
            .unwrap_or_else(|e| panic!("store rule set_suspended: {e}"));
    }
}

/// Confirmations (an identical insert is a no-op, another with the same id a `Conflict`; read
/// by buyer and snapshot) and snapshots (kept by id, idempotent).
pub async fn store_confirmations_and_snapshots(store: &dyn Store) {
    let tag = tag();
    let snapshot = examples::travel_backpack_snapshot();
    for _ in 0..2 {
        store
            .put_snapshot(&snapshot)
            .await
            .unwrap_or_else(|e| panic!("store rule put_snapshot: idempotent: {e}"));
    }
    match store.snapshot(&snapshot.id()).await {
        Ok(Some(s)) => assert_eq!(s, snapshot, "store rule snapshot: reads back what was kept"),
        other => panic!("store rule snapshot: the snapshot kept, got {other:?}"),
    }
    let buyer: BuyerId = parse(&format!("{tag}-buyer"));
    let m = root(&format!("{tag}-mandate"), &Caps::default());
    insert_all(store, &[&m]).await;
    let confirmation = Confirmation {
        id: parse::<ConfirmationId>(&format!("{tag}-confirmation")),
        buyer_id: buyer.clone(),
        confirmed_by: crate::domain::Actor {
            id: parse(&format!("{tag}-human")),
            kind: crate::domain::ActorKind::Human,
        },
        confirmed_at: t(0),
        expires_at: Some(t(3600)),
        snapshot_id: snapshot.id(),
        scope: ConfirmationScope {
            mandate_id: m.id().clone(),
            actions: [PaymentAction::Authorize].into_iter().collect(),
            max_amount: eur("150.00"),
        },
        channel_ref: parse("push:suite"),
    };
    for rule in ["insert_confirmation", "insert_confirmation: the same again"] {
        store
            .insert_confirmation(&confirmation)
            .await
            .unwrap_or_else(|e| panic!("store rule {rule}: {e}"));
    }
    let mut other = confirmation.clone();
    other.scope.max_amount = eur("149.00");
    conflict(
        "insert_confirmation: another with the same id",
        store.insert_confirmation(&other).await,
    );
    let found = store
        .confirmations(&buyer, &snapshot.id())
        .await
        .unwrap_or_else(|e| panic!("store rule confirmations: {e}"));
    assert_eq!(
        found,
        vec![confirmation],
        "store rule confirmations: the buyer's confirmation of the snapshot, as stored"
    );
    let elsewhere = examples::over_limit_snapshot().id();
    assert!(
        matches!(store.confirmations(&buyer, &elsewhere).await, Ok(v) if v.is_empty()),
        "store rule confirmations: none for another snapshot"
    );
    let stranger: BuyerId = parse(&format!("{tag}-stranger"));
    assert!(
        matches!(store.confirmations(&stranger, &snapshot.id()).await, Ok(v) if v.is_empty()),
        "store rule confirmations: none for another buyer"
    );
}

/// Single use of 402 challenge ids: the first use of an id is `First`; the same credential
/// again is `SameCredential` (a retry of one payment), another credential `Used`; ids are
/// independent; concurrent first uses of one id give exactly one `First`; a purge at the
/// expiry deletes the record (and only expired ones).
pub async fn store_challenges(store: &dyn Store) {
    let rule = "store_challenges";
    let id = format!("ch-{}", tag());
    let digest = |s: &str| {
        use sha2::Digest as _;
        ContentDigest::from_bytes(sha2::Sha256::digest(s.as_bytes()).into())
    };
    let use_ = |id: &str, cred: &str, secs: i64| ChallengeUse {
        challenge_id: id.to_owned(),
        credential: digest(cred),
        expires_at: t(secs),
    };
    let first = store.consume_challenge(&use_(&id, "a", 300)).await;
    assert_eq!(
        first.ok(),
        Some(ChallengeConsumed::First),
        "{rule}: first use"
    );
    let again = store.consume_challenge(&use_(&id, "a", 300)).await;
    assert_eq!(
        again.ok(),
        Some(ChallengeConsumed::SameCredential),
        "{rule}: same credential"
    );
    let other = store.consume_challenge(&use_(&id, "b", 300)).await;
    assert_eq!(
        other.ok(),
        Some(ChallengeConsumed::Used),
        "{rule}: another credential"
    );
    let second = format!("{id}-2");
    let fresh = store.consume_challenge(&use_(&second, "b", 300)).await;
    assert_eq!(
        fresh.ok(),
        Some(ChallengeConsumed::First),
        "{rule}: ids are independent"
    );

    // Concurrent first uses of one id, each with its own credential: exactly one First.
    let racy = format!("{id}-race");
    let creds: Vec<String> = (0..8).map(|i| format!("c{i}")).collect();
    let uses: Vec<ChallengeUse> = creds.iter().map(|c| use_(&racy, c, 300)).collect();
    let results = futures_join_all(uses.iter().map(|u| store.consume_challenge(u))).await;
    let firsts = results
        .iter()
        .filter(|r| matches!(r, Ok(ChallengeConsumed::First)))
        .count();
    assert_eq!(firsts, 1, "{rule}: concurrent first uses: {results:?}");
    assert!(
        results
            .iter()
            .all(|r| matches!(r, Ok(ChallengeConsumed::First | ChallengeConsumed::Used))),
        "{rule}: concurrent first uses: {results:?}"
    );
}

/// Purging challenge records: those expired at `now` go, later ones stay. Needs a store no one
/// else purges concurrently (it is part of [`store_conformance_exclusive`]).
pub async fn store_challenge_purge(store: &dyn Store) {
    let rule = "store_challenge_purge";
    let id = format!("chp-{}", tag());
    let d = ContentDigest::from_bytes([7; 32]);
    let mk = |suffix: &str, secs: i64| ChallengeUse {
        challenge_id: format!("{id}-{suffix}"),
        credential: d,
        expires_at: t(secs),
    };
    for u in [mk("old", 10), mk("new", 1_000)] {
        assert_eq!(
            store.consume_challenge(&u).await.ok(),
            Some(ChallengeConsumed::First),
            "{rule}"
        );
    }
    let purged = store.purge_challenges(t(10)).await.expect("purge");
    assert!(purged >= 1, "{rule}: the expired record is purged");
    // The expired id is free again; the live one is still used.
    assert_eq!(
        store.consume_challenge(&mk("old", 10)).await.ok(),
        Some(ChallengeConsumed::First),
        "{rule}: purged"
    );
    assert_eq!(
        store.consume_challenge(&mk("new", 1_000)).await.ok(),
        Some(ChallengeConsumed::SameCredential),
        "{rule}: kept"
    );
}

/// Polls every future to completion, concurrently on the current task.
async fn futures_join_all<F: std::future::Future>(
    futures: impl Iterator<Item = F>,
) -> Vec<F::Output> {
    let mut pending: Vec<std::pin::Pin<Box<F>>> = futures.map(Box::pin).collect();
    let mut out: Vec<Option<F::Output>> = (0..pending.len()).map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut all = true;
        for (i, f) in pending.iter_mut().enumerate() {
            if out[i].is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => out[i] = Some(v),
                    std::task::Poll::Pending => all = false,
                }
            }
        }
        if all {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
    out.into_iter().flatten().collect()
}
