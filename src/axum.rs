//! axum integration: a tower layer and two extractors. Requires the `axum` feature.
//!
//! The layer runs the whole pipeline for every request to the routes it wraps, and hands your
//! handler a verified, parsed, claimed event:
//!
//! ```no_run
//! use axum::{Router, routing::post};
//! use aisoule_webhooks::axum::WebhookLayer;
//! use aisoule_webhooks::{Receiver, VerifiedEvent, Verifier, WebhookSecret};
//!
//! async fn handle(event: VerifiedEvent) -> &'static str {
//!     println!("{} {:?}", event.kind(), event.message_id());
//!     "ok" // a 2xx commits the claim; anything else releases it for the platform's retry
//! }
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let secret = WebhookSecret::new(std::env::var("AISOULE_WEBHOOK_SECRET")?)?;
//! let receiver = Receiver::new(Verifier::new(secret));
//! let app = Router::new()
//!     .route("/webhook", post(handle))
//!     .layer(WebhookLayer::new(receiver));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! axum::serve(listener, app).await?;
//! # Ok(()) }
//! ```
//!
//! | outcome | status |
//! |---|---|
//! | handled (your handler's answer) | your handler's status |
//! | duplicate of a handled event | 200, handler not called |
//! | not JSON / not an event, stale timestamp, unreadable body | 400 |
//! | any signature failure | 401, one identical body |
//! | another delivery of it in flight | 409 |
//! | body over the limit | 413 |
//! | idempotency store down | 503 with `Retry-After` |
//!
//! The layer verifies the bytes as they arrive. It does not decode `Content-Encoding`; if you
//! add a request-decompression layer, put it outside this one, and the decoded bytes are what
//! is verified.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::extract::{FromRef, FromRequest, FromRequestParts, Request};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER};
use http::request::Parts;
use http::{HeaderMap, HeaderValue, StatusCode};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use tower_layer::Layer;
use tower_service::Service;
use tracing::Instrument;

use crate::dedup::ClaimGuard;
use crate::error::Rejection;
use crate::receiver::{Receiver, VerifiedEvent, delivery_span, settle};
use crate::verify::{AISOULE_SIGNATURE, WEBHOOK_SIGNATURE};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl IntoResponse for Rejection {
    fn into_response(self) -> Response {
        let mut response = (self.status(), self.public_body()).into_response();
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let Some(seconds) = self.retry_after_secs() {
            headers.insert(RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

/// Reads a body up to the receiver's limit: a declared `Content-Length` over the limit is
/// refused before any byte is read, and a stream is cut off as soon as it passes the limit.
async fn read_limited<B>(
    receiver: &Receiver,
    headers: &HeaderMap,
    body: B,
) -> Result<Bytes, Rejection>
where
    B: http_body::Body,
    B::Error: Into<BoxError>,
{
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    receiver.check_declared_length(declared)?;
    let limit = receiver.body_limit().get();
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.downcast_ref::<LengthLimitError>().is_some() => {
            Err(Rejection::PayloadTooLarge { limit })
        }
        Err(error) => Err(Rejection::BodyUnreadable {
            reason: error.to_string(),
        }),
    }
}

fn signature_values(headers: &HeaderMap) -> impl Iterator<Item = &[u8]> {
    headers
        .get_all(WEBHOOK_SIGNATURE)
        .into_iter()
        .chain(headers.get_all(AISOULE_SIGNATURE))
        .map(HeaderValue::as_bytes)
}

/// A tower [`Layer`] that verifies, parses, checks and claims each delivery before the
/// service it wraps sees it.
///
/// Works with any tower service (axum routers and method routers, hyper, tonic). The inner
/// service receives the request with a [`VerifiedEvent`] in its extensions and the original
/// body bytes re-injected, so handlers can still take `Bytes` or `Json<T>`. A 2xx answer
/// commits the claim; any other answer, a panic or a cancelled request releases it, so the
/// platform's retry is processed.
#[derive(Debug, Clone)]
pub struct WebhookLayer {
    receiver: Receiver,
}

impl WebhookLayer {
    /// A layer running `receiver`'s checks.
    pub fn new(receiver: Receiver) -> Self {
        Self { receiver }
    }
}

impl<S> Layer<S> for WebhookLayer {
    type Service = WebhookService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        WebhookService {
            inner,
            receiver: self.receiver.clone(),
        }
    }
}

/// The service [`WebhookLayer`] produces.
#[derive(Debug, Clone)]
pub struct WebhookService<S> {
    inner: S,
    receiver: Receiver,
}

impl<S, B, ResBody> Service<http::Request<B>> for WebhookService<S>
where
    S: Service<http::Request<Body>, Response = http::Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
    ResBody: http_body::Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        // The clone is the one not yet driven to readiness; keep the ready one for this call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let receiver = self.receiver.clone();
        let pipeline = async move {
            let (mut parts, body) = request.into_parts();
            let bytes = match read_limited(&receiver, &parts.headers, body).await {
                Ok(bytes) => bytes,
                Err(rejection) => return Ok(rejection.into_response()),
            };
            let admitted = match receiver
                .admit(signature_values(&parts.headers), bytes.clone())
                .await
            {
                Ok(admitted) => admitted,
                Err(rejection) => return Ok(rejection.into_response()),
            };
            let (event, claim) = admitted.into_parts();
            parts.extensions.insert(event);
            // If the handler panics or this future is dropped, `claim` is dropped unsettled,
            // which releases it.
            let answer = inner
                .call(http::Request::from_parts(parts, Body::from(bytes)))
                .await;
            let handled = matches!(&answer, Ok(response) if response.status().is_success());
            settle(claim, handled).await;
            answer.map(|response| response.map(Body::new))
        };
        Box::pin(pipeline.instrument(delivery_span()))
    }
}

/// Returned when a handler asks for a [`VerifiedEvent`] on a route without [`WebhookLayer`].
///
/// A wiring mistake, answered with 500 so it is noticed; the handler does not run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("no WebhookLayer on this route: add `.layer(WebhookLayer::new(receiver))`")]
pub struct MissingWebhookLayer;

impl MissingWebhookLayer {
    /// 500.
    pub fn status(&self) -> StatusCode {
        StatusCode::INTERNAL_SERVER_ERROR
    }
}

impl IntoResponse for MissingWebhookLayer {
    fn into_response(self) -> Response {
        tracing::error!("{self}");
        (
            self.status(),
            r#"{"error":"webhook receiver misconfigured"}"#,
        )
            .into_response()
    }
}

impl<S: Send + Sync> FromRequestParts<S> for VerifiedEvent {
    type Rejection = MissingWebhookLayer;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<VerifiedEvent>()
            .cloned()
            .ok_or(MissingWebhookLayer)
    }
}

/// An extractor that verifies, parses, checks and claims by itself, for routes without
/// [`WebhookLayer`]. The [`Receiver`] comes from the router state (`FromRef`).
///
/// Call [`commit`](WebhookDelivery::commit) once the event is handled; dropping it instead
/// (an error return, a panic) releases the claim so the platform's retry is processed.
///
/// ```no_run
/// use axum::{Router, http::StatusCode, routing::post};
/// use aisoule_webhooks::axum::WebhookDelivery;
/// use aisoule_webhooks::{Receiver, Verifier, WebhookSecret};
///
/// async fn handle(delivery: WebhookDelivery) -> StatusCode {
///     println!("{}", delivery.event.kind());
///     delivery.commit().await;
///     StatusCode::OK
/// }
///
/// # fn app() -> Result<Router, Box<dyn std::error::Error>> {
/// let receiver = Receiver::new(Verifier::new(WebhookSecret::new("whsec_…")?));
/// let app = Router::new().route("/webhook", post(handle)).with_state(receiver);
/// # Ok(app) }
/// ```
#[derive(Debug)]
pub struct WebhookDelivery {
    /// The verified event.
    pub event: VerifiedEvent,
    claim: ClaimGuard,
}

impl WebhookDelivery {
    /// Marks the event handled, so redeliveries are answered as duplicates. A store failure
    /// is logged, not returned: the event has been handled either way.
    pub async fn commit(self) {
        settle(self.claim, true).await;
    }

    /// The event and its claim, to settle the claim yourself.
    pub fn into_parts(self) -> (VerifiedEvent, ClaimGuard) {
        (self.event, self.claim)
    }
}

impl<S> FromRequest<S> for WebhookDelivery
where
    Receiver: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = Rejection;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let receiver = Receiver::from_ref(state);
        async move {
            let (parts, body) = request.into_parts();
            let bytes = read_limited(&receiver, &parts.headers, body).await?;
            let (event, claim) = receiver
                .admit(signature_values(&parts.headers), bytes)
                .await?
                .into_parts();
            Ok(Self { event, claim })
        }
        .instrument(delivery_span())
        .await
    }
}
