//! Reads: what a service shows its callers, with the same principals as the commands, so no
//! service reaches into `ports().store` (and past the permission checks) to answer a GET.
//!
//! | read | who may |
//! |---|---|
//! | [`Engine::attempt`] | the attempt's actor; its buyer; an operator; a system |
//! | [`Engine::mandate`], [`Engine::chain_usage`] | the mandate's buyer; the actor of it or of an ancestor; an operator; a system |
//! | [`Engine::open_attempts`] | an operator; a system |
//! | [`Engine::audit_segment`] | an operator; a system |
//! | [`Engine::buyer_events`] | the buyer; an operator; a system |
//!
//! Something the principal may not see answers [`EngineError::NotFound`], exactly as if it did
//! not exist: a read is no oracle for other buyers' ids.

use super::error::EngineError;
use super::observe;
use super::Engine;
use std::collections::HashMap;

use crate::domain::{
    decision_by_a_stranger, ActorId, AttemptId, AttemptStatus, AuditKind, AuditSubject, BuyerId,
    ChainedEvent, Mandate, MandateId, Party, PaymentAttempt, Principal, Usage,
};

/// The most events one [`Engine::audit_segment`] call returns.
pub const MAX_AUDIT_SEGMENT: usize = 1_000;

/// The most attempts one [`Engine::open_attempts`] call returns.
pub const MAX_OPEN_ATTEMPTS: usize = 1_000;

/// The most events of the trail one [`Engine::buyer_events`] call looks at.
pub const MAX_BUYER_EVENTS_SCAN: usize = 1_000;

/// A page of the audit trail filtered to one buyer (see [`Engine::buyer_events`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct BuyerEvents {
    /// The events about the buyer, in trail order (each with its chain link).
    pub events: Vec<ChainedEvent>,
    /// The sequence number to read from next (past every event looked at).
    pub next: u64,
    /// Whether the scan reached the end of the trail as it is now.
    pub at_end: bool,
}

/// The usage of every level of a mandate's chain, root first, at the time of the read.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct ChainUsage {
    /// The chain, root first (the mandate asked for last).
    pub chain: Vec<Mandate>,
    /// The usage of each level, in the same order.
    pub usage: Vec<Usage>,
}

impl Engine {
    /// An attempt as it is now.
    pub async fn attempt(
        &self,
        by: &Principal,
        id: &AttemptId,
    ) -> Result<PaymentAttempt, EngineError> {
        observe::Command::read("read_attempt", Some(by))
            .attempt(id)
            .run(self.attempt_body(by, id))
            .await
    }

    async fn attempt_body(
        &self,
        by: &Principal,
        id: &AttemptId,
    ) -> Result<PaymentAttempt, EngineError> {
        let attempt = observe::store("attempt", self.ports.store.attempt(id)).await?;
        match attempt {
            Some(a)
                if by.acts_as(&a.request.actor, &a.request.buyer_id)
                    || by.is_buyer(&a.request.buyer_id)
                    || by.is_operator()
                    || by.is_system() =>
            {
                Ok(a)
            }
            _ => Err(EngineError::NotFound {
                entity: "attempt",
                id: id.to_string(),
            }),
        }
    }

    /// A mandate as it is now.
    pub async fn mandate(&self, by: &Principal, id: &MandateId) -> Result<Mandate, EngineError> {
        observe::Command::read("read_mandate", Some(by))
            .mandate(id)
            .run(self.mandate_body(by, id))
            .await
    }

    async fn mandate_body(&self, by: &Principal, id: &MandateId) -> Result<Mandate, EngineError> {
        let chain = self.visible_chain(by, id).await?;
        chain.into_iter().last().ok_or_else(|| not_found(id))
    }

    /// The mandate's chain (root first) and the usage of every level now: spent, held, the
    /// count in each window, the uses.
    pub async fn chain_usage(
        &self,
        by: &Principal,
        id: &MandateId,
    ) -> Result<ChainUsage, EngineError> {
        observe::Command::read("read_chain_usage", Some(by))
            .mandate(id)
            .run(self.chain_usage_body(by, id))
            .await
    }

    async fn chain_usage_body(
        &self,
        by: &Principal,
        id: &MandateId,
    ) -> Result<ChainUsage, EngineError> {
        let chain = self.visible_chain(by, id).await?;
        let usage = observe::store("usage", self.ports.store.usage(&chain, self.now())).await?;
        Ok(ChainUsage { chain, usage })
    }

    /// The attempts whose outcome is unknown (pending at the PSP, ambiguous, waiting for the
    /// buyer), oldest first, at most `limit` (capped at [`MAX_OPEN_ATTEMPTS`]): what an
    /// operator watches and the sweep resolves.
    pub async fn open_attempts(
        &self,
        by: &Principal,
        limit: usize,
    ) -> Result<Vec<PaymentAttempt>, EngineError> {
        observe::Command::read("read_open_attempts", Some(by))
            .run(self.open_attempts_body(by, limit))
            .await
    }

    async fn open_attempts_body(
        &self,
        by: &Principal,
        limit: usize,
    ) -> Result<Vec<PaymentAttempt>, EngineError> {
        if !(by.is_operator() || by.is_system()) {
            return Err(EngineError::NotPermitted {
                reason: format!(
                    "{by} may not list open attempts: only an operator or a system may"
                ),
            });
        }
        let open = observe::store(
            "attempts_in",
            self.ports.store.attempts_in(
                &[
                    AttemptStatus::PendingProviderResponse,
                    AttemptStatus::Ambiguous,
                    AttemptStatus::RequiresBuyerAction,
                ],
                limit.min(MAX_OPEN_ATTEMPTS),
            ),
        )
        .await?;
        observe::open_attempts(&open);
        Ok(open)
    }

    /// Up to `limit` (capped at [`MAX_AUDIT_SEGMENT`]) events of the audit trail from
    /// sequence number `from` (1 is the first), as delivered to the audit sink, each with its
    /// chain link so a reader can verify the segment.
    pub async fn audit_segment(
        &self,
        by: &Principal,
        from: u64,
        limit: usize,
    ) -> Result<Vec<ChainedEvent>, EngineError> {
        observe::Command::read("read_audit_segment", Some(by))
            .run(self.audit_segment_body(by, from, limit))
            .await
    }

    async fn audit_segment_body(
        &self,
        by: &Principal,
        from: u64,
        limit: usize,
    ) -> Result<Vec<ChainedEvent>, EngineError> {
        if !(by.is_operator() || by.is_system()) {
            return Err(EngineError::NotPermitted {
                reason: format!(
                    "{by} may not read the audit trail: only an operator or a system may"
                ),
            });
        }
        Ok(observe::audit(
            "read",
            self.ports
                .audit
                .read(from.max(1), limit.min(MAX_AUDIT_SEGMENT)),
        )
        .await?)
    }

    /// The events of the audit trail about buyer `buyer`, among up to `limit` (capped at
    /// [`MAX_BUYER_EVENTS_SCAN`]) events from sequence number `from`: what the buyer's own
    /// dashboard lists (their mandates, decisions, payments, confirmations, their kill switch,
    /// the control events of their mandates) without reading anyone else's.
    ///
    /// An event is about the buyer when it names them (mandate created, confirmation, their
    /// own suspension, a credential they stored), names one of their mandates (decisions, but
    /// not one refused because its actor is not the mandate's, transitions, thresholds, loop
    /// detection) or one of their attempts (transitions, holds,
    /// orders, recoveries), or is the automatic suspension that a blocked request under one of
    /// their mandates tripped (the decision just before it, in the same page). Suspensions of
    /// an actor by an operator, replays, credential revocations of an actor and webhook
    /// markers are not listed: they are not about one buyer.
    ///
    /// Who may: the buyer; an operator; a system. Anyone else is
    /// [`EngineError::NotPermitted`].
    ///
    /// Through the audit sink's buyer index ([`crate::ports::AuditSink::indexed`] with
    /// [`AuditSubject::Buyer`]), when the sink keeps one (every sink of this crate does):
    /// `limit` events of the buyer from `from`, in time that depends on the buyer's events,
    /// not on the trail's length. A sink without an index: this reads `limit` events of the
    /// trail and keeps the buyer's, reading each mandate and attempt named once per call.
    pub async fn buyer_events(
        &self,
        by: &Principal,
        buyer: &BuyerId,
        from: u64,
        limit: usize,
    ) -> Result<BuyerEvents, EngineError> {
        observe::Command::read("read_buyer_events", Some(by))
            .run(self.buyer_events_body(by, buyer, from, limit))
            .await
    }

    async fn buyer_events_body(
        &self,
        by: &Principal,
        buyer: &BuyerId,
        from: u64,
        limit: usize,
    ) -> Result<BuyerEvents, EngineError> {
        if !(by.is_buyer(buyer) || by.is_operator() || by.is_system()) {
            return Err(EngineError::NotPermitted {
                reason: format!(
                    "{by} may not read the events of buyer {buyer}: only that buyer, an operator or a system may"
                ),
            });
        }
        let from = from.max(1);
        let limit = limit.clamp(1, MAX_BUYER_EVENTS_SCAN);
        let subject = AuditSubject::Buyer(buyer.clone());
        // A sink with a buyer index answers with the buyer's events alone.
        if let Some(events) =
            observe::audit("indexed", self.ports.audit.indexed(&subject, from, limit)).await?
        {
            let at_end = events.len() < limit;
            let next = events.last().map_or(from, |e| e.seq + 1);
            return Ok(BuyerEvents {
                events,
                next,
                at_end,
            });
        }
        let page = observe::audit("read", self.ports.audit.read(from, limit)).await?;
        let next = page.last().map_or(from, |e| e.seq + 1);
        let at_end = page.len() < limit;
        let mut mandates: HashMap<MandateId, bool> = HashMap::new();
        let mut attempts: HashMap<AttemptId, bool> = HashMap::new();
        // The actor of the last decision in this page, and whether it was under this buyer.
        let mut last_decision: Option<(ActorId, bool)> = None;
        let mut events = Vec::new();
        for e in page {
            let Ok(event) = e.event() else {
                continue;
            };
            let ours = match &event.kind {
                AuditKind::MandateCreated {
                    buyer_id,
                    mandate_id,
                    ..
                } => {
                    mandates.insert(mandate_id.clone(), buyer_id == buyer);
                    buyer_id == buyer
                }
                AuditKind::ConfirmationRecorded { buyer_id, .. }
                | AuditKind::ConfirmationDeclined { buyer_id, .. } => buyer_id == buyer,
                AuditKind::Suspension { party, .. } => {
                    matches!(party, Party::Buyer(b) if b == buyer)
                }
                AuditKind::CredentialStored { by: who, .. } => who.is_buyer(buyer),
                AuditKind::Decision {
                    mandate_id,
                    actor_id,
                    blockers,
                    ..
                } => {
                    // A stranger's request naming the buyer's mandate is not listed (as the
                    // sinks' buyer index does not list it).
                    let ours = !decision_by_a_stranger(blockers)
                        && self.mandate_of(&mut mandates, mandate_id, buyer).await?;
                    last_decision = Some((actor_id.clone(), ours));
                    ours
                }
                AuditKind::MandateTransition { mandate_id, .. }
                | AuditKind::Threshold { mandate_id, .. }
                | AuditKind::LoopDetected { mandate_id, .. } => {
                    self.mandate_of(&mut mandates, mandate_id, buyer).await?
                }
                AuditKind::AttemptTransition { attempt_id, .. }
                | AuditKind::Hold { attempt_id, .. }
                | AuditKind::OrderCommitted { attempt_id, .. }
                | AuditKind::OrderFailed { attempt_id, .. }
                | AuditKind::Recovery { attempt_id, .. }
                | AuditKind::Asked { attempt_id, .. } => {
                    self.attempt_of(&mut attempts, attempt_id, buyer).await?
                }
                AuditKind::AutoSuspended { actor_id, .. } => {
                    matches!(&last_decision, Some((a, true)) if a == actor_id)
                }
                AuditKind::TokenIssued { buyer_id, .. } => buyer_id == buyer,
                AuditKind::TokenRevoked { mandate_id, .. }
                | AuditKind::Delegated { mandate_id, .. } => {
                    self.mandate_of(&mut mandates, mandate_id, buyer).await?
                }
                AuditKind::TokenRedeemed { attempt_id, .. } => {
                    self.attempt_of(&mut attempts, attempt_id, buyer).await?
                }
                AuditKind::Alert { alert } => alert.buyer_id.as_ref() == Some(buyer),
                AuditKind::Review { buyer_id, .. } => buyer_id == buyer,
                // A refused presentation names no buyer (the token may be unknown).
                AuditKind::TokenRefused { .. }
                | AuditKind::CredentialRevoked { .. }
                | AuditKind::WebhookDeadLettered { .. }
                | AuditKind::Replay { .. } => false,
            };
            if ours {
                events.push(e);
            }
        }
        Ok(BuyerEvents {
            events,
            next,
            at_end,
        })
    }

    /// Whether mandate `id` is of `buyer` (looked up once per call).
    async fn mandate_of(
        &self,
        seen: &mut HashMap<MandateId, bool>,
        id: &MandateId,
        buyer: &BuyerId,
    ) -> Result<bool, EngineError> {
        if let Some(ours) = seen.get(id) {
            return Ok(*ours);
        }
        let m = observe::store("mandate", self.ports.store.mandate(id)).await?;
        let ours = m.is_some_and(|m| m.buyer_id() == buyer);
        seen.insert(id.clone(), ours);
        Ok(ours)
    }

    /// Whether attempt `id` is of `buyer` (looked up once per call).
    async fn attempt_of(
        &self,
        seen: &mut HashMap<AttemptId, bool>,
        id: &AttemptId,
        buyer: &BuyerId,
    ) -> Result<bool, EngineError> {
        if let Some(ours) = seen.get(id) {
            return Ok(*ours);
        }
        let a = observe::store("attempt", self.ports.store.attempt(id)).await?;
        let ours = a.is_some_and(|a| a.request.buyer_id == *buyer);
        seen.insert(id.clone(), ours);
        Ok(ours)
    }

    /// The chain of `id` when `by` may see it.
    async fn visible_chain(
        &self,
        by: &Principal,
        id: &MandateId,
    ) -> Result<Vec<Mandate>, EngineError> {
        let chain = observe::store("chain", self.ports.store.chain(id)).await?;
        let Some(leaf) = chain.last() else {
            return Err(not_found(id));
        };
        let visible = by.is_buyer(leaf.buyer_id())
            || by.is_operator()
            || by.is_system()
            || chain.iter().any(|m| by.acts_as(m.actor(), m.buyer_id()));
        if visible {
            Ok(chain)
        } else {
            Err(not_found(id))
        }
    }
}

fn not_found(id: &MandateId) -> EngineError {
    EngineError::NotFound {
        entity: "mandate",
        id: id.to_string(),
    }
}

impl observe::Outcome for BuyerEvents {}
