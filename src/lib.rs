//! Receive [AISoule](https://aisoule.com) WhatsApp webhooks safely: verify the signature, parse
//! either payload dialect into one typed model, and handle every event exactly once.
//!
//! # Verifying a delivery
//!
//! ```
//! use aisoule_webhooks::{sign, Verifier, WebhookSecret};
//! use http::HeaderMap;
//!
//! let secret = WebhookSecret::new("whsec_3f9a1c0e7b5d2468ace0")?;
//! let verifier = Verifier::new(secret.clone());
//!
//! // What the platform sends: the raw body and its HMAC-SHA256 in a header.
//! let body = br#"{"event":"message.incoming","data":{"message_id":"wamid.1","from":"+919876543210","type":"text","text":"Hi"}}"#;
//! let mut headers = HeaderMap::new();
//! headers.insert("x-webhook-signature", sign(&secret, body).to_hex().parse()?);
//!
//! let verified = verifier.verify(&headers, body)?;
//! assert_eq!(verified.secret_label(), "default");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Cargo features
//!
//! | feature | default | what it adds |
//! |---|---|---|
//! | *(none)* | yes | the verifier, the event model and the in-memory deduplicator, with no web framework |
//! | `redis` | no | [`dedup::redis::RedisStore`], for receivers that run several replicas |
//! | `axum` | no | [`axum::WebhookLayer`] (a tower layer) and the [`VerifiedEvent`] / [`axum::WebhookDelivery`] extractors |
//! | `actix-web` | no | [`actix::WebhookMiddleware`] and the [`VerifiedEvent`] / [`actix::WebhookDelivery`] extractors |
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
pub mod error;
pub mod event;
pub mod receiver;
pub mod secret;
#[cfg(feature = "test-util")]
#[cfg_attr(docsrs, doc(cfg(feature = "test-util")))]
pub mod test_util;
pub mod verify;

pub use dedup::{Claim, Deduplicator, MemoryStore};
pub use error::{ConfigError, DedupError, ParseError, Rejection, SecretError, VerifyError};
pub use event::{Event, EventKind, Payload};
pub use receiver::{Receiver, VerifiedEvent};
pub use secret::WebhookSecret;
pub use verify::{
    AISOULE_SIGNATURE, BodyLimit, Signature, Verified, Verifier, WEBHOOK_SIGNATURE, sign,
};
