//! Parsing every documented payload (both dialects), against `serde_json::Value` and against a
//! minimal struct that borrows every documented field as `&str`.

use std::hint::black_box;

use aisoule_webhooks::Event;
use criterion::{Criterion, criterion_group, criterion_main};
use serde::Deserialize;
use serde_json::value::RawValue;

/// The least a typed parse can do: borrow each documented field, allocate nothing.
#[derive(Deserialize)]
#[allow(dead_code)]
struct Minimal<'a> {
    #[serde(borrow)]
    event: &'a str,
    #[serde(borrow)]
    timestamp: Option<&'a RawValue>,
    #[serde(borrow)]
    data: MinimalData<'a>,
}

#[derive(Deserialize)]
#[allow(dead_code)]
struct MinimalData<'a> {
    #[serde(borrow)]
    message_id: Option<&'a str>,
    from: Option<&'a str>,
    sender: Option<&'a str>,
    to: Option<&'a str>,
    recipient: Option<&'a str>,
    waba_number: Option<&'a str>,
    #[serde(rename = "type")]
    message_type: Option<&'a str>,
    text: Option<&'a str>,
    body: Option<&'a str>,
    contact_id: Option<&'a str>,
    contact_name: Option<&'a str>,
    whatsapp_account_id: Option<&'a str>,
    status: Option<&'a str>,
    error_code: Option<i64>,
    error_message: Option<&'a str>,
    id: Option<&'a str>,
    phone_number: Option<&'a str>,
    name: Option<&'a str>,
    source: Option<&'a str>,
    total: Option<u64>,
    sent: Option<u64>,
    delivered: Option<u64>,
    read: Option<u64>,
    failed: Option<u64>,
    from_agent_id: Option<&'a str>,
    to_agent_id: Option<&'a str>,
    to_team_id: Option<&'a str>,
    notes: Option<&'a str>,
}

/// Every payload the platform docs show, and each documented event in the other dialect.
fn documented_payloads() -> Vec<Vec<u8>> {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
    let mut payloads = Vec::new();
    for folder in ["docs", "events"] {
        let mut paths: Vec<_> = std::fs::read_dir(format!("{root}/{folder}"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| {
                let name = p.file_name().unwrap().to_string_lossy();
                folder == "docs" || name.starts_with("help.") || name.starts_with("developer.")
            })
            .collect();
        paths.sort();
        payloads.extend(paths.into_iter().map(|p| std::fs::read(p).unwrap()));
    }
    payloads
}

fn parse(c: &mut Criterion) {
    let payloads = documented_payloads();
    assert_eq!(payloads.len(), 20);
    for payload in &payloads {
        assert!(serde_json::from_slice::<Minimal<'_>>(payload).is_ok());
    }
    let mut group = c.benchmark_group(format!("parse_{}_documented_payloads", payloads.len()));
    group.bench_function("serde_json_value", |b| {
        b.iter(|| {
            for payload in &payloads {
                black_box(serde_json::from_slice::<serde_json::Value>(black_box(payload)).unwrap());
            }
        })
    });
    group.bench_function("minimal_borrowed_struct", |b| {
        b.iter(|| {
            for payload in &payloads {
                black_box(serde_json::from_slice::<Minimal<'_>>(black_box(payload)).unwrap());
            }
        })
    });
    group.bench_function("aisoule_event_parse", |b| {
        b.iter(|| {
            for payload in &payloads {
                black_box(Event::parse(black_box(payload)).unwrap());
            }
        })
    });
    group.finish();
}

criterion_group!(benches, parse);
criterion_main!(benches);
