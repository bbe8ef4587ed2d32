//! A Redis-backed idempotency store, for receivers that run several replicas.
//!
//! Behind a load balancer, the platform's redelivery can reach a different replica than the
//! first delivery; a shared store is the only way that replica knows. Claims use
//! `SET key token NX PX lease`; commit and release are Lua scripts that compare the token
//! first, so a stale owner whose lease expired can never commit or free a claim that another
//! delivery has since taken.
//!
//! ```no_run
//! use aisoule_webhooks::dedup::{Deduplicator, redis::RedisStore};
//!
//! # async fn run() -> Result<(), aisoule_webhooks::DedupError> {
//! let store = RedisStore::connect("redis://127.0.0.1:6379/").await?;
//! let dedup = Deduplicator::new(store);
//! # Ok(()) }
//! ```

use std::fmt;
use std::future::Future;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{RedisError, Script};

use super::{ClaimToken, DedupKey, IdempotencyStore, StoreClaim, StoreFuture};
use crate::error::{ConfigError, DedupError, StoreTimeout};

const DONE: &str = "done";

/// Sets the claim if the key is free; otherwise says whether it is completed or in flight.
static CLAIM: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 0 end
        if redis.call('GET', KEYS[1]) == ARGV[3] then return 1 end
        return 2",
    )
});

/// Completes the key if the token still owns it, or nobody does.
static COMMIT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        local held = redis.call('GET', KEYS[1])
        if held == ARGV[1] or not held then
            redis.call('SET', KEYS[1], ARGV[3], 'PX', ARGV[2])
            return 1
        end
        return 0",
    )
});

/// Extends the claim only if the token still owns it.
static RENEW: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        if redis.call('GET', KEYS[1]) == ARGV[1] then
            return redis.call('PEXPIRE', KEYS[1], ARGV[2])
        end
        return 0",
    )
});

/// Frees the key only if the token still owns it.
static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
        return 0",
    )
});

/// Idempotency claims in Redis, shared by every replica.
///
/// It uses the `redis` crate's tokio [`ConnectionManager`], which reconnects on its own
/// after the server goes away. While the server is unreachable, or hung, every call returns
/// [`DedupError::Unavailable`], which the integrations answer with 503 so the platform retries.
#[derive(Clone)]
pub struct RedisStore {
    connection: ConnectionManager,
    prefix: Arc<str>,
    operation_timeout: Duration,
    runtime: Option<tokio::runtime::Handle>,
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.prefix)
            .field("operation_timeout", &self.operation_timeout)
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// The prefix of every key this store writes. Defaults to `aisoule-webhooks:`.
    pub const DEFAULT_PREFIX: &'static str = "aisoule-webhooks:";

    /// How long one store operation may take, whatever the connection does meanwhile: 2 s.
    /// A script's first run takes two round trips (`EVALSHA`, then `EVAL` when the server
    /// does not know it yet), each bounded by [`connect`](Self::connect)'s 1 s response
    /// timeout; and 2 s leave the handler 3 s of the platform's 5 s deadline.
    pub const DEFAULT_OPERATION_TIMEOUT: Duration = Duration::from_secs(2);

    /// Connects to `url` (`redis://host:port/db`), with a 1 s connection timeout and a 1 s
    /// response timeout, so that a dead server yields a 503 well within the platform's 5 s
    /// deadline instead of a hung request.
    ///
    /// # Errors
    ///
    /// [`DedupError::Unavailable`] when the URL is invalid or the server cannot be reached.
    pub async fn connect(url: &str) -> Result<Self, DedupError> {
        let client = redis::Client::open(url).map_err(unavailable)?;
        let connection = ConnectionManager::new_with_config(client, Self::manager_config())
            .await
            .map_err(unavailable)?;
        Ok(Self::from_connection_manager(connection))
    }

    /// As [`connect`](Self::connect), but without connecting yet: the first operation
    /// connects, and every later one reconnects if the server went away. A replica started
    /// while Redis is down starts anyway, answers deliveries with 503 and `Retry-After`
    /// (so the platform retries them) and reports itself not ready
    /// ([`Receiver::check_ready`](crate::Receiver::check_ready)) until Redis answers.
    ///
    /// Call it inside a tokio runtime.
    ///
    /// # Errors
    ///
    /// [`DedupError::Unavailable`] when the URL is invalid.
    pub fn connect_lazily(url: &str) -> Result<Self, DedupError> {
        let client = redis::Client::open(url).map_err(unavailable)?;
        let connection = ConnectionManager::new_lazy_with_config(client, Self::manager_config())
            .map_err(unavailable)?;
        Ok(Self::from_connection_manager(connection))
    }

    /// 1 s to connect and 1 s per response, so that a dead server yields a 503 well within
    /// the platform's 5 s deadline.
    fn manager_config() -> ConnectionManagerConfig {
        ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(Duration::from_secs(1)))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500))
    }

    /// Uses a connection manager you configured yourself. Whatever its timeouts, each store
    /// operation still ends within [`RedisStore::DEFAULT_OPERATION_TIMEOUT`] (see
    /// [`with_operation_timeout`](Self::with_operation_timeout)).
    ///
    /// Call it inside a tokio runtime: a dropped claim guard releases its key on that runtime.
    pub fn from_connection_manager(connection: ConnectionManager) -> Self {
        Self {
            connection,
            prefix: Self::DEFAULT_PREFIX.into(),
            operation_timeout: Self::DEFAULT_OPERATION_TIMEOUT,
            runtime: tokio::runtime::Handle::try_current().ok(),
        }
    }

    /// Bounds each store operation (claim, renew, commit, release) by `timeout` instead of
    /// [`RedisStore::DEFAULT_OPERATION_TIMEOUT`]. A server that accepts connections but does
    /// not answer (stopped, swapped out, stuck in a slow script) then costs a delivery at most
    /// `timeout` before its 503, instead of the platform's whole 5 s deadline, after which the
    /// platform counts a failure whatever the answer.
    ///
    /// # Errors
    ///
    /// [`ConfigError::ZeroDuration`] for a zero timeout, which would fail every operation.
    pub fn with_operation_timeout(mut self, timeout: Duration) -> Result<Self, ConfigError> {
        if timeout.is_zero() {
            return Err(ConfigError::ZeroDuration {
                setting: "the Redis operation timeout",
            });
        }
        self.operation_timeout = timeout;
        Ok(self)
    }

    /// The bound on each store operation.
    pub fn operation_timeout(&self) -> Duration {
        self.operation_timeout
    }

    /// Writes keys under `prefix` instead of [`RedisStore::DEFAULT_PREFIX`].
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into().into();
        self
    }

    fn redis_key(&self, key: &DedupKey) -> String {
        format!("{}{}", self.prefix, key.as_str())
    }
}

impl RedisStore {
    /// Awaits `operation` for at most the operation timeout, mapping both ways of failing to
    /// [`DedupError::Unavailable`].
    async fn bounded<T>(
        &self,
        operation: impl Future<Output = Result<T, RedisError>>,
    ) -> Result<T, DedupError> {
        match tokio::time::timeout(self.operation_timeout, operation).await {
            Ok(answer) => answer.map_err(unavailable),
            Err(_elapsed) => Err(DedupError::unavailable(StoreTimeout {
                after: self.operation_timeout,
            })),
        }
    }

    /// Runs a script that changes `key` for `duration` only while `token` owns it (renew and
    /// commit), answering 1 when it did.
    async fn while_owned(
        &self,
        script: &Script,
        key: &DedupKey,
        token: ClaimToken,
        duration: Duration,
    ) -> Result<(), DedupError> {
        let mut connection = self.connection.clone();
        let changed: i64 = self
            .bounded(
                script
                    .key(self.redis_key(key))
                    .arg(token_text(token))
                    .arg(px_millis(duration))
                    .arg(DONE)
                    .invoke_async(&mut connection),
            )
            .await?;
        match changed {
            1 => Ok(()),
            _ => Err(DedupError::LeaseLost {
                key: key.to_string(),
            }),
        }
    }
}

fn unavailable(error: RedisError) -> DedupError {
    DedupError::unavailable(error)
}

fn token_text(token: ClaimToken) -> String {
    format!("{:032x}", token.value())
}

fn px_millis(duration: Duration) -> u64 {
    // PX 0 is an error in Redis; a lease or TTL always lasts at least a millisecond.
    super::millis(duration).max(1)
}

impl IdempotencyStore for RedisStore {
    fn claim<'a>(
        &'a self,
        key: &'a DedupKey,
        token: ClaimToken,
        lease: Duration,
    ) -> StoreFuture<'a, StoreClaim> {
        Box::pin(async move {
            let mut connection = self.connection.clone();
            let answer: i64 = self
                .bounded(
                    CLAIM
                        .key(self.redis_key(key))
                        .arg(token_text(token))
                        .arg(px_millis(lease))
                        .arg(DONE)
                        .invoke_async(&mut connection),
                )
                .await?;
            match answer {
                0 => Ok(StoreClaim::Acquired),
                1 => Ok(StoreClaim::Completed),
                2 => Ok(StoreClaim::InFlight),
                other => Err(DedupError::UnexpectedReply {
                    reason: format!("claim script returned {other}"),
                }),
            }
        })
    }

    fn renew<'a>(
        &'a self,
        key: &'a DedupKey,
        token: ClaimToken,
        lease: Duration,
    ) -> StoreFuture<'a, ()> {
        Box::pin(self.while_owned(&RENEW, key, token, lease))
    }

    fn commit<'a>(
        &'a self,
        key: &'a DedupKey,
        token: ClaimToken,
        ttl: Duration,
    ) -> StoreFuture<'a, ()> {
        Box::pin(self.while_owned(&COMMIT, key, token, ttl))
    }

    fn release<'a>(&'a self, key: &'a DedupKey, token: ClaimToken) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let mut connection = self.connection.clone();
            let _freed: i64 = self
                .bounded(
                    RELEASE
                        .key(self.redis_key(key))
                        .arg(token_text(token))
                        .invoke_async(&mut connection),
                )
                .await?;
            Ok(())
        })
    }

    fn ping(&self) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let mut connection = self.connection.clone();
            let _pong: String = self
                .bounded(redis::cmd("PING").query_async(&mut connection))
                .await?;
            Ok(())
        })
    }

    fn release_detached(&self, key: DedupKey, token: ClaimToken) {
        let Some(runtime) = &self.runtime else {
            // No runtime to run the release on: the lease expiry frees the key.
            return;
        };
        let store = self.clone();
        // With the caller's subscriber, so its log lines go where the request's go.
        runtime.spawn(tracing::instrument::WithSubscriber::with_current_subscriber(async move {
            match store.release(&key, token).await {
                Ok(()) => {}
                // Redis is down: the claim that was dropped most likely never went through
                // either, and if it did, its lease frees the key. The outage itself is
                // reported by the 503s and the readiness check, not once more per delivery.
                Err(error @ DedupError::Unavailable { .. }) => {
                    tracing::debug!(%error, key = %key, "could not release a dropped claim; its lease will expire");
                }
                Err(error) => {
                    tracing::warn!(%error, key = %key, "could not release a dropped claim; its lease will expire");
                }
            }
        }));
    }
}
