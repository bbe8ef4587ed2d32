//! The adversarial suite: inputs an attacker controls, each with its expected outcome and why.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use aisoule_webhooks::axum::WebhookLayer;
use aisoule_webhooks::clock::ManualClock;
use aisoule_webhooks::event::{Dialect, EventKind};
use aisoule_webhooks::test_util::{Delivery, SignatureHeader, test_secret, test_verifier};
use aisoule_webhooks::{
    Deduplicator, MemoryStore, Receiver, VerifiedEvent, Verifier, VerifyError, WebhookSecret, sign,
};
use axum::Router;
use axum::http::StatusCode;
use axum::routing::post;
use bytes::Bytes;
use http_body_util::Full;
use proptest::prelude::*;
use tower::ServiceExt;

use crate::e2e::test_now;

type Seen = Arc<Mutex<Vec<VerifiedEvent>>>;

fn app_with(receiver: Receiver) -> (Router, Seen) {
    let seen = Seen::default();
    let record = seen.clone();
    let app = Router::new()
        .route(
            "/webhook",
            post(move |event: VerifiedEvent| {
                let record = record.clone();
                async move {
                    record.lock().unwrap().push(event);
                    StatusCode::OK
                }
            }),
        )
        .layer(WebhookLayer::new(receiver));
    (app, seen)
}

fn fixed_clock_receiver() -> Receiver {
    Receiver::builder(test_verifier())
        .clock(Arc::new(ManualClock::new(test_now())))
        .build()
        .unwrap()
}

fn request(body: impl Into<Bytes>, headers: &[(&str, &[u8])]) -> http::Request<Full<Bytes>> {
    let mut request = http::Request::post("/webhook");
    for (name, value) in headers {
        request = request.header(
            *name,
            http::HeaderValue::from_bytes(value).expect("a header value HTTP allows"),
        );
    }
    request.body(Full::new(body.into())).unwrap()
}

fn signed(body: &[u8]) -> String {
    sign(&test_secret(), body).to_hex()
}

/// One row: what is sent, what must come back, and why.
struct Case {
    name: &'static str,
    request: http::Request<Full<Bytes>>,
    status: StatusCode,
    /// Checked on the event the handler saw, for rows that reach it.
    handled: Option<fn(&VerifiedEvent)>,
    why: &'static str,
}

fn message_body(message_id: &str) -> Vec<u8> {
    format!(
        r#"{{"event":"message.received","timestamp":1780369298,"data":{{"message_id":"{message_id}","sender":"918856879188","type":"text","body":"hi"}}}}"#
    )
    .into_bytes()
}

fn cases() -> Vec<Case> {
    let body = message_body("adv-1");
    let hex = signed(&body);
    let raw_unicode = "{\"event\":\"message.incoming\",\"data\":{\"message_id\":\"adv-u\",\"from\":\"+919876543210\",\"type\":\"text\",\"text\":\"\\u00e9 \u{1F600} \u{2028} \\\" \\\\ \\n\"}}".as_bytes().to_vec();
    let compact = br#"{"event":"message.read","data":{"message_id":"adv-eq"}}"#.to_vec();
    let spaced = br#"{ "event": "message.read", "data": { "message_id": "adv-eq" } }"#.to_vec();
    let non_utf8 = b"{\"event\":\"message.read\",\"data\":{\"message_id\":\"\xff\xfe\"}}".to_vec();
    let depth = 10_000;
    let deep = format!(
        r#"{{"event":"x","data":{}{}}}"#,
        "[".repeat(depth),
        "]".repeat(depth)
    )
    .into_bytes();
    let big_id = br#"{"event":"message.received","data":{"message_id":9007199254740993,"sender":"918856879188","type":"text","body":"hi"}}"#.to_vec();
    let long_value = vec![b'a'; 8 * 1024];

    vec![
        Case {
            name: "header name in mixed case",
            request: request(body.clone(), &[("X-WeBhOoK-SiGnAtUrE", hex.as_bytes())]),
            status: StatusCode::OK,
            handled: Some(|e| assert_eq!(e.message_id(), Some("adv-1"))),
            why: "HTTP header names are case-insensitive",
        },
        Case {
            name: "obs-text bytes (0x80-0xFF) in the value",
            request: request(
                body.clone(),
                &[(
                    "x-webhook-signature",
                    &[b"\xe2\x80\x8b".as_slice(), hex.as_bytes()].concat(),
                )],
            ),
            status: StatusCode::UNAUTHORIZED,
            handled: None,
            why: "a zero-width space before the digest is not a hex digit; nothing is stripped but spaces and tabs",
        },
        Case {
            name: "a tab inside the value",
            request: request(
                body.clone(),
                &[(
                    "x-webhook-signature",
                    format!("{}\t{}", &hex[..32], &hex[32..]).as_bytes(),
                )],
            ),
            status: StatusCode::UNAUTHORIZED,
            handled: None,
            why: "only surrounding whitespace is trimmed",
        },
        Case {
            name: "0x before the digest",
            request: request(
                body.clone(),
                &[("x-webhook-signature", format!("0x{hex}").as_bytes())],
            ),
            status: StatusCode::UNAUTHORIZED,
            handled: None,
            why: "`0x` is not one of the platform's forms",
        },
        Case {
            name: "an 8 KiB value",
            request: request(body.clone(), &[("x-aisoule-signature", &long_value)]),
            status: StatusCode::UNAUTHORIZED,
            handled: None,
            why: "wrong length: rejected without decoding or comparing",
        },
        Case {
            name: "escapes, emoji and U+2028, signed over their raw bytes",
            request: request(
                raw_unicode.clone(),
                &[("x-webhook-signature", signed(&raw_unicode).as_bytes())],
            ),
            status: StatusCode::OK,
            handled: Some(|e| {
                assert_eq!(e.text().as_deref(), Some("é \u{1F600} \u{2028} \" \\ \n"))
            }),
            why: "the MAC covers the bytes as sent; the parser then decodes them",
        },
        Case {
            name: "the same JSON value in other bytes, with the compact form's signature",
            request: request(
                spaced,
                &[("x-webhook-signature", signed(&compact).as_bytes())],
            ),
            status: StatusCode::UNAUTHORIZED,
            handled: None,
            why: "equal values are not equal bytes; only the signed bytes pass",
        },
        Case {
            name: "the compact form with its own signature",
            request: request(
                compact.clone(),
                &[("x-webhook-signature", signed(&compact).as_bytes())],
            ),
            status: StatusCode::OK,
            handled: Some(|e| assert_eq!(e.kind(), &EventKind::MessageRead)),
            why: "the signed bytes pass",
        },
        Case {
            name: "non-UTF-8 bytes with a valid signature",
            request: request(
                non_utf8.clone(),
                &[("x-webhook-signature", signed(&non_utf8).as_bytes())],
            ),
            status: StatusCode::BAD_REQUEST,
            handled: None,
            why: "authentic but not JSON: 400, neither 401 nor 500",
        },
        Case {
            name: "an empty body with a valid signature",
            request: request(
                Bytes::new(),
                &[("x-webhook-signature", signed(b"").as_bytes())],
            ),
            status: StatusCode::BAD_REQUEST,
            handled: None,
            why: "authentic but not an event",
        },
        Case {
            name: "JSON nested 10 000 deep with a valid signature",
            request: request(
                deep.clone(),
                &[("x-webhook-signature", signed(&deep).as_bytes())],
            ),
            status: StatusCode::BAD_REQUEST,
            handled: None,
            why: "the parser's depth limit turns it into an error, not a stack overflow",
        },
        Case {
            name: "a numeric message_id above 2^53",
            request: request(
                big_id.clone(),
                &[("x-webhook-signature", signed(&big_id).as_bytes())],
            ),
            status: StatusCode::OK,
            handled: Some(|e| assert_eq!(e.message_id(), Some("9007199254740993"))),
            why: "kept as its exact digits, not rounded through a float",
        },
    ]
}

#[tokio::test]
async fn every_adversarial_request_gets_its_expected_answer() {
    for case in cases() {
        let (app, seen) = app_with(fixed_clock_receiver());
        let response = app.oneshot(case.request).await.unwrap();
        assert_eq!(
            response.status(),
            case.status,
            "{}: {}",
            case.name,
            case.why
        );
        let seen = seen.lock().unwrap();
        match case.handled {
            Some(check) => {
                assert_eq!(seen.len(), 1, "{}: the handler runs once", case.name);
                check(&seen[0]);
            }
            None => assert!(
                seen.is_empty(),
                "{}: the handler must not run ({})",
                case.name,
                case.why
            ),
        }
    }
}

/// Values no HTTP stack lets through as a header, checked on the verifier directly.
#[test]
fn raw_header_values_that_http_forbids_are_malformed_never_compared() {
    let body = message_body("adv-raw");
    let hex = signed(&body);
    let verifier = Verifier::new(test_secret());
    let cases: Vec<(&str, Vec<u8>, VerifyError)> = vec![
        (
            "CR/LF inside",
            format!("{}\r\n{}", &hex[..32], &hex[32..]).into_bytes(),
            VerifyError::NotHex { position: 32 },
        ),
        (
            "NUL inside",
            format!("{}\0{}", &hex[..10], &hex[11..]).into_bytes(),
            VerifyError::NotHex { position: 10 },
        ),
        (
            "trailing NUL",
            format!("{hex}\0").into_bytes(),
            VerifyError::NotHex { position: 64 },
        ),
        (
            "Arabic-Indic digits",
            "٠١٢٣".repeat(16).into_bytes(),
            VerifyError::NotHex { position: 0 },
        ),
        (
            "fullwidth digits",
            "０".repeat(64).into_bytes(),
            VerifyError::NotHex { position: 0 },
        ),
        (
            "0x prefix",
            format!("0x{hex}").into_bytes(),
            VerifyError::NotHex { position: 1 },
        ),
        (
            "a doubled prefix",
            format!("sha256=sha256={hex}").into_bytes(),
            VerifyError::NotHex { position: 0 },
        ),
        (
            "1 MiB of hex",
            vec![b'a'; 1 << 20],
            VerifyError::WrongLength { digits: 1 << 20 },
        ),
    ];
    for (name, value, expected) in cases {
        assert_eq!(
            verifier.verify_value(&value, &body),
            Err(expected),
            "{name}"
        );
    }
}

fn replay_receiver(clock: Arc<ManualClock>) -> Receiver {
    let store = MemoryStore::new().with_clock(clock.clone());
    Receiver::builder(test_verifier())
        .deduplicator(Deduplicator::new(store))
        .clock(clock)
        .build()
        .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    /// With the defaults (1 h tolerance, 24 h TTL), a replay at any later time is either a
    /// duplicate or stale, never handled twice.
    #[test]
    fn any_replay_is_a_duplicate_or_stale(delay_secs in 0u64..(3 * 24 * 60 * 60)) {
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        runtime.block_on(async {
            let clock = Arc::new(ManualClock::new(test_now()));
            let (app, seen) = app_with(replay_receiver(clock.clone()));
            let delivery = Delivery::sample(EventKind::MessageIncoming, Dialect::Developer)
                .message_id("replayed")
                .timestamp_at(test_now())
                .build();
            let first = app.clone().oneshot(delivery.http_request("/webhook")).await.unwrap();
            prop_assert_eq!(first.status(), StatusCode::OK);

            clock.advance(Duration::from_secs(delay_secs));
            let replay = app.oneshot(delivery.redelivery().http_request("/webhook")).await.unwrap();
            let body = axum::body::to_bytes(replay.into_body(), 1024).await.unwrap();
            let duplicate = body.as_ref() == br#"{"status":"duplicate"}"#;
            let stale = body.as_ref() == br#"{"error":"stale event"}"#;
            prop_assert!(duplicate || stale, "after {} s: {:?}", delay_secs, body);
            prop_assert_eq!(duplicate, delay_secs <= 3600, "within the tolerance it is a duplicate");
            prop_assert_eq!(seen.lock().unwrap().len(), 1);
            Ok(())
        })?;
    }
}

#[tokio::test]
async fn two_webhooks_on_one_store_stay_apart() {
    let crm_secret = WebhookSecret::new("whsec_crm_webhook").unwrap();
    let billing_secret = WebhookSecret::new("whsec_billing_webhook").unwrap();
    let store: Arc<dyn aisoule_webhooks::dedup::IdempotencyStore> = Arc::new(MemoryStore::new());
    let receiver = |secret: &WebhookSecret, namespace: &str| {
        Receiver::builder(Verifier::new(secret.clone()))
            .deduplicator(
                Deduplicator::from_arc(store.clone())
                    .with_namespace(namespace)
                    .unwrap(),
            )
            .clock(Arc::new(ManualClock::new(test_now())))
            .build()
            .unwrap()
    };
    let (crm, crm_seen) = app_with(receiver(&crm_secret, "crm"));
    let (billing, billing_seen) = app_with(receiver(&billing_secret, "billing"));
    let for_crm = Delivery::sample(EventKind::MessageIncoming, Dialect::Help)
        .message_id("wamid.shared")
        .timestamp_at(test_now())
        .secret(crm_secret)
        .header(SignatureHeader::WebhookSignature)
        .build();
    let for_billing = Delivery::sample(EventKind::MessageIncoming, Dialect::Help)
        .message_id("wamid.shared")
        .timestamp_at(test_now())
        .secret(billing_secret)
        .build();

    let status = |r: http::Response<axum::body::Body>| r.status();
    assert_eq!(
        status(
            crm.clone()
                .oneshot(for_crm.http_request("/webhook"))
                .await
                .unwrap()
        ),
        StatusCode::OK
    );
    assert_eq!(
        status(
            billing
                .clone()
                .oneshot(for_billing.http_request("/webhook"))
                .await
                .unwrap()
        ),
        StatusCode::OK
    );
    assert_eq!(crm_seen.lock().unwrap().len(), 1);
    assert_eq!(
        billing_seen.lock().unwrap().len(),
        1,
        "the same message_id is handled once per webhook"
    );

    let crossed = billing
        .oneshot(for_crm.http_request("/webhook"))
        .await
        .unwrap();
    assert_eq!(
        crossed.status(),
        StatusCode::UNAUTHORIZED,
        "a delivery signed for one webhook is rejected by the other"
    );
    assert_eq!(billing_seen.lock().unwrap().len(), 1);
}
