//! No token value (nor the card behind it) appears in Debug, serde output, errors, tracing
//! or the audit trail, across issue, redemptions (charged, refused, replayed, conflicting)
//! and revocation (I10). Checked to fail: adding
//! a DEBUG event carrying the value in `issue` makes `no_token_value_leaks` fail.
#![cfg(all(feature = "tokens", feature = "testkit"))]

mod tokens_support;

use agent_mandate::domain::Text;
use agent_mandate::ports::{Secret, TokenSelector, TokenUses};
use agent_mandate::tokens::{RedeemToken, RevokeTokens};
use tokens_support::*;

#[derive(Clone, Default)]
struct Trace(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Trace {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn no_token_value_leaks() {
    let trace = Trace::default();
    let writer = trace.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_span_events(
            tracing_subscriber::fmt::format::FmtSpan::NEW
                | tracing_subscriber::fmt::format::FmtSpan::CLOSE,
        )
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let f = Fixture::memory().await;
    let issued = f
        .issue("prov_a", per_use("10.00", TokenUses::Single), 86_400)
        .await;
    let token = issued.token.clone().unwrap();
    let value = token.expose().to_owned();
    let secret_part = value.rsplit('_').next().unwrap().to_owned();
    assert_eq!(secret_part.len(), 64);

    let mut seen = Vec::new();
    seen.push(format!("{issued:?}"));
    seen.push(serde_json::to_string(&issued.record).unwrap());
    let cmd = RedeemToken::new(key("k"), token.clone(), eur("10.00"));
    seen.push(format!("{cmd:?}"));
    for by in ["prov_a", "prov_b", "prov_a"] {
        let out = f.tokens.redeem(&provider(by), &cmd).await.unwrap();
        seen.push(format!("{out:?}"));
    }
    let other = RedeemToken::new(key("k"), token.clone(), eur("9.00"));
    let err = f
        .tokens
        .redeem(&provider("prov_a"), &other)
        .await
        .unwrap_err();
    seen.push(format!("{err:?} {err}"));
    let wrong = RedeemToken::new(key("w"), Secret::new(format!("{value}0")), eur("1.00"));
    seen.push(format!(
        "{:?}",
        f.tokens.redeem(&provider("prov_a"), &wrong).await.unwrap()
    ));
    f.tokens
        .revoke(
            &agent_principal(),
            &RevokeTokens::new(
                TokenSelector::Issuer {
                    actor_id: agent().id,
                },
                Text::new("done").unwrap(),
            ),
        )
        .await
        .unwrap();
    seen.push(format!(
        "{:?}",
        f.tokens.token(&issued.record.id).await.unwrap()
    ));
    seen.push(format!(
        "{:?}",
        f.tokens
            .store()
            .redemptions(&issued.record.id)
            .await
            .unwrap()
    ));
    let bodies = f.audit_bodies().await;
    assert!(
        bodies.iter().any(|b| b.contains("token_issued")),
        "the trail has the token's events"
    );
    assert!(bodies.iter().any(|b| b.contains("token_revoked")));
    seen.extend(bodies);
    let text = trace.0.lock().unwrap().clone();
    let text = String::from_utf8_lossy(&text).into_owned();
    assert!(
        text.contains("execute_payment"),
        "the trace recorded the redemption"
    );
    seen.push(text);

    for s in &seen {
        assert!(!s.contains(&secret_part), "the token's secret leaked: {s}");
        assert!(!s.contains(&value), "the token value leaked");
        assert!(!s.contains(CARD), "the card behind the token leaked");
    }
}
