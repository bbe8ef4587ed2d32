//! Signature verification: HMAC-SHA256 over the raw body, compared in constant time.
//!
//! AISoule signs the exact bytes it sends with HMAC-SHA256, keyed with the UTF-8 bytes of the
//! dashboard secret, and writes the 64 hex digits into `X-Webhook-Signature` (help pages) or
//! `X-AISoule-Signature` (developer page), with or without a `sha256=` prefix.
//!
//! Accepted header values, after trimming surrounding spaces and tabs: 64 hex digits in either
//! case, optionally preceded by `sha256=` (the prefix itself is matched case-insensitively).
//! Everything else is rejected with a [`VerifyError`] that says why.

use std::fmt;
use std::sync::Arc;

use hmac::{Hmac, KeyInit, Mac};
use http::{HeaderMap, HeaderName};
use sha2::Sha256;

use crate::error::VerifyError;
use crate::secret::WebhookSecret;

mod diagnose;
mod sign;

pub use diagnose::{JsonForm, SignatureDiagnosis};
pub use sign::{Signature, sign};

type HmacSha256 = Hmac<Sha256>;

/// `X-Webhook-Signature`: the header the help pages document (plain hex).
pub const WEBHOOK_SIGNATURE: HeaderName = HeaderName::from_static(SIGNATURE_HEADER_NAMES[0]);
/// `X-AISoule-Signature`: the header the developer page documents (`sha256=<hex>`).
pub const AISOULE_SIGNATURE: HeaderName = HeaderName::from_static(SIGNATURE_HEADER_NAMES[1]);

/// Both signature headers' names, in the order they are read, for code that takes them as
/// text (the frameworks' header maps are of different `http` versions).
pub(crate) const SIGNATURE_HEADER_NAMES: [&str; 2] = ["x-webhook-signature", "x-aisoule-signature"];

/// Length of an HMAC-SHA256 tag in bytes.
const TAG_LEN: usize = 32;
const PREFIX: &[u8] = b"sha256=";
const DOCS_PLACEHOLDER: &[u8] = b"MOCK_SIGNATURE";

fn keyed_mac(secret: &WebhookSecret) -> HmacSha256 {
    // HMAC accepts keys of any length (long keys are hashed first), so this cannot fail.
    <HmacSha256 as KeyInit>::new_from_slice(secret.expose_bytes())
        .expect("HMAC-SHA256 accepts keys of any length")
}

/// Whether `digest` is `body`'s tag under `keyed`. The MAC library compares them itself, in
/// constant time (`subtle`, with optimisation barriers), so this crate writes no comparison of
/// secret-derived bytes that a refactor could turn into an early-exit `==`.
fn tag_matches(keyed: &HmacSha256, body: &[u8], digest: &[u8; TAG_LEN]) -> bool {
    let mut mac = keyed.clone();
    mac.update(body);
    mac.verify_slice(digest).is_ok()
}

/// A successful verification: which secret matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    label: Arc<str>,
}

impl Verified {
    /// The label of the secret that matched. During a rotation, once the old label stops
    /// appearing, the old secret can be removed.
    pub fn secret_label(&self) -> &str {
        &self.label
    }

    /// The label, shared rather than copied.
    pub(crate) fn shared_label(&self) -> Arc<str> {
        Arc::clone(&self.label)
    }
}

#[derive(Clone)]
struct KeyedSecret {
    label: Arc<str>,
    /// The HMAC state after absorbing the key's inner and outer pad blocks, so that a
    /// verification only hashes the body and never redoes the key schedule.
    mac: HmacSha256,
}

/// Verifies AISoule signatures against one or more secrets.
///
/// Build it once at start-up and share it (it is `Send + Sync`, and cheap to clone).
///
/// ```
/// use aisoule_webhooks::{sign, Verifier, WebhookSecret};
/// use http::HeaderMap;
///
/// let current = WebhookSecret::new("whsec_new")?;
/// let previous = WebhookSecret::new("whsec_old")?;
/// let verifier = Verifier::with_label("2026-11", current)
///     .and_secret("2026-05", previous.clone());
///
/// let body = br#"{"event":"message.read","data":{"message_id":"m1"}}"#;
/// let mut headers = HeaderMap::new();
/// headers.insert("x-aisoule-signature", sign(&previous, body).to_prefixed().parse()?);
///
/// let verified = verifier.verify(&headers, body)?;
/// assert_eq!(verified.secret_label(), "2026-05"); // the old secret is still in use
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Security
///
/// * The tag is recomputed over the raw body bytes and compared over all 32 bytes in constant
///   time (the MAC library's `verify_slice`); header strings are never compared, and shortened tags are never accepted.
/// * `Debug` shows the labels only.
#[derive(Clone)]
pub struct Verifier {
    secrets: Arc<[KeyedSecret]>,
    /// Never accepted: matched only to diagnose a failure ([`Verifier::and_retired_secret`]).
    retired: Arc<[KeyedSecret]>,
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let labels: Vec<&str> = self.secrets.iter().map(|s| &*s.label).collect();
        let retired: Vec<&str> = self.retired.iter().map(|s| &*s.label).collect();
        f.debug_struct("Verifier")
            .field("secret_labels", &labels)
            .field("retired_labels", &retired)
            .finish_non_exhaustive()
    }
}

impl Verifier {
    /// A verifier for one secret, labelled `"default"`.
    pub fn new(secret: WebhookSecret) -> Self {
        Self::with_label("default", secret)
    }

    /// A verifier for one secret with the given label.
    pub fn with_label(label: impl Into<String>, secret: WebhookSecret) -> Self {
        Self {
            secrets: Arc::from([KeyedSecret::new(label.into(), &secret)]),
            retired: Arc::from([]),
        }
    }

    /// Also accepts `secret`, reported as `label` when it matches. Secrets are tried in the
    /// order they were added, so add the current one first.
    pub fn and_secret(self, label: impl Into<String>, secret: WebhookSecret) -> Self {
        let mut secrets: Vec<KeyedSecret> = self.secrets.iter().cloned().collect();
        secrets.push(KeyedSecret::new(label.into(), &secret));
        Self {
            secrets: secrets.into(),
            ..self
        }
    }

    /// The labels of the configured secrets, in the order they are tried.
    pub fn secret_labels(&self) -> impl Iterator<Item = &str> {
        self.secrets.iter().map(|s| &*s.label)
    }

    /// Verifies a delivery from its headers and raw body.
    ///
    /// Reads every `X-Webhook-Signature` and `X-AISoule-Signature` value (names are
    /// case-insensitive). Several values are fine when they carry the same digest.
    ///
    /// # Errors
    ///
    /// * [`VerifyError::Missing`] when neither header is present.
    /// * A malformed-value variant (see [`VerifyError::is_malformed`]) when any value is
    ///   unreadable.
    /// * [`VerifyError::Ambiguous`] when the values carry different digests.
    /// * [`VerifyError::Mismatch`] when the digest matches no configured secret.
    ///
    /// # Security
    ///
    /// Pass the body exactly as received, before any JSON parsing or re-encoding: a
    /// re-serialised body has different bytes and fails, as it should.
    pub fn verify(&self, headers: &HeaderMap, body: &[u8]) -> Result<Verified, VerifyError> {
        let values = headers
            .get_all(WEBHOOK_SIGNATURE)
            .into_iter()
            .chain(headers.get_all(AISOULE_SIGNATURE))
            .map(|value| value.as_bytes());
        self.verify_values(values, body)
    }

    /// Verifies a body against the raw values of every signature header a request carried.
    ///
    /// This is the form framework integrations use when their header map is not
    /// `http::HeaderMap`; [`Verifier::verify`] has the same rules.
    ///
    /// # Errors
    ///
    /// As for [`Verifier::verify`].
    ///
    /// # Security
    ///
    /// As for [`Verifier::verify`].
    pub fn verify_values<'a>(
        &self,
        values: impl IntoIterator<Item = &'a [u8]>,
        body: &[u8],
    ) -> Result<Verified, VerifyError> {
        // Digests are public inputs from the request, so comparing them with each other leaks
        // nothing about the secret. `others` stays empty, and unallocated, unless they disagree.
        let mut first = None;
        let mut others: Vec<[u8; TAG_LEN]> = Vec::new();
        for value in values {
            let digest = parse_signature(value)?;
            match first {
                None => first = Some(digest),
                Some(seen) if seen == digest => {}
                Some(_) if others.contains(&digest) => {}
                Some(_) => others.push(digest),
            }
        }
        match first {
            None => Err(VerifyError::Missing),
            Some(digest) if others.is_empty() => self.verify_digest(&digest, body),
            Some(_) => Err(VerifyError::Ambiguous {
                count: 1 + others.len(),
            }),
        }
    }

    /// Verifies a body against one signature header value.
    ///
    /// # Errors
    ///
    /// A malformed-value variant when the value is unreadable, or [`VerifyError::Mismatch`].
    ///
    /// # Security
    ///
    /// As for [`Verifier::verify`].
    pub fn verify_value(&self, value: &[u8], body: &[u8]) -> Result<Verified, VerifyError> {
        let digest = parse_signature(value)?;
        self.verify_digest(&digest, body)
    }

    fn verify_digest(&self, digest: &[u8; TAG_LEN], body: &[u8]) -> Result<Verified, VerifyError> {
        for secret in self.secrets.iter() {
            if tag_matches(&secret.mac, body, digest) {
                return Ok(Verified {
                    label: Arc::clone(&secret.label),
                });
            }
        }
        Err(VerifyError::Mismatch)
    }
}

impl KeyedSecret {
    fn new(label: String, secret: &WebhookSecret) -> Self {
        Self {
            label: label.into(),
            mac: keyed_mac(secret),
        }
    }
}

/// Reads one header value into a 32-byte digest, or says precisely what is wrong with it.
fn parse_signature(value: &[u8]) -> Result<[u8; TAG_LEN], VerifyError> {
    // The forms the platform sends, decoded without any scanning beyond the decode itself.
    let exact = match value.len() {
        64 => Some(value),
        71 if value.starts_with(PREFIX) => Some(&value[PREFIX.len()..]),
        _ => None,
    };
    if let Some(digits) = exact
        && let Some(bytes) = decode_exactly_64(digits)
    {
        return Ok(bytes);
    }
    parse_signature_slowly(value)
}

/// 64 hex digits to 32 bytes, or `None`. The length check comes first because the decoder
/// would otherwise accept a `0x` prefix.
fn decode_exactly_64(digits: &[u8]) -> Option<[u8; TAG_LEN]> {
    let mut bytes = [0u8; TAG_LEN];
    (digits.len() == 2 * TAG_LEN && const_hex::decode_to_slice(digits, &mut bytes).is_ok())
        .then_some(bytes)
}

/// Every other form: trimming, a case-insensitive prefix, and an error that names the problem.
fn parse_signature_slowly(value: &[u8]) -> Result<[u8; TAG_LEN], VerifyError> {
    let value = value.trim_ascii();
    if value.is_empty() {
        return Err(VerifyError::Empty);
    }
    let digest = match value.iter().position(|&b| b == b'=') {
        Some(eq) => {
            let (prefix, rest) = (&value[..eq], &value[eq + 1..]);
            if !prefix.eq_ignore_ascii_case(&PREFIX[..PREFIX.len() - 1]) {
                return Err(unsupported_or_not_hex(prefix));
            }
            if rest.is_empty() {
                return Err(VerifyError::PrefixOnly);
            }
            rest
        }
        None => value,
    };
    if digest == DOCS_PLACEHOLDER {
        return Err(VerifyError::Placeholder);
    }
    if let Some(position) = digest.iter().position(|b| !b.is_ascii_hexdigit()) {
        return Err(VerifyError::NotHex { position });
    }
    decode_exactly_64(digest).ok_or(VerifyError::WrongLength {
        digits: digest.len(),
    })
}

/// `sha1=…` names an algorithm; `zz!=…` is just garbage.
fn unsupported_or_not_hex(prefix: &[u8]) -> VerifyError {
    let looks_like_algorithm = !prefix.is_empty()
        && prefix.len() <= 16
        && prefix
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_');
    if looks_like_algorithm {
        let algorithm = String::from_utf8_lossy(prefix).to_ascii_lowercase();
        VerifyError::UnsupportedAlgorithm { algorithm }
    } else {
        let position = prefix
            .iter()
            .position(|b| !b.is_ascii_hexdigit())
            .unwrap_or(prefix.len());
        VerifyError::NotHex { position }
    }
}
