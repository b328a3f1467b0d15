//! The webhook authenticator with arbitrary secrets, bodies and headers.
//!
//! Input layout: `[secret length][mutation byte][secret...][header length][header...][body...]`.
//!
//! Invariants: never panics; a signature made with `sign` always verifies (with any case of
//! hex and surrounding whitespace); a signature with any one character changed, made for
//! another body, or made with another secret never does; an arbitrary header verifies only if
//! it is that signature; `Bearer <secret>` authenticates exactly when the secret is a token a
//! header can carry, and nothing else does.
#![no_main]

use libfuzzer_sys::fuzz_target;
use livectx::ingest::webhook::{bearer_valid, sign, signature_valid};

fuzz_target!(|input: &[u8]| {
    let Some((&secret_len, rest)) = input.split_first() else {
        return;
    };
    let Some((&mutation, rest)) = rest.split_first() else {
        return;
    };
    let (secret, rest) = rest.split_at(usize::from(secret_len).min(rest.len()));
    let Some((&header_len, rest)) = rest.split_first() else {
        return;
    };
    let (header, body) = rest.split_at(usize::from(header_len).min(rest.len()));
    let secret = String::from_utf8_lossy(secret);
    let header = String::from_utf8_lossy(header);

    // A genuine signature verifies, also upper-cased and padded.
    let genuine = sign(&secret, body);
    assert!(signature_valid(&secret, body, Some(&genuine)));
    let upper = format!("  sha256={} ", genuine["sha256=".len()..].to_uppercase());
    assert!(signature_valid(&secret, body, Some(&upper)));

    // One changed hex digit never verifies.
    let mut mutated = genuine.clone().into_bytes();
    let at = "sha256=".len() + usize::from(mutation) % 64;
    mutated[at] = if mutated[at] == b'0' { b'1' } else { b'0' };
    let mutated = String::from_utf8(mutated).expect("hex is ASCII");
    assert!(!signature_valid(&secret, body, Some(&mutated)));

    // Another body, or another secret, never verifies.
    let mut other_body = body.to_vec();
    other_body.push(mutation);
    assert!(!signature_valid(&secret, &other_body, Some(&genuine)));
    let other_secret = format!("{secret}x");
    assert!(!signature_valid(&other_secret, body, Some(&genuine)));
    assert!(!signature_valid(&secret, body, None));

    // An arbitrary header verifies only if it is the genuine signature.
    if signature_valid(&secret, body, Some(&header)) {
        let compact: String = header.chars().filter(|c| !c.is_whitespace()).collect();
        assert_eq!(compact.to_ascii_lowercase(), genuine);
    }

    // Bearer: the secret itself, and nothing else.
    let carried = !secret.is_empty() && secret.trim() == secret && !secret.contains(' ');
    assert_eq!(
        bearer_valid(&secret, Some(&format!("Bearer {secret}"))),
        carried,
        "secret {secret:?}"
    );
    if bearer_valid(&secret, Some(&header)) {
        assert!(header.trim().ends_with(secret.as_ref()));
        assert!(!secret.is_empty());
    }
    assert!(!bearer_valid(&secret, None));
    assert!(!bearer_valid(&secret, Some(&genuine)));
});
