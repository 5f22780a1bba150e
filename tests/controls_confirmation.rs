//! Controls that ask for the buyer's confirmation: the velocity hold (more than 10 payments an
//! hour per agent), the merchant allowlist, and dual confirmation above an amount (the agent's
//! declaration and the buyer's confirmation, each bound to the snapshot).

#![cfg(feature = "testkit")]

mod common;
mod controls_support;

use std::time::Duration;

use agent_mandate::domain::{Audience, BlockerCode, Declaration, Outcome};
use agent_mandate::engine::{Controls, MerchantControl, PaymentOutcome, Rate};
use controls_support::*;

fn velocity() -> Controls {
    Controls::off().with_velocity(Some(
        Rate::new(10, Duration::from_secs(3600)).expect("rate"),
    ))
}

fn needs_confirmation(o: &PaymentOutcome) -> bool {
    matches!(o, PaymentOutcome::Refused(d) if d.outcome == Outcome::RequiresConfirmation && d.has(BlockerCode::ConfirmationRequired))
}

/// Ten payments in the hour go through; the eleventh needs the buyer's confirmation and the
/// buyer is told; with the buyer's confirmation of the snapshot it goes through.
#[tokio::test]
async fn the_eleventh_payment_in_an_hour_is_held() {
    let (w, sink) = controlled(velocity(), None).await;
    for i in 0..10 {
        let out = run(&w, &pay(&w, &format!("p{i}"))).await;
        assert!(paid(&out), "payment {i}: {out:?}");
        advance(&w, 60);
    }
    assert!(alerts_of(&sink, "velocity_hold").is_empty());
    let out = run(&w, &pay(&w, "p10")).await;
    assert!(needs_confirmation(&out), "{out:?}");
    let held = alerts_of(&sink, "velocity_hold");
    assert_eq!(held.len(), 1);
    assert_eq!(held[0].audience, Audience::Buyer);
    confirm(&w, 1).await;
    assert!(
        paid(&run(&w, &pay(&w, "p10")).await),
        "confirmed by the buyer"
    );
}

/// Window edge: the first payment leaves the window exactly one hour after it.
#[tokio::test]
async fn the_hold_lifts_as_the_hour_rolls() {
    let (w, _) = controlled(velocity(), None).await;
    assert!(paid(&run(&w, &pay(&w, "p0")).await)); // t0
    advance(&w, 60);
    for i in 1..10 {
        assert!(paid(&run(&w, &pay(&w, &format!("p{i}"))).await));
    }
    advance(&w, 3539); // t0 + 1 h - 1 s: ten in the window
    assert!(needs_confirmation(&run(&w, &pay(&w, "early")).await));
    advance(&w, 1); // t0 + 1 h: p0 is out
    assert!(paid(&run(&w, &pay(&w, "rolled")).await));
}

/// Allowlist mode: a merchant outside the list needs the buyer's confirmation (and the buyer
/// is alerted); a listed merchant does not.
#[tokio::test]
async fn allowlist_mode_requires_confirmation_outside_the_list() {
    let outside = Controls::off()
        .with_merchants(MerchantControl::Allowlist(vec!["merchant_999"
            .parse()
            .expect("id")]))
        .expect("allowlist");
    let (w, sink) = controlled(outside, None).await;
    let out = run(&w, &pay(&w, "p0")).await;
    assert!(needs_confirmation(&out), "{out:?}");
    let alerts = alerts_of(&sink, "new_merchant");
    assert_eq!(alerts.len(), 1);
    confirm(&w, 1).await;
    assert!(paid(&run(&w, &pay(&w, "p0")).await));

    let listed = Controls::off()
        .with_merchants(MerchantControl::Allowlist(vec![request(&w).merchant_id]))
        .expect("allowlist");
    let (w, sink) = controlled(listed, None).await;
    assert!(paid(&run(&w, &pay(&w, "p0")).await));
    assert!(sink.alerts().is_empty());
    assert!(Controls::off()
        .with_merchants(MerchantControl::Allowlist(Vec::new()))
        .is_err());
}

/// Above the amount both are needed: neither alone is enough, a declaration of another
/// snapshot or amount does not count; at the amount (not above) neither is needed.
#[tokio::test]
async fn dual_confirmation_above_the_amount() {
    let controls = Controls::off().with_dual_confirmation_above(Some(money("143.99")));
    let (w, _) = controlled(controls, None).await;
    let declared = Declaration::new(w.snapshot.id(), money("144.00"));
    assert!(needs_confirmation(&run(&w, &pay(&w, "none")).await));
    assert!(needs_confirmation(
        &run(
            &w,
            &pay(&w, "agent-only").with_declaration(declared.clone())
        )
        .await
    ));
    confirm(&w, 1).await;
    assert!(needs_confirmation(&run(&w, &pay(&w, "buyer-only")).await));
    let wrong_amount = Declaration::new(w.snapshot.id(), money("143.00"));
    assert!(needs_confirmation(
        &run(&w, &pay(&w, "wrong").with_declaration(wrong_amount)).await
    ));
    assert!(paid(
        &run(&w, &pay(&w, "both").with_declaration(declared)).await
    ));

    let at_amount = Controls::off().with_dual_confirmation_above(Some(money("144.00")));
    let (w, _) = controlled(at_amount, None).await;
    assert!(
        paid(&run(&w, &pay(&w, "at")).await),
        "144.00 is not above 144.00"
    );
}
