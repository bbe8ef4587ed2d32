//! Every error this crate returns: one enum per concern.
//!
//! The enums are `#[non_exhaustive]` and carry no third-party types, so new failure modes and
//! dependency upgrades are not breaking changes.

use thiserror::Error;

/// A secret could not be built from the given string.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum SecretError {
    /// The secret string is empty.
    #[error(
        "the webhook secret is empty; copy it from Settings → Webhooks in the AISoule dashboard"
    )]
    Empty,
    /// The secret starts or ends with whitespace, which the dashboard never generates.
    #[error(
        "the webhook secret starts or ends with whitespace (a copy-paste accident, such as a trailing newline); \
         remove it, or every signature will fail"
    )]
    SurroundingWhitespace,
}

/// A delivery's signature did not verify.
///
/// Every variant is answered with the same HTTP 401 by the integrations; the variant itself is
/// the detail for your logs. The messages never contain the secret or the expected signature.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// Neither `X-Webhook-Signature` nor `X-AISoule-Signature` is present.
    #[error("no signature: neither X-Webhook-Signature nor X-AISoule-Signature is present")]
    Missing,
    /// The signature header is present but empty.
    #[error("the signature header is empty")]
    Empty,
    /// The value is `sha256=` with nothing after it.
    #[error("the signature header holds `sha256=` and no digest after it")]
    PrefixOnly,
    /// The value is the docs' curl placeholder `MOCK_SIGNATURE`, not a real signature.
    #[error(
        "the signature is `MOCK_SIGNATURE`, the placeholder from the AISoule docs' curl sample; \
         sign the body with your webhook secret instead"
    )]
    Placeholder,
    /// The value names an algorithm other than `sha256` (for example `sha1=` or `md5=`).
    #[error("the signature uses the unsupported algorithm `{algorithm}`; only sha256 is accepted")]
    UnsupportedAlgorithm {
        /// The algorithm prefix as sent, lowercased and cut to 16 characters.
        algorithm: String,
    },
    /// The digest does not have exactly 64 hex digits.
    #[error("the signature has {digits} hex digits; 64 expected")]
    WrongLength {
        /// How many hex digits the digest has.
        digits: usize,
    },
    /// The digest contains a character that is not a hex digit.
    #[error(
        "the signature has a non-hex character at position {position} of the digest; 64 hex digits expected"
    )]
    NotHex {
        /// Zero-based byte offset of the first offending character within the digest.
        position: usize,
    },
    /// The signature headers carry different digests (two headers, or one header repeated).
    #[error("the signature headers disagree: {count} different digests were sent")]
    Ambiguous {
        /// How many distinct digests were sent.
        count: usize,
    },
    /// The digest is well formed but matches none of the configured secrets.
    #[error("the signature does not match the body under any configured secret")]
    Mismatch,
}

impl VerifyError {
    /// Whether the header value itself was unreadable, as opposed to missing, ambiguous or
    /// simply wrong.
    pub fn is_malformed(&self) -> bool {
        matches!(
            self,
            Self::Empty
                | Self::PrefixOnly
                | Self::Placeholder
                | Self::UnsupportedAlgorithm { .. }
                | Self::WrongLength { .. }
                | Self::NotHex { .. }
        )
    }
}
