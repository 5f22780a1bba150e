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
    examples, ActorId, AttemptEvent, AttemptId, AttemptStatus, AuditEvent, AuditKind, BuyerId,
    CheckoutId, Confirmation, ConfirmationId, ConfirmationScope, ContentDigest, CredentialRef,
    Currency, IdempotencyKey, LifecycleEvent, LimitKind, Mandate, MandateId, MandateSpec,
    MandateStatus, Money, Order, OrderId, Party, PaymentAction, PaymentAttempt, Usage, WindowLimit,
};
use crate::ports::{
    Begin, ChallengeConsumed, ChallengeUse, Fence, HoldError, HoldRequest, HoldState,
    IdempotencyScope, InsertOrder, RefundPolicy, Store, StoreError, StoredResult, Write,
};

static STORE_RUN: AtomicU64 = AtomicU64::new(1);

/// A prefix unique to this call of a check.
fn tag() -> String {
    static PROCESS: OnceLock<String> = OnceLock::new();
    let process = PROCESS.get_or_init(|| {
        // Not a time the suite reasons about (those come from `examples::now`): a nonce that
        // keeps ids of two processes running the suite on one shared database apart.
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
                .insert_attempt(&attempts::new_attempt(&id, leaf.id(), at))
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
    store_credential_switch(store).await;
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
    store_payment_unit_of_work(store).await;
    store_challenges(store).await;
}

/// The checks that need a store no one else uses while they run (they purge records by time
/// and drain the audit outbox): [`store_purge`], [`store_audit_outbox`] and
/// [`store_challenge_purge`]. Run after, not
/// beside, [`store_conformance`].
pub async fn store_conformance_exclusive(store: &dyn Store) {
    store_purge(store).await;
    store_audit_outbox(store).await;
    store_challenge_purge(store).await;
}

mod attempts;
mod budget;
mod payment;
mod records;

pub use attempts::*;
pub use budget::*;
pub use payment::*;
pub use records::*;
