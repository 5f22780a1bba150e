//! x402's `exact` scheme on EVM networks (feature `x402-evm`): an EIP-3009
//! `transferWithAuthorization` signed as EIP-712 typed data with secp256k1.
//!
//! The typed data is the one the x402 specification and its SDKs sign:
//!
//! - domain `EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)`
//!   with `name` and `version` from the requirement's `extra` (the token's EIP-712 domain),
//!   `chainId` from the CAIP-2 network (`eip155:<chainId>`) and `verifyingContract` the
//!   requirement's `asset` (the token contract);
//! - message `TransferWithAuthorization(address from,address to,uint256 value,uint256
//!   validAfter,uint256 validBefore,bytes32 nonce)`, every field from the [`X402Grant`]: `to`
//!   its `payTo`, `value` exactly its amount, the window the grant's.
//!
//! The signature is `r || s || v` (65 bytes, `s` in the lower half, `v` 27 or 28), RFC 6979
//! deterministic. The nonce is derived from the key and the payment's identity
//! (keccak256 of a label, the private key and the payment id): signing the same payment again
//! gives the same nonce, so at most one of its authorizations can ever be settled on chain.

use std::fmt;

use async_trait::async_trait;
use k256::ecdsa::{RecoveryId, Signature, SigningKey, VerifyingKey};
use sha3::{Digest as _, Keccak256};

use super::signer::{check_grant, SignedPayload, SignerError, X402Grant, X402Signer};
use super::PaymentRequirements;
use crate::ports::Secret;

/// keccak256 of `data`.
pub fn keccak256(data: &[u8]) -> [u8; 32] {
    Keccak256::digest(data).into()
}

/// A secp256k1 private key. Never in `Debug`, `Display` or serde (it has neither of the
/// latter); built from a [`Secret`] holding 64 hex digits (with or without `0x`).
pub struct EvmKey {
    key: SigningKey,
}

impl fmt::Debug for EvmKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EvmKey({})", self.address())
    }
}

fn refused(reason: &str) -> SignerError {
    SignerError::Refused {
        reason: reason.to_owned(),
    }
}

impl EvmKey {
    /// The key in `secret` (64 hex digits, `0x` optional).
    ///
    /// ```
    /// use agent_mandate::ports::Secret;
    /// use agent_mandate::protocols::x402::EvmKey;
    /// let key = EvmKey::from_secret(&Secret::new(
    ///     "0x4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318",
    /// ))
    /// .unwrap();
    /// assert_eq!(key.address(), "0x2c7536E3605D9C16a7a3D7b1898e529396a65c23");
    /// assert!(!format!("{key:?}").contains("4c0883a6"));
    /// ```
    pub fn from_secret(secret: &Secret) -> Result<EvmKey, SignerError> {
        let text = secret.expose();
        let text = text.strip_prefix("0x").unwrap_or(text);
        if text.len() != 64 {
            return Err(refused("the private key is not 32 bytes of hex"));
        }
        let mut bytes = zeroize::Zeroizing::new([0u8; 32]);
        hex::decode_to_slice(text, &mut bytes[..])
            .map_err(|_| refused("the private key is not 32 bytes of hex"))?;
        let key = SigningKey::from_slice(&bytes[..])
            .map_err(|_| refused("the private key is not a valid secp256k1 scalar"))?;
        Ok(EvmKey { key })
    }

    /// The address of the key, EIP-55 checksummed.
    pub fn address(&self) -> String {
        address_of(self.key.verifying_key())
    }

    fn nonce_for(&self, payment_id: &str) -> [u8; 32] {
        let secret = zeroize::Zeroizing::new(self.key.to_bytes());
        let mut h = Keccak256::new();
        h.update(b"agent-mandate x402 exact nonce\n");
        h.update(&secret[..]);
        h.update(payment_id.as_bytes());
        h.finalize().into()
    }

    /// Signs a 32-byte EIP-712 digest: `r || s || v`, `v` 27 or 28.
    pub fn sign_digest(&self, digest: &[u8; 32]) -> Result<[u8; 65], SignerError> {
        let (sig, rec) = self
            .key
            .sign_prehash_recoverable(digest)
            .map_err(|_| refused("the digest cannot be signed"))?;
        let mut out = [0u8; 65];
        out[..64].copy_from_slice(&sig.to_bytes());
        out[64] = 27 + rec.to_byte();
        Ok(out)
    }
}

/// The EIP-55 address of a public key: the last 20 bytes of keccak256 of its uncompressed
/// coordinates.
fn address_of(key: &VerifyingKey) -> String {
    let point = key.to_encoded_point(false);
    let hash = keccak256(&point.as_bytes()[1..]);
    let mut raw = [0u8; 20];
    raw.copy_from_slice(&hash[12..]);
    checksum(&raw)
}

/// EIP-55: hex, each letter upper-cased where the keccak256 of the lower-case hex has a nibble
/// of 8 or more.
fn checksum(raw: &[u8; 20]) -> String {
    let lower = hex::encode(raw);
    let hash = keccak256(lower.as_bytes());
    let mut out = String::from("0x");
    for (i, c) in lower.chars().enumerate() {
        let nibble = (hash[i / 2] >> (if i % 2 == 0 { 4 } else { 0 })) & 0x0f;
        out.push(if nibble >= 8 {
            c.to_ascii_uppercase()
        } else {
            c
        });
    }
    out
}

/// The signer of `digest` by `signature` (`r || s || v`, `v` 27/28 or 0/1), EIP-55.
pub fn recover_address(digest: &[u8; 32], signature: &[u8]) -> Result<String, SignerError> {
    let bad = || refused("not a recoverable secp256k1 signature");
    if signature.len() != 65 {
        return Err(bad());
    }
    let v = match signature[64] {
        27 | 28 => signature[64] - 27,
        0 | 1 => signature[64],
        _ => return Err(bad()),
    };
    let sig = Signature::from_slice(&signature[..64]).map_err(|_| bad())?;
    let rec = RecoveryId::from_byte(v).ok_or_else(bad)?;
    let key = VerifyingKey::recover_from_prehash(digest, &sig, rec).map_err(|_| bad())?;
    Ok(address_of(&key))
}

fn grant_field(field: &'static str, reason: &str) -> SignerError {
    SignerError::Grant {
        field,
        reason: reason.to_owned(),
    }
}

/// A 20-byte address from `0x` and 40 hex digits (any case).
fn parse_address(field: &'static str, text: &str) -> Result<[u8; 20], SignerError> {
    let hex_part = text
        .strip_prefix("0x")
        .filter(|h| h.len() == 40)
        .ok_or_else(|| grant_field(field, "not an address (0x and 40 hex digits)"))?;
    let mut out = [0u8; 20];
    hex::decode_to_slice(hex_part, &mut out)
        .map_err(|_| grant_field(field, "not an address (0x and 40 hex digits)"))?;
    Ok(out)
}

/// A uint256 from plain decimal digits (at most 38 of them: what fits 128 bits).
fn parse_uint(field: &'static str, text: &str) -> Result<[u8; 32], SignerError> {
    if text.is_empty() || text.len() > 38 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(grant_field(
            field,
            "not a decimal integer of at most 38 digits",
        ));
    }
    let n: u128 = text
        .parse()
        .map_err(|_| grant_field(field, "not a decimal integer"))?;
    Ok(word_u128(n))
}

fn word_u128(n: u128) -> [u8; 32] {
    let mut out = [0u8; 32];
    out[16..].copy_from_slice(&n.to_be_bytes());
    out
}

fn word_address(a: &[u8; 20]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out[12..].copy_from_slice(a);
    out
}

/// The EIP-3009 authorization to sign: every field of the message and of the domain.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TransferAuthorization {
    /// The token's EIP-712 domain name (`extra.name`).
    pub name: String,
    /// The token's EIP-712 domain version (`extra.version`).
    pub version: String,
    /// The chain id (of `eip155:<chainId>`).
    pub chain_id: u64,
    /// The token contract (`asset`).
    pub verifying_contract: String,
    /// The payer.
    pub from: String,
    /// The recipient (`payTo`).
    pub to: String,
    /// The amount in atomic units (decimal).
    pub value: String,
    /// Unix seconds, not valid before.
    pub valid_after: u64,
    /// Unix seconds, not valid from.
    pub valid_before: u64,
    /// 32 bytes.
    pub nonce: [u8; 32],
}

impl TransferAuthorization {
    /// The EIP-712 digest: keccak256(`0x19 0x01` || domain separator || struct hash).
    pub fn digest(&self) -> Result<[u8; 32], SignerError> {
        let domain_type = keccak256(
            b"EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)",
        );
        let mut d = Vec::with_capacity(5 * 32);
        d.extend_from_slice(&domain_type);
        d.extend_from_slice(&keccak256(self.name.as_bytes()));
        d.extend_from_slice(&keccak256(self.version.as_bytes()));
        d.extend_from_slice(&word_u128(u128::from(self.chain_id)));
        d.extend_from_slice(&word_address(&parse_address(
            "asset",
            &self.verifying_contract,
        )?));
        let separator = keccak256(&d);
        let message_type = keccak256(
            b"TransferWithAuthorization(address from,address to,uint256 value,uint256 validAfter,uint256 validBefore,bytes32 nonce)",
        );
        let mut m = Vec::with_capacity(7 * 32);
        m.extend_from_slice(&message_type);
        m.extend_from_slice(&word_address(&parse_address("from", &self.from)?));
        m.extend_from_slice(&word_address(&parse_address("payTo", &self.to)?));
        m.extend_from_slice(&parse_uint("amount", &self.value)?);
        m.extend_from_slice(&word_u128(u128::from(self.valid_after)));
        m.extend_from_slice(&word_u128(u128::from(self.valid_before)));
        m.extend_from_slice(&self.nonce);
        let struct_hash = keccak256(&m);
        let mut out = Vec::with_capacity(66);
        out.extend_from_slice(b"\x19\x01");
        out.extend_from_slice(&separator);
        out.extend_from_slice(&struct_hash);
        Ok(keccak256(&out))
    }
}

/// The chain id of a CAIP-2 `eip155:<decimal>` network.
fn chain_id(network: &str) -> Option<u64> {
    let id = network.strip_prefix("eip155:")?;
    if id.is_empty()
        || id.len() > 19
        || !id.bytes().all(|b| b.is_ascii_digit())
        || id.starts_with('0')
    {
        return None;
    }
    id.parse().ok()
}

/// An [`X402Signer`] for the `exact` scheme on EVM networks, with one key, on the networks it
/// is given. It signs exactly the grant (checked with [`check_grant`] at the grant's start),
/// needs the token's EIP-712 `name` and `version` in the requirement's `extra`, and is
/// idempotent per payment: the same grant gives the same payload, and any payload for the same
/// payment carries the same nonce.
pub struct EvmExactSigner {
    key: EvmKey,
    networks: Vec<String>,
}

impl fmt::Debug for EvmExactSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EvmExactSigner")
            .field("address", &self.key.address())
            .field("networks", &self.networks)
            .finish()
    }
}

impl EvmExactSigner {
    /// A signer with `key` for `networks` (CAIP-2 `eip155:<chainId>`; others are ignored).
    pub fn new(key: EvmKey, networks: &[&str]) -> EvmExactSigner {
        EvmExactSigner {
            key,
            networks: networks
                .iter()
                .filter(|n| chain_id(n).is_some())
                .map(|n| (*n).to_owned())
                .collect(),
        }
    }

    /// The payer's address.
    pub fn address(&self) -> String {
        self.key.address()
    }

    /// The authorization this signer signs for `accepted` within `grant`.
    pub fn authorization(
        &self,
        accepted: &PaymentRequirements,
        grant: &X402Grant,
    ) -> Result<TransferAuthorization, SignerError> {
        let chain = chain_id(&accepted.network).ok_or_else(|| SignerError::Unsupported {
            scheme: accepted.scheme.clone(),
            network: accepted.network.clone(),
        })?;
        let extra = |name: &'static str| {
            accepted
                .extra
                .as_ref()
                .and_then(|e| e.get(name))
                .and_then(serde_json::Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .ok_or_else(|| {
                    refused(&format!(
                        "extra.{name} (the token's EIP-712 domain) is missing"
                    ))
                })
        };
        let seconds = |field: &'static str, t: chrono::DateTime<chrono::Utc>| {
            u64::try_from(t.timestamp()).map_err(|_| grant_field(field, "before 1970"))
        };
        Ok(TransferAuthorization {
            name: extra("name")?,
            version: extra("version")?,
            chain_id: chain,
            verifying_contract: grant.asset.clone(),
            from: self.key.address(),
            to: grant.pay_to.clone(),
            value: grant.amount.clone(),
            valid_after: seconds("validAfter", grant.valid_after)?,
            valid_before: seconds("validBefore", grant.valid_before)?,
            nonce: self.key.nonce_for(&grant.payment_id),
        })
    }
}

#[async_trait]
impl X402Signer for EvmExactSigner {
    fn accepts(&self, requirement: &PaymentRequirements) -> bool {
        requirement.scheme == "exact" && self.networks.contains(&requirement.network)
    }

    async fn sign(
        &self,
        accepted: &PaymentRequirements,
        grant: &X402Grant,
    ) -> Result<SignedPayload, SignerError> {
        if !self.accepts(accepted) {
            return Err(SignerError::Unsupported {
                scheme: accepted.scheme.clone(),
                network: accepted.network.clone(),
            });
        }
        check_grant(accepted, grant, grant.valid_after)?;
        let auth = self.authorization(accepted, grant)?;
        let signature = self.key.sign_digest(&auth.digest()?)?;
        let nonce = format!("0x{}", hex::encode(auth.nonce));
        let authorization = serde_json::json!({
            "from": auth.from,
            "to": auth.to,
            "value": auth.value,
            "validAfter": auth.valid_after.to_string(),
            "validBefore": auth.valid_before.to_string(),
            "nonce": nonce,
        });
        let mut payload = serde_json::Map::new();
        payload.insert(
            "signature".into(),
            format!("0x{}", hex::encode(signature)).into(),
        );
        payload.insert("authorization".into(), authorization);
        Ok(SignedPayload {
            // The nonce is public on chain and reveals nothing of the signature.
            reference: format!("x402-evm-{}", &nonce[2..26]),
            payload,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_eip55() {
        // The EIP-55 examples.
        for a in [
            "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
            "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359",
            "0xdbF03B407c01E7cD3CBea99509d93f8DDDC8C6FB",
            "0xD1220A0cf47c7B9Be7A2E6BA89F429762e7b9aDb",
        ] {
            let raw = parse_address("a", &a.to_ascii_lowercase()).unwrap();
            assert_eq!(checksum(&raw), a);
        }
    }

    #[test]
    fn bad_keys_networks_and_numbers_are_refused() {
        for bad in [
            "",
            "0x",
            "zz",
            &"0".repeat(64),
            &"f".repeat(64),
            &"1".repeat(63),
        ] {
            assert!(EvmKey::from_secret(&Secret::new(bad)).is_err(), "{bad:?}");
        }
        for bad in [
            "eip155:",
            "eip155:01",
            "eip155:-1",
            "eip155:1a",
            "solana:1",
            "EIP155:1",
        ] {
            assert_eq!(chain_id(bad), None, "{bad:?}");
        }
        assert_eq!(chain_id("eip155:84532"), Some(84532));
        for bad in ["", "-1", "1.0", "+1", &"9".repeat(39)] {
            assert!(parse_uint("amount", bad).is_err(), "{bad:?}");
        }
        assert!(parse_address("a", "0x1234").is_err());
        assert!(parse_address("a", &format!("0x{}", "g".repeat(40))).is_err());
    }

    #[test]
    fn a_signature_recovers_to_the_key_and_a_tampered_digest_does_not() {
        let key = EvmKey::from_secret(&Secret::new(
            "4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318",
        ))
        .unwrap();
        let digest = keccak256(b"x");
        let sig = key.sign_digest(&digest).unwrap();
        assert!(sig[64] == 27 || sig[64] == 28);
        assert_eq!(recover_address(&digest, &sig).unwrap(), key.address());
        let other = keccak256(b"y");
        assert_ne!(recover_address(&other, &sig).unwrap(), key.address());
        assert!(recover_address(&digest, &sig[..64]).is_err());
        let mut v = sig;
        v[64] = 29;
        assert!(recover_address(&digest, &v).is_err());
    }
}
