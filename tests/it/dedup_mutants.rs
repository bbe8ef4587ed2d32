//! The idempotency stores' promises, pinned where `cargo mutants` over `src/dedup/` (issue 26)
//! found that no other test noticed a change.

use std::net::TcpListener;
use std::time::Duration;

use aisoule_webhooks::DedupError;
use aisoule_webhooks::dedup::redis::RedisStore;

/// The platform's delivery deadline: an answer later than this counts as a failure whatever
/// it says.
const PLATFORM_DEADLINE: Duration = Duration::from_secs(5);

/// `connect` to a server that is not there gives up within the platform's deadline, because
/// its connection manager retries only twice, each wait capped at 500 ms. With the `redis`
/// crate's defaults (6 retries, doubling from 100 ms without a cap) the same refusal is retried
/// for at least 6.3 s, and a replica that connects while handling a delivery misses the
/// platform's deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connecting_to_a_dead_redis_fails_within_the_platforms_deadline() {
    // A port that was free a moment ago: nothing listens on it, so every attempt is refused.
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free loopback port")
        .port();
    let url = format!("redis://127.0.0.1:{port}/");
    let answer = tokio::time::timeout(PLATFORM_DEADLINE, RedisStore::connect(&url))
        .await
        .expect("connect gives up within the platform's deadline");
    let error = answer.expect_err("nothing listens on the port");
    assert!(matches!(error, DedupError::Unavailable { .. }), "{error:?}");
}
