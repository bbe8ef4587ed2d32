//! The event model: every fixture to its exact typed value, dialect equivalence, nothing lost.

use aisoule_webhooks::ParseError;
use aisoule_webhooks::error::PayloadError;
use aisoule_webhooks::event::{
    Dialect, Event, EventKind, EventTime, MessageContent, Payload, PhoneNumber, Timestamp,
};
use proptest::prelude::*;
use serde_json::{Value, json};

use crate::support::{fixture, fixture_path, fixtures_in};

/// The parsed view that an expected-value file pins down: every typed field.
fn typed_view(event: &Event) -> Value {
    json!({
        "kind": event.kind(),
        "received_as": event.received_as(),
        "dialect": event.dialect(),
        "time": event.time(),
        "payload": event.payload(),
        "extra": event.extra(),
    })
}

/// Each fixture under `docs/` and `events/` parses to the value in `expected/<folder>/<name>`.
/// Set `UPDATE_EXPECTED=1` to rewrite them after an intended change, then review the diff;
/// every rewritten file is named on stderr. Any other value is ignored, and CI refuses it.
#[test]
fn every_fixture_parses_to_its_expected_typed_value() {
    let update = std::env::var("UPDATE_EXPECTED").is_ok_and(|v| v == "1");
    assert!(
        !(update && crate::support::under_ci()),
        "UPDATE_EXPECTED=1 rewrites the expected values; CI must compare against them instead"
    );
    let mut checked = 0;
    for folder in ["docs", "events"] {
        for (name, body) in fixtures_in(folder) {
            let event = Event::parse(&body).unwrap_or_else(|e| panic!("{folder}/{name}: {e}"));
            let actual = typed_view(&event);
            let expected_path = fixture_path(&format!("expected/{folder}/{name}"));
            if update {
                std::fs::create_dir_all(expected_path.parent().unwrap()).unwrap();
                let text = serde_json::to_string_pretty(&actual).unwrap() + "\n";
                let before = std::fs::read_to_string(&expected_path).unwrap_or_default();
                if before != text {
                    std::fs::write(&expected_path, &text).unwrap();
                    use std::io::Write;
                    let _ = writeln!(
                        std::io::stderr(),
                        "UPDATE_EXPECTED: rewrote {}",
                        expected_path.display()
                    );
                }
            }
            let expected: Value =
                serde_json::from_slice(&fixture(&format!("expected/{folder}/{name}")))
                    .unwrap_or_else(|e| panic!("expected/{folder}/{name}: {e}"));
            assert_eq!(actual, expected, "{folder}/{name}");
            checked += 1;
        }
    }
    assert_eq!(checked, 32);
}

fn parse_fixture(relative: &str) -> Event {
    Event::parse(&fixture(relative)).unwrap()
}

#[test]
fn both_dialects_of_one_message_give_one_kind_and_equal_senders() {
    let help = parse_fixture("docs/help-reference.message.incoming.json");
    let developer = parse_fixture("docs/developer.message.received.json");
    assert_eq!(help.kind(), &EventKind::MessageIncoming);
    assert_eq!(help.kind(), developer.kind());
    assert_eq!(help.received_as(), "message.incoming");
    assert_eq!(developer.received_as(), "message.received");
    assert_eq!(help.dialect(), Dialect::Help);
    assert_eq!(developer.dialect(), Dialect::Developer);

    // `from` with a plus and `sender` without one name the same E.164 number.
    let from = r#"{"event":"message.incoming","data":{"message_id":"m","from":"+918856879188","type":"text","text":"x"}}"#;
    let sender = r#"{"event":"message.received","data":{"message_id":"m","sender":"918856879188","type":"text","body":"x"}}"#;
    let (a, b) = (
        Event::parse(from.as_bytes()).unwrap(),
        Event::parse(sender.as_bytes()).unwrap(),
    );
    assert_eq!(a.sender(), b.sender());
    assert_eq!(a.sender().unwrap().e164(), Some("+918856879188"));
    assert_eq!(b.sender().unwrap().as_sent(), "918856879188");
    assert_eq!(a.text(), b.text());
    assert_eq!(a.payload(), b.payload());
}

#[test]
fn both_timestamp_forms_of_one_instant_are_equal() {
    let instant = Timestamp::parse_rfc3339("2026-06-02T03:01:38Z").unwrap();
    assert_eq!(instant.unix_seconds(), 1_780_369_298);
    let developer = parse_fixture("docs/developer.message.received.json");
    assert_eq!(developer.timestamp(), Some(instant));
    let unix_string = parse_fixture("events/timestamp-unix-string.json");
    assert_eq!(unix_string.timestamp(), Some(instant));
    let offset = parse_fixture("events/timestamp-rfc3339-offset.json");
    assert_eq!(
        offset.timestamp().unwrap().to_rfc3339(),
        "2026-05-29T10:30:05Z"
    );
    let fraction = parse_fixture("events/timestamp-rfc3339-fraction.json");
    assert_eq!(fraction.timestamp().unwrap().subsec_nanos(), 123_456_789);
    assert_eq!(
        Timestamp::from_system_time(instant.to_system_time()),
        Some(instant)
    );
}

#[test]
fn odd_timestamps_never_fail_a_delivery_and_are_kept_raw() {
    let missing = parse_fixture("docs/help-reference.message.failed.json");
    assert_eq!(missing.time(), &EventTime::Absent);
    for (file, raw) in [
        (
            "events/timestamp-unreadable.json",
            json!("29/05/2026 10:30"),
        ),
        ("events/timestamp-float.json", json!(1780369298.5)),
    ] {
        let event = parse_fixture(file);
        match event.time() {
            EventTime::Unreadable { raw: kept, reason } => {
                assert_eq!(kept, &raw, "{file}");
                assert!(!reason.to_string().is_empty());
            }
            other => panic!("{file}: {other:?}"),
        }
        assert!(
            matches!(event.payload(), Payload::Message(_)),
            "{file} still arrives"
        );
    }
    for odd in [
        json!(null),
        json!(true),
        json!([1]),
        json!({"s": 1}),
        json!(i64::MAX),
        json!(-1e300),
        json!(""),
    ] {
        let body = json!({"event": "message.read", "timestamp": odd, "data": {"message_id": "m"}});
        let event = Event::parse(body.to_string().as_bytes()).unwrap();
        assert_eq!(event.timestamp(), None, "{odd}");
    }
}

#[test]
fn status_events_share_their_message_id_but_not_their_kind() {
    let received = parse_fixture("docs/developer.message.received.json");
    let read = parse_fixture("docs/developer.message.read.json");
    assert_eq!(received.message_id(), Some("msg_90a82b7194689c1"));
    assert_eq!(received.message_id(), read.message_id());
    assert_ne!(received.kind(), read.kind());
    assert!(read.kind().is_message_status());
}

#[test]
fn unmapped_fields_can_be_read_back() {
    let event = parse_fixture("events/extra-fields.json");
    assert_eq!(event.extra()["webhook_id"], "wh_9");
    assert_eq!(event.extra()["attempt"], 2);
    let Payload::Message(message) = event.payload() else {
        panic!("{event:?}")
    };
    assert_eq!(message.extra["reply_to"], "wamid.X0");
    assert_eq!(message.extra["labels"], json!(["sales"]));
    // `from` won the sender slot; the conflicting `sender` is kept, not dropped.
    assert_eq!(message.sender, Some(PhoneNumber::new("+919876543210")));
    assert_eq!(message.extra["sender"], "+911111111111");

    let image = parse_fixture("events/unknown-message-type.json");
    let Payload::Message(message) = image.payload() else {
        panic!()
    };
    assert!(
        matches!(&message.content, MessageContent::Other { message_type, text: Some(caption) }
        if message_type.as_str() == "image" && caption == "our storefront")
    );
    assert_eq!(
        message.extra["media_url"],
        "https://example.invalid/m/1.jpg"
    );
}

#[test]
fn unknown_events_and_misshapen_known_events_arrive_with_their_data() {
    let unknown = parse_fixture("events/unknown-event.json");
    assert_eq!(unknown.kind(), &EventKind::Unknown("order.paid".into()));
    let Payload::Unknown(u) = unknown.payload() else {
        panic!()
    };
    assert_eq!(u.name, "order.paid");
    assert_eq!(u.data["amount"]["value"], 4999);

    let missing_id = parse_fixture("events/malformed-known-event.json");
    let Payload::Unrecognized(u) = missing_id.payload() else {
        panic!()
    };
    assert_eq!(u.kind, EventKind::MessageIncoming);
    assert_eq!(
        u.reason,
        PayloadError::Missing {
            field: "message_id"
        }
    );
    assert_eq!(u.reason.to_string(), "$.data.message_id: missing");
    assert_eq!(u.data["text"], "where is my message_id?");

    let wrong_type = parse_fixture("events/malformed-field-type.json");
    let Payload::Unrecognized(u) = wrong_type.payload() else {
        panic!()
    };
    assert_eq!(
        u.reason,
        PayloadError::WrongType {
            field: "total",
            expected: "a non-negative integer",
            found: "a string"
        }
    );
    assert_eq!(
        u.reason.to_string(),
        "$.data.total: expected a non-negative integer, found a string"
    );
}

#[test]
fn raw_bytes_come_back_identical_and_serialize_round_trips() {
    for (name, body) in fixtures_in("docs").into_iter().chain(fixtures_in("events")) {
        let event = Event::parse(&body).unwrap();
        assert_eq!(event.raw().as_ref(), body.as_slice(), "{name}");
        let again = Event::parse(&serde_json::to_vec(&event).unwrap()).unwrap();
        assert_eq!(again, event, "{name}");
    }
}

#[test]
fn message_ids_above_2_pow_53_are_kept_exactly() {
    let event = parse_fixture("events/big-message-id.json");
    assert_eq!(event.message_id(), Some("18446744073709551615"));
}

/// A `NotJson` to compare against: only the variant matters, its source is checked apart.
fn not_json() -> ParseError {
    ParseError::NotJson {
        source: serde_json::from_slice::<Value>(b"").unwrap_err().into(),
    }
}

#[test]
fn every_parse_error_names_its_path() {
    let cases: [(&[u8], ParseError, &str); 9] = [
        (b"not json", not_json(), "$: the body is not JSON"),
        (b"", not_json(), "$: the body is not JSON"),
        (b"\xff\xfe{}", not_json(), "$: the body is not JSON"),
        (
            b"[1,2]",
            ParseError::NotAnObject { found: "an array" },
            "$: expected a JSON object, found an array",
        ),
        (
            b"\"message.read\"",
            ParseError::NotAnObject { found: "a string" },
            "$: expected a JSON object, found a string",
        ),
        (
            br#"{"data":{}}"#,
            ParseError::MissingEvent,
            "$.event: missing",
        ),
        (
            br#"{"event":7}"#,
            ParseError::EventNotString { found: "a number" },
            "$.event: expected a string, found a number",
        ),
        (
            br#"{"event":"message.read","event":"message.sent","data":{"message_id":"m"}}"#,
            ParseError::DuplicateKey { path: "$.event" },
            "$.event: the key appears more than once",
        ),
        (
            br#"{"event":"message.read","data":{"message_id":"a","message_id":"b"}}"#,
            ParseError::DuplicateKey {
                path: "$.data.message_id",
            },
            "$.data.message_id: the key appears more than once",
        ),
    ];
    for (body, expected, message) in cases {
        let err = Event::parse(body).unwrap_err();
        match (&err, &expected) {
            (ParseError::NotJson { source }, ParseError::NotJson { .. }) => {
                // The parser's report is kept as the source, not repeated in the message.
                assert!(!source.to_string().is_empty());
                assert!(!err.to_string().contains(&source.to_string()));
            }
            _ => assert_eq!(err, expected, "{}", String::from_utf8_lossy(body)),
        }
        assert!(err.to_string().starts_with(message), "{err}");
    }
}

#[test]
fn deep_nesting_is_an_error_not_a_stack_overflow() {
    let depth = 10_000;
    let body = format!(
        r#"{{"event":"x","data":{}{}}}"#,
        "[".repeat(depth),
        "]".repeat(depth)
    );
    assert!(matches!(
        Event::parse(body.as_bytes()),
        Err(ParseError::NotJson { .. })
    ));
}

fn documented_payloads() -> Vec<Value> {
    fixtures_in("docs")
        .into_iter()
        .chain(fixtures_in("events"))
        .map(|(_, body)| serde_json::from_slice(&body).unwrap())
        .collect()
}

fn arbitrary_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        "[a-z.\\\\\"\u{2028}😀]{0,12}".prop_map(Value::String),
        prop_oneof![
            Just("message.incoming"),
            Just("message.read"),
            Just("event"),
            Just("data"),
            Just("message_id"),
            Just("timestamp")
        ]
        .prop_map(|s| Value::String(s.into())),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::btree_map(
                prop_oneof![
                    Just("event".to_owned()),
                    Just("data".to_owned()),
                    Just("timestamp".to_owned()),
                    Just("message_id".to_owned()),
                    Just("from".to_owned()),
                    "[a-z_]{1,8}"
                ],
                inner,
                0..6
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #[test]
    fn compact_and_pretty_json_parse_to_equal_events(index in any::<prop::sample::Index>()) {
        let payloads = documented_payloads();
        let payload = &payloads[index.index(payloads.len())];
        let compact = Event::parse(serde_json::to_string(payload).unwrap().as_bytes()).unwrap();
        let pretty = Event::parse(serde_json::to_string_pretty(payload).unwrap().as_bytes()).unwrap();
        prop_assert_eq!(compact, pretty);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = Event::parse(&bytes);
    }

    #[test]
    fn arbitrary_json_never_panics_and_round_trips(value in arbitrary_json(), kind in prop_oneof![
        Just("message.incoming"), Just("message.received"), Just("message.read"), Just("message.failed"),
        Just("contact.created"), Just("campaign.completed"), Just("transfer.created"), Just("x.y")]) {
        for body in [value.clone(), json!({"event": kind, "timestamp": value.clone(), "data": value.clone()})] {
            let text = serde_json::to_vec(&body).unwrap();
            if let Ok(event) = Event::parse(&text) {
                let again = Event::parse(&serde_json::to_vec(&event).unwrap()).unwrap();
                prop_assert_eq!(&again, &event);
                serde_json::to_string(&event.payload()).unwrap();
            }
        }
    }
}

#[test]
fn unix_milliseconds_are_read_as_milliseconds_and_other_forms_stay_unreadable() {
    let time_of = |timestamp: &str| {
        let body = format!(
            r#"{{"event":"message.read","timestamp":{timestamp},"data":{{"message_id":"m"}}}}"#
        );
        Event::parse(body.as_bytes()).unwrap().time().clone()
    };
    let at = |text: &str| EventTime::At {
        at: Timestamp::parse_rfc3339(text).unwrap(),
    };
    assert_eq!(time_of("1780369298250"), at("2026-06-02T03:01:38.25Z"));
    assert_eq!(time_of(r#""1780369298250""#), at("2026-06-02T03:01:38.25Z"));
    assert_eq!(time_of("1780369298"), at("2026-06-02T03:01:38Z"));
    for unreadable in [
        "1780369298.5",
        r#""2026-06-02T03:01:38""#,
        r#""10000-01-01T00:00:00Z""#,
        r#""yesterday""#,
    ] {
        assert!(
            matches!(time_of(unreadable), EventTime::Unreadable { .. }),
            "{unreadable}"
        );
    }
}

/// Found by the `timestamp_forms` fuzzer: an unreadable float timestamp came back one ulp
/// off, because serde_json's default float parsing is not exact. "Kept as sent" must be exact.
#[test]
fn regression_an_unreadable_float_timestamp_is_kept_exactly() {
    let sent = 1.6607996643032946e243_f64;
    let body = format!(
        r#"{{"event":"message.read","timestamp":{},"data":{{"message_id":"m"}}}}"#,
        serde_json::to_string(&sent).unwrap()
    );
    let event = Event::parse(body.as_bytes()).unwrap();
    match event.time() {
        EventTime::Unreadable { raw, .. } => assert_eq!(raw.as_f64(), Some(sent)),
        other => panic!("{other:?}"),
    }
}

/// Found by the `timestamp_forms` fuzzer: unix seconds in year -2723 were accepted, but RFC 3339
/// can only write years 0000 to 9999, so the timestamp could not be written back.
#[test]
fn regression_unix_seconds_outside_rfc3339_years_are_unreadable_not_misrendered() {
    // Magnitudes of 10^11 and more are read as milliseconds, so these are out of range either
    // way: seconds before year 0000, and milliseconds after year 9999.
    for seconds in [
        -62_167_219_201_i64,
        -99_999_999_999,
        253_402_300_800_000,
        i64::MAX,
    ] {
        let body = format!(
            r#"{{"event":"message.read","timestamp":{seconds},"data":{{"message_id":"m"}}}}"#
        );
        assert!(matches!(
            Event::parse(body.as_bytes()).unwrap().time(),
            EventTime::Unreadable { .. }
        ));
    }
    assert_eq!(
        Timestamp::parse_rfc3339("0000-01-01T00:00:00+01:00"),
        None,
        "year -1 in UTC"
    );
    assert_eq!(
        Timestamp::parse_rfc3339("9999-12-31T23:59:59-01:00"),
        None,
        "year 10000 in UTC"
    );
    for seconds in [-62_167_219_200_i64, 0, 253_402_300_799] {
        let at = Timestamp::from_unix_seconds(seconds).unwrap();
        assert_eq!(
            Timestamp::parse_rfc3339(&at.to_rfc3339()),
            Some(at),
            "{seconds}"
        );
    }
}

#[test]
fn every_key_that_decides_dispatch_dedup_or_freshness_may_appear_only_once() {
    for (body, path) in [
        (
            r#"{"event":"message.read","event":"message.sent","data":{}}"#,
            "$.event",
        ),
        (
            r#"{"event":"message.read","timestamp":1780369298,"timestamp":1,"data":{}}"#,
            "$.timestamp",
        ),
        (
            r#"{"event":"message.read","data":{"message_id":"a"},"data":{"message_id":"b"}}"#,
            "$.data",
        ),
        (
            r#"{"event":"message.read","data":{"message_id":"a","message_id":"b"}}"#,
            "$.data.message_id",
        ),
    ] {
        assert_eq!(
            Event::parse(body.as_bytes()).unwrap_err(),
            aisoule_webhooks::ParseError::DuplicateKey { path },
            "{body}"
        );
    }
}

/// Every error prints its own cause once: `Display` never repeats what `source()` returns, so
/// a reporter that walks the chain (as `error::chain` and the receiver's log line do) names
/// each cause exactly once.
#[test]
fn errors_print_each_cause_once() {
    use aisoule_webhooks::error::{TimestampError, VerifyError, chain};
    use aisoule_webhooks::{Rejection, error::PayloadError};

    let cases: Vec<Box<dyn std::error::Error>> = vec![
        Box::new(Rejection::from(VerifyError::Missing)),
        Box::new(Rejection::from(Event::parse(b"{").unwrap_err())),
        Box::new(Rejection::UnreadableTimestamp {
            reason: TimestampError::NotRfc3339,
        }),
        Box::new(Event::parse(b"[1,").unwrap_err()),
        Box::new(PayloadError::Unreadable {
            source: serde_json::from_slice::<Value>(b"{").unwrap_err().into(),
        }),
    ];
    for error in &cases {
        let source = error.source().expect("each case has a source");
        assert!(
            !error.to_string().contains(&source.to_string()),
            "{error} repeats {source}"
        );
        let line = chain(error.as_ref()).to_string();
        assert_eq!(line.matches(&source.to_string()).count(), 1, "{line}");
        assert!(line.starts_with(&error.to_string()), "{line}");
    }
    assert_eq!(
        chain(&Rejection::from(VerifyError::Missing)).to_string(),
        "signature rejected: no signature: neither X-Webhook-Signature nor X-AISoule-Signature \
         is present"
    );
}

/// Found by the `event_parser` fuzz target: a payload whose `data` repeats a key it maps is
/// unrecognized, and the same payload pretty-printed, or with whitespace around it, is still
/// the same event (the reason's position in the body does not count).
#[test]
fn a_repeated_data_key_gives_the_same_event_whatever_the_layout() {
    let pretty = b"\n\n\n{\n  \"event\": \"campaign.completed\",\n  \"data\": {\n    \"id\": \"uuid\",\n    \"read\": 6500,\n    \"read\": 650\n  }\n}\n";
    let compact = br#"{"event":"campaign.completed","data":{"id":"uuid","read":6500,"read":650}}"#;
    let (a, b) = (
        Event::parse(pretty).unwrap(),
        Event::parse(compact).unwrap(),
    );
    assert!(matches!(
        a.payload(),
        Payload::Unrecognized(u) if matches!(u.reason, PayloadError::Unreadable { .. })
    ));
    assert_eq!(a, b);
    let again = Event::parse(&serde_json::to_vec(&a).unwrap()).unwrap();
    assert_eq!(again, a);
}
