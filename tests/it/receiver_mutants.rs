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

use aisoule_webhooks::dedup::{
    ClaimToken, DedupKey, IdempotencyStore, MemoryStore, StoreClaim, StoreFuture,
};

use crate::e2e::{ANSWER_TIMEOUT, Framework, message, post, start, test_now};
use crate::support::CapturedLogs;

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
                direction: aisoule_webhooks::error::Skew::Behind,
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
                // A local name keeps the call short enough for rustfmt to format it the same
                // way twice (a long path inside a macro made it indent further on every run).
                use super::a_body_exactly_at_the_limit_is_handled_and_one_byte_more_is_413 as case;
                case::<$framework>().await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_body_decoding_to_exactly_the_limit_is_handled_and_one_byte_more_is_413() {
                super::a_body_decoding_to_exactly_the_limit_is_handled_and_one_byte_more_is_413::<
                    $framework,
                >()
                .await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_body_whose_chunked_framing_breaks_is_400_unreadable() {
                super::a_body_whose_chunked_framing_breaks_is_400_unreadable::<$framework>().await;
            }
        }
    };
}

/// A chunked body whose framing breaks off (a chunk size that is not hex) is 400 "unreadable
/// body", not 413: only a body over the limit is "too large".
async fn a_body_whose_chunked_framing_breaks_is_400_unreadable<F: Framework>() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let server = start::<F>(crate::e2e::test_receiver()).await;
    let delivery = message(Dialect::Help, "broken-chunks-1");
    let mut stream = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let head = format!(
        "POST /webhook HTTP/1.1\r\nhost: {}\r\nx-webhook-signature: {}\r\n\
         transfer-encoding: chunked\r\n\r\n10\r\n{{\"event\":\"messag\r\nzz\r\n",
        server.addr,
        delivery.signature_value()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(ANSWER_TIMEOUT, stream.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        read.is_ok(),
        "no answer within {ANSWER_TIMEOUT:?}: {answer}"
    );
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(
        answer.contains(r#"{"error":"unreadable body"}"#),
        "{answer}"
    );
    assert!(server.recorder.handled().is_empty());
}

// --- src/receiver/mod.rs: the builder's and `admit`'s inclusive edges ---

/// A TTL exactly as long as the replay tolerance covers it: a redelivery at the tolerance's
/// edge is still remembered, so the receiver builds.
#[test]
fn a_dedup_ttl_equal_to_the_replay_tolerance_is_accepted() {
    let hour = std::time::Duration::from_secs(3600);
    let ttl_of_an_hour = Deduplicator::in_memory().with_ttl(hour).unwrap();
    let receiver = Receiver::builder(test_verifier())
        .deduplicator(ttl_of_an_hour)
        .replay_tolerance(hour)
        .build()
        .expect("a TTL equal to the tolerance covers it");
    assert_eq!(receiver.replay_tolerance(), hour);
}

/// The same edge for the inbox: handled rows kept exactly as long as the tolerance.
#[cfg(feature = "sqlite")]
#[tokio::test]
async fn an_inbox_retention_equal_to_the_replay_tolerance_is_accepted() {
    use aisoule_webhooks::inbox::Inbox;
    use aisoule_webhooks::inbox::sqlite::SqliteStore;

    let hour = std::time::Duration::from_secs(3600);
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("inbox.db")).expect("a new SQLite inbox");
    let inbox = Inbox::builder(store).retention(hour).build().unwrap();
    let receiver = Receiver::builder(test_verifier())
        .inbox(inbox)
        .replay_tolerance(hour)
        .build()
        .expect("a retention equal to the tolerance covers it");
    assert!(receiver.inbox().is_some());
}

/// `Receiver::admit` takes a body the caller already read: exactly at the limit it is
/// admitted, one byte over it is refused before verification.
#[tokio::test]
async fn admit_takes_a_body_exactly_at_the_limit_and_refuses_one_byte_more() {
    let delivery = message(Dialect::Help, "admit-at-the-limit-1");
    let size = delivery.body().len();
    let admit = |receiver: Receiver| {
        let delivery = delivery.clone();
        async move {
            receiver
                .admit(
                    [delivery.signature_value().as_bytes()],
                    delivery.body().clone(),
                )
                .await
        }
    };
    let at_limit = admit(receiver_limited_to(size)).await;
    assert!(
        matches!(&at_limit, Ok(aisoule_webhooks::Admission::Fresh(_))),
        "{at_limit:?}"
    );
    let over = admit(receiver_limited_to(size - 1)).await;
    assert!(
        matches!(&over, Err(Rejection::PayloadTooLarge { limit }) if *limit == size - 1),
        "{over:?}"
    );
}

// --- src/receiver/lifecycle.rs: what a lost lease at commit says ---

/// A [`MemoryStore`] whose commits find the claim taken over, as a store does when the lease
/// ran out under a slow handler and a redelivery claimed the event.
#[derive(Debug, Default)]
struct LeaseLostAtCommit(MemoryStore);

impl IdempotencyStore for LeaseLostAtCommit {
    fn claim<'a>(
        &'a self,
        key: &'a DedupKey,
        token: ClaimToken,
        lease: std::time::Duration,
    ) -> StoreFuture<'a, StoreClaim> {
        self.0.claim(key, token, lease)
    }
    fn renew<'a>(
        &'a self,
        key: &'a DedupKey,
        token: ClaimToken,
        lease: std::time::Duration,
    ) -> StoreFuture<'a, ()> {
        self.0.renew(key, token, lease)
    }
    fn commit<'a>(
        &'a self,
        key: &'a DedupKey,
        _: ClaimToken,
        _: std::time::Duration,
    ) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            Err(DedupError::LeaseLost {
                key: key.as_str().to_owned(),
            })
        })
    }
    fn release<'a>(&'a self, key: &'a DedupKey, token: ClaimToken) -> StoreFuture<'a, ()> {
        self.0.release(key, token)
    }
    fn release_detached(&self, key: DedupKey, token: ClaimToken) {
        self.0.release_detached(key, token);
    }
}

/// A commit that finds its lease taken over warns that the event may have been handled twice
/// (not the generic "its lease will expire", which would hide a double run).
#[tokio::test(flavor = "current_thread")]
async fn a_commit_that_lost_its_lease_warns_of_a_double_run() {
    let logs = CapturedLogs::default();
    let _guard = logs.install();
    let receiver = Receiver::builder(test_verifier())
        .deduplicator(Deduplicator::new(LeaseLostAtCommit::default()))
        .clock(Arc::new(ManualClock::new(test_now())))
        .build()
        .unwrap();
    let delivery = message(Dialect::Help, "lease-lost-1");
    let settlement = fresh_settlement(&receiver, &delivery).await;
    settlement.commit().await;
    let text = logs.text();
    assert!(
        text.contains("the event may have been handled twice"),
        "{text}"
    );
    assert!(!text.contains("its lease will expire"), "{text}");
}

body_cases!(on_axum, crate::axum::Axum);
body_cases!(on_actix, crate::actix::Actix);

/// A settlement's `Debug` names the event it settles (kind and message id), so a log of a
/// pending settlement says which delivery it holds.
#[tokio::test]
async fn a_settlement_debugs_as_the_event_it_settles() {
    let receiver = Receiver::builder(test_verifier())
        .clock(Arc::new(ManualClock::new(test_now())))
        .build()
        .unwrap();
    let delivery = message(Dialect::Help, "debug-settlement-1");
    let settlement = fresh_settlement(&receiver, &delivery).await;
    let debug = format!("{settlement:?}");
    assert!(debug.starts_with("Settlement"), "{debug}");
    assert!(debug.contains("message.incoming"), "{debug}");
    assert!(debug.contains("debug-settlement-1"), "{debug}");
    settlement.commit().await;
}

/// `release()` frees the claim at once and quietly: the retry is admitted as fresh, and
/// nothing is logged as a settlement dropped unsettled (the warning kept for forgotten ones).
#[tokio::test(flavor = "current_thread")]
async fn release_frees_the_claim_without_the_forgotten_settlement_warning() {
    let logs = CapturedLogs::default();
    let _guard = logs.install();
    let receiver = Receiver::builder(test_verifier())
        .clock(Arc::new(ManualClock::new(test_now())))
        .build()
        .unwrap();
    let delivery = message(Dialect::Help, "released-1");
    let settlement = fresh_settlement(&receiver, &delivery).await;
    settlement.release().await;
    let retry = admit_once(&receiver, &delivery).await;
    assert!(
        matches!(&retry, Ok(aisoule_webhooks::Admission::Fresh(_))),
        "{retry:?}"
    );
    let text = logs.text();
    assert!(!text.contains("dropped before it was settled"), "{text}");
}

async fn admit_once(
    receiver: &Receiver,
    delivery: &Delivery,
) -> Result<aisoule_webhooks::Admission, Rejection> {
    receiver
        .admit(
            [delivery.signature_value().as_bytes()],
            delivery.body().clone(),
        )
        .await
}

/// The settlement of `delivery`, which must be admitted as fresh.
async fn fresh_settlement(
    receiver: &Receiver,
    delivery: &Delivery,
) -> aisoule_webhooks::receiver::Settlement {
    match admit_once(receiver, delivery).await {
        Ok(aisoule_webhooks::Admission::Fresh(admitted)) => admitted.into_parts().1,
        other => panic!("a fresh delivery: {other:?}"),
    }
}

// --- src/receiver/mod.rs: what the inbox does with an unreadable timestamp ---

/// In inbox mode, a delivery whose timestamp cannot be read is stored quarantined, even on a
/// receiver that accepts such timestamps inline: its freshness cannot be checked, so it waits
/// for a person ([`aisoule_webhooks::inbox::Inbox::replay`]) instead of running.
#[cfg(feature = "sqlite")]
#[tokio::test]
async fn an_unreadable_timestamp_is_stored_quarantined_by_the_inbox() {
    use aisoule_webhooks::Admission;
    use aisoule_webhooks::event::EventKind;
    use aisoule_webhooks::inbox::sqlite::SqliteStore;
    use aisoule_webhooks::inbox::{Inbox, JobState};

    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("inbox.db")).expect("a new SQLite inbox");
    let inbox = Inbox::builder(store).build().unwrap();
    let receiver = Receiver::builder(test_verifier())
        .inbox(inbox.clone())
        .build()
        .unwrap();
    let unreadable = Delivery::sample(EventKind::MessageIncoming, Dialect::Help)
        .message_id("inbox-yesterday-1")
        .set("/timestamp", "yesterday")
        .build();
    let admission = tokio::time::timeout(ANSWER_TIMEOUT, admit_once(&receiver, &unreadable))
        .await
        .expect("the inbox answers in time");
    assert!(
        matches!(&admission, Ok(Admission::Quarantined(_))),
        "{admission:?}"
    );
    let quarantined = tokio::time::timeout(ANSWER_TIMEOUT, inbox.quarantined())
        .await
        .expect("the inbox answers in time")
        .unwrap();
    assert_eq!(quarantined.len(), 1, "{quarantined:?}");
    assert_eq!(quarantined[0].state, JobState::Quarantined);
    assert!(
        quarantined[0]
            .quarantine_reason
            .as_deref()
            .is_some_and(|reason| reason.contains("timestamp is unreadable")),
        "{quarantined:?}"
    );
}

/// An inbox that cannot store a delivery answers 503, and the failure is counted as the
/// inbox's store error (`aisoule_webhook_store_errors_total{store="inbox"}`), the metric an
/// operator alerts on.
#[cfg(feature = "sqlite")]
#[tokio::test]
async fn an_inbox_that_cannot_store_counts_an_inbox_store_error() {
    use aisoule_webhooks::event::EventKind;
    use aisoule_webhooks::inbox::Inbox;
    use aisoule_webhooks::inbox::sqlite::SqliteStore;
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("inbox.db");
    let store = SqliteStore::open(&path).expect("a new SQLite inbox");
    // Another connection makes every insert fail, as a full disk or a broken schema would.
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute_batch(
            "CREATE TRIGGER refuse BEFORE INSERT ON aisoule_inbox \
             BEGIN SELECT RAISE(ABORT, 'refused'); END;",
        )
        .unwrap();
    let inbox = Inbox::builder(store).build().unwrap();
    let receiver = Receiver::builder(test_verifier())
        .inbox(inbox)
        .build()
        .unwrap();
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _local = metrics::set_default_local_recorder(&recorder);
    let delivery = Delivery::sample(EventKind::MessageIncoming, Dialect::Help).build();
    let admission = tokio::time::timeout(ANSWER_TIMEOUT, admit_once(&receiver, &delivery))
        .await
        .expect("the inbox answers in time");
    let rejection = admission.expect_err("an insert that fails is not admitted");
    assert_eq!(
        aisoule_webhooks::Answer::from(&rejection).status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
    let inbox_errors: u64 = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .filter(|(key, ..)| {
            key.key().name() == "aisoule_webhook_store_errors_total"
                && key
                    .key()
                    .labels()
                    .any(|label| label.key() == "store" && label.value() == "inbox")
        })
        .map(|(.., value)| match value {
            DebugValue::Counter(count) => count,
            other => panic!("not a counter: {other:?}"),
        })
        .sum();
    assert_eq!(inbox_errors, 1);
}
