//! The SQLite inbox store: one file, for one process, with group commit.
//!
//! A request's insert must be durable before the receiver answers 200, and a durable commit
//! costs an `fsync`: one commit per request caps a receiver at about a thousand deliveries a
//! second on ordinary disks. So one writer thread owns the file's write connection, takes
//! every request that is waiting (up to [`max_batch`](SqliteStoreBuilder::max_batch)), runs
//! them all in one transaction, commits once, and only then answers each of them. Under load
//! the batches grow by themselves, and one `fsync` acknowledges hundreds of deliveries.
//! Claims, settlements, replays and purges go through the same thread, since SQLite has one
//! writer anyway, and may share a batch with inserts. Reads (`get`, `list`, `stats`) use a
//! second, read-only connection on tokio's blocking pool: WAL lets it read the last commit
//! while the writer writes, so an operator's query never holds up the deliveries.
//!
//! Open it at startup and give it to an [`Inbox`](super::Inbox), whose request path and
//! workers call it; here it is called by hand:
//!
//! ```
//! use std::time::{Duration, SystemTime};
//!
//! use aisoule_webhooks::inbox::sqlite::{SqliteStore, Synchronous};
//! use aisoule_webhooks::inbox::{InboxStore, Inserted, JobState, NewDelivery};
//!
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! # let dir = tempfile::tempdir().unwrap();
//! # let path = dir.path().join("inbox.sqlite3");
//! let store = SqliteStore::builder(&path)
//!     .synchronous(Synchronous::Full)
//!     .open()?;
//! let now = SystemTime::now();
//! let delivery = NewDelivery {
//!     key: "message.incoming:wamid.HBgM".to_owned(),
//!     body: r#"{"event":"message.incoming","data":{}}"#.into(),
//!     headers: vec![("x-aisoule-signature".to_owned(), "sha256=…".to_owned())],
//!     secret_label: "current".to_owned(),
//!     received_at: now,
//!     conversation: Some("+919800000001".to_owned()),
//!     quarantine: None,
//!     account: None,
//! };
//! // Answered once committed: the request path may now answer 200.
//! let Inserted::New(id) = store.insert(delivery.clone()).await? else { unreachable!() };
//! // The platform's retry of the same event writes nothing.
//! assert_eq!(store.insert(delivery).await?, Inserted::Duplicate);
//!
//! // A worker takes the job for 30 s, runs the handler, and settles it with its fence.
//! let jobs = store.claim(now, Duration::from_secs(30), 8, true).await?;
//! assert_eq!(jobs[0].id, id);
//! store.complete(id, jobs[0].fence, SystemTime::now()).await?;
//! assert_eq!(store.get(id).await?.map(|job| job.state), Some(JobState::Done));
//! # Ok::<(), aisoule_webhooks::error::InboxError>(())
//! # }).unwrap();
//! ```
//!
//! # What survives what
//!
//! The store always runs in WAL mode. What an answered insert survives depends on
//! [`Synchronous`]:
//!
//! | setting | process crash (the receiver dies, the OS keeps running) | power loss or OS crash |
//! |---|---|---|
//! | [`Synchronous::Full`] (default) | every answered row survives | every answered row survives |
//! | [`Synchronous::Normal`] | every answered row survives | the last transactions before the loss may be rolled back |
//!
//! That is SQLite's documented behaviour in WAL mode: at `synchronous=FULL` the WAL is synced
//! at every commit; at `NORMAL` it is synced only at checkpoints, so a commit is safe from a
//! crash of the process (it is in the OS's page cache) but not from a power loss. The database
//! is never corrupted either way. With `Normal`, a delivery answered 200 just before a power
//! loss can be lost, because the platform does not send it again: choose it only if that is
//! acceptable.
//!
//! # Why the journal mode is read back
//!
//! `PRAGMA journal_mode=WAL` does not fail when it cannot switch: it answers the mode the
//! database is left in (`memory` for an in-memory database, or the old mode when another
//! connection holds the file in a way that prevents the switch). A store that trusted the
//! request could promise durability it does not have, so [`SqliteStore::open`] reads the mode
//! and the `synchronous` level back, and refuses to open with [`InboxError::NotDurable`] when
//! either is not what was asked.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use rusqlite::types::Type;
use rusqlite::{Connection, OptionalExtension, Row, TransactionBehavior, params};
use tokio::sync::oneshot;

use super::store::{
    ClaimedJob, Fence, InboxBacklog, InboxFuture, InboxStats, InboxStore, Inserted, JobFilter,
    JobId, JobRecord, JobState, NewDelivery, from_millis, to_millis,
};
use crate::error::InboxError;

/// How long a connection waits for a lock held by another connection to the same file (a
/// backup tool, an operator's shell) before an operation fails.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The default for [`SqliteStoreBuilder::max_batch`].
const DEFAULT_MAX_BATCH: usize = 512;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS aisoule_inbox (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    key               TEXT    NOT NULL UNIQUE,
    state             TEXT    NOT NULL,
    attempts          INTEGER NOT NULL DEFAULT 0,
    fence             INTEGER NOT NULL DEFAULT 0,
    last_error        TEXT,
    quarantine_reason TEXT,
    body              BLOB    NOT NULL,
    headers           TEXT    NOT NULL,
    secret_label      TEXT    NOT NULL,
    conversation      TEXT,
    received_at       INTEGER NOT NULL,
    next_run_at       INTEGER NOT NULL,
    lease_until       INTEGER,
    finished_at       INTEGER,
    account           TEXT
);
CREATE INDEX IF NOT EXISTS aisoule_inbox_pending
    ON aisoule_inbox (next_run_at, id) WHERE state = 'pending';
CREATE INDEX IF NOT EXISTS aisoule_inbox_running
    ON aisoule_inbox (lease_until, id) WHERE state = 'running';
CREATE INDEX IF NOT EXISTS aisoule_inbox_done
    ON aisoule_inbox (finished_at, id) WHERE state = 'done';
CREATE INDEX IF NOT EXISTS aisoule_inbox_unfinished_conversation
    ON aisoule_inbox (conversation, id) WHERE state IN ('pending', 'running');
CREATE INDEX IF NOT EXISTS aisoule_inbox_state
    ON aisoule_inbox (state, id);
";

const RECORD_COLUMNS: &str = "id, key, state, attempts, last_error, quarantine_reason, body, \
     headers, secret_label, conversation, received_at, next_run_at, lease_until, finished_at, \
     account";

/// How hard SQLite works to make a commit survive a power loss; see the
/// [module documentation](self) for what each level survives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Synchronous {
    /// `synchronous=FULL`: every commit is synced to disk before it is answered, so an
    /// answered delivery survives a power loss. The default, because the platform does not
    /// send an answered delivery again.
    #[default]
    Full,
    /// `synchronous=NORMAL`: commits survive a crash of the process, but the last ones before
    /// a power loss or OS crash may be rolled back. Faster on disks with slow syncs.
    Normal,
}

impl Synchronous {
    /// The value `PRAGMA synchronous` reports for this level.
    fn level(self) -> i64 {
        match self {
            Self::Full => 2,
            Self::Normal => 1,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Full => "FULL",
            Self::Normal => "NORMAL",
        }
    }
}

/// Configures a [`SqliteStore`]; made by [`SqliteStore::builder`].
#[derive(Debug, Clone)]
#[must_use]
pub struct SqliteStoreBuilder {
    path: PathBuf,
    synchronous: Synchronous,
    max_batch: usize,
}

impl SqliteStoreBuilder {
    /// How durable a commit is: [`Synchronous::Full`] by default. See the
    /// [module documentation](self) for what each level survives.
    pub fn synchronous(mut self, synchronous: Synchronous) -> Self {
        self.synchronous = synchronous;
        self
    }

    /// The most requests committed in one transaction. Defaults to 512: large enough that one
    /// sync acknowledges a burst, small enough that one transaction never holds the file for
    /// long. Values below 1 are taken as 1 (a commit per request).
    pub fn max_batch(mut self, max_batch: usize) -> Self {
        self.max_batch = max_batch.max(1);
        self
    }

    /// Opens (creating if missing) the file and its table, checks that the engine took the
    /// durability settings, and starts the writer thread. Blocks while it opens the file:
    /// call it at startup, not on a request.
    ///
    /// # Errors
    ///
    /// [`InboxError::Store`] when the file cannot be opened or created (a missing or
    /// read-only directory, a file that is not a database) or its schema cannot be created;
    /// [`InboxError::NotDurable`] when the engine does not report WAL mode or the asked
    /// `synchronous` level once set (an in-memory database, for example).
    pub fn open(self) -> Result<SqliteStore, InboxError> {
        let conn = open_connection(&self.path, self.synchronous)?;
        let reader = open_reader(&self.path)?;
        let (sender, receiver) = mpsc::channel();
        let commits = Arc::new(AtomicU64::new(0));
        let writer = Writer {
            conn,
            receiver,
            max_batch: self.max_batch,
            commits: Arc::clone(&commits),
        };
        let thread = std::thread::Builder::new()
            .name("aisoule-inbox-sqlite".to_owned())
            .spawn(move || writer.run())
            .map_err(|e| InboxError::store("start the inbox writer thread", e))?;
        Ok(SqliteStore {
            path: self.path,
            synchronous: self.synchronous,
            max_batch: self.max_batch,
            commits,
            sender: Mutex::new(Some(sender)),
            thread: Mutex::new(Some(thread)),
            reader: Arc::new(Mutex::new(reader)),
        })
    }
}

/// An [`InboxStore`] in one SQLite file, committing concurrent requests together.
///
/// For one receiver process: SQLite files must not be shared over a network file system, and
/// several processes on one file would serialise on its lock. Use the PostgreSQL store for
/// several replicas.
///
/// Its queue is unbounded, so that a request never blocks a runtime thread: bound the number
/// of requests in flight in front of the receiver (a concurrency limit), or a flood outrunning
/// the disk will queue in memory.
///
/// Dropping the store (or [`close`](Self::close)) answers every request already queued, then
/// closes the file; it blocks for as long as that takes.
pub struct SqliteStore {
    path: PathBuf,
    synchronous: Synchronous,
    max_batch: usize,
    commits: Arc<AtomicU64>,
    sender: Mutex<Option<mpsc::Sender<Command>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    /// The connection for `get`, `list` and `stats`: in WAL mode it reads the last commit
    /// while the writer writes, so that an operator's query or a metrics scrape never holds
    /// up the deliveries queued behind it.
    reader: Arc<Mutex<Connection>>,
}

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .field("synchronous", &self.synchronous)
            .field("max_batch", &self.max_batch)
            .field("commits", &self.commits())
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens the store at `path` with every default: [`Synchronous::Full`], batches of up to
    /// 512 requests.
    ///
    /// ```no_run
    /// use aisoule_webhooks::inbox::sqlite::SqliteStore;
    ///
    /// let store = SqliteStore::open("inbox.sqlite3")?;
    /// # Ok::<(), aisoule_webhooks::error::InboxError>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As [`SqliteStoreBuilder::open`].
    pub fn open(path: impl AsRef<Path>) -> Result<Self, InboxError> {
        Self::builder(path).open()
    }

    /// A builder for a store at `path`, to choose its durability and batch size.
    pub fn builder(path: impl AsRef<Path>) -> SqliteStoreBuilder {
        SqliteStoreBuilder {
            path: path.as_ref().to_owned(),
            synchronous: Synchronous::default(),
            max_batch: DEFAULT_MAX_BATCH,
        }
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The `synchronous` level, as the engine reported it back when the store opened.
    pub fn synchronous(&self) -> Synchronous {
        self.synchronous
    }

    /// How many transactions the writer thread has committed: a diagnostics number. Compared
    /// with the number of requests it shows how well group commit batches (one commit per
    /// request means no batching). Not a count of rows.
    pub fn commits(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }

    /// Stops taking requests, answers every request already queued, and waits for the writer
    /// thread to close the file, so that the file can then be copied or opened again. Later
    /// requests fail with [`InboxError::Closed`]. Blocks for at most the queued work; calling
    /// it again does nothing. Dropping the store does the same.
    pub fn close(&self) {
        drop(lock(&self.sender).take());
        let thread = lock(&self.thread).take();
        if let Some(thread) = thread {
            // The writer catches nothing: a panic there is a bug already reported on stderr,
            // and every waiter it dropped has been answered `Closed`.
            let _ = thread.join();
        }
    }

    /// Queues the command `make` builds for the writer thread, and returns its answer. It is
    /// queued now, not when the future is first polled, so that no future keeps the channel
    /// open: the writer ends as soon as the store is dropped.
    fn submit<T: Send + 'static>(
        &self,
        make: impl FnOnce(Reply<T>) -> Command,
    ) -> InboxFuture<'static, T> {
        let (reply, answer) = oneshot::channel();
        let sent = match lock(&self.sender).as_ref() {
            Some(sender) => sender.send(make(reply)).is_ok(),
            None => false,
        };
        Box::pin(async move {
            if !sent {
                return Err(InboxError::Closed);
            }
            answer.await.unwrap_or(Err(InboxError::Closed))
        })
    }
}

impl SqliteStore {
    /// Runs `query` on the reader connection, on tokio's blocking pool.
    fn read<T: Send + 'static>(
        &self,
        operation: &'static str,
        query: impl FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> InboxFuture<'static, T> {
        let open = lock(&self.sender).is_some();
        let reader = Arc::clone(&self.reader);
        Box::pin(async move {
            if !open {
                return Err(InboxError::Closed);
            }
            tokio::task::spawn_blocking(move || query(&mut lock(&reader)))
                .await
                .map_err(|e| InboxError::store(operation, e))?
                .map_err(|e| InboxError::store(operation, e))
        })
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        self.close();
    }
}

/// Locks `mutex`, ignoring poisoning: the data behind these locks (an `Option`) is valid
/// whatever panicked while holding it.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn open_connection(path: &Path, synchronous: Synchronous) -> Result<Connection, InboxError> {
    let opening = |e| InboxError::store("open the inbox file", e);
    let mut conn = Connection::open(path).map_err(opening)?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(opening)?;
    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
        .map_err(opening)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(InboxError::NotDurable {
            asked: "journal_mode=wal".to_owned(),
            got: format!("journal_mode={mode}"),
        });
    }
    conn.pragma_update(None, "synchronous", synchronous.name())
        .map_err(opening)?;
    let level: i64 = conn
        .pragma_query_value(None, "synchronous", |row| row.get(0))
        .map_err(opening)?;
    if level != synchronous.level() {
        return Err(InboxError::NotDurable {
            asked: format!("synchronous={}", synchronous.name()),
            got: format!("synchronous={level}"),
        });
    }
    conn.execute_batch(SCHEMA)
        .map_err(|e| InboxError::store("create the inbox table", e))?;
    add_account_column(&mut conn)
        .map_err(|e| InboxError::store("add the account column to the inbox table", e))?;
    Ok(conn)
}

/// Upgrades a table created before the inbox kept accounts. SQLite has no
/// `ADD COLUMN IF NOT EXISTS`, so the column is looked up first, under a write lock so that
/// two processes opening the same old file do not both add it.
fn add_account_column(conn: &mut Connection) -> rusqlite::Result<()> {
    let upgrade = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let has_account: bool = upgrade.query_row(
        "SELECT EXISTS (SELECT 1 FROM pragma_table_info('aisoule_inbox') WHERE name = 'account')",
        [],
        |row| row.get(0),
    )?;
    if !has_account {
        upgrade.execute_batch("ALTER TABLE aisoule_inbox ADD COLUMN account TEXT")?;
    }
    upgrade.commit()
}

/// The reader connection: opened after the writer has set WAL mode and created the table,
/// and refusing to write, so that no query through it can bypass the writer thread.
fn open_reader(path: &Path) -> Result<Connection, InboxError> {
    let opening = |e| InboxError::store("open the inbox file", e);
    let conn = Connection::open(path).map_err(opening)?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(opening)?;
    conn.pragma_update(None, "query_only", true)
        .map_err(opening)?;
    Ok(conn)
}

type Reply<T> = oneshot::Sender<Result<T, InboxError>>;

/// A request for the writer thread.
enum Command {
    Insert(NewDelivery, Reply<Inserted>),
    Claim {
        now: SystemTime,
        lease: Duration,
        limit: usize,
        ordered: bool,
        reply: Reply<Vec<ClaimedJob>>,
    },
    Renew(JobId, Fence, SystemTime, Reply<()>),
    Complete(JobId, Fence, SystemTime, Reply<()>),
    Fail {
        id: JobId,
        fence: Fence,
        error: String,
        retry_at: Option<SystemTime>,
        now: SystemTime,
        reply: Reply<()>,
    },
    Release(JobId, Fence, SystemTime, Reply<()>),
    Replay(JobFilter, SystemTime, Reply<u64>),
    Purge(SystemTime, usize, Reply<u64>),
}

/// An engine error shared by every waiter of the batch it failed.
type SharedError = Arc<rusqlite::Error>;

/// A command's answer, held until its batch's commit: sent as is when the commit succeeds,
/// replaced by the commit's error when it does not.
type Settle = Box<dyn FnOnce(Option<&SharedError>)>;

fn settle<T: Send + 'static>(
    reply: Reply<T>,
    operation: &'static str,
    result: Result<T, InboxError>,
) -> Settle {
    Box::new(move |failed| {
        let answer = match failed {
            None => result,
            Some(e) => Err(InboxError::store(operation, Arc::clone(e))),
        };
        // A waiter that stopped waiting (its future was dropped) needs no answer.
        let _ = reply.send(answer);
    })
}

/// The writer thread: the one owner of the write connection.
struct Writer {
    conn: Connection,
    receiver: mpsc::Receiver<Command>,
    max_batch: usize,
    commits: Arc<AtomicU64>,
}

impl Writer {
    /// Runs batches until every sender is gone and the queue is empty.
    fn run(mut self) {
        while let Ok(first) = self.receiver.recv() {
            let mut batch = Vec::with_capacity(self.max_batch.min(64));
            batch.push(first);
            while batch.len() < self.max_batch {
                match self.receiver.try_recv() {
                    Ok(command) => batch.push(command),
                    Err(_) => break,
                }
            }
            self.run_batch(batch);
        }
    }

    /// Runs `batch` in one transaction, commits once, then answers every command.
    fn run_batch(&mut self, batch: Vec<Command>) {
        let tx = match self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
        {
            Ok(tx) => tx,
            Err(e) => {
                let e = Arc::new(e);
                for command in batch {
                    fail_unrun(command, &e);
                }
                return;
            }
        };
        let mut settles = Vec::with_capacity(batch.len());
        let mut commands = batch.into_iter();
        while let Some(command) = commands.next() {
            let (settle, engine_error) = execute(&tx, command);
            settles.push(settle);
            if let Some(e) = engine_error.filter(|_| tx.is_autocommit()) {
                // The engine rolled the whole transaction back (a full disk, an I/O error, a
                // trigger's `RAISE(ROLLBACK)`): nothing this batch did is kept, so every
                // request in it gets that error, and none is told otherwise.
                drop(tx);
                for settle in settles {
                    settle(Some(&e));
                }
                for command in commands {
                    fail_unrun(command, &e);
                }
                return;
            }
        }
        match tx.commit() {
            Ok(()) => {
                self.commits.fetch_add(1, Ordering::Relaxed);
                for settle in settles {
                    settle(None);
                }
            }
            Err(e) => {
                // `commit` rolls back on failure (the transaction is dropped with it).
                let e = Arc::new(e);
                for settle in settles {
                    settle(Some(&e));
                }
            }
        }
    }
}

/// Answers a command that never ran with `e`.
fn fail_unrun(command: Command, e: &SharedError) {
    let store_error = |operation| InboxError::store(operation, Arc::clone(e));
    let _ = match command {
        Command::Insert(_, reply) => reply.send(Err(store_error(INSERT))).is_ok(),
        Command::Claim { reply, .. } => reply.send(Err(store_error(CLAIM))).is_ok(),
        Command::Renew(.., reply) => reply.send(Err(store_error(RENEW))).is_ok(),
        Command::Complete(.., reply) => reply.send(Err(store_error(COMPLETE))).is_ok(),
        Command::Fail { reply, .. } => reply.send(Err(store_error(FAIL))).is_ok(),
        Command::Release(.., reply) => reply.send(Err(store_error(RELEASE))).is_ok(),
        Command::Replay(.., reply) => reply.send(Err(store_error(REPLAY))).is_ok(),
        Command::Purge(.., reply) => reply.send(Err(store_error(PURGE))).is_ok(),
    };
}

const INSERT: &str = "insert a delivery";
const CLAIM: &str = "claim jobs";
const RENEW: &str = "renew a lease";
const COMPLETE: &str = "complete a job";
const FAIL: &str = "record a failed attempt";
const RELEASE: &str = "release a job";
const GET: &str = "read a job";
const LIST: &str = "list jobs";
const REPLAY: &str = "replay jobs";
const PURGE: &str = "purge handled jobs";
const STATS: &str = "count jobs";
const BACKLOG: &str = "count unfinished jobs";

/// Runs one command inside the batch's transaction. Returns its answer, and the engine's
/// error if it failed (as opposed to a lost lease, which is an answer).
fn execute(conn: &Connection, command: Command) -> (Settle, Option<SharedError>) {
    fn done<T: Send + 'static>(
        reply: Reply<T>,
        operation: &'static str,
        result: rusqlite::Result<Result<T, InboxError>>,
    ) -> (Settle, Option<SharedError>) {
        match result {
            Ok(answer) => (settle(reply, operation, answer), None),
            Err(e) => {
                let e = Arc::new(e);
                let answer = Err(InboxError::store(operation, Arc::clone(&e)));
                (settle(reply, operation, answer), Some(e))
            }
        }
    }
    match command {
        Command::Insert(delivery, reply) => done(reply, INSERT, insert(conn, &delivery).map(Ok)),
        Command::Claim {
            now,
            lease,
            limit,
            ordered,
            reply,
        } => done(
            reply,
            CLAIM,
            claim(conn, now, lease, limit, ordered).map(Ok),
        ),
        Command::Renew(id, fence, until, reply) => done(
            reply,
            RENEW,
            settle_running(
                conn,
                id,
                "UPDATE aisoule_inbox SET lease_until = ?3 \
                 WHERE id = ?1 AND fence = ?2 AND state = 'running'",
                params![id.0, fence.0, to_millis(until)],
            ),
        ),
        Command::Complete(id, fence, now, reply) => done(
            reply,
            COMPLETE,
            settle_running(
                conn,
                id,
                "UPDATE aisoule_inbox SET state = 'done', finished_at = ?3, lease_until = NULL \
                 WHERE id = ?1 AND fence = ?2 AND state = 'running'",
                params![id.0, fence.0, to_millis(now)],
            ),
        ),
        Command::Fail {
            id,
            fence,
            error,
            retry_at,
            now,
            reply,
        } => {
            let result = match retry_at {
                Some(at) => settle_running(
                    conn,
                    id,
                    "UPDATE aisoule_inbox SET state = 'pending', next_run_at = ?3, \
                     last_error = ?4, lease_until = NULL \
                     WHERE id = ?1 AND fence = ?2 AND state = 'running'",
                    params![id.0, fence.0, to_millis(at), error],
                ),
                None => settle_running(
                    conn,
                    id,
                    "UPDATE aisoule_inbox SET state = 'dead', finished_at = ?3, \
                     last_error = ?4, lease_until = NULL \
                     WHERE id = ?1 AND fence = ?2 AND state = 'running'",
                    params![id.0, fence.0, to_millis(now), error],
                ),
            };
            done(reply, FAIL, result)
        }
        Command::Release(id, fence, now, reply) => {
            let result = conn
                .prepare_cached(
                    "UPDATE aisoule_inbox SET state = 'pending', next_run_at = ?3, \
                     lease_until = NULL, attempts = max(attempts - 1, 0) \
                     WHERE id = ?1 AND fence = ?2 AND state = 'running'",
                )
                .and_then(|mut stmt| stmt.execute(params![id.0, fence.0, to_millis(now)]))
                .map(|_| Ok(()));
            done(reply, RELEASE, result)
        }
        Command::Replay(filter, now, reply) => {
            let result = conn
                .prepare_cached(
                    "UPDATE aisoule_inbox SET state = 'pending', attempts = 0, fence = fence + 1, \
                     next_run_at = ?4, lease_until = NULL \
                     WHERE (?1 IS NULL OR id = ?1) AND (?2 IS NULL OR state = ?2) \
                     AND (?3 IS NULL OR id > ?3)",
                )
                .and_then(|mut stmt| {
                    stmt.execute(params![
                        filter.id.map(|id| id.0),
                        filter.state.map(JobState::as_str),
                        filter.after.map(|id| id.0),
                        to_millis(now),
                    ])
                })
                .map(|changed| Ok(changed as u64));
            done(reply, REPLAY, result)
        }
        Command::Purge(before, batch, reply) => {
            let result = conn
                .prepare_cached(
                    "DELETE FROM aisoule_inbox WHERE id IN (\
                     SELECT id FROM aisoule_inbox WHERE state = 'done' AND finished_at < ?1 \
                     ORDER BY finished_at, id LIMIT ?2)",
                )
                .and_then(|mut stmt| {
                    stmt.execute(params![
                        to_millis(before),
                        i64::try_from(batch).unwrap_or(i64::MAX)
                    ])
                })
                .map(|deleted| Ok(deleted as u64));
            done(reply, PURGE, result)
        }
    }
}

fn insert(conn: &Connection, delivery: &NewDelivery) -> rusqlite::Result<Inserted> {
    let headers = serde_json::to_string(&delivery.headers)
        .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
    let state = if delivery.quarantine.is_some() {
        JobState::Quarantined
    } else {
        JobState::Pending
    };
    let received_at = to_millis(delivery.received_at);
    let mut stmt = conn.prepare_cached(
        "INSERT INTO aisoule_inbox (key, state, quarantine_reason, body, headers, secret_label, \
         conversation, received_at, next_run_at, account) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8, ?9) \
         ON CONFLICT (key) DO NOTHING RETURNING id",
    )?;
    let id: Option<i64> = stmt
        .query_row(
            params![
                delivery.key,
                state.as_str(),
                delivery.quarantine,
                &delivery.body[..],
                headers,
                delivery.secret_label,
                delivery.conversation,
                received_at,
                delivery.account,
            ],
            |row| row.get(0),
        )
        .optional()?;
    Ok(id.map_or(Inserted::Duplicate, |id| Inserted::New(JobId(id))))
}

/// With `ordered` (`?4`), a row waits while an earlier row of its conversation is pending or
/// running; that earlier row is then a candidate itself, or waiting out a backoff.
macro_rules! claimable {
    ($state:literal, $due:literal) => {
        concat!(
            "SELECT id FROM (SELECT j.id FROM aisoule_inbox AS j WHERE j.state = '",
            $state,
            "' AND ",
            $due,
            " AND (?4 = 0 OR j.conversation IS NULL OR NOT EXISTS (\
             SELECT 1 FROM aisoule_inbox AS e \
             WHERE e.conversation = j.conversation AND e.id < j.id \
             AND e.state IN ('pending', 'running'))) \
             ORDER BY j.id LIMIT ?3)"
        )
    };
}

/// Takes up to `?3` rows due at `?1` for a lease ending at `?2`, oldest id first.
const CLAIM_SQL: &str = concat!(
    "UPDATE aisoule_inbox SET state = 'running', attempts = attempts + 1, \
     fence = fence + 1, lease_until = ?2 \
     WHERE id IN (SELECT id FROM (",
    claimable!("pending", "j.next_run_at <= ?1"),
    " UNION ALL ",
    claimable!("running", "j.lease_until < ?1"),
    ") ORDER BY id LIMIT ?3) \
     RETURNING id, key, body, secret_label, received_at, attempts, fence, account"
);

fn claim(
    conn: &Connection,
    now: SystemTime,
    lease: Duration,
    limit: usize,
    ordered: bool,
) -> rusqlite::Result<Vec<ClaimedJob>> {
    if limit == 0 {
        return Ok(Vec::new());
    }
    let now_ms = to_millis(now);
    let lease_until = to_millis(now.checked_add(lease).unwrap_or(now));
    // One statement picks and takes the rows, so no other claim can see them in between (the
    // writer thread serialises claims anyway). Due pending rows and expired running rows are
    // picked apart, each walking the `(state, id)` index in id order and stopping at the
    // limit: one query with an `OR` would read every due row and sort them, which costs the
    // whole backlog on every claim while the writer thread (and so every insert) waits.
    let mut stmt = conn.prepare_cached(CLAIM_SQL)?;
    let rows = stmt.query_map(
        params![
            now_ms,
            lease_until,
            i64::try_from(limit).unwrap_or(i64::MAX),
            ordered
        ],
        |row| {
            Ok(ClaimedJob {
                id: JobId(row.get(0)?),
                key: row.get(1)?,
                body: Bytes::from(row.get::<_, Vec<u8>>(2)?),
                secret_label: row.get(3)?,
                received_at: from_millis(row.get(4)?),
                attempt: u32::try_from(row.get::<_, i64>(5)?).unwrap_or(u32::MAX),
                fence: Fence(row.get(6)?),
                account: row.get(7)?,
            })
        },
    )?;
    let mut jobs = rows.collect::<rusqlite::Result<Vec<_>>>()?;
    // RETURNING gives rows in no promised order.
    jobs.sort_by_key(|job| job.id);
    Ok(jobs)
}

/// Runs `sql`, an update of a running row held by `fence`: the row changed, or the lease was
/// lost.
fn settle_running(
    conn: &Connection,
    id: JobId,
    sql: &str,
    params: &[&dyn rusqlite::ToSql],
) -> rusqlite::Result<Result<(), InboxError>> {
    let changed = conn.prepare_cached(sql)?.execute(params)?;
    Ok(if changed == 1 {
        Ok(())
    } else {
        Err(InboxError::LeaseLost { id: id.0 })
    })
}

fn list(conn: &Connection, filter: &JobFilter) -> rusqlite::Result<Vec<JobRecord>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {RECORD_COLUMNS} FROM aisoule_inbox \
         WHERE (?1 IS NULL OR id = ?1) AND (?2 IS NULL OR state = ?2) AND (?3 IS NULL OR id > ?3) \
         ORDER BY id LIMIT ?4"
    ))?;
    let limit = filter
        .limit
        .map_or(-1, |limit| i64::try_from(limit).unwrap_or(i64::MAX));
    let rows = stmt.query_map(
        params![
            filter.id.map(|id| id.0),
            filter.state.map(JobState::as_str),
            filter.after.map(|id| id.0),
            limit,
        ],
        record,
    )?;
    rows.collect()
}

fn stats(conn: &mut Connection) -> rusqlite::Result<InboxStats> {
    counts(
        conn,
        "SELECT state, count(*) FROM aisoule_inbox GROUP BY state",
    )
}

/// The counts of [`stats`] but done's, which stay 0: the state index's range of each other
/// state is all it reads, however many done rows there are.
fn backlog(conn: &mut Connection) -> rusqlite::Result<InboxBacklog> {
    counts(
        conn,
        "SELECT state, count(*) FROM aisoule_inbox \
         WHERE state IN ('pending', 'running', 'dead', 'quarantined') GROUP BY state",
    )
    .map(InboxBacklog::from)
}

/// The counts by state `count_by_state` returns (`state, count(*)` rows), and the oldest
/// pending row's receipt time.
fn counts(conn: &mut Connection, count_by_state: &str) -> rusqlite::Result<InboxStats> {
    // One read transaction: the counts and the oldest pending row come from one snapshot.
    let conn = conn.transaction()?;
    let mut stats = InboxStats::default();
    {
        let mut stmt = conn.prepare_cached(count_by_state)?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            let count = u64::try_from(row.get::<_, i64>(1)?).unwrap_or(0);
            match state_at(row, 0)? {
                JobState::Pending => stats.pending = count,
                JobState::Running => stats.running = count,
                JobState::Done => stats.done = count,
                JobState::Dead => stats.dead = count,
                JobState::Quarantined => stats.quarantined = count,
            }
        }
    }
    let oldest: Option<i64> = conn
        .prepare_cached("SELECT min(received_at) FROM aisoule_inbox WHERE state = 'pending'")?
        .query_row([], |row| row.get(0))?;
    stats.oldest_pending_received_at = oldest.map(from_millis);
    conn.commit()?;
    Ok(stats)
}

/// A value the store wrote but cannot read back (edited by hand, or by another version).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Unreadable(String);

fn state_at(row: &Row<'_>, index: usize) -> rusqlite::Result<JobState> {
    let name: String = row.get(index)?;
    JobState::from_name(&name).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            index,
            Type::Text,
            Box::new(Unreadable(format!("unknown job state `{name}`"))),
        )
    })
}

fn record(row: &Row<'_>) -> rusqlite::Result<JobRecord> {
    let headers: String = row.get(7)?;
    let headers = serde_json::from_str(&headers)
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(7, Type::Text, Box::new(e)))?;
    Ok(JobRecord {
        id: JobId(row.get(0)?),
        key: row.get(1)?,
        state: state_at(row, 2)?,
        attempts: u32::try_from(row.get::<_, i64>(3)?).unwrap_or(u32::MAX),
        last_error: row.get(4)?,
        quarantine_reason: row.get(5)?,
        body: Bytes::from(row.get::<_, Vec<u8>>(6)?),
        headers,
        secret_label: row.get(8)?,
        conversation: row.get(9)?,
        account: row.get(14)?,
        received_at: from_millis(row.get(10)?),
        next_run_at: from_millis(row.get(11)?),
        lease_until: row.get::<_, Option<i64>>(12)?.map(from_millis),
        finished_at: row.get::<_, Option<i64>>(13)?.map(from_millis),
    })
}

impl InboxStore for SqliteStore {
    fn insert(&self, delivery: NewDelivery) -> InboxFuture<'_, Inserted> {
        self.submit(|reply| Command::Insert(delivery, reply))
    }

    fn claim(
        &self,
        now: SystemTime,
        lease: Duration,
        limit: usize,
        ordered: bool,
    ) -> InboxFuture<'_, Vec<ClaimedJob>> {
        self.submit(|reply| Command::Claim {
            now,
            lease,
            limit,
            ordered,
            reply,
        })
    }

    fn renew(&self, id: JobId, fence: Fence, until: SystemTime) -> InboxFuture<'_, ()> {
        self.submit(|reply| Command::Renew(id, fence, until, reply))
    }

    fn complete(&self, id: JobId, fence: Fence, now: SystemTime) -> InboxFuture<'_, ()> {
        self.submit(|reply| Command::Complete(id, fence, now, reply))
    }

    fn fail<'a>(
        &'a self,
        id: JobId,
        fence: Fence,
        error: &'a str,
        retry_at: Option<SystemTime>,
        now: SystemTime,
    ) -> InboxFuture<'a, ()> {
        let error = error.to_owned();
        self.submit(|reply| Command::Fail {
            id,
            fence,
            error,
            retry_at,
            now,
            reply,
        })
    }

    fn release(&self, id: JobId, fence: Fence, now: SystemTime) -> InboxFuture<'_, ()> {
        self.submit(|reply| Command::Release(id, fence, now, reply))
    }

    fn get(&self, id: JobId) -> InboxFuture<'_, Option<JobRecord>> {
        self.read(GET, move |conn| {
            conn.prepare_cached(&format!(
                "SELECT {RECORD_COLUMNS} FROM aisoule_inbox WHERE id = ?1"
            ))?
            .query_row([id.0], record)
            .optional()
        })
    }

    fn list(&self, filter: JobFilter) -> InboxFuture<'_, Vec<JobRecord>> {
        self.read(LIST, move |conn| list(conn, &filter))
    }

    fn replay(&self, filter: JobFilter, now: SystemTime) -> InboxFuture<'_, u64> {
        self.submit(|reply| Command::Replay(filter, now, reply))
    }

    fn purge(&self, finished_before: SystemTime, batch: usize) -> InboxFuture<'_, u64> {
        self.submit(|reply| Command::Purge(finished_before, batch, reply))
    }

    fn stats(&self) -> InboxFuture<'_, InboxStats> {
        self.read(STATS, stats)
    }

    fn backlog(&self) -> InboxFuture<'_, InboxBacklog> {
        self.read(BACKLOG, backlog)
    }
}
