//! Model-based test of the engine on the memory adapters and the fault-injecting fake PSP.
//!
//! Random sequences of commands (mandates created, derived, revoked; actors suspended and
//! resumed; payments executed, captured, voided, refunded, reconciled; orders committed;
//! retries that reuse an earlier idempotency key; buyer actions at the PSP; the clock moved)
//! run against the engine and against a small reference model of the same world: mandates and
//! their caps, the kill switch, idempotency records, payment attempts with their budget holds,
//! and the PSP's own payments. After every step the engine, the store, the audit trail and the
//! PSP are compared with the model and these invariants are checked (DESIGN.md section 4):
//!
//! * I1: an authorization reaches the PSP only after an `allowed` execute decision for the
//!   attempt, evaluated at that moment, and its hold (checked inside the PSP call, and again for
//!   every authorization the PSP records); a capture only after an `allowed` capture decision
//!   (made for the attempt's actor, whoever asks);
//! * I16: void and refund need no decision: the attempt's actor or a human may, after a
//!   revocation or a suspension;
//! * I2: for every mandate (so for every ancestor) spent + held stays within the lifetime cap,
//!   the 24 h window within its amount and count, the uses within `max_uses`; the store's
//!   usage equals the model's (held = the unresolved holds);
//! * I3: at most one authorization per attempt key at the PSP, one attempt per key, and a
//!   reused key replays, resumes or conflicts, never authorizes twice;
//! * I4: at most one order per attempt, only from an authorized or captured attempt;
//! * I5: an ambiguous attempt keeps its hold until a PSP report resolves it;
//! * I9: the audit chain verifies;
//! * money: the PSP never captures more than it authorized nor refunds more than it captured,
//!   and every settled attempt agrees with the PSP's record of its payment.
//!
//! The model also predicts every answer: decisions with their blocker codes (so the usage the
//! engine decides on, the consecutive-block auto-suspension, suspensions and revocations of
//! ancestors), each PSP call and its fault, idempotent replays and conflicts, the attempt's
//! state, its holds, and the PSP's payments. At the end of a case the dispute package of every
//! attempt must be consistent.
//!
//! Environment:
//! * `MODEL_CASES` (default 2,000, what CI runs): e.g. `MODEL_CASES=5000 cargo test --features testkit --test
//!   model` for a longer run;
//! * `MODEL_STATS=1` (with `-- --nocapture`): print how often each command had each outcome.
#![cfg(feature = "testkit")]

mod common;
#[allow(unused_imports)]
use common::principals::*;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, OnceLock};

use agent_mandate::adapters::memory::{ManualClock, MemoryAuditSink, MemoryPorts, MemoryStore};
use agent_mandate::domain::examples;
use agent_mandate::domain::{
    Actor, ActorId, ActorKind, AttemptId, AttemptStatus, AuditKind, CartSnapshot, CheckoutState,
    CredentialRef, Currency, HoldAction, Lifecycle, LifecycleEvent, MandateId, MandateSpec,
    MandateStatus, Money, Operation, Outcome, Party, PaymentAction, PaymentRequest, Principal,
    ProviderKey, ProviderRef, ProviderReport, ProviderStatus,
};
use agent_mandate::engine::{
    attempt_id_for, CapturePayment, ChangeMandate, CommitOrder, CreateMandate, DeriveMandate,
    Engine, EngineConfig, EngineError, ExecutePayment, OrderOutcome, PaymentOutcome, RefundPayment,
    SetSuspension, VoidPayment,
};
use agent_mandate::ports::{
    AuthorizeRequest, CaptureRequest, Clock as _, HoldState, Lookup, PaymentProvider,
    ProviderError, RefundPolicy, RefundRequest, Store, StoreError, VoidRequest,
};
use agent_mandate::testkit::{FakePsp, Fault, Op};
use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};
use common::engine::{backpack_spec, card, key};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::strategy::Union;

// ---------------------------------------------------------------------------------------------
// The world: fixed actors, mandate slots and snapshots.
// ---------------------------------------------------------------------------------------------

/// Agents: 0 and 1 hold root mandates, 2 and 3 are sub-agents (any may hold a child).
const AGENTS: [&str; 4] = ["agent_123", "agent_124", "agent_sub_7", "agent_sub_8"];
/// Mandate slots: 0 and 1 are roots, 2 to 5 are derived (from a lower slot).
const SLOTS: usize = 6;
/// Snapshots: (shipping, tax, hours until expiry). Totals 129.00, 144.00, 153.00, 171.50,
/// 199.99, and 144.00 again with a short expiry (another id).
const SNAPS: [(&str, &str, i64); 6] = [
    ("0.00", "0.00", 1440),
    ("0.00", "15.00", 1440),
    ("9.00", "15.00", 1440),
    ("12.50", "30.00", 1440),
    ("20.99", "50.00", 1440),
    ("0.00", "15.00", 3),
];
const WINDOW_SECONDS: i64 = 86_400;
/// `EngineConfig::default()`: lease 30 s, retention 24 h, auto-suspension after 3 blocks.
const LEASE_SECONDS: i64 = 30;
/// The engine's deadline margin; with the fake PSP's 10 s deadline, a PSP "not found" is final
/// 20 s after the submission (I13).
const MARGIN_SECONDS: i64 = 10;
const SETTLE_SECONDS: i64 = 10 + MARGIN_SECONDS;
const RETAIN_HOURS: i64 = 24;
const AUTO_SUSPEND_AFTER: u32 = 3;
/// The blockers that count toward auto-suspension by default (`EngineConfig::suspend_on`).
const SUSPEND_ON: &[&str] = &[
    "AUTHORITY_MISSING",
    "CHAIN_INVALID",
    "ACTOR_NOT_AUTHORIZED",
    "BUYER_MISMATCH",
    "CREDENTIAL_NOT_USABLE",
    "CART_SNAPSHOT_MISMATCH",
    "CART_OUTSIDE_INTENT",
    "AMOUNT_MISMATCH",
    "AMOUNT_EXCEEDS_MANDATE",
    "LOWER_AMOUNT_NOT_ALLOWED",
    "PARTIAL_CAPTURE_NOT_ALLOWED",
    "CURRENCY_MISMATCH",
    "MERCHANT_MISMATCH",
    "SELLER_NOT_ALLOWED",
    "MCC_NOT_ALLOWED",
    "ACTION_NOT_ALLOWED",
    "TRANSACTION_LIMIT_EXCEEDED",
    "MANDATE_NOT_YET_VALID",
    "MANDATE_EXPIRED",
    "MANDATE_REVOKED",
    "MANDATE_PENDING_CONFIRMATION",
    "MANDATE_REJECTED",
    "ANCESTOR_NOT_ACTIVE",
    "CONFIRMATION_REQUIRED",
];

fn eur(minor: i64) -> Money {
    Money::from_minor(minor, Currency::EUR).expect("amount")
}

fn agent(i: usize) -> Actor {
    Actor {
        id: AGENTS[i].parse::<ActorId>().expect("actor id"),
        kind: ActorKind::Agent,
    }
}

fn agent_index(id: &ActorId) -> Option<usize> {
    AGENTS.iter().position(|a| *a == id.as_str())
}

fn mandate_id(slot: usize) -> MandateId {
    format!("mandate_s{slot}").parse().expect("mandate id")
}

fn slot_of(id: &MandateId) -> usize {
    id.as_str()
        .strip_prefix("mandate_s")
        .and_then(|s| s.parse().ok())
        .expect("a model mandate id")
}

fn start() -> DateTime<Utc> {
    examples::now()
}

/// Caps of a mandate, in cents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Caps {
    max_amount: i64,
    lifetime: i64,
    window_amount: i64,
    window_count: u32,
    max_uses: Option<u32>,
    partial_capture: bool,
}

impl Caps {
    fn of(spec: &MandateSpec) -> Caps {
        let s = &spec.scope;
        Caps {
            max_amount: s.amount.max_amount.minor_units(),
            lifetime: s.budgets.lifetime.expect("lifetime").minor_units(),
            window_amount: s.budgets.windows[0]
                .max_amount
                .expect("window amount")
                .minor_units(),
            window_count: s.budgets.windows[0].max_count.expect("window count"),
            max_uses: s.max_uses,
            partial_capture: s.amount.allow_partial_capture,
        }
    }

    /// Whether `self` (a child) is wider than `parent` in a dimension the model varies.
    fn wider_than(&self, parent: &Caps) -> bool {
        self.max_amount > parent.max_amount
            || self.lifetime > parent.lifetime
            || self.window_amount > parent.window_amount
            || self.window_count > parent.window_count
            || match (parent.max_uses, self.max_uses) {
                (None, _) => false,
                (Some(_), None) => true,
                (Some(p), Some(c)) => c > p,
            }
            || (self.partial_capture && !parent.partial_capture)
    }
}

/// The mandate of `slot`: the Travel Backpack scope with `caps`, valid for 60 days.
fn spec(
    slot: usize,
    parent: Option<usize>,
    actor: usize,
    caps: &Caps,
    expires: DateTime<Utc>,
) -> MandateSpec {
    let mut spec = backpack_spec(true);
    spec.id = mandate_id(slot);
    spec.parent_id = parent.map(mandate_id);
    spec.actor = agent(actor);
    let s = &mut spec.scope;
    s.amount.max_amount = eur(caps.max_amount);
    s.amount.allow_partial_capture = caps.partial_capture;
    s.amount.max_payment_attempts = None;
    s.budgets.per_transaction = Some(eur(caps.max_amount));
    s.budgets.lifetime = Some(eur(caps.lifetime));
    s.budgets.windows[0].window_seconds = WINDOW_SECONDS as u64;
    s.budgets.windows[0].max_amount = Some(eur(caps.window_amount));
    s.budgets.windows[0].max_count = Some(caps.window_count);
    s.max_uses = caps.max_uses;
    s.validity.expires_at = expires;
    spec.lifecycle = Lifecycle::new(MandateStatus::Active, start());
    spec
}

/// When root mandate `slot` expires: root 0 in 60 days, root 1 after 30 hours (so payments
/// under it meet their mandate's expiry: refused, while their capture, void, refund and order
/// still complete). A child expires with its parent.
fn root_expiry(slot: usize) -> DateTime<Utc> {
    if slot == 1 {
        start() + Duration::hours(30)
    } else {
        start() + Duration::days(60)
    }
}

/// Who asks a follow-up on an attempt of agent `actor`: 0 its agent, 1 the buyer, 2 another
/// agent, 3 an operator, 4 another buyer.
fn asker(by: u8, actor: usize) -> Principal {
    match by {
        0 => Principal::Agent(agent(actor).id),
        1 => buyer_p(),
        2 => Principal::Agent(agent((actor + 1) % AGENTS.len()).id),
        3 => operator_p(),
        _ => Principal::Buyer("buyer_999".parse().expect("id")),
    }
}

fn snapshot(i: usize) -> CartSnapshot {
    let (shipping, tax, hours) = SNAPS[i];
    let mut content = examples::backpack_content(shipping, tax, Currency::EUR);
    content.expires_at = start() + Duration::hours(hours);
    CartSnapshot::new(content).expect("snapshot")
}

// ---------------------------------------------------------------------------------------------
// A PSP wrapper that checks I1 at the moment of each money-moving call.
// ---------------------------------------------------------------------------------------------

#[derive(Debug)]
struct Guard {
    inner: Arc<FakePsp>,
    clock: Arc<ManualClock>,
    audit: OnceLock<Arc<MemoryAuditSink>>,
    store: OnceLock<Arc<MemoryStore>>,
    violations: Mutex<Vec<String>>,
}

impl Guard {
    fn violation(&self, message: String) {
        self.violations
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(message);
    }

    fn take_violations(&self) -> Vec<String> {
        std::mem::take(&mut *self.violations.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// The audit events about `attempt`, newest first.
    fn events_about(&self, attempt: &AttemptId) -> Vec<(DateTime<Utc>, AuditKind)> {
        let Some(audit) = self.audit.get() else {
            return Vec::new();
        };
        // Events committed with their change wait in the store's outbox until the command's
        // flush: on record all the same (I15).
        let staged = self
            .store
            .get()
            .map(|s| s.staged_events())
            .unwrap_or_default();
        audit
            .events()
            .iter()
            .filter_map(|e| e.event().ok())
            .chain(staged)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .filter(|e| match &e.kind {
                AuditKind::Decision { attempt_id, .. } => attempt_id.as_ref() == Some(attempt),
                AuditKind::Hold { attempt_id, .. } | AuditKind::OrderFailed { attempt_id, .. } => {
                    attempt_id == attempt
                }
                _ => false,
            })
            .map(|e| (e.at, e.kind))
            .collect()
    }

    /// The newest decision of `command` about `attempt` is allowed and was made now.
    fn decided_now(&self, attempt: &AttemptId, command: &str, what: &str) {
        let now = self.clock.now();
        let decision = self
            .events_about(attempt)
            .into_iter()
            .find_map(|(at, k)| match k {
                AuditKind::Decision {
                    command: c,
                    outcome,
                    ..
                } if c == command => Some((at, outcome)),
                _ => None,
            });
        match decision {
            Some((at, Outcome::Allowed)) if at == now => {}
            other => self.violation(format!(
                "I1: {what} of {attempt} sent to the PSP without an allowed {command} decision \
                 made now ({now}); newest decision: {other:?}"
            )),
        }
    }
}

#[async_trait]
impl PaymentProvider for Guard {
    fn deadline(&self) -> std::time::Duration {
        self.inner.deadline()
    }

    async fn authorize(&self, request: &AuthorizeRequest) -> Result<ProviderReport, ProviderError> {
        let id = &request.attempt_id;
        self.decided_now(id, "execute_payment", "an authorization");
        // The hold was placed (and recorded) after that decision.
        let mut hold_recorded = false;
        for (_, k) in self.events_about(id) {
            match k {
                AuditKind::Hold {
                    action: HoldAction::Placed,
                    ..
                } => hold_recorded = true,
                AuditKind::Decision { .. } => break,
                _ => {}
            }
        }
        if !hold_recorded {
            self.violation(format!(
                "I1: authorization of {id} sent before its hold was recorded"
            ));
        }
        if let Some(store) = self.store.get() {
            match store.attempt(id).await {
                Ok(Some(a)) => {
                    if a.status != AttemptStatus::PendingProviderResponse {
                        self.violation(format!(
                            "I1: authorization of {id} sent while the attempt is {}",
                            a.status
                        ));
                    }
                    match store.hold(&a.hold_id()).await {
                        Ok(Some(h)) if h.state == HoldState::Held && h.amount == request.amount => {
                        }
                        other => self.violation(format!(
                            "I2: authorization of {id} for {} sent without its hold: {other:?}",
                            request.amount
                        )),
                    }
                }
                other => self.violation(format!(
                    "I1: authorization of {id} sent for an attempt the store does not have: \
                     {other:?}"
                )),
            }
        }
        self.inner.authorize(request).await
    }

    async fn capture(&self, request: &CaptureRequest) -> Result<ProviderReport, ProviderError> {
        self.decided_now(&request.attempt_id, "capture_payment", "a capture");
        self.inner.capture(request).await
    }

    async fn void(&self, request: &VoidRequest) -> Result<ProviderReport, ProviderError> {
        self.inner.void(request).await
    }

    async fn refund(&self, request: &RefundRequest) -> Result<ProviderReport, ProviderError> {
        // A refund reduces risk and needs no decision (I16): it follows a refund command by the
        // attempt's actor or a human, or is the recovery of a failed order. The model predicts
        // who may ask; the money check (never more than captured) is the PSP's own.
        self.inner.refund(request).await
    }

    async fn lookup(&self, lookup: &Lookup) -> Result<Option<ProviderReport>, ProviderError> {
        self.inner.lookup(lookup).await
    }
}

struct World {
    mem: MemoryPorts,
    psp: Arc<FakePsp>,
    guard: Arc<Guard>,
    engine: Engine,
    cards: Vec<CredentialRef>,
    snaps: Vec<CartSnapshot>,
}

impl World {
    async fn new(restore: bool) -> World {
        let mut slot = None;
        let mem = MemoryPorts::new(start(), |vault, clock| {
            let psp = Arc::new(FakePsp::with_vault_and_clock(vault, clock.clone()));
            let guard = Arc::new(Guard {
                inner: psp,
                clock,
                audit: OnceLock::new(),
                store: OnceLock::new(),
                violations: Mutex::new(Vec::new()),
            });
            slot = Some(guard.clone());
            guard
        });
        let guard = slot.expect("guard built");
        guard.audit.set(mem.audit.clone()).expect("audit set once");
        guard.store.set(mem.store.clone()).expect("store set once");
        let psp = guard.inner.clone();
        let policy = if restore {
            RefundPolicy::RESTORE_ALL
        } else {
            RefundPolicy::RETAIN
        };
        let config = EngineConfig::default()
            .with_refund_policy(policy)
            .with_lease(
                std::time::Duration::from_secs(LEASE_SECONDS as u64),
                std::time::Duration::from_secs(MARGIN_SECONDS as u64),
            )
            .expect("lease");
        let engine = Engine::new(mem.ports.clone(), config).expect("engine configuration");
        let mut cards = Vec::new();
        for i in 0..AGENTS.len() {
            let stored = engine
                .store_credential(
                    &buyer_p(),
                    &key(&format!("card-{i}")),
                    card(&agent(i).id, "pm_card_visa"),
                )
                .await
                .expect("card stored")
                .value;
            cards.push(stored.reference);
        }
        World {
            mem,
            psp,
            guard,
            engine,
            cards,
            snaps: (0..SNAPS.len()).map(snapshot).collect(),
        }
    }

    fn store(&self) -> &Arc<dyn Store> {
        &self.engine.ports().store
    }
}

// ---------------------------------------------------------------------------------------------
// Commands.
// ---------------------------------------------------------------------------------------------

/// How much to capture or refund.
#[derive(Debug, Clone, Copy)]
enum Amt {
    /// No amount: everything authorized (capture) or not yet refunded (refund).
    Full,
    /// This percentage of it (at least one cent).
    Part(u8),
    /// One cent more than possible.
    Over,
}

/// How a child attenuates its parent (percentages and steps).
#[derive(Debug, Clone, Copy)]
struct Shrink {
    amount_off: u8,
    lifetime_pct: u8,
    window_pct: u8,
    count_off: u8,
    uses_off: u8,
    partial: bool,
}

#[derive(Debug, Clone)]
enum Cmd {
    /// A human creates root mandate `slot` (0 or 1) for agent `actor`.
    CreateRoot { slot: u8, actor: u8, caps: Caps },
    /// Derive mandate `slot` (2 to 5) from a lower slot (an existing one unless `any_parent`),
    /// for `actor`; `by`: 0 a human, 1 the parent's actor, 2 another agent. `widen` raises the
    /// lifetime cap above the parent's.
    Derive {
        slot: u8,
        parent: Index,
        any_parent: bool,
        actor: u8,
        shrink: Shrink,
        widen: bool,
        by: u8,
    },
    /// Revoke a mandate (an existing one unless `any`); `by`: 0 a human, 1 the mandate's
    /// actor, 2 another agent (permitted when it holds a mandate of the chain).
    Revoke { slot: Index, any: bool, by: u8 },
    /// A human suspends or resumes an agent (`party` 0 to 3) or the buyer (`party` 4).
    Suspend { party: u8, suspended: bool },
    /// Revoke every credential of an agent, or give it a new card.
    Cards { actor: u8, revoke: bool },
    /// The mandate's actor (or another agent) pays a snapshot's total.
    Execute {
        mandate: Index,
        snap: u8,
        capture: bool,
        wrong_actor: bool,
        invalid_checkout: bool,
        fault: Option<Fault>,
    },
    /// Capture an attempt (`strict`: one that is authorized, when there is one).
    Capture {
        attempt: Index,
        strict: bool,
        amount: Amt,
        fault: Option<Fault>,
    },
    /// Void an attempt; `by`: see [`asker`].
    Void {
        attempt: Index,
        strict: bool,
        by: u8,
        fault: Option<Fault>,
    },
    /// Refund an attempt; `by`: see [`asker`].
    Refund {
        attempt: Index,
        strict: bool,
        amount: Amt,
        by: u8,
        fault: Option<Fault>,
    },
    /// Commit the order of an attempt, by its actor or its buyer (`by_other`: another agent
    /// or another buyer).
    Commit {
        attempt: Index,
        strict: bool,
        valid: bool,
        by_other: bool,
        fault: Option<Fault>,
    },
    /// Reconcile an attempt.
    Reconcile {
        attempt: Index,
        strict: bool,
        fault: Option<Fault>,
    },
    /// Reconcile every attempt whose outcome is unknown.
    Sweep { fault: Option<Fault> },
    /// The buyer completes (or fails) a 3-D Secure challenge at the PSP.
    BuyerAction { attempt: Index, approved: bool },
    /// Send an earlier keyed command again with its key (`mutate`: with different content).
    Retry {
        pick: Index,
        mutate: Option<u8>,
        fault: Option<Fault>,
    },
    /// Move the clock.
    Advance { minutes: u32 },
}

/// A keyed engine command, as sent.
#[derive(Debug, Clone)]
enum Sent {
    Create(Principal, CreateMandate),
    Derive(Principal, DeriveMandate),
    Change(Principal, ChangeMandate),
    Suspend(Principal, SetSuspension),
    Execute(Principal, ExecutePayment),
    Capture(Principal, CapturePayment),
    Void(Principal, VoidPayment),
    Refund(Principal, RefundPayment),
    Commit(Principal, CommitOrder),
}

type Scope = (String, &'static str, String);

impl Sent {
    /// A short description for failure messages.
    fn brief(&self) -> String {
        match self {
            Sent::Create(by, c) => format!(
                "create_mandate by {by} key={} {} caps={:?}",
                c.key,
                c.spec.id,
                Caps::of(&c.spec)
            ),
            Sent::Derive(by, c) => format!(
                "derive_mandate by {by} key={} {} from {:?} for {} caps={:?}",
                c.key,
                c.spec.id,
                c.spec.parent_id,
                c.spec.actor.id,
                Caps::of(&c.spec)
            ),
            Sent::Change(by, c) => format!("revoke by {by} key={} {}", c.key, c.mandate_id),
            Sent::Suspend(by, c) => format!(
                "set_suspension by {by} key={} {:?} suspended={}",
                c.key, c.party, c.suspended
            ),
            Sent::Execute(by, c) => format!(
                "execute_payment by {by} key={} actor={} {} amount={} capture={} checkout_valid={}",
                c.key,
                c.request.actor.id,
                c.request.mandate_id,
                c.request.amount,
                c.capture,
                matches!(c.checkout, CheckoutState::Valid { .. })
            ),
            Sent::Capture(by, c) => format!(
                "capture by {by} key={} {} amount={:?}",
                c.key, c.attempt_id, c.amount
            ),
            Sent::Void(by, c) => format!("void by {by} key={} {}", c.key, c.attempt_id),
            Sent::Refund(by, c) => format!(
                "refund by {by} key={} {} amount={:?}",
                c.key, c.attempt_id, c.amount
            ),
            Sent::Commit(by, c) => format!(
                "commit_order by {by} key={} {} checkout_valid={}",
                c.key,
                c.attempt_id,
                matches!(c.checkout, CheckoutState::Valid { .. })
            ),
        }
    }

    /// The idempotency scope: the principal's (a payment's: its actor's).
    fn scope(&self) -> Scope {
        let (by, op, key) = match self {
            Sent::Create(by, c) => (by, "create_mandate", &c.key),
            Sent::Derive(by, c) => (by, "derive_mandate", &c.key),
            Sent::Change(by, c) => (by, "change_mandate", &c.key),
            Sent::Suspend(by, c) => (by, "set_suspension", &c.key),
            Sent::Execute(_, c) => {
                return (
                    c.request.actor.id.to_string(),
                    "execute_payment",
                    c.key.as_str().to_owned(),
                )
            }
            Sent::Capture(by, c) => (by, "capture_payment", &c.key),
            Sent::Void(by, c) => (by, "void_payment", &c.key),
            Sent::Refund(by, c) => (by, "refund_payment", &c.key),
            Sent::Commit(by, c) => (by, "commit_order", &c.key),
        };
        (by.scope_id().to_string(), op, key.as_str().to_owned())
    }

    /// Equal for commands the engine fingerprints equally.
    fn fingerprint(&self) -> String {
        match self {
            Sent::Execute(_, c) => format!(
                "{:?}",
                (&c.request, &c.checkout, c.credential.as_str(), c.capture)
            ),
            other => format!("{other:?}"),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Outcomes, as the model predicts them and as the engine's results are classified.
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
enum ErrKind {
    Conflict,
    InFlight,
    Invalid,
    NotFound,
    NotPermitted,
    Transition,
    OrderNotAllowed(AttemptStatus),
    Lifecycle,
    Delegation,
    PspTransient,
    PspInvalid,
    /// The store refused a duplicate id (a mandate slot taken).
    StoreConflict,
    /// Anything else: never expected.
    Unexpected(String),
}

fn err_kind(e: &EngineError) -> ErrKind {
    match e {
        EngineError::IdempotencyConflict { .. } => ErrKind::Conflict,
        EngineError::IdempotencyInFlight { .. } => ErrKind::InFlight,
        EngineError::Invalid { .. } => ErrKind::Invalid,
        EngineError::NotFound { .. } => ErrKind::NotFound,
        EngineError::NotPermitted { .. } => ErrKind::NotPermitted,
        EngineError::Transition(_) => ErrKind::Transition,
        EngineError::OrderNotAllowed { status } => ErrKind::OrderNotAllowed(*status),
        EngineError::Lifecycle(_) => ErrKind::Lifecycle,
        EngineError::Delegation(_) => ErrKind::Delegation,
        EngineError::Provider(ProviderError::Transient { .. }) => ErrKind::PspTransient,
        EngineError::Provider(ProviderError::Invalid { .. }) => ErrKind::PspInvalid,
        EngineError::Store(StoreError::Conflict {
            entity: "mandate", ..
        }) => ErrKind::StoreConflict,
        other => ErrKind::Unexpected(format!("{other}")),
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum OrderOut {
    Committed(i64),
    Existing,
    Failed {
        operation: Operation,
        status: AttemptStatus,
        error: bool,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Out {
    Skip,
    Advanced,
    /// A refused decision: its outcome and its blocker codes, sorted.
    Refused(Outcome, Vec<String>),
    Done {
        status: AttemptStatus,
        decided: bool,
    },
    Replayed(AttemptStatus),
    Recorded {
        replay: bool,
    },
    Order(OrderOut),
    Attempt(AttemptStatus),
    Swept(Vec<AttemptStatus>),
    Buyer(bool),
    /// Credentials revoked.
    Revoked(u32),
    /// A new card stored.
    Issued,
    Err(ErrKind),
}

fn payment_out(r: &Result<PaymentOutcome, EngineError>) -> Out {
    match r {
        Ok(PaymentOutcome::Refused(d)) => {
            let mut codes: Vec<String> =
                d.blockers.iter().map(|b| b.code.as_str().into()).collect();
            codes.sort();
            Out::Refused(d.outcome, codes)
        }
        Ok(PaymentOutcome::Done { attempt, decision }) => Out::Done {
            status: attempt.status,
            decided: decision.is_some(),
        },
        Ok(PaymentOutcome::Replayed { attempt }) => Out::Replayed(attempt.status),
        Ok(other) => panic!("an outcome the model does not know: {other:?}"),
        Err(e) => Out::Err(err_kind(e)),
    }
}

fn recorded_out<T>(r: &Result<agent_mandate::engine::Recorded<T>, EngineError>) -> Out {
    match r {
        Ok(rec) => Out::Recorded { replay: rec.replay },
        Err(e) => Out::Err(err_kind(e)),
    }
}

// ---------------------------------------------------------------------------------------------
// The reference model.
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct MMandate {
    parent: Option<usize>,
    actor: usize,
    caps: Caps,
    revoked: bool,
    expires: DateTime<Utc>,
}

/// The state of an attempt the model tracks (what the engine's record must show).
#[derive(Debug, Clone, PartialEq, Eq)]
struct St {
    status: AttemptStatus,
    authorized: i64,
    captured: i64,
    refunded: i64,
    refunds: u32,
    submissions: u32,
    pending: Option<Operation>,
    has_ref: bool,
}

#[derive(Debug, Clone)]
struct MHold {
    id: AttemptId,
    at: DateTime<Utc>,
    amount: i64,
    /// Root first.
    chain: Vec<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HState {
    Held,
    Committed(i64),
    Released,
}

#[derive(Debug, Clone)]
struct MAttempt {
    id: AttemptId,
    actor: usize,
    slot: usize,
    snap: usize,
    amount: i64,
    capture: bool,
    request: PaymentRequest,
    credential: CredentialRef,
    created_at: DateTime<Utc>,
    /// When the authorization was last submitted.
    submitted_at: DateTime<Utc>,
    st: St,
    holds: Vec<MHold>,
    /// The PSP payment (index into `Model::pays`) once the PSP created one.
    pay: Option<usize>,
    /// The order's amount, once committed.
    order: Option<i64>,
}

impl MAttempt {
    /// What each hold must be: earlier submissions released; the current one held while money
    /// may move and nothing is captured, committed once captured, released otherwise.
    fn hold_state(&self, i: usize) -> HState {
        use AttemptStatus as S;
        if i + 1 < self.holds.len() {
            return HState::Released;
        }
        if self.st.captured > 0 {
            HState::Committed(self.st.captured)
        } else if matches!(
            self.st.status,
            S::PendingProviderResponse | S::RequiresBuyerAction | S::Authorized | S::Ambiguous
        ) {
            HState::Held
        } else {
            HState::Released
        }
    }
}

/// The PSP's side of a payment.
#[derive(Debug, Clone)]
struct MPay {
    reference: ProviderRef,
    requested: i64,
    capture: bool,
    status: ProviderStatus,
    authorized: i64,
    captured: i64,
    refunded: i64,
}

/// A PSP report, as the model sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct MReport {
    has_ref: bool,
    status: ProviderStatus,
    authorized: i64,
    captured: i64,
    refunded: i64,
}

impl MPay {
    fn report(&self) -> MReport {
        MReport {
            has_ref: true,
            status: self.status.clone(),
            authorized: self.authorized,
            captured: self.captured,
            refunded: self.refunded,
        }
    }
}

fn not_found() -> MReport {
    MReport {
        has_ref: false,
        status: ProviderStatus::NotFound,
        authorized: 0,
        captured: 0,
        refunded: 0,
    }
}

/// What a PSP call returned.
#[derive(Debug, Clone)]
enum PspRes {
    Ok(MReport),
    Invalid,
    Transient,
    Ambiguous,
}

/// The event a successful follow-up call confirms.
#[derive(Debug, Clone, Copy)]
enum Confirmed {
    Capture(i64),
    Void,
    Refund(i64),
}

#[derive(Debug, Clone)]
enum KeyState {
    InFlight { fp: String, until: DateTime<Utc> },
    Completed { fp: String, until: DateTime<Utc> },
}

enum Begin {
    Fresh,
    Replay,
    Conflict,
    InFlight,
}

/// Usage of one mandate, in cents.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct MUsage {
    held: i64,
    spent: i64,
    window_amount: i64,
    window_count: u32,
    uses: u32,
    attempts: u32,
}

fn rank(s: AttemptStatus) -> Option<u8> {
    use AttemptStatus as S;
    match s {
        S::Authorized => Some(1),
        S::PartiallyCaptured | S::Captured => Some(2),
        S::PartiallyRefunded => Some(3),
        S::Refunded | S::Cancelled | S::Failed => Some(4),
        _ => None,
    }
}

fn is_unknown(s: AttemptStatus) -> bool {
    matches!(
        s,
        AttemptStatus::PendingProviderResponse
            | AttemptStatus::Ambiguous
            | AttemptStatus::RequiresBuyerAction
    )
}

/// The attempt after a PSP report (`None`: the state machine refuses it). Reports move an
/// attempt whose outcome is unknown to what they say, and a settled one only forwards.
fn absorb(st: &St, requested: i64, r: &MReport) -> Option<St> {
    use AttemptStatus as S;
    let settled = match st.status {
        S::Authorized | S::PartiallyCaptured | S::Captured | S::PartiallyRefunded => true,
        S::PendingProviderResponse | S::RequiresBuyerAction | S::Ambiguous => false,
        _ => return None,
    };
    if r.authorized > requested || r.captured > r.authorized || r.refunded > r.captured {
        return None;
    }
    let status = match &r.status {
        ProviderStatus::Unknown(_) if settled => return None,
        ProviderStatus::Unknown(_) => S::Ambiguous,
        ProviderStatus::NotFound
            if settled || st.pending.is_some_and(|op| op != Operation::Authorize) =>
        {
            return None
        }
        ProviderStatus::NotFound => S::Failed,
        ProviderStatus::RequiresAction => S::RequiresBuyerAction,
        ProviderStatus::Authorized => S::Authorized,
        ProviderStatus::Declined => S::Failed,
        ProviderStatus::Cancelled => S::Cancelled,
        ProviderStatus::Captured => {
            if r.captured == 0 {
                return None;
            }
            if r.refunded == 0 {
                if r.captured == r.authorized {
                    S::Captured
                } else {
                    S::PartiallyCaptured
                }
            } else if r.refunded == r.captured {
                S::Refunded
            } else {
                S::PartiallyRefunded
            }
        }
    };
    if settled {
        match (rank(st.status), rank(status)) {
            (Some(now), Some(then)) if then >= now => {}
            _ => return None,
        }
        if r.captured < st.captured || r.refunded < st.refunded {
            return None;
        }
    }
    let mut next = st.clone();
    next.status = status;
    next.has_ref |= r.has_ref;
    next.authorized = r.authorized;
    next.captured = r.captured;
    if r.refunded > st.refunded {
        next.refunds += 1;
    }
    next.refunded = r.refunded;
    if status != S::Ambiguous {
        next.pending = None;
    }
    Some(next)
}

/// The outcome of `op` became unknown.
fn lost(st: &St, op: Operation) -> Option<St> {
    use AttemptStatus as S;
    match st.status {
        S::PendingProviderResponse
        | S::RequiresBuyerAction
        | S::Authorized
        | S::PartiallyCaptured
        | S::Captured
        | S::PartiallyRefunded => {
            let mut next = st.clone();
            next.status = S::Ambiguous;
            next.pending = Some(op);
            Some(next)
        }
        _ => None,
    }
}

/// The attempt after a follow-up the PSP confirmed (when its report cannot be absorbed).
fn confirm(st: &St, c: Confirmed) -> Option<St> {
    use AttemptStatus as S;
    let mut next = st.clone();
    next.pending = None;
    match (st.status, c) {
        (S::Authorized, Confirmed::Capture(a)) if a > 0 && a <= st.authorized => {
            next.status = if a == st.authorized {
                S::Captured
            } else {
                S::PartiallyCaptured
            };
            next.captured = a;
        }
        (S::Authorized | S::RequiresBuyerAction, Confirmed::Void) => next.status = S::Cancelled,
        (S::Captured | S::PartiallyCaptured | S::PartiallyRefunded, Confirmed::Refund(a))
            if a > 0 && st.refunded + a <= st.captured =>
        {
            next.refunded = st.refunded + a;
            next.status = if next.refunded == st.captured {
                S::Refunded
            } else {
                S::PartiallyRefunded
            };
            next.refunds += 1;
        }
        _ => return None,
    }
    Some(next)
}

fn report_status_matches(report: &ProviderStatus, status: AttemptStatus) -> bool {
    use AttemptStatus as S;
    match report {
        ProviderStatus::Captured => matches!(
            status,
            S::Captured | S::PartiallyCaptured | S::Refunded | S::PartiallyRefunded
        ),
        ProviderStatus::Cancelled => status == S::Cancelled,
        _ => false,
    }
}

struct Model {
    now: DateTime<Utc>,
    /// Whether refunds give budget headroom back (`RefundPolicy::RESTORE_ALL`).
    restore: bool,
    /// Each agent's cards (the last is the one it pays with), and whether revoked.
    cards: Vec<Vec<(CredentialRef, bool)>>,
    buyer_suspended: bool,
    snap_ids: Vec<agent_mandate::domain::SnapshotId>,
    snap_totals: Vec<i64>,
    snap_expires: Vec<DateTime<Utc>>,
    mandates: Vec<Option<MMandate>>,
    suspended: [bool; AGENTS.len()],
    blocks: [u32; AGENTS.len()],
    attempts: Vec<MAttempt>,
    by_id: HashMap<AttemptId, usize>,
    keys: HashMap<Scope, KeyState>,
    history: Vec<Sent>,
    next_key: u64,
    // The PSP's side.
    pays: Vec<MPay>,
    answered: HashMap<String, (String, MReport)>,
    calls: HashMap<Op, u32>,
    authorizations: HashMap<usize, u32>,
    total_authorized: i64,
    total_captured: i64,
    total_refunded: i64,
    /// The fault queued for the current command, until a PSP call takes it.
    fault: Option<Fault>,
    // What the audit trail showed so far.
    audit_seen: usize,
    allowed_execute: HashSet<AttemptId>,
}

impl Model {
    fn new(w: &World, restore: bool) -> Model {
        Model {
            now: start(),
            restore,
            cards: w.cards.iter().map(|c| vec![(c.clone(), false)]).collect(),
            buyer_suspended: false,
            snap_ids: w.snaps.iter().map(CartSnapshot::id).collect(),
            snap_totals: w.snaps.iter().map(|s| s.total().minor_units()).collect(),
            snap_expires: w.snaps.iter().map(CartSnapshot::expires_at).collect(),
            mandates: vec![None; SLOTS],
            suspended: [false; AGENTS.len()],
            blocks: [0; AGENTS.len()],
            attempts: Vec::new(),
            by_id: HashMap::new(),
            keys: HashMap::new(),
            history: Vec::new(),
            next_key: 0,
            pays: Vec::new(),
            answered: HashMap::new(),
            calls: HashMap::new(),
            authorizations: HashMap::new(),
            total_authorized: 0,
            total_captured: 0,
            total_refunded: 0,
            fault: None,
            audit_seen: 0,
            allowed_execute: HashSet::new(),
        }
    }

    fn fresh_key(&mut self) -> agent_mandate::domain::IdempotencyKey {
        self.next_key += 1;
        key(&format!("k-{}", self.next_key))
    }

    fn card(&self, actor: usize) -> &CredentialRef {
        &self.cards[actor].last().expect("a card").0
    }

    /// Whether `credential` is a card of `actor` that is not revoked.
    fn usable(&self, actor: usize, credential: &CredentialRef) -> bool {
        self.cards[actor]
            .iter()
            .any(|(c, revoked)| c == credential && !revoked)
    }

    fn existing_slots(&self) -> Vec<usize> {
        (0..SLOTS).filter(|&s| self.mandates[s].is_some()).collect()
    }

    /// Root first.
    fn chain(&self, slot: usize) -> Vec<usize> {
        let mut chain = vec![slot];
        let mut at = slot;
        while let Some(p) = self.mandates[at].as_ref().and_then(|m| m.parent) {
            chain.push(p);
            at = p;
        }
        chain.reverse();
        chain
    }

    fn mandate(&self, slot: usize) -> &MMandate {
        self.mandates[slot].as_ref().expect("model mandate")
    }

    fn usage(&self, slot: usize) -> MUsage {
        let mut u = MUsage::default();
        let window_start = self.now - Duration::seconds(WINDOW_SECONDS);
        for a in &self.attempts {
            for (i, h) in a.holds.iter().enumerate() {
                if !h.chain.contains(&slot) {
                    continue;
                }
                u.attempts += 1;
                let share = match a.hold_state(i) {
                    HState::Held => {
                        u.held += h.amount;
                        h.amount
                    }
                    HState::Committed(c) => {
                        let kept = if self.restore { c - a.st.refunded } else { c };
                        u.spent += kept;
                        kept
                    }
                    HState::Released => continue,
                };
                u.uses += 1;
                if h.at > window_start {
                    u.window_amount += share;
                    u.window_count += 1;
                }
            }
        }
        u
    }

    // ----- idempotency records -----

    fn begin(&self, scope: &Scope, fp: &str) -> Begin {
        match self.keys.get(scope) {
            None => Begin::Fresh,
            Some(KeyState::Completed { until, .. } | KeyState::InFlight { until, .. })
                if self.now >= *until =>
            {
                Begin::Fresh
            }
            Some(KeyState::Completed { fp: recorded, .. }) => {
                if recorded == fp {
                    Begin::Replay
                } else {
                    Begin::Conflict
                }
            }
            Some(KeyState::InFlight { fp: recorded, .. }) => {
                if recorded == fp {
                    Begin::InFlight
                } else {
                    Begin::Conflict
                }
            }
        }
    }

    fn start_key(&mut self, scope: &Scope, fp: &str) {
        self.keys.insert(
            scope.clone(),
            KeyState::InFlight {
                fp: fp.to_owned(),
                until: self.now + Duration::seconds(LEASE_SECONDS),
            },
        );
    }

    fn complete_key(&mut self, scope: &Scope, fp: &str) {
        self.keys.insert(
            scope.clone(),
            KeyState::Completed {
                fp: fp.to_owned(),
                until: self.now + Duration::hours(RETAIN_HOURS),
            },
        );
    }

    fn abandon_key(&mut self, scope: &Scope) {
        self.keys.remove(scope);
    }

    // ----- the PSP -----

    /// Counts a PSP call; the first call of the command takes its fault.
    fn psp_call(&mut self, op: Op) -> Option<Fault> {
        *self.calls.entry(op).or_insert(0) += 1;
        self.fault.take()
    }

    fn authorize_key(&self, ai: usize) -> String {
        format!("{}-authorize", self.attempts[ai].id)
    }

    /// One delivery of the attempt's authorization with the credential's (or a forced) verdict.
    fn deliver_authorize(&mut self, ai: usize, verdict: ProviderStatus) -> Option<MReport> {
        let key = self.authorize_key(ai);
        let a = &self.attempts[ai];
        let desc = format!("{:?}", (&a.request, a.credential.as_str(), a.capture));
        if let Some((d, r)) = self.answered.get(&key) {
            return (*d == desc).then(|| r.clone());
        }
        let (amount, capture) = (a.amount, a.capture);
        let mut pay = MPay {
            reference: ProviderRef::new(format!("pi_{}", self.pays.len() + 1)).expect("ref"),
            requested: amount,
            capture,
            status: verdict.clone(),
            authorized: 0,
            captured: 0,
            refunded: 0,
        };
        if verdict == ProviderStatus::Authorized {
            pay.authorized = amount;
            self.total_authorized += amount;
            *self.authorizations.entry(ai).or_insert(0) += 1;
            if capture {
                pay.status = ProviderStatus::Captured;
                pay.captured = amount;
                self.total_captured += amount;
            }
        }
        let report = pay.report();
        self.pays.push(pay);
        self.attempts[ai].pay = Some(self.pays.len() - 1);
        self.answered.insert(key, (desc, report.clone()));
        Some(report)
    }

    fn psp_authorize(&mut self, ai: usize) -> PspRes {
        let fault = self.psp_call(Op::Authorize);
        let ok = |r: Option<MReport>| r.map_or(PspRes::Invalid, PspRes::Ok);
        match fault {
            None | Some(Fault::Pass | Fault::DuplicateDelivery) => {
                ok(self.deliver_authorize(ai, ProviderStatus::Authorized))
            }
            Some(Fault::Decline(_)) => ok(self.deliver_authorize(ai, ProviderStatus::Declined)),
            Some(Fault::RequiresAction) => {
                ok(self.deliver_authorize(ai, ProviderStatus::RequiresAction))
            }
            Some(Fault::Invalid) => PspRes::Invalid,
            Some(Fault::Transient) => PspRes::Transient,
            Some(Fault::TimeoutBeforeEffect) => PspRes::Ambiguous,
            Some(Fault::TimeoutAfterEffect | Fault::LostResponse) => {
                let _ = self.deliver_authorize(ai, ProviderStatus::Authorized);
                PspRes::Ambiguous
            }
            Some(Fault::UnknownStatus(s)) => {
                let mut r = match self.attempts[ai].pay {
                    Some(p) => self.pays[p].report(),
                    None => not_found(),
                };
                r.status = ProviderStatus::Unknown(s);
                PspRes::Ok(r)
            }
        }
    }

    /// A capture, void or refund at the PSP.
    fn psp_mutate(&mut self, ai: usize, op: Op, amount: i64) -> PspRes {
        let fault = self.psp_call(op);
        let a = &self.attempts[ai];
        let pay = a.pay;
        let key = match op {
            Op::Capture => format!("{}-capture", a.id),
            Op::Void => format!("{}-void", a.id),
            _ => format!("{}-refund-{}", a.id, a.st.refunds + 1),
        };
        let desc = format!("{op:?}/{amount}");
        let process = |m: &mut Model| -> Option<MReport> {
            if let Some((d, r)) = m.answered.get(&key) {
                return (*d == desc).then(|| r.clone());
            }
            let p = &mut m.pays[pay?];
            match op {
                Op::Capture => {
                    if p.status != ProviderStatus::Authorized
                        || amount <= 0
                        || amount > p.authorized
                    {
                        return None;
                    }
                    p.status = ProviderStatus::Captured;
                    p.captured = amount;
                    m.total_captured += amount;
                }
                Op::Void => {
                    if !matches!(
                        p.status,
                        ProviderStatus::Authorized | ProviderStatus::RequiresAction
                    ) {
                        return None;
                    }
                    p.status = ProviderStatus::Cancelled;
                }
                _ => {
                    if p.status != ProviderStatus::Captured
                        || amount <= 0
                        || p.refunded + amount > p.captured
                    {
                        return None;
                    }
                    p.refunded += amount;
                    m.total_refunded += amount;
                }
            }
            let r = p.report();
            m.answered.insert(key.clone(), (desc.clone(), r.clone()));
            Some(r)
        };
        match fault {
            Some(Fault::Invalid | Fault::Decline(_) | Fault::RequiresAction) => PspRes::Invalid,
            Some(Fault::Transient) => PspRes::Transient,
            Some(Fault::TimeoutBeforeEffect) => PspRes::Ambiguous,
            Some(Fault::UnknownStatus(s)) => match pay {
                Some(p) => {
                    let mut r = self.pays[p].report();
                    r.status = ProviderStatus::Unknown(s);
                    PspRes::Ok(r)
                }
                None => PspRes::Invalid,
            },
            Some(Fault::TimeoutAfterEffect | Fault::LostResponse) => {
                let _ = process(self);
                PspRes::Ambiguous
            }
            None | Some(Fault::Pass | Fault::DuplicateDelivery) => {
                process(self).map_or(PspRes::Invalid, PspRes::Ok)
            }
        }
    }

    /// Records a follow-up's PSP answer on the attempt.
    fn follow_up(
        &mut self,
        ai: usize,
        res: PspRes,
        confirmed: Confirmed,
        op: Operation,
    ) -> Result<(), ErrKind> {
        let a = &self.attempts[ai];
        let next = match res {
            PspRes::Ok(report) => match absorb(&a.st, a.amount, &report) {
                Some(next) => next,
                None => match confirm(&a.st, confirmed) {
                    Some(mut next) if report_status_matches(&report.status, next.status) => {
                        next.has_ref |= report.has_ref;
                        next
                    }
                    _ => lost(&a.st, op).ok_or(ErrKind::Transition)?,
                },
            },
            PspRes::Ambiguous => lost(&a.st, op).ok_or(ErrKind::Transition)?,
            PspRes::Invalid => return Err(ErrKind::PspInvalid),
            PspRes::Transient => return Err(ErrKind::PspTransient),
        };
        self.attempts[ai].st = next;
        Ok(())
    }

    /// Resolves an attempt whose outcome is unknown from a PSP lookup.
    fn reconcile(&mut self, ai: usize) -> Result<(), ErrKind> {
        let a = &self.attempts[ai];
        // Settled attempts that can still move are brought forward to the PSP's view too.
        let open = matches!(
            a.st.status,
            AttemptStatus::Authorized
                | AttemptStatus::PartiallyCaptured
                | AttemptStatus::Captured
                | AttemptStatus::PartiallyRefunded
        ) && a.st.has_ref;
        // Sent back after a transient failure: looked up, never changed (the fake PSP never
        // processes a transient call, so it has no payment for it).
        let returned = a.st.status == AttemptStatus::AuthorityValidated && a.st.submissions > 0;
        if !is_unknown(a.st.status) && !open && !returned {
            return Ok(());
        }
        // I13: "not found" is final only past the submission's deadline; before it a pending
        // attempt is left to its command without a lookup.
        let settled = self.now >= a.submitted_at + Duration::seconds(SETTLE_SECONDS);
        if a.st.status == AttemptStatus::PendingProviderResponse && !settled {
            return Ok(());
        }
        let fault = self.psp_call(Op::Lookup);
        let a = &self.attempts[ai];
        let current = a.pay.map(|p| self.pays[p].report());
        let report = match fault {
            Some(
                Fault::Transient
                | Fault::TimeoutBeforeEffect
                | Fault::TimeoutAfterEffect
                | Fault::LostResponse,
            ) => return Err(ErrKind::PspTransient),
            Some(Fault::Invalid | Fault::Decline(_) | Fault::RequiresAction) => {
                return Err(ErrKind::PspInvalid)
            }
            Some(Fault::UnknownStatus(s)) => current.map_or_else(not_found, |mut r| {
                r.status = ProviderStatus::Unknown(s);
                r
            }),
            None | Some(Fault::Pass | Fault::DuplicateDelivery) => {
                current.unwrap_or_else(not_found)
            }
        };
        if returned || (report.status == ProviderStatus::NotFound && !settled) {
            return Ok(());
        }
        let next = absorb(&a.st, a.amount, &report).ok_or(ErrKind::Transition)?;
        let same = next.status == a.st.status
            && next.authorized == a.st.authorized
            && next.captured == a.st.captured
            && next.refunded == a.st.refunded
            && next.has_ref == a.st.has_ref;
        if !same {
            self.attempts[ai].st = next;
        }
        Ok(())
    }

    // ----- decisions -----

    /// The blocker codes of the chain and the actors for a follow-up (capture, order). An
    /// expiry never blocks one: the authorization it completes was made while the chain was
    /// valid.
    fn follow_up_codes(&self, ai: usize, actor: usize, capture_amount: Option<i64>) -> Vec<String> {
        let a = &self.attempts[ai];
        let chain = self.chain(a.slot);
        let leaf = *chain.last().expect("chain");
        let mut codes = Vec::new();
        if actor != self.mandate(leaf).actor {
            codes.push("ACTOR_NOT_AUTHORIZED");
        }
        if self.suspended[actor] {
            codes.push("ACTOR_SUSPENDED");
        }
        if self.buyer_suspended {
            codes.push("BUYER_SUSPENDED");
        }
        for &s in &chain {
            let m = self.mandate(s);
            if s == leaf {
                if m.revoked {
                    codes.push("MANDATE_REVOKED");
                }
            } else if m.revoked || self.suspended[m.actor] {
                codes.push("ANCESTOR_NOT_ACTIVE");
            }
            if capture_amount.is_some_and(|c| c < self.snap_totals[a.snap])
                && !m.caps.partial_capture
            {
                codes.push("PARTIAL_CAPTURE_NOT_ALLOWED");
            }
        }
        let mut codes: Vec<String> = codes.into_iter().map(String::from).collect();
        codes.sort();
        codes
    }

    /// The decision on an execute: blocker codes (sorted) and the outcome.
    fn decide_execute(
        &self,
        cmd: &ExecutePayment,
        actor: usize,
        slot: usize,
        snap: usize,
    ) -> (Outcome, Vec<String>) {
        let valid_checkout = matches!(&cmd.checkout, CheckoutState::Valid { .. });
        let total = self.snap_totals[snap];
        let mut hard: Vec<&str> = Vec::new();
        let stale = self.now >= self.snap_expires[snap];
        if !valid_checkout {
            hard.push("CHECKOUT_NOT_VALID");
        }
        let chain = self.chain(slot);
        if actor != self.mandate(slot).actor {
            hard.push("ACTOR_NOT_AUTHORIZED");
        }
        if self.suspended[actor] {
            hard.push("ACTOR_SUSPENDED");
        }
        if self.buyer_suspended {
            hard.push("BUYER_SUSPENDED");
        }
        if !self.usable(actor, &cmd.credential) {
            hard.push("CREDENTIAL_NOT_USABLE");
        }
        for &s in &chain {
            let m = self.mandate(s);
            let expired = self.now >= m.expires;
            if s == slot {
                if m.revoked {
                    hard.push("MANDATE_REVOKED");
                }
                if expired {
                    hard.push("MANDATE_EXPIRED");
                }
            } else if m.revoked || self.suspended[m.actor] || expired {
                hard.push("ANCESTOR_NOT_ACTIVE");
            }
            if total > m.caps.max_amount {
                hard.push("AMOUNT_EXCEEDS_MANDATE");
                hard.push("TRANSACTION_LIMIT_EXCEEDED");
            }
            let u = self.usage(s);
            if u.window_amount + total > m.caps.window_amount {
                hard.push("WINDOW_AMOUNT_EXCEEDED");
            }
            if u.window_count >= m.caps.window_count {
                hard.push("WINDOW_COUNT_EXCEEDED");
            }
            if u.spent + u.held + total > m.caps.lifetime {
                hard.push("LIFETIME_LIMIT_EXCEEDED");
            }
            if m.caps.max_uses.is_some_and(|max| u.uses >= max) {
                hard.push("MANDATE_USED");
            }
        }
        let mut codes: Vec<String> = hard.iter().map(|c| String::from(*c)).collect();
        if stale {
            codes.push("SNAPSHOT_EXPIRED".into());
        }
        codes.sort();
        let outcome = if !hard.is_empty() {
            Outcome::Blocked
        } else if stale {
            Outcome::RequiresRevalidation
        } else {
            Outcome::Allowed
        };
        (outcome, codes)
    }

    // ----- predictions -----

    fn attempt_index(&self, id: &AttemptId) -> usize {
        *self.by_id.get(id).expect("the model made this attempt")
    }

    fn predict(&mut self, sent: &Sent) -> Out {
        let scope = sent.scope();
        let fp = sent.fingerprint();
        if let Sent::Execute(by, cmd) = sent {
            if *by != Principal::Agent(cmd.request.actor.id.clone()) {
                // Refused before its key is looked at: nothing decided, held or recorded.
                return Out::Err(ErrKind::NotPermitted);
            }
            return self.predict_execute(cmd, &scope, &fp);
        }
        match self.begin(&scope, &fp) {
            Begin::Conflict => return Out::Err(ErrKind::Conflict),
            Begin::InFlight => return Out::Err(ErrKind::InFlight),
            Begin::Replay => {
                return match sent {
                    Sent::Capture(_, c) => Out::Replayed(self.status_of(&c.attempt_id)),
                    Sent::Void(_, c) => Out::Replayed(self.status_of(&c.attempt_id)),
                    Sent::Refund(_, c) => Out::Replayed(self.status_of(&c.attempt_id)),
                    Sent::Commit(_, c) => {
                        let ai = self.attempt_index(&c.attempt_id);
                        let a = &self.attempts[ai];
                        match a.order {
                            Some(_) => Out::Order(OrderOut::Existing),
                            None => Out::Err(ErrKind::OrderNotAllowed(a.st.status)),
                        }
                    }
                    _ => Out::Recorded { replay: true },
                }
            }
            Begin::Fresh => {}
        }
        self.start_key(&scope, &fp);
        let result = match sent {
            Sent::Create(by, c) => self.fresh_create(by, c),
            Sent::Derive(by, c) => self.fresh_derive(by, c),
            Sent::Change(by, c) => self.fresh_change(by, c),
            Sent::Suspend(by, c) => self.fresh_suspend(by, c),
            Sent::Capture(by, c) => self.fresh_capture(by, c),
            Sent::Void(by, c) => self.fresh_void(by, c),
            Sent::Refund(by, c) => self.fresh_refund(by, c),
            Sent::Commit(by, c) => self.fresh_commit(by, c),
            Sent::Execute(..) => unreachable!("handled above"),
        };
        match &result {
            // A refused follow-up changed nothing lasting: the key is free again.
            Out::Err(_) | Out::Refused(..) => self.abandon_key(&scope),
            _ => self.complete_key(&scope, &fp),
        }
        result
    }

    fn status_of(&self, id: &AttemptId) -> AttemptStatus {
        self.attempts[self.attempt_index(id)].st.status
    }

    fn fresh_create(&mut self, by: &Principal, c: &CreateMandate) -> Out {
        if !(*by == buyer_p() || by.is_system()) {
            return Out::Err(ErrKind::NotPermitted);
        }
        let slot = slot_of(&c.spec.id);
        if self.mandates[slot].is_some() {
            return Out::Err(ErrKind::StoreConflict);
        }
        self.mandates[slot] = Some(MMandate {
            parent: None,
            actor: agent_index(&c.spec.actor.id).expect("agent"),
            caps: Caps::of(&c.spec),
            revoked: false,
            expires: c.spec.scope.validity.expires_at,
        });
        Out::Recorded { replay: false }
    }

    fn fresh_derive(&mut self, by: &Principal, c: &DeriveMandate) -> Out {
        let slot = slot_of(&c.spec.id);
        let parent_slot = slot_of(c.spec.parent_id.as_ref().expect("parent"));
        let Some(parent) = self.mandates[parent_slot].clone() else {
            return Out::Err(ErrKind::NotFound);
        };
        // The parent's buyer or its actor (an agent derives only from its own mandate).
        if *by != buyer_p() && *by != Principal::Agent(agent(parent.actor).id) {
            return Out::Err(ErrKind::NotPermitted);
        }
        let caps = Caps::of(&c.spec);
        let expires = c.spec.scope.validity.expires_at;
        if parent.revoked || caps.wider_than(&parent.caps) || expires > parent.expires {
            return Out::Err(ErrKind::Delegation);
        }
        if self.mandates[slot].is_some() {
            return Out::Err(ErrKind::StoreConflict);
        }
        self.mandates[slot] = Some(MMandate {
            parent: Some(parent_slot),
            actor: agent_index(&c.spec.actor.id).expect("agent"),
            caps,
            revoked: false,
            expires,
        });
        Out::Recorded { replay: false }
    }

    fn fresh_change(&mut self, by: &Principal, c: &ChangeMandate) -> Out {
        let slot = slot_of(&c.mandate_id);
        // Revoke: the buyer, an operator, a system, or an agent holding a mandate of the chain.
        if self.mandates[slot].is_some()
            && *by != buyer_p()
            && !by.is_operator()
            && !by.is_system()
            && !self
                .chain(slot)
                .iter()
                .any(|&s| Principal::Agent(agent(self.mandate(s).actor).id) == *by)
        {
            return Out::Err(ErrKind::NotPermitted);
        }
        match &mut self.mandates[slot] {
            None => Out::Err(ErrKind::NotFound),
            Some(m) if m.revoked => Out::Err(ErrKind::Lifecycle),
            Some(m) => {
                m.revoked = true;
                Out::Recorded { replay: false }
            }
        }
    }

    fn fresh_suspend(&mut self, by: &Principal, c: &SetSuspension) -> Out {
        // A buyer turns their own switch on, never off (support may have turned it on).
        let own = c.suspended && matches!(&c.party, Party::Buyer(b) if by.is_buyer(b));
        if !(own || by.is_operator() || by.is_system()) {
            return Out::Err(ErrKind::NotPermitted);
        }
        let Party::Actor(actor) = &c.party else {
            self.buyer_suspended = c.suspended;
            return Out::Recorded { replay: false };
        };
        let i = agent_index(actor).expect("agent");
        self.suspended[i] = c.suspended;
        if !c.suspended {
            self.blocks[i] = 0;
        }
        Out::Recorded { replay: false }
    }

    fn fresh_capture(&mut self, by: &Principal, c: &CapturePayment) -> Out {
        let ai = self.attempt_index(&c.attempt_id);
        // Only the attempt's actor captures: neither the buyer nor an operator.
        if *by != self.actor_of(&c.attempt_id) {
            return Out::Err(ErrKind::NotPermitted);
        }
        let st = self.attempts[ai].st.clone();
        let amount = c.amount.map_or(st.authorized, |m| m.minor_units());
        if st.status != AttemptStatus::Authorized || amount <= 0 || amount > st.authorized {
            return Out::Err(ErrKind::Transition);
        }
        if !st.has_ref {
            return Out::Err(ErrKind::Invalid);
        }
        // Decided for the attempt's actor, whoever asks.
        let actor = self.attempts[ai].actor;
        let codes = self.follow_up_codes(ai, actor, Some(amount));
        if !codes.is_empty() {
            return Out::Refused(Outcome::Blocked, codes);
        }
        let res = self.psp_mutate(ai, Op::Capture, amount);
        match self.follow_up(ai, res, Confirmed::Capture(amount), Operation::Capture) {
            Ok(()) => Out::Done {
                status: self.attempts[ai].st.status,
                decided: true,
            },
            Err(k) => Out::Err(k),
        }
    }

    fn void_now(&mut self, ai: usize) -> Result<(), ErrKind> {
        if !self.attempts[ai].st.has_ref {
            return Err(ErrKind::Invalid);
        }
        let res = self.psp_mutate(ai, Op::Void, 0);
        self.follow_up(ai, res, Confirmed::Void, Operation::Void)
    }

    fn refund_now(&mut self, ai: usize, amount: i64) -> Result<(), ErrKind> {
        if !self.attempts[ai].st.has_ref {
            return Err(ErrKind::Invalid);
        }
        let res = self.psp_mutate(ai, Op::Refund, amount);
        self.follow_up(ai, res, Confirmed::Refund(amount), Operation::Refund)
    }

    fn fresh_void(&mut self, by: &Principal, c: &VoidPayment) -> Out {
        let ai = self.attempt_index(&c.attempt_id);
        if !self.may_settle(by, &c.attempt_id) {
            return Out::Err(ErrKind::NotPermitted);
        }
        let a = &self.attempts[ai];
        if !matches!(
            a.st.status,
            AttemptStatus::Authorized | AttemptStatus::RequiresBuyerAction
        ) {
            return Out::Err(ErrKind::Transition);
        }
        match self.void_now(ai) {
            Ok(()) => Out::Done {
                status: self.attempts[ai].st.status,
                decided: false,
            },
            Err(k) => Out::Err(k),
        }
    }

    fn fresh_refund(&mut self, by: &Principal, c: &RefundPayment) -> Out {
        let ai = self.attempt_index(&c.attempt_id);
        if !self.may_settle(by, &c.attempt_id) {
            return Out::Err(ErrKind::NotPermitted);
        }
        let st = self.attempts[ai].st.clone();
        let amount = c
            .amount
            .map_or(st.captured - st.refunded, |m| m.minor_units());
        let refundable = matches!(
            st.status,
            AttemptStatus::Captured
                | AttemptStatus::PartiallyCaptured
                | AttemptStatus::PartiallyRefunded
        );
        if !refundable || amount <= 0 || st.refunded + amount > st.captured {
            return Out::Err(ErrKind::Transition);
        }
        // No decision (I16): revocation and suspension do not stop a refund.
        match self.refund_now(ai, amount) {
            Ok(()) => Out::Done {
                status: self.attempts[ai].st.status,
                decided: false,
            },
            Err(k) => Out::Err(k),
        }
    }

    fn fresh_commit(&mut self, by: &Principal, c: &CommitOrder) -> Out {
        use AttemptStatus as S;
        let ai = self.attempt_index(&c.attempt_id);
        if !self.may_settle(by, &c.attempt_id) {
            // Another agent or another buyer may not commit its order.
            return Out::Err(ErrKind::NotPermitted);
        }
        let a = &self.attempts[ai];
        if a.order.is_some() {
            return Out::Order(OrderOut::Existing);
        }
        let status = a.st.status;
        if !matches!(status, S::Authorized | S::PartiallyCaptured | S::Captured) {
            return Out::Err(ErrKind::OrderNotAllowed(status));
        }
        // Decided for the attempt's actor, whoever asks.
        let actor = a.actor;
        let expired = self.now >= self.snap_expires[a.snap];
        let valid = matches!(&c.checkout, CheckoutState::Valid { .. });
        let codes = self.follow_up_codes(ai, actor, None);
        if codes.is_empty() && valid && !expired {
            let a = &mut self.attempts[ai];
            let amount = if a.st.captured > 0 {
                a.st.captured
            } else {
                a.st.authorized
            };
            a.order = Some(amount);
            return Out::Order(OrderOut::Committed(amount));
        }
        // Refused after money moved: the recovery starts at once.
        let (operation, result) = if status == S::Authorized {
            (Operation::Void, self.void_now(ai))
        } else {
            let st = &self.attempts[ai].st;
            let amount = st.captured - st.refunded;
            (Operation::Refund, self.refund_now(ai, amount))
        };
        Out::Order(OrderOut::Failed {
            operation,
            status: self.attempts[ai].st.status,
            error: result.is_err(),
        })
    }

    /// Execute: idempotency, resumption of an attempt, the decision, the hold, the PSP.
    fn predict_execute(&mut self, cmd: &ExecutePayment, scope: &Scope, fp: &str) -> Out {
        match self.begin(scope, fp) {
            Begin::Replay => {
                let id = attempt_id_for(&cmd.request.actor.id, &cmd.key);
                return Out::Replayed(self.status_of(&id));
            }
            Begin::Conflict => return Out::Err(ErrKind::Conflict),
            Begin::InFlight => return Out::Err(ErrKind::InFlight),
            Begin::Fresh => {}
        }
        self.start_key(scope, fp);
        let actor = agent_index(&cmd.request.actor.id).expect("agent");
        let slot = slot_of(&cmd.request.mandate_id);
        let snap = self
            .snap_ids
            .iter()
            .position(|s| *s == cmd.request.snapshot_id)
            .expect("model snapshot");
        let id = attempt_id_for(&cmd.request.actor.id, &cmd.key);
        let existing = self.by_id.get(&id).copied();
        if let Some(ai) = existing {
            let a = &self.attempts[ai];
            if a.request != cmd.request
                || a.capture != cmd.capture
                || a.credential != cmd.credential
            {
                // I3: the key already stands for another payment; nothing may execute.
                self.abandon_key(scope);
                return Out::Err(ErrKind::Conflict);
            }
            let status = a.st.status;
            if is_unknown(status) {
                return match self.reconcile(ai) {
                    Ok(()) => {
                        self.complete_key(scope, fp);
                        Out::Done {
                            status: self.attempts[ai].st.status,
                            decided: false,
                        }
                    }
                    Err(k) => {
                        self.abandon_key(scope);
                        Out::Err(k)
                    }
                };
            }
            if status != AttemptStatus::AuthorityValidated {
                self.complete_key(scope, fp);
                return Out::Done {
                    status,
                    decided: false,
                };
            }
        }
        // The principal (the agent named by the request) must be the mandate's actor: another
        // agent is refused before anything is decided, audited or counted.
        if self.mandates[slot]
            .as_ref()
            .is_some_and(|m| m.actor != actor)
        {
            self.abandon_key(scope);
            return Out::Err(ErrKind::NotPermitted);
        }
        let (outcome, codes) = self.decide_execute(cmd, actor, slot, snap);
        if outcome != Outcome::Allowed {
            // Only blockers showing the agent outside its authority count; budget usage
            // (window, lifetime, uses), the checkout and the buyer's suspension do not.
            let counted = codes.iter().any(|c| SUSPEND_ON.contains(&c.as_str()));
            if outcome == Outcome::Blocked && !self.suspended[actor] && counted {
                self.blocks[actor] += 1;
                if self.blocks[actor] == AUTO_SUSPEND_AFTER {
                    self.suspended[actor] = true;
                }
            }
            // A refusal changes nothing lasting: the key is free again.
            self.abandon_key(scope);
            return Out::Refused(outcome, codes);
        }
        self.blocks[actor] = 0;
        let ai = match existing {
            Some(ai) => ai,
            None => {
                self.attempts.push(MAttempt {
                    id: id.clone(),
                    actor,
                    slot,
                    snap,
                    amount: cmd.request.amount.minor_units(),
                    capture: cmd.capture,
                    request: cmd.request.clone(),
                    credential: cmd.credential.clone(),
                    created_at: self.now,
                    submitted_at: self.now,
                    st: St {
                        status: AttemptStatus::AuthorityValidated,
                        authorized: 0,
                        captured: 0,
                        refunded: 0,
                        refunds: 0,
                        submissions: 0,
                        pending: None,
                        has_ref: false,
                    },
                    holds: Vec::new(),
                    pay: None,
                    order: None,
                });
                self.by_id.insert(id.clone(), self.attempts.len() - 1);
                self.attempts.len() - 1
            }
        };
        // Submit: a new hold on the whole chain.
        let chain = self.chain(slot);
        let now = self.now;
        let a = &mut self.attempts[ai];
        a.st.submissions += 1;
        a.submitted_at = now;
        a.st.status = AttemptStatus::PendingProviderResponse;
        let hold_id = if a.st.submissions <= 1 {
            a.id.clone()
        } else {
            format!("{}.{}", a.id, a.st.submissions)
                .parse()
                .expect("hold id")
        };
        let amount = a.amount;
        a.holds.push(MHold {
            id: hold_id,
            at: now,
            amount,
            chain,
        });
        let st = a.st.clone();
        let next = match self.psp_authorize(ai) {
            PspRes::Ok(report) => absorb(&st, amount, &report)
                .or_else(|| lost(&st, Operation::Authorize))
                .expect("pending can become ambiguous"),
            PspRes::Invalid => St {
                status: AttemptStatus::Failed,
                ..st
            },
            PspRes::Transient => {
                self.attempts[ai].st.status = AttemptStatus::AuthorityValidated;
                self.abandon_key(scope);
                return Out::Err(ErrKind::PspTransient);
            }
            PspRes::Ambiguous => lost(&st, Operation::Authorize).expect("pending"),
        };
        self.attempts[ai].st = next;
        self.complete_key(scope, fp);
        Out::Done {
            status: self.attempts[ai].st.status,
            decided: true,
        }
    }

    /// The sweep visits every submitted, non-terminal attempt: unknown ones first, then those
    /// sent back after a transient failure (looked up, never changed), then the settled ones
    /// that can still move; each group oldest first, all chosen before any is reconciled.
    fn predict_sweep(&mut self) -> Out {
        let group = |m: &Model, pick: &dyn Fn(&MAttempt) -> bool| {
            let mut v: Vec<usize> = (0..m.attempts.len())
                .filter(|&i| pick(&m.attempts[i]))
                .collect();
            v.sort_by(|&x, &y| {
                let (a, b) = (&m.attempts[x], &m.attempts[y]);
                a.created_at
                    .cmp(&b.created_at)
                    .then_with(|| a.id.cmp(&b.id))
            });
            v
        };
        let unknown = group(self, &|a| is_unknown(a.st.status));
        let returned = group(self, &|a| {
            a.st.status == AttemptStatus::AuthorityValidated && a.st.submissions > 0
        });
        let settled = group(self, &|a| {
            matches!(
                a.st.status,
                AttemptStatus::Authorized
                    | AttemptStatus::PartiallyCaptured
                    | AttemptStatus::Captured
                    | AttemptStatus::PartiallyRefunded
            ) && a.st.submissions > 0
        });
        let mut out = Vec::new();
        for ai in unknown {
            let _ = self.reconcile(ai);
            out.push(self.attempts[ai].st.status);
        }
        for ai in returned {
            let _ = self.psp_call(Op::Lookup);
            out.push(self.attempts[ai].st.status);
        }
        for ai in settled {
            let _ = self.reconcile(ai);
            out.push(self.attempts[ai].st.status);
        }
        // Submissions failed without a PSP reference are looked up again for a day (a PSP
        // processing past its deadline is voided); the fake PSP never has money for them.
        let now = self.now;
        let failed = group(self, &|a| {
            a.st.status == AttemptStatus::Failed
                && !a.st.has_ref
                && a.st.submissions > 0
                && now < a.submitted_at + Duration::hours(24)
        });
        for _ in failed {
            let _ = self.psp_call(Op::Lookup);
        }
        Out::Swept(out)
    }

    fn predict_buyer(&mut self, ai: usize, approved: bool) -> Out {
        let Some(p) = self.attempts[ai].pay else {
            return Out::Buyer(false);
        };
        let pay = &mut self.pays[p];
        if pay.status != ProviderStatus::RequiresAction {
            return Out::Buyer(false);
        }
        if !approved {
            pay.status = ProviderStatus::Declined;
            return Out::Buyer(true);
        }
        pay.authorized = pay.requested;
        self.total_authorized += pay.requested;
        *self.authorizations.entry(ai).or_insert(0) += 1;
        if pay.capture {
            pay.status = ProviderStatus::Captured;
            pay.captured = pay.requested;
            self.total_captured += pay.requested;
        } else {
            pay.status = ProviderStatus::Authorized;
        }
        Out::Buyer(true)
    }
}

// ---------------------------------------------------------------------------------------------
// Turning generated commands into engine commands, running them, checking.
// ---------------------------------------------------------------------------------------------

enum Action {
    Skip,
    Advance(Duration),
    Buyer(usize, bool),
    Reconcile(usize),
    Sweep,
    Cards(usize, bool),
    Send(Box<Sent>),
}

fn amount_of(amt: Amt, base: i64) -> Option<Money> {
    match amt {
        Amt::Full => None,
        Amt::Part(pct) => Some(eur((base * i64::from(pct) / 100).max(1))),
        Amt::Over => Some(eur(base + 1)),
    }
}

impl Model {
    /// An attempt: one that `fits` when `strict` (none: skip the command), else any.
    fn pick(&self, index: &Index, strict: bool, fits: impl Fn(&MAttempt) -> bool) -> Option<usize> {
        let candidates: Vec<usize> = (0..self.attempts.len())
            .filter(|&i| !strict || fits(&self.attempts[i]))
            .collect();
        (!candidates.is_empty()).then(|| candidates[index.index(candidates.len())])
    }

    fn build(&mut self, w: &World, cmd: &Cmd) -> (Action, Option<Fault>) {
        use AttemptStatus as S;
        let send = |s: Sent| Action::Send(Box::new(s));
        match cmd {
            Cmd::Advance { minutes } => (
                Action::Advance(Duration::minutes(i64::from(*minutes))),
                None,
            ),
            Cmd::CreateRoot { slot, actor, caps } => {
                let c = CreateMandate::new(
                    self.fresh_key(),
                    spec(
                        usize::from(*slot),
                        None,
                        usize::from(*actor),
                        caps,
                        root_expiry(usize::from(*slot)),
                    ),
                );
                (send(Sent::Create(buyer_p(), c)), None)
            }
            Cmd::Derive {
                slot,
                parent,
                any_parent,
                actor,
                shrink,
                widen,
                by,
            } => {
                let slot = usize::from(*slot);
                let parents: Vec<usize> = (0..slot)
                    .filter(|&p| *any_parent || self.mandates[p].is_some())
                    .collect();
                let parent_slot = parents[parent.index(parents.len())];
                let (parent_actor, pc, parent_expires) = match &self.mandates[parent_slot] {
                    Some(m) => (m.actor, m.caps, m.expires),
                    None => (0, ROOT_DEFAULT, root_expiry(0)),
                };
                let pct = |v: i64, p: u8| (v * i64::from(p) / 100).max(100);
                let mut caps = Caps {
                    max_amount: (pc.max_amount - i64::from(shrink.amount_off) * 100).max(100),
                    lifetime: pct(pc.lifetime, shrink.lifetime_pct),
                    window_amount: pct(pc.window_amount, shrink.window_pct),
                    window_count: pc
                        .window_count
                        .saturating_sub(u32::from(shrink.count_off))
                        .max(1),
                    max_uses: pc
                        .max_uses
                        .map(|u| u.saturating_sub(u32::from(shrink.uses_off)).max(1)),
                    partial_capture: pc.partial_capture && shrink.partial,
                };
                if *widen {
                    caps.lifetime = pc.lifetime + 100;
                }
                let by = match by {
                    0 => buyer_p(),
                    1 => Principal::Agent(agent(parent_actor).id),
                    _ => Principal::Agent(agent((parent_actor + 1) % AGENTS.len()).id),
                };
                let c = DeriveMandate::new(
                    self.fresh_key(),
                    spec(
                        slot,
                        Some(parent_slot),
                        usize::from(*actor),
                        &caps,
                        parent_expires,
                    ),
                );
                (send(Sent::Derive(by, c)), None)
            }
            Cmd::Revoke { slot, any, by } => {
                let slots: Vec<usize> = if *any {
                    (0..SLOTS).collect()
                } else {
                    self.existing_slots()
                };
                let slot = slots[slot.index(slots.len())];
                let actor = self.mandates[slot].as_ref().map_or(0, |m| m.actor);
                let by = match by {
                    0 => buyer_p(),
                    1 => Principal::Agent(agent(actor).id),
                    2 => Principal::Agent(agent((actor + 1) % AGENTS.len()).id),
                    _ => operator_p(),
                };
                let c = ChangeMandate::new(
                    self.fresh_key(),
                    mandate_id(slot),
                    LifecycleEvent::Revoke {
                        reason: "model revocation".parse().expect("reason"),
                    },
                );
                (send(Sent::Change(by, c)), None)
            }
            Cmd::Cards { actor, revoke } => (Action::Cards(usize::from(*actor), *revoke), None),
            Cmd::Suspend { party, suspended } => {
                let party = match usize::from(*party) {
                    i if i < AGENTS.len() => Party::Actor(agent(i).id),
                    _ => Party::Buyer(examples::buyer()),
                };
                let c = SetSuspension::new(
                    self.fresh_key(),
                    party.clone(),
                    *suspended,
                    "model kill switch".parse().expect("reason"),
                );
                // The kill switch: an operator, or the buyer for themself.
                let by = match &party {
                    Party::Buyer(_) if *suspended => buyer_p(),
                    _ => operator_p(),
                };
                (send(Sent::Suspend(by, c)), None)
            }
            Cmd::Execute {
                mandate,
                snap,
                capture,
                wrong_actor,
                invalid_checkout,
                fault,
            } => {
                let slots = self.existing_slots();
                let slot = slots[mandate.index(slots.len())];
                let leaf_actor = self.mandate(slot).actor;
                let actor = if *wrong_actor {
                    (leaf_actor + 1) % AGENTS.len()
                } else {
                    leaf_actor
                };
                let snapshot = &w.snaps[usize::from(*snap)];
                let request = PaymentRequest {
                    actor: agent(actor),
                    buyer_id: examples::buyer(),
                    mandate_id: mandate_id(slot),
                    action: PaymentAction::Authorize,
                    merchant_id: snapshot.merchant().merchant_id.clone(),
                    snapshot_id: snapshot.id(),
                    amount: snapshot.total(),
                    urgency: None,
                };
                let checkout = if *invalid_checkout {
                    examples::invalid_checkout()
                } else {
                    examples::valid_checkout(snapshot.id())
                };
                let c = ExecutePayment::new(
                    self.fresh_key(),
                    request,
                    snapshot.clone(),
                    checkout,
                    self.card(actor).clone(),
                )
                .with_capture(*capture);
                // The agent paying asks for itself (a wrong actor is a decision's refusal).
                let by = Principal::Agent(agent(actor).id);
                (send(Sent::Execute(by, c)), fault.clone())
            }
            Cmd::Capture {
                attempt,
                strict,
                amount,
                fault,
            } => {
                let Some(ai) = self.pick(attempt, *strict, |a| a.st.status == S::Authorized) else {
                    return (Action::Skip, None);
                };
                let a = &self.attempts[ai];
                let (actor, attempt_id) = (agent(a.actor), a.id.clone());
                let amount = amount_of(*amount, a.st.authorized);
                let c = CapturePayment::new(self.fresh_key(), attempt_id).with_amount(amount);
                (
                    send(Sent::Capture(Principal::Agent(actor.id), c)),
                    fault.clone(),
                )
            }
            Cmd::Void {
                attempt,
                strict,
                by,
                fault,
            } => {
                let Some(ai) = self.pick(attempt, *strict, |a| {
                    matches!(a.st.status, S::Authorized | S::RequiresBuyerAction)
                }) else {
                    return (Action::Skip, None);
                };
                let a = &self.attempts[ai];
                let by = asker(*by, a.actor);
                let attempt_id = a.id.clone();
                let c = VoidPayment::new(self.fresh_key(), attempt_id);
                (send(Sent::Void(by, c)), fault.clone())
            }
            Cmd::Refund {
                attempt,
                strict,
                amount,
                by,
                fault,
            } => {
                let Some(ai) = self.pick(attempt, *strict, |a| {
                    matches!(
                        a.st.status,
                        S::Captured | S::PartiallyCaptured | S::PartiallyRefunded
                    )
                }) else {
                    return (Action::Skip, None);
                };
                let a = &self.attempts[ai];
                let (by, attempt_id) = (asker(*by, a.actor), a.id.clone());
                let amount = amount_of(*amount, a.st.captured - a.st.refunded);
                let c = RefundPayment::new(self.fresh_key(), attempt_id).with_amount(amount);
                (send(Sent::Refund(by, c)), fault.clone())
            }
            Cmd::Commit {
                attempt,
                strict,
                valid,
                by_other,
                fault,
            } => {
                let Some(ai) = self.pick(attempt, *strict, |a| {
                    matches!(
                        a.st.status,
                        S::Authorized | S::PartiallyCaptured | S::Captured
                    ) && a.order.is_none()
                }) else {
                    return (Action::Skip, None);
                };
                let a = &self.attempts[ai];
                let by = if *by_other {
                    asker(2 + (a.snap % 2) as u8 * 2, a.actor)
                } else {
                    asker(a.snap as u8 % 2 * 3, a.actor)
                };
                let checkout = if *valid {
                    examples::valid_checkout(self.snap_ids[a.snap])
                } else {
                    examples::invalid_checkout()
                };
                let attempt_id = a.id.clone();
                let c = CommitOrder::new(self.fresh_key(), attempt_id, checkout);
                (send(Sent::Commit(by, c)), fault.clone())
            }
            Cmd::Reconcile {
                attempt,
                strict,
                fault,
            } => match self.pick(attempt, *strict, |a| is_unknown(a.st.status)) {
                Some(ai) => (Action::Reconcile(ai), fault.clone()),
                None => (Action::Skip, None),
            },
            Cmd::Sweep { fault } => (Action::Sweep, fault.clone()),
            Cmd::BuyerAction { attempt, approved } => {
                let Some(ai) = self.pick(attempt, true, |a| {
                    a.pay
                        .is_some_and(|p| self.pays[p].status == ProviderStatus::RequiresAction)
                }) else {
                    return (Action::Skip, None);
                };
                if self.attempts[ai].pay.is_none() {
                    return (Action::Skip, None);
                }
                (Action::Buyer(ai, *approved), None)
            }
            Cmd::Retry {
                pick,
                mutate,
                fault,
            } => {
                if self.history.is_empty() {
                    return (Action::Skip, None);
                }
                let sent = self.history[pick.index(self.history.len())].clone();
                let sent = match mutate {
                    None => sent,
                    Some(m) => self.mutated(w, sent, *m),
                };
                (send(sent), fault.clone())
            }
        }
    }

    /// The principal of the attempt's actor.
    fn actor_of(&self, attempt: &AttemptId) -> Principal {
        let a = &self.attempts[self.attempt_index(attempt)];
        Principal::Agent(a.request.actor.id.clone())
    }

    /// The attempt's actor, its buyer or an operator (void, refund, order commitment).
    fn may_settle(&self, by: &Principal, attempt: &AttemptId) -> bool {
        *by == self.actor_of(attempt) || *by == buyer_p() || by.is_operator()
    }

    /// The same key with other content.
    fn mutated(&self, w: &World, sent: Sent, m: u8) -> Sent {
        match sent {
            Sent::Create(by, mut c) => {
                let lifetime = c.spec.scope.budgets.lifetime.expect("lifetime");
                c.spec.scope.budgets.lifetime = Some(eur(lifetime.minor_units() + 100));
                Sent::Create(by, c)
            }
            Sent::Derive(by, mut c) => {
                let lifetime = c.spec.scope.budgets.lifetime.expect("lifetime");
                c.spec.scope.budgets.lifetime = Some(eur(lifetime.minor_units() - 1));
                Sent::Derive(by, c)
            }
            Sent::Change(by, mut c) => {
                c.event = LifecycleEvent::Revoke {
                    reason: "another reason".parse().expect("reason"),
                };
                Sent::Change(by, c)
            }
            Sent::Suspend(by, mut c) => {
                c.suspended = !c.suspended;
                Sent::Suspend(by, c)
            }
            Sent::Execute(by, mut c) => {
                if m.is_multiple_of(2) {
                    c.capture = !c.capture;
                } else {
                    let i = self
                        .snap_ids
                        .iter()
                        .position(|s| *s == c.request.snapshot_id)
                        .expect("snapshot");
                    let s = &w.snaps[(i + 1) % SNAPS.len()];
                    c.request.snapshot_id = s.id();
                    c.request.amount = s.total();
                    if let CheckoutState::Valid { snapshot_id, .. } = &mut c.checkout {
                        *snapshot_id = s.id();
                    }
                    c.snapshot = s.clone();
                }
                Sent::Execute(by, c)
            }
            Sent::Capture(by, mut c) => {
                c.amount = match c.amount {
                    None => Some(eur(100)),
                    Some(_) => None,
                };
                Sent::Capture(by, c)
            }
            Sent::Void(by, c) => {
                // The same key from another principal: its own scope, so a fresh command.
                let by = if by == buyer_p() {
                    operator_p()
                } else {
                    buyer_p()
                };
                Sent::Void(by, c)
            }
            Sent::Refund(by, mut c) => {
                c.amount = match c.amount {
                    None => Some(eur(100)),
                    Some(_) => None,
                };
                Sent::Refund(by, c)
            }
            Sent::Commit(by, mut c) => {
                c.checkout = match c.checkout {
                    CheckoutState::Valid { .. } => examples::invalid_checkout(),
                    _ => {
                        let ai = self.attempt_index(&c.attempt_id);
                        examples::valid_checkout(self.snap_ids[self.attempts[ai].snap])
                    }
                };
                Sent::Commit(by, c)
            }
        }
    }

    /// Runs one step: the engine, then the model, then every invariant.
    async fn step(&mut self, w: &World, n: usize, cmd: &Cmd) {
        let (action, fault) = self.build(w, cmd);
        let what = match &action {
            Action::Send(s) => s.brief(),
            _ => String::new(),
        };
        let ctx = format!("step {n} {cmd:?} {what}");
        w.psp.clear_faults();
        if let Some(f) = &fault {
            w.psp.inject(None, f.clone());
        }
        self.fault = fault;
        let engine = &w.engine;
        let actual = match &action {
            Action::Skip => Out::Skip,
            Action::Advance(d) => {
                w.mem.clock.advance(*d);
                Out::Advanced
            }
            Action::Buyer(ai, approved) => {
                let p = self.attempts[*ai].pay.expect("payment");
                let reference = self.pays[p].reference.clone();
                Out::Buyer(w.psp.complete_buyer_action(&reference, *approved).is_some())
            }
            Action::Reconcile(ai) => match engine.reconcile(&self.attempts[*ai].id).await {
                Ok(a) => Out::Attempt(a.status),
                Err(e) => Out::Err(err_kind(&e)),
            },
            Action::Sweep => match engine.reconcile_pending(1000).await {
                Ok(all) => Out::Swept(all.iter().map(|a| a.status).collect()),
                Err(e) => Out::Err(err_kind(&e)),
            },
            Action::Cards(actor, true) => {
                match engine
                    .revoke_credentials(&operator_p(), &agent(*actor).id)
                    .await
                {
                    Ok(n) => Out::Revoked(n),
                    Err(e) => Out::Err(err_kind(&e)),
                }
            }
            Action::Cards(actor, false) => {
                let issued = key(&format!("card-{actor}-{}", self.cards[*actor].len()));
                match engine
                    .store_credential(&buyer_p(), &issued, card(&agent(*actor).id, "pm_card_visa"))
                    .await
                {
                    Ok(stored) => {
                        self.cards[*actor].push((stored.value.reference, false));
                        Out::Issued
                    }
                    Err(e) => Out::Err(err_kind(&e)),
                }
            }
            Action::Send(sent) => self.call(w, sent, &ctx).await,
        };
        let expected = match &action {
            Action::Skip => Out::Skip,
            Action::Advance(d) => {
                self.now += *d;
                Out::Advanced
            }
            Action::Buyer(ai, approved) => self.predict_buyer(*ai, *approved),
            Action::Reconcile(ai) => match self.reconcile(*ai) {
                Ok(()) => Out::Attempt(self.attempts[*ai].st.status),
                Err(k) => Out::Err(k),
            },
            Action::Sweep => self.predict_sweep(),
            Action::Cards(actor, true) => {
                let mut n = 0;
                for (_, revoked) in &mut self.cards[*actor] {
                    n += u32::from(!*revoked);
                    *revoked = true;
                }
                Out::Revoked(n)
            }
            Action::Cards(_, false) => Out::Issued,
            Action::Send(sent) => self.predict(sent),
        };
        assert_eq!(
            actual, expected,
            "{ctx}: the engine's answer (left) differs from the model's (right)"
        );
        count(cmd, &actual);
        assert_eq!(
            w.psp.queued_faults(),
            usize::from(self.fault.is_some()),
            "{ctx}: the PSP calls differ from the model's (the fault was {} taken)",
            if self.fault.is_some() { "not" } else { "" }
        );
        w.psp.clear_faults();
        self.fault = None;
        if let Action::Send(sent) = action {
            self.history.push(*sent);
        }
        self.check(w, &ctx).await;
    }

    async fn call(&self, w: &World, sent: &Sent, ctx: &str) -> Out {
        let e = &w.engine;
        let payment = |r: Result<PaymentOutcome, EngineError>| async move {
            if let Ok(o) = &r
                && let Some(a) = o.attempt()
            {
                let stored = w.store().attempt(&a.id).await.expect("store");
                assert_eq!(
                    stored.as_ref(),
                    Some(a),
                    "{ctx}: the attempt returned is not the stored one"
                );
            }
            payment_out(&r)
        };
        match sent {
            Sent::Create(by, c) => recorded_out(&e.create_mandate(by, c).await),
            Sent::Derive(by, c) => recorded_out(&e.derive_mandate(by, c).await),
            Sent::Change(by, c) => recorded_out(&e.change_mandate(by, c).await),
            Sent::Suspend(by, c) => recorded_out(&e.set_suspension(by, c).await),
            Sent::Execute(by, c) => payment(e.execute_payment(by, c).await).await,
            Sent::Capture(by, c) => payment(e.capture(by, c).await).await,
            Sent::Void(by, c) => payment(e.void(by, c).await).await,
            Sent::Refund(by, c) => payment(e.refund(by, c).await).await,
            Sent::Commit(by, c) => match e.commit_order(by, c).await {
                Ok(OrderOutcome::Committed { order, .. }) => {
                    Out::Order(OrderOut::Committed(order.amount.minor_units()))
                }
                Ok(OrderOutcome::Existing { .. }) => Out::Order(OrderOut::Existing),
                Ok(OrderOutcome::Failed { recovery, .. }) => Out::Order(OrderOut::Failed {
                    operation: recovery.operation,
                    status: recovery.attempt.status,
                    error: recovery.error.is_some(),
                }),
                Ok(other) => panic!("an outcome the model does not know: {other:?}"),
                Err(err) => Out::Err(err_kind(&err)),
            },
        }
    }

    /// Every invariant, and the engine's state against the model's.
    async fn check(&mut self, w: &World, ctx: &str) {
        use AttemptStatus as S;
        let store = w.store();
        let now = w.mem.clock.now();
        assert_eq!(now, self.now, "{ctx}: clock");

        // I1, at the moment of each PSP call.
        let violations = w.guard.take_violations();
        assert!(violations.is_empty(), "{ctx}: {violations:#?}");

        // I9.
        if let Err(e) = agent_mandate::ports::AuditSink::verify(&*w.mem.audit).await {
            panic!("{ctx}: I9: the audit chain does not verify: {e}");
        }
        let events = w.mem.audit.events();
        for e in &events[self.audit_seen..] {
            let event = e
                .event()
                .unwrap_or_else(|err| panic!("{ctx}: I9: unreadable event {}: {err}", e.seq));
            if let AuditKind::Decision {
                command,
                outcome: Outcome::Allowed,
                attempt_id: Some(a),
                ..
            } = event.kind
                && command == "execute_payment"
            {
                self.allowed_execute.insert(a);
            }
        }
        self.audit_seen = events.len();

        // I1: every authorization the PSP recorded follows an allowed execute decision.
        for effect in w.psp.effects() {
            if effect.op == Op::Authorize {
                let attempt = effect
                    .key
                    .as_str()
                    .strip_suffix("-authorize")
                    .and_then(|s| s.parse::<AttemptId>().ok());
                assert!(
                    attempt.is_some_and(|a| self.allowed_execute.contains(&a)),
                    "{ctx}: I1: the PSP authorized {} under key {} without an allowed execute \
                     decision for its attempt",
                    effect.amount,
                    effect.key
                );
            }
        }

        // The PSP saw exactly the calls the model expects.
        for op in [Op::Authorize, Op::Capture, Op::Void, Op::Refund, Op::Lookup] {
            assert_eq!(
                w.psp.calls(op),
                self.calls.get(&op).copied().unwrap_or(0),
                "{ctx}: PSP calls of {op:?}"
            );
        }

        // Money: the PSP's payments are the model's; never captured more than authorized.
        let payments = w.psp.payments();
        assert_eq!(payments.len(), self.pays.len(), "{ctx}: PSP payments");
        for (p, m) in payments.iter().zip(&self.pays) {
            let seen = (
                p.reference.as_ref(),
                &p.status,
                p.authorized.minor_units(),
                p.captured.minor_units(),
                p.refunded.minor_units(),
            );
            let want = (
                Some(&m.reference),
                &m.status,
                m.authorized,
                m.captured,
                m.refunded,
            );
            assert_eq!(seen, want, "{ctx}: PSP payment (left) vs model (right)");
        }
        let (authorized, captured, refunded) = (
            w.psp.total_authorized(Currency::EUR),
            w.psp.total_captured(Currency::EUR),
            w.psp.total_refunded(Currency::EUR),
        );
        assert!(
            captured <= authorized && refunded <= captured,
            "{ctx}: money: authorized {authorized}, captured {captured}, refunded {refunded}"
        );
        assert_eq!(
            (authorized, captured, refunded),
            (
                self.total_authorized,
                self.total_captured,
                self.total_refunded
            ),
            "{ctx}: money: PSP totals (left) vs model (right)"
        );

        // I3: one attempt per key, at most one authorization per attempt.
        let stored = store
            .attempts_in(&AttemptStatus::ALL, 100_000)
            .await
            .expect("store");
        assert_eq!(
            stored.len(),
            self.attempts.len(),
            "{ctx}: I3: attempts in the store vs the model"
        );
        for (ai, a) in self.attempts.iter().enumerate() {
            let s = store
                .attempt(&a.id)
                .await
                .expect("store")
                .unwrap_or_else(|| panic!("{ctx}: attempt {} missing", a.id));
            let reference = a
                .pay
                .filter(|_| a.st.has_ref)
                .map(|p| &self.pays[p].reference);
            let seen = St {
                status: s.status,
                authorized: s.authorized.minor_units(),
                captured: s.captured.minor_units(),
                refunded: s.refunded.minor_units(),
                refunds: s.refunds,
                submissions: s.submissions,
                pending: s.pending,
                has_ref: s.provider_ref.is_some(),
            };
            assert_eq!(
                seen, a.st,
                "{ctx}: attempt {} (left: store, right: model)",
                a.id
            );
            assert_eq!(
                s.provider_ref.as_ref(),
                reference,
                "{ctx}: attempt {} reference",
                a.id
            );
            assert_eq!(s.request, a.request, "{ctx}: attempt {} request", a.id);
            assert_eq!(
                s.capture_on_authorize, a.capture,
                "{ctx}: attempt {} capture",
                a.id
            );
            assert!(
                s.captured.minor_units() <= s.authorized.minor_units()
                    && s.authorized.minor_units() <= s.request.amount.minor_units()
                    && s.refunded.minor_units() <= s.captured.minor_units(),
                "{ctx}: money: attempt {} amounts {:?}",
                a.id,
                seen
            );
            let key = ProviderKey::new(format!("{}-authorize", a.id)).expect("key");
            let n = w.psp.authorizations_for(&key);
            assert!(n <= 1, "{ctx}: I3: {n} authorizations for {key}");
            assert_eq!(
                n,
                self.authorizations.get(&ai).copied().unwrap_or(0),
                "{ctx}: I3: authorizations for {key}"
            );

            // I2 / I5: each hold is where the attempt's state says.
            for (i, h) in a.holds.iter().enumerate() {
                let rec = store
                    .hold(&h.id)
                    .await
                    .expect("store")
                    .unwrap_or_else(|| panic!("{ctx}: I2: hold {} missing", h.id));
                let want = a.hold_state(i);
                let seen = match rec.state {
                    HoldState::Held => HState::Held,
                    HoldState::Committed => HState::Committed(rec.committed.minor_units()),
                    HoldState::Released => HState::Released,
                };
                let name = if a.st.status == S::Ambiguous {
                    "I5"
                } else {
                    "I2"
                };
                assert_eq!(
                    seen, want,
                    "{ctx}: {name}: hold {} of attempt {} ({:?})",
                    h.id, a.id, a.st
                );
                assert_eq!(rec.amount.minor_units(), h.amount, "{ctx}: I2: hold amount");
                let leaf_first: Vec<MandateId> =
                    h.chain.iter().rev().map(|&s| mandate_id(s)).collect();
                assert_eq!(rec.mandate_ids, leaf_first, "{ctx}: I2: hold levels");
                if let HState::Committed(_) = want {
                    assert_eq!(
                        rec.refunded.minor_units(),
                        a.st.refunded,
                        "{ctx}: I2: refunds recorded on hold {}",
                        h.id
                    );
                }
            }
            if a.st.status == S::Ambiguous && a.st.captured == 0 {
                let last = a.holds.last().expect("a hold");
                let rec = store.hold(&last.id).await.expect("store").expect("hold");
                assert_eq!(
                    rec.state,
                    HoldState::Held,
                    "{ctx}: I5: ambiguous attempt {} lost its hold",
                    a.id
                );
            }

            // I4: at most one order, only for a paid attempt.
            let order = store.order_for(&a.id).await.expect("store");
            assert_eq!(
                order.as_ref().map(|o| o.amount.minor_units()),
                a.order,
                "{ctx}: I4: order of attempt {}",
                a.id
            );

            // Money: a settled attempt agrees with the PSP's payment.
            let psp = s.provider_ref.as_ref().and_then(|r| w.psp.payment(r));
            let consistent = match (s.status, &psp) {
                (S::Authorized, Some(p)) => {
                    p.status == ProviderStatus::Authorized
                        && p.authorized == s.authorized
                        && p.captured.is_zero()
                }
                (
                    S::PartiallyCaptured | S::Captured | S::PartiallyRefunded | S::Refunded,
                    Some(p),
                ) => {
                    p.status == ProviderStatus::Captured
                        && p.captured == s.captured
                        && p.refunded == s.refunded
                }
                (S::Cancelled, Some(p)) => p.status == ProviderStatus::Cancelled,
                (S::Failed, None) => a.pay.is_none(),
                (S::Failed, Some(p)) => p.status == ProviderStatus::Declined,
                (
                    S::Authorized
                    | S::PartiallyCaptured
                    | S::Captured
                    | S::PartiallyRefunded
                    | S::Refunded
                    | S::Cancelled,
                    None,
                ) => false,
                _ => true,
            };
            assert!(
                consistent,
                "{ctx}: money: attempt {} is {} but the PSP has {psp:?}",
                a.id, s.status
            );
        }

        // Mandates, usage and caps (I2), for every mandate and so every ancestor.
        for slot in 0..SLOTS {
            let stored = store.mandate(&mandate_id(slot)).await.expect("store");
            let Some(m) = &self.mandates[slot] else {
                assert!(stored.is_none(), "{ctx}: mandate {slot} should not exist");
                continue;
            };
            let stored = stored.unwrap_or_else(|| panic!("{ctx}: mandate {slot} missing"));
            let want = if m.revoked {
                MandateStatus::Revoked
            } else {
                MandateStatus::Active
            };
            assert_eq!(stored.status(), want, "{ctx}: mandate {slot} status");
            let u = store
                .usage(std::slice::from_ref(&stored), now)
                .await
                .expect("store")
                .remove(0);
            let window = u.window(WINDOW_SECONDS as u64).expect("window usage");
            let seen = MUsage {
                held: u.held.minor_units(),
                spent: u.spent.minor_units(),
                window_amount: window.amount.minor_units(),
                window_count: window.count,
                uses: u.uses,
                attempts: u.attempts,
            };
            assert_eq!(
                seen,
                self.usage(slot),
                "{ctx}: I2: usage of mandate {slot} (left: store, right: model)"
            );
            let c = &m.caps;
            assert!(
                seen.spent + seen.held <= c.lifetime,
                "{ctx}: I2: mandate {slot} spent {} + held {} over its lifetime cap {}",
                seen.spent,
                seen.held,
                c.lifetime
            );
            assert!(
                seen.window_amount <= c.window_amount && seen.window_count <= c.window_count,
                "{ctx}: I2: mandate {slot} window {seen:?} over its caps {c:?}"
            );
            assert!(
                c.max_uses.is_none_or(|max| seen.uses <= max),
                "{ctx}: I2: mandate {slot} used {} times, max {:?}",
                seen.uses,
                c.max_uses
            );
        }

        // The kill switch.
        let ids: Vec<ActorId> = (0..AGENTS.len()).map(|i| agent(i).id).collect();
        let s = store
            .suspensions(&ids, &examples::buyer())
            .await
            .expect("store");
        for (i, id) in ids.iter().enumerate() {
            assert_eq!(s.actor(id), self.suspended[i], "{ctx}: suspension of {id}");
        }
        assert_eq!(
            s.buyer(&examples::buyer()),
            self.buyer_suspended,
            "{ctx}: suspension of the buyer"
        );
    }
}

/// Caps assumed for a parent that does not exist (the derive fails anyway).
const ROOT_DEFAULT: Caps = Caps {
    max_amount: 15_000,
    lifetime: 30_000,
    window_amount: 30_000,
    window_count: 3,
    max_uses: None,
    partial_capture: false,
};

// ---------------------------------------------------------------------------------------------
// Strategies and the property.
// ---------------------------------------------------------------------------------------------

fn caps() -> impl Strategy<Value = Caps> {
    (
        150i64..=200,
        300i64..=1200,
        250i64..=700,
        2u32..=6,
        prop_oneof![3 => Just(None), 1 => (2u32..=6).prop_map(Some)],
        any::<bool>(),
    )
        .prop_map(|(a, l, w, count, uses, partial)| Caps {
            max_amount: a * 100,
            lifetime: l * 100,
            window_amount: w * 100,
            window_count: count,
            max_uses: uses,
            partial_capture: partial,
        })
}

fn fault() -> impl Strategy<Value = Option<Fault>> {
    prop_oneof![
        10 => Just(None),
        1 => Just(Some(Fault::Pass)),
        1 => Just(Some(Fault::TimeoutBeforeEffect)),
        1 => Just(Some(Fault::TimeoutAfterEffect)),
        1 => Just(Some(Fault::LostResponse)),
        1 => Just(Some(Fault::DuplicateDelivery)),
        1 => Just(Some(Fault::Transient)),
        1 => Just(Some(Fault::Invalid)),
        1 => Just(Some(Fault::Decline("card_declined".into()))),
        1 => Just(Some(Fault::UnknownStatus("processing_v7".into()))),
        1 => Just(Some(Fault::RequiresAction)),
    ]
}

fn amt() -> impl Strategy<Value = Amt> {
    prop_oneof![
        3 => Just(Amt::Full),
        2 => (1u8..=99).prop_map(Amt::Part),
        1 => Just(Amt::Over),
    ]
}

fn weighted(w: u32, s: impl Strategy<Value = Cmd> + 'static) -> (u32, BoxedStrategy<Cmd>) {
    (w, s.boxed())
}

fn command() -> impl Strategy<Value = Cmd> {
    let strict = prop_oneof![4 => Just(true), 1 => Just(false)];
    let rarely = || prop_oneof![9 => Just(false), 1 => Just(true)];
    Union::new_weighted(vec![
        weighted(
            30,
            (
                any::<Index>(),
                prop_oneof![3 => 0u8..3, 1 => 3u8..SNAPS.len() as u8],
                any::<bool>(),
                rarely(),
                rarely(),
                fault(),
            )
                .prop_map(
                    |(mandate, snap, capture, wrong_actor, invalid_checkout, fault)| Cmd::Execute {
                        mandate,
                        snap,
                        capture,
                        wrong_actor,
                        invalid_checkout,
                        fault,
                    },
                ),
        ),
        weighted(
            10,
            (any::<Index>(), strict.clone(), amt(), fault()).prop_map(
                |(attempt, strict, amount, fault)| Cmd::Capture {
                    attempt,
                    strict,
                    amount,
                    fault,
                },
            ),
        ),
        weighted(
            5,
            (any::<Index>(), strict.clone(), 0u8..5, fault()).prop_map(
                |(attempt, strict, by, fault)| Cmd::Void {
                    attempt,
                    strict,
                    by,
                    fault,
                },
            ),
        ),
        weighted(
            8,
            (
                any::<Index>(),
                strict.clone(),
                amt(),
                prop_oneof![4 => Just(0u8), 1 => Just(1u8), 1 => Just(2u8), 1 => 3u8..5],
                fault(),
            )
                .prop_map(|(attempt, strict, amount, by, fault)| Cmd::Refund {
                    attempt,
                    strict,
                    amount,
                    by,
                    fault,
                }),
        ),
        weighted(
            8,
            (
                any::<Index>(),
                strict.clone(),
                prop_oneof![4 => Just(true), 1 => Just(false)],
                rarely(),
                fault(),
            )
                .prop_map(|(attempt, strict, valid, by_other, fault)| Cmd::Commit {
                    attempt,
                    strict,
                    valid,
                    by_other,
                    fault,
                }),
        ),
        weighted(
            6,
            (any::<Index>(), strict, fault()).prop_map(|(attempt, strict, fault)| Cmd::Reconcile {
                attempt,
                strict,
                fault,
            }),
        ),
        weighted(2, fault().prop_map(|fault| Cmd::Sweep { fault })),
        weighted(
            3,
            (
                any::<Index>(),
                prop_oneof![3 => Just(true), 1 => Just(false)],
            )
                .prop_map(|(attempt, approved)| Cmd::BuyerAction { attempt, approved }),
        ),
        weighted(
            10,
            (
                any::<Index>(),
                prop_oneof![3 => Just(None), 1 => (0u8..4).prop_map(Some)],
                fault(),
            )
                .prop_map(|(pick, mutate, fault)| Cmd::Retry {
                    pick,
                    mutate,
                    fault,
                }),
        ),
        weighted(
            8,
            prop_oneof![
                3 => 1u32..60,
                3 => 60u32..600,
                1 => 1380u32..1500,
            ]
            .prop_map(|minutes| Cmd::Advance { minutes }),
        ),
        weighted(
            2,
            (0u8..2, 0u8..2, caps()).prop_map(|(slot, actor, caps)| Cmd::CreateRoot {
                slot,
                actor,
                caps,
            }),
        ),
        weighted(
            5,
            (
                (2u8..SLOTS as u8, any::<Index>(), rarely()),
                0u8..AGENTS.len() as u8,
                (
                    0u8..=30,
                    40u8..=100,
                    40u8..=100,
                    0u8..=1,
                    0u8..=1,
                    any::<bool>(),
                ),
                rarely(),
                prop_oneof![2 => Just(1u8), 2 => Just(0u8), 1 => Just(2u8)],
            )
                .prop_map(|((slot, parent, any_parent), actor, s, widen, by)| {
                    Cmd::Derive {
                        slot,
                        parent,
                        any_parent,
                        actor,
                        shrink: Shrink {
                            amount_off: s.0,
                            lifetime_pct: s.1,
                            window_pct: s.2,
                            count_off: s.3,
                            uses_off: s.4,
                            partial: s.5,
                        },
                        widen,
                        by,
                    }
                }),
        ),
        weighted(
            2,
            (
                any::<Index>(),
                rarely(),
                prop_oneof![2 => Just(0u8), 1 => Just(1u8), 1 => Just(2u8), 1 => Just(3u8)],
            )
                .prop_map(|(slot, any, by)| Cmd::Revoke { slot, any, by }),
        ),
        weighted(
            5,
            (
                prop_oneof![6 => 0u8..AGENTS.len() as u8, 1 => Just(AGENTS.len() as u8)],
                prop_oneof![3 => Just(false), 1 => Just(true)],
            )
                .prop_map(|(party, suspended)| Cmd::Suspend { party, suspended }),
        ),
        weighted(
            2,
            (
                0u8..AGENTS.len() as u8,
                prop_oneof![1 => Just(true), 2 => Just(false)],
            )
                .prop_map(|(actor, revoke)| Cmd::Cards { actor, revoke }),
        ),
    ])
}

fn cases() -> u32 {
    std::env::var("MODEL_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000)
}

fn run(root: Caps, restore: bool, commands: &[Cmd]) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let w = World::new(restore).await;
        let mut model = Model::new(&w, restore);
        // Every world starts with root mandate 0 for agent 0.
        let setup = Cmd::CreateRoot {
            slot: 0,
            actor: 0,
            caps: root,
        };
        model.step(&w, 0, &setup).await;
        for (i, c) in commands.iter().enumerate() {
            model.step(&w, i + 1, c).await;
        }
        // The dispute package of every attempt is consistent (its allowed decision, snapshot,
        // amounts, order and audit chain agree).
        for a in &model.attempts {
            let evidence = w
                .engine
                .dispute_evidence(&a.id)
                .await
                .unwrap_or_else(|e| panic!("dispute evidence of {}: {e}", a.id));
            assert_eq!(
                evidence.verdict,
                agent_mandate::engine::DisputeVerdict::Consistent,
                "dispute evidence of {} ({:?}): {:#?}",
                a.id,
                a.st,
                evidence.checks
            );
        }
    });
}

/// Counts of (command, outcome) over a run, printed with `MODEL_STATS=1`.
static STATS: Mutex<Vec<(String, usize)>> = Mutex::new(Vec::new());

fn count(cmd: &Cmd, out: &Out) {
    if std::env::var_os("MODEL_STATS").is_none() {
        return;
    }
    let name = format!("{cmd:?}");
    let name = name.split([' ', '{']).next().unwrap_or_default();
    let out = format!("{out:?}");
    let out: String = out.chars().take(60).collect();
    let label = format!("{name:<12} {out}");
    let mut stats = STATS.lock().unwrap_or_else(|e| e.into_inner());
    match stats.iter_mut().find(|(l, _)| *l == label) {
        Some((_, n)) => *n += 1,
        None => stats.push((label, 1)),
    }
}

#[test]
fn the_engine_behaves_like_the_model() {
    let config = ProptestConfig {
        cases: cases(),
        source_file: Some(file!()),
        failure_persistence: Some(Box::new(
            proptest::test_runner::FileFailurePersistence::WithSource("proptest-regressions"),
        )),
        ..ProptestConfig::default()
    };
    let mut runner = proptest::test_runner::TestRunner::new(config);
    let strategy = (
        caps(),
        any::<bool>(),
        prop::collection::vec(command(), 1..40),
    );
    let result = runner.run(&strategy, |(root, restore, commands)| {
        run(root, restore, &commands);
        Ok(())
    });
    if std::env::var_os("MODEL_STATS").is_some() {
        let mut stats = STATS.lock().unwrap_or_else(|e| e.into_inner()).clone();
        stats.sort();
        for (label, n) in stats {
            eprintln!("{n:>7}  {label}");
        }
    }
    if let Err(e) = result {
        panic!("{e}");
    }
}

// ---------------------------------------------------------------------------------------------
// Minimal reproductions of the engine bugs this model found, kept as regression tests (both
// fixed: the engine answers `IdempotencyConflict` and `NotPermitted`).
// ---------------------------------------------------------------------------------------------

/// After a transient PSP failure the key is free again; the same key with another payment (here
/// another snapshot, EUR 153.00 instead of 144.00) must be `IdempotencyConflict` (I3). The
/// engine instead resumes the old attempt with the new request: the PSP authorizes EUR 153.00
/// for an attempt recorded as EUR 144.00, the attempt is ambiguous and can never be reconciled
/// (the report "is inconsistent with the attempt"), so its hold is stuck; and the original
/// command, retried, is now a conflict.
#[tokio::test]
async fn regression_same_key_other_payment_after_transient() {
    let mut spec = backpack_spec(true);
    spec.scope.amount.max_amount = eur(20_000);
    spec.scope.budgets.per_transaction = Some(eur(20_000));
    let w = common::engine::world_with(EngineConfig::default(), spec).await;
    w.psp.inject(Some(Op::Authorize), Fault::Transient);
    let first = w.execute("pay-1");
    let err = w
        .engine
        .execute_payment(&payer(&first), &first)
        .await
        .unwrap_err();
    assert!(err.is_retryable(), "{err}");

    let mut other = w.execute("pay-1");
    other.snapshot = examples::over_limit_snapshot();
    other.request = examples::authorize_request(&other.snapshot);
    other.checkout = examples::valid_checkout(other.snapshot.id());
    let out = w.engine.execute_payment(&payer(&other), &other).await;
    let authorized = w.psp.total_authorized(Currency::EUR);
    assert!(
        matches!(out, Err(EngineError::IdempotencyConflict { .. })),
        "I3: the same key with another payment ran: {out:?}; the PSP authorized {authorized} \
         cents"
    );
    assert_eq!(
        w.psp.calls(Op::Authorize),
        1,
        "nothing more reached the PSP"
    );
}

/// Only the attempt's actor or a human may void it, and a refund needs an allowed refund
/// decision; yet an order committed by any other agent is refused (`ACTOR_NOT_AUTHORIZED`) and
/// the refusal starts the recovery: the stranger's `commit_order` refunds the captured payment.
#[tokio::test]
async fn regression_a_stranger_commit_order_refunds_nothing() {
    let w = common::engine::world().await;
    let mut cmd = w.execute("pay-1");
    cmd.capture = true;
    let paid = w.engine.execute_payment(&payer(&cmd), &cmd).await.unwrap();
    let attempt = paid.attempt().expect("attempt").clone();
    assert_eq!(attempt.status, AttemptStatus::Captured);
    let stranger = Actor {
        id: "agent_stranger".parse().expect("id"),
        kind: ActorKind::Agent,
    };
    let out = w
        .engine
        .commit_order(
            &who(&stranger),
            &CommitOrder::new(
                key("order-1"),
                attempt.id.clone(),
                examples::valid_checkout(w.snapshot.id()),
            ),
        )
        .await;
    assert_eq!(
        w.psp.total_refunded(Currency::EUR),
        0,
        "a stranger's commit_order moved money: {out:?}"
    );
    assert!(
        matches!(out, Err(EngineError::NotPermitted { .. })),
        "{out:?}"
    );
}
