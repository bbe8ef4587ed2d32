//! Many accounts on one server: each account's deliveries on `/webhooks/aisoule/{account}`,
//! verified with the secrets a resolver gives for it, on both frameworks.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aisoule_webhooks::actix::WebhookMiddleware;
use aisoule_webhooks::axum::WebhookLayer;
use aisoule_webhooks::clock::ManualClock;
use aisoule_webhooks::event::{Dialect, EventKind};
use aisoule_webhooks::receiver::{ResolveError, SecretResolver};
use aisoule_webhooks::test_util::Delivery;
use aisoule_webhooks::{OUTCOME_HEADER, Receiver, VerifiedEvent, Verifier, WebhookSecret};
use tower::util::MapFutureLayer;
use tracing::instrument::WithSubscriber;

use crate::e2e::{ANSWER_TIMEOUT, test_now};
use crate::support::CapturedLogs;

const ACME: &str = "whsec_acme_secret";
const GLOBEX: &str = "whsec_globex_secret";

/// Accounts' secrets as a database would hold them, which a test can rotate, break, and ask
/// how often it was read.
#[derive(Clone, Default)]
struct TestResolver {
    accounts: Arc<Mutex<HashMap<String, Verifier>>>,
    failing: Arc<AtomicBool>,
    lookups: Arc<AtomicUsize>,
    /// How long each lookup takes, as a slow database's would.
    latency: Arc<Mutex<Duration>>,
}

impl TestResolver {
    fn with_two_accounts() -> Self {
        let resolver = Self::default();
        resolver.set("acme", "acme-1", ACME);
        resolver.set("globex", "globex-1", GLOBEX);
        resolver
    }

    fn set(&self, account: &str, label: &str, secret: &str) {
        let verifier = Verifier::with_label(label, WebhookSecret::new(secret).unwrap());
        self.accounts
            .lock()
            .unwrap()
            .insert(account.to_owned(), verifier);
    }
}

impl SecretResolver for TestResolver {
    async fn resolve(&self, account: &str) -> Result<Option<Verifier>, ResolveError> {
        self.lookups.fetch_add(1, Ordering::SeqCst);
        let latency = *self.latency.lock().unwrap();
        tokio::time::sleep(latency).await;
        if self.failing.load(Ordering::SeqCst) {
            return Err(ResolveError::lookup(std::io::Error::other(
                "the accounts database is down",
            )));
        }
        Ok(self.accounts.lock().unwrap().get(account).cloned())
    }
}

fn receiver(resolver: &TestResolver, ttl: Duration) -> Receiver {
    Receiver::for_accounts(resolver.clone())
        .account_cache_ttl(ttl)
        .clock(Arc::new(ManualClock::new(test_now())))
        .build()
        .unwrap()
}

/// One message event, signed with `secret`.
fn message(secret: &str, message_id: &str) -> Delivery {
    Delivery::sample(EventKind::MessageIncoming, Dialect::Developer)
        .message_id(message_id)
        .timestamp_at(test_now())
        .secret(WebhookSecret::new(secret).unwrap())
        .build()
}

/// What the handlers saw: each event's account and `message_id`.
type Seen = Arc<Mutex<Vec<(Option<String>, Option<String>)>>>;

fn saw(seen: &Seen, event: &VerifiedEvent) {
    seen.lock().unwrap().push((
        event.account().map(str::to_owned),
        event.message_id().map(str::to_owned),
    ));
}

/// A server with `/webhooks/aisoule/{account}` behind the framework's integration.
trait AccountsServer {
    async fn start(receiver: Receiver, seen: Seen, logs: CapturedLogs) -> SocketAddr;
}

struct Axum;

impl AccountsServer for Axum {
    async fn start(receiver: Receiver, seen: Seen, logs: CapturedLogs) -> SocketAddr {
        use axum::extract::State;
        use axum::routing::post;

        async fn handle(State(seen): State<Seen>, event: VerifiedEvent) -> &'static str {
            saw(&seen, &event);
            "ok"
        }
        let dispatch = logs.dispatch();
        let app = axum::Router::new()
            .route(
                "/webhooks/aisoule/{account}",
                post(handle).layer(WebhookLayer::new(receiver)),
            )
            .with_state(seen)
            .layer(MapFutureLayer::new(move |request| {
                WithSubscriber::with_subscriber(request, dispatch.clone())
            }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        addr
    }
}

struct Actix;

impl AccountsServer for Actix {
    async fn start(receiver: Receiver, seen: Seen, logs: CapturedLogs) -> SocketAddr {
        use actix_web::dev::Service;
        use actix_web::{App, HttpResponse, HttpServer, web};

        async fn handle(seen: web::Data<Seen>, event: VerifiedEvent) -> HttpResponse {
            saw(&seen, &event);
            HttpResponse::Ok().finish()
        }
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let dispatch = logs.dispatch();
        let server = HttpServer::new(move || {
            let dispatch = dispatch.clone();
            App::new()
                .wrap_fn(move |request, service| {
                    // The middleware opens the delivery span in `call`, before its future is
                    // polled: the subscriber must be the default there too.
                    tracing::dispatcher::with_default(&dispatch, || service.call(request))
                        .with_subscriber(dispatch.clone())
                })
                .app_data(web::Data::new(seen.clone()))
                .service(
                    web::resource("/webhooks/aisoule/{account}")
                        .wrap(WebhookMiddleware::new(receiver.clone()))
                        .route(web::post().to(handle)),
                )
        })
        .workers(1)
        .disable_signals()
        .listen(listener)
        .unwrap()
        .run();
        tokio::spawn(server);
        addr
    }
}

/// An answer's status, `aisoule-outcome` header, `Retry-After` header and body.
#[derive(Debug)]
struct Answered {
    status: u16,
    outcome: String,
    retry_after: Option<String>,
    body: String,
}

async fn send(addr: SocketAddr, account: &str, delivery: &Delivery) -> Answered {
    let mut request = reqwest::Client::new()
        .post(format!("http://{addr}/webhooks/aisoule/{account}"))
        .timeout(ANSWER_TIMEOUT)
        .body(delivery.body().clone());
    for (name, value) in &delivery.headers() {
        request = request.header(name.as_str(), value.as_bytes());
    }
    let response = request.send().await.expect("the server answers");
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .map(|value| value.to_str().unwrap().to_owned())
    };
    let (status, outcome, retry_after) = (
        response.status().as_u16(),
        header(OUTCOME_HEADER).expect("every answer names its outcome"),
        header("retry-after"),
    );
    let body = response.text().await.expect("the body arrives");
    Answered {
        status,
        outcome,
        retry_after,
        body,
    }
}

async fn started<F: AccountsServer>(receiver: Receiver) -> (SocketAddr, Seen, CapturedLogs) {
    let seen = Seen::default();
    let logs = CapturedLogs::default();
    let addr = F::start(receiver, seen.clone(), logs.clone()).await;
    (addr, seen, logs)
}

async fn each_account_is_verified_with_its_own_secrets<F: AccountsServer>() {
    let resolver = TestResolver::with_two_accounts();
    let (addr, seen, logs) = started::<F>(receiver(&resolver, Duration::from_secs(3600))).await;

    let acme = send(addr, "acme", &message(ACME, "acme-own")).await;
    assert_eq!((acme.status, acme.outcome.as_str()), (200, "handled"));
    let globex = send(addr, "globex", &message(GLOBEX, "globex-own")).await;
    assert_eq!((globex.status, globex.outcome.as_str()), (200, "handled"));

    // Acme's delivery under Globex's path: the same 401 as any forgery.
    let crossed = send(addr, "globex", &message(ACME, "acme-crossed")).await;
    let forged = send(addr, "globex", &message(ACME, "forged").forged()).await;
    assert_eq!(
        (crossed.status, crossed.outcome.as_str()),
        (401, "signature")
    );
    assert_eq!(crossed.body, forged.body);

    // An unknown account is 404, with one answer whatever the name or the signature.
    let unknown = send(addr, "initech", &message(ACME, "unknown-1")).await;
    assert_eq!(
        (unknown.status, unknown.outcome.as_str()),
        (404, "unknown_account")
    );
    assert_eq!(unknown.body, r#"{"error":"unknown account"}"#);
    let other = send(
        addr,
        "umbrella",
        &message("whsec_other", "unknown-2").forged(),
    )
    .await;
    assert_eq!(
        (other.status, other.body.as_str()),
        (unknown.status, unknown.body.as_str())
    );

    assert_eq!(
        *seen.lock().unwrap(),
        [
            (Some("acme".into()), Some("acme-own".into())),
            (Some("globex".into()), Some("globex-own".into())),
        ]
    );
    // The delivery span names the account on every line about the delivery.
    let text = logs.text();
    let refused: Vec<&str> = text
        .lines()
        .filter(|line| line.contains("delivery rejected") && line.contains("signature"))
        .collect();
    assert_eq!(refused.len(), 2, "{text}");
    assert!(refused[0].contains(r#"account="globex""#), "{text}");
    assert!(
        text.lines()
            .any(|line| line.contains("delivery rejected") && line.contains(r#"account="initech""#)),
        "{text}"
    );
}

async fn the_same_message_id_under_two_accounts_is_two_events<F: AccountsServer>() {
    let resolver = TestResolver::with_two_accounts();
    let (addr, seen, logs) = started::<F>(receiver(&resolver, Duration::from_secs(3600))).await;
    let acme = message(ACME, "shared-1");
    assert_eq!(send(addr, "acme", &acme).await.outcome, "handled");
    assert_eq!(
        send(addr, "globex", &message(GLOBEX, "shared-1"))
            .await
            .outcome,
        "handled"
    );
    let again = send(addr, "acme", &acme.redelivery()).await;
    assert_eq!((again.status, again.outcome.as_str()), (200, "duplicate"));
    assert_eq!(seen.lock().unwrap().len(), 2);
    let text = logs.text();
    assert!(
        text.lines().any(|line| line.contains("duplicate delivery")
            && line.contains(r#"account="acme""#)
            && line.contains(r#"message_id="shared-1""#)),
        "{text}"
    );
}

async fn a_resolver_failure_is_503_with_retry_after_and_not_cached<F: AccountsServer>() {
    let resolver = TestResolver::with_two_accounts();
    let (addr, seen, _logs) = started::<F>(receiver(&resolver, Duration::from_secs(3600))).await;
    resolver.failing.store(true, Ordering::SeqCst);
    let delivery = message(ACME, "while-down");
    let down = send(addr, "acme", &delivery).await;
    assert_eq!(
        (
            down.status,
            down.outcome.as_str(),
            down.retry_after.as_deref()
        ),
        (503, "resolver", Some("10"))
    );
    assert!(seen.lock().unwrap().is_empty());
    resolver.failing.store(false, Ordering::SeqCst);
    let back = send(addr, "acme", &delivery.redelivery()).await;
    assert_eq!((back.status, back.outcome.as_str()), (200, "handled"));
}

async fn answers_are_cached_and_a_rotation_is_taken_after_the_ttl<F: AccountsServer>() {
    const ROTATED: &str = "whsec_acme_rotated";
    // Within the TTL, the cached answer stands: one lookup, and the new secret is not yet
    // accepted. A TTL of an hour keeps this independent of the machine's speed.
    let resolver = TestResolver::with_two_accounts();
    let (addr, _, _) = started::<F>(receiver(&resolver, Duration::from_secs(3600))).await;
    assert_eq!(
        send(addr, "acme", &message(ACME, "cached-1")).await.status,
        200
    );
    assert_eq!(
        send(addr, "acme", &message(ACME, "cached-2")).await.status,
        200
    );
    assert_eq!(resolver.lookups.load(Ordering::SeqCst), 1);
    resolver.set("acme", "acme-2", ROTATED);
    assert_eq!(
        send(addr, "acme", &message(ROTATED, "cached-3"))
            .await
            .status,
        401
    );

    // With a short TTL the rotation is taken once it passes, without a restart.
    let resolver = TestResolver::with_two_accounts();
    let (addr, seen, _) = started::<F>(receiver(&resolver, Duration::from_millis(100))).await;
    assert_eq!(
        send(addr, "acme", &message(ACME, "before")).await.status,
        200
    );
    resolver.set("acme", "acme-2", ROTATED);
    let rotated = message(ROTATED, "after");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let answer = send(addr, "acme", &rotated).await;
        if answer.status == 200 {
            break;
        }
        assert_eq!(answer.status, 401, "{answer:?}");
        assert!(
            tokio::time::Instant::now() < deadline,
            "the rotated secret was not taken within 20 s of a 100 ms TTL"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // And the old secret is refused once the new answer is cached.
    assert_eq!(send(addr, "acme", &message(ACME, "old")).await.status, 401);
    assert_eq!(seen.lock().unwrap().len(), 2);
}

macro_rules! accounts_cases {
    ($module:ident, $framework:ty; $($case:ident),* $(,)?) => {
        mod $module {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case::<$framework>().await;
                }
            )*
        }
    };
}

accounts_cases!(on_axum, super::Axum;
    each_account_is_verified_with_its_own_secrets,
    the_same_message_id_under_two_accounts_is_two_events,
    a_resolver_failure_is_503_with_retry_after_and_not_cached,
    answers_are_cached_and_a_rotation_is_taken_after_the_ttl,
);

accounts_cases!(on_actix, super::Actix;
    each_account_is_verified_with_its_own_secrets,
    the_same_message_id_under_two_accounts_is_two_events,
    a_resolver_failure_is_503_with_retry_after_and_not_cached,
    answers_are_cached_and_a_rotation_is_taken_after_the_ttl,
);

/// A layer outside the routing has no path parameter to read: a wiring mistake, answered 500
/// so it is noticed, never handled as some account.
#[tokio::test]
async fn a_receiver_for_accounts_on_a_route_without_the_parameter_is_500() {
    use axum::routing::post;
    use tower::ServiceExt;

    let resolver = TestResolver::with_two_accounts();
    let app = axum::Router::new()
        .route("/webhook", post(|| async { "ok" }))
        .layer(WebhookLayer::new(receiver(
            &resolver,
            Duration::from_secs(60),
        )));
    let delivery = message(ACME, "unrouted");
    let response = tokio::time::timeout(
        ANSWER_TIMEOUT,
        app.oneshot(delivery.http_request("/webhook").map(axum::body::Body::new)),
    )
    .await
    .expect("answered in time")
    .unwrap();
    assert_eq!(response.status(), 500);
    assert_eq!(response.headers()[OUTCOME_HEADER], "misconfigured");
    assert_eq!(resolver.lookups.load(Ordering::SeqCst), 0);
}

/// The framework-free entry point takes the account directly, and keeps it on the event.
#[tokio::test]
async fn admit_account_names_the_account_on_the_event() {
    use aisoule_webhooks::Admission;

    let resolver = TestResolver::with_two_accounts();
    let receiver = receiver(&resolver, Duration::from_secs(60));
    let delivery = message(GLOBEX, "direct-1");
    let signature = delivery.signature_value().as_bytes();
    let admission = tokio::time::timeout(
        ANSWER_TIMEOUT,
        receiver.admit_account(Some("globex"), [signature], delivery.body().clone()),
    )
    .await
    .expect("admitted in time")
    .unwrap();
    let Admission::Fresh(admitted) = admission else {
        panic!("a first delivery is fresh: {admission:?}");
    };
    assert_eq!(admitted.event().account(), Some("globex"));
    assert_eq!(admitted.event().secret_label(), "globex-1");
    // Without the account, a receiver for many accounts cannot tell whose secrets to use.
    let missing = receiver
        .admit(std::iter::once(signature), delivery.body().clone())
        .await
        .unwrap_err();
    assert_eq!(missing.status(), 500);
}

/// Each counter names a known account: deliveries by outcome and secret matches by label; an
/// unknown account and a failed lookup are counted without the name the sender chose.
#[tokio::test]
async fn the_metrics_carry_the_account() {
    use aisoule_webhooks::Admission;
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};

    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _local = metrics::set_default_local_recorder(&recorder);
    let resolver = TestResolver::with_two_accounts();
    let receiver = receiver(&resolver, Duration::from_secs(3600));
    let deliver = async |account: &str, delivery: &Delivery| {
        let signature = delivery.signature_value().as_bytes();
        let admission = tokio::time::timeout(
            ANSWER_TIMEOUT,
            receiver.admit_account(Some(account), [signature], delivery.body().clone()),
        )
        .await
        .expect("admitted in time");
        if let Ok(Admission::Fresh(admitted)) = admission {
            let ok = http::StatusCode::OK;
            tokio::time::timeout(ANSWER_TIMEOUT, admitted.run(async { ok }, |ok| Some(*ok)))
                .await
                .expect("settled in time");
        }
    };
    let acme = message(ACME, "metered-1");
    deliver("acme", &acme).await;
    deliver("acme", &acme.redelivery()).await;
    deliver("globex", &message(GLOBEX, "metered-1")).await;
    deliver("initech", &message(ACME, "metered-2")).await;
    resolver.failing.store(true, Ordering::SeqCst);
    deliver("umbrella", &message(ACME, "metered-3")).await;

    let recorded = snapshotter.snapshot().into_vec();
    let count = |name: &str, labels: &[(&str, &str)]| -> u64 {
        recorded
            .iter()
            .filter(|(key, ..)| key.key().name() == name)
            .filter(|(key, ..)| {
                let mut present: Vec<(&str, &str)> =
                    key.key().labels().map(|l| (l.key(), l.value())).collect();
                present.sort_unstable();
                let mut wanted = labels.to_vec();
                wanted.sort_unstable();
                present == wanted
            })
            .map(|(.., value)| match value {
                DebugValue::Counter(count) => *count,
                other => panic!("{name} is not a counter: {other:?}"),
            })
            .sum()
    };
    const DELIVERIES: &str = "aisoule_webhook_deliveries_total";
    const MATCHES: &str = "aisoule_webhook_signature_matches_total";
    /// A counter's name, its whole label set, and its count.
    type Counted<'a> = (&'a str, &'a [(&'a str, &'a str)], u64);
    let expected: [Counted; 8] = [
        (
            DELIVERIES,
            &[("outcome", "handled"), ("account", "acme")],
            1,
        ),
        (
            DELIVERIES,
            &[("outcome", "duplicate"), ("account", "acme")],
            1,
        ),
        (
            DELIVERIES,
            &[("outcome", "handled"), ("account", "globex")],
            1,
        ),
        (DELIVERIES, &[("outcome", "unknown_account")], 1),
        (DELIVERIES, &[("outcome", "resolver")], 1),
        // Verified twice: the redelivery is verified before it is found a duplicate.
        (
            MATCHES,
            &[("secret_label", "acme-1"), ("account", "acme")],
            2,
        ),
        (
            MATCHES,
            &[("secret_label", "globex-1"), ("account", "globex")],
            1,
        ),
        (
            "aisoule_webhook_store_errors_total",
            &[("store", "resolver")],
            1,
        ),
    ];
    for (name, labels, value) in expected {
        assert_eq!(count(name, labels), value, "{name} {labels:?}");
    }
    // A name the resolver does not know is never a label: each would be a new time series.
    let labelled = |name: &str| {
        recorded
            .iter()
            .any(|(key, ..)| key.key().labels().any(|label| label.value() == name))
    };
    assert!(!labelled("initech") && !labelled("umbrella"));
}

/// Inbox mode stores each account's delivery under a key of its own: the same `message_id`
/// under two accounts is two rows, a redelivery under one is a duplicate.
#[cfg(feature = "sqlite")]
#[tokio::test]
async fn the_inbox_keeps_each_accounts_key_apart() {
    use aisoule_webhooks::Admission;
    use aisoule_webhooks::inbox::sqlite::SqliteStore;
    use aisoule_webhooks::inbox::{Inbox, JobFilter};

    let dir = tempfile::tempdir().unwrap();
    let inbox = Inbox::new(SqliteStore::open(dir.path().join("inbox.sqlite3")).unwrap());
    let resolver = TestResolver::with_two_accounts();
    let receiver = Receiver::for_accounts(resolver.clone())
        .clock(Arc::new(ManualClock::new(test_now())))
        .inbox(inbox.clone())
        .build()
        .unwrap();
    let admit = async |account: &str, delivery: &Delivery| {
        let signature = delivery.signature_value().as_bytes();
        tokio::time::timeout(
            ANSWER_TIMEOUT,
            receiver.admit_account(Some(account), [signature], delivery.body().clone()),
        )
        .await
        .expect("stored in time")
        .unwrap()
    };
    let acme = message(ACME, "stored-1");
    assert!(matches!(admit("acme", &acme).await, Admission::Stored(_)));
    let globex = admit("globex", &message(GLOBEX, "stored-1")).await;
    assert!(matches!(globex, Admission::Stored(_)));
    let again = admit("acme", &acme.redelivery()).await;
    assert!(matches!(again, Admission::Duplicate));
    let mut keys: Vec<String> =
        tokio::time::timeout(ANSWER_TIMEOUT, inbox.list(JobFilter::default()))
            .await
            .expect("listed in time")
            .unwrap()
            .into_iter()
            .map(|row| row.key)
            .collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "0::16:message.incoming:account:4:acme:id:stored-1",
            "0::16:message.incoming:account:6:globex:id:stored-1",
        ]
    );
}

/// In inbox mode the account a delivery was received under (`/webhooks/aisoule/acme`) is
/// stored with it, and the workers' handler gets it back on the event: a handler for many
/// accounts knows whose event it runs.
#[cfg(feature = "sqlite")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_workers_see_the_account_a_delivery_was_received_under() {
    use aisoule_webhooks::inbox::sqlite::SqliteStore;
    use aisoule_webhooks::inbox::{Inbox, Job};

    let dir = tempfile::tempdir().unwrap();
    let inbox = Inbox::builder(SqliteStore::open(dir.path().join("inbox.sqlite3")).unwrap())
        .poll_interval(Duration::from_millis(50))
        .build()
        .unwrap();
    let receiver = Receiver::for_accounts(TestResolver::with_two_accounts())
        .clock(Arc::new(ManualClock::new(test_now())))
        .inbox(inbox.clone())
        .build()
        .unwrap();
    let route_handler_ran = Seen::default();
    let addr = Axum::start(receiver, route_handler_ran.clone(), CapturedLogs::default()).await;
    let (ran, mut runs) = tokio::sync::mpsc::unbounded_channel();
    let workers = inbox.start(move |job: Job| {
        let ran = ran.clone();
        async move {
            let event = job.event();
            let _ = ran.send((
                event.account().map(str::to_owned),
                event.message_id().map(str::to_owned),
            ));
            Ok::<_, std::io::Error>(())
        }
    });

    let answered = send(addr, "acme", &message(ACME, "for-the-workers")).await;
    // Stored, not merely answered 200 (a stale or duplicate event is 200 too, and never
    // reaches the workers): otherwise the wait below would only fail at its bound.
    assert_eq!(
        (answered.status, answered.outcome.as_str()),
        (200, "stored"),
        "{answered:?}"
    );
    let run = tokio::time::timeout(ANSWER_TIMEOUT, runs.recv())
        .await
        .expect("the workers run the stored job in time")
        .expect("the handler reports its run");
    assert_eq!(
        run,
        (Some("acme".to_owned()), Some("for-the-workers".to_owned())),
        "the workers' event must carry the account of the route it came in on"
    );
    assert!(
        route_handler_ran.lock().unwrap().is_empty(),
        "in inbox mode the route's own handler never runs"
    );
    tokio::time::timeout(ANSWER_TIMEOUT, workers.shutdown(Duration::from_secs(1)))
        .await
        .expect("the workers stop in time");
}

/// Deliveries for an account that is not cached wait for one lookup together, instead of
/// each sending its own query to the database.
#[tokio::test(start_paused = true)]
async fn concurrent_deliveries_for_one_account_share_one_lookup() {
    let resolver = TestResolver::with_two_accounts();
    *resolver.latency.lock().unwrap() = Duration::from_millis(200);
    let receiver = receiver(&resolver, Duration::from_secs(3600));
    let deliveries: Vec<Delivery> = (0..8)
        .map(|n| message(ACME, &format!("together-{n}")))
        .collect();
    let admissions = deliveries.iter().map(|delivery| {
        let signature = delivery.signature_value().as_bytes();
        receiver.admit_account(Some("acme"), [signature], delivery.body().clone())
    });
    let admitted = tokio::time::timeout(ANSWER_TIMEOUT, futures_util::future::join_all(admissions))
        .await
        .expect("admitted in time");
    assert!(
        admitted
            .iter()
            .all(|admission| matches!(admission, Ok(aisoule_webhooks::Admission::Fresh(_))))
    );
    assert_eq!(resolver.lookups.load(Ordering::SeqCst), 1);
}

/// An account name is the sender's to choose: an empty one, or one longer than 128 bytes, is
/// unknown without asking the resolver (no lookup, no cache entry), even when the resolver
/// would know it; a name of exactly 128 bytes is still looked up.
#[tokio::test]
async fn an_empty_or_overlong_account_name_is_unknown_without_a_lookup() {
    use aisoule_webhooks::{Admission, Rejection};

    let resolver = TestResolver::with_two_accounts();
    let (longest, too_long) = ("a".repeat(128), "a".repeat(129));
    resolver.set("", "empty-1", ACME);
    resolver.set(&longest, "longest-1", ACME);
    resolver.set(&too_long, "too-long-1", ACME);
    let receiver = receiver(&resolver, Duration::from_secs(3600));
    let admit = |account: &str, message_id: &str| {
        let delivery = message(ACME, message_id);
        let receiver = receiver.clone();
        let account = account.to_owned();
        async move {
            let signature = delivery.signature_value().as_bytes();
            tokio::time::timeout(
                ANSWER_TIMEOUT,
                receiver.admit_account(Some(&account), [signature], delivery.body().clone()),
            )
            .await
            .expect("answered in time")
        }
    };
    for (account, message_id) in [("", "empty"), (too_long.as_str(), "too-long")] {
        let refused = admit(account, message_id).await;
        assert!(
            matches!(refused, Err(Rejection::UnknownAccount)),
            "{} bytes: {refused:?}",
            account.len()
        );
    }
    assert_eq!(resolver.lookups.load(Ordering::SeqCst), 0);
    let admitted = admit(&longest, "longest").await;
    let Ok(Admission::Fresh(admitted)) = admitted else {
        panic!("128 bytes is a name the resolver is asked about: {admitted:?}");
    };
    assert_eq!(admitted.event().secret_label(), "longest-1");
    assert_eq!(resolver.lookups.load(Ordering::SeqCst), 1);
}

/// A receiver for many accounts shows how it finds them in its `Debug` (the path parameter,
/// the cache's TTL), as its builder does, and never a secret.
#[test]
fn debug_shows_the_account_parameter_and_ttl_but_no_secret() {
    let resolver = TestResolver::with_two_accounts();
    let builder = Receiver::for_accounts(resolver)
        .account_parameter("tenant")
        .account_cache_ttl(Duration::from_secs(90));
    let configured = format!("{builder:?}");
    assert!(
        configured.contains(r#"AccountsConfig { parameter: "tenant", ttl: 90s, .. }"#),
        "{configured}"
    );
    let built = format!("{:?}", builder.build().unwrap());
    assert!(
        built.contains(r#"accounts: Accounts { parameter: "tenant", ttl: 90s, cached: 0, .. }"#),
        "{built}"
    );
    for shown in [&configured, &built] {
        assert!(!shown.contains(ACME) && !shown.contains(GLOBEX), "{shown}");
    }
}
