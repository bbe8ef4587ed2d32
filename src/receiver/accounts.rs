//! Many AISoule accounts on one receiver: each account's secrets come from a
//! [`SecretResolver`] you write (over a database, say), cached per account for a TTL.
//!
//! The account is the route's path parameter (`/webhooks/aisoule/{account}`), which the axum
//! layer and the actix-web middleware read; [`Receiver::admit_account`](super::Receiver::admit_account)
//! takes it directly.

use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;

use super::Rejection;
use crate::verify::Verifier;

/// Looks up an account's secrets, for a receiver that serves many accounts
/// ([`Receiver::for_accounts`](super::Receiver::for_accounts)).
///
/// The receiver calls it once per account and TTL, not per delivery: concurrent deliveries
/// for an account that is not cached share one call. Implement it with an `async fn`:
///
/// ```
/// use aisoule_webhooks::receiver::{ResolveError, SecretResolver};
/// use aisoule_webhooks::{Verifier, WebhookSecret};
///
/// struct FromEnvironment;
///
/// impl SecretResolver for FromEnvironment {
///     async fn resolve(&self, account: &str) -> Result<Option<Verifier>, ResolveError> {
///         let name = format!("AISOULE_SECRET_{}", account.to_uppercase());
///         match std::env::var(name) {
///             Ok(secret) => Ok(Some(Verifier::new(
///                 WebhookSecret::new(secret).map_err(ResolveError::lookup)?,
///             ))),
///             Err(std::env::VarError::NotPresent) => Ok(None),
///             Err(other) => Err(ResolveError::lookup(other)),
///         }
///     }
/// }
/// ```
pub trait SecretResolver: Send + Sync + 'static {
    /// The verifier holding `account`'s secrets (several during a rotation, as
    /// [`Verifier::and_secret`] adds them), or `None` when there is no such account.
    ///
    /// # Errors
    ///
    /// A [`ResolveError`] when the lookup itself failed (the database is down): the delivery
    /// is answered 503 with `Retry-After`, so the platform sends it again, and the failure is
    /// not cached.
    fn resolve(
        &self,
        account: &str,
    ) -> impl Future<Output = Result<Option<Verifier>, ResolveError>> + Send;
}

/// Why a [`SecretResolver`] could not say whether an account exists.
#[derive(Debug, Clone, Error)]
#[non_exhaustive]
pub enum ResolveError {
    /// The store holding the accounts' secrets failed.
    #[error("the account's secrets could not be looked up")]
    Lookup {
        /// The store's own error. Shared: concurrent deliveries waiting on one lookup all get
        /// it.
        #[source]
        source: Arc<dyn StdError + Send + Sync + 'static>,
    },
}

impl ResolveError {
    /// A failed lookup, keeping `source` as the cause.
    pub fn lookup(source: impl Into<Box<dyn StdError + Send + Sync + 'static>>) -> Self {
        Self::Lookup {
            source: Arc::from(source.into()),
        }
    }
}

type ResolveFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Option<Verifier>, ResolveError>> + Send + 'a>>;

/// [`SecretResolver`] made object-safe, so that the receiver can hold any of them.
trait DynResolver: Send + Sync + 'static {
    fn resolve_boxed<'a>(&'a self, account: &'a str) -> ResolveFuture<'a>;
}

impl<R: SecretResolver> DynResolver for R {
    fn resolve_boxed<'a>(&'a self, account: &'a str) -> ResolveFuture<'a> {
        Box::pin(self.resolve(account))
    }
}

/// Account names longer than this are unknown without asking the resolver: a path segment is
/// the sender's to choose, and a long one would only cost a lookup and a cache entry.
const MAX_ACCOUNT_LEN: usize = 128;

/// How many accounts' answers (including "no such account") are cached at most, so that a
/// sender trying made-up names cannot grow the cache without bound.
const CACHE_CAPACITY: u64 = 10_000;

/// The resolver and its per-account cache, as a built receiver holds them.
pub(crate) struct Accounts {
    resolver: Arc<dyn DynResolver>,
    /// Each account's answer, `None` for an unknown account, kept for the TTL. Negative
    /// answers are cached too, so repeated deliveries to a removed account do not reach the
    /// database each time.
    cache: moka::future::Cache<String, Option<Verifier>>,
    parameter: Arc<str>,
    ttl: Duration,
}

impl fmt::Debug for Accounts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Accounts")
            .field("parameter", &self.parameter)
            .field("ttl", &self.ttl)
            .field("cached", &self.cache.entry_count())
            .finish_non_exhaustive()
    }
}

impl Accounts {
    /// The verifier for `account`: from the cache, or from the resolver.
    ///
    /// # Errors
    ///
    /// [`Rejection::UnknownAccount`] when the resolver knows no such account (or the name is
    /// empty or too long); [`Rejection::Resolver`] when it failed.
    pub(crate) async fn verifier(&self, account: &str) -> Result<Verifier, Rejection> {
        if account.is_empty() || account.len() > MAX_ACCOUNT_LEN {
            return Err(Rejection::UnknownAccount);
        }
        let resolver = &self.resolver;
        // Lazy: boxed only when the cache misses, not on every delivery.
        let answer = self
            .cache
            .try_get_with_by_ref(account, async { resolver.resolve_boxed(account).await })
            .await
            .map_err(|error| Rejection::Resolver(ResolveError::clone(&error)))?;
        answer.ok_or(Rejection::UnknownAccount)
    }

    /// The name of the route's path parameter that carries the account.
    pub(crate) fn parameter(&self) -> &str {
        &self.parameter
    }
}

/// How a [`ReceiverBuilder`](super::ReceiverBuilder) for many accounts is configured.
pub(crate) struct AccountsConfig {
    resolver: Arc<dyn DynResolver>,
    pub(crate) parameter: Arc<str>,
    pub(crate) ttl: Duration,
}

impl fmt::Debug for AccountsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccountsConfig")
            .field("parameter", &self.parameter)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl AccountsConfig {
    /// One minute: a rotated or revoked secret is taken within a minute, and a busy account
    /// costs one lookup a minute.
    pub(crate) const DEFAULT_TTL: Duration = Duration::from_secs(60);

    pub(crate) fn new(resolver: impl SecretResolver) -> Self {
        Self {
            resolver: Arc::new(resolver),
            parameter: Arc::from("account"),
            ttl: Self::DEFAULT_TTL,
        }
    }

    pub(crate) fn build(self) -> Accounts {
        Accounts {
            resolver: self.resolver,
            cache: moka::future::Cache::builder()
                .max_capacity(CACHE_CAPACITY)
                .time_to_live(self.ttl)
                .build(),
            parameter: self.parameter,
            ttl: self.ttl,
        }
    }
}
