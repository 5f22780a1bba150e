//! Shared by the `controls_*` tests: an engine on the memory adapters with every control on
//! (or as configured), a memory alert sink, a snapshot valid for a day, and helpers that make
//! the agent violate, pay and fail authentications.

#![allow(
    dead_code,
    reason = "each test binary uses a different subset of the helpers"
)]

use std::sync::Arc;

use agent_mandate::adapters::memory::MemoryAlerts;
use agent_mandate::domain::{
    examples, Alert, AlertKind, AuditKind, CartSnapshot, Confirmation, ConfirmationScope, Money,
    Outcome, PaymentAction, PaymentRequest,
};
use agent_mandate::engine::{Controls, EngineConfig, ExecutePayment, PaymentOutcome};

use crate::common::engine::*;
use crate::common::principals::*;
use crate::common::{at, human, id};

/// A world with `controls` (auto-suspension after consecutive blocks as `consecutive`), a
/// roomy mandate and a memory alert sink.
pub async fn controlled(
    controls: Controls,
    consecutive: Option<u32>,
) -> (World, Arc<MemoryAlerts>) {
    let config = EngineConfig::default()
        .with_auto_suspend_after(consecutive)
        .expect("config")
        .with_controls(controls);
    let mut w = world_with(config, backpack_spec(true)).await;
    let alerts = Arc::new(MemoryAlerts::new());
    w.engine = w.engine.clone().with_alerts(alerts.clone());
    w.snapshot = day_snapshot();
    (w, alerts)
}

/// The story's snapshot, valid until 20:00 (the mandate ends at 08:00 the next day).
pub fn day_snapshot() -> CartSnapshot {
    let mut content = examples::travel_backpack_snapshot().content().clone();
    content.id = None;
    content.expires_at = at(20, 0, 0);
    CartSnapshot::new(content).expect("snapshot")
}

/// The agent's payment of the day snapshot under key `k`, with its declared purchase intent
/// (the recommended controls require one).
pub fn pay(w: &World, k: &str) -> ExecutePayment {
    bare_pay(w, k).with_intent(examples::intent_for(
        &examples::authorize_request(&w.snapshot),
        &w.snapshot,
    ))
}

/// The agent's payment of the day snapshot under key `k`, declaring no intent.
pub fn bare_pay(w: &World, k: &str) -> ExecutePayment {
    ExecutePayment::new(
        key(k),
        examples::authorize_request(&w.snapshot),
        w.snapshot.clone(),
        examples::valid_checkout(w.snapshot.id()),
        w.card.clone(),
    )
}

/// A spending-control violation: the amount is not the snapshot's (`AMOUNT_MISMATCH`, counted
/// toward suspension).
pub fn violation(w: &World, k: &str) -> ExecutePayment {
    let mut cmd = pay(w, k);
    cmd.request.amount = eur("143.00");
    cmd
}

pub async fn run(w: &World, cmd: &ExecutePayment) -> PaymentOutcome {
    w.engine
        .execute_payment(&agent_p(), cmd)
        .await
        .expect("execute answers")
}

pub fn outcome(o: &PaymentOutcome) -> Option<Outcome> {
    match o {
        PaymentOutcome::Refused(d) => Some(d.outcome),
        PaymentOutcome::Done { .. } | PaymentOutcome::Replayed { .. } => None,
        _ => panic!("unexpected outcome {o:?}"),
    }
}

/// Whether the outcome is a payment (not a refusal).
pub fn paid(o: &PaymentOutcome) -> bool {
    matches!(o, PaymentOutcome::Done { .. })
}

pub async fn suspended(w: &World) -> bool {
    let s = w
        .mem
        .ports
        .store
        .suspensions(&[examples::agent().id], &examples::buyer())
        .await
        .expect("suspensions");
    s.actors.contains(&examples::agent().id)
}

/// The alerts of kind `name` the sink took over.
pub fn alerts_of(sink: &MemoryAlerts, name: &str) -> Vec<Alert> {
    sink.alerts()
        .into_iter()
        .filter(|a| a.kind.as_str() == name)
        .collect()
}

/// The alerts of kind `name` on the audit trail.
pub fn trail_alerts(w: &World, name: &str) -> Vec<Alert> {
    w.mem
        .audit
        .events()
        .into_iter()
        .filter_map(|e| e.event().ok())
        .filter_map(|e| match e.kind {
            AuditKind::Alert { alert } if alert.kind.as_str() == name => Some(*alert),
            _ => None,
        })
        .collect()
}

pub fn advance(w: &World, secs: i64) {
    w.mem.clock.advance(chrono::Duration::seconds(secs));
}

/// The buyer's confirmation of the day snapshot (recorded by the buyer).
pub async fn confirm(w: &World, n: u32) {
    let c = Confirmation {
        id: id(&format!("conf_{n}")),
        buyer_id: examples::buyer(),
        confirmed_by: human(),
        confirmed_at: agent_mandate::ports::Clock::now(&*w.mem.clock),
        expires_at: None,
        snapshot_id: w.snapshot.id(),
        scope: ConfirmationScope {
            mandate_id: w.mandate.id().clone(),
            actions: [PaymentAction::Authorize].into_iter().collect(),
            max_amount: eur("144.00"),
        },
        channel_ref: id("push:device_42"),
    };
    w.engine
        .record_confirmation(
            &buyer_p(),
            &agent_mandate::engine::RecordConfirmation::new(key(&format!("conf-{n}")), c),
        )
        .await
        .expect("confirmation recorded");
}

pub fn request(w: &World) -> PaymentRequest {
    examples::authorize_request(&w.snapshot)
}

pub fn money(a: &str) -> Money {
    eur(a)
}

pub fn kind_names(alerts: &[Alert]) -> Vec<&'static str> {
    alerts.iter().map(|a| a.kind.as_str()).collect()
}

pub fn is_kind(a: &Alert, f: impl Fn(&AlertKind) -> bool) -> bool {
    f(&a.kind)
}
