//! The delegated-payment scenario table: every row of it, the Travel Backpack
//! story, and a negative test for every rule of the authority decision.
//!
//! Invariants defended: I1 (only an `allowed` decision lets money move: every refusal below is a
//! decision that is not `allowed`), I2 at decision level (ancestor caps), I6 (chains), I8
//! (determinism and stable blocker order).

mod common;

use std::collections::BTreeSet;

use agent_mandate::domain::examples;
use agent_mandate::domain::{
    evaluate, Baseline, BlockerClass, BlockerCode, BlockerCode as C, BreakerScope, CartBinding,
    CheckoutState, ConfirmationCondition, ConfirmationRule, ControlSignals, CredentialStatus,
    Currency, EvaluationDocument, Evidence, Lifecycle, LifecycleEvent, LineItem, LoopLimit,
    MandateStatus, MarketplaceId, MerchantScope, Outcome, PaymentAction, PurchaseIntent,
    ResourcePayments, Sku, Text, Urgency,
};
use common::*;

fn story() -> EvaluationDocument {
    examples::travel_backpack_document()
}

/// A mandate bound to exactly the story's final snapshot (EUR 144.00), no budgets beyond one use.
fn snapshot_bound_story() -> EvaluationDocument {
    let mut doc = story();
    let bound = doc.snapshot.id();
    edit_leaf(&mut doc, |s| {
        s.scope.cart = CartBinding::Snapshot { snapshot_id: bound };
    });
    doc
}

fn revoke_reason() -> Text {
    id("buyer changed their mind")
}

// ---------------------------------------------------------------------------------------------
// The 14 rows of the scenario table.
// ---------------------------------------------------------------------------------------------

/// Row 1: "Payment artifact present but checkout blocked -> CHECKOUT_NOT_VALID". The upstream
/// blockers are preserved as nested causes, not hidden.
#[test]
fn row01_checkout_blocked_is_checkout_not_valid_with_upstream_causes() {
    let mut doc = story();
    doc.checkout = examples::invalid_checkout();
    let d = decide(&doc);
    assert_eq!(d.outcome, Outcome::Blocked);
    assert_codes(&d, &[C::CheckoutNotValid]);
    let causes: Vec<&str> = d.blockers[0]
        .causes
        .iter()
        .map(|c| c.code.as_str())
        .collect();
    assert_eq!(causes, ["INVENTORY_STALE", "RETURN_POLICY_MISSING"]);
    assert!(d.blockers[0].causes[0].message.contains("stale"));
    assert!(d.blockers[0].causes[1].message.contains("return policy"));
}

/// Row 2: "Checkout valid but no mandate exists -> AUTHORITY_MISSING" (deny by default).
#[test]
fn row02_no_mandate_is_authority_missing() {
    let mut doc = story();
    doc.chain.clear();
    doc.usage.clear();
    let d = decide(&doc);
    assert_eq!(d.outcome, Outcome::Blocked);
    assert_codes(&d, &[C::AuthorityMissing]);
}

/// Row 3: "Mandate exists but cart snapshot changed -> CART_SNAPSHOT_MISMATCH". The mandate is
/// bound to the EUR 144.00 snapshot; the merchant then raised shipping to 5.00 (EUR 149.00,
/// still under every cap): a new snapshot id, so the old authority does not carry over.
#[test]
fn row03_cart_snapshot_changed_is_cart_snapshot_mismatch() {
    let mut doc = snapshot_bound_story();
    let changed = snapshot_with(|c| {
        c.totals.shipping = eur("5.00");
        c.totals.total = eur("149.00");
    });
    assert_ne!(changed.id(), doc.snapshot.id());
    use_snapshot(&mut doc, changed);
    let d = decide(&doc);
    assert_eq!(d.outcome, Outcome::Blocked);
    assert_codes(&d, &[C::CartSnapshotMismatch]);
    assert_eq!(d.blockers[0].mandate_id, Some(mandate_id("mandate_001")));
}

/// Row 3, second shape: the checkout service validated one snapshot and the agent requests
/// payment for another (the cart changed between checkout and payment).
#[test]
fn row03_request_for_other_snapshot_than_checkout_validated_is_mismatch() {
    let mut doc = story();
    let changed = snapshot_with(|c| c.totals = totals_with_shipping("5.00"));
    let validated = doc.snapshot.id();
    use_snapshot(&mut doc, changed);
    doc.checkout = examples::valid_checkout(validated);
    let d = decide(&doc);
    assert_eq!(d.outcome, Outcome::Blocked);
    assert_codes(&d, &[C::CartSnapshotMismatch]);
}

fn totals_with_shipping(shipping: &str) -> agent_mandate::domain::Totals {
    let base = examples::backpack_content(shipping, "15.00", Currency::EUR);
    base.totals
}

/// Row 4: "Mandate limit EUR 150, final total EUR 153 -> AMOUNT_EXCEEDS_MANDATE". The story's
/// mandate also caps one payment and its lifetime at EUR 150.00, so those report too, in the
/// stable order scope -> budgets.
#[test]
fn row04_limit_150_total_153_is_amount_exceeds_mandate() {
    let doc = examples::document_for(examples::over_limit_snapshot());
    assert_eq!(doc.request.amount, eur("153.00"));
    let d = decide(&doc);
    assert_eq!(d.outcome, Outcome::Blocked);
    assert_codes(
        &d,
        &[
            C::AmountExceedsMandate,
            C::TransactionLimitExceeded,
            C::LifetimeLimitExceeded,
        ],
    );
    let b = &d.blockers[0];
    assert_eq!(b.mandate_id, Some(mandate_id("mandate_001")));
    assert!(b.message.contains("153.00 EUR"), "{}", b.message);
    assert!(b.message.contains("150.00 EUR"), "{}", b.message);
}

/// Row 4 isolated: only the mandate's maximum amount (no budgets), still exactly
/// AMOUNT_EXCEEDS_MANDATE.
#[test]
fn row04_amount_scope_alone_reports_only_amount_exceeds_mandate() {
    let mut doc = examples::document_for(examples::over_limit_snapshot());
    edit_leaf(&mut doc, |s| {
        s.scope.budgets = Default::default();
        s.scope.max_uses = None;
        s.scope.amount.max_payment_attempts = None;
    });
    doc.usage.clear();
    let d = decide(&doc);
    assert_codes(&d, &[C::AmountExceedsMandate]);
}

/// Row 5: "Mandate currency EUR, checkout currency USD -> CURRENCY_MISMATCH". No amount
/// comparison across currencies is attempted (no other blocker).
#[test]
fn row05_eur_mandate_usd_checkout_is_currency_mismatch() {
    let mut doc = story();
    let usd_cart = agent_mandate::domain::CartSnapshot::new(examples::backpack_content(
        "0.00",
        "15.00",
        Currency::USD,
    ))
    .unwrap();
    use_snapshot(&mut doc, usd_cart);
    assert_eq!(doc.request.amount, usd("144.00"));
    let d = decide(&doc);
    assert_eq!(d.outcome, Outcome::Blocked);
    assert_codes(&d, &[C::CurrencyMismatch]);
    assert_eq!(d.blockers[0].mandate_id, Some(mandate_id("mandate_001")));
}

/// Row 5, request side: the agent asks for EUR against a USD checkout.
#[test]
fn row05_request_currency_differs_from_checkout_currency() {
    let mut doc = story();
    let usd_cart = agent_mandate::domain::CartSnapshot::new(examples::backpack_content(
        "0.00",
        "15.00",
        Currency::USD,
    ))
    .unwrap();
    use_snapshot(&mut doc, usd_cart);
    doc.request.amount = eur("144.00");
    let d = decide(&doc);
    assert_eq!(d.outcome, Outcome::Blocked);
    assert!(d.has(C::CurrencyMismatch));
    assert!(
        d.codes().iter().all(|c| *c == C::CurrencyMismatch),
        "{:?}",
        d.codes()
    );
}

/// Row 6: "Mandate merchant differs from checkout merchant -> MERCHANT_MISMATCH".
#[test]
fn row06_other_merchant_is_merchant_mismatch() {
    let mut doc = story();
    let other = snapshot_with(|c| c.merchant.merchant_id = id("merchant_002"));
    use_snapshot(&mut doc, other);
    let d = decide(&doc);
    assert_eq!(d.outcome, Outcome::Blocked);
    assert_codes(&d, &[C::MerchantMismatch]);
    assert_eq!(d.blockers[0].mandate_id, Some(mandate_id("mandate_001")));
}

/// Row 6, request side: the request names a merchant that is not the checkout's.
#[test]
fn row06_request_names_other_merchant_than_checkout() {
    let mut doc = story();
    doc.request.merchant_id = id("merchant_002");
    let d = decide(&doc);
    assert_eq!(d.outcome, Outcome::Blocked);
    assert_codes(&d, &[C::MerchantMismatch]);
    assert_eq!(d.blockers[0].mandate_id, None);
}

/// Row 7: "Mandate expired before payment request -> MANDATE_EXPIRED" (by its validity window,
/// while its recorded status is still `active`).
#[test]
fn row07_expired_mandate_is_mandate_expired() {
    let mut doc = story();
    edit_leaf(&mut doc, |s| {
        s.scope.validity.not_before = at(7, 0, 0);
        s.scope.validity.expires_at = at(8, 30, 0);
    });
    let d = decide(&doc);
    assert_eq!(d.outcome, Outcome::Blocked);
    assert_codes(&d, &[C::MandateExpired]);
}

/// Row 7: expiry is exclusive: at exactly `expires_at` the mandate no longer grants authority,
/// one second earlier it does.
#[test]
fn row07_expiry_boundary() {
    let mut doc = story();
    edit_leaf(&mut doc, |s| s.scope.validity.expires_at = at(9, 0, 0));
    assert_codes(&decide(&doc), &[C::MandateExpired]);
    edit_leaf(&mut doc, |s| s.scope.validity.expires_at = at(9, 0, 1));
    assert_codes(&decide(&doc), &[]);
}

/// Row 7: a mandate whose status is `expired` reports MANDATE_EXPIRED once, also when its
/// validity window has passed too.
#[test]
fn row07_expired_status_reports_once() {
    let mut doc = story();
    let leaf = doc.chain[0]
        .apply(&LifecycleEvent::Expire, at(8, 30, 0))
        .unwrap();
    doc.chain[0] = leaf;
    assert_codes(&decide(&doc), &[C::MandateExpired]);
    edit_leaf(&mut doc, |s| s.scope.validity.expires_at = at(8, 45, 0));
    assert_codes(&decide(&doc), &[C::MandateExpired]);
}

/// Row 8: "Mandate revoked before payment request -> MANDATE_REVOKED", with the reason.
#[test]
fn row08_revoked_mandate_is_mandate_revoked() {
    let mut doc = story();
    let revoked = doc.chain[0]
        .apply(
            &LifecycleEvent::Revoke {
                reason: revoke_reason(),
            },
            at(8, 30, 0),
        )
        .unwrap();
    doc.chain[0] = revoked;
    let d = decide(&doc);
    assert_eq!(d.outcome, Outcome::Blocked);
    assert_codes(&d, &[C::MandateRevoked]);
    assert!(d.blockers[0].message.contains("buyer changed their mind"));
}

/// Row 9: "Confirmation required but not satisfied -> requires_confirmation".
#[test]
fn row09_confirmation_required_not_satisfied() {
    let mut doc = story();
    edit_leaf(&mut doc, |s| {
        s.scope.confirmation = ConfirmationRule::always()
    });
    let d = decide(&doc);
    assert_eq!(d.outcome, Outcome::RequiresConfirmation);
    assert_codes(&d, &[C::ConfirmationRequired]);
    assert_eq!(d.blockers[0].mandate_id, Some(mandate_id("mandate_001")));
}

/// Row 10: "Confirmation satisfied and all scope checks pass -> may proceed": `allowed`, and the
/// confirmation is part of the evidence.
#[test]
fn row10_confirmation_satisfied_is_allowed() {
    let mut doc = story();
    edit_leaf(&mut doc, |s| {
        s.scope.confirmation = ConfirmationRule::always()
    });
    let confirmation = confirmation_for(&doc);
    doc.confirmations.push(confirmation.clone());
    let d = decide(&doc);
    assert_eq!(d.outcome, Outcome::Allowed);
    assert_codes(&d, &[]);
    assert!(d
        .evidence
        .contains(&Evidence::ConfirmationRecord(confirmation.id)));
}

/// Row 11: "Provider response times out -> attempt ambiguous or pending". Decision level now:
/// the ambiguous authorization keeps its hold (I5), so a second authorization of the same cart
/// while the first is unresolved exceeds the lifetime cap (EUR 144.00 held + 144.00 > 150.00).
/// The engine issue adds the attempt states (`ambiguous`, `pending_provider_response`) and the
/// PSP lookup that resolves them.
#[test]
fn row11_provider_timeout_hold_still_counts_against_caps() {
    let mut doc = story();
    doc.usage = vec![usage_with(&doc.chain[0], "0.00", "144.00", "144.00", 1)];
    doc.usage[0].attempts = 1;
    let d = decide(&doc);
    assert_eq!(d.outcome, Outcome::Blocked);
    assert_codes(&d, &[C::LifetimeLimitExceeded]);
}

/// Row 11: once the PSP lookup says the timed-out authorization went through, capturing it is
/// still evaluated against the mandate: the authorized amount is allowed, more is not. (The
/// engine completes the transition from `ambiguous` to `authorized` on evidence.)
#[test]
fn row11_capture_after_timeout_is_evaluated_against_the_mandate() {
    let mut doc = story();
    doc.usage = vec![usage_with(&doc.chain[0], "0.00", "144.00", "144.00", 1)];
    doc.request.action = PaymentAction::Capture;
    assert_codes(&decide(&doc), &[]);

    doc.request.amount = eur("145.00");
    let d = decide(&doc);
    assert_eq!(d.outcome, Outcome::Blocked);
    assert_codes(&d, &[C::AmountMismatch]);

    let mut no_capture = story();
    no_capture.request.action = PaymentAction::Capture;
    edit_leaf(&mut no_capture, |s| {
        s.scope.actions = [PaymentAction::Prepare, PaymentAction::Authorize]
            .into_iter()
            .collect();
    });
    assert_codes(&decide(&no_capture), &[C::ActionNotAllowed]);
}

/// Row 12: "Retry with same idempotency key -> existing result returned". Decision level now:
/// the same inputs give the identical decision, with the same request digest (I8), which is
/// what the engine's idempotency record compares; the engine issue returns the stored attempt.
#[test]
fn row12_same_inputs_give_identical_decision_and_digest() {
    let doc = story();
    let retry = doc.clone();
    let (a, b) = (decide(&doc), decide(&retry));
    assert_eq!(a, b);
    assert_eq!(a.request_digest, doc.request.digest());
    assert_eq!(
        serde_json::to_string(&a).unwrap(),
        serde_json::to_string(&b).unwrap()
    );
    // A request that differs in any field has another digest (a different fingerprint).
    let mut other = doc.request.clone();
    other.urgency = Some(Urgency::Routine);
    assert_ne!(other.digest(), doc.request.digest());
}

/// Row 13: "Retry with different cart snapshot -> rejected or requires new mandate". Under a
/// mandate bound to the original snapshot, the retry for another snapshot is blocked with
/// CART_SNAPSHOT_MISMATCH (a new mandate or confirmation is needed).
#[test]
fn row13_retry_with_different_snapshot_is_blocked() {
    let mut doc = snapshot_bound_story();
    assert_codes(&decide(&doc), &[]);
    let retried = snapshot_with(|c| c.items[0].description = id("Travel Backpack (grey)"));
    use_snapshot(&mut doc, retried);
    let d = decide(&doc);
    assert_eq!(d.outcome, Outcome::Blocked);
    assert_codes(&d, &[C::CartSnapshotMismatch]);
}

/// Row 13 under the story's open intent mandate: a retry with a cart that holds another product
/// is outside the intent (CART_OUTSIDE_INTENT).
#[test]
fn row13_retry_with_other_product_under_open_intent_is_blocked() {
    let mut doc = story();
    let other = snapshot_with(|c| c.items[0].sku = id::<Sku>("BAG-DUFFEL-9"));
    use_snapshot(&mut doc, other);
    let d = decide(&doc);
    assert_eq!(d.outcome, Outcome::Blocked);
    assert_codes(&d, &[C::CartOutsideIntent]);
}

/// Row 14: "Payment authorized but order commit fails -> order not duplicated; recovery path
/// recorded". Decision level now: the commit_order request is evaluated against the mandate
/// once more; the payment's own spend (uses 1, EUR 144.00 spent) does not block committing its
/// order, but committing another amount or without the action does. At most one order per
/// attempt and the void/refund recovery are the engine's (I4).
#[test]
fn row14_commit_order_is_evaluated_against_the_mandate() {
    let mut doc = story();
    let mut used = usage_with(&doc.chain[0], "144.00", "0.00", "144.00", 1);
    used.uses = 1;
    used.attempts = 1;
    doc.usage = vec![used];
    doc.request.action = PaymentAction::CommitOrder;
    assert_codes(&decide(&doc), &[]);

    let mut other_amount = doc.clone();
    other_amount.request.amount = eur("140.00");
    assert_codes(&decide(&other_amount), &[C::AmountMismatch]);

    let mut no_commit = doc.clone();
    edit_leaf(&mut no_commit, |s| {
        s.scope.actions = [PaymentAction::Authorize, PaymentAction::Capture]
            .into_iter()
            .collect();
    });
    assert_codes(&decide(&no_commit), &[C::ActionNotAllowed]);

    // A revoked mandate blocks the commit too: the mandate is checked once more.
    let mut revoked = doc.clone();
    revoked.chain[0] = revoked.chain[0]
        .apply(
            &LifecycleEvent::Revoke {
                reason: revoke_reason(),
            },
            at(8, 59, 0),
        )
        .unwrap();
    assert_codes(&decide(&revoked), &[C::MandateRevoked]);
}

// ---------------------------------------------------------------------------------------------
// The Travel Backpack story, start to end.
// ---------------------------------------------------------------------------------------------

/// The story in order: blocked checkout, the EUR 153.00 total, a USD checkout, the allowed end.
#[test]
fn travel_backpack_story() {
    // 1. The checkout is blocked upstream: stale inventory, no return policy.
    let mut doc = story();
    doc.checkout = examples::invalid_checkout();
    let d = decide(&doc);
    assert_eq!(d.outcome, Outcome::Blocked);
    assert_codes(&d, &[C::CheckoutNotValid]);
    let causes: Vec<_> = d.blockers[0]
        .causes
        .iter()
        .map(|c| c.code.clone())
        .collect();
    assert_eq!(causes, ["INVENTORY_STALE", "RETURN_POLICY_MISSING"]);

    // 2. 129.00 + 9.00 shipping + 15.00 tax = 153.00 against a 150.00 mandate that includes
    //    shipping and tax.
    let over = examples::over_limit_snapshot();
    assert_eq!(over.total(), eur("153.00"));
    let mandate = examples::travel_backpack_mandate();
    assert!(mandate.scope().amount.includes_shipping && mandate.scope().amount.includes_tax);
    let d = decide(&examples::document_for(over));
    assert_eq!(d.outcome, Outcome::Blocked);
    assert_eq!(d.codes()[0], C::AmountExceedsMandate);
    assert!(d.blockers[0].message.contains("shipping and tax included"));

    // 3. A USD checkout against the EUR mandate.
    let usd_cart = agent_mandate::domain::CartSnapshot::new(examples::backpack_content(
        "0.00",
        "15.00",
        Currency::USD,
    ))
    .unwrap();
    let d = decide(&examples::document_for(usd_cart));
    assert_eq!(d.outcome, Outcome::Blocked);
    assert_codes(&d, &[C::CurrencyMismatch]);

    // 4. Free shipping: EUR 144.00, allowed, with the evidence the decision rests on.
    let doc = story();
    let d = decide(&doc);
    assert_eq!(d.outcome, Outcome::Allowed);
    assert!(d.is_allowed());
    assert_codes(&d, &[]);
    assert_eq!(
        d.evidence,
        vec![
            Evidence::PaymentMandate(mandate_id("mandate_001")),
            Evidence::CartSnapshot(doc.snapshot.id()),
            Evidence::CheckoutState(id("checkout_789")),
        ]
    );
    assert_eq!(d.evaluated_at, examples::now());
    assert_eq!(d.request_digest, doc.request.digest());
}

/// The EUR 153.00 cart fits a EUR 150.00 mandate that excludes shipping (153 - 9 = 144), and
/// one that excludes tax (153 - 15 = 138); the per-transaction cap still sees the full total.
#[test]
fn amount_scope_inclusion_of_shipping_and_tax() {
    for (shipping, tax) in [(false, true), (true, false), (false, false)] {
        let mut doc = examples::document_for(examples::over_limit_snapshot());
        edit_leaf(&mut doc, |s| {
            s.scope.amount.includes_shipping = shipping;
            s.scope.amount.includes_tax = tax;
            s.scope.budgets = Default::default();
        });
        assert_codes(&decide(&doc), &[]);
    }
    let mut doc = examples::document_for(examples::over_limit_snapshot());
    edit_leaf(&mut doc, |s| {
        s.scope.amount.includes_shipping = false;
        s.scope.budgets.lifetime = None;
    });
    assert_codes(&decide(&doc), &[C::TransactionLimitExceeded]);
}

// ---------------------------------------------------------------------------------------------
// Every blocker code, produced by a case (deny by default: each rule has a negative test).
// ---------------------------------------------------------------------------------------------

type Case = (&'static str, fn() -> EvaluationDocument, BlockerCode);

fn with(f: impl FnOnce(&mut EvaluationDocument)) -> EvaluationDocument {
    let mut doc = story();
    f(&mut doc);
    doc
}

fn leaf_with(f: impl FnOnce(&mut agent_mandate::domain::MandateSpec)) -> EvaluationDocument {
    with(|d| edit_leaf(d, f))
}

fn set_status(doc: &mut EvaluationDocument, event: LifecycleEvent, from_pending: bool) {
    edit_leaf(doc, |s| {
        if from_pending {
            s.lifecycle = Lifecycle::new(MandateStatus::PendingConfirmation, at(8, 0, 0));
        }
    });
    doc.chain[0] = doc.chain[0].apply(&event, at(8, 30, 0)).unwrap();
}

fn marketplace_doc(seller: &str) -> EvaluationDocument {
    let mut doc = story();
    let cart = snapshot_with(|c| {
        c.merchant.marketplace_id = Some(id::<MarketplaceId>("market_1"));
        c.merchant.seller_id = Some(id(seller));
    });
    use_snapshot(&mut doc, cart);
    edit_leaf(&mut doc, |s| {
        s.scope.merchants = MerchantScope::Marketplace {
            marketplace_id: id("market_1"),
            allowed_sellers: Some(vec![id("seller_ok")]),
        };
    });
    doc
}

/// One case per code: each must produce its code (and, where stated, only that code).
fn cases() -> Vec<Case> {
    vec![
        (
            "invalid checkout",
            || with(|d| d.checkout = examples::invalid_checkout()),
            C::CheckoutNotValid,
        ),
        (
            "expired checkout",
            || {
                with(|d| {
                    d.checkout = CheckoutState::Expired {
                        checkout_id: id("checkout_789"),
                        expired_at: at(8, 59, 0),
                    };
                })
            },
            C::CheckoutExpired,
        ),
        (
            "no mandate",
            || {
                with(|d| {
                    d.chain.clear();
                    d.usage.clear();
                })
            },
            C::AuthorityMissing,
        ),
        (
            "request invokes another mandate",
            || with(|d| d.request.mandate_id = id("mandate_other")),
            C::AuthorityMissing,
        ),
        (
            "chain without its root",
            || {
                let mut d = delegated_document();
                d.chain.remove(0);
                d
            },
            C::ChainInvalid,
        ),
        (
            "chain with an unrelated parent",
            || {
                let mut d = delegated_document();
                d.chain[0] = edit(&d.chain[0], |s| s.id = id("mandate_stranger"));
                d.usage = zero_usage_for(&d.chain);
                d
            },
            C::ChainInvalid,
        ),
        (
            "other actor",
            || with(|d| d.request.actor = sub_agent()),
            C::ActorNotAuthorized,
        ),
        (
            "same actor id, other kind",
            || with(|d| d.request.actor.kind = agent_mandate::domain::ActorKind::Human),
            C::ActorNotAuthorized,
        ),
        (
            "suspended actor",
            || with(|d| d.suspensions.actors.push(id("agent_123"))),
            C::ActorSuspended,
        ),
        (
            "other buyer",
            || with(|d| d.request.buyer_id = id("buyer_999")),
            C::BuyerMismatch,
        ),
        (
            "suspended buyer",
            || with(|d| d.suspensions.buyers.push(id("buyer_456"))),
            C::BuyerSuspended,
        ),
        (
            "request for another snapshot",
            || {
                with(|d| {
                    let other = examples::over_limit_snapshot().id();
                    d.request.snapshot_id = other;
                    d.checkout = examples::valid_checkout(other);
                })
            },
            C::CartSnapshotMismatch,
        ),
        (
            "cart with another SKU",
            || with(|d| use_snapshot(d, snapshot_with(|c| c.items[0].sku = id("BAG-DUFFEL-9")))),
            C::CartOutsideIntent,
        ),
        (
            "cart with two lines",
            || {
                with(|d| {
                    edit_leaf(d, |s| {
                        s.scope.cart = CartBinding::Open {
                            allowed_skus: None,
                            max_line_items: Some(1),
                        }
                    });
                    use_snapshot(
                        d,
                        snapshot_with(|c| {
                            c.items.push(LineItem {
                                sku: id("TAG-1"),
                                description: id("Luggage tag"),
                                quantity: 1,
                                unit_price: eur("0.00"),
                            });
                        }),
                    );
                })
            },
            C::CartOutsideIntent,
        ),
        (
            "snapshot expired",
            || with(|d| d.now = at(9, 55, 0)),
            C::SnapshotExpired,
        ),
        (
            "authorize less than the total",
            || with(|d| d.request.amount = eur("140.00")),
            C::AmountMismatch,
        ),
        (
            "authorize more than the total",
            || with(|d| d.request.amount = eur("145.00")),
            C::AmountMismatch,
        ),
        (
            "over the mandate",
            || leaf_with(|s| s.scope.amount.max_amount = eur("143.99")),
            C::AmountExceedsMandate,
        ),
        (
            "lower amount not allowed",
            || leaf_with(|s| s.scope.amount.allow_lower_amount = false),
            C::LowerAmountNotAllowed,
        ),
        (
            "partial capture not allowed",
            || {
                with(|d| {
                    d.request.action = PaymentAction::Capture;
                    d.request.amount = eur("100.00");
                })
            },
            C::PartialCaptureNotAllowed,
        ),
        (
            "usd checkout",
            || {
                examples::document_for(
                    agent_mandate::domain::CartSnapshot::new(examples::backpack_content(
                        "0.00",
                        "15.00",
                        Currency::USD,
                    ))
                    .unwrap(),
                )
            },
            C::CurrencyMismatch,
        ),
        (
            "other merchant",
            || {
                with(|d| {
                    use_snapshot(
                        d,
                        snapshot_with(|c| c.merchant.merchant_id = id("merchant_002")),
                    )
                })
            },
            C::MerchantMismatch,
        ),
        (
            "merchant not in allowlist",
            || {
                leaf_with(|s| {
                    s.scope.merchants = MerchantScope::Allowlist {
                        merchant_ids: vec![id("merchant_002"), id("merchant_003")],
                    }
                })
            },
            C::MerchantMismatch,
        ),
        (
            "not on the marketplace",
            || {
                leaf_with(|s| {
                    s.scope.merchants = MerchantScope::Marketplace {
                        marketplace_id: id("market_1"),
                        allowed_sellers: None,
                    }
                })
            },
            C::MerchantMismatch,
        ),
        (
            "seller not allowed",
            || marketplace_doc("seller_bad"),
            C::SellerNotAllowed,
        ),
        (
            "mcc not allowed",
            || leaf_with(|s| s.scope.mccs = Some(vec![id("5411")])),
            C::MccNotAllowed,
        ),
        (
            "action not allowed",
            || leaf_with(|s| s.scope.actions = [PaymentAction::Prepare].into_iter().collect()),
            C::ActionNotAllowed,
        ),
        (
            "not yet valid",
            || leaf_with(|s| s.scope.validity.not_before = at(9, 0, 1)),
            C::MandateNotYetValid,
        ),
        (
            "expired by time",
            || {
                leaf_with(|s| {
                    s.scope.validity.not_before = at(7, 0, 0);
                    s.scope.validity.expires_at = at(9, 0, 0);
                })
            },
            C::MandateExpired,
        ),
        (
            "expired status",
            || with(|d| set_status(d, LifecycleEvent::Expire, false)),
            C::MandateExpired,
        ),
        (
            "revoked",
            || {
                with(|d| {
                    set_status(
                        d,
                        LifecycleEvent::Revoke {
                            reason: revoke_reason(),
                        },
                        false,
                    )
                })
            },
            C::MandateRevoked,
        ),
        (
            "used status",
            || with(|d| set_status(d, LifecycleEvent::MarkUsed, false)),
            C::MandateUsed,
        ),
        (
            "uses exhausted",
            || with(|d| d.usage[0].uses = 1),
            C::MandateUsed,
        ),
        (
            "pending confirmation",
            || {
                leaf_with(|s| {
                    s.lifecycle = Lifecycle::new(MandateStatus::PendingConfirmation, at(8, 0, 0))
                })
            },
            C::MandatePendingConfirmation,
        ),
        (
            "rejected",
            || {
                with(|d| {
                    set_status(
                        d,
                        LifecycleEvent::Reject {
                            reason: id("not this one"),
                        },
                        true,
                    )
                })
            },
            C::MandateRejected,
        ),
        (
            "ancestor revoked",
            || {
                let mut d = delegated_document();
                d.chain[0] = d.chain[0]
                    .apply(
                        &LifecycleEvent::Revoke {
                            reason: revoke_reason(),
                        },
                        at(8, 30, 0),
                    )
                    .unwrap();
                d
            },
            C::AncestorNotActive,
        ),
        (
            "no usage",
            || with(|d| d.usage.clear()),
            C::UsageUnavailable,
        ),
        (
            "usage without the window",
            || with(|d| d.usage[0].windows.clear()),
            C::UsageUnavailable,
        ),
        (
            "usage in another currency",
            || {
                with(|d| {
                    d.usage[0] =
                        agent_mandate::domain::Usage::zero(id("mandate_001"), Currency::USD)
                })
            },
            C::UsageUnavailable,
        ),
        (
            "per-transaction cap",
            || leaf_with(|s| s.scope.budgets.per_transaction = Some(eur("143.99"))),
            C::TransactionLimitExceeded,
        ),
        (
            "window amount",
            || with(|d| d.usage[0].windows[0].amount = eur("156.01")),
            C::WindowAmountExceeded,
        ),
        (
            "window count",
            || with(|d| d.usage[0].windows[0].count = 5),
            C::WindowCountExceeded,
        ),
        (
            "lifetime",
            || with(|d| d.usage[0].spent = eur("6.01")),
            C::LifetimeLimitExceeded,
        ),
        (
            "lifetime counts holds",
            || with(|d| d.usage[0].held = eur("6.01")),
            C::LifetimeLimitExceeded,
        ),
        (
            "attempts exhausted",
            || with(|d| d.usage[0].attempts = 3),
            C::AttemptsExhausted,
        ),
        (
            "no credential",
            || with(|d| d.credential = None),
            C::CredentialNotUsable,
        ),
        (
            "revoked credential",
            || with(|d| d.credential = Some(CredentialStatus::Revoked)),
            C::CredentialNotUsable,
        ),
        (
            "expired credential",
            || with(|d| d.credential = Some(CredentialStatus::Expired)),
            C::CredentialNotUsable,
        ),
        (
            "suspended credential",
            || with(|d| d.credential = Some(CredentialStatus::Suspended)),
            C::CredentialNotUsable,
        ),
        (
            "confirmation required",
            || leaf_with(|s| s.scope.confirmation = ConfirmationRule::always()),
            C::ConfirmationRequired,
        ),
        (
            "the buyer declined this cart under the mandate",
            || {
                with(|d| {
                    let mut c = confirmation_for(d);
                    c.scope.actions = agent_mandate::domain::ActionSet::EMPTY;
                    d.confirmations.push(c);
                })
            },
            C::ConfirmationDeclined,
        ),
        (
            "resource paid for as often as the loop limit allows",
            || {
                with(|d| {
                    d.resource_payments = Some(ResourcePayments {
                        limit: LoopLimit::new(3, 60).expect("limit"),
                        paid: 3,
                    })
                })
            },
            C::ResourceLoopDetected,
        ),
        (
            "a circuit breaker of the engine's controls is open",
            || {
                with(|d| {
                    let mut signals = ControlSignals::default();
                    signals.circuit_open = Some(BreakerScope::Credential);
                    d.controls = Some(signals);
                })
            },
            C::CircuitOpen,
        ),
        (
            "the cart departs from the purchase intent the agent declared",
            || {
                with(|d| {
                    let declared = examples::intent_for(&d.request, &d.snapshot);
                    let mut spec = declared.spec().clone();
                    spec.line_items[0].quantity += 1;
                    let mut signals = ControlSignals::default();
                    signals.intent = Some(PurchaseIntent::new(spec).expect("intent"));
                    d.controls = Some(signals);
                })
            },
            C::IntentMismatch,
        ),
    ]
}

/// Loop detection blocks the payment after the limit, not before (the boundary), and only
/// when the caller counted payments for the resource.
#[test]
fn resource_loop_blocks_only_past_the_limit() {
    let limit = LoopLimit::new(3, 60).expect("limit");
    let below = with(|d| d.resource_payments = Some(ResourcePayments { limit, paid: 2 }));
    assert!(evaluate(&below.input()).is_allowed());
    assert!(evaluate(&story().input()).is_allowed());
    assert!(LoopLimit::new(0, 60).is_err());
    assert!(LoopLimit::new(1, 0).is_err());
}

/// Every case yields exactly its code, with the outcome its class implies; together the cases
/// produce every code of `BlockerCode::ALL` (a new code without a negative test fails here).
#[test]
fn every_blocker_code_is_produced_by_a_case() {
    let mut seen = BTreeSet::new();
    let mut failures = Vec::new();
    for (name, build, code) in cases() {
        let d = decide(&build());
        seen.extend(d.codes());
        let expected_outcome = match code.class() {
            BlockerClass::Hard => Outcome::Blocked,
            BlockerClass::Stale => Outcome::RequiresRevalidation,
            BlockerClass::Confirmation => Outcome::RequiresConfirmation,
        };
        if d.codes() != [code] || d.outcome != expected_outcome {
            failures.push(format!(
                "{name}: expected [{code}] / {expected_outcome}, got {:?} / {}",
                d.codes(),
                d.outcome
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "failing cases:\n{}",
        failures.join("\n")
    );
    let missing: Vec<_> = BlockerCode::ALL
        .iter()
        .filter(|c| !seen.contains(c))
        .collect();
    assert!(missing.is_empty(), "codes no case produces: {missing:?}");
}

/// Every blocker carries its code's next action and a non-empty message.
#[test]
fn every_blocker_has_message_and_next_action() {
    for (name, build, _) in cases() {
        for b in decide(&build()).blockers {
            assert!(!b.message.is_empty(), "{name}: empty message");
            assert_eq!(b.next_action, b.code.next_action(), "{name}");
        }
    }
}

/// Every ancestor's lifecycle problem is wrapped as ANCESTOR_NOT_ACTIVE with the ancestor's own
/// reason as the nested cause, on the ancestor's id.
#[test]
fn ancestor_not_active_carries_nested_cause() {
    let revoke = LifecycleEvent::Revoke {
        reason: revoke_reason(),
    };
    for (event, cause) in [
        (revoke, "MANDATE_REVOKED"),
        (LifecycleEvent::Expire, "MANDATE_EXPIRED"),
        (LifecycleEvent::MarkUsed, "MANDATE_USED"),
    ] {
        let mut doc = delegated_document();
        doc.chain[0] = doc.chain[0].apply(&event, at(8, 30, 0)).unwrap();
        let d = decide(&doc);
        assert_eq!(d.outcome, Outcome::Blocked);
        assert_codes(&d, &[C::AncestorNotActive]);
        let b = &d.blockers[0];
        assert_eq!(b.mandate_id, Some(mandate_id("mandate_root")));
        let codes: Vec<_> = b.causes.iter().map(|c| c.code.as_str()).collect();
        assert_eq!(codes, [cause]);
    }
}

/// An ancestor's actor being suspended (the kill switch on the delegating agent) takes the
/// authority away from the whole chain below it.
#[test]
fn suspended_ancestor_actor_blocks_descendants() {
    let mut doc = delegated_document();
    doc.suspensions.actors.push(id("agent_123"));
    let d = decide(&doc);
    assert_codes(&d, &[C::AncestorNotActive]);
    assert_eq!(d.blockers[0].causes[0].code, "ACTOR_SUSPENDED");
}

/// An ancestor expired by time, and not yet valid, both nest under ANCESTOR_NOT_ACTIVE.
#[test]
fn ancestor_validity_is_checked() {
    let mut doc = delegated_document();
    doc.chain[0] = edit(&doc.chain[0], |s| {
        s.scope.validity.not_before = at(9, 30, 0)
    });
    // The child is no longer an attenuation in time, but the decision does not rely on that.
    let d = decide(&doc);
    assert_codes(&d, &[C::AncestorNotActive]);
    assert_eq!(d.blockers[0].causes[0].code, "MANDATE_NOT_YET_VALID");
}

/// The delegated chain with nothing spent is allowed, and its evidence lists root then leaf.
#[test]
fn delegated_chain_is_allowed_when_every_cap_has_room() {
    let doc = delegated_document();
    let d = decide(&doc);
    assert_codes(&d, &[]);
    assert_eq!(
        &d.evidence[..2],
        &[
            Evidence::PaymentMandate(mandate_id("mandate_root")),
            Evidence::PaymentMandate(mandate_id("mandate_child")),
        ]
    );
}

/// I2 at decision level: the child's request fits the child's own caps, but a sibling already
/// used EUR 200.00 of the root's 24 h window of EUR 300.00: blocked on the root's id.
#[test]
fn ancestor_window_amount_caps_the_child() {
    let mut doc = delegated_document();
    doc.usage[0] = usage_with(&doc.chain[0], "200.00", "0.00", "200.00", 1);
    let d = decide(&doc);
    assert_eq!(d.outcome, Outcome::Blocked);
    assert_codes(&d, &[C::WindowAmountExceeded]);
    assert_eq!(d.blockers[0].mandate_id, Some(mandate_id("mandate_root")));
    // Exactly filling the window is allowed.
    doc.usage[0] = usage_with(&doc.chain[0], "156.00", "0.00", "156.00", 1);
    assert_codes(&decide(&doc), &[]);
}

/// I2: the root's lifetime budget counts spend and holds of every descendant.
#[test]
fn ancestor_lifetime_caps_the_child() {
    let mut doc = delegated_document();
    doc.usage[0] = usage_with(&doc.chain[0], "800.00", "56.01", "0.00", 0);
    let d = decide(&doc);
    assert_codes(&d, &[C::LifetimeLimitExceeded]);
    assert_eq!(d.blockers[0].mandate_id, Some(mandate_id("mandate_root")));
    doc.usage[0] = usage_with(&doc.chain[0], "800.00", "56.00", "0.00", 0);
    assert_codes(&decide(&doc), &[]);
}

/// I2: the root's window count caps the child as well.
#[test]
fn ancestor_window_count_caps_the_child() {
    let mut doc = delegated_document();
    doc.usage[0] = usage_with(&doc.chain[0], "0.00", "0.00", "0.00", 10);
    let d = decide(&doc);
    assert_codes(&d, &[C::WindowCountExceeded]);
    assert_eq!(d.blockers[0].mandate_id, Some(mandate_id("mandate_root")));
}

/// I2: without usage for an ancestor the decision cannot see its remaining budget: blocked.
#[test]
fn missing_ancestor_usage_blocks() {
    let mut doc = delegated_document();
    doc.usage.remove(0);
    let d = decide(&doc);
    assert_codes(&d, &[C::UsageUnavailable]);
    assert_eq!(d.blockers[0].mandate_id, Some(mandate_id("mandate_root")));
}

/// A child's own caps apply even when the root has room.
#[test]
fn child_caps_apply_under_a_generous_root() {
    let mut doc = delegated_document();
    doc.usage[1] = usage_with(&doc.chain[1], "10.00", "0.00", "0.00", 0);
    let d = decide(&doc);
    assert_codes(&d, &[C::LifetimeLimitExceeded]);
    assert_eq!(d.blockers[0].mandate_id, Some(mandate_id("mandate_child")));
}

/// The root's actor may not use the child's mandate: only the leaf's actor may request.
#[test]
fn root_actor_cannot_use_child_mandate() {
    let mut doc = delegated_document();
    doc.request.actor = examples::agent();
    let d = decide(&doc);
    assert_codes(&d, &[C::ActorNotAuthorized]);
    assert_eq!(d.blockers[0].mandate_id, Some(mandate_id("mandate_child")));
}

/// A chain supplied leaf first is not a chain, and does not end at the request's mandate.
#[test]
fn reversed_chain_is_rejected() {
    let mut doc = delegated_document();
    doc.chain.reverse();
    let d = decide(&doc);
    assert_eq!(d.outcome, Outcome::Blocked);
    assert!(
        d.has(C::AuthorityMissing) && d.has(C::ChainInvalid),
        "{:?}",
        d.codes()
    );
}

// ---------------------------------------------------------------------------------------------
// Suspension, confirmation rules.
// ---------------------------------------------------------------------------------------------

/// The kill switch: a suspended actor or buyer is blocked even though everything else passes.
#[test]
fn suspended_actor_and_buyer_are_blocked() {
    let mut doc = story();
    doc.suspensions.actors.push(id("agent_123"));
    doc.suspensions.buyers.push(id("buyer_456"));
    let d = decide(&doc);
    assert_eq!(d.outcome, Outcome::Blocked);
    assert_codes(&d, &[C::ActorSuspended, C::BuyerSuspended]);
    // Suspending someone else changes nothing.
    let mut other = story();
    other.suspensions.actors.push(id("agent_999"));
    other.suspensions.buyers.push(id("buyer_999"));
    assert_codes(&decide(&other), &[]);
}

fn confirm_always() -> EvaluationDocument {
    let mut doc = story();
    edit_leaf(&mut doc, |s| {
        s.scope.confirmation = ConfirmationRule::always()
    });
    doc
}

/// Confirmations that do not satisfy the rule: each leaves the decision at
/// requires_confirmation. A confirmation is a structured event for one snapshot and scope,
/// given by the human buyer, in force now.
#[test]
fn confirmations_that_do_not_count() {
    type Bend = fn(&mut agent_mandate::domain::Confirmation);
    let bends: Vec<(&str, Bend)> = vec![
        ("given by the agent", |c| c.confirmed_by = examples::agent()),
        ("given by a system", |c| {
            c.confirmed_by.kind = agent_mandate::domain::ActorKind::System
        }),
        ("for another snapshot", |c| {
            c.snapshot_id = examples::over_limit_snapshot().id()
        }),
        ("by another buyer", |c| c.buyer_id = id("buyer_999")),
        ("expired", |c| c.expires_at = Some(at(9, 0, 0))),
        ("given in the future", |c| c.confirmed_at = at(9, 0, 1)),
        ("under a mandate outside the chain", |c| {
            c.scope.mandate_id = id("mandate_other")
        }),
        ("for another action", |c| {
            c.scope.actions = [PaymentAction::Capture].into_iter().collect()
        }),
        ("for a smaller amount", |c| {
            c.scope.max_amount = eur("143.99")
        }),
        ("in another currency", |c| {
            c.scope.max_amount = usd("144.00")
        }),
    ];
    for (name, bend) in bends {
        let mut doc = confirm_always();
        let mut c = confirmation_for(&doc);
        bend(&mut c);
        doc.confirmations.push(c);
        let d = decide(&doc);
        assert_eq!(d.outcome, Outcome::RequiresConfirmation, "{name}");
        assert_codes(&d, &[C::ConfirmationRequired]);
    }
}

/// A decline (a recorded answer that approves no action) blocks the request for its cart
/// under a mandate of the chain, whatever the rule, until a confirmation covering the request
/// is given after it; a decline that is not the buyer's, not by a human, for another cart,
/// under a mandate outside the chain, or given in the future does not count.
#[test]
fn a_decline_blocks_until_the_buyer_confirms_later() {
    let decline = |doc: &EvaluationDocument| {
        let mut c = confirmation_for(doc);
        c.id = id("decline_1");
        c.scope.actions = agent_mandate::domain::ActionSet::EMPTY;
        c
    };
    // Under a rule that asks, and under none.
    for mut doc in [confirm_always(), story()] {
        let d = decline(&doc);
        doc.confirmations.push(d.clone());
        let out = decide(&doc);
        assert_eq!(out.outcome, Outcome::Blocked);
        assert!(out.has(C::ConfirmationDeclined), "{:?}", out.codes());
        // A confirmation given at the same instant does not lift it; one given later does.
        let mut same = confirmation_for(&doc);
        same.confirmed_at = d.confirmed_at;
        doc.confirmations.push(same);
        assert!(decide(&doc).has(C::ConfirmationDeclined));
        let mut later = confirmation_for(&doc);
        later.id = id("confirmation_2");
        later.confirmed_at = d.confirmed_at + chrono::Duration::seconds(1);
        doc.confirmations.push(later);
        assert_codes(&decide(&doc), &[]);
    }
    type Bend = fn(&mut agent_mandate::domain::Confirmation);
    let bends: Vec<(&str, Bend)> = vec![
        ("by another buyer", |c| c.buyer_id = id("buyer_999")),
        ("given by the agent", |c| c.confirmed_by = examples::agent()),
        ("for another cart", |c| {
            c.snapshot_id = examples::over_limit_snapshot().id()
        }),
        ("under a mandate outside the chain", |c| {
            c.scope.mandate_id = id("mandate_other")
        }),
        ("given in the future", |c| c.confirmed_at = at(9, 0, 1)),
    ];
    for (name, bend) in bends {
        let mut doc = story();
        let mut d = decline(&doc);
        bend(&mut d);
        doc.confirmations.push(d);
        assert!(decide(&doc).codes().is_empty(), "{name}");
    }
}

/// The matching confirmation counts: at its first instant, without an expiry, for a larger
/// amount, and given under an ancestor of the chain.
#[test]
fn confirmations_that_count() {
    let mut doc = confirm_always();
    let mut c = confirmation_for(&doc);
    c.confirmed_at = examples::now();
    c.expires_at = None;
    c.scope.max_amount = eur("150.00");
    doc.confirmations.push(c);
    assert_codes(&decide(&doc), &[]);

    let mut chain = delegated_document();
    for i in 0..2 {
        chain.chain[i] = edit(&chain.chain[i], |s| {
            s.scope.confirmation = ConfirmationRule::always()
        });
    }
    let d = decide(&chain);
    assert_codes(&d, &[C::ConfirmationRequired, C::ConfirmationRequired]);
    let mut c = confirmation_for(&chain);
    c.scope.mandate_id = id("mandate_root");
    chain.confirmations.push(c);
    assert_codes(&decide(&chain), &[]);
}

/// Confirmation rules apply to authorizations; preparing a payment needs none.
#[test]
fn confirmation_rule_applies_to_authorize_only() {
    let mut doc = confirm_always();
    doc.request.action = PaymentAction::Prepare;
    assert_codes(&decide(&doc), &[]);
}

/// The `*_changed` conditions against a baseline: the buyer granted the mandate seeing the EUR
/// 153.00 cart (9.00 shipping); the final cart has free shipping.
#[test]
fn changed_conditions_compare_with_the_baseline() {
    let seen = examples::over_limit_snapshot();
    let rule = |c: ConfirmationCondition, baseline: Option<Baseline>| ConfirmationRule {
        conditions: vec![c],
        baseline,
    };
    let cases = [
        (ConfirmationCondition::AmountChanged, true),
        (ConfirmationCondition::ShippingChanged, true),
        (ConfirmationCondition::CartChanged, false),
        (ConfirmationCondition::PolicyChanged, false),
    ];
    for (condition, asks) in cases {
        let mut doc = story();
        let r = rule(condition.clone(), Some(Baseline::of(&seen)));
        edit_leaf(&mut doc, |s| s.scope.confirmation = r);
        let expected: &[BlockerCode] = if asks {
            &[C::ConfirmationRequired]
        } else {
            &[]
        };
        assert_codes(&decide(&doc), expected);

        // Without a baseline every `*_changed` condition counts as changed (deny by default).
        let mut doc = story();
        let r = rule(condition, None);
        edit_leaf(&mut doc, |s| s.scope.confirmation = r);
        assert_codes(&decide(&doc), &[C::ConfirmationRequired]);
    }
    // Against the very snapshot being paid, nothing changed.
    let mut doc = story();
    let current = Baseline::of(&doc.snapshot);
    edit_leaf(&mut doc, |s| {
        s.scope.confirmation = ConfirmationRule {
            conditions: vec![
                ConfirmationCondition::AmountChanged,
                ConfirmationCondition::CartChanged,
                ConfirmationCondition::ShippingChanged,
                ConfirmationCondition::PolicyChanged,
            ],
            baseline: Some(current),
        };
    });
    assert_codes(&decide(&doc), &[]);
}

// ---------------------------------------------------------------------------------------------
// Precedence, order, determinism (I8).
// ---------------------------------------------------------------------------------------------

/// Precedence: any hard blocker -> blocked; else stale -> requires_revalidation; else a missing
/// confirmation -> requires_confirmation. All blockers are reported either way.
#[test]
fn precedence_hard_beats_stale_beats_confirmation() {
    // Confirmation only.
    let mut doc = confirm_always();
    assert_eq!(decide(&doc).outcome, Outcome::RequiresConfirmation);
    // Stale + confirmation.
    doc.now = at(9, 55, 0);
    let d = decide(&doc);
    assert_eq!(d.outcome, Outcome::RequiresRevalidation);
    assert_codes(&d, &[C::SnapshotExpired, C::ConfirmationRequired]);
    // Hard + stale + confirmation.
    edit_leaf(&mut doc, |s| s.scope.mccs = Some(vec![id("5411")]));
    let d = decide(&doc);
    assert_eq!(d.outcome, Outcome::Blocked);
    assert_codes(
        &d,
        &[
            C::SnapshotExpired,
            C::MccNotAllowed,
            C::ConfirmationRequired,
        ],
    );
    // An expired checkout is stale too, and a pending mandate asks for confirmation.
    let mut doc = story();
    doc.checkout = CheckoutState::Expired {
        checkout_id: id("checkout_789"),
        expired_at: at(8, 59, 0),
    };
    edit_leaf(&mut doc, |s| {
        s.lifecycle = Lifecycle::new(MandateStatus::PendingConfirmation, at(8, 0, 0))
    });
    let d = decide(&doc);
    assert_eq!(d.outcome, Outcome::RequiresRevalidation);
    assert_codes(&d, &[C::CheckoutExpired, C::MandatePendingConfirmation]);
}

/// `Outcome::from_blockers` agrees with each code's class, alone and mixed in any order.
#[test]
fn outcome_follows_classes_for_every_code() {
    use agent_mandate::domain::Blocker;
    for &code in BlockerCode::ALL {
        let alone = Outcome::from_blockers(&[Blocker::new(code, "x")]);
        let expected = match code.class() {
            BlockerClass::Hard => Outcome::Blocked,
            BlockerClass::Stale => Outcome::RequiresRevalidation,
            BlockerClass::Confirmation => Outcome::RequiresConfirmation,
        };
        assert_eq!(alone, expected, "{code}");
        let confirm = Blocker::new(C::ConfirmationRequired, "c");
        let stale = Blocker::new(C::SnapshotExpired, "s");
        let mixed = [confirm, stale, Blocker::new(code, "x")];
        let expected = match code.class() {
            BlockerClass::Hard => Outcome::Blocked,
            _ => Outcome::RequiresRevalidation,
        };
        assert_eq!(Outcome::from_blockers(&mixed), expected, "{code}");
    }
    assert_eq!(Outcome::from_blockers(&[]), Outcome::Allowed);
}

/// Many blockers at once come in the documented order: checkout, request vs snapshot, chain,
/// actor and buyer, per mandate root to leaf (lifecycle, scope, budgets, confirmation),
/// credential.
#[test]
fn blockers_come_in_a_stable_order() {
    let mut doc = delegated_document();
    doc.checkout = examples::invalid_checkout();
    doc.request.merchant_id = id("merchant_002");
    doc.request.actor = examples::agent();
    doc.suspensions.buyers.push(id("buyer_456"));
    doc.chain[0] = edit(&doc.chain[0], |s| {
        s.scope.confirmation = ConfirmationRule::always();
    });
    doc.chain[0] = doc.chain[0]
        .apply(
            &LifecycleEvent::Revoke {
                reason: revoke_reason(),
            },
            at(8, 30, 0),
        )
        .unwrap();
    doc.chain[1] = edit(&doc.chain[1], |s| {
        s.scope.mccs = Some(vec![id("5411")]);
        s.scope.actions = [PaymentAction::Prepare].into_iter().collect();
        s.scope.confirmation = ConfirmationRule::always();
    });
    doc.usage[0].windows[0].count = 10;
    doc.usage[1].spent = eur("10.00");
    doc.credential = None;
    let expected = [
        C::CheckoutNotValid,
        C::MerchantMismatch,
        C::ActorNotAuthorized,
        C::BuyerSuspended,
        C::AncestorNotActive,
        C::WindowCountExceeded,
        C::ConfirmationRequired,
        C::MccNotAllowed,
        C::ActionNotAllowed,
        C::LifetimeLimitExceeded,
        C::ConfirmationRequired,
        C::CredentialNotUsable,
    ];
    let d = decide(&doc);
    assert_codes(&d, &expected);
    let on: Vec<_> = d
        .blockers
        .iter()
        .map(|b| b.mandate_id.as_ref().map(|m| m.as_str().to_owned()))
        .collect();
    assert_eq!(on[4].as_deref(), Some("mandate_root"));
    assert_eq!(on[9].as_deref(), Some("mandate_child"));

    // Supplying usage and suspensions in another order changes nothing.
    let mut shuffled = doc.clone();
    shuffled.usage.reverse();
    shuffled.suspensions.actors.push(id("agent_unrelated"));
    shuffled.suspensions.actors.reverse();
    assert_eq!(decide(&shuffled), d);
}

/// I8: the decision is a pure function of its input: repeated, cloned, and after a JSON round
/// trip of the whole document, the same decision.
#[test]
fn decisions_are_deterministic() {
    let mut docs = vec![story(), delegated_document(), confirm_always()];
    docs.extend(cases().into_iter().map(|(_, build, _)| build()));
    for doc in docs {
        let first = decide(&doc);
        assert_eq!(decide(&doc), first);
        assert_eq!(evaluate(&doc.clone().input()), first);
        let text = serde_json::to_string(&doc).unwrap();
        let back: EvaluationDocument = serde_json::from_str(&text).unwrap();
        assert_eq!(decide(&back), first);
    }
}

// ---------------------------------------------------------------------------------------------
// Actions.
// ---------------------------------------------------------------------------------------------

/// Capture and refund may be for less than the snapshot total (partial capture when the
/// mandate allows it; refunds always), never for more.
#[test]
fn capture_and_refund_amounts() {
    let mut doc = story();
    doc.request.action = PaymentAction::Capture;
    doc.request.amount = eur("100.00");
    edit_leaf(&mut doc, |s| s.scope.amount.allow_partial_capture = true);
    assert_codes(&decide(&doc), &[]);

    let mut refund = story();
    refund.request.action = PaymentAction::Refund;
    refund.request.amount = eur("20.00");
    assert_codes(&decide(&refund), &[]);
    refund.request.amount = eur("144.01");
    assert_codes(&decide(&refund), &[C::AmountMismatch]);
}

/// Budgets, attempts and confirmation are about new spend: a capture after the attempts and
/// uses are spent is still allowed; preparing counts as spend for the caps.
#[test]
fn budgets_apply_to_spend_creating_actions() {
    let mut doc = story();
    doc.usage[0].attempts = 3;
    doc.usage[0].spent = eur("144.00");
    doc.request.action = PaymentAction::Capture;
    assert_codes(&decide(&doc), &[]);
    doc.request.action = PaymentAction::Prepare;
    assert_codes(&decide(&doc), &[C::LifetimeLimitExceeded]);
    doc.request.action = PaymentAction::Authorize;
    assert_codes(
        &decide(&doc),
        &[C::LifetimeLimitExceeded, C::AttemptsExhausted],
    );
}

/// The credential is only needed to authorize.
#[test]
fn credential_is_only_required_to_authorize() {
    let mut doc = story();
    doc.credential = None;
    doc.request.action = PaymentAction::Prepare;
    assert_codes(&decide(&doc), &[]);
}

/// A marketplace mandate allows its listed sellers and blocks a sale without a seller.
#[test]
fn marketplace_sellers() {
    assert_codes(&decide(&marketplace_doc("seller_ok")), &[]);
    let mut doc = marketplace_doc("seller_ok");
    let no_seller = snapshot_with(|c| {
        c.merchant.marketplace_id = Some(id("market_1"));
    });
    use_snapshot(&mut doc, no_seller);
    assert_codes(&decide(&doc), &[C::SellerNotAllowed]);
}
