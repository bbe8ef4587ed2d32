//! The head of a delivery: what the lifecycle needs, read in one pass over the raw bytes.
//!
//! Verification, freshness and deduplication need only the event's name, its `timestamp` and
//! `data.message_id`. Everything else is skipped here (though still checked to be JSON) and read
//! later, only when a handler asks for the typed payload.

use std::borrow::Cow;
use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

use super::time::TimestampField;
use crate::error::ParseError;

/// The head as read, before any rule is applied.
#[derive(Default)]
pub(super) struct Head<'de> {
    not_object: Option<&'static str>,
    duplicate: Option<&'static str>,
    event: Option<EventField<'de>>,
    pub(super) timestamp: Option<TimestampField>,
    data: Option<DataHead<'de>>,
}

impl<'de> Head<'de> {
    /// Reads the head of `body`.
    ///
    /// # Errors
    ///
    /// The [`ParseError`] that makes `body` no event at all.
    pub(super) fn read(body: &'de [u8]) -> Result<Self, ParseError> {
        let head: Self = from_json(body).map_err(|source| ParseError::NotJson {
            source: source.into(),
        })?;
        if let Some(found) = head.not_object {
            return Err(ParseError::NotAnObject { found });
        }
        if let Some(path) = head.duplicate {
            return Err(ParseError::DuplicateKey { path });
        }
        match &head.event {
            None => Err(ParseError::MissingEvent),
            Some(EventField::NotString(found)) => Err(ParseError::EventNotString { found }),
            Some(EventField::Name(_)) => Ok(head),
        }
    }

    /// The event name as sent; [`Head::read`] has checked that there is one.
    pub(super) fn name(&self) -> &Cow<'de, str> {
        match &self.event {
            Some(EventField::Name(name)) => name,
            _ => unreachable!("Head::read returns only heads with a name"),
        }
    }

    /// `data.message_id` as sent: a string, or an integer's exact digits.
    pub(super) fn message_id(&self) -> Option<&Cow<'de, str>> {
        match &self.data {
            Some(DataHead::Object { message_id, .. }) => message_id.as_ref(),
            _ => None,
        }
    }

    /// Stores a deciding key's value, noting the first key that was sent twice.
    fn keep_once<T>(
        slot: &mut Option<T>,
        value: T,
        duplicate: &mut Option<&'static str>,
        path: &'static str,
    ) {
        if slot.replace(value).is_some() {
            duplicate.get_or_insert(path);
        }
    }
}

/// Reads `body` as JSON, checking that it is UTF-8 in one pass first.
///
/// `serde_json` checks each string of a byte slice separately, which was a sixth of the
/// parse; one check of the whole body (ASCII a word at a time) is cheaper, and a body that is
/// valid JSON from a slice is valid UTF-8 throughout, because outside strings JSON is ASCII.
/// A body that is not UTF-8 is read as a slice, for `serde_json`'s own error and position.
pub(super) fn from_json<'de, T: Deserialize<'de>>(body: &'de [u8]) -> serde_json::Result<T> {
    match std::str::from_utf8(body) {
        Ok(text) => serde_json::from_str(text),
        Err(_) => serde_json::from_slice(body),
    }
}

/// A top-level key, recognised without allocating.
enum TopKey {
    Event,
    Timestamp,
    Data,
    Other,
}

impl<'de> Deserialize<'de> for TopKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Key;
        impl Visitor<'_> for Key {
            type Value = TopKey;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object key")
            }
            fn visit_str<E>(self, key: &str) -> Result<TopKey, E> {
                Ok(match key {
                    "event" => TopKey::Event,
                    "timestamp" => TopKey::Timestamp,
                    "data" => TopKey::Data,
                    _ => TopKey::Other,
                })
            }
        }
        deserializer.deserialize_str(Key)
    }
}

impl<'de> Deserialize<'de> for Head<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(HeadVisitor)
    }
}

struct HeadVisitor;

impl HeadVisitor {
    fn not_object<'de, E>(found: &'static str) -> Result<Head<'de>, E> {
        Ok(Head {
            not_object: Some(found),
            ..Head::default()
        })
    }
}

impl<'de> Visitor<'de> for HeadVisitor {
    type Value = Head<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Head<'de>, E> {
        Self::not_object("a boolean")
    }
    fn visit_i64<E>(self, _: i64) -> Result<Head<'de>, E> {
        Self::not_object("a number")
    }
    fn visit_u64<E>(self, _: u64) -> Result<Head<'de>, E> {
        Self::not_object("a number")
    }
    fn visit_f64<E>(self, _: f64) -> Result<Head<'de>, E> {
        Self::not_object("a number")
    }
    fn visit_str<E>(self, _: &str) -> Result<Head<'de>, E> {
        Self::not_object("a string")
    }
    fn visit_unit<E>(self) -> Result<Head<'de>, E> {
        Self::not_object("null")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Head<'de>, A::Error> {
        while seq.next_element::<Skip>()?.is_some() {}
        Self::not_object("an array")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Head<'de>, A::Error> {
        let mut head = Head::default();
        while let Some(key) = map.next_key::<TopKey>()? {
            // The one rule for every key that decides dispatch, deduplication or freshness:
            // sent twice, it is refused, because two JSON parsers (ours and the sender's, or
            // the user's) could each keep a different one.
            match key {
                TopKey::Event => {
                    let value = map.next_value()?;
                    Head::keep_once(&mut head.event, value, &mut head.duplicate, "$.event");
                }
                TopKey::Timestamp => {
                    let value = map.next_value()?;
                    Head::keep_once(
                        &mut head.timestamp,
                        value,
                        &mut head.duplicate,
                        "$.timestamp",
                    );
                }
                TopKey::Data => {
                    let data: DataHead<'de> = map.next_value()?;
                    if matches!(data, DataHead::Object { .. } if data.duplicate_message_id()) {
                        head.duplicate.get_or_insert("$.data.message_id");
                    }
                    Head::keep_once(&mut head.data, data, &mut head.duplicate, "$.data");
                }
                TopKey::Other => {
                    map.next_value::<Skip>()?;
                }
            }
        }
        Ok(head)
    }
}

/// The `event` value: a name, or the JSON type found instead.
enum EventField<'de> {
    Name(Cow<'de, str>),
    NotString(&'static str),
}

impl<'de> Deserialize<'de> for EventField<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(TextOrType(EventField::Name, EventField::NotString))
    }
}

/// A visitor that keeps a string (borrowed when the JSON has no escapes) and otherwise notes
/// the JSON type found, consuming the value.
struct TextOrType<F, G>(F, G);

impl<'de, T, F, G> Visitor<'de> for TextOrType<F, G>
where
    F: FnOnce(Cow<'de, str>) -> T,
    G: FnOnce(&'static str) -> T,
{
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_borrowed_str<E>(self, text: &'de str) -> Result<T, E> {
        Ok((self.0)(Cow::Borrowed(text)))
    }
    fn visit_str<E>(self, text: &str) -> Result<T, E> {
        Ok((self.0)(Cow::Owned(text.to_owned())))
    }
    fn visit_string<E>(self, text: String) -> Result<T, E> {
        Ok((self.0)(Cow::Owned(text)))
    }
    fn visit_bool<E>(self, _: bool) -> Result<T, E> {
        Ok((self.1)("a boolean"))
    }
    fn visit_i64<E>(self, _: i64) -> Result<T, E> {
        Ok((self.1)("a number"))
    }
    fn visit_u64<E>(self, _: u64) -> Result<T, E> {
        Ok((self.1)("a number"))
    }
    fn visit_f64<E>(self, _: f64) -> Result<T, E> {
        Ok((self.1)("a number"))
    }
    fn visit_unit<E>(self) -> Result<T, E> {
        Ok((self.1)("null"))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<T, A::Error> {
        while seq.next_element::<Skip>()?.is_some() {}
        Ok((self.1)("an array"))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<T, A::Error> {
        while map.next_entry::<Skip, Skip>()?.is_some() {}
        Ok((self.1)("an object"))
    }
}

/// `data` as the head reads it: only `message_id`, and whether it was sent twice.
enum DataHead<'de> {
    Object {
        message_id: Option<Cow<'de, str>>,
        duplicate_message_id: bool,
    },
    Other,
}

impl DataHead<'_> {
    fn duplicate_message_id(&self) -> bool {
        matches!(
            self,
            Self::Object {
                duplicate_message_id: true,
                ..
            }
        )
    }
}

/// `data.message_id`: a string, an integer kept as its exact digits, or anything else (which
/// gives no id).
struct MessageIdField<'de>(Option<Cow<'de, str>>);

impl<'de> Deserialize<'de> for MessageIdField<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Id;
        impl<'de> Visitor<'de> for Id {
            type Value = MessageIdField<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_i64<E>(self, id: i64) -> Result<Self::Value, E> {
                Ok(MessageIdField(Some(Cow::Owned(id.to_string()))))
            }
            fn visit_u64<E>(self, id: u64) -> Result<Self::Value, E> {
                Ok(MessageIdField(Some(Cow::Owned(id.to_string()))))
            }
            fn visit_borrowed_str<E>(self, id: &'de str) -> Result<Self::Value, E> {
                Ok(MessageIdField(Some(Cow::Borrowed(id))))
            }
            fn visit_str<E>(self, id: &str) -> Result<Self::Value, E> {
                Ok(MessageIdField(Some(Cow::Owned(id.to_owned()))))
            }
            fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
                Ok(MessageIdField(None))
            }
            fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
                Ok(MessageIdField(None))
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(MessageIdField(None))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                while seq.next_element::<Skip>()?.is_some() {}
                Ok(MessageIdField(None))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                while map.next_entry::<Skip, Skip>()?.is_some() {}
                Ok(MessageIdField(None))
            }
        }
        deserializer.deserialize_any(Id)
    }
}

impl<'de> Deserialize<'de> for DataHead<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Data;
        impl<'de> Visitor<'de> for Data {
            type Value = DataHead<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_bool<E>(self, _: bool) -> Result<DataHead<'de>, E> {
                Ok(DataHead::Other)
            }
            fn visit_i64<E>(self, _: i64) -> Result<DataHead<'de>, E> {
                Ok(DataHead::Other)
            }
            fn visit_u64<E>(self, _: u64) -> Result<DataHead<'de>, E> {
                Ok(DataHead::Other)
            }
            fn visit_f64<E>(self, _: f64) -> Result<DataHead<'de>, E> {
                Ok(DataHead::Other)
            }
            fn visit_str<E>(self, _: &str) -> Result<DataHead<'de>, E> {
                Ok(DataHead::Other)
            }
            fn visit_unit<E>(self) -> Result<DataHead<'de>, E> {
                Ok(DataHead::Other)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<DataHead<'de>, A::Error> {
                while seq.next_element::<Skip>()?.is_some() {}
                Ok(DataHead::Other)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<DataHead<'de>, A::Error> {
                let mut message_id = None;
                let mut seen = false;
                let mut duplicate_message_id = false;
                while let Some(key) = map.next_key::<DataKey>()? {
                    match key {
                        DataKey::MessageId => {
                            // A plain map would silently keep the last of two `message_id`s.
                            duplicate_message_id |= seen;
                            seen = true;
                            message_id = map.next_value::<MessageIdField<'de>>()?.0;
                        }
                        DataKey::Other => {
                            map.next_value::<Skip>()?;
                        }
                    }
                }
                Ok(DataHead::Object {
                    message_id,
                    duplicate_message_id,
                })
            }
        }
        deserializer.deserialize_any(Data)
    }
}

/// A `data` key, as the head sees it.
enum DataKey {
    MessageId,
    Other,
}

impl<'de> Deserialize<'de> for DataKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Key;
        impl Visitor<'_> for Key {
            type Value = DataKey;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object key")
            }
            fn visit_str<E>(self, key: &str) -> Result<DataKey, E> {
                Ok(if key == "message_id" {
                    DataKey::MessageId
                } else {
                    DataKey::Other
                })
            }
        }
        deserializer.deserialize_str(Key)
    }
}

/// Any JSON value, read and dropped.
///
/// Unlike serde's `IgnoredAny`, which `serde_json` skips without any depth limit, this goes
/// through `deserialize_any`, so a body nested too deeply to read as a whole is refused here
/// too, and never accepted by the head only to fail when the payload is read.
struct Skip;

impl<'de> Deserialize<'de> for Skip {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SkipVisitor;
        impl<'de> Visitor<'de> for SkipVisitor {
            type Value = Skip;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_bool<E>(self, _: bool) -> Result<Skip, E> {
                Ok(Skip)
            }
            fn visit_i64<E>(self, _: i64) -> Result<Skip, E> {
                Ok(Skip)
            }
            fn visit_u64<E>(self, _: u64) -> Result<Skip, E> {
                Ok(Skip)
            }
            fn visit_f64<E>(self, _: f64) -> Result<Skip, E> {
                Ok(Skip)
            }
            fn visit_str<E>(self, _: &str) -> Result<Skip, E> {
                Ok(Skip)
            }
            fn visit_unit<E>(self) -> Result<Skip, E> {
                Ok(Skip)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Skip, A::Error> {
                while seq.next_element::<Skip>()?.is_some() {}
                Ok(Skip)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Skip, A::Error> {
                while map.next_entry::<Skip, Skip>()?.is_some() {}
                Ok(Skip)
            }
        }
        deserializer.deserialize_any(SkipVisitor)
    }
}
