//! Scoped payment tokens on the memory adapters: issuing a token (child mandate, vault
//! credential, record, audit), the redemption's own decision (parse, find, constant-time hash
//! compare, provider/buyer/expiry/currency/cap rules), and a whole redemption (that decision,
//! the claim, then `execute_payment` with capture against the fake PSP).
//!
//! ```text
//! cargo bench --features tokens,testkit --bench tokens -- --warm-up-time 1 --measurement-time 3
//! ```

#[path = "../tests/tokens_support/mod.rs"]
mod tokens_support;

use std::sync::atomic::{AtomicU64, Ordering};

use agent_mandate::ports::TokenUses;
use agent_mandate::tokens::{rules, IssueToken, RedeemToken, RedemptionOutcome};
use criterion::{criterion_group, criterion_main, Criterion};
use tokens_support::*;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn issue(c: &mut Criterion) {
    let rt = runtime();
    let f = rt.block_on(Fixture::memory());
    let n = AtomicU64::new(0);
    c.bench_function("tokens/issue", |b| {
        b.iter(|| {
            let i = n.fetch_add(1, Ordering::Relaxed);
            let cmd = IssueToken::new(
                key(&format!("bench-issue-{i}")),
                f.mandate.clone(),
                f.credential.clone(),
                redeemer("prov_a"),
                per_use("10.00", TokenUses::Single),
                86_400,
            );
            rt.block_on(f.tokens.issue(&agent_principal(), &cmd))
                .unwrap()
        })
    });
}

fn redeem(c: &mut Criterion) {
    let rt = runtime();
    let f = rt.block_on(Fixture::memory());
    let issued = rt.block_on(f.issue(
        "prov_a",
        per_use("10.00", TokenUses::CapBounded { max_uses: None }),
        300 * 86_400,
    ));
    let token = issued.token.clone().unwrap();
    let record = rt
        .block_on(f.tokens.store().token(&issued.record.id))
        .unwrap()
        .unwrap();
    let by = provider("prov_a");
    let amount = eur("0.01");
    c.bench_function("tokens/redeem_decision", |b| {
        b.iter(|| {
            // What a redemption decides before it claims: find the record, compare the hash,
            // check the rules.
            let found = rt
                .block_on(f.tokens.store().token(&record.id))
                .unwrap()
                .unwrap();
            let ok = found.hash.ct_eq(&record.hash)
                && rules::check_presented(&found, &by, &amount, None, now()).is_ok();
            assert!(ok);
        })
    });
    let n = AtomicU64::new(0);
    c.bench_function("tokens/redeem_charge", |b| {
        b.iter(|| {
            let i = n.fetch_add(1, Ordering::Relaxed);
            let cmd = RedeemToken::new(key(&format!("bench-redeem-{i}")), token.clone(), amount);
            let out = rt.block_on(f.tokens.redeem(&by, &cmd)).unwrap();
            assert!(matches!(out, RedemptionOutcome::Charged { .. }));
        })
    });
}

criterion_group!(benches, issue, redeem);
criterion_main!(benches);
