//! An AISoule webhook receiver on actix-web: the same contract as `axum_receiver`.
//!
//! ```text
//! AISOULE_WEBHOOK_SECRET=whsec_… [AISOULE_WEBHOOK_SECRET_PREVIOUS=whsec_…] [PORT=8080] \
//!     [AISOULE_REDIS_URL=redis://127.0.0.1:6379/] [AISOULE_INBOX=sqlite:inbox.db] \
//!     cargo run --example actix_receiver --features actix-web,redis,sqlite
//! ```
//!
//! Serves `POST /webhook` on `127.0.0.1:$PORT`, and `GET /health` and `GET /metrics`
//! (Prometheus text) outside the middleware, and prints one JSON line per handled event on stdout (logs go to stderr). With
//! `AISOULE_REDIS_URL`, claims live in Redis, so several replicas can share them. With
//! `AISOULE_INBOX` (`sqlite:PATH`, or a `postgres://` URL with `--features postgres`), each
//! delivery is stored durably and answered at once, and the inbox's workers print the line.

mod common;

use std::future::Future;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use actix_http::error::DispatchError;
use actix_http::{HttpService, Protocol};
use actix_service::{ServiceFactoryExt, map_config};
use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{AppConfig, Server, Service, ServiceRequest, ServiceResponse, fn_service};
use actix_web::rt::net::TcpStream;
use actix_web::{App, HttpResponse, web};
use aisoule_webhooks::VerifiedEvent;
use aisoule_webhooks::actix::WebhookMiddleware;
use aisoule_webhooks::inbox::Job;

async fn handle(event: VerifiedEvent) -> HttpResponse {
    match common::print_handled(&event) {
        // 200 commits the claim: redeliveries of this event are now duplicates.
        Ok(()) => HttpResponse::Ok().finish(),
        // Anything else releases it, so the platform's retry is handled.
        Err(_) => HttpResponse::InternalServerError().finish(),
    }
}

/// Answers 408 when a request is not answered within [`common::REQUEST_TIMEOUT`]: a stalled
/// or trickled body is never handled. A hand-written timer, since none of the libraries has
/// one for the body: actix-http's settings are `client_request_timeout` (the head only),
/// `keep_alive` (between requests) and `client_disconnect_timeout` (after the answer);
/// actix-web has no timeout middleware, nor does actix-web-lab (its middleware are load
/// shedding, panics, redirects, headers and body limits). The one found elsewhere,
/// `actix_tower` 0.1's `Timeout`, is a young crate doing what these lines do. This bounds the
/// whole request with actix's own runtime timer. The middleware moves a handler still running at
/// the deadline to a task of its own, where it runs on and settles its claim; only the answer is
/// 408.
fn request_deadline<S, B>(
    request: ServiceRequest,
    service: &S,
) -> impl Future<Output = Result<ServiceResponse<BoxBody>, actix_web::Error>> + use<S, B>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody + 'static,
{
    let answer = service.call(request);
    async move {
        match actix_web::rt::time::timeout(common::REQUEST_TIMEOUT, answer).await {
            Ok(answer) => answer.map(ServiceResponse::map_into_boxed_body),
            // As an error: the request cannot be kept to answer with, since the middleware
            // needs it unshared to put the verified body back.
            Err(_elapsed) => Err(actix_web::error::ErrorRequestTimeout(
                "the request was not complete in time",
            )),
        }
    }
}

#[actix_web::main]
async fn main() -> ExitCode {
    let settings = match common::start() {
        Ok(settings) => settings,
        Err(code) => return code,
    };
    let port = settings.port;
    let metrics = match common::install_metrics() {
        Ok(metrics) => metrics,
        Err(code) => return code,
    };
    let configured = match settings.receiver().await {
        Ok(configured) => configured,
        Err(code) => return code,
    };
    let receiver = configured.receiver;
    // Inbox mode: the workers print the same line the route prints inline.
    let workers = configured
        .inbox
        .map(|inbox| inbox.start(|job: Job| async move { common::print_handled(job.event()) }));
    let listener = match std::net::TcpListener::bind(("127.0.0.1", port)) {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("error: cannot listen on 127.0.0.1:{port}: {e}");
            return ExitCode::FAILURE;
        }
    };
    // `HttpServer::bind_auto_h2c` would do, but it waits for the first bytes with no timeout:
    // this is the same actix server and HTTP service, with a timeout there.
    let server = Server::build()
        .workers(2)
        .listen("aisoule-webhooks", listener, move || {
            let app = App::new()
                .service(
                    web::resource("/webhook")
                        .wrap(WebhookMiddleware::new(receiver.clone()))
                        // Outermost, so that it bounds the body read inside the middleware.
                        .wrap_fn(request_deadline)
                        .route(web::post().to(handle)),
                )
                .route("/health", web::get().to(|| async { "ok" }))
                .route("/metrics", {
                    let metrics = metrics.clone();
                    web::get().to(move || {
                        let body = metrics.render();
                        async move {
                            HttpResponse::Ok()
                                .content_type(common::METRICS_CONTENT_TYPE)
                                .body(body)
                        }
                    })
                });
            let http = HttpService::build()
                // A request head not read in time gets 408 and the connection is closed; on
                // HTTP/2, a handshake not done in time closes the connection.
                .client_request_timeout(common::HEADER_READ_TIMEOUT)
                // An idle kept-alive connection is closed after this; on HTTP/2, a ping is
                // sent then, and the connection closed if it goes unanswered.
                .keep_alive(common::IDLE_TIMEOUT)
                // After the answer to a timed-out request, the client gets 1 s to read it
                // before the connection is dropped (actix's default, stated so that it is not
                // mistaken for none).
                .client_disconnect_timeout(Duration::from_secs(1))
                // `localhost:8080`, where `HttpServer` would name the listening address: only
                // a request with no `Host` header sees it, in its connection info.
                .finish(map_config(app, |()| AppConfig::default()));
            fn_service(detect_protocol).and_then(http)
        });
    let server = match server {
        Ok(server) => server.run(),
        Err(e) => {
            eprintln!("error: cannot serve on 127.0.0.1:{port}: {e}");
            return ExitCode::FAILURE;
        }
    };
    eprintln!("listening on http://127.0.0.1:{port}/webhook");
    let served = server.await;
    if let Some(workers) = workers {
        // Running handlers get 10 s to finish; the rest go back to the inbox.
        workers.shutdown(std::time::Duration::from_secs(10)).await;
    }
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// HTTP/1.1 or HTTP/2 cleartext (prior knowledge), by the connection's first bytes, as
/// actix-http's `tcp_auto_h2c` tells them apart; closes the connection if none come within
/// [`common::HEADER_READ_TIMEOUT`]. `tcp_auto_h2c` (behind `HttpServer::bind_auto_h2c`) waits
/// for them with no timeout, and its `client_request_timeout` starts only after: a client that
/// connects and sends nothing would hold its connection forever. A timer of our own, then,
/// since actix has none for this wait; from the first byte on, actix's own timeouts apply.
async fn detect_protocol(
    io: TcpStream,
) -> Result<(TcpStream, Protocol, Option<SocketAddr>), DispatchError> {
    // The start of the HTTP/2 preface (RFC 9113 §3.4), as much as `tcp_auto_h2c` peeks at.
    const H2_PREFACE_START: &[u8] = b"PRI * HTTP/2";
    let mut start = [0; H2_PREFACE_START.len()];
    actix_web::rt::time::timeout(common::HEADER_READ_TIMEOUT, io.peek(&mut start))
        .await
        .map_err(|_elapsed| DispatchError::SlowRequestTimeout)??;
    let protocol = if start == H2_PREFACE_START {
        Protocol::Http2
    } else {
        Protocol::Http1
    };
    let peer = io.peer_addr().ok();
    Ok((io, protocol, peer))
}
