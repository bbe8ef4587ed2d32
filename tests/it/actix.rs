//! The actix-web integration: the shared end-to-end table, plus what only actix has.

use actix_web::dev::Service;
use actix_web::http::StatusCode;
use actix_web::middleware::{DefaultHeaders, Logger};
use actix_web::{App, HttpResponse, HttpServer, web};
use aisoule_webhooks::actix::{WebhookDelivery, WebhookMiddleware};
use aisoule_webhooks::event::Dialect;
use aisoule_webhooks::test_util::Delivery;
use aisoule_webhooks::{BodyLimit, Receiver, VerifiedEvent};
use bytes::Bytes;
use tracing::instrument::WithSubscriber;

use crate::axum::drive_example_receiver;
use crate::e2e::{
    self, Framework, Recorder, Route, StartFuture, e2e_cases, message, test_receiver,
};
use crate::support::CapturedLogs;

pub(crate) struct Actix;

async fn recorded(
    recorder: web::Data<Recorder>,
    event: VerifiedEvent,
    body: web::Bytes,
) -> HttpResponse {
    HttpResponse::build(StatusCode::from_u16(recorder.handle(&event, body).await).unwrap()).finish()
}

/// Whether the e2e table's `WebhookDelivery` handler commits when it answers 200.
#[derive(Clone, Copy)]
struct Commit(bool);

async fn delivered(
    recorder: web::Data<Recorder>,
    commit: web::Data<Commit>,
    delivery: WebhookDelivery,
) -> HttpResponse {
    let body = delivery.event.raw().clone();
    let status = recorder.handle(&delivery.event, body).await;
    if status == 200 && commit.0 {
        delivery.commit().await;
    }
    HttpResponse::build(StatusCode::from_u16(status).unwrap()).finish()
}

impl Framework for Actix {
    fn start_route(
        receiver: Receiver,
        recorder: Recorder,
        route: Route,
        logs: CapturedLogs,
    ) -> StartFuture {
        Box::pin(async move {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let dispatch = logs.dispatch();
            let server = HttpServer::new(move || {
                let dispatch = dispatch.clone();
                let app = App::new()
                    .wrap_fn(move |request, service| {
                        service.call(request).with_subscriber(dispatch.clone())
                    })
                    .app_data(web::Data::new(recorder.clone()))
                    .app_data(web::Data::new(receiver.clone()))
                    .app_data(web::Data::new(Commit(route.commits())));
                let middleware = WebhookMiddleware::new(receiver.clone());
                match route {
                    Route::Wrapped => app.service(
                        web::resource("/webhook")
                            .wrap(middleware)
                            .route(web::post().to(recorded)),
                    ),
                    Route::WrappedDelivery => app.service(
                        web::resource("/webhook")
                            .wrap(middleware)
                            .route(web::post().to(delivered)),
                    ),
                    Route::Delivery | Route::DeliveryWithoutCommit => {
                        app.route("/webhook", web::post().to(delivered))
                    }
                }
            })
            .workers(1)
            .disable_signals()
            .listen(listener)
            .unwrap()
            .run();
            tokio::spawn(server);
            addr
        })
    }
}

e2e_cases!(Actix);

#[actix_web::test]
async fn the_payload_is_put_back_for_bytes_and_json_beyond_actix_defaults() {
    #[derive(serde::Deserialize)]
    struct Envelope {
        event: String,
        data: serde_json::Value,
    }
    // 1 MiB limit, a body of about 300 kB: above actix's 256 kB PayloadConfig default.
    let receiver = Receiver::builder(aisoule_webhooks::test_util::test_verifier())
        .clock(std::sync::Arc::new(
            aisoule_webhooks::clock::ManualClock::new(e2e::test_now()),
        ))
        .body_limit(BodyLimit::bytes(1024 * 1024))
        .build()
        .unwrap();
    let app = actix_web::test::init_service(
        App::new()
            .service(
                web::resource("/bytes")
                    .wrap(WebhookMiddleware::new(receiver.clone()))
                    .route(
                        web::post()
                            .to(|bytes: web::Bytes| async move { HttpResponse::Ok().body(bytes) }),
                    ),
            )
            .service(
                web::resource("/json")
                    .wrap(WebhookMiddleware::new(receiver))
                    .route(web::post().to(|json: web::Json<Envelope>| async move {
                        HttpResponse::Ok()
                            .body(format!("{} {}", json.event, json.data["message_id"]))
                    })),
            ),
    )
    .await;
    let delivery = Delivery::sample(
        aisoule_webhooks::event::EventKind::MessageIncoming,
        Dialect::Help,
    )
    .message_id("big-1")
    .set("/data/text", "y".repeat(300_000))
    .timestamp_at(e2e::test_now())
    .build();
    let response =
        actix_web::test::call_service(&app, delivery.actix_request("/bytes").to_request()).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        actix_web::test::read_body(response).await,
        *delivery.body(),
        "web::Bytes gets the bytes sent"
    );

    let other = Delivery::sample(
        aisoule_webhooks::event::EventKind::MessageIncoming,
        Dialect::Help,
    )
    .message_id("big-2")
    .set("/data/text", "y".repeat(300_000))
    .timestamp_at(e2e::test_now())
    .build();
    let response =
        actix_web::test::call_service(&app, other.actix_request("/json").to_request()).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        actix_web::test::read_body(response).await,
        Bytes::from_static(b"message.incoming \"big-2\"")
    );
}

#[actix_web::test]
async fn the_handler_never_runs_for_a_forgery_whatever_the_wrap_order() {
    let recorder = Recorder::default();
    let forged = message(Dialect::Help, "order-1").forged();
    macro_rules! assert_refused {
        ($resource:expr) => {{
            let app = actix_web::test::init_service(
                App::new()
                    .app_data(web::Data::new(recorder.clone()))
                    .service($resource),
            )
            .await;
            let response =
                actix_web::test::call_service(&app, forged.actix_request("/webhook").to_request())
                    .await;
            assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        }};
    }
    let resource = || web::resource("/webhook").route(web::post().to(recorded));
    assert_refused!(
        resource()
            .wrap(WebhookMiddleware::new(test_receiver()))
            .wrap(DefaultHeaders::new().add(("x-wrapped", "1")))
            .wrap(Logger::default())
    );
    assert_refused!(
        resource()
            .wrap(Logger::default())
            .wrap(DefaultHeaders::new().add(("x-wrapped", "1")))
            .wrap(WebhookMiddleware::new(test_receiver()))
    );
    // Without any middleware, the VerifiedEvent extractor refuses rather than run the handler.
    let bare = actix_web::test::init_service(
        App::new()
            .app_data(web::Data::new(recorder.clone()))
            .route("/webhook", web::post().to(recorded)),
    )
    .await;
    let response =
        actix_web::test::call_service(&bare, forged.actix_request("/webhook").to_request()).await;
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert!(recorder.handled().is_empty());
}

#[actix_web::test]
async fn the_standalone_extractor_verifies_with_web_data() {
    let app =
        actix_web::test::init_service(App::new().app_data(web::Data::new(test_receiver())).route(
            "/webhook",
            web::post().to(|delivery: WebhookDelivery| async move {
                let kind = delivery.event.kind().to_string();
                delivery.commit().await;
                HttpResponse::Ok().body(kind)
            }),
        ))
        .await;
    let delivery = message(Dialect::Developer, "standalone-1");
    let call = |d: &Delivery| {
        actix_web::test::call_service(&app, d.actix_request("/webhook").to_request())
    };
    let first = call(&delivery).await;
    assert_eq!(first.status(), StatusCode::OK);
    assert_eq!(
        actix_web::test::read_body(first).await,
        Bytes::from_static(b"message.incoming")
    );
    let again = call(&delivery.redelivery()).await;
    assert_eq!(again.status(), StatusCode::OK);
    assert_eq!(
        actix_web::test::read_body(again).await,
        Bytes::from_static(br#"{"status":"duplicate"}"#)
    );
    assert_eq!(
        call(&delivery.forged()).await.status(),
        StatusCode::UNAUTHORIZED
    );
}

#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_of_the_actix_example_share_one_redis() {
    crate::axum::two_replicas_share_one_redis("actix_receiver").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_actix_example_handles_both_dialects_and_both_headers() {
    drive_example_receiver("actix_receiver", None).await;
}

#[cfg(feature = "sqlite")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_actix_example_in_inbox_mode_prints_the_same_lines_from_its_workers() {
    let dir = tempfile::tempdir().unwrap();
    let inbox = format!("sqlite:{}", dir.path().join("inbox.db").display());
    drive_example_receiver("actix_receiver", Some(&inbox)).await;
}

/// In process: any method but POST is 405 with `Allow: POST`, under the middleware and from
/// the standalone extractor (on a route that takes every method).
#[actix_web::test]
async fn a_wrong_method_is_405_in_process() {
    use actix_web::http::Method;

    let app = actix_web::test::init_service(
        App::new()
            .app_data(web::Data::new(test_receiver()))
            .service(
                web::resource("/webhook")
                    .wrap(WebhookMiddleware::new(test_receiver()))
                    .route(
                        web::post().to(|_: VerifiedEvent| async { HttpResponse::Ok().finish() }),
                    ),
            )
            .route(
                "/standalone",
                web::route().to(|delivery: WebhookDelivery| async move {
                    delivery.commit().await;
                    HttpResponse::Ok().finish()
                }),
            ),
    )
    .await;
    let delivery = message(Dialect::Help, "method-in-process-1");
    for uri in ["/webhook", "/standalone"] {
        for method in [Method::GET, Method::HEAD, Method::OPTIONS, Method::PUT] {
            let request = delivery.actix_request(uri).method(method.clone());
            let response = actix_web::test::call_service(&app, request.to_request()).await;
            assert_eq!(
                response.status(),
                StatusCode::METHOD_NOT_ALLOWED,
                "{uri} {method}"
            );
            assert_eq!(
                response.headers().get("allow").unwrap(),
                "POST",
                "{uri} {method}"
            );
            assert_eq!(
                response.headers().get("content-type").unwrap(),
                "application/json"
            );
            assert_eq!(
                actix_web::test::read_body(response).await,
                Bytes::from_static(br#"{"error":"method not allowed"}"#),
                "{uri} {method}"
            );
        }
    }
    let response =
        actix_web::test::call_service(&app, delivery.actix_request("/webhook").to_request()).await;
    assert_eq!(response.status(), StatusCode::OK, "POST still works");
}

/// Outside an actix-web system (here a bare tokio runtime, with no local set to spawn on), a
/// request dropped once its delivery is admitted cannot move to a task: its run is dropped,
/// which releases the claim, so the redelivery runs the handler again. Spawning there would
/// panic inside the drop.
#[test]
fn outside_an_actix_system_a_request_dropped_after_admission_releases_its_claim() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let started = Arc::new(AtomicUsize::new(0));
        let handler = {
            let started = started.clone();
            move || {
                let started = started.clone();
                async move {
                    started.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                    HttpResponse::Ok().finish()
                }
            }
        };
        let app = actix_web::test::init_service(
            App::new().service(
                web::resource("/webhook")
                    .wrap(WebhookMiddleware::new(test_receiver()))
                    .route(web::post().to(handler)),
            ),
        )
        .await;
        let delivery = message(Dialect::Help, "no-system-1");
        for (attempt, request) in [delivery.clone(), delivery.redelivery()].iter().enumerate() {
            let dropped = tokio::time::timeout(
                Duration::from_millis(200),
                app.call(request.actix_request("/webhook").to_request()),
            )
            .await;
            assert!(
                dropped.is_err(),
                "attempt {attempt}: the handler still runs"
            );
            assert_eq!(
                started.load(Ordering::SeqCst),
                attempt + 1,
                "attempt {attempt} ran the handler: the dropped one's claim was released"
            );
        }
    });
}
