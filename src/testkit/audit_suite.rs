//! The conformance suite for [`AuditSink`] adapters (I9).

use chrono::{DateTime, Duration, Utc};

use crate::domain::{
    ActorId, AttemptId, AuditEvent, AuditHash, AuditKind, AuditSubject, ChainedEvent, Currency,
    HoldAction, MandateId, Money, CHECKPOINT_INTERVAL,
};
use crate::ports::{AuditReceipt, AuditSegment, AuditSink};

/// Runs every audit sink check; panics naming the first broken rule.
///
/// The sink may already hold events (a persistent trail): the suite continues from its head
/// and appends eight events. It checks that appends are numbered after the head without gaps
/// and linked with [`ChainedEvent::link`] over [`AuditEvent::to_body`]; that `read` returns the
/// exact events in order and pages correctly (`limit` respected, an empty page past the end);
/// that `head` follows the appends; that `append_all` appends in order and returns the last
/// receipt (`None` for an empty slice, which appends nothing); and that `verify` accepts the
/// chain and returns the head.
pub async fn audit_sink_conformance(sink: &dyn AuditSink) {
    let start = sink
        .head()
        .await
        .unwrap_or_else(|e| panic!("audit rule head: {e:?}"));
    let (base, mut prev) = start.map_or((0, AuditHash::GENESIS), |r| (r.seq, r.hash));
    let t0 = DateTime::<Utc>::UNIX_EPOCH + Duration::days(20_000);
    let events: Vec<AuditEvent> = (0..8).map(|i| sample_event(base + i + 1, t0)).collect();

    // Single appends: numbered after the head, linked to the previous event.
    let mut expected: Vec<ChainedEvent> = Vec::new();
    for (i, e) in events[..5].iter().enumerate() {
        let seq = base + i as u64 + 1;
        let link = ChainedEvent::link(seq, prev, e.to_body());
        let receipt = sink
            .append(e)
            .await
            .unwrap_or_else(|err| panic!("audit rule append: {err:?}"));
        assert_eq!(
            receipt,
            AuditReceipt {
                seq,
                hash: link.hash
            },
            "audit rule append: event {seq} is numbered after the head and linked with ChainedEvent::link"
        );
        prev = link.hash;
        expected.push(link);
        let head = sink
            .head()
            .await
            .unwrap_or_else(|err| panic!("audit rule head: {err:?}"));
        assert_eq!(head, Some(receipt), "audit rule head: follows each append");
    }

    // Reads: exact events, in order, paged.
    let first = base + 1;
    let all = read(sink, first, 100).await;
    assert_eq!(
        all, expected,
        "audit rule read: returns the events as stored"
    );
    for (got, want) in all.iter().zip(&events) {
        let parsed = got
            .event()
            .unwrap_or_else(|err| panic!("audit rule read: body {} must parse: {err}", got.seq));
        assert_eq!(&parsed, want, "audit rule read: the body is the event");
    }
    let mut paged = Vec::new();
    let mut from = first;
    loop {
        let page = read(sink, from, 2).await;
        assert!(page.len() <= 2, "audit rule read: at most `limit` events");
        if page.is_empty() {
            break;
        }
        from += page.len() as u64;
        paged.extend(page);
    }
    assert_eq!(
        paged, expected,
        "audit rule read: pages join up to the trail"
    );
    assert!(
        read(sink, first, 0).await.is_empty(),
        "audit rule read: limit 0 reads nothing"
    );
    assert!(
        read(sink, base + 6, 10).await.is_empty(),
        "audit rule read: nothing past the head"
    );
    assert_eq!(
        read(sink, base + 3, 1).await,
        expected[2..3].to_vec(),
        "audit rule read: starts at from_seq"
    );

    // append_all: empty is a no-op; several are appended in order.
    let before = sink
        .head()
        .await
        .unwrap_or_else(|err| panic!("audit rule head: {err:?}"));
    let none = sink
        .append_all(&[])
        .await
        .unwrap_or_else(|err| panic!("audit rule append_all: {err:?}"));
    assert_eq!(
        none, None,
        "audit rule append_all: an empty slice returns None"
    );
    let after = sink
        .head()
        .await
        .unwrap_or_else(|err| panic!("audit rule head: {err:?}"));
    assert_eq!(
        after, before,
        "audit rule append_all: an empty slice appends nothing"
    );
    for (i, e) in events[5..].iter().enumerate() {
        let seq = base + 6 + i as u64;
        let link = ChainedEvent::link(seq, prev, e.to_body());
        prev = link.hash;
        expected.push(link);
    }
    let last = sink
        .append_all(&events[5..])
        .await
        .unwrap_or_else(|err| panic!("audit rule append_all: {err:?}"));
    let want_last = expected.last().map(|e| AuditReceipt {
        seq: e.seq,
        hash: e.hash,
    });
    assert_eq!(
        last, want_last,
        "audit rule append_all: returns the last receipt"
    );
    assert_eq!(
        read(sink, first, 100).await,
        expected,
        "audit rule append_all: appends in order, linked"
    );
    let head = sink
        .head()
        .await
        .unwrap_or_else(|err| panic!("audit rule head: {err:?}"));
    assert_eq!(head, want_last, "audit rule head: follows append_all");

    // verify: the whole chain (including what was there before) is intact.
    let verified = sink
        .verify()
        .await
        .unwrap_or_else(|err| panic!("audit rule verify: an untouched chain verifies: {err:?}"));
    assert_eq!(verified, want_last, "audit rule verify: returns the head");

    // segment: exactly the events naming the subject (not a longer id that starts the same).
    let one = AttemptId::new(format!("audit-suite-{}", base + 1))
        .unwrap_or_else(|e| panic!("audit rule fixture: {e}"));
    let seg = segment(sink, &AuditSubject::Attempt(one)).await;
    assert_eq!(
        seg.events,
        expected[..1].to_vec(),
        "audit rule segment: the events about the attempt, as stored"
    );
    let root = MandateId::new("mandate_root").unwrap_or_else(|e| panic!("audit rule fixture: {e}"));
    let seg = segment(sink, &AuditSubject::Mandate(root.clone())).await;
    let holds: Vec<ChainedEvent> = expected.iter().step_by(2).cloned().collect();
    assert!(
        holds.iter().all(|h| seg.events.contains(h)),
        "audit rule segment: every hold naming the mandate"
    );
    assert!(
        seg.events
            .iter()
            .all(|e| AuditSubject::Mandate(root.clone()).named_by(e)),
        "audit rule segment: only events naming the mandate"
    );
    let nobody = AttemptId::new("audit-suite-nobody").unwrap_or_else(|e| panic!("{e}"));
    assert!(
        segment(sink, &AuditSubject::Attempt(nobody))
            .await
            .events
            .is_empty(),
        "audit rule segment: nothing about an attempt never named"
    );
}

/// The segment checks across checkpoints: appends two checkpoint intervals and a little
/// more of events about no attempt, with three events about one attempt spread among them
/// (in the first window, the second, and after the last checkpoint), and checks that
/// [`AuditSink::segment`] returns exactly those three, intact, each inside a verified range,
/// and that `verify` still verifies everything. Appends `2 * CHECKPOINT_INTERVAL + 40`
/// events.
pub async fn audit_segment_conformance(sink: &dyn AuditSink) {
    let start = sink
        .head()
        .await
        .unwrap_or_else(|e| panic!("audit rule head: {e:?}"))
        .map_or(0, |r| r.seq);
    let t0 = DateTime::<Utc>::UNIX_EPOCH + Duration::days(20_001);
    let target = AttemptId::new(format!("audit-segment-{start}"))
        .unwrap_or_else(|e| panic!("audit rule fixture: {e}"));
    let actor = ActorId::new("audit-suite-actor").unwrap_or_else(|e| panic!("{e}"));
    let total = 2 * CHECKPOINT_INTERVAL + 40;
    let about = [10, CHECKPOINT_INTERVAL + 10, 2 * CHECKPOINT_INTERVAL + 20];
    let events: Vec<AuditEvent> = (1..=total)
        .map(|i| AuditEvent {
            at: t0 + Duration::seconds(i64::try_from(i).unwrap_or(0)),
            kind: if about.contains(&i) {
                AuditKind::OrderFailed {
                    attempt_id: target.clone(),
                    reason: format!("segment {i}"),
                }
            } else {
                AuditKind::AutoSuspended {
                    actor_id: actor.clone(),
                    consecutive_blocks: u32::try_from(i).unwrap_or(0),
                }
            },
        })
        .collect();
    for chunk in events.chunks(100) {
        sink.append_all(chunk)
            .await
            .unwrap_or_else(|e| panic!("audit rule append_all: {e:?}"));
    }
    let want: Vec<u64> = about.iter().map(|i| start + i).collect();
    let seg = segment(sink, &AuditSubject::Attempt(target)).await;
    assert_eq!(
        seg.events.iter().map(|e| e.seq).collect::<Vec<_>>(),
        want,
        "audit rule segment: every event about the attempt, across checkpoints"
    );
    for e in &seg.events {
        assert!(
            seg.verified.iter().any(|(a, b)| (*a..=*b).contains(&e.seq)),
            "audit rule segment: event {} lies in a verified range {:?}",
            e.seq,
            seg.verified
        );
    }
    let all = read(
        sink,
        start + 1,
        usize::try_from(total).unwrap_or(usize::MAX),
    )
    .await;
    for (got, i) in seg.events.iter().zip(about) {
        let stored = all.get(usize::try_from(i - 1).unwrap_or(usize::MAX));
        assert_eq!(Some(got), stored, "audit rule segment: events as stored");
    }
    sink.verify()
        .await
        .unwrap_or_else(|e| panic!("audit rule verify: after the segment appends: {e:?}"));
}

async fn segment(sink: &dyn AuditSink, subject: &AuditSubject) -> AuditSegment {
    let seg = sink
        .segment(subject)
        .await
        .unwrap_or_else(|e| panic!("audit rule segment({}): {e:?}", subject.key()));
    assert_eq!(
        seg.fault, None,
        "audit rule segment: an untouched trail has no fault"
    );
    seg
}

async fn read(sink: &dyn AuditSink, from: u64, limit: usize) -> Vec<ChainedEvent> {
    sink.read(from, limit)
        .await
        .unwrap_or_else(|e| panic!("audit rule read({from}, {limit}): {e:?}"))
}

/// A varied event: plain text, escapes and non-ASCII text, amounts.
fn sample_event(n: u64, t0: DateTime<Utc>) -> AuditEvent {
    let attempt_id = AttemptId::new(format!("audit-suite-{n}"))
        .unwrap_or_else(|e| panic!("audit rule fixture: {e}"));
    let at = t0 + Duration::seconds(i64::try_from(n).unwrap_or(0));
    let kind = if n.is_multiple_of(2) {
        AuditKind::OrderFailed {
            attempt_id,
            reason: format!("naïve \"quoted\" reason ✓ \\ {n}"),
        }
    } else {
        AuditKind::Hold {
            attempt_id,
            action: HoldAction::Placed,
            amount: Money::from_minor(
                i64::try_from(n).unwrap_or(1).saturating_mul(100),
                Currency::EUR,
            )
            .unwrap_or_else(|e| panic!("audit rule fixture: {e}")),
            mandate_ids: vec![
                MandateId::new("mandate_child")
                    .unwrap_or_else(|e| panic!("audit rule fixture: {e}")),
                MandateId::new("mandate_root")
                    .unwrap_or_else(|e| panic!("audit rule fixture: {e}")),
            ],
            policy: None,
        }
    };
    AuditEvent { at, kind }
}
