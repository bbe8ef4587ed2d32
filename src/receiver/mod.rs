//! The one delivery lifecycle that every framework integration runs.
//!
//! For each delivery, in this order: read the body up to the limit and decode its
//! `Content-Encoding`, verify the signature over those bytes, parse, check freshness, claim;
//! then run the handler to completion, in the request and in a task of its own once the sender
//! hangs up (so that cannot cancel it), renewing the claim while it runs, and settle the claim
//! by the handler's answer.
//! The integrations only translate their framework's request and response types.
//!
//! You only touch this module to configure it:
//!
//! ```
//! use std::time::{Duration, SystemTime};
//! use aisoule_webhooks::{BodyLimit, Deduplicator, Receiver, Verifier, WebhookSecret};
//!
//! let verifier = Verifier::new(WebhookSecret::new("whsec_…")?);
//! let receiver = Receiver::builder(verifier)
//!     .deduplicator(Deduplicator::in_memory().with_namespace("crm-sync")?)
//!     .replay_tolerance(Duration::from_secs(30 * 60))
//!     .body_limit(BodyLimit::bytes(256 * 1024))
//!     .build()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;
use std::net::IpAddr;
use std::ops::Deref;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use tracing::field::Empty;

use crate::clock::{Clock, Reading};
use crate::dedup::{Claim, Deduplicator};
use crate::error::ConfigError;
use crate::event::{Event, EventTime};
use crate::inbox::{Inbox, Inserted, JobId, NewDelivery};
use crate::verify::{SIGNATURE_HEADER_NAMES, Verifier};

mod accounts;
mod body;
mod client;
mod lifecycle;
mod rejection;
pub(crate) mod telemetry;

use accounts::{Accounts, AccountsConfig};
pub use accounts::{ResolveError, SecretResolver};
pub use body::BodyLimit;
pub(crate) use body::{BoxError, ContentEncoding};
pub use client::ForwardedHeader;
use client::TrustedProxies;
/// The address ranges [`ReceiverBuilder::trusted_proxies`] takes, re-exported so that you need
/// not depend on `ipnet` yourself.
pub use ipnet::IpNet;
#[cfg(feature = "actix-web")]
pub(crate) use lifecycle::LocalRun;
#[cfg(feature = "axum")]
pub(crate) use lifecycle::SendRun;
pub use lifecycle::{Admitted, Settlement};
#[cfg(any(feature = "axum", feature = "actix-web"))]
pub(crate) use lifecycle::{HandlerPanicked, RunToCompletion, mark_admitted};
pub use rejection::{Answer, MissingReceiver, Rejection};

/// A verified, parsed event, as the integrations hand it to your handler.
///
/// Dereferences to [`Event`]; cheap to clone.
#[derive(Debug, Clone)]
pub struct VerifiedEvent {
    event: Arc<Event>,
    secret_label: Arc<str>,
    account: Option<Arc<str>>,
}

impl VerifiedEvent {
    pub(crate) fn new(
        event: Arc<Event>,
        secret_label: Arc<str>,
        account: Option<Arc<str>>,
    ) -> Self {
        Self {
            event,
            secret_label,
            account,
        }
    }

    /// The event.
    pub fn event(&self) -> &Event {
        &self.event
    }

    /// The label of the secret whose signature matched.
    pub fn secret_label(&self) -> &str {
        &self.secret_label
    }

    /// The account the delivery was received for, on a receiver for many accounts
    /// ([`Receiver::for_accounts`]): the route's path parameter, whose secrets verified it.
    /// `None` on a receiver for one account.
    pub fn account(&self) -> Option<&str> {
        self.account.as_deref()
    }
}

impl Deref for VerifiedEvent {
    type Target = Event;

    fn deref(&self) -> &Event {
        &self.event
    }
}

/// What [`Receiver::admit`] decided about a delivery that passed every check.
#[derive(Debug)]
#[non_exhaustive]
pub enum Admission {
    /// First delivery, or a retry after a failure: run the handler.
    Fresh(Admitted),
    /// Already handled within the TTL (or, in inbox mode, already stored): answer
    /// [`Answer::DUPLICATE`] (200) without handling it.
    Duplicate,
    /// Inbox mode: durably stored, to be run by the inbox's workers; answer
    /// [`Answer::ACCEPTED`] (200).
    Stored(JobId),
    /// Inbox mode: durably stored but held back, because its timestamp is stale or
    /// unreadable; it runs only once released by hand ([`Inbox::replay`]). Answer
    /// [`Answer::QUARANTINED`] (200), so the platform stops sending it.
    Quarantined(JobId),
}

/// The response header that names every delivery's outcome, so that access logs, proxies and
/// middleware outside the integration can tell a handled delivery from a duplicate (both 200):
/// `handled` (the handler answered 2xx; the claim is committed), `released` (any other answer,
/// an error or a panic; the platform's retry runs the handler again), `duplicate`, `stored`,
/// `quarantined` (inbox mode), or a rejection's [`Rejection::outcome`] (`signature`, `stale`…).
pub const OUTCOME_HEADER: &str = "aisoule-outcome";

/// At most one signature diagnosis per interval ([`Receiver`] logs it at warn).
const DIAGNOSIS_INTERVAL: Duration = Duration::from_secs(1);

/// Every signature header's name and value, as received: verified, and kept for the inbox,
/// which stores them. Inline: a request carries one, rarely two, and a heap list would cost an
/// allocation on every delivery.
type Signatures<'a> = smallvec::SmallVec<[(&'static str, &'a [u8]); 2]>;

/// The request headers the lifecycle reads, whatever HTTP types the framework uses.
#[cfg_attr(not(any(feature = "axum", feature = "actix-web")), allow(dead_code))]
pub(crate) trait RequestHeaders {
    /// Every value of `header`, in order.
    fn all(&self, header: ReadHeader) -> impl Iterator<Item = &[u8]>;

    /// The single value of `header`, if any.
    fn one(&self, header: ReadHeader) -> Option<&[u8]> {
        self.all(header).next()
    }
}

/// Every request header the lifecycle reads. Named by this enum rather than by text, so that
/// each framework looks them up by a header name it built at compile time
/// ([`static_header_names`]): a lookup by text parses the name first, on every delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(not(any(feature = "axum", feature = "actix-web")), allow(dead_code))]
pub(crate) enum ReadHeader {
    WebhookSignature,
    AisouleSignature,
    ContentLength,
    ContentEncoding,
    XForwardedFor,
    Forwarded,
}

#[cfg_attr(not(any(feature = "axum", feature = "actix-web")), allow(dead_code))]
impl ReadHeader {
    /// The signature headers, in the order they are read.
    pub(crate) const SIGNATURES: [Self; 2] = [Self::WebhookSignature, Self::AisouleSignature];

    /// The header's name, lowercase.
    pub(crate) const fn name(self) -> &'static str {
        match self {
            Self::WebhookSignature => SIGNATURE_HEADER_NAMES[0],
            Self::AisouleSignature => SIGNATURE_HEADER_NAMES[1],
            Self::ContentLength => "content-length",
            Self::ContentEncoding => "content-encoding",
            Self::XForwardedFor => "x-forwarded-for",
            Self::Forwarded => "forwarded",
        }
    }
}

/// Defines `header_name`, which gives each [`ReadHeader`] as the framework's `HeaderName`,
/// built at compile time. A macro because axum's and actix-web's `HeaderName` come from two
/// versions of `http`.
#[cfg(any(feature = "axum", feature = "actix-web"))]
macro_rules! static_header_names {
    ($header_name:ty) => {
        /// `header` as a name that needs no parsing at lookup.
        fn header_name(header: $crate::receiver::ReadHeader) -> &'static $header_name {
            static_header_names!(@match $header_name, header,
                WebhookSignature AisouleSignature ContentLength ContentEncoding XForwardedFor
                Forwarded)
        }
    };
    (@match $header_name:ty, $header:ident, $($variant:ident)*) => {
        match $header {
            $($crate::receiver::ReadHeader::$variant => {
                static NAME: $header_name =
                    <$header_name>::from_static($crate::receiver::ReadHeader::$variant.name());
                &NAME
            })*
        }
    };
}
#[cfg(any(feature = "axum", feature = "actix-web"))]
pub(crate) use static_header_names;

/// Everything a receiving endpoint needs: the verifier, the deduplicator, the replay window and
/// the body limit.
///
/// Build it once and share it: it is cheap to clone.
#[derive(Clone)]
pub struct Receiver {
    inner: Arc<Inner>,
}

struct Inner {
    secrets: Secrets,
    deduplicator: Deduplicator,
    replay_tolerance: Duration,
    clock: Arc<dyn Clock>,
    body_limit: BodyLimit,
    slow_handler_warning: Duration,
    refuse_unreadable_timestamps: bool,
    inbox: Option<Inbox>,
    trusted_proxies: Option<TrustedProxies>,
    /// When the next signature failure may be diagnosed, in milliseconds since the epoch.
    next_diagnosis_ms: AtomicU64,
}

/// Where a receiver's secrets come from.
enum Secrets {
    /// One account: one verifier, with a prebuilt metric key per secret label, so that
    /// counting a match allocates nothing.
    One {
        verifier: Verifier,
        match_keys: telemetry::SecretMatchKeys,
    },
    /// Many accounts: each account's verifier from the resolver, cached.
    Accounts(Accounts),
}

/// Where a builder's secrets come from.
#[derive(Debug)]
enum BuilderSecrets {
    One(Verifier),
    Accounts(AccountsConfig),
}

impl fmt::Debug for Receiver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut debug = f.debug_struct("Receiver");
        match &self.inner.secrets {
            Secrets::One { verifier, .. } => debug.field("verifier", verifier),
            Secrets::Accounts(accounts) => debug.field("accounts", accounts),
        };
        debug
            .field("deduplicator", &self.inner.deduplicator)
            .field("replay_tolerance", &self.inner.replay_tolerance)
            .field("clock", &self.inner.clock)
            .field("body_limit", &self.inner.body_limit)
            .field("slow_handler_warning", &self.inner.slow_handler_warning)
            .field(
                "refuse_unreadable_timestamps",
                &self.inner.refuse_unreadable_timestamps,
            )
            .field("inbox", &self.inner.inbox)
            .field("trusted_proxies", &self.inner.trusted_proxies)
            .finish()
    }
}

/// Configures a [`Receiver`].
#[derive(Debug)]
#[must_use]
pub struct ReceiverBuilder {
    secrets: BuilderSecrets,
    deduplicator: Option<Deduplicator>,
    replay_tolerance: Duration,
    clock: Arc<dyn Clock>,
    body_limit: BodyLimit,
    slow_handler_warning: Option<Duration>,
    refuse_unreadable_timestamps: bool,
    inbox: Option<Inbox>,
    trusted_proxies: Option<TrustedProxies>,
}

impl ReceiverBuilder {
    /// A receiver for many accounts ([`Receiver::for_accounts`]): the name of the route's
    /// path parameter that carries the account, which the axum layer and the actix-web
    /// middleware read. Defaults to `account`, as in `/webhooks/aisoule/{account}`. Ignored by
    /// a receiver for one account.
    pub fn account_parameter(mut self, name: impl Into<String>) -> Self {
        if let BuilderSecrets::Accounts(config) = &mut self.secrets {
            config.parameter = Arc::from(name.into());
        }
        self
    }

    /// A receiver for many accounts: how long an account's answer from the
    /// [`SecretResolver`] is reused, including "no such account". A rotated secret, a new
    /// account or a removed one takes effect once it passes, without a restart. Defaults to
    /// 1 minute. Ignored by a receiver for one account.
    pub fn account_cache_ttl(mut self, ttl: Duration) -> Self {
        if let BuilderSecrets::Accounts(config) = &mut self.secrets {
            config.ttl = ttl;
        }
        self
    }

    /// Inbox mode: store each verified delivery in `inbox` and answer 200 once it is durably
    /// written, instead of running the handler inside the request. The inbox's
    /// [workers](Inbox::start) run the handler. Defaults to inline mode (no inbox).
    ///
    /// In inbox mode the row's unique key deduplicates (the deduplicator's store is not used,
    /// its keying is), and an event with a stale or unreadable timestamp is stored
    /// quarantined instead of refused, so a backlog is never lost.
    pub fn inbox(mut self, inbox: Inbox) -> Self {
        self.inbox = Some(inbox);
        self
    }

    /// Where claims live, and how events are keyed. Defaults to
    /// [`Deduplicator::in_memory`].
    pub fn deduplicator(mut self, deduplicator: Deduplicator) -> Self {
        self.deduplicator = Some(deduplicator);
        self
    }

    /// How far an event's timestamp may be from now, either way, before it is rejected as a
    /// replay. Defaults to 1 hour: it must exceed the platform's retry horizon (about 6 min
    /// after the first attempt) plus clock skew, and stay within the dedup TTL so that every
    /// replay is either stale or a duplicate. Events without a timestamp are not checked; for
    /// unreadable ones see [`refuse_unreadable_timestamps`](Self::refuse_unreadable_timestamps).
    pub fn replay_tolerance(mut self, tolerance: Duration) -> Self {
        self.replay_tolerance = tolerance;
        self
    }

    /// The clock the replay window reads, and the default in-memory deduplicator's leases and
    /// TTLs. Defaults to [`SystemClock`](crate::clock::SystemClock).
    ///
    /// For tests, [`TokioClock`](crate::clock::TokioClock) makes tokio's paused time drive
    /// both, together with lease renewal and every timer: one clock for the whole receiver. A [`deduplicator`](Self::deduplicator) you pass keeps its store's own clock
    /// ([`MemoryStore::with_clock`](crate::MemoryStore::with_clock)).
    ///
    /// The receiver reads it once per delivery, on arrival, and that reading serves the
    /// replay window, the inbox's `received_at` and the claim of a memory store keeping the
    /// same clock: the default one, or one given this clock and passed through
    /// [`Deduplicator::new`](crate::Deduplicator::new).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The largest body read, before and after decoding. Defaults to [`BodyLimit::DEFAULT`]
    /// (1 MiB).
    pub fn body_limit(mut self, limit: BodyLimit) -> Self {
        self.body_limit = limit;
        self
    }

    /// How long a handler may run before it is logged at warn (it is never cancelled).
    /// Defaults to the deduplicator's lease (60 s unless set).
    pub fn slow_handler_warning(mut self, after: Duration) -> Self {
        self.slow_handler_warning = Some(after);
        self
    }

    /// Refuses, with 400, an event whose `timestamp` is present but unreadable (see
    /// [`EventTime`] for the forms that are read), instead of accepting it without the replay
    /// check. Defaults to accepting it: an unreadable timestamp is logged at warn either way,
    /// and refusing it loses the event once the platform gives up.
    pub fn refuse_unreadable_timestamps(mut self) -> Self {
        self.refuse_unreadable_timestamps = true;
        self
    }

    /// Names each delivery's client by the address that `proxies` forward in `header`,
    /// instead of by the socket peer, for requests whose peer is in one of `proxies` (ranges
    /// such as `10.0.0.0/8` or `fd00::/8`, or one address as `127.0.0.1/32`; IPv4-mapped IPv6
    /// addresses and ranges are compared as IPv4). The client is the rightmost address in the
    /// header that is not in `proxies`. Defaults to none: every delivery's client is its
    /// socket peer, and no forwarded header is read.
    ///
    /// The client is recorded as `client` on each delivery's span, so every log line about a
    /// delivery names it; the lifecycle decides nothing by it.
    ///
    /// # Security
    ///
    /// Anyone can send `X-Forwarded-For` or `Forwarded`. Name only proxies that overwrite or
    /// append to `header` on every request (see the README's "Deploying"), and the header
    /// they set: addresses left of the last untrusted hop are never believed. A range trusts
    /// every address in it: name no range that clients can send from.
    pub fn trusted_proxies(
        mut self,
        header: ForwardedHeader,
        proxies: impl IntoIterator<Item = IpNet>,
    ) -> Self {
        self.trusted_proxies = Some(TrustedProxies::new(header, proxies));
        self
    }

    /// Checks the configuration and builds the receiver.
    ///
    /// # Errors
    ///
    /// * [`ConfigError::TtlShorterThanTolerance`] when the dedup TTL is shorter than the replay
    ///   tolerance: a replay arriving between the two would be neither stale nor a duplicate,
    ///   and would be handled twice.
    /// * [`ConfigError::ZeroDuration`] for a zero tolerance, slow-handler warning or account
    ///   cache TTL.
    /// * [`ConfigError::ZeroBodyLimit`] for a zero body limit.
    /// * [`ConfigError::RetentionShorterThanTolerance`] when the inbox keeps handled rows for
    ///   less time than the replay tolerance: a redelivery after the purge would run again.
    pub fn build(self) -> Result<Receiver, ConfigError> {
        let deduplicator = self.deduplicator.unwrap_or_else(|| {
            Deduplicator::new(crate::dedup::MemoryStore::new().with_clock(self.clock.clone()))
        });
        if self.replay_tolerance.is_zero() {
            return Err(ConfigError::ZeroDuration {
                setting: "the replay tolerance",
            });
        }
        if self.slow_handler_warning.is_some_and(|d| d.is_zero()) {
            return Err(ConfigError::ZeroDuration {
                setting: "the slow-handler warning",
            });
        }
        if self.body_limit.get() == 0 {
            return Err(ConfigError::ZeroBodyLimit);
        }
        if let BuilderSecrets::Accounts(config) = &self.secrets
            && config.ttl.is_zero()
        {
            return Err(ConfigError::ZeroDuration {
                setting: "the account cache TTL",
            });
        }
        if deduplicator.ttl() < self.replay_tolerance {
            return Err(ConfigError::TtlShorterThanTolerance {
                ttl_secs: deduplicator.ttl().as_secs(),
                tolerance_secs: self.replay_tolerance.as_secs(),
            });
        }
        if let Some(inbox) = &self.inbox
            && inbox.retention() < self.replay_tolerance
        {
            return Err(ConfigError::RetentionShorterThanTolerance {
                retention_secs: inbox.retention().as_secs(),
                tolerance_secs: self.replay_tolerance.as_secs(),
            });
        }
        Ok(Receiver {
            inner: Arc::new(Inner {
                inbox: self.inbox,
                replay_tolerance: self.replay_tolerance,
                clock: self.clock,
                body_limit: self.body_limit,
                slow_handler_warning: self
                    .slow_handler_warning
                    .unwrap_or_else(|| deduplicator.lease()),
                refuse_unreadable_timestamps: self.refuse_unreadable_timestamps,
                trusted_proxies: self.trusted_proxies,
                deduplicator,
                next_diagnosis_ms: AtomicU64::new(0),
                secrets: match self.secrets {
                    BuilderSecrets::One(verifier) => Secrets::One {
                        match_keys: telemetry::SecretMatchKeys::new(verifier.secret_labels()),
                        verifier,
                    },
                    BuilderSecrets::Accounts(config) => Secrets::Accounts(config.build()),
                },
            }),
        })
    }
}

impl Receiver {
    /// 1 hour.
    pub const DEFAULT_REPLAY_TOLERANCE: Duration = Duration::from_secs(60 * 60);

    /// A receiver with every default: in-memory dedup, a 1 h replay tolerance, a 1 MiB limit.
    pub fn new(verifier: Verifier) -> Self {
        Self::builder(verifier)
            .build()
            .expect("the defaults are consistent: a 24 h TTL covers a 1 h tolerance")
    }

    /// Starts configuring a receiver.
    pub fn builder(verifier: Verifier) -> ReceiverBuilder {
        Self::builder_with(BuilderSecrets::One(verifier))
    }

    /// Starts configuring a receiver for many AISoule accounts, each delivered on its own
    /// path (`/webhooks/aisoule/{account}`) and signed with its own secrets, which `resolver`
    /// looks up and the receiver caches per account (see
    /// [`account_cache_ttl`](ReceiverBuilder::account_cache_ttl)).
    ///
    /// An unknown account is answered 404, a failed lookup 503 with `Retry-After`. The
    /// account reaches the event ([`VerifiedEvent::account`]), the delivery span (`account`)
    /// and the metrics (an `account` label, for accounts the resolver knows), and deduplication keys are kept apart per
    /// account ([`Deduplicator::key_for_account`]). The README's "Many accounts" shows a
    /// whole receiver.
    ///
    /// # Security
    ///
    /// A 404 tells a sender that an account name is unknown, and nothing more: the answer is
    /// the same for every unknown name, and one account's delivery under another's path gets
    /// the same 401 as any bad signature. Account names that a sender may guess are not
    /// secrets; the signature is what authenticates a delivery.
    pub fn for_accounts(resolver: impl SecretResolver) -> ReceiverBuilder {
        Self::builder_with(BuilderSecrets::Accounts(AccountsConfig::new(resolver)))
    }

    fn builder_with(secrets: BuilderSecrets) -> ReceiverBuilder {
        ReceiverBuilder {
            secrets,
            deduplicator: None,
            replay_tolerance: Self::DEFAULT_REPLAY_TOLERANCE,
            clock: crate::clock::system(),
            body_limit: BodyLimit::DEFAULT,
            slow_handler_warning: None,
            refuse_unreadable_timestamps: false,
            inbox: None,
            trusted_proxies: None,
        }
    }

    /// The verifier of a receiver for one account; `None` for one for many accounts, whose
    /// verifiers come from its [`SecretResolver`].
    pub fn verifier(&self) -> Option<&Verifier> {
        match &self.inner.secrets {
            Secrets::One { verifier, .. } => Some(verifier),
            Secrets::Accounts(_) => None,
        }
    }

    /// The name of the path parameter the integrations read the account from, on a receiver
    /// for many accounts.
    #[cfg_attr(not(any(feature = "axum", feature = "actix-web")), allow(dead_code))]
    pub(crate) fn account_parameter(&self) -> Option<&str> {
        match &self.inner.secrets {
            Secrets::One { .. } => None,
            Secrets::Accounts(accounts) => Some(accounts.parameter()),
        }
    }

    /// The deduplicator.
    pub fn deduplicator(&self) -> &Deduplicator {
        &self.inner.deduplicator
    }

    /// The replay tolerance.
    pub fn replay_tolerance(&self) -> Duration {
        self.inner.replay_tolerance
    }

    /// The body limit.
    pub fn body_limit(&self) -> BodyLimit {
        self.inner.body_limit
    }

    /// The inbox, in inbox mode.
    pub fn inbox(&self) -> Option<&Inbox> {
        self.inner.inbox.as_ref()
    }

    /// Runs the checks on a complete body: verify, parse, freshness, claim.
    ///
    /// `signatures` are the raw values of every signature header the request carried. This
    /// is the framework-free entry point; the integrations also read and decode the body.
    /// Records the event kind, `message_id`, matched secret label and outcome on the current
    /// `tracing` span when it has those fields (see the integrations' `aisoule_webhook` span);
    /// never the secret or the signature.
    ///
    /// # Errors
    ///
    /// A [`Rejection`] for every delivery that must not reach the handler and is not a
    /// duplicate; [`Rejection::status`] is its answer. A receiver for many accounts needs the
    /// account: use [`admit_account`](Self::admit_account) (here,
    /// [`Rejection::MissingAccount`]).
    ///
    /// # Security
    ///
    /// Pass the body exactly as received (decoded, if it had a `Content-Encoding`). The content
    /// type is never consulted: a body sent as `text/plain` is verified like any other.
    pub async fn admit<'a>(
        &self,
        signatures: impl IntoIterator<Item = &'a [u8]>,
        body: Bytes,
    ) -> Result<Admission, Rejection> {
        self.admit_account(None, signatures, body).await
    }

    /// [`admit`](Self::admit) for a delivery received for `account`: on a receiver for many
    /// accounts ([`Receiver::for_accounts`]), verified with that account's secrets. On a
    /// receiver for one account, the account only names the delivery and keeps its
    /// deduplication key apart.
    ///
    /// # Errors
    ///
    /// As for [`admit`](Self::admit), and on a receiver for many accounts
    /// [`Rejection::UnknownAccount`] (404), [`Rejection::Resolver`] (503), or
    /// [`Rejection::MissingAccount`] (500) when `account` is `None`.
    ///
    /// # Security
    ///
    /// As for [`admit`](Self::admit).
    pub async fn admit_account<'a>(
        &self,
        account: Option<&str>,
        signatures: impl IntoIterator<Item = &'a [u8]>,
        body: Bytes,
    ) -> Result<Admission, Rejection> {
        let signatures = signatures
            .into_iter()
            .map(|value| ("signature", value))
            .collect();
        let admission = self.admit_inner(account, signatures, body).await;
        report(&admission, account);
        admission
    }

    /// The integrations' first half of the lifecycle: record the client (from the socket
    /// `peer` and, behind trusted proxies, the forwarded header), refuse any method but
    /// `POST`, read and decode the body, then admit it as [`admit`](Self::admit) does.
    /// Anything but a fresh delivery comes back as the answer to send.
    #[cfg_attr(not(any(feature = "axum", feature = "actix-web")), allow(dead_code))]
    pub(crate) async fn admit_request<B>(
        &self,
        method: &str,
        headers: &impl RequestHeaders,
        peer: Option<IpAddr>,
        body: B,
    ) -> Result<Admitted, Answer>
    where
        B: http_body::Body,
        B::Error: Into<BoxError>,
    {
        self.admit_account_request(None, method, headers, peer, body)
            .await
    }

    /// [`admit_request`](Self::admit_request) for a delivery received for `account` (the
    /// route's path parameter, on a receiver for many accounts).
    #[cfg_attr(not(any(feature = "axum", feature = "actix-web")), allow(dead_code))]
    pub(crate) async fn admit_account_request<B>(
        &self,
        account: Option<&str>,
        method: &str,
        headers: &impl RequestHeaders,
        peer: Option<IpAddr>,
        body: B,
    ) -> Result<Admitted, Answer>
    where
        B: http_body::Body,
        B::Error: Into<BoxError>,
    {
        if let Some(client) =
            client::client_address(self.inner.trusted_proxies.as_ref(), peer, headers)
        {
            tracing::Span::current().record("client", tracing::field::display(client));
        }
        let read = if method == "POST" {
            self.read_request_body(headers, body).await
        } else {
            // Before the body is read: a wrong method is answered whatever it sends.
            Err(Rejection::MethodNotAllowed {
                method: method.chars().take(32).collect(),
            })
        };
        let admission = match read {
            Ok(body) => {
                let mut signatures = Signatures::new();
                for header in ReadHeader::SIGNATURES {
                    signatures.extend(headers.all(header).map(|value| (header.name(), value)));
                }
                self.admit_inner(account, signatures, body).await
            }
            Err(rejection) => Err(rejection),
        };
        report(&admission, account);
        match admission {
            Ok(Admission::Fresh(admitted)) => Ok(admitted),
            Ok(Admission::Duplicate) => Err(Answer::DUPLICATE),
            Ok(Admission::Stored(_)) => Err(Answer::ACCEPTED),
            Ok(Admission::Quarantined(_)) => Err(Answer::QUARANTINED),
            Err(rejection) => Err(Answer::from(&rejection)),
        }
    }

    #[cfg_attr(not(any(feature = "axum", feature = "actix-web")), allow(dead_code))]
    async fn read_request_body<B>(
        &self,
        headers: &impl RequestHeaders,
        body: B,
    ) -> Result<Bytes, Rejection>
    where
        B: http_body::Body,
        B::Error: Into<BoxError>,
    {
        let declared = headers
            .one(ReadHeader::ContentLength)
            .and_then(|v| std::str::from_utf8(v).ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        let encoding = ContentEncoding::from_header(headers.one(ReadHeader::ContentEncoding))?;
        body::read_body(self.inner.body_limit, declared, encoding, body).await
    }

    async fn admit_inner(
        &self,
        // The route's account, on a receiver for many accounts.
        account: Option<&str>,
        // Every signature header's name and value: verified, and kept for the inbox, which
        // stores them as received.
        signatures: Signatures<'_>,
        body: Bytes,
    ) -> Result<Admission, Rejection> {
        let limit = self.inner.body_limit.get();
        if body.len() > limit {
            return Err(Rejection::PayloadTooLarge { limit });
        }
        let span = tracing::Span::current();
        if let Some(account) = account {
            span.record("account", account);
        }
        let resolved;
        let (verifier, match_keys) = match (&self.inner.secrets, account) {
            (
                Secrets::One {
                    verifier,
                    match_keys,
                },
                _,
            ) => (verifier, Some(match_keys)),
            (Secrets::Accounts(accounts), Some(account)) => {
                // Boxed: the cache's future is large, and a receiver for one account should
                // not carry its size in every delivery's future.
                resolved = Box::pin(accounts.verifier(account)).await?;
                (&resolved, None)
            }
            (Secrets::Accounts(accounts), None) => {
                return Err(Rejection::MissingAccount {
                    parameter: accounts.parameter().to_owned(),
                });
            }
        };
        let verified =
            match verifier.verify_values(signatures.iter().map(|&(_, value)| value), &body) {
                Ok(verified) => verified,
                Err(error) => {
                    self.diagnose(verifier, &signatures, &body);
                    return Err(error.into());
                }
            };
        match (match_keys, account) {
            (Some(keys), None) => keys.matched(verified.secret_label()),
            // A dynamic label allocates; an account's label set is not known in advance.
            _ => telemetry::account_secret_matched(verified.secret_label(), account),
        }
        let event = Event::parse_bytes(body)?;
        record_verified(
            &span,
            verified.secret_label(),
            event.kind().as_str(),
            event.message_id(),
        );
        // The delivery's one reading of the receiver's clock: the replay window, the memory
        // store's claim when it keeps this clock, and the inbox's `received_at`.
        let arrived = Reading::now(&self.inner.clock);
        if let Some(inbox) = &self.inner.inbox {
            // Boxed: the write's future is large, and inline mode's requests should not carry
            // its size (a future over 1 KiB costs glibc's allocator a consolidation per call).
            return Box::pin(self.store(
                inbox,
                account,
                event,
                signatures,
                verified.shared_label(),
                arrived,
            ))
            .await;
        }
        self.check_freshness(&event, arrived.at())?;
        let key = self.inner.deduplicator.key_for_account(&event, account);
        let claim = match self
            .inner
            .deduplicator
            .claim_key_at(key, Some(arrived))
            .await?
        {
            Claim::Fresh(claim) => claim,
            Claim::Duplicate => return Ok(Admission::Duplicate),
            Claim::InFlight => return Err(Rejection::InFlight),
        };
        let event = VerifiedEvent {
            event: Arc::new(event),
            secret_label: verified.shared_label(),
            account: account.map(Arc::from),
        };
        Ok(Admission::Fresh(Admitted::new(
            event,
            claim,
            self.inner.slow_handler_warning,
        )))
    }

    /// Inbox mode's end of the request path: write the delivery, quarantined when its time is
    /// stale or unreadable, and answer by what the write did.
    async fn store(
        &self,
        inbox: &Inbox,
        account: Option<&str>,
        event: Event,
        signatures: Signatures<'_>,
        secret_label: Arc<str>,
        arrived: Reading<'_>,
    ) -> Result<Admission, Rejection> {
        let quarantine = match self.check_freshness(&event, arrived.at()) {
            Ok(()) => match event.time() {
                // Inline mode accepts these unchecked; the inbox can hold them for a person.
                EventTime::Unreadable { reason, .. } => Some(format!(
                    "the timestamp is unreadable ({reason}), so its freshness cannot be checked"
                )),
                _ => None,
            },
            Err(rejection @ Rejection::Stale { .. }) => Some(rejection.to_string()),
            Err(Rejection::UnreadableTimestamp { reason }) => Some(format!(
                "the timestamp is unreadable ({reason}), so its freshness cannot be checked"
            )),
            Err(other) => return Err(other),
        };
        let quarantined = quarantine.is_some();
        let delivery = NewDelivery {
            key: self
                .inner
                .deduplicator
                .key_for_account(&event, account)
                .as_str()
                .to_owned(),
            headers: signatures
                .into_iter()
                .map(|(name, value)| (name.to_owned(), String::from_utf8_lossy(value).into_owned()))
                .collect(),
            secret_label: secret_label.as_ref().to_owned(),
            received_at: inbox.now_from(arrived),
            conversation: event
                .customer()
                .map(|number| number.e164().unwrap_or(number.as_sent()).to_owned()),
            quarantine,
            account: account.map(str::to_owned),
            body: event.raw().clone(),
        };
        match inbox.insert(delivery).await? {
            Inserted::New(id) if quarantined => Ok(Admission::Quarantined(id)),
            Inserted::New(id) => Ok(Admission::Stored(id)),
            Inserted::Duplicate => Ok(Admission::Duplicate),
        }
    }

    /// Whether this receiver can take deliveries now: its idempotency store answers (a Redis
    /// `PING`, within the store's operation timeout), and so does its inbox's store in inbox
    /// mode. Serve it on a readiness route (`/ready`), so that a load balancer sends no
    /// deliveries to a replica that would answer them all with 503.
    ///
    /// # Errors
    ///
    /// [`Rejection::Store`] or [`Rejection::Inbox`], with the store's own error as the source:
    /// [`Answer::from`] turns it into the 503 with `Retry-After` that a delivery would get.
    pub async fn check_ready(&self) -> Result<(), Rejection> {
        self.inner.deduplicator.store().ping().await?;
        if let Some(inbox) = &self.inner.inbox {
            inbox.store().ping().await?;
        }
        Ok(())
    }

    /// Logs the most likely cause of a signature failure, for the operator, at most once per
    /// [`DIAGNOSIS_INTERVAL`]: each diagnosis costs a few HMACs, and a flood of forgeries must
    /// not make every one of them that expensive. The answer stays the same 401.
    fn diagnose(&self, verifier: &Verifier, signatures: &Signatures<'_>, body: &[u8]) {
        let now_ms = self
            .inner
            .clock
            .now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| {
                u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
            });
        let next = self.inner.next_diagnosis_ms.load(Ordering::Relaxed);
        // One caller per interval wins the exchange; the others skip the work.
        let due = now_ms >= next
            && self
                .inner
                .next_diagnosis_ms
                .compare_exchange(
                    next,
                    now_ms.saturating_add(crate::dedup::millis(DIAGNOSIS_INTERVAL)),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok();
        if !due {
            return;
        }
        let values = signatures.iter().map(|&(_, value)| value);
        if let Some(diagnosis) = verifier.diagnose(values, body) {
            tracing::warn!(
                %diagnosis,
                "a delivery's signature did not verify; the diagnosis names the likely cause"
            );
        }
    }

    fn check_freshness(&self, event: &Event, now: SystemTime) -> Result<(), Rejection> {
        let at = match event.time() {
            EventTime::At { at } => *at,
            EventTime::Unreadable { reason, .. } if self.inner.refuse_unreadable_timestamps => {
                return Err(Rejection::UnreadableTimestamp { reason: *reason });
            }
            // Logged at warn by the parser, naming the form.
            _ => return Ok(()),
        };
        let at = at.to_system_time();
        let (skew, direction) = match now.duration_since(at) {
            Ok(behind) => (behind, crate::error::Skew::Behind),
            Err(ahead) => (ahead.duration(), crate::error::Skew::Ahead),
        };
        if skew > self.inner.replay_tolerance {
            return Err(Rejection::Stale {
                skew_secs: skew.as_secs(),
                direction,
                tolerance_secs: self.inner.replay_tolerance.as_secs(),
            });
        }
        Ok(())
    }
}

/// Records an admission's outcome on the delivery span and logs it: the one place every
/// delivery's outcome is reported, whichever way it was admitted.
fn report(admission: &Result<Admission, Rejection>, account: Option<&str>) {
    let span = tracing::Span::current();
    // A fresh delivery's outcome is counted once its handler has answered.
    match admission {
        Ok(Admission::Fresh(_)) => {}
        Ok(Admission::Duplicate) => telemetry::delivery_for("duplicate", account),
        Ok(Admission::Stored(_)) => telemetry::delivery_for("stored", account),
        Ok(Admission::Quarantined(_)) => telemetry::delivery_for("quarantined", account),
        Err(rejection) => {
            // Only an account the resolver knows becomes a label: the path is the sender's
            // to choose, and each made-up name would be a new time series in the exporter.
            let known = match rejection {
                Rejection::MethodNotAllowed { .. }
                | Rejection::UnsupportedEncoding { .. }
                | Rejection::PayloadTooLarge { .. }
                | Rejection::BodyUnreadable { .. }
                | Rejection::UnknownAccount
                | Rejection::Resolver(_)
                | Rejection::MissingAccount { .. } => None,
                _ => account,
            };
            telemetry::delivery_for(rejection.outcome(), known);
            match rejection {
                Rejection::Store(_) => telemetry::store_error("dedup"),
                Rejection::Inbox(_) => telemetry::store_error("inbox"),
                Rejection::Resolver(_) => telemetry::store_error("resolver"),
                _ => {}
            }
        }
    }
    match admission {
        Ok(Admission::Fresh(_)) => {
            span.record("outcome", "admitted");
            tracing::debug!("delivery admitted");
        }
        Ok(Admission::Duplicate) => {
            span.record("outcome", "duplicate");
            tracing::info!("duplicate delivery of an event already handled; answered 200");
        }
        Ok(Admission::Stored(id)) => {
            span.record("outcome", "stored");
            tracing::debug!(job = id.0, "delivery stored in the inbox; answered 200");
        }
        Ok(Admission::Quarantined(id)) => {
            span.record("outcome", "quarantined");
            tracing::warn!(
                job = id.0,
                "delivery stored quarantined (stale or unreadable timestamp); it runs only when \
                 released with Inbox::replay"
            );
        }
        // Not a delivery refused but a request that is not one (or, for in-flight, one that
        // the platform will retry): info, so that probes do not fill the warnings.
        Err(rejection @ (Rejection::InFlight | Rejection::MethodNotAllowed { .. })) => {
            span.record("outcome", rejection.outcome());
            let rejection = crate::error::chain(rejection);
            tracing::info!(%rejection, "delivery not handed to the handler");
        }
        Err(rejection) => {
            span.record("outcome", rejection.outcome());
            let status = rejection.status();
            let rejection = crate::error::chain(rejection);
            tracing::warn!(%rejection, %status, "delivery rejected");
        }
    }
}

/// Records what verification and parsing found on the delivery span, in one call: a
/// subscriber such as `tracing_subscriber::fmt` does its work per `record`, so three calls cost
/// three times as much. Nothing at all when no subscriber wants the span.
fn record_verified(span: &tracing::Span, secret_label: &str, kind: &str, message_id: Option<&str>) {
    let Some(metadata) = span.metadata() else {
        return;
    };
    let fields = metadata.fields();
    let (Some(label_field), Some(kind_field), Some(id_field)) = (
        fields.field("secret_label"),
        fields.field("kind"),
        fields.field("message_id"),
    ) else {
        return;
    };
    span.record_all(&fields.value_set(&[
        (&label_field, Some(&secret_label as &dyn tracing::Value)),
        (&kind_field, Some(&kind as &dyn tracing::Value)),
        (
            &id_field,
            message_id.as_ref().map(|id| id as &dyn tracing::Value),
        ),
    ]));
}

/// The span every integration opens per delivery; [`Receiver::admit`] fills its fields.
#[cfg_attr(not(any(feature = "axum", feature = "actix-web")), allow(dead_code))]
pub(crate) fn delivery_span() -> tracing::Span {
    tracing::info_span!(
        "aisoule_webhook",
        client = Empty,
        account = Empty,
        kind = Empty,
        message_id = Empty,
        secret_label = Empty,
        outcome = Empty
    )
}
