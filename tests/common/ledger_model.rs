//! The budget ledger's reference model, shared by the property tests of every store: a list
//! of holds, every sum a linear scan (I2, I5), random operations on a three-level chain with
//! small caps and two windows, and `run`, which plays them against a `Store` and the model.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use agent_mandate::domain::{
    examples, AttemptId, Currency, LimitKind, Mandate, MandateId, Money, Usage, WindowLimit,
};
use agent_mandate::ports::{HoldError, HoldRequest, HoldState, RefundPolicy, Store, StoreError};
use chrono::{DateTime, Duration, Utc};
use proptest::prelude::*;
use proptest::sample::Index;

pub fn config(cases: u32) -> ProptestConfig {
    let mut c = ProptestConfig::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        c.cases = cases;
    }
    c
}

pub fn cents(minor: i64) -> Money {
    Money::from_minor(minor, Currency::EUR).unwrap()
}

pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// A prefix of ids unique to one case of one run (runs share the schema `am_model_test`).
pub fn case_tag() -> String {
    static RUN: OnceLock<String> = OnceLock::new();
    static CASE: AtomicU64 = AtomicU64::new(0);
    let run = RUN.get_or_init(|| {
        let nonce = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros());
        format!("{:x}{nonce:x}", std::process::id())
    });
    format!("{run}c{}", CASE.fetch_add(1, Ordering::Relaxed))
}

// ------------------------------------------------------------------------------------------
// Mandates with given caps, in cents.

#[derive(Debug, Clone)]
pub struct Caps {
    pub lifetime: Option<i64>,
    /// (seconds, max amount, max count).
    pub windows: Vec<(u64, Option<i64>, Option<u32>)>,
    pub uses: Option<u32>,
    pub attempts: Option<u32>,
}

pub fn mandate(id: &str, parent: Option<&Mandate>, caps: &Caps) -> Mandate {
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

/// Root, mid, leaf of case `tag` (root first, as `Store::chain` returns them).
pub fn three_levels(tag: &str, caps: &[Caps; 3]) -> Vec<Mandate> {
    let root = mandate(&format!("{tag}_root"), None, &caps[0]);
    let mid = mandate(&format!("{tag}_mid"), Some(&root), &caps[1]);
    let leaf = mandate(&format!("{tag}_leaf"), Some(&mid), &caps[2]);
    vec![root, mid, leaf]
}

// ------------------------------------------------------------------------------------------
// The reference model: a list of holds, every sum a linear scan.

#[derive(Debug, Clone)]
pub struct ModelHold {
    pub id: AttemptId,
    /// Indices into the chain (0 = root).
    pub levels: Vec<usize>,
    pub at: DateTime<Utc>,
    pub amount: i64,
    pub state: HoldState,
    pub committed: i64,
    pub refunded: i64,
    pub lifetime_back: i64,
    pub window_back: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelUsage {
    pub held: i64,
    pub spent: i64,
    pub uses: u32,
    pub attempts: u32,
    /// (seconds, amount, count) for every window of the mandate's caps.
    pub windows: Vec<(u64, i64, u32)>,
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
pub struct Model {
    caps: Vec<Caps>,
    holds: Vec<ModelHold>,
}

/// What the model expects a refusal to name: (level index, limit, counter).
pub type Refusal = (usize, Option<LimitKind>, Option<&'static str>);

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
pub enum Op {
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

pub fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (0usize..3, 0i64..=400, 0i64..=90).prop_map(|(leaf, amount, dt)| Op::Place { leaf, amount, dt }),
        1 => any::<Index>().prop_map(|pick| Op::Duplicate { pick }),
        2 => (any::<Index>(), any::<u16>()).prop_map(|(pick, amount)| Op::Commit { pick, amount }),
        1 => any::<Index>().prop_map(|pick| Op::Release { pick }),
        2 => (any::<Index>(), any::<u16>(), 0u8..4).prop_map(|(pick, amount, policy)| Op::Refund { pick, amount, policy }),
        2 => (0i64..=400).prop_map(|dt| Op::Usage { dt }),
    ]
}

pub fn window_caps(secs: u64) -> impl Strategy<Value = (u64, Option<i64>, Option<u32>)> {
    (prop::option::of(50i64..=1500), prop::option::of(1u32..=8)).prop_map(move |(amount, count)| {
        match (amount, count) {
            (None, None) => (secs, None, Some(8)),
            (a, c) => (secs, a, c),
        }
    })
}

pub fn caps() -> impl Strategy<Value = Caps> {
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

pub fn policy(n: u8) -> RefundPolicy {
    RefundPolicy {
        restores_lifetime: n & 1 == 1,
        restores_windows: n & 2 == 2,
    }
}

pub fn is_conflict(r: &Result<(), StoreError>) -> bool {
    matches!(r, Err(StoreError::Conflict { .. }))
}

/// Compares every usage field of every level with the model at `now`, and checks I2.
pub async fn compare_usage(
    store: &dyn Store,
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
pub async fn compare_hold(
    store: &dyn Store,
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

pub async fn run(store: &dyn Store, caps: [Caps; 3], ops: Vec<Op>) -> Result<(), TestCaseError> {
    let tag = case_tag();
    let attempt = |n: usize| AttemptId::new(format!("{tag}_attempt_{n}")).unwrap();
    let chain = three_levels(&tag, &caps);
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
                compare_hold(store, &model, &chain, i).await?;
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
                compare_hold(store, &model, &chain, i).await?;
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
                compare_hold(store, &model, &chain, i).await?;
            }
            Op::Usage { dt } => {
                now += Duration::seconds(dt);
                compare_usage(store, &model, &chain, now).await?;
            }
        }
    }
    now += Duration::seconds(1);
    compare_usage(store, &model, &chain, now).await
}
