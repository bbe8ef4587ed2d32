//! Holds the peer benchmarks (see `benches/verify.rs`), and the pipeline that the
//! instruction and allocation counters (`src/bin/pipeline_*.rs`) both send deliveries through.

use aisoule_webhooks::Receiver;
use aisoule_webhooks::axum::WebhookLayer;
use aisoule_webhooks::event::{Dialect, EventKind};
use aisoule_webhooks::test_util::{Delivery, test_verifier};
use axum::Router;
use axum::http::StatusCode;
use axum::routing::post;

/// The route under measure: a no-op handler, behind [`WebhookLayer`] when `layered`, so that
/// the two differ by the layer alone.
pub fn pipeline_app(layered: bool) -> Router {
    let handler = post(|| async { StatusCode::OK });
    let app = if layered {
        Router::new().route(
            "/webhook",
            handler.layer(WebhookLayer::new(Receiver::new(test_verifier()))),
        )
    } else {
        Router::new().route("/webhook", handler)
    };
    // What `axum::serve` does (`into_make_service`): turn every handler into a route once,
    // rather than per request, so that neither mode counts axum's per-request conversion.
    app.with_state(())
}

/// The `n`th delivery: a ~290 B developer-dialect message, fresh (its own `message_id`), signed
/// for [`test_verifier`].
pub fn pipeline_request(n: u64) -> http::Request<axum::body::Body> {
    let delivery = Delivery::sample(EventKind::MessageIncoming, Dialect::Developer)
        .message_id(format!("msg_{n:016x}"))
        .build();
    let (parts, body) = delivery.http_request("/webhook").into_parts();
    http::Request::from_parts(parts, axum::body::Body::new(body))
}
