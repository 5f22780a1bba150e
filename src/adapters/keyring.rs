//! Keys of the durable credential vaults, and the envelope encryption they use (features
//! `sqlite`, `postgres`).
//!
//! A [`VaultKeyring`] holds one current [`VaultKey`] (a 256-bit key-encryption key with an id)
//! and any number of older keys kept for reading. Storing a credential:
//!
//! 1. draws a fresh 256-bit data key and seals the secret and the CVC with it (AES-256-GCM,
//!    random 96-bit nonce);
//! 2. wraps the data key under a key derived from the current key-encryption key (AES-256-GCM,
//!    random nonce);
//! 3. binds both to the credential: the associated data is the key id, the reference, the
//!    owner, the buyer, the kind and every display field, so a row copied onto another
//!    reference or owner, or whose expiry or last four digits were edited, fails to open;
//! 4. records the key id beside the row, so a rotated vault (a new current key, the old one
//!    kept) still opens old rows.
//!
//! The idempotency fingerprint of a credential is an HMAC-SHA256 under another key derived from
//! the key-encryption key, never a plain hash: a hash of a card number can be brute-forced from
//! its last four digits. Keys never show themselves: `Debug` prints the id only, there is no
//! `Display` or `Serialize`, and their bytes are overwritten when dropped.
//!
//! ```
//! use agent_mandate::adapters::keyring::{VaultKey, VaultKeyring};
//! use agent_mandate::ports::Secret;
//!
//! let old = VaultKey::from_hex("2025-01", &Secret::new("11".repeat(32))).unwrap();
//! let new = VaultKey::generate("2026-01").unwrap();
//! let keyring = VaultKeyring::new(new).with_previous(old).unwrap();
//! assert_eq!(keyring.current_id(), "2026-01");
//! assert!(!format!("{keyring:?}").contains("1111"));
//! ```

use std::fmt;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::Aes256Gcm;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::vault_rules::{funding_text, kind_text, random};
use crate::domain::CredentialRef;
use crate::ports::{NewCredential, Secret, StoredCredential, VaultError};

type HmacSha256 = Hmac<Sha256>;

/// The nonce of [`Aes256Gcm`] (96 bits).
type Nonce = aes_gcm::aead::Nonce<Aes256Gcm>;

const KEY_LEN: usize = 32;
const NONCE_LEN: usize = 12;
/// The format version, first in every associated data and fingerprint.
const FORMAT: &[u8] = b"agent-mandate vault v1";
const WRAP_LABEL: &[u8] = b"agent-mandate vault v1: wrap data keys";
const FINGERPRINT_LABEL: &[u8] = b"agent-mandate vault v1: idempotency fingerprint";

/// A 256-bit key-encryption key and its id. Redacted everywhere: `Debug` shows the id only.
///
/// The id (1 to 64 ASCII letters, digits, `_`, `-`, `.`) is stored beside every row sealed
/// under the key; it is not secret. Use a new id for every new key.
#[derive(Clone)]
pub struct VaultKey {
    id: String,
    bytes: [u8; KEY_LEN],
}

impl VaultKey {
    /// A key from its 32 bytes. Fails with `Invalid { field: "key_id" }` on a bad id.
    pub fn new(id: impl Into<String>, bytes: [u8; KEY_LEN]) -> Result<VaultKey, VaultError> {
        let id = id.into();
        let id_ok = !id.is_empty()
            && id.len() <= 64
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
        if !id_ok {
            return Err(VaultError::Invalid { field: "key_id" });
        }
        Ok(VaultKey { id, bytes })
    }

    /// A key from 64 hex digits (as kept in a secret manager or an environment variable).
    /// Fails with `Invalid { field: "key" }` (never showing the text) or `"key_id"`.
    pub fn from_hex(id: impl Into<String>, hex_text: &Secret) -> Result<VaultKey, VaultError> {
        let mut bytes = [0u8; KEY_LEN];
        hex::decode_to_slice(hex_text.expose().trim(), &mut bytes)
            .map_err(|_| VaultError::Invalid { field: "key" })?;
        let key = VaultKey::new(id, bytes);
        wipe(&mut bytes);
        key
    }

    /// A new random key from the operating system's random number generator.
    pub fn generate(id: impl Into<String>) -> Result<VaultKey, VaultError> {
        let mut bytes = random::<KEY_LEN>()?;
        let key = VaultKey::new(id, bytes);
        wipe(&mut bytes);
        key
    }

    /// The key's id (not secret).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// A subkey for one purpose: HMAC-SHA256 of the label under this key.
    fn derive(&self, label: &[u8]) -> Result<[u8; KEY_LEN], VaultError> {
        let mut mac =
            <HmacSha256 as hmac::KeyInit>::new_from_slice(&self.bytes).map_err(crypto_failure)?;
        mac.update(label);
        Ok(mac.finalize().into_bytes().into())
    }
}

impl fmt::Debug for VaultKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VaultKey")
            .field("id", &self.id)
            .field("key", &"[REDACTED]")
            .finish()
    }
}

impl Drop for VaultKey {
    fn drop(&mut self) {
        wipe(&mut self.bytes);
    }
}

/// The keys of a vault: the current one (sealing new credentials) and older ones (opening
/// the credentials they sealed). `Debug` shows the ids only.
#[derive(Clone)]
pub struct VaultKeyring {
    current: VaultKey,
    previous: Vec<VaultKey>,
}

impl VaultKeyring {
    /// A keyring with one key.
    pub fn new(current: VaultKey) -> VaultKeyring {
        VaultKeyring {
            current,
            previous: Vec::new(),
        }
    }

    /// With an older key, kept to open what it sealed. Fails with
    /// `Invalid { field: "key_id" }` if a key with its id is in the keyring already.
    pub fn with_previous(mut self, key: VaultKey) -> Result<VaultKeyring, VaultError> {
        if self.key(key.id()).is_some() {
            return Err(VaultError::Invalid { field: "key_id" });
        }
        self.previous.push(key);
        Ok(self)
    }

    /// The id of the key new credentials are sealed under.
    pub fn current_id(&self) -> &str {
        self.current.id()
    }

    /// Every key id, the current one first.
    pub fn key_ids(&self) -> Vec<&str> {
        std::iter::once(&self.current)
            .chain(&self.previous)
            .map(VaultKey::id)
            .collect()
    }

    fn key(&self, id: &str) -> Option<&VaultKey> {
        std::iter::once(&self.current)
            .chain(&self.previous)
            .find(|k| k.id == id)
    }

    fn key_for(&self, id: &str, reference: &CredentialRef) -> Result<&VaultKey, VaultError> {
        self.key(id).ok_or_else(|| VaultError::KeyUnavailable {
            key_id: id.to_owned(),
            reference: reference.clone(),
        })
    }

    /// Seals `credential`'s secret and CVC for the row `stored`, under the current key.
    pub(crate) fn seal(
        &self,
        stored: &StoredCredential,
        credential: &NewCredential,
    ) -> Result<Sealed, VaultError> {
        let kek = &self.current;
        let aad = associated_data(kek.id(), stored);
        let mut data_key = random::<KEY_LEN>()?;
        let mut plain = Wiped(plaintext(credential));
        let ciphertext = encrypt(&data_key, &aad, &plain.0);
        plain.wipe();
        let wrap_key = Wiped(kek.derive(WRAP_LABEL)?.to_vec());
        let wrapped_key = encrypt(&wrap_key.0, &aad, &data_key);
        wipe(&mut data_key);
        Ok(Sealed {
            key_id: kek.id().to_owned(),
            wrapped_key: wrapped_key?,
            ciphertext: ciphertext?,
        })
    }

    /// Opens the secret and CVC of the row `stored`: `KeyUnavailable` without its key,
    /// `Integrity` if it does not authenticate.
    pub(crate) fn open(
        &self,
        stored: &StoredCredential,
        sealed: &Sealed,
    ) -> Result<(Secret, Option<Secret>), VaultError> {
        let reference = &stored.reference;
        let kek = self.key_for(&sealed.key_id, reference)?;
        let aad = associated_data(&sealed.key_id, stored);
        let integrity = || VaultError::Integrity {
            reference: reference.clone(),
        };
        let wrap_key = Wiped(kek.derive(WRAP_LABEL)?.to_vec());
        let data_key =
            Wiped(decrypt(&wrap_key.0, &aad, &sealed.wrapped_key).ok_or_else(integrity)?);
        if data_key.0.len() != KEY_LEN {
            return Err(integrity());
        }
        let plain = Wiped(decrypt(&data_key.0, &aad, &sealed.ciphertext).ok_or_else(integrity)?);
        parse_plaintext(&plain.0).ok_or_else(integrity)
    }

    /// The idempotency fingerprint of `credential` under the current key: (key id, MAC).
    pub(crate) fn fingerprint(
        &self,
        credential: &NewCredential,
    ) -> Result<(String, Vec<u8>), VaultError> {
        let mac = fingerprint_mac(&self.current, credential)?;
        Ok((
            self.current.id().to_owned(),
            mac.finalize().into_bytes().to_vec(),
        ))
    }

    /// Whether `credential` has the fingerprint `stored_mac` recorded under key `key_id` by the
    /// row `reference` (compared in constant time).
    pub(crate) fn same_content(
        &self,
        reference: &CredentialRef,
        key_id: &str,
        stored_mac: &[u8],
        credential: &NewCredential,
    ) -> Result<bool, VaultError> {
        let kek = self.key_for(key_id, reference)?;
        Ok(fingerprint_mac(kek, credential)?
            .verify_slice(stored_mac)
            .is_ok())
    }
}

impl fmt::Debug for VaultKeyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VaultKeyring")
            .field("current", &self.current.id())
            .field(
                "previous",
                &self.previous.iter().map(VaultKey::id).collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// What a durable vault stores of a secret: the key id, the wrapped data key and the sealed
/// secret and CVC (each `nonce || ciphertext || tag`).
pub(crate) struct Sealed {
    pub(crate) key_id: String,
    pub(crate) wrapped_key: Vec<u8>,
    pub(crate) ciphertext: Vec<u8>,
}

/// Length-prefixed fields: no two different field lists encode to the same bytes.
struct Fields(Vec<u8>);

impl Fields {
    fn new() -> Fields {
        let mut f = Fields(Vec::with_capacity(256));
        f.add(FORMAT);
        f
    }

    fn add(&mut self, field: &[u8]) -> &mut Fields {
        // A field longer than 4 GiB cannot reach here (ids are at most 128 bytes and secrets
        // are request fields), but saturate rather than wrap.
        let len = u32::try_from(field.len()).unwrap_or(u32::MAX);
        self.0.extend_from_slice(&len.to_be_bytes());
        self.0.extend_from_slice(field);
        self
    }

    fn public(&mut self, stored: &StoredCredential) -> &mut Fields {
        let d = &stored.display;
        self.add(stored.owner.as_str().as_bytes())
            .add(stored.buyer_id.as_str().as_bytes())
            .add(kind_text(stored.kind).as_bytes())
            .add(d.brand.as_bytes())
            .add(d.last4.as_bytes())
            .add(&[d.exp_month])
            .add(&d.exp_year.to_be_bytes())
            .add(funding_text(d.funding).as_bytes())
    }
}

fn associated_data(key_id: &str, stored: &StoredCredential) -> Vec<u8> {
    let mut f = Fields::new();
    f.add(key_id.as_bytes())
        .add(stored.reference.as_str().as_bytes())
        .public(stored);
    f.0
}

fn fingerprint_mac(kek: &VaultKey, c: &NewCredential) -> Result<HmacSha256, VaultError> {
    let mac_key = Wiped(kek.derive(FINGERPRINT_LABEL)?.to_vec());
    let mut mac =
        <HmacSha256 as hmac::KeyInit>::new_from_slice(&mac_key.0).map_err(crypto_failure)?;
    // The public part, as a row would bind it (no reference yet), then the secrets.
    let public = StoredCredential {
        reference: placeholder_reference()?,
        kind: c.kind,
        owner: c.owner.clone(),
        buyer_id: c.buyer_id.clone(),
        display: c.display.clone(),
    };
    let mut fields = Fields::new();
    fields.public(&public);
    let mut content = Wiped(fields.0);
    let mut secrets = Fields(Vec::new());
    secrets.add(c.secret.expose().as_bytes());
    match &c.cvc {
        Some(cvc) => secrets.add(b"cvc").add(cvc.expose().as_bytes()),
        None => secrets.add(b"no cvc"),
    };
    content.0.extend_from_slice(&secrets.0);
    Wiped(secrets.0).wipe();
    mac.update(&content.0);
    content.wipe();
    Ok(mac)
}

fn placeholder_reference() -> Result<CredentialRef, VaultError> {
    CredentialRef::new("-").map_err(|e| VaultError::Other(e.into()))
}

/// `len(secret) || secret || 0` or `len(secret) || secret || 1 || cvc`.
fn plaintext(c: &NewCredential) -> Vec<u8> {
    let secret = c.secret.expose().as_bytes();
    let mut out = Vec::with_capacity(secret.len() + 40);
    let len = u32::try_from(secret.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(secret);
    match &c.cvc {
        Some(cvc) => {
            out.push(1);
            out.extend_from_slice(cvc.expose().as_bytes());
        }
        None => out.push(0),
    }
    out
}

fn parse_plaintext(plain: &[u8]) -> Option<(Secret, Option<Secret>)> {
    let (len, rest) = plain.split_first_chunk::<4>()?;
    let len = usize::try_from(u32::from_be_bytes(*len)).ok()?;
    if rest.len() <= len {
        return None;
    }
    let (secret, rest) = rest.split_at(len);
    let secret = Secret::new(std::str::from_utf8(secret).ok()?);
    let cvc = match rest.split_first()? {
        (0, []) => None,
        (1, cvc) => Some(Secret::new(std::str::from_utf8(cvc).ok()?)),
        _ => return None,
    };
    Some((secret, cvc))
}

/// `nonce || AES-256-GCM(key, nonce, plain, aad)`.
fn encrypt(key: &[u8], aad: &[u8], plain: &[u8]) -> Result<Vec<u8>, VaultError> {
    let cipher = Aes256Gcm::new_from_slice(key).map_err(crypto_failure)?;
    let nonce = random::<NONCE_LEN>()?;
    let sealed = cipher
        .encrypt(&Nonce::from(nonce), Payload { msg: plain, aad })
        .map_err(crypto_failure)?;
    let mut out = Vec::with_capacity(NONCE_LEN + sealed.len());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&sealed);
    Ok(out)
}

/// The plaintext of [`encrypt`]'s output, or `None` if it does not authenticate.
fn decrypt(key: &[u8], aad: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
    let cipher = Aes256Gcm::new_from_slice(key).ok()?;
    if sealed.len() < NONCE_LEN {
        return None;
    }
    let (nonce, body) = sealed.split_at(NONCE_LEN);
    let nonce = Nonce::try_from(nonce).ok()?;
    cipher.decrypt(&nonce, Payload { msg: body, aad }).ok()
}

fn crypto_failure(e: impl fmt::Display) -> VaultError {
    VaultError::Other(format!("vault cryptography failed: {e}").into())
}

/// A buffer overwritten when dropped (best effort, like [`Secret`]).
struct Wiped(Vec<u8>);

impl Wiped {
    fn wipe(&mut self) {
        wipe(&mut self.0);
    }
}

impl Drop for Wiped {
    fn drop(&mut self) {
        self.wipe();
    }
}

fn wipe(bytes: &mut [u8]) {
    zeroize::Zeroize::zeroize(bytes);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::examples;
    use crate::ports::{CredentialDisplay, CredentialKind, FundingType};

    fn credential(secret: &str, cvc: Option<&str>) -> NewCredential {
        NewCredential {
            kind: CredentialKind::VirtualCard,
            owner: examples::agent().id,
            buyer_id: examples::buyer(),
            secret: Secret::new(secret),
            cvc: cvc.map(Secret::new),
            display: CredentialDisplay {
                brand: "visa".into(),
                last4: "4242".into(),
                exp_month: 12,
                exp_year: 2030,
                funding: FundingType::Credit,
            },
        }
    }

    fn stored(c: &NewCredential, reference: &str) -> StoredCredential {
        StoredCredential {
            reference: CredentialRef::new(reference).unwrap(),
            kind: c.kind,
            owner: c.owner.clone(),
            buyer_id: c.buyer_id.clone(),
            display: c.display.clone(),
        }
    }

    fn keyring(id: &str, byte: u8) -> VaultKeyring {
        VaultKeyring::new(VaultKey::new(id, [byte; 32]).unwrap())
    }

    #[test]
    fn seal_then_open_gives_the_secret_and_cvc_back() {
        let ring = keyring("k1", 7);
        for cvc in [None, Some("123"), Some("")] {
            let c = credential("4111111111111111", cvc);
            let row = stored(&c, "cred_a");
            let sealed = ring.seal(&row, &c).unwrap();
            let (secret, got) = ring.open(&row, &sealed).unwrap();
            assert_eq!(secret.expose(), "4111111111111111");
            assert_eq!(got.as_ref().map(Secret::expose), cvc);
            let plain = [&sealed.wrapped_key[..], &sealed.ciphertext[..]].concat();
            assert!(!plain.windows(16).any(|w| w == b"4111111111111111"));
        }
    }

    #[test]
    fn a_row_moved_edited_or_opened_with_another_key_fails_authentication() {
        let ring = keyring("k1", 7);
        let c = credential("4111111111111111", Some("123"));
        let row = stored(&c, "cred_a");
        let sealed = ring.seal(&row, &c).unwrap();
        let integrity = |r: Result<(Secret, Option<Secret>), VaultError>| {
            assert!(matches!(r, Err(VaultError::Integrity { .. })), "{r:?}");
        };
        integrity(ring.open(&stored(&c, "cred_b"), &sealed));
        let mut other_owner = row.clone();
        other_owner.owner = "agent_other".parse().unwrap();
        integrity(ring.open(&other_owner, &sealed));
        let mut later = row.clone();
        later.display.exp_year = 2040;
        integrity(ring.open(&later, &sealed));
        integrity(keyring("k1", 8).open(&row, &sealed));
        let mut flipped = Sealed {
            key_id: sealed.key_id.clone(),
            wrapped_key: sealed.wrapped_key.clone(),
            ciphertext: sealed.ciphertext.clone(),
        };
        let last = flipped.ciphertext.len() - 1;
        flipped.ciphertext[last] ^= 1;
        integrity(ring.open(&row, &flipped));
        flipped.ciphertext.truncate(3);
        integrity(ring.open(&row, &flipped));
        assert!(matches!(
            keyring("k2", 7).open(&row, &sealed),
            Err(VaultError::KeyUnavailable { key_id, .. }) if key_id == "k1"
        ));
    }

    #[test]
    fn a_rotated_keyring_opens_old_rows_and_seals_under_the_new_key() {
        let old = keyring("k1", 7);
        let c = credential("tok_abc", None);
        let row = stored(&c, "cred_a");
        let sealed = old.seal(&row, &c).unwrap();
        let (old_id, old_mac) = old.fingerprint(&c).unwrap();
        let rotated = VaultKeyring::new(VaultKey::new("k2", [9; 32]).unwrap())
            .with_previous(VaultKey::new("k1", [7; 32]).unwrap())
            .unwrap();
        assert_eq!(rotated.open(&row, &sealed).unwrap().0.expose(), "tok_abc");
        assert_eq!(rotated.seal(&row, &c).unwrap().key_id, "k2");
        assert!(rotated
            .same_content(&row.reference, &old_id, &old_mac, &c)
            .unwrap());
        assert!(!rotated
            .same_content(
                &row.reference,
                &old_id,
                &old_mac,
                &credential("tok_abd", None)
            )
            .unwrap());
        assert!(rotated
            .clone()
            .with_previous(VaultKey::new("k2", [1; 32]).unwrap())
            .is_err());
    }

    #[test]
    fn fingerprints_are_keyed_and_see_every_field() {
        let ring = keyring("k1", 7);
        let base = credential("4111111111111111", Some("123"));
        let (_, mac) = ring.fingerprint(&base).unwrap();
        // Not a plain hash of the secret.
        let plain: [u8; 32] = <Sha256 as sha2::Digest>::digest(b"4111111111111111").into();
        assert_ne!(mac, plain.to_vec());
        assert_ne!(keyring("k1", 8).fingerprint(&base).unwrap().1, mac);
        let mut variants = vec![
            credential("4111111111111112", Some("123")),
            credential("4111111111111111", Some("124")),
            credential("4111111111111111", None),
        ];
        let mut v = base.clone();
        v.display.last4 = "1111".into();
        variants.push(v);
        let mut v = base.clone();
        v.kind = CredentialKind::NetworkToken;
        variants.push(v);
        let mut v = base.clone();
        v.buyer_id = "buyer_other".parse().unwrap();
        variants.push(v);
        for v in variants {
            assert_ne!(ring.fingerprint(&v).unwrap().1, mac, "{v:?}");
        }
        assert_eq!(ring.fingerprint(&base).unwrap().1, mac);
    }

    #[test]
    fn keys_never_show_themselves() {
        let key = VaultKey::from_hex("k1", &Secret::new("ab".repeat(32))).unwrap();
        let shown = format!("{key:?} {:?}", VaultKeyring::new(key.clone()));
        assert!(!shown.contains("abab") && !shown.contains("171"), "{shown}");
        for bad in ["ab", "zz".repeat(32).as_str(), ""] {
            assert!(matches!(
                VaultKey::from_hex("k1", &Secret::new(bad)),
                Err(VaultError::Invalid { field: "key" })
            ));
        }
        for bad in ["", "a b", "k/1", &"k".repeat(65)] {
            assert!(matches!(
                VaultKey::new(bad, [0; 32]),
                Err(VaultError::Invalid { field: "key_id" })
            ));
        }
    }
}
