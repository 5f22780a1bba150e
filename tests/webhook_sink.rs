//! The signed-webhook audit sink against a receiver on 127.0.0.1 (axum): signatures verify,
//! a receiver that is down then up loses nothing, redeliveries carry the same sequence number,
//! a tampered body fails verification, a crash between append and enqueue is recovered (I9:
//! the delivered chain verifies; I10: the secret never shows). Deliveries are Standard
//! Webhooks messages; `standard_webhooks_receiver_library_accepts_our_deliveries` checks them
//! with a receiver library no one here wrote (PyPI's `standardwebhooks`).

#![cfg(all(feature = "http", feature = "testkit"))]

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agent_mandate::adapters::http::{
    message_id, parse_message_id, verify_signature, DeliveryError, DeliveryHeaders, MemoryOutbox,
    Outbox, SignatureError, WebhookAuditSink, WebhookConfig, WebhookConfigError, ID_HEADER,
    SIGNATURE_HEADER, TIMESTAMP_HEADER,
};
use agent_mandate::adapters::memory::{ManualClock, MemoryAuditSink};
use agent_mandate::domain::{
    examples, verify_chain, AttemptId, AuditEvent, AuditHash, AuditKind, ChainedEvent,
};
use agent_mandate::ports::{AuditSink, Clock, Secret};
use agent_mandate::testkit::audit_sink_conformance;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};

/// `whsec_` and the base64 of a 32-byte key (Standard Webhooks).
const SECRET: &str = "whsec_YWdlbnQtbWFuZGF0ZSB3ZWJob29rIHRlc3Qga2V5ISE=";

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Got {
    id: String,
    timestamp: String,
    signature: String,
    /// The sequence number and event hash of the message id, as the receiver read them
    /// (empty if the id does not parse).
    seq: String,
    hash: String,
    body: Bytes,
}

#[derive(Clone, Default)]
struct Receiver {
    got: Arc<Mutex<Vec<Got>>>,
    /// Answer 503 without keeping the event, this many times.
    refuse: Arc<AtomicUsize>,
    /// Keep the event, then answer 500 (as if the ack was lost), this many times.
    keep_then_fail: Arc<AtomicUsize>,
    /// Answer this status, forever, to the event with this seq (without keeping it).
    refuse_seq: Arc<Mutex<Option<(String, StatusCode)>>>,
    /// How many times `refuse_seq` was answered.
    refused: Arc<AtomicUsize>,
}

impl Got {
    /// The delivery's headers, as a receiver passes them to `verify_signature`.
    fn headers(&self) -> DeliveryHeaders<'_> {
        DeliveryHeaders {
            id: &self.id,
            timestamp: &self.timestamp,
            signature: &self.signature,
        }
    }
}

impl Receiver {
    fn got(&self) -> Vec<Got> {
        self.got.lock().expect("lock").clone()
    }

    fn seqs(&self) -> Vec<u64> {
        self.got()
            .iter()
            .map(|g| g.seq.parse().expect("seq"))
            .collect()
    }
}

fn take(counter: &AtomicUsize) -> bool {
    counter
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
}

async fn hook(State(r): State<Receiver>, headers: HeaderMap, body: Bytes) -> StatusCode {
    if take(&r.refuse) {
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    let id = headers
        .get(ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let (seq, hash) = match parse_message_id(id) {
        Ok((seq, hash)) => (seq.to_string(), hash.to_hex()),
        Err(_) => (String::new(), String::new()),
    };
    let refuse = r.refuse_seq.lock().expect("lock").clone();
    if let Some((refused_seq, status)) = refuse
        && refused_seq == seq
    {
        r.refused.fetch_add(1, Ordering::SeqCst);
        return status;
    }
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    r.got.lock().expect("lock").push(Got {
        id: header(ID_HEADER),
        timestamp: header(TIMESTAMP_HEADER),
        signature: header(SIGNATURE_HEADER),
        seq,
        hash,
        body,
    });
    if take(&r.keep_then_fail) {
        return StatusCode::INTERNAL_SERVER_ERROR;
    }
    StatusCode::NO_CONTENT
}

/// Serves the receiver on `listener`.
fn serve(listener: tokio::net::TcpListener, r: Receiver) {
    let app = axum::Router::new()
        .route("/hook", axum::routing::post(hook))
        .with_state(r);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
}

async fn receiver() -> (String, Receiver) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
    let r = Receiver::default();
    serve(listener, r.clone());
    (url, r)
}

fn config(url: &str) -> WebhookConfig {
    WebhookConfig::new(url, Secret::new(SECRET))
        .expect("config")
        .with_timeout(Duration::from_secs(2))
        .with_backoff(Duration::from_millis(10), Duration::from_millis(80))
        .with_idle_poll(Duration::from_millis(50))
}

struct Setup {
    inner: Arc<MemoryAuditSink>,
    outbox: Arc<MemoryOutbox>,
    clock: Arc<ManualClock>,
    sink: Arc<WebhookAuditSink>,
}

async fn setup(url: &str) -> Setup {
    setup_with(
        url,
        Arc::new(MemoryAuditSink::new()),
        Arc::new(MemoryOutbox::new()),
    )
    .await
}

async fn setup_with(url: &str, inner: Arc<MemoryAuditSink>, outbox: Arc<MemoryOutbox>) -> Setup {
    let clock = Arc::new(ManualClock::new(examples::now()));
    let sink = WebhookAuditSink::new(inner.clone(), outbox.clone(), config(url), clock.clone())
        .await
        .expect("sink");
    Setup {
        inner,
        outbox,
        clock,
        sink,
    }
}

fn event(n: u32) -> AuditEvent {
    AuditEvent {
        at: examples::now(),
        kind: AuditKind::OrderFailed {
            attempt_id: AttemptId::new(format!("att_{n}")).expect("id"),
            reason: format!("reason {n}"),
        },
    }
}

async fn append(sink: &WebhookAuditSink, n: u32) -> u64 {
    sink.append(&event(n)).await.expect("appended").seq
}

fn tolerance() -> Duration {
    Duration::from_secs(300)
}

/// Every delivery verifies under the secret at the clock's time; the bodies are the inner
/// chain, in order, and verify as a chain.
#[tokio::test]
async fn signatures_verify_and_the_chain_arrives_in_order() {
    let (url, r) = receiver().await;
    let s = setup(&url).await;
    for n in 1..=3 {
        append(&s.sink, n).await;
    }
    let d = s.sink.deliver_pending().await.expect("delivered");
    assert_eq!(d.delivered, 3);
    assert_eq!(r.seqs(), vec![1, 2, 3]);
    let secret = Secret::new(SECRET);
    let mut delivered = Vec::new();
    for g in r.got() {
        let verified = verify_signature(&secret, &g.headers(), &g.body, s.clock.now(), tolerance())
            .expect("signature verifies");
        assert_eq!(verified.seq.to_string(), g.seq);
        assert_eq!(verified.timestamp.to_string(), g.timestamp);
        let e: ChainedEvent = serde_json::from_slice(&g.body).expect("a chained event");
        assert_eq!(g.id, message_id(e.seq, &e.hash));
        assert_eq!((verified.seq, verified.event_hash), (e.seq, e.hash));
        assert_eq!(e.hash.to_string(), g.hash);
        delivered.push(e);
    }
    assert_eq!(delivered, s.inner.events(), "exactly the chain of record");
    verify_chain(&delivered, 1, AuditHash::GENESIS).expect("the delivered chain verifies");
    assert!(s.outbox.pending(10).await.expect("pending").is_empty());
    // The sink reads, heads and verifies through the inner sink.
    assert_eq!(
        s.sink.verify().await.expect("verify").map(|h| h.seq),
        Some(3)
    );
    assert_eq!(
        s.sink.read(2, 10).await.expect("read"),
        s.inner.events()[1..]
    );
}

/// A tampered body, a wrong secret, a stale timestamp, a malformed header: each fails with
/// its own error.
#[tokio::test]
async fn tampered_body_fails_verification() {
    let (url, r) = receiver().await;
    let s = setup(&url).await;
    append(&s.sink, 1).await;
    s.sink.deliver_pending().await.expect("delivered");
    let g = r.got().remove(0);
    let secret = Secret::new(SECRET);
    let now = s.clock.now();
    let mut tampered = g.body.to_vec();
    let at = tampered
        .windows(8)
        .position(|w| w == b"reason 1")
        .expect("the reason is in the body");
    tampered[at + 7] = b'9';
    assert_eq!(
        verify_signature(&secret, &g.headers(), &tampered, now, tolerance()),
        Err(SignatureError::Mismatch)
    );
    assert_eq!(
        verify_signature(
            &Secret::new("whsec_YW5vdGhlciB3ZWJob29rIGtleSwgMjRi"),
            &g.headers(),
            &g.body,
            now,
            tolerance()
        ),
        Err(SignatureError::Mismatch)
    );
    let later = now + chrono::Duration::seconds(301);
    assert!(matches!(
        verify_signature(&secret, &g.headers(), &g.body, later, tolerance()),
        Err(SignatureError::Stale { .. })
    ));
    assert!(matches!(
        verify_signature(
            &secret,
            &DeliveryHeaders {
                signature: "v1=abcd",
                ..g.headers()
            },
            &g.body,
            now,
            tolerance()
        ),
        Err(SignatureError::Malformed {
            field: "webhook-signature"
        })
    ));
    // The timestamp is signed: a fresh one on an old delivery does not verify.
    let fresh = (g.timestamp.parse::<i64>().expect("timestamp") + 301).to_string();
    assert_eq!(
        verify_signature(
            &secret,
            &DeliveryHeaders {
                timestamp: &fresh,
                ..g.headers()
            },
            &g.body,
            later,
            tolerance()
        ),
        Err(SignatureError::Mismatch)
    );
}

/// I9, I15: a captured delivery (event 1) replayed under the message id of a later event (2)
/// does not verify, so a receiver that deduplicates on the id (or the seq in it) cannot be
/// made to drop the real event 2: the id, with the seq and the event hash, is signed.
#[tokio::test]
async fn replayed_delivery_with_a_later_seq_does_not_verify() {
    let (url, r) = receiver().await;
    let s = setup(&url).await;
    append(&s.sink, 1).await;
    append(&s.sink, 2).await;
    s.sink.deliver_pending().await.expect("delivered");
    let got = r.got();
    let (first, second) = (&got[0], &got[1]);
    let secret = Secret::new(SECRET);
    let now = s.clock.now();
    let second_seq_first_hash = message_id(
        second.seq.parse().expect("seq"),
        &parse_message_id(&first.id).expect("id").1,
    );
    let replay = DeliveryHeaders {
        id: &second_seq_first_hash,
        ..first.headers()
    };
    assert_eq!(
        verify_signature(&secret, &replay, &first.body, now, tolerance()),
        Err(SignatureError::Mismatch)
    );
    let replay = DeliveryHeaders {
        id: &second.id,
        ..first.headers()
    };
    assert_eq!(
        verify_signature(&secret, &replay, &first.body, now, tolerance()),
        Err(SignatureError::Mismatch)
    );
    // The real deliveries verify, each under its own seq.
    for g in [first, second] {
        let v =
            verify_signature(&secret, &g.headers(), &g.body, now, tolerance()).expect("verifies");
        assert_eq!(v.seq.to_string(), g.seq);
    }
}

/// I10: the sink refuses an empty or short key at construction, and the receiver's check
/// refuses it too (anyone could sign with an empty key).
#[tokio::test]
async fn empty_or_short_secret_is_refused_by_the_sink_and_the_receiver() {
    for weak in ["", "whsec_", "whsec_c2hvcnQga2V5"] {
        assert_eq!(
            WebhookConfig::new("http://127.0.0.1:9/hook", Secret::new(weak)).err(),
            Some(WebhookConfigError::WeakSecret { min_bytes: 16 }),
            "{weak:?}"
        );
        let id = message_id(1, &AuditHash::GENESIS);
        let headers = DeliveryHeaders {
            id: &id,
            timestamp: "1",
            signature: "v1,AAAA",
        };
        assert_eq!(
            verify_signature(
                &Secret::new(weak),
                &headers,
                b"{}",
                examples::now(),
                tolerance()
            ),
            Err(SignatureError::WeakSecret { min_bytes: 16 })
        );
    }
    // A secret that is not `whsec_` and base64 (the former free-form secrets) is named.
    assert!(matches!(
        WebhookConfig::new(
            "http://127.0.0.1:9/hook",
            Secret::new("whsec_agent_mandate_test_secret")
        ),
        Err(WebhookConfigError::Invalid {
            field: "secret",
            ..
        })
    ));
}

/// The receiver is down (nothing listens), events wait in the outbox; it comes up; nothing is
/// lost and the order holds.
#[tokio::test]
async fn receiver_down_then_up_loses_nothing() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let url = format!("http://127.0.0.1:{port}/hook");
    let s = setup(&url).await;
    for n in 1..=3 {
        append(&s.sink, n).await;
    }
    match s.sink.deliver_pending().await {
        Err(DeliveryError::Unreachable { seq: 1, .. }) => {}
        other => panic!("expected the receiver unreachable, got {other:?}"),
    }
    assert!(s.sink.flush(2).await.is_err());
    assert_eq!(s.outbox.pending(10).await.expect("pending").len(), 3);

    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("the port again");
    let r = Receiver::default();
    serve(listener, r.clone());
    append(&s.sink, 4).await;
    let d = s.sink.flush(5).await.expect("delivered");
    assert_eq!(d.delivered, 4);
    assert_eq!(r.seqs(), vec![1, 2, 3, 4]);
    assert!(s.outbox.pending(10).await.expect("pending").is_empty());
}

/// The background loop: the receiver refuses the first deliveries; the loop backs off and
/// retries until every event is delivered, in order.
#[tokio::test]
async fn the_delivery_loop_retries_with_backoff_until_delivered() {
    let (url, r) = receiver().await;
    r.refuse.store(4, Ordering::SeqCst);
    let s = setup(&url).await;
    let delivery = s.sink.spawn_delivery();
    for n in 1..=5 {
        append(&s.sink, n).await;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !s.outbox.pending(10).await.expect("pending").is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not delivered in 10 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(delivery);
    assert_eq!(r.seqs(), vec![1, 2, 3, 4, 5]);
    assert_eq!(r.refuse.load(Ordering::SeqCst), 0, "the refusals happened");
}

/// The receiver keeps an event but its acknowledgement is lost (500): the event is delivered
/// again with the same sequence number and the same bytes; deduplicating on the seq gives the
/// chain exactly once.
#[tokio::test]
async fn redeliveries_carry_the_same_sequence_number() {
    let (url, r) = receiver().await;
    r.keep_then_fail.store(1, Ordering::SeqCst);
    let s = setup(&url).await;
    append(&s.sink, 1).await;
    append(&s.sink, 2).await;
    match s.sink.deliver_pending().await {
        Err(DeliveryError::Rejected {
            seq: 1,
            status: 500,
        }) => {}
        other => panic!("expected a 500 on seq 1, got {other:?}"),
    }
    s.sink.deliver_pending().await.expect("delivered");
    let got = r.got();
    assert_eq!(r.seqs(), vec![1, 1, 2]);
    assert_eq!(got[0].body, got[1].body, "same event, same bytes");
    assert_eq!(got[0].hash, got[1].hash);
    let unique: BTreeSet<u64> = r.seqs().into_iter().collect();
    assert_eq!(unique.into_iter().collect::<Vec<_>>(), vec![1, 2]);
}

/// A crash between the inner append and the enqueue: events in the chain of record but not
/// in the outbox are enqueued when the sink is built again (and only those).
#[tokio::test]
async fn a_crash_between_append_and_enqueue_is_recovered() {
    let (url, r) = receiver().await;
    let inner = Arc::new(MemoryAuditSink::new());
    let outbox = Arc::new(MemoryOutbox::new());
    {
        let s = setup_with(&url, inner.clone(), outbox.clone()).await;
        append(&s.sink, 1).await;
        s.sink.deliver_pending().await.expect("delivered");
    }
    // Appended to the record, never enqueued (the process died in between).
    inner.append(&event(2)).await.expect("appended");
    inner.append(&event(3)).await.expect("appended");
    assert_eq!(outbox.last_enqueued().await.expect("last"), Some(1));

    let s = setup_with(&url, inner.clone(), outbox.clone()).await;
    assert_eq!(
        s.outbox
            .pending(10)
            .await
            .expect("pending")
            .iter()
            .map(|e| e.seq)
            .collect::<Vec<_>>(),
        vec![2, 3]
    );
    s.sink.deliver_pending().await.expect("delivered");
    assert_eq!(r.seqs(), vec![1, 2, 3]);
    assert_eq!(s.sink.recover().await.expect("recover"), 0, "nothing left");
}

/// The webhook sink is an audit sink: it passes the audit conformance suite.
#[tokio::test]
async fn audit_sink_conformance_suite() {
    let (url, r) = receiver().await;
    let s = setup(&url).await;
    let _delivery = s.sink.spawn_delivery();
    audit_sink_conformance(&*s.sink).await;
    s.sink.flush(5).await.expect("delivered");
    let head = s.inner.head().await.expect("head").map_or(0, |h| h.seq);
    let unique: BTreeSet<u64> = r.seqs().into_iter().collect();
    assert_eq!(unique.len() as u64, head, "every event delivered");
}

/// I10: the secret never shows in Debug or errors.
#[tokio::test]
async fn the_secret_never_shows() {
    let url = "http://127.0.0.1:9/hook";
    let s = setup(url).await;
    append(&s.sink, 1).await;
    let e = s.sink.deliver_pending().await.expect_err("unreachable");
    for text in [
        format!("{:?}", config(url)),
        format!("{:?}", s.sink),
        format!("{e:?} {e}"),
    ] {
        assert!(!text.contains(SECRET), "{text}");
    }
}

/// The durable outbox: events appended while the receiver is down wait in the SQLite file; a
/// new process (a new sink on the same file) delivers every one of them, once the receiver is
/// up, in order, with signatures that verify.
#[cfg(feature = "sqlite")]
#[tokio::test]
async fn the_sqlite_outbox_keeps_undelivered_events_across_a_restart() {
    use agent_mandate::adapters::sqlite::{SqliteConfig, SqliteDatabase};
    let dir = std::env::temp_dir().join(format!("am-outbox-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("state.db");
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let url = format!("http://127.0.0.1:{port}/hook");
    let clock = Arc::new(ManualClock::new(examples::now()));
    {
        let db = SqliteDatabase::open(SqliteConfig::file(&path)).expect("open");
        let sink = WebhookAuditSink::new(
            Arc::new(db.audit_sink()),
            Arc::new(db.outbox()),
            config(&url),
            clock.clone(),
        )
        .await
        .expect("sink");
        for n in 1..=3 {
            append(&sink, n).await;
        }
        assert!(sink.deliver_pending().await.is_err(), "nobody listens yet");
        assert_eq!(sink.outbox().pending_count().await.expect("count"), 3);
        // The process stops here: nothing was delivered.
    }
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("the port again");
    let r = Receiver::default();
    serve(listener, r.clone());
    let db = SqliteDatabase::open(SqliteConfig::file(&path)).expect("reopen");
    let sink = WebhookAuditSink::new(
        Arc::new(db.audit_sink()),
        Arc::new(db.outbox()),
        config(&url),
        clock.clone(),
    )
    .await
    .expect("sink after the restart");
    append(&sink, 4).await;
    let d = sink.flush(5).await.expect("delivered");
    assert_eq!(d.delivered, 4);
    assert_eq!(r.seqs(), vec![1, 2, 3, 4]);
    for g in r.got() {
        verify_signature(
            &Secret::new(SECRET),
            &g.headers(),
            &g.body,
            clock.now(),
            tolerance(),
        )
        .expect("the signature verifies");
    }
    assert_eq!(sink.outbox().pending_count().await.expect("count"), 0);
    // Delivered events are not enqueued again by a later recovery.
    drop(sink);
    let again = WebhookAuditSink::new(
        Arc::new(db.audit_sink()),
        Arc::new(db.outbox()),
        config(&url),
        clock,
    )
    .await
    .expect("third start");
    assert_eq!(again.outbox().pending_count().await.expect("count"), 0);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn outboxes_pass_the_outbox_suite() {
    agent_mandate::testkit::outbox_conformance(&MemoryOutbox::new()).await;
    #[cfg(feature = "sqlite")]
    {
        use agent_mandate::adapters::sqlite::{SqliteConfig, SqliteDatabase};
        let db = SqliteDatabase::open(SqliteConfig::in_memory()).expect("open");
        agent_mandate::testkit::outbox_conformance(&db.outbox()).await;
    }
}

/// I15, I9: the receiver answers 413 (too large) to event 2, forever. Before, delivery in
/// strict order held every later event back behind it, forever. Now, after the configured
/// number of permanent refusals, event 2 is dead-lettered: a `webhook_dead_lettered` marker
/// naming it is appended to the trail (and delivered), events 3 and 4 are delivered, the
/// outbox keeps event 2 among its dead letters, the sink reports it, and the chain of record
/// (with the marker) verifies.
async fn refused_event_is_dead_lettered_and_later_events_are_delivered(outbox: Arc<dyn Outbox>) {
    let (url, r) = receiver().await;
    *r.refuse_seq.lock().expect("lock") = Some(("2".into(), StatusCode::PAYLOAD_TOO_LARGE));
    let inner = Arc::new(MemoryAuditSink::new());
    let clock = Arc::new(ManualClock::new(examples::now()));
    let sink = WebhookAuditSink::new(
        inner.clone(),
        outbox.clone(),
        config(&url).with_dead_letter_after(3),
        clock.clone(),
    )
    .await
    .expect("sink");
    for n in 1..=4 {
        append(&sink, n).await;
    }
    let done = sink.flush(10).await.expect("flushed");
    assert_eq!(done.dead_lettered, 1);
    assert_eq!(
        r.refused.load(Ordering::SeqCst),
        3,
        "refused 3 times, then given up"
    );
    assert_eq!(
        r.seqs(),
        vec![1, 3, 4, 5],
        "the later events and the marker arrive"
    );
    let marker = inner.events().pop().expect("the marker");
    assert_eq!(marker.seq, 5);
    let dead = inner.events()[1].clone();
    assert_eq!(dead.seq, 2);
    assert_eq!(
        marker.event().expect("an audit event").kind,
        AuditKind::WebhookDeadLettered {
            seq: 2,
            event_hash: dead.hash,
            status: 413,
            refusals: 3,
        }
    );
    assert!(
        marker.body.contains("\"type\":\"webhook_dead_lettered\""),
        "{}",
        marker.body
    );
    assert!(!marker.body.contains(SECRET) && !marker.body.contains(&url));
    assert_eq!(
        outbox.dead_lettered(10).await.expect("dead letters"),
        vec![dead.clone()],
        "the outbox keeps the dead-lettered event"
    );
    assert!(outbox.pending(10).await.expect("pending").is_empty());
    let reported = sink.dead_letters();
    assert_eq!(reported.len(), 1);
    assert_eq!(
        (
            reported[0].seq,
            reported[0].status,
            reported[0].refusals,
            reported[0].marker_seq
        ),
        (2, 413, 3, 5)
    );
    assert_eq!(sink.verify().await.expect("verify").map(|h| h.seq), Some(5));
    verify_chain(&inner.events(), 1, AuditHash::GENESIS).expect("the chain verifies");
    // A later recovery does not bring the dead letter back.
    assert_eq!(sink.recover().await.expect("recover"), 0);
    assert!(outbox.pending(10).await.expect("pending").is_empty());
}

#[tokio::test]
async fn refused_event_is_dead_lettered_and_later_events_are_delivered_memory() {
    refused_event_is_dead_lettered_and_later_events_are_delivered(Arc::new(MemoryOutbox::new()))
        .await;
}

#[cfg(feature = "sqlite")]
#[tokio::test]
async fn refused_event_is_dead_lettered_and_later_events_are_delivered_sqlite() {
    use agent_mandate::adapters::sqlite::{SqliteConfig, SqliteDatabase};
    let db = SqliteDatabase::open(SqliteConfig::in_memory()).expect("open");
    refused_event_is_dead_lettered_and_later_events_are_delivered(Arc::new(db.outbox())).await;
}

/// 408, 429, 5xx and the endpoint's own errors (401, 403, 404) are not permanent: the event
/// waits (and every later one behind it) however often it is refused.
#[tokio::test]
async fn only_permanent_refusals_dead_letter() {
    use agent_mandate::adapters::http::is_permanent_refusal;
    for status in [401, 403, 404, 408, 429, 500, 502, 503] {
        assert!(!is_permanent_refusal(status), "{status}");
    }
    for status in [400, 409, 413, 415, 422] {
        assert!(is_permanent_refusal(status), "{status}");
    }
    let (url, r) = receiver().await;
    *r.refuse_seq.lock().expect("lock") = Some(("1".into(), StatusCode::TOO_MANY_REQUESTS));
    let inner = Arc::new(MemoryAuditSink::new());
    let clock = Arc::new(ManualClock::new(examples::now()));
    let sink = WebhookAuditSink::new(
        inner.clone(),
        Arc::new(MemoryOutbox::new()),
        config(&url).with_dead_letter_after(1),
        clock,
    )
    .await
    .expect("sink");
    append(&sink, 1).await;
    append(&sink, 2).await;
    assert!(matches!(
        sink.flush(4).await,
        Err(DeliveryError::Rejected {
            seq: 1,
            status: 429
        })
    ));
    assert!(r.seqs().is_empty());
    assert!(sink.dead_letters().is_empty());
    assert_eq!(inner.events().len(), 2, "no marker");
}

/// The Python of `scripts/with-mpp-sdk.sh`'s venv, which has PyPI's `standardwebhooks`.
fn standard_webhooks_python() -> Option<String> {
    match std::env::var("MPP_SDK_PYTHON") {
        Ok(p) if !p.is_empty() => Some(p),
        _ => {
            assert!(
                std::env::var_os("REQUIRE_MPP_SDK").is_none(),
                "REQUIRE_MPP_SDK is set but MPP_SDK_PYTHON is not"
            );
            eprintln!(
                "SKIPPED: standard webhooks interop: MPP_SDK_PYTHON not set (run scripts/with-mpp-sdk.sh cargo test --features http,testkit --test webhook_sink)"
            );
            None
        }
    }
}

/// Runs `tests/interop/standard_webhooks.py` on `cases`; returns its results.
fn standard_webhooks(python: &str, cases: &[serde_json::Value]) -> Vec<serde_json::Value> {
    use std::io::Write as _;
    use std::process::{Command, Stdio};
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/interop/standard_webhooks.py"
    );
    let mut child = Command::new(python)
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start python");
    let doc = serde_json::json!({ "cases": cases });
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(doc.to_string().as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("python runs");
    assert!(
        out.status.success(),
        "standard_webhooks.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert!(v["version"].is_string(), "{v}");
    let results = v["results"].as_array().expect("results").clone();
    assert_eq!(results.len(), cases.len());
    results
}

/// Our deliveries are Standard Webhooks messages: PyPI's `standardwebhooks` receiver library
/// (no one here wrote it) accepts each one as sent, computes the same signature for it, and
/// rejects it when the body is changed by one byte, when it is replayed under the message id
/// of a later event, under another secret, with its timestamp moved, and when it is stale.
#[tokio::test]
async fn standard_webhooks_receiver_library_accepts_our_deliveries() {
    let Some(python) = standard_webhooks_python() else {
        return;
    };
    let (url, r) = receiver().await;
    let s = setup(&url).await;
    // The library checks the timestamp against the real clock.
    let unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs();
    let now = chrono::DateTime::from_timestamp(i64::try_from(unix).expect("secs"), 0).expect("now");
    s.clock.set(now - chrono::Duration::hours(1));
    append(&s.sink, 1).await;
    s.sink.deliver_pending().await.expect("delivered");
    s.clock.set(now);
    for n in 2..=4 {
        append(&s.sink, n).await;
    }
    s.sink.deliver_pending().await.expect("delivered");
    let got = r.got();
    assert_eq!(r.seqs(), vec![1, 2, 3, 4]);
    let case = |g: &Got, secret: &str, id: &str, timestamp: &str, body: &[u8]| {
        serde_json::json!({
            "secret": secret,
            "headers": {
                ID_HEADER: id,
                TIMESTAMP_HEADER: timestamp,
                SIGNATURE_HEADER: g.signature,
            },
            "body": String::from_utf8(body.to_vec()).expect("utf-8"),
        })
    };
    let fresh = &got[1..];
    let mut cases = Vec::new();
    for g in fresh {
        cases.push(case(g, SECRET, &g.id, &g.timestamp, &g.body));
    }
    let (a, b) = (&got[1], &got[2]);
    let mut tampered = a.body.to_vec();
    let at = tampered
        .windows(8)
        .position(|w| w == b"reason 2")
        .expect("the reason is in the body");
    tampered[at + 7] = b'9';
    let moved = (a.timestamp.parse::<i64>().expect("timestamp") + 1).to_string();
    let other_secret = "whsec_YW5vdGhlciB3ZWJob29rIGtleSwgMjRi";
    let rejected = [
        (
            "tampered body",
            case(a, SECRET, &a.id, &a.timestamp, &tampered),
        ),
        (
            "replayed under a later id",
            case(a, SECRET, &b.id, &a.timestamp, &a.body),
        ),
        (
            "another secret",
            case(a, other_secret, &a.id, &a.timestamp, &a.body),
        ),
        ("moved timestamp", case(a, SECRET, &a.id, &moved, &a.body)),
        (
            "stale",
            case(&got[0], SECRET, &got[0].id, &got[0].timestamp, &got[0].body),
        ),
    ];
    cases.extend(rejected.iter().map(|(_, c)| c.clone()));
    let results = standard_webhooks(&python, &cases);
    for (g, res) in fresh.iter().zip(&results) {
        assert_eq!(res["accepted"], true, "seq {}: {res}", g.seq);
        assert_eq!(res["signature"], g.signature.as_str(), "the same signature");
        assert_eq!(
            res["payload"]["seq"].to_string(),
            g.seq,
            "the signed body's seq"
        );
        assert_eq!(res["payload"]["hash"], g.hash.as_str());
    }
    for ((what, _), res) in rejected.iter().zip(&results[fresh.len()..]) {
        assert_eq!(res["accepted"], false, "{what}: {res}");
    }
    assert!(
        results[results.len() - 1]["error"]
            .as_str()
            .is_some_and(|e| e.contains("too old")),
        "{}",
        results[results.len() - 1]
    );
    // Our own receiver helper agrees on every case.
    for (i, c) in cases.iter().enumerate() {
        let h = |name: &str| c["headers"][name].as_str().expect("header").to_owned();
        let (id, timestamp, signature) = (h(ID_HEADER), h(TIMESTAMP_HEADER), h(SIGNATURE_HEADER));
        let ours = verify_signature(
            &Secret::new(c["secret"].as_str().expect("secret")),
            &DeliveryHeaders {
                id: &id,
                timestamp: &timestamp,
                signature: &signature,
            },
            c["body"].as_str().expect("body").as_bytes(),
            now,
            tolerance(),
        );
        assert_eq!(
            ours.is_ok(),
            results[i]["accepted"] == true,
            "case {i}: {ours:?}"
        );
    }
}
