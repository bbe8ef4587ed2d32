//! The metrics each outcome records, read through `metrics-util`'s debugging recorder: every
//! delivery counted once by its outcome, the handler's run time, the matched secret's label,
//! store errors and the memory store's evictions.

use std::num::NonZeroUsize;

use aisoule_webhooks::dedup::{Deduplicator, MemoryStore};
use aisoule_webhooks::event::{Dialect, EventKind};
use aisoule_webhooks::test_util::{Delivery, test_verifier};
use aisoule_webhooks::{Admission, Receiver};
use bytes::Bytes;
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};

use crate::support::DownStore;

type Snapshot = Vec<(
    metrics_util::CompositeKey,
    Option<metrics::Unit>,
    Option<metrics::SharedString>,
    DebugValue,
)>;

/// What was recorded since the last snapshot: taking one resets the recorder's values.
fn snapshot(snapshotter: &Snapshotter) -> Snapshot {
    snapshotter.snapshot().into_vec()
}

/// The value of the metric `name` whose labels include `label` (or which has none, for
/// `None`): a counter's count, a histogram's number of samples.
fn value(snapshot: &Snapshot, name: &str, label: Option<(&str, &str)>) -> u64 {
    snapshot
        .iter()
        .filter(|(key, ..)| key.key().name() == name)
        .filter(|(key, ..)| match label {
            Some((k, v)) => key.key().labels().any(|l| l.key() == k && l.value() == v),
            None => key.key().labels().next().is_none(),
        })
        .map(|(.., value)| match value {
            DebugValue::Counter(count) => *count,
            DebugValue::Histogram(samples) => samples.len() as u64,
            DebugValue::Gauge(_) => panic!("{name} is not a gauge"),
        })
        .sum()
}

fn delivery(id: &str) -> Delivery {
    Delivery::sample(EventKind::MessageIncoming, Dialect::Developer)
        .message_id(id)
        .build()
}

/// Admits `delivery` and, when fresh, runs a handler answering `status`.
async fn deliver(receiver: &Receiver, delivery: &Delivery, status: u16) {
    let signature = delivery.signature_value().as_bytes();
    if let Ok(Admission::Fresh(admitted)) = receiver
        .admit([signature], Bytes::copy_from_slice(delivery.body()))
        .await
    {
        let status = http::StatusCode::from_u16(status).unwrap();
        admitted.run(async { status }, |status| Some(*status)).await;
    }
}

#[tokio::test]
async fn each_outcome_is_counted_once_with_its_label() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _local = metrics::set_default_local_recorder(&recorder);
    const DELIVERIES: &str = "aisoule_webhook_deliveries_total";

    let receiver = Receiver::builder(test_verifier())
        .deduplicator(Deduplicator::new(MemoryStore::with_capacity(
            NonZeroUsize::new(1).unwrap(),
        )))
        .build()
        .unwrap();
    let first = delivery("metrics-1");
    deliver(&receiver, &first, 200).await;
    deliver(&receiver, &first.redelivery(), 200).await;
    deliver(&receiver, &delivery("metrics-2"), 500).await;
    deliver(&receiver, &first.forged(), 200).await;

    let recorded = snapshot(&snapshotter);
    assert_eq!(
        value(&recorded, DELIVERIES, Some(("outcome", "handled"))),
        1
    );
    assert_eq!(
        value(&recorded, DELIVERIES, Some(("outcome", "duplicate"))),
        1
    );
    assert_eq!(
        value(&recorded, DELIVERIES, Some(("outcome", "released"))),
        1
    );
    assert_eq!(
        value(&recorded, DELIVERIES, Some(("outcome", "signature"))),
        1
    );
    assert_eq!(value(&recorded, DELIVERIES, None), 0, "always labelled");
    assert_eq!(
        value(
            &recorded,
            "aisoule_webhook_handler_duration_seconds",
            Some(("outcome", "handled"))
        ),
        1
    );
    assert_eq!(
        value(
            &recorded,
            "aisoule_webhook_handler_duration_seconds",
            Some(("outcome", "released"))
        ),
        1
    );
    // Three deliveries verified (the forgery did not), all under the test secret's label.
    assert_eq!(
        value(
            &recorded,
            "aisoule_webhook_signature_matches_total",
            Some(("secret_label", "test"))
        ),
        3
    );
    // One key fits: the second fresh delivery evicted the first.
    assert_eq!(
        value(&recorded, "aisoule_webhook_dedup_evictions_total", None),
        1
    );

    let down = Receiver::builder(test_verifier())
        .deduplicator(Deduplicator::new(DownStore))
        .build()
        .unwrap();
    deliver(&down, &delivery("metrics-3"), 200).await;
    let recorded = snapshot(&snapshotter);
    assert_eq!(value(&recorded, DELIVERIES, Some(("outcome", "store"))), 1);
    assert_eq!(
        value(
            &recorded,
            "aisoule_webhook_store_errors_total",
            Some(("store", "dedup"))
        ),
        1
    );
}

/// Every way a claim is settled counts the delivery once, in `Settlement`, whichever code
/// settled it: a panicking handler (no integration counts it again), an admission dropped
/// unsettled, and a handler that takes the settlement and commits it itself.
#[tokio::test]
async fn every_settlement_path_counts_the_delivery_once() {
    const DELIVERIES: &str = "aisoule_webhook_deliveries_total";
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    // A thread-local recorder: the test's runtime is current-thread, so the spawned task
    // below runs on this thread too.
    let _local = metrics::set_default_local_recorder(&recorder);
    let receiver = Receiver::new(test_verifier());
    let admit = |id: &'static str| {
        let receiver = receiver.clone();
        async move {
            let delivery = delivery(id);
            match receiver
                .admit(
                    [delivery.signature_value().as_bytes()],
                    Bytes::copy_from_slice(delivery.body()),
                )
                .await
            {
                Ok(Admission::Fresh(admitted)) => admitted,
                other => panic!("{id} was not admitted fresh: {other:?}"),
            }
        }
    };

    let panicking = admit("settle-panic").await;
    let run = tokio::spawn(
        panicking.run(async { panic!("the handler panics") }, |_: &()| {
            Some(http::StatusCode::OK)
        }),
    );
    assert!(run.await.unwrap_err().is_panic());
    let recorded = snapshot(&snapshotter);
    assert_eq!(
        value(&recorded, DELIVERIES, Some(("outcome", "released"))),
        1
    );
    assert_eq!(
        value(&recorded, DELIVERIES, Some(("outcome", "handled"))),
        0
    );

    drop(admit("settle-dropped").await);
    let recorded = snapshot(&snapshotter);
    assert_eq!(
        value(&recorded, DELIVERIES, Some(("outcome", "released"))),
        1
    );

    let (_event, settlement) = admit("settle-by-hand").await.into_parts();
    settlement.commit().await;
    let recorded = snapshot(&snapshotter);
    assert_eq!(
        value(&recorded, DELIVERIES, Some(("outcome", "handled"))),
        1
    );
    assert_eq!(
        value(&recorded, DELIVERIES, Some(("outcome", "released"))),
        0
    );
}
