//! The EVM `exact` signer against implementations no one here wrote: PyPI's `eth-account`
//! signs the same EIP-3009 typed data (the signatures must be equal byte for byte, RFC 6979
//! deterministic, low `s`), hashes it to the same EIP-712 digest and recovers the Rust
//! signature to the key's address. Installed by
//! `scripts/with-mpp-sdk.sh` (`MPP_SDK_PYTHON`); skipped without it unless `REQUIRE_MPP_SDK`.
#![cfg(feature = "x402-evm")]

use std::io::Write as _;
use std::process::{Command, Stdio};

use chrono::{TimeZone, Utc};
use serde_json::{json, Value};

use agent_mandate::domain::{Currency, Money};
use agent_mandate::ports::Secret;
use agent_mandate::protocols::x402::{
    recover_address, EvmExactSigner, EvmKey, PaymentRequirements, X402Grant, X402Signer,
};

fn sdk_python() -> Option<String> {
    match std::env::var("MPP_SDK_PYTHON") {
        Ok(p) if !p.is_empty() => Some(p),
        _ => {
            assert!(
                std::env::var_os("REQUIRE_MPP_SDK").is_none(),
                "REQUIRE_MPP_SDK is set but MPP_SDK_PYTHON is not"
            );
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED: x402_evm_interop: MPP_SDK_PYTHON not set (run scripts/with-mpp-sdk.sh cargo test --all-features --test x402_evm_interop)"
            );
            None
        }
    }
}

fn run_python(python: &str, cases: &[Value]) -> Vec<Value> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/eth_sign.py");
    let mut child = Command::new(python)
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the SDK's python");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(json!({ "cases": cases }).to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "eth_sign.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    doc["results"].as_array().unwrap().clone()
}

fn requirement(
    network: &str,
    asset: &str,
    amount: &str,
    name: &str,
    version: &str,
) -> PaymentRequirements {
    let extra = json!({"name": name, "version": version});
    PaymentRequirements {
        scheme: "exact".into(),
        network: network.into(),
        amount: amount.into(),
        asset: asset.into(),
        pay_to: "0x209693Bc6afc0C5328bA36FaF03C514EF312287C".into(),
        max_timeout_seconds: 300,
        extra: Some(extra.as_object().unwrap().clone()),
    }
}

fn grant(id: &str, r: &PaymentRequirements, after: i64) -> X402Grant {
    X402Grant {
        payment_id: id.into(),
        scheme: r.scheme.clone(),
        network: r.network.clone(),
        asset: r.asset.clone(),
        pay_to: r.pay_to.clone(),
        amount: r.amount.clone(),
        money: Money::parse("0.01", Currency::USD).unwrap(),
        valid_after: Utc.timestamp_opt(after, 0).unwrap(),
        valid_before: Utc.timestamp_opt(after + 300, 0).unwrap(),
    }
}

const KEYS: [&str; 3] = [
    "0x4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318",
    "0x0000000000000000000000000000000000000000000000000000000000000001",
    "0xfffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364140",
];

#[tokio::test]
async fn signatures_equal_eth_account_byte_for_byte_and_recover_to_the_key() {
    let Some(python) = sdk_python() else { return };
    let reqs = [
        requirement(
            "eip155:84532",
            "0x036CbD53842c5426634e7929541eC2318f3dCF7e",
            "10000",
            "USDC",
            "2",
        ),
        requirement(
            "eip155:8453",
            "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913",
            "1",
            "USD Coin",
            "2",
        ),
        requirement(
            "eip155:1",
            "0xa0b86991c6218b36c1d19d4a2e9eb0ce3606eb48",
            "99999999999999999999999999999999999999",
            "USD Coin",
            "2",
        ),
    ];
    let mut cases = Vec::new();
    let mut ours = Vec::new();
    for (k, key) in KEYS.iter().enumerate() {
        let signer = EvmExactSigner::new(
            EvmKey::from_secret(&Secret::new(*key)).unwrap(),
            &["eip155:84532", "eip155:8453", "eip155:1"],
        );
        for (i, r) in reqs.iter().enumerate() {
            assert!(signer.accepts(r));
            let g = grant(&format!("pay-{k}-{i}"), r, 1_740_672_089 + i as i64);
            let signed = signer.sign(r, &g).await.unwrap();
            // Idempotent per payment: asked again, the same payload.
            assert_eq!(signer.sign(r, &g).await.unwrap().payload, signed.payload);
            let auth = signer.authorization(r, &g).unwrap();
            let digest = auth.digest().unwrap();
            let signature = signed.payload["signature"].as_str().unwrap().to_owned();
            let a = &signed.payload["authorization"];
            assert_eq!(a["from"], signer.address());
            assert_eq!(a["to"], r.pay_to.as_str());
            assert_eq!(a["value"], r.amount.as_str());
            cases.push(json!({
                "key": key,
                "domain": {
                    "name": r.extra.as_ref().unwrap()["name"],
                    "version": r.extra.as_ref().unwrap()["version"],
                    "chainId": r.network.trim_start_matches("eip155:"),
                    "verifyingContract": r.asset,
                },
                "message": a,
                "rust_signature": signature,
            }));
            ours.push((signer.address(), signature, hex::encode(digest)));
        }
    }
    let results = run_python(&python, &cases);
    assert_eq!(results.len(), ours.len());
    for (i, (res, (address, signature, digest))) in results.iter().zip(&ours).enumerate() {
        assert!(res.get("error").is_none(), "case {i}: {res}");
        assert_eq!(res["address"], address.as_str(), "case {i}: address");
        assert_eq!(res["digest"], digest.as_str(), "case {i}: EIP-712 digest");
        assert_eq!(
            res["signature"],
            signature.trim_start_matches("0x"),
            "case {i}: signature bytes"
        );
        assert_eq!(
            res["recovered"],
            address.as_str(),
            "case {i}: recovered signer"
        );
    }
}

/// A signature over other terms is not the key's for these: eth-account recovers another
/// address when the message says another amount (the comparison above can fail).
#[tokio::test]
async fn a_signature_over_another_amount_recovers_to_someone_else() {
    let Some(python) = sdk_python() else { return };
    let r = requirement(
        "eip155:84532",
        "0x036CbD53842c5426634e7929541eC2318f3dCF7e",
        "10000",
        "USDC",
        "2",
    );
    let signer = EvmExactSigner::new(
        EvmKey::from_secret(&Secret::new(KEYS[0])).unwrap(),
        &["eip155:84532"],
    );
    let g = grant("pay-tampered", &r, 1_740_672_089);
    let signed = signer.sign(&r, &g).await.unwrap();
    let mut message = signed.payload["authorization"].clone();
    message["value"] = "10001".into();
    let res = run_python(
        &python,
        &[json!({
            "key": KEYS[0],
            "domain": {"name": "USDC", "version": "2", "chainId": "84532",
                       "verifyingContract": r.asset},
            "message": message,
            "rust_signature": signed.payload["signature"],
        })],
    );
    assert!(res[0].get("error").is_none(), "{}", res[0]);
    assert_ne!(res[0]["recovered"], signer.address().as_str());
    assert_ne!(
        res[0]["signature"],
        signed.payload["signature"]
            .as_str()
            .unwrap()
            .trim_start_matches("0x")
    );
}

/// Without the SDK: the signer refuses what is not exactly its grant, and what it signs
/// recovers to its own address.
#[tokio::test]
async fn the_signer_refuses_grants_wider_than_the_requirement_and_recovers_locally() {
    let r = requirement(
        "eip155:84532",
        "0x036CbD53842c5426634e7929541eC2318f3dCF7e",
        "10000",
        "USDC",
        "2",
    );
    let key = EvmKey::from_secret(&Secret::new(KEYS[0])).unwrap();
    assert!(!format!("{key:?}").contains("4c0883a6"), "the key in Debug");
    let signer = EvmExactSigner::new(key, &["eip155:84532"]);
    assert!(!format!("{signer:?}").contains("4c0883a6"));
    let g = grant("pay-1", &r, 1_740_672_089);
    let signed = signer.sign(&r, &g).await.unwrap();
    let auth = signer.authorization(&r, &g).unwrap();
    let sig = hex::decode(
        signed.payload["signature"]
            .as_str()
            .unwrap()
            .trim_start_matches("0x"),
    )
    .unwrap();
    assert_eq!(
        recover_address(&auth.digest().unwrap(), &sig).unwrap(),
        signer.address()
    );
    // Another payment: another nonce.
    let other = signer
        .authorization(&r, &grant("pay-2", &r, 1_740_672_089))
        .unwrap();
    assert_ne!(other.nonce, auth.nonce);
    // Wider grants, other networks, no domain in `extra`: nothing signed.
    let mut wider = g.clone();
    wider.amount = "10001".into();
    assert!(signer.sign(&r, &wider).await.is_err());
    let mut long = g.clone();
    long.valid_before = long.valid_after + chrono::Duration::seconds(301);
    assert!(signer.sign(&r, &long).await.is_err());
    let mut elsewhere = r.clone();
    elsewhere.network = "eip155:1".into();
    assert!(!signer.accepts(&elsewhere));
    assert!(signer.sign(&elsewhere, &g).await.is_err());
    let mut bare = r.clone();
    bare.extra = None;
    assert!(signer.sign(&bare, &g).await.is_err());
}
