//! The mandate lifecycle as a pure transition table, and what each status lets through.

use agent_mandate::domain::{
    evaluate, examples, BlockerCode, DelegationError, LifecycleEvent, Mandate, MandateStatus,
    Outcome, PaymentAction, Text,
};
use chrono::Duration;

fn reason() -> Text {
    "buyer asked".parse().unwrap()
}

fn events() -> Vec<LifecycleEvent> {
    vec![
        LifecycleEvent::Confirm,
        LifecycleEvent::Reject { reason: reason() },
        LifecycleEvent::Revoke { reason: reason() },
        LifecycleEvent::MarkUsed,
        LifecycleEvent::Expire,
    ]
}

/// A mandate in `status`, reached through legal transitions from a pending one.
fn in_status(status: MandateStatus) -> Mandate {
    let now = examples::now();
    let mut spec = examples::travel_backpack_mandate().spec().clone();
    spec.lifecycle = agent_mandate::domain::Lifecycle::new(
        MandateStatus::PendingConfirmation,
        spec.lifecycle.created_at,
    );
    let pending = Mandate::new(spec).unwrap();
    let active = || pending.apply(&LifecycleEvent::Confirm, now).unwrap();
    match status {
        MandateStatus::PendingConfirmation => pending.clone(),
        MandateStatus::Active => active(),
        MandateStatus::Used => active().apply(&LifecycleEvent::MarkUsed, now).unwrap(),
        MandateStatus::Expired => active().apply(&LifecycleEvent::Expire, now).unwrap(),
        MandateStatus::Revoked => active()
            .apply(&LifecycleEvent::Revoke { reason: reason() }, now)
            .unwrap(),
        MandateStatus::Rejected => pending
            .apply(&LifecycleEvent::Reject { reason: reason() }, now)
            .unwrap(),
    }
}

const ALL: [MandateStatus; 6] = MandateStatus::ALL;

/// The whole table, every (status, event) pair: legal transitions land where the table says and
/// stamp their time; illegal ones are typed errors naming the mandate, status and event, and
/// leave the mandate unchanged; terminal states absorb.
#[test]
fn transition_table_is_exactly_the_documented_one() {
    use MandateStatus as S;
    let now = examples::now();
    for from in ALL {
        for event in events() {
            let m = in_status(from);
            let expected = match (from, event.as_str()) {
                (S::PendingConfirmation, "confirm") => Some(S::Active),
                (S::PendingConfirmation, "reject") => Some(S::Rejected),
                (S::PendingConfirmation | S::Active, "revoke") => Some(S::Revoked),
                (S::Active, "mark_used") => Some(S::Used),
                (S::PendingConfirmation | S::Active, "expire") => Some(S::Expired),
                _ => None,
            };
            match (m.apply(&event, now), expected) {
                (Ok(next), Some(to)) => {
                    assert_eq!(next.status(), to, "{from} + {}", event.as_str());
                    let l = next.lifecycle();
                    let stamped = match to {
                        S::Active => l.activated_at,
                        S::Used => l.used_at,
                        S::Expired => l.expired_at,
                        S::Revoked => l.revoked_at,
                        S::Rejected => l.rejected_at,
                        S::PendingConfirmation => None,
                    };
                    assert_eq!(stamped, Some(now), "{from} + {}", event.as_str());
                    // The result is itself a valid mandate (it round-trips through validation).
                    assert_eq!(Mandate::new(next.spec().clone()).unwrap(), next);
                }
                (Err(e), None) => {
                    assert_eq!(e.status, from);
                    assert_eq!(e.event, event.as_str());
                    assert_eq!(&e.mandate_id, m.id());
                    assert_eq!(m.status(), from, "an illegal transition changed the state");
                    assert!(
                        from.is_terminal()
                            || matches!(
                                (from, event.as_str()),
                                (S::PendingConfirmation, "mark_used")
                                    | (S::Active, "confirm" | "reject")
                            )
                    );
                }
                (got, want) => panic!("{from} + {}: got {got:?}, want {want:?}", event.as_str()),
            }
        }
    }
}

/// Confirming at or after the expiry is refused: an expired authority cannot be activated.
#[test]
fn confirming_after_expiry_is_refused() {
    let pending = in_status(MandateStatus::PendingConfirmation);
    let expiry = pending.scope().validity.expires_at;
    assert!(pending.apply(&LifecycleEvent::Confirm, expiry).is_err());
    assert!(pending
        .apply(&LifecycleEvent::Confirm, expiry + Duration::seconds(1))
        .is_err());
    assert!(pending
        .apply(&LifecycleEvent::Confirm, expiry - Duration::seconds(1))
        .is_ok());
}

/// What each status lets through, per action. A used mandate grants no new spend (prepare,
/// authorize) but the capture, refund and order commitment of the payment that used it go on.
#[test]
fn each_status_blocks_what_it_should() {
    use MandateStatus as S;
    for status in ALL {
        for action in PaymentAction::ALL {
            let mut doc = examples::travel_backpack_document();
            doc.chain = vec![in_status(status)];
            doc.request.action = action;
            let d = evaluate(&doc.input());
            let expected = match (status, action) {
                (S::Active, _) => None,
                (S::Used, a) if !a.creates_spend() => None,
                (S::Used, _) => Some(BlockerCode::MandateUsed),
                (S::PendingConfirmation, _) => Some(BlockerCode::MandatePendingConfirmation),
                (S::Expired, _) => Some(BlockerCode::MandateExpired),
                (S::Revoked, _) => Some(BlockerCode::MandateRevoked),
                (S::Rejected, _) => Some(BlockerCode::MandateRejected),
            };
            match expected {
                None => assert_eq!(d.outcome, Outcome::Allowed, "{status} {action}: {d}"),
                Some(code) => {
                    assert!(d.has(code), "{status} {action}: {d}");
                    assert_ne!(d.outcome, Outcome::Allowed);
                }
            }
        }
    }
}

/// Only an active mandate can delegate (I6): a child of a pending, used, expired, revoked or
/// rejected parent is refused before any scope comparison.
#[test]
fn only_an_active_parent_can_delegate() {
    for status in ALL {
        let parent = in_status(status);
        let mut child = parent.spec().clone();
        child.id = "mandate_child".parse().unwrap();
        child.parent_id = Some(parent.id().clone());
        child.lifecycle = agent_mandate::domain::Lifecycle::new(
            MandateStatus::Active,
            child.lifecycle.created_at,
        );
        let result = parent.derive(child);
        if status == MandateStatus::Active {
            assert!(result.is_ok(), "{result:?}");
        } else {
            assert!(
                matches!(result, Err(DelegationError::ParentNotActive { status: s, .. }) if s == status),
                "{status}: {result:?}"
            );
        }
    }
}
