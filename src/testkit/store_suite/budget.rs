//! The budget ledger: all or nothing, limits, windows, resolution, refunds (I2, I5).

use super::*;

/// All or nothing (I2): a hold refused at any level holds nothing at any level and leaves no
/// record; the refusal names the first level in leaf-first order; a duplicate attempt is
/// `Duplicate`; another currency is `Currency`; the usage `place_hold` reports is what `usage`
/// reads right after, in level order.
pub async fn store_budget_all_or_nothing(store: &dyn Store) {
    let b = Budget { store, tag: tag() };
    let caps = Caps {
        lifetime: Some("100.00"),
        ..Caps::default()
    };
    let r = root(&format!("{}-root", b.tag), &caps);
    let small = Caps {
        lifetime: Some("50.00"),
        ..Caps::default()
    };
    let c = child(&format!("{}-child", b.tag), &r, &caps);
    let c2 = child(&format!("{}-child2", b.tag), &r, &small);
    insert_all(store, &[&r, &c, &c2]).await;
    let on_root = [r.clone()];
    let under_c = [r.clone(), c.clone()];
    let under_c2 = [r.clone(), c2.clone()];

    let rule = "place_hold: usage reported";
    let reported = b.hold(rule, "p1", "60.00", t(0), &under_c).await;
    let read = b.usage(rule, &under_c, t(0)).await;
    let reversed: Vec<Usage> = read.into_iter().rev().collect();
    assert_eq!(
        reported, reversed,
        "store rule {rule}: place_hold reports, leaf first, the usage read right after"
    );
    expect(rule, &reported[0], "0.00", "60.00", 1, 1);
    expect(rule, &reported[1], "0.00", "60.00", 1, 1);

    let rule = "place_hold: leaf first";
    b.refused(
        rule,
        "p2",
        "60.00",
        t(1),
        &under_c2,
        &c2,
        Some(LimitKind::Lifetime),
        None,
    )
    .await;

    let rule = "place_hold: all or nothing";
    b.hold(rule, "p3", "40.00", t(2), &on_root).await;
    b.refused(
        rule,
        "p4",
        "0.01",
        t(3),
        &under_c,
        &r,
        Some(LimitKind::Lifetime),
        None,
    )
    .await;
    let u = b.usage(rule, &under_c2, t(3)).await;
    expect(rule, &u[0], "0.00", "100.00", 2, 2);
    expect(rule, &u[1], "0.00", "0.00", 0, 0);

    let rule = "place_hold: a refused attempt may try again";
    b.release(rule, "p3").await;
    b.hold(rule, "p4", "0.01", t(4), &under_c).await;

    let rule = "place_hold: duplicate attempt";
    let before = b.usage(rule, &under_c, t(5)).await;
    match b.try_hold("p4", eur("1.00"), t(5), &under_c).await {
        Err(HoldError::Duplicate { attempt_id }) => {
            assert_eq!(
                attempt_id,
                b.attempt("p4"),
                "store rule {rule}: names the attempt"
            )
        }
        other => {
            panic!("store rule {rule}: a second hold for an attempt is Duplicate, got {other:?}")
        }
    }
    assert_eq!(
        before,
        b.usage(rule, &under_c, t(5)).await,
        "store rule {rule}: a duplicate changes nothing"
    );

    let rule = "place_hold: currency";
    let usd =
        Money::parse("1.00", Currency::USD).unwrap_or_else(|e| panic!("store rule fixture: {e}"));
    match b.try_hold("p5", usd, t(6), &under_c).await {
        Err(HoldError::Currency { .. }) => {}
        other => panic!("store rule {rule}: a hold in another currency is Currency, got {other:?}"),
    }
    assert_eq!(
        before,
        b.usage(rule, &under_c, t(6)).await,
        "store rule {rule}: a hold in another currency holds nothing"
    );
}

/// Each limit is enforced exactly at its boundary (`== cap` accepted, one minor unit more
/// refused), and a refusal names the first limit in the order lifetime, windows (amount then
/// count, in the order of the limits), uses, attempts.
pub async fn store_limits(store: &dyn Store) {
    let b = Budget { store, tag: tag() };
    let m = |name: &str, caps: Caps| root(&format!("{}-{name}", b.tag), &caps);
    let lifetime = m(
        "lifetime",
        Caps {
            lifetime: Some("100.00"),
            ..Caps::default()
        },
    );
    let amount = m(
        "amount",
        Caps {
            windows: vec![(3600, Some("50.00"), None)],
            ..Caps::default()
        },
    );
    let count = m(
        "count",
        Caps {
            windows: vec![(3600, None, Some(2))],
            ..Caps::default()
        },
    );
    let uses = m(
        "uses",
        Caps {
            uses: Some(2),
            ..Caps::default()
        },
    );
    let attempts = m(
        "attempts",
        Caps {
            attempts: Some(3),
            ..Caps::default()
        },
    );
    let all = m(
        "all",
        Caps {
            lifetime: Some("10.00"),
            windows: vec![(60, Some("10.00"), Some(1)), (3600, Some("10.00"), Some(1))],
            uses: Some(1),
            attempts: Some(1),
        },
    );
    let windows = m(
        "windows",
        Caps {
            windows: vec![(60, Some("10.00"), Some(1)), (3600, Some("10.00"), Some(1))],
            uses: Some(1),
            attempts: Some(1),
            ..Caps::default()
        },
    );
    let counters = m(
        "counters",
        Caps {
            uses: Some(1),
            attempts: Some(1),
            ..Caps::default()
        },
    );
    insert_all(
        store,
        &[
            &lifetime, &amount, &count, &uses, &attempts, &all, &windows, &counters,
        ],
    )
    .await;
    let one = |m: &Mandate| [m.clone()];

    let rule = "limits: lifetime";
    b.hold(rule, "l1", "60.00", t(0), &one(&lifetime)).await;
    b.refused(
        rule,
        "l2",
        "40.01",
        t(1),
        &one(&lifetime),
        &lifetime,
        Some(LimitKind::Lifetime),
        None,
    )
    .await;
    b.hold(rule, "l3", "40.00", t(2), &one(&lifetime)).await;

    let rule = "limits: window amount";
    b.hold(rule, "a1", "30.00", t(0), &one(&amount)).await;
    b.refused(
        rule,
        "a2",
        "20.01",
        t(1),
        &one(&amount),
        &amount,
        Some(LimitKind::WindowAmount {
            window_seconds: 3600,
        }),
        None,
    )
    .await;
    b.hold(rule, "a3", "20.00", t(2), &one(&amount)).await;

    let rule = "limits: window count";
    b.hold(rule, "c1", "1.00", t(0), &one(&count)).await;
    b.hold(rule, "c2", "1.00", t(1), &one(&count)).await;
    b.refused(
        rule,
        "c3",
        "0.00",
        t(2),
        &one(&count),
        &count,
        Some(LimitKind::WindowCount {
            window_seconds: 3600,
        }),
        None,
    )
    .await;

    let rule = "limits: uses";
    b.hold(rule, "u1", "1.00", t(0), &one(&uses)).await;
    b.hold(rule, "u2", "1.00", t(1), &one(&uses)).await;
    b.refused(
        rule,
        "u3",
        "1.00",
        t(2),
        &one(&uses),
        &uses,
        None,
        Some("uses"),
    )
    .await;
    b.release(rule, "u2").await;
    b.hold(rule, "u3", "1.00", t(3), &one(&uses)).await;
    b.refused(
        rule,
        "u4",
        "1.00",
        t(4),
        &one(&uses),
        &uses,
        None,
        Some("uses"),
    )
    .await;

    let rule = "limits: attempts";
    for (i, name) in ["t1", "t2", "t3"].into_iter().enumerate() {
        b.hold(rule, name, "1.00", t(i as i64), &one(&attempts))
            .await;
        b.release(rule, name).await;
    }
    b.refused(
        rule,
        "t4",
        "1.00",
        t(4),
        &one(&attempts),
        &attempts,
        None,
        Some("attempts"),
    )
    .await;

    let rule = "limits: order (lifetime first)";
    b.hold(rule, "o1", "10.00", t(0), &one(&all)).await;
    b.refused(
        rule,
        "o2",
        "10.00",
        t(1),
        &one(&all),
        &all,
        Some(LimitKind::Lifetime),
        None,
    )
    .await;
    let rule = "limits: order (windows in order, amount before count)";
    b.hold(rule, "o3", "10.00", t(0), &one(&windows)).await;
    b.refused(
        rule,
        "o4",
        "10.00",
        t(1),
        &one(&windows),
        &windows,
        Some(LimitKind::WindowAmount { window_seconds: 60 }),
        None,
    )
    .await;
    b.refused(
        rule,
        "o5",
        "0.00",
        t(2),
        &one(&windows),
        &windows,
        Some(LimitKind::WindowCount { window_seconds: 60 }),
        None,
    )
    .await;
    let rule = "limits: order (uses before attempts)";
    b.hold(rule, "o6", "1.00", t(0), &one(&counters)).await;
    b.refused(
        rule,
        "o7",
        "1.00",
        t(1),
        &one(&counters),
        &counters,
        None,
        Some("uses"),
    )
    .await;
}

/// Rolling windows cover `(now - length, now]` by the time a hold was placed: a hold at `t`
/// counts at `t + length - 1 s` and not at `t + length`; each window moves on its own; held
/// amounts stay held however old (I5); a mandate without holds reports every window at zero.
pub async fn store_windows(store: &dyn Store) {
    let b = Budget { store, tag: tag() };
    let caps = Caps {
        windows: vec![(60, Some("10.00"), Some(2)), (3600, Some("20.00"), None)],
        ..Caps::default()
    };
    let m = root(&format!("{}-m", b.tag), &caps);
    insert_all(store, &[&m]).await;
    let chain = [m.clone()];
    let rule = "windows: nothing yet";
    let u = b.usage(rule, &chain, t(0)).await;
    expect(rule, &u[0], "0.00", "0.00", 0, 0);
    expect_window(rule, &u[0], 60, "0.00", 0);
    expect_window(rule, &u[0], 3600, "0.00", 0);

    let rule = "windows: a hold counts inside its window";
    b.hold(rule, "w1", "10.00", t(0), &chain).await;
    let u = b.usage(rule, &chain, t(59)).await;
    expect_window(rule, &u[0], 60, "10.00", 1);
    expect_window(rule, &u[0], 3600, "10.00", 1);
    b.refused(
        rule,
        "w2",
        "0.01",
        t(59),
        &chain,
        &m,
        Some(LimitKind::WindowAmount { window_seconds: 60 }),
        None,
    )
    .await;

    let rule = "windows: a hold leaves its window at t + length";
    let u = b.usage(rule, &chain, t(60)).await;
    expect_window(rule, &u[0], 60, "0.00", 0);
    expect_window(rule, &u[0], 3600, "10.00", 1);
    expect(rule, &u[0], "0.00", "10.00", 1, 1);
    b.hold(rule, "w2", "10.00", t(60), &chain).await;
    b.refused(
        rule,
        "w3",
        "0.01",
        t(120),
        &chain,
        &m,
        Some(LimitKind::WindowAmount {
            window_seconds: 3600,
        }),
        None,
    )
    .await;
    let u = b.usage(rule, &chain, t(3600)).await;
    expect_window(rule, &u[0], 3600, "10.00", 1);
    expect_window(rule, &u[0], 60, "0.00", 0);
    let u = b.usage(rule, &chain, t(3660)).await;
    expect_window(rule, &u[0], 3600, "0.00", 0);

    let rule = "windows: unresolved holds stay held (I5)";
    expect(rule, &u[0], "0.00", "20.00", 2, 2);
    b.hold(rule, "w3", "10.00", t(3660), &chain).await;
}

/// Resolution: a commit turns the amount committed into spend and releases the rest (windows
/// too); a release gives everything back but the attempt; a hold is resolved at most once
/// (`Conflict` afterwards); a commit above the amount held is a `Conflict` and changes nothing;
/// an unresolved (ambiguous) hold keeps counting, years later (I5). Every level of the chain
/// moves together.
pub async fn store_hold_resolution(store: &dyn Store) {
    let b = Budget { store, tag: tag() };
    let caps = Caps {
        lifetime: Some("100.00"),
        windows: vec![(3600, Some("100.00"), Some(5))],
        uses: Some(5),
        attempts: Some(10),
    };
    let r = root(&format!("{}-root", b.tag), &caps);
    let c = child(&format!("{}-child", b.tag), &r, &caps);
    let l = child(&format!("{}-leaf", b.tag), &c, &caps);
    insert_all(store, &[&r, &c, &l]).await;
    let chain = [r.clone(), c.clone(), l.clone()];

    let rule = "commit_hold: partial commit";
    b.hold(rule, "h1", "100.00", t(0), &chain).await;
    b.commit(rule, "h1", "60.00").await;
    for u in b.usage(rule, &chain, t(1)).await {
        expect(rule, &u, "60.00", "0.00", 1, 1);
        expect_window(rule, &u, 3600, "60.00", 1);
    }
    match store.hold(&b.attempt("h1")).await {
        Ok(Some(h)) => {
            assert_eq!(
                (h.state, h.amount, h.committed, h.refunded, h.at),
                (
                    HoldState::Committed,
                    eur("100.00"),
                    eur("60.00"),
                    eur("0.00"),
                    t(0)
                ),
                "store rule {rule}: the hold record"
            );
            assert_eq!(
                h.mandate_ids,
                vec![l.id().clone(), c.id().clone(), r.id().clone()],
                "store rule hold: the mandates of a hold, leaf first"
            );
        }
        other => panic!("store rule hold: a placed hold has a record, got {other:?}"),
    }
    let rule = "commit_hold: the rest is released";
    b.refused(
        rule,
        "h2",
        "40.01",
        t(2),
        &chain,
        &l,
        Some(LimitKind::Lifetime),
        None,
    )
    .await;
    b.hold(rule, "h2", "40.00", t(3), &chain).await;

    let rule = "release_hold: gives everything back but the attempt";
    b.release(rule, "h2").await;
    for u in b.usage(rule, &chain, t(4)).await {
        expect(rule, &u, "60.00", "0.00", 1, 2);
        expect_window(rule, &u, 3600, "60.00", 1);
    }
    assert_eq!(
        b.state(rule, "h2").await,
        HoldState::Released,
        "store rule {rule}: state"
    );

    let rule = "resolution: at most once";
    let h1 = b.attempt("h1");
    let h2 = b.attempt("h2");
    conflict(rule, store.commit_hold(&h1, eur("1.00")).await);
    conflict(rule, store.release_hold(&h1).await);
    conflict(rule, store.commit_hold(&h2, eur("1.00")).await);
    conflict(rule, store.release_hold(&h2).await);

    let rule = "commit_hold: at most the amount held";
    b.hold(rule, "h3", "10.00", t(5), &chain).await;
    let h3 = b.attempt("h3");
    conflict(rule, store.commit_hold(&h3, eur("10.01")).await);
    let usd =
        Money::parse("1.00", Currency::USD).unwrap_or_else(|e| panic!("store rule fixture: {e}"));
    assert!(
        store.commit_hold(&h3, usd).await.is_err(),
        "store rule commit_hold: a commit in another currency is refused"
    );
    assert_eq!(
        b.state(rule, "h3").await,
        HoldState::Held,
        "store rule {rule}: still held"
    );

    let rule = "resolution: an unknown hold";
    let ghost = b.attempt("ghost");
    assert!(
        store.commit_hold(&ghost, eur("1.00")).await.is_err()
            && store.release_hold(&ghost).await.is_err()
            && matches!(store.hold(&ghost).await, Ok(None)),
        "store rule {rule}: cannot be resolved and has no record"
    );

    let rule = "ambiguous holds keep counting (I5)";
    let years = 10 * 366 * 86_400;
    for u in b.usage(rule, &chain, t(years)).await {
        expect(rule, &u, "60.00", "10.00", 2, 3);
        expect_window(rule, &u, 3600, "0.00", 0);
    }
    b.refused(
        rule,
        "h4",
        "30.01",
        t(years),
        &chain,
        &l,
        Some(LimitKind::Lifetime),
        None,
    )
    .await;
    b.hold(rule, "h4", "30.00", t(years), &chain).await;
}

/// Refunds: only against a committed hold and up to the amount committed (`Conflict`
/// otherwise); under [`RefundPolicy::RETAIN`] nothing is given back; under
/// [`RefundPolicy::RESTORE_ALL`] lifetime and window amounts are; each half of the policy acts
/// alone; window counts never come back.
pub async fn store_refund_policy(store: &dyn Store) {
    let b = Budget { store, tag: tag() };
    let caps = Caps {
        lifetime: Some("100.00"),
        windows: vec![(3600, Some("100.00"), Some(10))],
        ..Caps::default()
    };
    let m = root(&format!("{}-m", b.tag), &caps);
    insert_all(store, &[&m]).await;
    let chain = [m.clone()];
    let a = b.attempt("r1");
    let refund = |amount: &str, policy: RefundPolicy| {
        let a = a.clone();
        let amount = eur(amount);
        async move { store.refund_hold(&a, amount, policy).await }
    };

    let rule = "refund_hold: only a committed hold";
    b.hold(rule, "r1", "100.00", t(0), &chain).await;
    conflict(rule, refund("10.00", RefundPolicy::RESTORE_ALL).await);
    b.commit(rule, "r1", "100.00").await;

    let rule = "refund_hold: RETAIN gives nothing back";
    refund("30.00", RefundPolicy::RETAIN)
        .await
        .unwrap_or_else(|e| panic!("store rule {rule}: {e}"));
    let u = b.usage(rule, &chain, t(1)).await;
    expect(rule, &u[0], "100.00", "0.00", 1, 1);
    expect_window(rule, &u[0], 3600, "100.00", 1);
    b.refused(
        rule,
        "r2",
        "0.01",
        t(1),
        &chain,
        &m,
        Some(LimitKind::Lifetime),
        None,
    )
    .await;

    let rule = "refund_hold: RESTORE_ALL gives lifetime and window amounts back";
    refund("30.00", RefundPolicy::RESTORE_ALL)
        .await
        .unwrap_or_else(|e| panic!("store rule {rule}: {e}"));
    let u = b.usage(rule, &chain, t(2)).await;
    expect(rule, &u[0], "70.00", "0.00", 1, 1);
    expect_window(rule, &u[0], 3600, "70.00", 1);

    let rule = "refund_hold: at most the amount committed";
    conflict(rule, refund("40.01", RefundPolicy::RESTORE_ALL).await);

    let rule = "refund_hold: restore_lifetime alone";
    let lifetime_only = RefundPolicy {
        restores_lifetime: true,
        restores_windows: false,
    };
    refund("10.00", lifetime_only)
        .await
        .unwrap_or_else(|e| panic!("store rule {rule}: {e}"));
    let u = b.usage(rule, &chain, t(3)).await;
    expect(rule, &u[0], "60.00", "0.00", 1, 1);
    expect_window(rule, &u[0], 3600, "70.00", 1);

    let rule = "refund_hold: restore_windows alone";
    let windows_only = RefundPolicy {
        restores_lifetime: false,
        restores_windows: true,
    };
    refund("10.00", windows_only)
        .await
        .unwrap_or_else(|e| panic!("store rule {rule}: {e}"));
    let u = b.usage(rule, &chain, t(4)).await;
    expect(rule, &u[0], "60.00", "0.00", 1, 1);
    expect_window(rule, &u[0], 3600, "60.00", 1);
    match store.hold(&a).await {
        Ok(Some(h)) => assert_eq!(
            h.refunded,
            eur("80.00"),
            "store rule refund_hold: the record sums the refunds"
        ),
        other => panic!("store rule refund_hold: the hold record, got {other:?}"),
    }

    let rule = "refund_hold: the freed headroom is usable";
    b.hold(rule, "r3", "40.00", t(5), &chain).await;
    b.refused(
        rule,
        "r4",
        "0.01",
        t(6),
        &chain,
        &m,
        Some(LimitKind::Lifetime),
        None,
    )
    .await;

    let rule = "refund_hold: a released hold";
    b.release(rule, "r3").await;
    conflict(
        rule,
        store
            .refund_hold(&b.attempt("r3"), eur("1.00"), RefundPolicy::RESTORE_ALL)
            .await,
    );
}
