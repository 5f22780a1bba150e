//! The conformance suite for [`CredentialVault`] adapters (I10, I11).

use std::collections::BTreeSet;
use std::fmt::Debug;
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{DateTime, Datelike, Duration, Utc};

use crate::domain::{ActorId, BuyerId, CredentialRef, CredentialStatus, IdempotencyKey};
use crate::ports::{
    CredentialDisplay, CredentialKind, CredentialVault, FundingType, NewCredential, Secret,
    StoreOutcome, StoredCredential, VaultError,
};

static VAULT_RUN: AtomicU64 = AtomicU64::new(1);

/// Runs every vault check at time `now`; panics naming the first broken rule.
///
/// The vault may hold other credentials: the suite uses owners and secrets of its own (unique
/// per call, derived from `now` and a counter). `now` must lie between February 2000 and
/// November 2199 (card expiry years are 2000 to 2199). It checks: `store` returns a fresh
/// reference and the public part as given; references are distinct, at least 22 characters
/// (room for 128 random bits) and show neither the owner, the key nor the secret; `store` with
/// a key already used by the owner answers the same credential as a replay when the content
/// is the same (also once it is revoked), and `IdempotencyConflict` when the secret, CVC,
/// kind, buyer or display differ; the key is scoped to the owner; a refused (invalid) store
/// does not use the key; `describe`, `status` (`Usable`) and `resolve` (the
/// secret and CVC) of it; a card in its expiry month is usable, the month after it is `Expired`
/// and `resolve` refuses it; `revoke` returns `true` then `false` and the credential stays
/// `Revoked`; `revoke_owner` counts only the credentials it revoked and spares other owners;
/// every bad display field and an empty secret are `Invalid` naming the field, and nothing is
/// stored for them; an unknown reference is `NotFound` everywhere; and no returned value or
/// error shows a secret in `Debug`, `Display` or its serde JSON (I10).
pub async fn credential_vault_conformance(vault: &dyn CredentialVault, now: DateTime<Utc>) {
    let run = VAULT_RUN.fetch_add(1, Ordering::Relaxed);
    let tag = format!("{}-{run}", now.timestamp_micros());
    let owner = actor(&format!("vault-suite-{tag}-a"));
    let other_owner = actor(&format!("vault-suite-{tag}-b"));
    let bad_owner = actor(&format!("vault-suite-{tag}-bad"));
    let buyer = BuyerId::new(format!("vault-suite-buyer-{tag}"))
        .unwrap_or_else(|e| panic!("vault rule fixture: {e}"));
    let secrets: Vec<String> = (0..6)
        .map(|i| format!("tok_SuiteSecret{i}x4242424242424242q{tag}"))
        .collect();
    let cvc = format!("cvcSuite{tag}");
    let leaks =
        |text: &str| secrets.iter().any(|s| text.contains(s.as_str())) || text.contains(&cvc);
    let shown = |rule: &str, value: &dyn Debug| {
        let text = format!("{value:?}");
        assert!(
            !leaks(&text),
            "vault rule {rule}: a secret appears in Debug output: {text}"
        );
    };
    let error_shown = |rule: &str, e: &VaultError| {
        shown(rule, e);
        let text = e.to_string();
        assert!(
            !leaks(&text),
            "vault rule {rule}: a secret appears in an error's Display: {text}"
        );
    };
    let json_shown = |rule: &str, value: &StoreOutcome| {
        let text = serde_json::to_string(value)
            .unwrap_or_else(|e| panic!("vault rule {rule}: the outcome serialises: {e}"));
        assert!(
            !leaks(&text),
            "vault rule {rule}: a secret appears in serde JSON: {text}"
        );
    };
    let key = |name: &str| {
        IdempotencyKey::new(format!("vault-suite-{tag}-{name}"))
            .unwrap_or_else(|e| panic!("vault rule fixture: {e}"))
    };

    let (year, month) = (now.year(), now.month());
    let this_month = display(year, month);
    let (py, pm) = if month == 1 {
        (year - 1, 12)
    } else {
        (year, month - 1)
    };
    let last_month = display(py, pm);
    let new = |owner: &ActorId, secret: &str, display: &CredentialDisplay, cvc: Option<&str>| {
        NewCredential {
            kind: CredentialKind::NetworkToken,
            owner: owner.clone(),
            buyer_id: buyer.clone(),
            secret: Secret::new(secret),
            cvc: cvc.map(Secret::new),
            display: display.clone(),
        }
    };

    // store, describe, status, resolve.
    let input = new(&owner, &secrets[0], &this_month, Some(&cvc));
    let first = store_outcome(vault, &key("a"), input.clone(), "store").await;
    json_shown("store", &first);
    assert!(!first.replay, "vault rule store: a new key is not a replay");
    let a = first.credential;
    shown("store", &a);
    assert_eq!(
        (&a.owner, &a.buyer_id, a.kind, &a.display),
        (&owner, &buyer, input.kind, &this_month),
        "vault rule store: returns the public part as given"
    );
    let b = store(
        vault,
        &key("b"),
        new(&owner, &secrets[1], &this_month, None),
        "store",
    )
    .await;
    assert_ne!(
        a.reference, b.reference,
        "vault rule store: every credential gets a fresh reference"
    );
    let described = vault
        .describe(&a.reference)
        .await
        .unwrap_or_else(|e| panic!("vault rule describe: {e:?}"));
    assert_eq!(described, a, "vault rule describe: the stored public part");
    assert_eq!(
        status(vault, &a.reference, now).await,
        CredentialStatus::Usable,
        "vault rule status: a new credential is usable (in its expiry month too)"
    );
    let resolved = vault
        .resolve(&a.reference, now)
        .await
        .unwrap_or_else(|e| panic!("vault rule resolve: {e:?}"));
    shown("resolve", &resolved);
    assert_eq!(
        resolved.secret.expose(),
        secrets[0],
        "vault rule resolve: returns the secret"
    );
    assert_eq!(
        resolved.cvc.as_ref().map(Secret::expose),
        Some(cvc.as_str()),
        "vault rule resolve: returns the CVC"
    );
    assert_eq!(
        resolved.stored, a,
        "vault rule resolve: with the public part"
    );

    // expiry: valid through the end of the expiry month.
    let next_month = now + Duration::days(32);
    assert_eq!(
        status(vault, &a.reference, next_month).await,
        CredentialStatus::Expired,
        "vault rule expiry: expired after its expiry month"
    );
    let expired = store(
        vault,
        &key("expired"),
        new(&other_owner, &secrets[2], &last_month, None),
        "store",
    )
    .await;
    assert_eq!(
        status(vault, &expired.reference, now).await,
        CredentialStatus::Expired,
        "vault rule expiry: a card whose month has passed is expired"
    );
    match vault.resolve(&expired.reference, now).await {
        Err(
            e @ VaultError::NotUsable {
                status: CredentialStatus::Expired,
                ..
            },
        ) => shown("expiry", &e),
        other => panic!("vault rule expiry: resolve refuses an expired card, got {other:?}"),
    }

    // revoke: true, then false; permanent.
    assert!(
        revoke(vault, &a.reference).await,
        "vault rule revoke: revoking a usable credential returns true"
    );
    assert!(
        !revoke(vault, &a.reference).await,
        "vault rule revoke: revoking again returns false"
    );
    assert_eq!(
        status(vault, &a.reference, now).await,
        CredentialStatus::Revoked,
        "vault rule revoke: the credential is revoked"
    );
    match vault.resolve(&a.reference, now).await {
        Err(
            e @ VaultError::NotUsable {
                status: CredentialStatus::Revoked,
                ..
            },
        ) => {
            shown("revoke", &e);
            assert!(
                !leaks(&e.to_string()),
                "vault rule revoke: secret in Display"
            );
        }
        other => panic!("vault rule revoke: resolve refuses a revoked credential, got {other:?}"),
    }
    assert_eq!(
        vault
            .describe(&a.reference)
            .await
            .unwrap_or_else(|e| panic!("vault rule revoke: still described: {e:?}")),
        a,
        "vault rule revoke: the public part stays"
    );

    // revoke_owner: counts what it revoked now, spares other owners.
    let c = store(
        vault,
        &key("c"),
        new(&owner, &secrets[3], &this_month, None),
        "store",
    )
    .await;
    let spared = store(
        vault,
        &key("spared"),
        new(&other_owner, &secrets[4], &this_month, None),
        "store",
    )
    .await;
    assert_eq!(
        revoke_owner(vault, &owner).await,
        2,
        "vault rule revoke_owner: counts the credentials revoked now (b and c, not a)"
    );
    assert_eq!(
        revoke_owner(vault, &owner).await,
        0,
        "vault rule revoke_owner: idempotent"
    );
    for r in [&b.reference, &c.reference] {
        assert_eq!(
            status(vault, r, now).await,
            CredentialStatus::Revoked,
            "vault rule revoke_owner: every credential of the owner is revoked"
        );
    }
    assert_eq!(
        status(vault, &spared.reference, now).await,
        CredentialStatus::Usable,
        "vault rule revoke_owner: other owners keep theirs"
    );

    // invalid input names the field; nothing is stored.
    let mut cases: Vec<(NewCredential, &str)> = Vec::new();
    let bad = |f: &dyn Fn(&mut CredentialDisplay)| {
        let mut d = this_month.clone();
        f(&mut d);
        new(&bad_owner, &secrets[5], &d, None)
    };
    cases.push((bad(&|d| d.brand = String::new()), "display.brand"));
    cases.push((bad(&|d| d.brand = "vi sa".into()), "display.brand"));
    cases.push((bad(&|d| d.last4 = "42a2".into()), "display.last4"));
    cases.push((bad(&|d| d.last4 = "42424".into()), "display.last4"));
    cases.push((bad(&|d| d.exp_month = 0), "display.exp_month"));
    cases.push((bad(&|d| d.exp_month = 13), "display.exp_month"));
    cases.push((bad(&|d| d.exp_year = 1999), "display.exp_year"));
    cases.push((new(&bad_owner, "", &this_month, None), "secret"));
    for (input, field) in cases {
        match vault.store(&key("bad"), input).await {
            Err(e @ VaultError::Invalid { field: got }) => {
                assert_eq!(got, field, "vault rule invalid: names the bad field");
                shown("invalid", &e);
            }
            other => panic!("vault rule invalid: {field} must be Invalid, got {other:?}"),
        }
    }
    assert_eq!(
        revoke_owner(vault, &bad_owner).await,
        0,
        "vault rule invalid: nothing is stored for a refused credential"
    );

    // idempotency: same key and content is a replay (also once revoked), other content a
    // conflict, the key is scoped to the owner, and a refused store does not use its key.
    let again = store_outcome(vault, &key("a"), input.clone(), "idempotency").await;
    json_shown("idempotency", &again);
    assert!(
        again.replay && again.credential == a,
        "vault rule idempotency: the same key and content answer the stored credential as a \
         replay (here revoked since), got {again:?}"
    );
    let mut conflicts: Vec<(NewCredential, &str)> = vec![
        (new(&owner, &secrets[5], &this_month, Some(&cvc)), "secret"),
        (new(&owner, &secrets[0], &this_month, None), "no cvc"),
        (
            new(&owner, &secrets[0], &this_month, Some(&format!("{cvc}9"))),
            "cvc",
        ),
        (new(&owner, &secrets[0], &last_month, Some(&cvc)), "display"),
    ];
    let mut other_kind = input.clone();
    other_kind.kind = CredentialKind::VirtualCard;
    conflicts.push((other_kind, "kind"));
    let mut other_buyer = input.clone();
    other_buyer.buyer_id = BuyerId::new(format!("vault-suite-buyer-{tag}-2"))
        .unwrap_or_else(|e| panic!("vault rule fixture: {e}"));
    conflicts.push((other_buyer, "buyer"));
    for (changed, what) in conflicts {
        match vault.store(&key("a"), changed).await {
            Err(e @ VaultError::IdempotencyConflict { .. }) => {
                error_shown("idempotency", &e);
                match &e {
                    VaultError::IdempotencyConflict {
                        owner: got_owner,
                        key: got_key,
                    } => assert_eq!(
                        (got_owner, got_key),
                        (&owner, &key("a")),
                        "vault rule idempotency: the conflict names the owner and the key"
                    ),
                    other => panic!("vault rule idempotency: {other:?}"),
                }
            }
            other => panic!(
                "vault rule idempotency: the same key with another {what} is \
                 IdempotencyConflict, got {other:?}"
            ),
        }
    }
    let idem_owner = actor(&format!("vault-suite-{tag}-idem"));
    let mut elsewhere = input.clone();
    elsewhere.owner = idem_owner.clone();
    let scoped = store_outcome(vault, &key("a"), elsewhere.clone(), "idempotency").await;
    assert!(
        !scoped.replay && scoped.credential.reference != a.reference,
        "vault rule idempotency: a key is scoped to its owner (another owner's key `a` stores \
         anew), got {scoped:?}"
    );
    let mut refused = elsewhere.clone();
    refused.display.last4 = "x".into();
    assert!(
        matches!(
            vault.store(&key("fresh"), refused).await,
            Err(VaultError::Invalid { .. })
        ),
        "vault rule idempotency: an invalid credential is refused"
    );
    let after_refusal = store_outcome(vault, &key("fresh"), elsewhere, "idempotency").await;
    assert!(
        !after_refusal.replay,
        "vault rule idempotency: a refused store does not use its key"
    );

    // references: distinct, long enough for 128 random bits, and telling nothing.
    let mut references: BTreeSet<CredentialRef> = [
        &a,
        &b,
        &c,
        &expired,
        &spared,
        &scoped.credential,
        &after_refusal.credential,
    ]
    .into_iter()
    .map(|s| s.reference.clone())
    .collect();
    assert_eq!(
        references.len(),
        7,
        "vault rule references: every credential has its own reference"
    );
    for i in 0..16 {
        let more = store(
            vault,
            &key(&format!("many-{i}")),
            new(&idem_owner, &secrets[i % secrets.len()], &this_month, None),
            "references",
        )
        .await;
        assert!(
            references.insert(more.reference.clone()),
            "vault rule references: {} was handed out twice",
            more.reference
        );
    }
    for r in &references {
        let text = r.as_str();
        assert!(
            text.len() >= 22,
            "vault rule references: {text} is too short to hold 128 random bits"
        );
        assert!(
            !leaks(text) && !text.contains(&tag) && !text.contains("vault-suite"),
            "vault rule references: {text} shows the owner, the key or the secret"
        );
    }
    assert_eq!(
        revoke_owner(vault, &idem_owner).await,
        18,
        "vault rule idempotency: the owner holds the credentials its keys stored, once each"
    );

    // unknown references.
    let unknown = CredentialRef::new(format!("cred-unknown-{tag}"))
        .unwrap_or_else(|e| panic!("vault rule fixture: {e}"));
    let is_not_found = |rule: &str, r: Result<(), VaultError>| match r {
        Err(VaultError::NotFound { reference }) if reference == unknown => {}
        other => {
            panic!("vault rule unknown: {rule} of an unknown reference is NotFound, got {other:?}")
        }
    };
    is_not_found("describe", vault.describe(&unknown).await.map(drop));
    is_not_found("resolve", vault.resolve(&unknown, now).await.map(drop));
    is_not_found("status", vault.status(&unknown, now).await.map(drop));
    is_not_found(
        "describe_and_status",
        vault.describe_and_status(&unknown, now).await.map(drop),
    );
    is_not_found("revoke", vault.revoke(&unknown).await.map(drop));
    assert_eq!(
        revoke_owner(vault, &actor(&format!("vault-suite-{tag}-nobody"))).await,
        0,
        "vault rule unknown: revoke_owner of an owner without credentials is 0"
    );

    shown("debug", &vault);
}

fn actor(id: &str) -> ActorId {
    ActorId::new(id).unwrap_or_else(|e| panic!("vault rule fixture: {e}"))
}

fn display(year: i32, month: u32) -> CredentialDisplay {
    CredentialDisplay {
        brand: "visa".into(),
        last4: "4242".into(),
        exp_month: u8::try_from(month).unwrap_or(12),
        exp_year: u16::try_from(year).unwrap_or(2199),
        funding: FundingType::Credit,
    }
}

async fn store_outcome(
    vault: &dyn CredentialVault,
    key: &IdempotencyKey,
    c: NewCredential,
    rule: &str,
) -> StoreOutcome {
    vault
        .store(key, c)
        .await
        .unwrap_or_else(|e| panic!("vault rule {rule}: a valid credential is stored: {e:?}"))
}

async fn store(
    vault: &dyn CredentialVault,
    key: &IdempotencyKey,
    c: NewCredential,
    rule: &str,
) -> StoredCredential {
    let outcome = store_outcome(vault, key, c, rule).await;
    assert!(
        !outcome.replay,
        "vault rule {rule}: a new key stores a new credential"
    );
    outcome.credential
}

/// `status`, checked against `describe_and_status` (the same status, and the credential
/// `describe` answers).
async fn status(
    vault: &dyn CredentialVault,
    reference: &CredentialRef,
    now: DateTime<Utc>,
) -> CredentialStatus {
    let status = vault
        .status(reference, now)
        .await
        .unwrap_or_else(|e| panic!("vault rule status: {e:?}"));
    let described = vault
        .describe(reference)
        .await
        .unwrap_or_else(|e| panic!("vault rule describe: {e:?}"));
    let (stored, both) = vault
        .describe_and_status(reference, now)
        .await
        .unwrap_or_else(|e| panic!("vault rule describe_and_status: {e:?}"));
    assert_eq!(
        (&stored, both),
        (&described, status),
        "vault rule describe_and_status: answers what describe and status answer"
    );
    status
}

async fn revoke(vault: &dyn CredentialVault, reference: &CredentialRef) -> bool {
    vault
        .revoke(reference)
        .await
        .unwrap_or_else(|e| panic!("vault rule revoke: {e:?}"))
}

async fn revoke_owner(vault: &dyn CredentialVault, owner: &ActorId) -> u32 {
    vault
        .revoke_owner(owner)
        .await
        .unwrap_or_else(|e| panic!("vault rule revoke_owner: {e:?}"))
}
