//! The embedded migrations ([`MIGRATIONS`]), applied on connect unless turned off
//! ([`PostgresConfig::with_migrations`]), and [`migrate`] for a service that runs them itself.
//!
//! `am_meta` keeps the schema version (`key = 'schema_version'`). Connecting takes a
//! transaction-scoped advisory lock (so two processes starting together do not both migrate),
//! reads the version, refuses a database newer than this code, applies the missing
//! migrations and records the new version, all in one transaction.
//!
//! Storage conventions (shared with the SQLite store where it can):
//!
//! * ids are `TEXT`; records are their serde JSON as `TEXT` (kept byte for byte);
//! * amounts are integer minor units of the row's `currency` (ISO 4217 code): `BIGINT` per
//!   hold, `NUMERIC` for running totals per mandate;
//! * times are `NUMERIC` nanoseconds since 1970-01-01T00:00:00Z, columns named `*_ns`.

use deadpool_postgres::Pool;
use tokio_postgres::{IsolationLevel, Transaction};

use super::codec::corrupt;
use super::config::{check_schema, PostgresConfig};
use super::tx::{in_transaction, once, Tx};
use crate::adapters::{Migrated, Migration};
use crate::ports::StoreError;

/// The schema version this code writes and reads.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// The migrations, in order: migration `version` takes the schema from `version - 1` to
/// `version` and records it in `am_meta` (`key = 'schema_version'`), so the SQL alone (applied
/// with any tool, with the wanted schema first on the `search_path`) gives a database the
/// adapters accept with the migrations off. Never edit one that has shipped: add the next.
/// (The `am_meta` lines were added to each when the SQL was exported; the migration runner
/// always wrote that version, so no database differs.)
pub const MIGRATIONS: &[Migration] = &[
    // 1: every table of the Store and AuditSink ports.
    Migration {
        version: 1,
        name: "ports",
        sql: r#"
CREATE TABLE IF NOT EXISTS am_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE mandates (
    id          TEXT PRIMARY KEY,
    parent_id   TEXT,
    status      TEXT NOT NULL,
    currency    TEXT NOT NULL,
    body        TEXT NOT NULL
);
CREATE INDEX mandates_parent ON mandates (parent_id);

CREATE TABLE suspensions (
    kind        TEXT NOT NULL,
    party_id    TEXT NOT NULL,
    PRIMARY KEY (kind, party_id)
);

CREATE TABLE confirmations (
    id          TEXT PRIMARY KEY,
    buyer_id    TEXT NOT NULL,
    snapshot_id TEXT NOT NULL,
    body        TEXT NOT NULL
);
CREATE INDEX confirmations_for ON confirmations (buyer_id, snapshot_id);

CREATE TABLE snapshots (
    id          TEXT PRIMARY KEY,
    body        TEXT NOT NULL
);

CREATE TABLE accounts (
    mandate_id  TEXT PRIMARY KEY,
    currency    TEXT NOT NULL,
    held        NUMERIC NOT NULL DEFAULT 0,
    spent       NUMERIC NOT NULL DEFAULT 0,
    uses        BIGINT NOT NULL DEFAULT 0,
    attempts    BIGINT NOT NULL DEFAULT 0
);

CREATE TABLE holds (
    attempt_id    TEXT PRIMARY KEY,
    currency      TEXT NOT NULL,
    amount        BIGINT NOT NULL,
    committed     BIGINT NOT NULL DEFAULT 0,
    refunded      BIGINT NOT NULL DEFAULT 0,
    lifetime_back BIGINT NOT NULL DEFAULT 0,
    window_back   BIGINT NOT NULL DEFAULT 0,
    at_ns         NUMERIC NOT NULL,
    state         TEXT NOT NULL,
    mandate_ids   TEXT NOT NULL
);

CREATE TABLE hold_levels (
    mandate_id  TEXT NOT NULL,
    at_ns       NUMERIC NOT NULL,
    attempt_id  TEXT NOT NULL,
    PRIMARY KEY (mandate_id, at_ns, attempt_id)
);

CREATE TABLE attempts (
    id            TEXT PRIMARY KEY,
    status        TEXT NOT NULL,
    created_at_ns NUMERIC NOT NULL,
    body          TEXT NOT NULL
);
CREATE INDEX attempts_in ON attempts (status, created_at_ns, id);

CREATE TABLE idempotency (
    actor_id        TEXT NOT NULL,
    operation       TEXT NOT NULL,
    key             TEXT NOT NULL,
    fingerprint     TEXT NOT NULL,
    state           TEXT NOT NULL,
    lease_until_ns  NUMERIC,
    result          TEXT,
    retain_until_ns NUMERIC,
    PRIMARY KEY (actor_id, operation, key)
);

CREATE TABLE orders (
    attempt_id  TEXT PRIMARY KEY,
    order_id    TEXT NOT NULL UNIQUE,
    body        TEXT NOT NULL
);

CREATE TABLE blocks (
    actor_id    TEXT PRIMARY KEY,
    count       BIGINT NOT NULL
);

CREATE TABLE audit_events (
    seq         BIGINT PRIMARY KEY,
    prev_hash   TEXT NOT NULL,
    hash        TEXT NOT NULL,
    body        TEXT NOT NULL
);

-- The last event appended through the sink: appends lock this row (one writer at a time)
-- and verification compares the chain's end with it (a dropped tail is found).
CREATE TABLE audit_head (
    id          SMALLINT PRIMARY KEY CHECK (id = 1),
    seq         BIGINT NOT NULL,
    hash        TEXT NOT NULL
);
INSERT INTO audit_head (id, seq, hash)
    VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000');
INSERT INTO am_meta (key, value) VALUES ('schema_version', '1')
    ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value;
"#,
    },
    // 2: fencing of idempotency leases (I13): each lease gets a token from a sequence, which
    // never gives a value twice (not even after a rollback); and the store's outbox of audit
    // events (I15), written in the transaction of the state change they describe and drained
    // to the audit sink in id order.
    Migration {
        version: 2,
        name: "fencing_and_staged_audit",
        sql: r#"
CREATE SEQUENCE lease_tokens;
ALTER TABLE idempotency ADD COLUMN token BIGINT;

CREATE TABLE audit_pending (
    id          BIGSERIAL PRIMARY KEY,
    body        TEXT NOT NULL
);
INSERT INTO am_meta (key, value) VALUES ('schema_version', '2')
    ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value;
"#,
    },
    // 3: the credential vault (`PostgresVault`). The secret and the CVC are only in
    // `ciphertext`, sealed under a data key stored wrapped (`wrapped_key`) under the keyring's
    // key `key_id`; `fingerprint` is a keyed MAC of the content, to answer a retried store.
    // Rows are never deleted, so a reference is never handed out twice.
    Migration {
        version: 3,
        name: "vault",
        sql: r#"
CREATE TABLE vault_credentials (
    reference       TEXT PRIMARY KEY,
    owner           TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    fingerprint     BYTEA NOT NULL,
    kind            TEXT NOT NULL,
    buyer_id        TEXT NOT NULL,
    brand           TEXT NOT NULL,
    last4           TEXT NOT NULL,
    exp_month       SMALLINT NOT NULL,
    exp_year        INTEGER NOT NULL,
    funding         TEXT NOT NULL,
    key_id          TEXT NOT NULL,
    wrapped_key     BYTEA NOT NULL,
    ciphertext      BYTEA NOT NULL,
    revoked         BOOLEAN NOT NULL DEFAULT FALSE,
    UNIQUE (owner, idempotency_key)
);
INSERT INTO am_meta (key, value) VALUES ('schema_version', '3')
    ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value;
"#,
    },
    // 4: the single use of 402 challenge ids (`Store::consume_challenge`): the digest of the
    // credential that used each id, kept until the challenge expires.
    Migration {
        version: 4,
        name: "challenges",
        sql: r#"
CREATE TABLE challenges (
    challenge_id    TEXT PRIMARY KEY,
    credential      TEXT NOT NULL,
    expires_at_ns   NUMERIC NOT NULL
);
CREATE INDEX challenges_expiry ON challenges (expires_at_ns);
INSERT INTO am_meta (key, value) VALUES ('schema_version', '4')
    ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value;
"#,
    },
    // 5: the audit trail's index by subject (the attempts and mandates an event names) and
    // its chain checkpoints (`PostgresAuditSink::segment`). The index is filled from the
    // stored bodies here (a body that is not JSON is skipped); the checkpoints of an existing
    // trail are sealed by the next append, after checking the links they cover.
    Migration {
        version: 5,
        name: "audit_subjects_and_checkpoints",
        sql: r#"
CREATE TABLE audit_subjects (
    subject     TEXT NOT NULL,
    seq         BIGINT NOT NULL,
    PRIMARY KEY (subject, seq)
);
CREATE TABLE audit_checkpoints (
    seq         BIGINT PRIMARY KEY,
    hash        TEXT NOT NULL,
    seal        TEXT NOT NULL
);
CREATE FUNCTION pg_temp.am_event(body TEXT) RETURNS JSONB LANGUAGE plpgsql AS $f$
BEGIN
    RETURN body::jsonb -> 'event';
EXCEPTION WHEN others THEN
    RETURN NULL;
END
$f$;
WITH e AS (SELECT seq, pg_temp.am_event(body) AS ev FROM audit_events)
INSERT INTO audit_subjects (subject, seq)
    SELECT 'attempt:' || (ev ->> 'attempt_id'), seq FROM e
        WHERE jsonb_typeof(ev -> 'attempt_id') = 'string'
    UNION
    SELECT 'mandate:' || (ev ->> 'mandate_id'), seq FROM e
        WHERE jsonb_typeof(ev -> 'mandate_id') = 'string'
    UNION
    SELECT 'mandate:' || m, seq FROM e, jsonb_array_elements_text(ev -> 'mandate_ids') m
        WHERE jsonb_typeof(ev -> 'mandate_ids') = 'array'
ON CONFLICT DO NOTHING;
DROP FUNCTION pg_temp.am_event(TEXT);
INSERT INTO am_meta (key, value) VALUES ('schema_version', '5')
    ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value;
"#,
    },
    // 6: scoped payment tokens (`PostgresTokenStore`): each token's record (the hash of its
    // value, never the value), the mandates it descends from (for the revocation fan-out),
    // and its redemptions keyed by (token, idempotency key).
    Migration {
        version: 6,
        name: "tokens",
        sql: r#"
CREATE TABLE tokens (
    id                  TEXT PRIMARY KEY,
    status              TEXT NOT NULL,
    issuer              TEXT NOT NULL,
    source_credential   TEXT NOT NULL,
    mandate_id          TEXT NOT NULL,
    body                TEXT NOT NULL
);
CREATE INDEX tokens_issuer ON tokens (issuer);
CREATE INDEX tokens_credential ON tokens (source_credential);
CREATE TABLE token_lineage (
    token_id    TEXT NOT NULL,
    mandate_id  TEXT NOT NULL,
    PRIMARY KEY (token_id, mandate_id)
);
CREATE INDEX token_lineage_mandate ON token_lineage (mandate_id);
CREATE TABLE token_redemptions (
    token_id    TEXT NOT NULL,
    key         TEXT NOT NULL,
    seq         BIGINT NOT NULL,
    body        TEXT NOT NULL,
    PRIMARY KEY (token_id, key)
);
INSERT INTO am_meta (key, value) VALUES ('schema_version', '6')
    ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value;
"#,
    },
    // 7: the audit trail's index by buyer: `audit_owners` keeps the buyer each mandate and
    // attempt belongs to (`domain::BuyerIndex`), and `audit_subjects` gets a `buyer:<id>` row
    // per event about that buyer. Filled from the stored bodies as the SQLite migration does
    // (an automatic suspension appended before it is not indexed).
    Migration {
        version: 7,
        name: "audit_buyer_index",
        sql: r#"
CREATE TABLE audit_owners (
    subject     TEXT PRIMARY KEY,
    buyer       TEXT NOT NULL
);
CREATE FUNCTION pg_temp.am_event(body TEXT) RETURNS JSONB LANGUAGE plpgsql AS $f$
BEGIN
    RETURN body::jsonb -> 'event';
EXCEPTION WHEN others THEN
    RETURN NULL;
END
$f$;
CREATE TEMP TABLE am_events ON COMMIT DROP AS
    SELECT seq, pg_temp.am_event(body) AS ev FROM audit_events;
INSERT INTO audit_owners (subject, buyer)
    SELECT DISTINCT ON (s) s, b FROM (
        SELECT 'mandate:' || (ev ->> 'mandate_id') AS s, ev ->> 'buyer_id' AS b, seq
        FROM am_events
        WHERE ev ->> 'type' IN ('mandate_created', 'token_issued')
          AND jsonb_typeof(ev -> 'mandate_id') = 'string'
          AND jsonb_typeof(ev -> 'buyer_id') = 'string'
    ) m ORDER BY s, seq
ON CONFLICT DO NOTHING;
INSERT INTO audit_owners (subject, buyer)
    SELECT DISTINCT ON (s) s, b FROM (
        SELECT 'attempt:' || (e.ev ->> 'attempt_id') AS s, o.buyer AS b, e.seq
        FROM am_events e
        JOIN audit_owners o ON o.subject = 'mandate:' || (e.ev ->> 'mandate_id')
        WHERE e.ev ->> 'type' = 'decision'
          AND e.ev ->> 'command' = 'execute_payment'
          AND e.ev ->> 'outcome' = 'allowed'
          AND jsonb_typeof(e.ev -> 'attempt_id') = 'string'
    ) a ORDER BY s, seq
ON CONFLICT DO NOTHING;
INSERT INTO audit_subjects (subject, seq)
    SELECT 'buyer:' || (ev ->> 'buyer_id'), seq FROM am_events
        WHERE ev ->> 'type' IN
              ('mandate_created', 'token_issued', 'confirmation_recorded', 'confirmation_declined')
          AND jsonb_typeof(ev -> 'buyer_id') = 'string'
    UNION
    SELECT 'buyer:' || (ev -> 'party' ->> 'buyer'), seq FROM am_events
        WHERE ev ->> 'type' = 'suspension'
          AND jsonb_typeof(ev -> 'party' -> 'buyer') = 'string'
    UNION
    SELECT 'buyer:' || (ev -> 'alert' ->> 'buyer_id'), seq FROM am_events
        WHERE ev ->> 'type' = 'alert'
          AND jsonb_typeof(ev -> 'alert' -> 'buyer_id') = 'string'
    UNION
    SELECT 'buyer:' || (ev -> 'by' ->> 'id'), seq FROM am_events
        WHERE ev ->> 'type' = 'credential_stored'
          AND ev -> 'by' ->> 'kind' = 'buyer'
          AND jsonb_typeof(ev -> 'by' -> 'id') = 'string'
ON CONFLICT DO NOTHING;
INSERT INTO audit_subjects (subject, seq)
    SELECT 'buyer:' || o.buyer, s.seq
    FROM audit_subjects s
    JOIN audit_owners o ON o.subject = s.subject
    JOIN am_events e ON e.seq = s.seq
    WHERE (s.subject LIKE 'mandate:%' OR e.ev IS NULL OR e.ev ->> 'type' <> 'decision')
      AND NOT COALESCE(e.ev -> 'blockers' @> '[{"code": "ACTOR_NOT_AUTHORIZED"}]'::jsonb, false)
ON CONFLICT DO NOTHING;
DROP FUNCTION pg_temp.am_event(TEXT);
INSERT INTO am_meta (key, value) VALUES ('schema_version', '7')
    ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value;
"#,
    },
    // 8: the review window's queue (`PostgresReviewQueue`): one row per attempt held in its
    // window, its state and due time as columns for the scans, the entry as JSON.
    Migration {
        version: 8,
        name: "review_queue",
        sql: r#"
CREATE TABLE review_queue (
    attempt_id  TEXT PRIMARY KEY,
    buyer_id    TEXT NOT NULL,
    state       TEXT NOT NULL,
    due_ns      BIGINT NOT NULL,
    body        TEXT NOT NULL
);
CREATE INDEX review_queue_due ON review_queue (state, due_ns, attempt_id);
CREATE INDEX review_queue_buyer ON review_queue (buyer_id, state, due_ns);
INSERT INTO am_meta (key, value) VALUES ('schema_version', '8')
    ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value;
"#,
    },
];

/// Key of the advisory lock that serialises migrations (any fixed number; `am` in ASCII).
const MIGRATION_LOCK: i64 = 0x616d_5f6d_6967_7261;

/// Connects the adapters: with `run`, creates `schema` if given and brings the tables to
/// [`SCHEMA_VERSION`]; without, only checks the version ([`StoreError::SchemaBehind`] when
/// behind). Refuses a database newer than this code either way.
pub(crate) async fn prepare(
    pool: &Pool,
    schema: Option<&str>,
    retries: u32,
    run: bool,
) -> Result<(), StoreError> {
    if run {
        migrate_in(pool, schema, retries).await.map(|_| ())
    } else {
        match schema_version(pool).await? {
            SCHEMA_VERSION => Ok(()),
            found => Err(StoreError::SchemaBehind {
                found,
                expected: SCHEMA_VERSION,
            }),
        }
    }
}

/// Applies the migrations the database behind `pool` lacks (to the schema first on its
/// connections' `search_path`), under an advisory lock, in one transaction: two processes
/// migrating together serialise and the second applies nothing. A no-op on a current
/// database; refuses one newer than this code ([`StoreError::Corrupt`] naming `am_meta`).
pub async fn migrate(pool: &Pool) -> Result<Migrated, StoreError> {
    migrate_in(pool, None, 8).await
}

/// [`migrate`] on a pool built from `config`, creating its schema first if it names one.
pub async fn migrate_with(config: &PostgresConfig) -> Result<Migrated, StoreError> {
    migrate_in(&config.pool()?, config.schema(), config.max_retries()).await
}

/// [`migrate`] on one connection of the service's own (its `search_path` decides the schema),
/// for a deploy step that holds a plain `tokio_postgres` client.
pub async fn migrate_client(client: &mut tokio_postgres::Client) -> Result<Migrated, StoreError> {
    let outcome: Result<Migrated, Tx<StoreError>> = async {
        let tx = client
            .build_transaction()
            .isolation_level(IsolationLevel::ReadCommitted)
            .start()
            .await?;
        let done = apply(&tx, None).await?;
        tx.commit().await.map_err(Tx::commit)?;
        Ok(done)
    }
    .await;
    once(outcome)
}

/// The schema version of the database behind `pool` (0 when it has none of this crate's
/// tables in the schema first on the `search_path`). Refuses a version newer than this code
/// or one that does not parse ([`StoreError::Corrupt`] naming `am_meta`).
pub async fn schema_version(pool: &Pool) -> Result<i64, StoreError> {
    let client = super::tx::client::<StoreError>(pool).await?;
    let outcome: Result<i64, Tx<StoreError>> = async {
        let exists = client
            .query_one("SELECT to_regclass('am_meta') IS NOT NULL", &[])
            .await?;
        if !exists.try_get::<_, bool>(0)? {
            return Ok(0);
        }
        let row = client
            .query_opt(
                "SELECT value FROM am_meta WHERE key = 'schema_version'",
                &[],
            )
            .await?;
        let version = match row {
            None => 0,
            Some(row) => parse_version(&row.try_get::<_, String>(0)?).map_err(Tx::Fail)?,
        };
        check_not_newer(version).map_err(Tx::Fail)?;
        Ok(version)
    }
    .await;
    once(outcome)
}

async fn migrate_in(
    pool: &Pool,
    schema: Option<&str>,
    retries: u32,
) -> Result<Migrated, StoreError> {
    if let Some(s) = schema {
        check_schema(s)?;
    }
    in_transaction!(
        pool,
        retries,
        IsolationLevel::ReadCommitted,
        StoreError,
        |tx| { apply(&tx, schema).await? }
    )
}

/// The body of every migration run: lock, read the version, apply what is missing.
async fn apply(tx: &Transaction<'_>, schema: Option<&str>) -> Result<Migrated, Tx<StoreError>> {
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    if let Some(s) = schema {
        // `s` is a checked plain identifier.
        tx.batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS {s}"))
            .await?;
    }
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS am_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    )
    .await?;
    let row = tx
        .query_opt(
            "SELECT value FROM am_meta WHERE key = 'schema_version'",
            &[],
        )
        .await?;
    let from = match row {
        None => 0,
        Some(row) => {
            let text: String = row.try_get(0)?;
            parse_version(&text).map_err(Tx::Fail)?
        }
    };
    check_not_newer(from).map_err(Tx::Fail)?;
    for m in MIGRATIONS.iter().filter(|m| m.version > from) {
        tx.batch_execute(m.sql).await?;
    }
    if from < SCHEMA_VERSION {
        tx.execute(
            "INSERT INTO am_meta (key, value) VALUES ('schema_version', $1) \
             ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
            &[&SCHEMA_VERSION.to_string()],
        )
        .await?;
    }
    Ok(Migrated {
        from,
        to: SCHEMA_VERSION,
    })
}

fn check_not_newer(version: i64) -> Result<(), StoreError> {
    if version > SCHEMA_VERSION {
        return Err(corrupt(
            "am_meta",
            "schema_version",
            format!(
                "the database has schema version {version}, newer than the {SCHEMA_VERSION} \
                 this code knows: upgrade the code"
            ),
        ));
    }
    Ok(())
}

fn parse_version(text: &str) -> Result<i64, StoreError> {
    match text.trim().parse::<i64>() {
        Ok(v) if v >= 0 => Ok(v),
        _ => Err(corrupt(
            "am_meta",
            "schema_version",
            format!("{text:?} is not a schema version"),
        )),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn one_migration_per_version() {
        assert_eq!(super::MIGRATIONS.len() as i64, super::SCHEMA_VERSION);
        for (i, m) in super::MIGRATIONS.iter().enumerate() {
            assert_eq!(m.version, i as i64 + 1, "{}", m.name);
            assert!(
                m.sql
                    .contains(&format!("VALUES ('schema_version', '{}')", m.version)),
                "migration {} must record its version",
                m.version
            );
        }
    }
}
