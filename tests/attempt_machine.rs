//! The payment attempt state machine: the whole table, every refusal, terminal states
//! absorbing, unknown PSP statuses never terminal, hold effects (I2, I5).

mod common;

use agent_mandate::domain::examples;
use agent_mandate::domain::{
    AttemptEvent as E, AttemptStatus as S, CheckoutId, CredentialRef, HoldEffect, Money, Operation,
    PaymentAttempt, ProviderReport, ProviderStatus,
};
use common::{eur, id, usd};
use proptest::prelude::*;

fn attempt() -> PaymentAttempt {
    let snapshot = examples::travel_backpack_snapshot();
    PaymentAttempt::new(
        id("att_1"),
        examples::authorize_request(&snapshot),
        id::<CredentialRef>("cred_1"),
        id::<CheckoutId>("checkout_789"),
        false,
        examples::now(),
    )
}

fn report(
    status: ProviderStatus,
    authorized: &str,
    captured: &str,
    refunded: &str,
) -> ProviderReport {
    ProviderReport {
        reference: Some(id("pi_1")),
        status,
        authorized: eur(authorized),
        captured: eur(captured),
        refunded: eur(refunded),
        decline_code: None,
    }
}

/// An attempt in `status` with amounts that fit it (the request is for 144.00).
fn in_state(status: S) -> PaymentAttempt {
    let mut a = attempt();
    a.status = status;
    a.submissions = 1;
    let (auth, cap, refd) = match status {
        S::Authorized | S::RequiresBuyerAction => ("144.00", "0.00", "0.00"),
        S::PartiallyCaptured => ("144.00", "100.00", "0.00"),
        S::Captured => ("144.00", "144.00", "0.00"),
        S::PartiallyRefunded => ("144.00", "144.00", "44.00"),
        S::Refunded => ("144.00", "144.00", "144.00"),
        _ => ("0.00", "0.00", "0.00"),
    };
    a.authorized = eur(auth);
    a.captured = eur(cap);
    a.refunded = eur(refd);
    if a.authorized.is_zero() {
        a.provider_ref = None;
    } else {
        a.provider_ref = Some(id("pi_1"));
    }
    a
}

fn events() -> Vec<E> {
    vec![
        E::Validate,
        E::Submit,
        E::Retryable,
        E::Reject,
        E::Lost(Operation::Authorize),
        E::Report(report(ProviderStatus::Authorized, "144.00", "0.00", "0.00")),
        E::Capture(eur("144.00")),
        E::Void,
        E::Refund(eur("10.00")),
        E::Withdraw,
    ]
}

/// The expected table: `Some(to)` legal, `None` refused.
fn expected(from: S, event: &E) -> Option<S> {
    use S::*;
    match (from, event) {
        (Failed | Cancelled | Refunded, _) => None,
        (NotStarted, E::Validate) => Some(AuthorityValidated),
        (AuthorityValidated, E::Submit) => Some(PendingProviderResponse),
        (PendingProviderResponse, E::Retryable) => Some(AuthorityValidated),
        (PendingProviderResponse, E::Reject) => Some(Failed),
        (
            PendingProviderResponse
            | RequiresBuyerAction
            | Authorized
            | PartiallyCaptured
            | Captured
            | PartiallyRefunded,
            E::Lost(_),
        ) => Some(Ambiguous),
        (PendingProviderResponse | RequiresBuyerAction | Ambiguous | Authorized, E::Report(_)) => {
            Some(Authorized)
        }
        (Authorized, E::Capture(_)) => Some(Captured),
        (Authorized | RequiresBuyerAction, E::Void) => Some(Cancelled),
        (AuthorityValidated, E::Withdraw) => Some(Cancelled),
        (Captured | PartiallyCaptured | PartiallyRefunded, E::Refund(_)) => Some(PartiallyRefunded),
        _ => None,
    }
}

#[test]
fn every_status_and_event_follows_the_table() {
    let now = examples::now();
    let mut checked = 0;
    for from in S::ALL {
        for event in events() {
            let a = in_state(from);
            let got = a.apply(&event, now);
            match (expected(from, &event), got) {
                (Some(to), Ok(next)) => {
                    assert_eq!(next.status, to, "{from} --{}-->", event.as_str())
                }
                (None, Err(err)) => {
                    assert_eq!(err.status, from);
                    assert_eq!(err.event, event.as_str());
                    assert_eq!(
                        a.status, from,
                        "a refused transition leaves the attempt as it was"
                    );
                }
                (want, got) => panic!(
                    "{from} --{}--> expected {want:?}, got {got:?}",
                    event.as_str()
                ),
            }
            checked += 1;
        }
    }
    assert_eq!(checked, 12 * 10);
}

#[test]
fn terminal_states_absorb_every_event() {
    for from in [S::Failed, S::Cancelled, S::Refunded] {
        assert!(from.is_terminal());
        for event in events() {
            assert!(
                in_state(from).apply(&event, examples::now()).is_err(),
                "{from} absorbs {}",
                event.as_str()
            );
        }
    }
}

#[test]
fn an_unknown_psp_status_makes_a_pending_attempt_ambiguous_never_terminal() {
    for from in [
        S::PendingProviderResponse,
        S::Ambiguous,
        S::RequiresBuyerAction,
    ] {
        let r = report(
            ProviderStatus::Unknown("requires_capture_v9".into()),
            "0.00",
            "0.00",
            "0.00",
        );
        let next = in_state(from)
            .apply(&E::Report(r), examples::now())
            .unwrap();
        assert_eq!(next.status, S::Ambiguous);
        assert!(!next.status.is_terminal());
    }
}

#[test]
fn an_unknown_psp_status_cannot_move_a_settled_attempt() {
    for from in [
        S::Authorized,
        S::Captured,
        S::PartiallyCaptured,
        S::PartiallyRefunded,
    ] {
        let r = report(
            ProviderStatus::Unknown("weird".into()),
            "144.00",
            "0.00",
            "0.00",
        );
        assert!(
            in_state(from)
                .apply(&E::Report(r), examples::now())
                .is_err(),
            "{from}"
        );
    }
}

#[test]
fn a_report_never_moves_a_settled_attempt_backwards() {
    let back = report(ProviderStatus::Authorized, "144.00", "0.00", "0.00");
    assert!(in_state(S::Captured)
        .apply(&E::Report(back), examples::now())
        .is_err());
    let less = report(ProviderStatus::Captured, "144.00", "144.00", "0.00");
    assert!(in_state(S::PartiallyRefunded)
        .apply(&E::Report(less), examples::now())
        .is_err());
}

#[test]
fn not_found_fails_only_a_pending_authorization() {
    let nf = report(ProviderStatus::NotFound, "0.00", "0.00", "0.00");
    let mut amb = in_state(S::Ambiguous);
    amb.pending = Some(Operation::Authorize);
    assert_eq!(
        amb.apply(&E::Report(nf.clone()), examples::now())
            .unwrap()
            .status,
        S::Failed
    );
    amb.pending = Some(Operation::Capture);
    assert!(
        amb.apply(&E::Report(nf.clone()), examples::now()).is_err(),
        "a captured payment cannot vanish"
    );
    assert!(in_state(S::Authorized)
        .apply(&E::Report(nf), examples::now())
        .is_err());
}

#[test]
fn reports_with_inconsistent_amounts_are_refused() {
    let now = examples::now();
    let pending = in_state(S::PendingProviderResponse);
    // More authorized than requested.
    let r = report(ProviderStatus::Authorized, "200.00", "0.00", "0.00");
    assert!(pending.apply(&E::Report(r), now).is_err());
    // Captured more than authorized.
    let r = report(ProviderStatus::Captured, "100.00", "120.00", "0.00");
    assert!(pending.apply(&E::Report(r), now).is_err());
    // Another currency.
    let mut r = report(ProviderStatus::Authorized, "144.00", "0.00", "0.00");
    r.authorized = usd("144.00");
    assert!(pending.apply(&E::Report(r), now).is_err());
    // Captured with nothing captured.
    let r = report(ProviderStatus::Captured, "144.00", "0.00", "0.00");
    assert!(pending.apply(&E::Report(r), now).is_err());
}

#[test]
fn capture_amount_rules() {
    let now = examples::now();
    let a = in_state(S::Authorized);
    assert_eq!(
        a.apply(&E::Capture(eur("144.00")), now).unwrap().status,
        S::Captured
    );
    assert_eq!(
        a.apply(&E::Capture(eur("100.00")), now).unwrap().status,
        S::PartiallyCaptured
    );
    assert!(
        a.apply(&E::Capture(eur("144.01")), now).is_err(),
        "more than authorized"
    );
    assert!(a.apply(&E::Capture(eur("0.00")), now).is_err(), "zero");
    assert!(
        a.apply(&E::Capture(usd("10.00")), now).is_err(),
        "another currency"
    );
    // A partial capture is final (the rest is released at the PSP).
    let partial = a.apply(&E::Capture(eur("100.00")), now).unwrap();
    assert!(partial.apply(&E::Capture(eur("44.00")), now).is_err());
}

#[test]
fn refund_amount_rules() {
    let now = examples::now();
    let c = in_state(S::Captured);
    let part = c.apply(&E::Refund(eur("44.00")), now).unwrap();
    assert_eq!(part.status, S::PartiallyRefunded);
    assert_eq!(part.refunds, 1);
    let rest = part.apply(&E::Refund(eur("100.00")), now).unwrap();
    assert_eq!(rest.status, S::Refunded);
    assert!(
        part.apply(&E::Refund(eur("100.01")), now).is_err(),
        "refunds cannot exceed the capture"
    );
    assert!(c.apply(&E::Refund(eur("0.00")), now).is_err());
    assert!(
        in_state(S::Authorized)
            .apply(&E::Refund(eur("1.00")), now)
            .is_err(),
        "nothing captured yet"
    );
}

#[test]
fn each_refund_gets_its_own_psp_key_and_each_submission_its_own_hold() {
    let c = in_state(S::Captured);
    let first = c.provider_key(Operation::Refund);
    let after = c.apply(&E::Refund(eur("1.00")), examples::now()).unwrap();
    assert_ne!(first, after.provider_key(Operation::Refund));
    assert_eq!(
        c.provider_key(Operation::Authorize),
        after.provider_key(Operation::Authorize)
    );
    let mut a = attempt();
    a.submissions = 1;
    let h1 = a.hold_id();
    a.submissions = 2;
    assert_ne!(h1, a.hold_id());
}

#[test]
fn hold_effects_follow_the_money() {
    let now = examples::now();
    let pending = in_state(S::PendingProviderResponse);
    let ok = report(ProviderStatus::Authorized, "144.00", "0.00", "0.00");
    let auth = pending.apply(&E::Report(ok), now).unwrap();
    assert!(
        pending.hold_effects(&auth).is_empty(),
        "authorized: the hold stays"
    );
    let amb = pending.apply(&E::Lost(Operation::Authorize), now).unwrap();
    assert!(
        pending.hold_effects(&amb).is_empty(),
        "ambiguous: the hold stays (I5)"
    );
    let failed = pending.apply(&E::Reject, now).unwrap();
    assert_eq!(pending.hold_effects(&failed), vec![HoldEffect::Release]);
    let retry = pending.apply(&E::Retryable, now).unwrap();
    assert_eq!(pending.hold_effects(&retry), vec![HoldEffect::Release]);
    let cap = auth.apply(&E::Capture(eur("100.00")), now).unwrap();
    assert_eq!(
        auth.hold_effects(&cap),
        vec![HoldEffect::Commit(eur("100.00"))]
    );
    let void = auth.apply(&E::Void, now).unwrap();
    assert_eq!(auth.hold_effects(&void), vec![HoldEffect::Release]);
    let refund = cap.apply(&E::Refund(eur("30.00")), now).unwrap();
    assert_eq!(
        cap.hold_effects(&refund),
        vec![HoldEffect::Refund(eur("30.00"))]
    );
    // Ambiguous resolved as captured and partly refunded: commit, then refund.
    let seen = report(ProviderStatus::Captured, "144.00", "144.00", "4.00");
    let resolved = amb.apply(&E::Report(seen), now).unwrap();
    assert_eq!(resolved.status, S::PartiallyRefunded);
    assert_eq!(
        amb.hold_effects(&resolved),
        vec![
            HoldEffect::Commit(eur("144.00")),
            HoldEffect::Refund(eur("4.00"))
        ]
    );
}

#[test]
fn a_declined_report_fails_and_keeps_the_code() {
    let mut r = report(ProviderStatus::Declined, "0.00", "0.00", "0.00");
    r.decline_code = Some("card_declined".into());
    let next = in_state(S::PendingProviderResponse)
        .apply(&E::Report(r), examples::now())
        .unwrap();
    assert_eq!(next.status, S::Failed);
    assert_eq!(next.decline_code.as_deref(), Some("card_declined"));
}

fn any_report() -> impl Strategy<Value = ProviderReport> {
    let status = prop_oneof![
        Just(ProviderStatus::RequiresAction),
        Just(ProviderStatus::Authorized),
        Just(ProviderStatus::Captured),
        Just(ProviderStatus::Declined),
        Just(ProviderStatus::Cancelled),
        Just(ProviderStatus::NotFound),
        "[a-z_]{0,12}".prop_map(ProviderStatus::Unknown),
    ];
    (status, 0i64..20_000, 0i64..20_000, 0i64..20_000).prop_map(|(status, a, c, r)| {
        ProviderReport {
            reference: Some("pi_9".parse().unwrap()),
            status,
            authorized: Money::from_minor(a, agent_mandate::domain::Currency::EUR).unwrap(),
            captured: Money::from_minor(c, agent_mandate::domain::Currency::EUR).unwrap(),
            refunded: Money::from_minor(r, agent_mandate::domain::Currency::EUR).unwrap(),
            decline_code: None,
        }
    })
}

proptest! {
    /// No report, whatever it says, takes an attempt to a terminal state unless the status
    /// is a definitive one; amounts never become inconsistent (captured <= authorized <=
    /// requested, refunded <= captured).
    #[test]
    fn reports_never_invent_terminal_states_or_inconsistent_amounts(
        from in prop::sample::select(S::ALL.to_vec()),
        r in any_report(),
    ) {
        let a = in_state(from);
        if let Ok(next) = a.apply(&E::Report(r.clone()), examples::now()) {
            if next.status.is_terminal() {
                prop_assert!(matches!(r.status, ProviderStatus::Declined | ProviderStatus::Cancelled | ProviderStatus::NotFound | ProviderStatus::Captured));
            }
            if matches!(r.status, ProviderStatus::Unknown(_)) {
                prop_assert_eq!(next.status, S::Ambiguous);
            }
            prop_assert!(next.captured.fits_within(&next.authorized));
            prop_assert!(next.authorized.fits_within(&next.request.amount));
            prop_assert!(next.refunded.fits_within(&next.captured));
        } else {
            prop_assert_eq!(a.status, from);
        }
    }
}
