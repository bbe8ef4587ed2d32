//! The inbox's metrics, read through `metrics-util`'s debugging recorder with a real SQLite
//! inbox: the workers publish its depth by state and its lag every metrics interval, and count
//! each attempt's outcome and each dead letter.
//!
//! Under tokio's paused clock on a current-thread runtime, so that the workers' tasks record
//! into this test's thread-local recorder, and minutes of backoff pass in a moment.

use std::sync::Arc;
use std::time::Duration;

use aisoule_webhooks::clock::{Clock, TokioClock};
use aisoule_webhooks::event::{Dialect, EventKind};
use aisoule_webhooks::inbox::sqlite::SqliteStore;
use aisoule_webhooks::inbox::{
    Inbox, InboxBuilder, InboxStats, Inserted, Job, JobHandler, JobId, NewDelivery,
};
use aisoule_webhooks::test_util::Delivery;
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use tokio::sync::Semaphore;

use crate::support::on_a_paused_clock_within_real_time;

const JOBS: &str = "aisoule_inbox_jobs";
const LAG: &str = "aisoule_inbox_lag_seconds";
const DEAD_LETTERS: &str = "aisoule_inbox_dead_letters_total";
const ATTEMPTS: &str = "aisoule_inbox_job_attempts_total";

/// How often the workers publish the gauges in these tests.
const METRICS_INTERVAL: Duration = Duration::from_secs(1);

/// Bounds every wait, in paused time: a regression that stops the workers fails the test.
const DEADLINE: Duration = Duration::from_secs(600);

/// Every value recorded since the last snapshot, by name and labels: taking one resets
/// counters and gauges alike, so a test takes one and reads it.
struct Recorded(Vec<(metrics_util::CompositeKey, DebugValue)>);

impl Recorded {
    fn take(snapshotter: &Snapshotter) -> Self {
        Self(
            snapshotter
                .snapshot()
                .into_vec()
                .into_iter()
                .map(|(key, _, _, value)| (key, value))
                .collect(),
        )
    }

    /// The value of `name` with exactly the labels `labels`, if it was recorded.
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<&DebugValue> {
        self.0.iter().find_map(|(key, value)| {
            let key = key.key();
            let mut have: Vec<(&str, &str)> = key.labels().map(|l| (l.key(), l.value())).collect();
            have.sort_unstable();
            let mut want = labels.to_vec();
            want.sort_unstable();
            (key.name() == name && have == want).then_some(value)
        })
    }

    fn counter(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        match self.get(name, labels) {
            Some(DebugValue::Counter(count)) => *count,
            None => 0,
            Some(other) => panic!("{name} {labels:?} is not a counter: {other:?}"),
        }
    }

    fn gauge(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        match self.get(name, labels) {
            Some(DebugValue::Gauge(value)) => value.into_inner(),
            other => panic!("{name} {labels:?} is not a recorded gauge: {other:?}"),
        }
    }
}

/// The one clock of a test, shared by the inbox and the deliveries' receipt times.
fn clock() -> Arc<TokioClock> {
    Arc::new(TokioClock::new())
}

fn inbox(
    dir: &tempfile::TempDir,
    clock: &Arc<TokioClock>,
    configure: impl FnOnce(InboxBuilder) -> InboxBuilder,
) -> Inbox {
    let store = SqliteStore::open(dir.path().join("inbox.db")).expect("a new SQLite inbox");
    let builder = Inbox::builder(store)
        .clock(clock.clone())
        .backoff(Duration::from_secs(1), Duration::from_secs(60))
        .poll_interval(Duration::from_millis(100))
        .metrics_interval(METRICS_INTERVAL)
        .hold_paused_clock();
    configure(builder).build().expect("valid inbox settings")
}

/// A verified delivery of a `message.incoming` with this id, received `ago` before now.
pub(crate) fn delivery(clock: &TokioClock, id: &str, ago: Duration) -> NewDelivery {
    let sample = Delivery::sample(EventKind::MessageIncoming, Dialect::Developer)
        .message_id(id)
        .build();
    NewDelivery {
        key: format!("inbox-metrics:{id}"),
        body: sample.body().clone(),
        headers: Vec::new(),
        secret_label: "test".to_owned(),
        received_at: clock.now() - ago,
        conversation: None,
        quarantine: None,
        account: None,
    }
}

/// Stores `delivery`, new, and returns its job's id.
pub(crate) async fn insert(inbox: &Inbox, delivery: NewDelivery) -> JobId {
    let inserted = tokio::time::timeout(DEADLINE, inbox.insert(delivery))
        .await
        .expect("stored in time")
        .expect("stored");
    match inserted {
        Inserted::New(id) => id,
        Inserted::Duplicate => panic!("{inserted:?}"),
    }
}

/// A handler whose every job waits for a permit of `gate`: the test decides when each ends.
pub(crate) fn waiting_for(gate: &Arc<Semaphore>) -> impl JobHandler {
    let gate = gate.clone();
    move |_: Job| {
        let gate = gate.clone();
        async move {
            gate.acquire().await.expect("open").forget();
            Ok::<_, std::io::Error>(())
        }
    }
}

/// Waits (in paused time, up to [`DEADLINE`]) until the inbox's stats satisfy `done`.
pub(crate) async fn wait_until(inbox: &Inbox, what: &str, done: impl Fn(&InboxStats) -> bool) {
    let waited = tokio::time::timeout(DEADLINE, async {
        while !done(&inbox.stats().await.expect("stats")) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert!(waited.is_ok(), "not in time: {what}");
}

#[test]
fn a_job_that_exhausts_its_attempts_is_counted_as_a_dead_letter() {
    on_a_paused_clock_within_real_time(|| async {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        let _local = metrics::set_default_local_recorder(&recorder);
        let dir = tempfile::tempdir().unwrap();
        let clock = clock();
        let inbox = inbox(&dir, &clock, |builder| builder.max_attempts(2));
        insert(&inbox, delivery(&clock, "doomed", Duration::ZERO)).await;
        insert(&inbox, delivery(&clock, "fine", Duration::ZERO)).await;

        let workers = inbox.start(|job: Job| async move {
            if job.event().message_id() == Some("doomed") {
                Err(std::io::Error::other("the CRM is down"))
            } else {
                Ok(())
            }
        });
        wait_until(&inbox, "the failing job became a dead letter", |stats| {
            stats.dead == 1
        })
        .await;
        // One more interval, so that the gauges have been published after it died.
        tokio::time::sleep(METRICS_INTERVAL * 2).await;
        tokio::time::timeout(DEADLINE, workers.shutdown(Duration::from_secs(1)))
            .await
            .expect("the workers stopped in time");

        let recorded = Recorded::take(&snapshotter);
        assert_eq!(recorded.counter(DEAD_LETTERS, &[]), 1, "one dead letter");
        assert_eq!(recorded.counter(ATTEMPTS, &[("outcome", "retry")]), 1);
        assert_eq!(recorded.counter(ATTEMPTS, &[("outcome", "dead")]), 1);
        assert_eq!(recorded.counter(ATTEMPTS, &[("outcome", "handled")]), 1);
        assert_eq!(recorded.gauge(JOBS, &[("state", "dead")]), 1.0);
        assert_eq!(recorded.gauge(JOBS, &[("state", "pending")]), 0.0);
        assert_eq!(recorded.gauge(LAG, &[]), 0.0, "nothing is waiting");
        assert!(
            recorded.get(JOBS, &[("state", "done")]).is_none(),
            "done rows are never counted"
        );
    });
}

#[test]
fn depth_and_lag_gauges_follow_the_waiting_jobs() {
    on_a_paused_clock_within_real_time(|| async {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        let _local = metrics::set_default_local_recorder(&recorder);
        let dir = tempfile::tempdir().unwrap();
        let clock = clock();
        let inbox = inbox(&dir, &clock, |builder| builder.workers(1));
        // Claimed first (oldest id), and held running; the other two wait behind it, the oldest
        // received 40 s ago.
        insert(&inbox, delivery(&clock, "running", Duration::from_secs(10))).await;
        insert(&inbox, delivery(&clock, "oldest", Duration::from_secs(40))).await;
        insert(&inbox, delivery(&clock, "newer", Duration::from_secs(20))).await;
        insert(
            &inbox,
            NewDelivery {
                quarantine: Some("stale".to_owned()),
                ..delivery(&clock, "held", Duration::from_secs(7200))
            },
        )
        .await;

        // The handler waits for a permit per job: none until the gauges have been read.
        let gate = Arc::new(Semaphore::new(0));
        let workers = inbox.start(waiting_for(&gate));
        tokio::time::sleep(METRICS_INTERVAL * 2).await;
        let waiting = Recorded::take(&snapshotter);
        assert_eq!(waiting.gauge(JOBS, &[("state", "pending")]), 2.0);
        assert_eq!(waiting.gauge(JOBS, &[("state", "running")]), 1.0);
        assert_eq!(waiting.gauge(JOBS, &[("state", "quarantined")]), 1.0);
        assert_eq!(waiting.gauge(JOBS, &[("state", "dead")]), 0.0);
        // Measured from the oldest pending job (not the running or the quarantined one), at the
        // last publication: 40 s ago when inserted, plus at most the 2 s waited since.
        let lag = waiting.gauge(LAG, &[]);
        assert!((40.0..=42.0).contains(&lag), "lag {lag} s");

        gate.add_permits(3);
        wait_until(&inbox, "the jobs ran", |stats| {
            stats.pending == 0 && stats.running == 0
        })
        .await;
        tokio::time::sleep(METRICS_INTERVAL * 2).await;
        let drained = Recorded::take(&snapshotter);
        assert_eq!(drained.gauge(JOBS, &[("state", "pending")]), 0.0);
        assert_eq!(drained.gauge(JOBS, &[("state", "running")]), 0.0);
        assert_eq!(drained.gauge(JOBS, &[("state", "quarantined")]), 1.0);
        assert_eq!(drained.gauge(LAG, &[]), 0.0, "nothing is waiting");
        assert_eq!(drained.counter(ATTEMPTS, &[("outcome", "handled")]), 3);
        assert_eq!(drained.counter(DEAD_LETTERS, &[]), 0);
        tokio::time::timeout(DEADLINE, workers.shutdown(Duration::from_secs(1)))
            .await
            .expect("the workers stopped in time");
    });
}
