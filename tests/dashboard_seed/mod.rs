//! The dashboard's demo data, shared by `examples/dashboard.rs` and the `dashboard_*` tests:
//! one buyer with three agents (a planner with a root mandate, a booker the planner delegated
//! to, a shopper with a root of its own and one waiting for the buyer), payments captured,
//! held and refused, a lifetime limit past 80%, a payment waiting for a confirmation; and a
//! second buyer whose data must never show.

#![allow(dead_code, reason = "the example and each test use a different subset")]
#![allow(
    clippy::too_many_arguments,
    reason = "fixture builders read as one line per mandate or payment"
)]

use std::sync::Arc;

use agent_mandate::adapters::memory::MemoryPorts;
use agent_mandate::dashboard::MemoryCarts;
use agent_mandate::domain::examples;
use agent_mandate::domain::{
    Actor, ActorId, ActorKind, BuyerId, CartBinding, CartContent, CartSnapshot, Channel,
    CheckoutContext, ConfirmationCondition, ConfirmationRule, CredentialRef, Currency, Lifecycle,
    LineItem, MandateId, MandateSpec, MandateStatus, Merchant, MerchantScope, Money, PaymentAction,
    PaymentRequest, Principal, Totals, Validity, WindowLimit,
};
use agent_mandate::engine::{
    CreateMandate, DeriveMandate, Engine, EngineConfig, ExecutePayment, PaymentOutcome,
};
use agent_mandate::ports::{CredentialDisplay, CredentialKind, FundingType, NewCredential, Secret};
use agent_mandate::testkit::FakePsp;
use chrono::Duration;

pub const PLANNER: &str = "agent_planner";
pub const BOOKER: &str = "agent_booker";
pub const SHOPPER: &str = "agent_shopper";
pub const OTHER_AGENT: &str = "agent_other";
pub const TRAVEL: &str = "mandate_travel";
pub const BOOKING: &str = "mandate_booking";
pub const GROCERIES: &str = "mandate_groceries";
pub const GIFTS: &str = "mandate_gifts";
pub const OTHER_MANDATE: &str = "mandate_other_buyer";

pub fn buyer() -> BuyerId {
    examples::buyer()
}

pub fn other_buyer() -> BuyerId {
    "buyer_other".parse().expect("id")
}

pub fn buyer_p() -> Principal {
    Principal::Buyer(buyer())
}

pub fn other_p() -> Principal {
    Principal::Buyer(other_buyer())
}

pub fn agent(id: &str) -> Actor {
    Actor {
        id: id.parse().expect("id"),
        kind: ActorKind::Agent,
    }
}

pub fn agent_p(id: &str) -> Principal {
    Principal::Agent(id.parse().expect("id"))
}

pub fn eur(a: &str) -> Money {
    Money::parse(a, Currency::EUR).expect("amount")
}

/// A cart at `merchant` of `(sku, description, quantity, unit price)` lines, made now and valid
/// for two hours.
pub fn cart(
    merchant: &str,
    lines: &[(&str, &str, u32, &str)],
    shipping: &str,
    tax: &str,
) -> CartSnapshot {
    let now = examples::now();
    let items: Vec<LineItem> = lines
        .iter()
        .map(|(sku, d, q, p)| LineItem {
            sku: sku.parse().expect("sku"),
            description: d.parse().expect("text"),
            quantity: *q,
            unit_price: eur(p),
        })
        .collect();
    let subtotal = items
        .iter()
        .map(|i| i.line_total().expect("line"))
        .fold(eur("0.00"), |a, b| a.checked_add(&b).expect("sum"));
    let total = subtotal
        .checked_add(&eur(shipping))
        .and_then(|t| t.checked_add(&eur(tax)))
        .expect("total");
    CartSnapshot::new(CartContent {
        id: None,
        cart_id: None,
        merchant: Merchant {
            merchant_id: merchant.parse().expect("merchant"),
            marketplace_id: None,
            seller_id: None,
            mcc: "5948".parse().expect("mcc"),
        },
        items,
        totals: Totals {
            subtotal,
            shipping: eur(shipping),
            tax: eur(tax),
            discount: eur("0.00"),
            total,
        },
        context: CheckoutContext {
            region: Some("EU".parse().expect("region")),
            channel: Channel::Agent,
            buyer_type: None,
        },
        fact_refs: Vec::new(),
        policy_refs: Vec::new(),
        created_at: now - Duration::minutes(5),
        expires_at: now + Duration::hours(2),
    })
    .expect("cart")
}

/// A root mandate of `buyer` for `agent` at `merchants`: up to `max` a payment, `lifetime` in
/// all, a daily window, confirmation above `confirm_above` when given.
pub fn root_spec(
    id: &str,
    buyer: BuyerId,
    agent_id: &str,
    merchants: &[&str],
    max: &str,
    lifetime: &str,
    daily: (&str, u32),
    confirm_above: Option<&str>,
    status: MandateStatus,
) -> MandateSpec {
    let mut spec = examples::travel_backpack_mandate().spec().clone();
    let now = examples::now();
    spec.id = id.parse().expect("id");
    spec.buyer_id = buyer;
    spec.actor = agent(agent_id);
    spec.scope.merchants = MerchantScope::Allowlist {
        merchant_ids: merchants.iter().map(|m| m.parse().expect("m")).collect(),
    };
    spec.scope.mccs = None;
    spec.scope.cart = CartBinding::Open {
        allowed_skus: None,
        max_line_items: None,
    };
    spec.scope.amount.max_amount = eur(max);
    spec.scope.amount.max_payment_attempts = None;
    spec.scope.budgets.per_transaction = Some(eur(max));
    spec.scope.budgets.lifetime = Some(eur(lifetime));
    spec.scope.budgets.windows = vec![WindowLimit {
        window_seconds: 86_400,
        max_amount: Some(eur(daily.0)),
        max_count: Some(daily.1),
    }];
    spec.scope.max_uses = None;
    spec.scope.confirmation = match confirm_above {
        Some(a) => ConfirmationRule {
            conditions: vec![ConfirmationCondition::AboveAmount { amount: eur(a) }],
            baseline: None,
        },
        None => ConfirmationRule::never(),
    };
    spec.scope.validity = Validity {
        not_before: now - Duration::hours(1),
        expires_at: now + Duration::days(30),
    };
    spec.lifecycle = Lifecycle::new(status, now - Duration::hours(1));
    spec.evidence_refs = Vec::new();
    spec
}

/// Everything the demo made.
pub struct Seeded {
    pub mem: MemoryPorts,
    pub psp: Arc<FakePsp>,
    pub engine: Engine,
    pub carts: Arc<MemoryCarts>,
    pub planner_card: CredentialRef,
    pub booker_card: CredentialRef,
    pub shopper_card: CredentialRef,
    pub other_card: CredentialRef,
    /// The cart the planner waits on the buyer's confirmation for (EUR 250.00).
    pub waiting_cart: CartSnapshot,
    /// The booker's captured payment.
    pub booked: agent_mandate::domain::AttemptId,
    /// The other buyer's payment.
    pub other_attempt: agent_mandate::domain::AttemptId,
}

async fn card(
    engine: &Engine,
    by: &Principal,
    buyer: BuyerId,
    owner: &str,
    key: &str,
) -> CredentialRef {
    engine
        .store_credential(
            by,
            &key.parse().expect("key"),
            NewCredential {
                kind: CredentialKind::PaymentMethod,
                owner: owner.parse::<ActorId>().expect("owner"),
                buyer_id: buyer,
                secret: Secret::new("pm_card_visa"),
                cvc: None,
                display: CredentialDisplay {
                    brand: "visa".into(),
                    last4: "4242".into(),
                    exp_month: 12,
                    exp_year: 2030,
                    funding: FundingType::Credit,
                },
            },
        )
        .await
        .expect("card")
        .value
        .reference
}

/// `agent_id` pays `snapshot` under `mandate` with `card`.
pub async fn pay(
    engine: &Engine,
    buyer: BuyerId,
    agent_id: &str,
    mandate: &str,
    snapshot: &CartSnapshot,
    card: &CredentialRef,
    key: &str,
    capture: bool,
) -> PaymentOutcome {
    let request = PaymentRequest {
        actor: agent(agent_id),
        buyer_id: buyer,
        mandate_id: mandate.parse::<MandateId>().expect("mandate"),
        action: PaymentAction::Authorize,
        merchant_id: snapshot.merchant().merchant_id.clone(),
        snapshot_id: snapshot.id(),
        amount: snapshot.total(),
        urgency: None,
    };
    let command = ExecutePayment::new(
        key.parse().expect("key"),
        request,
        snapshot.clone(),
        examples::valid_checkout(snapshot.id()),
        card.clone(),
    )
    .with_capture(capture);
    engine
        .execute_payment(&agent_p(agent_id), &command)
        .await
        .expect("payment answered")
}

pub async fn seed() -> Seeded {
    let mut slot = None;
    let mem = MemoryPorts::new(examples::now(), |vault, _clock| {
        let psp = Arc::new(FakePsp::with_vault(vault));
        slot = Some(psp.clone());
        psp
    });
    let psp = slot.expect("psp");
    let engine = Engine::new(mem.ports.clone(), EngineConfig::default()).expect("engine");
    let carts = Arc::new(MemoryCarts::default());
    let b = buyer_p();
    let create = |spec: MandateSpec, key: &'static str| {
        let engine = engine.clone();
        let b = b.clone();
        async move {
            engine
                .create_mandate(&b, &CreateMandate::new(key.parse().expect("key"), spec))
                .await
                .expect("mandate")
                .value
        }
    };
    let travel = create(
        root_spec(
            TRAVEL,
            buyer(),
            PLANNER,
            &["merchant_001", "merchant_002"],
            "500.00",
            "1000.00",
            ("600.00", 10),
            Some("200.00"),
            MandateStatus::Active,
        ),
        "seed-travel",
    )
    .await;
    create(
        root_spec(
            GROCERIES,
            buyer(),
            SHOPPER,
            &["merchant_003"],
            "100.00",
            "110.00",
            ("110.00", 5),
            None,
            MandateStatus::Active,
        ),
        "seed-groceries",
    )
    .await;
    create(
        root_spec(
            GIFTS,
            buyer(),
            SHOPPER,
            &["merchant_004"],
            "80.00",
            "200.00",
            ("100.00", 3),
            None,
            MandateStatus::PendingConfirmation,
        ),
        "seed-gifts",
    )
    .await;
    // The planner delegates bookings at one merchant to the booker: narrower in every way.
    let mut child = travel.spec().clone();
    child.id = BOOKING.parse().expect("id");
    child.parent_id = Some(travel.id().clone());
    child.actor = agent(BOOKER);
    child.scope.merchants = MerchantScope::Allowlist {
        merchant_ids: vec!["merchant_001".parse().expect("m")],
    };
    child.scope.amount.max_amount = eur("300.00");
    child.scope.budgets.per_transaction = Some(eur("300.00"));
    child.scope.budgets.lifetime = Some(eur("400.00"));
    child.scope.budgets.windows[0].max_amount = Some(eur("400.00"));
    child.scope.budgets.windows[0].max_count = Some(5);
    engine
        .derive_mandate(
            &agent_p(PLANNER),
            &DeriveMandate::new("seed-booking".parse().expect("key"), child),
        )
        .await
        .expect("delegated");

    let planner_card = card(&engine, &b, buyer(), PLANNER, "card-planner").await;
    let booker_card = card(&engine, &b, buyer(), BOOKER, "card-booker").await;
    let shopper_card = card(&engine, &b, buyer(), SHOPPER, "card-shopper").await;

    // The booker buys a backpack and two tags: captured.
    let hotel = cart(
        "merchant_001",
        &[
            ("BAG-TRAVEL-42", "Travel Backpack", 1, "129.00"),
            ("TAG-2", "Luggage tag", 2, "6.00"),
        ],
        "0.00",
        "0.00",
    );
    let booked = pay(
        &engine,
        buyer(),
        BOOKER,
        BOOKING,
        &hotel,
        &booker_card,
        "seed-pay-hotel",
        true,
    )
    .await;
    let booked = booked.attempt().expect("booked").id.clone();
    // The planner holds a train ticket: authorized, not captured.
    let train = cart(
        "merchant_002",
        &[("TRAIN-LIS-POR", "Train Lisbon to Porto", 2, "60.00")],
        "0.00",
        "0.00",
    );
    pay(
        &engine,
        buyer(),
        PLANNER,
        TRAVEL,
        &train,
        &planner_card,
        "seed-pay-train",
        false,
    )
    .await;
    // The shopper's groceries pass 80% of its lifetime limit, and the next basket is refused.
    let basket = cart(
        "merchant_003",
        &[
            ("VEG-BOX", "Vegetable box", 2, "30.00"),
            ("COFFEE-1KG", "Coffee beans 1 kg", 1, "30.00"),
        ],
        "0.00",
        "0.00",
    );
    pay(
        &engine,
        buyer(),
        SHOPPER,
        GROCERIES,
        &basket,
        &shopper_card,
        "seed-pay-basket",
        true,
    )
    .await;
    let more = cart(
        "merchant_003",
        &[("WINE-6", "Wine, six bottles", 1, "75.00")],
        "0.00",
        "0.00",
    );
    carts.keep(more.clone());
    pay(
        &engine,
        buyer(),
        SHOPPER,
        GROCERIES,
        &more,
        &shopper_card,
        "seed-pay-wine",
        true,
    )
    .await;
    // The planner asks for a flight above 200.00: it waits for the buyer's confirmation.
    let waiting_cart = cart(
        "merchant_002",
        &[("FLIGHT-LIS-BER", "Flight Lisbon to Berlin", 1, "230.00")],
        "0.00",
        "20.00",
    );
    carts.keep(waiting_cart.clone());
    let out = pay(
        &engine,
        buyer(),
        PLANNER,
        TRAVEL,
        &waiting_cart,
        &planner_card,
        "seed-pay-flight",
        false,
    )
    .await;
    assert!(
        matches!(out, PaymentOutcome::Refused(ref d) if d.outcome == agent_mandate::domain::Outcome::RequiresConfirmation),
        "{out:?}"
    );

    // Another buyer, with an agent and a payment of their own.
    engine
        .create_mandate(
            &other_p(),
            &CreateMandate::new(
                "seed-other".parse().expect("key"),
                root_spec(
                    OTHER_MANDATE,
                    other_buyer(),
                    OTHER_AGENT,
                    &["merchant_001"],
                    "500.00",
                    "1000.00",
                    ("600.00", 10),
                    None,
                    MandateStatus::Active,
                ),
            ),
        )
        .await
        .expect("other mandate");
    let other_card = card(
        &engine,
        &other_p(),
        other_buyer(),
        OTHER_AGENT,
        "card-other",
    )
    .await;
    let other = cart(
        "merchant_001",
        &[("SECRET-GIFT", "Something private", 1, "42.00")],
        "0.00",
        "0.00",
    );
    let other_attempt = pay(
        &engine,
        other_buyer(),
        OTHER_AGENT,
        OTHER_MANDATE,
        &other,
        &other_card,
        "seed-pay-other",
        true,
    )
    .await
    .attempt()
    .expect("other paid")
    .id
    .clone();
    engine.flush_audit().await.expect("flushed");
    Seeded {
        mem,
        psp,
        engine,
        carts,
        planner_card,
        booker_card,
        shopper_card,
        other_card,
        waiting_cart,
        booked,
        other_attempt,
    }
}
