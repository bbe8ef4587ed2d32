//! What both example receivers share: configuration from the environment, and the JSON line
//! printed for each handled event. One contract, so a script that drives one drives the other.

use std::io::Write;
use std::net::IpAddr;
use std::process::ExitCode;
use std::time::Duration;

use aisoule_webhooks::inbox::Inbox;
use aisoule_webhooks::receiver::{ForwardedHeader, IpNet};
use aisoule_webhooks::{Deduplicator, Receiver, VerifiedEvent, Verifier, WebhookSecret};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use serde_json::{Map, Value, json};

/// How long a client may take to send a request head, from connecting (or from the end of the
/// previous answer on a kept-alive connection) to its blank line. Below the platform's 5 s
/// delivery timeout: a head not read by then leaves no time for the body and the handler, so
/// it is no delivery the platform still waits for. The platform sends its head in one write.
pub(crate) const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(4);

/// How long a request may take from its head to the answer: a stalled or trickled body gets
/// 408 and is never handled. Above the slowest legitimate delivery (a 1 MiB body through a
/// proxy takes well under a second on loopback, and the platform gives up at 5 s): by 10 s no
/// client is waiting for the answer. A handler still running then runs on and settles its
/// claim; only the answer is 408.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// How long an idle kept-alive connection stays open. Short, since the platform opens a new
/// connection per delivery; a proxy that pools upstream connections must close its own idle
/// ones sooner (see the README's "Deploying"), or it may send onto one being closed here.
pub(crate) const IDLE_TIMEOUT: Duration = Duration::from_secs(4);

/// The example's settings, from `AISOULE_WEBHOOK_SECRET`, `AISOULE_WEBHOOK_SECRET_PREVIOUS`,
/// `AISOULE_REDIS_URL`, `AISOULE_INBOX`, `PORT`, and `AISOULE_TRUSTED_PROXIES` (proxy
/// addresses or ranges, comma-separated: `127.0.0.1,10.0.0.0/8,fd00::/8`) with `AISOULE_FORWARDED_HEADER` (`x-forwarded-for`, the
/// default, or `forwarded`).
pub(crate) struct Settings {
    pub(crate) verifier: Verifier,
    pub(crate) redis_url: Option<String>,
    pub(crate) inbox: Option<String>,
    pub(crate) port: u16,
    pub(crate) trusted_proxies: Option<(ForwardedHeader, Vec<IpNet>)>,
}

/// The receiver, and in inbox mode the inbox whose workers run the handler.
pub(crate) struct Configured {
    pub(crate) receiver: Receiver,
    pub(crate) inbox: Option<Inbox>,
}

impl Settings {
    /// The receiver: on the Redis store when `AISOULE_REDIS_URL` is set, so that several
    /// replicas share one idempotency store; in memory otherwise. On failure, explains it and
    /// gives the exit code to stop with.
    ///
    /// With `AISOULE_INBOX` (`sqlite:PATH` or `postgres://…`) it is in inbox mode: deliveries
    /// are stored durably and answered at once, and the returned inbox's workers run the
    /// handler.
    pub(crate) async fn receiver(self) -> Result<Configured, ExitCode> {
        self.build_receiver().await.map_err(|problem| {
            eprintln!("error: {problem}");
            ExitCode::from(2)
        })
    }

    async fn build_receiver(self) -> Result<Configured, String> {
        let inbox = match &self.inbox {
            None => None,
            Some(spec) => Some(open_inbox(spec).await?),
        };
        let deduplicator = match self.redis_url {
            None => Deduplicator::in_memory(),
            #[cfg(feature = "redis")]
            Some(url) => {
                let store = aisoule_webhooks::dedup::redis::RedisStore::connect(&url)
                    .await
                    .map_err(|e| format!("AISOULE_REDIS_URL: {e}"))?;
                Deduplicator::new(store)
            }
            #[cfg(not(feature = "redis"))]
            Some(_) => {
                return Err(
                    "AISOULE_REDIS_URL is set, but this build has no Redis store: \
                            add `--features redis`"
                        .to_owned(),
                );
            }
        };
        let mut builder = Receiver::builder(self.verifier).deduplicator(deduplicator);
        if let Some((header, proxies)) = self.trusted_proxies {
            builder = builder.trusted_proxies(header, proxies);
        }
        if let Some(inbox) = &inbox {
            builder = builder.inbox(inbox.clone());
        }
        let receiver = builder.build().map_err(|e| e.to_string())?;
        Ok(Configured { receiver, inbox })
    }
}

/// The inbox `AISOULE_INBOX` names: `sqlite:PATH` or a `postgres://` URL.
async fn open_inbox(spec: &str) -> Result<Inbox, String> {
    use aisoule_webhooks::inbox::InboxStore;
    let store: std::sync::Arc<dyn InboxStore> = if let Some(path) = spec.strip_prefix("sqlite:") {
        open_sqlite(path)?
    } else if spec.starts_with("postgres://") || spec.starts_with("postgresql://") {
        open_postgres(spec).await?
    } else {
        return Err(format!(
            "AISOULE_INBOX={spec:?}: expected `sqlite:PATH` or a `postgres://` URL"
        ));
    };
    Inbox::builder_from_arc(store)
        .build()
        .map_err(|e| e.to_string())
}

#[cfg(feature = "sqlite")]
fn open_sqlite(
    path: &str,
) -> Result<std::sync::Arc<dyn aisoule_webhooks::inbox::InboxStore>, String> {
    let store = aisoule_webhooks::inbox::sqlite::SqliteStore::open(path)
        .map_err(|e| format!("AISOULE_INBOX=sqlite:{path}: {}", error_chain(&e)))?;
    Ok(std::sync::Arc::new(store))
}

#[cfg(not(feature = "sqlite"))]
fn open_sqlite(
    _path: &str,
) -> Result<std::sync::Arc<dyn aisoule_webhooks::inbox::InboxStore>, String> {
    Err(
        "AISOULE_INBOX names a SQLite file, but this build has no SQLite store: add \
         `--features sqlite`"
            .to_owned(),
    )
}

#[cfg(feature = "postgres")]
async fn open_postgres(
    url: &str,
) -> Result<std::sync::Arc<dyn aisoule_webhooks::inbox::InboxStore>, String> {
    let store = aisoule_webhooks::inbox::postgres::PostgresStore::connect(url)
        .await
        .map_err(|e| format!("AISOULE_INBOX: {}", error_chain(&e)))?;
    Ok(std::sync::Arc::new(store))
}

#[cfg(not(feature = "postgres"))]
async fn open_postgres(
    _url: &str,
) -> Result<std::sync::Arc<dyn aisoule_webhooks::inbox::InboxStore>, String> {
    Err(
        "AISOULE_INBOX names PostgreSQL, but this build has no PostgreSQL store: add \
         `--features postgres`"
            .to_owned(),
    )
}

/// An error and its sources, for one line on stderr.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text = format!("{text}: {cause}");
        source = cause.source();
    }
    text
}

/// How often the Prometheus recorder drains its histograms' buckets: without this upkeep they
/// grow with every sample between scrapes.
const METRICS_UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// Installs the Prometheus recorder as the `metrics` facade's global recorder, so that every
/// metric the receiver records (see the README's metrics list) is kept for `GET /metrics`; the
/// handle renders them. `install_recorder` starts neither a listener nor an upkeep task, so
/// this starts the upkeep on a thread of its own, whichever runtime the example runs on.
///
/// # Errors
///
/// When a global recorder is already installed.
pub(crate) fn install_metrics() -> Result<PrometheusHandle, ExitCode> {
    let handle = PrometheusBuilder::new().install_recorder().map_err(|e| {
        eprintln!("error: cannot install the metrics recorder: {e}");
        ExitCode::FAILURE
    })?;
    let upkeep = handle.clone();
    std::thread::Builder::new()
        .name("metrics-upkeep".into())
        .spawn(move || {
            loop {
                std::thread::sleep(METRICS_UPKEEP_INTERVAL);
                upkeep.run_upkeep();
            }
        })
        .map_err(|e| {
            eprintln!("error: cannot start the metrics upkeep thread: {e}");
            ExitCode::FAILURE
        })?;
    Ok(handle)
}

/// The `Content-Type` of Prometheus's text exposition format (version 0.0.4), which
/// `GET /metrics` answers in.
pub(crate) const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Sends logs to stderr (stdout carries the JSON lines) and reads the settings, or explains
/// what is missing and gives the exit code to stop with.
pub(crate) fn start() -> Result<Settings, ExitCode> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    settings_from_env().map_err(|problem| {
        eprintln!("error: {problem}");
        ExitCode::from(2)
    })
}

/// Reads the settings, or explains what is missing.
fn settings_from_env() -> Result<Settings, String> {
    let current = std::env::var("AISOULE_WEBHOOK_SECRET").map_err(|_| {
        "AISOULE_WEBHOOK_SECRET is not set: copy the secret from Settings → Webhooks in the AISoule dashboard".to_owned()
    })?;
    let current =
        WebhookSecret::new(current).map_err(|e| format!("AISOULE_WEBHOOK_SECRET: {e}"))?;
    let mut verifier = Verifier::with_label("current", current);
    if let Ok(previous) = std::env::var("AISOULE_WEBHOOK_SECRET_PREVIOUS") {
        let previous = WebhookSecret::new(previous)
            .map_err(|e| format!("AISOULE_WEBHOOK_SECRET_PREVIOUS: {e}"))?;
        verifier = verifier.and_secret("previous", previous);
    }
    let port = match std::env::var("PORT") {
        Ok(port) => port
            .parse()
            .map_err(|_| format!("PORT={port:?} is not a port number"))?,
        Err(_) => 8080,
    };
    let redis_url = std::env::var("AISOULE_REDIS_URL").ok();
    let inbox = std::env::var("AISOULE_INBOX")
        .ok()
        .filter(|v| !v.is_empty());
    let trusted_proxies = match std::env::var("AISOULE_TRUSTED_PROXIES") {
        Ok(list) if !list.trim().is_empty() => {
            let header = match std::env::var("AISOULE_FORWARDED_HEADER").as_deref() {
                Err(_) | Ok("x-forwarded-for") => ForwardedHeader::XForwardedFor,
                Ok("forwarded") => ForwardedHeader::Forwarded,
                Ok(other) => {
                    return Err(format!(
                        "AISOULE_FORWARDED_HEADER={other:?}: expected `x-forwarded-for` or \
                         `forwarded`"
                    ));
                }
            };
            let proxies = list
                .split(',')
                .map(|proxy| {
                    let proxy = proxy.trim();
                    // A bare address is the range of that one address.
                    proxy
                        .parse::<IpNet>()
                        .or_else(|_| proxy.parse::<IpAddr>().map(IpNet::from))
                        .map_err(|_| {
                            format!(
                                "AISOULE_TRUSTED_PROXIES: {proxy:?} is neither an address nor \
                                 a range such as 10.0.0.0/8"
                            )
                        })
                })
                .collect::<Result<_, _>>()?;
            Some((header, proxies))
        }
        _ => None,
    };
    Ok(Settings {
        verifier,
        redis_url,
        inbox,
        port,
        trusted_proxies,
    })
}

/// The line printed for a handled event: present fields only.
pub(crate) fn handled_line(event: &VerifiedEvent) -> Value {
    let mut line = Map::new();
    line.insert("event".into(), json!(event.kind().as_str()));
    line.insert("received_as".into(), json!(event.received_as()));
    if let Some(id) = event.message_id() {
        line.insert("message_id".into(), json!(id));
    }
    if let Some(from) = event.sender() {
        line.insert("from".into(), json!(from.e164().unwrap_or(from.as_sent())));
    }
    if let Some(text) = event.text() {
        line.insert("text".into(), json!(text));
    }
    if let Some(at) = event.timestamp() {
        line.insert("timestamp".into(), json!(at.to_rfc3339()));
    }
    line.insert("secret".into(), json!(event.secret_label()));
    Value::Object(line)
}

/// Prints the line and flushes, so a reader sees it at once. A failed write is an error, so
/// the handler answers 500 and the platform retries.
pub(crate) fn print_handled(event: &VerifiedEvent) -> std::io::Result<()> {
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{}", handled_line(event))?;
    stdout.flush()
}
