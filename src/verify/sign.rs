//! Signing, as the platform does it: the one place the crate takes a tag's bytes out of the MAC.
//!
//! It lives apart from the verifier so that the verifier cannot reach a [`Signature`]'s bytes
//! except through [`Signature::as_bytes`], which `clippy.toml` forbids in the library: a refactor
//! that compared a computed tag with `==` instead of `Mac::verify_slice` would fail CI's clippy
//! step.

use std::fmt;
use std::hash::{Hash, Hasher};

use hmac::Mac;
use subtle::ConstantTimeEq;

use super::{TAG_LEN, keyed_mac};
use crate::secret::WebhookSecret;

/// An HMAC-SHA256 signature of a body, as AISoule computes it.
///
/// Made by [`sign`]; gives the header value in both of the forms the platform uses.
///
/// # Security
///
/// Two signatures compare in constant time (`subtle`), so comparing a computed signature with
/// a received one does not leak how many leading bytes matched.
#[derive(Clone, Copy)]
pub struct Signature([u8; TAG_LEN]);

impl Signature {
    /// The 64 lowercase hex digits, as sent in `X-Webhook-Signature`.
    pub fn to_hex(&self) -> String {
        const_hex::encode(self.0)
    }

    /// `sha256=` followed by the 64 hex digits, as sent in `X-AISoule-Signature`.
    pub fn to_prefixed(&self) -> String {
        format!("sha256={}", self.to_hex())
    }

    /// The 32 raw tag bytes.
    pub fn as_bytes(&self) -> &[u8; TAG_LEN] {
        &self.0
    }
}

impl PartialEq for Signature {
    fn eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl Eq for Signature {}

impl Hash for Signature {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.hash(state);
    }
}

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Enough to tell two signatures apart in a test failure, not enough to replay one.
        write!(f, "Signature({}…)", &self.to_hex()[..8])
    }
}

/// Signs `body` the way AISoule does.
///
/// Use it in tests and in local tools that play the platform's part.
///
/// ```
/// use aisoule_webhooks::{sign, Verifier, WebhookSecret};
///
/// let secret = WebhookSecret::new("whsec_test")?;
/// let body = br#"{"event":"message.incoming","data":{"message_id":"wamid.1"}}"#;
/// let signature = sign(&secret, body);
/// assert_eq!(signature.to_prefixed(), format!("sha256={}", signature.to_hex()));
///
/// let verifier = Verifier::new(secret);
/// assert!(verifier.verify_value(signature.to_hex().as_bytes(), body).is_ok());
/// # Ok::<(), aisoule_webhooks::SecretError>(())
/// ```
pub fn sign(secret: &WebhookSecret, body: &[u8]) -> Signature {
    let mut mac = keyed_mac(secret);
    mac.update(body);
    #[expect(
        clippy::disallowed_methods,
        reason = "signing sends the tag's bytes as a header; it compares nothing"
    )]
    let tag = mac.finalize().into_bytes();
    Signature(tag.into())
}
