//! Asymmetric cluster keys through `libkms_pkcs11.so` over a live node:
//! key pairs of every type generated through the module (and through the
//! CLI), their objects and attributes, every signature mechanism with the
//! signatures checked by OpenSSL (classical) or the cluster (ML-DSA),
//! multi-part signing, RSA-OAEP decryption of an OpenSSL ciphertext, bad
//! arguments and short buffers; then real consumers: OpenSC `pkcs11-tool`
//! (keygen, sign, `--test`), GnuTLS `p11tool`, the libp11 OpenSSL engine
//! and `ssh-keygen -D`.

use std::path::Path;
use std::process::Command;
use std::ptr::null_mut;
use std::sync::Mutex;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::dsa::{HedgeType, SignAdditionalContext};
use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsOaepParams, PkcsOaepSource, PkcsPssParams};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{
    Attribute, AttributeInfo, AttributeType, KeyType, MlDsaParameterSetType, ObjectClass,
    ObjectHandle,
};
use cryptoki::session::Session;
use cryptoki_sys::*;
use kms_client::proto;
use kms_tests::pkcs11::{load, module_path, rw, KmsNode, ENCLAVE};
use kms_tests::{ok, rt, run, success};
use sha2::Digest;

static SERIAL: Mutex<()> = Mutex::new(());

const P256: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
const P384: &[u8] = &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22];
const ED25519: &[u8] = b"\x13\x0cedwards25519";

fn rv<T: std::fmt::Debug>(r: Result<T, CkError>) -> RvError {
    match r {
        Err(CkError::Pkcs11(rv, _)) => rv,
        other => panic!("expected a PKCS#11 error, got {other:?}"),
    }
}

/// Generates a key pair named `label`: (public, private).
fn pair(
    s: &Session,
    mech: &Mechanism,
    label: &str,
    extra: Vec<Attribute>,
) -> (ObjectHandle, ObjectHandle) {
    let mut public = vec![
        Attribute::Token(true),
        Attribute::Label(label.as_bytes().to_vec()),
        Attribute::Verify(true),
    ];
    public.extend(extra);
    let private = vec![
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Sign(true),
        Attribute::Label(label.as_bytes().to_vec()),
    ];
    s.generate_key_pair(mech, &public, &private)
        .unwrap_or_else(|e| panic!("generate {label}: {e}"))
}

fn bytes_attr(s: &Session, h: ObjectHandle, t: AttributeType) -> Vec<u8> {
    match s.get_attributes(h, &[t]).unwrap().pop() {
        Some(Attribute::PublicKeyInfo(v))
        | Some(Attribute::EcParams(v))
        | Some(Attribute::EcPoint(v))
        | Some(Attribute::Modulus(v))
        | Some(Attribute::PublicExponent(v))
        | Some(Attribute::Id(v))
        | Some(Attribute::Label(v))
        | Some(Attribute::Value(v)) => v,
        other => panic!("{t:?}: {other:?}"),
    }
}

fn pem(spki: &[u8]) -> String {
    let b64 = B64.encode(spki);
    let mut out = String::from("-----BEGIN PUBLIC KEY-----\n");
    for c in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(c).unwrap());
        out.push('\n');
    }
    out.push_str("-----END PUBLIC KEY-----\n");
    out
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> String {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p.to_str().unwrap().to_string()
}

fn openssl(args: &[&str]) {
    success(Command::new("openssl").args(args));
}

/// OpenSSL verifies `sig` over `msg` with the public key `spki`: `dgst`
/// with `md` and `sigopts`, or (md "") `pkeyutl` over `msg` as a digest,
/// or (md "raw") `pkeyutl -rawin` (Ed25519).
fn openssl_verify(dir: &Path, spki: &[u8], md: &str, sigopts: &[&str], msg: &[u8], sig: &[u8]) {
    let pubf = write(dir, "v.pub.pem", pem(spki).as_bytes());
    let msgf = write(dir, "v.msg", msg);
    let sigf = write(dir, "v.sig", sig);
    match md {
        "" => openssl(&[
            "pkeyutl", "-verify", "-pubin", "-inkey", &pubf, "-in", &msgf, "-sigfile", &sigf,
        ]),
        "raw" => openssl(&[
            "pkeyutl", "-verify", "-pubin", "-inkey", &pubf, "-rawin", "-in", &msgf, "-sigfile",
            &sigf,
        ]),
        md => {
            let mut args = vec!["dgst", md, "-verify", &pubf, "-signature", &sigf];
            for o in sigopts {
                args.push("-sigopt");
                args.push(o);
            }
            args.push(&msgf);
            openssl(&args)
        }
    }
}

fn der(raw: &[u8]) -> Vec<u8> {
    kms_node::asym::ecdsa_raw_to_der(raw).unwrap()
}

fn digest_info_sha256(msg: &[u8]) -> Vec<u8> {
    let mut v = vec![
        0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01,
        0x05, 0x00, 0x04, 0x20,
    ];
    v.extend_from_slice(&sha2::Sha256::digest(msg));
    v
}

fn find(s: &Session, class: ObjectClass, label: &str) -> Vec<ObjectHandle> {
    s.find_objects(&[
        Attribute::Class(class),
        Attribute::Label(label.as_bytes().to_vec()),
    ])
    .unwrap()
}

#[test]
fn key_pairs_through_the_module() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let node = KmsNode::start("");
    let dir = node.tmp.path();
    // A key made with the CLI shows up as a pair too.
    ok(&node.server.cli(
        None,
        &[
            "add-key",
            "--enclave",
            ENCLAVE,
            "--type",
            "ec-p384",
            "cli-p384",
        ],
    ));
    let c = load(&node.config);
    let s = rw(&c);
    let msg = b"the quick brown fox jumps over the lazy dog".to_vec();

    // ---- generation and objects ----
    let (ec_pub, ec) = pair(
        &s,
        &Mechanism::EccKeyPairGen,
        "ec256",
        vec![Attribute::EcParams(P256.to_vec())],
    );
    let (ec3_pub, ec3) = pair(
        &s,
        &Mechanism::EccKeyPairGen,
        "ec384",
        vec![Attribute::EcParams(P384.to_vec())],
    );
    let (ed_pub, ed) = pair(
        &s,
        &Mechanism::EccEdwardsKeyPairGen,
        "ed",
        vec![Attribute::EcParams(ED25519.to_vec())],
    );
    let (rsa_pub, rsa) = pair(
        &s,
        &Mechanism::RsaPkcsKeyPairGen,
        "rsa",
        vec![
            Attribute::ModulusBits(2048.into()),
            Attribute::PublicExponent(vec![1, 0, 1]),
        ],
    );
    let mut ml = Vec::new();
    for (set, name) in [
        (MlDsaParameterSetType::ML_DSA_44, "ml44"),
        (MlDsaParameterSetType::ML_DSA_65, "ml65"),
        (MlDsaParameterSetType::ML_DSA_87, "ml87"),
    ] {
        ml.push((
            name,
            pair(
                &s,
                &Mechanism::MlDsaKeyPairGen,
                name,
                vec![Attribute::ParameterSet(set.into())],
            ),
        ));
    }
    let listed = ok(&node.server.cli(None, &["ls-key", "-e", ENCLAVE]));
    for k in ["ec256", "ec384", "ed", "rsa", "ml44", "ml65", "ml87"] {
        assert!(listed.contains(k), "{k} not in:\n{listed}");
    }

    // Each key is a private and a public object with the same id and label.
    for (label, kt) in [
        ("ec256", KeyType::EC),
        ("cli-p384", KeyType::EC),
        ("ed", KeyType::EC_EDWARDS),
        ("rsa", KeyType::RSA),
        ("ml65", KeyType::ML_DSA),
    ] {
        let pr = find(&s, ObjectClass::PRIVATE_KEY, label);
        let pu = find(&s, ObjectClass::PUBLIC_KEY, label);
        assert_eq!((pr.len(), pu.len()), (1, 1), "{label}");
        assert_eq!(bytes_attr(&s, pr[0], AttributeType::Id), label.as_bytes());
        assert_eq!(bytes_attr(&s, pu[0], AttributeType::Id), label.as_bytes());
        for h in [pr[0], pu[0]] {
            let a = s.get_attributes(h, &[AttributeType::KeyType]).unwrap();
            assert_eq!(a, vec![Attribute::KeyType(kt)], "{label}");
        }
        let a = s
            .get_attributes(
                pr[0],
                &[
                    AttributeType::Sensitive,
                    AttributeType::Extractable,
                    AttributeType::AlwaysAuthenticate,
                    AttributeType::Sign,
                ],
            )
            .unwrap();
        assert_eq!(
            a,
            vec![
                Attribute::Sensitive(true),
                Attribute::Extractable(false),
                Attribute::AlwaysAuthenticate(false),
                Attribute::Sign(true)
            ]
        );
        let a = s
            .get_attributes(pu[0], &[AttributeType::Private, AttributeType::Verify])
            .unwrap();
        assert_eq!(a, vec![Attribute::Private(false), Attribute::Verify(true)]);
        assert_eq!(
            bytes_attr(&s, pr[0], AttributeType::PublicKeyInfo),
            bytes_attr(&s, pu[0], AttributeType::PublicKeyInfo)
        );
    }
    assert_eq!(find(&s, ObjectClass::PRIVATE_KEY, "ec256"), vec![ec]);
    assert_eq!(bytes_attr(&s, ec_pub, AttributeType::EcParams), P256);
    let point = bytes_attr(&s, ec_pub, AttributeType::EcPoint);
    assert_eq!(point[..3], [0x04, 0x41, 0x04]);
    assert_eq!(point.len(), 67);
    assert_eq!(bytes_attr(&s, ec3, AttributeType::EcParams), P384);
    assert_eq!(bytes_attr(&s, ed_pub, AttributeType::EcParams), ED25519);
    assert_eq!(
        bytes_attr(&s, ed_pub, AttributeType::EcPoint)[..2],
        [0x04, 0x20]
    );
    assert_eq!(bytes_attr(&s, rsa, AttributeType::Modulus).len(), 256);
    assert_eq!(
        bytes_attr(&s, rsa_pub, AttributeType::PublicExponent),
        [1, 0, 1]
    );
    assert_eq!(
        s.get_attributes(rsa_pub, &[AttributeType::ModulusBits])
            .unwrap(),
        vec![Attribute::ModulusBits(2048.into())]
    );
    let (_, (ml65_pub, ml65)) = ml[1];
    assert_eq!(bytes_attr(&s, ml65_pub, AttributeType::Value).len(), 1952);
    assert_eq!(
        s.get_attributes(ml65, &[AttributeType::ParameterSet])
            .unwrap(),
        vec![Attribute::ParameterSet(
            MlDsaParameterSetType::ML_DSA_65.into()
        )]
    );
    // Secret components are sensitive.
    for (h, t) in [
        (ec, AttributeType::Value),
        (ml65, AttributeType::Value),
        (rsa, AttributeType::PrivateExponent),
        (rsa, AttributeType::Prime1),
    ] {
        let info = s.get_attribute_info(h, &[t]).unwrap();
        assert!(
            matches!(info[..], [AttributeInfo::Sensitive]),
            "{t:?}: {info:?}"
        );
    }
    // Public keys are visible to a session that never logged in.
    let c2 = c.p11.open_ro_session(c.slot).unwrap();
    assert_eq!(find(&c2, ObjectClass::PUBLIC_KEY, "rsa"), vec![rsa_pub]);

    // ---- signatures, checked by OpenSSL ----
    let spki = |h| bytes_attr(&s, h, AttributeType::PublicKeyInfo);
    let ec_spki = spki(ec_pub);
    let sig = s.sign(&Mechanism::EcdsaSha256, ec, &msg).unwrap();
    assert_eq!(sig.len(), 64);
    openssl_verify(dir, &ec_spki, "-sha256", &[], &msg, &der(&sig));
    s.verify(&Mechanism::EcdsaSha256, ec_pub, &msg, &sig)
        .unwrap();
    let sig = s.sign(&Mechanism::EcdsaSha512, ec, &msg).unwrap();
    openssl_verify(dir, &ec_spki, "-sha512", &[], &msg, &der(&sig));
    // CKM_ECDSA over digests of every length: SHA-256, SHA-1 (20 bytes,
    // left-padded), SHA-512 (cut to the field size).
    for d in [
        sha2::Sha256::digest(&msg).to_vec(),
        vec![7u8; 20],
        sha2::Sha512::digest(&msg).to_vec(),
    ] {
        let sig = s.sign(&Mechanism::Ecdsa, ec, &d).unwrap();
        openssl_verify(dir, &ec_spki, "", &[], &d, &der(&sig));
        s.verify(&Mechanism::Ecdsa, ec_pub, &d, &sig).unwrap();
    }
    let sig = s.sign(&Mechanism::EcdsaSha384, ec3, &msg).unwrap();
    assert_eq!(sig.len(), 96);
    openssl_verify(dir, &spki(ec3_pub), "-sha384", &[], &msg, &der(&sig));

    let eddsa = Mechanism::Eddsa(cryptoki::mechanism::eddsa::EddsaParams::new(
        cryptoki::mechanism::eddsa::EddsaSignatureScheme::Pure,
    ));
    let sig = s.sign(&eddsa, ed, &msg).unwrap();
    openssl_verify(dir, &spki(ed_pub), "raw", &[], &msg, &sig);
    s.verify(&eddsa, ed_pub, &msg, &sig).unwrap();

    let rsa_spki = spki(rsa_pub);
    for (m, md) in [
        (Mechanism::Sha256RsaPkcs, "-sha256"),
        (Mechanism::Sha384RsaPkcs, "-sha384"),
        (Mechanism::Sha512RsaPkcs, "-sha512"),
    ] {
        let sig = s.sign(&m, rsa, &msg).unwrap();
        assert_eq!(sig.len(), 256);
        openssl_verify(dir, &rsa_spki, md, &[], &msg, &sig);
        s.verify(&m, rsa_pub, &msg, &sig).unwrap();
    }
    let sig = s
        .sign(&Mechanism::RsaPkcs, rsa, &digest_info_sha256(&msg))
        .unwrap();
    openssl_verify(dir, &rsa_spki, "-sha256", &[], &msg, &sig);
    s.verify(
        &Mechanism::RsaPkcs,
        rsa_pub,
        &digest_info_sha256(&msg),
        &sig,
    )
    .unwrap();
    let pss = PkcsPssParams {
        hash_alg: MechanismType::SHA256,
        mgf: PkcsMgfType::MGF1_SHA256,
        s_len: 32.into(),
    };
    let pss_opts = [
        "rsa_padding_mode:pss",
        "rsa_pss_saltlen:32",
        "rsa_mgf1_md:sha256",
    ];
    let sig = s
        .sign(&Mechanism::Sha256RsaPkcsPss(pss), rsa, &msg)
        .unwrap();
    openssl_verify(dir, &rsa_spki, "-sha256", &pss_opts, &msg, &sig);
    s.verify(&Mechanism::Sha256RsaPkcsPss(pss), rsa_pub, &msg, &sig)
        .unwrap();
    let d = sha2::Sha256::digest(&msg).to_vec();
    let sig = s.sign(&Mechanism::RsaPkcsPss(pss), rsa, &d).unwrap();
    openssl_verify(dir, &rsa_spki, "-sha256", &pss_opts, &msg, &sig);
    let pss512 = PkcsPssParams {
        hash_alg: MechanismType::SHA512,
        mgf: PkcsMgfType::MGF1_SHA512,
        s_len: 0.into(),
    };
    let sig = s
        .sign(&Mechanism::Sha512RsaPkcsPss(pss512), rsa, &msg)
        .unwrap();
    openssl_verify(
        dir,
        &rsa_spki,
        "-sha512",
        &[
            "rsa_padding_mode:pss",
            "rsa_pss_saltlen:0",
            "rsa_mgf1_md:sha512",
        ],
        &msg,
        &sig,
    );

    // ML-DSA: pure, with a context, deterministic; the cluster verifies.
    let client = node.server.client(&node.server.root_key);
    for (name, (pu, pr)) in &ml {
        for (hedge, ctx) in [
            (HedgeType::Preferred, None),
            (HedgeType::Required, Some(&b"ctx"[..])),
            (HedgeType::DeterministicRequired, Some(&b"ctx"[..])),
        ] {
            let m = Mechanism::MlDsa(SignAdditionalContext::new(hedge, ctx));
            let sig = s.sign(&m, *pr, &msg).unwrap();
            s.verify(&m, *pu, &msg, &sig).unwrap();
            let params = proto::SignParams {
                context: ctx.unwrap_or_default().to_vec(),
                ..Default::default()
            };
            let v = rt()
                .block_on(client.verify(ENCLAVE, name, 0, &msg, &sig, params))
                .unwrap();
            assert!(v.valid, "{name}");
            if hedge == HedgeType::DeterministicRequired {
                assert_eq!(s.sign(&m, *pr, &msg).unwrap(), sig, "{name} deterministic");
            }
        }
    }

    // ---- multi-part ----
    for (m, k, kp) in [
        (Mechanism::Sha256RsaPkcs, rsa, rsa_pub),
        (Mechanism::EcdsaSha384, ec3, ec3_pub),
        (eddsa, ed, ed_pub),
        (
            Mechanism::MlDsa(SignAdditionalContext::new(HedgeType::Preferred, None)),
            ml65,
            ml65_pub,
        ),
    ] {
        s.sign_init(&m, k).unwrap();
        s.sign_update(&msg[..10]).unwrap();
        s.sign_update(&msg[10..]).unwrap();
        let sig = s.sign_final().unwrap();
        s.verify(&m, kp, &msg, &sig).unwrap();
        s.verify_init(&m, kp).unwrap();
        s.verify_update(&msg[..5]).unwrap();
        s.verify_update(&msg[5..]).unwrap();
        s.verify_final(&sig).unwrap();
        if k == ec3 {
            openssl_verify(dir, &spki(ec3_pub), "-sha384", &[], &msg, &der(&sig));
        }
    }
    let sig = s.sign(&Mechanism::Sha256RsaPkcs, rsa, &msg).unwrap();
    openssl_verify(dir, &rsa_spki, "-sha256", &[], &msg, &sig);

    // ---- RSA-OAEP decryption of OpenSSL ciphertexts ----
    let pubf = write(dir, "rsa.pub.pem", pem(&rsa_spki).as_bytes());
    let plainf = write(dir, "plain", b"a session key of 32 bytes.......");
    for (md, label, ck, mgf) in [
        (
            "sha256",
            &b"lbl"[..],
            MechanismType::SHA256,
            PkcsMgfType::MGF1_SHA256,
        ),
        (
            "sha1",
            &b""[..],
            MechanismType::SHA1,
            PkcsMgfType::MGF1_SHA1,
        ),
    ] {
        let ctf = dir.join(format!("ct-{md}"));
        let mut args = vec![
            "pkeyutl".to_string(),
            "-encrypt".into(),
            "-pubin".into(),
            "-inkey".into(),
            pubf.clone(),
            "-in".into(),
            plainf.clone(),
            "-out".into(),
            ctf.to_str().unwrap().into(),
            "-pkeyopt".into(),
            "rsa_padding_mode:oaep".into(),
            "-pkeyopt".into(),
            format!("rsa_oaep_md:{md}"),
            "-pkeyopt".into(),
            format!("rsa_mgf1_md:{md}"),
        ];
        if !label.is_empty() {
            args.push("-pkeyopt".into());
            args.push(format!(
                "rsa_oaep_label:{}",
                label.iter().map(|b| format!("{b:02x}")).collect::<String>()
            ));
        }
        success(Command::new("openssl").args(&args));
        let ct = std::fs::read(&ctf).unwrap();
        let src = if label.is_empty() {
            PkcsOaepSource::empty()
        } else {
            PkcsOaepSource::data_specified(label)
        };
        let m = Mechanism::RsaPkcsOaep(PkcsOaepParams::new(ck, mgf, src));
        let pt = s.decrypt(&m, rsa, &ct).unwrap();
        assert_eq!(pt, b"a session key of 32 bytes.......");
        // A modified ciphertext is refused.
        let mut bad = ct.clone();
        bad[10] ^= 1;
        assert_eq!(rv(s.decrypt(&m, rsa, &bad)), RvError::EncryptedDataInvalid);
    }

    // ---- bad arguments ----
    assert_eq!(
        rv(s.sign_init(&Mechanism::EcdsaSha256, rsa)),
        RvError::KeyTypeInconsistent
    );
    assert_eq!(
        rv(s.sign_init(&Mechanism::Sha256RsaPkcs, ec)),
        RvError::KeyTypeInconsistent
    );
    assert_eq!(
        rv(s.sign_init(&Mechanism::Sha256Hmac, ec)),
        RvError::KeyTypeInconsistent
    );
    assert_eq!(
        rv(s.sign_init(&Mechanism::EcdsaSha256, ec_pub)),
        RvError::KeyFunctionNotPermitted
    );
    assert_eq!(
        rv(s.verify_init(&Mechanism::EcdsaSha256, ec)),
        RvError::KeyFunctionNotPermitted
    );
    let long = vec![1u8; 256];
    assert_eq!(
        rv(s.sign_init(
            &Mechanism::MlDsa(SignAdditionalContext::new(
                HedgeType::Preferred,
                Some(&long)
            )),
            ml65
        )),
        RvError::MechanismParamInvalid
    );
    let big_salt = PkcsPssParams {
        hash_alg: MechanismType::SHA256,
        mgf: PkcsMgfType::MGF1_SHA256,
        s_len: 250.into(),
    };
    assert_eq!(
        rv(s.sign_init(&Mechanism::RsaPkcsPss(big_salt), rsa)),
        RvError::MechanismParamInvalid
    );
    let mismatched = PkcsPssParams {
        hash_alg: MechanismType::SHA384,
        mgf: PkcsMgfType::MGF1_SHA256,
        s_len: 32.into(),
    };
    assert_eq!(
        rv(s.sign_init(&Mechanism::Sha256RsaPkcsPss(mismatched), rsa)),
        RvError::MechanismParamInvalid
    );
    assert_eq!(
        rv(s.sign(&Mechanism::RsaPkcsPss(pss), rsa, &[1; 20])),
        RvError::DataLenRange
    );
    assert_eq!(
        rv(s.sign(&Mechanism::RsaPkcs, rsa, &[1; 250])),
        RvError::DataLenRange
    );
    let ed_ctx = Mechanism::Eddsa(cryptoki::mechanism::eddsa::EddsaParams::new(
        cryptoki::mechanism::eddsa::EddsaSignatureScheme::Ed25519ctx(b"c"),
    ));
    assert_eq!(rv(s.sign_init(&ed_ctx, ed)), RvError::MechanismParamInvalid);
    let mut sig = s.sign(&Mechanism::EcdsaSha256, ec, &msg).unwrap();
    sig[5] ^= 1;
    assert_eq!(
        rv(s.verify(&Mechanism::EcdsaSha256, ec_pub, &msg, &sig)),
        RvError::SignatureInvalid
    );
    assert_eq!(
        rv(s.verify(&Mechanism::EcdsaSha256, ec_pub, &msg, &sig[..63])),
        RvError::SignatureLenRange
    );
    let mut sig = s.sign(&Mechanism::Sha256RsaPkcs, rsa, &msg).unwrap();
    sig[0] ^= 0xff;
    assert_eq!(
        rv(s.verify(&Mechanism::Sha256RsaPkcs, rsa_pub, &msg, &sig)),
        RvError::SignatureInvalid
    );
    // Templates.
    let kpg = |m: &Mechanism, public: Vec<Attribute>| rv(s.generate_key_pair(m, &public, &[]));
    assert_eq!(
        kpg(
            &Mechanism::RsaPkcsKeyPairGen,
            vec![Attribute::ModulusBits(1024.into())]
        ),
        RvError::KeySizeRange
    );
    assert_eq!(
        kpg(&Mechanism::RsaPkcsKeyPairGen, vec![]),
        RvError::TemplateIncomplete
    );
    assert_eq!(
        kpg(
            &Mechanism::EccKeyPairGen,
            vec![Attribute::EcParams(vec![0x06, 0x08, 1])]
        ),
        RvError::AttributeValueInvalid
    );
    assert_eq!(
        kpg(
            &Mechanism::EccKeyPairGen,
            vec![Attribute::EcParams(vec![
                0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x0a
            ])]
        ),
        RvError::CurveNotSupported
    );
    // CKA_TOKEN false makes a session pair (tests/tests/pkcs11_mechanisms.rs);
    // the two templates must agree.
    assert_eq!(
        rv(s.generate_key_pair(
            &Mechanism::EccKeyPairGen,
            &[Attribute::EcParams(P256.to_vec()), Attribute::Token(false)],
            &[Attribute::Token(true)]
        )),
        RvError::TemplateInconsistent
    );
    assert_eq!(
        kpg(&Mechanism::MlDsaKeyPairGen, vec![]),
        RvError::TemplateIncomplete
    );
    assert_eq!(
        kpg(&Mechanism::AesKeyGen, vec![]),
        RvError::MechanismInvalid
    );

    // ---- sizes through the C interface ----
    // SAFETY: loading the module under test (the same library instance as
    // `c.p11`); every pointer below points to a live local.
    unsafe {
        let lib = cryptoki_sys::Pkcs11::new(module_path()).unwrap();
        let mut fl: *mut CK_FUNCTION_LIST = null_mut();
        assert_eq!(lib.C_GetFunctionList(&mut fl), CKR_OK);
        let f = &*fl;
        let sh = s.handle();
        for (key, mech, want) in [
            (ec.handle(), CKM_ECDSA_SHA256, 64),
            (ec3.handle(), CKM_ECDSA_SHA256, 96),
            (rsa.handle(), CKM_SHA256_RSA_PKCS, 256),
            (ml65.handle(), CKM_ML_DSA, 3309),
        ] {
            let mut m = CK_MECHANISM {
                mechanism: mech,
                pParameter: null_mut(),
                ulParameterLen: 0,
            };
            assert_eq!(f.C_SignInit.unwrap()(sh, &mut m, key), CKR_OK);
            let mut data = msg.clone();
            let mut len: CK_ULONG = 0;
            assert_eq!(
                f.C_Sign.unwrap()(sh, data.as_mut_ptr(), data.len() as _, null_mut(), &mut len),
                CKR_OK
            );
            assert_eq!(len, want);
            let mut out = vec![0u8; 8000];
            len = 10;
            assert_eq!(
                f.C_Sign.unwrap()(
                    sh,
                    data.as_mut_ptr(),
                    data.len() as _,
                    out.as_mut_ptr(),
                    &mut len
                ),
                CKR_BUFFER_TOO_SMALL
            );
            assert_eq!(len, want);
            len = out.len() as _;
            assert_eq!(
                f.C_Sign.unwrap()(
                    sh,
                    data.as_mut_ptr(),
                    data.len() as _,
                    out.as_mut_ptr(),
                    &mut len
                ),
                CKR_OK
            );
            assert_eq!(len, want);
        }
        // A PSS parameter of the wrong size.
        let mut p = [0u8; 8];
        let mut m = CK_MECHANISM {
            mechanism: CKM_RSA_PKCS_PSS,
            pParameter: p.as_mut_ptr() as *mut _,
            ulParameterLen: 8,
        };
        assert_eq!(
            f.C_SignInit.unwrap()(sh, &mut m, rsa.handle()),
            CKR_MECHANISM_PARAM_INVALID
        );
        // The mechanism list and info.
        let mut info: CK_MECHANISM_INFO = std::mem::zeroed();
        assert_eq!(
            f.C_GetMechanismInfo.unwrap()(c.slot.id() as _, CKM_EC_KEY_PAIR_GEN, &mut info),
            CKR_OK
        );
        assert_eq!((info.ulMinKeySize, info.ulMaxKeySize), (256, 384));
        assert_ne!(info.flags & CKF_GENERATE_KEY_PAIR, 0);
        assert_eq!(
            f.C_GetMechanismInfo.unwrap()(c.slot.id() as _, CKM_RSA_PKCS_OAEP, &mut info),
            CKR_OK
        );
        assert_eq!(info.flags, CKF_ENCRYPT | CKF_DECRYPT);
    }

    // ---- rotation: the objects show the new version, under the same
    // handles, after the cache refresh (refresh_ms, 2 s by default) ----
    ok(&node.server.cli(
        None,
        &["add-key", "--enclave", ENCLAVE, "--version", "ec256"],
    ));
    std::thread::sleep(std::time::Duration::from_millis(2100));
    assert_eq!(find(&s, ObjectClass::PRIVATE_KEY, "ec256"), vec![ec]);
    let new_spki = bytes_attr(&s, ec_pub, AttributeType::PublicKeyInfo);
    assert_ne!(new_spki, ec_spki);
    assert_eq!(bytes_attr(&s, ec, AttributeType::PublicKeyInfo), new_spki);
    let sig = s.sign(&Mechanism::EcdsaSha256, ec, &msg).unwrap();
    openssl_verify(dir, &new_spki, "-sha256", &[], &msg, &der(&sig));
    s.verify(&Mechanism::EcdsaSha256, ec_pub, &msg, &sig)
        .unwrap();

    // ---- destroying ----
    assert_eq!(rv(s.destroy_object(rsa_pub)), RvError::ActionProhibited);
    s.destroy_object(rsa).unwrap();
    assert!(find(&s, ObjectClass::PUBLIC_KEY, "rsa").is_empty());
    assert!(find(&s, ObjectClass::PRIVATE_KEY, "rsa").is_empty());
    assert!(!ok(&node.server.cli(None, &["ls-key", "-e", ENCLAVE])).contains("rsa"));
    drop(c2);
    drop(s);
    c.p11.finalize().unwrap();
}

fn tool(config: &Path, token: &str) -> Command {
    let mut c = Command::new("pkcs11-tool");
    c.env("KMS_PKCS11_CONFIG", config)
        .arg("--module")
        .arg(module_path())
        .args(["--token-label", token]);
    c
}

/// `--id` of a key: its name in hex (`CKA_ID` is the key name; pkcs11-tool
/// 0.23 picks the key to sign with by id, not by label).
fn id(label: &str) -> String {
    label.bytes().map(|b| format!("{b:02x}")).collect()
}

fn login(c: &mut Command) -> &mut Command {
    c.args(["--login", "--pin", "1234"])
}

#[test]
fn consumers_use_cluster_key_pairs() {
    let node = KmsNode::start("");
    // Ed25519 keys go to their own enclave: libp11 0.4.12 fails to
    // enumerate a token holding one (a key type it does not know).
    ok(&node.server.cli(None, &["add-enclave", "second"]));
    let dir = node.tmp.path();
    let cfg = &node.config;
    let msg = write(dir, "msg", b"sign me, consumers");

    let mechs = success(tool(cfg, ENCLAVE).arg("-M"));
    for m in [
        "ECDSA-SHA256",
        "RSA-PKCS-PSS",
        "ECDSA-KEY-PAIR-GEN",
        "RSA-PKCS-OAEP",
        "EDDSA",
    ] {
        assert!(mechs.contains(m), "{m} missing:\n{mechs}");
    }

    success(login(&mut tool(cfg, ENCLAVE)).args([
        "--keypairgen",
        "--key-type",
        "EC:prime256v1",
        "--label",
        "p256",
    ]));
    success(login(&mut tool(cfg, ENCLAVE)).args([
        "--keypairgen",
        "--key-type",
        "EC:secp384r1",
        "--label",
        "p384",
    ]));
    success(login(&mut tool(cfg, ENCLAVE)).args([
        "--keypairgen",
        "--key-type",
        "rsa:2048",
        "--label",
        "rsa",
    ]));
    success(login(&mut tool(cfg, "second")).args([
        "--keypairgen",
        "--key-type",
        "EC:edwards25519",
        "--label",
        "ed",
    ]));
    let objs = success(tool(cfg, ENCLAVE).arg("-O"));
    assert!(
        objs.contains("Private Key Object; EC")
            && objs.contains("Public Key Object; RSA 2048 bits"),
        "{objs}"
    );

    // Public keys as DER SPKI through pkcs11-tool, signatures checked by OpenSSL.
    let pubkey = |token: &str, label: &str| {
        let out = dir.join(format!("{label}.pub.der"));
        success(
            tool(cfg, token)
                .args([
                    "--read-object",
                    "--type",
                    "pubkey",
                    "--id",
                    &id(label),
                    "-o",
                ])
                .arg(&out),
        );
        let pem = dir.join(format!("{label}.pub.pem"));
        openssl(&[
            "pkey",
            "-pubin",
            "-inform",
            "DER",
            "-in",
            out.to_str().unwrap(),
            "-out",
            pem.to_str().unwrap(),
        ]);
        pem.to_str().unwrap().to_string()
    };
    let sign = |token: &str, label: &str, mech: &str, extra: &[&str]| {
        let out = dir.join(format!("{label}-{mech}.sig"));
        success(
            login(&mut tool(cfg, token))
                .args(["--sign", "-m", mech, "--id", &id(label), "-i", &msg, "-o"])
                .arg(&out)
                .args(extra),
        );
        out.to_str().unwrap().to_string()
    };
    let p256 = pubkey(ENCLAVE, "p256");
    let sig = sign(ENCLAVE, "p256", "ECDSA-SHA256", &["-f", "openssl"]);
    openssl(&[
        "dgst",
        "-sha256",
        "-verify",
        &p256,
        "-signature",
        &sig,
        &msg,
    ]);
    // pkcs11-tool 0.23 cannot build a P-384 public key ("cannot create
    // EVP_PKEY", SoftHSM2 too): take it from the cluster.
    let p384 = write(
        dir,
        "p384.pub.pem",
        ok(&node
            .server
            .cli(None, &["pubkey", "--enclave", ENCLAVE, "p384"]))
        .as_bytes(),
    );
    let sig = sign(ENCLAVE, "p384", "ECDSA-SHA384", &[]);
    let raw = std::fs::read(&sig).unwrap();
    assert_eq!(raw.len(), 96);
    let sig = write(dir, "p384.der.sig", &der(&raw));
    openssl(&[
        "dgst",
        "-sha384",
        "-verify",
        &p384,
        "-signature",
        &sig,
        &msg,
    ]);
    let rsa = pubkey(ENCLAVE, "rsa");
    let sig = sign(ENCLAVE, "rsa", "SHA256-RSA-PKCS", &[]);
    openssl(&["dgst", "-sha256", "-verify", &rsa, "-signature", &sig, &msg]);
    let sig = sign(
        ENCLAVE,
        "rsa",
        "SHA256-RSA-PKCS-PSS",
        &["--mgf", "MGF1-SHA256", "--salt-len", "32"],
    );
    openssl(&[
        "dgst",
        "-sha256",
        "-verify",
        &rsa,
        "-signature",
        &sig,
        "-sigopt",
        "rsa_padding_mode:pss",
        "-sigopt",
        "rsa_pss_saltlen:32",
        &msg,
    ]);
    // pkcs11-tool verifies with the token too.
    success(login(&mut tool(cfg, ENCLAVE)).args([
        "--verify",
        "-m",
        "SHA256-RSA-PKCS-PSS",
        "--mgf",
        "MGF1-SHA256",
        "--salt-len",
        "32",
        "--id",
        &id("rsa"),
        "-i",
        &msg,
        "--signature-file",
        &sig,
    ]));
    // pkcs11-tool 0.23 writes no SubjectPublicKeyInfo for EdDSA keys.
    let ed = write(
        dir,
        "ed.pub.pem",
        ok(&node
            .server
            .cli(None, &["pubkey", "--enclave", "second", "ed"]))
        .as_bytes(),
    );
    let sig = sign("second", "ed", "EDDSA", &[]);
    openssl(&[
        "pkeyutl", "-verify", "-pubin", "-inkey", &ed, "-rawin", "-in", &msg, "-sigfile", &sig,
    ]);
    // OAEP: OpenSSL encrypts, pkcs11-tool decrypts through the cluster.
    let plain = write(dir, "plain", b"oaep plaintext");
    let ct = dir.join("ct").to_str().unwrap().to_string();
    openssl(&[
        "pkeyutl",
        "-encrypt",
        "-pubin",
        "-inkey",
        &rsa,
        "-in",
        &plain,
        "-out",
        &ct,
        "-pkeyopt",
        "rsa_padding_mode:oaep",
        "-pkeyopt",
        "rsa_oaep_md:sha256",
        "-pkeyopt",
        "rsa_mgf1_md:sha256",
    ]);
    let dec = dir.join("dec");
    success(
        login(&mut tool(cfg, ENCLAVE))
            .args([
                "--decrypt",
                "-m",
                "RSA-PKCS-OAEP",
                "--hash-algorithm",
                "SHA256",
                "--mgf",
                "MGF1-SHA256",
                "--id",
                &id("rsa"),
                "-i",
                &ct,
                "-o",
            ])
            .arg(&dec),
    );
    assert_eq!(std::fs::read(&dec).unwrap(), b"oaep plaintext");

    // pkcs11-tool's own checks, on tokens holding key pairs.
    for token in [ENCLAVE, "second"] {
        let t = success(login(&mut tool(cfg, token)).arg("--test"));
        assert!(t.contains("No errors"), "{token}: {t}");
        eprintln!("pkcs11-tool --test on {token}:\n{t}");
    }

    // GnuTLS lists the keys.
    let all = success(
        Command::new("p11tool")
            .env("KMS_PKCS11_CONFIG", cfg)
            .env("GNUTLS_PIN", "1234")
            .args(["--provider"])
            .arg(module_path())
            .args(["--list-all", "--login", "pkcs11:token=p11"]),
    );
    assert!(
        all.contains("p256") && all.contains("rsa") && all.contains("Private key"),
        "{all}"
    );
    let all = success(
        Command::new("p11tool")
            .env("KMS_PKCS11_CONFIG", cfg)
            .args(["--provider"])
            .arg(module_path())
            .args(["--list-all", "pkcs11:token=second"]),
    );
    assert!(all.contains("EdDSA") || all.contains("Ed25519"), "{all}");

    // GnuTLS signs with the cluster keys: p11tool --test-sign, and
    // self-signed certificates that OpenSSL verifies.
    let gnutls = |args: &[&str]| {
        success(
            Command::new(args[0])
                .env("KMS_PKCS11_CONFIG", cfg)
                .env("GNUTLS_PIN", "1234")
                .arg("--provider")
                .arg(module_path())
                .args(&args[1..]),
        )
    };
    let tmpl = write(
        dir,
        "cert.tmpl",
        b"cn = kms pkcs11 test\nexpiration_days = 2\nsigning_key\n",
    );
    for (token, label) in [
        (ENCLAVE, "p256"),
        (ENCLAVE, "p384"),
        (ENCLAVE, "rsa"),
        ("second", "ed"),
    ] {
        let uri = format!("pkcs11:token={token};object={label};type=private");
        // (p11tool 3.7.9 --test-sign always hashes: not for Ed25519.)
        if label != "ed" {
            let t = gnutls(&["p11tool", "--login", "--test-sign", &uri]);
            assert!(
                t.contains("Verifying against public key in the token... ok"),
                "{label}: {t}"
            );
        }
        let crt = dir
            .join(format!("{label}.crt"))
            .to_str()
            .unwrap()
            .to_string();
        gnutls(&[
            "certtool",
            "--generate-self-signed",
            "--load-privkey",
            &uri,
            "--template",
            &tmpl,
            "--outfile",
            &crt,
        ]);
        openssl(&["verify", "-CAfile", &crt, &crt]);
    }

    // OpenSSL through the libp11 engine.
    let engine = Path::new("/usr/lib/x86_64-linux-gnu/engines-3/pkcs11.so");
    if engine.exists() {
        let conf = write(
            dir,
            "openssl.cnf",
            format!(
                "openssl_conf = init\n[init]\nengines = engines\n[engines]\npkcs11 = p11\n\
                 [p11]\nengine_id = pkcs11\ndynamic_path = {}\nMODULE_PATH = {}\nPIN = 1234\ninit = 0\n",
                engine.display(),
                module_path().display()
            )
            .as_bytes(),
        );
        let digest = write(dir, "digest", &sha2::Sha256::digest(b"engine"));
        for (label, pubf) in [("p256", &p256), ("rsa", &rsa)] {
            let sig = dir
                .join(format!("engine-{label}.sig"))
                .to_str()
                .unwrap()
                .to_string();
            let mut args = vec![
                "pkeyutl", "-engine", "pkcs11", "-keyform", "engine", "-sign", "-in", &digest,
                "-out", &sig,
            ];
            let uri = format!("pkcs11:token={ENCLAVE};object={label};type=private");
            args.push("-inkey");
            args.push(&uri);
            if label == "rsa" {
                args.extend(["-pkeyopt", "digest:sha256"]);
            }
            success(
                Command::new("openssl")
                    .env("OPENSSL_CONF", &conf)
                    .env("KMS_PKCS11_CONFIG", cfg)
                    .args(&args),
            );
            let mut v = vec![
                "pkeyutl", "-verify", "-pubin", "-inkey", pubf, "-in", &digest, "-sigfile", &sig,
            ];
            if label == "rsa" {
                v.extend(["-pkeyopt", "digest:sha256"]);
            }
            openssl(&v);
            // A self-signed certificate from the cluster key.
            let crt = dir
                .join(format!("engine-{label}.crt"))
                .to_str()
                .unwrap()
                .to_string();
            success(
                Command::new("openssl")
                    .env("OPENSSL_CONF", &conf)
                    .env("KMS_PKCS11_CONFIG", cfg)
                    .args([
                        "req",
                        "-engine",
                        "pkcs11",
                        "-keyform",
                        "engine",
                        "-key",
                        &uri,
                        "-new",
                        "-x509",
                        "-subj",
                        "/CN=engine",
                        "-days",
                        "1",
                        "-sha256",
                        "-out",
                        &crt,
                    ]),
            );
            openssl(&["verify", "-CAfile", &crt, &crt]);
        }
    }

    // OpenSSH lists the RSA and ECDSA keys.
    let keys = success(
        Command::new("ssh-keygen")
            .env("KMS_PKCS11_CONFIG", cfg)
            .arg("-D")
            .arg(module_path()),
    );
    assert!(
        keys.contains("ecdsa-sha2-nistp256") && keys.contains("ssh-rsa"),
        "{keys}"
    );
    eprintln!("ssh-keygen -D:\n{keys}");
}

/// OpenSSH signs with cluster keys: `ssh-agent` loads the module
/// (`ssh-add -s`, the PIN from an askpass program), and `ssh-keygen -Y`
/// signs through the agent (the same PKCS#11 code as `ssh -I`: CKM_ECDSA
/// over the digest, CKM_RSA_PKCS over a DigestInfo) and verifies.
#[test]
fn openssh_agent_signs_with_cluster_keys() {
    let node = KmsNode::start("");
    let dir = node.tmp.path();
    let cfg = &node.config;
    success(login(&mut tool(cfg, ENCLAVE)).args([
        "--keypairgen",
        "--key-type",
        "EC:prime256v1",
        "--label",
        "ssh-ec",
    ]));
    success(login(&mut tool(cfg, ENCLAVE)).args([
        "--keypairgen",
        "--key-type",
        "rsa:2048",
        "--label",
        "ssh-rsa",
    ]));
    let module = std::fs::canonicalize(module_path()).unwrap();
    let sock = dir.join("agent.sock");
    let pattern = format!("{}/*", module.parent().unwrap().display());
    let mut agent = Command::new("ssh-agent")
        .env("KMS_PKCS11_CONFIG", cfg)
        .arg("-D")
        .arg("-a")
        .arg(&sock)
        .arg("-P")
        .arg(&pattern)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start ssh-agent");
    let result = std::panic::catch_unwind(|| {
        for _ in 0..100 {
            if sock.exists() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let askpass = dir.join("askpass");
        std::fs::write(&askpass, "#!/bin/sh\necho 1234\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&askpass, std::fs::Permissions::from_mode(0o700)).unwrap();
        success(
            Command::new("ssh-add")
                .env("SSH_AUTH_SOCK", &sock)
                .env("SSH_ASKPASS", &askpass)
                .env("SSH_ASKPASS_REQUIRE", "force")
                .env("DISPLAY", ":0")
                .arg("-s")
                .arg(&module)
                .stdin(std::process::Stdio::null()),
        );
        let listed = success(
            Command::new("ssh-add")
                .env("SSH_AUTH_SOCK", &sock)
                .arg("-L"),
        );
        let data = write(
            dir,
            "data.txt",
            b"signed by a cluster key through ssh-agent",
        );
        for (kind, label) in [("ecdsa-sha2-nistp256", "ssh-ec"), ("ssh-rsa", "ssh-rsa")] {
            let line = listed
                .lines()
                .find(|l| l.starts_with(kind) && l.ends_with(label))
                .unwrap_or_else(|| panic!("{kind} {label} not in:\n{listed}"));
            let pubf = write(dir, &format!("{label}.pub"), format!("{line}\n").as_bytes());
            success(
                Command::new("ssh-keygen")
                    .env("SSH_AUTH_SOCK", &sock)
                    .args(["-Y", "sign", "-n", "file", "-f", &pubf, &data]),
            );
            let allowed = write(dir, "allowed", format!("u {line}\n").as_bytes());
            let sigf = format!("{data}.sig");
            let out = run(Command::new("ssh-keygen")
                .args([
                    "-Y", "verify", "-f", &allowed, "-I", "u", "-n", "file", "-s", &sigf,
                ])
                .stdin(std::fs::File::open(&data).unwrap()));
            assert!(
                out.status.success(),
                "{label}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            std::fs::remove_file(&sigf).unwrap();
        }
    });
    let _ = agent.kill();
    let _ = agent.wait();
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}

/// Verifies ML-DSA signatures with Python `cryptography` (its bundled
/// OpenSSL): one case per line, `set pk ctx msg sig` in hex (`-`: no
/// context).
const PY_MLDSA_VERIFY: &str = r#"
import sys
from cryptography.hazmat.primitives.asymmetric import mldsa
classes = {1: mldsa.MLDSA44PublicKey, 2: mldsa.MLDSA65PublicKey, 3: mldsa.MLDSA87PublicKey}
n = 0
for line in open(sys.argv[1]):
    ps, pk, ctx, msg, sig = line.split()
    ctx = None if ctx == "-" else bytes.fromhex(ctx)
    classes[int(ps)].from_public_bytes(bytes.fromhex(pk)).verify(bytes.fromhex(sig), bytes.fromhex(msg), ctx)
    n += 1
print(f"{n} ML-DSA signatures verified")
"#;

/// PyKCS11 generates ML-DSA key pairs and signs (pure ML-DSA, no
/// parameter); Python `cryptography` verifies with `CKA_VALUE`. (PyKCS11
/// 1.5.20 takes `CKA_PARAMETER_SET` as bytes: a native CK_ULONG.)
const PY_PYKCS11_MLDSA: &str = r#"
import struct, sys, PyKCS11
from cryptography.hazmat.primitives.asymmetric import mldsa
lib = PyKCS11.PyKCS11Lib(); lib.load(sys.argv[1])
slot = [s for s in lib.getSlotList(tokenPresent=True) if lib.getTokenInfo(s).label.strip() == "p11"][0]
s = lib.openSession(slot, PyKCS11.CKF_SERIAL_SESSION | PyKCS11.CKF_RW_SESSION)
s.login("1234")
classes = {1: mldsa.MLDSA44PublicKey, 2: mldsa.MLDSA65PublicKey, 3: mldsa.MLDSA87PublicKey}
for ps, cls in classes.items():
    label = "py-ml%d" % ps
    pub, priv = s.generateKeyPair(
        [(PyKCS11.CKA_TOKEN, True), (PyKCS11.CKA_LABEL, label), (PyKCS11.CKA_PARAMETER_SET, struct.pack("=Q", ps)), (PyKCS11.CKA_VERIFY, True)],
        [(PyKCS11.CKA_TOKEN, True), (PyKCS11.CKA_LABEL, label), (PyKCS11.CKA_SIGN, True)],
        mecha=PyKCS11.Mechanism(PyKCS11.CKM_ML_DSA_KEY_PAIR_GEN))
    pk = bytes(s.getAttributeValue(pub, [PyKCS11.CKA_VALUE])[0])
    msg = b"post-quantum signatures through PKCS#11"
    sig = bytes(s.sign(priv, msg, PyKCS11.Mechanism(PyKCS11.CKM_ML_DSA)))
    cls.from_public_bytes(pk).verify(sig, msg)
    print(label, len(pk), len(sig), "verified")
"#;

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// ML-DSA through the module, checked by an independent implementation
/// (Python `cryptography` 48): signatures of every parameter set, pure,
/// with a context and deterministic; and PyKCS11 as the application.
#[test]
fn ml_dsa_verifies_with_python_cryptography() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let node = KmsNode::start("");
    let dir = node.tmp.path();
    let c = load(&node.config);
    let s = rw(&c);
    let msg = b"ML-DSA through libkms_pkcs11.so".to_vec();
    let mut cases = String::new();
    for (set, n) in [
        (MlDsaParameterSetType::ML_DSA_44, 1),
        (MlDsaParameterSetType::ML_DSA_65, 2),
        (MlDsaParameterSetType::ML_DSA_87, 3),
    ] {
        let label = format!("ml-{n}");
        let (pu, pr) = pair(
            &s,
            &Mechanism::MlDsaKeyPairGen,
            &label,
            vec![Attribute::ParameterSet(set.into())],
        );
        let pk = bytes_attr(&s, pu, AttributeType::Value);
        for (hedge, ctx) in [
            (HedgeType::Preferred, None),
            (HedgeType::Required, Some(&b"a context"[..])),
            (HedgeType::DeterministicRequired, Some(&[7u8; 255][..])),
        ] {
            let m = Mechanism::MlDsa(SignAdditionalContext::new(hedge, ctx));
            let sig = s.sign(&m, pr, &msg).unwrap();
            let ctx = ctx.map(hex).unwrap_or_else(|| "-".into());
            cases.push_str(&format!(
                "{n} {} {ctx} {} {}\n",
                hex(&pk),
                hex(&msg),
                hex(&sig)
            ));
        }
    }
    let f = write(dir, "mldsa-cases", cases.as_bytes());
    let out = success(
        Command::new("python3")
            .arg("-c")
            .arg(PY_MLDSA_VERIFY)
            .arg(&f),
    );
    assert!(out.contains("9 ML-DSA signatures verified"), "{out}");
    drop(s);
    c.p11.finalize().unwrap();

    let out = success(
        Command::new("python3")
            .env("KMS_PKCS11_CONFIG", &node.config)
            .arg("-c")
            .arg(PY_PYKCS11_MLDSA)
            .arg(module_path()),
    );
    assert!(out.contains("py-ml3 2592 4627 verified"), "{out}");
}
