//! RFC 8785 (JCS) canonical JSON, written straight into a byte sink, and the content digests
//! built on it (snapshot ids, intent hashes, request digests).
//!
//! The content types of this crate hold only objects, arrays, strings, booleans and small
//! non-negative integers (amounts are canonical decimal strings), so JCS reduces to: keys in
//! code-unit order (all our keys are ASCII, so byte order), no white space, strings escaped with
//! the short forms `\b \f \n \r \t \" \\` and `\u00xx` (lower-case hex) for other control
//! characters, integers in plain decimal. Writers emit keys in sorted order by construction;
//! tests compare every writer with an independent JCS implementation.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Datelike, SecondsFormat, Timelike, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest as _, Sha256};

use super::error::{err, ValidationError, ValidationKind};
use super::money::Money;

/// Where canonical bytes go: a buffer, or a hasher (no intermediate allocation).
pub(crate) trait Sink {
    fn put(&mut self, bytes: &[u8]);
}

impl Sink for Vec<u8> {
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

/// Content that has a canonical JSON form.
pub(crate) trait Canonical {
    fn write_canonical<S: Sink>(&self, out: &mut Jcs<'_, S>);
}

/// Canonical bytes of `value` (for tests, the CLI and the benchmarks).
pub(crate) fn canonical_bytes<T: Canonical>(value: &T) -> Vec<u8> {
    let mut buf = Vec::with_capacity(512);
    value.write_canonical(&mut Jcs::new(&mut buf));
    buf
}

/// SHA-256 of the canonical form: bytes collected in one buffer, then hashed in one call
/// (measured faster than streaming the many small writes into the hasher).
pub(crate) fn canonical_sha256<T: Canonical>(value: &T) -> [u8; 32] {
    let mut buf = Vec::with_capacity(1024);
    value.write_canonical(&mut Jcs::new(&mut buf));
    Sha256::digest(&buf).into()
}

/// A JCS writer. Objects are opened with [`Jcs::begin`] and keys must be given in sorted order
/// (checked in debug builds). Nesting is tracked in fixed-size state: writing allocates nothing.
pub(crate) struct Jcs<'a, S: Sink> {
    sink: &'a mut S,
    depth: usize,
    /// Bit `d` set: the object at depth `d` already has a member.
    has_member: u64,
    #[cfg(debug_assertions)]
    last_key: [Option<&'static str>; 64],
}

impl<'a, S: Sink> Jcs<'a, S> {
    pub(crate) fn new(sink: &'a mut S) -> Self {
        Jcs {
            sink,
            depth: 0,
            has_member: 0,
            #[cfg(debug_assertions)]
            last_key: [None; 64],
        }
    }

    /// Opens an object.
    #[inline]
    pub(crate) fn begin(&mut self) {
        self.sink.put(b"{");
        self.depth += 1;
        debug_assert!(self.depth < 64, "canonical nesting too deep");
        self.has_member &= !(1u64 << (self.depth % 64));
        #[cfg(debug_assertions)]
        {
            self.last_key[self.depth % 64] = None;
        }
    }

    /// Closes an object.
    #[inline]
    pub(crate) fn end(&mut self) {
        self.depth = self.depth.saturating_sub(1);
        self.sink.put(b"}");
    }

    /// Writes a key; the value must follow.
    #[inline]
    pub(crate) fn key(&mut self, key: &'static str) {
        let bit = 1u64 << (self.depth % 64);
        if self.has_member & bit != 0 {
            self.sink.put(b",");
        }
        self.has_member |= bit;
        #[cfg(debug_assertions)]
        {
            let slot = &mut self.last_key[self.depth % 64];
            debug_assert!(
                slot.is_none_or(|last| last < key),
                "canonical keys out of order: {key}"
            );
            *slot = Some(key);
        }
        self.sink.put(b"\"");
        self.sink.put(key.as_bytes());
        self.sink.put(b"\":");
    }

    /// Writes a string value.
    #[inline]
    pub(crate) fn str(&mut self, value: &str) {
        let bytes = value.as_bytes();
        if !bytes.iter().any(|&b| b < 0x20 || b == b'"' || b == b'\\') {
            self.sink.put(b"\"");
            self.sink.put(bytes);
            self.sink.put(b"\"");
            return;
        }
        self.sink.put(b"\"");
        let mut start = 0;
        for (i, &b) in bytes.iter().enumerate() {
            let short: &[u8] = match b {
                b'"' => b"\\\"",
                b'\\' => b"\\\\",
                0x08 => b"\\b",
                0x0c => b"\\f",
                b'\n' => b"\\n",
                b'\r' => b"\\r",
                b'\t' => b"\\t",
                0x00..=0x1f => b"",
                _ => continue,
            };
            self.sink.put(&bytes[start..i]);
            if short.is_empty() {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                self.sink.put(&[
                    b'\\',
                    b'u',
                    b'0',
                    b'0',
                    HEX[usize::from(b >> 4)],
                    HEX[usize::from(b & 0xf)],
                ]);
            } else {
                self.sink.put(short);
            }
            start = i + 1;
        }
        self.sink.put(&bytes[start..]);
        self.sink.put(b"\"");
    }

    /// Writes a non-negative integer.
    #[inline]
    pub(crate) fn uint(&mut self, value: u64) {
        let mut buf = [0u8; 20];
        let mut i = buf.len();
        let mut v = value;
        loop {
            i -= 1;
            buf[i] = b'0' + (v % 10) as u8;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        self.sink.put(&buf[i..]);
    }

    /// `"key":"value"`.
    #[inline]
    pub(crate) fn field_str(&mut self, key: &'static str, value: &str) {
        self.key(key);
        self.str(value);
    }

    /// `"key":"value"` when present.
    #[inline]
    pub(crate) fn field_opt<T: AsRef<str>>(&mut self, key: &'static str, value: Option<&T>) {
        if let Some(v) = value {
            self.field_str(key, v.as_ref());
        }
    }

    /// `"key":<uint>`.
    #[inline]
    pub(crate) fn field_uint(&mut self, key: &'static str, value: u64) {
        self.key(key);
        self.uint(value);
    }

    /// `"key":"<RFC 3339 UTC time>"`: `YYYY-MM-DDTHH:MM:SS[.fff[fff[fff]]]Z`, the fraction
    /// with 0, 3, 6 or 9 digits as needed (chrono's `SecondsFormat::AutoSi`), written without
    /// allocating. Years outside 0..=9999 fall back to chrono's formatter.
    pub(crate) fn field_time(&mut self, key: &'static str, value: &DateTime<Utc>) {
        self.key(key);
        self.time(value);
    }

    /// A time value (see [`Jcs::field_time`]).
    pub(crate) fn time(&mut self, value: &DateTime<Utc>) {
        let year = value.year();
        if !(0..=9999).contains(&year) {
            self.str(&value.to_rfc3339_opts(SecondsFormat::AutoSi, true));
            return;
        }
        let mut b = [0u8; 32];
        let mut n = 0;
        let push2 = |b: &mut [u8; 32], n: &mut usize, v: u32, sep: u8| {
            b[*n] = b'0' + (v / 10) as u8;
            b[*n + 1] = b'0' + (v % 10) as u8;
            b[*n + 2] = sep;
            *n += 3;
        };
        b[0] = b'"';
        n += 1;
        let y = year as u32;
        push2(&mut b, &mut n, y / 100, b'0');
        n -= 1;
        push2(&mut b, &mut n, y % 100, b'-');
        push2(&mut b, &mut n, value.month(), b'-');
        push2(&mut b, &mut n, value.day(), b'T');
        push2(&mut b, &mut n, value.hour(), b':');
        push2(&mut b, &mut n, value.minute(), b':');
        push2(&mut b, &mut n, value.second(), b'.');
        n -= 1;
        let nanos = value.nanosecond();
        if nanos != 0 {
            // Leap seconds (nanos >= 10^9) are rendered by chrono; keep its text.
            if nanos >= 1_000_000_000 {
                self.str(&value.to_rfc3339_opts(SecondsFormat::AutoSi, true));
                return;
            }
            let (digits, v) = if nanos.is_multiple_of(1_000_000) {
                (3, nanos / 1_000_000)
            } else if nanos.is_multiple_of(1_000) {
                (6, nanos / 1_000)
            } else {
                (9, nanos)
            };
            b[n] = b'.';
            n += 1;
            let mut v = v;
            for i in (0..digits).rev() {
                b[n + i] = b'0' + (v % 10) as u8;
                v /= 10;
            }
            n += digits;
        }
        b[n] = b'Z';
        b[n + 1] = b'"';
        n += 2;
        self.sink.put(&b[..n]);
    }

    /// `"key":{"amount":"..","currency":".."}`.
    #[inline]
    pub(crate) fn field_money(&mut self, key: &'static str, value: &Money) {
        self.key(key);
        self.money(value);
    }

    /// `{"amount":"..","currency":".."}`, the amount at exactly the currency's scale.
    #[inline]
    pub(crate) fn money(&mut self, value: &Money) {
        let mut amount = [0u8; 48];
        let n = write_amount(
            &mut amount,
            value.minor_units(),
            value.currency().exponent(),
        );
        let code = value.currency().code().as_bytes();
        self.sink.put(b"{\"amount\":\"");
        self.sink.put(&amount[..n]);
        self.sink.put(b"\",\"currency\":\"");
        // ISO 4217 alphabetic codes are three letters: a fixed-size write.
        match <[u8; 3]>::try_from(code) {
            Ok(fixed) => self.sink.put(&fixed),
            Err(_) => self.sink.put(code),
        }
        self.sink.put(b"\"}");
    }

    /// `"key":"sha256:<hex>"`, without allocating.
    pub(crate) fn field_digest(&mut self, key: &'static str, bytes: &[u8; 32]) {
        self.key(key);
        let mut buf = [0u8; 64];
        // Encoding into a buffer of exactly twice the input length cannot fail.
        let _ = hex::encode_to_slice(bytes, &mut buf);
        self.sink.put(b"\"sha256:");
        self.sink.put(&buf);
        self.sink.put(b"\"");
    }

    /// `"key":[ .. ]` of strings.
    pub(crate) fn field_str_list<T: AsRef<str>>(&mut self, key: &'static str, values: &[T]) {
        self.key(key);
        self.sink.put(b"[");
        for (i, v) in values.iter().enumerate() {
            if i > 0 {
                self.sink.put(b",");
            }
            self.str(v.as_ref());
        }
        self.sink.put(b"]");
    }

    /// `"key":[ .. ]` of canonical values.
    pub(crate) fn field_list<T: Canonical>(&mut self, key: &'static str, values: &[T]) {
        self.key(key);
        self.sink.put(b"[");
        for (i, v) in values.iter().enumerate() {
            if i > 0 {
                self.sink.put(b",");
            }
            v.write_canonical(self);
        }
        self.sink.put(b"]");
    }

    /// `"key":<canonical value>`.
    pub(crate) fn field<T: Canonical>(&mut self, key: &'static str, value: &T) {
        self.key(key);
        value.write_canonical(self);
    }
}

/// Writes `minor` units at `exponent` decimals (`12900`, 2 -> `129.00`) into `buf`; returns the
/// length. `minor` is non-negative and at most 10^18 for every valid `Money`.
pub(crate) fn write_amount(buf: &mut [u8; 48], minor: i64, exponent: u32) -> usize {
    let mut digits = [0u8; 24];
    let mut len = 0;
    let mut v = minor.unsigned_abs();
    loop {
        digits[len] = b'0' + (v % 10) as u8;
        len += 1;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    let exponent = exponent as usize;
    // Pad with leading zeros so there is at least one integer digit.
    while len <= exponent {
        digits[len] = b'0';
        len += 1;
    }
    let mut n = 0;
    for i in (0..len).rev() {
        if i + 1 == exponent {
            buf[n] = b'.';
            n += 1;
        }
        buf[n] = digits[i];
        n += 1;
    }
    n
}

macro_rules! digest_id {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        ///
        /// Text form: `sha256:` followed by 64 lower-case hex digits.
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name([u8; 32]);

        impl $name {
            /// Wraps a raw SHA-256 value.
            pub fn from_bytes(bytes: [u8; 32]) -> Self {
                Self(bytes)
            }

            /// The raw SHA-256 value.
            pub fn as_bytes(&self) -> &[u8; 32] {
                &self.0
            }

            /// Parses `sha256:<64 lower-case hex>`.
            pub fn parse(text: &str) -> Result<Self, ValidationError> {
                parse_digest(text).map(Self)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write_digest(f, &self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}(", stringify!($name))?;
                write_digest(f, &self.0)?;
                f.write_str(")")
            }
        }

        impl FromStr for $name {
            type Err = ValidationError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::parse(s)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let mut buf = [0u8; 71];
                buf[..7].copy_from_slice(b"sha256:");
                // Encoding into a buffer of exactly twice the input length cannot fail.
                let _ = hex::encode_to_slice(self.0, &mut buf[7..]);
                s.serialize_str(std::str::from_utf8(&buf).unwrap_or(""))
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                Self::parse(&s).map_err(serde::de::Error::custom)
            }
        }
    };
}

digest_id!(
    /// The id of a cart snapshot: SHA-256 over the JCS form of its content (I7).
    SnapshotId
);
digest_id!(
    /// The hash of a purchase intent, same construction as [`SnapshotId`].
    IntentHash
);
digest_id!(
    /// The digest of a payment request, recorded in every decision.
    RequestDigest
);
digest_id!(
    /// A digest of part of a snapshot (its items, its policy references), used by baselines.
    ContentDigest
);

fn write_digest(f: &mut fmt::Formatter<'_>, bytes: &[u8; 32]) -> fmt::Result {
    let mut buf = [0u8; 64];
    // Encoding into a buffer of exactly twice the input length cannot fail.
    let _ = hex::encode_to_slice(bytes, &mut buf);
    f.write_str("sha256:")?;
    f.write_str(std::str::from_utf8(&buf).unwrap_or(""))
}

fn parse_digest(text: &str) -> Result<[u8; 32], ValidationError> {
    const EXPECTED: &str = "sha256: followed by 64 lower-case hex digits";
    let bad = || err("", ValidationKind::InvalidFormat { expected: EXPECTED });
    let hex_part = text.strip_prefix("sha256:").ok_or_else(bad)?;
    if hex_part.len() != 64
        || !hex_part
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    {
        return Err(bad());
    }
    let mut out = [0u8; 32];
    hex::decode_to_slice(hex_part, &mut out).map_err(|_| bad())?;
    Ok(out)
}

/// A fixed buffer sink for short values (times).
struct StackSink {
    buf: [u8; 48],
    len: usize,
}

impl Sink for StackSink {
    fn put(&mut self, bytes: &[u8]) {
        let end = (self.len + bytes.len()).min(self.buf.len());
        let n = end - self.len;
        self.buf[self.len..end].copy_from_slice(&bytes[..n]);
        self.len = end;
    }
}

/// Serialises a time as its canonical RFC 3339 text (what [`Jcs::field_time`] writes),
/// without chrono's formatter: for `#[serde(serialize_with)]` on hot paths.
pub(crate) fn serialize_time<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    thread_local! {
        // The last time formatted on this thread: the events of one command share their time.
        static LAST: std::cell::Cell<(i64, u32, [u8; 48], usize)> =
            const { std::cell::Cell::new((i64::MIN, 0, [0; 48], 0)) };
    }
    let key = (t.timestamp(), t.timestamp_subsec_nanos());
    let (secs, nanos, buf, len) = LAST.with(|c| c.get());
    let mut sink = StackSink { buf, len };
    if (secs, nanos) != key {
        sink.len = 0;
        Jcs::new(&mut sink).time(t);
        LAST.with(|c| c.set((key.0, key.1, sink.buf, sink.len)));
    }
    // The writer emits a quoted string of ASCII; years outside 0..=9999 can exceed the buffer,
    // so those go through chrono.
    match sink.buf[..sink.len] {
        [b'"', ref inner @ .., b'"'] if sink.len < sink.buf.len() => {
            s.serialize_str(std::str::from_utf8(inner).map_err(serde::ser::Error::custom)?)
        }
        _ => s.collect_str(&t.to_rfc3339_opts(SecondsFormat::AutoSi, true)),
    }
}

/// Reads a time (I17: one meaning per input): RFC 3339 with a 4-digit year, a second from 00
/// to 59 (leap seconds are not accepted: `08:54:60Z` would name the instant of `08:55:00Z`
/// with a second spelling), and a year from 0000 to 9999 once converted to UTC (the
/// canonical form writes UTC with a 4-digit year).
pub(crate) fn parse_time(text: &str) -> Result<DateTime<Utc>, &'static str> {
    let t = DateTime::parse_from_rfc3339(text)
        .map_err(|_| "not an RFC 3339 time with a 4-digit year (YYYY-MM-DDTHH:MM:SS[.f]Z)")?;
    if t.nanosecond() >= 1_000_000_000 {
        return Err("second 60 is not accepted (leap seconds are not accepted)");
    }
    let t = t.with_timezone(&Utc);
    if !(0..=9999).contains(&t.year()) {
        return Err("the year in UTC is outside 0000-9999");
    }
    Ok(t)
}

/// `#[serde(deserialize_with)]` for a time field (see [`parse_time`]).
pub(crate) fn time<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
    let text = std::borrow::Cow::<'de, str>::deserialize(d)?;
    parse_time(&text).map_err(serde::de::Error::custom)
}

/// `#[serde(deserialize_with)]` for an optional time field (with `#[serde(default)]`).
pub(crate) fn opt_time<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
    time(d).map(Some)
}

/// Writes any JSON value in RFC 8785 form: object members sorted by the UTF-16 code units of
/// their keys, strings escaped as JCS requires, integers in decimal. Values of this crate
/// carry no floating-point numbers (amounts are strings); a float is written in the shortest
/// form `serde_json` produces, which matches ECMAScript for the values it can represent.
pub(crate) fn write_json_value(out: &mut Vec<u8>, value: &serde_json::Value) {
    use serde_json::Value;
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(n) => out.extend_from_slice(n.to_string().as_bytes()),
        Value::String(s) => Jcs::new(out).str(s),
        Value::Array(items) => {
            out.push(b'[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_json_value(out, v);
            }
            out.push(b']');
        }
        Value::Object(map) => {
            let mut members: Vec<(&String, &Value)> = map.iter().collect();
            members.sort_by(|a, b| a.0.encode_utf16().cmp(b.0.encode_utf16()));
            out.push(b'{');
            for (i, (k, v)) in members.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                Jcs::new(out).str(k);
                out.push(b':');
                write_json_value(out, v);
            }
            out.push(b'}');
        }
    }
}

/// The largest integer every JSON parser reads exactly (2^53 - 1).
const MAX_EXACT_INTEGER: u64 = (1 << 53) - 1;

/// Refuses numbers whose RFC 8785 form is not their plain integer text: fractions and
/// exponents (JCS writes `1.0` as `1` and `1e21` as `1e+21`, as ECMAScript does) and integers
/// beyond 2^53 (which JCS rounds). Domain values never hold one (money is a decimal string).
fn check_numbers(value: &serde_json::Value) -> Result<(), String> {
    use serde_json::Value;
    match value {
        Value::Number(n) => {
            let exact = n.as_u64().is_some_and(|u| u <= MAX_EXACT_INTEGER)
                || n.as_i64()
                    .is_some_and(|i| i.unsigned_abs() <= MAX_EXACT_INTEGER);
            if exact {
                Ok(())
            } else {
                Err(format!(
                    "the number {n} has no single canonical form: fingerprints take integers up to 2^53 only"
                ))
            }
        }
        Value::Array(items) => items.iter().try_for_each(check_numbers),
        Value::Object(map) => map.values().try_for_each(check_numbers),
        Value::Null | Value::Bool(_) | Value::String(_) => Ok(()),
    }
}

/// The SHA-256 of the RFC 8785 (JCS) form of `value`'s JSON: the fingerprint of a command.
///
/// Numbers are limited to integers of at most 2^53 in magnitude, whose JCS form is their
/// plain text: a fraction or an exponent (`1.0`, `1e3`) or a larger integer is refused, so no
/// two spellings of one number can give two fingerprints here and one in another JCS
/// implementation.
///
/// ```
/// use agent_mandate::domain::json_fingerprint;
/// let a = json_fingerprint(&serde_json::json!({"b": 1, "a": "x"})).unwrap();
/// let b = json_fingerprint(&serde_json::json!({"a": "x", "b": 1})).unwrap();
/// assert_eq!(a, b);
/// assert!(json_fingerprint(&serde_json::json!({"b": 1.0})).is_err());
/// ```
pub fn json_fingerprint<T: Serialize + ?Sized>(
    value: &T,
) -> Result<ContentDigest, serde_json::Error> {
    let v = serde_json::to_value(value)?;
    check_numbers(&v).map_err(<serde_json::Error as serde::ser::Error>::custom)?;
    let mut buf = Vec::with_capacity(512);
    write_json_value(&mut buf, &v);
    Ok(ContentDigest::from_bytes(Sha256::digest(&buf).into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn amount(minor: i64, exponent: u32) -> String {
        let mut buf = [0u8; 48];
        let n = write_amount(&mut buf, minor, exponent);
        String::from_utf8(buf[..n].to_vec()).unwrap()
    }

    #[test]
    fn fingerprints_take_only_numbers_with_one_canonical_form() {
        use serde_json::json;
        let max = MAX_EXACT_INTEGER;
        for ok in [
            json!(0),
            json!(max),
            json!(-(max as i64)),
            json!({"a": [1, 2]}),
        ] {
            assert!(json_fingerprint(&ok).is_ok(), "{ok}");
        }
        for bad in [
            json!(max + 1),
            json!(-(max as i64) - 1),
            json!(1.0),
            json!(1.5),
            json!(1e21),
            json!({"a": [1, 0.5]}),
        ] {
            let e = json_fingerprint(&bad).expect_err("refused");
            assert!(e.to_string().contains("canonical form"), "{bad}: {e}");
        }
    }

    #[test]
    fn amounts_have_exactly_the_currency_scale() {
        assert_eq!(amount(12900, 2), "129.00");
        assert_eq!(amount(5, 2), "0.05");
        assert_eq!(amount(0, 2), "0.00");
        assert_eq!(amount(0, 0), "0");
        assert_eq!(amount(129, 0), "129");
        assert_eq!(amount(1500, 3), "1.500");
        assert_eq!(amount(7, 3), "0.007");
        assert_eq!(amount(1_000_000_000_000_000_000, 3), "1000000000000000.000");
    }

    fn time(t: DateTime<Utc>) -> String {
        let mut buf = Vec::new();
        let mut o = Jcs::new(&mut buf);
        o.begin();
        o.field_time("t", &t);
        o.end();
        String::from_utf8(buf).unwrap()
    }

    #[test]
    fn times_match_chrono_autosi() {
        let base = Utc.with_ymd_and_hms(2026, 6, 28, 9, 5, 7).unwrap();
        for nanos in [
            0u32,
            1_000_000,
            120_000_000,
            1_000,
            123_456_000,
            1,
            999_999_999,
        ] {
            let t = base + chrono::Duration::nanoseconds(i64::from(nanos));
            let expected = format!(
                "{{\"t\":\"{}\"}}",
                t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
            );
            assert_eq!(time(t), expected, "nanos {nanos}");
        }
        let early = Utc.with_ymd_and_hms(7, 1, 2, 3, 4, 5).unwrap();
        assert_eq!(time(early), "{\"t\":\"0007-01-02T03:04:05Z\"}");
    }

    #[test]
    fn strings_are_escaped_as_jcs() {
        let mut buf = Vec::new();
        Jcs::new(&mut buf).str("a\"b\\c\n\u{1}\u{1f}é\u{7f}/");
        assert_eq!(
            String::from_utf8(buf).unwrap(),
            "\"a\\\"b\\\\c\\n\\u0001\\u001fé\u{7f}/\""
        );
    }

    #[test]
    fn digests_parse_only_lowercase_hex_with_prefix() {
        let ok = format!("sha256:{}", "ab".repeat(32));
        assert!(SnapshotId::parse(&ok).is_ok());
        assert_eq!(SnapshotId::parse(&ok).unwrap().to_string(), ok);
        for bad in [
            "ab".repeat(32),
            format!("sha256:{}", "AB".repeat(32)),
            format!("sha256:{}", "ab".repeat(31)),
            format!("sha1:{}", "ab".repeat(32)),
            format!("sha256:{}g", "a".repeat(63)),
        ] {
            assert!(SnapshotId::parse(&bad).is_err(), "{bad}");
        }
    }
}
