//! CSRF tokens: HMAC-SHA256 under the host's secret of the principal and the login session,
//! checked in constant time.
//!
//! `token = hex(HMAC-SHA256(secret, "agent-mandate/dashboard/csrf/v1\n" || scope_id || "\n" || session))`
//!
//! A token is valid for one principal in one session: another buyer's token, a token of an
//! earlier session, or a form without one does not verify.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::domain::Principal;
use crate::ports::Secret;

type HmacSha256 = Hmac<Sha256>;

const TAG: &[u8] = b"agent-mandate/dashboard/csrf/v1\n";

fn mac(secret: &Secret, by: &Principal, session: &str) -> HmacSha256 {
    // HMAC takes a key of any length; the fallback is never taken.
    let mut mac = <HmacSha256 as KeyInit>::new_from_slice(secret.expose().as_bytes())
        .unwrap_or_else(|_| <HmacSha256 as KeyInit>::new(&Default::default()));
    mac.update(TAG);
    mac.update(by.scope_id().as_str().as_bytes());
    mac.update(b"\n");
    mac.update(session.as_bytes());
    mac
}

/// The token of `by` in `session`.
pub(crate) fn token(secret: &Secret, by: &Principal, session: &str) -> String {
    hex::encode(mac(secret, by, session).finalize().into_bytes())
}

/// Whether `presented` is the token of `by` in `session` (constant time in the token's
/// bytes; a token that is not 64 hex digits fails before any comparison).
pub(crate) fn verify(secret: &Secret, by: &Principal, session: &str, presented: &str) -> bool {
    let mut bytes = [0u8; 32];
    if hex::decode_to_slice(presented.as_bytes(), &mut bytes).is_err() {
        return false;
    }
    mac(secret, by, session).verify_slice(&bytes).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret() -> Secret {
        Secret::new("0123456789abcdef0123456789abcdef")
    }

    fn buyer(id: &str) -> Principal {
        Principal::Buyer(id.parse().expect("id"))
    }

    #[test]
    fn a_token_verifies_for_its_principal_and_session_only() {
        let t = token(&secret(), &buyer("buyer_a"), "s1");
        assert_eq!(t.len(), 64);
        assert!(verify(&secret(), &buyer("buyer_a"), "s1", &t));
        assert!(!verify(&secret(), &buyer("buyer_b"), "s1", &t));
        assert!(!verify(&secret(), &buyer("buyer_a"), "s2", &t));
        assert!(!verify(
            &Secret::new("another secret of thirty-two bytes!!"),
            &buyer("buyer_a"),
            "s1",
            &t
        ));
        assert!(!verify(&secret(), &buyer("buyer_a"), "s1", ""));
        assert!(!verify(&secret(), &buyer("buyer_a"), "s1", &t[..62]));
        let mut flipped = t.clone().into_bytes();
        flipped[0] = if flipped[0] == b'0' { b'1' } else { b'0' };
        let flipped = String::from_utf8(flipped).expect("hex");
        assert!(!verify(&secret(), &buyer("buyer_a"), "s1", &flipped));
    }

    #[test]
    fn a_buyer_and_an_agent_with_the_same_id_text_get_different_tokens() {
        let agent = Principal::Agent("buyer_a".parse().expect("id"));
        assert_ne!(
            token(&secret(), &buyer("buyer_a"), "s"),
            token(&secret(), &agent, "s")
        );
    }
}
