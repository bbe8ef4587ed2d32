//! Claim and commit on the in-memory store (capacity 100 000), with half the keys repeated, on
//! one thread and on two. Reported per operation: two threads should be no slower per operation.

use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use aisoule_webhooks::dedup::{Claim, DedupKey, Deduplicator, MemoryStore};
use criterion::{Criterion, criterion_group, criterion_main};

/// The in-memory store's futures are ready at once; poll them without an executor.
fn ready<F: Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(output) => output,
        Poll::Pending => unreachable!("the memory store never waits"),
    }
}

/// `n` keys in which every second one repeats the key before it.
fn keys(n: usize, salt: usize) -> Vec<DedupKey> {
    (0..n)
        .map(|i| DedupKey::from_string(format!(":message.incoming:id:wamid.{salt}.{}", i / 2)))
        .collect()
}

fn claim_and_commit(dedup: &Deduplicator, keys: &[DedupKey]) {
    for key in keys {
        if let Claim::Fresh(guard) = ready(dedup.claim_key(key.clone())).unwrap() {
            ready(guard.commit()).unwrap();
        }
    }
}

fn dedup(c: &mut Criterion) {
    let mut group = c.benchmark_group("dedup_claim_commit");
    for threads in [1usize, 2] {
        group.bench_function(
            format!("{threads}_thread{}", if threads > 1 { "s" } else { "" }),
            |b| {
                b.iter_custom(|ops| {
                    let dedup = Deduplicator::new(MemoryStore::new());
                    let per_thread = (ops as usize).div_ceil(threads);
                    let batches: Vec<Arc<Vec<DedupKey>>> = (0..threads)
                        .map(|t| Arc::new(keys(per_thread, t)))
                        .collect();
                    let start = Instant::now();
                    std::thread::scope(|scope| {
                        for batch in &batches {
                            let dedup = dedup.clone();
                            scope.spawn(move || claim_and_commit(&dedup, batch));
                        }
                    });
                    // Wall time per operation across all threads.
                    let elapsed = start.elapsed();
                    Duration::from_secs_f64(
                        elapsed.as_secs_f64() * ops as f64 / (per_thread * threads) as f64,
                    )
                })
            },
        );
    }
    group.finish();
}

criterion_group!(benches, dedup);
criterion_main!(benches);
