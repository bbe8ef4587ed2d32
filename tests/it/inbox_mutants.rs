//! The inbox's promises that only `cargo mutants` showed untested (issue 26). Of its workers:
//! how often they go to the store (claims in batches, renewals every third of the lease,
//! nothing once their handle is dropped), the backoff they write, that a timed-out handler is
//! stopped, and what they log when a handled job's lease was taken over. Of the inbox itself:
//! the settings it refuses, its defaults, `get`, `replay` and `purge`, a store's panic reaching
//! the caller when the inbox holds the paused clock, and how its ids, states, counts, backlog
//! and lag read.
//!
//! The workers' tests run on a paused clock, with the store holding it still while it works,
//! so minutes pass in a moment; a real-time bound fails a test whose workers spin instead.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use aisoule_webhooks::ConfigError;
use aisoule_webhooks::clock::{Clock, TokioClock};
use aisoule_webhooks::inbox::sqlite::{SqliteStore, Synchronous};
use aisoule_webhooks::inbox::{
    Inbox, InboxBacklog, InboxBuilder, InboxStats, Inserted, Job, JobId, JobState,
};
use tokio::sync::{Notify, Semaphore};

use crate::inbox::{Gate, GatedStore, StoreCalls, stop};
use crate::inbox_metrics::{delivery, insert, wait_until, waiting_for};
use crate::support::{CapturedLogs, on_a_paused_clock_within_real_time};

/// An inbox on a new SQLite file that records the workers' calls, on `clock`, with a
/// 1 s backoff and a 100 ms poll; `configure` adjusts it.
fn recorded_inbox(
    dir: &tempfile::TempDir,
    clock: &Arc<TokioClock>,
    configure: impl FnOnce(InboxBuilder) -> InboxBuilder,
) -> (Inbox, Arc<StoreCalls>) {
    let (store, calls) = GatedStore::open(dir, Gate::default(), Gate::default());
    let builder = Inbox::builder(store)
        .clock(clock.clone())
        .backoff(Duration::from_secs(1), Duration::from_secs(60))
        .poll_interval(Duration::from_millis(100))
        .hold_paused_clock();
    (
        configure(builder).build().expect("valid inbox settings"),
        calls,
    )
}

/// Stores a delivery of a `message.incoming` with this id, received now by the inbox's
/// `clock` (a job is due from its receipt, on the clock the workers claim by).
async fn store(inbox: &Inbox, clock: &TokioClock, id: &str) -> JobId {
    insert(inbox, delivery(clock, id, Duration::ZERO)).await
}

/// A dropped handle ends the workers' loops: no more claims, no more counting for the gauges
/// (a loop that missed it would query the store without pause, forever).
#[test]
fn dropping_the_workers_handle_stops_their_claims_and_their_gauges() {
    on_a_paused_clock_within_real_time(|| async {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(TokioClock::new());
        let (inbox, calls) =
            recorded_inbox(&dir, &clock, |b| b.metrics_interval(Duration::from_secs(1)));
        let workers = inbox.start(|_: Job| async { Ok::<_, std::io::Error>(()) });
        tokio::time::sleep(Duration::from_millis(2500)).await;
        assert!(
            calls.backlogs() >= 2 && calls.claims().len() >= 2,
            "the workers poll and count while they run: {} counts, {:?}",
            calls.backlogs(),
            calls.claims()
        );
        drop(workers);
        tokio::time::sleep(Duration::from_millis(50)).await;
        let (backlogs, claims) = (calls.backlogs(), calls.claims().len());
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_eq!(calls.backlogs(), backlogs, "counted after the drop");
        assert_eq!(calls.claims().len(), claims, "claimed after the drop");
    });
}

/// With a backlog, the workers claim again once a quarter of them are free, for that many
/// jobs: one store round trip per two finished jobs with 8 workers, not one per job.
#[test]
fn a_backlog_is_claimed_a_quarter_of_the_workers_at_a_time() {
    on_a_paused_clock_within_real_time(|| async {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(TokioClock::new());
        let (inbox, calls) = recorded_inbox(&dir, &clock, |b| b.workers(8));
        for i in 0..16 {
            store(&inbox, &clock, &format!("backlog-{i}")).await;
        }
        // Each job waits for a permit: the test lets them finish one at a time.
        let gate = Arc::new(Semaphore::new(0));
        let workers = inbox.start(waiting_for(&gate));
        tokio::time::sleep(Duration::from_millis(100)).await;
        for _ in 0..16 {
            gate.add_permits(1);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        wait_until(&inbox, "every job ran", |stats| stats.done == 16).await;
        let claimed: Vec<usize> = calls
            .claims()
            .into_iter()
            .filter(|&(_, got)| got > 0)
            .map(|(asked, _)| asked)
            .collect();
        assert_eq!(claimed, [8, 2, 2, 2, 2], "{:?}", calls.claims());
        stop(workers, Duration::from_secs(1)).await;
    });
}

/// A running handler's lease is renewed every third of it, and no more often (each renewal
/// is a store write): twice for a 25 s handler under a 30 s lease.
#[test]
fn a_running_handler_renews_its_lease_every_third_of_it() {
    on_a_paused_clock_within_real_time(|| async {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(TokioClock::new());
        let (inbox, calls) = recorded_inbox(&dir, &clock, |b| b.lease(Duration::from_secs(30)));
        store(&inbox, &clock, "slow").await;
        let workers = inbox.start(|_: Job| async {
            tokio::time::sleep(Duration::from_secs(25)).await;
            Ok::<_, std::io::Error>(())
        });
        wait_until(&inbox, "the job ran", |stats| stats.done == 1).await;
        assert_eq!(calls.renewals(), 2, "renewed at 10 s and 20 s");
        stop(workers, Duration::from_secs(1)).await;
    });
}

/// A failed job waits its backoff before running again: the base doubled per failure, up to
/// the maximum, less a random part of at most half, never more.
#[test]
fn a_failed_job_waits_its_backoff_doubled_per_failure_and_jittered_down_by_at_most_half() {
    on_a_paused_clock_within_real_time(|| async {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(TokioClock::new());
        let (inbox, calls) = recorded_inbox(&dir, &clock, |b| {
            b.backoff(Duration::from_secs(1), Duration::from_secs(3))
                .max_attempts(4)
        });
        // Twenty jobs, so that the random part is drawn sixty times.
        let mut ids = Vec::new();
        for i in 0..20 {
            ids.push(store(&inbox, &clock, &format!("failing-{i}")).await);
        }
        let workers = inbox.start(|_: Job| async { Err(std::io::Error::other("the CRM is down")) });
        wait_until(&inbox, "every job is a dead letter", |stats| {
            stats.dead == 20
        })
        .await;
        let failures = calls.failures();
        let full = [1, 2, 3].map(Duration::from_secs);
        for id in ids {
            let waits: Vec<_> = failures
                .iter()
                .filter(|(failed, _)| *failed == id)
                .map(|&(_, wait)| wait)
                .collect();
            assert_eq!(waits.len(), 4, "job {id}: {waits:?}");
            for (wait, full) in waits[..3].iter().zip(full) {
                let wait = wait.unwrap_or_else(|| panic!("job {id} retried: {waits:?}"));
                assert!(
                    full / 2 <= wait && wait <= full,
                    "job {id}: waited {wait:?} for a backoff of {full:?}"
                );
            }
            assert_eq!(waits[3], None, "job {id} dead after its last attempt");
        }
        stop(workers, Duration::from_secs(1)).await;
    });
}

/// A handler past its timeout is stopped, not left running unseen while its job runs again.
#[test]
fn a_handler_that_timed_out_does_not_run_on() {
    on_a_paused_clock_within_real_time(|| async {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(TokioClock::new());
        let (inbox, _) = recorded_inbox(&dir, &clock, |b| {
            b.handler_timeout(Duration::from_secs(3)).max_attempts(1)
        });
        store(&inbox, &clock, "hangs").await;
        let ran_on = Arc::new(AtomicBool::new(false));
        let workers = inbox.start({
            let ran_on = ran_on.clone();
            move |_: Job| {
                let ran_on = ran_on.clone();
                async move {
                    tokio::time::sleep(Duration::from_secs(10)).await;
                    ran_on.store(true, Ordering::SeqCst);
                    Ok::<_, std::io::Error>(())
                }
            }
        });
        wait_until(&inbox, "the job timed out", |stats| stats.dead == 1).await;
        tokio::time::sleep(Duration::from_secs(20)).await;
        assert!(
            !ran_on.load(Ordering::SeqCst),
            "the handler ran past its timeout"
        );
        stop(workers, Duration::from_secs(1)).await;
    });
}

/// A job replayed while its handler runs is taken from that run: the run's success is not
/// recorded, and the warning says which outcome was lost.
#[test]
fn a_handled_outcome_lost_to_a_replay_is_named_in_the_warning() {
    on_a_paused_clock_within_real_time(|| async {
        let logs = CapturedLogs::default();
        let _guard = logs.install();
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(TokioClock::new());
        let (inbox, _) = recorded_inbox(&dir, &clock, |b| b);
        let id = store(&inbox, &clock, "replayed").await;
        // The first run waits for the test; the replay's run does not.
        let (started, go) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
        let first = Arc::new(AtomicBool::new(true));
        let workers = inbox.start({
            let (started, go) = (started.clone(), go.clone());
            move |_: Job| {
                let (started, go, first) = (started.clone(), go.clone(), first.clone());
                async move {
                    if first.swap(false, Ordering::SeqCst) {
                        started.notify_one();
                        go.notified().await;
                    }
                    Ok::<_, std::io::Error>(())
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(60), started.notified())
            .await
            .expect("the first run started");
        assert!(inbox.replay(id).await.unwrap());
        go.notify_one();
        wait_until(&inbox, "the replay ran", |stats| stats.done == 1).await;
        let lost = tokio::time::timeout(Duration::from_secs(60), async {
            loop {
                let text = logs.text();
                if let Some(line) = text.lines().find(|l| l.contains("lease was taken over")) {
                    return line.to_owned();
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
        .await
        .expect("the lost outcome is logged");
        assert!(
            lost.contains("WARN") && lost.contains("outcome=handled"),
            "{lost}"
        );
        stop(workers, Duration::from_secs(1)).await;
    });
}

/// Zero workers would never run a job, and zero attempts would dead-letter it unrun: both are
/// refused when the inbox is built; one of each is enough.
#[test]
fn zero_workers_or_zero_attempts_are_refused_and_one_of_each_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let builder = |name: &str| {
        Inbox::builder(SqliteStore::open(dir.path().join(name)).expect("a new SQLite inbox"))
    };
    let refused = |built: Result<Inbox, ConfigError>| match built {
        Err(ConfigError::ZeroCount { setting }) => setting,
        other => panic!("refused as a zero count, not {other:?}"),
    };
    assert_eq!(refused(builder("w").workers(0).build()), "the worker count");
    assert_eq!(
        refused(builder("a").max_attempts(0).build()),
        "the maximum number of attempts"
    );
    builder("ones")
        .workers(1)
        .max_attempts(1)
        .build()
        .expect("one worker and one attempt");
}

/// The defaults are the documented ones (see each [`InboxBuilder`] setting), and the inbox's
/// `Debug` shows them, so an operator can check what a process runs with.
#[test]
fn the_defaults_are_the_documented_ones_and_debug_shows_them() {
    let dir = tempfile::tempdir().unwrap();
    let inbox = Inbox::new(SqliteStore::open(dir.path().join("inbox.db")).unwrap());
    assert_eq!(inbox.retention(), Duration::from_secs(7 * 24 * 60 * 60));
    let debug = format!("{inbox:?}");
    for setting in [
        "workers: 16",
        "lease: 30s",
        "handler_timeout: 300s",
        "max_attempts: 20",
        "backoff_base: 1s",
        "backoff_max: 3600s",
        "poll_interval: 500ms",
        "ordered: false",
        "retention: 604800s",
        "metrics_interval: 5s",
    ] {
        assert!(debug.contains(setting), "{setting} in {debug}");
    }
}

/// `get` finds a job whatever its state, and nothing for an id it never gave.
#[test]
fn get_finds_a_stored_job_and_nothing_for_an_unknown_id() {
    on_a_paused_clock_within_real_time(|| async {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(TokioClock::new());
        let (inbox, _) = recorded_inbox(&dir, &clock, |b| b);
        let id = store(&inbox, &clock, "kept").await;
        let job = inbox.get(id).await.unwrap().expect("the stored job");
        assert_eq!((job.id, job.state), (id, JobState::Pending));
        assert_eq!(inbox.get(JobId(id.0 + 1000)).await.unwrap(), None);
    });
}

/// `replay` runs only the job it names, at once (idle workers are woken, not left to their
/// next poll), and says whether that job exists; replaying nothing wakes nobody.
#[test]
fn replay_runs_only_the_job_named_at_once_and_says_whether_it_exists() {
    on_a_paused_clock_within_real_time(|| async {
        let dir = tempfile::tempdir().unwrap();
        // Idle workers poll once an hour: only a wake-up runs a replayed job within the test.
        let clock = Arc::new(TokioClock::new());
        let (inbox, calls) = recorded_inbox(&dir, &clock, |b| {
            b.max_attempts(1).poll_interval(Duration::from_secs(3600))
        });
        let replayed = store(&inbox, &clock, "replayed").await;
        store(&inbox, &clock, "left-dead").await;
        let healthy = Arc::new(AtomicBool::new(false));
        let workers = inbox.start({
            let healthy = healthy.clone();
            move |_: Job| {
                let healthy = healthy.load(Ordering::SeqCst);
                async move {
                    if healthy {
                        Ok(())
                    } else {
                        Err(std::io::Error::other("the CRM is down"))
                    }
                }
            }
        });
        wait_until(&inbox, "both jobs are dead letters", |stats| {
            stats.dead == 2
        })
        .await;
        healthy.store(true, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(1)).await;

        let claims = calls.claims().len();
        assert!(!inbox.replay(JobId(replayed.0 + 1000)).await.unwrap());
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(calls.claims().len(), claims, "woken for nothing");

        assert!(inbox.replay(replayed).await.unwrap());
        tokio::time::sleep(Duration::from_secs(1)).await;
        let stats = inbox.stats().await.unwrap();
        assert_eq!((stats.done, stats.dead), (1, 1), "{stats:?}");
        assert_eq!(
            inbox.get(replayed).await.unwrap().unwrap().state,
            JobState::Done
        );
        stop(workers, Duration::from_secs(1)).await;
    });
}

/// `purge` deletes every handled job that finished more than the retention ago, in as many
/// batches as that takes, keeps the others, and says how many it deleted.
#[test]
fn purge_deletes_every_job_handled_before_the_retention_and_keeps_the_rest() {
    on_a_paused_clock_within_real_time(|| async {
        let dir = tempfile::tempdir().unwrap();
        let sqlite = SqliteStore::builder(dir.path().join("inbox.db"))
            .synchronous(Synchronous::Normal)
            .open()
            .expect("a new SQLite inbox");
        let clock = Arc::new(TokioClock::new());
        let inbox = Inbox::builder(sqlite)
            .clock(clock.clone())
            .retention(Duration::from_secs(60))
            .build()
            .unwrap();
        // More than one batch of 1 000.
        handle_new_jobs(&inbox, &clock, "old", 1001).await;
        tokio::time::sleep(Duration::from_secs(61)).await;
        handle_new_jobs(&inbox, &clock, "recent", 1).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(inbox.purge().await.unwrap(), 1001);
        assert_eq!(
            inbox.stats().await.unwrap().done,
            1,
            "the recent one is kept"
        );
        assert_eq!(inbox.purge().await.unwrap(), 0);
    });
}

/// Stores `count` jobs and marks them handled now by `clock`, through the store (the way the
/// workers do).
async fn handle_new_jobs(inbox: &Inbox, clock: &TokioClock, prefix: &str, count: usize) {
    let mut inserts = tokio::task::JoinSet::new();
    for i in 0..count {
        let (inbox, delivery) = (
            inbox.clone(),
            delivery(clock, &format!("{prefix}-{i}"), Duration::ZERO),
        );
        inserts.spawn(async move { inbox.insert(delivery).await });
    }
    while let Some(inserted) = inserts.join_next().await {
        assert!(matches!(inserted.unwrap(), Ok(Inserted::New(_))));
    }
    let store = inbox.store().clone();
    let now = clock.now();
    let jobs = store
        .claim(now, Duration::from_secs(30), count, false)
        .await
        .unwrap();
    assert_eq!(jobs.len(), count);
    let mut completions = tokio::task::JoinSet::new();
    for job in jobs {
        let store = store.clone();
        completions.spawn(async move { store.complete(job.id, job.fence, now).await });
    }
    while let Some(completed) = completions.join_next().await {
        completed.unwrap().unwrap();
    }
}

/// What an operator reads (`aisoule-webhooks inbox stats`, logs): a job's id and state print
/// as their plain value and name, each state's count is its own, and the lag is measured
/// from the oldest pending job's receipt (none when nothing waits; zero, not an error, if the
/// clock is behind it). The backlog (what the gauges show) counts every state but done.
#[test]
fn ids_states_counts_and_lag_read_as_stored() {
    assert_eq!(JobId(42).to_string(), "42");
    for state in JobState::ALL {
        assert_eq!(state.to_string(), state.as_str());
        assert_eq!(JobState::from_name(state.as_str()), Some(state));
    }
    assert_eq!(JobState::Quarantined.to_string(), "quarantined");
    let received = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
    let stats = InboxStats {
        pending: 1,
        running: 2,
        done: 3,
        dead: 4,
        quarantined: 5,
        oldest_pending_received_at: Some(received),
    };
    let counts = JobState::ALL.map(|state| stats.count(state));
    assert_eq!(counts, [1, 2, 3, 4, 5]);
    assert_eq!(
        stats.lag(received + Duration::from_secs(7)),
        Some(Duration::from_secs(7))
    );
    assert_eq!(
        stats.lag(received - Duration::from_secs(7)),
        Some(Duration::ZERO)
    );
    let idle = InboxStats::default();
    assert_eq!(idle.lag(received), None);
    let backlog = InboxBacklog::from(stats);
    assert_eq!(
        JobState::ALL.map(|state| backlog.count(state)),
        [Some(1), Some(2), None, Some(4), Some(5)]
    );
}

/// A store operation that panics panics its caller with its own message when the inbox holds
/// the paused clock (the operation then runs on another thread), as it does without: a bug
/// in a store is not turned into an error that reads as a closed inbox.
#[test]
fn a_store_panic_reaches_the_caller_when_the_inbox_holds_the_paused_clock() {
    on_a_paused_clock_within_real_time(|| async {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = GatedStore::open(&dir, Gate::default(), Gate::default());
        let store = store.panicking_stats();
        let inbox = Inbox::builder(store)
            .clock(Arc::new(TokioClock::new()))
            .hold_paused_clock()
            .build()
            .unwrap();
        let join = tokio::spawn(async move { inbox.stats().await.map(|_| ()) })
            .await
            .expect_err("the caller panics");
        let payload = join.into_panic();
        assert_eq!(
            payload.downcast_ref::<&str>(),
            Some(&"the stats query panicked")
        );
    });
}
