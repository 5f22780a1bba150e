//! The clients: a random mix of commands (payments by the agents of every level, retries
//! with the same key, capture, void, refund, order commitment, reconciliation sweeps, a
//! revocation), each run as a boxed future on the simulator's executor.

use std::collections::HashMap;

use agent_mandate::domain::{
    examples, AttemptId, LifecycleEvent, Money, OrderId, PaymentAction, PaymentRequest, Text,
};
use agent_mandate::engine::{
    attempt_id_for, CapturePayment, ChangeMandate, CommitOrder, Engine, ExecutePayment,
    OrderOutcome, PaymentOutcome, RefundPayment, VoidPayment,
};

use super::exec::BoxFuture;
use super::world::World;
use super::Rng;
use crate::common::engine::{admin, key};

#[derive(Debug, Clone)]
pub enum Cmd {
    Execute(Box<ExecutePayment>),
    Capture(CapturePayment),
    Void(VoidPayment),
    Refund(RefundPayment),
    Commit(CommitOrder),
    Sweep,
    Revoke(ChangeMandate),
}

/// What a finished command reports.
#[derive(Debug)]
pub struct Done {
    /// An order this command committed (for I4).
    pub order: Option<(AttemptId, OrderId)>,
    /// The attempt a payment command answered with (the client now knows it).
    pub attempt: Option<AttemptId>,
    pub text: String,
}

fn short(id: &AttemptId) -> &str {
    let s = id.as_str();
    &s[..s.len().min(10)]
}

impl Cmd {
    pub fn label(&self) -> String {
        match self {
            Cmd::Execute(c) => format!(
                "execute key={} {} actor={} amount={}",
                c.key.as_str(),
                short(&attempt_id_for(&c.request.actor.id, &c.key)),
                c.request.actor.id,
                c.request.amount
            ),
            Cmd::Capture(c) => format!("capture key={} {}", c.key.as_str(), short(&c.attempt_id)),
            Cmd::Void(c) => format!("void key={} {}", c.key.as_str(), short(&c.attempt_id)),
            Cmd::Refund(c) => format!("refund key={} {}", c.key.as_str(), short(&c.attempt_id)),
            Cmd::Commit(c) => format!(
                "commit_order key={} {}",
                c.key.as_str(),
                short(&c.attempt_id)
            ),
            Cmd::Sweep => "reconcile_pending".into(),
            Cmd::Revoke(c) => format!("revoke {}", c.mandate_id),
        }
    }

    pub fn future(self, engine: Engine) -> BoxFuture<Done> {
        Box::pin(async move {
            let text = |o: &PaymentOutcome| match o {
                PaymentOutcome::Refused(d) => format!("refused {:?}", d.codes()),
                PaymentOutcome::Done { attempt, .. } => format!("done {}", attempt.status.as_str()),
                PaymentOutcome::Replayed { attempt } => {
                    format!("replayed {}", attempt.status.as_str())
                }
            };
            let done = |text: String| Done {
                order: None,
                attempt: None,
                text,
            };
            let paid = |o: PaymentOutcome| Done {
                order: None,
                attempt: o.attempt().map(|a| a.id.clone()),
                text: text(&o),
            };
            match self {
                Cmd::Execute(c) => match engine.execute_payment(&c).await {
                    Ok(o) => paid(o),
                    Err(e) => done(format!("error: {e}")),
                },
                Cmd::Capture(c) => match engine.capture(&c).await {
                    Ok(o) => done(text(&o)),
                    Err(e) => done(format!("error: {e}")),
                },
                Cmd::Void(c) => match engine.void(&c).await {
                    Ok(o) => done(text(&o)),
                    Err(e) => done(format!("error: {e}")),
                },
                Cmd::Refund(c) => match engine.refund(&c).await {
                    Ok(o) => done(text(&o)),
                    Err(e) => done(format!("error: {e}")),
                },
                Cmd::Commit(c) => match engine.commit_order(&c).await {
                    Ok(OrderOutcome::Committed { order, .. }) => Done {
                        order: Some((order.attempt_id.clone(), order.id.clone())),
                        attempt: None,
                        text: format!("order committed {}", order.id),
                    },
                    Ok(OrderOutcome::Existing { order }) => {
                        done(format!("order existing {}", order.id))
                    }
                    Ok(OrderOutcome::Failed { reason, .. }) => {
                        done(format!("order failed: {reason}"))
                    }
                    Err(e) => done(format!("error: {e}")),
                },
                Cmd::Sweep => match engine.reconcile_pending(100).await {
                    Ok(v) => done(format!("swept {}", v.len())),
                    Err(e) => done(format!("error: {e}")),
                },
                Cmd::Revoke(c) => match engine.change_mandate(&c).await {
                    Ok(_) => done("revoked".into()),
                    Err(e) => done(format!("error: {e}")),
                },
            }
        })
    }
}

/// What the clients sent so far, so they can retry with the same key.
#[derive(Debug, Default)]
pub struct Clients {
    pub sent: Vec<Cmd>,
    executes: Vec<usize>,
    /// Every attempt a command may have made, with the level of its agent's mandate.
    pub attempts: HashMap<AttemptId, usize>,
    attempt_list: Vec<(AttemptId, usize, usize)>,
    /// The agent and snapshot of each attempt a command may have made.
    snapshot_of: HashMap<AttemptId, (usize, usize)>,
    /// Commands a crash or an in-flight answer interrupted: retried first.
    pub retry: Vec<Cmd>,
    next_key: u64,
    revoked: bool,
}

impl Clients {
    fn key(&mut self, kind: &str) -> agent_mandate::domain::IdempotencyKey {
        self.next_key += 1;
        key(&format!("{kind}-{}", self.next_key))
    }

    pub fn execute(&mut self, w: &World, agent: usize, snapshot: usize, capture: bool) -> Cmd {
        let a = &w.agents[agent];
        let s = &w.snapshots[snapshot];
        let k = self.key("pay");
        let request = PaymentRequest {
            actor: a.actor.clone(),
            buyer_id: examples::buyer(),
            mandate_id: w.chain[a.level].id().clone(),
            action: PaymentAction::Authorize,
            merchant_id: s.merchant().merchant_id.clone(),
            snapshot_id: s.id(),
            amount: s.total(),
            urgency: None,
        };
        let id = attempt_id_for(&a.actor.id, &k);
        self.attempts.insert(id.clone(), a.level);
        self.snapshot_of.insert(id, (agent, snapshot));
        Cmd::Execute(Box::new(ExecutePayment {
            key: k,
            request,
            snapshot: s.clone(),
            checkout: examples::valid_checkout(s.id()),
            credential: a.card.clone(),
            capture,
        }))
    }

    /// A payment command answered with `attempt`: follow-ups may name it now.
    pub fn learned(&mut self, attempt: &AttemptId) {
        if let Some(&(agent, snapshot)) = self.snapshot_of.get(attempt) {
            if !self.attempt_list.iter().any(|(a, _, _)| a == attempt) {
                self.attempt_list.push((attempt.clone(), agent, snapshot));
            }
        }
    }

    /// The next command, from the RNG.
    pub fn next(&mut self, w: &World, rng: &mut Rng) -> Cmd {
        if !self.retry.is_empty() && rng.chance(50) {
            let i = rng.below(self.retry.len() as u64) as usize;
            return self.retry.swap_remove(i);
        }
        let roll = rng.below(100);
        let attempt = if self.attempt_list.is_empty() {
            None
        } else {
            Some(self.attempt_list[rng.below(self.attempt_list.len() as u64) as usize].clone())
        };
        let cmd = match (roll, attempt) {
            (0..=34, _) | (_, None) => {
                let agent = rng.below(w.agents.len() as u64) as usize;
                let snap = rng.below(w.snapshots.len() as u64) as usize;
                let capture = rng.chance(20);
                let c = self.execute(w, agent, snap, capture);
                self.executes.push(self.sent.len());
                c
            }
            (35..=49, _) if !self.sent.is_empty() => {
                // A retry with the same key (the same command).
                let pick = if rng.chance(70) && !self.executes.is_empty() {
                    self.executes[rng.below(self.executes.len() as u64) as usize]
                } else {
                    rng.below(self.sent.len() as u64) as usize
                };
                return self.sent[pick].clone();
            }
            (50..=61, Some((id, agent, _))) => Cmd::Capture(CapturePayment {
                key: self.key("cap"),
                actor: w.agents[agent].actor.clone(),
                attempt_id: id,
                amount: None,
            }),
            (62..=70, Some((id, agent, _))) => Cmd::Void(VoidPayment {
                key: self.key("void"),
                actor: w.agents[agent].actor.clone(),
                attempt_id: id,
            }),
            (71..=79, Some((id, agent, _))) => Cmd::Refund(RefundPayment {
                key: self.key("ref"),
                actor: w.agents[agent].actor.clone(),
                attempt_id: id,
                amount: rng.chance(50).then(|| {
                    Money::parse("10.00", agent_mandate::domain::Currency::EUR).expect("amount")
                }),
            }),
            (80..=88, Some((id, agent, snapshot))) => Cmd::Commit(CommitOrder {
                key: self.key("order"),
                actor: w.agents[agent].actor.clone(),
                attempt_id: id,
                checkout: examples::valid_checkout(w.snapshots[snapshot].id()),
            }),
            (89..=98, _) => Cmd::Sweep,
            (_, _) if !self.revoked && rng.chance(30) => {
                self.revoked = true;
                Cmd::Revoke(ChangeMandate {
                    key: self.key("revoke"),
                    by: admin(),
                    mandate_id: w.chain[w.chain.len() - 1].id().clone(),
                    event: LifecycleEvent::Revoke {
                        reason: Text::new("the buyer withdrew the leaf agent's authority")
                            .expect("text"),
                    },
                })
            }
            _ => Cmd::Sweep,
        };
        self.sent.push(cmd.clone());
        cmd
    }
}
