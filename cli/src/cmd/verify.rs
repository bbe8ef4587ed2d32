//! `verify`: does a captured request's signature match, and if not, why not.

use std::path::PathBuf;
use std::time::SystemTime;

use aisoule_webhooks::{Event, Receiver, Verifier, VerifyError, WebhookSecret};
use clap::Args;
use serde_json::{Value, json};

use crate::error::CliError;
use crate::input::{SecretArgs, read_file};
use crate::reformat::{Layout, reformat};

/// Arguments of `verify`.
#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  # headers and body saved separately (one `Name: value` per line)
  aisoule-webhooks verify --headers headers.txt --body body.json
  # the signature value from your logs
  aisoule-webhooks verify --signature 'sha256=9f2c…' --body body.json
  # a raw HTTP request, as captured by `nc -l 8080 > request.http`
  aisoule-webhooks verify --request request.http

Exit status: 0 when the signature matches, 1 when it does not.")]
pub(crate) struct VerifyArgs {
    /// A raw HTTP request: request line, headers, blank line, body.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["body", "headers"])]
    request: Option<PathBuf>,
    /// The body, exactly as received (`-` for stdin).
    #[arg(long, value_name = "FILE", required_unless_present = "request")]
    body: Option<PathBuf>,
    /// The request headers, one `Name: value` per line.
    #[arg(long, value_name = "FILE", conflicts_with = "signature")]
    headers: Option<PathBuf>,
    /// The signature header's value, when you have it alone.
    #[arg(long, value_name = "VALUE")]
    signature: Option<String>,
    #[command(flatten)]
    secret: SecretArgs,
}

/// One alternative reading of the request that was tried, and whether it matched.
struct Check {
    name: &'static str,
    matches: bool,
    /// What was tried, in a few words.
    variant: String,
    /// What a match means, and what to do.
    meaning: String,
}

/// Runs `verify`.
pub(crate) fn run(args: VerifyArgs, json_output: bool) -> Result<(), CliError> {
    let (headers, body) = match &args.request {
        Some(path) => split_request(&read_file(path)?),
        None => {
            let body = read_file(args.body.as_deref().expect("clap requires it"))?;
            let headers = match &args.headers {
                Some(path) => parse_headers(&String::from_utf8_lossy(&read_file(path)?)),
                None => Vec::new(),
            };
            (headers, body)
        }
    };
    let mut notes: Vec<String> = Vec::new();
    let mut signatures: Vec<(String, String)> = headers
        .iter()
        .filter(|(name, _)| is_signature_header(name))
        .cloned()
        .collect();
    if let Some(value) = args.signature {
        signatures.push(("X-Webhook-Signature".to_owned(), value));
    }
    for (name, _) in headers.iter().filter(|(name, _)| {
        let lower = name.to_ascii_lowercase();
        !is_signature_header(name) && (lower.contains("signature") || lower.contains("hmac"))
    }) {
        notes.push(format!(
            "the header {name} is not one AISoule sends: receivers read only X-Webhook-Signature \
             and X-AISoule-Signature"
        ));
    }

    let raw = args.secret.raw()?;
    let trimmed = raw.0.trim();
    let secret = WebhookSecret::from_bytes(raw.0.as_bytes())?;
    if WebhookSecret::new(raw.0.clone()).is_err() {
        notes.push(
            "the secret you gave starts or ends with whitespace; receivers built with this crate \
             refuse such a secret"
                .to_owned(),
        );
    }
    let verifier = Verifier::new(secret);
    let values: Vec<&[u8]> = signatures.iter().map(|(_, v)| v.as_bytes()).collect();
    let result = verifier.verify_values(values.iter().copied(), &body);

    let mut checks = Vec::new();
    if matches!(result, Err(VerifyError::Mismatch)) {
        checks = diagnose(&values, &body, trimmed, &raw.0);
    }
    if let Err(VerifyError::Placeholder) = result {
        notes.push(
            "MOCK_SIGNATURE comes from the docs' curl sample; `aisoule-webhooks sign` prints \
             the real header for a body"
                .to_owned(),
        );
    }
    if matches!(result, Err(VerifyError::Mismatch)) && !checks.iter().any(|c| c.matches) {
        notes.push(
            "no re-formatting of the body nor trimming of the secret matches: the body was \
             signed with another secret, or changed in transit beyond white space"
                .to_owned(),
        );
    }
    let event = event_summary(&body, &mut notes, result.is_ok());

    let header_names: Vec<&str> = signatures.iter().map(|(n, _)| n.as_str()).collect();
    if json_output {
        let line = json!({
            "valid": result.is_ok(),
            "error": result.as_ref().err().map(ToString::to_string),
            "signature_headers": header_names,
            "checks": checks.iter().map(|c| json!({
                "check": c.name, "matches": c.matches, "variant": c.variant, "meaning": c.meaning,
            })).collect::<Vec<_>>(),
            "notes": notes,
            "event": event,
        });
        println!("{line}");
    } else {
        match &result {
            Ok(_) => println!("✓ signature matches ({})", header_names.join(", ")),
            Err(error) => println!("✗ signature does not match: {error}"),
        }
        for check in checks.iter().filter(|c| c.matches) {
            println!("  ✓ but it matches {}: {}", check.variant, check.meaning);
        }
        let tried: Vec<&str> = checks
            .iter()
            .filter(|c| !c.matches)
            .map(|c| c.variant.as_str())
            .collect();
        if !tried.is_empty() {
            println!("  · no match for {}", tried.join("; "));
        }
        for note in &notes {
            println!("  note: {note}");
        }
        if let Some(event) = event {
            println!("  event: {event}");
        }
    }
    if result.is_ok() {
        Ok(())
    } else {
        Err(CliError::Reported)
    }
}

fn is_signature_header(name: &str) -> bool {
    name.eq_ignore_ascii_case("x-webhook-signature")
        || name.eq_ignore_ascii_case("x-aisoule-signature")
}

/// Tries the usual accidents, one at a time, against the same signature values.
fn diagnose(values: &[&[u8]], body: &[u8], trimmed_secret: &str, secret: &str) -> Vec<Check> {
    let mut variants: Vec<(&'static str, Option<Vec<u8>>, &'static str, String)> = Vec::new();
    let stripped = body
        .strip_suffix(b"\r\n")
        .or_else(|| body.strip_suffix(b"\n"))
        .map(<[u8]>::to_vec);
    variants.push((
        "trailing_newline_stripped",
        stripped,
        "the body without its trailing newline",
        "an editor or `echo` added the newline after signing".to_owned(),
    ));
    let mut added = body.to_vec();
    added.push(b'\n');
    variants.push((
        "trailing_newline_added",
        Some(added),
        "the body with a trailing newline",
        "the capture dropped the body's last newline".to_owned(),
    ));
    if body.contains(&b'\r') {
        let lf: Vec<u8> = String::from_utf8_lossy(body)
            .replace("\r\n", "\n")
            .into_bytes();
        variants.push((
            "crlf_to_lf",
            Some(lf),
            "the body with LF line ends",
            "something turned the body's LF line ends into CRLF".to_owned(),
        ));
    }
    for (name, layout, meaning) in [
        (
            "reserialised_compact",
            Layout::Compact,
            "the body re-serialised compactly",
        ),
        (
            "reserialised_spaced",
            Layout::Spaced,
            "the body re-serialised with `, ` and `: ` (Python's json.dumps)",
        ),
        (
            "reserialised_pretty_2",
            Layout::Pretty(2),
            "the body pretty-printed with 2 spaces",
        ),
        (
            "reserialised_pretty_4",
            Layout::Pretty(4),
            "the body pretty-printed with 4 spaces",
        ),
    ] {
        let variant = reformat(body, layout).filter(|v| v != body);
        variants.push((
            name,
            variant,
            meaning,
            "the body you checked was re-formatted after it was signed; verify the raw bytes, \
             before any JSON parsing"
                .to_owned(),
        ));
    }
    if let Ok(value) = serde_json::from_slice::<Value>(body) {
        let sorted = serde_json::to_vec(&value).ok().filter(|v| v != body);
        variants.push((
            "reserialised_sorted",
            sorted,
            "the body re-serialised with sorted keys",
            "the body was parsed and re-encoded after it was signed; verify the raw bytes"
                .to_owned(),
        ));
    }
    let verifier = WebhookSecret::from_bytes(secret.as_bytes())
        .map(Verifier::new)
        .expect("the secret was accepted before");
    // Each distinct body once, under the first (most likely) explanation.
    let mut seen: Vec<Vec<u8>> = Vec::new();
    let mut checks: Vec<Check> = variants
        .into_iter()
        .filter_map(|(name, bytes, variant, meaning)| {
            let bytes = bytes.filter(|v| !seen.contains(v))?;
            seen.push(bytes.clone());
            Some(Check {
                name,
                matches: verifier
                    .verify_values(values.iter().copied(), &bytes)
                    .is_ok(),
                variant: variant.to_owned(),
                meaning,
            })
        })
        .collect();
    if trimmed_secret != secret && !trimmed_secret.is_empty() {
        let trimmed = WebhookSecret::new(trimmed_secret).map(Verifier::new);
        if let Ok(trimmed) = trimmed {
            checks.push(Check {
                name: "secret_trimmed",
                matches: trimmed.verify_values(values.iter().copied(), body).is_ok(),
                variant: "the secret without its surrounding whitespace".to_owned(),
                meaning: "a newline or space came with the secret from a file or an \
                          environment variable; remove it"
                    .to_owned(),
            });
        }
    }
    checks
}

/// The event's kind and freshness, as a receiver would see them after the signature.
fn event_summary(body: &[u8], notes: &mut Vec<String>, valid: bool) -> Option<Value> {
    let event = match Event::parse(body) {
        Ok(event) => event,
        Err(e) => {
            if valid {
                notes.push(format!(
                    "a receiver would answer 400: not an AISoule event: {}",
                    aisoule_webhooks::error::chain(&e)
                ));
            }
            return None;
        }
    };
    let mut summary = json!({ "event": event.kind().as_str(), "received_as": event.received_as() });
    if let Some(id) = event.message_id() {
        summary["message_id"] = json!(id);
    }
    if let Some(at) = event.timestamp() {
        summary["timestamp"] = json!(at.to_rfc3339());
        let age = SystemTime::now()
            .duration_since(at.to_system_time())
            .or_else(|e| Ok::<_, ()>(e.duration()))
            .unwrap_or_default();
        let tolerance = Receiver::DEFAULT_REPLAY_TOLERANCE;
        if age > tolerance && valid {
            notes.push(format!(
                "the event's timestamp is {} s from now, beyond the default {} s replay \
                 tolerance: a receiver would answer 400 \"stale event\" (send a fresh one with \
                 `aisoule-webhooks send`, or `replay --restamp`)",
                age.as_secs(),
                tolerance.as_secs()
            ));
        }
    }
    Some(summary)
}

/// `Name: value` lines; curl's `-v` markers (`> `) and blank lines are skipped.
pub(crate) fn parse_headers(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(|line| line.trim_start_matches("> ").trim_end_matches('\r'))
        .filter_map(|line| {
            let (name, value) = line.split_once(':')?;
            let name = name.trim();
            (!name.is_empty() && !name.contains(' '))
                .then(|| (name.to_owned(), value.trim().to_owned()))
        })
        .collect()
}

/// A raw request into headers and body, the body cut at `Content-Length` when present.
fn split_request(raw: &[u8]) -> (Vec<(String, String)>, Vec<u8>) {
    let (head, body) = match find(raw, b"\r\n\r\n") {
        Some(at) => (&raw[..at], &raw[at + 4..]),
        None => match find(raw, b"\n\n") {
            Some(at) => (&raw[..at], &raw[at + 2..]),
            None => (raw, &raw[raw.len()..]),
        },
    };
    let head = String::from_utf8_lossy(head);
    // The request line has no colon before its first space; `parse_headers` drops it.
    let headers = parse_headers(&head);
    let declared = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse::<usize>().ok());
    let body = match declared {
        Some(length) if length <= body.len() => &body[..length],
        _ => body,
    };
    (headers, body.to_vec())
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
