//! The servers and the deliveries `benches/load.sh` and `benches/inbox.sh` use.
//!
//! ```text
//! load_server emit N                           # N distinct signed deliveries, one per line: signature<TAB>body
//! load_server layer PORT                       # axum + WebhookLayer, a no-op handler (inline mode, memory dedup)
//! load_server inline PORT                      # the same as `layer`
//! load_server bare PORT                        # the same handler without the layer
//! load_server handwritten PORT                 # what a user writes instead of this crate: verify
//!                                              # (hmac), parse (a derived struct), dedup (a set)
//! load_server inbox-sqlite PORT PATH           # inbox mode on a new SQLite file: group commit, synchronous=FULL
//! load_server inbox-sqlite-single PORT PATH    # the same with max_batch(1): one commit per request
//! load_server inbox-postgres PORT URL SCHEMA   # inbox mode on PostgreSQL, in a new schema: batched inserts
//! load_server inbox-postgres-single PORT URL SCHEMA  # the same with max_batch(1)
//! ```
//!
//! The inbox modes (feature `inbox`) run the inbox's workers with a no-op handler, so that a run
//! also shows the queue drains, and answer `GET /stats` with the inbox's counts by state. Their
//! inbox has every default setting, except the number of workers when `INBOX_WORKERS` is set.
//!
//! The servers run on one thread (a current-thread runtime), so pinning the process pins them,
//! and the inline and inbox modes are measured the same way. One core has nothing to gain from
//! a multi-thread runtime, which would only add cross-thread wake-ups. Each store's own
//! machinery is unchanged: the SQLite store's writer thread, and tokio's blocking pool for its
//! reads, are extra threads that the pinning keeps on the same core.

use std::io::Write;

use aisoule_webhooks::Receiver;
use aisoule_webhooks::axum::WebhookLayer;
use aisoule_webhooks::event::{Dialect, EventKind};
use aisoule_webhooks::test_util::{Delivery, SignatureForm, SignatureHeader, test_verifier};
use axum::Router;
use axum::http::StatusCode;
use axum::routing::post;

const USAGE: &str = "usage: load_server emit N | layer PORT | inline PORT | bare PORT | handwritten PORT \
    | inbox-sqlite PORT PATH | inbox-sqlite-single PORT PATH \
    | inbox-postgres PORT URL SCHEMA | inbox-postgres-single PORT URL SCHEMA";

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |i: usize| args.get(i).map(String::as_str);
    let port = || arg(2).expect(USAGE).parse::<u16>().expect("a port");
    match arg(1) {
        Some("emit") if args.len() == 3 => emit(arg(2).unwrap().parse().expect("a count")),
        Some(mode @ ("layer" | "inline" | "bare")) if args.len() == 3 => {
            serve(mode != "bare", port())
        }
        Some("handwritten") if args.len() == 3 => handwritten::serve(port()),
        #[cfg(feature = "inbox")]
        Some(mode @ ("inbox-sqlite" | "inbox-sqlite-single")) if args.len() == 4 => {
            let store = inbox::Store::Sqlite {
                path: arg(3).unwrap().into(),
                single: mode.ends_with("-single"),
            };
            inbox::serve(store, port())
        }
        #[cfg(feature = "inbox")]
        Some(mode @ ("inbox-postgres" | "inbox-postgres-single")) if args.len() == 5 => {
            let store = inbox::Store::Postgres {
                url: arg(3).unwrap().to_owned(),
                schema: arg(4).unwrap().to_owned(),
                single: mode.ends_with("-single"),
            };
            inbox::serve(store, port())
        }
        #[cfg(not(feature = "inbox"))]
        Some(mode) if mode.starts_with("inbox-") => {
            eprintln!("the inbox modes need `--features inbox`");
            std::process::exit(2);
        }
        _ => {
            eprintln!("{USAGE}");
            std::process::exit(2);
        }
    }
}

fn emit(n: u64) {
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for i in 0..n {
        // About 300 bytes, the size of a typical message event.
        let delivery = Delivery::sample(EventKind::MessageIncoming, Dialect::Developer)
            .message_id(format!("msg_load_{i:012x}"))
            .set("/data/body", "Hi there! I need pricing info for forty units, delivered to Pune before Friday, please.")
            .header(SignatureHeader::AisouleSignature)
            .form(SignatureForm::Prefixed)
            .build();
        out.write_all(delivery.signature_value().as_bytes())
            .unwrap();
        out.write_all(b"\t").unwrap();
        out.write_all(delivery.body()).unwrap();
        out.write_all(b"\n").unwrap();
    }
}

/// The current-thread runtime every mode runs on (see the module documentation).
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn serve(layered: bool, port: u16) {
    runtime().block_on(async {
        let handler = post(|| async { StatusCode::OK });
        let app = if layered {
            Router::new()
                .route("/webhook", handler)
                .layer(WebhookLayer::new(Receiver::new(test_verifier())))
        } else {
            Router::new().route("/webhook", handler)
        };
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap();
        println!("ready");
        axum::serve(listener, app).await.unwrap();
    });
}

/// The receiver a user writes by hand in an axum handler, as the issue that set the
/// layer's target describes it: verify the HMAC over the raw body (the `hmac` crate, in
/// constant time), parse into a derived struct, and remember `message_id`s in a set. No
/// replay window, no lease, no settlement by the handler's answer: what the layer must not be
/// slower than.
mod handwritten {
    use std::collections::HashSet;
    use std::sync::{Arc, Mutex};

    use aisoule_webhooks::test_util::TEST_SECRET;
    use axum::Router;
    use axum::body::Bytes;
    use axum::extract::State;
    use axum::http::{HeaderMap, StatusCode};
    use axum::routing::post;
    use hmac::{Hmac, KeyInit, Mac};

    #[derive(serde::Deserialize)]
    #[allow(dead_code)] // read by serde only
    struct Webhook {
        event: String,
        data: Data,
    }

    #[derive(serde::Deserialize)]
    struct Data {
        message_id: String,
    }

    #[derive(Clone)]
    struct Seen(Arc<Mutex<HashSet<String>>>);

    async fn receive(State(seen): State<Seen>, headers: HeaderMap, body: Bytes) -> StatusCode {
        let Some(signature) = headers
            .get("x-aisoule-signature")
            .or_else(|| headers.get("x-webhook-signature"))
            .and_then(|value| value.to_str().ok())
        else {
            return StatusCode::UNAUTHORIZED;
        };
        let hex_digits = signature.strip_prefix("sha256=").unwrap_or(signature);
        let Ok(tag) = hex::decode(hex_digits) else {
            return StatusCode::UNAUTHORIZED;
        };
        let mut mac =
            Hmac::<sha2::Sha256>::new_from_slice(TEST_SECRET.as_bytes()).expect("any key length");
        mac.update(&body);
        if mac.verify_slice(&tag).is_err() {
            return StatusCode::UNAUTHORIZED;
        }
        let Ok(webhook) = serde_json::from_slice::<Webhook>(&body) else {
            return StatusCode::BAD_REQUEST;
        };
        if !seen.0.lock().unwrap().insert(webhook.data.message_id) {
            return StatusCode::OK; // a duplicate
        }
        StatusCode::OK
    }

    pub(super) fn serve(port: u16) {
        super::runtime().block_on(async {
            let app = Router::new()
                .route("/webhook", post(receive))
                .with_state(Seen(Arc::default()));
            let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
                .await
                .unwrap();
            println!("ready");
            axum::serve(listener, app).await.unwrap();
        });
    }
}

#[cfg(feature = "inbox")]
mod inbox {
    use std::path::PathBuf;
    use std::sync::Arc;

    use aisoule_webhooks::Receiver;
    use aisoule_webhooks::axum::WebhookLayer;
    use aisoule_webhooks::inbox::postgres::PostgresStore;
    use aisoule_webhooks::inbox::sqlite::SqliteStore;
    use aisoule_webhooks::inbox::{Inbox, InboxStore};
    use aisoule_webhooks::test_util::test_verifier;
    use axum::Router;
    use axum::extract::State;
    use axum::http::StatusCode;
    use axum::routing::{get, post};

    /// Where the inbox keeps its rows. `single` sets `max_batch(1)`: one commit per request.
    pub(super) enum Store {
        Sqlite {
            path: PathBuf,
            single: bool,
        },
        Postgres {
            url: String,
            schema: String,
            single: bool,
        },
    }

    #[derive(Clone)]
    struct Shared {
        inbox: Inbox,
        /// For its commit count, which shows how many requests one commit acknowledged.
        sqlite: Option<Arc<SqliteStore>>,
    }

    pub(super) fn serve(store: Store, port: u16) {
        super::runtime().block_on(async {
            let (store, sqlite): (Arc<dyn InboxStore>, _) = match store {
                Store::Sqlite { path, single } => {
                    assert!(
                        !path.exists(),
                        "{} exists: each run needs a new file",
                        path.display()
                    );
                    let mut builder = SqliteStore::builder(&path);
                    if single {
                        builder = builder.max_batch(1);
                    }
                    let store = Arc::new(builder.open().expect("the SQLite inbox opens"));
                    (store.clone(), Some(store))
                }
                Store::Postgres {
                    url,
                    schema,
                    single,
                } => {
                    let mut builder = PostgresStore::builder(url).schema(schema);
                    if single {
                        builder = builder.max_batch(1);
                    }
                    let store = builder
                        .connect()
                        .await
                        .expect("the PostgreSQL inbox connects");
                    (Arc::new(store), None)
                }
            };
            // Every other setting is the default, as a receiver that only picked a store has;
            // INBOX_WORKERS changes the number of workers, to see what limits the drain.
            let mut builder = Inbox::builder_from_arc(store);
            if let Ok(workers) = std::env::var("INBOX_WORKERS") {
                builder = builder.workers(workers.parse().expect("INBOX_WORKERS is a count"));
            }
            let inbox = builder.build().expect("the default settings are valid");
            let receiver = Receiver::builder(test_verifier())
                .inbox(inbox.clone())
                .build()
                .expect("the receiver builds");
            // The workers run this no-op handler; the route's own handler is never called.
            let _workers = inbox.start(|_job| async { Ok::<_, std::io::Error>(()) });
            let app = Router::new()
                .route(
                    "/webhook",
                    post(|| async { StatusCode::OK }).layer(WebhookLayer::new(receiver)),
                )
                .route("/stats", get(stats))
                .with_state(Shared { inbox, sqlite });
            let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
                .await
                .unwrap();
            println!("ready");
            axum::serve(listener, app).await.unwrap();
        });
    }

    /// `pending=… running=… done=… dead=… quarantined=… commits=…` (commits: SQLite only).
    async fn stats(State(shared): State<Shared>) -> Result<String, (StatusCode, String)> {
        let stats = shared
            .inbox
            .stats()
            .await
            .map_err(|e| (StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
        let commits = shared
            .sqlite
            .as_ref()
            .map_or_else(|| "n/a".to_owned(), |s| s.commits().to_string());
        Ok(format!(
            "pending={} running={} done={} dead={} quarantined={} commits={commits}\n",
            stats.pending, stats.running, stats.done, stats.dead, stats.quarantined
        ))
    }
}
