//! The inbox on PostgreSQL, for receivers that run several replicas behind a load balancer.
//!
//! Every replica connects to the same database; the platform's redelivery may reach any of them,
//! and the key's `UNIQUE` constraint makes it a duplicate wherever it lands. Workers of all
//! replicas claim from the one table with `FOR UPDATE SKIP LOCKED`, so they never wait on each
//! other's rows and never get the same row twice while its lease runs.
//!
//! ```no_run
//! use aisoule_webhooks::inbox::Inbox;
//! use aisoule_webhooks::inbox::postgres::PostgresStore;
//!
//! # async fn run() -> Result<(), aisoule_webhooks::InboxError> {
//! let store = PostgresStore::builder("postgres://inbox@db.internal/app")
//!     .schema("webhooks")
//!     .max_connections(20)
//!     .connect()
//!     .await?;
//! let inbox = Inbox::new(store);
//! # let _ = inbox;
//! # Ok(()) }
//! ```
//!
//! # The table
//!
//! [`connect`](PostgresStore::connect) creates `aisoule_inbox` and its indexes in the chosen
//! schema if they are missing, under a transaction-scoped advisory lock, so that replicas
//! starting together do not race each other's `CREATE`. Times are `BIGINT` milliseconds since the
//! Unix epoch, given by the caller (the inbox's [`Clock`](crate::clock::Clock)): the database's
//! own `now()` is never used. Leases therefore compare times from different replicas' clocks;
//! keep the replicas' clocks NTP-synchronised, and keep the lease (30 s by default) far above
//! their skew.
//!
//! `fence` is incremented by every claim and every replay and never reset: it is the fencing
//! token that stops a worker whose lease was taken over from settling the row.
//!
//! # Staying healthy under churn
//!
//! A row is written once and updated two or three times (claimed, then done; or retried), then
//! kept as `done` for the retention (7 days by default) so that redeliveries stay duplicates.
//! Almost every row is therefore `done`, and the work happens among the few others:
//!
//! - The indexes the workers use are partial: pending rows by `(id, next_run_at)` (claims take
//!   the oldest id first, and skip rows waiting out a backoff inside the index), running rows
//!   by `lease_until`, unfinished rows by `(conversation, id)`, dead and quarantined rows by
//!   `(state, id)`. They hold only the rows that are not done, so they stay small and hot in
//!   memory however large the table grows. Done rows are indexed by `finished_at` only, for the
//!   purge.
//! - Counting the done rows for [`Inbox::stats`](crate::inbox::Inbox::stats) reads all of them
//!   (about 50 ms per 500 000 on a small VM), and listing or replaying by state reads the
//!   table: poll the stats every few seconds, not per request. The workers' inbox metrics
//!   come from [`InboxStore::backlog`] instead, which counts through the partial indexes only.
//! - [`Inbox::purge`](crate::inbox::Inbox::purge) deletes old done rows in batches of 1 000
//!   oldest first, one short transaction each, so it never holds locks or a snapshot for long.
//!   Call it periodically (say hourly) from one replica; several replicas purging at once is
//!   harmless, just wasted work.
//! - Every update and the purge leave dead row versions; autovacuum reclaims them. Its defaults
//!   suit this table, since the churn is proportional to the traffic. For very high rates,
//!   lower the table's `autovacuum_vacuum_scale_factor` (for example
//!   `ALTER TABLE aisoule_inbox SET (autovacuum_vacuum_scale_factor = 0.02)`) so that vacuum
//!   runs in smaller, more frequent passes.
//! - The table keeps PostgreSQL's default `fillfactor` (100). A lower one lets an update put the
//!   new row version on the same page, but claims and completions change `state`, which the
//!   partial indexes' predicates read, and `lease_until`, which is indexed: those updates can
//!   never be HOT updates, so the index entries are written anyway and the gain is small. Lower
//!   it yourself (`ALTER TABLE ... SET (fillfactor = 90)`) if measurements on your load say
//!   otherwise.
//!
//! # Insert batching
//!
//! Inserts are committed in groups: one task per store takes the inserts waiting at that moment
//! (up to [`max_batch`](PostgresStoreBuilder::max_batch)) and writes them with one
//! `INSERT ... SELECT FROM unnest(...) ON CONFLICT (key) DO NOTHING`, so that a burst costs one
//! commit (one WAL flush) instead of one each. Each insert is answered only after that statement
//! has committed.
//!
//! # Ordering across replicas
//!
//! With [`ordered_by_conversation`](crate::inbox::InboxBuilder::ordered_by_conversation), rows of
//! one conversation run in id order. Ids come from a sequence when each insert runs, but two
//! replicas' inserts can commit in the other order; a row committed a moment late can then run
//! after a later one of its conversation. Within one replica the batcher keeps receipt order.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use sqlx::postgres::{PgPool, PgPoolOptions, PgRow};
use sqlx::{AssertSqlSafe, Row};
use tokio::sync::{mpsc, oneshot};

use super::store::{
    ClaimedJob, Fence, InboxBacklog, InboxFuture, InboxStats, InboxStore, Inserted, JobFilter,
    JobId, JobRecord, JobState, NewDelivery, from_millis, to_millis,
};
use crate::error::InboxError;

/// The table's name, in the schema chosen with [`PostgresStoreBuilder::schema`].
pub const TABLE: &str = "aisoule_inbox";

/// The advisory lock taken while creating the table, so that replicas starting together
/// create it once. An arbitrary constant: `aisoule` in ASCII.
const SCHEMA_LOCK: i64 = 0x0061_6973_6f75_6c65;

/// The columns a [`JobRecord`] is read from, in the order `record` reads them.
const RECORD_COLUMNS: &str = "id, key, state, attempts, last_error, quarantine_reason, body, \
     headers, secret_label, conversation, received_at, next_run_at, \
     lease_until, finished_at, account";

/// An inbox store in a PostgreSQL table, shared by every replica that connects to it.
///
/// Cheap to share behind an `Arc` (as [`Inbox`](crate::inbox::Inbox) does). Dropping the store
/// ends its insert batcher; the pool's connections close with it.
pub struct PostgresStore {
    pool: PgPool,
    sql: Arc<Statements>,
    schema: String,
    timeout: Duration,
    inserts: mpsc::UnboundedSender<PendingInsert>,
}

impl fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresStore")
            .field("schema", &self.schema)
            .field("connections", &self.pool.size())
            .finish_non_exhaustive()
    }
}

/// Configures a [`PostgresStore`]; from [`PostgresStore::builder`].
#[derive(Clone)]
#[must_use]
pub struct PostgresStoreBuilder {
    url: String,
    schema: String,
    max_connections: u32,
    max_batch: usize,
    acquire_timeout: Duration,
    timeout: Duration,
}

/// Leaves out the URL, which may hold a password.
impl fmt::Debug for PostgresStoreBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresStoreBuilder")
            .field("schema", &self.schema)
            .field("max_connections", &self.max_connections)
            .field("max_batch", &self.max_batch)
            .field("acquire_timeout", &self.acquire_timeout)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl PostgresStoreBuilder {
    /// The most connections the store's pool opens. Defaults to 10: the workers of one replica,
    /// its insert batcher and the operators' calls rarely need more, and every replica opens its
    /// own pool against the server's `max_connections`.
    pub fn max_connections(mut self, max: u32) -> Self {
        self.max_connections = max.max(1);
        self
    }

    /// The schema that holds the table, created if missing. Defaults to `public`. Lets you keep
    /// the inbox apart from your application's tables, or run several inboxes (or tests) in one
    /// database.
    pub fn schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = schema.into();
        self
    }

    /// The most inserts committed by one statement. Defaults to 512: large enough that a burst
    /// costs few commits, small enough that one statement's parameters stay a few megabytes.
    pub fn max_batch(mut self, max: usize) -> Self {
        self.max_batch = max.max(1);
        self
    }

    /// How long an operation waits for a connection before it fails with
    /// [`InboxError::Store`]. Defaults to 2 s, so that with the server down the request path
    /// answers 503 well within the platform's 5 s deadline instead of hanging.
    pub fn acquire_timeout(mut self, timeout: Duration) -> Self {
        self.acquire_timeout = timeout;
        self
    }

    /// How long one operation may take in all, waiting for a connection included, before it
    /// fails with [`InboxError::Store`]. Defaults to 4 s, below the platform's 5 s deadline.
    /// It covers what the acquire timeout cannot see: a server that stopped answering on an
    /// open connection (a network partition sends no error), and an insert's wait behind
    /// earlier batches.
    ///
    /// An insert that times out may still commit; its 503 makes the platform send it again,
    /// and that redelivery is then a duplicate, so the event still runs once.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Connects, creates the schema, table and indexes if missing, and starts the insert
    /// batcher. Call it inside a tokio runtime.
    ///
    /// # Errors
    ///
    /// [`InboxError::Store`] when the URL is invalid, the server cannot be reached within the
    /// acquire timeout, or the table cannot be created (for example for lack of privileges).
    pub async fn connect(self) -> Result<PostgresStore, InboxError> {
        let pool = PgPoolOptions::new()
            .max_connections(self.max_connections)
            .acquire_timeout(self.acquire_timeout)
            .connect(&self.url)
            .await
            .map_err(|e| InboxError::store("connect to PostgreSQL", e))?;
        let schema = quote_identifier(&self.schema);
        let table = format!("{schema}.{TABLE}");
        create_table(&pool, &self.schema, &schema, &table)
            .await
            .map_err(|e| InboxError::store("create the inbox table", e))?;
        let sql = Arc::new(Statements::new(&table));
        let (inserts, queue) = mpsc::unbounded_channel();
        tokio::spawn(batch_inserts(
            pool.clone(),
            sql.clone(),
            queue,
            self.max_batch,
            self.timeout,
        ));
        Ok(PostgresStore {
            pool,
            sql,
            schema: self.schema,
            timeout: self.timeout,
            inserts,
        })
    }
}

impl PostgresStore {
    /// Connects to `url` (`postgres://user:password@host:port/database`) with every default;
    /// see [`builder`](Self::builder) for the settings.
    ///
    /// # Errors
    ///
    /// As [`PostgresStoreBuilder::connect`].
    pub async fn connect(url: &str) -> Result<Self, InboxError> {
        Self::builder(url).connect().await
    }

    /// Starts configuring a store on `url`.
    pub fn builder(url: impl Into<String>) -> PostgresStoreBuilder {
        PostgresStoreBuilder {
            url: url.into(),
            schema: "public".to_owned(),
            max_connections: 10,
            max_batch: 512,
            acquire_timeout: Duration::from_secs(2),
            timeout: Duration::from_secs(4),
        }
    }

    /// The schema that holds the table, as configured (unquoted).
    pub fn schema(&self) -> &str {
        &self.schema
    }

    /// Runs `work` for at most the operation timeout, naming `operation` in its error.
    /// Runs `statement`, whose one row is `N` counts and then the oldest pending row's
    /// `received_at`, and returns them.
    async fn counts<const N: usize>(
        &self,
        operation: &'static str,
        statement: &Arc<str>,
    ) -> Result<([u64; N], Option<SystemTime>), InboxError> {
        let work = async {
            let row = query(statement).fetch_one(&self.pool).await?;
            let mut counts = [0; N];
            for (i, count) in counts.iter_mut().enumerate() {
                *count = u64::try_from(row.try_get::<i64, _>(i)?).unwrap_or(0);
            }
            let oldest = row.try_get::<Option<i64>, _>(N)?.map(from_millis);
            Ok((counts, oldest))
        };
        self.run(operation, work).await
    }

    async fn run<T>(
        &self,
        operation: &'static str,
        work: impl Future<Output = Result<T, sqlx::Error>>,
    ) -> Result<T, InboxError> {
        bounded(self.timeout, work)
            .await
            .map_err(|e| InboxError::store(operation, e))
    }

    /// Runs an update of one running row held by `fence`: [`InboxError::LeaseLost`] when it
    /// changed nothing.
    async fn settle(
        &self,
        operation: &'static str,
        id: JobId,
        query: Query,
    ) -> Result<(), InboxError> {
        let done = self.run(operation, query.execute(&self.pool)).await?;
        if done.rows_affected() == 0 {
            return Err(InboxError::LeaseLost { id: id.0 });
        }
        Ok(())
    }
}

/// The engine's error, or [`TimedOut`].
type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// `work`'s outcome, or [`TimedOut`] after `timeout`: dropping a query midway makes sqlx close
/// its connection, so a server that stopped answering (a network partition gives no error)
/// cannot hold a caller, or the insert batcher, forever.
async fn bounded<T>(
    timeout: Duration,
    work: impl Future<Output = Result<T, sqlx::Error>>,
) -> Result<T, BoxError> {
    match tokio::time::timeout(timeout, work).await {
        Ok(result) => result.map_err(Into::into),
        Err(_) => Err(Box::new(TimedOut(timeout))),
    }
}

/// PostgreSQL did not answer within the operation timeout.
#[derive(Debug)]
struct TimedOut(Duration);

impl fmt::Display for TimedOut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PostgreSQL did not answer within {:?}", self.0)
    }
}

impl std::error::Error for TimedOut {}

/// `"name"`, with any `"` doubled: a schema name as an SQL identifier, whatever it holds.
fn quote_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Creates the schema (only if it is missing, so that a user without `CREATE` on the database
/// can use an existing one), the table and its indexes, in one transaction under an advisory
/// lock.
async fn create_table(
    pool: &PgPool,
    schema_name: &str,
    schema: &str,
    table: &str,
) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(SCHEMA_LOCK)
        .execute(&mut *tx)
        .await?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)")
            .bind(schema_name)
            .fetch_one(&mut *tx)
            .await?;
    if !exists {
        sqlx::query(AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
            .execute(&mut *tx)
            .await?;
    }
    let statements = [
        format!(
            "CREATE TABLE IF NOT EXISTS {table} (
                id BIGSERIAL PRIMARY KEY,
                key TEXT NOT NULL UNIQUE,
                state TEXT NOT NULL,
                body BYTEA NOT NULL,
                headers TEXT NOT NULL,
                secret_label TEXT NOT NULL,
                conversation TEXT,
                received_at BIGINT NOT NULL,
                next_run_at BIGINT NOT NULL,
                lease_until BIGINT,
                finished_at BIGINT,
                attempts INT NOT NULL DEFAULT 0,
                fence BIGINT NOT NULL DEFAULT 0,
                last_error TEXT,
                quarantine_reason TEXT,
                account TEXT
            )"
        ),
        format!(
            "CREATE INDEX IF NOT EXISTS {TABLE}_pending ON {table} (id, next_run_at) \
             WHERE state = 'pending'"
        ),
        format!(
            "CREATE INDEX IF NOT EXISTS {TABLE}_running ON {table} (lease_until) \
             WHERE state = 'running'"
        ),
        format!(
            "CREATE INDEX IF NOT EXISTS {TABLE}_done ON {table} (finished_at) \
             WHERE state = 'done'"
        ),
        format!(
            "CREATE INDEX IF NOT EXISTS {TABLE}_conversation ON {table} (conversation, id) \
             WHERE state IN ('pending', 'running')"
        ),
        format!(
            "CREATE INDEX IF NOT EXISTS {TABLE}_held ON {table} (state, id) \
             WHERE state IN ('dead', 'quarantined')"
        ),
    ];
    for statement in statements {
        sqlx::query(AssertSqlSafe(statement))
            .execute(&mut *tx)
            .await?;
    }
    // A table created before the inbox kept accounts gets the column. Looked up first, because
    // `ALTER TABLE` needs the table's owner even when the column exists, and a user who only
    // reads and writes rows must still be able to open an upgraded table.
    let has_account: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pg_attribute \
         WHERE attrelid = $1::regclass AND attname = 'account' AND NOT attisdropped)",
    )
    .bind(table)
    .fetch_one(&mut *tx)
    .await?;
    if !has_account {
        sqlx::query(AssertSqlSafe(format!(
            "ALTER TABLE {table} ADD COLUMN IF NOT EXISTS account TEXT"
        )))
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await
}

/// Every statement, written once per store for its table.
#[derive(Debug)]
struct Statements {
    insert: Arc<str>,
    claim: Arc<str>,
    renew: Arc<str>,
    complete: Arc<str>,
    fail: Arc<str>,
    release: Arc<str>,
    list: Arc<str>,
    replay: Arc<str>,
    purge: Arc<str>,
    stats: Arc<str>,
    backlog: Arc<str>,
}

impl Statements {
    fn new(t: &str) -> Self {
        let running = "WHERE id = $1 AND fence = $2 AND state = 'running'";
        Self {
            insert: format!(
                "INSERT INTO {t} (key, state, body, headers, secret_label, conversation, \
                 received_at, next_run_at, quarantine_reason, account)
                 SELECT k, CASE WHEN q IS NULL THEN 'pending' ELSE 'quarantined' END, b, \
                 h, s, c, r, r, q, a
                 FROM unnest($1::text[], $2::bytea[], $3::text[], $4::text[], $5::text[], \
                 $6::int8[], $7::text[], $8::text[]) WITH ORDINALITY AS u(k, b, h, s, c, r, q, a, n)
                 ORDER BY n
                 ON CONFLICT (key) DO NOTHING
                 RETURNING id, key"
            )
            .into(),
            // Each branch walks only its partial index, in id order: a single `OR` over both
            // states lets the planner walk the primary key instead, through every done row
            // before the first pending one (measured: 60 ms per claim at 500 000 done rows
            // during a backlog, against 0.1 ms this way). Each branch locks at most `$3`
            // rows; the few it locked beyond the `$3` kept are free again when the statement
            // ends.
            claim: format!(
                "WITH picked AS (
                     SELECT id FROM (
                         SELECT j.id FROM {t} j
                         WHERE j.state = 'pending' AND j.next_run_at <= $1 AND {in_turn}
                         ORDER BY j.id LIMIT $3 FOR UPDATE SKIP LOCKED) due
                     UNION ALL
                     SELECT id FROM (
                         SELECT j.id FROM {t} j
                         WHERE j.state = 'running' AND j.lease_until < $1 AND {in_turn}
                         ORDER BY j.id LIMIT $3 FOR UPDATE SKIP LOCKED) expired
                     ORDER BY id LIMIT $3)
                 UPDATE {t} t SET state = 'running', fence = t.fence + 1, \
                 attempts = t.attempts + 1, lease_until = $2
                 FROM picked WHERE t.id = picked.id
                 RETURNING t.id, t.key, t.body, t.secret_label, t.received_at, t.attempts, t.fence, \
                 t.account",
                in_turn = format!(
                    "(NOT $4 OR j.conversation IS NULL OR NOT EXISTS (
                         SELECT 1 FROM {t} e
                         WHERE e.conversation = j.conversation AND e.id < j.id
                           AND e.state IN ('pending', 'running')))"
                ),
            )
            .into(),
            renew: format!("UPDATE {t} SET lease_until = $3 {running}").into(),
            complete: format!(
                "UPDATE {t} SET state = 'done', finished_at = $3, lease_until = NULL {running}"
            )
            .into(),
            fail: format!(
                "UPDATE {t} SET
                     state = CASE WHEN $4::int8 IS NULL THEN 'dead' ELSE 'pending' END,
                     next_run_at = COALESCE($4::int8, next_run_at),
                     finished_at = CASE WHEN $4::int8 IS NULL THEN $5 ELSE finished_at END,
                     lease_until = NULL,
                     last_error = $3
                 {running}"
            )
            .into(),
            release: format!(
                "UPDATE {t} SET state = 'pending', next_run_at = $3, lease_until = NULL, \
                 attempts = GREATEST(attempts - 1, 0) {running}"
            )
            .into(),
            list: format!(
                "SELECT {RECORD_COLUMNS} FROM {t}
                 WHERE ($1::int8 IS NULL OR id = $1) AND ($2::text IS NULL OR state = $2)
                   AND ($3::int8 IS NULL OR id > $3)
                 ORDER BY id LIMIT $4"
            )
            .into(),
            replay: format!(
                "UPDATE {t} SET state = 'pending', attempts = 0, fence = fence + 1, \
                 next_run_at = $4, lease_until = NULL, finished_at = NULL
                 WHERE ($1::int8 IS NULL OR id = $1) AND ($2::text IS NULL OR state = $2)
                   AND ($3::int8 IS NULL OR id > $3)"
            )
            .into(),
            purge: format!(
                "DELETE FROM {t} WHERE id IN (
                     SELECT id FROM {t} WHERE state = 'done' AND finished_at < $1
                     ORDER BY finished_at LIMIT $2)"
            )
            .into(),
            stats: counts_statement(t, &JobState::ALL),
            // Each count reads one partial index (pending, running, held), never a done row.
            backlog: counts_statement(t, &InboxBacklog::STATES),
        }
    }
}

/// One `count(*)` per state of `states`, in their order, each answerable from its state's
/// partial index, then the oldest pending row's `received_at`: the row
/// [`PostgresStore::counts`] reads.
fn counts_statement(t: &str, states: &[JobState]) -> Arc<str> {
    let mut columns: Vec<String> = states
        .iter()
        .map(|state| format!("(SELECT count(*) FROM {t} WHERE state = '{state}')"))
        .collect();
    columns.push(format!(
        "(SELECT min(received_at) FROM {t} WHERE state = 'pending')"
    ));
    format!("SELECT {}", columns.join(", ")).into()
}

/// A statement with its bound values.
type Query = sqlx::query::Query<'static, sqlx::Postgres, sqlx::postgres::PgArguments>;

/// The statement `sql`, which this module wrote from constants and a quoted schema name.
fn query(sql: &Arc<str>) -> Query {
    sqlx::query(AssertSqlSafe(sql.clone()))
}

/// One insert waiting for the batcher, and where to send its answer.
struct PendingInsert {
    delivery: NewDelivery,
    answer: oneshot::Sender<Result<Inserted, InboxError>>,
}

/// An error that every waiter of a failed batch reports as its source.
#[derive(Debug, Clone)]
struct SharedError(Arc<dyn std::error::Error + Send + Sync + 'static>);

impl fmt::Display for SharedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for SharedError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

/// The group commit: takes the first waiting insert, then whatever else is already waiting (up
/// to `max_batch`), writes them with one statement (bounded by `timeout`) and answers each.
/// Ends when the store (the only sender) is dropped.
///
/// When a batch fails, every insert that queued up meanwhile fails with the same error at once
/// instead of trying in turn: with the server down, each batch would wait out the acquire
/// timeout, and a busy receiver's queue would grow faster than 512 per timeout, so waits would
/// grow without bound. The platform retries what was refused.
async fn batch_inserts(
    pool: PgPool,
    sql: Arc<Statements>,
    mut queue: mpsc::UnboundedReceiver<PendingInsert>,
    max_batch: usize,
    timeout: Duration,
) {
    let mut batch = Vec::with_capacity(max_batch);
    while queue.recv_many(&mut batch, max_batch).await > 0 {
        refuse_unstorable(&mut batch);
        if batch.is_empty() {
            continue;
        }
        match bounded(timeout, write_batch(&pool, &sql, &batch)).await {
            Ok(answers) => {
                for (pending, answer) in batch.drain(..).zip(answers) {
                    let _ = pending.answer.send(Ok(answer));
                }
            }
            Err(error) => {
                let shared = SharedError(Arc::from(error));
                while let Ok(pending) = queue.try_recv() {
                    batch.push(pending);
                }
                for pending in batch.drain(..) {
                    let _ = pending
                        .answer
                        .send(Err(InboxError::store("insert a delivery", shared.clone())));
                }
            }
        }
    }
}

/// Answers, and takes out of `batch`, every delivery PostgreSQL would refuse: text holding a
/// NUL character, which a `TEXT` column cannot store. One such delivery would otherwise fail
/// the whole statement, and with it every other delivery of the batch, again at each of the
/// platform's retries.
fn refuse_unstorable(batch: &mut Vec<PendingInsert>) {
    let mut index = 0;
    while index < batch.len() {
        let d = &batch[index].delivery;
        let nul = [
            ("key", Some(d.key.as_str())),
            ("secret label", Some(d.secret_label.as_str())),
            ("conversation", d.conversation.as_deref()),
            ("quarantine reason", d.quarantine.as_deref()),
            ("account", d.account.as_deref()),
        ]
        .into_iter()
        .find_map(|(field, text)| text.is_some_and(|t| t.contains('\0')).then_some(field));
        match nul {
            Some(field) => {
                let pending = batch.remove(index);
                let _ = pending.answer.send(Err(InboxError::store(
                    "insert a delivery",
                    NulInText(field),
                )));
            }
            None => index += 1,
        }
    }
}

/// A delivery's text holds a NUL character, which PostgreSQL's `TEXT` cannot store.
#[derive(Debug)]
struct NulInText(&'static str);

impl fmt::Display for NulInText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the delivery's {} holds a NUL character, which PostgreSQL cannot store",
            self.0
        )
    }
}

impl std::error::Error for NulInText {}

/// Writes `batch` in one statement and says, in its order, which inserts made a row. A key
/// that appears twice is sent once: its first insert may be new, the later ones are duplicates.
async fn write_batch(
    pool: &PgPool,
    sql: &Statements,
    batch: &[PendingInsert],
) -> Result<Vec<Inserted>, sqlx::Error> {
    let mut first: HashMap<&str, usize> = HashMap::with_capacity(batch.len());
    let n = batch.len();
    let (mut keys, mut bodies, mut headers, mut labels) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let (mut conversations, mut received, mut quarantines, mut accounts) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for (index, pending) in batch.iter().enumerate() {
        let d = &pending.delivery;
        match first.entry(d.key.as_str()) {
            Entry::Occupied(_) => continue,
            Entry::Vacant(slot) => slot.insert(index),
        };
        keys.push(d.key.as_str());
        bodies.push(d.body.as_ref());
        headers.push(serde_json::to_string(&d.headers).expect("string pairs serialize"));
        labels.push(d.secret_label.as_str());
        conversations.push(d.conversation.as_deref());
        received.push(to_millis(d.received_at));
        quarantines.push(d.quarantine.as_deref());
        accounts.push(d.account.as_deref());
    }
    let rows = query(&sql.insert)
        .bind(&keys)
        .bind(&bodies)
        .bind(&headers)
        .bind(&labels)
        .bind(&conversations)
        .bind(&received)
        .bind(&quarantines)
        .bind(&accounts)
        .fetch_all(pool)
        .await?;
    let mut created: HashMap<String, i64> = HashMap::with_capacity(rows.len());
    for row in rows {
        created.insert(row.try_get("key")?, row.try_get("id")?);
    }
    Ok(batch
        .iter()
        .enumerate()
        .map(|(index, pending)| {
            let key = pending.delivery.key.as_str();
            match created.get(key) {
                Some(&id) if first.get(key) == Some(&index) => Inserted::New(JobId(id)),
                _ => Inserted::Duplicate,
            }
        })
        .collect())
}

fn duration_millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

fn count(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn attempts(row: &PgRow) -> Result<u32, sqlx::Error> {
    let attempts: i32 = row.try_get("attempts")?;
    Ok(u32::try_from(attempts).unwrap_or(0))
}

fn claimed(row: &PgRow) -> Result<ClaimedJob, sqlx::Error> {
    Ok(ClaimedJob {
        id: JobId(row.try_get("id")?),
        key: row.try_get("key")?,
        body: Bytes::from(row.try_get::<Vec<u8>, _>("body")?),
        secret_label: row.try_get("secret_label")?,
        received_at: from_millis(row.try_get("received_at")?),
        attempt: attempts(row)?,
        fence: Fence(row.try_get("fence")?),
        account: row.try_get("account")?,
    })
}

fn record(row: &PgRow) -> Result<JobRecord, sqlx::Error> {
    let state: String = row.try_get("state")?;
    let headers: String = row.try_get("headers")?;
    Ok(JobRecord {
        id: JobId(row.try_get("id")?),
        key: row.try_get("key")?,
        state: JobState::from_name(&state).ok_or_else(|| sqlx::Error::ColumnDecode {
            index: "state".to_owned(),
            source: format!("unknown job state `{state}`").into(),
        })?,
        attempts: attempts(row)?,
        last_error: row.try_get("last_error")?,
        quarantine_reason: row.try_get("quarantine_reason")?,
        body: Bytes::from(row.try_get::<Vec<u8>, _>("body")?),
        headers: serde_json::from_str(&headers).map_err(|e| sqlx::Error::ColumnDecode {
            index: "headers".to_owned(),
            source: Box::new(e),
        })?,
        secret_label: row.try_get("secret_label")?,
        conversation: row.try_get("conversation")?,
        account: row.try_get("account")?,
        received_at: from_millis(row.try_get("received_at")?),
        next_run_at: from_millis(row.try_get("next_run_at")?),
        lease_until: row
            .try_get::<Option<i64>, _>("lease_until")?
            .map(from_millis),
        finished_at: row
            .try_get::<Option<i64>, _>("finished_at")?
            .map(from_millis),
    })
}

/// The filter's id, state and `after` as bind values.
fn filter_binds(filter: &JobFilter) -> (Option<i64>, Option<&'static str>, Option<i64>) {
    (
        filter.id.map(|id| id.0),
        filter.state.map(JobState::as_str),
        filter.after.map(|id| id.0),
    )
}

impl InboxStore for PostgresStore {
    fn insert(&self, delivery: NewDelivery) -> InboxFuture<'_, Inserted> {
        Box::pin(async move {
            let (answer, answered) = oneshot::channel();
            self.inserts
                .send(PendingInsert { delivery, answer })
                .map_err(|_| InboxError::Closed)?;
            // The batcher bounds each statement; this bounds the wait behind earlier batches.
            match tokio::time::timeout(self.timeout, answered).await {
                Ok(Ok(answer)) => answer,
                Ok(Err(_)) => Err(InboxError::Closed),
                Err(_) => Err(InboxError::store(
                    "insert a delivery",
                    TimedOut(self.timeout),
                )),
            }
        })
    }

    fn claim(
        &self,
        now: SystemTime,
        lease: Duration,
        limit: usize,
        ordered: bool,
    ) -> InboxFuture<'_, Vec<ClaimedJob>> {
        Box::pin(async move {
            let now = to_millis(now);
            let work = async {
                let rows = query(&self.sql.claim)
                    .bind(now)
                    .bind(now.saturating_add(duration_millis(lease)))
                    .bind(count(limit))
                    .bind(ordered)
                    .fetch_all(&self.pool)
                    .await?;
                rows.iter().map(claimed).collect::<Result<Vec<_>, _>>()
            };
            let mut jobs = self.run("claim jobs", work).await?;
            jobs.sort_by_key(|job| job.id);
            Ok(jobs)
        })
    }

    fn renew(&self, id: JobId, fence: Fence, until: SystemTime) -> InboxFuture<'_, ()> {
        Box::pin(async move {
            let q = query(&self.sql.renew)
                .bind(id.0)
                .bind(fence.0)
                .bind(to_millis(until));
            self.settle("renew a lease", id, q).await
        })
    }

    fn complete(&self, id: JobId, fence: Fence, now: SystemTime) -> InboxFuture<'_, ()> {
        Box::pin(async move {
            let q = query(&self.sql.complete)
                .bind(id.0)
                .bind(fence.0)
                .bind(to_millis(now));
            self.settle("complete a job", id, q).await
        })
    }

    fn fail<'a>(
        &'a self,
        id: JobId,
        fence: Fence,
        error: &'a str,
        retry_at: Option<SystemTime>,
        now: SystemTime,
    ) -> InboxFuture<'a, ()> {
        Box::pin(async move {
            let q = query(&self.sql.fail)
                .bind(id.0)
                .bind(fence.0)
                // TEXT cannot hold NUL, and a handler's message is free text: a failure that
                // cannot be recorded would leave the row to be retried for ever.
                .bind(error.replace('\0', "\u{fffd}"))
                .bind(retry_at.map(to_millis))
                .bind(to_millis(now));
            self.settle("record a failed attempt", id, q).await
        })
    }

    fn release(&self, id: JobId, fence: Fence, now: SystemTime) -> InboxFuture<'_, ()> {
        Box::pin(async move {
            let q = query(&self.sql.release)
                .bind(id.0)
                .bind(fence.0)
                .bind(to_millis(now));
            self.run("release a job", q.execute(&self.pool)).await?;
            Ok(())
        })
    }

    fn get(&self, id: JobId) -> InboxFuture<'_, Option<JobRecord>> {
        Box::pin(async move {
            let mut rows = self
                .list(JobFilter {
                    id: Some(id),
                    ..JobFilter::default()
                })
                .await?;
            Ok(rows.pop())
        })
    }

    fn list(&self, filter: JobFilter) -> InboxFuture<'_, Vec<JobRecord>> {
        Box::pin(async move {
            let (id, state, after) = filter_binds(&filter);
            let work = async {
                let rows = query(&self.sql.list)
                    .bind(id)
                    .bind(state)
                    .bind(after)
                    .bind(filter.limit.map(count))
                    .fetch_all(&self.pool)
                    .await?;
                rows.iter().map(record).collect::<Result<Vec<_>, _>>()
            };
            self.run("list jobs", work).await
        })
    }

    fn replay(&self, filter: JobFilter, now: SystemTime) -> InboxFuture<'_, u64> {
        Box::pin(async move {
            let (id, state, after) = filter_binds(&filter);
            let q = query(&self.sql.replay)
                .bind(id)
                .bind(state)
                .bind(after)
                .bind(to_millis(now));
            let done = self.run("replay jobs", q.execute(&self.pool)).await?;
            Ok(done.rows_affected())
        })
    }

    fn purge(&self, finished_before: SystemTime, batch: usize) -> InboxFuture<'_, u64> {
        Box::pin(async move {
            let q = query(&self.sql.purge)
                .bind(to_millis(finished_before))
                .bind(count(batch));
            let done = self.run("purge done jobs", q.execute(&self.pool)).await?;
            Ok(done.rows_affected())
        })
    }

    fn ping(&self) -> InboxFuture<'_, ()> {
        Box::pin(async move {
            self.run("ping", sqlx::query("SELECT 1").execute(&self.pool))
                .await?;
            Ok(())
        })
    }

    fn stats(&self) -> InboxFuture<'_, InboxStats> {
        Box::pin(async move {
            // In `JobState::ALL`'s order, as the statement counts them.
            let ([pending, running, done, dead, quarantined], oldest_pending_received_at) =
                self.counts("count jobs", &self.sql.stats).await?;
            Ok(InboxStats {
                pending,
                running,
                done,
                dead,
                quarantined,
                oldest_pending_received_at,
            })
        })
    }

    fn backlog(&self) -> InboxFuture<'_, InboxBacklog> {
        Box::pin(async move {
            // In `InboxBacklog::STATES`' order, as the statement counts them.
            let ([pending, running, dead, quarantined], oldest_pending_received_at) = self
                .counts("count unfinished jobs", &self.sql.backlog)
                .await?;
            Ok(InboxBacklog {
                pending,
                running,
                dead,
                quarantined,
                oldest_pending_received_at,
            })
        })
    }
}
