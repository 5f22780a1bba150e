//! Writes the JSON Schemas of the request and response bodies to `schemas/` (or the folder
//! given as the first argument), one file per type, and removes stale ones:
//!
//! ```text
//! cargo run --example json_schemas --features json-schema,axum
//! ```
//!
//! `tests/json_schemas.rs` fails when the committed files differ from what this writes.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("schemas"));
    let written = agent_mandate::schema::write_all(&dir)?;
    println!("{} schemas written to {}", written, dir.display());
    Ok(())
}
