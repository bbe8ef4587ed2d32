//! The example receivers on the open internet: stalled connections are closed, HTTP/2
//! cleartext is served beside HTTP/1.1.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use aisoule_webhooks::event::{Dialect, EventKind};
use aisoule_webhooks::test_util::{Delivery, TEST_SECRET};
use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::axum::example_binary;
use crate::e2e;

/// An example receiver on a free loopback port, its stdout piped, killed when dropped.
pub(crate) struct Example {
    pub(crate) child: tokio::process::Child,
    pub(crate) addr: SocketAddr,
}

impl Example {
    /// Starts the example `name` with the test secret and `env`, and waits until it listens.
    pub(crate) async fn start(name: &str, env: &[(&str, &str)]) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = tokio::process::Command::new(example_binary(name))
            .env("AISOULE_WEBHOOK_SECRET", TEST_SECRET)
            .env_remove("AISOULE_WEBHOOK_SECRET_PREVIOUS")
            .env_remove("AISOULE_INBOX")
            .env_remove("AISOULE_REDIS_URL")
            .env("PORT", port.to_string())
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        for _ in 0..400 {
            if TcpStream::connect(addr).await.is_ok() {
                return Self { child, addr };
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("{name} did not start listening");
    }

    pub(crate) fn url(&self) -> String {
        format!("http://{}/webhook", self.addr)
    }

    /// Stops the example and returns what it printed: the handled events' lines on stdout, and
    /// its logs on stderr.
    pub(crate) async fn stop(mut self) -> (Vec<serde_json::Value>, String) {
        let mut stdout = self.child.stdout.take().unwrap();
        let mut stderr = self.child.stderr.take().unwrap();
        self.child.kill().await.unwrap();
        let mut out = String::new();
        stdout.read_to_string(&mut out).await.unwrap();
        let mut err = String::new();
        stderr.read_to_string(&mut err).await.unwrap();
        let lines = out
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
        (lines, err)
    }
}

/// A delivery of a fresh `message.incoming` with this id.
fn delivery(id: &str) -> Delivery {
    Delivery::sample(EventKind::MessageIncoming, Dialect::Developer)
        .message_id(id)
        .timestamp_at(std::time::SystemTime::now())
        .build()
}

/// What a stalled connection has sent before it stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stall {
    /// Nothing at all.
    ZeroBytes,
    /// Half a request head.
    Head,
    /// A whole signed head and a tenth of its body.
    Body,
    /// The first 16 of the 24 bytes of the HTTP/2 preface.
    PartialPreface,
    /// Over h2c: the preface, a stream's signed head, and a tenth of its body.
    H2Body,
    /// A whole request (for `/health`), then nothing: an idle kept-alive connection.
    Idle,
}

const STALLS: [Stall; 5] = [
    Stall::ZeroBytes,
    Stall::Head,
    Stall::Body,
    Stall::PartialPreface,
    Stall::H2Body,
];

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// An HTTP/2 frame (RFC 9113 §4.1).
fn h2_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let length = u32::try_from(payload.len()).unwrap().to_be_bytes();
    let mut frame = length[1..].to_vec();
    frame.extend_from_slice(&[kind, flags]);
    frame.extend_from_slice(&stream.to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

/// An HPACK integer with an `prefix`-bit prefix (RFC 7541 §5.1), the first byte's other bits
/// zero.
fn hpack_integer(mut value: usize, prefix: u32, out: &mut Vec<u8>) {
    let max = (1 << prefix) - 1;
    if value < max {
        out.push(u8::try_from(value).unwrap());
        return;
    }
    out.push(u8::try_from(max).unwrap());
    value -= max;
    while value >= 128 {
        out.push(u8::try_from(value % 128).unwrap() | 128);
        value /= 128;
    }
    out.push(u8::try_from(value).unwrap());
}

/// What an h2c client sends to open stream 1 for `delivery` and send a tenth of its body:
/// the preface, empty SETTINGS, HEADERS (HPACK literals, never indexed, no Huffman) and DATA.
fn h2_stalled_stream(addr: SocketAddr, delivery: &Delivery) -> Vec<u8> {
    let authority = addr.to_string();
    let length = delivery.body().len().to_string();
    let mut fields = vec![
        (":method", "POST"),
        (":scheme", "http"),
        (":path", "/webhook"),
        (":authority", authority.as_str()),
        ("content-length", length.as_str()),
    ];
    let headers = delivery.headers();
    for (name, value) in &headers {
        fields.push((name.as_str(), value.to_str().unwrap()));
    }
    let mut block = Vec::new();
    for (name, value) in fields {
        block.push(0x10);
        hpack_integer(name.len(), 7, &mut block);
        block.extend_from_slice(name.as_bytes());
        hpack_integer(value.len(), 7, &mut block);
        block.extend_from_slice(value.as_bytes());
    }
    const SETTINGS: u8 = 0x4;
    const HEADERS: u8 = 0x1;
    const DATA: u8 = 0x0;
    const END_HEADERS: u8 = 0x4;
    let mut sent = H2_PREFACE.to_vec();
    sent.extend(h2_frame(SETTINGS, 0, 0, &[]));
    sent.extend(h2_frame(HEADERS, END_HEADERS, 1, &block));
    let tenth = &delivery.body()[..delivery.body().len() / 10];
    sent.extend(h2_frame(DATA, 0, 1, tenth));
    sent
}

/// Opens a connection, sends the first part of a request for `delivery`, and stops.
async fn stalled(addr: SocketAddr, stall: Stall, delivery: &Delivery) -> TcpStream {
    let mut head = format!(
        "POST /webhook HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\n\
         {}: {}\r\ncontent-length: {}\r\n\r\n",
        delivery.header().name(),
        delivery.signature_value(),
        delivery.body().len()
    )
    .into_bytes();
    let sent = match stall {
        Stall::ZeroBytes => Vec::new(),
        Stall::Idle => format!("GET /health HTTP/1.1\r\nhost: {addr}\r\n\r\n").into_bytes(),
        Stall::Head => {
            head.truncate(head.len() / 2);
            head
        }
        Stall::Body => {
            head.extend_from_slice(&delivery.body()[..delivery.body().len() / 10]);
            head
        }
        Stall::PartialPreface => H2_PREFACE[..16].to_vec(),
        Stall::H2Body => h2_stalled_stream(addr, delivery),
    };
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(&sent).await.unwrap();
    stream
}

/// Reads until the server closes the connection, and returns what it sent; `None` if it was
/// still open after `within`.
async fn closed_within(mut stream: TcpStream, within: Duration) -> Option<String> {
    let mut answer = Vec::new();
    let read = tokio::time::timeout(within, async {
        let mut buffer = [0; 1024];
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&buffer[..n]),
            }
        }
    })
    .await;
    read.ok()
        .map(|()| String::from_utf8_lossy(&answer).into_owned())
}

/// 16 connections of each stall kind (nothing sent, mid-head, mid-body, mid-preface, and an
/// h2c stream mid-body), and two idle kept-alive ones, are all closed within a bounded time,
/// each stalled HTTP/1.1 body with 408, while a real delivery sent meanwhile is answered at
/// once; nothing but the real delivery is handled.
async fn stalled_connections_are_closed(name: &str) {
    // The examples' header timeout is 4 s, their HTTP/2 ping 4 s after the last frame with
    // 4 s to answer it, and their request deadline 10 s.
    const BOUND: Duration = Duration::from_secs(20);
    let example = Example::start(name, &[]).await;
    let stalled_delivery = delivery("stalled");
    let mut connections = Vec::new();
    for _ in 0..16 {
        for stall in STALLS {
            connections.push((stall, stalled(example.addr, stall, &stalled_delivery).await));
        }
    }
    for _ in 0..2 {
        let stall = Stall::Idle;
        connections.push((stall, stalled(example.addr, stall, &stalled_delivery).await));
    }

    // Answered while every stalled connection is still open, over each protocol.
    let real = delivery("real");
    let answered = tokio::time::timeout(Duration::from_secs(3), e2e::post(&example.url(), &real))
        .await
        .unwrap_or_else(|_| panic!("{name}: a real delivery waited behind stalled connections"));
    assert_eq!(answered.0, 200, "{name}: {answered:?}");
    let real_h2 = delivery("real-h2");
    let (_, status, body) =
        tokio::time::timeout(Duration::from_secs(3), post_h2c(&example.url(), &real_h2))
            .await
            .unwrap_or_else(|_| panic!("{name}: an h2c delivery waited behind stalled ones"));
    assert_eq!(status, 200, "{name}: {body:?}");

    let started = std::time::Instant::now();
    let closed =
        futures_util::future::join_all(connections.into_iter().map(|(stall, stream)| async move {
            let answer = closed_within(stream, BOUND).await;
            (stall, answer, started.elapsed())
        }))
        .await;
    // Reported, not asserted: how long each kind stayed open.
    for stall in STALLS.into_iter().chain([Stall::Idle]) {
        let longest = closed.iter().filter(|c| c.0 == stall).map(|c| c.2).max();
        eprintln!("{name}: {stall:?} closed within {longest:?}");
    }
    for (stall, answer, _) in &closed {
        let answer = answer
            .as_ref()
            .unwrap_or_else(|| panic!("{name}: a connection stalled at {stall:?} stayed open"));
        match stall {
            // hyper closes a stalled head without a word; actix answers 408 first.
            Stall::ZeroBytes | Stall::Head => assert!(
                answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
                "{name}: {stall:?}: {answer}"
            ),
            Stall::Body => assert!(answer.starts_with("HTTP/1.1 408"), "{name}: {answer}"),
            Stall::Idle => assert!(answer.starts_with("HTTP/1.1 200"), "{name}: {answer}"),
            // HTTP/2 frames, if any (SETTINGS, PING, GOAWAY, the stream's 408): never an
            // HTTP/1.1 answer.
            Stall::PartialPreface | Stall::H2Body => {
                assert!(
                    !answer.starts_with("HTTP/1.1"),
                    "{name}: {stall:?}: {answer}"
                );
            }
        }
    }

    let (printed, _) = example.stop().await;
    let ids: Vec<_> = printed.iter().map(|l| l["message_id"].clone()).collect();
    assert_eq!(ids, ["real", "real-h2"], "{name}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_connections_are_closed_on_the_axum_example() {
    stalled_connections_are_closed("axum_receiver").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_connections_are_closed_on_the_actix_example() {
    stalled_connections_are_closed("actix_receiver").await;
}

/// Sends `delivery` over HTTP/2 cleartext with prior knowledge, and returns the answer's
/// version, status and body.
async fn post_h2c(url: &str, delivery: &Delivery) -> (http::Version, u16, Bytes) {
    use http_body_util::BodyExt;
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;
    let client = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();
    let response = client
        .request(delivery.http_request(url))
        .await
        .expect("the server answers over h2c");
    let version = response.version();
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (version, status, body)
}

/// One delivery over HTTP/1.1 and one over h2c are each handled once; the h2c redelivery is
/// a duplicate.
async fn both_http_versions_are_served(name: &str) {
    let example = Example::start(name, &[]).await;
    let over_h1 = delivery("over-h1");
    assert_eq!(e2e::post(&example.url(), &over_h1).await.0, 200, "{name}");
    let over_h2 = delivery("over-h2");
    let (version, status, body) = post_h2c(&example.url(), &over_h2).await;
    assert_eq!(version, http::Version::HTTP_2, "{name}");
    assert_eq!(status, 200, "{name}: {body:?}");
    let (_, status, body) = post_h2c(&example.url(), &over_h2.redelivery()).await;
    assert_eq!(
        (status, body.as_ref()),
        (200, br#"{"status":"duplicate"}"#.as_ref()),
        "{name}"
    );
    let (printed, _) = example.stop().await;
    let ids: Vec<_> = printed.iter().map(|l| l["message_id"].clone()).collect();
    assert_eq!(ids, ["over-h1", "over-h2"], "{name}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_axum_example_serves_http1_and_h2c() {
    both_http_versions_are_served("axum_receiver").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_actix_example_serves_http1_and_h2c() {
    both_http_versions_are_served("actix_receiver").await;
}

/// The `delivery admitted` log line of the delivery `message_id`, from `logs`.
fn admitted_line<'a>(logs: &'a str, message_id: &str) -> &'a str {
    let id = format!(r#"message_id="{message_id}""#);
    logs.lines()
        .find(|line| line.contains(&id) && line.contains("delivery admitted"))
        .unwrap_or_else(|| panic!("no admitted line for {message_id} in:\n{logs}"))
}

/// In process, under the axum layer: the client is the socket peer unless the peer is a
/// trusted proxy (one address, or in a trusted range); then the rightmost untrusted hop of the one forwarded header named. A
/// forwarded header is never read by default, nor from an untrusted peer.
#[tokio::test(flavor = "current_thread")]
async fn the_client_is_the_peer_unless_a_trusted_proxy_forwards_it() {
    use aisoule_webhooks::Receiver;
    use aisoule_webhooks::axum::WebhookLayer;
    use aisoule_webhooks::receiver::ForwardedHeader;
    use aisoule_webhooks::test_util::test_verifier;
    use axum::extract::ConnectInfo;
    use axum::http::StatusCode;
    use axum::routing::post;
    use tower::ServiceExt;

    let logs = crate::support::CapturedLogs::default();
    let _guard = logs.install();
    let send = |receiver: Receiver, id: &'static str, peer: &str, headers: &[(&str, &str)]| {
        let mut request = delivery(id).http_request("/webhook");
        for (name, value) in headers {
            request.headers_mut().append(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                http::HeaderValue::from_str(value).unwrap(),
            );
        }
        request
            .extensions_mut()
            .insert(ConnectInfo(peer.parse::<SocketAddr>().unwrap()));
        let app = axum::Router::new().route(
            "/webhook",
            post(|_: aisoule_webhooks::VerifiedEvent| async { StatusCode::OK })
                .layer(WebhookLayer::new(receiver)),
        );
        async move {
            let answer = app.oneshot(request).await.unwrap();
            assert_eq!(answer.status(), StatusCode::OK, "{id}");
        }
    };
    let by_default = Receiver::new(test_verifier());
    // One address, and ranges: IPv4, IPv6, and IPv4-mapped IPv6 (compared as IPv4).
    let local = || {
        [
            "127.0.0.1/32",
            "10.0.0.0/8",
            "fd00::/8",
            "::ffff:192.168.0.0/112",
        ]
        .map(|range| range.parse::<aisoule_webhooks::receiver::IpNet>().unwrap())
    };
    let xff = Receiver::builder(test_verifier())
        .trusted_proxies(ForwardedHeader::XForwardedFor, local())
        .build()
        .unwrap();
    let forwarded = Receiver::builder(test_verifier())
        .trusted_proxies(ForwardedHeader::Forwarded, local())
        .build()
        .unwrap();
    let spoofed: &[(&str, &str)] = &[("x-forwarded-for", "6.6.6.6"), ("forwarded", "for=6.6.6.6")];
    send(by_default, "default", "127.0.0.1:50000", spoofed).await;
    send(xff.clone(), "untrusted-peer", "198.51.100.7:50000", spoofed).await;
    send(xff.clone(), "no-header", "127.0.0.1:50000", &[]).await;
    send(
        xff.clone(),
        "two-proxies",
        "[::ffff:127.0.0.1]:50000",
        &[
            ("x-forwarded-for", "6.6.6.6, 198.51.100.7"),
            ("x-forwarded-for", "10.0.0.2"),
            ("forwarded", "for=6.6.6.6"),
        ],
    )
    .await;
    send(
        xff.clone(),
        "through-a-range",
        "10.1.2.3:50000",
        &[("x-forwarded-for", "6.6.6.6, 198.51.100.8, 10.200.0.1")],
    )
    .await;
    send(
        xff.clone(),
        "ipv6-range",
        "[fd12::5]:50000",
        &[("x-forwarded-for", "203.0.113.9")],
    )
    .await;
    send(
        xff.clone(),
        "mapped-range",
        "192.168.7.7:50000",
        &[("x-forwarded-for", "203.0.113.10")],
    )
    .await;
    // Just outside each range: the peer itself.
    send(
        xff.clone(),
        "outside-v4",
        "11.0.0.1:50000",
        &[("x-forwarded-for", "6.6.6.6")],
    )
    .await;
    send(
        xff.clone(),
        "outside-v6",
        "[fe00::1]:50000",
        &[("x-forwarded-for", "6.6.6.6")],
    )
    .await;
    send(
        xff.clone(),
        "outside-mapped",
        "192.169.0.1:50000",
        &[("x-forwarded-for", "6.6.6.6")],
    )
    .await;
    send(
        forwarded.clone(),
        "rfc7239",
        "127.0.0.1:50000",
        &[
            ("x-forwarded-for", "6.6.6.6"),
            (
                "forwarded",
                r#"for="[2001:db8::1]:4711";proto=https, For=10.0.0.2"#,
            ),
        ],
    )
    .await;
    send(
        forwarded,
        "unknown-hop",
        "127.0.0.1:50000",
        &[("forwarded", "for=6.6.6.6, for=unknown, for=10.0.0.2")],
    )
    .await;

    let text = logs.text();
    for (id, client) in [
        ("default", "127.0.0.1"),
        ("untrusted-peer", "198.51.100.7"),
        ("no-header", "127.0.0.1"),
        ("two-proxies", "198.51.100.7"),
        ("through-a-range", "198.51.100.8"),
        ("ipv6-range", "203.0.113.9"),
        ("mapped-range", "203.0.113.10"),
        ("outside-v4", "11.0.0.1"),
        ("outside-v6", "fe00::1"),
        ("outside-mapped", "192.169.0.1"),
        ("rfc7239", "2001:db8::1"),
        ("unknown-hop", "10.0.0.2"),
    ] {
        let line = admitted_line(&text, id);
        assert!(line.contains(&format!("client={client} ")), "{id}: {line}");
    }
    assert!(!text.contains("client=6.6.6.6"), "{text}");
}

/// Over TCP, each example's log lines about a delivery name its client: the socket peer, or
/// with `AISOULE_TRUSTED_PROXIES` the address the trusted proxy forwarded.
async fn the_example_logs_the_client(name: &str) {
    for (env, forwarded_for, expected) in [
        (&[][..], "6.6.6.6", "127.0.0.1"),
        (
            // A range, and a bare address.
            &[("AISOULE_TRUSTED_PROXIES", "127.0.0.0/8,::1")][..],
            "198.51.100.7",
            "198.51.100.7",
        ),
    ] {
        let example = Example::start(name, env).await;
        let sent = delivery("logged");
        let client = reqwest::Client::new();
        for _ in 0..2 {
            let mut request = client
                .post(example.url())
                .header("x-forwarded-for", forwarded_for)
                .body(sent.body().clone());
            for (header, value) in sent.headers().iter() {
                request = request.header(header.as_str(), value.as_bytes());
            }
            assert_eq!(request.send().await.unwrap().status().as_u16(), 200);
        }
        let (_, logs) = example.stop().await;
        // The redelivery is logged at info, as a duplicate.
        let line = logs
            .lines()
            .find(|line| line.contains("duplicate delivery"))
            .unwrap_or_else(|| panic!("{name}: no duplicate line in:\n{logs}"));
        assert!(
            line.contains(&format!("client={expected} ")),
            "{name}: {line}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_axum_example_logs_the_client() {
    the_example_logs_the_client("axum_receiver").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_actix_example_logs_the_client() {
    the_example_logs_the_client("actix_receiver").await;
}
