//! `send`: sample deliveries, signed as the platform signs them, with its retry policy.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aisoule_webhooks::event::{Dialect, EventKind};
use aisoule_webhooks::test_util::simulator::PlatformRules;
use aisoule_webhooks::test_util::{Delivery, SignatureForm};
use aisoule_webhooks::{WebhookSecret, sign};
use bytes::Bytes;
use clap::{Args, ValueEnum};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{FormArg, HeaderArg, header_value};
use crate::client::{Client, Url};
use crate::error::CliError;
use crate::input::{SecretArgs, read_file};

/// The shortest timeout `--time-scale` leaves an endpoint: the platform's 5 s divided by 200
/// is 25 ms, which a loaded machine misses, so attempts would fail for the tool's reasons.
const MIN_SCALED_TIMEOUT: Duration = Duration::from_secs(1);

/// Arguments of `send`.
#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  export AISOULE_WEBHOOK_SECRET=whsec_…
  aisoule-webhooks send http://127.0.0.1:8080/webhook
  aisoule-webhooks send http://127.0.0.1:8080/webhook --event message.read --dialect help
  aisoule-webhooks send http://127.0.0.1:8080/webhook --set /data/body='Do you ship to Pune?'
  aisoule-webhooks send http://127.0.0.1:8080/webhook --body saved.json --header webhook
  aisoule-webhooks send http://127.0.0.1:8080/webhook --again      # the last one, byte for byte
  aisoule-webhooks send http://127.0.0.1:8080/webhook --forged     # expect 401
  aisoule-webhooks send http://127.0.0.1:8080/webhook --retries    # 5 s timeout; 10 s, 60 s, 5 min

Exit status: 0 when the (last) answer is 200, 1 otherwise.")]
pub(crate) struct SendArgs {
    /// Where to POST, such as http://127.0.0.1:8080/webhook.
    url: String,
    /// A documented event: message.incoming (alias message.received), message.sent,
    /// message.delivered, message.read, message.failed, contact.created, contact.updated,
    /// campaign.completed, transfer.created.
    #[arg(long, default_value = "message.incoming", value_name = "NAME")]
    event: String,
    /// The payload dialect: the help pages' or the developer page's.
    #[arg(long, value_enum, default_value = "developer")]
    dialect: DialectArg,
    /// The message id of a message or status event (a fresh one by default, so that each send
    /// is a new event).
    #[arg(long, value_name = "ID")]
    message_id: Option<String>,
    /// Sets a JSON value in the sample, at a JSON pointer: `/data/body=Hi` or
    /// `/data/error_code=131047` (values that parse as JSON are JSON, others strings).
    #[arg(long, value_name = "POINTER=VALUE")]
    set: Vec<String>,
    /// Sends this file's bytes instead of a sample, signed as they are.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["event", "message_id", "set", "again"])]
    body: Option<PathBuf>,
    /// The signature header; by default the dialect's own.
    #[arg(long, value_enum)]
    header: Option<HeaderArg>,
    /// How to write the digest; by default as the platform does in that header.
    #[arg(long, value_enum)]
    form: Option<FormArg>,
    /// Sends the last delivery again, byte for byte, as the platform's redelivery does.
    #[arg(long)]
    again: bool,
    /// Signs with a wrong secret, to see the receiver refuse it.
    #[arg(long, conflicts_with = "mock_signature")]
    forged: bool,
    /// Sends the docs' placeholder `sha256=MOCK_SIGNATURE` as the signature.
    #[arg(long)]
    mock_signature: bool,
    /// Retries as the platform does: a non-200 answer (or none within the timeout) is retried
    /// after 10 s, 60 s and 5 min.
    #[arg(long)]
    retries: bool,
    /// Divides the platform's retry waits and its timeout by this, for tests and demos. The
    /// timeout stays at least 1 s: an endpoint that needs longer than a scaled-down 25 ms is
    /// not failing, and its retries would be the tool's doing, not the platform's.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    time_scale: u32,
    /// Where the last delivery is kept for `--again`.
    #[arg(long, env = "AISOULE_WEBHOOKS_STATE", value_name = "FILE")]
    state: Option<PathBuf>,
    #[command(flatten)]
    secret: SecretArgs,
}

/// The payload dialect, as a command-line value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum DialectArg {
    /// `message.incoming`, ISO-8601 timestamps, `X-Webhook-Signature` in hex.
    Help,
    /// `message.received`, unix seconds, `X-AISoule-Signature: sha256=…`.
    Developer,
}

/// A delivery as kept for `--again`: the exact bytes and header.
#[derive(Debug, Serialize, Deserialize)]
struct Saved {
    header: String,
    value: String,
    body: String,
}

/// Runs `send`.
pub(crate) async fn run(args: SendArgs, json_output: bool) -> Result<(), CliError> {
    let url = Url::parse(&args.url)?;
    let state = args.state.clone().unwrap_or_else(default_state);
    let (header_name, value, body, label) = if args.again {
        let bytes = read_file(&state).map_err(|e| match e {
            CliError::Read { path, .. } => CliError::Usage(format!(
                "--again: no earlier delivery to send again ({} is missing)",
                path.display()
            )),
            other => other,
        })?;
        let saved: Saved = serde_json::from_slice(&bytes).map_err(|e| {
            CliError::Usage(format!("--again: {} is unreadable: {e}", state.display()))
        })?;
        (
            saved.header,
            saved.value,
            Bytes::from(saved.body),
            "redelivery".to_owned(),
        )
    } else {
        let secret = args.secret.secret()?;
        let (delivery, label) = build(&args, secret)?;
        let header = args.header.unwrap_or(match args.dialect {
            DialectArg::Help => HeaderArg::Webhook,
            DialectArg::Developer => HeaderArg::Aisoule,
        });
        (
            header.display_name().to_owned(),
            delivery.signature_value().to_owned(),
            delivery.body().clone(),
            label,
        )
    };
    let value = if args.forged {
        let wrong = WebhookSecret::new("whsec_forged_by_aisoule_webhooks_cli").expect("valid");
        let form = if value.starts_with("sha256=") {
            SignatureForm::Prefixed
        } else {
            SignatureForm::Hex
        };
        header_value(&sign(&wrong, &body), form)
    } else if args.mock_signature {
        "sha256=MOCK_SIGNATURE".to_owned()
    } else {
        value
    };
    if !args.again {
        let saved = Saved {
            header: header_name.clone(),
            value: value.clone(),
            body: String::from_utf8_lossy(&body).into_owned(),
        };
        save(&state, &saved)?;
    }

    let rules = if args.retries {
        PlatformRules::documented()
    } else {
        PlatformRules {
            retries: Vec::new(),
            ..PlatformRules::documented()
        }
    }
    .scaled_down(args.time_scale)
    .with_timeout_at_least(MIN_SCALED_TIMEOUT);
    let headers = vec![
        ("Content-Type".to_owned(), "application/json".to_owned()),
        (header_name.clone(), value),
    ];
    let client = Client::new();
    let mut attempts = Vec::new();
    let mut waits = rules.retries.iter();
    let mut delivered = false;
    loop {
        let number = attempts.len() + 1;
        let outcome = client
            .post(&url, &headers, body.clone(), rules.timeout)
            .await;
        let success = matches!(&outcome, Ok(answer) if answer.status == 200);
        if !json_output {
            match &outcome {
                Ok(answer) => eprintln!(
                    "attempt {number}: {} {} ({} ms){}",
                    answer.status,
                    answer.body.trim(),
                    answer.latency.as_millis(),
                    hint(answer.status)
                ),
                // Without retries, the error line below says it.
                Err(e) if args.retries => eprintln!("attempt {number}: {e}"),
                Err(_) => {}
            }
        }
        attempts.push(outcome);
        if success {
            delivered = true;
            break;
        }
        let Some(wait) = waits.next() else { break };
        if !json_output {
            eprintln!("retrying in {} ms, as the platform would", wait.as_millis());
        }
        tokio::time::sleep(*wait).await;
    }

    if !args.retries
        && let [Err(error)] = attempts.as_mut_slice()
    {
        // One attempt that got no answer: that is the error line.
        return Err(std::mem::replace(error, CliError::Reported));
    }
    if json_output {
        let line = json!({
            "url": url.to_string(),
            "delivery": label,
            "header": header_name,
            "delivered": delivered,
            "attempts": attempts.iter().enumerate().map(|(i, a)| match a {
                Ok(answer) => json!({
                    "number": i + 1, "status": answer.status, "body": answer.body,
                    "latency_ms": answer.latency.as_millis() as u64,
                }),
                Err(e) => json!({ "number": i + 1, "error": e.to_string() }),
            }).collect::<Vec<_>>(),
        });
        println!("{line}");
    } else {
        let verdict = if delivered {
            "delivered"
        } else {
            "not delivered"
        };
        println!(
            "{verdict}: {label} to {url} ({} attempt(s))",
            attempts.len()
        );
    }
    if delivered {
        Ok(())
    } else {
        Err(CliError::Reported)
    }
}

/// What a non-200 answer from a receiver built with this crate most likely means.
fn hint(status: u16) -> &'static str {
    match status {
        401 => " — the signature was refused: is the secret the receiver's?",
        400 => " — not accepted as an event (stale timestamp or not an AISoule payload)",
        409 => " — another delivery of this event is in flight",
        _ => "",
    }
}

fn build(args: &SendArgs, secret: WebhookSecret) -> Result<(Delivery, String), CliError> {
    let header = args.header.unwrap_or(match args.dialect {
        DialectArg::Help => HeaderArg::Webhook,
        DialectArg::Developer => HeaderArg::Aisoule,
    });
    let form = args.form.map_or(header.usual_form(), FormArg::form);
    if let Some(path) = &args.body {
        let body = read_file(path)?;
        let delivery = Delivery::signed(body.into(), &secret, header.header(), form);
        return Ok((delivery, format!("the body of {}", path.display())));
    }
    let kind = EventKind::from_name(&args.event);
    if let EventKind::Unknown(name) = &kind {
        return Err(CliError::Usage(format!(
            "--event {name:?} is not a documented event; see `aisoule-webhooks send --help`"
        )));
    }
    let dialect = match args.dialect {
        DialectArg::Help => Dialect::Help,
        DialectArg::Developer => Dialect::Developer,
    };
    let mut builder = Delivery::sample(kind.clone(), dialect)
        .secret(secret)
        .header(header.header())
        .form(form);
    let mut label = kind.as_str().to_owned();
    if kind.as_str().starts_with("message.") {
        let id = args.message_id.clone().unwrap_or_else(fresh_id);
        label = format!("{label} {id}");
        builder = builder.message_id(id);
    }
    for assignment in &args.set {
        let (pointer, value) = assignment.split_once('=').ok_or_else(|| {
            CliError::Usage(format!(
                "--set {assignment:?}: expected POINTER=VALUE, such as /data/body=Hi"
            ))
        })?;
        if !pointer.starts_with('/') {
            return Err(CliError::Usage(format!(
                "--set {assignment:?}: the pointer must start with `/`, such as /data/body"
            )));
        }
        let value = serde_json::from_str::<Value>(value).unwrap_or_else(|_| Value::from(value));
        builder = builder.set(pointer, value);
    }
    Ok((builder.build(), label))
}

/// A message id no earlier send used: the time in nanoseconds.
fn fresh_id() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_nanos();
    format!("msg_cli_{nanos}")
}

fn default_state() -> PathBuf {
    let base = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".local/state")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("aisoule-webhooks").join("last-delivery.json")
}

fn save(path: &std::path::Path, saved: &Saved) -> Result<(), CliError> {
    let write = |source| CliError::Write {
        path: path.to_path_buf(),
        source,
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(write)?;
    }
    let text = serde_json::to_vec(saved).expect("strings serialize");
    std::fs::write(path, text).map_err(write)
}
