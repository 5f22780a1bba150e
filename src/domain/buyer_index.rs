//! Indexing the audit trail by buyer: which buyer each appended event is about.
//!
//! Most events name a mandate or an attempt, not a buyer. A sink learns, as it appends, which
//! buyer each mandate and attempt belongs to, from events the engine writes only with the true
//! owner: a mandate from its `mandate_created` (or a token's `token_issued`), an attempt from
//! the *allowed* `execute_payment` decision that created it (an agent cannot get an allowed
//! decision under another buyer's mandate, and an attempt id is derived from the agent and its
//! key, so a refused request naming someone else's mandate teaches nothing). Every later event
//! naming that mandate or attempt is then indexed under the buyer
//! ([`AuditSubject::Buyer`]), so a buyer's events are read in time that depends on their
//! number, never on the length of the trail.
//!
//! A decision that refused a request because its actor is not the mandate's
//! (`ACTOR_NOT_AUTHORIZED`) is indexed under no buyer: it is not about the buyer's agents, and
//! whoever learns a mandate id could otherwise fill that buyer's index with refusals.
//!
//! The ownership facts are stored by the sink (first fact wins; the engine never writes a
//! second owner for the same id). An event naming a mandate or attempt whose owner is not yet
//! known is not indexed under any buyer.

use super::audit::AuditKind;
use super::checkpoint::AuditSubject;
use super::decision::{Blocker, BlockerCode, Outcome};
use super::ids::{ActorId, BuyerId};
use super::principal::Principal;
use super::Party;

/// The buyer of one event and the mandates and attempts it ties to that buyer.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct BuyerFacts {
    /// The buyer the event is about (`None`: no one buyer's).
    pub buyer: Option<BuyerId>,
    /// Mandates and attempts that belong to `buyer` from this event on.
    pub owns: Vec<AuditSubject>,
}

/// Finds the buyer of each event of one append, in order (the automatic suspension a
/// refused request trips is the buyer's of the decision before it in the same append).
///
/// ```
/// use agent_mandate::domain::{AuditEvent, AuditKind, AuditSubject, BuyerIndex};
/// # let created = agent_mandate::domain::examples::travel_backpack_mandate();
/// let event = AuditKind::MandateCreated {
///     mandate_id: created.id().clone(),
///     parent_id: None,
///     buyer_id: created.buyer_id().clone(),
///     actor_id: created.actor().id.clone(),
///     status: created.status(),
///     by: agent_mandate::domain::Principal::Buyer(created.buyer_id().clone()),
/// };
/// let mut index = BuyerIndex::new();
/// let facts = index.facts(&event, |_| Ok::<_, ()>(None)).unwrap();
/// assert_eq!(facts.buyer.as_ref(), Some(created.buyer_id()));
/// assert_eq!(facts.owns, vec![AuditSubject::Mandate(created.id().clone())]);
/// ```
#[derive(Debug, Clone, Default)]
pub struct BuyerIndex {
    last_decision: Option<(ActorId, Option<BuyerId>)>,
}

impl BuyerIndex {
    /// A fresh index for one append.
    pub fn new() -> BuyerIndex {
        BuyerIndex::default()
    }

    /// The facts of `kind`; `owner` looks up the buyer a mandate or attempt belongs to (what
    /// earlier events taught, the facts of earlier events of this append included).
    pub fn facts<E>(
        &mut self,
        kind: &AuditKind,
        mut owner: impl FnMut(&AuditSubject) -> Result<Option<BuyerId>, E>,
    ) -> Result<BuyerFacts, E> {
        let direct = |b: &BuyerId| BuyerFacts {
            buyer: Some(b.clone()),
            owns: Vec::new(),
        };
        let mut by_subject = |s: AuditSubject| -> Result<BuyerFacts, E> {
            Ok(BuyerFacts {
                buyer: owner(&s)?,
                owns: Vec::new(),
            })
        };
        let facts = match kind {
            AuditKind::MandateCreated {
                mandate_id,
                buyer_id,
                ..
            }
            | AuditKind::TokenIssued {
                mandate_id,
                buyer_id,
                ..
            } => BuyerFacts {
                buyer: Some(buyer_id.clone()),
                owns: vec![AuditSubject::Mandate(mandate_id.clone())],
            },
            AuditKind::Review { buyer_id, .. } => direct(buyer_id),
            AuditKind::ConfirmationRecorded { buyer_id, .. }
            | AuditKind::ConfirmationDeclined { buyer_id, .. } => direct(buyer_id),
            AuditKind::Suspension {
                party: Party::Buyer(b),
                ..
            } => direct(b),
            AuditKind::CredentialStored {
                by: Principal::Buyer(b),
                ..
            } => direct(b),
            AuditKind::Alert { alert } => BuyerFacts {
                buyer: alert.buyer_id.clone(),
                owns: Vec::new(),
            },
            AuditKind::Decision {
                command,
                actor_id,
                mandate_id,
                outcome,
                blockers,
                attempt_id,
                ..
            } => {
                // A request by someone who is not the mandate's actor is not about the
                // buyer's agents: anyone who learns a mandate id could otherwise fill that
                // buyer's index (and dashboard) with refusals.
                let buyer = if decision_by_a_stranger(blockers) {
                    None
                } else {
                    owner(&AuditSubject::Mandate(mandate_id.clone()))?
                };
                self.last_decision = Some((actor_id.clone(), buyer.clone()));
                let creates = command == "execute_payment" && *outcome == Outcome::Allowed;
                let owns = match (&buyer, attempt_id) {
                    (Some(_), Some(a)) if creates => vec![AuditSubject::Attempt(a.clone())],
                    _ => Vec::new(),
                };
                return Ok(BuyerFacts { buyer, owns });
            }
            AuditKind::MandateTransition { mandate_id, .. }
            | AuditKind::Threshold { mandate_id, .. }
            | AuditKind::LoopDetected { mandate_id, .. }
            | AuditKind::TokenRevoked { mandate_id, .. }
            | AuditKind::Delegated { mandate_id, .. } => {
                by_subject(AuditSubject::Mandate(mandate_id.clone()))?
            }
            AuditKind::AttemptTransition { attempt_id, .. }
            | AuditKind::Hold { attempt_id, .. }
            | AuditKind::OrderCommitted { attempt_id, .. }
            | AuditKind::OrderFailed { attempt_id, .. }
            | AuditKind::Recovery { attempt_id, .. }
            | AuditKind::Asked { attempt_id, .. }
            | AuditKind::TokenRedeemed { attempt_id, .. } => {
                by_subject(AuditSubject::Attempt(attempt_id.clone()))?
            }
            AuditKind::AutoSuspended { actor_id, .. } => BuyerFacts {
                buyer: match &self.last_decision {
                    Some((a, b)) if a == actor_id => b.clone(),
                    _ => None,
                },
                owns: Vec::new(),
            },
            AuditKind::Suspension { .. }
            | AuditKind::CredentialStored { .. }
            | AuditKind::TokenRefused { .. }
            | AuditKind::CredentialRevoked { .. }
            | AuditKind::WebhookDeadLettered { .. }
            | AuditKind::Replay { .. } => BuyerFacts::default(),
        };
        Ok(facts)
    }
}

/// Whether a decision refused the request because its actor is not the mandate's
/// (`ACTOR_NOT_AUTHORIZED`): such a request is not listed for the mandate's buyer.
pub fn decision_by_a_stranger(blockers: &[Blocker]) -> bool {
    blockers
        .iter()
        .any(|b| b.code == BlockerCode::ActorNotAuthorized)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{examples, AttemptId, BlockerCode, MandateId};
    use std::collections::HashMap;

    fn decision(mandate: &str, attempt: &str, outcome: Outcome) -> AuditKind {
        let m = examples::travel_backpack_mandate();
        let req = examples::authorize_request(&examples::travel_backpack_snapshot());
        AuditKind::Decision {
            command: "execute_payment".into(),
            actor_id: m.actor().id.clone(),
            mandate_id: MandateId::new(mandate).unwrap(),
            action: req.action,
            amount: req.amount,
            snapshot_id: req.snapshot_id,
            outcome,
            blockers: if outcome == Outcome::Allowed {
                Vec::new()
            } else {
                vec![crate::domain::Blocker::new(
                    BlockerCode::AuthorityMissing,
                    "x",
                )]
            },
            evidence: Vec::new(),
            request_digest: req.digest(),
            attempt_id: Some(AttemptId::new(attempt).unwrap()),
        }
    }

    #[test]
    fn a_refused_request_under_another_buyers_mandate_teaches_no_attempt_owner() {
        let a = BuyerId::new("buyer_a").unwrap();
        let mut owners: HashMap<AuditSubject, BuyerId> = HashMap::new();
        owners.insert(
            AuditSubject::Mandate(MandateId::new("m_a").unwrap()),
            a.clone(),
        );
        let mut index = BuyerIndex::new();
        let look = |o: &HashMap<AuditSubject, BuyerId>| {
            let o = o.clone();
            move |s: &AuditSubject| Ok::<_, ()>(o.get(s).cloned())
        };
        let refused = index
            .facts(&decision("m_a", "att_x", Outcome::Blocked), look(&owners))
            .unwrap();
        // Listed for the mandate's buyer (someone tried their mandate), but owns nothing.
        assert_eq!(refused.buyer.as_ref(), Some(&a));
        assert!(refused.owns.is_empty());
        let allowed = index
            .facts(&decision("m_a", "att_y", Outcome::Allowed), look(&owners))
            .unwrap();
        assert_eq!(
            allowed.owns,
            vec![AuditSubject::Attempt(AttemptId::new("att_y").unwrap())]
        );
        // An unknown mandate: no buyer, nothing owned.
        let unknown = index
            .facts(
                &decision("m_nobody", "att_z", Outcome::Allowed),
                look(&owners),
            )
            .unwrap();
        assert_eq!(unknown, BuyerFacts::default());
    }
}
