//! Dispute evidence and audit segments on SQLite, by trail length: the attempt's segment
//! verified against the nearest checkpoints (`SqliteAuditSink::segment`) beside the provided
//! body that verifies and reads the whole trail (the behaviour before checkpoints).
//!
//! Each trail is one SQLite file (WAL, `synchronous=NORMAL` while it is built): half of it
//! filler events about other attempts and the mandate, then one real payment through the
//! engine (authorized and captured), then the other half. The file is kept in
//! `AUDIT_BENCH_DIR` (default: the system temporary directory) and reused by the next run.
//!
//! Cells: `evidence/indexed/N` (`Engine::dispute_evidence`), `segment/indexed/N`
//! (`AuditSink::segment`), and, up to 20,000 events, `evidence/whole_trail/N` and
//! `segment/whole_trail/N` (the same calls through a sink wrapper that keeps the provided
//! bodies).
//!
//! Environment: `AUDIT_BENCH_EVENTS` (comma-separated trail lengths, default `2000,20000`;
//! `1000000` builds the one-million-event trail once, about a minute on a quiet machine).
//!
//! Run: `cargo bench --bench audit_segment --features sqlite,testkit -- --warm-up-time 1
//! --measurement-time 3`

use std::path::PathBuf;
use std::sync::Arc;

use agent_mandate::adapters::memory::{ManualClock, MemoryVault};
use agent_mandate::adapters::sqlite::{SqliteConfig, SqliteDatabase, Synchronous};
use agent_mandate::domain::{
    examples, AttemptId, AttemptStatus, AuditEvent, AuditKind, AuditSubject, ChainedEvent,
    CredentialRef, HoldAction, Money, Principal,
};
use agent_mandate::engine::{attempt_id_for, CreateMandate, Engine, EngineConfig, ExecutePayment};
use agent_mandate::ports::{
    AuditError, AuditReceipt, AuditSink, CredentialDisplay, CredentialKind, CredentialVault,
    FundingType, NewCredential, PaymentProvider, Ports, Secret,
};
use agent_mandate::testkit::FakePsp;
use criterion::{criterion_group, criterion_main, Criterion};

const KEY: &str = "bench-evidence-payment";

fn lengths() -> Vec<u64> {
    std::env::var("AUDIT_BENCH_EVENTS")
        .unwrap_or_else(|_| "2000,20000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect()
}

fn dir() -> PathBuf {
    std::env::var_os("AUDIT_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir)
}

/// Forwards only the required methods: `segment` and `verify` keep the provided bodies.
#[derive(Debug)]
struct WholeTrail(Arc<dyn AuditSink>);

#[async_trait::async_trait]
impl AuditSink for WholeTrail {
    async fn append(&self, e: &AuditEvent) -> Result<AuditReceipt, AuditError> {
        self.0.append(e).await
    }
    async fn append_all(&self, e: &[AuditEvent]) -> Result<Option<AuditReceipt>, AuditError> {
        self.0.append_all(e).await
    }
    async fn read(&self, from: u64, limit: usize) -> Result<Vec<ChainedEvent>, AuditError> {
        self.0.read(from, limit).await
    }
    async fn head(&self) -> Result<Option<AuditReceipt>, AuditError> {
        self.0.head().await
    }
}

fn filler(i: u64) -> AuditEvent {
    let attempt_id: AttemptId = format!("att_filler_{}", i / 4).parse().expect("id");
    let kind = if i.is_multiple_of(2) {
        AuditKind::AttemptTransition {
            attempt_id,
            from: AttemptStatus::PendingProviderResponse,
            to: AttemptStatus::Authorized,
            event: "authorized".into(),
            provider_ref: None,
            authorized: Some(
                Money::from_minor(14400, agent_mandate::domain::Currency::EUR).expect("m"),
            ),
            captured: None,
            refunded: None,
            decline_code: None,
        }
    } else {
        AuditKind::Hold {
            attempt_id,
            action: HoldAction::Placed,
            amount: Money::from_minor(14400, agent_mandate::domain::Currency::EUR).expect("m"),
            mandate_ids: vec![examples::travel_backpack_mandate().id().clone()],
            policy: None,
        }
    };
    AuditEvent {
        at: examples::now(),
        kind,
    }
}

fn card() -> NewCredential {
    NewCredential {
        kind: CredentialKind::PaymentMethod,
        owner: examples::agent().id,
        buyer_id: examples::buyer(),
        secret: Secret::new("pm_card_visa"),
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

fn engine(
    db: &SqliteDatabase,
    audit: Arc<dyn AuditSink>,
    rt: &tokio::runtime::Runtime,
) -> (Engine, CredentialRef) {
    let vault: Arc<dyn CredentialVault> = Arc::new(MemoryVault::new());
    let card = rt
        .block_on(vault.store(&"card".parse().expect("key"), card()))
        .expect("card")
        .credential
        .reference;
    let provider: Arc<dyn PaymentProvider> = Arc::new(FakePsp::with_vault(vault.clone()));
    let e = Engine::new(
        Ports {
            store: Arc::new(db.store()),
            provider,
            vault,
            audit,
            clock: Arc::new(ManualClock::new(examples::now())),
        },
        EngineConfig::default(),
    )
    .expect("engine");
    (e, card)
}

async fn append_filler(sink: &dyn AuditSink, from: u64, to: u64) {
    let mut i = from;
    while i < to {
        let end = (i + 5000).min(to);
        let batch: Vec<AuditEvent> = (i..end).map(filler).collect();
        sink.append_all(&batch).await.expect("append");
        i = end;
    }
}

/// The trail of `n` filler events with one payment in the middle (built once, then reused).
fn trail(n: u64, rt: &tokio::runtime::Runtime) -> (SqliteDatabase, AttemptId) {
    let path = dir().join(format!("am-audit-bench-v1-{n}.db"));
    let open = || {
        SqliteDatabase::open(
            SqliteConfig::file(&path)
                .synchronous(Synchronous::Normal)
                .readers(1),
        )
        .expect("open")
    };
    let attempt = attempt_id_for(&examples::agent().id, &KEY.parse().expect("key"));
    let db = open();
    let sink = db.audit_sink();
    let head = rt.block_on(sink.head()).expect("head").map_or(0, |h| h.seq);
    if head > n {
        return (db, attempt);
    }
    eprintln!("building the {n}-event trail in {}", path.display());
    rt.block_on(append_filler(&sink, head, n / 2));
    let (e, card) = engine(&db, Arc::new(sink.clone()), rt);
    let mut spec = examples::travel_backpack_mandate().spec().clone();
    spec.scope.max_uses = None;
    rt.block_on(e.create_mandate(
        &Principal::Buyer(examples::buyer()),
        &CreateMandate::new("bench-mandate".parse().expect("key"), spec),
    ))
    .expect("mandate");
    let snapshot = examples::travel_backpack_snapshot();
    let out = rt
        .block_on(
            e.execute_payment(
                &Principal::Agent(examples::agent().id),
                &ExecutePayment::new(
                    KEY.parse().expect("key"),
                    examples::authorize_request(&snapshot),
                    snapshot.clone(),
                    examples::valid_checkout(snapshot.id()),
                    card,
                )
                .with_capture(true),
            ),
        )
        .expect("payment");
    assert_eq!(out.attempt().map(|a| a.id.clone()), Some(attempt.clone()));
    let head = rt.block_on(sink.head()).expect("head").map_or(0, |h| h.seq);
    rt.block_on(append_filler(&sink, head, n + 1));
    drop(e);
    drop(db);
    (open(), attempt)
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    for n in lengths() {
        let (db, attempt) = trail(n, &rt);
        let indexed: Arc<dyn AuditSink> = Arc::new(db.audit_sink());
        let subject = AuditSubject::Attempt(attempt.clone());
        let (e, _) = engine(&db, indexed.clone(), &rt);
        let ev = rt.block_on(e.dispute_evidence(&attempt)).expect("evidence");
        assert!(ev.checks.iter().all(|c| c.passed), "{:#?}", ev.checks);
        let seg = rt.block_on(indexed.segment(&subject)).expect("segment");
        eprintln!(
            "{n} events: the attempt's {} events, verified {:?}",
            seg.events.len(),
            seg.verified
        );
        let mut g = c.benchmark_group("audit_segment_sqlite");
        g.sample_size(20);
        g.bench_function(format!("evidence/indexed/{n}"), |b| {
            b.iter(|| rt.block_on(e.dispute_evidence(&attempt)).expect("evidence"))
        });
        g.bench_function(format!("segment/indexed/{n}"), |b| {
            b.iter(|| rt.block_on(indexed.segment(&subject)).expect("segment"))
        });
        if n <= 20_000 {
            let whole: Arc<dyn AuditSink> = Arc::new(WholeTrail(indexed.clone()));
            let (e_whole, _) = engine(&db, whole.clone(), &rt);
            g.bench_function(format!("evidence/whole_trail/{n}"), |b| {
                b.iter(|| {
                    rt.block_on(e_whole.dispute_evidence(&attempt))
                        .expect("evidence")
                })
            });
            g.bench_function(format!("segment/whole_trail/{n}"), |b| {
                b.iter(|| rt.block_on(whole.segment(&subject)).expect("segment"))
            });
        }
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
