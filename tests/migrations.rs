//! Migrations run by the service itself: with the migrations on open turned off, a database
//! that is behind is refused with the typed error naming both versions (never used with an
//! old schema); `migrate` brings it current and is a no-op the second time; the exported SQL
//! applied by hand, one migration per transaction, gives a database the adapters accept. On
//! SQLite always, on PostgreSQL with `DATABASE_URL` (`scripts/with-postgres.sh`; without it
//! those tests say SKIPPED and pass).
#![cfg(feature = "sqlite")]

use std::path::PathBuf;

use agent_mandate::adapters::sqlite::{
    migrate, migrate_file, schema_version, SqliteConfig, SqliteDatabase, MIGRATIONS, SCHEMA_VERSION,
};
use agent_mandate::domain::examples;
use agent_mandate::ports::{Store, StoreError};

fn temp_db(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("am-mig-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    dir.join("state.db")
}

fn checked(path: &PathBuf) -> Result<SqliteDatabase, StoreError> {
    SqliteDatabase::open(SqliteConfig::file(path).run_migrations(false))
}

/// The store works on `db`: a mandate written and read back.
async fn usable(db: &SqliteDatabase) {
    let store = db.store();
    let mandate = examples::travel_backpack_mandate();
    store.insert_mandate(&mandate).await.expect("insert");
    assert_eq!(
        store.mandate(mandate.id()).await.expect("read"),
        Some(mandate)
    );
}

#[tokio::test]
async fn sqlite_opt_out_refuses_a_fresh_database_until_migrated() {
    let path = temp_db("fresh");
    match checked(&path) {
        Err(StoreError::SchemaBehind { found, expected }) => {
            assert_eq!((found, expected), (0, SCHEMA_VERSION));
        }
        other => panic!("expected SchemaBehind, got {other:?}"),
    }
    // Refusing created no table.
    let conn = rusqlite::Connection::open(&path).expect("open");
    let tables: i64 = conn
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table'",
            [],
            |r| r.get(0),
        )
        .expect("count");
    assert_eq!(tables, 0);
    drop(conn);

    let done = migrate_file(&path).expect("migrate");
    assert_eq!((done.from, done.to), (0, SCHEMA_VERSION));
    assert!(!done.is_noop());
    let again = migrate_file(&path).expect("migrate again");
    assert!(again.is_noop(), "{again:?}");
    let db = checked(&path).expect("opens once migrated");
    usable(&db).await;
}

#[tokio::test]
async fn sqlite_refuses_a_database_one_migration_behind() {
    let path = temp_db("behind");
    let mut conn = rusqlite::Connection::open(&path).expect("open");
    for m in &MIGRATIONS[..MIGRATIONS.len() - 1] {
        let tx = conn.transaction().expect("tx");
        tx.execute_batch(m.sql).expect("sql");
        tx.commit().expect("commit");
    }
    assert_eq!(schema_version(&conn).expect("version"), SCHEMA_VERSION - 1);
    drop(conn);
    match checked(&path) {
        Err(e @ StoreError::SchemaBehind { .. }) => {
            let shown = e.to_string();
            assert!(
                shown.contains(&format!("version {}", SCHEMA_VERSION - 1))
                    && shown.contains(&format!("version {SCHEMA_VERSION}")),
                "{shown}"
            );
        }
        other => panic!("expected SchemaBehind, got {other:?}"),
    }
    // The default (migrations on) brings it current.
    let db = SqliteDatabase::open(SqliteConfig::file(&path)).expect("migrates");
    usable(&db).await;
}

#[tokio::test]
async fn sqlite_exported_sql_applied_by_hand_is_accepted() {
    let path = temp_db("by-hand");
    let conn = rusqlite::Connection::open(&path).expect("open");
    for m in MIGRATIONS {
        // What a migration tool does: each file in a transaction of its own, in order.
        conn.execute_batch(&format!("BEGIN; {} COMMIT;", m.sql))
            .unwrap_or_else(|e| panic!("migration {} ({}): {e}", m.version, m.name));
    }
    drop(conn);
    let db = checked(&path).expect("the hand-migrated database opens with migrations off");
    usable(&db).await;
    drop(db);
    // And the runner agrees that nothing is missing.
    let mut conn = rusqlite::Connection::open(&path).expect("open");
    assert!(migrate(&mut conn).expect("migrate").is_noop());
}

#[test]
fn sqlite_refuses_a_newer_database_either_way() {
    let path = temp_db("newer");
    migrate_file(&path).expect("migrate");
    let conn = rusqlite::Connection::open(&path).expect("open");
    conn.execute_batch(&format!("PRAGMA user_version = {}", SCHEMA_VERSION + 1))
        .expect("bump");
    drop(conn);
    for config in [
        SqliteConfig::file(&path),
        SqliteConfig::file(&path).run_migrations(false),
    ] {
        assert!(
            matches!(
                SqliteDatabase::open(config),
                Err(StoreError::Corrupt {
                    table: "schema",
                    ..
                })
            ),
            "a newer schema must be refused"
        );
    }
    assert!(migrate_file(&path).is_err());
}

#[cfg(feature = "postgres")]
mod postgres {
    use agent_mandate::adapters::postgres::{
        migrate, migrate_client, migrate_with, schema_version, PostgresAuditSink, PostgresConfig,
        PostgresStore, MIGRATIONS, SCHEMA_VERSION,
    };
    use agent_mandate::domain::examples;
    use agent_mandate::ports::{AuditError, Store, StoreError};

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

    fn fresh(url: &str, name: &str) -> (PostgresConfig, String) {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() % 1_000_000_000);
        let schema = format!("mig_{name}_{}_{nanos}", std::process::id());
        (
            PostgresConfig::new(url)
                .with_schema(&schema)
                .with_max_connections(2),
            schema,
        )
    }

    async fn usable(store: &PostgresStore) {
        let mandate = examples::travel_backpack_mandate();
        store.insert_mandate(&mandate).await.expect("insert");
        assert_eq!(
            store.mandate(mandate.id()).await.expect("read"),
            Some(mandate)
        );
    }

    #[tokio::test]
    async fn postgres_opt_out_refuses_a_fresh_schema_until_migrated() {
        let Some(url) = database_url() else { return };
        let (config, _) = fresh(&url, "fresh");
        let off = config.clone().with_migrations(false);
        match PostgresStore::connect_with(&off).await {
            Err(StoreError::SchemaBehind { found, expected }) => {
                assert_eq!((found, expected), (0, SCHEMA_VERSION));
            }
            other => panic!("expected SchemaBehind, got {other:?}"),
        }
        match PostgresAuditSink::connect_with(&off).await {
            Err(AuditError::Other(source)) => {
                assert!(
                    matches!(
                        source.downcast_ref::<StoreError>(),
                        Some(StoreError::SchemaBehind { found: 0, .. })
                    ),
                    "{source}"
                );
            }
            other => panic!("expected the audit sink to refuse, got {other:?}"),
        }
        let done = migrate_with(&config).await.expect("migrate");
        assert_eq!((done.from, done.to), (0, SCHEMA_VERSION));
        assert!(migrate_with(&config).await.expect("again").is_noop());
        let store = PostgresStore::connect_with(&off).await.expect("opens");
        assert!(migrate(store.pool()).await.expect("pool").is_noop());
        assert_eq!(
            schema_version(store.pool()).await.expect("version"),
            SCHEMA_VERSION
        );
        usable(&store).await;
        PostgresAuditSink::from_pool_checked(store.pool().clone())
            .await
            .expect("audit sink on the migrated schema");
    }

    #[tokio::test]
    async fn postgres_exported_sql_applied_by_hand_is_accepted() {
        let Some(url) = database_url() else { return };
        let (config, schema) = fresh(&url, "by_hand");
        // Only a plain pool on the default schema: the schema made by hand, as a DBA would.
        let admin = PostgresConfig::new(&url).pool().expect("pool");
        let client = admin.get().await.expect("client");
        client
            .batch_execute(&format!("CREATE SCHEMA {schema}"))
            .await
            .expect("schema");
        drop(client);
        let pool = config.pool().expect("pool");
        // One migration behind: refused.
        let client = pool.get().await.expect("client");
        for m in &MIGRATIONS[..MIGRATIONS.len() - 1] {
            client
                .batch_execute(&format!("BEGIN; {} COMMIT;", m.sql))
                .await
                .unwrap_or_else(|e| panic!("migration {} ({}): {e}", m.version, m.name));
        }
        drop(client);
        match PostgresStore::from_pool_checked(pool.clone()).await {
            Err(StoreError::SchemaBehind { found, expected }) => {
                assert_eq!((found, expected), (SCHEMA_VERSION - 1, SCHEMA_VERSION));
            }
            other => panic!("expected SchemaBehind, got {other:?}"),
        }
        // The last one by hand: accepted.
        let client = pool.get().await.expect("client");
        if let Some(m) = MIGRATIONS.last() {
            client
                .batch_execute(&format!("BEGIN; {} COMMIT;", m.sql))
                .await
                .expect("last migration");
        }
        drop(client);
        let store = PostgresStore::from_pool_checked(pool.clone())
            .await
            .expect("the hand-migrated schema opens with migrations off");
        usable(&store).await;
        // The runner on a plain client agrees that nothing is missing.
        let mut client = pool.get().await.expect("client");
        assert!(migrate_client(&mut client)
            .await
            .expect("migrate")
            .is_noop());
    }

    #[tokio::test]
    async fn postgres_migrate_client_on_a_fresh_schema() {
        let Some(url) = database_url() else { return };
        let (config, schema) = fresh(&url, "client");
        let admin = PostgresConfig::new(&url).pool().expect("pool");
        let client = admin.get().await.expect("client");
        client
            .batch_execute(&format!("CREATE SCHEMA {schema}"))
            .await
            .expect("schema");
        drop(client);
        let pool = config.pool().expect("pool");
        let mut client = pool.get().await.expect("client");
        let done = migrate_client(&mut client).await.expect("migrate");
        assert_eq!((done.from, done.to), (0, SCHEMA_VERSION));
        assert!(migrate_client(&mut client).await.expect("again").is_noop());
        drop(client);
        PostgresStore::from_pool_checked(pool).await.expect("opens");
    }
}
