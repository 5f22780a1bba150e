//! JSON Schemas (draft 2020-12) of the request and response bodies, generated from the types
//! (feature `json-schema`, with [schemars](https://docs.rs/schemars)).
//!
//! Every engine command implements `JsonSchema` and so does everything the engine answers:
//! outcomes, recorded results, reads, the authority decision, the dispute package and the
//! trail report. [`schemas`] lists them, each under the file name the repository commits it
//! as (`schemas/execute_payment.request.json`, `schemas/payment_outcome.response.json`...),
//! so clients in other languages read the shapes from one place.
//!
//! What the schemas say is what serde does:
//!
//! - A request schema describes what [`from_json`](crate::json::from_json) accepts (serde's
//!   deserialize side); a response schema what the engine's values serialize to. They differ
//!   where serde does: a field with a default is optional in a request and always present in
//!   a response.
//! - An optional field is absent or has a value, never `null`: `from_json` refuses `null` for
//!   an optional field, and no response writes one (the schemas strip `null` from every
//!   property that is not required).
//! - Objects refuse unknown fields (`additionalProperties: false`) where the type does.
//! - Amounts are strings (`{"amount": "129.00", "currency": "EUR"}`), never JSON numbers;
//!   identifiers, digests and free text carry their real constraints (pattern, length).
//!   Lengths are bounded in bytes by the crate and in characters by JSON Schema: `maxLength`
//!   is the byte bound, which a non-ASCII value can pass and still be refused.
//!
//! No secret has a schema or a `Serialize`: a stored credential shows its reference and
//! display fields only.

use std::borrow::Cow;

use schemars::generate::SchemaSettings;
use schemars::transform::{transform_subschemas, Transform};
use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde_json::Value;

use crate::domain::{
    ActionSet, ActorId, AttemptId, AuditHash, AuthorityDecision, BuyerId, CartId, ChainedEvent,
    ChannelRef, CheckoutId, Confirmation, ConfirmationId, ContentDigest, CredentialRef, Currency,
    EvidenceRef, IdempotencyKey, IntentHash, MandateId, MarketplaceId, Mcc, MerchantId, Money,
    OrderId, PaymentAction, PaymentAttempt, ProviderKey, ProviderRef, Region, RequestDigest,
    SellerId, Sku, SnapshotId, TaskId, Text, UpstreamCode, MAX_ID_LEN, MAX_TEXT_LEN,
};
use crate::domain::{Mandate, Order};
use crate::engine::{
    CapturePayment, ChainUsage, ChangeMandate, CommitOrder, CreateMandate, DeriveMandate,
    DisputeEvidence, Evaluate, ExecutePayment, OrderOutcome, PaymentOutcome, RecordConfirmation,
    Recorded, RefundPayment, SetSuspension, TrailReport, VoidPayment,
};
use crate::ports::StoredCredential;

/// Characters an identifier may not hold: white space, control characters, and those that
/// print as nothing or reorder what follows (see the identifier types).
const ID_FORBIDDEN: &str = r"\s\u0000-\u001F\u007F-\u009F\u00AD\u061C\u180E\u200B-\u200F\u202A-\u202E\u2060-\u2064\u2066-\u206F\uFEFF";

/// Control characters (refused in free text).
const CONTROL: &str = r"\u0000-\u001F\u007F-\u009F";

fn id_schema(description: &str) -> Schema {
    json_schema!({
        "type": "string",
        "description": format!(
            "{description} Non-empty, at most {MAX_ID_LEN} bytes (UTF-8), no white space, control, invisible or bidi characters."
        ),
        "minLength": 1,
        "maxLength": MAX_ID_LEN,
        "pattern": format!("^[^{ID_FORBIDDEN}]+$"),
    })
}

macro_rules! id_schemas {
    ($($t:ident => $doc:literal,)*) => {
        $(
            impl JsonSchema for $t {
                fn schema_name() -> Cow<'static, str> {
                    Cow::Borrowed(stringify!($t))
                }

                fn schema_id() -> Cow<'static, str> {
                    Cow::Borrowed(concat!("agent_mandate::domain::", stringify!($t)))
                }

                fn json_schema(_: &mut SchemaGenerator) -> Schema {
                    id_schema($doc)
                }
            }
        )*
    };
}

id_schemas! {
    BuyerId => "The buyer whose funds or instrument are used.",
    ActorId => "A party that requests actions: a human, an agent or a system process.",
    MandateId => "A mandate.",
    MerchantId => "A merchant of record.",
    MarketplaceId => "A marketplace operator.",
    SellerId => "A seller on a marketplace.",
    Sku => "A stock-keeping unit.",
    CheckoutId => "A checkout session of the upstream checkout service.",
    CartId => "A mutable cart container.",
    ConfirmationId => "A recorded confirmation event.",
    EvidenceRef => "A reference to evidence kept elsewhere.",
    UpstreamCode => "A code of an upstream system (`INVENTORY_STALE`).",
    ChannelRef => "The channel a confirmation came through (`push:device_42`).",
    TaskId => "The agent task that produced a purchase intent.",
    AttemptId => "A payment attempt (derived by the engine from the actor and the idempotency key).",
    OrderId => "A committed order.",
    IdempotencyKey => "An idempotency key chosen by the caller, scoped to the actor and the operation.",
    CredentialRef => "An opaque reference to a credential held by the vault, never the credential itself.",
    ProviderRef => "The payment service provider's reference for a payment.",
    ProviderKey => "The idempotency key sent to the payment service provider.",
    Region => "A region code of the checkout context (`EU`, `US-CA`).",
}

macro_rules! digest_schemas {
    ($($t:ident => $doc:literal,)*) => {
        $(
            impl JsonSchema for $t {
                fn schema_name() -> Cow<'static, str> {
                    Cow::Borrowed(stringify!($t))
                }

                fn schema_id() -> Cow<'static, str> {
                    Cow::Borrowed(concat!("agent_mandate::domain::", stringify!($t)))
                }

                fn json_schema(_: &mut SchemaGenerator) -> Schema {
                    json_schema!({
                        "type": "string",
                        "description": concat!($doc, " `sha256:` and 64 lower-case hex digits."),
                        "pattern": "^sha256:[0-9a-f]{64}$",
                    })
                }
            }
        )*
    };
}

digest_schemas! {
    SnapshotId => "The id of a cart snapshot: SHA-256 over the JCS form of its content.",
    IntentHash => "The hash of a purchase intent.",
    RequestDigest => "The digest of a payment request.",
    ContentDigest => "The digest of a JSON value's canonical (JCS) form.",
}

impl JsonSchema for Mcc {
    fn schema_name() -> Cow<'static, str> {
        Cow::Borrowed("Mcc")
    }

    fn schema_id() -> Cow<'static, str> {
        Cow::Borrowed("agent_mandate::domain::Mcc")
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "description": "A merchant category code: exactly four ASCII digits.",
            "pattern": "^[0-9]{4}$",
        })
    }
}

impl JsonSchema for Text {
    fn schema_name() -> Cow<'static, str> {
        Cow::Borrowed("Text")
    }

    fn schema_id() -> Cow<'static, str> {
        Cow::Borrowed("agent_mandate::domain::Text")
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "description": format!(
                "Free text: not blank, at most {MAX_TEXT_LEN} bytes (UTF-8), no control characters."
            ),
            "minLength": 1,
            "maxLength": MAX_TEXT_LEN,
            "pattern": format!("^[^{CONTROL}]*[^\\s{CONTROL}][^{CONTROL}]*$"),
        })
    }
}

impl JsonSchema for Currency {
    fn schema_name() -> Cow<'static, str> {
        Cow::Borrowed("Currency")
    }

    fn schema_id() -> Cow<'static, str> {
        Cow::Borrowed("agent_mandate::domain::Currency")
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "description": "An ISO 4217 alphabetic code of a payment currency, upper case (`EUR`). Fund, special and superseded codes and codes without a minor unit of at most 3 digits are refused.",
            "pattern": "^[A-Z]{3}$",
        })
    }
}

impl JsonSchema for Money {
    fn schema_name() -> Cow<'static, str> {
        Cow::Borrowed("Money")
    }

    fn schema_id() -> Cow<'static, str> {
        Cow::Borrowed("agent_mandate::domain::Money")
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let amount = if generator.contract().is_serialize() {
            json_schema!({
                "type": "string",
                "description": "A non-negative decimal string with exactly the currency's number of decimals (`129.00` EUR, `5` JPY, `1.250` BHD). Never a JSON number.",
                "pattern": "^(0|[1-9][0-9]*)(\\.[0-9]+)?$",
            })
        } else {
            json_schema!({
                "type": "string",
                "description": "A non-negative decimal string with at most the currency's number of decimals (`129`, `129.5`, `129.00` EUR). Never a JSON number. At most 10^15 major units.",
                "pattern": "^[0-9]+(\\.[0-9]+)?$",
                "maxLength": 40,
            })
        };
        json_schema!({
            "type": "object",
            "description": "An amount in a currency.",
            "properties": {
                "amount": amount,
                "currency": generator.subschema_for::<Currency>(),
            },
            "required": ["amount", "currency"],
            "additionalProperties": false,
        })
    }
}

impl JsonSchema for AuditHash {
    fn schema_name() -> Cow<'static, str> {
        Cow::Borrowed("AuditHash")
    }

    fn schema_id() -> Cow<'static, str> {
        Cow::Borrowed("agent_mandate::domain::AuditHash")
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let pattern = if generator.contract().is_serialize() {
            "^[0-9a-f]{64}$"
        } else {
            "^[0-9a-fA-F]{64}$"
        };
        json_schema!({
            "type": "string",
            "description": "A SHA-256 of the audit chain: 64 hex digits (written in lower case).",
            "pattern": pattern,
        })
    }
}

impl JsonSchema for ActionSet {
    fn schema_name() -> Cow<'static, str> {
        Cow::Borrowed("ActionSet")
    }

    fn schema_id() -> Cow<'static, str> {
        Cow::Borrowed("agent_mandate::domain::ActionSet")
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "array",
            "description": "A set of payment actions: each at most once.",
            "items": generator.subschema_for::<PaymentAction>(),
            "uniqueItems": true,
        })
    }
}

/// Whether a schema describes a request body (what is read) or a response body (what is
/// written).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Direction {
    /// Read from a client: serde's deserialize side, [`from_json`](crate::json::from_json).
    Request,
    /// Written to a client: serde's serialize side.
    Response,
}

/// One schema of [`schemas`]: the file it is committed as, the direction and the schema.
#[derive(Debug, Clone)]
pub struct NamedSchema {
    /// The file name under `schemas/` (`execute_payment.request.json`).
    pub file: String,
    /// Request or response.
    pub direction: Direction,
    /// The schema (draft 2020-12, definitions under `$defs`).
    pub schema: Schema,
}

/// Strips `null` from every property that is not required: absent is the one spelling of
/// "no value" (`from_json` refuses `null` for an optional field; no response writes one).
#[derive(Debug, Clone, Copy)]
struct AbsentIsNotNull;

impl Transform for AbsentIsNotNull {
    fn transform(&mut self, schema: &mut Schema) {
        transform_subschemas(self, schema);
        let Some(obj) = schema.as_object_mut() else {
            return;
        };
        let required: Vec<String> = obj
            .get("required")
            .and_then(Value::as_array)
            .map(|r| {
                r.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        let Some(Value::Object(properties)) = obj.get_mut("properties") else {
            return;
        };
        for (name, property) in properties.iter_mut() {
            if !required.contains(name) {
                strip_null(property);
            }
        }
    }
}

fn is_null_schema(v: &Value) -> bool {
    v.get("type").and_then(Value::as_str) == Some("null")
}

fn strip_null(property: &mut Value) {
    let Some(obj) = property.as_object_mut() else {
        return;
    };
    if obj.get("default").is_some_and(Value::is_null) {
        obj.remove("default");
    }
    if let Some(Value::Array(types)) = obj.get_mut("type") {
        types.retain(|t| t.as_str() != Some("null"));
        if types.len() == 1 {
            let only = types.remove(0);
            obj.insert("type".into(), only);
        }
    }
    let single = match obj.get("anyOf") {
        Some(Value::Array(any)) if any.iter().any(is_null_schema) => {
            let rest: Vec<Value> = any.iter().filter(|v| !is_null_schema(v)).cloned().collect();
            Some(rest)
        }
        _ => None,
    };
    if let Some(mut rest) = single {
        if rest.len() == 1 {
            obj.remove("anyOf");
            if let Value::Object(inner) = rest.remove(0) {
                for (k, v) in inner {
                    obj.entry(k).or_insert(v);
                }
            }
        } else {
            obj.insert("anyOf".into(), Value::Array(rest));
        }
    }
}

fn settings(direction: Direction) -> SchemaSettings {
    let settings = SchemaSettings::draft2020_12().with_transform(AbsentIsNotNull);
    match direction {
        Direction::Request => settings.for_deserialize(),
        Direction::Response => settings.for_serialize(),
    }
}

/// The schema of `T` in one direction.
pub fn schema_for<T: JsonSchema>(direction: Direction) -> Schema {
    settings(direction)
        .into_generator()
        .into_root_schema_for::<T>()
}

fn named<T: JsonSchema>(name: &str, direction: Direction) -> NamedSchema {
    let suffix = match direction {
        Direction::Request => "request",
        Direction::Response => "response",
    };
    NamedSchema {
        file: format!("{name}.{suffix}.json"),
        direction,
        schema: schema_for::<T>(direction),
    }
}

/// Every request and response body, each under its file name (sorted by it).
///
/// Requests: the engine commands. Responses: what the engine methods answer (the recorded
/// results of the mandate commands, the payment and order outcomes, the decision, the reads,
/// the dispute package, the trail report) and, with the feature `axum`, the bodies of
/// [`crate::service`] (the error body and the payment answer).
pub fn schemas() -> Vec<NamedSchema> {
    use Direction::{Request, Response};
    #[allow(unused_mut, reason = "extended by the axum feature")]
    let mut all = vec![
        named::<CreateMandate>("create_mandate", Request),
        named::<DeriveMandate>("derive_mandate", Request),
        named::<ChangeMandate>("change_mandate", Request),
        named::<SetSuspension>("set_suspension", Request),
        named::<RecordConfirmation>("record_confirmation", Request),
        named::<Evaluate>("evaluate", Request),
        named::<ExecutePayment>("execute_payment", Request),
        named::<CapturePayment>("capture_payment", Request),
        named::<VoidPayment>("void_payment", Request),
        named::<RefundPayment>("refund_payment", Request),
        named::<CommitOrder>("commit_order", Request),
        named::<Recorded<Mandate>>("recorded_mandate", Response),
        named::<Recorded<()>>("recorded_unit", Response),
        named::<Recorded<Confirmation>>("recorded_confirmation", Response),
        named::<Recorded<StoredCredential>>("recorded_stored_credential", Response),
        named::<AuthorityDecision>("authority_decision", Response),
        named::<PaymentOutcome>("payment_outcome", Response),
        named::<OrderOutcome>("order_outcome", Response),
        named::<PaymentAttempt>("payment_attempt", Response),
        named::<Vec<PaymentAttempt>>("payment_attempts", Response),
        named::<Mandate>("mandate", Response),
        named::<Order>("order", Response),
        named::<ChainUsage>("chain_usage", Response),
        named::<Vec<ChainedEvent>>("audit_segment", Response),
        named::<DisputeEvidence>("dispute_evidence", Response),
        named::<TrailReport>("trail_report", Response),
    ];
    #[cfg(feature = "axum")]
    {
        all.push(named::<crate::service::ErrorBody>("error", Response));
        all.push(named::<crate::service::PaymentBody<'static>>(
            "payment_answer",
            Response,
        ));
    }
    all.sort_by(|a, b| a.file.cmp(&b.file));
    all
}

/// The text a schema is committed as: pretty-printed JSON (keys in the generator's order)
/// and a final newline.
pub fn render(schema: &Schema) -> String {
    let mut text = serde_json::to_string_pretty(schema).unwrap_or_default();
    text.push('\n');
    text
}

/// Writes every schema of [`schemas`] into `dir` (created if missing) and removes the other
/// `*.json` files there; returns how many were written.
pub fn write_all(dir: &std::path::Path) -> std::io::Result<usize> {
    std::fs::create_dir_all(dir)?;
    let all = schemas();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let stale = path.extension().is_some_and(|e| e == "json")
            && !all
                .iter()
                .any(|s| path.file_name().is_some_and(|n| *n == *s.file));
        if stale {
            std::fs::remove_file(&path)?;
        }
    }
    for s in &all {
        std::fs::write(dir.join(&s.file), render(&s.schema))?;
    }
    Ok(all.len())
}
