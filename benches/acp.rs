//! The ACP delegate payment on the memory adapters: a request to a vault token (headers, strict
//! read, checks, idempotency record, vault, mandate, audit), a checkout session to a cart
//! snapshot, a redemption refused by its decision (another merchant), and a redemption that
//! pays (decision, hold, fake PSP, audit).
//!
//! With the `sqlite` feature, the same delegation and paid redemption on the SQLite store,
//! audit sink and vault (a file database in the temp directory, the adapter's default
//! synchronous setting): the `acp/sqlite/*` cells.
//!
//! Short runs only: `cargo bench --bench acp --features acp,testkit -- --warm-up-time 1
//! --measurement-time 3` (add `,sqlite` for the SQLite cells).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use agent_mandate::acp::{AcpConfig, AcpService, CheckoutSession, Redemption, RequestHeaders};
use agent_mandate::adapters::memory::MemoryPorts;
use agent_mandate::domain::{IdempotencyKey, Merchant, MerchantId, Principal};
use agent_mandate::engine::{Engine, EngineConfig};
use agent_mandate::testkit::FakePsp;
use chrono::{TimeZone, Utc};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion};

fn body(session: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "payment_method": {"type": "card", "card_number_type": "fpan", "number": "4242424242424242",
            "exp_month": "11", "exp_year": "2027", "cvc": "223", "display_card_funding_type": "credit",
            "display_brand": "visa", "display_last4": "4242", "metadata": {}},
        "allowance": {"reason": "one_time", "max_amount": 5000, "currency": "usd",
            "checkout_session_id": session, "merchant_id": "acme_store",
            "expires_at": "2026-04-20T10:00:00Z"},
        "risk_signals": [{"type": "card_testing", "score": 3, "action": "authorized"}],
        "metadata": {"source": "agent_checkout"}
    }))
    .unwrap()
}

const SESSION: &[u8] = br#"{"id": "cs_42", "status": "ready_for_payment", "currency": "usd",
  "line_items": [{"id": "li_1", "item": {"id": "jacket"}, "quantity": 1, "name": "Jacket",
    "unit_amount": 3900, "totals": []}],
  "totals": [{"type": "items_base_amount", "display_text": "Items", "amount": 3900},
             {"type": "tax", "display_text": "Tax", "amount": 330},
             {"type": "fulfillment", "display_text": "Shipping", "amount": 100},
             {"type": "total", "display_text": "Total", "amount": 4330}],
  "messages": [], "links": [], "capabilities": {}, "fulfillment_options": []}"#;

fn headers(key: &str) -> RequestHeaders {
    RequestHeaders::new()
        .with("Authorization", "Bearer sk")
        .with("Content-Type", "application/json")
        .with("API-Version", "2026-04-17")
        .with("Idempotency-Key", key)
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let now = Utc.with_ymd_and_hms(2026, 4, 20, 9, 0, 0).unwrap();
    let memory = MemoryPorts::new(now, |vault, clock| {
        Arc::new(FakePsp::with_vault_and_clock(vault, clock))
    });
    let engine = Engine::new(memory.ports.clone(), EngineConfig::default()).unwrap();
    let service = AcpService::new(
        engine,
        // Measures the delegation's own steps; signature verification is a separate cost.
        AcpConfig::unsigned_for_testing("acp-vault".parse().unwrap(), "5651".parse().unwrap()),
    );
    let caller = Principal::Agent("platform".parse().unwrap());
    let n = AtomicU64::new(0);
    let delegation = body("cs_42");

    c.bench_function("acp/delegate_payment_to_token", |b| {
        b.iter(|| {
            let key = format!("k{}", n.fetch_add(1, Ordering::Relaxed));
            rt.block_on(service.delegate(Some(&caller), None, &headers(&key), &delegation))
                .unwrap()
        })
    });

    c.bench_function("acp/checkout_session_to_snapshot", |b| {
        let merchant = Merchant {
            merchant_id: "acme_store".parse().unwrap(),
            marketplace_id: None,
            seller_id: None,
            mcc: "5651".parse().unwrap(),
        };
        b.iter(|| {
            let s = CheckoutSession::parse(SESSION).unwrap();
            s.snapshot(merchant.clone(), now, chrono::Duration::minutes(15))
                .unwrap()
        })
    });

    let token = rt
        .block_on(service.delegate(Some(&caller), None, &headers("refused"), &delegation))
        .unwrap()
        .token;
    let session = CheckoutSession::parse(SESSION).unwrap();
    let evil = MerchantId::new("evil_store").unwrap();
    c.bench_function("acp/redemption_refused_by_decision", |b| {
        b.iter(|| {
            let key =
                IdempotencyKey::new(format!("r{}", n.fetch_add(1, Ordering::Relaxed))).unwrap();
            rt.block_on(service.redeem(&Redemption::new(
                token.clone(),
                evil.clone(),
                session.clone(),
                key,
            )))
            .unwrap_err()
        })
    });

    let acme = MerchantId::new("acme_store").unwrap();
    c.bench_function("acp/redemption_paid", |b| {
        b.iter_batched(
            || {
                let key = format!("p{}", n.fetch_add(1, Ordering::Relaxed));
                rt.block_on(service.delegate(Some(&caller), None, &headers(&key), &delegation))
                    .unwrap()
                    .token
            },
            |token| {
                let key =
                    IdempotencyKey::new(format!("q{}", n.fetch_add(1, Ordering::Relaxed))).unwrap();
                rt.block_on(service.redeem(&Redemption::new(
                    token,
                    acme.clone(),
                    session.clone(),
                    key,
                )))
                .unwrap()
            },
            BatchSize::SmallInput,
        )
    });
}

/// The delegation and the paid redemption on the SQLite store, audit sink and vault.
#[cfg(feature = "sqlite")]
fn bench_sqlite(c: &mut Criterion) {
    use agent_mandate::adapters::keyring::{VaultKey, VaultKeyring};
    use agent_mandate::adapters::memory::ManualClock;
    use agent_mandate::adapters::sqlite::{SqliteConfig, SqliteDatabase};
    use agent_mandate::ports::{CredentialVault, Ports};

    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let now = Utc.with_ymd_and_hms(2026, 4, 20, 9, 0, 0).unwrap();
    let path = std::env::temp_dir().join(format!("acp-bench-{}.db", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let db = SqliteDatabase::open(SqliteConfig::file(&path)).unwrap();
    let vault: Arc<dyn CredentialVault> = Arc::new(db.vault(VaultKeyring::new(
        VaultKey::new("bench", [7u8; 32]).unwrap(),
    )));
    let clock = Arc::new(ManualClock::new(now));
    let ports = Ports {
        store: Arc::new(db.store()),
        provider: Arc::new(FakePsp::with_vault_and_clock(vault.clone(), clock.clone())),
        vault,
        audit: Arc::new(db.audit_sink()),
        clock,
    };
    let engine = Engine::new(ports, EngineConfig::default()).unwrap();
    let service = AcpService::new(
        engine,
        AcpConfig::unsigned_for_testing("acp-vault".parse().unwrap(), "5651".parse().unwrap()),
    );
    let caller = Principal::Agent("platform".parse().unwrap());
    let n = AtomicU64::new(0);
    let delegation = body("cs_42");
    c.bench_function("acp/sqlite/delegate_payment_to_token", |b| {
        b.iter(|| {
            let key = format!("k{}", n.fetch_add(1, Ordering::Relaxed));
            rt.block_on(service.delegate(Some(&caller), None, &headers(&key), &delegation))
                .unwrap()
        })
    });
    let session = CheckoutSession::parse(SESSION).unwrap();
    let acme = MerchantId::new("acme_store").unwrap();
    c.bench_function("acp/sqlite/redemption_paid", |b| {
        b.iter_batched(
            || {
                let key = format!("p{}", n.fetch_add(1, Ordering::Relaxed));
                rt.block_on(service.delegate(Some(&caller), None, &headers(&key), &delegation))
                    .unwrap()
                    .token
            },
            |token| {
                let key =
                    IdempotencyKey::new(format!("q{}", n.fetch_add(1, Ordering::Relaxed))).unwrap();
                rt.block_on(service.redeem(&Redemption::new(
                    token,
                    acme.clone(),
                    session.clone(),
                    key,
                )))
                .unwrap()
            },
            BatchSize::SmallInput,
        )
    });
    drop(service);
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
}

#[cfg(not(feature = "sqlite"))]
fn bench_sqlite(_: &mut Criterion) {}

criterion_group!(benches, bench, bench_sqlite);
criterion_main!(benches);
