//! The JSON Schemas under `schemas/`: committed as generated, and true of real bodies.
//!
//! - The committed files are exactly what `agent_mandate::schema::schemas` generates. After a
//!   change of a request or response type, regenerate them with
//!   `cargo run --example json_schemas --features json-schema,axum` (or run this test with
//!   `UPDATE_SCHEMAS=1`) and commit the difference.
//! - Real values validate against them: the commands of a Travel Backpack run, and what an
//!   engine on the memory adapters answered (outcomes of every kind, recorded results, reads,
//!   the dispute package, the trail report, the HTTP error body).
//! - Bodies the reader refuses fail validation too: a missing required field, `null` for an
//!   optional field, an unknown field, an amount as a JSON number, an id with white space.
#![cfg(all(feature = "json-schema", feature = "axum", feature = "testkit"))]

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;

use agent_mandate::domain::examples;
use agent_mandate::domain::{LifecycleEvent, Mandate, Party, Principal};
use agent_mandate::engine::{
    ChangeMandate, CommitOrder, CreateMandate, EngineError, ExecutePayment, OrderOutcome,
    PaymentOutcome, SetSuspension,
};
use agent_mandate::json::from_json;
use agent_mandate::schema::{render, schemas, Direction};
use common::engine::{agent_capture, agent_refund, agent_void, backpack_spec, key, roomy_world};
use common::principals::{agent_p, buyer_p, operator_p, system_p};
use common::{confirmation_for, id};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("schemas")
}

/// The committed schema `file`, compiled, with `format` (date-time) asserted.
fn validator(file: &str) -> jsonschema::Validator {
    let path = dir().join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let schema: Value = serde_json::from_str(&text).expect("schema is JSON");
    jsonschema::meta::validate(&schema).expect("a valid draft 2020-12 schema");
    jsonschema::options()
        .should_validate_formats(true)
        .build(&schema)
        .unwrap_or_else(|e| panic!("{file}: {e}"))
}

fn errors(file: &str, value: &Value) -> Vec<String> {
    validator(file)
        .iter_errors(value)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect()
}

/// `value` validates against `file`.
#[track_caller]
fn valid(file: &str, value: &impl serde::Serialize) {
    let value = serde_json::to_value(value).expect("serializes");
    let errs = errors(file, &value);
    assert!(errs.is_empty(), "{file}: {errs:#?}\n{value:#}");
}

/// `text` fails validation against `file`, and the strict reader refuses it as a `T` too.
#[track_caller]
fn refused<T: DeserializeOwned>(file: &str, what: &str, value: Value) {
    assert!(
        !errors(file, &value).is_empty(),
        "{file}: {what} validated\n{value:#}"
    );
    assert!(
        from_json::<T>(&value.to_string()).is_err(),
        "{what}: from_json read it"
    );
}

#[test]
fn committed_schemas_are_the_generated_ones() {
    let generated: BTreeMap<String, String> = schemas()
        .into_iter()
        .map(|s| (s.file, render(&s.schema)))
        .collect();
    if std::env::var_os("UPDATE_SCHEMAS").is_some() {
        agent_mandate::schema::write_all(&dir()).expect("schemas written");
    }
    let mut committed = BTreeMap::new();
    for entry in std::fs::read_dir(dir()).expect("schemas/ exists") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "json") {
            let name = path
                .file_name()
                .expect("name")
                .to_string_lossy()
                .into_owned();
            committed.insert(name, std::fs::read_to_string(&path).expect("read"));
        }
    }
    let stale: std::collections::BTreeSet<_> = generated
        .keys()
        .chain(committed.keys())
        .filter(|f| generated.get(*f) != committed.get(*f))
        .collect();
    assert!(
        stale.is_empty(),
        "schemas/ differs from the types in {stale:?}: run \
         `cargo run --example json_schemas --features json-schema,axum` \
         (or this test with UPDATE_SCHEMAS=1) and commit schemas/"
    );
}

#[test]
fn every_schema_is_named_for_its_direction_and_compiles() {
    for s in schemas() {
        let suffix = match s.direction {
            Direction::Request => ".request.json",
            Direction::Response => ".response.json",
            _ => unreachable!("a new direction"),
        };
        assert!(s.file.ends_with(suffix), "{}", s.file);
        validator(&s.file);
    }
}

#[tokio::test]
async fn a_real_run_validates_against_the_committed_schemas() {
    let w = roomy_world().await;

    // Requests: the commands of the run, as a client would send them.
    let pay = w.execute("pay-1");
    valid("execute_payment.request.json", &pay);
    let created = w
        .engine
        .create_mandate(
            &buyer_p(),
            &CreateMandate::new(key("create-2"), {
                let mut s = backpack_spec(true);
                s.id = id("mandate_002");
                s
            }),
        )
        .await
        .expect("created");
    valid("recorded_mandate.response.json", &created);
    let again = w
        .engine
        .create_mandate(
            &buyer_p(),
            &CreateMandate::new(key("create-2"), {
                let mut s = backpack_spec(true);
                s.id = id("mandate_002");
                s
            }),
        )
        .await
        .expect("replayed");
    assert!(again.replay);
    valid("recorded_mandate.response.json", &again);

    // Payment outcomes of every kind.
    let done = w.engine.execute_payment(&agent_p(), &pay).await.unwrap();
    assert!(matches!(done, PaymentOutcome::Done { .. }));
    valid("payment_outcome.response.json", &done);
    let replayed = w.engine.execute_payment(&agent_p(), &pay).await.unwrap();
    assert!(replayed.is_replay());
    valid("payment_outcome.response.json", &replayed);
    let mut blocked = w.execute("pay-blocked");
    blocked.checkout = examples::invalid_checkout();
    valid("execute_payment.request.json", &blocked);
    let refused_outcome = w
        .engine
        .execute_payment(&agent_p(), &blocked)
        .await
        .unwrap();
    assert!(matches!(refused_outcome, PaymentOutcome::Refused(_)));
    valid("payment_outcome.response.json", &refused_outcome);
    let attempt = done.attempt().expect("attempt").id.clone();

    let capture = agent_capture("cap-1", &attempt, None);
    valid("capture_payment.request.json", &capture);
    valid(
        "capture_payment.request.json",
        &agent_capture("cap-part", &attempt, Some(common::eur("10.00"))),
    );
    let captured = w.engine.capture(&agent_p(), &capture).await.unwrap();
    valid("payment_outcome.response.json", &captured);
    let refund = agent_refund("ref-1", &attempt, None);
    valid("refund_payment.request.json", &refund);
    valid(
        "payment_outcome.response.json",
        &w.engine.refund(&agent_p(), &refund).await.unwrap(),
    );
    let second = w
        .engine
        .execute_payment(&agent_p(), &w.execute("pay-2"))
        .await
        .unwrap();
    let second_id = second.attempt().expect("attempt").id.clone();
    let void = agent_void("void-1", &second_id);
    valid("void_payment.request.json", &void);
    let voided = w.engine.void(&agent_p(), &void).await.unwrap();
    assert!(matches!(
        voided,
        PaymentOutcome::Done { decision: None, .. }
    ));
    valid("payment_outcome.response.json", &voided);

    // Orders.
    let third = w
        .engine
        .execute_payment(&agent_p(), &w.execute("pay-3"))
        .await
        .unwrap();
    let third_id = third.attempt().expect("attempt").id.clone();
    let commit: CommitOrder = from_json(
        &json!({
            "key": "order-1",
            "attempt_id": third_id,
            "checkout": examples::valid_checkout(w.snapshot.id()),
        })
        .to_string(),
    )
    .expect("a commit command");
    valid("commit_order.request.json", &commit);
    let committed = w.engine.commit_order(&agent_p(), &commit).await.unwrap();
    assert!(matches!(committed, OrderOutcome::Committed { .. }));
    valid("order_outcome.response.json", &committed);
    let existing = w.engine.commit_order(&agent_p(), &commit).await.unwrap();
    assert!(matches!(existing, OrderOutcome::Existing { .. }));
    valid("order_outcome.response.json", &existing);
    if let OrderOutcome::Committed { order, .. } = &committed {
        valid("order.response.json", order);
    }

    // Mandate commands with their recorded results.
    let confirmation = confirmation_for(&examples::travel_backpack_document());
    let record: agent_mandate::engine::RecordConfirmation =
        from_json(&json!({"key": "confirm-1", "confirmation": confirmation}).to_string())
            .expect("a record command");
    valid("record_confirmation.request.json", &record);
    match w.engine.record_confirmation(&buyer_p(), &record).await {
        Ok(recorded) => valid("recorded_confirmation.response.json", &recorded),
        Err(e) => panic!("confirmation refused: {e}"),
    }
    let suspend = SetSuspension::new(
        key("suspend-1"),
        Party::Actor(id("agent_other")),
        true,
        id("test"),
    );
    valid("set_suspension.request.json", &suspend);
    let suspended = w
        .engine
        .set_suspension(&operator_p(), &suspend)
        .await
        .unwrap();
    valid("recorded_unit.response.json", &suspended);
    let revoke = ChangeMandate::new(
        key("revoke-2"),
        id("mandate_002"),
        LifecycleEvent::Revoke { reason: id("done") },
    );
    valid("change_mandate.request.json", &revoke);
    valid(
        "recorded_mandate.response.json",
        &w.engine.change_mandate(&buyer_p(), &revoke).await.unwrap(),
    );
    let credential = w
        .engine
        .store_credential(
            &buyer_p(),
            &key("card-2"),
            common::engine::card(&examples::agent().id, "pm_card_mastercard"),
        )
        .await
        .unwrap();
    let text = serde_json::to_string(&credential).unwrap();
    assert!(!text.contains("pm_card_mastercard"), "{text}");
    valid("recorded_stored_credential.response.json", &credential);

    // Reads, the decision, the dispute package, the trail report.
    w.engine.flush_audit().await.unwrap();
    valid(
        "payment_attempt.response.json",
        &w.engine.attempt(&buyer_p(), &attempt).await.unwrap(),
    );
    valid(
        "payment_attempts.response.json",
        &w.engine.open_attempts(&operator_p(), 10).await.unwrap(),
    );
    let mandate: Mandate = w.engine.mandate(&buyer_p(), w.mandate.id()).await.unwrap();
    valid("mandate.response.json", &mandate);
    valid(
        "chain_usage.response.json",
        &w.engine
            .chain_usage(&buyer_p(), w.mandate.id())
            .await
            .unwrap(),
    );
    valid(
        "audit_segment.response.json",
        &w.engine.audit_segment(&system_p(), 1, 50).await.unwrap(),
    );
    let evaluate: agent_mandate::engine::Evaluate = from_json(
        &json!({
            "request": pay.request,
            "snapshot": pay.snapshot,
            "checkout": pay.checkout,
            "credential": pay.credential,
        })
        .to_string(),
    )
    .expect("an evaluate command");
    valid("evaluate.request.json", &evaluate);
    valid(
        "authority_decision.response.json",
        &w.engine.evaluate(&agent_p(), &evaluate).await.unwrap(),
    );
    valid(
        "dispute_evidence.response.json",
        &w.engine.dispute_evidence(&attempt).await.unwrap(),
    );
    valid(
        "trail_report.response.json",
        &w.engine.verify_trail(1_000).await.unwrap(),
    );

    // The HTTP bodies of the service module.
    let not_permitted = w
        .engine
        .attempt(&Principal::Buyer(id("buyer_mallory")), &attempt)
        .await
        .unwrap_err();
    assert!(matches!(not_permitted, EngineError::NotFound { .. }));
    let api = agent_mandate::service::ApiError::from(not_permitted);
    valid("error.response.json", api.body());
    valid(
        "payment_answer.response.json",
        &agent_mandate::service::PaymentBody {
            attempt: done.attempt(),
            decision: done.decision(),
            replayed: false,
        },
    );
}

#[test]
fn the_fixtures_validate_and_broken_bodies_do_not() {
    let w = examples_command();
    let body = serde_json::to_value(&w).unwrap();
    valid("execute_payment.request.json", &body);
    let file = "execute_payment.request.json";

    let mut missing = body.clone();
    missing.as_object_mut().unwrap().remove("credential");
    refused::<ExecutePayment>(file, "no credential", missing);

    let mut null = body.clone();
    null["request"]["urgency"] = Value::Null;
    refused::<ExecutePayment>(file, "null for an optional field", null);

    let mut unknown = body.clone();
    unknown["capture_later"] = json!(true);
    refused::<ExecutePayment>(file, "an unknown top-level field", unknown);

    let mut nested = body.clone();
    nested["request"]["amount"]["cents"] = json!(14400);
    refused::<ExecutePayment>(file, "an unknown field in an amount", nested);

    let mut number = body.clone();
    number["request"]["amount"]["amount"] = json!(144.0);
    refused::<ExecutePayment>(file, "an amount as a JSON number", number);

    let mut spaced = body.clone();
    spaced["key"] = json!("pay 1");
    refused::<ExecutePayment>(file, "an idempotency key with a space", spaced);

    let mut long = body.clone();
    long["credential"] = json!("c".repeat(129));
    refused::<ExecutePayment>(file, "a 129-byte reference", long);

    let mut lower = body.clone();
    lower["request"]["amount"]["currency"] = json!("eur");
    refused::<ExecutePayment>(file, "a lower-case currency", lower);

    let mut digest = body.clone();
    digest["request"]["snapshot_id"] = json!("sha256:ABC");
    refused::<ExecutePayment>(file, "a malformed snapshot id", digest);

    let mut time = body;
    time["snapshot"]["created_at"] = json!("yesterday");
    refused::<ExecutePayment>(file, "a time that is not RFC 3339", time);

    // The examples' evaluation documents hold a request and a snapshot the schemas accept.
    for path in ["evaluate_allowed.json", "evaluate_blocked.json"] {
        let text = std::fs::read_to_string(
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("examples/data")
                .join(path),
        )
        .expect("fixture");
        let doc: Value = serde_json::from_str(&text).unwrap();
        let evaluate = json!({
            "request": doc["request"],
            "snapshot": doc["snapshot"],
            "checkout": doc["checkout"],
        });
        valid("evaluate.request.json", &evaluate);
        from_json::<agent_mandate::engine::Evaluate>(&evaluate.to_string())
            .expect("the reader agrees");
    }
}

#[test]
fn outcomes_missing_their_tag_or_a_required_field_fail() {
    let file = "payment_outcome.response.json";
    let attempt_free = json!({"outcome": "refused"});
    assert!(!errors(file, &attempt_free).is_empty());
    assert!(!errors(file, &json!({"outcome": "paid", "attempt": {}})).is_empty());
    let order = "order_outcome.response.json";
    assert!(!errors(order, &json!({"outcome": "existing"})).is_empty());
    assert!(!errors("recorded_unit.response.json", &json!({"replay": false})).is_empty());
    assert!(errors(
        "recorded_unit.response.json",
        &json!({"value": null, "replay": false})
    )
    .is_empty());
}

/// The Travel Backpack execute command, as a client sends it (built from its JSON).
fn examples_command() -> ExecutePayment {
    let snapshot = examples::travel_backpack_snapshot();
    from_json(
        &json!({
            "key": "pay-1",
            "request": examples::authorize_request(&snapshot),
            "snapshot": snapshot,
            "checkout": examples::valid_checkout(snapshot.id()),
            "credential": "cred_1",
        })
        .to_string(),
    )
    .expect("the example command")
}
