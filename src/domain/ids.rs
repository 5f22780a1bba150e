//! Identifier newtypes: validated on construction, cheap to clone (shared `Arc<str>`).

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::error::{err, ValidationError, ValidationKind};

pub use super::limits::MAX_ID_LEN;

fn check_id(text: &str) -> Result<(), ValidationKind> {
    if text.is_empty() {
        return Err(ValidationKind::Empty);
    }
    if text.len() > MAX_ID_LEN {
        return Err(ValidationKind::TooLong {
            max: MAX_ID_LEN,
            len: text.len(),
        });
    }
    if text
        .chars()
        .any(|c| c.is_control() || c.is_whitespace() || invisible(c))
    {
        return Err(ValidationKind::InvalidCharacter);
    }
    // `.` and `..` are dot segments: placed in a link's path, a browser resolves them to
    // another page (the buyer's dashboard puts actor and mandate ids in paths).
    if text == "." || text == ".." {
        return Err(ValidationKind::InvalidCharacter);
    }
    Ok(())
}

/// Characters that print as nothing or reorder what follows: two ids differing only by them
/// would read the same in a log or an audit trail. Zero-width spaces and joiners, bidi marks,
/// embeddings, overrides and isolates, invisible operators, the byte-order mark, the soft
/// hyphen and the Mongolian vowel separator.
fn invisible(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{061C}'
            | '\u{180E}'
            | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{206F}'
            | '\u{FEFF}'
    )
}

macro_rules! string_id {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        ///
        /// Non-empty, at most 128 bytes, no white space, control, invisible or bidi characters,
        /// not `.` or `..`.
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Arc<str>);

        impl $name {
            /// Validates and wraps `text`.
            pub fn new(text: impl AsRef<str>) -> Result<Self, ValidationError> {
                let text = text.as_ref();
                check_id(text).map_err(|kind| err("", kind))?;
                Ok(Self(Arc::from(text)))
            }

            /// The identifier text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), &*self.0)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl FromStr for $name {
            type Err = ValidationError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::new(s)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                Self::new(&*s).map_err(serde::de::Error::custom)
            }
        }
    };
}

string_id!(
    /// The buyer whose funds or instrument are used.
    BuyerId
);
string_id!(
    /// A party that requests actions: a human, an agent or a system process.
    ActorId
);
string_id!(
    /// A mandate, supplied by the caller or the store.
    MandateId
);
string_id!(
    /// A merchant of record.
    MerchantId
);
string_id!(
    /// A marketplace operator.
    MarketplaceId
);
string_id!(
    /// A seller on a marketplace.
    SellerId
);
string_id!(
    /// A stock-keeping unit.
    Sku
);
string_id!(
    /// A checkout session of the upstream checkout service.
    CheckoutId
);
string_id!(
    /// A mutable cart container (not proof of content: see `SnapshotId`).
    CartId
);
string_id!(
    /// A recorded confirmation event.
    ConfirmationId
);
string_id!(
    /// A reference to evidence kept elsewhere (`checkout:checkout_789:state`, an AP2 mandate id).
    EvidenceRef
);
string_id!(
    /// A code of an upstream system (`INVENTORY_STALE`), carried as a nested cause.
    UpstreamCode
);
string_id!(
    /// The channel a confirmation came through (`push:device_42`, `web:session_9`).
    ChannelRef
);
string_id!(
    /// The agent task that produced a purchase intent.
    TaskId
);
string_id!(
    /// A payment attempt (derived by the engine from the actor and the idempotency key).
    AttemptId
);
string_id!(
    /// A committed order.
    OrderId
);
string_id!(
    /// An idempotency key chosen by the caller, scoped to the actor and the operation.
    IdempotencyKey
);
string_id!(
    /// An opaque reference to a credential held by the vault: never the credential itself.
    CredentialRef
);
string_id!(
    /// The payment service provider's reference for a payment (`pi_...`).
    ProviderRef
);
string_id!(
    /// The idempotency key sent to the PSP, derived from the attempt and the operation, so a
    /// retry after a crash is deduplicated by the PSP as well.
    ProviderKey
);
string_id!(
    /// A region code of the checkout context (`EU`, `US-CA`).
    Region
);

/// A merchant category code: exactly four ASCII digits (`"5411"`).
///
/// ```
/// use agent_mandate::domain::Mcc;
/// assert!("5411".parse::<Mcc>().is_ok());
/// assert!("541".parse::<Mcc>().is_err());
/// assert!("54a1".parse::<Mcc>().is_err());
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Mcc([u8; 4]);

impl Mcc {
    /// Validates four ASCII digits.
    pub fn new(text: &str) -> Result<Mcc, ValidationError> {
        let bytes: [u8; 4] = text.as_bytes().try_into().map_err(|_| {
            err(
                "",
                ValidationKind::InvalidFormat {
                    expected: "four digits",
                },
            )
        })?;
        if !bytes.iter().all(u8::is_ascii_digit) {
            return Err(err(
                "",
                ValidationKind::InvalidFormat {
                    expected: "four digits",
                },
            ));
        }
        Ok(Mcc(bytes))
    }

    /// The four digits.
    pub fn as_str(&self) -> &str {
        // Invariant: constructed only from four ASCII digits.
        std::str::from_utf8(&self.0).unwrap_or("0000")
    }
}

impl fmt::Debug for Mcc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Mcc({})", self.as_str())
    }
}

impl fmt::Display for Mcc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Mcc {
    type Err = ValidationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Mcc::new(s)
    }
}

impl Serialize for Mcc {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Mcc {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Mcc::new(&s).map_err(serde::de::Error::custom)
    }
}

/// Free text (descriptions, reasons, messages): not blank, at most [`MAX_TEXT_LEN`] bytes, no
/// control characters.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Text(Arc<str>);

pub use super::limits::MAX_TEXT_LEN;

impl Text {
    /// Validates and wraps `text`.
    pub fn new(text: impl AsRef<str>) -> Result<Text, ValidationError> {
        let text = text.as_ref();
        if text.trim().is_empty() {
            return Err(err("", ValidationKind::Empty));
        }
        if text.len() > MAX_TEXT_LEN {
            return Err(err(
                "",
                ValidationKind::TooLong {
                    max: MAX_TEXT_LEN,
                    len: text.len(),
                },
            ));
        }
        if text.chars().any(char::is_control) {
            return Err(err("", ValidationKind::InvalidCharacter));
        }
        Ok(Text(Arc::from(text)))
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for Text {
    type Err = ValidationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Text::new(s)
    }
}

impl Serialize for Text {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Text::new(&*s).map_err(serde::de::Error::custom)
    }
}

impl AttemptId {
    /// An id derived from a valid attempt id and a suffix without white space. Over 128
    /// bytes, the SHA-256 of the text stands in.
    pub(crate) fn derived(text: String) -> AttemptId {
        AttemptId(derived_text(text))
    }
}

impl ActorId {
    /// An id built by the crate from valid parts (a principal's idempotency scope). Over 128
    /// bytes, the SHA-256 of the text stands in.
    pub(crate) fn derived(text: String) -> ActorId {
        ActorId(derived_text(text))
    }
}

impl OrderId {
    /// An id derived from a valid attempt id (see [`AttemptId::derived`]).
    pub(crate) fn derived(text: String) -> OrderId {
        OrderId(derived_text(text))
    }
}

fn derived_text(text: String) -> Arc<str> {
    if text.len() <= MAX_ID_LEN {
        Arc::from(text)
    } else {
        use sha2::{Digest as _, Sha256};
        Arc::from(format!(
            "h-{}",
            hex::encode(Sha256::digest(text.as_bytes()))
        ))
    }
}

impl ProviderKey {
    /// A key derived from a valid attempt id and an operation name (no white space or control
    /// characters by construction). Over 128 bytes, the SHA-256 of the text stands in.
    pub(crate) fn derived(text: String) -> ProviderKey {
        ProviderKey(derived_text(text))
    }
}
