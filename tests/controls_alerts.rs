//! Alerts: the buyer's (new merchant, 80% thresholds, mandate close to expiry), security's
//! (vault errors, the credentials' kill switch), their delivery (an alert is an audit event;
//! a failing or hanging sink fails and slows no payment; the webhook adapter delivers signed,
//! at least once).

#![cfg(all(feature = "testkit", feature = "http"))]

mod common;
mod controls_support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agent_mandate::adapters::http::{
    verify_signature, DeliveryHeaders, MemoryOutbox, WebhookAlertSink, WebhookConfig, ID_HEADER,
    SIGNATURE_HEADER, TIMESTAMP_HEADER,
};
use agent_mandate::adapters::memory::{MemoryAlerts, MemoryAuditSink};
use agent_mandate::domain::{
    examples, ActorId, Alert, AlertKind, Audience, BlockerCode, CredentialRef, CredentialStatus,
    Outcome,
};
use agent_mandate::engine::{Controls, Engine, EngineConfig, EngineError, PaymentOutcome, Rate};
use agent_mandate::ports::{
    AlertError, AlertSink, CredentialVault, NewCredential, Ports, ResolvedCredential, Secret,
    StoreOutcome, StoredCredential, VaultError,
};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use common::engine::*;
use common::principals::*;
use controls_support::*;

/// A merchant new for the buyer is announced once, to the buyer; the second payment there is
/// not.
#[tokio::test]
async fn new_merchant_alerts_the_buyer_once() {
    let (w, sink) = controlled(Controls::recommended(), Some(3)).await;
    assert!(paid(&run(&w, &pay(&w, "p0")).await));
    assert!(paid(&run(&w, &pay(&w, "p1")).await));
    let alerts = alerts_of(&sink, "new_merchant");
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0].audience, Audience::Buyer);
    assert_eq!(alerts[0].buyer_id, Some(examples::buyer()));
    assert_eq!(
        trail_alerts(&w, "new_merchant").len(),
        1,
        "an alert is an audit event"
    );
}

/// A lifetime limit of 160.00: the first 144.00 crosses 80% and alerts the buyer; with the
/// control off the threshold event is still written, and no alert.
#[tokio::test]
async fn thresholds_alert_the_buyer() {
    for on in [true, false] {
        let controls = Controls::off().with_threshold_alerts(on);
        let config = EngineConfig::default().with_controls(controls);
        let mut spec = backpack_spec(true);
        spec.scope.budgets.lifetime = Some(eur("160.00"));
        let mut w = world_with(config, spec).await;
        let sink = Arc::new(MemoryAlerts::new());
        w.engine = w.engine.clone().with_alerts(sink.clone());
        w.snapshot = day_snapshot();
        assert!(paid(&run(&w, &pay(&w, "p0")).await));
        let alerts = alerts_of(&sink, "threshold");
        assert_eq!(alerts.len(), usize::from(on), "on: {on}: {alerts:?}");
        if on {
            assert_eq!(alerts[0].audience, Audience::Buyer);
        }
    }
}

/// The mandate ends 23 hours after the story's now: a lead of 23 hours announces it (once),
/// a lead one second shorter does not.
#[tokio::test]
async fn mandate_expiry_lead_time() {
    let lead = Duration::from_secs(23 * 3600);
    let (w, sink) = controlled(
        Controls::off()
            .with_expiry_lead(Some(lead - Duration::from_secs(1)))
            .expect("lead"),
        None,
    )
    .await;
    assert!(paid(&run(&w, &pay(&w, "p0")).await));
    assert!(alerts_of(&sink, "mandate_expiring").is_empty());

    let (w, sink) = controlled(
        Controls::off().with_expiry_lead(Some(lead)).expect("lead"),
        None,
    )
    .await;
    assert!(paid(&run(&w, &pay(&w, "p0")).await));
    assert!(paid(&run(&w, &pay(&w, "p1")).await));
    let alerts = alerts_of(&sink, "mandate_expiring");
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0].audience, Audience::Buyer);
    assert!(Controls::off()
        .with_expiry_lead(Some(Duration::ZERO))
        .is_err());
}

/// One call suspends every credential of the agent, for the very next payment; only an
/// operator or a system may; resuming restores them.
#[tokio::test]
async fn kill_switch_for_credentials() {
    let (w, sink) = controlled(Controls::off(), None).await;
    let agent = examples::agent().id;
    for who in [agent_p(), buyer_p()] {
        assert!(matches!(
            w.engine.suspend_credentials(&who, &agent, true).await,
            Err(EngineError::NotPermitted { .. })
        ));
    }
    w.engine
        .suspend_credentials(&operator_p(), &agent, true)
        .await
        .expect("switched off");
    let out = run(&w, &pay(&w, "p0")).await;
    assert!(
        matches!(&out, PaymentOutcome::Refused(d) if d.has(BlockerCode::CredentialNotUsable) && d.outcome == Outcome::Blocked),
        "{out:?}"
    );
    assert_eq!(alerts_of(&sink, "credentials_suspended").len(), 1);
    w.engine
        .suspend_credentials(&system_p(), &agent, false)
        .await
        .expect("switched on");
    assert!(paid(&run(&w, &pay(&w, "p1")).await));
}

/// A vault whose stored credentials fail authentication when `broken` is set.
#[derive(Debug)]
struct BrokenVault {
    inner: Arc<dyn CredentialVault>,
    broken: AtomicBool,
}

#[async_trait]
impl CredentialVault for BrokenVault {
    async fn store(
        &self,
        key: &agent_mandate::domain::IdempotencyKey,
        credential: NewCredential,
    ) -> Result<StoreOutcome, VaultError> {
        self.inner.store(key, credential).await
    }
    async fn describe(&self, reference: &CredentialRef) -> Result<StoredCredential, VaultError> {
        if self.broken.load(Ordering::SeqCst) {
            return Err(VaultError::Integrity {
                reference: reference.clone(),
            });
        }
        self.inner.describe(reference).await
    }
    async fn resolve(
        &self,
        reference: &CredentialRef,
        now: DateTime<Utc>,
    ) -> Result<ResolvedCredential, VaultError> {
        self.inner.resolve(reference, now).await
    }
    async fn status(
        &self,
        reference: &CredentialRef,
        now: DateTime<Utc>,
    ) -> Result<CredentialStatus, VaultError> {
        self.inner.status(reference, now).await
    }
    async fn revoke(&self, reference: &CredentialRef) -> Result<bool, VaultError> {
        self.inner.revoke(reference).await
    }
    async fn revoke_owner(&self, owner: &ActorId) -> Result<u32, VaultError> {
        self.inner.revoke_owner(owner).await
    }
}

/// The first decryption error alerts no one; the second (more than 1 in the hour) alerts
/// security; one an hour later is alone in its window again.
#[tokio::test]
async fn vault_errors_alert_security() {
    let (w, _) = controlled(Controls::off(), None).await;
    let vault = Arc::new(BrokenVault {
        inner: w.mem.ports.vault.clone(),
        broken: AtomicBool::new(true),
    });
    let ports = Ports {
        vault: vault.clone(),
        ..w.mem.ports.clone()
    };
    let controls = Controls::off()
        .with_vault_errors(Some(Rate::new(1, Duration::from_secs(3600)).expect("rate")));
    let sink = Arc::new(MemoryAlerts::new());
    let engine = Engine::new(ports, EngineConfig::default().with_controls(controls))
        .expect("engine")
        .with_alerts(sink.clone());
    let attempt = |k: &'static str| {
        let engine = engine.clone();
        let cmd = pay(&w, k);
        async move { engine.execute_payment(&agent_p(), &cmd).await }
    };
    assert!(matches!(attempt("e0").await, Err(EngineError::Vault(_))));
    assert!(
        alerts_of(&sink, "vault_errors").is_empty(),
        "one error: no alert"
    );
    assert!(matches!(attempt("e1").await, Err(EngineError::Vault(_))));
    let alerts = alerts_of(&sink, "vault_errors");
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].audience, Audience::Security);
    advance(&w, 3600);
    let _ = attempt("e2").await;
    assert_eq!(
        alerts_of(&sink, "vault_errors").len(),
        1,
        "alone in its window"
    );
}

/// A sink that refuses fails no payment: the alert is on the trail and waits; it is handed
/// over at a later flush once the sink works again.
#[tokio::test]
async fn a_failing_sink_fails_no_payment() {
    let (w, sink) = controlled(Controls::recommended(), Some(3)).await;
    sink.set_failing(true);
    assert!(paid(&run(&w, &pay(&w, "p0")).await));
    assert_eq!(trail_alerts(&w, "new_merchant").len(), 1);
    assert!(w.engine.alerts_waiting() >= 1);
    sink.set_failing(false);
    w.engine.flush_audit().await.expect("flush");
    assert_eq!(w.engine.alerts_waiting(), 0);
    assert_eq!(alerts_of(&sink, "new_merchant").len(), 1);
}

/// A sink that never answers: the payment waits at most the enqueue timeout.
#[derive(Debug, Default)]
struct Hanging;

#[async_trait]
impl AlertSink for Hanging {
    async fn enqueue(&self, _: &Alert) -> Result<(), AlertError> {
        std::future::pending().await
    }
}

#[tokio::test]
async fn a_hanging_sink_slows_no_payment_beyond_the_timeout() {
    let controls = Controls::recommended()
        .with_alert_enqueue_timeout(Duration::from_millis(30))
        .expect("timeout");
    let (mut w, _) = controlled(controls, Some(3)).await;
    w.engine = w.engine.clone().with_alerts(Arc::new(Hanging));
    let started = Instant::now();
    assert!(paid(&run(&w, &pay(&w, "p0")).await));
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    // The new merchant and the mandate's expiry (23 h away, lead 24 h): both wait, after a
    // single timeout.
    assert_eq!(w.engine.alerts_waiting(), 2);
}

/// One delivery the receiver got: id, timestamp, signature, body.
type Delivery = (String, String, String, Vec<u8>);

const SECRET: &str = "whsec_YWdlbnQtbWFuZGF0ZSB3ZWJob29rIHRlc3Qga2V5ISE=";

/// The webhook adapter: an alert of a payment reaches the receiver signed, as the alert's
/// audit event; a receiver that is down first gets it later (at least once).
#[tokio::test]
async fn webhook_alerts_are_signed_and_delivered_at_least_once() {
    #[derive(Clone, Default)]
    struct Got(Arc<Mutex<Vec<Delivery>>>, Arc<AtomicBool>);
    async fn hook(
        axum::extract::State(g): axum::extract::State<Got>,
        headers: axum::http::HeaderMap,
        body: axum::body::Bytes,
    ) -> axum::http::StatusCode {
        if g.1.load(Ordering::SeqCst) {
            return axum::http::StatusCode::SERVICE_UNAVAILABLE;
        }
        let h = |n: &str| {
            headers
                .get(n)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        g.0.lock().expect("lock").push((
            h(ID_HEADER),
            h(TIMESTAMP_HEADER),
            h(SIGNATURE_HEADER),
            body.to_vec(),
        ));
        axum::http::StatusCode::NO_CONTENT
    }
    let got = Got::default();
    got.1.store(true, Ordering::SeqCst);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
    let app = axum::Router::new()
        .route("/hook", axum::routing::post(hook))
        .with_state(got.clone());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });

    let (mut w, _) = controlled(Controls::recommended(), Some(3)).await;
    let config = WebhookConfig::new(&url, Secret::new(SECRET))
        .expect("config")
        .with_timeout(Duration::from_secs(2))
        .with_backoff(Duration::from_millis(10), Duration::from_millis(40));
    let sink = WebhookAlertSink::new(
        Arc::new(MemoryAuditSink::new()),
        Arc::new(MemoryOutbox::new()),
        config,
        w.mem.clock.clone(),
    )
    .await
    .expect("sink");
    w.engine = w.engine.clone().with_alerts(Arc::new(sink.clone()));
    assert!(
        paid(&run(&w, &pay(&w, "p0")).await),
        "the receiver is down: the payment is not"
    );
    assert!(
        sink.webhook().deliver_pending().await.is_err(),
        "503: still pending"
    );
    got.1.store(false, Ordering::SeqCst);
    let done = sink.webhook().flush(3).await.expect("delivered");
    // The new merchant and the mandate's expiry (23 h away, lead 24 h).
    assert_eq!(done.delivered, 2);
    let received = got.0.lock().expect("lock").clone();
    assert_eq!(received.len(), 2);
    let (id, ts, sig, body) = &received[0];
    let headers = DeliveryHeaders {
        id,
        timestamp: ts,
        signature: sig,
    };
    let now = agent_mandate::ports::Clock::now(&*w.mem.clock);
    verify_signature(
        &Secret::new(SECRET),
        &headers,
        body,
        now,
        Duration::from_secs(300),
    )
    .expect("signed with the secret");
    let chained: agent_mandate::domain::ChainedEvent =
        serde_json::from_slice(body).expect("a chained event");
    let event = chained.event().expect("an audit event");
    assert!(matches!(
        event.kind,
        agent_mandate::domain::AuditKind::Alert { ref alert }
            if matches!(alert.kind, AlertKind::NewMerchant { .. })
    ));
    assert!(
        !String::from_utf8_lossy(body).contains("pm_card_visa"),
        "no secret"
    );
}
