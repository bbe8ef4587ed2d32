//! The SQLite inbox store: the conformance suite, and what only SQLite has (its durability
//! settings, group commit, its thread's shutdown).

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use aisoule_webhooks::error::InboxError;
use aisoule_webhooks::inbox::sqlite::{SqliteStore, Synchronous};
use aisoule_webhooks::inbox::{InboxStore, Inserted, JobFilter, NewDelivery};
use aisoule_webhooks::test_util::inbox_suite::{self, InboxUnderTest};
use bytes::Bytes;

use crate::support::{two_workers, within_real_time};

/// The real-time bound on each test here (they take about a second): a store that hangs or a
/// writer thread that spins fails the test instead of holding the run.
const TEST_BOUND: Duration = Duration::from_secs(60);

/// A new file per case in one temporary directory; `reopen` opens the latest file again.
struct Sqlite {
    dir: tempfile::TempDir,
    files: Mutex<Vec<PathBuf>>,
}

impl Sqlite {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("a temporary directory"),
            files: Mutex::new(Vec::new()),
        }
    }
}

impl InboxUnderTest for Sqlite {
    fn fresh(&self) -> Pin<Box<dyn Future<Output = Arc<dyn InboxStore>> + Send + '_>> {
        let mut files = self.files.lock().unwrap();
        let path = self
            .dir
            .path()
            .join(format!("inbox-{}.sqlite3", files.len()));
        files.push(path.clone());
        Box::pin(async move {
            Arc::new(SqliteStore::open(path).expect("opens a new file")) as Arc<dyn InboxStore>
        })
    }

    fn reopen(
        &self,
        store: Arc<dyn InboxStore>,
    ) -> Pin<Box<dyn Future<Output = Arc<dyn InboxStore>> + Send + '_>> {
        assert_eq!(
            Arc::strong_count(&store),
            1,
            "the suite holds no other reference to a store it reopens"
        );
        // Dropping the last reference answers what is queued, then closes the file.
        drop(store);
        let path = self.files.lock().unwrap().last().cloned().unwrap();
        Box::pin(async move {
            Arc::new(SqliteStore::open(path).expect("reopens the file")) as Arc<dyn InboxStore>
        })
    }
}

#[test]
fn the_inbox_suite_passes_on_sqlite() {
    within_real_time(two_workers(), TEST_BOUND, || async {
        inbox_suite::run_all(&Sqlite::new()).await;
    });
}

fn delivery(key: &str, body: Bytes) -> NewDelivery {
    NewDelivery {
        key: key.to_owned(),
        body,
        headers: vec![("x-aisoule-signature".to_owned(), "sha256=00".to_owned())],
        secret_label: "test".to_owned(),
        received_at: SystemTime::UNIX_EPOCH + Duration::from_secs(1_780_000_000),
        conversation: None,
        quarantine: None,
        account: None,
    }
}

fn journal_mode(path: &Path) -> String {
    let conn = rusqlite::Connection::open(path).expect("a second connection opens the file");
    conn.pragma_query_value(None, "journal_mode", |row| row.get(0))
        .expect("journal_mode reads")
}

#[test]
fn the_file_is_in_wal_mode_and_synchronous_is_as_asked() {
    let dir = tempfile::tempdir().unwrap();
    for (name, level) in [("full", Synchronous::Full), ("normal", Synchronous::Normal)] {
        let path = dir.path().join(format!("{name}.sqlite3"));
        let store = SqliteStore::builder(&path)
            .synchronous(level)
            .open()
            .expect("opens");
        assert_eq!(
            store.synchronous(),
            level,
            "synchronous is read back as asked"
        );
        assert_eq!(journal_mode(&path), "wal", "the file itself is in WAL mode");
        drop(store);
        assert_eq!(journal_mode(&path), "wal", "WAL mode stays with the file");
    }
    let path = dir.path().join("default.sqlite3");
    assert_eq!(
        SqliteStore::open(&path).expect("opens").synchronous(),
        Synchronous::Full,
        "FULL is the default"
    );
}

#[test]
fn an_in_memory_database_is_refused_as_not_durable() {
    match SqliteStore::open(":memory:") {
        Err(InboxError::NotDurable { asked, got }) => {
            assert_eq!(asked, "journal_mode=wal");
            assert_eq!(got, "journal_mode=memory");
        }
        other => panic!("an in-memory database cannot be durable, got {other:?}"),
    }
}

fn assert_open_fails(path: &Path) {
    match SqliteStore::open(path) {
        Err(e @ InboxError::Store { operation, .. }) => {
            assert_eq!(operation, "open the inbox file");
            assert!(
                std::error::Error::source(&e).is_some(),
                "the engine's error is kept as the source"
            );
            assert!(e.to_string().contains("open the inbox file"), "{e}");
        }
        other => panic!(
            "opening {} should fail clearly, got {other:?}",
            path.display()
        ),
    }
}

#[test]
fn an_unusable_directory_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    assert_open_fails(&dir.path().join("missing").join("inbox.sqlite3"));

    let file = dir.path().join("a-file");
    std::fs::write(&file, b"not a directory").unwrap();
    assert_open_fails(&file.join("inbox.sqlite3"));

    // A file that is not a database.
    let garbage = dir.path().join("garbage.sqlite3");
    std::fs::write(&garbage, vec![0xA5_u8; 8192]).unwrap();
    assert!(
        matches!(SqliteStore::open(&garbage), Err(InboxError::Store { .. })),
        "a file that is not a database is refused"
    );

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let read_only = dir.path().join("read-only");
        std::fs::create_dir(&read_only).unwrap();
        std::fs::set_permissions(&read_only, std::fs::Permissions::from_mode(0o555)).unwrap();
        // Root ignores permissions: only check where the directory really is read-only.
        if std::fs::write(read_only.join("probe"), b"").is_err() {
            assert_open_fails(&read_only.join("inbox.sqlite3"));
        }
        std::fs::set_permissions(&read_only, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
}

#[test]
fn concurrent_inserts_share_commits() {
    within_real_time(two_workers(), TEST_BOUND, || async {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(SqliteStore::open(dir.path().join("inbox.sqlite3")).unwrap());
        let inserts = 500;
        let barrier = Arc::new(tokio::sync::Barrier::new(inserts));
        let tasks: Vec<_> = (0..inserts)
            .map(|i| {
                let (store, barrier) = (Arc::clone(&store), Arc::clone(&barrier));
                tokio::spawn(async move {
                    barrier.wait().await;
                    store
                        .insert(delivery(&format!("group:{i}"), Bytes::from_static(b"{}")))
                        .await
                })
            })
            .collect();
        for task in tasks {
            assert!(matches!(task.await.unwrap(), Ok(Inserted::New(_))));
        }
        let commits = store.commits();
        assert!(
            commits < inserts as u64 / 4,
            "{inserts} concurrent inserts took {commits} commits: group commit is not batching"
        );
        assert_eq!(store.stats().await.unwrap().pending, inserts as u64);
    });
}

#[test]
fn closing_answers_or_errors_every_queued_request() {
    within_real_time(two_workers(), TEST_BOUND, || async {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("inbox.sqlite3");
        let store = Arc::new(SqliteStore::open(&path).unwrap());
        let tasks: Vec<_> = (0..300)
            .map(|i| {
                let store = Arc::clone(&store);
                tokio::spawn(async move {
                    store
                        .insert(delivery(&format!("close:{i}"), Bytes::from_static(b"{}")))
                        .await
                })
            })
            .collect();
        tokio::task::yield_now().await;
        store.close();
        let mut answered = 0;
        for task in tasks {
            let answer = tokio::time::timeout(Duration::from_secs(10), task)
                .await
                .expect("a request queued at shutdown must not hang")
                .unwrap();
            match answer {
                Ok(Inserted::New(_)) => answered += 1,
                Err(InboxError::Closed) => {}
                other => panic!("a queued insert must be answered or closed, got {other:?}"),
            }
        }
        assert!(matches!(
            store.insert(delivery("close:late", Bytes::new())).await,
            Err(InboxError::Closed)
        ));
        store.close(); // again: nothing happens
        drop(store);

        let reopened = SqliteStore::open(&path).unwrap();
        let rows = reopened.list(JobFilter::default()).await.unwrap();
        assert_eq!(
            rows.len(),
            answered,
            "every insert answered New was committed, and only those"
        );
    });
}

#[test]
fn dropping_the_last_reference_while_inserts_are_queued_never_hangs() {
    within_real_time(two_workers(), TEST_BOUND, || async {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(SqliteStore::open(dir.path().join("inbox.sqlite3")).unwrap());
        let tasks: Vec<_> = (0..200)
            .map(|i| {
                let store = Arc::clone(&store);
                tokio::spawn(async move {
                    let answer = store
                        .insert(delivery(&format!("drop:{i}"), Bytes::from_static(b"{}")))
                        .await;
                    drop(store); // one of these is the last reference: its drop closes the file
                    answer
                })
            })
            .collect();
        drop(store);
        for task in tasks {
            let answer = tokio::time::timeout(Duration::from_secs(10), task)
                .await
                .expect("no request hangs")
                .unwrap();
            assert!(matches!(answer, Ok(Inserted::New(_))), "{answer:?}");
        }
    });
}

#[test]
fn an_engine_error_is_an_error_never_a_false_new() {
    within_real_time(two_workers(), TEST_BOUND, || async {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("inbox.sqlite3");
        let store = SqliteStore::open(&path).unwrap();
        store
            .insert(delivery("engine:1", Bytes::new()))
            .await
            .unwrap();
        rusqlite::Connection::open(&path)
            .unwrap()
            .execute_batch("DROP TABLE aisoule_inbox")
            .unwrap();
        match store.insert(delivery("engine:2", Bytes::new())).await {
            Err(e @ InboxError::Store { operation, .. }) => {
                assert_eq!(operation, "insert a delivery");
                assert!(std::error::Error::source(&e).is_some());
            }
            other => panic!("an insert into a missing table must fail, got {other:?}"),
        }
        assert!(matches!(store.stats().await, Err(InboxError::Store { .. })));
    });
}

#[test]
fn reads_answer_while_the_writer_waits_for_a_lock() {
    within_real_time(two_workers(), TEST_BOUND, || async {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("inbox.sqlite3");
        let store = Arc::new(SqliteStore::open(&path).unwrap());
        store
            .insert(delivery("lock:1", Bytes::new()))
            .await
            .unwrap();
        // Another process (a backup, an operator's shell) holds the write lock for a while.
        let other = rusqlite::Connection::open(&path).unwrap();
        other.execute_batch("BEGIN IMMEDIATE").unwrap();
        let waiting = {
            let store = Arc::clone(&store);
            tokio::spawn(async move { store.insert(delivery("lock:2", Bytes::new())).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        let stats = tokio::time::timeout(Duration::from_secs(2), store.stats())
            .await
            .expect("a read must not wait for the writer")
            .unwrap();
        assert_eq!(stats.pending, 1, "the read sees the last commit");
        assert!(!waiting.is_finished(), "the insert waits for the lock");
        other.execute_batch("COMMIT").unwrap();
        assert!(matches!(waiting.await.unwrap(), Ok(Inserted::New(_))));
    });
}

/// Inserts `keys` concurrently, and checks that the rows in the file are exactly those
/// answered `New`. Returns the keys answered with an error.
async fn insert_all_and_compare(store: &Arc<SqliteStore>, keys: Vec<String>) -> Vec<String> {
    let barrier = Arc::new(tokio::sync::Barrier::new(keys.len()));
    let tasks: Vec<_> = keys
        .into_iter()
        .map(|key| {
            let (store, barrier) = (Arc::clone(store), Arc::clone(&barrier));
            tokio::spawn(async move {
                barrier.wait().await;
                let answer = store
                    .insert(delivery(&key, Bytes::from_static(b"{}")))
                    .await;
                (key, answer)
            })
        })
        .collect();
    let (mut new, mut failed) = (Vec::new(), Vec::new());
    for task in tasks {
        match task.await.unwrap() {
            (key, Ok(Inserted::New(_))) => new.push(key),
            (key, Err(InboxError::Store { operation, .. })) => {
                assert_eq!(operation, "insert a delivery");
                failed.push(key);
            }
            (key, other) => panic!("unexpected answer for {key}: {other:?}"),
        }
    }
    let mut stored: Vec<String> = store
        .list(JobFilter::default())
        .await
        .unwrap()
        .into_iter()
        .map(|row| row.key)
        .filter(|key| new.contains(key) || failed.contains(key))
        .collect();
    stored.sort();
    new.sort();
    assert_eq!(
        stored, new,
        "the rows stored must be exactly those answered New"
    );
    failed
}

#[test]
fn a_failed_statement_fails_only_its_request_and_a_rolled_back_batch_fails_all() {
    within_real_time(two_workers(), TEST_BOUND, || async {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("inbox.sqlite3");
        let store = Arc::new(SqliteStore::open(&path).unwrap());
        // Another connection (an operator, a migration) makes some inserts fail.
        rusqlite::Connection::open(&path)
            .unwrap()
            .execute_batch(
                "CREATE TRIGGER refuse BEFORE INSERT ON aisoule_inbox WHEN NEW.key LIKE 'refuse%' \
                 BEGIN SELECT RAISE(ABORT, 'refused'); END; \
                 CREATE TRIGGER poison BEFORE INSERT ON aisoule_inbox WHEN NEW.key LIKE 'poison%' \
                 BEGIN SELECT RAISE(ROLLBACK, 'poisoned'); END;",
            )
            .unwrap();

        // ABORT undoes one statement: only that request fails.
        let mut keys: Vec<String> = (0..200).map(|i| format!("ok:{i}")).collect();
        keys.insert(100, "refuse:1".to_owned());
        let failed = insert_all_and_compare(&store, keys).await;
        assert_eq!(failed, ["refuse:1"], "only the refused insert fails");

        // ROLLBACK undoes the whole transaction: every request of its batch must fail, none may
        // be told New.
        let mut keys: Vec<String> = (0..200).map(|i| format!("mate:{i}")).collect();
        keys.insert(100, "poison:1".to_owned());
        let failed = insert_all_and_compare(&store, keys).await;
        assert!(failed.contains(&"poison:1".to_owned()));

        // The store goes on working.
        assert!(matches!(
            store.insert(delivery("after", Bytes::new())).await,
            Ok(Inserted::New(_))
        ));
    });
}

/// Not a timed test: prints the acknowledgements per second of 20 000 concurrent 1 KiB
/// inserts at `synchronous=FULL`, for a person to read.
/// `cargo test --release --features sqlite,test-util --test it -- --ignored --nocapture inbox_sqlite::throughput`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "prints a throughput figure; run by hand"]
async fn throughput() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(dir.path().join("inbox.sqlite3")).unwrap());
    let body = Bytes::from(vec![b'x'; 1024]);
    let inserts = 20_000;
    let started = Instant::now();
    let tasks: Vec<_> = (0..inserts)
        .map(|i| {
            let (store, body) = (Arc::clone(&store), body.clone());
            tokio::spawn(async move { store.insert(delivery(&format!("t:{i}"), body)).await })
        })
        .collect();
    for task in tasks {
        assert!(matches!(task.await.unwrap(), Ok(Inserted::New(_))));
    }
    let elapsed = started.elapsed();
    println!(
        "{inserts} inserts of 1 KiB at synchronous=FULL in {elapsed:?}: {:.0} acks/s, {} commits",
        f64::from(inserts) / elapsed.as_secs_f64(),
        store.commits()
    );
}

/// The table as the inbox created it before it kept accounts, with its indexes.
const SCHEMA_BEFORE_ACCOUNTS: &str = "
CREATE TABLE aisoule_inbox (
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
    finished_at       INTEGER
);
CREATE INDEX aisoule_inbox_pending ON aisoule_inbox (next_run_at, id) WHERE state = 'pending';
CREATE INDEX aisoule_inbox_running ON aisoule_inbox (lease_until, id) WHERE state = 'running';
CREATE INDEX aisoule_inbox_done ON aisoule_inbox (finished_at, id) WHERE state = 'done';
CREATE INDEX aisoule_inbox_unfinished_conversation
    ON aisoule_inbox (conversation, id) WHERE state IN ('pending', 'running');
CREATE INDEX aisoule_inbox_state ON aisoule_inbox (state, id);
INSERT INTO aisoule_inbox (key, state, body, headers, secret_label, received_at, next_run_at)
    VALUES ('before-the-upgrade', 'pending', X'7B7D', '[]', 'test', 1780000000000, 1780000000000);
";

#[test]
fn a_file_from_before_accounts_gets_the_column_and_keeps_its_rows() {
    within_real_time(two_workers(), TEST_BOUND, || async {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.sqlite3");
        rusqlite::Connection::open(&path)
            .unwrap()
            .execute_batch(SCHEMA_BEFORE_ACCOUNTS)
            .unwrap();

        let store = SqliteStore::open(&path).expect("a file from the previous version opens");
        let inserted = tokio::time::timeout(
            Duration::from_secs(10),
            store.insert(NewDelivery {
                account: Some("acme".to_owned()),
                ..delivery("after-the-upgrade", Bytes::from_static(b"{}"))
            }),
        )
        .await
        .expect("the insert answers")
        .expect("the upgraded table takes a row with an account");
        assert!(matches!(inserted, Inserted::New(_)), "got {inserted:?}");
        let claimed = tokio::time::timeout(
            Duration::from_secs(10),
            store.claim(
                SystemTime::UNIX_EPOCH + Duration::from_secs(1_780_000_001),
                Duration::from_secs(30),
                10,
                false,
            ),
        )
        .await
        .expect("the claim answers")
        .expect("the upgraded table is claimed from");
        let accounts: Vec<(&str, Option<&str>)> = claimed
            .iter()
            .map(|job| (job.key.as_str(), job.account.as_deref()))
            .collect();
        assert_eq!(
            accounts,
            [
                ("before-the-upgrade", None),
                ("after-the-upgrade", Some("acme"))
            ],
            "the old row is kept without an account, the new one has its own"
        );
        drop(store);

        // Opened again, the upgraded file is left as it is.
        let store = SqliteStore::open(&path).expect("an upgraded file opens again");
        let listed =
            tokio::time::timeout(Duration::from_secs(10), store.list(JobFilter::default()))
                .await
                .expect("the listing answers")
                .unwrap();
        assert_eq!(listed.len(), 2, "reopening keeps both rows");
        assert_eq!(listed[1].account.as_deref(), Some("acme"));
    });
}

#[test]
fn the_store_shows_its_file_and_settings() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shown.sqlite3");
    let store = SqliteStore::builder(&path)
        .synchronous(Synchronous::Normal)
        .max_batch(7)
        .open()
        .expect("opens");
    assert_eq!(store.path(), path, "the store names the file it opened");
    let shown = format!("{store:?}");
    for field in [
        format!("path: {path:?}"),
        "synchronous: Normal".to_owned(),
        "max_batch: 7".to_owned(),
        "commits: 0".to_owned(),
    ] {
        assert!(shown.contains(&field), "{field} is missing from {shown}");
    }
}

#[test]
fn each_batch_is_one_commit_and_a_batch_of_one_commits_every_request() {
    within_real_time(two_workers(), TEST_BOUND, || async {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path().join("one.sqlite3")).unwrap();
        for (i, key) in ["commit:1", "commit:2"].into_iter().enumerate() {
            let inserted = tokio::time::timeout(
                Duration::from_secs(10),
                store.insert(delivery(key, Bytes::new())),
            )
            .await
            .expect("the insert answers");
            assert!(matches!(inserted, Ok(Inserted::New(_))), "{inserted:?}");
            assert_eq!(store.commits(), i as u64 + 1, "one insert, one commit");
        }

        // Below 1 is taken as 1. Every insert is queued before the writer has committed the
        // first, so a batch larger than asked would show as fewer commits than inserts.
        for max_batch in [0, 1] {
            let path = dir.path().join(format!("batch-of-{max_batch}.sqlite3"));
            let store = SqliteStore::builder(&path)
                .max_batch(max_batch)
                .open()
                .unwrap();
            let inserts = 64;
            let answers = futures_util::future::join_all(
                (0..inserts).map(|i| store.insert(delivery(&format!("one:{i}"), Bytes::new()))),
            );
            let answers = tokio::time::timeout(Duration::from_secs(30), answers)
                .await
                .expect("every insert answers");
            assert!(answers.iter().all(|a| matches!(a, Ok(Inserted::New(_)))));
            assert_eq!(
                store.commits(),
                inserts,
                "max_batch({max_batch}) commits every request on its own"
            );
        }
    });
}

#[test]
fn dropping_the_store_returns_only_once_every_queued_insert_is_committed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("inbox.sqlite3");
    let store = SqliteStore::open(&path).unwrap();
    // Another process holds the write lock, so nothing queued can commit until it lets go.
    let other = rusqlite::Connection::open(&path).unwrap();
    other.execute_batch("BEGIN IMMEDIATE").unwrap();
    let inserts = 100;
    for i in 0..inserts {
        // An insert is queued when it is called, whether or not its answer is awaited.
        drop(store.insert(delivery(&format!("queued:{i}"), Bytes::new())));
    }
    let (released, lets_go) = std::sync::mpsc::channel::<()>();
    let holder = std::thread::spawn(move || {
        // Well within the store's 5 s busy timeout, so that the queued inserts then commit.
        let _ = lets_go.recv_timeout(Duration::from_millis(300));
        other.execute_batch("COMMIT").unwrap();
    });
    drop(store);
    let count: i64 = rusqlite::Connection::open(&path)
        .unwrap()
        .query_row("SELECT count(*) FROM aisoule_inbox", [], |row| row.get(0))
        .unwrap();
    drop(released);
    holder.join().unwrap();
    assert_eq!(
        count, inserts,
        "dropping the store waits for what was queued, even behind another process's lock"
    );
}
