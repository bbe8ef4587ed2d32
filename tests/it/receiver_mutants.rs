//! The receiver's answers, pinned where `cargo mutants` over `src/receiver/` (issue 26) found
//! that no other test noticed a change: every rejection's status, public body, log name,
//! `Retry-After`, `Allow` and `Connection: close`, and the answers built from them.

use std::sync::Arc;

use aisoule_webhooks::clock::ManualClock;
use aisoule_webhooks::error::TimestampError;
use aisoule_webhooks::event::Dialect;
use aisoule_webhooks::receiver::MissingReceiver;
use aisoule_webhooks::test_util::{Delivery, test_verifier};
use aisoule_webhooks::{
    Answer, BodyLimit, DedupError, Deduplicator, InboxError, ParseError, Receiver, Rejection,
    VerifyError,
};
use http::StatusCode;

use crate::e2e::{ANSWER_TIMEOUT, Framework, message, post, start, test_now};

/// What a rejection must answer, as the README's status table promises it.
struct Expected {
    status: StatusCode,
    body: &'static str,
    outcome: &'static str,
    retry_after_secs: Option<u64>,
    allow: Option<&'static str>,
    closes_connection: bool,
}

/// One rejection of every kind, with the answer the platform must see for it.
fn every_rejection() -> Vec<(Rejection, Expected)> {
    let unavailable = r#"{"error":"temporarily unavailable; retry later"}"#;
    vec![
        (
            Rejection::MethodNotAllowed {
                method: "GET".to_owned(),
            },
            Expected {
                status: StatusCode::METHOD_NOT_ALLOWED,
                body: r#"{"error":"method not allowed"}"#,
                outcome: "method_not_allowed",
                retry_after_secs: None,
                allow: Some("POST"),
                closes_connection: true,
            },
        ),
        (
            Rejection::UnsupportedEncoding {
                encoding: "br".to_owned(),
            },
            Expected {
                status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
                body: r#"{"error":"unsupported content encoding"}"#,
                outcome: "unsupported_encoding",
                retry_after_secs: None,
                allow: None,
                closes_connection: true,
            },
        ),
        (
            Rejection::PayloadTooLarge { limit: 1024 },
            Expected {
                status: StatusCode::PAYLOAD_TOO_LARGE,
                body: r#"{"error":"payload too large"}"#,
                outcome: "too_large",
                retry_after_secs: None,
                allow: None,
                closes_connection: true,
            },
        ),
        (
            Rejection::BodyUnreadable {
                source: "the stream broke off".into(),
            },
            Expected {
                status: StatusCode::BAD_REQUEST,
                body: r#"{"error":"unreadable body"}"#,
                outcome: "unreadable",
                retry_after_secs: None,
                allow: None,
                closes_connection: true,
            },
        ),
        (
            Rejection::Signature(VerifyError::Missing),
            Expected {
                status: StatusCode::UNAUTHORIZED,
                body: r#"{"error":"invalid signature"}"#,
                outcome: "signature",
                retry_after_secs: None,
                allow: None,
                closes_connection: false,
            },
        ),
        (
            Rejection::Parse(ParseError::NotAnObject { found: "array" }),
            Expected {
                status: StatusCode::BAD_REQUEST,
                body: r#"{"error":"not an AISoule event"}"#,
                outcome: "parse",
                retry_after_secs: None,
                allow: None,
                closes_connection: false,
            },
        ),
        (
            Rejection::Stale {
                skew_secs: 900,
                tolerance_secs: 300,
            },
            Expected {
                status: StatusCode::BAD_REQUEST,
                body: r#"{"error":"stale event"}"#,
                outcome: "stale",
                retry_after_secs: None,
                allow: None,
                closes_connection: false,
            },
        ),
        (
            Rejection::UnreadableTimestamp {
                reason: TimestampError::NotRfc3339,
            },
            Expected {
                status: StatusCode::BAD_REQUEST,
                body: r#"{"error":"unreadable timestamp"}"#,
                outcome: "unreadable_timestamp",
                retry_after_secs: None,
                allow: None,
                closes_connection: false,
            },
        ),
        (
            Rejection::InFlight,
            Expected {
                status: StatusCode::CONFLICT,
                body: r#"{"error":"delivery in progress; retry later"}"#,
                outcome: "in_flight",
                retry_after_secs: None,
                allow: None,
                closes_connection: false,
            },
        ),
        (
            Rejection::Store(DedupError::unavailable("connection refused")),
            Expected {
                status: StatusCode::SERVICE_UNAVAILABLE,
                body: unavailable,
                outcome: "store",
                retry_after_secs: Some(10),
                allow: None,
                closes_connection: false,
            },
        ),
        (
            // Through `From`, as the inbox path builds it with `?`.
            Rejection::from(InboxError::Closed),
            Expected {
                status: StatusCode::SERVICE_UNAVAILABLE,
                body: unavailable,
                outcome: "inbox",
                retry_after_secs: Some(10),
                allow: None,
                closes_connection: false,
            },
        ),
    ]
}

#[test]
fn every_rejection_answers_its_documented_status_body_and_headers() {
    for (rejection, expected) in every_rejection() {
        let name = expected.outcome;
        assert_eq!(rejection.outcome(), expected.outcome, "{rejection:?}");
        assert_eq!(rejection.status(), expected.status, "{name}");
        assert_eq!(rejection.public_body(), expected.body, "{name}");
        assert_eq!(
            rejection.retry_after_secs(),
            expected.retry_after_secs,
            "{name}"
        );
        assert_eq!(rejection.allow(), expected.allow, "{name}");
        assert_eq!(
            rejection.closes_connection(),
            expected.closes_connection,
            "{name}"
        );

        // The framework-neutral answer carries exactly what the rejection decided.
        let answer = Answer::from(&rejection);
        assert_eq!(answer.status(), expected.status, "{name}");
        assert_eq!(answer.body(), expected.body, "{name}");
        assert_eq!(
            answer.retry_after_secs(),
            expected.retry_after_secs,
            "{name}"
        );
        assert_eq!(answer.allow(), expected.allow, "{name}");
        assert_eq!(
            answer.closes_connection(),
            expected.closes_connection,
            "{name}"
        );
    }
}

#[test]
fn every_rejection_has_its_own_log_name() {
    let mut outcomes: Vec<&str> = every_rejection()
        .iter()
        .map(|(rejection, _)| rejection.outcome())
        .collect();
    let all = outcomes.len();
    outcomes.sort_unstable();
    outcomes.dedup();
    assert_eq!(outcomes.len(), all, "two rejections share a log name");
}

#[test]
fn the_fixed_answers_are_200_or_500_without_retry_headers() {
    for (answer, status, body) in [
        (
            Answer::DUPLICATE,
            StatusCode::OK,
            r#"{"status":"duplicate"}"#,
        ),
        (Answer::ACCEPTED, StatusCode::OK, r#"{"status":"accepted"}"#),
        (
            Answer::QUARANTINED,
            StatusCode::OK,
            r#"{"status":"quarantined"}"#,
        ),
        (
            Answer::HANDLER_PANICKED,
            StatusCode::INTERNAL_SERVER_ERROR,
            r#"{"error":"handler failed"}"#,
        ),
    ] {
        assert_eq!(answer.status(), status, "{body}");
        assert_eq!(answer.body(), body);
        assert_eq!(answer.retry_after_secs(), None, "{body}");
        assert_eq!(answer.allow(), None, "{body}");
        assert!(!answer.closes_connection(), "{body}");
    }
}

#[test]
fn a_route_without_a_receiver_answers_500_misconfigured() {
    assert_eq!(MissingReceiver.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let answer = Answer::from(MissingReceiver);
    assert_eq!(answer.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(
        answer.body(),
        r#"{"error":"webhook receiver misconfigured"}"#
    );
    assert_eq!(answer.retry_after_secs(), None);
    assert_eq!(answer.allow(), None);
    assert!(!answer.closes_connection());
}

// --- src/receiver/body.rs: the body limit's edges, read and decoded, over HTTP ---

/// A receiver like the e2e one, with the body limit set to `limit` bytes.
fn receiver_limited_to(limit: usize) -> Receiver {
    Receiver::builder(test_verifier())
        .deduplicator(Deduplicator::in_memory())
        .clock(Arc::new(ManualClock::new(test_now())))
        .body_limit(BodyLimit::bytes(limit))
        .build()
        .unwrap()
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

async fn post_gzip(url: &str, delivery: &Delivery) -> u16 {
    reqwest::Client::new()
        .post(url)
        .timeout(ANSWER_TIMEOUT)
        .header("x-webhook-signature", delivery.signature_value())
        .header("content-encoding", "gzip")
        .body(gzip(delivery.body()))
        .send()
        .await
        .expect("the server answers")
        .status()
        .as_u16()
}

/// The limit is inclusive: a body of exactly `limit` bytes is read and handled, one of
/// `limit + 1` is 413 before the handler runs.
async fn a_body_exactly_at_the_limit_is_handled_and_one_byte_more_is_413<F: Framework>() {
    let delivery = message(Dialect::Help, "at-the-limit-1");
    let size = delivery.body().len();

    let at_limit = start::<F>(receiver_limited_to(size)).await;
    assert_eq!(post(&at_limit.url(), &delivery).await.0, 200);
    assert_eq!(at_limit.recorder.handled().len(), 1);

    let over = start::<F>(receiver_limited_to(size - 1)).await;
    assert_eq!(post(&over.url(), &delivery).await.0, 413);
    assert!(over.recorder.handled().is_empty());
}

/// The same edge for the decoded body: a gzip body that decodes to exactly `limit` bytes is
/// handled with those bytes, one that decodes to `limit + 1` is 413 (not cut to the limit,
/// which would then fail its signature).
async fn a_body_decoding_to_exactly_the_limit_is_handled_and_one_byte_more_is_413<F: Framework>() {
    let delivery = message(Dialect::Help, "decoded-at-the-limit-1");
    let size = delivery.body().len();
    assert!(
        gzip(delivery.body()).len() < size,
        "the test needs a compressible body"
    );

    let at_limit = start::<F>(receiver_limited_to(size)).await;
    assert_eq!(post_gzip(&at_limit.url(), &delivery).await, 200);
    assert_eq!(at_limit.recorder.handled()[0].body, delivery.body());

    let over = start::<F>(receiver_limited_to(size - 1)).await;
    assert_eq!(post_gzip(&over.url(), &delivery).await, 413);
    assert!(over.recorder.handled().is_empty());
}

#[test]
fn the_default_body_limit_is_one_mebibyte() {
    let receiver = Receiver::new(test_verifier());
    assert_eq!(receiver.body_limit(), BodyLimit::DEFAULT);
    assert_eq!(BodyLimit::DEFAULT.get(), 1_048_576);
    assert_eq!(BodyLimit::default(), BodyLimit::DEFAULT);
}

macro_rules! body_cases {
    ($module:ident, $framework:ty) => {
        mod $module {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_body_exactly_at_the_limit_is_handled_and_one_byte_more_is_413() {
                super::a_body_exactly_at_the_limit_is_handled_and_one_byte_more_is_413::<
                            $framework,
                        >()
                        .await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_body_decoding_to_exactly_the_limit_is_handled_and_one_byte_more_is_413() {
                super::a_body_decoding_to_exactly_the_limit_is_handled_and_one_byte_more_is_413::<
                    $framework,
                >()
                .await;
            }
        }
    };
}

body_cases!(on_axum, crate::axum::Axum);
body_cases!(on_actix, crate::actix::Actix);
