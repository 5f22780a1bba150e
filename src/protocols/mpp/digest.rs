//! RFC 9530 `Content-Digest` values for the challenge's `digest` parameter.
//!
//! A value is a structured-field dictionary of algorithm to byte sequence:
//! `sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:`. This crate issues `sha-256` and
//! verifies `sha-256` (other algorithms of a dictionary are skipped; a dictionary with no
//! `sha-256` member cannot be verified and is refused).

use sha2::{Digest as _, Sha256};

use crate::protocols::b64;
use crate::protocols::error::WireError;

const FIELD: &str = "digest";

/// The RFC 9530 `sha-256` digest of `body`.
///
/// ```
/// use agent_mandate::protocols::mpp::body_digest;
/// assert_eq!(body_digest(b"{\"hello\": \"world\"}\n"),
///            "sha-256=:RK/0qy18MlBSVnWgjwz6lZEWjP/lF5HF9bvEF8FabDg=:");
/// ```
pub fn body_digest(body: &[u8]) -> String {
    format!("sha-256=:{}:", b64::std_encode(&Sha256::digest(body)))
}

/// The members of a digest dictionary, checked for syntax.
fn members(value: &str) -> Result<Vec<(&str, Vec<u8>)>, WireError> {
    if value.len() > 1024 {
        return Err(WireError::TooLarge {
            field: FIELD,
            len: value.len(),
            max: 1024,
        });
    }
    let mut out = Vec::new();
    for member in value.split(',') {
        let member = member.trim_matches(|c| c == ' ' || c == '\t');
        let Some((alg, rest)) = member.split_once('=') else {
            return Err(WireError::Invalid {
                field: FIELD,
                reason: "an RFC 9530 member is algorithm=:base64:",
            });
        };
        let alg_ok = !alg.is_empty()
            && alg
                .bytes()
                .next()
                .is_some_and(|b| b.is_ascii_lowercase() || b == b'*')
            && alg
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_-.*".contains(&b));
        let Some(inner) = rest.strip_prefix(':').and_then(|r| r.strip_suffix(':')) else {
            return Err(WireError::Invalid {
                field: FIELD,
                reason: "an RFC 9530 digest is a byte sequence between colons",
            });
        };
        if !alg_ok {
            return Err(WireError::Invalid {
                field: FIELD,
                reason: "the algorithm is not a structured-field key",
            });
        }
        let bytes = b64::std_decode(FIELD, inner)?;
        if out.iter().any(|(a, _)| *a == alg) {
            return Err(WireError::DuplicateParam {
                name: format!("digest {alg}"),
            });
        }
        out.push((alg, bytes));
    }
    Ok(out)
}

/// Checks that `value` is an RFC 9530 dictionary with a 32-byte `sha-256` member.
pub(crate) fn check_digest_syntax(value: &str) -> Result<(), WireError> {
    let m = members(value)?;
    match m.iter().find(|(a, _)| *a == "sha-256") {
        Some((_, b)) if b.len() == 32 => Ok(()),
        Some(_) => Err(WireError::Invalid {
            field: FIELD,
            reason: "a sha-256 digest is 32 bytes",
        }),
        None => Err(WireError::Invalid {
            field: FIELD,
            reason: "no sha-256 member",
        }),
    }
}

/// Whether `body` has the `sha-256` digest that `value` states.
pub fn digest_matches(value: &str, body: &[u8]) -> Result<bool, WireError> {
    check_digest_syntax(value)?;
    let m = members(value)?;
    let want = Sha256::digest(body);
    Ok(m.iter()
        .any(|(a, b)| *a == "sha-256" && b.as_slice() == want.as_slice()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issue_and_match() {
        let d = body_digest(b"{}");
        assert!(digest_matches(&d, b"{}").unwrap());
        assert!(!digest_matches(&d, b"{ }").unwrap());
        let two = format!("sha-512=:{}:, {d}", b64::std_encode(&[0u8; 64]));
        assert!(digest_matches(&two, b"{}").unwrap());
    }

    #[test]
    fn refusals() {
        for bad in [
            "sha-256=X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=",
            "sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE:",
            "sha-256=:AAAA:",
            "SHA-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:",
            "sha-512=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:",
            "",
        ] {
            assert!(check_digest_syntax(bad).is_err(), "{bad}");
        }
    }
}
