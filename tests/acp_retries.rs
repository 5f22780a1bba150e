//! Retries of a delegation after failures (I3: one key, one effect; DESIGN's "same key + same
//! fingerprint returns the stored result"): a failure or a lost answer at each of the three
//! writes of a delegation (the vault's store, the mandate's insert, the key's completion), a
//! store slower than the lease, a replay after the allowance or the card expired. Each
//! converges to one token, one credential, one mandate, and the audit trail names the
//! platform that delegated (I14).
#![cfg(all(
    feature = "acp",
    feature = "axum",
    feature = "testkit",
    feature = "http"
))]

mod acp_support;

use std::sync::atomic::AtomicBool;

use acp_support::faults::Faults;
use acp_support::*;
use agent_mandate::acp::{credential_of, mandate_for, AcpError};
use agent_mandate::domain::BuyerId;
use agent_mandate::ports::Store as _;
use chrono::Duration;
use serde_json::{json, Value};

const EX: &str = "examples.delegate_payment.json";

fn request() -> Value {
    example(EX, "delegate_payment_request")
}

fn past_the_lease(service: &agent_mandate::acp::AcpService) -> Duration {
    Duration::from_std(service.engine().config().lease()).unwrap() + Duration::seconds(1)
}

#[tokio::test]
async fn acp_retry_after_crash_between_mandate_and_completion_replays() {
    let (memory, faults, service) = faulty_service(|c| c);
    let p = platform_principal();
    Faults::arm(&faults.complete_before);
    let first = delegate_as(&service, &p, "k-crash", &[], &request()).await;
    assert!(
        matches!(first, Err(AcpError::Unavailable { .. })),
        "{first:?}"
    );
    // Within the lease the record is in flight: the retry waits.
    let early = delegate_as(&service, &p, "k-crash", &[], &request()).await;
    assert!(
        matches!(early, Err(AcpError::IdempotencyInFlight { .. })),
        "{early:?}"
    );
    memory.clock.advance(past_the_lease(&service));
    let retry = delegate_as(&service, &p, "k-crash", &[], &request())
        .await
        .expect("the retry answers the delegation, not idempotency_conflict");
    assert!(retry.token.starts_with("vt_"));
    assert_eq!(retry.created, start(), "the first run's time");
    assert_eq!(faults.credentials(), 1, "one vault credential");
    assert_eq!(faults.mandates(), 1, "one mandate");
    let again = delegate_as(&service, &p, "k-crash", &[], &request())
        .await
        .unwrap();
    assert!(again.replayed);
    assert_eq!(again.token, retry.token);
    assert_eq!(again.created, retry.created);
    assert_eq!(faults.credentials(), 1);
    assert_eq!(faults.mandates(), 1);
}

/// A failure before or after each write; the platform retries with the same key (after the
/// lease when the record was left in flight) until it gets its 201.
#[tokio::test]
async fn a_failure_at_each_write_of_a_delegation_converges_to_one_token() {
    type Pick = fn(&Faults) -> &AtomicBool;
    let cases: [(&str, Pick); 6] = [
        ("vault before", |f| &f.vault_before),
        ("vault after (lost answer)", |f| &f.vault_after),
        ("mandate before", |f| &f.mandate_before),
        ("mandate after (lost answer)", |f| &f.mandate_after),
        ("key completion before", |f| &f.complete_before),
        ("key completion after (lost answer)", |f| &f.complete_after),
    ];
    for (what, pick) in cases {
        let (memory, faults, service) = faulty_service(|c| c);
        let p = platform_principal();
        Faults::arm(pick(&faults));
        let first = delegate_as(&service, &p, "k", &[], &request()).await;
        assert!(
            !pick(&faults).load(std::sync::atomic::Ordering::SeqCst),
            "{what}: the fault fired"
        );
        // A lost answer of the mandate write is absorbed: the mandate it made is found.
        assert!(
            matches!(first, Err(AcpError::Unavailable { .. }))
                || (what.starts_with("mandate after") && first.is_ok()),
            "{what}: {first:?}"
        );
        let mut answer = first.ok();
        for _ in 0..3 {
            if answer.is_some() {
                break;
            }
            match delegate_as(&service, &p, "k", &[], &request()).await {
                Ok(d) => {
                    answer = Some(d);
                    break;
                }
                Err(AcpError::IdempotencyInFlight { .. }) => {
                    memory.clock.advance(past_the_lease(&service));
                }
                Err(e) => panic!("{what}: the retry failed: {e:?}"),
            }
        }
        let done = answer.unwrap_or_else(|| panic!("{what}: no answer after three retries"));
        let again = delegate_as(&service, &p, "k", &[], &request())
            .await
            .unwrap();
        assert_eq!(again.token, done.token, "{what}: one token");
        assert_eq!(again.created, done.created, "{what}");
        assert_eq!(faults.credentials(), 1, "{what}: one credential");
        assert_eq!(faults.mandates(), 1, "{what}: one mandate");
        let reference = credential_of(&done.token).unwrap();
        let mandate = memory
            .store
            .mandate(&mandate_for(&reference).unwrap())
            .await
            .unwrap()
            .expect("the mandate");
        assert_eq!(mandate.spec().scope.max_uses, Some(1), "{what}");
        let named: Vec<Value> = delegated_events(&memory);
        assert!(
            named
                .iter()
                .any(|e| e["event"]["credential_ref"] == reference.as_str()),
            "{what}: the trail names the platform's delegation: {named:?}"
        );
    }
}

/// A store slower than the lease: the first request stalls at the mandate write, its lease
/// lapses, the platform's retry takes the record over and finishes; then the first one
/// resumes. Both answer the same token; one credential, one mandate.
#[tokio::test]
async fn a_store_slower_than_the_lease_still_gives_one_token() {
    let (memory, faults, service) = faulty_service(|c| c);
    Faults::arm(&faults.stall_mandate);
    let reached = faults.reached.notified();
    let slow = {
        let service = service.clone();
        tokio::spawn(async move {
            delegate_as(&service, &platform_principal(), "k-slow", &[], &request()).await
        })
    };
    reached.await;
    memory.clock.advance(past_the_lease(&service));
    let retry = delegate_as(&service, &platform_principal(), "k-slow", &[], &request())
        .await
        .expect("the retry after the lease");
    faults.release.notify_one();
    let first = slow.await.unwrap();
    match first {
        Ok(d) => assert_eq!(d.token, retry.token),
        // The stalled request may also fail retryably; it must not have made anything.
        Err(e) => assert!(e.is_retryable(), "{e:?}"),
    }
    assert_eq!(faults.credentials(), 1);
    assert_eq!(faults.mandates(), 1);
    let again = delegate_as(&service, &platform_principal(), "k-slow", &[], &request())
        .await
        .unwrap();
    assert_eq!(again.token, retry.token);
    assert!(again.replayed);
}

#[tokio::test]
async fn acp_replay_after_the_allowance_expired_answers_the_stored_201() {
    let (memory, faults, service) = faulty_service(|c| c);
    let p = platform_principal();
    let mut body = request();
    body["allowance"]["expires_at"] = json!("2025-09-29T12:00:00Z");
    let first = delegate_as(&service, &p, "k-late", &[], &body)
        .await
        .unwrap();
    memory.clock.advance(Duration::hours(2));
    let replay = delegate_as(&service, &p, "k-late", &[], &body)
        .await
        .expect("the stored answer, not allowance expired");
    assert!(replay.replayed);
    assert_eq!(replay.token, first.token);
    assert_eq!(replay.created, first.created);
    // A new key with the expired allowance is refused, and keeps nothing.
    for _ in 0..2 {
        let fresh = delegate_as(&service, &p, "k-new", &[], &body).await;
        assert!(
            matches!(&fresh, Err(AcpError::Invalid { param, .. }) if param == "$.allowance.expires_at"),
            "{fresh:?}"
        );
    }
    assert_eq!(faults.credentials(), 1);
}

#[tokio::test]
async fn a_replay_after_the_card_expired_at_a_month_boundary_answers_the_stored_201() {
    let (memory, faults, service) = faulty_service(|c| c);
    let p = platform_principal();
    // Late on the last day of the card's expiry month.
    memory.clock.advance(Duration::hours(36));
    let mut body = request();
    body["payment_method"]["exp_month"] = json!("09");
    body["payment_method"]["exp_year"] = json!("2025");
    body["allowance"]["expires_at"] = json!("2025-10-05T00:00:00Z");
    let first = delegate_as(&service, &p, "k-month", &[], &body)
        .await
        .unwrap();
    memory.clock.advance(Duration::hours(2));
    let replay = delegate_as(&service, &p, "k-month", &[], &body)
        .await
        .expect("the stored answer, not card expired");
    assert_eq!(replay.token, first.token);
    let fresh = delegate_as(&service, &p, "k-month-2", &[], &body).await;
    assert!(
        matches!(&fresh, Err(AcpError::Invalid { param, .. }) if param == "$.payment_method.exp_year"),
        "{fresh:?}"
    );
    assert_eq!(faults.credentials(), 1);
}

#[tokio::test]
async fn the_audit_names_the_platform_that_delegated() {
    let h = harness(|c| c).await;
    let a = h.delegate("k-audit", &request()).await;
    assert_eq!(a.status, 201, "{}", a.body);
    let reference = credential_of(a.body["id"].as_str().unwrap()).unwrap();
    let events = delegated_events(&h.memory);
    assert_eq!(events.len(), 1, "{events:?}");
    let e = &events[0]["event"];
    assert_eq!(e["credential_ref"], reference.as_str());
    assert_eq!(
        e["mandate_id"],
        mandate_for(&reference).unwrap().as_str(),
        "{e}"
    );
    assert_eq!(e["protocol"], "acp_delegate_payment");
    assert!(e["by"].to_string().contains("platform_1"), "{e}");
    // A replay writes no second event.
    assert_eq!(h.delegate("k-audit", &request()).await.status, 201);
    assert_eq!(delegated_events(&h.memory).len(), 1);
    // And no secret: the card number is nowhere in the trail.
    assert!(!audit_bodies(&h.memory)
        .iter()
        .any(|b| b.to_string().contains("4242424242424242")));
}

#[tokio::test]
async fn another_host_buyer_under_the_same_key_is_a_conflict_not_a_half_replay() {
    let (_memory, faults, service) = faulty_service(|c| c);
    let p = platform_principal();
    let body = serde_json::to_vec(&request()).unwrap();
    let b1 = BuyerId::new("buyer_1").unwrap();
    let b2 = BuyerId::new("buyer_2").unwrap();
    let headers = request_headers("k-buyer", &[]);
    let first = service
        .delegate(Some(&p), Some(&b1), &headers, &body)
        .await
        .unwrap();
    assert_eq!(first.buyer_id, b1);
    let other = service.delegate(Some(&p), Some(&b2), &headers, &body).await;
    assert_eq!(other, Err(AcpError::IdempotencyConflict));
    let same = service
        .delegate(Some(&p), Some(&b1), &headers, &body)
        .await
        .unwrap();
    assert_eq!(same.token, first.token);
    assert_eq!(faults.credentials(), 1);
}
