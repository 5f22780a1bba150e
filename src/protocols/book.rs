//! What a 402 payer and the engine's payment provider on the agent's side share, for both
//! protocols: the offer being paid (an MPP challenge, an x402 requirement), its grant and cart
//! snapshot (made once per payment), and the credentials issued (by reference); and the
//! provider's authorization, bounded by its deadline.
//!
//! The book is bounded: at most `capacity` payments. An entry is evicted only once its offer
//! has expired (plus a grace period), so a payment still payable is never forgotten (which
//! would let it be decided and paid again); when the book is full of live entries a new offer
//! is refused ([`OfferError::Capacity`]) rather than an entry dropped.

use std::collections::HashMap;
use std::future::Future;
use std::pin::pin;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::task::{Poll, Waker};
use std::time::Duration as StdDuration;

use chrono::{DateTime, Duration, Utc};

use crate::domain::{CartSnapshot, Money, ProviderRef, ProviderReport, ProviderStatus, SnapshotId};
use crate::ports::{AuthorizeRequest, Lookup, ProviderError};
use crate::protocols::error::OfferError;

/// The most payments a book remembers unless the host says otherwise.
pub const DEFAULT_BOOK_CAPACITY: usize = 100_000;

/// How long after its offer expired an entry is kept (a late lookup of its credential still
/// answers).
pub(crate) const EVICTION_GRACE_MINUTES: i64 = 5;

/// A public, bounded book of one protocol: the struct wrapping a [`Book`], its `Debug`,
/// `Default`, and `new`, `with_capacity`, `capacity`, `len`, `is_empty`.
macro_rules! bounded_book {
    ($(#[$meta:meta])* $name:ident, $offer:ty, $grant:ty, $token:ty, $what:literal, $path:literal) => {
        $(#[$meta])*
        pub struct $name {
            book: $crate::protocols::book::Book<$offer, $grant, $token>,
        }

        impl std::fmt::Debug for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, concat!(stringify!($name), "({} ", $what, ")"), self.book.len())
            }
        }

        impl Default for $name {
            fn default() -> Self {
                $name::new()
            }
        }

        impl $name {
            #[doc = concat!("An empty book of [`DEFAULT_BOOK_CAPACITY`](crate::protocols::DEFAULT_BOOK_CAPACITY) ", $what, ".")]
            pub fn new() -> $name {
                $name::with_capacity($crate::protocols::book::DEFAULT_BOOK_CAPACITY)
            }

            #[doc = concat!("An empty book of at most `capacity` ", $what, " (at least one).")]
            ///
            #[doc = concat!("```\nlet book = ", $path, "::with_capacity(1_000);\nassert_eq!(book.capacity(), 1_000);\nassert!(book.is_empty());\n```")]
            pub fn with_capacity(capacity: usize) -> $name {
                $name {
                    book: $crate::protocols::book::Book::new(capacity),
                }
            }

            #[doc = concat!("The most ", $what, " it remembers.")]
            pub fn capacity(&self) -> usize {
                self.book.capacity()
            }

            #[doc = concat!("How many ", $what, " it remembers now.")]
            pub fn len(&self) -> usize {
                self.book.len()
            }

            /// Whether it remembers none.
            pub fn is_empty(&self) -> bool {
                self.len() == 0
            }
        }
    };
}
pub(crate) use bounded_book;

/// A credential issued for a payment, known by a reference that reveals nothing of it.
pub(crate) trait Issued: Clone {
    /// The reference.
    fn reference(&self) -> &str;
}

struct Entry<R, G> {
    offer: R,
    grant: G,
    snapshot: CartSnapshot,
    expires: DateTime<Utc>,
    /// (reference, idempotency key) of each credential issued for it.
    issued: Vec<(String, String)>,
}

struct Inner<R, G, T> {
    by_payment: HashMap<String, Entry<R, G>>,
    by_snapshot: HashMap<SnapshotId, String>,
    issued: HashMap<String, (T, Money)>,
    by_key: HashMap<String, String>,
}

/// The shared book of one protocol: `R` the offer, `G` its grant, `T` the issued credential.
pub(crate) struct Book<R, G, T> {
    inner: Mutex<Inner<R, G, T>>,
    capacity: usize,
}

impl<R: Clone, G: Clone, T: Issued> Book<R, G, T> {
    /// An empty book of at most `capacity` payments (at least one).
    pub(crate) fn new(capacity: usize) -> Self {
        Book {
            inner: Mutex::new(Inner {
                by_payment: HashMap::new(),
                by_snapshot: HashMap::new(),
                issued: HashMap::new(),
                by_key: HashMap::new(),
            }),
            capacity: capacity.max(1),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner<R, G, T>> {
        // A poisoned lock only means another thread panicked while holding it; every update
        // leaves the maps consistent.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// How many payments it remembers.
    pub(crate) fn len(&self) -> usize {
        self.lock().by_payment.len()
    }

    /// The capacity.
    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    /// The grant and snapshot of payment `id`, made once with `make` (grant, snapshot, and
    /// when the offer expires). When the book is full, entries expired (with the grace) at
    /// `now` are evicted first; if none is, the new payment is refused.
    pub(crate) fn entry(
        &self,
        id: &str,
        offer: &R,
        now: DateTime<Utc>,
        make: impl FnOnce() -> Result<(G, CartSnapshot, DateTime<Utc>), OfferError>,
    ) -> Result<(G, CartSnapshot), OfferError> {
        if let Some(e) = self.lock().by_payment.get(id) {
            return Ok((e.grant.clone(), e.snapshot.clone()));
        }
        let (grant, snapshot, expires) = make()?;
        let mut b = self.lock();
        if let Some(e) = b.by_payment.get(id) {
            // Made meanwhile by another task: theirs is the one.
            return Ok((e.grant.clone(), e.snapshot.clone()));
        }
        if b.by_payment.len() >= self.capacity {
            evict_expired(&mut b, now);
            if b.by_payment.len() >= self.capacity {
                return Err(OfferError::Capacity {
                    capacity: self.capacity,
                });
            }
        }
        b.by_snapshot.insert(snapshot.id(), id.to_owned());
        b.by_payment.insert(
            id.to_owned(),
            Entry {
                offer: offer.clone(),
                grant: grant.clone(),
                snapshot: snapshot.clone(),
                expires,
                issued: Vec::new(),
            },
        );
        Ok((grant, snapshot))
    }

    /// The offer and grant of the payment whose snapshot is `id`.
    pub(crate) fn for_snapshot(&self, id: &SnapshotId) -> Option<(R, G)> {
        let b = self.lock();
        let key = b.by_snapshot.get(id)?;
        b.by_payment
            .get(key)
            .map(|e| (e.offer.clone(), e.grant.clone()))
    }

    /// Records `token`, issued for the payment of snapshot `snapshot` under engine key `key`.
    fn record(&self, snapshot: &SnapshotId, key: &str, token: T, amount: Money) {
        let mut b = self.lock();
        let reference = token.reference().to_owned();
        if let Some(payment) = b.by_snapshot.get(snapshot).cloned()
            && let Some(e) = b.by_payment.get_mut(&payment)
        {
            e.issued.push((reference.clone(), key.to_owned()));
        }
        b.issued.insert(reference.clone(), (token, amount));
        b.by_key.insert(key.to_owned(), reference);
    }

    /// The credential issued under `reference`.
    pub(crate) fn issued(&self, reference: &str) -> Option<T> {
        self.lock().issued.get(reference).map(|(t, _)| t.clone())
    }

    /// The provider's lookup: the credential issued under a reference or an engine key.
    pub(crate) fn lookup(&self, lookup: &Lookup) -> Result<Option<ProviderReport>, ProviderError> {
        let b = self.lock();
        let reference = match lookup {
            Lookup::Reference(r) => Some(r.as_str().to_owned()),
            Lookup::Key(k) | Lookup::KeySubmitted { key: k, .. } => {
                b.by_key.get(k.as_str()).cloned()
            }
        };
        match reference.and_then(|r| b.issued.get(&r)) {
            Some((token, amount)) => report(token.reference(), *amount).map(Some),
            None => Ok(None),
        }
    }
}

fn evict_expired<R, G, T>(b: &mut Inner<R, G, T>, now: DateTime<Utc>) {
    let grace = Duration::minutes(EVICTION_GRACE_MINUTES);
    let gone: Vec<String> = b
        .by_payment
        .iter()
        .filter(|(_, e)| {
            e.expires
                .checked_add_signed(grace)
                .is_some_and(|t| t <= now)
        })
        .map(|(id, _)| id.clone())
        .collect();
    for id in gone {
        if let Some(e) = b.by_payment.remove(&id) {
            b.by_snapshot.remove(&e.snapshot.id());
            for (reference, key) in e.issued {
                b.issued.remove(&reference);
                b.by_key.remove(&key);
            }
        }
    }
}

/// A captured report of `amount` under `reference` (a 402 credential is spent when issued).
pub(crate) fn report(reference: &str, amount: Money) -> Result<ProviderReport, ProviderError> {
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

/// A refusal of a call the agent's side of a 402 payment cannot make (capture, void, refund).
pub(crate) fn refuse(message: &str) -> Result<ProviderReport, ProviderError> {
    Err(ProviderError::Invalid {
        message: message.to_owned(),
    })
}

/// The provider's authorization for both protocols: the offer and grant of the request's
/// snapshot (none: nothing is issued), the amount exactly the grant's (`amount_of`), then
/// `issue` bounded by `deadline` (past it: [`ProviderError::Ambiguous`], the engine keeps the
/// hold and never issues a second time), and the credential recorded for lookups.
pub(crate) async fn authorize_with<R, G, T, Fut>(
    book: &Book<R, G, T>,
    request: &AuthorizeRequest,
    deadline: StdDuration,
    what: &str,
    amount_of: fn(&G) -> Money,
    issue: impl FnOnce(R, G) -> Fut,
) -> Result<ProviderReport, ProviderError>
where
    R: Clone,
    G: Clone,
    T: Issued,
    Fut: Future<Output = Result<T, ProviderError>>,
{
    let Some((offer, grant)) = book.for_snapshot(&request.snapshot_id) else {
        return Err(ProviderError::Invalid {
            message: format!("no {what} for this snapshot: nothing is issued without one"),
        });
    };
    if request.amount != amount_of(&grant) {
        return Err(ProviderError::Invalid {
            message: format!("the amount differs from the {what}"),
        });
    }
    let token = within(deadline, issue(offer, grant)).await?;
    book.record(
        &request.snapshot_id,
        request.key.as_str(),
        token.clone(),
        request.amount,
    );
    report(token.reference(), request.amount)
}

/// `f`, or [`ProviderError::Ambiguous`] once `deadline` has passed (the credential may have
/// been issued: the engine treats it as an ambiguous authorization). Runtime-free: the timer
/// is a thread parked on a condition variable, woken early when `f` ends first.
pub(crate) async fn within<T>(
    deadline: StdDuration,
    f: impl Future<Output = Result<T, ProviderError>>,
) -> Result<T, ProviderError> {
    let timer = Timer::start(deadline)?;
    let mut f = pin!(f);
    let done = std::future::poll_fn(|cx| {
        if let Poll::Ready(v) = f.as_mut().poll(cx) {
            return Poll::Ready(Some(v));
        }
        if timer.fired(cx.waker()) {
            return Poll::Ready(None);
        }
        Poll::Pending
    })
    .await;
    done.unwrap_or_else(|| {
        Err(ProviderError::Ambiguous {
            message: format!(
                "no answer within the provider's deadline of {} ms: the credential may have \
                 been issued",
                deadline.as_millis()
            ),
        })
    })
}

#[derive(Default)]
struct TimerState {
    fired: bool,
    cancelled: bool,
    waker: Option<Waker>,
}

/// A one-shot timer on its own thread. Dropping it ends the thread at once.
struct Timer {
    state: Arc<(Mutex<TimerState>, Condvar)>,
}

impl Timer {
    fn start(after: StdDuration) -> Result<Timer, ProviderError> {
        let state = Arc::new((Mutex::new(TimerState::default()), Condvar::new()));
        let shared = state.clone();
        std::thread::Builder::new()
            .name("agent-mandate-402-deadline".into())
            .spawn(move || {
                let (lock, cvar) = &*shared;
                let guard = lock.lock().unwrap_or_else(PoisonError::into_inner);
                // The condition variable measures the wait (not a clock read of this crate).
                let (mut st, _) = cvar
                    .wait_timeout_while(guard, after, |st| !st.cancelled)
                    .unwrap_or_else(PoisonError::into_inner);
                if !st.cancelled {
                    st.fired = true;
                    if let Some(w) = st.waker.take() {
                        w.wake();
                    }
                }
            })
            .map_err(|e| ProviderError::Transient {
                message: format!("cannot start the deadline timer: {e}"),
                retry_after: None,
            })?;
        Ok(Timer { state })
    }

    fn fired(&self, waker: &Waker) -> bool {
        let mut st = self.state.0.lock().unwrap_or_else(PoisonError::into_inner);
        if st.fired {
            return true;
        }
        st.waker = Some(waker.clone());
        false
    }
}

impl Drop for Timer {
    fn drop(&mut self) {
        let (lock, cvar) = &*self.state;
        lock.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .cancelled = true;
        cvar.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone)]
    struct Tok(String);
    impl Issued for Tok {
        fn reference(&self) -> &str {
            &self.0
        }
    }

    fn snapshot(n: u32, now: DateTime<Utc>) -> CartSnapshot {
        use crate::domain::{Currency, Mcc};
        use crate::protocols::charge::{ChargeContext, ChargeOffer, Protocol};
        let offer = ChargeOffer {
            protocol: Protocol::Mpp,
            offer_id: format!("offer-{n}"),
            merchant_id: crate::domain::MerchantId::new("api.example.com").unwrap(),
            seller_id: None,
            amount: Money::parse("0.50", Currency::EUR).unwrap(),
            resource: format!("https://api.example.com/{n}"),
            description: None,
            expires_at: Some(now + Duration::minutes(5)),
        };
        let ctx = ChargeContext {
            mcc: Mcc::new("5817").unwrap(),
            region: None,
            default_ttl: Duration::minutes(5),
        };
        offer.cart(&ctx, now).unwrap()
    }

    type TestBook = Book<u32, u32, Tok>;

    fn add(
        book: &TestBook,
        n: u32,
        now: DateTime<Utc>,
        expires: DateTime<Utc>,
    ) -> Result<(u32, CartSnapshot), OfferError> {
        book.entry(&format!("p{n}"), &n, now, || {
            Ok((n, snapshot(n, now), expires))
        })
    }

    #[test]
    fn a_full_book_refuses_new_payments_until_one_has_expired_past_the_grace() {
        let now = crate::domain::examples::now();
        let book = TestBook::new(2);
        let exp = now + Duration::minutes(5);
        add(&book, 1, now, exp).unwrap();
        add(&book, 2, now, exp).unwrap();
        assert_eq!(book.len(), 2);
        // At capacity: a known payment still answers (the same grant, no new entry).
        assert_eq!(add(&book, 1, now, exp).unwrap().0, 1);
        // A third, while both are live: refused, nothing evicted.
        assert_eq!(
            add(&book, 3, now, exp),
            Err(OfferError::Capacity { capacity: 2 })
        );
        // At expiry, and just inside the grace period: still refused.
        let grace = Duration::minutes(EVICTION_GRACE_MINUTES);
        let edge = exp + grace - Duration::seconds(1);
        assert!(add(&book, 3, edge, edge + Duration::minutes(5)).is_err());
        assert_eq!(book.len(), 2);
        // At expiry plus the grace: both are evicted, the new one fits.
        let later = exp + grace;
        let (g, s) = add(&book, 3, later, later + Duration::minutes(5)).unwrap();
        assert_eq!(g, 3);
        assert_eq!(book.len(), 1);
        assert!(book.for_snapshot(&s.id()).is_some());
        assert!(book.for_snapshot(&snapshot(1, now).id()).is_none());
    }

    #[test]
    fn eviction_takes_the_issued_credentials_with_it_and_spares_live_entries() {
        let now = crate::domain::examples::now();
        let book = TestBook::new(2);
        let (_, s1) = add(&book, 1, now, now + Duration::minutes(1)).unwrap();
        let (_, s2) = add(&book, 2, now, now + Duration::hours(1)).unwrap();
        let eur = Money::parse("0.50", crate::domain::Currency::EUR).unwrap();
        book.record(&s1.id(), "key-1", Tok("ref-1".into()), eur);
        book.record(&s2.id(), "key-2", Tok("ref-2".into()), eur);
        let key = |k: &str| Lookup::Key(crate::domain::ProviderKey::new(k).unwrap());
        assert!(book.lookup(&key("key-1")).unwrap().is_some());
        let later = now + Duration::minutes(10);
        add(&book, 3, later, later + Duration::minutes(5)).unwrap();
        // The expired one is gone with its credential; the live one stays.
        assert!(book.issued("ref-1").is_none());
        assert!(book.lookup(&key("key-1")).unwrap().is_none());
        assert!(book.issued("ref-2").is_some());
        assert!(book.lookup(&key("key-2")).unwrap().is_some());
        assert_eq!(book.len(), 2);
        // Full again with live entries: refused.
        assert!(matches!(
            add(&book, 4, later, later + Duration::minutes(5)),
            Err(OfferError::Capacity { .. })
        ));
    }

    fn block_on<F: Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn a_slow_future_is_cut_off_as_ambiguous_and_a_fast_one_is_not() {
        let slow = block_on(within(StdDuration::from_millis(50), async {
            tokio::time::sleep(StdDuration::from_secs(5)).await;
            Ok::<_, ProviderError>(1)
        }));
        assert!(
            matches!(slow, Err(ProviderError::Ambiguous { .. })),
            "{slow:?}"
        );
        let fast = block_on(within(StdDuration::from_secs(5), async {
            Ok::<_, ProviderError>(2)
        }));
        assert_eq!(fast.unwrap(), 2);
        // Its errors are its own.
        let err = block_on(within(StdDuration::from_secs(5), async {
            Err::<u8, _>(ProviderError::Invalid {
                message: "no".into(),
            })
        }));
        assert!(matches!(err, Err(ProviderError::Invalid { .. })));
    }

    #[test]
    fn within_needs_no_async_runtime_timer() {
        // A runtime without a time driver: the deadline still fires.
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let r = rt.block_on(within(
            StdDuration::from_millis(20),
            std::future::pending::<Result<(), ProviderError>>(),
        ));
        assert!(matches!(r, Err(ProviderError::Ambiguous { .. })));
    }
}
