//! The token store contract on every adapter: memory, SQLite, and PostgreSQL when
//! `DATABASE_URL` is set (`scripts/with-postgres.sh`).
#![cfg(all(feature = "tokens", feature = "testkit", feature = "sqlite"))]

use agent_mandate::adapters::memory::MemoryTokenStore;
use agent_mandate::adapters::sqlite::{SqliteConfig, SqliteDatabase};
use agent_mandate::testkit::token_store_conformance;

#[tokio::test]
async fn memory_token_store_conforms() {
    token_store_conformance(&MemoryTokenStore::new()).await;
}

#[tokio::test]
async fn sqlite_token_store_conforms() {
    let db = SqliteDatabase::open(SqliteConfig::in_memory()).unwrap();
    token_store_conformance(&db.token_store()).await;
}

#[tokio::test]
async fn sqlite_token_store_survives_a_reopen() {
    let dir = std::env::temp_dir().join(format!("am-tokens-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("tokens.db");
    let _ = std::fs::remove_file(&path);
    {
        let db = SqliteDatabase::open(SqliteConfig::file(&path)).unwrap();
        token_store_conformance(&db.token_store()).await;
    }
    let db = SqliteDatabase::open(SqliteConfig::file(&path)).unwrap();
    use agent_mandate::ports::{TokenSelector, TokenStore};
    let all = db
        .token_store()
        .tokens(&TokenSelector::Mandate {
            mandate_id: "m_root".parse().unwrap(),
        })
        .await
        .unwrap();
    assert_eq!(all.len(), 2);
    let _ = std::fs::remove_dir_all(&dir);
}

#[cfg(feature = "postgres")]
#[tokio::test]
async fn postgres_token_store_conforms() {
    use agent_mandate::adapters::postgres::{PostgresConfig, PostgresStore, PostgresTokenStore};
    let Some(url) = std::env::var("DATABASE_URL").ok().filter(|u| !u.is_empty()) else {
        eprintln!("SKIPPED: DATABASE_URL not set (run scripts/with-postgres.sh cargo test --all-features --test tokens_conformance)");
        return;
    };
    let schema = format!("tok_{}_{}", std::process::id(), now_nanos());
    let config = PostgresConfig::new(&url)
        .with_schema(&schema)
        .with_max_connections(4);
    let store = PostgresStore::connect_with(&config).await.unwrap();
    let tokens = PostgresTokenStore::from_pool(store.pool().clone())
        .await
        .unwrap();
    token_store_conformance(&tokens).await;
    // Checked, without migrations, against the migrated schema.
    PostgresTokenStore::from_pool_checked(store.pool().clone())
        .await
        .unwrap();
    let c = store.pool().get().await.unwrap();
    c.batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
        .await
        .unwrap();
}

#[cfg(feature = "postgres")]
fn now_nanos() -> u128 {
    // A unique schema name per run (test fixture, not a clock read of the crate).
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() % 1_000_000_000_000)
}
