//! The in-memory store: a bounded, sharded LRU.

use std::fmt;
use std::future::Future;
use std::hash::{BuildHasher, RandomState};
use std::num::NonZeroUsize;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, UNIX_EPOCH};

use schnellru::{ByLength, LruMap};
use siphasher::sip128::SipHasher13;

use super::{ClaimToken, DedupKey, IdempotencyStore, StoreClaim, StoreFuture, millis};
use crate::clock::{Clock, Reading};
use crate::error::DedupError;

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

/// What a shard keeps of a key: its 128-bit SipHash-1-3 under the store's random key, held
/// inline. A copy of the key's text cost an allocation per new key; with 100 000 keys at a time,
/// two different keys share a digest with odds of about 2^-95, and choosing two that do needs
/// the store's key, which never leaves the process.
type KeyDigest = u128;

type ShardMap = LruMap<KeyDigest, Entry, ByLength>;
type Shard = Mutex<ShardMap>;

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
/// * Compact: it keeps a 16-byte keyed digest of each key, not the key's text, in a table of
///   its own, so remembering a new key allocates nothing.
/// * Its clock is injectable ([`MemoryStore::with_clock`]), so tests can expire leases and
///   TTLs without sleeping.
pub struct MemoryStore {
    shards: Box<[Shard]>,
    /// Keyed with random keys when the store is made, so digests differ from store to store.
    digester: SipHasher13,
    clock: Arc<dyn Clock>,
    capacity: usize,
    evictions: AtomicU64,
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
                // The map counts in `u32`: a shard of more keys than that holds fewer, never
                // more, than asked (over 68 billion keys in all).
                let limit = ByLength::new(u32::try_from(size).unwrap_or(u32::MAX));
                Mutex::new(LruMap::new(limit))
            })
            .collect();
        // Two outputs of the standard library's randomly keyed SipHash: random keys without a
        // call that can fail.
        let random = RandomState::new();
        Self {
            shards,
            digester: SipHasher13::new_with_keys(random.hash_one(0_u8), random.hash_one(1_u8)),
            clock: crate::clock::system(),
            capacity,
            evictions: AtomicU64::new(0),
        }
    }

    /// Reads time from `clock` instead of the system clock. Defaults to
    /// [`SystemClock`](crate::clock::SystemClock).
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

    /// The key's digest, and the shard that holds it, picked by the digest's high half (the
    /// map hashes the whole digest again for its own table).
    fn locate(&self, key: &DedupKey) -> (KeyDigest, &Shard) {
        let digest = self.digester.hash(key.as_str().as_bytes()).as_u128();
        let index = ((digest >> 64) as u64 % self.shards.len() as u64) as usize;
        (digest, &self.shards[index])
    }

    /// The time in milliseconds: `reading`, when it was read from this store's clock, or else
    /// a new reading of it.
    fn now_ms(&self, reading: Option<Reading<'_>>) -> u64 {
        let now = reading
            .and_then(|reading| reading.on(&self.clock))
            .unwrap_or_else(|| self.clock.now());
        let since_epoch = now.duration_since(UNIX_EPOCH).unwrap_or_default();
        u64::try_from(since_epoch.as_millis()).unwrap_or(u64::MAX)
    }

    /// Claims `key` at once, at `reading` when it is a time of this store's clock: the
    /// deduplicator calls this directly, without the trait's boxed future.
    pub(crate) fn claim_now(
        &self,
        key: &DedupKey,
        token: ClaimToken,
        lease: Duration,
        reading: Option<Reading<'_>>,
    ) -> StoreClaim {
        let now = self.now_ms(reading);
        let (digest, shard) = self.locate(key);
        let mut shard = lock(shard);
        let claimed = Entry::InFlight {
            token,
            until_ms: now.saturating_add(millis(lease)),
        };
        match shard.get(&digest) {
            Some(Entry::Done { until_ms }) if *until_ms > now => StoreClaim::Completed,
            Some(Entry::InFlight { until_ms, .. }) if *until_ms > now => StoreClaim::InFlight,
            Some(expired) => {
                *expired = claimed;
                StoreClaim::Acquired
            }
            None => {
                self.insert(&mut shard, digest, claimed);
                StoreClaim::Acquired
            }
        }
    }

    /// Adds a key that is not stored, counting the entry the LRU evicts to make room: a new key
    /// that leaves the shard's length as it was pushed the least recently used one out.
    fn insert(&self, shard: &mut ShardMap, digest: KeyDigest, entry: Entry) {
        let before = shard.len();
        shard.insert(digest, entry);
        if shard.len() == before {
            self.evictions.fetch_add(1, Ordering::Relaxed);
            crate::receiver::telemetry::dedup_eviction();
        }
    }

    /// Commits `key` at once: the deduplicator's guard calls this directly, without the
    /// trait's boxed future.
    pub(crate) fn commit_now(
        &self,
        key: &DedupKey,
        token: ClaimToken,
        ttl: Duration,
    ) -> Result<(), DedupError> {
        let now = self.now_ms(None);
        let (digest, shard) = self.locate(key);
        let mut shard = lock(shard);
        let done = Entry::Done {
            until_ms: now.saturating_add(millis(ttl)),
        };
        match shard.get(&digest) {
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
            None => self.insert(&mut shard, digest, done),
        }
        Ok(())
    }

    fn renew_now(
        &self,
        key: &DedupKey,
        token: ClaimToken,
        lease: Duration,
    ) -> Result<(), DedupError> {
        let now = self.now_ms(None);
        let (digest, shard) = self.locate(key);
        let mut shard = lock(shard);
        match shard.get(&digest) {
            // Still ours, even if its lease ran out: nobody else took it meanwhile.
            Some(Entry::InFlight {
                token: held,
                until_ms,
            }) if *held == token => {
                *until_ms = now.saturating_add(millis(lease));
                Ok(())
            }
            _ => Err(DedupError::LeaseLost {
                key: key.to_string(),
            }),
        }
    }

    fn release_now(&self, key: &DedupKey, token: ClaimToken) {
        let (digest, shard) = self.locate(key);
        let mut shard = lock(shard);
        if matches!(shard.peek(&digest), Some(Entry::InFlight { token: t, .. }) if *t == token) {
            shard.remove(&digest);
        }
    }
}

/// An answer known when the method is called, as the boxed future the trait returns, without
/// allocating: `answer` is a closure capturing nothing, so the future is zero-sized, and a box
/// of a zero-sized value allocates nothing. A `ready(value)` future holds the value, and boxing
/// it cost an allocation on every claim and commit.
fn answered<T, F>(answer: F) -> StoreFuture<'static, T>
where
    F: Fn() -> Result<T, DedupError> + Send + Unpin + 'static,
{
    struct Answered<F>(F);
    impl<T, F: Fn() -> Result<T, DedupError> + Unpin> Future for Answered<F> {
        type Output = Result<T, DedupError>;
        fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Self::Output> {
            Poll::Ready((self.0)())
        }
    }
    debug_assert_eq!(std::mem::size_of::<F>(), 0, "the answer captures nothing");
    Box::pin(Answered(answer))
}

fn lock(shard: &Shard) -> std::sync::MutexGuard<'_, ShardMap> {
    // A panic never happens while a shard is locked, and the map stays consistent anyway.
    shard.lock().unwrap_or_else(PoisonError::into_inner)
}

impl IdempotencyStore for MemoryStore {
    fn claim<'a>(
        &'a self,
        key: &'a DedupKey,
        token: ClaimToken,
        lease: Duration,
    ) -> StoreFuture<'a, StoreClaim> {
        match self.claim_now(key, token, lease, None) {
            StoreClaim::Acquired => answered(|| Ok(StoreClaim::Acquired)),
            StoreClaim::Completed => answered(|| Ok(StoreClaim::Completed)),
            StoreClaim::InFlight => answered(|| Ok(StoreClaim::InFlight)),
        }
    }

    fn renew<'a>(
        &'a self,
        key: &'a DedupKey,
        token: ClaimToken,
        lease: Duration,
    ) -> StoreFuture<'a, ()> {
        match self.renew_now(key, token, lease) {
            Ok(()) => answered(|| Ok(())),
            Err(error) => Box::pin(std::future::ready(Err(error))),
        }
    }

    fn commit<'a>(
        &'a self,
        key: &'a DedupKey,
        token: ClaimToken,
        ttl: Duration,
    ) -> StoreFuture<'a, ()> {
        match self.commit_now(key, token, ttl) {
            Ok(()) => answered(|| Ok(())),
            Err(error) => Box::pin(std::future::ready(Err(error))),
        }
    }

    fn release<'a>(&'a self, key: &'a DedupKey, token: ClaimToken) -> StoreFuture<'a, ()> {
        self.release_now(key, token);
        answered(|| Ok(()))
    }

    fn release_detached(&self, key: DedupKey, token: ClaimToken) {
        self.release_now(&key, token);
    }
}
