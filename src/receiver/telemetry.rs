//! The metrics every delivery records, through the `metrics` facade: install the exporter you
//! use (Prometheus, StatsD, OpenTelemetry) and they appear; without one each call is a no-op.
//! Names and labels follow Prometheus conventions; the README lists them.

use std::time::Duration;

/// Counts every delivery by its final outcome (`handled`, `released`, `duplicate`, `stored`,
/// `quarantined`, or a rejection's reason), the value of the `aisoule-outcome` header.
pub(crate) const DELIVERIES: &str = "aisoule_webhook_deliveries_total";
/// The handler's run time, by outcome (`handled` or `released`).
pub(crate) const HANDLER_DURATION: &str = "aisoule_webhook_handler_duration_seconds";
/// Verified deliveries by the label of the secret that matched: when an old label stops
/// growing, its secret can go.
pub(crate) const SECRET_MATCHES: &str = "aisoule_webhook_signature_matches_total";
/// Store failures answered 503, by store (`dedup` or `inbox`).
pub(crate) const STORE_ERRORS: &str = "aisoule_webhook_store_errors_total";
/// Keys the in-memory dedup store evicted to stay within its capacity.
pub(crate) const DEDUP_EVICTIONS: &str = "aisoule_webhook_dedup_evictions_total";

pub(crate) fn delivery(outcome: &'static str) {
    metrics::counter!(DELIVERIES, "outcome" => outcome).increment(1);
}

pub(crate) fn handler_ran(outcome: &'static str, took: Duration) {
    metrics::histogram!(HANDLER_DURATION, "outcome" => outcome).record(took.as_secs_f64());
}

pub(crate) fn secret_matched(label: std::sync::Arc<str>) {
    metrics::counter!(SECRET_MATCHES, "secret_label" => label).increment(1);
}

pub(crate) fn store_error(store: &'static str) {
    metrics::counter!(STORE_ERRORS, "store" => store).increment(1);
}

pub(crate) fn dedup_eviction() {
    metrics::counter!(DEDUP_EVICTIONS).increment(1);
}
