//! The AISoule platform as a sender: replay realistic delivery histories against your receiver
//! and count what it lost.
//!
//! The [`Simulator`] follows the platform's documented rules ([`PlatformRules::documented`]): a
//! 5 s timeout, only 200 counts as success, retries after 10 s, 60 s and 5 min, and then the
//! event is dropped. It sends to any tower service in process ([`ServiceTarget`]) or to a URL
//! over HTTP ([`UrlTarget`]), records every attempt with its answer and latency, and knows which
//! events the platform considers delivered and which it gave up on. A [`ScriptedHandler`]
//! plays your handler: slow, failing, panicking, or dying with its process.
//!
//! Time is tokio's: under `tokio::time::pause()` (with [`TokioClock`]
//! on the receiver) an hour of retries runs in milliseconds.
//!
//! ```
//! use std::time::Duration;
//! use aisoule_webhooks::axum::WebhookLayer;
//! use aisoule_webhooks::clock::TokioClock;
//! use aisoule_webhooks::test_util::simulator::{ScriptedHandler, ServiceTarget, Simulator};
//! use aisoule_webhooks::test_util::test_verifier;
//! use aisoule_webhooks::{Receiver, VerifiedEvent};
//! use axum::{Router, http::StatusCode, routing::post};
//! use std::sync::Arc;
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! // A handler that fails for its first 30 s: inline mode rides it out on the retries.
//! let handler = ScriptedHandler::new().failing_for(Duration::from_secs(30));
//! let receiver = Receiver::builder(test_verifier())
//!     .clock(Arc::new(TokioClock::new()))
//!     .build()
//!     .unwrap();
//! let app = Router::new().route(
//!     "/webhook",
//!     post({
//!         let handler = handler.clone();
//!         move |event: VerifiedEvent| async move {
//!             match handler.handle(&event).await {
//!                 Ok(()) => StatusCode::OK,
//!                 Err(_) => StatusCode::INTERNAL_SERVER_ERROR,
//!             }
//!         }
//!     })
//!     .layer(WebhookLayer::new(receiver)),
//! );
//! let mut simulator = Simulator::new(ServiceTarget::new(app, "/webhook"));
//! simulator.message(Duration::ZERO, "msg_1");
//! let report = simulator.run().await;
//! assert!(report.delivered("msg_1"));
//! assert_eq!(report.attempts_of("msg_1").len(), 3); // 0 s and 10 s failed, 70 s succeeded
//! assert_eq!(handler.completions("msg_1"), 1);
//! # }
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::StatusCode;
use http_body_util::{BodyExt, Full};
use tokio::time::Instant;

use super::Delivery;
use crate::clock::{Clock, TokioClock};
use crate::event::{Dialect, EventKind};
use crate::receiver::VerifiedEvent;

/// How the platform delivers: its answer timeout and the waits before each retry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlatformRules {
    /// How long the platform waits for an answer before it counts the attempt as failed.
    pub timeout: Duration,
    /// The waits after each failed attempt; once they are used up the event is dropped.
    pub retries: Vec<Duration>,
}

impl PlatformRules {
    /// The documented rules: a 5 s timeout; retries after 10 s, 60 s and 5 min.
    pub fn documented() -> Self {
        Self {
            timeout: Duration::from_secs(5),
            retries: vec![
                Duration::from_secs(10),
                Duration::from_secs(60),
                Duration::from_secs(5 * 60),
            ],
        }
    }

    /// Every duration divided by `divisor`, for runs on real time (over HTTP, with child
    /// processes) that cannot wait the platform's real minutes.
    pub fn scaled_down(&self, divisor: u32) -> Self {
        Self {
            timeout: self.timeout / divisor,
            retries: self.retries.iter().map(|wait| *wait / divisor).collect(),
        }
    }

    /// The same rules with the timeout raised to `floor` if it is shorter: scaled-down rules
    /// that still give an endpoint on a loaded machine, or across a network, time to answer.
    pub fn with_timeout_at_least(mut self, floor: Duration) -> Self {
        self.timeout = self.timeout.max(floor);
        self
    }

    /// How long after its first attempt the platform sends an event for the last time.
    pub fn horizon(&self) -> Duration {
        self.retries.iter().sum::<Duration>() + self.timeout * (self.retries.len() as u32 + 1)
    }
}

impl Default for PlatformRules {
    fn default() -> Self {
        Self::documented()
    }
}

/// What one attempt got back: a status and body, or no answer at all.
pub type Sent = Result<(StatusCode, Bytes), String>;

/// The future a [`Target`] returns.
pub type SendFuture = Pin<Box<dyn Future<Output = Sent> + Send>>;

/// Where the simulator sends deliveries.
pub trait Target: Send + Sync + 'static {
    /// Sends one delivery and returns the answer; an `Err` is a transport failure (refused,
    /// reset). Dropping the future hangs up, as the platform does at its timeout.
    fn send(&self, delivery: &Delivery) -> SendFuture;
}

/// Any tower service in process, such as an axum `Router`: each delivery is a `POST` to `path`.
#[derive(Debug, Clone)]
pub struct ServiceTarget<S> {
    service: S,
    path: String,
}

impl<S> ServiceTarget<S> {
    /// Sends to `service`, at `path`.
    pub fn new(service: S, path: impl Into<String>) -> Self {
        Self {
            service,
            path: path.into(),
        }
    }
}

impl<S, B> Target for ServiceTarget<S>
where
    S: tower_service::Service<http::Request<Full<Bytes>>, Response = http::Response<B>>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
    S::Error: fmt::Display,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: fmt::Display,
{
    fn send(&self, delivery: &Delivery) -> SendFuture {
        let mut service = self.service.clone();
        let request = delivery.http_request(&self.path);
        Box::pin(async move {
            std::future::poll_fn(|cx| service.poll_ready(cx))
                .await
                .map_err(|e| e.to_string())?;
            let response = service.call(request).await.map_err(|e| e.to_string())?;
            let status = response.status();
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|e| e.to_string())?
                .to_bytes();
            Ok((status, body))
        })
    }
}

/// A receiver over real HTTP (HTTP/1.1, keep-alive), such as a child process on loopback.
#[derive(Clone)]
pub struct UrlTarget {
    url: http::Uri,
    client: hyper_util::client::legacy::Client<
        hyper_util::client::legacy::connect::HttpConnector,
        Full<Bytes>,
    >,
}

impl fmt::Debug for UrlTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UrlTarget").field("url", &self.url).finish()
    }
}

impl UrlTarget {
    /// Sends to `url`, such as `http://127.0.0.1:8080/webhook`.
    ///
    /// # Errors
    ///
    /// The URL's parse error, as text, when it is not a URL.
    pub fn new(url: &str) -> Result<Self, String> {
        let url = url.parse().map_err(|e| format!("{url:?}: {e}"))?;
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http();
        Ok(Self { url, client })
    }
}

impl Target for UrlTarget {
    fn send(&self, delivery: &Delivery) -> SendFuture {
        let mut request = delivery.http_request("/");
        *request.uri_mut() = self.url.clone();
        let client = self.client.clone();
        Box::pin(async move {
            let response = client.request(request).await.map_err(|e| e.to_string())?;
            let status = response.status();
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|e| e.to_string())?
                .to_bytes();
            Ok((status, body))
        })
    }
}

/// One attempt the platform made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    /// The event's label (its `message_id`, or the label it was planned with).
    pub event: String,
    /// 1 for the first attempt of a send, 2 for its first retry, …
    pub number: u32,
    /// When it was sent, from the start of the run.
    pub sent_at: Duration,
    /// How long until the answer, or until the platform gave up waiting.
    pub latency: Duration,
    /// The answer.
    pub outcome: AttemptOutcome,
}

/// How an attempt ended, as the platform saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptOutcome {
    /// An answer, with its body.
    Answered(StatusCode, String),
    /// No answer within the platform's timeout: it hung up.
    TimedOut,
    /// The connection dropped after the request was sent (injected), so no answer was read.
    Dropped,
    /// The request could not be sent, or its answer not read.
    Failed(String),
}

impl AttemptOutcome {
    /// Whether the platform counts it as delivered: a 200, and nothing else.
    pub fn is_success(&self) -> bool {
        matches!(self, Self::Answered(status, _) if *status == StatusCode::OK)
    }
}

/// The clock offset applied to the timestamps the platform writes into its payloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClockSkew {
    /// The platform's clock agrees with the receiver's.
    #[default]
    None,
    /// The platform's clock runs ahead by this much.
    Ahead(Duration),
    /// The platform's clock runs behind by this much.
    Behind(Duration),
}

/// Builds the delivery for an event when the platform creates it, from its creation time.
type MakeDelivery = Box<dyn Fn(SystemTime) -> Delivery + Send + Sync>;

struct Planned {
    label: String,
    /// When the platform creates the event (its payload timestamp), from the start of the run.
    created: Duration,
    /// How long after creation the first attempt goes out (a backlog delays it).
    delay: Duration,
    /// Extra sends of the same bytes, each with its own retries, this long after the first.
    duplicates: Vec<Duration>,
    /// Attempts (1-based, across the first send's retries) whose connection is dropped.
    dropped_attempts: BTreeSet<u32>,
    make: MakeDelivery,
}

/// The platform, replaying a planned history against a [`Target`].
///
/// Plan events with [`message`](Self::message), [`status`](Self::status), [`burst`](Self::burst)
/// or [`event`](Self::event), change how they go out with [`duplicate`](Self::duplicate),
/// [`backlog`](Self::backlog), [`drop_connection`](Self::drop_connection) and
/// [`clock_skew`](Self::clock_skew), then [`run`](Self::run).
pub struct Simulator {
    target: Arc<dyn Target>,
    rules: PlatformRules,
    clock: Arc<dyn Clock>,
    skew: ClockSkew,
    hang_up_after: Duration,
    planned: Vec<Planned>,
}

impl fmt::Debug for Simulator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Simulator")
            .field("rules", &self.rules)
            .field("clock", &self.clock)
            .field("skew", &self.skew)
            .field("planned", &self.planned.len())
            .finish_non_exhaustive()
    }
}

impl Simulator {
    /// A platform sending to `target` by the documented rules, stamping payloads from a
    /// [`TokioClock`] started now.
    pub fn new(target: impl Target) -> Self {
        Self {
            target: Arc::new(target),
            rules: PlatformRules::documented(),
            clock: Arc::new(TokioClock::new()),
            skew: ClockSkew::None,
            hang_up_after: Duration::from_millis(1),
            planned: Vec::new(),
        }
    }

    /// Delivers by `rules` instead of the documented ones.
    pub fn rules(mut self, rules: PlatformRules) -> Self {
        self.rules = rules;
        self
    }

    /// The clock the platform stamps payloads from. Defaults to a [`TokioClock`].
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Offsets every payload timestamp, as a platform whose clock is wrong would.
    pub fn clock_skew(&mut self, skew: ClockSkew) -> &mut Self {
        self.skew = skew;
        self
    }

    /// Plans an event created `at` after the start; `make` builds its delivery from its
    /// creation time (after any [`clock_skew`](Self::clock_skew)).
    pub fn event(
        &mut self,
        at: Duration,
        label: impl Into<String>,
        make: impl Fn(SystemTime) -> Delivery + Send + Sync + 'static,
    ) -> &mut Self {
        self.planned.push(Planned {
            label: label.into(),
            created: at,
            delay: Duration::ZERO,
            duplicates: Vec::new(),
            dropped_attempts: BTreeSet::new(),
            make: Box::new(make),
        });
        self
    }

    /// Plans an incoming text message with this `message_id`, created `at` after the start.
    pub fn message(&mut self, at: Duration, message_id: &str) -> &mut Self {
        let id = message_id.to_owned();
        self.event(at, message_id, move |now| {
            Delivery::sample(EventKind::MessageIncoming, Dialect::Developer)
                .message_id(id.clone())
                .timestamp_at(now)
                .build()
        })
    }

    /// Plans a status event (`message.delivered`, `message.read`, …) of the message
    /// `message_id`, labelled `kind:message_id`. Plan a read before its delivered to reorder.
    pub fn status(&mut self, at: Duration, kind: EventKind, message_id: &str) -> &mut Self {
        let id = message_id.to_owned();
        let label = format!("{}:{message_id}", kind.as_str());
        self.event(at, label, move |now| {
            Delivery::sample(kind.clone(), Dialect::Developer)
                .message_id(id.clone())
                .timestamp_at(now)
                .build()
        })
    }

    /// Plans `count` messages created at the same instant, `prefix-0` to `prefix-{count-1}`.
    pub fn burst(&mut self, at: Duration, count: usize, prefix: &str) -> &mut Self {
        for i in 0..count {
            self.message(at, &format!("{prefix}-{i}"));
        }
        self
    }

    fn planned_mut(&mut self, label: &str) -> &mut Planned {
        self.planned
            .iter_mut()
            .find(|p| p.label == label)
            .unwrap_or_else(|| panic!("no event labelled {label:?} is planned"))
    }

    /// Sends the event `label` a second time, `after` its first send, with retries of its
    /// own: the platform "may send the same event twice".
    pub fn duplicate(&mut self, label: &str, after: Duration) -> &mut Self {
        self.planned_mut(label).duplicates.push(after);
        self
    }

    /// Holds the event `label` back for `delay` after it was created, as a platform working
    /// through a backlog does: its payload timestamp stays its creation time.
    pub fn backlog(&mut self, label: &str, delay: Duration) -> &mut Self {
        self.planned_mut(label).delay = delay;
        self
    }

    /// Drops the connection of attempt `number` (1-based) of the event `label` just after the
    /// request is sent: the receiver gets it, the platform never reads the answer and retries.
    pub fn drop_connection(&mut self, label: &str, number: u32) -> &mut Self {
        self.planned_mut(label).dropped_attempts.insert(number);
        self
    }

    /// Sends every planned event by the rules and waits until the platform is done with each.
    pub async fn run(self) -> SimulationReport {
        let start = Instant::now();
        let wall_start = self.clock.now();
        let log = Arc::new(Mutex::new(Vec::new()));
        let rules = Arc::new(self.rules);
        let mut sends = tokio::task::JoinSet::new();
        for planned in self.planned {
            let created_wall = wall_start + planned.created;
            let stamped = match self.skew {
                ClockSkew::None => created_wall,
                ClockSkew::Ahead(by) => created_wall + by,
                ClockSkew::Behind(by) => created_wall - by,
            };
            let delivery = (planned.make)(stamped);
            let first = planned.created + planned.delay;
            let offsets = std::iter::once((first, planned.dropped_attempts))
                .chain(
                    planned
                        .duplicates
                        .iter()
                        .map(|after| (first + *after, BTreeSet::new())),
                )
                .collect::<Vec<_>>();
            for (offset, dropped) in offsets {
                let send = Sending {
                    label: planned.label.clone(),
                    delivery: delivery.clone(),
                    target: self.target.clone(),
                    rules: rules.clone(),
                    log: log.clone(),
                    dropped,
                    hang_up_after: self.hang_up_after,
                    start,
                };
                sends.spawn(async move {
                    tokio::time::sleep_until(start + offset).await;
                    let label = send.label.clone();
                    (label, send.run().await)
                });
            }
        }
        let mut delivered = BTreeSet::new();
        let mut sent = BTreeSet::new();
        while let Some(joined) = sends.join_next().await {
            let (label, success) = joined.expect("a simulated send never panics");
            if success {
                delivered.insert(label.clone());
            }
            sent.insert(label);
        }
        let mut attempts = std::mem::take(&mut *log.lock().unwrap_or_else(|p| p.into_inner()));
        attempts.sort_by_key(|a: &Attempt| a.sent_at);
        let dropped = sent.difference(&delivered).cloned().collect();
        SimulationReport {
            delivered,
            dropped,
            attempts,
        }
    }
}

/// One send of one event, with its retries.
struct Sending {
    label: String,
    delivery: Delivery,
    target: Arc<dyn Target>,
    rules: Arc<PlatformRules>,
    log: Arc<Mutex<Vec<Attempt>>>,
    dropped: BTreeSet<u32>,
    hang_up_after: Duration,
    start: Instant,
}

impl Sending {
    /// Returns whether the platform counts this send as delivered.
    async fn run(self) -> bool {
        let attempts = self.rules.retries.len() as u32 + 1;
        for number in 1..=attempts {
            let sent_at = Instant::now();
            let waiting = self.target.send(&self.delivery);
            let outcome = if self.dropped.contains(&number) {
                match tokio::time::timeout(self.hang_up_after, waiting).await {
                    // Answered before the hang-up: the platform still never reads it.
                    Ok(_) | Err(_) => AttemptOutcome::Dropped,
                }
            } else {
                match tokio::time::timeout(self.rules.timeout, waiting).await {
                    Ok(Ok((status, body))) => AttemptOutcome::Answered(
                        status,
                        String::from_utf8_lossy(&body).into_owned(),
                    ),
                    Ok(Err(error)) => AttemptOutcome::Failed(error),
                    Err(_) => AttemptOutcome::TimedOut,
                }
            };
            let success = outcome.is_success();
            self.log
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(Attempt {
                    event: self.label.clone(),
                    number,
                    sent_at: sent_at - self.start,
                    latency: sent_at.elapsed(),
                    outcome,
                });
            if success {
                return true;
            }
            if let Some(wait) = self.rules.retries.get(number as usize - 1) {
                tokio::time::sleep(*wait).await;
            }
        }
        false
    }
}

/// What the platform saw: every attempt, and which events it delivered or gave up on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SimulationReport {
    delivered: BTreeSet<String>,
    dropped: BTreeSet<String>,
    attempts: Vec<Attempt>,
}

impl SimulationReport {
    /// Whether the platform counts the event `label` as delivered: some send of it got a 200.
    pub fn delivered(&self, label: &str) -> bool {
        self.delivered.contains(label)
    }

    /// Every event the platform counts as delivered.
    pub fn delivered_events(&self) -> &BTreeSet<String> {
        &self.delivered
    }

    /// Every event the platform gave up on: no send of it got a 200 within its retries.
    pub fn dropped_events(&self) -> &BTreeSet<String> {
        &self.dropped
    }

    /// Every attempt, in the order sent.
    pub fn attempts(&self) -> &[Attempt] {
        &self.attempts
    }

    /// The attempts of the event `label`, in the order sent.
    pub fn attempts_of(&self, label: &str) -> Vec<&Attempt> {
        self.attempts.iter().filter(|a| a.event == label).collect()
    }

    /// The answers that were not a 200, by status (or `timeout`, `dropped`, `failed`), with
    /// how many of each: what the platform's delivery log would show.
    pub fn failures(&self) -> BTreeMap<String, usize> {
        let mut failures = BTreeMap::new();
        for attempt in &self.attempts {
            let key = match &attempt.outcome {
                AttemptOutcome::Answered(status, _) if *status == StatusCode::OK => continue,
                AttemptOutcome::Answered(status, _) => status.as_u16().to_string(),
                AttemptOutcome::TimedOut => "timeout".to_owned(),
                AttemptOutcome::Dropped => "dropped".to_owned(),
                AttemptOutcome::Failed(_) => "failed".to_owned(),
            };
            *failures.entry(key).or_default() += 1;
        }
        failures
    }
}

/// Why a [`ScriptedHandler`] failed on purpose.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the scripted handler failed on purpose: {0}")]
pub struct ScriptedFailure(pub &'static str);

/// A handler whose behaviour a test scripts: slow, failing for its first calls or for a stretch
/// of time, panicking. It counts, per event, how many calls ran to completion: an event
/// completed twice was handled twice.
///
/// Events are told apart by `kind:message_id` for status events and `message_id` otherwise,
/// the labels [`Simulator::status`] and [`Simulator::message`] give them.
#[derive(Clone, Debug)]
pub struct ScriptedHandler {
    script: Arc<Script>,
    calls: Arc<AtomicU32>,
    completions: Arc<Mutex<BTreeMap<String, u32>>>,
}

#[derive(Debug, Clone, Default)]
struct Script {
    slow: Duration,
    fail_first: u32,
    fail_until: Option<Instant>,
    panic_first: u32,
}

impl Default for ScriptedHandler {
    fn default() -> Self {
        Self::new()
    }
}

impl ScriptedHandler {
    /// A handler that succeeds at once.
    pub fn new() -> Self {
        Self {
            script: Arc::new(Script::default()),
            calls: Arc::default(),
            completions: Arc::default(),
        }
    }

    fn with(self, change: impl FnOnce(&mut Script)) -> Self {
        let mut script = Arc::unwrap_or_clone(self.script);
        change(&mut script);
        Self {
            script: Arc::new(script),
            ..self
        }
    }

    /// Takes `duration` (tokio time) before it answers.
    pub fn slow(self, duration: Duration) -> Self {
        self.with(|s| s.slow = duration)
    }

    /// Fails its first `calls` calls (after the ones [`panicking_first`](Self::panicking_first)
    /// panics on).
    pub fn failing_first(self, calls: u32) -> Self {
        self.with(|s| s.fail_first = calls)
    }

    /// Fails every call for `duration` from now (tokio time): an outage of whatever it writes
    /// to.
    pub fn failing_for(self, duration: Duration) -> Self {
        let until = Instant::now() + duration;
        self.with(|s| s.fail_until = Some(until))
    }

    /// Panics on its first `calls` calls.
    pub fn panicking_first(self, calls: u32) -> Self {
        self.with(|s| s.panic_first = calls)
    }

    /// Handles `event` by the script: `Ok` once it completed.
    ///
    /// # Errors
    ///
    /// [`ScriptedFailure`] when the script says this call fails.
    ///
    /// # Panics
    ///
    /// When the script says this call panics.
    pub async fn handle(&self, event: &VerifiedEvent) -> Result<(), ScriptedFailure> {
        let call = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        let script = &self.script;
        if call <= script.panic_first {
            panic!("the scripted handler panics on call {call}");
        }
        if !script.slow.is_zero() {
            tokio::time::sleep(script.slow).await;
        }
        if call <= script.panic_first + script.fail_first {
            return Err(ScriptedFailure("one of its first calls"));
        }
        if script
            .fail_until
            .is_some_and(|until| Instant::now() < until)
        {
            return Err(ScriptedFailure("within its outage"));
        }
        *self
            .completions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(label_of(event))
            .or_default() += 1;
        Ok(())
    }

    /// How many calls for the event `label` ran to completion.
    pub fn completions(&self, label: &str) -> u32 {
        self.completions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(label)
            .copied()
            .unwrap_or(0)
    }

    /// Every event's completed calls.
    pub fn all_completions(&self) -> BTreeMap<String, u32> {
        self.completions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// How many times it was called, whatever the outcome.
    pub fn calls(&self) -> u32 {
        self.calls.load(Ordering::SeqCst)
    }
}

/// The label the simulator gives an event: `kind:message_id` for a status, the `message_id`
/// otherwise.
pub fn label_of(event: &VerifiedEvent) -> String {
    let id = event.message_id().unwrap_or_default();
    if event.kind().is_message_status() {
        format!("{}:{id}", event.kind().as_str())
    } else {
        id.to_owned()
    }
}

/// What a history cost, judged from both sides: the platform's report and the handler's
/// completions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Losses {
    /// Delivered by the platform's account, never completed by the handler.
    pub lost: BTreeSet<String>,
    /// Completed by the handler more than once.
    pub twice: BTreeSet<String>,
    /// Given up on by the platform.
    pub dropped_by_platform: BTreeSet<String>,
}

impl Losses {
    /// Compares the platform's `report` with the handler's completions.
    pub fn of(report: &SimulationReport, completions: &BTreeMap<String, u32>) -> Self {
        Self {
            lost: report
                .delivered
                .iter()
                .filter(|label| completions.get(*label).copied().unwrap_or(0) == 0)
                .cloned()
                .collect(),
            twice: completions
                .iter()
                .filter(|(_, count)| **count > 1)
                .map(|(label, _)| label.clone())
                .collect(),
            dropped_by_platform: report.dropped.clone(),
        }
    }
}

impl fmt::Display for Losses {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "lost {}, twice {}, dropped by the platform {}",
            self.lost.len(),
            self.twice.len(),
            self.dropped_by_platform.len()
        )
    }
}
