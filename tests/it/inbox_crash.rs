//! A receiver process in inbox mode is killed with SIGKILL in the middle of its handlers,
//! several times, and restarted: every delivery it answered 200 is handled afterwards.
//!
//! The receiver is this test binary itself, re-run as a child on [`crash_child`] (an ignored
//! test, so it never runs on its own), serving real TCP with a handler slow enough to be
//! killed mid-run. What it handled is appended and synced to a file, which outlives it.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use aisoule_webhooks::Receiver;
use aisoule_webhooks::axum::WebhookLayer;
use aisoule_webhooks::inbox::{Inbox, InboxStore, Job};
use aisoule_webhooks::test_util::test_verifier;
use axum::Router;
use axum::routing::post;

use crate::e2e;
use crate::inbox::message;
use crate::support::{two_workers, within_real_time};

/// The real-time bound on each crash test (they take a few seconds, and wait at most 60 s for
/// the handled log): a receiver that never answers fails the test instead of holding the run.
const TEST_BOUND: Duration = Duration::from_secs(100);

const CHILD_INBOX: &str = "AISOULE_CRASH_CHILD_INBOX";
const CHILD_LOG: &str = "AISOULE_CRASH_CHILD_LOG";
const CHILD_PORT: &str = "AISOULE_CRASH_CHILD_PORT";
const CHILD_SCHEMA: &str = "AISOULE_CRASH_CHILD_SCHEMA";
const CHILD_HANDLER_MS: &str = "AISOULE_CRASH_CHILD_HANDLER_MS";

/// Appends `label attempt` to the log and syncs it: the handler's one side effect, which
/// outlives the process.
fn log_handled(
    log: &str,
    event: &aisoule_webhooks::VerifiedEvent,
    attempt: u32,
) -> std::io::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)?;
    let label = aisoule_webhooks::test_util::simulator::label_of(event);
    file.write_all(format!("{label} {attempt}\n").as_bytes())?;
    file.sync_data()
}

/// The child process: a receiver on the store `AISOULE_CRASH_CHILD_INBOX` names, whose handler
/// takes `AISOULE_CRASH_CHILD_HANDLER_MS` (100 ms by default) and then logs the event. In inbox
/// mode for `sqlite:PATH` and `postgres://…`; inline for `memory` and `redis://…`, with a
/// 600 ms lease (the default 60 s scaled down like the loss matrix's platform).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the crash test's child process; run by the crash test, not on its own"]
async fn crash_child() {
    let spec = std::env::var(CHILD_INBOX).expect("run by the crash test");
    let log = std::env::var(CHILD_LOG).expect("run by the crash test");
    let port: u16 = std::env::var(CHILD_PORT).unwrap().parse().unwrap();
    let handler_time = Duration::from_millis(
        std::env::var(CHILD_HANDLER_MS).map_or(100, |ms| ms.parse().unwrap()),
    );
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    if spec == "memory" || spec.starts_with("redis://") {
        return serve_inline(&spec, log, handler_time, listener).await;
    }
    let store = open_store(&spec).await;
    let inbox = Inbox::builder_from_arc(store)
        // Short, so the parent's test takes over a killed child's jobs quickly.
        .lease(Duration::from_secs(1))
        .poll_interval(Duration::from_millis(50))
        .backoff(Duration::from_millis(50), Duration::from_secs(1))
        .build()
        .unwrap();
    let receiver = Receiver::builder(test_verifier())
        .inbox(inbox.clone())
        .build()
        .unwrap();
    let _workers = inbox.start(move |job: Job| {
        let log = log.clone();
        async move {
            tokio::time::sleep(handler_time).await;
            log_handled(&log, job.event(), job.attempt())
        }
    });
    let app = Router::new().route(
        "/webhook",
        post(|| async { axum::http::StatusCode::OK }).layer(WebhookLayer::new(receiver)),
    );
    axum::serve(listener, app).await.unwrap();
}

/// The inline receiver of [`crash_child`].
async fn serve_inline(
    spec: &str,
    log: String,
    handler_time: Duration,
    listener: tokio::net::TcpListener,
) {
    let lease = Duration::from_millis(600);
    let deduplicator = if spec == "memory" {
        aisoule_webhooks::Deduplicator::in_memory()
    } else {
        redis_deduplicator(spec).await
    };
    let receiver = Receiver::builder(test_verifier())
        .deduplicator(deduplicator.with_lease(lease).unwrap())
        .build()
        .unwrap();
    let app = Router::new().route(
        "/webhook",
        post(move |event: aisoule_webhooks::VerifiedEvent| async move {
            tokio::time::sleep(handler_time).await;
            match log_handled(&log, &event, 1) {
                Ok(()) => axum::http::StatusCode::OK,
                Err(_) => axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            }
        })
        .layer(WebhookLayer::new(receiver)),
    );
    axum::serve(listener, app).await.unwrap();
}

#[cfg(feature = "redis")]
async fn redis_deduplicator(url: &str) -> aisoule_webhooks::Deduplicator {
    let store = aisoule_webhooks::dedup::redis::RedisStore::connect(url)
        .await
        .unwrap();
    aisoule_webhooks::Deduplicator::new(store)
        .with_namespace(std::env::var(CHILD_SCHEMA).unwrap_or_else(|_| "crash".to_owned()))
        .unwrap()
}

#[cfg(not(feature = "redis"))]
async fn redis_deduplicator(url: &str) -> aisoule_webhooks::Deduplicator {
    panic!("{url}: this build has no Redis store")
}

async fn open_store(spec: &str) -> Arc<dyn InboxStore> {
    if let Some(path) = spec.strip_prefix("sqlite:") {
        return Arc::new(aisoule_webhooks::inbox::sqlite::SqliteStore::open(path).unwrap());
    }
    #[cfg(feature = "postgres")]
    if spec.starts_with("postgres://") {
        let schema = std::env::var(CHILD_SCHEMA).expect("a schema for the PostgreSQL child");
        return Arc::new(
            aisoule_webhooks::inbox::postgres::PostgresStore::builder(spec)
                .schema(schema)
                .connect()
                .await
                .unwrap(),
        );
    }
    panic!("no store for {spec}")
}

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub(crate) async fn start_child(spec: &str, log: &Path, port: u16) -> tokio::process::Child {
    start_child_with(spec, log, port, Duration::from_millis(100)).await
}

/// Starts [`crash_child`] on `port` and waits until it listens. A PostgreSQL or Redis `spec`
/// names the child's schema (or key namespace) after a `#`.
pub(crate) async fn start_child_with(
    spec: &str,
    log: &Path,
    port: u16,
    handler_time: Duration,
) -> tokio::process::Child {
    // A PostgreSQL spec names the child's schema after a `#`.
    let (spec, schema) = spec.split_once('#').unwrap_or((spec, ""));
    let child = tokio::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "inbox_crash::crash_child",
            "--ignored",
            "--test-threads=1",
        ])
        .env(CHILD_INBOX, spec)
        .env(CHILD_SCHEMA, schema)
        .env(CHILD_HANDLER_MS, handler_time.as_millis().to_string())
        .env(CHILD_LOG, log)
        .env(CHILD_PORT, port.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    for _ in 0..400 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return child;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the crash child did not start listening");
}

/// `message_id` → the attempts it was handled on, from the child's log.
pub(crate) fn handled(log: &Path) -> BTreeMap<String, Vec<u32>> {
    let mut handled: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    for line in std::fs::read_to_string(log).unwrap_or_default().lines() {
        let (id, attempt) = line.split_once(' ').expect("`id attempt`");
        handled
            .entry(id.to_owned())
            .or_default()
            .push(attempt.parse().unwrap());
    }
    handled
}

/// Kills the receiver with SIGKILL four times while its handlers run, then restarts it for
/// good: every delivery that was answered 200 is handled, and a run repeated after a crash
/// carries an attempt above 1.
pub(crate) async fn every_answered_delivery_survives_sigkill(spec: &str, dir: &Path) {
    let log = dir.join("handled.log");
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}/webhook");
    let mut answered = BTreeSet::new();
    for round in 0..4 {
        let mut child = start_child(spec, &log, port).await;
        let sends = (0..40).map(|i| {
            let url = url.clone();
            async move {
                let id = format!("crash-{round}-{i}");
                let (status, _) = e2e::post(&url, &message(&id)).await;
                (id, status)
            }
        });
        for (id, status) in futures_util::future::join_all(sends).await {
            if status == 200 {
                answered.insert(id);
            }
        }
        // 40 jobs of 100 ms on 4 workers take a second: this kill lands mid-handler.
        tokio::time::sleep(Duration::from_millis(150 + 50 * round)).await;
        child.kill().await.unwrap();
    }
    assert_eq!(
        answered.len(),
        160,
        "the receiver answered every delivery sent while up"
    );
    let mut child = start_child(spec, &log, port).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let handled = handled(&log);
        let missing: Vec<_> = answered
            .iter()
            .filter(|id| !handled.contains_key(*id))
            .collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "answered 200 but never handled: {missing:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    child.kill().await.unwrap();
    let handled = handled(&log);
    for (id, attempts) in &handled {
        if attempts.len() > 1 {
            assert!(
                attempts.iter().skip(1).all(|&a| a > 1),
                "{id} re-ran without a higher attempt: {attempts:?}"
            );
        }
    }
    assert!(
        handled.values().flatten().any(|&attempt| attempt > 1),
        "no kill landed mid-handler, so nothing was taken over: the test proved nothing"
    );
}

#[test]
fn sqlite_every_answered_delivery_survives_sigkill_mid_handler() {
    within_real_time(two_workers(), TEST_BOUND, || async {
        let dir = tempfile::tempdir().unwrap();
        let spec = format!("sqlite:{}", dir.path().join("inbox.db").display());
        every_answered_delivery_survives_sigkill(&spec, dir.path()).await;
    });
}

#[cfg(feature = "postgres")]
mod postgres {
    use super::*;
    use crate::postgres_server::{PostgresServer, unique_schema};

    /// The spec the child reads: the URL, and after `#` its own schema.
    fn spec(server: &PostgresServer) -> String {
        format!("{}#{}", server.url(), unique_schema("crash"))
    }

    #[test]
    fn postgres_every_answered_delivery_survives_sigkill_mid_handler() {
        within_real_time(two_workers(), TEST_BOUND, || async {
            let Some(server) = PostgresServer::shared() else {
                return;
            };
            let dir = tempfile::tempdir().unwrap();
            every_answered_delivery_survives_sigkill(&spec(server), dir.path()).await;
        });
    }

    /// Two receiver processes on one PostgreSQL inbox, each delivery sent to one of them and
    /// its redelivery to the other, as a load balancer would: every event is handled exactly
    /// once, on its first attempt.
    #[test]
    fn two_replicas_on_one_database_handle_each_event_once() {
        within_real_time(two_workers(), TEST_BOUND, || async {
            let Some(server) = PostgresServer::shared() else {
                return;
            };
            let dir = tempfile::tempdir().unwrap();
            let log = dir.path().join("handled.log");
            let spec = spec(server);
            let ports = [free_port(), free_port()];
            let mut replicas = Vec::new();
            for port in ports {
                replicas.push(start_child(&spec, &log, port).await);
            }
            let urls = ports.map(|port| format!("http://127.0.0.1:{port}/webhook"));
            let sends = (0..100).map(|i| {
                let urls = urls.clone();
                async move {
                    let delivery = message(&format!("replica-{i}"));
                    let first = e2e::post(&urls[i % 2], &delivery).await;
                    let again = e2e::post(&urls[(i + 1) % 2], &delivery).await;
                    (first, again)
                }
            });
            for (first, again) in futures_util::future::join_all(sends).await {
                assert_eq!(first, (200, r#"{"status":"accepted"}"#.to_owned()));
                assert_eq!(again, (200, r#"{"status":"duplicate"}"#.to_owned()));
            }
            let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
            while handled(&log).len() < 100 {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "not every event was handled"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            // Let any second run show itself before looking.
            tokio::time::sleep(Duration::from_millis(500)).await;
            for mut replica in replicas {
                replica.kill().await.unwrap();
            }
            let handled = handled(&log);
            assert_eq!(handled.len(), 100);
            for (id, attempts) in &handled {
                assert_eq!(attempts, &vec![1], "{id} ran on attempts {attempts:?}");
            }
        });
    }
}
