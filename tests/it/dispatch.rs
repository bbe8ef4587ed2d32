//! Typed dispatch: each registration path, on axum, actix-web and the inbox's workers, with
//! the app state each one shares; unregistered kinds acknowledged and counted; a failing
//! handler answered 500 and run again on the retry.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use aisoule_webhooks::actix::WebhookMiddleware;
use aisoule_webhooks::axum::WebhookLayer;
use aisoule_webhooks::dispatch::{Dispatched, Dispatcher, TypedEvent};
use aisoule_webhooks::event::{
    CampaignCompleted, Contact, Dialect, EventKind, InboundMessage, MessageStatus, TransferCreated,
    UnknownEvent, Unrecognized,
};
use aisoule_webhooks::inbox::Inbox;
use aisoule_webhooks::inbox::sqlite::SqliteStore;
use aisoule_webhooks::test_util::{Delivery, test_verifier};
use aisoule_webhooks::{Admission, OUTCOME_HEADER, Receiver};
use axum::Router;
use axum::routing::post;
use bytes::Bytes;
use serde_json::json;
use tower::ServiceExt;

use crate::support::CapturedLogs;

/// How long any step of these tests may take before it fails: every step is local and in
/// memory (or a SQLite file), so only a hang (a mutant, a lost wake-up) comes near it.
const STEP_BOUND: Duration = Duration::from_secs(30);

/// Awaits `step`, failing the test if it has not ended within [`STEP_BOUND`], so that a hang
/// ends as a failure naming the step instead of holding the whole run.
async fn within_bound<T>(what: &str, step: impl Future<Output = T>) -> T {
    tokio::time::timeout(STEP_BOUND, step)
        .await
        .unwrap_or_else(|_| panic!("{what} did not end within {STEP_BOUND:?}"))
}

/// What the handlers saw, one line per call, in order.
#[derive(Clone, Default)]
struct App {
    seen: Arc<Mutex<Vec<String>>>,
}

impl App {
    fn saw(&self, line: String) {
        self.seen.lock().unwrap().push(line);
    }

    fn lines(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

/// The app state as each framework hands it over: itself on axum and the inbox,
/// `web::Data` on actix-web.
trait Records: Clone + Send + Sync + 'static {
    fn app(&self) -> &App;
}

impl Records for App {
    fn app(&self) -> &App {
        self
    }
}

impl Records for actix_web::web::Data<App> {
    fn app(&self) -> &App {
        self
    }
}

/// A handler for every registration path, each recording what its typed payload says. A
/// message whose text is `fail` fails its handler.
fn recording<S: Records>() -> Dispatcher<S> {
    Dispatcher::new()
        .on_message(|m: TypedEvent<InboundMessage<'static>>, s: S| async move {
            let customer = m
                .customer()
                .and_then(|c| c.e164())
                .unwrap_or("-")
                .to_owned();
            let attempt = m.job().map_or(0, |job| job.attempt());
            s.app().saw(format!(
                "message {} from {customer}: {} (attempt {attempt})",
                m.message_id,
                m.text().unwrap_or("-")
            ));
            if m.text() == Some("fail") {
                return Err(std::io::Error::other("the CRM refused the message").into());
            }
            Ok(())
        })
        .on_status(|st: TypedEvent<MessageStatus<'static>>, s: S| async move {
            let customer = st
                .customer()
                .and_then(|c| c.e164())
                .unwrap_or("-")
                .to_owned();
            s.app().saw(format!(
                "status {:?} of {} to {customer}",
                st.status, st.message_id
            ));
            Ok(())
        })
        .on_contact(|c: TypedEvent<Contact<'static>>, s: S| async move {
            s.app()
                .saw(format!("{} {}", c.event().kind().as_str(), c.id));
            Ok(())
        })
        .on_campaign(
            |c: TypedEvent<CampaignCompleted<'static>>, s: S| async move {
                s.app().saw(format!("campaign {} sent {:?}", c.id, c.sent));
                Ok(())
            },
        )
        .on_transfer(|t: TypedEvent<TransferCreated<'static>>, s: S| async move {
            s.app().saw(format!("transfer of {}", t.contact_id));
            Ok(())
        })
        .on_unrecognized(|u: TypedEvent<Unrecognized>, s: S| async move {
            s.app().saw(format!("unrecognized {}", u.kind.as_str()));
            Ok(())
        })
        .on_unknown(|u: TypedEvent<UnknownEvent<'static>>, s: S| async move {
            s.app().saw(format!("unknown {}", u.name));
            Ok(())
        })
}

/// One delivery of each registration path, and the line its handler records.
fn every_path() -> Vec<(Delivery, &'static str)> {
    let sample = |kind, dialect| Delivery::sample(kind, dialect).build();
    vec![
        (
            sample(EventKind::MessageIncoming, Dialect::Help),
            "message wamid.HBgLOTE5ODc2 from +919876543210: Hello, I need help (attempt 0)",
        ),
        (
            Delivery::sample(EventKind::MessageIncoming, Dialect::Developer)
                .message_id("msg-dev")
                .build(),
            "message msg-dev from +918856879188: Hi there! I need pricing info. (attempt 0)",
        ),
        (
            sample(EventKind::MessageRead, Dialect::Developer),
            "status Read of msg_90a82b7194689c1 to +918856879188",
        ),
        (
            sample(EventKind::ContactCreated, Dialect::Help),
            "contact.created uuid",
        ),
        (
            sample(EventKind::CampaignCompleted, Dialect::Help),
            "campaign uuid sent Some(985)",
        ),
        (
            sample(EventKind::TransferCreated, Dialect::Help),
            "transfer of uuid",
        ),
        (
            Delivery::from_json(json!({
                "event": "message.incoming",
                "timestamp": 1_780_369_298,
                "data": "not an object"
            }))
            .timestamp_at(std::time::SystemTime::now())
            .build(),
            "unrecognized message.incoming",
        ),
        (
            Delivery::from_json(json!({"event": "payment.captured", "data": {"id": "pay_1"}}))
                .build(),
            "unknown payment.captured",
        ),
    ]
}

/// The axum app: the dispatcher is the handler, the router's state its handlers' state.
fn axum_app(receiver: Receiver, app: App) -> Router {
    Router::new()
        .route(
            "/webhook",
            post(recording::<App>()).layer(WebhookLayer::new(receiver)),
        )
        .with_state(app)
}

async fn send_axum(app: &Router, delivery: &Delivery) -> (u16, String) {
    let response = within_bound(
        "the axum answer",
        app.clone().oneshot(delivery.http_request("/webhook")),
    )
    .await
    .unwrap();
    let outcome = response.headers()[OUTCOME_HEADER]
        .to_str()
        .unwrap()
        .to_owned();
    (response.status().as_u16(), outcome)
}

#[tokio::test]
async fn axum_dispatches_each_kind_to_its_handler_with_the_router_state() {
    let app = App::default();
    let router = axum_app(Receiver::new(test_verifier()), app.clone());
    let mut expected = Vec::new();
    for (delivery, line) in every_path() {
        assert_eq!(
            send_axum(&router, &delivery).await,
            (200, "handled".to_owned()),
            "{line}"
        );
        expected.push(line.to_owned());
    }
    assert_eq!(app.lines(), expected);
}

#[tokio::test]
async fn a_failing_handler_is_answered_500_and_runs_again_on_the_retry() {
    let logs = CapturedLogs::default();
    let _guard = logs.install();
    let app = App::default();
    let router = axum_app(Receiver::new(test_verifier()), app.clone());
    let failing = Delivery::sample(EventKind::MessageIncoming, Dialect::Help)
        .set("/data/text", "fail")
        .build();
    assert_eq!(
        send_axum(&router, &failing).await,
        (500, "released".to_owned())
    );
    // Released, not committed: the platform's retry runs the handler again.
    assert_eq!(
        send_axum(&router, &failing.redelivery()).await,
        (500, "released".to_owned())
    );
    assert_eq!(app.lines().len(), 2);
    // The error and its source are logged for the operator; the body says only "failed".
    let text = logs.text();
    assert!(
        text.contains("the event's handler failed") && text.contains("the CRM refused the message"),
        "{text}"
    );
}

#[actix_web::test]
async fn actix_dispatches_each_kind_to_its_handler_with_web_data() {
    use actix_web::{App as ActixApp, web};
    let app = App::default();
    let service = within_bound(
        "the actix-web service's start",
        actix_web::test::init_service(
            ActixApp::new()
                .app_data(web::Data::new(app.clone()))
                .service(
                    web::resource("/webhook")
                        .wrap(WebhookMiddleware::new(Receiver::new(test_verifier())))
                        .route(web::post().to(recording::<web::Data<App>>())),
                ),
        ),
    )
    .await;
    let mut expected = Vec::new();
    for (delivery, line) in every_path() {
        let response = within_bound(
            "the actix-web answer",
            actix_web::test::call_service(
                &service,
                delivery.actix_request("/webhook").to_request(),
            ),
        )
        .await;
        assert_eq!(response.status().as_u16(), 200, "{line}");
        assert_eq!(
            response.headers().get(OUTCOME_HEADER).unwrap(),
            "handled",
            "{line}"
        );
        expected.push(line.to_owned());
    }
    // `web::Data<App>` shares the one `App` the test holds.
    assert_eq!(app.lines(), expected);
}

#[tokio::test]
async fn the_inbox_workers_run_the_same_dispatcher_with_the_state_given() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("inbox.db")).expect("a new SQLite inbox");
    let inbox = Inbox::builder(store)
        .poll_interval(Duration::from_millis(20))
        .build()
        .unwrap();
    let receiver = Receiver::builder(test_verifier())
        .inbox(inbox.clone())
        .build()
        .unwrap();
    let app = App::default();
    // The request path stores; it never runs a handler.
    let router = axum_app(receiver, App::default());
    let workers = inbox.start(recording::<App>().with_state(app.clone()));
    let delivery = Delivery::sample(EventKind::MessageIncoming, Dialect::Help).build();
    assert_eq!(
        send_axum(&router, &delivery).await,
        (200, "stored".to_owned())
    );
    within_bound("the workers' run of the handler", async {
        while app.lines().is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    // The handler sees the inbox's job: its first attempt.
    assert_eq!(
        app.lines(),
        ["message wamid.HBgLOTE5ODc2 from +919876543210: Hello, I need help (attempt 1)"]
    );
    // The shutdown's own deadline bounds the handlers it waits for, not a shutdown that hangs.
    within_bound(
        "the workers' shutdown",
        workers.shutdown(Duration::from_secs(5)),
    )
    .await;
}

#[tokio::test]
async fn an_unregistered_kind_is_acknowledged_and_counted() {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _local = metrics::set_default_local_recorder(&recorder);
    let receiver = Receiver::new(test_verifier());
    let only_messages = Dispatcher::<()>::new()
        .on_message(|_: TypedEvent<InboundMessage<'static>>, ()| async { Ok(()) });
    let dispatch = |delivery: Delivery| {
        let (receiver, dispatcher) = (receiver.clone(), only_messages.clone());
        async move {
            let signature = delivery.signature_value().as_bytes().to_vec();
            let admitted = match within_bound(
                "the admission",
                receiver.admit([&signature[..]], Bytes::copy_from_slice(delivery.body())),
            )
            .await
            {
                Ok(Admission::Fresh(admitted)) => admitted,
                other => panic!("not admitted fresh: {other:?}"),
            };
            let (event, settlement) = admitted.into_parts();
            let dispatched = within_bound("the dispatch", dispatcher.dispatch(event, ()))
                .await
                .unwrap();
            within_bound("the commit", settlement.commit()).await;
            dispatched
        }
    };
    assert_eq!(
        dispatch(Delivery::sample(EventKind::MessageIncoming, Dialect::Help).build()).await,
        Dispatched::Handled
    );
    assert_eq!(
        dispatch(Delivery::sample(EventKind::MessageFailed, Dialect::Help).build()).await,
        Dispatched::Unregistered
    );
    assert_eq!(
        dispatch(Delivery::from_json(json!({"event": "order.paid", "data": {}})).build()).await,
        Dispatched::Unregistered
    );
    let counted: Vec<(Vec<String>, u64)> = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .filter(|(key, ..)| key.key().name() == "aisoule_webhook_unregistered_events_total")
        .map(|(key, _, _, value)| {
            let labels = key
                .key()
                .labels()
                .map(|l| format!("{}={}", l.key(), l.value()))
                .collect();
            match value {
                DebugValue::Counter(count) => (labels, count),
                other => panic!("not a counter: {other:?}"),
            }
        })
        .collect();
    let mut counted = counted;
    counted.sort();
    // Unknown names share one label, whatever the platform sends.
    assert_eq!(
        counted,
        [
            (
                vec!["kind=message.failed".to_owned(), "payload=typed".to_owned()],
                1
            ),
            (
                vec!["kind=unknown".to_owned(), "payload=unknown".to_owned()],
                1
            ),
        ]
    );
}

#[tokio::test]
async fn the_customer_and_the_text_are_the_same_in_both_dialects() {
    let app = App::default();
    let router = axum_app(Receiver::new(test_verifier()), app.clone());
    for dialect in [Dialect::Help, Dialect::Developer] {
        let delivery = Delivery::sample(EventKind::MessageIncoming, dialect)
            .message_id(format!("{dialect:?}"))
            .set("/data/text", "same")
            .set("/data/body", "same")
            .set(
                if dialect == Dialect::Help {
                    "/data/from"
                } else {
                    "/data/sender"
                },
                if dialect == Dialect::Help {
                    "+919876543210"
                } else {
                    "919876543210"
                },
            )
            .build();
        assert_eq!(send_axum(&router, &delivery).await.0, 200);
    }
    // `from` with `+` (help) and `sender` without it (developer) are one customer; `text`
    // and `body` one text.
    assert_eq!(
        app.lines(),
        [
            "message Help from +919876543210: same (attempt 0)",
            "message Developer from +919876543210: same (attempt 0)",
        ]
    );
}

/// A dispatcher's `Debug` lists the kinds it has handlers for, and no others: what an operator
/// reads to tell which events a service handles and which it only acknowledges.
#[test]
fn debug_lists_the_registered_handlers() {
    assert_eq!(format!("{:?}", Dispatcher::<()>::new()), "[]");
    let some = Dispatcher::<()>::new()
        .on_status(|_: TypedEvent<MessageStatus<'static>>, ()| async { Ok(()) })
        .on_unknown(|_: TypedEvent<UnknownEvent<'static>>, ()| async { Ok(()) });
    assert_eq!(format!("{some:?}"), r#"["status", "unknown"]"#);
    assert_eq!(
        format!("{:?}", recording::<App>()),
        r#"["message", "status", "contact", "campaign", "transfer", "unrecognized", "unknown"]"#
    );
}
