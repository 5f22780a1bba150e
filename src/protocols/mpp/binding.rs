//! The recommended HMAC-SHA256 challenge binding: the id is the base64url (no padding) of
//! HMAC-SHA256 over seven positional slots joined with `|`:
//! `realm | method | intent | request | expires | digest | opaque`, where `request` and
//! `opaque` are the base64url JCS forms as on the wire and an absent optional slot is empty.

use std::fmt;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::protocols::b64;
use crate::protocols::error::WireError;

type HmacSha256 = Hmac<Sha256>;

/// The fewest bytes a binding secret may have.
pub const MIN_SECRET_LEN: usize = 16;

/// The server's binding secret. Never printed: `Debug` shows its length only.
#[derive(Clone)]
pub struct BindingSecret(Vec<u8>);

impl BindingSecret {
    /// Wraps `bytes`; at least [`MIN_SECRET_LEN`] of them.
    pub fn new(bytes: impl Into<Vec<u8>>) -> Result<BindingSecret, WireError> {
        let bytes = bytes.into();
        if bytes.len() < MIN_SECRET_LEN {
            return Err(WireError::Invalid {
                field: "secret",
                reason: "a binding secret has at least 16 bytes",
            });
        }
        Ok(BindingSecret(bytes))
    }

    fn mac(&self, slots: &Slots<'_>) -> HmacSha256 {
        // HMAC takes keys of any length; `new_from_slice` cannot fail for it.
        let mut mac = match HmacSha256::new_from_slice(&self.0) {
            Ok(m) => m,
            Err(_) => HmacSha256::new(&Default::default()),
        };
        let parts = [
            slots.realm,
            slots.method,
            slots.intent,
            slots.request,
            slots.expires.unwrap_or(""),
            slots.digest.unwrap_or(""),
            slots.opaque.unwrap_or(""),
        ];
        for (i, p) in parts.iter().enumerate() {
            if i > 0 {
                mac.update(b"|");
            }
            mac.update(p.as_bytes());
        }
        mac
    }

    /// The challenge id of `slots`.
    pub fn challenge_id(&self, slots: &Slots<'_>) -> String {
        b64::url_encode(&self.mac(slots).finalize().into_bytes())
    }

    /// Whether `id` is the challenge id of `slots` (compared in constant time).
    pub fn verify(&self, id: &str, slots: &Slots<'_>) -> bool {
        match b64::url_decode("id", id) {
            Ok(tag) if tag.len() == 32 => self.mac(slots).verify_slice(&tag).is_ok(),
            _ => false,
        }
    }
}

impl fmt::Debug for BindingSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BindingSecret(<{} bytes>)", self.0.len())
    }
}

/// The seven positional slots of the binding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slots<'a> {
    /// Slot 0.
    pub realm: &'a str,
    /// Slot 1.
    pub method: &'a str,
    /// Slot 2.
    pub intent: &'a str,
    /// Slot 3: base64url of the JCS request, as on the wire.
    pub request: &'a str,
    /// Slot 4.
    pub expires: Option<&'a str>,
    /// Slot 5.
    pub digest: Option<&'a str>,
    /// Slot 6: base64url of the JCS opaque map, as on the wire.
    pub opaque: Option<&'a str>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slots<'a>(expires: Option<&'a str>, digest: Option<&'a str>) -> Slots<'a> {
        Slots {
            realm: "api.example.com",
            method: "stripe",
            intent: "charge",
            request: "e30",
            expires,
            digest,
            opaque: None,
        }
    }

    #[test]
    fn positional_slots_keep_optional_fields_apart() {
        let s = BindingSecret::new(b"0123456789abcdef".to_vec()).unwrap();
        let a = s.challenge_id(&slots(Some("x"), None));
        let b = s.challenge_id(&slots(None, Some("x")));
        assert_ne!(a, b);
        assert!(s.verify(&a, &slots(Some("x"), None)));
        assert!(!s.verify(&a, &slots(None, Some("x"))));
        assert!(!s.verify("not-base64!", &slots(None, None)));
        assert_eq!(format!("{s:?}"), "BindingSecret(<16 bytes>)");
        assert!(BindingSecret::new(b"short".to_vec()).is_err());
    }
}
