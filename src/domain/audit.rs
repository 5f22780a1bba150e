//! Audit events and the hash chain that links them (I9).
//!
//! An event is serialised once, to its JSON `body`; the chain hashes those exact bytes, so a
//! store that keeps the body as text verifies without re-serialising anything:
//!
//! ```text
//! hash(n) = SHA-256("agent-mandate/audit/v1\n" || n || "\n" || hex(hash(n-1)) || "\n" || body(n))
//! ```
//!
//! with `hash(0)` of the first event linking to 32 zero bytes. Editing a body, dropping an event
//! or swapping two is found by [`verify_chain`], which names the first bad event. Events carry
//! identifiers, amounts, codes and messages: never a credential (I10).

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::attempt::{AttemptStatus, Operation};
use super::canonical::{RequestDigest, SnapshotId};
use super::decision::{Blocker, Evidence, Outcome};
use super::ids::{
    ActorId, AttemptId, BuyerId, ConfirmationId, CredentialRef, IdempotencyKey, MandateId,
    MerchantId, OrderId, ProviderRef,
};
use super::mandate::MandateStatus;
use super::money::Money;
use super::principal::Principal;
use super::scope::PaymentAction;

/// A party the kill switch applies to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum Party {
    /// An actor (agent, human or system).
    Actor(ActorId),
    /// A buyer.
    Buyer(BuyerId),
    /// Every credential an actor holds, and every credential presented by a payer the actor
    /// is accountable for (a token's copy of the agent's card): the credentials' kill
    /// switch ([`crate::domain::accountable_actor`]). The actor's mandates stay usable with
    /// no credential.
    Credentials(ActorId),
}

/// The limit a threshold event is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(
    feature = "json-schema",
    derive(schemars::JsonSchema),
    schemars(rename = "LimitKind")
)]
#[serde(remote = "Self")]
#[serde(rename_all = "snake_case")]
pub enum LimitKind {
    /// The lifetime total.
    Lifetime,
    /// A rolling window's amount.
    WindowAmount {
        /// Its length.
        window_seconds: u64,
    },
    /// A rolling window's payment count.
    WindowCount {
        /// Its length.
        window_seconds: u64,
    },
}

/// What a hold event did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum HoldAction {
    /// Placed on the mandate and every ancestor.
    Placed,
    /// Committed as spend (the rest released).
    Committed,
    /// Released.
    Released,
    /// A refund recorded against it.
    Refunded,
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(
    feature = "json-schema",
    derive(schemars::JsonSchema),
    schemars(rename = "AuditKind")
)]
#[serde(remote = "Self")]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum AuditKind {
    /// An authority decision, with every blocker.
    Decision {
        /// The command that asked.
        command: String,
        /// Who asked.
        actor_id: ActorId,
        /// Under which mandate.
        mandate_id: MandateId,
        /// For what.
        action: PaymentAction,
        /// How much.
        amount: Money,
        /// For which snapshot.
        snapshot_id: SnapshotId,
        /// The answer.
        outcome: Outcome,
        /// Every blocker.
        blockers: Vec<Blocker>,
        /// Evidence.
        evidence: Vec<Evidence>,
        /// Digest of the request.
        request_digest: RequestDigest,
        /// The attempt it is about, if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        attempt_id: Option<AttemptId>,
    },
    /// A mandate was created (or derived: `parent_id`).
    MandateCreated {
        /// The mandate.
        mandate_id: MandateId,
        /// Its parent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        parent_id: Option<MandateId>,
        /// Its buyer.
        buyer_id: BuyerId,
        /// Its actor.
        actor_id: ActorId,
        /// Its status.
        status: MandateStatus,
        /// Who created it.
        #[serde(deserialize_with = "super::principal::recorded")]
        by: Principal,
    },
    /// A mandate changed status.
    MandateTransition {
        /// The mandate.
        mandate_id: MandateId,
        /// Before.
        from: MandateStatus,
        /// After.
        to: MandateStatus,
        /// The lifecycle event.
        event: String,
        /// Who.
        #[serde(deserialize_with = "super::principal::recorded")]
        by: Principal,
        /// Why, if given.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// A buyer confirmation was recorded.
    ConfirmationRecorded {
        /// The confirmation.
        confirmation_id: ConfirmationId,
        /// Its buyer.
        buyer_id: BuyerId,
        /// The snapshot it names.
        snapshot_id: SnapshotId,
        /// The mandate it is given under.
        mandate_id: MandateId,
    },
    /// The buyer declined to confirm a payment: the agent's request for this snapshot under
    /// this mandate is refused (`CONFIRMATION_DECLINED`) until the buyer confirms it after all.
    ConfirmationDeclined {
        /// The recorded answer (a confirmation that grants no action).
        confirmation_id: ConfirmationId,
        /// Its buyer.
        buyer_id: BuyerId,
        /// The snapshot declined.
        snapshot_id: SnapshotId,
        /// The mandate the agent asked under.
        mandate_id: MandateId,
        /// Why, in the buyer's words.
        reason: String,
    },
    /// The kill switch was turned on or off for a party.
    Suspension {
        /// The party.
        party: Party,
        /// On (`true`) or off.
        suspended: bool,
        /// Who.
        #[serde(deserialize_with = "super::principal::recorded")]
        by: Principal,
        /// Why.
        reason: String,
    },
    /// An actor was suspended automatically after consecutive blocked requests.
    AutoSuspended {
        /// The actor.
        actor_id: ActorId,
        /// How many requests in a row were blocked.
        consecutive_blocks: u32,
    },
    /// Loop detection blocked a payment: the resource of the request's one-line cart was paid
    /// for `max_payments` times within `window_seconds` (a control event, like an automatic
    /// suspension).
    LoopDetected {
        /// The actor that asked.
        actor_id: ActorId,
        /// The mandate.
        mandate_id: MandateId,
        /// The merchant.
        merchant_id: MerchantId,
        /// The snapshot refused (its line is the resource).
        snapshot_id: SnapshotId,
        /// The loop limit's count.
        max_payments: u32,
        /// The loop limit's window.
        window_seconds: u64,
    },
    /// Spend crossed a share of a limit.
    Threshold {
        /// The mandate.
        mandate_id: MandateId,
        /// Which limit.
        limit: LimitKind,
        /// Used after the payment (amount, or count as a plain number).
        used: String,
        /// The limit.
        max: String,
        /// The share crossed, in percent.
        percent: u8,
    },
    /// A payment attempt changed state.
    AttemptTransition {
        /// The attempt.
        attempt_id: AttemptId,
        /// Before.
        from: AttemptStatus,
        /// After.
        to: AttemptStatus,
        /// The event.
        event: String,
        /// The PSP's reference.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        provider_ref: Option<ProviderRef>,
        /// Authorized so far (absent: nothing).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        authorized: Option<Money>,
        /// Captured so far (absent: nothing).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        captured: Option<Money>,
        /// Refunded so far (absent: nothing).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        refunded: Option<Money>,
        /// The decline code.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        decline_code: Option<String>,
    },
    /// A budget hold changed.
    Hold {
        /// The attempt that owns the hold.
        attempt_id: AttemptId,
        /// What happened.
        action: HoldAction,
        /// The amount.
        amount: Money,
        /// The mandates it counts against (leaf first).
        mandate_ids: Vec<MandateId>,
        /// For refunds: the refund policy applied.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        policy: Option<String>,
    },
    /// An order was committed.
    OrderCommitted {
        /// The order.
        order_id: OrderId,
        /// The attempt it is for.
        attempt_id: AttemptId,
        /// The snapshot bought.
        snapshot_id: SnapshotId,
        /// The amount.
        amount: Money,
    },
    /// An order could not be committed.
    OrderFailed {
        /// The attempt.
        attempt_id: AttemptId,
        /// Why.
        reason: String,
    },
    /// A recovery (void or refund) after a failed order commitment.
    Recovery {
        /// The attempt.
        attempt_id: AttemptId,
        /// Void or refund.
        operation: Operation,
        /// The attempt's state after the recovery call.
        status: AttemptStatus,
        /// Why it was started.
        reason: String,
    },
    /// A credential was stored in the vault (metadata only).
    CredentialStored {
        /// The reference handed out.
        credential_ref: CredentialRef,
        /// Whose it is.
        actor_id: ActorId,
        /// Card brand or token network.
        brand: String,
        /// Last four digits.
        last4: String,
        /// Who stored it.
        #[serde(deserialize_with = "super::principal::recorded")]
        by: Principal,
    },
    /// A protocol endpoint took a payment credential and its allowance from an authenticated
    /// platform (the Agentic Commerce Protocol's delegate payment): which platform put the
    /// credential in the vault and which mandate the allowance became.
    Delegated {
        /// The protocol operation (`acp_delegate_payment`).
        protocol: String,
        /// The credential stored.
        credential_ref: CredentialRef,
        /// The mandate the allowance became.
        mandate_id: MandateId,
        /// The platform that delegated, as the host authenticated it.
        #[serde(deserialize_with = "super::principal::recorded")]
        by: Principal,
    },
    /// A command on an attempt was asked by someone other than the attempt's actor (its buyer
    /// or an operator): who asked, before anything is sent to the PSP.
    Asked {
        /// The command (`void_payment`, `refund_payment`, `commit_order`).
        command: String,
        /// The attempt.
        attempt_id: AttemptId,
        /// Who asked.
        #[serde(deserialize_with = "super::principal::recorded")]
        by: Principal,
    },
    /// Credentials were revoked.
    CredentialRevoked {
        /// One credential, or every one of `actor_id`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        credential_ref: Option<CredentialRef>,
        /// The actor, when all of theirs were revoked.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        actor_id: Option<ActorId>,
        /// How many.
        count: u32,
    },
    /// The webhook delivery gave up on an event the receiver refused permanently (a 4xx
    /// that says the event itself is unacceptable, such as 413), so the events after it are
    /// delivered. The event stays in the trail of record and in the outbox's dead letters;
    /// this marker is delivered like any other event. Carries no URL and no secret.
    WebhookDeadLettered {
        /// The sequence number of the event that was not delivered.
        seq: u64,
        /// Its chain hash.
        event_hash: AuditHash,
        /// The receiver's last HTTP status for it.
        status: u16,
        /// How many permanent refusals it got.
        refusals: u32,
    },
    /// A scoped payment token was issued (never its value: its id).
    TokenIssued {
        /// The token's id.
        token_id: String,
        /// Its child mandate.
        mandate_id: MandateId,
        /// The mandate it was issued under.
        parent_id: MandateId,
        /// The buyer.
        buyer_id: BuyerId,
        /// The provider that may redeem it.
        provider: ActorId,
        /// Who issued it.
        #[serde(deserialize_with = "super::principal::recorded")]
        by: Principal,
    },
    /// A token was redeemed: the payment attempt that charged it.
    TokenRedeemed {
        /// The token's id.
        token_id: String,
        /// The attempt.
        attempt_id: AttemptId,
        /// The redemption's state (`charged`, `ambiguous`, `refused`).
        state: String,
    },
    /// A redemption was refused before any charge (a token presented by another provider, an
    /// unknown or revoked token...). The token's id only when the token is known.
    TokenRefused {
        /// The token's id, when it names a stored token.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        token_id: Option<String>,
        /// The stable code of why (`TOKEN_WRONG_PROVIDER`, ...).
        code: String,
        /// Who presented it.
        #[serde(deserialize_with = "super::principal::recorded")]
        by: Principal,
        /// How many refusals of the same caller before this one were answered but not
        /// audited one by one (the per-caller bound of the token service); absent when none.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        suppressed: Option<u32>,
    },
    /// A token was revoked (one event per token of a fan-out).
    TokenRevoked {
        /// The token's id.
        token_id: String,
        /// Its child mandate.
        mandate_id: MandateId,
        /// What the revocation selected (`token`, `issuer`, `credential`, `mandate`).
        selector: String,
        /// Whether the PSP was asked to revoke its side.
        psp: bool,
        /// Who revoked it.
        #[serde(deserialize_with = "super::principal::recorded")]
        by: Principal,
    },
    /// A control raised an alert (also handed to the
    /// [`AlertSink`](crate::ports::AlertSink)).
    Alert {
        /// The alert.
        alert: Box<super::alert::Alert>,
    },
    /// A step of a payment's review window: `scheduled` (held, due at `until`), `cancelled`
    /// (by `by`, hold released), `withdrawn` (its authority lapsed in the window: `reason`,
    /// hold released) or `sent` (to the PSP after the window).
    Review {
        /// The attempt.
        attempt_id: AttemptId,
        /// The buyer who may cancel it.
        buyer_id: BuyerId,
        /// `scheduled`, `cancelled`, `withdrawn` or `sent`.
        step: String,
        /// When the window ends (for `scheduled`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        until: Option<DateTime<Utc>>,
        /// Who cancelled it (for `cancelled`).
        #[serde(
            default,
            skip_serializing_if = "Option::is_none",
            deserialize_with = "super::principal::recorded_opt"
        )]
        by: Option<Principal>,
        /// Why it was withdrawn: the blocker codes (for `withdrawn`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// A command was answered from its idempotency record.
    Replay {
        /// The command.
        command: String,
        /// Who.
        actor_id: ActorId,
        /// The key.
        key: IdempotencyKey,
    },
}

/// One audit event before it is chained. Its body is `{"at": <RFC 3339>, "event": {"type": ..,
/// ..}}`, at most [`MAX_EVENT_BODY_BYTES`](super::MAX_EVENT_BODY_BYTES) (64 KiB) long: a
/// larger event is written cut to fit, with a `truncated` marker in its event object
/// ([`Truncation`](super::Truncation)), never dropped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(
    feature = "json-schema",
    derive(schemars::JsonSchema),
    schemars(rename = "AuditEvent")
)]
#[serde(remote = "Self")]
#[serde(deny_unknown_fields)]
pub struct AuditEvent {
    /// When it happened.
    #[serde(serialize_with = "super::canonical::serialize_time")]
    #[serde(deserialize_with = "crate::domain::canonical::time")]
    pub at: DateTime<Utc>,
    /// What happened.
    #[serde(rename = "event")]
    pub kind: AuditKind,
}

impl AuditEvent {
    /// The event's JSON body (what the chain hashes), bounded by
    /// [`MAX_EVENT_BODY_BYTES`](super::MAX_EVENT_BODY_BYTES).
    pub fn to_body(&self) -> String {
        // Serialising these types cannot fail: no map with non-string keys, no failing
        // Serialize impl. Fall back to a marker rather than panic.
        let mut buf = Vec::with_capacity(768);
        match serde_json::to_writer(&mut buf, self) {
            // serde_json writes UTF-8 only.
            Ok(()) => super::event_body::bounded(String::from_utf8(buf).unwrap_or_default()),
            Err(_) => String::from("{\"event\":{\"type\":\"unserializable\"}}"),
        }
    }
}

/// A SHA-256 link of the chain.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct AuditHash(pub [u8; 32]);

impl AuditHash {
    /// The link before the first event: 32 zero bytes.
    pub const GENESIS: AuditHash = AuditHash([0; 32]);

    /// Lower-case hex.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Debug for AuditHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AuditHash({})", self.to_hex())
    }
}

impl fmt::Display for AuditHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl Serialize for AuditHash {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for AuditHash {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        let mut out = [0u8; 32];
        hex::decode_to_slice(s.as_bytes(), &mut out)
            .map_err(|_| serde::de::Error::custom("expected 64 hex digits"))?;
        Ok(AuditHash(out))
    }
}

/// An event in the chain: sequence number (from 1), link to the previous event, its own hash
/// and its body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(
    feature = "json-schema",
    derive(schemars::JsonSchema),
    schemars(rename = "ChainedEvent")
)]
#[serde(remote = "Self")]
pub struct ChainedEvent {
    /// Position in the chain, from 1.
    pub seq: u64,
    /// The previous event's hash ([`AuditHash::GENESIS`] for the first).
    pub prev_hash: AuditHash,
    /// This event's hash.
    pub hash: AuditHash,
    /// The event's JSON body.
    pub body: String,
}

impl ChainedEvent {
    /// Chains `body` after (`seq - 1`, `prev_hash`).
    pub fn link(seq: u64, prev_hash: AuditHash, body: String) -> ChainedEvent {
        let hash = chain_hash(seq, &prev_hash, &body);
        ChainedEvent {
            seq,
            prev_hash,
            hash,
            body,
        }
    }

    /// The event, parsed back from its body.
    pub fn event(&self) -> Result<AuditEvent, serde_json::Error> {
        serde_json::from_str(&self.body)
    }
}

/// The hash of event `seq` with body `body` linked to `prev`.
pub fn chain_hash(seq: u64, prev: &AuditHash, body: &str) -> AuditHash {
    let mut h = Sha256::new();
    h.update(b"agent-mandate/audit/v1\n");
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    let mut v = seq;
    loop {
        i -= 1;
        digits[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    h.update(&digits[i..]);
    h.update(b"\n");
    let mut hexbuf = [0u8; 64];
    // 32 bytes always fit 64 hex digits.
    if hex::encode_to_slice(prev.0, &mut hexbuf).is_ok() {
        h.update(hexbuf);
    }
    h.update(b"\n");
    h.update(body.as_bytes());
    AuditHash(h.finalize().into())
}

/// What is wrong with the first bad event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum ChainFault {
    /// Its body or hash does not match its hash: edited.
    Edited,
    /// Its sequence number skips ahead: the events before it were dropped.
    Missing,
    /// Its sequence number goes back or repeats: reordered or duplicated.
    OutOfOrder,
    /// Its link does not match the previous event's hash.
    BrokenLink,
}

/// The first event that fails verification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[cfg_attr(
    feature = "json-schema",
    derive(schemars::JsonSchema),
    schemars(rename = "ChainBreak")
)]
#[serde(remote = "Self")]
#[error("audit chain broken at event {seq} (expected {expected_seq}): {fault:?}")]
pub struct ChainBreak {
    /// The sequence number the bad event carries.
    pub seq: u64,
    /// The sequence number expected at that position.
    pub expected_seq: u64,
    /// What is wrong.
    pub fault: ChainFault,
}

/// Verifies `events`, which must start at `first_seq` and link to `prev` (use 1 and
/// [`AuditHash::GENESIS`] for a whole chain). Returns the hash of the last event.
///
/// ```
/// use agent_mandate::domain::{verify_chain, AuditHash, ChainedEvent, ChainFault};
/// let a = ChainedEvent::link(1, AuditHash::GENESIS, "{\"n\":1}".into());
/// let b = ChainedEvent::link(2, a.hash, "{\"n\":2}".into());
/// assert!(verify_chain(&[a.clone(), b.clone()], 1, AuditHash::GENESIS).is_ok());
/// let mut edited = b.clone();
/// edited.body = "{\"n\":3}".into();
/// let err = verify_chain(&[a, edited], 1, AuditHash::GENESIS).unwrap_err();
/// assert_eq!((err.seq, err.fault), (2, ChainFault::Edited));
/// ```
pub fn verify_chain(
    events: &[ChainedEvent],
    first_seq: u64,
    prev: AuditHash,
) -> Result<AuditHash, ChainBreak> {
    let mut prev = prev;
    for (expected, e) in (first_seq..).zip(events) {
        let fault = if e.seq > expected {
            Some(ChainFault::Missing)
        } else if e.seq < expected {
            Some(ChainFault::OutOfOrder)
        } else if chain_hash(e.seq, &e.prev_hash, &e.body) != e.hash {
            Some(ChainFault::Edited)
        } else if e.prev_hash != prev {
            Some(ChainFault::BrokenLink)
        } else {
            None
        };
        if let Some(fault) = fault {
            return Err(ChainBreak {
                seq: e.seq,
                expected_seq: expected,
                fault,
            });
        }
        prev = e.hash;
    }
    Ok(prev)
}

crate::json::object_only!(LimitKind);
crate::json::object_only!(AuditKind);
crate::json::object_only!(AuditEvent);
crate::json::object_only!(ChainedEvent);
crate::json::object_only!(ChainBreak);

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn bodies_round_trip_with_canonical_times() {
        for nanos in [0u32, 5_000_000, 123_456_000, 987_654_321] {
            let at = Utc
                .with_ymd_and_hms(2026, 6, 28, 9, 0, 7)
                .single()
                .map(|t| t + chrono::Duration::nanoseconds(i64::from(nanos)))
                .unwrap();
            let event = AuditEvent {
                at,
                kind: AuditKind::AutoSuspended {
                    actor_id: "agent_123".parse().unwrap(),
                    consecutive_blocks: 3,
                },
            };
            let body = event.to_body();
            let expected = at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true);
            assert!(body.contains(&format!("\"at\":\"{expected}\"")), "{body}");
            let back: AuditEvent = serde_json::from_str(&body).unwrap();
            assert_eq!(back, event);
        }
    }
}
