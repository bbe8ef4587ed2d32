//! The load generator of `benches/inbox.sh` (feature `inbox`): pre-signed, distinct deliveries
//! from `load_server emit`, sent over HTTP/1.1 keep-alive connections.
//!
//! ```text
//! load_client closed URL FILE FROM COUNT CONNECTIONS SECONDS EXPECT
//! load_client open   URL FILE FROM COUNT RATE SECONDS CONNECTIONS EXPECT
//! ```
//!
//! Both use the deliveries on lines `FROM..FROM+COUNT` of `FILE`, each at most once, so that no
//! request of a run is a duplicate of another (nor of the other phase's, given disjoint ranges).
//! A request is acknowledged when it is answered 200 and, with `EXPECT` = `accepted`, its body
//! is `{"status":"accepted"}` (stored by the inbox, not a duplicate); with `EXPECT` = `200` any
//! 200 counts (inline mode).
//!
//! - `closed`: `CONNECTIONS` connections each send their next request as soon as the previous
//!   one is answered, for `SECONDS`. The rate counts the acknowledgements received within
//!   the window. Throughput.
//! - `open`: `RATE` requests a second for `SECONDS`, on a fixed schedule, whatever the server
//!   does: request `i` is due at `start + i / RATE`, and its latency runs from that due time,
//!   not from when it was sent, so a stalled server is charged for the requests it held up
//!   (no coordinated omission). Request `i` goes on connection `i % CONNECTIONS`; keep enough
//!   connections that one is free at each due time. Tokio's timer fires up to 1 ms late, which
//!   the latencies include.
//!
//! Prints one line of `key=value` pairs; latencies are of acknowledged requests, in ms.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HOST};
use http::{HeaderValue, Method, Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::time::Instant;

const USAGE: &str = "usage: load_client closed URL FILE FROM COUNT CONNECTIONS SECONDS EXPECT \
    | open URL FILE FROM COUNT RATE SECONDS CONNECTIONS EXPECT  (EXPECT: accepted or 200)";

/// The inbox's answer to a delivery it stored.
const ACCEPTED: &[u8] = br#"{"status":"accepted"}"#;

/// One pre-signed delivery.
struct Delivery {
    signature: HeaderValue,
    body: Bytes,
}

/// What every connection shares.
struct Target {
    addr: String,
    host: HeaderValue,
    path: Uri,
    expect_accepted: bool,
    deliveries: Vec<Delivery>,
    /// The first refusal is printed to stderr, for diagnosis.
    refusal_shown: AtomicBool,
}

/// One connection's tally.
#[derive(Default)]
struct Tally {
    /// Acknowledged (see the module documentation).
    acked: u64,
    /// Acknowledged before the closed loop's window ended.
    acked_in_window: u64,
    /// Answered, but not an acknowledgement: another status, or another body.
    refused: u64,
    /// No answer: the connection failed.
    errors: u64,
    latencies: Vec<Duration>,
}

impl Tally {
    fn merge(&mut self, other: Tally) {
        self.acked += other.acked;
        self.acked_in_window += other.acked_in_window;
        self.refused += other.refused;
        self.errors += other.errors;
        self.latencies.extend(other.latencies);
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let closed = match args.get(1).map(String::as_str) {
        Some("closed") if args.len() == 9 => true,
        Some("open") if args.len() == 10 => false,
        _ => {
            eprintln!("{USAGE}");
            std::process::exit(2);
        }
    };
    let number = |i: usize| -> u64 { args[i].parse().expect(USAGE) };
    let url: Uri = args[2].parse().expect("a URL");
    let authority = url.authority().expect("a URL with a host and port").clone();
    let (from, count) = (number(4) as usize, number(5) as usize);
    let expect = args.last().unwrap();
    assert!(expect == "accepted" || expect == "200", "{USAGE}");
    let target = Arc::new(Target {
        addr: authority.to_string(),
        host: HeaderValue::from_str(authority.as_str()).unwrap(),
        path: url
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .parse()
            .unwrap(),
        expect_accepted: expect == "accepted",
        deliveries: read_deliveries(&args[3], from, count),
        refusal_shown: AtomicBool::new(false),
    });
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let line = if closed {
        let (connections, seconds) = (number(6) as usize, number(7));
        runtime.block_on(closed_loop(
            target,
            connections,
            Duration::from_secs(seconds),
        ))
    } else {
        let (rate, seconds, connections) = (number(6), number(7), number(8) as usize);
        runtime.block_on(open_loop(target, rate, seconds, connections))
    };
    println!("{line}");
}

/// Lines `from..from + count` of `path`, each `signature<TAB>body`.
fn read_deliveries(path: &str, from: usize, count: usize) -> Vec<Delivery> {
    let data = Bytes::from(std::fs::read(path).expect("the deliveries file is readable"));
    let mut deliveries = Vec::with_capacity(count);
    let mut start = 0;
    let mut line = 0;
    while start < data.len() && deliveries.len() < count {
        let end = data[start..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(data.len(), |n| start + n);
        if line >= from {
            let tab = data[start..end]
                .iter()
                .position(|&b| b == b'\t')
                .expect("signature<TAB>body")
                + start;
            deliveries.push(Delivery {
                signature: HeaderValue::from_bytes(&data[start..tab]).expect("a header value"),
                body: data.slice(tab + 1..end),
            });
        }
        line += 1;
        start = end + 1;
    }
    assert_eq!(
        deliveries.len(),
        count,
        "{path} has fewer than {} deliveries",
        from + count
    );
    deliveries
}

async fn connect(
    target: &Target,
) -> Result<SendRequest<Full<Bytes>>, Box<dyn std::error::Error + Send + Sync>> {
    let stream = tokio::net::TcpStream::connect(&target.addr).await?;
    stream.set_nodelay(true)?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    Ok(sender)
}

/// Sends delivery `index`: `Ok(true)` for an acknowledgement, `Ok(false)` for another answer.
async fn send(
    target: &Target,
    sender: &mut SendRequest<Full<Bytes>>,
    index: usize,
) -> Result<bool, hyper::Error> {
    let delivery = &target.deliveries[index];
    let mut request = Request::new(Full::new(delivery.body.clone()));
    *request.method_mut() = Method::POST;
    *request.uri_mut() = target.path.clone();
    let headers = request.headers_mut();
    headers.insert(HOST, target.host.clone());
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert("x-aisoule-signature", delivery.signature.clone());
    sender.ready().await?;
    let response = sender.send_request(request).await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    let acked = status == http::StatusCode::OK && (!target.expect_accepted || body == ACCEPTED);
    if !acked && !target.refusal_shown.swap(true, Ordering::Relaxed) {
        eprintln!(
            "load_client: first refusal: {status} {}",
            String::from_utf8_lossy(&body)
        );
    }
    Ok(acked)
}

/// A connection made before the load starts, tried a few times (a loopback connect can fail
/// while the server's accept queue is full); panics with the last error.
async fn first_connection(target: &Target) -> SendRequest<Full<Bytes>> {
    let mut attempts = 0;
    loop {
        match connect(target).await {
            Ok(sender) => return sender,
            Err(error) if attempts < 50 => {
                attempts += 1;
                eprintln!(
                    "load_client: connecting to {}: {error}; trying again",
                    target.addr
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(error) => panic!("cannot connect to {}: {error}", target.addr),
        }
    }
}

/// A connection, or after a failure a new one; `None` when none can be made.
async fn reconnect(target: &Target, tally: &mut Tally) -> Option<SendRequest<Full<Bytes>>> {
    for _ in 0..100 {
        match connect(target).await {
            Ok(sender) => return Some(sender),
            Err(_) => {
                tally.errors += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    None
}

async fn closed_loop(target: Arc<Target>, connections: usize, window: Duration) -> String {
    let next = Arc::new(AtomicUsize::new(0));
    let exhausted = Arc::new(AtomicBool::new(false));
    let mut senders = Vec::with_capacity(connections);
    for _ in 0..connections {
        senders.push(first_connection(&target).await);
    }
    let start = Instant::now();
    let deadline = start + window;
    let tasks: Vec<_> = senders
        .into_iter()
        .map(|mut sender| {
            let (target, next, exhausted) = (target.clone(), next.clone(), exhausted.clone());
            tokio::spawn(async move {
                let mut tally = Tally::default();
                while Instant::now() < deadline {
                    let index = next.fetch_add(1, Ordering::Relaxed);
                    if index >= target.deliveries.len() {
                        exhausted.store(true, Ordering::Relaxed);
                        break;
                    }
                    let sent = Instant::now();
                    match send(&target, &mut sender, index).await {
                        Ok(true) => {
                            let answered = Instant::now();
                            tally.acked += 1;
                            if answered <= deadline {
                                tally.acked_in_window += 1;
                            }
                            tally.latencies.push(answered - sent);
                        }
                        Ok(false) => tally.refused += 1,
                        Err(_) => {
                            tally.errors += 1;
                            match reconnect(&target, &mut tally).await {
                                Some(new) => sender = new,
                                None => break,
                            }
                        }
                    }
                }
                tally
            })
        })
        .collect();
    let mut total = Tally::default();
    for task in tasks {
        total.merge(task.await.expect("a connection task"));
    }
    let exhausted = exhausted.load(Ordering::Relaxed);
    // When the deliveries ran out, the rate is over the time they lasted.
    let seconds = if exhausted {
        start.elapsed().min(window).as_secs_f64()
    } else {
        window.as_secs_f64()
    };
    let sent = next.load(Ordering::Relaxed).min(target.deliveries.len());
    format!(
        "loop=closed connections={connections} seconds={seconds:.2} sent={sent} {} rate={:.0} exhausted={}",
        summary(&mut total),
        total.acked_in_window as f64 / seconds,
        if exhausted { "yes" } else { "no" },
    )
}

async fn open_loop(target: Arc<Target>, rate: u64, seconds: u64, connections: usize) -> String {
    let total_requests = (rate * seconds) as usize;
    assert!(
        total_requests <= target.deliveries.len(),
        "{total_requests} requests need as many deliveries; COUNT is {}",
        target.deliveries.len()
    );
    let mut senders = Vec::with_capacity(connections);
    for _ in 0..connections {
        senders.push(first_connection(&target).await);
    }
    let start = Instant::now() + Duration::from_millis(100);
    let interval = Duration::from_secs(1).as_secs_f64() / rate as f64;
    let tasks: Vec<_> = senders
        .into_iter()
        .enumerate()
        .map(|(first, mut sender)| {
            let target = target.clone();
            tokio::spawn(async move {
                let mut tally = Tally::default();
                for index in (first..total_requests).step_by(connections) {
                    let due = start + Duration::from_secs_f64(index as f64 * interval);
                    tokio::time::sleep_until(due).await;
                    match send(&target, &mut sender, index).await {
                        Ok(true) => {
                            tally.acked += 1;
                            tally.latencies.push(due.elapsed());
                        }
                        Ok(false) => tally.refused += 1,
                        Err(_) => {
                            tally.errors += 1;
                            match reconnect(&target, &mut tally).await {
                                Some(new) => sender = new,
                                None => break,
                            }
                        }
                    }
                }
                tally
            })
        })
        .collect();
    let mut total = Tally::default();
    for task in tasks {
        total.merge(task.await.expect("a connection task"));
    }
    let elapsed = start.elapsed().as_secs_f64();
    format!(
        "loop=open rate={rate} connections={connections} seconds={seconds} sent={total_requests} {} finished_after={elapsed:.2}",
        summary(&mut total),
    )
}

/// `acked=… refused=… errors=… p50_ms=… p99_ms=… max_ms=…`.
fn summary(tally: &mut Tally) -> String {
    tally.latencies.sort_unstable();
    let ms = |p: f64| -> String {
        if tally.latencies.is_empty() {
            return "n/a".to_owned();
        }
        // Nearest rank.
        let rank = ((p * tally.latencies.len() as f64).ceil() as usize).max(1);
        format!("{:.2}", tally.latencies[rank - 1].as_secs_f64() * 1e3)
    };
    format!(
        "acked={} refused={} errors={} p50_ms={} p99_ms={} max_ms={}",
        tally.acked,
        tally.refused,
        tally.errors,
        ms(0.50),
        ms(0.99),
        ms(1.0)
    )
}
