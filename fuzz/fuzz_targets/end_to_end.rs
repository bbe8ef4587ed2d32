//! A structure-aware delivery, signed, mutated and sent through the tower layer.
//!
//! Asserts: the status is always one of 200, 400, 401, 409, 413, 503; a correctly signed,
//! unmutated delivery is never 401; any change to the signed bytes is 401.
#![no_main]

use std::sync::{Arc, OnceLock};
use std::time::{Duration, UNIX_EPOCH};

use aisoule_webhooks::axum::WebhookLayer;
use aisoule_webhooks::clock::ManualClock;
use aisoule_webhooks::test_util::{
    Delivery, SignatureForm, SignatureHeader, test_secret, test_verifier,
};
use aisoule_webhooks::{BodyLimit, Receiver};
use arbitrary::Arbitrary;
use axum::Router;
use axum::http::StatusCode;
use axum::routing::post;
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value, json};
use tower::ServiceExt;

const NOW: u64 = 1_780_369_298;
const LIMIT: usize = 16 * 1024;

#[derive(Arbitrary, Debug)]
enum Kind {
    Incoming,
    Sent,
    Delivered,
    Read,
    Failed,
    ContactCreated,
    ContactUpdated,
    Campaign,
    Transfer,
    Unknown(String),
}

#[derive(Arbitrary, Debug)]
enum TimestampForm {
    Absent,
    Rfc3339 { offset_secs: i16 },
    Unix { offset_secs: i32 },
    UnixText { offset_secs: i32 },
    Garbage(String),
}

#[derive(Arbitrary, Debug)]
enum HeaderMutation {
    None,
    Uppercase,
    BothHeaders,
    FlipDigit(u8),
    Truncate(u8),
    Replace(String),
    Drop,
}

#[derive(Arbitrary, Debug)]
enum BodyMutation {
    None,
    FlipBit(u16),
    Append(u8),
    Truncate(u16),
}

#[derive(Arbitrary, Debug)]
struct Input {
    developer: bool,
    kind: Kind,
    message_id: String,
    timestamp: TimestampForm,
    extra: Vec<(String, String)>,
    prefixed: bool,
    aisoule_header: bool,
    header: HeaderMutation,
    body: BodyMutation,
}

fn payload(input: &Input) -> Value {
    let name = match &input.kind {
        Kind::Incoming if input.developer => "message.received".to_owned(),
        Kind::Incoming => "message.incoming".to_owned(),
        Kind::Sent => "message.sent".to_owned(),
        Kind::Delivered => "message.delivered".to_owned(),
        Kind::Read => "message.read".to_owned(),
        Kind::Failed => "message.failed".to_owned(),
        Kind::ContactCreated => "contact.created".to_owned(),
        Kind::ContactUpdated => "contact.updated".to_owned(),
        Kind::Campaign => "campaign.completed".to_owned(),
        Kind::Transfer => "transfer.created".to_owned(),
        Kind::Unknown(name) => name.clone(),
    };
    let mut data = Map::new();
    data.insert("message_id".into(), json!(input.message_id));
    let (from, text) = if input.developer {
        ("sender", "body")
    } else {
        ("from", "text")
    };
    data.insert(from.into(), json!("918856879188"));
    data.insert(text.into(), json!("hello"));
    data.insert("type".into(), json!("text"));
    data.insert("id".into(), json!("uuid"));
    data.insert("contact_id".into(), json!("uuid"));
    for (key, value) in input.extra.iter().take(8) {
        data.insert(key.clone(), json!(value));
    }
    let mut body = json!({"event": name, "data": data});
    let at = |offset: i64| NOW as i64 + offset;
    let timestamp = match &input.timestamp {
        TimestampForm::Absent => None,
        TimestampForm::Rfc3339 { offset_secs } => {
            aisoule_webhooks::event::Timestamp::from_unix_seconds(at(i64::from(*offset_secs)))
                .map(|t| json!(t.to_rfc3339()))
        }
        TimestampForm::Unix { offset_secs } => Some(json!(at(i64::from(*offset_secs)))),
        TimestampForm::UnixText { offset_secs } => {
            Some(json!(at(i64::from(*offset_secs)).to_string()))
        }
        TimestampForm::Garbage(text) => Some(json!(text)),
    };
    if let Some(timestamp) = timestamp {
        body["timestamp"] = timestamp;
    }
    body
}

fn app() -> &'static Router {
    static APP: OnceLock<Router> = OnceLock::new();
    APP.get_or_init(|| {
        let receiver = Receiver::builder(test_verifier())
            .clock(Arc::new(ManualClock::new(
                UNIX_EPOCH + Duration::from_secs(NOW),
            )))
            .body_limit(BodyLimit::bytes(LIMIT))
            .build()
            .expect("consistent");
        Router::new()
            .route("/webhook", post(|| async { StatusCode::OK }))
            .layer(WebhookLayer::new(receiver))
    })
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            // The lifecycle renews claims on tokio's timer.
            .enable_time()
            .build()
            .expect("a runtime")
    })
}

fuzz_target!(|input: Input| {
    let header = if input.aisoule_header {
        SignatureHeader::AisouleSignature
    } else {
        SignatureHeader::WebhookSignature
    };
    let form = if input.prefixed {
        SignatureForm::Prefixed
    } else {
        SignatureForm::Hex
    };
    let signed_body = Bytes::from(serde_json::to_vec(&payload(&input)).expect("serializes"));
    let signed = Delivery::signed(signed_body.clone(), &test_secret(), header, form);

    let mut body = signed_body.to_vec();
    match input.body {
        BodyMutation::None => {}
        BodyMutation::FlipBit(bit) => {
            let index = usize::from(bit / 8) % body.len();
            body[index] ^= 1 << (bit % 8);
        }
        BodyMutation::Append(byte) => body.push(byte),
        BodyMutation::Truncate(by) => {
            body.truncate(body.len().saturating_sub(usize::from(by).max(1)))
        }
    }
    let body_changed = body != signed_body.as_ref();

    let value = signed.signature_value().to_owned();
    let digest = value.trim_start_matches("sha256=").to_owned();
    let mut request = http::Request::post("/webhook");
    let mut signature_intact = true;
    match &input.header {
        HeaderMutation::None => request = request.header(header.name(), &value),
        HeaderMutation::Uppercase => request = request.header(header.name(), value.to_uppercase()),
        HeaderMutation::BothHeaders => {
            request = request
                .header(SignatureHeader::WebhookSignature.name(), &digest)
                .header(
                    SignatureHeader::AisouleSignature.name(),
                    format!("sha256={digest}"),
                );
        }
        HeaderMutation::FlipDigit(at) => {
            let mut bytes = digest.clone().into_bytes();
            let i = usize::from(*at) % bytes.len();
            bytes[i] = if bytes[i] == b'0' { b'1' } else { b'0' };
            request = request.header(header.name(), String::from_utf8(bytes).expect("ascii"));
            signature_intact = false;
        }
        HeaderMutation::Truncate(by) => {
            let keep = digest.len().saturating_sub(usize::from(*by).max(1));
            request = request.header(header.name(), &digest[..keep]);
            signature_intact = false;
        }
        HeaderMutation::Replace(text) => {
            let Ok(replacement) = http::HeaderValue::from_str(text) else {
                return;
            };
            signature_intact = text
                .trim()
                .trim_start_matches("sha256=")
                .eq_ignore_ascii_case(&digest);
            request = request.header(header.name(), replacement);
        }
        HeaderMutation::Drop => signature_intact = false,
    }
    let request = request
        .body(axum::body::Body::from(body.clone()))
        .expect("a request");
    let status = runtime()
        .block_on(app().clone().oneshot(request))
        .expect("infallible")
        .status()
        .as_u16();

    assert!(
        matches!(status, 200 | 400 | 401 | 409 | 413 | 503),
        "status {status} for {input:?}"
    );
    let oversized = body.len() > LIMIT;
    if signature_intact && !body_changed && !oversized {
        assert_ne!(
            status, 401,
            "a correctly signed delivery was refused: {input:?}"
        );
    }
    if body_changed && !oversized {
        assert_eq!(status, 401, "changed bytes were accepted: {input:?}");
    }
});
