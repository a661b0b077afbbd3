//! The conformance suite every [`Hsm`](crate::Hsm) implementation must pass.
//!
//! Call [`run`] from a test with three instances: `a`, `a2` (a second instance
//! holding the same key material as `a`, e.g. a second node or a second
//! device with the same imported key) and `other` (an instance holding a
//! different key). Every rule of the [`Hsm`](crate::Hsm) contract is checked;
//! a violation panics with the rule's number.

use crate::{Error, Hsm};

/// Runs every check of the suite.
pub fn run(a: &dyn Hsm, a2: &dyn Hsm, other: &dyn Hsm) {
    roundtrip(a);
    context_binding(a);
    tamper_detection(a);
    randomized(a);
    portable(a, a2);
    foreign_key(a, other);
    derivation(a, a2, other);
    names(a, a2, other);
    concurrent(a);
}

fn roundtrip(h: &dyn Hsm) {
    for len in [0usize, 1, 16, 32, 33, 1000] {
        let p: Vec<u8> = (0..len).map(|i| i as u8).collect();
        let s = h.seal(&p, b"ctx").expect("rule 1: seal");
        let u = h.unseal(&s, b"ctx").expect("rule 1: unseal of own value");
        assert_eq!(
            u.as_slice(),
            p.as_slice(),
            "rule 1: roundtrip of {len} bytes"
        );
        // (Short plaintexts can appear in random bytes by chance.)
        if len >= 16 {
            assert!(
                !s.windows(len).any(|w| w == p.as_slice()),
                "rule 1: the plaintext appears in the sealed value"
            );
        }
    }
}

fn context_binding(h: &dyn Hsm) {
    let s = h.seal(b"secret", b"context-a").unwrap();
    for ctx in [&b"context-b"[..], b"", b"context-a\0"] {
        assert!(
            matches!(h.unseal(&s, ctx), Err(Error::Unseal | Error::Malformed(_))),
            "rule 1: unsealed under another context {ctx:?}"
        );
    }
}

fn tamper_detection(h: &dyn Hsm) {
    let s = h.seal(b"secret key bytes", b"ctx").unwrap();
    for i in 0..s.len() {
        let mut t = s.clone();
        t[i] ^= 0x01;
        assert!(
            h.unseal(&t, b"ctx").is_err(),
            "rule 1: flipped byte {i} went unnoticed"
        );
    }
    for n in 0..s.len() {
        assert!(
            h.unseal(&s[..n], b"ctx").is_err(),
            "rule 1: truncation to {n} went unnoticed"
        );
    }
    let mut longer = s.clone();
    longer.push(0);
    assert!(
        h.unseal(&longer, b"ctx").is_err(),
        "rule 1: an appended byte went unnoticed"
    );
}

fn randomized(h: &dyn Hsm) {
    let a = h.seal(b"same", b"ctx").unwrap();
    let b = h.seal(b"same", b"ctx").unwrap();
    assert_ne!(a, b, "rule 2: sealing is deterministic");
}

fn portable(a: &dyn Hsm, a2: &dyn Hsm) {
    let s = a.seal(b"shared", b"ctx").unwrap();
    assert_eq!(a2.unseal(&s, b"ctx").expect("rule 3").as_slice(), b"shared");
    let s2 = a2.seal(b"back", b"ctx").unwrap();
    assert_eq!(a.unseal(&s2, b"ctx").expect("rule 3").as_slice(), b"back");
}

fn foreign_key(a: &dyn Hsm, other: &dyn Hsm) {
    let s = a.seal(b"secret", b"ctx").unwrap();
    assert!(
        other.unseal(&s, b"ctx").is_err(),
        "rule 1: another key unsealed the value"
    );
    let s = other.seal(b"secret", b"ctx").unwrap();
    assert!(
        a.unseal(&s, b"ctx").is_err(),
        "rule 1: another key's value was unsealed"
    );
}

fn derivation(a: &dyn Hsm, a2: &dyn Hsm, other: &dyn Hsm) {
    let x = a.derive("label-1").unwrap();
    assert_eq!(
        *x,
        *a.derive("label-1").unwrap(),
        "rule 4: not deterministic"
    );
    assert_eq!(
        *x,
        *a2.derive("label-1").unwrap(),
        "rule 4: differs across instances"
    );
    assert_ne!(
        *x,
        *a.derive("label-2").unwrap(),
        "rule 4: labels not separated"
    );
    assert_ne!(
        *x,
        *other.derive("label-1").unwrap(),
        "rule 4: keys not separated"
    );
    assert_ne!(*x, [0u8; 32], "rule 4: all-zero output");
}

fn names(a: &dyn Hsm, a2: &dyn Hsm, other: &dyn Hsm) {
    assert!(!a.name().is_empty(), "rule 5: empty name");
    assert_eq!(a.name(), a2.name(), "rule 5: same key, different names");
    assert_ne!(a.name(), other.name(), "rule 5: different keys, same name");
}

fn concurrent(h: &dyn Hsm) {
    std::thread::scope(|s| {
        for t in 0..4u8 {
            s.spawn(move || {
                for i in 0..50u8 {
                    let p = [t, i];
                    let sealed = h.seal(&p, b"ctx").unwrap();
                    assert_eq!(h.unseal(&sealed, b"ctx").unwrap().as_slice(), &p, "rule 6");
                }
            });
        }
    });
}
