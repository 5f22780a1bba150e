//! How values are stored: times as `NUMERIC` nanoseconds, money as integer minor units beside a
//! currency code, records as JSON text. Every decoding failure is a
//! [`StoreError::Corrupt`] naming the table and key.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio_postgres::types::FromSql;
use tokio_postgres::Row;

use crate::domain::{Currency, Money};
use crate::ports::StoreError;

const NANOS_PER_SECOND: i128 = 1_000_000_000;

/// A corrupt record of `table` with key `key`.
pub(crate) fn corrupt(table: &'static str, key: &str, message: impl Into<String>) -> StoreError {
    StoreError::Corrupt {
        table,
        key: key.to_string(),
        message: message.into(),
    }
}

/// Where a row came from, to name it in errors.
#[derive(Debug, Clone, Copy)]
pub(crate) struct At<'a> {
    pub table: &'static str,
    pub key: &'a str,
}

impl At<'_> {
    pub(crate) fn corrupt(&self, message: impl Into<String>) -> StoreError {
        corrupt(self.table, self.key, message)
    }

    /// Column `column` of `row`, or `Corrupt` (a NULL where none may be, a value out of range).
    pub(crate) fn get<'r, T: FromSql<'r>>(
        &self,
        row: &'r Row,
        column: &str,
    ) -> Result<T, StoreError> {
        row.try_get(column)
            .map_err(|e| self.corrupt(format!("column {column}: {e}")))
    }

    /// A JSON record.
    pub(crate) fn decode<T: DeserializeOwned>(&self, body: &str) -> Result<T, StoreError> {
        serde_json::from_str(body).map_err(|e| self.corrupt(format!("invalid record: {e}")))
    }

    /// A currency code.
    pub(crate) fn currency(&self, code: &str) -> Result<Currency, StoreError> {
        Currency::from_code(code).map_err(|e| self.corrupt(format!("currency {code:?}: {e}")))
    }

    /// `minor` units of `currency`, not negative.
    pub(crate) fn money(
        &self,
        what: &str,
        minor: i64,
        currency: Currency,
    ) -> Result<Money, StoreError> {
        Money::from_minor(minor, currency)
            .map_err(|e| self.corrupt(format!("{what} {minor} {currency}: {e}")))
    }

    /// A running total in minor units (an integral `NUMERIC`), not negative.
    pub(crate) fn total(&self, what: &str, value: Decimal) -> Result<i128, StoreError> {
        match i128::try_from(value) {
            Ok(v) if value.is_integer() && v >= 0 => Ok(v),
            _ => Err(self.corrupt(format!("{what} is {value}, not a count of minor units"))),
        }
    }

    /// A counter, not negative.
    pub(crate) fn count(&self, what: &str, value: i64) -> Result<i64, StoreError> {
        if value >= 0 {
            Ok(value)
        } else {
            Err(self.corrupt(format!("{what} is {value}")))
        }
    }

    /// A time stored by [`nanos`].
    pub(crate) fn time(&self, what: &str, value: Decimal) -> Result<DateTime<Utc>, StoreError> {
        time_of(value).ok_or_else(|| self.corrupt(format!("{what} {value} is not a time")))
    }
}

/// `t` as nanoseconds since the Unix epoch (exact over chrono's whole range).
pub(crate) fn nanos(t: DateTime<Utc>) -> i128 {
    i128::from(t.timestamp()) * NANOS_PER_SECOND + i128::from(t.timestamp_subsec_nanos())
}

/// A count of nanoseconds as a `NUMERIC` parameter; `None` beyond what it can carry (about
/// 2.5 trillion years, far past chrono's range).
pub(crate) fn numeric(n: i128) -> Option<Decimal> {
    Decimal::try_from_i128_with_scale(n, 0).ok()
}

/// `t` as a `NUMERIC` parameter.
pub(crate) fn time_param(t: DateTime<Utc>) -> Result<Decimal, StoreError> {
    numeric(nanos(t)).ok_or_else(|| StoreError::Other(format!("time {t} out of range").into()))
}

/// The instant `n` nanoseconds after the epoch.
fn time_of(n: Decimal) -> Option<DateTime<Utc>> {
    if !n.is_integer() {
        return None;
    }
    let n = i128::try_from(n).ok()?;
    let secs = i64::try_from(n.div_euclid(NANOS_PER_SECOND)).ok()?;
    let sub = u32::try_from(n.rem_euclid(NANOS_PER_SECOND)).ok()?;
    DateTime::from_timestamp(secs, sub)
}

/// The start (exclusive) of a window of `seconds` at `now`, in nanoseconds; `None` when it
/// starts before any time a hold can have (every hold is inside).
pub(crate) fn window_start(now: DateTime<Utc>, seconds: u64) -> Option<Decimal> {
    let length = i128::from(seconds).checked_mul(NANOS_PER_SECOND)?;
    let start = nanos(now).checked_sub(length)?;
    let earliest = nanos(DateTime::<Utc>::MIN_UTC);
    if start < earliest {
        None
    } else {
        numeric(start)
    }
}

/// `minor` units as `Money` for a usage report, clamped into `Money`'s range (as the memory
/// store reports them); totals are never negative (checked when read).
pub(crate) fn report(minor: i128, currency: Currency) -> Money {
    let max = 1_000_000_000_000_000i128 * 10i128.pow(currency.exponent());
    let clamped = i64::try_from(minor.clamp(0, max)).unwrap_or(i64::MAX);
    Money::from_minor(clamped, currency).unwrap_or_else(|_| Money::zero(currency))
}

/// A counter as `Usage` reports it (saturating).
pub(crate) fn report_count(v: i64) -> u32 {
    u32::try_from(v.max(0)).unwrap_or(u32::MAX)
}

/// A record as JSON text.
pub(crate) fn encode<T: Serialize>(what: &str, value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value)
        .map_err(|e| StoreError::Other(format!("cannot serialise the {what}: {e}").into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn times_round_trip_exactly_over_the_whole_range() {
        let samples = [
            DateTime::<Utc>::MIN_UTC,
            DateTime::<Utc>::MAX_UTC,
            DateTime::<Utc>::UNIX_EPOCH,
            Utc.timestamp_opt(-1, 999_999_999).unwrap(),
            Utc.timestamp_opt(1_780_000_000, 123_456_789).unwrap(),
        ];
        for t in samples {
            let stored = time_param(t).unwrap();
            let at = At {
                table: "t",
                key: "k",
            };
            assert_eq!(at.time("at", stored).unwrap(), t);
        }
        assert!(time_of(Decimal::new(15, 1)).is_none());
    }

    #[test]
    fn window_starts() {
        let now = Utc.timestamp_opt(1_000, 0).unwrap();
        assert_eq!(window_start(now, 60), numeric(940 * NANOS_PER_SECOND));
        assert_eq!(window_start(now, u64::MAX), None);
        assert_eq!(window_start(DateTime::<Utc>::MIN_UTC, 1), None);
    }

    #[test]
    fn reports_clamp() {
        assert!(report(-5, Currency::EUR).is_zero());
        assert_eq!(
            report(i128::MAX, Currency::EUR),
            Money::parse("1000000000000000", Currency::EUR).unwrap()
        );
    }
}
