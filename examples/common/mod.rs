//! What both example receivers share: configuration from the environment, and the JSON line
//! printed for each handled event. One contract, so a script that drives one drives the other.

use std::io::Write;
use std::process::ExitCode;

use aisoule_webhooks::{Deduplicator, Receiver, VerifiedEvent, Verifier, WebhookSecret};
use serde_json::{Map, Value, json};

/// The example's settings, from `AISOULE_WEBHOOK_SECRET`, `AISOULE_WEBHOOK_SECRET_PREVIOUS`,
/// `AISOULE_REDIS_URL` and `PORT`.
pub(crate) struct Settings {
    pub(crate) verifier: Verifier,
    pub(crate) redis_url: Option<String>,
    pub(crate) port: u16,
}

impl Settings {
    /// The receiver: on the Redis store when `AISOULE_REDIS_URL` is set, so that several
    /// replicas share one idempotency store; in memory otherwise. On failure, explains it and
    /// gives the exit code to stop with.
    pub(crate) async fn receiver(self) -> Result<Receiver, ExitCode> {
        self.build_receiver().await.map_err(|problem| {
            eprintln!("error: {problem}");
            ExitCode::from(2)
        })
    }

    async fn build_receiver(self) -> Result<Receiver, String> {
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
        Receiver::builder(self.verifier)
            .deduplicator(deduplicator)
            .build()
            .map_err(|e| e.to_string())
    }
}

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
    Ok(Settings {
        verifier,
        redis_url,
        port,
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
