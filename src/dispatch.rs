//! Typed dispatch: one handler per kind of event, each taking its typed payload, instead of
//! a `match` over every kind in every handler.
//!
//! Register a handler for the kinds you handle; the rest are acknowledged and counted
//! (`aisoule_webhook_unregistered_events_total`), never failed, so that a new kind the
//! platform starts sending cannot make it retry and then disable your webhook. A known kind
//! whose `data` did not fit its typed shape goes to [`on_unrecognized`](Dispatcher::on_unrecognized),
//! and an event this version does not know to [`on_unknown`](Dispatcher::on_unknown).
//!
//! The same dispatcher is the handler everywhere, with the app state each place shares:
//!
//! | where | how | the state `S` comes from |
//! |---|---|---|
//! | axum, behind [`WebhookLayer`](crate::axum::WebhookLayer) | `post(dispatcher)` | the router's state (`Router::with_state`) |
//! | actix-web, behind [`WebhookMiddleware`](crate::actix::WebhookMiddleware) | `web::post().to(dispatcher)` | any extractor, typically `web::Data<T>` |
//! | the inbox's workers | `inbox.start(dispatcher.with_state(state))` | the value you give |
//!
//! ```
//! use std::sync::Arc;
//! use std::sync::atomic::{AtomicUsize, Ordering};
//! use aisoule_webhooks::dispatch::{Dispatcher, TypedEvent};
//! use aisoule_webhooks::event::{InboundMessage, MessageStatus};
//!
//! #[derive(Clone, Default)]
//! struct App {
//!     replies: Arc<AtomicUsize>,
//! }
//!
//! async fn on_message(message: TypedEvent<InboundMessage<'static>>, app: App) -> aisoule_webhooks::dispatch::HandlerResult {
//!     // The customer and the text, whichever dialect carried them.
//!     if let (Some(customer), Some(text)) = (message.customer(), message.text()) {
//!         println!("{customer} wrote {text:?}");
//!         app.replies.fetch_add(1, Ordering::Relaxed);
//!     }
//!     Ok(())
//! }
//!
//! let dispatcher: Dispatcher<App> = Dispatcher::new()
//!     .on_message(on_message)
//!     .on_status(|status: TypedEvent<MessageStatus<'static>>, _app: App| async move {
//!         println!("{} is {:?}", status.message_id, status.status);
//!         Ok(())
//!     });
//! # let _ = dispatcher;
//! ```

use std::fmt;
use std::future::Future;
use std::ops::Deref;
use std::pin::Pin;
use std::sync::Arc;

use crate::event::{
    CampaignCompleted, Contact, InboundMessage, MessageStatus, Payload, TransferCreated,
    UnknownEvent, Unrecognized,
};
use crate::inbox::{Job, JobHandler};
use crate::receiver::VerifiedEvent;

pub use crate::inbox::HandlerError;

/// What a dispatched handler answers: `Ok` commits the delivery's claim (or marks the inbox's
/// job done); an `Err` releases it, so the platform's retry (or the inbox's backoff) runs the
/// handler again. `?` turns any error into a [`HandlerError`], and the error is kept: logged by
/// the integrations, stored as the inbox job's `last_error`.
pub type HandlerResult = Result<(), HandlerError>;

type BoxFuture = Pin<Box<dyn Future<Output = HandlerResult> + Send>>;

/// One registered handler, its argument types erased.
type Route<P, S> = Arc<dyn Fn(TypedEvent<P>, S) -> BoxFuture + Send + Sync>;

/// A verified event with its typed payload, as a dispatched handler receives it.
///
/// Dereferences to the payload (`message.text()`, `status.message_id`); the whole event
/// (its kind, raw bytes, the secret label that matched) is [`event`](Self::event). It owns
/// its data, so a handler may hold it across `.await`s and move it into tasks.
#[derive(Debug, Clone)]
pub struct TypedEvent<P> {
    event: VerifiedEvent,
    payload: P,
    job: Option<Job>,
}

impl<P> TypedEvent<P> {
    /// The whole event.
    pub fn event(&self) -> &VerifiedEvent {
        &self.event
    }

    /// The typed payload.
    pub fn payload(&self) -> &P {
        &self.payload
    }

    /// The inbox's job (its attempt number and idempotency key) when the inbox's workers run
    /// the handler; `None` when it runs inside the request.
    pub fn job(&self) -> Option<&Job> {
        self.job.as_ref()
    }

    /// The payload, taken out.
    pub fn into_payload(self) -> P {
        self.payload
    }
}

impl<P> Deref for TypedEvent<P> {
    type Target = P;

    fn deref(&self) -> &P {
        &self.payload
    }
}

/// What [`Dispatcher::dispatch`] did with an event whose handler did not fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Dispatched {
    /// The handler registered for it ran and answered `Ok`.
    Handled,
    /// No handler is registered for it: acknowledged and counted.
    Unregistered,
}

/// Handlers by kind of event, sharing the app state `S` (default: none).
///
/// Cheap to clone: the handlers are shared. See the [module](self) for where it runs.
pub struct Dispatcher<S = ()> {
    routes: Arc<Routes<S>>,
}

#[derive(Clone)]
struct Routes<S> {
    message: Option<Route<InboundMessage<'static>, S>>,
    status: Option<Route<MessageStatus<'static>, S>>,
    contact: Option<Route<Contact<'static>, S>>,
    campaign: Option<Route<CampaignCompleted<'static>, S>>,
    transfer: Option<Route<TransferCreated<'static>, S>>,
    unrecognized: Option<Route<Unrecognized, S>>,
    unknown: Option<Route<UnknownEvent<'static>, S>>,
}

impl<S> Clone for Dispatcher<S> {
    fn clone(&self) -> Self {
        Self {
            routes: Arc::clone(&self.routes),
        }
    }
}

impl<S> fmt::Debug for Dispatcher<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let routes = &self.routes;
        let registered = [
            ("message", routes.message.is_some()),
            ("status", routes.status.is_some()),
            ("contact", routes.contact.is_some()),
            ("campaign", routes.campaign.is_some()),
            ("transfer", routes.transfer.is_some()),
            ("unrecognized", routes.unrecognized.is_some()),
            ("unknown", routes.unknown.is_some()),
        ];
        f.debug_list()
            .entries(
                registered
                    .iter()
                    .filter(|(_, on)| *on)
                    .map(|(name, _)| name),
            )
            .finish()
    }
}

impl<S> Default for Dispatcher<S>
where
    S: Clone + Send + Sync + 'static,
{
    fn default() -> Self {
        Self::new()
    }
}

/// Erases a handler's type into a [`Route`].
fn route<P, S, H, Fut>(handler: H) -> Option<Route<P, S>>
where
    H: Fn(TypedEvent<P>, S) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = HandlerResult> + Send + 'static,
{
    Some(Arc::new(move |event, state| {
        Box::pin(handler(event, state))
    }))
}

impl<S> Dispatcher<S>
where
    S: Clone + Send + Sync + 'static,
{
    /// A dispatcher with no handlers: every event is acknowledged and counted.
    pub fn new() -> Self {
        Self {
            routes: Arc::new(Routes {
                message: None,
                status: None,
                contact: None,
                campaign: None,
                transfer: None,
                unrecognized: None,
                unknown: None,
            }),
        }
    }

    /// The registered handlers, to add one. Copied first if this dispatcher has been cloned,
    /// so that a clone keeps the handlers it had.
    fn routes_mut(&mut self) -> &mut Routes<S> {
        Arc::make_mut(&mut self.routes)
    }

    /// Handles incoming messages (`message.incoming` / `message.received`). Each `on_…`
    /// replaces any handler registered for the same events before.
    pub fn on_message<H, Fut>(mut self, handler: H) -> Self
    where
        H: Fn(TypedEvent<InboundMessage<'static>>, S) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = HandlerResult> + Send + 'static,
    {
        self.routes_mut().message = route(handler);
        self
    }

    /// Handles the statuses of messages you sent (`message.sent`, `message.delivered`,
    /// `message.read`, `message.failed`; [`MessageStatus::status`] tells which).
    pub fn on_status<H, Fut>(mut self, handler: H) -> Self
    where
        H: Fn(TypedEvent<MessageStatus<'static>>, S) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = HandlerResult> + Send + 'static,
    {
        self.routes_mut().status = route(handler);
        self
    }

    /// Handles `contact.created` and `contact.updated` ([`TypedEvent::event`]'s kind tells
    /// which).
    pub fn on_contact<H, Fut>(mut self, handler: H) -> Self
    where
        H: Fn(TypedEvent<Contact<'static>>, S) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = HandlerResult> + Send + 'static,
    {
        self.routes_mut().contact = route(handler);
        self
    }

    /// Handles `campaign.completed`.
    pub fn on_campaign<H, Fut>(mut self, handler: H) -> Self
    where
        H: Fn(TypedEvent<CampaignCompleted<'static>>, S) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = HandlerResult> + Send + 'static,
    {
        self.routes_mut().campaign = route(handler);
        self
    }

    /// Handles `transfer.created`.
    pub fn on_transfer<H, Fut>(mut self, handler: H) -> Self
    where
        H: Fn(TypedEvent<TransferCreated<'static>>, S) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = HandlerResult> + Send + 'static,
    {
        self.routes_mut().transfer = route(handler);
        self
    }

    /// Handles known events whose `data` did not fit their typed shape, with the JSON path
    /// and the reason ([`Unrecognized::reason`]). Without it they are acknowledged and
    /// counted (and the parser has logged them at warn).
    pub fn on_unrecognized<H, Fut>(mut self, handler: H) -> Self
    where
        H: Fn(TypedEvent<Unrecognized>, S) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = HandlerResult> + Send + 'static,
    {
        self.routes_mut().unrecognized = route(handler);
        self
    }

    /// Handles events this version does not know, with their name as sent: the fallback
    /// for events the platform adds.
    pub fn on_unknown<H, Fut>(mut self, handler: H) -> Self
    where
        H: Fn(TypedEvent<UnknownEvent<'static>>, S) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = HandlerResult> + Send + 'static,
    {
        self.routes_mut().unknown = route(handler);
        self
    }

    /// Reads the event's typed payload and runs the handler registered for it with `state`.
    /// The integrations call it; call it yourself from a handler of your own, or in a test.
    ///
    /// # Errors
    ///
    /// The handler's own error, unchanged.
    pub async fn dispatch(
        &self,
        event: VerifiedEvent,
        state: S,
    ) -> Result<Dispatched, HandlerError> {
        self.dispatch_job(event, state, None).await
    }

    pub(crate) async fn dispatch_job(
        &self,
        event: VerifiedEvent,
        state: S,
        job: Option<Job>,
    ) -> Result<Dispatched, HandlerError> {
        let routes = &*self.routes;
        // Owned, so that the handler's future can outlive this call (a detached run).
        let payload = event.payload().into_owned();
        match payload {
            Payload::Message(p) => run(&routes.message, event, p, state, job, "typed").await,
            Payload::Status(p) => run(&routes.status, event, p, state, job, "typed").await,
            Payload::Contact(p) => run(&routes.contact, event, p, state, job, "typed").await,
            Payload::Campaign(p) => run(&routes.campaign, event, p, state, job, "typed").await,
            Payload::Transfer(p) => run(&routes.transfer, event, p, state, job, "typed").await,
            Payload::Unrecognized(p) => {
                run(&routes.unrecognized, event, p, state, job, "unrecognized").await
            }
            Payload::Unknown(p) => run(&routes.unknown, event, p, state, job, "unknown").await,
        }
    }

    /// The inbox's job handler: this dispatcher with `state`, for [`Inbox::start`](crate::inbox::Inbox::start).
    /// `Ok` marks a job done; an `Err` retries it with backoff.
    pub fn with_state(self, state: S) -> WithState<S> {
        WithState {
            dispatcher: self,
            state,
        }
    }
}

/// Runs `route` on the event, or counts it as unregistered.
async fn run<P, S>(
    route: &Option<Route<P, S>>,
    event: VerifiedEvent,
    payload: P,
    state: S,
    job: Option<Job>,
    shape: &'static str,
) -> Result<Dispatched, HandlerError> {
    let Some(handler) = route else {
        // Known kinds by name; unknown ones as one label, whatever names the platform sends.
        let kind = if shape == "unknown" {
            "unknown".to_owned()
        } else {
            event.kind().as_str().to_owned()
        };
        tracing::debug!(%kind, shape, "no handler is registered for this event; acknowledged");
        crate::receiver::telemetry::unregistered(kind, shape);
        return Ok(Dispatched::Unregistered);
    };
    handler(
        TypedEvent {
            event,
            payload,
            job,
        },
        state,
    )
    .await?;
    Ok(Dispatched::Handled)
}

/// A [`Dispatcher`] with the app state it gives its handlers: the inbox's
/// [`JobHandler`], from [`Dispatcher::with_state`].
#[derive(Debug, Clone)]
pub struct WithState<S> {
    dispatcher: Dispatcher<S>,
    state: S,
}

impl<S> JobHandler for WithState<S>
where
    S: Clone + Send + Sync + 'static,
{
    fn handle(&self, job: Job) -> Pin<Box<dyn Future<Output = HandlerResult> + Send>> {
        let dispatcher = self.dispatcher.clone();
        let state = self.state.clone();
        Box::pin(async move {
            let event = job.event().clone();
            dispatcher.dispatch_job(event, state, Some(job)).await?;
            Ok(())
        })
    }
}

/// A dispatcher without state is the inbox's job handler as it is.
impl JobHandler for Dispatcher<()> {
    fn handle(&self, job: Job) -> Pin<Box<dyn Future<Output = HandlerResult> + Send>> {
        self.clone().with_state(()).handle(job)
    }
}

/// The integrations' answer to a dispatched delivery: 200 when handled or unregistered, 500
/// when the handler failed, whose error is logged here (with its sources) and never sent.
#[cfg_attr(not(any(feature = "axum", feature = "actix-web")), allow(dead_code))]
pub(crate) fn answer(dispatched: Result<Dispatched, HandlerError>) -> crate::Answer {
    match dispatched {
        Ok(_) => crate::Answer::HANDLED,
        Err(error) => {
            let error = crate::error::chain(&*error);
            tracing::warn!(%error, "the event's handler failed; answered 500");
            crate::Answer::HANDLER_FAILED
        }
    }
}
