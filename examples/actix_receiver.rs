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

use std::process::ExitCode;

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
                    .route(web::post().to(handle)),
            )
            .route("/health", web::get().to(|| async { "ok" }))
    })
    .workers(2)
    .bind(("127.0.0.1", port));
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
