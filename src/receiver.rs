//! The receive pipeline that both framework integrations run, in one place.
//!
//! For each delivery, in this order: verify the signature over the raw bytes, parse, check
//! freshness, claim. The integrations add what is framework-specific (reading the body up to
//! the limit, calling your handler, and committing or releasing the claim by its answer).
//!
//! You only touch this module to configure it:
//!
//! ```
//! use std::time::Duration;
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
use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tracing::field::Empty;

use crate::clock::{Clock, SystemClock};
use crate::dedup::{Claim, ClaimGuard, Deduplicator};
use crate::error::{ConfigError, DedupError, Rejection};
use crate::event::Event;
use crate::verify::{BodyLimit, Verifier};

/// A verified, parsed event, as the integrations hand it to your handler.
///
/// Dereferences to [`Event`]; cheap to clone.
#[derive(Debug, Clone)]
pub struct VerifiedEvent {
    event: Arc<Event>,
    secret_label: Arc<str>,
}

impl VerifiedEvent {
    /// The event.
    pub fn event(&self) -> &Event {
        &self.event
    }

    /// The label of the secret whose signature matched.
    pub fn secret_label(&self) -> &str {
        &self.secret_label
    }
}

impl Deref for VerifiedEvent {
    type Target = Event;

    fn deref(&self) -> &Event {
        &self.event
    }
}

/// A delivery that passed every check and holds its claim, ready for your handler.
#[derive(Debug)]
pub struct Admitted {
    event: VerifiedEvent,
    claim: ClaimGuard,
}

impl Admitted {
    /// The event.
    pub fn event(&self) -> &VerifiedEvent {
        &self.event
    }

    /// The event and its claim, for handlers that settle the claim themselves.
    pub fn into_parts(self) -> (VerifiedEvent, ClaimGuard) {
        (self.event, self.claim)
    }

    /// Commits the claim when the handler succeeded, releases it otherwise, and logs a store
    /// failure instead of returning it: the handler's answer stands either way.
    pub async fn finish(self, handled: bool) {
        settle(self.claim, handled).await;
    }
}

/// Commits or releases a claim by the handler's outcome.
pub(crate) async fn settle(claim: ClaimGuard, handled: bool) {
    let key = claim.key().clone();
    let settled = if handled {
        claim.commit().await
    } else {
        claim.release().await
    };
    match settled {
        Ok(()) => {}
        Err(error @ DedupError::LeaseLost { .. }) => {
            tracing::warn!(%error, %key, "the event may have been handled twice");
        }
        Err(error) => {
            tracing::warn!(%error, %key, handled, "could not settle the claim; its lease will expire");
        }
    }
}

/// Everything a receiving endpoint needs: the verifier, the deduplicator, the replay window and
/// the body limit.
///
/// Build it once and share it: it is cheap to clone.
#[derive(Clone)]
pub struct Receiver {
    inner: Arc<Inner>,
}

struct Inner {
    verifier: Verifier,
    deduplicator: Deduplicator,
    replay_tolerance: Duration,
    clock: Arc<dyn Clock>,
    body_limit: BodyLimit,
}

impl fmt::Debug for Receiver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Receiver")
            .field("verifier", &self.inner.verifier)
            .field("deduplicator", &self.inner.deduplicator)
            .field("replay_tolerance", &self.inner.replay_tolerance)
            .field("clock", &self.inner.clock)
            .field("body_limit", &self.inner.body_limit)
            .finish()
    }
}

/// Configures a [`Receiver`].
#[derive(Debug)]
#[must_use]
pub struct ReceiverBuilder {
    verifier: Verifier,
    deduplicator: Option<Deduplicator>,
    replay_tolerance: Duration,
    clock: Arc<dyn Clock>,
    body_limit: BodyLimit,
}

impl ReceiverBuilder {
    /// Where claims live, and how events are keyed. Defaults to
    /// [`Deduplicator::in_memory`].
    pub fn deduplicator(mut self, deduplicator: Deduplicator) -> Self {
        self.deduplicator = Some(deduplicator);
        self
    }

    /// How far an event's timestamp may be from now, either way, before it is rejected as a
    /// replay. Defaults to 1 hour: it must exceed the platform's retry horizon (about 6 min
    /// after the first attempt) plus clock skew, and stay within the dedup TTL so that every
    /// replay is either stale or a duplicate. Events without a timestamp are not checked.
    pub fn replay_tolerance(mut self, tolerance: Duration) -> Self {
        self.replay_tolerance = tolerance;
        self
    }

    /// The clock the replay window reads. Defaults to [`SystemClock`].
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The largest body read. Defaults to [`BodyLimit::DEFAULT`] (1 MiB).
    pub fn body_limit(mut self, limit: BodyLimit) -> Self {
        self.body_limit = limit;
        self
    }

    /// Checks the configuration and builds the receiver.
    ///
    /// # Errors
    ///
    /// * [`ConfigError::TtlShorterThanTolerance`] when the dedup TTL is shorter than the replay
    ///   tolerance: a replay arriving between the two would be neither stale nor a duplicate,
    ///   and would be handled twice.
    /// * [`ConfigError::ZeroDuration`] for a zero tolerance.
    pub fn build(self) -> Result<Receiver, ConfigError> {
        let deduplicator = self.deduplicator.unwrap_or_default();
        if self.replay_tolerance.is_zero() {
            return Err(ConfigError::ZeroDuration {
                setting: "the replay tolerance",
            });
        }
        if deduplicator.ttl() < self.replay_tolerance {
            return Err(ConfigError::TtlShorterThanTolerance {
                ttl_secs: deduplicator.ttl().as_secs(),
                tolerance_secs: self.replay_tolerance.as_secs(),
            });
        }
        Ok(Receiver {
            inner: Arc::new(Inner {
                verifier: self.verifier,
                deduplicator,
                replay_tolerance: self.replay_tolerance,
                clock: self.clock,
                body_limit: self.body_limit,
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
        ReceiverBuilder {
            verifier,
            deduplicator: None,
            replay_tolerance: Self::DEFAULT_REPLAY_TOLERANCE,
            clock: Arc::new(SystemClock),
            body_limit: BodyLimit::DEFAULT,
        }
    }

    /// The verifier.
    pub fn verifier(&self) -> &Verifier {
        &self.inner.verifier
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

    /// Rejects a declared `Content-Length` over the limit before any byte is read.
    ///
    /// # Errors
    ///
    /// [`Rejection::PayloadTooLarge`].
    pub fn check_declared_length(&self, content_length: Option<u64>) -> Result<(), Rejection> {
        let limit = self.inner.body_limit.get();
        match content_length {
            Some(declared) if declared > limit as u64 => Err(Rejection::PayloadTooLarge { limit }),
            _ => Ok(()),
        }
    }

    /// Runs the checks on a complete body: verify, parse, freshness, claim.
    ///
    /// `signatures` are the raw values of every signature header the request carried.
    /// Records the event kind, `message_id`, matched secret label and outcome on the current
    /// `tracing` span when it has those fields (see the integrations' `aisoule_webhook` span);
    /// never the secret or the signature.
    ///
    /// # Errors
    ///
    /// A [`Rejection`] for every outcome other than "call the handler", including
    /// [`Rejection::Duplicate`], which is answered with 200.
    ///
    /// # Security
    ///
    /// Pass the body exactly as received. The content type is never consulted: a body sent as
    /// `text/plain` is verified like any other.
    pub async fn admit<'a>(
        &self,
        signatures: impl IntoIterator<Item = &'a [u8]>,
        body: Bytes,
    ) -> Result<Admitted, Rejection> {
        let admitted = self.admit_inner(signatures, body).await;
        let span = tracing::Span::current();
        match &admitted {
            Ok(_) => {
                span.record("outcome", "admitted");
                tracing::debug!("delivery admitted");
            }
            Err(rejection) => {
                span.record("outcome", rejection.outcome());
                match rejection {
                    Rejection::Duplicate | Rejection::InFlight => {
                        tracing::info!(%rejection, "delivery not handed to the handler");
                    }
                    _ => {
                        tracing::warn!(%rejection, status = %rejection.status(), "delivery rejected")
                    }
                }
            }
        }
        admitted
    }

    async fn admit_inner<'a>(
        &self,
        signatures: impl IntoIterator<Item = &'a [u8]>,
        body: Bytes,
    ) -> Result<Admitted, Rejection> {
        let limit = self.inner.body_limit.get();
        if body.len() > limit {
            return Err(Rejection::PayloadTooLarge { limit });
        }
        let verified = self.inner.verifier.verify_values(signatures, &body)?;
        let span = tracing::Span::current();
        span.record("secret_label", verified.secret_label());
        let event = Event::parse_bytes(body)?;
        span.record("kind", event.kind().as_str());
        if let Some(message_id) = event.message_id() {
            span.record("message_id", message_id);
        }
        self.check_freshness(&event)?;
        let claim = match self.inner.deduplicator.claim(&event).await? {
            Claim::Fresh(claim) => claim,
            Claim::Duplicate => return Err(Rejection::Duplicate),
            Claim::InFlight => return Err(Rejection::InFlight),
        };
        Ok(Admitted {
            event: VerifiedEvent {
                event: Arc::new(event),
                secret_label: verified.shared_label(),
            },
            claim,
        })
    }

    fn check_freshness(&self, event: &Event) -> Result<(), Rejection> {
        let Some(at) = event.timestamp() else {
            return Ok(());
        };
        let now = self.inner.clock.now();
        let at = at.to_system_time();
        let skew = now
            .duration_since(at)
            .unwrap_or_else(|ahead| ahead.duration());
        if skew > self.inner.replay_tolerance {
            return Err(Rejection::Stale {
                skew_secs: skew.as_secs(),
                tolerance_secs: self.inner.replay_tolerance.as_secs(),
            });
        }
        Ok(())
    }
}

/// The span both integrations open per delivery; [`Receiver::admit`] fills its fields.
#[cfg_attr(not(any(feature = "axum", feature = "actix-web")), allow(dead_code))]
pub(crate) fn delivery_span() -> tracing::Span {
    tracing::info_span!(
        "aisoule_webhook",
        kind = Empty,
        message_id = Empty,
        secret_label = Empty,
        outcome = Empty
    )
}
