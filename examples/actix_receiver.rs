//! An AISoule webhook receiver on actix-web: the same contract as `axum_receiver`.
//!
//! ```text
//! AISOULE_WEBHOOK_SECRET=whsec_… [AISOULE_WEBHOOK_SECRET_PREVIOUS=whsec_…] [PORT=8080] \
//!     [AISOULE_REDIS_URL=redis://127.0.0.1:6379/] [AISOULE_INBOX=sqlite:inbox.db] \
//!     cargo run --example actix_receiver --features actix-web,redis,sqlite
//! ```
//!
//! Serves `POST /webhook` on `127.0.0.1:$PORT`, and `GET /health` outside the middleware,
//! and prints one JSON line per handled event on stdout (logs go to stderr). With
//! `AISOULE_REDIS_URL`, claims live in Redis, so several replicas can share them. With
//! `AISOULE_INBOX` (`sqlite:PATH`, or a `postgres://` URL with `--features postgres`), each
//! delivery is stored durably and answered at once, and the inbox's workers print the line.

mod common;

use std::future::Future;
use std::process::ExitCode;
use std::time::Duration;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{Service, ServiceRequest, ServiceResponse};
use actix_web::{App, HttpResponse, HttpServer, web};
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
/// or trickled body is never handled. actix-web's `client_request_timeout` covers the head
/// only, and it has no setting for the body, so this bounds the whole request with actix's
/// own runtime timer. The middleware runs your handler in a task of its own, so a handler
/// still running at the deadline runs on and settles its claim; only the answer is 408.
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
    let configured = match settings.receiver().await {
        Ok(configured) => configured,
        Err(code) => return code,
    };
    let receiver = configured.receiver;
    // Inbox mode: the workers print the same line the route prints inline.
    let workers = configured
        .inbox
        .map(|inbox| inbox.start(|job: Job| async move { common::print_handled(job.event()) }));
    let server = HttpServer::new(move || {
        App::new()
            .service(
                web::resource("/webhook")
                    .wrap(WebhookMiddleware::new(receiver.clone()))
                    // Outermost, so that it bounds the body read inside the middleware.
                    .wrap_fn(request_deadline)
                    .route(web::post().to(handle)),
            )
            .route("/health", web::get().to(|| async { "ok" }))
    })
    .workers(2)
    // A request head not read in time gets 408 and the connection is closed.
    .client_request_timeout(common::HEADER_READ_TIMEOUT)
    // An idle kept-alive connection is closed after this.
    .keep_alive(common::IDLE_TIMEOUT)
    // After the answer to a timed-out request, the client gets 1 s to read it before the
    // connection is dropped (actix's default, stated so that it is not mistaken for none).
    .client_disconnect_timeout(Duration::from_secs(1))
    // HTTP/1.1 and HTTP/2 cleartext (prior knowledge) on one port; TLS is the proxy's job.
    .bind_auto_h2c(("127.0.0.1", port));
    let server = match server {
        Ok(server) => server,
        Err(e) => {
            eprintln!("error: cannot listen on 127.0.0.1:{port}: {e}");
            return ExitCode::FAILURE;
        }
    };
    eprintln!("listening on http://127.0.0.1:{port}/webhook");
    let served = server.run().await;
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
