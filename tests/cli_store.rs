//! The command line's operator commands, run as a real process on a SQLite file and on a
//! PostgreSQL database (`DATABASE_URL`, set by `scripts/with-postgres.sh`; without it the
//! PostgreSQL tests say SKIPPED and pass): `migrate`, `audit verify` (names the first bad
//! event and the states without their event: I9, I15), `usage`, `attempts --open`, `purge`
//! (I3), `reconcile` against localstripe (`LOCALSTRIPE_URL`, set by
//! `scripts/with-localstripe.sh`), and a negative case for each. No output shows the
//! database password or the PSP's key.
#![cfg(all(feature = "cli", feature = "sqlite", feature = "testkit"))]

mod common;
#[allow(unused_imports)]
use common::principals::*;

use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::Arc;

use agent_mandate::adapters::memory::{ManualClock, MemoryVault};
use agent_mandate::adapters::sqlite::{SqliteConfig, SqliteDatabase};
use agent_mandate::domain::{examples, AttemptStatus};
use agent_mandate::engine::{CreateMandate, Engine, EngineConfig, ExecutePayment};
use agent_mandate::ports::{AuditSink, Ports, Store};
use agent_mandate::testkit::{FakePsp, Fault, Op};
use common::engine::card;
use serde_json::Value;

fn cli(args: &[String], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_agent-mandate"));
    c.args(args)
        .env_remove("AGENT_MANDATE_POSTGRES_URL")
        .env_remove("STRIPE_API_KEY");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("binary runs")
}

fn args(words: &[&str], db: &[String]) -> Vec<String> {
    words
        .iter()
        .map(|w| (*w).to_owned())
        .chain(db.iter().cloned())
        .collect()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn json(o: &Output) -> Value {
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}\n{}", stdout(o), stderr(o)))
}

fn temp_db(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("am-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    dir.join("state.db")
}

/// A database the tests write through the library and read through the command line.
enum Db {
    Sqlite(PathBuf),
    #[cfg(feature = "postgres")]
    Postgres {
        url: String,
        schema: String,
    },
}

impl Db {
    /// The command line's database options.
    fn options(&self) -> Vec<String> {
        match self {
            Db::Sqlite(path) => vec!["--sqlite".into(), path.display().to_string()],
            #[cfg(feature = "postgres")]
            Db::Postgres { url, schema } => vec![
                "--postgres".into(),
                url.clone(),
                "--schema".into(),
                schema.clone(),
            ],
        }
    }

    async fn ports(&self) -> (Arc<dyn Store>, Arc<dyn AuditSink>) {
        match self {
            Db::Sqlite(path) => {
                let db = SqliteDatabase::open(SqliteConfig::file(path)).expect("open");
                (Arc::new(db.store()), Arc::new(db.audit_sink()))
            }
            #[cfg(feature = "postgres")]
            Db::Postgres { url, schema } => {
                use agent_mandate::adapters::postgres::{
                    PostgresAuditSink, PostgresConfig, PostgresStore,
                };
                let config = PostgresConfig::new(url)
                    .with_schema(schema)
                    .with_max_connections(2);
                let store = PostgresStore::connect_with(&config).await.expect("store");
                let audit = PostgresAuditSink::from_pool(store.pool().clone())
                    .await
                    .expect("audit");
                (Arc::new(store), Arc::new(audit))
            }
        }
    }

    /// Runs `sql` behind the adapters' backs; returns the rows changed.
    async fn exec(&self, sql: &str) -> u64 {
        match self {
            Db::Sqlite(path) => {
                let conn = rusqlite::Connection::open(path).expect("open");
                conn.execute(sql, []).expect("sql") as u64
            }
            #[cfg(feature = "postgres")]
            Db::Postgres { url, schema } => {
                use agent_mandate::adapters::postgres::PostgresConfig;
                let pool = PostgresConfig::new(url)
                    .with_schema(schema)
                    .pool()
                    .expect("pool");
                let client = pool.get().await.expect("client");
                client.execute(sql, &[]).await.expect("sql")
            }
        }
    }
}

/// The Travel Backpack mandate and one payment of it through the engine on `db`; with
/// `ambiguous`, the PSP times out before it processed the authorization (the attempt stays
/// ambiguous, its hold held). Returns (mandate id, attempt id).
async fn pay_once(db: &Db, key: &str, ambiguous: bool) -> (String, String) {
    let (store, audit) = db.ports().await;
    let vault = Arc::new(MemoryVault::new());
    let psp = Arc::new(FakePsp::with_vault(vault.clone()));
    let ports = Ports {
        store,
        provider: psp.clone(),
        vault,
        audit,
        clock: Arc::new(ManualClock::new(examples::now())),
    };
    let engine = Engine::new(ports, EngineConfig::default()).expect("engine");
    let mandate = examples::travel_backpack_mandate();
    engine
        .create_mandate(
            &buyer_p(),
            &CreateMandate::new("create-1".parse().expect("key"), mandate.spec().clone()),
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
    if ambiguous {
        psp.inject(Some(Op::Authorize), Fault::TimeoutBeforeEffect);
    }
    let snapshot = examples::travel_backpack_snapshot();
    let outcome = engine
        .execute_payment(
            &agent_p(),
            &ExecutePayment::new(
                key.parse().expect("key"),
                examples::authorize_request(&snapshot),
                snapshot.clone(),
                examples::valid_checkout(snapshot.id()),
                card,
            ),
        )
        .await
        .expect("pay");
    let attempt = outcome.attempt().expect("attempt");
    let want = if ambiguous {
        AttemptStatus::Ambiguous
    } else {
        AttemptStatus::Authorized
    };
    assert_eq!(attempt.status, want);
    engine.flush_audit().await.expect("flush");
    (mandate.id().to_string(), attempt.id.to_string())
}

/// Every operator command on `db` (fresh, without a schema), with its negative cases.
async fn operator_commands(db: &Db) {
    let opts = db.options();

    // Fresh: the operator commands refuse a database that is behind; only `migrate` migrates.
    if let Db::Sqlite(path) = db {
        std::fs::File::create(path).expect("empty file");
    }
    let behind = cli(&args(&["audit", "verify"], &opts), &[]);
    assert_eq!(behind.status.code(), Some(2), "{}", stderr(&behind));
    assert!(
        stderr(&behind).contains("version 0") && stderr(&behind).contains("agent-mandate migrate"),
        "{}",
        stderr(&behind)
    );
    let migrated = cli(&args(&["migrate", "--format", "json"], &opts), &[]);
    assert_eq!(migrated.status.code(), Some(0), "{}", stderr(&migrated));
    let m = json(&migrated);
    assert_eq!(m["from"], 0);
    let again = cli(&args(&["migrate"], &opts), &[]);
    assert!(
        stdout(&again).contains("nothing to do"),
        "{}",
        stdout(&again)
    );

    let (mandate, attempt) = pay_once(db, "pay-1", true).await;

    // audit verify: clean.
    let ok = cli(&args(&["audit", "verify"], &opts), &[]);
    assert_eq!(ok.status.code(), Some(0), "{}{}", stdout(&ok), stderr(&ok));
    assert!(stdout(&ok).contains("audit chain: ok"), "{}", stdout(&ok));
    assert!(stdout(&ok).contains("missing events: 0"), "{}", stdout(&ok));
    let ok = json(&cli(
        &args(&["audit", "verify", "--format", "json"], &opts),
        &[],
    ));
    assert_eq!(ok["ok"], true);
    assert_eq!(ok["attempts_checked"], 1);
    // The old name still works.
    let alias = cli(&args(&["verify-trail"], &opts), &[]);
    assert_eq!(alias.status.code(), Some(0), "{}", stderr(&alias));

    // usage: the ambiguous attempt's hold is held at the mandate.
    let usage = cli(&args(&["usage", &mandate, "--format", "json"], &opts), &[]);
    assert_eq!(usage.status.code(), Some(0), "{}", stderr(&usage));
    let u = json(&usage);
    assert_eq!(u["mandate_id"], mandate.as_str());
    let level = &u["chain"][0];
    assert_eq!(level["mandate_id"], mandate.as_str());
    assert_ne!(level["held"]["amount"], "0.00", "{u}");
    assert_eq!(level["spent"]["amount"], "0.00", "{u}");
    let text = stdout(&cli(&args(&["usage", &mandate], &opts), &[]));
    assert!(text.contains(&mandate) && text.contains("held"), "{text}");
    let unknown = cli(&args(&["usage", "mandate_nobody"], &opts), &[]);
    assert_eq!(unknown.status.code(), Some(2));
    assert!(
        stderr(&unknown).contains("no mandate mandate_nobody"),
        "{}",
        stderr(&unknown)
    );
    let invalid = cli(&args(&["usage", "not a mandate id"], &opts), &[]);
    assert_eq!(invalid.status.code(), Some(2));
    assert!(
        stderr(&invalid).contains("invalid mandate id"),
        "{}",
        stderr(&invalid)
    );

    // attempts --open: the ambiguous attempt.
    let open = cli(
        &args(&["attempts", "--open", "--format", "json"], &opts),
        &[],
    );
    assert_eq!(open.status.code(), Some(0), "{}", stderr(&open));
    let o = json(&open);
    assert_eq!(o["count"], 1);
    assert_eq!(o["attempts"][0]["attempt_id"], attempt.as_str());
    assert_eq!(o["attempts"][0]["status"], "ambiguous");
    let no_flag = cli(&args(&["attempts"], &opts), &[]);
    assert_eq!(no_flag.status.code(), Some(2));
    assert!(stderr(&no_flag).contains("--open"), "{}", stderr(&no_flag));
    let bad_limit = cli(
        &args(&["attempts", "--open", "--limit", "zero"], &opts),
        &[],
    );
    assert_eq!(bad_limit.status.code(), Some(2));

    // purge.
    let purge = cli(&args(&["purge", "--format", "json"], &opts), &[]);
    assert_eq!(purge.status.code(), Some(0), "{}", stderr(&purge));
    assert!(json(&purge)["idempotency_records"].is_u64());

    // A state changed behind the engine's back: the attempt and its status are named.
    let n = db
        .exec(&format!(
            "UPDATE attempts SET status = 'captured', \
             body = replace(body, '\"status\":\"ambiguous\"', '\"status\":\"captured\"') \
             WHERE id = '{attempt}'"
        ))
        .await;
    assert_eq!(n, 1);
    let bad = cli(&args(&["audit", "verify"], &opts), &[]);
    assert_eq!(bad.status.code(), Some(1), "{}", stdout(&bad));
    assert!(
        stderr(&bad).contains(&attempt) && stderr(&bad).contains("captured"),
        "{}",
        stderr(&bad)
    );
    assert!(
        stdout(&bad).contains("missing events: 1"),
        "{}",
        stdout(&bad)
    );

    // An audit event edited: the first bad event is named by seq, type and subject.
    let n = db
        .exec("UPDATE audit_events SET body = body || ' ' WHERE seq = 2")
        .await;
    assert_eq!(n, 1);
    let broken = cli(&args(&["audit", "verify", "--format", "json"], &opts), &[]);
    assert_eq!(broken.status.code(), Some(1), "{}", stderr(&broken));
    let b = json(&broken);
    assert_eq!(b["ok"], false);
    let first = &b["chain"]["first_bad_event"];
    assert_eq!(first["seq"], 2, "{b}");
    assert_eq!(first["fault"], "edited", "{b}");
    assert!(first["event"].is_string(), "{b}");
    assert!(
        stderr(&broken).contains("seq 2") && stderr(&broken).contains("edited"),
        "{}",
        stderr(&broken)
    );
}

#[tokio::test]
async fn operator_commands_on_a_sqlite_file() {
    operator_commands(&Db::Sqlite(temp_db("ops"))).await;
}

#[cfg(feature = "postgres")]
fn database_url() -> Option<String> {
    match std::env::var("DATABASE_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED: DATABASE_URL not set (run scripts/with-postgres.sh cargo test --all-features)"
            );
            None
        }
    }
}

#[cfg(feature = "postgres")]
fn fresh_schema(name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() % 1_000_000_000);
    format!("cli_{name}_{}_{nanos}", std::process::id())
}

#[cfg(feature = "postgres")]
#[tokio::test]
async fn operator_commands_on_postgres() {
    let Some(url) = database_url() else { return };
    let db = Db::Postgres {
        url,
        schema: fresh_schema("ops"),
    };
    // The fresh schema does not exist yet: `migrate` creates it.
    operator_commands(&db).await;
}

#[cfg(feature = "postgres")]
#[test]
fn postgres_errors_never_show_the_password() {
    // Nothing listens on port 9: the connection fails; the password is not in the output.
    let url = "postgres://operator:pw-Hunter2-secret@127.0.0.1:9/payments";
    for command in [
        &["audit", "verify"][..],
        &["usage", "mandate_x"],
        &["migrate"],
    ] {
        let out = cli(&args(command, &["--postgres".into(), url.into()]), &[]);
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        let all = format!("{}{}", stdout(&out), stderr(&out));
        assert!(!all.contains("pw-Hunter2-secret"), "{all}");
        assert!(!all.is_empty());
    }
    // The same through the environment.
    let out = cli(
        &["attempts".to_owned(), "--open".to_owned()],
        &[("AGENT_MANDATE_POSTGRES_URL", url)],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        !stderr(&out).contains("pw-Hunter2-secret"),
        "{}",
        stderr(&out)
    );
    // A URL that does not parse.
    let out = cli(
        &args(
            &["purge"],
            &[
                "--postgres".into(),
                "postgres://x:pw-Hunter2-secret@[::".into(),
            ],
        ),
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        !stderr(&out).contains("pw-Hunter2-secret"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn store_commands_need_a_database() {
    let none: Vec<String> = Vec::new();
    for command in [
        &["audit", "verify"][..],
        &["verify-trail"],
        &["usage", "mandate_x"],
        &["attempts", "--open"],
        &["purge"],
        &["migrate"],
    ] {
        let missing = cli(&args(command, &none), &[]);
        assert_eq!(missing.status.code(), Some(2), "{command:?}");
        assert!(
            stderr(&missing).contains("--sqlite FILE"),
            "{}",
            stderr(&missing)
        );
        if command[0] != "migrate" {
            let absent = cli(
                &args(
                    command,
                    &["--sqlite".into(), "/nonexistent/state.db".into()],
                ),
                &[],
            );
            assert_eq!(absent.status.code(), Some(2), "{command:?}");
            assert!(
                stderr(&absent).contains("no database file"),
                "{}",
                stderr(&absent)
            );
        }
    }
    let cannot = cli(
        &args(&["migrate", "--sqlite", "/nonexistent/dir/state.db"], &none),
        &[],
    );
    assert_eq!(cannot.status.code(), Some(2));
    assert!(
        stderr(&cannot).contains("cannot migrate"),
        "{}",
        stderr(&cannot)
    );
    let both = cli(
        &args(
            &["purge", "--sqlite", "a.db", "--postgres", "postgres://h/db"],
            &none,
        ),
        &[],
    );
    assert_eq!(both.status.code(), Some(2));
    let unknown = cli(&args(&["audit", "repair", "--sqlite", "a.db"], &none), &[]);
    assert_eq!(unknown.status.code(), Some(2));
    assert!(stderr(&unknown).contains("unknown audit command repair"));
}

/// An ambiguous attempt on a SQLite file, resolved by `reconcile` against localstripe:
/// localstripe has no payment for it and its deadline passed long ago, so it fails and its
/// hold is released.
#[cfg(feature = "http")]
#[tokio::test]
async fn reconcile_resolves_an_ambiguous_attempt_against_localstripe() {
    let url = match std::env::var("LOCALSTRIPE_URL") {
        Ok(url) if !url.is_empty() => url,
        _ => {
            assert!(
                std::env::var_os("REQUIRE_LOCALSTRIPE").is_none(),
                "REQUIRE_LOCALSTRIPE is set but LOCALSTRIPE_URL is not"
            );
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED: LOCALSTRIPE_URL not set (run scripts/with-localstripe.sh cargo test --all-features)"
            );
            return;
        }
    };
    let db = Db::Sqlite(temp_db("reconcile"));
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() % 1_000_000_000);
    let key = format!("cli-reconcile-{}-{nanos}", std::process::id());
    let (mandate, attempt) = pay_once(&db, &key, true).await;
    let opts = db.options();
    let api_key = "sk_test_cli_reconcile_key";

    let out = cli(
        &args(
            &["reconcile", "--stripe-url", &url, "--format", "json"],
            &opts,
        ),
        &[("STRIPE_API_KEY", api_key)],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let r = json(&out);
    let swept = r["attempts"].as_array().expect("attempts");
    let mine = swept
        .iter()
        .find(|a| a["attempt_id"] == attempt.as_str())
        .unwrap_or_else(|| panic!("{r}"));
    assert_eq!(mine["status"], "failed", "{r}");
    assert_eq!(r["still_open"], 0, "{r}");
    assert!(!stdout(&out).contains(api_key) && !stderr(&out).contains(api_key));

    let open = json(&cli(
        &args(&["attempts", "--open", "--format", "json"], &opts),
        &[],
    ));
    assert_eq!(open["count"], 0, "{open}");
    let usage = json(&cli(
        &args(&["usage", &mandate, "--format", "json"], &opts),
        &[],
    ));
    assert_eq!(usage["chain"][0]["held"]["amount"], "0.00", "{usage}");
    let trail = cli(&args(&["audit", "verify"], &opts), &[]);
    assert_eq!(trail.status.code(), Some(0), "{}", stderr(&trail));
}

/// `reconcile` without a PSP, with a bad URL, or a PSP that cannot be reached: usage errors,
/// or the attempt left open; the key never printed.
#[cfg(feature = "http")]
#[tokio::test]
async fn reconcile_needs_a_reachable_psp_and_never_prints_the_key() {
    let db = Db::Sqlite(temp_db("reconcile-neg"));
    let (_, attempt) = pay_once(&db, "pay-neg", true).await;
    let opts = db.options();
    let api_key = "sk_test_never_printed_4242";

    let no_url = cli(&args(&["reconcile"], &opts), &[("STRIPE_API_KEY", api_key)]);
    assert_eq!(no_url.status.code(), Some(2));
    assert!(
        stderr(&no_url).contains("--stripe-url"),
        "{}",
        stderr(&no_url)
    );
    let no_key = cli(
        &args(&["reconcile", "--stripe-url", "http://127.0.0.1:9"], &opts),
        &[],
    );
    assert_eq!(no_key.status.code(), Some(2));
    assert!(
        stderr(&no_key).contains("STRIPE_API_KEY"),
        "{}",
        stderr(&no_key)
    );
    let bad_url = cli(
        &args(&["reconcile", "--stripe-url", "not a url"], &opts),
        &[("STRIPE_API_KEY", api_key)],
    );
    assert_eq!(bad_url.status.code(), Some(2));
    assert!(
        stderr(&bad_url).contains("base_url"),
        "{}",
        stderr(&bad_url)
    );

    // Nothing listens on port 9: the attempt cannot be reconciled now and stays open.
    let dead = cli(
        &args(
            &[
                "reconcile",
                "--stripe-url",
                "http://127.0.0.1:9",
                "--format",
                "json",
            ],
            &opts,
        ),
        &[("STRIPE_API_KEY", api_key)],
    );
    assert_eq!(dead.status.code(), Some(0), "{}", stderr(&dead));
    let r = json(&dead);
    assert_eq!(r["still_open"], 1, "{r}");
    assert_eq!(r["attempts"][0]["attempt_id"], attempt.as_str());
    let all = format!("{}{}", stdout(&dead), stderr(&dead));
    assert!(!all.contains(api_key), "{all}");
}
