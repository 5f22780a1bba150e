//! I11: bad input is rejected with a typed error that names the field. I12: nothing panics.
//!
//! One table of bad JSON documents for the domain types: each row is parsed with
//! `agent_mandate::json::from_json` and must fail with the expected field path and kind, and is
//! also fed to plain `serde_json::from_str`, which must fail too (every type validates itself
//! when deserialised) without panicking. All failing rows are reported at once.

mod common;

use std::collections::BTreeSet;
use std::panic::{catch_unwind, AssertUnwindSafe};

use agent_mandate::domain::examples;
use agent_mandate::domain::{
    evaluate, AuthorityDecision, CartSnapshot, CheckoutState, Confirmation, Currency,
    EvaluationDocument, LifecycleEvent, Mandate, Mcc, Money, PaymentRequest, PurchaseIntent,
    PurchaseIntentSpec, SnapshotId, Usage, MAX_CHAIN_LEN, MAX_CONFIRMATIONS, MAX_INTENT_LINES,
    MAX_ITEMS, MAX_LIST, MAX_REFS, MAX_SUSPENDED, MAX_UPSTREAM_BLOCKERS, MAX_UPSTREAM_MESSAGE_LEN,
    MAX_WINDOWS,
};
use agent_mandate::json::{from_json, InputError, InputErrorKind as K};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

use common::*;

struct Case {
    name: &'static str,
    type_name: &'static str,
    json: String,
    field: &'static str,
    kind: K,
    parse: fn(&str) -> Result<(), InputError>,
    plain: fn(&str) -> Result<(), serde_json::Error>,
}

fn parse<T: DeserializeOwned>(text: &str) -> Result<(), InputError> {
    from_json::<T>(text).map(|_| ())
}

fn plain<T: DeserializeOwned>(text: &str) -> Result<(), serde_json::Error> {
    serde_json::from_str::<T>(text).map(|_| ())
}

fn case<T: DeserializeOwned>(
    name: &'static str,
    json: impl Into<String>,
    field: &'static str,
    kind: K,
) -> Case {
    Case {
        name,
        type_name: std::any::type_name::<T>()
            .rsplit("::")
            .next()
            .unwrap_or("?"),
        json: json.into(),
        field,
        kind,
        parse: parse::<T>,
        plain: plain::<T>,
    }
}

/// `base` with `f` applied, as text.
fn bend(base: &Value, f: impl FnOnce(&mut Value)) -> String {
    let mut v = base.clone();
    f(&mut v);
    v.to_string()
}

fn remove(v: &mut Value, key: &str) {
    v.as_object_mut().expect("an object").remove(key);
}

fn m(amount: &str, currency: &str) -> Value {
    json!({"amount": amount, "currency": currency})
}

fn money_json(amount: &str, currency: &str) -> String {
    m(amount, currency).to_string()
}

/// The story's final snapshot, without its (optional) claimed id.
fn snapshot() -> Value {
    let mut v = serde_json::to_value(examples::travel_backpack_snapshot()).unwrap();
    remove(&mut v, "id");
    v
}

fn mandate() -> Value {
    serde_json::to_value(examples::travel_backpack_mandate()).unwrap()
}

fn request() -> Value {
    serde_json::to_value(examples::authorize_request(
        &examples::travel_backpack_snapshot(),
    ))
    .unwrap()
}

fn usage() -> Value {
    serde_json::to_value(examples::zero_usage(&examples::travel_backpack_mandate())).unwrap()
}

fn document() -> Value {
    serde_json::to_value(examples::travel_backpack_document()).unwrap()
}

fn confirmation() -> Value {
    serde_json::to_value(confirmation_for(&examples::travel_backpack_document())).unwrap()
}

/// A blocked decision (the EUR 153.00 cart).
fn decision() -> Value {
    let doc = examples::document_for(examples::over_limit_snapshot());
    serde_json::to_value(evaluate(&doc.input())).unwrap()
}

fn intent() -> Value {
    json!({
        "agent_id": "agent_123", "task_id": "task_9", "merchant_id": "merchant_001",
        "mcc": "5411",
        "line_items": [{"description": "Coffee beans", "quantity": 2,
                        "unit_price": {"amount": "12.50", "currency": "USD"}}],
        "business_justification": "Office coffee for the week", "urgency": "routine"
    })
}

fn long(n: usize) -> String {
    "x".repeat(n)
}

fn cases() -> Vec<Case> {
    let mut rows = table();
    rows.extend(positional_cases());
    rows
}

#[expect(
    clippy::too_many_lines,
    reason = "one table row per bad input is the point"
)]
fn table() -> Vec<Case> {
    let s = snapshot();
    let md = mandate();
    let rq = request();
    let us = usage();
    let doc = document();
    let cf = confirmation();
    let dc = decision();
    let it = intent();
    let snap_text = s.to_string();
    let other_id = examples::over_limit_snapshot().id().to_string();

    vec![
        // --- Not JSON, or not all of it.
        case::<Money>("empty input", "", "", K::Syntax),
        case::<Money>("not json", "hello", "", K::Syntax),
        case::<Money>(
            "unclosed object",
            r#"{"amount": "1.00", "currency": "EUR""#,
            "",
            K::Syntax,
        ),
        case::<CartSnapshot>(
            "truncated snapshot",
            &snap_text[..snap_text.len() / 2],
            "merchant",
            K::Syntax,
        ),
        case::<Money>(
            "trailing garbage",
            r#"{"amount": "1.00", "currency": "EUR"} x"#,
            "",
            K::Syntax,
        ),
        case::<Money>(
            "two documents",
            r#"{"amount": "1.00", "currency": "EUR"}{}"#,
            "",
            K::Syntax,
        ),
        case::<Money>(
            "trailing comma",
            r#"{"amount": "1.00", "currency": "EUR",}"#,
            "",
            K::Syntax,
        ),
        case::<Money>(
            "single quotes",
            r#"{'amount': '1.00', 'currency': 'EUR'}"#,
            "",
            K::Syntax,
        ),
        case::<Money>(
            "comment",
            r#"{"amount": "1.00", /* cents */ "currency": "EUR"}"#,
            "",
            K::Syntax,
        ),
        case::<Money>(
            "NaN literal",
            r#"{"amount": NaN, "currency": "EUR"}"#,
            "amount",
            K::Syntax,
        ),
        case::<Money>(
            "invalid utf-8 escape",
            r#"{"amount": "1.00", "currency": "\uD800"}"#,
            "currency",
            K::Syntax,
        ),
        // --- Wrong JSON types and unknown variants.
        case::<Money>(
            "string instead of object",
            r#""1.00 EUR""#,
            "",
            K::WrongType,
        ),
        case::<CartSnapshot>(
            "quantity as string",
            bend(&s, |v| v["items"][0]["quantity"] = json!("1")),
            "items[0].quantity",
            K::WrongType,
        ),
        case::<CartSnapshot>(
            "negative quantity",
            bend(&s, |v| v["items"][0]["quantity"] = json!(-1)),
            "items[0].quantity",
            K::WrongType,
        ),
        case::<CartSnapshot>(
            "fractional quantity",
            bend(&s, |v| v["items"][0]["quantity"] = json!(1.5)),
            "items[0].quantity",
            K::WrongType,
        ),
        case::<CartSnapshot>(
            "quantity above u32",
            bend(&s, |v| v["items"][0]["quantity"] = json!(5_000_000_000u64)),
            "items[0].quantity",
            K::WrongType,
        ),
        case::<CartSnapshot>(
            "items as object",
            bend(&s, |v| v["items"] = json!({"sku": "X"})),
            "items",
            K::WrongType,
        ),
        case::<CartSnapshot>(
            "merchant as string",
            bend(&s, |v| v["merchant"] = json!("merchant_001")),
            "merchant",
            K::WrongType,
        ),
        case::<CartSnapshot>(
            "mcc as number",
            bend(&s, |v| v["merchant"]["mcc"] = json!(5948)),
            "merchant.mcc",
            K::WrongType,
        ),
        case::<CartSnapshot>(
            "totals null",
            bend(&s, |v| v["totals"] = Value::Null),
            "totals",
            K::WrongType,
        ),
        case::<CartSnapshot>(
            "created_at as number",
            bend(&s, |v| v["created_at"] = json!(1_782_636_900)),
            "created_at",
            K::WrongType,
        ),
        case::<CartSnapshot>(
            "created_at not a time",
            bend(&s, |v| v["created_at"] = json!("yesterday")),
            "created_at",
            K::Invalid,
        ),
        // --- I17: times with one spelling per instant (RFC 3339, 4-digit year, no leap second).
        case::<CartSnapshot>(
            "created_at second 60",
            bend(&s, |v| v["created_at"] = json!("2026-06-28T08:54:60Z")),
            "created_at",
            K::Invalid,
        ),
        case::<CartSnapshot>(
            "created_at year 10000",
            bend(&s, |v| v["created_at"] = json!("+10000-06-28T08:55:00Z")),
            "created_at",
            K::Invalid,
        ),
        case::<CartSnapshot>(
            "created_at before year 0 in UTC",
            bend(&s, |v| v["created_at"] = json!("0000-01-01T00:30:00+01:00")),
            "created_at",
            K::Invalid,
        ),
        case::<CartSnapshot>(
            "unknown channel",
            bend(&s, |v| v["context"]["channel"] = json!("fax")),
            "context.channel",
            K::WrongType,
        ),
        case::<PaymentRequest>(
            "unknown action",
            bend(&rq, |v| v["action"] = json!("steal_payment")),
            "action",
            K::WrongType,
        ),
        case::<PaymentRequest>(
            "action in camelCase",
            bend(&rq, |v| v["action"] = json!("authorizePayment")),
            "action",
            K::WrongType,
        ),
        case::<PaymentRequest>(
            "unknown urgency",
            bend(&rq, |v| v["urgency"] = json!("extreme")),
            "urgency",
            K::WrongType,
        ),
        case::<PaymentRequest>(
            "unknown actor kind",
            bend(&rq, |v| v["actor"]["kind"] = json!("robot")),
            "actor.kind",
            K::WrongType,
        ),
        case::<Mandate>(
            "flag as string",
            bend(&md, |v| {
                v["scope"]["amount"]["allow_lower_amount"] = json!("yes")
            }),
            "scope.amount.allow_lower_amount",
            K::WrongType,
        ),
        case::<Mandate>(
            "unknown status",
            bend(&md, |v| v["lifecycle"]["status"] = json!("paused")),
            "lifecycle.status",
            K::WrongType,
        ),
        case::<Mandate>(
            "unknown merchant scope kind",
            bend(&md, |v| v["scope"]["merchants"] = json!({"anyone": {}})),
            "scope.merchants",
            K::WrongType,
        ),
        case::<Mandate>(
            "window seconds negative",
            bend(&md, |v| {
                v["scope"]["budgets"]["windows"][0]["window_seconds"] = json!(-60)
            }),
            "scope.budgets.windows[0].window_seconds",
            K::WrongType,
        ),
        case::<CheckoutState>(
            "unknown checkout status",
            r#"{"pending": {"checkout_id": "c_1"}}"#,
            "",
            K::WrongType,
        ),
        case::<Usage>(
            "negative uses",
            bend(&us, |v| v["uses"] = json!(-1)),
            "uses",
            K::WrongType,
        ),
        case::<Money>(
            "currency as number",
            r#"{"amount": "1.00", "currency": 978}"#,
            "currency",
            K::WrongType,
        ),
        // --- Unknown fields (typos are never ignored).
        case::<CartSnapshot>(
            "unknown top-level field",
            bend(&s, |v| v["coupon"] = json!("SAVE10")),
            "coupon",
            K::UnknownField,
        ),
        case::<CartSnapshot>(
            "unknown field in money",
            bend(&s, |v| v["totals"]["total"]["note"] = json!("x")),
            "totals.total.note",
            K::UnknownField,
        ),
        case::<CartSnapshot>(
            "unknown field in a line",
            bend(&s, |v| v["items"][0]["color"] = json!("grey")),
            "items[0].color",
            K::UnknownField,
        ),
        case::<PaymentRequest>(
            "unknown request field",
            bend(&rq, |v| v["tip"] = m("1.00", "EUR")),
            "tip",
            K::UnknownField,
        ),
        case::<Mandate>(
            "unknown scope field",
            bend(&md, |v| v["scope"]["max_amount"] = m("1.00", "EUR")),
            "scope.max_amount",
            K::UnknownField,
        ),
        case::<EvaluationDocument>(
            "unknown document field",
            bend(&doc, |v| v["extra"] = json!(true)),
            "extra",
            K::UnknownField,
        ),
        // --- Missing fields.
        case::<CartSnapshot>(
            "missing total",
            bend(&s, |v| remove(&mut v["totals"], "total")),
            "totals.total",
            K::MissingField,
        ),
        case::<CartSnapshot>(
            "missing merchant",
            bend(&s, |v| remove(v, "merchant")),
            "merchant",
            K::MissingField,
        ),
        case::<CartSnapshot>(
            "missing currency",
            bend(&s, |v| remove(&mut v["items"][0]["unit_price"], "currency")),
            "items[0].unit_price.currency",
            K::MissingField,
        ),
        case::<PaymentRequest>(
            "missing amount",
            bend(&rq, |v| remove(v, "amount")),
            "amount",
            K::MissingField,
        ),
        case::<Mandate>(
            "missing validity",
            bend(&md, |v| remove(&mut v["scope"], "validity")),
            "scope.validity",
            K::MissingField,
        ),
        case::<Confirmation>(
            "missing channel",
            bend(&cf, |v| remove(v, "channel_ref")),
            "channel_ref",
            K::MissingField,
        ),
        case::<EvaluationDocument>(
            "missing now",
            bend(&doc, |v| remove(v, "now")),
            "now",
            K::MissingField,
        ),
        case::<PurchaseIntent>(
            "missing urgency",
            bend(&it, |v| remove(v, "urgency")),
            "urgency",
            K::MissingField,
        ),
        case::<LifecycleEvent>(
            "revoke without reason",
            r#"{"revoke": {}}"#,
            "revoke.reason",
            K::MissingField,
        ),
        // --- Currencies.
        case::<Money>(
            "unknown currency",
            money_json("1.00", "EUX"),
            "currency",
            K::Invalid,
        ),
        case::<Money>(
            "lowercase currency",
            money_json("1.00", "eur"),
            "currency",
            K::Invalid,
        ),
        case::<Money>(
            "fund currency CLF",
            money_json("1.00", "CLF"),
            "currency",
            K::Invalid,
        ),
        case::<Money>(
            "metal XAU",
            money_json("1.00", "XAU"),
            "currency",
            K::Invalid,
        ),
        case::<Money>(
            "no currency XXX",
            money_json("1.00", "XXX"),
            "currency",
            K::Invalid,
        ),
        case::<Money>(
            "testing XTS",
            money_json("1.00", "XTS"),
            "currency",
            K::Invalid,
        ),
        case::<Money>(
            "empty currency",
            money_json("1.00", ""),
            "currency",
            K::Invalid,
        ),
        case::<CartSnapshot>(
            "lowercase currency in a line",
            bend(&s, |v| {
                v["items"][0]["unit_price"]["currency"] = json!("eur")
            }),
            "items[0].unit_price.currency",
            K::Invalid,
        ),
        // --- Amounts.
        case::<Money>(
            "EUR over-precision",
            money_json("1.001", "EUR"),
            "amount",
            K::Invalid,
        ),
        case::<Money>(
            "JPY over-precision",
            money_json("129.5", "JPY"),
            "amount",
            K::Invalid,
        ),
        case::<Money>(
            "BHD over-precision",
            money_json("1.0001", "BHD"),
            "amount",
            K::Invalid,
        ),
        case::<CartSnapshot>(
            "line over-precision",
            bend(&s, |v| {
                v["items"][0]["unit_price"]["amount"] = json!("129.001")
            }),
            "items[0].unit_price.amount",
            K::Invalid,
        ),
        case::<Money>(
            "negative amount",
            money_json("-1.00", "EUR"),
            "amount",
            K::Invalid,
        ),
        case::<Money>(
            "negative zero",
            money_json("-0.00", "EUR"),
            "amount",
            K::Invalid,
        ),
        case::<Money>(
            "numeric amount",
            r#"{"amount": 12.5, "currency": "EUR"}"#,
            "amount",
            K::WrongType,
        ),
        case::<Money>(
            "integer amount",
            r#"{"amount": 12, "currency": "EUR"}"#,
            "amount",
            K::WrongType,
        ),
        case::<Money>(
            "exponent notation",
            money_json("1e3", "EUR"),
            "amount",
            K::Invalid,
        ),
        case::<Money>(
            "plus sign",
            money_json("+1.00", "EUR"),
            "amount",
            K::Invalid,
        ),
        case::<Money>(
            "white space",
            money_json(" 1.00", "EUR"),
            "amount",
            K::Invalid,
        ),
        case::<Money>(
            "decimal comma",
            money_json("1,00", "EUR"),
            "amount",
            K::Invalid,
        ),
        case::<Money>(
            "thousands separator",
            money_json("1_000.00", "EUR"),
            "amount",
            K::Invalid,
        ),
        case::<Money>("empty amount", money_json("", "EUR"), "amount", K::Invalid),
        case::<Money>("leading dot", money_json(".5", "EUR"), "amount", K::Invalid),
        case::<Money>(
            "trailing dot",
            money_json("5.", "EUR"),
            "amount",
            K::Invalid,
        ),
        case::<Money>(
            "Infinity",
            money_json("Infinity", "EUR"),
            "amount",
            K::Invalid,
        ),
        case::<Money>(
            "hex amount",
            money_json("0x10", "EUR"),
            "amount",
            K::Invalid,
        ),
        case::<Money>(
            "above 10^15",
            money_json("1000000000000001", "EUR"),
            "amount",
            K::Invalid,
        ),
        case::<Money>(
            "absurdly long amount",
            money_json(&"9".repeat(100), "EUR"),
            "amount",
            K::Invalid,
        ),
        // --- Totals and items.
        case::<CartSnapshot>(
            "subtotal does not add up",
            bend(&s, |v| v["totals"]["subtotal"] = m("128.00", "EUR")),
            "totals.subtotal",
            K::Invalid,
        ),
        case::<CartSnapshot>(
            "total does not add up",
            bend(&s, |v| v["totals"]["total"] = m("150.00", "EUR")),
            "totals.total",
            K::Invalid,
        ),
        case::<CartSnapshot>(
            "discount larger than gross",
            bend(&s, |v| v["totals"]["discount"] = m("200.00", "EUR")),
            "totals.discount",
            K::Invalid,
        ),
        case::<CartSnapshot>(
            "shipping in another currency",
            bend(&s, |v| v["totals"]["shipping"] = m("0.00", "USD")),
            "totals.shipping",
            K::Invalid,
        ),
        case::<CartSnapshot>(
            "line in another currency",
            bend(&s, |v| v["items"][0]["unit_price"] = m("129.00", "USD")),
            "items[0].unit_price",
            K::Invalid,
        ),
        case::<CartSnapshot>(
            "empty cart",
            bend(&s, |v| v["items"] = json!([])),
            "items",
            K::Invalid,
        ),
        case::<CartSnapshot>(
            "501 items",
            bend(&s, |v| {
                v["items"] = Value::Array(vec![v["items"][0].clone(); 501])
            }),
            "items",
            K::Invalid,
        ),
        case::<CartSnapshot>(
            "quantity 0",
            bend(&s, |v| v["items"][0]["quantity"] = json!(0)),
            "items[0].quantity",
            K::Invalid,
        ),
        case::<CartSnapshot>(
            "quantity above 1,000,000",
            bend(&s, |v| v["items"][0]["quantity"] = json!(1_000_001)),
            "items[0].quantity",
            K::Invalid,
        ),
        case::<CartSnapshot>(
            "201 fact refs",
            bend(&s, |v| {
                v["fact_refs"] = json!((0..201).map(|i| format!("fact:{i}")).collect::<Vec<_>>())
            }),
            "fact_refs",
            K::Invalid,
        ),
        // --- Strings.
        case::<CartSnapshot>(
            "merchant id of 129 bytes",
            bend(&s, |v| v["merchant"]["merchant_id"] = json!(long(129))),
            "merchant.merchant_id",
            K::Invalid,
        ),
        case::<CartSnapshot>(
            "description of 1025 bytes",
            bend(&s, |v| v["items"][0]["description"] = json!(long(1025))),
            "items[0].description",
            K::Invalid,
        ),
        case::<CartSnapshot>(
            "control character in description",
            bend(&s, |v| {
                v["items"][0]["description"] = json!("Travel\u{7}Backpack")
            }),
            "items[0].description",
            K::Invalid,
        ),
        case::<CartSnapshot>(
            "blank description",
            bend(&s, |v| v["items"][0]["description"] = json!("   ")),
            "items[0].description",
            K::Invalid,
        ),
        case::<CartSnapshot>(
            "space in sku",
            bend(&s, |v| v["items"][0]["sku"] = json!("BAG TRAVEL")),
            "items[0].sku",
            K::Invalid,
        ),
        case::<CartSnapshot>(
            "empty merchant id",
            bend(&s, |v| v["merchant"]["merchant_id"] = json!("")),
            "merchant.merchant_id",
            K::Invalid,
        ),
        case::<PaymentRequest>(
            "newline in buyer id",
            bend(&rq, |v| v["buyer_id"] = json!("buyer\n456")),
            "buyer_id",
            K::Invalid,
        ),
        case::<PaymentRequest>(
            "NUL in mandate id",
            bend(&rq, |v| v["mandate_id"] = json!("mandate\u{0}001")),
            "mandate_id",
            K::Invalid,
        ),
        // --- MCCs and digests.
        case::<CartSnapshot>(
            "three-digit mcc",
            bend(&s, |v| v["merchant"]["mcc"] = json!("541")),
            "merchant.mcc",
            K::Invalid,
        ),
        case::<CartSnapshot>(
            "mcc with a letter",
            bend(&s, |v| v["merchant"]["mcc"] = json!("54a1")),
            "merchant.mcc",
            K::Invalid,
        ),
        case::<Mcc>("five-digit mcc", r#""54111""#, "", K::Invalid),
        case::<Mcc>("non-ascii digits mcc", r#""٥٤١١""#, "", K::Invalid),
        case::<PaymentRequest>(
            "snapshot id not hex",
            bend(&rq, |v| v["snapshot_id"] = json!("sha256:XYZ")),
            "snapshot_id",
            K::Invalid,
        ),
        case::<PaymentRequest>(
            "snapshot id upper-case hex",
            bend(&rq, |v| {
                v["snapshot_id"] = json!(other_id.to_uppercase().replace("SHA256", "sha256"))
            }),
            "snapshot_id",
            K::Invalid,
        ),
        case::<PaymentRequest>(
            "snapshot id without prefix",
            bend(&rq, |v| {
                v["snapshot_id"] = json!(other_id.trim_start_matches("sha256:"))
            }),
            "snapshot_id",
            K::Invalid,
        ),
        case::<SnapshotId>("snapshot id too short", r#""sha256:abcd""#, "", K::Invalid),
        case::<CartSnapshot>(
            "claimed id mismatch",
            bend(&s, |v| v["id"] = json!(other_id)),
            "id",
            K::Invalid,
        ),
        case::<CartSnapshot>(
            "expires before created",
            bend(&s, |v| v["expires_at"] = json!("2026-06-28T08:00:00Z")),
            "expires_at",
            K::Invalid,
        ),
        case::<CartSnapshot>(
            "expires when created",
            bend(&s, |v| v["expires_at"] = v["created_at"].clone()),
            "expires_at",
            K::Invalid,
        ),
        // --- Mandates.
        case::<Mandate>(
            "max amount in another currency",
            bend(&md, |v| {
                v["scope"]["amount"]["max_amount"] = m("150.00", "USD")
            }),
            "scope.amount.max_amount",
            K::Invalid,
        ),
        case::<Mandate>(
            "mixed currencies in budgets",
            bend(&md, |v| {
                v["scope"]["budgets"]["per_transaction"] = m("150.00", "USD")
            }),
            "scope.budgets.per_transaction",
            K::Invalid,
        ),
        case::<Mandate>(
            "lifetime in another currency",
            bend(&md, |v| {
                v["scope"]["budgets"]["lifetime"] = m("150.00", "GBP")
            }),
            "scope.budgets.lifetime",
            K::Invalid,
        ),
        case::<Mandate>(
            "window max in another currency",
            bend(&md, |v| {
                v["scope"]["budgets"]["windows"][0]["max_amount"] = m("300.00", "USD")
            }),
            "scope.budgets.windows[0].max_amount",
            K::Invalid,
        ),
        case::<Mandate>(
            "confirmation threshold in another currency",
            bend(&md, |v| {
                v["scope"]["confirmation"]["conditions"] =
                    json!([{"above_amount": {"amount": m("200.00", "USD")}}])
            }),
            "scope.confirmation.conditions[0].amount",
            K::Invalid,
        ),
        case::<Mandate>(
            "validity inverted",
            bend(&md, |v| {
                v["scope"]["validity"]["expires_at"] = json!("2026-06-28T07:00:00Z")
            }),
            "scope.validity.expires_at",
            K::Invalid,
        ),
        case::<Mandate>(
            "empty actions",
            bend(&md, |v| v["scope"]["actions"] = json!([])),
            "scope.actions",
            K::Invalid,
        ),
        case::<Mandate>(
            "duplicate action",
            bend(&md, |v| {
                v["scope"]["actions"] = json!(["authorize_payment", "authorize_payment"])
            }),
            "scope.actions",
            K::Invalid,
        ),
        case::<Mandate>(
            "duplicate MCC",
            bend(&md, |v| {
                v["scope"]["mccs"] = json!(["5948", "5411", "5948"])
            }),
            "scope.mccs",
            K::Invalid,
        ),
        case::<Mandate>(
            "duplicate allowed SKU",
            bend(&md, |v| {
                v["scope"]["cart"]["open"]["allowed_skus"] = json!(["A", "A"])
            }),
            "scope.cart.allowed_skus",
            K::Invalid,
        ),
        case::<Mandate>(
            "duplicate evidence",
            bend(&md, |v| v["evidence_refs"] = json!(["e:1", "e:1"])),
            "evidence_refs",
            K::Invalid,
        ),
        case::<Mandate>(
            "empty allowlist",
            bend(&md, |v| {
                v["scope"]["merchants"] = json!({"allowlist": {"merchant_ids": []}})
            }),
            "scope.merchants.merchant_ids",
            K::Invalid,
        ),
        case::<Mandate>(
            "window of 0 s",
            bend(&md, |v| {
                v["scope"]["budgets"]["windows"][0]["window_seconds"] = json!(0)
            }),
            "scope.budgets.windows[0].window_seconds",
            K::Invalid,
        ),
        case::<Mandate>(
            "window over ten years",
            bend(&md, |v| {
                v["scope"]["budgets"]["windows"][0]["window_seconds"] = json!(400_000_000u64)
            }),
            "scope.budgets.windows[0].window_seconds",
            K::Invalid,
        ),
        case::<Mandate>(
            "window limiting nothing",
            bend(&md, |v| {
                v["scope"]["budgets"]["windows"][0] = json!({"window_seconds": 86400})
            }),
            "scope.budgets.windows[0]",
            K::Invalid,
        ),
        case::<Mandate>(
            "own parent",
            bend(&md, |v| v["parent_id"] = v["id"].clone()),
            "parent_id",
            K::Invalid,
        ),
        case::<Mandate>(
            "revoked without revoked_at",
            bend(&md, |v| v["lifecycle"]["status"] = json!("revoked")),
            "lifecycle.revoked_at",
            K::Invalid,
        ),
        case::<Mandate>(
            "used without used_at",
            bend(&md, |v| v["lifecycle"]["status"] = json!("used")),
            "lifecycle.used_at",
            K::Invalid,
        ),
        case::<Mandate>(
            "active without activated_at",
            bend(&md, |v| remove(&mut v["lifecycle"], "activated_at")),
            "lifecycle.activated_at",
            K::Invalid,
        ),
        // --- Usage.
        case::<Usage>(
            "the same window reported twice",
            bend(&us, |v| {
                let w = v["windows"][0].clone();
                v["windows"] = json!([w.clone(), w]);
            }),
            "windows[1].window_seconds",
            K::Invalid,
        ),
        case::<Usage>(
            "held in another currency",
            bend(&us, |v| v["held"] = m("1.00", "USD")),
            "held",
            K::Invalid,
        ),
        case::<Usage>(
            "window usage in another currency",
            bend(&us, |v| v["windows"][0]["amount"] = m("1.00", "USD")),
            "windows[0].amount",
            K::Invalid,
        ),
        // --- Decisions.
        case::<AuthorityDecision>(
            "allowed despite blockers",
            bend(&dc, |v| v["outcome"] = json!("allowed")),
            "outcome",
            K::Invalid,
        ),
        case::<AuthorityDecision>(
            "blocked without blockers",
            bend(&dc, |v| v["blockers"] = json!([])),
            "outcome",
            K::Invalid,
        ),
        case::<AuthorityDecision>(
            "requires_confirmation despite hard blockers",
            bend(&dc, |v| v["outcome"] = json!("requires_confirmation")),
            "outcome",
            K::Invalid,
        ),
        case::<AuthorityDecision>(
            "unknown blocker code",
            bend(&dc, |v| v["blockers"][0]["code"] = json!("AMOUNT_TOO_HIGH")),
            "blockers[0].code",
            K::WrongType,
        ),
        case::<AuthorityDecision>(
            "blocker code in snake_case",
            bend(&dc, |v| {
                v["blockers"][0]["code"] = json!("amount_exceeds_mandate")
            }),
            "blockers[0].code",
            K::WrongType,
        ),
        case::<AuthorityDecision>(
            "bad request digest",
            bend(&dc, |v| v["request_digest"] = json!("sha256:00")),
            "request_digest",
            K::Invalid,
        ),
        // --- Nested in the evaluation document.
        case::<EvaluationDocument>(
            "document: quantity 0",
            bend(&doc, |v| v["snapshot"]["items"][0]["quantity"] = json!(0)),
            "snapshot.items[0].quantity",
            K::Invalid,
        ),
        case::<EvaluationDocument>(
            "document: empty actions",
            bend(&doc, |v| v["chain"][0]["scope"]["actions"] = json!([])),
            "chain[0].scope.actions",
            K::Invalid,
        ),
        case::<EvaluationDocument>(
            "document: over-precise request",
            bend(&doc, |v| {
                v["request"]["amount"]["amount"] = json!("144.001")
            }),
            "request.amount.amount",
            K::Invalid,
        ),
        case::<EvaluationDocument>(
            "document: usage currency",
            bend(&doc, |v| v["usage"][0]["held"] = m("0.00", "USD")),
            "usage[0].held",
            K::Invalid,
        ),
        case::<EvaluationDocument>(
            "document: unknown credential status",
            bend(&doc, |v| v["credential"] = json!("stolen")),
            "credential",
            K::WrongType,
        ),
        case::<EvaluationDocument>(
            "document: now not a time",
            bend(&doc, |v| v["now"] = json!("2026-13-01T00:00:00Z")),
            "now",
            K::Invalid,
        ),
        // --- Lifecycle events, confirmations, intents, checkout states.
        case::<LifecycleEvent>("unknown event", r#""pause""#, "", K::WrongType),
        case::<Confirmation>(
            "confirmed by a robot",
            bend(&cf, |v| v["confirmed_by"]["kind"] = json!("robot")),
            "confirmed_by.kind",
            K::WrongType,
        ),
        case::<Confirmation>(
            "confirmation with duplicate action",
            bend(&cf, |v| {
                v["scope"]["actions"] = json!(["authorize_payment", "authorize_payment"])
            }),
            "scope.actions",
            K::Invalid,
        ),
        case::<Confirmation>(
            "confirmation for a bad snapshot id",
            bend(&cf, |v| v["snapshot_id"] = json!("cart_42")),
            "snapshot_id",
            K::Invalid,
        ),
        case::<PurchaseIntent>(
            "intent five-digit mcc",
            bend(&it, |v| v["mcc"] = json!("54111")),
            "mcc",
            K::Invalid,
        ),
        case::<PurchaseIntent>(
            "intent blank justification",
            bend(&it, |v| v["business_justification"] = json!(" ")),
            "business_justification",
            K::Invalid,
        ),
        case::<PurchaseIntent>(
            "intent negative quantity",
            bend(&it, |v| v["line_items"][0]["quantity"] = json!(-2)),
            "line_items[0].quantity",
            K::WrongType,
        ),
        case::<PurchaseIntent>(
            "intent price over-precision",
            bend(&it, |v| {
                v["line_items"][0]["unit_price"]["amount"] = json!("12.505")
            }),
            "line_items[0].unit_price.amount",
            K::Invalid,
        ),
        case::<CheckoutState>(
            "checkout without id",
            format!(r#"{{"valid": {{"snapshot_id": "{other_id}"}}}}"#),
            "valid.checkout_id",
            K::MissingField,
        ),
        // --- Limits (domain::limits): one row per limit, each naming its field.
        case::<CheckoutState>(
            "65 upstream blockers",
            invalid_checkout(MAX_UPSTREAM_BLOCKERS + 1, 8),
            "invalid.blockers",
            K::Invalid,
        ),
        case::<CheckoutState>(
            "upstream message of 257 bytes",
            invalid_checkout(1, MAX_UPSTREAM_MESSAGE_LEN + 1),
            "invalid.blockers[0].message",
            K::Invalid,
        ),
        case::<CheckoutState>(
            "upstream blocker with nested causes",
            r#"{"invalid": {"checkout_id": "c_1", "blockers": [{"code": "X", "message": "x",
                "causes": [{"code": "Y", "message": "y"}]}]}}"#,
            "invalid.blockers[0].causes",
            K::UnknownField,
        ),
        case::<EvaluationDocument>(
            "document with 65 upstream blockers",
            bend(&doc, |v| {
                v["checkout"] = serde_json::from_str(&invalid_checkout(65, 8)).unwrap();
            }),
            "checkout.invalid.blockers",
            K::Invalid,
        ),
        case::<EvaluationDocument>(
            "chain of 17 mandates",
            bend(&doc, |v| {
                v["chain"] = Value::Array(vec![md.clone(); MAX_CHAIN_LEN + 1]);
            }),
            "chain",
            K::Invalid,
        ),
        case::<EvaluationDocument>(
            "17 usage entries",
            bend(&doc, |v| {
                v["usage"] = Value::Array(vec![us.clone(); MAX_CHAIN_LEN + 1]);
            }),
            "usage",
            K::Invalid,
        ),
        case::<EvaluationDocument>(
            "65 confirmations",
            bend(&doc, |v| {
                v["confirmations"] = Value::Array(vec![cf.clone(); MAX_CONFIRMATIONS + 1]);
            }),
            "confirmations",
            K::Invalid,
        ),
        case::<EvaluationDocument>(
            "1,001 suspended actors",
            bend(&doc, |v| {
                v["suspensions"]["actors"] = json!((0..=MAX_SUSPENDED)
                    .map(|i| format!("agent_{i}"))
                    .collect::<Vec<_>>());
            }),
            "suspensions.actors",
            K::Invalid,
        ),
        case::<EvaluationDocument>(
            "1,001 suspended buyers",
            bend(&doc, |v| {
                v["suspensions"]["buyers"] = json!((0..=MAX_SUSPENDED)
                    .map(|i| format!("buyer_{i}"))
                    .collect::<Vec<_>>());
            }),
            "suspensions.buyers",
            K::Invalid,
        ),
        case::<EvaluationDocument>(
            "document with 501 items",
            bend(&doc, |v| {
                let item = v["snapshot"]["items"][0].clone();
                v["snapshot"]["items"] = Value::Array(vec![item; MAX_ITEMS + 1]);
            }),
            "snapshot.items",
            K::Invalid,
        ),
        case::<CartSnapshot>(
            "201 policy refs",
            bend(&s, |v| {
                v["policy_refs"] = json!((0..=MAX_REFS)
                    .map(|i| format!("policy:{i}"))
                    .collect::<Vec<_>>())
            }),
            "policy_refs",
            K::Invalid,
        ),
        case::<Mandate>(
            "17 budget windows",
            bend(&md, |v| {
                v["scope"]["budgets"]["windows"] = json!((1..=MAX_WINDOWS + 1)
                    .map(|i| json!({"window_seconds": i * 3600, "max_count": 3}))
                    .collect::<Vec<_>>());
            }),
            "scope.budgets.windows",
            K::Invalid,
        ),
        case::<Usage>(
            "17 usage windows",
            bend(&us, |v| {
                v["windows"] = json!((1..=MAX_WINDOWS + 1)
                    .map(|i| json!({"window_seconds": i * 3600,
                                    "amount": m("0.00", "EUR"), "count": 0}))
                    .collect::<Vec<_>>());
            }),
            "windows",
            K::Invalid,
        ),
        case::<Mandate>(
            "1,001 allowed merchants",
            bend(&md, |v| {
                v["scope"]["merchants"] = json!({"allowlist": {"merchant_ids":
                    (0..=MAX_LIST).map(|i| format!("merchant_{i}")).collect::<Vec<_>>()}});
            }),
            "scope.merchants.merchant_ids",
            K::Invalid,
        ),
        case::<Mandate>(
            "1,001 allowed MCCs",
            bend(&md, |v| {
                v["scope"]["mccs"] = json!((0..=MAX_LIST)
                    .map(|i| format!("{i:04}"))
                    .collect::<Vec<_>>());
            }),
            "scope.mccs",
            K::Invalid,
        ),
        case::<Mandate>(
            "1,001 evidence refs",
            bend(&md, |v| {
                v["evidence_refs"] = json!((0..=MAX_LIST)
                    .map(|i| format!("ev:{i}"))
                    .collect::<Vec<_>>());
            }),
            "evidence_refs",
            K::Invalid,
        ),
        case::<PurchaseIntent>(
            "51 intent lines",
            bend(&it, |v| {
                let line = v["line_items"][0].clone();
                v["line_items"] = Value::Array(vec![line; MAX_INTENT_LINES + 1]);
            }),
            "line_items",
            K::Invalid,
        ),
    ]
}

/// Rows inside internally tagged enums (`MerchantScope`, `CartBinding`, `ConfirmationCondition`,
/// `Evidence`, `CheckoutState`, `LifecycleEvent`): serde buffers a tagged enum's content before
/// choosing the variant, so `serde_path_to_error` cannot see below the enum and the field path
/// stops at the enum (or is empty at the top level).
fn tagged_enum_cases() -> Vec<Case> {
    let md = mandate();
    let dc = decision();
    vec![
        case::<LifecycleEvent>(
            "revoke with empty reason",
            r#"{"revoke": {"reason": ""}}"#,
            "revoke.reason",
            K::Invalid,
        ),
        case::<Mandate>(
            "single merchant with empty id",
            bend(&md, |v| {
                v["scope"]["merchants"]["single"]["merchant_id"] = json!("")
            }),
            "scope.merchants.single.merchant_id",
            K::Invalid,
        ),
        case::<Mandate>(
            "snapshot binding with bad id",
            bend(&md, |v| {
                v["scope"]["cart"] = json!({"snapshot": {"snapshot_id": "cart_42"}})
            }),
            "scope.cart.snapshot.snapshot_id",
            K::Invalid,
        ),
        case::<Mandate>(
            "confirmation threshold over-precise",
            bend(&md, |v| {
                v["scope"]["confirmation"]["conditions"] =
                    json!([{"above_amount": {"amount": m("200.001", "EUR")}}])
            }),
            "scope.confirmation.conditions[0].above_amount.amount.amount",
            K::Invalid,
        ),
        case::<AuthorityDecision>(
            "evidence with bad id",
            bend(&dc, |v| v["evidence"][0]["payment_mandate"] = json!("")),
            "evidence[0].payment_mandate",
            K::Invalid,
        ),
        case::<CheckoutState>(
            "checkout with bad upstream code",
            r#"{"invalid": {"checkout_id": "c_1", "blockers": [{"code": "", "message": "x"}]}}"#,
            "invalid.blockers[0].code",
            K::Invalid,
        ),
    ]
}

/// An invalid checkout state with `n` upstream blockers whose messages are `len` bytes.
fn invalid_checkout(n: usize, len: usize) -> String {
    let blockers: Vec<Value> = (0..n)
        .map(|i| json!({"code": format!("UPSTREAM_{i}"), "message": long(len)}))
        .collect();
    json!({"invalid": {"checkout_id": "c_1", "blockers": blockers}}).to_string()
}

/// Every row that does not fail with its expected field path and kind.
fn failing_rows(cases: &[Case]) -> Vec<String> {
    let mut failures = Vec::new();
    for c in cases {
        match (c.parse)(&c.json) {
            Ok(()) => failures.push(format!("{} ({}): accepted", c.name, c.type_name)),
            Err(e) => {
                if e.field() != c.field || e.kind() != c.kind {
                    failures.push(format!(
                        "{} ({}): expected {:?} at {:?}, got {:?} at {:?}: {}",
                        c.name,
                        c.type_name,
                        c.kind,
                        c.field,
                        e.kind(),
                        e.field(),
                        e.message()
                    ));
                }
                if e.message().is_empty() || e.to_string().is_empty() {
                    failures.push(format!("{}: empty message", c.name));
                }
            }
        }
    }
    failures
}

/// I11: every row fails with the expected field path and kind; every failing row is listed.
#[test]
fn bad_input_names_the_field() {
    let cases = cases();
    assert!(cases.len() >= 60, "only {} cases", cases.len());
    let failures = failing_rows(&cases);
    assert!(
        failures.is_empty(),
        "{} of {} rows failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

/// I11 inside tagged enums: the error must name the field below the enum.
#[test]
fn bad_input_inside_tagged_enums_names_the_field() {
    let cases = tagged_enum_cases();
    let failures = failing_rows(&cases);
    assert!(
        failures.is_empty(),
        "{} of {} rows failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

/// The same rows are rejected with the right kind, and the path they name is a prefix of the
/// right one (never a wrong field).
#[test]
fn bad_input_inside_tagged_enums_is_rejected_at_the_enum() {
    for c in tagged_enum_cases() {
        let e = (c.parse)(&c.json).expect_err(c.name);
        assert_eq!(e.kind(), c.kind, "{}", c.name);
        assert!(
            c.field.starts_with(e.field()),
            "{}: {:?}",
            c.name,
            e.field()
        );
    }
}

/// I11/I12: plain `serde_json::from_str` rejects every row too (the types validate themselves)
/// and nothing panics.
#[test]
fn plain_serde_rejects_every_row_without_panicking() {
    let mut failures = Vec::new();
    for c in cases().into_iter().chain(tagged_enum_cases()) {
        let outcome = catch_unwind(AssertUnwindSafe(|| (c.plain)(&c.json)));
        match outcome {
            Err(_) => failures.push(format!("{}: panicked", c.name)),
            Ok(Ok(())) => failures.push(format!("{}: accepted by serde_json", c.name)),
            Ok(Err(_)) => {}
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The table has no duplicate names or inputs (each row is a distinct case).
#[test]
fn rows_are_distinct() {
    let cases = cases();
    let names: BTreeSet<_> = cases.iter().map(|c| c.name).collect();
    assert_eq!(names.len(), cases.len(), "duplicate row names");
    let inputs: BTreeSet<_> = cases
        .iter()
        .map(|c| (c.type_name, c.json.as_str()))
        .collect();
    assert_eq!(inputs.len(), cases.len(), "duplicate row inputs");
}

/// Each base document the rows bend is itself valid (so each row fails for its own reason).
#[test]
fn base_documents_are_valid() {
    from_json::<CartSnapshot>(&snapshot().to_string()).unwrap();
    from_json::<Mandate>(&mandate().to_string()).unwrap();
    from_json::<PaymentRequest>(&request().to_string()).unwrap();
    from_json::<Usage>(&usage().to_string()).unwrap();
    from_json::<EvaluationDocument>(&document().to_string()).unwrap();
    from_json::<Confirmation>(&confirmation().to_string()).unwrap();
    from_json::<AuthorityDecision>(&decision().to_string()).unwrap();
    from_json::<PurchaseIntent>(&intent().to_string()).unwrap();
    from_json::<Money>(&money_json("1.00", "EUR")).unwrap();
    from_json::<Money>(&money_json("1.5", "BHD")).unwrap();
    from_json::<Currency>(r#""JPY""#).unwrap();
    from_json::<LifecycleEvent>(r#"{"revoke": {"reason": "fraud"}}"#).unwrap();
    from_json::<CheckoutState>(
        r#"{"invalid": {"checkout_id": "c_1", "blockers": [{"code": "X", "message": "x"}]}}"#,
    )
    .unwrap();
    // Boundaries that are fine: 128-byte ids, 1,024-byte texts, 500 items, exactly 10^15.
    let mut s = snapshot();
    s["merchant"]["merchant_id"] = json!(long(128));
    s["items"][0]["description"] = json!(long(1024));
    from_json::<CartSnapshot>(&s.to_string()).unwrap();
    from_json::<Money>(&money_json("1000000000000000", "EUR")).unwrap();
}

/// Syntax and type errors carry the position in the input (line and column, 1-based). The
/// domain's own validation errors are raised after a value was read and carry (0, 0), "unknown".
#[test]
fn errors_carry_a_position() {
    let text = "{\n  \"amount\": \"1.00\",\n  \"currency\": \"EUR\",\n}";
    let e = from_json::<Money>(text).unwrap_err();
    assert_eq!(e.kind(), K::Syntax);
    assert_eq!(e.position().0, 4, "{:?}", e.position());

    let text = "{\n  \"amount\": 12.5,\n  \"currency\": \"EUR\"\n}";
    let e = from_json::<Money>(text).unwrap_err();
    assert_eq!((e.kind(), e.field()), (K::WrongType, "amount"));
    assert_eq!(e.position().0, 2, "{:?}", e.position());

    let e = from_json::<Money>(&money_json("1.001", "EUR")).unwrap_err();
    assert_eq!(e.field(), "amount");
    assert!(e.to_string().starts_with("amount: "), "{e}");
}

/// I17: a struct in serde's positional (array) form, which a generic JSON reader sees as
/// another document, is refused at any depth, naming the field, by `from_json` and by plain
/// `serde_json::from_str` on the domain types.
fn positional_cases() -> Vec<Case> {
    let s = snapshot();
    let md = mandate();
    let doc = document();
    vec![
        case::<Money>("money positional", r#"["1.00", "EUR"]"#, "", K::WrongType),
        case::<CartSnapshot>(
            "unit_price positional",
            bend(&s, |v| {
                v["items"][0]["unit_price"] = json!(["129.00", "EUR"])
            }),
            "items[0].unit_price",
            K::WrongType,
        ),
        case::<Mandate>(
            "validity positional",
            bend(&md, |v| {
                let validity = v["scope"]["validity"].clone();
                v["scope"]["validity"] = json!([validity["not_before"], validity["expires_at"]]);
            }),
            "scope.validity",
            K::WrongType,
        ),
        case::<EvaluationDocument>(
            "snapshot positional in a document",
            bend(&doc, |v| {
                let items: Vec<Value> = v["snapshot"]
                    .as_object()
                    .unwrap()
                    .values()
                    .cloned()
                    .collect();
                v["snapshot"] = Value::Array(items);
            }),
            "snapshot",
            K::WrongType,
        ),
        case::<LifecycleEvent>(
            "struct variant positional",
            r#"{"revoke": ["fraud"]}"#,
            "revoke",
            K::WrongType,
        ),
    ]
}

/// I17: `null` for an optional field is refused by `from_json`, at any depth, naming the field
/// (absent is the one spelling). Plain `serde_json::from_str` still reads `null` as absent
/// (serde's `Option`), so these rows are not in the table that plain serde must refuse.
fn one_meaning_cases() -> Vec<Case> {
    let s = snapshot();
    let cf = confirmation();
    vec![
        case::<CartSnapshot>(
            "snapshot id null",
            bend(&s, |v| v["id"] = Value::Null),
            "id",
            K::WrongType,
        ),
        case::<Confirmation>(
            "confirmation expires_at null",
            bend(&cf, |v| v["expires_at"] = Value::Null),
            "expires_at",
            K::WrongType,
        ),
    ]
}

#[test]
fn null_optional_fields_are_refused_naming_the_field() {
    let cases = one_meaning_cases();
    let failures = failing_rows(&cases);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    for c in &cases {
        let e = (c.parse)(&c.json).unwrap_err();
        assert!(e.message().contains("null"), "{}: {e}", c.name);
    }
}

/// The positional form of a snapshot's line item used to give the snapshot the id of the object
/// form, while a generic JCS verifier hashes another document: it is refused instead.
#[test]
fn positional_snapshot_gets_no_id() {
    let mut s = snapshot();
    s["items"][0]["unit_price"] = json!(["129.00", "EUR"]);
    let e = from_json::<CartSnapshot>(&s.to_string()).unwrap_err();
    assert_eq!((e.kind(), e.field()), (K::WrongType, "items[0].unit_price"));
    assert!(serde_json::from_str::<CartSnapshot>(&s.to_string()).is_err());
    assert!(serde_json::from_str::<Money>(r#"["1.00", "EUR"]"#).is_err());
    // The object form and ordinary arrays (lists of items, of refs) are still read.
    from_json::<CartSnapshot>(&snapshot().to_string()).unwrap();
    assert_eq!(
        from_json::<Vec<Money>>(r#"[{"amount": "1.00", "currency": "EUR"}]"#).unwrap(),
        vec![eur("1.00")]
    );
}

/// Engine commands are read through the same mechanism: a command in the positional form is
/// refused before any of its elements is read.
#[test]
fn positional_engine_command_is_refused() {
    let e = from_json::<agent_mandate::engine::SetSuspension>(r#"["k"]"#).unwrap_err();
    assert_eq!(e.kind(), K::WrongType);
    assert!(e.message().contains("positional"), "{e}");
}

/// I17: a second 60 is refused (leap seconds are not accepted), so `08:54:60Z` and
/// `08:55:00Z` cannot give two ids for one instant; years outside 0000-9999 are refused.
#[test]
fn one_spelling_per_instant() {
    let mut s = snapshot();
    s["created_at"] = json!("2026-06-28T08:55:00Z");
    from_json::<CartSnapshot>(&s.to_string()).unwrap();
    for bad in [
        "2026-06-28T08:54:60Z",
        "2026-06-28T23:59:60Z",
        "2026-06-28T08:54:60.5Z",
        "+10000-06-28T08:55:00Z",
        "-0001-06-28T08:55:00Z",
        "9999-12-31T23:30:00-01:00",
        "26-06-28T08:55:00Z",
    ] {
        s["created_at"] = json!(bad);
        let e = from_json::<CartSnapshot>(&s.to_string()).unwrap_err();
        assert_eq!(
            (e.kind(), e.field()),
            (K::Invalid, "created_at"),
            "{bad}: {e}"
        );
        assert!(
            serde_json::from_str::<CartSnapshot>(&s.to_string()).is_err(),
            "{bad}"
        );
    }
}

/// An intent the hash refuses (no lines, more than 50, a zero quantity, mixed currencies) is
/// still built by deserialisation, against "every domain type validates itself when
/// deserialised" (src/json.rs) and the documented "1 to 50 lines".
fn intent_cases() -> Vec<Case> {
    let it = intent();
    let line = it["line_items"][0].clone();
    vec![
        case::<PurchaseIntent>(
            "intent without lines",
            bend(&it, |v| v["line_items"] = json!([])),
            "line_items",
            K::Invalid,
        ),
        case::<PurchaseIntent>(
            "intent with 51 lines",
            bend(&it, |v| {
                v["line_items"] = Value::Array(vec![line.clone(); 51])
            }),
            "line_items",
            K::Invalid,
        ),
        case::<PurchaseIntent>(
            "intent quantity 0",
            bend(&it, |v| v["line_items"][0]["quantity"] = json!(0)),
            "line_items[0].quantity",
            K::Invalid,
        ),
        case::<PurchaseIntent>(
            "intent mixed currencies",
            bend(&it, |v| {
                let mut eur_line = line.clone();
                eur_line["unit_price"]["currency"] = json!("EUR");
                v["line_items"] = json!([line.clone(), eur_line]);
            }),
            "line_items[1].unit_price",
            K::Invalid,
        ),
    ]
}

#[test]
fn purchase_intent_validates_itself_when_deserialised() {
    let cases = intent_cases();
    let failures = failing_rows(&cases);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The same intents built through the Rust API are refused by `PurchaseIntent::new`, naming the
/// same field.
#[test]
fn invalid_intents_are_refused_by_the_constructor() {
    for c in intent_cases() {
        // A quantity of 0 is already refused by the plain data's deserialiser, naming the field;
        // the other rules are the constructor's.
        match from_json::<PurchaseIntentSpec>(&c.json) {
            Err(e) => assert_eq!(e.field(), c.field, "{}", c.name),
            Ok(spec) => {
                let e = PurchaseIntent::new(spec).expect_err(c.name);
                assert_eq!(e.field(), c.field, "{}", c.name);
            }
        }
    }
}

/// I11: an invalid checkout with thousands of upstream blockers (a 3 MB document whose
/// decision event was 3 MB) is refused at deserialisation, naming the field, so nothing is
/// evaluated, held or written for it.
#[test]
fn oversized_upstream_blockers_are_refused() {
    let mut doc = document();
    doc["checkout"] =
        serde_json::from_str(&invalid_checkout(11_000, MAX_UPSTREAM_MESSAGE_LEN)).unwrap();
    let text = doc.to_string();
    assert!(text.len() > 3_000_000, "{} bytes", text.len());
    let err = from_json::<EvaluationDocument>(&text).unwrap_err();
    assert_eq!(err.field(), "checkout.invalid.blockers", "{err}");
    assert_eq!(err.kind(), K::Invalid);
    assert!(
        err.message().contains("11000 entries, at most 64 allowed"),
        "{err}"
    );
    assert!(serde_json::from_str::<EvaluationDocument>(&text).is_err());
}
