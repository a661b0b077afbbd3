//! A small PKCS#11 load generator: AES-GCM encrypt of 32 bytes, HMAC-SHA256
//! sign of 32 bytes, or ECDSA P-256 sign of a 32-byte digest (`CKM_ECDSA`),
//! on N threads (one session each), for D seconds, through any PKCS#11
//! module. Prints ops/s and latency percentiles.
//!
//! ```text
//! p11bench MODULE TOKEN_LABEL PIN OP THREADS SECONDS KEY [CONFIG]
//!   OP:  gcm | hmac | ecdsa
//!   KEY: token (a cluster key "bench", made if missing) | session (a key in the module's memory)
//!   CONFIG: set as KMS_PKCS11_CONFIG before C_Initialize (libkms_pkcs11.so only)
//! ```
//! Example (BENCHMARKS.md): `p11bench target/release/libkms_pkcs11.so p11 x gcm 8 10 token kms.toml`.

use std::time::{Duration, Instant};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;

fn main() {
    let a: Vec<String> = std::env::args().collect();
    if a.len() < 8 {
        eprintln!("usage: p11bench MODULE TOKEN_LABEL PIN gcm|hmac|ecdsa THREADS SECONDS token|session [CONFIG]");
        std::process::exit(2);
    }
    let (module, label, pin, op) = (&a[1], &a[2], &a[3], a[4].as_str());
    let threads: usize = a[5].parse().expect("THREADS");
    let secs: u64 = a[6].parse().expect("SECONDS");
    let token = a[7] == "token";
    // Set before any thread starts: the module reads it at C_Initialize.
    if let Some(c) = a.get(8) {
        std::env::set_var("KMS_PKCS11_CONFIG", c);
    }

    let p11 = Pkcs11::new(module).expect("load module");
    p11.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .expect("C_Initialize");
    let slot = p11
        .get_slots_with_token()
        .unwrap()
        .into_iter()
        .find(|s| p11.get_token_info(*s).unwrap().label() == label)
        .expect("token");
    let setup = p11.open_rw_session(slot).unwrap();
    let _ = setup.login(UserType::User, Some(&AuthPin::new(pin.clone().into())));
    let key = make_key(&setup, op, token);

    let deadline = Instant::now() + Duration::from_secs(secs);
    let started = Instant::now();
    let mut lat: Vec<u32> = std::thread::scope(|sc| {
        let hs: Vec<_> = (0..threads)
            .map(|t| {
                let p11 = &p11;
                sc.spawn(move || {
                    let s = p11.open_rw_session(slot).unwrap();
                    let mut lat = Vec::with_capacity(1 << 16);
                    let data = [0x42u8; 32];
                    let mut i: u64 = 0;
                    while Instant::now() < deadline && lat.len() < 50_000_000 {
                        let t0 = Instant::now();
                        match op {
                            "gcm" => {
                                let mut iv = [0u8; 12];
                                iv[..4].copy_from_slice(&(t as u32).to_be_bytes());
                                iv[4..].copy_from_slice(&i.to_be_bytes());
                                let m = Mechanism::AesGcm(
                                    GcmParams::new(&mut iv, b"", 128.into()).unwrap(),
                                );
                                let ct = s.encrypt(&m, key, &data).unwrap();
                                assert_eq!(ct.len(), 48);
                            }
                            "ecdsa" => {
                                let sig = s.sign(&Mechanism::Ecdsa, key, &data).unwrap();
                                assert_eq!(sig.len(), 64);
                            }
                            _ => {
                                let mac = s.sign(&Mechanism::Sha256Hmac, key, &data).unwrap();
                                assert_eq!(mac.len(), 32);
                            }
                        }
                        lat.push(t0.elapsed().as_micros().min(u32::MAX as u128) as u32);
                        i += 1;
                    }
                    lat
                })
            })
            .collect();
        hs.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    let elapsed = started.elapsed().as_secs_f64();
    lat.sort_unstable();
    let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
    println!(
        "module={} op={op} key={} threads={threads} ops={} ops/s={:.0} p50={}us p99={}us max={}us",
        std::path::Path::new(module)
            .file_name()
            .unwrap()
            .to_string_lossy(),
        if token { "token" } else { "session" },
        lat.len(),
        lat.len() as f64 / elapsed,
        pct(0.50),
        pct(0.99),
        lat.last().copied().unwrap_or(0),
    );
}

fn make_key(s: &Session, op: &str, token: bool) -> ObjectHandle {
    if op == "ecdsa" {
        let label = b"bench-ec".to_vec();
        if token {
            let found = s
                .find_objects(&[
                    Attribute::Label(label.clone()),
                    Attribute::Class(ObjectClass::PRIVATE_KEY),
                ])
                .unwrap();
            if let Some(k) = found.first() {
                return *k;
            }
        }
        // P-256: the DER of its OID, 1.2.840.10045.3.1.7.
        let p256 = vec![0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
        let (_, private) = s
            .generate_key_pair(
                &Mechanism::EccKeyPairGen,
                &[
                    Attribute::Token(token),
                    Attribute::EcParams(p256),
                    Attribute::Label(label.clone()),
                    Attribute::Verify(true),
                ],
                &[
                    Attribute::Token(token),
                    Attribute::Label(label),
                    Attribute::Sign(true),
                    Attribute::Private(true),
                ],
            )
            .expect("make the EC key pair");
        return private;
    }
    if token {
        let found = s
            .find_objects(&[Attribute::Label(b"bench".to_vec()), Attribute::Token(true)])
            .unwrap();
        if let Some(k) = found.first() {
            return *k;
        }
        return s
            .generate_key(
                &Mechanism::AesKeyGen,
                &[
                    Attribute::Token(true),
                    Attribute::ValueLen(32.into()),
                    Attribute::Label(b"bench".to_vec()),
                    Attribute::Encrypt(true),
                    Attribute::Decrypt(true),
                    Attribute::Sign(true),
                    Attribute::Verify(true),
                ],
            )
            .expect("make the token key");
    }
    if op == "hmac" {
        return s
            .create_object(&[
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::KeyType(KeyType::GENERIC_SECRET),
                Attribute::Token(false),
                Attribute::Value(vec![7u8; 32]),
                Attribute::Sign(true),
                Attribute::Verify(true),
            ])
            .unwrap();
    }
    s.generate_key(
        &Mechanism::AesKeyGen,
        &[
            Attribute::Token(false),
            Attribute::ValueLen(32.into()),
            Attribute::Encrypt(true),
            Attribute::Decrypt(true),
        ],
    )
    .unwrap()
}
