//! The agent pays an x402 requirement only when its mandate allows it: [`X402Payer`] runs
//! every payment through the engine (decision, budget hold, attempt, audit, loop detection),
//! with a [`SignerProvider`] as the engine's payment provider, which signs through an
//! [`X402Signer`] within the [`X402Grant`] of the requirement.
//!
//! An x402 requirement carries no server-assigned id. A payment's identity is the offer's
//! ([`PaymentRequirements::offer_id`]: the requirement and the resource URL), or, when the
//! caller names the call (`call`), the offer's and the call's: the idempotency key and the
//! cart snapshot derive from it, so paying the same requirement again (for the same call) is a
//! replay of the engine command (one payment, the same payload), never a second signature.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration as StdDuration;

use async_trait::async_trait;
use sha2::{Digest as _, Sha256};

use super::signer::{check_grant, SignedPayload, SignerError, X402Grant, X402Signer};
use super::{PaymentPayload, PaymentRequired, PaymentRequirements};
use crate::domain::{
    CartSnapshot, IdempotencyKey, Money, ProviderRef, ProviderReport, ProviderStatus, SnapshotId,
};
use crate::engine::Engine;
use crate::ports::{
    AuthorizeRequest, CaptureRequest, Clock, Lookup, PaymentProvider, ProviderError, RefundRequest,
    VoidRequest,
};
use crate::protocols::asset::AssetRegistry;
use crate::protocols::charge::{ChargeContext, ChargeOffer};
use crate::protocols::error::OfferError;
use crate::protocols::pay::{execute_offer, short, PayError, PayerIdentity};

/// The `payment-identifier` extension.
pub const PAYMENT_IDENTIFIER: &str = "payment-identifier";

/// What the payer and its provider share about each payment: the requirement, its grant and
/// cart snapshot (made once), and the payloads signed (by reference).
#[derive(Default)]
pub struct X402Book {
    inner: Mutex<Book>,
}

#[derive(Default)]
struct Book {
    by_payment: HashMap<String, (PaymentRequirements, X402Grant, CartSnapshot)>,
    by_snapshot: HashMap<SnapshotId, String>,
    signed: HashMap<String, (SignedPayload, Money)>,
    by_key: HashMap<String, String>,
}

impl fmt::Debug for X402Book {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "X402Book({} payments)", self.lock().by_payment.len())
    }
}

/// The most payments a book remembers (all are dropped past it; the engine's idempotency
/// records stay authoritative).
const MAX_BOOK: usize = 100_000;

impl X402Book {
    /// An empty book.
    pub fn new() -> X402Book {
        X402Book::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Book> {
        // A poisoned lock only means another thread panicked while holding it; every update
        // is a single insert.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn entry(
        &self,
        payment_id: &str,
        accepted: &PaymentRequirements,
        make: impl FnOnce() -> Result<(X402Grant, CartSnapshot), OfferError>,
    ) -> Result<(X402Grant, CartSnapshot), OfferError> {
        if let Some((_, g, s)) = self.lock().by_payment.get(payment_id) {
            return Ok((g.clone(), s.clone()));
        }
        let (grant, snapshot) = make()?;
        let mut b = self.lock();
        if b.by_payment.len() >= MAX_BOOK {
            b.by_payment.clear();
            b.by_snapshot.clear();
        }
        let e = b.by_payment.entry(payment_id.to_owned()).or_insert((
            accepted.clone(),
            grant,
            snapshot,
        ));
        let out = (e.1.clone(), e.2.clone());
        b.by_snapshot.insert(out.1.id(), payment_id.to_owned());
        Ok(out)
    }

    fn for_snapshot(&self, id: &SnapshotId) -> Option<(PaymentRequirements, X402Grant)> {
        let b = self.lock();
        let key = b.by_snapshot.get(id)?;
        b.by_payment
            .get(key)
            .map(|(r, g, _)| (r.clone(), g.clone()))
    }

    fn signed(&self, reference: &str) -> Option<SignedPayload> {
        self.lock().signed.get(reference).map(|(s, _)| s.clone())
    }
}

/// The engine's payment provider on the agent's x402 side: an authorization signs the
/// requirement of the snapshot (through the signer, within its grant, checked again against
/// the clock), captured at once. Capture, void and refund are refused: a signed authorization
/// handed to a seller is not taken back here.
#[derive(Debug)]
pub struct SignerProvider {
    signer: Arc<dyn X402Signer>,
    book: Arc<X402Book>,
    clock: Arc<dyn Clock>,
}

impl SignerProvider {
    /// A provider signing through `signer` for the payments in `book`, at `clock`'s time.
    pub fn new(
        signer: Arc<dyn X402Signer>,
        book: Arc<X402Book>,
        clock: Arc<dyn Clock>,
    ) -> SignerProvider {
        SignerProvider {
            signer,
            book,
            clock,
        }
    }
}

fn report(reference: &str, amount: Money) -> Result<ProviderReport, ProviderError> {
    Ok(ProviderReport {
        reference: Some(
            ProviderRef::new(reference).map_err(|e| ProviderError::Invalid {
                message: e.to_string(),
            })?,
        ),
        status: ProviderStatus::Captured,
        authorized: amount,
        captured: amount,
        refunded: Money::zero(amount.currency()),
        decline_code: None,
    })
}

#[async_trait]
impl PaymentProvider for SignerProvider {
    fn deadline(&self) -> StdDuration {
        StdDuration::from_secs(10)
    }

    async fn authorize(&self, request: &AuthorizeRequest) -> Result<ProviderReport, ProviderError> {
        let Some((accepted, grant)) = self.book.for_snapshot(&request.snapshot_id) else {
            return Err(ProviderError::Invalid {
                message: "no x402 grant for this snapshot: nothing is signed without one".into(),
            });
        };
        if request.amount != grant.money {
            return Err(ProviderError::Invalid {
                message: "the amount differs from the requirement's grant".into(),
            });
        }
        let invalid = |e: SignerError| ProviderError::Invalid {
            message: e.to_string(),
        };
        check_grant(&accepted, &grant, self.clock.now()).map_err(invalid)?;
        let signed = self
            .signer
            .sign(&accepted, &grant)
            .await
            .map_err(|e| match e {
                SignerError::Transient { reason } => ProviderError::Transient {
                    message: reason,
                    retry_after: None,
                },
                other => invalid(other),
            })?;
        {
            let mut b = self.book.lock();
            b.signed
                .insert(signed.reference.clone(), (signed.clone(), request.amount));
            b.by_key
                .insert(request.key.as_str().to_owned(), signed.reference.clone());
        }
        report(&signed.reference, request.amount)
    }

    async fn capture(&self, _: &CaptureRequest) -> Result<ProviderReport, ProviderError> {
        Err(ProviderError::Invalid {
            message: "an x402 authorization is captured when signed".into(),
        })
    }

    async fn void(&self, _: &VoidRequest) -> Result<ProviderReport, ProviderError> {
        Err(ProviderError::Invalid {
            message: "a signed authorization handed to a seller cannot be voided here".into(),
        })
    }

    async fn refund(&self, _: &RefundRequest) -> Result<ProviderReport, ProviderError> {
        Err(ProviderError::Invalid {
            message: "refunds of an x402 payment are the seller's".into(),
        })
    }

    async fn lookup(&self, lookup: &Lookup) -> Result<Option<ProviderReport>, ProviderError> {
        let b = self.book.lock();
        let reference = match lookup {
            Lookup::Reference(r) => Some(r.as_str().to_owned()),
            Lookup::Key(k) | Lookup::KeySubmitted { key: k, .. } => {
                b.by_key.get(k.as_str()).cloned()
            }
        };
        match reference.and_then(|r| b.signed.get(&r)) {
            Some((s, amount)) => report(&s.reference, *amount).map(Some),
            None => Ok(None),
        }
    }
}

/// Decides and pays x402 requirements through the engine.
#[derive(Debug, Clone)]
pub struct X402Payer {
    engine: Engine,
    who: PayerIdentity,
    context: ChargeContext,
    assets: AssetRegistry,
    book: Arc<X402Book>,
    signer: Arc<dyn X402Signer>,
}

impl X402Payer {
    /// A payer running `engine` (whose payment provider is a [`SignerProvider`] sharing
    /// `book` and `signer`), for the assets the host registered.
    pub fn new(
        engine: Engine,
        who: PayerIdentity,
        context: ChargeContext,
        assets: AssetRegistry,
        book: Arc<X402Book>,
        signer: Arc<dyn X402Signer>,
    ) -> X402Payer {
        X402Payer {
            engine,
            who,
            context,
            assets,
            book,
            signer,
        }
    }

    /// The registered assets.
    pub fn assets(&self) -> &AssetRegistry {
        &self.assets
    }

    /// Whether the signer can sign for `requirement`.
    pub fn accepts(&self, requirement: &PaymentRequirements) -> bool {
        self.signer.accepts(requirement)
    }

    /// The identity of paying `offer`: its offer id, or with `call`, `sha256:` and the hex
    /// SHA-256 of the offer id and the call id.
    pub fn payment_id(offer: &ChargeOffer, call: Option<&str>) -> String {
        match call {
            None => offer.offer_id.clone(),
            Some(call) => format!(
                "sha256:{}",
                hex::encode(Sha256::digest(format!("{}\n{call}", offer.offer_id)))
            ),
        }
    }

    /// The idempotency key of a payment: `x402-pay-` and 48 hex digits of the SHA-256 of its
    /// identity.
    pub fn key_for(payment_id: &str) -> Result<IdempotencyKey, OfferError> {
        let h = hex::encode(Sha256::digest(payment_id.as_bytes()));
        IdempotencyKey::new(format!("x402-pay-{}", &h[..48])).map_err(|e| OfferError::Invalid {
            field: "id",
            reason: e.to_string(),
        })
    }

    /// Decides `offer` (read from `accepted` of `required`) under the mandate and, when
    /// allowed, pays it: the `PAYMENT-SIGNATURE` payload to send. It echoes the answer's
    /// resource and extensions, adding the payment's id to `payment-identifier` when the server
    /// advertises it. Paying the same offer (and call) again is a replay: the same payload, no
    /// second signature.
    pub async fn pay(
        &self,
        required: &PaymentRequired,
        accepted: &PaymentRequirements,
        offer: &ChargeOffer,
        call: Option<&str>,
    ) -> Result<PaymentPayload, PayError> {
        let now = self.engine.ports().clock.now();
        let payment_id = X402Payer::payment_id(offer, call);
        let (_, snapshot) = self.book.entry(&payment_id, accepted, || {
            let snapshot = offer.cart(&self.context, now)?;
            Ok((
                X402Grant::for_offer(&payment_id, accepted, offer, now, self.who.mandate_expires),
                snapshot,
            ))
        })?;
        let attempt = execute_offer(
            &self.engine,
            &self.who,
            offer,
            snapshot,
            X402Payer::key_for(&payment_id)?,
            &format!("x402-{}", short(&payment_id)),
        )
        .await?;
        let signed = attempt
            .provider_ref
            .as_ref()
            .and_then(|r| self.book.signed(r.as_str()))
            .ok_or_else(|| PayError::NotPaid {
                reason: "the signed payload is not known to this process".into(),
            })?;
        let extensions = required.extensions.clone().map(|mut ext| {
            if let Some(serde_json::Value::Object(pi)) = ext.get_mut(PAYMENT_IDENTIFIER) {
                let id = format!("pay_{}", &hex::encode(Sha256::digest(&payment_id))[..32]);
                match pi.get_mut("info") {
                    Some(serde_json::Value::Object(info)) => {
                        info.insert("id".into(), id.into());
                    }
                    _ => {
                        let mut info = serde_json::Map::new();
                        info.insert("id".into(), id.into());
                        pi.insert("info".into(), info.into());
                    }
                }
            }
            ext
        });
        Ok(PaymentPayload {
            x402_version: 2,
            resource: required.resource.clone(),
            accepted: accepted.clone(),
            payload: signed.payload,
            extensions,
        })
    }
}
