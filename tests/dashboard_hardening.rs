//! The buyer's dashboard under attack: a trail of many foreign events (a buyer's first load
//! reads their own events only, through the audit sink's buyer index), ids an agent chooses
//! (`/`, `?`, `#`, `../all`) in links and form actions, stopping an agent with its delegates'
//! open authorizations, and the buyer's refusal of a payment (recorded, enforced, the buyer's
//! alone) (I9 the trail, I14 identity is checked, never declared, I16 stopping needs no
//! spending authority).
#![cfg(all(feature = "dashboard", feature = "testkit"))]

mod dashboard_harness;
mod dashboard_seed;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use agent_mandate::domain::{
    examples, ActorId, AttemptStatus, AuditEvent, AuditKind, AuditSubject, BlockerCode, BuyerId,
    ChainedEvent, Confirmation, ConfirmationId, ConfirmationScope, MandateId, MandateStatus,
    MerchantScope, Outcome, PaymentAction, Principal, Text,
};
use agent_mandate::engine::{
    CreateMandate, DeclineConfirmation, DeriveMandate, Engine, EngineConfig, EngineError,
    PaymentOutcome, RecordConfirmation,
};
use agent_mandate::ports::{AuditError, AuditReceipt, AuditSegment, AuditSink, Clock};
use async_trait::async_trait;
use dashboard_harness::{serve, serve_seeded, Served};
use dashboard_seed::*;

/// An audit sink that counts what is read from it, and can hide its index (`index: false`
/// answers `indexed` with `None`, as a sink without an index does).
#[derive(Debug)]
struct Counted {
    inner: Arc<dyn AuditSink>,
    index: bool,
    read_calls: AtomicU64,
    events_read: AtomicU64,
}

impl Counted {
    fn new(inner: Arc<dyn AuditSink>, index: bool) -> Arc<Counted> {
        Arc::new(Counted {
            inner,
            index,
            read_calls: AtomicU64::new(0),
            events_read: AtomicU64::new(0),
        })
    }

    fn reset(&self) {
        self.read_calls.store(0, Ordering::SeqCst);
        self.events_read.store(0, Ordering::SeqCst);
    }

    fn counts(&self) -> (u64, u64) {
        (
            self.read_calls.load(Ordering::SeqCst),
            self.events_read.load(Ordering::SeqCst),
        )
    }
}

#[async_trait]
impl AuditSink for Counted {
    async fn append(&self, event: &AuditEvent) -> Result<AuditReceipt, AuditError> {
        self.inner.append(event).await
    }
    async fn append_all(&self, events: &[AuditEvent]) -> Result<Option<AuditReceipt>, AuditError> {
        self.inner.append_all(events).await
    }
    async fn read(&self, from_seq: u64, limit: usize) -> Result<Vec<ChainedEvent>, AuditError> {
        let page = self.inner.read(from_seq, limit).await?;
        self.read_calls.fetch_add(1, Ordering::SeqCst);
        self.events_read
            .fetch_add(page.len() as u64, Ordering::SeqCst);
        Ok(page)
    }
    async fn head(&self) -> Result<Option<AuditReceipt>, AuditError> {
        self.inner.head().await
    }
    async fn verify(&self) -> Result<Option<AuditReceipt>, AuditError> {
        self.inner.verify().await
    }
    async fn indexed(
        &self,
        subject: &AuditSubject,
        from_seq: u64,
        limit: usize,
    ) -> Result<Option<Vec<ChainedEvent>>, AuditError> {
        if !self.index {
            return Ok(None);
        }
        let page = self.inner.indexed(subject, from_seq, limit).await?;
        self.read_calls.fetch_add(1, Ordering::SeqCst);
        let n = page.as_ref().map_or(0, Vec::len);
        self.events_read.fetch_add(n as u64, Ordering::SeqCst);
        Ok(page)
    }
    async fn segment(&self, subject: &AuditSubject) -> Result<AuditSegment, AuditError> {
        self.inner.segment(subject).await
    }
}

/// The seeded data with the engine reading the trail through `audit`.
async fn seeded_through(index: bool) -> (Seeded, Arc<Counted>) {
    let mut seeded = seed().await;
    let counted = Counted::new(seeded.mem.ports.audit.clone(), index);
    let mut ports = seeded.mem.ports.clone();
    ports.audit = counted.clone();
    seeded.engine = Engine::new(ports, EngineConfig::default()).expect("engine");
    (seeded, counted)
}

/// `n` refused requests of the other buyer's agent (and markers naming no buyer), appended
/// straight to the trail.
async fn foreign_events(seeded: &Seeded, n: usize) {
    let request = examples::authorize_request(&examples::travel_backpack_snapshot());
    let decision = |i: usize| AuditEvent {
        at: examples::now(),
        kind: AuditKind::Decision {
            command: "execute_payment".into(),
            actor_id: OTHER_AGENT.parse().unwrap(),
            mandate_id: if i.is_multiple_of(10) {
                format!("mandate_unknown_{i}").parse().unwrap()
            } else {
                OTHER_MANDATE.parse().unwrap()
            },
            action: PaymentAction::Authorize,
            amount: request.amount,
            snapshot_id: request.snapshot_id,
            outcome: Outcome::Blocked,
            blockers: vec![agent_mandate::domain::Blocker::new(
                BlockerCode::TransactionLimitExceeded,
                "over the limit",
            )],
            evidence: Vec::new(),
            request_digest: request.digest(),
            attempt_id: None,
        },
    };
    let mut done = 0;
    while done < n {
        let batch: Vec<AuditEvent> = (done..(done + 1000).min(n)).map(decision).collect();
        seeded.mem.audit.append_all(&batch).await.expect("appended");
        done += batch.len();
    }
}

/// A new buyer with one mandate, one card and one captured payment; returns the buyer.
async fn new_buyer(engine: &Engine) -> BuyerId {
    let buyer: BuyerId = "buyer_new".parse().unwrap();
    let by = Principal::Buyer(buyer.clone());
    engine
        .create_mandate(
            &by,
            &CreateMandate::new(
                "new-root".parse().unwrap(),
                root_spec(
                    "mandate_new",
                    buyer.clone(),
                    "agent_new",
                    &["merchant_001"],
                    "500.00",
                    "1000.00",
                    ("600.00", 10),
                    None,
                    MandateStatus::Active,
                ),
            ),
        )
        .await
        .expect("mandate");
    let card = engine
        .store_credential(
            &by,
            &"new-card".parse().unwrap(),
            agent_mandate::ports::NewCredential {
                kind: agent_mandate::ports::CredentialKind::PaymentMethod,
                owner: "agent_new".parse().unwrap(),
                buyer_id: buyer.clone(),
                secret: agent_mandate::ports::Secret::new("pm_card_visa"),
                cvc: None,
                display: agent_mandate::ports::CredentialDisplay {
                    brand: "visa".into(),
                    last4: "4242".into(),
                    exp_month: 12,
                    exp_year: 2030,
                    funding: agent_mandate::ports::FundingType::Credit,
                },
            },
        )
        .await
        .expect("card")
        .value
        .reference;
    let basket = cart(
        "merchant_001",
        &[("NEW-1", "A new thing", 1, "12.00")],
        "0.00",
        "0.00",
    );
    let out = pay(
        engine,
        buyer.clone(),
        "agent_new",
        "mandate_new",
        &basket,
        &card,
        "new-pay",
        true,
    )
    .await;
    assert!(out.attempt().is_some(), "{out:?}");
    engine.flush_audit().await.expect("flushed");
    buyer
}

/// Loads `/` as `buyer` (a fresh dashboard: nothing cached); returns the events read, the
/// read calls and the time taken.
async fn first_load(served: &Served, counted: &Counted, buyer: &BuyerId) -> (u64, u64, u128) {
    counted.reset();
    let started = Instant::now();
    let page = served
        .get_as("/", Some(&format!("buyer:{buyer}")), Some("n1"))
        .await;
    let took = started.elapsed().as_millis();
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("mandate_new"), "{}", page.body);
    assert!(!page.body.contains(OTHER_MANDATE));
    let (calls, events) = counted.counts();
    (events, calls, took)
}

#[tokio::test]
async fn dashboard_first_load_reads_bounded_events() {
    const FOREIGN: usize = 50_000;
    let mut measured = Vec::new();
    for index in [true, false] {
        let (seeded, counted) = seeded_through(index).await;
        foreign_events(&seeded, FOREIGN).await;
        let engine = seeded.engine.clone();
        let buyer = new_buyer(&engine).await;
        let own = seeded
            .mem
            .audit
            .indexed(&AuditSubject::Buyer(buyer.clone()), 1, 100_000)
            .await
            .expect("events")
            .map_or(0, |v| v.len()) as u64;
        let served = serve_seeded(seeded).await;
        let (events, calls, took) = first_load(&served, &counted, &buyer).await;
        measured.push((index, own, events, calls, took));
        if index {
            // Only the buyer's own events (the page may read them more than once: the
            // overview and its alerts), in a handful of calls, whatever the trail's length.
            assert!(own > 0 && own < 20, "{own}");
            assert!(
                events <= 3 * own,
                "read {events} events for {own} of the buyer's"
            );
            assert!(calls <= 6, "{calls} calls");
        } else {
            // The same page without the index scans the whole trail: the counter sees it.
            assert!(events >= FOREIGN as u64, "{events}");
        }
    }
    for (index, own, events, calls, took) in measured {
        eprintln!(
            "first load at {FOREIGN} foreign events, index {index}: {own} own events, \
             {events} events read in {calls} calls, {took} ms (debug build)"
        );
    }
}

/// The other buyer's agent names this buyer's mandate: the engine refuses it before any
/// decision (only a mandate's actor may pay under it). A decision refused with
/// `ACTOR_NOT_AUTHORIZED` (as a dry run or another path could audit it) is then appended
/// straight to the trail, with an automatic suspension after it: neither is about this buyer.
async fn strangers(s: &Served) {
    let c = cart(
        "merchant_002",
        &[("FLIGHT-X", "Someone else's flight", 1, "99.00")],
        "0.00",
        "0.00",
    );
    let request = agent_mandate::domain::PaymentRequest {
        actor: agent(OTHER_AGENT),
        buyer_id: other_buyer(),
        mandate_id: TRAVEL.parse().unwrap(),
        action: PaymentAction::Authorize,
        merchant_id: c.merchant().merchant_id.clone(),
        snapshot_id: c.id(),
        amount: c.total(),
        urgency: None,
    };
    let command = agent_mandate::engine::ExecutePayment::new(
        "stranger".parse().unwrap(),
        request.clone(),
        c.clone(),
        examples::valid_checkout(c.id()),
        s.seeded.other_card.clone(),
    );
    assert!(matches!(
        s.seeded
            .engine
            .execute_payment(&agent_p(OTHER_AGENT), &command)
            .await,
        Err(EngineError::NotPermitted { .. })
    ));
    let refused = AuditEvent {
        at: examples::now(),
        kind: AuditKind::Decision {
            command: "execute_payment".into(),
            actor_id: OTHER_AGENT.parse().unwrap(),
            mandate_id: TRAVEL.parse().unwrap(),
            action: PaymentAction::Authorize,
            amount: c.total(),
            snapshot_id: c.id(),
            outcome: Outcome::Blocked,
            blockers: vec![agent_mandate::domain::Blocker::new(
                BlockerCode::ActorNotAuthorized,
                "not the mandate's actor",
            )],
            evidence: Vec::new(),
            request_digest: request.digest(),
            attempt_id: None,
        },
    };
    let suspended = AuditEvent {
        at: examples::now(),
        kind: AuditKind::AutoSuspended {
            actor_id: OTHER_AGENT.parse().unwrap(),
            consecutive_blocks: 5,
        },
    };
    for _ in 0..4 {
        s.seeded
            .mem
            .audit
            .append_all(&[refused.clone(), suspended.clone()])
            .await
            .expect("appended");
    }
    s.seeded.engine.flush_audit().await.expect("flushed");
}

#[tokio::test]
async fn a_strangers_requests_naming_the_buyers_mandate_are_not_on_their_trail_or_page() {
    let s = serve().await;
    let before = s
        .seeded
        .engine
        .buyer_events(&buyer_p(), &buyer(), 1, 1000)
        .await
        .unwrap()
        .events
        .len();
    strangers(&s).await;
    let refused = s
        .seeded
        .mem
        .audit
        .events()
        .iter()
        .filter(|e| e.body.contains("ACTOR_NOT_AUTHORIZED"))
        .count();
    assert!(refused >= 4, "{refused}");
    let after = s
        .seeded
        .engine
        .buyer_events(&buyer_p(), &buyer(), 1, 1000)
        .await
        .unwrap()
        .events;
    assert_eq!(
        after.len(),
        before,
        "a stranger's refusals reached the buyer's index"
    );
    let activity = s.get("/activity").await.body;
    assert!(!activity.contains(OTHER_AGENT) && !activity.contains("Someone else"));
    let overview = s.get("/").await.body;
    assert!(!overview.contains(OTHER_AGENT));
}

#[tokio::test]
async fn the_buyer_index_answers_what_reading_the_whole_trail_answers() {
    // The seeded trail: delegation, payments captured, held and refused, a confirmation
    // asked, another buyer's payment; then a decline, a stop and a kill switch.
    let s = serve().await;
    let p = s
        .post(
            "/waiting/confirmations/reject",
            &[
                ("mandate_id", TRAVEL),
                ("snapshot_id", &s.seeded.waiting_cart.id().to_string()),
            ],
        )
        .await;
    assert_eq!(p.status, 303);
    let p = s
        .post(
            "/stop/agents/agent_shopper",
            &[("confirm", "yes"), ("void_open", "yes")],
        )
        .await;
    assert_eq!(p.status, 303);
    strangers(&s).await;
    assert_eq!(s.post("/stop/all", &[("confirm", "yes")]).await.status, 303);
    s.seeded.engine.flush_audit().await.expect("flushed");
    let mut scanning = s.seeded.mem.ports.clone();
    scanning.audit = Counted::new(s.seeded.mem.ports.audit.clone(), false);
    let scanning = Engine::new(scanning, EngineConfig::default()).expect("engine");
    for (who, b) in [(buyer_p(), buyer()), (other_p(), other_buyer())] {
        let mut pages = Vec::new();
        for engine in [&s.seeded.engine, &scanning] {
            let mut seqs = Vec::new();
            let mut next = 1;
            loop {
                // Small pages: the paging of both answers is exercised.
                let page = engine.buyer_events(&who, &b, next, 7).await.expect("page");
                seqs.extend(page.events.iter().map(|e| e.seq));
                next = page.next;
                if page.at_end {
                    break;
                }
            }
            pages.push(seqs);
        }
        assert!(!pages[0].is_empty());
        assert_eq!(pages[0], pages[1], "the index and the scan differ for {b}");
    }
}

/// A served dashboard's trail after a decline, the buyers to compare, and the memory sink's
/// index of each.
async fn declined_trail() -> (Vec<ChainedEvent>, Vec<(BuyerId, Vec<u64>)>) {
    let s = serve().await;
    let p = s
        .post(
            "/waiting/confirmations/reject",
            &[
                ("mandate_id", TRAVEL),
                ("snapshot_id", &s.seeded.waiting_cart.id().to_string()),
            ],
        )
        .await;
    assert_eq!(p.status, 303);
    strangers(&s).await;
    let mut expected = Vec::new();
    for b in [buyer(), other_buyer()] {
        let subject = AuditSubject::Buyer(b.clone());
        let mem = seqs(
            s.seeded
                .mem
                .audit
                .indexed(&subject, 1, 100_000)
                .await
                .unwrap(),
        );
        assert!(!mem.is_empty());
        expected.push((b, mem));
    }
    (s.seeded.mem.audit.events(), expected)
}

fn seqs(v: Option<Vec<ChainedEvent>>) -> Vec<u64> {
    v.expect("the sink keeps an index")
        .iter()
        .map(|e| e.seq)
        .collect()
}

/// Appends `events` to `sink` in small batches and checks it indexes each buyer as memory did.
async fn same_index(
    sink: &dyn AuditSink,
    events: &[ChainedEvent],
    expected: &[(BuyerId, Vec<u64>)],
) {
    for chunk in events.chunks(5) {
        let batch: Vec<AuditEvent> = chunk.iter().map(|e| e.event().unwrap()).collect();
        sink.append_all(&batch).await.expect("appended");
    }
    let stored = sink.read(1, 100_000).await.unwrap();
    assert_eq!(
        stored.iter().map(|e| &e.body).collect::<Vec<_>>(),
        events.iter().map(|e| &e.body).collect::<Vec<_>>()
    );
    indexed_as(sink, expected, "appended").await;
}

async fn indexed_as(sink: &dyn AuditSink, expected: &[(BuyerId, Vec<u64>)], how: &str) {
    for (b, mem) in expected {
        let subject = AuditSubject::Buyer(b.clone());
        let got = seqs(sink.indexed(&subject, 1, 100_000).await.unwrap());
        // The backfill does not see which decision an automatic suspension followed: the
        // seeded trail has none, so both ways give the same index.
        assert_eq!(
            &got, mem,
            "{how}: the sink indexes {b} differently from memory"
        );
        let from = mem[mem.len() / 2];
        assert_eq!(
            seqs(sink.indexed(&subject, from, 3).await.unwrap()),
            mem.iter()
                .copied()
                .filter(|&n| n >= from)
                .take(3)
                .collect::<Vec<_>>(),
            "{how}: paged from {from}"
        );
    }
}

#[cfg(feature = "sqlite")]
#[tokio::test]
async fn sqlite_indexes_by_buyer_as_memory_does_and_its_migration_fills_the_same_index() {
    use agent_mandate::adapters::sqlite::{migrate, SqliteConfig, SqliteDatabase};
    let (events, expected) = declined_trail().await;
    let dir = std::env::temp_dir().join(format!("am-dash-index-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("state.db");
    {
        let db = SqliteDatabase::open(SqliteConfig::file(&path)).expect("db");
        same_index(&db.audit_sink(), &events, &expected).await;
    }
    // An older database: the buyer index (and the review queue after it) removed, the schema
    // back before them; the migrations fill the index from the stored bodies.
    let mut conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute_batch(
        "DELETE FROM audit_subjects WHERE subject LIKE 'buyer:%'; DROP TABLE audit_owners; \
         DROP TABLE review_queue; PRAGMA user_version = 7;",
    )
    .unwrap();
    migrate(&mut conn).expect("migrated");
    drop(conn);
    let db = SqliteDatabase::open(SqliteConfig::file(&path)).expect("db");
    indexed_as(&db.audit_sink(), &expected, "backfilled").await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[cfg(feature = "postgres")]
#[tokio::test]
async fn postgres_indexes_by_buyer_as_memory_does_and_its_migration_fills_the_same_index() {
    use agent_mandate::adapters::postgres::{migrate_with, PostgresAuditSink, PostgresConfig};
    let Ok(url) = std::env::var("DATABASE_URL") else {
        eprintln!("SKIPPED: DATABASE_URL not set (run scripts/with-postgres.sh)");
        return;
    };
    let (events, expected) = declined_trail().await;
    let schema = format!("dash_index_{}", std::process::id());
    let config = PostgresConfig::new(&url)
        .with_schema(&schema)
        .with_max_connections(2);
    let sink = PostgresAuditSink::connect_with(&config)
        .await
        .expect("sink");
    same_index(&sink, &events, &expected).await;
    let pool = config.pool().unwrap();
    pool.get()
        .await
        .unwrap()
        .batch_execute(
            "DELETE FROM audit_subjects WHERE subject LIKE 'buyer:%'; DROP TABLE audit_owners; \
             DROP TABLE review_queue; UPDATE am_meta SET value = '6' WHERE key = 'schema_version';",
        )
        .await
        .unwrap();
    migrate_with(&config).await.expect("migrated");
    indexed_as(&sink, &expected, "backfilled").await;
    drop(sink);
    PostgresConfig::new(&url)
        .pool()
        .unwrap()
        .get()
        .await
        .unwrap()
        .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
        .await
        .unwrap();
}

/// The planner delegates to `actor` under mandate `id` (narrower than its own).
async fn delegate(s: &Served, actor: &str, id: &str, key: &str) {
    let travel = s
        .seeded
        .engine
        .mandate(&buyer_p(), &TRAVEL.parse().unwrap())
        .await
        .unwrap();
    let mut child = travel.spec().clone();
    child.id = id.parse().expect("id");
    child.parent_id = Some(travel.id().clone());
    child.actor = agent(actor);
    child.scope.merchants = MerchantScope::Allowlist {
        merchant_ids: vec!["merchant_001".parse().unwrap()],
    };
    child.scope.amount.max_amount = eur("100.00");
    child.scope.budgets.per_transaction = Some(eur("100.00"));
    child.scope.budgets.lifetime = Some(eur("100.00"));
    child.scope.budgets.windows[0].max_amount = Some(eur("100.00"));
    child.scope.budgets.windows[0].max_count = Some(5);
    s.seeded
        .engine
        .derive_mandate(
            &agent_p(PLANNER),
            &DeriveMandate::new(key.parse().unwrap(), child),
        )
        .await
        .expect("delegated");
}

/// The href of the first link whose text starts with `text`.
fn link(body: &str, text: &str) -> String {
    let at = body.find(&format!(">{text}")).unwrap_or_else(|| {
        body.find(&format!("<strong class=\"warn\">{text}"))
            .unwrap_or_else(|| panic!("no link {text} in {body}"))
    });
    let open = body[..at].rfind("href=\"").expect("href");
    let rest = &body[open + 6..];
    rest[..rest.find('"').unwrap()].to_owned()
}

#[tokio::test]
async fn stop_link_for_agent_with_slash_reaches_its_stop_page() {
    let s = serve().await;
    delegate(&s, "x/y", "mandate/x?y#z", "d-slash").await;
    delegate(&s, "../all", "../all", "d-dots").await;
    let stop = s.get("/stop").await.body;
    for (agent_id, mandate) in [("x/y", "mandate/x?y#z"), ("../all", "../all")] {
        let href = link(&stop, &format!("Stop {agent_id}"));
        assert!(href.starts_with("/dash/stop/agents/"), "{href}");
        let path = href.trim_start_matches("/dash");
        let page = s.get(path).await;
        assert_eq!(page.status, 200, "{href}: {}", page.body);
        assert!(
            page.body.contains(&format!("Yes, stop {agent_id} now")),
            "{href} is not the stop page of {agent_id}: {}",
            page.body
        );
        assert!(!page.body.contains("Yes, stop everything now"));
        // The form posts to the same page, and stops that agent only.
        let token = page.csrf();
        let p = s
            .post_as(
                path,
                "buyer:buyer_456",
                "s1",
                &[("csrf", &token), ("confirm", "yes")],
            )
            .await;
        assert_eq!(p.status, 303, "{}", p.body);
        let m = s
            .seeded
            .engine
            .mandate(&buyer_p(), &mandate.parse().unwrap())
            .await
            .unwrap();
        assert_eq!(m.status(), MandateStatus::Revoked);
        // The mandate's own link reaches its page too.
        let over = s.get("/").await.body;
        let mhref = link(&over, mandate);
        let mp = s.get(mhref.trim_start_matches("/dash")).await;
        assert_eq!(mp.status, 200, "{mhref}");
        assert!(
            mp.body.contains(&format!("Mandate {mandate}")),
            "{}",
            mp.body
        );
    }
    // Nothing else was stopped: the buyer's kill switch is off, the planner still active.
    assert!(!s.get("/stop").await.body.contains("Everything is stopped"));
    assert_eq!(
        s.seeded
            .engine
            .mandate(&buyer_p(), &TRAVEL.parse().unwrap())
            .await
            .unwrap()
            .status(),
        MandateStatus::Active
    );
}

#[test]
fn ids_that_are_dot_segments_are_refused_where_they_enter() {
    for bad in [".", ".."] {
        assert!(ActorId::new(bad).is_err(), "{bad}");
        assert!(MandateId::new(bad).is_err(), "{bad}");
        assert!(BuyerId::new(bad).is_err(), "{bad}");
    }
    for fine in ["...", "../all", "a.b", ".x"] {
        assert!(ActorId::new(fine).is_ok(), "{fine}");
    }
}

#[tokio::test]
async fn stopping_an_agent_with_void_voids_its_delegates_open_authorizations() {
    let s = serve().await;
    // The booker (the planner's delegate) holds an authorization, not captured.
    let bag = cart(
        "merchant_001",
        &[("BAG-2", "Second bag", 1, "40.00")],
        "0.00",
        "0.00",
    );
    let out = pay(
        &s.seeded.engine,
        buyer(),
        BOOKER,
        BOOKING,
        &bag,
        &s.seeded.booker_card,
        "booker-held",
        false,
    )
    .await;
    let held = out.attempt().expect("authorized").clone();
    assert_eq!(held.status, AttemptStatus::Authorized);
    // Stopped first without the box ticked: the authorization stays.
    let p = s
        .post("/stop/agents/agent_planner", &[("confirm", "yes")])
        .await;
    assert_eq!(p.status, 303, "{}", p.body);
    let after = s.seeded.engine.attempt(&buyer_p(), &held.id).await.unwrap();
    assert_eq!(after.status, AttemptStatus::Authorized, "{after:?}");
    // Stopped again with it (the planner holds no usable mandate any more): what was
    // authorized below it, by its delegate, is voided.
    let p = s
        .post(
            "/stop/agents/agent_planner",
            &[("confirm", "yes"), ("void_open", "yes")],
        )
        .await;
    assert_eq!(p.status, 303, "{}", p.body);
    let after = s.seeded.engine.attempt(&buyer_p(), &held.id).await.unwrap();
    assert_eq!(after.status, AttemptStatus::Cancelled, "{after:?}");
    // A captured payment of the delegate is left as it is.
    let other = s
        .seeded
        .engine
        .attempt(&buyer_p(), &s.seeded.booked)
        .await
        .unwrap();
    assert_eq!(
        other.status,
        AttemptStatus::Captured,
        "a capture is not voided"
    );
}

#[tokio::test]
async fn only_the_mandates_buyer_may_decline_a_payment() {
    let s = serve().await;
    let engine = &s.seeded.engine;
    let snapshot = s.seeded.waiting_cart.id();
    let command = |key: &str| {
        DeclineConfirmation::new(
            key.parse().unwrap(),
            TRAVEL.parse().unwrap(),
            snapshot,
            Text::new("no").unwrap(),
        )
    };
    type Expected = fn(&EngineError) -> bool;
    let refusals: [(Principal, Expected); 4] = [
        (agent_p(PLANNER), |e| {
            matches!(e, EngineError::NotPermitted { .. })
        }),
        (other_p(), |e| matches!(e, EngineError::NotFound { .. })),
        (Principal::Operator("ops".parse().unwrap()), |e| {
            matches!(e, EngineError::NotPermitted { .. })
        }),
        (Principal::System("sweeper".parse().unwrap()), |e| {
            matches!(e, EngineError::NotPermitted { .. })
        }),
    ];
    for (i, (who, expected)) in refusals.iter().enumerate() {
        let err = engine
            .decline_confirmation(who, &command(&format!("bad-{i}")))
            .await
            .expect_err("refused");
        assert!(expected(&err), "{who}: {err:?}");
    }
    // Another buyer naming their own mandate cannot decline this buyer's cart under ours,
    // and their decline under their mandate does not touch ours.
    let theirs = DeclineConfirmation::new(
        "theirs".parse().unwrap(),
        OTHER_MANDATE.parse().unwrap(),
        snapshot,
        Text::new("no").unwrap(),
    );
    engine
        .decline_confirmation(&other_p(), &theirs)
        .await
        .expect("their own");
    // Nothing was recorded for our buyer: the agent still waits on the buyer.
    let out = pay(
        engine,
        buyer(),
        PLANNER,
        TRAVEL,
        &s.seeded.waiting_cart,
        &s.seeded.planner_card,
        "still-waiting",
        false,
    )
    .await;
    assert!(
        matches!(&out, PaymentOutcome::Refused(d) if d.has(BlockerCode::ConfirmationRequired) && !d.has(BlockerCode::ConfirmationDeclined)),
        "{out:?}"
    );
    // The buyer declines: the agent is refused; a replay under the same key answers the
    // first decline; the same key with another reason is a conflict.
    let first = engine
        .decline_confirmation(&buyer_p(), &command("mine"))
        .await
        .expect("declined");
    assert!(!first.replay && first.value.is_decline());
    let replay = engine
        .decline_confirmation(&buyer_p(), &command("mine"))
        .await
        .expect("replayed");
    assert!(replay.replay);
    assert_eq!(replay.value.id, first.value.id);
    let mut changed = command("mine");
    changed.reason = Text::new("another reason").unwrap();
    assert!(matches!(
        engine.decline_confirmation(&buyer_p(), &changed).await,
        Err(EngineError::IdempotencyConflict { .. })
    ));
    let out = pay(
        engine,
        buyer(),
        PLANNER,
        TRAVEL,
        &s.seeded.waiting_cart,
        &s.seeded.planner_card,
        "after-decline",
        false,
    )
    .await;
    assert!(
        matches!(&out, PaymentOutcome::Refused(d) if d.outcome == Outcome::Blocked && d.has(BlockerCode::ConfirmationDeclined)),
        "{out:?}"
    );
    // A confirmation that approves nothing is not a way around the audit event.
    let mut empty = Confirmation {
        id: ConfirmationId::new("conf_empty").unwrap(),
        buyer_id: buyer(),
        confirmed_by: agent_mandate::domain::Actor {
            id: "buyer_456".parse().unwrap(),
            kind: agent_mandate::domain::ActorKind::Human,
        },
        confirmed_at: Clock::now(&*s.seeded.mem.clock),
        expires_at: None,
        snapshot_id: snapshot,
        scope: ConfirmationScope {
            mandate_id: TRAVEL.parse().unwrap(),
            actions: agent_mandate::domain::ActionSet::EMPTY,
            max_amount: s.seeded.waiting_cart.total(),
        },
        channel_ref: "app".parse().unwrap(),
    };
    assert!(matches!(
        engine
            .record_confirmation(
                &buyer_p(),
                &RecordConfirmation::new("empty".parse().unwrap(), empty.clone())
            )
            .await,
        Err(EngineError::Invalid { ref field, .. }) if field == "confirmation.scope.actions"
    ));
    // The buyer changes their mind later: a confirmation of that cart after the decline lets
    // the agent pay it.
    s.seeded.mem.clock.advance(chrono::Duration::seconds(5));
    empty.id = ConfirmationId::new("conf_later").unwrap();
    empty.confirmed_at = Clock::now(&*s.seeded.mem.clock);
    empty.scope.actions = [PaymentAction::Authorize].into_iter().collect();
    engine
        .record_confirmation(
            &buyer_p(),
            &RecordConfirmation::new("later".parse().unwrap(), empty),
        )
        .await
        .expect("confirmed");
    let out = pay(
        engine,
        buyer(),
        PLANNER,
        TRAVEL,
        &s.seeded.waiting_cart,
        &s.seeded.planner_card,
        "after-change-of-mind",
        false,
    )
    .await;
    assert!(out.attempt().is_some(), "{out:?}");
}

#[tokio::test]
async fn declining_from_the_dashboard_is_the_buyers_own_and_needs_the_form_token() {
    let s = serve().await;
    let snapshot = s.seeded.waiting_cart.id().to_string();
    let declines = |s: &Served| {
        s.seeded
            .mem
            .audit
            .events()
            .iter()
            .filter_map(|e| e.event().ok())
            .filter(|e| matches!(e.kind, AuditKind::ConfirmationDeclined { .. }))
            .count()
    };
    // A forged form, another session's token, another buyer's token: 403, nothing recorded.
    let other_token = s
        .get_as("/stop/all", Some("buyer:buyer_other"), Some("o1"))
        .await
        .csrf();
    let other_session = s
        .get_as("/stop/all", Some("buyer:buyer_456"), Some("s2"))
        .await
        .csrf();
    for token in ["", "00", other_token.as_str(), other_session.as_str()] {
        let p = s
            .post_as(
                "/waiting/confirmations/reject",
                "buyer:buyer_456",
                "s1",
                &[
                    ("csrf", token),
                    ("mandate_id", TRAVEL),
                    ("snapshot_id", &snapshot),
                ],
            )
            .await;
        assert_eq!(p.status, 403, "{token}");
    }
    // The other buyer with their own valid token, naming our mandate: not found.
    let p = s
        .post_as(
            "/waiting/confirmations/reject",
            "buyer:buyer_other",
            "o1",
            &[
                ("csrf", &other_token),
                ("mandate_id", TRAVEL),
                ("snapshot_id", &snapshot),
            ],
        )
        .await;
    assert_eq!(p.status, 404, "{}", p.body);
    // An agent principal gets no dashboard at all.
    let p = s
        .post_as(
            "/waiting/confirmations/reject",
            "agent:agent_planner",
            "s1",
            &[("mandate_id", TRAVEL), ("snapshot_id", &snapshot)],
        )
        .await;
    assert_eq!(p.status, 403);
    // A snapshot id that is not one: 400, nothing recorded.
    let p = s
        .post(
            "/waiting/confirmations/reject",
            &[("mandate_id", TRAVEL), ("snapshot_id", "../all")],
        )
        .await;
    assert_eq!(p.status, 400);
    assert_eq!(declines(&s), 0);
    // The buyer's own form records it once, replayed or not.
    for _ in 0..2 {
        let p = s
            .post(
                "/waiting/confirmations/reject",
                &[
                    ("mandate_id", TRAVEL),
                    ("snapshot_id", &snapshot),
                    ("reason", "not this flight"),
                ],
            )
            .await;
        assert_eq!(p.status, 303, "{}", p.body);
    }
    assert_eq!(declines(&s), 1);
    let reason = s
        .seeded
        .mem
        .audit
        .events()
        .iter()
        .filter_map(|e| e.event().ok())
        .find_map(|e| match e.kind {
            AuditKind::ConfirmationDeclined {
                reason, buyer_id, ..
            } => Some((reason, buyer_id)),
            _ => None,
        });
    assert_eq!(reason, Some(("not this flight".to_owned(), buyer())));
}
