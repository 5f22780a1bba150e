//! The invariants of DESIGN.md section 4 the simulator checks: after every step (I2 on the
//! store and at the PSP, I3, I4, I5 holds, I9), whenever nothing is in flight (I15-lite), and
//! at quiescence (I5 money, the store agreeing with the PSP's truth).

use std::collections::{HashMap, HashSet};

use agent_mandate::domain::{
    AttemptId, AttemptStatus, AuditHash, AuditKind, MandateStatus, Operation, OrderId,
    PaymentAttempt,
};
use agent_mandate::ports::{Clock as _, HoldState};

use super::exec::block_on;
use super::psp::PayStatus;
use super::world::World;

/// An invariant broken.
#[derive(Debug, Clone)]
pub struct Violation {
    pub invariant: &'static str,
    pub message: String,
}

fn fail<T>(invariant: &'static str, message: String) -> Result<T, Violation> {
    Err(Violation { invariant, message })
}

/// What the checker has seen so far (the audit trail is read incrementally).
#[derive(Debug)]
pub struct Checker {
    audit_next: u64,
    audit_prev: AuditHash,
    /// (attempt, status) pairs some audit transition event reached.
    transitions: HashSet<(AttemptId, AttemptStatus)>,
    orders: HashMap<AttemptId, OrderId>,
    /// Whether the leaf's revocation is on record.
    revoked: bool,
}

impl Default for Checker {
    fn default() -> Self {
        Checker {
            audit_next: 1,
            audit_prev: AuditHash::GENESIS,
            transitions: HashSet::new(),
            orders: HashMap::new(),
            revoked: false,
        }
    }
}

impl Checker {
    /// I4: at most one order per attempt, whichever command committed it.
    pub fn order_committed(
        &mut self,
        attempt: &AttemptId,
        order: &OrderId,
    ) -> Result<(), Violation> {
        match self.orders.insert(attempt.clone(), order.clone()) {
            Some(first) if &first != order => fail(
                "I4 one order per attempt",
                format!("attempt {attempt} has orders {first} and {order}"),
            ),
            _ => Ok(()),
        }
    }

    fn attempts(w: &World) -> Vec<PaymentAttempt> {
        block_on(w.store.attempts_in(&AttemptStatus::ALL, usize::MAX)).expect("attempts")
    }

    /// Reads the audit events appended since the last call and verifies their links (I9).
    fn read_audit(&mut self, w: &World) -> Result<(), Violation> {
        loop {
            let page = block_on(w.audit.read(self.audit_next, 1024)).expect("audit read");
            if page.is_empty() {
                return Ok(());
            }
            match agent_mandate::domain::verify_chain(&page, self.audit_next, self.audit_prev) {
                Ok(h) => self.audit_prev = h,
                Err(e) => return fail("I9 audit chain verifies", format!("{e}")),
            }
            self.audit_next += page.len() as u64;
            for e in &page {
                let event = e.event().expect("audit body");
                match event.kind {
                    AuditKind::AttemptTransition { attempt_id, to, .. } => {
                        self.transitions.insert((attempt_id, to));
                    }
                    AuditKind::MandateTransition {
                        to: MandateStatus::Revoked,
                        ..
                    } => {
                        self.revoked = true;
                    }
                    // Controls count the agent's own violations: here every agent behaves
                    // (amounts in scope, its own card), so concurrent payments that lose the
                    // race for the last headroom suspend nobody. Only the leaf's agent, after
                    // its mandate was revoked, may be suspended for paying under it.
                    AuditKind::AutoSuspended { actor_id, .. } => {
                        let leaf = &w.agents[w.agents.len() - 1].actor.id;
                        if !self.revoked || actor_id != *leaf {
                            return fail(
                                "controls count only the agent's own violations",
                                format!(
                                    "{actor_id} auto-suspended (leaf revoked: {})",
                                    self.revoked
                                ),
                            );
                        }
                    }
                    _ => {}
                }
            }
        }
    }

    /// The checks after every step. `idle`: no command is in flight.
    pub fn every_step(
        &mut self,
        w: &World,
        levels: &HashMap<AttemptId, usize>,
        idle: bool,
    ) -> Result<(), Violation> {
        self.read_audit(w)?;
        let attempts = Self::attempts(w);
        let now = w.ctx.clock.now();

        // I5: an attempt whose PSP outcome is unknown keeps its hold: held while the
        // authorization is unknown; not released while a later operation (capture, void,
        // refund) is unknown (a captured payment's hold is committed).
        for a in &attempts {
            if matches!(
                a.status,
                AttemptStatus::PendingProviderResponse
                    | AttemptStatus::Ambiguous
                    | AttemptStatus::RequiresBuyerAction
            ) {
                let hold = block_on(w.store.hold(&a.hold_id())).expect("hold");
                let state = hold.as_ref().map(|h| h.state);
                let later = a.status == AttemptStatus::Ambiguous
                    && a.pending.is_some_and(|op| op != Operation::Authorize);
                let kept = match state {
                    Some(HoldState::Held) => true,
                    Some(HoldState::Committed) => later,
                    _ => false,
                };
                if !kept {
                    return fail(
                        "I5 unknown outcome keeps its hold",
                        format!(
                            "attempt {} is {} but its hold is {:?}",
                            a.id,
                            a.status.as_str(),
                            hold.map(|h| h.state)
                        ),
                    );
                }
            }
        }

        // I2 on the store: held + spent within every cap of the chain.
        let usage = block_on(w.store.usage(&w.chain, now)).expect("usage");
        for (m, u) in w.chain.iter().zip(&usage) {
            let b = &m.spec().scope.budgets;
            let used = u.spent.minor_units() + u.held.minor_units();
            if let Some(cap) = b.lifetime
                && used > cap.minor_units()
            {
                return fail(
                    "I2 store within the lifetime cap",
                    format!(
                        "mandate {}: spent {} + held {} > lifetime {cap}",
                        m.id(),
                        u.spent,
                        u.held
                    ),
                );
            }
            for wl in &b.windows {
                let (Some(max), Some(wu)) = (wl.max_amount, u.window(wl.window_seconds)) else {
                    continue;
                };
                if wu.amount.minor_units() > max.minor_units() {
                    return fail(
                        "I2 store within the window cap",
                        format!(
                            "mandate {}: window {} s holds {} > {max}",
                            m.id(),
                            wl.window_seconds,
                            wu.amount
                        ),
                    );
                }
            }
        }

        // I2 at the PSP (its truth) and I3.
        let ledger = w.psp.ledger();
        let mut per_attempt: HashMap<&AttemptId, u32> = HashMap::new();
        let mut money = vec![0i64; w.chain.len()];
        for p in &ledger.payments {
            let n = per_attempt.entry(&p.attempt_id).or_default();
            *n += 1;
            if *n > 1 {
                return fail(
                    "I3 one PSP authorization per key",
                    format!("attempt {} has {} payments at the PSP", p.attempt_id, n),
                );
            }
            let level = levels.get(&p.attempt_id).copied().unwrap_or(0);
            for m in money.iter_mut().take(level + 1) {
                *m += p.money();
            }
        }
        for (m, at_psp) in w.chain.iter().zip(&money) {
            if let Some(cap) = m.spec().scope.budgets.lifetime
                && *at_psp > cap.minor_units()
            {
                return fail(
                        "I2 PSP money within every lifetime cap",
                        format!(
                            "mandate {}: the PSP holds or charged {} minor units under it, its lifetime cap is {cap}",
                            m.id(),
                            at_psp
                        ),
                    );
            }
        }
        drop(ledger);

        // I15-lite: every attempt's current status has its transition event. Checked only when
        // nothing is in flight (a command appends its events after the store change). A later
        // tightening: every committed change, not only the current status.
        if idle {
            // Events committed with their change but not yet delivered wait in the store's
            // outbox: they count (the next flush delivers them), and at quiescence the sweep
            // has flushed them.
            let staged: HashSet<(AttemptId, AttemptStatus)> =
                block_on(w.store.staged_audit(usize::MAX))
                    .expect("staged audit")
                    .into_iter()
                    .filter_map(|e| match e.event.kind {
                        AuditKind::AttemptTransition { attempt_id, to, .. } => {
                            Some((attempt_id, to))
                        }
                        _ => None,
                    })
                    .collect();
            for a in &attempts {
                let key = (a.id.clone(), a.status);
                if !self.transitions.contains(&key) && !staged.contains(&key) {
                    return fail(
                        "I15 every state change has its audit event",
                        format!(
                            "attempt {} is {} in the store; no audit event records that transition",
                            a.id,
                            a.status.as_str()
                        ),
                    );
                }
            }
        }
        Ok(())
    }

    /// At quiescence: nothing in flight, every deadline passed, sweeps run.
    pub fn quiescent(&mut self, w: &World) -> Result<(), Violation> {
        let attempts = Self::attempts(w);
        let ledger = w.psp.ledger();
        for a in &attempts {
            let at_psp: Vec<_> = ledger.payments_of(&a.id).collect();
            let money: i64 = at_psp.iter().map(|p| p.money()).sum();
            if matches!(a.status, AttemptStatus::Failed | AttemptStatus::Cancelled) && money > 0 {
                return fail(
                    "I5 failed or cancelled attempt has no money at the PSP",
                    format!(
                        "attempt {} is {} but the PSP holds or charged {} minor units for it",
                        a.id,
                        a.status.as_str(),
                        money
                    ),
                );
            }
            use AttemptStatus as S;
            let agrees = match at_psp.first() {
                None => matches!(a.status, S::NotStarted | S::AuthorityValidated | S::Failed),
                Some(p) => match p.status {
                    PayStatus::Declined => a.status == S::Failed,
                    // A failed attempt's late authorization is voided by the engine.
                    PayStatus::Cancelled => matches!(a.status, S::Cancelled | S::Failed),
                    PayStatus::Authorized => {
                        a.status == S::Authorized && a.authorized.minor_units() == p.authorized
                    }
                    PayStatus::Captured => {
                        matches!(
                            a.status,
                            S::Captured | S::PartiallyCaptured | S::PartiallyRefunded | S::Refunded
                        ) && a.captured.minor_units() == p.captured
                            && a.refunded.minor_units() == p.refunded
                    }
                },
            };
            if !agrees {
                return fail(
                    "store agrees with the PSP at quiescence",
                    format!(
                        "attempt {} is {} (authorized {}, captured {}, refunded {}); the PSP says {:?}",
                        a.id,
                        a.status.as_str(),
                        a.authorized,
                        a.captured,
                        a.refunded,
                        at_psp.first()
                    ),
                );
            }
        }
        drop(ledger);
        if let Err(e) = block_on(w.audit.verify()) {
            return fail("I9 audit chain verifies", format!("{e}"));
        }
        Ok(())
    }
}
