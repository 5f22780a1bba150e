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
    let vault: Arc<dyn CredentialVault> = Arc::new(MemoryVault::new());
    payments_counted_with(store, audit, vault, proxy, payments).await
}

/// [`payments_counted`] with `vault` holding the card (its reads are counted in the calls
/// they fall between: the credential check before `open_payment`, the PSP's read of the
/// secret after it).
async fn payments_counted_with(
    store: PostgresStore,
    audit: PostgresAuditSink,
    vault: Arc<dyn CredentialVault>,
    proxy: &RoundTripProxy,
    payments: usize,
) -> Vec<Vec<(&'static str, u64)>> {
    let probe = proxy.clone();
    let counter = CallCounter::with_probe(Arc::new(move || probe.flights()));
    // Client-side time of each call, in microseconds (reported, not bounded).
    let started = std::time::Instant::now();
    let clock = CallCounter::with_probe(Arc::new(move || {
        u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX)
    }));
    let timed: Arc<dyn agent_mandate::ports::Store> =
        Arc::new(CountingStore::new(Arc::new(store), clock.clone()));
    let provider: Arc<dyn PaymentProvider> = Arc::new(FakePsp::with_vault(vault.clone()));
    let audit: Arc<dyn AuditSink> = Arc::new(audit);
    let ports = Ports {
        store: Arc::new(CountingStore::new(timed, counter.clone())),
        provider,
        vault,
        audit: Arc::new(CountingAuditSink::new(audit, counter.clone())),
        clock: Arc::new(ManualClock::new(examples::now())),
    };
    let (engine, card) = roomy_engine(ports).await;
    let mut out = Vec::new();
    for i in 0..payments {
        counter.reset();
        clock.reset();
        let done = engine
            .execute_payment(&agent_p(), &pay(&format!("pay-{i}"), &card, true))
            .await
            .expect("payment");
        assert_eq!(
            done.attempt().map(|a| a.status),
            Some(AttemptStatus::Captured)
        );
        let calls = per_call(&counter.counts(), proxy.flights());
        let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        eprintln!(
            "payment {i}: round trips by call: {calls:?}; microseconds by call (to the next \
             call, through the proxy): {:?}",
            per_call(&clock.counts(), micros)
        );
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

/// With the card in a PostgreSQL vault on the same server, the reads before `open_payment`
/// are two round trips: the decision's inputs and the credential's description and status
/// (`CredentialVault::describe_and_status`, one prepared statement). Before, the engine asked
/// `describe` then `status`, each an unprepared query (parse, then execute): five in all.
#[tokio::test(flavor = "current_thread")]
async fn a_payment_with_the_postgres_vault_reads_in_at_most_two_round_trips() {
    use agent_mandate::adapters::keyring::{VaultKey, VaultKeyring};
    use agent_mandate::adapters::postgres::PostgresVault;
    let Some(url) = database_url() else { return };
    let proxy = RoundTripProxy::start(RoundTripProxy::upstream_of(&url)).await;
    let schema = format!("rt_vault_{}", std::process::id());
    let (store, audit) = store_through(&proxy, &url, &schema, 2).await;
    let keyring = VaultKeyring::new(VaultKey::new("k1", [7; 32]).expect("key"));
    let vault: Arc<dyn CredentialVault> = Arc::new(
        PostgresVault::from_pool(store.pool().clone(), keyring)
            .await
            .expect("vault"),
    );
    let payments = payments_counted_with(store, audit, vault, &proxy, WARM_UP + 4).await;
    for (i, calls) in payments.iter().enumerate().skip(WARM_UP) {
        let open_at = calls
            .iter()
            .position(|(m, _)| *m == "store.open_payment")
            .expect("the payment opens");
        let reads: u64 = calls[..open_at].iter().map(|(_, n)| n).sum();
        assert!(
            reads <= INPUTS_ROUND_TRIPS + 1,
            "payment {i}: {reads} round trips before open_payment (bound {}): {calls:?}",
            INPUTS_ROUND_TRIPS + 1
        );
        // The PSP's read of the secret falls in `open_payment`'s count: one more.
        assert!(
            of(calls, "store.open_payment") <= OPEN_ROUND_TRIPS + 1,
            "payment {i}: {calls:?}"
        );
    }
    Backend::Postgres { url, schema }.drop_schema().await;
}

// ------------------------------------------------------------------------------------------
// `payment_inputs` on its own: one round trip, the same answer as the single reads, and the
// attacks on a pipeline whose statements are not one snapshot.

use agent_mandate::domain::{Mandate, Party};
use agent_mandate::ports::{HoldRequest, InputsQuery, PaymentInputs, Store, StoreError};
use common::{edit, id, root_and_child};

/// A plain store on `schema` through `proxy` (one connection, so statements are prepared once).
async fn plain_store(proxy: &RoundTripProxy, url: &str, schema: &str) -> PostgresStore {
    let config = PostgresConfig::new(proxy.url_for(url))
        .with_schema(schema.to_string())
        .with_max_connections(1);
    PostgresStore::connect_with(&config)
        .await
        .expect("connect through the proxy")
}

/// A direct connection to `schema` for the attacker.
async fn admin(url: &str, schema: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("admin connection");
    tokio::spawn(conn);
    client
        .batch_execute(&format!("SET search_path = {schema}"))
        .await
        .expect("search path");
    client
}

/// What the single reads answer (the provided `payment_inputs`, one call after another).
async fn single_reads(store: &PostgresStore, q: &InputsQuery<'_>) -> PaymentInputs {
    let attempt = store.attempt(q.attempt_id).await.expect("attempt");
    let chain = store.chain(q.mandate_id).await.expect("chain");
    let usage = if q.usage && !chain.is_empty() {
        store.usage(&chain, q.now).await.expect("usage")
    } else {
        Vec::new()
    };
    let confirmations = if PaymentInputs::wants_confirmations(q, &chain) {
        store
            .confirmations(q.buyer_id, q.snapshot_id)
            .await
            .expect("confirmations")
    } else {
        Vec::new()
    };
    let actors = PaymentInputs::actors(&chain, q.actor_id);
    let suspensions = store
        .suspensions(&actors, q.buyer_id)
        .await
        .expect("suspensions");
    PaymentInputs {
        attempt,
        chain,
        usage,
        confirmations,
        suspensions,
    }
}

/// The fixture: root and child (both with a 24 h window), holds on both, the child's actor
/// suspended, the buyer's confirmation of the snapshot.
async fn chain_with_usage(store: &PostgresStore) -> (Mandate, Mandate) {
    let (root, child) = root_and_child();
    let child = edit(&child, |s| {
        s.scope.max_uses = None;
        s.scope.amount.max_payment_attempts = None;
    });
    store.insert_mandate(&root).await.expect("root");
    store.insert_mandate(&child).await.expect("child");
    let chain = vec![root.clone(), child.clone()];
    for (i, minutes) in [(0, 30), (1, 60 * 30)] {
        let at = examples::now() - chrono::Duration::minutes(minutes);
        let hold = HoldRequest::on_chain(
            id(&format!("attempt_held_{i}")),
            common::eur("10.00"),
            at,
            &chain,
        );
        store.place_hold(&hold).await.expect("hold");
    }
    store
        .commit_hold(&id("attempt_held_0"), common::eur("7.00"))
        .await
        .expect("commit");
    store
        .set_suspended(&Party::Actor(child.actor().id.clone()), true)
        .await
        .expect("suspend");
    let doc = common::delegated_document();
    store
        .insert_confirmation(&common::confirmation_for(&doc))
        .await
        .expect("confirmation");
    (root, child)
}

fn query_for<'a>(
    child: &'a Mandate,
    attempt: &'a agent_mandate::domain::AttemptId,
    snapshot: &'a agent_mandate::domain::SnapshotId,
) -> InputsQuery<'a> {
    InputsQuery {
        attempt_id: attempt,
        mandate_id: child.id(),
        actor_id: &child.actor().id,
        buyer_id: child.buyer_id(),
        snapshot_id: snapshot,
        now: examples::now(),
        usage: true,
        confirmations: true,
    }
}

/// One round trip, once the connection has prepared its statements, and the same answer as
/// the single reads: the chain, the usage of both levels (held, committed, inside and outside
/// the window), the suspended actor, the confirmation.
#[tokio::test(flavor = "current_thread")]
async fn payment_inputs_is_one_round_trip_and_agrees_with_the_single_reads() {
    let Some(url) = database_url() else { return };
    let proxy = RoundTripProxy::start(RoundTripProxy::upstream_of(&url)).await;
    let schema = format!("rt_inputs_{}", std::process::id());
    let store = plain_store(&proxy, &url, &schema).await;
    let (_root, child) = chain_with_usage(&store).await;
    let attempt = id("attempt_new");
    let snapshot = common::delegated_document().request.snapshot_id;
    let q = query_for(&child, &attempt, &snapshot);
    let expected = single_reads(&store, &q).await;
    assert_eq!(expected.chain.len(), 2);
    assert!(!expected.usage[0].held.is_zero(), "{:?}", expected.usage);
    assert_eq!(expected.suspensions.actors, vec![child.actor().id.clone()]);
    // Cold (statements prepared), then warm: one round trip.
    let cold = store.payment_inputs(&q).await.expect("inputs");
    assert_eq!(cold, expected);
    for usage in [true, false] {
        let q = InputsQuery { usage, ..q };
        let before = proxy.flights();
        let warm = store.payment_inputs(&q).await.expect("inputs");
        assert_eq!(
            proxy.flights() - before,
            1,
            "one round trip (usage {usage})"
        );
        assert_eq!(warm, single_reads(&store, &q).await);
    }
    // An unknown mandate: an empty chain, the requester's and the buyer's suspensions.
    let unknown: agent_mandate::domain::MandateId = id("mandate_unknown");
    let q2 = InputsQuery {
        mandate_id: &unknown,
        ..q
    };
    let before = proxy.flights();
    let got = store.payment_inputs(&q2).await.expect("inputs");
    assert_eq!(proxy.flights() - before, 1);
    assert!(got.chain.is_empty() && got.usage.is_empty());
    assert_eq!(got, single_reads(&store, &q2).await);
    Backend::Postgres { url, schema }.drop_schema().await;
}

/// Waits until a statement of another session waits for a lock.
async fn until_blocked(admin: &tokio_postgres::Client) {
    for _ in 0..400 {
        let n: i64 = admin
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' \
                 AND pid <> pg_backend_pid()",
                &[],
            )
            .await
            .expect("activity")
            .get(0);
        if n > 0 {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("the pipelined reads never waited for the lock");
}

/// Runs `payment_inputs` with the suspensions table locked, so the chain statement has run
/// and the dependent statements wait; `change` runs (in the locking transaction) while they
/// wait, then the lock goes. Returns what `payment_inputs` answered and its round trips.
async fn with_change_between(
    store: &PostgresStore,
    proxy: &RoundTripProxy,
    admin: &tokio_postgres::Client,
    q: InputsQuery<'static>,
    change: &str,
) -> (Result<PaymentInputs, StoreError>, u64) {
    admin.batch_execute("BEGIN").await.expect("begin");
    admin
        .batch_execute("LOCK TABLE suspensions IN ACCESS EXCLUSIVE MODE")
        .await
        .expect("lock");
    let before = proxy.flights();
    let reader = store.clone();
    let task = tokio::spawn(async move { reader.payment_inputs(&q).await });
    until_blocked(admin).await;
    admin.batch_execute(change).await.expect("change");
    admin.batch_execute("COMMIT").await.expect("commit");
    let got = task.await.expect("task");
    (got, proxy.flights() - before)
}

fn leak<T>(t: T) -> &'static T {
    Box::leak(Box::new(t))
}

/// Hostile: a mandate of the chain is edited (its actor changed to a suspended one) and the
/// leaf re-parented between the chain statement and the statements that depend on it. The
/// one-round-trip answer would pair the old chain with the new chain's suspensions and usage;
/// the check sees the difference and the reads run again: the answer is the new chain with
/// its own suspensions and usage, exactly what the single reads say afterwards.
#[tokio::test(flavor = "current_thread")]
async fn a_chain_changed_between_the_pipelined_statements_is_read_again() {
    let Some(url) = database_url() else { return };
    let proxy = RoundTripProxy::start(RoundTripProxy::upstream_of(&url)).await;
    let schema = format!("rt_race_{}", std::process::id());
    let store = plain_store(&proxy, &url, &schema).await;
    let (root, child) = chain_with_usage(&store).await;
    let admin = admin(&url, &schema).await;
    let attempt = leak(id("attempt_new"));
    let snapshot = leak(common::delegated_document().request.snapshot_id);
    let child_s = leak(child.clone());
    let q = query_for(child_s, attempt, snapshot);
    // Warm the connection's statements.
    store.payment_inputs(&q).await.expect("warm");

    // 1. The root's actor changes (the new one is suspended).
    let new_actor: agent_mandate::domain::ActorId = id("agent_replaced");
    store
        .set_suspended(&Party::Actor(new_actor.clone()), true)
        .await
        .expect("suspend");
    let edited = edit(&root, |s| s.actor.id = new_actor.clone());
    let body = serde_json::to_string(&edited).expect("body");
    let change = format!(
        "UPDATE mandates SET body = '{}' WHERE id = '{}'",
        body.replace('\'', "''"),
        root.id()
    );
    let (got, trips) = with_change_between(&store, &proxy, &admin, q, &change).await;
    let got = got.expect("inputs");
    assert!(trips > 1, "the disagreement made the reads run again");
    assert_eq!(got.chain[0].actor().id, new_actor, "the new chain");
    assert!(got.suspensions.actors.contains(&new_actor), "{got:?}");
    assert_eq!(got, single_reads(&store, &q).await);

    // 2. The leaf is re-parented onto a new root with other windows and no holds.
    let other_root = edit(&root, |s| {
        s.id = id("mandate_other_root");
        s.scope.budgets.windows[0].window_seconds = 3_600;
    });
    store.insert_mandate(&other_root).await.expect("other root");
    let reparented = edit(&child, |s| s.parent_id = Some(other_root.id().clone()));
    let body = serde_json::to_string(&reparented).expect("body");
    let change = format!(
        "UPDATE mandates SET parent_id = '{}', body = '{}' WHERE id = '{}'",
        other_root.id(),
        body.replace('\'', "''"),
        child.id()
    );
    let (got, trips) = with_change_between(&store, &proxy, &admin, q, &change).await;
    let got = got.expect("inputs");
    assert!(trips > 1, "the disagreement made the reads run again");
    assert_eq!(got.chain[0].id(), other_root.id());
    assert_eq!(got.usage[0].mandate_id, *other_root.id());
    assert!(got.usage[0].held.is_zero(), "the new root's usage: {got:?}");
    assert_eq!(got.usage[0].windows[0].window_seconds, 3_600);
    assert_eq!(got, single_reads(&store, &q).await);

    // 3. Only the status changes (revoked): nothing the dependent statements read differs,
    // the answer stands in one round trip (the hold checks the limits again in any case).
    let current = store
        .mandate(child.id())
        .await
        .expect("read")
        .expect("child");
    let revoked = edit(&current, |s| {
        s.lifecycle.status = agent_mandate::domain::MandateStatus::Revoked;
        s.lifecycle.revoked_at = Some(examples::now());
    });
    let body = serde_json::to_string(&revoked).expect("body");
    let change = format!(
        "UPDATE mandates SET status = 'revoked', body = '{}' WHERE id = '{}'",
        body.replace('\'', "''"),
        child.id()
    );
    let (got, trips) = with_change_between(&store, &proxy, &admin, q, &change).await;
    let got = got.expect("inputs");
    assert_eq!(trips, 1);
    let usage_ids: Vec<_> = got.usage.iter().map(|u| u.mandate_id.clone()).collect();
    let chain_ids: Vec<_> = got.chain.iter().map(|m| m.id().clone()).collect();
    assert_eq!(usage_ids, chain_ids, "usage of the chain returned");

    // 4. Only a window's length changes (same mandates, same actors): the suspensions agree,
    // the usage was read over other windows than the chain's limits name; read again.
    let current = store
        .mandate(other_root.id())
        .await
        .expect("read")
        .expect("root");
    let longer = edit(&current, |s| {
        s.scope.budgets.windows[0].window_seconds = 7_200
    });
    let body = serde_json::to_string(&longer).expect("body");
    let change = format!(
        "UPDATE mandates SET body = '{}' WHERE id = '{}'",
        body.replace('\'', "''"),
        other_root.id()
    );
    let (got, trips) = with_change_between(&store, &proxy, &admin, q, &change).await;
    let got = got.expect("inputs");
    assert!(trips > 1, "the usage's windows disagreed: read again");
    assert_eq!(got.usage[0].windows[0].window_seconds, 7_200);
    assert_eq!(
        got.chain[0].scope().budgets.windows[0].window_seconds,
        7_200
    );
    assert_eq!(got, single_reads(&store, &q).await);

    // 5. A body turned into text `jsonb` refuses between the statements: read again, and the
    // two-step reads report the corrupt body.
    let change = format!(
        "UPDATE mandates SET body = 'not json' WHERE id = '{}'",
        other_root.id()
    );
    let (got, _) = with_change_between(&store, &proxy, &admin, q, &change).await;
    assert!(
        matches!(got, Err(StoreError::Corrupt { .. })),
        "a corrupt body is reported as corrupt: {got:?}"
    );
    Backend::Postgres { url, schema }.drop_schema().await;
}

/// Hostile: a corrupt body, a chain that loops, a chain deeper than the limit, a missing
/// parent: each is `Corrupt`, as the single reads report it, never usage or suspensions of
/// something else.
#[tokio::test(flavor = "current_thread")]
async fn a_corrupt_looping_or_too_deep_chain_is_corrupt() {
    let Some(url) = database_url() else { return };
    let proxy = RoundTripProxy::start(RoundTripProxy::upstream_of(&url)).await;
    let schema = format!("rt_corrupt_{}", std::process::id());
    let store = plain_store(&proxy, &url, &schema).await;
    let (root, child) = chain_with_usage(&store).await;
    let admin = admin(&url, &schema).await;
    let attempt = id("attempt_new");
    let snapshot = common::delegated_document().request.snapshot_id;
    let q = query_for(&child, &attempt, &snapshot);
    let corrupt = |r: Result<PaymentInputs, StoreError>| {
        assert!(matches!(r, Err(StoreError::Corrupt { .. })), "{r:?}");
    };
    // A body that is not JSON, then JSON of another mandate.
    admin
        .execute(
            "UPDATE mandates SET body = 'not json' WHERE id = $1",
            &[&root.id().as_str()],
        )
        .await
        .expect("edit");
    corrupt(store.payment_inputs(&q).await);
    let body = serde_json::to_string(&child).expect("body");
    admin
        .execute(
            "UPDATE mandates SET body = $2 WHERE id = $1",
            &[&root.id().as_str(), &body],
        )
        .await
        .expect("edit");
    corrupt(store.payment_inputs(&q).await);
    let body = serde_json::to_string(&root).expect("body");
    admin
        .execute(
            "UPDATE mandates SET body = $2 WHERE id = $1",
            &[&root.id().as_str(), &body],
        )
        .await
        .expect("restore");
    store.payment_inputs(&q).await.expect("restored");
    // The root's parent: `parent` in the column and in the body (`None`: the column only).
    let set_parent = |parent: &str, body_too: bool| {
        let edited = edit(&root, |s| s.parent_id = Some(id(parent)));
        let body = serde_json::to_string(if body_too { &edited } else { &root }).expect("body");
        (parent.to_string(), body)
    };
    let reparent = |(parent, body): (String, String)| {
        let admin = &admin;
        let root_id = root.id().to_string();
        async move {
            admin
                .execute(
                    "UPDATE mandates SET parent_id = $2, body = $3 WHERE id = $1",
                    &[&root_id, &parent, &body],
                )
                .await
                .expect("reparent");
        }
    };
    // A loop: the root's parent is the child.
    reparent(set_parent(child.id().as_str(), true)).await;
    corrupt(store.payment_inputs(&q).await);
    // A missing parent, then a parent column the body does not name.
    reparent(set_parent("mandate_gone", true)).await;
    corrupt(store.payment_inputs(&q).await);
    reparent(set_parent("mandate_gone", false)).await;
    corrupt(store.payment_inputs(&q).await);
    // Deeper than the limit: 70 levels above the root, each naming its parent.
    for i in (0..70).rev() {
        let m = edit(&root, |s| {
            s.id = id(&format!("mandate_deep_{i:02}"));
            s.parent_id = (i < 69).then(|| id(&format!("mandate_deep_{:02}", i + 1)));
        });
        store.insert_mandate(&m).await.expect("deep");
    }
    reparent(set_parent("mandate_deep_00", true)).await;
    let before = proxy.flights();
    corrupt(store.payment_inputs(&q).await);
    assert_eq!(proxy.flights() - before, 1, "still one round trip");
    Backend::Postgres { url, schema }.drop_schema().await;
}

/// Hostile: a slow server (every answer held 25 ms on the way back). Still one round trip, and
/// the same answer.
#[tokio::test(flavor = "current_thread")]
async fn a_slow_server_still_costs_one_round_trip() {
    let Some(url) = database_url() else { return };
    let proxy = RoundTripProxy::start_slow(
        RoundTripProxy::upstream_of(&url),
        std::time::Duration::from_millis(25),
    )
    .await;
    let schema = format!("rt_slow_{}", std::process::id());
    let store = plain_store(&proxy, &url, &schema).await;
    let (_root, child) = chain_with_usage(&store).await;
    let attempt = id("attempt_new");
    let snapshot = common::delegated_document().request.snapshot_id;
    let q = query_for(&child, &attempt, &snapshot);
    let expected = single_reads(&store, &q).await;
    store.payment_inputs(&q).await.expect("warm");
    let before = proxy.flights();
    let started = std::time::Instant::now();
    let got = store.payment_inputs(&q).await.expect("inputs");
    let took = started.elapsed();
    assert_eq!(proxy.flights() - before, 1);
    assert!(took < std::time::Duration::from_millis(25 * 3), "{took:?}");
    assert_eq!(got, expected);
    Backend::Postgres { url, schema }.drop_schema().await;
}

// ------------------------------------------------------------------------------------------
// The pipelined write transactions under attack: all or nothing when a statement sent with
// COMMIT fails, a call dropped half-way, a checkpoint falling due.

use agent_mandate::domain::{AttemptId, CredentialRef};
use agent_mandate::engine::PaymentOutcome;
use common::engine::agent_capture;

/// An engine on `store` and `audit` (the story's roomy mandate, a card), and the card.
async fn engine_on(store: PostgresStore, audit: PostgresAuditSink) -> (Engine, CredentialRef) {
    let (engine, card, _) = engine_with_psp(store, audit).await;
    (engine, card)
}

/// As [`engine_on`], with the fake PSP.
async fn engine_with_psp(
    store: PostgresStore,
    audit: PostgresAuditSink,
) -> (Engine, CredentialRef, Arc<FakePsp>) {
    let clock = Arc::new(ManualClock::new(examples::now()));
    engine_with_clock(Arc::new(store), audit, clock).await
}

/// As [`engine_with_psp`], on any store and with the clock given (the test moves it).
async fn engine_with_clock(
    store: Arc<dyn Store>,
    audit: PostgresAuditSink,
    clock: Arc<ManualClock>,
) -> (Engine, CredentialRef, Arc<FakePsp>) {
    let vault: Arc<dyn CredentialVault> = Arc::new(MemoryVault::new());
    let psp = Arc::new(FakePsp::with_vault_and_clock(vault.clone(), clock.clone()));
    let provider: Arc<dyn PaymentProvider> = psp.clone();
    let ports = Ports {
        store,
        provider,
        vault,
        audit: Arc::new(audit),
        clock,
    };
    let (engine, card) = roomy_engine(ports).await;
    (engine, card, psp)
}

/// An engine on `ports` without the confirmation threshold, the story's roomy mandate with no
/// limit on uses or attempts (so a test may pay as often as it likes), and a stored card.
async fn roomy_engine(ports: Ports) -> (Engine, CredentialRef) {
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
    (engine, card)
}

fn pay(k: &str, card: &CredentialRef, capture: bool) -> ExecutePayment {
    let snapshot = examples::travel_backpack_snapshot();
    ExecutePayment::new(
        key(k),
        examples::authorize_request(&snapshot),
        snapshot.clone(),
        examples::valid_checkout(snapshot.id()),
        card.clone(),
    )
    .with_capture(capture)
}

/// Row counts of the tables a payment writes, and the trail's head.
async fn footprint(admin: &tokio_postgres::Client) -> Vec<i64> {
    let mut out = Vec::new();
    for table in [
        "idempotency",
        "attempts",
        "holds",
        "hold_levels",
        "snapshots",
        "audit_events",
        "audit_subjects",
        "audit_pending",
    ] {
        let n: i64 = admin
            .query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .await
            .expect("count")
            .get(0);
        out.push(n);
    }
    let head: i64 = admin
        .query_one("SELECT seq FROM audit_head WHERE id = 1", &[])
        .await
        .expect("head")
        .get(0);
    out.push(head);
    let held: rust_decimal::Decimal = admin
        .query_one("SELECT COALESCE(SUM(held), 0) FROM accounts", &[])
        .await
        .expect("held")
        .get(0);
    out.push(i64::try_from(held.mantissa()).unwrap_or(-1));
    out
}

/// Hostile: the trail's next number is taken behind the store's back, so the events'
/// insert sent with COMMIT fails. The open (three round trips, the last with COMMIT) and the
/// change (two) both fail and write nothing: every table and the head as before.
#[tokio::test(flavor = "current_thread")]
async fn a_statement_failing_next_to_commit_rolls_everything_back() {
    let Some(url) = database_url() else { return };
    let proxy = RoundTripProxy::start(RoundTripProxy::upstream_of(&url)).await;
    let schema = format!("rt_allornothing_{}", std::process::id());
    let (store, audit) = store_through(&proxy, &url, &schema, 1).await;
    let admin = admin(&url, &schema).await;
    let (engine, card, psp) = engine_with_psp(store.clone(), audit.clone()).await;
    // A payment authorized only (its capture comes later), to warm the statements.
    let first = engine
        .execute_payment(&agent_p(), &pay("pay-auth", &card, false))
        .await
        .expect("payment");
    let attempt: AttemptId = first.attempt().expect("attempt").id.clone();
    let status = first.attempt().expect("attempt").status;

    let squat = "INSERT INTO audit_events (seq, prev_hash, hash, body) \
                 SELECT seq + 1, hash, hash, '{}' FROM audit_head WHERE id = 1";
    admin.batch_execute(squat).await.expect("squat");
    let before = footprint(&admin).await;
    let calls = psp.payments().len();
    // The open fails; nothing of it stays, and the PSP is never asked (an open reported as
    // written when its COMMIT rolled back would send the payment with no record of it).
    let refused = engine
        .execute_payment(&agent_p(), &pay("pay-blocked", &card, true))
        .await;
    assert!(refused.is_err(), "{refused:?}");
    assert_eq!(footprint(&admin).await, before, "the open wrote nothing");
    assert_eq!(psp.payments().len(), calls, "the PSP was not called");
    // The change (a capture) fails; the attempt and its hold stay as they were.
    let capture = engine
        .capture(&agent_p(), &agent_capture("cap-blocked", &attempt, None))
        .await;
    assert!(capture.is_err(), "{capture:?}");
    let after = footprint(&admin).await;
    // The capture's own idempotency record may be left to its lease; nothing else moved.
    assert_eq!(after[1..], before[1..], "the change wrote nothing");
    assert_eq!(
        store
            .attempt(&attempt)
            .await
            .expect("read")
            .map(|a| a.status),
        Some(status)
    );
    // The squatter gone, the trail verifies and payments go through again.
    admin
        .batch_execute(
            "DELETE FROM audit_events WHERE seq > (SELECT seq FROM audit_head WHERE id = 1)",
        )
        .await
        .expect("clean");
    audit.verify().await.expect("trail intact");
    let done = engine
        .execute_payment(&agent_p(), &pay("pay-after", &card, true))
        .await
        .expect("payment");
    assert_eq!(
        done.attempt().map(|a| a.status),
        Some(AttemptStatus::Captured)
    );
    Backend::Postgres { url, schema }.drop_schema().await;
}

/// Hostile: a payment dropped while its open waits in the middle of its transaction (the
/// snapshots table locked by another session). The connection goes back to the pool with a
/// ROLLBACK queued: once the lock goes, the session is idle (not in a transaction), nothing
/// of the payment stays, and the same key pays.
#[tokio::test(flavor = "current_thread")]
async fn a_payment_dropped_mid_transaction_leaves_nothing() {
    let Some(url) = database_url() else { return };
    let proxy = RoundTripProxy::start(RoundTripProxy::upstream_of(&url)).await;
    let schema = format!("rt_dropped_{}", std::process::id());
    let (store, audit) = store_through(&proxy, &url, &schema, 1).await;
    let admin = admin(&url, &schema).await;
    let (engine, card) = engine_on(store.clone(), audit.clone()).await;
    let engine = Arc::new(engine);
    engine
        .execute_payment(&agent_p(), &pay("pay-warm", &card, true))
        .await
        .expect("warm");
    let before = footprint(&admin).await;
    admin.batch_execute("BEGIN").await.expect("begin");
    admin
        .batch_execute("LOCK TABLE snapshots IN ACCESS EXCLUSIVE MODE")
        .await
        .expect("lock");
    let e = engine.clone();
    let c = card.clone();
    let task = tokio::spawn(async move {
        e.execute_payment(&agent_p(), &pay("pay-dropped", &c, true))
            .await
    });
    until_blocked(&admin).await;
    task.abort();
    let _ = task.await;
    admin.batch_execute("COMMIT").await.expect("unlock");
    // The store's session ends its transaction.
    let mut idle = false;
    for _ in 0..200 {
        let states: Vec<String> = admin
            .query(
                "SELECT state FROM pg_stat_activity WHERE application_name = 'agent-mandate' \
                 AND datname = current_database()",
                &[],
            )
            .await
            .expect("activity")
            .iter()
            .map(|r| r.get::<_, Option<String>>(0).unwrap_or_default())
            .collect();
        if !states.is_empty() && states.iter().all(|s| s == "idle") {
            idle = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(idle, "the store's session left its transaction");
    assert_eq!(
        footprint(&admin).await,
        before,
        "nothing of the dropped payment"
    );
    let done = engine
        .execute_payment(&agent_p(), &pay("pay-dropped", &card, true))
        .await
        .expect("the same key pays");
    assert_eq!(
        done.attempt().map(|a| a.status),
        Some(AttemptStatus::Captured)
    );
    audit.verify().await.expect("trail intact");
    Backend::Postgres { url, schema }.drop_schema().await;
}

/// Enough payments for the trail to seal checkpoints (every 256 events) inside the pipelined
/// transactions: the trail verifies, every checkpoint included, and each payment's events are
/// on it.
#[tokio::test(flavor = "current_thread")]
async fn checkpoints_fall_due_inside_the_pipelined_transactions() {
    let Some(url) = database_url() else { return };
    let proxy = RoundTripProxy::start(RoundTripProxy::upstream_of(&url)).await;
    let schema = format!("rt_checkpoints_{}", std::process::id());
    let (store, audit) = store_through(&proxy, &url, &schema, 2).await;
    let admin = admin(&url, &schema).await;
    let (engine, card) = engine_on(store, audit.clone()).await;
    for i in 0..90 {
        let out: PaymentOutcome = engine
            .execute_payment(&agent_p(), &pay(&format!("pay-{i}"), &card, true))
            .await
            .expect("payment");
        assert_eq!(
            out.attempt().map(|a| a.status),
            Some(AttemptStatus::Captured)
        );
    }
    let sealed: i64 = admin
        .query_one("SELECT count(*) FROM audit_checkpoints", &[])
        .await
        .expect("checkpoints")
        .get(0);
    assert!(sealed >= 2, "{sealed} checkpoints");
    let head = audit.verify().await.expect("trail intact").expect("events");
    assert_eq!(head.seq, 2 + 6 * 90);
    let report = engine.verify_trail(10_000).await.expect("trail");
    assert!(report.is_complete(), "{report:?}");
    Backend::Postgres { url, schema }.drop_schema().await;
}

/// Hostile: a hold whose stored list of mandates is not JSON. The change reports it as
/// corrupt (the list is decoded before the statement that locks its accounts from it fails),
/// and writes nothing.
#[tokio::test(flavor = "current_thread")]
async fn a_change_on_a_corrupt_hold_is_corrupt_and_writes_nothing() {
    use agent_mandate::ports::{AttemptChange, HoldOp};
    let Some(url) = database_url() else { return };
    let proxy = RoundTripProxy::start(RoundTripProxy::upstream_of(&url)).await;
    let schema = format!("rt_corrupt_hold_{}", std::process::id());
    let (store, audit) = store_through(&proxy, &url, &schema, 1).await;
    let admin = admin(&url, &schema).await;
    let (engine, card) = engine_on(store.clone(), audit).await;
    let out = engine
        .execute_payment(&agent_p(), &pay("pay-auth", &card, false))
        .await
        .expect("payment");
    let attempt = out.attempt().expect("attempt").clone();
    admin
        .execute(
            "UPDATE holds SET mandate_ids = 'not json' WHERE attempt_id = $1",
            &[&attempt.id.as_str()],
        )
        .await
        .expect("corrupt");
    let before = footprint(&admin).await;
    let hold_id = attempt.hold_id();
    let changed = store
        .change_attempt(&AttemptChange {
            next: &attempt,
            expected: attempt.status,
            hold_id: &hold_id,
            holds: &[HoldOp::Release],
            fence: None,
            completion: None,
            events: &[],
        })
        .await;
    assert!(
        matches!(changed, Err(StoreError::Corrupt { table: "holds", .. })),
        "{changed:?}"
    );
    assert_eq!(footprint(&admin).await, before);
    Backend::Postgres { url, schema }.drop_schema().await;
}

/// Waits until the store's session waits for a lock in a statement containing `needle`.
async fn until_blocked_in(admin: &tokio_postgres::Client, needle: &str) {
    for _ in 0..400 {
        let n: i64 = admin
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' \
                 AND pid <> pg_backend_pid() AND strpos(query, $1) > 0",
                &[&needle],
            )
            .await
            .expect("activity")
            .get(0);
        if n > 0 {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let waiting: Vec<String> = admin
        .query(
            "SELECT query FROM pg_stat_activity WHERE wait_event_type = 'Lock'",
            &[],
        )
        .await
        .expect("activity")
        .iter()
        .map(|r| r.get::<_, Option<String>>(0).unwrap_or_default())
        .collect();
    panic!("no statement containing {needle:?} waited for the lock: {waiting:?}");
}

/// Waits until a session waits for a lock on `table` (of the admin's schema).
async fn until_waiting_for(admin: &tokio_postgres::Client, table: &str) {
    for _ in 0..400 {
        let n: i64 = admin
            .query_one(
                "SELECT count(*) FROM pg_locks WHERE relation = $1::text::regclass \
                 AND NOT granted",
                &[&table],
            )
            .await
            .expect("locks")
            .get(0);
        if n > 0 {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("nobody waited for a lock on {table}");
}

/// Waits until every session of the store is idle (no transaction left open).
async fn until_idle(admin: &tokio_postgres::Client) {
    for _ in 0..200 {
        let states: Vec<String> = admin
            .query(
                "SELECT state FROM pg_stat_activity WHERE application_name = 'agent-mandate' \
                 AND datname = current_database()",
                &[],
            )
            .await
            .expect("activity")
            .iter()
            .map(|r| r.get::<_, Option<String>>(0).unwrap_or_default())
            .collect();
        if !states.is_empty() && states.iter().all(|s| s == "idle") {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("the store's session left its transaction open");
}

/// The state of the hold of `attempt`.
async fn hold_state(admin: &tokio_postgres::Client, attempt: &AttemptId) -> String {
    admin
        .query_one(
            "SELECT state FROM holds WHERE attempt_id = $1",
            &[&attempt.as_str()],
        )
        .await
        .expect("hold")
        .get(0)
}

/// Hostile: a capture dropped while the first round of its `change_attempt` waits (the holds
/// table locked by another session, so the hold's reads of round 1 wait after BEGIN, the
/// fences and the compare-and-set ran). The session ends its transaction once the lock goes,
/// the attempt and its hold are as before, and a retry under the same key captures.
#[tokio::test(flavor = "current_thread")]
async fn a_change_dropped_in_its_first_round_changes_nothing() {
    let Some(url) = database_url() else { return };
    let proxy = RoundTripProxy::start(RoundTripProxy::upstream_of(&url)).await;
    let schema = format!("rt_change_dropped_{}", std::process::id());
    let (store, audit) = store_through(&proxy, &url, &schema, 1).await;
    let admin = admin(&url, &schema).await;
    let clock = Arc::new(ManualClock::new(examples::now()));
    let counter = CallCounter::default();
    let counted: Arc<dyn Store> =
        Arc::new(CountingStore::new(Arc::new(store.clone()), counter.clone()));
    let (engine, card, psp) = engine_with_clock(counted, audit.clone(), clock.clone()).await;
    let engine = Arc::new(engine);
    // A captured payment first: the change's statements are prepared before the lock.
    engine
        .execute_payment(&agent_p(), &pay("pay-warm", &card, true))
        .await
        .expect("warm");
    let out = engine
        .execute_payment(&agent_p(), &pay("pay-auth", &card, false))
        .await
        .expect("payment");
    let attempt = out.attempt().expect("attempt").id.clone();
    assert_eq!(
        out.attempt().map(|a| a.status),
        Some(AttemptStatus::Authorized)
    );
    let before = footprint(&admin).await;
    admin.batch_execute("BEGIN").await.expect("begin");
    admin
        .batch_execute("LOCK TABLE holds IN ACCESS EXCLUSIVE MODE")
        .await
        .expect("lock");
    let e = engine.clone();
    let a = attempt.clone();
    let task = tokio::spawn(async move {
        e.capture(&agent_p(), &agent_capture("cap-dropped", &a, None))
            .await
    });
    // The first round's read of the hold's mandates (sent with BEGIN, the compare-and-set).
    let waiting = tokio::spawn(async move {
        until_waiting_for(&admin, "holds").await;
        admin
    });
    while !waiting.is_finished() {
        if task.is_finished() {
            panic!("the capture ended before it waited: {:?}", task.await);
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let admin = waiting.await.expect("the change waited for the lock");
    // In `change_attempt` (its first round: the hold's reads go out with BEGIN).
    assert_eq!(
        counter.counts().calls.last().map(|(m, _)| *m),
        Some("store.change_attempt")
    );
    task.abort();
    let _ = task.await;
    admin.batch_execute("COMMIT").await.expect("unlock");
    until_idle(&admin).await;
    // The capture's own idempotency record and its events written before the change may
    // stay; the attempts, holds, levels, snapshots and the amount held are as before.
    let after = footprint(&admin).await;
    for i in [1, 2, 3, 4, 9] {
        assert_eq!(
            after[i], before[i],
            "the change wrote nothing: {before:?} -> {after:?}"
        );
    }
    assert_eq!(
        store
            .attempt(&attempt)
            .await
            .expect("read")
            .map(|a| a.status),
        Some(AttemptStatus::Authorized)
    );
    assert_eq!(hold_state(&admin, &attempt).await, "held");
    // The same key: once the dropped holder's lease is over, the retry takes it over.
    let mut done = engine
        .capture(&agent_p(), &agent_capture("cap-dropped", &attempt, None))
        .await;
    if done.is_err() {
        clock.advance(chrono::Duration::hours(1));
        done = engine
            .capture(&agent_p(), &agent_capture("cap-dropped", &attempt, None))
            .await;
    }
    let done = done.expect("the same key captures");
    assert_eq!(
        done.attempt().map(|a| a.status),
        Some(AttemptStatus::Captured)
    );
    assert_eq!(hold_state(&admin, &attempt).await, "committed");
    assert_eq!(psp.payments().len(), 2);
    audit.verify().await.expect("trail intact");
    Backend::Postgres { url, schema }.drop_schema().await;
}

/// Hostile: a payment dropped after the batch carrying the open's COMMIT went out (the server
/// slow to answer, the caller gives up 10 ms after the third round trip was sent). The open is
/// committed (the attempt, its hold, the key in flight), the PSP was never asked. A retry under
/// the same key does not pay again while the first holder's lease runs; the sweep, once the
/// submission's deadline has passed, fails the attempt and releases its hold; a retry after
/// that never moves money twice.
#[tokio::test(flavor = "current_thread")]
async fn a_payment_dropped_after_its_commit_went_out_is_resolved_by_the_sweep() {
    let Some(url) = database_url() else { return };
    let proxy = RoundTripProxy::start_slow(
        RoundTripProxy::upstream_of(&url),
        std::time::Duration::from_millis(50),
    )
    .await;
    let schema = format!("rt_commit_dropped_{}", std::process::id());
    let (store, audit) = store_through(&proxy, &url, &schema, 1).await;
    let admin = admin(&url, &schema).await;
    let probe = proxy.clone();
    let counter = CallCounter::with_probe(Arc::new(move || probe.flights()));
    let counted: Arc<dyn Store> =
        Arc::new(CountingStore::new(Arc::new(store.clone()), counter.clone()));
    let clock = Arc::new(ManualClock::new(examples::now()));
    let (engine, card, psp) = engine_with_clock(counted, audit.clone(), clock.clone()).await;
    let engine = Arc::new(engine);
    engine
        .execute_payment(&agent_p(), &pay("pay-warm", &card, true))
        .await
        .expect("warm");
    let paid = psp.payments().len();
    let before = footprint(&admin).await;
    counter.reset();
    let e = engine.clone();
    let c = card.clone();
    let task = tokio::spawn(async move {
        e.execute_payment(&agent_p(), &pay("pay-dropped", &c, true))
            .await
    });
    // The flight count when `open_payment` was called; its third round trip is the one with
    // COMMIT.
    let mut opened_at = None;
    for _ in 0..1000 {
        opened_at = counter
            .counts()
            .calls
            .iter()
            .find(|(m, _)| *m == "store.open_payment")
            .map(|(_, f)| *f);
        if opened_at.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    let opened_at = opened_at.expect("open_payment was called");
    for _ in 0..2000 {
        if proxy.flights() >= opened_at + OPEN_ROUND_TRIPS {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    assert!(
        proxy.flights() >= opened_at + OPEN_ROUND_TRIPS,
        "round 3 never went out"
    );
    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    assert!(
        !task.is_finished(),
        "the payment ended before it was dropped"
    );
    task.abort();
    let _ = task.await;
    until_idle(&admin).await;
    let after = footprint(&admin).await;
    // Committed: one more attempt, hold and snapshot row... and the hold's amount held.
    assert_eq!(
        after[1],
        before[1] + 1,
        "the attempt is committed: {before:?} -> {after:?}"
    );
    assert_eq!(after[2], before[2] + 1, "the hold is committed");
    assert!(
        after[9] > before[9],
        "the hold's amount is held: {before:?} -> {after:?}"
    );
    assert_eq!(psp.payments().len(), paid, "the PSP was never asked");
    let dropped: String = admin
        .query_one("SELECT attempt_id FROM holds WHERE state = 'held'", &[])
        .await
        .expect("the dropped payment's hold")
        .get(0);
    let dropped = AttemptId::new(dropped).expect("attempt id");
    // The same key while the dropped holder's lease runs: refused, no money moves.
    let retry = engine
        .execute_payment(&agent_p(), &pay("pay-dropped", &card, true))
        .await;
    assert!(
        retry
            .as_ref()
            .map_or(true, |o| o.attempt().map(|a| &a.id) == Some(&dropped)),
        "{retry:?}"
    );
    assert_eq!(psp.payments().len(), paid, "the retry paid nothing");
    // The sweep, past the submission's deadline: the attempt is resolved, its hold released.
    clock.advance(chrono::Duration::days(1));
    engine.reconcile_pending(100).await.expect("sweep");
    let status = store
        .attempt(&dropped)
        .await
        .expect("read")
        .map(|a| a.status);
    assert!(
        status.is_some_and(|s| s.is_terminal()),
        "the sweep resolved the attempt: {status:?}"
    );
    assert_eq!(hold_state(&admin, &dropped).await, "released");
    let held: rust_decimal::Decimal = admin
        .query_one("SELECT COALESCE(SUM(held), 0) FROM accounts", &[])
        .await
        .expect("held")
        .get(0);
    assert_eq!(
        held,
        rust_decimal::Decimal::ZERO,
        "nothing is held any more"
    );
    // A retry under the same key after the sweep: never a second payment of the same key.
    let _ = engine
        .execute_payment(&agent_p(), &pay("pay-dropped", &card, true))
        .await;
    assert!(psp.payments().len() <= paid + 1);
    audit.verify().await.expect("trail intact");
    Backend::Postgres { url, schema }.drop_schema().await;
}

/// Hostile: a compare-and-set that waits for the attempt's row while another session changes
/// the status, and loses. The refusal names the status that won (read by a statement of its
/// own). Before, it named the status of the snapshot taken before the wait: "the status is
/// authorized, not authorized".
#[tokio::test(flavor = "current_thread")]
async fn a_lost_cas_names_the_status_that_won() {
    use agent_mandate::ports::AttemptChange;
    let Some(url) = database_url() else { return };
    let proxy = RoundTripProxy::start(RoundTripProxy::upstream_of(&url)).await;
    let schema = format!("rt_lost_cas_{}", std::process::id());
    let (store, audit) = store_through(&proxy, &url, &schema, 1).await;
    let admin = admin(&url, &schema).await;
    let (engine, card) = engine_on(store.clone(), audit).await;
    let out = engine
        .execute_payment(&agent_p(), &pay("pay-auth", &card, false))
        .await
        .expect("payment");
    let attempt = out.attempt().expect("attempt").clone();
    assert_eq!(attempt.status, AttemptStatus::Authorized);
    admin.batch_execute("BEGIN").await.expect("begin");
    admin
        .execute(
            "UPDATE attempts SET status = $2 WHERE id = $1",
            &[&attempt.id.as_str(), &AttemptStatus::Captured.as_str()],
        )
        .await
        .expect("the winner");
    let s = store.clone();
    let a = attempt.clone();
    let task = tokio::spawn(async move {
        let hold_id = a.hold_id();
        s.change_attempt(&AttemptChange {
            next: &a,
            expected: AttemptStatus::Authorized,
            hold_id: &hold_id,
            holds: &[],
            fence: None,
            completion: None,
            events: &[],
        })
        .await
    });
    until_blocked_in(&admin, "UPDATE attempts SET status").await;
    admin.batch_execute("COMMIT").await.expect("commit");
    match task.await.expect("task") {
        Err(StoreError::Conflict { message, .. }) => assert_eq!(
            message,
            format!(
                "the status is {}, not {}",
                AttemptStatus::Captured,
                AttemptStatus::Authorized
            )
        ),
        other => panic!("{other:?}"),
    }
    Backend::Postgres { url, schema }.drop_schema().await;
}

/// Hostile: the trail's head moved inside the append's transaction by something other than
/// the append (a trigger stands for a repair by hand or a writer that forgot the lock). The
/// head's update is a compare-and-set on the head the append was planned on: it fails, the
/// payment's open rolls back and writes nothing. Before, the update overwrote the other head
/// and the payment went through.
#[tokio::test(flavor = "current_thread")]
async fn a_head_moved_under_the_append_rolls_it_back() {
    let Some(url) = database_url() else { return };
    let proxy = RoundTripProxy::start(RoundTripProxy::upstream_of(&url)).await;
    let schema = format!("rt_head_moved_{}", std::process::id());
    let (store, audit) = store_through(&proxy, &url, &schema, 1).await;
    let admin = admin(&url, &schema).await;
    let (engine, card, psp) = engine_with_psp(store, audit.clone()).await;
    engine
        .execute_payment(&agent_p(), &pay("pay-warm", &card, true))
        .await
        .expect("warm");
    admin
        .batch_execute(&format!(
            "CREATE FUNCTION {schema}.move_head() RETURNS trigger LANGUAGE plpgsql AS $f$ \
             BEGIN UPDATE {schema}.audit_head SET hash = repeat('0', 64) WHERE id = 1; \
             RETURN NULL; END $f$; \
             CREATE TRIGGER move_head AFTER INSERT ON {schema}.audit_events \
             FOR EACH STATEMENT EXECUTE FUNCTION {schema}.move_head()"
        ))
        .await
        .expect("trigger");
    let before = footprint(&admin).await;
    let paid = psp.payments().len();
    let refused = engine
        .execute_payment(&agent_p(), &pay("pay-moved", &card, true))
        .await;
    assert!(refused.is_err(), "{refused:?}");
    let after = footprint(&admin).await;
    // Attempts, holds, levels, snapshots, events, the head and the amount held.
    for i in [1, 2, 3, 4, 5, 8, 9] {
        assert_eq!(after[i], before[i], "{before:?} -> {after:?}");
    }
    assert_eq!(psp.payments().len(), paid, "the PSP was not called");
    // The step-by-step append (the sink's own) checks the head the same way.
    let event = agent_mandate::domain::AuditEvent {
        at: examples::now(),
        kind: agent_mandate::domain::AuditKind::Hold {
            attempt_id: AttemptId::new("att_head_moved").expect("id"),
            action: agent_mandate::domain::HoldAction::Placed,
            amount: agent_mandate::domain::Money::from_minor(
                100,
                agent_mandate::domain::Currency::EUR,
            )
            .expect("money"),
            mandate_ids: vec![agent_mandate::domain::MandateId::new("m_leaf").expect("id")],
            policy: None,
        },
    };
    let appended = audit.append(&event).await;
    assert!(
        matches!(
            appended,
            Err(agent_mandate::ports::AuditError::Corrupt { .. })
        ),
        "{appended:?}"
    );
    let after = footprint(&admin).await;
    for i in [5, 8] {
        assert_eq!(after[i], before[i], "{before:?} -> {after:?}");
    }
    admin
        .batch_execute("DROP TRIGGER move_head ON audit_events")
        .await
        .expect("drop trigger");
    audit.verify().await.expect("trail intact");
    let done = engine
        .execute_payment(&agent_p(), &pay("pay-after", &card, true))
        .await
        .expect("payment");
    assert_eq!(
        done.attempt().map(|a| a.status),
        Some(AttemptStatus::Captured)
    );
    Backend::Postgres { url, schema }.drop_schema().await;
}

/// The round trips the first hold of a chain adds to `open_payment`: its accounts created
/// (their statement is prepared with the others), locked and summed again.
const FIRST_HOLD_ROUND_TRIPS: u64 = 3;

/// The first payment on a new connection: `open_payment` and `change_attempt` prepare their
/// statements together (one round trip each), not one after another (about seventeen each
/// before).
#[tokio::test(flavor = "current_thread")]
async fn the_first_payment_on_a_fresh_connection_stays_within_a_few_round_trips() {
    let Some(url) = database_url() else { return };
    let proxy = RoundTripProxy::start(RoundTripProxy::upstream_of(&url)).await;
    let schema = format!("rt_fresh_{}", std::process::id());
    let (store, audit) = store_through(&proxy, &url, &schema, 1).await;
    let payments = payments_counted(store, audit, &proxy, 1).await;
    let calls = &payments[0];
    let open = of(calls, "store.open_payment");
    let change = of(calls, "store.change_attempt");
    eprintln!("first payment: open_payment {open}, change_attempt {change} round trips");
    assert!(
        open <= 1 + OPEN_ROUND_TRIPS + FIRST_HOLD_ROUND_TRIPS,
        "open_payment took {open} round trips on a fresh connection: {calls:?}"
    );
    assert!(
        change <= 1 + CHANGE_ROUND_TRIPS,
        "change_attempt took {change} round trips on a fresh connection: {calls:?}"
    );
    Backend::Postgres { url, schema }.drop_schema().await;
}
