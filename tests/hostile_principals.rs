//! A hostile review of the principals change (I14, with I16 settlement and I17 inputs).
//!
//! Each test is one attack. Tests without `#[ignore]` are guards: they pass on the reviewed
//! code and keep it that way. Tests marked `#[ignore = "finding: ..."]` expose a real weakness:
//! they are written to FAIL on the reviewed code (they assert the behaviour the permission
//! table promises) and are ignored so the suite stays green; un-ignore them with the fix.
//!
//! The actors: the story's buyer (`buyer_456`) and agent (`agent_123`); Mallory, another
//! authenticated buyer of the same host; a stranger agent; an operator; a system process.
#![cfg(feature = "testkit")]

mod common;

use agent_mandate::domain::examples;
use agent_mandate::domain::{
    Actor, ActorKind, AttemptStatus, BlockerCode, Confirmation, ConfirmationScope, LifecycleEvent,
    MandateSpec, Party, PaymentAction, PaymentAttempt, PaymentRequest, Principal,
};
use agent_mandate::engine::{
    ChangeMandate, CommitOrder, CreateMandate, DeriveMandate, EngineConfig, EngineError, Evaluate,
    ExecutePayment, OrderOutcome, PaymentOutcome, RecordConfirmation, SetSuspension,
};
use agent_mandate::ports::{NewCredential, VaultError};
use common::engine::{
    agent_capture, agent_refund, agent_void, backpack_spec, card, key, psp_money, world,
    world_with, World,
};
use common::principals::{agent_p, buyer_p, operator_p, system_p};
use common::{eur, id};

// ----- fixtures -----

/// Mallory: another buyer of the same host, properly authenticated as herself.
fn mallory() -> Principal {
    Principal::Buyer(id("buyer_mallory"))
}

/// An agent that works for nobody here.
fn stranger_agent() -> Principal {
    Principal::Agent(id("agent_other_9"))
}

/// A `human` actor with the story agent's id: any buyer may name it in their own requests.
fn human_named_like_the_agent() -> Actor {
    Actor {
        id: examples::agent().id,
        kind: ActorKind::Human,
    }
}

fn not_permitted<T: std::fmt::Debug>(who: &str, r: Result<T, EngineError>) {
    match r {
        Err(EngineError::NotPermitted { .. }) => {}
        other => panic!("{who}: expected NotPermitted, got {other:?}"),
    }
}

/// `NotPermitted`, or (a key this principal already used for another command) a conflict:
/// either way refused before anything runs.
fn refused<T: std::fmt::Debug>(who: &str, r: Result<T, EngineError>) {
    match r {
        Err(EngineError::NotPermitted { .. } | EngineError::IdempotencyConflict { .. }) => {}
        other => panic!("{who}: expected NotPermitted or IdempotencyConflict, got {other:?}"),
    }
}

fn attempt_of(outcome: &PaymentOutcome) -> PaymentAttempt {
    outcome
        .attempt()
        .cloned()
        .unwrap_or_else(|| panic!("no attempt: {outcome:?}"))
}

/// The story agent's authorization of the backpack (key `pay-1`).
async fn authorized(w: &World) -> PaymentAttempt {
    let out = w
        .engine
        .execute_payment(&agent_p(), &w.execute("pay-1"))
        .await
        .expect("the agent pays");
    let a = attempt_of(&out);
    assert_eq!(a.status, AttemptStatus::Authorized);
    a
}

/// Every audit event body delivered so far.
async fn trail(w: &World) -> Vec<String> {
    w.engine.flush_audit().await.expect("flush");
    w.mem.audit.events().into_iter().map(|e| e.body).collect()
}

/// Mallory's own root mandate (roomy, same merchant and cart as the story) for `actor`.
fn mallory_spec(actor: Actor) -> MandateSpec {
    let mut spec = backpack_spec(true);
    spec.id = id("mandate_mallory");
    spec.buyer_id = id("buyer_mallory");
    spec.actor = actor;
    spec
}

/// Mallory creates her mandate for `actor` and stores her own card for it.
async fn mallory_sets_up(w: &World, actor: &Actor) -> agent_mandate::domain::CredentialRef {
    w.engine
        .create_mandate(
            &mallory(),
            &CreateMandate::new(key("mallory-create"), mallory_spec(actor.clone())),
        )
        .await
        .expect("Mallory may create her own mandate");
    let mut c = card(&actor.id, "pm_card_visa");
    c.buyer_id = id("buyer_mallory");
    w.engine
        .store_credential(&mallory(), &key("mallory-card"), c)
        .await
        .expect("Mallory may store her own card")
        .value
        .reference
}

/// A payment request of Mallory's, as `actor`, under `mandate`.
fn mallory_pays(
    w: &World,
    k: &str,
    actor: &Actor,
    mandate: &str,
    card: &agent_mandate::domain::CredentialRef,
) -> ExecutePayment {
    let mut request: PaymentRequest = examples::authorize_request(&w.snapshot);
    request.actor = actor.clone();
    request.buyer_id = id("buyer_mallory");
    request.mandate_id = id(mandate);
    ExecutePayment::new(
        key(k),
        request,
        w.snapshot.clone(),
        examples::valid_checkout(w.snapshot.id()),
        card.clone(),
    )
}

fn suspension(k: &str, party: Party, suspended: bool) -> SetSuspension {
    SetSuspension::new(
        key(k),
        party,
        suspended,
        "fraud investigation 77".parse().expect("text"),
    )
}

fn commit(k: &str, w: &World, a: &PaymentAttempt) -> CommitOrder {
    CommitOrder::new(
        key(k),
        a.id.clone(),
        examples::valid_checkout(w.snapshot.id()),
    )
}

// ======================================================================================
// Findings (fail on the reviewed code; ignored)
// ======================================================================================

/// **Finding (high): any buyer can trip the kill switch of any agent.**
///
/// Attack: Mallory, an authenticated buyer, sends `execute_payment` three times with a request
/// whose actor is `{kind: human, id: "agent_123"}` (the story agent's id) and whose buyer is
/// herself. `Principal::acts_as` lets a buyer act as *any* `human` actor of a request naming
/// her as buyer, so the permission check passes; the decision is blocked
/// (`ACTOR_NOT_AUTHORIZED`, `BUYER_MISMATCH`: counted blockers), and `refuse` counts the block
/// against `request.actor.id` alone, without its kind. The third block writes
/// `Suspend(Party::Actor("agent_123"))`: the story agent is suspended for every buyer it works
/// for. README: "Auto-suspension counts only the agent's own violations"; docs/design.md: "A
/// buyer may not suspend an agent".
///
/// Expected: the blocks count against the principal that asked (or the actor with its kind),
/// and the story agent still pays.
#[tokio::test]
async fn a_buyer_cannot_auto_suspend_another_buyers_agent_by_naming_its_id() {
    let w = world().await;
    let actor = human_named_like_the_agent();
    for n in 0..3 {
        // No mandate of her own needed: she names the story's mandate.
        let cmd = mallory_pays(&w, &format!("m-{n}"), &actor, "mandate_001", &w.card);
        // Not the mandate's actor: refused before anything is decided or counted.
        not_permitted("mallory", w.engine.execute_payment(&mallory(), &cmd).await);
    }
    let out = w
        .engine
        .execute_payment(&agent_p(), &w.execute("pay-1"))
        .await
        .expect("decided");
    assert!(
        out.decision()
            .is_none_or(|d| !d.has(BlockerCode::ActorSuspended)),
        "the story agent was suspended by another buyer: {out:?}"
    );
    assert_eq!(attempt_of(&out).status, AttemptStatus::Authorized);
}

/// **Finding (medium): another principal can reset an agent's consecutive-block counter.**
///
/// Attack: the story agent misbehaves twice (an over-limit cart: counted blockers). Mallory,
/// with a mandate of her own whose `human` actor carries the agent's id, makes one allowed
/// payment; `execute_started` calls `reset_blocks(request.actor.id)`, clearing the agent's
/// count. The agent's third violation then does not suspend it: a colluding buyer keeps a
/// misbehaving agent below the auto-suspension threshold forever.
///
/// Expected: after three of its own blocked requests in a row the agent is suspended, whatever
/// other principals did meanwhile.
#[tokio::test]
async fn another_principal_cannot_reset_an_agents_block_count() {
    let w = world().await;
    let over = examples::over_limit_snapshot();
    let bad = |k: &str| {
        let mut cmd = w.execute(k);
        cmd.request = examples::authorize_request(&over);
        cmd.snapshot = over.clone();
        cmd.checkout = examples::valid_checkout(over.id());
        cmd
    };
    for k in ["bad-1", "bad-2"] {
        let out = w
            .engine
            .execute_payment(&agent_p(), &bad(k))
            .await
            .expect("decided");
        assert!(matches!(out, PaymentOutcome::Refused(_)), "{out:?}");
    }
    let actor = human_named_like_the_agent();
    let mcard = mallory_sets_up(&w, &actor).await;
    let out = w
        .engine
        .execute_payment(
            &mallory(),
            &mallory_pays(&w, "m-ok", &actor, "mandate_mallory", &mcard),
        )
        .await
        .expect("Mallory pays under her own mandate");
    assert_eq!(attempt_of(&out).status, AttemptStatus::Authorized);
    let out = w
        .engine
        .execute_payment(&agent_p(), &bad("bad-3"))
        .await
        .expect("decided");
    assert!(matches!(out, PaymentOutcome::Refused(_)), "{out:?}");
    // Three of the agent's own violations in a row: it is suspended now.
    let out = w
        .engine
        .execute_payment(&agent_p(), &w.execute("pay-1"))
        .await
        .expect("decided");
    assert!(
        out.decision()
            .is_some_and(|d| d.has(BlockerCode::ActorSuspended)),
        "three own violations in a row and the agent is not suspended: {out:?}"
    );
}

/// **Finding (medium): `execute_payment` idempotency and attempt ids are scoped to the
/// request's actor id, not to the principal.**
///
/// docs/design.md: "`execute_payment` keeps the request actor's scope, which is the same
/// principal". It is not: the scope and `attempt_id_for` use `request.actor.id` only, without
/// the actor's kind or the buyer. Every buyer's `human` actor ids, and an agent and a system
/// with the same id, share one key space. Attack: Mallory creates her own mandate with a
/// `human` actor carrying the agent's id and pays under key `pay-1`; the attempt
/// `att(agent_123, pay-1)` is hers. When the story agent later pays with its key `pay-1`, it
/// gets `IdempotencyConflict` (denial of service; and the conflict/no-conflict answer tells
/// Mallory which keys the agent used). Two buyers whose apps both call their human actor
/// `web` collide the same way by accident.
///
/// Expected: keys scoped per principal (`Principal::scope_id`, or the actor with its kind and
/// the buyer): the agent's payment under its own key is authorized.
#[tokio::test]
async fn another_principal_cannot_squat_an_agents_payment_key() {
    let w = world().await;
    let actor = human_named_like_the_agent();
    let mcard = mallory_sets_up(&w, &actor).await;
    let out = w
        .engine
        .execute_payment(
            &mallory(),
            &mallory_pays(&w, "pay-1", &actor, "mandate_mallory", &mcard),
        )
        .await
        .expect("Mallory pays under her own mandate");
    assert_eq!(attempt_of(&out).status, AttemptStatus::Authorized);
    let r = w
        .engine
        .execute_payment(&agent_p(), &w.execute("pay-1"))
        .await;
    match r {
        Ok(out) => assert_eq!(attempt_of(&out).status, AttemptStatus::Authorized),
        Err(e) => panic!("the agent's own key was taken by another principal: {e:?}"),
    }
}

/// **Finding (medium): `evaluate` shows any mandate to any agent or buyer.**
///
/// The permission ("the request's actor, its buyer or an operator: a decision tells what a
/// mandate allows") is checked against the request the caller wrote, not against the mandate
/// it names. A stranger agent writes itself in as the actor; Mallory writes herself in as the
/// buyer. Both get the full decision over the story's mandate: its status and the buyer's
/// free-text revocation reason, its buyer id (`BUYER_MISMATCH` message), its validity, merchant
/// and SKU scope, and the ids of its chain (evidence).
///
/// Expected: `NotPermitted` unless the principal acts as the mandate's actor, is the mandate's
/// buyer, or is an operator.
#[tokio::test]
async fn evaluate_does_not_reveal_another_buyers_mandate() {
    let w = world().await;
    w.engine
        .change_mandate(
            &buyer_p(),
            &ChangeMandate::new(
                key("revoke"),
                w.mandate.id().clone(),
                LifecycleEvent::Revoke {
                    reason: "card reported stolen, police case 77"
                        .parse()
                        .expect("text"),
                },
            ),
        )
        .await
        .expect("the buyer revokes");
    let stranger = {
        let mut r = examples::authorize_request(&w.snapshot);
        r.actor = Actor {
            id: id("agent_other_9"),
            kind: ActorKind::Agent,
        };
        r
    };
    let mallory_req = {
        let mut r = examples::authorize_request(&w.snapshot);
        r.actor = Actor {
            id: id("mallory_app"),
            kind: ActorKind::Human,
        };
        r.buyer_id = id("buyer_mallory");
        r
    };
    for (who, p, request) in [
        ("a stranger agent", stranger_agent(), stranger),
        ("another buyer", mallory(), mallory_req),
    ] {
        let r = w
            .engine
            .evaluate(
                &p,
                &Evaluate::new(
                    request,
                    w.snapshot.clone(),
                    examples::valid_checkout(w.snapshot.id()),
                ),
            )
            .await;
        if let Ok(d) = &r {
            let text = format!("{d:?}");
            assert!(
                !text.contains("police case 77"),
                "{who} read the buyer's revocation reason: {text}"
            );
        }
        not_permitted(who, r);
    }
}

/// **Finding (low-medium): a stranger's payment under someone else's mandate is decided,
/// answered and recorded instead of `NotPermitted`.**
///
/// README: `execute_payment` is for "the request's actor only" and a refusal of the principal
/// comes "before anything is decided, held, sent or recorded". A stranger agent names itself
/// as the actor and the story's mandate: the permission passes (it acts as the actor it wrote),
/// the engine decides over the story's mandate, returns the decision (with the same details as
/// `evaluate` above) and writes a `decision` audit event on the story's mandate (the buyer's
/// dispute trail fills with strangers' attempts).
///
/// Expected: `NotPermitted` when the principal does not act as the *mandate's* actor, and the
/// trail unchanged.
#[tokio::test]
async fn a_strangers_payment_under_anothers_mandate_is_not_permitted_and_leaves_no_trace() {
    let w = world().await;
    let before = trail(&w).await.len();
    let mut cmd = w.execute("x-1");
    cmd.request.actor = Actor {
        id: id("agent_other_9"),
        kind: ActorKind::Agent,
    };
    let r = w.engine.execute_payment(&stranger_agent(), &cmd).await;
    let after = trail(&w).await;
    assert!(w.psp.payments().is_empty(), "nothing reached the PSP");
    assert_eq!(
        after.len(),
        before,
        "the stranger's attempt was recorded: {:?}",
        &after[before..]
    );
    not_permitted("a stranger agent", r);
}

/// **Finding (high): a buyer lifts the suspension an operator put on them.**
///
/// The `Principal` documentation: a buyer may "turn the kill switch **on** for themself".
/// `set_suspension` checks only that the party is the buyer themself, not the direction: a
/// buyer an operator suspended (fraud, chargebacks) turns the switch off again and their agents
/// pay at once. The operator's kill switch is not a kill switch.
///
/// Expected: a buyer may turn their own switch on, never off (or at least not off after an
/// operator or system turned it on): `NotPermitted`, and the buyer stays suspended.
#[tokio::test]
async fn a_buyer_cannot_lift_a_suspension_an_operator_imposed() {
    let w = world().await;
    let party = Party::Buyer(examples::buyer());
    w.engine
        .set_suspension(&operator_p(), &suspension("op-on", party.clone(), true))
        .await
        .expect("the operator suspends the buyer");
    let r = w
        .engine
        .set_suspension(&buyer_p(), &suspension("me-off", party, false))
        .await;
    let out = w
        .engine
        .execute_payment(&agent_p(), &w.execute("pay-1"))
        .await
        .expect("decided");
    assert!(
        out.decision()
            .is_some_and(|d| d.has(BlockerCode::BuyerSuspended)),
        "the buyer lifted the operator's suspension and the agent paid: {out:?}"
    );
    not_permitted("the suspended buyer", r);
}

/// **Finding (low-medium): credential keys are scoped to the owner the body names, not to the
/// principal.**
///
/// `store_credential` lets any buyer store a card of their own for any holder (the body's
/// `owner`), and the vault's idempotency scope is `(owner, key)`. Attack: Mallory stores a card
/// of hers for the story agent under a key the buyer will use (`agent-123-card-2`, the README's
/// naming scheme). The buyer's own `store_credential` with that key is then
/// `IdempotencyConflict` (denial of service), and the conflict/replay answer tells Mallory
/// whether the buyer already stored a card for that agent under that key.
///
/// Expected: the buyer's card is stored (keys scoped per principal, e.g. `(scope_id, key)`).
#[tokio::test]
async fn another_buyer_cannot_squat_a_credential_key() {
    let w = world().await;
    let agent = examples::agent().id;
    let mut hers: NewCredential = card(&agent, "pm_card_mastercard");
    hers.buyer_id = id("buyer_mallory");
    w.engine
        .store_credential(&mallory(), &key("agent-123-card-2"), hers)
        .await
        .expect("Mallory may store her card for any holder");
    let r = w
        .engine
        .store_credential(
            &buyer_p(),
            &key("agent-123-card-2"),
            card(&agent, "pm_card_visa"),
        )
        .await;
    match r {
        Ok(stored) => assert_eq!(stored.value.buyer_id, examples::buyer()),
        Err(EngineError::Vault(e @ VaultError::IdempotencyConflict { .. })) => {
            panic!("the buyer's key was squatted by another buyer: {e}")
        }
        Err(e) => panic!("unexpected: {e:?}"),
    }
}

/// **Finding (low): settlement by the buyer or an operator is not attributed in the trail.**
///
/// The change records `by` (the principal) on mandate and suspension events, but a void,
/// refund or order commitment asked by the buyer or an operator writes only attempt
/// transitions and holds: nothing says who asked, so a dispute cannot tell an operator's void
/// from the agent's. (`store_credential` likewise records only the owner, not the buyer or
/// system that stored it.)
///
/// Expected: some event of the void names the operator principal.
#[tokio::test]
async fn an_operators_void_is_attributed_to_the_operator() {
    let w = world().await;
    let a = authorized(&w).await;
    let before = trail(&w).await.len();
    let out = w
        .engine
        .void(&operator_p(), &agent_void("op-void", &a.id))
        .await
        .expect("an operator may void");
    assert_eq!(attempt_of(&out).status, AttemptStatus::Cancelled);
    let after = trail(&w).await;
    let new = &after[before..];
    assert!(
        new.iter().any(|b| b.contains("ops_1")),
        "no event of the void names who asked: {new:#?}"
    );
}

/// **Finding (low-medium): confirmation ids are one namespace for all buyers, chosen by the
/// caller.**
///
/// `record_confirmation` stores the body's `confirmation.id` in a table shared by every buyer,
/// and a different confirmation under an existing id is a store conflict. Attack: Mallory
/// records a confirmation of her own (her buyer id, her mandate) under the id the buyer's
/// confirmation channel will use next (`conf_buyer_456`, or any predictable scheme). The
/// buyer's real confirmation is then refused, and the agent's payment under an "always
/// confirm" rule can never proceed. (Mandate ids, also caller-chosen, squat the same way.)
///
/// Expected: the buyer's confirmation is recorded (ids scoped to the buyer, or generated by
/// the engine).
#[tokio::test]
#[ignore = "open: ids of confirmations (and mandates) are one namespace chosen by callers; generate them unguessable (see the README trust boundary)"]
async fn another_buyer_cannot_squat_a_confirmation_id() {
    let mut spec = backpack_spec(false);
    spec.scope.confirmation = agent_mandate::domain::ConfirmationRule::always();
    let w = world_with(EngineConfig::default(), spec).await;
    mallory_sets_up(&w, &human_named_like_the_agent()).await;
    let conf = |buyer: &str, mandate: &str, who: Actor| Confirmation {
        id: id("conf_buyer_456"),
        buyer_id: id(buyer),
        confirmed_by: who,
        confirmed_at: examples::now(),
        expires_at: None,
        snapshot_id: w.snapshot.id(),
        scope: ConfirmationScope {
            mandate_id: id(mandate),
            actions: [PaymentAction::Authorize].into_iter().collect(),
            max_amount: eur("144.00"),
        },
        channel_ref: id("push:device_42"),
    };
    w.engine
        .record_confirmation(
            &mallory(),
            &RecordConfirmation::new(
                key("m-conf"),
                conf(
                    "buyer_mallory",
                    "mandate_mallory",
                    human_named_like_the_agent(),
                ),
            ),
        )
        .await
        .expect("Mallory confirms her own payment");
    let r = w
        .engine
        .record_confirmation(
            &buyer_p(),
            &RecordConfirmation::new(
                key("b-conf"),
                conf("buyer_456", "mandate_001", common::human()),
            ),
        )
        .await;
    if let Err(e) = &r {
        panic!("the buyer's confirmation was refused because of Mallory's: {e}");
    }
    let out = w
        .engine
        .execute_payment(&agent_p(), &w.execute("pay-1"))
        .await
        .expect("decided");
    assert_eq!(attempt_of(&out).status, AttemptStatus::Authorized);
}

/// **Finding (low): `record_confirmation` tells another buyer which mandate ids exist.**
///
/// Mallory records confirmations of her own naming mandate ids she guesses: an id that does
/// not exist answers `NotFound`, an id of another buyer answers `Invalid` with "mandate ... is
/// of another buyer". (`evaluate` above leaks far more; this one survives a fix of it.)
///
/// Expected: one answer for "not yours" and "does not exist".
#[tokio::test]
async fn record_confirmation_is_no_mandate_existence_oracle() {
    let w = world().await;
    let conf = |n: &str, mandate: &str| {
        RecordConfirmation::new(
            key(n),
            Confirmation {
                id: id(&format!("conf_{n}")),
                buyer_id: id("buyer_mallory"),
                confirmed_by: Actor {
                    id: id("mallory_app"),
                    kind: ActorKind::Human,
                },
                confirmed_at: examples::now(),
                expires_at: None,
                snapshot_id: w.snapshot.id(),
                scope: ConfirmationScope {
                    mandate_id: id(mandate),
                    actions: [PaymentAction::Authorize].into_iter().collect(),
                    max_amount: eur("144.00"),
                },
                channel_ref: id("push:device_666"),
            },
        )
    };
    let exists = w
        .engine
        .record_confirmation(&mallory(), &conf("a", "mandate_001"))
        .await
        .expect_err("not hers");
    let missing = w
        .engine
        .record_confirmation(&mallory(), &conf("b", "mandate_nope"))
        .await
        .expect_err("not there");
    assert!(
        std::mem::discriminant(&exists) == std::mem::discriminant(&missing),
        "another buyer's mandate answers {exists:?}, a missing one {missing:?}"
    );
}

/// **Finding (low, I17): ids may contain invisible and bidirectional format characters.**
///
/// Ids refuse control characters and white space, but not Unicode format characters: a
/// zero-width space (U+200B) or a right-to-left override (U+202E) make an id that prints like
/// another one. The engine compares bytes and keeps the principals apart (see
/// `look_alike_ids_are_strangers`), but every human reading the trail, an error or a
/// `NotPermitted` reason (an operator deciding whom to suspend, a buyer reading a dispute) sees
/// `agent_123` for two different principals. I17 asks for one meaning per input.
///
/// Expected: ids with format characters (general category Cf) are refused.
#[test]
fn ids_refuse_invisible_and_bidi_characters() {
    for text in [
        "agent_123\u{200b}",
        "agent\u{202e}321_tnega",
        "\u{feff}agent_123",
    ] {
        assert!(
            agent_mandate::domain::ActorId::new(text).is_err(),
            "{text:?} is accepted as an actor id"
        );
        assert!(
            agent_mandate::domain::BuyerId::new(text).is_err(),
            "{text:?} is accepted as a buyer id"
        );
    }
}

// ======================================================================================
// Guards (pass on the reviewed code)
// ======================================================================================

/// Guard: principals with ids at the length limit (their idempotency scope is the hashed
/// `kind#sha256` form) pay, capture and replay like any other, and a buyer principal with the
/// same long id text is still a stranger to the agent's attempt.
#[tokio::test]
async fn longest_ids_keep_their_own_scope() {
    let long = "a".repeat(agent_mandate::domain::MAX_ID_LEN);
    let actor = Actor {
        id: id(&long),
        kind: ActorKind::Agent,
    };
    let mut spec = backpack_spec(true);
    spec.actor = actor.clone();
    let w = world_with(EngineConfig::default(), spec).await;
    let c = w
        .engine
        .store_credential(
            &buyer_p(),
            &key("long-card"),
            card(&actor.id, "pm_card_visa"),
        )
        .await
        .expect("stored")
        .value
        .reference;
    let mut cmd = w.execute("pay-long");
    cmd.request.actor = actor.clone();
    cmd.credential = c;
    let p = Principal::Agent(actor.id.clone());
    let a = attempt_of(&w.engine.execute_payment(&p, &cmd).await.expect("pays"));
    assert_eq!(a.status, AttemptStatus::Authorized);
    assert!(w
        .engine
        .execute_payment(&p, &cmd)
        .await
        .expect("replay")
        .is_replay());
    let cap = agent_capture("cap-long", &a.id, None);
    assert!(!w
        .engine
        .capture(&p, &cap)
        .await
        .expect("captures")
        .is_replay());
    assert!(w
        .engine
        .capture(&p, &cap)
        .await
        .expect("replay")
        .is_replay());
    not_permitted(
        "a buyer with the agent's long id",
        w.engine
            .refund(
                &Principal::Buyer(id(&long)),
                &agent_refund("cap-long", &a.id, None),
            )
            .await,
    );
}

/// Guard: an agent that works for two buyers cannot spend one buyer's card under the other's
/// mandate, nor a card the buyer stored for another agent: `CREDENTIAL_NOT_USABLE`, nothing
/// reaches the PSP.
#[tokio::test]
async fn an_agent_cannot_carry_a_card_across_buyers_or_holders() {
    let w = world().await;
    // Mallory hires the story's agent too.
    w.engine
        .create_mandate(
            &mallory(),
            &CreateMandate::new(key("mallory-create"), mallory_spec(examples::agent())),
        )
        .await
        .expect("created");
    let cmd = mallory_pays(&w, "x-1", &examples::agent(), "mandate_mallory", &w.card);
    let out = w
        .engine
        .execute_payment(&agent_p(), &cmd)
        .await
        .expect("decided");
    assert!(
        out.decision()
            .is_some_and(|d| d.has(BlockerCode::CredentialNotUsable)),
        "the buyer's card paid Mallory's order: {out:?}"
    );
    // A card of the buyer's stored for another agent.
    let other = w
        .engine
        .store_credential(
            &buyer_p(),
            &key("card-9"),
            card(&id("agent_other_9"), "pm_card_visa"),
        )
        .await
        .expect("stored")
        .value
        .reference;
    let mut cmd = w.execute("x-2");
    cmd.credential = other;
    let out = w
        .engine
        .execute_payment(&agent_p(), &cmd)
        .await
        .expect("decided");
    assert!(
        out.decision()
            .is_some_and(|d| d.has(BlockerCode::CredentialNotUsable)),
        "another holder's card paid: {out:?}"
    );
    assert!(w.psp.payments().is_empty());
}

/// Guard (control for `another_principal_cannot_reset_an_agents_block_count`): three of the
/// agent's own counted violations in a row suspend it.
#[tokio::test]
async fn three_own_violations_suspend_the_agent() {
    let w = world().await;
    let over = examples::over_limit_snapshot();
    for k in ["bad-1", "bad-2", "bad-3"] {
        let mut cmd = w.execute(k);
        cmd.request = examples::authorize_request(&over);
        cmd.snapshot = over.clone();
        cmd.checkout = examples::valid_checkout(over.id());
        let out = w
            .engine
            .execute_payment(&agent_p(), &cmd)
            .await
            .expect("decided");
        assert!(matches!(out, PaymentOutcome::Refused(_)), "{out:?}");
    }
    let out = w
        .engine
        .execute_payment(&agent_p(), &w.execute("pay-1"))
        .await
        .expect("decided");
    assert!(
        out.decision()
            .is_some_and(|d| d.has(BlockerCode::ActorSuspended)),
        "{out:?}"
    );
}

/// Guard (I10): a refused `store_credential` does not echo the secret it was handed, in its
/// message or its debug form.
#[tokio::test]
async fn a_refused_credential_never_echoes_its_secret() {
    let w = world().await;
    let e = w
        .engine
        .store_credential(
            &mallory(),
            &key("steal"),
            card(
                &examples::agent().id,
                "pm_secret_TOPSECRET_4111111111111111",
            ),
        )
        .await
        .expect_err("not her card");
    assert!(matches!(e, EngineError::NotPermitted { .. }), "{e:?}");
    for text in [e.to_string(), format!("{e:?}")] {
        assert!(!text.contains("TOPSECRET"), "{text}");
        assert!(!text.contains("4111111111111111"), "{text}");
    }
}

/// Guard: Mallory acting as a `human` actor cannot pay under the buyer's mandate whose actor is
/// a `human` with the same id: naming the real buyer or naming herself is `NotPermitted` (the
/// mandate's buyer decides whose its `human` actor is); nothing is held or sent.
#[tokio::test]
async fn a_buyer_cannot_pay_as_the_human_actor_of_another_buyers_mandate() {
    let mut spec = backpack_spec(true);
    spec.actor = common::human();
    let w = world_with(EngineConfig::default(), spec).await;
    let mut cmd = w.execute("h-1");
    cmd.request.actor = common::human();
    not_permitted(
        "another buyer naming the real buyer",
        w.engine.execute_payment(&mallory(), &cmd).await,
    );
    cmd.request.buyer_id = id("buyer_mallory");
    not_permitted(
        "another buyer naming herself",
        w.engine.execute_payment(&mallory(), &cmd).await,
    );
    assert!(w.psp.payments().is_empty());
    assert!(w.usage().await.held.is_zero());
}

/// Guard: an agent, a system and an operator with the same id text are three principals: the
/// system `agent_123` cannot pay, capture, void, refund or commit as the agent `agent_123`.
#[tokio::test]
async fn a_system_with_the_agents_id_is_not_the_agent() {
    let w = world().await;
    let sys = Principal::System(examples::agent().id);
    not_permitted(
        "system pays",
        w.engine.execute_payment(&sys, &w.execute("s-0")).await,
    );
    let a = authorized(&w).await;
    not_permitted(
        "system captures",
        w.engine
            .capture(&sys, &agent_capture("s-1", &a.id, None))
            .await,
    );
    not_permitted(
        "system voids",
        w.engine.void(&sys, &agent_void("s-2", &a.id)).await,
    );
    not_permitted(
        "system refunds",
        w.engine
            .refund(&sys, &agent_refund("s-3", &a.id, None))
            .await,
    );
    not_permitted(
        "system commits",
        w.engine.commit_order(&sys, &commit("s-4", &w, &a)).await,
    );
    // The operator with the agent's id voids as an operator, never captures as the agent.
    let op = Principal::Operator(examples::agent().id);
    not_permitted(
        "operator captures",
        w.engine
            .capture(&op, &agent_capture("o-1", &a.id, None))
            .await,
    );
    assert_eq!(
        w.engine
            .ports()
            .store
            .attempt(&a.id)
            .await
            .unwrap()
            .unwrap()
            .status,
        AttemptStatus::Authorized
    );
}

/// Guard: ids that differ from the agent's only in case, by a look-alike letter or by an
/// invisible character are other principals (ids compare byte for byte). The host may be
/// confused by them; the engine is not.
#[tokio::test]
async fn look_alike_ids_are_strangers() {
    let w = world().await;
    let a = authorized(&w).await;
    for (n, text) in [
        "AGENT_123",
        "\u{0430}gent_123", // a Cyrillic a
        "agent\u{2010}123", // a hyphen
    ]
    .into_iter()
    .enumerate()
    {
        let p = Principal::Agent(id(text));
        not_permitted(
            text,
            w.engine
                .capture(&p, &agent_capture(&format!("l-{n}"), &a.id, None))
                .await,
        );
        not_permitted(
            text,
            w.engine
                .void(&p, &agent_void(&format!("lv-{n}"), &a.id))
                .await,
        );
    }
    for (n, text) in ["BUYER_456", "\u{0432}uyer_456"].into_iter().enumerate() {
        let b = Principal::Buyer(id(text));
        not_permitted(
            text,
            w.engine
                .void(&b, &agent_void(&format!("lb-{n}"), &a.id))
                .await,
        );
    }
    let now = w
        .engine
        .ports()
        .store
        .attempt(&a.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(now.status, AttemptStatus::Authorized);
}

/// Guard: idempotency answers never cross principals. The buyer voids under `v-1`; an operator
/// and Mallory sending the identical command under `v-1` are not answered with the buyer's
/// replay: the operator's command runs for itself (and meets a cancelled attempt), Mallory is
/// `NotPermitted`. The same for `commit_order`'s `Existing` answer.
#[tokio::test]
async fn replays_never_cross_principals() {
    let w = world().await;
    let a = authorized(&w).await;
    let v = agent_void("v-1", &a.id);
    let done = w
        .engine
        .void(&buyer_p(), &v)
        .await
        .expect("the buyer voids");
    assert!(!done.is_replay());
    assert!(w
        .engine
        .void(&buyer_p(), &v)
        .await
        .expect("replay")
        .is_replay());
    match w.engine.void(&operator_p(), &v).await {
        Ok(out) => assert!(!out.is_replay(), "the operator got the buyer's replay"),
        Err(EngineError::NotPermitted { .. }) => panic!("an operator may void"),
        Err(_) => {} // the attempt is cancelled already
    }
    not_permitted("Mallory replaying", w.engine.void(&mallory(), &v).await);
    not_permitted(
        "a stranger agent replaying",
        w.engine.void(&stranger_agent(), &v).await,
    );

    let w = world().await;
    let a = authorized(&w).await;
    let c = commit("c-1", &w, &a);
    let out = w
        .engine
        .commit_order(&buyer_p(), &c)
        .await
        .expect("commits");
    assert!(matches!(out, OrderOutcome::Committed { .. }), "{out:?}");
    not_permitted(
        "Mallory reading the order",
        w.engine.commit_order(&mallory(), &c).await,
    );
    not_permitted(
        "a system reading the order",
        w.engine.commit_order(&system_p(), &c).await,
    );
}

/// Guard: an agent allowed on its own attempt cannot name another's, under a new key or under
/// the key it used on its own: capture, void, refund and commit of the story agent's attempt
/// are `NotPermitted` (or, under the key of its own capture, `IdempotencyConflict`: nothing
/// runs either) and the attempt is untouched.
#[tokio::test]
async fn an_agent_allowed_on_its_attempt_cannot_name_another() {
    let w = world().await;
    let story = authorized(&w).await;
    // The buyer hires a second agent under a mandate of its own.
    let mut spec = backpack_spec(true);
    spec.id = id("mandate_002");
    spec.actor = Actor {
        id: id("agent_other_9"),
        kind: ActorKind::Agent,
    };
    w.engine
        .create_mandate(&buyer_p(), &CreateMandate::new(key("create-2"), spec))
        .await
        .expect("created");
    let other_card = w
        .engine
        .store_credential(
            &buyer_p(),
            &key("card-9"),
            card(&id("agent_other_9"), "pm_card_visa"),
        )
        .await
        .expect("stored")
        .value
        .reference;
    let mut cmd = w.execute("pay-1");
    cmd.request.actor = Actor {
        id: id("agent_other_9"),
        kind: ActorKind::Agent,
    };
    cmd.request.mandate_id = id("mandate_002");
    cmd.credential = other_card;
    let own = attempt_of(
        &w.engine
            .execute_payment(&stranger_agent(), &cmd)
            .await
            .expect("the second agent pays"),
    );
    assert_eq!(own.status, AttemptStatus::Authorized);
    assert_ne!(own.id, story.id, "same key, another actor: another attempt");
    let o = stranger_agent();
    w.engine
        .capture(&o, &agent_capture("cap", &own.id, None))
        .await
        .expect("its own capture");
    for k in ["cap", "new"] {
        refused(
            "capture",
            w.engine
                .capture(&o, &agent_capture(k, &story.id, None))
                .await,
        );
        refused("void", w.engine.void(&o, &agent_void(k, &story.id)).await);
        refused(
            "refund",
            w.engine.refund(&o, &agent_refund(k, &story.id, None)).await,
        );
        refused(
            "commit",
            w.engine.commit_order(&o, &commit(k, &w, &story)).await,
        );
    }
    let now = w
        .engine
        .ports()
        .store
        .attempt(&story.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(now.status, AttemptStatus::Authorized);
}

/// Guard: a stranger's `commit_order` never starts a recovery (a stranger settling
/// another buyer's payment): `NotPermitted`, the authorization stays at the PSP, no `order_failed` or
/// `recovery` event. Also with a checkout the stranger made invalid on purpose.
#[tokio::test]
async fn a_strangers_commit_never_starts_a_recovery() {
    let w = world().await;
    let a = authorized(&w).await;
    let money = psp_money(&w.psp);
    let before = trail(&w).await.len();
    for (n, p) in [mallory(), stranger_agent(), system_p()].iter().enumerate() {
        let mut c = commit(&format!("sc-{n}"), &w, &a);
        c.checkout = examples::invalid_checkout();
        not_permitted(&format!("{p:?}"), w.engine.commit_order(p, &c).await);
    }
    assert_eq!(psp_money(&w.psp), money);
    let after = trail(&w).await;
    assert_eq!(after.len(), before, "{:?}", &after[before..]);
    let now = w
        .engine
        .ports()
        .store
        .attempt(&a.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(now.status, AttemptStatus::Authorized);
}

/// Guard: commands refused as `NotPermitted` leave nothing: no audit event (not even a replay
/// event), no idempotency record (the same principal retrying the key is refused again, not
/// `IdempotencyInFlight` or a replay), no mandate change, no stored confirmation.
#[tokio::test]
async fn refused_commands_leave_no_trace() {
    let w = world().await;
    let a = authorized(&w).await;
    let before = trail(&w).await.len();
    let m = mallory();
    for _ in 0..2 {
        not_permitted("void", w.engine.void(&m, &agent_void("k", &a.id)).await);
        not_permitted(
            "refund",
            w.engine.refund(&m, &agent_refund("k", &a.id, None)).await,
        );
        not_permitted(
            "capture",
            w.engine.capture(&m, &agent_capture("k", &a.id, None)).await,
        );
        not_permitted(
            "commit",
            w.engine.commit_order(&m, &commit("k", &w, &a)).await,
        );
        not_permitted(
            "revoke",
            w.engine
                .change_mandate(
                    &m,
                    &ChangeMandate::new(
                        key("k"),
                        w.mandate.id().clone(),
                        LifecycleEvent::Revoke {
                            reason: "mine now".parse().unwrap(),
                        },
                    ),
                )
                .await,
        );
        not_permitted(
            "suspend the agent",
            w.engine
                .set_suspension(
                    &m,
                    &suspension("k", Party::Actor(examples::agent().id), true),
                )
                .await,
        );
        not_permitted(
            "suspend the buyer",
            w.engine
                .set_suspension(&m, &suspension("k2", Party::Buyer(examples::buyer()), true))
                .await,
        );
        let mut child = w.mandate.spec().clone();
        child.id = id("mandate_child_m");
        child.parent_id = Some(w.mandate.id().clone());
        child.buyer_id = id("buyer_mallory");
        not_permitted(
            "derive",
            w.engine
                .derive_mandate(&m, &DeriveMandate::new(key("k"), child))
                .await,
        );
        not_permitted(
            "store a card of the buyer's",
            w.engine
                .store_credential(&m, &key("k"), card(&id("agent_m"), "pm_card_visa"))
                .await,
        );
        not_permitted(
            "revoke the agent's cards",
            w.engine.revoke_credentials(&m, &examples::agent().id).await,
        );
        not_permitted(
            "void all",
            w.engine.void_open_authorizations(&m, w.mandate.id()).await,
        );
    }
    let after = trail(&w).await;
    assert_eq!(after.len(), before, "{:#?}", &after[before..]);
    let now = w
        .engine
        .ports()
        .store
        .attempt(&a.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(now.status, AttemptStatus::Authorized);
    assert_eq!(
        w.engine
            .ports()
            .store
            .mandate(w.mandate.id())
            .await
            .unwrap()
            .unwrap()
            .status(),
        w.mandate.status()
    );
}

/// Guard: confirmations. Mallory cannot record one for the buyer (`NotPermitted`), nor one of
/// her own bound to the buyer's mandate (`Invalid`), and the buyer's mandate under an
/// "always confirm" rule still asks the buyer.
#[tokio::test]
async fn another_buyers_confirmation_never_counts() {
    let mut spec = backpack_spec(false);
    spec.scope.confirmation = agent_mandate::domain::ConfirmationRule::always();
    let w = world_with(EngineConfig::default(), spec).await;
    let conf = |buyer: &str| Confirmation {
        id: id(&format!("conf_{buyer}")),
        buyer_id: id(buyer),
        confirmed_by: Actor {
            id: id("mallory_app"),
            kind: ActorKind::Human,
        },
        confirmed_at: examples::now(),
        expires_at: None,
        snapshot_id: w.snapshot.id(),
        scope: ConfirmationScope {
            mandate_id: w.mandate.id().clone(),
            actions: [PaymentAction::Authorize].into_iter().collect(),
            max_amount: eur("144.00"),
        },
        channel_ref: id("push:device_666"),
    };
    not_permitted(
        "for the buyer",
        w.engine
            .record_confirmation(
                &mallory(),
                &RecordConfirmation::new(key("rc-1"), conf("buyer_456")),
            )
            .await,
    );
    let r = w
        .engine
        .record_confirmation(
            &mallory(),
            &RecordConfirmation::new(key("rc-2"), conf("buyer_mallory")),
        )
        .await;
    // Another buyer's mandate does not exist for Mallory.
    assert!(matches!(r, Err(EngineError::NotFound { .. })), "{r:?}");
    // An agent confirming as "the buyer's human" is refused too.
    let mut c = conf("buyer_456");
    c.confirmed_by = common::human();
    not_permitted(
        "the agent",
        w.engine
            .record_confirmation(&agent_p(), &RecordConfirmation::new(key("rc-3"), c))
            .await,
    );
    let out = w
        .engine
        .execute_payment(&agent_p(), &w.execute("pay-1"))
        .await
        .expect("decided");
    assert!(
        out.decision()
            .is_some_and(|d| d.has(BlockerCode::ConfirmationRequired)),
        "{out:?}"
    );
}

/// Guard: a deriver cannot move authority to another buyer: the agent deriving a child whose
/// `buyer_id` is Mallory's is refused by attenuation (I6), and Mallory cannot derive from the
/// buyer's mandate at all.
#[tokio::test]
async fn a_child_cannot_change_buyer() {
    let w = world().await;
    let mut child = w.mandate.spec().clone();
    child.id = id("mandate_child_x");
    child.parent_id = Some(w.mandate.id().clone());
    child.buyer_id = id("buyer_mallory");
    child.actor = human_named_like_the_agent();
    let r = w
        .engine
        .derive_mandate(&agent_p(), &DeriveMandate::new(key("d-1"), child.clone()))
        .await;
    assert!(matches!(r, Err(EngineError::Delegation(_))), "{r:?}");
    not_permitted(
        "Mallory",
        w.engine
            .derive_mandate(&mallory(), &DeriveMandate::new(key("d-2"), child))
            .await,
    );
    assert!(w
        .engine
        .ports()
        .store
        .mandate(&id("mandate_child_x"))
        .await
        .unwrap()
        .is_none());
}

/// Guard: the kill switch. Mallory cannot suspend or resume the agent or the buyer; the buyer
/// cannot suspend the agent (it works for others) nor lift the agent's suspension; the agent
/// cannot lift its own; an operator's suspension command replayed under the same key by
/// Mallory is `NotPermitted`, not a replay.
#[tokio::test]
async fn the_kill_switch_belongs_to_operators() {
    let w = world().await;
    let agent = Party::Actor(examples::agent().id);
    let on = suspension("s-1", agent.clone(), true);
    w.engine
        .set_suspension(&operator_p(), &on)
        .await
        .expect("an operator suspends");
    not_permitted(
        "Mallory replaying",
        w.engine.set_suspension(&mallory(), &on).await,
    );
    for (who, p) in [
        ("agent", agent_p()),
        ("buyer", buyer_p()),
        ("Mallory", mallory()),
    ] {
        not_permitted(
            who,
            w.engine
                .set_suspension(&p, &suspension(&format!("off-{who}"), agent.clone(), false))
                .await,
        );
    }
    let out = w
        .engine
        .execute_payment(&agent_p(), &w.execute("pay-1"))
        .await
        .expect("decided");
    assert!(
        out.decision()
            .is_some_and(|d| d.has(BlockerCode::ActorSuspended)),
        "{out:?}"
    );
    not_permitted(
        "Mallory suspending the buyer",
        w.engine
            .set_suspension(
                &mallory(),
                &suspension("b-1", Party::Buyer(examples::buyer()), true),
            )
            .await,
    );
}

/// Guard: with `void_on_revoke`, a stranger's refused revocation voids nothing (the void runs
/// only after the revocation passed).
#[tokio::test]
async fn a_strangers_revoke_triggers_no_void() {
    let config = EngineConfig::default().with_void_on_revoke(true);
    let w = world_with(config, backpack_spec(false)).await;
    let a = authorized(&w).await;
    for (n, p) in [mallory(), stranger_agent()].iter().enumerate() {
        not_permitted(
            "revoke",
            w.engine
                .change_mandate(
                    p,
                    &ChangeMandate::new(
                        key(&format!("r-{n}")),
                        w.mandate.id().clone(),
                        LifecycleEvent::Revoke {
                            reason: "x".parse().unwrap(),
                        },
                    ),
                )
                .await,
        );
    }
    let now = w
        .engine
        .ports()
        .store
        .attempt(&a.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(now.status, AttemptStatus::Authorized);
}

/// Guard (I16): after the buyer revokes the mandate and an operator suspends the agent, the
/// agent can no longer capture, but the buyer and an operator still refund and void.
#[tokio::test]
async fn settlement_survives_revocation_and_suspension_for_buyer_and_operator() {
    let w = world().await;
    let a = authorized(&w).await;
    w.engine
        .change_mandate(
            &buyer_p(),
            &ChangeMandate::new(
                key("rv"),
                w.mandate.id().clone(),
                LifecycleEvent::Revoke {
                    reason: "done".parse().unwrap(),
                },
            ),
        )
        .await
        .expect("revoked");
    w.engine
        .set_suspension(
            &operator_p(),
            &suspension("sus", Party::Actor(examples::agent().id), true),
        )
        .await
        .expect("suspended");
    let out = w
        .engine
        .capture(&agent_p(), &agent_capture("cap", &a.id, None))
        .await
        .expect("decided");
    assert!(matches!(out, PaymentOutcome::Refused(_)), "{out:?}");
    let out = w
        .engine
        .void(&buyer_p(), &agent_void("bv", &a.id))
        .await
        .expect("the buyer voids");
    assert_eq!(attempt_of(&out).status, AttemptStatus::Cancelled);
    assert_eq!(psp_money(&w.psp), 0);
}

/// Guard: the audit trail names the principal on the events that carry `by`: the buyer's
/// revocation and the operator's suspension.
#[tokio::test]
async fn mandate_and_suspension_events_name_their_principal() {
    let w = world().await;
    let before = trail(&w).await.len();
    w.engine
        .change_mandate(
            &buyer_p(),
            &ChangeMandate::new(
                key("rv"),
                w.mandate.id().clone(),
                LifecycleEvent::Revoke {
                    reason: "done".parse().unwrap(),
                },
            ),
        )
        .await
        .expect("revoked");
    w.engine
        .set_suspension(
            &operator_p(),
            &suspension("sus", Party::Actor(examples::agent().id), true),
        )
        .await
        .expect("suspended");
    let after = trail(&w).await;
    let new = after[before..].join("\n");
    assert!(
        new.contains(r#""by":{"kind":"buyer","id":"buyer_456"}"#),
        "{new}"
    );
    assert!(
        new.contains(r#""by":{"kind":"operator","id":"ops_1"}"#),
        "{new}"
    );
}
