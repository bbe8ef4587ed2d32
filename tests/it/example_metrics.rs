//! `GET /metrics` on both example receivers: the receiver's metrics in Prometheus text,
//! served outside the webhook route.

use std::time::Duration;

use aisoule_webhooks::event::{Dialect, EventKind};
use aisoule_webhooks::test_util::Delivery;

use crate::e2e::{ANSWER_TIMEOUT, post};
use crate::internet::Example;

/// How long the handled delivery may take to show in `/metrics`: the outcome is counted when
/// the claim settles, which can follow the answer by a moment.
const COUNTED_DEADLINE: Duration = Duration::from_secs(10);

/// `GET /metrics`: the status, the `Content-Type` and the body.
async fn scrape(example: &Example) -> (u16, String, String) {
    let response = reqwest::Client::new()
        .get(format!("http://{}/metrics", example.addr))
        .timeout(ANSWER_TIMEOUT)
        .send()
        .await
        .expect("the example answers /metrics");
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get(http::header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, content_type, response.text().await.unwrap())
}

async fn serves_metrics_in_prometheus_text(name: &str) {
    let example = Example::start(name, &[]).await;
    let (status, _, before) = scrape(&example).await;
    assert_eq!(status, 200, "{before}");
    assert!(
        !before.contains("aisoule_webhook_deliveries_total"),
        "nothing delivered yet: {before}"
    );

    let delivery = Delivery::sample(EventKind::MessageIncoming, Dialect::Developer)
        .message_id("example-metrics-1")
        .timestamp_at(std::time::SystemTime::now())
        .build();
    let (status, body) = post(&example.url(), &delivery).await;
    assert_eq!(status, 200, "{body}");

    let handled = "aisoule_webhook_deliveries_total{outcome=\"handled\"} 1\n";
    let deadline = tokio::time::Instant::now() + COUNTED_DEADLINE;
    let (status, content_type, text) = loop {
        let scraped = scrape(&example).await;
        if scraped.2.contains(handled) || tokio::time::Instant::now() > deadline {
            break scraped;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(status, 200);
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "Prometheus text exposition format: {content_type}"
    );
    assert!(text.contains(handled), "{text}");
    // The examples name the `AISOULE_WEBHOOK_SECRET` secret `current`.
    assert!(
        text.contains("aisoule_webhook_signature_matches_total{secret_label=\"current\"} 1\n"),
        "{text}"
    );
    assert!(
        text.contains("# TYPE aisoule_webhook_deliveries_total counter"),
        "{text}"
    );
    // The scrapes bypass the webhook layer: the one delivery is the only outcome counted.
    let outcomes: Vec<&str> = text
        .lines()
        .filter(|line| line.starts_with("aisoule_webhook_deliveries_total{"))
        .collect();
    assert_eq!(outcomes, [handled.trim_end()], "{text}");
    let (lines, _) = example.stop().await;
    assert_eq!(lines.len(), 1, "one event handled: {lines:?}");
}

#[tokio::test]
async fn axum_example_serves_metrics() {
    serves_metrics_in_prometheus_text("axum_receiver").await;
}

#[tokio::test]
async fn actix_example_serves_metrics() {
    serves_metrics_in_prometheus_text("actix_receiver").await;
}
