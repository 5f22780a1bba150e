//! The delegate payment operation: headers, signature, body, idempotency, then the card in the
//! vault and the allowance as a single-use mandate.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Duration, SecondsFormat, Utc};
use sha2::{Digest as _, Sha256};

use super::error::{AcpError, SUPPORTED_VERSIONS};
use super::replay::{ReplayCache, Seen, DEFAULT_REPLAY_CACHE_CAPACITY};
use super::request::{CardNumberType, CheckedAllowance, DelegatePaymentRequest};
use super::signature::{PlatformKey, DEFAULT_TIMESTAMP_WINDOW_SECONDS};
use crate::domain::{
    json_fingerprint, ActionSet, Actor, ActorId, ActorKind, AmountScope, AuditEvent, AuditKind,
    Budgets, BuyerId, CartBinding, ConfirmationRule, CredentialRef, CurrencyScope, EvidenceRef,
    IdempotencyKey, Lifecycle, MandateId, MandateScope, MandateSpec, MandateStatus, Mcc,
    MerchantScope, PaymentAction, Principal, Validity,
};
use crate::engine::{CreateMandate, Engine, EngineError};
use crate::ports::{
    Begin, CredentialDisplay, CredentialKind, IdempotencyScope, NewCredential, StoredResult, Write,
};

/// The idempotency operation name of a delegation (the record's scope is the caller's
/// principal, this operation and the key: "authenticated identity + endpoint").
pub const DELEGATE_OPERATION: &str = "acp_delegate_payment";

/// The prefix of every vault token id: `vt_` and the vault's credential reference.
pub const TOKEN_PREFIX: &str = "vt_";

/// The longest body read.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// The largest integer the body may carry (2^53 - 1): beyond it JSON readers disagree.
const MAX_EXACT_INTEGER: i64 = (1 << 53) - 1;

/// How the ACP service runs. Built with [`AcpConfig::new`] (signed requests, the default and
/// the only choice for a real service) or [`AcpConfig::unsigned_for_testing`], and `with_*`.
///
/// Every platform key is bound to the platform principal that may use it: a request is
/// verified only with the keys of the principal the host authenticated.
///
/// ```
/// use agent_mandate::acp::{AcpConfig, PlatformKey};
/// use agent_mandate::domain::Principal;
/// let platform = Principal::Agent("platform_1".parse().unwrap());
/// let key = PlatformKey::ed25519(&[7u8; 32]).unwrap();
/// let config = AcpConfig::new("acp-vault".parse().unwrap(), "5999".parse().unwrap(), platform, key)
///     .with_timestamp_window(chrono::Duration::seconds(60))
///     .with_rate_limit(100, chrono::Duration::seconds(60));
/// assert_eq!(config.service_actor().as_str(), "acp-vault");
/// assert!(config.verifies_signatures());
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct AcpConfig {
    service_actor: ActorId,
    platform_keys: Vec<(Principal, PlatformKey)>,
    timestamp_window: Duration,
    replay_cache_capacity: usize,
    rate_limit: Option<(u32, Duration)>,
    capture: bool,
    mcc: Mcc,
    snapshot_ttl: Duration,
}

impl AcpConfig {
    /// The service runs as the system actor `service_actor`: it creates the mandates, owns the
    /// stored cards and executes the redemptions (the host's principal for it is
    /// `Principal::System(service_actor)`); `mcc` is the merchant category code of the
    /// redeeming merchants' cart snapshots (a checkout session names none). Every delegation
    /// must carry a valid `Signature` and a fresh `Timestamp` by a key of the calling
    /// platform: `platform` may sign with `key` (add platforms and rotated keys with
    /// [`AcpConfig::with_platform_key`]). No rate limit, capture on redemption, snapshots
    /// valid 15 minutes when the session gives no expiry.
    pub fn new(
        service_actor: ActorId,
        mcc: Mcc,
        platform: Principal,
        key: PlatformKey,
    ) -> AcpConfig {
        AcpConfig {
            platform_keys: vec![(platform, key)],
            ..AcpConfig::unsigned_for_testing(service_actor, mcc)
        }
    }

    /// **For tests and demonstrations only: signatures are not checked.** A configuration
    /// with no platform key, so any caller the host authenticated may delegate with its bearer
    /// token alone, and a `Signature` header is ignored. A service that takes card numbers
    /// from the network must use [`AcpConfig::new`]. Adding a key with
    /// [`AcpConfig::with_platform_key`] turns verification on.
    ///
    /// ```
    /// use agent_mandate::acp::AcpConfig;
    /// let config = AcpConfig::unsigned_for_testing("acp-vault".parse().unwrap(), "5999".parse().unwrap());
    /// assert!(!config.verifies_signatures());
    /// ```
    pub fn unsigned_for_testing(service_actor: ActorId, mcc: Mcc) -> AcpConfig {
        AcpConfig {
            service_actor,
            platform_keys: Vec::new(),
            timestamp_window: Duration::seconds(DEFAULT_TIMESTAMP_WINDOW_SECONDS),
            replay_cache_capacity: DEFAULT_REPLAY_CACHE_CAPACITY,
            rate_limit: None,
            capture: true,
            mcc,
            snapshot_ttl: Duration::minutes(15),
        }
    }

    /// Lets `platform` sign with `key` too (another platform, or a rotated key).
    pub fn with_platform_key(mut self, platform: Principal, key: PlatformKey) -> AcpConfig {
        self.platform_keys.push((platform, key));
        self
    }

    /// The accepted distance between `Timestamp` and the clock (at least one second).
    pub fn with_timestamp_window(mut self, window: Duration) -> AcpConfig {
        self.timestamp_window = window.max(Duration::seconds(1));
        self
    }

    /// How many accepted signatures are remembered to refuse their replay (at least one;
    /// default 100 000). When every remembered signature is still inside its window, new
    /// signed requests are refused with 429 and a retry hint.
    pub fn with_replay_cache_capacity(mut self, capacity: usize) -> AcpConfig {
        self.replay_cache_capacity = capacity.max(1);
        self
    }

    /// At most `max` delegations per caller in each fixed window of `per` (429 beyond).
    pub fn with_rate_limit(mut self, max: u32, per: Duration) -> AcpConfig {
        self.rate_limit = Some((max, per.max(Duration::seconds(1))));
        self
    }

    /// Whether a redemption captures in the same PSP call (default) or only authorizes.
    pub fn with_capture(mut self, capture: bool) -> AcpConfig {
        self.capture = capture;
        self
    }

    /// The merchant category code of the redeeming merchants' snapshots.
    pub fn with_mcc(mut self, mcc: Mcc) -> AcpConfig {
        self.mcc = mcc;
        self
    }

    /// How long a redemption's snapshot stays valid when the session gives no `expires_at`.
    pub fn with_snapshot_ttl(mut self, ttl: Duration) -> AcpConfig {
        self.snapshot_ttl = ttl.max(Duration::seconds(1));
        self
    }

    /// The service's actor id.
    pub fn service_actor(&self) -> &ActorId {
        &self.service_actor
    }

    /// The platform keys, each with the principal that may use it.
    pub fn platform_keys(&self) -> &[(Principal, PlatformKey)] {
        &self.platform_keys
    }

    /// Whether delegations must be signed (false only for
    /// [`AcpConfig::unsigned_for_testing`] with no key added).
    pub fn verifies_signatures(&self) -> bool {
        !self.platform_keys.is_empty()
    }

    /// Whether redemptions capture.
    pub fn capture(&self) -> bool {
        self.capture
    }

    /// The snapshots' MCC.
    pub fn mcc(&self) -> Mcc {
        self.mcc
    }

    /// The snapshots' default validity.
    pub fn snapshot_ttl(&self) -> Duration {
        self.snapshot_ttl
    }

    fn keys_of<'a>(&'a self, caller: &'a Principal) -> impl Iterator<Item = &'a PlatformKey> {
        self.platform_keys
            .iter()
            .filter(move |(p, _)| p == caller)
            .map(|(_, k)| k)
    }
}

/// The headers of a request, by lower-case name. A header sent twice is refused (one meaning
/// per input).
///
/// ```
/// use agent_mandate::acp::RequestHeaders;
/// let h = RequestHeaders::new().with("API-Version", "2026-04-17").with("Idempotency-Key", "k1");
/// assert_eq!(h.get("api-version"), Some(&b"2026-04-17"[..]));
/// ```
#[derive(Debug, Clone, Default)]
pub struct RequestHeaders {
    values: BTreeMap<String, Vec<u8>>,
    repeated: Option<String>,
}

impl RequestHeaders {
    /// No headers.
    pub fn new() -> RequestHeaders {
        RequestHeaders::default()
    }

    /// Adds a header.
    pub fn with(mut self, name: &str, value: impl AsRef<[u8]>) -> RequestHeaders {
        self.insert(name, value.as_ref());
        self
    }

    /// Adds a header (a second value of one name is remembered and refused).
    pub fn insert(&mut self, name: &str, value: &[u8]) {
        let name = name.to_ascii_lowercase();
        match self.values.entry(name) {
            std::collections::btree_map::Entry::Occupied(e) => {
                self.repeated.get_or_insert(e.key().clone());
            }
            std::collections::btree_map::Entry::Vacant(e) => {
                e.insert(value.to_vec());
            }
        }
    }

    /// A header's value.
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.values
            .get(&name.to_ascii_lowercase())
            .map(Vec::as_slice)
    }
}

/// A delegation done: the answer's fields.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Delegated {
    /// The vault token id (`vt_...`).
    pub token: String,
    /// When the token was created (the first request's time, also on a replay).
    pub created: DateTime<Utc>,
    /// The request's metadata with `merchant_id` and `idempotency_key` added.
    pub metadata: BTreeMap<String, String>,
    /// Whether this answer is a replay of an earlier request with the same key and body.
    pub replayed: bool,
    /// The mandate the allowance became.
    pub mandate_id: MandateId,
    /// The buyer it is under.
    pub buyer_id: BuyerId,
}

impl Delegated {
    /// The published success body: `{"id", "created", "metadata"}`.
    pub fn body(&self) -> serde_json::Value {
        serde_json::json!({
            "id": self.token,
            "created": self.created.to_rfc3339_opts(SecondsFormat::AutoSi, true),
            "metadata": self.metadata,
        })
    }
}

/// The Agentic Commerce Protocol service: delegations in, redemptions through the engine.
#[derive(Debug, Clone)]
pub struct AcpService {
    engine: Engine,
    config: AcpConfig,
    windows: Arc<Mutex<RateWindows>>,
    signatures: Arc<Mutex<ReplayCache>>,
}

/// Per caller: the start of its current rate window and the requests counted in it.
type RateWindows = HashMap<String, (DateTime<Utc>, u32)>;

/// The SHA-256 hex of `parts` joined by new lines.
pub(crate) fn hash_hex(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            h.update(b"\n");
        }
        h.update(p.as_bytes());
    }
    hex::encode(h.finalize())
}

/// The mandate a vault token's allowance became: `acp-` and 40 hex digits of the SHA-256 of
/// the credential reference.
pub fn mandate_for(reference: &CredentialRef) -> Result<MandateId, crate::domain::ValidationError> {
    MandateId::new(format!("acp-{}", &hash_hex(&[reference.as_str()])[..40]))
}

/// The credential reference a token names, if it has the token form.
pub fn credential_of(token: &str) -> Option<CredentialRef> {
    token
        .strip_prefix(TOKEN_PREFIX)
        .and_then(|r| CredentialRef::new(r).ok())
}

/// The evidence reference binding a mandate to a checkout session: `acp:checkout_session:`
/// and the id, or `acp:checkout_session:sha256:` and its hash when the id cannot be one.
pub fn session_ref(session_id: &str) -> Result<EvidenceRef, crate::domain::ValidationError> {
    EvidenceRef::new(format!("acp:checkout_session:{session_id}")).or_else(|_| {
        EvidenceRef::new(format!(
            "acp:checkout_session:sha256:{}",
            hash_hex(&[session_id])
        ))
    })
}

fn engine_error(e: EngineError) -> AcpError {
    match e {
        EngineError::IdempotencyConflict { .. } => AcpError::IdempotencyConflict,
        e if e.http_status() == 503 => AcpError::Unavailable {
            reason: e.to_string(),
        },
        e => AcpError::Internal {
            reason: e.to_string(),
        },
    }
}

/// The evidence naming a delegation on its mandate: `acp:delegate_payment:` and 40 hex digits
/// of the hash of the caller and key.
fn delegation_ref(h: &str) -> Result<EvidenceRef, AcpError> {
    EvidenceRef::new(format!("acp:delegate_payment:{}", &h[..40])).map_err(internal)
}

fn internal(e: impl std::fmt::Display) -> AcpError {
    AcpError::Internal {
        reason: e.to_string(),
    }
}

fn unavailable(e: impl std::fmt::Display) -> AcpError {
    AcpError::Unavailable {
        reason: e.to_string(),
    }
}

impl AcpService {
    /// A service over `engine`.
    pub fn new(engine: Engine, config: AcpConfig) -> AcpService {
        AcpService {
            engine,
            config,
            windows: Arc::new(Mutex::new(HashMap::new())),
            signatures: Arc::new(Mutex::new(ReplayCache::default())),
        }
    }

    /// The engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The configuration.
    pub fn config(&self) -> &AcpConfig {
        &self.config
    }

    pub(crate) fn service_principal(&self) -> Principal {
        Principal::System(self.config.service_actor.clone())
    }

    pub(crate) fn service_actor(&self) -> Actor {
        Actor {
            id: self.config.service_actor.clone(),
            kind: ActorKind::System,
        }
    }

    /// The idempotency record of a delegation by `caller` under `key`.
    pub fn delegation_scope(caller: &Principal, key: &IdempotencyKey) -> IdempotencyScope {
        IdempotencyScope {
            actor_id: caller.scope_id(),
            operation: DELEGATE_OPERATION.to_owned(),
            key: key.clone(),
        }
    }

    fn rate_limit(&self, caller: &Principal, now: DateTime<Utc>) -> Result<(), AcpError> {
        let Some((max, per)) = self.config.rate_limit else {
            return Ok(());
        };
        let mut windows = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        if windows.len() > 100_000 {
            windows.retain(|_, (start, _)| now - *start < per);
        }
        let entry = windows
            .entry(caller.scope_id().to_string())
            .or_insert((now, 0));
        if now - entry.0 >= per || now < entry.0 {
            *entry = (now, 0);
        }
        if entry.1 >= max {
            let left = (entry.0 + per - now).num_milliseconds().max(1000);
            return Err(AcpError::RateLimited {
                retry_after: std::time::Duration::from_millis(u64::try_from(left).unwrap_or(1000)),
            });
        }
        entry.1 += 1;
        Ok(())
    }

    /// Checks the headers in the order the answer's precedence needs: the caller, the API
    /// version, the content type, the request id, the idempotency key. Returns the key and
    /// its header text.
    fn check_headers(
        &self,
        caller: Option<&Principal>,
        headers: &RequestHeaders,
    ) -> Result<(Principal, IdempotencyKey, String), AcpError> {
        let caller = caller.ok_or_else(|| AcpError::Unauthorized {
            reason: "no authenticated principal".into(),
        })?;
        let auth = headers.get("authorization").unwrap_or_default();
        let token = auth
            .strip_prefix(b"Bearer ")
            .filter(|t| !t.is_empty() && t.iter().all(u8::is_ascii_graphic));
        if token.is_none() {
            return Err(AcpError::Unauthorized {
                reason: "Authorization is not `Bearer <token>`".into(),
            });
        }
        if let Some(name) = &headers.repeated {
            return Err(AcpError::malformed(
                name.clone(),
                "the header is sent more than once",
            ));
        }
        let version = headers.get("api-version").ok_or(AcpError::MissingVersion)?;
        if !SUPPORTED_VERSIONS.iter().any(|v| v.as_bytes() == version) {
            let text = String::from_utf8_lossy(&version[..version.len().min(64)]).into_owned();
            return Err(AcpError::UnsupportedVersion { version: text });
        }
        let content_type = headers.get("content-type").unwrap_or_default();
        if !json_media_type(content_type) {
            return Err(AcpError::malformed(
                "Content-Type",
                "Content-Type must be application/json",
            ));
        }
        if let Some(id) = headers.get("request-id")
            && (id.is_empty() || id.len() > 255 || !id.iter().all(u8::is_ascii_graphic))
        {
            return Err(AcpError::malformed(
                "Request-Id",
                "Request-Id must be 1 to 255 visible ASCII characters",
            ));
        }
        let raw = headers
            .get("idempotency-key")
            .ok_or(AcpError::IdempotencyKeyRequired)?;
        if raw.is_empty() || raw.len() > 255 {
            return Err(AcpError::InvalidIdempotencyKey {
                reason: "must be 1 to 255 characters",
            });
        }
        if !raw.iter().all(u8::is_ascii_graphic) {
            return Err(AcpError::InvalidIdempotencyKey {
                reason: "must be visible ASCII characters",
            });
        }
        let text = String::from_utf8_lossy(raw);
        let key = if text.len() <= crate::domain::MAX_ID_LEN {
            IdempotencyKey::new(text.as_ref())
        } else {
            IdempotencyKey::new(format!("sha256:{}", hash_hex(&[text.as_ref()])))
        }
        .map_err(|_| AcpError::InvalidIdempotencyKey {
            reason: "is not a usable key",
        })?;
        Ok((
            caller.clone(),
            key,
            String::from_utf8_lossy(raw).into_owned(),
        ))
    }

    /// Runs one delegate payment request: `caller` is the principal the host authenticated
    /// (`None`: 401), `buyer` the buyer the host knows the platform acts for (default: a buyer
    /// id derived from the caller and the key, one per delegation), `headers` and `body` as
    /// received.
    pub async fn delegate(
        &self,
        caller: Option<&Principal>,
        buyer: Option<&BuyerId>,
        headers: &RequestHeaders,
        body: &[u8],
    ) -> Result<Delegated, AcpError> {
        let (caller, key, key_text) = self.check_headers(caller, headers)?;
        let now = self.engine.ports().clock.now();
        self.rate_limit(&caller, now)?;
        if body.len() > MAX_BODY_BYTES {
            return Err(AcpError::malformed(
                "$",
                format!("the body is larger than {MAX_BODY_BYTES} bytes"),
            ));
        }
        let value: serde_json::Value = serde_json::from_slice(body)
            .map_err(|e| AcpError::malformed("$", format!("the body is not JSON: {e}")))?;
        if self.config.verifies_signatures() {
            self.verify_signature(&caller, &key, headers, &value, now)?;
        } else if let Some(ts) = headers.get("timestamp") {
            // Without a key the timestamp proves nothing, but it must still be a time.
            std::str::from_utf8(ts)
                .ok()
                .filter(|t| t.len() <= 64)
                .and_then(|t| crate::domain::parse_time(t).ok())
                .ok_or_else(|| AcpError::malformed("Timestamp", "Timestamp must be RFC 3339"))?;
        }
        let request = DelegatePaymentRequest::parse(body)?;
        // A refusal that depends only on the clock (the allowance or the card expired since)
        // may be the retry of a delegation already done: the key is looked up before it is
        // answered, and a recorded delegation replays.
        let (checked, late) = match request.check(now) {
            Ok(c) => (c, None),
            Err(e) => match request.check(DateTime::<Utc>::MIN_UTC) {
                Ok(c) => (c, Some(e)),
                Err(_) => return Err(e),
            },
        };
        if request.allowance.max_amount > MAX_EXACT_INTEGER {
            return Err(AcpError::invalid(
                "$.allowance.max_amount",
                "max_amount is more than 2^53 - 1 minor units",
            ));
        }
        let fingerprint = match buyer {
            None => json_fingerprint(&value),
            // The host's buyer is part of the request: another buyer under the same key is
            // another request (a conflict), never a half-replayed one.
            Some(b) => {
                json_fingerprint(&serde_json::json!({"acp_buyer": b.as_str(), "body": value}))
            }
        }
        .map_err(|e| {
            AcpError::invalid(
                "$",
                format!("the body has a number without one canonical form: {e}"),
            )
        })?;

        let store = &self.engine.ports().store;
        let scope = Self::delegation_scope(&caller, &key);
        let begin = store
            .begin_idempotent(&scope, &fingerprint, now, self.engine.config().lease())
            .await
            .map_err(unavailable)?;
        let h = hash_hex(&[scope.actor_id.as_str(), key.as_str()]);
        let buyer = match buyer {
            Some(b) => b.clone(),
            None => BuyerId::new(format!("acp-buyer-{}", &h[..32])).map_err(internal)?,
        };
        let fence = match begin {
            Begin::Conflict { .. } => return Err(AcpError::IdempotencyConflict),
            Begin::InFlight { retry_after } => {
                return Err(AcpError::IdempotencyInFlight { retry_after });
            }
            Begin::Replay(_) => None,
            Begin::Started(fence) => {
                if let Some(e) = late {
                    // A new request after all: refused, and the key stays free.
                    let _ = store.abandon_idempotent(&fence).await;
                    return Err(e);
                }
                Some(fence)
            }
        };
        let result = self
            .run(
                &request,
                &checked,
                &buyer,
                &caller,
                &h,
                now,
                fence.is_none(),
            )
            .await;
        match (&result, &fence) {
            (Ok(done), Some(fence)) => {
                match store
                    .complete_idempotent(
                        fence,
                        &StoredResult::Mandate(done.mandate_id.clone()),
                        now + self.engine.config().retention(),
                    )
                    .await
                {
                    Ok(()) => {}
                    // The lease lapsed while this request ran and a retry of it took the
                    // record over: the retry ran the same keyed steps to the same token and
                    // completes the record; this answer is the same.
                    Err(crate::ports::StoreError::Fenced { .. }) => {}
                    Err(e) => return Err(unavailable(e)),
                }
            }
            (Err(_), Some(fence)) => {
                // Nothing lasting to answer from: the key may be used again (5xx are never
                // cached; a vault or mandate step that did run replays under its own key).
                let _ = store.abandon_idempotent(fence).await;
            }
            _ => {}
        }
        let mut done = result?;
        done.metadata = request.metadata.clone();
        done.metadata
            .insert("merchant_id".into(), request.allowance.merchant_id.clone());
        done.metadata.insert("idempotency_key".into(), key_text);
        Ok(done)
    }

    /// Verifies the signature with the caller's own keys, then refuses a signature accepted
    /// before with another key or caller (a replay).
    fn verify_signature(
        &self,
        caller: &Principal,
        key: &IdempotencyKey,
        headers: &RequestHeaders,
        value: &serde_json::Value,
        now: DateTime<Utc>,
    ) -> Result<(), AcpError> {
        let verified = super::signature::verify(
            self.config.keys_of(caller),
            headers.get("signature"),
            headers.get("timestamp"),
            value,
            now,
            self.config.timestamp_window,
        )?;
        let seen = self
            .signatures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .check_and_record(
                &verified.message,
                caller.scope_id().as_str(),
                key.as_str(),
                now,
                verified.until,
                self.config.replay_cache_capacity,
            );
        match seen {
            Seen::First | Seen::SameRequest => Ok(()),
            Seen::Replayed => Err(AcpError::Unauthorized {
                reason: "the signature was accepted before with another Idempotency-Key or \
                         caller, or is older than what the replay cache still holds"
                    .into(),
            }),
            Seen::Full { retry_after } => Err(AcpError::RateLimited { retry_after }),
        }
    }

    /// Stores the card and creates the mandate (each idempotent under a key derived from the
    /// delegation's), or on a replay reads them back. A first run also records which platform
    /// delegated.
    #[expect(clippy::too_many_arguments, reason = "one private step of `delegate`")]
    async fn run(
        &self,
        request: &DelegatePaymentRequest,
        checked: &CheckedAllowance,
        buyer: &BuyerId,
        caller: &Principal,
        h: &str,
        now: DateTime<Utc>,
        replay: bool,
    ) -> Result<Delegated, AcpError> {
        let principal = self.service_principal();
        let credential = self.credential(request, checked, buyer);
        let ckey = IdempotencyKey::new(format!("acp-c-{}", &h[..40])).map_err(internal)?;
        let stored = self
            .engine
            .store_credential(&principal, &ckey, credential)
            .await
            .map_err(|e| match e {
                EngineError::Vault(crate::ports::VaultError::Invalid { field }) => {
                    AcpError::invalid(format!("$.payment_method.{field}"), "the vault refuses it")
                }
                e => engine_error(e),
            })?;
        let reference = stored.value.reference;
        let token = format!("{TOKEN_PREFIX}{reference}");
        let mandate_id = mandate_for(&reference).map_err(internal)?;
        let created = if replay {
            self.delegated_mandate(&mandate_id, h)
                .await?
                .ok_or_else(|| {
                    internal(format!("replayed delegation without mandate {mandate_id}"))
                })?
        } else {
            // A retry after a failure between the mandate and the key's completion finds
            // the mandate made for this delegation and answers it: its spec carries the first
            // run's time, so creating it again would be another command.
            let created = match self.delegated_mandate(&mandate_id, h).await? {
                Some(created) => created,
                None => {
                    let spec = self.mandate_spec(request, checked, buyer, &mandate_id, h, now)?;
                    let mkey =
                        IdempotencyKey::new(format!("acp-m-{}", &h[..40])).map_err(internal)?;
                    match self
                        .engine
                        .create_mandate(&principal, &CreateMandate::new(mkey, spec))
                        .await
                    {
                        Ok(m) => m.value.lifecycle().created_at,
                        // Another run of this delegation (its lease lapsed while this one
                        // waited on the store) may have made it first: then it is the answer.
                        Err(e) => match self.delegated_mandate(&mandate_id, h).await? {
                            Some(created) => created,
                            None => return Err(engine_error(e)),
                        },
                    }
                }
            };
            self.record_platform(caller, &reference, &mandate_id, now)
                .await?;
            created
        };
        Ok(Delegated {
            token,
            created,
            metadata: BTreeMap::new(),
            replayed: replay,
            mandate_id,
            buyer_id: buyer.clone(),
        })
    }

    /// The creation time of the mandate this delegation made, if it made one (the mandate of
    /// its credential, by the service, with the delegation's evidence).
    async fn delegated_mandate(
        &self,
        mandate_id: &MandateId,
        h: &str,
    ) -> Result<Option<DateTime<Utc>>, AcpError> {
        let Some(m) = self
            .engine
            .ports()
            .store
            .mandate(mandate_id)
            .await
            .map_err(unavailable)?
        else {
            return Ok(None);
        };
        let evidence = delegation_ref(h)?;
        if m.actor() != &self.service_actor() || !m.spec().evidence_refs.contains(&evidence) {
            return Err(internal(format!(
                "mandate {mandate_id} is not this delegation's"
            )));
        }
        Ok(Some(m.lifecycle().created_at))
    }

    /// The audit event naming the platform that delegated (I14: who put this card in the
    /// vault). Written by every run that stored, so a retry after a failure writes it too.
    async fn record_platform(
        &self,
        caller: &Principal,
        reference: &CredentialRef,
        mandate_id: &MandateId,
        now: DateTime<Utc>,
    ) -> Result<(), AcpError> {
        let event = AuditEvent {
            at: now,
            kind: AuditKind::Delegated {
                protocol: DELEGATE_OPERATION.to_owned(),
                credential_ref: reference.clone(),
                mandate_id: mandate_id.clone(),
                by: caller.clone(),
            },
        };
        self.engine
            .ports()
            .store
            .write_audited(Write::Events, &[event])
            .await
            .map_err(unavailable)?;
        let _ = self.engine.flush_audit().await;
        Ok(())
    }

    fn credential(
        &self,
        request: &DelegatePaymentRequest,
        checked: &CheckedAllowance,
        buyer: &BuyerId,
    ) -> NewCredential {
        let pm = &request.payment_method;
        let (exp_month, exp_year) = checked.card_expiry.unwrap_or_else(|| {
            let e = checked.expires_at;
            (
                u8::try_from(chrono::Datelike::month(&e)).unwrap_or(12),
                u16::try_from(chrono::Datelike::year(&e)).unwrap_or(2199),
            )
        });
        let (kind, cvc) = match pm.card_number_type {
            CardNumberType::NetworkToken => (
                CredentialKind::NetworkToken,
                pm.cryptogram.clone().or_else(|| pm.cvc.clone()),
            ),
            CardNumberType::Fpan if pm.is_virtual == Some(true) => {
                (CredentialKind::VirtualCard, pm.cvc.clone())
            }
            CardNumberType::Fpan => (CredentialKind::Card, pm.cvc.clone()),
        };
        NewCredential {
            kind,
            owner: self.config.service_actor.clone(),
            buyer_id: buyer.clone(),
            secret: pm.number.clone(),
            cvc,
            display: CredentialDisplay {
                brand: pm
                    .display_brand
                    .clone()
                    .unwrap_or_else(|| "card".to_owned()),
                last4: checked.last4.clone(),
                exp_month,
                exp_year,
                funding: pm.display_card_funding_type.funding(),
            },
        }
    }

    fn mandate_spec(
        &self,
        request: &DelegatePaymentRequest,
        checked: &CheckedAllowance,
        buyer: &BuyerId,
        mandate_id: &MandateId,
        h: &str,
        now: DateTime<Utc>,
    ) -> Result<MandateSpec, AcpError> {
        let max = checked.max_amount;
        let evidence = vec![
            session_ref(&request.allowance.checkout_session_id).map_err(internal)?,
            delegation_ref(h)?,
        ];
        Ok(MandateSpec {
            id: mandate_id.clone(),
            buyer_id: buyer.clone(),
            actor: self.service_actor(),
            parent_id: None,
            scope: MandateScope {
                merchants: MerchantScope::Single {
                    merchant_id: checked.merchant_id.clone(),
                },
                mccs: None,
                cart: CartBinding::Open {
                    allowed_skus: None,
                    max_line_items: None,
                },
                amount: AmountScope {
                    max_amount: max,
                    includes_shipping: true,
                    includes_tax: true,
                    allow_lower_amount: true,
                    allow_partial_capture: false,
                    max_payment_attempts: None,
                },
                currency: CurrencyScope {
                    currency: max.currency(),
                    conversion_allowed: false,
                },
                budgets: Budgets {
                    per_transaction: Some(max),
                    windows: Vec::new(),
                    lifetime: Some(max),
                },
                actions: [PaymentAction::Authorize, PaymentAction::Capture]
                    .into_iter()
                    .collect::<ActionSet>(),
                confirmation: ConfirmationRule::never(),
                max_uses: Some(1),
                validity: Validity {
                    not_before: now,
                    expires_at: checked.expires_at,
                },
            },
            lifecycle: Lifecycle::new(MandateStatus::Active, now),
            evidence_refs: evidence,
        })
    }
}

/// `application/json`, optionally with `charset=utf-8`, in any case.
fn json_media_type(value: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(value) else {
        return false;
    };
    let mut parts = text.split(';').map(str::trim);
    let media = parts.next().unwrap_or_default();
    if !media.eq_ignore_ascii_case("application/json") {
        return false;
    }
    parts.all(|p| {
        p.split_once('=').is_some_and(|(k, v)| {
            k.trim().eq_ignore_ascii_case("charset")
                && v.trim().trim_matches('"').eq_ignore_ascii_case("utf-8")
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_types() {
        assert!(json_media_type(b"application/json"));
        assert!(json_media_type(b"Application/JSON; charset=UTF-8"));
        assert!(!json_media_type(b"text/plain"));
        assert!(!json_media_type(b"application/json; charset=latin1"));
        assert!(!json_media_type(b""));
    }

    #[test]
    fn tokens_name_their_credential_and_mandate() {
        let r = CredentialRef::new("cred_0123").unwrap();
        let t = format!("{TOKEN_PREFIX}{r}");
        assert_eq!(credential_of(&t), Some(r.clone()));
        assert_eq!(credential_of("cred_0123"), None);
        assert!(mandate_for(&r).unwrap().as_str().starts_with("acp-"));
        assert_ne!(
            session_ref("a b").unwrap(),
            session_ref("a  b").unwrap(),
            "hashed ids stay distinct"
        );
    }
}
