//! The platform's names: events, message types and delivery states.
//!
//! Each enum names every value once, in its `strum` attributes: parsing, [`as_str`] and
//! serialization all derive from them. Every enum keeps a value it does not know as sent, in
//! its last variant, because the platform adds values without notice.
//!
//! [`as_str`]: EventKind::as_str

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, Visitor};
use serde::{Serialize, Serializer};
use strum::{AsRefStr, EnumString};

/// Which event a delivery announces.
///
/// The nine documented events, with `message.incoming` and `message.received` as one kind.
/// Any other name is kept as it arrived in [`EventKind::Unknown`], because the platform says
/// new events may be added.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EnumString, AsRefStr)]
#[non_exhaustive]
pub enum EventKind {
    /// A customer sent a message (`message.incoming` or `message.received`).
    #[strum(to_string = "message.incoming", serialize = "message.received")]
    MessageIncoming,
    /// Your message was sent (`message.sent`).
    #[strum(serialize = "message.sent")]
    MessageSent,
    /// Your message reached the customer's phone (`message.delivered`).
    #[strum(serialize = "message.delivered")]
    MessageDelivered,
    /// The customer read your message (`message.read`).
    #[strum(serialize = "message.read")]
    MessageRead,
    /// Your message could not be delivered (`message.failed`).
    #[strum(serialize = "message.failed")]
    MessageFailed,
    /// A contact was added (`contact.created`).
    #[strum(serialize = "contact.created")]
    ContactCreated,
    /// A contact changed (`contact.updated`).
    #[strum(serialize = "contact.updated")]
    ContactUpdated,
    /// A campaign finished sending (`campaign.completed`).
    #[strum(serialize = "campaign.completed")]
    CampaignCompleted,
    /// A conversation was transferred to an agent (`transfer.created`).
    #[strum(serialize = "transfer.created")]
    TransferCreated,
    /// An event this version does not know, with its name as sent.
    #[strum(default)]
    Unknown(String),
}

impl EventKind {
    /// Whether this is a status update about a message you sent (sent, delivered, read, failed).
    pub fn is_message_status(&self) -> bool {
        matches!(
            self,
            Self::MessageSent | Self::MessageDelivered | Self::MessageRead | Self::MessageFailed
        )
    }
}

/// A WhatsApp message type, from the `type` field.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EnumString, AsRefStr)]
#[strum(serialize_all = "snake_case")]
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
    #[strum(default)]
    Other(String),
}

/// The delivery state a status event reports.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EnumString, AsRefStr)]
#[strum(serialize_all = "snake_case")]
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
    #[strum(default)]
    Other(String),
}

impl DeliveryStatus {
    /// The status an event's name implies, for a status event that does not say.
    pub(crate) fn implied_by(kind: &super::EventKind) -> Self {
        match kind {
            super::EventKind::MessageSent => Self::Sent,
            super::EventKind::MessageDelivered => Self::Delivered,
            super::EventKind::MessageRead => Self::Read,
            _ => Self::Failed,
        }
    }
}

/// `from_name`, `as_str`, and `Display`, `Serialize` and `Deserialize` as the name, for each of
/// the platform's enums, whose last variant keeps a name it does not know.
macro_rules! named {
    ($($name:ident($fallback:ident): $expecting:literal, $from_doc:literal, $as_doc:literal;)*) => {$(
        impl $name {
            #[doc = $from_doc]
            pub fn from_name(name: &str) -> Self {
                // `#[strum(default)]` makes every name parse; the fallback only satisfies
                // the type.
                name.parse()
                    .unwrap_or_else(|_: strum::ParseError| Self::$fallback(name.to_owned()))
            }

            #[doc = $as_doc]
            pub fn as_str(&self) -> &str {
                match self {
                    Self::$fallback(name) => name,
                    known => known.as_ref(),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                struct Name;
                impl Visitor<'_> for Name {
                    type Value = $name;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str($expecting)
                    }
                    fn visit_str<E: de::Error>(self, name: &str) -> Result<$name, E> {
                        Ok($name::from_name(name))
                    }
                }
                deserializer.deserialize_str(Name)
            }
        }
    )*};
}

named! {
    EventKind(Unknown): "an event name",
        "The kind for an event name as sent.\n\n```\nuse aisoule_webhooks::event::EventKind;\n\
         assert_eq!(EventKind::from_name(\"message.received\"), EventKind::MessageIncoming);\n\
         assert_eq!(EventKind::from_name(\"order.paid\"), EventKind::Unknown(\"order.paid\".into()));\n```",
        "The canonical name: the help pages' name for known kinds (`message.incoming` for both \
         dialects), the name as sent for unknown ones.";
    MessageType(Other): "a message type",
        "The type for a `type` value as sent.",
        "The name as the platform writes it.";
    DeliveryStatus(Other): "a delivery status",
        "The status for a `status` value as sent.",
        "The status as the platform writes it.";
}
