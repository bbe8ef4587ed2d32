//! An AISoule webhook receiver on axum: the shape to copy into your own server.
//!
//! ```text
//! AISOULE_WEBHOOK_SECRET=whsec_… [AISOULE_WEBHOOK_SECRET_PREVIOUS=whsec_…] [PORT=8080] \
//!     [AISOULE_REDIS_URL=redis://127.0.0.1:6379/] [AISOULE_INBOX=sqlite:inbox.db] \
//!     cargo run --example axum_receiver --features axum,redis,sqlite
//! ```
//!
//! Serves `POST /webhook` on `127.0.0.1:$PORT`, and `GET /health` outside the webhook layer,
//! and prints one JSON line per handled event on stdout (logs go to stderr). With
//! `AISOULE_REDIS_URL`, claims live in Redis, so several replicas can share them. With
//! `AISOULE_INBOX` (`sqlite:PATH`, or a `postgres://` URL with `--features postgres`), each
//! delivery is stored durably and answered at once, and the inbox's workers run the same
//! handler.

mod common;

use std::process::ExitCode;

use aisoule_webhooks::VerifiedEvent;
use aisoule_webhooks::axum::{InboxHandler, WebhookLayer};
use axum::Router;
use axum::http::StatusCode;
use axum::routing::{get, post};

async fn handle(event: VerifiedEvent) -> StatusCode {
    match common::print_handled(&event) {
        // 200 commits the claim: redeliveries of this event are now duplicates.
        Ok(()) => StatusCode::OK,
        // Anything else releases it, so the platform's retry is handled.
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

#[tokio::main]
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
    // Inbox mode: the workers run the same handler the route would run inline.
    let workers = configured
        .inbox
        .map(|inbox| inbox.start(InboxHandler::new(post(handle))));
    let app = Router::new()
        // The layer wraps the webhook route only: `/health` and unknown paths stay outside it.
        .route("/webhook", post(handle).layer(WebhookLayer::new(receiver)))
        .route("/health", get(|| async { "ok" }));
    let listener = match tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("error: cannot listen on 127.0.0.1:{port}: {e}");
            return ExitCode::FAILURE;
        }
    };
    eprintln!(
        "listening on http://{}/webhook",
        listener.local_addr().expect("bound")
    );
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await;
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
