//! Every size limit on input, in one place, and the cap on an audit event body.
//!
//! Inputs above a limit are refused with a [`ValidationError`](super::ValidationError) that
//! names the field (I11): `json::from_json` reports the path (`checkout.invalid.blockers`,
//! `items`, `scope.budgets.windows`), and nothing is built or persisted for them. The limits are
//! generous for real carts and mandates; they exist so that no caller-supplied list or text can
//! make a decision or an audit event arbitrarily large.
//!
//! | limit | value | applies to |
//! |---|---|---|
//! | [`MAX_ID_LEN`] | 128 bytes | every identifier (ids, SKUs, references, upstream codes) |
//! | [`MAX_TEXT_LEN`] | 1,024 bytes | free text (descriptions, reasons) |
//! | [`MAX_UPSTREAM_BLOCKERS`] | 64 | `blockers` of an invalid checkout |
//! | [`MAX_UPSTREAM_MESSAGE_LEN`] | 256 bytes | `message` of an upstream blocker |
//! | [`MAX_ITEMS`] | 500 | line items of a snapshot |
//! | [`MAX_QUANTITY`] | 1,000,000 | quantity of one line |
//! | [`MAX_REFS`] | 200 | fact references, policy references of a snapshot (each) |
//! | [`MAX_INTENT_LINES`] | 50 | line items of a purchase intent |
//! | [`MAX_LIST`] | 1,000 | a mandate's merchants, sellers, MCCs, SKUs, evidence references, confirmation conditions (each) |
//! | [`MAX_WINDOWS`] | 16 | rolling windows of a mandate's budgets, and of a usage entry |
//! | [`MAX_WINDOW_SECONDS`] | 10 years | length of one window |
//! | [`MAX_CHAIN_LEN`] | 16 | mandates of an evaluation document's chain; its usage entries |
//! | [`MAX_CONFIRMATIONS`] | 64 | confirmations of an evaluation document |
//! | [`MAX_SUSPENDED`] | 1,000 | suspended actors, suspended buyers of an evaluation document (each) |
//! | [`MAX_EVENT_BODY_BYTES`] | 64 KiB | the JSON body of one audit event (the last guard, see below) |
//!
//! An upstream blocker has a code and a message and no causes of its own: the decision nests
//! the upstream blockers one level deep, as causes of `CHECKOUT_NOT_VALID`.
//!
//! [`MAX_EVENT_BODY_BYTES`] is not an input limit: it bounds what
//! [`AuditEvent::to_body`](super::AuditEvent::to_body) writes. An event whose body would exceed
//! it (a decision made from a value built in code without validation, or from many inputs each
//! near its limit at once) is still written, with its longest lists and texts cut and a
//! `truncated` marker ([`Truncation`](super::Truncation)) carrying the original sizes and the
//! SHA-256 of the full body.

use std::fmt;
use std::marker::PhantomData;

use serde::de::{Deserialize, Deserializer, IgnoredAny, SeqAccess, Visitor};

use super::error::ValidationKind;

/// Longest identifier accepted, in bytes.
pub const MAX_ID_LEN: usize = 128;
/// Longest free text accepted, in bytes.
pub const MAX_TEXT_LEN: usize = 1024;
/// Most upstream blockers an invalid checkout may carry.
pub const MAX_UPSTREAM_BLOCKERS: usize = 64;
/// Longest message of an upstream blocker, in bytes.
pub const MAX_UPSTREAM_MESSAGE_LEN: usize = 256;
/// Most line items a snapshot may hold.
pub const MAX_ITEMS: usize = 500;
/// Most fact or policy references a snapshot may hold (each list).
pub const MAX_REFS: usize = 200;
/// Largest quantity of one line.
pub const MAX_QUANTITY: u32 = 1_000_000;
/// Most line items of a purchase intent.
pub const MAX_INTENT_LINES: usize = 50;
/// Most entries of a mandate's lists (merchants, sellers, MCCs, SKUs, evidence references,
/// confirmation conditions).
pub const MAX_LIST: usize = 1000;
/// Most rolling windows of a mandate's budgets, and of one usage entry.
pub const MAX_WINDOWS: usize = 16;
/// Longest rolling window, in seconds (ten years).
pub const MAX_WINDOW_SECONDS: u64 = 10 * 366 * 24 * 3600;
/// Most mandates of an evaluation document's chain, and most usage entries beside it.
pub const MAX_CHAIN_LEN: usize = 16;
/// Most confirmations of an evaluation document.
pub const MAX_CONFIRMATIONS: usize = 64;
/// Most suspended actors, and most suspended buyers, of an evaluation document.
pub const MAX_SUSPENDED: usize = 1000;
/// Largest JSON body of one audit event, in bytes (64 KiB): below the 100 kB default of common
/// webhook receivers' JSON body parsers.
pub const MAX_EVENT_BODY_BYTES: usize = 64 * 1024;

/// Deserialises a list of at most `MAX` entries. A longer list is refused without building the
/// entries past the limit (the rest is skipped only to count it), so the error reads
/// `has 5000 entries, at most 64 allowed` at the list's own path.
pub(crate) fn bounded<'de, D, T, const MAX: usize>(d: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    struct Bounded<T, const MAX: usize>(PhantomData<T>);

    impl<'de, T: Deserialize<'de>, const MAX: usize> Visitor<'de> for Bounded<T, MAX> {
        type Value = Vec<T>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "a list of at most {MAX} entries")
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
            let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(MAX));
            while out.len() < MAX {
                match seq.next_element()? {
                    Some(v) => out.push(v),
                    None => return Ok(out),
                }
            }
            let mut len = MAX;
            while seq.next_element::<IgnoredAny>()?.is_some() {
                len = len.saturating_add(1);
            }
            if len > MAX {
                return Err(serde::de::Error::custom(ValidationKind::TooMany {
                    max: MAX,
                    len,
                }));
            }
            Ok(out)
        }
    }

    d.deserialize_seq(Bounded::<T, MAX>(PhantomData))
}
