//! Serialize -> deserialize round trips for every public domain type, and the stable wire names.
//!
//! Invariants defended: I8 (decisions and their blocker codes have stable wire forms: a stored
//! or transmitted decision reads back equal), I11 (what we write, we read back through the same
//! validating deserialisers, also via `json::from_json`), I7 (a snapshot's id survives the trip).

mod common;

use std::collections::BTreeSet;
use std::fmt::Debug;

use agent_mandate::domain::examples;
use agent_mandate::domain::{
    evaluate, widenings, ActionSet, Actor, ActorId, ActorKind, AmountScope, AuthorityDecision,
    Baseline, Blocker, BlockerClass, BlockerCode, Budgets, BuyerId, BuyerType, CartBinding,
    CartContent, CartId, CartSnapshot, Cause, Channel, ChannelRef, CheckoutContext, CheckoutId,
    CheckoutState, Confirmation, ConfirmationCondition, ConfirmationId, ConfirmationRule,
    ConfirmationScope, ContentDigest, CredentialStatus, Currency, CurrencyScope, Dimension,
    EvaluationDocument, Evidence, EvidenceRef, IntentHash, IntentLine, Lifecycle, LifecycleEvent,
    LineItem, Mandate, MandateId, MandateScope, MandateSpec, MandateStatus, MarketplaceId, Mcc,
    Merchant, MerchantId, MerchantScope, Money, Outcome, PaymentAction, PaymentRequest,
    PurchaseIntent, PurchaseIntentSpec, Region, RequestDigest, SellerId, Sku, SnapshotId,
    Suspensions, TaskId, Text, Totals, UpstreamBlocker, UpstreamCode, Urgency, Usage, UsageSpec,
    Validity, Widening, WindowLimit, WindowUsage,
};
use agent_mandate::json::from_json;
use proptest::prelude::*;
use serde::de::DeserializeOwned;
use serde::Serialize;

use common::*;

/// Serializes `value`, reads it back with serde_json and with `json::from_json`, asserts both
/// equal the original and that serializing again gives the same text; returns the text.
#[track_caller]
fn roundtrip<T>(value: &T) -> String
where
    T: Serialize + DeserializeOwned + PartialEq + Debug,
{
    let text = serde_json::to_string(value).expect("serializes");
    let back: T = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    assert_eq!(&back, value, "{text}");
    assert_eq!(serde_json::to_string(&back).unwrap(), text);
    let via: T = from_json(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    assert_eq!(&via, value);
    let pretty = serde_json::to_string_pretty(value).unwrap();
    let back: T = serde_json::from_str(&pretty).unwrap();
    assert_eq!(&back, value);
    text
}

/// The JSON string a value serializes to (for enums with unit variants).
fn wire<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap()
}

fn quoted(s: &str) -> String {
    format!("\"{s}\"")
}

// ---------------------------------------------------------------------------------------------
// Money, currency, identifiers, digests.
// ---------------------------------------------------------------------------------------------

#[test]
fn money_roundtrips_at_the_currency_scale() {
    for (amount, currency, text) in [
        ("129", Currency::EUR, "129.00"),
        ("25.0", Currency::EUR, "25.00"),
        ("0", Currency::USD, "0.00"),
        ("129", Currency::JPY, "129"),
        ("1.5", Currency::BHD, "1.500"),
        ("1000000000000000", Currency::GBP, "1000000000000000.00"),
    ] {
        let m = money(amount, currency);
        let json = roundtrip(&m);
        assert_eq!(
            json,
            format!(r#"{{"amount":"{text}","currency":"{}"}}"#, currency.code())
        );
    }
}

#[test]
fn currency_roundtrips_as_its_code() {
    for code in ["EUR", "USD", "GBP", "JPY", "BHD", "CHF", "KWD", "ISK"] {
        let c: Currency = code.parse().unwrap();
        assert_eq!(roundtrip(&c), quoted(code));
    }
    assert_eq!(Currency::BHD.exponent(), 3);
    assert_eq!(Currency::JPY.exponent(), 0);
}

#[test]
fn identifiers_roundtrip_as_plain_strings() {
    fn check<T>(text: &str)
    where
        T: Serialize + DeserializeOwned + PartialEq + Debug + std::str::FromStr,
        T::Err: Debug,
    {
        let v: T = text.parse().unwrap();
        assert_eq!(roundtrip(&v), serde_json::to_string(text).unwrap());
    }
    check::<BuyerId>("buyer_456");
    check::<ActorId>("agent_123");
    check::<MandateId>("mandate_001");
    check::<MerchantId>("merchant_001");
    check::<MarketplaceId>("market_1");
    check::<SellerId>("seller_9");
    check::<Sku>("BAG-TRAVEL-42");
    check::<CheckoutId>("checkout_789");
    check::<CartId>("cart_42");
    check::<ConfirmationId>("confirmation_1");
    check::<EvidenceRef>("ap2:intent_mandate:im_001");
    check::<UpstreamCode>("INVENTORY_STALE");
    check::<ChannelRef>("push:device_42");
    check::<TaskId>("task_9");
    check::<Region>("US-CA");
    check::<Text>("Travel Backpack, grey \"42 l\" – ünïcödé");
    check::<Mcc>("0742");
    // The longest accepted identifier survives too.
    check::<MandateId>(&"m".repeat(128));
}

#[test]
fn digests_roundtrip_as_sha256_text() {
    let snapshot = examples::travel_backpack_snapshot();
    let sid = snapshot.id();
    assert_eq!(roundtrip(&sid), quoted(&sid.to_string()));
    assert!(sid.to_string().starts_with("sha256:"));
    let items: ContentDigest = snapshot.items_digest();
    roundtrip(&items);
    roundtrip(&snapshot.policy_digest());
    let rd: RequestDigest = examples::authorize_request(&snapshot).digest();
    roundtrip(&rd);
    let ih: IntentHash = intent().intent_hash();
    roundtrip(&ih);
    assert_eq!(SnapshotId::parse(&sid.to_string()).unwrap(), sid);
}

// ---------------------------------------------------------------------------------------------
// Snapshots.
// ---------------------------------------------------------------------------------------------

fn marketplace_snapshot() -> CartSnapshot {
    snapshot_with(|c| {
        c.merchant.marketplace_id = Some(id("market_1"));
        c.merchant.seller_id = Some(id("seller_9"));
        c.context.buyer_type = Some(BuyerType::Business);
        c.context.channel = Channel::Marketplace;
        c.items.push(LineItem {
            sku: id("TAG-1"),
            description: id("Luggage tag"),
            quantity: 3,
            unit_price: eur("2.50"),
        });
        c.totals = Totals {
            subtotal: eur("136.50"),
            shipping: eur("4.90"),
            tax: eur("15.00"),
            discount: eur("6.40"),
            total: eur("150.00"),
        };
        c.policy_refs = vec![id("policy:z"), id("policy:a"), id("policy:a")];
    })
}

#[test]
fn snapshot_roundtrips_with_its_id() {
    for snapshot in [
        examples::travel_backpack_snapshot(),
        examples::over_limit_snapshot(),
        marketplace_snapshot(),
    ] {
        let text = roundtrip(&snapshot);
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(value["id"], snapshot.id().to_string());
        let back: CartSnapshot = serde_json::from_str(&text).unwrap();
        assert_eq!(back.id(), snapshot.id());
        // The content alone round trips too, and rebuilds the same snapshot.
        let content: CartContent = snapshot.content().clone();
        roundtrip(&content);
        assert_eq!(CartSnapshot::new(content).unwrap(), snapshot);
    }
    // Reference sets are written sorted and de-duplicated.
    let m = marketplace_snapshot();
    let refs: Vec<_> = m.content().policy_refs.iter().map(|r| r.as_str()).collect();
    assert_eq!(refs, ["policy:a", "policy:z"]);
}

#[test]
fn snapshot_parts_roundtrip() {
    let s = marketplace_snapshot();
    roundtrip::<Merchant>(s.merchant());
    roundtrip::<Totals>(s.totals());
    roundtrip::<CheckoutContext>(&s.content().context);
    for item in s.items() {
        roundtrip::<LineItem>(item);
    }
    for (c, name) in [
        (Channel::Storefront, "storefront"),
        (Channel::Agent, "agent"),
        (Channel::Marketplace, "marketplace"),
    ] {
        assert_eq!(roundtrip(&c), quoted(name));
    }
    assert_eq!(roundtrip(&BuyerType::Consumer), quoted("consumer"));
    assert_eq!(roundtrip(&BuyerType::Business), quoted("business"));
}

// ---------------------------------------------------------------------------------------------
// Mandates.
// ---------------------------------------------------------------------------------------------

fn rich_mandate() -> Mandate {
    let seen = examples::over_limit_snapshot();
    edit(&examples::travel_backpack_mandate(), |s| {
        s.parent_id = Some(id("mandate_root"));
        s.scope.merchants = MerchantScope::Marketplace {
            marketplace_id: id("market_1"),
            allowed_sellers: Some(vec![id("seller_9"), id("seller_10")]),
        };
        s.scope.mccs = None;
        s.scope.currency.conversion_allowed = true;
        s.scope.budgets.windows.push(WindowLimit {
            window_seconds: 3600,
            max_amount: None,
            max_count: Some(2),
        });
        s.scope.confirmation = ConfirmationRule {
            conditions: vec![
                ConfirmationCondition::Always,
                ConfirmationCondition::AboveAmount {
                    amount: eur("100.00"),
                },
                ConfirmationCondition::UrgencyAtLeast {
                    urgency: Urgency::TimeSensitive,
                },
                ConfirmationCondition::AmountChanged,
                ConfirmationCondition::CartChanged,
                ConfirmationCondition::ShippingChanged,
                ConfirmationCondition::PolicyChanged,
            ],
            baseline: Some(Baseline::of(&seen)),
        };
        s.scope.max_uses = None;
        s.scope.amount.max_payment_attempts = None;
        s.evidence_refs = vec![];
    })
}

fn allowlist_bound_mandate() -> Mandate {
    let bound = examples::travel_backpack_snapshot().id();
    edit(&examples::travel_backpack_mandate(), |s| {
        s.scope.merchants = MerchantScope::Allowlist {
            merchant_ids: vec![id("merchant_001"), id("merchant_002")],
        };
        s.scope.cart = CartBinding::Snapshot { snapshot_id: bound };
        s.scope.budgets = Budgets::default();
        s.scope.actions = [PaymentAction::Authorize].into_iter().collect();
        s.lifecycle = Lifecycle::new(MandateStatus::PendingConfirmation, at(8, 0, 0));
    })
}

fn every_lifecycle() -> Vec<Mandate> {
    let active = examples::travel_backpack_mandate();
    let pending = allowlist_bound_mandate();
    let t = at(8, 30, 0);
    vec![
        active.clone(),
        pending.clone(),
        pending.apply(&LifecycleEvent::Confirm, t).unwrap(),
        pending
            .apply(
                &LifecycleEvent::Reject {
                    reason: id("too expensive"),
                },
                t,
            )
            .unwrap(),
        active
            .apply(
                &LifecycleEvent::Revoke {
                    reason: id("lost phone"),
                },
                t,
            )
            .unwrap(),
        active.apply(&LifecycleEvent::MarkUsed, t).unwrap(),
        active.apply(&LifecycleEvent::Expire, t).unwrap(),
        rich_mandate(),
    ]
}

#[test]
fn mandates_roundtrip_in_every_shape_and_status() {
    let mut statuses = BTreeSet::new();
    for m in every_lifecycle() {
        let text = roundtrip(&m);
        statuses.insert(m.status().as_str());
        assert!(text.contains(&format!(r#""status":"{}""#, m.status().as_str())));
        let spec: MandateSpec = m.spec().clone();
        roundtrip(&spec);
        roundtrip::<MandateScope>(m.scope());
        roundtrip::<Lifecycle>(m.lifecycle());
    }
    assert_eq!(statuses.len(), 6, "{statuses:?}");
}

#[test]
fn scope_parts_roundtrip() {
    let m = rich_mandate();
    let s = m.scope();
    roundtrip::<MerchantScope>(&s.merchants);
    roundtrip::<AmountScope>(&s.amount);
    roundtrip::<CurrencyScope>(&s.currency);
    roundtrip::<Budgets>(&s.budgets);
    roundtrip::<ConfirmationRule>(&s.confirmation);
    roundtrip::<Validity>(&s.validity);
    for w in &s.budgets.windows {
        roundtrip::<WindowLimit>(w);
    }
    for c in &s.confirmation.conditions {
        roundtrip::<ConfirmationCondition>(c);
    }
    roundtrip::<Baseline>(s.confirmation.baseline.as_ref().unwrap());
    roundtrip::<CartBinding>(&allowlist_bound_mandate().scope().cart);
    roundtrip::<MerchantScope>(&allowlist_bound_mandate().scope().merchants);
    roundtrip::<CartBinding>(&examples::travel_backpack_mandate().scope().cart);
    roundtrip::<ConfirmationRule>(&ConfirmationRule::never());
    roundtrip(&Actor {
        id: id("agent_123"),
        kind: ActorKind::Agent,
    });
}

#[test]
fn enums_use_snake_case_variant_names() {
    let m = rich_mandate();
    let text = wire(&m.scope().merchants);
    assert!(text.starts_with(r#"{"marketplace":{"#), "{text}");
    let text = wire(&allowlist_bound_mandate().scope().cart);
    assert!(text.starts_with(r#"{"snapshot":{"#), "{text}");
    let text = wire(&examples::travel_backpack_mandate().scope().cart);
    assert!(text.starts_with(r#"{"open":{"#), "{text}");
    let conditions = wire(&m.scope().confirmation.conditions);
    for tag in [
        r#""always""#,
        r#"{"above_amount":{"amount":{"amount":"100.00","currency":"EUR"}}}"#,
        r#"{"urgency_at_least":{"urgency":"time_sensitive"}}"#,
        r#""amount_changed""#,
        r#""cart_changed""#,
        r#""shipping_changed""#,
        r#""policy_changed""#,
    ] {
        assert!(conditions.contains(tag), "{tag} not in {conditions}");
    }
}

#[test]
fn action_sets_roundtrip_as_lists_in_wire_order() {
    for bits in 0u8..32 {
        let set: ActionSet = PaymentAction::ALL
            .into_iter()
            .enumerate()
            .filter(|(i, _)| bits & (1 << i) != 0)
            .map(|(_, a)| a)
            .collect();
        roundtrip(&set);
    }
    let all: ActionSet = PaymentAction::ALL.into_iter().rev().collect();
    assert_eq!(
        wire(&all),
        r#"["prepare_payment","authorize_payment","capture_payment","refund_payment","commit_order"]"#
    );
}

#[test]
fn unit_enums_serialize_as_their_wire_names() {
    for a in PaymentAction::ALL {
        assert_eq!(roundtrip(&a), quoted(a.as_str()));
    }
    assert_eq!(wire(&PaymentAction::Authorize), r#""authorize_payment""#);
    assert_eq!(wire(&PaymentAction::CommitOrder), r#""commit_order""#);
    for s in MandateStatus::ALL {
        assert_eq!(roundtrip(&s), quoted(s.as_str()));
        assert_eq!(s.to_string(), s.as_str());
    }
    assert_eq!(
        wire(&MandateStatus::PendingConfirmation),
        r#""pending_confirmation""#
    );
    for o in [
        Outcome::Allowed,
        Outcome::Blocked,
        Outcome::RequiresConfirmation,
        Outcome::RequiresRevalidation,
    ] {
        assert_eq!(roundtrip(&o), quoted(o.as_str()));
        assert_eq!(o.to_string(), o.as_str());
    }
    assert_eq!(
        wire(&Outcome::RequiresConfirmation),
        r#""requires_confirmation""#
    );
    for u in [Urgency::Routine, Urgency::TimeSensitive, Urgency::Critical] {
        assert_eq!(roundtrip(&u), quoted(u.as_str()));
    }
    for (k, name) in [
        (ActorKind::Human, "human"),
        (ActorKind::Agent, "agent"),
        (ActorKind::System, "system"),
    ] {
        assert_eq!(roundtrip(&k), quoted(name));
    }
    for (c, name) in [
        (CredentialStatus::Usable, "usable"),
        (CredentialStatus::Revoked, "revoked"),
        (CredentialStatus::Expired, "expired"),
        (CredentialStatus::Suspended, "suspended"),
    ] {
        assert_eq!(roundtrip(&c), quoted(name));
    }
    for (c, name) in [
        (BlockerClass::Hard, "hard"),
        (BlockerClass::Stale, "stale"),
        (BlockerClass::Confirmation, "confirmation"),
    ] {
        assert_eq!(roundtrip(&c), quoted(name));
    }
}

#[test]
fn lifecycle_events_roundtrip_by_variant_name() {
    for e in [
        LifecycleEvent::Confirm,
        LifecycleEvent::Reject {
            reason: id("too expensive"),
        },
        LifecycleEvent::Revoke {
            reason: id("lost phone"),
        },
        LifecycleEvent::MarkUsed,
        LifecycleEvent::Expire,
    ] {
        let text = roundtrip(&e);
        assert!(
            text.starts_with(&format!(r#"{{"{}":"#, e.as_str()))
                || text == format!(r#""{}""#, e.as_str()),
            "{text}"
        );
    }
    assert_eq!(wire(&LifecycleEvent::MarkUsed), r#""mark_used""#);
    assert_eq!(
        wire(&LifecycleEvent::Revoke {
            reason: id("lost phone")
        }),
        r#"{"revoke":{"reason":"lost phone"}}"#
    );
}

// ---------------------------------------------------------------------------------------------
// Usage, checkout, confirmation, request, document.
// ---------------------------------------------------------------------------------------------

#[test]
fn usage_roundtrips() {
    let m = examples::travel_backpack_mandate();
    let mut u = usage_with(&m, "10.00", "5.50", "15.50", 2);
    u.uses = 1;
    u.attempts = 2;
    roundtrip::<Usage>(&u);
    roundtrip::<Usage>(&Usage::zero(id("m_jpy"), Currency::JPY));
    roundtrip::<WindowUsage>(&u.windows[0]);
    let spec = UsageSpec::from(u.clone());
    roundtrip(&spec);
    assert_eq!(Usage::try_from(spec).unwrap(), u);
}

#[test]
fn checkout_states_roundtrip_by_status_name() {
    let sid = examples::travel_backpack_snapshot().id();
    let states = [
        examples::valid_checkout(sid),
        examples::invalid_checkout(),
        CheckoutState::Invalid {
            checkout_id: id("checkout_1"),
            blockers: vec![],
        },
        CheckoutState::Expired {
            checkout_id: id("checkout_789"),
            expired_at: at(8, 59, 30),
        },
    ];
    for (state, tag) in states
        .iter()
        .zip(["valid", "invalid", "invalid", "expired"])
    {
        let text = roundtrip(state);
        assert!(text.starts_with(&format!(r#"{{"{tag}":{{"#)), "{text}");
    }
    assert_eq!(
        wire(&examples::valid_checkout(sid)),
        format!(r#"{{"valid":{{"checkout_id":"checkout_789","snapshot_id":"{sid}"}}}}"#)
    );
    if let CheckoutState::Invalid { blockers, .. } = examples::invalid_checkout() {
        for b in &blockers {
            roundtrip::<UpstreamBlocker>(b);
        }
    }
}

#[test]
fn confirmation_roundtrips() {
    let doc = examples::travel_backpack_document();
    let mut c = confirmation_for(&doc);
    roundtrip::<Confirmation>(&c);
    roundtrip::<ConfirmationScope>(&c.scope);
    c.expires_at = None;
    let text = roundtrip(&c);
    assert!(!text.contains("expires_at"), "{text}");
}

#[test]
fn payment_request_roundtrips_and_keeps_its_digest() {
    let snapshot = examples::travel_backpack_snapshot();
    let mut r = examples::authorize_request(&snapshot);
    let text = roundtrip::<PaymentRequest>(&r);
    assert!(text.contains(r#""action":"authorize_payment""#), "{text}");
    assert!(!text.contains("urgency"), "{text}");
    let back: PaymentRequest = serde_json::from_str(&text).unwrap();
    assert_eq!(back.digest(), r.digest());
    r.urgency = Some(Urgency::Critical);
    r.action = PaymentAction::CommitOrder;
    let text = roundtrip(&r);
    assert!(text.contains(r#""urgency":"critical""#), "{text}");
    assert!(text.contains(r#""action":"commit_order""#), "{text}");
}

#[test]
fn evaluation_documents_roundtrip_and_decide_the_same() {
    let mut full = delegated_document();
    full.confirmations.push(confirmation_for(&full));
    full.suspensions = Suspensions {
        actors: vec![id("agent_999")],
        buyers: vec![id("buyer_999")],
        credentials: vec![id("agent_998")],
    };
    full.checkout = examples::invalid_checkout();
    let mut bare = examples::travel_backpack_document();
    bare.credential = None;
    bare.chain.clear();
    bare.usage.clear();
    for doc in [examples::travel_backpack_document(), full, bare] {
        let text = roundtrip::<EvaluationDocument>(&doc);
        let back: EvaluationDocument = serde_json::from_str(&text).unwrap();
        assert_eq!(evaluate(&back.input()), evaluate(&doc.input()));
    }
    roundtrip(&Suspensions::default());
}

// ---------------------------------------------------------------------------------------------
// Decisions and blocker codes.
// ---------------------------------------------------------------------------------------------

fn decisions() -> Vec<AuthorityDecision> {
    let mut invalid = examples::travel_backpack_document();
    invalid.checkout = examples::invalid_checkout();
    let mut confirm = examples::travel_backpack_document();
    edit_leaf(&mut confirm, |s| {
        s.scope.confirmation = ConfirmationRule::always()
    });
    let mut confirmed = confirm.clone();
    confirmed.confirmations.push(confirmation_for(&confirmed));
    let mut stale = examples::travel_backpack_document();
    stale.now = at(9, 55, 0);
    let mut ancestor = delegated_document();
    ancestor.chain[0] = ancestor.chain[0]
        .apply(
            &LifecycleEvent::Revoke {
                reason: id("kill switch"),
            },
            at(8, 30, 0),
        )
        .unwrap();
    [
        examples::travel_backpack_document(),
        examples::document_for(examples::over_limit_snapshot()),
        invalid,
        confirm,
        confirmed,
        stale,
        ancestor,
    ]
    .iter()
    .map(|d| evaluate(&d.input()))
    .collect()
}

#[test]
fn decisions_roundtrip_in_every_outcome() {
    let mut outcomes = BTreeSet::new();
    for d in decisions() {
        let text = roundtrip::<AuthorityDecision>(&d);
        outcomes.insert(d.outcome.as_str());
        assert!(text.contains(&format!(r#""outcome":"{}""#, d.outcome)));
        for b in &d.blockers {
            roundtrip::<Blocker>(b);
            for c in &b.causes {
                roundtrip::<Cause>(c);
            }
        }
        for e in &d.evidence {
            roundtrip::<Evidence>(e);
        }
    }
    assert_eq!(outcomes.len(), 4, "{outcomes:?}");
}

#[test]
fn blocked_decision_wire_form() {
    let mut doc = examples::travel_backpack_document();
    doc.checkout = examples::invalid_checkout();
    let d = evaluate(&doc.input());
    let text = roundtrip(&d);
    assert!(text.contains(r#""outcome":"blocked""#), "{text}");
    assert!(text.contains(r#""code":"CHECKOUT_NOT_VALID""#), "{text}");
    assert!(
        text.contains(r#""causes":[{"code":"INVENTORY_STALE""#),
        "{text}"
    );
    assert!(
        text.contains(r#"{"payment_mandate":"mandate_001"}"#),
        "{text}"
    );
    assert!(
        text.contains(r#"{"checkout_state":"checkout_789"}"#),
        "{text}"
    );
    // Absent options and empty lists of a blocker are left out.
    assert!(!text.contains(r#""mandate_id":null"#), "{text}");

    let over = evaluate(&examples::document_for(examples::over_limit_snapshot()).input());
    let text = wire(&over);
    assert!(
        text.contains(r#""code":"AMOUNT_EXCEEDS_MANDATE""#),
        "{text}"
    );
    assert!(text.contains(r#""mandate_id":"mandate_001""#), "{text}");
}

#[test]
fn allowed_decision_wire_form() {
    let doc = examples::travel_backpack_document();
    let d = evaluate(&doc.input());
    let text = roundtrip(&d);
    assert!(
        text.starts_with(r#"{"outcome":"allowed","blockers":[]"#),
        "{text}"
    );
    assert!(
        text.contains(r#""evaluated_at":"2026-06-28T09:00:00Z""#),
        "{text}"
    );
    assert!(text.contains(&format!(r#""request_digest":"{}""#, doc.request.digest())));
}

#[test]
fn every_blocker_code_serializes_as_its_screaming_snake_name() {
    let mut names = BTreeSet::new();
    for &code in BlockerCode::ALL {
        let name = code.as_str();
        assert!(
            name.bytes().all(|b| b.is_ascii_uppercase() || b == b'_'),
            "{name}"
        );
        assert_eq!(roundtrip(&code), quoted(name));
        assert_eq!(code.to_string(), name);
        assert!(names.insert(name), "{name} used twice");
    }
    assert_eq!(
        wire(&BlockerCode::AmountExceedsMandate),
        r#""AMOUNT_EXCEEDS_MANDATE""#
    );
    // The codes DESIGN.md lists keep their wire names.
    for name in [
        "CHECKOUT_NOT_VALID",
        "AUTHORITY_MISSING",
        "ACTOR_NOT_AUTHORIZED",
        "BUYER_MISMATCH",
        "CART_SNAPSHOT_MISMATCH",
        "SNAPSHOT_EXPIRED",
        "AMOUNT_EXCEEDS_MANDATE",
        "LOWER_AMOUNT_NOT_ALLOWED",
        "CURRENCY_MISMATCH",
        "MERCHANT_MISMATCH",
        "MCC_NOT_ALLOWED",
        "ACTION_NOT_ALLOWED",
        "MANDATE_NOT_YET_VALID",
        "MANDATE_EXPIRED",
        "MANDATE_REVOKED",
        "MANDATE_USED",
        "MANDATE_PENDING_CONFIRMATION",
        "MANDATE_REJECTED",
        "ANCESTOR_NOT_ACTIVE",
        "TRANSACTION_LIMIT_EXCEEDED",
        "WINDOW_AMOUNT_EXCEEDED",
        "WINDOW_COUNT_EXCEEDED",
        "LIFETIME_LIMIT_EXCEEDED",
        "ATTEMPTS_EXHAUSTED",
        "CREDENTIAL_NOT_USABLE",
        "ACTOR_SUSPENDED",
        "CONFIRMATION_REQUIRED",
    ] {
        assert!(names.contains(name), "{name} missing from BlockerCode::ALL");
        let code: BlockerCode = serde_json::from_str(&quoted(name)).unwrap();
        assert_eq!(code.as_str(), name);
    }
}

// ---------------------------------------------------------------------------------------------
// Intents, delegation.
// ---------------------------------------------------------------------------------------------

fn intent() -> PurchaseIntent {
    PurchaseIntent::new(PurchaseIntentSpec {
        agent_id: id("agent_123"),
        task_id: id("task_9"),
        merchant_id: id("merchant_001"),
        mcc: id("5411"),
        line_items: vec![
            IntentLine {
                description: id("Coffee beans"),
                quantity: 2,
                unit_price: usd("12.50"),
            },
            IntentLine {
                description: id("Filters"),
                quantity: 1,
                unit_price: usd("3"),
            },
        ],
        business_justification: id("Office coffee for the week"),
        urgency: Urgency::TimeSensitive,
    })
    .unwrap()
}

#[test]
fn purchase_intent_roundtrips_with_the_same_hash() {
    let i = intent();
    let text = roundtrip(&i);
    assert!(text.contains(r#""urgency":"time_sensitive""#), "{text}");
    let back: PurchaseIntent = serde_json::from_str(&text).unwrap();
    assert_eq!(back.intent_hash(), i.intent_hash());
    roundtrip::<IntentLine>(&i.spec().line_items[0]);
}

#[test]
fn widenings_roundtrip() {
    let parent = examples::travel_backpack_mandate();
    let child = edit(&parent, |s| {
        s.id = id("mandate_wide");
        s.scope.amount.max_amount = eur("500.00");
        s.scope.mccs = None;
        s.scope.validity.expires_at = at(8, 0, 0) + chrono::Duration::days(30);
    });
    let found = widenings(&parent, &child);
    assert!(found.len() >= 4, "{found:?}");
    for w in &found {
        roundtrip::<Widening>(w);
        roundtrip::<Dimension>(&w.dimension);
    }
    let text = wire(&found);
    assert!(text.contains(r#""dimension":"max_amount""#), "{text}");
    assert!(text.contains(r#""dimension":"expires_at""#), "{text}");
    assert!(text.contains(r#""dimension":"parent""#), "{text}");
}

// ---------------------------------------------------------------------------------------------
// Properties.
// ---------------------------------------------------------------------------------------------

fn currency() -> impl Strategy<Value = Currency> {
    prop_oneof![
        Just(Currency::EUR),
        Just(Currency::USD),
        Just(Currency::JPY),
        Just(Currency::BHD),
        Just(Currency::GBP),
    ]
}

proptest! {
    /// Any valid amount round trips exactly, in canonical text at the currency's scale.
    #[test]
    fn any_money_roundtrips(minor in 0i64..=1_000_000_000_000_000, c in currency()) {
        let m = Money::from_minor(minor, c).unwrap();
        let text = roundtrip(&m);
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        let amount = value["amount"].as_str().unwrap();
        let decimals = amount.split_once('.').map_or(0, |(_, f)| f.len());
        prop_assert_eq!(decimals as u32, c.exponent());
        prop_assert_eq!(m.minor_units(), minor);
    }

    /// Any quantity and price gives a snapshot that round trips with its id.
    #[test]
    fn any_snapshot_roundtrips(quantity in 1u32..=1000, cents in 0i64..=10_000_000) {
        let price = Money::from_minor(cents, Currency::EUR).unwrap();
        let snapshot = snapshot_with(|c| {
            c.items[0].quantity = quantity;
            c.items[0].unit_price = price;
            let subtotal = price.checked_mul(quantity).unwrap();
            c.totals.subtotal = subtotal;
            c.totals.total = subtotal.checked_add(&c.totals.tax).unwrap();
        });
        let text = serde_json::to_string(&snapshot).unwrap();
        let back: CartSnapshot = serde_json::from_str(&text).unwrap();
        prop_assert_eq!(back.id(), snapshot.id());
        prop_assert_eq!(back, snapshot);
    }
}

// ---------------------------------------------------------------------------------------------
// Engine commands, outcomes, recorded results and reads (what a service sends and answers).
// ---------------------------------------------------------------------------------------------

#[cfg(feature = "testkit")]
mod engine_bodies {
    use super::roundtrip;
    use crate::common::engine::{agent_capture, agent_void, key, roomy_world};
    use crate::common::principals::{agent_p, buyer_p, operator_p};
    use crate::common::{eur, id};
    use agent_mandate::domain::{examples, Party};
    use agent_mandate::engine::{
        CapturePayment, ChangeMandate, CommitOrder, CreateMandate, DeriveMandate, Evaluate,
        ExecutePayment, OrderOutcome, PaymentOutcome, RecordConfirmation, Recorded, Recovery,
        RefundPayment, SetSuspension, TrailReport, VoidPayment,
    };
    use agent_mandate::json::{from_json, InputErrorKind};
    use serde_json::{json, Value};

    #[tokio::test]
    async fn outcomes_roundtrip_in_every_variant_tagged_by_outcome() {
        let w = roomy_world().await;
        let pay = w.execute("pay-1");
        let done = w.engine.execute_payment(&agent_p(), &pay).await.unwrap();
        let text = roundtrip::<PaymentOutcome>(&done);
        assert!(
            text.starts_with(r#"{"outcome":"done","attempt":{"#),
            "{text}"
        );
        assert!(
            text.contains(r#""decision":{"outcome":"allowed""#),
            "{text}"
        );
        let replayed = w.engine.execute_payment(&agent_p(), &pay).await.unwrap();
        let text = roundtrip::<PaymentOutcome>(&replayed);
        assert!(
            text.starts_with(r#"{"outcome":"replayed","attempt":{"#),
            "{text}"
        );
        assert!(!text.contains(r#""decision""#), "{text}");
        let mut blocked = w.execute("pay-blocked");
        blocked.checkout = examples::invalid_checkout();
        let refused = w
            .engine
            .execute_payment(&agent_p(), &blocked)
            .await
            .unwrap();
        let text = roundtrip::<PaymentOutcome>(&refused);
        assert!(
            text.starts_with(r#"{"outcome":"refused","decision":{"outcome":"blocked""#),
            "{text}"
        );
        let attempt = done.attempt().unwrap().id.clone();
        let captured = w
            .engine
            .capture(&agent_p(), &agent_capture("cap-1", &attempt, None))
            .await
            .unwrap();
        roundtrip::<PaymentOutcome>(&captured);
        let second = w
            .engine
            .execute_payment(&agent_p(), &w.execute("pay-2"))
            .await
            .unwrap();
        let voided = w
            .engine
            .void(
                &agent_p(),
                &agent_void("void-1", &second.attempt().unwrap().id),
            )
            .await
            .unwrap();
        let text = roundtrip::<PaymentOutcome>(&voided);
        assert!(
            !text.contains(r#""decision""#),
            "a void has no decision: {text}"
        );

        let third = w
            .engine
            .execute_payment(&agent_p(), &w.execute("pay-3"))
            .await
            .unwrap();
        let commit: CommitOrder = from_json(
            &json!({
                "key": "order-1",
                "attempt_id": third.attempt().unwrap().id,
                "checkout": examples::valid_checkout(w.snapshot.id()),
            })
            .to_string(),
        )
        .unwrap();
        roundtrip(&commit);
        let committed = w.engine.commit_order(&agent_p(), &commit).await.unwrap();
        let text = roundtrip::<OrderOutcome>(&committed);
        assert!(
            text.starts_with(r#"{"outcome":"committed","order":{"#),
            "{text}"
        );
        let existing = w.engine.commit_order(&agent_p(), &commit).await.unwrap();
        let text = roundtrip::<OrderOutcome>(&existing);
        assert!(
            text.starts_with(r#"{"outcome":"existing","order":{"#),
            "{text}"
        );

        // A failed commitment, as the engine builds it after money moved.
        let failed = OrderOutcome::Failed {
            reason: "the checkout moved on".into(),
            decision: refused.decision().cloned(),
            // `Recovery` is non_exhaustive: outside the crate it is read, not built.
            recovery: serde_json::from_value::<Recovery>(serde_json::json!({
                "operation": agent_mandate::domain::Operation::Void,
                "attempt": third.attempt().unwrap(),
            }))
            .expect("a recovery body"),
        };
        let text = roundtrip(&failed);
        assert!(
            text.starts_with(r#"{"outcome":"failed","reason":"#),
            "{text}"
        );
        assert!(!text.contains(r#""error""#), "{text}");

        // Recorded results and reads.
        let created = w
            .engine
            .create_mandate(
                &buyer_p(),
                &CreateMandate::new(key("create-2"), {
                    let mut s = crate::common::engine::backpack_spec(true);
                    s.id = id("mandate_002");
                    s
                }),
            )
            .await
            .unwrap();
        let text = roundtrip(&created);
        assert!(
            text.starts_with(r#"{"value":{"id":"mandate_002""#),
            "{text}"
        );
        assert!(text.ends_with(r#","replay":false}"#), "{text}");
        let suspended = w
            .engine
            .set_suspension(
                &operator_p(),
                &SetSuspension::new(
                    key("suspend-1"),
                    Party::Actor(id("agent_other")),
                    true,
                    id("test"),
                ),
            )
            .await
            .unwrap();
        assert_eq!(roundtrip(&suspended), r#"{"value":null,"replay":false}"#);
        let usage = w
            .engine
            .chain_usage(&buyer_p(), w.mandate.id())
            .await
            .unwrap();
        let text = roundtrip(&usage);
        assert!(text.starts_with(r#"{"chain":[{"#), "{text}");
        w.engine.flush_audit().await.unwrap();
        let report = w.engine.verify_trail(1_000).await.unwrap();
        assert!(report.is_complete());
        roundtrip::<TrailReport>(&report);
        let evidence = w.engine.dispute_evidence(&attempt).await.unwrap();
        let value = serde_json::to_value(&evidence).unwrap();
        assert_eq!(value["verdict"], "consistent", "{value:#}");
        assert!(value["checks"][0]["name"].is_string());
    }

    #[test]
    fn missing_events_are_tagged_by_type() {
        let report: TrailReport = from_json(
            r#"{"attempts": 2, "trail_events": 9, "staged_events": 0, "repeated_events": 0,
                "missing": [{"type": "attempt_transition", "attempt_id": "att_1", "status": "captured"},
                            {"type": "order_committed", "attempt_id": "att_1", "order_id": "ord_1"}]}"#,
        )
        .unwrap();
        assert_eq!(report.missing.len(), 2);
        let text = roundtrip(&report);
        assert!(
            text.contains(r#"{"type":"order_committed","attempt_id":"att_1","order_id":"ord_1"}"#),
            "{text}"
        );
        let e = from_json::<TrailReport>(
            r#"{"attempts": 0, "trail_events": 0, "staged_events": 0, "repeated_events": 0,
                "missing": [{"type": "lost"}]}"#,
        )
        .unwrap_err();
        assert_eq!(e.kind(), InputErrorKind::WrongType, "{e}");
    }

    /// Every command refuses a field it does not have (a typo is never ignored), in both
    /// readers; so do the outcomes and recorded results.
    #[test]
    fn commands_and_outcomes_refuse_unknown_fields() {
        let snapshot = examples::travel_backpack_snapshot();
        let spec = examples::travel_backpack_mandate().spec().clone();
        let money = eur("1.00");
        let bodies: Vec<(&str, Value)> = vec![
            ("create_mandate", json!({"key": "k", "spec": spec})),
            ("derive_mandate", json!({"key": "k", "spec": spec})),
            (
                "change_mandate",
                json!({"key": "k", "mandate_id": "m", "event": "confirm"}),
            ),
            (
                "set_suspension",
                json!({"key": "k", "party": {"actor": "a"}, "suspended": true, "reason": "r"}),
            ),
            (
                "record_confirmation",
                json!({"key": "k", "confirmation": crate::common::confirmation_for(
                    &examples::travel_backpack_document())}),
            ),
            (
                "evaluate",
                json!({"request": examples::authorize_request(&snapshot), "snapshot": snapshot,
                       "checkout": examples::valid_checkout(snapshot.id())}),
            ),
            (
                "execute_payment",
                json!({"key": "k", "request": examples::authorize_request(&snapshot),
                       "snapshot": snapshot, "checkout": examples::valid_checkout(snapshot.id()),
                       "credential": "c", "capture": false}),
            ),
            (
                "capture_payment",
                json!({"key": "k", "attempt_id": "a", "amount": money}),
            ),
            ("void_payment", json!({"key": "k", "attempt_id": "a"})),
            (
                "refund_payment",
                json!({"key": "k", "attempt_id": "a", "amount": money}),
            ),
            (
                "commit_order",
                json!({"key": "k", "attempt_id": "a", "checkout": examples::valid_checkout(snapshot.id())}),
            ),
        ];
        fn check<T: serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug>(
            name: &str,
            body: &Value,
        ) {
            let text = body.to_string();
            let value: T = from_json(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(&serde_json::to_value(&value).unwrap(), body, "{name}");
            let mut extra = body.clone();
            extra["idempotency_key"] = json!("k2");
            let text = extra.to_string();
            let e = from_json::<T>(&text).unwrap_err();
            assert_eq!(e.kind(), InputErrorKind::UnknownField, "{name}: {e}");
            assert_eq!(e.field(), "idempotency_key", "{name}");
            assert!(serde_json::from_str::<T>(&text).is_err(), "{name}");
        }
        for (name, body) in &bodies {
            match *name {
                "create_mandate" => check::<CreateMandate>(name, body),
                "derive_mandate" => check::<DeriveMandate>(name, body),
                "change_mandate" => check::<ChangeMandate>(name, body),
                "set_suspension" => check::<SetSuspension>(name, body),
                "record_confirmation" => check::<RecordConfirmation>(name, body),
                "evaluate" => check::<Evaluate>(name, body),
                "execute_payment" => check::<ExecutePayment>(name, body),
                "capture_payment" => check::<CapturePayment>(name, body),
                "void_payment" => check::<VoidPayment>(name, body),
                "refund_payment" => check::<RefundPayment>(name, body),
                "commit_order" => check::<CommitOrder>(name, body),
                other => unreachable!("{other}"),
            }
        }
        let e = from_json::<PaymentOutcome>(r#"{"outcome": "paid"}"#).unwrap_err();
        assert_eq!(e.kind(), InputErrorKind::WrongType, "{e}");
        let e = from_json::<Recorded<()>>(r#"{"value": null, "replay": false, "more": 1}"#)
            .unwrap_err();
        assert_eq!(e.kind(), InputErrorKind::UnknownField, "{e}");
        let refusal = from_json::<PaymentOutcome>(
            r#"{"outcome": "replayed", "attempt": {}, "decision": {}}"#,
        );
        assert!(refusal.is_err(), "a replay carries no decision");
    }
}

/// No secret has a `Serialize`: `Secret`, a credential to store and a resolved credential
/// cannot be written to JSON at all (the stored credential, which can, has no secret field).
/// The checks run at compile time: a `Serialize` on one of them stops this file compiling.
#[test]
fn secrets_have_no_serialize() {
    use agent_mandate::ports::{NewCredential, ResolvedCredential, Secret};
    use std::marker::PhantomData;

    trait NotSerialize {
        const SERIALIZE: bool = false;
    }
    impl<T: ?Sized> NotSerialize for Probe<T> {}
    struct Probe<T: ?Sized>(PhantomData<T>);
    #[allow(dead_code, reason = "read through the probe")]
    impl<T: ?Sized + Serialize> Probe<T> {
        const SERIALIZE: bool = true;
    }
    const { assert!(!Probe::<Secret>::SERIALIZE) };
    const { assert!(!Probe::<NewCredential>::SERIALIZE) };
    const { assert!(!Probe::<ResolvedCredential>::SERIALIZE) };
    // The probe does see a Serialize where there is one.
    const { assert!(Probe::<agent_mandate::ports::StoredCredential>::SERIALIZE) };
}
