//! In-process crypto ceiling: one GENERATE (32-byte data key) and one DECRYPT,
//! without network, compared with raw AES-256-GCM on the same 32 bytes; and
//! one signature of a 32-byte message per asymmetric key type, the ceiling of
//! KEY:SIGN on one core.

use aes_gcm::aead::{AeadInPlace, KeyInit};
use criterion::{criterion_group, criterion_main, Criterion};
use kms_node::crypto::{KeyMaterial, KeyType};
use rand::RngCore;

fn bench(c: &mut Criterion) {
    let k = KeyMaterial::new(KeyType::Aes256, 1, &[7; 32]);
    c.bench_function("generate_32 (random + derive + AES-256-GCM)", |b| {
        b.iter(|| {
            let mut dk = [0u8; 32];
            rand::thread_rng().fill_bytes(&mut dk);
            k.encrypt(&dk, b"minio object path")
        })
    });
    let ct = k.encrypt(&[1; 32], b"ad");
    c.bench_function("decrypt_32", |b| b.iter(|| k.decrypt(&ct, b"ad").unwrap()));
    c.bench_function("mac_32", |b| b.iter(|| k.mac(&[1; 32])));
    let raw = aes_gcm::Aes256Gcm::new_from_slice(&[7; 32]).unwrap();
    c.bench_function("raw_aes256gcm_32 (ceiling)", |b| {
        b.iter(|| {
            let mut buf = [0u8; 32];
            raw.encrypt_in_place_detached((&[0u8; 12]).into(), b"ad", &mut buf)
                .unwrap()
        })
    });
}

fn sign(c: &mut Criterion) {
    use kms_node::asym::{AsymType, Hash, PrivateKey, SignAlg};
    for (t, alg) in [
        (
            AsymType::EcP256,
            SignAlg::Ecdsa {
                hash: Hash::Sha256,
                prehashed: false,
            },
        ),
        (AsymType::Ed25519, SignAlg::Ed25519),
        (
            AsymType::Rsa2048,
            SignAlg::RsaPkcs1 {
                hash: Some(Hash::Sha256),
                prehashed: false,
            },
        ),
        (
            AsymType::MlDsa65,
            SignAlg::MlDsa {
                context: vec![],
                deterministic: false,
            },
        ),
    ] {
        let k = PrivateKey::generate(t).unwrap();
        c.bench_function(&format!("sign_32 {}", t.name()), |b| {
            b.iter(|| k.sign(&alg, &[5; 32]).unwrap())
        });
    }
}

criterion_group!(benches, bench, sign);
criterion_main!(benches);
