//! The delivery lifecycle under cancellation, on the platform's exact schedule, and with a
//! handler that forgets to commit.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::{App, HttpResponse, web};
use aisoule_webhooks::actix::WebhookMiddleware;
use aisoule_webhooks::axum::{WebhookDelivery, WebhookLayer};
use aisoule_webhooks::dedup::{
    ClaimToken, DedupKey, Deduplicator, IdempotencyStore, MemoryStore, StoreClaim, StoreFuture,
};
use aisoule_webhooks::event::Dialect;
use aisoule_webhooks::{Receiver, VerifiedEvent};
use axum::Router;
use axum::http::StatusCode;
use axum::routing::post;
use tokio::sync::Notify;
use tower::ServiceExt;

use crate::axum::recorded_app;
use crate::e2e::{Recorder, eventually, message, test_receiver, test_receiver_with};
use crate::support::{CapturedLogs, on_a_paused_clock_within_real_time};

/// The await points of the store's side of the lifecycle, where a store may be slow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StorePoint {
    BeforeClaim,
    AfterClaim,
    BeforeCommit,
    AfterCommit,
    BeforeRelease,
    AfterRelease,
}

/// A real [`MemoryStore`] that parks, on demand, at one point of one operation until told to
/// go on: the slow Redis round trip during which a request can be cancelled.
#[derive(Debug, Default)]
struct ParkingStore {
    inner: MemoryStore,
    park_at: Mutex<Option<StorePoint>>,
    parked: Notify,
    resume: Notify,
}

impl ParkingStore {
    async fn pass(&self, point: StorePoint) {
        let park = {
            let mut park_at = self.park_at.lock().unwrap();
            *park_at == Some(point) && park_at.take().is_some()
        };
        if park {
            self.parked.notify_one();
            self.resume.notified().await;
        }
    }
}

impl IdempotencyStore for ParkingStore {
    fn claim<'a>(
        &'a self,
        key: &'a DedupKey,
        token: ClaimToken,
        lease: Duration,
    ) -> StoreFuture<'a, StoreClaim> {
        Box::pin(async move {
            self.pass(StorePoint::BeforeClaim).await;
            let claimed = self.inner.claim(key, token, lease).await;
            self.pass(StorePoint::AfterClaim).await;
            claimed
        })
    }

    fn renew<'a>(
        &'a self,
        key: &'a DedupKey,
        token: ClaimToken,
        lease: Duration,
    ) -> StoreFuture<'a, ()> {
        self.inner.renew(key, token, lease)
    }

    fn commit<'a>(
        &'a self,
        key: &'a DedupKey,
        token: ClaimToken,
        ttl: Duration,
    ) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            self.pass(StorePoint::BeforeCommit).await;
            let committed = self.inner.commit(key, token, ttl).await;
            self.pass(StorePoint::AfterCommit).await;
            committed
        })
    }

    fn release<'a>(&'a self, key: &'a DedupKey, token: ClaimToken) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            self.pass(StorePoint::BeforeRelease).await;
            let released = self.inner.release(key, token).await;
            self.pass(StorePoint::AfterRelease).await;
            released
        })
    }

    fn release_detached(&self, key: DedupKey, token: ClaimToken) {
        self.inner.release_detached(key, token);
    }
}

/// Where the request is cancelled: at a store point, or while the handler runs.
#[derive(Debug, Clone, Copy)]
enum CancelAt {
    Store(StorePoint),
    Handler,
}

/// Cancels the request future at `at`, lets everything go on, and checks that the key ends
/// committed or free (never stuck at 409) and that the handler's work is done exactly once.
async fn cancel_the_request(at: CancelAt) {
    let store = Arc::new(ParkingStore::default());
    let recorder = Recorder::default();
    let app = recorded_app(
        test_receiver_with(Deduplicator::from_arc(store.clone())),
        recorder.clone(),
    );
    // A failing first call is what makes the lifecycle release; a gated one keeps the handler
    // running while the request is cancelled.
    let id = match at {
        CancelAt::Store(StorePoint::BeforeRelease | StorePoint::AfterRelease) => "fail-once-c",
        CancelAt::Handler => "slow-c",
        CancelAt::Store(_) => "c",
    };
    if let CancelAt::Store(point) = at {
        *store.park_at.lock().unwrap() = Some(point);
    }
    let delivery = message(Dialect::Help, id);
    let request = tokio::spawn(app.clone().oneshot(delivery.http_request("/webhook")));
    match at {
        // Bounded, so that a regression that never reaches the point fails instead of hanging.
        CancelAt::Store(_) => {
            tokio::time::timeout(Duration::from_secs(10), store.parked.notified())
                .await
                .unwrap_or_else(|_| panic!("{at:?}: the store never reached the point"))
        }
        CancelAt::Handler => {
            eventually("the handler starts", || !recorder.handled().is_empty()).await
        }
    }
    request.abort();
    assert!(request.await.unwrap_err().is_cancelled(), "{at:?}");
    match at {
        CancelAt::Store(_) => store.resume.notify_one(),
        CancelAt::Handler => recorder.open_gate(),
    }

    // Never stuck: well within the 60 s lease, a redelivery is either processed or a
    // duplicate.
    let mut answer = (0, String::new());
    for _ in 0..200 {
        let response = app
            .clone()
            .oneshot(delivery.redelivery().http_request("/webhook"))
            .await
            .unwrap();
        let status = response.status().as_u16();
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        answer = (status, String::from_utf8_lossy(&body).into_owned());
        if status != 409 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(answer.0, 200, "{at:?}: {answer:?}");
    let duplicate = app
        .oneshot(delivery.redelivery().http_request("/webhook"))
        .await
        .unwrap();
    assert_eq!(duplicate.status(), 200, "{at:?}");

    // Never handled twice: one successful run, plus the failed first call where there was one.
    let expected_runs = match at {
        CancelAt::Store(StorePoint::BeforeRelease | StorePoint::AfterRelease) => 2,
        _ => 1,
    };
    assert_eq!(recorder.completed().len(), expected_runs, "{at:?}");
    // A request cancelled before admission (while claiming) is cancelled: its claim is
    // released and the redelivery runs the handler. Once admitted, it goes on in a task.
    let committed_by_the_first = matches!(
        at,
        CancelAt::Handler | CancelAt::Store(StorePoint::BeforeCommit | StorePoint::AfterCommit)
    );
    assert_eq!(
        answer.1 == r#"{"status":"duplicate"}"#,
        committed_by_the_first,
        "{at:?}: {answer:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_request_leaves_its_key_committed_or_free_at_every_await_point() {
    for at in [
        CancelAt::Store(StorePoint::BeforeClaim),
        CancelAt::Store(StorePoint::AfterClaim),
        CancelAt::Handler,
        CancelAt::Store(StorePoint::BeforeCommit),
        CancelAt::Store(StorePoint::AfterCommit),
        CancelAt::Store(StorePoint::BeforeRelease),
        CancelAt::Store(StorePoint::AfterRelease),
    ] {
        cancel_the_request(at).await;
    }
}

/// The platform's real numbers, on paused time: a 5 s deadline, an 8 s handler, the first
/// retry 10 s after the timeout.
const DEADLINE: Duration = Duration::from_secs(5);
const HANDLER: Duration = Duration::from_secs(8);
const FIRST_RETRY: Duration = Duration::from_secs(10);

#[tokio::test(start_paused = true)]
async fn on_the_platforms_schedule_an_8_s_axum_handler_finishes_once() {
    let finished = Arc::new(Mutex::new(0));
    let app = Router::new().route(
        "/webhook",
        post({
            let finished = finished.clone();
            move |_: VerifiedEvent| async move {
                tokio::time::sleep(HANDLER).await;
                *finished.lock().unwrap() += 1;
                StatusCode::OK
            }
        })
        .layer(WebhookLayer::new(test_receiver())),
    );
    let delivery = message(Dialect::Developer, "schedule-axum");
    let first = tokio::time::timeout(
        DEADLINE,
        app.clone().oneshot(delivery.http_request("/webhook")),
    )
    .await;
    assert!(first.is_err(), "the sender gives up at 5 s");
    tokio::time::sleep(FIRST_RETRY).await;
    let retry = tokio::time::timeout(
        DEADLINE,
        app.oneshot(delivery.redelivery().http_request("/webhook")),
    )
    .await
    .expect("a duplicate is answered at once")
    .unwrap();
    let body = axum::body::to_bytes(retry.into_body(), usize::MAX)
        .await
        .unwrap();
    assert_eq!(&body[..], br#"{"status":"duplicate"}"#);
    assert_eq!(*finished.lock().unwrap(), 1);
}

#[actix_web::test]
async fn on_the_platforms_schedule_an_8_s_actix_handler_finishes_once() {
    tokio::time::pause();
    let finished = web::Data::new(Mutex::new(0));
    let app = actix_web::test::init_service(
        App::new().app_data(finished.clone()).service(
            web::resource("/webhook")
                .wrap(WebhookMiddleware::new(test_receiver()))
                .route(web::post().to(
                    |_: VerifiedEvent, finished: web::Data<Mutex<i32>>| async move {
                        tokio::time::sleep(HANDLER).await;
                        *finished.lock().unwrap() += 1;
                        HttpResponse::Ok().finish()
                    },
                )),
        ),
    )
    .await;
    let delivery = message(Dialect::Developer, "schedule-actix");
    let first = tokio::time::timeout(
        DEADLINE,
        actix_web::test::call_service(&app, delivery.actix_request("/webhook").to_request()),
    )
    .await;
    assert!(first.is_err(), "the sender gives up at 5 s");
    tokio::time::sleep(FIRST_RETRY).await;
    let retry = tokio::time::timeout(
        DEADLINE,
        actix_web::test::call_service(
            &app,
            delivery.redelivery().actix_request("/webhook").to_request(),
        ),
    )
    .await
    .expect("a duplicate is answered at once");
    assert_eq!(
        actix_web::test::read_body(retry).await,
        &br#"{"status":"duplicate"}"#[..]
    );
    assert_eq!(*finished.lock().unwrap(), 1);
}

/// Loss 4: a handler that takes the delivery and never commits. Its redelivery must be
/// handled again, and the drop must say which event it was.
#[tokio::test(flavor = "current_thread")]
async fn a_forgotten_commit_releases_the_claim_and_warns_naming_the_event() {
    let logs = CapturedLogs::default();
    let _guard = logs.install();
    let runs = Arc::new(Mutex::new(0));
    let app = Router::new()
        .route(
            "/webhook",
            post({
                let runs = runs.clone();
                move |delivery: WebhookDelivery| async move {
                    *runs.lock().unwrap() += 1;
                    let _ = delivery.event.kind(); // …and no `delivery.commit().await`
                    StatusCode::OK
                }
            }),
        )
        .with_state::<()>(test_receiver());
    let delivery = message(Dialect::Developer, "forgot-1");
    for request in [delivery.clone(), delivery.redelivery()] {
        let response = app
            .clone()
            .oneshot(request.http_request("/webhook"))
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    assert_eq!(*runs.lock().unwrap(), 2, "released, so the redelivery ran");
    let text = logs.text();
    let warning = text
        .lines()
        .find(|line| line.contains("dropped before it was settled"))
        .unwrap_or_else(|| panic!("no warning in:\n{text}"));
    assert!(warning.contains("WARN"), "{warning}");
    assert!(warning.contains("forgot-1"), "{warning}");
    assert!(warning.contains("message.incoming"), "{warning}");
}

#[test]
fn receiver_settings_are_checked_once_when_built() {
    use aisoule_webhooks::{BodyLimit, ConfigError};
    let builder = || Receiver::builder(aisoule_webhooks::test_util::test_verifier());
    assert_eq!(
        builder()
            .body_limit(BodyLimit::bytes(0))
            .build()
            .unwrap_err(),
        ConfigError::ZeroBodyLimit
    );
    assert!(matches!(
        builder().slow_handler_warning(Duration::ZERO).build(),
        Err(ConfigError::ZeroDuration { .. })
    ));
}

/// An app whose handler takes `run_time`, then answers 200.
fn sleeping_app(receiver: Receiver, run_time: Duration) -> Router {
    Router::new().route(
        "/webhook",
        post(move |_: VerifiedEvent| async move {
            tokio::time::sleep(run_time).await;
            StatusCode::OK
        })
        .layer(WebhookLayer::new(receiver)),
    )
}

#[test]
fn a_handler_running_past_the_slow_handler_warning_is_logged_and_not_cancelled() {
    on_a_paused_clock_within_real_time(|| async {
        let logs = CapturedLogs::default();
        let _guard = logs.install();
        let receiver = Receiver::builder(aisoule_webhooks::test_util::test_verifier())
            .clock(Arc::new(aisoule_webhooks::clock::ManualClock::new(
                crate::e2e::test_now(),
            )))
            .slow_handler_warning(Duration::from_secs(3))
            .build()
            .unwrap();
        let app = sleeping_app(receiver, Duration::from_secs(4));
        let delivery = message(Dialect::Help, "slow-warning-1");
        let response = app
            .oneshot(delivery.http_request("/webhook"))
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "a slow handler is never cancelled");
        let text = logs.text();
        let warning = text
            .lines()
            .find(|line| line.contains("still running"))
            .unwrap_or_else(|| panic!("no warning in:\n{text}"));
        assert!(
            warning.contains("WARN") && warning.contains("slow-warning-1"),
            "{warning}"
        );
    });
}

/// While a handler runs, its claim is renewed every half lease (no more often: each renewal
/// is a store round trip), and a handler that ends before the slow-handler warning is not
/// warned about. The clock is paused, so the test waits for nothing.
#[test]
fn a_running_handler_renews_its_claim_every_half_lease_and_a_quick_one_is_not_warned() {
    on_a_paused_clock_within_real_time(|| async {
        let logs = CapturedLogs::default();
        let _guard = logs.install();
        let store = Arc::new(crate::support::CountingStore::default());
        let receiver = Receiver::builder(aisoule_webhooks::test_util::test_verifier())
            .clock(Arc::new(aisoule_webhooks::clock::ManualClock::new(
                crate::e2e::test_now(),
            )))
            .deduplicator(
                Deduplicator::from_arc(store.clone())
                    .with_lease(Duration::from_secs(10))
                    .unwrap(),
            )
            .slow_handler_warning(Duration::from_secs(60))
            .build()
            .unwrap();
        let app = sleeping_app(receiver, Duration::from_secs(26));
        let delivery = message(Dialect::Help, "renewed-1");
        let response = app
            .oneshot(delivery.http_request("/webhook"))
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(store.renewals(), 5, "renewed at 5, 10, 15, 20 and 25 s");
        let text = logs.text();
        assert!(!text.contains("still running"), "{text}");
    });
}

#[tokio::test]
async fn an_unreadable_timestamp_is_accepted_by_default_and_refused_when_asked() {
    let unreadable = aisoule_webhooks::test_util::Delivery::sample(
        aisoule_webhooks::event::EventKind::MessageIncoming,
        Dialect::Help,
    )
    .message_id("yesterday-1")
    .set("/timestamp", "yesterday")
    .build();
    let accepting = Router::new().route(
        "/webhook",
        post(|_: VerifiedEvent| async { StatusCode::OK }).layer(WebhookLayer::new(test_receiver())),
    );
    let response = accepting
        .oneshot(unreadable.http_request("/webhook"))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    let refusing = Receiver::builder(aisoule_webhooks::test_util::test_verifier())
        .refuse_unreadable_timestamps()
        .build()
        .unwrap();
    let refusing = Router::new().route(
        "/webhook",
        post(|_: VerifiedEvent| async { StatusCode::OK }).layer(WebhookLayer::new(refusing)),
    );
    let response = refusing
        .oneshot(unreadable.http_request("/webhook"))
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    assert_eq!(&body[..], br#"{"error":"unreadable timestamp"}"#);
}
