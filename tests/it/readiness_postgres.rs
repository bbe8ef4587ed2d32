//! `Receiver::check_ready` with a PostgreSQL inbox follows its server: ready while it runs,
//! the inbox's 503 with `Retry-After` once it is stopped (cleanly or by a crash), and ready
//! again once it is back on the same port, without restarting the receiver.

use std::time::Duration;

use aisoule_webhooks::inbox::Inbox;
use aisoule_webhooks::inbox::postgres::PostgresStore;
use aisoule_webhooks::test_util::test_verifier;
use aisoule_webhooks::{Answer, InboxError, Receiver, Rejection};

use crate::postgres_server::PostgresServer;
use crate::support::{two_workers, within_real_time};

/// Bounds each readiness check: the store's own timeouts (2 s to acquire a connection, 4 s
/// per operation) must answer well before it.
const CHECK_TIMEOUT: Duration = Duration::from_secs(30);

/// How long the pool may take to reconnect after the server is back.
const RECOVERY_DEADLINE: Duration = Duration::from_secs(30);

/// The real-time bound on the whole test (about 6 s when it passes): its checks' own
/// deadlines bound each step, and this bounds them all, under `cargo mutants`' 120 s test
/// timeout.
const TEST_BOUND: Duration = Duration::from_secs(100);

async fn check(receiver: &Receiver) -> Result<(), Rejection> {
    tokio::time::timeout(CHECK_TIMEOUT, receiver.check_ready())
        .await
        .expect("check_ready answered within its timeout")
}

/// Not ready, with the answer a delivery would get: the inbox's 503 with `Retry-After`.
async fn assert_not_ready(receiver: &Receiver, after: &str) {
    let rejection = check(receiver)
        .await
        .expect_err(&format!("not ready after {after}"));
    assert!(
        matches!(rejection, Rejection::Inbox(InboxError::Store { .. })),
        "after {after}: {rejection:?}"
    );
    let answer = Answer::from(&rejection);
    assert_eq!(answer.status(), 503, "after {after}");
    assert_eq!(answer.retry_after_secs(), Some(10), "after {after}");
    assert_eq!(
        answer.body(),
        r#"{"error":"temporarily unavailable; retry later"}"#
    );
}

/// Ready within [`RECOVERY_DEADLINE`]: the pool's dead connections are replaced.
async fn assert_ready_again(receiver: &Receiver, after: &str) {
    let deadline = tokio::time::Instant::now() + RECOVERY_DEADLINE;
    loop {
        match check(receiver).await {
            Ok(()) => return,
            Err(rejection) => assert!(
                tokio::time::Instant::now() < deadline,
                "still not ready {RECOVERY_DEADLINE:?} after {after}: {rejection:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[test]
fn readiness_follows_the_postgres_inbox_through_a_stop_and_a_crash() {
    within_real_time(two_workers(), TEST_BOUND, || async {
        // A server of its own, since this test stops it.
        let Some(mut server) = PostgresServer::start() else {
            return;
        };
        let store = tokio::time::timeout(CHECK_TIMEOUT, PostgresStore::connect(&server.url()))
            .await
            .expect("connected in time")
            .expect("the server is up");
        let receiver = Receiver::builder(test_verifier())
            .inbox(Inbox::new(store))
            .build()
            .unwrap();
        check(&receiver).await.expect("ready while the server runs");

        server.stop();
        assert_not_ready(&receiver, "a clean stop").await;
        server.restart();
        assert_ready_again(&receiver, "a restart on the same port").await;

        server.kill();
        assert_not_ready(&receiver, "a crash").await;
        server.restart();
        assert_ready_again(&receiver, "crash recovery").await;
    });
}
