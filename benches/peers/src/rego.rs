//! Rego (`regorus`): the shared rules as one `allow` rule over `data.mandates`.
//!
//! Every mandate of every case is an object of `data.mandates`, keyed by id; the leaf lists its
//! ancestors (nearest first) and `every` walks them. Amounts are integer minor units, times
//! Unix seconds. The policy and data are loaded and prepared once; a decision builds the
//! request's input `Value`, then calls `set_input` and `eval_rule`.

use regorus::{Engine, Value};
use serde_json::{json, Map, Value as Json};

use crate::case::{Case, Level};
use crate::SetupError;

/// The rule evaluated.
pub const RULE: &str = "data.mandate.allow";

/// The spending rules; revocation anywhere in the chain denies.
pub const POLICY: &str = r#"
package mandate

default allow := false

allow if {
	m := data.mandates[input.mandate]
	m.actor_kind == input.actor_kind
	m.actor_id == input.actor_id
	in_force(m)
	m.currency == input.currency
	input.merchant in m.merchants
	input.mcc in m.mccs
	input.amount <= m.per_tx
	m.window_used + input.amount <= m.window_cap
	every id in m.ancestors {
		a := data.mandates[id]
		in_force(a)
		a.used + input.amount <= a.cap
	}
	not revoked(m)
}

in_force(m) if {
	m.status == "active"
	m.valid_from <= input.now
	input.now < m.expires_at
}

revoked(m) if m.status == "revoked"

revoked(m) if {
	some id in m.ancestors
	data.mandates[id].status == "revoked"
}
"#;

const KEYS: [&str; 8] = [
    "mandate",
    "actor_kind",
    "actor_id",
    "amount",
    "currency",
    "merchant",
    "mcc",
    "now",
];

/// One request in Rego's terms, as plain values; the input `Value` is built per decision.
#[derive(Debug, Clone)]
pub struct RegoRequest {
    mandate: String,
    actor_kind: &'static str,
    actor_id: String,
    amount: i64,
    currency: &'static str,
    merchant: String,
    mcc: String,
    now: i64,
}

/// A prepared engine: policy parsed and analysed, data loaded, one evaluation done.
#[derive(Debug)]
pub struct RegoEngine {
    engine: Engine,
    keys: [Value; 8],
}

fn mandate(level: &Level, ancestors: &[&Level]) -> Json {
    let mut m = Map::new();
    m.insert("actor_kind".into(), level.actor.kind.as_str().into());
    m.insert("actor_id".into(), level.actor.id.clone().into());
    m.insert("status".into(), level.status.as_str().into());
    m.insert("valid_from".into(), level.valid_from.into());
    m.insert("expires_at".into(), level.expires_at.into());
    m.insert("currency".into(), level.currency.into());
    m.insert("merchants".into(), json!(level.merchants));
    m.insert("mccs".into(), json!(level.mccs));
    m.insert("per_tx".into(), level.per_tx.into());
    if let Some(w) = level.window {
        m.insert("window_cap".into(), w.cap.into());
        m.insert("window_used".into(), w.used.into());
    }
    if let Some(b) = level.lifetime {
        m.insert("cap".into(), b.cap.into());
        m.insert("used".into(), b.used.into());
    }
    let ids: Vec<&str> = ancestors.iter().map(|a| a.id.as_str()).collect();
    m.insert("ancestors".into(), json!(ids));
    Json::Object(m)
}

impl RegoEngine {
    /// Loads the policy and every mandate of `cases`, and prepares the engine.
    pub fn new(cases: &[Case]) -> Result<(RegoEngine, Vec<RegoRequest>), SetupError> {
        let mut engine = Engine::new();
        engine.add_policy("mandate.rego".to_owned(), POLICY.to_owned())?;
        let mut mandates = Map::new();
        let mut requests = Vec::with_capacity(cases.len());
        for case in cases {
            for (i, level) in case.chain.iter().enumerate() {
                let ancestors: Vec<&Level> = case.chain[..i].iter().rev().collect();
                mandates.insert(level.id.clone(), mandate(level, &ancestors));
            }
            requests.push(RegoRequest {
                mandate: case.leaf().id.clone(),
                actor_kind: case.actor.kind.as_str(),
                actor_id: case.actor.id.clone(),
                amount: case.amount,
                currency: case.currency,
                merchant: case.merchant.clone(),
                mcc: case.mcc.clone(),
                now: case.now,
            });
        }
        let data = json!({ "mandates": Json::Object(mandates) });
        engine.add_data(Value::from_json_str(&data.to_string())?)?;
        let mut prepared = RegoEngine {
            engine,
            keys: KEYS.map(Value::from),
        };
        // The first evaluation analyses and schedules the policy; do it outside any timing.
        if let Some(first) = requests.first() {
            prepared.eval(first)?;
        }
        Ok((prepared, requests))
    }

    fn eval(&mut self, r: &RegoRequest) -> Result<Value, SetupError> {
        let values = [
            Value::from(r.mandate.as_str()),
            Value::from(r.actor_kind),
            Value::from(r.actor_id.as_str()),
            Value::from(r.amount),
            Value::from(r.currency),
            Value::from(r.merchant.as_str()),
            Value::from(r.mcc.as_str()),
            Value::from(r.now),
        ];
        let input: regorus::value::Object = self.keys.iter().cloned().zip(values).collect();
        self.engine.set_input(Value::from(input));
        Ok(self.engine.eval_rule(RULE.to_owned())?)
    }

    /// Builds the input, sets it and evaluates `allow` (the timed part): `Some(true)` allows,
    /// `Some(false)` denies, `None` is an evaluation error (which these inputs never cause).
    pub fn decide(&mut self, r: &RegoRequest) -> Option<bool> {
        match self.eval(r) {
            Ok(Value::Bool(b)) => Some(b),
            _ => None,
        }
    }

    /// Whether Rego allows the request (an error denies).
    pub fn allows(&mut self, r: &RegoRequest) -> bool {
        self.decide(r) == Some(true)
    }
}
