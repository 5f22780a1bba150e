//! Audit subjects and chain checkpoints: verifying the events about one attempt (or mandate)
//! against the nearest checkpoints instead of the whole trail.
//!
//! A checkpoint is written every [`CHECKPOINT_INTERVAL`] events: the event's sequence number,
//! its hash, and a seal that chains the checkpoint to the one before
//! ([`checkpoint_seal`]). The events between two consecutive checkpoints form a *window*;
//! [`verify_window`] recomputes every link of a window from the lower checkpoint's hash and
//! checks that it ends on the upper checkpoint's hash, and that the upper checkpoint's seal
//! chains to the lower one's. An event edited, dropped or moved inside the window, a
//! checkpoint edited, and a checkpoint dropped from the middle are each named.

use sha2::{Digest, Sha256};

use super::audit::{verify_chain, AuditHash, AuditKind, ChainBreak, ChainedEvent};
use super::ids::{AttemptId, BuyerId, MandateId};

/// Events between two checkpoints (a checkpoint is written at every multiple of it).
pub const CHECKPOINT_INTERVAL: u64 = 256;

/// What an audit event is about, as the sinks index it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AuditSubject {
    /// A payment attempt.
    Attempt(AttemptId),
    /// A mandate.
    Mandate(MandateId),
    /// A buyer: every event about them, their mandates or their attempts (see
    /// [`BuyerIndex`](crate::domain::BuyerIndex); sinks index it as they append, never from the event alone).
    Buyer(BuyerId),
}

impl AuditSubject {
    /// The index key: `attempt:<id>` or `mandate:<id>`.
    ///
    /// ```
    /// use agent_mandate::domain::{AttemptId, AuditSubject};
    /// let s = AuditSubject::Attempt(AttemptId::new("att_1").unwrap());
    /// assert_eq!(s.key(), "attempt:att_1");
    /// ```
    pub fn key(&self) -> String {
        match self {
            AuditSubject::Attempt(id) => format!("attempt:{id}"),
            AuditSubject::Mandate(id) => format!("mandate:{id}"),
            AuditSubject::Buyer(id) => format!("buyer:{id}"),
        }
    }

    /// The id alone.
    pub fn id(&self) -> &str {
        match self {
            AuditSubject::Attempt(id) => id.as_str(),
            AuditSubject::Mandate(id) => id.as_str(),
            AuditSubject::Buyer(id) => id.as_str(),
        }
    }

    /// Every attempt and mandate an event names (attempts first, then mandates, without
    /// repeats). The buyer is not among them: see [`BuyerIndex`](crate::domain::BuyerIndex).
    pub fn of(kind: &AuditKind) -> Vec<AuditSubject> {
        let mut out = Vec::new();
        let attempt = |out: &mut Vec<AuditSubject>, id: &AttemptId| {
            out.push(AuditSubject::Attempt(id.clone()))
        };
        let mandate = |out: &mut Vec<AuditSubject>, id: &MandateId| {
            let s = AuditSubject::Mandate(id.clone());
            if !out.contains(&s) {
                out.push(s);
            }
        };
        match kind {
            AuditKind::Decision {
                mandate_id,
                attempt_id,
                ..
            } => {
                if let Some(a) = attempt_id {
                    attempt(&mut out, a);
                }
                mandate(&mut out, mandate_id);
            }
            AuditKind::MandateCreated { mandate_id, .. }
            | AuditKind::MandateTransition { mandate_id, .. }
            | AuditKind::ConfirmationRecorded { mandate_id, .. }
            | AuditKind::ConfirmationDeclined { mandate_id, .. }
            | AuditKind::LoopDetected { mandate_id, .. }
            | AuditKind::Threshold { mandate_id, .. } => mandate(&mut out, mandate_id),
            AuditKind::Hold {
                attempt_id,
                mandate_ids,
                ..
            } => {
                attempt(&mut out, attempt_id);
                for m in mandate_ids {
                    mandate(&mut out, m);
                }
            }
            AuditKind::AttemptTransition { attempt_id, .. }
            | AuditKind::OrderCommitted { attempt_id, .. }
            | AuditKind::OrderFailed { attempt_id, .. }
            | AuditKind::Recovery { attempt_id, .. }
            | AuditKind::Asked { attempt_id, .. }
            | AuditKind::Review { attempt_id, .. }
            | AuditKind::TokenRedeemed { attempt_id, .. } => attempt(&mut out, attempt_id),
            // The token's own mandate (the field the migrations' backfill indexes).
            AuditKind::TokenIssued { mandate_id, .. }
            | AuditKind::TokenRevoked { mandate_id, .. }
            | AuditKind::Delegated { mandate_id, .. } => mandate(&mut out, mandate_id),
            AuditKind::TokenRefused { .. }
            | AuditKind::Alert { .. }
            | AuditKind::Suspension { .. }
            | AuditKind::AutoSuspended { .. }
            | AuditKind::CredentialStored { .. }
            | AuditKind::CredentialRevoked { .. }
            | AuditKind::WebhookDeadLettered { .. }
            | AuditKind::Replay { .. } => {}
        }
        out
    }

    /// Whether the stored event names this subject (a quick text test, then the parsed
    /// event; a body that does not parse names nothing). A buyer is named by no event alone
    /// (most name a mandate or an attempt): false for [`AuditSubject::Buyer`], whose events
    /// come from a sink's index ([`crate::ports::AuditSink::indexed`]).
    pub fn named_by(&self, event: &ChainedEvent) -> bool {
        event.body.contains(self.id())
            && event
                .event()
                .is_ok_and(|e| AuditSubject::of(&e.kind).contains(self))
    }
}

/// A chain checkpoint: the hash of event `seq`, sealed to the checkpoint before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditCheckpoint {
    /// The event's sequence number (a multiple of [`CHECKPOINT_INTERVAL`]).
    pub seq: u64,
    /// The event's hash.
    pub hash: AuditHash,
    /// [`checkpoint_seal`] over `seq`, `hash` and the previous checkpoint's seal.
    pub seal: AuditHash,
}

impl AuditCheckpoint {
    /// The checkpoint of event (`seq`, `hash`) after `prev` (`None` for the first).
    ///
    /// ```
    /// use agent_mandate::domain::{AuditCheckpoint, AuditHash};
    /// let a = AuditCheckpoint::after(None, 256, AuditHash([1; 32]));
    /// let b = AuditCheckpoint::after(Some(&a), 512, AuditHash([2; 32]));
    /// assert!(b.follows(Some(&a)));
    /// assert!(!b.follows(None));
    /// ```
    pub fn after(prev: Option<&AuditCheckpoint>, seq: u64, hash: AuditHash) -> AuditCheckpoint {
        let prev_seal = prev.map_or(AuditHash::GENESIS, |p| p.seal);
        AuditCheckpoint {
            seq,
            hash,
            seal: checkpoint_seal(seq, &hash, &prev_seal),
        }
    }

    /// Whether this checkpoint's seal chains to `prev` (`None`: it is the first).
    pub fn follows(&self, prev: Option<&AuditCheckpoint>) -> bool {
        let prev_seal = prev.map_or(AuditHash::GENESIS, |p| p.seal);
        prev.is_none_or(|p| p.seq < self.seq)
            && checkpoint_seal(self.seq, &self.hash, &prev_seal) == self.seal
    }
}

/// The seal of checkpoint `seq`: `SHA-256("agent-mandate/audit-checkpoint/v1\n" || seq || "\n"
/// || hex(hash) || "\n" || hex(prev_seal))`, with [`AuditHash::GENESIS`] before the first.
pub fn checkpoint_seal(seq: u64, hash: &AuditHash, prev_seal: &AuditHash) -> AuditHash {
    let mut h = Sha256::new();
    h.update(b"agent-mandate/audit-checkpoint/v1\n");
    h.update(seq.to_string().as_bytes());
    h.update(b"\n");
    h.update(hash.to_hex().as_bytes());
    h.update(b"\n");
    h.update(prev_seal.to_hex().as_bytes());
    AuditHash(h.finalize().into())
}

/// What is wrong with a window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WindowFault {
    /// An event of the window is edited, missing, out of order or badly linked.
    #[error(transparent)]
    Chain(#[from] ChainBreak),
    /// The checkpoint at `seq` does not match its event, or its seal does not chain to the
    /// checkpoint before it (edited, or a checkpoint between them was dropped).
    #[error("audit checkpoint {seq} does not match the trail or the checkpoint before it")]
    Checkpoint {
        /// The checkpoint's sequence number.
        seq: u64,
    },
}

/// Verifies one window: `events` must be every event after `lo` (from 1 when `None`) up to
/// and including `hi`, linked from `lo`'s hash (from [`AuditHash::GENESIS`]) and ending on
/// `hi`'s hash, and `hi` must be sealed after `lo`. With `hi` absent (the window after the
/// last checkpoint) the events run to the head and `lo` is checked against `before`, the
/// checkpoint before it (so the start of the tail is pinned too). Returns the last event's
/// hash.
///
/// ```
/// use agent_mandate::domain::{verify_window, AuditCheckpoint, AuditHash, ChainedEvent};
/// let mut events = Vec::new();
/// let mut prev = AuditHash::GENESIS;
/// for seq in 1..=3 {
///     let e = ChainedEvent::link(seq, prev, format!("{{\"n\":{seq}}}"));
///     prev = e.hash;
///     events.push(e);
/// }
/// let hi = AuditCheckpoint::after(None, 3, prev);
/// assert!(verify_window(None, None, Some(&hi), &events).is_ok());
/// events[1].body = "{\"n\":9}".into();
/// assert!(verify_window(None, None, Some(&hi), &events).is_err());
/// ```
pub fn verify_window(
    before: Option<&AuditCheckpoint>,
    lo: Option<&AuditCheckpoint>,
    hi: Option<&AuditCheckpoint>,
    events: &[ChainedEvent],
) -> Result<AuditHash, WindowFault> {
    let first = lo.map_or(1, |c| c.seq + 1);
    let start = lo.map_or(AuditHash::GENESIS, |c| c.hash);
    let last = verify_chain(events, first, start)?;
    let end = first + events.len() as u64;
    match hi {
        Some(hi) => {
            if end <= hi.seq {
                return Err(WindowFault::Chain(ChainBreak {
                    seq: hi.seq,
                    expected_seq: end,
                    fault: super::audit::ChainFault::Missing,
                }));
            }
            if end != hi.seq + 1 || last != hi.hash || !hi.follows(lo) {
                return Err(WindowFault::Checkpoint { seq: hi.seq });
            }
        }
        None => {
            if let Some(lo) = lo
                && !lo.follows(before)
            {
                return Err(WindowFault::Checkpoint { seq: lo.seq });
            }
        }
    }
    Ok(last)
}

/// Verifies every checkpoint against the trail: checkpoint `i` (from 1) is at
/// `i * CHECKPOINT_INTERVAL`, carries the hash of the event there (`hash_at`), and is sealed
/// after checkpoint `i - 1`. Checkpoints not written yet at the end are not a fault (the
/// sinks verify the window after the last one to the head).
pub fn verify_checkpoints(
    checkpoints: &[AuditCheckpoint],
    mut hash_at: impl FnMut(u64) -> Option<AuditHash>,
) -> Result<(), WindowFault> {
    let mut prev: Option<&AuditCheckpoint> = None;
    for (i, c) in (1u64..).zip(checkpoints) {
        let expected = i.saturating_mul(CHECKPOINT_INTERVAL);
        if c.seq != expected || hash_at(c.seq) != Some(c.hash) || !c.follows(prev) {
            return Err(WindowFault::Checkpoint { seq: c.seq });
        }
        prev = Some(c);
    }
    Ok(())
}

/// The sequence number of the last checkpoint at or before `seq`.
pub fn checkpoint_floor(seq: u64) -> u64 {
    seq - seq % CHECKPOINT_INTERVAL
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ChainFault;

    fn chain(n: u64) -> Vec<ChainedEvent> {
        let mut out = Vec::new();
        let mut prev = AuditHash::GENESIS;
        for seq in 1..=n {
            let e = ChainedEvent::link(seq, prev, format!("{{\"n\":{seq}}}"));
            prev = e.hash;
            out.push(e);
        }
        out
    }

    fn checkpoints(events: &[ChainedEvent], every: usize) -> Vec<AuditCheckpoint> {
        let mut out: Vec<AuditCheckpoint> = Vec::new();
        for e in events.iter().skip(every - 1).step_by(every) {
            let c = AuditCheckpoint::after(out.last(), e.seq, e.hash);
            out.push(c);
        }
        out
    }

    #[test]
    fn windows_verify_and_name_each_tamper() {
        let events = chain(12);
        let cps = checkpoints(&events, 4); // 4, 8, 12
        let win = |lo: usize, hi: usize| &events[lo..hi];
        assert!(verify_window(None, Some(&cps[0]), Some(&cps[1]), win(4, 8)).is_ok());
        assert!(verify_window(None, None, Some(&cps[0]), win(0, 4)).is_ok());
        assert!(verify_window(Some(&cps[1]), Some(&cps[2]), None, &[]).is_ok());

        // An event edited inside the window.
        let mut edited = win(4, 8).to_vec();
        edited[1].body = "{}".into();
        assert!(matches!(
            verify_window(None, Some(&cps[0]), Some(&cps[1]), &edited),
            Err(WindowFault::Chain(ChainBreak {
                seq: 6,
                fault: ChainFault::Edited,
                ..
            }))
        ));
        // Edited and re-hashed through the end of the window: the checkpoint names it.
        let mut rewritten = win(4, 8).to_vec();
        rewritten[1].body = "{}".into();
        let mut prev = rewritten[0].hash;
        for e in rewritten.iter_mut().skip(1) {
            *e = ChainedEvent::link(e.seq, prev, e.body.clone());
            prev = e.hash;
        }
        assert_eq!(
            verify_window(None, Some(&cps[0]), Some(&cps[1]), &rewritten),
            Err(WindowFault::Checkpoint { seq: 8 })
        );
        // A dropped last event of the window.
        assert!(matches!(
            verify_window(None, Some(&cps[0]), Some(&cps[1]), win(4, 7)),
            Err(WindowFault::Chain(ChainBreak {
                seq: 8,
                fault: ChainFault::Missing,
                ..
            }))
        ));
        // A checkpoint edited (its hash moved to another event's): no longer sealed.
        let mut moved = cps[1];
        moved.hash = events[6].hash;
        assert!(verify_window(None, Some(&cps[0]), Some(&moved), win(4, 8)).is_err());
        // A checkpoint re-sealed after editing its hash still mismatches the window.
        let forged = AuditCheckpoint::after(Some(&cps[0]), 8, events[6].hash);
        assert_eq!(
            verify_window(None, Some(&cps[0]), Some(&forged), win(4, 8)),
            Err(WindowFault::Checkpoint { seq: 8 })
        );
        // A checkpoint dropped from the middle: 12 does not chain to 4.
        assert_eq!(
            verify_window(None, Some(&cps[0]), Some(&cps[2]), win(4, 12)),
            Err(WindowFault::Checkpoint { seq: 12 })
        );
        // The tail's lower checkpoint is checked against the one before it, and the tail
        // links from it.
        assert_eq!(
            verify_window(Some(&cps[0]), Some(&moved), None, &[]),
            Err(WindowFault::Checkpoint { seq: 8 })
        );
        assert!(matches!(
            verify_window(Some(&cps[0]), Some(&forged), None, win(8, 12)),
            Err(WindowFault::Chain(ChainBreak {
                seq: 9,
                fault: ChainFault::BrokenLink,
                ..
            }))
        ));
    }

    #[test]
    fn all_checkpoints_verify_against_the_trail() {
        let events = chain(3 * CHECKPOINT_INTERVAL + 5);
        let cps = checkpoints(&events, CHECKPOINT_INTERVAL as usize);
        let at = |s: u64| events.get(s as usize - 1).map(|e| e.hash);
        assert!(verify_checkpoints(&cps, at).is_ok());
        let mut gap = cps.clone();
        gap.remove(1);
        assert!(verify_checkpoints(&gap, at).is_err());
        let mut edited = cps.clone();
        edited[2].hash = AuditHash([7; 32]);
        assert_eq!(
            verify_checkpoints(&edited, at),
            Err(WindowFault::Checkpoint {
                seq: 3 * CHECKPOINT_INTERVAL
            })
        );
    }
}
