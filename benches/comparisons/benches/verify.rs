//! Verification cost at 300 B, 1 KiB, 16 KiB and 64 KiB, in one run with:
//! the floor (HMAC-SHA256 with the key's pad blocks hashed once), this crate, and the `svix` and
//! `standardwebhooks` crates' verify (each signed with its own scheme).

// The floor computes a tag without comparing it: the cost of the HMAC alone.
#![allow(clippy::disallowed_methods)]

use std::hint::black_box;
use std::time::{SystemTime, UNIX_EPOCH};

use aisoule_webhooks::{Verifier, WebhookSecret, sign};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use hmac::{KeyInit, Mac};

const SECRET: &str = "whsec_3f9a1c0e7b5d2468ace0";
/// The same 26 key bytes for every scheme; svix-style secrets carry them base64-encoded.
const SVIX_SECRET: &str = "whsec_d2hzZWNfM2Y5YTFjMGU3YjVkMjQ2OGFjZTA=";

/// A message.received body of exactly `len` bytes (300 B is the size of a typical event).
fn body_of(len: usize) -> Vec<u8> {
    let head = br#"{"event":"message.received","timestamp":1780369298,"data":{"message_id":"msg_90a82b7194689c1","waba_number":"15550199999","sender":"918856879188","recipient":"15550199999","type":"text","body":""#;
    let mut body = head.to_vec();
    body.resize(len - 3, b'x');
    body.extend_from_slice(br#""}}"#);
    assert_eq!(body.len(), len);
    body
}

fn verify(c: &mut Criterion) {
    let secret = WebhookSecret::new(SECRET).unwrap();
    let verifier = Verifier::new(secret.clone());
    let keyed = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.expose_bytes()).unwrap();
    let svix = svix::webhooks::Webhook::new(SVIX_SECRET).unwrap();
    let standard = standardwebhooks::Webhook::new(SVIX_SECRET).unwrap();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;

    let mut group = c.benchmark_group("verify");
    for len in [300usize, 1024, 16 * 1024, 64 * 1024] {
        let body = body_of(len);
        group.throughput(Throughput::Bytes(len as u64));

        group.bench_with_input(
            BenchmarkId::new("floor_hmac_precomputed", len),
            &body,
            |b, body| {
                b.iter(|| {
                    let mut mac = keyed.clone();
                    mac.update(black_box(body));
                    black_box(mac.finalize().into_bytes())
                })
            },
        );

        let header = sign(&secret, &body).to_prefixed();
        assert!(verifier.verify_value(header.as_bytes(), &body).is_ok());
        group.bench_with_input(
            BenchmarkId::new("aisoule_webhooks", len),
            &body,
            |b, body| {
                b.iter(|| verifier.verify_value(black_box(header.as_bytes()), black_box(body)))
            },
        );

        let mut svix_headers = http::HeaderMap::new();
        svix_headers.insert("svix-id", "msg_90a82b7194689c1".parse().unwrap());
        svix_headers.insert("svix-timestamp", now.to_string().parse().unwrap());
        let signature = svix.sign("msg_90a82b7194689c1", now, &body).unwrap();
        svix_headers.insert("svix-signature", signature.parse().unwrap());
        assert!(svix.verify(&body, &svix_headers).is_ok());
        group.bench_with_input(BenchmarkId::new("svix", len), &body, |b, body| {
            b.iter(|| svix.verify(black_box(body), black_box(&svix_headers)))
        });

        let mut standard_headers = http::HeaderMap::new();
        standard_headers.insert("webhook-id", "msg_90a82b7194689c1".parse().unwrap());
        standard_headers.insert("webhook-timestamp", now.to_string().parse().unwrap());
        let signature = standard.sign("msg_90a82b7194689c1", now, &body).unwrap();
        standard_headers.insert("webhook-signature", signature.parse().unwrap());
        assert!(standard.verify(&body, &standard_headers).is_ok());
        group.bench_with_input(
            BenchmarkId::new("standardwebhooks", len),
            &body,
            |b, body| b.iter(|| standard.verify(black_box(body), black_box(&standard_headers))),
        );
    }
    group.finish();
}

criterion_group!(benches, verify);
criterion_main!(benches);
