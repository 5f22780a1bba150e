//! An [`AuditSink`] that also delivers every event to a webhook, signed, at least once.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::domain::{AuditEvent, AuditHash, AuditKind, ChainedEvent};
use crate::ports::{AuditError, AuditReceipt, AuditSink, Clock, Secret};

use super::outbox::Outbox;
use super::signature::{
    message_id, secret_key, sign, SignatureError, ID_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER,
};

/// Where and how to deliver. The secret is a [`Secret`]: never in `Debug`, errors or logs.
///
/// ```
/// use agent_mandate::adapters::http::WebhookConfig;
/// use agent_mandate::ports::Secret;
/// // `whsec_` and the base64 of a 24-byte key (Standard Webhooks).
/// let secret = || Secret::new("whsec_MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3");
/// let config = WebhookConfig::new("https://audit.example/hooks", secret()).unwrap();
/// assert!(!format!("{config:?}").contains("MDEyMzQ1"));
/// let with_token = WebhookConfig::new("https://audit.example/h?token=t0k", secret()).unwrap();
/// assert!(!format!("{with_token:?}").contains("t0k"));
/// assert!(WebhookConfig::new("not a url", secret()).is_err());
/// // An empty or short key is refused, and so is a secret that is not base64.
/// use agent_mandate::adapters::http::WebhookConfigError;
/// assert_eq!(
///     WebhookConfig::new("https://audit.example/hooks", Secret::new("whsec_MTIz")).unwrap_err(),
///     WebhookConfigError::WeakSecret { min_bytes: 16 }
/// );
/// assert!(matches!(
///     WebhookConfig::new("https://audit.example/hooks", Secret::new("whsec_0123456789abcdef_")),
///     Err(WebhookConfigError::Invalid { field: "secret", .. })
/// ));
/// ```
#[derive(Clone)]
pub struct WebhookConfig {
    url: reqwest::Url,
    secret: Secret,
    timeout: Duration,
    initial_backoff: Duration,
    max_backoff: Duration,
    batch: usize,
    idle_poll: Duration,
    dead_letter_after: Option<u32>,
}

impl fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The URL without user info, query or fragment (a receiver token may hide there).
        let shown = format!(
            "{}://{}{}",
            self.url.scheme(),
            self.url.host_str().unwrap_or_default(),
            self.url.port().map(|p| format!(":{p}")).unwrap_or_default()
        ) + self.url.path();
        f.debug_struct("WebhookConfig")
            .field("url", &shown)
            .field("secret", &self.secret)
            .field("timeout", &self.timeout)
            .field("initial_backoff", &self.initial_backoff)
            .field("max_backoff", &self.max_backoff)
            .field("batch", &self.batch)
            .field("idle_poll", &self.idle_poll)
            .field("dead_letter_after", &self.dead_letter_after)
            .finish()
    }
}

/// A webhook configuration failure (names the field).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WebhookConfigError {
    /// A field is unusable.
    #[error("invalid webhook configuration: {field}: {message}")]
    Invalid {
        /// The field (`url`, `secret`).
        field: &'static str,
        /// Why.
        message: String,
    },
    /// The secret's key is empty or shorter than
    /// [`MIN_SECRET_BYTES`](super::signature::MIN_SECRET_BYTES).
    #[error("invalid webhook configuration: secret: the key must be at least {min_bytes} bytes")]
    WeakSecret {
        /// The minimum length, in bytes.
        min_bytes: usize,
    },
    /// The HTTP client cannot be built.
    #[error("cannot build the HTTP client: {message}")]
    Client {
        /// Why.
        message: String,
    },
}

impl WebhookConfig {
    /// Delivers to `url` (http or https) signed with `secret`, in the Standard Webhooks form
    /// `whsec_<base64 of the key>` (see [`super::signature`]; a secret that is not base64 is
    /// [`WebhookConfigError::Invalid`] naming `secret`) with a key of at least
    /// [`MIN_SECRET_BYTES`](super::signature::MIN_SECRET_BYTES) bytes (an empty or shorter
    /// key is [`WebhookConfigError::WeakSecret`]). Defaults: timeout 10 s, backoff from
    /// 200 ms doubling up to 60 s, batches of 100, an idle check every 5 s, an event
    /// dead-lettered after 5 permanent refusals.
    pub fn new(url: &str, secret: Secret) -> Result<WebhookConfig, WebhookConfigError> {
        let invalid = |field, message: String| WebhookConfigError::Invalid { field, message };
        let url =
            reqwest::Url::parse(url).map_err(|e| invalid("url", format!("not a URL: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(invalid("url", "must be http or https".into()));
        }
        match secret_key(&secret) {
            Ok(_) => {}
            Err(SignatureError::WeakSecret { min_bytes }) => {
                return Err(WebhookConfigError::WeakSecret { min_bytes })
            }
            Err(e) => return Err(invalid("secret", e.to_string())),
        }
        Ok(WebhookConfig {
            url,
            secret,
            timeout: Duration::from_secs(10),
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(60),
            batch: 100,
            idle_poll: Duration::from_secs(5),
            dead_letter_after: Some(5),
        })
    }

    /// The timeout of one delivery.
    pub fn with_timeout(mut self, timeout: Duration) -> WebhookConfig {
        self.timeout = timeout;
        self
    }

    /// The first retry delay and the cap of its doubling.
    pub fn with_backoff(mut self, initial: Duration, max: Duration) -> WebhookConfig {
        self.initial_backoff = initial;
        self.max_backoff = max.max(initial);
        self
    }

    /// Dead-letters an event after `refusals` permanent refusals by the receiver (see
    /// [`is_permanent_refusal`]; at least 1), so the events after it are delivered.
    pub fn with_dead_letter_after(mut self, refusals: u32) -> WebhookConfig {
        self.dead_letter_after = Some(refusals.max(1));
        self
    }

    /// Never dead-letters: an event the receiver refuses waits, and every later event waits
    /// behind it, until the receiver accepts it.
    pub fn without_dead_letter(mut self) -> WebhookConfig {
        self.dead_letter_after = None;
        self
    }

    /// How often the delivery loop looks at the outbox when nothing wakes it.
    pub fn with_idle_poll(mut self, every: Duration) -> WebhookConfig {
        self.idle_poll = every;
        self
    }

    /// The backoff before retry number `attempt` (0-based): `initial * 2^attempt`, capped.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX);
        self.initial_backoff
            .checked_mul(factor)
            .unwrap_or(self.max_backoff)
            .min(self.max_backoff)
    }
}

/// Whether the receiver's `status` refuses the event itself, for good: a 4xx other than 401,
/// 403 and 404 (they say the endpoint or its credentials are wrong, which would refuse every
/// event alike), 408 (timeout) and 429 (rate limit). 413 (too large), 400 and 422 are
/// permanent. A 5xx is never permanent.
pub fn is_permanent_refusal(status: u16) -> bool {
    (400..500).contains(&status) && !matches!(status, 401 | 403 | 404 | 408 | 429)
}

/// An event the sink gave up on (see [`WebhookAuditSink::dead_letters`]). Carries no body,
/// URL or secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// The event's sequence number.
    pub seq: u64,
    /// Its chain hash.
    pub event_hash: AuditHash,
    /// The receiver's last status for it.
    pub status: u16,
    /// How many permanent refusals it got.
    pub refusals: u32,
    /// The sequence number of the [`AuditKind::WebhookDeadLettered`] marker in the trail.
    pub marker_seq: u64,
}

/// Why a delivery pass stopped. Never carries the secret.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DeliveryError {
    /// The outbox or the inner sink failed.
    #[error(transparent)]
    Audit(#[from] AuditError),
    /// The receiver answered without a 2xx: the event stays pending.
    #[error("event {seq}: the receiver answered HTTP {status}")]
    Rejected {
        /// The event.
        seq: u64,
        /// The status.
        status: u16,
    },
    /// The receiver could not be reached or did not answer in time: the event stays pending
    /// (it may have arrived: delivery is at least once).
    #[error("event {seq}: the receiver is unreachable: {message}")]
    Unreachable {
        /// The event.
        seq: u64,
        /// Why.
        message: String,
    },
    /// An event cannot be serialised (names the seq).
    #[error("event {seq} cannot be serialised: {message}")]
    Encode {
        /// The event.
        seq: u64,
        /// Why.
        message: String,
    },
}

/// An [`AuditSink`] that keeps the chain of record in an inner sink and delivers every event
/// to a webhook, signed (see [`super::signature`]), at least once and in sequence order.
///
/// `append` appends to the inner sink first, then enqueues the chained event in the
/// [`Outbox`], then wakes the delivery loop. An event is marked delivered only after a 2xx;
/// a failed delivery is retried with exponential backoff: nothing is lost.
///
/// Dead letters: delivery is in sequence order, so one event the receiver can never accept
/// (a 413 for a body over its limit) would hold back every later event. After
/// [`WebhookConfig::with_dead_letter_after`] permanent refusals of the same event
/// ([`is_permanent_refusal`]: a 4xx other than 401, 403, 404, 408 and 429; default 5) the
/// sink appends an [`AuditKind::WebhookDeadLettered`] marker naming its seq, hash, status and
/// refusal count to the trail (so it is in the chain of record and delivered to the receiver
/// like any other event), moves the event to the outbox's dead letters
/// ([`Outbox::dead_lettered`] keeps it), reports it in [`WebhookAuditSink::dead_letters`] and
/// [`Delivered::dead_lettered`], and goes on with the next event. A marker that is itself
/// refused for good is dead-lettered without a marker of its own (no loop). Refusals are
/// counted in memory: a restart counts again from zero (the marker is appended before the
/// event leaves the queue, so a crash in between may repeat the marker, never lose it). A crash
/// between the append and the enqueue is covered by [`WebhookAuditSink::recover`] (run by
/// [`WebhookAuditSink::new`]), which enqueues every inner event above the outbox's last seq.
/// `read`, `head` and `verify` are the inner sink's.
///
/// Delivery runs in [`WebhookAuditSink::spawn_delivery`] (a tokio task) or explicitly with
/// [`WebhookAuditSink::deliver_pending`] / [`WebhookAuditSink::flush`].
pub struct WebhookAuditSink {
    inner: Arc<dyn AuditSink>,
    outbox: Arc<dyn Outbox>,
    client: reqwest::Client,
    config: WebhookConfig,
    clock: Arc<dyn Clock>,
    /// Set when an enqueue failed after the inner append: recover before delivering.
    needs_recovery: AtomicBool,
    wake: tokio::sync::Notify,
    /// Serialises append + enqueue, so the outbox receives seqs in order.
    appending: tokio::sync::Mutex<()>,
    /// One delivery pass at a time (keeps the receiver's view in seq order).
    delivering: tokio::sync::Mutex<()>,
    /// The event at the head of the queue and its permanent refusals so far.
    refusals: std::sync::Mutex<Option<(u64, u32)>>,
    /// The events dead-lettered since the sink was built.
    dead_letters: std::sync::Mutex<Vec<DeadLetter>>,
}

impl fmt::Debug for WebhookAuditSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookAuditSink")
            .field("inner", &self.inner)
            .field("outbox", &self.outbox)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// What a delivery pass did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Delivered {
    /// Events acknowledged with a 2xx in this pass.
    pub delivered: usize,
    /// Events dead-lettered in this pass (see [`WebhookAuditSink::dead_letters`]).
    pub dead_lettered: usize,
}

impl WebhookAuditSink {
    /// Wraps `inner`, and recovers: every inner event above `outbox.last_enqueued()` is
    /// enqueued.
    pub async fn new(
        inner: Arc<dyn AuditSink>,
        outbox: Arc<dyn Outbox>,
        config: WebhookConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Arc<WebhookAuditSink>, WebhookError> {
        let client = super::tls::client_builder()
            .map_err(|e| {
                WebhookError::Config(WebhookConfigError::Client {
                    message: e.to_string(),
                })
            })?
            .timeout(config.timeout)
            .connect_timeout(config.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| {
                WebhookError::Config(WebhookConfigError::Client {
                    message: e.to_string(),
                })
            })?;
        let sink = Arc::new(WebhookAuditSink {
            inner,
            outbox,
            client,
            config,
            clock,
            needs_recovery: AtomicBool::new(false),
            wake: tokio::sync::Notify::new(),
            appending: tokio::sync::Mutex::new(()),
            delivering: tokio::sync::Mutex::new(()),
            refusals: std::sync::Mutex::new(None),
            dead_letters: std::sync::Mutex::new(Vec::new()),
        });
        sink.recover().await?;
        Ok(sink)
    }

    /// Enqueues every inner event with a seq above the outbox's last; returns how many.
    pub async fn recover(&self) -> Result<u64, AuditError> {
        let _guard = self.appending.lock().await;
        self.recover_locked().await
    }

    async fn recover_locked(&self) -> Result<u64, AuditError> {
        let mut next = self
            .outbox
            .last_enqueued()
            .await?
            .unwrap_or(0)
            .saturating_add(1);
        let mut count = 0u64;
        loop {
            let page = self.inner.read(next, 256).await?;
            if page.is_empty() {
                break;
            }
            for event in &page {
                self.outbox.enqueue(event).await?;
                count = count.saturating_add(1);
                next = event.seq.saturating_add(1);
            }
        }
        self.needs_recovery.store(false, Ordering::SeqCst);
        if count > 0 {
            self.wake.notify_one();
        }
        Ok(count)
    }

    /// Enqueues inner events `first..=last`; on failure, flags a recovery (the inner sink is
    /// the record; the next delivery pass re-enqueues).
    async fn enqueue_range(&self, first: u64, last: u64) {
        let mut ok = true;
        let mut next = first;
        while ok && next <= last {
            let limit = usize::try_from(last - next + 1)
                .unwrap_or(usize::MAX)
                .min(256);
            match self.inner.read(next, limit).await {
                Ok(page) if !page.is_empty() => {
                    for event in &page {
                        if self.outbox.enqueue(event).await.is_err() {
                            ok = false;
                            break;
                        }
                        next = event.seq.saturating_add(1);
                    }
                }
                Ok(_) | Err(_) => ok = false,
            }
        }
        if !ok {
            self.needs_recovery.store(true, Ordering::SeqCst);
        }
        self.wake.notify_one();
    }

    /// One delivery pass: posts pending events lowest seq first, marking each delivered on a
    /// 2xx; stops at the first failure (the event stays pending, later ones wait behind it),
    /// except that an event refused for good often enough is dead-lettered and the pass goes
    /// on (see the type's docs).
    pub async fn deliver_pending(&self) -> Result<Delivered, DeliveryError> {
        let _guard = self.delivering.lock().await;
        if self.needs_recovery.load(Ordering::SeqCst) {
            self.recover().await?;
        }
        let mut done = Delivered::default();
        loop {
            let batch = self.outbox.pending(self.config.batch).await?;
            if batch.is_empty() {
                return Ok(done);
            }
            for event in &batch {
                match self.post(event).await {
                    Ok(()) => {
                        self.outbox.mark_delivered(event.seq).await?;
                        done.delivered = done.delivered.saturating_add(1);
                    }
                    Err(DeliveryError::Rejected { seq, status })
                        if is_permanent_refusal(status) =>
                    {
                        let refusals = self.count_refusal(seq);
                        match self.config.dead_letter_after {
                            Some(limit) if refusals >= limit => {
                                self.dead_letter(event, status, refusals).await?;
                                done.dead_lettered = done.dead_lettered.saturating_add(1);
                            }
                            _ => return Err(DeliveryError::Rejected { seq, status }),
                        }
                    }
                    Err(e) => return Err(e),
                }
            }
        }
    }

    /// Counts one more permanent refusal of `seq` (the count restarts for another seq).
    fn count_refusal(&self, seq: u64) -> u32 {
        // A poisoned lock still holds a consistent pair.
        let mut r = self.refusals.lock().unwrap_or_else(|e| e.into_inner());
        let n = match *r {
            Some((s, n)) if s == seq => n.saturating_add(1),
            _ => 1,
        };
        *r = Some((seq, n));
        n
    }

    /// Appends the marker (unless `event` is itself a marker), then moves `event` to the
    /// outbox's dead letters and reports it.
    async fn dead_letter(
        &self,
        event: &ChainedEvent,
        status: u16,
        refusals: u32,
    ) -> Result<(), DeliveryError> {
        let is_marker = matches!(
            event.event().map(|e| e.kind),
            Ok(AuditKind::WebhookDeadLettered { .. })
        );
        let marker_seq = if is_marker {
            0
        } else {
            let marker = AuditEvent {
                at: self.clock.now(),
                kind: AuditKind::WebhookDeadLettered {
                    seq: event.seq,
                    event_hash: event.hash,
                    status,
                    refusals,
                },
            };
            self.append(&marker).await?.seq
        };
        self.outbox.mark_dead_lettered(event.seq).await?;
        *self.refusals.lock().unwrap_or_else(|e| e.into_inner()) = None;
        self.dead_letters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(DeadLetter {
                seq: event.seq,
                event_hash: event.hash,
                status,
                refusals,
                marker_seq,
            });
        Ok(())
    }

    /// The events dead-lettered since this sink was built, oldest first (the durable list is
    /// the outbox's [`Outbox::dead_lettered`]; the trail holds a marker for each).
    pub fn dead_letters(&self) -> Vec<DeadLetter> {
        self.dead_letters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Delivery passes with exponential backoff until the outbox is empty or `attempts`
    /// passes failed; returns the last failure then.
    pub async fn flush(&self, attempts: u32) -> Result<Delivered, DeliveryError> {
        let mut total = Delivered::default();
        let mut failures = 0u32;
        loop {
            match self.deliver_pending().await {
                Ok(d) => {
                    total.delivered = total.delivered.saturating_add(d.delivered);
                    total.dead_lettered = total.dead_lettered.saturating_add(d.dead_lettered);
                    return Ok(total);
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    if failures >= attempts {
                        return Err(e);
                    }
                    tokio::time::sleep(self.config.backoff(failures - 1)).await;
                }
            }
        }
    }

    /// Starts the background delivery loop on the current tokio runtime: a pass whenever an
    /// event is appended (or every idle poll), retried with exponential backoff after a
    /// failure. Stops when the returned handle is dropped or stopped.
    pub fn spawn_delivery(self: &Arc<Self>) -> DeliveryLoop {
        let sink = Arc::clone(self);
        let task = tokio::spawn(async move {
            let mut failures = 0u32;
            loop {
                match sink.deliver_pending().await {
                    Ok(_) => {
                        failures = 0;
                        let _ =
                            tokio::time::timeout(sink.config.idle_poll, sink.wake.notified()).await;
                    }
                    Err(_) => {
                        tokio::time::sleep(sink.config.backoff(failures)).await;
                        failures = failures.saturating_add(1);
                    }
                }
            }
        });
        DeliveryLoop { task }
    }

    /// The outbox (to inspect what waits).
    pub fn outbox(&self) -> &Arc<dyn Outbox> {
        &self.outbox
    }

    async fn post(&self, event: &ChainedEvent) -> Result<(), DeliveryError> {
        let seq = event.seq;
        let body = serde_json::to_vec(event).map_err(|e| DeliveryError::Encode {
            seq,
            message: e.to_string(),
        })?;
        let timestamp = self.clock.now().timestamp();
        // The configuration refused a short secret, so signing cannot fail; a failure would
        // still be typed, never a panic.
        let id = message_id(seq, &event.hash);
        let signature = sign(&self.config.secret, &id, timestamp, &body).map_err(|e| {
            DeliveryError::Encode {
                seq,
                message: e.to_string(),
            }
        })?;
        let result = self
            .client
            .post(self.config.url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(ID_HEADER, id)
            .header(TIMESTAMP_HEADER, timestamp.to_string())
            .header(SIGNATURE_HEADER, signature)
            .body(body)
            .send()
            .await;
        match result {
            Ok(response) if response.status().is_success() => Ok(()),
            Ok(response) => Err(DeliveryError::Rejected {
                seq,
                status: response.status().as_u16(),
            }),
            Err(e) => {
                let mut message = if e.is_timeout() {
                    "timed out".to_owned()
                } else if e.is_connect() {
                    "cannot connect".to_owned()
                } else {
                    "connection failed".to_owned()
                };
                let mut source = std::error::Error::source(&e);
                while let Some(s) = source {
                    message.push_str(": ");
                    message.push_str(&s.to_string());
                    source = s.source();
                }
                Err(DeliveryError::Unreachable { seq, message })
            }
        }
    }
}

/// A failure to build a [`WebhookAuditSink`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WebhookError {
    /// The configuration.
    #[error(transparent)]
    Config(#[from] WebhookConfigError),
    /// The recovery read of the inner sink or the outbox.
    #[error(transparent)]
    Audit(#[from] AuditError),
}

/// The background delivery loop; dropping it stops the loop.
#[derive(Debug)]
pub struct DeliveryLoop {
    task: tokio::task::JoinHandle<()>,
}

impl DeliveryLoop {
    /// Stops the loop (an in-flight delivery is abandoned; its event stays pending).
    pub fn stop(self) {}
}

impl Drop for DeliveryLoop {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[async_trait]
impl AuditSink for WebhookAuditSink {
    async fn append(&self, event: &AuditEvent) -> Result<AuditReceipt, AuditError> {
        let _guard = self.appending.lock().await;
        let receipt = self.inner.append(event).await?;
        self.enqueue_range(receipt.seq, receipt.seq).await;
        Ok(receipt)
    }

    async fn append_all(&self, events: &[AuditEvent]) -> Result<Option<AuditReceipt>, AuditError> {
        let _guard = self.appending.lock().await;
        let before = self.inner.head().await?.map_or(0, |h| h.seq);
        let last = self.inner.append_all(events).await?;
        if let Some(r) = last {
            self.enqueue_range(before.saturating_add(1), r.seq).await;
        }
        Ok(last)
    }

    async fn read(&self, from_seq: u64, limit: usize) -> Result<Vec<ChainedEvent>, AuditError> {
        self.inner.read(from_seq, limit).await
    }

    async fn head(&self) -> Result<Option<AuditReceipt>, AuditError> {
        self.inner.head().await
    }

    async fn verify(&self) -> Result<Option<AuditReceipt>, AuditError> {
        self.inner.verify().await
    }

    async fn indexed(
        &self,
        subject: &crate::domain::AuditSubject,
        from_seq: u64,
        limit: usize,
    ) -> Result<Option<Vec<ChainedEvent>>, AuditError> {
        self.inner.indexed(subject, from_seq, limit).await
    }
}
