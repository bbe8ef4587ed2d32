//! The webhook secret shown in the AISoule dashboard.

use std::fmt;

use zeroize::{ZeroizeOnDrop, Zeroizing};

use crate::error::SecretError;

/// A webhook signing secret, as copied from *Settings → Webhooks* in the AISoule dashboard.
///
/// The platform keys its HMAC with the UTF-8 bytes of that string (its Python sample calls
/// `secret.encode()`), so the secret is kept as those bytes.
///
/// # Security
///
/// * `Debug` prints `[redacted]`; there is deliberately no `Display` and no `Serialize`, so a
///   secret cannot end up in a log line or a JSON dump by accident.
/// * The bytes are zeroized when the value is dropped: it implements [`ZeroizeOnDrop`], so
///   code that requires that bound accepts it.
///
/// ```
/// use aisoule_webhooks::WebhookSecret;
///
/// let secret = WebhookSecret::new("whsec_3f9a1c0e7b5d2468ace0")?;
/// assert_eq!(format!("{secret:?}"), "WebhookSecret([redacted])");
/// # Ok::<(), aisoule_webhooks::SecretError>(())
/// ```
///
/// It cannot be printed with `{}`:
///
/// ```compile_fail
/// let secret = aisoule_webhooks::WebhookSecret::new("whsec_x").unwrap();
/// println!("{secret}");
/// ```
///
/// Nor serialized:
///
/// ```compile_fail
/// fn needs_serialize<T: serde::Serialize>() {}
/// needs_serialize::<aisoule_webhooks::WebhookSecret>();
/// ```
#[derive(Clone)]
pub struct WebhookSecret {
    bytes: Zeroizing<Vec<u8>>,
}

impl WebhookSecret {
    /// Builds a secret from the string the dashboard shows.
    ///
    /// # Errors
    ///
    /// * [`SecretError::Empty`] when the string is empty.
    /// * [`SecretError::SurroundingWhitespace`] when it starts or ends with whitespace: the
    ///   dashboard never generates that, so it is a copy-paste accident (a trailing newline from
    ///   a file or an environment variable, typically) that would make every signature fail.
    pub fn new(secret: impl Into<String>) -> Result<Self, SecretError> {
        let secret = Zeroizing::new(secret.into());
        if secret.is_empty() {
            return Err(SecretError::Empty);
        }
        if secret.trim() != secret.as_str() {
            return Err(SecretError::SurroundingWhitespace);
        }
        Ok(Self {
            bytes: Zeroizing::new(secret.as_bytes().to_vec()),
        })
    }

    /// Builds a secret from raw key bytes, for secrets kept as bytes elsewhere (a secrets
    /// manager, a test vector). Bytes are not text, so only emptiness is checked.
    ///
    /// # Errors
    ///
    /// [`SecretError::Empty`] when `bytes` is empty.
    pub fn from_bytes(bytes: impl Into<Vec<u8>>) -> Result<Self, SecretError> {
        let bytes = Zeroizing::new(bytes.into());
        if bytes.is_empty() {
            return Err(SecretError::Empty);
        }
        Ok(Self { bytes })
    }

    /// The key bytes: the UTF-8 encoding of the dashboard string.
    ///
    /// # Security
    ///
    /// Whatever you copy these bytes into is not zeroized for you.
    pub fn expose_bytes(&self) -> &[u8] {
        &self.bytes
    }
}

/// Honest because the one field zeroizes itself on drop; the check below stops the build if
/// that field's type ever changes to one that does not.
impl ZeroizeOnDrop for WebhookSecret {}

const _: fn(&WebhookSecret) = |secret| {
    fn zeroizes_on_drop<T: ZeroizeOnDrop>(_: &T) {}
    zeroizes_on_drop(&secret.bytes);
};

impl fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WebhookSecret([redacted])")
    }
}

impl std::str::FromStr for WebhookSecret {
    type Err = SecretError;

    fn from_str(secret: &str) -> Result<Self, Self::Err> {
        Self::new(secret)
    }
}
