//! What happens to a delivery after it is admitted: the handler runs to completion, its
//! claim is kept alive meanwhile, and the claim is settled by the handler's own outcome.

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::{Pin, pin};
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;

use super::VerifiedEvent;
use crate::dedup::ClaimGuard;
use crate::error::DedupError;

/// A delivery that passed every check and holds its claim, ready for your handler.
///
/// The integrations [`run`](Admitted::run) it to completion, so the handler finishes even if
/// the platform hangs up at its 5 s deadline: they run it in the request, and move it to a
/// task of its own only if the request is dropped first.
/// Without an integration, call `run` yourself, or take it apart with
/// [`into_parts`](Admitted::into_parts) and settle the claim.
#[derive(Debug)]
#[must_use = "an admitted delivery must be run or settled; dropping it releases its claim"]
pub struct Admitted {
    settlement: Settlement,
    slow_handler_warning: Duration,
}

impl Admitted {
    pub(super) fn new(
        event: VerifiedEvent,
        claim: ClaimGuard,
        slow_handler_warning: Duration,
    ) -> Self {
        Self {
            settlement: Settlement {
                claim: Some(claim),
                event,
            },
            slow_handler_warning,
        }
    }

    /// The event.
    pub fn event(&self) -> &VerifiedEvent {
        &self.settlement.event
    }

    /// The body exactly as verified (after any `Content-Encoding` was decoded).
    pub fn body(&self) -> &Bytes {
        self.settlement.event.raw()
    }

    /// The event and the settlement of its claim, for handlers that settle it themselves.
    pub fn into_parts(self) -> (VerifiedEvent, Settlement) {
        (self.settlement.event.clone(), self.settlement)
    }

    /// Runs `handler` to completion and settles the claim by its answer: `status_of` gives
    /// the HTTP status the handler answered, or `None` for an error. A 2xx commits; anything
    /// else releases the claim, so the platform's retry runs the handler again.
    ///
    /// While the handler runs, the claim's lease is renewed every half lease, on any store, so
    /// that a redelivery arriving during a slow handler gets 409 and never starts it twice. A
    /// handler still running after the receiver's
    /// [`slow_handler_warning`](super::ReceiverBuilder::slow_handler_warning) is logged at warn.
    ///
    /// Poll the returned future to its end even if the request is dropped (the integrations
    /// run it in the request and move it to a task then): dropped midway instead, the handler
    /// stops and the claim is released.
    ///
    /// # Panics
    ///
    /// When the handler panics: the claim is released and the panic logged at warn first,
    /// then the panic resumes.
    pub async fn run<F: Future>(
        self,
        handler: F,
        status_of: impl FnOnce(&F::Output) -> Option<http::StatusCode>,
    ) -> F::Output {
        match self.run_owned_to_outcome(handler, status_of).await {
            Ok((output, _outcome)) => output,
            Err(panicked) => std::panic::resume_unwind(panicked.payload),
        }
    }

    /// [`run_to_outcome`](Self::run_to_outcome) for a handler not pinned yet, in a future
    /// that owns it: what [`run`](Self::run) returns.
    pub(crate) async fn run_owned_to_outcome<F: Future>(
        self,
        handler: F,
        status_of: impl FnOnce(&F::Output) -> Option<http::StatusCode>,
    ) -> Result<(F::Output, &'static str), HandlerPanicked> {
        let handler = pin!(handler);
        self.run_to_outcome(handler, status_of).await
    }

    /// [`run`](Self::run), also giving the delivery's outcome (`handled` or `released`),
    /// which the integrations send in the [`OUTCOME_HEADER`](crate::OUTCOME_HEADER): worked
    /// out once, here, rather than again from the response. A panic in the handler is caught
    /// here, so that its delivery is settled and logged like any other failure, in one line
    /// that names the panic.
    ///
    /// The handler is pinned by the caller, and this is not an `async fn`: the future keeps
    /// the handler and the delivery where they already are. A future stores every value it
    /// captures for its whole life, so a handler pinned inside, or `self` taken apart, would
    /// be stored twice, in a future the integrations allocate on every delivery.
    #[expect(
        clippy::manual_async_fn,
        reason = "an async fn rebinds its `mut` parameters: 1 040 B against 864 B"
    )]
    pub(crate) fn run_to_outcome<F: Future>(
        mut self,
        mut handler: Pin<&mut F>,
        status_of: impl FnOnce(&F::Output) -> Option<http::StatusCode>,
    ) -> impl Future<Output = Result<(F::Output, &'static str), HandlerPanicked>> {
        async move {
            let started = std::time::Instant::now();
            // Unwind safety: after a panic the handler is dropped, never polled again.
            let mut caught = pin!(std::future::poll_fn(move |cx| {
                match catch_unwind(AssertUnwindSafe(|| handler.as_mut().poll(cx))) {
                    Ok(Poll::Ready(output)) => Poll::Ready(Ok(output)),
                    Ok(Poll::Pending) => Poll::Pending,
                    Err(payload) => Poll::Ready(Err(payload)),
                }
            }));
            // Many handlers finish at their first poll: they pay for no timer. The others get
            // the watchdog, boxed so that the quick ones do not carry its size either.
            let caught = match std::future::poll_fn(|cx| Poll::Ready(caught.as_mut().poll(cx)))
                .await
            {
                Poll::Ready(output) => output,
                Poll::Pending => {
                    let watchdog = Box::pin(self.settlement.keep_alive(self.slow_handler_warning));
                    tokio::select! {
                        biased;
                        output = &mut caught => output,
                        () = watchdog => caught.await,
                    }
                }
            };
            let (status, handled) = match &caught {
                Ok(output) => {
                    let status = status_of(output);
                    (status, status.is_some_and(|status| status.is_success()))
                }
                Err(_) => (None, false),
            };
            let outcome = outcome_of(handled);
            tracing::Span::current().record("outcome", outcome);
            super::telemetry::handler_ran(handled, started.elapsed());
            if let Some(status) = status.filter(|s| s.is_success() && *s != http::StatusCode::OK) {
                tracing::debug!(
                    %status,
                    "the handler answered a 2xx other than 200: the claim is committed, but \
                     the platform counts only 200 as success and will deliver the event again \
                     (answered as a duplicate)"
                );
            }
            // One settlement for every ending: each await point would take its own room in
            // the future.
            self.settlement.settle_in_place(handled).await;
            // The delivery's one INFO line: the span's fields are there only when its level
            // is on.
            let event = &self.settlement.event;
            let (kind, message_id) = (event.kind().as_str(), event.message_id());
            let output = match caught {
                Ok(output) => output,
                Err(payload) => {
                    let panic = panic_message(&*payload);
                    tracing::warn!(
                        kind,
                        message_id,
                        panic,
                        outcome,
                        "the handler panicked; claim released, so the platform's retry runs it \
                         again"
                    );
                    return Err(HandlerPanicked { payload });
                }
            };
            match status {
                Some(status) if handled => {
                    tracing::info!(kind, message_id, %status, outcome, "delivery handled; claim committed");
                }
                Some(status) => tracing::info!(
                    kind,
                    message_id,
                    %status,
                    outcome,
                    "the handler did not answer 2xx; claim released, so the platform's retry runs it again"
                ),
                None => tracing::info!(
                    kind,
                    message_id,
                    outcome,
                    "the handler failed; claim released, so the platform's retry runs it again"
                ),
            }
            Ok((output, outcome))
        }
    }
}

/// A panic's message, when it has one (`panic!` with a string or a format).
fn panic_message(payload: &(dyn Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("a panic without a message")
}

/// The outcome of a delivery whose claim is settled: `handled` when committed, `released`
/// otherwise (the handler answered anything but a 2xx, failed, panicked or was dropped).
fn outcome_of(handled: bool) -> &'static str {
    if handled { "handled" } else { "released" }
}

/// The one pending decision about an admitted delivery's claim: commit it (handled) or
/// release it (let the platform's retry run the handler again).
///
/// Dropping it unsettled releases the claim and logs a warning that names the event, so a
/// handler that forgot to commit is visible instead of silently handling every redelivery.
#[must_use = "call commit() once the event is handled; dropping it releases the claim"]
pub struct Settlement {
    claim: Option<ClaimGuard>,
    event: VerifiedEvent,
}

impl fmt::Debug for Settlement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Settlement")
            .field("claim", &self.claim)
            .field("kind", &self.event.kind().as_str())
            .field("message_id", &self.event.message_id())
            .finish()
    }
}

impl Settlement {
    /// Marks the event handled, so redeliveries are answered as duplicates. A store failure
    /// is logged, not returned: the event has been handled either way.
    pub async fn commit(self) {
        self.settle(true).await;
    }

    /// Frees the claim now, so that the platform's retry runs the handler again. A store
    /// failure is logged; the lease expiry frees the key then.
    pub async fn release(self) {
        self.settle(false).await;
    }

    /// Renews the lease until dropped, and warns once when the handler is slow.
    async fn keep_alive(&self, slow_handler_warning: Duration) {
        let Some(claim) = &self.claim else {
            return std::future::pending().await;
        };
        let every = (claim.lease() / 2).max(Duration::from_millis(1));
        let started = tokio::time::Instant::now();
        let warn_at = started + slow_handler_warning;
        let mut warned = false;
        let mut renew_at = started + every;
        loop {
            let wake = if warned {
                renew_at
            } else {
                renew_at.min(warn_at)
            };
            tokio::time::sleep_until(wake).await;
            let now = tokio::time::Instant::now();
            if !warned && now >= warn_at {
                warned = true;
                tracing::warn!(
                    kind = self.event.kind().as_str(),
                    message_id = self.event.message_id(),
                    running_secs = (now - started).as_secs(),
                    "the webhook handler is still running; its claim is being renewed"
                );
            }
            if now >= renew_at {
                if let Err(error) = claim.renew().await {
                    log_settle_error(&error, claim.key(), "renew");
                }
                renew_at = tokio::time::Instant::now() + every;
            }
        }
    }

    /// The one way a claim is settled, by the crate and by your handlers alike.
    pub(crate) async fn settle(mut self, handled: bool) {
        self.settle_in_place(handled).await;
    }

    /// Settles the claim and counts the delivery's outcome, keeping the event for the caller's
    /// log line; dropping `self` afterwards does nothing more.
    async fn settle_in_place(&mut self, handled: bool) {
        let Some(mut claim) = self.claim.take() else {
            return;
        };
        super::telemetry::delivery_for(outcome_of(handled), self.event.account());
        if let Err(error) = claim.settle(handled).await {
            log_settle_error(
                &error,
                claim.key(),
                if handled { "commit" } else { "release" },
            );
        }
    }
}

fn log_settle_error(error: &DedupError, key: &crate::dedup::DedupKey, step: &'static str) {
    match error {
        DedupError::LeaseLost { .. } => {
            tracing::warn!(%error, %key, step, "the event may have been handled twice");
        }
        _ => {
            tracing::warn!(%error, %key, step, "could not settle the claim; its lease will expire");
        }
    }
}

impl Drop for Settlement {
    fn drop(&mut self) {
        if let Some(claim) = &self.claim {
            // Every path that loses a delivery unsettled ends here (a panic in any
            // integration, a cancelled request, a forgotten commit): counted once, here.
            super::telemetry::delivery_for(outcome_of(false), self.event.account());
            tracing::warn!(
                kind = self.event.kind().as_str(),
                message_id = self.event.message_id(),
                key = %claim.key(),
                "a webhook delivery was dropped before it was settled (a panic, a cancelled \
                 request, or a handler that never called commit); its claim is released so the \
                 platform's retry handles it"
            );
        }
        // Dropping `claim` releases it.
    }
}

/// A delivery's whole lifecycle, polled in place inside the request. Dropped once the delivery
/// is admitted (the sender hung up, or a timeout layer gave up), it moves to a task of its own,
/// so an admitted handler always runs to completion. Dropped before that, it is cancelled like
/// any request: its claim, if taken, is released, and a connection stalled mid-body is not
/// kept open by a task still reading it.
///
/// Spawning every delivery would keep the guarantee too, at the price of a task, a scheduler
/// round trip and, on a multi-thread runtime, a cross-thread wake-up per delivery; most
/// handlers finish well within the request. Type-erased and boxed once, for the whole
/// lifecycle: a box per phase cost a second allocation, and glibc's malloc consolidates its
/// free lists on each allocation this large. A panic anywhere in it is caught here, as a
/// task's would be, so the integration still answers 500 and the claim is released.
///
/// `R` is the boxed lifecycle, which says where a dropped one goes on ([`Detach`]): a task on
/// the tokio runtime for axum ([`SendRun`]), a task on the worker's local set for actix-web,
/// whose services are not `Send` ([`LocalRun`]).
#[cfg_attr(not(any(feature = "axum", feature = "actix-web")), allow(dead_code))]
pub(crate) struct RunToCompletion<R: Detach> {
    /// `None` once finished. Instrumented by its caller, so a detached run keeps its span.
    run: Option<R>,
    /// Whether the lifecycle said, with [`mark_admitted`], that its delivery is admitted.
    admitted: bool,
}

/// A boxed lifecycle that can go on without its request: the axum layer's.
#[cfg_attr(not(feature = "axum"), allow(dead_code))]
pub(crate) type SendRun<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// A boxed lifecycle of actix-web's, which runs on one worker thread.
#[cfg_attr(not(feature = "actix-web"), allow(dead_code))]
pub(crate) type LocalRun<T> = Pin<Box<dyn Future<Output = T>>>;

/// Where an admitted lifecycle goes on once its request is dropped.
pub(crate) trait Detach: Future + Unpin {
    /// Runs `self` to its end in a task of its own, or, with nowhere to run it, drops it,
    /// which releases its claim so that the platform's retry runs the handler again.
    fn detach(self);
}

impl<T: Send + 'static> Detach for SendRun<T> {
    fn detach(self) {
        // Outside a runtime (one shutting down) there is nowhere to finish it.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let _ = self.await;
            });
        }
    }
}

#[cfg(feature = "actix-web")]
impl<T: 'static> Detach for LocalRun<T> {
    fn detach(self) {
        // Dropped by actix-web's dispatcher, on the worker whose local set polled it. Outside
        // an actix-web system (a bare tokio runtime has no local set, and spawning there
        // panics), and during a panic's unwinding (where a second panic aborts), the run is
        // dropped instead.
        if actix_web::rt::System::try_current().is_some() && !std::thread::panicking() {
            actix_web::rt::spawn(async move {
                let _ = self.await;
            });
        }
    }
}

thread_local! {
    /// Set by [`mark_admitted`] while a [`RunToCompletion`] polls its lifecycle. A flag the
    /// lifecycle could share with its wrapper would have to be allocated on every delivery,
    /// since the lifecycle's own memory is a type-erased box; a poll runs on one thread.
    static ADMITTED_IN_THIS_POLL: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Tells the [`RunToCompletion`] polling the calling lifecycle that its delivery is admitted:
/// from now on, dropping the request moves the lifecycle into a task instead of cancelling it.
/// Call it from inside the lifecycle's `poll`, synchronously.
#[cfg_attr(not(any(feature = "axum", feature = "actix-web")), allow(dead_code))]
pub(crate) fn mark_admitted() {
    ADMITTED_IN_THIS_POLL.set(true);
}

/// The handler panicked; its claim was released. The payload is kept so that
/// [`Admitted::run`] can resume the panic.
pub(crate) struct HandlerPanicked {
    payload: Box<dyn Any + Send>,
}

impl<R: Detach> RunToCompletion<R> {
    /// `run`, boxed by the caller as the [`Detach`] type that says where it goes on.
    #[cfg_attr(not(any(feature = "axum", feature = "actix-web")), allow(dead_code))]
    pub(crate) fn new(run: R) -> Self {
        Self {
            run: Some(run),
            admitted: false,
        }
    }
}

impl<R: Detach> Future for RunToCompletion<R> {
    type Output = Result<R::Output, HandlerPanicked>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let Some(run) = self.run.as_mut() else {
            panic!("RunToCompletion polled after it finished");
        };
        // A lifecycle polled inside another's keeps its own mark: the outer one's is restored.
        let outer = ADMITTED_IN_THIS_POLL.replace(false);
        // Unwind safety: after a panic the run is dropped, never polled again.
        let polled = catch_unwind(AssertUnwindSafe(|| Pin::new(&mut *run).poll(cx)));
        if ADMITTED_IN_THIS_POLL.replace(outer) {
            self.admitted = true;
        }
        match polled {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(output)) => {
                self.run = None;
                Poll::Ready(Ok(output))
            }
            Err(payload) => {
                self.run = None;
                Poll::Ready(Err(HandlerPanicked { payload }))
            }
        }
    }
}

impl<R: Detach> Drop for RunToCompletion<R> {
    fn drop(&mut self) {
        let Some(run) = self.run.take() else {
            return;
        };
        if !self.admitted {
            // Cancelled, like any request; dropping `run` releases a claim it took.
            return;
        }
        run.detach();
    }
}
