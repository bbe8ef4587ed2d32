//! Receive [AISoule](https://aisoule.com) WhatsApp webhooks safely: verify the signature, parse
//! either payload dialect into one typed model, and handle every event exactly once.
//!
//! # Quick start (axum)
//!
//! ```no_run
//! # #[cfg(feature = "axum")]
//! # mod quick_start {
//! use aisoule_webhooks::axum::WebhookLayer;
//! use aisoule_webhooks::{Receiver, VerifiedEvent, Verifier, WebhookSecret};
//! use axum::{Router, http::StatusCode, routing::post};
//!
//! async fn handle(event: VerifiedEvent) -> StatusCode {
//!     println!("{} {:?} {:?}", event.kind(), event.message_id(), event.text());
//!     StatusCode::OK // 200 commits the claim; anything but a 2xx lets the platform's retry through
//! }
//!
//! pub async fn serve() -> Result<(), Box<dyn std::error::Error>> {
//!     let secret = WebhookSecret::new(std::env::var("AISOULE_WEBHOOK_SECRET")?)?;
//!     let receiver = Receiver::new(Verifier::new(secret));
//!     // On the webhook route only, so other routes stay outside it.
//!     let app = Router::new().route("/webhook", post(handle).layer(WebhookLayer::new(receiver)));
//!     let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//!     axum::serve(listener, app).await?;
//!     Ok(())
//! }
//! # }
//! ```
//!
//! The same with actix-web is [`actix`]'s example; both answer the platform with one status map
//! (see the README): 401 for every signature failure, 405 with `Allow: POST` for any other
//! method, 400 for non-events and replays, 409 while another delivery of the event is in
//! flight, 413 over the body limit, 415 for an encoding other than gzip or deflate, 500 when the
//! handler panicked, 503 when the idempotency store (or, for many accounts, the secret
//! resolver) is down, 404 for an account the resolver does not know, 200 without calling your
//! handler for a duplicate. Both run your handler in the request, and move it to a task of its
//! own if the platform hangs up at its 5 s deadline, so it completes either way.
//!
//! # Without a framework
//!
//! ```
//! use aisoule_webhooks::{Event, Verifier, WebhookSecret, sign};
//! use http::HeaderMap;
//!
//! let secret = WebhookSecret::new("whsec_3f9a1c0e7b5d2468ace0")?;
//! let verifier = Verifier::new(secret.clone());
//!
//! // What the platform sends: the raw body and its HMAC-SHA256 in a header.
//! let body = br#"{"event":"message.received","timestamp":1780369298,"data":{"message_id":"msg_1","sender":"918856879188","type":"text","body":"Hi"}}"#;
//! let mut headers = HeaderMap::new();
//! headers.insert("x-aisoule-signature", sign(&secret, body).to_prefixed().parse()?);
//!
//! let verified = verifier.verify(&headers, body)?; // the raw bytes, before any parsing
//! let event = Event::parse(body)?;
//! assert_eq!(verified.secret_label(), "default");
//! assert_eq!(event.kind().as_str(), "message.incoming"); // one kind for both dialects
//! assert_eq!(event.sender().unwrap().e164(), Some("+918856879188"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Cargo features
//!
//! | feature | default | what it adds |
//! |---|---|---|
//! | *(none)* | yes | the verifier, the event model and the in-memory deduplicator, with no web framework |
//! | `axum` | no | [`axum::WebhookLayer`] (a tower layer) and the [`VerifiedEvent`] / [`axum::WebhookDelivery`] extractors |
//! | `actix-web` | no | [`actix::WebhookMiddleware`] and the [`VerifiedEvent`] / [`actix::WebhookDelivery`] extractors |
//! | `redis` | no | [`dedup::redis::RedisStore`], for receivers that run several replicas |
//! | `sqlite` | no | [`inbox::sqlite::SqliteStore`]: the durable [`inbox`] on an embedded SQLite file |
//! | `postgres` | no | [`inbox::postgres::PostgresStore`]: the durable inbox on PostgreSQL, for several replicas |
//! | `test-util` | no | [`test_util`]: signed sample deliveries and request builders for testing your handlers |
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(feature = "actix-web")]
#[cfg_attr(docsrs, doc(cfg(feature = "actix-web")))]
pub mod actix;
#[cfg(feature = "axum")]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
pub mod axum;
pub mod clock;
pub mod dedup;
pub mod dispatch;
pub mod error;
pub mod event;
pub mod inbox;
pub mod receiver;
pub mod secret;
#[cfg(feature = "test-util")]
#[cfg_attr(docsrs, doc(cfg(feature = "test-util")))]
pub mod test_util;
pub mod verify;

pub use dedup::{Claim, Deduplicator, MemoryStore};
pub use error::{
    ConfigError, DedupError, InboxError, ParseError, Rejection, SecretError, VerifyError,
};
pub use event::{Event, EventKind, Payload};
pub use receiver::{Admission, Answer, BodyLimit, OUTCOME_HEADER, Receiver, VerifiedEvent};
pub use secret::WebhookSecret;
pub use verify::{AISOULE_SIGNATURE, Signature, Verified, Verifier, WEBHOOK_SIGNATURE, sign};

// The README's code blocks compile and run as doctests.
#[cfg(all(
    doctest,
    feature = "axum",
    feature = "actix-web",
    feature = "test-util",
    feature = "sqlite"
))]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
