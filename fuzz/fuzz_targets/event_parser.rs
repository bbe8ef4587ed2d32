//! Arbitrary bytes: never a panic, and every event re-serialises and parses to an equal event.
#![no_main]

use aisoule_webhooks::Event;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    let Ok(event) = Event::parse(body) else {
        return;
    };
    let again = Event::parse(&serde_json::to_vec(&event).expect("an event serializes"))
        .expect("a serialized event parses");
    assert_eq!(again, event);
    // The normalised view serializes too, whatever arrived.
    serde_json::to_vec(&event.payload()).expect("a payload serializes");
    assert_eq!(event.raw().as_ref(), body);
});
