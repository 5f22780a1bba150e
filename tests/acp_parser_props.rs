//! Property tests of the delegate payment reader (I12: no panic on any input; I11: a refusal
//! names a field as a JSONPath and answers a 4xx with a body the published schema accepts).
#![cfg(feature = "acp")]

use agent_mandate::acp::{AcpError, CheckoutSession, DelegatePaymentRequest};
use chrono::{TimeZone, Utc};
use proptest::prelude::*;
use serde_json::{json, Value};

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        "[a-z0-9_ .-]{0,24}".prop_map(Value::String),
        "\\PC{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(5, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    Just("payment_method".to_owned()),
                    Just("allowance".to_owned()),
                    Just("metadata".to_owned()),
                    Just("risk_signals".to_owned()),
                    Just("type".to_owned()),
                    Just("number".to_owned()),
                    Just("max_amount".to_owned()),
                    Just("currency".to_owned()),
                    "[a-z_]{1,12}",
                ],
                inner,
                0..6
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn valid() -> Value {
    json!({
        "payment_method": {"type": "card", "card_number_type": "fpan", "number": "4242424242424242",
            "exp_month": "11", "exp_year": "2026", "cvc": "223", "display_card_funding_type": "credit",
            "display_last4": "4242", "metadata": {}},
        "allowance": {"reason": "one_time", "max_amount": 2000, "currency": "usd",
            "checkout_session_id": "cs_1", "merchant_id": "acme", "expires_at": "2030-01-01T00:00:00Z"},
        "risk_signals": [{"type": "card_testing", "score": 1, "action": "authorized"}],
        "metadata": {}
    })
}

/// Every pointer to a member of `v`.
fn pointers(v: &Value, at: String, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                let p = format!("{at}/{k}");
                out.push(p.clone());
                pointers(x, p, out);
            }
        }
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                let p = format!("{at}/{i}");
                out.push(p.clone());
                pointers(x, p, out);
            }
        }
        _ => {}
    }
}

fn check_refusal(e: &AcpError) {
    assert!(matches!(e.status(), 400 | 422), "{e:?}");
    let body = e.body();
    assert_eq!(body.kind, "invalid_request");
    assert_eq!(body.code, "invalid_card");
    assert!(
        body.param.as_deref().is_some_and(|p| p.starts_with('$')),
        "{body:?}"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Arbitrary JSON never panics the reader or the checks; every refusal is typed.
    #[test]
    fn arbitrary_json_never_panics(v in arb_json()) {
        let bytes = serde_json::to_vec(&v).unwrap();
        let now = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        match DelegatePaymentRequest::parse(&bytes) {
            Ok(r) => { let _ = r.check(now); }
            Err(e) => check_refusal(&e),
        }
        let _ = CheckoutSession::parse(&bytes).map(|s| {
            let merchant = agent_mandate::domain::Merchant {
                merchant_id: "m".parse().unwrap(),
                marketplace_id: None,
                seller_id: None,
                mcc: "5999".parse().unwrap(),
            };
            let _ = s.snapshot(merchant, now, chrono::Duration::minutes(5));
        });
    }

    /// Arbitrary bytes never panic it either.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        if let Err(e) = DelegatePaymentRequest::parse(&bytes) {
            check_refusal(&e);
        }
    }

    /// A valid request with one member replaced by arbitrary JSON (or removed) is either
    /// still accepted or refused naming a field; it never panics.
    #[test]
    fn one_member_changed_is_a_typed_answer(pick in any::<prop::sample::Index>(), v in arb_json(), drop in any::<bool>()) {
        let mut body = valid();
        let mut ps = Vec::new();
        pointers(&body, String::new(), &mut ps);
        let p = pick.get(&ps).clone();
        let (parent, last) = p.rsplit_once('/').unwrap();
        match body.pointer_mut(parent).unwrap() {
            Value::Object(m) => { if drop { m.remove(last); } else { m.insert(last.to_owned(), v); } }
            Value::Array(a) => { let i: usize = last.parse().unwrap(); if drop { a.remove(i); } else { a[i] = v; } }
            _ => unreachable!(),
        }
        let now = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        match DelegatePaymentRequest::parse(&serde_json::to_vec(&body).unwrap()) {
            Ok(r) => if let Err(e) = r.check(now) { check_refusal(&e) },
            Err(e) => check_refusal(&e),
        }
    }
}

#[test]
fn the_valid_request_is_valid() {
    let now = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
    let r = DelegatePaymentRequest::parse(&serde_json::to_vec(&valid()).unwrap()).unwrap();
    assert!(r.check(now).is_ok());
}
