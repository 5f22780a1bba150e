//! [`Migration`]: one step of a durable backend's schema, exported so a service can run the
//! migrations itself (with its own tool, at deploy time) instead of on open.

/// One schema migration of a durable backend: the SQL that takes the schema from
/// `version - 1` to `version`.
///
/// The SQL is complete: it also records `version` where the backend keeps it (SQLite's
/// `PRAGMA user_version`, PostgreSQL's `am_meta` table), so applying the migrations in order
/// with any tool (`sqlite3`, `psql`, refinery, sqlx) leaves a database that opens with the
/// migrations turned off. Apply each one in a transaction of its own, in `version` order,
/// and only those above the database's current version; a migration that has shipped is
/// never edited (the next one is added).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Migration {
    /// The schema version this migration brings the database to (from 1, no gaps).
    pub version: i64,
    /// A short name, usable in a file name (`{version:04}_{name}.sql`).
    pub name: &'static str,
    /// The statements, separated by `;`.
    pub sql: &'static str,
}

/// What a `migrate` call did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Migrated {
    /// The schema version found before.
    pub from: i64,
    /// The schema version now (the code's own).
    pub to: i64,
}

impl Migrated {
    /// Whether the call applied nothing (the database was already current).
    pub fn is_noop(&self) -> bool {
        self.from == self.to
    }
}
