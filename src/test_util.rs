//! Signed sample deliveries, so you can test your handlers without computing HMACs by hand.
//! Requires the `test-util` feature (add it to your `[dev-dependencies]` entry).
//!
//! ```
//! use aisoule_webhooks::event::{Dialect, EventKind};
//! use aisoule_webhooks::test_util::{Delivery, SignatureHeader, test_verifier};
//!
//! let delivery = Delivery::sample(EventKind::MessageIncoming, Dialect::Developer)
//!     .message_id("msg_test_1")
//!     .set("/data/body", "Do you ship to Pune?")
//!     .header(SignatureHeader::AisouleSignature)
//!     .build();
//!
//! assert!(test_verifier().verify(&delivery.headers(), delivery.body()).is_ok());
//! let request = delivery.http_request("/webhook"); // for tower's `oneshot`
//! # let _ = request;
//! ```

pub mod inbox_suite;
pub mod simulator;
pub mod store_suite;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};
use serde_json::{Value, json};

use crate::dedup::{ClaimToken, DedupKey, IdempotencyStore, StoreClaim, StoreFuture};
use crate::error::DedupError;
use crate::event::{Dialect, EventKind, Timestamp};
use crate::secret::WebhookSecret;
use crate::verify::{AISOULE_SIGNATURE, Verifier, WEBHOOK_SIGNATURE, sign};

/// The secret every sample is signed with unless you choose another.
pub const TEST_SECRET: &str = "whsec_aisoule_webhooks_test_secret";

/// [`TEST_SECRET`] as a [`WebhookSecret`].
pub fn test_secret() -> WebhookSecret {
    WebhookSecret::new(TEST_SECRET).expect("the test secret is valid")
}

/// A verifier that accepts the samples, labelled `"test"`.
pub fn test_verifier() -> Verifier {
    Verifier::with_label("test", test_secret())
}

/// Which header carries the signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SignatureHeader {
    /// `X-Webhook-Signature`, as on the help pages.
    WebhookSignature,
    /// `X-AISoule-Signature`, as on the developer page.
    AisouleSignature,
}

impl SignatureHeader {
    /// The header name.
    pub fn name(self) -> HeaderName {
        match self {
            Self::WebhookSignature => WEBHOOK_SIGNATURE,
            Self::AisouleSignature => AISOULE_SIGNATURE,
        }
    }
}

/// How the digest is written in the header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SignatureForm {
    /// 64 hex digits.
    Hex,
    /// `sha256=` and 64 hex digits.
    Prefixed,
}

/// A signed delivery: the exact body bytes and the signature header the platform would send.
///
/// Sending the same `Delivery` twice is what the platform's redelivery does: same bytes, same
/// signature (see [`Delivery::redelivery`]).
#[derive(Debug, Clone)]
pub struct Delivery {
    body: Bytes,
    header: SignatureHeader,
    signature_value: String,
}

impl Delivery {
    /// A documented event in one dialect, stamped with the current time (where the platform
    /// sends a timestamp), to change and then [`build`](DeliveryBuilder::build).
    ///
    /// [`Dialect::Help`] uses the help pages' names and ISO-8601 timestamps, anything else the
    /// developer page's names and unix seconds. Message ids default to the docs' samples.
    pub fn sample(kind: EventKind, dialect: Dialect) -> DeliveryBuilder {
        let help = dialect == Dialect::Help;
        let data = sample_data(&kind, help);
        let name = match (&kind, help) {
            (EventKind::MessageIncoming, false) => "message.received".to_owned(),
            (kind, _) => kind.as_str().to_owned(),
        };
        let payload = json!({ "event": name, "data": data });
        // The help pages show no timestamp on contact, campaign and transfer events.
        let timestamped = !help || kind.as_str().starts_with("message.");
        let builder = DeliveryBuilder {
            payload,
            help,
            secret: test_secret(),
            header: if help {
                SignatureHeader::WebhookSignature
            } else {
                SignatureHeader::AisouleSignature
            },
            form: if help {
                SignatureForm::Hex
            } else {
                SignatureForm::Prefixed
            },
        };
        if timestamped {
            builder.timestamp_at(SystemTime::now())
        } else {
            builder
        }
    }

    /// Any JSON payload, signed with [`TEST_SECRET`] in `X-Webhook-Signature` by default.
    pub fn from_json(payload: Value) -> DeliveryBuilder {
        DeliveryBuilder {
            payload,
            help: true,
            secret: test_secret(),
            header: SignatureHeader::WebhookSignature,
            form: SignatureForm::Hex,
        }
    }

    /// Exact bytes (a verbatim docs payload, say), signed with [`TEST_SECRET`] in
    /// `X-Webhook-Signature`.
    pub fn from_body(body: impl Into<Bytes>) -> Self {
        Self::signed(
            body.into(),
            &test_secret(),
            SignatureHeader::WebhookSignature,
            SignatureForm::Hex,
        )
    }

    /// Bytes signed with `secret`, in `header` and `form`.
    pub fn signed(
        body: Bytes,
        secret: &WebhookSecret,
        header: SignatureHeader,
        form: SignatureForm,
    ) -> Self {
        let signature = sign(secret, &body);
        let signature_value = match form {
            SignatureForm::Hex => signature.to_hex(),
            SignatureForm::Prefixed => signature.to_prefixed(),
        };
        Self {
            body,
            header,
            signature_value,
        }
    }

    /// Every documented event in both dialects, through both headers, with and without the
    /// `sha256=` prefix, with message ids made unique so that none is a duplicate of another.
    pub fn every_sample() -> Vec<Self> {
        let kinds = [
            EventKind::MessageIncoming,
            EventKind::MessageSent,
            EventKind::MessageDelivered,
            EventKind::MessageRead,
            EventKind::MessageFailed,
            EventKind::ContactCreated,
            EventKind::ContactUpdated,
            EventKind::CampaignCompleted,
            EventKind::TransferCreated,
        ];
        let mut samples = Vec::new();
        for (i, kind) in kinds.iter().enumerate() {
            for dialect in [Dialect::Help, Dialect::Developer] {
                for header in [
                    SignatureHeader::WebhookSignature,
                    SignatureHeader::AisouleSignature,
                ] {
                    for form in [SignatureForm::Hex, SignatureForm::Prefixed] {
                        let unique = format!("sample-{i}-{dialect:?}-{header:?}-{form:?}");
                        let mut builder = Delivery::sample(kind.clone(), dialect)
                            .header(header)
                            .form(form);
                        builder = if kind.as_str().starts_with("message.") {
                            builder.message_id(unique)
                        } else {
                            builder.set("/data/sample", unique)
                        };
                        samples.push(builder.build());
                    }
                }
            }
        }
        samples
    }

    /// The same delivery again, byte for byte, as the platform's retry or duplicate send does.
    pub fn redelivery(&self) -> Self {
        self.clone()
    }

    /// The same bytes with a forged signature (signed with another secret).
    pub fn forged(&self) -> Self {
        let other = WebhookSecret::new("whsec_not_the_right_secret").expect("valid");
        Self::signed(self.body.clone(), &other, self.header, SignatureForm::Hex)
    }

    /// The same bytes with this exact signature header value (`sha256=MOCK_SIGNATURE`, say).
    pub fn with_signature_value(&self, value: impl Into<String>) -> Self {
        Self {
            signature_value: value.into(),
            ..self.clone()
        }
    }

    /// The body bytes.
    pub fn body(&self) -> &Bytes {
        &self.body
    }

    /// The signature header.
    pub fn header(&self) -> SignatureHeader {
        self.header
    }

    /// The signature header's value.
    pub fn signature_value(&self) -> &str {
        &self.signature_value
    }

    /// The headers the platform sends: the signature and `Content-Type: application/json`.
    pub fn headers(&self) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Ok(value) = HeaderValue::from_str(&self.signature_value) {
            headers.insert(self.header.name(), value);
        }
        headers
    }

    /// A `POST` of this delivery to `uri`, for driving an axum router or any tower service
    /// with `oneshot`.
    pub fn http_request(&self, uri: &str) -> http::Request<http_body_util::Full<Bytes>> {
        let mut request = http::Request::post(uri)
            .body(http_body_util::Full::new(self.body.clone()))
            .expect("a valid request");
        *request.headers_mut() = self.headers();
        // As any HTTP client sends a body of known length, the platform's included.
        request
            .headers_mut()
            .insert(http::header::CONTENT_LENGTH, self.body.len().into());
        request
    }

    /// An actix-web test request posting this delivery to `uri`.
    #[cfg(feature = "actix-web")]
    #[cfg_attr(docsrs, doc(cfg(feature = "actix-web")))]
    pub fn actix_request(&self, uri: &str) -> actix_web::test::TestRequest {
        let mut request = actix_web::test::TestRequest::post()
            .uri(uri)
            .insert_header(("content-type", "application/json"))
            .set_payload(self.body.clone());
        request =
            request.insert_header((self.header.name().as_str(), self.signature_value.as_str()));
        request
    }
}

/// Changes a sample before it is signed. Every change re-signs, since signing happens in
/// [`build`](DeliveryBuilder::build).
#[derive(Debug, Clone)]
#[must_use]
pub struct DeliveryBuilder {
    payload: Value,
    help: bool,
    secret: WebhookSecret,
    header: SignatureHeader,
    form: SignatureForm,
}

impl DeliveryBuilder {
    /// Sets the value at a JSON pointer (`/data/message_id`), creating objects on the way.
    pub fn set(mut self, pointer: &str, value: impl Into<Value>) -> Self {
        let mut target = &mut self.payload;
        for token in pointer.split('/').skip(1) {
            let token = token.replace("~1", "/").replace("~0", "~");
            if !target.is_object() {
                *target = Value::Object(serde_json::Map::new());
            }
            target = target
                .as_object_mut()
                .expect("just made an object")
                .entry(token)
                .or_insert(Value::Null);
        }
        *target = value.into();
        self
    }

    /// Removes the value at a JSON pointer, if present.
    pub fn remove(mut self, pointer: &str) -> Self {
        if let Some((parent, key)) = pointer.rsplit_once('/')
            && let Some(Value::Object(map)) = self.payload.pointer_mut(parent)
        {
            map.remove(key);
        }
        self
    }

    /// Sets `data.message_id`.
    pub fn message_id(self, id: impl Into<String>) -> Self {
        self.set("/data/message_id", id.into())
    }

    /// Sets `timestamp` to `at`, in the dialect's form (RFC 3339 or unix seconds).
    pub fn timestamp_at(self, at: SystemTime) -> Self {
        let at = Timestamp::from_system_time(at).expect("a representable time");
        if self.help {
            let whole = Timestamp::from_unix_seconds(at.unix_seconds()).expect("in range");
            self.set("/timestamp", whole.to_rfc3339())
        } else {
            self.set("/timestamp", at.unix_seconds())
        }
    }

    /// Signs with `secret` instead of [`TEST_SECRET`].
    pub fn secret(mut self, secret: WebhookSecret) -> Self {
        self.secret = secret;
        self
    }

    /// Sends the signature in `header`.
    pub fn header(mut self, header: SignatureHeader) -> Self {
        self.header = header;
        self
    }

    /// Writes the signature in `form`.
    pub fn form(mut self, form: SignatureForm) -> Self {
        self.form = form;
        self
    }

    /// The payload as it stands.
    pub fn payload(&self) -> &Value {
        &self.payload
    }

    /// Serializes the payload (compact) and signs it.
    pub fn build(self) -> Delivery {
        let body = serde_json::to_vec(&self.payload).expect("a JSON value serializes");
        Delivery::signed(body.into(), &self.secret, self.header, self.form)
    }
}

fn sample_data(kind: &EventKind, help: bool) -> Value {
    let (customer, business) = if help {
        ("+919876543210", "+15550199999")
    } else {
        ("918856879188", "15550199999")
    };
    let message_id = if help {
        "wamid.HBgLOTE5ODc2"
    } else {
        "msg_90a82b7194689c1"
    };
    match kind {
        EventKind::MessageIncoming if help => json!({
            "message_id": message_id, "from": customer, "contact_id": "uuid",
            "contact_name": "John Doe", "type": "text", "text": "Hello, I need help",
            "whatsapp_account_id": "uuid",
        }),
        EventKind::MessageIncoming => json!({
            "message_id": message_id, "waba_number": business, "sender": customer,
            "recipient": business, "type": "text", "body": "Hi there! I need pricing info.",
        }),
        status if status.is_message_status() => {
            let status_name = status.as_str().trim_start_matches("message.");
            let mut data = if help {
                json!({ "message_id": message_id, "to": customer, "type": "text", "status": status_name })
            } else {
                json!({ "message_id": message_id, "waba_number": business, "sender": business,
                        "recipient": customer, "status": status_name })
            };
            if *status == EventKind::MessageFailed {
                data["error_code"] = json!(131047);
                data["error_message"] = json!("Re-engagement message");
            }
            data
        }
        EventKind::ContactCreated | EventKind::ContactUpdated => json!({
            "id": "uuid", "phone_number": customer, "name": "John Doe", "source": "whatsapp_webhook",
        }),
        EventKind::CampaignCompleted => json!({
            "id": "uuid", "name": "May Promotion", "total": 1000, "sent": 985,
            "delivered": 970, "read": 650, "failed": 15,
        }),
        EventKind::TransferCreated => json!({
            "contact_id": "uuid", "from_agent_id": null, "to_agent_id": "uuid",
            "to_team_id": "uuid", "notes": "Customer asking about refund",
        }),
        _ => json!({ "id": "uuid" }),
    }
}

/// Wraps an [`IdempotencyStore`] so that tests on tokio's
/// paused clock stay exact with a store that does real I/O, such as Redis.
///
/// Paused, tokio's clock jumps to the next timer whenever every task is waiting, and a task
/// waiting for Redis's answer counts as waiting: the platform's 5 s timeout, or a retry an
/// hour away, could then pass during one round trip. The wrapped store lives on a runtime of its
/// own, on real time (so its own timeouts and reconnection backoff work, even while its server
/// is down), and each operation is awaited from tokio's blocking pool, which keeps the test's
/// paused clock still until it returns. The inbox's equivalent is
/// [`InboxBuilder::hold_paused_clock`](crate::inbox::InboxBuilder::hold_paused_clock).
///
/// The server's own time (Redis's expiry of leases and TTLs) is not tokio's and does not pause.
///
/// ```no_run
/// # #[cfg(feature = "redis")]
/// # async fn run() {
/// use aisoule_webhooks::dedup::{Deduplicator, redis::RedisStore};
/// use aisoule_webhooks::test_util::PausedClockStore;
///
/// let store = PausedClockStore::build(|| async {
///     RedisStore::connect("redis://127.0.0.1:6379/").await.expect("Redis is up")
/// });
/// let deduplicator = Deduplicator::new(store);
/// # let _ = deduplicator; }
/// ```
pub struct PausedClockStore<S> {
    store: Arc<S>,
    /// Kept to be shut down without blocking when the wrapper is dropped (inside a test's
    /// runtime, where blocking on a shutdown would panic).
    runtime: Option<tokio::runtime::Runtime>,
    handle: tokio::runtime::Handle,
}

impl<S> std::fmt::Debug for PausedClockStore<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PausedClockStore").finish_non_exhaustive()
    }
}

impl<S> Drop for PausedClockStore<S> {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl<S: IdempotencyStore> PausedClockStore<S> {
    /// Builds the store with `make` on a runtime of its own (one thread, on real time), so
    /// that the tasks it spawns (a Redis connection's driver) run there.
    ///
    /// # Panics
    ///
    /// When the runtime cannot be built, or `make` panics.
    pub fn build<F, Fut>(make: F) -> Self
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = S>,
    {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a runtime for the wrapped store");
        let handle = runtime.handle().clone();
        let store = std::thread::scope(|scope| {
            scope
                .spawn(|| handle.block_on(make()))
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        });
        Self {
            store: Arc::new(store),
            runtime: Some(runtime),
            handle,
        }
    }

    /// Runs one operation of the store on its own runtime, awaited from the blocking pool so
    /// that the test's paused clock holds still.
    fn hold<T: Send + 'static, F>(
        &self,
        op: impl FnOnce(Arc<S>) -> F + Send + 'static,
    ) -> StoreFuture<'static, T>
    where
        F: Future<Output = Result<T, DedupError>> + Send + 'static,
    {
        let store = self.store.clone();
        let handle = self.handle.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || handle.block_on(op(store)))
                .await
                .unwrap_or_else(|join| std::panic::resume_unwind(join.into_panic()))
        })
    }
}

impl<S: IdempotencyStore> IdempotencyStore for PausedClockStore<S> {
    fn claim<'a>(
        &'a self,
        key: &'a DedupKey,
        token: ClaimToken,
        lease: Duration,
    ) -> StoreFuture<'a, StoreClaim> {
        let key = key.clone();
        self.hold(move |store| async move { store.claim(&key, token, lease).await })
    }

    fn renew<'a>(
        &'a self,
        key: &'a DedupKey,
        token: ClaimToken,
        lease: Duration,
    ) -> StoreFuture<'a, ()> {
        let key = key.clone();
        self.hold(move |store| async move { store.renew(&key, token, lease).await })
    }

    fn commit<'a>(
        &'a self,
        key: &'a DedupKey,
        token: ClaimToken,
        ttl: Duration,
    ) -> StoreFuture<'a, ()> {
        let key = key.clone();
        self.hold(move |store| async move { store.commit(&key, token, ttl).await })
    }

    fn release<'a>(&'a self, key: &'a DedupKey, token: ClaimToken) -> StoreFuture<'a, ()> {
        let key = key.clone();
        self.hold(move |store| async move { store.release(&key, token).await })
    }

    fn release_detached(&self, key: DedupKey, token: ClaimToken) {
        // On the store's runtime, where a store that spawns the release finds its connection.
        let _entered = self.handle.enter();
        self.store.release_detached(key, token);
    }
}
