//! The one error type of the tool: each variant is one line on stderr, and none carries the
//! secret.

use std::path::PathBuf;

use aisoule_webhooks::{ConfigError, InboxError, SecretError};
use thiserror::Error;

/// Why a command failed. Printed as `error: <message>` with exit status 1 (clap's own usage
/// errors exit with 2).
///
/// The messages never contain the secret: secrets are only ever held in a
/// [`WebhookSecret`](aisoule_webhooks::WebhookSecret), which cannot be displayed.
#[derive(Debug, Error)]
pub(crate) enum CliError {
    /// A file (or stdin) could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file, or `-` for stdin.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A file could not be written.
    #[error("cannot write {}: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// No secret was given and none could be prompted for.
    #[error(
        "no webhook secret: set AISOULE_WEBHOOK_SECRET, pass --secret, or run in a terminal to be prompted"
    )]
    NoSecret,
    /// The prompt for the secret failed.
    #[error("cannot read the secret from the terminal: {0}")]
    Prompt(#[source] std::io::Error),
    /// The secret is unusable (empty, or with surrounding whitespace).
    #[error("{0}")]
    Secret(#[from] SecretError),
    /// A URL the tool was asked to send to or listen on is unusable.
    #[error("bad URL {url:?}: {reason}")]
    Url {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The request could not be sent or its answer not read.
    #[error("{url}: {reason}")]
    Http {
        /// Where it was sent.
        url: String,
        /// A short explanation (refused, timed out, reset).
        reason: String,
    },
    /// The receiver's socket could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A recording line is not one `listen --record` writes.
    #[error("{}:{line}: {reason}", path.display())]
    Record {
        /// The recording.
        path: PathBuf,
        /// The 1-based line number.
        line: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// The inbox store failed.
    #[error("inbox: {0}")]
    Inbox(#[from] InboxError),
    /// A setting the library refused.
    #[error("{0}")]
    Config(#[from] ConfigError),
    /// Arguments that clap cannot check on its own.
    #[error("{0}")]
    Usage(String),
    /// The command ran and reported its result, which is a failure (a signature that does not
    /// match, a non-200 answer): the report is already printed, so nothing more is said.
    #[error("")]
    Reported,
}

/// `error`'s message followed by its sources' messages, for errors (from other crates) whose
/// `Display` leaves out the cause a person needs, such as "connection refused".
pub(crate) fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text = format!("{text}: {cause_text}");
        }
        source = cause.source();
    }
    text
}
