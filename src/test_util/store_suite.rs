//! The behaviour every [`IdempotencyStore`] must have, as a suite you can run against your own.
//!
//! The crate runs it against [`MemoryStore`](crate::MemoryStore) and the Redis store; write a
//! [`StoreUnderTest`] for yours and call [`run_all`] from a test on a multi-threaded tokio
//! runtime:
//!
//! ```
//! use std::future::Future;
//! use std::pin::Pin;
//! use std::sync::Arc;
//! use std::time::{Duration, SystemTime};
//! use aisoule_webhooks::clock::ManualClock;
//! use aisoule_webhooks::dedup::{IdempotencyStore, MemoryStore};
//! use aisoule_webhooks::test_util::store_suite::{self, StoreUnderTest};
//!
//! struct Memory(Arc<ManualClock>, Arc<MemoryStore>);
//!
//! impl StoreUnderTest for Memory {
//!     fn store(&self) -> Arc<dyn IdempotencyStore> {
//!         self.1.clone()
//!     }
//!     fn lease(&self) -> Duration {
//!         Duration::from_secs(60)
//!     }
//!     fn ttl(&self) -> Duration {
//!         Duration::from_secs(86_400)
//!     }
//!     fn advance(&self, by: Duration) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
//!         self.0.advance(by);
//!         Box::pin(async {})
//!     }
//! }
//!
//! # tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap().block_on(async {
//! let clock = Arc::new(ManualClock::new(SystemTime::now()));
//! let store = Arc::new(MemoryStore::new().with_clock(clock.clone()));
//! store_suite::run_all(&Memory(clock, store)).await;
//! # });
//! ```
//!
//! Every case uses keys of its own, so the cases can share one store. A failing case panics
//! with what the store did wrong.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use crate::dedup::{Claim, ClaimGuard, Deduplicator, IdempotencyStore};
use crate::error::DedupError;
use crate::event::Event;

/// A store under test, with the lease and TTL to test it with, and a way to let time pass.
pub trait StoreUnderTest: Send + Sync {
    /// The store.
    fn store(&self) -> Arc<dyn IdempotencyStore>;
    /// The lease the suite claims with: short for a store on real time.
    fn lease(&self) -> Duration;
    /// The TTL the suite commits with.
    fn ttl(&self) -> Duration;
    /// Lets `by` pass for the store: move its clock, or sleep for a store on real time.
    fn advance(&self, by: Duration) -> Pin<Box<dyn Future<Output = ()> + Send + '_>>;
}

fn dedup(backend: &impl StoreUnderTest) -> Deduplicator {
    Deduplicator::from_arc(backend.store())
        .with_lease(backend.lease())
        .and_then(|d| d.with_ttl(backend.ttl()))
        .expect("a nonzero lease and TTL")
}

async fn past_lease(backend: &impl StoreUnderTest) {
    backend.advance(backend.lease() + backend.lease() / 2).await;
}

fn event(kind: &str, message_id: &str) -> Event {
    let body =
        format!(r#"{{"event":"{kind}","data":{{"message_id":"{message_id}","status":"x"}}}}"#);
    Event::parse(body.as_bytes()).expect("a valid test event")
}

fn fresh(claim: Claim) -> ClaimGuard {
    match claim {
        Claim::Fresh(guard) => guard,
        other => panic!("expected a fresh claim, got {other:?}"),
    }
}

async fn claim(dedup: &Deduplicator, event: &Event) -> Claim {
    dedup.claim(event).await.expect("the store answers")
}

/// A dropped guard may release on a spawned task; wait (boundedly) until it has.
async fn claim_when_released(dedup: &Deduplicator, event: &Event) -> Claim {
    for _ in 0..200 {
        match claim(dedup, event).await {
            Claim::InFlight => tokio::time::sleep(Duration::from_millis(10)).await,
            other => return other,
        }
    }
    panic!("the key was never released");
}

/// Runs every case in turn.
pub async fn run_all(backend: &impl StoreUnderTest) {
    fresh_then_in_flight_then_duplicate(backend).await;
    release_on_failure_lets_the_retry_through(backend).await;
    drop_without_commit_releases(backend).await;
    an_expired_lease_frees_the_key_and_the_stale_owner_cannot_commit(backend).await;
    a_renewed_claim_outlives_its_lease(backend).await;
    a_claim_cancelled_after_it_took_effect_is_released_by_its_token(backend).await;
    completed_keys_are_forgotten_after_the_ttl(backend).await;
    namespaces_are_kept_apart(backend).await;
    statuses_sharing_a_message_id_are_distinct_events(backend).await;
    hundred_concurrent_claims_give_exactly_one_fresh(backend).await;
}

/// A claim is fresh, then in flight, then, once committed, a duplicate.
pub async fn fresh_then_in_flight_then_duplicate(backend: &impl StoreUnderTest) {
    let dedup = dedup(backend);
    let e = event("message.incoming", "suite.1");
    let guard = fresh(claim(&dedup, &e).await);
    assert!(matches!(claim(&dedup, &e).await, Claim::InFlight));
    guard.commit().await.expect("commit");
    assert!(matches!(claim(&dedup, &e).await, Claim::Duplicate));
}

/// A released claim lets the retry through.
pub async fn release_on_failure_lets_the_retry_through(backend: &impl StoreUnderTest) {
    let dedup = dedup(backend);
    let e = event("message.incoming", "suite.2");
    fresh(claim(&dedup, &e).await)
        .release()
        .await
        .expect("release");
    fresh(claim(&dedup, &e).await)
        .commit()
        .await
        .expect("commit");
    assert!(matches!(claim(&dedup, &e).await, Claim::Duplicate));
}

/// Dropping a guard, or panicking while holding it, releases the key.
pub async fn drop_without_commit_releases(backend: &impl StoreUnderTest) {
    let dedup = dedup(backend);
    let e = event("message.incoming", "suite.3");
    drop(fresh(claim(&dedup, &e).await));
    fresh(claim_when_released(&dedup, &e).await)
        .commit()
        .await
        .expect("commit");

    let panicking = dedup.clone();
    let handler = tokio::spawn(async move {
        let _guard = fresh(claim(&panicking, &event("message.sent", "suite.3")).await);
        panic!("the handler failed");
    });
    assert!(handler.await.expect_err("it panicked").is_panic());
    assert!(matches!(
        claim_when_released(&dedup, &event("message.sent", "suite.3")).await,
        Claim::Fresh(_)
    ));
}

/// After the lease, the key is free again, and the stale owner can no longer commit.
pub async fn an_expired_lease_frees_the_key_and_the_stale_owner_cannot_commit(
    backend: &impl StoreUnderTest,
) {
    let dedup = dedup(backend);
    let e = event("message.incoming", "suite.4");
    let crashed = fresh(claim(&dedup, &e).await);
    past_lease(backend).await;
    let retry = fresh(claim(&dedup, &e).await);
    assert!(matches!(
        crashed.commit().await,
        Err(DedupError::LeaseLost { .. })
    ));
    retry.commit().await.expect("commit");
    assert!(matches!(claim(&dedup, &e).await, Claim::Duplicate));
}

/// A claim renewed before its lease ends is still held after it; a lost one cannot be renewed.
pub async fn a_renewed_claim_outlives_its_lease(backend: &impl StoreUnderTest) {
    let dedup = dedup(backend);
    let e = event("message.incoming", "suite.5");
    let slow = fresh(claim(&dedup, &e).await);
    for _ in 0..3 {
        backend.advance(backend.lease() / 2).await;
        slow.renew().await.expect("renew while held");
    }
    assert!(matches!(claim(&dedup, &e).await, Claim::InFlight));
    slow.commit().await.expect("commit");
    assert!(matches!(claim(&dedup, &e).await, Claim::Duplicate));

    let lost = fresh(claim(&dedup, &event("message.incoming", "suite.5b")).await);
    past_lease(backend).await;
    let taker = fresh(claim(&dedup, &event("message.incoming", "suite.5b")).await);
    assert!(matches!(
        lost.renew().await,
        Err(DedupError::LeaseLost { .. })
    ));
    taker.commit().await.expect("commit");
}

/// A claim whose future was dropped after the store took it is freed by its token.
pub async fn a_claim_cancelled_after_it_took_effect_is_released_by_its_token(
    backend: &impl StoreUnderTest,
) {
    let store = backend.store();
    let key = dedup(backend).key_for(&event("message.incoming", "suite.6"));
    let token = crate::dedup::ClaimToken::unique().expect("randomness");
    store
        .claim(&key, token, backend.lease())
        .await
        .expect("the store answers");
    // What a dropped claim request does: release by the token it chose.
    store.release_detached(
        key.clone(),
        crate::dedup::ClaimToken::new(token.value() ^ 1),
    );
    let dedup = dedup(backend);
    let e = event("message.incoming", "suite.6");
    assert!(
        matches!(claim(&dedup, &e).await, Claim::InFlight),
        "another token must not free the key"
    );
    store.release_detached(key, token);
    fresh(claim_when_released(&dedup, &e).await)
        .commit()
        .await
        .expect("commit");
}

/// A committed key is forgotten after the TTL.
pub async fn completed_keys_are_forgotten_after_the_ttl(backend: &impl StoreUnderTest) {
    let dedup = dedup(backend);
    let e = event("message.read", "suite.7");
    fresh(claim(&dedup, &e).await)
        .commit()
        .await
        .expect("commit");
    assert!(matches!(claim(&dedup, &e).await, Claim::Duplicate));
    backend.advance(backend.ttl() + backend.ttl() / 2).await;
    assert!(matches!(claim(&dedup, &e).await, Claim::Fresh(_)));
}

/// Two namespaces on one store never see each other's keys.
pub async fn namespaces_are_kept_apart(backend: &impl StoreUnderTest) {
    let crm = dedup(backend).with_namespace("crm").expect("a namespace");
    let billing = dedup(backend)
        .with_namespace("billing")
        .expect("a namespace");
    let e = event("message.incoming", "suite.8");
    fresh(claim(&crm, &e).await).commit().await.expect("commit");
    fresh(claim(&billing, &e).await)
        .commit()
        .await
        .expect("commit");
    assert!(matches!(claim(&crm, &e).await, Claim::Duplicate));
}

/// `message.delivered` and `message.read` of one message are two events.
pub async fn statuses_sharing_a_message_id_are_distinct_events(backend: &impl StoreUnderTest) {
    let dedup = dedup(backend);
    let delivered = event("message.delivered", "suite.9");
    let read = event("message.read", "suite.9");
    fresh(claim(&dedup, &delivered).await)
        .commit()
        .await
        .expect("commit");
    fresh(claim(&dedup, &read).await)
        .commit()
        .await
        .expect("commit");
    assert!(matches!(claim(&dedup, &delivered).await, Claim::Duplicate));
}

/// A hundred simultaneous claims of one event: exactly one is fresh.
pub async fn hundred_concurrent_claims_give_exactly_one_fresh(backend: &impl StoreUnderTest) {
    let dedup = dedup(backend);
    let e = Arc::new(event("message.incoming", "suite.10"));
    let barrier = Arc::new(tokio::sync::Barrier::new(100));
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let (dedup, e, barrier) = (dedup.clone(), e.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                match claim(&dedup, &e).await {
                    // Keep the winner's claim held until every task has answered.
                    Claim::Fresh(guard) => Some(guard),
                    Claim::InFlight => None,
                    Claim::Duplicate => panic!("nothing was committed"),
                }
            })
        })
        .collect();
    let mut winners = Vec::new();
    for task in tasks {
        winners.extend(task.await.expect("no task panics"));
    }
    assert_eq!(winners.len(), 1);
}
