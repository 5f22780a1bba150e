//! Writing your own PSP adapter, and proving it with the conformance suite.
//!
//! Run: `cargo run --example custom_psp --features testkit`
//!
//! The steps, for a team connecting agent-mandate to its payment service provider:
//!
//! 1. **Implement [`PaymentProvider`]** for a struct that holds the PSP client and the
//!    [`CredentialVault`]. Only this adapter resolves a credential reference to its secret, at
//!    the moment of the call; the secret goes into the PSP request and nowhere else (I10).
//! 2. **Send the [`ProviderKey`] as the PSP's idempotency key** on every mutating call, so a
//!    retry after a timeout or a crash moves no money twice (I3).
//! 3. **Map the PSP's statuses in one function**, with an arm for every status you know and
//!    [`ProviderStatus::Unknown`] for the rest: a status you do not know must never become a
//!    terminal one.
//! 4. **Declines are data**: a refused card is an `Ok` report with
//!    [`ProviderStatus::Declined`] and the PSP's code, never an `Err`.
//! 5. **Classify every failure** by what the engine may do next:
//!
//!    | what happened | error | the engine |
//!    |---|---|---|
//!    | 400, 402 without a payment, 404, 422: malformed or impossible | `Invalid` | gives up (definitive) |
//!    | connection refused (nothing sent), 429 (documented as not processed) | `Transient` | releases the hold; retries with the same key |
//!    | any 5xx (a gateway may answer 502 after the PSP authorized), 409 (same key in flight), timeout after sending, connection lost, anything unexpected: maybe processed | `Ambiguous` | keeps the hold and reconciles with `lookup` |
//!    | vault: unknown or unusable credential | `Invalid` | gives up |
//!    | vault unavailable (nothing sent) | `Transient` | retries |
//!
//!    Ambiguous is the default. `Transient` makes the engine release the budget hold, so a
//!    second payment may spend it: say `Transient` only when nothing can have been processed
//!    (the same rule as the Stripe adapter, `adapters::http::classify`, feature `http`).
//!
//! 6. **Run `payment_provider_conformance`** against it (here against an in-process imitation of
//!    a PSP; in CI, against the PSP's sandbox with a `key_prefix` unique to the run), with
//!    [`ProviderCapabilities`] saying what the PSP cannot do.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use agent_mandate::adapters::memory::MemoryVault;
use agent_mandate::domain::{
    ActorId, BuyerId, Currency, IdempotencyKey, MerchantId, Money, ProviderKey, ProviderRef,
    ProviderReport, ProviderStatus, SnapshotId,
};
use agent_mandate::ports::{
    AuthorizeRequest, CaptureRequest, Clock, CredentialDisplay, CredentialKind, CredentialVault,
    FundingType, Lookup, NewCredential, PaymentProvider, ProviderError, RefundRequest, Secret,
    SystemClock, VaultError, VoidRequest,
};
use agent_mandate::testkit::{payment_provider_conformance, ProviderCapabilities, ProviderFixture};
use async_trait::async_trait;

// ------------------------------------------------------------------------------------------
// The PSP's side: its own wire vocabulary (what its JSON API would return).

/// A payment intent as the PSP's API returns it.
#[derive(Debug, Clone)]
struct WireIntent {
    id: String,
    status: &'static str,
    amount_authorized: i64,
    amount_received: i64,
    amount_refunded: i64,
    currency: Currency,
    decline_code: Option<String>,
}

/// A failed HTTP exchange with the PSP.
#[derive(Debug)]
enum WireError {
    /// The PSP answered with an error status.
    Http { status: u16, message: String },
    /// The request was sent and no answer came back in time.
    TimedOutAfterSending,
}

/// An in-process imitation of the PSP's API, with Stripe-like idempotency (a key replays its
/// first successful answer; reused with other parameters, it is a 400).
#[derive(Debug, Default)]
struct Backend {
    intents: HashMap<String, WireIntent>,
    by_key: HashMap<String, String>,
    replies: HashMap<String, (String, WireIntent)>,
}

fn http(status: u16, message: &str) -> WireError {
    WireError::Http {
        status,
        message: message.into(),
    }
}

impl Backend {
    /// Runs `op` once per idempotency key.
    fn idempotent(
        &mut self,
        key: &str,
        fingerprint: String,
        op: impl FnOnce(&mut Backend) -> Result<WireIntent, WireError>,
    ) -> Result<WireIntent, WireError> {
        if let Some((seen, reply)) = self.replies.get(key) {
            return if *seen == fingerprint {
                Ok(reply.clone())
            } else {
                Err(http(400, "idempotency key reused with other parameters"))
            };
        }
        let reply = op(self)?;
        self.replies
            .insert(key.into(), (fingerprint, reply.clone()));
        Ok(reply)
    }

    fn intent(&mut self, id: &str) -> Result<&mut WireIntent, WireError> {
        self.intents
            .get_mut(id)
            .ok_or_else(|| http(404, "no such payment_intent"))
    }

    fn create(
        &mut self,
        key: &str,
        card: &str,
        amount: i64,
        currency: Currency,
        capture: bool,
    ) -> WireIntent {
        let id = format!("pi_{}", self.intents.len() + 1);
        let (status, authorized, decline_code) = match card {
            "card_declined" => (
                "requires_payment_method",
                0,
                Some("card_declined".to_owned()),
            ),
            "card_3ds" => ("requires_action", 0, None),
            _ if capture => ("succeeded", amount, None),
            _ => ("requires_capture", amount, None),
        };
        let intent = WireIntent {
            id: id.clone(),
            status,
            amount_authorized: authorized,
            amount_received: if status == "succeeded" { amount } else { 0 },
            amount_refunded: 0,
            currency,
            decline_code,
        };
        self.intents.insert(id.clone(), intent.clone());
        self.by_key.insert(key.into(), id);
        intent
    }

    fn capture(&mut self, id: &str, amount: i64) -> Result<WireIntent, WireError> {
        let pi = self.intent(id)?;
        if pi.status != "requires_capture" || amount <= 0 || amount > pi.amount_authorized {
            return Err(http(400, "payment_intent_unexpected_state"));
        }
        pi.status = "succeeded";
        pi.amount_received = amount;
        Ok(pi.clone())
    }

    fn cancel(&mut self, id: &str) -> Result<WireIntent, WireError> {
        let pi = self.intent(id)?;
        if !matches!(pi.status, "requires_capture" | "requires_action") {
            return Err(http(400, "payment_intent_unexpected_state"));
        }
        pi.status = "canceled";
        Ok(pi.clone())
    }

    fn refund(&mut self, id: &str, amount: i64) -> Result<WireIntent, WireError> {
        let pi = self.intent(id)?;
        if pi.status != "succeeded"
            || amount <= 0
            || pi.amount_refunded + amount > pi.amount_received
        {
            return Err(http(400, "charge_already_refunded"));
        }
        pi.amount_refunded += amount;
        Ok(pi.clone())
    }
}

// ------------------------------------------------------------------------------------------
// The adapter.

/// Our PSP adapter.
#[derive(Debug)]
struct MyPsp {
    vault: Arc<dyn CredentialVault>,
    backend: Mutex<Backend>,
}

/// Step 3: one status mapping, every known status, `Unknown` for the rest.
fn map_status(status: &str) -> ProviderStatus {
    match status {
        "requires_capture" => ProviderStatus::Authorized,
        "succeeded" => ProviderStatus::Captured,
        "canceled" => ProviderStatus::Cancelled,
        "requires_action" => ProviderStatus::RequiresAction,
        // Stripe's state after a declined confirmation: a decline, reported as data (step 4).
        "requires_payment_method" => ProviderStatus::Declined,
        other => ProviderStatus::Unknown(other.to_owned()),
    }
}

fn money(minor: i64, currency: Currency) -> Result<Money, ProviderError> {
    Money::from_minor(minor, currency).map_err(|e| ProviderError::Ambiguous {
        message: format!("the PSP reported an impossible amount: {e}"),
    })
}

/// Converts the PSP's answer into the library's report.
fn report(pi: WireIntent) -> Result<ProviderReport, ProviderError> {
    Ok(ProviderReport {
        reference: Some(
            ProviderRef::new(&pi.id).map_err(|e| ProviderError::Ambiguous {
                message: format!("the PSP returned a bad id: {e}"),
            })?,
        ),
        status: map_status(pi.status),
        authorized: money(pi.amount_authorized, pi.currency)?,
        captured: money(pi.amount_received, pi.currency)?,
        refunded: money(pi.amount_refunded, pi.currency)?,
        decline_code: pi.decline_code,
    })
}

/// Step 5: classify every failure by what may be done next.
fn classify(error: WireError) -> ProviderError {
    match error {
        WireError::Http { status, message } => match status {
            // Documented by the PSP as not processed.
            429 => ProviderError::Transient {
                message,
                retry_after: None,
            },
            // Refused before processing: malformed or impossible.
            400..=499 if status != 408 && status != 409 => ProviderError::Invalid { message },
            // 5xx, 408, 409 and anything unexpected: maybe processed.
            _ => ProviderError::Ambiguous { message },
        },
        WireError::TimedOutAfterSending => ProviderError::Ambiguous {
            message: "timed out after sending".into(),
        },
    }
}

impl MyPsp {
    fn call(
        &self,
        key: &ProviderKey,
        fingerprint: String,
        op: impl FnOnce(&mut Backend) -> Result<WireIntent, WireError>,
    ) -> Result<ProviderReport, ProviderError> {
        let mut backend = self.backend.lock().unwrap_or_else(|e| e.into_inner());
        backend
            .idempotent(key.as_str(), fingerprint, op)
            .map_err(classify)
            .and_then(report)
    }
}

#[async_trait]
impl PaymentProvider for MyPsp {
    /// The hard deadline of every call: a real adapter sets its HTTP client's timeout (or
    /// wraps each call in one) no longer than this, and reports a timeout on a mutating call
    /// as `Ambiguous`. The engine's lease must outlast it.
    fn deadline(&self) -> std::time::Duration {
        std::time::Duration::from_secs(10)
    }

    async fn authorize(&self, r: &AuthorizeRequest) -> Result<ProviderReport, ProviderError> {
        // Step 1: resolve the credential here, and only here.
        let card = self
            .vault
            .resolve(&r.credential, SystemClock.now())
            .await
            .map_err(|e| match e {
                VaultError::Unavailable { message } => ProviderError::Transient {
                    message,
                    retry_after: None,
                },
                other => ProviderError::Invalid {
                    message: other.to_string(),
                },
            })?;
        let (amount, currency) = (r.amount.minor_units(), r.amount.currency());
        // Step 2: the key goes to the PSP; the fingerprint never contains the secret.
        let fingerprint = format!("create|{}|{amount}|{currency}|{}", r.credential, r.capture);
        self.call(&r.key, fingerprint, |b| {
            Ok(b.create(
                r.key.as_str(),
                card.secret.expose(),
                amount,
                currency,
                r.capture,
            ))
        })
    }

    async fn capture(&self, r: &CaptureRequest) -> Result<ProviderReport, ProviderError> {
        let amount = r.amount.minor_units();
        let fingerprint = format!("capture|{}|{amount}", r.reference);
        self.call(&r.key, fingerprint, |b| {
            b.capture(r.reference.as_str(), amount)
        })
    }

    async fn void(&self, r: &VoidRequest) -> Result<ProviderReport, ProviderError> {
        let fingerprint = format!("cancel|{}", r.reference);
        self.call(&r.key, fingerprint, |b| b.cancel(r.reference.as_str()))
    }

    async fn refund(&self, r: &RefundRequest) -> Result<ProviderReport, ProviderError> {
        let amount = r.amount.minor_units();
        let fingerprint = format!("refund|{}|{amount}", r.reference);
        self.call(&r.key, fingerprint, |b| {
            b.refund(r.reference.as_str(), amount)
        })
    }

    async fn lookup(&self, lookup: &Lookup) -> Result<Option<ProviderReport>, ProviderError> {
        let found = {
            let backend = self.backend.lock().unwrap_or_else(|e| e.into_inner());
            let id = match lookup {
                Lookup::Reference(r) => Some(r.as_str().to_owned()),
                // This PSP finds a payment by key directly: the submission time is not needed.
                Lookup::Key(k) | Lookup::KeySubmitted { key: k, .. } => {
                    backend.by_key.get(k.as_str()).cloned()
                }
            };
            // A 404 on lookup is "no such payment": Ok(None), not an error.
            id.and_then(|id| backend.intents.get(&id).cloned())
        };
        found.map(report).transpose()
    }
}

// ------------------------------------------------------------------------------------------
// Step 6: run the suite.

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(async {
        let vault = Arc::new(MemoryVault::new());
        let store = async |card: &str| {
            let credential = NewCredential {
                kind: CredentialKind::PaymentMethod,
                owner: ActorId::new("agent_example").expect("valid id"),
                buyer_id: BuyerId::new("buyer_example").expect("valid id"),
                secret: Secret::new(card),
                cvc: None,
                display: CredentialDisplay {
                    brand: "visa".into(),
                    last4: "4242".into(),
                    exp_month: 12,
                    exp_year: 2199,
                    funding: FundingType::Credit,
                },
            };
            let key = IdempotencyKey::new(format!("store-{card}")).expect("valid key");
            vault
                .store(&key, credential)
                .await
                .expect("stored")
                .credential
                .reference
        };
        let fixture = ProviderFixture {
            good: store("card_ok").await,
            declining: store("card_declined").await,
            three_ds: Some(store("card_3ds").await),
            amount: Money::parse("25.00", Currency::EUR).expect("valid amount"),
            merchant_id: MerchantId::new("merchant_example").expect("valid id"),
            buyer_id: BuyerId::new("buyer_example").expect("valid id"),
            snapshot_id: SnapshotId::from_bytes([42; 32]),
            // Unique per run when the PSP keeps its state (a sandbox account).
            key_prefix: format!("example-{}", SystemClock.now().timestamp()),
        };
        let psp = MyPsp {
            vault: vault.clone(),
            backend: Mutex::new(Backend::default()),
        };
        let report =
            payment_provider_conformance(&psp, &fixture, &ProviderCapabilities::default()).await;
        println!("MyPsp passes the PaymentProvider conformance suite.");
        println!("  passed:  {}", report.passed.join(", "));
        println!(
            "  skipped: {}",
            if report.skipped.is_empty() {
                "none".to_owned()
            } else {
                report.skipped.join(", ")
            }
        );
        println!("How MyPsp classifies failures:");
        for error in [
            http(400, "payment_intent_unexpected_state"),
            http(429, "rate_limited"),
            http(500, "api_error"),
            http(502, "bad_gateway"),
            http(409, "idempotency_key_in_use"),
            WireError::TimedOutAfterSending,
        ] {
            let shown = format!("{error:?}");
            let class = match classify(error) {
                ProviderError::Invalid { .. } => "Invalid: definitive, give up",
                ProviderError::Transient { .. } => "Transient: retry with the same key",
                ProviderError::Ambiguous { .. } => "Ambiguous: keep the hold, reconcile by lookup",
                _ => "other",
            };
            println!("  {shown:<70} -> {class}");
        }
    });
}
