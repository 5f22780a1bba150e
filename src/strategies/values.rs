//! Values: currencies, money, identifiers, merchant category codes, free text, digests.

use std::fmt;
use std::str::FromStr;

use proptest::prelude::*;
use proptest::strategy::BoxedStrategy;

use crate::domain::{ContentDigest, Currency, EvidenceRef, Mcc, Money, SnapshotId, Text};

use super::{cash, LIMIT};

/// Payment currencies with exponents 0, 2 and 3: EUR, USD, GBP, JPY, BHD, CHF, SEK, KWD, KRW,
/// TND, CLP.
pub fn currency() -> BoxedStrategy<Currency> {
    let mut all = vec![
        Currency::EUR,
        Currency::USD,
        Currency::GBP,
        Currency::JPY,
        Currency::BHD,
    ];
    all.extend(
        ["CHF", "SEK", "KWD", "KRW", "TND", "CLP"]
            .iter()
            .filter_map(|c| Currency::from_code(c).ok()),
    );
    prop::sample::select(all).boxed()
}

/// Money in `currency`, from zero to `max_minor` minor units (clamped to 0..=10^15).
pub fn money(currency: Currency, max_minor: i64) -> BoxedStrategy<Money> {
    (0..=max_minor.clamp(0, LIMIT))
        .prop_map(move |m| cash(m, currency))
        .boxed()
}

/// Money in `currency` over its whole accepted range, up to 10^15 major units, with small
/// amounts and amounts next to the limit favoured.
pub fn money_up_to_limit(currency: Currency) -> BoxedStrategy<Money> {
    // 10^15 major units in minor units: at most 10^18, which fits an i64.
    let max = 10i64.pow(15 + currency.exponent());
    prop_oneof![
        2 => 0..=1_000i64,
        2 => 0..=max,
        1 => (max - 1_000)..=max,
    ]
    .prop_filter_map("amount within the money limit", move |m| {
        Money::from_minor(m, currency).ok()
    })
    .boxed()
}

/// Money in any of [`currency`], up to 10^9 minor units.
pub fn any_money() -> BoxedStrategy<Money> {
    currency()
        .prop_flat_map(|c| money(c, 1_000_000_000))
        .boxed()
}

/// A valid identifier `<prefix>_<1 to 4 of [a-z0-9]>` of any id newtype (`MerchantId`, `Sku`,
/// ...). `prefix` must itself be id-safe (no white space or control characters).
pub fn id<T>(prefix: &'static str) -> BoxedStrategy<T>
where
    T: FromStr + fmt::Debug + 'static,
{
    "[a-z0-9]{1,4}"
        .prop_filter_map("valid identifier", move |s| {
            T::from_str(&format!("{prefix}_{s}")).ok()
        })
        .boxed()
}

/// A merchant category code: common ones (5411, 5812, 5948, ...) or any four digits.
pub fn mcc() -> BoxedStrategy<Mcc> {
    prop_oneof![
        2 => prop::sample::select(vec!["5411", "5812", "5948", "5999", "4111", "7011"])
            .prop_map(str::to_owned),
        1 => "[0-9]{4}",
    ]
    .prop_filter_map("four digits", |s| Mcc::new(&s).ok())
    .boxed()
}

/// Free text with JSON escapes (`"`, `\`), non-ASCII and non-BMP characters, U+2028/U+2029 and
/// other printable Unicode (never control characters, which [`Text`] refuses).
pub fn text() -> BoxedStrategy<Text> {
    let ch = prop_oneof![
        6 => prop::char::range('a', 'z'),
        2 => prop::char::range('A', 'Z'),
        2 => Just(' '),
        3 => prop::sample::select(vec![
            '"', '\\', '/', '\'', '<', '>', '&', 'é', 'ß', 'ø', '中', '文', 'Я', '😀', '🎒',
            '\u{2028}', '\u{2029}', '\u{feff}', '\u{fffd}', '\u{7ff}', '\u{10ffff}',
        ]),
        2 => any::<char>().prop_filter("printable", |c| !c.is_control()),
    ];
    prop::collection::vec(ch, 1..24)
        .prop_filter_map("non-blank text", |cs| {
            Text::new(cs.into_iter().collect::<String>()).ok()
        })
        .boxed()
}

/// Any snapshot id (random digest).
pub fn snapshot_id() -> BoxedStrategy<SnapshotId> {
    any::<[u8; 32]>().prop_map(SnapshotId::from_bytes).boxed()
}

pub(super) fn digest() -> BoxedStrategy<ContentDigest> {
    any::<[u8; 32]>()
        .prop_map(ContentDigest::from_bytes)
        .boxed()
}

pub(super) fn unique<T>(
    s: BoxedStrategy<T>,
    range: std::ops::RangeInclusive<usize>,
) -> BoxedStrategy<Vec<T>>
where
    T: Ord + Clone + fmt::Debug + 'static,
{
    prop::collection::btree_set(s, range)
        .prop_map(|s| s.into_iter().collect())
        .boxed()
}

pub(super) fn evidence_refs() -> BoxedStrategy<Vec<EvidenceRef>> {
    unique(id("evidence"), 0..=2)
}
