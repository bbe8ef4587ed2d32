//! The `aisoule-webhooks` binary, run as a user runs it, on loopback only.

mod example;
mod inbox;
mod send_listen;
mod sign_verify;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The secret every test signs and verifies with.
pub(crate) const SECRET: &str = "whsec_cli_tests_0123456789";

/// The built binary.
pub(crate) fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_aisoule-webhooks"))
}

/// The binary with the test secret in its environment, and a state file of the test's own.
pub(crate) fn tool(state_dir: &std::path::Path) -> Command {
    let mut command = Command::new(bin());
    command
        .env("AISOULE_WEBHOOK_SECRET", SECRET)
        .env("AISOULE_WEBHOOKS_STATE", state_dir.join("last.json"))
        .env_remove("AISOULE_INBOX")
        .stdin(Stdio::null());
    command
}

/// Runs it and returns its output, checking that the secret appears nowhere.
pub(crate) fn run(command: &mut Command) -> Output {
    let output = command.output().expect("the binary runs");
    for stream in [&output.stdout, &output.stderr] {
        assert!(
            !String::from_utf8_lossy(stream).contains(SECRET),
            "the secret was printed"
        );
    }
    output
}

/// stdout as text.
pub(crate) fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// stderr as text.
pub(crate) fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// stdout's last line, as JSON.
pub(crate) fn json_line(output: &Output) -> Value {
    let text = stdout(output);
    let line = text
        .lines()
        .last()
        .unwrap_or_else(|| panic!("no output; stderr: {}", stderr(output)));
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"))
}

/// A child process on loopback, killed when dropped, whose stdout lines are collected.
pub(crate) struct Server {
    child: Child,
    /// The URL it printed on stderr.
    pub(crate) url: String,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Server {
    /// Starts `command` and waits for its `listening on http://…` line on stderr.
    pub(crate) fn start(command: &mut Command) -> Self {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the server starts");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stdout = child.stdout.take().expect("piped");
        let collected = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                collected.lock().unwrap().push(line);
            }
        });
        let mut stderr = BufReader::new(child.stderr.take().expect("piped"));
        let mut url = None;
        let mut seen = String::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            let mut line = String::new();
            if stderr.read_line(&mut line).unwrap_or(0) == 0 {
                break;
            }
            seen.push_str(&line);
            if let Some(found) = line.trim().strip_prefix("listening on ") {
                url = Some(found.to_owned());
                break;
            }
        }
        // Keep draining stderr so the child never blocks on it.
        std::thread::spawn(move || for _ in stderr.lines() {});
        let url = url.unwrap_or_else(|| panic!("the server did not start: {seen}"));
        Self { child, url, lines }
    }

    /// Waits until it has printed at least `count` lines, and returns them all.
    pub(crate) fn wait_lines(&self, count: usize) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let lines = self.lines.lock().unwrap().clone();
            if lines.len() >= count || Instant::now() > deadline {
                return lines;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Its stdout lines that are JSON, parsed.
    pub(crate) fn json_lines(&self, count: usize) -> Vec<Value> {
        self.wait_lines(count)
            .iter()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `listen --json` on a free port, with extra arguments.
pub(crate) fn listen(state_dir: &std::path::Path, extra: &[&str]) -> Server {
    Server::start(
        tool(state_dir)
            .args(["--json", "listen", "--port", "0"])
            .args(extra),
    )
}
