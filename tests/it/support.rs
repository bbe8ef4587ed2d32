//! Fixture loading shared by the test modules.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use aisoule_webhooks::DedupError;
use aisoule_webhooks::dedup::{
    ClaimToken, DedupKey, IdempotencyStore, MemoryStore, StoreClaim, StoreFuture,
};

/// Whether this run is CI's: any non-empty `CI` but `false` or `0`. `.ci/run` sets
/// `CI=true` itself, so that a missing server can never pass there as a skip.
pub(crate) fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// Says that a test cannot run for want of `what`: a failure under CI, a loud skip elsewhere.
#[cfg_attr(not(any(feature = "redis", feature = "postgres")), allow(dead_code))]
pub(crate) fn skip_or_fail(what: &str) {
    if under_ci() {
        panic!("{what}; under CI this is a failure, not a skip");
    }
    // Written to the stderr handle, not with eprintln!, so libtest's capture cannot hide it.
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "SKIPPED: {what}");
}

/// The absolute path of a file under `tests/fixtures/`.
pub(crate) fn fixture_path(relative: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(relative)
}

/// The bytes of a file under `tests/fixtures/`.
pub(crate) fn fixture(relative: &str) -> Vec<u8> {
    let path = fixture_path(relative);
    std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// Every `.json` file directly under a fixtures folder, sorted, as `(file name, bytes)`.
pub(crate) fn fixtures_in(folder: &str) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<_> = std::fs::read_dir(fixture_path(folder))
        .expect("fixture folder exists")
        .map(|entry| entry.expect("readable entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
        .map(|path| {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&path).unwrap())
        })
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no fixtures in {folder}");
    files
}

/// A store that is always down.
#[cfg_attr(not(feature = "test-util"), allow(dead_code))]
#[derive(Debug)]
pub(crate) struct DownStore;

impl IdempotencyStore for DownStore {
    fn claim<'a>(
        &'a self,
        _: &'a DedupKey,
        _: ClaimToken,
        _: Duration,
    ) -> StoreFuture<'a, StoreClaim> {
        Box::pin(async { Err(DedupError::unavailable("down")) })
    }
    fn renew<'a>(&'a self, _: &'a DedupKey, _: ClaimToken, _: Duration) -> StoreFuture<'a, ()> {
        Box::pin(async { Err(DedupError::unavailable("down")) })
    }
    fn commit<'a>(&'a self, _: &'a DedupKey, _: ClaimToken, _: Duration) -> StoreFuture<'a, ()> {
        Box::pin(async { Err(DedupError::unavailable("down")) })
    }
    fn release<'a>(&'a self, _: &'a DedupKey, _: ClaimToken) -> StoreFuture<'a, ()> {
        Box::pin(async { Err(DedupError::unavailable("down")) })
    }
    fn release_detached(&self, _: DedupKey, _: ClaimToken) {}
}

/// A store that panics when asked for a claim: a panic in the lifecycle outside the handler.
#[derive(Debug)]
pub(crate) struct PanickingStore;

impl IdempotencyStore for PanickingStore {
    fn claim<'a>(
        &'a self,
        _: &'a DedupKey,
        _: ClaimToken,
        _: Duration,
    ) -> StoreFuture<'a, StoreClaim> {
        panic!("the store's client panicked")
    }
    fn renew<'a>(&'a self, _: &'a DedupKey, _: ClaimToken, _: Duration) -> StoreFuture<'a, ()> {
        unreachable!("nothing is claimed")
    }
    fn commit<'a>(&'a self, _: &'a DedupKey, _: ClaimToken, _: Duration) -> StoreFuture<'a, ()> {
        unreachable!("nothing is claimed")
    }
    fn release<'a>(&'a self, _: &'a DedupKey, _: ClaimToken) -> StoreFuture<'a, ()> {
        unreachable!("nothing is claimed")
    }
    // The claim's guard releases what the claim did when its future is dropped mid-claim.
    fn release_detached(&self, _: DedupKey, _: ClaimToken) {}
}

/// A [`MemoryStore`] that counts the renewals and releases it is sent.
#[cfg_attr(not(feature = "test-util"), allow(dead_code))]
#[derive(Debug, Default)]
pub(crate) struct CountingStore {
    inner: MemoryStore,
    renewals: AtomicUsize,
    releases: AtomicUsize,
}

#[cfg_attr(not(feature = "test-util"), allow(dead_code))]
impl CountingStore {
    pub(crate) fn renewals(&self) -> usize {
        self.renewals.load(Ordering::SeqCst)
    }

    pub(crate) fn releases(&self) -> usize {
        self.releases.load(Ordering::SeqCst)
    }
}

impl IdempotencyStore for CountingStore {
    fn claim<'a>(
        &'a self,
        key: &'a DedupKey,
        token: ClaimToken,
        lease: Duration,
    ) -> StoreFuture<'a, StoreClaim> {
        self.inner.claim(key, token, lease)
    }
    fn renew<'a>(
        &'a self,
        key: &'a DedupKey,
        token: ClaimToken,
        lease: Duration,
    ) -> StoreFuture<'a, ()> {
        self.renewals.fetch_add(1, Ordering::SeqCst);
        self.inner.renew(key, token, lease)
    }
    fn commit<'a>(
        &'a self,
        key: &'a DedupKey,
        token: ClaimToken,
        ttl: Duration,
    ) -> StoreFuture<'a, ()> {
        self.inner.commit(key, token, ttl)
    }
    fn release<'a>(&'a self, key: &'a DedupKey, token: ClaimToken) -> StoreFuture<'a, ()> {
        self.releases.fetch_add(1, Ordering::SeqCst);
        self.inner.release(key, token)
    }
    fn release_detached(&self, key: DedupKey, token: ClaimToken) {
        self.releases.fetch_add(1, Ordering::SeqCst);
        self.inner.release_detached(key, token);
    }
}

/// Everything logged through `tracing` while [`CapturedLogs::install`]'s guard lives, at
/// DEBUG and above, as plain text.
#[cfg_attr(not(feature = "test-util"), allow(dead_code))]
#[derive(Clone, Default)]
pub(crate) struct CapturedLogs(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

#[cfg_attr(not(feature = "test-util"), allow(dead_code))]
impl CapturedLogs {
    pub(crate) fn install(&self) -> tracing::subscriber::DefaultGuard {
        let guard = tracing::dispatcher::set_default(&self.dispatch());
        // A callsite first hit by another test's thread while no subscriber wanted it may have
        // cached "never"; recompute, so this test's subscriber sees every event it enables.
        tracing::callsite::rebuild_interest_cache();
        guard
    }

    /// A subscriber writing here, to set on the futures whose logs are wanted (such as a test
    /// server's requests, which run on other threads than the test's).
    pub(crate) fn dispatch(&self) -> tracing::Dispatch {
        let writer = self.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        tracing::Dispatch::new(subscriber)
    }

    pub(crate) fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }

    pub(crate) fn clear(&self) {
        self.0.lock().unwrap().clear();
    }
}

impl std::io::Write for CapturedLogs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The real-time bound on the tests that run on a paused clock. Their clock is paused, so they
/// wait for nothing; but a task that spins (wakes at once, forever, such as a broken watchdog)
/// keeps the paused runtime busy, so its clock never moves and the test never ends. A bound on
/// the paused clock would not do either: the clock jumps to the next timer whenever the runtime
/// idles, which it does while it waits on real I/O (a SQLite file), so such a bound can fire
/// before the awaited work has run. Only a real-time one, well under `cargo mutants`' 120 s test
/// timeout, turns a hang into a failure.
#[cfg_attr(
    not(all(
        feature = "test-util",
        any(feature = "sqlite", all(feature = "axum", feature = "actix-web"))
    )),
    allow(dead_code)
)]
const PAUSED_TEST_BOUND: Duration = Duration::from_secs(30);

/// Runs `test` on a current-thread runtime whose clock starts paused, on a thread of its own,
/// and fails if it has not ended within [`PAUSED_TEST_BOUND`] of real time.
#[cfg_attr(
    not(all(
        feature = "test-util",
        any(feature = "sqlite", all(feature = "axum", feature = "actix-web"))
    )),
    allow(dead_code)
)]
pub(crate) fn on_a_paused_clock_within_real_time<F>(test: impl FnOnce() -> F + Send + 'static)
where
    F: Future<Output = ()>,
{
    within_real_time(paused_clock(), PAUSED_TEST_BOUND, test);
}

/// The runtime `#[tokio::test(start_paused = true)]` would build: one thread, its clock paused.
#[cfg_attr(
    not(all(
        feature = "test-util",
        any(feature = "sqlite", all(feature = "axum", feature = "actix-web"))
    )),
    allow(dead_code)
)]
pub(crate) fn paused_clock() -> tokio::runtime::Builder {
    let mut runtime = tokio::runtime::Builder::new_current_thread();
    runtime.start_paused(true);
    runtime
}

/// The runtime `#[tokio::test(flavor = "multi_thread", worker_threads = 2)]` would build.
#[cfg_attr(
    not(all(feature = "test-util", any(feature = "sqlite", feature = "postgres"))),
    allow(dead_code)
)]
pub(crate) fn two_workers() -> tokio::runtime::Builder {
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime.worker_threads(2);
    runtime
}

/// Runs `test` on a runtime from `runtime`, on a thread of its own, and fails if it has not
/// ended within `bound` of real time: what `#[tokio::test]` does, with a bound that holds
/// whatever the code under test does. A tokio timeout cannot stop a task that never yields (a
/// store's batcher that spins under a mutant), and dropping a runtime, as `#[tokio::test]` does
/// even after a failure, waits for such a task's worker thread for ever; on a paused clock a
/// task that wakes itself at once keeps the clock from moving, so no timer fires. So the bound
/// comes from this thread, and the runtime is shut down without waiting for its threads,
/// whatever the outcome: a blocking store operation still running does not hold the test
/// either. Keep `bound` under `cargo mutants`' 120 s test timeout, so that a mutant that makes
/// a test hang is caught as a failure.
#[cfg_attr(
    not(all(
        feature = "test-util",
        any(
            feature = "sqlite",
            feature = "postgres",
            all(feature = "axum", feature = "actix-web")
        )
    )),
    allow(dead_code)
)]
pub(crate) fn within_real_time<F>(
    mut runtime: tokio::runtime::Builder,
    bound: Duration,
    test: impl FnOnce() -> F + Send + 'static,
) where
    F: Future<Output = ()>,
{
    let (ended, outcome) = std::sync::mpsc::channel();
    let (abandon, abandoned) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        let runtime = match runtime.enable_all().build() {
            Ok(runtime) => runtime,
            Err(error) => {
                let panic: Box<dyn std::any::Any + Send> = Box::new(format!("no runtime: {error}"));
                let _ = ended.send(Err(panic));
                return;
            }
        };
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            runtime.block_on(async {
                tokio::select! {
                    () = test() => {}
                    _ = abandoned => {}
                }
            })
        }));
        runtime.shutdown_background();
        let _ = ended.send(result);
    });
    match outcome.recv_timeout(bound) {
        Ok(Ok(())) => {}
        // The test panicked, or its runtime could not be built: fail with that message.
        Ok(Err(panic)) => std::panic::resume_unwind(panic),
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
            unreachable!("the test's thread sends its outcome before it ends")
        }
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
            // Stops the runtime's tasks if its thread still polls them; a task that never
            // yields keeps its worker thread until the process ends.
            let _ = abandon.send(());
            panic!(
                "the test did not end within {bound:?} of real time: it waits for something \
                 that never comes, or a task that never yields (or, on a paused clock, wakes \
                 itself at once) keeps its runtime busy"
            )
        }
    }
}

/// The bound turns a test that waits for ever into a failure naming the bound.
#[cfg(all(feature = "test-util", feature = "sqlite"))]
#[test]
#[should_panic(expected = "did not end within 1s of real time")]
fn a_test_that_waits_for_ever_fails_at_its_real_time_bound() {
    within_real_time(two_workers(), Duration::from_secs(1), || {
        std::future::pending::<()>()
    });
}

/// A task that wakes itself at once keeps a paused clock from moving, so no tokio timer can end
/// the test; the real-time bound does, and the task stops with its runtime.
#[cfg(all(feature = "test-util", feature = "sqlite"))]
#[test]
#[should_panic(expected = "did not end within 1s of real time")]
fn a_busy_paused_runtime_fails_at_its_real_time_bound() {
    within_real_time(paused_clock(), Duration::from_secs(1), || async {
        tokio::spawn(async {
            loop {
                tokio::task::yield_now().await;
            }
        });
        tokio::time::sleep(Duration::from_secs(3600)).await;
    });
}
