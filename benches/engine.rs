//! Criterion benchmarks of the engine on the memory adapters (DESIGN.md section 6):
//! - in-memory execute: decision + hold + fake PSP authorize + audit append (goal: median
//!   under 10 us);
//! - 8 threads placing and releasing holds on one shared budget (a three-level chain with a
//!   tight cap): goal at least 1M holds/s, no overspend (checked after every run).
//!
//! Run: `cargo bench --bench engine --features testkit`

use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use agent_mandate::adapters::memory::{MemoryPorts, MemoryStore};
use agent_mandate::domain::{examples, AttemptId, Mandate, Money};
use agent_mandate::engine::{CreateMandate, Engine, EngineConfig, ExecutePayment};
use agent_mandate::ports::{
    CredentialDisplay, CredentialKind, FundingType, HoldError, HoldRequest, NewCredential, Secret,
    Store,
};
use agent_mandate::testkit::FakePsp;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

/// Polls a future that never waits (every memory adapter completes at once).
fn ready<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
    }
}

fn eur(a: &str) -> Money {
    Money::parse(a, agent_mandate::domain::Currency::EUR).expect("amount")
}

/// A fresh engine on memory adapters with a roomy Travel Backpack mandate and the agent's card;
/// returns the engine and a template command.
///
/// With `own_trail`, the store appends its events to the audit sink's trail itself
/// (`MemoryStore::with_trail`), instead of the outbox and a delivery round.
fn world_on(own_trail: bool) -> (Engine, ExecutePayment) {
    let mut memory = MemoryPorts::new(examples::now(), |vault, _| {
        Arc::new(FakePsp::with_vault(vault))
    });
    if own_trail {
        memory.ports.store = Arc::new(MemoryStore::new().with_trail(memory.audit.clone()));
    }
    // Threshold events off: the benchmark measures the steady path.
    let config = EngineConfig::default()
        .with_threshold_percent(None)
        .expect("config");
    let engine = Engine::new(memory.ports.clone(), config).expect("engine configuration");
    let mut spec = examples::travel_backpack_mandate().spec().clone();
    spec.scope.max_uses = None;
    spec.scope.amount.max_payment_attempts = None;
    spec.scope.budgets.lifetime = None;
    spec.scope.budgets.windows[0].max_amount = Some(eur("10000000000.00"));
    spec.scope.budgets.windows[0].max_count = None;
    ready(engine.create_mandate(
        &buyer_p(),
        &CreateMandate::new("create".parse().expect("key"), spec),
    ))
    .expect("mandate");
    let card = ready(engine.store_credential(
        &buyer_p(),
        &"card".parse().expect("key"),
        NewCredential {
            kind: CredentialKind::PaymentMethod,
            owner: examples::agent().id,
            buyer_id: examples::buyer(),
            secret: Secret::new("pm_card_visa"),
            cvc: None,
            display: CredentialDisplay {
                brand: "visa".into(),
                last4: "4242".into(),
                exp_month: 12,
                exp_year: 2030,
                funding: FundingType::Credit,
            },
        },
    ))
    .expect("card")
    .value
    .reference;
    let snapshot = examples::travel_backpack_snapshot();
    let template = ExecutePayment::new(
        "k".parse().expect("key"),
        examples::authorize_request(&snapshot),
        snapshot.clone(),
        examples::valid_checkout(snapshot.id()),
        card,
    );
    (engine, template)
}

fn execute(c: &mut Criterion) {
    let mut group = c.benchmark_group("engine");
    for (name, own_trail) in [
        ("execute_payment_in_memory", false),
        ("execute_payment_in_memory_own_trail", true),
    ] {
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                // A fresh world every 1,000 payments (not timed): the figure is the steady path of
                // a store holding up to a thousand attempts, not the growth of ever larger maps.
                let mut total = Duration::ZERO;
                let mut done = 0;
                while done < iters {
                    let n = (iters - done).min(1_000);
                    let (engine, template) = world_on(own_trail);
                    let commands: Vec<ExecutePayment> = (0..n)
                        .map(|i| {
                            let mut cmd = template.clone();
                            cmd.key = format!("pay-{i}").parse().expect("key");
                            cmd
                        })
                        .collect();
                    let agent = agent_p();
                    let start = Instant::now();
                    for cmd in &commands {
                        let out = ready(engine.execute_payment(&agent, black_box(cmd)))
                            .expect("executes");
                        debug_assert!(out.attempt().is_some());
                        black_box(out);
                    }
                    total += start.elapsed();
                    done += n;
                }
                total
            })
        });
    }
    group.finish();
    // The benchmark measures what it claims: every execute is allowed and authorized.
    for own_trail in [false, true] {
        let (engine, template) = world_on(own_trail);
        let out = ready(engine.execute_payment(&agent_p(), &template)).expect("executes");
        assert_eq!(
            out.attempt().map(|a| a.status),
            Some(agent_mandate::domain::AttemptStatus::Authorized)
        );
        // Every event reached the trail, nothing waits in the outbox.
        let trail = ready(engine.verify_trail(10)).expect("trail");
        assert!(trail.is_complete() && trail.staged_events == 0, "{trail:?}");
    }
}

/// What the audit trail's bodies cost one payment: the events one execute appends, each
/// serialised to its JSON body and chained (SHA-256), and the hashing alone. The upper bound of
/// what any compact body format could save per payment (the bodies already carry ids and
/// digests, not documents).
fn audit_bodies(c: &mut Criterion) {
    use agent_mandate::domain::{chain_hash, AuditEvent, AuditHash, ChainedEvent};
    let (engine, template) = world_on(true);
    ready(engine.execute_payment(&agent_p(), &template)).expect("executes");
    let trail = ready(engine.ports().audit.read(1, 1_000)).expect("trail");
    // The events of the payment: everything after the set-up (mandate, card).
    let first = trail
        .iter()
        .position(|e| e.body.contains("\"execute_payment\""))
        .expect("the payment's decision");
    let events: Vec<AuditEvent> = trail[first..]
        .iter()
        .map(|e| e.event().expect("event"))
        .collect();
    let bodies: Vec<String> = events.iter().map(AuditEvent::to_body).collect();
    let bytes: usize = bodies.iter().map(String::len).sum();
    eprintln!(
        "audit: {} events, {bytes} body bytes per payment",
        events.len()
    );
    let mut group = c.benchmark_group("audit");
    group.throughput(Throughput::Elements(1));
    group.bench_function("serialise_and_chain_one_payment", |b| {
        b.iter(|| {
            let mut prev = AuditHash::GENESIS;
            for (i, e) in black_box(&events).iter().enumerate() {
                let link = ChainedEvent::link(i as u64 + 1, prev, e.to_body());
                prev = link.hash;
            }
            black_box(prev)
        })
    });
    group.bench_function("chain_hash_one_payment", |b| {
        b.iter(|| {
            let mut prev = AuditHash::GENESIS;
            for (i, body) in black_box(&bodies).iter().enumerate() {
                prev = chain_hash(i as u64 + 1, &prev, body);
            }
            black_box(prev)
        })
    });
    group.finish();
}

/// A three-level chain whose root allows `slots` concurrent holds of 1.00.
fn chain(slots: u32) -> Vec<Mandate> {
    let root = examples::three_level_document(1).chain;
    let mut out = Vec::new();
    for (i, m) in root.into_iter().enumerate() {
        let mut spec = m.spec().clone();
        spec.scope.max_uses = None;
        spec.scope.amount.max_payment_attempts = None;
        spec.scope.budgets.windows.clear();
        spec.scope.budgets.lifetime = if i == 0 {
            Some(eur(&format!("{slots}.00")))
        } else {
            None
        };
        out.push(Mandate::new(spec).expect("mandate"));
    }
    out
}

fn holds(c: &mut Criterion) {
    const THREADS: u64 = 8;
    const SLOTS: u32 = 4;
    let mut group = c.benchmark_group("budget");
    group.throughput(Throughput::Elements(1));
    group.measurement_time(Duration::from_secs(20));
    group.sample_size(20);
    let chain = Arc::new(chain(SLOTS));
    let cap = eur(&format!("{SLOTS}.00"));
    let refused = Arc::new(AtomicU64::new(0));
    let placed = Arc::new(AtomicU64::new(0));
    group.bench_function("8_threads_place_and_release_on_one_chain", |b| {
        b.iter_custom(|iters| {
            // A fresh store per sample: released holds stay on record, so memory stays bounded.
            // At least 400,000 holds per sample, so starting 8 threads is noise; the time is
            // scaled back to `iters`.
            let store = MemoryStore::new();
            let run = iters.max(400_000);
            let per = run.div_ceil(THREADS);
            let start = Instant::now();
            std::thread::scope(|s| {
                for t in 0..THREADS {
                    let (store, chain, refused, placed, cap) =
                        (&store, &chain, &refused, &placed, &cap);
                    s.spawn(move || {
                        for i in 0..per {
                            let id: AttemptId = format!("t{t}-{i}").parse().expect("attempt id");
                            let hold = HoldRequest::on_chain(
                                id.clone(),
                                eur("1.00"),
                                examples::now(),
                                chain,
                            );
                            match ready(store.place_hold(&hold)) {
                                Ok(usage) => {
                                    // No overspend at any level, seen from inside the hold.
                                    let root = usage.last().expect("root level");
                                    assert!(root.held.fits_within(cap), "overspend");
                                    placed.fetch_add(1, Ordering::Relaxed);
                                    ready(store.release_hold(&id)).expect("release");
                                }
                                Err(HoldError::Refused { .. }) => {
                                    refused.fetch_add(1, Ordering::Relaxed);
                                }
                                Err(e) => panic!("{e}"),
                            }
                        }
                    });
                }
            });
            let elapsed = start.elapsed();
            let usage = ready(store.usage(&chain, examples::now())).expect("usage");
            assert!(
                usage.iter().all(|u| u.held.is_zero()),
                "every hold released"
            );
            elapsed.mul_f64(iters as f64 / (per * THREADS) as f64)
        })
    });
    group.finish();
    let (p, r) = (
        placed.load(Ordering::Relaxed),
        refused.load(Ordering::Relaxed),
    );
    eprintln!(
        "budget: {p} holds placed and released, {r} refused at the cap ({:.1}% refused; 8 threads on {SLOTS} slots)",
        100.0 * r as f64 / (p + r).max(1) as f64
    );
}

criterion_group!(benches, execute, audit_bodies, holds);
criterion_main!(benches);

/// The story's buyer, as the host's authentication would hand it to the engine.
fn buyer_p() -> agent_mandate::domain::Principal {
    agent_mandate::domain::Principal::Buyer(examples::buyer())
}

/// The story's agent, authenticated.
fn agent_p() -> agent_mandate::domain::Principal {
    agent_mandate::domain::Principal::Agent(examples::agent().id)
}
