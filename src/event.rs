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
//! Nothing is thrown away: [`Event::raw`] returns the exact bytes received, every typed payload
//! keeps the fields it does not map in `extra`, and a known event whose `data` does not fit its
//! typed shape arrives as [`Payload::Unrecognized`] instead of failing.
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
//! assert_eq!(a.text(), Some("Hi"));
//! assert_eq!(a.timestamp(), b.timestamp());
//! assert!(matches!(b.payload(), Payload::Message(m) if m.sender.as_ref().unwrap().as_sent() == "918856879188"));
//! # Ok::<(), aisoule_webhooks::ParseError>(())
//! ```

use std::borrow::Cow;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::{Serialize, Serializer};
use serde_json::{Map, Value};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::error::ParseError;

mod parse;

/// Which event a delivery announces.
///
/// The nine documented events, with `message.incoming` and `message.received` as one kind.
/// Any other name is kept as it arrived in [`EventKind::Unknown`], because the platform says
/// new events may be added.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EventKind {
    /// A customer sent a message (`message.incoming` or `message.received`).
    MessageIncoming,
    /// Your message was sent (`message.sent`).
    MessageSent,
    /// Your message reached the customer's phone (`message.delivered`).
    MessageDelivered,
    /// The customer read your message (`message.read`).
    MessageRead,
    /// Your message could not be delivered (`message.failed`).
    MessageFailed,
    /// A contact was added (`contact.created`).
    ContactCreated,
    /// A contact changed (`contact.updated`).
    ContactUpdated,
    /// A campaign finished sending (`campaign.completed`).
    CampaignCompleted,
    /// A conversation was transferred to an agent (`transfer.created`).
    TransferCreated,
    /// An event this version does not know, with its name as sent.
    Unknown(String),
}

impl EventKind {
    /// The kind for an event name as sent.
    ///
    /// ```
    /// use aisoule_webhooks::event::EventKind;
    /// assert_eq!(EventKind::from_name("message.received"), EventKind::MessageIncoming);
    /// assert_eq!(EventKind::from_name("order.paid"), EventKind::Unknown("order.paid".into()));
    /// ```
    pub fn from_name(name: &str) -> Self {
        match name {
            "message.incoming" | "message.received" => Self::MessageIncoming,
            "message.sent" => Self::MessageSent,
            "message.delivered" => Self::MessageDelivered,
            "message.read" => Self::MessageRead,
            "message.failed" => Self::MessageFailed,
            "contact.created" => Self::ContactCreated,
            "contact.updated" => Self::ContactUpdated,
            "campaign.completed" => Self::CampaignCompleted,
            "transfer.created" => Self::TransferCreated,
            other => Self::Unknown(other.to_owned()),
        }
    }

    /// The canonical name: the help pages' name for known kinds (`message.incoming` for both
    /// dialects), the name as sent for unknown ones.
    pub fn as_str(&self) -> &str {
        match self {
            Self::MessageIncoming => "message.incoming",
            Self::MessageSent => "message.sent",
            Self::MessageDelivered => "message.delivered",
            Self::MessageRead => "message.read",
            Self::MessageFailed => "message.failed",
            Self::ContactCreated => "contact.created",
            Self::ContactUpdated => "contact.updated",
            Self::CampaignCompleted => "campaign.completed",
            Self::TransferCreated => "transfer.created",
            Self::Unknown(name) => name,
        }
    }

    /// Whether this is a status update about a message you sent (sent, delivered, read, failed).
    pub fn is_message_status(&self) -> bool {
        matches!(
            self,
            Self::MessageSent | Self::MessageDelivered | Self::MessageRead | Self::MessageFailed
        )
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for EventKind {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

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

/// A point in time, in UTC, with nanosecond precision.
///
/// The crate's own type, so that no pre-1.0 date library appears in the public API; convert
/// with [`Timestamp::to_system_time`] or [`Timestamp::unix_seconds`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp {
    seconds: i64,
    nanos: u32,
}

impl Timestamp {
    /// The timestamp `seconds` after the unix epoch, if it falls in years 0000 to 9999, the
    /// years RFC 3339 can write.
    pub fn from_unix_seconds(seconds: i64) -> Option<Self> {
        Self::from_offset_date_time(OffsetDateTime::from_unix_timestamp(seconds).ok()?)
    }

    /// The timestamp `millis` milliseconds after the unix epoch, if it falls in years 0000 to
    /// 9999.
    pub fn from_unix_millis(millis: i64) -> Option<Self> {
        let at = OffsetDateTime::from_unix_timestamp_nanos(i128::from(millis) * 1_000_000).ok()?;
        Self::from_offset_date_time(at)
    }

    /// The one way in, so that every timestamp can be written back as RFC 3339.
    fn from_offset_date_time(at: OffsetDateTime) -> Option<Self> {
        let utc = at.checked_to_offset(time::UtcOffset::UTC)?;
        (0..=9999).contains(&utc.year()).then(|| Self {
            seconds: utc.unix_timestamp(),
            nanos: utc.nanosecond(),
        })
    }

    /// Parses an RFC 3339 timestamp with any offset and any fractional seconds, if it falls in
    /// years 0000 to 9999 once in UTC.
    ///
    /// ```
    /// use aisoule_webhooks::event::Timestamp;
    /// let t = Timestamp::parse_rfc3339("2026-05-29T16:00:00.25+05:30").unwrap();
    /// assert_eq!(t.to_string(), "2026-05-29T10:30:00.25Z");
    /// ```
    pub fn parse_rfc3339(text: &str) -> Option<Self> {
        Self::from_offset_date_time(OffsetDateTime::parse(text, &Rfc3339).ok()?)
    }

    /// The time as a [`SystemTime`], if representable, and `None` when it is not.
    pub fn from_system_time(time: SystemTime) -> Option<Self> {
        let (seconds, nanos) = match time.duration_since(UNIX_EPOCH) {
            Ok(after) => (i64::try_from(after.as_secs()).ok()?, after.subsec_nanos()),
            Err(before) => {
                let before = before.duration();
                let whole = i64::try_from(before.as_secs()).ok()?;
                match before.subsec_nanos() {
                    0 => (-whole, 0),
                    n => (-whole - 1, 1_000_000_000 - n),
                }
            }
        };
        Self::from_unix_seconds(seconds).map(|t| Self { nanos, ..t })
    }

    /// Whole seconds since the unix epoch (negative before it).
    pub fn unix_seconds(self) -> i64 {
        self.seconds
    }

    /// The nanoseconds past [`Timestamp::unix_seconds`].
    pub fn subsec_nanos(self) -> u32 {
        self.nanos
    }

    /// The same instant as a [`SystemTime`].
    pub fn to_system_time(self) -> SystemTime {
        let nanos = Duration::from_nanos(u64::from(self.nanos));
        match u64::try_from(self.seconds) {
            Ok(after) => UNIX_EPOCH + Duration::from_secs(after) + nanos,
            Err(_) => UNIX_EPOCH - Duration::from_secs(self.seconds.unsigned_abs()) + nanos,
        }
    }

    /// RFC 3339 in UTC (`2026-05-29T10:30:00Z`), with fractional seconds only when present.
    pub fn to_rfc3339(self) -> String {
        OffsetDateTime::from_unix_timestamp(self.seconds)
            .map(|t| t.replace_nanosecond(self.nanos).unwrap_or(t))
            .ok()
            .and_then(|t| t.format(&Rfc3339).ok())
            .unwrap_or_else(|| format!("@{}.{:09}", self.seconds, self.nanos))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_rfc3339())
    }
}

/// The event's `timestamp` field, read leniently: no form of it ever fails a delivery.
///
/// Read: RFC 3339 with any offset and fractional seconds; unix seconds as a JSON integer or as
/// a string of digits; unix **milliseconds** the same ways, recognised by their size (any value
/// of 10^11 or more, which as seconds would be after the year 5138). `null` counts as absent.
///
/// Everything else (a float, ISO 8601 without an offset, a year past 9999, `"yesterday"`) is
/// kept as [`EventTime::Unreadable`] and logged at warn with its form. The receiver then skips
/// the replay check for it, or refuses it with 400 when built with
/// [`refuse_unreadable_timestamps`](crate::receiver::ReceiverBuilder::refuse_unreadable_timestamps).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
#[non_exhaustive]
pub enum EventTime {
    /// The payload has no timestamp (several documented payloads do not).
    Absent,
    /// The timestamp, normalised to UTC.
    At {
        /// When the event happened.
        at: Timestamp,
    },
    /// A timestamp the crate cannot read, kept as sent.
    Unreadable {
        /// The value as sent.
        raw: Value,
        /// Why it could not be read.
        reason: String,
    },
}

impl EventTime {
    /// A value kept as sent, reported once.
    fn unreadable(raw: Value, reason: &'static str) -> Self {
        tracing::warn!(reason, "AISoule event timestamp kept unread");
        Self::Unreadable {
            raw,
            reason: reason.to_owned(),
        }
    }

    fn from_unix_seconds(seconds: i64, raw: impl FnOnce() -> Value) -> Self {
        // Unix seconds reach 10^11 only in the year 5138; a value that large is milliseconds,
        // which some senders and proxies use.
        const MILLIS_FROM: i64 = 100_000_000_000;
        let at = if seconds.unsigned_abs() >= MILLIS_FROM.unsigned_abs() {
            Timestamp::from_unix_millis(seconds)
        } else {
            Timestamp::from_unix_seconds(seconds)
        };
        match at {
            Some(at) => Self::At { at },
            None => Self::unreadable(raw(), "unix seconds outside years 0000 to 9999"),
        }
    }

    fn from_text(text: &str) -> Self {
        if is_integer_text(text) {
            return match text.parse::<i64>() {
                Ok(seconds) => Self::from_unix_seconds(seconds, || Value::String(text.to_owned())),
                Err(_) => Self::unreadable(
                    Value::String(text.to_owned()),
                    "unix seconds outside years 0000 to 9999",
                ),
            };
        }
        match Timestamp::parse_rfc3339(text) {
            Some(at) => Self::At { at },
            None => Self::unreadable(
                Value::String(text.to_owned()),
                "neither RFC 3339 nor unix seconds",
            ),
        }
    }
}

fn is_integer_text(s: &str) -> bool {
    let digits = s.strip_prefix('-').unwrap_or(s);
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}

/// A platform message id (`wamid.…` or `msg_…`), kept exactly as sent.
///
/// A JSON integer id is kept as its exact decimal text, even above 2^53.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct MessageId(String);

impl MessageId {
    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A phone number as sent, comparable across the dialects' spellings.
///
/// The help pages write `+919876543210`, the developer page `918856879188`. Both are kept as
/// sent, and compare equal when their [E.164](https://en.wikipedia.org/wiki/E.164) forms do.
///
/// `Display` (and `Serialize`) write the E.164 form when there is one (`+918856879188`), and
/// the number as sent otherwise, so the same customer prints the same way from either dialect.
///
/// ```
/// use aisoule_webhooks::event::PhoneNumber;
/// let a = PhoneNumber::new("918856879188");
/// let b = PhoneNumber::new("+91 88568-79188");
/// assert_eq!(a, b);
/// assert_eq!(a.e164(), Some("+918856879188"));
/// assert_eq!(b.as_sent(), "+91 88568-79188");
/// assert_eq!(b.to_string(), "+918856879188"); // Display: the E.164 form
/// ```
#[derive(Debug, Clone)]
pub struct PhoneNumber {
    as_sent: String,
    e164: E164,
}

/// The E.164 form, stored only when it differs from what was sent.
#[derive(Debug, Clone)]
enum E164 {
    /// What was sent is already `+` and 7 to 15 digits.
    AsSent,
    /// Derived from what was sent.
    Derived(String),
    /// Not a plausible number.
    None,
}

fn is_e164_digits(digits: &str) -> bool {
    (7..=15).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0')
}

impl PhoneNumber {
    /// Keeps `as_sent` and derives its E.164 form: separators (space, `-`, `.`, parentheses)
    /// dropped, a `+` added, and 7 to 15 digits required.
    pub fn new(as_sent: impl Into<String>) -> Self {
        let as_sent = as_sent.into();
        let e164 = match as_sent.strip_prefix('+') {
            // The two spellings the platform uses, without allocating for the first.
            Some(digits) if is_e164_digits(digits) => E164::AsSent,
            None if is_e164_digits(&as_sent) => E164::Derived(format!("+{as_sent}")),
            _ => {
                let unseparated: String = as_sent
                    .trim()
                    .chars()
                    .filter(|c| !matches!(c, ' ' | '-' | '.' | '(' | ')'))
                    .collect();
                let digits = unseparated.strip_prefix('+').unwrap_or(&unseparated);
                if is_e164_digits(digits) {
                    E164::Derived(format!("+{digits}"))
                } else {
                    E164::None
                }
            }
        };
        Self { as_sent, e164 }
    }

    /// The number exactly as the platform sent it.
    pub fn as_sent(&self) -> &str {
        &self.as_sent
    }

    /// The E.164 form (`+918856879188`), or `None` when the value is not a plausible number.
    pub fn e164(&self) -> Option<&str> {
        match &self.e164 {
            E164::AsSent => Some(&self.as_sent),
            E164::Derived(e164) => Some(e164),
            E164::None => None,
        }
    }

    fn identity(&self) -> &str {
        self.e164().unwrap_or(&self.as_sent)
    }
}

impl PartialEq for PhoneNumber {
    fn eq(&self, other: &Self) -> bool {
        self.identity() == other.identity()
    }
}

impl Eq for PhoneNumber {}

impl Hash for PhoneNumber {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.identity().hash(state);
    }
}

impl fmt::Display for PhoneNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.identity())
    }
}

impl Serialize for PhoneNumber {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.identity())
    }
}

/// A WhatsApp message type, from the `type` field.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum MessageType {
    /// `text`
    Text,
    /// `image`
    Image,
    /// `video`
    Video,
    /// `audio`
    Audio,
    /// `document`
    Document,
    /// `sticker`
    Sticker,
    /// `location`
    Location,
    /// `contacts`
    Contacts,
    /// `interactive`
    Interactive,
    /// `button`
    Button,
    /// `reaction`
    Reaction,
    /// `template`
    Template,
    /// A type this version does not know, as sent.
    Other(String),
}

impl MessageType {
    /// The type for a `type` value as sent.
    pub fn from_name(name: &str) -> Self {
        match name {
            "text" => Self::Text,
            "image" => Self::Image,
            "video" => Self::Video,
            "audio" => Self::Audio,
            "document" => Self::Document,
            "sticker" => Self::Sticker,
            "location" => Self::Location,
            "contacts" => Self::Contacts,
            "interactive" => Self::Interactive,
            "button" => Self::Button,
            "reaction" => Self::Reaction,
            "template" => Self::Template,
            other => Self::Other(other.to_owned()),
        }
    }

    /// The name as the platform writes it.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Text => "text",
            Self::Image => "image",
            Self::Video => "video",
            Self::Audio => "audio",
            Self::Document => "document",
            Self::Sticker => "sticker",
            Self::Location => "location",
            Self::Contacts => "contacts",
            Self::Interactive => "interactive",
            Self::Button => "button",
            Self::Reaction => "reaction",
            Self::Template => "template",
            Self::Other(name) => name,
        }
    }
}

impl Serialize for MessageType {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// What an inbound message carries.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum MessageContent {
    /// A text message, from `text` (help) or `body` (developer).
    Text {
        /// The text.
        body: String,
    },
    /// Any other message type. Its type-specific fields are in the message's `extra`.
    Other {
        /// The `type` as sent.
        message_type: MessageType,
        /// A `text` or `body` that came with it (a caption, say).
        text: Option<String>,
    },
}

/// A message a customer sent you (`message.incoming` / `message.received`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct InboundMessage {
    /// `message_id`.
    pub message_id: MessageId,
    /// The customer: `from` (help) or `sender` (developer).
    pub sender: Option<PhoneNumber>,
    /// Your business number: `recipient`, or else `waba_number` (developer).
    pub recipient: Option<PhoneNumber>,
    /// `contact_id`.
    pub contact_id: Option<String>,
    /// `contact_name`.
    pub contact_name: Option<String>,
    /// `whatsapp_account_id`.
    pub whatsapp_account_id: Option<String>,
    /// The text, or the other message type.
    pub content: MessageContent,
    /// Every `data` field not mapped above, as sent.
    pub extra: Map<String, Value>,
}

/// The delivery state a status event reports.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DeliveryStatus {
    /// `sent`
    Sent,
    /// `delivered`
    Delivered,
    /// `read`
    Read,
    /// `failed`
    Failed,
    /// A status this version does not know, as sent.
    Other(String),
}

impl DeliveryStatus {
    fn from_name(name: &str) -> Self {
        match name {
            "sent" => Self::Sent,
            "delivered" => Self::Delivered,
            "read" => Self::Read,
            "failed" => Self::Failed,
            other => Self::Other(other.to_owned()),
        }
    }

    /// The status as the platform writes it.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Sent => "sent",
            Self::Delivered => "delivered",
            Self::Read => "read",
            Self::Failed => "failed",
            Self::Other(name) => name,
        }
    }
}

impl Serialize for DeliveryStatus {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// Why a message failed (`message.failed`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct DeliveryError {
    /// `error_code` (WhatsApp's, for example 131047).
    pub code: Option<i64>,
    /// `error_message`.
    pub message: Option<String>,
}

/// A status update about a message you sent (sent, delivered, read, failed).
///
/// Status events carry the `message_id` of the message they are about, so several of them
/// share one id; the deduplicator keys on the kind as well.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct MessageStatus {
    /// `message_id` of the message this status is about.
    pub message_id: MessageId,
    /// `status`, or, when absent, the status the event name implies.
    pub status: DeliveryStatus,
    /// The customer: `to` (help) or `recipient` (developer).
    pub recipient: Option<PhoneNumber>,
    /// Your business number: `sender`, `from` or `waba_number`.
    pub sender: Option<PhoneNumber>,
    /// For failures: `error_code` and `error_message`.
    pub error: Option<DeliveryError>,
    /// Every `data` field not mapped above, as sent.
    pub extra: Map<String, Value>,
}

/// A contact was created or updated.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Contact {
    /// `id`.
    pub id: String,
    /// `phone_number`.
    pub phone_number: Option<PhoneNumber>,
    /// `name`.
    pub name: Option<String>,
    /// `source` (for example `whatsapp_webhook`).
    pub source: Option<String>,
    /// Every `data` field not mapped above, as sent.
    pub extra: Map<String, Value>,
}

/// A campaign finished sending.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct CampaignCompleted {
    /// `id`.
    pub id: String,
    /// `name`.
    pub name: Option<String>,
    /// `total` recipients.
    pub total: Option<u64>,
    /// `sent`.
    pub sent: Option<u64>,
    /// `delivered`.
    pub delivered: Option<u64>,
    /// `read`.
    pub read: Option<u64>,
    /// `failed`.
    pub failed: Option<u64>,
    /// Every `data` field not mapped above, as sent.
    pub extra: Map<String, Value>,
}

/// A conversation was transferred to an agent or team.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct TransferCreated {
    /// `contact_id`.
    pub contact_id: String,
    /// `from_agent_id`; `None` when the conversation came from no agent (the bot, say).
    pub from_agent_id: Option<String>,
    /// `to_agent_id`.
    pub to_agent_id: Option<String>,
    /// `to_team_id`.
    pub to_team_id: Option<String>,
    /// `notes`.
    pub notes: Option<String>,
    /// Every `data` field not mapped above, as sent.
    pub extra: Map<String, Value>,
}

/// A known event whose `data` does not fit its typed shape.
///
/// Delivered rather than rejected: an error would make the platform retry a payload that can
/// never succeed, and then mark the whole webhook as failing.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Unrecognized {
    /// The event's kind.
    pub kind: EventKind,
    /// `data` as sent (`null` when absent).
    pub data: Value,
    /// Why it did not fit, naming the JSON path.
    pub reason: String,
}

/// An event this version does not know.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct UnknownEvent {
    /// The event name as sent.
    pub name: String,
    /// `data` as sent (`null` when absent).
    pub data: Value,
}

/// The typed content of an event.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Payload {
    /// `message.incoming` / `message.received`.
    Message(InboundMessage),
    /// `message.sent`, `message.delivered`, `message.read`, `message.failed`.
    Status(MessageStatus),
    /// `contact.created`, `contact.updated`.
    Contact(Contact),
    /// `campaign.completed`.
    Campaign(CampaignCompleted),
    /// `transfer.created`.
    Transfer(TransferCreated),
    /// A known event whose `data` did not fit.
    Unrecognized(Unrecognized),
    /// An unknown event.
    Unknown(UnknownEvent),
}

/// One AISoule webhook delivery, parsed.
///
/// Equality compares the parsed content, not the bytes: the same payload sent compact or
/// pretty-printed is the same event. [`Serialize`] writes the JSON exactly as received, so
/// `Event::parse(&serde_json::to_vec(&event)?)` gives back an equal event; serialize
/// [`Event::payload`] for the normalised typed view.
#[derive(Clone)]
pub struct Event {
    kind: EventKind,
    received_as: Cow<'static, str>,
    dialect: Dialect,
    time: EventTime,
    payload: Payload,
    extra: Map<String, Value>,
    raw: Bytes,
}

impl Event {
    /// Parses a request body into an event.
    ///
    /// Parse only bytes whose signature has verified.
    ///
    /// # Errors
    ///
    /// A [`ParseError`] only when the body is not an event at all: not JSON, not an object, no
    /// string `event`, or a repeated `event` or `data.message_id` key. Everything else,
    /// including unknown events, odd timestamps and `data` of an unexpected shape, parses.
    pub fn parse(body: &[u8]) -> Result<Self, ParseError> {
        Self::parse_bytes(Bytes::copy_from_slice(body))
    }

    /// Parses without copying a body the integrations already hold as [`Bytes`].
    pub(crate) fn parse_bytes(raw: Bytes) -> Result<Self, ParseError> {
        parse::parse(raw)
    }

    /// The event's kind; both dialects' names for one event give one kind.
    pub fn kind(&self) -> &EventKind {
        &self.kind
    }

    /// The event name exactly as sent (`message.received`, say).
    pub fn received_as(&self) -> &str {
        &self.received_as
    }

    /// Which payload dialect arrived.
    pub fn dialect(&self) -> Dialect {
        self.dialect
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

    /// The typed content.
    pub fn payload(&self) -> &Payload {
        &self.payload
    }

    /// Top-level fields other than `event`, `timestamp` and `data`, as sent.
    pub fn extra(&self) -> &Map<String, Value> {
        &self.extra
    }

    /// The exact bytes received, for logging raw payloads as the platform's docs advise.
    pub fn raw(&self) -> &Bytes {
        &self.raw
    }

    /// The `message_id` of a message or status event, including an unrecognized one whose
    /// `data` still has a string or integer `message_id`.
    pub fn message_id(&self) -> Option<&str> {
        match &self.payload {
            Payload::Message(m) => Some(m.message_id.as_str()),
            Payload::Status(s) => Some(s.message_id.as_str()),
            Payload::Unrecognized(Unrecognized { data, .. })
            | Payload::Unknown(UnknownEvent { data, .. }) => {
                data.get("message_id").and_then(Value::as_str)
            }
            _ => None,
        }
    }

    /// Who sent the message, or the business number a status came from.
    pub fn sender(&self) -> Option<&PhoneNumber> {
        match &self.payload {
            Payload::Message(m) => m.sender.as_ref(),
            Payload::Status(s) => s.sender.as_ref(),
            _ => None,
        }
    }

    /// The customer's number, whichever way the event goes: the `sender` of an incoming
    /// message, the `recipient` of a status of a message the business sent. This is the
    /// conversation an ordered inbox keeps in sequence.
    pub fn customer(&self) -> Option<&PhoneNumber> {
        match &self.payload {
            Payload::Message(m) => m.sender.as_ref(),
            Payload::Status(s) => s.recipient.as_ref(),
            _ => None,
        }
    }

    /// The text of a text message (or a caption that came with another type).
    pub fn text(&self) -> Option<&str> {
        match &self.payload {
            Payload::Message(InboundMessage {
                content: MessageContent::Text { body },
                ..
            }) => Some(body),
            Payload::Message(InboundMessage {
                content: MessageContent::Other { text, .. },
                ..
            }) => text.as_deref(),
            _ => None,
        }
    }
}

impl PartialEq for Event {
    fn eq(&self, other: &Self) -> bool {
        self.kind == other.kind
            && self.received_as == other.received_as
            && self.dialect == other.dialect
            && self.time == other.time
            && self.payload == other.payload
            && self.extra == other.extra
    }
}

impl fmt::Debug for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Event")
            .field("kind", &self.kind)
            .field("received_as", &self.received_as)
            .field("dialect", &self.dialect)
            .field("time", &self.time)
            .field("payload", &self.payload)
            .field("extra", &self.extra)
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

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
