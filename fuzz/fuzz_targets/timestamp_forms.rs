//! Any `timestamp` value: the delivery still parses, and a read timestamp round-trips through
//! its RFC 3339 form.
#![no_main]

use aisoule_webhooks::Event;
use aisoule_webhooks::event::{EventTime, Timestamp};
use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};

#[derive(Arbitrary, Debug)]
enum Form {
    Text(String),
    Integer(i64),
    Unsigned(u64),
    Float(f64),
    DigitsText(i64),
    Rfc3339 {
        seconds: i64,
        nanos: u32,
        offset_minutes: i16,
        lowercase: bool,
    },
    Null,
    Bool(bool),
}

fn value(form: &Form) -> Value {
    match form {
        Form::Text(s) => json!(s),
        Form::Integer(i) => json!(i),
        Form::Unsigned(u) => json!(u),
        Form::Float(f) => serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number),
        Form::DigitsText(i) => json!(i.to_string()),
        Form::Rfc3339 {
            seconds,
            nanos,
            offset_minutes,
            lowercase,
        } => {
            let offset = offset_minutes % (24 * 60);
            let sign = if offset < 0 { '-' } else { '+' };
            let base = Timestamp::from_unix_seconds(seconds % 253_402_300_799)
                .map(|t| t.to_rfc3339())
                .unwrap_or_default();
            let text = format!(
                "{}.{:09}{}{:02}:{:02}",
                base.trim_end_matches('Z'),
                nanos % 1_000_000_000,
                sign,
                offset.unsigned_abs() / 60,
                offset.unsigned_abs() % 60
            );
            json!(if *lowercase {
                text.to_lowercase()
            } else {
                text
            })
        }
        Form::Null => Value::Null,
        Form::Bool(b) => json!(b),
    }
}

fuzz_target!(|form: Form| {
    let timestamp = value(&form);
    if let Value::String(text) = &timestamp
        && let Some(at) = Timestamp::parse_rfc3339(text)
    {
        assert_eq!(Timestamp::parse_rfc3339(&at.to_rfc3339()), Some(at));
    }
    let body =
        json!({"event": "message.read", "timestamp": timestamp, "data": {"message_id": "m"}});
    let event = Event::parse(body.to_string().as_bytes()).expect("no timestamp fails a delivery");
    match event.time() {
        EventTime::At { at } => {
            assert_eq!(
                Timestamp::parse_rfc3339(&at.to_rfc3339()),
                Some(*at),
                "{form:?}"
            );
            assert_eq!(Timestamp::from_system_time(at.to_system_time()), Some(*at));
        }
        EventTime::Unreadable { raw, .. } => assert_eq!(raw, &timestamp),
        EventTime::Absent => assert!(timestamp.is_null()),
        _ => {}
    }
});
