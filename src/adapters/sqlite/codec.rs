//! Rows to records and back: every failure names its table and key.

use chrono::{DateTime, Utc};
use rusqlite::ErrorCode;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::domain::{Currency, Money};
use crate::ports::StoreError;

/// Maps a SQLite error of an operation on `table` / `key`: a busy database is retryable
/// ([`StoreError::Unavailable`]), a damaged file is [`StoreError::Corrupt`], the rest is
/// [`StoreError::Other`] with the context.
pub(super) fn sql_error(table: &'static str, key: &str, e: rusqlite::Error) -> StoreError {
    let code = e.sqlite_error_code();
    match code {
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => StoreError::Unavailable {
            message: format!("{table} {key}: the database is busy: {e}"),
        },
        Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt) => StoreError::Corrupt {
            table,
            key: key.to_string(),
            message: e.to_string(),
        },
        Some(ErrorCode::CannotOpen | ErrorCode::DiskFull | ErrorCode::SystemIoFailure) => {
            StoreError::Unavailable {
                message: format!("{table} {key}: {e}"),
            }
        }
        _ => match e {
            // A column of an unexpected type or NULL: the row is not what this code wrote.
            rusqlite::Error::FromSqlConversionFailure(..)
            | rusqlite::Error::InvalidColumnType(..)
            | rusqlite::Error::IntegralValueOutOfRange(..) => StoreError::Corrupt {
                table,
                key: key.to_string(),
                message: e.to_string(),
            },
            other => StoreError::Other(Box::new(Context {
                what: format!("{table} {key}"),
                source: other,
            })),
        },
    }
}

#[derive(Debug, thiserror::Error)]
#[error("sqlite: {what}: {source}")]
struct Context {
    what: String,
    source: rusqlite::Error,
}

pub(super) fn corrupt(table: &'static str, key: &str, message: impl Into<String>) -> StoreError {
    StoreError::Corrupt {
        table,
        key: key.to_string(),
        message: message.into(),
    }
}

/// A record's JSON body.
pub(super) fn decode<T: DeserializeOwned>(
    table: &'static str,
    key: &str,
    body: &str,
) -> Result<T, StoreError> {
    serde_json::from_str(body).map_err(|e| corrupt(table, key, format!("unreadable body: {e}")))
}

/// A record as its JSON body.
pub(super) fn encode<T: Serialize>(
    table: &'static str,
    key: &str,
    value: &T,
) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|source| {
        StoreError::Other(Box::new(Encode {
            what: format!("{table} {key}"),
            source,
        }))
    })
}

#[derive(Debug, thiserror::Error)]
#[error("cannot serialise {what}: {source}")]
struct Encode {
    what: String,
    source: serde_json::Error,
}

/// A time as stored: nanoseconds since the Unix epoch (years 1677 to 2262).
pub(super) fn nanos(t: DateTime<Utc>) -> Result<i64, StoreError> {
    t.timestamp_nanos_opt().ok_or_else(|| StoreError::Conflict {
        entity: "time",
        id: t.to_rfc3339(),
        message: "outside the years 1677 to 2262 the store can keep".into(),
    })
}

/// A stored time.
pub(super) fn time(n: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_nanos(n)
}

/// A stored currency code.
pub(super) fn currency(table: &'static str, key: &str, code: &str) -> Result<Currency, StoreError> {
    Currency::from_code(code).map_err(|e| corrupt(table, key, format!("currency {code:?}: {e}")))
}

/// A stored amount in minor units (never negative).
pub(super) fn amount(
    table: &'static str,
    key: &str,
    minor: i64,
    currency: Currency,
) -> Result<Money, StoreError> {
    if minor < 0 {
        return Err(corrupt(table, key, format!("negative amount {minor}")));
    }
    Money::from_minor(minor, currency)
        .map_err(|e| corrupt(table, key, format!("amount {minor}: {e}")))
}
