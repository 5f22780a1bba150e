//! Snapshots: merchants, line items, cart contents whose totals add up, and the snapshots
//! built from them.

use proptest::prelude::*;
use proptest::strategy::BoxedStrategy;

use crate::domain::{
    BuyerType, CartContent, CartId, CartSnapshot, Channel, CheckoutContext, Currency, EvidenceRef,
    LineItem, MarketplaceId, Merchant, MerchantId, Region, SellerId, Sku, Totals, MAX_QUANTITY,
};

use super::fit::maybe;
use super::values::{currency, id, mcc, text};
use super::{at, cash};

/// A merchant, sometimes on a marketplace with a seller.
pub fn merchant() -> BoxedStrategy<Merchant> {
    (
        id::<MerchantId>("merchant"),
        maybe(
            30,
            (
                id::<MarketplaceId>("market"),
                maybe(80, id::<SellerId>("seller")),
            ),
        ),
        mcc(),
    )
        .prop_map(|(merchant_id, market, mcc)| {
            let (marketplace_id, seller_id) = match market {
                Some((m, s)) => (Some(m), s),
                None => (None, None),
            };
            Merchant {
                merchant_id,
                marketplace_id,
                seller_id,
                mcc,
            }
        })
        .boxed()
}

pub(super) fn context() -> BoxedStrategy<CheckoutContext> {
    (
        prop::option::of(id::<Region>("region")),
        prop::sample::select(vec![
            Channel::Agent,
            Channel::Storefront,
            Channel::Marketplace,
        ]),
        prop::option::of(prop::sample::select(vec![
            BuyerType::Consumer,
            BuyerType::Business,
        ])),
    )
        .prop_map(|(region, channel, buyer_type)| CheckoutContext {
            region,
            channel,
            buyer_type,
        })
        .boxed()
}

/// A line item priced in `currency`: quantity 1 to 1,000,000 (small ones favoured), unit price
/// 0 to 10^6 minor units.
pub fn line_item(currency: Currency) -> BoxedStrategy<LineItem> {
    (
        id::<Sku>("SKU"),
        text(),
        prop_oneof![8 => 1u32..=5, 1 => 6u32..=1000, 1 => Just(MAX_QUANTITY)],
        prop_oneof![1 => Just(0i64), 9 => 1i64..=1_000_000],
    )
        .prop_map(move |(sku, description, quantity, price)| LineItem {
            sku,
            description,
            quantity,
            unit_price: cash(price, currency),
        })
        .boxed()
}

pub(super) fn small_amount(max: i64) -> BoxedStrategy<i64> {
    prop_oneof![Just(0i64), 1..=max].boxed()
}

/// Cart content in `currency` whose totals add up: 1 to 6 lines, shipping, tax and a discount
/// of at most the gross; created up to 2 h before [`reference_time`](super::reference_time)
/// and still valid at it (for 1 s to 3 h more). [`CartSnapshot::new`] accepts every value.
pub fn cart_content(currency: Currency) -> BoxedStrategy<CartContent> {
    cart_content_timed(currency, true)
}

/// `fresh`: the snapshot has not expired at [`reference_time`](super::reference_time) (else it
/// expires 1 s to 3 h after its creation, which may be before).
pub(super) fn cart_content_timed(currency: Currency, fresh: bool) -> BoxedStrategy<CartContent> {
    (
        (
            merchant(),
            prop::collection::vec(line_item(currency), 1..=6),
            context(),
        ),
        (
            small_amount(5_000),
            small_amount(20_000),
            prop_oneof![3 => Just(0u16), 1 => any::<u16>()],
        ),
        (
            prop::collection::vec(id::<EvidenceRef>("fact"), 0..3),
            prop::collection::vec(id::<EvidenceRef>("policy"), 0..3),
            prop::option::of(id::<CartId>("cart")),
        ),
        (-7_200i64..=0, 1i64..=10_800),
    )
        .prop_map(
            move |(
                (merchant, items, context),
                (shipping, tax, discount_share),
                (fact_refs, policy_refs, cart_id),
                (created, lifetime),
            )| {
                // At most 6 lines of 10^6 x 10^6 minor units: no overflow, below LIMIT.
                let subtotal: i64 = items
                    .iter()
                    .map(|i| i64::from(i.quantity) * i.unit_price.minor_units())
                    .sum();
                let gross = subtotal + shipping + tax;
                // discount <= gross, so it fits an i64.
                let discount = i64::try_from(
                    i128::from(gross) * i128::from(discount_share) / i128::from(u16::MAX),
                )
                .unwrap_or(0);
                let expires = if fresh { lifetime } else { created + lifetime };
                CartContent {
                    id: None,
                    cart_id,
                    merchant,
                    items,
                    totals: Totals {
                        subtotal: cash(subtotal, currency),
                        shipping: cash(shipping, currency),
                        tax: cash(tax, currency),
                        discount: cash(discount, currency),
                        total: cash(gross - discount, currency),
                    },
                    context,
                    fact_refs,
                    policy_refs,
                    created_at: at(created),
                    expires_at: at(expires),
                }
            },
        )
        .boxed()
}

/// A valid snapshot in `currency`.
pub fn snapshot_in(currency: Currency) -> BoxedStrategy<CartSnapshot> {
    cart_content(currency)
        .prop_filter_map("valid snapshot", |c| CartSnapshot::new(c).ok())
        .boxed()
}

/// A valid snapshot in any of [`currency`].
pub fn snapshot() -> BoxedStrategy<CartSnapshot> {
    currency().prop_flat_map(snapshot_in).boxed()
}
