//! Connection settings and the embedded migrations ([`MIGRATIONS`], [`migrate`]).

use rusqlite::{Connection, TransactionBehavior};

use super::codec::sql_error;
use super::SqliteConfig;
use crate::adapters::{Migrated, Migration};
use crate::ports::StoreError;

/// The schema version this code writes and reads (SQLite's `user_version`).
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// The migrations, in order: migration `version` takes the schema from `version - 1` to
/// `version` and records it in `PRAGMA user_version`, so the SQL alone (applied with any tool)
/// gives a database [`SqliteDatabase::open`](super::SqliteDatabase::open) accepts. Never edit
/// one that has shipped: add the next. (The `user_version` line was added to each when the
/// SQL was exported; the migration runner always set that version, so no database differs.)
pub const MIGRATIONS: &[Migration] = &[
    // 1: every table of the Store and AuditSink ports.
    Migration {
        version: 1,
        name: "ports",
        sql: r#"
    CREATE TABLE mandates (
        id TEXT PRIMARY KEY,
        parent_id TEXT,
        status TEXT NOT NULL,
        currency TEXT NOT NULL,
        body TEXT NOT NULL
    );
    CREATE TABLE suspensions (
        kind TEXT NOT NULL,
        party_id TEXT NOT NULL,
        PRIMARY KEY (kind, party_id)
    ) WITHOUT ROWID;
    CREATE TABLE confirmations (
        id TEXT PRIMARY KEY,
        buyer_id TEXT NOT NULL,
        snapshot_id TEXT NOT NULL,
        body TEXT NOT NULL
    );
    CREATE INDEX confirmations_by_buyer ON confirmations (buyer_id, snapshot_id);
    CREATE TABLE snapshots (
        id TEXT PRIMARY KEY,
        body TEXT NOT NULL
    );
    CREATE TABLE accounts (
        mandate_id TEXT PRIMARY KEY,
        currency TEXT NOT NULL,
        held INTEGER NOT NULL,
        spent INTEGER NOT NULL,
        uses INTEGER NOT NULL,
        attempts INTEGER NOT NULL
    );
    CREATE TABLE holds (
        attempt_id TEXT PRIMARY KEY,
        currency TEXT NOT NULL,
        amount INTEGER NOT NULL,
        committed INTEGER NOT NULL,
        refunded INTEGER NOT NULL,
        lifetime_back INTEGER NOT NULL,
        window_back INTEGER NOT NULL,
        at INTEGER NOT NULL,
        state TEXT NOT NULL,
        mandate_ids TEXT NOT NULL
    );
    CREATE TABLE hold_levels (
        mandate_id TEXT NOT NULL,
        at INTEGER NOT NULL,
        attempt_id TEXT NOT NULL,
        PRIMARY KEY (mandate_id, at, attempt_id)
    ) WITHOUT ROWID;
    CREATE TABLE attempts (
        id TEXT PRIMARY KEY,
        status TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        body TEXT NOT NULL
    );
    CREATE INDEX attempts_by_status ON attempts (status, created_at, id);
    CREATE TABLE idempotency (
        actor_id TEXT NOT NULL,
        operation TEXT NOT NULL,
        key TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        state TEXT NOT NULL,
        lease_until INTEGER,
        result TEXT,
        retain_until INTEGER,
        PRIMARY KEY (actor_id, operation, key)
    ) WITHOUT ROWID;
    CREATE TABLE orders (
        attempt_id TEXT PRIMARY KEY,
        order_id TEXT NOT NULL UNIQUE,
        body TEXT NOT NULL
    );
    CREATE TABLE blocks (
        actor_id TEXT PRIMARY KEY,
        count INTEGER NOT NULL
    );
    CREATE TABLE audit_events (
        seq INTEGER PRIMARY KEY,
        prev_hash TEXT NOT NULL,
        hash TEXT NOT NULL,
        body TEXT NOT NULL
    );
    PRAGMA user_version = 1;
    "#,
    },
    // 2: the outbox of audit events waiting for webhook delivery (`SqliteOutbox`). A
    // delivered row keeps its seq (so enqueueing it again is a no-op) and drops its body.
    Migration {
        version: 2,
        name: "webhook_outbox",
        sql: r#"
    CREATE TABLE audit_outbox (
        seq INTEGER PRIMARY KEY,
        prev_hash TEXT NOT NULL,
        hash TEXT NOT NULL,
        body TEXT NOT NULL,
        delivered INTEGER NOT NULL
    );
    CREATE INDEX audit_outbox_pending ON audit_outbox (delivered, seq);
    PRAGMA user_version = 2;
    "#,
    },
    // 3: fencing of idempotency leases (a token per lease, from a counter that never goes
    // back) and the store's outbox of audit events, written in the transaction of the state
    // change they describe and drained to the audit sink.
    Migration {
        version: 3,
        name: "fencing_and_staged_audit",
        sql: r#"
    ALTER TABLE idempotency ADD COLUMN token INTEGER;
    CREATE TABLE counters (
        name TEXT PRIMARY KEY,
        value INTEGER NOT NULL
    );
    CREATE TABLE audit_pending (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        body TEXT NOT NULL
    );
    PRAGMA user_version = 3;
    "#,
    },
    // 4: the credential vault (`SqliteVault`). The secret and the CVC are only in
    // `ciphertext`, sealed under a data key that is itself stored wrapped (`wrapped_key`) under
    // the keyring's key `key_id`; `fingerprint` is a keyed MAC of the content, to answer a
    // retried store. Rows are never deleted, so a reference is never handed out twice.
    Migration {
        version: 4,
        name: "vault",
        sql: r#"
    CREATE TABLE vault_credentials (
        reference TEXT PRIMARY KEY,
        owner TEXT NOT NULL,
        idempotency_key TEXT NOT NULL,
        fingerprint BLOB NOT NULL,
        kind TEXT NOT NULL,
        buyer_id TEXT NOT NULL,
        brand TEXT NOT NULL,
        last4 TEXT NOT NULL,
        exp_month INTEGER NOT NULL,
        exp_year INTEGER NOT NULL,
        funding TEXT NOT NULL,
        key_id TEXT NOT NULL,
        wrapped_key BLOB NOT NULL,
        ciphertext BLOB NOT NULL,
        revoked INTEGER NOT NULL,
        UNIQUE (owner, idempotency_key)
    );
    PRAGMA user_version = 4;
    "#,
    },
    // 5: the single use of 402 challenge ids (`Store::consume_challenge`): the digest of the
    // credential that used each id, kept until the challenge expires.
    Migration {
        version: 5,
        name: "challenges",
        sql: r#"
    CREATE TABLE challenges (
        challenge_id TEXT PRIMARY KEY,
        credential TEXT NOT NULL,
        expires_at INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX challenges_expiry ON challenges (expires_at);
    PRAGMA user_version = 5;
    "#,
    },
    // 6: the audit trail's index by subject (the attempts and mandates an event names) and
    // its chain checkpoints (`SqliteAuditSink::segment`). The index is filled from the stored
    // bodies here; the checkpoints of an existing trail are sealed by the next append, after
    // checking the links they cover.
    Migration {
        version: 6,
        name: "audit_subjects_and_checkpoints",
        sql: r#"
    CREATE TABLE audit_subjects (
        subject TEXT NOT NULL,
        seq INTEGER NOT NULL,
        PRIMARY KEY (subject, seq)
    ) WITHOUT ROWID;
    CREATE TABLE audit_checkpoints (
        seq INTEGER PRIMARY KEY,
        hash TEXT NOT NULL,
        seal TEXT NOT NULL
    );
    INSERT OR IGNORE INTO audit_subjects (subject, seq)
        SELECT 'attempt:' || json_extract(body, '$.event.attempt_id'), seq FROM audit_events
        WHERE json_valid(body) AND json_type(body, '$.event.attempt_id') = 'text';
    INSERT OR IGNORE INTO audit_subjects (subject, seq)
        SELECT 'mandate:' || json_extract(body, '$.event.mandate_id'), seq FROM audit_events
        WHERE json_valid(body) AND json_type(body, '$.event.mandate_id') = 'text';
    INSERT OR IGNORE INTO audit_subjects (subject, seq)
        SELECT 'mandate:' || m.value, e.seq
        FROM audit_events e, json_each(e.body, '$.event.mandate_ids') m
        WHERE json_valid(e.body) AND json_type(e.body, '$.event.mandate_ids') = 'array';
    PRAGMA user_version = 6;
    "#,
    },
    // 7: scoped payment tokens (`SqliteTokenStore`): each token's record (the hash of its
    // value, never the value), the mandates it descends from (for the revocation fan-out),
    // and its redemptions keyed by (token, idempotency key).
    Migration {
        version: 7,
        name: "tokens",
        sql: r#"
    CREATE TABLE tokens (
        id TEXT PRIMARY KEY,
        status TEXT NOT NULL,
        issuer TEXT NOT NULL,
        source_credential TEXT NOT NULL,
        mandate_id TEXT NOT NULL,
        body TEXT NOT NULL
    );
    CREATE INDEX tokens_issuer ON tokens (issuer);
    CREATE INDEX tokens_credential ON tokens (source_credential);
    CREATE TABLE token_lineage (
        token_id TEXT NOT NULL,
        mandate_id TEXT NOT NULL,
        PRIMARY KEY (token_id, mandate_id)
    ) WITHOUT ROWID;
    CREATE INDEX token_lineage_mandate ON token_lineage (mandate_id);
    CREATE TABLE token_redemptions (
        token_id TEXT NOT NULL,
        key TEXT NOT NULL,
        seq INTEGER NOT NULL,
        body TEXT NOT NULL,
        PRIMARY KEY (token_id, key)
    ) WITHOUT ROWID;
    PRAGMA user_version = 7;
    "#,
    },
    // 8: the audit trail's index by buyer: `audit_owners` keeps the buyer each mandate and
    // attempt belongs to (`domain::BuyerIndex`), and `audit_subjects` gets a `buyer:<id>` row
    // per event about that buyer. Filled from the stored bodies here: mandates from
    // `mandate_created` and `token_issued`, attempts from allowed `execute_payment` decisions,
    // then every event naming the buyer, one of their mandates or (but for decisions, which
    // count by their mandate) one of their attempts; a decision refused because its actor is
    // not the mandate's (`ACTOR_NOT_AUTHORIZED`) is indexed under no buyer. An automatic suspension appended before
    // this migration is not indexed (the appends after it are).
    Migration {
        version: 8,
        name: "audit_buyer_index",
        sql: r#"
    CREATE TABLE audit_owners (
        subject TEXT PRIMARY KEY,
        buyer TEXT NOT NULL
    ) WITHOUT ROWID;
    INSERT OR IGNORE INTO audit_owners (subject, buyer)
        SELECT 'mandate:' || json_extract(body, '$.event.mandate_id'),
               json_extract(body, '$.event.buyer_id')
        FROM audit_events
        WHERE json_valid(body)
          AND json_extract(body, '$.event.type') IN ('mandate_created', 'token_issued')
          AND json_type(body, '$.event.mandate_id') = 'text'
          AND json_type(body, '$.event.buyer_id') = 'text'
        ORDER BY seq;
    INSERT OR IGNORE INTO audit_owners (subject, buyer)
        SELECT 'attempt:' || json_extract(e.body, '$.event.attempt_id'), o.buyer
        FROM audit_events e
        JOIN audit_owners o ON o.subject = 'mandate:' || json_extract(e.body, '$.event.mandate_id')
        WHERE json_valid(e.body)
          AND json_extract(e.body, '$.event.type') = 'decision'
          AND json_extract(e.body, '$.event.command') = 'execute_payment'
          AND json_extract(e.body, '$.event.outcome') = 'allowed'
          AND json_type(e.body, '$.event.attempt_id') = 'text'
        ORDER BY e.seq;
    INSERT OR IGNORE INTO audit_subjects (subject, seq)
        SELECT 'buyer:' || json_extract(body, '$.event.buyer_id'), seq FROM audit_events
        WHERE json_valid(body)
          AND json_extract(body, '$.event.type') IN
              ('mandate_created', 'token_issued', 'confirmation_recorded', 'confirmation_declined')
          AND json_type(body, '$.event.buyer_id') = 'text';
    INSERT OR IGNORE INTO audit_subjects (subject, seq)
        SELECT 'buyer:' || json_extract(body, '$.event.party.buyer'), seq FROM audit_events
        WHERE json_valid(body) AND json_extract(body, '$.event.type') = 'suspension'
          AND json_type(body, '$.event.party.buyer') = 'text';
    INSERT OR IGNORE INTO audit_subjects (subject, seq)
        SELECT 'buyer:' || json_extract(body, '$.event.alert.buyer_id'), seq FROM audit_events
        WHERE json_valid(body) AND json_extract(body, '$.event.type') = 'alert'
          AND json_type(body, '$.event.alert.buyer_id') = 'text';
    INSERT OR IGNORE INTO audit_subjects (subject, seq)
        SELECT 'buyer:' || json_extract(body, '$.event.by.id'), seq FROM audit_events
        WHERE json_valid(body) AND json_extract(body, '$.event.type') = 'credential_stored'
          AND json_extract(body, '$.event.by.kind') = 'buyer'
          AND json_type(body, '$.event.by.id') = 'text';
    INSERT OR IGNORE INTO audit_subjects (subject, seq)
        SELECT 'buyer:' || o.buyer, s.seq
        FROM audit_subjects s
        JOIN audit_owners o ON o.subject = s.subject
        JOIN audit_events e ON e.seq = s.seq
        WHERE (s.subject LIKE 'mandate:%'
               OR NOT json_valid(e.body)
               OR json_extract(e.body, '$.event.type') <> 'decision')
          AND NOT (json_valid(e.body) AND EXISTS (
              SELECT 1 FROM json_each(e.body, '$.event.blockers') b
              WHERE json_extract(b.value, '$.code') = 'ACTOR_NOT_AUTHORIZED'));
    PRAGMA user_version = 8;
    "#,
    },
    // 9: the review window's queue (`SqliteReviewQueue`): one row per attempt held in its
    // window, its state and due time as columns for the scans, the entry as JSON.
    Migration {
        version: 9,
        name: "review_queue",
        sql: r#"
    CREATE TABLE review_queue (
        attempt_id TEXT PRIMARY KEY,
        buyer_id TEXT NOT NULL,
        state TEXT NOT NULL,
        due_ns INTEGER NOT NULL,
        body TEXT NOT NULL
    );
    CREATE INDEX review_queue_due ON review_queue (state, due_ns, attempt_id);
    CREATE INDEX review_queue_buyer ON review_queue (buyer_id, state, due_ns);
    PRAGMA user_version = 9;
    "#,
    },
];

/// Prepared statements each connection keeps (rusqlite's default is 16).
pub(super) const STATEMENT_CACHE: usize = 256;

/// Applies the connection settings, then every migration the database lacks, or (with
/// [`SqliteConfig::run_migrations`] off) checks that it lacks none.
pub(super) fn prepare(conn: &mut Connection, config: &SqliteConfig) -> Result<(), StoreError> {
    // The hot path runs a few dozen distinct statements: with rusqlite's default cache of 16
    // they evicted each other and every payment parsed and planned them again.
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    let setup = || -> rusqlite::Result<()> {
        conn.busy_timeout(config.busy_timeout)?;
        if config.path.is_some() {
            // `journal_mode` answers with the mode it set.
            let _: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        }
        // Temporary b-trees and statement journals in memory: on disk each is a file created
        // and removed in the temporary directory, about one per payment.
        conn.execute_batch(&format!(
            "PRAGMA synchronous = {}; PRAGMA foreign_keys = OFF; PRAGMA temp_store = MEMORY;",
            config.synchronous.pragma()
        ))
    };
    setup().map_err(|e| sql_error("schema", "settings", e))?;
    if config.run_migrations {
        migrate(conn).map(|_| ())
    } else {
        match schema_version(conn)? {
            SCHEMA_VERSION => Ok(()),
            found => Err(StoreError::SchemaBehind {
                found,
                expected: SCHEMA_VERSION,
            }),
        }
    }
}

/// The schema version of the database on `conn` (0 for a database without this crate's
/// schema). Fails with [`StoreError::Corrupt`] naming `schema` for a version newer than
/// [`SCHEMA_VERSION`] or a negative one.
pub fn schema_version(conn: &Connection) -> Result<i64, StoreError> {
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(|e| sql_error("schema", "user_version", e))?;
    if version > SCHEMA_VERSION {
        return Err(StoreError::Corrupt {
            table: "schema",
            key: "user_version".into(),
            message: format!(
                "the database has schema version {version}, newer than the {SCHEMA_VERSION} this \
                 version of agent-mandate knows: upgrade the library, never downgrade a database"
            ),
        });
    }
    if version < 0 {
        return Err(StoreError::Corrupt {
            table: "schema",
            key: "user_version".into(),
            message: format!("the schema version {version} is negative"),
        });
    }
    Ok(version)
}

/// Applies every migration of [`MIGRATIONS`] the database on `conn` lacks, in one `BEGIN
/// IMMEDIATE` transaction (so two processes migrating together serialise, and the second
/// applies nothing). Running it on a current database is a no-op. Refuses a database newer
/// than this code ([`StoreError::Corrupt`] naming `schema`).
///
/// ```
/// use agent_mandate::adapters::sqlite::{migrate, SqliteConfig, SqliteDatabase, SCHEMA_VERSION};
/// let mut conn = rusqlite::Connection::open_in_memory().unwrap();
/// let done = migrate(&mut conn).unwrap();
/// assert_eq!((done.from, done.to), (0, SCHEMA_VERSION));
/// assert!(migrate(&mut conn).unwrap().is_noop());
/// ```
pub fn migrate(conn: &mut Connection) -> Result<Migrated, StoreError> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(|e| sql_error("schema", "user_version", e))?;
    let from = schema_version(&tx)?;
    for m in MIGRATIONS.iter().filter(|m| m.version > from) {
        tx.execute_batch(m.sql)
            .and_then(|()| tx.execute_batch(&format!("PRAGMA user_version = {}", m.version)))
            .map_err(|e| sql_error("schema", &format!("migration {}", m.version), e))?;
    }
    tx.commit()
        .map_err(|e| sql_error("schema", "user_version", e))?;
    Ok(Migrated {
        from,
        to: SCHEMA_VERSION,
    })
}

/// [`migrate`] on the database file at `path` (created if missing), with a 5 s busy
/// timeout; the connection is closed afterwards. For a deploy step or the command line's
/// `migrate`.
pub fn migrate_file(path: impl AsRef<std::path::Path>) -> Result<Migrated, StoreError> {
    let path = path.as_ref();
    let mut conn = Connection::open(path).map_err(|e| StoreError::Unavailable {
        message: format!("cannot open the database {}: {e}", path.display()),
    })?;
    conn.busy_timeout(std::time::Duration::from_secs(5))
        .map_err(|e| sql_error("schema", "settings", e))?;
    migrate(&mut conn)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_run_from_one_without_gaps() {
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(m.version, i as i64 + 1, "{}", m.name);
            assert!(
                m.sql
                    .contains(&format!("PRAGMA user_version = {};", m.version)),
                "migration {} must record its version",
                m.version
            );
        }
        assert_eq!(SCHEMA_VERSION, MIGRATIONS.len() as i64);
    }
}
