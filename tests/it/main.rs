//! The crate's one integration test binary; each module covers one concern.

mod support;
mod verify;
