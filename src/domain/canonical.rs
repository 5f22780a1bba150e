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

use chrono::{DateTime, SecondsFormat, Utc};
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

impl Sink for Sha256 {
    fn put(&mut self, bytes: &[u8]) {
        self.update(bytes);
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

/// SHA-256 of the canonical form, streamed into the hasher.
pub(crate) fn canonical_sha256<T: Canonical>(value: &T) -> [u8; 32] {
    let mut hasher = Sha256::new();
    value.write_canonical(&mut Jcs::new(&mut hasher));
    hasher.finalize().into()
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
    pub(crate) fn end(&mut self) {
        self.depth = self.depth.saturating_sub(1);
        self.sink.put(b"}");
    }

    /// Writes a key; the value must follow.
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
    pub(crate) fn str(&mut self, value: &str) {
        self.sink.put(b"\"");
        let bytes = value.as_bytes();
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
    pub(crate) fn field_str(&mut self, key: &'static str, value: &str) {
        self.key(key);
        self.str(value);
    }

    /// `"key":"value"` when present.
    pub(crate) fn field_opt<T: AsRef<str>>(&mut self, key: &'static str, value: Option<&T>) {
        if let Some(v) = value {
            self.field_str(key, v.as_ref());
        }
    }

    /// `"key":<uint>`.
    pub(crate) fn field_uint(&mut self, key: &'static str, value: u64) {
        self.key(key);
        self.uint(value);
    }

    /// `"key":"<RFC 3339 UTC time>"`.
    pub(crate) fn field_time(&mut self, key: &'static str, value: &DateTime<Utc>) {
        self.key(key);
        self.str(&value.to_rfc3339_opts(SecondsFormat::AutoSi, true));
    }

    /// `"key":{"amount":"..","currency":".."}`.
    pub(crate) fn field_money(&mut self, key: &'static str, value: &Money) {
        self.key(key);
        self.money(value);
    }

    /// `{"amount":"..","currency":".."}`.
    pub(crate) fn money(&mut self, value: &Money) {
        // Decimal's Display writes into a stack buffer; no heap allocation here.
        struct Adapter<'b, 'c, S: Sink>(&'b mut Jcs<'c, S>);
        impl<S: Sink> fmt::Write for Adapter<'_, '_, S> {
            fn write_str(&mut self, s: &str) -> fmt::Result {
                self.0.sink.put(s.as_bytes());
                Ok(())
            }
        }
        self.begin();
        self.key("amount");
        self.sink.put(b"\"");
        // Writing to a sink never fails.
        let _ = fmt::Write::write_fmt(&mut Adapter(self), format_args!("{}", value.amount()));
        self.sink.put(b"\"");
        self.field_str("currency", value.currency().code());
        self.end();
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
                s.collect_str(self)
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
    /// The hash of a purchase intent (seed 000), same construction as [`SnapshotId`].
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
