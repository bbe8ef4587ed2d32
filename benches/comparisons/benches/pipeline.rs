//! The whole tower layer in-process (verify, parse, claim, a no-op handler, commit), against
//! the same no-op handler without the layer. Every iteration sends a distinct, freshly signed
//! delivery, so the path measured is the fresh path, not a run of duplicates.

use std::sync::atomic::{AtomicU64, Ordering};

use aisoule_webhooks::Receiver;
use aisoule_webhooks::axum::WebhookLayer;
use aisoule_webhooks::event::{Dialect, EventKind};
use aisoule_webhooks::test_util::{Delivery, test_verifier};
use axum::Router;
use axum::http::StatusCode;
use axum::routing::post;
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use tower::ServiceExt;

fn request(n: u64) -> http::Request<axum::body::Body> {
    let delivery = Delivery::sample(EventKind::MessageIncoming, Dialect::Developer)
        .message_id(format!("msg_{n:016x}"))
        .build();
    let (parts, body) = delivery.http_request("/webhook").into_parts();
    http::Request::from_parts(parts, axum::body::Body::new(body))
}

fn pipeline(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        // The lifecycle renews claims on tokio's timer.
        .enable_time()
        .build()
        .unwrap();
    let layered = Router::new()
        .route("/webhook", post(|| async { StatusCode::OK }))
        .layer(WebhookLayer::new(Receiver::new(test_verifier())));
    let bare = Router::new().route("/webhook", post(|| async { StatusCode::OK }));
    let next = AtomicU64::new(0);
    assert_eq!(
        runtime
            .block_on(layered.clone().oneshot(request(u64::MAX)))
            .unwrap()
            .status(),
        StatusCode::OK
    );

    let mut group = c.benchmark_group("pipeline");
    group.bench_function("bare_handler", |b| {
        b.iter_batched(
            || request(next.fetch_add(1, Ordering::Relaxed)),
            |request| runtime.block_on(bare.clone().oneshot(request)).unwrap(),
            BatchSize::SmallInput,
        )
    });
    group.bench_function("webhook_layer", |b| {
        b.iter_batched(
            || request(next.fetch_add(1, Ordering::Relaxed)),
            |request| {
                let response = runtime.block_on(layered.clone().oneshot(request)).unwrap();
                debug_assert_eq!(response.status(), StatusCode::OK);
                response
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group!(benches, pipeline);
criterion_main!(benches);
