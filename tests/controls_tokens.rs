//! The safety controls reach payments an agent makes through someone else: a scoped token's
//! redemption pays as the token's `system` actor, yet the controls of the agent that issued
//! the token apply (merchant allowlist, dual confirmation, velocity, the breakers, the
//! credentials' kill switch). A declined redemption counts as a failed authentication on the
//! card the token was copied from. Defends I14 (authority from the mandate, not from the
//! caller's kind) and the controls' promise in docs/design.md.

#![cfg(feature = "testkit")]

mod tokens_support;

use std::sync::Arc;
use std::time::Duration;

use agent_mandate::adapters::memory::MemoryTokenStore;
use agent_mandate::domain::{ActorId, Principal};
use agent_mandate::engine::{
    Breaker, BreakerTarget, Controls, Engine, EngineConfig, MerchantControl, Rate,
};
use agent_mandate::ports::{Secret, TokenUses};
use agent_mandate::testkit::{Fault, Op};
use agent_mandate::tokens::{RedemptionOutcome, RefusalCode, TokenService};
use tokens_support::*;

const MONTH: u64 = 30 * 86_400;

async fn fixture(controls: Controls) -> Fixture {
    fixture_on(controls, Arc::new(MemoryTokenStore::new())).await
}

async fn fixture_on(controls: Controls, store: Arc<MemoryTokenStore>) -> Fixture {
    Fixture::with(
        EngineConfig::default().with_controls(controls),
        false,
        store,
    )
    .await
}

fn operator() -> Principal {
    Principal::Operator(ActorId::new("ops-1").unwrap())
}

fn value(issued: &agent_mandate::tokens::IssuedToken) -> Secret {
    issued.token.clone().expect("a new token shows its value")
}

/// The blocker codes of a redemption the decision refused (empty for anything else).
fn blockers(o: &RedemptionOutcome) -> Vec<String> {
    match o {
        RedemptionOutcome::Refused {
            code: RefusalCode::DecisionBlocked,
            reasons,
            ..
        } => reasons.clone(),
        _ => Vec::new(),
    }
}

fn charged(o: &RedemptionOutcome) -> bool {
    matches!(o, RedemptionOutcome::Charged { .. })
}

fn allowlist_a() -> Controls {
    Controls::off()
        .with_merchants(MerchantControl::Allowlist(vec!["merchant_prov_a"
            .parse()
            .unwrap()]))
        .unwrap()
}

/// The issuing agent's allowlist names merchant A only: a token for merchant B is not a way
/// around it. The same token shape for merchant A is charged (so the test can fail).
#[tokio::test]
async fn token_redemption_respects_issuing_agents_controls() {
    let f = fixture(allowlist_a()).await;
    let b = f
        .issue(
            "prov_b",
            per_use("50.00", TokenUses::CapBounded { max_uses: None }),
            MONTH,
        )
        .await;
    let out = f.redeem("prov_b", &value(&b), "20.00").await;
    assert!(
        blockers(&out).iter().any(|c| c == "CONFIRMATION_REQUIRED"),
        "outside the allowlist: refused for confirmation, got {out:?}"
    );
    let a = f
        .issue(
            "prov_a",
            per_use("50.00", TokenUses::CapBounded { max_uses: None }),
            MONTH,
        )
        .await;
    let ok = f.redeem("prov_a", &value(&a), "20.00").await;
    assert!(charged(&ok), "inside the allowlist: charged, got {ok:?}");
}

/// Dual confirmation above an amount applies to a redemption above it (no agent declaration
/// and no buyer confirmation exist for the redemption's cart).
#[tokio::test]
async fn dual_confirmation_applies_to_a_redemption_above_the_amount() {
    let f = fixture(Controls::off().with_dual_confirmation_above(Some(eur("30.00")))).await;
    let t = f
        .issue(
            "prov_a",
            per_use("50.00", TokenUses::CapBounded { max_uses: None }),
            MONTH,
        )
        .await;
    let over = f.redeem("prov_a", &value(&t), "30.01").await;
    assert!(
        blockers(&over).iter().any(|c| c == "CONFIRMATION_REQUIRED"),
        "{over:?}"
    );
    let at = f.redeem("prov_a", &value(&t), "30.00").await;
    assert!(charged(&at), "at the amount: no confirmation, got {at:?}");
}

/// Velocity counts the agent's payments through its tokens: the agent's own next payment is
/// held after its tokens made the window's count.
#[tokio::test]
async fn velocity_counts_redemptions_for_the_issuing_agent() {
    let rate = Rate::new(2, Duration::from_secs(3600)).unwrap();
    let f = fixture(Controls::off().with_velocity(Some(rate))).await;
    let t = f
        .issue(
            "prov_a",
            per_use("50.00", TokenUses::CapBounded { max_uses: None }),
            MONTH,
        )
        .await;
    assert!(charged(&f.redeem("prov_a", &value(&t), "5.00").await));
    assert!(charged(&f.redeem("prov_a", &value(&t), "5.00").await));
    let third = f.redeem("prov_a", &value(&t), "5.00").await;
    assert!(
        blockers(&third)
            .iter()
            .any(|c| c == "CONFIRMATION_REQUIRED"),
        "two payments in the hour: the third is held, got {third:?}"
    );
    // Another token of the same agent is held too: the count is the agent's.
    let u = f
        .issue(
            "prov_b",
            per_use("50.00", TokenUses::CapBounded { max_uses: None }),
            MONTH,
        )
        .await;
    let other = f.redeem("prov_b", &value(&u), "5.00").await;
    assert!(
        blockers(&other)
            .iter()
            .any(|c| c == "CONFIRMATION_REQUIRED"),
        "{other:?}"
    );
    // Past the window the count starts again.
    f.advance(chrono::Duration::seconds(3601));
    assert!(charged(&f.redeem("prov_b", &value(&u), "5.00").await));
}

/// The credentials' kill switch of the agent reaches the copies of its card its tokens hold:
/// a redemption is refused with CREDENTIAL_NOT_USABLE, and resumes when the switch is off.
#[tokio::test]
async fn kill_switch_stops_token_redemption() {
    let f = fixture(Controls::off()).await;
    let t = f
        .issue(
            "prov_a",
            per_use("50.00", TokenUses::CapBounded { max_uses: None }),
            MONTH,
        )
        .await;
    assert!(charged(&f.redeem("prov_a", &value(&t), "5.00").await));
    f.engine
        .suspend_credentials(&operator(), &agent().id, true)
        .await
        .unwrap();
    let out = f.redeem("prov_a", &value(&t), "5.00").await;
    assert!(
        blockers(&out).iter().any(|c| c == "CREDENTIAL_NOT_USABLE"),
        "killed: refused, got {out:?}"
    );
    f.engine
        .suspend_credentials(&operator(), &agent().id, false)
        .await
        .unwrap();
    assert!(charged(&f.redeem("prov_a", &value(&t), "5.00").await));
}

/// The kill switch of another agent does not reach this agent's tokens.
#[tokio::test]
async fn another_agents_kill_switch_does_not_reach_the_token() {
    let f = fixture(Controls::off()).await;
    let t = f
        .issue(
            "prov_a",
            per_use("50.00", TokenUses::CapBounded { max_uses: None }),
            MONTH,
        )
        .await;
    f.engine
        .suspend_credentials(&operator(), &ActorId::new("agent_other").unwrap(), true)
        .await
        .unwrap();
    assert!(charged(&f.redeem("prov_a", &value(&t), "5.00").await));
}

fn breaker(max: u32) -> Controls {
    Controls::off().with_auth_failures(Some(
        Breaker::new(
            Rate::new(max, Duration::from_secs(600)).unwrap(),
            Duration::from_secs(1800),
        )
        .unwrap(),
    ))
}

/// Card testing through single-use tokens: every declined redemption (whatever its decline
/// code) counts on the breaker of the card the tokens were copied from; past the count the
/// next redemption, through any token of that card, is refused with CIRCUIT_OPEN before any
/// PSP call, and so is the agent's own payment with the card.
#[tokio::test]
async fn breaker_counts_declines_across_tokens_of_one_card() {
    let f = fixture(breaker(2)).await;
    let mut tokens = Vec::new();
    for _ in 0..4 {
        tokens.push(
            f.issue("prov_a", per_use("50.00", TokenUses::Single), MONTH)
                .await,
        );
    }
    for t in &tokens[..3] {
        f.fake.inject(
            Some(Op::Authorize),
            Fault::Decline("insufficient_funds".into()),
        );
        let out = f.redeem("prov_a", &value(t), "5.00").await;
        assert!(
            matches!(
                out,
                RedemptionOutcome::Refused {
                    code: RefusalCode::Declined,
                    ..
                }
            ),
            "{out:?}"
        );
    }
    let calls = f.fake.calls(Op::Authorize);
    let out = f.redeem("prov_a", &value(&tokens[3]), "5.00").await;
    assert!(
        blockers(&out).iter().any(|c| c == "CIRCUIT_OPEN"),
        "three declines on one card: open, got {out:?}"
    );
    assert_eq!(f.fake.calls(Op::Authorize), calls, "no PSP call");
    // An operator resets the card's breaker through the agent's own reference to it.
    f.engine
        .reset_breaker(
            &operator(),
            &BreakerTarget::Credential(f.credential.clone()),
        )
        .await
        .unwrap();
    f.engine
        .reset_breaker(&operator(), &BreakerTarget::Agent(agent().id))
        .await
        .unwrap();
    assert!(charged(
        &f.redeem("prov_a", &value(&tokens[3]), "5.00").await
    ));
}

/// A single-use token whose declines free its use cannot be redeemed forever: the declines
/// open the card's breaker.
#[tokio::test]
async fn one_single_use_token_cannot_test_a_card_without_bound() {
    let f = fixture(breaker(2)).await;
    let t = f
        .issue("prov_a", per_use("50.00", TokenUses::Single), MONTH)
        .await;
    for _ in 0..3 {
        f.fake
            .inject(Some(Op::Authorize), Fault::Decline("do_not_honor".into()));
        let out = f.redeem("prov_a", &value(&t), "5.00").await;
        assert!(
            matches!(
                out,
                RedemptionOutcome::Refused {
                    code: RefusalCode::Declined,
                    ..
                }
            ),
            "{out:?}"
        );
    }
    let out = f.redeem("prov_a", &value(&t), "5.00").await;
    assert!(
        blockers(&out).iter().any(|c| c == "CIRCUIT_OPEN"),
        "{out:?}"
    );
}

/// C2: the kill switch is the store's: a second engine over the same store (a restart, or
/// another instance) refuses the agent's token and the agent's own credential.
#[tokio::test]
async fn kill_switch_survives_engine_rebuild() {
    let store = Arc::new(MemoryTokenStore::new());
    let f = fixture_on(Controls::off(), store.clone()).await;
    let t = f
        .issue(
            "prov_a",
            per_use("50.00", TokenUses::CapBounded { max_uses: None }),
            MONTH,
        )
        .await;
    f.engine
        .suspend_credentials(&operator(), &agent().id, true)
        .await
        .unwrap();
    let second = Engine::new(f.memory.ports.clone(), EngineConfig::default()).unwrap();
    let tokens = TokenService::new(
        second.clone(),
        store,
        Arc::new(agent_mandate::testkit::SeededTokenGenerator::new(7)),
    );
    let cmd = agent_mandate::tokens::RedeemToken::new(key("after-restart"), value(&t), eur("5.00"));
    let out = tokens.redeem(&provider("prov_a"), &cmd).await.unwrap();
    assert!(
        blockers(&out).iter().any(|c| c == "CREDENTIAL_NOT_USABLE"),
        "{out:?}"
    );
}

// ----- the change attacked: lying actors, concurrency, window edges -----

/// A token issued after the agent's credentials were switched off (its card still reads
/// usable in the vault) is refused at redemption all the same: the switch is the agent's,
/// not the copy's.
#[tokio::test]
async fn a_token_issued_after_the_kill_switch_is_refused() {
    let f = fixture(Controls::off()).await;
    f.engine
        .suspend_credentials(&operator(), &agent().id, true)
        .await
        .unwrap();
    let t = f
        .issue(
            "prov_a",
            per_use("50.00", TokenUses::CapBounded { max_uses: None }),
            MONTH,
        )
        .await;
    let out = f.redeem("prov_a", &value(&t), "5.00").await;
    assert!(
        blockers(&out).iter().any(|c| c == "CREDENTIAL_NOT_USABLE"),
        "{out:?}"
    );
}

/// The agent cannot pay under its token's mandate itself, neither as the token's system
/// actor (it is not that principal) nor as itself (it is not the mandate's actor): the
/// token's controls cannot be dodged by naming another actor.
#[tokio::test]
async fn the_agent_cannot_pay_as_its_token() {
    use agent_mandate::domain::{examples, Actor, ActorKind};
    use agent_mandate::engine::ExecutePayment;
    let f = fixture(allowlist_a()).await;
    let t = f
        .issue(
            "prov_b",
            per_use("50.00", TokenUses::CapBounded { max_uses: None }),
            MONTH,
        )
        .await;
    let snapshot = examples::travel_backpack_snapshot();
    for actor in [
        Actor {
            id: ActorId::new(t.record.id.as_str()).unwrap(),
            kind: ActorKind::System,
        },
        agent(),
    ] {
        let mut request = examples::authorize_request(&snapshot);
        request.actor = actor;
        request.mandate_id = t.record.mandate_id.clone();
        let cmd = ExecutePayment::new(
            key("agent-as-token"),
            request,
            snapshot.clone(),
            examples::valid_checkout(snapshot.id()),
            t.record.credential.clone(),
        );
        let out = f.engine.execute_payment(&agent_principal(), &cmd).await;
        assert!(
            matches!(
                out,
                Err(agent_mandate::engine::EngineError::NotPermitted { .. })
            ),
            "{out:?}"
        );
    }
}

/// Concurrent declined redemptions through several tokens of one card: the card's breaker
/// opens once (one alert for the card), and nothing more reaches the PSP after it opened.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_declines_open_the_card_breaker_once() {
    use agent_mandate::adapters::memory::MemoryAlerts;
    let store = Arc::new(MemoryTokenStore::new());
    let f = fixture_on(breaker(2), store.clone()).await;
    let sink = Arc::new(MemoryAlerts::new());
    let engine = f.engine.clone().with_alerts(sink.clone());
    let tokens = Arc::new(TokenService::new(
        engine,
        store,
        Arc::new(agent_mandate::testkit::SeededTokenGenerator::new(9)),
    ));
    let mut issued = Vec::new();
    for _ in 0..6 {
        issued.push(
            f.issue("prov_a", per_use("50.00", TokenUses::Single), MONTH)
                .await,
        );
    }
    for _ in 0..6 {
        f.fake
            .inject(Some(Op::Authorize), Fault::Decline("do_not_honor".into()));
    }
    let mut runs = tokio::task::JoinSet::new();
    for (i, t) in issued.iter().enumerate() {
        let cmd =
            agent_mandate::tokens::RedeemToken::new(key(&format!("c{i}")), value(t), eur("5.00"));
        let tokens = tokens.clone();
        runs.spawn(async move { tokens.redeem(&provider("prov_a"), &cmd).await.unwrap() });
    }
    let outs = runs.join_all().await;
    let declined = outs
        .iter()
        .filter(|o| {
            matches!(
                o,
                RedemptionOutcome::Refused {
                    code: RefusalCode::Declined,
                    ..
                }
            )
        })
        .count();
    let open = outs
        .iter()
        .filter(|o| blockers(o).iter().any(|c| c == "CIRCUIT_OPEN"))
        .count();
    assert_eq!(declined + open, 6, "{outs:?}");
    assert!(
        declined >= 3,
        "the breaker opens past two declines: {outs:?}"
    );
    let _ = f.engine.flush_audit().await;
    let card_alerts = sink
        .alerts()
        .into_iter()
        .filter(|a| {
            matches!(
                &a.kind,
                agent_mandate::domain::AlertKind::CircuitOpened {
                    scope: agent_mandate::domain::BreakerScope::Credential,
                    ..
                }
            )
        })
        .count();
    assert_eq!(card_alerts, 1, "{:?}", sink.alerts());
    // Past the opening, the next redemption does not reach the PSP.
    let calls = f.fake.calls(Op::Authorize);
    let late = f
        .issue("prov_a", per_use("50.00", TokenUses::Single), MONTH)
        .await;
    let out = f.redeem("prov_a", &value(&late), "5.00").await;
    assert!(
        blockers(&out).iter().any(|c| c == "CIRCUIT_OPEN"),
        "{out:?}"
    );
    assert_eq!(f.fake.calls(Op::Authorize), calls);
}

/// The velocity window's edge for redemptions: a redemption exactly one window old has left
/// the window `(now - window, now]`; one second earlier it still counts.
#[tokio::test]
async fn the_velocity_window_edge_holds_for_redemptions() {
    let rate = Rate::new(1, Duration::from_secs(3600)).unwrap();
    let f = fixture(Controls::off().with_velocity(Some(rate))).await;
    let t = f
        .issue(
            "prov_a",
            per_use("50.00", TokenUses::CapBounded { max_uses: None }),
            MONTH,
        )
        .await;
    assert!(charged(&f.redeem("prov_a", &value(&t), "5.00").await));
    f.advance(chrono::Duration::seconds(3599));
    let held = f.redeem("prov_a", &value(&t), "5.00").await;
    assert!(
        blockers(&held).iter().any(|c| c == "CONFIRMATION_REQUIRED"),
        "one second inside the window: held, got {held:?}"
    );
    f.advance(chrono::Duration::seconds(1));
    assert!(
        charged(&f.redeem("prov_a", &value(&t), "5.00").await),
        "exactly one window later: the first left it"
    );
}
