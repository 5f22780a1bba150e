//! The size of audit events: decisions made from accepted inputs fit
//! `MAX_EVENT_BODY_BYTES` untouched, and any larger event is written cut to fit, with a
//! `truncated` marker, never dropped (the last guard behind the input limits, I11).

use agent_mandate::domain::examples;
use agent_mandate::domain::{
    evaluate, verify_chain, AttemptId, AuditEvent, AuditHash, AuditKind, ChainedEvent,
    CheckoutState, ContentDigest, EvaluationDocument, Truncation, UpstreamBlocker,
    MAX_EVENT_BODY_BYTES, MAX_UPSTREAM_BLOCKERS, MAX_UPSTREAM_MESSAGE_LEN,
};
use sha2::{Digest as _, Sha256};

/// The decision event the engine writes for `doc` (with a 128-byte attempt id).
fn decision_event(doc: &EvaluationDocument) -> AuditEvent {
    let d = evaluate(&doc.input());
    AuditEvent {
        at: doc.now,
        kind: AuditKind::Decision {
            command: "execute_payment".to_owned(),
            actor_id: doc.request.actor.id.clone(),
            mandate_id: doc.request.mandate_id.clone(),
            action: doc.request.action,
            amount: doc.request.amount,
            snapshot_id: doc.request.snapshot_id,
            outcome: d.outcome,
            blockers: d.blockers,
            evidence: d.evidence,
            request_digest: d.request_digest,
            attempt_id: Some(AttemptId::new("a".repeat(128)).unwrap()),
        },
    }
}

/// An upstream blocker at its limits, in characters JSON escapes (two bytes each).
fn widest_blocker(i: usize) -> UpstreamBlocker {
    let code = format!("{i:03}{}", "\"".repeat(125));
    UpstreamBlocker {
        code: code.parse().unwrap(),
        message: "\\".repeat(MAX_UPSTREAM_MESSAGE_LEN).parse().unwrap(),
    }
}

fn sha256(bytes: &[u8]) -> ContentDigest {
    ContentDigest::from_bytes(Sha256::digest(bytes).into())
}

/// The widest invalid checkout accepted still gives a decision event under the cap, untouched.
#[test]
fn widest_accepted_checkout_fits_the_cap() {
    let mut doc = examples::travel_backpack_document();
    doc.checkout = CheckoutState::Invalid {
        checkout_id: "c".repeat(128).parse().unwrap(),
        blockers: (0..MAX_UPSTREAM_BLOCKERS).map(widest_blocker).collect(),
    };
    let text = serde_json::to_string(&doc).unwrap();
    let doc: EvaluationDocument = agent_mandate::json::from_json(&text).unwrap();
    let body = decision_event(&doc).to_body();
    assert!(body.len() <= MAX_EVENT_BODY_BYTES, "{} bytes", body.len());
    assert_eq!(Truncation::of_body(&body), None);
    assert_eq!(body, serde_json::to_string(&decision_event(&doc)).unwrap());
}

/// A checkout built in code, past every limit (5,000 blockers: the 3 MB event), is still
/// audited: the event is written cut to the cap, names what was cut with its original count and
/// the SHA-256 of the full body, reads back as a decision, and chains and verifies.
#[test]
fn oversized_decision_event_is_truncated_not_dropped() {
    let mut doc = examples::travel_backpack_document();
    let blocker = UpstreamBlocker {
        code: "INVENTORY_STALE".parse().unwrap(),
        message: "x".repeat(600).parse().unwrap(),
    };
    doc.checkout = CheckoutState::Invalid {
        checkout_id: "checkout_789".parse().unwrap(),
        blockers: vec![blocker; 5000],
    };
    assert!(doc.checkout.validate().is_err());
    let event = decision_event(&doc);
    let full = serde_json::to_string(&event).unwrap();
    assert!(full.len() > 3_000_000, "{} bytes", full.len());

    let body = event.to_body();
    assert!(body.len() <= MAX_EVENT_BODY_BYTES, "{} bytes", body.len());
    let marker = Truncation::of_body(&body).expect("a truncated marker");
    assert_eq!(marker.original_bytes, full.len());
    assert_eq!(marker.digest, sha256(full.as_bytes()));
    assert_eq!(marker.lists.len(), 1, "{marker:?}");
    assert_eq!(marker.lists[0].path, "event.blockers[0].causes");
    assert_eq!(marker.lists[0].original, 5000);
    assert!(marker.lists[0].kept > 0 && marker.lists[0].kept < 5000);

    // It reads back as the decision, with every blocker and the first causes in order.
    let back: AuditEvent = serde_json::from_str(&body).unwrap();
    let (AuditKind::Decision { blockers: cut, .. }, AuditKind::Decision { blockers, .. }) =
        (&back.kind, &event.kind)
    else {
        panic!("not a decision: {back:?}");
    };
    assert_eq!(cut.len(), blockers.len());
    assert_eq!(cut[0].causes.len(), marker.lists[0].kept);
    assert_eq!(cut[0].causes[..], blockers[0].causes[..cut[0].causes.len()]);
    assert_eq!(cut[1..], blockers[1..]);

    let first = ChainedEvent::link(1, AuditHash::GENESIS, body);
    assert!(verify_chain(&[first], 1, AuditHash::GENESIS).is_ok());
}

/// Texts and several lists: an event with a 1 MB reason and long lists everywhere is cut to the
/// cap, texts to the text limit first.
#[test]
fn long_texts_and_many_lists_are_cut_to_fit() {
    let at = examples::travel_backpack_document().now;
    let event = AuditEvent {
        at,
        kind: AuditKind::OrderFailed {
            attempt_id: "attempt_1".parse().unwrap(),
            reason: "r".repeat(1 << 20),
        },
    };
    let body = event.to_body();
    assert!(body.len() <= MAX_EVENT_BODY_BYTES);
    let marker = Truncation::of_body(&body).unwrap();
    assert_eq!(marker.texts[0].path, "event.reason");
    assert_eq!(marker.texts[0].original, 1 << 20);
    assert!(serde_json::from_str::<AuditEvent>(&body).is_ok());

    let hold = AuditEvent {
        at,
        kind: AuditKind::Hold {
            attempt_id: "attempt_1".parse().unwrap(),
            action: agent_mandate::domain::HoldAction::Placed,
            amount: examples::travel_backpack_document().request.amount,
            mandate_ids: (0..20_000)
                .map(|i| format!("mandate_{i}").parse().unwrap())
                .collect(),
            policy: Some("p".repeat(5000)),
        },
    };
    let body = hold.to_body();
    assert!(body.len() <= MAX_EVENT_BODY_BYTES);
    let marker = Truncation::of_body(&body).unwrap();
    assert_eq!(marker.lists[0].path, "event.mandate_ids");
    assert_eq!(marker.lists[0].original, 20_000);
    assert_eq!(marker.texts[0].path, "event.policy");
    let back: AuditEvent = serde_json::from_str(&body).unwrap();
    let AuditKind::Hold {
        mandate_ids,
        policy,
        ..
    } = back.kind
    else {
        panic!("not a hold");
    };
    assert_eq!(mandate_ids.len(), marker.lists[0].kept);
    assert_eq!(policy.map(|p| p.len()), Some(1024));
}

/// Events under the cap are written exactly as before: no marker, the plain serialisation.
#[test]
fn events_under_the_cap_are_untouched() {
    let doc = examples::travel_backpack_document();
    let event = decision_event(&doc);
    let body = event.to_body();
    assert_eq!(body, serde_json::to_string(&event).unwrap());
    assert_eq!(Truncation::of_body(&body), None);
}

#[cfg(feature = "proptest")]
mod properties {
    use super::*;
    use agent_mandate::json::from_json;
    use agent_mandate::strategies as st;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        /// Any accepted evaluation document (generated, with up to 64 upstream blockers at
        /// their widest, read back through `from_json`) gives a decision event under the cap,
        /// never truncated.
        #[test]
        fn decision_events_of_accepted_inputs_fit_the_cap(
            doc in st::evaluation_document(),
            upstream in proptest::option::of(0..=MAX_UPSTREAM_BLOCKERS),
        ) {
            let mut doc = doc;
            if let Some(n) = upstream {
                doc.checkout = CheckoutState::Invalid {
                    checkout_id: "c".repeat(128).parse().unwrap(),
                    blockers: (0..n).map(widest_blocker).collect(),
                };
            }
            let text = serde_json::to_string(&doc).unwrap();
            let doc: EvaluationDocument = from_json(&text)
                .map_err(|e| TestCaseError::fail(format!("refused: {e}")))?;
            let event = decision_event(&doc);
            let body = event.to_body();
            prop_assert!(body.len() <= MAX_EVENT_BODY_BYTES, "{} bytes", body.len());
            prop_assert_eq!(Truncation::of_body(&body), None);
            prop_assert_eq!(body, serde_json::to_string(&event).unwrap());
        }
    }
}
