//! The command line's store commands on a SQLite file: `verify-trail` finds nothing missing
//! after real payments, names an attempt whose state was changed behind the engine's back
//! (exit 1), and `purge` deletes idempotency records past their retention (I15, I3).
#![cfg(all(feature = "cli", feature = "sqlite", feature = "testkit"))]

mod common;
#[allow(unused_imports)]
use common::principals::*;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

use agent_mandate::adapters::memory::{ManualClock, MemoryVault};
use agent_mandate::adapters::sqlite::{SqliteConfig, SqliteDatabase};
use agent_mandate::domain::examples;
use agent_mandate::engine::{CreateMandate, Engine, EngineConfig, ExecutePayment};
use agent_mandate::ports::Ports;
use agent_mandate::testkit::FakePsp;
use common::engine::card;

fn cli(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_agent-mandate"))
        .args(args)
        .output()
        .expect("binary runs")
}

fn temp_db(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("am-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    dir.join("state.db")
}

/// One authorized payment of the Travel Backpack story, stored in `path`.
async fn pay_once(path: &Path) -> String {
    let db = SqliteDatabase::open(SqliteConfig::file(path)).expect("open");
    let vault = Arc::new(MemoryVault::new());
    let ports = Ports {
        store: Arc::new(db.store()),
        provider: Arc::new(FakePsp::with_vault(vault.clone())),
        vault,
        audit: Arc::new(db.audit_sink()),
        clock: Arc::new(ManualClock::new(examples::now())),
    };
    let engine = Engine::new(ports, EngineConfig::default()).expect("engine");
    engine
        .create_mandate(
            &buyer_p(),
            &CreateMandate::new(
                "create-1".parse().expect("key"),
                examples::travel_backpack_mandate().spec().clone(),
            ),
        )
        .await
        .expect("mandate");
    let card = engine
        .store_credential(
            &buyer_p(),
            &"card-1".parse().expect("key"),
            card(&examples::agent().id, "pm_card_visa"),
        )
        .await
        .expect("card")
        .value
        .reference;
    let snapshot = examples::travel_backpack_snapshot();
    let outcome = engine
        .execute_payment(
            &agent_p(),
            &ExecutePayment::new(
                "pay-1".parse().expect("key"),
                examples::authorize_request(&snapshot),
                snapshot.clone(),
                examples::valid_checkout(snapshot.id()),
                card,
            ),
        )
        .await
        .expect("pay");
    outcome.attempt().expect("attempt").id.to_string()
}

#[tokio::test]
async fn verify_trail_and_purge_on_a_sqlite_file() {
    let path = temp_db("trail");
    let attempt = pay_once(&path).await;
    let file = path.to_str().expect("utf-8 path");

    let ok = cli(&["verify-trail", "--sqlite", file]);
    let out = String::from_utf8_lossy(&ok.stdout);
    assert_eq!(ok.status.code(), Some(0), "{out}");
    assert!(out.contains("missing events: 0"), "{out}");
    assert!(out.contains("attempts checked: 1"), "{out}");

    // The attempt captured behind the engine's back: no event records it.
    let conn = rusqlite::Connection::open(&path).expect("open");
    let n = conn
        .execute(
            "UPDATE attempts SET status = 'captured', \
             body = replace(body, '\"status\":\"authorized\"', '\"status\":\"captured\"') \
             WHERE id = ?1",
            [&attempt],
        )
        .expect("tamper");
    assert_eq!(n, 1);
    drop(conn);
    let bad = cli(&["verify-trail", "--sqlite", file]);
    let err = String::from_utf8_lossy(&bad.stderr);
    assert_eq!(bad.status.code(), Some(1), "{err}");
    assert!(err.contains(&attempt) && err.contains("captured"), "{err}");

    let purge = cli(&["purge", "--sqlite", file]);
    let out = String::from_utf8_lossy(&purge.stdout);
    assert_eq!(purge.status.code(), Some(0), "{out}");
    assert!(out.starts_with("purged "), "{out}");
}

#[test]
fn store_commands_need_a_database_file() {
    let missing = cli(&["verify-trail"]);
    assert_eq!(missing.status.code(), Some(2));
    let absent = cli(&["purge", "--sqlite", "/nonexistent/state.db"]);
    assert_eq!(absent.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&absent.stderr).contains("no database file"));
}
