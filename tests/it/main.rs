//! The crate's one integration test binary; each module covers one concern.

// Tests compute expected tags and flip their bits; `clippy.toml`'s ban guards the library.
#![allow(clippy::disallowed_methods)]

#[cfg(all(feature = "actix-web", feature = "axum", feature = "test-util"))]
mod accounts;
#[cfg(all(feature = "actix-web", feature = "axum", feature = "test-util"))]
mod actix;
#[cfg(all(feature = "axum", feature = "test-util"))]
mod adversarial;
#[cfg(all(feature = "axum", feature = "test-util"))]
mod axum;
#[cfg(feature = "test-util")]
mod dedup;
#[cfg(feature = "redis")]
mod dedup_mutants;
#[cfg(feature = "test-util")]
mod diagnose;
#[cfg(all(
    feature = "actix-web",
    feature = "axum",
    feature = "sqlite",
    feature = "test-util"
))]
mod dispatch;
#[cfg(all(feature = "axum", feature = "test-util"))]
mod e2e;
mod event;
#[cfg(all(feature = "actix-web", feature = "axum", feature = "test-util"))]
mod example_metrics;
#[cfg(all(feature = "sqlite", feature = "axum", feature = "test-util"))]
mod inbox;
#[cfg(all(feature = "sqlite", feature = "axum", feature = "test-util"))]
mod inbox_crash;
#[cfg(all(feature = "sqlite", feature = "test-util"))]
mod inbox_metrics;
#[cfg(all(feature = "sqlite", feature = "axum", feature = "test-util"))]
mod inbox_mutants;
#[cfg(all(feature = "postgres", feature = "test-util"))]
mod inbox_postgres;
#[cfg(all(feature = "sqlite", feature = "test-util"))]
mod inbox_sqlite;
#[cfg(all(feature = "actix-web", feature = "axum", feature = "test-util"))]
mod internet;
#[cfg(all(feature = "actix-web", feature = "axum", feature = "test-util"))]
mod lifecycle;
#[cfg(all(feature = "sqlite", feature = "axum", feature = "test-util"))]
mod loss_matrix;
#[cfg(feature = "test-util")]
mod metrics;
#[cfg(all(feature = "axum", feature = "test-util"))]
mod outcome;
#[cfg(all(feature = "postgres", feature = "test-util"))]
mod postgres_server;
#[cfg(all(feature = "axum", feature = "test-util"))]
mod promises;
#[cfg(all(feature = "actix-web", feature = "axum", feature = "test-util"))]
mod proxies;
#[cfg(all(feature = "redis", feature = "axum", feature = "test-util"))]
mod readiness;
#[cfg(all(feature = "postgres", feature = "test-util"))]
mod readiness_postgres;
#[cfg(all(feature = "actix-web", feature = "axum", feature = "test-util"))]
mod receiver_mutants;
#[cfg(feature = "redis")]
mod redis_server;
#[cfg(all(feature = "axum", feature = "test-util"))]
mod stale;
mod support;
mod verify;
