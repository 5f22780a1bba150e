//! Proptest strategies that generate *valid* domain values, for property suites inside and
//! outside this crate (feature `proptest`).
//!
//! Everything generated passes its own constructor: snapshots add up, mandates validate, and a
//! child from [`child_of`] is accepted by `parent.derive(child)` whenever the parent is active.
//! Amounts stay at most 10^15 minor units (line prices at most 10^6), so sums never reach the
//! money limit; times are whole seconds around [`reference_time`].
//!
//! Documents from [`evaluation_document`] are built to *fit* first (the chain covers the request,
//! budgets have room, a confirmation is on record) and each part is then broken with some
//! probability, so `allowed`, `blocked`, `requires_confirmation` and `requires_revalidation` are
//! all common and limits are hit exactly at their boundaries. [`allowed_document`] never breaks
//! anything; [`arbitrary_document`] is nonsense on purpose (unrelated chains, mixed currencies,
//! usage at the money limit).
//!
//! ```
//! use agent_mandate::domain::{evaluate, Outcome};
//! use agent_mandate::strategies;
//! use proptest::prelude::*;
//! use proptest::test_runner::{Config, TestRunner};
//!
//! let mut runner = TestRunner::new(Config::with_cases(16));
//! runner
//!     .run(&strategies::allowed_document(), |doc| {
//!         prop_assert_eq!(evaluate(&doc.input()).outcome, Outcome::Allowed);
//!         Ok(())
//!     })
//!     .unwrap();
//! ```

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Duration, Utc};
use proptest::prelude::*;
use proptest::strategy::BoxedStrategy;

use crate::domain::{
    examples, Actor, ActorId, ActorKind, AmountScope, Baseline, Budgets, BuyerId, BuyerType,
    CartBinding, CartContent, CartId, CartSnapshot, Channel, ChannelRef, CheckoutContext,
    CheckoutId, CheckoutState, Confirmation, ConfirmationCondition, ConfirmationId,
    ConfirmationRule, ConfirmationScope, ContentDigest, CredentialStatus, Currency, CurrencyScope,
    EvaluationDocument, EvidenceRef, Lifecycle, LineItem, Mandate, MandateId, MandateScope,
    MandateSpec, MandateStatus, MarketplaceId, Mcc, Merchant, MerchantId, MerchantScope, Money,
    PaymentAction, PaymentRequest, Region, SellerId, Sku, SnapshotId, Suspensions, Text, Totals,
    UpstreamBlocker, UpstreamCode, Urgency, Usage, Validity, WindowLimit, WindowUsage,
    MAX_QUANTITY, MAX_WINDOW_SECONDS,
};

/// The largest amount generated, in minor units: 10^15 is at most 10^15 major units for every
/// exponent (0 to 3), the largest amount [`Money`] accepts.
const LIMIT: i64 = 1_000_000_000_000_000;

/// The instant documents are evaluated at (the Travel Backpack story's `now`, 2026-06-28
/// 09:00 UTC); generated times lie within a few days of it.
pub fn reference_time() -> DateTime<Utc> {
    examples::now()
}

fn at(seconds: i64) -> DateTime<Utc> {
    reference_time() + Duration::seconds(seconds)
}

fn cash(minor: i64, currency: Currency) -> Money {
    // Invariant: clamped to 0..=LIMIT, which every currency accepts (see `LIMIT`).
    Money::from_minor(minor.clamp(0, LIMIT), currency).expect("clamped amount is in range")
}

/// `true` with probability `fit`. At 1.0 (and 0.0) it is a constant, so shrinking a
/// document that must fit never breaks it.
fn fits(fit: f64) -> BoxedStrategy<bool> {
    if fit >= 1.0 {
        Just(true).boxed()
    } else if fit <= 0.0 {
        Just(false).boxed()
    } else {
        prop::bool::weighted(fit).boxed()
    }
}

/// `good` with probability `fit`, else `bad` (both are drawn, so shrinking stays simple).
fn choose<T: Clone + fmt::Debug + 'static>(
    fit: f64,
    good: BoxedStrategy<T>,
    bad: BoxedStrategy<T>,
) -> BoxedStrategy<T> {
    (fits(fit), good, bad)
        .prop_map(|(ok, g, b)| if ok { g } else { b })
        .boxed()
}

/// Random material to place a value relative to a limit.
#[derive(Debug, Clone, Copy)]
struct Pick {
    sel: u8,
    delta: i64,
    wide: u64,
}

fn pick() -> BoxedStrategy<Pick> {
    (any::<u8>(), 0i64..=100_000, any::<u64>())
        .prop_map(|(sel, delta, wide)| Pick { sel, delta, wide })
        .boxed()
}

impl Pick {
    /// At or above `base`: exactly `base` half the time, the boundary matters.
    fn up(self, base: i64) -> i64 {
        let v = match self.sel % 4 {
            0 | 1 => base,
            2 => base.saturating_add(1),
            _ => base.saturating_add(1 + self.delta),
        };
        v.clamp(0, LIMIT)
    }

    /// Below `base` when it can be.
    fn down(self, base: i64) -> i64 {
        let v = match self.sel % 4 {
            0 | 1 => base - 1,
            2 => base - 1 - self.delta,
            _ => self.delta.min(base - 1),
        };
        v.clamp(0, LIMIT)
    }

    /// In `lo..=hi` (endpoints favoured); `hi` when the range is empty, so the result never
    /// exceeds `hi`.
    fn between(self, lo: i64, hi: i64) -> i64 {
        let (lo, hi) = (lo.clamp(0, LIMIT), hi.clamp(0, LIMIT));
        if lo >= hi {
            return hi;
        }
        match self.sel % 4 {
            0 => lo,
            1 => hi,
            // `hi - lo` is positive and at most LIMIT, so the remainder fits an i64.
            _ => lo + i64::try_from(self.wide % (hi - lo + 1).unsigned_abs()).unwrap_or(0),
        }
    }
}

// ------------------------------------------------------------------------------------------
// Money, ids, text
// ------------------------------------------------------------------------------------------

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

fn digest() -> BoxedStrategy<ContentDigest> {
    any::<[u8; 32]>()
        .prop_map(ContentDigest::from_bytes)
        .boxed()
}

fn unique<T>(s: BoxedStrategy<T>, range: std::ops::RangeInclusive<usize>) -> BoxedStrategy<Vec<T>>
where
    T: Ord + Clone + fmt::Debug + 'static,
{
    prop::collection::btree_set(s, range)
        .prop_map(|s| s.into_iter().collect())
        .boxed()
}

fn evidence_refs() -> BoxedStrategy<Vec<EvidenceRef>> {
    unique(id("evidence"), 0..=2)
}

// ------------------------------------------------------------------------------------------
// Snapshots
// ------------------------------------------------------------------------------------------

/// A merchant, sometimes on a marketplace with a seller.
pub fn merchant() -> BoxedStrategy<Merchant> {
    (
        id::<MerchantId>("merchant"),
        prop::option::weighted(
            0.3,
            (
                id::<MarketplaceId>("market"),
                prop::option::weighted(0.8, id::<SellerId>("seller")),
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

fn context() -> BoxedStrategy<CheckoutContext> {
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

fn small_amount(max: i64) -> BoxedStrategy<i64> {
    prop_oneof![Just(0i64), 1..=max].boxed()
}

/// Cart content in `currency` whose totals add up: 1 to 6 lines, shipping, tax and a discount
/// of at most the gross; created up to 2 h before [`reference_time`] and still valid at it
/// (for 1 s to 3 h more). [`CartSnapshot::new`] accepts every value.
pub fn cart_content(currency: Currency) -> BoxedStrategy<CartContent> {
    cart_content_timed(currency, true)
}

/// `fresh`: the snapshot has not expired at [`reference_time`] (else it expires 1 s to 3 h
/// after its creation, which may be before).
fn cart_content_timed(currency: Currency, fresh: bool) -> BoxedStrategy<CartContent> {
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

// ------------------------------------------------------------------------------------------
// Mandates
// ------------------------------------------------------------------------------------------

/// An actor, usually an agent.
pub fn actor() -> BoxedStrategy<Actor> {
    (
        id::<ActorId>("agent"),
        prop_oneof![
            6 => Just(ActorKind::Agent),
            1 => Just(ActorKind::Human),
            1 => Just(ActorKind::System)
        ],
    )
        .prop_map(|(id, kind)| Actor { id, kind })
        .boxed()
}

/// Any payment action, authorize favoured.
pub fn payment_action() -> BoxedStrategy<PaymentAction> {
    prop_oneof![
        5 => Just(PaymentAction::Authorize),
        2 => Just(PaymentAction::Prepare),
        1 => Just(PaymentAction::Capture),
        1 => Just(PaymentAction::Refund),
        1 => Just(PaymentAction::CommitOrder),
    ]
    .boxed()
}

/// Any mandate status.
pub fn mandate_status() -> BoxedStrategy<MandateStatus> {
    prop::sample::select(vec![
        MandateStatus::PendingConfirmation,
        MandateStatus::Active,
        MandateStatus::Used,
        MandateStatus::Expired,
        MandateStatus::Revoked,
        MandateStatus::Rejected,
    ])
    .boxed()
}

fn status_for(fit: f64) -> BoxedStrategy<MandateStatus> {
    choose(fit, Just(MandateStatus::Active).boxed(), mandate_status())
}

/// A lifecycle in `status` created at `created_at`, with the timestamps (and reasons) the
/// status requires, all at or after `created_at`.
pub fn lifecycle(status: MandateStatus, created_at: DateTime<Utc>) -> BoxedStrategy<Lifecycle> {
    lifecycle_noise()
        .prop_map(move |noise| lifecycle_from(status, created_at, noise))
        .boxed()
}

type LifecycleNoise = (i64, i64, Option<Text>);

fn lifecycle_noise() -> BoxedStrategy<LifecycleNoise> {
    (0i64..3_600, 0i64..3_600, prop::option::of(text())).boxed()
}

fn lifecycle_from(
    status: MandateStatus,
    created_at: DateTime<Utc>,
    (a, b, reason): LifecycleNoise,
) -> Lifecycle {
    let activated = created_at + Duration::seconds(a);
    let later = activated + Duration::seconds(b);
    let mut l = Lifecycle::new(MandateStatus::PendingConfirmation, created_at);
    l.status = status;
    match status {
        MandateStatus::PendingConfirmation => {}
        MandateStatus::Active => l.activated_at = Some(activated),
        MandateStatus::Used => {
            l.activated_at = Some(activated);
            l.used_at = Some(later);
        }
        MandateStatus::Expired => l.expired_at = Some(later),
        MandateStatus::Revoked => {
            l.activated_at = Some(activated);
            l.revoked_at = Some(later);
            l.revoked_reason = reason;
        }
        MandateStatus::Rejected => {
            l.rejected_at = Some(later);
            l.rejected_reason = reason;
        }
    }
    l
}

/// What a request on a snapshot looks like, for mandates built to fit (or miss) it.
#[derive(Debug, Clone)]
struct Target {
    merchant: Merchant,
    skus: Vec<Sku>,
    lines: u32,
    snapshot_id: SnapshotId,
    currency: Currency,
    action: PaymentAction,
    total: i64,
    shipping: i64,
    tax: i64,
    baseline: Baseline,
}

impl Target {
    fn of(snapshot: &CartSnapshot, action: PaymentAction) -> Target {
        let skus: BTreeSet<Sku> = snapshot.items().iter().map(|i| i.sku.clone()).collect();
        Target {
            merchant: snapshot.merchant().clone(),
            skus: skus.into_iter().collect(),
            lines: u32::try_from(snapshot.items().len()).unwrap_or(u32::MAX),
            snapshot_id: snapshot.id(),
            currency: snapshot.currency(),
            action,
            total: snapshot.total().minor_units(),
            shipping: snapshot.totals().shipping.minor_units(),
            tax: snapshot.totals().tax.minor_units(),
            baseline: Baseline::of(snapshot),
        }
    }

    /// The part of the total a mandate with these inclusion flags counts.
    fn scoped(&self, shipping: bool, tax: bool) -> i64 {
        let mut v = self.total;
        if !shipping {
            v = (v - self.shipping).max(0);
        }
        if !tax {
            v = (v - self.tax).max(0);
        }
        v
    }

    fn baseline_in(&self, currency: Currency) -> Baseline {
        let mut b = self.baseline.clone();
        b.total = cash(b.total.minor_units(), currency);
        b.shipping = cash(b.shipping.minor_units(), currency);
        b
    }
}

fn with_own<T: Ord + Clone>(mut set: Vec<T>, own: Option<&T>) -> Vec<T> {
    if let Some(o) = own {
        if !set.contains(o) {
            set.push(o.clone());
        }
    }
    set
}

fn merchant_scope_for(t: &Target, fit: f64) -> BoxedStrategy<MerchantScope> {
    let own = t.merchant.merchant_id.clone();
    let own2 = own.clone();
    let mut good: Vec<(u32, BoxedStrategy<MerchantScope>)> = vec![
        (4, Just(MerchantScope::Single { merchant_id: own }).boxed()),
        (
            2,
            unique(id::<MerchantId>("merchant"), 0..=2)
                .prop_map(move |s| MerchantScope::Allowlist {
                    merchant_ids: with_own(s, Some(&own2)),
                })
                .boxed(),
        ),
    ];
    if let Some(market) = t.merchant.marketplace_id.clone() {
        let seller = t.merchant.seller_id.clone();
        let sellers: BoxedStrategy<Option<Vec<SellerId>>> = match seller {
            Some(s) => prop::option::of(
                unique(id::<SellerId>("seller"), 0..=2).prop_map(move |v| with_own(v, Some(&s))),
            )
            .boxed(),
            None => Just(None).boxed(),
        };
        good.push((
            2,
            sellers
                .prop_map(move |allowed_sellers| MerchantScope::Marketplace {
                    marketplace_id: market.clone(),
                    allowed_sellers,
                })
                .boxed(),
        ));
    }
    let market = t.merchant.marketplace_id.clone();
    let bad = prop_oneof![
        id::<MerchantId>("merchant").prop_map(|merchant_id| MerchantScope::Single { merchant_id }),
        unique(id::<MerchantId>("merchant"), 1..=2)
            .prop_map(|merchant_ids| MerchantScope::Allowlist { merchant_ids }),
        (
            id::<MarketplaceId>("market"),
            prop::option::of(unique(id::<SellerId>("seller"), 0..=2))
        )
            .prop_map(move |(m, allowed_sellers)| MerchantScope::Marketplace {
                marketplace_id: market.clone().unwrap_or(m),
                allowed_sellers,
            }),
    ];
    choose(
        fit,
        prop::strategy::Union::new_weighted(good).boxed(),
        bad.boxed(),
    )
}

fn mcc_scope_for(t: &Target, fit: f64) -> BoxedStrategy<Option<Vec<Mcc>>> {
    let own = t.merchant.mcc;
    choose(
        fit,
        prop_oneof![
            Just(None),
            unique(mcc(), 0..=2).prop_map(move |s| Some(with_own(s, Some(&own)))),
        ]
        .boxed(),
        unique(mcc(), 0..=2).prop_map(Some).boxed(),
    )
}

fn cart_binding_for(t: &Target, fit: f64) -> BoxedStrategy<CartBinding> {
    let (id_, skus, lines) = (t.snapshot_id, t.skus.clone(), t.lines);
    let good = prop_oneof![
        2 => Just(CartBinding::Snapshot { snapshot_id: id_ }),
        3 => (
            prop::option::of(unique(id::<Sku>("SKU"), 0..=1).prop_map(move |mut s| {
                for k in &skus {
                    s = with_own(s, Some(k));
                }
                s
            })),
            prop::option::of(lines..=lines.saturating_add(3)),
        )
            .prop_map(|(allowed_skus, max_line_items)| CartBinding::Open {
                allowed_skus,
                max_line_items,
            }),
    ];
    let bad = prop_oneof![
        snapshot_id().prop_map(|snapshot_id| CartBinding::Snapshot { snapshot_id }),
        unique(id::<Sku>("SKU"), 0..=2).prop_map(|s| CartBinding::Open {
            allowed_skus: Some(s),
            max_line_items: None,
        }),
        (0..lines.max(1)).prop_map(|m| CartBinding::Open {
            allowed_skus: None,
            max_line_items: Some(m),
        }),
    ];
    choose(fit, good.boxed(), bad.boxed())
}

fn actions_for(action: PaymentAction, fit: f64) -> BoxedStrategy<crate::domain::ActionSet> {
    (
        fits(fit),
        prop::sample::subsequence(PaymentAction::ALL.to_vec(), 0..=5),
    )
        .prop_map(move |(ok, picked)| {
            let mut set: crate::domain::ActionSet = picked.into_iter().collect();
            if ok {
                set.insert(action);
            }
            if set.is_empty() {
                set.insert(if action == PaymentAction::Prepare {
                    PaymentAction::CommitOrder
                } else {
                    PaymentAction::Prepare
                });
            }
            set
        })
        .boxed()
}

fn amount_scope_for(t: &Target, fit: f64, cur: Currency) -> BoxedStrategy<AmountScope> {
    let t = t.clone();
    (
        fits(fit),
        (any::<bool>(), any::<bool>()),
        prop::bool::weighted(0.8),
        any::<bool>(),
        prop::option::of(0u32..=4),
        pick(),
    )
        .prop_map(move |(ok, (ship, tax), lower, partial, attempts, p)| {
            let scoped = t.scoped(ship, tax);
            let max = match (ok, lower) {
                (true, true) => p.up(scoped),
                (true, false) => scoped,
                // Without lower amounts, a maximum above the amount misses too.
                (false, false) if p.sel & 0x10 != 0 => scoped.saturating_add(1 + p.delta),
                (false, _) => p.down(scoped),
            };
            AmountScope {
                max_amount: cash(max, cur),
                includes_shipping: ship,
                includes_tax: tax,
                allow_lower_amount: lower,
                allow_partial_capture: partial,
                max_payment_attempts: attempts.map(|a| if ok { a.max(1) } else { a }),
            }
        })
        .boxed()
}

fn limit_for(fit: f64, need: i64) -> BoxedStrategy<i64> {
    (fits(fit), pick())
        .prop_map(move |(ok, p)| if ok { p.up(need) } else { p.down(need) })
        .boxed()
}

fn window_seconds() -> BoxedStrategy<u64> {
    prop_oneof![
        3 => prop::sample::select(vec![3_600u64, 86_400, 604_800, 2_592_000]),
        1 => 1..=MAX_WINDOW_SECONDS,
    ]
    .boxed()
}

fn window_for(need: i64, fit: f64, cur: Currency) -> BoxedStrategy<WindowLimit> {
    (
        fits(fit),
        window_seconds(),
        prop::option::of(limit_for(fit, need)),
        prop::option::of(0u32..=5),
    )
        .prop_map(move |(ok, window_seconds, amount, count)| {
            let count = count.map(|c| if ok { c.max(1) } else { c });
            WindowLimit {
                window_seconds,
                max_amount: amount.map(|a| cash(a, cur)),
                max_count: if amount.is_none() && count.is_none() {
                    Some(if ok { 3 } else { 0 })
                } else {
                    count
                },
            }
        })
        .boxed()
}

fn budgets_for(t: &Target, fit: f64, cur: Currency) -> BoxedStrategy<Budgets> {
    (
        prop::option::of(limit_for(fit, t.total)),
        prop::collection::vec(window_for(t.total, fit, cur), 0..=2),
        prop::option::of(limit_for(fit, t.total)),
    )
        .prop_map(move |(per_transaction, windows, lifetime)| Budgets {
            per_transaction: per_transaction.map(|m| cash(m, cur)),
            windows,
            lifetime: lifetime.map(|m| cash(m, cur)),
        })
        .boxed()
}

fn urgency() -> BoxedStrategy<Urgency> {
    prop::sample::select(vec![
        Urgency::Routine,
        Urgency::TimeSensitive,
        Urgency::Critical,
    ])
    .boxed()
}

fn condition(around: i64, cur: Currency) -> BoxedStrategy<ConfirmationCondition> {
    use ConfirmationCondition as K;
    prop_oneof![
        2 => Just(K::Always),
        3 => (any::<bool>(), pick()).prop_map(move |(up, p)| K::AboveAmount {
            amount: cash(if up { p.up(around) } else { p.down(around) }, cur),
        }),
        1 => urgency().prop_map(|urgency| K::UrgencyAtLeast { urgency }),
        1 => Just(K::AmountChanged),
        1 => Just(K::CartChanged),
        1 => Just(K::ShippingChanged),
        1 => Just(K::PolicyChanged),
    ]
    .boxed()
}

fn confirmation_for(t: &Target, cur: Currency) -> BoxedStrategy<ConfirmationRule> {
    let exact = t.baseline_in(cur);
    let other = exact.clone();
    (
        prop_oneof![
            3 => Just(Vec::new()),
            2 => prop::collection::vec(condition(t.total, cur), 1..=2),
        ],
        prop_oneof![
            2 => Just(None),
            2 => Just(Some(exact)),
            1 => (snapshot_id(), digest(), 0i64..=2).prop_map(move |(s, d, which)| {
                let mut b = other.clone();
                match which {
                    0 => b.snapshot_id = s,
                    1 => b.items_digest = d,
                    _ => b.shipping = cash(b.shipping.minor_units() + 1, cur),
                }
                Some(b)
            }),
        ],
    )
        .prop_map(|(conditions, baseline)| ConfirmationRule {
            conditions,
            baseline,
        })
        .boxed()
}

fn validity_for(fit: f64) -> BoxedStrategy<Validity> {
    let good = (0i64..=172_800, 1i64..=172_800)
        .prop_map(|(before, after)| (-before, after))
        .boxed();
    let bad = prop_oneof![
        (1i64..=3_600, 1i64..=3_600).prop_map(|(nb, len)| (nb, nb + len)),
        (0i64..=3_600, 0i64..=3_600).prop_map(|(len, ago)| (-ago - len - 1, -ago)),
        Just((-60, 0)),
        Just((0, 60)),
    ]
    .boxed();
    choose(fit, good, bad)
        .prop_map(|(nb, exp)| Validity {
            not_before: at(nb),
            expires_at: at(exp.max(nb + 1)),
        })
        .boxed()
}

fn uses_limit(fit: f64) -> BoxedStrategy<Option<u32>> {
    (fits(fit), prop::option::of(0u32..=3))
        .prop_map(|(ok, n)| n.map(|n| if ok { n.max(1) } else { n }))
        .boxed()
}

fn root_spec(t: Target, fit: f64) -> BoxedStrategy<MandateSpec> {
    (fits(fit), currency(), prop::bool::weighted(0.2))
        .prop_flat_map(move |(same, other, conversion)| {
            let cur = if same { t.currency } else { other };
            root_spec_in(&t, fit, cur, conversion)
        })
        .boxed()
}

fn root_spec_in(
    t: &Target,
    fit: f64,
    cur: Currency,
    conversion: bool,
) -> BoxedStrategy<MandateSpec> {
    (
        (
            id::<MandateId>("mandate"),
            id::<BuyerId>("buyer"),
            actor(),
            evidence_refs(),
        ),
        (
            merchant_scope_for(t, fit),
            mcc_scope_for(t, fit),
            cart_binding_for(t, fit),
            actions_for(t.action, fit),
        ),
        amount_scope_for(t, fit, cur),
        budgets_for(t, fit, cur),
        confirmation_for(t, cur),
        (
            uses_limit(fit),
            validity_for(fit),
            status_for(fit),
            lifecycle_noise(),
        ),
    )
        .prop_map(
            move |(
                (id, buyer_id, actor, evidence_refs),
                (merchants, mccs, cart, actions),
                amount,
                budgets,
                confirmation,
                (max_uses, validity, status, noise),
            )| {
                let created = validity.not_before - Duration::seconds(60);
                MandateSpec {
                    id,
                    buyer_id,
                    actor,
                    parent_id: None,
                    scope: MandateScope {
                        merchants,
                        mccs,
                        cart,
                        amount,
                        currency: CurrencyScope {
                            currency: cur,
                            conversion_allowed: conversion,
                        },
                        budgets,
                        actions,
                        confirmation,
                        max_uses,
                        validity,
                    },
                    lifecycle: lifecycle_from(status, created, noise),
                    evidence_refs,
                }
            },
        )
        .boxed()
}

/// A root mandate fitted to a request of `action` on `snapshot` (its total, at its merchant):
/// each dimension (merchant, MCC, cart, currency, action, amount, budgets, validity, status)
/// covers the request with probability `fit` and misses it otherwise, at the boundary when it
/// can. At `fit` 1.0 the mandate allows the request (given usage with room and a usable
/// credential).
pub fn root_mandate_for(
    snapshot: &CartSnapshot,
    action: PaymentAction,
    fit: f64,
) -> BoxedStrategy<Mandate> {
    root_spec(Target::of(snapshot, action), fit)
        .prop_filter_map("valid mandate", |s| Mandate::new(s).ok())
        .boxed()
}

/// A root mandate with random scopes: merchants (single, marketplace, allowlist), MCCs, cart
/// binding, caps, windows, actions, confirmation rule, validity, any status with its lifecycle
/// timestamps.
pub fn root_mandate() -> BoxedStrategy<Mandate> {
    (snapshot(), payment_action())
        .prop_flat_map(|(s, a)| {
            (prop_oneof![Just(0.5), Just(0.9)], Just(Target::of(&s, a)))
                .prop_flat_map(|(fit, t)| root_spec(t, fit))
        })
        .prop_filter_map("valid mandate", |s| Mandate::new(s).ok())
        .boxed()
}

/// Like [`root_mandate`], always `active` (a parent [`Mandate::derive`] accepts children of).
pub fn active_root_mandate() -> BoxedStrategy<Mandate> {
    (root_mandate(), lifecycle_noise())
        .prop_filter_map("valid mandate", |(m, noise)| {
            let mut spec = m.spec().clone();
            spec.lifecycle =
                lifecycle_from(MandateStatus::Active, spec.lifecycle.created_at, noise);
            Mandate::new(spec).ok()
        })
        .boxed()
}

// ------------------------------------------------------------------------------------------
// Children (attenuation)
// ------------------------------------------------------------------------------------------

/// An attenuated child of `parent`: narrower or equal in every dimension, so
/// `parent.derive(child)` accepts it whenever `parent` is active (I6). Its id extends the
/// parent's (`<parent>.<suffix>`), its buyer is the parent's, its actor is random.
pub fn child_of(parent: &Mandate) -> BoxedStrategy<MandateSpec> {
    child_spec(parent, None, 0.5)
}

/// Like [`child_of`], but each narrowing keeps, with probability `fit`, what a request of
/// `action` on `snapshot` needs when the parent grants it.
pub fn child_for(
    parent: &Mandate,
    snapshot: &CartSnapshot,
    action: PaymentAction,
    fit: f64,
) -> BoxedStrategy<MandateSpec> {
    child_spec(parent, Some(Target::of(snapshot, action)), fit)
}

fn child_merchants(
    p: &MerchantScope,
    t: Option<&Target>,
    fit: f64,
) -> BoxedStrategy<MerchantScope> {
    match p.clone() {
        MerchantScope::Single { merchant_id } => prop_oneof![
            3 => Just(MerchantScope::Single { merchant_id: merchant_id.clone() }),
            1 => Just(MerchantScope::Allowlist { merchant_ids: vec![merchant_id] }),
        ]
        .boxed(),
        MerchantScope::Allowlist { merchant_ids } => {
            let keep = t
                .map(|t| t.merchant.merchant_id.clone())
                .filter(|m| merchant_ids.contains(m));
            let len = merchant_ids.len();
            (
                fits(fit),
                any::<bool>(),
                prop::sample::subsequence(merchant_ids.clone(), 1..=len.max(1)),
                prop::sample::select(merchant_ids),
            )
                .prop_map(move |(ok, single, sub, one)| {
                    let keep = keep.as_ref().filter(|_| ok);
                    if single {
                        MerchantScope::Single {
                            merchant_id: keep.cloned().unwrap_or(one),
                        }
                    } else {
                        MerchantScope::Allowlist {
                            merchant_ids: with_own(sub, keep),
                        }
                    }
                })
                .boxed()
        }
        MerchantScope::Marketplace {
            marketplace_id,
            allowed_sellers,
        } => {
            let seller = t.and_then(|t| t.merchant.seller_id.clone());
            let no_seller = t.is_some() && seller.is_none();
            let sellers: BoxedStrategy<Option<Vec<SellerId>>> = match allowed_sellers {
                None => (
                    fits(fit),
                    prop::option::of(unique(id::<SellerId>("seller"), 0..=2)),
                )
                    .prop_map(move |(ok, s)| {
                        if ok && no_seller {
                            None
                        } else {
                            s.map(|s| with_own(s, seller.as_ref().filter(|_| ok)))
                        }
                    })
                    .boxed(),
                Some(list) => {
                    let keep = seller.filter(|s| list.contains(s));
                    let len = list.len();
                    (fits(fit), prop::sample::subsequence(list, 0..=len))
                        .prop_map(move |(ok, sub)| {
                            Some(with_own(sub, keep.as_ref().filter(|_| ok)))
                        })
                        .boxed()
                }
            };
            sellers
                .prop_map(move |allowed_sellers| MerchantScope::Marketplace {
                    marketplace_id: marketplace_id.clone(),
                    allowed_sellers,
                })
                .boxed()
        }
    }
}

fn child_mccs(
    p: Option<Vec<Mcc>>,
    t: Option<&Target>,
    fit: f64,
) -> BoxedStrategy<Option<Vec<Mcc>>> {
    let own = t.map(|t| t.merchant.mcc);
    match p {
        None => (fits(fit), prop::option::of(unique(mcc(), 0..=2)))
            .prop_map(move |(ok, s)| s.map(|s| with_own(s, own.as_ref().filter(|_| ok))))
            .boxed(),
        Some(list) => {
            let keep = own.filter(|m| list.contains(m));
            let len = list.len();
            (fits(fit), prop::sample::subsequence(list, 0..=len))
                .prop_map(move |(ok, sub)| Some(with_own(sub, keep.as_ref().filter(|_| ok))))
                .boxed()
        }
    }
}

fn child_cart(p: &CartBinding, t: Option<&Target>, fit: f64) -> BoxedStrategy<CartBinding> {
    let (skus, allowed_lines) = match p {
        CartBinding::Snapshot { .. } => return Just(p.clone()).boxed(),
        CartBinding::Open {
            allowed_skus,
            max_line_items,
        } => (allowed_skus.clone(), *max_line_items),
    };
    let own_id = t.map(|t| t.snapshot_id);
    let own_skus: Vec<Sku> = t.map(|t| t.skus.clone()).unwrap_or_default();
    let lines = t.map_or(0, |t| t.lines);
    let sku_strategy: BoxedStrategy<Option<Vec<Sku>>> = match skus {
        None => {
            let own = own_skus.clone();
            (fits(fit), prop::option::of(unique(id::<Sku>("SKU"), 0..=2)))
                .prop_map(move |(ok, s)| {
                    s.map(|mut s| {
                        if ok {
                            for k in &own {
                                s = with_own(s, Some(k));
                            }
                        }
                        s
                    })
                })
                .boxed()
        }
        Some(list) => {
            let keep: Vec<Sku> = own_skus
                .iter()
                .filter(|s| list.contains(s))
                .cloned()
                .collect();
            let len = list.len();
            (fits(fit), prop::sample::subsequence(list, 0..=len))
                .prop_map(move |(ok, mut sub)| {
                    if ok {
                        for k in &keep {
                            sub = with_own(sub, Some(k));
                        }
                    }
                    Some(sub)
                })
                .boxed()
        }
    };
    let line_strategy: BoxedStrategy<Option<u32>> = match allowed_lines {
        None => (fits(fit), prop::option::of(0u32..=8))
            .prop_map(move |(ok, n)| n.map(|n| if ok { n.max(lines) } else { n }))
            .boxed(),
        Some(max) => (fits(fit), 0u32..=max)
            .prop_map(move |(ok, n)| Some(if ok && lines <= max { n.max(lines) } else { n }))
            .boxed(),
    };
    prop_oneof![
        1 => (fits(fit), snapshot_id()).prop_map(move |(ok, s)| CartBinding::Snapshot {
            snapshot_id: own_id.filter(|_| ok).unwrap_or(s),
        }),
        3 => (sku_strategy, line_strategy).prop_map(|(allowed_skus, max_line_items)| {
            CartBinding::Open { allowed_skus, max_line_items }
        }),
    ]
    .boxed()
}

fn child_actions(
    p: crate::domain::ActionSet,
    t: Option<&Target>,
    fit: f64,
) -> BoxedStrategy<crate::domain::ActionSet> {
    let all: Vec<PaymentAction> = p.iter().collect();
    let keep = t.map(|t| t.action).filter(|a| p.contains(*a));
    let len = all.len();
    (fits(fit), prop::sample::subsequence(all, 1..=len.max(1)))
        .prop_map(move |(ok, sub)| {
            let mut set: crate::domain::ActionSet = sub.into_iter().collect();
            if let Some(a) = keep.filter(|_| ok) {
                set.insert(a);
            }
            set
        })
        .boxed()
}

/// A cap no higher than the parent's (`None` only where the parent has none); at least `need`
/// when it fits.
fn child_cap(parent: Option<i64>, need: i64, fit: f64) -> BoxedStrategy<Option<i64>> {
    match parent {
        Some(p) => (fits(fit), pick())
            .prop_map(move |(ok, k)| {
                Some(if ok && need <= p {
                    k.between(need, p)
                } else {
                    k.between(0, p)
                })
            })
            .boxed(),
        None => prop::option::of(limit_for(fit, need)).boxed(),
    }
}

fn child_count(parent: Option<u32>, fit: f64) -> BoxedStrategy<Option<u32>> {
    match parent {
        Some(p) => (fits(fit), 0u32..=p)
            .prop_map(move |(ok, n)| Some(if ok && p >= 1 { n.max(1) } else { n }))
            .boxed(),
        None => uses_limit(fit),
    }
}

fn child_amount(
    p: &AmountScope,
    t: Option<&Target>,
    fit: f64,
    cur: Currency,
) -> BoxedStrategy<AmountScope> {
    let p = p.clone();
    let t = t.filter(|t| t.currency == cur).cloned();
    (
        fits(fit),
        (any::<bool>(), any::<bool>()),
        (prop::bool::weighted(0.7), any::<bool>()),
        child_count(p.max_payment_attempts, fit),
        pick(),
    )
        .prop_map(move |(ok, (ship, tax), (lower, partial), attempts, k)| {
            // A parent without lower amounts allows exactly its maximum: so does the child.
            let pinned = !p.allow_lower_amount;
            let (ship, tax) = if ok || pinned {
                (p.includes_shipping, p.includes_tax)
            } else {
                (p.includes_shipping || ship, p.includes_tax || tax)
            };
            let lower = p.allow_lower_amount && lower;
            let hi = p.max_amount.minor_units();
            let max = match t.as_ref().map(|t| t.scoped(ship, tax)) {
                _ if pinned => hi,
                Some(lo) if ok && lo <= hi => {
                    if lower {
                        k.between(lo, hi)
                    } else {
                        lo
                    }
                }
                _ => k.between(0, hi),
            };
            AmountScope {
                max_amount: cash(max, cur),
                includes_shipping: ship,
                includes_tax: tax,
                allow_lower_amount: lower,
                allow_partial_capture: p.allow_partial_capture && partial,
                max_payment_attempts: attempts,
            }
        })
        .boxed()
}

fn child_window(p: &WindowLimit, need: i64, fit: f64, cur: Currency) -> BoxedStrategy<WindowLimit> {
    let seconds = p.window_seconds;
    (
        prop_oneof![3 => Just(seconds), 1 => seconds..=MAX_WINDOW_SECONDS.max(seconds)],
        child_cap(p.max_amount.map(|m| m.minor_units()), need, fit),
        child_count(p.max_count, fit),
    )
        .prop_map(move |(window_seconds, amount, count)| WindowLimit {
            window_seconds,
            max_amount: amount.map(|a| cash(a, cur)),
            max_count: if amount.is_none() && count.is_none() {
                Some(0)
            } else {
                count
            },
        })
        .boxed()
}

fn child_budgets(
    p: &Budgets,
    t: Option<&Target>,
    fit: f64,
    cur: Currency,
) -> BoxedStrategy<Budgets> {
    let need = t.map_or(0, |t| t.total);
    let windows: Vec<BoxedStrategy<WindowLimit>> = p
        .windows
        .iter()
        .map(|w| child_window(w, need, fit, cur))
        .collect();
    (
        child_cap(p.per_transaction.map(|m| m.minor_units()), need, fit),
        windows,
        prop::collection::vec(window_for(need, fit, cur), 0..=1),
        child_cap(p.lifetime.map(|m| m.minor_units()), need, fit),
    )
        .prop_map(move |(per_transaction, mut windows, extra, lifetime)| {
            windows.extend(extra);
            Budgets {
                per_transaction: per_transaction.map(|m| cash(m, cur)),
                windows,
                lifetime: lifetime.map(|m| cash(m, cur)),
            }
        })
        .boxed()
}

/// A condition that asks in every case `p` asks (a lower threshold, a lower urgency).
fn child_condition(p: &ConfirmationCondition) -> BoxedStrategy<ConfirmationCondition> {
    use ConfirmationCondition as K;
    match p {
        K::AboveAmount { amount } => {
            let hi = amount.minor_units();
            let currency = amount.currency();
            pick()
                .prop_map(move |k| K::AboveAmount {
                    amount: cash(k.between(0, hi), currency),
                })
                .boxed()
        }
        K::UrgencyAtLeast { urgency: u } => {
            let u = *u;
            urgency()
                .prop_map(move |c| K::UrgencyAtLeast { urgency: c.min(u) })
                .boxed()
        }
        K::Always | K::AmountChanged | K::CartChanged | K::ShippingChanged | K::PolicyChanged => {
            Just(p.clone()).boxed()
        }
    }
}

fn child_confirmation(
    p: &ConfirmationRule,
    cur: Currency,
    around: i64,
) -> BoxedStrategy<ConfirmationRule> {
    let inherited: Vec<BoxedStrategy<ConfirmationCondition>> =
        p.conditions.iter().map(child_condition).collect();
    let baseline = p.baseline.clone();
    (
        inherited,
        prop::collection::vec(condition(around, cur), 0..=1),
        prop::bool::weighted(0.1),
        any::<bool>(),
    )
        .prop_map(move |(mut conditions, extra, always, keep_baseline)| {
            conditions.extend(extra);
            if always {
                conditions = vec![ConfirmationCondition::Always];
            }
            ConfirmationRule {
                conditions,
                baseline: baseline.clone().filter(|_| keep_baseline),
            }
        })
        .boxed()
}

/// A sub-interval of `p`, containing `reference_time()` when it fits and `p` does.
fn child_validity(p: &Validity, fit: f64) -> BoxedStrategy<Validity> {
    let p = p.clone();
    (fits(fit), pick(), pick())
        .prop_map(move |(ok, a, b)| {
            let now = reference_time();
            let (nb, exp) = (p.not_before, p.expires_at);
            let secs = (exp - nb).num_seconds();
            if secs < 2 {
                return p.clone();
            }
            if ok && p.contains(now) {
                let before = (now - nb).num_seconds();
                let after = (exp - now).num_seconds();
                let cut_nb = a.between(0, before);
                // `exp` is after `now`; cut at most down to one second after it (or keep exp).
                let cut_exp = if after >= 2 {
                    b.between(0, after - 1)
                } else {
                    0
                };
                return Validity {
                    not_before: nb + Duration::seconds(cut_nb),
                    expires_at: exp - Duration::seconds(cut_exp),
                };
            }
            let cut_nb = a.between(0, secs - 1);
            let cut_exp = b.between(0, secs - 1 - cut_nb);
            Validity {
                not_before: nb + Duration::seconds(cut_nb),
                expires_at: exp - Duration::seconds(cut_exp),
            }
        })
        .boxed()
}

fn child_spec(parent: &Mandate, t: Option<Target>, fit: f64) -> BoxedStrategy<MandateSpec> {
    let p = parent.spec().clone();
    let cur = parent.currency();
    let tr = t.as_ref();
    let around = tr.map_or(0, |t| t.total);
    (
        ("[a-z0-9]{1,4}", actor(), evidence_refs(), lifecycle_noise()),
        (
            child_merchants(&p.scope.merchants, tr, fit),
            child_mccs(p.scope.mccs.clone(), tr, fit),
            child_cart(&p.scope.cart, tr, fit),
            child_actions(p.scope.actions, tr, fit),
        ),
        child_amount(&p.scope.amount, tr, fit, cur),
        child_budgets(&p.scope.budgets, tr, fit, cur),
        child_confirmation(&p.scope.confirmation, cur, around),
        (
            child_count(p.scope.max_uses, fit),
            child_validity(&p.scope.validity, fit),
            status_for(fit),
            prop::bool::weighted(0.5),
        ),
    )
        .prop_filter_map(
            "valid child id",
            move |(
                (suffix, actor, evidence_refs, noise),
                (merchants, mccs, cart, actions),
                amount,
                budgets,
                confirmation,
                (max_uses, validity, status, conversion),
            )| {
                let id = MandateId::new(format!("{}.{suffix}", p.id))
                    .or_else(|_| MandateId::new(format!("child.{suffix}")))
                    .ok()
                    .filter(|id| *id != p.id)?;
                let created = validity.not_before;
                Some(MandateSpec {
                    id,
                    buyer_id: p.buyer_id.clone(),
                    actor,
                    parent_id: Some(p.id.clone()),
                    scope: MandateScope {
                        merchants,
                        mccs,
                        cart,
                        amount,
                        currency: CurrencyScope {
                            currency: cur,
                            conversion_allowed: p.scope.currency.conversion_allowed && conversion,
                        },
                        budgets,
                        actions,
                        confirmation,
                        max_uses,
                        validity,
                    },
                    lifecycle: lifecycle_from(status, created, noise),
                    evidence_refs,
                })
            },
        )
        .boxed()
}

// ------------------------------------------------------------------------------------------
// Usage, requests, documents
// ------------------------------------------------------------------------------------------

/// Usage of `mandate` (in its currency) for a payment of `amount`: each limit (window amount
/// and count, lifetime, uses, attempts) leaves room with probability `fit`, often exactly
/// enough, and is reached or passed otherwise; a window's usage is sometimes missing.
pub fn usage_for(mandate: &Mandate, amount: Money, fit: f64) -> BoxedStrategy<Usage> {
    let need = if amount.currency() == mandate.currency() {
        amount.minor_units()
    } else {
        0
    };
    usage_near(mandate, need, fit)
}

fn used_under(limit: Option<i64>, need: i64, fit: f64) -> BoxedStrategy<i64> {
    (fits(fit), pick(), 0i64..=1_000)
        .prop_map(move |(ok, k, free)| match limit {
            Some(l) if ok => k.between(0, l - need),
            Some(l) => k.up(l - need + 1),
            None => free,
        })
        .boxed()
}

fn count_under(limit: Option<u32>, fit: f64) -> BoxedStrategy<u32> {
    (fits(fit), 0u32..=3, 0u32..=2)
        .prop_map(move |(ok, n, over)| match limit {
            Some(l) if ok && l >= 1 => n.min(l - 1),
            Some(l) => l.saturating_add(over),
            None => n,
        })
        .boxed()
}

/// The lower of two optional limits (`None` is no limit).
fn tightest<T: Ord>(a: Option<T>, b: Option<T>) -> Option<T> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn usage_near(m: &Mandate, need: i64, fit: f64) -> BoxedStrategy<Usage> {
    let cur = m.currency();
    let scope = m.scope();
    // One usage per window length, under the tightest limits of the windows of that length.
    let mut lengths: std::collections::BTreeMap<u64, (Option<i64>, Option<u32>)> =
        std::collections::BTreeMap::new();
    for w in &scope.budgets.windows {
        let e = lengths.entry(w.window_seconds).or_insert((None, None));
        let amount = w.max_amount.map(|a| a.minor_units());
        e.0 = tightest(e.0, amount);
        e.1 = tightest(e.1, w.max_count);
    }
    let windows: Vec<BoxedStrategy<Option<WindowUsage>>> = lengths
        .into_iter()
        .map(|(seconds, (amount, count))| {
            (
                fits(1.0 - (1.0 - fit) / 3.0),
                used_under(amount, need, fit),
                count_under(count, fit),
            )
                .prop_map(move |(present, amount, count)| {
                    present.then(|| WindowUsage {
                        window_seconds: seconds,
                        amount: cash(amount, cur),
                        count,
                    })
                })
                .boxed()
        })
        .collect();
    let id = m.id().clone();
    (
        used_under(scope.budgets.lifetime.map(|l| l.minor_units()), need, fit),
        any::<u16>(),
        windows,
        count_under(scope.max_uses, fit),
        count_under(scope.amount.max_payment_attempts, fit),
    )
        .prop_map(move |(used, share, windows, uses, attempts)| {
            let held = i64::try_from(i128::from(used) * i128::from(share) / i128::from(u16::MAX))
                .unwrap_or(0);
            Usage {
                mandate_id: id.clone(),
                spent: cash(used - held, cur),
                held: cash(held, cur),
                windows: windows.into_iter().flatten().collect(),
                uses,
                attempts,
            }
        })
        .boxed()
}

/// A request on `snapshot` under `mandate`: by its actor, for its buyer, of the snapshot's
/// total at its merchant, for an action the mandate allows; each of these holds with
/// probability `fit` and is wrong otherwise.
pub fn request_for(
    snapshot: &CartSnapshot,
    mandate: &Mandate,
    fit: f64,
) -> BoxedStrategy<PaymentRequest> {
    let allowed: Vec<PaymentAction> = mandate.scope().actions.iter().collect();
    let (snapshot, mandate) = (snapshot.clone(), mandate.clone());
    (fits(fit), prop::sample::select(allowed), payment_action())
        .prop_flat_map(move |(own, allowed, any)| {
            request_near(&snapshot, &mandate, if own { allowed } else { any }, fit)
        })
        .boxed()
}

fn request_near(
    snap: &CartSnapshot,
    leaf: &Mandate,
    action: PaymentAction,
    fit: f64,
) -> BoxedStrategy<PaymentRequest> {
    let (snap, leaf) = (snap.clone(), leaf.clone());
    (
        (
            fits(fit),
            fits(fit),
            fits(fit),
            fits(fit),
            fits(fit),
            fits(fit),
        ),
        (actor(), id::<BuyerId>("buyer"), id::<MandateId>("mandate")),
        (
            id::<MerchantId>("merchant"),
            snapshot_id(),
            pick(),
            currency(),
        ),
        prop::option::weighted(0.3, urgency()),
    )
        .prop_map(
            move |(
                (a, b, m, mer, s, amt),
                (actor, buyer, mandate),
                (merchant, sid, k, cur),
                urgency,
            )| {
                let total = snap.total();
                let amount = if amt {
                    total
                } else if cur != total.currency() && k.sel % 4 == 0 {
                    cash(total.minor_units(), cur)
                } else if k.sel % 2 == 0 {
                    cash(k.between(0, total.minor_units()), total.currency())
                } else {
                    cash(k.up(total.minor_units() + 1), total.currency())
                };
                PaymentRequest {
                    actor: if a { leaf.actor().clone() } else { actor },
                    buyer_id: if b { leaf.buyer_id().clone() } else { buyer },
                    mandate_id: if m { leaf.id().clone() } else { mandate },
                    action,
                    merchant_id: if mer {
                        snap.merchant().merchant_id.clone()
                    } else {
                        merchant
                    },
                    snapshot_id: if s { snap.id() } else { sid },
                    amount,
                    urgency,
                }
            },
        )
        .boxed()
}

fn confirmation_near(
    req: &PaymentRequest,
    chain_ids: Vec<MandateId>,
    now: DateTime<Utc>,
    fit: f64,
) -> BoxedStrategy<Confirmation> {
    let req = req.clone();
    let ids = if chain_ids.is_empty() {
        vec![req.mandate_id.clone()]
    } else {
        chain_ids
    };
    (
        (fits(fit), 0u8..9),
        (
            id::<ConfirmationId>("confirmation"),
            id::<ChannelRef>("push"),
            id::<ActorId>("person"),
            prop::sample::select(ids),
        ),
        (
            0i64..=3_600,
            prop::option::of(1i64..=3_600),
            pick(),
            prop::sample::subsequence(PaymentAction::ALL.to_vec(), 0..=5),
        ),
        (
            id::<BuyerId>("buyer"),
            snapshot_id(),
            id::<MandateId>("mandate"),
            currency(),
        ),
    )
        .prop_map(
            move |(
                (ok, broken),
                (cid, channel_ref, person, mandate_id),
                (ago, lasts, k, extra),
                (other_buyer, other_snapshot, other_mandate, other_currency),
            )| {
                let amount = req.amount;
                let without: crate::domain::ActionSet = extra
                    .iter()
                    .copied()
                    .filter(|a| *a != PaymentAction::Authorize)
                    .collect();
                let mut actions = without;
                actions.insert(PaymentAction::Authorize);
                let mut c = Confirmation {
                    id: cid,
                    buyer_id: req.buyer_id.clone(),
                    confirmed_by: Actor {
                        id: person,
                        kind: ActorKind::Human,
                    },
                    confirmed_at: now - Duration::seconds(ago),
                    expires_at: lasts.map(|s| now + Duration::seconds(s)),
                    snapshot_id: req.snapshot_id,
                    scope: ConfirmationScope {
                        mandate_id,
                        actions,
                        max_amount: cash(k.up(amount.minor_units()), amount.currency()),
                    },
                    channel_ref,
                };
                if !ok {
                    match broken {
                        0 => c.buyer_id = other_buyer,
                        1 => c.confirmed_by.kind = ActorKind::Agent,
                        2 => c.confirmed_at = now + Duration::seconds(1 + ago),
                        3 => c.expires_at = Some(now - Duration::seconds(ago)),
                        4 => c.snapshot_id = other_snapshot,
                        5 => c.scope.mandate_id = other_mandate,
                        6 => c.scope.actions = without,
                        7 => {
                            c.scope.max_amount =
                                cash(k.down(amount.minor_units()), amount.currency());
                        }
                        _ => c.scope.max_amount = cash(amount.minor_units(), other_currency),
                    }
                }
                c
            },
        )
        .boxed()
}

fn checkout_near(snapshot: &CartSnapshot, fit: f64) -> BoxedStrategy<CheckoutState> {
    let own = snapshot.id();
    let good = id::<CheckoutId>("checkout")
        .prop_map(move |checkout_id| CheckoutState::Valid {
            checkout_id,
            snapshot_id: own,
        })
        .boxed();
    let blocker = (id::<UpstreamCode>("UPSTREAM"), text())
        .prop_map(|(code, message)| UpstreamBlocker { code, message });
    let bad = prop_oneof![
        (id::<CheckoutId>("checkout"), snapshot_id()).prop_map(|(checkout_id, snapshot_id)| {
            CheckoutState::Valid {
                checkout_id,
                snapshot_id,
            }
        }),
        (
            id::<CheckoutId>("checkout"),
            prop::collection::vec(blocker, 0..=2)
        )
            .prop_map(|(checkout_id, blockers)| CheckoutState::Invalid {
                checkout_id,
                blockers,
            }),
        (id::<CheckoutId>("checkout"), -3_600i64..=0).prop_map(|(checkout_id, s)| {
            CheckoutState::Expired {
                checkout_id,
                expired_at: at(s),
            }
        }),
    ]
    .boxed();
    choose(fit, good, bad)
}

fn suspensions_near(
    req: &PaymentRequest,
    chain: &[Mandate],
    fit: f64,
) -> BoxedStrategy<Suspensions> {
    let mut actors: Vec<ActorId> = chain.iter().map(|m| m.actor().id.clone()).collect();
    actors.push(req.actor.id.clone());
    let buyer = req.buyer_id.clone();
    let bad = prop_oneof![
        Just(Suspensions::default()),
        prop::sample::select(actors).prop_map(|a| Suspensions {
            actors: vec![a],
            buyers: Vec::new(),
        }),
        Just(Suspensions {
            actors: Vec::new(),
            buyers: vec![buyer],
        }),
        (id::<ActorId>("agent"), id::<BuyerId>("buyer")).prop_map(|(a, b)| Suspensions {
            actors: vec![a],
            buyers: vec![b],
        }),
    ]
    .boxed();
    choose(fit, Just(Suspensions::default()).boxed(), bad)
}

fn credential_near(fit: f64) -> BoxedStrategy<Option<CredentialStatus>> {
    choose(
        fit,
        Just(Some(CredentialStatus::Usable)).boxed(),
        prop::sample::select(vec![
            None,
            Some(CredentialStatus::Revoked),
            Some(CredentialStatus::Expired),
            Some(CredentialStatus::Suspended),
            Some(CredentialStatus::Usable),
        ])
        .boxed(),
    )
}

/// A chain of mandates ready for evaluation, and the request action it is built around.
#[derive(Debug, Clone)]
struct Draft {
    snapshot: CartSnapshot,
    action: PaymentAction,
    chain: Vec<Mandate>,
    leaf: Mandate,
}

fn now_near(d: &Draft, fit: f64) -> BoxedStrategy<DateTime<Utc>> {
    let second = Duration::seconds(1);
    let v = &d.leaf.scope().validity;
    let mut boundaries = vec![
        reference_time(),
        d.snapshot.expires_at(),
        d.snapshot.expires_at() - second,
        v.not_before,
        v.not_before - second,
        v.expires_at,
        v.expires_at - second,
    ];
    if let Some(root) = d.chain.first() {
        boundaries.push(root.scope().validity.expires_at);
    }
    choose(
        fit,
        Just(reference_time()).boxed(),
        prop::sample::select(boundaries).boxed(),
    )
}

fn chain_below(parent: Mandate, t: Target, depth: usize, fit: f64) -> BoxedStrategy<Vec<Mandate>> {
    if depth == 0 {
        return Just(vec![parent]).boxed();
    }
    child_spec(&parent, Some(t.clone()), fit)
        .prop_filter_map("valid child", |s| Mandate::new(s).ok())
        .prop_flat_map(move |child| {
            let parent = parent.clone();
            chain_below(child, t.clone(), depth - 1, fit).prop_map(move |mut rest| {
                rest.insert(0, parent.clone());
                rest
            })
        })
        .boxed()
}

fn draft(fit: f64) -> BoxedStrategy<Draft> {
    (currency(), payment_action(), fits(fit), 0usize..=2)
        .prop_flat_map(move |(cur, action, fresh, depth)| {
            cart_content_timed(cur, fresh)
                .prop_filter_map("valid snapshot", |c| CartSnapshot::new(c).ok())
                .prop_flat_map(move |snapshot| {
                    let t = Target::of(&snapshot, action);
                    let chain = root_spec(t.clone(), fit)
                        .prop_filter_map("valid mandate", |s| Mandate::new(s).ok())
                        .prop_flat_map(move |root| {
                            chain_below(root.clone(), t.clone(), depth, fit).prop_map(
                                move |chain| {
                                    let leaf =
                                        chain.last().cloned().unwrap_or_else(|| root.clone());
                                    (chain, leaf)
                                },
                            )
                        });
                    (Just(snapshot), chain)
                })
                .prop_map(move |(snapshot, (chain, leaf))| Draft {
                    snapshot,
                    action,
                    chain,
                    leaf,
                })
        })
        .boxed()
}

fn document_with_fit(fit: f64) -> BoxedStrategy<EvaluationDocument> {
    draft(fit)
        .prop_flat_map(move |d| {
            (
                request_near(&d.snapshot, &d.leaf, d.action, fit),
                now_near(&d, fit),
                checkout_near(&d.snapshot, fit),
                credential_near(fit),
                Just(d),
            )
        })
        .prop_flat_map(move |(request, now, checkout, credential, d)| {
            let need = if request.amount.currency() == d.snapshot.currency() {
                request.amount.minor_units()
            } else {
                0
            };
            let usage: Vec<BoxedStrategy<Option<Usage>>> = d
                .chain
                .iter()
                .map(|m| {
                    (fits(1.0 - (1.0 - fit) / 4.0), usage_near(m, need, fit))
                        .prop_map(|(present, u)| present.then_some(u))
                        .boxed()
                })
                .collect();
            let ids: Vec<MandateId> = d.chain.iter().map(|m| m.id().clone()).collect();
            let count = if fit >= 1.0 { 1..=2 } else { 0..=2 };
            (
                usage
                    .prop_map(|u| u.into_iter().flatten().collect::<Vec<_>>())
                    .prop_shuffle(),
                prop::collection::vec(confirmation_near(&request, ids, now, fit), count),
                suspensions_near(&request, &d.chain, fit),
                Just((request, now, checkout, credential, d)),
            )
        })
        .prop_map(
            |(usage, confirmations, suspensions, (request, now, checkout, credential, d))| {
                EvaluationDocument {
                    request,
                    chain: d.chain,
                    snapshot: d.snapshot,
                    checkout,
                    usage,
                    confirmations,
                    suspensions,
                    credential,
                    now,
                }
            },
        )
        .boxed()
}

/// A whole evaluation document with a chain of 1 to 3 mandates (a root and up to two derived
/// children, each an attenuation of its parent). A fifth of the documents fit exactly and
/// evaluate to `allowed`; a fifth are one step from it (checkout or snapshot expired, the
/// confirmation or the leaf's activation missing); the others break a few random parts
/// (merchant, MCC, cart, currency, action, amount, caps, windows, lifetime, uses, attempts,
/// validity, status, actor, buyer, confirmation, credential, checkout, suspensions), often
/// exactly at a limit.
pub fn evaluation_document() -> BoxedStrategy<EvaluationDocument> {
    prop_oneof![
        1 => allowed_document(),
        1 => one_step_from_allowed(),
        1 => document_with_fit(0.97),
        1 => document_with_fit(0.9),
        1 => document_with_fit(0.6),
    ]
    .boxed()
}

/// An allowed document with one thing taken away: it needs revalidation or a confirmation.
fn one_step_from_allowed() -> BoxedStrategy<EvaluationDocument> {
    (allowed_document(), 0u8..4, id::<CheckoutId>("checkout"))
        .prop_map(|(mut d, which, checkout_id)| {
            match which {
                0 => {
                    d.checkout = CheckoutState::Expired {
                        checkout_id,
                        expired_at: d.now,
                    };
                }
                1 => d.now = d.snapshot.expires_at(),
                2 => d.confirmations.clear(),
                _ => {
                    if let Some(leaf) = d.chain.pop() {
                        let mut spec = leaf.spec().clone();
                        spec.lifecycle = Lifecycle::new(
                            MandateStatus::PendingConfirmation,
                            spec.lifecycle.created_at,
                        );
                        d.chain.push(match Mandate::new(spec) {
                            Ok(pending) => pending,
                            Err(_) => leaf,
                        });
                    }
                }
            }
            d
        })
        .boxed()
}

/// A document in which everything fits: evaluating it gives `allowed`.
pub fn allowed_document() -> BoxedStrategy<EvaluationDocument> {
    document_with_fit(1.0)
}

fn huge_usage(ids: Vec<MandateId>) -> BoxedStrategy<Usage> {
    (prop::sample::select(ids), currency())
        .prop_flat_map(|(mandate_id, c)| {
            (
                money_up_to_limit(c),
                money_up_to_limit(c),
                prop::collection::vec(
                    (window_seconds(), money_up_to_limit(c), any::<u32>()),
                    0..=3,
                ),
                any::<u32>(),
                any::<u32>(),
            )
                .prop_map(move |(spent, held, windows, uses, attempts)| Usage {
                    mandate_id: mandate_id.clone(),
                    spent,
                    held,
                    windows: windows
                        .into_iter()
                        .map(|(window_seconds, amount, count)| WindowUsage {
                            window_seconds,
                            amount,
                            count,
                        })
                        .collect(),
                    uses,
                    attempts,
                })
        })
        .boxed()
}

/// A document that makes little sense, for robustness (I12): unrelated or half-linked chains of
/// 0 to 3 mandates in mixed currencies, requests for strangers, usage up to the money limit,
/// any checkout, credential and time. Every value is still individually valid.
pub fn arbitrary_document() -> BoxedStrategy<EvaluationDocument> {
    (
        snapshot(),
        prop::collection::vec((root_mandate(), any::<bool>(), any::<bool>()), 0..=3),
        payment_action(),
        root_mandate(),
        any::<bool>(),
    )
        .prop_flat_map(|(snapshot, raw, action, stranger, use_leaf)| {
            let mut chain: Vec<Mandate> = Vec::new();
            for (m, link, same_buyer) in raw {
                let linked = chain.last().filter(|_| link).and_then(|prev| {
                    let mut spec = m.spec().clone();
                    spec.parent_id = Some(prev.id().clone());
                    if same_buyer {
                        spec.buyer_id = prev.buyer_id().clone();
                    }
                    Mandate::new(spec).ok()
                });
                chain.push(linked.unwrap_or(m));
            }
            let leaf = chain
                .last()
                .filter(|_| use_leaf)
                .cloned()
                .unwrap_or(stranger);
            let mut ids: Vec<MandateId> = chain.iter().map(|m| m.id().clone()).collect();
            ids.push(leaf.id().clone());
            (
                request_near(&snapshot, &leaf, action, 0.5),
                prop::collection::vec(huge_usage(ids.clone()), 0..=4),
                prop_oneof![Just(reference_time()), (-259_200i64..=259_200).prop_map(at)],
                (checkout_near(&snapshot, 0.5), credential_near(0.5)),
                Just((snapshot, chain, ids)),
            )
        })
        .prop_flat_map(
            |(request, usage, now, (checkout, credential), (snapshot, chain, ids))| {
                (
                    prop::collection::vec(confirmation_near(&request, ids, now, 0.5), 0..=2),
                    suspensions_near(&request, &chain, 0.5),
                    Just((request, usage, now, checkout, credential, snapshot, chain)),
                )
            },
        )
        .prop_map(
            |(
                confirmations,
                suspensions,
                (request, usage, now, checkout, credential, snapshot, chain),
            )| {
                EvaluationDocument {
                    request,
                    chain,
                    snapshot,
                    checkout,
                    usage,
                    confirmations,
                    suspensions,
                    credential,
                    now,
                }
            },
        )
        .boxed()
}
