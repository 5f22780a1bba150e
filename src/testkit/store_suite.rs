//! The conformance suite for [`Store`] adapters (I2, I3, I4, I5).
//!
//! Every check uses ids of its own (unique per call: a tag from the process, the wall clock and
//! a counter), so a shared database can run the suite again and again. Budget checks place holds
//! at times around [`examples::now`] on mandates made for the check.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration as StdDuration;

use chrono::{DateTime, Duration, Utc};

use crate::domain::{
    examples, ActorId, AttemptEvent, AttemptId, AttemptStatus, BuyerId, CheckoutId, Confirmation,
    ConfirmationId, ConfirmationScope, ContentDigest, CredentialRef, Currency, IdempotencyKey,
    LifecycleEvent, LimitKind, Mandate, MandateId, MandateSpec, MandateStatus, Money, Order,
    OrderId, Party, PaymentAction, PaymentAttempt, Usage, WindowLimit,
};
use crate::ports::{
    Begin, HoldError, HoldRequest, HoldState, IdempotencyScope, InsertOrder, RefundPolicy, Store,
    StoreError, StoredResult,
};

static STORE_RUN: AtomicU64 = AtomicU64::new(1);

/// A prefix unique to this call of a check.
fn tag() -> String {
    static PROCESS: OnceLock<String> = OnceLock::new();
    let process = PROCESS.get_or_init(|| {
        let micros = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros());
        format!("{:x}{:x}", std::process::id(), micros)
    });
    format!("ss{process}-{}", STORE_RUN.fetch_add(1, Ordering::Relaxed))
}

fn parse<T: std::str::FromStr>(text: &str) -> T
where
    T::Err: std::fmt::Display,
{
    text.parse()
        .unwrap_or_else(|e| panic!("store rule fixture: {text}: {e}"))
}

fn eur(amount: &str) -> Money {
    Money::parse(amount, Currency::EUR)
        .unwrap_or_else(|e| panic!("store rule fixture: {amount}: {e}"))
}

/// [`examples::now`] plus `secs` seconds.
fn t(secs: i64) -> DateTime<Utc> {
    examples::now() + Duration::seconds(secs)
}

/// Caps of a test mandate.
#[derive(Default, Clone)]
struct Caps {
    lifetime: Option<&'static str>,
    windows: Vec<(u64, Option<&'static str>, Option<u32>)>,
    uses: Option<u32>,
    attempts: Option<u32>,
}

fn spec(id: &str, parent: Option<&Mandate>, caps: &Caps) -> MandateSpec {
    let mut spec = examples::travel_backpack_mandate().spec().clone();
    spec.id = parse(id);
    spec.parent_id = parent.map(|p| p.id().clone());
    spec.scope.budgets.lifetime = caps.lifetime.map(eur);
    spec.scope.budgets.windows = caps
        .windows
        .iter()
        .map(|&(window_seconds, amount, count)| WindowLimit {
            window_seconds,
            max_amount: amount.map(eur),
            max_count: count,
        })
        .collect();
    spec.scope.max_uses = caps.uses;
    spec.scope.amount.max_payment_attempts = caps.attempts;
    spec
}

/// A root mandate with `caps`.
fn root(id: &str, caps: &Caps) -> Mandate {
    Mandate::new(spec(id, None, caps)).unwrap_or_else(|e| panic!("store rule fixture: {e}"))
}

/// A child of `parent` with `caps` (no wider than the parent's), via [`Mandate::derive`].
fn child(id: &str, parent: &Mandate, caps: &Caps) -> Mandate {
    parent
        .derive(spec(id, Some(parent), caps))
        .unwrap_or_else(|e| panic!("store rule fixture: {e}"))
}

async fn insert_all(store: &dyn Store, mandates: &[&Mandate]) {
    for m in mandates {
        store
            .insert_mandate(m)
            .await
            .unwrap_or_else(|e| panic!("store rule insert_mandate: a new mandate is stored: {e}"));
    }
}

/// Holds and budgets of one check: a tag for attempt ids.
struct Budget<'a> {
    store: &'a dyn Store,
    tag: String,
}

impl Budget<'_> {
    fn attempt(&self, name: &str) -> AttemptId {
        parse(&format!("{}-{name}", self.tag))
    }

    async fn try_hold(
        &self,
        name: &str,
        amount: Money,
        at: DateTime<Utc>,
        chain: &[Mandate],
    ) -> Result<Vec<Usage>, HoldError> {
        let id = self.attempt(name);
        // The attempt exists before its hold, as in the engine (a store may link them).
        if let Some(leaf) = chain.last() {
            match self
                .store
                .insert_attempt(&new_attempt(&id, leaf.id(), at))
                .await
            {
                Ok(()) | Err(StoreError::Conflict { .. }) => {}
                Err(e) => panic!("store rule insert_attempt: {e}"),
            }
        }
        let request = HoldRequest::on_chain(id, amount, at, chain);
        self.store.place_hold(&request).await
    }

    /// Places a hold that must be accepted; returns the usage it reports.
    async fn hold(
        &self,
        rule: &str,
        name: &str,
        amount: &str,
        at: DateTime<Utc>,
        chain: &[Mandate],
    ) -> Vec<Usage> {
        match self.try_hold(name, eur(amount), at, chain).await {
            Ok(usage) => {
                assert_eq!(
                    usage.len(),
                    chain.len(),
                    "store rule {rule}: place_hold reports one usage per level"
                );
                usage
            }
            Err(e) => panic!("store rule {rule}: a hold of {amount} must be accepted: {e}"),
        }
    }

    /// Places a hold that must be refused on `mandate` for `limit` / `counter`.
    #[expect(
        clippy::too_many_arguments,
        reason = "a refusal names the hold, the level and the limit"
    )]
    async fn refused(
        &self,
        rule: &str,
        name: &str,
        amount: &str,
        at: DateTime<Utc>,
        chain: &[Mandate],
        mandate: &Mandate,
        limit: Option<LimitKind>,
        counter: Option<&str>,
    ) {
        let before = self.usage(rule, chain, at).await;
        match self.try_hold(name, eur(amount), at, chain).await {
            Err(HoldError::Refused {
                mandate_id,
                limit: l,
                counter: c,
                would_be,
                max,
            }) => {
                assert_eq!(
                    (&mandate_id, &l, c),
                    (mandate.id(), &limit, counter),
                    "store rule {rule}: a hold of {amount} is refused naming the first level and \
                     limit exceeded"
                );
                assert!(
                    !would_be.is_empty() && !max.is_empty(),
                    "store rule {rule}: a refusal says what usage would be and the limit"
                );
            }
            Err(e) => panic!("store rule {rule}: a hold of {amount} must be Refused, got {e}"),
            Ok(_) => panic!("store rule {rule}: a hold of {amount} must be refused"),
        }
        let after = self.usage(rule, chain, at).await;
        assert_eq!(
            before, after,
            "store rule {rule}: a refused hold changes no usage at any level (all or nothing)"
        );
        let hold = self
            .store
            .hold(&self.attempt(name))
            .await
            .unwrap_or_else(|e| panic!("store rule {rule}: hold: {e}"));
        assert!(
            hold.is_none(),
            "store rule {rule}: a refused hold leaves no record"
        );
    }

    async fn usage(&self, rule: &str, chain: &[Mandate], now: DateTime<Utc>) -> Vec<Usage> {
        let usage = self
            .store
            .usage(chain, now)
            .await
            .unwrap_or_else(|e| panic!("store rule {rule}: usage: {e}"));
        assert_eq!(
            usage.iter().map(|u| &u.mandate_id).collect::<Vec<_>>(),
            chain.iter().map(|m| m.id()).collect::<Vec<_>>(),
            "store rule {rule}: usage reports each mandate of the chain, in chain order"
        );
        for (u, m) in usage.iter().zip(chain) {
            let reported: Vec<u64> = u.windows.iter().map(|w| w.window_seconds).collect();
            let limits: Vec<u64> = m
                .scope()
                .budgets
                .windows
                .iter()
                .map(|w| w.window_seconds)
                .collect();
            assert_eq!(
                reported, limits,
                "store rule {rule}: usage reports every window of the mandate's limits"
            );
            assert_eq!(
                u.currency(),
                m.currency(),
                "store rule {rule}: usage is in the mandate's currency"
            );
        }
        usage
    }

    async fn commit(&self, rule: &str, name: &str, amount: &str) {
        self.store
            .commit_hold(&self.attempt(name), eur(amount))
            .await
            .unwrap_or_else(|e| panic!("store rule {rule}: commit of {amount} must succeed: {e}"));
    }

    async fn release(&self, rule: &str, name: &str) {
        self.store
            .release_hold(&self.attempt(name))
            .await
            .unwrap_or_else(|e| panic!("store rule {rule}: release must succeed: {e}"));
    }

    async fn state(&self, rule: &str, name: &str) -> HoldState {
        match self.store.hold(&self.attempt(name)).await {
            Ok(Some(h)) => h.state,
            Ok(None) => panic!("store rule {rule}: the hold of {name} must exist"),
            Err(e) => panic!("store rule {rule}: hold: {e}"),
        }
    }
}

/// Asserts the counters of one usage entry.
fn expect(rule: &str, u: &Usage, spent: &str, held: &str, uses: u32, attempts: u32) {
    assert_eq!(
        (u.spent, u.held, u.uses, u.attempts),
        (eur(spent), eur(held), uses, attempts),
        "store rule {rule}: (spent, held, uses, attempts) of {}",
        u.mandate_id
    );
}

/// Asserts one window of a usage entry.
fn expect_window(rule: &str, u: &Usage, seconds: u64, amount: &str, count: u32) {
    let w = u
        .window(seconds)
        .unwrap_or_else(|| panic!("store rule {rule}: the {seconds} s window is reported"));
    assert_eq!(
        (w.amount, w.count),
        (eur(amount), count),
        "store rule {rule}: (amount, count) of the {seconds} s window of {}",
        u.mandate_id
    );
}

fn conflict<T: std::fmt::Debug>(rule: &str, r: Result<T, StoreError>) {
    match r {
        Err(StoreError::Conflict { .. }) => {}
        other => panic!("store rule {rule}: expected a Conflict, got {other:?}"),
    }
}

fn not_found<T: std::fmt::Debug>(rule: &str, r: Result<T, StoreError>) {
    match r {
        Err(StoreError::NotFound { .. }) => {}
        other => panic!("store rule {rule}: expected NotFound, got {other:?}"),
    }
}

/// Runs every check of the suite; panics naming the first broken rule.
///
/// The store may hold other data: every check uses ids of its own.
pub async fn store_conformance(store: &dyn Store) {
    store_mandates(store).await;
    store_suspensions(store).await;
    store_confirmations_and_snapshots(store).await;
    store_budget_all_or_nothing(store).await;
    store_limits(store).await;
    store_windows(store).await;
    store_hold_resolution(store).await;
    store_refund_policy(store).await;
    store_attempts(store).await;
    store_idempotency(store).await;
    store_orders(store).await;
    store_controls(store).await;
}

/// Mandates: insert (a taken id is a `Conflict`), read back, `chain` root first (empty for an
/// unknown leaf; `Corrupt` on the `mandates` table for a missing parent or a loop, unless the
/// store refused to insert such mandates), and
/// `update_mandate` as a compare-and-set on the status (`Conflict` when it moved, `NotFound`
/// for an unknown mandate).
pub async fn store_mandates(store: &dyn Store) {
    let tag = tag();
    let caps = Caps::default();
    let r = root(&format!("{tag}-root"), &caps);
    let c = child(&format!("{tag}-child"), &r, &caps);
    let l = child(&format!("{tag}-leaf"), &c, &caps);
    insert_all(store, &[&r, &c, &l]).await;
    conflict("insert_mandate: a taken id", store.insert_mandate(&r).await);

    let read = store
        .mandate(r.id())
        .await
        .unwrap_or_else(|e| panic!("store rule mandate: {e}"));
    assert_eq!(
        read.as_ref(),
        Some(&r),
        "store rule mandate: reads back what was stored"
    );
    let unknown: MandateId = parse(&format!("{tag}-unknown"));
    assert!(
        matches!(store.mandate(&unknown).await, Ok(None)),
        "store rule mandate: an unknown id is None"
    );

    let chain = store
        .chain(l.id())
        .await
        .unwrap_or_else(|e| panic!("store rule chain: {e}"));
    assert_eq!(
        chain,
        vec![r.clone(), c.clone(), l.clone()],
        "store rule chain: the chain runs from the root to the leaf"
    );
    match store.chain(r.id()).await {
        Ok(chain) => assert_eq!(chain, vec![r.clone()], "store rule chain: a root alone"),
        Err(e) => panic!("store rule chain: {e}"),
    }
    assert!(
        matches!(store.chain(&unknown).await, Ok(v) if v.is_empty()),
        "store rule chain: an unknown leaf has an empty chain"
    );

    // A missing parent, and parents that loop: a store may refuse to insert such mandates
    // (a foreign key); if it stores them, `chain` reports them as `Corrupt`.
    let mut orphan = spec(&format!("{tag}-orphan"), None, &caps);
    orphan.parent_id = Some(parse(&format!("{tag}-missing")));
    let orphan = Mandate::new(orphan).unwrap_or_else(|e| panic!("store rule fixture: {e}"));
    let (a_id, b_id) = (format!("{tag}-loop-a"), format!("{tag}-loop-b"));
    let mut a = spec(&a_id, None, &caps);
    a.parent_id = Some(parse(&b_id));
    let mut b = spec(&b_id, None, &caps);
    b.parent_id = Some(parse(&a_id));
    let a = Mandate::new(a).unwrap_or_else(|e| panic!("store rule fixture: {e}"));
    let b = Mandate::new(b).unwrap_or_else(|e| panic!("store rule fixture: {e}"));
    for (what, mandates) in [
        ("a missing parent", vec![&orphan]),
        ("parents that loop", vec![&a, &b]),
    ] {
        let mut stored = true;
        for m in &mandates {
            stored = stored && store.insert_mandate(m).await.is_ok();
        }
        if !stored {
            continue;
        }
        match store.chain(mandates[0].id()).await {
            Err(StoreError::Corrupt { table, .. }) => assert_eq!(
                table, "mandates",
                "store rule chain: {what} is Corrupt on the mandates table"
            ),
            other => panic!("store rule chain: {what} must be Corrupt, got {other:?}"),
        }
    }

    // Compare and set.
    let reason = parse("suite");
    let revoked = c
        .apply(&LifecycleEvent::Revoke { reason }, t(0))
        .unwrap_or_else(|e| panic!("store rule fixture: {e}"));
    store
        .update_mandate(&revoked, MandateStatus::Active)
        .await
        .unwrap_or_else(|e| panic!("store rule update_mandate: the expected status: {e}"));
    conflict(
        "update_mandate: the status moved",
        store.update_mandate(&revoked, MandateStatus::Active).await,
    );
    let read = store
        .mandate(c.id())
        .await
        .unwrap_or_else(|e| panic!("store rule mandate: {e}"));
    assert_eq!(
        read.map(|m| m.status()),
        Some(MandateStatus::Revoked),
        "store rule update_mandate: the new lifecycle is stored"
    );
    let ghost = Mandate::new(spec(&format!("{tag}-ghost"), None, &caps))
        .unwrap_or_else(|e| panic!("store rule fixture: {e}"));
    not_found(
        "update_mandate: an unknown mandate",
        store.update_mandate(&ghost, MandateStatus::Active).await,
    );
}

/// The kill switch: `suspensions` reports exactly the suspended parties among those asked
/// about, and lifting a suspension takes effect.
pub async fn store_suspensions(store: &dyn Store) {
    let tag = tag();
    let a1: ActorId = parse(&format!("{tag}-a1"));
    let a2: ActorId = parse(&format!("{tag}-a2"));
    let buyer: BuyerId = parse(&format!("{tag}-buyer"));
    let other: BuyerId = parse(&format!("{tag}-other"));
    let ask = |buyer: BuyerId| {
        let actors = vec![a1.clone(), a2.clone()];
        async move {
            store
                .suspensions(&actors, &buyer)
                .await
                .unwrap_or_else(|e| panic!("store rule suspensions: {e}"))
        }
    };
    let s = ask(buyer.clone()).await;
    assert!(
        s.actors.is_empty() && s.buyers.is_empty(),
        "store rule suspensions: nobody is suspended at first"
    );
    for party in [Party::Actor(a1.clone()), Party::Buyer(buyer.clone())] {
        store
            .set_suspended(&party, true)
            .await
            .unwrap_or_else(|e| panic!("store rule set_suspended: {e}"));
    }
    let s = ask(buyer.clone()).await;
    assert_eq!(
        (s.actors, s.buyers),
        (vec![a1.clone()], vec![buyer.clone()]),
        "store rule suspensions: only the suspended parties are reported"
    );
    let s = ask(other).await;
    assert!(
        s.buyers.is_empty(),
        "store rule suspensions: another buyer is not suspended"
    );
    store
        .set_suspended(&Party::Actor(a1.clone()), false)
        .await
        .unwrap_or_else(|e| panic!("store rule set_suspended: {e}"));
    let s = ask(buyer.clone()).await;
    assert!(
        s.actors.is_empty() && s.buyers == vec![buyer],
        "store rule suspensions: a lifted suspension is gone, the others stay"
    );
}

/// Confirmations (an identical insert is a no-op, another with the same id a `Conflict`; read
/// by buyer and snapshot) and snapshots (kept by id, idempotent).
pub async fn store_confirmations_and_snapshots(store: &dyn Store) {
    let tag = tag();
    let snapshot = examples::travel_backpack_snapshot();
    for _ in 0..2 {
        store
            .put_snapshot(&snapshot)
            .await
            .unwrap_or_else(|e| panic!("store rule put_snapshot: idempotent: {e}"));
    }
    match store.snapshot(&snapshot.id()).await {
        Ok(Some(s)) => assert_eq!(s, snapshot, "store rule snapshot: reads back what was kept"),
        other => panic!("store rule snapshot: the snapshot kept, got {other:?}"),
    }
    let buyer: BuyerId = parse(&format!("{tag}-buyer"));
    let m = root(&format!("{tag}-mandate"), &Caps::default());
    insert_all(store, &[&m]).await;
    let confirmation = Confirmation {
        id: parse::<ConfirmationId>(&format!("{tag}-confirmation")),
        buyer_id: buyer.clone(),
        confirmed_by: crate::domain::Actor {
            id: parse(&format!("{tag}-human")),
            kind: crate::domain::ActorKind::Human,
        },
        confirmed_at: t(0),
        expires_at: Some(t(3600)),
        snapshot_id: snapshot.id(),
        scope: ConfirmationScope {
            mandate_id: m.id().clone(),
            actions: [PaymentAction::Authorize].into_iter().collect(),
            max_amount: eur("150.00"),
        },
        channel_ref: parse("push:suite"),
    };
    for rule in ["insert_confirmation", "insert_confirmation: the same again"] {
        store
            .insert_confirmation(&confirmation)
            .await
            .unwrap_or_else(|e| panic!("store rule {rule}: {e}"));
    }
    let mut other = confirmation.clone();
    other.scope.max_amount = eur("149.00");
    conflict(
        "insert_confirmation: another with the same id",
        store.insert_confirmation(&other).await,
    );
    let found = store
        .confirmations(&buyer, &snapshot.id())
        .await
        .unwrap_or_else(|e| panic!("store rule confirmations: {e}"));
    assert_eq!(
        found,
        vec![confirmation],
        "store rule confirmations: the buyer's confirmation of the snapshot, as stored"
    );
    let elsewhere = examples::over_limit_snapshot().id();
    assert!(
        matches!(store.confirmations(&buyer, &elsewhere).await, Ok(v) if v.is_empty()),
        "store rule confirmations: none for another snapshot"
    );
    let stranger: BuyerId = parse(&format!("{tag}-stranger"));
    assert!(
        matches!(store.confirmations(&stranger, &snapshot.id()).await, Ok(v) if v.is_empty()),
        "store rule confirmations: none for another buyer"
    );
}

/// All or nothing (I2): a hold refused at any level holds nothing at any level and leaves no
/// record; the refusal names the first level in leaf-first order; a duplicate attempt is
/// `Duplicate`; another currency is `Currency`; the usage `place_hold` reports is what `usage`
/// reads right after, in level order.
pub async fn store_budget_all_or_nothing(store: &dyn Store) {
    let b = Budget { store, tag: tag() };
    let caps = Caps {
        lifetime: Some("100.00"),
        ..Caps::default()
    };
    let r = root(&format!("{}-root", b.tag), &caps);
    let small = Caps {
        lifetime: Some("50.00"),
        ..Caps::default()
    };
    let c = child(&format!("{}-child", b.tag), &r, &caps);
    let c2 = child(&format!("{}-child2", b.tag), &r, &small);
    insert_all(store, &[&r, &c, &c2]).await;
    let on_root = [r.clone()];
    let under_c = [r.clone(), c.clone()];
    let under_c2 = [r.clone(), c2.clone()];

    let rule = "place_hold: usage reported";
    let reported = b.hold(rule, "p1", "60.00", t(0), &under_c).await;
    let read = b.usage(rule, &under_c, t(0)).await;
    let reversed: Vec<Usage> = read.into_iter().rev().collect();
    assert_eq!(
        reported, reversed,
        "store rule {rule}: place_hold reports, leaf first, the usage read right after"
    );
    expect(rule, &reported[0], "0.00", "60.00", 1, 1);
    expect(rule, &reported[1], "0.00", "60.00", 1, 1);

    let rule = "place_hold: leaf first";
    b.refused(
        rule,
        "p2",
        "60.00",
        t(1),
        &under_c2,
        &c2,
        Some(LimitKind::Lifetime),
        None,
    )
    .await;

    let rule = "place_hold: all or nothing";
    b.hold(rule, "p3", "40.00", t(2), &on_root).await;
    b.refused(
        rule,
        "p4",
        "0.01",
        t(3),
        &under_c,
        &r,
        Some(LimitKind::Lifetime),
        None,
    )
    .await;
    let u = b.usage(rule, &under_c2, t(3)).await;
    expect(rule, &u[0], "0.00", "100.00", 2, 2);
    expect(rule, &u[1], "0.00", "0.00", 0, 0);

    let rule = "place_hold: a refused attempt may try again";
    b.release(rule, "p3").await;
    b.hold(rule, "p4", "0.01", t(4), &under_c).await;

    let rule = "place_hold: duplicate attempt";
    let before = b.usage(rule, &under_c, t(5)).await;
    match b.try_hold("p4", eur("1.00"), t(5), &under_c).await {
        Err(HoldError::Duplicate { attempt_id }) => {
            assert_eq!(
                attempt_id,
                b.attempt("p4"),
                "store rule {rule}: names the attempt"
            )
        }
        other => {
            panic!("store rule {rule}: a second hold for an attempt is Duplicate, got {other:?}")
        }
    }
    assert_eq!(
        before,
        b.usage(rule, &under_c, t(5)).await,
        "store rule {rule}: a duplicate changes nothing"
    );

    let rule = "place_hold: currency";
    let usd =
        Money::parse("1.00", Currency::USD).unwrap_or_else(|e| panic!("store rule fixture: {e}"));
    match b.try_hold("p5", usd, t(6), &under_c).await {
        Err(HoldError::Currency { .. }) => {}
        other => panic!("store rule {rule}: a hold in another currency is Currency, got {other:?}"),
    }
    assert_eq!(
        before,
        b.usage(rule, &under_c, t(6)).await,
        "store rule {rule}: a hold in another currency holds nothing"
    );
}

/// Each limit is enforced exactly at its boundary (`== cap` accepted, one minor unit more
/// refused), and a refusal names the first limit in the order lifetime, windows (amount then
/// count, in the order of the limits), uses, attempts.
pub async fn store_limits(store: &dyn Store) {
    let b = Budget { store, tag: tag() };
    let m = |name: &str, caps: Caps| root(&format!("{}-{name}", b.tag), &caps);
    let lifetime = m(
        "lifetime",
        Caps {
            lifetime: Some("100.00"),
            ..Caps::default()
        },
    );
    let amount = m(
        "amount",
        Caps {
            windows: vec![(3600, Some("50.00"), None)],
            ..Caps::default()
        },
    );
    let count = m(
        "count",
        Caps {
            windows: vec![(3600, None, Some(2))],
            ..Caps::default()
        },
    );
    let uses = m(
        "uses",
        Caps {
            uses: Some(2),
            ..Caps::default()
        },
    );
    let attempts = m(
        "attempts",
        Caps {
            attempts: Some(3),
            ..Caps::default()
        },
    );
    let all = m(
        "all",
        Caps {
            lifetime: Some("10.00"),
            windows: vec![(60, Some("10.00"), Some(1)), (3600, Some("10.00"), Some(1))],
            uses: Some(1),
            attempts: Some(1),
        },
    );
    let windows = m(
        "windows",
        Caps {
            windows: vec![(60, Some("10.00"), Some(1)), (3600, Some("10.00"), Some(1))],
            uses: Some(1),
            attempts: Some(1),
            ..Caps::default()
        },
    );
    let counters = m(
        "counters",
        Caps {
            uses: Some(1),
            attempts: Some(1),
            ..Caps::default()
        },
    );
    insert_all(
        store,
        &[
            &lifetime, &amount, &count, &uses, &attempts, &all, &windows, &counters,
        ],
    )
    .await;
    let one = |m: &Mandate| [m.clone()];

    let rule = "limits: lifetime";
    b.hold(rule, "l1", "60.00", t(0), &one(&lifetime)).await;
    b.refused(
        rule,
        "l2",
        "40.01",
        t(1),
        &one(&lifetime),
        &lifetime,
        Some(LimitKind::Lifetime),
        None,
    )
    .await;
    b.hold(rule, "l3", "40.00", t(2), &one(&lifetime)).await;

    let rule = "limits: window amount";
    b.hold(rule, "a1", "30.00", t(0), &one(&amount)).await;
    b.refused(
        rule,
        "a2",
        "20.01",
        t(1),
        &one(&amount),
        &amount,
        Some(LimitKind::WindowAmount {
            window_seconds: 3600,
        }),
        None,
    )
    .await;
    b.hold(rule, "a3", "20.00", t(2), &one(&amount)).await;

    let rule = "limits: window count";
    b.hold(rule, "c1", "1.00", t(0), &one(&count)).await;
    b.hold(rule, "c2", "1.00", t(1), &one(&count)).await;
    b.refused(
        rule,
        "c3",
        "0.00",
        t(2),
        &one(&count),
        &count,
        Some(LimitKind::WindowCount {
            window_seconds: 3600,
        }),
        None,
    )
    .await;

    let rule = "limits: uses";
    b.hold(rule, "u1", "1.00", t(0), &one(&uses)).await;
    b.hold(rule, "u2", "1.00", t(1), &one(&uses)).await;
    b.refused(
        rule,
        "u3",
        "1.00",
        t(2),
        &one(&uses),
        &uses,
        None,
        Some("uses"),
    )
    .await;
    b.release(rule, "u2").await;
    b.hold(rule, "u3", "1.00", t(3), &one(&uses)).await;
    b.refused(
        rule,
        "u4",
        "1.00",
        t(4),
        &one(&uses),
        &uses,
        None,
        Some("uses"),
    )
    .await;

    let rule = "limits: attempts";
    for (i, name) in ["t1", "t2", "t3"].into_iter().enumerate() {
        b.hold(rule, name, "1.00", t(i as i64), &one(&attempts))
            .await;
        b.release(rule, name).await;
    }
    b.refused(
        rule,
        "t4",
        "1.00",
        t(4),
        &one(&attempts),
        &attempts,
        None,
        Some("attempts"),
    )
    .await;

    let rule = "limits: order (lifetime first)";
    b.hold(rule, "o1", "10.00", t(0), &one(&all)).await;
    b.refused(
        rule,
        "o2",
        "10.00",
        t(1),
        &one(&all),
        &all,
        Some(LimitKind::Lifetime),
        None,
    )
    .await;
    let rule = "limits: order (windows in order, amount before count)";
    b.hold(rule, "o3", "10.00", t(0), &one(&windows)).await;
    b.refused(
        rule,
        "o4",
        "10.00",
        t(1),
        &one(&windows),
        &windows,
        Some(LimitKind::WindowAmount { window_seconds: 60 }),
        None,
    )
    .await;
    b.refused(
        rule,
        "o5",
        "0.00",
        t(2),
        &one(&windows),
        &windows,
        Some(LimitKind::WindowCount { window_seconds: 60 }),
        None,
    )
    .await;
    let rule = "limits: order (uses before attempts)";
    b.hold(rule, "o6", "1.00", t(0), &one(&counters)).await;
    b.refused(
        rule,
        "o7",
        "1.00",
        t(1),
        &one(&counters),
        &counters,
        None,
        Some("uses"),
    )
    .await;
}

/// Rolling windows cover `(now - length, now]` by the time a hold was placed: a hold at `t`
/// counts at `t + length - 1 s` and not at `t + length`; each window moves on its own; held
/// amounts stay held however old (I5); a mandate without holds reports every window at zero.
pub async fn store_windows(store: &dyn Store) {
    let b = Budget { store, tag: tag() };
    let caps = Caps {
        windows: vec![(60, Some("10.00"), Some(2)), (3600, Some("20.00"), None)],
        ..Caps::default()
    };
    let m = root(&format!("{}-m", b.tag), &caps);
    insert_all(store, &[&m]).await;
    let chain = [m.clone()];
    let rule = "windows: nothing yet";
    let u = b.usage(rule, &chain, t(0)).await;
    expect(rule, &u[0], "0.00", "0.00", 0, 0);
    expect_window(rule, &u[0], 60, "0.00", 0);
    expect_window(rule, &u[0], 3600, "0.00", 0);

    let rule = "windows: a hold counts inside its window";
    b.hold(rule, "w1", "10.00", t(0), &chain).await;
    let u = b.usage(rule, &chain, t(59)).await;
    expect_window(rule, &u[0], 60, "10.00", 1);
    expect_window(rule, &u[0], 3600, "10.00", 1);
    b.refused(
        rule,
        "w2",
        "0.01",
        t(59),
        &chain,
        &m,
        Some(LimitKind::WindowAmount { window_seconds: 60 }),
        None,
    )
    .await;

    let rule = "windows: a hold leaves its window at t + length";
    let u = b.usage(rule, &chain, t(60)).await;
    expect_window(rule, &u[0], 60, "0.00", 0);
    expect_window(rule, &u[0], 3600, "10.00", 1);
    expect(rule, &u[0], "0.00", "10.00", 1, 1);
    b.hold(rule, "w2", "10.00", t(60), &chain).await;
    b.refused(
        rule,
        "w3",
        "0.01",
        t(120),
        &chain,
        &m,
        Some(LimitKind::WindowAmount {
            window_seconds: 3600,
        }),
        None,
    )
    .await;
    let u = b.usage(rule, &chain, t(3600)).await;
    expect_window(rule, &u[0], 3600, "10.00", 1);
    expect_window(rule, &u[0], 60, "0.00", 0);
    let u = b.usage(rule, &chain, t(3660)).await;
    expect_window(rule, &u[0], 3600, "0.00", 0);

    let rule = "windows: unresolved holds stay held (I5)";
    expect(rule, &u[0], "0.00", "20.00", 2, 2);
    b.hold(rule, "w3", "10.00", t(3660), &chain).await;
}

/// Resolution: a commit turns the amount committed into spend and releases the rest (windows
/// too); a release gives everything back but the attempt; a hold is resolved at most once
/// (`Conflict` afterwards); a commit above the amount held is a `Conflict` and changes nothing;
/// an unresolved (ambiguous) hold keeps counting, years later (I5). Every level of the chain
/// moves together.
pub async fn store_hold_resolution(store: &dyn Store) {
    let b = Budget { store, tag: tag() };
    let caps = Caps {
        lifetime: Some("100.00"),
        windows: vec![(3600, Some("100.00"), Some(5))],
        uses: Some(5),
        attempts: Some(10),
    };
    let r = root(&format!("{}-root", b.tag), &caps);
    let c = child(&format!("{}-child", b.tag), &r, &caps);
    let l = child(&format!("{}-leaf", b.tag), &c, &caps);
    insert_all(store, &[&r, &c, &l]).await;
    let chain = [r.clone(), c.clone(), l.clone()];

    let rule = "commit_hold: partial commit";
    b.hold(rule, "h1", "100.00", t(0), &chain).await;
    b.commit(rule, "h1", "60.00").await;
    for u in b.usage(rule, &chain, t(1)).await {
        expect(rule, &u, "60.00", "0.00", 1, 1);
        expect_window(rule, &u, 3600, "60.00", 1);
    }
    match store.hold(&b.attempt("h1")).await {
        Ok(Some(h)) => {
            assert_eq!(
                (h.state, h.amount, h.committed, h.refunded, h.at),
                (
                    HoldState::Committed,
                    eur("100.00"),
                    eur("60.00"),
                    eur("0.00"),
                    t(0)
                ),
                "store rule {rule}: the hold record"
            );
            assert_eq!(
                h.mandate_ids,
                vec![l.id().clone(), c.id().clone(), r.id().clone()],
                "store rule hold: the mandates of a hold, leaf first"
            );
        }
        other => panic!("store rule hold: a placed hold has a record, got {other:?}"),
    }
    let rule = "commit_hold: the rest is released";
    b.refused(
        rule,
        "h2",
        "40.01",
        t(2),
        &chain,
        &l,
        Some(LimitKind::Lifetime),
        None,
    )
    .await;
    b.hold(rule, "h2", "40.00", t(3), &chain).await;

    let rule = "release_hold: gives everything back but the attempt";
    b.release(rule, "h2").await;
    for u in b.usage(rule, &chain, t(4)).await {
        expect(rule, &u, "60.00", "0.00", 1, 2);
        expect_window(rule, &u, 3600, "60.00", 1);
    }
    assert_eq!(
        b.state(rule, "h2").await,
        HoldState::Released,
        "store rule {rule}: state"
    );

    let rule = "resolution: at most once";
    let h1 = b.attempt("h1");
    let h2 = b.attempt("h2");
    conflict(rule, store.commit_hold(&h1, eur("1.00")).await);
    conflict(rule, store.release_hold(&h1).await);
    conflict(rule, store.commit_hold(&h2, eur("1.00")).await);
    conflict(rule, store.release_hold(&h2).await);

    let rule = "commit_hold: at most the amount held";
    b.hold(rule, "h3", "10.00", t(5), &chain).await;
    let h3 = b.attempt("h3");
    conflict(rule, store.commit_hold(&h3, eur("10.01")).await);
    let usd =
        Money::parse("1.00", Currency::USD).unwrap_or_else(|e| panic!("store rule fixture: {e}"));
    assert!(
        store.commit_hold(&h3, usd).await.is_err(),
        "store rule commit_hold: a commit in another currency is refused"
    );
    assert_eq!(
        b.state(rule, "h3").await,
        HoldState::Held,
        "store rule {rule}: still held"
    );

    let rule = "resolution: an unknown hold";
    let ghost = b.attempt("ghost");
    assert!(
        store.commit_hold(&ghost, eur("1.00")).await.is_err()
            && store.release_hold(&ghost).await.is_err()
            && matches!(store.hold(&ghost).await, Ok(None)),
        "store rule {rule}: cannot be resolved and has no record"
    );

    let rule = "ambiguous holds keep counting (I5)";
    let years = 10 * 366 * 86_400;
    for u in b.usage(rule, &chain, t(years)).await {
        expect(rule, &u, "60.00", "10.00", 2, 3);
        expect_window(rule, &u, 3600, "0.00", 0);
    }
    b.refused(
        rule,
        "h4",
        "30.01",
        t(years),
        &chain,
        &l,
        Some(LimitKind::Lifetime),
        None,
    )
    .await;
    b.hold(rule, "h4", "30.00", t(years), &chain).await;
}

/// Refunds: only against a committed hold and up to the amount committed (`Conflict`
/// otherwise); under [`RefundPolicy::RETAIN`] nothing is given back; under
/// [`RefundPolicy::RESTORE_ALL`] lifetime and window amounts are; each half of the policy acts
/// alone; window counts never come back.
pub async fn store_refund_policy(store: &dyn Store) {
    let b = Budget { store, tag: tag() };
    let caps = Caps {
        lifetime: Some("100.00"),
        windows: vec![(3600, Some("100.00"), Some(10))],
        ..Caps::default()
    };
    let m = root(&format!("{}-m", b.tag), &caps);
    insert_all(store, &[&m]).await;
    let chain = [m.clone()];
    let a = b.attempt("r1");
    let refund = |amount: &str, policy: RefundPolicy| {
        let a = a.clone();
        let amount = eur(amount);
        async move { store.refund_hold(&a, amount, policy).await }
    };

    let rule = "refund_hold: only a committed hold";
    b.hold(rule, "r1", "100.00", t(0), &chain).await;
    conflict(rule, refund("10.00", RefundPolicy::RESTORE_ALL).await);
    b.commit(rule, "r1", "100.00").await;

    let rule = "refund_hold: RETAIN gives nothing back";
    refund("30.00", RefundPolicy::RETAIN)
        .await
        .unwrap_or_else(|e| panic!("store rule {rule}: {e}"));
    let u = b.usage(rule, &chain, t(1)).await;
    expect(rule, &u[0], "100.00", "0.00", 1, 1);
    expect_window(rule, &u[0], 3600, "100.00", 1);
    b.refused(
        rule,
        "r2",
        "0.01",
        t(1),
        &chain,
        &m,
        Some(LimitKind::Lifetime),
        None,
    )
    .await;

    let rule = "refund_hold: RESTORE_ALL gives lifetime and window amounts back";
    refund("30.00", RefundPolicy::RESTORE_ALL)
        .await
        .unwrap_or_else(|e| panic!("store rule {rule}: {e}"));
    let u = b.usage(rule, &chain, t(2)).await;
    expect(rule, &u[0], "70.00", "0.00", 1, 1);
    expect_window(rule, &u[0], 3600, "70.00", 1);

    let rule = "refund_hold: at most the amount committed";
    conflict(rule, refund("40.01", RefundPolicy::RESTORE_ALL).await);

    let rule = "refund_hold: restore_lifetime alone";
    let lifetime_only = RefundPolicy {
        restores_lifetime: true,
        restores_windows: false,
    };
    refund("10.00", lifetime_only)
        .await
        .unwrap_or_else(|e| panic!("store rule {rule}: {e}"));
    let u = b.usage(rule, &chain, t(3)).await;
    expect(rule, &u[0], "60.00", "0.00", 1, 1);
    expect_window(rule, &u[0], 3600, "70.00", 1);

    let rule = "refund_hold: restore_windows alone";
    let windows_only = RefundPolicy {
        restores_lifetime: false,
        restores_windows: true,
    };
    refund("10.00", windows_only)
        .await
        .unwrap_or_else(|e| panic!("store rule {rule}: {e}"));
    let u = b.usage(rule, &chain, t(4)).await;
    expect(rule, &u[0], "60.00", "0.00", 1, 1);
    expect_window(rule, &u[0], 3600, "60.00", 1);
    match store.hold(&a).await {
        Ok(Some(h)) => assert_eq!(
            h.refunded,
            eur("80.00"),
            "store rule refund_hold: the record sums the refunds"
        ),
        other => panic!("store rule refund_hold: the hold record, got {other:?}"),
    }

    let rule = "refund_hold: the freed headroom is usable";
    b.hold(rule, "r3", "40.00", t(5), &chain).await;
    b.refused(
        rule,
        "r4",
        "0.01",
        t(6),
        &chain,
        &m,
        Some(LimitKind::Lifetime),
        None,
    )
    .await;

    let rule = "refund_hold: a released hold";
    b.release(rule, "r3").await;
    conflict(
        rule,
        store
            .refund_hold(&b.attempt("r3"), eur("1.00"), RefundPolicy::RESTORE_ALL)
            .await,
    );
}

/// A new attempt for `id` under `mandate`.
fn new_attempt(id: &AttemptId, mandate: &MandateId, created_at: DateTime<Utc>) -> PaymentAttempt {
    let mut request = examples::authorize_request(&examples::travel_backpack_snapshot());
    request.mandate_id = mandate.clone();
    PaymentAttempt::new(
        id.clone(),
        request,
        parse::<CredentialRef>("cred_store_suite"),
        parse::<CheckoutId>("checkout_store_suite"),
        false,
        created_at,
    )
}

/// Payment attempts: insert (a taken id is a `Conflict`), read back, compare-and-set on the
/// status, and `attempts_in` (only the statuses asked, oldest first, at most `limit`).
pub async fn store_attempts(store: &dyn Store) {
    let tag = tag();
    let id = |n: &str| parse::<AttemptId>(&format!("{tag}-{n}"));
    let m = root(&format!("{tag}-mandate"), &Caps::default());
    insert_all(store, &[&m]).await;
    let base = t(-3600);
    let a1 = new_attempt(&id("a1"), m.id(), base);
    let a2 = new_attempt(&id("a2"), m.id(), base - Duration::seconds(10));
    let a3 = new_attempt(&id("a3"), m.id(), base + Duration::seconds(10));
    let a4 = new_attempt(&id("a4"), m.id(), base - Duration::seconds(20));
    for a in [&a1, &a2, &a3, &a4] {
        store
            .insert_attempt(a)
            .await
            .unwrap_or_else(|e| panic!("store rule insert_attempt: {e}"));
    }
    conflict(
        "insert_attempt: a taken id",
        store.insert_attempt(&a1).await,
    );
    match store.attempt(&a1.id).await {
        Ok(Some(a)) => assert_eq!(a, a1, "store rule attempt: reads back what was stored"),
        other => panic!("store rule attempt: the stored attempt, got {other:?}"),
    }
    assert!(
        matches!(store.attempt(&id("none")).await, Ok(None)),
        "store rule attempt: an unknown id is None"
    );

    let rule = "update_attempt: compare and set";
    let validate = |a: &PaymentAttempt| {
        a.apply(&AttemptEvent::Validate, t(0))
            .unwrap_or_else(|e| panic!("store rule fixture: {e}"))
    };
    let v1 = validate(&a1);
    store
        .update_attempt(&v1, AttemptStatus::NotStarted)
        .await
        .unwrap_or_else(|e| panic!("store rule {rule}: {e}"));
    conflict(
        rule,
        store.update_attempt(&v1, AttemptStatus::NotStarted).await,
    );
    match store.attempt(&a1.id).await {
        Ok(Some(a)) => assert_eq!(a, v1, "store rule {rule}: the new state is stored"),
        other => panic!("store rule {rule}: the stored attempt, got {other:?}"),
    }
    let ghost = new_attempt(&id("ghost"), m.id(), base);
    not_found(
        "update_attempt: an unknown attempt",
        store
            .update_attempt(&ghost, AttemptStatus::NotStarted)
            .await,
    );
    for a in [&a2, &a3] {
        store
            .update_attempt(&validate(a), AttemptStatus::NotStarted)
            .await
            .unwrap_or_else(|e| panic!("store rule {rule}: {e}"));
    }

    let rule = "attempts_in";
    let wanted = [AttemptStatus::AuthorityValidated];
    let all = store
        .attempts_in(&wanted, 1_000_000)
        .await
        .unwrap_or_else(|e| panic!("store rule {rule}: {e}"));
    assert!(
        all.iter().all(|a| wanted.contains(&a.status)),
        "store rule {rule}: only the statuses asked for"
    );
    assert!(
        all.windows(2).all(|w| w[0].created_at <= w[1].created_at),
        "store rule {rule}: oldest first"
    );
    let ours: Vec<&AttemptId> = all
        .iter()
        .map(|a| &a.id)
        .filter(|i| [&a1.id, &a2.id, &a3.id, &a4.id].contains(i))
        .collect();
    assert_eq!(
        ours,
        vec![&a2.id, &a1.id, &a3.id],
        "store rule {rule}: every attempt in the statuses, oldest first"
    );
    let first = store
        .attempts_in(&wanted, 1)
        .await
        .unwrap_or_else(|e| panic!("store rule {rule}: {e}"));
    assert!(
        first.len() == 1 && first[0].created_at <= a2.created_at,
        "store rule {rule}: at most `limit`, the oldest"
    );
    assert!(
        matches!(store.attempts_in(&wanted, 0).await, Ok(v) if v.is_empty())
            && matches!(store.attempts_in(&[], 10).await, Ok(v) if v.is_empty()),
        "store rule {rule}: nothing for limit 0 or no status"
    );
}

/// Idempotency records (I3): `Started` for a new key; `InFlight` with the lease's remainder
/// for the same fingerprint while the lease runs; `Conflict` naming the recorded fingerprint
/// for another; a lapsed lease is taken over; a completed record is replayed until its
/// retention ends, then treated as absent; `abandon` frees an in-flight key (and is a no-op
/// otherwise); `complete` of an unknown key is `NotFound`; keys are scoped by actor and
/// operation.
pub async fn store_idempotency(store: &dyn Store) {
    let tag = tag();
    let scope = |actor: &str, operation: &str| IdempotencyScope {
        actor_id: parse(&format!("{tag}-{actor}")),
        operation: operation.to_string(),
        key: parse::<IdempotencyKey>(&format!("{tag}-key")),
    };
    let s = scope("agent", "execute_payment");
    let fp1 = ContentDigest::from_bytes([1; 32]);
    let fp2 = ContentDigest::from_bytes([2; 32]);
    let lease = StdDuration::from_secs(30);
    let begin = |s: &IdempotencyScope, fp: ContentDigest, at: i64| {
        let s = s.clone();
        async move {
            store
                .begin_idempotent(&s, &fp, t(at), lease)
                .await
                .unwrap_or_else(|e| panic!("store rule begin_idempotent: {e}"))
        }
    };

    assert_eq!(
        begin(&s, fp1, 0).await,
        Begin::Started,
        "store rule idempotency: a new key"
    );
    match begin(&s, fp1, 10).await {
        Begin::InFlight { retry_after } => assert!(
            retry_after > StdDuration::from_secs(19) && retry_after <= StdDuration::from_secs(20),
            "store rule idempotency: retry after the rest of the lease, got {retry_after:?}"
        ),
        other => panic!("store rule idempotency: in flight, got {other:?}"),
    }
    assert_eq!(
        begin(&s, fp2, 10).await,
        Begin::Conflict { recorded: fp1 },
        "store rule idempotency: another fingerprint while in flight"
    );
    assert_eq!(
        begin(&scope("other-agent", "execute_payment"), fp2, 10).await,
        Begin::Started,
        "store rule idempotency: keys are scoped by actor"
    );
    assert_eq!(
        begin(&scope("agent", "revoke_mandate"), fp2, 10).await,
        Begin::Started,
        "store rule idempotency: keys are scoped by operation"
    );
    assert_eq!(
        begin(&s, fp1, 30).await,
        Begin::Started,
        "store rule idempotency: a lapsed lease is taken over"
    );

    let result = StoredResult::Attempt(parse(&format!("{tag}-attempt")));
    store
        .complete_idempotent(&s, &result, t(3600))
        .await
        .unwrap_or_else(|e| panic!("store rule complete_idempotent: {e}"));
    assert_eq!(
        begin(&s, fp1, 40).await,
        Begin::Replay(result.clone()),
        "store rule idempotency: a completed key replays"
    );
    assert_eq!(
        begin(&s, fp2, 40).await,
        Begin::Conflict { recorded: fp1 },
        "store rule idempotency: another fingerprint after completion"
    );
    store
        .abandon_idempotent(&s)
        .await
        .unwrap_or_else(|e| panic!("store rule abandon_idempotent: {e}"));
    assert_eq!(
        begin(&s, fp1, 3599).await,
        Begin::Replay(result),
        "store rule idempotency: kept until its retention ends (abandon only drops in-flight \
         records)"
    );
    assert_eq!(
        begin(&s, fp2, 3600).await,
        Begin::Started,
        "store rule idempotency: absent once the retention ended"
    );
    store
        .abandon_idempotent(&s)
        .await
        .unwrap_or_else(|e| panic!("store rule abandon_idempotent: {e}"));
    assert_eq!(
        begin(&s, fp1, 3601).await,
        Begin::Started,
        "store rule idempotency: an abandoned key is free"
    );
    for _ in 0..2 {
        store
            .abandon_idempotent(&scope("nobody", "execute_payment"))
            .await
            .unwrap_or_else(|e| panic!("store rule abandon_idempotent: an unknown key: {e}"));
    }
    not_found(
        "complete_idempotent: an unknown key",
        store
            .complete_idempotent(
                &scope("nobody", "execute_payment"),
                &StoredResult::Done,
                t(0),
            )
            .await,
    );
}

/// Orders (I4): one per attempt; a second insert for the attempt answers `Existing` with the
/// first and changes nothing.
pub async fn store_orders(store: &dyn Store) {
    let tag = tag();
    let snapshot = examples::travel_backpack_snapshot();
    let m = root(&format!("{tag}-mandate"), &Caps::default());
    insert_all(store, &[&m]).await;
    let attempt = new_attempt(&parse(&format!("{tag}-attempt")), m.id(), t(0));
    store
        .insert_attempt(&attempt)
        .await
        .unwrap_or_else(|e| panic!("store rule insert_attempt: {e}"));
    let order = |n: &str| Order {
        id: parse::<OrderId>(&format!("{tag}-{n}")),
        attempt_id: parse(&format!("{tag}-attempt")),
        snapshot_id: snapshot.id(),
        buyer_id: examples::buyer(),
        merchant_id: snapshot.merchant().merchant_id.clone(),
        amount: snapshot.total(),
        committed_at: t(0),
    };
    let first = order("order1");
    let rule = "insert_order: one per attempt";
    assert_eq!(
        store.insert_order(&first).await.ok(),
        Some(InsertOrder::Inserted),
        "store rule {rule}: the first is inserted"
    );
    for again in [first.clone(), order("order2")] {
        assert_eq!(
            store.insert_order(&again).await.ok(),
            Some(InsertOrder::Existing(first.clone())),
            "store rule {rule}: another insert answers the first order"
        );
    }
    assert_eq!(
        store.order_for(&first.attempt_id).await.ok(),
        Some(Some(first)),
        "store rule order_for: the attempt's order"
    );
    assert!(
        matches!(
            store.order_for(&parse(&format!("{tag}-none"))).await,
            Ok(None)
        ),
        "store rule order_for: none for an attempt without an order"
    );
}

/// Controls: `record_block` counts per actor, `reset_blocks` starts again at zero.
pub async fn store_controls(store: &dyn Store) {
    let tag = tag();
    let a: ActorId = parse(&format!("{tag}-a"));
    let b: ActorId = parse(&format!("{tag}-b"));
    let block = |actor: &ActorId| {
        let actor = actor.clone();
        async move {
            store
                .record_block(&actor)
                .await
                .unwrap_or_else(|e| panic!("store rule record_block: {e}"))
        }
    };
    for expected in 1..=3 {
        assert_eq!(
            block(&a).await,
            expected,
            "store rule record_block: counts in a row"
        );
    }
    assert_eq!(block(&b).await, 1, "store rule record_block: per actor");
    store
        .reset_blocks(&a)
        .await
        .unwrap_or_else(|e| panic!("store rule reset_blocks: {e}"));
    assert_eq!(block(&a).await, 1, "store rule reset_blocks: starts again");
    assert_eq!(
        block(&b).await,
        2,
        "store rule reset_blocks: only that actor"
    );
}
