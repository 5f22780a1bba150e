//! Builders shared by the integration tests: the Travel Backpack fixtures of
//! `agent_mandate::domain::examples`, plus ways to bend them into the negative cases.

#![allow(
    dead_code,
    reason = "each test binary uses a different subset of the builders"
)]

#[cfg(all(feature = "sqlite", feature = "testkit"))]
pub mod backends;
#[cfg(feature = "testkit")]
pub mod durable_psp;
#[cfg(feature = "testkit")]
pub mod engine;
pub mod ledger_model;
#[cfg(feature = "postgres")]
pub mod pg_proxy;
pub mod principals;

use std::str::FromStr;

use agent_mandate::domain::examples;
use agent_mandate::domain::{
    evaluate, Actor, ActorId, ActorKind, AuthorityDecision, BlockerCode, CartContent, CartSnapshot,
    Confirmation, ConfirmationScope, Currency, EvaluationDocument, Mandate, MandateId, MandateSpec,
    Money, PaymentAction, Usage,
};
use chrono::{DateTime, TimeZone, Utc};

/// 2026-06-28 at `h:m:s` UTC, the day of the story (`examples::now()` is 09:00:00).
pub fn at(h: u32, m: u32, s: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 6, 28, h, m, s)
        .single()
        .expect("valid time")
}

/// Parses any id newtype.
pub fn id<T: FromStr>(s: &str) -> T
where
    T::Err: std::fmt::Debug,
{
    s.parse().expect("test id")
}

pub fn money(amount: &str, currency: Currency) -> Money {
    Money::parse(amount, currency).expect("test amount")
}

pub fn eur(amount: &str) -> Money {
    money(amount, Currency::EUR)
}

pub fn usd(amount: &str) -> Money {
    money(amount, Currency::USD)
}

/// The buyer in person (the only kind of actor whose confirmation counts).
pub fn human() -> Actor {
    Actor {
        id: id::<ActorId>("human_buyer_456"),
        kind: ActorKind::Human,
    }
}

/// A sub-agent the story's agent delegates to.
pub fn sub_agent() -> Actor {
    Actor {
        id: id::<ActorId>("agent_sub_7"),
        kind: ActorKind::Agent,
    }
}

pub fn decide(doc: &EvaluationDocument) -> AuthorityDecision {
    evaluate(&doc.input())
}

/// Asserts the exact blocker codes, in order, printing the whole decision when they differ.
#[track_caller]
pub fn assert_codes(decision: &AuthorityDecision, expected: &[BlockerCode]) {
    assert_eq!(
        decision.codes(),
        expected,
        "unexpected blockers: {:#?}",
        decision.blockers
    );
}

/// A copy of `m` with its plain data edited (and validated again).
pub fn edit(m: &Mandate, f: impl FnOnce(&mut MandateSpec)) -> Mandate {
    let mut spec = m.spec().clone();
    f(&mut spec);
    Mandate::new(spec).expect("edited mandate is valid")
}

/// Edits the leaf mandate of the document.
pub fn edit_leaf(doc: &mut EvaluationDocument, f: impl FnOnce(&mut MandateSpec)) {
    let leaf = doc.chain.last_mut().expect("a chain");
    *leaf = edit(leaf, f);
}

/// The story's final cart (EUR 144.00) with its content edited.
pub fn snapshot_with(f: impl FnOnce(&mut CartContent)) -> CartSnapshot {
    let mut content = examples::backpack_content("0.00", "15.00", Currency::EUR);
    f(&mut content);
    CartSnapshot::new(content).expect("edited snapshot is valid")
}

/// Replaces the document's snapshot and points the request and the checkout at it (amount,
/// merchant and snapshot id follow the new snapshot).
pub fn use_snapshot(doc: &mut EvaluationDocument, snapshot: CartSnapshot) {
    doc.request.snapshot_id = snapshot.id();
    doc.request.amount = snapshot.total();
    doc.request.merchant_id = snapshot.merchant().merchant_id.clone();
    doc.checkout = examples::valid_checkout(snapshot.id());
    doc.snapshot = snapshot;
}

/// Zero usage for every mandate of the chain, with every window reported.
pub fn zero_usage_for(chain: &[Mandate]) -> Vec<Usage> {
    chain.iter().map(examples::zero_usage).collect()
}

/// Usage of `m` with `window_amount` / `window_count` in each of its windows.
pub fn usage_with(
    m: &Mandate,
    spent: &str,
    held: &str,
    window_amount: &str,
    window_count: u32,
) -> Usage {
    let c = m.currency();
    let mut u = Usage::none_for(m);
    u.spent = money(spent, c);
    u.held = money(held, c);
    for w in &mut u.windows {
        w.amount = money(window_amount, c);
        w.count = window_count;
    }
    u
}

/// A human confirmation that satisfies any rule for the document's request as it stands.
pub fn confirmation_for(doc: &EvaluationDocument) -> Confirmation {
    Confirmation {
        id: id("confirmation_1"),
        buyer_id: doc.request.buyer_id.clone(),
        confirmed_by: human(),
        confirmed_at: at(8, 58, 0),
        expires_at: Some(at(9, 30, 0)),
        snapshot_id: doc.request.snapshot_id,
        scope: ConfirmationScope {
            mandate_id: doc.request.mandate_id.clone(),
            actions: [PaymentAction::Authorize].into_iter().collect(),
            max_amount: doc.request.amount,
        },
        channel_ref: id("push:device_42"),
    }
}

/// The buyer's root mandate (`mandate_root`, held by the story's agent) and a child derived from
/// it for a sub-agent (`mandate_child`), both checked by `Mandate::derive` (I6).
///
/// Root: EUR 150.00 per payment, 24 h window of EUR 300.00 and 10 payments, lifetime EUR
/// 1,000.00, no use limit. Child: the story's mandate (EUR 150.00, 24 h EUR 300.00 / 5
/// payments, lifetime EUR 150.00, one use, three attempts).
pub fn root_and_child() -> (Mandate, Mandate) {
    let base = examples::travel_backpack_mandate();
    let root = edit(&base, |s| {
        s.id = id("mandate_root");
        s.scope.budgets.windows[0].max_count = Some(10);
        s.scope.budgets.lifetime = Some(eur("1000.00"));
        s.scope.max_uses = None;
        s.scope.amount.max_payment_attempts = None;
    });
    let mut child = base.spec().clone();
    child.id = id("mandate_child");
    child.parent_id = Some(root.id().clone());
    child.actor = sub_agent();
    let child = root.derive(child).expect("child is an attenuation of root");
    (root, child)
}

/// The story's final checkout requested by the sub-agent under `mandate_child`, with zero usage
/// on both mandates: evaluates to `allowed`.
pub fn delegated_document() -> EvaluationDocument {
    let (root, child) = root_and_child();
    let mut doc = examples::travel_backpack_document();
    doc.request.actor = sub_agent();
    doc.request.mandate_id = child.id().clone();
    doc.chain = vec![root, child];
    doc.usage = zero_usage_for(&doc.chain);
    doc
}

pub fn mandate_id(s: &str) -> MandateId {
    id(s)
}
