//! Interoperability of `kms_node::asym` with the `openssl` command-line tool
//! (OpenSSL 3.0 here): keys and signatures made by the module are checked by
//! `openssl`, and keys and ciphertexts made by `openssl` are used by the module.
//! ML-DSA is skipped: OpenSSL has it only from 3.5 (the ML-DSA cross-check is
//! against RustCrypto `ml-dsa` in asym_vectors.rs). The tests are skipped, with a
//! message, when there is no `openssl` binary.

use std::path::Path;
use std::process::Command;

use kms_node::asym::{self, AsymType, Hash, PrivateKey, SignAlg};

fn openssl(dir: &Path, args: &[&str]) -> Result<Vec<u8>, String> {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .map_err(|e| format!("openssl: {e}"))?;
    if out.status.success() {
        Ok(out.stdout)
    } else {
        Err(format!(
            "openssl {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

fn have_openssl() -> bool {
    let ok = Command::new("openssl")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!("skipped: no openssl binary");
    }
    ok
}

/// Signs with the module, verifies with `openssl dgst` / `openssl pkeyutl`.
#[test]
fn asym_openssl_verifies_module_signatures() {
    if !have_openssl() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let msg = b"interop message\n".repeat(100);
    std::fs::write(d.join("msg"), &msg).unwrap();
    let mut checked = 0;
    for t in AsymType::ALL {
        if t.is_ml_dsa() {
            eprintln!("{t}: skipped, OpenSSL 3.0 has no ML-DSA");
            continue;
        }
        let key = PrivateKey::generate(t).unwrap();
        let spki = key.public_key_der();
        std::fs::write(d.join("pub.pem"), asym::public_key_pem(&spki)).unwrap();
        // OpenSSL reads the stored PKCS#8 and derives the same public key.
        std::fs::write(d.join("key.der"), &*key.to_pkcs8_der()).unwrap();
        let pubout = openssl(
            d,
            &[
                "pkey", "-inform", "DER", "-in", "key.der", "-pubout", "-outform", "DER",
            ],
        )
        .unwrap();
        assert_eq!(pubout, spki, "{t}: openssl's public key of our PKCS#8");

        let cases: Vec<(SignAlg, Vec<&str>)> = match t {
            AsymType::EcP256 | AsymType::EcP384 => vec![
                (
                    SignAlg::Ecdsa {
                        hash: Hash::Sha256,
                        prehashed: false,
                    },
                    vec!["-sha256"],
                ),
                (
                    SignAlg::Ecdsa {
                        hash: Hash::Sha384,
                        prehashed: false,
                    },
                    vec!["-sha384"],
                ),
                (
                    SignAlg::Ecdsa {
                        hash: Hash::Sha512,
                        prehashed: false,
                    },
                    vec!["-sha512"],
                ),
            ],
            AsymType::Ed25519 => vec![(SignAlg::Ed25519, vec![])],
            _ => vec![
                (
                    SignAlg::RsaPkcs1 {
                        hash: Some(Hash::Sha256),
                        prehashed: false,
                    },
                    vec!["-sha256"],
                ),
                (
                    SignAlg::RsaPkcs1 {
                        hash: Some(Hash::Sha512),
                        prehashed: false,
                    },
                    vec!["-sha512"],
                ),
                (
                    SignAlg::RsaPss {
                        hash: Hash::Sha256,
                        mgf1: Hash::Sha256,
                        salt_len: 32,
                        prehashed: false,
                    },
                    vec![
                        "-sha256",
                        "-sigopt",
                        "rsa_padding_mode:pss",
                        "-sigopt",
                        "rsa_pss_saltlen:32",
                        "-sigopt",
                        "rsa_mgf1_md:sha256",
                    ],
                ),
                (
                    SignAlg::RsaPss {
                        hash: Hash::Sha384,
                        mgf1: Hash::Sha256,
                        salt_len: 20,
                        prehashed: false,
                    },
                    vec![
                        "-sha384",
                        "-sigopt",
                        "rsa_padding_mode:pss",
                        "-sigopt",
                        "rsa_pss_saltlen:20",
                        "-sigopt",
                        "rsa_mgf1_md:sha256",
                    ],
                ),
            ],
        };
        for (alg, opts) in cases {
            let mut sig = key.sign(&alg, &msg).unwrap();
            if t.is_ec() {
                sig = asym::ecdsa_raw_to_der(&sig).unwrap();
            }
            std::fs::write(d.join("sig"), &sig).unwrap();
            let out = if t == AsymType::Ed25519 {
                openssl(
                    d,
                    &[
                        "pkeyutl", "-verify", "-pubin", "-inkey", "pub.pem", "-rawin", "-in",
                        "msg", "-sigfile", "sig",
                    ],
                )
            } else {
                let mut args = vec!["dgst"];
                args.extend_from_slice(&opts);
                args.extend_from_slice(&["-verify", "pub.pem", "-signature", "sig", "msg"]);
                openssl(d, &args)
            };
            let out = out.unwrap_or_else(|e| panic!("{t} {alg:?}: {e}"));
            assert!(
                String::from_utf8_lossy(&out).contains("Verified OK")
                    || String::from_utf8_lossy(&out).contains("Signature Verified Successfully"),
                "{t} {alg:?}"
            );
            // A flipped bit is refused by openssl too.
            let mut bad = sig.clone();
            let i = bad.len() - 3;
            bad[i] ^= 1;
            std::fs::write(d.join("sig"), &bad).unwrap();
            let again = if t == AsymType::Ed25519 {
                openssl(
                    d,
                    &[
                        "pkeyutl", "-verify", "-pubin", "-inkey", "pub.pem", "-rawin", "-in",
                        "msg", "-sigfile", "sig",
                    ],
                )
            } else {
                let mut args = vec!["dgst"];
                args.extend_from_slice(&opts);
                args.extend_from_slice(&["-verify", "pub.pem", "-signature", "sig", "msg"]);
                openssl(d, &args)
            };
            assert!(
                again.is_err(),
                "{t} {alg:?}: openssl accepted a flipped bit"
            );
            checked += 1;
        }
        // Raw PKCS#1 (CKM_RSA_PKCS) over a DigestInfo: `pkeyutl -verify` without a digest
        // compares the recovered block with the input.
        if t.is_rsa() {
            let mut di = hex::decode("3031300d060960864801650304020105000420").unwrap();
            di.extend_from_slice(&Hash::Sha256.digest(&msg));
            let sig = key
                .sign(
                    &SignAlg::RsaPkcs1 {
                        hash: None,
                        prehashed: false,
                    },
                    &di,
                )
                .unwrap();
            std::fs::write(d.join("sig"), &sig).unwrap();
            std::fs::write(d.join("di"), &di).unwrap();
            openssl(
                d,
                &[
                    "pkeyutl", "-verify", "-pubin", "-inkey", "pub.pem", "-in", "di", "-sigfile",
                    "sig",
                ],
            )
            .unwrap();
            // ... and it is the same signature as PKCS#1 with SHA-256 over the message.
            let with_md = key
                .sign(
                    &SignAlg::RsaPkcs1 {
                        hash: Some(Hash::Sha256),
                        prehashed: false,
                    },
                    &msg,
                )
                .unwrap();
            assert_eq!(sig, with_md);
            checked += 1;
        }
    }
    assert_eq!(checked, 2 * 3 + 1 + 3 * 5);
}

/// Keys generated by `openssl genpkey` are imported; OAEP ciphertexts made by
/// `openssl pkeyutl -encrypt` are decrypted; ECDSA DER signatures made by
/// `openssl dgst -sign` verify after conversion to r||s.
#[test]
fn asym_module_uses_openssl_keys_and_ciphertexts() {
    if !have_openssl() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("msg"), b"from openssl").unwrap();
    for (t, gen) in [
        (
            AsymType::Rsa2048,
            vec!["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
        ),
        (
            AsymType::EcP256,
            vec!["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
        ),
        (
            AsymType::EcP384,
            vec!["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384"],
        ),
        (AsymType::Ed25519, vec!["-algorithm", "ED25519"]),
    ] {
        let mut args = vec!["genpkey"];
        args.extend_from_slice(&gen);
        args.extend_from_slice(&["-out", "key.pem"]);
        openssl(d, &args).unwrap();
        let key = PrivateKey::import(&std::fs::read(d.join("key.pem")).unwrap()).unwrap();
        assert_eq!(key.key_type(), t);
        let spki = openssl(d, &["pkey", "-in", "key.pem", "-pubout", "-outform", "DER"]).unwrap();
        assert_eq!(key.public_key_der(), spki, "{t}");
        std::fs::write(d.join("pub.pem"), asym::public_key_pem(&spki)).unwrap();
        match t {
            AsymType::Rsa2048 => {
                for (md, mgf, label) in [
                    ("sha256", "sha256", None),
                    ("sha1", "sha1", None),
                    ("sha256", "sha1", Some("6c6162656c")),
                ] {
                    let mut args = vec![
                        "pkeyutl",
                        "-encrypt",
                        "-pubin",
                        "-inkey",
                        "pub.pem",
                        "-in",
                        "msg",
                        "-out",
                        "ct",
                        "-pkeyopt",
                        "rsa_padding_mode:oaep",
                    ];
                    let o1 = format!("rsa_oaep_md:{md}");
                    let o2 = format!("rsa_mgf1_md:{mgf}");
                    args.extend_from_slice(&["-pkeyopt", &o1, "-pkeyopt", &o2]);
                    let o3 = label.map(|l| format!("rsa_oaep_label:{l}"));
                    if let Some(o3) = &o3 {
                        args.extend_from_slice(&["-pkeyopt", o3]);
                    }
                    openssl(d, &args).unwrap();
                    let ct = std::fs::read(d.join("ct")).unwrap();
                    let h = Hash::parse(md).unwrap();
                    let m = Hash::parse(mgf).unwrap();
                    let label = label.map(|l| hex::decode(l).unwrap()).unwrap_or_default();
                    let pt = key.decrypt_oaep(h, m, &label, &ct).unwrap();
                    assert_eq!(&**pt, b"from openssl");
                }
                openssl(
                    d,
                    &["dgst", "-sha256", "-sign", "key.pem", "-out", "sig", "msg"],
                )
                .unwrap();
                let sig = std::fs::read(d.join("sig")).unwrap();
                let alg = SignAlg::RsaPkcs1 {
                    hash: Some(Hash::Sha256),
                    prehashed: false,
                };
                asym::verify(&spki, &alg, b"from openssl", &sig).unwrap();
            }
            AsymType::EcP256 | AsymType::EcP384 => {
                openssl(
                    d,
                    &["dgst", "-sha384", "-sign", "key.pem", "-out", "sig", "msg"],
                )
                .unwrap();
                let der = std::fs::read(d.join("sig")).unwrap();
                let raw = asym::ecdsa_der_to_raw(&der, t).unwrap();
                let alg = SignAlg::Ecdsa {
                    hash: Hash::Sha384,
                    prehashed: false,
                };
                asym::verify(&spki, &alg, b"from openssl", &raw).unwrap();
                assert_eq!(asym::ecdsa_raw_to_der(&raw).unwrap(), der);
            }
            _ => {
                openssl(
                    d,
                    &[
                        "pkeyutl", "-sign", "-inkey", "key.pem", "-rawin", "-in", "msg", "-out",
                        "sig",
                    ],
                )
                .unwrap();
                let sig = std::fs::read(d.join("sig")).unwrap();
                // Ed25519 is deterministic: the module makes the same signature.
                assert_eq!(key.sign(&SignAlg::Ed25519, b"from openssl").unwrap(), sig);
                asym::verify(&spki, &SignAlg::Ed25519, b"from openssl", &sig).unwrap();
            }
        }
    }
    // Traditional PEM forms (PKCS#1 RSA, SEC1 EC).
    openssl(d, &["genrsa", "-traditional", "-out", "rsa.pem", "3072"]).unwrap();
    let rsa = std::fs::read(d.join("rsa.pem")).unwrap();
    assert!(rsa.starts_with(b"-----BEGIN RSA PRIVATE KEY-----"));
    assert_eq!(
        PrivateKey::import(&rsa).unwrap().key_type(),
        AsymType::Rsa3072
    );
    openssl(
        d,
        &[
            "ecparam",
            "-name",
            "secp384r1",
            "-genkey",
            "-noout",
            "-out",
            "ec.pem",
        ],
    )
    .unwrap();
    let ec = std::fs::read(d.join("ec.pem")).unwrap();
    assert!(ec.starts_with(b"-----BEGIN EC PRIVATE KEY-----"));
    assert_eq!(
        PrivateKey::import(&ec).unwrap().key_type(),
        AsymType::EcP384
    );
    // Refused: RSA-1024, P-521, secp256k1.
    openssl(
        d,
        &[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:1024",
            "-out",
            "small.pem",
        ],
    )
    .unwrap();
    assert!(PrivateKey::import(&std::fs::read(d.join("small.pem")).unwrap()).is_err());
    for curve in ["P-521", "secp256k1"] {
        let opt = format!("ec_paramgen_curve:{curve}");
        openssl(
            d,
            &[
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                &opt,
                "-out",
                "c.pem",
            ],
        )
        .unwrap();
        assert!(
            PrivateKey::import(&std::fs::read(d.join("c.pem")).unwrap()).is_err(),
            "{curve}"
        );
        openssl(
            d,
            &[
                "ecparam",
                "-name",
                if curve == "P-521" { "secp521r1" } else { curve },
                "-genkey",
                "-noout",
                "-out",
                "c.pem",
            ],
        )
        .unwrap();
        assert!(
            PrivateKey::import(&std::fs::read(d.join("c.pem")).unwrap()).is_err(),
            "{curve} SEC1"
        );
    }
}
