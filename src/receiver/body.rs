//! Reading a request body: up to the limit, and decoded by one `Content-Encoding` policy for
//! every framework.

// Only the framework integrations read request bodies.
#![cfg_attr(not(any(feature = "axum", feature = "actix-web")), allow(dead_code))]

use std::io::Read;
use std::pin::pin;

use bytes::{Buf, Bytes};
use flate2::read::{GzDecoder, ZlibDecoder};
use http_body_util::{BodyExt, LengthLimitError, Limited};

use super::Rejection;

/// The error type `http_body_util` boxes body errors into.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The largest request body the integrations read.
///
/// Defaults to 1 MiB, far above any documented payload (they are under 1 KiB) and small enough
/// that a flood of oversized bodies cannot exhaust memory.
///
/// ```
/// use aisoule_webhooks::BodyLimit;
///
/// assert_eq!(BodyLimit::default().get(), 1024 * 1024);
/// assert_eq!(BodyLimit::bytes(64 * 1024).get(), 65_536);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BodyLimit(usize);

impl BodyLimit {
    /// 1 MiB.
    pub const DEFAULT: Self = Self(1024 * 1024);

    /// A limit of `bytes` bytes.
    pub const fn bytes(bytes: usize) -> Self {
        Self(bytes)
    }

    /// The limit in bytes.
    pub const fn get(self) -> usize {
        self.0
    }
}

impl Default for BodyLimit {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// How a body was encoded for transport, from its `Content-Encoding` header.
///
/// The signature covers the JSON the platform signed, so an encoded body is decoded first and
/// the **decoded** bytes are verified, parsed and handed on. `gzip`, `x-gzip` and `deflate` are
/// decoded; `identity` and no header mean the bytes as they are. Anything else, including a
/// chain of several encodings, is refused with 415, the same on every framework.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ContentEncoding {
    Identity,
    Gzip,
    Deflate,
}

impl ContentEncoding {
    pub(crate) fn from_header(value: Option<&[u8]>) -> Result<Self, Rejection> {
        let Some(value) = value else {
            return Ok(Self::Identity);
        };
        let name = std::str::from_utf8(value).unwrap_or("").trim();
        if name.eq_ignore_ascii_case("identity") || name.is_empty() {
            Ok(Self::Identity)
        } else if name.eq_ignore_ascii_case("gzip") || name.eq_ignore_ascii_case("x-gzip") {
            Ok(Self::Gzip)
        } else if name.eq_ignore_ascii_case("deflate") {
            Ok(Self::Deflate)
        } else {
            Err(Rejection::UnsupportedEncoding {
                encoding: String::from_utf8_lossy(&value[..value.len().min(32)]).into_owned(),
            })
        }
    }
}

/// Reads `body` up to `limit` bytes, then decodes it, refusing a declared length, a stream or
/// a decoded body over the limit as soon as it is known.
pub(crate) async fn read_body<B>(
    limit: BodyLimit,
    declared_length: Option<u64>,
    encoding: ContentEncoding,
    body: B,
) -> Result<Bytes, Rejection>
where
    B: http_body::Body,
    B::Error: Into<BoxError>,
{
    let limit = limit.get();
    if declared_length.is_some_and(|declared| declared > limit as u64) {
        return Err(Rejection::PayloadTooLarge { limit });
    }
    // Read frame by frame rather than with `collect`, which allocates a queue for the chunks
    // on every delivery: a body that arrives in one chunk (nearly all of them) is kept as it
    // is, without an allocation or a copy, and only a second chunk starts a buffer.
    let mut body = pin!(Limited::new(body, limit));
    let mut first = Bytes::new();
    let mut joined = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = match frame {
            Ok(frame) => frame,
            Err(error) if error.downcast_ref::<LengthLimitError>().is_some() => {
                return Err(Rejection::PayloadTooLarge { limit });
            }
            Err(error) => return Err(Rejection::BodyUnreadable { source: error }),
        };
        // Trailers carry nothing the platform sends.
        let Ok(mut data) = frame.into_data() else {
            continue;
        };
        let chunk = data.copy_to_bytes(data.remaining());
        if first.is_empty() && joined.is_empty() {
            first = chunk;
        } else {
            if joined.is_empty() {
                joined.extend_from_slice(&first);
            }
            joined.extend_from_slice(&chunk);
        }
    }
    let raw = if joined.is_empty() {
        first
    } else {
        Bytes::from(joined)
    };
    match encoding {
        ContentEncoding::Identity => Ok(raw),
        ContentEncoding::Gzip => decode(GzDecoder::new(&raw[..]), limit),
        ContentEncoding::Deflate => decode(ZlibDecoder::new(&raw[..]), limit),
    }
}

fn decode(decoder: impl Read, limit: usize) -> Result<Bytes, Rejection> {
    let mut decoded = Vec::new();
    // One byte past the limit tells "exactly at the limit" from "over it" without reading a
    // bomb to its end.
    decoder
        .take(limit as u64 + 1)
        .read_to_end(&mut decoded)
        .map_err(|error| Rejection::BodyUnreadable {
            source: error.into(),
        })?;
    if decoded.len() > limit {
        return Err(Rejection::PayloadTooLarge { limit });
    }
    Ok(Bytes::from(decoded))
}
