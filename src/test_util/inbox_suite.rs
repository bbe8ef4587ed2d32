//! The behaviour every [`InboxStore`] must have, as a suite you can run against your own.
//!
//! The crate runs it against the SQLite and PostgreSQL stores; write an [`InboxUnderTest`] for
//! yours and call [`run_all`] from a test on a multi-threaded tokio runtime. Each case asks
//! for a [`fresh`](InboxUnderTest::fresh) store, because claims see every pending row; every
//! time is given to the store explicitly, from a fixed base time, so nothing sleeps. A failing
//! case panics with what the store did wrong.
//!
//! Beyond the letter of [`InboxStore`], the suite holds a store to what the inbox relies on:
//!
//! - a new pending row is due from its `received_at` (the SQLite store sets `next_run_at` to
//!   it); the suite never claims before a row's receipt time;
//! - a fence holds its row until another claim or a replay takes it: a worker whose lease
//!   ended unnoticed may still settle the row if nobody took it over;
//! - a lease holds until its last millisecond; the suite does not test the exact instant it
//!   ends, which [`InboxStore::claim`] leaves to the store (SQLite takes a row over once
//!   `lease_until < now`);
//! - times are kept to the millisecond ([`to_millis`](crate::inbox::to_millis)), so every
//!   time the suite gives is a whole number of milliseconds.
//!
//! ```no_run
//! # #[cfg(feature = "sqlite")]
//! # mod sqlite {
//! use std::future::Future;
//! use std::path::PathBuf;
//! use std::pin::Pin;
//! use std::sync::{Arc, Mutex};
//!
//! use aisoule_webhooks::inbox::InboxStore;
//! use aisoule_webhooks::inbox::sqlite::SqliteStore;
//! use aisoule_webhooks::test_util::inbox_suite::{self, InboxUnderTest};
//!
//! /// A new file per case; `reopen` opens the latest one again.
//! pub struct Sqlite {
//!     dir: PathBuf,
//!     files: Mutex<Vec<PathBuf>>,
//! }
//!
//! impl InboxUnderTest for Sqlite {
//!     fn fresh(&self) -> Pin<Box<dyn Future<Output = Arc<dyn InboxStore>> + Send + '_>> {
//!         let mut files = self.files.lock().unwrap();
//!         let path = self.dir.join(format!("inbox-{}.sqlite3", files.len()));
//!         files.push(path.clone());
//!         Box::pin(async move {
//!             Arc::new(SqliteStore::open(path).expect("opens")) as Arc<dyn InboxStore>
//!         })
//!     }
//!
//!     fn reopen(
//!         &self,
//!         store: Arc<dyn InboxStore>,
//!     ) -> Pin<Box<dyn Future<Output = Arc<dyn InboxStore>> + Send + '_>> {
//!         drop(store); // closes the file: the writer thread answers what is queued, then ends
//!         let path = self.files.lock().unwrap().last().cloned().expect("a fresh store");
//!         Box::pin(async move {
//!             Arc::new(SqliteStore::open(path).expect("reopens")) as Arc<dyn InboxStore>
//!         })
//!     }
//! }
//!
//! pub async fn run(dir: PathBuf) {
//!     let backend = Sqlite { dir, files: Mutex::new(Vec::new()) };
//!     inbox_suite::run_all(&backend).await;
//! }
//! # }
//! ```

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;

use crate::error::InboxError;
use crate::inbox::{
    ClaimedJob, InboxStore, Inserted, JobFilter, JobId, JobRecord, JobState, NewDelivery,
};

/// A store under test: a way to get an empty one, and to reopen its data as a new process
/// would.
pub trait InboxUnderTest: Send + Sync {
    /// An empty store (a new file, a truncated table): claims see every pending row, so each
    /// case needs its own.
    fn fresh(&self) -> Pin<Box<dyn Future<Output = Arc<dyn InboxStore>> + Send + '_>>;

    /// The same data reopened by a new store instance, as after a process crash or restart.
    /// `store` is the latest [`fresh`](Self::fresh) one, and the suite holds no other
    /// reference to it: drop it first if the engine needs its file or connection closed.
    fn reopen(
        &self,
        store: Arc<dyn InboxStore>,
    ) -> Pin<Box<dyn Future<Output = Arc<dyn InboxStore>> + Send + '_>>;
}

/// Runs every case in turn, each on a fresh store.
pub async fn run_all(backend: &impl InboxUnderTest) {
    insert_then_duplicate(backend).await;
    duplicates_inside_one_batch(backend).await;
    crash_between_commit_and_answer(backend).await;
    quarantined_rows_wait_for_a_replay(backend).await;
    claim_takes_due_rows_oldest_first(backend).await;
    lease_expiry_takeover_and_stale_settlement(backend).await;
    an_expired_lease_not_taken_over_still_settles(backend).await;
    fail_with_and_without_retry(backend).await;
    release_does_not_count_the_attempt(backend).await;
    replay_makes_rows_pending_again(backend).await;
    ordered_claims_run_a_conversation_in_order(backend).await;
    purge_deletes_old_done_rows_only(backend).await;
    stats_count_every_state(backend).await;
    backlog_counts_every_state_but_done(backend).await;
    list_filters_and_pages(backend).await;
    the_account_comes_back_with_its_row(backend).await;
}

const LEASE: Duration = Duration::from_secs(30);

/// The suite's base time: every time it gives a store is this plus an offset.
fn t0() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_780_000_000)
}

fn at_ms(ms: u64) -> SystemTime {
    t0() + Duration::from_millis(ms)
}

fn at_s(s: u64) -> SystemTime {
    t0() + Duration::from_secs(s)
}

fn delivery(key: &str) -> NewDelivery {
    NewDelivery {
        key: key.to_owned(),
        body: Bytes::from(format!(
            r#"{{"event":"message.incoming","data":{{"message_id":"{key}"}}}}"#
        )),
        headers: vec![(
            "x-aisoule-signature".to_owned(),
            "sha256=0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef".to_owned(),
        )],
        secret_label: "current".to_owned(),
        received_at: t0(),
        conversation: None,
        quarantine: None,
        account: None,
    }
}

fn in_conversation(key: &str, conversation: &str) -> NewDelivery {
    NewDelivery {
        conversation: Some(conversation.to_owned()),
        ..delivery(key)
    }
}

async fn insert_new(store: &dyn InboxStore, delivery: NewDelivery) -> JobId {
    let key = delivery.key.clone();
    match store.insert(delivery).await {
        Ok(Inserted::New(id)) => id,
        Ok(Inserted::Duplicate) => panic!("the first insert of `{key}` was called a duplicate"),
        Err(e) => panic!("inserting `{key}` failed: {e:?}"),
    }
}

async fn insert_expecting_duplicate(store: &dyn InboxStore, delivery: NewDelivery) {
    let key = delivery.key.clone();
    match store.insert(delivery).await {
        Ok(Inserted::Duplicate) => {}
        Ok(Inserted::New(id)) => panic!("a second insert of `{key}` made a new row {id}"),
        Err(e) => panic!("inserting `{key}` again failed: {e:?}"),
    }
}

async fn get(store: &dyn InboxStore, id: JobId) -> JobRecord {
    store
        .get(id)
        .await
        .unwrap_or_else(|e| panic!("get({id}) failed: {e:?}"))
        .unwrap_or_else(|| panic!("row {id} is missing"))
}

async fn claim(
    store: &dyn InboxStore,
    now: SystemTime,
    limit: usize,
    ordered: bool,
) -> Vec<ClaimedJob> {
    store
        .claim(now, LEASE, limit, ordered)
        .await
        .unwrap_or_else(|e| panic!("claim failed: {e:?}"))
}

/// Claims exactly the one row `id` at `now`, and returns its claim.
async fn claim_one(store: &dyn InboxStore, now: SystemTime, id: JobId) -> ClaimedJob {
    let mut jobs = claim(store, now, 1, false).await;
    assert_eq!(ids(&jobs), [id], "claim should take row {id} now");
    jobs.remove(0)
}

fn ids(jobs: &[ClaimedJob]) -> Vec<JobId> {
    jobs.iter().map(|job| job.id).collect()
}

fn record_ids(records: &[JobRecord]) -> Vec<JobId> {
    records.iter().map(|record| record.id).collect()
}

async fn list(store: &dyn InboxStore, filter: JobFilter) -> Vec<JobRecord> {
    let shown = format!("{filter:?}");
    store
        .list(filter)
        .await
        .unwrap_or_else(|e| panic!("list({shown}) failed: {e:?}"))
}

fn in_state(state: JobState) -> JobFilter {
    JobFilter {
        state: Some(state),
        ..JobFilter::default()
    }
}

fn only(id: JobId) -> JobFilter {
    JobFilter {
        id: Some(id),
        ..JobFilter::default()
    }
}

async fn replay(store: &dyn InboxStore, filter: JobFilter, now: SystemTime) -> u64 {
    let shown = format!("{filter:?}");
    store
        .replay(filter, now)
        .await
        .unwrap_or_else(|e| panic!("replay({shown}) failed: {e:?}"))
}

fn assert_lease_lost(result: Result<(), InboxError>, what: &str, id: JobId) {
    match result {
        Err(InboxError::LeaseLost { id: lost }) if lost == id.0 => {}
        other => {
            panic!("{what} with a stale fence should be LeaseLost {{ id: {id} }}, got {other:?}")
        }
    }
}

/// A first insert is new, a second of the same key a duplicate; ids grow with insertion
/// order; `get` gives back every field exactly.
pub async fn insert_then_duplicate(backend: &impl InboxUnderTest) {
    let store = backend.fresh().await;
    let store = &*store;
    let original = NewDelivery {
        key: "message.incoming:wamid.1".to_owned(),
        // Not UTF-8, with a NUL: the body is bytes, kept exactly.
        body: Bytes::from_static(b"{\"event\":\"message.incoming\"}\x00\xff\xfe tail"),
        headers: vec![
            ("x-webhook-signature".to_owned(), "sha256=abc".to_owned()),
            (
                "x-aisoule-signature".to_owned(),
                "d\u{e9}f \u{1f600}".to_owned(),
            ),
        ],
        secret_label: "previous".to_owned(),
        received_at: at_ms(123),
        conversation: Some("+919800000001".to_owned()),
        quarantine: None,
        account: None,
    };
    let first = insert_new(store, original.clone()).await;
    insert_expecting_duplicate(
        store,
        NewDelivery {
            body: Bytes::from_static(b"another body"),
            ..original.clone()
        },
    )
    .await;
    let second = insert_new(store, delivery("message.incoming:wamid.2")).await;
    let third = insert_new(store, delivery("message.incoming:wamid.3")).await;
    assert!(
        first < second && second < third,
        "ids must grow with insertion order: {first}, {second}, {third}"
    );

    let record = get(store, first).await;
    assert_eq!(record.id, first, "get returned another row");
    assert_eq!(record.key, original.key, "the key did not round-trip");
    assert_eq!(
        record.body, original.body,
        "the body did not round-trip byte for byte (or the duplicate overwrote it)"
    );
    assert_eq!(
        record.headers, original.headers,
        "the headers did not round-trip"
    );
    assert_eq!(
        record.secret_label, original.secret_label,
        "the secret label did not round-trip"
    );
    assert_eq!(
        record.conversation, original.conversation,
        "the conversation did not round-trip"
    );
    assert_eq!(
        record.received_at, original.received_at,
        "received_at must round-trip to the millisecond"
    );
    assert_eq!(record.state, JobState::Pending, "a new row is pending");
    assert_eq!(record.attempts, 0, "a new row has no attempts");
    assert_eq!(record.last_error, None, "a new row has no error");
    assert_eq!(
        record.quarantine_reason, None,
        "a pending row has no quarantine reason"
    );
    assert_eq!(record.lease_until, None, "a new row has no lease");
    assert_eq!(record.finished_at, None, "a new row is not finished");
    assert_eq!(
        list(store, JobFilter::default()).await.len(),
        3,
        "a duplicate must not add a row"
    );

    let empty = insert_new(
        store,
        NewDelivery {
            body: Bytes::new(),
            headers: Vec::new(),
            ..delivery("message.incoming:empty")
        },
    )
    .await;
    let record = get(store, empty).await;
    assert!(
        record.body.is_empty(),
        "an empty body must round-trip as empty"
    );
    assert!(
        record.headers.is_empty(),
        "no headers must round-trip as none"
    );
}

/// Concurrent inserts of one key (as the store may commit them in one batch) make exactly one
/// row; concurrent inserts of distinct keys are all new, with distinct ids.
pub async fn duplicates_inside_one_batch(backend: &impl InboxUnderTest) {
    let store = backend.fresh().await;
    let barrier = Arc::new(tokio::sync::Barrier::new(64));
    let same: Vec<_> = (0..64)
        .map(|_| {
            let (store, barrier) = (Arc::clone(&store), Arc::clone(&barrier));
            tokio::spawn(async move {
                barrier.wait().await;
                store.insert(delivery("batch:same")).await
            })
        })
        .collect();
    let mut new = 0;
    for task in same {
        match task.await.expect("no insert task panics") {
            Ok(Inserted::New(_)) => new += 1,
            Ok(Inserted::Duplicate) => {}
            Err(e) => panic!("a concurrent insert failed: {e:?}"),
        }
    }
    assert_eq!(
        new, 1,
        "64 concurrent inserts of one key must give exactly one New"
    );

    let barrier = Arc::new(tokio::sync::Barrier::new(200));
    let distinct: Vec<_> = (0..200)
        .map(|i| {
            let (store, barrier) = (Arc::clone(&store), Arc::clone(&barrier));
            tokio::spawn(async move {
                barrier.wait().await;
                store.insert(delivery(&format!("batch:{i}"))).await
            })
        })
        .collect();
    let mut seen = std::collections::HashSet::new();
    for task in distinct {
        match task.await.expect("no insert task panics") {
            Ok(Inserted::New(id)) => assert!(seen.insert(id), "id {id} was given twice"),
            Ok(Inserted::Duplicate) => panic!("an insert of a distinct key was a duplicate"),
            Err(e) => panic!("a concurrent insert failed: {e:?}"),
        }
    }

    let rows = list(&*store, JobFilter::default()).await;
    assert_eq!(rows.len(), 201, "one row per key");
    assert_eq!(
        rows.iter().filter(|row| row.key == "batch:same").count(),
        1,
        "the shared key must have one row"
    );
}

/// An insert whose answer was never read (the process died between the commit and the
/// answer) is a duplicate after a restart; every row and state written before a restart is
/// there after it, and ids keep growing.
pub async fn crash_between_commit_and_answer(backend: &impl InboxUnderTest) {
    let store = backend.fresh().await;
    let mut before = Vec::new();
    for i in 0..5 {
        before.push(insert_new(&*store, delivery(&format!("crash:{i}"))).await);
    }
    let running = claim_one(&*store, at_s(1), before[0]).await;
    let done = claim_one(&*store, at_s(1), before[1]).await;
    store
        .complete(done.id, done.fence, at_s(2))
        .await
        .expect("complete");
    // Answered but not looked at: as if the process died right after the commit.
    drop(store.insert(delivery("crash:unanswered")).await);
    // Polled once, then dropped: it took effect completely or not at all.
    let mut cancelled = store.insert(delivery("crash:cancelled"));
    std::future::poll_fn(|cx| {
        let _ = cancelled.as_mut().poll(cx);
        std::task::Poll::Ready(())
    })
    .await;
    drop(cancelled);

    let store = backend.reopen(store).await;
    insert_expecting_duplicate(&*store, delivery("crash:unanswered")).await;
    let _ = store
        .insert(delivery("crash:cancelled"))
        .await
        .expect("the insert after the restart answers");
    let rows = list(&*store, JobFilter::default()).await;
    for key in ["crash:unanswered", "crash:cancelled"] {
        assert_eq!(
            rows.iter().filter(|row| row.key == key).count(),
            1,
            "`{key}` must have exactly one row after the restart"
        );
    }
    for id in &before {
        assert!(
            rows.iter().any(|row| row.id == *id),
            "row {id}, committed before the restart, is missing after it"
        );
    }
    assert_eq!(get(&*store, running.id).await.state, JobState::Running);
    assert_eq!(get(&*store, done.id).await.state, JobState::Done);
    let after = insert_new(&*store, delivery("crash:after")).await;
    assert!(
        rows.iter().all(|row| row.id < after),
        "an id after the restart must be greater than every earlier one"
    );
}

/// A quarantined row keeps its reason, is never claimed, is listed, and runs once replayed;
/// its key stays a duplicate.
pub async fn quarantined_rows_wait_for_a_replay(backend: &impl InboxUnderTest) {
    let store = backend.fresh().await;
    let store = &*store;
    let held = insert_new(
        store,
        NewDelivery {
            quarantine: Some("timestamp 2 h old".to_owned()),
            ..delivery("quarantine:1")
        },
    )
    .await;
    let normal = insert_new(store, delivery("quarantine:2")).await;
    let record = get(store, held).await;
    assert_eq!(
        record.state,
        JobState::Quarantined,
        "a delivery with a reason is quarantined"
    );
    assert_eq!(
        record.quarantine_reason.as_deref(),
        Some("timestamp 2 h old")
    );

    let claimed = claim(store, at_s(3_600), 10, false).await;
    assert_eq!(
        ids(&claimed),
        [normal],
        "a quarantined row must never be claimed"
    );
    store
        .complete(normal, claimed[0].fence, at_s(3_600))
        .await
        .expect("complete");
    assert!(
        claim(store, at_s(86_400), 10, false).await.is_empty(),
        "a quarantined row must never be claimed, however late"
    );
    assert_eq!(
        record_ids(&list(store, in_state(JobState::Quarantined)).await),
        [held],
        "the quarantined row must be listed by its state"
    );
    insert_expecting_duplicate(store, delivery("quarantine:1")).await;

    assert_eq!(
        replay(store, only(held), at_s(90_000)).await,
        1,
        "replay by id"
    );
    let record = get(store, held).await;
    assert_eq!(
        record.state,
        JobState::Pending,
        "a replayed quarantined row is pending"
    );
    assert_eq!(record.attempts, 0);
    let claimed = claim(store, at_s(90_000), 10, false).await;
    assert_eq!(
        ids(&claimed),
        [held],
        "a released quarantined row is claimable"
    );
    assert_eq!(claimed[0].attempt, 1);
    insert_expecting_duplicate(store, delivery("quarantine:1")).await;
}

/// A claim takes due rows oldest first, up to its limit, as attempt 1, running with a lease;
/// a second claim at the same time finds nothing.
pub async fn claim_takes_due_rows_oldest_first(backend: &impl InboxUnderTest) {
    let store = backend.fresh().await;
    let store = &*store;
    let mut rows = Vec::new();
    for i in 0..5 {
        rows.push(insert_new(store, delivery(&format!("claim:{i}"))).await);
    }
    let now = at_s(1);
    let first = claim(store, now, 2, false).await;
    assert_eq!(
        ids(&first),
        rows[..2],
        "claim must take the oldest ids first, up to its limit"
    );
    for job in &first {
        assert_eq!(job.attempt, 1, "a first claim is attempt 1");
        let record = get(store, job.id).await;
        assert_eq!(job.key, record.key);
        assert_eq!(job.body, record.body);
        assert_eq!(job.secret_label, record.secret_label);
        assert_eq!(job.received_at, record.received_at);
        assert_eq!(record.state, JobState::Running, "a claimed row is running");
        assert_eq!(record.attempts, 1);
        assert_eq!(
            record.lease_until,
            Some(now + LEASE),
            "the lease ends at now + lease"
        );
    }
    let rest = claim(store, now, 10, false).await;
    assert_eq!(ids(&rest), rows[2..], "the next claim takes the rest");
    assert!(
        claim(store, now, 10, false).await.is_empty(),
        "a claim at the same time must not take running rows"
    );

    // Expired leases and due pending rows compete by id alone.
    let late = insert_new(store, delivery("claim:late")).await;
    let after_lease = now + LEASE + Duration::from_millis(1);
    let taken = claim(store, after_lease, 1, false).await;
    assert_eq!(
        ids(&taken),
        [rows[0]],
        "an expired running row older than every pending row must be taken first"
    );
    assert_eq!(taken[0].attempt, 2, "a takeover is the next attempt");
    let mut expected = rows[1..].to_vec();
    expected.push(late);
    assert_eq!(
        ids(&claim(store, after_lease, 10, false).await),
        expected,
        "expired and pending rows are claimed together, oldest id first"
    );
}

/// A lease holds its row until it ends, a renewal extends it, an ended lease is taken over
/// with a new fence, and the old fence can no longer settle the row.
pub async fn lease_expiry_takeover_and_stale_settlement(backend: &impl InboxUnderTest) {
    let store = backend.fresh().await;
    let store = &*store;
    let id = insert_new(store, delivery("lease:1")).await;
    let t = at_s(10);
    let a = claim_one(store, t, id).await;
    assert!(
        claim(store, t + LEASE / 2, 10, false).await.is_empty(),
        "a row must not be taken over during its lease"
    );
    store
        .renew(id, a.fence, t + 2 * LEASE)
        .await
        .expect("renew with the holding fence");
    assert_eq!(
        get(store, id).await.lease_until,
        Some(t + 2 * LEASE),
        "renew sets the lease end"
    );
    assert!(
        claim(store, t + LEASE * 3 / 2, 10, false).await.is_empty(),
        "a renewed lease must hold past the original one"
    );
    assert!(
        claim(store, t + 2 * LEASE - Duration::from_millis(1), 10, false)
            .await
            .is_empty(),
        "a lease must hold until its last millisecond"
    );
    let takeover = t + 2 * LEASE + Duration::from_millis(1);
    let b = claim_one(store, takeover, id).await;
    assert_eq!(b.attempt, 2, "a takeover is the next attempt");
    assert_ne!(a.fence, b.fence, "a takeover must get a new fence");

    let held = get(store, id).await;
    assert_lease_lost(store.complete(id, a.fence, takeover).await, "complete", id);
    assert_lease_lost(
        store
            .fail(id, a.fence, "stale", Some(takeover), takeover)
            .await,
        "fail with a retry",
        id,
    );
    assert_lease_lost(
        store.fail(id, a.fence, "stale", None, takeover).await,
        "fail for good",
        id,
    );
    assert_lease_lost(
        store.renew(id, a.fence, takeover + 10 * LEASE).await,
        "renew",
        id,
    );
    store
        .release(id, a.fence, takeover)
        .await
        .expect("release with a stale fence does nothing, without error");
    assert_eq!(
        get(store, id).await,
        held,
        "settling with a stale fence must not change the row"
    );

    let finished = takeover + Duration::from_secs(1);
    store
        .complete(id, b.fence, finished)
        .await
        .expect("complete with the holding fence");
    let record = get(store, id).await;
    assert_eq!(record.state, JobState::Done);
    assert_eq!(
        record.finished_at,
        Some(finished),
        "done rows record when they finished"
    );
}

/// A lease that ended but was not taken over still belongs to its fence: the slow worker's
/// outcome is recorded.
pub async fn an_expired_lease_not_taken_over_still_settles(backend: &impl InboxUnderTest) {
    let store = backend.fresh().await;
    let store = &*store;
    let id = insert_new(store, delivery("slow:1")).await;
    let job = claim_one(store, at_s(1), id).await;
    let late = at_s(1) + 3 * LEASE;
    store
        .complete(id, job.fence, late)
        .await
        .expect("a fence holds its row until another claim takes it over");
    assert_eq!(get(store, id).await.state, JobState::Done);
}

/// A failure with a retry time makes the row pending from then on; one without makes it
/// dead for good.
pub async fn fail_with_and_without_retry(backend: &impl InboxUnderTest) {
    let store = backend.fresh().await;
    let store = &*store;
    let id = insert_new(store, delivery("fail:1")).await;
    let t = at_s(100);
    let first = claim_one(store, t, id).await;
    store
        .fail(
            id,
            first.fence,
            "boom",
            Some(t + Duration::from_secs(10)),
            t,
        )
        .await
        .expect("fail with the holding fence");
    let record = get(store, id).await;
    assert_eq!(
        record.state,
        JobState::Pending,
        "a failure with a retry is pending"
    );
    assert_eq!(record.last_error.as_deref(), Some("boom"));
    assert_eq!(record.next_run_at, t + Duration::from_secs(10));
    assert!(
        claim(store, t + Duration::from_secs(9), 10, false)
            .await
            .is_empty(),
        "a row must not be claimed before its retry time"
    );
    let second = claim_one(store, t + Duration::from_secs(10), id).await;
    assert_eq!(second.attempt, 2, "the retry is attempt 2");

    let dead_at = t + Duration::from_secs(11);
    store
        .fail(id, second.fence, "boom again", None, dead_at)
        .await
        .expect("fail for good");
    let record = get(store, id).await;
    assert_eq!(
        record.state,
        JobState::Dead,
        "a failure without a retry is dead"
    );
    assert_eq!(record.finished_at, Some(dead_at));
    assert_eq!(record.last_error.as_deref(), Some("boom again"));
    assert_eq!(
        record_ids(&list(store, in_state(JobState::Dead)).await),
        [id],
        "a dead row is a dead letter"
    );
    assert!(
        claim(store, t + Duration::from_secs(10 * 86_400), 10, false)
            .await
            .is_empty(),
        "a dead row is never claimed"
    );
}

/// A released row is pending at once, and its attempt is not counted.
pub async fn release_does_not_count_the_attempt(backend: &impl InboxUnderTest) {
    let store = backend.fresh().await;
    let store = &*store;
    let id = insert_new(store, delivery("release:1")).await;
    let t = at_s(5);
    let job = claim_one(store, t, id).await;
    store
        .release(id, job.fence, t + Duration::from_secs(1))
        .await
        .expect("release");
    let record = get(store, id).await;
    assert_eq!(record.state, JobState::Pending, "a released row is pending");
    assert_eq!(record.attempts, 0, "a released attempt is not counted");
    let again = claim_one(store, t + Duration::from_secs(1), id).await;
    assert_eq!(
        again.attempt, 1,
        "the claim after a release repeats its attempt number"
    );

    store
        .fail(id, again.fence, "x", Some(t + Duration::from_secs(2)), t)
        .await
        .expect("fail");
    let second = claim_one(store, t + Duration::from_secs(2), id).await;
    assert_eq!(second.attempt, 2);
    store
        .release(id, second.fence, t + Duration::from_secs(3))
        .await
        .expect("release");
    let again = claim_one(store, t + Duration::from_secs(3), id).await;
    assert_eq!(
        again.attempt, 2,
        "the claim after a release repeats its attempt number"
    );
    assert_ne!(again.fence, second.fence, "every claim gets a new fence");
}

/// A replay makes rows pending with their attempts reset, whatever their state: a done row
/// runs again, a running row's worker loses it, and dead rows are replayed by state.
pub async fn replay_makes_rows_pending_again(backend: &impl InboxUnderTest) {
    let store = backend.fresh().await;
    let store = &*store;
    let t = at_s(1_000);

    // A done row, which failed once on its way.
    let done = insert_new(store, delivery("replay:done")).await;
    let job = claim_one(store, t, done).await;
    store
        .fail(done, job.fence, "first", Some(t), t)
        .await
        .expect("fail");
    let job = claim_one(store, t, done).await;
    store.complete(done, job.fence, t).await.expect("complete");
    assert_eq!(
        replay(store, only(done), t + LEASE).await,
        1,
        "replay of a done row"
    );
    let record = get(store, done).await;
    assert_eq!(
        record.state,
        JobState::Pending,
        "a replayed done row is pending"
    );
    assert_eq!(record.attempts, 0, "a replay resets the attempts");
    assert_eq!(
        record.last_error.as_deref(),
        Some("first"),
        "a replay keeps the last error"
    );
    let job = claim_one(store, t + LEASE, done).await;
    assert_eq!(
        job.attempt, 1,
        "the first claim after a replay is attempt 1"
    );
    store
        .complete(done, job.fence, t + LEASE)
        .await
        .expect("complete");

    // A running row: its worker can no longer settle it.
    let running = insert_new(store, delivery("replay:running")).await;
    let stale = claim_one(store, t + LEASE, running).await;
    assert_eq!(replay(store, only(running), t + LEASE).await, 1);
    assert_lease_lost(
        store.complete(running, stale.fence, t + LEASE).await,
        "complete after a replay",
        running,
    );
    assert_lease_lost(
        store.renew(running, stale.fence, t + 3 * LEASE).await,
        "renew after a replay",
        running,
    );
    store
        .release(running, stale.fence, t + LEASE)
        .await
        .expect("release with a stale fence does nothing, without error");
    let fresh = claim_one(store, t + LEASE, running).await;
    assert_eq!(fresh.attempt, 1);
    assert_ne!(
        fresh.fence, stale.fence,
        "a fence is never reused, not even after a replay"
    );
    store
        .complete(running, fresh.fence, t + LEASE)
        .await
        .expect("complete with the new fence");

    // Dead rows, replayed by state.
    let mut dead = Vec::new();
    for i in 0..3 {
        dead.push(insert_new(store, delivery(&format!("replay:dead:{i}"))).await);
    }
    for job in claim(store, t + LEASE, 10, false).await {
        store
            .fail(job.id, job.fence, "gone", None, t + LEASE)
            .await
            .expect("fail");
    }
    assert_eq!(
        replay(store, in_state(JobState::Dead), t + 2 * LEASE).await,
        3,
        "replay by state changes every dead row and only those"
    );
    let claimed = claim(store, t + 2 * LEASE, 10, false).await;
    assert_eq!(ids(&claimed), dead, "replayed dead rows are claimable");
    assert!(claimed.iter().all(|job| job.attempt == 1));

    assert_eq!(
        replay(store, only(JobId(i64::MAX)), t).await,
        0,
        "replay of a missing id changes nothing"
    );
}

/// With ordering, a row waits while an earlier row of its conversation is pending or running;
/// dead rows do not block, rows in backoff do; without ordering nothing waits.
pub async fn ordered_claims_run_a_conversation_in_order(backend: &impl InboxUnderTest) {
    let t = at_s(50);
    {
        let store = backend.fresh().await;
        let store = &*store;
        let a1 = insert_new(store, in_conversation("order:a1", "A")).await;
        let a2 = insert_new(store, in_conversation("order:a2", "A")).await;
        let b1 = insert_new(store, in_conversation("order:b1", "B")).await;
        let none = insert_new(store, delivery("order:none")).await;
        let claimed = claim(store, t, 10, true).await;
        assert_eq!(
            ids(&claimed),
            [a1, b1, none],
            "an ordered claim must skip a row while an earlier one of its conversation is pending"
        );
        assert!(
            claim(store, t, 10, true).await.is_empty(),
            "a row must wait while an earlier one of its conversation runs"
        );
        store
            .complete(a1, claimed[0].fence, t)
            .await
            .expect("complete");
        assert_eq!(
            ids(&claim(store, t, 10, true).await),
            [a2],
            "once the earlier row is done, the next one runs"
        );
    }
    {
        let store = backend.fresh().await;
        let store = &*store;
        let c1 = insert_new(store, in_conversation("order:c1", "C")).await;
        let c2 = insert_new(store, in_conversation("order:c2", "C")).await;
        let job = claim_one(store, t, c1).await;
        store
            .fail(c1, job.fence, "gone", None, t)
            .await
            .expect("fail");
        assert_eq!(
            ids(&claim(store, t, 10, true).await),
            [c2],
            "a dead earlier row must not block its conversation"
        );
    }
    {
        let store = backend.fresh().await;
        let store = &*store;
        let d1 = insert_new(store, in_conversation("order:d1", "D")).await;
        insert_new(store, in_conversation("order:d2", "D")).await;
        let job = claim_one(store, t, d1).await;
        store
            .fail(
                d1,
                job.fence,
                "later",
                Some(t + Duration::from_secs(3_600)),
                t,
            )
            .await
            .expect("fail");
        assert!(
            claim(store, t + Duration::from_secs(60), 10, true)
                .await
                .is_empty(),
            "an earlier row waiting out its backoff must block its conversation"
        );
    }
    {
        let store = backend.fresh().await;
        let store = &*store;
        let mut rows = Vec::new();
        for (key, conversation) in [("u:a1", "A"), ("u:a2", "A"), ("u:b1", "B")] {
            rows.push(insert_new(store, in_conversation(key, conversation)).await);
        }
        rows.push(insert_new(store, delivery("u:none")).await);
        assert_eq!(
            ids(&claim(store, t, 10, false).await),
            rows,
            "an unordered claim must take every due row"
        );
    }
}

/// Purge deletes done rows finished before the cutoff, oldest first, a batch at a time, and
/// nothing else; a purged key is new again.
pub async fn purge_deletes_old_done_rows_only(backend: &impl InboxUnderTest) {
    let store = backend.fresh().await;
    let store = &*store;
    let t = at_s(10);
    let d1 = insert_new(store, delivery("purge:d1")).await;
    let d2 = insert_new(store, delivery("purge:d2")).await;
    let d3 = insert_new(store, delivery("purge:d3")).await;
    let jobs = claim(store, t, 10, false).await;
    assert_eq!(ids(&jobs), [d1, d2, d3]);
    // Finished in another order than inserted: d3, then d1, then d2.
    for (job, finished) in [(&jobs[2], 1), (&jobs[0], 2), (&jobs[1], 3)] {
        store
            .complete(job.id, job.fence, t + Duration::from_secs(finished))
            .await
            .expect("complete");
    }
    let dead = insert_new(store, delivery("purge:dead")).await;
    let job = claim_one(store, t, dead).await;
    store
        .fail(dead, job.fence, "gone", None, t)
        .await
        .expect("fail");
    let running = insert_new(store, delivery("purge:running")).await;
    claim_one(store, t, running).await;
    let pending = insert_new(store, delivery("purge:pending")).await;
    let held = insert_new(
        store,
        NewDelivery {
            quarantine: Some("stale".to_owned()),
            ..delivery("purge:quarantined")
        },
    )
    .await;

    for key in ["purge:d1", "purge:dead", "purge:running"] {
        // A row is a duplicate in every state until it is purged.
        insert_expecting_duplicate(store, delivery(key)).await;
    }

    let cutoff = t + Duration::from_millis(2_500);
    let purge = |before: SystemTime, batch: usize| async move {
        store
            .purge(before, batch)
            .await
            .unwrap_or_else(|e| panic!("purge failed: {e:?}"))
    };
    assert_eq!(
        purge(cutoff, 1).await,
        1,
        "purge deletes at most `batch` rows"
    );
    assert!(
        store.get(d3).await.expect("get").is_none(),
        "purge must delete the row that finished first"
    );
    assert!(store.get(d1).await.expect("get").is_some());
    assert_eq!(purge(cutoff, 10).await, 1, "then the next oldest");
    assert!(store.get(d1).await.expect("get").is_none());
    assert_eq!(
        purge(cutoff, 10).await,
        0,
        "a row finished after the cutoff is kept"
    );
    assert!(store.get(d2).await.expect("get").is_some());

    assert_eq!(
        purge(t + Duration::from_secs(365 * 86_400), 100).await,
        1,
        "purge deletes done rows and nothing else"
    );
    for (id, state) in [
        (dead, JobState::Dead),
        (running, JobState::Running),
        (pending, JobState::Pending),
        (held, JobState::Quarantined),
    ] {
        assert_eq!(
            get(store, id).await.state,
            state,
            "purge must keep {state} rows"
        );
    }
    let again = insert_new(store, delivery("purge:d3")).await;
    assert!(again > held, "a purged key's new row gets a new id");
}

/// Stats count the rows in each state and give the oldest pending row's receipt time.
pub async fn stats_count_every_state(backend: &impl InboxUnderTest) {
    let store = backend.fresh().await;
    let store = &*store;
    let empty = store.stats().await.expect("stats");
    assert_eq!(
        empty,
        Default::default(),
        "an empty store has no rows to count"
    );
    let expected = rows_in_every_state(store).await;
    let stats = store.stats().await.expect("stats");
    assert_eq!(
        stats, expected,
        "stats must count each state, and give the minimum received_at among pending rows"
    );
}

/// The backlog counts the rows in each state but done, and gives the oldest pending row's
/// receipt time: the stats without the done count.
pub async fn backlog_counts_every_state_but_done(backend: &impl InboxUnderTest) {
    let store = backend.fresh().await;
    let store = &*store;
    let empty = store.backlog().await.expect("backlog");
    assert_eq!(
        empty,
        Default::default(),
        "an empty store has no rows to count"
    );
    let expected = crate::inbox::InboxBacklog::from(rows_in_every_state(store).await);
    let backlog = store.backlog().await.expect("backlog");
    assert_eq!(
        backlog, expected,
        "the backlog must count each state but done, and give the minimum received_at among \
         pending rows"
    );
    assert_eq!(backlog.lag(at_ms(12_000)), Some(Duration::from_secs(10)));
}

/// Writes rows in every state: one running, one done, one dead, three pending (the oldest
/// received at 2 s) and one quarantined (received before all of them); returns their stats.
async fn rows_in_every_state(store: &dyn InboxStore) -> crate::inbox::InboxStats {
    let t = at_s(10);
    let running = insert_new(store, delivery("stats:running")).await;
    claim_one(store, t, running).await;
    let done = insert_new(store, delivery("stats:done")).await;
    let job = claim_one(store, t, done).await;
    store.complete(done, job.fence, t).await.expect("complete");
    let dead = insert_new(store, delivery("stats:dead")).await;
    let job = claim_one(store, t, dead).await;
    store
        .fail(dead, job.fence, "gone", None, t)
        .await
        .expect("fail");
    // The later insert was received earlier.
    for (key, received) in [
        ("stats:p1", 5_000),
        ("stats:p2", 2_000),
        ("stats:p3", 9_000),
    ] {
        insert_new(
            store,
            NewDelivery {
                received_at: at_ms(received),
                ..delivery(key)
            },
        )
        .await;
    }
    insert_new(
        store,
        NewDelivery {
            quarantine: Some("stale".to_owned()),
            received_at: at_ms(1),
            ..delivery("stats:quarantined")
        },
    )
    .await;
    crate::inbox::InboxStats {
        pending: 3,
        running: 1,
        done: 1,
        dead: 1,
        quarantined: 1,
        oldest_pending_received_at: Some(at_ms(2_000)),
    }
}

/// `list` filters by state and id, pages with `after` and `limit`, in id order; `get` of a
/// missing id is `None`.
pub async fn list_filters_and_pages(backend: &impl InboxUnderTest) {
    let store = backend.fresh().await;
    let store = &*store;
    let mut rows = Vec::new();
    for i in 0..10 {
        rows.push(insert_new(store, delivery(&format!("list:{i}"))).await);
    }
    claim(store, at_s(1), 3, false).await;

    assert_eq!(
        record_ids(&list(store, JobFilter::default()).await),
        rows,
        "an empty filter lists every row, by id"
    );
    assert_eq!(
        record_ids(&list(store, in_state(JobState::Running)).await),
        rows[..3],
        "a state filter lists the rows in that state"
    );
    let page = |after, limit| JobFilter {
        state: Some(JobState::Pending),
        after,
        limit: Some(limit),
        ..JobFilter::default()
    };
    let first = record_ids(&list(store, page(None, 4)).await);
    assert_eq!(first, rows[3..7], "the first page of pending rows");
    let second = record_ids(&list(store, page(first.last().copied(), 4)).await);
    assert_eq!(second, rows[7..], "`after` pages past the last id seen");
    assert!(
        list(store, page(second.last().copied(), 4))
            .await
            .is_empty(),
        "past the last page nothing is listed"
    );
    assert_eq!(
        record_ids(&list(store, only(rows[5])).await),
        [rows[5]],
        "an id filter lists that row"
    );
    assert!(list(store, only(JobId(i64::MAX))).await.is_empty());
    assert_eq!(
        store.get(JobId(i64::MAX)).await.expect("get answers"),
        None,
        "get of a missing id is None"
    );
}

/// A delivery stored with an account (a receiver for many accounts) gets it back on its claim,
/// its record and a listing; one stored without stays without, rather than taking another
/// row's.
pub async fn the_account_comes_back_with_its_row(backend: &impl InboxUnderTest) {
    let store = backend.fresh().await;
    let store = &*store;
    let with_account = insert_new(
        store,
        NewDelivery {
            account: Some("acme".to_owned()),
            ..delivery("account:acme")
        },
    )
    .await;
    let without_account = insert_new(store, delivery("account:none")).await;

    let claimed = claim_one(store, at_s(1), with_account).await;
    assert_eq!(
        claimed.account.as_deref(),
        Some("acme"),
        "the claimed job must carry the account it was stored with"
    );
    let claimed = claim_one(store, at_s(1), without_account).await;
    assert_eq!(
        claimed.account, None,
        "a job stored without an account must be claimed without one"
    );

    assert_eq!(
        get(store, with_account).await.account.as_deref(),
        Some("acme"),
        "the record must show the account"
    );
    assert_eq!(
        get(store, without_account).await.account,
        None,
        "a record stored without an account must show none"
    );
    let accounts: Vec<(JobId, Option<String>)> = list(store, JobFilter::default())
        .await
        .into_iter()
        .map(|record| (record.id, record.account))
        .collect();
    assert_eq!(
        accounts,
        [
            (with_account, Some("acme".to_owned())),
            (without_account, None)
        ],
        "a listing must show each row's own account"
    );
}
