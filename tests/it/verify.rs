//! The signature verifier: cross-implementation vectors, RFC 4231, and every header rule.

use aisoule_webhooks::{
    AISOULE_SIGNATURE, SecretError, Verifier, VerifyError, WEBHOOK_SIGNATURE, WebhookSecret, sign,
};
use http::{HeaderMap, HeaderValue};
use proptest::prelude::*;

use crate::support::{fixture, fixtures_in};

const SECRET: &str = "whsec_3f9a1c0e7b5d2468ace0";

fn secret(s: &str) -> WebhookSecret {
    WebhookSecret::new(s).expect("valid secret")
}

/// Zeroize on drop, as far as a test without `unsafe` can see it. `WebhookSecret` has the
/// `ZeroizeOnDrop` bound, which the crate ties at compile time to its field's own zeroizing
/// drop; and a clone owns its own copy, so dropping (and zeroizing) it leaves the original
/// intact. The limit: seeing the zeros in freed memory takes `unsafe` or an instrumented
/// allocator, which the crate's rules keep out; the zeroing itself is the `zeroize` crate's,
/// and tested there.
#[test]
fn secrets_zeroize_on_drop_and_clones_own_their_copy() {
    fn zeroizes_on_drop<T: zeroize::ZeroizeOnDrop>(_: &T) {}
    let original = secret(SECRET);
    zeroizes_on_drop(&original);
    let copy = original.clone();
    assert_ne!(
        copy.expose_bytes().as_ptr(),
        original.expose_bytes().as_ptr()
    );
    drop(copy);
    assert_eq!(original.expose_bytes(), SECRET.as_bytes());
}

fn body() -> Vec<u8> {
    fixture("docs/developer.message.received.json")
}

fn real_hex(body: &[u8]) -> String {
    sign(&secret(SECRET), body).to_hex()
}

fn verify_one(value: &str, body: &[u8]) -> Result<String, VerifyError> {
    Verifier::new(secret(SECRET))
        .verify_value(value.as_bytes(), body)
        .map(|v| v.secret_label().to_owned())
}

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.append(
            http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    map
}

#[derive(serde::Deserialize)]
struct VectorFile {
    generator: String,
    vectors: Vec<Vector>,
}

#[derive(serde::Deserialize)]
struct Vector {
    payload: String,
    secret: String,
    signature: String,
}

#[test]
fn python_and_node_vectors_over_the_docs_payloads_verify() {
    for file in [
        "signatures/python-vectors.json",
        "signatures/node-vectors.json",
    ] {
        let vectors: VectorFile = serde_json::from_slice(&fixture(file)).unwrap();
        assert_eq!(
            vectors.vectors.len(),
            4 * fixtures_in("docs").len(),
            "{file}"
        );
        for v in &vectors.vectors {
            let body = fixture(&v.payload);
            let verifier = Verifier::with_label("dashboard", secret(&v.secret));
            for value in [v.signature.clone(), format!("sha256={}", v.signature)] {
                let verified = verifier.verify_value(value.as_bytes(), &body);
                assert_eq!(
                    verified.map(|v| v.secret_label().to_owned()),
                    Ok("dashboard".to_owned()),
                    "{} vector for {} with secret {:?}",
                    vectors.generator,
                    v.payload,
                    v.secret
                );
            }
            assert_eq!(sign(&secret(&v.secret), &body).to_hex(), v.signature);
        }
    }
}

/// RFC 4231 §4: HMAC-SHA256 test cases, through the same keying and tagging as `sign`.
#[test]
fn rfc4231_cases_pass_through_the_hmac_wiring() {
    let repeat = |byte: u8, n: usize| vec![byte; n];
    let cases: Vec<(Vec<u8>, Vec<u8>, &str)> = vec![
        (repeat(0x0b, 20), b"Hi There".to_vec(),
         "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"),
        (b"Jefe".to_vec(), b"what do ya want for nothing?".to_vec(),
         "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"),
        (repeat(0xaa, 20), repeat(0xdd, 50),
         "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe"),
        ((1..=0x19).collect(), repeat(0xcd, 50),
         "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b"),
        // Case 5's truncation is checked only as a prefix: the crate never uses short tags.
        (repeat(0x0c, 20), b"Test With Truncation".to_vec(),
         "a3b6167473100ee06e0c796c2955552b"),
        (repeat(0xaa, 131), b"Test Using Larger Than Block-Size Key - Hash Key First".to_vec(),
         "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"),
        (repeat(0xaa, 131),
         b"This is a test using a larger than block-size key and a larger than block-size data. The key needs to be hashed before being used by the HMAC algorithm.".to_vec(),
         "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2"),
    ];
    for (i, (key, data, expected)) in cases.iter().enumerate() {
        let key = WebhookSecret::from_bytes(key.clone()).unwrap();
        let tag = sign(&key, data).to_hex();
        assert!(tag.starts_with(expected), "RFC 4231 case {}", i + 1);
        if expected.len() == 64 {
            let verified = Verifier::new(key).verify_value(expected.as_bytes(), data);
            assert!(verified.is_ok(), "RFC 4231 case {} verifies", i + 1);
        }
    }
}

#[test]
fn accepted_forms_lowercase_uppercase_prefixed_and_padded() {
    let body = body();
    let hex = real_hex(&body);
    for value in [
        hex.clone(),
        hex.to_uppercase(),
        format!("sha256={hex}"),
        format!("sha256={}", hex.to_uppercase()),
        format!("SHA256={hex}"),
        format!("  {hex}\t"),
        format!(" sha256={hex} "),
    ] {
        assert_eq!(verify_one(&value, &body), Ok("default".into()), "{value:?}");
    }
}

#[test]
fn both_header_names_in_any_case_and_either_form() {
    let body = body();
    let hex = real_hex(&body);
    for (name, value) in [
        ("X-Webhook-Signature", hex.clone()),
        ("x-webhook-signature", format!("sha256={hex}")),
        ("X-AISoule-Signature", format!("sha256={hex}")),
        ("X-AISOULE-SIGNATURE", hex.clone()),
    ] {
        let map = headers(&[(name, &value)]);
        let verified = Verifier::new(secret(SECRET)).verify(&map, &body);
        assert!(verified.is_ok(), "{name}: {value} -> {verified:?}");
    }
}

#[test]
fn wrong_lengths_and_truncated_tags_are_malformed_never_compared() {
    let body = body();
    let hex = real_hex(&body);
    let cases = [
        (
            hex[..63].to_owned(),
            VerifyError::WrongLength { digits: 63 },
        ),
        (format!("{hex}0"), VerifyError::WrongLength { digits: 65 }),
        (
            hex[..32].to_owned(),
            VerifyError::WrongLength { digits: 32 },
        ),
        // The MAC's first byte alone: a "tag" that a partial comparison would accept.
        (hex[..2].to_owned(), VerifyError::WrongLength { digits: 2 }),
        (
            format!("sha256={}", &hex[..2]),
            VerifyError::WrongLength { digits: 2 },
        ),
        (
            format!("{}z", &hex[..63]),
            VerifyError::NotHex { position: 63 },
        ),
    ];
    for (value, expected) in cases {
        let err = verify_one(&value, &body).unwrap_err();
        assert_eq!(err, expected, "{value}");
        assert!(err.is_malformed());
    }
    assert_eq!(
        VerifyError::WrongLength { digits: 63 }.to_string(),
        "the signature has 63 hex digits; 64 expected"
    );
}

#[test]
fn placeholders_prefixes_and_empty_values_have_their_own_errors() {
    let body = fixture("docs/developer-curl-sample.message.received.json");
    let cases = [
        ("sha256=MOCK_SIGNATURE", VerifyError::Placeholder),
        ("MOCK_SIGNATURE", VerifyError::Placeholder),
        (
            "sha1=2fd4e1c67a2d28fced849ee1bb76e7391b93eb12",
            VerifyError::UnsupportedAlgorithm {
                algorithm: "sha1".into(),
            },
        ),
        (
            "md5=9e107d9d372bb6826bd81d3542a419d6",
            VerifyError::UnsupportedAlgorithm {
                algorithm: "md5".into(),
            },
        ),
        ("", VerifyError::Empty),
        ("   ", VerifyError::Empty),
        ("sha256=", VerifyError::PrefixOnly),
        ("sha256=  ", VerifyError::PrefixOnly),
    ];
    for (value, expected) in cases {
        assert_eq!(verify_one(value, &body), Err(expected), "{value:?}");
    }
    let message = VerifyError::Placeholder.to_string();
    assert!(
        message.contains("MOCK_SIGNATURE") && message.contains("placeholder"),
        "{message}"
    );
    assert!(
        VerifyError::UnsupportedAlgorithm {
            algorithm: "sha1".into()
        }
        .to_string()
        .contains("sha1")
    );
}

/// A prefix names an algorithm when it is 1 to 16 letters, digits, `-` or `_`; anything else
/// before the `=` is garbage, reported where its first non-hex byte is.
#[test]
fn a_prefix_is_an_algorithm_only_when_it_looks_like_one() {
    let body = body();
    let digits = "2fd4e1c67a2d28fced849ee1bb76e7391b93eb12";
    let unsupported = |name: &str| VerifyError::UnsupportedAlgorithm {
        algorithm: name.into(),
    };
    let cases = [
        ("sha-1", unsupported("sha-1")),
        ("sha_1", unsupported("sha_1")),
        ("SHA-512", unsupported("sha-512")),
        ("abcdefghijklmnop", unsupported("abcdefghijklmnop")),
        // 17 letters is too long for a name: the first non-hex byte is the `g`.
        ("abcdefghijklmnopq", VerifyError::NotHex { position: 6 }),
        // 17 hex digits: every byte of the prefix is hex, so the `=` is the first that is not.
        ("abcdefabcdefabcde", VerifyError::NotHex { position: 17 }),
        ("ab!", VerifyError::NotHex { position: 2 }),
        ("sha 1", VerifyError::NotHex { position: 0 }),
        ("", VerifyError::NotHex { position: 0 }),
    ];
    for (prefix, expected) in cases {
        let value = format!("{prefix}={digits}");
        assert_eq!(verify_one(&value, &body), Err(expected), "{value:?}");
    }
}

#[test]
fn any_change_to_body_or_secret_is_a_mismatch() {
    let body = body();
    let hex = real_hex(&body);
    let mut newline = body.clone();
    newline.push(b'\n');
    let mut flipped = body.clone();
    flipped[body.len() / 2] ^= 0x01;
    for changed in [newline, flipped, Vec::new()] {
        assert_eq!(verify_one(&hex, &changed), Err(VerifyError::Mismatch));
    }
    let wrong_secret = Verifier::new(secret("whsec_someone_else"));
    assert_eq!(
        wrong_secret.verify_value(hex.as_bytes(), &body),
        Err(VerifyError::Mismatch)
    );
}

#[test]
fn rotation_accepts_old_and_new_and_reports_which() {
    let body = body();
    let new = secret("whsec_new_2026_11");
    let old = secret("whsec_old_2026_05");
    let retired = secret("whsec_retired_2025");
    let verifier = Verifier::with_label("new", new.clone()).and_secret("old", old.clone());
    assert_eq!(verifier.secret_labels().collect::<Vec<_>>(), ["new", "old"]);

    let label = |s: &WebhookSecret| {
        verifier
            .verify_value(sign(s, &body).to_hex().as_bytes(), &body)
            .map(|v| v.secret_label().to_owned())
    };
    assert_eq!(label(&new), Ok("new".into()));
    assert_eq!(label(&old), Ok("old".into()));
    assert_eq!(label(&retired), Err(VerifyError::Mismatch));

    // Once the old secret is removed, its signatures stop verifying.
    let after = Verifier::with_label("new", new);
    assert_eq!(
        after.verify_value(sign(&old, &body).to_hex().as_bytes(), &body),
        Err(VerifyError::Mismatch)
    );
}

#[test]
fn two_headers_must_agree_and_repeats_must_match() {
    let body = body();
    let hex = real_hex(&body);
    let other = sign(&secret("whsec_other"), &body).to_hex();
    let verifier = Verifier::new(secret(SECRET));

    let agree = headers(&[
        ("x-webhook-signature", &hex),
        (
            "x-aisoule-signature",
            &format!("sha256={}", hex.to_uppercase()),
        ),
    ]);
    assert!(verifier.verify(&agree, &body).is_ok());

    let disagree = headers(&[
        ("x-webhook-signature", &hex),
        ("x-aisoule-signature", &other),
    ]);
    assert_eq!(
        verifier.verify(&disagree, &body),
        Err(VerifyError::Ambiguous { count: 2 })
    );

    let repeated = headers(&[
        ("x-webhook-signature", &hex),
        ("x-webhook-signature", &other),
    ]);
    assert_eq!(
        verifier.verify(&repeated, &body),
        Err(VerifyError::Ambiguous { count: 2 })
    );

    // Distinct digests are counted once each, however often they repeat.
    let third = sign(&secret("whsec_third"), &body).to_hex();
    let many = headers(&[
        ("x-webhook-signature", &hex),
        ("x-webhook-signature", &other),
        ("x-aisoule-signature", &third),
        ("x-aisoule-signature", &third),
    ]);
    assert_eq!(
        verifier.verify(&many, &body),
        Err(VerifyError::Ambiguous { count: 3 })
    );

    let repeated_same = headers(&[("x-aisoule-signature", &hex), ("x-aisoule-signature", &hex)]);
    assert!(verifier.verify(&repeated_same, &body).is_ok());

    // A malformed value anywhere rejects the delivery, even beside a valid one.
    let one_bad = headers(&[
        ("x-webhook-signature", &hex),
        ("x-aisoule-signature", "sha1=abc"),
    ]);
    assert!(verifier.verify(&one_bad, &body).unwrap_err().is_malformed());
}

#[test]
fn no_signature_header_is_missing() {
    let body = body();
    let unrelated = headers(&[
        ("x-signature", &real_hex(&body)),
        ("content-type", "application/json"),
    ]);
    let verifier = Verifier::new(secret(SECRET));
    assert_eq!(
        verifier.verify(&unrelated, &body),
        Err(VerifyError::Missing)
    );
    assert_eq!(
        verifier.verify(&HeaderMap::new(), &body),
        Err(VerifyError::Missing)
    );
    assert_eq!(WEBHOOK_SIGNATURE.as_str(), "x-webhook-signature");
    assert_eq!(AISOULE_SIGNATURE.as_str(), "x-aisoule-signature");
}

#[test]
fn secrets_refuse_empty_and_padded_strings_and_never_print() {
    assert_eq!(WebhookSecret::new("").unwrap_err(), SecretError::Empty);
    for padded in [" whsec_x", "whsec_x\n", "\twhsec_x", "whsec_x\r\n"] {
        assert_eq!(
            WebhookSecret::new(padded).unwrap_err(),
            SecretError::SurroundingWhitespace
        );
    }
    assert!(
        SecretError::SurroundingWhitespace
            .to_string()
            .contains("whitespace")
    );
    assert!(WebhookSecret::new("inner space ok").is_ok());
    assert_eq!(
        WebhookSecret::from_bytes(Vec::new()).unwrap_err(),
        SecretError::Empty
    );

    let secret = secret("whsec_do_not_print_me");
    let debug = format!(
        "{secret:?} {:?}",
        Verifier::with_label("primary", secret.clone())
    );
    assert!(!debug.contains("do_not_print_me"), "{debug}");
    assert!(
        debug.contains("[redacted]") && debug.contains("primary"),
        "{debug}"
    );
    // The key is the UTF-8 bytes of the string.
    assert_eq!(secret.expose_bytes(), "whsec_do_not_print_me".as_bytes());
}

fn any_secret() -> impl Strategy<Value = WebhookSecret> {
    "[!-~]([ -~]{0,62}[!-~])?".prop_map(|s| WebhookSecret::new(s).unwrap())
}

proptest! {
    #[test]
    fn sign_then_verify_holds_and_any_bit_flip_fails(
        secret in any_secret(),
        body in proptest::collection::vec(any::<u8>(), 0..2048),
        flip in any::<prop::sample::Index>(),
        bit in 0u8..8,
        sig_bit in 0usize..256,
    ) {
        let verifier = Verifier::new(secret.clone());
        let signature = sign(&secret, &body);
        prop_assert!(verifier.verify_value(signature.to_hex().as_bytes(), &body).is_ok());
        prop_assert!(verifier.verify_value(signature.to_prefixed().as_bytes(), &body).is_ok());

        if !body.is_empty() {
            let mut changed = body.clone();
            changed[flip.index(body.len())] ^= 1 << bit;
            prop_assert_eq!(
                verifier.verify_value(signature.to_hex().as_bytes(), &changed),
                Err(VerifyError::Mismatch)
            );
        }

        let mut tag = *signature.as_bytes();
        tag[sig_bit / 8] ^= 1 << (sig_bit % 8);
        prop_assert_eq!(
            verifier.verify_value(const_hex::encode(tag).as_bytes(), &body),
            Err(VerifyError::Mismatch)
        );
    }

    #[test]
    fn no_header_value_panics(value in proptest::collection::vec(any::<u8>(), 0..200), body in proptest::collection::vec(any::<u8>(), 0..64)) {
        let verifier = Verifier::new(WebhookSecret::new(SECRET).unwrap());
        let real = sign(&WebhookSecret::new(SECRET).unwrap(), &body);
        let accepted = verifier.verify_value(&value, &body).is_ok();
        let trimmed = value.trim_ascii().to_ascii_lowercase();
        let digest = trimmed.strip_prefix(b"sha256=").unwrap_or(&trimmed);
        prop_assert_eq!(accepted, digest == real.to_hex().as_bytes());
    }
}

/// A 71-byte value is the `sha256=` form only when its first seven bytes say so: any other
/// seven-byte prefix in front of the right digest is refused (case-insensitively, as
/// documented), so `sha512=` is never read as if it were `sha256=`.
#[test]
fn a_prefix_other_than_sha256_is_refused_even_with_the_right_digest() {
    let body = body();
    let hex = real_hex(&body);
    for prefix in ["sha512=", "sha256:", "xxxxxx=", "sha1xx=", "Sha25_="] {
        let value = format!("{prefix}{hex}");
        assert_eq!(value.len(), 71);
        assert!(
            verify_one(&value, &body).is_err(),
            "{prefix}<the right digest> must be refused"
        );
    }
    assert!(matches!(
        verify_one(&format!("sha512={hex}"), &body),
        Err(VerifyError::UnsupportedAlgorithm { .. })
    ));
    for prefix in ["sha256=", "SHA256=", "Sha256="] {
        assert_eq!(
            verify_one(&format!("{prefix}{hex}"), &body).as_deref(),
            Ok("default"),
            "{prefix} is the documented prefix, in any case"
        );
    }
}

/// `Signature::as_bytes` is the raw tag the hex forms spell: 32 bytes, the same as decoding
/// `to_hex()`, and the same as the HMAC computed independently.
#[test]
fn signatures_are_equal_only_when_every_byte_is() {
    // `Signature`'s `==` is hand-written (constant time, through `subtle`): it must still be
    // equality, and a signature's hash must agree with it.
    use std::collections::HashSet;
    let body = body();
    let same = (sign(&secret(SECRET), &body), sign(&secret(SECRET), &body));
    assert_eq!(same.0, same.1);
    let mut other_body = body.to_vec();
    *other_body.last_mut().unwrap() ^= 1;
    assert_ne!(same.0, sign(&secret(SECRET), &other_body));
    assert_ne!(same.0, sign(&secret("whsec_another"), &body));
    let set: HashSet<_> = [same.0, same.1, sign(&secret(SECRET), &other_body)].into();
    assert_eq!(set.len(), 2);
    // Hashed as its bytes, so that signatures spread over a table's buckets rather than all
    // colliding (a hash that wrote nothing would still agree with `==`).
    use std::hash::BuildHasher;
    let hasher = std::collections::hash_map::RandomState::new();
    assert_eq!(hasher.hash_one(same.0), hasher.hash_one(same.0.as_bytes()));
}

#[test]
fn a_signatures_bytes_are_the_tag_its_hex_spells() {
    let body = body();
    let signature = sign(&secret(SECRET), &body);
    let decoded = const_hex::decode(signature.to_hex()).unwrap();
    assert_eq!(signature.as_bytes().as_slice(), decoded.as_slice());
    assert_eq!(
        signature.to_prefixed(),
        format!("sha256={}", signature.to_hex())
    );
    use hmac::{KeyInit, Mac};
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(&body);
    assert_eq!(
        signature.as_bytes().as_slice(),
        mac.finalize().into_bytes().as_slice()
    );
}

/// A signature's `Debug` tells two signatures apart in a test failure (its first 8 hex
/// digits) but never shows the whole tag, which could be replayed.
#[test]
fn a_signature_debugs_as_its_first_eight_hex_digits_only() {
    let signature = sign(&secret("whsec_debug"), b"{}");
    let hex = signature.to_hex();
    assert_eq!(
        format!("{signature:?}"),
        format!("Signature({}…)", &hex[..8])
    );
    assert!(!format!("{signature:?}").contains(&hex[..9]));
}
