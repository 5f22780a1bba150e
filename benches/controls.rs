//! Criterion benchmark of `execute_payment` on the memory adapters with every safety control
//! enabled against none (the overhead goal: under 15%).
//!
//! "Every control" is `Controls::recommended()` with its limits raised so that every payment
//! is still allowed (the counters, the breaker lookups, the seen-merchant set, the expiry
//! check, the intent comparison, the allowlist and dual-confirmation checks all run), a
//! declared intent and the agent's declaration on every command, and a memory alert sink.
//!
//! Run: `cargo bench --bench controls --features testkit -- --warm-up-time 1 --measurement-time 3`

use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use agent_mandate::adapters::memory::{MemoryAlerts, MemoryPorts};
use agent_mandate::domain::{examples, Declaration, Money};
use agent_mandate::engine::{
    Breaker, Controls, CreateMandate, Engine, EngineConfig, ExecutePayment, MerchantControl, Rate,
};
use agent_mandate::ports::{CredentialDisplay, CredentialKind, FundingType, NewCredential, Secret};
use agent_mandate::testkit::FakePsp;
use criterion::{criterion_group, criterion_main, Criterion};

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

/// Every control on, with limits no benchmark payment reaches.
fn every_control() -> Controls {
    let hour = Duration::from_secs(3600);
    Controls::recommended()
        .with_violations(Some(Rate::new(1_000_000, hour).expect("rate")))
        .with_velocity(Some(Rate::new(1_000_000, hour).expect("rate")))
        .with_auth_failures(Some(
            Breaker::new(Rate::new(5, Duration::from_secs(600)).expect("rate"), hour)
                .expect("breaker"),
        ))
        .with_vault_errors(Some(Rate::new(1, hour).expect("rate")))
        .with_dual_confirmation_above(Some(eur("1000.00")))
        .with_merchants(MerchantControl::Allowlist(vec![
            examples::travel_backpack_snapshot()
                .merchant()
                .merchant_id
                .clone(),
        ]))
        .expect("allowlist")
}

fn world(controls: Option<Controls>) -> (Engine, ExecutePayment) {
    let memory = MemoryPorts::new(examples::now(), |vault, _| {
        Arc::new(FakePsp::with_vault(vault))
    });
    let on = controls.is_some();
    let config = EngineConfig::default()
        .with_threshold_percent(None)
        .expect("config")
        .with_controls(controls.unwrap_or_default());
    let mut engine = Engine::new(memory.ports.clone(), config).expect("engine configuration");
    if on {
        engine = engine.with_alerts(Arc::new(MemoryAlerts::new()));
    }
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
    let request = examples::authorize_request(&snapshot);
    let mut template = ExecutePayment::new(
        "k".parse().expect("key"),
        request.clone(),
        snapshot.clone(),
        examples::valid_checkout(snapshot.id()),
        card,
    );
    if on {
        template = template
            .with_intent(examples::intent_for(&request, &snapshot))
            .with_declaration(Declaration::new(snapshot.id(), request.amount));
    }
    (engine, template)
}

fn run(c: &mut Criterion, name: &str, controls: Option<Controls>) {
    let mut group = c.benchmark_group("controls");
    group.bench_function(name, |b| {
        b.iter_custom(|iters| {
            // A fresh world every 1,000 payments (not timed), as in the engine benchmark.
            let mut total = Duration::ZERO;
            let mut done = 0;
            while done < iters {
                let n = (iters - done).min(1_000);
                let (engine, template) = world(controls.clone());
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
                    let out =
                        ready(engine.execute_payment(&agent, black_box(cmd))).expect("executes");
                    debug_assert!(out.attempt().is_some());
                    black_box(out);
                }
                total += start.elapsed();
                done += n;
            }
            total
        })
    });
    group.finish();
    // The benchmark measures what it claims: every execute is allowed and authorized.
    let (engine, template) = world(controls);
    for i in 0..20 {
        let mut cmd = template.clone();
        cmd.key = format!("check-{i}").parse().expect("key");
        let out = ready(engine.execute_payment(&agent_p(), &cmd)).expect("executes");
        assert_eq!(
            out.attempt().map(|a| a.status),
            Some(agent_mandate::domain::AttemptStatus::Authorized),
            "{name}: payment {i}"
        );
    }
}

fn none(c: &mut Criterion) {
    run(c, "execute_no_controls", None);
}

fn every(c: &mut Criterion) {
    run(c, "execute_every_control", Some(every_control()));
}

criterion_group!(benches, none, every);
criterion_main!(benches);

fn buyer_p() -> agent_mandate::domain::Principal {
    agent_mandate::domain::Principal::Buyer(examples::buyer())
}

fn agent_p() -> agent_mandate::domain::Principal {
    agent_mandate::domain::Principal::Agent(examples::agent().id)
}
