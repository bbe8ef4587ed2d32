//! The metrics every delivery records, through the `metrics` facade: install the exporter you
//! use (Prometheus, StatsD, OpenTelemetry) and they appear; without one each call is a no-op.
//! Names and labels follow Prometheus conventions; the README lists them.
//!
//! The inbox's gauges come from its workers, which count the rows not yet done every
//! [`metrics_interval`](crate::inbox::InboxBuilder::metrics_interval) (5 s by default) through
//! [`InboxStore::backlog`](crate::inbox::InboxStore::backlog), never per job: every replica
//! sharing a PostgreSQL inbox reports the same shared rows, so aggregate them with `max`, not
//! `sum`. Its counters are per process, like the deliveries'.

use std::time::{Duration, SystemTime};

use crate::inbox::InboxBacklog;

/// Counts every delivery by its final outcome (`handled`, `released`, `duplicate`, `stored`,
/// `quarantined`, or a rejection's reason), the value of the `aisoule-outcome` header.
pub(crate) const DELIVERIES: &str = "aisoule_webhook_deliveries_total";
/// The handler's run time, by outcome (`handled` or `released`).
pub(crate) const HANDLER_DURATION: &str = "aisoule_webhook_handler_duration_seconds";
/// Verified deliveries by the label of the secret that matched: when an old label stops
/// growing, its secret can go.
pub(crate) const SECRET_MATCHES: &str = "aisoule_webhook_signature_matches_total";
/// Events a [`Dispatcher`](crate::dispatch::Dispatcher) had no handler for, by `kind` (one
/// `unknown` label for every unknown name, so the platform cannot grow the label set) and
/// `payload` (`typed`, `unrecognized` or `unknown`).
pub(crate) const UNREGISTERED: &str = "aisoule_webhook_unregistered_events_total";
/// Store failures answered 503, by store (`dedup` or `inbox`).
pub(crate) const STORE_ERRORS: &str = "aisoule_webhook_store_errors_total";
/// Keys the in-memory dedup store evicted to stay within its capacity.
pub(crate) const DEDUP_EVICTIONS: &str = "aisoule_webhook_dedup_evictions_total";
/// Inbox jobs not yet done, by `state` (`pending`, `running`, `dead`, `quarantined`): the
/// work waiting, in hand, and left for a person. Done rows are not counted, since counting
/// them would read every row kept for deduplication.
pub(crate) const INBOX_JOBS: &str = "aisoule_inbox_jobs";
/// Seconds since the oldest pending inbox job was received (0 when none is pending): how far
/// behind the workers are.
pub(crate) const INBOX_LAG: &str = "aisoule_inbox_lag_seconds";
/// Inbox jobs that became dead letters (every attempt failed, or the stored body could not be
/// parsed): each one needs a person, see `Inbox::dead_letters`.
pub(crate) const INBOX_DEAD_LETTERS: &str = "aisoule_inbox_dead_letters_total";
/// Inbox attempts by `outcome`: `handled`, `retry` (failed, will run again), `dead` (failed on
/// its last attempt), `released` (given back at shutdown), `lease_lost` (taken over, its
/// outcome not recorded) or `unrecorded` (the store could not record it).
pub(crate) const INBOX_ATTEMPTS: &str = "aisoule_inbox_job_attempts_total";

// The hot outcomes use literal labels, which the macros turn into static keys: a key built
// from a runtime value allocates its label list on every call, even with no recorder
// installed. The rare outcomes (rejections) can afford that.

pub(crate) fn delivery(outcome: &'static str) {
    match outcome {
        "handled" => metrics::counter!(DELIVERIES, "outcome" => "handled").increment(1),
        "released" => metrics::counter!(DELIVERIES, "outcome" => "released").increment(1),
        "duplicate" => metrics::counter!(DELIVERIES, "outcome" => "duplicate").increment(1),
        "stored" => metrics::counter!(DELIVERIES, "outcome" => "stored").increment(1),
        other => metrics::counter!(DELIVERIES, "outcome" => other).increment(1),
    }
}

/// [`delivery`], with an `account` label on a receiver for many accounts. The label is built
/// from the account on every call (an allocation), which only such receivers pay.
pub(crate) fn delivery_for(outcome: &'static str, account: Option<&str>) {
    match account {
        None => delivery(outcome),
        Some(account) => {
            metrics::counter!(DELIVERIES, "outcome" => outcome, "account" => account.to_owned())
                .increment(1);
        }
    }
}

pub(crate) fn handler_ran(handled: bool, took: Duration) {
    let seconds = took.as_secs_f64();
    if handled {
        metrics::histogram!(HANDLER_DURATION, "outcome" => "handled").record(seconds);
    } else {
        metrics::histogram!(HANDLER_DURATION, "outcome" => "released").record(seconds);
    }
}

/// One counter key per configured secret, built once with the receiver, so that counting a
/// match allocates nothing.
#[derive(Debug)]
pub(crate) struct SecretMatchKeys(Box<[(Box<str>, metrics::Key)]>);

impl SecretMatchKeys {
    pub(crate) fn new<'a>(labels: impl Iterator<Item = &'a str>) -> Self {
        Self(
            labels
                .map(|label| {
                    let key = metrics::Key::from_parts(
                        SECRET_MATCHES,
                        vec![metrics::Label::new("secret_label", label.to_owned())],
                    );
                    (label.into(), key)
                })
                .collect(),
        )
    }

    pub(crate) fn matched(&self, label: &str) {
        static METADATA: metrics::Metadata<'static> =
            metrics::Metadata::new(module_path!(), metrics::Level::INFO, Some(module_path!()));
        if let Some((_, key)) = self.0.iter().find(|(known, _)| &**known == label) {
            metrics::with_recorder(|recorder| recorder.register_counter(key, &METADATA))
                .increment(1);
        }
    }
}

/// A secret match on a receiver for many accounts, labelled with the account as well, so
/// that each account's rotation can be followed.
pub(crate) fn account_secret_matched(label: &str, account: Option<&str>) {
    let label = label.to_owned();
    match account {
        Some(account) => metrics::counter!(
            SECRET_MATCHES,
            "secret_label" => label,
            "account" => account.to_owned()
        )
        .increment(1),
        None => metrics::counter!(SECRET_MATCHES, "secret_label" => label).increment(1),
    }
}

pub(crate) fn store_error(store: &'static str) {
    metrics::counter!(STORE_ERRORS, "store" => store).increment(1);
}

pub(crate) fn dedup_eviction() {
    metrics::counter!(DEDUP_EVICTIONS).increment(1);
}

/// Publishes the inbox's backlog as its gauges, its lag measured at `now`.
pub(crate) fn inbox_backlog(backlog: &InboxBacklog, now: SystemTime) {
    // Row counts far below 2^53 are exact as f64.
    metrics::gauge!(INBOX_JOBS, "state" => "pending").set(backlog.pending as f64);
    metrics::gauge!(INBOX_JOBS, "state" => "running").set(backlog.running as f64);
    metrics::gauge!(INBOX_JOBS, "state" => "dead").set(backlog.dead as f64);
    metrics::gauge!(INBOX_JOBS, "state" => "quarantined").set(backlog.quarantined as f64);
    let lag = backlog.lag(now).unwrap_or_default();
    metrics::gauge!(INBOX_LAG).set(lag.as_secs_f64());
}

/// How one inbox attempt ended, as [`INBOX_ATTEMPTS`] labels it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum InboxAttempt {
    Handled,
    Retry,
    Dead,
    Released,
    LeaseLost,
    Unrecorded,
}

/// Counts an inbox attempt by its outcome, and a dead letter when it made one.
pub(crate) fn inbox_attempt(outcome: InboxAttempt) {
    let counter = match outcome {
        InboxAttempt::Handled => metrics::counter!(INBOX_ATTEMPTS, "outcome" => "handled"),
        InboxAttempt::Retry => metrics::counter!(INBOX_ATTEMPTS, "outcome" => "retry"),
        InboxAttempt::Dead => metrics::counter!(INBOX_ATTEMPTS, "outcome" => "dead"),
        InboxAttempt::Released => metrics::counter!(INBOX_ATTEMPTS, "outcome" => "released"),
        InboxAttempt::LeaseLost => metrics::counter!(INBOX_ATTEMPTS, "outcome" => "lease_lost"),
        InboxAttempt::Unrecorded => metrics::counter!(INBOX_ATTEMPTS, "outcome" => "unrecorded"),
    };
    counter.increment(1);
    if outcome == InboxAttempt::Dead {
        metrics::counter!(INBOX_DEAD_LETTERS).increment(1);
    }
}

/// An event acknowledged without a handler: rare, so its dynamic labels may allocate.
pub(crate) fn unregistered(kind: String, payload: &'static str) {
    metrics::counter!(UNREGISTERED, "kind" => kind, "payload" => payload).increment(1);
}
