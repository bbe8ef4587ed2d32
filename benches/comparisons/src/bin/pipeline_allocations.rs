//! Heap allocations per delivery, counted by dhat: the layer's against bare axum's, through
//! the same pipeline as `pipeline_instructions` (see `benches/instructions.sh`).
//!
//! ```text
//! pipeline_allocations N    # N fresh deliveries each way; prints allocations per delivery
//! ```
//!
//! The requests are built before counting starts, so only what serving them allocates counts.

use aisoule_webhooks_comparisons::{pipeline_app, pipeline_request};
use tower::ServiceExt;

#[global_allocator]
static ALLOCATOR: dhat::Alloc = dhat::Alloc;

/// Allocations per delivery when `layered` (or not) serves `count` fresh deliveries.
fn allocations_per_delivery(layered: bool, count: u64) -> f64 {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a runtime");
    let app = pipeline_app(layered);
    let requests: Vec<_> = (0..count).map(pipeline_request).collect();
    // Warm up: the first delivery fills one-time caches (the runtime's, tracing's callsites).
    let warm_up = pipeline_request(u64::MAX);
    runtime
        .block_on(app.clone().oneshot(warm_up))
        .expect("infallible");
    let before = dhat::HeapStats::get().total_blocks;
    for request in requests {
        let response = runtime
            .block_on(app.clone().oneshot(request))
            .expect("infallible");
        assert_eq!(response.status(), http::StatusCode::OK);
    }
    let after = dhat::HeapStats::get().total_blocks;
    (after - before) as f64 / count as f64
}

fn main() {
    let count = std::env::args()
        .nth(1)
        .map(|n| n.parse::<u64>().expect("N is a count"))
        .unwrap_or(1000);
    let _profiler = dhat::Profiler::builder().testing().build();
    let bare = allocations_per_delivery(false, count);
    let layer = allocations_per_delivery(true, count);
    println!("allocations per delivery: bare {bare:.1}, layer {layer:.1}");
    println!(
        "the layer adds: {:.1} allocations per delivery",
        layer - bare
    );
}
