//! The store conformance suite on [`MemoryStore`], a model-based property test of its budget
//! ledger against a naive reference (I2, I5), and concurrent holds on one budget (I2).
//!
//! Run with `cargo test --features testkit --test conformance_store`. `PROPTEST_CASES=2048`
//! raises the case count of the property test.
#![cfg(feature = "testkit")]

mod common;

use std::sync::Arc;

use agent_mandate::adapters::memory::MemoryStore;
use agent_mandate::domain::{examples, AttemptId, Currency, MandateId, Money, Usage, WindowLimit};
use agent_mandate::ports::{
    BudgetLimits, HoldError, HoldLevel, HoldRequest, HoldState, Store, StoreError,
};
use agent_mandate::testkit::{store_conformance, store_conformance_exclusive};
use chrono::{DateTime, Duration, Utc};
use common::ledger_model::{block_on, caps, cents, config, mandate, op, run, three_levels, Caps};
use proptest::prelude::*;

fn attempt(n: impl std::fmt::Display) -> AttemptId {
    AttemptId::new(format!("attempt_{n}")).unwrap()
}

// ------------------------------------------------------------------------------------------
// The suite.

#[tokio::test]
async fn memory_store_passes_the_store_suite() {
    let store = MemoryStore::new();
    store_conformance(&store).await;
    store_conformance_exclusive(&store).await;
}

#[tokio::test]
async fn the_suite_runs_twice_on_the_same_store() {
    let store = MemoryStore::new();
    store_conformance(&store).await;
    store_conformance(&store).await;
}

// ------------------------------------------------------------------------------------------
// The ledger against the reference model of `tests/common/ledger_model.rs`.

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
        block_on(run(&MemoryStore::new(), caps, ops))?;
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
    let chain = three_levels("m", &caps);
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
            fence: None,
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
        fence: None,
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
        fence: None,
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
        fence: None,
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
            fence: None,
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
