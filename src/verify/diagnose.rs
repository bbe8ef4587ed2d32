//! Why a signature failed, for the operator: the mistakes every webhook integration makes (a
//! body re-serialised by a framework, a newline added by a proxy or stripped by `curl -d`, a
//! secret retired too early), found by trying the body as it was probably signed.
//!
//! Nothing here changes the answer: every signature failure is the same 401. A diagnosis costs a
//! few HMACs, so it runs only after a failure, and the receiver runs it at a bounded rate.

use std::fmt;
use std::sync::Arc;

use serde_json::ser::{CompactFormatter, Formatter};

use super::{KeyedSecret, Verifier, parse_signature};
use crate::error::VerifyError;

/// The most likely reason a delivery's signature did not verify, from
/// [`Verifier::diagnose`]. `Display` says it in a sentence for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SignatureDiagnosis {
    /// The request had neither `X-Webhook-Signature` nor `X-AISoule-Signature`: the sender is
    /// not the platform, or a proxy drops the header.
    NoSignatureHeader,
    /// The value is the docs' `MOCK_SIGNATURE`: someone replayed the documentation's sample.
    DocsPlaceholder,
    /// The body matches once its trailing newline is removed: something between the platform
    /// and this server added one (a proxy, a framework, a test tool).
    NewlineAdded,
    /// The body matches once a trailing newline is added: something removed it (`curl -d
    /// @file` strips newlines; send with `--data-binary @file`).
    NewlineRemoved,
    /// The same JSON in another form matches: the body was parsed and re-serialised before
    /// verification (a framework's JSON extractor, `requests.post(json=…)`). Verify the raw
    /// bytes as received.
    Reserialized {
        /// The form that matches.
        form: JsonForm,
    },
    /// A secret configured as retired ([`Verifier::and_retired_secret`]) matches: the sender
    /// still signs with it, so it was retired too early.
    RetiredSecret {
        /// The retired secret's label.
        label: String,
    },
}

/// A serialisation of the same JSON value whose bytes match the signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum JsonForm {
    /// No whitespace between tokens, keys in the order received.
    Compact,
    /// Compact, with every non-ASCII character written as a `\uXXXX` escape (Python's
    /// `json.dumps` default, `ensure_ascii=True`).
    CompactAsciiEscaped,
}

impl fmt::Display for SignatureDiagnosis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoSignatureHeader => {
                f.write_str("the request has no X-Webhook-Signature or X-AISoule-Signature header")
            }
            Self::DocsPlaceholder => {
                f.write_str("the signature is the documentation's MOCK_SIGNATURE placeholder")
            }
            Self::NewlineAdded => f.write_str(
                "the body matches without its trailing newline: something added one after signing",
            ),
            Self::NewlineRemoved => f.write_str(
                "the body matches with a trailing newline: something stripped it \
                 (curl -d does; use --data-binary)",
            ),
            Self::Reserialized { form } => write!(
                f,
                "the {} form of the same JSON matches: the body was re-serialised before \
                 verification; verify the raw bytes",
                match form {
                    JsonForm::Compact => "compact",
                    JsonForm::CompactAsciiEscaped => "compact, ASCII-escaped",
                }
            ),
            Self::RetiredSecret { label } => write!(
                f,
                "the retired secret {label:?} matches: the sender still signs with it"
            ),
        }
    }
}

impl Verifier {
    /// Also recognises `secret`, reported as `label`, but only to diagnose failures: a
    /// delivery signed with it is still refused. Add the secret you just rotated away from, to
    /// learn whether a sender still uses it.
    pub fn and_retired_secret(
        self,
        label: impl Into<String>,
        secret: crate::WebhookSecret,
    ) -> Self {
        let mut retired: Vec<KeyedSecret> = self.retired.iter().cloned().collect();
        retired.push(KeyedSecret::new(label.into(), &secret));
        Self {
            retired: retired.into(),
            ..self
        }
    }

    /// The most likely reason `values` (every signature header's value) do not verify `body`,
    /// or `None` when nothing tried matches (a forgery, or a secret this verifier does not
    /// know). Call it after a failure only.
    ///
    /// # Security
    ///
    /// Each call computes up to a few HMACs of the body and of re-serialisations of it: rate
    /// limit it, as the receiver does (at most one diagnosis per second), so that a flood of
    /// forgeries cannot make it spend them on every request. Never send the diagnosis to the
    /// client: the answer to every signature failure is the same 401.
    pub fn diagnose<'a>(
        &self,
        values: impl IntoIterator<Item = &'a [u8]>,
        body: &[u8],
    ) -> Option<SignatureDiagnosis> {
        let mut values = values.into_iter().peekable();
        if values.peek().is_none() {
            return Some(SignatureDiagnosis::NoSignatureHeader);
        }
        let mut digest = None;
        for value in values {
            match parse_signature(value) {
                Ok(parsed) => digest = digest.or(Some(parsed)),
                Err(VerifyError::Placeholder) => return Some(SignatureDiagnosis::DocsPlaceholder),
                // A malformed value: its VerifyError already says what is wrong.
                Err(_) => {}
            }
        }
        let digest = digest?;
        let matches = |secrets: &Arc<[KeyedSecret]>, candidate: &[u8]| {
            secrets
                .iter()
                .find(|secret| super::tag_matches(&secret.mac, candidate, &digest))
                .map(|secret| secret.label.to_string())
        };
        if let Some(label) = matches(&self.retired, body) {
            return Some(SignatureDiagnosis::RetiredSecret { label });
        }
        if let Some(trimmed) = body.strip_suffix(b"\n")
            && (matches(&self.secrets, trimmed).is_some()
                || trimmed
                    .strip_suffix(b"\r")
                    .is_some_and(|trimmed| matches(&self.secrets, trimmed).is_some()))
        {
            return Some(SignatureDiagnosis::NewlineAdded);
        }
        let mut extended = body.to_vec();
        extended.push(b'\n');
        if matches(&self.secrets, &extended).is_some() {
            return Some(SignatureDiagnosis::NewlineRemoved);
        }
        for form in [JsonForm::Compact, JsonForm::CompactAsciiEscaped] {
            if let Some(reserialized) = reserialize(body, form)
                && reserialized != body
                && matches(&self.secrets, &reserialized).is_some()
            {
                return Some(SignatureDiagnosis::Reserialized { form });
            }
        }
        None
    }
}

/// `body`'s JSON written again in `form`, keys in the order received (transcoded token by
/// token, never through a map), or `None` when it is not JSON.
fn reserialize(body: &[u8], form: JsonForm) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(body.len());
    let mut reader = serde_json::Deserializer::from_slice(body);
    let written = match form {
        JsonForm::Compact => {
            let mut writer = serde_json::Serializer::with_formatter(&mut out, CompactFormatter);
            serde_transcode::transcode(&mut reader, &mut writer)
        }
        JsonForm::CompactAsciiEscaped => {
            let mut writer = serde_json::Serializer::with_formatter(&mut out, AsciiEscaped);
            serde_transcode::transcode(&mut reader, &mut writer)
        }
    };
    (written.is_ok() && reader.end().is_ok()).then_some(out)
}

/// serde_json's compact output, with every non-ASCII character escaped as `\uXXXX` (UTF-16
/// code units, lowercase hex, as Python writes them).
struct AsciiEscaped;

impl Formatter for AsciiEscaped {
    fn write_string_fragment<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> std::io::Result<()> {
        for (ascii, rest) in fragment
            .split_inclusive(|c: char| !c.is_ascii())
            .map(|piece| {
                let last = piece.chars().next_back().filter(|c| !c.is_ascii());
                (&piece[..piece.len() - last.map_or(0, char::len_utf8)], last)
            })
        {
            writer.write_all(ascii.as_bytes())?;
            if let Some(c) = rest {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    write!(writer, "\\u{unit:04x}")?;
                }
            }
        }
        Ok(())
    }
}
