//! The official Rust SDK (`mpp` 0.18, no features) on the operations `benches/protocols.rs`
//! measures for agent-mandate: parse a challenge, issue one (HMAC id + header), and verify a
//! credential (parse the `Authorization` value, recompute the id). Prints the median of 15
//! runs of each, in microseconds per call.
//!
//! Run: `cargo run --release --manifest-path benches/mpp-rs-side/Cargo.toml`

use std::hint::black_box;
use std::time::Instant;

use mpp::protocol::core::Base64UrlJson;
use mpp::protocol::core::{
    compute_challenge_id, format_authorization, format_www_authenticate, parse_authorization,
    parse_www_authenticate, PaymentChallenge, PaymentCredential,
};

const SECRET: &str = "bench secret of thirty-two bytes";

fn issue() -> String {
    let request = Base64UrlJson::from_value(&serde_json::json!({
        "amount": "50", "currency": "eur", "description": "One answer",
        "methodDetails": {"networkId": "profile_bench", "paymentMethodTypes": ["card"]}
    }))
    .expect("request");
    let c = PaymentChallenge::with_secret_key_full(
        SECRET,
        "api.example.com",
        "stripe",
        "charge",
        request,
        Some("2026-06-28T09:05:00Z"),
        None,
        Some("One answer"),
        None,
        None,
    );
    format_www_authenticate(&c).expect("header")
}

fn median_us(mut f: impl FnMut(), n: u32) -> f64 {
    let mut runs: Vec<f64> = (0..15)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..n {
                f();
            }
            t.elapsed().as_secs_f64() * 1e6 / f64::from(n)
        })
        .collect();
    runs.sort_by(|a, b| a.total_cmp(b));
    runs[7]
}

fn main() {
    let header = issue();
    let challenge = parse_www_authenticate(&header).expect("parse");
    let credential = PaymentCredential::new(
        challenge.to_echo(),
        serde_json::json!({"spt": "spt_bench_1"}),
    );
    let auth = format_authorization(&credential).expect("authorization");
    println!("mpp 0.18.2 (no features), release");
    println!(
        "parse_challenge: {:.2} us",
        median_us(
            || {
                black_box(parse_www_authenticate(black_box(&header)).expect("parse"));
            },
            20_000
        )
    );
    println!(
        "issue_challenge: {:.2} us",
        median_us(
            || {
                black_box(issue());
            },
            20_000
        )
    );
    println!(
        "verify_credential: {:.2} us",
        median_us(
            || {
                let c = parse_authorization(black_box(&auth)).expect("credential");
                let e = &c.challenge;
                let id = compute_challenge_id(
                    SECRET,
                    &e.realm,
                    e.method.as_str(),
                    e.intent.as_str(),
                    e.request.raw(),
                    e.expires.as_deref(),
                    e.digest.as_deref(),
                    e.opaque.as_ref().map(|o| o.raw()),
                );
                assert_eq!(id, e.id);
            },
            20_000,
        )
    );
}
