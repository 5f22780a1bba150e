//! The durable credential vaults (SQLite, PostgreSQL): the vault conformance suite, restarts on
//! the same storage, secrets only as ciphertext, wrong keys, altered rows and key rotation
//! (I10, I11).
//!
//! The PostgreSQL tests need `DATABASE_URL`; without it they say SKIPPED and pass:
//!
//! ```text
//! scripts/with-postgres.sh cargo test --features sqlite,postgres,testkit --test vault_durable
//! ```
#![cfg(feature = "testkit")]

use agent_mandate::adapters::keyring::{VaultKey, VaultKeyring};
use agent_mandate::domain::{ActorId, BuyerId, CredentialRef, IdempotencyKey, Principal};
use agent_mandate::ports::{
    CredentialDisplay, CredentialKind, CredentialVault, FundingType, NewCredential, Secret,
    VaultError,
};
use agent_mandate::testkit::credential_vault_conformance;
use chrono::{DateTime, TimeZone, Utc};

fn t(y: i32, m: u32, d: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, m, d, 12, 0, 0).unwrap()
}

fn now() -> DateTime<Utc> {
    t(2026, 6, 28)
}

fn nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

fn key(name: &str) -> IdempotencyKey {
    IdempotencyKey::new(name).unwrap()
}

fn keyring(id: &str, byte: u8) -> VaultKeyring {
    VaultKeyring::new(VaultKey::new(id, [byte; 32]).unwrap())
}

/// A card of `owner` for `buyer`: a PAN-like secret and a cryptogram long enough that it cannot
/// show up in random bytes by chance.
fn card(owner: &str, buyer: &str, pan: &str, cvc: &str) -> NewCredential {
    NewCredential {
        kind: CredentialKind::VirtualCard,
        owner: ActorId::new(owner).unwrap(),
        buyer_id: BuyerId::new(buyer).unwrap(),
        secret: Secret::new(pan),
        cvc: Some(Secret::new(cvc)),
        display: CredentialDisplay {
            brand: "visa".into(),
            last4: pan[pan.len() - 4..].to_owned(),
            exp_month: 12,
            exp_year: 2030,
            funding: FundingType::Credit,
        },
    }
}

/// Buyer A's cards (stored before the restart) and buyer B's (after).
fn pans(prefix: &str) -> Vec<(String, String)> {
    (0..3)
        .map(|i| {
            (
                format!("{prefix}41111111{i}1111111"),
                format!("cvc-{prefix}-9c3f7a21-{i}"),
            )
        })
        .collect()
}

async fn resolves_to(vault: &dyn CredentialVault, r: &CredentialRef, pan: &str, cvc: &str) {
    let resolved = vault.resolve(r, now()).await.unwrap();
    assert_eq!(
        resolved.secret.expose(),
        pan,
        "{r} resolves to its own secret"
    );
    assert_eq!(resolved.cvc.as_ref().map(Secret::expose), Some(cvc));
}

fn is_integrity(r: Result<impl std::fmt::Debug, VaultError>) {
    assert!(matches!(r, Err(VaultError::Integrity { .. })), "{r:?}");
}

#[cfg(feature = "sqlite")]
mod sqlite {
    use std::path::{Path, PathBuf};

    use agent_mandate::adapters::sqlite::{SqliteConfig, SqliteDatabase, SqliteVault};

    use super::*;

    struct Dir(PathBuf);

    impl Dir {
        fn new(name: &str) -> Dir {
            let dir = std::env::temp_dir().join(format!(
                "am-vault-{name}-{}-{}",
                std::process::id(),
                nanos()
            ));
            std::fs::create_dir_all(&dir).unwrap();
            Dir(dir)
        }

        fn db(&self) -> PathBuf {
            self.0.join("vault.db")
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn open(path: &Path, keyring: VaultKeyring) -> SqliteVault {
        SqliteDatabase::open(SqliteConfig::file(path))
            .unwrap()
            .vault(keyring)
    }

    /// Every byte of the database, its WAL and shared memory files.
    fn raw_bytes(path: &Path) -> Vec<u8> {
        let mut all = Vec::new();
        for suffix in ["", "-wal", "-shm", "-journal"] {
            let mut p = path.as_os_str().to_owned();
            p.push(suffix);
            if let Ok(bytes) = std::fs::read(PathBuf::from(p)) {
                all.extend(bytes);
            }
        }
        all
    }

    fn contains(haystack: &[u8], needle: &str) -> bool {
        haystack
            .windows(needle.len())
            .any(|w| w == needle.as_bytes())
    }

    /// Runs `sql` on the file behind the vault's back.
    fn sql(path: &Path, sql: &str) {
        rusqlite::Connection::open(path)
            .unwrap()
            .execute_batch(sql)
            .unwrap();
    }

    #[tokio::test]
    async fn sqlite_vault_passes_the_vault_suite() {
        let vault = SqliteDatabase::open(SqliteConfig::in_memory())
            .unwrap()
            .vault(keyring("k1", 1));
        credential_vault_conformance(&vault, now()).await;
        credential_vault_conformance(&vault, t(2026, 1, 1)).await;
        credential_vault_conformance(&vault, t(2026, 12, 31)).await;
        // On a file, reopened between runs.
        let dir = Dir::new("suite");
        credential_vault_conformance(&open(&dir.db(), keyring("k1", 1)), now()).await;
        credential_vault_conformance(&open(&dir.db(), keyring("k1", 1)), now()).await;
    }

    /// A service restarted on the same file used to hand out `cred_1` again, to another
    /// buyer's card, while old attempts and audit events pointed at it.
    #[tokio::test]
    async fn references_never_collide_after_restart() {
        let dir = Dir::new("restart");
        let (a, b) = (pans("5"), pans("6"));
        let mut old = Vec::new();
        {
            let vault = open(&dir.db(), keyring("k1", 1));
            for (i, (pan, cvc)) in a.iter().enumerate() {
                let stored = vault
                    .store(
                        &key(&format!("a-{i}")),
                        card("agent_a", "buyer_a", pan, cvc),
                    )
                    .await
                    .unwrap();
                old.push(stored.credential.reference);
            }
        }
        let vault = open(&dir.db(), keyring("k1", 1));
        let mut new = Vec::new();
        for (i, (pan, cvc)) in b.iter().enumerate() {
            let stored = vault
                .store(
                    &key(&format!("a-{i}")),
                    card("agent_b", "buyer_b", pan, cvc),
                )
                .await
                .unwrap();
            assert!(!stored.replay, "another owner's key stores anew");
            new.push(stored.credential.reference);
        }
        let all: std::collections::BTreeSet<_> = old.iter().chain(&new).collect();
        assert_eq!(all.len(), 6, "no reference collides: {old:?} {new:?}");
        for (r, (pan, cvc)) in old.iter().zip(&a) {
            resolves_to(&vault, r, pan, cvc).await;
            assert_eq!(
                vault.describe(r).await.unwrap().buyer_id.as_str(),
                "buyer_a"
            );
        }
        for (r, (pan, cvc)) in new.iter().zip(&b) {
            resolves_to(&vault, r, pan, cvc).await;
        }
    }

    #[tokio::test]
    async fn retried_store_with_same_key_stores_one_credential() {
        let dir = Dir::new("retry");
        let (pan, cvc) = &pans("7")[0];
        let first = open(&dir.db(), keyring("k1", 1))
            .store(&key("k"), card("agent_a", "buyer_a", pan, cvc))
            .await
            .unwrap();
        assert!(!first.replay);
        // Retried after a restart, and from a second connection at once.
        let (x, y) = (
            open(&dir.db(), keyring("k1", 1)),
            open(&dir.db(), keyring("k1", 1)),
        );
        let k = key("k");
        let (rx, ry) = tokio::join!(
            x.store(&k, card("agent_a", "buyer_a", pan, cvc)),
            y.store(&k, card("agent_a", "buyer_a", pan, cvc)),
        );
        for retried in [rx.unwrap(), ry.unwrap()] {
            assert!(retried.replay);
            assert_eq!(retried.credential, first.credential);
        }
        assert_eq!(
            x.revoke_owner(&"agent_a".parse().unwrap()).await.unwrap(),
            1
        );
        // The same key with another card is a conflict, and stores nothing.
        let err = x
            .store(&key("k"), card("agent_a", "buyer_a", &pans("8")[0].0, cvc))
            .await
            .unwrap_err();
        assert!(
            matches!(err, VaultError::IdempotencyConflict { .. }),
            "{err:?}"
        );
        assert!(!err.to_string().contains(pan.as_str()) && !format!("{err:?}").contains(cvc));
        let rows: i64 = rusqlite::Connection::open(dir.db())
            .unwrap()
            .query_row("SELECT COUNT(*) FROM vault_credentials", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows, 1);
    }

    #[tokio::test]
    async fn secrets_never_reach_the_database_file() {
        let dir = Dir::new("raw");
        let cards = pans("9");
        let vault = open(&dir.db(), keyring("k1", 1));
        for (i, (pan, cvc)) in cards.iter().enumerate() {
            vault
                .store(&key(&format!("k{i}")), card("agent_a", "buyer_a", pan, cvc))
                .await
                .unwrap();
        }
        let check = |bytes: &[u8], when: &str| {
            assert!(contains(bytes, "buyer_a"), "{when}: the file was read");
            for (pan, cvc) in &cards {
                assert!(!contains(bytes, pan), "{when}: a PAN is in the file");
                assert!(!contains(bytes, cvc), "{when}: a CVC is in the file");
                assert!(
                    !contains(bytes, &pan[..12]),
                    "{when}: a PAN prefix is in the file"
                );
            }
        };
        check(&raw_bytes(&dir.db()), "open (WAL)");
        drop(vault);
        check(&raw_bytes(&dir.db()), "closed");
    }

    #[tokio::test]
    async fn a_wrong_key_is_a_typed_error_never_a_panic() {
        let dir = Dir::new("wrong");
        let (pan, cvc) = &pans("3")[0];
        let stored = open(&dir.db(), keyring("k1", 1))
            .store(&key("k"), card("agent_a", "buyer_a", pan, cvc))
            .await
            .unwrap()
            .credential;
        let r = &stored.reference;
        // Same id, other bytes: nothing opens, not even the retried store's comparison.
        let wrong = open(&dir.db(), keyring("k1", 2));
        is_integrity(wrong.resolve(r, now()).await);
        is_integrity(
            wrong
                .store(&key("k"), card("agent_a", "buyer_a", pan, cvc))
                .await,
        );
        // The public part needs no key.
        assert_eq!(wrong.describe(r).await.unwrap(), stored);
        // Another id: the key is missing.
        let missing = open(&dir.db(), keyring("k9", 1));
        match missing.resolve(r, now()).await {
            Err(e @ VaultError::KeyUnavailable { .. }) => {
                assert!(e.to_string().contains("k1"), "{e}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn a_tampered_row_is_a_typed_error_never_a_panic() {
        let dir = Dir::new("tamper");
        let vault = open(&dir.db(), keyring("k1", 1));
        let mut refs = Vec::new();
        for (i, (pan, cvc)) in pans("4").iter().enumerate() {
            let owner = format!("agent_{i}");
            let stored = vault
                .store(&key(&format!("k{i}")), card(&owner, "buyer_a", pan, cvc))
                .await
                .unwrap();
            refs.push(stored.credential.reference);
        }
        let [a, b, c] = [&refs[0], &refs[1], &refs[2]];
        // Swap two rows' sealed secrets: neither opens.
        sql(
            &dir.db(),
            &format!(
                "UPDATE vault_credentials SET ciphertext = (SELECT ciphertext FROM \
                 vault_credentials WHERE reference = '{b}'), wrapped_key = (SELECT wrapped_key \
                 FROM vault_credentials WHERE reference = '{b}') WHERE reference = '{a}'"
            ),
        );
        is_integrity(vault.resolve(a, now()).await);
        // Extend the expiry, move to another owner, flip a bit, truncate, wrong kind.
        for (edit, integrity) in [
            ("exp_year = 2031", true),
            ("owner = 'agent_0'", true),
            ("ciphertext = randomblob(60)", true),
            ("ciphertext = 'text, not bytes'", false),
            ("wrapped_key = X'0011'", true),
            ("ciphertext = X''", true),
            ("kind = 'gift_card'", false),
            ("exp_month = 300", false),
            ("owner = ''", false),
            ("revoked = 7", false),
        ] {
            let dir2 = Dir::new("tamper-one");
            for suffix in ["", "-wal"] {
                let from = PathBuf::from(format!("{}{suffix}", dir.db().display()));
                if from.exists() {
                    std::fs::copy(from, format!("{}{suffix}", dir2.db().display())).unwrap();
                }
            }
            sql(
                &dir2.db(),
                &format!("UPDATE vault_credentials SET {edit} WHERE reference = '{c}'"),
            );
            let vault = open(&dir2.db(), keyring("k1", 1));
            let got = vault.resolve(c, now()).await;
            if integrity {
                is_integrity(got);
            } else {
                assert!(
                    matches!(
                        got,
                        Err(VaultError::Corrupt { .. }) | Err(VaultError::Other(_))
                    ),
                    "{edit}: {got:?}"
                );
            }
        }
        drop(vault);
    }

    #[tokio::test]
    async fn a_rotated_keyring_still_reads_old_rows() {
        let dir = Dir::new("rotate");
        let (old_card, new_card) = (&pans("2")[0], &pans("2")[1]);
        let old = open(&dir.db(), keyring("k1", 1))
            .store(
                &key("old"),
                card("agent_a", "buyer_a", &old_card.0, &old_card.1),
            )
            .await
            .unwrap()
            .credential;
        let rotated = VaultKeyring::new(VaultKey::new("k2", [2; 32]).unwrap())
            .with_previous(VaultKey::new("k1", [1; 32]).unwrap())
            .unwrap();
        let vault = open(&dir.db(), rotated);
        resolves_to(&vault, &old.reference, &old_card.0, &old_card.1).await;
        // The old key's fingerprint still answers a retry.
        let again = vault
            .store(
                &key("old"),
                card("agent_a", "buyer_a", &old_card.0, &old_card.1),
            )
            .await
            .unwrap();
        assert!(again.replay && again.credential == old);
        let new = vault
            .store(
                &key("new"),
                card("agent_a", "buyer_a", &new_card.0, &new_card.1),
            )
            .await
            .unwrap()
            .credential;
        resolves_to(&vault, &new.reference, &new_card.0, &new_card.1).await;
        let key_of = |r: &CredentialRef| -> String {
            rusqlite::Connection::open(dir.db())
                .unwrap()
                .query_row(
                    "SELECT key_id FROM vault_credentials WHERE reference = ?1",
                    [r.as_str()],
                    |row| row.get(0),
                )
                .unwrap()
        };
        assert_eq!(
            (key_of(&old.reference), key_of(&new.reference)),
            ("k1".into(), "k2".into())
        );
        // Once the old key is retired, its rows name it.
        let retired = open(&dir.db(), keyring("k2", 2));
        resolves_to(&retired, &new.reference, &new_card.0, &new_card.1).await;
        assert!(matches!(
            retired.resolve(&old.reference, now()).await,
            Err(VaultError::KeyUnavailable { key_id, .. }) if key_id == "k1"
        ));
    }
}

#[cfg(feature = "postgres")]
mod postgres {
    use std::sync::atomic::{AtomicU64, Ordering};

    use agent_mandate::adapters::postgres::{PostgresConfig, PostgresVault};

    use super::*;

    fn database_url() -> Option<String> {
        match std::env::var("DATABASE_URL") {
            Ok(url) if !url.is_empty() => Some(url),
            _ => {
                eprintln!("SKIPPED: DATABASE_URL not set (run under scripts/with-postgres.sh)");
                None
            }
        }
    }

    static SCHEMAS: AtomicU64 = AtomicU64::new(0);

    /// A schema of this test's own.
    fn fresh(url: &str) -> (PostgresConfig, String) {
        let schema = format!(
            "v_{}_{}_{}",
            std::process::id(),
            nanos() % 1_000_000_000_000,
            SCHEMAS.fetch_add(1, Ordering::Relaxed)
        );
        (
            PostgresConfig::new(url)
                .with_schema(&schema)
                .with_max_connections(4),
            schema,
        )
    }

    async fn drop_schema(vault: &PostgresVault, schema: &str) {
        let client = vault.pool().get().await.unwrap();
        client
            .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
            .await
            .unwrap();
    }

    async fn sql(vault: &PostgresVault, sql: &str) {
        let client = vault.pool().get().await.unwrap();
        client.batch_execute(sql).await.unwrap();
    }

    #[tokio::test]
    async fn postgres_vault_passes_the_vault_suite() {
        let Some(url) = database_url() else { return };
        let (config, schema) = fresh(&url);
        let vault = PostgresVault::connect_with(&config, keyring("k1", 1))
            .await
            .unwrap();
        credential_vault_conformance(&vault, now()).await;
        credential_vault_conformance(&vault, t(2026, 1, 1)).await;
        let again = PostgresVault::connect_with(&config, keyring("k1", 1))
            .await
            .unwrap();
        credential_vault_conformance(&again, t(2026, 12, 31)).await;
        drop_schema(&vault, &schema).await;
    }

    #[tokio::test]
    async fn postgres_references_never_collide_after_restart() {
        let Some(url) = database_url() else { return };
        let (config, schema) = fresh(&url);
        let (a, b) = (pans("5"), pans("6"));
        let mut old = Vec::new();
        {
            let vault = PostgresVault::connect_with(&config, keyring("k1", 1))
                .await
                .unwrap();
            for (i, (pan, cvc)) in a.iter().enumerate() {
                let s = vault
                    .store(
                        &key(&format!("a-{i}")),
                        card("agent_a", "buyer_a", pan, cvc),
                    )
                    .await
                    .unwrap();
                old.push(s.credential.reference);
            }
        }
        let rotated = VaultKeyring::new(VaultKey::new("k2", [2; 32]).unwrap())
            .with_previous(VaultKey::new("k1", [1; 32]).unwrap())
            .unwrap();
        let vault = PostgresVault::connect_with(&config, rotated).await.unwrap();
        let mut new = Vec::new();
        for (i, (pan, cvc)) in b.iter().enumerate() {
            let s = vault
                .store(
                    &key(&format!("a-{i}")),
                    card("agent_b", "buyer_b", pan, cvc),
                )
                .await
                .unwrap();
            new.push(s.credential.reference);
        }
        let all: std::collections::BTreeSet<_> = old.iter().chain(&new).collect();
        assert_eq!(all.len(), 6);
        for (r, (pan, cvc)) in old.iter().zip(&a).chain(new.iter().zip(&b)) {
            resolves_to(&vault, r, pan, cvc).await;
        }
        // A retry after the restart (and the rotation) replays; concurrent retries too.
        let (pan, cvc) = &a[0];
        let k = key("a-0");
        let (x, y) = tokio::join!(
            vault.store(&k, card("agent_a", "buyer_a", pan, cvc)),
            vault.store(&k, card("agent_a", "buyer_a", pan, cvc)),
        );
        for retried in [x.unwrap(), y.unwrap()] {
            assert!(retried.replay && retried.credential.reference == old[0]);
        }
        drop_schema(&vault, &schema).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_concurrent_first_stores_with_one_key_store_one_credential() {
        let Some(url) = database_url() else { return };
        let (config, schema) = fresh(&url);
        let vault = PostgresVault::connect_with(&config, keyring("k1", 1))
            .await
            .unwrap();
        let (pan, cvc) = pans("7").remove(0);
        let tasks: Vec<_> = (0..6)
            .map(|_| {
                let (vault, pan, cvc) = (vault.clone(), pan.clone(), cvc.clone());
                tokio::spawn(async move {
                    vault
                        .store(&key("same"), card("agent_a", "buyer_a", &pan, &cvc))
                        .await
                })
            })
            .collect();
        let mut outcomes = Vec::new();
        for task in tasks {
            outcomes.push(task.await.unwrap().unwrap());
        }
        let fresh_count = outcomes.iter().filter(|o| !o.replay).count();
        assert_eq!(fresh_count, 1, "{outcomes:?}");
        assert!(outcomes
            .iter()
            .all(|o| o.credential == outcomes[0].credential));
        drop_schema(&vault, &schema).await;
    }

    #[tokio::test]
    async fn postgres_wrong_key_and_tampered_rows_are_typed_errors() {
        let Some(url) = database_url() else { return };
        let (config, schema) = fresh(&url);
        let vault = PostgresVault::connect_with(&config, keyring("k1", 1))
            .await
            .unwrap();
        let mut refs = Vec::new();
        for (i, (pan, cvc)) in pans("4").iter().enumerate() {
            let s = vault
                .store(&key("k"), card(&format!("agent_{i}"), "buyer_a", pan, cvc))
                .await
                .unwrap();
            refs.push(s.credential.reference);
        }
        let wrong = PostgresVault::connect_with(&config, keyring("k1", 2))
            .await
            .unwrap();
        is_integrity(wrong.resolve(&refs[0], now()).await);
        let missing = PostgresVault::connect_with(&config, keyring("k9", 1))
            .await
            .unwrap();
        assert!(matches!(
            missing.resolve(&refs[0], now()).await,
            Err(VaultError::KeyUnavailable { .. })
        ));
        let (a, b, c) = (&refs[0], &refs[1], &refs[2]);
        sql(
            &vault,
            &format!(
                "UPDATE vault_credentials SET ciphertext = o.ciphertext, wrapped_key = \
                 o.wrapped_key FROM vault_credentials o WHERE o.reference = '{b}' AND \
                 vault_credentials.reference = '{a}'"
            ),
        )
        .await;
        is_integrity(vault.resolve(a, now()).await);
        sql(
            &vault,
            &format!("UPDATE vault_credentials SET exp_year = 2031 WHERE reference = '{c}'"),
        )
        .await;
        is_integrity(vault.resolve(c, now()).await);
        sql(
            &vault,
            &format!("UPDATE vault_credentials SET kind = 'gift_card' WHERE reference = '{c}'"),
        )
        .await;
        assert!(matches!(
            vault.resolve(c, now()).await,
            Err(VaultError::Corrupt { .. })
        ));
        drop_schema(&vault, &schema).await;
    }
}

/// The engine's store: a retried request with the same key answers the same credential, is
/// audited as a replay (not a second `CredentialStored`), and another card under the key is a
/// conflict.
#[tokio::test]
async fn engine_store_credential_replays_a_retried_request() {
    use agent_mandate::adapters::memory::MemoryPorts;
    use agent_mandate::domain::{examples, AuditKind};
    use agent_mandate::engine::{Engine, EngineConfig, EngineError};
    use agent_mandate::ports::AuditSink;
    use agent_mandate::testkit::FakePsp;
    use std::sync::Arc;

    let memory = MemoryPorts::new(examples::now(), |vault, _| {
        Arc::new(FakePsp::with_vault(vault))
    });
    let engine =
        Engine::new(memory.ports.clone(), EngineConfig::default()).expect("engine configuration");
    let (pan, cvc) = &pans("1")[0];
    let first = engine
        .store_credential(
            &Principal::Buyer("buyer_a".parse().unwrap()),
            &key("k"),
            card("agent_a", "buyer_a", pan, cvc),
        )
        .await
        .unwrap();
    let retried = engine
        .store_credential(
            &Principal::Buyer("buyer_a".parse().unwrap()),
            &key("k"),
            card("agent_a", "buyer_a", pan, cvc),
        )
        .await
        .unwrap();
    assert!(!first.replay && retried.replay);
    assert_eq!(first.value, retried.value);
    let err = engine
        .store_credential(
            &Principal::Buyer("buyer_a".parse().unwrap()),
            &key("k"),
            card("agent_a", "buyer_a", &pans("2")[0].0, cvc),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            EngineError::Vault(VaultError::IdempotencyConflict { .. })
        ),
        "{err:?}"
    );
    let kinds: Vec<AuditKind> = memory
        .audit
        .read(1, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|e| {
            serde_json::from_str::<agent_mandate::domain::AuditEvent>(&e.body)
                .unwrap()
                .kind
        })
        .collect();
    let stored = kinds
        .iter()
        .filter(|k| matches!(k, AuditKind::CredentialStored { .. }))
        .count();
    let replays = kinds
        .iter()
        .filter(|k| matches!(k, AuditKind::Replay { command, .. } if command == "store_credential"))
        .count();
    assert_eq!((stored, replays), (1, 1), "{kinds:?}");
}
