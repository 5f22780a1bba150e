//! The benchmark's 1,024 requests ([`peers::BENCH_SEED`]) as JSON lines, with agent-mandate's own
//! decision on each, for engines outside Rust (`benches/peers/bouncer/compare.py`).
//!
//! One object per line, in the benchmark's order, plain integers only (amounts in minor units,
//! times in Unix seconds):
//!
//! - `index`, `refusals` (the rule kinds the request was built to break), `now`;
//! - the request: `agent` (`"Kind:id"`, the actor kind and id in one string), `actor_kind`,
//!   `actor_id`, `currency`, `exponent` (the currency's minor-unit digits), `amount`,
//!   `merchant`, `mcc`;
//! - `leaf`, the mandate the request invokes: `id`, `agent`, `status`, `valid_from`,
//!   `expires_at`, `active` (status active and `valid_from <= now < expires_at`), `currency`,
//!   `exponent`, `merchants`, `mccs`, `per_tx`, `window_seconds`, `window_cap`, `window_used`;
//! - `ancestors` (how many mandates above the leaf) and `ancestor_blocks` (whether one of them
//!   alone refuses the request: not in force or over its cap);
//! - `allowed`: agent-mandate's decision (`evaluate` on the benchmark's `EvaluationDocument`).
//!
//! Run: `cargo run -q -p peers --release --bin peers-export -- [PATH]` (stdout without a path).

use std::fs::File;
use std::io::{self, BufWriter, Write};

use agent_mandate::domain::Currency;
use peers::case::{ActorRef, Case, Level, Status, WINDOW_SECONDS};
use peers::{native, SetupError, BENCH_CASES, BENCH_SEED};
use serde_json::{json, Value};

fn agent(a: &ActorRef) -> String {
    format!("{}:{}", a.kind.as_str(), a.id)
}

fn in_force(level: &Level, now: i64) -> bool {
    level.status == Status::Active && level.valid_from <= now && now < level.expires_at
}

fn exponent(code: &str) -> Result<u32, SetupError> {
    Ok(Currency::from_code(code)?.exponent())
}

fn line(case: &Case) -> Result<Value, SetupError> {
    let allowed = native::allows(&native::document(case)?);
    let leaf = case.leaf();
    let window = leaf
        .window
        .ok_or_else(|| SetupError::new(format!("case #{}: leaf without window", case.index)))?;
    let ancestor_blocks = case
        .ancestors()
        .any(|a| !in_force(a, case.now) || a.lifetime.is_none_or(|b| b.used + case.amount > b.cap));
    Ok(json!({
        "index": case.index,
        "refusals": case.refusals.iter().map(|r| format!("{r:?}")).collect::<Vec<_>>(),
        "now": case.now,
        "agent": agent(&case.actor),
        "actor_kind": case.actor.kind.as_str(),
        "actor_id": case.actor.id,
        "currency": case.currency,
        "exponent": exponent(case.currency)?,
        "amount": case.amount,
        "merchant": case.merchant,
        "mcc": case.mcc,
        "leaf": {
            "id": leaf.id,
            "agent": agent(&leaf.actor),
            "status": leaf.status.as_str(),
            "valid_from": leaf.valid_from,
            "expires_at": leaf.expires_at,
            "active": in_force(leaf, case.now),
            "currency": leaf.currency,
            "exponent": exponent(leaf.currency)?,
            "merchants": leaf.merchants,
            "mccs": leaf.mccs,
            "per_tx": leaf.per_tx,
            "window_seconds": WINDOW_SECONDS,
            "window_cap": window.cap,
            "window_used": window.used,
        },
        "ancestors": case.chain.len() - 1,
        "ancestor_blocks": ancestor_blocks,
        "allowed": allowed,
    }))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out: Box<dyn Write> = match std::env::args_os().nth(1) {
        Some(path) => Box::new(File::create(path)?),
        None => Box::new(io::stdout().lock()),
    };
    let mut out = BufWriter::new(out);
    for case in peers::generate(BENCH_SEED, BENCH_CASES) {
        serde_json::to_writer(&mut out, &line(&case)?)?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(())
}
