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
//!     "ok" // 200 commits the claim; anything but a 2xx releases it for the platform's retry
//! }
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let secret = WebhookSecret::new(std::env::var("AISOULE_WEBHOOK_SECRET")?)?;
//! let receiver = Receiver::new(Verifier::new(secret));
//! let app = Router::new()
//!     // On the webhook route only: `/health` and unknown paths stay outside it.
//!     .route("/webhook", post(handle).layer(WebhookLayer::new(receiver)))
//!     .route("/health", axum::routing::get(|| async { "ok" }));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! axum::serve(listener, app).await?;
//! # Ok(()) }
//! ```
//!
//! | outcome | status |
//! |---|---|
//! | handled (your handler's answer) | your handler's status |
//! | duplicate of a handled event | 200, handler not called |
//! | any method but `POST` (before the body is read) | 405 with `Allow: POST` |
//! | not JSON / not an event, stale timestamp, unreadable body | 400 |
//! | any signature failure | 401, one identical body |
//! | another delivery of it in flight | 409 |
//! | body over the limit, before or after decoding | 413 |
//! | a `Content-Encoding` other than gzip or deflate | 415 |
//! | the handler panicked | 500 |
//! | idempotency store down | 503 with `Retry-After` |
//! | many accounts: an account the resolver does not know | 404 |
//! | many accounts: the resolver failed | 503 with `Retry-After` |
//!
//! Your handler runs in the request, and moves to a task of its own if the platform hangs up at
//! its 5 s deadline: the handler still runs to completion and settles the claim, so the retry is answered as a
//! duplicate (or 409 while it still runs) instead of starting it again. Answer **200**: the
//! platform counts nothing else as success.
//!
//! A gzip- or deflate-encoded body is decoded and the decoded bytes are verified, as on
//! actix-web; the inner service gets them without `Content-Encoding`.
//!
//! For a receiver for many accounts ([`Receiver::for_accounts`]), put the layer on a route
//! with the account's path parameter (`/webhooks/aisoule/{account}`, on the method router or
//! with `route_layer`, so that it runs after routing): it reads the account from there.
//!
//! Serve the app with `into_make_service_with_connect_info::<SocketAddr>()` so that each
//! delivery's span and log lines name its client (`client`); behind proxies, see
//! [`ReceiverBuilder::trusted_proxies`](crate::receiver::ReceiverBuilder::trusted_proxies).

use std::fmt;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::extract::rejection::RawPathParamsRejection;
use axum::extract::{
    ConnectInfo, FromRef, FromRequest, FromRequestParts, OptionalFromRequestParts, RawPathParams,
    Request,
};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::header::{
    ALLOW, CONNECTION, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER,
};
use http::request::Parts;
use http::{HeaderMap, HeaderName, HeaderValue};
use tower_layer::Layer;
use tower_service::Service;
use tracing::Instrument;

use crate::dispatch::{self, Dispatcher};
use crate::error::Rejection;
use crate::inbox::{HandlerError, Job, JobHandler};
use crate::receiver::{
    Answer, BoxError, HandlerPanicked, MissingReceiver, ReadHeader, Receiver, RequestHeaders,
    RunToCompletion, SendRun, Settlement, VerifiedEvent, delivery_span, mark_admitted,
    static_header_names,
};

/// [`OUTCOME_HEADER`](crate::OUTCOME_HEADER), as axum's type.
const OUTCOME: HeaderName = HeaderName::from_static(crate::OUTCOME_HEADER);

impl IntoResponse for Answer {
    fn into_response(self) -> Response {
        let mut response = (self.status(), self.body()).into_response();
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let Some(seconds) = self.retry_after_secs() {
            headers.insert(RETRY_AFTER, HeaderValue::from(seconds));
        }
        if let Some(methods) = self.allow() {
            headers.insert(ALLOW, HeaderValue::from_static(methods));
        }
        headers.insert(OUTCOME, HeaderValue::from_static(self.outcome()));
        if self.closes_connection() {
            // hyper drops it from HTTP/2 answers, where it has no meaning.
            headers.insert(CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }
}

impl IntoResponse for Rejection {
    fn into_response(self) -> Response {
        Answer::from(&self).into_response()
    }
}

impl IntoResponse for MissingReceiver {
    fn into_response(self) -> Response {
        Answer::from(self).into_response()
    }
}

impl RequestHeaders for HeaderMap {
    fn all(&self, header: ReadHeader) -> impl Iterator<Item = &[u8]> {
        self.get_all(header_name(header))
            .into_iter()
            .map(HeaderValue::as_bytes)
    }
}

static_header_names!(HeaderName);

/// The socket peer, which axum gives handlers when the app is served with
/// `into_make_service_with_connect_info::<SocketAddr>()`.
fn peer(parts: &Parts) -> Option<IpAddr> {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(address)| address.ip())
}

/// The account named by the route's path parameter `name`, for a receiver for many accounts:
/// `Some("")` (an unknown account) when it is not UTF-8, `None` when the route has no such
/// parameter (the layer is outside the routing, or the route names none).
async fn path_account(parts: &mut Parts, name: &str) -> Option<String> {
    match RawPathParams::from_request_parts(parts, &()).await {
        Ok(params) => params
            .iter()
            .find(|(key, _)| *key == name)
            .map(|(_, value)| value.to_owned()),
        Err(RawPathParamsRejection::InvalidUtf8InPathParam(_)) => Some(String::new()),
        Err(_) => None,
    }
}

/// A tower [`Layer`] that runs the delivery lifecycle around the service it wraps: read,
/// decode, verify, parse, check and claim; then call the service and settle the claim by its
/// answer.
///
/// Works with any tower service (axum routers and method routers, hyper, tonic). The inner
/// service receives the request with a [`VerifiedEvent`] in its extensions and the verified
/// body bytes re-injected, so handlers can still take `Bytes` or `Json<T>`. A 2xx answer
/// commits the claim; any other answer or a panic releases it, so the platform's retry is
/// processed. The lifecycle runs inside the request, and moves to a task of its own if the
/// request is dropped (the client hung up), so an admitted handler completes whatever the
/// connection does.
///
/// The runtime needs tokio's time driver, which renews the claim while a handler runs:
/// `#[tokio::main]`, `#[tokio::test]` and `Builder::enable_all` have it; a runtime you build
/// yourself needs `enable_time()`.
#[derive(Debug, Clone)]
pub struct WebhookLayer {
    receiver: Receiver,
}

impl WebhookLayer {
    /// A layer running `receiver`'s lifecycle.
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
    type Future = WebhookFuture<S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        // The clone is the one not yet driven to readiness; keep the ready one for this call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let receiver = self.receiver.clone();
        let span = delivery_span();
        // Split here, not in the future: a value the future captures keeps its place in it for
        // the future's whole life, so a request split inside would be stored twice.
        let (mut parts, body) = request.into_parts();
        let lifecycle = async move {
            let account = match receiver.account_parameter() {
                Some(name) => path_account(&mut parts, name).await,
                None => None,
            };
            let admitted = match receiver
                .admit_account_request(
                    account.as_deref(),
                    parts.method.as_str(),
                    &parts.headers,
                    peer(&parts),
                    body,
                )
                .await
            {
                Ok(admitted) => admitted,
                Err(answer) => return Ok(answer.into_response()),
            };
            // From here on a dropped request goes on in a task: the handler must run.
            mark_admitted();
            parts.extensions.insert(admitted.event().clone());
            // The handler reads the decoded body, so the headers describe that one. Rewritten
            // only when they do not already (a decoded or chunked body): a header value costs
            // an allocation on every delivery.
            let decoded = parts.headers.remove(CONTENT_ENCODING).is_some();
            let length = admitted.body().len();
            let declared = parts
                .headers
                .get(CONTENT_LENGTH)
                .and_then(|value| value.to_str().ok()?.parse::<usize>().ok());
            if decoded || declared != Some(length) {
                parts
                    .headers
                    .insert(CONTENT_LENGTH, HeaderValue::from(length));
            }
            let request = http::Request::from_parts(parts, Body::from(admitted.body().clone()));
            let handler = std::pin::pin!(inner.call(request));
            let run = admitted.run_to_outcome(handler, |answer| {
                answer.as_ref().ok().map(http::Response::status)
            });
            match run.await {
                Ok((answer, outcome)) => answer.map(|response| {
                    let mut response = response.map(Body::new);
                    response
                        .headers_mut()
                        .insert(OUTCOME, HeaderValue::from_static(outcome));
                    response
                }),
                // The claim is released and the delivery counted and logged.
                Err(HandlerPanicked { .. }) => Ok(Answer::HANDLER_PANICKED.into_response()),
            }
        };
        WebhookFuture {
            lifecycle: RunToCompletion::new(Box::pin(lifecycle.instrument(span))),
        }
    }
}

/// The future [`WebhookService`] returns: one delivery's lifecycle. Dropped once the delivery
/// is admitted (the platform hung up at its 5 s deadline, or a timeout layer gave up), it goes
/// on in a task of its own, so an admitted handler always runs to completion and settles its
/// claim; dropped before, it is cancelled.
pub struct WebhookFuture<E: Send + 'static> {
    lifecycle: RunToCompletion<SendRun<Result<Response, E>>>,
}

impl<E: Send + 'static> fmt::Debug for WebhookFuture<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookFuture").finish_non_exhaustive()
    }
}

impl<E: Send + 'static> Future for WebhookFuture<E> {
    type Output = Result<Response, E>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.lifecycle).poll(cx).map(|ended| {
            // A panic outside the handler (the handler's own is caught, and answered, by
            // its run): the claim, if any, was released when the lifecycle was dropped.
            ended.unwrap_or_else(|HandlerPanicked { .. }| {
                Ok(Answer::HANDLER_PANICKED.into_response())
            })
        })
    }
}

impl<S: Send + Sync> FromRequestParts<S> for VerifiedEvent {
    type Rejection = MissingReceiver;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<VerifiedEvent>()
            .cloned()
            .ok_or(MissingReceiver)
    }
}

/// An extractor that takes the event from [`WebhookLayer`], or, on a route without it,
/// admits the delivery by itself with the [`Receiver`] from the router state (`FromRef`).
///
/// Call [`commit`](WebhookDelivery::commit) once the event is handled (a no-op under the
/// layer, which already holds the claim and settles it by your answer: admitting the delivery
/// again there would find its own claim and answer 409). Without the layer, dropping it
/// unsettled (an error return, a panic, a forgotten commit) releases the claim so the
/// platform's retry is processed, and logs a warning naming the event.
///
/// Without the layer your handler runs inside the request, so a sender that hangs up cancels
/// it: prefer [`WebhookLayer`], which runs the handler to completion, for handlers that may
/// take seconds.
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
    settlement: Option<Settlement>,
}

impl WebhookDelivery {
    /// Marks the event handled, so redeliveries are answered as duplicates. A store failure
    /// is logged, not returned: the event has been handled either way.
    pub async fn commit(self) {
        if let Some(settlement) = self.settlement {
            settlement.commit().await;
        }
    }

    /// The event, and its claim's settlement when this extractor made the claim (`None`
    /// under [`WebhookLayer`], which settles the claim by your answer), to settle it yourself.
    pub fn into_parts(self) -> (VerifiedEvent, Option<Settlement>) {
        (self.event, self.settlement)
    }
}

impl<S> FromRequest<S> for WebhookDelivery
where
    Receiver: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = Answer;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        // Under the layer, the delivery is admitted and its claim held already.
        if let Some(event) = request.extensions().get::<VerifiedEvent>().cloned() {
            return Ok(Self {
                event,
                settlement: None,
            });
        }
        let receiver = Receiver::from_ref(state);
        let (parts, body) = request.into_parts();
        let (event, settlement) = receiver
            .admit_request(parts.method.as_str(), &parts.headers, peer(&parts), body)
            .instrument(delivery_span())
            .await?
            .into_parts();
        Ok(Self {
            event,
            settlement: Some(settlement),
        })
    }
}

/// The inbox's [`Job`] (its attempt number and idempotency key), for handlers that the inbox's
/// workers run through [`InboxHandler`]. Take it as `Option<Job>`: it is `None` when the same
/// handler runs inline, so one handler serves both modes.
impl<S: Send + Sync> OptionalFromRequestParts<S> for Job {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        _state: &S,
    ) -> Result<Option<Self>, Self::Rejection> {
        Ok(parts.extensions.get::<Job>().cloned())
    }
}

/// Runs an axum handler, router or any tower service as the inbox's job handler, so that the
/// handler you wrote for inline mode moves to the workers unchanged.
///
/// Each job becomes a `POST /` request carrying the stored body, with the [`VerifiedEvent`]
/// and the [`Job`] in its extensions: extractors such as `VerifiedEvent`, `Bytes`, `Json<T>`,
/// `State` and `Option<Job>` work as they do behind [`WebhookLayer`]. A 2xx answer marks the
/// job done; any other status is a failure, retried with backoff.
///
/// ```no_run
/// use axum::{http::StatusCode, routing::post};
/// use aisoule_webhooks::axum::{InboxHandler, WebhookLayer};
/// use aisoule_webhooks::inbox::Inbox;
/// use aisoule_webhooks::{Receiver, VerifiedEvent, Verifier, WebhookSecret};
///
/// async fn handle(event: VerifiedEvent) -> StatusCode {
///     println!("{}", event.kind());
///     StatusCode::OK
/// }
///
/// # async fn run(inbox: Inbox) -> Result<(), Box<dyn std::error::Error>> {
/// let secret = WebhookSecret::new(std::env::var("AISOULE_WEBHOOK_SECRET")?)?;
/// let receiver = Receiver::builder(Verifier::new(secret)).inbox(inbox.clone()).build()?;
/// // The request path stores and answers 200; it never calls `handle`.
/// let app: axum::Router = axum::Router::new()
///     .route("/webhook", post(handle).layer(WebhookLayer::new(receiver)));
/// // The workers call the same handler.
/// let workers = inbox.start(InboxHandler::new(post(handle)));
/// # let _ = (app, workers); Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct InboxHandler<S> {
    service: S,
}

impl<S> InboxHandler<S> {
    /// Runs `service` for each job.
    pub fn new(service: S) -> Self {
        Self { service }
    }
}

impl<S, ResBody> JobHandler for InboxHandler<S>
where
    S: Service<http::Request<Body>, Response = http::Response<ResBody>>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<HandlerError>,
    ResBody: Send + 'static,
{
    fn handle(&self, job: Job) -> Pin<Box<dyn Future<Output = Result<(), HandlerError>> + Send>> {
        let mut service = self.service.clone();
        Box::pin(async move {
            let body = job.event().raw().clone();
            let mut request = http::Request::post("/")
                .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
                .header(CONTENT_LENGTH, HeaderValue::from(body.len()))
                .body(Body::from(body))?;
            request.extensions_mut().insert(job.event().clone());
            request.extensions_mut().insert(job);
            std::future::poll_fn(|cx| service.poll_ready(cx))
                .await
                .map_err(Into::into)?;
            let response = service.call(request).await.map_err(Into::into)?;
            if response.status().is_success() {
                Ok(())
            } else {
                Err(format!("the handler answered {}", response.status()).into())
            }
        })
    }
}

/// A [`Dispatcher`] is an axum handler: `post(dispatcher)` behind [`WebhookLayer`], with the
/// router's state as its handlers' state. It answers 200 when a handler answered `Ok` (or
/// none is registered for the event: acknowledged) and 500 when one failed, so the layer
/// commits or releases the claim by it. Behind no layer it answers 500 ([`MissingReceiver`]).
///
/// ```no_run
/// use axum::{Router, routing::post};
/// use aisoule_webhooks::axum::WebhookLayer;
/// use aisoule_webhooks::dispatch::{Dispatcher, TypedEvent};
/// use aisoule_webhooks::event::InboundMessage;
/// use aisoule_webhooks::{Receiver, Verifier, WebhookSecret};
///
/// #[derive(Clone)]
/// struct App { greeting: &'static str }
///
/// # fn app() -> Result<Router, Box<dyn std::error::Error>> {
/// let receiver = Receiver::new(Verifier::new(WebhookSecret::new("whsec_…")?));
/// let dispatcher = Dispatcher::new().on_message(
///     |message: TypedEvent<InboundMessage<'static>>, app: App| async move {
///         println!("{} {:?}", app.greeting, message.text());
///         Ok(())
///     },
/// );
/// let app = Router::new()
///     .route("/webhook", post(dispatcher).layer(WebhookLayer::new(receiver)))
///     .with_state(App { greeting: "hello" });
/// # Ok(app) }
/// ```
impl<S> axum::handler::Handler<Dispatcher<S>, S> for Dispatcher<S>
where
    S: Clone + Send + Sync + 'static,
{
    type Future = Pin<Box<dyn Future<Output = Response> + Send>>;

    fn call(self, request: Request, state: S) -> Self::Future {
        Box::pin(async move {
            let Some(event) = request.extensions().get::<VerifiedEvent>().cloned() else {
                return MissingReceiver.into_response();
            };
            // The request (and its body, which the event holds too) is not needed past here.
            drop(request);
            dispatch::answer(self.dispatch(event, state).await).into_response()
        })
    }
}
