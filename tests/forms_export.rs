//! Exports never widen (I6): each target either writes a form no wider than every mandate of
//! the chain (net of usage), picking the narrower representable form where there is one, or
//! refuses with a typed error naming the restriction it cannot carry. The ACP allowance is
//! validated against the published JSON schema.

#![cfg(feature = "forms")]

use agent_mandate::domain::{
    examples, widenings, ActionSet, Actor, CartBinding, ConfirmationCondition, Currency, Dimension,
    Lifecycle, Mandate, MandateId, MandateScope, MandateSpec, MandateStatus, MerchantScope, Money,
    PaymentAction, Usage, WindowLimit,
};
use agent_mandate::forms::{
    to_acp_allowance, to_stripe_spt, to_visa_instruction, AcpTarget, EffectiveAuthority, FormError,
    StripeTarget, VisaTarget,
};
use chrono::{DateTime, Duration, Utc};
use serde_json::{json, Value};

fn eur(minor: i64) -> Money {
    Money::from_minor(minor, Currency::EUR).unwrap()
}

fn now() -> DateTime<Utc> {
    examples::now()
}

/// The story's mandate with every restriction no form can carry removed: one merchant, EUR
/// 150.00, one use, a 24 h window of EUR 300.00 and 5 payments, lifetime EUR 150.00.
fn exportable() -> MandateSpec {
    let mut s = examples::travel_backpack_mandate().spec().clone();
    s.scope.cart = CartBinding::Open {
        allowed_skus: None,
        max_line_items: None,
    };
    s.scope.mccs = None;
    s.scope.amount.max_payment_attempts = None;
    s
}

fn mandate(f: impl FnOnce(&mut MandateSpec)) -> Mandate {
    let mut s = exportable();
    f(&mut s);
    Mandate::new(s).unwrap()
}

fn authority(m: &Mandate) -> EffectiveAuthority {
    EffectiveAuthority::of(std::slice::from_ref(m), &[Usage::none_for(m)], now()).unwrap()
}

fn readback(scope: MandateScope, parent: &Mandate) -> Mandate {
    Mandate::new(MandateSpec {
        id: MandateId::new("readback").unwrap(),
        buyer_id: parent.buyer_id().clone(),
        actor: parent.actor().clone(),
        parent_id: Some(parent.id().clone()),
        scope,
        lifecycle: Lifecycle::new(MandateStatus::Active, now()),
        evidence_refs: Vec::new(),
    })
    .unwrap()
}

fn allowance_validator() -> jsonschema::Validator {
    let text =
        std::fs::read_to_string("/work/shared/interop/acp-2026-04-17/schema.delegate_payment.json")
            .unwrap();
    let bundle: Value = serde_json::from_str(&text).unwrap();
    let schema = json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$defs": bundle["$defs"],
        "$ref": "#/$defs/Allowance"
    });
    jsonschema::options()
        .should_validate_formats(true)
        .build(&schema)
        .unwrap()
}

#[test]
fn acp_allowance_validates_against_the_published_schema() {
    let v = allowance_validator();
    let m = mandate(|_| {});
    let a = to_acp_allowance(&authority(&m), &AcpTarget::new("cs_01HV3P3XYZ789")).unwrap();
    let value = serde_json::to_value(&a).unwrap();
    let errs: Vec<String> = v.iter_errors(&value).map(|e| e.to_string()).collect();
    assert!(errs.is_empty(), "{errs:?} {value:#}");
    assert_eq!(value["currency"], "eur");
    assert_eq!(value["max_amount"], 15000);
    assert_eq!(value["expires_at"], "2026-06-29T08:00:00Z");
    // The validator can fail: an upper-case currency, an extra member.
    let mut bad = value.clone();
    bad["currency"] = json!("EUR");
    assert!(!v.is_valid(&bad));
    let mut extra = value;
    extra["max_uses"] = json!(1);
    assert!(!v.is_valid(&extra));
    // The schema's own example reads back.
    let ex: agent_mandate::forms::AcpAllowance = serde_json::from_value(json!({
        "reason": "one_time", "max_amount": 100000, "currency": "usd",
        "checkout_session_id": "csn_01HV3P3XYZ789", "merchant_id": "merchant_12345",
        "expires_at": "2026-02-15T18:30:00Z"}))
    .unwrap();
    let s = ex.scope("2026-02-15T00:00:00Z".parse().unwrap()).unwrap();
    assert_eq!(s.max_uses, Some(1));
    assert_eq!(
        s.amount.max_amount,
        Money::from_minor(100_000, Currency::USD).unwrap()
    );
}

#[test]
fn stripe_usage_limits_and_seller_details() {
    let m = mandate(|s| {
        s.scope.max_uses = None;
        s.scope.budgets.windows.clear();
    });
    let spt = to_stripe_spt(
        &authority(&m),
        &StripeTarget::new().with_external_id("order_12345"),
    )
    .unwrap();
    let v = serde_json::to_value(&spt).unwrap();
    assert_eq!(
        v,
        json!({"usage_limits": {"currency": "eur", "max_amount": 15000, "expires_at": 1782720000},
               "seller_details": {"network_id": "merchant_001", "external_id": "order_12345"}})
    );
    assert!(widenings(&m, &readback(spt.scope(now()).unwrap(), &m)).is_empty());
}

#[test]
fn visa_instruction_fields() {
    let m = mandate(|s| {
        s.scope.mccs = Some(vec!["5948".parse().unwrap()]);
        s.scope.max_uses = Some(3);
        s.scope.budgets.lifetime = Some(eur(30_000));
    });
    let vi = to_visa_instruction(&authority(&m), &VisaTarget::new().with_quantity(3)).unwrap();
    let v = serde_json::to_value(&vi).unwrap();
    // Three payments must fit the EUR 300.00 lifetime: the threshold is lowered to EUR 100.00.
    assert_eq!(
        v,
        json!({"declineThreshold": {"amount": "100.00", "currencyCode": "EUR"},
               "effectiveUntilTime": "2026-06-29T08:00:00Z", "quantity": 3,
               "merchantCategoryCode": "5948", "transactionData": {"merchantId": "merchant_001"}})
    );
    assert!(widenings(&m, &readback(vi.scope(now()).unwrap(), &m)).is_empty());
    let e = to_visa_instruction(&authority(&m), &VisaTarget::new().with_quantity(4)).unwrap_err();
    assert_eq!(e.field(), "quantity");
}

/// A refusal: the dimension and the field named.
type Refusal = Option<(Option<Dimension>, String)>;

/// Which targets refuse a restriction: (Stripe, ACP, Visa).
fn refusals(m: &Mandate) -> [Refusal; 3] {
    let a = authority(m);
    let f = |r: Result<(), FormError>| match r {
        Ok(()) => None,
        Err(FormError::Unrepresentable {
            dimension, field, ..
        }) => Some((dimension, field)),
        Err(e) => panic!("{e:?}"),
    };
    [
        f(to_stripe_spt(&a, &StripeTarget::new()).map(|_| ())),
        f(to_acp_allowance(&a, &AcpTarget::new("cs_1")).map(|_| ())),
        f(to_visa_instruction(&a, &VisaTarget::new()).map(|_| ())),
    ]
}

#[test]
fn each_target_refuses_what_it_cannot_carry_by_name() {
    let all = |d: Dimension, field: &str| {
        let x = Some((Some(d), field.to_owned()));
        [x.clone(), x.clone(), x]
    };
    let cases: Vec<(&str, Mandate, [Refusal; 3])> = vec![
        (
            "cart bound to SKUs",
            mandate(|s| {
                s.scope.cart = CartBinding::Open {
                    allowed_skus: Some(vec!["SKU".parse().unwrap()]),
                    max_line_items: None,
                }
            }),
            all(Dimension::Cart, "scope.cart.allowed_skus"),
        ),
        (
            "cart bound to a snapshot",
            mandate(|s| {
                s.scope.cart = CartBinding::Snapshot {
                    snapshot_id: examples::travel_backpack_snapshot().id(),
                }
            }),
            all(Dimension::Cart, "scope.cart.snapshot_id"),
        ),
        (
            "line count",
            mandate(|s| {
                s.scope.cart = CartBinding::Open {
                    allowed_skus: None,
                    max_line_items: Some(2),
                }
            }),
            all(Dimension::Cart, "scope.cart.max_line_items"),
        ),
        (
            "exact amount",
            mandate(|s| s.scope.amount.allow_lower_amount = false),
            all(Dimension::LowerAmount, "scope.amount.allow_lower_amount"),
        ),
        (
            "attempts",
            mandate(|s| s.scope.amount.max_payment_attempts = Some(3)),
            all(Dimension::Attempts, "scope.amount.max_payment_attempts"),
        ),
        (
            "confirm always",
            mandate(|s| s.scope.confirmation.conditions = vec![ConfirmationCondition::Always]),
            all(Dimension::Confirmation, "scope.confirmation.conditions"),
        ),
        (
            "authorize only",
            mandate(|s| {
                s.scope.actions = [PaymentAction::Authorize]
                    .into_iter()
                    .collect::<ActionSet>()
            }),
            all(Dimension::Actions, "scope.actions"),
        ),
        (
            "marketplace",
            mandate(|s| {
                s.scope.merchants = MerchantScope::Marketplace {
                    marketplace_id: "mkt".parse().unwrap(),
                    allowed_sellers: None,
                }
            }),
            all(Dimension::Merchants, "scope.merchants.marketplace_id"),
        ),
        (
            "two merchants",
            mandate(|s| {
                s.scope.merchants = MerchantScope::Allowlist {
                    merchant_ids: vec!["m_a".parse().unwrap(), "m_b".parse().unwrap()],
                }
            }),
            all(Dimension::Merchants, "scope.merchants.merchant_ids"),
        ),
        (
            "one MCC",
            mandate(|s| s.scope.mccs = Some(vec!["5948".parse().unwrap()])),
            {
                let x = Some((Some(Dimension::Mccs), "scope.mccs".to_owned()));
                [x.clone(), x, None]
            },
        ),
        (
            "two MCCs",
            mandate(|s| {
                s.scope.mccs = Some(vec!["5948".parse().unwrap(), "5411".parse().unwrap()])
            }),
            all(Dimension::Mccs, "scope.mccs"),
        ),
        (
            "a uses limit",
            mandate(|_| {}),
            [
                Some((Some(Dimension::Uses), "scope.max_uses".to_owned())),
                None,
                None,
            ],
        ),
    ];
    for (what, m, want) in cases {
        assert_eq!(refusals(&m), want, "{what}");
    }
}

#[test]
fn narrower_forms_are_picked_where_there_is_one() {
    // Two merchants: naming one of them is narrower; naming another is refused.
    let m = mandate(|s| {
        s.scope.merchants = MerchantScope::Allowlist {
            merchant_ids: vec!["m_a".parse().unwrap(), "m_b".parse().unwrap()],
        }
    });
    let a = authority(&m);
    let ok = to_acp_allowance(
        &a,
        &AcpTarget::new("cs_1").with_merchant("m_b".parse().unwrap()),
    )
    .unwrap();
    assert_eq!(ok.merchant_id, "m_b");
    assert!(widenings(&m, &readback(ok.scope(now()).unwrap(), &m)).is_empty());
    let e = to_acp_allowance(
        &a,
        &AcpTarget::new("cs_1").with_merchant("m_c".parse().unwrap()),
    )
    .unwrap_err();
    assert_eq!(e.field(), "merchant_id");
    // "Confirm above 100.00": the form is capped at 100.00 and never needs the confirmation.
    let m = mandate(|s| {
        s.scope.confirmation.conditions = vec![ConfirmationCondition::AboveAmount {
            amount: eur(10_000),
        }]
    });
    let acp = to_acp_allowance(&authority(&m), &AcpTarget::new("cs_1")).unwrap();
    assert_eq!(acp.max_amount, 10_000);
    assert!(widenings(&m, &readback(acp.scope(now()).unwrap(), &m)).is_empty());
    // A shorter expiry is kept; a longer one is cut to the mandate's.
    let m = mandate(|_| {});
    let a = authority(&m);
    let short = to_acp_allowance(
        &a,
        &AcpTarget::new("cs_1").with_expires_at(now() + Duration::minutes(10)),
    )
    .unwrap();
    assert_eq!(short.expires_at, "2026-06-28T09:10:00Z");
    let long = to_acp_allowance(
        &a,
        &AcpTarget::new("cs_1").with_expires_at(now() + Duration::days(9)),
    )
    .unwrap();
    assert_eq!(long.expires_at, "2026-06-29T08:00:00Z");
}

#[test]
fn usage_lowers_the_cap_and_missing_usage_is_refused() {
    let m = mandate(|s| s.scope.budgets.lifetime = Some(eur(15_000)));
    let mut u = Usage::none_for(&m);
    u.spent = eur(9_000);
    u.held = eur(1_000);
    let a = EffectiveAuthority::of(std::slice::from_ref(&m), &[u.clone()], now()).unwrap();
    assert_eq!(a.max_amount, eur(5_000));
    assert_eq!(
        to_acp_allowance(&a, &AcpTarget::new("cs"))
            .unwrap()
            .max_amount,
        5_000
    );
    // Window: 300.00 a day, 280.00 used.
    let mut u2 = Usage::none_for(&m);
    u2.windows[0].amount = eur(28_000);
    let a = EffectiveAuthority::of(std::slice::from_ref(&m), &[u2], now()).unwrap();
    assert_eq!(a.max_amount, eur(2_000));
    // Window count spent, uses spent, lifetime spent: no authority.
    for f in [
        (|u: &mut Usage| u.windows[0].count = 5) as fn(&mut Usage),
        |u: &mut Usage| u.uses = 1,
        |u: &mut Usage| u.spent = eur(15_000),
    ] {
        let mut u3 = Usage::none_for(&m);
        f(&mut u3);
        let e = EffectiveAuthority::of(std::slice::from_ref(&m), &[u3], now()).unwrap_err();
        assert!(matches!(e, FormError::NoAuthority { .. }), "{e:?}");
    }
    let e = EffectiveAuthority::of(std::slice::from_ref(&m), &[], now()).unwrap_err();
    assert!(matches!(e, FormError::UsageUnavailable { .. }), "{e:?}");
    let e = EffectiveAuthority::of(std::slice::from_ref(&m), &[u.clone(), u], now()).unwrap_err();
    assert!(matches!(e, FormError::UsageUnavailable { .. }), "{e:?}");
}

#[test]
fn a_chain_exports_its_meet_and_a_broken_chain_nothing() {
    let root = mandate(|s| {
        s.scope.merchants = MerchantScope::Allowlist {
            merchant_ids: vec!["m_a".parse().unwrap(), "merchant_001".parse().unwrap()],
        };
        s.scope.amount.max_amount = eur(50_000);
        s.scope.budgets = Default::default();
        s.scope.max_uses = None;
    });
    let mut c = root.spec().clone();
    c.id = MandateId::new("mandate_001.child").unwrap();
    c.parent_id = Some(root.id().clone());
    c.actor = Actor {
        id: "agent_9".parse().unwrap(),
        kind: agent_mandate::domain::ActorKind::Agent,
    };
    c.scope.merchants = MerchantScope::Single {
        merchant_id: "merchant_001".parse().unwrap(),
    };
    c.scope.amount.max_amount = eur(20_000);
    c.scope.budgets.windows = vec![WindowLimit {
        window_seconds: 3600,
        max_amount: Some(eur(12_000)),
        max_count: None,
    }];
    c.scope.validity.expires_at = now() + Duration::hours(2);
    let child = root.derive(c).unwrap();
    let chain = [root.clone(), child.clone()];
    let usage = [Usage::none_for(&root), Usage::none_for(&child)];
    let a = EffectiveAuthority::of(&chain, &usage, now()).unwrap();
    assert_eq!(a.merchants, vec!["merchant_001".parse().unwrap()]);
    assert_eq!(a.max_amount, eur(12_000));
    assert_eq!(a.expires_at, now() + Duration::hours(2));
    assert_eq!(a.actor, *child.actor());
    let spt = to_stripe_spt(&a, &StripeTarget::new()).unwrap();
    let rb = spt.scope(now()).unwrap();
    for m in &chain {
        assert!(widenings(m, &readback(rb.clone(), m)).is_empty());
    }
    // Broken: the child alone (its root is missing), the wrong order, a revoked root, too late.
    for (what, chain) in [
        ("child alone", vec![child.clone()]),
        ("wrong order", vec![child.clone(), root.clone()]),
        ("empty", vec![]),
    ] {
        let e = EffectiveAuthority::of(&chain, &usage, now()).unwrap_err();
        assert!(matches!(e, FormError::NoAuthority { .. }), "{what}: {e:?}");
    }
    let revoked = root
        .apply(
            &agent_mandate::domain::LifecycleEvent::Revoke {
                reason: "stop".parse().unwrap(),
            },
            now(),
        )
        .unwrap();
    assert!(EffectiveAuthority::of(&[revoked, child.clone()], &usage, now()).is_err());
    assert!(EffectiveAuthority::of(&chain, &usage, now() + Duration::hours(3)).is_err());
}

#[test]
fn readback_of_a_bad_form_is_a_typed_error() {
    let m = mandate(|s| {
        s.scope.max_uses = None;
        s.scope.budgets.windows.clear();
    });
    let spt = to_stripe_spt(&authority(&m), &StripeTarget::new()).unwrap();
    let mut bad = spt.clone();
    bad.usage_limits.currency = "EUR".into();
    assert_eq!(
        bad.scope(now()).unwrap_err().field(),
        "usage_limits.currency"
    );
    let mut bad = spt.clone();
    bad.usage_limits.max_amount = 0;
    assert_eq!(
        bad.scope(now()).unwrap_err().field(),
        "usage_limits.max_amount"
    );
    assert_eq!(
        spt.scope(now() + Duration::days(2)).unwrap_err().field(),
        "expires_at"
    );
    let mut bad = spt;
    bad.seller_details.network_id = "has space".into();
    assert_eq!(
        bad.scope(now()).unwrap_err().field(),
        "seller_details.network_id"
    );
}
