//! Certificates and data objects through `libkms_pkcs11.so` over live nodes:
//! created, found, read, changed, copied and destroyed with cryptoki
//! (exact return codes, garbage templates and garbage records in the
//! store), seen by another process and through another node of a cluster;
//! OpenSC `pkcs11-tool --write-object/--read-object/-O` and GnuTLS
//! `p11tool --list-all-certs`; and Java: SunPKCS11's `KeyStore` lists
//! cluster keys with their certificates, `jarsigner` signs a jar with them
//! and `jarsigner -verify` accepts it, and a Java program signs and
//! verifies with SHA256withECDSA.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::ptr::null_mut;
use std::sync::Mutex;
use std::time::Duration;

use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{
    Attribute, AttributeInfo, AttributeType, CertificateType, ObjectClass, ObjectHandle,
};
use cryptoki::session::{Session, UserType};
use cryptoki::types::{AuthPin, Date};
use cryptoki_sys::*;
use kms_client::proto;
use kms_tests::pkcs11::{load, module_path, write_config, KmsNode, ENCLAVE};
use kms_tests::{cluster, eventually, rt, run, success, SEED_HSM_KEY};

/// The cryptoki tests share the process's one module.
static SERIAL: Mutex<()> = Mutex::new(());

/// DER of the subject and issuer `/CN=t` (OpenSSL writes a UTF8String).
const CN_T: &[u8] = &[
    0x30, 0x0c, 0x31, 0x0a, 0x30, 0x08, 0x06, 0x03, 0x55, 0x04, 0x03, 0x0c, 0x01, 0x74,
];

fn rv<T: std::fmt::Debug>(r: Result<T, CkError>) -> RvError {
    match r {
        Err(CkError::Pkcs11(rv, _)) => rv,
        other => panic!("expected a PKCS#11 error, got {other:?}"),
    }
}

fn path(dir: &Path, name: &str) -> String {
    dir.join(name).to_str().unwrap().to_string()
}

/// A self-signed P-256 certificate `/CN=t`, serial 0x1234, made by
/// OpenSSL: (DER, SubjectPublicKeyInfo DER, SHA-1 of the DER).
fn openssl_cert(dir: &Path, name: &str) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let der = path(dir, &format!("{name}.der"));
    success(Command::new("openssl").args([
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        &path(dir, &format!("{name}.key")),
        "-subj",
        "/CN=t",
        "-set_serial",
        "4660",
        "-days",
        "2",
        "-outform",
        "DER",
        "-out",
        &der,
    ]));
    let pubpem = path(dir, &format!("{name}.pub.pem"));
    success(Command::new("openssl").args([
        "x509", "-inform", "DER", "-in", &der, "-pubkey", "-noout", "-out", &pubpem,
    ]));
    let pubder = path(dir, &format!("{name}.pub.der"));
    success(Command::new("openssl").args([
        "pkey", "-pubin", "-in", &pubpem, "-outform", "DER", "-out", &pubder,
    ]));
    let sha1 = path(dir, &format!("{name}.sha1"));
    success(Command::new("openssl").args(["dgst", "-sha1", "-binary", "-out", &sha1, &der]));
    (
        std::fs::read(&der).unwrap(),
        std::fs::read(&pubder).unwrap(),
        std::fs::read(&sha1).unwrap(),
    )
}

fn cert_template(der: &[u8], label: &str, id: &[u8], token: bool) -> Vec<Attribute> {
    vec![
        Attribute::Class(ObjectClass::CERTIFICATE),
        Attribute::CertificateType(CertificateType::X_509),
        Attribute::Token(token),
        Attribute::Label(label.as_bytes().to_vec()),
        Attribute::Id(id.to_vec()),
        Attribute::Value(der.to_vec()),
    ]
}

fn data_template(label: &str, value: &[u8], token: bool) -> Vec<Attribute> {
    vec![
        Attribute::Class(ObjectClass::DATA),
        Attribute::Token(token),
        Attribute::Label(label.as_bytes().to_vec()),
        Attribute::Application(b"kms tests".to_vec()),
        Attribute::ObjectId(vec![0x06, 0x03, 0x2a, 0x03, 0x04]),
        Attribute::Value(value.to_vec()),
    ]
}

/// One byte-string attribute.
fn bytes(s: &Session, h: ObjectHandle, t: AttributeType) -> Vec<u8> {
    match s.get_attributes(h, &[t]).unwrap().pop() {
        Some(Attribute::Value(v))
        | Some(Attribute::Label(v))
        | Some(Attribute::Id(v))
        | Some(Attribute::Subject(v))
        | Some(Attribute::Issuer(v))
        | Some(Attribute::SerialNumber(v))
        | Some(Attribute::CheckValue(v))
        | Some(Attribute::PublicKeyInfo(v))
        | Some(Attribute::Application(v))
        | Some(Attribute::ObjectId(v)) => v,
        other => panic!("{t:?}: {other:?}"),
    }
}

fn flag(s: &Session, h: ObjectHandle, t: AttributeType) -> bool {
    match s.get_attributes(h, &[t]).unwrap().pop() {
        Some(Attribute::Token(b))
        | Some(Attribute::Private(b))
        | Some(Attribute::Modifiable(b))
        | Some(Attribute::Copyable(b))
        | Some(Attribute::Destroyable(b))
        | Some(Attribute::Trusted(b)) => b,
        other => panic!("{t:?}: {other:?}"),
    }
}

fn find(s: &Session, t: &[Attribute]) -> Vec<ObjectHandle> {
    s.find_objects(t).unwrap()
}

fn by_label(s: &Session, class: ObjectClass, label: &str) -> Vec<ObjectHandle> {
    find(
        s,
        &[
            Attribute::Class(class),
            Attribute::Label(label.as_bytes().to_vec()),
        ],
    )
}

/// The module's C function list (for what cryptoki does not expose).
fn functions() -> CK_FUNCTION_LIST {
    // SAFETY: C_GetFunctionList fills a pointer to the module's static list.
    unsafe {
        let lib = cryptoki_sys::Pkcs11::new(module_path()).unwrap();
        let mut fl: *mut CK_FUNCTION_LIST = null_mut();
        assert_eq!(lib.C_GetFunctionList(&mut fl), CKR_OK);
        let f = *fl;
        std::mem::forget(lib); // keep the library loaded
        f
    }
}

/// The objects in the enclave's store, by the API.
fn stored(node: &KmsNode) -> Vec<proto::ObjectResponse> {
    rt().block_on(node.server.root().list_objects(ENCLAVE, ""))
        .unwrap()
}

#[test]
fn certificates_and_data_objects_through_cryptoki() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let node = KmsNode::start("refresh_ms = 1\n");
    let dir = node.tmp.path();
    let (der, spki, sha1) = openssl_cert(dir, "c1");
    let c = load(&node.config);
    let s = c.p11.open_rw_session(c.slot).unwrap();

    // A cluster key pair and its certificate, same CKA_ID and label.
    let (_, key) = s
        .generate_key_pair(
            &Mechanism::EccKeyPairGen,
            &[
                Attribute::Token(true),
                Attribute::Label(b"p256".to_vec()),
                Attribute::EcParams(vec![
                    0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07,
                ]),
            ],
            &[Attribute::Token(true), Attribute::Sign(true)],
        )
        .unwrap();
    let cert = s
        .create_object(&cert_template(&der, "p256", b"p256", true))
        .unwrap();
    assert_eq!(bytes(&s, cert, AttributeType::Value), der);
    assert_eq!(bytes(&s, cert, AttributeType::Subject), CN_T);
    assert_eq!(bytes(&s, cert, AttributeType::Issuer), CN_T);
    assert_eq!(
        bytes(&s, cert, AttributeType::SerialNumber),
        [0x02, 0x02, 0x12, 0x34]
    );
    assert_eq!(bytes(&s, cert, AttributeType::PublicKeyInfo), spki);
    assert_eq!(bytes(&s, cert, AttributeType::CheckValue), sha1[..3]);
    assert_eq!(bytes(&s, cert, AttributeType::Id), b"p256");
    assert!(flag(&s, cert, AttributeType::Token));
    assert!(!flag(&s, cert, AttributeType::Private));
    assert!(flag(&s, cert, AttributeType::Modifiable));
    assert!(!flag(&s, cert, AttributeType::Trusted));
    assert_eq!(
        format!(
            "{:?}",
            s.get_attribute_info(
                cert,
                &[
                    AttributeType::Modulus,
                    AttributeType::Application,
                    AttributeType::Value
                ]
            )
            .unwrap()
        ),
        format!(
            "{:?}",
            [
                AttributeInfo::TypeInvalid,
                AttributeInfo::TypeInvalid,
                AttributeInfo::Available(der.len())
            ]
        )
    );
    // Key and certificate are found together by CKA_ID.
    let mut both = find(&s, &[Attribute::Id(b"p256".to_vec())]);
    both.sort_by_key(|h| h.handle());
    assert_eq!(both.len(), 3, "private key, public key, certificate");
    assert!(both.contains(&cert) && both.contains(&key));
    assert_eq!(
        find(&s, &[Attribute::Class(ObjectClass::CERTIFICATE)]),
        [cert]
    );
    assert_eq!(find(&s, &[Attribute::Subject(CN_T.to_vec())]), [cert]);
    // A certificate is no key.
    assert_eq!(
        rv(s.sign_init(&Mechanism::Ecdsa, cert)),
        RvError::KeyHandleInvalid
    );

    // The raw C calls: a short buffer, the size, a stale handle.
    let f = functions();
    let mut small = [0u8; 4];
    let mut a = [CK_ATTRIBUTE {
        type_: CKA_VALUE,
        pValue: small.as_mut_ptr() as *mut _,
        ulValueLen: 4,
    }];
    // SAFETY: the module is initialized; `a` points to a live local.
    let r = unsafe { f.C_GetAttributeValue.unwrap()(s.handle(), cert.handle(), a.as_mut_ptr(), 1) };
    assert_eq!(
        (r, a[0].ulValueLen),
        (CKR_BUFFER_TOO_SMALL, CK_UNAVAILABLE_INFORMATION)
    );
    let mut size: CK_ULONG = 0;
    // SAFETY: as above.
    let r = unsafe { f.C_GetObjectSize.unwrap()(s.handle(), cert.handle(), &mut size) };
    assert_eq!(r, CKR_OK);
    assert!(size as usize > der.len(), "{size}");

    // Data objects, token and session.
    let d = s
        .create_object(&data_template("d1", b"payload", true))
        .unwrap();
    assert_eq!(bytes(&s, d, AttributeType::Value), b"payload");
    assert_eq!(bytes(&s, d, AttributeType::Application), b"kms tests");
    assert_eq!(
        bytes(&s, d, AttributeType::ObjectId),
        [0x06, 0x03, 0x2a, 0x03, 0x04]
    );
    assert_eq!(
        format!(
            "{:?}",
            s.get_attribute_info(d, &[AttributeType::Subject]).unwrap()
        ),
        "[TypeInvalid]"
    );
    let sd = s
        .create_object(&data_template("sd", b"session", false))
        .unwrap();
    assert!(!flag(&s, sd, AttributeType::Token));
    let names: Vec<String> = stored(&node).into_iter().map(|o| o.name).collect();
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(
        names.iter().any(|n| n.starts_with("cert-p256-"))
            && names.iter().any(|n| n.starts_with("data-d1-")),
        "{names:?}"
    );

    // C_SetAttributeValue.
    s.update_attributes(
        d,
        &[
            Attribute::Value(b"changed".to_vec()),
            Attribute::Label(b"d1x".to_vec()),
        ],
    )
    .unwrap();
    assert_eq!(bytes(&s, d, AttributeType::Value), b"changed");
    s.update_attributes(cert, &[Attribute::Label(b"p256 cert".to_vec())])
        .unwrap();
    s.update_attributes(
        cert,
        &[
            Attribute::StartDate(Date::new_from_str_slice("2026", "11", "30").unwrap()),
            Attribute::EndDate(Date::new_empty()),
        ],
    )
    .unwrap();
    for (t, code) in [
        (
            Attribute::Value(b"x".to_vec()),
            Some(RvError::AttributeReadOnly),
        ),
        (
            Attribute::Subject(b"x".to_vec()),
            Some(RvError::AttributeReadOnly),
        ),
        (
            Attribute::Class(ObjectClass::DATA),
            Some(RvError::AttributeReadOnly),
        ),
        (Attribute::Token(false), Some(RvError::AttributeReadOnly)),
        (Attribute::Private(true), Some(RvError::AttributeReadOnly)),
        (Attribute::Trusted(true), Some(RvError::AttributeReadOnly)),
        (
            Attribute::Application(b"x".to_vec()),
            Some(RvError::AttributeTypeInvalid),
        ),
        (
            Attribute::Modulus(vec![1]),
            Some(RvError::AttributeTypeInvalid),
        ),
        (Attribute::Token(true), None),
    ] {
        let r = s.update_attributes(cert, std::slice::from_ref(&t));
        match code {
            None => r.unwrap(),
            Some(code) => assert_eq!(rv(r), code, "{t:?}"),
        }
    }
    assert_eq!(
        rv(s.update_attributes(d, &[Attribute::Private(false), Attribute::Private(true)])),
        RvError::TemplateInconsistent
    );
    // A read-only session cannot change or make a token object.
    let ro = c.p11.open_ro_session(c.slot).unwrap();
    assert_eq!(
        rv(ro.update_attributes(d, &[Attribute::Label(b"ro".to_vec())])),
        RvError::SessionReadOnly
    );
    assert_eq!(
        rv(ro.create_object(&data_template("ro", b"x", true))),
        RvError::SessionReadOnly
    );
    ro.update_attributes(sd, &[Attribute::Label(b"sd2".to_vec())])
        .unwrap();
    drop(ro);
    // Not modifiable: CKR_ACTION_PROHIBITED; not destroyable likewise.
    let mut fixed = data_template("fixed", b"v", true);
    fixed.push(Attribute::Modifiable(false));
    fixed.push(Attribute::Destroyable(false));
    let fx = s.create_object(&fixed).unwrap();
    assert_eq!(
        rv(s.update_attributes(fx, &[Attribute::Label(b"y".to_vec())])),
        RvError::ActionProhibited
    );
    s.update_attributes(fx, &[Attribute::Label(b"fixed".to_vec())])
        .unwrap(); // changes nothing
    assert_eq!(rv(s.destroy_object(fx)), RvError::ActionProhibited);

    // Cluster keys: a set to the current CKA_ID or label (SunPKCS11 sets
    // CKA_ID = alias) succeeds, a change is prohibited.
    s.update_attributes(key, &[Attribute::Id(b"p256".to_vec())])
        .unwrap();
    s.update_attributes(key, &[Attribute::Label(b"p256".to_vec())])
        .unwrap();
    assert_eq!(
        rv(s.update_attributes(key, &[Attribute::Id(b"other".to_vec())])),
        RvError::ActionProhibited
    );
    assert_eq!(
        rv(s.update_attributes(key, &[Attribute::Application(b"x".to_vec())])),
        RvError::AttributeTypeInvalid
    );
    assert_eq!(rv(s.copy_object(key, &[])), RvError::ActionProhibited);

    // C_CopyObject: a token certificate into the session, a session data
    // object into the cluster, a session key.
    let cc = s
        .copy_object(
            cert,
            &[Attribute::Token(false), Attribute::Label(b"copy".to_vec())],
        )
        .unwrap();
    assert!(!flag(&s, cc, AttributeType::Token));
    assert_eq!(bytes(&s, cc, AttributeType::Value), der);
    assert_eq!(bytes(&s, cc, AttributeType::Label), b"copy");
    assert_eq!(
        rv(s.copy_object(cert, &[Attribute::Value(b"x".to_vec())])),
        RvError::AttributeReadOnly
    );
    let td = s
        .copy_object(sd, &[Attribute::Token(true), Attribute::Modifiable(false)])
        .unwrap();
    assert!(flag(&s, td, AttributeType::Token));
    assert!(!flag(&s, td, AttributeType::Modifiable));
    assert_eq!(stored(&node).len(), 4);
    let mut nc = data_template("nocopy", b"v", false);
    nc.push(Attribute::Copyable(false));
    let nc = s.create_object(&nc).unwrap();
    assert_eq!(rv(s.copy_object(nc, &[])), RvError::ActionProhibited);
    let sk = s
        .generate_key(
            &Mechanism::AesKeyGen,
            &[Attribute::Token(false), Attribute::ValueLen(32.into())],
        )
        .unwrap();
    assert!(flag(&s, sk, AttributeType::Copyable));
    let sk2 = s
        .copy_object(
            sk,
            &[Attribute::Label(b"sk2".to_vec()), Attribute::Encrypt(false)],
        )
        .unwrap();
    assert_eq!(bytes(&s, sk2, AttributeType::Label), b"sk2");
    assert_eq!(
        bytes(&s, sk2, AttributeType::Value),
        bytes(&s, sk, AttributeType::Value)
    );
    s.update_attributes(sk, &[Attribute::Label(b"renamed".to_vec())])
        .unwrap();
    assert_eq!(
        rv(s.update_attributes(sk, &[Attribute::ValueLen(16.into())])),
        RvError::AttributeReadOnly
    );

    // Private objects: only after login, and not shown after logout.
    let mut private = data_template("secret", b"hidden", true);
    private.push(Attribute::Private(true));
    assert_eq!(rv(s.create_object(&private)), RvError::UserNotLoggedIn);
    s.login(UserType::User, Some(&AuthPin::new("any".into())))
        .unwrap();
    let p = s.create_object(&private).unwrap();
    assert!(flag(&s, p, AttributeType::Private));
    s.logout().unwrap();
    assert!(by_label(&s, ObjectClass::DATA, "secret").is_empty());
    assert_eq!(
        rv(s.get_attribute_info(p, &[AttributeType::Value])),
        RvError::ObjectHandleInvalid
    );
    // Only the SO may trust a certificate.
    let mut trusted = cert_template(&der, "trusted", b"t", false);
    trusted.push(Attribute::Trusted(true));
    assert_eq!(rv(s.create_object(&trusted)), RvError::AttributeReadOnly);
    s.login(UserType::So, Some(&AuthPin::new("any".into())))
        .unwrap();
    let t = s.create_object(&trusted).unwrap();
    assert!(flag(&s, t, AttributeType::Trusted));
    s.logout().unwrap();

    // Garbage templates.
    let mut trailing = der.clone();
    trailing.push(0);
    let bad = |t: Vec<Attribute>| rv(s.create_object(&t));
    assert_eq!(
        bad(cert_template(b"not a certificate", "x", b"x", true)),
        RvError::AttributeValueInvalid
    );
    assert_eq!(
        bad(cert_template(&trailing, "x", b"x", true)),
        RvError::AttributeValueInvalid
    );
    assert_eq!(
        bad(cert_template(&der[..der.len() - 1], "x", b"x", true)),
        RvError::AttributeValueInvalid
    );
    let mut t = cert_template(&der, "x", b"x", true);
    t.retain(|a| a.attribute_type() != AttributeType::Value);
    assert_eq!(bad(t), RvError::TemplateIncomplete);
    let mut t = cert_template(&der, "x", b"x", true);
    t.retain(|a| a.attribute_type() != AttributeType::CertificateType);
    assert_eq!(bad(t), RvError::TemplateIncomplete);
    let mut t = cert_template(&der, "x", b"x", true);
    t[1] = Attribute::CertificateType(CertificateType::X_509_ATTR);
    assert_eq!(bad(t), RvError::AttributeValueInvalid);
    let mut t = cert_template(&der, "x", b"x", true);
    t.push(Attribute::Sign(true));
    assert_eq!(bad(t), RvError::AttributeTypeInvalid);
    let mut t = cert_template(&der, "x", b"x", true);
    t.push(Attribute::CheckValue(vec![0, 0, 0]));
    assert_eq!(bad(t), RvError::AttributeValueInvalid);
    assert_eq!(
        bad(data_template("big", &vec![7u8; 70 << 10], true)),
        RvError::AttributeValueInvalid
    );
    assert_eq!(
        bad(vec![
            Attribute::Class(ObjectClass::DATA),
            Attribute::VendorDefined((AttributeType::Private, vec![1, 0])),
        ]),
        RvError::AttributeValueInvalid
    );
    let count = stored(&node).len();
    assert_eq!(count, 5, "nothing stored by a refused template");

    // Garbage records written past the module: not shown, no crash.
    let root = node.server.root();
    let attr = |t: CK_ATTRIBUTE_TYPE, v: &[u8]| proto::ObjectAttribute {
        r#type: t,
        value: v.to_vec(),
    };
    rt().block_on(root.create_object(
        ENCLAVE,
        "junk-class",
        0x8000_1234,
        vec![attr(CKA_LABEL, b"junk")],
    ))
    .unwrap();
    rt().block_on(root.create_object(
        ENCLAVE,
        "junk-cert",
        CKO_CERTIFICATE,
        vec![
            attr(CKA_LABEL, b"junk"),
            attr(CKA_CERTIFICATE_TYPE, &[1, 2, 3]),
        ],
    ))
    .unwrap();
    rt().block_on(root.create_object(
        ENCLAVE,
        "ok-data",
        CKO_DATA,
        vec![
            attr(CKA_LABEL, b"from the api"),
            attr(CKA_VALUE, b"v"),
            attr(0xdead, b"?"),
        ],
    ))
    .unwrap();
    assert!(find(&s, &[Attribute::Label(b"junk".to_vec())]).is_empty());
    let api = by_label(&s, ObjectClass::DATA, "from the api");
    assert_eq!(api.len(), 1);
    assert_eq!(bytes(&s, api[0], AttributeType::Value), b"v");
    assert!(!flag(&s, api[0], AttributeType::Private));

    // Another module instance (another process) sees the token objects
    // and their changes; a restart of this one too.
    let listed = success(
        Command::new("pkcs11-tool")
            .env("KMS_PKCS11_CONFIG", &node.config)
            .arg("--module")
            .arg(module_path())
            .args(["--token-label", ENCLAVE, "-O", "--type", "data"]),
    );
    assert!(
        listed.contains("d1x") && listed.contains("from the api") && !listed.contains("secret"),
        "{listed}"
    );
    drop(s);
    c.p11.finalize().unwrap();
    let c = load(&node.config);
    let s = c.p11.open_rw_session(c.slot).unwrap();
    let cert = by_label(&s, ObjectClass::CERTIFICATE, "p256 cert");
    assert_eq!(cert.len(), 1);
    assert_eq!(bytes(&s, cert[0], AttributeType::Value), der);
    assert!(
        by_label(&s, ObjectClass::CERTIFICATE, "copy").is_empty(),
        "a session copy"
    );
    assert_eq!(
        by_label(&s, ObjectClass::DATA, "sd2").len(),
        1,
        "the token copy"
    );
    let d = by_label(&s, ObjectClass::DATA, "d1x");
    assert_eq!(bytes(&s, d[0], AttributeType::Value), b"changed");

    // C_DestroyObject; destroyed elsewhere: the handle goes.
    s.destroy_object(cert[0]).unwrap();
    assert!(by_label(&s, ObjectClass::CERTIFICATE, "p256 cert").is_empty());
    let api = by_label(&s, ObjectClass::DATA, "from the api");
    rt().block_on(root.delete_object(ENCLAVE, "ok-data"))
        .unwrap();
    assert_eq!(
        rv(s.update_attributes(api[0], &[Attribute::Label(b"z".to_vec())])),
        RvError::ObjectHandleInvalid
    );
    assert_eq!(
        rv(s.get_attribute_info(api[0], &[AttributeType::Label])),
        RvError::ObjectHandleInvalid
    );
    let names: Vec<String> = stored(&node).into_iter().map(|o| o.name).collect();
    assert!(
        !names.iter().any(|n| n.starts_with("cert-p256-")),
        "{names:?}"
    );
    drop(s);
    c.p11.finalize().unwrap();
}

/// Many objects: the module lists every page of OBJECT:LIST.
#[test]
fn listing_reads_every_page() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let node = KmsNode::start("");
    let root = node.server.root();
    // The server's pages hold 1,000 objects.
    let n = 1_050;
    rt().block_on(async {
        for i in 0..n {
            root.create_object(
                ENCLAVE,
                &format!("data-{i:05}"),
                CKO_DATA,
                vec![proto::ObjectAttribute {
                    r#type: CKA_LABEL,
                    value: format!("d{i}").into_bytes(),
                }],
            )
            .await
            .unwrap();
        }
    });
    let c = load(&node.config);
    let s = c.p11.open_ro_session(c.slot).unwrap();
    assert_eq!(find(&s, &[Attribute::Class(ObjectClass::DATA)]).len(), n);
    assert_eq!(by_label(&s, ObjectClass::DATA, "d1049").len(), 1);
    drop(s);
    c.p11.finalize().unwrap();
}

fn tool(config: &Path) -> Command {
    let mut c = Command::new("pkcs11-tool");
    c.env("KMS_PKCS11_CONFIG", config)
        .arg("--module")
        .arg(module_path())
        .args(["--token-label", ENCLAVE]);
    c
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// OpenSC and GnuTLS write, read and list certificates and data objects;
/// the second node of a two-node cluster shows them to a module that only
/// knows that node.
#[test]
fn tools_write_and_read_objects_on_a_cluster() {
    let tmp = tempfile::tempdir().unwrap();
    let nodes = cluster(&tmp, 2, SEED_HSM_KEY);
    rt().block_on(nodes[0].root().create_enclave(ENCLAVE))
        .unwrap();
    let dir = tmp.path();
    let cfg0 = dir.join("node0.toml");
    write_config(&cfg0, &[nodes[0].url()], &nodes[0].root_key, "");
    let cfg1 = dir.join("node1.toml");
    write_config(&cfg1, &[nodes[1].url()], &nodes[1].root_key, "");
    let (der, _, _) = openssl_cert(dir, "t");
    let certf = path(dir, "t.der");
    success(tool(&cfg0).args([
        "--login",
        "--pin",
        "1234",
        "--keypairgen",
        "--key-type",
        "EC:prime256v1",
        "--label",
        "tls",
    ]));
    let w = success(tool(&cfg0).args([
        "--write-object",
        &certf,
        "--type",
        "cert",
        "--id",
        &hex(b"tls"),
        "--label",
        "tls",
    ]));
    assert!(w.contains("Certificate Object"), "{w}");
    let dataf = path(dir, "data.bin");
    std::fs::write(&dataf, b"some application data").unwrap();
    let w = success(tool(&cfg0).args([
        "--write-object",
        &dataf,
        "--type",
        "data",
        "--label",
        "blob",
        "--application-label",
        "app",
    ]));
    assert!(w.contains("Data object"), "{w}");
    // A data object by pkcs11-tool: through node 1 too (a replicated
    // write; read until it is there).
    for cfg in [&cfg0, &cfg1] {
        let listed = eventually(Duration::from_secs(10), || {
            let o = run(tool(cfg).args(["-O"]));
            let t = String::from_utf8_lossy(&o.stdout).to_string();
            (o.status.success() && t.contains("blob") && t.contains("Certificate Object"))
                .then_some(t)
        })
        .unwrap_or_else(|| panic!("{} does not list the objects", cfg.display()));
        assert!(
            listed.contains("label:      tls") && listed.contains("subject:    DN: CN=t"),
            "{listed}"
        );
        assert!(listed.contains("application:    'app'"), "{listed}");
        assert!(listed.contains("Private Key Object; EC"), "{listed}");
    }
    let back = path(dir, "back.der");
    success(tool(&cfg1).args([
        "--read-object",
        "--type",
        "cert",
        "--label",
        "tls",
        "-o",
        &back,
    ]));
    assert_eq!(std::fs::read(&back).unwrap(), der);
    let backd = path(dir, "back.bin");
    success(tool(&cfg1).args([
        "--read-object",
        "--type",
        "data",
        "--label",
        "blob",
        "-o",
        &backd,
    ]));
    assert_eq!(std::fs::read(&backd).unwrap(), b"some application data");
    // GnuTLS lists the certificate, without login.
    let certs = success(
        Command::new("p11tool")
            .env("KMS_PKCS11_CONFIG", &cfg1)
            .arg("--provider")
            .arg(module_path())
            .args(["--list-all-certs", &format!("pkcs11:token={ENCLAVE}")]),
    );
    assert!(
        certs.contains("Type: X.509 Certificate") && certs.contains("Label: tls"),
        "{certs}"
    );
    // Deleted through node 1: gone for node 0.
    success(tool(&cfg1).args(["--delete-object", "--type", "data", "--label", "blob"]));
    let gone = eventually(Duration::from_secs(10), || {
        let o = run(tool(&cfg0).args(["-O", "--type", "data"]));
        let t = String::from_utf8_lossy(&o.stdout).to_string();
        (o.status.success() && !t.contains("blob")).then_some(())
    });
    assert!(gone.is_some(), "node 0 still shows the deleted object");
}

fn java_config(dir: &Path, slot: u64) -> PathBuf {
    let p = dir.join("java-pkcs11.cfg");
    std::fs::write(
        &p,
        format!(
            "name = kms\nlibrary = {}\nslot = {slot}\n",
            module_path().display()
        ),
    )
    .unwrap();
    p
}

/// Loads the KeyStore, signs with SHA256withECDSA through the cluster key
/// and verifies with the certificate's public key. With a fourth argument
/// (a PEM certificate of the same key), first replaces the entry's
/// certificate with `setKeyEntry` (SunPKCS11 deletes the old certificate,
/// writes the new one and sets the key's CKA_ID to the alias), then loads
/// the KeyStore again.
const JAVA_SIGN: &str = r#"
import java.io.FileInputStream;
import java.security.*;
import java.security.cert.Certificate;
import java.security.cert.CertificateFactory;
import java.security.cert.X509Certificate;

public class KmsSign {
    public static void main(String[] args) throws Exception {
        Provider p = Security.getProvider("SunPKCS11").configure(args[0]);
        KeyStore ks = KeyStore.getInstance("PKCS11", p);
        ks.load(null, args[1].toCharArray());
        if (args.length > 3) {
            CertificateFactory cf = CertificateFactory.getInstance("X.509");
            Certificate c = cf.generateCertificate(new FileInputStream(args[3]));
            ks.setKeyEntry(args[2], ks.getKey(args[2], null), null, new Certificate[] { c });
            ks = KeyStore.getInstance("PKCS11", p);
            ks.load(null, args[1].toCharArray());
        }
        PrivateKey key = (PrivateKey) ks.getKey(args[2], null);
        X509Certificate cert = (X509Certificate) ks.getCertificate(args[2]);
        byte[] msg = "signed by a cluster key through SunPKCS11".getBytes("UTF-8");
        Signature s = Signature.getInstance("SHA256withECDSA", p);
        s.initSign(key);
        s.update(msg);
        byte[] sig = s.sign();
        Signature v = Signature.getInstance("SHA256withECDSA");
        v.initVerify(cert.getPublicKey());
        v.update(msg);
        System.out.println(v.verify(sig) ? "verified " + key.getAlgorithm() : "NOT VERIFIED");
        System.out.println("certificate: " + cert.getSubjectX500Principal().getName());
        System.out.println("entries: " + ks.size());
    }
}
"#;

/// Java: SunPKCS11 lists each cluster key with its certificate as a
/// `PrivateKeyEntry`; `jarsigner` signs a jar with the EC and the RSA
/// cluster key, `jarsigner -verify` accepts both; a Java program signs and
/// verifies.
#[test]
fn java_keystore_and_jarsigner_use_cluster_keys() {
    let node = KmsNode::start("");
    let dir = node.tmp.path();
    let cfg = &node.config;
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
    let tmpl = path(dir, "cert.tmpl");
    std::fs::write(
        &tmpl,
        "cn = kms jar signer\nexpiration_days = 2\nsigning_key\ncode_signing_key\n",
    )
    .unwrap();
    for (label, kt) in [("ec-signer", "EC:prime256v1"), ("rsa-signer", "rsa:2048")] {
        success(tool(cfg).args([
            "--login",
            "--pin",
            "1234",
            "--keypairgen",
            "--key-type",
            kt,
            "--label",
            label,
        ]));
        // A self-signed certificate made with the cluster key (GnuTLS),
        // stored as a token certificate with the key's CKA_ID and label.
        let pem = path(dir, &format!("{label}.pem"));
        gnutls(&[
            "certtool",
            "--generate-self-signed",
            "--load-privkey",
            &format!("pkcs11:token={ENCLAVE};object={label};type=private"),
            "--template",
            &tmpl,
            "--outfile",
            &pem,
        ]);
        let der = path(dir, &format!("{label}.der"));
        success(
            Command::new("openssl").args(["x509", "-in", &pem, "-outform", "DER", "-out", &der]),
        );
        success(tool(cfg).args([
            "--write-object",
            &der,
            "--type",
            "cert",
            "--id",
            &hex(label.as_bytes()),
            "--label",
            label,
        ]));
    }
    let slot = {
        let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let c = load(cfg);
        let id = c.slot.id();
        c.p11.finalize().unwrap();
        id
    };
    let jcfg = java_config(dir, slot);
    let keystore = |cmd: &mut Command| -> String {
        success(
            cmd.env("KMS_PKCS11_CONFIG", cfg)
                .args(["-keystore", "NONE", "-storetype", "PKCS11"])
                .args([
                    "-providerClass",
                    "sun.security.pkcs11.SunPKCS11",
                    "-providerArg",
                ])
                .arg(&jcfg)
                .args(["-storepass", "1234"]),
        )
    };
    let list = keystore(Command::new("keytool").arg("-list"));
    for label in ["ec-signer", "rsa-signer"] {
        assert!(
            list.contains(&format!("{label}, PrivateKeyEntry")),
            "{label} not listed:\n{list}"
        );
    }
    eprintln!("keytool -list:\n{list}");

    // A jar signed by each cluster key.
    let src = dir.join("jar");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("hello.txt"), "hello from a signed jar\n").unwrap();
    let jar = path(dir, "app.jar");
    success(
        Command::new("jar")
            .args(["cf", &jar, "-C"])
            .arg(&src)
            .arg("hello.txt"),
    );
    for label in ["ec-signer", "rsa-signer"] {
        let signed = path(dir, &format!("{label}.jar"));
        keystore(Command::new("jarsigner").args(["-signedjar", &signed, &jar, label]));
        let v = success(Command::new("jarsigner").args(["-verify", "-verbose", &signed]));
        assert!(v.contains("jar verified."), "{label}: {v}");
        assert!(v.contains("CN=kms jar signer"), "{label}: {v}");
        let alg = if label == "ec-signer" { "EC" } else { "RSA" };
        let sig_file = run(Command::new("jar").args(["tf", &signed]));
        let entries = String::from_utf8_lossy(&sig_file.stdout).to_string();
        // jarsigner names the signature files after the alias: 8
        // characters, upper case.
        let base: String = label.to_uppercase().chars().take(8).collect();
        assert!(
            entries.contains(&format!("META-INF/{base}.{alg}")),
            "{label}: {entries}"
        );
        // Someone else's jar: the signature no longer matches.
        let tampered = path(dir, &format!("{label}-tampered.jar"));
        std::fs::copy(&signed, &tampered).unwrap();
        std::fs::write(src.join("hello.txt"), "changed\n").unwrap();
        success(
            Command::new("jar")
                .args(["uf", &tampered, "-C"])
                .arg(&src)
                .arg("hello.txt"),
        );
        std::fs::write(src.join("hello.txt"), "hello from a signed jar\n").unwrap();
        let bad = run(Command::new("jarsigner").args(["-verify", "-strict", &tampered]));
        assert!(!bad.status.success(), "{label}: a tampered jar verified");
    }

    // A Java program on the KeyStore.
    std::fs::write(dir.join("KmsSign.java"), JAVA_SIGN).unwrap();
    success(
        Command::new("javac")
            .arg("-d")
            .arg(dir)
            .arg(dir.join("KmsSign.java")),
    );
    let out = success(
        Command::new("java")
            .env("KMS_PKCS11_CONFIG", cfg)
            .arg("-cp")
            .arg(dir)
            .arg("KmsSign")
            .arg(&jcfg)
            .args(["1234", "ec-signer"]),
    );
    assert!(out.contains("verified EC"), "{out}");
    assert!(out.contains("certificate: CN=kms jar signer"), "{out}");
    // SunPKCS11 replaces the key's certificate (setKeyEntry): a new
    // certificate of the same cluster key, the key's CKA_ID set to the
    // alias it already is.
    std::fs::write(
        &tmpl,
        "cn = kms jar signer 2\nexpiration_days = 2\nsigning_key\ncode_signing_key\n",
    )
    .unwrap();
    let pem2 = path(dir, "ec-signer-2.pem");
    gnutls(&[
        "certtool",
        "--generate-self-signed",
        "--load-privkey",
        &format!("pkcs11:token={ENCLAVE};object=ec-signer;type=private"),
        "--template",
        &tmpl,
        "--outfile",
        &pem2,
    ]);
    let out = success(
        Command::new("java")
            .env("KMS_PKCS11_CONFIG", cfg)
            .arg("-cp")
            .arg(dir)
            .arg("KmsSign")
            .arg(&jcfg)
            .args(["1234", "ec-signer", &pem2]),
    );
    assert!(
        out.contains("verified EC")
            && out.contains("certificate: CN=kms jar signer 2")
            && out.contains("entries: 2"),
        "{out}"
    );
    // The old certificate is gone from the token, the new one is there.
    let certs = success(tool(cfg).args(["-O", "--type", "cert"]));
    assert_eq!(certs.matches("Certificate Object").count(), 2, "{certs}");
    assert!(certs.contains("DN: CN=kms jar signer 2"), "{certs}");
}
