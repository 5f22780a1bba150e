//! agent-mandate, Cedar and Rego on the same 1,024 seeded requests (DESIGN.md section 6: at
//! least 10x faster than each, identical decisions).
//!
//! Each benchmark decides one request per iteration, cycling through the set, so criterion's
//! median is the time of one decision averaged over the mix of allowed and refused requests.
//! Everything but the decision is prepared once: agent-mandate gets its `EvaluationDocument`;
//! Cedar its policies and entities (the `Context` and `Request` are built per decision);
//! Rego a prepared engine with policy and data (the input `Value`, `set_input` and
//! `eval_rule` are per decision). `hand_written` is the same rules as a plain Rust expression
//! over integers, the floor.
//!
//! Run: `cargo bench -p peers --bench engines -- --warm-up-time 1 --measurement-time 3`.
//! After the runs it prints the medians and the ratios read back from criterion's estimates.

use std::hint::black_box;
use std::path::PathBuf;

use agent_mandate::domain::evaluate;
use criterion::{criterion_group, Criterion, Throughput};
use peers::Engines;

const GROUP: &str = "policy_engines";
const ENGINES: [&str; 4] = ["agent_mandate", "cedar", "rego", "hand_written"];

fn next(i: &mut usize, n: usize) -> usize {
    let current = *i;
    *i = if current + 1 == n { 0 } else { current + 1 };
    current
}

fn policy_engines(c: &mut Criterion) {
    let mut engines = Engines::bench_set().expect("engines set up");
    let n = engines.cases.len();
    for i in 0..n {
        let v = engines.verdicts(i);
        assert!(v.agree(), "engines disagree on\n{}", engines.cases[i]);
    }
    let Engines {
        cases,
        native,
        cedar,
        cedar_requests,
        mut rego,
        rego_requests,
    } = engines;

    let mut group = c.benchmark_group(GROUP);
    group.throughput(Throughput::Elements(1));
    let mut i = 0;
    group.bench_function(ENGINES[0], |b| {
        b.iter(|| evaluate(black_box(&native[next(&mut i, n)].input())))
    });
    let mut i = 0;
    group.bench_function(ENGINES[1], |b| {
        b.iter(|| cedar.decide(black_box(&cedar_requests[next(&mut i, n)])))
    });
    let mut i = 0;
    group.bench_function(ENGINES[2], |b| {
        b.iter(|| rego.decide(black_box(&rego_requests[next(&mut i, n)])))
    });
    let mut i = 0;
    group.bench_function(ENGINES[3], |b| {
        b.iter(|| black_box(&cases[next(&mut i, n)]).rule_allows())
    });
    group.finish();
}

criterion_group!(benches, policy_engines);

/// Where criterion writes its estimates (the same rule criterion uses, without `cargo metadata`).
fn criterion_dir() -> Option<PathBuf> {
    if let Some(home) = std::env::var_os("CRITERION_HOME") {
        return Some(PathBuf::from(home));
    }
    if let Some(target) = std::env::var_os("CARGO_TARGET_DIR") {
        return Some(PathBuf::from(target).join("criterion"));
    }
    // target/<profile>/deps/engines-<hash>
    let exe = std::env::current_exe().ok()?;
    Some(exe.parent()?.parent()?.parent()?.join("criterion"))
}

/// The median of one benchmark, in nanoseconds, from its latest run.
fn median_ns(engine: &str) -> Option<f64> {
    let path = criterion_dir()?
        .join(GROUP)
        .join(engine)
        .join("new")
        .join("estimates.json");
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
    json["median"]["point_estimate"].as_f64()
}

fn report() {
    let medians: Vec<Option<f64>> = ENGINES.iter().map(|e| median_ns(e)).collect();
    let Some(native) = medians[0] else {
        return;
    };
    println!("\n{GROUP}: median per decision");
    println!("| engine | median | median / agent-mandate's |");
    println!("|---|---:|---:|");
    for (engine, median) in ENGINES.iter().zip(&medians) {
        let Some(m) = median else { continue };
        println!("| {engine} | {m:.1} ns | {:.2} |", m / native);
    }
}

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    report();
}
