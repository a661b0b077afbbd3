//! Known-answer and conformance vectors for `kms_node::asym`: trimmed Wycheproof
//! files (ECDSA P1363, Ed25519, RSA PKCS#1 / PSS / OAEP, ML-DSA sign and verify)
//! and NIST ACVP ML-DSA (FIPS 204) keyGen / sigGen / sigVer. The files, their
//! sources and how they were trimmed: tests/vectors/README.md.
//!
//! Every kept case runs; `result: "valid"` must pass, `"invalid"` must fail,
//! `"acceptable"` may do either.

use kms_node::asym::{self, AsymError, AsymType, Hash, PrivateKey, SignAlg};
use serde_json::Value;
use sha2::{Digest, Sha256};

fn load(name: &str) -> Value {
    let path = format!("{}/tests/vectors/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap()
}

fn hexv(v: &Value) -> Vec<u8> {
    hex::decode(v.as_str().unwrap_or("")).unwrap()
}

fn hash(name: &str) -> Hash {
    Hash::parse(name).unwrap_or_else(|| panic!("hash {name}"))
}

fn groups(doc: &Value) -> &Vec<Value> {
    doc["testGroups"].as_array().unwrap()
}

fn tests(group: &Value) -> &Vec<Value> {
    group["tests"].as_array().unwrap()
}

/// Counts of cases run, by expected result.
#[derive(Default, Debug)]
struct Tally {
    valid: usize,
    invalid: usize,
    acceptable: usize,
}

impl Tally {
    /// Checks `ok` against the case's `result`.
    fn check(&mut self, file: &str, t: &Value, ok: bool) {
        let id = &t["tcId"];
        match t["result"].as_str().unwrap() {
            "valid" => {
                assert!(ok, "{file} tcId {id} ({}) should pass", t["comment"]);
                self.valid += 1;
            }
            "invalid" => {
                assert!(!ok, "{file} tcId {id} ({}) should fail", t["comment"]);
                self.invalid += 1;
            }
            _ => self.acceptable += 1,
        }
    }

    fn total(&self) -> usize {
        self.valid + self.invalid + self.acceptable
    }
}

/// Runs a Wycheproof verify file: `alg_of(group)` gives the algorithm, the
/// group's `publicKeyDer` (or `spki_of(group)`) the key.
fn run_verify(
    file: &str,
    spki_of: impl Fn(&Value) -> Vec<u8>,
    alg_of: impl Fn(&Value, &Value) -> SignAlg,
) -> Tally {
    let doc = load(file);
    let mut tally = Tally::default();
    for g in groups(&doc) {
        let spki = spki_of(g);
        for t in tests(g) {
            let r = asym::verify(&spki, &alg_of(g, t), &hexv(&t["msg"]), &hexv(&t["sig"]));
            if let Err(e) = &r {
                // A wrong signature is BadSignature; a malformed key or context may be refused earlier.
                assert!(
                    matches!(
                        e,
                        AsymError::BadSignature
                            | AsymError::UnsupportedKey(_)
                            | AsymError::BadInput(_)
                    ),
                    "{file} {}: {e}",
                    t["tcId"]
                );
            }
            tally.check(file, t, r.is_ok());
        }
    }
    assert!(tally.valid > 0 && tally.invalid > 0, "{file}: {tally:?}");
    eprintln!("{file}: {tally:?}");
    tally
}

fn spki_field(g: &Value) -> Vec<u8> {
    hexv(&g["publicKeyDer"])
}

#[test]
fn asym_wycheproof_ecdsa_p256_p1363() {
    let t = run_verify(
        "wycheproof_ecdsa_p256_sha256_p1363.json",
        spki_field,
        |g, _| SignAlg::Ecdsa {
            hash: hash(g["sha"].as_str().unwrap()),
            prehashed: false,
        },
    );
    assert_eq!(t.total(), 30);
}

#[test]
fn asym_wycheproof_ecdsa_p384_p1363() {
    let t = run_verify(
        "wycheproof_ecdsa_p384_sha384_p1363.json",
        spki_field,
        |g, _| SignAlg::Ecdsa {
            hash: hash(g["sha"].as_str().unwrap()),
            prehashed: false,
        },
    );
    assert_eq!(t.total(), 30);
}

#[test]
fn asym_wycheproof_ecdsa_prehashed() {
    // The same cases through the prehashed (CKM_ECDSA) path.
    let doc = load("wycheproof_ecdsa_p256_sha256_p1363.json");
    for g in groups(&doc) {
        for t in tests(g) {
            let digest = Hash::Sha256.digest(&hexv(&t["msg"]));
            let alg = SignAlg::Ecdsa {
                hash: Hash::Sha256,
                prehashed: true,
            };
            let ok = asym::verify(&spki_field(g), &alg, &digest, &hexv(&t["sig"])).is_ok();
            let want = t["result"] == "valid";
            assert_eq!(ok, want, "tcId {}", t["tcId"]);
        }
    }
}

#[test]
fn asym_wycheproof_ed25519() {
    let t = run_verify("wycheproof_ed25519.json", spki_field, |_, _| {
        SignAlg::Ed25519
    });
    assert_eq!(t.total(), 34);
}

#[test]
fn asym_wycheproof_rsa_pkcs1() {
    let t = run_verify(
        "wycheproof_rsa_pkcs1_2048_sha256.json",
        spki_field,
        |g, _| SignAlg::RsaPkcs1 {
            hash: Some(hash(g["sha"].as_str().unwrap())),
            prehashed: false,
        },
    );
    assert_eq!(t.total(), 26);
}

#[test]
fn asym_wycheproof_rsa_pss() {
    let t = run_verify(
        "wycheproof_rsa_pss_2048_sha256_mgf1_32.json",
        spki_field,
        |g, _| SignAlg::RsaPss {
            hash: hash(g["sha"].as_str().unwrap()),
            mgf1: hash(g["mgfSha"].as_str().unwrap()),
            salt_len: g["sLen"].as_u64().unwrap() as usize,
            prehashed: false,
        },
    );
    assert_eq!(t.total(), 21);
}

fn run_oaep(file: &str) -> Tally {
    let doc = load(file);
    let mut tally = Tally::default();
    for g in groups(&doc) {
        let key = PrivateKey::from_pkcs8_der(&hexv(&g["privateKeyPkcs8"])).unwrap();
        assert_eq!(key.key_type(), AsymType::Rsa2048);
        let h = hash(g["sha"].as_str().unwrap());
        let m = hash(g["mgfSha"].as_str().unwrap());
        for t in tests(g) {
            let r = key.decrypt_oaep(h, m, &hexv(&t["label"]), &hexv(&t["ct"]));
            match &r {
                Ok(pt) => assert_eq!(**pt, hexv(&t["msg"]), "{file} {}", t["tcId"]),
                Err(e) => assert_eq!(*e, AsymError::Decrypt, "{file} {}", t["tcId"]),
            }
            tally.check(file, t, r.is_ok());
        }
    }
    assert!(tally.valid > 0 && tally.invalid > 0, "{file}: {tally:?}");
    eprintln!("{file}: {tally:?}");
    tally
}

#[test]
fn asym_wycheproof_rsa_oaep_sha256() {
    assert_eq!(
        run_oaep("wycheproof_rsa_oaep_2048_sha256_mgf1sha256.json").total(),
        24
    );
}

#[test]
fn asym_wycheproof_rsa_oaep_sha1() {
    assert_eq!(
        run_oaep("wycheproof_rsa_oaep_2048_sha1_mgf1sha1.json").total(),
        18
    );
}

// ----- ML-DSA -----

fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let n = content.len();
    if n < 0x80 {
        out.push(n as u8);
    } else if n < 0x100 {
        out.extend_from_slice(&[0x81, n as u8]);
    } else {
        out.extend_from_slice(&[0x82, (n >> 8) as u8, n as u8]);
    }
    out.extend_from_slice(content);
    out
}

fn ml_dsa_oid(t: AsymType) -> Vec<u8> {
    let last = match t {
        AsymType::MlDsa44 => 0x11,
        AsymType::MlDsa65 => 0x12,
        _ => 0x13,
    };
    tlv(
        0x30,
        &tlv(
            0x06,
            &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x03, last],
        ),
    )
}

fn ml_dsa_spki(t: AsymType, pk: &[u8]) -> Vec<u8> {
    let mut bits = vec![0];
    bits.extend_from_slice(pk);
    let mut body = ml_dsa_oid(t);
    body.extend_from_slice(&tlv(0x03, &bits));
    tlv(0x30, &body)
}

fn ml_dsa_pkcs8(t: AsymType, private_key: &[u8]) -> Vec<u8> {
    let mut body = vec![0x02, 0x01, 0x00];
    body.extend_from_slice(&ml_dsa_oid(t));
    body.extend_from_slice(&tlv(0x04, private_key));
    tlv(0x30, &body)
}

fn set_of(name: &str) -> AsymType {
    AsymType::parse(name).unwrap()
}

fn ml_dsa_alg(t: &Value, deterministic: bool) -> SignAlg {
    SignAlg::MlDsa {
        context: hexv(&t["ctx"]),
        deterministic,
    }
}

#[test]
fn asym_wycheproof_mldsa_verify() {
    let mut total = 0;
    for (ps, n) in [("44", 10), ("65", 2), ("87", 2)] {
        let t = set_of(&format!("ML-DSA-{ps}"));
        let tally = run_verify(
            &format!("wycheproof_mldsa_{ps}_verify.json"),
            |g| ml_dsa_spki(t, &hexv(&g["publicKey"])),
            |_, c| ml_dsa_alg(c, false),
        );
        assert_eq!(tally.total(), n);
        total += tally.total();
    }
    assert_eq!(total, 14);
}

#[test]
fn asym_wycheproof_mldsa_sign_seed() {
    for (ps, n) in [("44", 77), ("65", 87), ("87", 78)] {
        let file = format!("wycheproof_mldsa_{ps}_sign_seed.json");
        let t = set_of(&format!("ML-DSA-{ps}"));
        let doc = load(&file);
        let mut tally = Tally::default();
        for g in groups(&doc) {
            let seed = hexv(&g["privateSeed"]);
            let key = PrivateKey::from_pkcs8_der(&ml_dsa_pkcs8(t, &tlv(0x80, &seed)));
            let Ok(key) = key else {
                // Seeds of the wrong length: every case of the group is invalid.
                assert_ne!(seed.len(), 32, "{file}: {key:?}");
                for c in tests(g) {
                    tally.check(&file, c, false);
                }
                continue;
            };
            let spki = key.public_key_der();
            let pk = &spki[spki.len() - t_pk_len(t)..];
            assert_eq!(
                hex::encode(Sha256::digest(pk)),
                g["publicKeySha256"].as_str().unwrap()
            );
            for c in tests(g) {
                let alg = ml_dsa_alg(c, true);
                let msg = hexv(&c["msg"]);
                let r = key.sign(&alg, &msg);
                if let Ok(sig) = &r {
                    assert_eq!(
                        hex::encode(Sha256::digest(sig)),
                        c["sigSha256"].as_str().unwrap(),
                        "{file} {}",
                        c["tcId"]
                    );
                    asym::verify(&spki, &alg, &msg, sig).unwrap();
                }
                tally.check(&file, c, r.is_ok());
            }
        }
        eprintln!("{file}: {tally:?}");
        assert_eq!(tally.total(), n, "{file}");
        assert!(tally.invalid > 0);
    }
}

fn t_pk_len(t: AsymType) -> usize {
    match t {
        AsymType::MlDsa44 => 1312,
        AsymType::MlDsa65 => 1952,
        _ => 2592,
    }
}

#[test]
fn asym_acvp_mldsa_keygen() {
    use fips204::traits::{KeyGen as _, SerDes as _};
    let doc = load("acvp_mldsa_fips204.json");
    let cases = doc["keyGen"].as_array().unwrap();
    for c in cases {
        let t = set_of(c["parameterSet"].as_str().unwrap());
        let seed: [u8; 32] = hexv(&c["seed"]).try_into().unwrap();
        // Through the module: seed form PKCS#8 -> SPKI.
        let key = PrivateKey::from_pkcs8_der(&ml_dsa_pkcs8(t, &tlv(0x80, &seed))).unwrap();
        let spki = key.public_key_der();
        let pk = &spki[spki.len() - t_pk_len(t)..];
        assert_eq!(
            hex::encode(Sha256::digest(pk)),
            c["pkSha256"].as_str().unwrap(),
            "{}",
            c["tcId"]
        );
        // The expanded key encoding, then the module's expandedKey import of it.
        let sk = match t {
            AsymType::MlDsa44 => fips204::ml_dsa_44::KG::keygen_from_seed(&seed)
                .1
                .into_bytes()
                .to_vec(),
            AsymType::MlDsa65 => fips204::ml_dsa_65::KG::keygen_from_seed(&seed)
                .1
                .into_bytes()
                .to_vec(),
            _ => fips204::ml_dsa_87::KG::keygen_from_seed(&seed)
                .1
                .into_bytes()
                .to_vec(),
        };
        assert_eq!(
            hex::encode(Sha256::digest(&sk)),
            c["skSha256"].as_str().unwrap()
        );
        let key2 = PrivateKey::from_pkcs8_der(&ml_dsa_pkcs8(t, &tlv(0x04, &sk))).unwrap();
        assert_eq!(key2.public_key_der(), spki);
        let mut both = tlv(0x04, &seed);
        both.extend_from_slice(&tlv(0x04, &sk));
        let key3 = PrivateKey::from_pkcs8_der(&ml_dsa_pkcs8(t, &tlv(0x30, &both))).unwrap();
        assert_eq!(key3.public_key_der(), spki);
    }
    assert_eq!(cases.len(), 12);
}

/// ACVP sigGen/sigVer of this vintage test the *internal* interface
/// (ML-DSA.Sign_internal on M' = message), which the module does not expose; they
/// run against fips204's test-only hooks (feature `acvp-internal`), with the
/// expanded private keys imported through the module as well.
#[test]
#[allow(deprecated)]
fn asym_acvp_mldsa_internal_siggen_sigver() {
    use fips204::traits::SerDes as _;
    let doc = load("acvp_mldsa_fips204.json");
    let mut n = 0;
    for c in doc["sigGen"].as_array().unwrap() {
        let t = set_of(c["parameterSet"].as_str().unwrap());
        let sk = hexv(&c["sk"]);
        let msg = hexv(&c["message"]);
        PrivateKey::from_pkcs8_der(&ml_dsa_pkcs8(t, &tlv(0x04, &sk))).unwrap();
        let mut rng = rand::rngs::OsRng;
        let sig = match t {
            AsymType::MlDsa44 => {
                fips204::ml_dsa_44::PrivateKey::try_from_bytes(sk.try_into().unwrap())
                    .unwrap()
                    .sign_internal(&mut rng, &msg, false)
                    .unwrap()
                    .to_vec()
            }
            AsymType::MlDsa65 => {
                fips204::ml_dsa_65::PrivateKey::try_from_bytes(sk.try_into().unwrap())
                    .unwrap()
                    .sign_internal(&mut rng, &msg, false)
                    .unwrap()
                    .to_vec()
            }
            _ => fips204::ml_dsa_87::PrivateKey::try_from_bytes(sk.try_into().unwrap())
                .unwrap()
                .sign_internal(&mut rng, &msg, false)
                .unwrap()
                .to_vec(),
        };
        assert_eq!(
            hex::encode(Sha256::digest(&sig)),
            c["signatureSha256"].as_str().unwrap().to_lowercase()
        );
        n += 1;
    }
    assert_eq!(n, 3);
    let mut m = 0;
    for g in doc["sigVer"].as_array().unwrap() {
        let t = set_of(g["parameterSet"].as_str().unwrap());
        let pk = hexv(&g["pk"]);
        // The module accepts the key.
        asym::PublicKey::from_spki_der(&ml_dsa_spki(t, &pk)).unwrap();
        for c in tests(g) {
            let msg = hexv(&c["message"]);
            let sig = hexv(&c["signature"]);
            let ok = match t {
                AsymType::MlDsa44 => {
                    fips204::ml_dsa_44::PublicKey::try_from_bytes(pk.clone().try_into().unwrap())
                        .unwrap()
                        .verify_internal(&msg, &sig.try_into().unwrap())
                }
                AsymType::MlDsa65 => {
                    fips204::ml_dsa_65::PublicKey::try_from_bytes(pk.clone().try_into().unwrap())
                        .unwrap()
                        .verify_internal(&msg, &sig.try_into().unwrap())
                }
                _ => fips204::ml_dsa_87::PublicKey::try_from_bytes(pk.clone().try_into().unwrap())
                    .unwrap()
                    .verify_internal(&msg, &sig.try_into().unwrap()),
            };
            let want = c["testPassed"]
                .as_str()
                .map(|s| s.eq_ignore_ascii_case("true"))
                .or(c["testPassed"].as_bool())
                .unwrap();
            assert_eq!(
                ok, want,
                "sigVer {} {} ({})",
                g["parameterSet"], c["tcId"], c["reason"]
            );
            m += 1;
        }
    }
    assert_eq!(m, 5);
}

/// ML-DSA signatures of the module checked by an independent implementation
/// (RustCrypto `ml-dsa` 0.1.1), and deterministic signatures compared byte for byte.
#[test]
fn asym_mldsa_cross_check_with_rustcrypto() {
    fn check<P: ml_dsa::MlDsaParams>(t: AsymType) {
        let key = PrivateKey::generate(t).unwrap();
        let pkcs8 = key.to_pkcs8_der();
        let seed = &pkcs8[pkcs8.len() - 32..];
        let spki = key.public_key_der();
        let pk = &spki[spki.len() - t_pk_len(t)..];
        let vk = ml_dsa::VerifyingKey::<P>::decode(&pk.try_into().unwrap());
        let theirs = ml_dsa::SigningKey::<P>::from_seed(&seed.try_into().unwrap());
        assert_eq!(
            theirs.expanded_key().verifying_key().encode().as_slice(),
            pk,
            "{t}: same public key from the seed"
        );
        for (ctx, msg) in [
            (&b""[..], &b"hello"[..]),
            (&b"context"[..], &[0u8; 1000][..]),
        ] {
            let hedged = key
                .sign(
                    &SignAlg::MlDsa {
                        context: ctx.to_vec(),
                        deterministic: false,
                    },
                    msg,
                )
                .unwrap();
            let sig = ml_dsa::Signature::<P>::try_from(hedged.as_slice()).unwrap();
            assert!(vk.verify_with_context(msg, ctx, &sig), "{t}");
            assert!(!vk.verify_with_context(msg, b"other", &sig), "{t}");
            let det = key
                .sign(
                    &SignAlg::MlDsa {
                        context: ctx.to_vec(),
                        deterministic: true,
                    },
                    msg,
                )
                .unwrap();
            let expect = theirs.expanded_key().sign_deterministic(msg, ctx).unwrap();
            assert_eq!(
                det,
                expect.encode().as_slice(),
                "{t}: deterministic signatures agree"
            );
        }
    }
    check::<ml_dsa::MlDsa44>(AsymType::MlDsa44);
    check::<ml_dsa::MlDsa65>(AsymType::MlDsa65);
    check::<ml_dsa::MlDsa87>(AsymType::MlDsa87);
}
