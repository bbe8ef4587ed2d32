//! The durable inbox: answer the platform only after a durable write, then run your handler
//! from a queue, so that no outage, backlog or slow handler loses an event.
//!
//! The platform waits 5 s for an answer and retries a non-200 after 10 s, 60 s and 5 min, then
//! drops the event. Inline mode (the default) runs your handler inside that window, so a
//! handler that fails for longer than about 6 minutes loses events. In inbox mode the request
//! path only verifies, parses and stores the delivery, and answers 200 once the row has
//! committed; [workers](Inbox::start) then run your handler from the store, retrying failures
//! with backoff for as long as you configure, and keeping what still fails as a dead letter
//! that you can [replay](Inbox::replay).
//!
//! | what happens | inline mode | inbox mode |
//! |---|---|---|
//! | handler down for 10 min | events whose last retry fell in the outage are lost | every event runs once it recovers |
//! | handler takes 8 s | the platform logs a timeout, then a duplicate | 200 within milliseconds |
//! | delivery over 1 h late | 400, lost | stored, quarantined, released by hand |
//! | store down | 503, the platform retries | 503, the platform retries |
//!
//! The stores are SQLite (feature `sqlite`, one file, for one process) and PostgreSQL (feature
//! `postgres`, for several replicas); [`InboxStore`] is the contract for your own.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::clock::Clock;
use crate::error::{ConfigError, InboxError};

#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub mod postgres;
#[cfg(feature = "sqlite")]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
pub mod sqlite;
mod store;
mod worker;

pub use store::{
    ClaimedJob, Fence, InboxBacklog, InboxFuture, InboxStats, InboxStore, Inserted, JobFilter,
    JobId, JobRecord, JobState, NewDelivery, from_millis, to_millis,
};
pub use worker::{HandlerError, Job, JobHandler, ShutdownReport, Workers};

/// A durable inbox: a store, the clock it runs on, and how its workers retry.
///
/// Cheap to clone; clones share the store. Give one to
/// [`ReceiverBuilder::inbox`](crate::receiver::ReceiverBuilder::inbox) for the request path, and
/// [`start`](Self::start) its workers with your handler.
#[derive(Clone)]
pub struct Inbox {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) store: Arc<dyn InboxStore>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) config: InboxConfig,
    /// Wakes idle workers when this process stores a delivery, so that a job does not wait
    /// for the next poll.
    pub(crate) stored: tokio::sync::Notify,
}

/// The workers' settings; see [`InboxBuilder`] for each one's default and why.
#[derive(Debug, Clone)]
pub(crate) struct InboxConfig {
    pub(crate) workers: usize,
    pub(crate) lease: Duration,
    pub(crate) handler_timeout: Duration,
    pub(crate) max_attempts: u32,
    pub(crate) backoff_base: Duration,
    pub(crate) backoff_max: Duration,
    pub(crate) poll_interval: Duration,
    pub(crate) ordered: bool,
    pub(crate) retention: Duration,
    pub(crate) metrics_interval: Duration,
    pub(crate) hold_paused_clock: bool,
}

impl fmt::Debug for Inbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Inbox")
            .field("store", &self.inner.store)
            .field("clock", &self.inner.clock)
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

/// Configures an [`Inbox`].
#[derive(Debug)]
#[must_use]
pub struct InboxBuilder {
    store: Arc<dyn InboxStore>,
    clock: Arc<dyn Clock>,
    config: InboxConfig,
}

impl InboxBuilder {
    /// How many handlers run at once, per process. Defaults to 16: each job costs a claim and
    /// a completion (two durable writes), so the workers drain a backlog only as fast as that
    /// many round trips allow; lower it if your handler's own resources are scarce.
    pub fn workers(mut self, workers: usize) -> Self {
        self.config.workers = workers;
        self
    }

    /// How long a claimed job is held before another worker may take it over, so that a
    /// crashed process never holds a job for long. It is renewed every third of itself while
    /// the handler runs, so it bounds the recovery time after a crash, not the handler's
    /// running time. Defaults to 30 s.
    pub fn lease(mut self, lease: Duration) -> Self {
        self.config.lease = lease;
        self
    }

    /// How long one attempt may run before it is cancelled and counted as a failure.
    /// Defaults to 5 minutes.
    pub fn handler_timeout(mut self, timeout: Duration) -> Self {
        self.config.handler_timeout = timeout;
        self
    }

    /// How many attempts a job gets before it becomes a dead letter. Defaults to 20, which with
    /// the default backoff (doubling from 1 s to 1 h, jittered down by up to half) retries for
    /// between about 4 and 8 hours: past an afternoon's outage of the systems a handler writes
    /// to, where the platform itself gives up after about 6 minutes.
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.config.max_attempts = attempts;
        self
    }

    /// The wait after the first failure, doubled after each further one up to `max`, and
    /// jittered down by up to half so that jobs failed together do not retry together.
    /// Defaults to 1 s and 1 h.
    pub fn backoff(mut self, base: Duration, max: Duration) -> Self {
        self.config.backoff_base = base;
        self.config.backoff_max = max;
        self
    }

    /// How often idle workers look for jobs that another process stored, or whose backoff
    /// ended. Deliveries stored by this process wake them at once. Defaults to 500 ms.
    pub fn poll_interval(mut self, every: Duration) -> Self {
        self.config.poll_interval = every;
        self
    }

    /// Runs the jobs of one conversation (the customer's number) one at a time, in the order
    /// they were received: a job does not start while an earlier job of its conversation is
    /// pending or running. Defaults to off, which runs every job as soon as a worker is free.
    pub fn ordered_by_conversation(mut self) -> Self {
        self.config.ordered = true;
        self
    }

    /// How long handled rows are kept before [`Inbox::purge`] deletes them. While a row is
    /// kept, a redelivery of its event is a duplicate, so the receiver refuses a retention
    /// shorter than its replay tolerance. Defaults to 7 days.
    pub fn retention(mut self, retention: Duration) -> Self {
        self.config.retention = retention;
        self
    }

    /// How often the workers count the jobs not yet done for the inbox metrics
    /// (`aisoule_inbox_jobs` by state, and `aisoule_inbox_lag_seconds`), through
    /// [`InboxStore::backlog`]: one store query per interval per process, whatever the load,
    /// never one per job. Defaults to 5 s, a typical scrape interval's fraction; the gauges are
    /// that stale at most.
    pub fn metrics_interval(mut self, every: Duration) -> Self {
        self.config.metrics_interval = every;
        self
    }

    /// For tests on tokio's paused clock: holds the clock still while the store works.
    ///
    /// Paused, tokio's clock jumps to the next timer whenever every task is waiting, and a
    /// task waiting for a database (on the SQLite store's thread, or on a socket) counts as
    /// waiting: a lease or a handler timeout could then end in the middle of one write. With
    /// this setting each store operation runs on tokio's blocking pool, which keeps the paused
    /// clock from moving until it returns, so simulated time passes only while tasks sleep.
    /// It costs a thread hand-off per operation: leave it off in production. Defaults to off.
    pub fn hold_paused_clock(mut self) -> Self {
        self.config.hold_paused_clock = true;
        self
    }

    /// The clock for leases, backoff and purges. Defaults to
    /// [`SystemClock`](crate::clock::SystemClock). The receiver uses its own clock for the
    /// replay window, and the time it read on a delivery's arrival as its `received_at` when
    /// the two are the same clock (as their defaults are).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Checks the settings and builds the inbox.
    ///
    /// # Errors
    ///
    /// [`ConfigError::ZeroDuration`] for a zero lease, timeout, backoff, poll interval,
    /// retention or metrics interval; [`ConfigError::ZeroCount`] for zero workers or attempts.
    pub fn build(self) -> Result<Inbox, ConfigError> {
        let c = &self.config;
        for (setting, value) in [
            ("the inbox lease", c.lease),
            ("the handler timeout", c.handler_timeout),
            ("the backoff", c.backoff_base),
            ("the poll interval", c.poll_interval),
            ("the retention", c.retention),
            ("the metrics interval", c.metrics_interval),
        ] {
            if value.is_zero() {
                return Err(ConfigError::ZeroDuration { setting });
            }
        }
        if c.workers == 0 {
            return Err(ConfigError::ZeroCount {
                setting: "the worker count",
            });
        }
        if c.max_attempts == 0 {
            return Err(ConfigError::ZeroCount {
                setting: "the maximum number of attempts",
            });
        }
        Ok(Inbox {
            inner: Arc::new(Inner {
                store: self.store,
                clock: self.clock,
                config: self.config,
                stored: tokio::sync::Notify::new(),
            }),
        })
    }
}

impl Inbox {
    /// Starts configuring an inbox on `store`.
    pub fn builder(store: impl InboxStore) -> InboxBuilder {
        Self::builder_from_arc(Arc::new(store))
    }

    /// Starts configuring an inbox on a shared store.
    pub fn builder_from_arc(store: Arc<dyn InboxStore>) -> InboxBuilder {
        InboxBuilder {
            store,
            clock: crate::clock::system(),
            config: InboxConfig {
                workers: 16,
                lease: Duration::from_secs(30),
                handler_timeout: Duration::from_secs(5 * 60),
                max_attempts: 20,
                backoff_base: Duration::from_secs(1),
                backoff_max: Duration::from_secs(60 * 60),
                poll_interval: Duration::from_millis(500),
                ordered: false,
                retention: Duration::from_secs(7 * 24 * 60 * 60),
                metrics_interval: Duration::from_secs(5),
                hold_paused_clock: false,
            },
        }
    }

    /// An inbox on `store` with every default.
    pub fn new(store: impl InboxStore) -> Self {
        Self::builder(store)
            .build()
            .expect("the default settings are valid")
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn InboxStore> {
        &self.inner.store
    }

    /// How long handled rows are kept (see [`InboxBuilder::retention`]).
    pub fn retention(&self) -> Duration {
        self.inner.config.retention
    }

    pub(crate) fn now(&self) -> SystemTime {
        self.inner.clock.now()
    }

    /// `reading`, when it is a time of the inbox's clock, or else the time now.
    pub(crate) fn now_from(&self, reading: crate::clock::Reading<'_>) -> SystemTime {
        reading.on(&self.inner.clock).unwrap_or_else(|| self.now())
    }

    async fn run<T, Fut>(
        &self,
        op: impl FnOnce(Arc<dyn InboxStore>) -> Fut + Send + 'static,
    ) -> Result<T, InboxError>
    where
        Fut: Future<Output = Result<T, InboxError>> + Send + 'static,
        T: Send + 'static,
    {
        self.inner.run(op).await
    }

    /// Stores a verified delivery, and wakes this process's idle workers when it is new.
    ///
    /// # Errors
    ///
    /// The store's error: refuse the delivery with 503. It was most likely not stored; a
    /// networked store may have committed it and lost the answer, in which case the platform's
    /// retry is answered as a duplicate.
    pub async fn insert(&self, delivery: NewDelivery) -> Result<Inserted, InboxError> {
        let inserted = self
            .run(move |store| async move { store.insert(delivery).await })
            .await?;
        if matches!(inserted, Inserted::New(_)) {
            self.inner.stored.notify_one();
        }
        Ok(inserted)
    }

    /// One job, whatever its state.
    ///
    /// # Errors
    ///
    /// The store's error.
    pub async fn get(&self, id: JobId) -> Result<Option<JobRecord>, InboxError> {
        self.run(move |store| async move { store.get(id).await })
            .await
    }

    /// The jobs matching `filter`, by id.
    ///
    /// # Errors
    ///
    /// The store's error.
    pub async fn list(&self, filter: JobFilter) -> Result<Vec<JobRecord>, InboxError> {
        self.run(move |store| async move { store.list(filter).await })
            .await
    }

    /// The dead letters: jobs whose every attempt failed, with their last error.
    ///
    /// # Errors
    ///
    /// The store's error.
    pub async fn dead_letters(&self) -> Result<Vec<JobRecord>, InboxError> {
        self.list(JobFilter {
            state: Some(JobState::Dead),
            ..JobFilter::default()
        })
        .await
    }

    /// The quarantined jobs: stored with a stale or unreadable timestamp, waiting for a
    /// person to [`replay`](Self::replay) them.
    ///
    /// # Errors
    ///
    /// The store's error.
    pub async fn quarantined(&self) -> Result<Vec<JobRecord>, InboxError> {
        self.list(JobFilter {
            state: Some(JobState::Quarantined),
            ..JobFilter::default()
        })
        .await
    }

    /// Runs one job again from now, with a fresh set of attempts, whatever its state: a dead
    /// letter, a quarantined event, or a handled one on purpose. Returns whether the job
    /// exists.
    ///
    /// # Errors
    ///
    /// The store's error.
    pub async fn replay(&self, id: JobId) -> Result<bool, InboxError> {
        let changed = self
            .replay_matching(JobFilter {
                id: Some(id),
                ..JobFilter::default()
            })
            .await?;
        Ok(changed == 1)
    }

    /// Runs every job matching `filter` again (its `limit` is ignored), and returns how many.
    ///
    /// # Errors
    ///
    /// The store's error.
    pub async fn replay_matching(&self, filter: JobFilter) -> Result<u64, InboxError> {
        let now = self.now();
        let changed = self
            .run(move |store| async move { store.replay(filter, now).await })
            .await?;
        if changed > 0 {
            self.inner.stored.notify_one();
        }
        Ok(changed)
    }

    /// Deletes handled jobs older than the [retention](InboxBuilder::retention), in batches of
    /// 1 000 so that no transaction holds the table for long, and returns how many.
    ///
    /// # Errors
    ///
    /// The store's error; batches deleted before it stay deleted.
    pub async fn purge(&self) -> Result<u64, InboxError> {
        const BATCH: usize = 1_000;
        let before = self.now() - self.inner.config.retention;
        let mut total = 0;
        loop {
            let deleted = self
                .run(move |store| async move { store.purge(before, BATCH).await })
                .await?;
            total += deleted;
            if deleted < BATCH as u64 {
                return Ok(total);
            }
        }
    }

    /// Counts by state, and the oldest pending job's receipt time.
    ///
    /// # Errors
    ///
    /// The store's error.
    pub async fn stats(&self) -> Result<InboxStats, InboxError> {
        self.run(|store| async move { store.stats().await }).await
    }
}

impl Inner {
    /// Runs one store operation: directly, or on tokio's blocking pool when the inbox holds a
    /// paused clock still (see [`InboxBuilder::hold_paused_clock`]).
    pub(crate) async fn run<T, Fut>(
        &self,
        op: impl FnOnce(Arc<dyn InboxStore>) -> Fut + Send + 'static,
    ) -> Result<T, InboxError>
    where
        Fut: Future<Output = Result<T, InboxError>> + Send + 'static,
        T: Send + 'static,
    {
        let store = self.store.clone();
        if !self.config.hold_paused_clock {
            return op(store).await;
        }
        let runtime = tokio::runtime::Handle::current();
        match tokio::task::spawn_blocking(move || runtime.block_on(op(store))).await {
            Ok(result) => result,
            Err(join) if join.is_panic() => std::panic::resume_unwind(join.into_panic()),
            Err(_cancelled) => Err(InboxError::Closed),
        }
    }
}
