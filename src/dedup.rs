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

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::clock::Reading;
use crate::error::{ConfigError, DedupError};
use crate::event::Event;

mod memory;
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub mod redis;

pub use memory::MemoryStore;

/// The key a delivery is deduplicated under.
///
/// Its text is `<len>:<namespace>:<len>:<kind>:id:<message_id>`, or
/// `<len>:<namespace>:<len>:<kind>:sha256:<digest of the raw body>` for events without a
/// `message_id`, where each `<len>` is the byte length of the part after it. The lengths make
/// the encoding injective: no two different (namespace, kind, id) triples give the same key,
/// whatever characters the parts contain (an unknown event may be named `order:id:1`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DedupKey(String);

impl DedupKey {
    /// The default key for an event.
    ///
    /// Events with a non-empty `message_id` are keyed on kind plus id, so the statuses of one
    /// message stay apart. Contacts, campaigns and transfers have no `message_id` and
    /// legitimately recur (`contact.updated` for one contact), so they are keyed on kind plus
    /// a digest of the exact body: a redelivery repeats the bytes, a new update does not. An
    /// empty `message_id` identifies nothing, so it is keyed like a missing one: two different
    /// events that both send `""` never collide.
    pub fn for_event(event: &Event, namespace: Option<&str>) -> Self {
        Self::for_account_event(event, namespace, None)
    }

    /// The default key for an event received for `account` on a receiver for many accounts,
    /// so that the same `message_id` under two accounts is two events: `account:<len>:<account>:`
    /// goes between the kind and the id's tag. With `None`, the key is
    /// [`for_event`](Self::for_event)'s.
    pub fn for_account_event(
        event: &Event,
        namespace: Option<&str>,
        account: Option<&str>,
    ) -> Self {
        let kind = event.kind().as_str();
        match event.message_id().filter(|id| !id.is_empty()) {
            Some(id) => Self::from_parts(namespace, kind, account, "id", id),
            None => {
                let digest = Sha256::digest(event.raw());
                Self::from_parts(
                    namespace,
                    kind,
                    account,
                    "sha256",
                    &const_hex::encode(&digest[..16]),
                )
            }
        }
    }

    /// `<len>:<namespace>:<len>:<kind>:<tag>:<rest>`, or with an account
    /// `<len>:<namespace>:<len>:<kind>:account:<len>:<account>:<tag>:<rest>`. The tags are
    /// fixed text chosen by this crate (`account` is none of the others) and the rest runs to
    /// the end, so the lengths alone make the encoding injective.
    fn from_parts(
        namespace: Option<&str>,
        kind: &str,
        account: Option<&str>,
        tag: &str,
        rest: &str,
    ) -> Self {
        let namespace = namespace.unwrap_or("");
        // Pushed piece by piece, with itoa for the lengths: `format!` costs about ten times
        // as much, on every delivery.
        let mut lengths = itoa::Buffer::new();
        // Room for every piece, so that the key never reallocates: up to 20 digits per length,
        // and `account:` with its length for an account.
        let mut key = String::with_capacity(
            namespace.len()
                + kind.len()
                + account.map_or(0, |account| account.len() + 20 + 10)
                + tag.len()
                + rest.len()
                + 2 * 20
                + 5,
        );
        key.push_str(lengths.format(namespace.len()));
        key.push(':');
        key.push_str(namespace);
        key.push(':');
        key.push_str(lengths.format(kind.len()));
        key.push(':');
        key.push_str(kind);
        key.push(':');
        if let Some(account) = account {
            key.push_str("account:");
            key.push_str(lengths.format(account.len()));
            key.push(':');
            key.push_str(account);
            key.push(':');
        }
        key.push_str(tag);
        key.push(':');
        key.push_str(rest);
        Self(key)
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

/// Proof of one claim, so that only its owner can renew, commit or release it.
///
/// Tokens are chosen by the [`Deduplicator`] *before* it asks the store, so that a claim whose
/// request was cancelled mid-flight can still be released by its token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClaimToken(u128);

impl ClaimToken {
    /// A token with the given value.
    pub fn new(value: u128) -> Self {
        Self(value)
    }

    /// A fresh token, unique among live claims on every replica sharing a store: a random
    /// 64-bit prefix drawn once per process, then a counter.
    ///
    /// A token needs to be unique, not secret (only code holding the store can use one), so
    /// one draw from the operating system serves every claim: a kernel call per delivery was
    /// the receive path's one syscall. Two replicas share a prefix with odds of 2^-64.
    ///
    /// # Errors
    ///
    /// [`DedupError::Unavailable`] when the operating system has no randomness to give for
    /// the first token.
    pub fn unique() -> Result<Self, DedupError> {
        static PREFIX: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
        static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let prefix = match PREFIX.get() {
            Some(prefix) => *prefix,
            None => {
                let mut bytes = [0u8; 8];
                getrandom::fill(&mut bytes).map_err(DedupError::unavailable)?;
                *PREFIX.get_or_init(|| u64::from_le_bytes(bytes))
            }
        };
        let count = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(Self(u128::from(prefix) << 64 | u128::from(count)))
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
    /// The key was free and is now claimed for the lease, with the caller's token.
    Acquired,
    /// The key was completed within the TTL.
    Completed,
    /// Another delivery holds an unexpired claim on the key.
    InFlight,
}

/// The future a store method returns: boxed, so that stores can be used as trait objects,
/// and `Send`, so that axum and actix-web handlers can await it.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, DedupError>> + Send + 'a>>;

/// Where claims live. [`MemoryStore`] and, with the `redis` feature, [`redis::RedisStore`]
/// implement it; so can your own store. `test_util::store_suite` (feature `test-util`) runs
/// the behaviour every store must have against yours.
///
/// # When the work happens, and what cancellation does
///
/// A method may do its work when it is called ([`MemoryStore`] does, and returns a ready
/// future) or when its future is polled ([`redis::RedisStore`] does). Either way the caller
/// assumes that a dropped future *may* have taken effect, and the protocol is built so that
/// this is safe: the caller chose the token before calling [`claim`](Self::claim), and if that
/// future is dropped it calls [`release_detached`](Self::release_detached) with the same
/// token, which frees the key if, and only if, the claim went through. Commit and release
/// are only ever run to completion by this crate (in the request, or in a task of their own
/// once the request is dropped), so a store need not make them cancel-safe beyond being
/// atomic.
///
/// # Errors
///
/// Every method returns a [`DedupError`] when the store cannot answer.
pub trait IdempotencyStore: Send + Sync + fmt::Debug + 'static {
    /// Claims `key` for `lease` under `token`, unless it is completed or validly claimed.
    fn claim<'a>(
        &'a self,
        key: &'a DedupKey,
        token: ClaimToken,
        lease: Duration,
    ) -> StoreFuture<'a, StoreClaim>;

    /// Extends the claim to `lease` from now, if `token` still owns it.
    /// Returns [`DedupError::LeaseLost`] when it does not.
    fn renew<'a>(
        &'a self,
        key: &'a DedupKey,
        token: ClaimToken,
        lease: Duration,
    ) -> StoreFuture<'a, ()>;

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

    /// Frees `key` if `token` still owns it, from a destructor, without blocking: a dropped
    /// [`ClaimGuard`] (or a dropped claim request) calls this. A store that needs I/O spawns
    /// it; if it cannot, the lease expiry frees the key.
    fn release_detached(&self, key: DedupKey, token: ClaimToken);

    /// Answers once the store is reachable, for a readiness check
    /// ([`Receiver::check_ready`](crate::Receiver::check_ready)). The default answers at once:
    /// right for a store in this process's memory; a networked store asks its server.
    fn ping(&self) -> StoreFuture<'_, ()> {
        Box::pin(std::future::ready(Ok(())))
    }
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
    store: Option<StoreRef>,
    key: DedupKey,
    token: Option<ClaimToken>,
    lease: Duration,
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

    /// The lease this claim was taken for, and is renewed to.
    pub fn lease(&self) -> Duration {
        self.lease
    }

    /// Extends the claim to a full lease from now, so that a handler running longer than the
    /// lease is not started a second time by a redelivery.
    ///
    /// # Errors
    ///
    /// [`DedupError::LeaseLost`] when the lease had already expired and another delivery took
    /// the key, or a store error.
    pub async fn renew(&self) -> Result<(), DedupError> {
        match (&self.store, self.token) {
            (Some(store), Some(token)) => store.as_dyn().renew(&self.key, token, self.lease).await,
            _ => Ok(()),
        }
    }

    /// Marks the event handled: redeliveries within the TTL are duplicates from now on.
    ///
    /// # Errors
    ///
    /// [`DedupError::LeaseLost`] when the lease expired and another delivery took the key
    /// meanwhile, or a store error. Either way the handler has already run, so log it rather
    /// than failing the delivery.
    pub async fn commit(mut self) -> Result<(), DedupError> {
        self.settle(true).await
    }

    /// Frees the key now, so that a redelivery is handled again.
    ///
    /// # Errors
    ///
    /// A store error; the lease expiry frees the key in that case.
    pub async fn release(mut self) -> Result<(), DedupError> {
        self.settle(false).await
    }

    /// Commits (`handled`) or releases the claim, and leaves the guard disarmed with its key,
    /// so that a caller can name the key in a log line without a copy of it.
    pub(crate) async fn settle(&mut self, handled: bool) -> Result<(), DedupError> {
        match (self.store.take(), self.token.take()) {
            (Some(store), Some(token)) if handled => match store {
                StoreRef::Memory(memory) => memory.commit_now(&self.key, token, self.ttl),
                StoreRef::Other(store) => store.commit(&self.key, token, self.ttl).await,
            },
            (Some(store), Some(token)) => store.as_dyn().release(&self.key, token).await,
            _ => Ok(()),
        }
    }
}

impl ClaimGuard {
    /// Forgets the claim without releasing it: the store said it never took effect.
    fn disarm(&mut self) {
        self.store = None;
        self.token = None;
    }
}

impl Drop for ClaimGuard {
    fn drop(&mut self) {
        if let (Some(store), Some(token)) = (self.store.take(), self.token.take()) {
            store.as_dyn().release_detached(self.key.clone(), token);
        }
    }
}

/// The store a claim was taken on: the [`MemoryStore`] by its own type, so that the receive
/// path claims and commits on it directly (synchronously, with no boxed future, and claiming
/// at the time the receiver read), and any other store through the trait.
enum StoreRef {
    Memory(Arc<MemoryStore>),
    Other(Arc<dyn IdempotencyStore>),
}

impl StoreRef {
    fn as_dyn(&self) -> &dyn IdempotencyStore {
        match self {
            Self::Memory(memory) => &**memory,
            Self::Other(store) => &**store,
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
    /// `store` by its own type, when it is a [`MemoryStore`].
    memory: Option<Arc<MemoryStore>>,
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
    pub fn new<S: IdempotencyStore>(store: S) -> Self {
        // A memory store is kept by its own type as well, for the synchronous path. Wrapped
        // in an `Option` so that the downcast can move it out, where `Any` only lends it.
        let mut store = Some(store);
        if let Some(memory) = (&mut store as &mut dyn Any).downcast_mut::<Option<MemoryStore>>() {
            let memory = Arc::new(memory.take().expect("filled above"));
            return Self {
                memory: Some(Arc::clone(&memory)),
                ..Self::from_arc(memory)
            };
        }
        Self::from_arc(Arc::new(store.expect("not taken")))
    }

    /// A deduplicator on a shared store.
    ///
    /// Every store is called through the trait here, a [`MemoryStore`] too: pass one by
    /// value to [`new`](Self::new) for its synchronous path, which also claims at the time
    /// the receiver read instead of reading the store's clock again.
    pub fn from_arc(store: Arc<dyn IdempotencyStore>) -> Self {
        Self {
            store,
            memory: None,
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
    /// webhook). Defaults to none. Any text will do: keys encode each part's length, so no
    /// character can make two webhooks' keys collide.
    ///
    /// # Errors
    ///
    /// [`ConfigError::EmptyNamespace`] for an empty namespace, which would be the same as none.
    pub fn with_namespace(mut self, namespace: impl Into<String>) -> Result<Self, ConfigError> {
        let namespace = namespace.into();
        if namespace.is_empty() {
            return Err(ConfigError::EmptyNamespace);
        }
        self.namespace = Some(namespace.into());
        Ok(self)
    }

    /// Replaces the default keying ([`DedupKey::for_event`]) with your own. The namespace is
    /// still prefixed, length-encoded, so your keys never collide with another webhook's.
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
        self.key_for_account(event, None)
    }

    /// The key `event` is claimed under when it was received for `account` (a receiver for
    /// many accounts): keys of different accounts never meet, with the default keying or
    /// your own ([`with_key_fn`](Self::with_key_fn)). With `None`, [`key_for`](Self::key_for)'s.
    pub fn key_for_account(&self, event: &Event, account: Option<&str>) -> DedupKey {
        let namespace = self.namespace.as_deref();
        match &self.key_fn {
            Some(key_fn) => DedupKey::from_parts(namespace, "", account, "fn", &key_fn(event)),
            None => DedupKey::for_account_event(event, namespace, account),
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
        self.claim_key_at(key, None).await
    }

    /// [`claim_key`](Self::claim_key) at `reading`, a time the caller read: the memory store
    /// claims at it when it keeps the same clock, instead of reading its own.
    pub(crate) async fn claim_key_at(
        &self,
        key: DedupKey,
        reading: Option<Reading<'_>>,
    ) -> Result<Claim, DedupError> {
        // The guard exists before the store is asked: if this future is dropped while the
        // store is answering, the guard's drop releases whatever the claim did, by its token.
        let token = ClaimToken::unique()?;
        let store = match &self.memory {
            Some(memory) => StoreRef::Memory(Arc::clone(memory)),
            None => StoreRef::Other(Arc::clone(&self.store)),
        };
        let mut guard = ClaimGuard {
            store: Some(store),
            key,
            token: Some(token),
            lease: self.lease,
            ttl: self.ttl,
        };
        let answer = match &self.memory {
            Some(memory) => Ok(memory.claim_now(&guard.key, token, self.lease, reading)),
            None => self.store.claim(&guard.key, token, self.lease).await,
        };
        match answer {
            Ok(StoreClaim::Acquired) => Ok(Claim::Fresh(guard)),
            Ok(StoreClaim::Completed) => {
                guard.disarm();
                Ok(Claim::Duplicate)
            }
            Ok(StoreClaim::InFlight) => {
                guard.disarm();
                Ok(Claim::InFlight)
            }
            // The claim may have gone through before the error: `guard` releases it on drop.
            Err(error) if self.fail_open => {
                tracing::warn!(%error, key = %guard.key, "idempotency store failed; failing open");
                Ok(Claim::Fresh(ClaimGuard {
                    store: None,
                    key: guard.key.clone(),
                    token: None,
                    lease: self.lease,
                    ttl: self.ttl,
                }))
            }
            Err(error) => Err(error),
        }
    }
}

pub(crate) fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(key: &str) -> (String, String, String) {
        let (len, rest) = key.split_once(':').unwrap();
        let len: usize = len.parse().unwrap();
        let (namespace, rest) = (&rest[..len], &rest[len + 1..]);
        let (len, rest) = rest.split_once(':').unwrap();
        let len: usize = len.parse().unwrap();
        (
            namespace.to_owned(),
            rest[..len].to_owned(),
            rest[len + 1..].to_owned(),
        )
    }

    #[test]
    fn the_encoding_decodes_back_to_its_parts() {
        let key = DedupKey::from_parts(Some("a:1:b"), "order:id:1", None, "id", "x:y");
        assert_eq!(
            decode(key.as_str()),
            ("a:1:b".into(), "order:id:1".into(), "id:x:y".into())
        );
        let key = DedupKey::from_parts(Some("a"), "order", Some("acme:1"), "id", "x");
        assert_eq!(
            decode(key.as_str()),
            ("a".into(), "order".into(), "account:6:acme:1:id:x".into())
        );
    }
}
