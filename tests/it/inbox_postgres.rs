//! The PostgreSQL inbox store against a throwaway server: what only a shared database has
//! (several replicas, group commit, a server that dies), plus a walk through the row's life.
//!
//! Every test makes its own schema on the one server this test binary shares, except the crash
//! test, which kills its own server.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use aisoule_webhooks::InboxError;
use aisoule_webhooks::inbox::postgres::PostgresStore;
use aisoule_webhooks::inbox::{InboxStore, Inserted, JobFilter, JobId, JobState, NewDelivery};
use bytes::Bytes;
use futures_util::future::join_all;

use crate::postgres_server::{PostgresServer, unique_schema};
use crate::support::{two_workers, within_real_time};

/// The real-time bound on each test here: as long as the longest of their tokio timeouts, and
/// short enough that a test which only ends at the bound still ends within `cargo mutants`'
/// 120 s test timeout, after the tests that ran before it.
const TEST_BOUND: Duration = Duration::from_secs(60);

/// A fixed start, so that times are exact: the store has no clock of its own.
fn t0() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_780_000_000)
}

fn at(secs: u64) -> SystemTime {
    t0() + Duration::from_secs(secs)
}

const LEASE: Duration = Duration::from_secs(30);

fn delivery(key: &str, conversation: Option<&str>) -> NewDelivery {
    NewDelivery {
        key: key.to_owned(),
        body: Bytes::from(format!(r#"{{"event":"message.incoming","key":"{key}"}}"#)),
        headers: vec![("x-webhook-signature".to_owned(), "sha256=00".to_owned())],
        secret_label: "test".to_owned(),
        received_at: t0(),
        conversation: conversation.map(str::to_owned),
        quarantine: None,
        account: None,
    }
}

/// A store on the shared server in a schema of its own, or `None` when PostgreSQL is missing.
async fn fresh(prefix: &str) -> Option<(String, String, PostgresStore)> {
    let url = PostgresServer::shared()?.url();
    let schema = unique_schema(prefix);
    let store = PostgresStore::builder(&url)
        .schema(&schema)
        .connect()
        .await
        .expect("connects to the test server");
    Some((url, schema, store))
}

async fn new_id(store: &impl InboxStore, d: NewDelivery) -> JobId {
    match store.insert(d).await.expect("inserts") {
        Inserted::New(id) => id,
        Inserted::Duplicate => panic!("expected a new row"),
    }
}

#[test]
fn one_key_inserted_64_times_at_once_is_new_exactly_once() {
    within_real_time(two_workers(), TEST_BOUND, || async {
        let Some((_, _, store)) = fresh("dup_batch").await else {
            return;
        };
        // join_all polls every insert before the batcher can answer, so they share a batch (or a
        // few): a key repeated within one statement must still be new exactly once.
        let results = join_all((0..64).map(|_| store.insert(delivery("same", None)))).await;
        let results: Vec<Inserted> = results.into_iter().map(|r| r.expect("inserts")).collect();
        let new = results
            .iter()
            .filter(|r| matches!(r, Inserted::New(_)))
            .count();
        assert_eq!(new, 1, "{results:?}");
        assert!(
            matches!(results[0], Inserted::New(_)),
            "the first waiter is the new one: {results:?}"
        );
        let rows = store.list(JobFilter::default()).await.expect("lists");
        assert_eq!(rows.len(), 1);
        // And later, across batches.
        assert_eq!(
            store.insert(delivery("same", None)).await.expect("inserts"),
            Inserted::Duplicate
        );
    });
}

#[test]
fn a_batch_of_distinct_keys_gets_ids_in_insertion_order() {
    within_real_time(two_workers(), TEST_BOUND, || async {
        let Some((_, _, store)) = fresh("batch_order").await else {
            return;
        };
        let results =
            join_all((0..200).map(|i| store.insert(delivery(&format!("k{i:03}"), None)))).await;
        let ids: Vec<i64> = results
            .into_iter()
            .map(|r| match r.expect("inserts") {
                Inserted::New(id) => id.0,
                Inserted::Duplicate => panic!("distinct keys are new"),
            })
            .collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
        let rows = store.list(JobFilter::default()).await.expect("lists");
        assert_eq!(rows.len(), 200);
        assert_eq!(rows[0].key, "k000");
        assert_eq!(rows[0].headers, delivery("k000", None).headers);
        assert_eq!(rows[0].state, JobState::Pending);
        assert_eq!(rows[0].received_at, t0());
    });
}

#[test]
fn text_postgres_cannot_store_fails_only_its_own_delivery() {
    within_real_time(two_workers(), TEST_BOUND, || async {
        let Some((_, _, store)) = fresh("nul").await else {
            return;
        };
        let mut deliveries: Vec<NewDelivery> =
            (0..20).map(|i| delivery(&format!("ok{i}"), None)).collect();
        deliveries[7].key = "bad\0key".to_owned();
        deliveries[12].conversation = Some("+91\0".to_owned());
        let results = join_all(deliveries.into_iter().map(|d| store.insert(d))).await;
        for (i, result) in results.iter().enumerate() {
            if i == 7 || i == 12 {
                let Err(e @ InboxError::Store { .. }) = result else {
                    panic!("{i}: {result:?}");
                };
                let field = if i == 7 { "key" } else { "conversation" };
                assert_eq!(
                    std::error::Error::source(e).map(ToString::to_string),
                    Some(format!(
                        "the delivery's {field} holds a NUL character, which PostgreSQL cannot store"
                    )),
                    "the error names the field at fault"
                );
            } else {
                assert!(matches!(result, Ok(Inserted::New(_))), "{i}: {result:?}");
            }
        }
        // A handler's error message with a NUL is still recorded.
        let id = new_id(&store, delivery("fails", None)).await;
        let jobs = store.claim(at(1), LEASE, 100, false).await.unwrap();
        let job = jobs.iter().find(|j| j.id == id).expect("claimed");
        store
            .fail(id, job.fence, "bad\0message", None, at(2))
            .await
            .expect("the failure is recorded");
        let row = store.get(id).await.unwrap().unwrap();
        assert_eq!(row.state, JobState::Dead);
        assert_eq!(row.last_error.as_deref(), Some("bad\u{fffd}message"));
    });
}

#[test]
fn two_replicas_claiming_at_once_never_share_a_row() {
    within_real_time(two_workers(), TEST_BOUND, || async {
        const ROWS: usize = 500;
        let Some((url, schema, first)) = fresh("replicas").await else {
            return;
        };
        let second = PostgresStore::builder(&url)
            .schema(&schema)
            .connect()
            .await
            .expect("the second replica connects");
        let first: Arc<dyn InboxStore> = Arc::new(first);
        let second: Arc<dyn InboxStore> = Arc::new(second);
        let inserts =
            join_all((0..ROWS).map(|i| first.insert(delivery(&format!("r{i}"), None)))).await;
        assert!(inserts.iter().all(|r| matches!(r, Ok(Inserted::New(_)))));

        let claimed: Arc<Mutex<HashMap<i64, usize>>> = Arc::default();
        let mut loops = Vec::new();
        for replica in [first.clone(), second.clone()] {
            for _ in 0..4 {
                let (store, claimed) = (replica.clone(), claimed.clone());
                loops.push(tokio::spawn(async move {
                    loop {
                        let jobs = store.claim(at(1), LEASE, 7, false).await.expect("claims");
                        if jobs.is_empty() {
                            return;
                        }
                        assert!(jobs.windows(2).all(|w| w[0].id < w[1].id), "sorted by id");
                        for job in jobs {
                            assert_eq!(job.attempt, 1);
                            *claimed.lock().unwrap().entry(job.id.0).or_default() += 1;
                            store
                                .complete(job.id, job.fence, at(2))
                                .await
                                .expect("completes what it claimed");
                        }
                    }
                }));
            }
        }
        for handle in loops {
            handle.await.expect("the claim loop does not panic");
        }
        let claimed = claimed.lock().unwrap().clone();
        assert_eq!(claimed.len(), ROWS, "every row was claimed");
        assert!(
            claimed.values().all(|&n| n == 1),
            "no row was claimed twice"
        );
        let stats = first.stats().await.expect("counts");
        assert_eq!(
            (stats.done, stats.pending, stats.running),
            (ROWS as u64, 0, 0)
        );
    });
}

#[test]
fn a_lease_taken_over_by_the_other_replica_cannot_be_settled_by_the_stale_one() {
    within_real_time(two_workers(), TEST_BOUND, || async {
        let Some((url, schema, stale)) = fresh("takeover").await else {
            return;
        };
        let other = PostgresStore::builder(&url)
            .schema(&schema)
            .connect()
            .await
            .expect("the other replica connects");
        let id = new_id(&stale, delivery("t", None)).await;

        let mine = stale.claim(at(1), LEASE, 10, false).await.expect("claims");
        assert_eq!(mine.len(), 1);
        // While the lease runs, the other replica gets nothing.
        assert!(
            other
                .claim(at(30), LEASE, 10, false)
                .await
                .expect("claims")
                .is_empty()
        );
        // The lease ended at 31 s: the other replica takes the row over.
        let theirs = other.claim(at(32), LEASE, 10, false).await.expect("claims");
        assert_eq!(theirs.len(), 1);
        assert_eq!(theirs[0].id, id);
        assert_eq!(theirs[0].attempt, 2);
        assert_ne!(theirs[0].fence, mine[0].fence);

        for result in [
            stale.complete(id, mine[0].fence, at(33)).await,
            stale.renew(id, mine[0].fence, at(90)).await,
            stale.fail(id, mine[0].fence, "late", None, at(33)).await,
        ] {
            assert!(
                matches!(result, Err(InboxError::LeaseLost { id: lost }) if lost == id.0),
                "{result:?}"
            );
        }
        // A stale release does nothing and is not an error.
        stale
            .release(id, mine[0].fence, at(33))
            .await
            .expect("a stale release is quiet");
        assert_eq!(
            other.get(id).await.unwrap().unwrap().state,
            JobState::Running
        );
        other
            .complete(id, theirs[0].fence, at(34))
            .await
            .expect("the holder completes");
        let row = stale.get(id).await.unwrap().unwrap();
        assert_eq!(row.state, JobState::Done);
        assert_eq!(row.finished_at, Some(at(34)));
    });
}

#[test]
fn a_row_goes_through_its_whole_life() {
    within_real_time(two_workers(), TEST_BOUND, || async {
        let Some((_, _, store)) = fresh("life").await else {
            return;
        };
        let id = new_id(&store, delivery("life", None)).await;
        let job = store
            .claim(at(1), LEASE, 10, false)
            .await
            .unwrap()
            .remove(0);
        assert_eq!((job.id, job.key.as_str(), job.attempt), (id, "life", 1));
        assert_eq!(job.body, delivery("life", None).body);
        store.renew(id, job.fence, at(100)).await.expect("renews");
        assert_eq!(
            store.get(id).await.unwrap().unwrap().lease_until,
            Some(at(100))
        );

        // A failure with a retry: pending again from the retry time.
        store
            .fail(id, job.fence, "boom", Some(at(10)), at(2))
            .await
            .expect("fails");
        let row = store.get(id).await.unwrap().unwrap();
        assert_eq!(row.state, JobState::Pending);
        assert_eq!((row.next_run_at, row.lease_until), (at(10), None));
        assert_eq!(row.last_error.as_deref(), Some("boom"));
        assert!(
            store
                .claim(at(9), LEASE, 10, false)
                .await
                .unwrap()
                .is_empty()
        );
        let job = store
            .claim(at(10), LEASE, 10, false)
            .await
            .unwrap()
            .remove(0);
        assert_eq!(job.attempt, 2);

        // A release gives the attempt back.
        store
            .release(id, job.fence, at(11))
            .await
            .expect("releases");
        let job = store
            .claim(at(11), LEASE, 10, false)
            .await
            .unwrap()
            .remove(0);
        assert_eq!(job.attempt, 2);

        // A failure without a retry: dead.
        store
            .fail(id, job.fence, "boom again", None, at(12))
            .await
            .expect("fails");
        let row = store.get(id).await.unwrap().unwrap();
        assert_eq!((row.state, row.finished_at), (JobState::Dead, Some(at(12))));
        assert!(
            store
                .claim(at(99), LEASE, 10, false)
                .await
                .unwrap()
                .is_empty()
        );

        // Replay: pending from now, attempts reset, the error kept, a new fence.
        let replayed = store
            .replay(
                JobFilter {
                    state: Some(JobState::Dead),
                    ..JobFilter::default()
                },
                at(20),
            )
            .await
            .unwrap();
        assert_eq!(replayed, 1);
        let row = store.get(id).await.unwrap().unwrap();
        assert_eq!(row.state, JobState::Pending);
        assert_eq!((row.attempts, row.next_run_at), (0, at(20)));
        assert_eq!(row.last_error.as_deref(), Some("boom again"));
        assert_eq!(row.finished_at, None);
        let again = store
            .claim(at(20), LEASE, 10, false)
            .await
            .unwrap()
            .remove(0);
        assert_eq!(again.attempt, 1);
        assert!(
            again.fence.0 > job.fence.0 + 1,
            "the replay advanced the fence too"
        );
        store
            .complete(id, again.fence, at(21))
            .await
            .expect("completes");

        // Stats and purge.
        let mut quarantined = delivery("q", None);
        quarantined.quarantine = Some("stale timestamp".to_owned());
        let q = new_id(&store, quarantined).await;
        assert!(
            store
                .claim(at(30), LEASE, 10, false)
                .await
                .unwrap()
                .is_empty()
        );
        let _pending = new_id(&store, delivery("p", None)).await;
        let stats = store.stats().await.unwrap();
        assert_eq!(
            (
                stats.pending,
                stats.running,
                stats.done,
                stats.dead,
                stats.quarantined
            ),
            (1, 0, 1, 0, 1)
        );
        assert_eq!(stats.oldest_pending_received_at, Some(t0()));
        let row = store.get(q).await.unwrap().unwrap();
        assert_eq!(row.quarantine_reason.as_deref(), Some("stale timestamp"));
        assert_eq!(
            store.purge(at(21), 10).await.unwrap(),
            0,
            "finished at 21, not before"
        );
        assert_eq!(store.purge(at(22), 10).await.unwrap(), 1);
        assert_eq!(store.get(id).await.unwrap(), None);
        assert_eq!(store.get(JobId(i64::MAX)).await.unwrap(), None);
        let page = store
            .list(JobFilter {
                after: Some(q),
                limit: Some(5),
                ..JobFilter::default()
            })
            .await
            .unwrap();
        assert_eq!(page.len(), 1);
        assert_eq!(page[0].key, "p");
    });
}

#[test]
fn ordered_claims_wait_for_the_conversations_earlier_rows_even_with_an_expired_lease() {
    within_real_time(two_workers(), TEST_BOUND, || async {
        let Some((_, _, store)) = fresh("ordered").await else {
            return;
        };
        let a1 = new_id(&store, delivery("a1", Some("+911"))).await;
        let _a2 = new_id(&store, delivery("a2", Some("+911"))).await;
        let b1 = new_id(&store, delivery("b1", Some("+912"))).await;
        let none = new_id(&store, delivery("n", None)).await;
        let jobs = store.claim(at(1), LEASE, 10, true).await.unwrap();
        let ids: Vec<JobId> = jobs.iter().map(|j| j.id).collect();
        assert_eq!(ids, vec![a1, b1, none]);
        // a1's lease ended, but it is unfinished: a2 still waits, and a1 is taken over.
        let jobs = store.claim(at(100), LEASE, 10, true).await.unwrap();
        let ids: Vec<JobId> = jobs.iter().map(|j| j.id).collect();
        assert_eq!(ids, vec![a1, b1, none]);
        store.complete(a1, jobs[0].fence, at(101)).await.unwrap();
        let jobs = store.claim(at(101), LEASE, 10, true).await.unwrap();
        assert_eq!(jobs.len(), 1);
        assert_eq!(jobs[0].key, "a2");
    });
}

#[test]
fn stores_connecting_at_once_create_the_table_once() {
    within_real_time(two_workers(), TEST_BOUND, || async {
        let Some(server) = PostgresServer::shared() else {
            return;
        };
        let url = server.url();
        // An identifier that needs quoting, too.
        let schema = format!("{} \"quoted\"", unique_schema("Create"));
        let stores =
            join_all((0..4).map(|_| PostgresStore::builder(&url).schema(&schema).connect())).await;
        let stores: Vec<PostgresStore> = stores
            .into_iter()
            .map(|s| s.expect("every replica connects"))
            .collect();
        let id = new_id(&stores[0], delivery("x", None)).await;
        assert_eq!(stores[3].get(id).await.unwrap().unwrap().key, "x");
        assert_eq!(stores[3].schema(), schema);
    });
}

#[test]
fn a_dead_server_is_an_error_not_a_hang_and_acked_rows_survive_it() {
    within_real_time(two_workers(), TEST_BOUND, || async {
        let Some(mut server) = PostgresServer::start() else {
            return;
        };
        let store = PostgresStore::builder(server.url())
            .acquire_timeout(Duration::from_secs(1))
            .connect()
            .await
            .expect("connects");
        let id = new_id(&store, delivery("before", None)).await;
        // A burst acknowledged in group commits, the last of them just before the crash.
        let acked =
            join_all((0..1_000).map(|i| store.insert(delivery(&format!("acked{i:04}"), None))))
                .await;
        assert!(acked.iter().all(|r| matches!(r, Ok(Inserted::New(_)))));

        server.kill();
        let within = Duration::from_secs(10);
        let result = tokio::time::timeout(within, store.insert(delivery("during", None)))
            .await
            .expect("the insert answers instead of hanging");
        assert!(
            matches!(result, Err(InboxError::Store { .. })),
            "{result:?}"
        );
        // A burst while the server is down: every insert is refused, none waits behind the others'
        // acquire timeouts in turn.
        let started = std::time::Instant::now();
        let burst =
            join_all((0..5_000).map(|i| store.insert(delivery(&format!("burst{i}"), None))));
        let burst = tokio::time::timeout(within, burst)
            .await
            .expect("the burst answers instead of hanging");
        assert!(
            burst
                .iter()
                .all(|r| matches!(r, Err(InboxError::Store { .. }))),
            "every insert of the burst fails"
        );
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the burst was refused within one acquire timeout or two, not one per batch: {:?}",
            started.elapsed()
        );
        let result = tokio::time::timeout(within, store.claim(at(1), LEASE, 10, false))
            .await
            .expect("the claim answers instead of hanging");
        assert!(
            matches!(result, Err(InboxError::Store { .. })),
            "{result:?}"
        );

        server.restart();
        let inserted = tokio::time::timeout(within, store.insert(delivery("after", None)))
            .await
            .expect("answers")
            .expect("inserts again once the server is back");
        assert!(matches!(inserted, Inserted::New(_)));
        let row = store
            .get(id)
            .await
            .unwrap()
            .expect("the acked row survived SIGKILL");
        assert_eq!(row.key, "before");
        let keys: Vec<String> = store
            .list(JobFilter::default())
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.key)
            .collect();
        let mut expected = vec!["before".to_owned()];
        expected.extend((0..1_000).map(|i| format!("acked{i:04}")));
        expected.push("after".to_owned());
        assert_eq!(
            keys, expected,
            "every acknowledged insert survived SIGKILL, nothing else did"
        );
    });
}

/// Not a test of behaviour: the throughput of 20 000 concurrent 1 KiB inserts and their
/// latency, printed for a person to read. Run by hand:
/// `cargo test --release --features postgres,test-util --test it inbox_postgres::throughput -- --ignored --nocapture`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, run by hand"]
async fn throughput_of_20k_concurrent_1k_inserts() {
    const N: usize = 20_000;
    let Some((_, _, store)) = fresh("throughput").await else {
        return;
    };
    let store = Arc::new(store);
    let body = Bytes::from(vec![b'x'; 1024]);
    let started = std::time::Instant::now();
    let tasks: Vec<_> = (0..N)
        .map(|i| {
            let (store, body) = (store.clone(), body.clone());
            tokio::spawn(async move {
                let mut d = delivery(&format!("tp{i}"), None);
                d.body = body;
                let sent = std::time::Instant::now();
                let inserted = store.insert(d).await.expect("inserts");
                assert!(matches!(inserted, Inserted::New(_)));
                sent.elapsed()
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(N);
    for task in tasks {
        latencies.push(task.await.expect("the insert task"));
    }
    report("all at once", started.elapsed(), latencies);

    // The same number again from 200 clients that each wait for their answer before sending
    // the next, as a fleet of platform connections would.
    const CLIENTS: usize = 200;
    let started = std::time::Instant::now();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let (store, body) = (store.clone(), body.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(N / CLIENTS);
                for i in 0..N / CLIENTS {
                    let mut d = delivery(&format!("tp-{c}-{i}"), None);
                    d.body = body.clone();
                    let sent = std::time::Instant::now();
                    let inserted = store.insert(d).await.expect("inserts");
                    assert!(matches!(inserted, Inserted::New(_)));
                    latencies.push(sent.elapsed());
                }
                latencies
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(N);
    for client in clients {
        latencies.extend(client.await.expect("the client task"));
    }
    report("200 clients", started.elapsed(), latencies);
}

fn report(what: &str, elapsed: Duration, mut latencies: Vec<Duration>) {
    let n = latencies.len();
    latencies.sort();
    println!(
        "{what}: {n} inserts of 1 KiB in {elapsed:?}: {:.0} acks/s; latency p50 {:?}, p99 {:?}, \
         max {:?}",
        n as f64 / elapsed.as_secs_f64(),
        latencies[n / 2],
        latencies[n * 99 / 100],
        latencies[n - 1]
    );
}

/// The conformance suite (`test_util::inbox_suite`), each case in a schema of its own on the
/// shared server.
mod suite {
    use std::future::Future;
    use std::pin::Pin;
    use std::sync::{Arc, Mutex};

    use aisoule_webhooks::inbox::InboxStore;
    use aisoule_webhooks::inbox::postgres::PostgresStore;
    use aisoule_webhooks::test_util::inbox_suite::{self, InboxUnderTest};

    use super::TEST_BOUND;
    use crate::postgres_server::{PostgresServer, unique_schema};
    use crate::support::{two_workers, within_real_time};

    struct Postgres {
        url: String,
        /// The schema of the latest fresh store, which `reopen` connects to again.
        latest: Mutex<Option<String>>,
    }

    impl Postgres {
        async fn connect(&self, schema: String) -> Arc<dyn InboxStore> {
            Arc::new(
                PostgresStore::builder(&self.url)
                    .schema(schema)
                    .max_connections(4)
                    .connect()
                    .await
                    .expect("connects to the test server"),
            )
        }
    }

    impl InboxUnderTest for Postgres {
        fn fresh(&self) -> Pin<Box<dyn Future<Output = Arc<dyn InboxStore>> + Send + '_>> {
            let schema = unique_schema("suite");
            *self.latest.lock().unwrap() = Some(schema.clone());
            Box::pin(self.connect(schema))
        }

        fn reopen(
            &self,
            store: Arc<dyn InboxStore>,
        ) -> Pin<Box<dyn Future<Output = Arc<dyn InboxStore>> + Send + '_>> {
            // Dropping the store ends its batcher once it has written what was queued; the
            // new store reads the same table, as another process would.
            drop(store);
            let schema = self.latest.lock().unwrap().clone().expect("a fresh store");
            Box::pin(self.connect(schema))
        }
    }

    #[test]
    fn the_postgres_store_passes_the_inbox_suite() {
        within_real_time(two_workers(), TEST_BOUND, || async {
            let Some(server) = PostgresServer::shared() else {
                return;
            };
            let backend = Postgres {
                url: server.url(),
                latest: Mutex::new(None),
            };
            inbox_suite::run_all(&backend).await;
        });
    }
}

/// The table as the store created it before it kept accounts, in schema `{schema}`, with one
/// row in it.
const TABLE_BEFORE_ACCOUNTS: &str = "
CREATE SCHEMA {schema};
CREATE TABLE {schema}.aisoule_inbox (
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
    quarantine_reason TEXT
);
INSERT INTO {schema}.aisoule_inbox (key, state, body, headers, secret_label, received_at, next_run_at)
    VALUES ('before-the-upgrade', 'pending', '\\x7b7d', '[]', 'test', 1780000000000, 1780000000000);
";

#[test]
fn a_table_from_before_accounts_gets_the_column_and_keeps_its_rows() {
    within_real_time(two_workers(), TEST_BOUND, || async {
        let Some(server) = PostgresServer::shared() else {
            return;
        };
        // Every step talks to the server: one deadline for all of them.
        tokio::time::timeout(Duration::from_secs(60), async {
            let url = server.url();
            let schema = unique_schema("Upgrade");
            let old = TABLE_BEFORE_ACCOUNTS.replace("{schema}", &format!("\"{schema}\""));
            let pool = sqlx::PgPool::connect(&url).await.expect("connects");
            sqlx::raw_sql(sqlx::AssertSqlSafe(old))
                .execute(&pool)
                .await
                .expect("the old table is created");

            let store = tokio::time::timeout(
                Duration::from_secs(10),
                PostgresStore::builder(&url).schema(&schema).connect(),
            )
            .await
            .expect("connects in time")
            .expect("a table from the previous version opens");
            new_id(
                &store,
                NewDelivery {
                    account: Some("acme".to_owned()),
                    ..delivery("after-the-upgrade", None)
                },
            )
            .await;
            let claimed = store.claim(at(1), LEASE, 10, false).await.unwrap();
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
            // A second store on the upgraded table leaves it as it is.
            let again = PostgresStore::builder(&url)
                .schema(&schema)
                .connect()
                .await
                .expect("an upgraded table opens again");
            assert_eq!(again.list(JobFilter::default()).await.unwrap().len(), 2);
        })
        .await
        .expect("the upgrade steps answer in time");
    });
}

#[test]
fn a_server_that_stops_answering_fails_each_operation_at_the_timeout() {
    within_real_time(two_workers(), TEST_BOUND, || async {
        let Some(server) = PostgresServer::shared() else {
            return;
        };
        // Every step talks to the server: one deadline for all of them.
        tokio::time::timeout(Duration::from_secs(60), async {
            let url = server.url();
            let schema = unique_schema("Hung");
            let store = PostgresStore::builder(&url)
                .schema(&schema)
                .timeout(Duration::from_millis(300))
                .connect()
                .await
                .expect("connects");
            let id = new_id(&store, delivery("before", None)).await;
            // An operator's migration holds the table: every statement on it waits, as on a
            // server that stopped answering, and no error comes back.
            let pool = sqlx::PgPool::connect(&url).await.expect("connects");
            let mut holder = pool.begin().await.expect("begins");
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "LOCK TABLE \"{schema}\".aisoule_inbox IN ACCESS EXCLUSIVE MODE"
            )))
            .execute(&mut *holder)
            .await
            .expect("locks the table");

            let expect_timeout = |result: Result<(), InboxError>, operation: &str| match result {
                Err(e @ InboxError::Store { .. }) => {
                    assert_eq!(
                        e.to_string(),
                        format!("the inbox store failed to {operation}"),
                        "the error names what was being done"
                    );
                    let source = std::error::Error::source(&e).expect("the timeout is the source");
                    assert_eq!(
                        source.to_string(),
                        "PostgreSQL did not answer within 300ms",
                        "{operation}"
                    );
                }
                other => panic!("{operation} should time out, got {other:?}"),
            };
            expect_timeout(
                store.insert(delivery("during", None)).await.map(drop),
                "insert a delivery",
            );
            expect_timeout(
                store.claim(at(1), LEASE, 10, false).await.map(drop),
                "claim jobs",
            );
            expect_timeout(store.stats().await.map(drop), "count jobs");
            expect_timeout(store.backlog().await.map(drop), "count unfinished jobs");
            expect_timeout(store.get(id).await.map(drop), "list jobs");

            holder.rollback().await.expect("lets go of the table");
            // The timed-out statements' connections were closed, so the store opens new ones,
            // which on a loaded machine can itself outlast 300 ms: a few timeouts in a row are
            // allowed, any other outcome is not.
            async fn answered<T>(
                operation: impl AsyncFn() -> Result<T, InboxError>,
            ) -> Result<T, InboxError> {
                for _ in 1..10 {
                    match operation().await {
                        Err(InboxError::Store { .. }) => {}
                        other => return other,
                    }
                }
                operation().await
            }
            let before = answered(async || store.get(id).await).await;
            assert_eq!(
                before.expect("reads again").map(|row| row.key),
                Some("before".to_owned())
            );
            let after = answered(async || store.insert(delivery("after", None)).await).await;
            assert!(matches!(after, Ok(Inserted::New(_))), "{after:?}");
        })
        .await
        .expect("every step answers in time");
    });
}

#[test]
fn the_store_and_its_builder_show_their_settings_but_never_the_url() {
    within_real_time(two_workers(), TEST_BOUND, || async {
        let Some(server) = PostgresServer::shared() else {
            return;
        };
        let url = server.url().replace("postgres@", "postgres:hunter2@");
        let schema = unique_schema("Shown");
        let builder = PostgresStore::builder(&url)
            .schema(&schema)
            .max_connections(3)
            .max_batch(9)
            .acquire_timeout(Duration::from_millis(1500))
            .timeout(Duration::from_millis(2500));
        let shown = format!("{builder:?}");
        for field in [
            format!("schema: {schema:?}"),
            "max_connections: 3".to_owned(),
            "max_batch: 9".to_owned(),
            "acquire_timeout: 1.5s".to_owned(),
            "timeout: 2.5s".to_owned(),
        ] {
            assert!(shown.contains(&field), "{field} is missing from {shown}");
        }
        assert!(!shown.contains("hunter2"), "{shown}");
        let store = tokio::time::timeout(Duration::from_secs(30), builder.connect())
            .await
            .expect("connects in time")
            .expect("connects");
        let shown = format!("{store:?}");
        assert!(shown.contains(&format!("schema: {schema:?}")), "{shown}");
        assert!(shown.contains("connections: "), "{shown}");
        assert!(!shown.contains("hunter2"), "{shown}");
    });
}

#[test]
fn a_batch_the_server_refuses_fails_each_insert_with_the_servers_error() {
    within_real_time(two_workers(), TEST_BOUND, || async {
        let Some((url, schema, store)) = fresh("refused").await else {
            return;
        };
        // Every step talks to the server: one deadline for all of them.
        tokio::time::timeout(Duration::from_secs(60), async {
            // A trigger (an operator's, a migration's) refuses every insert.
            let refuse = format!(
                "CREATE FUNCTION \"{schema}\".refuse() RETURNS trigger LANGUAGE plpgsql AS \
                 $$ BEGIN RAISE EXCEPTION 'refused by a trigger'; END $$; \
                 CREATE TRIGGER refuse BEFORE INSERT ON \"{schema}\".aisoule_inbox \
                 FOR EACH ROW EXECUTE FUNCTION \"{schema}\".refuse();"
            );
            let pool = sqlx::PgPool::connect(&url).await.expect("connects");
            sqlx::raw_sql(sqlx::AssertSqlSafe(refuse))
                .execute(&pool)
                .await
                .expect("the trigger is created");
            let results =
                join_all((0..3).map(|i| store.insert(delivery(&format!("refused{i}"), None))))
                    .await;
            for result in results {
                let Err(e @ InboxError::Store { .. }) = result else {
                    panic!("a refused insert is a store error, got {result:?}");
                };
                assert_eq!(e.to_string(), "the inbox store failed to insert a delivery");
                // Every waiter of the batch has the server's error as its source, and that
                // error's own source, the database's message, is kept too.
                let engine = std::error::Error::source(&e).expect("the server's error");
                assert!(
                    engine.to_string().contains("refused by a trigger"),
                    "{engine}"
                );
                let database = engine.source().expect("the database's error");
                assert!(
                    database.to_string().starts_with("refused by a trigger"),
                    "{database}"
                );
            }
        })
        .await
        .expect("every step answers in time");
    });
}

#[test]
fn dropping_the_store_closes_its_connections() {
    within_real_time(two_workers(), TEST_BOUND, || async {
        let Some(server) = PostgresServer::shared() else {
            return;
        };
        // Every step talks to the server: one deadline for all of them.
        tokio::time::timeout(Duration::from_secs(60), async {
            // The store's connections are told apart from the other tests' by their name.
            let name = unique_schema("dropped").to_lowercase();
            let url = format!("{}?application_name={name}", server.url());
            let store = PostgresStore::builder(&url)
                .schema(&name)
                .connect()
                .await
                .expect("connects");
            new_id(&store, delivery("before", None)).await;
            let observer = sqlx::PgPool::connect(&server.url())
                .await
                .expect("connects");
            let open = || async {
                sqlx::query_scalar::<_, i64>(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1",
                )
                .bind(&name)
                .fetch_one(&observer)
                .await
                .expect("counts connections")
            };
            assert!(open().await > 0, "the store is connected");
            drop(store);
            // The insert batcher ends with the store, and the pool's connections with them.
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            while open().await > 0 {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "the dropped store's connections are still open"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await
        .expect("every step answers in time");
    });
}

/// On one runtime thread the batcher cannot run until every insert below is queued, so they
/// are written by one statement, whatever the machine's load.
#[test]
fn one_key_queued_four_times_in_one_batch_is_new_once() {
    within_real_time(
        tokio::runtime::Builder::new_current_thread(),
        TEST_BOUND,
        || async {
            let Some((_, _, store)) = fresh("dup_one_batch").await else {
                return;
            };
            let results = tokio::time::timeout(
                Duration::from_secs(30),
                join_all((0..4).map(|_| store.insert(delivery("same", None)))),
            )
            .await
            .expect("the inserts answer");
            let results: Vec<Inserted> = results.into_iter().map(|r| r.expect("inserts")).collect();
            assert!(
                matches!(
                    results[..],
                    [
                        Inserted::New(_),
                        Inserted::Duplicate,
                        Inserted::Duplicate,
                        Inserted::Duplicate
                    ]
                ),
                "the first insert of the key is new, the others duplicates: {results:?}"
            );
        },
    );
}
