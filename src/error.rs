//! Every error this crate returns: one enum per concern.
//!
//! The enums are `#[non_exhaustive]` and carry no third-party types, so new failure modes and
//! dependency upgrades are not breaking changes.

use std::fmt;

use thiserror::Error;

/// An error and every source under it, on one line: `signature rejected: the signature
/// header is missing`.
///
/// The crate's errors never repeat their source in their own message (so that a reporter
/// that walks the chain prints each cause once); this is that walk, for a log line.
///
/// ```
/// use aisoule_webhooks::{Event, error::chain};
/// let error = Event::parse(b"{").unwrap_err();
/// assert!(chain(&error).to_string().starts_with("$: the body is not JSON: EOF"));
/// ```
pub fn chain<'a>(error: &'a (dyn std::error::Error + 'static)) -> impl fmt::Display + 'a {
    struct Chain<'a>(&'a (dyn std::error::Error + 'static));
    impl fmt::Display for Chain<'_> {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "{}", self.0)?;
            let mut source = self.0.source();
            while let Some(cause) = source {
                write!(f, ": {cause}")?;
                source = cause.source();
            }
            Ok(())
        }
    }
    Chain(error)
}

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
    #[error("$: the body is not JSON")]
    NotJson {
        /// What the JSON parser reported, with its line and column.
        #[source]
        source: JsonError,
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
    /// A key that decides dispatch, deduplication or freshness appears twice, so two JSON
    /// parsers could disagree about what this delivery is. The rule covers `$.event`,
    /// `$.timestamp`, `$.data` and `$.data.message_id`.
    #[error("{path}: the key appears more than once")]
    DuplicateKey {
        /// The JSON path of the repeated key: `$.event`, `$.timestamp`, `$.data` or
        /// `$.data.message_id`.
        path: &'static str,
    },
}

/// What a JSON parser reported about unreadable JSON, with where it stopped.
///
/// The crate's own type, so that the JSON library stays out of the public API.
#[derive(Debug, Clone)]
pub struct JsonError(std::sync::Arc<serde_json::Error>);

impl JsonError {
    /// The 1-based line where the parser stopped.
    pub fn line(&self) -> usize {
        self.0.line()
    }

    /// The 1-based column where the parser stopped.
    pub fn column(&self) -> usize {
        self.0.column()
    }
}

impl From<serde_json::Error> for JsonError {
    fn from(error: serde_json::Error) -> Self {
        Self(std::sync::Arc::new(error))
    }
}

impl std::fmt::Display for JsonError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for JsonError {}

impl PartialEq for JsonError {
    /// Two reports are equal when they are of the same kind (syntax, data, end of input):
    /// where they point depends on the body's layout, and the same payload sent compact or
    /// pretty-printed is the same event.
    fn eq(&self, other: &Self) -> bool {
        self.0.classify() == other.0.classify()
    }
}

impl Eq for JsonError {}

/// Why an event's `timestamp` could not be read. The event is still delivered: see
/// [`EventTime::Unreadable`](crate::event::EventTime::Unreadable).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Error)]
#[non_exhaustive]
pub enum TimestampError {
    /// Unix seconds (or milliseconds) before the year 0000 or after 9999.
    #[error("unix seconds outside years 0000 to 9999")]
    OutOfRange,
    /// A string that is neither RFC 3339 nor a whole number.
    #[error("neither RFC 3339 nor unix seconds")]
    NotRfc3339,
    /// A number with a fraction or an exponent.
    #[error("a number that is not whole unix seconds")]
    NotWholeSeconds,
    /// A boolean, an array or an object.
    #[error("expected an RFC 3339 string or unix seconds")]
    WrongType,
}

/// Why a known event's `data` does not fit its typed payload. The event is still delivered,
/// as [`Payload::Unrecognized`](crate::event::Payload::Unrecognized), with this as its reason.
///
/// Every message names the JSON path it is about.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum PayloadError {
    /// The event has no `data`.
    #[error("$.data: missing")]
    DataMissing,
    /// `data` is not an object.
    #[error("$.data: expected an object, found {found}")]
    DataNotObject {
        /// The JSON type found instead.
        found: &'static str,
    },
    /// A field the payload cannot do without is absent or `null`.
    #[error("$.data.{field}: missing")]
    Missing {
        /// The field's name in `data`.
        field: &'static str,
    },
    /// An id the payload cannot do without is the empty string.
    #[error("$.data.{field}: empty")]
    Empty {
        /// The field's name in `data`.
        field: &'static str,
    },
    /// A field holds another JSON type than its own.
    #[error("$.data.{field}: expected {expected}, found {found}")]
    WrongType {
        /// The field's name in `data`.
        field: &'static str,
        /// What the field should hold.
        expected: &'static str,
        /// The JSON type found instead.
        found: &'static str,
    },
    /// A message of type `text` without `text` or `body`.
    #[error("$.data.text: missing for a text message")]
    TextMissing,
    /// A message with neither a `type` nor any text.
    #[error("$.data.type: missing, and no text or body")]
    TypeMissing,
    /// `data` could not be read as its payload at all (a key sent twice, say).
    #[error("$.data: unreadable as its typed payload")]
    Unreadable {
        /// What the JSON parser reported.
        #[source]
        source: JsonError,
    },
}

/// The error enums an event's typed view carries serialize as their message, the form the
/// snapshots and logs read.
macro_rules! serialize_as_message {
    ($($error:ty),*) => {$(
        impl serde::Serialize for $error {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_str(self)
            }
        }
    )*};
}

serialize_as_message!(TimestampError, PayloadError);

/// The idempotency store could not answer.
///
/// The integrations answer these with 503 and `Retry-After`, so the platform retries the
/// delivery later instead of losing it.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum DedupError {
    /// The store could not be reached or timed out. Build one with
    /// [`DedupError::unavailable`].
    #[error("the idempotency store is unavailable")]
    Unavailable {
        /// What failed, kept whole: the store client's own error (with its sources), or a
        /// [`StoreTimeout`].
        #[source]
        source: StoreFailure,
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

impl DedupError {
    /// [`DedupError::Unavailable`], keeping `source` as its [`source`](std::error::Error::source):
    /// what your own store's client reported, or a message.
    pub fn unavailable(source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self::Unavailable {
            source: StoreFailure(std::sync::Arc::from(source.into())),
        }
    }
}

/// Why a store could not answer, as its client reported it: the crate's own type, so that no
/// store client's error type is in the public API, and cheap to clone.
#[derive(Debug, Clone)]
pub struct StoreFailure(std::sync::Arc<dyn std::error::Error + Send + Sync>);

impl StoreFailure {
    /// The error the store's client reported, as `std::io::Error::get_ref` gives it: to log it,
    /// or to look for a type you know with [`downcast_ref`](Self::downcast_ref).
    pub fn get_ref(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        &*self.0
    }

    /// The reported error as a `T`, when it is one: a [`StoreTimeout`] from this crate's
    /// stores, or your own store client's error type. The wrapper is transparent (its message
    /// and sources are the reported error's), so this is the way to reach the error itself.
    ///
    /// ```
    /// use aisoule_webhooks::DedupError;
    /// use aisoule_webhooks::error::StoreTimeout;
    ///
    /// /// Your own store client's error.
    /// #[derive(Debug, thiserror::Error)]
    /// #[error("the pool is closed")]
    /// struct PoolClosed;
    ///
    /// let DedupError::Unavailable { source, .. } = DedupError::unavailable(PoolClosed) else {
    ///     unreachable!()
    /// };
    /// assert!(source.downcast_ref::<PoolClosed>().is_some());
    /// assert!(source.downcast_ref::<StoreTimeout>().is_none());
    /// assert_eq!(source.get_ref().to_string(), "the pool is closed");
    /// ```
    pub fn downcast_ref<T: std::error::Error + 'static>(&self) -> Option<&T> {
        self.0.downcast_ref()
    }
}

impl std::fmt::Display for StoreFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for StoreFailure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        // This wrapper adds no message of its own: the chain goes on with the client's sources.
        self.0.source()
    }
}

impl PartialEq for StoreFailure {
    /// Equal when they say the same: a client's error types rarely compare, and tests compare
    /// what was reported.
    fn eq(&self, other: &Self) -> bool {
        self.0.to_string() == other.0.to_string()
    }
}

impl Eq for StoreFailure {}

/// A store did not answer within its operation timeout (see
/// `RedisStore::with_operation_timeout`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("no answer within {after:?}")]
#[non_exhaustive]
pub struct StoreTimeout {
    /// The timeout that passed.
    pub after: std::time::Duration,
}

/// A configuration that would break a guarantee, refused when it is built.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A dedup namespace is empty, which would mean the same as no namespace.
    #[error("the dedup namespace is empty; leave it unset for no namespace")]
    EmptyNamespace,
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
    /// The body limit is zero, so every delivery would be refused.
    #[error("the body limit must be at least one byte")]
    ZeroBodyLimit,
    /// A duration that must be positive is zero.
    #[error("{setting} must be longer than zero")]
    ZeroDuration {
        /// Which setting.
        setting: &'static str,
    },
    /// A count (workers, attempts) is zero, which would never run anything.
    #[error("{setting} must be at least one")]
    ZeroCount {
        /// Which setting.
        setting: &'static str,
    },
    /// The inbox's retention is shorter than the receiver's replay tolerance: a redelivery
    /// after its row was purged would be neither stale nor a duplicate, and would run twice.
    #[error(
        "the inbox retention ({retention_secs} s) is shorter than the replay tolerance ({tolerance_secs} s); \
         a redelivery after the purge would be handled twice"
    )]
    RetentionShorterThanTolerance {
        /// The retention, in seconds.
        retention_secs: u64,
        /// The replay tolerance, in seconds.
        tolerance_secs: u64,
    },
}

/// Why the durable inbox could not do what was asked.
///
/// On the request path, any of these is answered 503 with `Retry-After`: the delivery was not
/// stored, so the platform must send it again.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum InboxError {
    /// The store's engine failed or could not be reached while doing `operation`.
    #[error("the inbox store failed to {operation}")]
    Store {
        /// What the inbox was doing, as a verb phrase: `insert a delivery`, `claim jobs`, …
        operation: &'static str,
        /// The engine's own error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
    /// The worker's lease on the job ended and another claim (a worker, or a replay) took it
    /// over: this worker's outcome is not recorded.
    #[error("job {id} is no longer held by this worker: its lease ended and it was taken over")]
    LeaseLost {
        /// The job's id.
        id: i64,
    },
    /// The engine did not take the durability setting the inbox asked for, so an answered
    /// delivery could be lost: the store refuses to open rather than promise what it cannot.
    #[error(
        "the inbox store is not durable as configured: asked for {asked}, the engine has {got}"
    )]
    NotDurable {
        /// The setting asked for, e.g. `journal_mode=wal`.
        asked: String,
        /// What the engine reports instead.
        got: String,
    },
    /// The store was shut down.
    #[error("the inbox store is closed")]
    Closed,
    /// A job's stored body no longer parses as an event (written by another version, or
    /// edited by hand). The job is dead-lettered with this error.
    #[error("the stored body of job {id} is not an event")]
    Unparseable {
        /// The job's id.
        id: i64,
        /// Why it does not parse.
        #[source]
        source: ParseError,
    },
}

impl InboxError {
    /// An engine error met while doing `operation`, keeping it as the source.
    pub fn store(
        operation: &'static str,
        source: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
    ) -> Self {
        Self::Store {
            operation,
            source: source.into(),
        }
    }
}

pub use crate::receiver::Rejection;

/// Which way a stale event's timestamp is off from this server's clock
/// ([`Rejection::Stale`]): the direction points at the likely cause, which the size alone
/// does not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Skew {
    /// The event's timestamp is later than this server's clock: the sender's clock is ahead,
    /// or this server's is behind (check its NTP).
    Ahead,
    /// The event's timestamp is earlier than this server's clock: the sender's clock is
    /// behind, or the delivery was held back (a replay, or a queue that kept it).
    Behind,
}

impl Skew {
    /// How the timestamp stands to this server's clock, as the log and `Display` say it.
    pub fn relation(self) -> &'static str {
        match self {
            Self::Ahead => "ahead of",
            Self::Behind => "behind",
        }
    }

    /// The likely causes, as the log and `Display` give them.
    pub fn likely_cause(self) -> &'static str {
        match self {
            Self::Ahead => "the sender's clock is ahead, or this server's clock is behind",
            Self::Behind => "the sender's clock is behind, or the delivery was held back",
        }
    }
}
