//! Time: the crate's [`Timestamp`], and the event's `timestamp` field in its three states.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::{Serialize, Serializer};
use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::error::TimestampError;

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
/// Its three states (present, absent, unreadable) are those of jsonwebtoken's `TryParse`, and
/// like it, absence is the derived default and reading never fails: the one `Deserialize`,
/// written once, takes any JSON value. A derived `Deserialize` could accept both a number and
/// a string only as an untagged enum, which builds and allocates an error for every form it
/// tries before the one that fits (the README's Performance section has the figures).
///
/// Read: RFC 3339 with any offset and fractional seconds; unix seconds as a JSON integer or as
/// a string of digits; unix **milliseconds** the same ways, recognised by their size (any value
/// of 10^11 or more, which as seconds would be after the year 5138). `null` counts as absent.
///
/// Everything else (a float, ISO 8601 without an offset, a year past 9999, `"yesterday"`) is
/// kept as [`EventTime::Unreadable`] and logged at warn with its form. The receiver then skips
/// the replay check for it, or refuses it with 400 when built with
/// [`refuse_unreadable_timestamps`](crate::receiver::ReceiverBuilder::refuse_unreadable_timestamps).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
#[non_exhaustive]
pub enum EventTime {
    /// The payload has no timestamp (several documented payloads do not). The default, as a
    /// field left out is absent.
    #[default]
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
        reason: TimestampError,
    },
}

impl EventTime {
    /// A value kept as sent, reported once.
    fn unreadable(raw: Value, reason: TimestampError) -> Self {
        tracing::warn!(%reason, "AISoule event timestamp kept unread");
        Self::Unreadable { raw, reason }
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
            None => Self::unreadable(raw(), TimestampError::OutOfRange),
        }
    }

    fn from_text(text: &str) -> Self {
        if is_integer_text(text) {
            return match text.parse::<i64>() {
                Ok(seconds) => Self::from_unix_seconds(seconds, || Value::String(text.to_owned())),
                Err(_) => {
                    Self::unreadable(Value::String(text.to_owned()), TimestampError::OutOfRange)
                }
            };
        }
        match Timestamp::parse_rfc3339(text) {
            Some(at) => Self::At { at },
            None => Self::unreadable(Value::String(text.to_owned()), TimestampError::NotRfc3339),
        }
    }
}

pub(super) fn is_integer_text(s: &str) -> bool {
    let digits = s.strip_prefix('-').unwrap_or(s);
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}

/// What the `timestamp` looked like, for the dialect rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum TimestampShape {
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
pub(super) struct TimestampField {
    pub(super) time: EventTime,
    pub(super) shape: TimestampShape,
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
            time: EventTime::unreadable(raw, TimestampError::WrongType),
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
            Err(_) => EventTime::unreadable(Value::from(seconds), TimestampError::OutOfRange),
        };
        Ok(TimestampField {
            time,
            shape: TimestampShape::Number,
        })
    }
    fn visit_f64<E>(self, seconds: f64) -> Result<TimestampField, E> {
        Ok(TimestampField {
            time: EventTime::unreadable(Value::from(seconds), TimestampError::NotWholeSeconds),
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
