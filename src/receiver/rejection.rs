//! Why a delivery is not handed to the handler, and the one status map every framework
//! answers with.

use thiserror::Error;

use super::accounts::ResolveError;
use crate::error::{DedupError, InboxError, ParseError, Skew, VerifyError};

/// Why the integrations did not hand a delivery to your handler, and what they answered.
///
/// [`Rejection::status`] is the one status map both frameworks use. Every signature failure
/// gets the same 401 with the same body; the variant keeps the detail for your logs.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum Rejection {
    /// The request used a method other than `POST` (405 with `Allow: POST`). The platform only
    /// ever POSTs; a `GET` is a browser, a probe or a health check pointed at the wrong path,
    /// and telling it so beats a 401 that suggests a signing problem. Checked before the body
    /// is read.
    #[error("the method {method} is not allowed; webhooks are delivered with POST")]
    MethodNotAllowed {
        /// The method as sent, cut to 32 characters.
        method: String,
    },
    /// The body's `Content-Encoding` is not one this crate decodes (415).
    #[error("the Content-Encoding {encoding:?} is not supported; send gzip, deflate or none")]
    UnsupportedEncoding {
        /// The header as sent, cut to 32 bytes.
        encoding: String,
    },
    /// The body is larger than the configured [`BodyLimit`](crate::BodyLimit) (413).
    #[error("the body exceeds the {limit}-byte limit")]
    PayloadTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// The body could not be read, or could not be decoded (400).
    #[error("the body could not be read or decoded")]
    BodyUnreadable {
        /// What the body stream or the decoder reported.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
    /// The signature did not verify (401).
    #[error("signature rejected")]
    Signature(#[from] VerifyError),
    /// The verified body is not an AISoule event (400).
    #[error("not an AISoule event")]
    Parse(#[from] ParseError),
    /// The event's timestamp is outside the replay tolerance: a replay, or a badly wrong clock
    /// (400). The message names the direction and its likely cause, for instance "the event's
    /// timestamp is 7200 s behind this server's clock, beyond the 3600 s replay tolerance: the
    /// sender's clock is behind, or the delivery was held back"; the answer does not.
    #[error(
        "the event's timestamp is {skew_secs} s {} this server's clock, beyond the \
         {tolerance_secs} s replay tolerance: {}",
        .direction.relation(),
        .direction.likely_cause()
    )]
    Stale {
        /// How far the event's timestamp is from this server's clock, in whole seconds.
        skew_secs: u64,
        /// Whether the timestamp is ahead of this server's clock or behind it.
        direction: Skew,
        /// The tolerance, in seconds.
        tolerance_secs: u64,
    },
    /// The event's timestamp is in a form this crate cannot read, and the receiver is set to
    /// refuse such events ([`ReceiverBuilder::refuse_unreadable_timestamps`](crate::receiver::ReceiverBuilder::refuse_unreadable_timestamps)) (400).
    #[error("the event's timestamp is unreadable, so its freshness cannot be checked")]
    UnreadableTimestamp {
        /// Why it could not be read, naming its form.
        #[source]
        reason: crate::error::TimestampError,
    },
    /// Another delivery of this event is being handled right now (409, so the platform retries
    /// later).
    #[error("another delivery of this event is being handled")]
    InFlight,
    /// The idempotency store could not answer (503 with `Retry-After`, so the platform retries).
    #[error("the idempotency store failed")]
    Store(#[from] DedupError),
    /// Inbox mode: the delivery could not be stored (503 with `Retry-After`, so the platform
    /// sends it again).
    #[error("the delivery could not be stored in the inbox")]
    Inbox(#[source] InboxError),
    /// A receiver for many accounts: the account named in the path is not one the
    /// [`SecretResolver`](crate::receiver::SecretResolver) knows (404). Checked before the
    /// signature, since there is no secret to check it with; the answer says no more than
    /// "unknown account", whatever the name.
    #[error("the account named in the path is unknown")]
    UnknownAccount,
    /// A receiver for many accounts: the [`SecretResolver`](crate::receiver::SecretResolver)
    /// failed (503 with `Retry-After`, so the platform sends the delivery again).
    #[error("the account's secrets could not be resolved")]
    Resolver(#[source] ResolveError),
    /// A receiver for many accounts on a route without its account path parameter: a wiring
    /// mistake, answered with 500 so it is noticed.
    #[error(
        "the route has no path parameter named {parameter:?}; route the receiver for many \
         accounts on a path such as /webhooks/aisoule/{{{parameter}}}"
    )]
    MissingAccount {
        /// The parameter's name, as configured on the receiver.
        parameter: String,
    },
}

impl From<InboxError> for Rejection {
    fn from(error: InboxError) -> Self {
        Self::Inbox(error)
    }
}

impl Rejection {
    /// The HTTP status the platform receives.
    pub fn status(&self) -> http::StatusCode {
        use http::StatusCode;
        match self {
            Self::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedEncoding { .. } => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::BodyUnreadable { .. }
            | Self::Parse(_)
            | Self::Stale { .. }
            | Self::UnreadableTimestamp { .. } => StatusCode::BAD_REQUEST,
            Self::Signature(_) => StatusCode::UNAUTHORIZED,
            Self::InFlight => StatusCode::CONFLICT,
            Self::Store(_) | Self::Inbox(_) | Self::Resolver(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::UnknownAccount => StatusCode::NOT_FOUND,
            Self::MissingAccount { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The `Retry-After` value in seconds, for the answers that invite a retry.
    pub fn retry_after_secs(&self) -> Option<u64> {
        // The platform's own first retry comes after 10 s; asking for the same keeps both in step.
        matches!(self, Self::Store(_) | Self::Inbox(_) | Self::Resolver(_)).then_some(10)
    }

    /// The `Allow` header's value, for the answer to a wrong method: HTTP requires a 405 to
    /// say which methods the route takes.
    pub fn allow(&self) -> Option<&'static str> {
        matches!(self, Self::MethodNotAllowed { .. }).then_some("POST")
    }

    /// Whether the answer closes an HTTP/1.1 connection (`Connection: close`): true for the
    /// rejections made before the body was read to its end (a wrong method, an unsupported
    /// encoding, a body over the limit or one that broke off).
    ///
    /// The unread rest of the body is still on the wire, so the server cannot read the next
    /// request after it and closes the connection. Without the header, a client that pools
    /// connections (the platform's, reqwest's) may send its next delivery on that connection
    /// and see it reset; with it, the client opens a fresh one. HTTP/2 streams end on their
    /// own, and the HTTP/2 integrations drop the header.
    pub fn closes_connection(&self) -> bool {
        matches!(
            self,
            Self::MethodNotAllowed { .. }
                | Self::UnsupportedEncoding { .. }
                | Self::PayloadTooLarge { .. }
                | Self::BodyUnreadable { .. }
        )
    }

    /// The JSON body sent with the status. It never carries signature details, so every
    /// signature failure looks identical from outside.
    pub fn public_body(&self) -> &'static str {
        match self {
            Self::MethodNotAllowed { .. } => r#"{"error":"method not allowed"}"#,
            Self::PayloadTooLarge { .. } => r#"{"error":"payload too large"}"#,
            Self::UnsupportedEncoding { .. } => r#"{"error":"unsupported content encoding"}"#,
            Self::BodyUnreadable { .. } => r#"{"error":"unreadable body"}"#,
            Self::Signature(_) => r#"{"error":"invalid signature"}"#,
            Self::Parse(_) => r#"{"error":"not an AISoule event"}"#,
            Self::Stale { .. } => r#"{"error":"stale event"}"#,
            Self::UnreadableTimestamp { .. } => r#"{"error":"unreadable timestamp"}"#,
            Self::InFlight => r#"{"error":"delivery in progress; retry later"}"#,
            Self::Store(_) | Self::Inbox(_) | Self::Resolver(_) => {
                r#"{"error":"temporarily unavailable; retry later"}"#
            }
            Self::UnknownAccount => r#"{"error":"unknown account"}"#,
            Self::MissingAccount { .. } => r#"{"error":"webhook receiver misconfigured"}"#,
        }
    }

    /// A short, stable name for logs and metrics: `method_not_allowed`, `too_large`,
    /// `unsupported_encoding`, `unreadable`, `signature`, `parse`, `stale`,
    /// `unreadable_timestamp`, `in_flight`, `store`, `inbox`, `unknown_account`, `resolver`,
    /// `misconfigured`.
    pub fn outcome(&self) -> &'static str {
        match self {
            Self::MethodNotAllowed { .. } => "method_not_allowed",
            Self::PayloadTooLarge { .. } => "too_large",
            Self::UnsupportedEncoding { .. } => "unsupported_encoding",
            Self::BodyUnreadable { .. } => "unreadable",
            Self::Signature(_) => "signature",
            Self::Parse(_) => "parse",
            Self::Stale { .. } => "stale",
            Self::UnreadableTimestamp { .. } => "unreadable_timestamp",
            Self::InFlight => "in_flight",
            Self::Store(_) => "store",
            Self::Inbox(_) => "inbox",
            Self::UnknownAccount => "unknown_account",
            Self::Resolver(_) => "resolver",
            Self::MissingAccount { .. } => "misconfigured",
        }
    }
}

/// What an integration answers when it does not hand the request to your handler's answer:
/// a [`Rejection`], a duplicate, a handler that panicked, or a route without a receiver.
///
/// Framework-neutral: each integration turns it into its own response type in one place, so
/// every framework sends the same status, body and headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    status: http::StatusCode,
    body: &'static str,
    retry_after_secs: Option<u64>,
    allow: Option<&'static str>,
    closes_connection: bool,
    outcome: &'static str,
}

impl Answer {
    /// `200 {"status":"duplicate"}`: already handled, so the platform stops retrying.
    pub const DUPLICATE: Self = Self {
        status: http::StatusCode::OK,
        body: r#"{"status":"duplicate"}"#,
        retry_after_secs: None,
        allow: None,
        closes_connection: false,
        outcome: "duplicate",
    };

    /// `200 {"status":"accepted"}`: inbox mode stored the delivery durably; the inbox's
    /// workers run the handler.
    pub const ACCEPTED: Self = Self {
        status: http::StatusCode::OK,
        body: r#"{"status":"accepted"}"#,
        retry_after_secs: None,
        allow: None,
        closes_connection: false,
        outcome: "stored",
    };

    /// `200 {"status":"quarantined"}`: inbox mode stored the delivery durably but holds it
    /// back (stale or unreadable timestamp) until released by hand. 200, because sending it
    /// again would change nothing.
    pub const QUARANTINED: Self = Self {
        status: http::StatusCode::OK,
        body: r#"{"status":"quarantined"}"#,
        retry_after_secs: None,
        allow: None,
        closes_connection: false,
        outcome: "quarantined",
    };

    /// `200 {"status":"handled"}`: a [`Dispatcher`](crate::dispatch::Dispatcher)'s handler
    /// answered `Ok`, or no handler is registered for the event (acknowledged, so that the
    /// platform does not retry an event nobody handles).
    pub const HANDLED: Self = Self {
        status: http::StatusCode::OK,
        body: r#"{"status":"handled"}"#,
        retry_after_secs: None,
        allow: None,
        closes_connection: false,
        outcome: "handled",
    };

    /// `500 {"error":"handler failed"}`: a [`Dispatcher`](crate::dispatch::Dispatcher)'s
    /// handler returned an error. The body never carries the error, which is logged; the
    /// claim is released, so the platform's retry runs the handler again.
    pub const HANDLER_FAILED: Self = Self {
        status: http::StatusCode::INTERNAL_SERVER_ERROR,
        body: r#"{"error":"handler failed"}"#,
        retry_after_secs: None,
        allow: None,
        closes_connection: false,
        outcome: "released",
    };

    /// `500`: the handler panicked. Its claim was released, so the platform's retry runs it
    /// again. The same answer as [`HANDLER_FAILED`](Self::HANDLER_FAILED): a sender learns
    /// nothing of how the handler failed.
    pub const HANDLER_PANICKED: Self = Self::HANDLER_FAILED;

    /// The status.
    pub fn status(&self) -> http::StatusCode {
        self.status
    }

    /// The JSON body.
    pub fn body(&self) -> &'static str {
        self.body
    }

    /// The `Retry-After` header's value in seconds, if any.
    pub fn retry_after_secs(&self) -> Option<u64> {
        self.retry_after_secs
    }

    /// The `Allow` header's value, if any: `POST` on the answer to a wrong method.
    pub fn allow(&self) -> Option<&'static str> {
        self.allow
    }

    /// The delivery's outcome, sent in the [`OUTCOME_HEADER`](super::OUTCOME_HEADER):
    /// `duplicate`, `stored`, `quarantined`, `released` (the handler panicked),
    /// `misconfigured`, or a rejection's [`outcome`](Rejection::outcome).
    pub fn outcome(&self) -> &'static str {
        self.outcome
    }

    /// Whether to send `Connection: close`: see [`Rejection::closes_connection`].
    pub fn closes_connection(&self) -> bool {
        self.closes_connection
    }
}

impl From<&Rejection> for Answer {
    fn from(rejection: &Rejection) -> Self {
        Self {
            status: rejection.status(),
            body: rejection.public_body(),
            retry_after_secs: rejection.retry_after_secs(),
            allow: rejection.allow(),
            closes_connection: rejection.closes_connection(),
            outcome: rejection.outcome(),
        }
    }
}

/// A handler asked for the event on a route that has no receiver: no `WebhookLayer` or
/// `WebhookMiddleware` around it, and no `Receiver` in the app state.
///
/// A wiring mistake, answered with 500 so it is noticed; the handler does not run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error(
    "no receiver on this route: wrap it in the WebhookLayer (axum) or WebhookMiddleware (actix-web), \
     or put a Receiver in the app state"
)]
pub struct MissingReceiver;

impl MissingReceiver {
    /// 500.
    pub fn status(&self) -> http::StatusCode {
        http::StatusCode::INTERNAL_SERVER_ERROR
    }
}

impl From<MissingReceiver> for Answer {
    fn from(missing: MissingReceiver) -> Self {
        tracing::error!("{missing}");
        Self {
            status: missing.status(),
            body: r#"{"error":"webhook receiver misconfigured"}"#,
            retry_after_secs: None,
            allow: None,
            closes_connection: false,
            outcome: "misconfigured",
        }
    }
}
