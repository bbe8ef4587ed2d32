//! The crate's one integration test binary; each module covers one concern.

mod dedup;
mod event;
#[cfg(feature = "redis")]
mod redis_server;
mod support;
mod verify;
