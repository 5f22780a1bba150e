//! Money: a non-negative decimal amount in an ISO 4217 currency, held at exactly the currency's
//! minor-unit scale.

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

use rust_decimal::Decimal;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::error::{ValidationError, ValidationKind};

/// The largest amount accepted in any currency (10^15 major units): far above any payment, and
/// small enough that sums of 500 lines can never overflow the decimal type.
const MAX_MAJOR_UNITS: i64 = 1_000_000_000_000_000;

/// An ISO 4217 currency usable for payments, with its minor-unit exponent (EUR 2, JPY 0, BHD 3).
///
/// Backed by the maintained `iso_currency` table. Fund codes (CLF), special codes (XAU, XXX,
/// XTS) and codes without a minor unit are refused: they are not payment currencies.
///
/// ```
/// use agent_mandate::domain::Currency;
/// let bhd: Currency = "BHD".parse().unwrap();
/// assert_eq!(bhd.exponent(), 3);
/// assert!("XAU".parse::<Currency>().is_err());
/// assert!("eur".parse::<Currency>().is_err());
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Currency {
    iso: iso_currency::Currency,
    exponent: u8,
}

impl Currency {
    /// Euro (exponent 2).
    pub const EUR: Currency = Currency {
        iso: iso_currency::Currency::EUR,
        exponent: 2,
    };
    /// US dollar (exponent 2).
    pub const USD: Currency = Currency {
        iso: iso_currency::Currency::USD,
        exponent: 2,
    };
    /// Pound sterling (exponent 2).
    pub const GBP: Currency = Currency {
        iso: iso_currency::Currency::GBP,
        exponent: 2,
    };
    /// Japanese yen (exponent 0).
    pub const JPY: Currency = Currency {
        iso: iso_currency::Currency::JPY,
        exponent: 0,
    };
    /// Bahraini dinar (exponent 3).
    pub const BHD: Currency = Currency {
        iso: iso_currency::Currency::BHD,
        exponent: 3,
    };

    /// Looks up an upper-case ISO 4217 alphabetic code.
    pub fn from_code(code: &str) -> Result<Currency, MoneyError> {
        let iso =
            iso_currency::Currency::from_code(code).ok_or_else(|| MoneyError::UnknownCurrency {
                code: truncate(code),
            })?;
        if iso.is_fund() || iso.is_special() || iso.is_superseded().is_some() {
            return Err(MoneyError::UnsupportedCurrency {
                code: iso.code().to_owned(),
            });
        }
        let exponent = iso
            .exponent()
            .and_then(|e| u8::try_from(e).ok())
            .filter(|e| *e <= 3)
            .ok_or_else(|| MoneyError::UnsupportedCurrency {
                code: iso.code().to_owned(),
            })?;
        Ok(Currency { iso, exponent })
    }

    /// The three-letter code.
    pub fn code(&self) -> &'static str {
        self.iso.code()
    }

    /// Number of digits after the decimal point.
    pub fn exponent(&self) -> u32 {
        u32::from(self.exponent)
    }

    /// `minor` units of this currency as text, like [`Money`]'s `Display`, for any integer
    /// (negative and out-of-range sums included, as ledgers report them).
    ///
    /// ```
    /// use agent_mandate::domain::Currency;
    /// assert_eq!(Currency::EUR.format_minor(10001), "100.01 EUR");
    /// assert_eq!(Currency::JPY.format_minor(-5), "-5 JPY");
    /// ```
    pub fn format_minor(self, minor: i128) -> String {
        let exp = self.exponent();
        let sign = if minor < 0 { "-" } else { "" };
        let abs = minor.unsigned_abs();
        if exp == 0 {
            return format!("{sign}{abs} {self}");
        }
        let unit = 10u128.pow(exp);
        format!(
            "{sign}{}.{:0width$} {self}",
            abs / unit,
            abs % unit,
            width = exp as usize
        )
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(8).collect()
}

impl fmt::Debug for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl FromStr for Currency {
    type Err = MoneyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Currency::from_code(s)
    }
}

impl Serialize for Currency {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.code())
    }
}

impl<'de> Deserialize<'de> for Currency {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Currency::from_code(&s).map_err(serde::de::Error::custom)
    }
}

/// Errors of money arithmetic and parsing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MoneyError {
    /// Not an ISO 4217 code.
    #[error("unknown currency code {code:?}")]
    UnknownCurrency {
        /// The code given (at most 8 characters of it).
        code: String,
    },
    /// An ISO 4217 code that is not a payment currency (fund, metal, testing, superseded).
    #[error("currency {code} is not a payment currency")]
    UnsupportedCurrency {
        /// The code.
        code: String,
    },
    /// Two amounts in different currencies were combined or compared.
    #[error("currency mismatch: {left} vs {right}")]
    CurrencyMismatch {
        /// Left operand currency.
        left: Currency,
        /// Right operand currency.
        right: Currency,
    },
    /// More decimal places than the currency has.
    #[error("{amount} has more precision than {currency} allows ({exponent} decimal places)")]
    TooPrecise {
        /// The amount as given.
        amount: String,
        /// The currency.
        currency: Currency,
        /// Its exponent.
        exponent: u32,
    },
    /// A negative amount where only zero or more is meaningful.
    #[error("amount must not be negative")]
    Negative,
    /// Not a plain decimal number.
    #[error("amount must be a plain decimal string such as \"129.00\"")]
    NotADecimal,
    /// Above the largest accepted amount.
    #[error("amount exceeds the largest accepted amount (10^15 major units)")]
    Overflow,
}

/// A non-negative amount of money in one currency, always at the currency's scale.
///
/// Money never passes through floating point. Arithmetic and comparison across currencies are
/// errors, so `Money` has no `PartialOrd`: use [`Money::try_cmp`].
///
/// ```
/// use agent_mandate::domain::{Currency, Money};
/// let a = Money::parse("25", Currency::EUR).unwrap();
/// let b = Money::parse("25.0", Currency::EUR).unwrap();
/// assert_eq!(a, b);
/// assert_eq!(a.to_string(), "25.00 EUR");
/// assert_eq!(Money::parse("1.5", Currency::BHD).unwrap().amount_text(), "1.500");
/// assert!(Money::parse("1.5", Currency::JPY).is_err());
/// let usd = Money::parse("1", Currency::USD).unwrap();
/// assert!(a.checked_add(&usd).is_err());
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Money {
    amount: Decimal,
    currency: Currency,
}

impl Money {
    /// Validates `amount` for `currency`: not negative, no more decimals than the currency has,
    /// not above 10^15 major units.
    pub fn new(amount: Decimal, currency: Currency) -> Result<Money, MoneyError> {
        if amount.is_sign_negative() && !amount.is_zero() {
            return Err(MoneyError::Negative);
        }
        let normalized = amount.normalize();
        if normalized.scale() > currency.exponent() {
            return Err(MoneyError::TooPrecise {
                amount: amount.to_string(),
                currency,
                exponent: currency.exponent(),
            });
        }
        if normalized > Decimal::from(MAX_MAJOR_UNITS) {
            return Err(MoneyError::Overflow);
        }
        let mut scaled = normalized.abs();
        scaled.rescale(currency.exponent());
        Ok(Money {
            amount: scaled,
            currency,
        })
    }

    /// Parses a plain decimal string (`"129"`, `"129.0"`, `"129.00"`): digits with an optional
    /// fractional part; no sign, exponent, separators or white space.
    pub fn parse(text: &str, currency: Currency) -> Result<Money, MoneyError> {
        Money::new(parse_decimal(text)?, currency)
    }

    /// Builds from an integer count of minor units (cents for EUR, yen for JPY).
    pub fn from_minor(minor: i64, currency: Currency) -> Result<Money, MoneyError> {
        if minor < 0 {
            return Err(MoneyError::Negative);
        }
        Money::new(Decimal::new(minor, currency.exponent()), currency)
    }

    /// `minor` units clamped into the representable range (zero to 10^15 major units), for
    /// sums a ledger reports.
    ///
    /// ```
    /// use agent_mandate::domain::{Currency, Money};
    /// assert_eq!(Money::from_minor_saturating(-3, Currency::EUR), Money::zero(Currency::EUR));
    /// assert_eq!(Money::from_minor_saturating(150, Currency::EUR).to_string(), "1.50 EUR");
    /// ```
    pub fn from_minor_saturating(minor: i128, currency: Currency) -> Money {
        if minor <= 0 {
            return Money::zero(currency);
        }
        let max = i128::from(MAX_MAJOR_UNITS) * 10i128.pow(currency.exponent());
        let clamped = i64::try_from(minor.min(max)).unwrap_or(i64::MAX);
        Money::from_minor(clamped, currency).unwrap_or_else(|_| Money::zero(currency))
    }

    /// Zero in `currency`.
    pub fn zero(currency: Currency) -> Money {
        let mut amount = Decimal::ZERO;
        amount.rescale(currency.exponent());
        Money { amount, currency }
    }

    /// The decimal amount, at the currency's scale.
    pub fn amount(&self) -> Decimal {
        self.amount
    }

    /// The currency.
    pub fn currency(&self) -> Currency {
        self.currency
    }

    /// Whether the amount is zero.
    pub fn is_zero(&self) -> bool {
        self.amount.is_zero()
    }

    /// The amount in minor units (always exact, since the scale is the currency's).
    pub fn minor_units(&self) -> i64 {
        // Invariant: amounts are at most 10^15 major units with at most 3 decimals, so the
        // mantissa is at most 10^18 and fits an i64 (checked by the property tests).
        i64::try_from(self.amount.mantissa()).unwrap_or(i64::MAX)
    }

    /// Canonical amount text at exactly the currency's scale ("129.00", "129" for JPY).
    pub fn amount_text(&self) -> String {
        self.amount.to_string()
    }

    /// Sum, or an error for different currencies or an amount above the maximum.
    pub fn checked_add(&self, other: &Money) -> Result<Money, MoneyError> {
        self.same_currency(other)?;
        let sum = self
            .amount
            .checked_add(other.amount)
            .ok_or(MoneyError::Overflow)?;
        Money::new(sum, self.currency)
    }

    /// Difference, or an error for different currencies or a negative result.
    pub fn checked_sub(&self, other: &Money) -> Result<Money, MoneyError> {
        self.same_currency(other)?;
        let diff = self
            .amount
            .checked_sub(other.amount)
            .ok_or(MoneyError::Overflow)?;
        if diff.is_sign_negative() && !diff.is_zero() {
            return Err(MoneyError::Negative);
        }
        Money::new(diff, self.currency)
    }

    /// `self - other`, or zero when `other` is larger (same currency required).
    pub fn saturating_sub(&self, other: &Money) -> Result<Money, MoneyError> {
        match self.checked_sub(other) {
            Err(MoneyError::Negative) => Ok(Money::zero(self.currency)),
            r => r,
        }
    }

    /// Multiplies by a quantity.
    pub fn checked_mul(&self, quantity: u32) -> Result<Money, MoneyError> {
        let product = self
            .amount
            .checked_mul(Decimal::from(quantity))
            .ok_or(MoneyError::Overflow)?;
        Money::new(product, self.currency)
    }

    /// Compares two amounts of the same currency.
    pub fn try_cmp(&self, other: &Money) -> Result<Ordering, MoneyError> {
        self.same_currency(other)?;
        Ok(self.amount.cmp(&other.amount))
    }

    /// Whether `self` is above `limit`, or in another currency: an amount that cannot be
    /// compared is never within a limit (deny by default).
    ///
    /// ```
    /// use agent_mandate::domain::{Currency, Money};
    /// let eur = |a| Money::parse(a, Currency::EUR).unwrap();
    /// assert!(eur("150.01").exceeds(&eur("150.00")));
    /// assert!(!eur("150.00").exceeds(&eur("150.00")));
    /// assert!(Money::parse("1", Currency::USD).unwrap().exceeds(&eur("150.00")));
    /// ```
    pub fn exceeds(&self, limit: &Money) -> bool {
        self.try_cmp(limit) != Ok(Ordering::Less) && self != limit
    }

    /// Whether `self` is at most `limit`, in the same currency (the negation of
    /// [`Money::exceeds`]).
    pub fn fits_within(&self, limit: &Money) -> bool {
        !self.exceeds(limit)
    }

    fn same_currency(&self, other: &Money) -> Result<(), MoneyError> {
        if self.currency != other.currency {
            return Err(MoneyError::CurrencyMismatch {
                left: self.currency,
                right: other.currency,
            });
        }
        Ok(())
    }
}

/// Parses the strict decimal grammar `digits [ "." digits ]`.
pub(crate) fn parse_decimal(text: &str) -> Result<Decimal, MoneyError> {
    if text.starts_with('-') {
        return Err(MoneyError::Negative);
    }
    if text.is_empty() || text.len() > 40 {
        return Err(MoneyError::NotADecimal);
    }
    let (int, frac) = match text.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (text, None),
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(int) || frac.is_some_and(|f| !digits(f)) {
        return Err(MoneyError::NotADecimal);
    }
    Decimal::from_str_exact(text).map_err(|_| MoneyError::Overflow)
}

impl fmt::Debug for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.amount, self.currency)
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.amount, self.currency)
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct MoneyWire<'a> {
    #[serde(borrow)]
    amount: std::borrow::Cow<'a, str>,
    currency: Currency,
}

impl Serialize for Money {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // Formatted from minor units on the stack: the same text as `amount_text`, without
        // the decimal formatter's allocation.
        let mut buf = [0u8; 48];
        let n =
            super::canonical::write_amount(&mut buf, self.minor_units(), self.currency.exponent());
        let text = std::str::from_utf8(&buf[..n]).map_err(serde::ser::Error::custom)?;
        MoneyWire {
            amount: std::borrow::Cow::Borrowed(text),
            currency: self.currency,
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for Money {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // The wire struct refuses the positional form (I17), as every domain struct does.
        let wire = MoneyWire::deserialize(crate::json::strict::Strict::<D, false>(d))?;
        Money::parse(&wire.amount, wire.currency)
            .map_err(|e| serde::de::Error::custom(ValidationError::new("amount", e.into())))
    }
}

impl From<MoneyError> for ValidationError {
    fn from(e: MoneyError) -> Self {
        ValidationError::new("", ValidationKind::Money(e))
    }
}
