//! An AISoule webhook receiver on axum: the shape to copy into your own server.
//!
//! ```text
//! AISOULE_WEBHOOK_SECRET=whsec_… [AISOULE_WEBHOOK_SECRET_PREVIOUS=whsec_…] [PORT=8080] \
//!     [AISOULE_REDIS_URL=redis://127.0.0.1:6379/] [AISOULE_INBOX=sqlite:inbox.db] \
//!     cargo run --example axum_receiver --features axum,redis,sqlite
//! ```
//!
//! Serves `POST /webhook` on `127.0.0.1:$PORT`, and `GET /health` and `GET /metrics`
//! (Prometheus text) outside the webhook layer, and prints one JSON line per handled event on stdout (logs go to stderr). With
//! `AISOULE_REDIS_URL`, claims live in Redis, so several replicas can share them. With
//! `AISOULE_INBOX` (`sqlite:PATH`, or a `postgres://` URL with `--features postgres`), each
//! delivery is stored durably and answered at once, and the inbox's workers run the same
//! handler.

mod common;

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use aisoule_webhooks::VerifiedEvent;
use aisoule_webhooks::axum::{InboxHandler, WebhookLayer};
use axum::Router;
use axum::extract::ConnectInfo;
use axum::http::{StatusCode, header};
use axum::routing::{get, post};
use hyper::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tower::ServiceExt;
use tower_http::timeout::TimeoutLayer;

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
    let metrics = match common::install_metrics() {
        Ok(metrics) => metrics,
        Err(code) => return code,
    };
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
        // The layer wraps the webhook route only: `/health`, `/metrics` and unknown paths stay
        // outside it.
        .route("/webhook", post(handle).layer(WebhookLayer::new(receiver)))
        .route("/health", get(|| async { "ok" }))
        .route(
            "/metrics",
            get(move || async move {
                (
                    [(header::CONTENT_TYPE, common::METRICS_CONTENT_TYPE)],
                    metrics.render(),
                )
            }),
        );
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
    // A stalled or trickled body ends with 408 and is never handled. It also bounds a slow
    // handler's answer, but the handler runs on to completion and settles its claim.
    let app = app.layer(TimeoutLayer::with_status_code(
        StatusCode::REQUEST_TIMEOUT,
        common::REQUEST_TIMEOUT,
    ));
    let served = serve(listener, app).await;
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

/// Serves `app` on `listener`, HTTP/1.1 and HTTP/2 cleartext (h2c, prior knowledge) side by
/// side, until Ctrl-C; then lets open connections finish.
///
/// `axum::serve` would do, but it has no header read timeout and speaks HTTP/1.1 only: this is
/// the same hyper connection builder it uses, with both set. TLS is the proxy's job (see the
/// README's "Deploying").
async fn serve(listener: tokio::net::TcpListener, app: Router) -> std::io::Result<()> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        // hyper starts this timer whenever it waits for a request head, so on HTTP/1.1 it is
        // also the idle keep-alive timeout.
        .header_read_timeout(common::HEADER_READ_TIMEOUT);
    builder
        .http2()
        .timer(TokioTimer::new())
        // Pings an idle HTTP/2 connection and closes it when the ping goes unanswered.
        .keep_alive_interval(common::IDLE_TIMEOUT)
        .keep_alive_timeout(common::HEADER_READ_TIMEOUT);
    let graceful = GracefulShutdown::new();
    let mut ctrl_c = std::pin::pin!(tokio::signal::ctrl_c());
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                // A failed accept (say, out of file descriptors) stops this connection only.
                Err(e) => {
                    eprintln!("warning: accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = &mut ctrl_c => break,
        };
        // Set when the connection's first request head has been read.
        let first_request = Arc::new(AtomicBool::new(false));
        // What `into_make_service_with_connect_info` gives: the peer, for each delivery's
        // `client` in the logs.
        let app = app.clone().map_request({
            let first_request = Arc::clone(&first_request);
            move |mut request: Request<Incoming>| {
                first_request.store(true, Ordering::Relaxed);
                request.extensions_mut().insert(ConnectInfo(peer));
                request
            }
        });
        let service = TowerToHyperService::new(app);
        let connection = builder
            .serve_connection(TokioIo::new(stream), service)
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            let mut connection = std::pin::pin!(connection);
            // The one timer hyper has not: the first request head must be read within
            // HEADER_READ_TIMEOUT of connecting, whichever the protocol. hyper-util's `auto`
            // reads the first bytes to tell HTTP/1.1 from h2c with no timeout
            // (hyperium/hyper#3962, open; hyper-util 0.1.21 has no `read_version_timeout`), so a
            // client that sends nothing, or part of the HTTP/2 preface, would never reach
            // `header_read_timeout`; and hyper 1.12's HTTP/2 has no handshake timeout, nor
            // pings before the handshake. After the first request hyper's own timers take
            // over: `header_read_timeout` between HTTP/1.1 requests, pings on HTTP/2.
            let first = tokio::time::timeout(common::HEADER_READ_TIMEOUT, &mut connection).await;
            if first.is_err() && first_request.load(Ordering::Relaxed) {
                // A client that hangs up or times out ends its connection; nothing to report.
                let _ = connection.await;
            }
            // Otherwise dropped: the socket is closed, and no request was begun on it.
        });
    }
    graceful.shutdown().await;
    Ok(())
}
