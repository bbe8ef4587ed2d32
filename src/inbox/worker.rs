//! Workers: claim jobs from the inbox, run your handler under a renewed lease, and record the
//! outcome, retrying failures with backoff until a job succeeds or becomes a dead letter.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tracing::Instrument;

use super::store::{ClaimedJob, Fence, JobId};
use super::{Inbox, Inner};
use crate::error::InboxError;
use crate::event::Event;
use crate::receiver::VerifiedEvent;
use crate::receiver::telemetry::{self, InboxAttempt};

/// What a handler's failure is: any error, kept as the job's `last_error` by its `Display`.
pub type HandlerError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// One run of one stored event, as the workers hand it to your handler.
#[derive(Debug, Clone)]
pub struct Job {
    event: VerifiedEvent,
    id: JobId,
    attempt: u32,
    idempotency_key: Arc<str>,
    received_at: SystemTime,
}

impl Job {
    /// The event, verified when it was received.
    pub fn event(&self) -> &VerifiedEvent {
        &self.event
    }

    /// The job's id in the inbox, for operators.
    pub fn id(&self) -> JobId {
        self.id
    }

    /// Which attempt this is: 1 the first time, higher after a failure, a timeout or a crash
    /// (a job whose worker died is taken over when its lease ends, and counts as an attempt).
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// A key that is the same on every attempt of this event, and different for every other
    /// event: pass it to the systems your handler writes to (a unique column, a payment
    /// provider's idempotency key) so that a re-run after a crash does not repeat their effect.
    pub fn idempotency_key(&self) -> &str {
        &self.idempotency_key
    }

    /// When the request path received the delivery.
    pub fn received_at(&self) -> SystemTime {
        self.received_at
    }
}

/// Your event handler, as the workers call it: `Ok` marks the job done; an `Err`, a panic or
/// a timeout is retried with backoff, and after the last attempt keeps the job as a dead
/// letter with its error.
///
/// Any `Fn(Job) -> impl Future<Output = Result<(), E>>` is one, for any error type `E`:
///
/// ```
/// use aisoule_webhooks::inbox::Job;
///
/// async fn handle(job: Job) -> Result<(), std::io::Error> {
///     println!("{} attempt {}", job.event().kind(), job.attempt());
///     Ok(())
/// }
/// # fn takes(_: impl aisoule_webhooks::inbox::JobHandler) {}
/// # takes(handle);
/// ```
pub trait JobHandler: Send + Sync + 'static {
    /// Handles one job.
    fn handle(&self, job: Job) -> Pin<Box<dyn Future<Output = Result<(), HandlerError>> + Send>>;
}

impl<F, Fut, E> JobHandler for F
where
    F: Fn(Job) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), E>> + Send + 'static,
    E: Into<HandlerError>,
{
    fn handle(&self, job: Job) -> Pin<Box<dyn Future<Output = Result<(), HandlerError>> + Send>> {
        let run = self(job);
        Box::pin(async move { run.await.map_err(Into::into) })
    }
}

/// The running workers of one process, from [`Inbox::start`].
///
/// [`shutdown`](Self::shutdown) stops them gracefully. Dropping the handle stops claiming new
/// jobs too; jobs already running finish in the background.
#[derive(Debug)]
#[must_use = "dropping the handle stops the workers from claiming jobs"]
pub struct Workers {
    stop: watch::Sender<Option<Duration>>,
    dispatcher: tokio::task::JoinHandle<ShutdownReport>,
}

/// What a graceful shutdown did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ShutdownReport {
    /// Jobs that were running and whose outcome was recorded (handled, retried or dead):
    /// those whose handler returned within the deadline, including any whose outcome was
    /// still being written at the deadline, since a handled job must not run again.
    pub finished: usize,
    /// Jobs whose handler was still running at the deadline: cancelled, and given back to
    /// the inbox to run again (on this process after a restart, or on another replica).
    pub released: usize,
}

impl Workers {
    /// Stops claiming, lets running jobs finish for up to `deadline`, then cancels the handlers
    /// still running and gives their jobs back to the inbox, uncounted, so they run again
    /// without waiting for their lease to end. A job whose handler has returned is never
    /// given back: shutdown waits for its outcome to be recorded, past the deadline if the
    /// store is slow.
    pub async fn shutdown(self, deadline: Duration) -> ShutdownReport {
        let _ = self.stop.send(Some(deadline));
        self.dispatcher.await.unwrap_or_default()
    }
}

impl Inbox {
    /// Starts the workers on the current tokio runtime: up to
    /// [`workers`](super::InboxBuilder::workers) jobs run at once, each in a task of its own.
    ///
    /// Start them on every process that receives deliveries (or on dedicated ones): jobs are
    /// claimed under a lease, so several processes sharing a PostgreSQL inbox never run one job
    /// at the same time, and a process that dies mid-job has its jobs taken over when their
    /// leases end.
    ///
    /// They also publish the inbox's gauges (see
    /// [`metrics_interval`](super::InboxBuilder::metrics_interval)) until they stop.
    ///
    /// The runtime needs tokio's time driver (`#[tokio::main]` has it).
    pub fn start(&self, handler: impl JobHandler) -> Workers {
        let (stop, stopped) = watch::channel(None);
        tokio::spawn(publish_backlog(self.inner.clone(), stop.subscribe()));
        let dispatcher = tokio::spawn(dispatch(self.inner.clone(), Arc::new(handler), stopped));
        Workers { stop, dispatcher }
    }
}

/// Counts the jobs not yet done and publishes them as the inbox's gauges, at once and then
/// every metrics interval, until the workers are told to stop or their handle is dropped.
async fn publish_backlog(inbox: Arc<Inner>, mut stopped: watch::Receiver<Option<Duration>>) {
    loop {
        if stopped.has_changed().is_err() || stopped.borrow().is_some() {
            return;
        }
        match inbox
            .run(|store| async move { store.backlog().await })
            .await
        {
            Ok(backlog) => telemetry::inbox_backlog(&backlog, inbox.clock.now()),
            // The claims fail too, and say so at warn; the gauges keep their last values.
            Err(error) => tracing::debug!(
                error = &error as &dyn std::error::Error,
                "could not count the inbox's jobs for its metrics"
            ),
        }
        tokio::select! {
            () = tokio::time::sleep(inbox.config.metrics_interval) => {}
            _ = stopped.changed() => {}
        }
    }
}

/// The loop that claims jobs while workers are free, and runs each in a task of its own.
async fn dispatch(
    inbox: Arc<Inner>,
    handler: Arc<dyn JobHandler>,
    mut stopped: watch::Receiver<Option<Duration>>,
) -> ShutdownReport {
    let config = &inbox.config;
    let slots = Arc::new(Semaphore::new(config.workers));
    // Each job's task settles its own job (records its outcome, or gives it back when
    // cancelled) and says which it did: the dispatcher keeps no per-job state, so a job id
    // claimed again while its previous run's task is still being joined cannot mix the runs up.
    let mut running: JoinSet<Ended> = JoinSet::new();
    let (cancel, cancelled) = watch::channel(false);
    loop {
        if stopped.has_changed().is_err() || stopped.borrow().is_some() {
            break;
        }
        while let Some(done) = running.try_join_next() {
            ended(done);
        }
        let free = slots.available_permits();
        let mut claimed_all = false;
        if free > 0 {
            let (now, lease, ordered) = (inbox.clock.now(), config.lease, config.ordered);
            match inbox
                .run(move |store| async move { store.claim(now, lease, free, ordered).await })
                .await
            {
                Ok(jobs) => {
                    claimed_all = jobs.len() == free;
                    for job in jobs {
                        let Ok(permit) = slots.clone().try_acquire_owned() else {
                            break;
                        };
                        let run = run_job(inbox.clone(), handler.clone(), job, cancelled.clone());
                        running.spawn(async move {
                            let ended = run.await;
                            drop(permit);
                            ended
                        });
                    }
                }
                Err(error) => {
                    tracing::warn!(
                        error = &error as &dyn std::error::Error,
                        "could not claim inbox jobs; trying again"
                    );
                }
            }
        }
        if claimed_all {
            // There may be more waiting: claim again once a quarter of the slots are free, so
            // that a backlog is claimed in batches (one store round trip for several jobs)
            // rather than one job per finished one.
            let batch = (config.workers / 4).max(1);
            while slots.available_permits() < batch {
                tokio::select! {
                    Some(done) = running.join_next() => { ended(done); }
                    _ = stopped.changed() => break,
                }
            }
            continue;
        }
        tokio::select! {
            () = inbox.stored.notified() => {}
            () = tokio::time::sleep(config.poll_interval) => {}
            Some(done) = running.join_next() => { ended(done); }
            _ = stopped.changed() => {}
        }
    }
    // A dropped handle (no deadline) lets running jobs finish however long they take.
    let deadline = match stopped.has_changed() {
        Ok(_) => *stopped.borrow(),
        Err(_) => None,
    };
    let mut report = ShutdownReport::default();
    let mut count = |done| match ended(done) {
        Some(Ended::Recorded) => report.finished += 1,
        Some(Ended::Released) => report.released += 1,
        None => {}
    };
    let drain = async {
        while let Some(done) = running.join_next().await {
            count(done);
        }
    };
    let drained = match deadline {
        Some(deadline) => tokio::time::timeout(deadline, drain).await.is_ok(),
        None => {
            drain.await;
            true
        }
    };
    if !drained {
        // Past the deadline: each job's task cancels its handler if it is still running and
        // gives the job back itself, with the fence it claimed it with. Aborting the tasks
        // instead would also cancel those recording a handled job's outcome, and give back a
        // job whose handler had succeeded.
        let _ = cancel.send(true);
        while let Some(done) = running.join_next().await {
            count(done);
        }
    }
    report
}

/// How a job's task ended.
enum Ended {
    /// The attempt's outcome was recorded (or could not be, and is logged).
    Recorded,
    /// The handler was cancelled at a shutdown's deadline, and the job given back.
    Released,
}

/// Logs a job's task that ended without settling its job (it panicked): its job runs again
/// when its lease ends.
fn ended(done: Result<Ended, tokio::task::JoinError>) -> Option<Ended> {
    match done {
        Ok(ended) => Some(ended),
        Err(join) => {
            tracing::error!(
                error = &join as &dyn std::error::Error,
                "an inbox job's task ended without settling its job; it runs again when its lease ends"
            );
            None
        }
    }
}

/// Aborts the handler's task when its attempt ends without it (a shutdown past its deadline, a
/// timeout, a lost lease) or the job's own task is dropped (its runtime shutting down), so a
/// cancelled job never keeps running unseen.
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// How one attempt ended.
enum Outcome {
    Handled,
    Failed(String),
    LeaseLost,
    /// Cancelled by a shutdown's deadline while the handler ran: given back, not recorded.
    Cancelled,
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Handled => f.write_str("handled"),
            Self::Failed(error) => f.write_str(error),
            Self::LeaseLost => f.write_str("lease lost"),
            Self::Cancelled => f.write_str("cancelled by shutdown"),
        }
    }
}

/// Runs one claimed job to its recorded outcome, or, when `cancelled` turns true while its
/// handler runs, cancels the handler and gives the job back.
async fn run_job(
    inbox: Arc<Inner>,
    handler: Arc<dyn JobHandler>,
    claimed: ClaimedJob,
    cancelled: watch::Receiver<bool>,
) -> Ended {
    let span = tracing::info_span!(
        "aisoule_inbox_job",
        job = claimed.id.0,
        attempt = claimed.attempt,
        account = claimed.account.as_deref(),
        kind = tracing::field::Empty,
        message_id = tracing::field::Empty,
        outcome = tracing::field::Empty,
    );
    async move {
        let ClaimedJob {
            id,
            key,
            body,
            secret_label,
            received_at,
            attempt,
            fence,
            account,
        } = claimed;
        let event = match Event::parse_bytes(body) {
            Ok(event) => event,
            Err(source) => {
                let error = InboxError::Unparseable { id: id.0, source };
                record(
                    &inbox,
                    id,
                    fence,
                    attempt,
                    Outcome::Failed(error.to_string()),
                    true,
                )
                .await;
                return Ended::Recorded;
            }
        };
        let span = tracing::Span::current();
        span.record("kind", event.kind().as_str());
        if let Some(message_id) = event.message_id() {
            span.record("message_id", message_id);
        }
        let job = Job {
            event: VerifiedEvent::new(Arc::new(event), secret_label.into(), account.map(Arc::from)),
            id,
            attempt,
            idempotency_key: key.into(),
            received_at,
        };
        let outcome = attempt_once(&inbox, handler.handle(job), id, fence, cancelled).await;
        if let Outcome::Cancelled = outcome {
            release(&inbox, id, fence).await;
            return Ended::Released;
        }
        record(&inbox, id, fence, attempt, outcome, false).await;
        Ended::Recorded
    }
    .instrument(span)
    .await
}

/// Gives a job whose handler was cancelled back to the inbox, uncounted.
async fn release(inbox: &Inner, id: JobId, fence: Fence) {
    tracing::Span::current().record("outcome", "released");
    telemetry::inbox_attempt(InboxAttempt::Released);
    let now = inbox.clock.now();
    if let Err(error) = inbox
        .run(move |store| async move { store.release(id, fence, now).await })
        .await
    {
        tracing::warn!(
            error = &error as &dyn std::error::Error,
            "could not give an unfinished job back at shutdown; it runs again when its lease ends"
        );
    }
}

/// Runs the handler in a task of its own (so a panic is caught), under the timeout, renewing
/// the lease meanwhile, until it returns or `cancelled` turns true.
async fn attempt_once(
    inbox: &Inner,
    handling: Pin<Box<dyn Future<Output = Result<(), HandlerError>> + Send>>,
    id: JobId,
    fence: Fence,
    cancelled: watch::Receiver<bool>,
) -> Outcome {
    let config = &inbox.config;
    let cancellation = cancellation(cancelled);
    tokio::pin!(cancellation);
    let mut task = tokio::spawn(handling.in_current_span());
    let _abort = AbortOnDrop(task.abort_handle());
    let renew_every = (config.lease / 3).max(Duration::from_millis(1));
    let deadline = tokio::time::Instant::now() + config.handler_timeout;
    loop {
        let next_renewal = tokio::time::Instant::now() + renew_every;
        tokio::select! {
            biased;
            joined = &mut task => {
                return match joined {
                    Ok(Ok(())) => Outcome::Handled,
                    Ok(Err(error)) => Outcome::Failed(error_chain(&*error)),
                    Err(join) => Outcome::Failed(format!("the handler panicked: {}", panic_message(join))),
                };
            }
            // Checked after the handler, so that a handler that has returned is recorded.
            () = &mut cancellation => return Outcome::Cancelled,
            () = tokio::time::sleep_until(deadline) => {
                return Outcome::Failed(format!(
                    "the handler timed out after {:?} and was cancelled",
                    config.handler_timeout
                ));
            }
            () = tokio::time::sleep_until(next_renewal) => {
                let until = inbox.clock.now() + config.lease;
                match inbox
                    .run(move |store| async move { store.renew(id, fence, until).await })
                    .await
                {
                    Ok(()) => tracing::trace!(until = ?until, "lease renewed"),
                    Err(InboxError::LeaseLost { .. }) => return Outcome::LeaseLost,
                    Err(error) => tracing::warn!(
                        error = &error as &dyn std::error::Error,
                        "could not renew the job's lease; trying again"
                    ),
                }
            }
        }
    }
}

/// Returns once `cancelled` turns true. The dispatcher gone without cancelling (its runtime
/// shutting down) means nothing will cancel: it never returns then.
async fn cancellation(mut cancelled: watch::Receiver<bool>) {
    if cancelled.wait_for(|cancelled| *cancelled).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Records an attempt's outcome, fenced; `dead_now` dead-letters it whatever attempts are
/// left (the stored body is unusable).
async fn record(
    inbox: &Inner,
    id: JobId,
    fence: Fence,
    attempt: u32,
    outcome: Outcome,
    dead_now: bool,
) {
    let span = tracing::Span::current();
    let config = &inbox.config;
    let now = inbox.clock.now();
    let retry_at = match &outcome {
        Outcome::Failed(_) => (!dead_now && attempt < config.max_attempts)
            .then(|| now + backoff(config.backoff_base, config.backoff_max, attempt)),
        _ => None,
    };
    let result = match &outcome {
        Outcome::Handled => {
            span.record("outcome", "handled");
            inbox
                .run(move |store| async move { store.complete(id, fence, now).await })
                .await
        }
        Outcome::LeaseLost => Err(InboxError::LeaseLost { id: id.0 }),
        // `run_job` gives a cancelled job back instead of recording it.
        Outcome::Cancelled => return,
        Outcome::Failed(error) => {
            match retry_at {
                Some(at) => {
                    span.record("outcome", "retry");
                    tracing::warn!(
                        error = error.as_str(),
                        retry_in_ms = at.duration_since(now).unwrap_or_default().as_millis() as u64,
                        "the inbox handler failed; the job will run again"
                    );
                }
                None => {
                    span.record("outcome", "dead");
                    tracing::error!(
                        error = error.as_str(),
                        "the inbox handler failed on its last attempt; the job is a dead letter"
                    );
                }
            }
            let error = error.clone();
            inbox
                .run(move |store| async move { store.fail(id, fence, &error, retry_at, now).await })
                .await
        }
    };
    let counted = match (&result, &outcome) {
        (Ok(()), Outcome::Handled) => InboxAttempt::Handled,
        (Ok(()), _) if retry_at.is_some() => InboxAttempt::Retry,
        (Ok(()), _) => InboxAttempt::Dead,
        (Err(InboxError::LeaseLost { .. }), _) => InboxAttempt::LeaseLost,
        (Err(_), _) => InboxAttempt::Unrecorded,
    };
    telemetry::inbox_attempt(counted);
    match result {
        Ok(()) => {
            if matches!(outcome, Outcome::Handled) {
                tracing::debug!("inbox job handled");
            }
        }
        Err(InboxError::LeaseLost { .. }) => {
            span.record("outcome", "lease_lost");
            tracing::warn!(
                %outcome,
                "the job's lease was taken over (it ran past its lease without renewal, or was \
                 replayed); this attempt's outcome is not recorded, and the job may run twice"
            );
        }
        Err(error) => tracing::warn!(
            error = &error as &dyn std::error::Error,
            %outcome,
            "could not record the job's outcome; it runs again when its lease ends"
        ),
    }
}

/// The wait before attempt `attempt + 1`: `base` doubled per failure up to `max`, less a
/// random part of up to half, so jobs that failed together spread out.
pub(crate) fn backoff(base: Duration, max: Duration, attempt: u32) -> Duration {
    let doublings = attempt.saturating_sub(1).min(32);
    let full = base.saturating_mul(1u32 << doublings.min(31)).min(max);
    let mut random = [0u8; 8];
    // Without randomness the wait is simply not jittered.
    let fraction = match getrandom::fill(&mut random) {
        Ok(()) => (u64::from_le_bytes(random) >> 11) as f64 / (1u64 << 53) as f64,
        Err(_) => 0.0,
    };
    full.mul_f64(1.0 - fraction / 2.0)
}

/// An error and its sources, `: `-separated, as one line for the job's `last_error`.
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn panic_message(join: tokio::task::JoinError) -> String {
    match join.try_into_panic() {
        Ok(payload) => payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a non-text panic payload".to_owned()),
        Err(join) => join.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_maximum_and_jitters_down_by_at_most_half() {
        let base = Duration::from_secs(1);
        let max = Duration::from_secs(60);
        for attempt in 1..=12 {
            let full = Duration::from_secs(1 << (attempt - 1)).min(max);
            let wait = backoff(base, max, attempt);
            assert!(
                wait <= full && wait >= full / 2,
                "attempt {attempt}: {wait:?} vs {full:?}"
            );
        }
        assert!(backoff(base, max, u32::MAX) <= max);
    }

    #[test]
    fn the_default_twenty_attempts_retry_for_four_to_eight_hours() {
        let (base, max) = (Duration::from_secs(1), Duration::from_secs(3600));
        // 19 waits separate 20 attempts.
        let span: Duration = (1..20).map(|attempt| backoff(base, max, attempt)).sum();
        let hours = span.as_secs_f64() / 3600.0;
        assert!((4.0..=8.2).contains(&hours), "{hours} h");
    }
}
