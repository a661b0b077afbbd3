//! `libkms_pkcs11.so` on cluster keys, over live nodes: token keys made and
//! deleted through the module and the CLI, every mechanism on a cluster key,
//! envelope encryption, the vendor mechanism, failover, configuration errors,
//! and hostile callers through the raw C interface.

use std::ptr::null_mut;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::mechanism::vendor_defined::VendorDefinedMechanism;
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use cryptoki_sys::*;
use kms_tests::pkcs11::{dead_port, module_path, write_config, KmsNode, ENCLAVE};
use kms_tests::{copy_dir, ok, rt, wait_until};

static SERIAL: Mutex<()> = Mutex::new(());

const CKM_KMS_CIPHERTEXT: CK_MECHANISM_TYPE = CKM_VENDOR_DEFINED | 0x4B4D_0001;

struct Ctx {
    p11: Pkcs11,
    slot: Slot,
}

/// Names the module's configuration file (`KMS_PKCS11_CONFIG`, the only way
/// to name one). Tests that initialize the module hold `SERIAL`, so no other
/// test of this process reads the variable meanwhile.
fn use_config(config: &std::path::Path) {
    std::env::set_var("KMS_PKCS11_CONFIG", config);
}

/// A valid configuration that never needs a server at `C_Initialize` (the
/// enclave is named; the one server is a dead port).
fn write_offline_config(path: &std::path::Path) {
    write_config(
        path,
        &[format!("https://127.0.0.1:{}", dead_port())],
        &kms_client::ApiKey::generate(),
        &format!("enclaves = [\"{ENCLAVE}\"]\n"),
    );
}

fn load(config: &std::path::Path) -> Ctx {
    let p11 = Pkcs11::new(module_path()).expect("load module");
    use_config(config);
    p11.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .expect("C_Initialize");
    let slot = p11
        .get_slots_with_token()
        .unwrap()
        .into_iter()
        .find(|s| p11.get_token_info(*s).unwrap().label() == ENCLAVE)
        .expect("a slot for the enclave");
    Ctx { p11, slot }
}

fn rw(c: &Ctx) -> Session {
    let s = c.p11.open_rw_session(c.slot).unwrap();
    s.login(UserType::User, Some(&AuthPin::new("whatever".into())))
        .unwrap();
    s
}

fn token_key(s: &Session, label: &str) -> ObjectHandle {
    s.generate_key(
        &Mechanism::AesKeyGen,
        &[
            Attribute::Token(true),
            Attribute::ValueLen(32.into()),
            Attribute::Label(label.as_bytes().to_vec()),
        ],
    )
    .unwrap()
}

fn gcm<'a>(iv: &'a mut [u8], aad: &'a [u8]) -> Mechanism<'a> {
    Mechanism::AesGcm(GcmParams::new(iv, aad, 128.into()).unwrap())
}

fn rv<T: std::fmt::Debug>(r: Result<T, CkError>) -> RvError {
    match r {
        Err(CkError::Pkcs11(rv, _)) => rv,
        other => panic!("expected a PKCS#11 error, got {other:?}"),
    }
}

fn ls_key(node: &KmsNode) -> String {
    ok(&node.server.cli(None, &["ls-key", "-e", ENCLAVE]))
}

#[test]
fn token_keys_are_cluster_keys() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let node = KmsNode::start("refresh_ms = 300\n");
    let c = load(&node.config);
    let s = rw(&c);
    let k = token_key(&s, "made-by-p11");
    assert!(ls_key(&node).contains("made-by-p11"), "{}", ls_key(&node));
    let attrs = s
        .get_attributes(
            k,
            &[
                AttributeType::Class,
                AttributeType::KeyType,
                AttributeType::Label,
                AttributeType::Id,
                AttributeType::Token,
                AttributeType::Sensitive,
                AttributeType::Extractable,
                AttributeType::ValueLen,
            ],
        )
        .unwrap();
    for a in [
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        Attribute::Label(b"made-by-p11".to_vec()),
        Attribute::Id(b"made-by-p11".to_vec()),
        Attribute::Token(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::ValueLen(32.into()),
    ] {
        assert!(attrs.contains(&a), "{a:?} not in {attrs:?}");
    }
    // A key made with the CLI shows up (the cache is at most 300 ms old).
    ok(&node
        .server
        .cli(None, &["add-key", "-e", ENCLAVE, "from-cli"]));
    let took = wait_until(
        Duration::from_secs(5),
        "the CLI's key 'from-cli' to be found through the module",
        || {
            s.find_objects(&[Attribute::Label(b"from-cli".to_vec())])
                .unwrap()
                .len()
                == 1
        },
    );
    assert!(took < Duration::from_secs(2), "seen after {took:?}");
    // A key deleted with the CLI disappears after the refresh.
    ok(&node
        .server
        .cli(None, &["rm-key", "-e", ENCLAVE, "from-cli"]));
    let took = wait_until(
        Duration::from_secs(5),
        "the deleted key 'from-cli' to disappear from the module's searches",
        || {
            s.find_objects(&[Attribute::Label(b"from-cli".to_vec())])
                .unwrap()
                .is_empty()
        },
    );
    assert!(took < Duration::from_secs(2), "gone after {took:?}");
    // Deleting through the module: gone from the cluster and at once from find.
    s.destroy_object(k).unwrap();
    assert!(!ls_key(&node).contains("made-by-p11"));
    assert!(s
        .find_objects(&[Attribute::Label(b"made-by-p11".to_vec())])
        .unwrap()
        .is_empty());
    // Creating an existing key fails, as does an extractable cluster key.
    token_key(&s, "dup");
    let dup = s.generate_key(
        &Mechanism::AesKeyGen,
        &[
            Attribute::Token(true),
            Attribute::ValueLen(32.into()),
            Attribute::Label(b"dup".to_vec()),
        ],
    );
    assert_eq!(rv(dup), RvError::AttributeValueInvalid);
    let bad_name = s.generate_key(
        &Mechanism::AesKeyGen,
        &[
            Attribute::Token(true),
            Attribute::ValueLen(32.into()),
            Attribute::Label(b"no spaces allowed".to_vec()),
        ],
    );
    assert_eq!(rv(bad_name), RvError::AttributeValueInvalid);
    let r = s.generate_key(
        &Mechanism::AesKeyGen,
        &[
            Attribute::Token(true),
            Attribute::ValueLen(32.into()),
            Attribute::Extractable(true),
        ],
    );
    assert_eq!(rv(r), RvError::TemplateInconsistent);
    let r = s.generate_key(
        &Mechanism::AesKeyGen,
        &[Attribute::Token(true), Attribute::ValueLen(16.into())],
    );
    assert_eq!(rv(r), RvError::AttributeValueInvalid);
    // Cluster keys are made only in read-write sessions.
    let ro = c.p11.open_ro_session(c.slot).unwrap();
    let r = ro.generate_key(
        &Mechanism::AesKeyGen,
        &[Attribute::Token(true), Attribute::ValueLen(32.into())],
    );
    assert_eq!(rv(r), RvError::SessionReadOnly);
}

#[test]
fn every_mechanism_on_a_cluster_key() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let node = KmsNode::start("");
    let c = load(&node.config);
    let s = rw(&c);
    let k = token_key(&s, "ck");
    // AES-GCM with the caller's IV and AAD.
    let mut iv = [5u8; 12];
    let ct = s.encrypt(&gcm(&mut iv, b"ad"), k, b"secret").unwrap();
    assert_eq!(ct.len(), 6 + 16);
    assert_eq!(s.decrypt(&gcm(&mut iv, b"ad"), k, &ct).unwrap(), b"secret");
    assert_eq!(
        rv(s.decrypt(&gcm(&mut iv, b"AD"), k, &ct)),
        RvError::EncryptedDataInvalid
    );
    // AES-CBC-PAD, single and multi-part.
    let cbc = Mechanism::AesCbcPad([1u8; 16]);
    let ct = s.encrypt(&cbc, k, &[7u8; 33]).unwrap();
    assert_eq!(ct.len(), 48);
    s.decrypt_init(&cbc, k).unwrap();
    let mut back = s.decrypt_update(&ct[..20]).unwrap();
    back.extend(s.decrypt_update(&ct[20..]).unwrap());
    back.extend(s.decrypt_final().unwrap());
    assert_eq!(back, vec![7u8; 33]);
    // HMAC-SHA256 equals the cluster's KEY:MAC.
    let mac = s.sign(&Mechanism::Sha256Hmac, k, b"message").unwrap();
    let client = node.server.root();
    let want = rt()
        .block_on(client.call::<_, kms_client::proto::MacResponse>(
            Some(ENCLAVE),
            kms_client::Command::KeyMac,
            &kms_client::proto::MacRequest {
                name: "ck".into(),
                version: 0,
                message: b"message".to_vec(),
            },
        ))
        .unwrap();
    assert_eq!(mac, want.mac);
    s.verify(&Mechanism::Sha256Hmac, k, b"message", &mac)
        .unwrap();
    assert_eq!(
        rv(s.verify(&Mechanism::Sha256Hmac, k, b"other", &mac)),
        RvError::SignatureInvalid
    );
    // The vendor mechanism: the cluster's own ciphertext, which KEY:DECRYPT opens.
    let vm = Mechanism::VendorDefined(VendorDefinedMechanism::new::<u8>(
        MechanismType::new_vendor_defined(CKM_KMS_CIPHERTEXT).unwrap(),
        None,
    ));
    let ct = s.encrypt(&vm, k, b"versioned").unwrap();
    assert_eq!(ct[0], 1, "format v1");
    let pt = rt()
        .block_on(client.decrypt(ENCLAVE, "ck", &ct, b""))
        .unwrap();
    assert_eq!(pt.plaintext, b"versioned");
    assert_eq!(s.decrypt(&vm, k, &ct).unwrap(), b"versioned");
    // After a rotation, data sealed under the old version still opens.
    let mut iv = [6u8; 12];
    let old = s.encrypt(&gcm(&mut iv, b""), k, b"before").unwrap();
    let wrapped_before = {
        let dk = session_key(&s);
        (s.wrap_key(&Mechanism::AesKeyWrapPad, k, dk).unwrap(), dk)
    };
    ok(&node
        .server
        .cli(None, &["add-key", "-e", ENCLAVE, "ck", "--version"]));
    assert_eq!(s.decrypt(&gcm(&mut iv, b""), k, &old).unwrap(), b"before");
    assert_ne!(s.encrypt(&gcm(&mut iv, b""), k, b"before").unwrap(), old);
    assert_eq!(s.decrypt(&vm, k, &ct).unwrap(), b"versioned");
    let back = s
        .unwrap_key(
            &Mechanism::AesKeyWrapPad,
            k,
            &wrapped_before.0,
            &[
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::KeyType(KeyType::AES),
                Attribute::Token(false),
            ],
        )
        .unwrap();
    same_key(&s, wrapped_before.1, back);

    // A ChaCha20 cluster key: CKK_CHACHA20, the vendor mechanism and HMAC
    // work, AES mechanisms do not.
    ok(&node.server.cli(
        None,
        &["add-key", "-e", ENCLAVE, "cc", "--type", "chacha20"],
    ));
    // The key list is cached for refresh_ms (2 s by default): wait for it.
    wait_until(
        Duration::from_secs(10),
        "the CLI's ChaCha20 key 'cc' to be found through the module",
        || {
            s.find_objects(&[Attribute::Label(b"cc".to_vec())])
                .unwrap()
                .len()
                == 1
        },
    );
    let cc = s.find_objects(&[Attribute::Label(b"cc".to_vec())]).unwrap()[0];
    // (cryptoki cannot name CKK_CHACHA20: the type is checked in the raw
    // attribute below.)
    let mut kt: CK_KEY_TYPE = 0;
    let mut a = [CK_ATTRIBUTE {
        type_: CKA_KEY_TYPE,
        pValue: &mut kt as *mut _ as *mut _,
        ulValueLen: std::mem::size_of::<CK_KEY_TYPE>() as CK_ULONG,
    }];
    // SAFETY: the module is loaded and initialized by `c`; `a` points to a local.
    let rv_kt = unsafe {
        let lib = cryptoki_sys::Pkcs11::new(module_path()).unwrap();
        let mut fl: *mut CK_FUNCTION_LIST = null_mut();
        assert_eq!(lib.C_GetFunctionList(&mut fl), CKR_OK);
        (*fl).C_GetAttributeValue.unwrap()(s.handle(), cc.handle(), a.as_mut_ptr(), 1)
    };
    assert_eq!((rv_kt, kt), (CKR_OK, CKK_CHACHA20));
    let ct = s.encrypt(&vm, cc, b"chacha").unwrap();
    assert_eq!(s.decrypt(&vm, cc, &ct).unwrap(), b"chacha");
    assert_eq!(ct[1], 2, "ChaCha20-Poly1305 in the cluster's format");
    assert_eq!(s.sign(&Mechanism::Sha256Hmac, cc, b"m").unwrap().len(), 32);
    assert_eq!(
        rv(s.encrypt(&gcm(&mut iv, b""), cc, b"x")),
        RvError::KeyTypeInconsistent
    );
}

fn session_key(s: &Session) -> ObjectHandle {
    s.generate_key(
        &Mechanism::AesKeyGen,
        &[
            Attribute::Token(false),
            Attribute::ValueLen(32.into()),
            Attribute::Extractable(true),
            Attribute::Sensitive(true),
        ],
    )
    .unwrap()
}

fn same_key(s: &Session, a: ObjectHandle, b: ObjectHandle) {
    let mut iv = [3u8; 12];
    assert_eq!(
        s.encrypt(&gcm(&mut iv, b""), a, b"probe").unwrap(),
        s.encrypt(&gcm(&mut iv, b""), b, b"probe").unwrap()
    );
}

#[test]
fn envelope_encryption_with_a_cluster_key() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let node = KmsNode::start("");
    let c = load(&node.config);
    let s = rw(&c);
    let kek = token_key(&s, "kek");
    // (CKM_AES_KEY_WRAP_KWP, 0x210B, which cryptoki cannot name, is tested
    // through the C interface in hostile_callers_get_error_codes.)
    for mech in [Mechanism::AesKeyWrap, Mechanism::AesKeyWrapPad] {
        let dk = session_key(&s);
        let wrapped = s.wrap_key(&mech, kek, dk).unwrap();
        assert_eq!(wrapped.len(), 40);
        let back = s
            .unwrap_key(
                &mech,
                kek,
                &wrapped,
                &[
                    Attribute::Class(ObjectClass::SECRET_KEY),
                    Attribute::KeyType(KeyType::AES),
                    Attribute::Token(false),
                ],
            )
            .unwrap();
        same_key(&s, dk, back);
        let mut bad = wrapped.clone();
        bad[9] ^= 0x40;
        let r = s.unwrap_key(
            &mech,
            kek,
            &bad,
            &[
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::KeyType(KeyType::AES),
            ],
        );
        assert_eq!(rv(r), RvError::WrappedKeyInvalid);
    }
    // A cluster key cannot be wrapped.
    let other = token_key(&s, "other");
    assert_eq!(
        rv(s.wrap_key(&Mechanism::AesKeyWrap, kek, other)),
        RvError::KeyUnextractable
    );
    // Unwrapping into a token key imports the bytes as a cluster key's
    // secret: KEY:MAC under it is HMAC(HMAC(bytes, "kms/v1/mac"), message).
    let known = [0x5cu8; 32];
    let dk = s
        .create_object(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::Token(false),
            Attribute::Value(known.to_vec()),
            Attribute::Extractable(true),
        ])
        .unwrap();
    let wrapped = s.wrap_key(&Mechanism::AesKeyWrap, kek, dk).unwrap();
    let imported = s
        .unwrap_key(
            &Mechanism::AesKeyWrap,
            kek,
            &wrapped,
            &[
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::KeyType(KeyType::AES),
                Attribute::Token(true),
                Attribute::Label(b"imported".to_vec()),
            ],
        )
        .unwrap();
    assert!(ls_key(&node).contains("imported"));
    let mac = s.sign(&Mechanism::Sha256Hmac, imported, b"msg").unwrap();
    let mac_key = kms_client::raw::hmac_sha256(&known, b"kms/v1/mac");
    assert_eq!(mac, kms_client::raw::hmac_sha256(&mac_key, b"msg"));
    // A cluster key that exists cannot be imported again.
    let r = s.unwrap_key(
        &Mechanism::AesKeyWrap,
        kek,
        &wrapped,
        &[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::Token(true),
            Attribute::Label(b"imported".to_vec()),
        ],
    );
    // The name is taken (409 from KEY:IMPORT): the template's fault.
    assert_eq!(rv(r), RvError::AttributeValueInvalid);
}

/// Failover: a loop of encrypt/decrypt through the module while all but one
/// of the configured servers are dead sees no error.
#[test]
fn failover_across_dead_servers() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let node = KmsNode::start("");
    let cfg = node.tmp.path().join("failover.toml");
    let servers = vec![
        format!("https://127.0.0.1:{}", dead_port()),
        node.server.url(),
        format!("https://127.0.0.1:{}", dead_port()),
    ];
    write_config(&cfg, &servers, &node.server.root_key, "timeout_ms = 2000\n");
    let c = load(&cfg);
    let s = rw(&c);
    let k = token_key(&s, "fo");
    gcm_round_trips(&s, k, 200, Duration::from_secs(60), |_| {});
    // The three-node version is failover_with_three_nodes_one_killed below.
}

/// `n` AES-GCM encrypt/decrypt round trips with `k`, each with its own IV,
/// calling `before(i)` ahead of round trip `i`; none may fail, all within `limit`.
fn gcm_round_trips(
    s: &Session,
    k: ObjectHandle,
    n: u32,
    limit: Duration,
    mut before: impl FnMut(u32),
) {
    let started = Instant::now();
    for i in 0..n {
        before(i);
        let mut iv = [0u8; 12];
        iv[..4].copy_from_slice(&i.to_be_bytes());
        let ct = s.encrypt(&gcm(&mut iv, b""), k, b"payload").unwrap();
        assert_eq!(s.decrypt(&gcm(&mut iv, b""), k, &ct).unwrap(), b"payload");
        assert!(started.elapsed() < limit);
    }
}

/// Three nodes with one HSM key, one killed mid-run: a loop of
/// encrypt/decrypt through the module sees no error (walkthrough 3 "while
/// one node of three is down").
#[test]
fn failover_with_three_nodes_one_killed() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let tmp = tempfile::tempdir().unwrap();
    let mut nodes = kms_tests::cluster(&tmp, 3, kms_tests::SEED_HSM_KEY);
    ok(&nodes[0].cli(None, &["add-enclave", ENCLAVE]));
    let cfg = tmp.path().join("three.toml");
    let urls: Vec<String> = nodes.iter().map(|n| n.url()).collect();
    write_config(&cfg, &urls, &nodes[0].root_key, "timeout_ms = 2000\n");
    let c = load(&cfg);
    let s = rw(&c);
    let k = token_key(&s, "three");
    gcm_round_trips(&s, k, 300, Duration::from_secs(120), |i| {
        if i == 100 {
            nodes[1].kill9();
        }
    });
}

/// Failover when the node dies mid-run and a second node serves the same
/// enclave: with one node today, a restart on the same address stands in
/// for "another node": calls while it is down fail with CKR_DEVICE_ERROR,
/// never a crash, and succeed again once it is back.
#[test]
fn a_node_restart_is_survived() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut node = KmsNode::start("refresh_ms = 1\n");
    let c = load(&node.config);
    let s = rw(&c);
    let k = token_key(&s, "rs");
    assert_eq!(s.find_objects(&[]).unwrap(), vec![k]);
    let mut iv = [1u8; 12];
    let ct = s.encrypt(&gcm(&mut iv, b""), k, b"x").unwrap();
    node.server.kill9();
    assert_eq!(
        rv(s.decrypt(&gcm(&mut iv, b""), k, &ct)),
        RvError::DeviceError
    );
    // Searches go on with the last list of keys while no server answers.
    assert_eq!(
        s.find_objects(&[Attribute::Label(b"rs".to_vec())]).unwrap(),
        vec![k]
    );
    node.server.restart();
    // Kept-alive connections to the old process are dead: the module retries.
    assert_eq!(s.decrypt(&gcm(&mut iv, b""), k, &ct).unwrap(), b"x");
}

#[test]
fn bad_configurations_fail_c_initialize_cleanly() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let tmp = tempfile::tempdir().unwrap();
    let log = tmp.path().join("p11.log");
    for (i, text) in [
        "servers = [\"127.0.0.1:1\"]\n".to_string(),
        "this is not toml".to_string(),
        format!(
            "servers = [\"127.0.0.1:1\"]\napi_key = \"k1:bad\"\nlog_file = \"{}\"\n",
            log.display()
        ),
        // Valid, but no enclave list and nothing to list them from.
        format!(
            "servers = [\"127.0.0.1:{}\"]\napi_key = \"{}\"\ninsecure = true\ntimeout_ms = 500\n",
            dead_port(),
            &*kms_client::ApiKey::generate().to_secret_string()
        ),
    ]
    .iter()
    .enumerate()
    {
        let p = tmp.path().join(format!("bad{i}.toml"));
        std::fs::write(&p, text).unwrap();
        let p11 = Pkcs11::new(module_path()).unwrap();
        use_config(&p);
        let r = p11.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK));
        // A bad file named by KMS_PKCS11_CONFIG, and a good one whose
        // enclaves cannot be listed, are general errors (docs/pkcs11.md).
        assert_eq!(rv(r), RvError::GeneralError, "config {i}");
        // Still uninitialized.
        assert_eq!(
            rv(p11.get_slots_with_token()),
            RvError::CryptokiNotInitialized,
            "config {i}"
        );
    }
    // A missing file is a general error too.
    let p11 = Pkcs11::new(module_path()).unwrap();
    use_config(&tmp.path().join("absent.toml"));
    let r = p11.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK));
    assert_eq!(rv(r), RvError::GeneralError);
    // ... and a good configuration works afterwards.
    let good = tmp.path().join("good.toml");
    write_offline_config(&good);
    use_config(&good);
    p11.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .expect("C_Initialize after bad configurations");
    assert_eq!(p11.get_slots_with_token().unwrap().len(), 1);
    p11.finalize().unwrap();
    // CKR_GENERAL_ERROR from a plain C caller too, and a clear line on
    // stderr, in a child process so that stderr can be read.
    let bad = tmp.path().join("bad0.toml");
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(format!(
            "import ctypes,sys; l=ctypes.CDLL('{}'); sys.exit(0 if l.C_Initialize(None)==5 else 1)",
            module_path().display()
        ))
        .env("KMS_PKCS11_CONFIG", &bad)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "C_Initialize did not return CKR_GENERAL_ERROR: {err}"
    );
    assert!(err.contains("no API key"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

/// Raw C calls with hostile arguments: the right CKR_*, never a crash.
#[test]
fn hostile_callers_get_error_codes() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let node = KmsNode::start("");
    // SAFETY: loading the module under test.
    let lib = unsafe { cryptoki_sys::Pkcs11::new(module_path()) }.unwrap();
    // SAFETY: every call below passes either valid pointers to locals or
    // NULL / bogus handles on purpose; the module must not dereference
    // anything it cannot check.
    unsafe {
        let mut fl: *mut CK_FUNCTION_LIST = null_mut();
        assert_eq!(lib.C_GetFunctionList(&mut fl), CKR_OK);
        assert_eq!(lib.C_GetFunctionList(null_mut()), CKR_ARGUMENTS_BAD);
        let f = &*fl;
        // Every entry is set.
        let n = std::mem::size_of::<CK_FUNCTION_LIST>() / std::mem::size_of::<usize>();
        let words = std::slice::from_raw_parts(fl as *const usize, n);
        assert!(words[1..].iter().all(|w| *w != 0), "a NULL entry");
        let mut iface: *mut CK_INTERFACE = null_mut();
        assert_eq!(
            lib.C_GetInterface(null_mut(), null_mut(), &mut iface, 0),
            CKR_OK
        );
        let ifl = (*iface).pFunctionList as *mut CK_FUNCTION_LIST_3_0;
        let n3 = std::mem::size_of::<CK_FUNCTION_LIST_3_0>() / std::mem::size_of::<usize>();
        let words = std::slice::from_raw_parts(ifl as *const usize, n3);
        assert!(words[1..].iter().all(|w| *w != 0), "a NULL 3.0 entry");
        assert_eq!((*ifl).version.major, 3);
        let mut count: CK_ULONG = 0;
        assert_eq!(lib.C_GetInterfaceList(null_mut(), &mut count), CKR_OK);
        assert_eq!(count, 2);

        // Before C_Initialize.
        let mut info: CK_INFO = std::mem::zeroed();
        assert_eq!(
            f.C_GetInfo.unwrap()(&mut info),
            CKR_CRYPTOKI_NOT_INITIALIZED
        );
        assert_eq!(
            f.C_GetSlotList.unwrap()(0, null_mut(), &mut count),
            CKR_CRYPTOKI_NOT_INITIALIZED
        );
        assert_eq!(
            f.C_OpenSession.unwrap()(1, CKF_SERIAL_SESSION, null_mut(), None, null_mut()),
            CKR_CRYPTOKI_NOT_INITIALIZED
        );
        assert_eq!(
            f.C_Finalize.unwrap()(null_mut()),
            CKR_CRYPTOKI_NOT_INITIALIZED
        );

        // Initialize arguments: partial mutex functions; finalize with a pointer.
        let mut args: CK_C_INITIALIZE_ARGS = std::mem::zeroed();
        args.LockMutex = Some(dummy_mutex);
        assert_eq!(
            f.C_Initialize.unwrap()(&mut args as *mut _ as *mut _),
            CKR_ARGUMENTS_BAD
        );
        let mut iface2: *mut CK_INTERFACE = null_mut();
        let mut bad_name = *b"PKCS 12\0";
        assert_eq!(
            lib.C_GetInterface(bad_name.as_mut_ptr(), null_mut(), &mut iface2, 0),
            CKR_ARGUMENTS_BAD
        );
        let mut v2 = CK_VERSION {
            major: 2,
            minor: 40,
        };
        assert_eq!(
            lib.C_GetInterface(null_mut(), &mut v2, &mut iface2, 0),
            CKR_OK
        );
        assert_eq!(
            (*((*iface2).pFunctionList as *mut CK_FUNCTION_LIST))
                .version
                .major,
            2
        );
        assert_eq!(
            lib.C_GetInterface(null_mut(), null_mut(), &mut iface2, CKF_INTERFACE_FORK_SAFE),
            CKR_ARGUMENTS_BAD
        );
        assert_eq!(
            lib.C_GetInterface(null_mut(), null_mut(), null_mut(), 0),
            CKR_ARGUMENTS_BAD
        );
        use_config(&node.config);
        let mut args: CK_C_INITIALIZE_ARGS = std::mem::zeroed();
        // As p11-kit and GnuTLS initialize modules: the module then keeps no
        // threads of its own.
        args.flags = CKF_OS_LOCKING_OK | CKF_LIBRARY_CANT_CREATE_OS_THREADS;
        // A non-NULL pReserved (here a string without NUL) is refused and
        // never read, even with a good configuration in the environment.
        let mut no_nul = *b"/etc";
        args.pReserved = no_nul.as_mut_ptr() as *mut _;
        assert_eq!(
            f.C_Initialize.unwrap()(&mut args as *mut _ as *mut _),
            CKR_ARGUMENTS_BAD
        );
        assert_eq!(
            f.C_GetInfo.unwrap()(&mut info),
            CKR_CRYPTOKI_NOT_INITIALIZED
        );
        args.pReserved = null_mut();
        assert_eq!(
            f.C_Initialize.unwrap()(&mut args as *mut _ as *mut _),
            CKR_OK
        );
        assert_eq!(
            f.C_Initialize.unwrap()(&mut args as *mut _ as *mut _),
            CKR_CRYPTOKI_ALREADY_INITIALIZED
        );
        assert_eq!(f.C_GetInfo.unwrap()(null_mut()), CKR_ARGUMENTS_BAD);
        assert_eq!(f.C_GetInfo.unwrap()(&mut info), CKR_OK);

        // Slot list: the two-call convention and a too-small buffer.
        assert_eq!(
            f.C_GetSlotList.unwrap()(1, null_mut(), null_mut()),
            CKR_ARGUMENTS_BAD
        );
        assert_eq!(f.C_GetSlotList.unwrap()(1, null_mut(), &mut count), CKR_OK);
        assert!(count >= 1);
        let mut slots = vec![0 as CK_SLOT_ID; count as usize];
        let mut zero: CK_ULONG = 0;
        assert_eq!(
            f.C_GetSlotList.unwrap()(1, slots.as_mut_ptr(), &mut zero),
            CKR_BUFFER_TOO_SMALL
        );
        assert_eq!(zero, count);
        assert_eq!(
            f.C_GetSlotList.unwrap()(1, slots.as_mut_ptr(), &mut count),
            CKR_OK
        );
        let slot = slots[0];
        let mut ti: CK_TOKEN_INFO = std::mem::zeroed();
        assert_eq!(
            f.C_GetTokenInfo.unwrap()(0xdead_beef, &mut ti),
            CKR_SLOT_ID_INVALID
        );
        assert_eq!(
            f.C_GetTokenInfo.unwrap()(slot, null_mut()),
            CKR_ARGUMENTS_BAD
        );
        assert_eq!(f.C_GetTokenInfo.unwrap()(slot, &mut ti), CKR_OK);
        assert_eq!(&ti.label[..3], b"p11");
        let mut mi: CK_MECHANISM_INFO = std::mem::zeroed();
        assert_eq!(
            f.C_GetMechanismInfo.unwrap()(slot, CKM_RSA_X_509, &mut mi),
            CKR_MECHANISM_INVALID
        );

        // Sessions.
        let mut h: CK_SESSION_HANDLE = 0;
        assert_eq!(
            f.C_OpenSession.unwrap()(slot, 0, null_mut(), None, &mut h),
            CKR_SESSION_PARALLEL_NOT_SUPPORTED
        );
        assert_eq!(
            f.C_OpenSession.unwrap()(slot, CKF_SERIAL_SESSION, null_mut(), None, null_mut()),
            CKR_ARGUMENTS_BAD
        );
        assert_eq!(
            f.C_OpenSession.unwrap()(
                slot,
                CKF_SERIAL_SESSION | CKF_RW_SESSION,
                null_mut(),
                None,
                &mut h
            ),
            CKR_OK
        );
        assert_eq!(
            f.C_CloseSession.unwrap()(h + 1000),
            CKR_SESSION_HANDLE_INVALID
        );
        let mut si: CK_SESSION_INFO = std::mem::zeroed();
        assert_eq!(
            f.C_GetSessionInfo.unwrap()(12345, &mut si),
            CKR_SESSION_HANDLE_INVALID
        );
        assert_eq!(
            f.C_Login.unwrap()(h, CKU_USER, null_mut(), 4),
            CKR_ARGUMENTS_BAD
        );
        assert_eq!(
            f.C_Login.unwrap()(h, 77, b"1234".as_ptr() as *mut _, 4),
            CKR_USER_TYPE_INVALID
        );

        // Objects: garbage templates and handles.
        let mut oh: CK_OBJECT_HANDLE = 0;
        assert_eq!(
            f.C_CreateObject.unwrap()(h, null_mut(), 3, &mut oh),
            CKR_ARGUMENTS_BAD
        );
        let mut bogus = [CK_ATTRIBUTE {
            type_: CKA_CLASS,
            pValue: null_mut(),
            ulValueLen: 8,
        }];
        assert_eq!(
            f.C_CreateObject.unwrap()(h, bogus.as_mut_ptr(), 1, &mut oh),
            CKR_ARGUMENTS_BAD
        );
        let mut one_byte = 1u8;
        let mut wrong_len = [CK_ATTRIBUTE {
            type_: CKA_CLASS,
            pValue: &mut one_byte as *mut u8 as *mut _,
            ulValueLen: 1,
        }];
        assert_eq!(
            f.C_CreateObject.unwrap()(h, wrong_len.as_mut_ptr(), 1, &mut oh),
            CKR_ATTRIBUTE_VALUE_INVALID
        );
        let mut weird = [CK_ATTRIBUTE {
            type_: 0xFFFF_0000,
            pValue: &mut one_byte as *mut u8 as *mut _,
            ulValueLen: 1,
        }];
        assert_eq!(
            f.C_CreateObject.unwrap()(h, weird.as_mut_ptr(), 1, &mut oh),
            CKR_ATTRIBUTE_TYPE_INVALID
        );
        let mut buf = [0u8; 8];
        let mut get = [CK_ATTRIBUTE {
            type_: CKA_LABEL,
            pValue: buf.as_mut_ptr() as *mut _,
            ulValueLen: 8,
        }];
        assert_eq!(
            f.C_GetAttributeValue.unwrap()(h, 999_999, get.as_mut_ptr(), 1),
            CKR_OBJECT_HANDLE_INVALID
        );
        assert_eq!(
            f.C_DestroyObject.unwrap()(h, 999_999),
            CKR_OBJECT_HANDLE_INVALID
        );
        assert_eq!(
            f.C_FindObjects.unwrap()(h, null_mut(), 1, &mut count),
            CKR_ARGUMENTS_BAD
        );
        assert_eq!(
            f.C_FindObjects.unwrap()(h, &mut oh, 1, &mut count),
            CKR_OPERATION_NOT_INITIALIZED
        );
        assert_eq!(
            f.C_FindObjectsFinal.unwrap()(h),
            CKR_OPERATION_NOT_INITIALIZED
        );

        // A session key, and the attribute conventions on it.
        let mut keygen = CK_MECHANISM {
            mechanism: CKM_AES_KEY_GEN,
            pParameter: null_mut(),
            ulParameterLen: 0,
        };
        let mut len: CK_ULONG = 32;
        let mut f_ = 0u8;
        let mut t_ = 1u8;
        let mut tmpl = [
            CK_ATTRIBUTE {
                type_: CKA_VALUE_LEN,
                pValue: &mut len as *mut _ as *mut _,
                ulValueLen: 8,
            },
            CK_ATTRIBUTE {
                type_: CKA_TOKEN,
                pValue: &mut f_ as *mut _ as *mut _,
                ulValueLen: 1,
            },
            CK_ATTRIBUTE {
                type_: CKA_SENSITIVE,
                pValue: &mut t_ as *mut _ as *mut _,
                ulValueLen: 1,
            },
        ];
        let mut key: CK_OBJECT_HANDLE = 0;
        assert_eq!(
            f.C_GenerateKey.unwrap()(h, null_mut(), tmpl.as_mut_ptr(), 3, &mut key),
            CKR_ARGUMENTS_BAD
        );
        assert_eq!(
            f.C_GenerateKey.unwrap()(h, &mut keygen, tmpl.as_mut_ptr(), 3, null_mut()),
            CKR_ARGUMENTS_BAD
        );
        assert_eq!(
            f.C_GenerateKey.unwrap()(h, &mut keygen, tmpl.as_mut_ptr(), 3, &mut key),
            CKR_OK
        );
        // CKA_VALUE of a sensitive key; the size of a label; a too-small buffer.
        let mut label_buf = [0u8; 1];
        let mut attrs = [
            CK_ATTRIBUTE {
                type_: CKA_VALUE,
                pValue: buf.as_mut_ptr() as *mut _,
                ulValueLen: 8,
            },
            CK_ATTRIBUTE {
                type_: CKA_VALUE_LEN,
                pValue: null_mut(),
                ulValueLen: 0,
            },
            CK_ATTRIBUTE {
                type_: CKA_CLASS,
                pValue: label_buf.as_mut_ptr() as *mut _,
                ulValueLen: 1,
            },
        ];
        assert_eq!(
            f.C_GetAttributeValue.unwrap()(h, key, attrs.as_mut_ptr(), 3),
            CKR_BUFFER_TOO_SMALL
        );
        assert_eq!(attrs[0].ulValueLen, CK_UNAVAILABLE_INFORMATION);
        assert_eq!(attrs[1].ulValueLen, 8);
        assert_eq!(attrs[2].ulValueLen, CK_UNAVAILABLE_INFORMATION);
        let mut only_value = [CK_ATTRIBUTE {
            type_: CKA_VALUE,
            pValue: null_mut(),
            ulValueLen: 0,
        }];
        assert_eq!(
            f.C_GetAttributeValue.unwrap()(h, key, only_value.as_mut_ptr(), 1),
            CKR_ATTRIBUTE_SENSITIVE
        );

        // Mechanism parameters: a GCM parameter of the wrong size; NULL IV.
        let mut g = CK_GCM_PARAMS {
            pIv: null_mut(),
            ulIvLen: 12,
            ulIvBits: 96,
            pAAD: null_mut(),
            ulAADLen: 0,
            ulTagBits: 128,
        };
        let mut m = CK_MECHANISM {
            mechanism: CKM_AES_GCM,
            pParameter: &mut g as *mut _ as *mut _,
            ulParameterLen: 3,
        };
        assert_eq!(
            f.C_EncryptInit.unwrap()(h, &mut m, key),
            CKR_MECHANISM_PARAM_INVALID
        );
        m.ulParameterLen = std::mem::size_of::<CK_GCM_PARAMS>() as CK_ULONG;
        assert_eq!(
            f.C_EncryptInit.unwrap()(h, &mut m, key),
            CKR_MECHANISM_PARAM_INVALID
        );
        let mut iv = [0u8; 12];
        g.pIv = iv.as_mut_ptr();
        m.pParameter = &mut g as *mut _ as *mut _;
        assert_eq!(
            f.C_EncryptInit.unwrap()(h, &mut m, 424_242),
            CKR_KEY_HANDLE_INVALID
        );
        let mut rsa = CK_MECHANISM {
            mechanism: CKM_RSA_PKCS,
            pParameter: null_mut(),
            ulParameterLen: 0,
        };
        assert_eq!(
            f.C_EncryptInit.unwrap()(h, &mut rsa, key),
            CKR_MECHANISM_INVALID
        );
        assert_eq!(f.C_EncryptInit.unwrap()(h, &mut m, key), CKR_OK);
        assert_eq!(
            f.C_EncryptInit.unwrap()(h, &mut m, key),
            CKR_OPERATION_ACTIVE
        );
        // Encrypt: NULL length pointer, a size query, a too-small buffer, then the data.
        let mut data = *b"0123456789abcdef0123456789abcdef";
        let mut out = [0u8; 64];
        assert_eq!(
            f.C_Encrypt.unwrap()(h, data.as_mut_ptr(), 32, out.as_mut_ptr(), null_mut()),
            CKR_ARGUMENTS_BAD
        );
        assert_eq!(f.C_EncryptInit.unwrap()(h, &mut m, key), CKR_OK);
        let mut out_len: CK_ULONG = 0;
        assert_eq!(
            f.C_Encrypt.unwrap()(h, data.as_mut_ptr(), 32, null_mut(), &mut out_len),
            CKR_OK
        );
        assert_eq!(out_len, 48);
        out_len = 10;
        assert_eq!(
            f.C_Encrypt.unwrap()(h, data.as_mut_ptr(), 32, out.as_mut_ptr(), &mut out_len),
            CKR_BUFFER_TOO_SMALL
        );
        assert_eq!(out_len, 48);
        out_len = 64;
        assert_eq!(
            f.C_Encrypt.unwrap()(h, data.as_mut_ptr(), 32, out.as_mut_ptr(), &mut out_len),
            CKR_OK
        );
        assert_eq!(out_len, 48);
        assert_eq!(
            f.C_Encrypt.unwrap()(h, data.as_mut_ptr(), 32, out.as_mut_ptr(), &mut out_len),
            CKR_OPERATION_NOT_INITIALIZED
        );
        assert_eq!(
            f.C_Encrypt.unwrap()(h, null_mut(), 32, out.as_mut_ptr(), &mut out_len),
            CKR_ARGUMENTS_BAD
        );
        // A decrypt of a tampered ciphertext; the operation ends.
        assert_eq!(f.C_DecryptInit.unwrap()(h, &mut m, key), CKR_OK);
        out[0] ^= 1;
        let mut pt = [0u8; 64];
        let mut pt_len: CK_ULONG = 64;
        assert_eq!(
            f.C_Decrypt.unwrap()(h, out.as_mut_ptr(), 48, pt.as_mut_ptr(), &mut pt_len),
            CKR_ENCRYPTED_DATA_INVALID
        );
        assert_eq!(
            f.C_DecryptFinal.unwrap()(h, pt.as_mut_ptr(), &mut pt_len),
            CKR_OPERATION_NOT_INITIALIZED
        );
        // Random: NULL buffer.
        assert_eq!(
            f.C_GenerateRandom.unwrap()(h, null_mut(), 16),
            CKR_ARGUMENTS_BAD
        );
        assert_eq!(f.C_GenerateRandom.unwrap()(h, out.as_mut_ptr(), 16), CKR_OK);
        // CKM_AES_KEY_WRAP_KWP (0x210B): wrap a second session key with the
        // two-call convention, unwrap it, and compare.
        let mut key2: CK_OBJECT_HANDLE = 0;
        let mut ext = 1u8;
        let mut no = 0u8;
        let mut tmpl2 = [
            CK_ATTRIBUTE {
                type_: CKA_VALUE_LEN,
                pValue: &mut len as *mut _ as *mut _,
                ulValueLen: 8,
            },
            CK_ATTRIBUTE {
                type_: CKA_TOKEN,
                pValue: &mut f_ as *mut _ as *mut _,
                ulValueLen: 1,
            },
            CK_ATTRIBUTE {
                type_: CKA_EXTRACTABLE,
                pValue: &mut ext as *mut _ as *mut _,
                ulValueLen: 1,
            },
            CK_ATTRIBUTE {
                type_: CKA_SENSITIVE,
                pValue: &mut no as *mut _ as *mut _,
                ulValueLen: 1,
            },
        ];
        assert_eq!(
            f.C_GenerateKey.unwrap()(h, &mut keygen, tmpl2.as_mut_ptr(), 4, &mut key2),
            CKR_OK
        );
        let mut kwp = CK_MECHANISM {
            mechanism: CKM_AES_KEY_WRAP_KWP,
            pParameter: null_mut(),
            ulParameterLen: 0,
        };
        let mut wlen: CK_ULONG = 0;
        assert_eq!(
            f.C_WrapKey.unwrap()(h, &mut kwp, key, key2, null_mut(), &mut wlen),
            CKR_OK
        );
        assert_eq!(wlen, 40);
        let mut wrapped = [0u8; 40];
        wlen = 39;
        assert_eq!(
            f.C_WrapKey.unwrap()(h, &mut kwp, key, key2, wrapped.as_mut_ptr(), &mut wlen),
            CKR_BUFFER_TOO_SMALL
        );
        wlen = 40;
        assert_eq!(
            f.C_WrapKey.unwrap()(h, &mut kwp, key, key2, wrapped.as_mut_ptr(), &mut wlen),
            CKR_OK
        );
        let mut class = CKO_SECRET_KEY;
        let mut kt = CKK_AES;
        let mut ut = [
            CK_ATTRIBUTE {
                type_: CKA_CLASS,
                pValue: &mut class as *mut _ as *mut _,
                ulValueLen: 8,
            },
            CK_ATTRIBUTE {
                type_: CKA_KEY_TYPE,
                pValue: &mut kt as *mut _ as *mut _,
                ulValueLen: 8,
            },
            CK_ATTRIBUTE {
                type_: CKA_EXTRACTABLE,
                pValue: &mut ext as *mut _ as *mut _,
                ulValueLen: 1,
            },
            CK_ATTRIBUTE {
                type_: CKA_SENSITIVE,
                pValue: &mut no as *mut _ as *mut _,
                ulValueLen: 1,
            },
        ];
        let mut back: CK_OBJECT_HANDLE = 0;
        assert_eq!(
            f.C_UnwrapKey.unwrap()(
                h,
                &mut kwp,
                key,
                wrapped.as_mut_ptr(),
                40,
                ut.as_mut_ptr(),
                4,
                &mut back
            ),
            CKR_OK
        );
        let (mut v1, mut v2) = ([0u8; 32], [0u8; 32]);
        let mut a1 = [CK_ATTRIBUTE {
            type_: CKA_VALUE,
            pValue: v1.as_mut_ptr() as *mut _,
            ulValueLen: 32,
        }];
        let mut a2 = [CK_ATTRIBUTE {
            type_: CKA_VALUE,
            pValue: v2.as_mut_ptr() as *mut _,
            ulValueLen: 32,
        }];
        assert_eq!(
            f.C_GetAttributeValue.unwrap()(h, key2, a1.as_mut_ptr(), 1),
            CKR_OK
        );
        assert_eq!(
            f.C_GetAttributeValue.unwrap()(h, back, a2.as_mut_ptr(), 1),
            CKR_OK
        );
        assert_eq!(v1, v2);
        wrapped[3] ^= 1;
        assert_eq!(
            f.C_UnwrapKey.unwrap()(
                h,
                &mut kwp,
                key,
                wrapped.as_mut_ptr(),
                40,
                ut.as_mut_ptr(),
                2,
                &mut back
            ),
            CKR_WRAPPED_KEY_INVALID
        );
        assert_eq!(
            f.C_UnwrapKey.unwrap()(
                h,
                &mut kwp,
                key,
                wrapped.as_mut_ptr(),
                13,
                ut.as_mut_ptr(),
                2,
                &mut back
            ),
            CKR_WRAPPED_KEY_LEN_RANGE
        );
        let mut ev: CK_SLOT_ID = 0;
        assert_eq!(
            f.C_WaitForSlotEvent.unwrap()(CKF_DONT_BLOCK, &mut ev, null_mut()),
            CKR_NO_EVENT
        );
        // Unsupported functions answer so.
        assert_eq!(f.C_DigestKey.unwrap()(h, key), CKR_FUNCTION_NOT_SUPPORTED);
        // Key pairs are supported (pkcs11_asym.rs); a NULL mechanism is
        // a bad argument.
        assert_eq!(
            f.C_GenerateKeyPair.unwrap()(
                h,
                null_mut(),
                null_mut(),
                0,
                null_mut(),
                0,
                null_mut(),
                null_mut()
            ),
            CKR_ARGUMENTS_BAD
        );
        assert_eq!(
            f.C_InitToken.unwrap()(slot, null_mut(), 0, null_mut()),
            CKR_FUNCTION_NOT_SUPPORTED
        );

        // After C_Finalize.
        assert_eq!(
            f.C_Finalize.unwrap()(std::ptr::dangling_mut()),
            CKR_ARGUMENTS_BAD
        );
        assert_eq!(f.C_Finalize.unwrap()(null_mut()), CKR_OK);
        assert_eq!(
            f.C_GetSessionInfo.unwrap()(h, &mut si),
            CKR_CRYPTOKI_NOT_INITIALIZED
        );
        assert_eq!(
            f.C_Encrypt.unwrap()(h, data.as_mut_ptr(), 32, out.as_mut_ptr(), &mut out_len),
            CKR_CRYPTOKI_NOT_INITIALIZED
        );
        assert_eq!(
            f.C_Finalize.unwrap()(null_mut()),
            CKR_CRYPTOKI_NOT_INITIALIZED
        );
    }
}

unsafe extern "C" fn dummy_mutex(_m: *mut std::ffi::c_void) -> CK_RV {
    CKR_OK
}

/// PKCS#11 says `pReserved` must be NULL: anything else is
/// `CKR_ARGUMENTS_BAD`, before or after initialization, and the module never
/// reads what it points to (a string without NUL, an address nothing is
/// mapped at); the process lives on and a correct `C_Initialize` works.
#[test]
fn a_non_null_p_reserved_is_arguments_bad() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // A good configuration in the environment (no server is contacted: the
    // enclave is named).
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("p11.toml");
    write_offline_config(&cfg);
    use_config(&cfg);
    // SAFETY: loading the module under test.
    let lib = unsafe { cryptoki_sys::Pkcs11::new(module_path()) }.unwrap();
    let mut garbage = [0xFFu8; 4];
    let reserved: [*mut std::ffi::c_void; 4] = [
        garbage.as_mut_ptr() as *mut _,
        // 0x1 (c_void has size 1).
        null_mut::<std::ffi::c_void>().wrapping_add(1),
        std::ptr::without_provenance_mut(0xdead_beef),
        std::ptr::without_provenance_mut(usize::MAX),
    ];
    // SAFETY: the arguments are locals; the pointers in pReserved are
    // garbage on purpose and must never be dereferenced (if they were, the
    // test process would crash).
    unsafe {
        let mut fl: *mut CK_FUNCTION_LIST = null_mut();
        assert_eq!(lib.C_GetFunctionList(&mut fl), CKR_OK);
        let f = &*fl;
        let init = |flags: CK_FLAGS, reserved: *mut std::ffi::c_void| {
            let mut args: CK_C_INITIALIZE_ARGS = std::mem::zeroed();
            args.flags = flags;
            args.pReserved = reserved;
            f.C_Initialize.unwrap()(&mut args as *mut _ as *mut _)
        };
        let mut info: CK_INFO = std::mem::zeroed();
        for p in reserved {
            for flags in [
                0,
                CKF_OS_LOCKING_OK,
                CKF_OS_LOCKING_OK | CKF_LIBRARY_CANT_CREATE_OS_THREADS,
            ] {
                assert_eq!(init(flags, p), CKR_ARGUMENTS_BAD, "{p:?} {flags:#x}");
                assert_eq!(
                    f.C_GetInfo.unwrap()(&mut info),
                    CKR_CRYPTOKI_NOT_INITIALIZED,
                    "{p:?}: the refused call initialized the module"
                );
            }
        }
        assert_eq!(garbage, [0xFF; 4]);
        // Still alive: a correct C_Initialize works.
        assert_eq!(init(CKF_OS_LOCKING_OK, null_mut()), CKR_OK);
        assert_eq!(f.C_GetInfo.unwrap()(&mut info), CKR_OK);
        // Once initialized, a non-NULL pReserved is still a bad argument
        // (not CKR_CRYPTOKI_ALREADY_INITIALIZED), and changes nothing.
        for p in reserved {
            assert_eq!(init(CKF_OS_LOCKING_OK, p), CKR_ARGUMENTS_BAD, "{p:?}");
        }
        assert_eq!(
            init(CKF_OS_LOCKING_OK, null_mut()),
            CKR_CRYPTOKI_ALREADY_INITIALIZED
        );
        let mut count: CK_ULONG = 0;
        assert_eq!(f.C_GetSlotList.unwrap()(1, null_mut(), &mut count), CKR_OK);
        assert_eq!(count, 1);
        assert_eq!(f.C_Finalize.unwrap()(null_mut()), CKR_OK);
    }
}

/// A forked child must call C_Initialize again; then it works.
#[test]
fn a_forked_child_reinitializes() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let node = KmsNode::start("");
    // Python forks the process; the module must not hang or crash in the child.
    let script = format!(
        r#"
import ctypes, os, sys, PyKCS11
lib = PyKCS11.PyKCS11Lib()
lib.load('{module}')
slot = [s for s in lib.getSlotList(tokenPresent=True) if lib.getTokenInfo(s).label.strip() == 'p11'][0]
pid = os.fork()
if pid == 0:
    try:
        # The parent's state is void in the child...
        try:
            lib.getSlotList()
            print('child: the module answered before C_Initialize', file=sys.stderr)
            os._exit(2)
        except PyKCS11.PyKCS11Error as e:
            assert e.value == PyKCS11.CKR_CRYPTOKI_NOT_INITIALIZED, e
        # ... until it initializes again.
        assert ctypes.CDLL('{module}').C_Initialize(None) == 0
        sess = lib.openSession(slot)
        assert len(sess.generateRandom(16)) == 16
        os._exit(0)
    except Exception as e:
        print('child:', repr(e), file=sys.stderr)
        os._exit(3)
_, status = os.waitpid(pid, 0)
sess = lib.openSession(slot)
assert len(sess.generateRandom(8)) == 8
sys.exit(os.waitstatus_to_exitcode(status))
"#,
        module = module_path().display()
    );
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .env("KMS_PKCS11_CONFIG", &node.config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `login = "api-key"`: the user PIN is the API key; nothing of the cluster
/// is visible or usable before C_Login, and a wrong key is CKR_PIN_INCORRECT.
#[test]
fn the_pin_can_be_the_api_key() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let node = KmsNode::start("");
    let admin = kms_client::ApiKey::generate();
    ok(&node.server.cli(
        None,
        &[
            "add-identity",
            "-e",
            ENCLAVE,
            "--admin",
            &admin.identity().to_string(),
        ],
    ));
    ok(&node
        .server
        .cli(None, &["add-key", "-e", ENCLAVE, "existing"]));
    let cfg = node.tmp.path().join("apikey.toml");
    let log = node.tmp.path().join("p11.log");
    std::fs::write(
        &cfg,
        format!(
            "servers = [\"{}\"]\ninsecure = true\nlogin = \"api-key\"\nenclaves = [\"{ENCLAVE}\"]\nlog_level = \"debug\"\nlog_file = \"{}\"\n",
            node.server.url(),
            log.display()
        ),
    )
    .unwrap();
    let c = load(&cfg);
    assert!(c.p11.get_token_info(c.slot).unwrap().login_required());
    let s = c.p11.open_rw_session(c.slot).unwrap();
    assert!(s.find_objects(&[]).unwrap().is_empty());
    let r = s.generate_key(
        &Mechanism::AesKeyGen,
        &[Attribute::Token(true), Attribute::ValueLen(32.into())],
    );
    assert_eq!(rv(r), RvError::UserNotLoggedIn);
    // Session keys work without login.
    assert!(s
        .generate_key(
            &Mechanism::AesKeyGen,
            &[Attribute::Token(false), Attribute::ValueLen(16.into())],
        )
        .is_ok());
    for bad in ["1234", "k1:not-a-key"] {
        assert_eq!(
            rv(s.login(UserType::User, Some(&AuthPin::new(bad.into())))),
            RvError::PinIncorrect
        );
    }
    let stranger = kms_client::ApiKey::generate();
    assert_eq!(
        rv(s.login(
            UserType::User,
            Some(&AuthPin::new(
                stranger.to_secret_string().to_string().into()
            ))
        )),
        RvError::PinIncorrect
    );
    s.login(
        UserType::User,
        Some(&AuthPin::new(admin.to_secret_string().to_string().into())),
    )
    .unwrap();
    let found = s
        .find_objects(&[Attribute::Label(b"existing".to_vec())])
        .unwrap();
    assert_eq!(found.len(), 1);
    let attrs = s
        .get_attributes(found[0], &[AttributeType::Private])
        .unwrap();
    assert_eq!(attrs, vec![Attribute::Private(true)]);
    let k = token_key(&s, "by-admin");
    let mut iv = [2u8; 12];
    let ct = s.encrypt(&gcm(&mut iv, b""), k, b"x").unwrap();
    assert_eq!(s.decrypt(&gcm(&mut iv, b""), k, &ct).unwrap(), b"x");
    s.logout().unwrap();
    assert!(s.find_objects(&[]).unwrap().iter().all(|h| *h != k));
    assert_eq!(
        rv(s.get_attributes(k, &[AttributeType::Label])),
        RvError::ObjectHandleInvalid
    );
    // The log file has the events, never a PIN or an API key.
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("C_Login: CKR_PIN_INCORRECT"), "{text}");
    assert!(text.contains("initialized from file"), "{text}");
    for secret in [
        admin.to_secret_string().to_string(),
        stranger.to_secret_string().to_string(),
    ] {
        assert!(!text.contains(&secret[3..]), "a key in the log:\n{text}");
    }
}

/// 16 threads, each with its own session, on one cluster key at once: no
/// global lock around network calls, every result right.
#[test]
fn sixteen_threads_on_a_cluster_key() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let node = KmsNode::start("");
    let c = load(&node.config);
    let setup = rw(&c);
    let k = token_key(&setup, "shared");
    let started = Instant::now();
    std::thread::scope(|sc| {
        let workers: Vec<_> = (0..16u32)
            .map(|t| {
                let c = &c;
                sc.spawn(move || {
                    let s = c.p11.open_rw_session(c.slot).unwrap();
                    for i in 0..50u32 {
                        let mut iv = [0u8; 12];
                        iv[..4].copy_from_slice(&t.to_be_bytes());
                        iv[4..8].copy_from_slice(&i.to_be_bytes());
                        let pt = format!("{t}/{i}").into_bytes();
                        let ct = s.encrypt(&gcm(&mut iv, b"16"), k, &pt).unwrap();
                        assert_eq!(s.decrypt(&gcm(&mut iv, b"16"), k, &ct).unwrap(), pt);
                        let mac = s.sign(&Mechanism::Sha256Hmac, k, &pt).unwrap();
                        s.verify(&Mechanism::Sha256Hmac, k, &pt, &mac).unwrap();
                    }
                })
            })
            .collect();
        for w in workers {
            w.join().expect("worker");
        }
    });
    assert!(started.elapsed() < Duration::from_secs(60));
}

/// An application that calls the module from inside its own Tokio runtime
/// (where the module cannot block_on) is served through the shared runtime.
#[test]
fn calls_from_inside_a_tokio_runtime() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let node = KmsNode::start("");
    let c = load(&node.config);
    let s = rw(&c);
    let k = token_key(&s, "async-app");
    rt().block_on(async {
        let mut iv = [4u8; 12];
        let ct = s.encrypt(&gcm(&mut iv, b""), k, b"from async").unwrap();
        assert_eq!(
            s.decrypt(&gcm(&mut iv, b""), k, &ct).unwrap(),
            b"from async"
        );
    });
}

/// A User identity sees what its policy lets it list and gets
/// CKR_KEY_FUNCTION_NOT_PERMITTED for what its policy denies.
#[test]
fn a_policy_limits_what_the_module_may_do() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let node = KmsNode::start("");
    let user = kms_client::ApiKey::generate();
    let policy = node.tmp.path().join("policy.json");
    std::fs::write(
        &policy,
        r#"{"allow": {"KEY:LIST": ["*"], "KEY:RAWENCRYPT": ["app-*"], "KEY:RAWDECRYPT": ["app-*"]}}"#,
    )
    .unwrap();
    let cli = |args: &[&str]| ok(&node.server.cli(None, args));
    cli(&["add-key", "-e", ENCLAVE, "app-1"]);
    cli(&["add-key", "-e", ENCLAVE, "other-1"]);
    cli(&["add-policy", "-e", ENCLAVE, "app", policy.to_str().unwrap()]);
    cli(&[
        "add-identity",
        "-e",
        ENCLAVE,
        &user.identity().to_string(),
        "--policy",
        "app",
    ]);
    let cfg = node.tmp.path().join("user.toml");
    write_config(
        &cfg,
        &[node.server.url()],
        &user,
        &format!("enclaves = [\"{ENCLAVE}\"]\n"),
    );
    let c = load(&cfg);
    let s = rw(&c);
    let find = |name: &str| {
        s.find_objects(&[Attribute::Label(name.as_bytes().to_vec())])
            .unwrap()[0]
    };
    let (app, other) = (find("app-1"), find("other-1"));
    let mut iv = [8u8; 12];
    let ct = s.encrypt(&gcm(&mut iv, b""), app, b"allowed").unwrap();
    assert_eq!(s.decrypt(&gcm(&mut iv, b""), app, &ct).unwrap(), b"allowed");
    assert_eq!(
        rv(s.encrypt(&gcm(&mut iv, b""), other, b"denied")),
        RvError::KeyFunctionNotPermitted
    );
    assert_eq!(
        rv(s.sign(&Mechanism::Sha256Hmac, app, b"no KEY:MAC")),
        RvError::KeyFunctionNotPermitted
    );
    // No KEY:CREATE in the policy.
    let r = s.generate_key(
        &Mechanism::AesKeyGen,
        &[
            Attribute::Token(true),
            Attribute::ValueLen(32.into()),
            Attribute::Label(b"app-2".to_vec()),
        ],
    );
    assert_eq!(rv(r), RvError::KeyFunctionNotPermitted);
    drop(s);
    c.p11.finalize().unwrap();

    // An identity that may not list keys sees no cluster keys (no error),
    // and its session keys work.
    let lister = kms_client::ApiKey::generate();
    let none = node.tmp.path().join("none.json");
    std::fs::write(&none, r#"{"allow": {"KEY:RAWENCRYPT": ["app-*"]}}"#).unwrap();
    cli(&[
        "add-policy",
        "-e",
        ENCLAVE,
        "nolist",
        none.to_str().unwrap(),
    ]);
    cli(&[
        "add-identity",
        "-e",
        ENCLAVE,
        &lister.identity().to_string(),
        "--policy",
        "nolist",
    ]);
    write_config(
        &cfg,
        &[node.server.url()],
        &lister,
        &format!("enclaves = [\"{ENCLAVE}\"]\n"),
    );
    let c = load(&cfg);
    let s = rw(&c);
    assert!(s.find_objects(&[]).unwrap().is_empty());
    let sk = s
        .generate_key(
            &Mechanism::AesKeyGen,
            &[Attribute::Token(false), Attribute::ValueLen(32.into())],
        )
        .unwrap();
    assert_eq!(s.find_objects(&[]).unwrap(), vec![sk]);
}

/// A node killed in the middle of a run of encrypt/decrypt calls on four
/// threads: the calls fail over to the other node and none returns an
/// error. The two nodes are two copies of one stopped node's data
/// directory: the same keys, served independently, which is all reads need.
/// (failover_with_three_nodes_one_killed is the version on a real cluster.)
#[test]
fn failover_when_a_node_is_killed_mid_run() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let tmp = tempfile::tempdir().unwrap();
    let (dir_a, dir_b) = (
        kms_tests::data_dir(&tmp, "a"),
        kms_tests::data_dir(&tmp, "b"),
    );
    let mut a = kms_tests::Server::start(&dir_a, kms_tests::SEED_HSM_KEY);
    ok(&a.cli(None, &["add-enclave", ENCLAVE]));
    ok(&a.cli(None, &["add-key", "-e", ENCLAVE, "fo"]));
    assert!(a.stop().success());
    copy_dir(&dir_a, &dir_b);
    let mut a = kms_tests::Server::start(&dir_a, kms_tests::SEED_HSM_KEY);
    let b = kms_tests::Server::start(&dir_b, kms_tests::SEED_HSM_KEY);
    let cfg = tmp.path().join("two.toml");
    write_config(
        &cfg,
        &[a.url(), b.url()],
        &a.root_key,
        &format!("enclaves = [\"{ENCLAVE}\"]\ntimeout_ms = 3000\n"),
    );
    let c = load(&cfg);
    let setup = rw(&c);
    let k = setup
        .find_objects(&[Attribute::Label(b"fo".to_vec())])
        .unwrap()[0];
    let done = std::sync::atomic::AtomicUsize::new(0);
    let started = Instant::now();
    std::thread::scope(|sc| {
        let workers: Vec<_> = (0..4u32)
            .map(|t| {
                let (c, done) = (&c, &done);
                sc.spawn(move || {
                    let s = c.p11.open_rw_session(c.slot).unwrap();
                    for i in 0..300u32 {
                        let mut iv = [0u8; 12];
                        iv[..4].copy_from_slice(&t.to_be_bytes());
                        iv[4..8].copy_from_slice(&i.to_be_bytes());
                        let ct = s
                            .encrypt(&gcm(&mut iv, b""), k, b"payload")
                            .unwrap_or_else(|e| panic!("thread {t}, call {i}: {e}"));
                        let pt = s
                            .decrypt(&gcm(&mut iv, b""), k, &ct)
                            .unwrap_or_else(|e| panic!("thread {t}, call {i}: {e}"));
                        assert_eq!(pt, b"payload");
                        done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                })
            })
            .collect();
        // Kill node A once the run is well under way.
        wait_until(
            Duration::from_secs(30),
            "200 calls done before the kill",
            || done.load(std::sync::atomic::Ordering::Relaxed) >= 200,
        );
        a.kill9();
        let at_kill = done.load(std::sync::atomic::Ordering::Relaxed);
        for w in workers {
            w.join().expect("no call failed");
        }
        assert!(at_kill < 1200, "the run ended before the kill");
    });
    assert_eq!(done.into_inner(), 1200);
    assert!(started.elapsed() < Duration::from_secs(60));
}
