//! actix-web integration: a middleware and extractors. Requires the `actix-web` feature.
//!
//! The same lifecycle, with the same statuses, as the axum integration (see the status map in
//! the crate docs): this module only translates actix-web's request and response types. Your
//! handler runs in the request, and moves to a task of its own on the worker if the platform
//! hangs up at its 5 s deadline, so it completes either way.
//!
//! ```no_run
//! use actix_web::{App, HttpResponse, HttpServer, web};
//! use aisoule_webhooks::actix::WebhookMiddleware;
//! use aisoule_webhooks::{Receiver, VerifiedEvent, Verifier, WebhookSecret};
//!
//! async fn handle(event: VerifiedEvent) -> HttpResponse {
//!     println!("{} {:?}", event.kind(), event.message_id());
//!     HttpResponse::Ok().finish() // 200 commits the claim; anything but a 2xx releases it
//! }
//!
//! # async fn run() -> std::io::Result<()> {
//! let secret = WebhookSecret::new("whsec_…").unwrap();
//! let receiver = Receiver::new(Verifier::new(secret));
//! HttpServer::new(move || {
//!     App::new().service(
//!         web::resource("/webhook")
//!             .wrap(WebhookMiddleware::new(receiver.clone()))
//!             .route(web::post().to(handle)),
//!     )
//! })
//! .bind(("127.0.0.1", 8080))?
//! .run()
//! .await
//! # }
//! ```
//!
//! For a receiver for many accounts ([`Receiver::for_accounts`]), wrap a resource whose path
//! has the account's parameter (`/webhooks/aisoule/{account}`): the middleware reads the
//! account from `match_info`.
//!
//! # Which bytes are verified
//!
//! The signature covers the JSON the platform signed, so a body sent with `Content-Encoding`
//! is decoded first (gzip or deflate, as on axum; anything else is 415) and the **decoded**
//! bytes are verified, parsed and passed on. The limit applies to the compressed
//! bytes and to the decoded bytes alike, so a small body that expands past it gets 413. The
//! request handed on carries the decoded bytes without `Content-Encoding`.
//!
//! actix's own body limits do not interfere: on the routes it wraps, the middleware sets
//! `PayloadConfig` and `JsonConfig` to the receiver's limit (keeping any other settings of
//! yours), so `web::Bytes` and `web::Json<T>` accept exactly what the middleware accepted.

use std::future::{Future, Ready, ready};
use std::pin::Pin;
use std::rc::Rc;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{Extensions, Payload, Service, ServiceRequest, ServiceResponse, Transform};
use actix_web::error::PayloadError;
use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderMap, HeaderValue};
use actix_web::{FromRequest, HttpMessage, HttpRequest, HttpResponse, ResponseError, web};
use bytes::Bytes;
use futures_util::StreamExt;
use http_body::Frame;
use http_body_util::StreamBody;
use tracing::Instrument;

use crate::dispatch::{self, Dispatcher};
use crate::error::Rejection;
use crate::receiver::{
    Answer, HandlerPanicked, LocalRun, MissingReceiver, ReadHeader, Receiver, RequestHeaders,
    RunToCompletion, Settlement, VerifiedEvent, delivery_span, mark_admitted, static_header_names,
};

type LocalBoxFuture<T> = Pin<Box<dyn Future<Output = T>>>;

/// actix-web 4 uses the `http` 0.2 types; this crate's status map is in `http` 1.x.
fn actix_status(status: http::StatusCode) -> StatusCode {
    StatusCode::from_u16(status.as_u16()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

fn http_status(status: StatusCode) -> Option<http::StatusCode> {
    http::StatusCode::from_u16(status.as_u16()).ok()
}

fn response(answer: &Answer) -> HttpResponse {
    let mut response = HttpResponse::build(actix_status(answer.status()));
    response.content_type("application/json");
    if let Some(seconds) = answer.retry_after_secs() {
        response.insert_header((header::RETRY_AFTER, seconds));
    }
    if let Some(methods) = answer.allow() {
        response.insert_header((header::ALLOW, methods));
    }
    response.insert_header((crate::OUTCOME_HEADER, answer.outcome()));
    if answer.closes_connection() {
        // actix-http sends it on HTTP/1.x only.
        response.force_close();
    }
    response.body(answer.body())
}

/// Makes [`Answer`] an actix error, so extractors can return it.
#[derive(Debug)]
struct AnswerError(Answer);

impl std::fmt::Display for AnswerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "webhook delivery answered {}", self.0.status())
    }
}

impl ResponseError for AnswerError {
    fn status_code(&self) -> StatusCode {
        actix_status(self.0.status())
    }

    fn error_response(&self) -> HttpResponse {
        response(&self.0)
    }
}

impl ResponseError for Rejection {
    fn status_code(&self) -> StatusCode {
        actix_status(self.status())
    }

    fn error_response(&self) -> HttpResponse {
        response(&Answer::from(self))
    }
}

impl ResponseError for MissingReceiver {
    fn status_code(&self) -> StatusCode {
        actix_status(self.status())
    }

    fn error_response(&self) -> HttpResponse {
        response(&Answer::from(*self))
    }
}

impl RequestHeaders for HeaderMap {
    fn all(&self, header: ReadHeader) -> impl Iterator<Item = &[u8]> {
        self.get_all(header_name(header)).map(HeaderValue::as_bytes)
    }
}

static_header_names!(header::HeaderName);

/// actix's payload as an `http_body::Body`, for the lifecycle to read up to its limit.
fn body(payload: Payload) -> impl http_body::Body<Data = Bytes, Error = PayloadError> {
    StreamBody::new(payload.map(|chunk| chunk.map(Frame::data)))
}

/// actix's extractors read their limits from request data; give them the receiver's, keeping
/// whatever else the application configured.
fn body_configs(request: &HttpRequest, limit: usize) -> Extensions {
    let mut configs = Extensions::new();
    let payload = request
        .app_data::<web::PayloadConfig>()
        .cloned()
        .unwrap_or_default();
    configs.insert(payload.limit(limit));
    let json = request
        .app_data::<web::JsonConfig>()
        .cloned()
        .unwrap_or_default();
    configs.insert(json.limit(limit));
    configs
}

/// A middleware ([`Transform`]) that runs the delivery lifecycle around the service it wraps.
/// Use it with `.wrap(…)`.
///
/// The wrapped service finds a [`VerifiedEvent`] in the request extensions and the verified
/// payload put back, so `web::Bytes` and `web::Json<T>` still work. A 2xx answer commits the
/// claim; any other answer, an error or a panic releases it, so the platform's retry is
/// processed. The wrapped service is called in the request, and moves to a task of its own on
/// the worker if the client hangs up once the delivery is admitted, so it completes either way.
#[derive(Debug, Clone)]
pub struct WebhookMiddleware {
    receiver: Receiver,
}

impl WebhookMiddleware {
    /// A middleware running `receiver`'s lifecycle.
    pub fn new(receiver: Receiver) -> Self {
        Self { receiver }
    }
}

impl<S, B> Transform<S, ServiceRequest> for WebhookMiddleware
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = actix_web::Error;
    type Transform = WebhookMiddlewareService<S>;
    type InitError = ();
    type Future = Ready<Result<Self::Transform, Self::InitError>>;

    fn new_transform(&self, service: S) -> Self::Future {
        ready(Ok(WebhookMiddlewareService {
            service: Rc::new(service),
            receiver: self.receiver.clone(),
        }))
    }
}

/// The service [`WebhookMiddleware`] produces.
#[derive(Debug)]
pub struct WebhookMiddlewareService<S> {
    service: Rc<S>,
    receiver: Receiver,
}

impl<S, B> Service<ServiceRequest> for WebhookMiddlewareService<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = actix_web::Error;
    type Future = WebhookServiceFuture<B>;

    actix_web::dev::forward_ready!(service);

    fn call(&self, mut request: ServiceRequest) -> Self::Future {
        let service = Rc::clone(&self.service);
        let receiver = self.receiver.clone();
        let lifecycle = async move {
            let payload = body(request.take_payload());
            let account = receiver
                .account_parameter()
                .and_then(|name| request.match_info().get(name));
            let admitted = match receiver
                .admit_account_request(
                    account,
                    request.method().as_str(),
                    request.headers(),
                    request.peer_addr().map(|address| address.ip()),
                    payload,
                )
                .await
            {
                Ok(admitted) => admitted,
                Err(answer) => {
                    return Ok(request
                        .into_response(response(&answer))
                        .map_into_right_body());
                }
            };
            // From here on a dropped request goes on in a task: the handler must run.
            mark_admitted();
            request.extensions_mut().insert(admitted.event().clone());
            let body = admitted.body().clone();
            let headers = request.headers_mut();
            headers.remove(header::CONTENT_ENCODING);
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
            let configs = body_configs(request.request(), receiver.body_limit().get());
            request.add_data_container(Rc::new(configs));
            let http_request = request.request().clone();
            request.set_payload(Payload::from(body));
            let handler = std::pin::pin!(service.call(request));
            let run = admitted.run_to_outcome(handler, |answer| {
                answer
                    .as_ref()
                    .ok()
                    .and_then(|response| http_status(response.status()))
            });
            match run.await {
                Ok((answer, outcome)) => answer.map(|mut response| {
                    response.headers_mut().insert(
                        header::HeaderName::from_static(crate::OUTCOME_HEADER),
                        HeaderValue::from_static(outcome),
                    );
                    response.map_into_left_body()
                }),
                // The claim is released and the delivery counted and logged.
                Err(HandlerPanicked { .. }) => Ok(ServiceResponse::new(
                    http_request,
                    response(&Answer::HANDLER_PANICKED),
                )
                .map_into_right_body()),
            }
        };
        WebhookServiceFuture {
            lifecycle: RunToCompletion::new(Box::pin(lifecycle.instrument(delivery_span()))),
        }
    }
}

/// The future [`WebhookMiddlewareService`] returns: one delivery's lifecycle, run in the
/// request. Dropped once the delivery is admitted (the platform hung up at its 5 s deadline),
/// it goes on in a task of its own on the worker, so an admitted handler always runs to
/// completion and settles its claim; dropped before, it is cancelled.
pub struct WebhookServiceFuture<B: 'static> {
    lifecycle: RunToCompletion<LocalRun<Result<ServiceResponse<EitherBody<B>>, actix_web::Error>>>,
}

/// A panic outside the handler's run, answered as a panicking handler is: the request it
/// would answer went down with the lifecycle, so actix-web answers this error with
/// [`Answer::HANDLER_PANICKED`]'s response instead. Holding a clone of the request for it
/// would not do: actix-web rewrites a request's headers only while it is the one reference.
#[derive(Debug)]
struct LifecyclePanicked;

impl std::fmt::Display for LifecyclePanicked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the webhook lifecycle panicked; its claim, if any, was released")
    }
}

impl ResponseError for LifecyclePanicked {
    fn status_code(&self) -> StatusCode {
        StatusCode::INTERNAL_SERVER_ERROR
    }

    fn error_response(&self) -> HttpResponse {
        response(&Answer::HANDLER_PANICKED)
    }
}

impl<B: 'static> std::fmt::Debug for WebhookServiceFuture<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookServiceFuture")
            .finish_non_exhaustive()
    }
}

impl<B: 'static> Future for WebhookServiceFuture<B> {
    type Output = Result<ServiceResponse<EitherBody<B>>, actix_web::Error>;

    fn poll(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        Pin::new(&mut self.lifecycle).poll(cx).map(|ended| {
            // A panic outside the handler (the handler's own is caught, and answered, by its
            // run): the claim, if any, was released when the lifecycle was dropped.
            ended.unwrap_or_else(|HandlerPanicked { .. }| Err(LifecyclePanicked.into()))
        })
    }
}

impl FromRequest for VerifiedEvent {
    type Error = MissingReceiver;
    type Future = Ready<Result<Self, MissingReceiver>>;

    fn from_request(request: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(
            request
                .extensions()
                .get::<VerifiedEvent>()
                .cloned()
                .ok_or(MissingReceiver),
        )
    }
}

/// An extractor that takes the event from [`WebhookMiddleware`], or, on a route without it,
/// admits the delivery by itself with the [`Receiver`] from `web::Data<Receiver>`.
///
/// Call [`commit`](WebhookDelivery::commit) once the event is handled (a no-op under the
/// middleware, which settles the claim by your answer). Without the middleware it reads the
/// payload itself, so put it before any other body extractor; dropping it unsettled (an error,
/// a panic, a forgotten commit) releases the claim and logs a warning naming the event. Your
/// handler runs inside the request then, so a sender that hangs up cancels it: prefer the
/// middleware for handlers that may take seconds.
#[derive(Debug)]
pub struct WebhookDelivery {
    /// The verified event.
    pub event: VerifiedEvent,
    settlement: Option<Settlement>,
}

impl WebhookDelivery {
    /// Marks the event handled, so redeliveries are answered as duplicates. A store failure is
    /// logged, not returned: the event has been handled either way.
    pub async fn commit(self) {
        if let Some(settlement) = self.settlement {
            settlement.commit().await;
        }
    }

    /// The event, and its claim's settlement when this extractor made the claim.
    pub fn into_parts(self) -> (VerifiedEvent, Option<Settlement>) {
        (self.event, self.settlement)
    }
}

impl FromRequest for WebhookDelivery {
    type Error = actix_web::Error;
    type Future = LocalBoxFuture<Result<Self, actix_web::Error>>;

    fn from_request(request: &HttpRequest, payload: &mut Payload) -> Self::Future {
        if let Some(event) = request.extensions().get::<VerifiedEvent>().cloned() {
            return Box::pin(ready(Ok(Self {
                event,
                settlement: None,
            })));
        }
        let Some(receiver) = request
            .app_data::<web::Data<Receiver>>()
            .map(|data| Receiver::clone(data))
        else {
            return Box::pin(ready(Err(MissingReceiver.into())));
        };
        let payload = payload.take();
        let request = request.clone();
        Box::pin(async move {
            let (event, settlement) = receiver
                .admit_request(
                    request.method().as_str(),
                    request.headers(),
                    request.peer_addr().map(|address| address.ip()),
                    body(payload),
                )
                .instrument(delivery_span())
                .await
                .map_err(AnswerError)?
                .into_parts();
            Ok(Self {
                event,
                settlement: Some(settlement),
            })
        })
    }
}

/// A [`Dispatcher`] is an actix-web handler: `web::post().to(dispatcher)` behind
/// [`WebhookMiddleware`]. Its handlers' state `S` is any extractor, typically
/// `web::Data<T>` from `App::app_data` (or `()` for none). It answers 200 when a handler
/// answered `Ok` (or none is registered for the event: acknowledged) and 500 when one failed,
/// so the middleware commits or releases the claim by it.
///
/// ```no_run
/// use actix_web::{App, web};
/// use aisoule_webhooks::actix::WebhookMiddleware;
/// use aisoule_webhooks::dispatch::{Dispatcher, TypedEvent};
/// use aisoule_webhooks::event::InboundMessage;
/// use aisoule_webhooks::{Receiver, Verifier, WebhookSecret};
///
/// struct Greeting(&'static str);
///
/// # fn app() -> Result<(), Box<dyn std::error::Error>> {
/// let receiver = Receiver::new(Verifier::new(WebhookSecret::new("whsec_…")?));
/// let dispatcher = Dispatcher::new().on_message(
///     |message: TypedEvent<InboundMessage<'static>>, greeting: web::Data<Greeting>| async move {
///         println!("{} {:?}", greeting.0, message.text());
///         Ok(())
///     },
/// );
/// let app = App::new().app_data(web::Data::new(Greeting("hello"))).service(
///     web::resource("/webhook")
///         .wrap(WebhookMiddleware::new(receiver))
///         .route(web::post().to(dispatcher)),
/// );
/// # let _ = app; Ok(()) }
/// ```
impl<S> actix_web::Handler<(VerifiedEvent, S)> for Dispatcher<S>
where
    S: FromRequest + Clone + Send + Sync + 'static,
{
    type Output = HttpResponse;
    type Future = LocalBoxFuture<HttpResponse>;

    fn call(&self, (event, state): (VerifiedEvent, S)) -> Self::Future {
        let dispatcher = self.clone();
        Box::pin(
            async move { response(&dispatch::answer(dispatcher.dispatch(event, state).await)) },
        )
    }
}
