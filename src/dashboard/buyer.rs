//! What one buyer's pages show, gathered from the engine's reads as that buyer.
//!
//! The buyer's mandates, decisions and payments are found through
//! [`Engine::buyer_events`] (the store has no index by buyer), read incrementally: the
//! dashboard keeps, per buyer, the events it has read and where to go on, so a page reads
//! only what was appended since. Current states (mandate status and usage, attempt status)
//! are read again on every page through [`Engine::chain_usage`] and [`Engine::attempt`].

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};

use super::Dashboard;
use crate::domain::{
    ActorId, ActorKind, AttemptId, AuditEvent, AuditKind, Blocker, BuyerId, CartSnapshot, Mandate,
    MandateId, MandateStatus, MerchantId, Money, Outcome, Party, PaymentAttempt, Principal,
    SnapshotId, Usage,
};
use crate::engine::{EngineError, MAX_BUYER_EVENTS_SCAN};

/// The most rows the activity page lists.
pub const MAX_ACTIVITY: usize = 200;

/// The most alerts the overview lists.
pub const MAX_ALERTS: usize = 20;

/// A mandate of the buyer with its own usage now.
#[derive(Debug, Clone)]
pub(crate) struct MandateView {
    pub mandate: Mandate,
    pub usage: Usage,
}

/// A mandate and the mandates derived from it.
#[derive(Debug, Clone)]
pub(crate) struct Tree {
    pub node: MandateView,
    pub children: Vec<Tree>,
}

/// One payment request of an agent: its last decision and, once allowed, its attempt.
#[derive(Debug, Clone)]
pub(crate) struct ActivityRow {
    pub at: DateTime<Utc>,
    pub actor: ActorId,
    pub mandate_id: MandateId,
    pub amount: Money,
    pub snapshot_id: SnapshotId,
    pub outcome: Outcome,
    pub blockers: Vec<Blocker>,
    pub attempt: Option<PaymentAttempt>,
    pub merchant: Option<MerchantId>,
}

/// A payment waiting for the buyer's confirmation.
#[derive(Debug, Clone)]
pub(crate) struct PendingPayment {
    pub at: DateTime<Utc>,
    pub actor: ActorId,
    pub mandate_id: MandateId,
    pub snapshot_id: SnapshotId,
    pub amount: Money,
    /// The cart, when the cart source knows it and it hashes to `snapshot_id`.
    pub cart: Option<CartSnapshot>,
}

/// Everything the pages of one buyer start from.
#[derive(Debug)]
pub(crate) struct BuyerView {
    pub buyer: BuyerId,
    pub events: Vec<(u64, AuditEvent)>,
    pub mandates: Vec<MandateView>,
}

/// The buyer the principal is; anyone else gets no page.
pub(crate) fn buyer_of(by: &Principal) -> Option<BuyerId> {
    match by {
        Principal::Buyer(b) => Some(b.clone()),
        Principal::Agent(_)
        | Principal::Operator(_)
        | Principal::System(_)
        | Principal::Provider(_) => None,
    }
}

impl Dashboard {
    /// The buyer's audit events, oldest first (read on from where the last page stopped).
    pub(crate) async fn buyer_trail(
        &self,
        by: &Principal,
        buyer: &BuyerId,
    ) -> Result<Vec<(u64, AuditEvent)>, EngineError> {
        // What the engine staged is delivered first, so a page shows the latest commands.
        let _ = self.engine.flush_audit().await;
        let (start, mut events) = self
            .cursors
            .lock()
            .ok()
            .and_then(|mut c| c.get(buyer))
            .unwrap_or((1, Vec::new()));
        let mut next = start;
        loop {
            let page = self
                .engine
                .buyer_events(by, buyer, next, MAX_BUYER_EVENTS_SCAN)
                .await?;
            for e in &page.events {
                if let Ok(event) = e.event() {
                    events.push((e.seq, event));
                }
            }
            next = page.next;
            if page.at_end {
                break;
            }
        }
        if let Ok(mut cursors) = self.cursors.lock() {
            // Another page of the same buyer may have read on meanwhile: keep the longer.
            cursors.put(buyer, next, events.clone());
        }
        Ok(events)
    }

    /// The view of the buyer `by` is.
    pub(crate) async fn view(
        &self,
        by: &Principal,
        buyer: &BuyerId,
    ) -> Result<BuyerView, EngineError> {
        let events = self.buyer_trail(by, buyer).await?;
        let mut mandates = Vec::new();
        let mut seen = HashSet::new();
        for (_, e) in &events {
            if let AuditKind::MandateCreated { mandate_id, .. } = &e.kind {
                if !seen.insert(mandate_id.clone()) {
                    continue;
                }
                let cu = self.engine.chain_usage(by, mandate_id).await?;
                if let (Some(mandate), Some(usage)) = (cu.chain.last(), cu.usage.last()) {
                    mandates.push(MandateView {
                        mandate: mandate.clone(),
                        usage: usage.clone(),
                    });
                }
            }
        }
        Ok(BuyerView {
            buyer: buyer.clone(),
            events,
            mandates,
        })
    }

    /// The cart with this id, if the cart source knows it and it hashes to the id.
    pub(crate) async fn cart(&self, id: &SnapshotId) -> Option<CartSnapshot> {
        self.carts
            .snapshot(id)
            .await
            .filter(|s| s.content().content_id() == *id)
    }

    /// The buyer's payment requests, newest first, of `agent` only when given.
    pub(crate) async fn activity(
        &self,
        by: &Principal,
        view: &BuyerView,
        agent: Option<&ActorId>,
    ) -> Vec<ActivityRow> {
        let mut rows: Vec<ActivityRow> = Vec::new();
        let mut by_attempt: HashMap<AttemptId, usize> = HashMap::new();
        let mut ids: Vec<Option<AttemptId>> = Vec::new();
        for (_, e) in &view.events {
            let AuditKind::Decision {
                command,
                actor_id,
                mandate_id,
                amount,
                snapshot_id,
                outcome,
                blockers,
                attempt_id,
                ..
            } = &e.kind
            else {
                continue;
            };
            if command != "execute_payment" || agent.is_some_and(|a| a != actor_id) {
                continue;
            }
            let row = ActivityRow {
                at: e.at,
                actor: actor_id.clone(),
                mandate_id: mandate_id.clone(),
                amount: *amount,
                snapshot_id: *snapshot_id,
                outcome: *outcome,
                blockers: blockers.clone(),
                attempt: None,
                merchant: None,
            };
            // One row per attempt: its latest decision (a retry under the same key).
            match attempt_id.as_ref().and_then(|a| by_attempt.get(a)) {
                Some(&i) => rows[i] = row,
                None => {
                    if let Some(a) = attempt_id {
                        by_attempt.insert(a.clone(), rows.len());
                    }
                    rows.push(row);
                    ids.push(attempt_id.clone());
                }
            }
        }
        let mut out: Vec<(ActivityRow, Option<AttemptId>)> = rows.into_iter().zip(ids).collect();
        // Newest first; among requests of the same second, the later on the trail first.
        out.reverse();
        out.sort_by_key(|r| std::cmp::Reverse(r.0.at));
        out.truncate(MAX_ACTIVITY);
        let mut done = Vec::with_capacity(out.len());
        for (mut row, id) in out {
            if row.outcome == Outcome::Allowed
                && let Some(id) = id
            {
                row.attempt = self.engine.attempt(by, &id).await.ok();
            }
            row.merchant = match &row.attempt {
                Some(a) => Some(a.request.merchant_id.clone()),
                None => self
                    .cart(&row.snapshot_id)
                    .await
                    .map(|c| c.merchant().merchant_id.clone()),
            };
            done.push(row);
        }
        done
    }

    /// Payments waiting for the buyer: per mandate, the agent's latest request when it asked
    /// for a confirmation that was not given (or declined) since.
    pub(crate) async fn pending_payments(&self, view: &BuyerView) -> Vec<PendingPayment> {
        let mut latest: HashMap<&MandateId, (u64, &AuditEvent)> = HashMap::new();
        let mut confirmed: Vec<(u64, SnapshotId)> = Vec::new();
        for (seq, e) in &view.events {
            match &e.kind {
                AuditKind::Decision {
                    command,
                    mandate_id,
                    ..
                } if command == "execute_payment" => {
                    latest.insert(mandate_id, (*seq, e));
                }
                AuditKind::ConfirmationRecorded { snapshot_id, .. }
                | AuditKind::ConfirmationDeclined { snapshot_id, .. } => {
                    confirmed.push((*seq, *snapshot_id));
                }
                _ => {}
            }
        }
        let active: HashSet<&MandateId> = view
            .mandates
            .iter()
            .filter(|m| m.mandate.status() == MandateStatus::Active)
            .map(|m| m.mandate.id())
            .collect();
        let mut out = Vec::new();
        for (mandate_id, (seq, e)) in latest {
            let AuditKind::Decision {
                actor_id,
                amount,
                snapshot_id,
                outcome: Outcome::RequiresConfirmation,
                ..
            } = &e.kind
            else {
                continue;
            };
            let answered = confirmed
                .iter()
                .any(|(s, id)| *s > seq && id == snapshot_id);
            if answered || !active.contains(mandate_id) {
                continue;
            }
            out.push(PendingPayment {
                at: e.at,
                actor: actor_id.clone(),
                mandate_id: mandate_id.clone(),
                snapshot_id: *snapshot_id,
                amount: *amount,
                cart: self.cart(snapshot_id).await,
            });
        }
        out.sort_by(|a, b| {
            b.at.cmp(&a.at)
                .then_with(|| a.mandate_id.cmp(&b.mandate_id))
        });
        out
    }
}

impl BuyerView {
    /// The mandate trees: each root (or mandate whose parent is not the buyer's) with its
    /// descendants, in creation order.
    pub(crate) fn trees(&self) -> Vec<Tree> {
        let ids: HashSet<&MandateId> = self.mandates.iter().map(|m| m.mandate.id()).collect();
        let roots = self
            .mandates
            .iter()
            .filter(|m| m.mandate.parent_id().is_none_or(|p| !ids.contains(p)));
        roots.map(|r| self.tree(r, 0)).collect()
    }

    fn tree(&self, node: &MandateView, depth: usize) -> Tree {
        let children = if depth >= crate::domain::limits::MAX_CHAIN_LEN {
            Vec::new()
        } else {
            self.mandates
                .iter()
                .filter(|m| m.mandate.parent_id() == Some(node.mandate.id()))
                .map(|m| self.tree(m, depth + 1))
                .collect()
        };
        Tree {
            node: node.clone(),
            children,
        }
    }

    /// The mandate with this id, if it is the buyer's.
    pub(crate) fn mandate(&self, id: &MandateId) -> Option<&MandateView> {
        self.mandates.iter().find(|m| m.mandate.id() == id)
    }

    /// The agents of the buyer's mandates, in first-seen order.
    pub(crate) fn agents(&self) -> Vec<ActorId> {
        let mut out: Vec<ActorId> = Vec::new();
        for m in &self.mandates {
            let a = m.mandate.actor();
            if a.kind == ActorKind::Agent && !out.contains(&a.id) {
                out.push(a.id.clone());
            }
        }
        out
    }

    /// Every mandate of the buyer the agent holds, whatever its status.
    pub(crate) fn mandates_of(&self, agent: &ActorId) -> Vec<&Mandate> {
        self.mandates
            .iter()
            .map(|m| &m.mandate)
            .filter(|m| m.actor().kind == ActorKind::Agent && m.actor().id == *agent)
            .collect()
    }

    /// The buyer's mandates the agent holds that can still be used (active or pending).
    pub(crate) fn live_mandates_of(&self, agent: &ActorId) -> Vec<&Mandate> {
        self.mandates
            .iter()
            .map(|m| &m.mandate)
            .filter(|m| m.actor().kind == ActorKind::Agent && m.actor().id == *agent)
            .filter(|m| !m.status().is_terminal())
            .collect()
    }

    /// Live mandates of other actors below the agent's (stopped with it).
    pub(crate) fn delegated_below(&self, agent: &ActorId) -> Vec<&Mandate> {
        let mut cut: HashSet<&MandateId> = self
            .live_mandates_of(agent)
            .into_iter()
            .map(|m| m.id())
            .collect();
        let mut out = Vec::new();
        // Mandates are in creation order, so a parent comes before its children.
        for m in self.mandates.iter().map(|m| &m.mandate) {
            if let Some(p) = m.parent_id()
                && cut.contains(p)
                && !cut.contains(m.id())
            {
                cut.insert(m.id());
                if !m.status().is_terminal() {
                    out.push(m);
                }
            }
        }
        out
    }

    /// Whether the buyer's own kill switch is on (the latest suspension event about them).
    pub(crate) fn suspended(&self) -> bool {
        self.events
            .iter()
            .rev()
            .find_map(|(_, e)| match &e.kind {
                AuditKind::Suspension {
                    party: Party::Buyer(b),
                    suspended,
                    ..
                } if *b == self.buyer => Some(*suspended),
                _ => None,
            })
            .unwrap_or(false)
    }
}
