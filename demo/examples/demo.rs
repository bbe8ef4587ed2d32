//! The crate's main job in one command: `cargo run --example demo`.
//!
//! Starts the axum receiver in-process on an ephemeral loopback port (in-memory dedup), replays
//! realistic AISoule deliveries against it, signed as the platform signs them, and prints what
//! was sent, what the receiver answered and what the handler saw. It exits 0 only if every
//! outcome is what the platform's documentation promises. No secret, no setup, no network
//! beyond loopback.
//!
//! Then the inbox act: the same receiver in inbox mode on a SQLite file in a temporary
//! directory, with a handler slower than the platform's 5 s deadline, a receiver that crashes
//! mid-handler and the one that takes over, and a dead letter replayed by hand.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use aisoule_webhooks::axum::WebhookLayer;
use aisoule_webhooks::event::{Dialect, EventKind, Payload};
use aisoule_webhooks::inbox::sqlite::SqliteStore;
use aisoule_webhooks::inbox::{Inbox, Job};
use aisoule_webhooks::test_util::{Delivery, SignatureForm, SignatureHeader, test_verifier};
use aisoule_webhooks::{BodyLimit, Receiver, VerifiedEvent};
use axum::extract::State;
use axum::http::StatusCode;
use axum::{Router, routing::post};
use tokio::sync::mpsc;

/// The docs' own payloads, verbatim: their timestamps are months old by now.
const DOCS_MESSAGE_RECEIVED: &[u8] =
    include_bytes!("../../tests/fixtures/docs/developer.message.received.json");
const DOCS_CURL_SAMPLE: &[u8] =
    include_bytes!("../../tests/fixtures/docs/developer-curl-sample.message.received.json");

const LIMIT: usize = 64 * 1024;
/// The platform retries after 10 s, 60 s and 5 min; the demo waits this long instead.
const SHORTENED_RETRY: Duration = Duration::from_millis(100);

#[derive(Clone)]
struct Handler {
    seen: mpsc::UnboundedSender<String>,
    failed_once: Arc<AtomicBool>,
}

/// What the application would do: here, report what it saw, and fail once on purpose.
async fn handle(State(handler): State<Handler>, event: VerifiedEvent) -> StatusCode {
    let _ = handler.seen.send(describe(&event));
    if event.message_id() == Some("msg_demo_retry")
        && !handler.failed_once.swap(true, Ordering::SeqCst)
    {
        return StatusCode::INTERNAL_SERVER_ERROR;
    }
    StatusCode::OK
}

fn describe(event: &VerifiedEvent) -> String {
    let mut seen = format!(
        "{} (sent as {}, secret {:?})",
        event.kind(),
        event.received_as(),
        event.secret_label()
    );
    if let Some(id) = event.message_id() {
        seen += &format!(" id={id}");
    }
    if let Some(from) = event.sender() {
        seen += &format!(" from={from}");
    }
    if let Some(text) = event.text() {
        seen += &format!(" text={text:?}");
    }
    match event.payload() {
        Payload::Status(status) => seen += &format!(" status={}", status.status.as_str()),
        Payload::Contact(contact) => {
            seen += &format!(" contact={:?}", contact.name.as_deref().unwrap_or("?"))
        }
        Payload::Campaign(campaign) => {
            seen += &format!(" read={:?}/{:?}", campaign.read, campaign.total)
        }
        Payload::Transfer(transfer) => {
            seen += &format!(
                " to_team={:?}",
                transfer.to_team_id.as_deref().unwrap_or("?")
            )
        }
        Payload::Unknown(unknown) => {
            seen += &format!(" unknown event, data kept: {}", unknown.data)
        }
        _ => {}
    }
    seen
}

/// One delivery, and what the platform's docs say must happen to it.
struct Step {
    title: String,
    delivery: Delivery,
    expected_status: u16,
    handler_called: bool,
    wait_before: Option<Duration>,
}

fn step(
    title: impl Into<String>,
    delivery: Delivery,
    expected_status: u16,
    handler_called: bool,
) -> Step {
    Step {
        title: title.into(),
        delivery,
        expected_status,
        handler_called,
        wait_before: None,
    }
}

fn header_label(delivery: &Delivery) -> String {
    let name = match delivery.header() {
        SignatureHeader::WebhookSignature => "X-Webhook-Signature",
        SignatureHeader::AisouleSignature => "X-AISoule-Signature",
    };
    let value = delivery.signature_value();
    let shown: String = value.chars().take(18).collect();
    format!("{name}: {shown}{}", if value.len() > 18 { "…" } else { "" })
}

fn steps() -> Vec<Step> {
    let kinds = [
        EventKind::MessageIncoming,
        EventKind::MessageSent,
        EventKind::MessageDelivered,
        EventKind::MessageFailed,
        EventKind::ContactCreated,
        EventKind::ContactUpdated,
        EventKind::CampaignCompleted,
        EventKind::TransferCreated,
    ];
    let mut steps = Vec::new();
    for kind in &kinds {
        for dialect in [Dialect::Help, Dialect::Developer] {
            let title = format!(
                "{kind}, {} dialect",
                if dialect == Dialect::Help {
                    "help"
                } else {
                    "developer"
                }
            );
            steps.push(step(
                title,
                Delivery::sample(kind.clone(), dialect).build(),
                200,
                true,
            ));
        }
    }
    steps.push(step(
        "message.read, help dialect",
        Delivery::sample(EventKind::MessageRead, Dialect::Help).build(),
        200,
        true,
    ));
    // The other header/form pairings, so each header is seen in both forms.
    steps.push(step(
        "message.incoming, help dialect, through X-AISoule-Signature",
        Delivery::sample(EventKind::MessageIncoming, Dialect::Help)
            .message_id("wamid.HBgLcrossed1")
            .header(SignatureHeader::AisouleSignature)
            .form(SignatureForm::Prefixed)
            .build(),
        200,
        true,
    ));
    steps.push(step(
        "message.received, developer dialect, through X-Webhook-Signature",
        Delivery::sample(EventKind::MessageIncoming, Dialect::Developer)
            .message_id("msg_crossed2")
            .header(SignatureHeader::WebhookSignature)
            .form(SignatureForm::Hex)
            .build(),
        200,
        true,
    ));
    let received = Delivery::sample(EventKind::MessageIncoming, Dialect::Developer).build();
    // Rebuilt now, its timestamp may differ by a second from the first send; a real
    // redelivery repeats the exact bytes, so reuse them.
    let first_received = steps
        .iter()
        .find(|s| s.title == "message.incoming, developer dialect")
        .map(|s| s.delivery.clone())
        .unwrap_or(received);
    steps.push(step(
        "the platform sends message.received again (redelivery)",
        first_received.redelivery(),
        200,
        false,
    ));
    steps.push(step(
        "message.read with the same message_id as the message it answers",
        Delivery::sample(EventKind::MessageRead, Dialect::Developer).build(),
        200,
        true,
    ));
    let genuine = Delivery::sample(EventKind::MessageIncoming, Dialect::Help)
        .message_id("wamid.forged")
        .build();
    steps.push(step(
        "a forged signature (signed with another secret)",
        genuine.forged(),
        401,
        false,
    ));
    steps.push(step(
        "the docs' curl sample, `sha256=MOCK_SIGNATURE`",
        Delivery::from_body(DOCS_CURL_SAMPLE).with_signature_value("sha256=MOCK_SIGNATURE"),
        401,
        false,
    ));
    steps.push(step(
        "an unknown event (order.paid)",
        Delivery::from_json(serde_json::json!({
            "event": "order.paid",
            "data": {"order_id": "ord_7", "amount": {"value": 4999, "currency": "INR"}}
        }))
        .build(),
        200,
        true,
    ));
    steps.push(step(
        "an oversized body (100 KiB, over the 64 KiB limit)",
        Delivery::sample(EventKind::MessageIncoming, Dialect::Help)
            .message_id("wamid.huge")
            .set("/data/text", "x".repeat(100 * 1024))
            .build(),
        413,
        false,
    ));
    let flaky = Delivery::sample(EventKind::MessageIncoming, Dialect::Developer)
        .message_id("msg_demo_retry")
        .build();
    steps.push(step(
        "a delivery whose handler fails (answers 500)",
        flaky.clone(),
        500,
        true,
    ));
    steps.push(Step {
        wait_before: Some(SHORTENED_RETRY),
        ..step(
            "the platform's retry of it, 10 s later (shortened to 0.1 s)",
            flaky.redelivery(),
            200,
            true,
        )
    });
    steps.push(step(
        "the docs' message.received sample verbatim: months old, so a replay",
        Delivery::from_body(DOCS_MESSAGE_RECEIVED),
        400,
        false,
    ));
    steps
}

#[tokio::main]
async fn main() -> ExitCode {
    // The typed rejection details go to the log, not to the platform: show them.
    tracing_subscriber::fmt()
        .with_max_level(tracing_subscriber::filter::LevelFilter::WARN)
        .without_time()
        .with_target(false)
        .with_writer(std::io::stdout)
        .init();

    let receiver = Receiver::builder(test_verifier())
        .body_limit(BodyLimit::bytes(LIMIT))
        .build()
        .expect("a consistent configuration");
    let (seen_tx, mut seen_rx) = mpsc::unbounded_channel();
    let handler = Handler {
        seen: seen_tx,
        failed_once: Arc::new(AtomicBool::new(false)),
    };
    let app = Router::new()
        .route("/webhook", post(handle))
        .layer(WebhookLayer::new(receiver))
        .with_state(handler);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a loopback port");
    let url = format!("http://{}/webhook", listener.local_addr().expect("bound"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    println!("AISoule webhook receiver (axum, in-memory dedup) listening on {url}\n");

    let client = reqwest::Client::new();
    let mut mismatches = 0;
    let mut processed = 0;
    let mut handler_failures = 0;
    let mut duplicates = 0;
    let mut rejected: BTreeMap<String, usize> = BTreeMap::new();
    for (n, step) in steps().into_iter().enumerate() {
        if let Some(wait) = step.wait_before {
            tokio::time::sleep(wait).await;
        }
        println!("{:>2}. {}", n + 1, step.title);
        println!(
            "    sent    {} bytes, {}",
            step.delivery.body().len(),
            header_label(&step.delivery)
        );
        let mut request = client.post(&url).body(step.delivery.body().clone());
        for (name, value) in &step.delivery.headers() {
            request = request.header(name.as_str(), value.as_bytes());
        }
        let (status, body) = match request.send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                (status, response.text().await.unwrap_or_default())
            }
            Err(e) => {
                println!("    request failed: {e}");
                mismatches += 1;
                continue;
            }
        };
        let seen = seen_rx.try_recv().ok();
        println!("    answer  {status} {body}");
        match &seen {
            Some(seen) => println!("    handler {seen}"),
            None => println!("    handler not called"),
        }
        let matched = status == step.expected_status && seen.is_some() == step.handler_called;
        if !matched {
            mismatches += 1;
            println!(
                "    MISMATCH: expected {} with the handler {}",
                step.expected_status,
                if step.handler_called {
                    "called"
                } else {
                    "not called"
                }
            );
        }
        match (status, seen.is_some()) {
            (200..=299, true) => processed += 1,
            (200, false) => duplicates += 1,
            (_, true) => handler_failures += 1,
            (_, false) => *rejected.entry(format!("{status} {body}")).or_default() += 1,
        }
        println!();
    }

    println!("summary");
    println!("  processed         {processed}");
    println!(
        "  handler failures  {handler_failures} (answered 500, so the platform retried and the retry was processed)"
    );
    println!("  duplicates        {duplicates} (answered 200, handler not called)");
    for (reason, count) in &rejected {
        println!("  rejected          {count} × {reason}");
    }
    mismatches += inbox_act(&client).await;
    if mismatches == 0 {
        println!("every outcome matched what the platform docs promise");
        ExitCode::SUCCESS
    } else {
        println!("{mismatches} outcome(s) did not match");
        ExitCode::FAILURE
    }
}

/// What the inbox act's handler does, by `message_id`: `slow` takes 6 s, `crm-down` fails
/// until the CRM is back, `crash` never finishes on the first receiver.
#[derive(Clone)]
struct InboxHandlerScript {
    seen: mpsc::UnboundedSender<String>,
    crm_back: Arc<AtomicBool>,
}

impl InboxHandlerScript {
    async fn handle(self, job: Job) -> Result<(), String> {
        let id = job.event().message_id().unwrap_or("?").to_owned();
        match id.as_str() {
            "msg_inbox_slow" => tokio::time::sleep(Duration::from_secs(6)).await,
            "msg_inbox_crash" if job.attempt() == 1 => {
                // The first receiver dies during this sleep.
                tokio::time::sleep(Duration::from_secs(3600)).await;
            }
            "msg_inbox_crm" if !self.crm_back.load(Ordering::SeqCst) => {
                return Err("the CRM answered 502 Bad Gateway".to_owned());
            }
            _ => {}
        }
        let _ = self.seen.send(format!("{id} on attempt {}", job.attempt()));
        Ok(())
    }
}

/// Serves `receiver` on a loopback port and returns its URL.
async fn serve_inbox_receiver(receiver: Receiver) -> String {
    let app = Router::new().route(
        "/webhook",
        post(|| async { StatusCode::OK }).layer(WebhookLayer::new(receiver)),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a loopback port");
    let url = format!("http://{}/webhook", listener.local_addr().expect("bound"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

async fn send(client: &reqwest::Client, url: &str, delivery: &Delivery) -> (u16, String, Duration) {
    let started = std::time::Instant::now();
    let mut request = client.post(url).body(delivery.body().clone());
    for (name, value) in &delivery.headers() {
        request = request.header(name.as_str(), value.as_bytes());
    }
    match request.send().await {
        Ok(response) => {
            let status = response.status().as_u16();
            let body = response.text().await.unwrap_or_default();
            (status, body, started.elapsed())
        }
        Err(e) => (0, e.to_string(), started.elapsed()),
    }
}

fn inbox_message(id: &str) -> Delivery {
    Delivery::sample(EventKind::MessageIncoming, Dialect::Developer)
        .message_id(id)
        .build()
}

fn open_inbox(path: &std::path::Path) -> Inbox {
    let store = SqliteStore::open(path).expect("a SQLite inbox in a temporary directory");
    Inbox::builder(store)
        // Short, so that the crash step's takeover comes soon; not shorter, because a lease is
        // renewed every third of itself through the SQLite writer, and a loaded machine's
        // `fsync` stalling that writer past the lease lets a live job be taken over.
        .lease(Duration::from_secs(3))
        .backoff(Duration::from_millis(200), Duration::from_secs(1))
        .max_attempts(3)
        .poll_interval(Duration::from_millis(50))
        .build()
        .expect("valid inbox settings")
}

/// Waits up to `within` for the handler to report, and says whether it was `expected`.
async fn expect_handled(
    seen: &mut mpsc::UnboundedReceiver<String>,
    expected: &str,
    within: Duration,
) -> usize {
    match tokio::time::timeout(within, seen.recv()).await {
        Ok(Some(line)) if line == expected => {
            println!("    handler {line}");
            0
        }
        Ok(other) => {
            println!("    MISMATCH: expected the handler to report {expected:?}, got {other:?}");
            1
        }
        Err(_) => {
            println!("    MISMATCH: the handler did not report {expected:?} within {within:?}");
            1
        }
    }
}

/// Waits up to `within` until `done` jobs are recorded as handled, and says whether they were.
async fn wait_until_done(inbox: &Inbox, done: u64, within: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if inbox.stats().await.is_ok_and(|stats| stats.done >= done) {
            return true;
        }
        if tokio::time::Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn expect(condition: bool, what: &str) -> usize {
    if condition {
        0
    } else {
        println!("    MISMATCH: {what}");
        1
    }
}

/// The inbox act; returns how many outcomes did not match.
async fn inbox_act(client: &reqwest::Client) -> usize {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("inbox.db");
    println!(
        "\ninbox mode: store, answer 200, then run the handler from a SQLite inbox ({})\n",
        path.display()
    );
    let (seen_tx, mut seen) = mpsc::unbounded_channel();
    let script = InboxHandlerScript {
        seen: seen_tx,
        crm_back: Arc::new(AtomicBool::new(false)),
    };
    let mut mismatches = 0;

    // The first receiver runs on a runtime of its own, so that dropping it stops every one of
    // its tasks at once, mid-handler, as a crash would: no shutdown code runs.
    let first = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a runtime");
    let first_inbox = open_inbox(&path);
    let (first_url, first_workers) = first
        .spawn({
            let (inbox, script) = (first_inbox.clone(), script.clone());
            async move {
                let receiver = Receiver::builder(test_verifier())
                    .inbox(inbox.clone())
                    .build()
                    .expect("a consistent configuration");
                let workers = inbox.start(move |job: Job| script.clone().handle(job));
                (serve_inbox_receiver(receiver).await, workers)
            }
        })
        .await
        .expect("the first receiver starts");

    println!(" 1. a handler slower than the platform's 5 s deadline");
    let (status, body, took) = send(client, &first_url, &inbox_message("msg_inbox_slow")).await;
    println!(
        "    answer  {status} {body} in {} ms: stored, not yet handled",
        took.as_millis()
    );
    mismatches += expect(
        status == 200 && took < Duration::from_secs(5),
        "a 200 within 5 s",
    );

    println!(" 2. a receiver that crashes in the middle of a handler");
    let (status, body, _) = send(client, &first_url, &inbox_message("msg_inbox_crash")).await;
    println!("    answer  {status} {body}");
    mismatches += expect(status == 200, "200 once stored");
    tokio::time::sleep(Duration::from_millis(300)).await;
    mismatches += expect_handled(
        &mut seen,
        "msg_inbox_slow on attempt 1",
        Duration::from_secs(10),
    )
    .await;
    // The handler reports before its worker records the job done: a crash in between would
    // run msg_inbox_slow again (at least once, as promised), which is not this step's story.
    mismatches += expect(
        wait_until_done(&first_inbox, 1, Duration::from_secs(10)).await,
        "msg_inbox_slow recorded as handled",
    );
    println!("    the receiver process dies now, with msg_inbox_crash's handler still running");
    drop(first_workers);
    first.shutdown_background();
    drop(first_inbox);

    let inbox = open_inbox(&path);
    let receiver = Receiver::builder(test_verifier())
        .inbox(inbox.clone())
        .build()
        .expect("a consistent configuration");
    let url = serve_inbox_receiver(receiver).await;
    let workers = inbox.start({
        let script = script.clone();
        move |job: Job| script.clone().handle(job)
    });
    println!(
        "    a new receiver opens the same file; once the dead one's 3 s lease ends it takes the job over"
    );
    mismatches += expect_handled(
        &mut seen,
        "msg_inbox_crash on attempt 2",
        Duration::from_secs(10),
    )
    .await;

    println!(" 3. a handler that keeps failing becomes a dead letter, kept with its last error");
    let (status, body, _) = send(client, &url, &inbox_message("msg_inbox_crm")).await;
    println!("    answer  {status} {body}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let dead = loop {
        let dead = inbox.dead_letters().await.unwrap_or_default();
        if !dead.is_empty() || tokio::time::Instant::now() > deadline {
            break dead;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    match dead.first() {
        Some(row) => println!(
            "    dead    job {} after {} attempts: {}",
            row.id,
            row.attempts,
            row.last_error.as_deref().unwrap_or("?")
        ),
        None => println!("    dead    none"),
    }
    mismatches += expect(
        dead.len() == 1 && dead[0].attempts == 3,
        "one dead letter after 3 attempts",
    );

    println!(" 4. the CRM is back: replay the dead letter");
    script.crm_back.store(true, Ordering::SeqCst);
    if let Some(row) = dead.first() {
        let replayed = inbox.replay(row.id).await.unwrap_or(false);
        println!(
            "    replay  job {}: {}",
            row.id,
            if replayed {
                "pending again"
            } else {
                "not found"
            }
        );
    }
    mismatches += expect_handled(
        &mut seen,
        "msg_inbox_crm on attempt 1",
        Duration::from_secs(10),
    )
    .await;

    let report = workers.shutdown(Duration::from_secs(5)).await;
    let stats = inbox.stats().await.unwrap_or_default();
    println!(
        "\ninbox: {} handled, {} dead, {} pending; shutdown finished {} and gave back {}",
        stats.done, stats.dead, stats.pending, report.finished, report.released
    );
    mismatches += expect(
        stats.done == 3 && stats.dead == 0 && stats.pending == 0,
        "3 handled, none left",
    );
    mismatches
}
