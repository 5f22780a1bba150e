//! The Travel Backpack story of the seed article, as ready-made values for docs, examples,
//! tests and benchmarks.
//!
//! A buyer tells an agent: "Buy the Travel Backpack if the final total is under EUR 150." The
//! backpack costs EUR 129.00 at `merchant_001` (MCC 5948). Everything is evaluated at
//! [`now`] (2026-06-28 09:00 UTC).

use chrono::{DateTime, TimeZone, Utc};

use super::canonical::SnapshotId;
use super::checkout::{CheckoutState, UpstreamBlocker};
use super::ids::{
    ActorId, BuyerId, CheckoutId, EvidenceRef, MandateId, Mcc, MerchantId, Region, Sku, Text,
    UpstreamCode,
};
use super::mandate::{Actor, ActorKind, Lifecycle, Mandate, MandateSpec, MandateStatus};
use super::money::{Currency, Money};
use super::request::{CredentialStatus, EvaluationDocument, PaymentRequest, Suspensions};
use super::scope::{
    ActionSet, AmountScope, Budgets, CartBinding, ConfirmationRule, CurrencyScope, MandateScope,
    MerchantScope, PaymentAction, Validity, WindowLimit,
};
use super::snapshot::{
    CartContent, CartSnapshot, Channel, CheckoutContext, LineItem, Merchant, Totals,
};
use super::usage::Usage;

// The fixtures below are built from constants that are valid by construction; a failure would be
// a bug in this module, caught by its doctests and tests, so `expect` documents the invariant.

fn t(h: u32, m: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 6, 28, h, m, 0)
        .single()
        .expect("fixed valid date")
}

fn money(amount: &str, currency: Currency) -> Money {
    Money::parse(amount, currency).expect("fixture amount")
}

fn id<T: std::str::FromStr>(s: &str) -> T
where
    T::Err: std::fmt::Debug,
{
    s.parse().expect("fixture id")
}

/// The evaluation time of the story: 2026-06-28T09:00:00Z.
pub fn now() -> DateTime<Utc> {
    t(9, 0)
}

/// The buyer.
pub fn buyer() -> BuyerId {
    id("buyer_456")
}

/// The agent.
pub fn agent() -> Actor {
    Actor {
        id: id::<ActorId>("agent_123"),
        kind: ActorKind::Agent,
    }
}

/// The backpack cart with the given shipping and tax, in `currency`.
pub fn backpack_content(shipping: &str, tax: &str, currency: Currency) -> CartContent {
    let unit = money("129.00", currency);
    let shipping = money(shipping, currency);
    let tax = money(tax, currency);
    let total = unit
        .checked_add(&shipping)
        .and_then(|x| x.checked_add(&tax))
        .expect("fixture total");
    CartContent {
        id: None,
        cart_id: Some(id("cart_42")),
        merchant: Merchant {
            merchant_id: id::<MerchantId>("merchant_001"),
            marketplace_id: None,
            seller_id: None,
            mcc: id::<Mcc>("5948"),
        },
        items: vec![LineItem {
            sku: id::<Sku>("BAG-TRAVEL-42"),
            description: id::<Text>("Travel Backpack"),
            quantity: 1,
            unit_price: unit,
        }],
        totals: Totals {
            subtotal: unit,
            shipping,
            tax,
            discount: Money::zero(currency),
            total,
        },
        context: CheckoutContext {
            region: Some(id::<Region>("EU")),
            channel: Channel::Agent,
            buyer_type: None,
        },
        fact_refs: vec![id::<EvidenceRef>("fact:BAG-TRAVEL-42:price")],
        policy_refs: vec![id::<EvidenceRef>("policy:shipping:EU")],
        created_at: t(8, 55),
        expires_at: t(9, 55),
    }
}

/// The final checkout: EUR 129.00 + 0.00 shipping (a free-shipping offer) + 15.00 tax = 144.00.
pub fn travel_backpack_snapshot() -> CartSnapshot {
    CartSnapshot::new(backpack_content("0.00", "15.00", Currency::EUR)).expect("fixture snapshot")
}

/// The first checkout: 129.00 + 9.00 shipping + 15.00 tax = EUR 153.00, over the limit.
pub fn over_limit_snapshot() -> CartSnapshot {
    CartSnapshot::new(backpack_content("9.00", "15.00", Currency::EUR)).expect("fixture snapshot")
}

/// The buyer's mandate: an open intent for the backpack at `merchant_001`, at most EUR 150.00
/// including shipping and tax, one use, three attempts, valid for a day.
pub fn travel_backpack_mandate() -> Mandate {
    let eur = |a| money(a, Currency::EUR);
    Mandate::new(MandateSpec {
        id: id::<MandateId>("mandate_001"),
        buyer_id: buyer(),
        actor: agent(),
        parent_id: None,
        scope: MandateScope {
            merchants: MerchantScope::Single {
                merchant_id: id("merchant_001"),
            },
            mccs: Some(vec![id("5948")]),
            cart: CartBinding::Open {
                allowed_skus: Some(vec![id("BAG-TRAVEL-42")]),
                max_line_items: Some(1),
            },
            amount: AmountScope {
                max_amount: eur("150.00"),
                includes_shipping: true,
                includes_tax: true,
                allow_lower_amount: true,
                allow_partial_capture: false,
                max_payment_attempts: Some(3),
            },
            currency: CurrencyScope {
                currency: Currency::EUR,
                conversion_allowed: false,
            },
            budgets: Budgets {
                per_transaction: Some(eur("150.00")),
                windows: vec![WindowLimit {
                    window_seconds: 86_400,
                    max_amount: Some(eur("300.00")),
                    max_count: Some(5),
                }],
                lifetime: Some(eur("150.00")),
            },
            actions: PaymentAction::ALL.into_iter().collect::<ActionSet>(),
            confirmation: ConfirmationRule::never(),
            max_uses: Some(1),
            validity: Validity {
                not_before: t(8, 0),
                expires_at: t(8, 0) + chrono::Duration::days(1),
            },
        },
        lifecycle: Lifecycle::new(MandateStatus::Active, t(8, 0)),
        evidence_refs: vec![id("ap2:intent_mandate:im_001")],
    })
    .expect("fixture mandate")
}

/// Nothing spent yet on `mandate`, with its windows reported ([`Usage::none_for`]).
pub fn zero_usage(mandate: &Mandate) -> Usage {
    Usage::none_for(mandate)
}

/// The agent's request to authorize the snapshot's total under `mandate_001`.
pub fn authorize_request(snapshot: &CartSnapshot) -> PaymentRequest {
    PaymentRequest {
        actor: agent(),
        buyer_id: buyer(),
        mandate_id: id("mandate_001"),
        action: PaymentAction::Authorize,
        merchant_id: snapshot.merchant().merchant_id.clone(),
        snapshot_id: snapshot.id(),
        amount: snapshot.total(),
        urgency: None,
    }
}

/// A checkout the checkout service validated for `snapshot_id`.
pub fn valid_checkout(snapshot_id: SnapshotId) -> CheckoutState {
    CheckoutState::Valid {
        checkout_id: id::<CheckoutId>("checkout_789"),
        snapshot_id,
    }
}

/// The checkout of the story's beginning: inventory stale, return policy missing.
pub fn invalid_checkout() -> CheckoutState {
    CheckoutState::Invalid {
        checkout_id: id("checkout_789"),
        blockers: vec![
            UpstreamBlocker {
                code: id::<UpstreamCode>("INVENTORY_STALE"),
                message: id::<Text>("Inventory for BAG-TRAVEL-42 is stale"),
            },
            UpstreamBlocker {
                code: id::<UpstreamCode>("RETURN_POLICY_MISSING"),
                message: id::<Text>("No return policy covers Travel Bags"),
            },
        ],
    }
}

/// A complete evaluation document for `snapshot`, with a valid checkout, zero usage and a
/// usable credential.
pub fn document_for(snapshot: CartSnapshot) -> EvaluationDocument {
    let mandate = travel_backpack_mandate();
    EvaluationDocument {
        request: authorize_request(&snapshot),
        checkout: valid_checkout(snapshot.id()),
        usage: vec![zero_usage(&mandate)],
        chain: vec![mandate],
        snapshot,
        confirmations: Vec::new(),
        suspensions: Suspensions::default(),
        credential: Some(CredentialStatus::Usable),
        now: now(),
        resource_payments: None,
        controls: None,
    }
}

/// The happy ending: EUR 144.00 within the EUR 150.00 mandate; evaluates to `allowed`.
pub fn travel_backpack_document() -> EvaluationDocument {
    document_for(travel_backpack_snapshot())
}

/// A larger case for benchmarks and property tests: a three-level delegation chain (buyer's
/// root mandate over an allowlist of merchants, a marketplace-free child for one merchant, a
/// grandchild for the agent) with windows, lifetime caps and confirmation rules, and a cart of
/// `items` lines (1 to 500). Up to 90 lines it evaluates to `allowed` (the leaf allows at most
/// EUR 1,000.00, its child EUR 2,000.00, the root EUR 5,000.00); the benchmarks use 20.
///
/// ```
/// use agent_mandate::domain::{evaluate, examples, BlockerCode};
/// assert!(evaluate(&examples::three_level_document(20).input()).is_allowed());
/// assert!(evaluate(&examples::three_level_document(90).input()).is_allowed());
/// let big = evaluate(&examples::three_level_document(200).input());
/// assert!(big.has(BlockerCode::AmountExceedsMandate));
/// ```
pub fn three_level_document(items: usize) -> EvaluationDocument {
    let eur = |a| money(a, Currency::EUR);
    let items = items.clamp(1, super::snapshot::MAX_ITEMS);
    let lines: Vec<LineItem> = (0..items)
        .map(|i| LineItem {
            sku: id::<Sku>(&format!("SKU-{i:04}")),
            description: id::<Text>(&format!("Item number {i}")),
            quantity: 1 + (i % 3) as u32,
            unit_price: eur("4.99"),
        })
        .collect();
    let subtotal = lines.iter().fold(Money::zero(Currency::EUR), |acc, l| {
        acc.checked_add(&l.line_total().expect("fixture line"))
            .expect("fixture subtotal")
    });
    let shipping = eur("5.00");
    let tax = eur("7.50");
    let total = subtotal
        .checked_add(&shipping)
        .and_then(|x| x.checked_add(&tax))
        .expect("fixture total");
    let mut content = backpack_content("0.00", "0.00", Currency::EUR);
    content.items = lines;
    content.totals = Totals {
        subtotal,
        shipping,
        tax,
        discount: Money::zero(Currency::EUR),
        total,
    };
    let snapshot = CartSnapshot::new(content).expect("fixture snapshot");

    let human = Actor {
        id: id("buyer_456_app"),
        kind: ActorKind::Human,
    };
    let assistant = Actor {
        id: id("assistant_1"),
        kind: ActorKind::Agent,
    };
    let root_scope = MandateScope {
        merchants: MerchantScope::Allowlist {
            merchant_ids: vec![id("merchant_001"), id("merchant_002"), id("merchant_003")],
        },
        mccs: Some(vec![id("5411"), id("5948"), id("5999")]),
        cart: CartBinding::Open {
            allowed_skus: None,
            max_line_items: None,
        },
        amount: AmountScope {
            max_amount: eur("5000.00"),
            includes_shipping: true,
            includes_tax: true,
            allow_lower_amount: true,
            allow_partial_capture: true,
            max_payment_attempts: Some(10),
        },
        currency: CurrencyScope {
            currency: Currency::EUR,
            conversion_allowed: false,
        },
        budgets: Budgets {
            per_transaction: Some(eur("5000.00")),
            windows: vec![WindowLimit {
                window_seconds: 86_400,
                max_amount: Some(eur("10000.00")),
                max_count: Some(50),
            }],
            lifetime: Some(eur("50000.00")),
        },
        actions: PaymentAction::ALL.into_iter().collect(),
        confirmation: ConfirmationRule {
            conditions: vec![super::scope::ConfirmationCondition::AboveAmount {
                amount: eur("4000.00"),
            }],
            baseline: None,
        },
        max_uses: Some(100),
        validity: Validity {
            not_before: t(0, 0),
            expires_at: t(0, 0) + chrono::Duration::days(30),
        },
    };
    let root = Mandate::new(MandateSpec {
        id: id("mandate_root"),
        buyer_id: buyer(),
        actor: human,
        parent_id: None,
        scope: root_scope.clone(),
        lifecycle: Lifecycle::new(MandateStatus::Active, t(0, 0)),
        evidence_refs: Vec::new(),
    })
    .expect("fixture root");
    let mut child_scope = root_scope.clone();
    child_scope.merchants = MerchantScope::Single {
        merchant_id: id("merchant_001"),
    };
    child_scope.amount.max_amount = eur("2000.00");
    child_scope.budgets.lifetime = Some(eur("20000.00"));
    let child = root
        .derive(MandateSpec {
            id: id("mandate_child"),
            buyer_id: buyer(),
            actor: assistant.clone(),
            parent_id: Some(root.id().clone()),
            scope: child_scope.clone(),
            lifecycle: Lifecycle::new(MandateStatus::Active, t(1, 0)),
            evidence_refs: Vec::new(),
        })
        .expect("fixture child");
    let mut leaf_scope = child_scope;
    leaf_scope.amount.max_amount = eur("1000.00");
    leaf_scope.budgets.per_transaction = Some(eur("1000.00"));
    let leaf = child
        .derive(MandateSpec {
            id: id("mandate_leaf"),
            buyer_id: buyer(),
            actor: agent(),
            parent_id: Some(child.id().clone()),
            scope: leaf_scope,
            lifecycle: Lifecycle::new(MandateStatus::Active, t(2, 0)),
            evidence_refs: Vec::new(),
        })
        .expect("fixture leaf");
    let chain = vec![root, child, leaf];
    let usage = chain.iter().map(zero_usage).collect();
    let mut request = authorize_request(&snapshot);
    request.mandate_id = id("mandate_leaf");
    EvaluationDocument {
        request,
        checkout: valid_checkout(snapshot.id()),
        usage,
        chain,
        snapshot,
        confirmations: Vec::new(),
        suspensions: Suspensions::default(),
        credential: Some(CredentialStatus::Usable),
        now: now(),
        resource_payments: None,
        controls: None,
    }
}

/// The purchase intent that matches `snapshot` for `request` (its agent, merchant, category
/// and lines), as an agent would declare it before paying.
pub fn intent_for(
    request: &PaymentRequest,
    snapshot: &CartSnapshot,
) -> super::intent::PurchaseIntent {
    use super::intent::{IntentLine, PurchaseIntent, PurchaseIntentSpec};
    let merchant = snapshot.merchant();
    PurchaseIntent::new(PurchaseIntentSpec {
        agent_id: request.actor.id.clone(),
        task_id: super::ids::TaskId::new("task_1").expect("valid task id"),
        merchant_id: merchant.merchant_id.clone(),
        mcc: merchant.mcc,
        line_items: snapshot
            .items()
            .iter()
            .map(|l| IntentLine {
                description: l.description.clone(),
                quantity: l.quantity,
                unit_price: l.unit_price,
            })
            .collect(),
        business_justification: Text::new("the buyer asked for it").expect("valid text"),
        urgency: super::scope::Urgency::Routine,
    })
    .expect("a snapshot's lines make a valid intent")
}
