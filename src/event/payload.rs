//! The typed payloads: borrowed views over an event's raw bytes, read when a handler asks.
//!
//! Each kind's `data` is read by a `#[derive(Deserialize)]` struct ("wire" struct) whose
//! fields are [`Field`]s: present, absent, `null`, or of another JSON type, the states of
//! jsonwebtoken's `TryParse`. A field never fails the read, so a misfit is reported with the
//! field's name as a typed [`PayloadError`], and the event still reaches the handler as
//! [`Payload::Unrecognized`]. Strings borrow from the raw bytes unless the JSON escaped them.
//!
//! The two dialects name some fields differently (`from` and `sender`, `text` and `body`). Each
//! name is its own field, not a serde `alias`, because a payload may carry both, and `alias`
//! would refuse it as a duplicate: the first of a group present and not `null` is the value,
//! and any later one is kept in `extra`.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use serde::Serialize;
use serde::de::{self, Deserialize, DeserializeOwned, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use super::head::from_json;
use super::kind::{DeliveryStatus, EventKind, MessageType};
use super::phone::PhoneNumber;
use crate::error::PayloadError;

/// A platform message id (`wamid.…` or `msg_…`), kept exactly as sent.
///
/// A JSON integer id is kept as its exact decimal text, even above 2^53.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct MessageId<'a>(Cow<'a, str>);

impl MessageId<'_> {
    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for MessageId<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What an inbound message carries.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum MessageContent<'a> {
    /// A text message, from `text` (help) or `body` (developer).
    Text {
        /// The text.
        body: Cow<'a, str>,
    },
    /// Any other message type. Its type-specific fields are in the message's `extra`.
    Other {
        /// The `type` as sent.
        message_type: MessageType,
        /// A `text` or `body` that came with it (a caption, say).
        text: Option<Cow<'a, str>>,
    },
}

/// A message a customer sent you (`message.incoming` / `message.received`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct InboundMessage<'a> {
    /// `message_id`.
    pub message_id: MessageId<'a>,
    /// The customer: `from` (help) or `sender` (developer).
    pub sender: Option<PhoneNumber<'a>>,
    /// Your business number: `recipient`, or else `waba_number` (developer).
    pub recipient: Option<PhoneNumber<'a>>,
    /// `contact_id`.
    pub contact_id: Option<Cow<'a, str>>,
    /// `contact_name`.
    pub contact_name: Option<Cow<'a, str>>,
    /// `whatsapp_account_id`.
    pub whatsapp_account_id: Option<Cow<'a, str>>,
    /// The text, or the other message type.
    pub content: MessageContent<'a>,
    /// Every `data` field not mapped above, as sent.
    pub extra: Map<String, Value>,
}

/// Why a message failed (`message.failed`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct DeliveryError<'a> {
    /// `error_code` (WhatsApp's, for example 131047).
    pub code: Option<i64>,
    /// `error_message`.
    pub message: Option<Cow<'a, str>>,
}

/// A status update about a message you sent (sent, delivered, read, failed).
///
/// Status events carry the `message_id` of the message they are about, so several of them
/// share one id; the deduplicator keys on the kind as well.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct MessageStatus<'a> {
    /// `message_id` of the message this status is about.
    pub message_id: MessageId<'a>,
    /// `status`, or, when absent, the status the event name implies.
    pub status: DeliveryStatus,
    /// The customer: `to` (help) or `recipient` (developer).
    pub recipient: Option<PhoneNumber<'a>>,
    /// Your business number: `sender`, `from` or `waba_number`.
    pub sender: Option<PhoneNumber<'a>>,
    /// For failures: `error_code` and `error_message`.
    pub error: Option<DeliveryError<'a>>,
    /// Every `data` field not mapped above, as sent.
    pub extra: Map<String, Value>,
}

/// A contact was created or updated.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Contact<'a> {
    /// `id`.
    pub id: Cow<'a, str>,
    /// `phone_number`.
    pub phone_number: Option<PhoneNumber<'a>>,
    /// `name`.
    pub name: Option<Cow<'a, str>>,
    /// `source` (for example `whatsapp_webhook`).
    pub source: Option<Cow<'a, str>>,
    /// Every `data` field not mapped above, as sent.
    pub extra: Map<String, Value>,
}

/// A campaign finished sending.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct CampaignCompleted<'a> {
    /// `id`.
    pub id: Cow<'a, str>,
    /// `name`.
    pub name: Option<Cow<'a, str>>,
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
pub struct TransferCreated<'a> {
    /// `contact_id`.
    pub contact_id: Cow<'a, str>,
    /// `from_agent_id`; `None` when the conversation came from no agent (the bot, say).
    pub from_agent_id: Option<Cow<'a, str>>,
    /// `to_agent_id`.
    pub to_agent_id: Option<Cow<'a, str>>,
    /// `to_team_id`.
    pub to_team_id: Option<Cow<'a, str>>,
    /// `notes`.
    pub notes: Option<Cow<'a, str>>,
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
    pub reason: PayloadError,
}

/// An event this version does not know.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct UnknownEvent<'a> {
    /// The event name as sent.
    pub name: Cow<'a, str>,
    /// `data` as sent (`null` when absent).
    pub data: Value,
}

/// The typed content of an event: a view borrowing from [`Event::raw`](super::Event::raw).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Payload<'a> {
    /// `message.incoming` / `message.received`.
    Message(InboundMessage<'a>),
    /// `message.sent`, `message.delivered`, `message.read`, `message.failed`.
    Status(MessageStatus<'a>),
    /// `contact.created`, `contact.updated`.
    Contact(Contact<'a>),
    /// `campaign.completed`.
    Campaign(CampaignCompleted<'a>),
    /// `transfer.created`.
    Transfer(TransferCreated<'a>),
    /// A known event whose `data` did not fit.
    Unrecognized(Unrecognized),
    /// An unknown event.
    Unknown(UnknownEvent<'a>),
}

impl<'a> Payload<'a> {
    /// Reads the typed payload of a body whose head said `kind` and `name`.
    pub(super) fn read(raw: &'a [u8], kind: &EventKind, name: &'a str) -> Self {
        let typed = match kind {
            EventKind::Unknown(_) => {
                return Self::Unknown(UnknownEvent {
                    name: Cow::Borrowed(name),
                    data: data_value(raw),
                });
            }
            EventKind::MessageIncoming => read_data::<InboundWire<'a>>(raw)
                .and_then(InboundWire::into_payload)
                .map(Self::Message),
            EventKind::ContactCreated | EventKind::ContactUpdated => {
                read_data::<ContactWire<'a>>(raw)
                    .and_then(ContactWire::into_payload)
                    .map(Self::Contact)
            }
            EventKind::CampaignCompleted => read_data::<CampaignWire<'a>>(raw)
                .and_then(CampaignWire::into_payload)
                .map(Self::Campaign),
            EventKind::TransferCreated => read_data::<TransferWire<'a>>(raw)
                .and_then(TransferWire::into_payload)
                .map(Self::Transfer),
            status_kind => read_data::<StatusWire<'a>>(raw)
                .and_then(|wire| wire.into_payload(status_kind))
                .map(Self::Status),
        };
        typed.unwrap_or_else(|reason| {
            Self::Unrecognized(Unrecognized {
                kind: kind.clone(),
                data: data_value(raw),
                reason,
            })
        })
    }
}

/// A string owning its text: the `'static` form of a field borrowed from the raw bytes.
fn owned(text: Cow<'_, str>) -> Cow<'static, str> {
    Cow::Owned(text.into_owned())
}

impl MessageId<'_> {
    /// The same id, owning its text.
    pub fn into_owned(self) -> MessageId<'static> {
        MessageId(owned(self.0))
    }
}

impl MessageContent<'_> {
    /// The same content, owning its text.
    pub fn into_owned(self) -> MessageContent<'static> {
        match self {
            Self::Text { body } => MessageContent::Text { body: owned(body) },
            Self::Other { message_type, text } => MessageContent::Other {
                message_type,
                text: text.map(owned),
            },
        }
    }
}

impl<'a> InboundMessage<'a> {
    /// The customer who wrote: the `sender` (`from` in the help dialect).
    pub fn customer(&self) -> Option<&PhoneNumber<'a>> {
        self.sender.as_ref()
    }

    /// The text of a text message, or a caption that came with another type, whichever
    /// dialect's field (`text` or `body`) carried it.
    pub fn text(&self) -> Option<&str> {
        match &self.content {
            MessageContent::Text { body } => Some(body),
            MessageContent::Other { text, .. } => text.as_deref(),
        }
    }

    /// The same message, owning its text, to keep beyond the event it was read from (or to
    /// hand to a task).
    pub fn into_owned(self) -> InboundMessage<'static> {
        InboundMessage {
            message_id: self.message_id.into_owned(),
            sender: self.sender.map(PhoneNumber::into_owned),
            recipient: self.recipient.map(PhoneNumber::into_owned),
            contact_id: self.contact_id.map(owned),
            contact_name: self.contact_name.map(owned),
            whatsapp_account_id: self.whatsapp_account_id.map(owned),
            content: self.content.into_owned(),
            extra: self.extra,
        }
    }
}

impl DeliveryError<'_> {
    /// The same error, owning its text.
    pub fn into_owned(self) -> DeliveryError<'static> {
        DeliveryError {
            code: self.code,
            message: self.message.map(owned),
        }
    }
}

impl<'a> MessageStatus<'a> {
    /// The customer the message went to: the status's `recipient` (`to` in the help dialect).
    pub fn customer(&self) -> Option<&PhoneNumber<'a>> {
        self.recipient.as_ref()
    }

    /// The same status, owning its text.
    pub fn into_owned(self) -> MessageStatus<'static> {
        MessageStatus {
            message_id: self.message_id.into_owned(),
            status: self.status,
            recipient: self.recipient.map(PhoneNumber::into_owned),
            sender: self.sender.map(PhoneNumber::into_owned),
            error: self.error.map(DeliveryError::into_owned),
            extra: self.extra,
        }
    }
}

impl Contact<'_> {
    /// The same contact, owning its text.
    pub fn into_owned(self) -> Contact<'static> {
        Contact {
            id: owned(self.id),
            phone_number: self.phone_number.map(PhoneNumber::into_owned),
            name: self.name.map(owned),
            source: self.source.map(owned),
            extra: self.extra,
        }
    }
}

impl CampaignCompleted<'_> {
    /// The same campaign report, owning its text.
    pub fn into_owned(self) -> CampaignCompleted<'static> {
        CampaignCompleted {
            id: owned(self.id),
            name: self.name.map(owned),
            total: self.total,
            sent: self.sent,
            delivered: self.delivered,
            read: self.read,
            failed: self.failed,
            extra: self.extra,
        }
    }
}

impl TransferCreated<'_> {
    /// The same transfer, owning its text.
    pub fn into_owned(self) -> TransferCreated<'static> {
        TransferCreated {
            contact_id: owned(self.contact_id),
            from_agent_id: self.from_agent_id.map(owned),
            to_agent_id: self.to_agent_id.map(owned),
            to_team_id: self.to_team_id.map(owned),
            notes: self.notes.map(owned),
            extra: self.extra,
        }
    }
}

impl UnknownEvent<'_> {
    /// The same event, owning its name.
    pub fn into_owned(self) -> UnknownEvent<'static> {
        UnknownEvent {
            name: owned(self.name),
            data: self.data,
        }
    }
}

impl Payload<'_> {
    /// The same payload, owning its text: what a typed handler receives, since it may outlive
    /// the request (see [`Dispatcher`](crate::dispatch::Dispatcher)).
    pub fn into_owned(self) -> Payload<'static> {
        match self {
            Self::Message(message) => Payload::Message(message.into_owned()),
            Self::Status(status) => Payload::Status(status.into_owned()),
            Self::Contact(contact) => Payload::Contact(contact.into_owned()),
            Self::Campaign(campaign) => Payload::Campaign(campaign.into_owned()),
            Self::Transfer(transfer) => Payload::Transfer(transfer.into_owned()),
            Self::Unrecognized(unrecognized) => Payload::Unrecognized(unrecognized),
            Self::Unknown(unknown) => Payload::Unknown(unknown.into_owned()),
        }
    }
}

/// `data` as sent, whole (`null` when absent), for payloads kept untyped.
fn data_value(raw: &[u8]) -> Value {
    #[derive(serde::Deserialize)]
    struct DataOnly {
        #[serde(default)]
        data: Value,
    }
    // The head has already read these bytes as a JSON object.
    from_json::<DataOnly>(raw).map_or(Value::Null, |body| body.data)
}

/// Reads a body's `data` into the wire struct `W`.
fn read_data<'a, W: Deserialize<'a>>(raw: &'a [u8]) -> Result<W, PayloadError> {
    #[derive(serde::Deserialize)]
    #[serde(bound = "W: Deserialize<'de>")]
    struct DataOf<W> {
        #[serde(default)]
        data: Data<W>,
    }
    match from_json::<DataOf<W>>(raw) {
        Ok(DataOf {
            data: Data::Object(wire),
        }) => Ok(wire),
        Ok(DataOf {
            data: Data::Missing,
        }) => Err(PayloadError::DataMissing),
        Ok(DataOf {
            data: Data::NotObject(found),
        }) => Err(PayloadError::DataNotObject { found }),
        Err(source) => Err(PayloadError::Unreadable {
            source: source.into(),
        }),
    }
}

/// `data`: an object read as `W`, or the JSON type found instead.
#[derive(Default)]
enum Data<W> {
    #[default]
    Missing,
    NotObject(&'static str),
    Object(W),
}

impl<'de, W: Deserialize<'de>> Deserialize<'de> for Data<W> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct DataVisitor<W>(PhantomData<W>);
        impl<'de, W: Deserialize<'de>> Visitor<'de> for DataVisitor<W> {
            type Value = Data<W>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Data<W>, A::Error> {
                W::deserialize(de::value::MapAccessDeserializer::new(map)).map(Data::Object)
            }
            fn visit_bool<E>(self, _: bool) -> Result<Data<W>, E> {
                Ok(Data::NotObject("a boolean"))
            }
            fn visit_i64<E>(self, _: i64) -> Result<Data<W>, E> {
                Ok(Data::NotObject("a number"))
            }
            fn visit_u64<E>(self, _: u64) -> Result<Data<W>, E> {
                Ok(Data::NotObject("a number"))
            }
            fn visit_f64<E>(self, _: f64) -> Result<Data<W>, E> {
                Ok(Data::NotObject("a number"))
            }
            fn visit_str<E>(self, _: &str) -> Result<Data<W>, E> {
                Ok(Data::NotObject("a string"))
            }
            fn visit_unit<E>(self) -> Result<Data<W>, E> {
                Ok(Data::NotObject("null"))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Data<W>, A::Error> {
                while seq.next_element::<de::IgnoredAny>()?.is_some() {}
                Ok(Data::NotObject("an array"))
            }
        }
        deserializer.deserialize_any(DataVisitor(PhantomData))
    }
}

/// The JSON type of a value, as error messages name it.
pub(super) fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// One `data` field, read without ever failing (jsonwebtoken's `TryParse`).
#[derive(Debug, Default)]
enum Field<T> {
    /// The key is not in `data`.
    #[default]
    Absent,
    /// The key is there with `null`, which counts as absent.
    Null,
    /// The value, of its type.
    Present(T),
    /// A value of another JSON type, kept as sent.
    Misfit(Value),
}

/// A field type: what it accepts, and how it is written back when it is not the one mapped.
trait FieldType<'a>: Sized {
    /// What the field should hold, as error messages say it.
    const EXPECTED: &'static str;
    /// The value for a JSON string, or the string back when it does not fit.
    fn from_text(text: Cow<'a, str>) -> Result<Self, Cow<'a, str>> {
        Err(text)
    }
    /// The value for a JSON integer, if one fits.
    fn from_integer(_: Integer) -> Option<Self> {
        None
    }
    /// The value as sent, for `extra`.
    fn into_value(self) -> Value;
}

/// A JSON integer, signed or not.
#[derive(Debug, Clone, Copy)]
enum Integer {
    Signed(i64),
    Unsigned(u64),
}

impl From<Integer> for Value {
    fn from(integer: Integer) -> Self {
        match integer {
            Integer::Signed(n) => n.into(),
            Integer::Unsigned(n) => n.into(),
        }
    }
}

/// A string.
#[derive(Debug)]
struct Text<'a>(Cow<'a, str>);

impl<'a> FieldType<'a> for Text<'a> {
    const EXPECTED: &'static str = "a string";
    fn from_text(text: Cow<'a, str>) -> Result<Self, Cow<'a, str>> {
        Ok(Self(text))
    }
    fn into_value(self) -> Value {
        Value::String(self.0.into_owned())
    }
}

/// A string, or an integer kept as its exact digits.
#[derive(Debug)]
struct Id<'a> {
    text: Cow<'a, str>,
    sent_as: Option<Integer>,
}

impl<'a> FieldType<'a> for Id<'a> {
    const EXPECTED: &'static str = "a string or an integer";
    fn from_text(text: Cow<'a, str>) -> Result<Self, Cow<'a, str>> {
        Ok(Self {
            text,
            sent_as: None,
        })
    }
    fn from_integer(integer: Integer) -> Option<Self> {
        let text = match integer {
            Integer::Signed(n) => n.to_string(),
            Integer::Unsigned(n) => n.to_string(),
        };
        Some(Self {
            text: Cow::Owned(text),
            sent_as: Some(integer),
        })
    }
    fn into_value(self) -> Value {
        match self.sent_as {
            Some(integer) => integer.into(),
            None => Value::String(self.text.into_owned()),
        }
    }
}

/// A phone number: a string, or an integer.
#[derive(Debug)]
struct Phone<'a>(Id<'a>);

impl<'a> FieldType<'a> for Phone<'a> {
    const EXPECTED: &'static str = "a phone number string";
    fn from_text(text: Cow<'a, str>) -> Result<Self, Cow<'a, str>> {
        Id::from_text(text).map(Self)
    }
    fn from_integer(integer: Integer) -> Option<Self> {
        Id::from_integer(integer).map(Self)
    }
    fn into_value(self) -> Value {
        self.0.into_value()
    }
}

/// A non-negative integer.
#[derive(Debug)]
struct Count(u64);

impl FieldType<'_> for Count {
    const EXPECTED: &'static str = "a non-negative integer";
    fn from_integer(integer: Integer) -> Option<Self> {
        match integer {
            Integer::Unsigned(n) => Some(Self(n)),
            Integer::Signed(n) => u64::try_from(n).ok().map(Self),
        }
    }
    fn into_value(self) -> Value {
        self.0.into()
    }
}

/// An integer, or a string of one (WhatsApp's error codes arrive both ways).
#[derive(Debug)]
struct Code {
    code: i64,
    sent_as_text: bool,
}

impl<'a> FieldType<'a> for Code {
    const EXPECTED: &'static str = "an integer";
    fn from_text(text: Cow<'a, str>) -> Result<Self, Cow<'a, str>> {
        match text.parse() {
            Ok(code) => Ok(Self {
                code,
                sent_as_text: true,
            }),
            Err(_) => Err(text),
        }
    }
    fn from_integer(integer: Integer) -> Option<Self> {
        match integer {
            Integer::Signed(code) => Some(Self {
                code,
                sent_as_text: false,
            }),
            Integer::Unsigned(n) => i64::try_from(n).ok().map(|code| Self {
                code,
                sent_as_text: false,
            }),
        }
    }
    fn into_value(self) -> Value {
        if self.sent_as_text {
            Value::String(self.code.to_string())
        } else {
            self.code.into()
        }
    }
}

impl<'de: 'a, 'a, T: FieldType<'a>> Deserialize<'de> for Field<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct FieldVisitor<'a, T>(PhantomData<(&'a (), T)>);

        impl<'a, T: FieldType<'a>> FieldVisitor<'a, T> {
            fn text<E>(text: Cow<'a, str>) -> Result<Field<T>, E> {
                Ok(match T::from_text(text) {
                    Ok(value) => Field::Present(value),
                    Err(text) => Field::Misfit(Value::String(text.into_owned())),
                })
            }
            fn integer<E>(integer: Integer) -> Result<Field<T>, E> {
                Ok(match T::from_integer(integer) {
                    Some(value) => Field::Present(value),
                    None => Field::Misfit(integer.into()),
                })
            }
        }

        impl<'de: 'a, 'a, T: FieldType<'a>> Visitor<'de> for FieldVisitor<'a, T> {
            type Value = Field<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(T::EXPECTED)
            }
            fn visit_borrowed_str<E>(self, text: &'de str) -> Result<Field<T>, E> {
                Self::text(Cow::Borrowed(text))
            }
            fn visit_str<E>(self, text: &str) -> Result<Field<T>, E> {
                Self::text(Cow::Owned(text.to_owned()))
            }
            fn visit_string<E>(self, text: String) -> Result<Field<T>, E> {
                Self::text(Cow::Owned(text))
            }
            fn visit_i64<E>(self, n: i64) -> Result<Field<T>, E> {
                Self::integer(Integer::Signed(n))
            }
            fn visit_u64<E>(self, n: u64) -> Result<Field<T>, E> {
                Self::integer(Integer::Unsigned(n))
            }
            fn visit_f64<E>(self, n: f64) -> Result<Field<T>, E> {
                Ok(Field::Misfit(Value::from(n)))
            }
            fn visit_bool<E>(self, b: bool) -> Result<Field<T>, E> {
                Ok(Field::Misfit(Value::Bool(b)))
            }
            fn visit_unit<E>(self) -> Result<Field<T>, E> {
                Ok(Field::Null)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Field<T>, A::Error> {
                Value::deserialize(de::value::SeqAccessDeserializer::new(seq)).map(Field::Misfit)
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Field<T>, A::Error> {
                Value::deserialize(de::value::MapAccessDeserializer::new(map)).map(Field::Misfit)
            }
        }

        deserializer.deserialize_any(FieldVisitor(PhantomData))
    }
}

/// The first field of a group (one meaning, several names) present and not `null`.
///
/// The ones before it are absent or `null` and are dropped; the ones after it were not mapped,
/// so they go to `extra` as sent.
fn first_of<'a, T: FieldType<'a>, const N: usize>(
    group: [(&'static str, Field<T>); N],
    extra: &mut Map<String, Value>,
) -> Result<Option<T>, PayloadError> {
    let mut chosen = None;
    for (name, field) in group {
        match (chosen.is_some(), field) {
            (_, Field::Absent) => {}
            (false, Field::Null) => {}
            (false, Field::Present(value)) => chosen = Some(value),
            (false, Field::Misfit(value)) => {
                return Err(PayloadError::WrongType {
                    field: name,
                    expected: T::EXPECTED,
                    found: json_type(&value),
                });
            }
            (true, Field::Null) => {
                extra.insert(name.to_owned(), Value::Null);
            }
            (true, Field::Present(value)) => {
                extra.insert(name.to_owned(), value.into_value());
            }
            (true, Field::Misfit(value)) => {
                extra.insert(name.to_owned(), value);
            }
        }
    }
    Ok(chosen)
}

/// A field with one name.
fn one<'a, T: FieldType<'a>>(
    name: &'static str,
    field: Field<T>,
) -> Result<Option<T>, PayloadError> {
    first_of([(name, field)], &mut Map::new())
}

/// A field the payload cannot do without: an id, present and not empty.
fn required_id<'a>(name: &'static str, field: Field<Id<'a>>) -> Result<Cow<'a, str>, PayloadError> {
    match one(name, field)? {
        None => Err(PayloadError::Missing { field: name }),
        Some(id) if id.text.is_empty() => Err(PayloadError::Empty { field: name }),
        Some(id) => Ok(id.text),
    }
}

fn phone(field: Option<Phone<'_>>) -> Option<PhoneNumber<'_>> {
    field.map(|Phone(id)| PhoneNumber::new(id.text))
}

fn id(field: Option<Id<'_>>) -> Option<Cow<'_, str>> {
    field.map(|id| id.text)
}

fn text(field: Option<Text<'_>>) -> Option<Cow<'_, str>> {
    field.map(|Text(text)| text)
}

fn count(field: Option<Count>) -> Option<u64> {
    field.map(|Count(n)| n)
}

/// `message.incoming` / `message.received` as sent, in both dialects' names.
#[derive(serde::Deserialize)]
struct InboundWire<'a> {
    #[serde(default, borrow)]
    message_id: Field<Id<'a>>,
    #[serde(default, borrow)]
    from: Field<Phone<'a>>,
    #[serde(default, borrow)]
    sender: Field<Phone<'a>>,
    #[serde(default, borrow)]
    recipient: Field<Phone<'a>>,
    #[serde(default, borrow)]
    waba_number: Field<Phone<'a>>,
    #[serde(default, borrow)]
    contact_id: Field<Id<'a>>,
    #[serde(default, borrow)]
    contact_name: Field<Text<'a>>,
    #[serde(default, borrow)]
    whatsapp_account_id: Field<Id<'a>>,
    #[serde(default, borrow, rename = "type")]
    message_type: Field<Text<'a>>,
    #[serde(default, borrow)]
    text: Field<Text<'a>>,
    #[serde(default, borrow)]
    body: Field<Text<'a>>,
    #[serde(flatten)]
    extra: Map<String, Value>,
}

impl<'a> InboundWire<'a> {
    fn into_payload(self) -> Result<InboundMessage<'a>, PayloadError> {
        let mut extra = self.extra;
        let message_id = MessageId(required_id("message_id", self.message_id)?);
        let sender = phone(first_of(
            [("from", self.from), ("sender", self.sender)],
            &mut extra,
        )?);
        let recipient = phone(first_of(
            [
                ("recipient", self.recipient),
                ("waba_number", self.waba_number),
            ],
            &mut extra,
        )?);
        let contact_id = id(one("contact_id", self.contact_id)?);
        let contact_name = text(one("contact_name", self.contact_name)?);
        let whatsapp_account_id = id(one("whatsapp_account_id", self.whatsapp_account_id)?);
        let message_type = text(one("type", self.message_type)?);
        let text = text(first_of(
            [("text", self.text), ("body", self.body)],
            &mut extra,
        )?);
        let content = match (message_type, text) {
            (Some(t), text) if t != "text" => MessageContent::Other {
                message_type: MessageType::from_name(&t),
                text,
            },
            (Some(_), None) => return Err(PayloadError::TextMissing),
            (None, None) => return Err(PayloadError::TypeMissing),
            (_, Some(body)) => MessageContent::Text { body },
        };
        Ok(InboundMessage {
            message_id,
            sender,
            recipient,
            contact_id,
            contact_name,
            whatsapp_account_id,
            content,
            extra,
        })
    }
}

/// A status event as sent, in both dialects' names.
#[derive(serde::Deserialize)]
struct StatusWire<'a> {
    #[serde(default, borrow)]
    message_id: Field<Id<'a>>,
    #[serde(default, borrow)]
    to: Field<Phone<'a>>,
    #[serde(default, borrow)]
    recipient: Field<Phone<'a>>,
    #[serde(default, borrow)]
    sender: Field<Phone<'a>>,
    #[serde(default, borrow)]
    from: Field<Phone<'a>>,
    #[serde(default, borrow)]
    waba_number: Field<Phone<'a>>,
    #[serde(default, borrow)]
    status: Field<Text<'a>>,
    #[serde(default)]
    error_code: Field<Code>,
    #[serde(default, borrow)]
    error_message: Field<Text<'a>>,
    #[serde(flatten)]
    extra: Map<String, Value>,
}

impl<'a> StatusWire<'a> {
    fn into_payload(self, kind: &EventKind) -> Result<MessageStatus<'a>, PayloadError> {
        let mut extra = self.extra;
        let message_id = MessageId(required_id("message_id", self.message_id)?);
        let recipient = phone(first_of(
            [("to", self.to), ("recipient", self.recipient)],
            &mut extra,
        )?);
        let sender = phone(first_of(
            [
                ("sender", self.sender),
                ("from", self.from),
                ("waba_number", self.waba_number),
            ],
            &mut extra,
        )?);
        let status = match text(one("status", self.status)?) {
            Some(status) => DeliveryStatus::from_name(&status),
            None => DeliveryStatus::implied_by(kind),
        };
        let code = one("error_code", self.error_code)?.map(|c| c.code);
        let message = text(one("error_message", self.error_message)?);
        let error =
            (code.is_some() || message.is_some()).then_some(DeliveryError { code, message });
        Ok(MessageStatus {
            message_id,
            status,
            recipient,
            sender,
            error,
            extra,
        })
    }
}

/// `contact.created` / `contact.updated` as sent.
#[derive(serde::Deserialize)]
struct ContactWire<'a> {
    #[serde(default, borrow)]
    id: Field<Id<'a>>,
    #[serde(default, borrow)]
    phone_number: Field<Phone<'a>>,
    #[serde(default, borrow)]
    name: Field<Text<'a>>,
    #[serde(default, borrow)]
    source: Field<Text<'a>>,
    #[serde(flatten)]
    extra: Map<String, Value>,
}

impl<'a> ContactWire<'a> {
    fn into_payload(self) -> Result<Contact<'a>, PayloadError> {
        Ok(Contact {
            id: required_id("id", self.id)?,
            phone_number: phone(one("phone_number", self.phone_number)?),
            name: text(one("name", self.name)?),
            source: text(one("source", self.source)?),
            extra: self.extra,
        })
    }
}

/// `campaign.completed` as sent.
#[derive(serde::Deserialize)]
struct CampaignWire<'a> {
    #[serde(default, borrow)]
    id: Field<Id<'a>>,
    #[serde(default, borrow)]
    name: Field<Text<'a>>,
    #[serde(default)]
    total: Field<Count>,
    #[serde(default)]
    sent: Field<Count>,
    #[serde(default)]
    delivered: Field<Count>,
    #[serde(default)]
    read: Field<Count>,
    #[serde(default)]
    failed: Field<Count>,
    #[serde(flatten)]
    extra: Map<String, Value>,
}

impl<'a> CampaignWire<'a> {
    fn into_payload(self) -> Result<CampaignCompleted<'a>, PayloadError> {
        Ok(CampaignCompleted {
            id: required_id("id", self.id)?,
            name: text(one("name", self.name)?),
            total: count(one("total", self.total)?),
            sent: count(one("sent", self.sent)?),
            delivered: count(one("delivered", self.delivered)?),
            read: count(one("read", self.read)?),
            failed: count(one("failed", self.failed)?),
            extra: self.extra,
        })
    }
}

/// `transfer.created` as sent.
#[derive(serde::Deserialize)]
struct TransferWire<'a> {
    #[serde(default, borrow)]
    contact_id: Field<Id<'a>>,
    #[serde(default, borrow)]
    from_agent_id: Field<Id<'a>>,
    #[serde(default, borrow)]
    to_agent_id: Field<Id<'a>>,
    #[serde(default, borrow)]
    to_team_id: Field<Id<'a>>,
    #[serde(default, borrow)]
    notes: Field<Text<'a>>,
    #[serde(flatten)]
    extra: Map<String, Value>,
}

impl<'a> TransferWire<'a> {
    fn into_payload(self) -> Result<TransferCreated<'a>, PayloadError> {
        Ok(TransferCreated {
            contact_id: required_id("contact_id", self.contact_id)?,
            from_agent_id: id(one("from_agent_id", self.from_agent_id)?),
            to_agent_id: id(one("to_agent_id", self.to_agent_id)?),
            to_team_id: id(one("to_team_id", self.to_team_id)?),
            notes: text(one("notes", self.notes)?),
            extra: self.extra,
        })
    }
}

/// Which dialects' markers `data` carries, for the dialect rule.
#[derive(Default)]
pub(super) struct Markers {
    pub(super) help: bool,
    pub(super) developer: bool,
}

impl Markers {
    /// The markers in a body's `data` keys (`null` values count: the key is the marker).
    pub(super) fn read(raw: &[u8]) -> Self {
        #[derive(Default, serde::Deserialize)]
        #[serde(default)]
        struct Keys {
            from: Present,
            to: Present,
            text: Present,
            whatsapp_account_id: Present,
            sender: Present,
            recipient: Present,
            body: Present,
            waba_number: Present,
        }
        match read_data::<Keys>(raw) {
            Ok(keys) => Self {
                help: keys.from.0 || keys.to.0 || keys.text.0 || keys.whatsapp_account_id.0,
                developer: keys.sender.0 || keys.recipient.0 || keys.body.0 || keys.waba_number.0,
            },
            Err(_) => Self::default(),
        }
    }
}

/// A key that is there, whatever its value.
#[derive(Default)]
struct Present(bool);

impl<'de> Deserialize<'de> for Present {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        de::IgnoredAny::deserialize(deserializer).map(|_| Self(true))
    }
}

/// Top-level fields other than `event`, `timestamp` and `data`, as sent.
pub(super) fn top_level_extra(raw: &[u8]) -> Map<String, Value> {
    #[derive(serde::Deserialize)]
    struct Top {
        #[serde(default, rename = "event")]
        _event: Option<de::IgnoredAny>,
        #[serde(default, rename = "timestamp")]
        _timestamp: Option<de::IgnoredAny>,
        #[serde(default, rename = "data")]
        _data: Option<de::IgnoredAny>,
        #[serde(flatten)]
        extra: Map<String, Value>,
    }
    read_whole::<Top>(raw).map_or_else(Map::new, |top| top.extra)
}

/// A body already read by the head, read again as `T`.
fn read_whole<T: DeserializeOwned>(raw: &[u8]) -> Option<T> {
    from_json(raw).ok()
}
