//! `listen`: a local receiver that verifies, prints, records and forwards each delivery.

use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use aisoule_webhooks::axum::WebhookLayer;
use aisoule_webhooks::event::Timestamp;
use aisoule_webhooks::{Event, Receiver, VerifiedEvent, Verifier, sign};
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use clap::Args;
use serde_json::{Map, Value, json};

use crate::client::{Client, Url};
use crate::error::CliError;
use crate::input::{SecretArgs, parse_duration};
use crate::record::{KEPT_HEADERS, Recorded};

/// Arguments of `listen`.
#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  export AISOULE_WEBHOOK_SECRET=whsec_…
  aisoule-webhooks listen                                  # http://127.0.0.1:8080/webhook
  aisoule-webhooks listen --port 9000 --record deliveries.jsonl
  aisoule-webhooks listen --forward http://127.0.0.1:3000/webhook   # your app, re-signed
  aisoule-webhooks listen --json | jq .event

Each delivery is printed on stdout (pretty JSON, the typed summary and the verdict; one JSON
object per line with --json). The address is printed on stderr once listening.")]
pub(crate) struct ListenArgs {
    /// The port (0 picks a free one).
    #[arg(long, short, default_value_t = 8080)]
    port: u16,
    /// The address to bind.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// The webhook route.
    #[arg(long, default_value = "/webhook")]
    path: String,
    /// Appends every delivery (headers, exact body, verdict) to this JSON Lines file.
    #[arg(long, value_name = "FILE")]
    record: Option<PathBuf>,
    /// Forwards each verified delivery, re-signed, to this URL, and answers with its status.
    #[arg(long, value_name = "URL")]
    forward: Option<String>,
    /// How far an event's timestamp may be from now (90s, 15m, 1h).
    #[arg(long, value_parser = parse_duration, default_value = "1h")]
    tolerance: Duration,
    #[command(flatten)]
    secret: SecretArgs,
}

/// Marks a response the handler produced: the event was handed to it.
#[derive(Debug, Clone)]
struct Handled {
    forwarded: Option<Result<u16, String>>,
}

struct Listener {
    json: bool,
    receiver: Receiver,
    record: Option<(PathBuf, Mutex<std::fs::File>)>,
    forward: Option<(Url, Client)>,
    secret: aisoule_webhooks::WebhookSecret,
    stdout: Mutex<()>,
}

/// Runs `listen` until Ctrl-C.
pub(crate) async fn run(args: ListenArgs, json_output: bool) -> Result<(), CliError> {
    let secret = args.secret.secret()?;
    let receiver = Receiver::builder(Verifier::new(secret.clone()))
        .replay_tolerance(args.tolerance)
        .build()?;
    let forward = match &args.forward {
        Some(url) => Some((Url::parse(url)?, Client::new())),
        None => None,
    };
    let record = match &args.record {
        Some(path) => {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|source| CliError::Write {
                    path: path.clone(),
                    source,
                })?;
            Some((path.clone(), Mutex::new(file)))
        }
        None => None,
    };
    if !args.path.starts_with('/') {
        return Err(CliError::Usage(format!(
            "--path {:?} must start with `/`",
            args.path
        )));
    }
    let listener = Arc::new(Listener {
        json: json_output,
        receiver: receiver.clone(),
        record,
        forward,
        secret,
        stdout: Mutex::new(()),
    });
    let app = Router::new()
        .route(&args.path, post(handle).layer(WebhookLayer::new(receiver)))
        .route_layer(axum::middleware::from_fn_with_state(
            listener.clone(),
            observe,
        ))
        .with_state(listener);
    let addr = format!("{}:{}", args.host, args.port);
    let socket = tokio::net::TcpListener::bind(&addr)
        .await
        .map_err(|source| CliError::Bind {
            addr: addr.clone(),
            source,
        })?;
    let local = socket
        .local_addr()
        .map_err(|source| CliError::Bind { addr, source })?;
    eprintln!("listening on http://{local}{}", args.path);
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    axum::serve(socket, app)
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|source| CliError::Bind {
            addr: local.to_string(),
            source,
        })
}

/// The handler: forwards when asked, and marks the response as handled.
async fn handle(
    State(listener): State<Arc<Listener>>,
    // Only the layer puts it there: the handler never runs for an unverified delivery.
    _event: VerifiedEvent,
    body: Bytes,
) -> Response {
    let Some((url, client)) = &listener.forward else {
        return (axum::Extension(Handled { forwarded: None }), StatusCode::OK).into_response();
    };
    // Re-signed with the listener's secret, in the developer page's header.
    let headers = vec![
        ("Content-Type".to_owned(), "application/json".to_owned()),
        (
            "X-AISoule-Signature".to_owned(),
            sign(&listener.secret, &body).to_prefixed(),
        ),
    ];
    let forwarded = client
        .post(url, &headers, body, Duration::from_secs(5))
        .await;
    let status = match &forwarded {
        Ok(answer) => StatusCode::from_u16(answer.status).unwrap_or(StatusCode::BAD_GATEWAY),
        Err(_) => StatusCode::BAD_GATEWAY,
    };
    let handled = Handled {
        forwarded: Some(forwarded.map(|a| a.status).map_err(|e| e.to_string())),
    };
    (axum::Extension(handled), status).into_response()
}

/// Around the webhook layer: keeps the request's bytes, then reports the verdict.
async fn observe(State(listener): State<Arc<Listener>>, request: Request, next: Next) -> Response {
    let (parts, body) = request.into_parts();
    let limit = listener.receiver.body_limit().get().saturating_add(1);
    let bytes = match axum::body::to_bytes(body, limit).await {
        Ok(bytes) => bytes,
        Err(_) => return (StatusCode::PAYLOAD_TOO_LARGE, "payload too large").into_response(),
    };
    let headers: Vec<(String, String)> = parts
        .headers
        .iter()
        .filter(|(name, _)| KEPT_HEADERS.contains(&name.as_str()))
        .map(|(name, value)| {
            (
                name.to_string(),
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
            )
        })
        .collect();
    let path = parts.uri.path().to_owned();
    let response = next
        .run(Request::from_parts(parts, Body::from(bytes.clone())))
        .await;
    let (response_parts, response_body) = response.into_parts();
    let answer = axum::body::to_bytes(response_body, 64 * 1024)
        .await
        .unwrap_or_default();
    let handled = response_parts.extensions.get::<Handled>().cloned();
    let status = response_parts.status.as_u16();
    let answer_text = String::from_utf8_lossy(&answer).into_owned();
    let verdict = match (&handled, status) {
        (Some(_), _) => "handled",
        (None, 200) if answer_text.contains("duplicate") => "duplicate",
        _ => "rejected",
    };
    let reason = (verdict == "rejected").then(|| listener.why(&headers, &bytes, &answer_text));
    listener.report(
        &headers,
        &bytes,
        status,
        verdict,
        reason.as_deref(),
        handled.as_ref(),
    );
    if let Some((path_on_disk, file)) = &listener.record {
        let mut recorded = Recorded {
            received_at: now_rfc3339(),
            path,
            headers,
            body: None,
            body_bytes: None,
            status,
            verdict: verdict.to_owned(),
        };
        recorded.set_body(&bytes);
        let mut line = serde_json::to_vec(&recorded).expect("a recording serializes");
        line.push(b'\n');
        let mut file = file.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = file.write_all(&line).and_then(|()| file.flush()) {
            eprintln!("error: cannot write {}: {e}", path_on_disk.display());
        }
    }
    Response::from_parts(response_parts, Body::from(answer))
}

impl Listener {
    /// Why a delivery was refused, in more detail than the answer's body.
    fn why(&self, headers: &[(String, String)], body: &[u8], answer: &str) -> String {
        let values = headers
            .iter()
            .filter(|(n, _)| n.starts_with("x-") && n.ends_with("-signature"))
            .map(|(_, v)| v.as_bytes());
        // A receiver for one account (the listener builds no other).
        if let Some(verifier) = self.receiver.verifier()
            && let Err(e) = verifier.verify_values(values, body)
        {
            return format!("signature: {e}");
        }
        match Event::parse(body) {
            Err(e) => format!(
                "not an AISoule event: {}",
                aisoule_webhooks::error::chain(&e)
            ),
            Ok(event) => match event.timestamp() {
                Some(at) if age(at) > self.receiver.replay_tolerance() => format!(
                    "stale: the event's timestamp {} is {} s from now, beyond the {} s tolerance (--tolerance)",
                    at.to_rfc3339(),
                    age(at).as_secs(),
                    self.receiver.replay_tolerance().as_secs()
                ),
                _ => answer.trim().to_owned(),
            },
        }
    }

    fn report(
        &self,
        headers: &[(String, String)],
        body: &[u8],
        status: u16,
        verdict: &str,
        reason: Option<&str>,
        handled: Option<&Handled>,
    ) {
        let event = Event::parse(body).ok();
        let summary = event.as_ref().map(summary);
        let forwarded = handled.and_then(|h| h.forwarded.clone());
        let _guard = self.stdout.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = std::io::stdout().lock();
        if self.json {
            let mut line = Map::new();
            line.insert("verdict".into(), json!(verdict));
            line.insert("status".into(), json!(status));
            if let Some(reason) = reason {
                line.insert("reason".into(), json!(reason));
            }
            if let Some(Value::Object(fields)) = summary {
                line.extend(fields);
            }
            match forwarded {
                Some(Ok(status)) => _ = line.insert("forwarded".into(), json!(status)),
                Some(Err(e)) => _ = line.insert("forward_error".into(), json!(e)),
                None => {}
            }
            let signature: Vec<&str> = headers
                .iter()
                .filter(|(n, _)| n.ends_with("-signature"))
                .map(|(n, _)| n.as_str())
                .collect();
            line.insert("signature_headers".into(), json!(signature));
            let body_value = serde_json::from_slice::<Value>(body)
                .unwrap_or_else(|_| json!(String::from_utf8_lossy(body)));
            line.insert("body".into(), body_value);
            let _ = writeln!(out, "{}", Value::Object(line));
        } else {
            let _ = writeln!(
                out,
                "── {status} {verdict}{}",
                reason.map(|r| format!(": {r}")).unwrap_or_default()
            );
            if let Some(Value::Object(fields)) = &summary {
                let text: Vec<String> = fields
                    .iter()
                    .map(|(k, v)| {
                        format!(
                            "{k}={}",
                            v.as_str().map_or_else(|| v.to_string(), str::to_owned)
                        )
                    })
                    .collect();
                let _ = writeln!(out, "   {}", text.join("  "));
            }
            match forwarded {
                Some(Ok(status)) => _ = writeln!(out, "   forwarded: {status}"),
                Some(Err(e)) => _ = writeln!(out, "   forward failed: {e}"),
                None => {}
            }
            match serde_json::from_slice::<Value>(body) {
                Ok(value) => {
                    _ = writeln!(
                        out,
                        "{}",
                        serde_json::to_string_pretty(&value).unwrap_or_default()
                    )
                }
                Err(_) => _ = writeln!(out, "{}", String::from_utf8_lossy(body)),
            }
        }
        let _ = out.flush();
    }
}

/// The typed summary: present fields only (as the example receivers print them).
fn summary(event: &Event) -> Value {
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
    Value::Object(line)
}

fn age(at: Timestamp) -> Duration {
    match SystemTime::now().duration_since(at.to_system_time()) {
        Ok(age) => age,
        Err(ahead) => ahead.duration(),
    }
}

/// Now, in RFC 3339.
pub(crate) fn now_rfc3339() -> String {
    Timestamp::from_system_time(SystemTime::now()).map_or_else(String::new, Timestamp::to_rfc3339)
}
