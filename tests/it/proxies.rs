//! The README's proxy snippets (`deploy/`), run: the real nginx, haproxy and Caddy in front of
//! each example, terminating TLS, with signed deliveries sent through them by curl.
//!
//! The snippets run as written, but for the listening port, the upstream port and the
//! certificate paths (and Caddy's admin endpoint and HTTP port, turned off or moved so that
//! tests can run side by side). Without the proxy, or curl and openssl, each test skips with
//! a message, except under `CI=true`, where that is a failure (`.ci/run` installs them).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use aisoule_webhooks::event::{Dialect, EventKind};
use aisoule_webhooks::test_util::Delivery;

use crate::internet::Example;

/// The program `name` on `PATH` or in `/usr/sbin`, or `None` after saying why the test skips.
fn program(name: &str, package: &str) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect())
        .unwrap_or_default();
    dirs.push("/usr/sbin".into());
    let found = dirs
        .into_iter()
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file());
    if found.is_none() {
        let message = format!(
            "{name} is not installed: the proxy snippet tests cannot run (install it with \
             `apt-get install -y {package}`)"
        );
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("{message}; under CI=true this is a failure, not a skip");
        }
        use std::io::Write;
        let _ = writeln!(std::io::stderr(), "SKIPPED: {message}");
    }
    found
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A snippet from `deploy/`, as the README shows it.
fn snippet(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy")
        .join(name);
    std::fs::read_to_string(path).unwrap()
}

/// Replaces `from` (which must occur) with `to`.
fn replaced(text: &str, from: &str, to: &str) -> String {
    assert!(text.contains(from), "the snippet no longer has {from:?}");
    text.replace(from, to)
}

/// A self-signed certificate for webhooks.example.com in `dir`: `cert.pem`, `key.pem`, and
/// both in `both.pem` (haproxy's form).
fn certificate(dir: &Path, openssl: &Path) {
    let status = Command::new(openssl)
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .args(["-subj", "/CN=webhooks.example.com"])
        .args(["-addext", "subjectAltName=DNS:webhooks.example.com"])
        .arg("-keyout")
        .arg(dir.join("key.pem"))
        .arg("-out")
        .arg(dir.join("cert.pem"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "openssl made no certificate");
    let both = [
        std::fs::read(dir.join("cert.pem")).unwrap(),
        std::fs::read(dir.join("key.pem")).unwrap(),
    ]
    .concat();
    std::fs::write(dir.join("both.pem"), both).unwrap();
}

/// A running proxy, killed when dropped.
struct Proxy(Child);

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits until something listens on `port`.
async fn listening(port: u16, what: &str) {
    for _ in 0..400 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{what} did not start listening on {port}");
}

/// Posts `delivery` with curl to https://webhooks.example.com:`port`/webhook (resolved to
/// loopback), from 127.0.0.2 with a forged `X-Forwarded-For`, and returns the status and
/// body.
fn curl(curl: &Path, dir: &Path, port: u16, delivery: &Delivery) -> (u16, String) {
    let body = dir.join("body.json");
    std::fs::write(&body, delivery.body()).unwrap();
    let output = Command::new(curl)
        .args(["-sS", "--http1.1", "--cacert"])
        .arg(dir.join("cert.pem"))
        .args(["--interface", "127.0.0.2"])
        .arg("--resolve")
        .arg(format!("webhooks.example.com:{port}:127.0.0.1"))
        .args(["-H", "content-type: application/json"])
        .args(["-H", "x-forwarded-for: 6.6.6.6"])
        .arg("-H")
        .arg(format!(
            "{}: {}",
            delivery.header().name(),
            delivery.signature_value()
        ))
        // `--data-binary`, not `-d`: `-d @file` strips newlines and breaks the signature.
        .arg("--data-binary")
        .arg(format!("@{}", body.display()))
        .args(["-w", "\n%{http_code}"])
        .arg(format!("https://webhooks.example.com:{port}/webhook"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let (answer, status) = text.rsplit_once('\n').unwrap_or(("", &text));
    let status = status.trim().parse().unwrap_or_else(|_| {
        panic!(
            "curl: {text} {}",
            String::from_utf8_lossy(&output.stderr).trim()
        )
    });
    (status, answer.to_owned())
}

/// Sends signed deliveries (one of 300 KiB) and their redeliveries through the proxy on
/// `port` to `example`, and checks that each is handled exactly once, each redelivery is a
/// duplicate, and the receiver names the client the proxy forwarded, not the forged one.
async fn deliveries_through(example: Example, curl_path: &Path, dir: &Path, port: u16) -> String {
    let deliveries: Vec<Delivery> = (0..6)
        .map(|i| {
            let builder = Delivery::sample(EventKind::MessageIncoming, Dialect::Developer)
                .message_id(format!("proxied-{i}"))
                .timestamp_at(std::time::SystemTime::now());
            if i == 0 {
                // Not printed: the example prints the text, and its stdout is read only at the end.
                builder.set("/data/padding", "x".repeat(300 * 1024)).build()
            } else {
                builder.build()
            }
        })
        .collect();
    for delivery in &deliveries {
        let (status, body) = curl(curl_path, dir, port, delivery);
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            curl(curl_path, dir, port, &delivery.redelivery()),
            (200, r#"{"status":"duplicate"}"#.to_owned())
        );
    }
    let (printed, logs) = example.stop().await;
    let mut ids: Vec<_> = printed
        .iter()
        .map(|line| line["message_id"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    let expected: Vec<_> = (0..6).map(|i| format!("proxied-{i}")).collect();
    assert_eq!(ids, expected, "each delivery handled exactly once");
    let duplicates: Vec<_> = logs
        .lines()
        .filter(|line| line.contains("duplicate delivery"))
        .collect();
    assert_eq!(duplicates.len(), 6, "{logs}");
    for line in duplicates {
        assert!(line.contains("client=127.0.0.2 "), "{line}");
    }
    deliveries
        .iter()
        .map(|d| d.signature_value().to_owned())
        .collect::<Vec<_>>()
        .join("\n")
}

/// The tools every proxy test needs: curl and openssl.
fn clients() -> Option<(PathBuf, PathBuf)> {
    Some((program("curl", "curl")?, program("openssl", "openssl")?))
}

/// The example `name`, trusting the proxy on loopback.
async fn example_behind_a_proxy(name: &str) -> Example {
    Example::start(name, &[("AISOULE_TRUSTED_PROXIES", "127.0.0.1")]).await
}

async fn through_nginx(name: &str) {
    let (Some(nginx), Some((curl, openssl))) = (program("nginx", "nginx-light"), clients()) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    certificate(dir, &openssl);
    let example = example_behind_a_proxy(name).await;
    let port = free_port();
    let mut config = snippet("nginx.conf");
    config = replaced(&config, "127.0.0.1:8080", &example.addr.to_string());
    config = replaced(
        &config,
        "listen 443 ssl;",
        &format!("listen 127.0.0.1:{port} ssl;"),
    );
    config = replaced(
        &config,
        "/etc/ssl/aisoule-webhooks/fullchain.pem",
        &dir.join("cert.pem").display().to_string(),
    );
    config = replaced(
        &config,
        "/etc/ssl/aisoule-webhooks/privkey.pem",
        &dir.join("key.pem").display().to_string(),
    );
    let access_log = dir.join("access.log");
    config = replaced(
        &config,
        "/var/log/nginx/aisoule-webhooks.log",
        &access_log.display().to_string(),
    );
    let d = dir.display();
    let whole = format!(
        "daemon off;\nmaster_process off;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
         events {{}}\nhttp {{\n    client_body_temp_path {d}/body;\n    \
         proxy_temp_path {d}/proxy;\n    access_log off;\n{config}\n}}\n"
    );
    std::fs::write(dir.join("nginx.conf"), whole).unwrap();
    let _proxy = Proxy(
        Command::new(nginx)
            .arg("-p")
            .arg(dir)
            .arg("-c")
            .arg(dir.join("nginx.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    listening(port, "nginx").await;
    let signatures = deliveries_through(example, &curl, dir, port).await;
    let logged = std::fs::read_to_string(&access_log).unwrap();
    assert!(logged.contains("POST /webhook"), "{logged}");
    for signature in signatures.lines() {
        assert!(!logged.contains(signature), "nginx logged a signature");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_nginx_snippet_in_front_of_the_axum_example() {
    through_nginx("axum_receiver").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_nginx_snippet_in_front_of_the_actix_example() {
    through_nginx("actix_receiver").await;
}

async fn through_haproxy(name: &str) {
    let (Some(haproxy), Some((curl, openssl))) = (program("haproxy", "haproxy"), clients()) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    certificate(dir, &openssl);
    let example = example_behind_a_proxy(name).await;
    let port = free_port();
    let mut config = snippet("haproxy.cfg");
    config = replaced(&config, "127.0.0.1:8080", &example.addr.to_string());
    config = replaced(
        &config,
        "bind :443 ssl crt /etc/haproxy/certs/aisoule-webhooks.pem",
        &format!(
            "bind 127.0.0.1:{port} ssl crt {}",
            dir.join("both.pem").display()
        ),
    );
    std::fs::write(dir.join("haproxy.cfg"), config).unwrap();
    let log = std::fs::File::create(dir.join("haproxy.log")).unwrap();
    let _proxy = Proxy(
        Command::new(haproxy)
            .arg("-db")
            .arg("-f")
            .arg(dir.join("haproxy.cfg"))
            .stdout(log)
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    listening(port, "haproxy").await;
    let signatures = deliveries_through(example, &curl, dir, port).await;
    let logged = std::fs::read_to_string(dir.join("haproxy.log")).unwrap();
    assert!(logged.contains("POST /webhook"), "{logged}");
    for signature in signatures.lines() {
        assert!(!logged.contains(signature), "haproxy logged a signature");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_haproxy_snippet_in_front_of_the_axum_example() {
    through_haproxy("axum_receiver").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_haproxy_snippet_in_front_of_the_actix_example() {
    through_haproxy("actix_receiver").await;
}

async fn through_caddy(name: &str) {
    let (Some(caddy), Some((curl, openssl))) = (program("caddy", "caddy"), clients()) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    certificate(dir, &openssl);
    let example = example_behind_a_proxy(name).await;
    let port = free_port();
    let mut config = snippet("Caddyfile");
    config = replaced(&config, "127.0.0.1:8080", &example.addr.to_string());
    config = replaced(
        &config,
        "webhooks.example.com {",
        &format!("webhooks.example.com:{port} {{"),
    );
    config = replaced(
        &config,
        "{\n\tservers {",
        &format!("{{\n\tadmin off\n\thttp_port {}\n\tservers {{", free_port()),
    );
    config = replaced(
        &config,
        "/etc/ssl/aisoule-webhooks/fullchain.pem",
        &dir.join("cert.pem").display().to_string(),
    );
    config = replaced(
        &config,
        "/etc/ssl/aisoule-webhooks/privkey.pem",
        &dir.join("key.pem").display().to_string(),
    );
    std::fs::write(dir.join("Caddyfile"), config).unwrap();
    let log = std::fs::File::create(dir.join("caddy.log")).unwrap();
    let _proxy = Proxy(
        Command::new(caddy)
            .args(["run", "--adapter", "caddyfile", "--config"])
            .arg(dir.join("Caddyfile"))
            .env("HOME", dir)
            .env("XDG_DATA_HOME", dir)
            .env("XDG_CONFIG_HOME", dir)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    listening(port, "caddy").await;
    let signatures = deliveries_through(example, &curl, dir, port).await;
    let logged = std::fs::read_to_string(dir.join("caddy.log")).unwrap();
    assert!(logged.contains("/webhook"), "{logged}");
    for signature in signatures.lines() {
        assert!(!logged.contains(signature), "caddy logged a signature");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_caddy_snippet_in_front_of_the_axum_example() {
    through_caddy("axum_receiver").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_caddy_snippet_in_front_of_the_actix_example() {
    through_caddy("actix_receiver").await;
}

/// The README shows each snippet exactly as the tests run it.
#[test]
fn the_readme_shows_the_snippets_that_are_run() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    for name in ["nginx.conf", "haproxy.cfg", "Caddyfile"] {
        assert!(
            readme.contains(&snippet(name)),
            "README.md does not show deploy/{name} verbatim"
        );
    }
}
