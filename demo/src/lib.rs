//! Holds the `demo` example; see `examples/demo.rs`. Nothing to use from here.
