//! A stale event's rejection names the skew's size and direction, in the error and its warn
//! log, while the answer stays the same 400 whichever way the clock is off.

use std::time::Duration;

use aisoule_webhooks::axum::WebhookLayer;
use aisoule_webhooks::error::Skew;
use aisoule_webhooks::test_util::Delivery;
use aisoule_webhooks::{Rejection, VerifiedEvent};
use axum::Router;
use axum::body::Body;
use axum::http::StatusCode;
use axum::routing::post;
use tower::ServiceExt;

use crate::e2e::{ANSWER_TIMEOUT, test_now};
use crate::promises::{message_at, receiver};
use crate::support::CapturedLogs;

const TWO_HOURS: Duration = Duration::from_secs(7200);

/// The answer to `delivery` from an axum route behind the layer: status, headers and body.
async fn answer(delivery: &Delivery) -> (StatusCode, http::HeaderMap, bytes::Bytes) {
    let app = Router::new().route(
        "/webhook",
        post(|_: VerifiedEvent| async { StatusCode::OK }).layer(WebhookLayer::new(receiver())),
    );
    let response = tokio::time::timeout(
        ANSWER_TIMEOUT,
        app.oneshot(delivery.http_request("/webhook").map(Body::new)),
    )
    .await
    .expect("answered in time")
    .unwrap();
    let (parts, body) = response.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX).await.unwrap();
    (parts.status, parts.headers, body)
}

#[tokio::test]
async fn a_stale_timestamp_names_its_direction_and_cause() {
    let cases = [
        (
            "held-back",
            test_now() - TWO_HOURS,
            Skew::Behind,
            "the event's timestamp is 7200 s behind this server's clock, beyond the 3600 s \
             replay tolerance: the sender's clock is behind, or the delivery was held back",
        ),
        (
            "from-the-future",
            test_now() + TWO_HOURS,
            Skew::Ahead,
            "the event's timestamp is 7200 s ahead of this server's clock, beyond the 3600 s \
             replay tolerance: the sender's clock is ahead, or this server's clock is behind",
        ),
    ];
    let receiver = receiver();
    let mut answers = Vec::new();
    for (id, at, expected_direction, expected_message) in cases {
        let delivery = message_at(id, at);
        let rejection = receiver
            .admit(
                [delivery.signature_value().as_bytes()],
                delivery.body().clone(),
            )
            .await
            .expect_err("stale");
        match &rejection {
            Rejection::Stale {
                skew_secs,
                direction,
                tolerance_secs,
            } => {
                assert_eq!(
                    (*skew_secs, *direction, *tolerance_secs),
                    (7200, expected_direction, 3600),
                    "{id}"
                );
            }
            other => panic!("{id}: expected Stale, got {other:?}"),
        }
        assert_eq!(rejection.to_string(), expected_message, "{id}");

        // Over HTTP the warn log names it; the answer does not.
        let logs = CapturedLogs::default();
        let guard = logs.install();
        let (status, headers, body) = answer(&delivery).await;
        drop(guard);
        let logged = logs.text();
        assert!(
            logged
                .lines()
                .any(|line| line.contains(" WARN ") && line.contains(expected_message)),
            "{id}: {logged}"
        );
        assert_eq!(status, StatusCode::BAD_REQUEST, "{id}");
        assert_eq!(&body[..], br#"{"error":"stale event"}"#, "{id}");
        answers.push((
            status,
            headers.get(http::header::CONTENT_TYPE).cloned(),
            body,
        ));
    }
    assert_eq!(answers[0], answers[1], "the same answer either way");
}
