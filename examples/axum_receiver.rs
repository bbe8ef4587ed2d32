//! An AISoule webhook receiver on axum: the shape to copy into your own server.
//!
//! ```text
//! AISOULE_WEBHOOK_SECRET=whsec_… [AISOULE_WEBHOOK_SECRET_PREVIOUS=whsec_…] [PORT=8080] \
//!     cargo run --example axum_receiver --features axum
//! ```
//!
//! Serves `POST /webhook` on `127.0.0.1:$PORT` and prints one JSON line per handled event on
//! stdout (logs go to stderr).

mod common;

use std::process::ExitCode;

use aisoule_webhooks::axum::WebhookLayer;
use aisoule_webhooks::{Receiver, VerifiedEvent};
use axum::http::StatusCode;
use axum::{Router, routing::post};

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
    let app = Router::new()
        .route("/webhook", post(handle))
        .layer(WebhookLayer::new(Receiver::new(settings.verifier)));
    let listener = match tokio::net::TcpListener::bind(("127.0.0.1", settings.port)).await {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("error: cannot listen on 127.0.0.1:{}: {e}", settings.port);
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
    match axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
    {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
