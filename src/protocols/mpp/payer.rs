//! The agent pays a challenge only when its mandate allows it: [`EnginePayer`] runs every
//! payment through the engine (decision, budget hold, attempt, audit), with a
//! [`ResponderProvider`] as the engine's payment provider, which issues the credential (a
//! shared payment token for the Stripe method) through a [`ChallengeResponder`] within the
//! [`Grant`] of the challenge.
//!
//! The idempotency key of a payment is derived from the challenge (realm and id), and the cart
//! snapshot of a challenge is made once: paying the same challenge again is a replay of the
//! engine command (one payment, the same credential), never a second charge.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration as StdDuration;

use async_trait::async_trait;
use sha2::{Digest as _, Sha256};

use super::challenge::Challenge;
use super::credential::{Credential, Payload};
use super::respond::{ChallengeResponder, Grant, IssuedToken, ResponderError};
use crate::domain::{IdempotencyKey, ProviderReport};
use crate::engine::Engine;
use crate::ports::{
    AuthorizeRequest, CaptureRequest, Lookup, PaymentProvider, ProviderError, RefundRequest,
    VoidRequest,
};
use crate::protocols::asset::AssetRegistry;
use crate::protocols::book::{authorize_with, bounded_book, refuse, Issued};
use crate::protocols::charge::{ChargeContext, ChargeOffer};
use crate::protocols::error::OfferError;
use crate::protocols::pay::execute_offer;
pub(crate) use crate::protocols::pay::short;
pub use crate::protocols::pay::{PayError, PayerIdentity};

/// Decides and pays one challenge.
#[async_trait]
pub trait Payer: Send + Sync + fmt::Debug {
    /// The payment methods it pays with.
    fn methods(&self) -> Vec<String>;

    /// The on-chain assets the host registered.
    fn assets(&self) -> &AssetRegistry;

    /// Decides `offer` (read from `challenge`) under the mandate and, when allowed, pays it:
    /// the credential to send. Paying the same challenge again is a replay: the same
    /// credential, no second payment.
    async fn pay(&self, challenge: &Challenge, offer: &ChargeOffer)
        -> Result<Credential, PayError>;
}

bounded_book!(
    /// What the payer and its provider share about each challenge being paid: the challenge, its
    /// grant and cart snapshot (made once), and the tokens issued (by reference).
    ///
    /// Bounded: at most [`GrantBook::capacity`] challenges ([`DEFAULT_BOOK_CAPACITY`](crate::protocols::DEFAULT_BOOK_CAPACITY) unless
    /// [`GrantBook::with_capacity`] says otherwise). A challenge is forgotten only once its grant
    /// has expired (plus five minutes); when the book is full of live ones a new challenge is
    /// refused with [`OfferError::Capacity`] and nothing is paid.
    GrantBook,
    Challenge,
    Grant,
    IssuedToken,
    "challenges",
    "agent_mandate::protocols::mpp::GrantBook"
);

impl Issued for IssuedToken {
    fn reference(&self) -> &str {
        &self.reference
    }
}

fn book_key(c: &Challenge) -> String {
    format!("{}\n{}", c.realm(), c.id())
}

/// The engine's payment provider on the agent's side: an authorization issues the credential
/// for the challenge of the snapshot (through the responder, within its grant, bounded by
/// [`PaymentProvider::deadline`]: a responder slower than that is an ambiguous authorization,
/// the hold stays and nothing is issued again), captured at once (the grant is spent
/// authority). Capture, void and refund are refused: a token handed to a seller is not taken
/// back here; a refund is the seller's.
#[derive(Debug)]
pub struct ResponderProvider {
    responder: Arc<dyn ChallengeResponder>,
    book: Arc<GrantBook>,
}

impl ResponderProvider {
    /// A provider issuing through `responder`, for the challenges in `book`.
    pub fn new(responder: Arc<dyn ChallengeResponder>, book: Arc<GrantBook>) -> ResponderProvider {
        ResponderProvider { responder, book }
    }
}

#[async_trait]
impl PaymentProvider for ResponderProvider {
    fn deadline(&self) -> StdDuration {
        StdDuration::from_secs(10)
    }

    async fn authorize(&self, request: &AuthorizeRequest) -> Result<ProviderReport, ProviderError> {
        let credential = request.credential.clone();
        let issue = |challenge: Challenge, mut grant: Grant| async move {
            grant.credential = Some(credential);
            self.responder
                .respond(&challenge, &grant)
                .await
                .map_err(|e| match e {
                    ResponderError::Transient { reason } => ProviderError::Transient {
                        message: reason,
                        retry_after: None,
                    },
                    ResponderError::Ambiguous { reason } => {
                        ProviderError::Ambiguous { message: reason }
                    }
                    other => ProviderError::Invalid {
                        message: other.to_string(),
                    },
                })
        };
        let amount = |g: &Grant| g.max_amount;
        authorize_with(
            &self.book.book,
            request,
            self.deadline(),
            "challenge grant",
            amount,
            issue,
        )
        .await
    }

    async fn capture(&self, _: &CaptureRequest) -> Result<ProviderReport, ProviderError> {
        refuse("a challenge grant is captured when issued")
    }

    async fn void(&self, _: &VoidRequest) -> Result<ProviderReport, ProviderError> {
        refuse("a token handed to a seller cannot be voided here")
    }

    async fn refund(&self, _: &RefundRequest) -> Result<ProviderReport, ProviderError> {
        refuse("refunds of a 402 payment are the seller's")
    }

    async fn lookup(&self, lookup: &Lookup) -> Result<Option<ProviderReport>, ProviderError> {
        self.book.book.lookup(lookup)
    }
}

/// A [`Payer`] that decides and pays every challenge through the engine.
#[derive(Debug, Clone)]
pub struct EnginePayer {
    engine: Engine,
    who: PayerIdentity,
    context: ChargeContext,
    assets: AssetRegistry,
    book: Arc<GrantBook>,
    method: String,
}

impl EnginePayer {
    /// A payer for `method` (the responder's), running `engine` (whose payment provider is a
    /// [`ResponderProvider`] sharing `book`).
    pub fn new(
        engine: Engine,
        who: PayerIdentity,
        context: ChargeContext,
        assets: AssetRegistry,
        book: Arc<GrantBook>,
        method: &str,
    ) -> EnginePayer {
        EnginePayer {
            engine,
            who,
            context,
            assets,
            book,
            method: method.to_owned(),
        }
    }

    /// The idempotency key of paying `challenge`: `mpp-pay-` and 48 hex digits of the SHA-256
    /// of its realm and id.
    pub fn key_for(challenge: &Challenge) -> Result<IdempotencyKey, OfferError> {
        let h = hex::encode(Sha256::digest(book_key(challenge).as_bytes()));
        IdempotencyKey::new(format!("mpp-pay-{}", &h[..48])).map_err(|e| OfferError::Invalid {
            field: "id",
            reason: e.to_string(),
        })
    }
}

#[async_trait]
impl Payer for EnginePayer {
    fn methods(&self) -> Vec<String> {
        vec![self.method.clone()]
    }

    fn assets(&self) -> &AssetRegistry {
        &self.assets
    }

    async fn pay(
        &self,
        challenge: &Challenge,
        offer: &ChargeOffer,
    ) -> Result<Credential, PayError> {
        let now = self.engine.ports().clock.now();
        let (_, snapshot) = self
            .book
            .book
            .entry(&book_key(challenge), challenge, now, || {
                let snapshot = offer.cart(&self.context, now)?;
                // No token outlives the payment's snapshot: a challenge without `expires` must
                // not get a token valid until the mandate expires.
                let until = self.who.mandate_expires.min(snapshot.expires_at());
                let grant = Grant::for_offer(challenge, offer, until);
                let expires = grant.expires_at;
                Ok((grant, snapshot, expires))
            })?;
        let attempt = execute_offer(
            &self.engine,
            &self.who,
            offer,
            snapshot,
            EnginePayer::key_for(challenge)?,
            &format!("402-{}", short(&book_key(challenge))),
        )
        .await?;
        let token = attempt
            .provider_ref
            .as_ref()
            .and_then(|r| self.book.book.issued(r.as_str()))
            .ok_or_else(|| PayError::NotPaid {
                reason: "the issued token is not known to this process".into(),
            })?;
        Ok(Credential::new(challenge, token.payload, None))
    }
}

/// A [`ChallengeResponder`] for tests and local runs: issues `tok-...` references and a
/// payload `{"spt": <token>}` where the token is a value the seller's PSP accepts (with
/// localstripe, a payment method id such as `pm_card_visa`, since localstripe has no shared
/// payment tokens). Records every grant, and answers the same challenge with the same token.
/// `Debug` never shows the token.
pub struct FixedTokenResponder {
    method: String,
    token: String,
    grants: Mutex<Vec<Grant>>,
    issued: Mutex<HashMap<String, IssuedToken>>,
}

impl fmt::Debug for FixedTokenResponder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FixedTokenResponder")
            .field("method", &self.method)
            .field("token", &"<redacted>")
            .finish_non_exhaustive()
    }
}

impl FixedTokenResponder {
    /// A responder for `method` handing out `token`.
    pub fn new(method: &str, token: &str) -> FixedTokenResponder {
        FixedTokenResponder {
            method: method.into(),
            token: token.into(),
            grants: Mutex::new(Vec::new()),
            issued: Mutex::new(HashMap::new()),
        }
    }

    /// Every grant asked for, in order.
    pub fn grants(&self) -> Vec<Grant> {
        self.grants
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

#[async_trait]
impl ChallengeResponder for FixedTokenResponder {
    fn method(&self) -> &str {
        &self.method
    }

    async fn respond(
        &self,
        challenge: &Challenge,
        grant: &Grant,
    ) -> Result<IssuedToken, ResponderError> {
        if challenge.method() != self.method {
            return Err(ResponderError::Method {
                method: challenge.method().to_owned(),
            });
        }
        self.grants
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(grant.clone());
        let mut issued = self
            .issued
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let token = issued
            .entry(challenge.id().to_owned())
            .or_insert_with(|| {
                let mut m = serde_json::Map::new();
                m.insert("spt".into(), self.token.clone().into());
                IssuedToken {
                    reference: format!("tok-{}", short(challenge.id())),
                    payload: Payload::new(m),
                }
            })
            .clone();
        Ok(token)
    }
}
