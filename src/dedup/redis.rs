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
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{RedisError, Script};

use super::{ClaimToken, DedupKey, IdempotencyStore, StoreClaim, StoreFuture};
use crate::error::DedupError;

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
/// after the server goes away. While the server is unreachable every call returns
/// [`DedupError::Unavailable`], which the integrations answer with 503 so the platform retries.
#[derive(Clone)]
pub struct RedisStore {
    connection: ConnectionManager,
    prefix: Arc<str>,
    runtime: Option<tokio::runtime::Handle>,
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// The prefix of every key this store writes. Defaults to `aisoule-webhooks:`.
    pub const DEFAULT_PREFIX: &'static str = "aisoule-webhooks:";

    /// Connects to `url` (`redis://host:port/db`), with a 1 s connection timeout and a 1 s
    /// response timeout, so that a dead server yields a 503 well within the platform's 5 s
    /// deadline instead of a hung request.
    ///
    /// # Errors
    ///
    /// [`DedupError::Unavailable`] when the URL is invalid or the server cannot be reached.
    pub async fn connect(url: &str) -> Result<Self, DedupError> {
        let client = redis::Client::open(url).map_err(unavailable)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(Duration::from_secs(1)))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        let connection = ConnectionManager::new_with_config(client, config)
            .await
            .map_err(unavailable)?;
        Ok(Self::from_connection_manager(connection))
    }

    /// Uses a connection manager you configured yourself.
    ///
    /// Call it inside a tokio runtime: a dropped claim guard releases its key on that runtime.
    pub fn from_connection_manager(connection: ConnectionManager) -> Self {
        Self {
            connection,
            prefix: Self::DEFAULT_PREFIX.into(),
            runtime: tokio::runtime::Handle::try_current().ok(),
        }
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
        let changed: i64 = script
            .key(self.redis_key(key))
            .arg(token_text(token))
            .arg(px_millis(duration))
            .arg(DONE)
            .invoke_async(&mut connection)
            .await
            .map_err(unavailable)?;
        match changed {
            1 => Ok(()),
            _ => Err(DedupError::LeaseLost {
                key: key.to_string(),
            }),
        }
    }
}

fn unavailable(error: RedisError) -> DedupError {
    DedupError::Unavailable {
        reason: error.to_string(),
    }
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
            let answer: i64 = CLAIM
                .key(self.redis_key(key))
                .arg(token_text(token))
                .arg(px_millis(lease))
                .arg(DONE)
                .invoke_async(&mut connection)
                .await
                .map_err(unavailable)?;
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
            let _freed: i64 = RELEASE
                .key(self.redis_key(key))
                .arg(token_text(token))
                .invoke_async(&mut connection)
                .await
                .map_err(unavailable)?;
            Ok(())
        })
    }

    fn release_detached(&self, key: DedupKey, token: ClaimToken) {
        let Some(runtime) = &self.runtime else {
            // No runtime to run the release on: the lease expiry frees the key.
            return;
        };
        let store = self.clone();
        runtime.spawn(async move {
            if let Err(error) = store.release(&key, token).await {
                tracing::warn!(%error, key = %key, "could not release a dropped claim; its lease will expire");
            }
        });
    }
}
