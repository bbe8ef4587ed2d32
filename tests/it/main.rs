//! The crate's one integration test binary; each module covers one concern.

mod event;
mod support;
mod verify;
