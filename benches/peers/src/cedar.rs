//! Cedar (`cedar-policy`): the shared rules as one `permit` and one `forbid`.
//!
//! Every mandate of every case is a `Mandate` entity; an ancestor is reached through the
//! `parent` attribute (three levels are unrolled, Cedar has no loops). Amounts are `Long`
//! minor units, times are `Long` Unix seconds. Entities and policies are built once; a decision
//! builds the request's `Context` and calls `is_authorized`.

use std::str::FromStr;

use cedar_policy::{
    Authorizer, Context, Decision, Entities, EntityUid, PolicySet, Request, Response,
    RestrictedExpression,
};
use serde_json::{json, Value as Json};

use crate::case::{Case, Level};
use crate::SetupError;

/// The spending rules (`permit`) and revocation anywhere in the chain (`forbid`).
pub const POLICIES: &str = r#"
@id("spending-rules")
permit (principal, action == Action::"authorize", resource is Mandate)
when {
  resource.actor == principal &&
  resource.status == "active" &&
  resource.valid_from <= context.now && context.now < resource.expires_at &&
  resource.currency == context.currency &&
  resource.merchants.contains(context.merchant) &&
  resource.mccs.contains(context.mcc) &&
  context.amount <= resource.per_tx &&
  resource.window_used + context.amount <= resource.window_cap &&
  (!(resource has parent) ||
    (resource.parent.status == "active" &&
     resource.parent.valid_from <= context.now && context.now < resource.parent.expires_at &&
     resource.parent.used + context.amount <= resource.parent.cap &&
     (!(resource.parent has parent) ||
       (resource.parent.parent.status == "active" &&
        resource.parent.parent.valid_from <= context.now &&
        context.now < resource.parent.parent.expires_at &&
        resource.parent.parent.used + context.amount <= resource.parent.parent.cap &&
        (!(resource.parent.parent has parent) ||
          (resource.parent.parent.parent.status == "active" &&
           resource.parent.parent.parent.valid_from <= context.now &&
           context.now < resource.parent.parent.parent.expires_at &&
           resource.parent.parent.parent.used + context.amount <= resource.parent.parent.parent.cap &&
           !(resource.parent.parent.parent has parent)))))))
};

@id("revoked-anywhere")
forbid (principal, action, resource is Mandate)
when {
  resource.status == "revoked" ||
  (resource has parent &&
    (resource.parent.status == "revoked" ||
     (resource.parent has parent &&
       (resource.parent.parent.status == "revoked" ||
        (resource.parent.parent has parent &&
          resource.parent.parent.parent.status == "revoked")))))
};
"#;

/// One request in Cedar's terms, precomputed except for the context.
#[derive(Debug, Clone)]
pub struct CedarRequest {
    principal: EntityUid,
    resource: EntityUid,
    amount: i64,
    currency: &'static str,
    merchant: String,
    mcc: String,
    now: i64,
}

/// Policies, entities and the authorizer, built once for a set of cases.
#[derive(Debug)]
pub struct CedarEngine {
    authorizer: Authorizer,
    policies: PolicySet,
    entities: Entities,
    action: EntityUid,
}

fn uid(kind: &str, id: &str) -> Result<EntityUid, SetupError> {
    Ok(EntityUid::from_str(&format!("{kind}::{}", Json::from(id)))?)
}

fn entity_ref(kind: &str, id: &str) -> Json {
    json!({ "__entity": { "type": kind, "id": id } })
}

fn entity(level: &Level, parent: Option<&Level>) -> Json {
    let mut attrs = json!({
        "actor": entity_ref(level.actor.kind.as_str(), &level.actor.id),
        "status": level.status.as_str(),
        "valid_from": level.valid_from,
        "expires_at": level.expires_at,
        "currency": level.currency,
        "merchants": level.merchants,
        "mccs": level.mccs,
        "per_tx": level.per_tx,
    });
    let obj = attrs
        .as_object_mut()
        .expect("built as an object just above");
    if let Some(w) = level.window {
        obj.insert("window_cap".into(), w.cap.into());
        obj.insert("window_used".into(), w.used.into());
    }
    if let Some(b) = level.lifetime {
        obj.insert("cap".into(), b.cap.into());
        obj.insert("used".into(), b.used.into());
    }
    if let Some(p) = parent {
        obj.insert("parent".into(), entity_ref("Mandate", &p.id));
    }
    json!({ "uid": { "type": "Mandate", "id": level.id }, "attrs": attrs, "parents": [] })
}

impl CedarEngine {
    /// Parses the policies and loads every mandate of `cases` as an entity.
    pub fn new(cases: &[Case]) -> Result<(CedarEngine, Vec<CedarRequest>), SetupError> {
        let policies = PolicySet::from_str(POLICIES)?;
        let mut entities = Vec::new();
        let mut requests = Vec::with_capacity(cases.len());
        for case in cases {
            for (i, level) in case.chain.iter().enumerate() {
                let parent = i.checked_sub(1).map(|p| &case.chain[p]);
                entities.push(entity(level, parent));
            }
            requests.push(CedarRequest {
                principal: uid(case.actor.kind.as_str(), &case.actor.id)?,
                resource: uid("Mandate", &case.leaf().id)?,
                amount: case.amount,
                currency: case.currency,
                merchant: case.merchant.clone(),
                mcc: case.mcc.clone(),
                now: case.now,
            });
        }
        let entities = Entities::from_json_value(Json::Array(entities), None)?;
        let engine = CedarEngine {
            authorizer: Authorizer::new(),
            policies,
            entities,
            action: uid("Action", "authorize")?,
        };
        Ok((engine, requests))
    }

    /// Builds the context and asks the authorizer (the timed part). `None` when Cedar refuses
    /// to build the context or the request, which these inputs never cause.
    pub fn decide(&self, r: &CedarRequest) -> Option<Response> {
        let context = Context::from_pairs([
            (
                "amount".to_owned(),
                RestrictedExpression::new_long(r.amount),
            ),
            (
                "currency".to_owned(),
                RestrictedExpression::new_string(r.currency.to_owned()),
            ),
            (
                "merchant".to_owned(),
                RestrictedExpression::new_string(r.merchant.clone()),
            ),
            (
                "mcc".to_owned(),
                RestrictedExpression::new_string(r.mcc.clone()),
            ),
            ("now".to_owned(), RestrictedExpression::new_long(r.now)),
        ])
        .ok()?;
        let request = Request::new(
            r.principal.clone(),
            self.action.clone(),
            r.resource.clone(),
            context,
            None,
        )
        .ok()?;
        Some(
            self.authorizer
                .is_authorized(&request, &self.policies, &self.entities),
        )
    }

    /// Whether Cedar allows the request.
    pub fn allows(&self, r: &CedarRequest) -> bool {
        self.decide(r)
            .is_some_and(|response| response.decision() == Decision::Allow)
    }

    /// Evaluation errors Cedar met (a policy that errors is skipped, which denies silently);
    /// `usize::MAX` when the request could not be built.
    pub fn errors(&self, r: &CedarRequest) -> usize {
        self.decide(r).map_or(usize::MAX, |response| {
            response.diagnostics().errors().count()
        })
    }
}
