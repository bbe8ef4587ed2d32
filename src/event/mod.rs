//! The typed event model: both payload dialects, every documented event, nothing lost.
//!
//! AISoule's documentation shows two dialects of the same events:
//!
//! | | help pages | developer page |
//! |---|---|---|
//! | new message event | `message.incoming` | `message.received` |
//! | `timestamp` | RFC 3339 string | unix seconds |
//! | sender / recipient | `from` / `to` | `sender` / `recipient`, `waba_number` |
//! | text | `text` | `body` |
//!
//! [`Event::parse`] reads either into one model, so a handler never needs to know which arrived.
//! An [`Event`] is the raw bytes received plus a small head read in one pass: the kind, the
//! timestamp and the `message_id`, all that verification, freshness and deduplication need.
//! The typed [`Payload`] is a view borrowing from the raw bytes, read when a handler asks for
//! it. Nothing is thrown away: [`Event::raw`] returns the exact bytes received, every typed
//! payload keeps the fields it does not map in `extra`, and a known event whose `data` does not
//! fit its typed shape arrives as [`Payload::Unrecognized`], with a typed reason, instead of
//! failing.
//!
//! ```
//! use aisoule_webhooks::event::{Event, EventKind, Payload};
//!
//! let help = br#"{"event":"message.incoming","timestamp":"2026-05-29T10:30:00Z",
//!   "data":{"message_id":"wamid.1","from":"+918856879188","type":"text","text":"Hi"}}"#;
//! let developer = br#"{"event":"message.received","timestamp":1780050600,
//!   "data":{"message_id":"wamid.1","sender":"918856879188","type":"text","body":"Hi"}}"#;
//!
//! let (a, b) = (Event::parse(help)?, Event::parse(developer)?);
//! assert_eq!(a.kind(), &EventKind::MessageIncoming);
//! assert_eq!(a.kind(), b.kind());
//! assert_eq!(a.received_as(), "message.incoming");
//! assert_eq!(b.received_as(), "message.received");
//! assert_eq!(a.sender(), b.sender()); // "+918856879188" and "918856879188" are one number
//! assert_eq!(a.text().as_deref(), Some("Hi"));
//! assert_eq!(a.timestamp(), b.timestamp());
//! assert!(matches!(b.payload(), Payload::Message(m) if m.sender.as_ref().unwrap().as_sent() == "918856879188"));
//! # Ok::<(), aisoule_webhooks::ParseError>(())
//! ```

use std::borrow::Cow;
use std::fmt;

use bytes::Bytes;
use bytestring::ByteString;
use serde::{Serialize, Serializer};
use serde_json::{Map, Value};

use crate::error::ParseError;

mod head;
mod kind;
mod payload;
mod phone;
mod time;

pub use kind::{DeliveryStatus, EventKind, MessageType};
pub use payload::{
    CampaignCompleted, Contact, DeliveryError, InboundMessage, MessageContent, MessageId,
    MessageStatus, Payload, TransferCreated, UnknownEvent, Unrecognized,
};
pub use phone::PhoneNumber;
pub use time::{EventTime, Timestamp};

use head::Head;
use payload::Markers;
use time::TimestampShape;

/// Which of the two documented payload dialects a delivery used.
///
/// The rule: each of these is a marker of one dialect.
///
/// * help: the name `message.incoming`, a string `timestamp`, a `data` key `from`, `to`,
///   `text` or `whatsapp_account_id`
/// * developer: the name `message.received`, a numeric `timestamp`, a `data` key `sender`,
///   `recipient`, `body` or `waba_number`
///
/// Markers of one dialect only give that dialect; markers of both give [`Dialect::Mixed`]; none
/// (a contact event without a timestamp, say) give [`Dialect::Undetermined`]. The dialect is
/// information only: parsing never depends on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Dialect {
    /// The help pages' dialect.
    Help,
    /// The developer page's dialect.
    Developer,
    /// Markers of both dialects.
    Mixed,
    /// No marker of either dialect.
    Undetermined,
}

/// One AISoule webhook delivery: the raw bytes and the head read from them.
///
/// Cheap to clone (the bytes are shared). Equality compares the parsed content, not the bytes:
/// the same payload sent compact or pretty-printed is the same event. [`Serialize`] writes the
/// JSON exactly as received, so `Event::parse(&serde_json::to_vec(&event)?)` gives back an
/// equal event; serialize [`Event::payload`] for the normalised typed view.
#[derive(Clone)]
pub struct Event {
    raw: Bytes,
    kind: EventKind,
    received_as: ByteString,
    time: EventTime,
    timestamp_shape: Option<TimestampShape>,
    message_id: Option<ByteString>,
}

impl Event {
    /// Parses a request body into an event.
    ///
    /// Parse only bytes whose signature has verified. Only the head is read here (one pass,
    /// checking that the whole body is JSON); [`Event::payload`] reads the rest on demand.
    ///
    /// # Errors
    ///
    /// A [`ParseError`] only when the body is not an event at all: not JSON, not an object, no
    /// string `event`, or a repeated `event`, `timestamp`, `data` or `data.message_id` key.
    /// Everything else, including unknown events, odd timestamps and `data` of an unexpected
    /// shape, parses.
    pub fn parse(body: &[u8]) -> Result<Self, ParseError> {
        Self::parse_bytes(Bytes::copy_from_slice(body))
    }

    /// Parses without copying a body the integrations already hold as [`Bytes`].
    pub(crate) fn parse_bytes(raw: Bytes) -> Result<Self, ParseError> {
        let head = Head::read(&raw)?;
        let name = head.name();
        let kind = EventKind::from_name(name);
        let received_as = text_in(&raw, name);
        let message_id = head.message_id().map(|id| text_in(&raw, id));
        let (time, timestamp_shape) = match head.timestamp {
            Some(field) => (field.time, Some(field.shape)),
            None => (EventTime::Absent, None),
        };
        Ok(Self {
            kind,
            received_as,
            time,
            timestamp_shape,
            message_id,
            raw,
        })
    }

    /// The event's kind; both dialects' names for one event give one kind.
    pub fn kind(&self) -> &EventKind {
        &self.kind
    }

    /// The event name exactly as sent (`message.received`, say).
    pub fn received_as(&self) -> &str {
        &self.received_as
    }

    /// The `timestamp` field as read, including one that could not be read.
    pub fn time(&self) -> &EventTime {
        &self.time
    }

    /// When the event happened, in UTC, if the payload says and it could be read.
    pub fn timestamp(&self) -> Option<Timestamp> {
        match self.time {
            EventTime::At { at } => Some(at),
            _ => None,
        }
    }

    /// `data.message_id` as sent: a string, or an integer's exact digits. Message events
    /// carry their own id; status events carry the id of the message they are about.
    pub fn message_id(&self) -> Option<&str> {
        self.message_id.as_deref()
    }

    /// The exact bytes received, for logging raw payloads as the platform's docs advise.
    pub fn raw(&self) -> &Bytes {
        &self.raw
    }

    /// The typed content, read from the raw bytes now: call it once and keep the result.
    ///
    /// Strings borrow from [`Event::raw`] unless the JSON escaped them.
    pub fn payload(&self) -> Payload<'_> {
        Payload::read(&self.raw, &self.kind, &self.received_as)
    }

    /// Which payload dialect arrived, read from the raw bytes now.
    pub fn dialect(&self) -> Dialect {
        let markers = Markers::read(&self.raw);
        let help = self.received_as() == "message.incoming"
            || self.timestamp_shape == Some(TimestampShape::Text)
            || markers.help;
        let developer = self.received_as() == "message.received"
            || matches!(
                self.timestamp_shape,
                Some(TimestampShape::Number | TimestampShape::IntegerText)
            )
            || markers.developer;
        match (help, developer) {
            (true, false) => Dialect::Help,
            (false, true) => Dialect::Developer,
            (true, true) => Dialect::Mixed,
            (false, false) => Dialect::Undetermined,
        }
    }

    /// Top-level fields other than `event`, `timestamp` and `data`, as sent.
    pub fn extra(&self) -> Map<String, Value> {
        payload::top_level_extra(&self.raw)
    }

    /// Who sent the message, or the business number a status came from.
    pub fn sender(&self) -> Option<PhoneNumber<'_>> {
        match self.payload() {
            Payload::Message(m) => m.sender,
            Payload::Status(s) => s.sender,
            _ => None,
        }
    }

    /// The customer's number, whichever way the event goes: the `sender` of an incoming
    /// message, the `recipient` of a status of a message the business sent. This is the
    /// conversation an ordered inbox keeps in sequence.
    pub fn customer(&self) -> Option<PhoneNumber<'_>> {
        match self.payload() {
            Payload::Message(m) => m.sender,
            Payload::Status(s) => s.recipient,
            _ => None,
        }
    }

    /// The text of a text message (or a caption that came with another type), whichever
    /// dialect's field (`text` or `body`) carried it.
    pub fn text(&self) -> Option<Cow<'_, str>> {
        match self.payload() {
            Payload::Message(InboundMessage {
                content: MessageContent::Text { body },
                ..
            }) => Some(body),
            Payload::Message(InboundMessage {
                content: MessageContent::Other { text, .. },
                ..
            }) => text,
            _ => None,
        }
    }
}

/// `text` as a string sharing `raw`'s memory when it lies within `raw` (the JSON had no
/// escapes), and a copy otherwise.
fn text_in(raw: &Bytes, text: &str) -> ByteString {
    let within = raw.as_ptr_range();
    if within.contains(&text.as_ptr()) {
        // A `&str` is UTF-8, and `slice_ref` returns exactly its bytes.
        if let Ok(shared) = ByteString::try_from(raw.slice_ref(text.as_bytes())) {
            return shared;
        }
    }
    ByteString::from(text)
}

impl PartialEq for Event {
    fn eq(&self, other: &Self) -> bool {
        self.kind == other.kind
            && self.received_as == other.received_as
            && self.time == other.time
            && self.dialect() == other.dialect()
            && self.payload() == other.payload()
            && self.extra() == other.extra()
    }
}

impl fmt::Debug for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Event")
            .field("kind", &self.kind)
            .field("received_as", &self.received_as)
            .field("time", &self.time)
            .field("message_id", &self.message_id)
            .field("raw_len", &self.raw.len())
            .finish()
    }
}

impl Serialize for Event {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // A parsed body is valid JSON, hence valid UTF-8.
        let text = std::str::from_utf8(&self.raw).map_err(serde::ser::Error::custom)?;
        let raw = serde_json::value::RawValue::from_string(text.to_owned())
            .map_err(serde::ser::Error::custom)?;
        raw.serialize(serializer)
    }
}
