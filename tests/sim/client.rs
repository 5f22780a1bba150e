//! The clients: a random mix of commands (payments by the agents of every level, retries
//! with the same key, capture, void, refund, order commitment, reconciliation sweeps, a
//! revocation), each run as a boxed future on the simulator's executor. Each command is asked
//! by a principal: mostly the one the permission table allows (the attempt's agent, the buyer,
//! an operator), sometimes one it does not (another agent, another buyer), and the run checks
//! that exactly the allowed ones get past the permission check.

use std::collections::HashMap;

use agent_mandate::domain::{
    examples, AttemptId, LifecycleEvent, Money, OrderId, PaymentAction, PaymentRequest, Principal,
    Text,
};
use agent_mandate::engine::{
    attempt_id_for, CapturePayment, ChangeMandate, CommitOrder, Engine, EngineError,
    ExecutePayment, OrderOutcome, PaymentOutcome, RefundPayment, VoidPayment,
};

use super::exec::BoxFuture;
use super::world::World;
use super::Rng;
use crate::common::engine::key;
use crate::common::principals::{buyer_p, operator_p};

#[derive(Debug, Clone)]
pub enum Cmd {
    Execute(Principal, Box<ExecutePayment>),
    Capture(Principal, CapturePayment),
    Void(Principal, VoidPayment),
    Refund(Principal, RefundPayment),
    Commit(Principal, CommitOrder),
    Sweep,
    Revoke(Principal, ChangeMandate),
}

/// What a finished command reports.
#[derive(Debug)]
pub struct Done {
    /// An order this command committed (for I4).
    pub order: Option<(AttemptId, OrderId)>,
    /// The attempt a payment command answered with (the client now knows it).
    pub attempt: Option<AttemptId>,
    pub text: String,
    /// Whether the engine answered `NotPermitted` (the principal was refused).
    pub not_permitted: bool,
    /// Whether the engine answered with an error.
    pub error: bool,
}

/// Another buyer: never permitted anything here.
fn stranger_buyer() -> Principal {
    Principal::Buyer("buyer_999".parse().expect("id"))
}

fn short(id: &AttemptId) -> &str {
    let s = id.as_str();
    &s[..s.len().min(10)]
}

impl Cmd {
    pub fn label(&self) -> String {
        match self {
            Cmd::Execute(p, c) => format!(
                "execute by {p} key={} {} actor={} amount={}",
                c.key.as_str(),
                short(&attempt_id_for(&c.request.actor.id, &c.key)),
                c.request.actor.id,
                c.request.amount
            ),
            Cmd::Capture(p, c) => format!(
                "capture by {p} key={} {}",
                c.key.as_str(),
                short(&c.attempt_id)
            ),
            Cmd::Void(p, c) => {
                format!(
                    "void by {p} key={} {}",
                    c.key.as_str(),
                    short(&c.attempt_id)
                )
            }
            Cmd::Refund(p, c) => format!(
                "refund by {p} key={} {}",
                c.key.as_str(),
                short(&c.attempt_id)
            ),
            Cmd::Commit(p, c) => format!(
                "commit_order by {p} key={} {}",
                c.key.as_str(),
                short(&c.attempt_id)
            ),
            Cmd::Sweep => "reconcile_pending".into(),
            Cmd::Revoke(p, c) => format!("revoke by {p} {}", c.mandate_id),
        }
    }

    /// Whether the permission table lets its principal past the permission check, given the
    /// agent of the attempt it names (`actor`) and of the request (execute).
    pub fn permitted(&self, actor_of: impl Fn(&AttemptId) -> Option<Principal>) -> bool {
        let settles = |p: &Principal, id: &AttemptId| {
            *p == buyer_p() || p.is_operator() || actor_of(id).as_ref() == Some(p)
        };
        match self {
            Cmd::Execute(p, c) => *p == Principal::Agent(c.request.actor.id.clone()),
            Cmd::Capture(p, c) => actor_of(&c.attempt_id).as_ref() == Some(p),
            Cmd::Void(p, c) => settles(p, &c.attempt_id),
            Cmd::Refund(p, c) => settles(p, &c.attempt_id),
            Cmd::Commit(p, c) => settles(p, &c.attempt_id),
            Cmd::Sweep => true,
            Cmd::Revoke(p, _) => *p == buyer_p() || p.is_operator(),
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
                other => format!("unknown outcome {other:?}"),
            };
            let done = |text: String| Done {
                order: None,
                attempt: None,
                text,
                not_permitted: false,
                error: false,
            };
            let failed = |e: EngineError| Done {
                not_permitted: matches!(e, EngineError::NotPermitted { .. }),
                error: true,
                ..done(format!("error: {e}"))
            };
            let paid = |o: PaymentOutcome| Done {
                order: None,
                attempt: o.attempt().map(|a| a.id.clone()),
                text: text(&o),
                not_permitted: false,
                error: false,
            };
            match self {
                Cmd::Execute(p, c) => match engine.execute_payment(&p, &c).await {
                    Ok(o) => paid(o),
                    Err(e) => failed(e),
                },
                Cmd::Capture(p, c) => match engine.capture(&p, &c).await {
                    Ok(o) => done(text(&o)),
                    Err(e) => failed(e),
                },
                Cmd::Void(p, c) => match engine.void(&p, &c).await {
                    Ok(o) => done(text(&o)),
                    Err(e) => failed(e),
                },
                Cmd::Refund(p, c) => match engine.refund(&p, &c).await {
                    Ok(o) => done(text(&o)),
                    Err(e) => failed(e),
                },
                Cmd::Commit(p, c) => match engine.commit_order(&p, &c).await {
                    Ok(OrderOutcome::Committed { order, .. }) => Done {
                        order: Some((order.attempt_id.clone(), order.id.clone())),
                        attempt: None,
                        text: format!("order committed {}", order.id),
                        not_permitted: false,
                        error: false,
                    },
                    Ok(OrderOutcome::Existing { order }) => {
                        done(format!("order existing {}", order.id))
                    }
                    Ok(OrderOutcome::Failed { reason, .. }) => {
                        done(format!("order failed: {reason}"))
                    }
                    Ok(other) => done(format!("unknown outcome {other:?}")),
                    Err(e) => failed(e),
                },
                Cmd::Sweep => match engine.reconcile_pending(100).await {
                    Ok(v) => done(format!("swept {}", v.len())),
                    Err(e) => done(format!("error: {e}")),
                },
                Cmd::Revoke(p, c) => match engine.change_mandate(&p, &c).await {
                    Ok(_) => done("revoked".into()),
                    Err(e) => failed(e),
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
        Cmd::Execute(
            Principal::Agent(a.actor.id.clone()),
            Box::new(
                ExecutePayment::new(
                    k,
                    request,
                    s.clone(),
                    examples::valid_checkout(s.id()),
                    a.card.clone(),
                )
                .with_capture(capture),
            ),
        )
    }

    /// The principal of the agent whose command made `attempt`.
    pub fn agent_of(&self, w: &World, attempt: &AttemptId) -> Option<Principal> {
        self.snapshot_of
            .get(attempt)
            .map(|&(agent, _)| Principal::Agent(w.agents[agent].actor.id.clone()))
    }

    /// A payment command answered with `attempt`: follow-ups may name it now.
    pub fn learned(&mut self, attempt: &AttemptId) {
        if let Some(&(agent, snapshot)) = self.snapshot_of.get(attempt)
            && !self.attempt_list.iter().any(|(a, _, _)| a == attempt)
        {
            self.attempt_list.push((attempt.clone(), agent, snapshot));
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
                let mut c = self.execute(w, agent, snap, capture);
                if rng.chance(5) {
                    // Another agent asks to pay under this agent's mandate: refused.
                    if let Cmd::Execute(p, _) = &mut c {
                        let other = (agent + 1) % w.agents.len();
                        *p = Principal::Agent(w.agents[other].actor.id.clone());
                    }
                }
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
            (50..=61, Some((id, agent, _))) => Cmd::Capture(
                asker(w, agent, rng),
                CapturePayment::new(self.key("cap"), id),
            ),
            (62..=70, Some((id, agent, _))) => {
                Cmd::Void(asker(w, agent, rng), VoidPayment::new(self.key("void"), id))
            }
            (71..=79, Some((id, agent, _))) => Cmd::Refund(
                asker(w, agent, rng),
                RefundPayment::new(self.key("ref"), id).with_amount(rng.chance(50).then(|| {
                    Money::parse("10.00", agent_mandate::domain::Currency::EUR).expect("amount")
                })),
            ),
            (80..=88, Some((id, agent, snapshot))) => Cmd::Commit(
                asker(w, agent, rng),
                CommitOrder::new(
                    self.key("order"),
                    id,
                    examples::valid_checkout(w.snapshots[snapshot].id()),
                ),
            ),
            (89..=98, _) => Cmd::Sweep,
            (_, _) if !self.revoked && rng.chance(30) => {
                self.revoked = true;
                Cmd::Revoke(
                    if rng.chance(80) {
                        buyer_p()
                    } else {
                        operator_p()
                    },
                    ChangeMandate::new(
                        self.key("revoke"),
                        w.chain[w.chain.len() - 1].id().clone(),
                        LifecycleEvent::Revoke {
                            reason: Text::new("the buyer withdrew the leaf agent's authority")
                                .expect("text"),
                        },
                    ),
                )
            }
            _ => Cmd::Sweep,
        };
        self.sent.push(cmd.clone());
        cmd
    }
}

/// Who asks a follow-up on an attempt of `agent`: mostly its agent, else the buyer or an
/// operator (both allowed to void, refund and commit, never to capture), sometimes another
/// agent or another buyer (never allowed).
fn asker(w: &World, agent: usize, rng: &mut Rng) -> Principal {
    match rng.below(100) {
        0..=69 => Principal::Agent(w.agents[agent].actor.id.clone()),
        70..=81 => buyer_p(),
        82..=91 => operator_p(),
        92..=96 => {
            let other = (agent + 1) % w.agents.len();
            Principal::Agent(w.agents[other].actor.id.clone())
        }
        _ => stranger_buyer(),
    }
}
