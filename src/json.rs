//! Reading domain values from JSON with errors that name the offending field (I11).
//!
//! Every domain type validates itself when deserialised, so `serde_json::from_str` never builds
//! an invalid value, nor reads a domain struct from a JSON array (serde's positional form, I17).
//! This module adds what plain serde errors lack: the path of the field, and the rest of one
//! meaning per input (I17): [`from_json`] refuses the positional form at any depth of any type
//! (engine commands included) and `null` for an optional field (omit the field instead), which
//! plain `serde_json::from_str` reads as absent. Read untrusted input with [`from_json`].

use std::fmt;

pub(crate) mod strict;

use serde::de::DeserializeOwned;

/// What kind of problem a JSON input has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum InputErrorKind {
    /// Not well-formed JSON, or truncated.
    Syntax,
    /// A required field is absent.
    MissingField,
    /// A field that the type does not have (typos are never ignored).
    UnknownField,
    /// A value of the wrong JSON type or an unknown enum variant.
    WrongType,
    /// A value of the right type that breaks a domain rule.
    Invalid,
}

/// A rejected JSON input: which field, what kind of problem, and the explanation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputError {
    field: String,
    kind: InputErrorKind,
    message: String,
    line: usize,
    column: usize,
}

impl InputError {
    /// Path of the offending field (`items[2].unit_price.amount`); empty for the whole document.
    pub fn field(&self) -> &str {
        &self.field
    }

    /// The kind of problem.
    pub fn kind(&self) -> InputErrorKind {
        self.kind
    }

    /// The explanation, without the field path.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Line and column of the input where the problem was found (1-based; 0 if unknown).
    pub fn position(&self) -> (usize, usize) {
        (self.line, self.column)
    }
}

impl fmt::Display for InputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.field, self.message)
        }
    }
}

impl std::error::Error for InputError {}

/// Parses `text` as a `T`, naming the field of any problem. Refuses what another conforming
/// reader could read differently (I17): duplicate keys, a struct in the positional (array) form,
/// `null` for an optional field.
///
/// ```
/// use agent_mandate::domain::Money;
/// use agent_mandate::json::{from_json, InputErrorKind};
/// let err = from_json::<Vec<Money>>(r#"[{"amount": "1.00", "currency": "EUR"},
///                                       {"amount": "1.001", "currency": "EUR"}]"#).unwrap_err();
/// assert_eq!(err.field(), "[1].amount");
/// assert_eq!(err.kind(), InputErrorKind::Invalid);
/// ```
pub fn from_json<T: DeserializeOwned>(text: &str) -> Result<T, InputError> {
    let mut de = serde_json::Deserializer::from_str(text);
    let value = match serde_path_to_error::deserialize::<_, T>(strict::Strict::<_, true>(&mut de)) {
        Ok(v) => v,
        Err(e) => {
            let path = e.path().to_string();
            let mut err = classify(tidy(&path), e.into_inner());
            // serde_json reports some shape errors in well-formed JSON as syntax errors (an
            // enum given `{}` or an object with a second key): only text that is not JSON is a
            // syntax error.
            if err.kind == InputErrorKind::Syntax
                && serde_json::from_str::<serde_json::Value>(text).is_ok()
            {
                err.kind = InputErrorKind::WrongType;
            }
            return Err(err);
        }
    };
    de.end().map_err(|e| classify(String::new(), e))?;
    Ok(value)
}

/// The path without the whole-document marker `.` and without trailing `?` segments (keys not
/// read yet, as in a syntax error after a comma).
fn tidy(path: &str) -> String {
    let mut p = path;
    while let Some(rest) = p.strip_suffix(".?") {
        p = rest;
    }
    if p == "." || p == "?" {
        p = "";
    }
    p.to_owned()
}

fn join(path: &str, inner: &str) -> String {
    match (path.is_empty(), inner.is_empty()) {
        (_, true) => path.to_owned(),
        (true, false) => inner.to_owned(),
        (false, false) if inner.starts_with('[') => format!("{path}{inner}"),
        (false, false) => format!("{path}.{inner}"),
    }
}

fn backticked(msg: &str) -> Option<&str> {
    let start = msg.find('`')? + 1;
    let len = msg[start..].find('`')?;
    Some(&msg[start..start + len])
}

fn classify(path: String, e: serde_json::Error) -> InputError {
    let (line, column) = (e.line(), e.column());
    let full = e.to_string();
    let suffix = format!(" at line {line} column {column}");
    let msg = full.strip_suffix(&suffix).unwrap_or(&full).to_owned();
    let make = |field: String, kind, message: String| InputError {
        field,
        kind,
        message,
        line,
        column,
    };
    match e.classify() {
        serde_json::error::Category::Syntax
        | serde_json::error::Category::Eof
        | serde_json::error::Category::Io => make(path, InputErrorKind::Syntax, msg),
        serde_json::error::Category::Data => {
            if msg.starts_with("missing field") || msg.starts_with("unknown field") {
                let kind = if msg.starts_with("missing") {
                    InputErrorKind::MissingField
                } else {
                    InputErrorKind::UnknownField
                };
                // The path of an unknown field already ends with its name.
                let field = match backticked(&msg) {
                    Some(f)
                        if kind == InputErrorKind::UnknownField
                            && (path == f || path.ends_with(&format!(".{f}"))) =>
                    {
                        path.clone()
                    }
                    Some(f) => join(&path, f),
                    None => path.clone(),
                };
                return make(field, kind, msg);
            }
            const SERDE: [&str; 5] = [
                "invalid type",
                "invalid value",
                "invalid length",
                "unknown variant",
                "duplicate field",
            ];
            if SERDE.iter().any(|p| msg.starts_with(p)) {
                return make(path, InputErrorKind::WrongType, msg);
            }
            // Our own validation errors read `field.path: reason`.
            if let Some((inner, reason)) = msg.split_once(": ") {
                let is_path = !inner.is_empty()
                    && inner
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '[' | ']'));
                if is_path {
                    return make(
                        join(&path, inner),
                        InputErrorKind::Invalid,
                        reason.to_owned(),
                    );
                }
            }
            make(path, InputErrorKind::Invalid, msg)
        }
    }
}

/// `Serialize` and `Deserialize` for domain types derived with `#[serde(remote = "Self")]`:
/// serde's derived code, except that a struct (or an enum's struct variant) refuses the
/// positional (array) form, so plain `serde_json::from_str` refuses it too (I17). `de` for a
/// type that only derives `Deserialize`.
macro_rules! object_only {
    (de $t:ident) => {
        impl<'de> serde::Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                $t::deserialize(crate::json::strict::Strict::<D, false>(d))
            }
        }
    };
    ($t:ident) => {
        impl serde::Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                $t::serialize(self, s)
            }
        }
        $crate::json::object_only!(de $t);
    };
}
pub(crate) use object_only;
