//! A replica started while Redis is down: it starts, answers deliveries 503 with
//! `Retry-After` and is not ready; once Redis is up it is ready and handles them, and the outage
//! left no warning per delivery in the log.

use aisoule_webhooks::Receiver;
use aisoule_webhooks::dedup::Deduplicator;
use aisoule_webhooks::dedup::redis::RedisStore;
use aisoule_webhooks::event::Dialect;

use crate::e2e::{Framework, message, post, start};
use crate::redis_server::RedisServer;

pub(crate) async fn a_replica_booted_while_redis_is_down_serves_once_it_is_up<F: Framework>() {
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    redis.kill();
    let store = RedisStore::connect_lazily(&redis.url()).expect("a valid URL is enough");
    let receiver = Receiver::builder(aisoule_webhooks::test_util::test_verifier())
        .deduplicator(Deduplicator::new(store))
        .clock(std::sync::Arc::new(
            aisoule_webhooks::clock::ManualClock::new(crate::e2e::test_now()),
        ))
        .build()
        .unwrap();
    let server = start::<F>(receiver.clone()).await;
    let delivery = message(Dialect::Developer, "booted-while-down");
    for _ in 0..3 {
        let (status, body) = post(&server.url(), &delivery).await;
        assert_eq!(status, 503, "{body}");
    }
    assert!(
        receiver.check_ready().await.is_err(),
        "not ready while Redis is down"
    );

    redis.restart();
    let mut handled = false;
    for _ in 0..100 {
        if post(&server.url(), &delivery).await.0 == 200 {
            handled = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(handled, "handled once Redis is up");
    receiver
        .check_ready()
        .await
        .expect("ready once Redis is up");
    assert_eq!(server.recorder.completed(), ["booted-while-down"]);
    let logs = server.logs.text();
    assert!(
        !logs
            .lines()
            .any(|line| line.contains(" WARN ") && line.contains("could not release")),
        "no warning per delivery about releasing claims during the outage: {logs}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn axum_replica_booted_while_redis_is_down() {
    a_replica_booted_while_redis_is_down_serves_once_it_is_up::<crate::axum::Axum>().await;
}

#[cfg(feature = "actix-web")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actix_replica_booted_while_redis_is_down() {
    a_replica_booted_while_redis_is_down_serves_once_it_is_up::<crate::actix::Actix>().await;
}
