//! RFC 9457 problem details with the `Payment` scheme's error codes.

use serde::Serialize;

/// The base URI of the scheme's problem types.
pub const PROBLEM_BASE: &str = "https://paymentauth.org/problems/";

/// The scheme's error codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProblemCode {
    /// The resource requires payment (402).
    PaymentRequired,
    /// The amount paid is too low (402).
    PaymentInsufficient,
    /// The challenge or authorization expired (402).
    PaymentExpired,
    /// The proof is invalid (402).
    VerificationFailed,
    /// The method is not accepted (400).
    MethodUnsupported,
    /// The credential cannot be read (402).
    MalformedCredential,
    /// The challenge id is unknown, expired or already used (402).
    InvalidChallenge,
}

impl ProblemCode {
    /// The code (`verification-failed`).
    pub fn as_str(self) -> &'static str {
        match self {
            ProblemCode::PaymentRequired => "payment-required",
            ProblemCode::PaymentInsufficient => "payment-insufficient",
            ProblemCode::PaymentExpired => "payment-expired",
            ProblemCode::VerificationFailed => "verification-failed",
            ProblemCode::MethodUnsupported => "method-unsupported",
            ProblemCode::MalformedCredential => "malformed-credential",
            ProblemCode::InvalidChallenge => "invalid-challenge",
        }
    }

    /// The HTTP status the scheme gives it.
    pub fn status(self) -> u16 {
        match self {
            ProblemCode::MethodUnsupported => 400,
            ProblemCode::PaymentRequired
            | ProblemCode::PaymentInsufficient
            | ProblemCode::PaymentExpired
            | ProblemCode::VerificationFailed
            | ProblemCode::MalformedCredential
            | ProblemCode::InvalidChallenge => 402,
        }
    }

    fn title(self) -> &'static str {
        match self {
            ProblemCode::PaymentRequired => "Payment Required",
            ProblemCode::PaymentInsufficient => "Payment Insufficient",
            ProblemCode::PaymentExpired => "Payment Expired",
            ProblemCode::VerificationFailed => "Payment Verification Failed",
            ProblemCode::MethodUnsupported => "Payment Method Unsupported",
            ProblemCode::MalformedCredential => "Malformed Payment Credential",
            ProblemCode::InvalidChallenge => "Invalid Payment Challenge",
        }
    }
}

/// A problem details body (`application/problem+json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Problem {
    /// `https://paymentauth.org/problems/<code>`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Short title.
    pub title: String,
    /// HTTP status.
    pub status: u16,
    /// What happened, without any credential material.
    pub detail: String,
    /// The fresh challenge's id, when one is sent with the problem.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub challenge_id: Option<String>,
}

impl Problem {
    /// A problem of `code` with `detail`.
    pub fn new(code: ProblemCode, detail: impl Into<String>) -> Problem {
        Problem {
            kind: format!("{PROBLEM_BASE}{}", code.as_str()),
            title: code.title().into(),
            status: code.status(),
            detail: detail.into(),
            challenge_id: None,
        }
    }

    /// The JSON body.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| String::from("{}"))
    }
}
