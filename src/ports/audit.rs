//! The audit sink port: an append-only, hash-chained trail (I9).

use std::fmt::Debug;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::domain::{AuditEvent, AuditHash, AuditSubject, ChainBreak, ChainedEvent, WindowFault};

/// Where an appended event landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditReceipt {
    /// Its sequence number (from 1, no gaps).
    pub seq: u64,
    /// Its hash (see [`crate::domain::chain_hash`]).
    pub hash: AuditHash,
}

/// The events about one subject, with what was verified to vouch for them
/// ([`AuditSink::segment`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct AuditSegment {
    /// Every event that names the subject, in sequence order, exactly as stored.
    pub events: Vec<ChainedEvent>,
    /// The ranges of the trail verified, `(first, last)` inclusive, in order: each event of
    /// `events` lies in one of them.
    pub verified: Vec<(u64, u64)>,
    /// The first fault found (`None`: every range verified).
    pub fault: Option<WindowFault>,
}

impl AuditSegment {
    /// A segment.
    pub fn new(
        events: Vec<ChainedEvent>,
        verified: Vec<(u64, u64)>,
        fault: Option<WindowFault>,
    ) -> AuditSegment {
        AuditSegment {
            events,
            verified,
            fault,
        }
    }

    /// Whether every range verified.
    pub fn is_intact(&self) -> bool {
        self.fault.is_none()
    }
}

/// Names one audit trail, so a store that appends its events to a trail directly (in the
/// transaction of the change they describe, see [`crate::ports::Store::direct_trail`]) can be
/// checked against the engine's audit sink: [`crate::engine::Engine::new`] refuses a store
/// whose direct trail is not the sink's ([`AuditSink::trail_id`]).
///
/// ```
/// use agent_mandate::ports::TrailId;
/// assert_eq!(TrailId::new("sqlite:/var/lib/state.db"), TrailId::new("sqlite:/var/lib/state.db"));
/// assert_ne!(TrailId::new("sqlite:/a.db"), TrailId::new("sqlite:/b.db"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TrailId(String);

impl TrailId {
    /// A trail named `name` (an adapter's own spelling: kind and location).
    pub fn new(name: impl Into<String>) -> TrailId {
        TrailId(name.into())
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An audit sink failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    /// Verification found a bad event (edited, dropped, reordered). Not retryable.
    #[error(transparent)]
    Broken(#[from] ChainBreak),
    /// A checkpoint does not match the trail or the checkpoint before it. Not retryable.
    #[error("audit checkpoint {seq} does not match the trail or the checkpoint before it")]
    Checkpoint {
        /// The checkpoint's sequence number.
        seq: u64,
    },
    /// A stored event cannot be read (names the sequence number). Not retryable.
    #[error("audit event {seq} is unreadable: {message}")]
    Corrupt {
        /// The event.
        seq: u64,
        /// What is wrong.
        message: String,
    },
    /// The sink cannot be reached now; retry later. Nothing was appended.
    #[error("audit sink unavailable: {message}")]
    Unavailable {
        /// Why.
        message: String,
    },
    /// Anything else an adapter reports.
    #[error("audit sink error: {0}")]
    Other(Box<dyn std::error::Error + Send + Sync>),
}

/// The audit trail.
///
/// Contract (checked by `testkit::audit_sink_conformance`): `append` assigns the next sequence
/// number (1, 2, ...) and links the event to the previous one with
/// [`ChainedEvent::link`]; appends are serialised (no two events share a number, none is
/// lost); `read` returns events in sequence order exactly as stored; `verify` recomputes every
/// link and names the first bad event. Events are never updated or deleted through this port.
#[async_trait]
pub trait AuditSink: Send + Sync + Debug {
    /// Appends one event.
    async fn append(&self, event: &AuditEvent) -> Result<AuditReceipt, AuditError>;

    /// Appends several events in order, atomically where the backend allows; returns the
    /// receipt of the last (`None` for an empty slice).
    async fn append_all(&self, events: &[AuditEvent]) -> Result<Option<AuditReceipt>, AuditError> {
        let mut last = None;
        for e in events {
            last = Some(self.append(e).await?);
        }
        Ok(last)
    }

    /// The trail this sink appends to, when a store can append to the same trail in its own
    /// transactions ([`crate::ports::Store::direct_trail`]): the SQLite and PostgreSQL sinks
    /// name their database, the memory sink itself. Provided: `None` (no store writes this
    /// sink's trail; every event comes through [`AuditSink::append_all`]).
    fn trail_id(&self) -> Option<TrailId> {
        None
    }

    /// Up to `limit` events from `from_seq` on, in order.
    async fn read(&self, from_seq: u64, limit: usize) -> Result<Vec<ChainedEvent>, AuditError>;

    /// The last event's receipt (`None` when empty).
    async fn head(&self) -> Result<Option<AuditReceipt>, AuditError>;

    /// Verifies the whole chain; returns the head, or [`AuditError::Broken`] naming the first
    /// bad event. A sink with checkpoints also checks every checkpoint against the trail
    /// ([`AuditError::Checkpoint`]).
    async fn verify(&self) -> Result<Option<AuditReceipt>, AuditError> {
        verify_events(self).await
    }

    /// Up to `limit` events indexed under `subject` from sequence number `from_seq` on, in
    /// order, exactly as stored and not verified (a page to show, not evidence: see
    /// [`AuditSink::segment`]), or `None` when the sink keeps no index (the caller then reads
    /// the trail). Provided: `None`. The sinks of this crate index every event by the attempts
    /// and mandates it names and by its buyer ([`crate::domain::BuyerIndex`]), and answer in
    /// time that depends on the subject's events, not on the trail's length.
    async fn indexed(
        &self,
        subject: &AuditSubject,
        from_seq: u64,
        limit: usize,
    ) -> Result<Option<Vec<ChainedEvent>>, AuditError> {
        let _ = (subject, from_seq, limit);
        Ok(None)
    }

    /// Every event about `subject`, verified. Provided: verifies the whole trail (as
    /// [`AuditSink::verify`]) and reads it all, keeping the events that name the subject;
    /// a sink that indexes events by subject and keeps checkpoints
    /// ([`crate::domain::AuditCheckpoint`]) reads and verifies only the windows between the
    /// checkpoints around the subject's events, in time independent of the trail's length.
    ///
    /// A fault found is reported in [`AuditSegment::fault`] (with the events still
    /// returned); an unreachable or unreadable sink is an error.
    async fn segment(&self, subject: &AuditSubject) -> Result<AuditSegment, AuditError> {
        let fault = match self.verify().await {
            Ok(_) => None,
            Err(AuditError::Broken(b)) => Some(WindowFault::Chain(b)),
            Err(AuditError::Checkpoint { seq }) => Some(WindowFault::Checkpoint { seq }),
            Err(e) => return Err(e),
        };
        let mut events = Vec::new();
        let mut next = 1;
        loop {
            let page = self.read(next, 1024).await?;
            let Some(last) = page.last() else { break };
            next = last.seq.saturating_add(1);
            events.extend(page.into_iter().filter(|e| subject.named_by(e)));
        }
        let verified = if next > 1 {
            vec![(1, next - 1)]
        } else {
            Vec::new()
        };
        Ok(AuditSegment::new(events, verified, fault))
    }
}

/// The chain check of [`AuditSink::verify`]'s provided body: reads every event in pages and
/// recomputes every link. Sinks that override `verify` call it for the events.
pub async fn verify_events<S: AuditSink + ?Sized>(
    sink: &S,
) -> Result<Option<AuditReceipt>, AuditError> {
    let mut prev = AuditHash::GENESIS;
    let mut next = 1;
    let mut head = None;
    loop {
        let page = sink.read(next, 1024).await?;
        if page.is_empty() {
            return Ok(head);
        }
        prev = crate::domain::verify_chain(&page, next, prev)?;
        next += page.len() as u64;
        head = Some(AuditReceipt {
            seq: next - 1,
            hash: prev,
        });
    }
}

impl From<WindowFault> for AuditError {
    fn from(f: WindowFault) -> AuditError {
        match f {
            WindowFault::Chain(b) => AuditError::Broken(b),
            WindowFault::Checkpoint { seq } => AuditError::Checkpoint { seq },
        }
    }
}
