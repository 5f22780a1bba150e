//! Criterion benchmarks of the pure domain (DESIGN.md section 6):
//! - the decision for a three-level delegation chain and a 20-item cart (goal: median < 1 us);
//! - the snapshot id against plain SHA-256 over the same canonical bytes (goal: within 2x).
//!
//! Run: `cargo bench --bench decision`

use std::hint::black_box;

use agent_mandate::domain::{evaluate, examples, CartSnapshot};
use criterion::{criterion_group, criterion_main, Criterion};
use sha2::{Digest, Sha256};

fn decision(c: &mut Criterion) {
    let mut group = c.benchmark_group("decision");
    let allowed = examples::three_level_document(20);
    assert!(
        evaluate(&allowed.input()).is_allowed(),
        "the benchmark case must be allowed"
    );
    group.bench_function("allowed_3_level_chain_20_items", |b| {
        b.iter(|| evaluate(black_box(&allowed.input())))
    });
    let mut blocked = examples::three_level_document(20);
    blocked.checkout = examples::invalid_checkout();
    blocked.request.amount =
        agent_mandate::domain::Money::parse("9999.00", blocked.request.amount.currency())
            .expect("valid amount");
    assert!(!evaluate(&blocked.input()).is_allowed());
    group.bench_function("blocked_3_level_chain_20_items", |b| {
        b.iter(|| evaluate(black_box(&blocked.input())))
    });
    let story = examples::travel_backpack_document();
    group.bench_function("allowed_travel_backpack_1_level", |b| {
        b.iter(|| evaluate(black_box(&story.input())))
    });
    group.finish();
}

fn snapshot_id(c: &mut Criterion) {
    let mut group = c.benchmark_group("snapshot_id");
    let doc = examples::three_level_document(20);
    let content = doc.snapshot.content().clone();
    let bytes = content.canonical_json();
    assert_eq!(
        Sha256::digest(&bytes).as_slice(),
        content.content_id().as_bytes().as_slice(),
        "both sides must hash the same bytes"
    );
    group.throughput(criterion::Throughput::Bytes(bytes.len() as u64));
    group.bench_function("content_id_20_items", |b| {
        b.iter(|| black_box(&content).content_id())
    });
    group.bench_function("plain_sha256_same_bytes", |b| {
        b.iter(|| Sha256::digest(black_box(&bytes)))
    });
    group.bench_function("canonical_bytes_only_20_items", |b| {
        b.iter(|| black_box(&content).canonical_json())
    });
    group.bench_function("validate_and_id_20_items", |b| {
        b.iter(|| CartSnapshot::new(black_box(content.clone())))
    });
    group.finish();
}

criterion_group!(benches, decision, snapshot_id);
criterion_main!(benches);
