//! Phone numbers as sent, comparable across the two dialects' spellings.

use std::borrow::Cow;
use std::fmt;
use std::hash::{Hash, Hasher};

use serde::{Serialize, Serializer};

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
pub struct PhoneNumber<'a> {
    as_sent: Cow<'a, str>,
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

impl<'a> PhoneNumber<'a> {
    /// Keeps `as_sent` and derives its E.164 form: separators (space, `-`, `.`, parentheses)
    /// dropped, a `+` added, and 7 to 15 digits required.
    pub fn new(as_sent: impl Into<Cow<'a, str>>) -> Self {
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

    /// The same number, owning its text, to keep beyond the event it was read from.
    pub fn into_owned(self) -> PhoneNumber<'static> {
        PhoneNumber {
            as_sent: Cow::Owned(self.as_sent.into_owned()),
            e164: self.e164,
        }
    }

    fn identity(&self) -> &str {
        self.e164().unwrap_or(&self.as_sent)
    }
}

impl PartialEq for PhoneNumber<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.identity() == other.identity()
    }
}

impl Eq for PhoneNumber<'_> {}

impl Hash for PhoneNumber<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.identity().hash(state);
    }
}

impl fmt::Display for PhoneNumber<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.identity())
    }
}

impl Serialize for PhoneNumber<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.identity())
    }
}
