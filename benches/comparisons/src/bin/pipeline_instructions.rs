//! The tower layer's cost per delivery in instructions, for callgrind, which counts the same
//! on these noisy VMs however loaded they are.
//!
//! ```text
//! pipeline_instructions layer N   # N fresh deliveries through axum + WebhookLayer, no-op handler
//! pipeline_instructions bare N    # the same deliveries to the same handler, without the layer
//! ```
//!
//! `benches/instructions.sh` runs both under callgrind at two values of N and prints the
//! difference per delivery, so start-up and request building cancel out.

use aisoule_webhooks::Receiver;
use aisoule_webhooks::axum::WebhookLayer;
use aisoule_webhooks::event::{Dialect, EventKind};
use aisoule_webhooks::test_util::{Delivery, test_verifier};
use axum::Router;
use axum::http::StatusCode;
use axum::routing::post;
use tower::ServiceExt;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (layered, count) = match (args.get(1).map(String::as_str), args.get(2)) {
        (Some(mode @ ("layer" | "bare")), Some(n)) => (mode == "layer", n.parse::<u64>()),
        _ => {
            eprintln!("usage: pipeline_instructions layer|bare N");
            std::process::exit(2);
        }
    };
    let count = count.expect("N is a count");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a runtime");
    let handler = post(|| async { StatusCode::OK });
    let app = if layered {
        Router::new().route(
            "/webhook",
            handler.layer(WebhookLayer::new(Receiver::new(test_verifier()))),
        )
    } else {
        Router::new().route("/webhook", handler)
    };
    for n in 0..count {
        let delivery = Delivery::sample(EventKind::MessageIncoming, Dialect::Developer)
            .message_id(format!("msg_{n:016x}"))
            .build();
        let (parts, body) = delivery.http_request("/webhook").into_parts();
        let request = http::Request::from_parts(parts, axum::body::Body::new(body));
        let response = runtime
            .block_on(app.clone().oneshot(request))
            .expect("infallible");
        assert_eq!(response.status(), StatusCode::OK);
    }
}
