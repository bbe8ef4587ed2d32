//! A dudect-style timing check of the signature comparison (CI runs it through
//! `benches/constant_time.sh`).
//!
//! Left: header values that differ from the real signature in the first byte. Right: in the
//! last byte. A comparison that stops at the first difference is faster for Left; Welch's
//! t-test over many interleaved runs tells whether the two classes differ at all.
//!
//! ```text
//! cargo bench --bench constant_time
//! ```
//!
//! |t| above about 5 is evidence of a timing difference; below it, none was found. A control,
//! an early-exit byte comparison like the platform's Node sample (`===`), shows what a leak
//! looks like on the same machine.
//!
//! Its `std::hint::black_box` on every byte is what keeps it a loop: without it LLVM turns an
//! early-exit comparison of two `[u8; 32]`, like `==`, into the same branch-free
//! `pcmpeqb`/`pand`/`pmovmskb` sequence a constant-time compare uses on x86-64, so that an
//! early-exit `==` of the tags would be invisible here; the verifier leaves the comparison to
//! the MAC library's `verify_slice` (README, Security).

// The bench builds the wrong signatures it times from a real one's bytes.
#![allow(clippy::disallowed_methods)]

use aisoule_webhooks::{Verifier, WebhookSecret, sign};
use dudect_bencher::ctbench::{BenchMetadata, BenchName, BenchOpts, run_benches_console};
use dudect_bencher::rand::RngExt;
use dudect_bencher::{BenchRng, Class, CtRunner};

const BODY: &[u8] = br#"{"event":"message.received","timestamp":1780369298,"data":{"message_id":"msg_90a82b7194689c1","waba_number":"15550199999","sender":"918856879188","recipient":"15550199999","type":"text","body":"Hi there! I need pricing info."}}"#;

/// Header values off by one bit in the first byte (Left) or the last byte (Right).
fn inputs(real: [u8; 32], rng: &mut BenchRng) -> Vec<(Class, String)> {
    let mut inputs = Vec::with_capacity(200_000);
    for _ in 0..200_000 {
        let mut tag = real;
        let class = if rng.random::<bool>() {
            tag[0] ^= 0x01;
            Class::Left
        } else {
            tag[31] ^= 0x01;
            Class::Right
        };
        inputs.push((class, const_hex::encode(tag)));
    }
    inputs
}

fn verifier_first_vs_last_byte(runner: &mut CtRunner, rng: &mut BenchRng) {
    let secret = WebhookSecret::new("whsec_3f9a1c0e7b5d2468ace0").expect("valid");
    let verifier = Verifier::new(secret.clone());
    for (class, value) in inputs(*sign(&secret, BODY).as_bytes(), rng) {
        runner.run_one(class, || verifier.verify_value(value.as_bytes(), BODY));
    }
}

/// The control: what the platform's Node sample does, byte by byte with an early exit.
fn control_early_exit_compare(runner: &mut CtRunner, rng: &mut BenchRng) {
    let secret = WebhookSecret::new("whsec_3f9a1c0e7b5d2468ace0").expect("valid");
    let expected = sign(&secret, BODY).to_hex();
    for (class, value) in inputs(*sign(&secret, BODY).as_bytes(), rng) {
        runner.run_one(class, || {
            let (a, b) = (std::hint::black_box(expected.as_bytes()), value.as_bytes());
            a.iter().zip(b).all(|(x, y)| std::hint::black_box(x == y))
        });
    }
}

fn main() {
    // `cargo bench` passes `--bench`, which the dudect command line would reject, so the
    // runner is called directly.
    let benches = vec![
        BenchMetadata {
            name: BenchName("verifier_first_vs_last_byte"),
            seed: None,
            benchfn: verifier_first_vs_last_byte,
        },
        BenchMetadata {
            name: BenchName("control_early_exit_compare"),
            seed: None,
            benchfn: control_early_exit_compare,
        },
    ];
    run_benches_console(BenchOpts::default(), benches).expect("the console runner");
}
