//! The ciphertext formats: the v1 ciphertext (every key type), the records
//! sealed at rest under the root key, and the key-version header the API
//! reads before it picks a key. Any input: an error or a plaintext, never a
//! panic. And for a real ciphertext, every change the input makes to it
//! (one byte, a truncation, an extension) fails authentication.
#![no_main]

use kms_node::crypto::{ciphertext_version, KeyMaterial, KeyType, RootKey, OVERHEAD};
use libfuzzer_sys::fuzz_target;

const KEY: [u8; 32] = [0x42; 32];
const TYPES: [KeyType; 2] = [KeyType::Aes256, KeyType::ChaCha20];

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    // The next byte says how much of the rest is associated data.
    let (ad, body) = match rest.split_first() {
        Some((&n, r)) => r.split_at((n as usize).min(r.len())),
        None => (&[][..], rest),
    };
    if mode & 1 == 0 {
        // A ciphertext from anywhere.
        let _ = ciphertext_version(body);
        for t in TYPES {
            let _ = KeyMaterial::new(t, 0, &KEY).decrypt(body, ad);
        }
        let _ = RootKey::new(&KEY).unseal(ad, body);
        return;
    }
    // A real ciphertext of `body`, then changed where the input says.
    let t = TYPES[(mode >> 1) as usize % 2];
    let km = KeyMaterial::new(t, u32::from(mode >> 2), &KEY);
    let ct = km.encrypt(body, ad);
    assert_eq!(ct.len(), body.len() + OVERHEAD);
    assert_eq!(ciphertext_version(&ct).ok(), Some(u32::from(mode >> 2)));
    assert_eq!(
        km.decrypt(&ct, ad).expect("own ciphertext").as_slice(),
        body
    );
    let pos = ad.first().copied().unwrap_or(0) as usize;
    let mut forged = ct.clone();
    match mode >> 6 {
        0 => forged[pos % ct.len()] ^= 1 | (mode & 0xfe),
        1 => forged.truncate(pos % ct.len()),
        2 => forged.push(mode),
        _ => forged[pos % ct.len()] = forged[pos % ct.len()].wrapping_add(1),
    }
    assert!(
        km.decrypt(&forged, ad).is_err(),
        "a changed ciphertext decrypted"
    );
});
