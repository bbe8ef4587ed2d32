//! Inbox mode end to end, in process: the axum layer stores and answers, the workers run the
//! handler. On SQLite in a temporary file, under tokio's paused time driven through
//! [`TokioClock`], so ten minutes of outage run in a moment.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use aisoule_webhooks::axum::{InboxHandler, WebhookLayer};
use aisoule_webhooks::clock::{Clock, TokioClock};
use aisoule_webhooks::event::{Dialect, EventKind};
use aisoule_webhooks::inbox::sqlite::SqliteStore;
use aisoule_webhooks::inbox::{
    ClaimedJob, Fence, Inbox, InboxBacklog, InboxBuilder, InboxFuture, InboxStats, InboxStore,
    Inserted, Job, JobFilter, JobHandler, JobId, JobRecord, JobState, NewDelivery, ShutdownReport,
    Workers,
};
use aisoule_webhooks::test_util::{Delivery, test_verifier};
use aisoule_webhooks::{ConfigError, Receiver, VerifiedEvent};
use axum::Router;
use axum::body::Body;
use axum::http::StatusCode;
use axum::routing::post;
use http_body_util::BodyExt;
use tokio::sync::oneshot;
use tower::ServiceExt;

use crate::support::on_a_paused_clock_within_real_time;

/// An inbox on a new SQLite file, on tokio's clock, with fast retries; `configure` adjusts it.
fn inbox(dir: &tempfile::TempDir, configure: impl FnOnce(InboxBuilder) -> InboxBuilder) -> Inbox {
    let store = SqliteStore::open(dir.path().join("inbox.db")).expect("a new SQLite inbox");
    let builder = Inbox::builder(store)
        .clock(Arc::new(TokioClock::new()))
        .backoff(Duration::from_secs(1), Duration::from_secs(60))
        .max_attempts(30)
        .poll_interval(Duration::from_millis(100))
        .hold_paused_clock();
    configure(builder).build().expect("valid inbox settings")
}

/// The webhook route in inbox mode: it must never call its handler.
fn app(inbox: &Inbox) -> Router {
    let receiver = Receiver::builder(test_verifier())
        .inbox(inbox.clone())
        .clock(Arc::new(TokioClock::new()))
        .build()
        .expect("valid receiver");
    Router::new().route(
        "/webhook",
        post(|| async {
            if true {
                panic!("in inbox mode the request path never runs the handler");
            }
            StatusCode::OK
        })
        .layer(WebhookLayer::new(receiver)),
    )
}

async fn send(app: &Router, delivery: &Delivery) -> (StatusCode, String) {
    let request = delivery.http_request("/webhook").map(Body::new);
    let response = app.clone().oneshot(request).await.expect("infallible");
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("a body")
        .to_bytes();
    (status, String::from_utf8(body.to_vec()).expect("UTF-8"))
}

pub(crate) fn message(id: &str) -> Delivery {
    Delivery::sample(EventKind::MessageIncoming, Dialect::Developer)
        .message_id(id)
        .build()
}

/// Successful handler runs by `message_id`, with the attempt each ran on.
#[derive(Clone, Default)]
struct Handled(Arc<Mutex<HashMap<String, Vec<u32>>>>);

impl Handled {
    fn record(&self, job: &Job) {
        let id = job.event().message_id().unwrap_or("").to_owned();
        self.0
            .lock()
            .unwrap()
            .entry(id)
            .or_default()
            .push(job.attempt());
    }
    fn runs(&self, id: &str) -> Vec<u32> {
        self.0.lock().unwrap().get(id).cloned().unwrap_or_default()
    }
    /// A handler that records each run and succeeds.
    fn succeeding(&self) -> impl JobHandler {
        let handled = self.clone();
        move |job: Job| {
            let handled = handled.clone();
            async move {
                handled.record(&job);
                Ok::<_, std::io::Error>(())
            }
        }
    }
    fn total(&self) -> usize {
        self.0.lock().unwrap().values().map(Vec::len).sum()
    }
}

/// Shuts the workers down with `deadline`, and fails the test if that has not ended within a
/// minute of (paused) time more: a regression that keeps them running fails, not hangs.
pub(crate) async fn stop(workers: Workers, deadline: Duration) -> ShutdownReport {
    tokio::time::timeout(
        deadline + Duration::from_secs(60),
        workers.shutdown(deadline),
    )
    .await
    .expect("the workers stopped in time")
}

/// Waits (in paused time) until no job is pending or running, or panics after `limit`.
async fn settle(inbox: &Inbox, limit: Duration) {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let stats = inbox.stats().await.expect("stats");
        if stats.pending == 0 && stats.running == 0 {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the inbox did not drain within {limit:?}: {stats:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[test]
fn an_outage_of_ten_minutes_loses_nothing_and_the_platform_sees_only_200s() {
    on_a_paused_clock_within_real_time(|| async {
        let dir = tempfile::tempdir().unwrap();
        let inbox = inbox(&dir, |b| b);
        let app = app(&inbox);
        let clock = TokioClock::new();
        let recovers_at = clock.now() + Duration::from_secs(10 * 60);
        let handled = Handled::default();
        let failures = Arc::new(Mutex::new(0u32));
        let workers = inbox.start({
            let handled = handled.clone();
            let failures = failures.clone();
            move |job: Job| {
                let (handled, failures) = (handled.clone(), failures.clone());
                async move {
                    if clock.now() < recovers_at {
                        *failures.lock().unwrap() += 1;
                        return Err("the bot's database is down");
                    }
                    handled.record(&job);
                    Ok(())
                }
            }
        });
        for i in 0..20 {
            let (status, body) = send(&app, &message(&format!("outage-{i}"))).await;
            assert_eq!(
                (status, body.as_str()),
                (StatusCode::OK, r#"{"status":"accepted"}"#)
            );
            tokio::time::sleep(Duration::from_secs(20)).await;
        }
        settle(&inbox, Duration::from_secs(30 * 60)).await;
        for i in 0..20 {
            let runs = handled.runs(&format!("outage-{i}"));
            assert_eq!(runs.len(), 1, "outage-{i} handled once, not {runs:?}");
            assert!(
                runs[0] > 1,
                "outage-{i} succeeded only after failing: attempt {}",
                runs[0]
            );
        }
        assert!(*failures.lock().unwrap() >= 20);
        let stats = inbox.stats().await.unwrap();
        assert_eq!((stats.done, stats.dead), (20, 0), "{stats:?}");
        let report = stop(workers, Duration::from_secs(1)).await;
        assert_eq!(report.released, 0);
    });
}

#[test]
fn an_eight_second_handler_never_costs_a_non_200_and_runs_once() {
    on_a_paused_clock_within_real_time(|| async {
        let dir = tempfile::tempdir().unwrap();
        let inbox = inbox(&dir, |b| b);
        let app = app(&inbox);
        let handled = Handled::default();
        let workers = inbox.start({
            let handled = handled.clone();
            move |job: Job| {
                let handled = handled.clone();
                async move {
                    tokio::time::sleep(Duration::from_secs(8)).await;
                    handled.record(&job);
                    Ok::<_, std::io::Error>(())
                }
            }
        });
        let delivery = message("slow-1");
        let sent = tokio::time::Instant::now();
        let (status, _) = send(&app, &delivery).await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            sent.elapsed() < Duration::from_secs(5),
            "answered within the platform's 5 s"
        );
        assert_eq!(handled.total(), 0, "answered before the handler finished");
        // The platform's redelivery while the handler runs, and after it finished.
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(
            send(&app, &delivery).await,
            (StatusCode::OK, r#"{"status":"duplicate"}"#.into())
        );
        settle(&inbox, Duration::from_secs(60)).await;
        assert_eq!(send(&app, &delivery).await.0, StatusCode::OK);
        settle(&inbox, Duration::from_secs(60)).await;
        assert_eq!(handled.runs("slow-1"), vec![1]);
        stop(workers, Duration::from_secs(1)).await;
    });
}

#[test]
fn a_stale_event_is_quarantined_listed_not_run_and_runs_once_released() {
    on_a_paused_clock_within_real_time(|| async {
        let dir = tempfile::tempdir().unwrap();
        let inbox = inbox(&dir, |b| b);
        let app = app(&inbox);
        let handled = Handled::default();
        let workers = inbox.start(handled.succeeding());
        let two_hours_ago = SystemTime::now() - Duration::from_secs(2 * 60 * 60);
        let stale = Delivery::sample(EventKind::MessageIncoming, Dialect::Developer)
            .message_id("backlog-1")
            .timestamp_at(two_hours_ago)
            .build();
        assert_eq!(
            send(&app, &stale).await,
            (StatusCode::OK, r#"{"status":"quarantined"}"#.into())
        );
        // The platform's redelivery of it is a duplicate, not a second row.
        assert_eq!(send(&app, &stale).await.1, r#"{"status":"duplicate"}"#);
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(
            handled.total(),
            0,
            "a quarantined event is not run on its own"
        );
        let quarantined = inbox.quarantined().await.unwrap();
        assert_eq!(quarantined.len(), 1);
        let row = &quarantined[0];
        assert_eq!(row.state, JobState::Quarantined);
        assert!(
            row.quarantine_reason
                .as_deref()
                .is_some_and(|r| r.contains("replay tolerance")),
            "the reason says why: {:?}",
            row.quarantine_reason
        );
        assert_eq!(row.body, *stale.body(), "the raw body is kept");
        assert!(inbox.replay(row.id).await.unwrap());
        settle(&inbox, Duration::from_secs(60)).await;
        assert_eq!(handled.runs("backlog-1"), vec![1]);
        assert!(inbox.quarantined().await.unwrap().is_empty());
        stop(workers, Duration::from_secs(1)).await;
    });
}

#[test]
fn failures_and_panics_retry_then_dead_letter_with_the_last_error_and_replay_runs_it() {
    on_a_paused_clock_within_real_time(|| async {
        let dir = tempfile::tempdir().unwrap();
        let inbox = inbox(&dir, |b| b.max_attempts(3));
        let app = app(&inbox);
        let handled = Handled::default();
        let healthy = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let workers = inbox.start({
            let (handled, healthy) = (handled.clone(), healthy.clone());
            move |job: Job| {
                let (handled, healthy) = (handled.clone(), healthy.clone());
                async move {
                    if healthy.load(std::sync::atomic::Ordering::SeqCst) {
                        handled.record(&job);
                        return Ok(());
                    }
                    if job.attempt() == 2 {
                        panic!("attempt two panics");
                    }
                    Err(std::io::Error::other(format!(
                        "attempt {} failed",
                        job.attempt()
                    )))
                }
            }
        });
        assert_eq!(send(&app, &message("dead-1")).await.0, StatusCode::OK);
        settle(&inbox, Duration::from_secs(60)).await;
        let dead = inbox.dead_letters().await.unwrap();
        assert_eq!(dead.len(), 1, "three attempts, then a dead letter");
        assert_eq!(dead[0].attempts, 3);
        assert_eq!(dead[0].last_error.as_deref(), Some("attempt 3 failed"));
        assert_eq!(handled.total(), 0);

        healthy.store(true, std::sync::atomic::Ordering::SeqCst);
        assert!(inbox.replay(dead[0].id).await.unwrap());
        settle(&inbox, Duration::from_secs(60)).await;
        assert_eq!(
            handled.runs("dead-1"),
            vec![1],
            "a replay starts a fresh set of attempts"
        );
        assert!(inbox.dead_letters().await.unwrap().is_empty());
        // A handled event can be run again on purpose.
        assert!(inbox.replay(dead[0].id).await.unwrap());
        settle(&inbox, Duration::from_secs(60)).await;
        assert_eq!(handled.runs("dead-1"), vec![1, 1]);
        stop(workers, Duration::from_secs(1)).await;
    });
}

#[test]
fn a_panic_is_recorded_with_its_message_and_a_timeout_cancels_the_attempt() {
    on_a_paused_clock_within_real_time(|| async {
        let dir = tempfile::tempdir().unwrap();
        let inbox = inbox(&dir, |b| {
            b.max_attempts(1).handler_timeout(Duration::from_secs(3))
        });
        let app = app(&inbox);
        let workers = inbox.start(|job: Job| async move {
            match job.event().message_id() {
                Some("panics") => panic!("the handler's own panic message"),
                _ => {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                    Ok::<_, std::io::Error>(())
                }
            }
        });
        send(&app, &message("panics")).await;
        send(&app, &message("hangs")).await;
        settle(&inbox, Duration::from_secs(60)).await;
        let dead = inbox.dead_letters().await.unwrap();
        let errors: Vec<_> = dead.iter().map(|r| r.last_error.clone().unwrap()).collect();
        assert_eq!(dead.len(), 2, "{errors:?}");
        assert!(
            errors[0].contains("panicked: the handler's own panic message"),
            "{errors:?}"
        );
        assert!(errors[1].contains("timed out after 3s"), "{errors:?}");
        stop(workers, Duration::from_secs(1)).await;
    });
}

#[test]
fn the_handler_written_for_inline_mode_runs_unchanged_in_the_workers() {
    on_a_paused_clock_within_real_time(|| async {
        async fn handle(event: VerifiedEvent, job: Option<Job>, body: bytes::Bytes) -> StatusCode {
            let job = job.expect("the workers pass the job");
            assert_eq!(&body, event.raw(), "the stored body is the request body");
            assert_eq!(job.attempt(), 1);
            assert!(job.idempotency_key().contains(event.message_id().unwrap()));
            if event.message_id() == Some("inline-1") {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let inbox = inbox(&dir, |b| b.max_attempts(1));
        let app = app(&inbox);
        let workers = inbox.start(InboxHandler::new(post(handle)));
        send(&app, &message("inline-1")).await;
        send(&app, &message("inline-2")).await;
        settle(&inbox, Duration::from_secs(60)).await;
        let stats = inbox.stats().await.unwrap();
        assert_eq!((stats.done, stats.dead), (1, 1), "{stats:?}");
        let dead = inbox.dead_letters().await.unwrap();
        assert_eq!(
            dead[0].last_error.as_deref(),
            Some("the handler answered 503 Service Unavailable")
        );
        stop(workers, Duration::from_secs(1)).await;
    });
}

#[test]
fn shutdown_lets_running_jobs_finish_within_the_deadline_and_gives_back_the_rest() {
    on_a_paused_clock_within_real_time(|| async {
        let dir = tempfile::tempdir().unwrap();
        let inbox = inbox(&dir, |b| b);
        let app = app(&inbox);
        let handled = Handled::default();
        let handler = {
            let handled = handled.clone();
            move |job: Job| {
                let handled = handled.clone();
                async move {
                    let secs = if job.event().message_id() == Some("quick") {
                        1
                    } else {
                        120
                    };
                    tokio::time::sleep(Duration::from_secs(secs)).await;
                    handled.record(&job);
                    Ok::<_, std::io::Error>(())
                }
            }
        };
        let workers = inbox.start(handler.clone());
        send(&app, &message("quick")).await;
        send(&app, &message("long")).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let report = stop(workers, Duration::from_secs(10)).await;
        assert_eq!((report.finished, report.released), (1, 1));
        assert_eq!(handled.runs("quick"), vec![1]);
        let stats = inbox.stats().await.unwrap();
        assert_eq!(
            (stats.done, stats.pending, stats.running),
            (1, 1, 0),
            "{stats:?}"
        );
        // The next start runs it at once, not after its lease, and the release did not count.
        let workers = inbox.start(handler);
        settle(&inbox, Duration::from_secs(200)).await;
        assert_eq!(handled.runs("long"), vec![1]);
        stop(workers, Duration::from_secs(1)).await;
    });
}

#[test]
fn jobs_of_one_conversation_run_in_order_when_asked() {
    on_a_paused_clock_within_real_time(|| async {
        let dir = tempfile::tempdir().unwrap();
        let inbox = inbox(&dir, |b| b.ordered_by_conversation().workers(8));
        let app = app(&inbox);
        let order = Arc::new(Mutex::new(Vec::new()));
        // Ten messages from one customer, each first run slower than the next.
        for i in 0..10 {
            send(&app, &message(&format!("conv-{i}"))).await;
        }
        let workers = inbox.start({
            let order = order.clone();
            move |job: Job| {
                let order = order.clone();
                async move {
                    let id = job.event().message_id().unwrap().to_owned();
                    let n: u64 = id.trim_start_matches("conv-").parse().unwrap();
                    tokio::time::sleep(Duration::from_millis(1000 - n * 100)).await;
                    order.lock().unwrap().push(id);
                    Ok::<_, std::io::Error>(())
                }
            }
        });
        settle(&inbox, Duration::from_secs(60)).await;
        let expected: Vec<String> = (0..10).map(|i| format!("conv-{i}")).collect();
        assert_eq!(*order.lock().unwrap(), expected);
        stop(workers, Duration::from_secs(1)).await;
    });
}

#[tokio::test]
async fn a_retention_shorter_than_the_replay_tolerance_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let inbox = inbox(&dir, |b| b.retention(Duration::from_secs(60)));
    let refused = Receiver::builder(test_verifier()).inbox(inbox).build();
    assert!(matches!(
        refused,
        Err(ConfigError::RetentionShorterThanTolerance {
            retention_secs: 60,
            tolerance_secs: 3600
        })
    ));
}

#[tokio::test]
async fn a_forged_signature_is_never_stored() {
    let dir = tempfile::tempdir().unwrap();
    let inbox = inbox(&dir, |b| b);
    let app = app(&inbox);
    let (status, _) = send(&app, &message("forged").forged()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(inbox.stats().await.unwrap(), Default::default());
}

/// A SQLite store whose first `complete` or first `fail` waits at a gate the test opens, so
/// that a job's task can be held in the middle of recording its outcome; it keeps what the
/// workers asked of it in [`StoreCalls`], for tests of how they use the store. Its `stats`
/// can be made to panic ([`GatedStore::panicking_stats`]).
#[derive(Debug)]
pub(crate) struct GatedStore {
    inner: SqliteStore,
    complete: Gate,
    fail: Gate,
    calls: Arc<StoreCalls>,
    /// Whether `stats` panics, for tests of how the inbox passes a store's panic on.
    stats_panics: bool,
}

impl GatedStore {
    /// A new SQLite file in `dir`, behind these gates; the calls it records are read from the
    /// returned [`StoreCalls`].
    pub(crate) fn open(
        dir: &tempfile::TempDir,
        complete: Gate,
        fail: Gate,
    ) -> (Self, Arc<StoreCalls>) {
        let inner = SqliteStore::open(dir.path().join("inbox.db")).expect("a new SQLite inbox");
        let calls = Arc::new(StoreCalls::default());
        let store = Self {
            inner,
            complete,
            fail,
            calls: calls.clone(),
            stats_panics: false,
        };
        (store, calls)
    }

    /// The same store, with a `stats` that panics.
    pub(crate) fn panicking_stats(self) -> Self {
        Self {
            stats_panics: true,
            ..self
        }
    }
}

/// What the workers asked a [`GatedStore`] for.
#[derive(Debug, Default)]
pub(crate) struct StoreCalls {
    /// Each claim that answered: the most jobs it asked for, and how many it got.
    claims: Mutex<Vec<(usize, usize)>>,
    renewals: AtomicUsize,
    backlogs: AtomicUsize,
    /// Each failure written, in order: its job, and the wait the workers chose before its
    /// next attempt (`retry_at - now`, zero if `retry_at` is not after `now`), or `None` for
    /// a dead letter.
    failures: Mutex<Vec<(JobId, Option<Duration>)>>,
}

impl StoreCalls {
    pub(crate) fn claims(&self) -> Vec<(usize, usize)> {
        self.claims.lock().unwrap().clone()
    }
    pub(crate) fn renewals(&self) -> usize {
        self.renewals.load(Ordering::SeqCst)
    }
    pub(crate) fn backlogs(&self) -> usize {
        self.backlogs.load(Ordering::SeqCst)
    }
    pub(crate) fn failures(&self) -> Vec<(JobId, Option<Duration>)> {
        self.failures.lock().unwrap().clone()
    }
}

/// One gate: the first call through it reports on `entered`, then waits for `open`; later
/// calls pass. A gate never armed passes every call.
#[derive(Debug, Default)]
pub(crate) struct Gate(
    Mutex<
        Option<(
            tokio::sync::mpsc::UnboundedSender<()>,
            oneshot::Receiver<()>,
        )>,
    >,
);

/// The test's side of a [`Gate`].
struct GateControl {
    entered: tokio::sync::mpsc::UnboundedReceiver<()>,
    open: oneshot::Sender<()>,
}

impl Gate {
    fn armed() -> (Self, GateControl) {
        let (entered_tx, entered) = tokio::sync::mpsc::unbounded_channel();
        let (open, open_rx) = oneshot::channel();
        let gate = Self(Mutex::new(Some((entered_tx, open_rx))));
        (gate, GateControl { entered, open })
    }

    /// Waits at the gate when this is its first call. A gate dropped unopened (the test
    /// ended) lets the call through.
    async fn pass(&self) {
        let first = self.0.lock().unwrap().take();
        if let Some((entered, open)) = first {
            let _ = entered.send(());
            let _ = open.await;
        }
    }
}

impl InboxStore for GatedStore {
    fn insert(&self, delivery: NewDelivery) -> InboxFuture<'_, Inserted> {
        self.inner.insert(delivery)
    }
    fn claim(
        &self,
        now: SystemTime,
        lease: Duration,
        limit: usize,
        ordered: bool,
    ) -> InboxFuture<'_, Vec<ClaimedJob>> {
        Box::pin(async move {
            let jobs = self.inner.claim(now, lease, limit, ordered).await?;
            self.calls.claims.lock().unwrap().push((limit, jobs.len()));
            Ok(jobs)
        })
    }
    fn renew(&self, id: JobId, fence: Fence, until: SystemTime) -> InboxFuture<'_, ()> {
        self.calls.renewals.fetch_add(1, Ordering::SeqCst);
        self.inner.renew(id, fence, until)
    }
    /// Held at the gate before the row is written: the handler has succeeded, the job is
    /// not yet done.
    fn complete(&self, id: JobId, fence: Fence, now: SystemTime) -> InboxFuture<'_, ()> {
        Box::pin(async move {
            self.complete.pass().await;
            self.inner.complete(id, fence, now).await
        })
    }
    /// Held at the gate after the row is written: the job is due again while the task that
    /// ran it has not ended.
    fn fail<'a>(
        &'a self,
        id: JobId,
        fence: Fence,
        error: &'a str,
        retry_at: Option<SystemTime>,
        now: SystemTime,
    ) -> InboxFuture<'a, ()> {
        let wait = retry_at.map(|at| at.duration_since(now).unwrap_or_default());
        self.calls.failures.lock().unwrap().push((id, wait));
        Box::pin(async move {
            let written = self.inner.fail(id, fence, error, retry_at, now).await;
            self.fail.pass().await;
            written
        })
    }
    fn release(&self, id: JobId, fence: Fence, now: SystemTime) -> InboxFuture<'_, ()> {
        self.inner.release(id, fence, now)
    }
    fn get(&self, id: JobId) -> InboxFuture<'_, Option<JobRecord>> {
        self.inner.get(id)
    }
    fn list(&self, filter: JobFilter) -> InboxFuture<'_, Vec<JobRecord>> {
        self.inner.list(filter)
    }
    fn replay(&self, filter: JobFilter, now: SystemTime) -> InboxFuture<'_, u64> {
        self.inner.replay(filter, now)
    }
    fn purge(&self, finished_before: SystemTime, batch: usize) -> InboxFuture<'_, u64> {
        self.inner.purge(finished_before, batch)
    }
    fn stats(&self) -> InboxFuture<'_, InboxStats> {
        assert!(!self.stats_panics, "the stats query panicked");
        self.inner.stats()
    }
    fn backlog(&self) -> InboxFuture<'_, InboxBacklog> {
        self.calls.backlogs.fetch_add(1, Ordering::SeqCst);
        self.inner.backlog()
    }
}

/// An inbox on a [`GatedStore`], on tokio's clock, with a lease and a handler timeout far
/// longer than any test here runs, so that only the shutdown's deadline cancels anything.
/// Not `hold_paused_clock`: a store operation held at a gate must let paused time pass.
fn gated_inbox(dir: &tempfile::TempDir, complete: Gate, fail: Gate) -> Inbox {
    let (store, _) = GatedStore::open(dir, complete, fail);
    Inbox::builder(store)
        .clock(Arc::new(TokioClock::new()))
        .lease(Duration::from_secs(3600))
        .handler_timeout(Duration::from_secs(7200))
        .backoff(Duration::from_secs(1), Duration::from_secs(60))
        .max_attempts(5)
        .poll_interval(Duration::from_millis(100))
        .build()
        .expect("valid inbox settings")
}

/// Its clock is paused and it waits on SQLite's real I/O: a real-time bound ends it if a
/// regression leaves it waiting.
#[test]
fn shutdown_never_gives_back_a_job_whose_handler_succeeded_while_its_completion_is_written() {
    on_a_paused_clock_within_real_time(|| async {
        let dir = tempfile::tempdir().unwrap();
        let (complete, mut control) = Gate::armed();
        let inbox = gated_inbox(&dir, complete, Gate::default());
        let app = app(&inbox);
        let handled = Handled::default();
        let workers = inbox.start(handled.succeeding());
        // Asserted, so that a delivery refused by a regression fails here rather than at the
        // real-time bound, waiting for a job that never comes.
        assert_eq!(
            send(&app, &message("m")).await,
            (StatusCode::OK, r#"{"status":"accepted"}"#.into())
        );
        // The handler has returned Ok; its job's completion is held at the gate.
        control
            .entered
            .recv()
            .await
            .expect("the completion reaches the store");
        let shutdown = tokio::spawn(workers.shutdown(Duration::from_secs(5)));
        // Paused time passes the shutdown's deadline while the completion is held.
        tokio::time::sleep(Duration::from_secs(10)).await;
        let _ = control.open.send(());
        let report = shutdown.await.expect("the shutdown ends");
        assert_eq!((report.finished, report.released), (1, 0), "{report:?}");
        let stats = inbox.stats().await.unwrap();
        assert_eq!(
            (stats.done, stats.pending, stats.running),
            (1, 0, 0),
            "{stats:?}"
        );
        assert_eq!(handled.runs("m"), vec![1]);
    });
}

/// Its clock is paused and it waits on SQLite's real I/O, so only a real-time bound can end it
/// if a regression leaves it waiting (a tokio timeout would fire when the clock jumps).
#[test]
fn a_job_claimed_again_before_its_previous_runs_task_ended_is_given_back_at_shutdown() {
    on_a_paused_clock_within_real_time(|| async {
        let dir = tempfile::tempdir().unwrap();
        let (fail, mut control) = Gate::armed();
        let inbox = gated_inbox(&dir, Gate::default(), fail);
        let app = app(&inbox);
        let (started_tx, mut started) = tokio::sync::mpsc::unbounded_channel();
        let workers = inbox.start(move |job: Job| {
            let started = started_tx.clone();
            async move {
                if job.attempt() == 1 {
                    return Err(std::io::Error::other("the CRM is down"));
                }
                let _ = started.send(job.attempt());
                // Runs until the shutdown's deadline cancels it.
                std::future::pending::<()>().await;
                Ok(())
            }
        });
        // Asserted, so that a delivery refused by a regression fails here rather than at the
        // real-time bound, waiting for a job that never comes.
        assert_eq!(
            send(&app, &message("m")).await,
            (StatusCode::OK, r#"{"status":"accepted"}"#.into())
        );
        // Attempt 1's failure is written (the job is due again after its backoff), and its task
        // is held at the gate, not yet ended.
        control
            .entered
            .recv()
            .await
            .expect("the failure reaches the store");
        // The same job id is claimed again and its second run starts meanwhile.
        assert_eq!(started.recv().await, Some(2));
        // Attempt 1's task ends now, while attempt 2 runs.
        let _ = control.open.send(());
        let report = workers.shutdown(Duration::from_secs(5)).await;
        assert_eq!(report.released, 1, "attempt 2 given back: {report:?}");
        let jobs = inbox.list(JobFilter::default()).await.unwrap();
        assert_eq!(jobs.len(), 1);
        assert_eq!(
            (jobs[0].state, jobs[0].attempts),
            (JobState::Pending, 1),
            "given back at once, and the cancelled attempt not counted"
        );
    });
}

/// A delivery's `received_at` is the inbox's time: the receiver's reading on arrival serves it
/// only when the two keep the same clock. Here the inbox's clock is an hour ahead of the
/// receiver's, and the stored delivery says the inbox's time.
#[tokio::test]
async fn received_at_is_read_from_the_inbox_clock_not_the_receivers() {
    use aisoule_webhooks::Admission;
    use aisoule_webhooks::clock::ManualClock;

    let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_780_369_298);
    let inbox_time = at + Duration::from_secs(3600);
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("inbox.db")).expect("a new SQLite inbox");
    let inbox = Inbox::builder(store)
        .clock(Arc::new(ManualClock::new(inbox_time)))
        .build()
        .expect("valid inbox settings");
    let receiver = Receiver::builder(test_verifier())
        .inbox(inbox.clone())
        .clock(Arc::new(ManualClock::new(at)))
        .build()
        .expect("valid receiver");
    let delivery = Delivery::sample(EventKind::MessageIncoming, Dialect::Developer)
        .message_id("received-at")
        .timestamp_at(at)
        .build();
    let admission = receiver
        .admit(
            [delivery.signature_value().as_bytes()],
            bytes::Bytes::copy_from_slice(delivery.body()),
        )
        .await
        .expect("admitted");
    let Admission::Stored(id) = admission else {
        panic!("stored, not {admission:?}");
    };
    let record = inbox.get(id).await.unwrap().expect("the stored delivery");
    assert_eq!(record.received_at, inbox_time);
}
