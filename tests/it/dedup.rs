//! One behavioural suite for the idempotency protocol, run against both stores.

use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aisoule_webhooks::clock::ManualClock;
use aisoule_webhooks::dedup::{
    Claim, ClaimGuard, ClaimToken, DedupKey, Deduplicator, IdempotencyStore, MemoryStore,
    StoreClaim,
};
use aisoule_webhooks::test_util::store_suite::StoreUnderTest;
use aisoule_webhooks::{ConfigError, DedupError, Event};
use proptest::prelude::*;
use std::future::Future;
use std::pin::Pin;

#[cfg(feature = "redis")]
use crate::redis_server::RedisServer;
use crate::support::DownStore;

/// A store under test, and a way to move its time forward.
enum Backend {
    Memory {
        clock: Arc<ManualClock>,
        store: Arc<MemoryStore>,
    },
    #[cfg(feature = "redis")]
    Redis {
        server: RedisServer,
        store: Arc<dyn IdempotencyStore>,
    },
}

#[cfg(feature = "redis")]
/// Redis expires keys on its own clock, so its tests use short leases and real waiting.
const REDIS_LEASE: Duration = Duration::from_millis(400);
#[cfg(feature = "redis")]
const REDIS_TTL: Duration = Duration::from_millis(800);

impl Backend {
    fn memory() -> Self {
        let clock = Arc::new(ManualClock::new(
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_780_000_000),
        ));
        let store = Arc::new(MemoryStore::new().with_clock(clock.clone()));
        Self::Memory { clock, store }
    }

    #[cfg(feature = "redis")]
    async fn redis() -> Option<Self> {
        let server = RedisServer::start()?;
        let store = aisoule_webhooks::dedup::redis::RedisStore::connect(&server.url())
            .await
            .expect("connects to the test server");
        Some(Self::Redis {
            server,
            store: Arc::new(store),
        })
    }

    fn store(&self) -> Arc<dyn IdempotencyStore> {
        match self {
            Self::Memory { store, .. } => store.clone(),
            #[cfg(feature = "redis")]
            Self::Redis { store, .. } => store.clone(),
        }
    }

    /// A deduplicator whose lease and TTL suit this backend's way of passing time.
    fn dedup(&self) -> Deduplicator {
        Deduplicator::from_arc(self.store())
            .with_lease(StoreUnderTest::lease(self))
            .unwrap()
            .with_ttl(StoreUnderTest::ttl(self))
            .unwrap()
    }
}

impl StoreUnderTest for Backend {
    fn store(&self) -> Arc<dyn IdempotencyStore> {
        Backend::store(self)
    }

    fn lease(&self) -> Duration {
        match self {
            Self::Memory { .. } => Deduplicator::DEFAULT_LEASE,
            #[cfg(feature = "redis")]
            Self::Redis { .. } => REDIS_LEASE,
        }
    }

    fn ttl(&self) -> Duration {
        match self {
            Self::Memory { .. } => Deduplicator::DEFAULT_TTL,
            #[cfg(feature = "redis")]
            Self::Redis { .. } => REDIS_TTL,
        }
    }

    fn advance(&self, by: Duration) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        match self {
            Self::Memory { clock, .. } => {
                clock.advance(by);
                Box::pin(async {})
            }
            #[cfg(feature = "redis")]
            Self::Redis { .. } => Box::pin(tokio::time::sleep(by)),
        }
    }
}

fn event(kind: &str, message_id: &str) -> Event {
    let body =
        format!(r#"{{"event":"{kind}","data":{{"message_id":"{message_id}","status":"x"}}}}"#);
    Event::parse(body.as_bytes()).unwrap()
}

fn fresh(claim: Claim) -> ClaimGuard {
    match claim {
        Claim::Fresh(guard) => guard,
        other => panic!("expected a fresh claim, got {other:?}"),
    }
}

macro_rules! both_stores {
    ($($case:ident),* $(,)?) => {
        mod memory_store {
            use aisoule_webhooks::test_util::store_suite;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    store_suite::$case(&super::Backend::memory()).await;
                }
            )*
        }
        #[cfg(feature = "redis")]
        mod redis_store {
            use aisoule_webhooks::test_util::store_suite;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    if let Some(backend) = super::Backend::redis().await {
                        store_suite::$case(&backend).await;
                    }
                }
            )*
        }
    };
}

both_stores!(
    fresh_then_in_flight_then_duplicate,
    release_on_failure_lets_the_retry_through,
    drop_without_commit_releases,
    an_expired_lease_frees_the_key_and_the_stale_owner_cannot_commit,
    a_renewed_claim_outlives_its_lease,
    a_claim_cancelled_after_it_took_effect_is_released_by_its_token,
    completed_keys_are_forgotten_after_the_ttl,
    namespaces_are_kept_apart,
    statuses_sharing_a_message_id_are_distinct_events,
    hundred_concurrent_claims_give_exactly_one_fresh,
);

/// Full, it holds exactly its capacity, never more, and counts every eviction: the shards'
/// sizes add up to the capacity, also when it does not divide evenly over the 16 shards.
/// (1 000 keys fill every shard of 70: each gets about 62.)
#[tokio::test]
async fn the_memory_store_never_grows_past_its_capacity_and_counts_evictions() {
    for capacity in [64, 70] {
        let store = Arc::new(MemoryStore::with_capacity(
            NonZeroUsize::new(capacity).unwrap(),
        ));
        let dedup = Deduplicator::from_arc(store.clone());
        for i in 0..1_000 {
            let guard = fresh(
                dedup
                    .claim(&event("message.incoming", &format!("m{i}")))
                    .await
                    .unwrap(),
            );
            guard.commit().await.unwrap();
            assert!(store.len() <= capacity);
        }
        assert_eq!(store.capacity(), capacity);
        assert_eq!(store.len(), capacity, "every shard is full");
        assert_eq!(store.evictions(), 1_000 - capacity as u64);
    }
}

#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_store_errors_while_the_server_is_down_and_recovers_after() {
    let Some(Backend::Redis { mut server, store }) = Backend::redis().await else {
        return;
    };
    let dedup = Deduplicator::from_arc(store);
    let e = event("message.incoming", "wamid.kill");
    let held = fresh(dedup.claim(&e).await.unwrap());

    server.kill();
    let down = dedup.claim(&event("message.incoming", "wamid.other")).await;
    assert!(
        matches!(down, Err(DedupError::Unavailable { .. })),
        "{down:?}"
    );
    // The Redis client's own error is the source: its words reach the log through the chain,
    // once, and the variant's own message does not repeat them.
    let down = down.unwrap_err();
    let client_said = std::error::Error::source(&down)
        .expect("the client's error is kept")
        .to_string();
    assert!(!client_said.is_empty());
    assert!(!down.to_string().contains(&client_said), "{down}");
    assert!(
        aisoule_webhooks::error::chain(&down)
            .to_string()
            .ends_with(&client_said),
        "{}",
        aisoule_webhooks::error::chain(&down)
    );
    assert!(held.commit().await.is_err());

    server.restart(); // a fresh, empty server on the same port
    let mut recovered = None;
    for _ in 0..100 {
        match dedup.claim(&e).await {
            Ok(claim) => {
                recovered = Some(claim);
                break;
            }
            Err(DedupError::Unavailable { .. }) => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(other) => panic!("{other}"),
        }
    }
    assert!(
        matches!(recovered, Some(Claim::Fresh(_))),
        "the store works again once the server is back"
    );
}

#[tokio::test]
async fn store_errors_fail_closed_unless_opted_out() {
    let e = event("message.incoming", "wamid.8");
    let closed = Deduplicator::new(DownStore);
    assert_eq!(
        closed.claim(&e).await.unwrap_err(),
        DedupError::unavailable("down")
    );

    let open = Deduplicator::new(DownStore).fail_open_on_store_error();
    let guard = fresh(open.claim(&e).await.unwrap());
    assert!(!guard.is_guarded());
    guard.commit().await.unwrap();
}

/// What a guard says about itself: its key prints as its text (logs and `LeaseLost` name it
/// so), it is backed by the store, it carries the deduplicator's lease (what `renew` extends
/// to), and its `Debug` names key and state but not its token, the proof that lets its holder
/// commit or free it.
#[tokio::test]
async fn a_guard_reports_its_key_lease_and_state_but_not_its_token() {
    let lease = Duration::from_secs(7);
    let dedup = Deduplicator::in_memory().with_lease(lease).unwrap();
    let guard = fresh(
        dedup
            .claim(&event("message.read", "m-debug"))
            .await
            .unwrap(),
    );
    assert_eq!(guard.key().to_string(), "0::12:message.read:id:m-debug");
    assert!(guard.is_guarded());
    assert_eq!(guard.lease(), lease);
    assert_eq!(
        format!("{guard:?}"),
        r#"ClaimGuard { key: DedupKey("0::12:message.read:id:m-debug"), held: true, guarded: true }"#
    );
}

/// The memory store's lease and TTL end at exactly their length, to the millisecond: a key
/// is held one millisecond before and free at the end. A stale owner may commit a key whose
/// newer claim has just expired (nobody holds it), not one millisecond earlier.
#[tokio::test]
async fn the_memory_store_ends_leases_and_ttls_at_exactly_their_length() {
    let clock = Arc::new(ManualClock::new(
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_780_000_000),
    ));
    let store = MemoryStore::new().with_clock(clock.clone());
    let (stale, newer, later) = (ClaimToken::new(1), ClaimToken::new(2), ClaimToken::new(3));
    let key = DedupKey::from_string("boundary");
    let (lease, ttl, ms) = (
        Duration::from_secs(10),
        Duration::from_secs(100),
        Duration::from_millis(1),
    );
    assert!(store.is_empty());

    assert_eq!(
        store.claim(&key, stale, lease).await,
        Ok(StoreClaim::Acquired)
    );
    assert!(!store.is_empty());
    clock.advance(lease - ms);
    assert_eq!(
        store.claim(&key, newer, lease).await,
        Ok(StoreClaim::InFlight)
    );
    clock.advance(ms);
    assert_eq!(
        store.claim(&key, newer, lease).await,
        Ok(StoreClaim::Acquired)
    );

    clock.advance(lease - ms);
    assert!(matches!(
        store.commit(&key, stale, ttl).await,
        Err(DedupError::LeaseLost { .. })
    ));
    clock.advance(ms);
    assert_eq!(store.commit(&key, stale, ttl).await, Ok(()));

    clock.advance(ttl - ms);
    assert_eq!(
        store.claim(&key, later, lease).await,
        Ok(StoreClaim::Completed)
    );
    clock.advance(ms);
    assert_eq!(
        store.claim(&key, later, lease).await,
        Ok(StoreClaim::Acquired)
    );
}

/// `Debug` shows the settings an operator checks (store, lease, TTL, namespace, key function,
/// fail-open), and the getters return them.
#[test]
fn a_deduplicator_shows_its_settings() {
    let plain = Deduplicator::in_memory();
    assert_eq!(plain.namespace(), None);
    assert_eq!(
        format!("{plain:?}"),
        "Deduplicator { store: MemoryStore { capacity: 100000, shards: 16, evictions: 0, .. }, \
         lease: 60s, ttl: 86400s, namespace: None, custom_key_fn: false, fail_open: false }"
    );
    let named = Deduplicator::in_memory()
        .with_namespace("crm")
        .unwrap()
        .with_key_fn(|e| e.kind().to_string())
        .fail_open_on_store_error();
    assert_eq!(named.namespace(), Some("crm"));
    let debug = format!("{named:?}");
    assert!(
        debug.ends_with(r#"namespace: Some("crm"), custom_key_fn: true, fail_open: true }"#),
        "{debug}"
    );
}

/// The operation timeout bounds every call on a hung server (SIGSTOP: the socket accepts,
/// nothing answers), even over a connection that has no response timeout of its own: the
/// call fails as unavailable (a 503) instead of waiting for the server.
#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operation_timeout_bounds_calls_to_a_hung_redis_on_any_connection() {
    use aisoule_webhooks::dedup::redis::RedisStore;
    use redis::aio::{ConnectionManager, ConnectionManagerConfig};
    let Some(server) = RedisServer::start() else {
        return;
    };
    let client = redis::Client::open(server.url()).unwrap();
    let unbounded = ConnectionManagerConfig::new().set_response_timeout(None);
    let connection = ConnectionManager::new_with_config(client, unbounded)
        .await
        .unwrap();
    let timeout = Duration::from_millis(300);
    let dedup = Deduplicator::new(
        RedisStore::from_connection_manager(connection)
            .with_operation_timeout(timeout)
            .unwrap(),
    );
    // Loads the claim script while the server answers.
    let warm = fresh(
        dedup
            .claim(&event("message.incoming", "wamid.warm"))
            .await
            .unwrap(),
    );
    warm.commit().await.unwrap();

    server.pause();
    let hung = event("message.incoming", "wamid.hung");
    let answer = tokio::time::timeout(timeout + Duration::from_secs(2), dedup.claim(&hung)).await;
    server.resume();
    let answer = answer.expect("the claim ends within the operation timeout");
    // The timeout is the error's source, typed, not a sentence flattened into the variant.
    let error = answer.expect_err("a hung server is unavailable");
    assert!(matches!(error, DedupError::Unavailable { .. }), "{error:?}");
    let source = std::error::Error::source(&error).expect("the timeout is kept as the source");
    assert_eq!(source.to_string(), format!("no answer within {timeout:?}"));
    assert_eq!(
        aisoule_webhooks::error::chain(&error).to_string(),
        format!("the idempotency store is unavailable: no answer within {timeout:?}")
    );
}

/// The Redis store's settings: `Debug` names its prefix and operation timeout (never the URL,
/// which may hold a password), and a zero operation timeout is refused.
#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_redis_store_shows_its_settings_and_refuses_a_zero_timeout() {
    use aisoule_webhooks::dedup::redis::RedisStore;
    let Some(server) = RedisServer::start() else {
        return;
    };
    let store = RedisStore::connect(&server.url()).await.unwrap();
    assert_eq!(
        store.operation_timeout(),
        RedisStore::DEFAULT_OPERATION_TIMEOUT
    );
    assert_eq!(
        format!("{store:?}"),
        r#"RedisStore { prefix: "aisoule-webhooks:", operation_timeout: 2s, .. }"#
    );
    let store = store
        .with_prefix("crm:")
        .with_operation_timeout(Duration::from_millis(300))
        .unwrap();
    assert_eq!(store.operation_timeout(), Duration::from_millis(300));
    assert_eq!(
        format!("{store:?}"),
        r#"RedisStore { prefix: "crm:", operation_timeout: 300ms, .. }"#
    );
    assert!(matches!(
        store.with_operation_timeout(Duration::ZERO),
        Err(ConfigError::ZeroDuration { .. })
    ));
}

/// A duplicate or in-flight answer sends the store no release: that claim never took
/// effect, and on Redis each release is a round trip, one per redelivery. A dropped fresh
/// claim does send one.
#[tokio::test]
async fn duplicate_and_in_flight_answers_send_the_store_no_release() {
    let store = Arc::new(crate::support::CountingStore::default());
    let dedup = Deduplicator::from_arc(store.clone());
    let e = event("message.incoming", "wamid.released");
    let held = fresh(dedup.claim(&e).await.unwrap());
    assert!(matches!(dedup.claim(&e).await.unwrap(), Claim::InFlight));
    held.commit().await.unwrap();
    assert!(matches!(dedup.claim(&e).await.unwrap(), Claim::Duplicate));
    assert_eq!(store.releases(), 0);

    drop(fresh(
        dedup
            .claim(&event("message.incoming", "wamid.dropped"))
            .await
            .unwrap(),
    ));
    assert_eq!(store.releases(), 1);
}

#[test]
fn keys_and_configuration() {
    let dedup = Deduplicator::in_memory();
    assert_eq!(dedup.lease(), Duration::from_secs(60));
    assert_eq!(dedup.ttl(), Duration::from_secs(86_400));
    assert_eq!(
        dedup.key_for(&event("message.read", "m1")).as_str(),
        "0::12:message.read:id:m1"
    );
    let named = Deduplicator::in_memory().with_namespace("crm").unwrap();
    assert_eq!(
        named.key_for(&event("message.read", "m1")).as_str(),
        "3:crm:12:message.read:id:m1"
    );
    assert!(matches!(
        Deduplicator::in_memory().with_namespace(""),
        Err(ConfigError::EmptyNamespace)
    ));
    assert!(
        Deduplicator::in_memory()
            .with_lease(Duration::ZERO)
            .is_err()
    );

    // Events without a message_id are keyed on a digest of their exact bytes.
    let update = |name: &str| {
        Event::parse(
            format!(r#"{{"event":"contact.updated","data":{{"id":"c1","name":"{name}"}}}}"#)
                .as_bytes(),
        )
        .unwrap()
    };
    let (a, b) = (
        dedup.key_for(&update("Ann")),
        dedup.key_for(&update("Anne")),
    );
    assert_ne!(a, b);
    assert_eq!(a, dedup.key_for(&update("Ann")));
    assert!(a.as_str().starts_with("0::15:contact.updated:sha256:"));

    let custom = Deduplicator::in_memory().with_key_fn(|e| format!("mine-{}", e.kind()));
    assert_eq!(
        custom.key_for(&event("message.read", "m1")).as_str(),
        "0::0::fn:mine-message.read"
    );
}

#[derive(Debug, Clone)]
enum Op {
    Claim { worker: usize, key: usize },
    Commit { worker: usize },
    Release { worker: usize },
    Fail { worker: usize },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..4usize, 0..3usize).prop_map(|(worker, key)| Op::Claim { worker, key }),
        2 => (0..4usize).prop_map(|worker| Op::Commit { worker }),
        1 => (0..4usize).prop_map(|worker| Op::Release { worker }),
        1 => (0..4usize).prop_map(|worker| Op::Fail { worker }),
    ]
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Model {
    Free,
    Held(usize),
    Done,
}

/// Plays `ops` against the store and a model, then lets the platform retry every key until it
/// is handled; every key must end up handled exactly once.
async fn interleaving_matches_the_model(
    dedup: &Deduplicator,
    ops: &[Op],
    settle: bool,
) -> Result<(), TestCaseError> {
    let keys: Vec<Event> = (0..3)
        .map(|k| event("message.incoming", &format!("k{k}")))
        .collect();
    let mut model = [Model::Free; 3];
    let mut handled = [0u32; 3];
    let mut held: Vec<Option<(usize, ClaimGuard)>> = (0..4).map(|_| None).collect();
    for op in ops {
        match *op {
            Op::Claim { worker, key } if held[worker].is_none() => {
                let claim = dedup.claim(&keys[key]).await.unwrap();
                match (model[key], claim) {
                    (Model::Free, Claim::Fresh(guard)) => {
                        model[key] = Model::Held(worker);
                        held[worker] = Some((key, guard));
                    }
                    (Model::Held(_), Claim::InFlight) | (Model::Done, Claim::Duplicate) => {}
                    (expected, got) => {
                        prop_assert!(false, "key {key}: model {expected:?}, store {got:?}")
                    }
                }
            }
            Op::Commit { worker } => {
                if let Some((key, guard)) = held[worker].take() {
                    guard.commit().await.unwrap();
                    model[key] = Model::Done;
                    handled[key] += 1;
                }
            }
            Op::Release { worker } => {
                if let Some((key, guard)) = held[worker].take() {
                    guard.release().await.unwrap();
                    model[key] = Model::Free;
                }
            }
            Op::Fail { worker } => {
                if let Some((key, guard)) = held[worker].take() {
                    drop(guard);
                    model[key] = Model::Free;
                    if settle {
                        // Redis releases dropped guards on a spawned task.
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }
            Op::Claim { .. } => {}
        }
    }
    for slot in &mut held {
        if let Some((_, guard)) = slot.take() {
            guard.release().await.unwrap();
        }
    }
    for (key, e) in keys.iter().enumerate() {
        match dedup.claim(e).await.unwrap() {
            Claim::Fresh(guard) => {
                guard.commit().await.unwrap();
                handled[key] += 1;
            }
            Claim::Duplicate => {}
            Claim::InFlight => {
                prop_assert!(false, "key {key} still in flight after every claim ended")
            }
        }
    }
    prop_assert_eq!(handled, [1, 1, 1]);
    Ok(())
}

proptest! {
    #[test]
    fn random_interleavings_handle_each_key_exactly_once_in_memory(ops in proptest::collection::vec(op(), 0..60)) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let dedup = Backend::memory().dedup();
            interleaving_matches_the_model(&dedup, &ops, false).await
        })?;
    }
}

#[cfg(feature = "redis")]
#[test]
fn random_interleavings_handle_each_key_exactly_once_on_redis() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let Some(backend) = runtime.block_on(Backend::redis()) else {
        return;
    };
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(24));
    let case = std::sync::atomic::AtomicU32::new(0);
    runner
        .run(&proptest::collection::vec(op(), 0..40), |ops| {
            let case = case.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            runtime.block_on(async {
                let dedup = backend
                    .dedup()
                    .with_namespace(format!("case{case}"))
                    .unwrap();
                interleaving_matches_the_model(&dedup, &ops, true).await
            })
        })
        .unwrap();
}

/// Claim tokens are unique within a process (a counter) and share one per-process prefix, so
/// that a claim costs no call to the kernel's random source.
#[test]
fn claim_tokens_are_unique_and_share_a_per_process_prefix() {
    use aisoule_webhooks::dedup::ClaimToken;
    let tokens: Vec<u128> = (0..1000)
        .map(|_| ClaimToken::unique().unwrap().value())
        .collect();
    let distinct: std::collections::HashSet<_> = tokens.iter().collect();
    assert_eq!(distinct.len(), tokens.len());
    assert!(tokens.iter().all(|t| t >> 64 == tokens[0] >> 64));
    // The prefix is the process's random draw, in the high half: without it, two replicas'
    // counters would hand out the same tokens (zero by chance has odds of 2^-64).
    assert_ne!(
        tokens[0] >> 64,
        0,
        "the per-process prefix is in the high 64 bits"
    );
}

/// A readiness check asks the store: a receiver in memory is ready at once; one on Redis is
/// not while the server is down (its answer is the 503 a delivery would get), and is again
/// once the server is back.
#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_is_ready_only_while_its_store_answers() {
    use aisoule_webhooks::{Answer, Receiver, Rejection};
    let in_memory = Receiver::new(aisoule_webhooks::test_util::test_verifier());
    in_memory
        .check_ready()
        .await
        .expect("memory is always ready");

    let Some(Backend::Redis { mut server, store }) = Backend::redis().await else {
        return;
    };
    let receiver = Receiver::builder(aisoule_webhooks::test_util::test_verifier())
        .deduplicator(Deduplicator::from_arc(store))
        .build()
        .unwrap();
    receiver.check_ready().await.expect("Redis is up");

    server.kill();
    let down = receiver.check_ready().await.expect_err("Redis is down");
    assert!(matches!(down, Rejection::Store(_)), "{down:?}");
    let answer = Answer::from(&down);
    assert_eq!(
        (answer.status().as_u16(), answer.retry_after_secs()),
        (503, Some(10))
    );

    server.restart();
    let mut ready = Err(down);
    for _ in 0..100 {
        ready = receiver.check_ready().await;
        if ready.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        ready.is_ok(),
        "ready again once the server is back: {ready:?}"
    );
}

/// A clock standing at `at` that counts how often it is read.
#[derive(Debug)]
struct CountingClock {
    at: ManualClock,
    reads: std::sync::atomic::AtomicUsize,
}

impl CountingClock {
    fn new(at: SystemTime) -> Arc<Self> {
        Arc::new(Self {
            at: ManualClock::new(at),
            reads: std::sync::atomic::AtomicUsize::new(0),
        })
    }

    fn reads(&self) -> usize {
        self.reads.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl aisoule_webhooks::clock::Clock for CountingClock {
    fn now(&self) -> SystemTime {
        self.reads.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.at.now()
    }
}

/// Admits one fresh delivery stamped `at` on `receiver` and runs a handler answering 200.
async fn deliver_once(receiver: &aisoule_webhooks::Receiver, id: &str, at: SystemTime) -> bool {
    use aisoule_webhooks::event::{Dialect, EventKind};
    let delivery = aisoule_webhooks::test_util::Delivery::sample(
        EventKind::MessageIncoming,
        Dialect::Developer,
    )
    .message_id(id)
    .timestamp_at(at)
    .build();
    match receiver
        .admit(
            [delivery.signature_value().as_bytes()],
            bytes::Bytes::copy_from_slice(delivery.body()),
        )
        .await
    {
        Ok(aisoule_webhooks::Admission::Fresh(admitted)) => {
            let ok = http::StatusCode::OK;
            admitted.run(async { ok }, |status| Some(*status)).await;
            true
        }
        Ok(_) => false,
        Err(rejection) => panic!("{id} was refused: {rejection}"),
    }
}

/// A receiver on `clock`, with a memory store on `store_clock`, or its default store (which
/// keeps the receiver's clock) for `None`.
fn receiver_on(
    clock: Arc<dyn aisoule_webhooks::clock::Clock>,
    store_clock: Option<Arc<dyn aisoule_webhooks::clock::Clock>>,
) -> aisoule_webhooks::Receiver {
    let builder = aisoule_webhooks::Receiver::builder(aisoule_webhooks::test_util::test_verifier())
        .clock(clock);
    match store_clock {
        Some(store_clock) => builder.deduplicator(Deduplicator::new(
            MemoryStore::new().with_clock(store_clock),
        )),
        None => builder,
    }
    .build()
    .unwrap()
}

/// A handled delivery reads the receiver's clock once, when it arrives, and a memory store
/// keeping that clock (the receiver's default one, or one given the same clock) claims at that
/// reading: it reads the clock again only to commit.
#[tokio::test]
async fn a_delivery_reads_the_clock_once_and_a_store_on_the_same_clock_claims_at_that_reading() {
    let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_780_369_298);
    let clock = CountingClock::new(at);
    let receiver = receiver_on(clock.clone(), None);
    assert!(deliver_once(&receiver, "reads-1", at).await);
    assert_eq!(
        clock.reads(),
        2,
        "the receiver's default memory store: arrival, commit"
    );

    let clock = CountingClock::new(at);
    let receiver = receiver_on(clock.clone(), Some(clock.clone()));
    assert!(deliver_once(&receiver, "reads-2", at).await);
    assert_eq!(
        clock.reads(),
        2,
        "a memory store given the receiver's clock"
    );

    // A store on a clock of its own reads it, at the claim and at the commit.
    let (clock, store_clock) = (CountingClock::new(at), CountingClock::new(at));
    let receiver = receiver_on(clock.clone(), Some(store_clock.clone()));
    assert!(deliver_once(&receiver, "reads-3", at).await);
    assert_eq!((clock.reads(), store_clock.reads()), (1, 2));
}

/// Under a receiver, a memory store with a clock of its own keeps time by that clock, never
/// by the receiver's readings: moved past the TTL, it handles a redelivery again, though the
/// receiver's clock has not moved.
#[tokio::test]
async fn a_memory_store_on_its_own_clock_keeps_time_by_it_under_a_receiver() {
    let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_780_369_298);
    let store_clock = Arc::new(ManualClock::new(at));
    let receiver = receiver_on(Arc::new(ManualClock::new(at)), Some(store_clock.clone()));
    assert!(deliver_once(&receiver, "own-clock", at).await);
    assert!(
        !deliver_once(&receiver, "own-clock", at).await,
        "a duplicate"
    );
    store_clock.advance(Deduplicator::DEFAULT_TTL + Duration::from_secs(1));
    assert!(
        deliver_once(&receiver, "own-clock", at).await,
        "past the store's TTL by its own clock"
    );
}

/// A memory store passed by value, which the deduplicator then calls directly rather than
/// through the trait, keeps the protocol: a release frees the key, a commit completes it, and
/// a stale owner whose key was retaken cannot commit.
#[tokio::test]
async fn a_memory_store_passed_by_value_keeps_the_protocol() {
    let clock = Arc::new(ManualClock::new(
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_780_000_000),
    ));
    let dedup = Deduplicator::new(MemoryStore::new().with_clock(clock.clone()));
    let key = || DedupKey::from_string("by-value");

    let first = fresh(dedup.claim_key(key()).await.unwrap());
    assert!(matches!(dedup.claim_key(key()).await, Ok(Claim::InFlight)));
    first.release().await.unwrap();
    let second = fresh(dedup.claim_key(key()).await.unwrap());
    second.commit().await.unwrap();
    assert!(matches!(dedup.claim_key(key()).await, Ok(Claim::Duplicate)));

    let stale = fresh(
        dedup
            .claim_key(DedupKey::from_string("retaken"))
            .await
            .unwrap(),
    );
    clock.advance(Deduplicator::DEFAULT_LEASE + Duration::from_secs(1));
    let owner = fresh(
        dedup
            .claim_key(DedupKey::from_string("retaken"))
            .await
            .unwrap(),
    );
    assert!(matches!(
        stale.commit().await,
        Err(DedupError::LeaseLost { .. })
    ));
    owner.commit().await.unwrap();
}
