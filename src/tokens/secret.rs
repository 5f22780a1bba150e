//! Token values: their format, their hash, and the OS random source.
//!
//! A token value is `amtok_` + the 32 hex digits of its id + `_` + 64 hex digits of secret
//! (32 bytes from a [`TokenGenerator`]). The id lets a redemption find the record directly;
//! the secret is compared as `SHA-256("agent-mandate/token/v1\n" || id || "\n" || secret)`
//! against the stored hash, in constant time.

use sha2::{Digest as _, Sha256};

use crate::ports::{Secret, TokenGenerator, TokenGeneratorError, TokenHash, TokenId};

/// The prefix of every token value (lets secret scanners recognise a leaked token).
pub const TOKEN_PREFIX: &str = "amtok_";

/// The domain separation of the hash.
const HASH_CONTEXT: &[u8] = b"agent-mandate/token/v1\n";

/// A token value split into its id and secret. Never printed.
pub(crate) struct Presented {
    pub(crate) id: TokenId,
    pub(crate) secret: [u8; 32],
}

impl Drop for Presented {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.secret);
    }
}

/// Draws a fresh secret: 32 bytes.
pub(crate) fn draw_secret(generator: &dyn TokenGenerator) -> Result<[u8; 32], TokenGeneratorError> {
    let mut secret = [0u8; 32];
    generator.fill(&mut secret)?;
    Ok(secret)
}

/// The value shown once: `amtok_<id hex>_<secret hex>`.
pub(crate) fn token_value(id: &TokenId, secret: &[u8; 32]) -> Secret {
    let mut text = String::with_capacity(6 + 32 + 1 + 64);
    text.push_str(TOKEN_PREFIX);
    text.push_str(&id.as_str()[4..]);
    text.push('_');
    text.push_str(&hex::encode(secret));
    let value = Secret::new(text.as_str());
    zeroize::Zeroize::zeroize(&mut text);
    value
}

/// Reads a presented value; `None` for anything that is not a token value.
pub(crate) fn parse(value: &Secret) -> Option<Presented> {
    let rest = value.expose().strip_prefix(TOKEN_PREFIX)?;
    let (id_hex, secret_hex) = rest.split_once('_')?;
    if id_hex.len() != 32 || secret_hex.len() != 64 {
        return None;
    }
    let id = TokenId::new(format!("tok_{id_hex}")).ok()?;
    let mut secret = [0u8; 32];
    // Upper-case hex would be a second spelling of one token: refused.
    if secret_hex.bytes().any(|b| b.is_ascii_uppercase()) {
        return None;
    }
    hex::decode_to_slice(secret_hex, &mut secret).ok()?;
    Some(Presented { id, secret })
}

/// The stored hash of a token's secret.
///
/// Why SHA-256 and not a keyed HMAC: the secret is 256 bits from a CSPRNG, so its hash can
/// neither be inverted nor brute-forced; a key (a pepper) would only help against guessing
/// low-entropy secrets, and would add key storage and rotation to every lookup. The id is in
/// the hashed text, so a hash moved to another record does not verify.
pub fn hash_secret(id: &TokenId, secret: &[u8; 32]) -> TokenHash {
    let mut h = Sha256::new();
    h.update(HASH_CONTEXT);
    h.update(id.as_str().as_bytes());
    h.update(b"\n");
    h.update(secret);
    TokenHash(h.finalize().into())
}

/// The token id and mandate id text of an issue: a digest of who asks and their key, so a
/// retried issue finds what the first one stored.
pub(crate) fn issue_digest(scope: &str, key: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"agent-mandate/token-issue/v1\n");
    h.update(scope.as_bytes());
    h.update(b"\n");
    h.update(key.as_bytes());
    h.finalize().into()
}

/// The operating system's CSPRNG (`getrandom`).
///
/// ```
/// use agent_mandate::ports::TokenGenerator;
/// use agent_mandate::tokens::OsTokenGenerator;
/// let mut a = [0u8; 32];
/// let mut b = [0u8; 32];
/// OsTokenGenerator.fill(&mut a).unwrap();
/// OsTokenGenerator.fill(&mut b).unwrap();
/// assert_ne!(a, b);
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct OsTokenGenerator;

impl TokenGenerator for OsTokenGenerator {
    fn fill(&self, out: &mut [u8]) -> Result<(), TokenGeneratorError> {
        getrandom::fill(out).map_err(|e| TokenGeneratorError {
            message: e.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_reads_back_and_refuses_other_spellings() {
        // Bytes whose hex has letters, so the upper-case spelling differs.
        let id = TokenId::from_bytes([0xab; 16]);
        let secret = [0xcd_u8; 32];
        let v = token_value(&id, &secret);
        let p = parse(&v).expect("parses");
        assert_eq!(p.id, id);
        assert_eq!(p.secret, secret);
        let upper = Secret::new(v.expose().to_uppercase().replace("AMTOK_", "amtok_"));
        assert!(parse(&upper).is_none());
        assert!(parse(&Secret::new("amtok_")).is_none());
        assert!(parse(&Secret::new(&v.expose()[..v.len() - 1])).is_none());
        assert!(parse(&Secret::new(v.expose().replace("amtok_", "xxtok_"))).is_none());
    }

    #[test]
    fn the_hash_binds_the_id() {
        let secret = [1u8; 32];
        let a = hash_secret(&TokenId::from_bytes([1; 16]), &secret);
        let b = hash_secret(&TokenId::from_bytes([2; 16]), &secret);
        assert!(!a.ct_eq(&b));
        assert!(a.ct_eq(&hash_secret(&TokenId::from_bytes([1; 16]), &secret)));
    }
}
