//! One table of end-to-end cases over real TCP sockets, run against every framework
//! integration. Each framework module supplies only a way to start a server whose handler
//! calls [`Recorder::handle`].

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aisoule_webhooks::clock::ManualClock;
use aisoule_webhooks::dedup::Deduplicator;
use aisoule_webhooks::event::{Dialect, EventKind};
use aisoule_webhooks::test_util::{Delivery, SignatureHeader, test_verifier};
use aisoule_webhooks::{BodyLimit, Receiver, VerifiedEvent};
use bytes::Bytes;

use crate::support::{CapturedLogs, DownStore, PanickingStore};

/// The instant every test delivery is stamped with, and the receivers' clock reads: tests
/// never depend on today's date.
pub(crate) fn test_now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_780_369_298)
}

pub(crate) const TEST_LIMIT: usize = 64 * 1024;

/// What one handler call saw.
#[derive(Debug, Clone)]
pub(crate) struct Handled {
    pub(crate) kind: EventKind,
    pub(crate) received_as: String,
    pub(crate) message_id: Option<String>,
    pub(crate) secret_label: String,
    pub(crate) body: Bytes,
}

/// The test handler's script, shared by every framework so their handlers behave identically.
///
/// By `message_id` prefix: `slow-` waits for [`Recorder::open_gate`]; `sleep-` sleeps for
/// [`HANDLER_SLEEP`]; `fail-once-` answers 500 on its first call; `panic-once-` panics on its
/// first call; anything else answers 200. Calls are recorded when they start, and counted
/// again when they run to their end, or as cancelled when dropped before it.
#[derive(Clone)]
pub(crate) struct Recorder {
    handled: Arc<Mutex<Vec<Handled>>>,
    attempts: Arc<Mutex<HashMap<String, u32>>>,
    completed: Arc<Mutex<Vec<String>>>,
    cancelled: Arc<Mutex<Vec<String>>>,
    gate: Arc<tokio::sync::Semaphore>,
}

/// Records a handler call as cancelled if it is dropped before it is defused.
struct CancelGuard {
    id: Option<String>,
    cancelled: Arc<Mutex<Vec<String>>>,
}

impl Drop for CancelGuard {
    fn drop(&mut self) {
        if let Some(id) = self.id.take() {
            self.cancelled.lock().unwrap().push(id);
        }
    }
}

/// The `sleep-` handler's run time: the platform's 5 s deadline and 10 s first retry, with a
/// handler of 8 s, scaled down ten times (see [`PLATFORM`]).
pub(crate) const HANDLER_SLEEP: Duration = Duration::from_millis(800);

impl Default for Recorder {
    fn default() -> Self {
        Self {
            handled: Arc::default(),
            attempts: Arc::default(),
            completed: Arc::default(),
            cancelled: Arc::default(),
            gate: Arc::new(tokio::sync::Semaphore::new(0)),
        }
    }
}

impl Recorder {
    pub(crate) async fn handle(&self, event: &VerifiedEvent, body: Bytes) -> u16 {
        let id = event.message_id().unwrap_or_default().to_owned();
        let attempt = {
            let mut attempts = self.attempts.lock().unwrap();
            let n = attempts.entry(id.clone()).or_default();
            *n += 1;
            *n
        };
        self.handled.lock().unwrap().push(Handled {
            kind: event.kind().clone(),
            received_as: event.received_as().to_owned(),
            message_id: event.message_id().map(str::to_owned),
            secret_label: event.secret_label().to_owned(),
            body,
        });
        let mut cancel_guard = CancelGuard {
            id: Some(id.clone()),
            cancelled: self.cancelled.clone(),
        };
        if id.starts_with("slow-") {
            self.gate.acquire().await.unwrap().forget();
        }
        if id.starts_with("sleep-") {
            tokio::time::sleep(HANDLER_SLEEP).await;
        }
        assert!(
            !(id.starts_with("panic-once-") && attempt == 1),
            "the test handler panics on its first call"
        );
        self.completed.lock().unwrap().push(id.clone());
        cancel_guard.id = None;
        if id.starts_with("fail-once-") && attempt == 1 {
            return 500;
        }
        200
    }

    /// The `message_id`s of the calls that ran to their end, in order.
    pub(crate) fn completed(&self) -> Vec<String> {
        self.completed.lock().unwrap().clone()
    }

    /// The `message_id`s of the calls dropped before their end (a cancelled request).
    pub(crate) fn cancelled(&self) -> Vec<String> {
        self.cancelled.lock().unwrap().clone()
    }

    pub(crate) fn open_gate(&self) {
        self.gate.add_permits(1);
    }

    pub(crate) fn handled(&self) -> Vec<Handled> {
        self.handled.lock().unwrap().clone()
    }
}

/// A running test server.
pub(crate) struct Server {
    pub(crate) addr: SocketAddr,
    pub(crate) recorder: Recorder,
    /// What the requests logged from their own tasks (not from a task the lifecycle spawns).
    pub(crate) logs: CapturedLogs,
}

impl Server {
    pub(crate) fn url(&self) -> String {
        format!("http://{}/webhook", self.addr)
    }
}

pub(crate) type StartFuture = Pin<Box<dyn Future<Output = SocketAddr> + Send>>;

/// How a test server's `/webhook` route takes a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Route {
    /// The layer (axum) or middleware (actix-web) around a handler taking `VerifiedEvent`.
    Wrapped,
    /// The layer or middleware around a handler taking `WebhookDelivery`, which calls
    /// `commit()` when it answers 200.
    WrappedDelivery,
    /// No layer or middleware: a handler taking `WebhookDelivery` (the receiver from the app
    /// state), which calls `commit()` when it answers 200.
    Delivery,
    /// As [`Route::Delivery`], but the handler never calls `commit()`.
    DeliveryWithoutCommit,
}

impl Route {
    /// Whether the handler calls `commit()` when it answers 200.
    pub(crate) fn commits(self) -> bool {
        self != Self::DeliveryWithoutCommit
    }
}

/// Starts a framework's test server for `receiver`, whose handler calls `recorder`.
pub(crate) trait Framework {
    /// The server with its route shaped as `route`; each request's own task logs to `logs`.
    fn start_route(
        receiver: Receiver,
        recorder: Recorder,
        route: Route,
        logs: CapturedLogs,
    ) -> StartFuture;
}

/// The server with the layer or middleware around a `VerifiedEvent` handler.
pub(crate) async fn start<F: Framework>(receiver: Receiver) -> Server {
    start_route::<F>(receiver, Route::Wrapped).await
}

pub(crate) async fn start_route<F: Framework>(receiver: Receiver, route: Route) -> Server {
    let recorder = Recorder::default();
    let logs = CapturedLogs::default();
    let addr = F::start_route(receiver, recorder.clone(), route, logs.clone()).await;
    Server {
        addr,
        recorder,
        logs,
    }
}

pub(crate) fn test_receiver() -> Receiver {
    test_receiver_with(Deduplicator::in_memory())
}

pub(crate) fn test_receiver_with(deduplicator: Deduplicator) -> Receiver {
    Receiver::builder(test_verifier())
        .deduplicator(deduplicator)
        .clock(Arc::new(ManualClock::new(test_now())))
        .body_limit(BodyLimit::bytes(TEST_LIMIT))
        .build()
        .unwrap()
}

pub(crate) fn message(dialect: Dialect, message_id: &str) -> Delivery {
    Delivery::sample(EventKind::MessageIncoming, dialect)
        .message_id(message_id)
        .timestamp_at(test_now())
        .build()
}

pub(crate) async fn post(url: &str, delivery: &Delivery) -> (u16, String) {
    post_with(url, delivery, "application/json").await
}

/// Every test request gets an answer within this, or fails: a renewal or settlement
/// regression that leaves a request hanging must fail CI, not hold it.
pub(crate) const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

pub(crate) async fn post_with(url: &str, delivery: &Delivery, content_type: &str) -> (u16, String) {
    let mut request = reqwest::Client::new()
        .post(url)
        .timeout(ANSWER_TIMEOUT)
        .header("content-type", content_type)
        .body(delivery.body().clone());
    for (name, value) in delivery
        .headers()
        .iter()
        .filter(|(n, _)| *n != http::header::CONTENT_TYPE)
    {
        request = request.header(name.as_str(), value.as_bytes());
    }
    let response = request.send().await.expect("the server answers");
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

/// Streams 16 KiB chunks (up to 32 MiB) with `Transfer-Encoding: chunked`, checking for an
/// answer between chunks, and returns the status and how many chunks were sent before it.
/// A raw socket, because an HTTP client that is still writing when the server answers and
/// closes reports the broken pipe instead of the answer.
async fn post_endless_chunks(addr: SocketAddr, signature: &str) -> (u16, usize) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /webhook HTTP/1.1\r\nhost: {addr}\r\nx-webhook-signature: {signature}\r\n\
         content-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let chunk = format!("4000\r\n{}\r\n", " ".repeat(16 * 1024));
    let mut answer = Vec::new();
    for sent in 0..2_000 {
        let mut buf = [0u8; 1024];
        if let Ok(read) =
            tokio::time::timeout(Duration::from_millis(2), stream.read(&mut buf)).await
        {
            answer.extend_from_slice(&buf[..read.unwrap_or(0)]);
            let text = String::from_utf8_lossy(&answer);
            let status = text
                .split(' ')
                .nth(1)
                .and_then(|s| s.parse().ok())
                .expect("a status line");
            return (status, sent);
        }
        if stream.write_all(chunk.as_bytes()).await.is_err() {
            break;
        }
    }
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut rest)).await;
    answer.extend_from_slice(&rest);
    let text = String::from_utf8_lossy(&answer);
    (
        text.split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0),
        2_000,
    )
}

pub(crate) async fn valid_delivery_reaches_the_handler_typed<F: Framework>() {
    let server = start::<F>(test_receiver()).await;
    for (dialect, header) in [
        (Dialect::Help, SignatureHeader::WebhookSignature),
        (Dialect::Developer, SignatureHeader::AisouleSignature),
    ] {
        let delivery = Delivery::sample(EventKind::MessageIncoming, dialect)
            .message_id(format!("valid-{dialect:?}"))
            .timestamp_at(test_now())
            .header(header)
            .build();
        assert_eq!(post(&server.url(), &delivery).await.0, 200);
    }
    let handled = server.recorder.handled();
    assert_eq!(handled.len(), 2);
    assert!(
        handled
            .iter()
            .all(|h| h.kind == EventKind::MessageIncoming && h.secret_label == "test")
    );
    assert_eq!(handled[0].received_as, "message.incoming");
    assert_eq!(handled[1].received_as, "message.received");
    assert_eq!(handled[1].message_id.as_deref(), Some("valid-Developer"));
}

pub(crate) async fn every_signature_failure_is_one_identical_401<F: Framework>() {
    let server = start::<F>(test_receiver()).await;
    let good = message(Dialect::Developer, "sig-1");
    let unsigned = Delivery::from_body(good.body().clone());
    let failures = [
        good.forged(),
        good.with_signature_value("sha256=MOCK_SIGNATURE"),
        good.with_signature_value("sha1=2fd4e1c67a2d28fced849ee1bb76e7391b93eb12"),
        good.with_signature_value(&good.signature_value()[..20]),
        good.with_signature_value("sha256="),
        good.with_signature_value("not hex at all, not even close"),
    ];
    let mut bodies = Vec::new();
    for delivery in &failures {
        let (status, body) = post(&server.url(), delivery).await;
        assert_eq!(status, 401, "{:?}", delivery.signature_value());
        bodies.push(body);
    }
    // No signature header at all.
    let missing = reqwest::Client::new()
        .post(server.url())
        .body(unsigned.body().clone())
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status().as_u16(), 401);
    bodies.push(missing.text().await.unwrap());
    // Two headers that disagree.
    let ambiguous = reqwest::Client::new()
        .post(server.url())
        .header("x-webhook-signature", good.forged().signature_value())
        .header("x-aisoule-signature", good.signature_value())
        .body(good.body().clone())
        .send()
        .await
        .unwrap();
    assert_eq!(ambiguous.status().as_u16(), 401);
    bodies.push(ambiguous.text().await.unwrap());

    assert!(bodies.windows(2).all(|w| w[0] == w[1]), "{bodies:?}");
    assert_eq!(bodies[0], r#"{"error":"invalid signature"}"#);
    assert!(
        server.recorder.handled().is_empty(),
        "the handler never runs for a failed verification"
    );
}

pub(crate) async fn oversized_bodies_are_413_by_length_and_by_stream<F: Framework>() {
    let server = start::<F>(test_receiver()).await;
    let big = Delivery::sample(EventKind::MessageIncoming, Dialect::Help)
        .set("/data/text", "x".repeat(TEST_LIMIT))
        .timestamp_at(test_now())
        .build();
    assert_eq!(post(&server.url(), &big).await.0, 413);

    // A chunked body with no Content-Length that keeps growing: the server must answer 413
    // as soon as it passes the limit, long before the client has sent it all.
    let (status, chunks_sent) = post_endless_chunks(server.addr, big.signature_value()).await;
    assert_eq!(status, 413);
    assert!(
        chunks_sent < 100,
        "the server kept reading ({chunks_sent} chunks of 16 KiB) past the 64 KiB limit"
    );
    assert!(server.recorder.handled().is_empty());
}

/// A rejection made before the body was read to its end closes an HTTP/1.1 connection, and
/// says so: a client that pools connections sends its next delivery on a fresh one instead of
/// one the server has closed. Once, this lost the demo's next delivery about one run in five.
pub(crate) async fn an_answer_that_leaves_the_body_unread_closes_the_connection<F: Framework>() {
    let server = start::<F>(test_receiver()).await;
    // One client for every request, so that its pool would reuse a connection left open.
    let client = reqwest::Client::new();
    let send = |delivery: &Delivery, method: &str| {
        let mut request = client
            .request(
                reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
                server.url(),
            )
            .timeout(ANSWER_TIMEOUT)
            .body(delivery.body().clone());
        for (name, value) in &delivery.headers() {
            request = request.header(name.as_str(), value.as_bytes());
        }
        request.send()
    };
    let connection = |response: &reqwest::Response| {
        response
            .headers()
            .get("connection")
            .map(|value| value.to_str().unwrap().to_ascii_lowercase())
    };
    for round in 0..20 {
        let big = Delivery::sample(EventKind::MessageIncoming, Dialect::Help)
            .message_id(format!("big-{round}"))
            .set("/data/text", "x".repeat(4 * TEST_LIMIT))
            .timestamp_at(test_now())
            .build();
        let too_large = send(&big, "POST").await.expect("413 is an answer");
        assert_eq!(too_large.status().as_u16(), 413);
        assert_eq!(connection(&too_large).as_deref(), Some("close"), "413");

        let wrong_method = send(&big, "PUT").await.expect("405 is an answer");
        assert_eq!(wrong_method.status().as_u16(), 405);
        assert_eq!(connection(&wrong_method).as_deref(), Some("close"), "405");

        // Read to its end: the connection stays open for the next delivery.
        let forged = send(&message(Dialect::Help, "forged").forged(), "POST")
            .await
            .expect("401 is an answer");
        assert_eq!(forged.status().as_u16(), 401);
        assert_eq!(connection(&forged), None, "401 keeps the connection");

        let id = format!("after-big-{round}");
        let next = send(&message(Dialect::Help, &id), "POST")
            .await
            .unwrap_or_else(|error| panic!("round {round}: the next delivery failed: {error}"));
        assert_eq!(next.status().as_u16(), 200, "round {round}");
    }
    assert_eq!(server.recorder.handled().len(), 20);
}

pub(crate) async fn non_json_is_400_and_unknown_events_reach_the_handler<F: Framework>() {
    let server = start::<F>(test_receiver()).await;
    assert_eq!(
        post(&server.url(), &Delivery::from_body("this is not json"))
            .await
            .0,
        400
    );
    assert_eq!(
        post(&server.url(), &Delivery::from_body(&b"\xff\xfe"[..]))
            .await
            .0,
        400
    );
    let unknown = Delivery::from_json(serde_json::json!({
        "event": "order.paid", "timestamp": 1_780_369_298, "data": {"order_id": "o1"}
    }))
    .build();
    assert_eq!(post(&server.url(), &unknown).await.0, 200);
    let handled = server.recorder.handled();
    assert_eq!(handled.len(), 1);
    assert_eq!(handled[0].kind, EventKind::Unknown("order.paid".into()));
}

pub(crate) async fn duplicates_are_200_without_the_handler<F: Framework>() {
    let server = start::<F>(test_receiver()).await;
    let delivery = message(Dialect::Developer, "dup-1");
    assert_eq!(post(&server.url(), &delivery).await.0, 200);
    let (status, body) = post(&server.url(), &delivery.redelivery()).await;
    assert_eq!((status, body.as_str()), (200, r#"{"status":"duplicate"}"#));
    // The read receipt shares the message's id, and is still its own event.
    let read = Delivery::sample(EventKind::MessageRead, Dialect::Developer)
        .message_id("dup-1")
        .timestamp_at(test_now())
        .build();
    assert_eq!(post(&server.url(), &read).await.0, 200);
    let kinds: Vec<_> = server
        .recorder
        .handled()
        .into_iter()
        .map(|h| h.kind)
        .collect();
    assert_eq!(kinds, [EventKind::MessageIncoming, EventKind::MessageRead]);
}

pub(crate) async fn a_concurrent_duplicate_is_409<F: Framework>() {
    let server = start::<F>(test_receiver()).await;
    let delivery = message(Dialect::Help, "slow-1");
    let url = server.url();
    let first = tokio::spawn({
        let delivery = delivery.clone();
        async move { post(&url, &delivery).await.0 }
    });
    // Wait until the first delivery is inside the handler.
    for _ in 0..500 {
        if !server.recorder.handled().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(server.recorder.handled().len(), 1);
    assert_eq!(post(&server.url(), &delivery.redelivery()).await.0, 409);
    server.recorder.open_gate();
    assert_eq!(first.await.unwrap(), 200);
    assert_eq!(post(&server.url(), &delivery.redelivery()).await.0, 200);
    assert_eq!(server.recorder.handled().len(), 1);
}

pub(crate) async fn a_failed_handler_is_retried_and_processed<F: Framework>() {
    let server = start::<F>(test_receiver()).await;
    let delivery = message(Dialect::Developer, "fail-once-1");
    assert_eq!(post(&server.url(), &delivery).await.0, 500);
    assert_eq!(
        post(&server.url(), &delivery.redelivery()).await.0,
        200,
        "the retry is processed"
    );
    assert_eq!(
        post(&server.url(), &delivery.redelivery()).await.0,
        200,
        "then it is a duplicate"
    );
    assert_eq!(server.recorder.handled().len(), 2);
}

pub(crate) async fn stale_events_are_rejected<F: Framework>() {
    let server = start::<F>(test_receiver()).await;
    let two_hours = Duration::from_secs(2 * 60 * 60);
    for at in [test_now() - two_hours, test_now() + two_hours] {
        let delivery = Delivery::sample(EventKind::MessageIncoming, Dialect::Developer)
            .message_id("stale-1")
            .timestamp_at(at)
            .build();
        let (status, body) = post(&server.url(), &delivery).await;
        assert_eq!((status, body.as_str()), (400, r#"{"error":"stale event"}"#));
    }
    // Within the tolerance, and without a timestamp, events are accepted.
    let recent = Delivery::sample(EventKind::MessageIncoming, Dialect::Developer)
        .message_id("recent-1")
        .timestamp_at(test_now() - Duration::from_secs(5 * 60))
        .build();
    assert_eq!(post(&server.url(), &recent).await.0, 200);
    let untimed = Delivery::sample(EventKind::ContactCreated, Dialect::Help).build();
    assert_eq!(post(&server.url(), &untimed).await.0, 200);
    assert_eq!(server.recorder.handled().len(), 2);
}

pub(crate) async fn text_plain_is_still_verified<F: Framework>() {
    let server = start::<F>(test_receiver()).await;
    let delivery = message(Dialect::Help, "plain-1");
    assert_eq!(
        post_with(&server.url(), &delivery.forged(), "text/plain")
            .await
            .0,
        401
    );
    assert_eq!(
        post_with(&server.url(), &delivery, "text/plain").await.0,
        200
    );
    assert_eq!(server.recorder.handled().len(), 1);
}

pub(crate) async fn store_errors_are_503_with_retry_after<F: Framework>() {
    let server = start::<F>(test_receiver_with(Deduplicator::new(DownStore))).await;
    let delivery = message(Dialect::Help, "down-1");
    let response = reqwest::Client::new()
        .post(server.url())
        .header("x-webhook-signature", delivery.signature_value())
        .body(delivery.body().clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 503);
    assert_eq!(response.headers()["retry-after"], "10");
    assert!(server.recorder.handled().is_empty());
}

pub(crate) async fn the_handler_gets_the_exact_bytes_sent<F: Framework>() {
    let server = start::<F>(test_receiver()).await;
    let body = b"{ \"event\" : \"message.read\",\n  \"data\": {\"message_id\": \"bytes-1\", \"note\": \"\\u00e9 \xe2\x80\xa8\"} }";
    let delivery = Delivery::from_body(&body[..]);
    assert_eq!(post(&server.url(), &delivery).await.0, 200);
    assert_eq!(server.recorder.handled()[0].body.as_ref(), &body[..]);
}

/// The platform's delivery rules (5 s deadline, retries after 10 s, 60 s and 5 min, only 200
/// counts), scaled down ten times so that a test over real TCP takes about a second.
pub(crate) struct PlatformSchedule {
    pub(crate) timeout: Duration,
    /// The waits before each retry, in order; a test that expects the event delivered by a
    /// given retry stops the schedule there, so that a broken receiver fails it without
    /// waiting out the later retries.
    pub(crate) retries: &'static [Duration],
}

pub(crate) const PLATFORM: PlatformSchedule = PlatformSchedule {
    timeout: Duration::from_millis(500),
    retries: &[
        Duration::from_secs(1),
        Duration::from_secs(6),
        Duration::from_secs(30),
    ],
};

/// What the platform saw of one event: every attempt's answer (`None` for a timeout), and
/// whether it counted the event delivered.
#[derive(Debug)]
pub(crate) struct Attempts {
    pub(crate) answers: Vec<Option<(u16, String)>>,
    pub(crate) delivered: bool,
}

/// Sends `delivery` as the platform does: hangs up after the deadline, retries any answer
/// but 200 on the schedule, and stops after a 200 or the last retry.
pub(crate) async fn send_like_the_platform(
    url: &str,
    delivery: &Delivery,
    schedule: &PlatformSchedule,
) -> Attempts {
    let client = reqwest::Client::builder()
        .timeout(schedule.timeout)
        .build()
        .unwrap();
    let mut answers = Vec::new();
    for wait in std::iter::once(Duration::ZERO).chain(schedule.retries.iter().copied()) {
        tokio::time::sleep(wait).await;
        let mut request = client.post(url).body(delivery.body().clone());
        for (name, value) in &delivery.headers() {
            request = request.header(name.as_str(), value.as_bytes());
        }
        let answer = match request.send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                Some((status, response.text().await.unwrap_or_default()))
            }
            Err(error) => {
                assert!(error.is_timeout(), "only timeouts are expected: {error}");
                None
            }
        };
        let delivered = matches!(&answer, Some((200, _)));
        answers.push(answer);
        if delivered {
            return Attempts {
                answers,
                delivered: true,
            };
        }
    }
    Attempts {
        answers,
        delivered: false,
    }
}

/// Waits (boundedly) until `done` holds.
pub(crate) async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..400 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("never happened: {what}");
}

pub(crate) async fn a_handler_outlives_a_sender_that_hangs_up<F: Framework>() {
    let server = start::<F>(test_receiver()).await;
    let delivery = message(Dialect::Developer, "sleep-1");
    // Up to the first retry only: the event must be delivered by then, and a receiver that
    // answers every attempt with an error fails here in about 2 s, not after the platform's
    // later retries (37 s).
    let until_the_first_retry = PlatformSchedule {
        retries: &PLATFORM.retries[..1],
        ..PLATFORM
    };
    let attempts = send_like_the_platform(&server.url(), &delivery, &until_the_first_retry).await;
    // The first attempt times out while the handler runs; the handler finishes anyway and
    // commits, so the first retry is answered as a duplicate and the platform stops.
    assert_eq!(attempts.answers.len(), 2, "{attempts:?}");
    assert_eq!(attempts.answers[0], None);
    assert_eq!(
        attempts.answers[1],
        Some((200, r#"{"status":"duplicate"}"#.to_owned()))
    );
    assert!(attempts.delivered);
    assert_eq!(server.recorder.completed(), ["sleep-1"]);
    assert_eq!(server.recorder.handled().len(), 1, "started exactly once");
}

/// A slow handler whose claim's lease runs out several times over is not started again.
async fn a_handler_longer_than_its_lease_is_not_started_twice(server: Server) {
    let delivery = message(Dialect::Help, "slow-lease-1");
    let url = server.url();
    let first = tokio::spawn({
        let delivery = delivery.clone();
        async move { post(&url, &delivery).await.0 }
    });
    let recorder = server.recorder.clone();
    eventually("the handler starts", || !recorder.handled().is_empty()).await;
    // Four leases of 250 ms: without renewal the key would be free and the retry would run.
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    assert_eq!(post(&server.url(), &delivery.redelivery()).await.0, 409);
    server.recorder.open_gate();
    assert_eq!(first.await.unwrap(), 200);
    let (status, body) = post(&server.url(), &delivery.redelivery()).await;
    assert_eq!((status, body.as_str()), (200, r#"{"status":"duplicate"}"#));
    assert_eq!(server.recorder.handled().len(), 1);
}

const SHORT_LEASE: Duration = Duration::from_millis(250);

pub(crate) async fn a_handler_longer_than_its_lease_is_not_started_twice_in_memory<F: Framework>() {
    let dedup = Deduplicator::in_memory().with_lease(SHORT_LEASE).unwrap();
    a_handler_longer_than_its_lease_is_not_started_twice(
        start::<F>(test_receiver_with(dedup)).await,
    )
    .await;
}

#[cfg(feature = "redis")]
pub(crate) async fn a_handler_longer_than_its_lease_is_not_started_twice_on_redis<F: Framework>() {
    let Some(redis) = crate::redis_server::RedisServer::start() else {
        return;
    };
    let store = aisoule_webhooks::dedup::redis::RedisStore::connect(&redis.url())
        .await
        .unwrap();
    let dedup = Deduplicator::new(store).with_lease(SHORT_LEASE).unwrap();
    a_handler_longer_than_its_lease_is_not_started_twice(
        start::<F>(test_receiver_with(dedup)).await,
    )
    .await;
}

/// A hung Redis (SIGSTOP: its socket still accepts, nothing answers) is a 503 with
/// `Retry-After` within the store's operation timeout, not a request held past the platform's
/// 5 s deadline; once the server runs again (SIGCONT) the next delivery is handled.
#[cfg(feature = "redis")]
pub(crate) async fn a_hung_redis_is_503_within_the_operation_timeout_and_recovers<F: Framework>() {
    let Some(redis) = crate::redis_server::RedisServer::start() else {
        return;
    };
    let store = aisoule_webhooks::dedup::redis::RedisStore::connect(&redis.url())
        .await
        .unwrap();
    // The margin covers a loopback request on a busy machine, not the store.
    let bound = store.operation_timeout() + Duration::from_secs(1);
    let server = start::<F>(test_receiver_with(Deduplicator::new(store))).await;
    // Loads the scripts, so that the hung request is the usual single round trip.
    assert_eq!(
        post(&server.url(), &message(Dialect::Help, "hung-0"))
            .await
            .0,
        200
    );

    redis.pause();
    let delivery = message(Dialect::Help, "hung-1");
    let request = reqwest::Client::new()
        .post(server.url())
        .header("x-webhook-signature", delivery.signature_value())
        .body(delivery.body().clone())
        .send();
    let answered = tokio::time::timeout(bound, request).await;
    redis.resume();
    let response = answered
        .unwrap_or_else(|_| panic!("no answer within {bound:?} from a hung Redis"))
        .unwrap();
    assert_eq!(response.status().as_u16(), 503);
    assert_eq!(response.headers()["retry-after"], "10");

    let (status, body) = post(&server.url(), &message(Dialect::Help, "hung-2")).await;
    assert_eq!((status, body.as_str()), (200, ""));
    let handled: Vec<_> = server
        .recorder
        .handled()
        .into_iter()
        .filter_map(|h| h.message_id)
        .collect();
    assert_eq!(handled, ["hung-0", "hung-2"]);
}

pub(crate) async fn a_panicking_handler_is_500_and_its_retry_runs<F: Framework>() {
    let server = start::<F>(test_receiver()).await;
    let delivery = message(Dialect::Help, "panic-once-1");
    let (status, body) = post(&server.url(), &delivery).await;
    assert_eq!(
        (status, body.as_str()),
        (500, r#"{"error":"handler failed"}"#)
    );
    assert_eq!(post(&server.url(), &delivery.redelivery()).await.0, 200);
    assert_eq!(server.recorder.completed(), ["panic-once-1"]);
}

/// A panic in the lifecycle outside the handler (here the store's client, mid-claim) is
/// answered as a panicking handler is, 500, and the server answers the next delivery the same
/// way: the panic is caught in the request, never in the worker.
pub(crate) async fn a_panic_outside_the_handler_is_500_and_the_server_serves_on<F: Framework>() {
    let server = start::<F>(test_receiver_with(Deduplicator::new(PanickingStore))).await;
    for id in ["store-panic-1", "store-panic-2"] {
        let (status, body) = post(&server.url(), &message(Dialect::Help, id)).await;
        assert_eq!(
            (status, body.as_str()),
            (500, r#"{"error":"handler failed"}"#),
            "{id}"
        );
    }
    assert!(server.recorder.handled().is_empty());
}

/// Loss 1 of the lifecycle issue: two different events that both send `"message_id": ""`.
pub(crate) async fn empty_message_ids_never_collide<F: Framework>() {
    let server = start::<F>(test_receiver()).await;
    for text in ["first", "second"] {
        let delivery = Delivery::sample(EventKind::MessageIncoming, Dialect::Developer)
            .message_id("")
            .set("/data/body", text)
            .timestamp_at(test_now())
            .build();
        let (status, body) = post(&server.url(), &delivery).await;
        assert_eq!(status, 200);
        assert_ne!(body, r#"{"status":"duplicate"}"#, "{text}");
    }
    assert_eq!(server.recorder.handled().len(), 2);
}

/// Loss 2: an unknown event `order:id:1` with id `x`, and `order` with id `1:id:x`.
pub(crate) async fn keys_whose_parts_contain_separators_never_collide<F: Framework>() {
    let server = start::<F>(test_receiver()).await;
    for (event, id) in [("order:id:1", "x"), ("order", "1:id:x")] {
        let delivery = Delivery::from_json(serde_json::json!({
            "event": event, "timestamp": 1_780_369_298, "data": {"message_id": id}
        }))
        .build();
        let (status, body) = post(&server.url(), &delivery).await;
        assert_eq!(status, 200);
        assert_ne!(body, r#"{"status":"duplicate"}"#, "{event}");
    }
    assert_eq!(server.recorder.handled().len(), 2);
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

async fn post_encoded(url: &str, delivery: &Delivery, encoding: &str, body: Vec<u8>) -> u16 {
    reqwest::Client::new()
        .post(url)
        .timeout(ANSWER_TIMEOUT)
        .header("x-webhook-signature", delivery.signature_value())
        .header("content-encoding", encoding)
        .body(body)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// One `Content-Encoding` policy on every framework: gzip and deflate are decoded and the
/// decoded JSON is what is verified; other encodings are 415; a corrupt stream is 400; a
/// small body that expands past the limit is 413.
pub(crate) async fn encoded_bodies_get_one_answer_on_every_framework<F: Framework>() {
    let server = start::<F>(test_receiver()).await;
    let delivery = message(Dialect::Help, "gzip-1");
    let url = server.url();
    assert_eq!(
        post_encoded(&url, &delivery, "gzip", gzip(delivery.body())).await,
        200
    );
    assert_eq!(server.recorder.handled()[0].body, delivery.body());
    let deflate = message(Dialect::Help, "deflate-1");
    let mut zlib = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut zlib, deflate.body()).unwrap();
    assert_eq!(
        post_encoded(&url, &deflate, "deflate", zlib.finish().unwrap()).await,
        200
    );
    // The same names the README promises: `x-gzip` is gzip, `identity` is no encoding.
    let x_gzip = message(Dialect::Help, "x-gzip-1");
    assert_eq!(
        post_encoded(&url, &x_gzip, "x-gzip", gzip(x_gzip.body())).await,
        200
    );
    let identity = message(Dialect::Help, "identity-1");
    assert_eq!(
        post_encoded(&url, &identity, "identity", identity.body().to_vec()).await,
        200
    );
    let other = message(Dialect::Help, "br-1");
    assert_eq!(
        post_encoded(&url, &other, "br", other.body().to_vec()).await,
        415
    );
    assert_eq!(
        post_encoded(&url, &other, "gzip, gzip", other.body().to_vec()).await,
        415
    );
    assert_eq!(
        post_encoded(&url, &other, "gzip", b"not gzip".to_vec()).await,
        400
    );
    let bomb = gzip(&vec![b' '; TEST_LIMIT * 4]);
    assert!(bomb.len() < TEST_LIMIT);
    assert_eq!(post_encoded(&url, &other, "gzip", bomb).await, 413);
    assert_eq!(server.recorder.handled().len(), 4);
}

/// Writes `delivery` as a POST over a raw socket and returns the socket without reading the
/// answer, so that the caller can hang up mid-handler by dropping it.
async fn send_without_waiting(addr: SocketAddr, delivery: &Delivery) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut head = format!(
        "POST /webhook HTTP/1.1\r\nhost: {addr}\r\ncontent-length: {}\r\n",
        delivery.body().len()
    );
    for (name, value) in &delivery.headers() {
        head.push_str(&format!("{name}: {}\r\n", value.to_str().unwrap()));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(delivery.body()).await.unwrap();
    stream
}

/// Sends `delivery` until it is not answered 409 (well within the 60 s lease), and gives the
/// last answer: a claim left stuck by an earlier attempt would be 409 every time.
async fn post_until_not_in_flight(url: &str, delivery: &Delivery) -> (u16, String) {
    let mut answer = (0, String::new());
    for _ in 0..200 {
        answer = post(url, delivery).await;
        if answer.0 != 409 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    answer
}

const DUPLICATE: &str = r#"{"status":"duplicate"}"#;

/// Any method but POST is 405 with `Allow: POST` and the JSON error, whatever it carries (a
/// valid signature included), and the handler never runs. It is answered before the body is
/// read: a declared body that never comes does not hold the answer up.
pub(crate) async fn any_method_but_post_is_405_with_allow_post<F: Framework>() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = start::<F>(test_receiver()).await;
    let delivery = message(Dialect::Help, "method-1");
    let client = reqwest::Client::new();
    for method in ["GET", "HEAD", "OPTIONS", "PUT", "PATCH", "DELETE"] {
        let mut request = client
            .request(
                reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
                server.url(),
            )
            .body(delivery.body().clone());
        for (name, value) in &delivery.headers() {
            request = request.header(name.as_str(), value.as_bytes());
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status().as_u16(), 405, "{method}");
        assert_eq!(response.headers()["allow"], "POST", "{method}");
        assert_eq!(
            response.headers()["content-type"],
            "application/json",
            "{method}"
        );
        let expected = if method == "HEAD" {
            "" // a HEAD answer has no body
        } else {
            r#"{"error":"method not allowed"}"#
        };
        assert_eq!(response.text().await.unwrap(), expected, "{method}");
    }

    let mut stream = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let head = format!(
        "GET /webhook HTTP/1.1\r\nhost: {}\r\ncontent-length: 1000\r\n\r\n",
        server.addr
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = [0u8; 12];
    tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut answer))
        .await
        .expect("answered without waiting for the declared body")
        .unwrap();
    assert_eq!(&answer, b"HTTP/1.1 405");

    assert!(server.recorder.handled().is_empty());
    assert_eq!(
        post(&server.url(), &delivery).await.0,
        200,
        "POST still works"
    );
}

/// `WebhookDelivery` under the layer or middleware reuses the delivery it admitted instead of
/// claiming it a second time (which found the layer's own claim: 409 every time); its
/// `commit()` is a no-op there, as the layer settles the claim by the handler's answer.
pub(crate) async fn the_delivery_extractor_under_the_layer_reuses_its_admission<F: Framework>() {
    let server = start_route::<F>(test_receiver(), Route::WrappedDelivery).await;
    let url = server.url();
    let delivery = message(Dialect::Developer, "wrapped-delivery-1");
    assert_eq!(post(&url, &delivery).await, (200, String::new()));
    assert_eq!(server.recorder.completed(), ["wrapped-delivery-1"]);
    assert_eq!(
        post(&url, &delivery.redelivery()).await,
        (200, DUPLICATE.to_owned())
    );
    // The layer settles by the answer: a 500 releases the claim, so the retry runs.
    let failing = message(Dialect::Help, "fail-once-wrapped-1");
    assert_eq!(post(&url, &failing).await.0, 500);
    assert_eq!(
        post(&url, &failing.redelivery()).await,
        (200, String::new())
    );
    assert_eq!(
        post(&url, &failing.redelivery()).await,
        (200, DUPLICATE.to_owned())
    );
    assert_eq!(server.recorder.handled().len(), 3);
}

/// Loss 4 over TCP: a `WebhookDelivery` handler (no layer or middleware) answers 200 but never
/// calls `commit()`. The claim is released with a warning naming the event, so the redelivery
/// runs the handler again; one that commits makes its redelivery a duplicate.
pub(crate) async fn a_forgotten_commit_releases_the_claim_and_warns_naming_the_event<
    F: Framework,
>() {
    let server = start_route::<F>(test_receiver(), Route::DeliveryWithoutCommit).await;
    let delivery = message(Dialect::Developer, "forgot-1");
    assert_eq!(post(&server.url(), &delivery).await, (200, String::new()));
    assert_eq!(
        post(&server.url(), &delivery.redelivery()).await,
        (200, String::new()),
        "released, so the redelivery runs"
    );
    assert_eq!(server.recorder.completed(), ["forgot-1", "forgot-1"]);
    let text = server.logs.text();
    let warning = text
        .lines()
        .find(|line| line.contains("dropped before it was settled"))
        .unwrap_or_else(|| panic!("no warning in:\n{text}"));
    assert!(warning.contains("WARN"), "{warning}");
    assert!(warning.contains("forgot-1"), "{warning}");
    assert!(warning.contains("message.incoming"), "{warning}");

    let committing = start_route::<F>(test_receiver(), Route::Delivery).await;
    assert_eq!(
        post(&committing.url(), &delivery).await,
        (200, String::new())
    );
    assert_eq!(
        post(&committing.url(), &delivery.redelivery()).await,
        (200, DUPLICATE.to_owned())
    );
    assert!(
        !committing
            .logs
            .text()
            .contains("dropped before it was settled")
    );
}

/// A sender that hangs up while a `WebhookDelivery` handler (no layer or middleware) runs:
/// the framework may cancel the request, and the handler with it, or let the handler finish
/// and commit. Either way the claim ends released or committed, never stuck: the retry is
/// handled again (cancelled: released, with the warning) or a duplicate (committed), and the
/// event is handled to its end exactly once.
pub(crate) async fn a_hang_up_mid_handler_on_the_extractor_path_leaves_no_claim_stuck<
    F: Framework,
>() {
    let server = start_route::<F>(test_receiver(), Route::Delivery).await;
    let delivery = message(Dialect::Help, "slow-hang-up-1");
    let stream = send_without_waiting(server.addr, &delivery).await;
    let recorder = server.recorder.clone();
    eventually("the handler starts", || !recorder.handled().is_empty()).await;
    drop(stream);
    // Gives the server time to notice the hang-up and cancel the handler, if it does (axum
    // does; actix-web lets it run).
    let mut cancelled = false;
    for _ in 0..50 {
        cancelled = !server.recorder.cancelled().is_empty();
        if cancelled {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Lets the first handler finish if it was not cancelled, or the retry's if it was.
    server.recorder.open_gate();
    let answer = post_until_not_in_flight(&server.url(), &delivery.redelivery()).await;
    if cancelled {
        assert_eq!(answer, (200, String::new()), "released: the retry runs");
        assert_eq!(server.recorder.handled().len(), 2);
    } else {
        assert_eq!(
            answer,
            (200, DUPLICATE.to_owned()),
            "committed by the first"
        );
        assert_eq!(server.recorder.handled().len(), 1);
    }
    assert_eq!(
        post(&server.url(), &delivery.redelivery()).await,
        (200, DUPLICATE.to_owned())
    );
    assert_eq!(server.recorder.completed(), ["slow-hang-up-1"]);
}

/// Generates one `#[tokio::test]` per case for a framework.
macro_rules! e2e_cases {
    ($framework:ty) => {
        e2e_cases!(@cases $framework;
            valid_delivery_reaches_the_handler_typed,
            every_signature_failure_is_one_identical_401,
            oversized_bodies_are_413_by_length_and_by_stream,
            an_answer_that_leaves_the_body_unread_closes_the_connection,
            non_json_is_400_and_unknown_events_reach_the_handler,
            duplicates_are_200_without_the_handler,
            a_concurrent_duplicate_is_409,
            a_failed_handler_is_retried_and_processed,
            stale_events_are_rejected,
            text_plain_is_still_verified,
            store_errors_are_503_with_retry_after,
            the_handler_gets_the_exact_bytes_sent,
            a_handler_outlives_a_sender_that_hangs_up,
            a_handler_longer_than_its_lease_is_not_started_twice_in_memory,
            a_panicking_handler_is_500_and_its_retry_runs,
            a_panic_outside_the_handler_is_500_and_the_server_serves_on,
            empty_message_ids_never_collide,
            keys_whose_parts_contain_separators_never_collide,
            encoded_bodies_get_one_answer_on_every_framework,
            any_method_but_post_is_405_with_allow_post,
            the_delivery_extractor_under_the_layer_reuses_its_admission,
            a_forgotten_commit_releases_the_claim_and_warns_naming_the_event,
            a_hang_up_mid_handler_on_the_extractor_path_leaves_no_claim_stuck,
        );
        #[cfg(feature = "redis")]
        e2e_cases!(@cases $framework;
            a_handler_longer_than_its_lease_is_not_started_twice_on_redis,
            a_hung_redis_is_503_within_the_operation_timeout_and_recovers,
        );
    };
    (@cases $framework:ty; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                crate::e2e::$case::<$framework>().await;
            }
        )*
    };
}
pub(crate) use e2e_cases;
