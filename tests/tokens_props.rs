//! Property: whatever sequence of redemptions (amounts, keys repeated or not, time moving on)
//! a provider sends, what a token charges never exceeds its period cap in any period, nor its
//! use count, nor its per-use cap (I2 for tokens).
#![cfg(all(feature = "tokens", feature = "testkit"))]

mod tokens_support;

use agent_mandate::domain::Currency;
use agent_mandate::ports::{PeriodCap, TokenLimits, TokenUses};
use agent_mandate::tokens::{RedeemToken, RedemptionOutcome};
use chrono::Duration;
use proptest::prelude::*;
use tokens_support::*;

const PERIOD: i64 = 7 * 86_400;

#[derive(Debug, Clone)]
struct Step {
    cents: i64,
    advance_hours: i64,
    reuse_key: bool,
}

fn step() -> impl Strategy<Value = Step> {
    (1i64..=4_000, 0i64..=60, proptest::bool::weighted(0.2)).prop_map(
        |(cents, advance_hours, reuse_key)| Step {
            cents,
            advance_hours,
            reuse_key,
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]
    #[test]
    fn redemptions_never_exceed_the_period_cap_or_the_uses(
        steps in proptest::collection::vec(step(), 1..25),
        max_uses in proptest::option::of(1u32..6),
        single in proptest::bool::weighted(0.2),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let f = Fixture::memory().await;
            let uses = if single { TokenUses::Single } else { TokenUses::CapBounded { max_uses } };
            let limits = TokenLimits {
                currency: Currency::EUR,
                per_use: Some(eur("25.00")),
                per_period: Some(PeriodCap { amount: eur("50.00"), period_seconds: PERIOD as u64 }),
                uses,
            };
            let token = f.issue("prov_a", limits, 300 * 86_400).await.token.unwrap();
            let mut charges: Vec<(chrono::DateTime<chrono::Utc>, i64)> = Vec::new();
            let mut last_key = key("first");
            for (i, s) in steps.iter().enumerate() {
                f.advance(Duration::hours(s.advance_hours));
                let k = if s.reuse_key { last_key.clone() } else { key(&format!("s{i}")) };
                last_key = k.clone();
                let amount = agent_mandate::domain::Money::from_minor(s.cents, Currency::EUR).unwrap();
                let cmd = RedeemToken::new(k, token.clone(), amount);
                match f.tokens.redeem(&provider("prov_a"), &cmd).await {
                    Ok(RedemptionOutcome::Charged { replay: false, attempt, .. }) => {
                        charges.push((agent_mandate::ports::Clock::now(&*f.memory.clock), attempt.request.amount.minor_units()));
                    }
                    Ok(_) | Err(agent_mandate::tokens::TokenError::IdempotencyConflict { .. }) => {}
                    Err(e) => panic!("{e}"),
                }
            }
            // Per use, per period, uses; and the PSP agrees with the count.
            for (_, c) in &charges {
                assert!(*c <= 2_500);
            }
            for (t, _) in &charges {
                let in_window: i64 = charges
                    .iter()
                    .filter(|(u, _)| *u > *t - Duration::seconds(PERIOD) && *u <= *t)
                    .map(|(_, c)| c)
                    .sum();
                assert!(in_window <= 5_000, "{in_window} charged within a period: {charges:?}");
            }
            if let Some(m) = uses.max_uses() {
                assert!(charges.len() as u32 <= m, "{} uses of {m}", charges.len());
            }
            let total: i64 = charges.iter().map(|(_, c)| c).sum();
            assert_eq!(f.fake.total_captured(Currency::EUR), total);
        });
    }
}
