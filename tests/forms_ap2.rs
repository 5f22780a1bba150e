//! AP2 v0.2 in: every document type the published schemas define either imports or is refused
//! with its documented reason; an imported open payment mandate keeps every constraint (and
//! the decision allows the payment it was made for); a closed checkout mandate becomes its cart
//! with the hash checked; bad inputs are typed errors naming the field (I11, I17). Defends I6:
//! no import is wider than the AP2 mandate it reads.

#![cfg(feature = "forms")]

mod forms;

use agent_mandate::domain::{
    evaluate, examples, CartBinding, Currency, Dimension, Mandate, MerchantScope, Money, Outcome,
    Usage,
};
use agent_mandate::forms::{
    import_ap2, import_checkout_mandate, import_open_payment_mandate, Ap2Import, CheckoutReference,
    FormError, OpenCheckoutMandate,
};
use chrono::{Duration, TimeZone, Utc};
use forms::*;
use serde_json::{json, Value};

fn eur(minor: i64) -> Money {
    Money::from_minor(minor, Currency::EUR).unwrap()
}

fn snapshot() -> agent_mandate::domain::CartSnapshot {
    import_checkout_mandate(&bytes(&checkout_mandate()), &read()).expect("checkout imports")
}

fn import_payment(doc: &Value) -> Result<agent_mandate::engine::CreateMandate, FormError> {
    let oc = bytes(&open_checkout());
    let snap = snapshot();
    import_open_payment_mandate(
        &bytes(doc),
        &ctx(),
        Some(CheckoutReference::new(&oc, &snap)),
    )
}

#[test]
fn fixtures_are_valid_against_the_published_schemas() {
    assert_schema_valid("open_checkout_mandate.json", &open_checkout());
    assert_schema_valid("checkout_mandate.json", &checkout_mandate());
    assert_schema_valid("open_payment_mandate.json", &open_payment());
    assert_schema_valid("payment_mandate.json", &closed_payment());
    assert_schema_valid("checkout_receipt.json", &checkout_receipt());
    assert_schema_valid("payment_receipt.json", &payment_receipt());
    // The validator can fail: a constraint type outside the schema's oneOf.
    let mut bad = open_payment();
    bad["constraints"][1]["type"] = json!("payment.surprise");
    assert!(!ap2_validator("open_payment_mandate.json").is_valid(&bad));
}

#[test]
fn every_ap2_document_type_imports_or_is_refused_with_its_reason() {
    let files = std::fs::read_dir(interop().join("ap2-v0.2")).unwrap();
    let mut seen = 0;
    for f in files {
        let name = f.unwrap().file_name().into_string().unwrap();
        if !name.ends_with(".json") {
            continue;
        }
        seen += 1;
        let doc = match name.as_str() {
            "open_payment_mandate.json" => open_payment(),
            "checkout_mandate.json" => checkout_mandate(),
            "open_checkout_mandate.json" => open_checkout(),
            "payment_mandate.json" => closed_payment(),
            "checkout_receipt.json" => checkout_receipt(),
            "payment_receipt.json" => payment_receipt(),
            other => panic!("a new AP2 document type {other}: map it and document it"),
        };
        assert_schema_valid(&name, &doc);
        let oc = bytes(&open_checkout());
        let snap = snapshot();
        let got = import_ap2(
            &bytes(&doc),
            &ctx(),
            &read(),
            Some(CheckoutReference::new(&oc, &snap)),
        );
        match (name.as_str(), got) {
            ("open_payment_mandate.json", Ok(Ap2Import::Mandate(_))) => {}
            ("checkout_mandate.json", Ok(Ap2Import::Snapshot(s))) => assert_eq!(*s, snap),
            (
                "open_checkout_mandate.json",
                Err(FormError::Unrepresentable {
                    field, dimension, ..
                }),
            ) => {
                assert_eq!(dimension, Some(Dimension::Cart));
                assert!(field.contains("line_items"), "{field}");
            }
            ("payment_mandate.json", Err(FormError::Unrepresentable { field, .. })) => {
                assert_eq!(field, "payment_instrument")
            }
            (
                "checkout_receipt.json" | "payment_receipt.json",
                Err(FormError::Invalid { field, reason }),
            ) => {
                assert_eq!(field, "status");
                assert!(reason.contains("no authority"));
            }
            (n, other) => panic!("{n}: {other:?}"),
        }
    }
    assert_eq!(seen, 6, "the AP2 folder's document schemas");
}

#[test]
fn open_payment_mandate_keeps_every_constraint() {
    let cmd = import_payment(&open_payment()).expect("imports");
    let spec = &cmd.spec;
    let s = &spec.scope;
    let snap = snapshot();
    assert_eq!(
        s.merchants,
        MerchantScope::Single {
            merchant_id: "merchant_001".parse().unwrap()
        }
    );
    assert_eq!(
        s.cart,
        CartBinding::Snapshot {
            snapshot_id: snap.id()
        }
    );
    // amount_range 150.00, cart total 134.00: the cart bounds it.
    assert_eq!(s.amount.max_amount, eur(13_400));
    assert!(s.amount.allow_lower_amount);
    assert_eq!(s.budgets.per_transaction, Some(eur(15_000)));
    assert_eq!(s.budgets.lifetime, Some(eur(30_000)));
    assert_eq!(s.budgets.windows.len(), 1);
    assert_eq!(s.budgets.windows[0].window_seconds, 31 * 86_400);
    assert_eq!(s.budgets.windows[0].max_count, Some(1));
    assert_eq!(s.max_uses, Some(3));
    // not_before: the latest of iat (08:30), execution_date.not_before (08:00) and the open
    // checkout's iat (08:30); expires_at: the earliest of exp (+30 d), not_after (a bare date,
    // read as its earliest end, 10:00 UTC) and the open checkout's exp (15:00).
    assert_eq!(s.validity.not_before, now() - Duration::minutes(30));
    assert_eq!(s.validity.expires_at, now() + Duration::hours(6));
    assert!(s.confirmation.is_never());
    assert_eq!(spec.evidence_refs.len(), 1);
    assert!(spec.evidence_refs[0]
        .as_str()
        .starts_with("ap2:payment.reference:"));
    Mandate::new(spec.clone()).expect("a valid mandate");
}

#[test]
fn without_recurrence_the_mandate_pays_once_and_a_payment_amount_is_exact() {
    let mut doc = open_payment();
    doc["constraints"].as_array_mut().unwrap().remove(4);
    doc["payment_amount"] = json!({"amount": 13400, "currency": "EUR"});
    doc["payee"] = json!({"id": "merchant_001", "name": "Trail Co"});
    let s = import_payment(&doc).unwrap().spec.scope;
    assert_eq!(s.max_uses, Some(1));
    assert!(s.budgets.windows.is_empty());
    assert_eq!(s.amount.max_amount, eur(13_400));
    assert!(!s.amount.allow_lower_amount);
}

#[test]
fn bare_dates_never_widen_the_window() {
    let mut doc = open_payment();
    doc["constraints"][5] = json!({"type": "payment.execution_date", "not_before": "2026-06-28", "not_after": "2026-06-29"});
    doc["exp"] = json!(epoch(Duration::days(30)));
    let oc = {
        let mut o = open_checkout();
        o["exp"] = json!(epoch(Duration::days(30)));
        o
    };
    let mut doc2 = doc.clone();
    doc2["constraints"][0]["conditional_transaction_id"] = json!(digest(&bytes(&oc)));
    let snap = snapshot();
    let ctx = {
        let mut c = ctx();
        c.now = now();
        c
    };
    let s = import_open_payment_mandate(
        &bytes(&doc2),
        &ctx,
        Some(CheckoutReference::new(&bytes(&oc), &snap)),
    )
    .unwrap()
    .spec
    .scope;
    // 2026-06-28 starts at the latest at 12:00 UTC (UTC-12); 2026-06-29 ends at the earliest at
    // 10:00 UTC on the 29th (UTC+14).
    assert_eq!(
        s.validity.not_before,
        Utc.with_ymd_and_hms(2026, 6, 28, 12, 0, 0).unwrap()
    );
    assert_eq!(
        s.validity.expires_at,
        Utc.with_ymd_and_hms(2026, 6, 29, 10, 0, 0).unwrap()
    );
}

#[test]
fn imported_mandate_allows_the_payment_it_was_made_for_and_nothing_else() {
    let cmd = import_payment(&open_payment()).unwrap();
    let m = Mandate::new(cmd.spec.clone()).unwrap();
    let snap = snapshot();
    let mut doc = examples::document_for(snap.clone());
    doc.request.mandate_id = m.id().clone();
    doc.usage = vec![Usage::none_for(&m)];
    doc.chain = vec![m.clone()];
    assert_eq!(
        evaluate(&doc.input()).outcome,
        Outcome::Allowed,
        "{:?}",
        evaluate(&doc.input())
    );
    // Another cart at the same merchant and total is not covered.
    let other = examples::travel_backpack_snapshot();
    let mut doc2 = examples::document_for(other);
    doc2.request.mandate_id = m.id().clone();
    doc2.usage = vec![Usage::none_for(&m)];
    doc2.chain = vec![m];
    assert_ne!(evaluate(&doc2.input()).outcome, Outcome::Allowed);
}

#[test]
fn unknown_members_are_ignored_as_the_schema_allows_unknown_constraint_types_are_not() {
    let mut doc = open_payment();
    doc["x_vendor_extension"] = json!({"anything": true});
    doc["constraints"][1]["x_note"] = json!("ignored");
    let with = import_payment(&doc).unwrap();
    let without = import_payment(&open_payment()).unwrap();
    assert_eq!(with.spec, without.spec);
    let mut bad = open_payment();
    bad["constraints"][1]["type"] = json!("payment.surprise");
    let e = import_payment(&bad).unwrap_err();
    assert!(matches!(e, FormError::Malformed { .. }), "{e:?}");
    assert!(e.field().starts_with("constraints[1]"), "{e:?}");
}

#[test]
fn checkout_mandate_becomes_its_cart() {
    let snap = snapshot();
    assert_eq!(snap.total(), eur(13_400));
    assert_eq!(snap.totals().shipping, eur(500));
    assert_eq!(snap.items().len(), 1);
    assert_eq!(snap.items()[0].sku.as_str(), "BAG-TRAVEL-42");
    assert_eq!(
        snap.content().cart_id.as_ref().unwrap().as_str(),
        "cs_backpack_1"
    );
    assert_eq!(snap.merchant(), &merchant());
    assert_eq!(snap.expires_at(), now() + Duration::minutes(55));
    // The same document gives the same snapshot id.
    assert_eq!(snapshot().id(), snap.id());
}

#[test]
fn open_checkout_admits_only_matching_carts() {
    let oc = OpenCheckoutMandate::from_slice(&bytes(&open_checkout())).unwrap();
    assert_eq!(oc.digest(), digest(&bytes(&open_checkout())));
    oc.admits(&snapshot()).unwrap();
    let mut two = checkout_payload();
    two["line_items"][0]["quantity"] = json!(2);
    two["totals"] =
        json!([{"type": "subtotal", "amount": 25800}, {"type": "total", "amount": 25800}]);
    let s2 = import_checkout_mandate(&bytes(&checkout_mandate_for(&two)), &read()).unwrap();
    let e = oc.admits(&s2).unwrap_err();
    assert!(e.field().ends_with(".quantity"), "{e:?}");
    let mut extra = checkout_payload();
    extra["line_items"].as_array_mut().unwrap().push(
        json!({"id": "li_2", "item": {"id": "SOCKS", "title": "Socks", "price": 0}, "quantity": 1}),
    );
    let s3 = import_checkout_mandate(&bytes(&checkout_mandate_for(&extra)), &read()).unwrap();
    assert_eq!(oc.admits(&s3).unwrap_err().field(), "checkout.line_items");
}

/// One bad input: what to change, the error variant, the field it must name.
struct Bad {
    what: &'static str,
    doc: Value,
    kind: &'static str,
    field: &'static str,
}

fn kind(e: &FormError) -> &'static str {
    match e {
        FormError::Malformed { .. } => "malformed",
        FormError::Invalid { .. } => "invalid",
        FormError::Unrepresentable { .. } => "unrepresentable",
        FormError::HashMismatch { .. } => "hash",
        FormError::NoAuthority { .. } => "no_authority",
        FormError::UsageUnavailable { .. } => "usage",
        _ => "other",
    }
}

fn with(mut doc: Value, f: impl FnOnce(&mut Value)) -> Value {
    f(&mut doc);
    doc
}

fn bad_payment_mandates() -> Vec<Bad> {
    let p = open_payment;
    vec![
        Bad {
            what: "wrong vct",
            doc: with(p(), |d| d["vct"] = json!("mandate.payment.1")),
            kind: "invalid",
            field: "vct",
        },
        Bad {
            what: "no constraints",
            doc: with(p(), |d| {
                d.as_object_mut().unwrap().remove("constraints");
            }),
            kind: "malformed",
            field: ".",
        },
        Bad {
            what: "no cnf",
            doc: with(p(), |d| {
                d.as_object_mut().unwrap().remove("cnf");
            }),
            kind: "malformed",
            field: ".",
        },
        Bad {
            what: "cnf not an object",
            doc: with(p(), |d| d["cnf"] = json!("key")),
            kind: "malformed",
            field: "cnf",
        },
        Bad {
            what: "no payment.reference",
            doc: with(p(), |d| {
                d["constraints"].as_array_mut().unwrap().remove(0);
            }),
            kind: "malformed",
            field: "constraints",
        },
        Bad {
            what: "reference to another checkout",
            doc: with(p(), |d| {
                d["constraints"][0]["conditional_transaction_id"] = json!(digest(b"other"))
            }),
            kind: "hash",
            field: "payment.reference[0].conditional_transaction_id",
        },
        Bad {
            what: "amount max a string",
            doc: with(p(), |d| d["constraints"][1]["max"] = json!("150")),
            kind: "malformed",
            field: "constraints[1]",
        },
        Bad {
            what: "negative max",
            doc: with(p(), |d| d["constraints"][1]["max"] = json!(-1)),
            kind: "invalid",
            field: "constraints[1].max",
        },
        Bad {
            what: "a minimum amount",
            doc: with(p(), |d| d["constraints"][1]["min"] = json!(100)),
            kind: "unrepresentable",
            field: "constraints[1].min",
        },
        Bad {
            what: "lower-case currency",
            doc: with(p(), |d| d["constraints"][1]["currency"] = json!("eur")),
            kind: "invalid",
            field: "constraints[1].currency",
        },
        Bad {
            what: "unknown currency",
            doc: with(p(), |d| d["constraints"][1]["currency"] = json!("XYZ")),
            kind: "invalid",
            field: "constraints[1].currency",
        },
        Bad {
            what: "budget in another currency",
            doc: with(p(), |d| d["constraints"][3]["currency"] = json!("USD")),
            kind: "invalid",
            field: "constraints[3].currency",
        },
        Bad {
            what: "fractional budget",
            doc: with(p(), |d| d["constraints"][3]["max"] = json!(300.5)),
            kind: "invalid",
            field: "constraints[3].max",
        },
        Bad {
            what: "empty payee list",
            doc: with(p(), |d| d["constraints"][2]["allowed"] = json!([])),
            kind: "invalid",
            field: "constraints[2].allowed",
        },
        Bad {
            what: "payee without name",
            doc: with(p(), |d| {
                d["constraints"][2]["allowed"] = json!([{"id": "merchant_001"}])
            }),
            kind: "malformed",
            field: "constraints[2]",
        },
        Bad {
            what: "cart merchant not a payee",
            doc: with(p(), |d| {
                d["constraints"][2]["allowed"] = json!([{"id": "merchant_009", "name": "X"}])
            }),
            kind: "invalid",
            field: "constraints.payment.allowed_payees",
        },
        Bad {
            what: "unknown frequency",
            doc: with(p(), |d| d["constraints"][4]["frequency"] = json!("HOURLY")),
            kind: "malformed",
            field: "constraints[4]",
        },
        Bad {
            what: "zero occurrences",
            doc: with(p(), |d| d["constraints"][4]["max_occurrences"] = json!(0)),
            kind: "invalid",
            field: "constraints[4].max_occurrences",
        },
        Bad {
            what: "not a date",
            doc: with(p(), |d| {
                d["constraints"][5]["not_after"] = json!("next week")
            }),
            kind: "invalid",
            field: "constraints[5].not_after",
        },
        Bad {
            what: "allowed instruments",
            doc: with(p(), |d| {
                d["constraints"].as_array_mut().unwrap().push(json!({"type": "payment.allowed_payment_instruments", "allowed": [{"id": "pi", "type": "card"}]}))
            }),
            kind: "unrepresentable",
            field: "constraints[6].type",
        },
        Bad {
            what: "allowed PISPs",
            doc: with(p(), |d| {
                d["constraints"]
                    .as_array_mut()
                    .unwrap()
                    .push(json!({"type": "payment.allowed_pisps", "allowed": []}))
            }),
            kind: "unrepresentable",
            field: "constraints[6].type",
        },
        Bad {
            what: "a payment instrument",
            doc: with(p(), |d| {
                d["payment_instrument"] = json!({"id": "pi", "type": "card"})
            }),
            kind: "unrepresentable",
            field: "payment_instrument",
        },
        Bad {
            what: "a PISP",
            doc: with(p(), |d| {
                d["pisp"] = json!({"legal_name": "a", "brand_name": "b", "domain_name": "c"})
            }),
            kind: "unrepresentable",
            field: "pisp",
        },
        Bad {
            what: "one execution date",
            doc: with(p(), |d| d["execution_date"] = json!("2026-06-30")),
            kind: "unrepresentable",
            field: "execution_date",
        },
        Bad {
            what: "payment amount above the range",
            doc: with(p(), |d| {
                d["payment_amount"] = json!({"amount": 99999, "currency": "EUR"})
            }),
            kind: "invalid",
            field: "payment_amount.amount",
        },
        Bad {
            what: "payment amount in another currency",
            doc: with(p(), |d| {
                d["payment_amount"] = json!({"amount": 100, "currency": "USD"})
            }),
            kind: "invalid",
            field: "payment_amount.currency",
        },
        Bad {
            what: "payee is not the cart's merchant",
            doc: with(p(), |d| {
                d["payee"] = json!({"id": "merchant_002", "name": "Other"})
            }),
            kind: "invalid",
            field: "payee.id",
        },
        Bad {
            what: "expired",
            doc: with(p(), |d| d["exp"] = json!(epoch(Duration::minutes(-1)))),
            kind: "invalid",
            field: "exp",
        },
        Bad {
            what: "exp not an integer",
            doc: with(p(), |d| d["exp"] = json!("tomorrow")),
            kind: "malformed",
            field: "exp",
        },
        Bad {
            what: "iat out of range",
            doc: with(p(), |d| d["iat"] = json!(-5)),
            kind: "invalid",
            field: "iat",
        },
        Bad {
            what: "not after before not before",
            doc: with(p(), |d| {
                d["constraints"][5]["not_after"] = json!("2026-06-28T07:00:00Z")
            }),
            kind: "invalid",
            field: "exp",
        },
        Bad {
            what: "duplicate member",
            doc: Value::Null,
            kind: "malformed",
            field: "",
        },
    ]
}

#[test]
fn bad_open_payment_mandates_are_typed_errors_naming_the_field() {
    let cases = bad_payment_mandates();
    assert!(cases.len() >= 20);
    for c in cases {
        let e = if c.doc.is_null() {
            // Duplicate keys: one meaning per input.
            let text = br#"{"vct": "mandate.payment.open.1", "vct": "mandate.payment.open.1", "constraints": [], "cnf": {}}"#;
            import_open_payment_mandate(text, &ctx(), None).unwrap_err()
        } else {
            import_payment(&c.doc).expect_err(c.what)
        };
        assert_eq!(kind(&e), c.kind, "{}: {e:?}", c.what);
        assert!(
            e.field().starts_with(c.field),
            "{}: field {:?}, wanted {:?} ({e})",
            c.what,
            e.field(),
            c.field
        );
    }
}

#[test]
fn bad_checkout_mandates_are_typed_errors_naming_the_field() {
    let c = checkout_mandate;
    let jwt_of = |header: Value, payload: Value| checkout_mandate_for_header(header, payload);
    let cases: Vec<(&str, Value, &str, &str)> = vec![
        (
            "hash of something else",
            with(c(), |d| d["checkout_hash"] = json!(digest(b"x"))),
            "hash",
            "checkout_hash",
        ),
        (
            "padded hash",
            with(c(), |d| {
                let h = d["checkout_hash"].as_str().unwrap().to_owned() + "=";
                d["checkout_hash"] = json!(h);
            }),
            "hash",
            "checkout_hash",
        ),
        (
            "other sd alg",
            with(c(), |d| d["_sd_alg"] = json!("sha-512")),
            "unrepresentable",
            "_sd_alg",
        ),
        (
            "wrong vct",
            with(c(), |d| d["vct"] = json!("mandate.checkout.open.1")),
            "invalid",
            "vct",
        ),
        ("two-part jwt", jwt_raw("a.b"), "invalid", "checkout_jwt"),
        (
            "payload not base64url",
            jwt_raw(&format!("{}.!!.sig", b64(&bytes(&es256())))),
            "invalid",
            "checkout_jwt.payload",
        ),
        (
            "unsigned",
            jwt_of(json!({"alg": "none"}), checkout_payload()),
            "invalid",
            "checkout_jwt.header.alg",
        ),
        (
            "no total",
            jwt_of(
                es256(),
                with(checkout_payload(), |p| {
                    p["totals"].as_array_mut().unwrap().pop();
                }),
            ),
            "malformed",
            "checkout_jwt.payload.totals",
        ),
        (
            "totals do not add up",
            jwt_of(
                es256(),
                with(checkout_payload(), |p| p["totals"][3]["amount"] = json!(1)),
            ),
            "invalid",
            "checkout_jwt.payload.totals",
        ),
        (
            "unknown total type",
            jwt_of(
                es256(),
                with(checkout_payload(), |p| {
                    p["totals"][2]["type"] = json!("fee")
                }),
            ),
            "unrepresentable",
            "checkout_jwt.payload.totals[2].type",
        ),
        (
            "total twice",
            jwt_of(
                es256(),
                with(checkout_payload(), |p| {
                    p["totals"][2]["type"] = json!("subtotal")
                }),
            ),
            "invalid",
            "checkout_jwt.payload.totals[2].type",
        ),
        (
            "negative price",
            jwt_of(
                es256(),
                with(checkout_payload(), |p| {
                    p["line_items"][0]["item"]["price"] = json!(-1)
                }),
            ),
            "invalid",
            "checkout_jwt.payload.line_items[0].item.price",
        ),
        (
            "no lines",
            jwt_of(
                es256(),
                with(checkout_payload(), |p| p["line_items"] = json!([])),
            ),
            "invalid",
            "checkout_jwt.payload.items",
        ),
        (
            "quantity a string",
            jwt_of(
                es256(),
                with(checkout_payload(), |p| {
                    p["line_items"][0]["quantity"] = json!("1")
                }),
            ),
            "malformed",
            "checkout_jwt.payload.line_items[0].quantity",
        ),
        (
            "bad currency",
            jwt_of(
                es256(),
                with(checkout_payload(), |p| p["currency"] = json!("euro")),
            ),
            "invalid",
            "checkout_jwt.payload.currency",
        ),
        (
            "expired",
            with(c(), |d| d["exp"] = json!(epoch(Duration::minutes(-1)))),
            "invalid",
            "exp",
        ),
        (
            "no expiry",
            with(c(), |d| {
                d.as_object_mut().unwrap().remove("exp");
            }),
            "malformed",
            "exp",
        ),
    ];
    for (what, doc, k, field) in cases {
        let e = import_checkout_mandate(&bytes(&doc), &read()).expect_err(what);
        assert_eq!(kind(&e), k, "{what}: {e:?}");
        assert!(
            e.field().starts_with(field),
            "{what}: field {:?}, wanted {field:?} ({e})",
            e.field()
        );
    }
}

fn checkout_mandate_for_header(header: Value, payload: Value) -> Value {
    let jwt = jwt(&header, &payload);
    with(checkout_mandate(), |d| {
        d["checkout_jwt"] = json!(jwt);
        d["checkout_hash"] = json!(digest(jwt.as_bytes()));
    })
}

fn jwt_raw(jwt: &str) -> Value {
    with(checkout_mandate(), |d| {
        d["checkout_jwt"] = json!(jwt);
        d["checkout_hash"] = json!(digest(jwt.as_bytes()));
    })
}

#[test]
fn an_open_payment_mandate_without_its_checkout_is_refused() {
    let e = import_open_payment_mandate(&bytes(&open_payment()), &ctx(), None).unwrap_err();
    assert!(
        matches!(
            e,
            FormError::Unrepresentable {
                dimension: Some(Dimension::Cart),
                ..
            }
        ),
        "{e:?}"
    );
}

#[test]
fn imports_round_trip_through_the_crate_s_own_json() {
    let cmd = import_payment(&open_payment()).unwrap();
    let text = serde_json::to_string(&cmd).unwrap();
    let back: agent_mandate::engine::CreateMandate = agent_mandate::json::from_json(&text).unwrap();
    assert_eq!(back, cmd);
    let snap = snapshot();
    let text = serde_json::to_string(&snap).unwrap();
    let back: agent_mandate::domain::CartSnapshot = agent_mandate::json::from_json(&text).unwrap();
    assert_eq!(back, snap);
    // Importing the same documents again gives the same command (pure, deterministic).
    assert_eq!(import_payment(&open_payment()).unwrap(), cmd);
}
