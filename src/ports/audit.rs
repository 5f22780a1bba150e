//! The audit sink port: an append-only, hash-chained trail (I9).

use std::fmt::Debug;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::domain::{AuditEvent, AuditHash, ChainBreak, ChainedEvent};

/// Where an appended event landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditReceipt {
    /// Its sequence number (from 1, no gaps).
    pub seq: u64,
    /// Its hash (see [`crate::domain::chain_hash`]).
    pub hash: AuditHash,
}

/// An audit sink failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    /// Verification found a bad event (edited, dropped, reordered). Not retryable.
    #[error(transparent)]
    Broken(#[from] ChainBreak),
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

    /// Up to `limit` events from `from_seq` on, in order.
    async fn read(&self, from_seq: u64, limit: usize) -> Result<Vec<ChainedEvent>, AuditError>;

    /// The last event's receipt (`None` when empty).
    async fn head(&self) -> Result<Option<AuditReceipt>, AuditError>;

    /// Verifies the whole chain; returns the head, or [`AuditError::Broken`] naming the first
    /// bad event.
    async fn verify(&self) -> Result<Option<AuditReceipt>, AuditError> {
        let mut prev = AuditHash::GENESIS;
        let mut next = 1;
        let mut head = None;
        loop {
            let page = self.read(next, 1024).await?;
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
}
