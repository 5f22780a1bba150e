//! The spending-control gates of an agent's vault, expressed as one mandate, each tested positive and
//! negative at its boundary; and the purchase-intent hash.
//!
//! A vault checks five gates before releasing a token reference (token expiry,
//! per-transaction max, MCC allowlist, daily limit, merchant allowlist) and asks a human when
//! "total_amount > 200.00 or urgency == critical". Here those are: `validity.expires_at`,
//! `budgets.per_transaction`, `scope.mccs`, a 24 h `WindowLimit`, `MerchantScope::Allowlist`
//! and `ConfirmationRule { AboveAmount 200.00, UrgencyAtLeast Critical }`.
//!
//! Invariants defended: I1 (nothing outside a gate is `allowed`), I8 (every failing gate is
//! reported, in a stable order, where a vault stopping at the first gate would hide the rest), I7 for intent hashes (a pure
//! function of the hashed content; formatting of an amount does not change it).

mod common;

use agent_mandate::domain::examples;
use agent_mandate::domain::{
    evaluate, ActionSet, AmountScope, AuthorityDecision, BlockerCode as C, Budgets, CartBinding,
    CartContent, CartSnapshot, Channel, CheckoutContext, ConfirmationCondition, ConfirmationRule,
    CredentialStatus, Currency, CurrencyScope, EvaluationDocument, IntentHash, IntentLine,
    Lifecycle, LineItem, Mandate, MandateScope, MandateSpec, MandateStatus, Merchant,
    MerchantScope, Money, Outcome, PaymentAction, PaymentRequest, PurchaseIntent,
    PurchaseIntentSpec, Suspensions, Totals, Urgency, Usage, Validity, WindowLimit, WindowUsage,
};
use agent_mandate::json::from_json;
use chrono::{DateTime, Utc};
use common::*;
use sha2::{Digest, Sha256};

const DAY: u64 = 86_400;

/// The seed's spending controls as a mandate: USD, merchants `merchant_001` and `merchant_002`,
/// MCC 5411 (grocery), at most USD 250.00 per transaction and USD 500.00 per 24 h, token valid
/// 08:00-12:00, human confirmation above USD 200.00 or at critical urgency.
fn token_mandate() -> Mandate {
    Mandate::new(MandateSpec {
        id: id("mandate_token_1"),
        buyer_id: examples::buyer(),
        actor: examples::agent(),
        parent_id: None,
        scope: MandateScope {
            merchants: MerchantScope::Allowlist {
                merchant_ids: vec![id("merchant_001"), id("merchant_002")],
            },
            mccs: Some(vec![id("5411")]),
            cart: CartBinding::Open {
                allowed_skus: None,
                max_line_items: None,
            },
            amount: AmountScope {
                max_amount: usd("500.00"),
                includes_shipping: true,
                includes_tax: true,
                allow_lower_amount: true,
                allow_partial_capture: false,
                max_payment_attempts: None,
            },
            currency: CurrencyScope {
                currency: Currency::USD,
                conversion_allowed: false,
            },
            budgets: Budgets {
                per_transaction: Some(usd("250.00")),
                windows: vec![WindowLimit {
                    window_seconds: DAY,
                    max_amount: Some(usd("500.00")),
                    max_count: None,
                }],
                lifetime: None,
            },
            actions: PaymentAction::ALL.into_iter().collect::<ActionSet>(),
            confirmation: seed_confirmation_rule(),
            max_uses: None,
            validity: Validity {
                not_before: at(8, 0, 0),
                expires_at: at(12, 0, 0),
            },
        },
        lifecycle: Lifecycle::new(MandateStatus::Active, at(8, 0, 0)),
        evidence_refs: vec![id("vault:token_ref:ref-123")],
    })
    .unwrap()
}

/// "if intent.total_amount > Decimal("200.00") or intent.urgency == "critical"".
fn seed_confirmation_rule() -> ConfirmationRule {
    ConfirmationRule {
        conditions: vec![
            ConfirmationCondition::AboveAmount {
                amount: usd("200.00"),
            },
            ConfirmationCondition::UrgencyAtLeast {
                urgency: Urgency::Critical,
            },
        ],
        baseline: None,
    }
}

/// A one-line grocery cart of `amount` USD at `merchant` with `mcc`, valid all day.
fn cart(amount: &str, merchant: &str, mcc: &str) -> CartSnapshot {
    let price = usd(amount);
    let zero = Money::zero(Currency::USD);
    CartSnapshot::new(CartContent {
        id: None,
        cart_id: None,
        merchant: Merchant {
            merchant_id: id(merchant),
            marketplace_id: None,
            seller_id: None,
            mcc: id(mcc),
        },
        items: vec![LineItem {
            sku: id("COFFEE-1KG"),
            description: id("Coffee beans"),
            quantity: 1,
            unit_price: price,
        }],
        totals: Totals {
            subtotal: price,
            shipping: zero,
            tax: zero,
            discount: zero,
            total: price,
        },
        context: CheckoutContext {
            region: None,
            channel: Channel::Agent,
            buyer_type: None,
        },
        fact_refs: vec![],
        policy_refs: vec![],
        created_at: at(8, 55, 0),
        expires_at: at(23, 59, 0),
    })
    .unwrap()
}

/// What the 24 h window has seen so far.
fn daily_usage(m: &Mandate, spent_today: &str) -> Usage {
    let mut u = Usage::zero(m.id().clone(), Currency::USD);
    u.windows = vec![WindowUsage {
        window_seconds: DAY,
        amount: usd(spent_today),
        count: 0,
    }];
    u
}

/// The agent asks to authorize `amount` at `merchant` (MCC `mcc`) with `urgency`, at 09:00, with
/// nothing spent today.
fn gate_doc(
    amount: &str,
    merchant: &str,
    mcc: &str,
    urgency: Option<Urgency>,
) -> EvaluationDocument {
    let m = token_mandate();
    let snapshot = cart(amount, merchant, mcc);
    EvaluationDocument {
        request: PaymentRequest {
            actor: examples::agent(),
            buyer_id: examples::buyer(),
            mandate_id: m.id().clone(),
            action: PaymentAction::Authorize,
            merchant_id: snapshot.merchant().merchant_id.clone(),
            snapshot_id: snapshot.id(),
            amount: snapshot.total(),
            urgency,
        },
        checkout: examples::valid_checkout(snapshot.id()),
        usage: vec![daily_usage(&m, "0.00")],
        chain: vec![m],
        snapshot,
        confirmations: vec![],
        suspensions: Suspensions::default(),
        credential: Some(CredentialStatus::Usable),
        now: at(9, 0, 0),
        resource_payments: None,
        controls: None,
    }
}

fn routine(amount: &str) -> EvaluationDocument {
    gate_doc(amount, "merchant_001", "5411", Some(Urgency::Routine))
}

fn allowed(decision: &AuthorityDecision) {
    assert_eq!(
        decision.outcome,
        Outcome::Allowed,
        "{:#?}",
        decision.blockers
    );
}

fn decide_at(doc: &EvaluationDocument, now: DateTime<Utc>) -> AuthorityDecision {
    let mut doc = doc.clone();
    doc.now = now;
    evaluate(&doc.input())
}

// ---------------------------------------------------------------------------------------------
// Gate 1: token expiry.
// ---------------------------------------------------------------------------------------------

/// Gate 1 positive: the token (mandate) is valid up to the instant before `expires_at`.
#[test]
fn gate1_token_valid_before_expiry() {
    let doc = routine("50.00");
    allowed(&decide_at(&doc, at(8, 0, 0)));
    allowed(&decide_at(&doc, at(11, 59, 59)));
}

/// Gate 1 negative: `expiresAt <= now` is expired, so at exactly 12:00 and after.
#[test]
fn gate1_token_expired_at_and_after_expiry() {
    let doc = routine("50.00");
    for now in [at(12, 0, 0), at(12, 0, 1), at(18, 0, 0)] {
        let d = decide_at(&doc, now);
        assert_eq!(d.outcome, Outcome::Blocked);
        assert_codes(&d, &[C::MandateExpired]);
    }
    // Before its first instant it is not valid either.
    assert_codes(&decide_at(&doc, at(7, 59, 59)), &[C::MandateNotYetValid]);
}

// ---------------------------------------------------------------------------------------------
// Gate 2: per-transaction maximum.
// ---------------------------------------------------------------------------------------------

/// Gate 2 positive: below the maximum passes.
#[test]
fn gate2_below_per_transaction_max_passes() {
    allowed(&decide(&routine("150.00")));
}

/// Gate 2 boundary: an amount equal to the maximum passes the gate (`amount > max` fails). At
/// USD 250.00 the confirmation rule (above 200.00) applies too, so with the buyer's
/// confirmation it is allowed.
#[test]
fn gate2_amount_equal_to_per_transaction_max_passes() {
    let mut doc = routine("250.00");
    let d = decide(&doc);
    assert!(!d.has(C::TransactionLimitExceeded), "{:?}", d.codes());
    assert_codes(&d, &[C::ConfirmationRequired]);
    doc.confirmations.push(confirmation_for(&doc));
    allowed(&decide(&doc));
}

/// Gate 2 negative: one cent above the maximum is blocked, confirmation or not.
#[test]
fn gate2_above_per_transaction_max_is_blocked() {
    let mut doc = routine("250.01");
    doc.confirmations.push(confirmation_for(&doc));
    let d = decide(&doc);
    assert_eq!(d.outcome, Outcome::Blocked);
    assert_codes(&d, &[C::TransactionLimitExceeded]);
}

/// Gate 2, the seed's own test: a USD 100.00 limit rejects USD 150.00.
#[test]
fn gate2_seed_test_150_against_100_limit() {
    let mut doc = routine("150.00");
    doc.chain[0] = edit(&doc.chain[0], |s| {
        s.scope.budgets.per_transaction = Some(usd("100.00"))
    });
    let d = decide(&doc);
    assert_codes(&d, &[C::TransactionLimitExceeded]);
    assert!(d.blockers[0].message.contains("100.00 USD"));
}

// ---------------------------------------------------------------------------------------------
// Gate 3: MCC allowlist.
// ---------------------------------------------------------------------------------------------

/// Gate 3 positive: an allowed category passes.
#[test]
fn gate3_allowed_mcc_passes() {
    allowed(&decide(&gate_doc("50.00", "merchant_001", "5411", None)));
}

/// Gate 3 negative, the seed's own test: gambling (7995) is not in the allowlist.
#[test]
fn gate3_disallowed_mcc_is_blocked() {
    for mcc in ["7995", "5412", "0000"] {
        let d = decide(&gate_doc("50.00", "merchant_001", mcc, None));
        assert_eq!(d.outcome, Outcome::Blocked, "{mcc}");
        assert_codes(&d, &[C::MccNotAllowed]);
    }
}

/// Gate 3 is optional in the seed; without an MCC list any category passes.
#[test]
fn gate3_no_mcc_list_allows_any_category() {
    let mut doc = gate_doc("50.00", "merchant_001", "7995", None);
    doc.chain[0] = edit(&doc.chain[0], |s| s.scope.mccs = None);
    allowed(&decide(&doc));
}

// ---------------------------------------------------------------------------------------------
// Gate 4: daily limit (24 h window).
// ---------------------------------------------------------------------------------------------

/// Gate 4 boundary: spent today + amount equal to the daily limit passes
/// (`daily_spent + amount > limit` fails).
#[test]
fn gate4_reaching_the_daily_limit_exactly_passes() {
    let mut doc = routine("200.00");
    doc.usage = vec![daily_usage(&doc.chain[0], "300.00")];
    allowed(&decide(&doc));
}

/// Gate 4 negative: one cent over the daily limit is blocked.
#[test]
fn gate4_exceeding_the_daily_limit_is_blocked() {
    let mut doc = routine("200.00");
    doc.usage = vec![daily_usage(&doc.chain[0], "300.01")];
    let d = decide(&doc);
    assert_eq!(d.outcome, Outcome::Blocked);
    assert_codes(&d, &[C::WindowAmountExceeded]);
}

/// Gate 4, deny by default: where the seed reads `dailySpentAmount` from its table, a decision
/// without the day's usage cannot know the remaining limit and is blocked.
#[test]
fn gate4_unknown_daily_usage_is_blocked() {
    let mut doc = routine("10.00");
    doc.usage.clear();
    assert_codes(&decide(&doc), &[C::UsageUnavailable]);
    let mut doc = routine("10.00");
    doc.usage[0].windows.clear();
    assert_codes(&decide(&doc), &[C::UsageUnavailable]);
}

// ---------------------------------------------------------------------------------------------
// Gate 5: merchant allowlist.
// ---------------------------------------------------------------------------------------------

/// Gate 5 positive: every merchant of the allowlist passes.
#[test]
fn gate5_allowlisted_merchants_pass() {
    for merchant in ["merchant_001", "merchant_002"] {
        allowed(&decide(&gate_doc("50.00", merchant, "5411", None)));
    }
}

/// Gate 5 negative: a merchant outside the allowlist is blocked.
#[test]
fn gate5_other_merchant_is_blocked() {
    let d = decide(&gate_doc("50.00", "merchant_999", "5411", None));
    assert_eq!(d.outcome, Outcome::Blocked);
    assert_codes(&d, &[C::MerchantMismatch]);
}

// ---------------------------------------------------------------------------------------------
// Human confirmation: above 200.00 or urgency critical.
// ---------------------------------------------------------------------------------------------

/// Exactly USD 200.00 is not above 200.00: no confirmation needed.
#[test]
fn confirmation_not_needed_at_exactly_200() {
    allowed(&decide(&routine("200.00")));
    allowed(&decide(&routine("199.99")));
}

/// USD 200.01 is above 200.00: the buyer must confirm.
#[test]
fn confirmation_needed_at_200_01() {
    let d = decide(&routine("200.01"));
    assert_eq!(d.outcome, Outcome::RequiresConfirmation);
    assert_codes(&d, &[C::ConfirmationRequired]);
    assert!(d.blockers[0].message.contains("above 200.00 USD"));
}

/// Critical urgency asks for confirmation whatever the amount; lower urgencies do not.
#[test]
fn confirmation_by_urgency() {
    for (urgency, asks) in [
        (None, false),
        (Some(Urgency::Routine), false),
        (Some(Urgency::TimeSensitive), false),
        (Some(Urgency::Critical), true),
    ] {
        let d = decide(&gate_doc("10.00", "merchant_001", "5411", urgency));
        if asks {
            assert_eq!(d.outcome, Outcome::RequiresConfirmation, "{urgency:?}");
            assert_codes(&d, &[C::ConfirmationRequired]);
            assert!(d.blockers[0].message.contains("critical"));
        } else {
            allowed(&d);
        }
    }
}

/// The buyer's confirmation satisfies the rule; an agent "confirming" for itself does not.
#[test]
fn confirmation_must_come_from_the_human() {
    for (amount, urgency) in [("200.01", Urgency::Routine), ("10.00", Urgency::Critical)] {
        let mut doc = gate_doc(amount, "merchant_001", "5411", Some(urgency));
        let mut by_agent = confirmation_for(&doc);
        by_agent.confirmed_by = examples::agent();
        doc.confirmations.push(by_agent);
        assert_eq!(decide(&doc).outcome, Outcome::RequiresConfirmation);
        doc.confirmations.push(confirmation_for(&doc));
        allowed(&decide(&doc));
    }
}

/// A payment that fails every gate reports every gate, in a stable order (the seed stops at
/// the first one).
#[test]
fn every_failing_gate_is_reported() {
    let mut doc = gate_doc("250.01", "merchant_999", "7995", Some(Urgency::Critical));
    doc.usage = vec![daily_usage(&doc.chain[0], "300.00")];
    let d = decide_at(&doc, at(12, 0, 0));
    assert_eq!(d.outcome, Outcome::Blocked);
    assert_codes(
        &d,
        &[
            C::MandateExpired,
            C::MerchantMismatch,
            C::MccNotAllowed,
            C::TransactionLimitExceeded,
            C::WindowAmountExceeded,
            C::ConfirmationRequired,
        ],
    );
}

/// The seed's controls hold in a mandate written as JSON by hand (the form a platform stores).
#[test]
fn gates_from_json() {
    let text = serde_json::to_string(&token_mandate()).unwrap();
    let m: Mandate = from_json(&text).unwrap();
    assert_eq!(m, token_mandate());
    assert!(text.contains(r#"{"above_amount":{"amount":"#), "{text}");
    assert!(
        text.contains(r#"{"urgency_at_least":{"urgency":"critical"}}"#),
        "{text}"
    );
}

// ---------------------------------------------------------------------------------------------
// Purchase intent hash.
// ---------------------------------------------------------------------------------------------

fn intent_json(unit_price: &str) -> String {
    format!(
        r#"{{"agent_id": "agent_123", "task_id": "task_9", "merchant_id": "merchant_001",
            "mcc": "5411",
            "line_items": [{{"description": "Coffee beans", "quantity": 2,
                             "unit_price": {{"amount": "{unit_price}", "currency": "USD"}}}}],
            "business_justification": "Office coffee for the week", "urgency": "routine"}}"#
    )
}

fn intent() -> PurchaseIntent {
    from_json(&intent_json("12.50")).unwrap()
}

/// The plain data of [`intent`], to bend one field at a time.
fn spec() -> PurchaseIntentSpec {
    intent().spec().clone()
}

fn hash(spec: &PurchaseIntentSpec) -> IntentHash {
    PurchaseIntent::new(spec.clone()).unwrap().intent_hash()
}

/// Deterministic: the same intent hashes the same, also after a JSON round trip; the text form
/// is `sha256:` + 64 lower-case hex digits.
#[test]
fn intent_hash_is_deterministic() {
    let i = intent();
    let h = i.intent_hash();
    assert_eq!(i.intent_hash(), h);
    assert_eq!(i.clone().intent_hash(), h);
    let back: PurchaseIntent = serde_json::from_str(&serde_json::to_string(&i).unwrap()).unwrap();
    assert_eq!(back.intent_hash(), h);
    let text = h.to_string();
    let hex = text.strip_prefix("sha256:").unwrap();
    assert_eq!(hex.len(), 64);
    assert!(hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')));
}

/// The same construction as snapshot ids: SHA-256 over the RFC 8785 form of the hashed fields
/// (checked with an independent JCS implementation).
#[test]
fn intent_hash_is_sha256_of_jcs() {
    let expected = serde_json::json!({
        "agent_id": "agent_123",
        "task_id": "task_9",
        "merchant_id": "merchant_001",
        "mcc": "5411",
        "line_items": [{"description": "Coffee beans", "quantity": 2,
                        "unit_price": {"amount": "12.50", "currency": "USD"}}],
        "total_amount": {"amount": "25.00", "currency": "USD"},
        "business_justification": "Office coffee for the week"
    });
    let bytes = serde_json_canonicalizer::to_vec(&expected).unwrap();
    let digest = hex::encode(Sha256::digest(&bytes));
    assert_eq!(
        intent().intent_hash().to_string(),
        format!("sha256:{digest}")
    );
}

/// "12.5" and "12.50" (and "12.500") are the same price: same hash.
#[test]
fn intent_hash_ignores_amount_formatting() {
    let h = intent().intent_hash();
    for price in ["12.5", "12.50", "12.500"] {
        let i: PurchaseIntent = from_json(&intent_json(price)).unwrap();
        assert_eq!(i.intent_hash(), h, "{price}");
    }
}

/// Changing any hashed field changes the hash, and every change gives a different hash.
#[test]
fn intent_hash_differs_when_any_hashed_field_changes() {
    type Bend = fn(&mut PurchaseIntentSpec);
    let bends: Vec<(&str, Bend)> = vec![
        ("agent", |i| i.agent_id = id("agent_124")),
        ("task", |i| i.task_id = id("task_10")),
        ("merchant", |i| i.merchant_id = id("merchant_002")),
        ("mcc", |i| i.mcc = id("5412")),
        ("description", |i| {
            i.line_items[0].description = id("Tea leaves")
        }),
        ("quantity", |i| i.line_items[0].quantity = 3),
        ("price", |i| i.line_items[0].unit_price = usd("30.00")),
        ("one cent", |i| i.line_items[0].unit_price = usd("12.51")),
        ("currency", |i| {
            i.line_items[0].unit_price = money("12.50", Currency::EUR)
        }),
        ("same total, other split", |i| {
            i.line_items[0].quantity = 1;
            i.line_items[0].unit_price = usd("25.00");
        }),
        ("extra line", |i| {
            i.line_items.push(IntentLine {
                description: id("Filters"),
                quantity: 1,
                unit_price: usd("3.00"),
            })
        }),
        ("justification", |i| {
            i.business_justification = id("Office coffee for the month")
        }),
    ];
    let mut seen = vec![("original", intent().intent_hash())];
    for (name, bend) in bends {
        let mut i = spec();
        bend(&mut i);
        let h = hash(&i);
        if let Some((other, _)) = seen.iter().find(|(_, x)| *x == h) {
            panic!("{name} hashes like {other}");
        }
        seen.push((name, h));
    }
}

/// Line order is part of what was declared: swapping two lines changes the hash.
#[test]
fn intent_hash_depends_on_line_order() {
    let mut i = spec();
    i.line_items.push(IntentLine {
        description: id("Filters"),
        quantity: 1,
        unit_price: usd("3.00"),
    });
    let h = hash(&i);
    i.line_items.swap(0, 1);
    assert_ne!(hash(&i), h);
}

/// Urgency is not hashed (as in the seed): it does not change what is bought.
#[test]
fn intent_hash_excludes_urgency() {
    let mut i = spec();
    let h = hash(&i);
    i.urgency = Urgency::Critical;
    assert_eq!(hash(&i), h);
}

/// An intent that cannot be totalled has no hash: no lines, a zero quantity, mixed currencies,
/// more than 50 lines. The error names the field (I11).
#[test]
fn intent_hash_rejects_bad_intents() {
    let mut empty = spec();
    empty.line_items.clear();
    assert_eq!(
        PurchaseIntent::new(empty).unwrap_err().field(),
        "line_items"
    );

    let mut zero = spec();
    zero.line_items[0].quantity = 0;
    assert_eq!(
        PurchaseIntent::new(zero).unwrap_err().field(),
        "line_items[0].quantity"
    );

    let mut mixed = spec();
    mixed.line_items.push(IntentLine {
        description: id("Croissants"),
        quantity: 1,
        unit_price: money("3.00", Currency::EUR),
    });
    assert_eq!(
        PurchaseIntent::new(mixed).unwrap_err().field(),
        "line_items[1].unit_price"
    );

    let mut long = spec();
    long.line_items = vec![long.line_items[0].clone(); 51];
    assert_eq!(
        PurchaseIntent::new(long.clone()).unwrap_err().field(),
        "line_items"
    );
    long.line_items.truncate(50);
    assert!(PurchaseIntent::new(long).is_ok());
}

/// The intent's total binds to the payment: the cart the agent checks out for the intent has
/// the same total, and the decision allows it under the seed's controls.
#[test]
fn intent_total_matches_the_authorized_amount() {
    let i = intent();
    let total = i.total();
    let doc = routine(&total.amount_text());
    assert_eq!(doc.request.amount, total);
    allowed(&decide(&doc));
}
