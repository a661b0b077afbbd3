//! One PKCS#11 test suite, written on the `cryptoki` crate, run against
//! SoftHSM2 and against `libkms_pkcs11.so` over a live node (each case is a
//! `softhsm_*` and a `kms_*` test). `TEST_PKCS11_MODULE` (with
//! `TEST_PKCS11_TOKEN` and `TEST_PKCS11_PIN`) runs the suite against any
//! other module instead.
//!
//! The cases use session keys, which both modules hold in memory; the
//! module's cluster keys are tested in pkcs11_cluster.rs.

use std::path::PathBuf;
use std::sync::Mutex;

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, SessionState, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use kms_tests::pkcs11::{softhsm_module, KmsNode, ENCLAVE};

/// The module is a process-wide singleton: cases in one process take turns.
static SERIAL: Mutex<()> = Mutex::new(());

/// A module under test, initialized, with the slot of its test token.
struct Target {
    p11: Pkcs11,
    module: PathBuf,
    slot: Slot,
    pin: String,
    /// The configuration file of our module, named by `KMS_PKCS11_CONFIG`
    /// at each `C_Initialize` of the test.
    config: Option<PathBuf>,
    _node: Option<KmsNode>,
    _tmp: Option<tempfile::TempDir>,
    _guard: std::sync::MutexGuard<'static, ()>,
    /// Which module this is: the error codes where the two differ.
    which: Which,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Which {
    SoftHsm,
    Kms,
    /// `TEST_PKCS11_MODULE`: any module; where SoftHSM2 and ours differ,
    /// either's answer is accepted.
    Other,
}

/// The `C_Initialize` arguments (pReserved NULL, as PKCS#11 requires); our
/// module's configuration file, if any, is named by `KMS_PKCS11_CONFIG`
/// (cases hold `SERIAL`, so no other case reads the variable meanwhile).
fn init_args(config: &Option<PathBuf>) -> CInitializeArgs {
    if let Some(c) = config {
        std::env::set_var("KMS_PKCS11_CONFIG", c);
    }
    CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)
}

fn open(which: Which) -> Target {
    let guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (module, token, pin, config, node, tmp, which) =
        if let Ok(m) = std::env::var("TEST_PKCS11_MODULE") {
            (
                PathBuf::from(m),
                std::env::var("TEST_PKCS11_TOKEN").unwrap_or_else(|_| ENCLAVE.into()),
                std::env::var("TEST_PKCS11_PIN").unwrap_or_else(|_| "1234".into()),
                None,
                None,
                None,
                Which::Other,
            )
        } else {
            match which {
                Which::SoftHsm => {
                    let tmp = tempfile::tempdir().unwrap();
                    let env = kms_tests::softhsm_token(&tmp.path().join("hsm"), "suite", None);
                    for (k, v) in &env {
                        if k == "SOFTHSM2_CONF" {
                            std::env::set_var(k, v);
                        }
                    }
                    (
                        softhsm_module(),
                        "suite".to_string(),
                        "1234".to_string(),
                        None,
                        None,
                        Some(tmp),
                        Which::SoftHsm,
                    )
                }
                Which::Kms => {
                    let node = KmsNode::start("");
                    let c = node.config.clone();
                    (
                        kms_tests::pkcs11::module_path(),
                        ENCLAVE.to_string(),
                        "any pin".to_string(),
                        Some(c),
                        Some(node),
                        None,
                        Which::Kms,
                    )
                }
                Which::Other => unreachable!("the cases open SoftHSM2 or ours"),
            }
        };
    let p11 = Pkcs11::new(&module).unwrap_or_else(|e| panic!("load {}: {e}", module.display()));
    p11.initialize(init_args(&config)).expect("C_Initialize");
    let slot = p11
        .get_slots_with_token()
        .unwrap()
        .into_iter()
        .find(|s| p11.get_token_info(*s).unwrap().label() == token)
        .unwrap_or_else(|| panic!("no token labelled {token}"));
    Target {
        p11,
        module,
        slot,
        pin,
        config,
        _node: node,
        _tmp: tmp,
        _guard: guard,
        which,
    }
}

impl Target {
    /// A read-write session, logged in as the user.
    fn session(&self) -> Session {
        let s = self.p11.open_rw_session(self.slot).unwrap();
        match s.login(UserType::User, Some(&AuthPin::new(self.pin.clone().into()))) {
            Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
            Err(e) => panic!("login: {e}"),
        }
        s
    }
}

fn rv(r: Result<impl std::fmt::Debug, CkError>) -> RvError {
    match r {
        Err(CkError::Pkcs11(rv, _)) => rv,
        other => panic!("expected a PKCS#11 error, got {other:?}"),
    }
}

/// Asserts that `r` failed with SoftHSM2's code `softhsm` or our module's
/// code `kms` (the caller says in a comment why they differ, if they do).
#[track_caller]
fn expect_rv(
    which: Which,
    r: Result<impl std::fmt::Debug, CkError>,
    softhsm: RvError,
    kms: RvError,
    what: &str,
) {
    let got = rv(r);
    match which {
        Which::SoftHsm => assert_eq!(got, softhsm, "{what}"),
        Which::Kms => assert_eq!(got, kms, "{what}"),
        Which::Other => assert!(got == softhsm || got == kms, "{what}: {got:?}"),
    }
}

/// A session AES key of `len` bytes, extractable so that it can be wrapped.
fn aes_key(s: &Session, len: u64, label: &str) -> ObjectHandle {
    s.generate_key(
        &Mechanism::AesKeyGen,
        &[
            Attribute::Token(false),
            Attribute::ValueLen(len.into()),
            Attribute::Label(label.as_bytes().to_vec()),
            Attribute::Encrypt(true),
            Attribute::Decrypt(true),
            Attribute::Wrap(true),
            Attribute::Unwrap(true),
            Attribute::Sensitive(false),
            Attribute::Extractable(true),
        ],
    )
    .unwrap()
}

fn gcm<'a>(iv: &'a mut [u8], aad: &'a [u8], bits: u64) -> Mechanism<'a> {
    Mechanism::AesGcm(GcmParams::new(iv, aad, bits.into()).unwrap())
}

macro_rules! suite {
    ($($case:ident),* $(,)?) => {
        mod softhsm {
            $( #[test] fn $case() { super::$case(super::open(super::Which::SoftHsm)); } )*
        }
        mod kms {
            $( #[test] fn $case() { super::$case(super::open(super::Which::Kms)); } )*
        }
    };
}

suite!(
    info_slots_and_mechanisms,
    aes_gcm,
    aes_cbc_pad,
    key_wrap_and_unwrap,
    hmac_sha256,
    sha256_digest,
    random,
    find_and_attributes,
    sessions_and_login,
    finalize_and_reinitialize,
    sixteen_threads,
    buffer_size_queries,
);

fn info_slots_and_mechanisms(t: Target) {
    let info = t.p11.get_library_info().unwrap();
    assert!(info.cryptoki_version().major() >= 2);
    let ti = t.p11.get_token_info(t.slot).unwrap();
    assert!(ti.rng() && ti.token_initialized());
    if t.which == Which::Kms {
        // Our slot id is fixed: FNV-1a("p11") = 0xa71b5811, 31 bits
        // (docs/pkcs11.md); the serial number is it in hex.
        assert_eq!(t.slot.id(), 0x271b_5811);
        assert_eq!(ti.serial_number(), "00000000271b5811");
    }
    let mechs = t.p11.get_mechanism_list(t.slot).unwrap();
    for m in [
        MechanismType::AES_KEY_GEN,
        MechanismType::AES_GCM,
        MechanismType::AES_CBC_PAD,
        MechanismType::AES_KEY_WRAP,
        MechanismType::AES_KEY_WRAP_PAD,
        MechanismType::SHA256_HMAC,
        MechanismType::SHA256,
    ] {
        assert!(mechs.contains(&m), "{m} missing from {mechs:?}");
        let mi = t.p11.get_mechanism_info(t.slot, m).unwrap();
        assert!(mi.max_key_size() >= mi.min_key_size(), "{m}");
    }
    let gcm = t
        .p11
        .get_mechanism_info(t.slot, MechanismType::AES_GCM)
        .unwrap();
    assert!(gcm.encrypt() && gcm.decrypt());
    assert!(t.p11.get_slot_info(t.slot).unwrap().token_present());
}

fn aes_gcm(t: Target) {
    let s = t.session();
    let k = aes_key(&s, 32, "gcm");
    let pt = b"thirty-two bytes of plaintext!!!".to_vec();
    for bits in [128u64, 96] {
        let mut iv = [7u8; 12];
        let ct = s.encrypt(&gcm(&mut iv, b"aad", bits), k, &pt).unwrap();
        assert_eq!(ct.len(), pt.len() + bits as usize / 8);
        assert_eq!(s.decrypt(&gcm(&mut iv, b"aad", bits), k, &ct).unwrap(), pt);
        // Wrong IV, wrong AAD, flipped tag: all fail.
        let mut other = [8u8; 12];
        let mut bad = ct.clone();
        *bad.last_mut().unwrap() ^= 1;
        for (what, r) in [
            (
                "wrong IV",
                s.decrypt(&gcm(&mut other, b"aad", bits), k, &ct),
            ),
            ("wrong AAD", s.decrypt(&gcm(&mut iv, b"AAD", bits), k, &ct)),
            (
                "flipped tag",
                s.decrypt(&gcm(&mut iv, b"aad", bits), k, &bad),
            ),
        ] {
            // PKCS#11 says CKR_ENCRYPTED_DATA_INVALID (ours, docs/pkcs11.md);
            // SoftHSM2 reports a failed tag check as CKR_GENERAL_ERROR.
            expect_rv(
                t.which,
                r,
                RvError::GeneralError,
                RvError::EncryptedDataInvalid,
                what,
            );
        }
    }
    // Empty plaintext: just the tag.
    let mut iv = [1u8; 12];
    let ct = s.encrypt(&gcm(&mut iv, b"", 128), k, b"").unwrap();
    assert_eq!(ct.len(), 16);
    assert!(s
        .decrypt(&gcm(&mut iv, b"", 128), k, &ct)
        .unwrap()
        .is_empty());
    // A known answer: NIST GCM test case 16's key, IV and AAD.
    let key = hex("feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308");
    let kh = s
        .create_object(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::Token(false),
            Attribute::Value(key),
            Attribute::Encrypt(true),
            Attribute::Decrypt(true),
        ])
        .unwrap();
    let mut iv = hex("cafebabefacedbaddecaf888");
    let aad = hex("feedfacedeadbeeffeedfacedeadbeefabaddad2");
    let pt = hex("d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a721c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39");
    let ct = s.encrypt(&gcm(&mut iv, &aad, 128), kh, &pt).unwrap();
    assert_eq!(
        &ct[pt.len()..],
        &hex("76fc6ece0f4e1768cddf8853bb2d551b")[..]
    );
    // A tag longer than 128 bits is a parameter error.
    let mut iv = [0u8; 12];
    expect_rv(
        t.which,
        s.encrypt_init(&gcm(&mut iv, b"", 136), k)
            .and_then(|_| s.encrypt_final()),
        // A bad mechanism parameter is CKR_MECHANISM_PARAM_INVALID (ours);
        // SoftHSM2 checks the tag length as an argument: CKR_ARGUMENTS_BAD.
        RvError::ArgumentsBad,
        RvError::MechanismParamInvalid,
        "136-bit tag",
    );
    // A 64-bit tag works (both modules allow it; 96 or more is recommended).
    let ct = s.encrypt(&gcm(&mut iv, b"", 64), k, b"short tag").unwrap();
    assert_eq!(ct.len(), 9 + 8);
    assert_eq!(
        s.decrypt(&gcm(&mut iv, b"", 64), k, &ct).unwrap(),
        b"short tag"
    );
    let mut bad = ct.clone();
    bad[16] ^= 1;
    expect_rv(
        t.which,
        s.decrypt(&gcm(&mut iv, b"", 64), k, &bad),
        // As above: SoftHSM2 answers CKR_GENERAL_ERROR to a failed tag check.
        RvError::GeneralError,
        RvError::EncryptedDataInvalid,
        "flipped 64-bit tag",
    );
}

fn aes_cbc_pad(t: Target) {
    let s = t.session();
    let k = aes_key(&s, 32, "cbc");
    let iv = [3u8; 16];
    for n in [0usize, 1, 15, 16, 17, 100] {
        let pt = vec![0x5au8; n];
        let ct = s.encrypt(&Mechanism::AesCbcPad(iv), k, &pt).unwrap();
        assert_eq!(ct.len(), (n / 16 + 1) * 16);
        assert_eq!(s.decrypt(&Mechanism::AesCbcPad(iv), k, &ct).unwrap(), pt);
    }
    // Multi-part, in uneven pieces.
    let pt: Vec<u8> = (0..100u8).collect();
    s.encrypt_init(&Mechanism::AesCbcPad(iv), k).unwrap();
    let mut ct = Vec::new();
    for chunk in pt.chunks(7) {
        ct.extend(s.encrypt_update(chunk).unwrap());
    }
    ct.extend(s.encrypt_final().unwrap());
    assert_eq!(ct, s.encrypt(&Mechanism::AesCbcPad(iv), k, &pt).unwrap());
    s.decrypt_init(&Mechanism::AesCbcPad(iv), k).unwrap();
    let mut back = Vec::new();
    for chunk in ct.chunks(5) {
        back.extend(s.decrypt_update(chunk).unwrap());
    }
    back.extend(s.decrypt_final().unwrap());
    assert_eq!(back, pt);
    // A ciphertext that is not a whole number of blocks.
    expect_rv(
        t.which,
        s.decrypt(&Mechanism::AesCbcPad(iv), k, &ct[..15]),
        RvError::EncryptedDataLenRange,
        RvError::EncryptedDataLenRange,
        "15-byte CBC ciphertext",
    );
}

fn key_wrap_and_unwrap(t: Target) {
    let s = t.session();
    let kek = aes_key(&s, 32, "kek");
    let key = aes_key(&s, 32, "data");
    for mech in [Mechanism::AesKeyWrap, Mechanism::AesKeyWrapPad] {
        let wrapped = s.wrap_key(&mech, kek, key).unwrap();
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
                    Attribute::Encrypt(true),
                    Attribute::Decrypt(true),
                ],
            )
            .unwrap();
        // Same key: the same IV gives the same ciphertext.
        let mut iv = [9u8; 12];
        let a = s.encrypt(&gcm(&mut iv, b"", 128), key, b"same").unwrap();
        let b = s.encrypt(&gcm(&mut iv, b"", 128), back, b"same").unwrap();
        assert_eq!(a, b);
        let mut bad = wrapped.clone();
        bad[5] ^= 1;
        let r = s.unwrap_key(
            &mech,
            kek,
            &bad,
            &[
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::KeyType(KeyType::AES),
                Attribute::Token(false),
            ],
        );
        // PKCS#11 says CKR_WRAPPED_KEY_INVALID (ours, docs/pkcs11.md);
        // SoftHSM2 answers CKR_GENERAL_ERROR to a failed integrity check.
        expect_rv(
            t.which,
            r,
            RvError::GeneralError,
            RvError::WrappedKeyInvalid,
            "a modified wrapped key",
        );
    }
}

fn hmac_sha256(t: Target) {
    let s = t.session();
    // RFC 4231 test case 6 (a 131-byte key: SoftHSM2 wants at least 32).
    let k = s
        .create_object(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::GENERIC_SECRET),
            Attribute::Token(false),
            Attribute::Value(vec![0xaa; 131]),
            Attribute::Sign(true),
            Attribute::Verify(true),
        ])
        .unwrap();
    let msg = b"Test Using Larger Than Block-Size Key - Hash Key First";
    let want = hex("60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54");
    assert_eq!(s.sign(&Mechanism::Sha256Hmac, k, msg).unwrap(), want);
    s.verify(&Mechanism::Sha256Hmac, k, msg, &want).unwrap();
    let mut bad = want.clone();
    bad[0] ^= 1;
    assert_eq!(
        rv(s.verify(&Mechanism::Sha256Hmac, k, msg, &bad)),
        RvError::SignatureInvalid
    );
    s.sign_init(&Mechanism::Sha256Hmac, k).unwrap();
    s.sign_update(&msg[..10]).unwrap();
    s.sign_update(&msg[10..]).unwrap();
    assert_eq!(s.sign_final().unwrap(), want);
    s.verify_init(&Mechanism::Sha256Hmac, k).unwrap();
    s.verify_update(msg).unwrap();
    s.verify_final(&want).unwrap();
}

fn sha256_digest(t: Target) {
    let s = t.session();
    let want = hex("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    assert_eq!(s.digest(&Mechanism::Sha256, b"abc").unwrap(), want);
    s.digest_init(&Mechanism::Sha256).unwrap();
    s.digest_update(b"a").unwrap();
    s.digest_update(b"bc").unwrap();
    assert_eq!(s.digest_final().unwrap(), want);
}

fn random(t: Target) {
    let s = t.session();
    let a = s.generate_random_vec(32).unwrap();
    let b = s.generate_random_vec(32).unwrap();
    assert_eq!(a.len(), 32);
    assert_ne!(a, b);
}

fn find_and_attributes(t: Target) {
    let s = t.session();
    let a = aes_key(&s, 16, "find-a");
    let b = s
        .generate_key(
            &Mechanism::AesKeyGen,
            &[
                Attribute::Token(false),
                Attribute::ValueLen(32.into()),
                Attribute::Label(b"find-b".to_vec()),
                Attribute::Id(b"id-b".to_vec()),
                Attribute::Sensitive(true),
                Attribute::Extractable(false),
                Attribute::Encrypt(true),
            ],
        )
        .unwrap();
    assert_eq!(
        s.find_objects(&[Attribute::Label(b"find-a".to_vec())])
            .unwrap(),
        vec![a]
    );
    assert_eq!(
        s.find_objects(&[Attribute::Id(b"id-b".to_vec())]).unwrap(),
        vec![b]
    );
    let all = s
        .find_objects(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::Token(false),
        ])
        .unwrap();
    assert!(all.contains(&a) && all.contains(&b), "{all:?}");
    assert!(s
        .find_objects(&[Attribute::Label(b"no such key".to_vec())])
        .unwrap()
        .is_empty());
    let attrs = s
        .get_attributes(
            b,
            &[
                AttributeType::Class,
                AttributeType::KeyType,
                AttributeType::ValueLen,
                AttributeType::Label,
                AttributeType::Sensitive,
                AttributeType::Extractable,
                AttributeType::Token,
            ],
        )
        .unwrap();
    assert!(attrs.contains(&Attribute::Class(ObjectClass::SECRET_KEY)));
    assert!(attrs.contains(&Attribute::KeyType(KeyType::AES)));
    assert!(attrs.contains(&Attribute::ValueLen(32.into())));
    assert!(attrs.contains(&Attribute::Label(b"find-b".to_vec())));
    assert!(attrs.contains(&Attribute::Sensitive(true)));
    assert!(attrs.contains(&Attribute::Extractable(false)));
    assert!(attrs.contains(&Attribute::Token(false)));
    // The value of a sensitive key is not returned (cryptoki leaves it out).
    let v = s.get_attributes(b, &[AttributeType::Value]).unwrap();
    assert!(v.is_empty(), "{v:?}");
    // An unsensitive, extractable session key shows its value.
    let v = s.get_attributes(a, &[AttributeType::Value]).unwrap();
    assert!(
        matches!(&v[..], [Attribute::Value(x)] if x.len() == 16),
        "{v:?}"
    );
    s.destroy_object(a).unwrap();
    assert_eq!(
        rv(s.get_attributes(a, &[AttributeType::Label])),
        RvError::ObjectHandleInvalid
    );
    assert!(s
        .find_objects(&[Attribute::Label(b"find-a".to_vec())])
        .unwrap()
        .is_empty());
}

fn sessions_and_login(t: Target) {
    let ro = t.p11.open_ro_session(t.slot).unwrap();
    assert_eq!(
        ro.get_session_info().unwrap().session_state(),
        SessionState::RoPublic
    );
    let pin = AuthPin::new(t.pin.clone().into());
    ro.login(UserType::User, Some(&pin)).unwrap();
    assert_eq!(
        ro.get_session_info().unwrap().session_state(),
        SessionState::RoUser
    );
    assert_eq!(
        rv(ro.login(UserType::User, Some(&pin))),
        RvError::UserAlreadyLoggedIn
    );
    let rw = t.p11.open_rw_session(t.slot).unwrap();
    assert_eq!(
        rw.get_session_info().unwrap().session_state(),
        SessionState::RwUser
    );
    assert!(rw.get_session_info().unwrap().read_write());
    rw.logout().unwrap();
    assert_eq!(
        ro.get_session_info().unwrap().session_state(),
        SessionState::RoPublic
    );
    // PKCS#11 says CKR_USER_NOT_LOGGED_IN (ours); SoftHSM2 answers CKR_OK.
    let r = rw.logout();
    match t.which {
        Which::SoftHsm => r.expect("SoftHSM2's second C_Logout answers CKR_OK"),
        Which::Kms => assert_eq!(rv(r), RvError::UserNotLoggedIn),
        Which::Other => assert!(
            matches!(
                r,
                Ok(()) | Err(CkError::Pkcs11(RvError::UserNotLoggedIn, _))
            ),
            "{r:?}"
        ),
    }
    // A session key dies with its session.
    ro.login(UserType::User, Some(&pin)).unwrap();
    let k = aes_key(&rw, 16, "dies");
    assert!(ro.get_attributes(k, &[AttributeType::Label]).is_ok());
    rw.close().unwrap();
    assert_eq!(
        rv(ro.get_attributes(k, &[AttributeType::Label])),
        RvError::ObjectHandleInvalid
    );
    // An operation not initialized, and one already active.
    assert_eq!(rv(ro.encrypt_final()), RvError::OperationNotInitialized);
    ro.digest_init(&Mechanism::Sha256).unwrap();
    assert_eq!(
        rv(ro.digest_init(&Mechanism::Sha256)),
        RvError::OperationActive
    );
    ro.close().unwrap();
}

fn finalize_and_reinitialize(t: Target) {
    let s = t.session();
    let h = s.handle();
    let k = aes_key(&s, 16, "before");
    std::mem::forget(s); // its handle dies with C_Finalize
    assert_eq!(
        rv(t.p11.initialize(init_args(&t.config))),
        RvError::CryptokiAlreadyInitialized
    );
    let Target {
        p11,
        module,
        slot,
        pin,
        config,
        _node,
        _tmp,
        _guard,
        ..
    } = t;
    let again = p11.clone();
    p11.finalize().unwrap();
    // After C_Finalize nothing answers but C_Initialize.
    assert_eq!(
        rv(again.get_slots_with_token()),
        RvError::CryptokiNotInitialized
    );
    again.initialize(init_args(&config)).unwrap();
    // The session opened before C_Finalize is gone (asked before any new
    // session exists, which might reuse its number).
    // SAFETY: the same library, initialized by `again`; `info` is a live local.
    unsafe {
        let lib = cryptoki_sys::Pkcs11::new(&module).unwrap();
        let mut fl: *mut cryptoki_sys::CK_FUNCTION_LIST = std::ptr::null_mut();
        assert_eq!(lib.C_GetFunctionList(&mut fl), cryptoki_sys::CKR_OK);
        let mut info: cryptoki_sys::CK_SESSION_INFO = std::mem::zeroed();
        assert_eq!(
            (*fl).C_GetSessionInfo.unwrap()(h, &mut info),
            cryptoki_sys::CKR_SESSION_HANDLE_INVALID
        );
    }
    let s = again.open_rw_session(slot).unwrap();
    assert_ne!(s.handle(), 0);
    s.login(UserType::User, Some(&AuthPin::new(pin.into())))
        .unwrap();
    // A session key made before C_Finalize is gone.
    assert_eq!(
        rv(s.get_attributes(k, &[AttributeType::Label])),
        RvError::ObjectHandleInvalid
    );
    let k2 = aes_key(&s, 16, "after");
    let mut iv = [0u8; 12];
    let ct = s.encrypt(&gcm(&mut iv, b"", 128), k2, b"x").unwrap();
    assert_eq!(s.decrypt(&gcm(&mut iv, b"", 128), k2, &ct).unwrap(), b"x");
}

fn sixteen_threads(t: Target) {
    let t = &t;
    // Log in once: the login state is shared by every session of the token.
    let _login = t.session();
    std::thread::scope(|sc| {
        let workers: Vec<_> = (0..16)
            .map(|i| {
                sc.spawn(move || {
                    let s = t.p11.open_rw_session(t.slot).unwrap();
                    let k = aes_key(&s, 32, &format!("thread-{i}"));
                    for j in 0..40u32 {
                        let mut iv = [0u8; 12];
                        iv[..4].copy_from_slice(&j.to_be_bytes());
                        let pt = format!("thread {i} message {j}").into_bytes();
                        let ct = s.encrypt(&gcm(&mut iv, b"t", 128), k, &pt).unwrap();
                        assert_eq!(s.decrypt(&gcm(&mut iv, b"t", 128), k, &ct).unwrap(), pt);
                    }
                })
            })
            .collect();
        for w in workers {
            w.join().expect("worker");
        }
    });
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// The two-call convention through the C interface: a NULL buffer gives the
/// size and keeps the operation; a short buffer gives CKR_BUFFER_TOO_SMALL
/// and the size, and keeps it; then the data.
fn buffer_size_queries(t: Target) {
    use cryptoki_sys::*;
    let s = t.session();
    let k = aes_key(&s, 32, "sizes");
    // SAFETY: the same library, already initialized by `t.p11`; every
    // pointer below points to a live local.
    unsafe {
        let lib = cryptoki_sys::Pkcs11::new(&t.module).unwrap();
        let mut fl: *mut CK_FUNCTION_LIST = std::ptr::null_mut();
        assert_eq!(lib.C_GetFunctionList(&mut fl), CKR_OK);
        let f = &*fl;
        let (h, key) = (s.handle(), k.handle());
        let mut iv = [1u8; 12];
        let mut g = CK_GCM_PARAMS {
            pIv: iv.as_mut_ptr(),
            ulIvLen: 12,
            ulIvBits: 96,
            pAAD: std::ptr::null_mut(),
            ulAADLen: 0,
            ulTagBits: 128,
        };
        let mut m = CK_MECHANISM {
            mechanism: CKM_AES_GCM,
            pParameter: &mut g as *mut _ as *mut _,
            ulParameterLen: std::mem::size_of::<CK_GCM_PARAMS>() as CK_ULONG,
        };
        let mut data = [7u8; 32];
        let mut out = [0u8; 64];
        assert_eq!(f.C_EncryptInit.unwrap()(h, &mut m, key), CKR_OK);
        let mut n: CK_ULONG = 0;
        assert_eq!(
            f.C_Encrypt.unwrap()(h, data.as_mut_ptr(), 32, std::ptr::null_mut(), &mut n),
            CKR_OK
        );
        assert!(n >= 48, "size query said {n}");
        n = 47;
        assert_eq!(
            f.C_Encrypt.unwrap()(h, data.as_mut_ptr(), 32, out.as_mut_ptr(), &mut n),
            CKR_BUFFER_TOO_SMALL
        );
        assert!(n >= 48);
        n = 64;
        assert_eq!(
            f.C_Encrypt.unwrap()(h, data.as_mut_ptr(), 32, out.as_mut_ptr(), &mut n),
            CKR_OK
        );
        assert_eq!(n, 48);
        // The operation is over.
        assert_eq!(
            f.C_Encrypt.unwrap()(h, data.as_mut_ptr(), 32, out.as_mut_ptr(), &mut n),
            CKR_OPERATION_NOT_INITIALIZED
        );
        // Digest: the same convention.
        let mut sha = CK_MECHANISM {
            mechanism: CKM_SHA256,
            pParameter: std::ptr::null_mut(),
            ulParameterLen: 0,
        };
        assert_eq!(f.C_DigestInit.unwrap()(h, &mut sha), CKR_OK);
        n = 0;
        assert_eq!(
            f.C_Digest.unwrap()(h, data.as_mut_ptr(), 32, std::ptr::null_mut(), &mut n),
            CKR_OK
        );
        assert_eq!(n, 32);
        n = 31;
        assert_eq!(
            f.C_Digest.unwrap()(h, data.as_mut_ptr(), 32, out.as_mut_ptr(), &mut n),
            CKR_BUFFER_TOO_SMALL
        );
        assert_eq!(n, 32);
        n = 32;
        assert_eq!(
            f.C_Digest.unwrap()(h, data.as_mut_ptr(), 32, out.as_mut_ptr(), &mut n),
            CKR_OK
        );
        // Attributes: the length with a NULL pointer; a short buffer.
        let mut label = [0u8; 2];
        let mut a = [CK_ATTRIBUTE {
            type_: CKA_LABEL,
            pValue: std::ptr::null_mut(),
            ulValueLen: 0,
        }];
        assert_eq!(
            f.C_GetAttributeValue.unwrap()(h, key, a.as_mut_ptr(), 1),
            CKR_OK
        );
        assert_eq!(a[0].ulValueLen, 5);
        a[0].pValue = label.as_mut_ptr() as *mut _;
        a[0].ulValueLen = 2;
        assert_eq!(
            f.C_GetAttributeValue.unwrap()(h, key, a.as_mut_ptr(), 1),
            CKR_BUFFER_TOO_SMALL
        );
        assert_eq!(a[0].ulValueLen, CK_UNAVAILABLE_INFORMATION);
        // An unknown attribute among known ones.
        let mut class: CK_ULONG = 0;
        let mut b = [
            CK_ATTRIBUTE {
                type_: CKA_MODULUS,
                pValue: std::ptr::null_mut(),
                ulValueLen: 0,
            },
            CK_ATTRIBUTE {
                type_: CKA_CLASS,
                pValue: &mut class as *mut _ as *mut _,
                ulValueLen: std::mem::size_of::<CK_ULONG>() as CK_ULONG,
            },
        ];
        assert_eq!(
            f.C_GetAttributeValue.unwrap()(h, key, b.as_mut_ptr(), 2),
            CKR_ATTRIBUTE_TYPE_INVALID
        );
        assert_eq!(b[0].ulValueLen, CK_UNAVAILABLE_INFORMATION);
        assert_eq!(class, CKO_SECRET_KEY);
    }
}
