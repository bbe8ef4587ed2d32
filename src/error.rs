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

/// A body is not an AISoule event at all.
///
/// Only input that cannot be dispatched is an error: a known event whose `data` has an
/// unexpected shape still parses, as [`Payload::Unrecognized`](crate::event::Payload::Unrecognized),
/// because an error would make the platform retry a payload that can never succeed. Every
/// message names the JSON path it is about.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ParseError {
    /// The body is not JSON (or not UTF-8, or nested too deeply to parse safely).
    #[error("$: the body is not JSON: {reason}")]
    NotJson {
        /// What the JSON parser reported, with its line and column.
        reason: String,
    },
    /// The body is JSON, but not an object.
    #[error("$: expected a JSON object, found {found}")]
    NotAnObject {
        /// The JSON type found instead (`array`, `string`, …).
        found: &'static str,
    },
    /// The object has no `event` key.
    #[error("$.event: missing; every AISoule delivery names its event")]
    MissingEvent,
    /// The `event` key holds something other than a string.
    #[error("$.event: expected a string, found {found}")]
    EventNotString {
        /// The JSON type found instead.
        found: &'static str,
    },
    /// A key that decides dispatch or deduplication appears twice, so two JSON parsers could
    /// disagree about what this delivery is.
    #[error("{path}: the key appears more than once")]
    DuplicateKey {
        /// The JSON path of the repeated key: `$.event` or `$.data.message_id`.
        path: &'static str,
    },
}

/// The idempotency store could not answer.
///
/// The integrations answer these with 503 and `Retry-After`, so the platform retries the
/// delivery later instead of losing it.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum DedupError {
    /// The store could not be reached or timed out.
    #[error("the idempotency store is unavailable: {reason}")]
    Unavailable {
        /// What the store client reported.
        reason: String,
    },
    /// The store answered something this crate does not understand.
    #[error("the idempotency store answered unexpectedly: {reason}")]
    UnexpectedReply {
        /// What was wrong with the answer.
        reason: String,
    },
    /// A commit came after the claim's lease had expired and another delivery had taken or
    /// completed the key, so the event may have been handled twice.
    #[error("the claim on `{key}` was lost: its lease expired and another delivery took the key")]
    LeaseLost {
        /// The key whose claim was lost.
        key: String,
    },
}

/// A configuration that would break a guarantee, refused when it is built.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A dedup namespace contains `:`, the key separator, so two webhooks' keys could collide.
    #[error("the dedup namespace {namespace:?} contains `:`, which separates the parts of a key")]
    NamespaceHasSeparator {
        /// The namespace given.
        namespace: String,
    },
    /// The dedup TTL is shorter than the replay tolerance, so a replay could arrive after its
    /// key was forgotten yet before it counts as stale.
    #[error(
        "the dedup TTL ({ttl_secs} s) is shorter than the replay tolerance ({tolerance_secs} s); \
         a replay in between would be handled twice"
    )]
    TtlShorterThanTolerance {
        /// The dedup TTL in seconds.
        ttl_secs: u64,
        /// The replay tolerance in seconds.
        tolerance_secs: u64,
    },
    /// A duration that must be positive is zero.
    #[error("{setting} must be longer than zero")]
    ZeroDuration {
        /// Which setting.
        setting: &'static str,
    },
}

/// Why the integrations did not hand a delivery to your handler, and what they answered.
///
/// [`Rejection::status`] is the one status map both frameworks use. Every signature failure
/// gets the same 401 with the same body; the variant keeps the detail for your logs.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum Rejection {
    /// The body is larger than the configured [`BodyLimit`](crate::BodyLimit) (413).
    #[error("the body exceeds the {limit}-byte limit")]
    PayloadTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// The body could not be read, or could not be decoded (400).
    #[error("the body could not be read: {reason}")]
    BodyUnreadable {
        /// What went wrong.
        reason: String,
    },
    /// The signature did not verify (401).
    #[error("signature rejected: {0}")]
    Signature(#[from] VerifyError),
    /// The verified body is not an AISoule event (400).
    #[error("not an AISoule event: {0}")]
    Parse(#[from] ParseError),
    /// The event's timestamp is outside the replay tolerance: a replay, or a badly wrong clock
    /// (400).
    #[error(
        "the event is {skew_secs} s away from now, beyond the {tolerance_secs} s replay tolerance"
    )]
    Stale {
        /// How far the event's timestamp is from now, in whole seconds.
        skew_secs: u64,
        /// The tolerance, in seconds.
        tolerance_secs: u64,
    },
    /// Already handled within the TTL (200, so the platform stops retrying; the handler is
    /// not called).
    #[error("duplicate delivery of an event already handled")]
    Duplicate,
    /// Another delivery of this event is being handled right now (409, so the platform retries
    /// later).
    #[error("another delivery of this event is being handled")]
    InFlight,
    /// The idempotency store could not answer (503 with `Retry-After`, so the platform retries).
    #[error("the idempotency store failed: {0}")]
    Store(#[from] DedupError),
}

impl Rejection {
    /// The HTTP status the platform receives.
    pub fn status(&self) -> http::StatusCode {
        use http::StatusCode;
        match self {
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::BodyUnreadable { .. } | Self::Parse(_) | Self::Stale { .. } => {
                StatusCode::BAD_REQUEST
            }
            Self::Signature(_) => StatusCode::UNAUTHORIZED,
            Self::Duplicate => StatusCode::OK,
            Self::InFlight => StatusCode::CONFLICT,
            Self::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The `Retry-After` value in seconds, for the answers that invite a retry.
    pub fn retry_after_secs(&self) -> Option<u64> {
        // The platform's own first retry comes after 10 s; asking for the same keeps both in step.
        matches!(self, Self::Store(_)).then_some(10)
    }

    /// The JSON body sent with the status. It never carries signature details, so every
    /// signature failure looks identical from outside.
    pub fn public_body(&self) -> String {
        let message = match self {
            Self::PayloadTooLarge { .. } => "payload too large",
            Self::BodyUnreadable { .. } => "unreadable body",
            Self::Signature(_) => "invalid signature",
            Self::Parse(_) => "not an AISoule event",
            Self::Stale { .. } => "stale event",
            Self::Duplicate => return r#"{"status":"duplicate"}"#.to_owned(),
            Self::InFlight => "delivery in progress; retry later",
            Self::Store(_) => "temporarily unavailable; retry later",
        };
        format!(r#"{{"error":"{message}"}}"#)
    }

    /// A short, stable name for logs and metrics: `too_large`, `unreadable`, `signature`,
    /// `parse`, `stale`, `duplicate`, `in_flight`, `store`.
    pub fn outcome(&self) -> &'static str {
        match self {
            Self::PayloadTooLarge { .. } => "too_large",
            Self::BodyUnreadable { .. } => "unreadable",
            Self::Signature(_) => "signature",
            Self::Parse(_) => "parse",
            Self::Stale { .. } => "stale",
            Self::Duplicate => "duplicate",
            Self::InFlight => "in_flight",
            Self::Store(_) => "store",
        }
    }
}
