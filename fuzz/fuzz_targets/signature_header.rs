//! An arbitrary header value and body: never a panic, and only the real signature is accepted.
#![no_main]

use aisoule_webhooks::{Verifier, WebhookSecret, sign};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (&[u8], &[u8])| {
    let (value, body) = input;
    let secret = WebhookSecret::new("whsec_fuzz").unwrap();
    let accepted = Verifier::new(secret.clone())
        .verify_value(value, body)
        .is_ok();

    // The allowed forms: surrounding spaces/tabs, an optional case-insensitive `sha256=`,
    // then the 64 hex digits in either case.
    let trimmed = value.trim_ascii().to_ascii_lowercase();
    let digest = trimmed.strip_prefix(b"sha256=").unwrap_or(&trimmed);
    let real = sign(&secret, body).to_hex();
    assert_eq!(accepted, digest == real.as_bytes(), "value {value:?}");
});
