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
