//! Round trips of a payment on PostgreSQL, counted on the wire by a TCP proxy between the
//! pool and the server (`common::pg_proxy`): the adapter cannot misreport them. A flight is
//! what the client sends between two answers of the server, so a pipelined batch counts once.
//!
//! Bounds: the decision's inputs (`payment_inputs`) in one round trip; the first write
//! transaction (`open_payment`) in at most three, the second (`change_attempt`, with the
//! events chained into the trail) in at most two, once the connection has prepared its
//! statements. Run under `scripts/with-postgres.sh`.
#![cfg(all(feature = "postgres", feature = "testkit"))]

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use agent_mandate::adapters::memory::{ManualClock, MemoryVault};
use agent_mandate::adapters::postgres::{PostgresAuditSink, PostgresConfig, PostgresStore};
use agent_mandate::domain::{examples, AttemptStatus};
use agent_mandate::engine::{CreateMandate, Engine, EngineConfig, ExecutePayment};
use agent_mandate::ports::{AuditSink, CredentialVault, PaymentProvider, Ports};
use agent_mandate::testkit::{CallCounter, CallCounts, CountingAuditSink, CountingStore, FakePsp};
use common::backends::{database_url, Backend};
use common::engine::{backpack_spec, card, key};
use common::pg_proxy::RoundTripProxy;
use common::principals::{agent_p, buyer_p};

/// Round trips of `payment_inputs` (every read of the decision).
const INPUTS_ROUND_TRIPS: u64 = 1;
/// Round trips of `open_payment`: BEGIN with the key, the hold's row and the chain's accounts
/// locked and summed; the writes with the trail's head locked; the events and COMMIT.
const OPEN_ROUND_TRIPS: u64 = 3;
/// Round trips of `change_attempt`: BEGIN with the fences, the attempt and the hold locked;
/// the writes, the events and COMMIT.
const CHANGE_ROUND_TRIPS: u64 = 2;
/// Payments whose statements are not all prepared yet (each connection of the pool prepares
/// its statements on first use).
const WARM_UP: usize = 3;

/// A store on `schema` reached through `proxy`, writing its own trail, and the sink on it.
async fn store_through(
    proxy: &RoundTripProxy,
    url: &str,
    schema: &str,
    connections: usize,
) -> (PostgresStore, PostgresAuditSink) {
    let config = PostgresConfig::new(proxy.url_for(url))
        .with_schema(schema.to_string())
        .with_max_connections(connections);
    let store = PostgresStore::connect_with(&config)
        .await
        .expect("connect through the proxy")
        .with_trail()
        .await
        .expect("trail");
    let audit = PostgresAuditSink::from_pool(store.pool().clone())
        .await
        .expect("audit sink");
    (store, audit)
}

/// Round trips of each port call of one payment, in call order.
fn per_call(counts: &CallCounts, end: u64) -> Vec<(&'static str, u64)> {
    let mut out = Vec::new();
    for (i, (method, start)) in counts.calls.iter().enumerate() {
        let next = counts.calls.get(i + 1).map_or(end, |(_, r)| *r);
        out.push((*method, next - start));
    }
    out
}

/// `payments` payments through the engine (execute with capture on authorize), each with the
/// round trips of its port calls.
async fn payments_counted(
    store: PostgresStore,
    audit: PostgresAuditSink,
    proxy: &RoundTripProxy,
    payments: usize,
) -> Vec<Vec<(&'static str, u64)>> {
    let probe = proxy.clone();
    let counter = CallCounter::with_probe(Arc::new(move || probe.flights()));
    let vault: Arc<dyn CredentialVault> = Arc::new(MemoryVault::new());
    let provider: Arc<dyn PaymentProvider> = Arc::new(FakePsp::with_vault(vault.clone()));
    let audit: Arc<dyn AuditSink> = Arc::new(audit);
    let ports = Ports {
        store: Arc::new(CountingStore::new(Arc::new(store), counter.clone())),
        provider,
        vault,
        audit: Arc::new(CountingAuditSink::new(audit, counter.clone())),
        clock: Arc::new(ManualClock::new(examples::now())),
    };
    let config = EngineConfig::default()
        .with_threshold_percent(None)
        .expect("config");
    let engine = Engine::new(ports, config).expect("engine");
    let mut spec = backpack_spec(true);
    spec.scope.max_uses = None;
    spec.scope.amount.max_payment_attempts = None;
    engine
        .create_mandate(&buyer_p(), &CreateMandate::new(key("create"), spec))
        .await
        .expect("mandate");
    let card = engine
        .store_credential(
            &buyer_p(),
            &key("card"),
            card(&examples::agent().id, "pm_card_visa"),
        )
        .await
        .expect("card")
        .value
        .reference;
    let snapshot = examples::travel_backpack_snapshot();
    let mut out = Vec::new();
    for i in 0..payments {
        counter.reset();
        let done = engine
            .execute_payment(
                &agent_p(),
                &ExecutePayment::new(
                    key(&format!("pay-{i}")),
                    examples::authorize_request(&snapshot),
                    snapshot.clone(),
                    examples::valid_checkout(snapshot.id()),
                    card.clone(),
                )
                .with_capture(true),
            )
            .await
            .expect("payment");
        assert_eq!(
            done.attempt().map(|a| a.status),
            Some(AttemptStatus::Captured)
        );
        let calls = per_call(&counter.counts(), proxy.flights());
        eprintln!("payment {i}: round trips by call: {calls:?}");
        out.push(calls);
    }
    out
}

/// The sum of the round trips of `method` in `calls`.
fn of(calls: &[(&'static str, u64)], method: &str) -> u64 {
    calls
        .iter()
        .filter(|(m, _)| *m == method)
        .map(|(_, n)| n)
        .sum()
}

/// A payment's reads before `open_payment` take one round trip, and each of its write
/// transactions stays within its bound, counted on the wire.
#[tokio::test(flavor = "current_thread")]
async fn a_payment_on_postgres_reads_in_one_round_trip() {
    let Some(url) = database_url() else { return };
    let proxy = RoundTripProxy::start(RoundTripProxy::upstream_of(&url)).await;
    let schema = format!("rt_payment_{}", std::process::id());
    let (store, audit) = store_through(&proxy, &url, &schema, 2).await;
    let payments = payments_counted(store, audit, &proxy, WARM_UP + 4).await;
    let mut totals: BTreeMap<&str, u64> = BTreeMap::new();
    for (i, calls) in payments.iter().enumerate().skip(WARM_UP) {
        let open_at = calls
            .iter()
            .position(|(m, _)| *m == "store.open_payment")
            .expect("the payment opens");
        let reads: u64 = calls[..open_at].iter().map(|(_, n)| n).sum();
        assert!(
            reads <= INPUTS_ROUND_TRIPS,
            "payment {i}: {reads} round trips before open_payment (bound {INPUTS_ROUND_TRIPS}): \
             {calls:?}"
        );
        assert!(
            of(calls, "store.payment_inputs") <= INPUTS_ROUND_TRIPS,
            "payment {i}: {calls:?}"
        );
        assert!(
            of(calls, "store.open_payment") <= OPEN_ROUND_TRIPS,
            "payment {i}: open_payment took more than {OPEN_ROUND_TRIPS} round trips: {calls:?}"
        );
        assert!(
            of(calls, "store.change_attempt") <= CHANGE_ROUND_TRIPS,
            "payment {i}: change_attempt took more than {CHANGE_ROUND_TRIPS} round trips: \
             {calls:?}"
        );
        for (m, n) in calls {
            *totals.entry(m).or_default() += n;
        }
    }
    eprintln!("round trips over the warm payments: {totals:?}");
    Backend::Postgres { url, schema }.drop_schema().await;
}
