//! Signature diagnosis: each common mistake is named in the operator's log, and the sender
//! gets the same 401, byte for byte, whatever the mistake.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aisoule_webhooks::clock::ManualClock;
use aisoule_webhooks::test_util::{TEST_SECRET, test_secret};
use aisoule_webhooks::verify::{JsonForm, SignatureDiagnosis};
use aisoule_webhooks::{Answer, Receiver, Verifier, WebhookSecret, sign};
use bytes::Bytes;

use crate::support::CapturedLogs;

fn retired_secret() -> WebhookSecret {
    WebhookSecret::new("whsec_retired_in_2025").unwrap()
}

fn verifier() -> Verifier {
    Verifier::with_label("current", test_secret()).and_retired_secret("2025", retired_secret())
}

/// A fresh developer-dialect message whose text has a non-ASCII character, compact as the
/// platform sends it.
fn compact_body() -> String {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    format!(
        r#"{{"event":"message.received","timestamp":{now},"data":{{"message_id":"msg_diag","sender":"+919876543210","body":"Café?"}}}}"#
    )
}

/// What the sender signed, what arrived, and the diagnosis expected.
struct Mistake {
    name: &'static str,
    signed: Vec<u8>,
    secret: WebhookSecret,
    received: Vec<u8>,
    header: Option<String>,
    expected: Option<SignatureDiagnosis>,
}

fn mistakes() -> Vec<Mistake> {
    let compact = compact_body();
    // Pretty-printed in the order received, as a framework's JSON middleware would write it.
    let mut pretty = Vec::new();
    serde_transcode::transcode(
        &mut serde_json::Deserializer::from_str(&compact),
        &mut serde_json::Serializer::pretty(&mut pretty),
    )
    .unwrap();
    let pretty = String::from_utf8(pretty).unwrap();
    let escaped = compact.replace('é', "\\u00e9");
    let with_newline = format!("{compact}\n");
    let case = |name, signed: &str, secret, received: &str, expected| Mistake {
        name,
        signed: signed.as_bytes().to_vec(),
        secret,
        received: received.as_bytes().to_vec(),
        header: None,
        expected,
    };
    let mut cases = vec![
        case(
            "a proxy added a trailing newline",
            &compact,
            test_secret(),
            &with_newline,
            Some(SignatureDiagnosis::NewlineAdded),
        ),
        case(
            "curl -d stripped the trailing newline",
            &with_newline,
            test_secret(),
            &compact,
            Some(SignatureDiagnosis::NewlineRemoved),
        ),
        case(
            "a framework pretty-printed the body",
            &compact,
            test_secret(),
            &pretty,
            Some(SignatureDiagnosis::Reserialized {
                form: JsonForm::Compact,
            }),
        ),
        case(
            "the sender signed json.dumps' ASCII-escaped form",
            &escaped,
            test_secret(),
            &compact,
            Some(SignatureDiagnosis::Reserialized {
                form: JsonForm::CompactAsciiEscaped,
            }),
        ),
        case(
            "the sender still signs with the retired secret",
            &compact,
            retired_secret(),
            &compact,
            Some(SignatureDiagnosis::RetiredSecret {
                label: "2025".into(),
            }),
        ),
        case(
            "a forgery: a secret nobody configured",
            &compact,
            WebhookSecret::new("whsec_attacker").unwrap(),
            &compact,
            None,
        ),
    ];
    cases.push(Mistake {
        header: Some("sha256=MOCK_SIGNATURE".into()),
        ..case(
            "the docs' sample replayed",
            &compact,
            test_secret(),
            &compact,
            Some(SignatureDiagnosis::DocsPlaceholder),
        )
    });
    cases
}

fn header_value(mistake: &Mistake) -> String {
    mistake
        .header
        .clone()
        .unwrap_or_else(|| sign(&mistake.secret, &mistake.signed).to_prefixed())
}

#[test]
fn each_mistake_has_its_diagnosis() {
    let verifier = verifier();
    for mistake in mistakes() {
        let value = header_value(&mistake);
        assert!(
            verifier
                .verify_value(value.as_bytes(), &mistake.received)
                .is_err(),
            "{}: verifies",
            mistake.name
        );
        assert_eq!(
            verifier.diagnose([value.as_bytes()], &mistake.received),
            mistake.expected,
            "{}",
            mistake.name
        );
    }
    assert_eq!(
        verifier.diagnose(std::iter::empty(), compact_body().as_bytes()),
        Some(SignatureDiagnosis::NoSignatureHeader)
    );
    // The retired secret is recognised, never accepted.
    let body = compact_body();
    assert!(
        verifier
            .verify_value(
                sign(&retired_secret(), body.as_bytes())
                    .to_prefixed()
                    .as_bytes(),
                body.as_bytes()
            )
            .is_err()
    );
    let debug = format!("{verifier:?}");
    assert!(
        debug.contains("2025") && !debug.contains(TEST_SECRET),
        "{debug}"
    );
}

/// Through the receiver: every mistake gets the one identical answer, its diagnosis goes to
/// the log at warn, and a second failure within the interval is not diagnosed.
#[tokio::test]
async fn the_receiver_answers_every_mistake_alike_and_logs_each_diagnosis_at_a_bounded_rate() {
    let clock = Arc::new(ManualClock::new(SystemTime::now()));
    let receiver = Receiver::builder(verifier())
        .clock(clock.clone())
        .build()
        .unwrap();
    let logs = CapturedLogs::default();
    let _guard = logs.install();
    let mut answers = Vec::new();
    for mistake in mistakes() {
        let value = header_value(&mistake);
        let rejection = receiver
            .admit([value.as_bytes()], Bytes::from(mistake.received.clone()))
            .await
            .expect_err(mistake.name);
        answers.push(Answer::from(&rejection));
        let text = logs.text();
        match &mistake.expected {
            Some(diagnosis) => assert!(
                text.contains(&format!("diagnosis={diagnosis}")),
                "{}: {text}",
                mistake.name
            ),
            None => assert!(!text.contains("diagnosis="), "{}: {text}", mistake.name),
        }
        // A second failure at once is not diagnosed: the gate is shut for a second.
        let before = logs.text().matches("diagnosis=").count();
        let _ = receiver
            .admit([value.as_bytes()], Bytes::from(mistake.received.clone()))
            .await;
        assert_eq!(
            logs.text().matches("diagnosis=").count(),
            before,
            "{}: diagnosed twice within the interval",
            mistake.name
        );
        clock.advance(Duration::from_secs(1));
        logs.clear();
    }
    // The docs' placeholder is its own VerifyError, and so its own 401 in the log, but the
    // sender's answer is the same for every mistake.
    assert!(
        answers.windows(2).all(|pair| pair[0] == pair[1]),
        "{answers:?}"
    );
    assert_eq!(answers[0].status(), 401);
}

/// Each diagnosis reads, in the operator's log, as the sentence that names its cause and
/// what to do about it: the receiver logs only this text, so an empty or wrong sentence
/// would leave the operator with `diagnosis=` and nothing after it.
#[test]
fn each_diagnosis_says_its_cause_in_a_sentence() {
    let sentences = [
        (
            SignatureDiagnosis::NoSignatureHeader,
            "the request has no X-Webhook-Signature or X-AISoule-Signature header",
        ),
        (
            SignatureDiagnosis::DocsPlaceholder,
            "the signature is the documentation's MOCK_SIGNATURE placeholder",
        ),
        (
            SignatureDiagnosis::NewlineAdded,
            "the body matches without its trailing newline: something added one after signing",
        ),
        (
            SignatureDiagnosis::NewlineRemoved,
            "the body matches with a trailing newline: something stripped it \
             (curl -d does; use --data-binary)",
        ),
        (
            SignatureDiagnosis::Reserialized {
                form: JsonForm::Compact,
            },
            "the compact form of the same JSON matches: the body was re-serialised before \
             verification; verify the raw bytes",
        ),
        (
            SignatureDiagnosis::Reserialized {
                form: JsonForm::CompactAsciiEscaped,
            },
            "the compact, ASCII-escaped form of the same JSON matches: the body was \
             re-serialised before verification; verify the raw bytes",
        ),
        (
            SignatureDiagnosis::RetiredSecret {
                label: "2025".into(),
            },
            r#"the retired secret "2025" matches: the sender still signs with it"#,
        ),
    ];
    for (diagnosis, sentence) in sentences {
        assert_eq!(diagnosis.to_string(), sentence, "{diagnosis:?}");
    }
}

/// Only a whole JSON document is re-serialised: a body that is JSON followed by other bytes
/// is not the same JSON in another form, even when its JSON prefix is what was signed, so it
/// gets no diagnosis (it is a forgery or a truncation, not a framework's rewrite).
#[test]
fn json_followed_by_other_bytes_is_not_diagnosed_as_reserialised() {
    let verifier = verifier();
    let compact = compact_body();
    let value = sign(&test_secret(), compact.as_bytes()).to_prefixed();
    let received = format!("{compact} trailing bytes");
    assert_eq!(
        verifier.diagnose([value.as_bytes()], received.as_bytes()),
        None
    );
}
