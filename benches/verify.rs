//! Verification cost against the floor: HMAC-SHA256 with a precomputed key.

use std::hint::black_box;

use aisoule_webhooks::{Verifier, WebhookSecret, sign};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use hmac::{KeyInit, Mac};

fn body_of(len: usize) -> Vec<u8> {
    let mut body = br#"{"event":"message.incoming","timestamp":"2026-05-29T10:30:00Z","data":{"message_id":"wamid.HBgLOTE5ODc2","from":"+919876543210","type":"text","text":""#.to_vec();
    body.resize(len.saturating_sub(3), b'x');
    body.extend_from_slice(br#""}}"#);
    body
}

fn verify(c: &mut Criterion) {
    let secret = WebhookSecret::new("whsec_3f9a1c0e7b5d2468ace0").unwrap();
    let verifier = Verifier::new(secret.clone());
    let keyed = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.expose_bytes()).unwrap();
    let mut group = c.benchmark_group("verify");
    for len in [300usize, 1024, 16 * 1024, 64 * 1024] {
        let body = body_of(len);
        let header = sign(&secret, &body).to_prefixed();
        group.throughput(Throughput::Bytes(len as u64));
        group.bench_with_input(
            BenchmarkId::new("hmac_precomputed_floor", len),
            &body,
            |b, body| {
                b.iter(|| {
                    let mut mac = keyed.clone();
                    mac.update(black_box(body));
                    black_box(mac.finalize().into_bytes())
                })
            },
        );
        group.bench_with_input(
            BenchmarkId::new("aisoule_verify_value", len),
            &body,
            |b, body| {
                b.iter(|| verifier.verify_value(black_box(header.as_bytes()), black_box(body)))
            },
        );
    }
    group.finish();
}

criterion_group!(benches, verify);
criterion_main!(benches);
