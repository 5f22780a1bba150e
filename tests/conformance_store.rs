//! The store conformance suite on [`MemoryStore`], a model-based property test of its budget
//! ledger against a naive reference (I2, I5), and concurrent holds on one budget (I2).
//!
//! Run with `cargo test --features testkit --test conformance_store`. `PROPTEST_CASES=2048`
//! raises the case count of the property test.
#![cfg(feature = "testkit")]

use std::sync::Arc;

use agent_mandate::adapters::memory::MemoryStore;
use agent_mandate::domain::{
    examples, AttemptId, Currency, LimitKind, Mandate, MandateId, Money, Usage, WindowLimit,
};
use agent_mandate::ports::{
    BudgetLimits, HoldError, HoldLevel, HoldRequest, HoldState, RefundPolicy, Store, StoreError,
};
use agent_mandate::testkit::store_conformance;
use chrono::{DateTime, Duration, Utc};
use proptest::prelude::*;
use proptest::sample::Index;

fn config(cases: u32) -> ProptestConfig {
    let mut c = ProptestConfig::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        c.cases = cases;
    }
    c
}

fn cents(minor: i64) -> Money {
    Money::from_minor(minor, Currency::EUR).unwrap()
}

fn attempt(n: impl std::fmt::Display) -> AttemptId {
    AttemptId::new(format!("attempt_{n}")).unwrap()
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(f)
}

// ------------------------------------------------------------------------------------------
// The suite.

#[tokio::test]
async fn memory_store_passes_the_store_suite() {
    store_conformance(&MemoryStore::new()).await;
}

#[tokio::test]
async fn the_suite_runs_twice_on_the_same_store() {
    let store = MemoryStore::new();
    store_conformance(&store).await;
    store_conformance(&store).await;
}

// ------------------------------------------------------------------------------------------
// Mandates with given caps, in cents.

#[derive(Debug, Clone)]
struct Caps {
    lifetime: Option<i64>,
    /// (seconds, max amount, max count).
    windows: Vec<(u64, Option<i64>, Option<u32>)>,
    uses: Option<u32>,
    attempts: Option<u32>,
}

fn mandate(id: &str, parent: Option<&Mandate>, caps: &Caps) -> Mandate {
    let mut spec = examples::travel_backpack_mandate().spec().clone();
    spec.id = MandateId::new(id).unwrap();
    spec.parent_id = parent.map(|p| p.id().clone());
    spec.scope.budgets.lifetime = caps.lifetime.map(cents);
    spec.scope.budgets.windows = caps
        .windows
        .iter()
        .map(|&(window_seconds, amount, count)| WindowLimit {
            window_seconds,
            max_amount: amount.map(cents),
            max_count: count,
        })
        .collect();
    spec.scope.max_uses = caps.uses;
    spec.scope.amount.max_payment_attempts = caps.attempts;
    Mandate::new(spec).unwrap()
}

/// Root, mid, leaf (root first, as `Store::chain` returns them).
fn three_levels(caps: &[Caps; 3]) -> Vec<Mandate> {
    let root = mandate("m_root", None, &caps[0]);
    let mid = mandate("m_mid", Some(&root), &caps[1]);
    let leaf = mandate("m_leaf", Some(&mid), &caps[2]);
    vec![root, mid, leaf]
}

// ------------------------------------------------------------------------------------------
// The reference model: a list of holds, every sum a linear scan.

#[derive(Debug, Clone)]
struct ModelHold {
    id: AttemptId,
    /// Indices into the chain (0 = root).
    levels: Vec<usize>,
    at: DateTime<Utc>,
    amount: i64,
    state: HoldState,
    committed: i64,
    refunded: i64,
    lifetime_back: i64,
    window_back: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct ModelUsage {
    held: i64,
    spent: i64,
    uses: u32,
    attempts: u32,
    /// (seconds, amount, count) for every window of the mandate's caps.
    windows: Vec<(u64, i64, u32)>,
}

impl ModelUsage {
    fn of(u: &Usage) -> ModelUsage {
        ModelUsage {
            held: u.held.minor_units(),
            spent: u.spent.minor_units(),
            uses: u.uses,
            attempts: u.attempts,
            windows: u
                .windows
                .iter()
                .map(|w| (w.window_seconds, w.amount.minor_units(), w.count))
                .collect(),
        }
    }
}

#[derive(Debug, Default)]
struct Model {
    caps: Vec<Caps>,
    holds: Vec<ModelHold>,
}

/// What the model expects a refusal to name: (level index, limit, counter).
type Refusal = (usize, Option<LimitKind>, Option<&'static str>);

impl Model {
    fn usage(&self, m: usize, now: DateTime<Utc>) -> ModelUsage {
        let mine = || self.holds.iter().filter(move |h| h.levels.contains(&m));
        let held = mine()
            .filter(|h| h.state == HoldState::Held)
            .map(|h| h.amount)
            .sum();
        let spent = mine()
            .filter(|h| h.state == HoldState::Committed)
            .map(|h| h.committed - h.lifetime_back)
            .sum();
        let counts = |h: &ModelHold| match h.state {
            HoldState::Held => true,
            HoldState::Committed => h.committed > 0,
            HoldState::Released => false,
        };
        let uses = mine().filter(|h| counts(h)).count() as u32;
        let attempts = mine().count() as u32;
        let windows = self.caps[m]
            .windows
            .iter()
            .map(|&(secs, _, _)| {
                let inside =
                    || mine().filter(|h| counts(h) && h.at > now - Duration::seconds(secs as i64));
                let amount = inside()
                    .map(|h| match h.state {
                        HoldState::Held => h.amount,
                        _ => h.committed - h.window_back,
                    })
                    .sum();
                (secs, amount, inside().count() as u32)
            })
            .collect();
        ModelUsage {
            held,
            spent,
            uses,
            attempts,
            windows,
        }
    }

    /// The first limit a hold of `amount` on `levels` (leaf first) at `at` would exceed.
    fn refusal(&self, levels: &[usize], amount: i64, at: DateTime<Utc>) -> Option<Refusal> {
        for &m in levels {
            let u = self.usage(m, at);
            let caps = &self.caps[m];
            if caps
                .lifetime
                .is_some_and(|cap| u.spent + u.held + amount > cap)
            {
                return Some((m, Some(LimitKind::Lifetime), None));
            }
            for (&(secs, max_amount, max_count), &(_, sum, count)) in
                caps.windows.iter().zip(&u.windows)
            {
                if max_amount.is_some_and(|cap| sum + amount > cap) {
                    let kind = LimitKind::WindowAmount {
                        window_seconds: secs,
                    };
                    return Some((m, Some(kind), None));
                }
                if max_count.is_some_and(|cap| count + 1 > cap) {
                    let kind = LimitKind::WindowCount {
                        window_seconds: secs,
                    };
                    return Some((m, Some(kind), None));
                }
            }
            if caps.uses.is_some_and(|cap| u.uses + 1 > cap) {
                return Some((m, None, Some("uses")));
            }
            if caps.attempts.is_some_and(|cap| u.attempts + 1 > cap) {
                return Some((m, None, Some("attempts")));
            }
        }
        None
    }
}

// ------------------------------------------------------------------------------------------
// Random operations.

#[derive(Debug, Clone)]
enum Op {
    /// A hold on the chain ending at `leaf` (0 root, 2 leaf), `dt` seconds later.
    Place {
        leaf: usize,
        amount: i64,
        dt: i64,
    },
    /// A second hold for an existing attempt.
    Duplicate {
        pick: Index,
    },
    Commit {
        pick: Index,
        amount: u16,
    },
    Release {
        pick: Index,
    },
    Refund {
        pick: Index,
        amount: u16,
        policy: u8,
    },
    /// Read the usage `dt` seconds later.
    Usage {
        dt: i64,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (0usize..3, 0i64..=400, 0i64..=90).prop_map(|(leaf, amount, dt)| Op::Place { leaf, amount, dt }),
        1 => any::<Index>().prop_map(|pick| Op::Duplicate { pick }),
        2 => (any::<Index>(), any::<u16>()).prop_map(|(pick, amount)| Op::Commit { pick, amount }),
        1 => any::<Index>().prop_map(|pick| Op::Release { pick }),
        2 => (any::<Index>(), any::<u16>(), 0u8..4).prop_map(|(pick, amount, policy)| Op::Refund { pick, amount, policy }),
        2 => (0i64..=400).prop_map(|dt| Op::Usage { dt }),
    ]
}

fn window_caps(secs: u64) -> impl Strategy<Value = (u64, Option<i64>, Option<u32>)> {
    (prop::option::of(50i64..=1500), prop::option::of(1u32..=8)).prop_map(move |(amount, count)| {
        match (amount, count) {
            (None, None) => (secs, None, Some(8)),
            (a, c) => (secs, a, c),
        }
    })
}

fn caps() -> impl Strategy<Value = Caps> {
    (
        prop::option::of(100i64..=3000),
        window_caps(60),
        window_caps(300),
        prop::option::of(1u32..=12),
        prop::option::of(2u32..=20),
    )
        .prop_map(|(lifetime, w1, w2, uses, attempts)| Caps {
            lifetime,
            windows: vec![w1, w2],
            uses,
            attempts,
        })
}

fn policy(n: u8) -> RefundPolicy {
    RefundPolicy {
        restores_lifetime: n & 1 == 1,
        restores_windows: n & 2 == 2,
    }
}

fn is_conflict(r: &Result<(), StoreError>) -> bool {
    matches!(r, Err(StoreError::Conflict { .. }))
}

/// Compares every usage field of every level with the model at `now`, and checks I2.
async fn compare_usage(
    store: &MemoryStore,
    model: &Model,
    chain: &[Mandate],
    now: DateTime<Utc>,
) -> Result<(), TestCaseError> {
    let usage = store.usage(chain, now).await.unwrap();
    prop_assert_eq!(usage.len(), 3);
    for (m, u) in usage.iter().enumerate() {
        prop_assert_eq!(&u.mandate_id, chain[m].id());
        let got = ModelUsage::of(u);
        prop_assert_eq!(
            &got,
            &model.usage(m, now),
            "usage of level {} at {}",
            m,
            now
        );
        // I2: held + spent never exceeds any cap.
        let caps = &model.caps[m];
        if let Some(cap) = caps.lifetime {
            prop_assert!(got.held + got.spent <= cap, "I2 lifetime of {}", m);
        }
        for (&(_, max_amount, max_count), &(_, amount, count)) in
            caps.windows.iter().zip(&got.windows)
        {
            prop_assert!(
                max_amount.is_none_or(|cap| amount <= cap),
                "I2 window amount"
            );
            prop_assert!(max_count.is_none_or(|cap| count <= cap), "I2 window count");
        }
        prop_assert!(caps.uses.is_none_or(|cap| got.uses <= cap), "I2 uses");
        prop_assert!(
            caps.attempts.is_none_or(|cap| got.attempts <= cap),
            "I2 attempts"
        );
    }
    Ok(())
}

/// Compares the stored record of hold `i` with the model.
async fn compare_hold(
    store: &MemoryStore,
    model: &Model,
    chain: &[Mandate],
    i: usize,
) -> Result<(), TestCaseError> {
    let h = &model.holds[i];
    let record = store.hold(&h.id).await.unwrap();
    let Some(r) = record else {
        return Err(TestCaseError::fail(format!("hold {} has no record", h.id)));
    };
    prop_assert_eq!(r.state, h.state);
    prop_assert_eq!(
        (
            r.amount.minor_units(),
            r.committed.minor_units(),
            r.refunded.minor_units()
        ),
        (h.amount, h.committed, h.refunded)
    );
    prop_assert_eq!(r.at, h.at);
    let ids: Vec<&MandateId> = h.levels.iter().map(|&m| chain[m].id()).collect();
    prop_assert_eq!(r.mandate_ids.iter().collect::<Vec<_>>(), ids);
    Ok(())
}

async fn run(caps: [Caps; 3], ops: Vec<Op>) -> Result<(), TestCaseError> {
    let store = MemoryStore::new();
    let chain = three_levels(&caps);
    for m in &chain {
        store.insert_mandate(m).await.unwrap();
    }
    let mut model = Model {
        caps: caps.to_vec(),
        holds: Vec::new(),
    };
    let mut now = examples::now();
    for (n, op) in ops.into_iter().enumerate() {
        match op {
            Op::Place { leaf, amount, dt } => {
                now += Duration::seconds(dt);
                let levels: Vec<usize> = (0..=leaf).rev().collect();
                let request =
                    HoldRequest::on_chain(attempt(n), cents(amount), now, &chain[..=leaf]);
                let expected = model.refusal(&levels, amount, now);
                let result = store.place_hold(&request).await;
                match (result, expected) {
                    (Ok(usage), None) => {
                        model.holds.push(ModelHold {
                            id: attempt(n),
                            levels: levels.clone(),
                            at: now,
                            amount,
                            state: HoldState::Held,
                            committed: 0,
                            refunded: 0,
                            lifetime_back: 0,
                            window_back: 0,
                        });
                        prop_assert_eq!(usage.len(), levels.len());
                        for (u, &m) in usage.iter().zip(&levels) {
                            prop_assert_eq!(&u.mandate_id, chain[m].id());
                            prop_assert_eq!(ModelUsage::of(u), model.usage(m, now), "reported usage of level {}", m);
                        }
                    }
                    (Err(HoldError::Refused { mandate_id, limit, counter, .. }), Some((m, l, c))) => {
                        prop_assert_eq!(&mandate_id, chain[m].id());
                        prop_assert_eq!(limit, l);
                        prop_assert_eq!(counter, c);
                    }
                    (got, want) => {
                        return Err(TestCaseError::fail(format!(
                            "place {amount} on {levels:?} at {now}: got {got:?}, the model expects a refusal {want:?}"
                        )))
                    }
                }
            }
            Op::Duplicate { pick } => {
                if model.holds.is_empty() {
                    continue;
                }
                let h = &model.holds[pick.index(model.holds.len())];
                let request = HoldRequest::on_chain(h.id.clone(), cents(1), now, &chain);
                let result = store.place_hold(&request).await;
                prop_assert!(
                    matches!(result, Err(HoldError::Duplicate { .. })),
                    "{:?}",
                    result
                );
            }
            Op::Commit { pick, amount } => {
                if model.holds.is_empty() {
                    continue;
                }
                let i = pick.index(model.holds.len());
                let h = &mut model.holds[i];
                let amount = i64::from(amount) % (h.amount + 21);
                let result = store.commit_hold(&h.id, cents(amount)).await;
                if h.state == HoldState::Held && amount <= h.amount {
                    prop_assert!(result.is_ok(), "{:?}", result);
                    h.state = HoldState::Committed;
                    h.committed = amount;
                } else {
                    prop_assert!(is_conflict(&result), "{:?}", result);
                }
                compare_hold(&store, &model, &chain, i).await?;
            }
            Op::Release { pick } => {
                if model.holds.is_empty() {
                    continue;
                }
                let i = pick.index(model.holds.len());
                let h = &mut model.holds[i];
                let result = store.release_hold(&h.id).await;
                if h.state == HoldState::Held {
                    prop_assert!(result.is_ok(), "{:?}", result);
                    h.state = HoldState::Released;
                } else {
                    prop_assert!(is_conflict(&result), "{:?}", result);
                }
                compare_hold(&store, &model, &chain, i).await?;
            }
            Op::Refund {
                pick,
                amount,
                policy: p,
            } => {
                if model.holds.is_empty() {
                    continue;
                }
                let i = pick.index(model.holds.len());
                let h = &mut model.holds[i];
                let amount = i64::from(amount) % (h.committed + 21);
                let result = store.refund_hold(&h.id, cents(amount), policy(p)).await;
                if h.state == HoldState::Committed && h.refunded + amount <= h.committed {
                    prop_assert!(result.is_ok(), "{:?}", result);
                    h.refunded += amount;
                    if policy(p).restores_lifetime {
                        h.lifetime_back += amount;
                    }
                    if policy(p).restores_windows {
                        h.window_back += amount;
                    }
                } else {
                    prop_assert!(is_conflict(&result), "{:?}", result);
                }
                compare_hold(&store, &model, &chain, i).await?;
            }
            Op::Usage { dt } => {
                now += Duration::seconds(dt);
                compare_usage(&store, &model, &chain, now).await?;
            }
        }
    }
    now += Duration::seconds(1);
    compare_usage(&store, &model, &chain, now).await
}

proptest! {
    #![proptest_config(config(256))]

    /// I2, I5: the ledger agrees with a reference model that scans every hold, over random
    /// sequences of holds, commits, releases, refunds and reads on a three-level chain with
    /// small caps and two windows, at increasing times; held + spent never exceed a cap.
    #[test]
    fn ledger_agrees_with_a_linear_scan_model(
        caps in [caps(), caps(), caps()],
        ops in prop::collection::vec(op(), 1..80),
    ) {
        block_on(run(caps, ops))?;
    }
}

// ------------------------------------------------------------------------------------------
// Concurrency.

/// I2 under contention: 8 threads place, commit, release and keep holds on one three-level
/// budget; the final usage is exactly what the accepted holds add up to, within every cap.
#[test]
fn concurrent_holds_never_overspend() {
    let caps = [
        Caps {
            lifetime: Some(50_000),
            windows: vec![(3600, Some(40_000), Some(600))],
            uses: None,
            attempts: None,
        },
        Caps {
            lifetime: Some(45_000),
            windows: vec![(3600, Some(40_000), Some(500))],
            uses: None,
            attempts: None,
        },
        Caps {
            lifetime: Some(35_000),
            windows: vec![],
            uses: Some(400),
            attempts: None,
        },
    ];
    let chain = three_levels(&caps);
    let store = Arc::new(MemoryStore::new());
    let at = examples::now();
    // Per thread: (held, spent, uses, attempts) per level.
    let results: Vec<[[i64; 4]; 3]> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|thread| {
                let store = Arc::clone(&store);
                let chain = chain.clone();
                s.spawn(move || {
                    block_on(async move {
                        let mut sums = [[0i64; 4]; 3];
                        for i in 0..400i64 {
                            let leaf = (i % 3) as usize;
                            let amount = (i * 37 + thread * 11) % 900 + 100;
                            let id = attempt(format!("{thread}_{i}"));
                            let request = HoldRequest::on_chain(
                                id.clone(),
                                cents(amount),
                                at,
                                &chain[..=leaf],
                            );
                            match store.place_hold(&request).await {
                                Ok(_) => {}
                                Err(HoldError::Refused { .. }) => continue,
                                Err(e) => panic!("{e}"),
                            }
                            let (held, spent, used) = match i % 4 {
                                0 => {
                                    store.commit_hold(&id, cents(amount)).await.unwrap();
                                    (0, amount, 1)
                                }
                                1 => {
                                    store.commit_hold(&id, cents(amount / 2)).await.unwrap();
                                    (0, amount / 2, 1)
                                }
                                2 => {
                                    store.release_hold(&id).await.unwrap();
                                    (0, 0, 0)
                                }
                                _ => (amount, 0, 1),
                            };
                            for level in sums.iter_mut().take(leaf + 1) {
                                level[0] += held;
                                level[1] += spent;
                                level[2] += used;
                                level[3] += 1;
                            }
                        }
                        sums
                    })
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let usage = block_on(store.usage(&chain, at)).unwrap();
    for (m, u) in usage.iter().enumerate() {
        let total = results.iter().fold([0i64; 4], |mut acc, r| {
            for k in 0..4 {
                acc[k] += r[m][k];
            }
            acc
        });
        assert_eq!(
            [
                u.held.minor_units(),
                u.spent.minor_units(),
                i64::from(u.uses),
                i64::from(u.attempts)
            ],
            total,
            "level {m}: the ledger is the sum of the accepted holds"
        );
        if let Some(cap) = caps[m].lifetime {
            assert!(
                total[0] + total[1] <= cap,
                "I2: level {m} within its lifetime cap"
            );
        }
        for w in &u.windows {
            assert!(
                w.amount.minor_units() <= 40_000 && w.count <= 600,
                "I2: window of level {m}"
            );
        }
    }
    assert!(
        usage[0].attempts > 100,
        "the test exercises the ledger: {:?}",
        usage[0]
    );
}

// ------------------------------------------------------------------------------------------
// Behaviour specific to the memory store.

fn level(id: &str, limits: BudgetLimits) -> HoldLevel {
    HoldLevel {
        mandate_id: MandateId::new(id).unwrap(),
        limits,
    }
}

fn no_limits() -> BudgetLimits {
    BudgetLimits {
        lifetime: None,
        windows: Vec::new(),
        max_uses: None,
        max_attempts: None,
    }
}

/// A window length first seen for a mandate that already has holds is built from its history.
#[tokio::test]
async fn a_window_seen_late_is_built_from_history() {
    let store = MemoryStore::new();
    let caps = Caps {
        lifetime: None,
        windows: vec![(3600, Some(100_000), None)],
        uses: None,
        attempts: None,
    };
    let m = mandate("m_late", None, &caps);
    let t0 = examples::now();
    for (i, (amount, secs)) in [(1000, 0), (2000, 1800), (4000, 3000)]
        .into_iter()
        .enumerate()
    {
        let request = HoldRequest {
            attempt_id: attempt(i),
            amount: cents(amount),
            at: t0 + Duration::seconds(secs),
            levels: vec![level("m_late", no_limits())],
        };
        store.place_hold(&request).await.unwrap();
    }
    store.commit_hold(&attempt(1), cents(500)).await.unwrap();
    let u = store
        .usage(std::slice::from_ref(&m), t0 + Duration::seconds(3600))
        .await
        .unwrap();
    let w = u[0].window(3600).unwrap();
    assert_eq!((w.amount, w.count), (cents(4500), 2));
    assert_eq!(u[0].held, cents(5000));
    // From then on it is maintained like any other window.
    store.release_hold(&attempt(2)).await.unwrap();
    let u = store
        .usage(std::slice::from_ref(&m), t0 + Duration::seconds(5399))
        .await
        .unwrap();
    assert_eq!(
        u[0].window(3600).map(|w| (w.amount, w.count)),
        Some((cents(500), 1))
    );
}

/// Documented: windows never move back when the times given go backwards.
#[tokio::test]
async fn windows_never_move_back() {
    let store = MemoryStore::new();
    let caps = Caps {
        lifetime: None,
        windows: vec![(60, Some(1000), None)],
        uses: None,
        attempts: None,
    };
    let m = mandate("m_back", None, &caps);
    let chain = [m.clone()];
    let t0 = examples::now();
    store
        .place_hold(&HoldRequest::on_chain(attempt(1), cents(1000), t0, &chain))
        .await
        .unwrap();
    let later = store
        .usage(&chain, t0 + Duration::seconds(60))
        .await
        .unwrap();
    assert!(later[0].windows[0].amount.is_zero());
    let earlier = store
        .usage(&chain, t0 + Duration::seconds(30))
        .await
        .unwrap();
    assert!(earlier[0].windows[0].amount.is_zero());
    // A hold at a time the window already moved past does not enter it.
    let usage = store
        .place_hold(&HoldRequest::on_chain(attempt(2), cents(1000), t0, &chain))
        .await
        .unwrap();
    assert!(usage[0].windows[0].amount.is_zero());
    assert_eq!(usage[0].held, cents(2000));
}

/// Bad hold requests are errors, never panics, and hold nothing.
#[tokio::test]
async fn odd_hold_requests_are_refused_or_harmless() {
    let store = MemoryStore::new();
    let at = examples::now();
    let twice = HoldRequest {
        attempt_id: attempt(1),
        amount: cents(100),
        at,
        levels: vec![level("m_a", no_limits()), level("m_a", no_limits())],
    };
    assert!(matches!(
        store.place_hold(&twice).await,
        Err(HoldError::Store(StoreError::Other(_)))
    ));
    assert!(store.hold(&attempt(1)).await.unwrap().is_none());
    let deep = HoldRequest {
        attempt_id: attempt(2),
        amount: cents(100),
        at,
        levels: (0..65)
            .map(|i| level(&format!("m_{i}"), no_limits()))
            .collect(),
    };
    assert!(store.place_hold(&deep).await.is_err());
    // No levels: a hold on nothing.
    let none = HoldRequest {
        attempt_id: attempt(3),
        amount: cents(100),
        at,
        levels: Vec::new(),
    };
    assert_eq!(store.place_hold(&none).await.unwrap(), Vec::<Usage>::new());
    store.commit_hold(&attempt(3), cents(100)).await.unwrap();
    // Enormous windows and amounts: no overflow, amounts reported at most at the maximum.
    let huge = BudgetLimits {
        lifetime: None,
        windows: vec![WindowLimit {
            window_seconds: u64::MAX,
            max_amount: None,
            max_count: Some(u32::MAX),
        }],
        max_uses: None,
        max_attempts: None,
    };
    let max = Money::parse("1000000000000000", Currency::EUR).unwrap();
    for i in 10..14 {
        let request = HoldRequest {
            attempt_id: attempt(i),
            amount: max,
            at: DateTime::<Utc>::MAX_UTC,
            levels: vec![level("m_huge", huge.clone())],
        };
        let usage = store.place_hold(&request).await.unwrap();
        assert_eq!(usage[0].held, max);
        assert_eq!(usage[0].windows[0].amount, max);
    }
    let record = store.hold(&attempt(10)).await.unwrap().unwrap();
    assert_eq!(record.at, DateTime::<Utc>::MAX_UTC);
    // A USD hold on a mandate the store knows to be in EUR, without money limits.
    let eur_mandate = mandate(
        "m_eur",
        None,
        &Caps {
            lifetime: None,
            windows: vec![],
            uses: Some(5),
            attempts: None,
        },
    );
    store.insert_mandate(&eur_mandate).await.unwrap();
    let usd = HoldRequest::on_chain(
        attempt(20),
        Money::parse("1.00", Currency::USD).unwrap(),
        at,
        std::slice::from_ref(&eur_mandate),
    );
    assert!(matches!(
        store.place_hold(&usd).await,
        Err(HoldError::Currency { .. })
    ));
}

/// Holds placed at times out of order (as concurrent callers with their own clocks would) are
/// counted exactly: near the newest ones or far behind them, committed, released, then
/// leaving the window in time order.
#[tokio::test]
async fn out_of_order_times_are_counted_exactly() {
    let store = MemoryStore::new();
    let caps = Caps {
        lifetime: None,
        windows: vec![(3600, None, Some(100_000)), (600, None, Some(100_000))],
        uses: None,
        attempts: None,
    };
    let m = mandate("m_shuffled", None, &caps);
    let chain = [m.clone()];
    let t0 = examples::now();
    // A fixed permutation of 0..400 (multiplier coprime with 400), so most holds arrive far
    // out of order.
    let offsets: Vec<i64> = (0..400i64).map(|i| (i * 263 + 17) % 400).collect();
    let mut holds: Vec<(i64, i64, HoldState, i64)> = Vec::new(); // (offset, amount, state, committed)
    for (n, &offset) in offsets.iter().enumerate() {
        let amount = 100 + offset;
        let at = t0 + Duration::seconds(offset);
        store
            .place_hold(&HoldRequest::on_chain(
                attempt(n),
                cents(amount),
                at,
                &chain,
            ))
            .await
            .unwrap();
        let (state, committed) = match n % 3 {
            0 => {
                store
                    .commit_hold(&attempt(n), cents(amount / 2))
                    .await
                    .unwrap();
                (HoldState::Committed, amount / 2)
            }
            1 => {
                store.release_hold(&attempt(n)).await.unwrap();
                (HoldState::Released, 0)
            }
            _ => (HoldState::Held, 0),
        };
        holds.push((offset, amount, state, committed));
    }
    for later in (0..4400).step_by(37) {
        let now = t0 + Duration::seconds(later);
        let usage = store.usage(&chain, now).await.unwrap();
        for (secs, w) in [(3600i64, &usage[0].windows[0]), (600, &usage[0].windows[1])] {
            let inside = holds
                .iter()
                .filter(|h| h.0 > later - secs && h.2 != HoldState::Released);
            let amount: i64 = inside
                .clone()
                .map(|h| if h.2 == HoldState::Held { h.1 } else { h.3 })
                .sum();
            assert_eq!(
                (w.amount.minor_units(), w.count),
                (amount, inside.count() as u32),
                "{secs} s window at +{later} s"
            );
        }
    }
}
