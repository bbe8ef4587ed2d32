//! The JSON Lines recording `listen --record` writes and `replay` reads: one delivery a line.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::CliError;

/// The request headers worth keeping: those a receiver reads.
pub(crate) const KEPT_HEADERS: [&str; 4] = [
    "content-type",
    "content-encoding",
    "x-webhook-signature",
    "x-aisoule-signature",
];

/// One recorded delivery.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Recorded {
    /// When it arrived (RFC 3339).
    pub(crate) received_at: String,
    /// The request path.
    pub(crate) path: String,
    /// The kept headers, name and value, in order.
    pub(crate) headers: Vec<(String, String)>,
    /// The body, when it is UTF-8 (webhook bodies are JSON).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) body: Option<String>,
    /// The body's bytes, when it is not UTF-8 (a compressed body).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) body_bytes: Option<Vec<u8>>,
    /// The status `listen` answered.
    pub(crate) status: u16,
    /// `handled`, `duplicate` or `rejected`.
    pub(crate) verdict: String,
}

impl Recorded {
    /// The body's exact bytes.
    pub(crate) fn body(&self) -> Vec<u8> {
        match (&self.body, &self.body_bytes) {
            (Some(text), _) => text.as_bytes().to_vec(),
            (None, Some(bytes)) => bytes.clone(),
            (None, None) => Vec::new(),
        }
    }

    /// Stores `bytes` as text when they are UTF-8, as bytes otherwise.
    pub(crate) fn set_body(&mut self, bytes: &[u8]) {
        match std::str::from_utf8(bytes) {
            Ok(text) => self.body = Some(text.to_owned()),
            Err(_) => self.body_bytes = Some(bytes.to_vec()),
        }
    }
}

/// Every recorded delivery in `path`, in order; blank lines are skipped.
pub(crate) fn read(path: &Path) -> Result<Vec<Recorded>, CliError> {
    let bytes = crate::input::read_file(path)?;
    let text = String::from_utf8_lossy(&bytes);
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(i, line)| {
            serde_json::from_str(line).map_err(|e| CliError::Record {
                path: path.to_path_buf(),
                line: i + 1,
                reason: format!("not a line `listen --record` writes: {e}"),
            })
        })
        .collect()
}
