//! Idempotency: handle each delivery once, and never lose one.
//!
//! AISoule "may send the same event twice" and retries a non-200 answer after 10 s, 60 s and
//! 5 min. A naive "seen" set loses events in two ways, and this module avoids both:
//!
//! * It marks an event *before* the handler runs, so when the handler fails the platform's
//!   retry is dropped as a duplicate. Here a delivery **claims** its key, and the claim becomes
//!   permanent only when the handler **commits**; a failure, a panic or a cancelled future
//!   releases it, so the retry is processed.
//! * It keys on `message_id` alone, but `message.read` carries the same `message_id` as the
//!   message it answers. Here the key is the event **kind plus** `message_id`.
//!
//! ```
//! use aisoule_webhooks::dedup::{Claim, Deduplicator};
//! use aisoule_webhooks::Event;
//!
//! # tokio_test_block_on(async {
//! let dedup = Deduplicator::in_memory();
//! let event = Event::parse(br#"{"event":"message.read","data":{"message_id":"m1"}}"#)?;
//!
//! let Claim::Fresh(guard) = dedup.claim(&event).await? else { unreachable!() };
//! // … handle the event; on success:
//! guard.commit().await?;
//!
//! assert!(matches!(dedup.claim(&event).await?, Claim::Duplicate));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # }).unwrap();
//! # fn tokio_test_block_on<F: std::future::Future>(f: F) -> F::Output {
//! #     tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
//! # }
//! ```

use std::fmt;
use std::future::Future;
use std::hash::BuildHasher;
use std::num::NonZeroUsize;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, UNIX_EPOCH};

use lru::LruCache;
use sha2::{Digest, Sha256};

use crate::clock::{Clock, SystemClock};
use crate::error::{ConfigError, DedupError};
use crate::event::Event;

#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub mod redis;

/// The key a delivery is deduplicated under: `namespace:kind:id:<message_id>`, or
/// `namespace:kind:sha256:<digest of the raw body>` for events without a `message_id`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DedupKey(String);

impl DedupKey {
    /// The default key for an event.
    ///
    /// Events with a `message_id` are keyed on kind plus id, so the statuses of one message
    /// stay apart. Contacts, campaigns and transfers have no `message_id` and legitimately
    /// recur (`contact.updated` for one contact), so they are keyed on kind plus a digest of
    /// the exact body: a redelivery repeats the bytes, a new update does not.
    pub fn for_event(event: &Event, namespace: Option<&str>) -> Self {
        let kind = event.kind().as_str();
        let namespace = namespace.unwrap_or("");
        match event.message_id() {
            Some(id) => Self(format!("{namespace}:{kind}:id:{id}")),
            None => {
                let digest = Sha256::digest(event.raw());
                Self(format!(
                    "{namespace}:{kind}:sha256:{}",
                    const_hex::encode(&digest[..16])
                ))
            }
        }
    }

    /// A key from your own text (see [`Deduplicator::with_key_fn`]).
    pub fn from_string(key: impl Into<String>) -> Self {
        Self(key.into())
    }

    /// The key as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for DedupKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Proof of one claim, so that only its owner can commit or release it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClaimToken(u128);

impl ClaimToken {
    /// A token with the given value; stores make them unique among live claims.
    pub fn new(value: u128) -> Self {
        Self(value)
    }

    /// The token's value.
    pub fn value(self) -> u128 {
        self.0
    }
}

/// What a store answers to a claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreClaim {
    /// The key was free and is now claimed for the lease, with this token.
    Acquired(ClaimToken),
    /// The key was completed within the TTL.
    Completed,
    /// Another delivery holds an unexpired claim on the key.
    InFlight,
}

/// The future a store method returns: boxed, so that stores can be used as trait objects,
/// and `Send`, so that axum and actix-web handlers can await it.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, DedupError>> + Send + 'a>>;

/// Where claims live. [`MemoryStore`] and, with the `redis` feature, [`redis::RedisStore`]
/// implement it; so can your own store.
///
/// # Errors
///
/// Every method returns a [`DedupError`] when the store cannot answer.
pub trait IdempotencyStore: Send + Sync + fmt::Debug + 'static {
    /// Claims `key` for `lease`, unless it is completed or validly claimed.
    fn claim<'a>(&'a self, key: &'a DedupKey, lease: Duration) -> StoreFuture<'a, StoreClaim>;

    /// Marks `key` completed for `ttl`, if `token` still owns it (or nobody does).
    /// Returns [`DedupError::LeaseLost`] when another claim has taken or completed it.
    fn commit<'a>(
        &'a self,
        key: &'a DedupKey,
        token: ClaimToken,
        ttl: Duration,
    ) -> StoreFuture<'a, ()>;

    /// Frees `key` if `token` still owns it; otherwise does nothing.
    fn release<'a>(&'a self, key: &'a DedupKey, token: ClaimToken) -> StoreFuture<'a, ()>;

    /// Frees `key` from a destructor, without blocking: a dropped [`ClaimGuard`] calls this.
    /// A store that needs I/O spawns it; if it cannot, the lease expiry frees the key.
    fn release_detached(&self, key: DedupKey, token: ClaimToken);
}

/// The answer to [`Deduplicator::claim`].
#[derive(Debug)]
#[must_use = "a fresh claim must be committed once the event is handled"]
pub enum Claim {
    /// First delivery (or a retry after a failure): handle it, then commit the guard.
    Fresh(ClaimGuard),
    /// Already handled within the TTL: acknowledge it without handling it again.
    Duplicate,
    /// Another delivery of it is being handled right now: ask the platform to retry later.
    InFlight,
}

/// An exclusive claim on one event, held while its handler runs.
///
/// [`commit`](ClaimGuard::commit) it once the handler has succeeded. Dropping it without
/// committing (a failure, a panic, a cancelled future) releases the key, so the platform's
/// retry is processed.
pub struct ClaimGuard {
    store: Option<Arc<dyn IdempotencyStore>>,
    key: DedupKey,
    token: Option<ClaimToken>,
    ttl: Duration,
}

impl fmt::Debug for ClaimGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClaimGuard")
            .field("key", &self.key)
            .field("held", &self.token.is_some())
            .field("guarded", &self.store.is_some())
            .finish()
    }
}

impl ClaimGuard {
    /// The key this guard holds.
    pub fn key(&self) -> &DedupKey {
        &self.key
    }

    /// Whether a store backs this claim. `false` only after a store error under
    /// [`Deduplicator::fail_open_on_store_error`].
    pub fn is_guarded(&self) -> bool {
        self.store.is_some()
    }

    /// Marks the event handled: redeliveries within the TTL are duplicates from now on.
    ///
    /// # Errors
    ///
    /// [`DedupError::LeaseLost`] when the lease expired and another delivery took the key
    /// meanwhile, or a store error. Either way the handler has already run, so log it rather
    /// than failing the delivery.
    pub async fn commit(mut self) -> Result<(), DedupError> {
        match (self.store.take(), self.token.take()) {
            (Some(store), Some(token)) => store.commit(&self.key, token, self.ttl).await,
            _ => Ok(()),
        }
    }

    /// Frees the key now, so that a redelivery is handled again.
    ///
    /// # Errors
    ///
    /// A store error; the lease expiry frees the key in that case.
    pub async fn release(mut self) -> Result<(), DedupError> {
        match (self.store.take(), self.token.take()) {
            (Some(store), Some(token)) => store.release(&self.key, token).await,
            _ => Ok(()),
        }
    }
}

impl Drop for ClaimGuard {
    fn drop(&mut self) {
        if let (Some(store), Some(token)) = (self.store.take(), self.token.take()) {
            store.release_detached(self.key.clone(), token);
        }
    }
}

/// How a user-supplied key function maps an event to its key text.
pub type KeyFn = dyn Fn(&Event) -> String + Send + Sync;

/// Claims events on a store, with the lease, TTL and keying policy.
///
/// Cheap to clone; clones share the store.
#[derive(Clone)]
pub struct Deduplicator {
    store: Arc<dyn IdempotencyStore>,
    lease: Duration,
    ttl: Duration,
    namespace: Option<Arc<str>>,
    key_fn: Option<Arc<KeyFn>>,
    fail_open: bool,
}

impl fmt::Debug for Deduplicator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Deduplicator")
            .field("store", &self.store)
            .field("lease", &self.lease)
            .field("ttl", &self.ttl)
            .field("namespace", &self.namespace)
            .field("custom_key_fn", &self.key_fn.is_some())
            .field("fail_open", &self.fail_open)
            .finish()
    }
}

impl Default for Deduplicator {
    fn default() -> Self {
        Self::in_memory()
    }
}

impl Deduplicator {
    /// The lease of an in-flight claim: 60 s, far above the platform's 5 s answer deadline.
    pub const DEFAULT_LEASE: Duration = Duration::from_secs(60);
    /// How long completed keys are remembered: 24 h, far beyond the platform's last retry
    /// (about 6 min after the first attempt).
    pub const DEFAULT_TTL: Duration = Duration::from_secs(24 * 60 * 60);

    /// A deduplicator on `store`, with the default lease and TTL.
    pub fn new(store: impl IdempotencyStore) -> Self {
        Self::from_arc(Arc::new(store))
    }

    /// A deduplicator on a shared store.
    pub fn from_arc(store: Arc<dyn IdempotencyStore>) -> Self {
        Self {
            store,
            lease: Self::DEFAULT_LEASE,
            ttl: Self::DEFAULT_TTL,
            namespace: None,
            key_fn: None,
            fail_open: false,
        }
    }

    /// A deduplicator on a default [`MemoryStore`] (100 000 keys).
    pub fn in_memory() -> Self {
        Self::new(MemoryStore::new())
    }

    /// How long an in-flight claim lasts before another delivery may take the key, so that a
    /// crashed process never blocks an event forever. Defaults to 60 s.
    ///
    /// # Errors
    ///
    /// [`ConfigError::ZeroDuration`] for a zero lease.
    pub fn with_lease(mut self, lease: Duration) -> Result<Self, ConfigError> {
        if lease.is_zero() {
            return Err(ConfigError::ZeroDuration {
                setting: "the lease",
            });
        }
        self.lease = lease;
        Ok(self)
    }

    /// How long a completed key is remembered. Defaults to 24 h. Keep it at least as long as
    /// the integrations' replay tolerance, which they check.
    ///
    /// # Errors
    ///
    /// [`ConfigError::ZeroDuration`] for a zero TTL.
    pub fn with_ttl(mut self, ttl: Duration) -> Result<Self, ConfigError> {
        if ttl.is_zero() {
            return Err(ConfigError::ZeroDuration { setting: "the TTL" });
        }
        self.ttl = ttl;
        Ok(self)
    }

    /// Keeps this webhook's keys apart from another's on a shared store (name it after the
    /// webhook). Defaults to none.
    ///
    /// # Errors
    ///
    /// [`ConfigError::NamespaceHasSeparator`] when `namespace` contains `:`.
    pub fn with_namespace(mut self, namespace: impl Into<String>) -> Result<Self, ConfigError> {
        let namespace = namespace.into();
        if namespace.contains(':') {
            return Err(ConfigError::NamespaceHasSeparator { namespace });
        }
        self.namespace = Some(namespace.into());
        Ok(self)
    }

    /// Replaces the default keying ([`DedupKey::for_event`]) with your own. The namespace is
    /// still prefixed.
    pub fn with_key_fn(
        mut self,
        key_fn: impl Fn(&Event) -> String + Send + Sync + 'static,
    ) -> Self {
        self.key_fn = Some(Arc::new(key_fn));
        self
    }

    /// Lets deliveries through *without deduplication* while the store is failing, instead of
    /// answering 503 so that the platform retries later.
    ///
    /// # Security
    ///
    /// Off by default. With it on, a store outage means events can be handled twice; choose it
    /// only when handling twice is harmless and handling late is not.
    pub fn fail_open_on_store_error(mut self) -> Self {
        self.fail_open = true;
        self
    }

    /// The lease.
    pub fn lease(&self) -> Duration {
        self.lease
    }

    /// The TTL.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The namespace, if any.
    pub fn namespace(&self) -> Option<&str> {
        self.namespace.as_deref()
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn IdempotencyStore> {
        &self.store
    }

    /// The key `event` is claimed under.
    pub fn key_for(&self, event: &Event) -> DedupKey {
        match &self.key_fn {
            Some(key_fn) => DedupKey(format!(
                "{}:{}",
                self.namespace.as_deref().unwrap_or(""),
                key_fn(event)
            )),
            None => DedupKey::for_event(event, self.namespace.as_deref()),
        }
    }

    /// Claims `event`.
    ///
    /// # Errors
    ///
    /// A [`DedupError`] when the store cannot answer, unless
    /// [`fail_open_on_store_error`](Self::fail_open_on_store_error) is set.
    pub async fn claim(&self, event: &Event) -> Result<Claim, DedupError> {
        self.claim_key(self.key_for(event)).await
    }

    /// Claims a key directly.
    ///
    /// # Errors
    ///
    /// As for [`claim`](Self::claim).
    pub async fn claim_key(&self, key: DedupKey) -> Result<Claim, DedupError> {
        match self.store.claim(&key, self.lease).await {
            Ok(StoreClaim::Acquired(token)) => Ok(Claim::Fresh(ClaimGuard {
                store: Some(Arc::clone(&self.store)),
                key,
                token: Some(token),
                ttl: self.ttl,
            })),
            Ok(StoreClaim::Completed) => Ok(Claim::Duplicate),
            Ok(StoreClaim::InFlight) => Ok(Claim::InFlight),
            Err(error) if self.fail_open => {
                tracing::warn!(%error, key = %key, "idempotency store failed; failing open");
                Ok(Claim::Fresh(ClaimGuard {
                    store: None,
                    key,
                    token: None,
                    ttl: self.ttl,
                }))
            }
            Err(error) => Err(error),
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Entry {
    InFlight { token: ClaimToken, until_ms: u64 },
    Done { until_ms: u64 },
}

impl Entry {
    fn until_ms(&self) -> u64 {
        match self {
            Self::InFlight { until_ms, .. } | Self::Done { until_ms } => *until_ms,
        }
    }
}

type Shard = Mutex<LruCache<DedupKey, Entry>>;

/// The default store: a bounded, sharded LRU in this process's memory.
///
/// Right for a receiver that runs as one process. Behind a load balancer with several
/// replicas, a redelivery can reach a replica that never saw the first delivery: use the
/// Redis store there.
///
/// * Bounded: it never holds more than its capacity (default 100 000 keys), whatever arrives;
///   the least recently used key is evicted, and evictions are counted
///   ([`MemoryStore::evictions`]). A key evicted before its TTL can be handled again, so size
///   the capacity above your peak events per TTL.
/// * Sharded: keys are spread over independent locks, so concurrent requests rarely wait.
/// * Its clock is injectable ([`MemoryStore::with_clock`]), so tests can expire leases and
///   TTLs without sleeping.
pub struct MemoryStore {
    shards: Box<[Shard]>,
    hasher: std::hash::RandomState,
    clock: Arc<dyn Clock>,
    capacity: usize,
    evictions: AtomicU64,
    next_token: AtomicU64,
}

impl fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryStore")
            .field("capacity", &self.capacity)
            .field("shards", &self.shards.len())
            .field("evictions", &self.evictions())
            .finish_non_exhaustive()
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    /// 100 000 keys.
    pub const DEFAULT_CAPACITY: usize = 100_000;
    const SHARDS: usize = 16;

    /// A store holding up to [`MemoryStore::DEFAULT_CAPACITY`] keys.
    pub fn new() -> Self {
        Self::with_capacity(NonZeroUsize::new(Self::DEFAULT_CAPACITY).expect("nonzero"))
    }

    /// A store holding at most `capacity` keys, split evenly over its shards.
    pub fn with_capacity(capacity: NonZeroUsize) -> Self {
        let capacity = capacity.get();
        let shard_count = capacity.min(Self::SHARDS);
        let shards = (0..shard_count)
            .map(|i| {
                // Spread the remainder so the shard capacities add up to exactly `capacity`.
                let size = capacity / shard_count + usize::from(i < capacity % shard_count);
                Mutex::new(LruCache::new(NonZeroUsize::new(size).expect("size ≥ 1")))
            })
            .collect();
        Self {
            shards,
            hasher: std::hash::RandomState::new(),
            clock: Arc::new(SystemClock),
            capacity,
            evictions: AtomicU64::new(0),
            next_token: AtomicU64::new(1),
        }
    }

    /// Reads time from `clock` instead of the system clock. Defaults to [`SystemClock`].
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The most keys it holds.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// How many keys it holds now, including expired ones not yet overwritten.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| lock(s).len()).sum()
    }

    /// Whether it holds no keys.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many keys were evicted to respect the capacity, since the store was made.
    pub fn evictions(&self) -> u64 {
        self.evictions.load(Ordering::Relaxed)
    }

    fn shard(&self, key: &DedupKey) -> &Shard {
        let index = self.hasher.hash_one(key) as usize % self.shards.len();
        &self.shards[index]
    }

    fn now_ms(&self) -> u64 {
        let since_epoch = self
            .clock
            .now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        u64::try_from(since_epoch.as_millis()).unwrap_or(u64::MAX)
    }

    fn claim_now(&self, key: &DedupKey, lease: Duration) -> StoreClaim {
        let now = self.now_ms();
        let mut shard = lock(self.shard(key));
        let token = ClaimToken(u128::from(self.next_token.fetch_add(1, Ordering::Relaxed)));
        let claimed = Entry::InFlight {
            token,
            until_ms: now.saturating_add(millis(lease)),
        };
        match shard.get_mut(key) {
            Some(Entry::Done { until_ms }) if *until_ms > now => StoreClaim::Completed,
            Some(Entry::InFlight { until_ms, .. }) if *until_ms > now => StoreClaim::InFlight,
            Some(expired) => {
                *expired = claimed;
                StoreClaim::Acquired(token)
            }
            None => {
                self.insert(&mut shard, key, claimed);
                StoreClaim::Acquired(token)
            }
        }
    }

    /// Adds a key that is not stored, counting the entry the LRU evicts to make room.
    fn insert(&self, shard: &mut LruCache<DedupKey, Entry>, key: &DedupKey, entry: Entry) {
        if shard.push(key.clone(), entry).is_some() {
            self.evictions.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn commit_now(
        &self,
        key: &DedupKey,
        token: ClaimToken,
        ttl: Duration,
    ) -> Result<(), DedupError> {
        let now = self.now_ms();
        let mut shard = lock(self.shard(key));
        let done = Entry::Done {
            until_ms: now.saturating_add(millis(ttl)),
        };
        match shard.get_mut(key) {
            Some(entry) => {
                let ours = matches!(entry, Entry::InFlight { token: held, .. } if *held == token);
                if !ours && entry.until_ms() > now {
                    return Err(DedupError::LeaseLost {
                        key: key.to_string(),
                    });
                }
                // Ours, or expired and not retaken: completed now, updated in place.
                *entry = done;
            }
            // Evicted meanwhile: record it anyway.
            None => self.insert(&mut shard, key, done),
        }
        Ok(())
    }

    fn release_now(&self, key: &DedupKey, token: ClaimToken) {
        let mut shard = lock(self.shard(key));
        if matches!(shard.peek(key), Some(Entry::InFlight { token: t, .. }) if *t == token) {
            shard.pop(key);
        }
    }
}

fn lock(shard: &Shard) -> std::sync::MutexGuard<'_, LruCache<DedupKey, Entry>> {
    // A panic never happens while a shard is locked, and the map stays consistent anyway.
    shard.lock().unwrap_or_else(PoisonError::into_inner)
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

impl IdempotencyStore for MemoryStore {
    fn claim<'a>(&'a self, key: &'a DedupKey, lease: Duration) -> StoreFuture<'a, StoreClaim> {
        let claimed = self.claim_now(key, lease);
        Box::pin(std::future::ready(Ok(claimed)))
    }

    fn commit<'a>(
        &'a self,
        key: &'a DedupKey,
        token: ClaimToken,
        ttl: Duration,
    ) -> StoreFuture<'a, ()> {
        let committed = self.commit_now(key, token, ttl);
        Box::pin(std::future::ready(committed))
    }

    fn release<'a>(&'a self, key: &'a DedupKey, token: ClaimToken) -> StoreFuture<'a, ()> {
        self.release_now(key, token);
        Box::pin(std::future::ready(Ok(())))
    }

    fn release_detached(&self, key: DedupKey, token: ClaimToken) {
        self.release_now(&key, token);
    }
}
