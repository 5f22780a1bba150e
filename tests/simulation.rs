//! The deterministic simulator (STYLE rule 11, TigerBeetle's VOPR): many concurrent commands
//! against the engine on virtual time, a PSP that is slow, lies about failures, loses answers
//! and processes late, an audit sink that refuses appends, and crashes between two awaits,
//! with I2, I3, I4, I5, I9 and I15 checked after every step and the store compared with the
//! PSP's truth at quiescence. A failure prints the seed, the step, the invariant and the last
//! steps; `SIM_SEED=<n>` replays it exactly.
//!
//! ```text
//! cargo test --features testkit,sqlite --test simulation                  # the CI budget
//! SIM_SEED=17 cargo test --features testkit,sqlite --test simulation -- --nocapture
//! SIM_FAULTS=slow SIM_SEEDS=0..200 cargo test ... --test simulation -- --nocapture
//! SIM_STEPS=1000000 cargo test --release --features testkit,sqlite --test simulation -- --nocapture
//! ```
//!
//! Variables: `SIM_SEED` (one seed), `SIM_SEEDS` (`a..b`), `SIM_STEPS` (total steps, over
//! consecutive seeds; prints steps/second), `SIM_FAULTS` (`all`, `none`, or a list of
//! `slow,late,gateway,drop,transient,stall,crash,audit`), `SIM_BACKEND` (`memory`, `sqlite`),
//! `SIM_KEEP_GOING=1` (report every failing seed, then fail), `SIM_TRACE` (steps of trace
//! kept, 40), `SIM_VERBOSE=1` (print the trace of passing seeds too).
#![cfg(all(feature = "testkit", feature = "sqlite"))]

mod common;
mod sim;

use std::time::Instant;

use sim::run::{Failure, Sim};
use sim::world::Backend;
use sim::Faults;

/// Steps per seed before quiescence.
const STEPS_PER_SEED: u64 = 400;
/// The seeds CI runs on the memory backend, and on SQLite.
const CI_SEEDS_MEMORY: std::ops::Range<u64> = 0..100;
const CI_SEEDS_SQLITE: std::ops::Range<u64> = 0..4;

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn run_seed(seed: u64, faults: Faults, backend: &Backend, steps: u64) -> Result<u64, Failure> {
    let backend = match backend {
        Backend::Memory => Backend::Memory,
        Backend::Sqlite(dir) => Backend::Sqlite(dir.join(format!("sim-{seed}.db"))),
    };
    let mut sim = Sim::new(seed, faults, backend.clone());
    let out = (|| {
        for _ in 0..steps {
            sim.step()?;
        }
        sim.quiesce()?;
        if env("SIM_VERBOSE").is_some() {
            for t in sim.trace() {
                println!("  {t}");
            }
        }
        Ok(sim.step)
    })();
    drop(sim);
    if let Backend::Sqlite(path) = &backend {
        for ext in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{ext}", path.display()));
        }
    }
    out
}

fn simulate(backend: Backend, ci_seeds: std::ops::Range<u64>) {
    let faults = Faults::parse(&env("SIM_FAULTS").unwrap_or_else(|| "all".into()));
    let name = match backend {
        Backend::Memory => "memory",
        Backend::Sqlite(_) => "sqlite",
    };
    let total = env("SIM_STEPS").map(|s| s.parse::<u64>().expect("SIM_STEPS"));
    let seeds: Box<dyn Iterator<Item = u64>> = if let Some(s) = env("SIM_SEED") {
        Box::new(std::iter::once(s.parse().expect("SIM_SEED")))
    } else if let Some(r) = env("SIM_SEEDS") {
        let (a, b) = r.split_once("..").expect("SIM_SEEDS=a..b");
        Box::new(a.parse().expect("SIM_SEEDS")..b.parse().expect("SIM_SEEDS"))
    } else if total.is_some() {
        Box::new(0..)
    } else {
        Box::new(ci_seeds)
    };
    let keep_going = env("SIM_KEEP_GOING").is_some();
    let started = Instant::now();
    let (mut steps, mut runs) = (0u64, 0u64);
    let mut failures = Vec::new();
    for seed in seeds {
        if total.is_some_and(|t| steps >= t) {
            break;
        }
        match run_seed(seed, faults, &backend, STEPS_PER_SEED) {
            Ok(n) => steps += n,
            Err(f) => {
                steps += f.step;
                eprintln!("{f}");
                eprintln!(
                    "replay: SIM_SEED={} SIM_FAULTS={} SIM_BACKEND={name} cargo test --features testkit,sqlite --test simulation -- --nocapture\n",
                    f.seed,
                    faults.names()
                );
                failures.push(f);
                if !keep_going {
                    break;
                }
            }
        }
        runs += 1;
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "simulation ({name}, faults {}): {runs} seeds, {steps} steps in {secs:.2} s: {:.0} steps/s",
        faults.names(),
        steps as f64 / secs.max(1e-9)
    );
    if !failures.is_empty() {
        let list: Vec<String> = failures
            .iter()
            .map(|f| format!("seed {} step {}: {}", f.seed, f.step, f.violation.invariant))
            .collect();
        panic!(
            "{} failing seed(s):\n  {}",
            failures.len(),
            list.join("\n  ")
        );
    }
}

fn backend_wanted(name: &str) -> bool {
    env("SIM_BACKEND").is_none_or(|b| b == name)
}

/// Defends I2, I3, I4, I5, I9, I13 and I15 under every fault class, on the memory adapters.
#[test]
fn simulation_memory() {
    if backend_wanted("memory") {
        simulate(Backend::Memory, CI_SEEDS_MEMORY);
    }
}

/// The same on a SQLite file, reopened on every restart (fewer seeds: it is slower).
#[test]
fn simulation_sqlite() {
    if !backend_wanted("sqlite") || (env("SIM_BACKEND").is_none() && env("SIM_STEPS").is_some()) {
        return;
    }
    let dir = std::env::temp_dir().join(format!("agent-mandate-sim-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    simulate(Backend::Sqlite(dir.clone()), CI_SEEDS_SQLITE);
    let _ = std::fs::remove_dir_all(&dir);
}

/// With every safety control on (`Controls::recommended()`, velocity and breaker tightened; the
/// memory backend, every fault,
/// a short seed set): the invariants hold, and no payment reached the PSP that its decision
/// refused: every submission of an attempt follows an `allowed` decision for it, with no
/// refusal in between. Prints how often the controls acted.
#[test]
fn simulation_memory_with_controls() {
    use agent_mandate::domain::{AttemptStatus, AuditKind, BlockerCode, Outcome};
    use std::collections::HashMap;
    if !backend_wanted("memory") {
        return;
    }
    sim::world::CONTROLS.with(|c| c.set(true));
    let faults = Faults::parse("all");
    let (mut submissions, mut refusals, mut by_control, mut alerts) = (0u64, 0u64, 0u64, 0u64);
    for seed in 0..12 {
        let mut sim = Sim::new(seed, faults, Backend::Memory);
        let out = (|| {
            for _ in 0..STEPS_PER_SEED {
                sim.step()?;
            }
            sim.quiesce()
        })();
        if let Err(f) = out {
            panic!("seed {seed} with controls: {f}");
        }
        // The last decision seen for each attempt: allowed or not.
        let mut last: HashMap<String, Outcome> = HashMap::new();
        for e in sim.audit_events() {
            match e.kind {
                AuditKind::Decision {
                    outcome,
                    attempt_id: Some(a),
                    ref blockers,
                    ..
                } => {
                    if outcome != Outcome::Allowed {
                        refusals += 1;
                        if blockers.iter().any(|b| {
                            b.code == BlockerCode::CircuitOpen
                                || b.code == BlockerCode::IntentMismatch
                                || (b.code == BlockerCode::ConfirmationRequired
                                    && b.message.contains("velocity"))
                        }) {
                            by_control += 1;
                        }
                    }
                    last.insert(a.to_string(), outcome);
                }
                AuditKind::AttemptTransition {
                    attempt_id,
                    to: AttemptStatus::PendingProviderResponse,
                    ..
                } => {
                    submissions += 1;
                    assert_eq!(
                        last.get(attempt_id.as_str()),
                        Some(&Outcome::Allowed),
                        "seed {seed}: attempt {attempt_id} was submitted without an allowed decision"
                    );
                }
                AuditKind::Alert { .. } => alerts += 1,
                _ => {}
            }
        }
    }
    sim::world::CONTROLS.with(|c| c.set(false));
    println!(
        "simulation with controls: {submissions} submissions, each after an allowed decision; {refusals} refusals, {by_control} by a control; {alerts} alerts"
    );
    assert!(submissions > 0);
    assert!(
        by_control > 0,
        "the controls never acted: the run proves nothing about them"
    );
}
