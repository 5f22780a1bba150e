//! Strict base64 for the wire forms: one spelling per value (I17).
//!
//! The `Payment` scheme uses base64url without padding (RFC 4648 section 5) for `request`,
//! `opaque`, credentials and receipts; x402 uses standard base64 with padding for its headers.
//! Decoding refuses the other alphabet, padding where there must be none (and its absence
//! where it is required), white space, and non-zero trailing bits, so two encodings of the same
//! bytes never both verify.

#![cfg_attr(not(feature = "mpp"), allow(dead_code))]
use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;

use super::error::WireError;

const URL_NOPAD: GeneralPurpose = GeneralPurpose::new(
    &alphabet::URL_SAFE,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::RequireNone)
        .with_decode_allow_trailing_bits(false),
);

const STANDARD_PADDED: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_encode_padding(true)
        .with_decode_padding_mode(DecodePaddingMode::RequireCanonical)
        .with_decode_allow_trailing_bits(false),
);

/// base64url without padding.
pub(crate) fn url_encode(bytes: &[u8]) -> String {
    URL_NOPAD.encode(bytes)
}

/// Decodes base64url without padding; `field` names the value in the error.
pub(crate) fn url_decode(field: &'static str, text: &str) -> Result<Vec<u8>, WireError> {
    if text.is_empty() {
        return Err(WireError::Empty { field });
    }
    if let Some(bad) = text
        .bytes()
        .find(|b| !(b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_'))
    {
        return Err(WireError::Base64 {
            field,
            reason: if bad == b'=' {
                "padding is not allowed (base64url without padding)"
            } else if bad == b'+' || bad == b'/' {
                "standard base64 alphabet: base64url uses '-' and '_'"
            } else {
                "character outside the base64url alphabet"
            },
        });
    }
    URL_NOPAD.decode(text).map_err(|_| WireError::Base64 {
        field,
        reason: "truncated or non-canonical base64url (length or trailing bits)",
    })
}

/// Standard base64 with padding (the x402 headers).
pub(crate) fn std_encode(bytes: &[u8]) -> String {
    STANDARD_PADDED.encode(bytes)
}

/// Standard base64 for a digest (RFC 9530 byte sequences use it).
pub(crate) fn std_decode(field: &'static str, text: &str) -> Result<Vec<u8>, WireError> {
    if text.is_empty() {
        return Err(WireError::Empty { field });
    }
    STANDARD_PADDED.decode(text).map_err(|_| WireError::Base64 {
        field,
        reason: "not canonical standard base64 with padding",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_round_trip_and_refusals() {
        let enc = url_encode(b"{\"a\":1}?>");
        assert!(!enc.contains('='));
        assert_eq!(url_decode("x", &enc).unwrap(), b"{\"a\":1}?>");
        assert!(url_decode("x", "eyJhIjoxfQ==").is_err());
        assert!(url_decode("x", "eyJhIjoxfQ+").is_err());
        assert!(url_decode("x", "e").is_err());
        // "eQ" and "eR" differ only in trailing bits: only the canonical one decodes.
        assert!(url_decode("x", "eQ").is_ok());
        assert!(url_decode("x", "eR").is_err());
        assert!(url_decode("x", "").is_err());
    }

    #[test]
    fn std_requires_padding() {
        assert_eq!(std_encode(b"ab"), "YWI=");
        assert!(std_decode("x", "YWI=").is_ok());
        assert!(std_decode("x", "YWI").is_err());
        assert!(std_decode("x", "YW-=").is_err());
    }
}
