//! The parser behind [`Event::parse`](super::Event::parse): one pass over the JSON into fixed
//! slots, then typed payloads built by moving, not copying, each string.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use bytes::Bytes;

use crate::error::ParseError;

use super::{
    CampaignCompleted, Contact, DeliveryError, DeliveryStatus, Dialect, Event, EventKind,
    EventTime, InboundMessage, MessageContent, MessageId, MessageStatus, MessageType, Payload,
    PhoneNumber, TransferCreated, UnknownEvent, Unrecognized, is_integer_text, json_type,
};

/// Parses a body into an event: see [`Event::parse`](super::Event::parse).
pub(super) fn parse(raw: Bytes) -> Result<Event, ParseError> {
    let envelope: Envelope = serde_json::from_slice(&raw).map_err(|e| ParseError::NotJson {
        reason: e.to_string(),
    })?;
    let Envelope {
        not_object,
        event,
        duplicate,
        timestamp,
        data,
        extra,
    } = envelope;
    if let Some(found) = not_object {
        return Err(ParseError::NotAnObject { found });
    }
    if let Some(path) = duplicate {
        return Err(ParseError::DuplicateKey { path });
    }
    let received_as = match event {
        None => return Err(ParseError::MissingEvent),
        Some(EventField::Name(name)) => name,
        Some(EventField::NotString(found)) => return Err(ParseError::EventNotString { found }),
    };
    let kind = EventKind::from_name(&received_as);
    let (time, shape) = match timestamp {
        Some(TimestampField { time, shape }) => (time, Some(shape)),
        None => (EventTime::Absent, None),
    };
    let dialect = detect_dialect(&received_as, shape, data.as_ref());
    let payload = typed_payload(&kind, &received_as, data);
    Ok(Event {
        kind,
        received_as,
        dialect,
        time,
        payload,
        extra,
        raw,
    })
}

fn detect_dialect(
    name: &str,
    timestamp: Option<TimestampShape>,
    data: Option<&DataValue>,
) -> Dialect {
    const HELP_SLOTS: [usize; 4] = [slot::FROM, slot::TO, slot::TEXT, slot::WHATSAPP_ACCOUNT_ID];
    const DEVELOPER_SLOTS: [usize; 4] =
        [slot::SENDER, slot::RECIPIENT, slot::BODY, slot::WABA_NUMBER];
    let object = match data {
        Some(DataValue::Object(object)) => Some(object),
        _ => None,
    };
    let has_any =
        |slots: &[usize]| object.is_some_and(|o| slots.iter().any(|&i| o.slots[i].is_some()));
    let help = name == "message.incoming"
        || timestamp == Some(TimestampShape::Text)
        || has_any(&HELP_SLOTS);
    let developer = name == "message.received"
        || matches!(
            timestamp,
            Some(TimestampShape::Number | TimestampShape::IntegerText)
        )
        || has_any(&DEVELOPER_SLOTS);
    match (help, developer) {
        (true, false) => Dialect::Help,
        (false, true) => Dialect::Developer,
        (true, true) => Dialect::Mixed,
        (false, false) => Dialect::Undetermined,
    }
}

fn typed_payload(kind: &EventKind, received_as: &str, data: Option<DataValue>) -> Payload {
    if let EventKind::Unknown(_) = kind {
        return Payload::Unknown(UnknownEvent {
            name: received_as.to_owned(),
            data: data.map_or(Value::Null, DataValue::into_value),
        });
    }
    let (data, reason) = match data {
        Some(DataValue::Object(object)) => return typed_object(kind, object),
        Some(DataValue::Other(value)) => {
            let reason = format!("$.data: expected an object, found {}", json_type(&value));
            (value, reason)
        }
        None => (Value::Null, "$.data: missing".to_owned()),
    };
    Payload::Unrecognized(Unrecognized {
        kind: kind.clone(),
        data,
        reason,
    })
}

/// A known event's `data` object, as its typed payload if it fits.
fn typed_object(kind: &EventKind, mut object: Box<DataObject>) -> Payload {
    let specs = specs_for(kind);
    // Check everything before moving anything, so a misfit keeps its data whole.
    if let Err(reason) = check(&object.slots, specs, kind) {
        return Payload::Unrecognized(Unrecognized {
            kind: kind.clone(),
            data: object.into_value(),
            reason,
        });
    }
    let slots = &mut object.slots;
    let mut payload = match kind {
        EventKind::MessageIncoming => Payload::Message(inbound_message(slots)),
        EventKind::ContactCreated | EventKind::ContactUpdated => Payload::Contact(contact(slots)),
        EventKind::CampaignCompleted => Payload::Campaign(campaign(slots)),
        EventKind::TransferCreated => Payload::Transfer(transfer(slots)),
        status_kind => Payload::Status(message_status(slots, status_kind)),
    };
    let extra = object.leftovers();
    match &mut payload {
        Payload::Message(p) => p.extra = extra,
        Payload::Status(p) => p.extra = extra,
        Payload::Contact(p) => p.extra = extra,
        Payload::Campaign(p) => p.extra = extra,
        Payload::Transfer(p) => p.extra = extra,
        Payload::Unrecognized(_) | Payload::Unknown(_) => {}
    }
    payload
}

/// The `data` keys the typed payloads map, each read straight into its own slot.
mod slot {
    pub(super) const MESSAGE_ID: usize = 0;
    pub(super) const FROM: usize = 1;
    pub(super) const SENDER: usize = 2;
    pub(super) const TO: usize = 3;
    pub(super) const RECIPIENT: usize = 4;
    pub(super) const WABA_NUMBER: usize = 5;
    pub(super) const CONTACT_ID: usize = 6;
    pub(super) const CONTACT_NAME: usize = 7;
    pub(super) const WHATSAPP_ACCOUNT_ID: usize = 8;
    pub(super) const TYPE: usize = 9;
    pub(super) const TEXT: usize = 10;
    pub(super) const BODY: usize = 11;
    pub(super) const STATUS: usize = 12;
    pub(super) const ERROR_CODE: usize = 13;
    pub(super) const ERROR_MESSAGE: usize = 14;
    pub(super) const ID: usize = 15;
    pub(super) const PHONE_NUMBER: usize = 16;
    pub(super) const NAME: usize = 17;
    pub(super) const SOURCE: usize = 18;
    pub(super) const TOTAL: usize = 19;
    pub(super) const SENT: usize = 20;
    pub(super) const DELIVERED: usize = 21;
    pub(super) const READ: usize = 22;
    pub(super) const FAILED: usize = 23;
    pub(super) const FROM_AGENT_ID: usize = 24;
    pub(super) const TO_AGENT_ID: usize = 25;
    pub(super) const TO_TEAM_ID: usize = 26;
    pub(super) const NOTES: usize = 27;
    pub(super) const COUNT: usize = 28;

    pub(super) const NAMES: [&str; COUNT] = [
        "message_id",
        "from",
        "sender",
        "to",
        "recipient",
        "waba_number",
        "contact_id",
        "contact_name",
        "whatsapp_account_id",
        "type",
        "text",
        "body",
        "status",
        "error_code",
        "error_message",
        "id",
        "phone_number",
        "name",
        "source",
        "total",
        "sent",
        "delivered",
        "read",
        "failed",
        "from_agent_id",
        "to_agent_id",
        "to_team_id",
        "notes",
    ];

    pub(super) fn of(key: &str) -> Option<usize> {
        // A match compiles to a dispatch on length and bytes; a scan of NAMES would compare
        // every key with every name.
        Some(match key {
            "message_id" => MESSAGE_ID,
            "from" => FROM,
            "sender" => SENDER,
            "to" => TO,
            "recipient" => RECIPIENT,
            "waba_number" => WABA_NUMBER,
            "contact_id" => CONTACT_ID,
            "contact_name" => CONTACT_NAME,
            "whatsapp_account_id" => WHATSAPP_ACCOUNT_ID,
            "type" => TYPE,
            "text" => TEXT,
            "body" => BODY,
            "status" => STATUS,
            "error_code" => ERROR_CODE,
            "error_message" => ERROR_MESSAGE,
            "id" => ID,
            "phone_number" => PHONE_NUMBER,
            "name" => NAME,
            "source" => SOURCE,
            "total" => TOTAL,
            "sent" => SENT,
            "delivered" => DELIVERED,
            "read" => READ,
            "failed" => FAILED,
            "from_agent_id" => FROM_AGENT_ID,
            "to_agent_id" => TO_AGENT_ID,
            "to_team_id" => TO_TEAM_ID,
            "notes" => NOTES,
            _ => return None,
        })
    }
}

type Slots = [Option<Value>; slot::COUNT];

/// How a mapped field is read.
#[derive(Clone, Copy)]
enum FieldType {
    /// A string.
    Text,
    /// A string, or an integer kept as its exact digits.
    Id,
    /// A phone number: a string or an integer.
    Phone,
    /// A non-negative integer.
    Count,
    /// An integer, or a string of one.
    Code,
}

/// One typed field: the first of `slots` that is present and not null, read as `ty`.
struct FieldSpec {
    slots: &'static [usize],
    ty: FieldType,
    required: bool,
}

const fn field(slots: &'static [usize], ty: FieldType) -> FieldSpec {
    FieldSpec {
        slots,
        ty,
        required: false,
    }
}

const fn required(slots: &'static [usize], ty: FieldType) -> FieldSpec {
    FieldSpec {
        slots,
        ty,
        required: true,
    }
}

mod spec {
    use super::FieldType::{Code, Count, Id, Phone, Text};
    use super::{FieldSpec, field, required, slot};

    pub(super) const MESSAGE_ID: FieldSpec = required(&[slot::MESSAGE_ID], Id);
    pub(super) const CUSTOMER: FieldSpec = field(&[slot::FROM, slot::SENDER], Phone);
    pub(super) const BUSINESS: FieldSpec = field(&[slot::RECIPIENT, slot::WABA_NUMBER], Phone);
    pub(super) const CONTACT_ID: FieldSpec = field(&[slot::CONTACT_ID], Id);
    pub(super) const CONTACT_NAME: FieldSpec = field(&[slot::CONTACT_NAME], Text);
    pub(super) const WHATSAPP_ACCOUNT_ID: FieldSpec = field(&[slot::WHATSAPP_ACCOUNT_ID], Id);
    pub(super) const TYPE: FieldSpec = field(&[slot::TYPE], Text);
    pub(super) const TEXT: FieldSpec = field(&[slot::TEXT, slot::BODY], Text);
    pub(super) const INBOUND: [FieldSpec; 8] = [
        MESSAGE_ID,
        CUSTOMER,
        BUSINESS,
        CONTACT_ID,
        CONTACT_NAME,
        WHATSAPP_ACCOUNT_ID,
        TYPE,
        TEXT,
    ];

    pub(super) const STATUS_RECIPIENT: FieldSpec = field(&[slot::TO, slot::RECIPIENT], Phone);
    pub(super) const STATUS_SENDER: FieldSpec =
        field(&[slot::SENDER, slot::FROM, slot::WABA_NUMBER], Phone);
    pub(super) const STATUS: FieldSpec = field(&[slot::STATUS], Text);
    pub(super) const ERROR_CODE: FieldSpec = field(&[slot::ERROR_CODE], Code);
    pub(super) const ERROR_MESSAGE: FieldSpec = field(&[slot::ERROR_MESSAGE], Text);
    pub(super) const MESSAGE_STATUS: [FieldSpec; 6] = [
        MESSAGE_ID,
        STATUS_RECIPIENT,
        STATUS_SENDER,
        STATUS,
        ERROR_CODE,
        ERROR_MESSAGE,
    ];

    pub(super) const ID: FieldSpec = required(&[slot::ID], Id);
    pub(super) const PHONE_NUMBER: FieldSpec = field(&[slot::PHONE_NUMBER], Phone);
    pub(super) const NAME: FieldSpec = field(&[slot::NAME], Text);
    pub(super) const SOURCE: FieldSpec = field(&[slot::SOURCE], Text);
    pub(super) const CONTACT: [FieldSpec; 4] = [ID, PHONE_NUMBER, NAME, SOURCE];

    pub(super) const TOTAL: FieldSpec = field(&[slot::TOTAL], Count);
    pub(super) const SENT: FieldSpec = field(&[slot::SENT], Count);
    pub(super) const DELIVERED: FieldSpec = field(&[slot::DELIVERED], Count);
    pub(super) const READ: FieldSpec = field(&[slot::READ], Count);
    pub(super) const FAILED: FieldSpec = field(&[slot::FAILED], Count);
    pub(super) const CAMPAIGN: [FieldSpec; 7] = [ID, NAME, TOTAL, SENT, DELIVERED, READ, FAILED];

    pub(super) const TRANSFER_CONTACT_ID: FieldSpec = required(&[slot::CONTACT_ID], Id);
    pub(super) const FROM_AGENT_ID: FieldSpec = field(&[slot::FROM_AGENT_ID], Id);
    pub(super) const TO_AGENT_ID: FieldSpec = field(&[slot::TO_AGENT_ID], Id);
    pub(super) const TO_TEAM_ID: FieldSpec = field(&[slot::TO_TEAM_ID], Id);
    pub(super) const NOTES: FieldSpec = field(&[slot::NOTES], Text);
    pub(super) const TRANSFER: [FieldSpec; 5] = [
        TRANSFER_CONTACT_ID,
        FROM_AGENT_ID,
        TO_AGENT_ID,
        TO_TEAM_ID,
        NOTES,
    ];
}

fn specs_for(kind: &EventKind) -> &'static [FieldSpec] {
    match kind {
        EventKind::MessageIncoming => &spec::INBOUND,
        EventKind::ContactCreated | EventKind::ContactUpdated => &spec::CONTACT,
        EventKind::CampaignCompleted => &spec::CAMPAIGN,
        EventKind::TransferCreated => &spec::TRANSFER,
        _ => &spec::MESSAGE_STATUS,
    }
}

/// The slot a field is read from: the first of its slots present and not null.
fn chosen(slots: &Slots, field: &FieldSpec) -> Option<usize> {
    field
        .slots
        .iter()
        .copied()
        .find(|&i| !matches!(slots[i], None | Some(Value::Null)))
}

fn fits(value: &Value, ty: FieldType) -> bool {
    match ty {
        FieldType::Text => value.is_string(),
        FieldType::Id | FieldType::Phone => value.is_string() || value.is_i64() || value.is_u64(),
        FieldType::Count => value.is_u64(),
        FieldType::Code => match value {
            Value::String(s) => s.parse::<i64>().is_ok(),
            other => other.is_i64(),
        },
    }
}

fn expected(ty: FieldType) -> &'static str {
    match ty {
        FieldType::Text => "a string",
        FieldType::Id => "a string or an integer",
        FieldType::Phone => "a phone number string",
        FieldType::Count => "a non-negative integer",
        FieldType::Code => "an integer",
    }
}

/// Whether the slots fit `specs`, and why not.
fn check(slots: &Slots, specs: &[FieldSpec], kind: &EventKind) -> Result<(), String> {
    for field in specs {
        if let Some(i) = chosen(slots, field)
            && let Some(value) = &slots[i]
            && !fits(value, field.ty)
        {
            return Err(format!(
                "$.data.{}: expected {}, found {}",
                slot::NAMES[i],
                expected(field.ty),
                json_type(value)
            ));
        }
        if field.required {
            match chosen(slots, field).and_then(|i| slots[i].as_ref()) {
                None => return Err(format!("$.data.{}: missing", slot::NAMES[field.slots[0]])),
                Some(Value::String(s)) if s.is_empty() => {
                    return Err(format!("$.data.{}: empty", slot::NAMES[field.slots[0]]));
                }
                Some(_) => {}
            }
        }
    }
    if *kind == EventKind::MessageIncoming {
        let message_type = chosen(slots, &spec::TYPE).and_then(|i| slots[i].as_ref()?.as_str());
        let has_text = chosen(slots, &spec::TEXT).is_some();
        match (message_type, has_text) {
            (Some("text"), false) => return Err("$.data.text: missing for a text message".into()),
            (None, false) => return Err("$.data.type: missing, and no text or body".into()),
            _ => {}
        }
    }
    Ok(())
}

/// Moves a checked field's value out, marking it and the nulls before it as mapped.
fn take(slots: &mut Slots, field: &FieldSpec) -> Option<Value> {
    for &i in field.slots {
        match slots[i].take() {
            None => {}
            Some(Value::Null) => {}
            Some(value) => return Some(value),
        }
    }
    None
}

fn take_text(slots: &mut Slots, field: &FieldSpec) -> Option<String> {
    match take(slots, field)? {
        Value::String(s) => Some(s),
        _ => None,
    }
}

fn take_id(slots: &mut Slots, field: &FieldSpec) -> Option<String> {
    match take(slots, field)? {
        Value::String(s) => Some(s),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn take_phone(slots: &mut Slots, field: &FieldSpec) -> Option<PhoneNumber> {
    take_id(slots, field).map(PhoneNumber::new)
}

fn take_count(slots: &mut Slots, field: &FieldSpec) -> Option<u64> {
    take(slots, field)?.as_u64()
}

fn take_code(slots: &mut Slots, field: &FieldSpec) -> Option<i64> {
    match take(slots, field)? {
        Value::String(s) => s.parse().ok(),
        other => other.as_i64(),
    }
}

fn inbound_message(slots: &mut Slots) -> InboundMessage {
    let message_id = MessageId(take_id(slots, &spec::MESSAGE_ID).unwrap_or_default());
    let sender = take_phone(slots, &spec::CUSTOMER);
    let recipient = take_phone(slots, &spec::BUSINESS);
    let contact_id = take_id(slots, &spec::CONTACT_ID);
    let contact_name = take_text(slots, &spec::CONTACT_NAME);
    let whatsapp_account_id = take_id(slots, &spec::WHATSAPP_ACCOUNT_ID);
    let message_type = take_text(slots, &spec::TYPE);
    let text = take_text(slots, &spec::TEXT);
    let content = match (message_type, text) {
        (Some(t), text) if t != "text" => MessageContent::Other {
            message_type: MessageType::from_name(&t),
            text,
        },
        (_, text) => MessageContent::Text {
            body: text.unwrap_or_default(),
        },
    };
    InboundMessage {
        message_id,
        sender,
        recipient,
        contact_id,
        contact_name,
        whatsapp_account_id,
        content,
        extra: Map::new(),
    }
}

fn message_status(slots: &mut Slots, kind: &EventKind) -> MessageStatus {
    let message_id = MessageId(take_id(slots, &spec::MESSAGE_ID).unwrap_or_default());
    let recipient = take_phone(slots, &spec::STATUS_RECIPIENT);
    let sender = take_phone(slots, &spec::STATUS_SENDER);
    let status = match take_text(slots, &spec::STATUS) {
        Some(status) => DeliveryStatus::from_name(&status),
        None => match kind {
            EventKind::MessageSent => DeliveryStatus::Sent,
            EventKind::MessageDelivered => DeliveryStatus::Delivered,
            EventKind::MessageRead => DeliveryStatus::Read,
            _ => DeliveryStatus::Failed,
        },
    };
    let code = take_code(slots, &spec::ERROR_CODE);
    let message = take_text(slots, &spec::ERROR_MESSAGE);
    let error = (code.is_some() || message.is_some()).then_some(DeliveryError { code, message });
    MessageStatus {
        message_id,
        status,
        recipient,
        sender,
        error,
        extra: Map::new(),
    }
}

fn contact(slots: &mut Slots) -> Contact {
    Contact {
        id: take_id(slots, &spec::ID).unwrap_or_default(),
        phone_number: take_phone(slots, &spec::PHONE_NUMBER),
        name: take_text(slots, &spec::NAME),
        source: take_text(slots, &spec::SOURCE),
        extra: Map::new(),
    }
}

fn campaign(slots: &mut Slots) -> CampaignCompleted {
    CampaignCompleted {
        id: take_id(slots, &spec::ID).unwrap_or_default(),
        name: take_text(slots, &spec::NAME),
        total: take_count(slots, &spec::TOTAL),
        sent: take_count(slots, &spec::SENT),
        delivered: take_count(slots, &spec::DELIVERED),
        read: take_count(slots, &spec::READ),
        failed: take_count(slots, &spec::FAILED),
        extra: Map::new(),
    }
}

fn transfer(slots: &mut Slots) -> TransferCreated {
    TransferCreated {
        contact_id: take_id(slots, &spec::TRANSFER_CONTACT_ID).unwrap_or_default(),
        from_agent_id: take_id(slots, &spec::FROM_AGENT_ID),
        to_agent_id: take_id(slots, &spec::TO_AGENT_ID),
        to_team_id: take_id(slots, &spec::TO_TEAM_ID),
        notes: take_text(slots, &spec::NOTES),
        extra: Map::new(),
    }
}

/// A top-level key, recognised without allocating unless it is someone else's.
enum TopKey {
    Event,
    Timestamp,
    Data,
    Other(String),
}

/// A `data` key: a slot, or an unmapped key kept by name.
enum DataKey {
    Slot(usize),
    Other(String),
}

struct KeyVisitor<K>(fn(&str) -> Option<K>, fn(String) -> K);

impl<'de, K> Visitor<'de> for KeyVisitor<K> {
    type Value = K;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_str<E>(self, key: &str) -> Result<K, E> {
        Ok((self.0)(key).unwrap_or_else(|| (self.1)(key.to_owned())))
    }

    fn visit_string<E>(self, key: String) -> Result<K, E> {
        Ok(match (self.0)(&key) {
            Some(known) => known,
            None => (self.1)(key),
        })
    }
}

impl<'de> Deserialize<'de> for TopKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        fn known(key: &str) -> Option<TopKey> {
            match key {
                "event" => Some(TopKey::Event),
                "timestamp" => Some(TopKey::Timestamp),
                "data" => Some(TopKey::Data),
                _ => None,
            }
        }
        deserializer.deserialize_str(KeyVisitor(known, TopKey::Other))
    }
}

impl<'de> Deserialize<'de> for DataKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(KeyVisitor(
            |key| slot::of(key).map(DataKey::Slot),
            DataKey::Other,
        ))
    }
}

/// The top level of a body, read in one pass without deciding anything yet.
#[derive(Default)]
struct Envelope {
    not_object: Option<&'static str>,
    event: Option<EventField>,
    duplicate: Option<&'static str>,
    timestamp: Option<TimestampField>,
    data: Option<DataValue>,
    extra: Map<String, Value>,
}

impl<'de> Deserialize<'de> for Envelope {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(EnvelopeVisitor)
    }
}

impl Envelope {
    /// Stores a deciding key's value, noting the first key that was sent twice.
    fn keep_once<T>(
        &mut self,
        slot: impl FnOnce(&mut Self) -> &mut Option<T>,
        value: T,
        path: &'static str,
    ) {
        if slot(self).replace(value).is_some() {
            self.duplicate.get_or_insert(path);
        }
    }
}

struct EnvelopeVisitor;

impl EnvelopeVisitor {
    fn not_object<E>(found: &'static str) -> Result<Envelope, E> {
        Ok(Envelope {
            not_object: Some(found),
            ..Envelope::default()
        })
    }
}

impl<'de> Visitor<'de> for EnvelopeVisitor {
    type Value = Envelope;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Envelope, E> {
        Self::not_object("a boolean")
    }
    fn visit_i64<E>(self, _: i64) -> Result<Envelope, E> {
        Self::not_object("a number")
    }
    fn visit_u64<E>(self, _: u64) -> Result<Envelope, E> {
        Self::not_object("a number")
    }
    fn visit_f64<E>(self, _: f64) -> Result<Envelope, E> {
        Self::not_object("a number")
    }
    fn visit_str<E>(self, _: &str) -> Result<Envelope, E> {
        Self::not_object("a string")
    }
    fn visit_unit<E>(self) -> Result<Envelope, E> {
        Self::not_object("null")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Envelope, A::Error> {
        while seq.next_element::<de::IgnoredAny>()?.is_some() {}
        Self::not_object("an array")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Envelope, A::Error> {
        let mut envelope = Envelope::default();
        while let Some(key) = map.next_key::<TopKey>()? {
            match key {
                // The one rule for every key that decides dispatch, deduplication or
                // freshness: sent twice, it is refused, because two JSON parsers (ours and the
                // sender's, or the user's) could each keep a different one.
                TopKey::Event => {
                    let value = map.next_value::<EventField>()?;
                    envelope.keep_once(|e| &mut e.event, value, "$.event");
                }
                TopKey::Timestamp => {
                    let value = map.next_value::<TimestampField>()?;
                    envelope.keep_once(|e| &mut e.timestamp, value, "$.timestamp");
                }
                TopKey::Data => {
                    let data = map.next_value::<DataValue>()?;
                    if matches!(&data, DataValue::Object(o) if o.duplicate_message_id) {
                        envelope.duplicate.get_or_insert("$.data.message_id");
                    }
                    envelope.keep_once(|e| &mut e.data, data, "$.data");
                }
                TopKey::Other(key) => {
                    let value = map.next_value()?;
                    envelope.extra.insert(key, value);
                }
            }
        }
        Ok(envelope)
    }
}

/// `data` as read: an object split into mapped slots and everything else, or any other value.
enum DataValue {
    Object(Box<DataObject>),
    Other(Value),
}

struct DataObject {
    slots: Slots,
    /// Bit `i` is set when slot `i` was filled, so the leftovers walk only those.
    filled: u32,
    extra: Map<String, Value>,
    /// A plain map would silently keep the last of two `message_id`s.
    duplicate_message_id: bool,
}

impl DataObject {
    /// The unmapped fields: the unknown keys plus any slot no typed field took. Works in
    /// place: moving the slot table out of its box would copy it.
    fn leftovers(&mut self) -> Map<String, Value> {
        let mut extra = std::mem::take(&mut self.extra);
        let mut filled = std::mem::take(&mut self.filled);
        while filled != 0 {
            let i = filled.trailing_zeros() as usize;
            filled &= filled - 1;
            if let Some(value) = self.slots[i].take() {
                extra.insert(slot::NAMES[i].to_owned(), value);
            }
        }
        extra
    }

    fn into_value(mut self: Box<Self>) -> Value {
        Value::Object(self.leftovers())
    }
}

impl DataValue {
    fn into_value(self) -> Value {
        match self {
            Self::Object(object) => object.into_value(),
            Self::Other(value) => value,
        }
    }
}

impl<'de> Deserialize<'de> for DataValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(DataVisitor)
    }
}

struct DataVisitor;

impl<'de> Visitor<'de> for DataVisitor {
    type Value = DataValue;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<DataValue, E> {
        Ok(DataValue::Other(Value::Bool(v)))
    }
    fn visit_i64<E>(self, v: i64) -> Result<DataValue, E> {
        Ok(DataValue::Other(Value::from(v)))
    }
    fn visit_u64<E>(self, v: u64) -> Result<DataValue, E> {
        Ok(DataValue::Other(Value::from(v)))
    }
    fn visit_f64<E>(self, v: f64) -> Result<DataValue, E> {
        Ok(DataValue::Other(Value::from(v)))
    }
    fn visit_str<E>(self, v: &str) -> Result<DataValue, E> {
        Ok(DataValue::Other(Value::String(v.to_owned())))
    }
    fn visit_string<E>(self, v: String) -> Result<DataValue, E> {
        Ok(DataValue::Other(Value::String(v)))
    }
    fn visit_unit<E>(self) -> Result<DataValue, E> {
        Ok(DataValue::Other(Value::Null))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<DataValue, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Value>()? {
            items.push(item);
        }
        Ok(DataValue::Other(Value::Array(items)))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<DataValue, A::Error> {
        let mut object = Box::new(DataObject {
            slots: [const { None }; slot::COUNT],
            filled: 0,
            extra: Map::new(),
            duplicate_message_id: false,
        });
        while let Some(key) = map.next_key::<DataKey>()? {
            let value = map.next_value::<Value>()?;
            match key {
                DataKey::Slot(i) => {
                    object.filled |= 1 << i;
                    if object.slots[i].replace(value).is_some() && i == slot::MESSAGE_ID {
                        object.duplicate_message_id = true;
                    }
                }
                DataKey::Other(key) => {
                    object.extra.insert(key, value);
                }
            }
        }
        Ok(DataValue::Object(object))
    }
}

/// The `event` value: a name (static for the documented ones), or the JSON type found instead.
enum EventField {
    Name(Cow<'static, str>),
    NotString(&'static str),
}

impl<'de> Deserialize<'de> for EventField {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(EventFieldVisitor)
    }
}

/// The documented event names as `'static` strings, so that `received_as` needs no allocation
/// for them.
fn documented_name(name: &str) -> Option<&'static str> {
    Some(match name {
        "message.incoming" => "message.incoming",
        "message.received" => "message.received",
        "message.sent" => "message.sent",
        "message.delivered" => "message.delivered",
        "message.read" => "message.read",
        "message.failed" => "message.failed",
        "contact.created" => "contact.created",
        "contact.updated" => "contact.updated",
        "campaign.completed" => "campaign.completed",
        "transfer.created" => "transfer.created",
        _ => return None,
    })
}

struct EventFieldVisitor;

impl<'de> Visitor<'de> for EventFieldVisitor {
    type Value = EventField;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_str<E>(self, name: &str) -> Result<EventField, E> {
        Ok(EventField::Name(match documented_name(name) {
            Some(known) => Cow::Borrowed(known),
            None => Cow::Owned(name.to_owned()),
        }))
    }
    fn visit_bool<E>(self, _: bool) -> Result<EventField, E> {
        Ok(EventField::NotString("a boolean"))
    }
    fn visit_i64<E>(self, _: i64) -> Result<EventField, E> {
        Ok(EventField::NotString("a number"))
    }
    fn visit_u64<E>(self, _: u64) -> Result<EventField, E> {
        Ok(EventField::NotString("a number"))
    }
    fn visit_f64<E>(self, _: f64) -> Result<EventField, E> {
        Ok(EventField::NotString("a number"))
    }
    fn visit_unit<E>(self) -> Result<EventField, E> {
        Ok(EventField::NotString("null"))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<EventField, A::Error> {
        while seq.next_element::<de::IgnoredAny>()?.is_some() {}
        Ok(EventField::NotString("an array"))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<EventField, A::Error> {
        while map
            .next_entry::<de::IgnoredAny, de::IgnoredAny>()?
            .is_some()
        {}
        Ok(EventField::NotString("an object"))
    }
}

/// What the `timestamp` looked like, for the dialect rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TimestampShape {
    /// A string that is not all digits (RFC 3339, or something unreadable).
    Text,
    /// A string of digits: unix seconds.
    IntegerText,
    /// A JSON number.
    Number,
    /// Anything else.
    Other,
}

/// `timestamp`, read straight from the JSON: no allocation unless it has to be kept raw.
struct TimestampField {
    time: EventTime,
    shape: TimestampShape,
}

impl<'de> Deserialize<'de> for TimestampField {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(TimestampVisitor)
    }
}

struct TimestampVisitor;

impl TimestampVisitor {
    fn other<E>(raw: Value) -> Result<TimestampField, E> {
        Ok(TimestampField {
            time: EventTime::unreadable(raw, "expected an RFC 3339 string or unix seconds"),
            shape: TimestampShape::Other,
        })
    }
}

impl<'de> Visitor<'de> for TimestampVisitor {
    type Value = TimestampField;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_str<E>(self, text: &str) -> Result<TimestampField, E> {
        let shape = if is_integer_text(text) {
            TimestampShape::IntegerText
        } else {
            TimestampShape::Text
        };
        Ok(TimestampField {
            time: EventTime::from_text(text),
            shape,
        })
    }
    fn visit_i64<E>(self, seconds: i64) -> Result<TimestampField, E> {
        Ok(TimestampField {
            time: EventTime::from_unix_seconds(seconds, || Value::from(seconds)),
            shape: TimestampShape::Number,
        })
    }
    fn visit_u64<E>(self, seconds: u64) -> Result<TimestampField, E> {
        let time = match i64::try_from(seconds) {
            Ok(seconds) => EventTime::from_unix_seconds(seconds, || Value::from(seconds)),
            Err(_) => EventTime::unreadable(
                Value::from(seconds),
                "unix seconds outside years 0000 to 9999",
            ),
        };
        Ok(TimestampField {
            time,
            shape: TimestampShape::Number,
        })
    }
    fn visit_f64<E>(self, seconds: f64) -> Result<TimestampField, E> {
        Ok(TimestampField {
            time: EventTime::unreadable(
                Value::from(seconds),
                "a number that is not whole unix seconds",
            ),
            shape: TimestampShape::Number,
        })
    }
    fn visit_unit<E>(self) -> Result<TimestampField, E> {
        Ok(TimestampField {
            time: EventTime::Absent,
            shape: TimestampShape::Other,
        })
    }
    fn visit_bool<E>(self, v: bool) -> Result<TimestampField, E> {
        Self::other(Value::Bool(v))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<TimestampField, A::Error> {
        Self::other(Value::deserialize(de::value::SeqAccessDeserializer::new(
            seq,
        ))?)
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<TimestampField, A::Error> {
        Self::other(Value::deserialize(de::value::MapAccessDeserializer::new(
            map,
        ))?)
    }
}
