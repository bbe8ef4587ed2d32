//! `sign` and `verify`.

use aisoule_webhooks::{Verifier, WebhookSecret, sign};
use serde_json::Value;

use crate::{SECRET, json_line, run, stderr, stdout, tool};

const BODY: &str = r#"{"event":"message.received","timestamp":1780369298,"data":{"message_id":"msg_1","sender":"918856879188","type":"text","body":"Hi"}}"#;

fn secret() -> WebhookSecret {
    WebhookSecret::new(SECRET).unwrap()
}

/// `verify --json` on a body and a headers file, returning the parsed verdict and the exit code.
fn verify(dir: &std::path::Path, headers: &str, body: &[u8], secret: &str) -> (Value, bool) {
    std::fs::write(dir.join("headers.txt"), headers).unwrap();
    std::fs::write(dir.join("body.json"), body).unwrap();
    let output = run(tool(dir)
        .env("AISOULE_WEBHOOK_SECRET", secret)
        .arg("verify")
        .arg("--json")
        .arg("--headers")
        .arg(dir.join("headers.txt"))
        .arg("--body")
        .arg(dir.join("body.json")));
    assert!(
        !stdout(&output).contains(secret.trim()),
        "the secret was printed"
    );
    (json_line(&output), output.status.success())
}

fn matched(verdict: &Value) -> Vec<String> {
    verdict["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["matches"] == true)
        .map(|c| c["check"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn sign_prints_headers_the_library_accepts_in_both_forms() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("body.json"), BODY).unwrap();
    let verifier = Verifier::new(secret());
    for (header, expected_prefix) in [
        ("aisoule", "X-AISoule-Signature: sha256="),
        ("webhook", "X-Webhook-Signature: "),
    ] {
        let output = run(tool(dir.path())
            .args(["sign", "--header", header])
            .arg(dir.path().join("body.json")));
        assert!(output.status.success(), "{}", stderr(&output));
        let text = stdout(&output);
        let line = text.lines().find(|l| l.contains("-Signature:")).unwrap();
        assert!(line.starts_with(expected_prefix), "{line}");
        let value = line.split_once(": ").unwrap().1;
        verifier
            .verify_value(value.as_bytes(), BODY.as_bytes())
            .unwrap();
    }
    // From stdin, as JSON.
    let output = run(tool(dir.path())
        .args(["--json", "sign", "--form", "hex"])
        .stdin(std::fs::File::open(dir.path().join("body.json")).unwrap()));
    let line = json_line(&output);
    assert_eq!(
        line["signature_hex"],
        sign(&secret(), BODY.as_bytes()).to_hex()
    );
    // A whole curl command.
    let output = run(tool(dir.path())
        .args(["sign", "--curl", "http://127.0.0.1:9/webhook"])
        .arg(dir.path().join("body.json")));
    assert!(
        stdout(&output).starts_with("curl -sS -X POST 'http://127.0.0.1:9/webhook' -H"),
        "{}",
        stdout(&output)
    );
}

#[test]
fn verify_passes_a_good_signature_and_warns_about_a_stale_event() {
    let dir = tempfile::tempdir().unwrap();
    let value = sign(&secret(), BODY.as_bytes()).to_prefixed();
    let (verdict, ok) = verify(
        dir.path(),
        &format!("Content-Type: application/json\nX-AISoule-Signature: {value}\n"),
        BODY.as_bytes(),
        SECRET,
    );
    assert!(ok, "{verdict}");
    assert_eq!(verdict["valid"], true);
    assert_eq!(verdict["event"]["event"], "message.incoming");
    // The docs' timestamp is long past: a receiver would answer 400, and verify says so.
    assert!(verdict["notes"].to_string().contains("stale"), "{verdict}");
}

#[test]
fn verify_explains_the_usual_accidents() {
    let dir = tempfile::tempdir().unwrap();
    let value = sign(&secret(), BODY.as_bytes()).to_hex();
    let header = format!("X-Webhook-Signature: {value}\n");

    // An editor added a newline to the saved body.
    let (verdict, ok) = verify(dir.path(), &header, format!("{BODY}\n").as_bytes(), SECRET);
    assert!(!ok);
    assert_eq!(
        matched(&verdict),
        ["trailing_newline_stripped"],
        "{verdict}"
    );

    // The body was parsed and pretty-printed before it was checked (keys in order).
    let pretty =
        serde_json::to_string_pretty(&serde_json::from_str::<Value>(BODY).unwrap()).unwrap();
    let pretty_in_order = "{\n  \"event\": \"message.received\",\n  \"timestamp\": 1780369298,\n  \"data\": {\n    \"message_id\": \"msg_1\",\n    \"sender\": \"918856879188\",\n    \"type\": \"text\",\n    \"body\": \"Hi\"\n  }\n}";
    let (verdict, _) = verify(dir.path(), &header, pretty_in_order.as_bytes(), SECRET);
    assert!(
        matched(&verdict).contains(&"reserialised_compact".to_owned()),
        "{verdict}"
    );
    assert_ne!(pretty, pretty_in_order); // serde_json sorts keys: the in-order variant is the realistic one

    // The secret came from a file with its newline.
    let (verdict, ok) = verify(dir.path(), &header, BODY.as_bytes(), &format!("{SECRET}\n"));
    assert!(!ok);
    assert_eq!(matched(&verdict), ["secret_trimmed"], "{verdict}");
    assert!(verdict["notes"].to_string().contains("whitespace"));

    // The docs' placeholder.
    let (verdict, ok) = verify(
        dir.path(),
        "X-AISoule-Signature: sha256=MOCK_SIGNATURE\n",
        BODY.as_bytes(),
        SECRET,
    );
    assert!(!ok);
    assert!(
        verdict["error"]
            .as_str()
            .unwrap()
            .contains("MOCK_SIGNATURE"),
        "{verdict}"
    );

    // A header the platform never sends.
    let (verdict, ok) = verify(
        dir.path(),
        &format!("X-Hub-Signature-256: sha256={value}\n"),
        BODY.as_bytes(),
        SECRET,
    );
    assert!(!ok);
    assert!(
        verdict["error"].as_str().unwrap().contains("no signature"),
        "{verdict}"
    );
    assert!(
        verdict["notes"].to_string().contains("X-Hub-Signature-256"),
        "{verdict}"
    );

    // Another secret altogether: nothing matches, and it says so.
    let (verdict, ok) = verify(dir.path(), &header, BODY.as_bytes(), "whsec_someone_else");
    assert!(!ok);
    assert!(matched(&verdict).is_empty());
    assert!(
        verdict["notes"].to_string().contains("another secret"),
        "{verdict}"
    );
}

#[test]
fn verify_reads_a_raw_http_request_and_prints_one_line_errors() {
    let dir = tempfile::tempdir().unwrap();
    let value = sign(&secret(), BODY.as_bytes()).to_prefixed();
    let request = format!(
        "POST /webhook HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nContent-Type: application/json\r\nX-AISoule-Signature: {value}\r\nContent-Length: {}\r\n\r\n{BODY}",
        BODY.len()
    );
    std::fs::write(dir.path().join("request.http"), request).unwrap();
    let output = run(tool(dir.path())
        .arg("verify")
        .arg("--request")
        .arg(dir.path().join("request.http")));
    assert!(
        output.status.success(),
        "{}{}",
        stdout(&output),
        stderr(&output)
    );
    assert!(
        stdout(&output).starts_with("✓ signature matches"),
        "{}",
        stdout(&output)
    );

    let output = run(tool(dir.path()).args(["verify", "--request", "/nonexistent/request.http"]));
    assert!(!output.status.success());
    let error = stderr(&output);
    assert_eq!(error.lines().count(), 1, "{error}");
    assert!(
        error.starts_with("error: cannot read /nonexistent/request.http"),
        "{error}"
    );

    // No secret anywhere, and no terminal to prompt on.
    let output = run(tool(dir.path())
        .env_remove("AISOULE_WEBHOOK_SECRET")
        .arg("verify")
        .arg("--request")
        .arg(dir.path().join("request.http")));
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("no webhook secret"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn every_command_shows_an_example_in_its_help() {
    let dir = tempfile::tempdir().unwrap();
    for command in [
        &["send"][..],
        &["sign"],
        &["verify"],
        &["listen"],
        &["replay"],
        &["inbox"],
        &["inbox", "list"],
        &["inbox", "replay"],
    ] {
        let output = run(tool(dir.path()).args(command).arg("--help"));
        assert!(output.status.success());
        let help = stdout(&output);
        assert!(help.contains("Example"), "{command:?}: {help}");
        assert!(help.contains("aisoule-webhooks "), "{command:?}: {help}");
    }
}
