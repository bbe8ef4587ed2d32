//! The axum integration: the shared end-to-end table, plus what only axum has.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use aisoule_webhooks::axum::{WebhookDelivery, WebhookLayer};
use aisoule_webhooks::event::{Dialect, EventKind};
use aisoule_webhooks::test_util::{Delivery, SignatureForm, SignatureHeader, TEST_SECRET};
use aisoule_webhooks::{ConfigError, Deduplicator, Receiver, VerifiedEvent};
use axum::Router;
use axum::extract::{FromRef, State};
use axum::http::StatusCode;
use axum::routing::post;
use bytes::Bytes;
use tokio::io::{AsyncBufReadExt, BufReader};
use tower::ServiceExt;
use tower::util::MapFutureLayer;
use tracing::instrument::WithSubscriber;

use crate::e2e::{
    self, Framework, Recorder, Route, StartFuture, e2e_cases, message, test_receiver,
};
use crate::support::CapturedLogs;

pub(crate) struct Axum;

/// The e2e table's receiver: `receiver`'s layer on the webhook route, around `recorder`.
pub(crate) fn recorded_app(receiver: Receiver, recorder: Recorder) -> Router {
    Router::new()
        .route(
            "/webhook",
            post(
                |State(recorder): State<Recorder>, event: VerifiedEvent, body: Bytes| async move {
                    StatusCode::from_u16(recorder.handle(&event, body).await).unwrap()
                },
            )
            .layer(WebhookLayer::new(receiver)),
        )
        .with_state(recorder)
}

/// The state of the routes whose handler takes [`WebhookDelivery`].
#[derive(Clone)]
struct DeliveryState {
    receiver: Receiver,
    recorder: Recorder,
    commit: bool,
}

impl FromRef<DeliveryState> for Receiver {
    fn from_ref(state: &DeliveryState) -> Self {
        state.receiver.clone()
    }
}

/// The e2e table's `WebhookDelivery` handler: commits when it answers 200, if told to.
async fn delivered(State(state): State<DeliveryState>, delivery: WebhookDelivery) -> StatusCode {
    let body = delivery.event.raw().clone();
    let status = state.recorder.handle(&delivery.event, body).await;
    if status == 200 && state.commit {
        delivery.commit().await;
    }
    StatusCode::from_u16(status).unwrap()
}

impl Framework for Axum {
    fn start_route(
        receiver: Receiver,
        recorder: Recorder,
        route: Route,
        logs: CapturedLogs,
    ) -> StartFuture {
        let app = match route {
            Route::Wrapped => recorded_app(receiver, recorder),
            Route::WrappedDelivery | Route::Delivery | Route::DeliveryWithoutCommit => {
                let state = DeliveryState {
                    receiver: receiver.clone(),
                    recorder,
                    commit: route.commits(),
                };
                let handler = if route == Route::WrappedDelivery {
                    post(delivered).layer(WebhookLayer::new(receiver))
                } else {
                    post(delivered)
                };
                Router::new().route("/webhook", handler).with_state(state)
            }
        };
        let dispatch = logs.dispatch();
        let app = app.layer(MapFutureLayer::new(move |request| {
            WithSubscriber::with_subscriber(request, dispatch.clone())
        }));
        Box::pin(async move { serve(app).await })
    }
}

async fn serve(app: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

e2e_cases!(Axum);

#[tokio::test]
async fn the_layer_works_with_oneshot_and_the_extractor_without_a_layer() {
    // The layer around a plain tower service, driven in-process.
    let app = Router::new()
        .route(
            "/webhook",
            post(|event: VerifiedEvent| async move { event.received_as().to_owned() }),
        )
        .layer(WebhookLayer::new(test_receiver()));
    let delivery = message(Dialect::Developer, "oneshot-1");
    let response = app
        .clone()
        .oneshot(delivery.http_request("/webhook"))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let response = app
        .oneshot(delivery.forged().http_request("/webhook"))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);

    // A handler asking for the event on a route without the layer never runs.
    let unwired = Router::new().route(
        "/webhook",
        post(|_: VerifiedEvent| async { StatusCode::OK }),
    );
    let response = unwired
        .oneshot(delivery.http_request("/webhook"))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);

    // The standalone extractor takes its receiver from the router state.
    let standalone = Router::new()
        .route(
            "/webhook",
            post(|delivery: WebhookDelivery| async move {
                let kind = delivery.event.kind().clone();
                delivery.commit().await;
                kind.to_string()
            }),
        )
        .with_state(test_receiver());
    let ok = standalone
        .clone()
        .oneshot(delivery.http_request("/webhook"))
        .await
        .unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    let again = standalone
        .clone()
        .oneshot(delivery.http_request("/webhook"))
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::OK);
    let body = axum::body::to_bytes(again.into_body(), 1024).await.unwrap();
    assert_eq!(&body[..], br#"{"status":"duplicate"}"#);
    let forged = standalone
        .oneshot(delivery.forged().http_request("/webhook"))
        .await
        .unwrap();
    assert_eq!(forged.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_body_in_many_chunks_is_joined_in_order_and_verified() {
    // A streamed body: an empty chunk, the signed bytes in three pieces, then trailers. The
    // handler must see exactly the signed bytes, and they must verify.
    use http_body_util::StreamBody;
    use hyper::body::Frame;
    let app = Router::new()
        .route("/webhook", post(|body: Bytes| async move { body }))
        .layer(WebhookLayer::new(test_receiver()));
    let delivery = message(Dialect::Developer, "chunked-1");
    let (parts, body) = delivery.http_request("/webhook").into_parts();
    let body = axum::body::to_bytes(axum::body::Body::new(body), usize::MAX)
        .await
        .unwrap();
    let (a, rest) = body.split_at(7);
    let (b, c) = rest.split_at(rest.len() / 2);
    let mut trailers = http::HeaderMap::new();
    trailers.insert("x-trailer", http::HeaderValue::from_static("ignored"));
    let frames = [
        Frame::data(Bytes::new()),
        Frame::data(Bytes::copy_from_slice(a)),
        Frame::data(Bytes::copy_from_slice(b)),
        Frame::data(Bytes::copy_from_slice(c)),
        Frame::trailers(trailers),
    ];
    let stream = futures_util::stream::iter(frames.map(Ok::<_, std::convert::Infallible>));
    let mut parts = parts;
    parts.headers.remove(http::header::CONTENT_LENGTH);
    let request = http::Request::from_parts(parts, axum::body::Body::new(StreamBody::new(stream)));
    let response = tokio::time::timeout(Duration::from_secs(10), app.oneshot(request))
        .await
        .expect("answered")
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let seen = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    assert_eq!(seen, body);
}

#[test]
fn the_dedup_ttl_must_cover_the_replay_tolerance() {
    let short_ttl = Deduplicator::in_memory()
        .with_ttl(Duration::from_secs(600))
        .unwrap();
    let refused = Receiver::builder(aisoule_webhooks::test_util::test_verifier())
        .deduplicator(short_ttl)
        .build();
    assert_eq!(
        refused.unwrap_err(),
        ConfigError::TtlShorterThanTolerance {
            ttl_secs: 600,
            tolerance_secs: 3600
        }
    );
    assert_eq!(
        Receiver::DEFAULT_REPLAY_TOLERANCE,
        Duration::from_secs(3600)
    );
}

/// The compiled `axum_receiver` example, which `cargo test --all-features` builds.
pub(crate) fn example_binary(name: &str) -> PathBuf {
    let deps = std::env::current_exe().unwrap();
    let path = deps
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples")
        .join(name);
    assert!(
        path.is_file(),
        "{} is missing: run the tests with `cargo test --all-features`, which builds the examples",
        path.display()
    );
    path
}

/// Runs an example receiver with a current and a previous secret, sends it every documented
/// event in both dialects through both headers, and reads the JSON lines it prints. With
/// `inbox` (an `AISOULE_INBOX` value) it runs in inbox mode, where the workers print them.
pub(crate) async fn drive_example_receiver(name: &str, inbox: Option<&str>) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = tokio::process::Command::new(example_binary(name))
        .env("AISOULE_WEBHOOK_SECRET", "whsec_current_example")
        .env("AISOULE_WEBHOOK_SECRET_PREVIOUS", TEST_SECRET)
        .env("PORT", port.to_string())
        .env("AISOULE_INBOX", inbox.unwrap_or(""))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}/webhook");
    let mut ready = false;
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(ready, "{name} did not start listening");
    // The receiver wraps the webhook route only.
    let health = reqwest::get(format!("http://127.0.0.1:{port}/health"))
        .await
        .unwrap();
    assert_eq!(health.status().as_u16(), 200, "{name}: /health");
    let unknown = reqwest::get(format!("http://127.0.0.1:{port}/nope"))
        .await
        .unwrap();
    assert_eq!(unknown.status().as_u16(), 404, "{name}: an unknown path");

    let samples = Delivery::every_sample();
    for sample in &samples {
        assert_eq!(
            e2e::post(&url, sample).await.0,
            200,
            "{}",
            String::from_utf8_lossy(sample.body())
        );
    }
    let current = Delivery::sample(EventKind::MessageIncoming, Dialect::Help)
        .message_id("rotated-1")
        .secret(aisoule_webhooks::WebhookSecret::new("whsec_current_example").unwrap())
        .header(SignatureHeader::AisouleSignature)
        .form(SignatureForm::Prefixed)
        .build();
    assert_eq!(e2e::post(&url, &current).await.0, 200);
    assert_eq!(e2e::post(&url, &current.forged()).await.0, 401);

    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut printed = Vec::new();
    for _ in 0..=samples.len() {
        let line = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        printed.push(serde_json::from_str::<serde_json::Value>(&line).unwrap());
    }
    child.kill().await.unwrap();

    // Both dialects print the same canonical event name and the same E.164 sender.
    let incoming: Vec<_> = printed
        .iter()
        .filter(|l| l["event"] == "message.incoming")
        .collect();
    assert_eq!(incoming.len(), 9);
    assert!(
        incoming
            .iter()
            .any(|l| l["received_as"] == "message.received")
    );
    assert!(
        incoming
            .iter()
            .any(|l| l["received_as"] == "message.incoming")
    );
    for line in &incoming {
        assert!(line["from"].as_str().unwrap().starts_with('+'), "{line}");
        assert!(
            line["text"].is_string() && line["message_id"].is_string(),
            "{line}"
        );
    }
    let developer = incoming
        .iter()
        .find(|l| l["received_as"] == "message.received")
        .unwrap();
    assert_eq!(developer["from"], "+918856879188");
    assert_eq!(developer["text"], "Hi there! I need pricing info.");
    let stamped = printed
        .iter()
        .filter(|l| l["timestamp"].is_string())
        .count();
    // Message events carry one in both dialects (5 kinds × 8 variants), other events only in the
    // developer dialect (4 kinds × 4 variants), plus the rotated message.
    assert_eq!(stamped, 5 * 8 + 4 * 4 + 1);
    assert_eq!(
        printed.iter().filter(|l| l["secret"] == "previous").count(),
        samples.len()
    );
    // Inbox workers run concurrently, so the rotated message need not print last.
    let rotated: Vec<_> = printed
        .iter()
        .filter(|l| l["secret"] == "current")
        .collect();
    assert_eq!(rotated.len(), 1);
    assert_eq!(rotated[0]["message_id"], "rotated-1");
}

/// Starts the example `name` on a free port, with the test secret and `env`, its stdout
/// piped; returns it and its webhook URL once it listens.
#[cfg(feature = "redis")]
async fn start_example(name: &str, env: &[(&str, &str)]) -> (tokio::process::Child, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = tokio::process::Command::new(example_binary(name))
        .env("AISOULE_WEBHOOK_SECRET", TEST_SECRET)
        .env_remove("AISOULE_WEBHOOK_SECRET_PREVIOUS")
        .env_remove("AISOULE_INBOX")
        .env("PORT", port.to_string())
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return (child, format!("http://127.0.0.1:{port}/webhook"));
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{name} did not start listening");
}

/// Two replicas of the example `name`, as deployed: one Redis store between them, each
/// delivery sent to both at once, then redelivered. Every event is handled (printed) exactly
/// once across both, each concurrent pair is answered by one handler's 200 and one duplicate
/// or 409, and none is lost: the later redelivery is a duplicate on both.
#[cfg(feature = "redis")]
pub(crate) async fn two_replicas_share_one_redis(name: &str) {
    const DUPLICATE: &str = r#"{"status":"duplicate"}"#;
    let Some(redis) = crate::redis_server::RedisServer::start() else {
        return;
    };
    let redis_url = redis.url();
    let mut replicas = Vec::new();
    for _ in 0..2 {
        replicas.push(start_example(name, &[("AISOULE_REDIS_URL", &redis_url)]).await);
    }
    let urls: Vec<String> = replicas.iter().map(|(_, url)| url.clone()).collect();
    let events: Vec<Delivery> = (0..50)
        .map(|i| {
            let dialect = if i % 2 == 0 {
                Dialect::Help
            } else {
                Dialect::Developer
            };
            Delivery::sample(EventKind::MessageIncoming, dialect)
                .message_id(format!("replica-{i}"))
                .timestamp_at(std::time::SystemTime::now())
                .build()
        })
        .collect();

    let pairs = futures_util::future::join_all(events.iter().map(|event| async {
        let redelivery = event.redelivery();
        let (first, second) =
            tokio::join!(e2e::post(&urls[0], event), e2e::post(&urls[1], &redelivery));
        [first, second]
    }))
    .await;
    for (i, answers) in pairs.iter().enumerate() {
        let id = format!("replica-{i}");
        let handled = answers.iter().filter(|a| a.0 == 200 && a.1 != DUPLICATE);
        assert_eq!(handled.count(), 1, "{name} {id}: {answers:?}");
        assert!(
            answers
                .iter()
                .all(|(status, body)| *status == 200 || *status == 409 && body != DUPLICATE),
            "{name} {id}: {answers:?}"
        );
    }
    for event in &events {
        for url in &urls {
            assert_eq!(
                e2e::post(url, &event.redelivery()).await,
                (200, DUPLICATE.to_owned()),
                "{name}: a later redelivery"
            );
        }
    }

    let mut printed = std::collections::HashMap::<String, usize>::new();
    for (mut child, _) in replicas {
        let mut stdout = child.stdout.take().unwrap();
        child.kill().await.unwrap();
        let mut text = String::new();
        tokio::io::AsyncReadExt::read_to_string(&mut stdout, &mut text)
            .await
            .unwrap();
        for line in text.lines() {
            let line: serde_json::Value = serde_json::from_str(line).unwrap();
            let id = line["message_id"].as_str().unwrap().to_owned();
            *printed.entry(id).or_default() += 1;
        }
    }
    for i in 0..events.len() {
        let id = format!("replica-{i}");
        assert_eq!(
            printed.get(&id),
            Some(&1),
            "{name}: {id} printed {printed:?}"
        );
    }
    assert_eq!(printed.len(), events.len(), "{name}: {printed:?}");
}

#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_of_the_axum_example_share_one_redis() {
    two_replicas_share_one_redis("axum_receiver").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_axum_example_handles_both_dialects_and_both_headers() {
    drive_example_receiver("axum_receiver", None).await;
}

#[cfg(feature = "sqlite")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_axum_example_in_inbox_mode_prints_the_same_lines_from_its_workers() {
    let dir = tempfile::tempdir().unwrap();
    let inbox = format!("sqlite:{}", dir.path().join("inbox.db").display());
    drive_example_receiver("axum_receiver", Some(&inbox)).await;
}

/// The real-time bound on the PostgreSQL example's test (about 3 s): a store that hangs fails
/// it instead of holding the run.
#[cfg(feature = "postgres")]
const POSTGRES_EXAMPLE_BOUND: Duration = Duration::from_secs(60);

/// `AISOULE_INBOX=postgres://…`: the same contract on PostgreSQL. The only test on the shared
/// server's default schema, which the example's inbox uses.
#[cfg(feature = "postgres")]
#[test]
fn the_axum_example_in_inbox_mode_on_postgresql_prints_the_same_lines() {
    use crate::support::{two_workers, within_real_time};

    within_real_time(two_workers(), POSTGRES_EXAMPLE_BOUND, || async {
        let Some(server) = crate::postgres_server::PostgresServer::shared() else {
            return;
        };
        drive_example_receiver("axum_receiver", Some(&server.url())).await;
    });
}

#[tokio::test]
async fn the_axum_example_refuses_to_start_without_a_secret() {
    let output = tokio::process::Command::new(example_binary("axum_receiver"))
        .env_remove("AISOULE_WEBHOOK_SECRET")
        .output()
        .await
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("AISOULE_WEBHOOK_SECRET is not set"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn spans_carry_kind_id_label_and_outcome_but_never_secrets() {
    let logs = CapturedLogs::default();
    let _guard = logs.install();

    let app = Router::new()
        .route(
            "/webhook",
            post(|_: VerifiedEvent| async { StatusCode::OK }),
        )
        .layer(WebhookLayer::new(test_receiver()));
    let delivery = message(Dialect::Developer, "traced-1");
    app.clone()
        .oneshot(delivery.http_request("/webhook"))
        .await
        .unwrap();
    app.clone()
        .oneshot(delivery.http_request("/webhook"))
        .await
        .unwrap();
    app.oneshot(delivery.forged().http_request("/webhook"))
        .await
        .unwrap();

    let text = logs.text();
    for expected in [
        "aisoule_webhook{",
        r#"kind="message.incoming""#,
        r#"message_id="traced-1""#,
        r#"secret_label="test""#,
        r#"outcome="admitted""#,
        r#"outcome="duplicate""#,
        r#"outcome="signature""#,
    ] {
        assert!(text.contains(expected), "{expected} missing from:\n{text}");
    }
    let signature = delivery.signature_value();
    let digest = signature.trim_start_matches("sha256=");
    assert!(!text.contains(digest), "the signature was logged");
    assert!(
        !text.contains(delivery.forged().signature_value()),
        "the forged signature was logged"
    );
    assert!(!text.contains(TEST_SECRET), "the secret was logged");
}

/// In process: any method but POST is 405 with `Allow: POST`, under the layer and from the
/// standalone extractor (on a route that takes every method), before the body is read (a body
/// that never ends is not waited for), and the span's outcome says why.
#[tokio::test(flavor = "current_thread")]
async fn a_wrong_method_is_405_before_the_body_is_read_in_process() {
    use axum::body::Body;
    use axum::http::Method;

    let logs = CapturedLogs::default();
    let _guard = logs.install();
    let layered = Router::new().route(
        "/webhook",
        post(|_: VerifiedEvent| async { StatusCode::OK }).layer(WebhookLayer::new(test_receiver())),
    );
    let standalone = Router::new()
        .route(
            "/webhook",
            axum::routing::any(|delivery: WebhookDelivery| async move {
                delivery.commit().await;
                StatusCode::OK
            }),
        )
        .with_state(test_receiver());
    let delivery = message(Dialect::Help, "method-in-process-1");
    for app in [layered, standalone] {
        for method in [Method::GET, Method::HEAD, Method::OPTIONS, Method::PUT] {
            // The signed delivery, but a body that never ends: answered without reading it.
            let mut request =
                http::Request::new(Body::from_stream(futures_util::stream::pending::<
                    Result<Bytes, std::io::Error>,
                >()));
            *request.method_mut() = method.clone();
            *request.uri_mut() = "/webhook".parse().unwrap();
            *request.headers_mut() = delivery.headers();
            let response =
                tokio::time::timeout(Duration::from_secs(5), app.clone().oneshot(request))
                    .await
                    .expect("answered without reading the body")
                    .unwrap();
            assert_eq!(
                response.status(),
                StatusCode::METHOD_NOT_ALLOWED,
                "{method}"
            );
            assert_eq!(response.headers()["allow"], "POST", "{method}");
            assert_eq!(response.headers()["content-type"], "application/json");
            let body = axum::body::to_bytes(response.into_body(), 1024)
                .await
                .unwrap();
            // axum strips the body of an answer to HEAD.
            let expected: &[u8] = if method == Method::HEAD {
                b""
            } else {
                br#"{"error":"method not allowed"}"#
            };
            assert_eq!(&body[..], expected, "{method}");
        }
        let response = app
            .oneshot(delivery.http_request("/webhook"))
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "POST still works");
    }
    let text = logs.text();
    assert!(
        text.contains(r#"outcome="method_not_allowed""#),
        "no outcome in:\n{text}"
    );
    assert!(
        !text
            .lines()
            .any(|line| line.contains("method_not_allowed") && line.contains("WARN")),
        "a probe is not a warning:\n{text}"
    );
}

/// Under the layer, `WebhookDelivery` takes the delivery the layer admitted (one claim, not
/// two: the second used to find the first and answer 409), and its settlement is the layer's.
#[tokio::test]
async fn the_delivery_extractor_under_the_layer_has_no_settlement_of_its_own() {
    let app = Router::new()
        .route(
            "/webhook",
            post(|delivery: WebhookDelivery| async move {
                let (event, settlement) = delivery.into_parts();
                assert!(settlement.is_none(), "the layer holds the claim");
                event.message_id().unwrap_or_default().to_owned()
            })
            .layer(WebhookLayer::new(test_receiver())),
        )
        .with_state(test_receiver());
    let delivery = message(Dialect::Developer, "layered-parts-1");
    let response = app
        .clone()
        .oneshot(delivery.http_request("/webhook"))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body = axum::body::to_bytes(response.into_body(), 1024)
        .await
        .unwrap();
    assert_eq!(&body[..], b"layered-parts-1");
    let again = app
        .oneshot(delivery.redelivery().http_request("/webhook"))
        .await
        .unwrap();
    let body = axum::body::to_bytes(again.into_body(), 1024).await.unwrap();
    assert_eq!(&body[..], br#"{"status":"duplicate"}"#);
}

/// One clock for the receiver: the replay window and the default in-memory store's TTL both
/// follow the receiver's clock, so a test on paused time sees a completed key expire.
#[tokio::test(start_paused = true)]
async fn the_receivers_clock_drives_the_default_stores_ttl() {
    let clock = std::sync::Arc::new(aisoule_webhooks::clock::TokioClock::new());
    let receiver = Receiver::builder(aisoule_webhooks::test_util::test_verifier())
        .clock(clock)
        .build()
        .unwrap();
    let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let app = Router::new().route(
        "/webhook",
        post({
            let calls = calls.clone();
            move || async move {
                calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                StatusCode::OK
            }
        })
        .layer(WebhookLayer::new(receiver)),
    );
    // The help dialect's contact events carry no timestamp, so only the TTL decides.
    let contact = Delivery::sample(EventKind::ContactCreated, Dialect::Help).build();
    let send = || async {
        app.clone()
            .oneshot(contact.http_request("/webhook").map(axum::body::Body::new))
            .await
            .unwrap()
            .status()
    };
    assert_eq!(send().await, StatusCode::OK);
    assert_eq!(send().await, StatusCode::OK, "a duplicate within the TTL");
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);
    tokio::time::advance(Deduplicator::DEFAULT_TTL + Duration::from_secs(1)).await;
    assert_eq!(send().await, StatusCode::OK);
    assert_eq!(
        calls.load(std::sync::atomic::Ordering::SeqCst),
        2,
        "past the TTL on the receiver's clock, the key is forgotten"
    );
}
