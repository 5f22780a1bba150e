//! What the audit sinks share for [`AuditSink::segment`](crate::ports::AuditSink::segment):
//! planning the windows around a subject's events, verifying them, and sealing the
//! checkpoints an append makes due.

use crate::domain::{
    verify_window, AuditCheckpoint, AuditHash, AuditSubject, ChainedEvent, WindowFault,
    CHECKPOINT_INTERVAL,
};
use crate::ports::AuditSegment;

/// The checkpoints around an event: the one before the lower bound (`before`, only needed
/// for the tail), the last at or before the window's start (`lo`) and the first at or after
/// the event (`hi`, `None` past the last checkpoint).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Window {
    pub before: Option<AuditCheckpoint>,
    pub lo: Option<AuditCheckpoint>,
    pub hi: Option<AuditCheckpoint>,
}

impl Window {
    /// The first event of the window.
    pub fn first(&self) -> u64 {
        self.lo.map_or(1, |c| c.seq + 1)
    }

    /// The last event of the window (`None`: to the head).
    pub fn last(&self) -> Option<u64> {
        self.hi.map(|c| c.seq)
    }

    #[cfg_attr(not(any(feature = "memory", feature = "sqlite")), allow(dead_code))]
    fn covers(&self, seq: u64) -> bool {
        seq >= self.first() && self.last().is_none_or(|l| seq <= l)
    }
}

/// The distinct windows around `seqs` (sorted ascending), asking `around` for each event not
/// already covered.
#[cfg_attr(not(any(feature = "memory", feature = "sqlite")), allow(dead_code))]
pub(crate) fn plan<E>(
    seqs: &[u64],
    mut around: impl FnMut(u64) -> Result<Window, E>,
) -> Result<Vec<Window>, E> {
    let mut out: Vec<Window> = Vec::new();
    for &n in seqs {
        if out.last().is_some_and(|w| w.covers(n)) {
            continue;
        }
        out.push(around(n)?);
    }
    Ok(out)
}

/// Verifies each window and keeps the events that name `subject`.
pub(crate) fn assemble(
    subject: &AuditSubject,
    windows: Vec<(Window, Vec<ChainedEvent>)>,
) -> AuditSegment {
    let mut events = Vec::new();
    let mut verified = Vec::new();
    let mut fault: Option<WindowFault> = None;
    for (w, window_events) in windows {
        if let Err(f) = verify_window(
            w.before.as_ref(),
            w.lo.as_ref(),
            w.hi.as_ref(),
            &window_events,
        ) {
            fault.get_or_insert(f);
        }
        let last = w
            .last()
            .or_else(|| window_events.last().map(|e| e.seq))
            .unwrap_or(w.first().saturating_sub(1));
        if last >= w.first() {
            verified.push((w.first(), last));
        }
        events.extend(window_events.into_iter().filter(|e| subject.named_by(e)));
    }
    AuditSegment::new(events, verified, fault)
}

/// One stored link: (seq, prev_hash, hash).
pub(crate) type Link = (u64, AuditHash, AuditHash);

/// The checkpoint numbers due after `last` (the last written) up to `head`.
pub(crate) fn due(last: Option<&AuditCheckpoint>, head: u64) -> Option<(u64, u64)> {
    let from = last.map_or(1, |c| c.seq + 1);
    let upto = head - head % CHECKPOINT_INTERVAL;
    (upto >= from && upto > 0).then_some((from, upto))
}

/// Seals the checkpoints due in `links` (every stored link after `last`, in order, up to the
/// last due checkpoint). A checkpoint is sealed only over links that hold (consecutive
/// numbers, each event linked to the one before): at the first that does not, sealing stops
/// and nothing after it is sealed, so a trail edited between checkpoints is never vouched for
/// (verification reads to the head and names the break).
pub(crate) fn seal(last: Option<&AuditCheckpoint>, links: &[Link]) -> Vec<AuditCheckpoint> {
    let mut out: Vec<AuditCheckpoint> = Vec::new();
    let mut prev_cp = last.copied();
    let mut prev_hash = last.map_or(AuditHash::GENESIS, |c| c.hash);
    let first = last.map_or(1, |c| c.seq + 1);
    for (expected, &(seq, prev, hash)) in (first..).zip(links) {
        if seq != expected || prev != prev_hash {
            break;
        }
        if seq % CHECKPOINT_INTERVAL == 0 {
            let c = AuditCheckpoint::after(prev_cp.as_ref(), seq, hash);
            out.push(c);
            prev_cp = Some(c);
        }
        prev_hash = hash;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn links(n: u64) -> Vec<Link> {
        let mut out = Vec::new();
        let mut prev = AuditHash::GENESIS;
        for seq in 1..=n {
            let e = ChainedEvent::link(seq, prev, format!("{seq}"));
            out.push((seq, prev, e.hash));
            prev = e.hash;
        }
        out
    }

    #[test]
    fn seals_every_interval_and_stops_at_a_broken_link() {
        let k = CHECKPOINT_INTERVAL;
        let all = links(3 * k + 1);
        let cps = seal(None, &all);
        assert_eq!(
            cps.iter().map(|c| c.seq).collect::<Vec<_>>(),
            vec![k, 2 * k, 3 * k]
        );
        assert!(cps[1].follows(Some(&cps[0])));
        let more = seal(Some(&cps[0]), &all[k as usize..]);
        assert_eq!(more, cps[1..].to_vec());
        let mut broken = all.clone();
        broken[(k + 10) as usize].1 = AuditHash([9; 32]);
        assert_eq!(seal(None, &broken), cps[..1].to_vec());
        assert_eq!(due(None, k - 1), None);
        assert_eq!(due(None, k), Some((1, k)));
        assert_eq!(due(Some(&cps[0]), 2 * k + 3), Some((k + 1, 2 * k)));
        assert_eq!(due(Some(&cps[1]), 2 * k + 3), None);
    }

    #[test]
    fn plan_merges_events_of_one_window() {
        let k = CHECKPOINT_INTERVAL;
        let mut asked = Vec::new();
        let w = plan(&[3, 5, k + 2, 3 * k + 1], |n| {
            asked.push(n);
            let lo = n - 1 - (n - 1) % k;
            Ok::<_, ()>(Window {
                before: None,
                lo: (lo > 0).then(|| AuditCheckpoint::after(None, lo, AuditHash::GENESIS)),
                hi: (n < 3 * k).then(|| AuditCheckpoint::after(None, lo + k, AuditHash::GENESIS)),
            })
        })
        .unwrap();
        assert_eq!(asked, vec![3, k + 2, 3 * k + 1]);
        assert_eq!(w.len(), 3);
        assert_eq!(w[2].last(), None);
    }
}
