//! One module per command, and the argument types several of them share.

pub(crate) mod inbox;
pub(crate) mod listen;
pub(crate) mod replay;
pub(crate) mod send;
pub(crate) mod sign;
pub(crate) mod verify;

use aisoule_webhooks::test_util::{SignatureForm, SignatureHeader};
use clap::ValueEnum;

/// Which header carries the signature, as a command-line value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum HeaderArg {
    /// `X-Webhook-Signature`, as on the help pages.
    Webhook,
    /// `X-AISoule-Signature`, as on the developer page.
    Aisoule,
}

impl HeaderArg {
    /// The library's value.
    pub(crate) fn header(self) -> SignatureHeader {
        match self {
            Self::Webhook => SignatureHeader::WebhookSignature,
            Self::Aisoule => SignatureHeader::AisouleSignature,
        }
    }

    /// The header's name as the platform writes it.
    pub(crate) fn display_name(self) -> &'static str {
        match self {
            Self::Webhook => "X-Webhook-Signature",
            Self::Aisoule => "X-AISoule-Signature",
        }
    }

    /// The form the platform uses in this header: plain hex in the help pages' header,
    /// `sha256=` in the developer page's.
    pub(crate) fn usual_form(self) -> SignatureForm {
        match self {
            Self::Webhook => SignatureForm::Hex,
            Self::Aisoule => SignatureForm::Prefixed,
        }
    }
}

/// How the digest is written, as a command-line value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum FormArg {
    /// 64 hex digits.
    Hex,
    /// `sha256=` and 64 hex digits.
    Prefixed,
}

impl FormArg {
    /// The library's value.
    pub(crate) fn form(self) -> SignatureForm {
        match self {
            Self::Hex => SignatureForm::Hex,
            Self::Prefixed => SignatureForm::Prefixed,
        }
    }
}

/// The header value of `signature` in `form`.
pub(crate) fn header_value(signature: &aisoule_webhooks::Signature, form: SignatureForm) -> String {
    match form {
        SignatureForm::Hex => signature.to_hex(),
        SignatureForm::Prefixed => signature.to_prefixed(),
    }
}
