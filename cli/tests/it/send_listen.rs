//! `send` → `listen` (recording, forwarding) → `replay`, and `send`'s retries and errors.

use serde_json::Value;

use crate::{json_line, listen, run, stderr, tool};

/// The handler calls a `listen --json` reported: (event, message_id), in order.
fn handled(lines: &[Value]) -> Vec<(String, String)> {
    lines
        .iter()
        .filter(|l| l["verdict"] == "handled")
        .map(|l| {
            (
                l["event"].as_str().unwrap_or_default().to_owned(),
                l["message_id"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

#[test]
fn send_listen_forward_then_replay_gives_the_same_handler_calls() {
    let dir = tempfile::tempdir().unwrap();
    let recording = dir.path().join("deliveries.jsonl");
    let target = listen(dir.path(), &[]);
    let front = listen(
        dir.path(),
        &[
            "--record",
            recording.to_str().unwrap(),
            "--forward",
            &target.url,
        ],
    );

    let sends: [&[&str]; 6] = [
        &["--event", "message.incoming", "--message-id", "m-1"],
        &[
            "--event",
            "message.read",
            "--dialect",
            "help",
            "--message-id",
            "m-1",
        ],
        &["--again"], // a redelivery of the last one: a duplicate
        &[
            "--event",
            "campaign.completed",
            "--header",
            "aisoule",
            "--form",
            "hex",
        ],
        &["--forged", "--message-id", "m-forged"],
        &[
            "--set",
            "/data/body=Do you ship to Pune?",
            "--message-id",
            "m-2",
        ],
    ];
    let mut statuses = Vec::new();
    for extra in sends {
        let output = run(tool(dir.path())
            .args(["--json", "send", &front.url])
            .args(extra));
        let summary = json_line(&output);
        statuses.push(summary["attempts"][0]["status"].as_u64().unwrap());
        assert_eq!(
            output.status.success(),
            summary["delivered"] == true,
            "{}",
            stderr(&output)
        );
    }
    assert_eq!(statuses, [200, 200, 200, 200, 401, 200]);

    let front_lines = front.json_lines(6);
    let verdicts: Vec<&str> = front_lines
        .iter()
        .map(|l| l["verdict"].as_str().unwrap())
        .collect();
    assert_eq!(
        verdicts,
        [
            "handled",
            "handled",
            "duplicate",
            "handled",
            "rejected",
            "handled"
        ]
    );
    assert!(
        front_lines[4]["reason"]
            .as_str()
            .unwrap()
            .contains("signature"),
        "{}",
        front_lines[4]
    );
    assert_eq!(front_lines[5]["text"], "Do you ship to Pune?");
    assert!(
        front_lines
            .iter()
            .filter(|l| l["verdict"] == "handled")
            .all(|l| l["forwarded"] == 200)
    );

    let calls = handled(&target.json_lines(4));
    assert_eq!(
        calls,
        [
            ("message.incoming".into(), "m-1".into()),
            ("message.read".into(), "m-1".into()),
            ("campaign.completed".into(), String::new()),
            ("message.incoming".into(), "m-2".into()),
        ]
    );

    // Replayed into a fresh receiver: the same handler calls, the duplicate and the forgery
    // refused again.
    let second = listen(dir.path(), &[]);
    let output = run(tool(dir.path())
        .args(["--json", "replay"])
        .arg(&recording)
        .arg(&second.url));
    let summary = json_line(&output);
    assert_eq!(summary["sent"], 6, "{summary}");
    assert!(!output.status.success(), "the forged one is answered 401");
    assert_eq!(handled(&second.json_lines(6)), calls);

    // Re-stamped and re-signed, only the handled ones: all 200 on a third receiver.
    let third = listen(dir.path(), &[]);
    let output = run(tool(dir.path())
        .args(["--json", "replay", "--restamp", "--only-handled"])
        .arg(&recording)
        .arg(&third.url));
    assert!(output.status.success(), "{}", crate::stdout(&output));
    assert_eq!(handled(&third.json_lines(4)), calls);
}

#[test]
fn send_retries_like_the_platform_and_errors_are_one_line() {
    let dir = tempfile::tempdir().unwrap();
    // A receiver whose forward target is down answers 502 every time.
    let failing = listen(dir.path(), &["--forward", "http://127.0.0.1:9/webhook"]);
    let output = run(tool(dir.path())
        .args(["--json", "send", "--retries", "--time-scale", "200"])
        .arg(&failing.url));
    assert!(!output.status.success());
    let summary = json_line(&output);
    assert_eq!(summary["delivered"], false);
    assert_eq!(
        summary["attempts"].as_array().unwrap().len(),
        4,
        "{summary}"
    );
    assert_eq!(failing.json_lines(4).len(), 4);

    // The docs' own sample is months old: refused as stale, and listen says why.
    let plain = listen(dir.path(), &[]);
    let docs = dir.path().join("docs.json");
    std::fs::write(
        &docs,
        r#"{"event":"message.received","timestamp":1780369298,"data":{"message_id":"msg_90a82b7194689c1","sender":"918856879188","type":"text","body":"Hi"}}"#,
    )
    .unwrap();
    let output = run(tool(dir.path())
        .args(["--json", "send", &plain.url, "--body"])
        .arg(&docs));
    assert_eq!(json_line(&output)["attempts"][0]["status"], 400);
    let seen = plain.json_lines(1);
    assert!(
        seen[0]["reason"].as_str().unwrap().starts_with("stale: "),
        "{}",
        seen[0]
    );

    for (args, expected) in [
        (
            &["send", "http://127.0.0.1:9/webhook"][..],
            "connection refused",
        ),
        (&["send", "not a url"], "bad URL"),
        (
            &[
                "send",
                "http://127.0.0.1:9/webhook",
                "--body",
                "/nonexistent.json",
            ],
            "cannot read /nonexistent.json",
        ),
        (
            &[
                "send",
                "http://127.0.0.1:9/webhook",
                "--event",
                "order.paid",
            ],
            "not a documented event",
        ),
        (
            &["replay", "/nonexistent.jsonl", "http://127.0.0.1:9/"],
            "cannot read",
        ),
    ] {
        let output = run(tool(dir.path()).args(args));
        assert!(!output.status.success());
        let error = stderr(&output);
        assert_eq!(error.lines().count(), 1, "{args:?}: {error}");
        assert!(
            error.starts_with("error: ") && error.contains(expected),
            "{args:?}: {error}"
        );
    }

    // A secret with a trailing newline (from a file) is refused with the library's reason.
    let output = run(tool(dir.path())
        .env("AISOULE_WEBHOOK_SECRET", format!("{}\n", crate::SECRET))
        .args(["send", &failing.url]));
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("whitespace"),
        "{}",
        stderr(&output)
    );
}
