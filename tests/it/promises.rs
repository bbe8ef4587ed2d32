//! Promises the README makes that no other test held: each of these was found by changing the
//! code (a mutation) and watching every test still pass.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use aisoule_webhooks::axum::WebhookLayer;
use aisoule_webhooks::clock::ManualClock;
use aisoule_webhooks::error::Skew;
use aisoule_webhooks::event::{Dialect, EventKind, Payload};
use aisoule_webhooks::test_util::{Delivery, test_verifier};
use aisoule_webhooks::{Admission, Receiver, Rejection, VerifiedEvent};
use axum::Router;
use axum::body::Body;
use axum::http::StatusCode;
use axum::routing::post;
use tower::ServiceExt;

use crate::e2e::test_now;
use crate::support::CapturedLogs;

/// A receiver on a manual clock standing at [`test_now`].
pub(crate) fn receiver() -> Receiver {
    Receiver::builder(test_verifier())
        .clock(Arc::new(ManualClock::new(test_now())))
        .build()
        .unwrap()
}

/// A `message.incoming` with this id, timestamped `at`.
pub(crate) fn message_at(id: &str, at: std::time::SystemTime) -> Delivery {
    Delivery::sample(EventKind::MessageIncoming, Dialect::Developer)
        .message_id(id)
        .timestamp_at(at)
        .build()
}

async fn admit(receiver: &Receiver, delivery: &Delivery) -> Result<Admission, Rejection> {
    receiver
        .admit(
            [delivery.signature_value().as_bytes()],
            delivery.body().clone(),
        )
        .await
}

/// The replay tolerance is inclusive: an event exactly 3 600 s away, either way, is fresh; one
/// second more is stale.
#[tokio::test]
async fn the_replay_window_holds_exactly_3600_s_either_way_and_not_3601() {
    let receiver = receiver();
    let hour = Duration::from_secs(3600);
    let second = Duration::from_secs(1);
    for (id, at) in [("past", test_now() - hour), ("future", test_now() + hour)] {
        let admission = admit(&receiver, &message_at(id, at)).await;
        assert!(
            matches!(admission, Ok(Admission::Fresh(_))),
            "{id}: exactly the tolerance is fresh: {admission:?}"
        );
    }
    for (id, at, skew) in [
        ("past-1", test_now() - hour - second, Skew::Behind),
        ("future-1", test_now() + hour + second, Skew::Ahead),
    ] {
        let admission = admit(&receiver, &message_at(id, at)).await;
        assert!(
            matches!(
                admission,
                Err(Rejection::Stale {
                    skew_secs: 3601,
                    direction,
                    tolerance_secs: 3600
                }) if direction == skew
            ),
            "{id}: one second past the tolerance is stale: {admission:?}"
        );
    }
}

fn counting_app(status: StatusCode, calls: Arc<AtomicUsize>) -> Router {
    Router::new().route(
        "/webhook",
        post(move |event: VerifiedEvent| async move {
            calls.fetch_add(1, Ordering::SeqCst);
            match event.payload() {
                Payload::Unrecognized(_) | Payload::Message(_) => status,
                _ => StatusCode::UNPROCESSABLE_ENTITY,
            }
        })
        .layer(WebhookLayer::new(receiver())),
    )
}

async fn send(app: &Router, delivery: &Delivery) -> (StatusCode, String) {
    let response = app
        .clone()
        .oneshot(delivery.http_request("/webhook").map(Body::new))
        .await
        .unwrap();
    let status = response.status();
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    (status, String::from_utf8(body.to_vec()).unwrap())
}

/// Any 2xx commits the claim, as the README says: a handler answering 204 is not run again by
/// the redelivery, which is a duplicate.
#[tokio::test]
async fn a_204_commits_the_claim_like_a_200() {
    let logs = CapturedLogs::default();
    let _guard = logs.install();
    let calls = Arc::new(AtomicUsize::new(0));
    let app = counting_app(StatusCode::NO_CONTENT, calls.clone());
    let delivery = message_at("no-content-1", test_now());
    assert_eq!(send(&app, &delivery).await.0, StatusCode::NO_CONTENT);
    assert_eq!(
        send(&app, &delivery).await,
        (StatusCode::OK, r#"{"status":"duplicate"}"#.to_owned())
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    // It says (at debug) that the platform, which counts only 200, will deliver it again.
    let said = |logs: &CapturedLogs| logs.text().matches("other than 200").count();
    assert_eq!(said(&logs), 1, "{}", logs.text());

    // A 200, or a failure, says nothing of the kind.
    for status in [StatusCode::OK, StatusCode::INTERNAL_SERVER_ERROR] {
        let app = counting_app(status, Arc::new(AtomicUsize::new(0)));
        let delivery = message_at(&format!("status-{}", status.as_u16()), test_now());
        assert_eq!(send(&app, &delivery).await.0, status);
    }
    assert_eq!(said(&logs), 1, "{}", logs.text());
}

/// A known event whose `data` does not fit reaches the handler over HTTP as
/// `Payload::Unrecognized` (not a 400 the platform would retry forever).
#[tokio::test]
async fn a_misfit_known_event_reaches_the_handler_as_unrecognized_over_http() {
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let app = Router::new().route(
        "/webhook",
        post({
            let seen = seen.clone();
            move |event: VerifiedEvent| async move {
                if let Payload::Unrecognized(u) = event.payload() {
                    seen.lock()
                        .unwrap()
                        .push((u.kind.clone(), u.reason.clone()));
                }
                StatusCode::OK
            }
        })
        .layer(WebhookLayer::new(receiver())),
    );
    // The fixture's misfit (no `message_id`), stamped now so that it is fresh.
    let mut payload: serde_json::Value = serde_json::from_slice(&crate::support::fixture(
        "events/malformed-known-event.json",
    ))
    .unwrap();
    payload["timestamp"] = serde_json::json!(
        test_now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    );
    let misfit = Delivery::from_json(payload).build();
    assert_eq!(send(&app, &misfit).await.0, StatusCode::OK);
    assert_eq!(
        *seen.lock().unwrap(),
        vec![(
            EventKind::MessageIncoming,
            aisoule_webhooks::error::PayloadError::Missing {
                field: "message_id"
            }
        )]
    );
}

/// The logs keep what the uniform answers hide: the typed signature error behind every 401,
/// and the form of an unreadable timestamp that was accepted.
#[tokio::test]
async fn the_logs_name_the_signature_error_and_the_unreadable_timestamp() {
    let logs = CapturedLogs::default();
    let _guard = logs.install();
    let app = counting_app(StatusCode::OK, Arc::new(AtomicUsize::new(0)));
    let forged = message_at("forged-1", test_now()).forged();
    let (status, body) = send(&app, &forged).await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::UNAUTHORIZED, r#"{"error":"invalid signature"}"#)
    );
    let mock = message_at("mock-1", test_now()).with_signature_value("sha256=MOCK_SIGNATURE");
    assert_eq!(send(&app, &mock).await.0, StatusCode::UNAUTHORIZED);
    let unreadable = Delivery::sample(EventKind::MessageIncoming, Dialect::Developer)
        .message_id("unreadable-1")
        .set("/timestamp", "yesterday at noon")
        .build();
    assert_eq!(send(&app, &unreadable).await.0, StatusCode::OK);
    let text = logs.text();
    let lines: Vec<&str> = text.lines().filter(|l| l.contains("WARN")).collect();
    assert!(
        lines
            .iter()
            .any(|l| l.contains("does not match the body under any configured secret")),
        "the mismatch is logged at warn: {text}"
    );
    assert!(
        lines.iter().any(|l| l.contains("MOCK_SIGNATURE")),
        "the placeholder is named at warn: {text}"
    );
    assert!(
        lines.iter().any(|l| l.contains("timestamp kept unread")
            && l.contains("neither RFC 3339 nor unix seconds")),
        "the unreadable timestamp is logged at warn with its form: {text}"
    );
}

/// A receiver reports the settings it was built with, and its `Debug` (which an app may log
/// at startup) shows them and the secret's label, never the secret.
#[test]
fn a_receiver_reports_its_settings_and_debug_never_shows_the_secret() {
    use aisoule_webhooks::BodyLimit;
    use aisoule_webhooks::dedup::Deduplicator;
    let receiver = Receiver::builder(test_verifier())
        .deduplicator(Deduplicator::in_memory().with_namespace("crm").unwrap())
        .replay_tolerance(Duration::from_secs(600))
        .body_limit(BodyLimit::bytes(4096))
        .build()
        .unwrap();
    assert_eq!(receiver.replay_tolerance(), Duration::from_secs(600));
    assert_eq!(receiver.body_limit(), BodyLimit::bytes(4096));
    assert!(receiver.inbox().is_none());
    assert_eq!(receiver.deduplicator().namespace(), Some("crm"));
    assert_eq!(
        format!(
            "{:?}",
            receiver.verifier().expect("a receiver for one account")
        ),
        r#"Verifier { secret_labels: ["test"], retired_labels: [], .. }"#
    );
    let debug = format!("{receiver:?}");
    for shown in [
        r#"verifier: Verifier { secret_labels: ["test"], retired_labels: [], .. }"#,
        r#"namespace: Some("crm")"#,
        "replay_tolerance: 600s",
        "body_limit: BodyLimit(4096)",
        "inbox: None",
    ] {
        assert!(debug.contains(shown), "{shown} in {debug}");
    }
    assert!(
        !debug.contains(aisoule_webhooks::test_util::TEST_SECRET),
        "{debug}"
    );
}
