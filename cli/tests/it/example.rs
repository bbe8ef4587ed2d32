//! `send` against the root crate's example receiver (`examples/axum_receiver.rs`).
//!
//! The example is a binary of the root crate, built by `cargo test --all-features` at the
//! workspace root (as CI runs it) or `cargo build --examples --features axum`. When it has not
//! been built the test says so on stderr and passes, unless `AISOULE_CLI_REQUIRE_EXAMPLE` is
//! set.

use std::process::Command;

use crate::{SECRET, Server, json_line, run, stderr, tool};

#[test]
fn send_to_the_example_receiver_is_handled_once() {
    let example = crate::bin()
        .with_file_name("examples")
        .join("axum_receiver");
    if !example.exists() {
        assert!(
            std::env::var_os("AISOULE_CLI_REQUIRE_EXAMPLE").is_none(),
            "{} is not built",
            example.display()
        );
        eprintln!(
            "skipped: {} is not built (cargo build --examples --features axum)",
            example.display()
        );
        return;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let receiver = Server::start(
        Command::new(&example)
            .env("AISOULE_WEBHOOK_SECRET", SECRET)
            .env("PORT", port.to_string())
            .env("RUST_LOG", "warn")
            .env_remove("AISOULE_REDIS_URL")
            .env_remove("AISOULE_INBOX"),
    );
    let dir = tempfile::tempdir().unwrap();
    for (args, status) in [
        (&["--dialect", "help", "--message-id", "ex-1"][..], 200),
        (&["--again"], 200),
        (
            &[
                "--dialect",
                "developer",
                "--message-id",
                "ex-2",
                "--header",
                "webhook",
                "--form",
                "prefixed",
            ],
            200,
        ),
        (&["--mock-signature", "--message-id", "ex-3"], 401),
    ] {
        let output = run(tool(dir.path())
            .args(["--json", "send", &receiver.url])
            .args(args));
        let summary = json_line(&output);
        assert_eq!(
            summary["attempts"][0]["status"],
            status,
            "{args:?}: {summary} {}",
            stderr(&output)
        );
    }
    let lines = receiver.json_lines(2);
    let ids: Vec<&str> = lines
        .iter()
        .map(|l| l["message_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["ex-1", "ex-2"], "handled once each: {lines:?}");
}
