//! The buyer's dashboard over HTTP: every page and action, as the buyer, as another buyer,
//! without a login, with forged forms; the approval bound to the cart the buyer saw; the kill
//! switch stopping the next payment (I14: identity is checked, never declared).
#![cfg(all(feature = "dashboard", feature = "testkit"))]

mod dashboard_harness;
mod dashboard_seed;

use agent_mandate::domain::{
    AttemptStatus, AuditKind, BlockerCode, MandateStatus, Outcome, Principal,
};
use agent_mandate::engine::PaymentOutcome;
use dashboard_harness::{serve, Served};
use dashboard_seed::*;

const ME: &str = "buyer:buyer_456";

fn refused_with(out: &PaymentOutcome, code: BlockerCode) -> bool {
    matches!(out, PaymentOutcome::Refused(d) if d.has(code))
}

async fn mandate_status(s: &Served, id: &str) -> MandateStatus {
    s.seeded
        .engine
        .mandate(&buyer_p(), &id.parse().expect("id"))
        .await
        .expect("mandate")
        .status()
}

/// The planner's flight at `price`, as a new cart.
fn flight(price: &str) -> agent_mandate::domain::CartSnapshot {
    cart(
        "merchant_002",
        &[("FLIGHT-LIS-BER", "Flight Lisbon to Berlin", 1, price)],
        "0.00",
        "20.00",
    )
}

#[tokio::test]
async fn every_page_answers_the_buyer_with_their_data_only() {
    let s = serve().await;
    let booked = s.seeded.booked.to_string();
    let evidence = format!("/activity/{booked}");
    let pages: [(&str, &[&str]); 9] = [
        (
            "/",
            &[
                mandate_ids()[0],
                mandate_ids()[1],
                mandate_ids()[2],
                "Recent alerts",
                "80% of the lifetime limit of mandate_groceries",
                "2 waiting for you",
            ],
        ),
        (
            "/activity",
            &[
                "LIFETIME_LIMIT_EXCEEDED",
                "75.00 EUR",
                "merchant_003",
                "Evidence and audit check",
                "waiting for your confirmation",
            ],
        ),
        ("/activity?agent=agent_booker", &["141.00 EUR", "captured"]),
        (
            &evidence,
            &[
                "consistent",
                "audit_chain",
                "verified events",
                "Travel Backpack",
            ],
        ),
        (
            "/waiting",
            &[
                "Flight Lisbon to Berlin",
                "250.00 EUR",
                "Approve 250.00 EUR",
                "mandate_gifts",
            ],
        ),
        (
            "/mandates/mandate_booking",
            &["Delegated from", "mandate_travel", "mandate_booking"],
        ),
        (
            "/stop",
            &[
                "Stop everything",
                "agent_planner",
                "agent_booker",
                "agent_shopper",
            ],
        ),
        (
            "/stop/agents/agent_planner",
            &[
                "mandate_travel",
                "mandate_booking held by agent_booker",
                "Yes, stop agent_planner now",
            ],
        ),
        ("/stop/all", &["Yes, stop everything now"]),
    ];
    for (path, markers) in pages {
        let p = s.get(path).await;
        assert_eq!(p.status, 200, "{path}: {}", p.body);
        assert!(p.body.starts_with("<!DOCTYPE html>"), "{path}");
        let csp = p.headers["content-security-policy"].to_str().unwrap();
        assert!(
            csp.starts_with("default-src 'none'") && csp.contains("script-src 'sha256-"),
            "{csp}"
        );
        assert_eq!(p.headers["cache-control"], "no-store");
        for m in markers {
            assert!(p.body.contains(m), "{path}: {m} missing");
        }
        for other in [
            OTHER_MANDATE,
            OTHER_AGENT,
            "Something private",
            "buyer_other",
        ] {
            assert!(
                !p.body.contains(other),
                "{path} shows another buyer's {other}"
            );
        }
    }
    // Newest first: the flight the planner asked for last comes before the first booking.
    let act = s.get("/activity").await.body;
    assert!(act.find("250.00 EUR").unwrap() < act.find("141.00 EUR").unwrap());
    // The filter shows the booker's payments only.
    let booker = s.get("/activity?agent=agent_booker").await;
    assert!(!booker.body.contains("merchant_003"));
}

fn mandate_ids() -> [&'static str; 4] {
    [TRAVEL, BOOKING, GROCERIES, GIFTS]
}

#[tokio::test]
async fn another_buyers_ids_in_the_url_are_not_found() {
    let s = serve().await;
    let other_attempt = format!("/activity/{}", s.seeded.other_attempt);
    for path in [
        format!("/mandates/{OTHER_MANDATE}"),
        other_attempt.clone(),
        format!("/stop/agents/{OTHER_AGENT}"),
        "/mandates/mandate_that_does_not_exist".to_owned(),
    ] {
        let p = s.get(&path).await;
        assert_eq!(p.status, 404, "{path}");
        assert!(
            !p.body.contains("Something private") && !p.body.contains(OTHER_MANDATE),
            "{path}: {}",
            p.body
        );
    }
    // The same URLs answer their own buyer: the 404 is about whose data it is, not the route.
    let theirs = s
        .get_as(
            &format!("/mandates/{OTHER_MANDATE}"),
            Some("buyer:buyer_other"),
            Some("o1"),
        )
        .await;
    assert_eq!(theirs.status, 200);
    let theirs = s
        .get_as(&other_attempt, Some("buyer:buyer_other"), Some("o1"))
        .await;
    assert_eq!(theirs.status, 200);
    assert!(theirs.body.contains("Something private"));
    // Posting at another buyer's mandate with a valid token changes nothing.
    for action in ["confirm", "reject"] {
        let p = s
            .post(&format!("/waiting/mandates/{OTHER_MANDATE}/{action}"), &[])
            .await;
        assert_eq!(p.status, 404, "{action}");
    }
    let p = s
        .post(
            &format!("/stop/agents/{OTHER_AGENT}"),
            &[("confirm", "yes")],
        )
        .await;
    assert_eq!(p.status, 404);
    let p = s
        .post(
            "/waiting/confirmations/approve",
            &[
                ("mandate_id", OTHER_MANDATE),
                ("snapshot_id", &s.seeded.waiting_cart.id().to_string()),
            ],
        )
        .await;
    assert_eq!(p.status, 404);
    let other = s
        .seeded
        .engine
        .mandate(&other_p(), &OTHER_MANDATE.parse().unwrap())
        .await
        .unwrap();
    assert_eq!(other.status(), MandateStatus::Active);
    // The other buyer's agent still pays.
    let gift = cart(
        "merchant_001",
        &[("SOCKS", "Socks", 1, "9.00")],
        "0.00",
        "0.00",
    );
    let out = pay(
        &s.seeded.engine,
        other_buyer(),
        OTHER_AGENT,
        OTHER_MANDATE,
        &gift,
        &s.seeded.other_card,
        "other-2",
        false,
    )
    .await;
    assert!(out.attempt().is_some(), "{out:?}");
}

#[tokio::test]
async fn no_login_no_session_or_a_non_buyer_gets_no_page() {
    let s = serve().await;
    assert_eq!(s.get_as("/", None, Some("s1")).await.status, 401);
    assert_eq!(s.get_as("/", Some(ME), None).await.status, 401);
    assert_eq!(s.get_as("/", Some(ME), Some("")).await.status, 401);
    for who in ["agent:agent_planner", "operator:ops_1"] {
        let p = s.get_as("/", Some(who), Some("s1")).await;
        assert_eq!(p.status, 403, "{who}");
        let p = s
            .post_as("/stop/all", who, "s1", &[("confirm", "yes")])
            .await;
        assert_eq!(p.status, 403, "{who}");
    }
}

#[tokio::test]
async fn a_forged_form_changes_nothing() {
    let s = serve().await;
    let mine = s.get("/stop/all").await.csrf();
    let other_session = s.get_as("/stop/all", Some(ME), Some("s2")).await.csrf();
    let other_buyer = s
        .get_as("/stop/all", Some("buyer:buyer_other"), Some("s1"))
        .await
        .csrf();
    assert_ne!(mine, other_session);
    assert_ne!(mine, other_buyer);
    let snapshot = s.seeded.waiting_cart.id().to_string();
    let forged: [(&str, Vec<(&str, &str)>); 5] = [
        ("/stop/all", vec![("confirm", "yes")]),
        ("/stop/agents/agent_planner", vec![("confirm", "yes")]),
        ("/waiting/mandates/mandate_gifts/confirm", vec![]),
        ("/waiting/mandates/mandate_gifts/reject", vec![]),
        (
            "/waiting/confirmations/approve",
            vec![("mandate_id", TRAVEL), ("snapshot_id", &snapshot)],
        ),
    ];
    for (path, form) in &forged {
        let zeros = "00".repeat(32);
        for token in [
            None,
            Some(""),
            Some(zeros.as_str()),
            Some(other_session.as_str()),
            Some(other_buyer.as_str()),
        ] {
            let mut fields = form.clone();
            if let Some(t) = token {
                fields.push(("csrf", t));
            }
            let p = s.post_as(path, ME, "s1", &fields).await;
            assert_eq!(p.status, 403, "{path} with {token:?}: {}", p.body);
        }
    }
    // Nothing happened: the mandates are as they were and the agents still pay.
    assert_eq!(
        mandate_status(&s, GIFTS).await,
        MandateStatus::PendingConfirmation
    );
    assert_eq!(mandate_status(&s, TRAVEL).await, MandateStatus::Active);
    let train = cart(
        "merchant_002",
        &[("TRAIN", "Train", 1, "20.00")],
        "0.00",
        "0.00",
    );
    let out = pay(
        &s.seeded.engine,
        buyer(),
        PLANNER,
        TRAVEL,
        &train,
        &s.seeded.planner_card,
        "after-forgery",
        false,
    )
    .await;
    assert!(out.attempt().is_some(), "{out:?}");
    // The same post with the session's token works (the refusals above were the token's).
    let p = s
        .post_as(
            "/waiting/mandates/mandate_gifts/confirm",
            ME,
            "s1",
            &[("csrf", &mine)],
        )
        .await;
    assert_eq!(p.status, 303, "{}", p.body);
    assert_eq!(mandate_status(&s, GIFTS).await, MandateStatus::Active);
}

#[tokio::test]
async fn a_waiting_mandate_is_confirmed_or_rejected_by_the_buyer() {
    let s = serve().await;
    let p = s
        .post(
            "/waiting/mandates/mandate_gifts/reject",
            &[("reason", "not this year")],
        )
        .await;
    assert_eq!(p.status, 303);
    assert_eq!(p.headers["location"], "/dash/waiting");
    let m = s
        .seeded
        .engine
        .mandate(&buyer_p(), &GIFTS.parse().unwrap())
        .await
        .unwrap();
    assert_eq!(m.status(), MandateStatus::Rejected);
    assert_eq!(
        m.lifecycle().rejected_reason.as_ref().unwrap().to_string(),
        "not this year"
    );
    assert!(!s
        .get("/waiting")
        .await
        .body
        .contains("/waiting/mandates/mandate_gifts/confirm"));
    // A rejected mandate cannot be confirmed afterwards.
    let p = s.post("/waiting/mandates/mandate_gifts/confirm", &[]).await;
    assert_eq!(p.status, 409, "{}", p.body);
    assert_eq!(mandate_status(&s, GIFTS).await, MandateStatus::Rejected);
}

#[tokio::test]
async fn approving_the_cart_shown_lets_the_agent_pay_it() {
    let s = serve().await;
    let waiting = s.get("/waiting").await;
    let snapshot = s.seeded.waiting_cart.id().to_string();
    assert!(waiting.body.contains(&snapshot));
    let p = s
        .post_as(
            "/waiting/confirmations/approve",
            ME,
            "s1",
            &[
                ("csrf", &waiting.csrf()),
                ("mandate_id", TRAVEL),
                ("snapshot_id", &snapshot),
            ],
        )
        .await;
    assert_eq!(p.status, 303, "{}", p.body);
    assert!(!s
        .get("/waiting")
        .await
        .body
        .contains("Flight Lisbon to Berlin"));
    let out = pay(
        &s.seeded.engine,
        buyer(),
        PLANNER,
        TRAVEL,
        &s.seeded.waiting_cart,
        &s.seeded.planner_card,
        "seed-pay-flight",
        false,
    )
    .await;
    let attempt = out
        .attempt()
        .unwrap_or_else(|| panic!("allowed after approval: {out:?}"));
    assert_eq!(attempt.status, AttemptStatus::Authorized);
    // The confirmation is the buyer's, for this cart, on the trail.
    let events = s
        .seeded
        .engine
        .buyer_events(&buyer_p(), &buyer(), 1, 1000)
        .await
        .unwrap();
    let recorded = events.events.iter().filter_map(|e| e.event().ok()).any(|e| {
        matches!(e.kind, AuditKind::ConfirmationRecorded { snapshot_id, .. } if snapshot_id == s.seeded.waiting_cart.id())
    });
    assert!(recorded);
}

#[tokio::test]
async fn approving_after_the_cart_changed_is_refused() {
    let s = serve().await;
    let shown = s.get("/waiting").await;
    let old = s.seeded.waiting_cart.id().to_string();
    // The agent comes back with another cart (the fare went up) before the buyer answers.
    let new = flight("245.00");
    s.seeded.carts.keep(new.clone());
    let out = pay(
        &s.seeded.engine,
        buyer(),
        PLANNER,
        TRAVEL,
        &new,
        &s.seeded.planner_card,
        "flight-2",
        false,
    )
    .await;
    assert!(
        matches!(&out, PaymentOutcome::Refused(d) if d.outcome == Outcome::RequiresConfirmation)
    );
    let p = s
        .post_as(
            "/waiting/confirmations/approve",
            ME,
            "s1",
            &[
                ("csrf", &shown.csrf()),
                ("mandate_id", TRAVEL),
                ("snapshot_id", &old),
            ],
        )
        .await;
    assert_eq!(p.status, 409, "{}", p.body);
    assert!(p.body.contains("The cart changed"));
    // Nothing was confirmed: neither cart can be paid.
    for (c, k) in [
        (&s.seeded.waiting_cart, "flight-old-again"),
        (&new, "flight-2"),
    ] {
        let out = pay(
            &s.seeded.engine,
            buyer(),
            PLANNER,
            TRAVEL,
            c,
            &s.seeded.planner_card,
            k,
            false,
        )
        .await;
        assert!(
            refused_with(&out, BlockerCode::ConfirmationRequired),
            "{out:?}"
        );
    }
    // The page now shows the new cart.
    let now = s.get("/waiting").await;
    assert!(now.body.contains(&new.id().to_string()) && now.body.contains("265.00 EUR"));
    // A cart the dashboard does not know cannot be approved either.
    let unknown = flight("299.00");
    let out = pay(
        &s.seeded.engine,
        buyer(),
        PLANNER,
        TRAVEL,
        &unknown,
        &s.seeded.planner_card,
        "flight-3",
        false,
    )
    .await;
    assert!(matches!(&out, PaymentOutcome::Refused(_)));
    let p = s
        .post(
            "/waiting/confirmations/approve",
            &[
                ("mandate_id", TRAVEL),
                ("snapshot_id", &unknown.id().to_string()),
            ],
        )
        .await;
    assert_eq!(p.status, 409, "{}", p.body);
    assert!(s.get("/waiting").await.body.contains("not available here"));
}

#[tokio::test]
async fn rejecting_a_payment_records_the_refusal_and_the_agent_is_refused() {
    let s = serve().await;
    let snapshot = s.seeded.waiting_cart.id().to_string();
    let declined = |s: &Served| {
        let engine = s.seeded.engine.clone();
        async move {
            engine
                .buyer_events(&buyer_p(), &buyer(), 1, 1000)
                .await
                .unwrap()
                .events
                .iter()
                .filter_map(|e| e.event().ok())
                .filter(|e| matches!(e.kind, AuditKind::ConfirmationDeclined { .. }))
                .count()
        }
    };
    assert_eq!(declined(&s).await, 0);
    let p = s
        .post(
            "/waiting/confirmations/reject",
            &[("mandate_id", TRAVEL), ("snapshot_id", &snapshot)],
        )
        .await;
    assert_eq!(p.status, 303, "{}", p.body);
    assert!(!s
        .get("/waiting")
        .await
        .body
        .contains("Flight Lisbon to Berlin"));
    // Recorded once, on the buyer's trail; the same form again records nothing more.
    assert_eq!(declined(&s).await, 1);
    let again = s
        .post(
            "/waiting/confirmations/reject",
            &[("mandate_id", TRAVEL), ("snapshot_id", &snapshot)],
        )
        .await;
    assert_eq!(again.status, 303, "{}", again.body);
    assert_eq!(declined(&s).await, 1);
    // The agent asking for that cart again is refused for good, not asked to wait.
    let out = pay(
        &s.seeded.engine,
        buyer(),
        PLANNER,
        TRAVEL,
        &s.seeded.waiting_cart,
        &s.seeded.planner_card,
        "flight-again",
        false,
    )
    .await;
    assert!(
        refused_with(&out, BlockerCode::ConfirmationDeclined),
        "{out:?}"
    );
    assert!(matches!(&out, PaymentOutcome::Refused(d) if d.outcome == Outcome::Blocked));
    // And it does not come back to "Waiting for you".
    assert!(!s
        .get("/waiting")
        .await
        .body
        .contains("Flight Lisbon to Berlin"));
}

#[tokio::test]
async fn stopping_an_agent_blocks_its_next_payment_and_what_it_delegated() {
    let s = serve().await;
    let train = cart(
        "merchant_002",
        &[("TRAIN", "Train", 1, "20.00")],
        "0.00",
        "0.00",
    );
    let book = cart(
        "merchant_001",
        &[("BAG", "Bag", 1, "20.00")],
        "0.00",
        "0.00",
    );
    // Without the confirmation step's field nothing is stopped.
    let p = s.post("/stop/agents/agent_planner", &[]).await;
    assert_eq!(p.status, 400);
    assert_eq!(mandate_status(&s, TRAVEL).await, MandateStatus::Active);
    let p = s
        .post(
            "/stop/agents/agent_planner",
            &[
                ("confirm", "yes"),
                ("void_open", "yes"),
                ("reason", "lost trust"),
            ],
        )
        .await;
    assert_eq!(p.status, 303, "{}", p.body);
    assert_eq!(p.headers["location"], "/dash/stop");
    assert_eq!(mandate_status(&s, TRAVEL).await, MandateStatus::Revoked);
    let out = pay(
        &s.seeded.engine,
        buyer(),
        PLANNER,
        TRAVEL,
        &train,
        &s.seeded.planner_card,
        "after-stop",
        false,
    )
    .await;
    assert!(refused_with(&out, BlockerCode::MandateRevoked), "{out:?}");
    let out = pay(
        &s.seeded.engine,
        buyer(),
        BOOKER,
        BOOKING,
        &book,
        &s.seeded.booker_card,
        "after-stop-b",
        false,
    )
    .await;
    assert!(
        refused_with(&out, BlockerCode::AncestorNotActive),
        "{out:?}"
    );
    // Its open authorization (the held train ticket) was voided.
    let train_attempt = agent_mandate::engine::attempt_id_for(
        &PLANNER.parse().unwrap(),
        &"seed-pay-train".parse().unwrap(),
    );
    let a = s
        .seeded
        .engine
        .attempt(&buyer_p(), &train_attempt)
        .await
        .unwrap();
    assert_eq!(a.status, AttemptStatus::Cancelled);
    // Audited: the revocation by the buyer, with the reason.
    let events = s
        .seeded
        .engine
        .buyer_events(&buyer_p(), &buyer(), 1, 1000)
        .await
        .unwrap();
    let audited = events.events.iter().filter_map(|e| e.event().ok()).any(|e| matches!(
        e.kind,
        AuditKind::MandateTransition { ref mandate_id, to: MandateStatus::Revoked, ref by, ref reason, .. }
            if mandate_id.as_str() == TRAVEL && *by == buyer_p() && reason.as_deref() == Some("lost trust")
    ));
    assert!(audited);
    // The shopper was not stopped.
    assert_eq!(mandate_status(&s, GROCERIES).await, MandateStatus::Active);
    assert!(s
        .get("/stop")
        .await
        .body
        .contains("Stopped: it holds no usable mandate of yours."));
}

#[tokio::test]
async fn stopping_everything_blocks_every_agent_at_once() {
    let s = serve().await;
    let train = cart(
        "merchant_002",
        &[("TRAIN", "Train", 1, "20.00")],
        "0.00",
        "0.00",
    );
    let p = s.post("/stop/all", &[("confirm", "no")]).await;
    assert_eq!(p.status, 400);
    let out = pay(
        &s.seeded.engine,
        buyer(),
        PLANNER,
        TRAVEL,
        &train,
        &s.seeded.planner_card,
        "before-all",
        false,
    )
    .await;
    assert!(out.attempt().is_some(), "{out:?}");
    let p = s.post("/stop/all", &[("confirm", "yes")]).await;
    assert_eq!(p.status, 303, "{}", p.body);
    for (agent_id, mandate, card, key) in [
        (PLANNER, TRAVEL, &s.seeded.planner_card, "all-1"),
        (BOOKER, BOOKING, &s.seeded.booker_card, "all-2"),
    ] {
        let c = cart(
            if agent_id == BOOKER {
                "merchant_001"
            } else {
                "merchant_002"
            },
            &[("X", "X", 1, "5.00")],
            "0.00",
            "0.00",
        );
        let out = pay(
            &s.seeded.engine,
            buyer(),
            agent_id,
            mandate,
            &c,
            card,
            key,
            false,
        )
        .await;
        assert!(
            refused_with(&out, BlockerCode::BuyerSuspended),
            "{agent_id}: {out:?}"
        );
    }
    let events = s
        .seeded
        .engine
        .buyer_events(&buyer_p(), &buyer(), 1, 1000)
        .await
        .unwrap();
    assert!(events
        .events
        .iter()
        .filter_map(|e| e.event().ok())
        .any(|e| matches!(
            e.kind,
            AuditKind::Suspension { suspended: true, ref by, .. } if *by == buyer_p()
        )));
    for path in ["/", "/stop"] {
        assert!(
            s.get(path).await.body.contains("Everything is stopped."),
            "{path}"
        );
    }
    // The other buyer is not stopped.
    let gift = cart(
        "merchant_001",
        &[("SOCKS", "Socks", 1, "9.00")],
        "0.00",
        "0.00",
    );
    let out = pay(
        &s.seeded.engine,
        other_buyer(),
        OTHER_AGENT,
        OTHER_MANDATE,
        &gift,
        &s.seeded.other_card,
        "other-after-all",
        false,
    )
    .await;
    assert!(out.attempt().is_some(), "{out:?}");
}

#[tokio::test]
async fn pages_update_without_reload_through_their_fragment() {
    let s = serve().await;
    let full = s.get("/activity").await;
    assert!(full.body.contains("main data-poll=\"10\""));
    assert!(
        full.body.contains("X-Dashboard-Fragment"),
        "the poll script is on the page"
    );
    let fragment = |s: &Served| {
        let r = s
            .client
            .get(format!("{}/activity", s.base))
            .header("x-test-principal", ME)
            .header("x-test-session", "s1")
            .header("x-dashboard-fragment", "1");
        async move { r.send().await.unwrap().text().await.unwrap() }
    };
    let before = fragment(&s).await;
    assert!(before.starts_with("<h1>Activity</h1>") && !before.contains("<html"));
    let snack = cart(
        "merchant_003",
        &[("SNACK", "Snack", 1, "3.00")],
        "0.00",
        "0.00",
    );
    // A new payment shows in the next poll.
    let out = pay(
        &s.seeded.engine,
        buyer(),
        SHOPPER,
        GROCERIES,
        &snack,
        &s.seeded.shopper_card,
        "snack",
        false,
    )
    .await;
    assert!(out.decision().is_some());
    let after = fragment(&s).await;
    assert_ne!(before, after);
    assert!(after.contains("3.00 EUR"));
}

#[tokio::test]
async fn the_buyer_event_read_is_the_buyers_alone() {
    let s = serve().await;
    let e = &s.seeded.engine;
    let mine = e.buyer_events(&buyer_p(), &buyer(), 1, 1000).await.unwrap();
    assert!(mine.at_end);
    let bodies: Vec<&str> = mine.events.iter().map(|e| e.body.as_str()).collect();
    assert!(bodies.iter().any(|b| b.contains(TRAVEL)));
    assert!(bodies.iter().any(|b| b.contains("threshold")));
    for b in &bodies {
        assert!(
            !b.contains(OTHER_MANDATE)
                && !b.contains(OTHER_AGENT)
                && !b.contains(&s.seeded.other_attempt.to_string()),
            "{b}"
        );
    }
    let theirs = e
        .buyer_events(&other_p(), &other_buyer(), 1, 1000)
        .await
        .unwrap();
    assert!(!theirs.events.is_empty());
    assert!(theirs
        .events
        .iter()
        .all(|e| !e.body.contains(TRAVEL) && !e.body.contains(PLANNER)));
    // Paging: two halves are the whole.
    let first = e.buyer_events(&buyer_p(), &buyer(), 1, 20).await.unwrap();
    assert!(!first.at_end);
    let mut rest = first.events.clone();
    let mut next = first.next;
    loop {
        let page = e
            .buyer_events(&buyer_p(), &buyer(), next, 20)
            .await
            .unwrap();
        rest.extend(page.events);
        next = page.next;
        if page.at_end {
            break;
        }
    }
    assert_eq!(rest, mine.events);
    for p in [
        other_p(),
        agent_p(PLANNER),
        Principal::Agent(buyer().as_str().parse().unwrap()),
    ] {
        let err = e.buyer_events(&p, &buyer(), 1, 10).await.unwrap_err();
        assert!(
            matches!(err, agent_mandate::engine::EngineError::NotPermitted { .. }),
            "{p}"
        );
    }
    let ops = Principal::Operator("ops_1".parse().unwrap());
    assert_eq!(
        e.buyer_events(&ops, &buyer(), 1, 1000)
            .await
            .unwrap()
            .events,
        mine.events
    );
}
