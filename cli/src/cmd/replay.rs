//! `replay`: sends recorded deliveries again, as recorded or re-signed and re-stamped.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use aisoule_webhooks::event::Timestamp;
use aisoule_webhooks::sign;
use bytes::Bytes;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};

use crate::client::{Client, Url};
use crate::error::CliError;
use crate::input::SecretArgs;
use crate::record;

/// Arguments of `replay`.
#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  aisoule-webhooks listen --record deliveries.jsonl          # in one terminal
  aisoule-webhooks replay deliveries.jsonl http://127.0.0.1:3000/webhook
  # recorded long ago: today's timestamp, signed again with your secret
  AISOULE_WEBHOOK_SECRET=whsec_… aisoule-webhooks replay --restamp deliveries.jsonl http://127.0.0.1:3000/webhook

Exit status: 0 when every delivery was answered 200, 1 otherwise.")]
pub(crate) struct ReplayArgs {
    /// A recording made by `listen --record`.
    #[arg(value_name = "FILE")]
    recording: PathBuf,
    /// Where to send the deliveries.
    url: String,
    /// Signs each body again with the secret (needed when the receiver has another secret).
    #[arg(long)]
    resign: bool,
    /// Sets each event's timestamp to now (keeping its form), and so signs it again.
    #[arg(long)]
    restamp: bool,
    /// Only the deliveries `listen` handled (not the duplicates and refusals it recorded).
    #[arg(long)]
    only_handled: bool,
    #[command(flatten)]
    secret: SecretArgs,
}

/// Runs `replay`.
pub(crate) async fn run(args: ReplayArgs, json_output: bool) -> Result<(), CliError> {
    let url = Url::parse(&args.url)?;
    let mut deliveries = record::read(&args.recording)?;
    if args.only_handled {
        deliveries.retain(|d| d.verdict == "handled");
    }
    let secret = if args.resign || args.restamp {
        Some(args.secret.secret()?)
    } else {
        None
    };
    let client = Client::new();
    let progress = if json_output {
        ProgressBar::hidden()
    } else {
        // Drawn on stderr only when it is a terminal.
        ProgressBar::new(deliveries.len() as u64).with_style(
            ProgressStyle::with_template("{bar:40} {pos}/{len} {msg}").expect("a valid template"),
        )
    };
    let mut results = Vec::new();
    let mut all_ok = true;
    for (i, delivery) in deliveries.iter().enumerate() {
        let mut body = delivery.body();
        if args.restamp {
            body = restamp(&body).ok_or_else(|| CliError::Record {
                path: args.recording.clone(),
                line: i + 1,
                reason: "--restamp needs a JSON object body".to_owned(),
            })?;
        }
        let mut headers = delivery.headers.clone();
        if let Some(secret) = &secret {
            let signature = sign(secret, &body);
            let mut signed = false;
            for (name, value) in headers.iter_mut() {
                if name.ends_with("-signature") {
                    *value = if value.starts_with("sha256=") {
                        signature.to_prefixed()
                    } else {
                        signature.to_hex()
                    };
                    signed = true;
                }
            }
            if !signed {
                headers.push(("X-AISoule-Signature".to_owned(), signature.to_prefixed()));
            }
        }
        let answer = match client
            .post(&url, &headers, Bytes::from(body), Duration::from_secs(5))
            .await
        {
            Ok(answer) => answer,
            Err(e) => {
                // No answer at all (refused, timed out): the rest would fare no better.
                progress.finish_and_clear();
                return Err(e);
            }
        };
        all_ok &= answer.status == 200;
        progress.set_message(format!("{} {}", answer.status, answer.body.trim()));
        results.push(json!({ "line": i + 1, "status": answer.status, "body": answer.body }));
        progress.inc(1);
    }
    progress.finish_and_clear();
    if json_output {
        println!(
            "{}",
            json!({ "url": url.to_string(), "sent": results.len(), "all_ok": all_ok, "results": results })
        );
    } else {
        for result in &results {
            let body = result["body"].as_str().unwrap_or("").trim();
            println!("line {}: {} {body}", result["line"], result["status"]);
        }
        let ok = results
            .iter()
            .filter(|r| r.get("status") == Some(&json!(200)))
            .count();
        println!("{ok} of {} answered 200", results.len());
    }
    if all_ok {
        Ok(())
    } else {
        Err(CliError::Reported)
    }
}

/// `body` with its top-level `timestamp` set to now, in the form it had (unix seconds, or
/// RFC 3339 text); a body without one gets none.
fn restamp(body: &[u8]) -> Option<Vec<u8>> {
    let mut value: Value = serde_json::from_slice(body).ok()?;
    let object = value.as_object_mut()?;
    let now = Timestamp::from_system_time(SystemTime::now())?;
    if let Some(timestamp) = object.get_mut("timestamp") {
        *timestamp = match timestamp {
            Value::Number(_) => json!(now.unix_seconds()),
            _ => json!(Timestamp::from_unix_seconds(now.unix_seconds())?.to_rfc3339()),
        };
    }
    serde_json::to_vec(&value).ok()
}
