//! Principals: who is asking, as the host's authentication established it.
//!
//! The crate never learns who a caller is from what the caller says. Every engine command takes
//! a [`Principal`] as a separate argument, which the host constructs after authenticating the
//! request (a session cookie, an OAuth token, an mTLS certificate, a signed agent credential).
//! No command body carries one, and `Principal` has no `Deserialize` implementation, so it
//! cannot be read from a request body by mistake. The engine then compares the principal with
//! the identities recorded on the mandate and the attempt: a confirmation counts only from the
//! mandate's buyer, a payment only from the mandate's actor, a settlement only from the
//! attempt's actor, the buyer or an operator.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};
use sha2::{Digest as _, Sha256};

use super::ids::{ActorId, BuyerId, MAX_ID_LEN};
use super::mandate::{Actor, ActorKind};

/// An authenticated caller. Construct it only from the result of your authentication layer.
///
/// | principal | is | may (beyond what the mandate's actor may) |
/// |---|---|---|
/// | `Buyer(b)` | the person whose money it is | confirm, reject, derive, revoke and record confirmations for mandates of buyer `b`; void, refund and commit orders of payments under them; turn the kill switch on for themself |
/// | `Agent(a)` | an AI agent | act as the actor `a` (kind `agent`) of a mandate: pay, capture, void, refund, commit, derive children of its own mandates, revoke what it holds or delegated |
/// | `Operator(o)` | support or risk staff the host granted the operator role | revoke, void, refund, commit, suspend any party, expire and mark used; never confirms for a buyer and never spends |
/// | `System(s)` | a process of the host | act as the actor `s` (kind `system`); create root mandates on a buyer's behalf; revoke, expire, mark used; operate the kill switch |
/// | `Provider(p)` | an outside payment provider a scoped token names as its redeemer | redeem the tokens that name `p` (`tokens::TokenService::redeem`, feature `tokens`); nothing else: the engine refuses it every command, read and revocation |
///
/// A provider is not the host: it gets `Provider`, never `System`, whose holder the engine
/// trusts to create mandates for any buyer and to revoke any holder's credentials.
///
/// A mandate whose actor is of kind `human` is acted on by its buyer's principal: a person is
/// always the buyer of the mandates they spend under.
#[derive(Clone, PartialEq, Eq, Hash, Serialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
#[serde(tag = "kind", content = "id", rename_all = "snake_case")]
pub enum Principal {
    /// The buyer: the person whose money the mandates spend.
    Buyer(BuyerId),
    /// An AI agent, acting as the actor of kind `agent` with this id.
    Agent(ActorId),
    /// An operator: a person or service the host explicitly granted the operator role.
    Operator(ActorId),
    /// A process of the host, acting as the actor of kind `system` with this id.
    System(ActorId),
    /// An outside payment provider, by the id scoped tokens name as their redeemer. It may
    /// only redeem those tokens: it acts as no actor, is no buyer, operator or system.
    Provider(ActorId),
}

impl Principal {
    /// The stable name of its kind: `buyer`, `agent`, `operator`, `system` or `provider`.
    pub fn kind(&self) -> &'static str {
        match self {
            Principal::Buyer(_) => "buyer",
            Principal::Agent(_) => "agent",
            Principal::Operator(_) => "operator",
            Principal::System(_) => "system",
            Principal::Provider(_) => "provider",
        }
    }

    /// Its id text.
    pub fn id(&self) -> &str {
        match self {
            Principal::Buyer(b) => b.as_str(),
            Principal::Agent(a)
            | Principal::Operator(a)
            | Principal::System(a)
            | Principal::Provider(a) => a.as_str(),
        }
    }

    /// Whether it acts as `actor` under a mandate (or request) of buyer `buyer`: an agent or
    /// system principal as the actor of its kind and id, the buyer as a `human` actor of its
    /// own mandates. An operator or a provider never acts as an actor: it cannot spend.
    pub fn acts_as(&self, actor: &Actor, buyer: &BuyerId) -> bool {
        match self {
            Principal::Agent(id) => actor.kind == ActorKind::Agent && actor.id == *id,
            Principal::System(id) => actor.kind == ActorKind::System && actor.id == *id,
            Principal::Buyer(b) => actor.kind == ActorKind::Human && b == buyer,
            Principal::Operator(_) | Principal::Provider(_) => false,
        }
    }

    /// Whether it is the buyer `buyer`.
    pub fn is_buyer(&self, buyer: &BuyerId) -> bool {
        matches!(self, Principal::Buyer(b) if b == buyer)
    }

    /// Whether it is an operator.
    pub fn is_operator(&self) -> bool {
        matches!(self, Principal::Operator(_))
    }

    /// Whether it is a system process.
    pub fn is_system(&self) -> bool {
        matches!(self, Principal::System(_))
    }

    /// Whether it is the payment provider `provider` (a token's redeemer).
    pub fn is_provider(&self, provider: &ActorId) -> bool {
        matches!(self, Principal::Provider(p) if p == provider)
    }

    /// The id its idempotency records are kept under: `kind:id`, or `kind#` and the SHA-256 of
    /// the id when that would be longer than an id may be. Distinct principals never share one
    /// (a buyer and an agent with the same id text included).
    pub fn scope_id(&self) -> ActorId {
        let readable = format!("{}:{}", self.kind(), self.id());
        let text = if readable.len() <= MAX_ID_LEN {
            readable
        } else {
            format!(
                "{}#{}",
                self.kind(),
                hex::encode(Sha256::digest(self.id().as_bytes()))
            )
        };
        ActorId::derived(text)
    }
}

impl fmt::Debug for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Principal({}:{})", self.kind(), self.id())
    }
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.kind(), self.id())
    }
}

/// The recorded form of a principal, as audit events read back. Only audit bodies are read
/// this way: no command accepts a principal from its body.
#[derive(Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
#[serde(tag = "kind", content = "id", rename_all = "snake_case")]
#[serde(deny_unknown_fields)]
enum Recorded {
    Buyer(BuyerId),
    Agent(ActorId),
    Operator(ActorId),
    System(ActorId),
    Provider(ActorId),
}

impl From<Recorded> for Principal {
    fn from(r: Recorded) -> Principal {
        match r {
            Recorded::Buyer(b) => Principal::Buyer(b),
            Recorded::Agent(a) => Principal::Agent(a),
            Recorded::Operator(a) => Principal::Operator(a),
            Recorded::System(a) => Principal::System(a),
            Recorded::Provider(a) => Principal::Provider(a),
        }
    }
}

/// Reads a principal recorded in an audit event body.
pub(crate) fn recorded<'de, D: Deserializer<'de>>(d: D) -> Result<Principal, D::Error> {
    Recorded::deserialize(d).map(Principal::from)
}

/// [`recorded`] for an optional field.
pub(crate) fn recorded_opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Principal>, D::Error> {
    Ok(Option::<Recorded>::deserialize(d)?.map(Principal::from))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn actor(id: &str, kind: ActorKind) -> Actor {
        Actor {
            id: id.parse().expect("id"),
            kind,
        }
    }

    #[test]
    fn only_the_matching_kind_and_id_act_as_an_actor() {
        let buyer: BuyerId = "b1".parse().expect("id");
        let other: BuyerId = "b2".parse().expect("id");
        let agent = Principal::Agent("a1".parse().expect("id"));
        assert!(agent.acts_as(&actor("a1", ActorKind::Agent), &buyer));
        assert!(!agent.acts_as(&actor("a1", ActorKind::Human), &buyer));
        assert!(!agent.acts_as(&actor("a1", ActorKind::System), &buyer));
        assert!(!agent.acts_as(&actor("a2", ActorKind::Agent), &buyer));
        let me = Principal::Buyer(buyer.clone());
        assert!(me.acts_as(&actor("b1_app", ActorKind::Human), &buyer));
        assert!(!me.acts_as(&actor("b1_app", ActorKind::Human), &other));
        assert!(!me.acts_as(&actor("b1", ActorKind::Agent), &buyer));
        let op = Principal::Operator("a1".parse().expect("id"));
        for kind in [ActorKind::Agent, ActorKind::Human, ActorKind::System] {
            assert!(!op.acts_as(&actor("a1", kind), &buyer));
        }
        let provider = Principal::Provider("s".parse().expect("id"));
        for kind in [ActorKind::Agent, ActorKind::Human, ActorKind::System] {
            assert!(!provider.acts_as(&actor("s", kind), &buyer));
        }
        assert!(!provider.is_system() && !provider.is_operator() && !provider.is_buyer(&buyer));
        let sys = Principal::System("s".parse().expect("id"));
        assert!(sys.acts_as(&actor("s", ActorKind::System), &buyer));
        assert!(!sys.acts_as(&actor("s", ActorKind::Agent), &buyer));
    }

    #[test]
    fn scope_ids_never_collide_across_kinds_or_lengths() {
        let long = "x".repeat(MAX_ID_LEN);
        let ids = [
            Principal::Buyer("x".parse().expect("id")),
            Principal::Agent("x".parse().expect("id")),
            Principal::Operator("x".parse().expect("id")),
            Principal::System("x".parse().expect("id")),
            Principal::Provider("x".parse().expect("id")),
            Principal::Agent(long.parse().expect("id")),
            Principal::Buyer(long.parse().expect("id")),
            Principal::Agent("buyer:x".parse().expect("id")),
        ];
        let scopes: std::collections::BTreeSet<String> =
            ids.iter().map(|p| p.scope_id().to_string()).collect();
        assert_eq!(scopes.len(), ids.len());
        for s in &scopes {
            assert!(ActorId::new(s).is_ok(), "{s} is a valid id");
        }
    }

    #[test]
    fn the_recorded_form_reads_back_and_refuses_unknown_kinds() {
        let p = Principal::Operator("ops_1".parse().expect("id"));
        let json = serde_json::to_string(&p).expect("json");
        assert_eq!(json, r#"{"kind":"operator","id":"ops_1"}"#);
        let mut de = serde_json::Deserializer::from_str(&json);
        assert_eq!(recorded(&mut de).expect("reads"), p);
        let mut de = serde_json::Deserializer::from_str(r#"{"kind":"human","id":"x"}"#);
        assert!(recorded(&mut de).is_err());
    }
}
