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

use std::sync::Arc;
use std::time::Duration as StdDuration;

use async_trait::async_trait;
use sha2::{Digest as _, Sha256};

use super::signer::{check_grant, SignedPayload, SignerError, X402Grant, X402Signer};
use super::{PaymentPayload, PaymentRequired, PaymentRequirements};
use crate::domain::{IdempotencyKey, ProviderReport};
use crate::engine::Engine;
use crate::ports::{
    AuthorizeRequest, CaptureRequest, Clock, Lookup, PaymentProvider, ProviderError, RefundRequest,
    VoidRequest,
};
use crate::protocols::asset::AssetRegistry;
use crate::protocols::book::{authorize_with, bounded_book, refuse, Issued};
use crate::protocols::charge::{ChargeContext, ChargeOffer};
use crate::protocols::error::OfferError;
use crate::protocols::pay::{execute_offer, short, PayError, PayerIdentity};

/// The `payment-identifier` extension.
pub const PAYMENT_IDENTIFIER: &str = "payment-identifier";

bounded_book!(
    /// What the payer and its provider share about each payment: the requirement, its grant and
    /// cart snapshot (made once), and the payloads signed (by reference).
    ///
    /// Bounded: at most [`X402Book::capacity`] payments ([`DEFAULT_BOOK_CAPACITY`](crate::protocols::DEFAULT_BOOK_CAPACITY) unless
    /// [`X402Book::with_capacity`] says otherwise). A payment is forgotten only once its grant has
    /// expired (plus five minutes); when the book is full of live ones a new payment is refused
    /// with [`OfferError::Capacity`] and nothing is signed.
    X402Book,
    PaymentRequirements,
    X402Grant,
    SignedPayload,
    "payments",
    "agent_mandate::protocols::x402::X402Book"
);

impl Issued for SignedPayload {
    fn reference(&self) -> &str {
        &self.reference
    }
}

/// The engine's payment provider on the agent's x402 side: an authorization signs the
/// requirement of the snapshot (through the signer, within its grant, checked again against
/// the clock, bounded by [`PaymentProvider::deadline`]: a signer slower than that is an
/// ambiguous authorization, the hold stays and nothing is signed again), captured at once.
/// Capture, void and refund are refused: a signed authorization handed to a seller is not
/// taken back here.
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

#[async_trait]
impl PaymentProvider for SignerProvider {
    fn deadline(&self) -> StdDuration {
        StdDuration::from_secs(10)
    }

    async fn authorize(&self, request: &AuthorizeRequest) -> Result<ProviderReport, ProviderError> {
        let invalid = |e: SignerError| ProviderError::Invalid {
            message: e.to_string(),
        };
        let issue = |accepted: PaymentRequirements, grant: X402Grant| async move {
            check_grant(&accepted, &grant, self.clock.now()).map_err(invalid)?;
            self.signer
                .sign(&accepted, &grant)
                .await
                .map_err(|e| match e {
                    SignerError::Transient { reason } => ProviderError::Transient {
                        message: reason,
                        retry_after: None,
                    },
                    other => invalid(other),
                })
        };
        let amount = |g: &X402Grant| g.money;
        authorize_with(
            &self.book.book,
            request,
            self.deadline(),
            "x402 grant",
            amount,
            issue,
        )
        .await
    }

    async fn capture(&self, _: &CaptureRequest) -> Result<ProviderReport, ProviderError> {
        refuse("an x402 authorization is captured when signed")
    }

    async fn void(&self, _: &VoidRequest) -> Result<ProviderReport, ProviderError> {
        refuse("a signed authorization handed to a seller cannot be voided here")
    }

    async fn refund(&self, _: &RefundRequest) -> Result<ProviderReport, ProviderError> {
        refuse("refunds of an x402 payment are the seller's")
    }

    async fn lookup(&self, lookup: &Lookup) -> Result<Option<ProviderReport>, ProviderError> {
        self.book.book.lookup(lookup)
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
        let (_, snapshot) = self.book.book.entry(&payment_id, accepted, now, || {
            let snapshot = offer.cart(&self.context, now)?;
            let grant =
                X402Grant::for_offer(&payment_id, accepted, offer, now, self.who.mandate_expires);
            let expires = grant.valid_before;
            Ok((grant, snapshot, expires))
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
            .and_then(|r| self.book.book.issued(r.as_str()))
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
