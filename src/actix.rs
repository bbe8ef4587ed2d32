//! actix-web integration: a middleware and extractors. Requires the `actix-web` feature.
//!
//! The same checks, in the same order, with the same statuses as the axum integration (see
//! the status map in the crate docs): both run [`Receiver::admit`].
//!
//! ```no_run
//! use actix_web::{App, HttpResponse, HttpServer, web};
//! use aisoule_webhooks::actix::WebhookMiddleware;
//! use aisoule_webhooks::{Receiver, VerifiedEvent, Verifier, WebhookSecret};
//!
//! async fn handle(event: VerifiedEvent) -> HttpResponse {
//!     println!("{} {:?}", event.kind(), event.message_id());
//!     HttpResponse::Ok().finish() // a 2xx commits the claim; anything else releases it
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
//! # Which bytes are verified
//!
//! The signature covers the JSON the platform signed, so a body sent with `Content-Encoding`
//! is decoded first (gzip always; brotli and zstd when your actix-web enables them) and the
//! **decoded** bytes are verified, parsed and passed on. The limit applies to the compressed
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
use actix_web::dev::{
    Decompress, Extensions, Payload, Service, ServiceRequest, ServiceResponse, Transform,
};
use actix_web::error::PayloadError;
use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderMap, HeaderValue};
use actix_web::{FromRequest, HttpMessage, HttpRequest, HttpResponse, ResponseError, web};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use tracing::Instrument;

use crate::dedup::ClaimGuard;
use crate::error::Rejection;
use crate::receiver::{Receiver, VerifiedEvent, delivery_span, settle};
use crate::verify::{AISOULE_SIGNATURE, WEBHOOK_SIGNATURE};

type LocalBoxFuture<T> = Pin<Box<dyn Future<Output = T>>>;

/// actix-web 4 uses the `http` 0.2 types; this crate's status map is in `http` 1.x.
fn actix_status(status: http::StatusCode) -> StatusCode {
    StatusCode::from_u16(status.as_u16()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

impl ResponseError for Rejection {
    fn status_code(&self) -> StatusCode {
        actix_status(self.status())
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status_code());
        response.content_type("application/json");
        if let Some(seconds) = self.retry_after_secs() {
            response.insert_header((header::RETRY_AFTER, seconds));
        }
        response.body(self.public_body())
    }
}

fn signature_values(headers: &HeaderMap) -> impl Iterator<Item = &[u8]> {
    headers
        .get_all(WEBHOOK_SIGNATURE.as_str())
        .chain(headers.get_all(AISOULE_SIGNATURE.as_str()))
        .map(HeaderValue::as_bytes)
}

/// Reads a payload up to the limit, decoding `Content-Encoding`, and refusing a declared
/// length, a compressed stream or a decoded stream over the limit as soon as it is known.
async fn read_limited(
    receiver: &Receiver,
    headers: &HeaderMap,
    payload: Payload,
) -> Result<Bytes, Rejection> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    receiver.check_declared_length(declared)?;
    let limit = receiver.body_limit().get();
    let mut received = 0usize;
    let capped = payload.map(move |chunk| {
        let chunk = chunk?;
        received += chunk.len();
        if received > limit {
            return Err(PayloadError::Overflow);
        }
        Ok(chunk)
    });
    let mut decoded = Decompress::from_headers(capped, headers);
    let mut body = BytesMut::new();
    while let Some(chunk) = decoded.next().await {
        let chunk = chunk.map_err(|error| match error {
            PayloadError::Overflow => Rejection::PayloadTooLarge { limit },
            other => Rejection::BodyUnreadable {
                reason: other.to_string(),
            },
        })?;
        if body.len() + chunk.len() > limit {
            return Err(Rejection::PayloadTooLarge { limit });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
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

/// A middleware ([`Transform`]) that verifies, parses, checks and claims each delivery
/// before the service it wraps sees it. Use it with `.wrap(…)`.
///
/// The wrapped service finds a [`VerifiedEvent`] in the request extensions and the original
/// payload put back, so `web::Bytes` and `web::Json<T>` still work. A 2xx answer commits the
/// claim; any other answer or an error releases it, so the platform's retry is processed.
#[derive(Debug, Clone)]
pub struct WebhookMiddleware {
    receiver: Receiver,
}

impl WebhookMiddleware {
    /// A middleware running `receiver`'s checks.
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
    type Future = LocalBoxFuture<Result<Self::Response, Self::Error>>;

    actix_web::dev::forward_ready!(service);

    fn call(&self, mut request: ServiceRequest) -> Self::Future {
        let service = Rc::clone(&self.service);
        let receiver = self.receiver.clone();
        let pipeline = async move {
            let payload = request.take_payload();
            let bytes = match read_limited(&receiver, request.headers(), payload).await {
                Ok(bytes) => bytes,
                Err(rejection) => return Ok(reject(request, &rejection)),
            };
            let admitted = match receiver
                .admit(signature_values(request.headers()), bytes.clone())
                .await
            {
                Ok(admitted) => admitted,
                Err(rejection) => return Ok(reject(request, &rejection)),
            };
            let (event, claim) = admitted.into_parts();
            request.extensions_mut().insert(event);
            let headers = request.headers_mut();
            headers.remove(header::CONTENT_ENCODING);
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
            let configs = body_configs(request.request(), receiver.body_limit().get());
            request.add_data_container(Rc::new(configs));
            request.set_payload(Payload::from(bytes));
            // If the handler panics or this future is dropped, `claim` is dropped unsettled,
            // which releases it.
            let answer = service.call(request).await;
            let handled = matches!(&answer, Ok(response) if response.status().is_success());
            settle(claim, handled).await;
            answer.map(ServiceResponse::map_into_left_body)
        };
        Box::pin(pipeline.instrument(delivery_span()))
    }
}

fn reject<B>(request: ServiceRequest, rejection: &Rejection) -> ServiceResponse<EitherBody<B>> {
    request
        .into_response(rejection.error_response())
        .map_into_right_body()
}

/// Returned when a handler asks for a [`VerifiedEvent`] on a route without
/// [`WebhookMiddleware`], or for a [`WebhookDelivery`] with neither the middleware nor a
/// `web::Data<Receiver>`. A wiring mistake, answered with 500; the handler does not run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("no WebhookMiddleware on this route and no web::Data<Receiver> in the app")]
pub struct MissingReceiver;

impl MissingReceiver {
    /// 500.
    pub fn status(&self) -> http::StatusCode {
        http::StatusCode::INTERNAL_SERVER_ERROR
    }
}

impl ResponseError for MissingReceiver {
    fn status_code(&self) -> StatusCode {
        actix_status(self.status())
    }

    fn error_response(&self) -> HttpResponse {
        tracing::error!("{self}");
        HttpResponse::build(self.status_code())
            .content_type("application/json")
            .body(r#"{"error":"webhook receiver misconfigured"}"#)
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
/// verifies, parses, checks and claims by itself with the [`Receiver`] from
/// `web::Data<Receiver>`.
///
/// Call [`commit`](WebhookDelivery::commit) once the event is handled (a no-op under the
/// middleware, which settles the claim by your answer). Without the middleware it reads the
/// payload itself, so put it before any other body extractor.
#[derive(Debug)]
pub struct WebhookDelivery {
    /// The verified event.
    pub event: VerifiedEvent,
    claim: Option<ClaimGuard>,
}

impl WebhookDelivery {
    /// Marks the event handled, so redeliveries are answered as duplicates. A store failure is
    /// logged, not returned: the event has been handled either way.
    pub async fn commit(self) {
        if let Some(claim) = self.claim {
            settle(claim, true).await;
        }
    }

    /// The event, and its claim when this extractor made it.
    pub fn into_parts(self) -> (VerifiedEvent, Option<ClaimGuard>) {
        (self.event, self.claim)
    }
}

impl FromRequest for WebhookDelivery {
    type Error = actix_web::Error;
    type Future = LocalBoxFuture<Result<Self, actix_web::Error>>;

    fn from_request(request: &HttpRequest, payload: &mut Payload) -> Self::Future {
        if let Some(event) = request.extensions().get::<VerifiedEvent>().cloned() {
            return Box::pin(ready(Ok(Self { event, claim: None })));
        }
        let Some(receiver) = request
            .app_data::<web::Data<Receiver>>()
            .map(|data| Receiver::clone(data))
        else {
            return Box::pin(ready(Err(MissingReceiver.into())));
        };
        let payload = payload.take();
        let request = request.clone();
        let admit = async move {
            let bytes = read_limited(&receiver, request.headers(), payload).await?;
            let admitted = receiver
                .admit(signature_values(request.headers()), bytes)
                .await?;
            let (event, claim) = admitted.into_parts();
            Ok::<_, Rejection>(Self {
                event,
                claim: Some(claim),
            })
        };
        Box::pin(async move {
            admit
                .instrument(delivery_span())
                .await
                .map_err(actix_web::Error::from)
        })
    }
}
