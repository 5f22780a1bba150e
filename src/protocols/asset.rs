//! Amounts in base units, ISO 4217 currencies and the on-chain assets a host registers.
//!
//! Both protocols state amounts as a string of base units (cents for EUR, yen for JPY, the
//! token's smallest unit for an on-chain asset). An ISO 4217 code maps to its currency and
//! exponent. An on-chain asset (an x402 `asset` on a `network`, or an MPP `currency` that is a
//! token address) is payable only when the host has registered it: the host states which
//! currency of its mandates one whole unit of the asset *is* (a currency-like asset, such as a
//! stablecoin) and how many decimals the asset has. No rate is ever applied: an amount that
//! does not fall on the currency's minor unit is refused, and an unregistered asset is refused.

use std::collections::BTreeMap;

use rust_decimal::Decimal;

use super::error::{clip, OfferError};
use crate::domain::{Currency, Money, MoneyError};

/// The most decimals a registered asset may have (ERC-20 tokens use at most 18).
pub const MAX_ASSET_DECIMALS: u8 = 18;

/// The longest base-units amount read (38 digits: any u128).
const MAX_AMOUNT_DIGITS: usize = 38;

/// How an on-chain asset is counted against mandates: the currency it stands for and its
/// decimals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegisteredAsset {
    /// The mandate currency one whole unit of the asset stands for.
    pub currency: Currency,
    /// The asset's decimals (USDC: 6).
    pub decimals: u8,
}

/// The on-chain assets a host accepts, by network (x402 CAIP-2 `network`, or the MPP method
/// name) and asset identifier. EVM addresses (`0x...`) are matched case-insensitively.
///
/// ```
/// use agent_mandate::domain::Currency;
/// use agent_mandate::protocols::AssetRegistry;
/// let mut assets = AssetRegistry::new();
/// assets
///     .register("eip155:84532", "0x036CbD53842c5426634e7929541eC2318f3dCF7e", Currency::USD, 6)
///     .unwrap();
/// let usdc = assets.resolve("eip155:84532", "0x036cbd53842c5426634e7929541ec2318f3dcf7e");
/// assert_eq!(usdc.unwrap().decimals, 6);
/// assert!(assets.resolve("eip155:1", "0x036cbd53842c5426634e7929541ec2318f3dcf7e").is_none());
/// ```
#[derive(Debug, Clone, Default)]
pub struct AssetRegistry {
    assets: BTreeMap<(String, String), RegisteredAsset>,
}

fn asset_key(asset: &str) -> String {
    if asset.starts_with("0x") || asset.starts_with("0X") {
        asset.to_ascii_lowercase()
    } else {
        asset.to_owned()
    }
}

impl AssetRegistry {
    /// No asset registered: only ISO 4217 currencies are payable.
    pub fn new() -> AssetRegistry {
        AssetRegistry::default()
    }

    /// Registers `asset` on `network` as standing for `currency`, with `decimals` decimals.
    /// Refuses empty identifiers and more than [`MAX_ASSET_DECIMALS`] decimals.
    pub fn register(
        &mut self,
        network: &str,
        asset: &str,
        currency: Currency,
        decimals: u8,
    ) -> Result<(), OfferError> {
        if network.is_empty() || network.len() > 128 {
            return Err(OfferError::Invalid {
                field: "network",
                reason: "must be 1 to 128 bytes".into(),
            });
        }
        if asset.is_empty() || asset.len() > 128 {
            return Err(OfferError::Invalid {
                field: "asset",
                reason: "must be 1 to 128 bytes".into(),
            });
        }
        if decimals > MAX_ASSET_DECIMALS {
            return Err(OfferError::Invalid {
                field: "decimals",
                reason: format!("at most {MAX_ASSET_DECIMALS}"),
            });
        }
        self.assets.insert(
            (network.to_owned(), asset_key(asset)),
            RegisteredAsset { currency, decimals },
        );
        Ok(())
    }

    /// The registration of `asset` on `network`, if any.
    pub fn resolve(&self, network: &str, asset: &str) -> Option<RegisteredAsset> {
        self.assets
            .get(&(network.to_owned(), asset_key(asset)))
            .copied()
    }

    /// The currency and decimals of `code` on `network`: a three-letter ISO 4217 code (either
    /// case, as the protocols write `"usd"` and `"USD"`) or a registered asset.
    pub fn currency(&self, network: &str, code: &str) -> Result<RegisteredAsset, OfferError> {
        if code.len() == 3 && code.bytes().all(|b| b.is_ascii_alphabetic()) {
            let currency = Currency::from_code(&code.to_ascii_uppercase()).map_err(|_| {
                OfferError::UnknownCurrency {
                    currency: clip(code, 80),
                }
            })?;
            return Ok(RegisteredAsset {
                currency,
                decimals: u8::try_from(currency.exponent()).unwrap_or(u8::MAX),
            });
        }
        self.resolve(network, code)
            .ok_or_else(|| OfferError::UnknownCurrency {
                currency: clip(code, 80),
            })
    }
}

/// Reads `text` as a positive count of base units of an asset with `decimals` decimals and
/// states it in `currency`: digits only, no sign, no leading zero, not zero, at most 38
/// digits; the value must fall on the currency's minor unit (refused otherwise, never
/// rounded) and be within the largest amount [`Money`] holds.
///
/// ```
/// use agent_mandate::domain::Currency;
/// use agent_mandate::protocols::money_from_base_units;
/// let m = money_from_base_units("amount", "50", Currency::EUR, 2).unwrap();
/// assert_eq!(m.to_string(), "0.50 EUR");
/// // 10,000 base units of a 6-decimal asset standing for USD is one cent.
/// assert_eq!(money_from_base_units("amount", "10000", Currency::USD, 6).unwrap().to_string(), "0.01 USD");
/// assert!(money_from_base_units("amount", "10001", Currency::USD, 6).is_err());
/// assert!(money_from_base_units("amount", "050", Currency::EUR, 2).is_err());
/// ```
pub fn money_from_base_units(
    field: &'static str,
    text: &str,
    currency: Currency,
    decimals: u8,
) -> Result<Money, OfferError> {
    let amount = |source| OfferError::Amount { field, source };
    if text.is_empty() || text.len() > MAX_AMOUNT_DIGITS {
        return Err(if text.is_empty() {
            amount(MoneyError::NotADecimal)
        } else {
            amount(MoneyError::Overflow)
        });
    }
    if text.starts_with('-') {
        return Err(amount(MoneyError::Negative));
    }
    if !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(amount(MoneyError::NotADecimal));
    }
    if text.len() > 1 && text.starts_with('0') {
        return Err(OfferError::Invalid {
            field,
            reason: "base units must not have a leading zero".into(),
        });
    }
    let units: u128 = text.parse().map_err(|_| amount(MoneyError::Overflow))?;
    if units == 0 {
        return Err(OfferError::Invalid {
            field,
            reason: "a charge must be for more than zero".into(),
        });
    }
    let units = i128::try_from(units).map_err(|_| amount(MoneyError::Overflow))?;
    let value = Decimal::try_from_i128_with_scale(units, u32::from(decimals))
        .map_err(|_| amount(MoneyError::Overflow))?;
    Money::new(value, currency).map_err(amount)
}

/// The amount of `money` in base units of its currency (its minor units), as the wire writes
/// it.
pub fn base_units(money: &Money) -> String {
    money.minor_units().to_string()
}

/// The amount of `money` in base units of an asset with `decimals` decimals (at least the
/// currency's exponent), or `None` when it does not fit.
pub fn asset_base_units(money: &Money, decimals: u8) -> Option<String> {
    let exp = money.currency().exponent();
    let extra = u32::from(decimals).checked_sub(exp)?;
    let factor = 10i128.checked_pow(extra)?;
    i128::from(money.minor_units())
        .checked_mul(factor)
        .map(|v| v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_codes_in_either_case_and_assets_only_when_registered() {
        let mut r = AssetRegistry::new();
        assert_eq!(r.currency("stripe", "eur").unwrap().currency, Currency::EUR);
        assert_eq!(r.currency("stripe", "JPY").unwrap().decimals, 0);
        assert!(matches!(
            r.currency("stripe", "xau"),
            Err(OfferError::UnknownCurrency { .. })
        ));
        assert!(r.currency("tempo", "0xabc").is_err());
        r.register("tempo", "0xABC", Currency::USD, 6).unwrap();
        assert_eq!(r.currency("tempo", "0xabc").unwrap().decimals, 6);
        assert!(r.register("tempo", "0xabc", Currency::USD, 19).is_err());
        assert!(r.register("", "0xabc", Currency::USD, 6).is_err());
    }

    #[test]
    fn base_units_refuse_what_does_not_fit() {
        let eur = Currency::EUR;
        for bad in [
            "",
            "-1",
            "+1",
            "1.0",
            "1e3",
            " 1",
            "0",
            "00",
            "01",
            "99999999999999999999999999999999999999999",
        ] {
            assert!(
                money_from_base_units("amount", bad, eur, 2).is_err(),
                "{bad}"
            );
        }
        // Above the largest amount Money holds (10^15 major units).
        assert!(money_from_base_units("amount", "100000000000000001", eur, 2).is_err());
        assert_eq!(
            money_from_base_units("amount", "1", Currency::BHD, 3)
                .unwrap()
                .to_string(),
            "0.001 BHD"
        );
        let m = money_from_base_units("amount", "10000", Currency::USD, 6).unwrap();
        assert_eq!(asset_base_units(&m, 6).as_deref(), Some("10000"));
        assert_eq!(base_units(&m), "1");
    }
}
