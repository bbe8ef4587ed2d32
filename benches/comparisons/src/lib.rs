//! Holds the peer benchmarks; see `benches/verify.rs`. Nothing to use from here.
