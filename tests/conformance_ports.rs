//! The port conformance suites on the in-memory adapters and the fake PSP, the fake PSP's
//! faults (I3), and tamper detection on the memory audit sink (I9).
#![cfg(feature = "testkit")]

use std::sync::Arc;

use agent_mandate::adapters::memory::{ManualClock, MemoryAuditSink, MemoryVault};
use agent_mandate::domain::{
    ActorId, AttemptId, AuditEvent, AuditKind, BuyerId, ChainFault, CredentialRef, Currency,
    IdempotencyKey, MerchantId, Money, ProviderKey, ProviderRef, ProviderStatus, SnapshotId,
};
use agent_mandate::ports::{
    AuditError, AuditSink, AuthorizeRequest, CaptureRequest, Clock, CredentialDisplay,
    CredentialKind, CredentialVault, FundingType, Lookup, NewCredential, PaymentProvider,
    ProviderError, RefundRequest, Secret, VoidRequest,
};
use agent_mandate::testkit::{
    audit_sink_conformance, credential_vault_conformance, payment_provider_conformance, FakePsp,
    Fault, Op, ProviderCapabilities, ProviderFixture,
};
use chrono::{DateTime, Duration, TimeZone, Utc};

fn t(y: i32, m: u32, d: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, m, d, 12, 0, 0).unwrap()
}

fn eur(minor: i64) -> Money {
    Money::from_minor(minor, Currency::EUR).unwrap()
}

fn event(n: u32) -> AuditEvent {
    AuditEvent {
        at: t(2026, 6, 28) + Duration::seconds(i64::from(n)),
        kind: AuditKind::OrderFailed {
            attempt_id: AttemptId::new(format!("att_{n}")).unwrap(),
            reason: format!("reason {n}"),
        },
    }
}

// ---------------------------------------------------------------- audit (I9)

#[tokio::test]
async fn audit_suite_passes_on_memory_sink_fresh_and_continued() {
    let sink = MemoryAuditSink::new();
    audit_sink_conformance(&sink).await;
    // Continues from the current head.
    audit_sink_conformance(&sink).await;
    assert_eq!(sink.head().await.unwrap().unwrap().seq, 16);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn audit_concurrent_appends_are_serialised() {
    let sink = Arc::new(MemoryAuditSink::new());
    let mut tasks = Vec::new();
    for task in 0..8u32 {
        let sink = Arc::clone(&sink);
        tasks.push(tokio::spawn(async move {
            for i in 0..50u32 {
                sink.append(&event(task * 1000 + i)).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let head = sink.verify().await.unwrap().unwrap();
    assert_eq!(head.seq, 400);
    let seqs: Vec<u64> = sink.events().iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=400).collect::<Vec<_>>());
}

async fn sink_with(n: u32) -> MemoryAuditSink {
    let sink = MemoryAuditSink::new();
    let events: Vec<AuditEvent> = (1..=n).map(event).collect();
    sink.append_all(&events).await.unwrap();
    assert!(sink.verify().await.is_ok());
    sink
}

fn broken(
    result: Result<Option<agent_mandate::ports::AuditReceipt>, AuditError>,
) -> (u64, u64, ChainFault) {
    match result {
        Err(AuditError::Broken(b)) => (b.seq, b.expected_seq, b.fault),
        other => panic!("I9: verify must report a broken chain, got {other:?}"),
    }
}

#[tokio::test]
async fn i9_edited_body_is_named() {
    let sink = sink_with(6).await;
    assert!(sink.tamper_edit_body(4, event(99).to_body()));
    assert_eq!(broken(sink.verify().await), (4, 4, ChainFault::Edited));
}

#[tokio::test]
async fn i9_edited_first_and_last_events_are_named() {
    let sink = sink_with(3).await;
    assert!(sink.tamper_edit_body(1, "{}"));
    assert_eq!(broken(sink.verify().await), (1, 1, ChainFault::Edited));
    let sink = sink_with(3).await;
    assert!(sink.tamper_edit_body(3, "{}"));
    assert_eq!(broken(sink.verify().await), (3, 3, ChainFault::Edited));
}

#[tokio::test]
async fn i9_dropped_event_is_named() {
    let sink = sink_with(6).await;
    assert!(sink.tamper_remove(3));
    // The event after the gap carries 4 where 3 was expected.
    assert_eq!(broken(sink.verify().await), (4, 3, ChainFault::Missing));
    let sink = sink_with(6).await;
    assert!(sink.tamper_remove(1));
    assert_eq!(broken(sink.verify().await), (2, 1, ChainFault::Missing));
}

#[tokio::test]
async fn i9_swapped_events_are_named() {
    let sink = sink_with(6).await;
    assert!(sink.tamper_swap(2, 5));
    // Position 2 now holds event 5.
    assert_eq!(broken(sink.verify().await), (5, 2, ChainFault::Missing));
    let sink = sink_with(6).await;
    assert!(sink.tamper_swap(3, 4));
    assert_eq!(broken(sink.verify().await), (4, 3, ChainFault::Missing));
}

#[tokio::test]
async fn i9_renumbered_and_relinked_forgeries_are_named() {
    // An attacker who drops event 3 and renumbers 4.. (without the hashes) is caught as an edit.
    let sink = sink_with(5).await;
    let mut events = sink.events();
    events.remove(2);
    for e in events.iter_mut().skip(2) {
        e.seq -= 1;
    }
    let err =
        agent_mandate::domain::verify_chain(&events, 1, agent_mandate::domain::AuditHash::GENESIS)
            .unwrap_err();
    assert_eq!((err.seq, err.fault), (3, ChainFault::Edited));
}

#[tokio::test]
async fn tamper_helpers_report_unknown_events() {
    let sink = sink_with(2).await;
    assert!(!sink.tamper_edit_body(9, "{}"));
    assert!(!sink.tamper_remove(9));
    assert!(!sink.tamper_swap(1, 9));
    assert!(sink.verify().await.is_ok());
    assert!(format!("{sink:?}").contains("events: 2"));
}

#[tokio::test]
async fn audit_read_edges() {
    let sink = sink_with(3).await;
    assert_eq!(
        sink.read(0, 10).await.unwrap().len(),
        3,
        "from 0 reads from the start"
    );
    assert!(sink.read(u64::MAX, 10).await.unwrap().is_empty());
    assert!(MemoryAuditSink::new().head().await.unwrap().is_none());
    assert_eq!(MemoryAuditSink::new().verify().await.unwrap(), None);
}

// ---------------------------------------------------------------- vault (I10, I11)

#[tokio::test]
async fn vault_suite_passes_on_memory_vault() {
    let vault = MemoryVault::new();
    credential_vault_conformance(&vault, t(2026, 6, 28)).await;
    // Again on the same vault, and at year boundaries.
    credential_vault_conformance(&vault, t(2026, 1, 1)).await;
    credential_vault_conformance(&vault, t(2026, 12, 31)).await;
}

fn store_key(name: &str) -> IdempotencyKey {
    IdempotencyKey::new(format!("store-{name}")).unwrap()
}

fn credential(owner: &str, secret: &str) -> NewCredential {
    NewCredential {
        kind: CredentialKind::PaymentMethod,
        owner: ActorId::new(owner).unwrap(),
        buyer_id: BuyerId::new("buyer_1").unwrap(),
        secret: Secret::new(secret),
        cvc: None,
        display: CredentialDisplay {
            brand: "visa".into(),
            last4: "4242".into(),
            exp_month: 12,
            exp_year: 2030,
            funding: FundingType::Credit,
        },
    }
}

#[tokio::test]
async fn memory_vault_references_are_opaque_and_debug_is_redacted() {
    let vault = MemoryVault::new();
    let a = vault
        .store(&store_key("1"), credential("agent_1", "pm_secret_value_1"))
        .await
        .unwrap()
        .credential;
    let b = vault
        .store(&store_key("2"), credential("agent_1", "pm_secret_value_2"))
        .await
        .unwrap()
        .credential;
    // Random: `cred_` and 128 bits as hex, nothing sequential.
    for r in [&a.reference, &b.reference] {
        let hex = r.as_str().strip_prefix("cred_").unwrap();
        assert!(
            hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_hexdigit()),
            "{r}"
        );
    }
    assert_ne!(a.reference, b.reference);
    let debug = format!(
        "{vault:?} {a:?} {:?}",
        vault.resolve(&a.reference, t(2026, 1, 1)).await
    );
    assert!(!debug.contains("pm_secret_value"), "I10: {debug}");
    let mut cvc = credential("agent_1", "pm_x");
    cvc.cvc = Some(Secret::new(""));
    assert!(matches!(
        vault.store(&store_key("3"), cvc).await,
        Err(agent_mandate::ports::VaultError::Invalid { field: "cvc" })
    ));
}

// ---------------------------------------------------------------- clock

#[test]
fn manual_clock_moves_only_when_told() {
    let start = t(2026, 6, 28);
    let clock = ManualClock::new(start);
    assert_eq!(clock.now(), start);
    assert_eq!(clock.now(), start);
    assert_eq!(
        clock.advance(Duration::hours(1)),
        start + Duration::hours(1)
    );
    clock.advance_std(std::time::Duration::from_millis(1500));
    assert_eq!(
        clock.now(),
        start + Duration::hours(1) + Duration::milliseconds(1500)
    );
    clock.advance(Duration::hours(-2));
    assert!(clock.now() < start);
    clock.set(start);
    assert_eq!(clock.now(), start);
    // Saturates instead of overflowing.
    clock.advance(Duration::MAX);
    clock.advance_std(std::time::Duration::MAX);
    assert_eq!(
        clock.now(),
        DateTime::<Utc>::MAX_UTC - Duration::nanoseconds(999)
    );
    clock.advance(Duration::MIN);
    clock.advance(Duration::MIN);
    assert!(clock.now() <= DateTime::<Utc>::MIN_UTC + Duration::seconds(1));
    let shared: Arc<dyn Clock> = Arc::new(ManualClock::new(start));
    assert_eq!(shared.now(), start);
}

// ---------------------------------------------------------------- PSP suite

#[tokio::test]
async fn provider_suite_passes_on_fake_psp_without_vault() {
    for currency in [Currency::EUR, Currency::JPY, Currency::BHD] {
        let psp = FakePsp::new();
        let fixture = ProviderFixture::for_fake_psp(currency, "suite");
        let report =
            payment_provider_conformance(&psp, &fixture, &ProviderCapabilities::default()).await;
        assert!(report.skipped.is_empty(), "{report:?}");
        assert_eq!(report.passed.len(), 10);
        // Twice on the same PSP: fresh keys every run.
        payment_provider_conformance(&psp, &fixture, &ProviderCapabilities::default()).await;
        for p in psp.payments() {
            assert!(p.reference.is_some());
        }
    }
}

#[tokio::test]
async fn provider_suite_passes_on_fake_psp_with_vault() {
    let vault = Arc::new(MemoryVault::new());
    let clock = Arc::new(ManualClock::new(t(2026, 6, 28)));
    let store = |secret: &'static str| {
        let vault = Arc::clone(&vault);
        async move {
            vault
                .store(&store_key(secret), credential("agent_1", secret))
                .await
                .unwrap()
                .credential
                .reference
        }
    };
    let good = store("tok_visa").await;
    let declining = store("tok_chargeDeclined").await;
    let three_ds = store("pm_card_threeDSecure2Required").await;
    let psp = FakePsp::with_vault_and_clock(vault.clone(), clock.clone());
    let fixture = ProviderFixture {
        good,
        declining,
        three_ds: Some(three_ds),
        ..ProviderFixture::for_fake_psp(Currency::USD, "vault")
    };
    let report =
        payment_provider_conformance(&psp, &fixture, &ProviderCapabilities::default()).await;
    assert!(report.skipped.is_empty(), "{report:?}");
    assert!(!format!("{psp:?}").contains("tok_"));

    // Reduced capabilities skip or shrink checks.
    let caps = ProviderCapabilities {
        honors_idempotency_keys: false,
        partial_capture: false,
        partial_refunds: false,
        lookup_by_key: false,
        refuses_illegal_transitions: false,
    };
    let fixture = ProviderFixture {
        three_ds: None,
        ..fixture
    };
    let report = payment_provider_conformance(&psp, &fixture, &caps).await;
    assert_eq!(
        report.skipped,
        vec![
            "psp_three_ds",
            "psp_idempotent_authorize",
            "psp_illegal_transitions"
        ]
    );
}

#[tokio::test]
#[should_panic(expected = "PSP rule psp_decline_is_data")]
async fn provider_suite_names_the_broken_rule() {
    // A "PSP" whose declining credential authorizes breaks the decline rule.
    let psp = FakePsp::new();
    let mut fixture = ProviderFixture::for_fake_psp(Currency::EUR, "broken");
    fixture.declining = CredentialRef::new("cred_good").unwrap();
    payment_provider_conformance(&psp, &fixture, &ProviderCapabilities::default()).await;
}

// ---------------------------------------------------------------- fake PSP faults (I3)

fn authorize_request(key: &str, credential: &str, amount: i64, capture: bool) -> AuthorizeRequest {
    AuthorizeRequest {
        key: ProviderKey::new(key).unwrap(),
        attempt_id: AttemptId::new(format!("att-{key}")).unwrap(),
        amount: eur(amount),
        credential: CredentialRef::new(credential).unwrap(),
        capture,
        snapshot_id: SnapshotId::from_bytes([1; 32]),
        merchant_id: MerchantId::new("merchant_1").unwrap(),
        buyer_id: BuyerId::new("buyer_1").unwrap(),
    }
}

fn capture_request(key: &str, reference: &ProviderRef, amount: i64) -> CaptureRequest {
    CaptureRequest {
        key: ProviderKey::new(key).unwrap(),
        reference: reference.clone(),
        attempt_id: AttemptId::new("att").unwrap(),
        amount: eur(amount),
    }
}

fn refund_request(key: &str, reference: &ProviderRef, amount: i64) -> RefundRequest {
    RefundRequest {
        key: ProviderKey::new(key).unwrap(),
        reference: reference.clone(),
        attempt_id: AttemptId::new("att").unwrap(),
        amount: eur(amount),
    }
}

fn void_request(key: &str, reference: &ProviderRef) -> VoidRequest {
    VoidRequest {
        key: ProviderKey::new(key).unwrap(),
        reference: reference.clone(),
        attempt_id: AttemptId::new("att").unwrap(),
    }
}

fn is_ambiguous<T: std::fmt::Debug>(r: &Result<T, ProviderError>) -> bool {
    matches!(r, Err(ProviderError::Ambiguous { .. }))
}

#[tokio::test]
async fn i3_transient_has_no_effect_and_retry_authorizes_once() {
    let psp = FakePsp::new();
    let req = authorize_request("k1", "cred_ok", 1000, false);
    psp.inject(Some(Op::Authorize), Fault::Transient);
    let r = psp.authorize(&req).await;
    assert!(matches!(&r, Err(e) if e.is_retryable()), "{r:?}");
    assert!(psp.payments().is_empty());
    assert_eq!(
        psp.lookup(&Lookup::Key(req.key.clone())).await.unwrap(),
        None
    );
    let r = psp.authorize(&req).await.unwrap();
    assert_eq!(r.status, ProviderStatus::Authorized);
    assert_eq!(psp.authorizations_for(&req.key), 1);
    assert_eq!(psp.calls(Op::Authorize), 2);
}

#[tokio::test]
async fn i3_timeout_before_effect_is_ambiguous_without_effect() {
    let psp = FakePsp::new();
    let req = authorize_request("k1", "cred_ok", 1000, false);
    psp.inject(None, Fault::TimeoutBeforeEffect);
    assert!(is_ambiguous(&psp.authorize(&req).await));
    assert_eq!(
        psp.lookup(&Lookup::Key(req.key.clone())).await.unwrap(),
        None
    );
    assert_eq!(psp.authorizations_for(&req.key), 0);
    psp.authorize(&req).await.unwrap();
    assert_eq!(psp.authorizations_for(&req.key), 1);
}

#[tokio::test]
async fn i3_timeout_after_effect_and_lost_response_apply_once_and_retries_dedupe() {
    for fault in [Fault::TimeoutAfterEffect, Fault::LostResponse] {
        let psp = FakePsp::new();
        let req = authorize_request("k1", "cred_ok", 1000, false);
        psp.inject(Some(Op::Authorize), fault.clone());
        assert!(is_ambiguous(&psp.authorize(&req).await), "{fault:?}");
        let seen = psp
            .lookup(&Lookup::Key(req.key.clone()))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(seen.status, ProviderStatus::Authorized);
        // The engine may also retry with the same key: one authorization.
        let again = psp.authorize(&req).await.unwrap();
        assert_eq!(again.reference, seen.reference);
        assert_eq!(psp.authorizations_for(&req.key), 1, "{fault:?}");
        assert_eq!(psp.total_authorized(Currency::EUR), 1000);

        // Same for a capture and a refund: the effect happens once.
        let reference = seen.reference.unwrap();
        let cap = capture_request("k1-capture", &reference, 600);
        psp.inject(Some(Op::Capture), fault.clone());
        assert!(is_ambiguous(&psp.capture(&cap).await));
        assert_eq!(psp.payment(&reference).unwrap().captured, eur(600));
        assert_eq!(psp.capture(&cap).await.unwrap().captured, eur(600));
        assert_eq!(psp.total_captured(Currency::EUR), 600);
        let refund = refund_request("k1-refund-1", &reference, 100);
        psp.inject(Some(Op::Refund), fault.clone());
        assert!(is_ambiguous(&psp.refund(&refund).await));
        assert_eq!(psp.refund(&refund).await.unwrap().refunded, eur(100));
        assert_eq!(psp.total_refunded(Currency::EUR), 100);
    }
}

#[tokio::test]
async fn i3_duplicate_delivery_has_one_effect() {
    let psp = FakePsp::new();
    let req = authorize_request("k1", "cred_ok", 1000, true);
    psp.inject(Some(Op::Authorize), Fault::DuplicateDelivery);
    let r = psp.authorize(&req).await.unwrap();
    assert_eq!(r.status, ProviderStatus::Captured);
    assert_eq!(psp.authorizations_for(&req.key), 1);
    assert_eq!(psp.payments().len(), 1);
    assert_eq!(psp.calls(Op::Authorize), 1);
    assert_eq!(psp.total_captured(Currency::EUR), 1000);
    let reference = r.reference.unwrap();
    psp.inject(Some(Op::Refund), Fault::DuplicateDelivery);
    let r = psp
        .refund(&refund_request("k1-refund-1", &reference, 300))
        .await
        .unwrap();
    assert_eq!(r.refunded, eur(300));
    assert_eq!(psp.total_refunded(Currency::EUR), 300);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn i3_concurrent_same_key_authorizes_once() {
    let vault = Arc::new(MemoryVault::new());
    let cred = vault
        .store(&store_key("visa"), credential("agent_1", "tok_visa"))
        .await
        .unwrap()
        .credential
        .reference;
    let psp = Arc::new(FakePsp::with_vault(vault));
    psp.set_plan(vec![Fault::DuplicateDelivery; 8]);
    let req = authorize_request("k-race", cred.as_str(), 1000, false);
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let (psp, req) = (Arc::clone(&psp), req.clone());
        tasks.push(tokio::spawn(
            async move { psp.authorize(&req).await.unwrap() },
        ));
    }
    let mut refs = Vec::new();
    for t in tasks {
        refs.push(t.await.unwrap().reference);
    }
    refs.dedup();
    assert_eq!(refs.len(), 1);
    assert_eq!(psp.authorizations_for(&req.key), 1);
    assert_eq!(psp.payments().len(), 1);
}

#[tokio::test]
async fn same_key_other_request_is_invalid_and_executes_nothing() {
    let psp = FakePsp::new();
    let req = authorize_request("k1", "cred_ok", 1000, false);
    let first = psp.authorize(&req).await.unwrap();
    let other = authorize_request("k1", "cred_ok", 999, false);
    assert!(matches!(
        psp.authorize(&other).await,
        Err(ProviderError::Invalid { .. })
    ));
    // A key is one request across operations.
    let reference = first.reference.unwrap();
    assert!(matches!(
        psp.capture(&capture_request("k1", &reference, 1000)).await,
        Err(ProviderError::Invalid { .. })
    ));
    assert_eq!(psp.payments().len(), 1);
    assert_eq!(psp.effects().len(), 1);
}

#[tokio::test]
async fn unknown_status_has_no_effect() {
    let psp = FakePsp::new();
    let req = authorize_request("k1", "cred_ok", 1000, false);
    psp.inject(None, Fault::UnknownStatus("processing".into()));
    let r = psp.authorize(&req).await.unwrap();
    assert_eq!(r.status, ProviderStatus::Unknown("processing".into()));
    assert!(r.authorized.is_zero());
    assert_eq!(
        psp.lookup(&Lookup::Key(req.key.clone())).await.unwrap(),
        None
    );

    let reference = psp.authorize(&req).await.unwrap().reference.unwrap();
    psp.inject(
        Some(Op::Capture),
        Fault::UnknownStatus("pending_capture".into()),
    );
    let r = psp
        .capture(&capture_request("k1-capture", &reference, 1000))
        .await
        .unwrap();
    assert_eq!(r.status, ProviderStatus::Unknown("pending_capture".into()));
    assert_eq!((r.authorized, r.captured), (eur(1000), eur(0)));
    assert_eq!(
        psp.payment(&reference).unwrap().status,
        ProviderStatus::Authorized
    );
    assert_eq!(psp.total_captured(Currency::EUR), 0);

    psp.inject(Some(Op::Lookup), Fault::UnknownStatus("weird".into()));
    let seen = psp
        .lookup(&Lookup::Reference(reference.clone()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(seen.status, ProviderStatus::Unknown("weird".into()));
    // An unknown status for a payment the PSP does not have is refused.
    psp.inject(Some(Op::Void), Fault::UnknownStatus("x".into()));
    let missing = ProviderRef::new("pi_missing").unwrap();
    assert!(matches!(
        psp.void(&void_request("v", &missing)).await,
        Err(ProviderError::Invalid { .. })
    ));
}

#[tokio::test]
async fn injected_decline_and_requires_action_are_data() {
    let psp = FakePsp::new();
    let req = authorize_request("k1", "cred_ok", 1000, false);
    psp.inject(
        Some(Op::Authorize),
        Fault::Decline("insufficient_funds".into()),
    );
    let r = psp.authorize(&req).await.unwrap();
    assert_eq!(r.status, ProviderStatus::Declined);
    assert_eq!(r.decline_code.as_deref(), Some("insufficient_funds"));
    assert!(r.reference.is_some());
    assert_eq!(
        psp.lookup(&Lookup::Key(req.key.clone())).await.unwrap(),
        Some(r.clone())
    );
    assert_eq!(psp.authorizations_for(&req.key), 0);
    // The replay returns the stored decline.
    assert_eq!(psp.authorize(&req).await.unwrap(), r);

    let req = authorize_request("k2", "cred_ok", 1000, true);
    psp.inject(Some(Op::Authorize), Fault::RequiresAction);
    let r = psp.authorize(&req).await.unwrap();
    assert_eq!(r.status, ProviderStatus::RequiresAction);
    assert!(r.authorized.is_zero());
    let reference = r.reference.unwrap();
    let done = psp.complete_buyer_action(&reference, true).unwrap();
    assert_eq!(
        (done.status, done.captured),
        (ProviderStatus::Captured, eur(1000))
    );
    assert_eq!(psp.authorizations_for(&req.key), 1);
    assert_eq!(psp.complete_buyer_action(&reference, true), None);

    let req = authorize_request("k3", "cred_3ds", 1000, false);
    let reference = psp.authorize(&req).await.unwrap().reference.unwrap();
    let failed = psp.complete_buyer_action(&reference, false).unwrap();
    assert_eq!(failed.status, ProviderStatus::Declined);
    assert_eq!(psp.authorizations_for(&req.key), 0);

    // On other operations these faults are refusals, without effect.
    let reference = psp
        .authorize(&authorize_request("k4", "cred_ok", 1000, false))
        .await
        .unwrap()
        .reference
        .unwrap();
    for fault in [
        Fault::Decline("x".into()),
        Fault::RequiresAction,
        Fault::Invalid,
    ] {
        psp.inject(Some(Op::Capture), fault);
        assert!(matches!(
            psp.capture(&capture_request("k4-capture", &reference, 1000))
                .await,
            Err(ProviderError::Invalid { .. })
        ));
    }
    assert_eq!(
        psp.payment(&reference).unwrap().status,
        ProviderStatus::Authorized
    );
}

#[tokio::test]
async fn faults_target_operations_and_plans_run_in_order() {
    let psp = FakePsp::new();
    psp.inject(Some(Op::Capture), Fault::Transient);
    let r = psp
        .authorize(&authorize_request("k1", "cred_ok", 1000, false))
        .await
        .unwrap();
    assert_eq!(
        psp.queued_faults(),
        1,
        "the capture fault waits for a capture"
    );
    let reference = r.reference.unwrap();
    let cap = capture_request("k1-capture", &reference, 1000);
    assert!(matches!(
        psp.capture(&cap).await,
        Err(ProviderError::Transient { .. })
    ));
    assert_eq!(psp.queued_faults(), 0);

    psp.set_plan(vec![Fault::Pass, Fault::Invalid, Fault::TimeoutAfterEffect]);
    assert!(psp
        .lookup(&Lookup::Reference(reference.clone()))
        .await
        .unwrap()
        .is_some());
    assert!(matches!(
        psp.capture(&cap).await,
        Err(ProviderError::Invalid { .. })
    ));
    assert!(matches!(
        psp.lookup(&Lookup::Reference(reference.clone())).await,
        Err(ProviderError::Transient { .. })
    ));
    psp.inject(None, Fault::Transient);
    psp.clear_faults();
    assert_eq!(psp.capture(&cap).await.unwrap().captured, eur(1000));
    assert_eq!(psp.calls(Op::Capture), 3);
    assert_eq!(psp.calls(Op::Lookup), 2);
    assert_eq!(psp.calls(Op::Void), 0);
}

#[tokio::test]
async fn illegal_operations_are_invalid_and_change_nothing() {
    let psp = FakePsp::new();
    let r = psp
        .authorize(&authorize_request("k1", "cred_ok", 1000, false))
        .await
        .unwrap();
    let reference = r.reference.unwrap();
    let invalid = |r: Result<_, ProviderError>| matches!(r, Err(ProviderError::Invalid { .. }));
    assert!(invalid(
        psp.capture(&capture_request("c0", &reference, 0)).await
    ));
    assert!(invalid(
        psp.capture(&capture_request("c1", &reference, 1001)).await
    ));
    assert!(invalid(
        psp.refund(&refund_request("r1", &reference, 1)).await
    ));
    let mut usd = capture_request("c2", &reference, 10);
    usd.amount = Money::from_minor(10, Currency::USD).unwrap();
    assert!(invalid(psp.capture(&usd).await));
    assert!(invalid(
        psp.authorize(&authorize_request("k0", "cred_ok", 0, false))
            .await
    ));
    psp.capture(&capture_request("c3", &reference, 400))
        .await
        .unwrap();
    assert!(
        invalid(psp.capture(&capture_request("c4", &reference, 100)).await),
        "one capture"
    );
    assert!(invalid(psp.void(&void_request("v1", &reference)).await));
    assert!(invalid(
        psp.refund(&refund_request("r2", &reference, 401)).await
    ));
    psp.refund(&refund_request("r3", &reference, 400))
        .await
        .unwrap();
    assert!(invalid(
        psp.refund(&refund_request("r4", &reference, 1)).await
    ));
    let seen = psp.payment(&reference).unwrap();
    assert_eq!(
        (seen.authorized, seen.captured, seen.refunded),
        (eur(1000), eur(400), eur(400))
    );
}

#[tokio::test]
async fn vault_backed_psp_refuses_unusable_credentials() {
    let vault = Arc::new(MemoryVault::new());
    let clock = Arc::new(ManualClock::new(t(2026, 6, 28)));
    let psp = FakePsp::with_vault_and_clock(vault.clone(), clock.clone());
    let good = vault
        .store(&store_key("visa"), credential("agent_1", "tok_visa"))
        .await
        .unwrap()
        .credential
        .reference;
    let invalid = |r: Result<_, ProviderError>| matches!(r, Err(ProviderError::Invalid { .. }));
    assert!(invalid(
        psp.authorize(&authorize_request("u", "cred_unknown", 100, false))
            .await
    ));
    clock.set(t(2031, 1, 1));
    assert!(invalid(
        psp.authorize(&authorize_request("e", good.as_str(), 100, false))
            .await
    ));
    clock.set(t(2026, 6, 28));
    vault.revoke(&good).await.unwrap();
    let refused = psp
        .authorize(&authorize_request("r", good.as_str(), 100, false))
        .await;
    assert!(invalid(refused.clone()));
    assert!(!format!("{refused:?}").contains("tok_visa"), "I10");
    assert!(psp.payments().is_empty());
    for (secret, status) in [
        ("pm_card_chargeCustomerFail", ProviderStatus::Declined),
        ("tok_threeDSecure", ProviderStatus::RequiresAction),
        ("pm_card_visa", ProviderStatus::Authorized),
    ] {
        let cred = vault
            .store(&store_key(secret), credential("agent_2", secret))
            .await
            .unwrap()
            .credential
            .reference;
        let r = psp
            .authorize(&authorize_request(
                &format!("k-{secret}"),
                cred.as_str(),
                100,
                false,
            ))
            .await
            .unwrap();
        assert_eq!(r.status, status, "{secret}");
    }
}

// ------------------------------------------- audit segments and checkpoints (I9)

mod segments {
    use super::*;
    use agent_mandate::domain::{AuditHash, AuditSubject, WindowFault, CHECKPOINT_INTERVAL};
    use agent_mandate::testkit::audit_segment_conformance;

    const K: u64 = CHECKPOINT_INTERVAL;

    fn target() -> AttemptId {
        AttemptId::new("att_target").unwrap()
    }

    /// `3K + 50` events; the target attempt's at `K + 10` and `K + 100` (second window).
    async fn trail() -> MemoryAuditSink {
        let sink = MemoryAuditSink::new();
        let events: Vec<AuditEvent> = (1..=3 * K + 50)
            .map(|i| {
                if i == K + 10 || i == K + 100 {
                    AuditEvent {
                        at: t(2026, 6, 28),
                        kind: AuditKind::OrderFailed {
                            attempt_id: target(),
                            reason: format!("target {i}"),
                        },
                    }
                } else {
                    event(u32::try_from(i).unwrap())
                }
            })
            .collect();
        sink.append_all(&events).await.unwrap();
        assert_eq!(
            sink.checkpoints().iter().map(|c| c.seq).collect::<Vec<_>>(),
            vec![K, 2 * K, 3 * K]
        );
        sink
    }

    async fn fault(sink: &MemoryAuditSink) -> Option<WindowFault> {
        sink.segment(&AuditSubject::Attempt(target()))
            .await
            .unwrap()
            .fault
    }

    #[tokio::test]
    async fn segment_suite_passes_on_memory_sink() {
        let sink = MemoryAuditSink::new();
        audit_segment_conformance(&sink).await;
        audit_sink_conformance(&sink).await;
        audit_segment_conformance(&sink).await;
    }

    #[tokio::test]
    async fn segment_reads_only_the_window_around_the_attempt() {
        let sink = trail().await;
        let seg = sink
            .segment(&AuditSubject::Attempt(target()))
            .await
            .unwrap();
        assert_eq!(seg.fault, None);
        assert_eq!(
            seg.events.iter().map(|e| e.seq).collect::<Vec<_>>(),
            vec![K + 10, K + 100]
        );
        assert_eq!(seg.verified, vec![(K + 1, 2 * K)]);
    }

    #[tokio::test]
    async fn i9_an_edit_inside_the_attempts_window_is_named() {
        // The attempt's own event, and another event of its window.
        for seq in [K + 10, K + 50] {
            let sink = trail().await;
            assert!(sink.tamper_edit_body(seq, event(9999).to_body()));
            let Some(WindowFault::Chain(b)) = fault(&sink).await else {
                panic!("an edit at {seq} must be found")
            };
            assert_eq!((b.seq, b.fault), (seq, ChainFault::Edited));
            assert!(sink.verify().await.is_err());
        }
    }

    #[tokio::test]
    async fn i9_a_dropped_event_of_the_window_is_named() {
        let sink = trail().await;
        assert!(sink.tamper_remove(K + 10));
        let Some(WindowFault::Chain(b)) = fault(&sink).await else {
            panic!("a dropped event must be found")
        };
        assert_eq!((b.seq, b.fault), (K + 11, ChainFault::Missing));
    }

    #[tokio::test]
    async fn i9_a_rewrite_relinked_to_the_head_is_caught_by_the_next_checkpoint() {
        let sink = trail().await;
        assert!(sink.tamper_rewrite_from(K + 10, event(9999).to_body()));
        // The events link again from end to end: only the checkpoints see the rewrite.
        assert!(agent_mandate::ports::verify_events(&sink).await.is_ok());
        assert_eq!(
            fault(&sink).await,
            Some(WindowFault::Checkpoint { seq: 2 * K })
        );
        assert!(matches!(
            sink.verify().await,
            Err(AuditError::Checkpoint { seq }) if seq == 2 * K
        ));
    }

    #[tokio::test]
    async fn i9_an_edited_checkpoint_is_named() {
        for reseal in [false, true] {
            let sink = trail().await;
            let other = sink.events()[(K + 5) as usize].hash;
            assert!(sink.tamper_checkpoint(2 * K, other, reseal));
            assert_eq!(
                fault(&sink).await,
                Some(WindowFault::Checkpoint { seq: 2 * K }),
                "reseal {reseal}"
            );
            assert!(matches!(
                sink.verify().await,
                Err(AuditError::Checkpoint { seq }) if seq == 2 * K
            ));
        }
        // The lower checkpoint of the window, edited: the upper one no longer chains to it.
        let sink = trail().await;
        assert!(sink.tamper_checkpoint(K, AuditHash([3; 32]), true));
        assert!(fault(&sink).await.is_some());
    }

    #[tokio::test]
    async fn i9_a_dropped_checkpoint_is_named() {
        let sink = trail().await;
        assert!(sink.tamper_remove_checkpoint(K));
        assert_eq!(
            fault(&sink).await,
            Some(WindowFault::Checkpoint { seq: 2 * K })
        );
        assert!(matches!(
            sink.verify().await,
            Err(AuditError::Checkpoint { .. })
        ));
    }

    #[tokio::test]
    async fn an_edit_outside_the_attempts_windows_is_left_to_the_full_verify() {
        // The segment vouches for its windows only; `verify` still checks everything.
        let sink = trail().await;
        assert!(sink.tamper_edit_body(5, event(9999).to_body()));
        assert_eq!(fault(&sink).await, None);
        assert_eq!(broken(sink.verify().await), (5, 5, ChainFault::Edited));
    }

    #[tokio::test]
    async fn the_provided_segment_reads_and_verifies_the_whole_trail() {
        /// A sink that forwards everything but `segment` and `verify` (the provided bodies).
        #[derive(Debug)]
        struct Plain(MemoryAuditSink);
        #[async_trait::async_trait]
        impl AuditSink for Plain {
            async fn append(
                &self,
                e: &AuditEvent,
            ) -> Result<agent_mandate::ports::AuditReceipt, AuditError> {
                self.0.append(e).await
            }
            async fn read(
                &self,
                from: u64,
                limit: usize,
            ) -> Result<Vec<agent_mandate::domain::ChainedEvent>, AuditError> {
                self.0.read(from, limit).await
            }
            async fn head(&self) -> Result<Option<agent_mandate::ports::AuditReceipt>, AuditError> {
                self.0.head().await
            }
        }
        let plain = Plain(MemoryAuditSink::new());
        audit_sink_conformance(&plain).await;
        audit_segment_conformance(&plain).await;
        let sink = Plain(trail().await);
        let seg = sink
            .segment(&AuditSubject::Attempt(target()))
            .await
            .unwrap();
        assert_eq!(seg.verified, vec![(1, 3 * K + 50)]);
        assert_eq!(seg.events.len(), 2);
        assert!(sink.0.tamper_edit_body(5, "{}"));
        let seg = sink
            .segment(&AuditSubject::Attempt(target()))
            .await
            .unwrap();
        assert!(matches!(seg.fault, Some(WindowFault::Chain(b)) if b.seq == 5));
    }
}
