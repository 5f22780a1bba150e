//! One seed's run: the step loop (start a command, poll one in-flight command to its next
//! yield point, move the clock, crash and restart), the checks after every step, quiescence
//! and the failure report.

use std::collections::VecDeque;
use std::sync::Arc;

use agent_mandate::adapters::memory::ManualClock;
use agent_mandate::domain::examples;

use super::check::{Checker, Violation};
use super::client::{Clients, Cmd, Done};
use super::exec::{Park, Polled, Task};
use super::world::{config, Backend, World, PSP_DEADLINE, PSP_SLOWEST};
use super::{Ctx, Faults, Rng};

const SECOND: i64 = 1_000_000;
/// Commands in flight at most.
const MAX_IN_FLIGHT: usize = 5;
/// Steps of the trace printed with a failure (`SIM_TRACE` to change).
fn trace_len() -> usize {
    std::env::var("SIM_TRACE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40)
}

/// A broken invariant, with where and how.
#[derive(Debug)]
pub struct Failure {
    pub seed: u64,
    pub step: u64,
    pub violation: Violation,
    pub trace: Vec<String>,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "SIMULATION FAILED: seed {} step {}: invariant {} broken: {}",
            self.seed, self.step, self.violation.invariant, self.violation.message
        )?;
        writeln!(f, "last steps:")?;
        for t in &self.trace {
            writeln!(f, "  {t}")?;
        }
        Ok(())
    }
}

pub struct Sim {
    seed: u64,
    world: World,
    tasks: Vec<Task<Done>>,
    /// The command of each in-flight task (by task id), for the client's retry.
    cmds: std::collections::HashMap<u64, Cmd>,
    clients: Clients,
    checker: Checker,
    trace: VecDeque<String>,
    trace_len: usize,
    next_task: u64,
    pub step: u64,
}

impl Sim {
    pub fn new(seed: u64, faults: Faults, backend: Backend) -> Sim {
        let clock = Arc::new(ManualClock::new(examples::now()));
        let ctx = Arc::new(Ctx::new(seed, faults, clock));
        let world = World::new(ctx.clone(), backend);
        ctx.set_quiet(false);
        Sim {
            seed,
            world,
            tasks: Vec::new(),
            cmds: std::collections::HashMap::new(),
            clients: Clients::default(),
            checker: Checker::default(),
            trace: VecDeque::new(),
            trace_len: trace_len(),
            next_task: 0,
            step: 0,
        }
    }

    fn note(&mut self, what: String) {
        if self.trace.len() >= self.trace_len {
            self.trace.pop_front();
        }
        let t = (self.world.ctx.now_micros() - examples::now().timestamp_micros()) / SECOND;
        self.trace
            .push_back(format!("step {} t+{}s {}", self.step, t, what));
    }

    fn failure(&self, violation: Violation) -> Failure {
        Failure {
            seed: self.seed,
            step: self.step,
            violation,
            trace: self.trace.iter().cloned().collect(),
        }
    }

    fn advance(&mut self, micros: i64, why: &str) {
        self.world
            .ctx
            .clock
            .advance(chrono::Duration::microseconds(micros));
        self.note(format!("clock +{}s ({why})", micros / SECOND));
    }

    fn start(&mut self, cmd: Cmd) {
        self.next_task += 1;
        let label = cmd.label();
        self.note(format!("start #{} {}", self.next_task, label));
        let fut = cmd.clone().future(self.world.engine.clone());
        self.cmds.insert(self.next_task, cmd);
        self.tasks.push(Task::new(self.next_task, label, fut));
    }

    /// Polls task `i` to its next yield point or its end.
    fn poll(&mut self, i: usize) -> Result<(), Violation> {
        match self.tasks[i].step() {
            Polled::Parked => {
                let id = self.tasks[i].id;
                self.note(format!("poll #{id} -> at {}", super::exec::last_point()));
                Ok(())
            }
            Polled::Done(done) => {
                let task = self.tasks.swap_remove(i);
                self.note(format!("end #{} {} -> {}", task.id, task.label, done.text));
                let cmd = self.cmds.remove(&task.id);
                if let Some(cmd) = &cmd {
                    let permitted = cmd.permitted(|a| self.clients.agent_of(&self.world, a));
                    // Refused principals may also meet another error first (a key in flight);
                    // what may never happen: a refused one succeeding, an allowed one refused.
                    if (permitted && done.not_permitted) || (!permitted && !done.error) {
                        return Err(Violation {
                            invariant: "I14",
                            message: format!(
                                "{} -> {}: the permission table says {}",
                                task.label,
                                done.text,
                                if permitted { "permitted" } else { "refused" }
                            ),
                        });
                    }
                }
                if let Some(a) = &done.attempt {
                    self.clients.learned(a);
                }
                if done.text.contains("in flight")
                    && let Some(cmd) = cmd
                {
                    self.clients.retry.push(cmd);
                }
                match &done.order {
                    Some((attempt, order)) => self.checker.order_committed(attempt, order),
                    None => Ok(()),
                }
            }
        }
    }

    fn crash(&mut self) {
        let all = !matches!(self.world.backend, Backend::Memory) || self.world.ctx.rng().chance(60);
        let mut dropped = Vec::new();
        let mut i = 0;
        while i < self.tasks.len() {
            if all || self.world.ctx.rng().chance(50) {
                let t = self.tasks.swap_remove(i);
                dropped.push(t.id);
                if let Some(cmd) = self.cmds.remove(&t.id) {
                    self.clients.retry.push(cmd);
                }
            } else {
                i += 1;
            }
        }
        self.world.restart();
        self.note(format!(
            "CRASH: dropped {dropped:?}; restarted (#{})",
            self.world.restarts
        ));
    }

    /// The earliest instant a parked task waits for.
    fn next_wake(&self) -> Option<i64> {
        self.tasks
            .iter()
            .filter_map(|t| match t.park {
                Park::Until(at) => Some(at),
                Park::Now => None,
            })
            .min()
    }

    /// One step of the simulation, then the checks.
    pub fn step(&mut self) -> Result<(), Failure> {
        self.step += 1;
        self.world.psp.apply_due();
        let now = self.world.ctx.now_micros();
        let faults = self.world.ctx.faults;
        let roll = self.world.ctx.rng().below(1000);
        let runnable: Vec<usize> = (0..self.tasks.len())
            .filter(|&i| self.tasks[i].runnable(now))
            .collect();
        // Time moves while commands could run only when the process may stall.
        let time = faults.stall || runnable.is_empty();
        let result = match roll {
            0..=9 if faults.crash => {
                self.crash();
                Ok(())
            }
            10..=59 if time => {
                let by = self.world.ctx.rng().between(1, 5) as i64 * SECOND;
                self.advance(by, "small");
                Ok(())
            }
            60..=79 if time => {
                let by = self.world.ctx.rng().between(31, 90) as i64 * SECOND;
                self.advance(by, "past the lease");
                Ok(())
            }
            80..=99 if time => {
                let by = self.world.ctx.rng().between(3600, 5400) as i64 * SECOND;
                self.advance(by, "past the window");
                Ok(())
            }
            100..=399 if self.tasks.len() < MAX_IN_FLIGHT => {
                let mut rng = Rng::new(self.world.ctx.rng().next_u64());
                let cmd = self.clients.next(&self.world, &mut rng);
                self.start(cmd);
                Ok(())
            }
            _ if !runnable.is_empty() => {
                let pick = runnable[self.world.ctx.rng().below(runnable.len() as u64) as usize];
                self.poll(pick)
            }
            _ => {
                if let Some(at) = self.next_wake() {
                    self.advance(at - now, "to the next wake-up");
                } else {
                    let mut rng = Rng::new(self.world.ctx.rng().next_u64());
                    let cmd = self.clients.next(&self.world, &mut rng);
                    self.start(cmd);
                }
                Ok(())
            }
        };
        result
            .and_then(|()| {
                self.checker
                    .every_step(&self.world, &self.clients.attempts, self.tasks.is_empty())
            })
            .map_err(|v| self.failure(v))
    }

    /// Every event of the audit trail, in order (for checks made after a run).
    pub fn audit_events(&self) -> Vec<agent_mandate::domain::AuditEvent> {
        let mut out = Vec::new();
        let mut next = 1;
        loop {
            let page =
                super::exec::block_on(self.world.audit.read(next, 1024)).expect("audit read");
            if page.is_empty() {
                return out;
            }
            next += page.len() as u64;
            out.extend(page.iter().map(|e| e.event().expect("an event")));
        }
    }

    /// The last steps, oldest first.
    pub fn trace(&self) -> impl Iterator<Item = &String> {
        self.trace.iter()
    }

    /// Runs every in-flight task to its end (no new commands, no faults, no crash).
    fn drain(&mut self) -> Result<(), Violation> {
        while !self.tasks.is_empty() {
            let now = self.world.ctx.now_micros();
            match (0..self.tasks.len()).find(|&i| self.tasks[i].runnable(now)) {
                Some(i) => self.poll(i)?,
                None => {
                    let at = self.next_wake().unwrap_or(now);
                    self.advance(at - now, "drain: to the next wake-up");
                }
            }
        }
        Ok(())
    }

    fn run_alone(&mut self, cmd: Cmd) -> Result<(), Violation> {
        self.start(cmd);
        self.drain()
    }

    /// Quiescence: faults off, in-flight commands finish, every lease and deadline passes,
    /// the effects the PSP still owes land, interrupted payments are retried with their keys,
    /// sweeps run; then the store must agree with the PSP.
    pub fn quiesce(&mut self) -> Result<(), Failure> {
        self.step += 1;
        self.note("QUIESCE".into());
        self.world.ctx.set_quiet(true);
        let r = (|| {
            self.drain()?;
            let past = (config().lease() + PSP_DEADLINE.unwrap_or(PSP_SLOWEST)).as_micros() as i64
                + SECOND;
            self.advance(past, "quiesce: past every lease and deadline");
            self.world.psp.apply_due();
            self.run_alone(Cmd::Sweep)?;
            // Clients retry what a crash or an in-flight answer interrupted, then every
            // payment, with the same keys.
            let mut unfinished: Vec<Cmd> = std::mem::take(&mut self.clients.retry);
            unfinished.extend(
                self.clients
                    .sent
                    .iter()
                    .filter(|c| matches!(c, Cmd::Execute(..)))
                    .cloned(),
            );
            for cmd in unfinished {
                self.run_alone(cmd)?;
            }
            self.run_alone(Cmd::Sweep)?;
            self.checker
                .every_step(&self.world, &self.clients.attempts, true)?;
            self.checker.quiescent(&self.world)
        })();
        r.map_err(|v| self.failure(v))
    }
}
