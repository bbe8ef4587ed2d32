//! The contract between the inbox and the engine that keeps its rows.
//!
//! The inbox keeps one row per event. A row's life:
//!
//! ```text
//!            insert                    claim                  complete
//!  (request) ──────► pending ─────────────────► running ─────────────────► done
//!                      ▲  ▲    (lease expired:    │  │
//!                      │  └──── taken over) ──────┘  │ fail, attempts left: pending, later
//!   insert (stale or   │                             │ fail, none left:     dead
//!   unreadable time) ──┼──► quarantined              │ release (shutdown):  pending, now
//!                      └──── replay (by hand) ◄──────┴──────── from any state
//! ```
//!
//! Every time given to a store comes from the inbox's [`Clock`](crate::clock::Clock), never from
//! the engine's own clock, so that one test clock drives leases, backoff and purges alike, and
//! replicas sharing a database agree as closely as their clocks do.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, SystemTime};

use bytes::Bytes;

use crate::error::InboxError;

/// The future a store method returns: boxed, so that stores can be trait objects, and `Send`,
/// so that request handlers and workers on any runtime thread can await it.
pub type InboxFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, InboxError>> + Send + 'a>>;

/// A row's id, assigned by the store in insertion order: a later insert gets a larger id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct JobId(pub i64);

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Proof of one claim of one row: a worker holding an older fence can never complete, fail,
/// renew or release the row once its lease was taken over.
///
/// A fence holds its row until another claim or a replay takes the row over, not merely until
/// its lease ends: a slow worker that nobody replaced may still settle its job.
///
/// Stores make it from a per-row counter that every claim increments and nothing resets, so a
/// fence is never reused, not even after a replay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fence(pub i64);

/// Where a row is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum JobState {
    /// Waiting for a worker, from its `next_run_at` on.
    Pending,
    /// Claimed by a worker until its lease runs out.
    Running,
    /// The handler succeeded. Kept until purged, so a redelivery is still a duplicate.
    Done,
    /// Every attempt failed; kept with its last error until replayed or purged by hand.
    Dead,
    /// Stored but never run on its own: its timestamp was stale or unreadable. Released by
    /// [`replay`](InboxStore::replay).
    Quarantined,
}

impl JobState {
    /// Every state, in the order of a row's life.
    pub const ALL: [Self; 5] = [
        Self::Pending,
        Self::Running,
        Self::Done,
        Self::Dead,
        Self::Quarantined,
    ];

    /// The state's name as stores keep it: `pending`, `running`, `done`, `dead`, `quarantined`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Running => "running",
            Self::Done => "done",
            Self::Dead => "dead",
            Self::Quarantined => "quarantined",
        }
    }

    /// The state named `name` (as [`as_str`](Self::as_str) writes it).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|state| state.as_str() == name)
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A delivery as the request path writes it, once its signature has been verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDelivery {
    /// The deduplication key: unique among all rows, so a second insert of it is a duplicate.
    pub key: String,
    /// The body exactly as verified.
    pub body: Bytes,
    /// The signature headers as received, name and value, kept for audit.
    pub headers: Vec<(String, String)>,
    /// The label of the secret whose signature matched.
    pub secret_label: String,
    /// When the request path received it.
    pub received_at: SystemTime,
    /// Rows of one conversation run in insertion order when the inbox is ordered; `None` for
    /// events that belong to none.
    pub conversation: Option<String>,
    /// `Some(why)` stores the row [`Quarantined`](JobState::Quarantined) instead of pending.
    pub quarantine: Option<String>,
    /// The account it was received for, on a receiver for many accounts
    /// ([`Receiver::for_accounts`](crate::Receiver::for_accounts)), so that the workers can
    /// hand it back on [`VerifiedEvent::account`](crate::VerifiedEvent::account); `None` on a
    /// receiver for one account.
    pub account: Option<String>,
}

/// What an insert did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inserted {
    /// A new row, committed durably before this answer.
    New(JobId),
    /// A row with this key already exists (in any state): nothing was written.
    Duplicate,
}

/// A row handed to a worker by [`InboxStore::claim`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimedJob {
    /// The row.
    pub id: JobId,
    /// Its deduplication key: stable across attempts, so handlers can use it as the
    /// idempotency key of their own side effects.
    pub key: String,
    /// The body as verified.
    pub body: Bytes,
    /// The label of the secret that verified it.
    pub secret_label: String,
    /// When it was received.
    pub received_at: SystemTime,
    /// Which attempt this claim is: 1 the first time, and one more for every claim since the
    /// row was inserted or last replayed.
    pub attempt: u32,
    /// This claim's fence.
    pub fence: Fence,
    /// The account it was received for, as inserted.
    pub account: Option<String>,
}

/// Everything kept about a row, for operators.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobRecord {
    /// The row.
    pub id: JobId,
    /// Its deduplication key.
    pub key: String,
    /// Where it is.
    pub state: JobState,
    /// Claims since it was inserted or last replayed.
    pub attempts: u32,
    /// The last failure's message, kept after a later success or a replay until overwritten.
    pub last_error: Option<String>,
    /// Why it was quarantined, if it was.
    pub quarantine_reason: Option<String>,
    /// The body as verified.
    pub body: Bytes,
    /// The signature headers as received.
    pub headers: Vec<(String, String)>,
    /// The label of the secret that verified it.
    pub secret_label: String,
    /// Its conversation, if any.
    pub conversation: Option<String>,
    /// The account it was received for, on a receiver for many accounts.
    pub account: Option<String>,
    /// When it was received.
    pub received_at: SystemTime,
    /// When a pending row may next be claimed.
    pub next_run_at: SystemTime,
    /// When a running row's lease ends.
    pub lease_until: Option<SystemTime>,
    /// When it last became done or dead.
    pub finished_at: Option<SystemTime>,
}

/// Which rows an operation applies to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobFilter {
    /// Only this row.
    pub id: Option<JobId>,
    /// Only rows in this state; any state when `None`.
    pub state: Option<JobState>,
    /// Only rows whose id is greater (for paging by the last id seen).
    pub after: Option<JobId>,
    /// At most this many rows (listing only); unlimited when `None`.
    pub limit: Option<usize>,
}

/// How many rows are in each state, and how far behind the workers are.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InboxStats {
    /// Rows waiting for a worker (including those waiting out a backoff).
    pub pending: u64,
    /// Rows claimed by a worker.
    pub running: u64,
    /// Rows handled.
    pub done: u64,
    /// Rows that exhausted their attempts.
    pub dead: u64,
    /// Rows held back for a person to release.
    pub quarantined: u64,
    /// When the oldest pending row was received, if any is pending.
    pub oldest_pending_received_at: Option<SystemTime>,
}

impl InboxStats {
    /// The number of rows in `state`.
    pub fn count(&self, state: JobState) -> u64 {
        match state {
            JobState::Pending => self.pending,
            JobState::Running => self.running,
            JobState::Done => self.done,
            JobState::Dead => self.dead,
            JobState::Quarantined => self.quarantined,
        }
    }

    /// How long the oldest pending row has waited since it was received, at `now`: the
    /// workers' lag.
    pub fn lag(&self, now: SystemTime) -> Option<Duration> {
        lag_at(self.oldest_pending_received_at, now)
    }
}

/// The rows not yet done, by state, and how far behind the workers are: [`InboxStats`]
/// without the done rows, which a store would have to read (or count through an index) in
/// full. The workers ask for it every few seconds for the inbox metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InboxBacklog {
    /// Rows waiting for a worker (including those waiting out a backoff).
    pub pending: u64,
    /// Rows claimed by a worker.
    pub running: u64,
    /// Rows that exhausted their attempts.
    pub dead: u64,
    /// Rows held back for a person to release.
    pub quarantined: u64,
    /// When the oldest pending row was received, if any is pending.
    pub oldest_pending_received_at: Option<SystemTime>,
}

impl InboxBacklog {
    /// The states a backlog counts: every state but done.
    pub const STATES: [JobState; 4] = [
        JobState::Pending,
        JobState::Running,
        JobState::Dead,
        JobState::Quarantined,
    ];

    /// The number of rows in `state`; `None` for [`JobState::Done`], which it does not count.
    pub fn count(&self, state: JobState) -> Option<u64> {
        match state {
            JobState::Pending => Some(self.pending),
            JobState::Running => Some(self.running),
            JobState::Dead => Some(self.dead),
            JobState::Quarantined => Some(self.quarantined),
            JobState::Done => None,
        }
    }

    /// How long the oldest pending row has waited since it was received, at `now`: the
    /// workers' lag.
    pub fn lag(&self, now: SystemTime) -> Option<Duration> {
        lag_at(self.oldest_pending_received_at, now)
    }
}

impl From<InboxStats> for InboxBacklog {
    fn from(stats: InboxStats) -> Self {
        Self {
            pending: stats.pending,
            running: stats.running,
            dead: stats.dead,
            quarantined: stats.quarantined,
            oldest_pending_received_at: stats.oldest_pending_received_at,
        }
    }
}

/// The time from `oldest` to `now`, zero if the clock is behind it.
fn lag_at(oldest: Option<SystemTime>, now: SystemTime) -> Option<Duration> {
    oldest.map(|at| now.duration_since(at).unwrap_or_default())
}

/// The engine that keeps the inbox's rows: SQLite (feature `sqlite`) and PostgreSQL (feature
/// `postgres`) ship with the crate. `test_util::inbox_suite` (feature `test-util`) runs the
/// behaviour every store must have against yours.
///
/// # Durability and cancellation
///
/// [`insert`](Self::insert) answers only after its row is durably committed, at the store's
/// durability setting: the request path answers 200 on that promise. Every other method is
/// atomic: a dropped future has either taken effect completely or not at all, and the fence
/// makes a late effect harmless.
///
/// # Errors
///
/// Every method returns [`InboxError::Store`] when the engine cannot answer;
/// [`InboxError::LeaseLost`] where noted.
pub trait InboxStore: Send + Sync + fmt::Debug + 'static {
    /// Writes `delivery` as a new row (pending and due from its `received_at`, or quarantined
    /// when it says so) unless a row with its key exists, whatever that row's state. Concurrent inserts of one key yield exactly one
    /// [`Inserted::New`]; a store may commit concurrent inserts together (group commit).
    fn insert(&self, delivery: NewDelivery) -> InboxFuture<'_, Inserted>;

    /// Claims up to `limit` rows for `lease` from `now`, oldest id first: pending rows whose
    /// `next_run_at` has come, and running rows whose lease ended before `now` (taken over
    /// from a worker that died or stalled). Each claim increments the row's attempts and its
    /// fence. With `ordered`, a row is skipped while an earlier row (smaller id) of its
    /// conversation is pending or running.
    fn claim(
        &self,
        now: SystemTime,
        lease: Duration,
        limit: usize,
        ordered: bool,
    ) -> InboxFuture<'_, Vec<ClaimedJob>>;

    /// Extends a running row's lease to `until`.
    /// [`InboxError::LeaseLost`] when `fence` no longer holds the row.
    fn renew(&self, id: JobId, fence: Fence, until: SystemTime) -> InboxFuture<'_, ()>;

    /// Marks a running row done at `now`.
    /// [`InboxError::LeaseLost`] when `fence` no longer holds the row.
    fn complete(&self, id: JobId, fence: Fence, now: SystemTime) -> InboxFuture<'_, ()>;

    /// Records a failed attempt with its `error`: pending again from `retry_at` when it is
    /// `Some`, dead (finished at `now`) when it is `None`.
    /// [`InboxError::LeaseLost`] when `fence` no longer holds the row.
    fn fail<'a>(
        &'a self,
        id: JobId,
        fence: Fence,
        error: &'a str,
        retry_at: Option<SystemTime>,
        now: SystemTime,
    ) -> InboxFuture<'a, ()>;

    /// Gives a running row back unfinished (a graceful shutdown): pending from `now`, and the
    /// attempt it was claimed for is not counted. Does nothing when `fence` no longer holds it.
    fn release(&self, id: JobId, fence: Fence, now: SystemTime) -> InboxFuture<'_, ()>;

    /// One row, whatever its state.
    fn get(&self, id: JobId) -> InboxFuture<'_, Option<JobRecord>>;

    /// The rows matching `filter`, by id.
    fn list(&self, filter: JobFilter) -> InboxFuture<'_, Vec<JobRecord>>;

    /// Makes the rows matching `filter` (its `limit` ignored) pending from `now` with their
    /// attempts reset, whatever their state: a dead letter's retry, a quarantined row's
    /// release, or a handled event run again on purpose. A running row's fence is advanced,
    /// so its worker can no longer settle it. Returns how many rows it changed.
    fn replay(&self, filter: JobFilter, now: SystemTime) -> InboxFuture<'_, u64>;

    /// Deletes up to `batch` done rows that finished before `finished_before`, oldest first,
    /// and returns how many it deleted: call it until it returns less than `batch`, so that
    /// no single transaction holds the table for long.
    fn purge(&self, finished_before: SystemTime, batch: usize) -> InboxFuture<'_, u64>;

    /// Counts by state, and the oldest pending row's receipt time.
    fn stats(&self) -> InboxFuture<'_, InboxStats>;

    /// Counts by state but done, and the oldest pending row's receipt time: what the workers
    /// publish as the inbox metrics every few seconds. It must cost no more than the rows not
    /// yet done (SQLite and PostgreSQL count them through their state indexes). The default
    /// takes [`stats`](Self::stats) and drops the done count: correct, but it counts the done
    /// rows too, so a store whose done rows pile up should override it.
    fn backlog(&self) -> InboxFuture<'_, InboxBacklog> {
        let stats = self.stats();
        Box::pin(async move { stats.await.map(InboxBacklog::from) })
    }

    /// Answers once the store is reachable, for a readiness check
    /// ([`Receiver::check_ready`](crate::Receiver::check_ready)). The default answers at once:
    /// right for an embedded store; a networked store asks its server.
    fn ping(&self) -> InboxFuture<'_, ()> {
        Box::pin(std::future::ready(Ok(())))
    }
}

/// Milliseconds since the Unix epoch, the one time format every store keeps: times before
/// 1970 (which no clock here gives) are kept as 0.
pub fn to_millis(at: SystemTime) -> i64 {
    at.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The time `millis` after the Unix epoch (negative values read as the epoch).
pub fn from_millis(millis: i64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_millis(u64::try_from(millis).unwrap_or(0))
}
