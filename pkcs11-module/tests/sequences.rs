//! A fuzz-style property test: random sequences of PKCS#11 calls with
//! random arguments, through the exported C functions in-process, against a
//! configuration whose only server is unreachable (so cluster calls fail
//! with `CKR_DEVICE_ERROR` and session keys work locally), named by
//! `KMS_PKCS11_CONFIG`. Every call must return a defined `CK_RV`, never
//! `CKR_GENERAL_ERROR` (what a caught panic becomes) but for a
//! `C_Initialize` without a configuration, and the module must keep working
//! afterwards. A `C_Initialize` with a non-NULL `pReserved` (garbage
//! pointers) must be `CKR_ARGUMENTS_BAD` and never read it.
//!
//! One test function: the module is a process-wide singleton.
#![allow(unsafe_code)]

use std::path::{Path, PathBuf};
use std::ptr::null_mut;

use cryptoki_sys::*;
use kms_pkcs11::ffi::*;
use proptest::prelude::*;

/// How often the deep states were reached (a guard against a fuzz test
/// that only ever sees CKR_CRYPTOKI_NOT_INITIALIZED).
static REACHED: [std::sync::atomic::AtomicUsize; 3] = [
    std::sync::atomic::AtomicUsize::new(0),
    std::sync::atomic::AtomicUsize::new(0),
    std::sync::atomic::AtomicUsize::new(0),
];

#[derive(Debug, Clone)]
enum Call {
    /// With the configuration named by `KMS_PKCS11_CONFIG`.
    Initialize,
    /// With NULL arguments and no configuration in the environment.
    InitializeNull,
    /// With a non-NULL `pReserved`: garbage of the given kind.
    InitializeReserved(u8),
    Finalize,
    SlotList(bool),
    OpenSession(u8, bool),
    CloseSession(u8),
    Login(u8, u8, Vec<u8>),
    Logout(u8),
    GenerateKey(u8, bool, u8),
    CreateObject(u8, Vec<(u8, Vec<u8>)>),
    Find(u8, Vec<(u8, Vec<u8>)>, u8),
    GetAttributes(u8, u8, Vec<(u8, Option<u8>)>),
    CryptInit(u8, u8, u8, bool),
    Crypt(u8, Vec<u8>, Option<u8>, bool),
    Update(u8, Vec<u8>, bool),
    Final(u8, Option<u8>, bool),
    Sign(u8, u8, Vec<u8>),
    Verify(u8, u8, Vec<u8>, Vec<u8>),
    Digest(u8, Vec<u8>, Option<u8>),
    Wrap(u8, u8, u8, u8, Option<u8>),
    Unwrap(u8, u8, u8, Vec<u8>),
    Destroy(u8, u8),
    Random(u8, u8),
}

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..max)
}

fn call() -> impl Strategy<Value = Call> {
    prop_oneof![
        2 => Just(Call::Initialize),
        1 => Just(Call::InitializeNull),
        1 => any::<u8>().prop_map(Call::InitializeReserved),
        1 => Just(Call::Finalize),
        1 => any::<bool>().prop_map(Call::SlotList),
        3 => (any::<u8>(), any::<bool>()).prop_map(|(a, b)| Call::OpenSession(a, b)),
        1 => any::<u8>().prop_map(Call::CloseSession),
        1 => (any::<u8>(), any::<u8>(), bytes(8)).prop_map(|(a, b, c)| Call::Login(a, b, c)),
        1 => any::<u8>().prop_map(Call::Logout),
        3 => (any::<u8>(), any::<bool>(), any::<u8>()).prop_map(|(a, b, c)| Call::GenerateKey(a, b, c)),
        2 => (any::<u8>(), prop::collection::vec((any::<u8>(), bytes(40)), 0..6))
            .prop_map(|(a, b)| Call::CreateObject(a, b)),
        2 => (any::<u8>(), prop::collection::vec((any::<u8>(), bytes(10)), 0..3), any::<u8>())
            .prop_map(|(a, b, c)| Call::Find(a, b, c)),
        2 => (any::<u8>(), any::<u8>(), prop::collection::vec((any::<u8>(), any::<Option<u8>>()), 0..5))
            .prop_map(|(a, b, c)| Call::GetAttributes(a, b, c)),
        4 => (any::<u8>(), any::<u8>(), any::<u8>(), any::<bool>())
            .prop_map(|(a, b, c, d)| Call::CryptInit(a, b, c, d)),
        3 => (any::<u8>(), bytes(70), any::<Option<u8>>(), any::<bool>())
            .prop_map(|(a, b, c, d)| Call::Crypt(a, b, c, d)),
        2 => (any::<u8>(), bytes(40), any::<bool>()).prop_map(|(a, b, c)| Call::Update(a, b, c)),
        2 => (any::<u8>(), any::<Option<u8>>(), any::<bool>()).prop_map(|(a, b, c)| Call::Final(a, b, c)),
        2 => (any::<u8>(), any::<u8>(), bytes(40)).prop_map(|(a, b, c)| Call::Sign(a, b, c)),
        1 => (any::<u8>(), any::<u8>(), bytes(40), bytes(40)).prop_map(|(a, b, c, d)| Call::Verify(a, b, c, d)),
        1 => (any::<u8>(), bytes(40), any::<Option<u8>>()).prop_map(|(a, b, c)| Call::Digest(a, b, c)),
        2 => (any::<u8>(), any::<u8>(), any::<u8>(), any::<u8>(), any::<Option<u8>>())
            .prop_map(|(a, b, c, d, e)| Call::Wrap(a, b, c, d, e)),
        2 => (any::<u8>(), any::<u8>(), any::<u8>(), bytes(48)).prop_map(|(a, b, c, d)| Call::Unwrap(a, b, c, d)),
        1 => (any::<u8>(), any::<u8>()).prop_map(|(a, b)| Call::Destroy(a, b)),
        1 => (any::<u8>(), any::<u8>()).prop_map(|(a, b)| Call::Random(a, b)),
    ]
}

const ATTRS: &[CK_ATTRIBUTE_TYPE] = &[
    CKA_CLASS,
    CKA_KEY_TYPE,
    CKA_TOKEN,
    CKA_PRIVATE,
    CKA_LABEL,
    CKA_ID,
    CKA_VALUE,
    CKA_VALUE_LEN,
    CKA_SENSITIVE,
    CKA_EXTRACTABLE,
    CKA_ENCRYPT,
    CKA_DECRYPT,
    CKA_WRAP,
    CKA_UNWRAP,
    CKA_SIGN,
    CKA_VERIFY,
    CKA_LOCAL,
    CKA_MODULUS,
    0x8000_0001,
];
const MECHS: &[CK_MECHANISM_TYPE] = &[
    CKM_AES_GCM,
    CKM_AES_CBC_PAD,
    CKM_AES_KEY_WRAP,
    CKM_AES_KEY_WRAP_PAD,
    CKM_AES_KEY_WRAP_KWP,
    CKM_SHA256_HMAC,
    CKM_SHA256,
    CKM_AES_KEY_GEN,
    CKM_RSA_PKCS,
    0xCB4D_0001,
];

/// State of the run: handles seen, to pick from (or a bogus one).
struct World {
    config: PathBuf,
    slots: Vec<CK_SLOT_ID>,
    sessions: Vec<CK_SESSION_HANDLE>,
    objects: Vec<CK_OBJECT_HANDLE>,
}

impl World {
    fn pick(v: &[CK_ULONG], i: u8) -> CK_ULONG {
        if v.is_empty() || i % 8 == 7 {
            // A bogus handle now and then.
            i as CK_ULONG * 7919 + 100_000
        } else {
            v[i as usize % v.len()]
        }
    }
    fn session(&self, i: u8) -> CK_SESSION_HANDLE {
        Self::pick(&self.sessions, i)
    }
    fn object(&self, i: u8) -> CK_OBJECT_HANDLE {
        Self::pick(&self.objects, i)
    }
}

/// Attribute values of the right size for the type, or raw bytes.
/// The attribute types and values a generated template names.
fn attr_values(attrs: &[(u8, Vec<u8>)]) -> Vec<(CK_ATTRIBUTE_TYPE, Vec<u8>)> {
    attrs
        .iter()
        .map(|(t, v)| {
            let ty = ATTRS[*t as usize % ATTRS.len()];
            (ty, attr_value(ty, v))
        })
        .collect()
}

/// A C template pointing into `vals` (which must outlive it).
fn template(vals: &mut [(CK_ATTRIBUTE_TYPE, Vec<u8>)]) -> Vec<CK_ATTRIBUTE> {
    vals.iter_mut()
        .map(|(ty, v)| CK_ATTRIBUTE {
            type_: *ty,
            pValue: v.as_mut_ptr() as *mut _,
            ulValueLen: v.len() as CK_ULONG,
        })
        .collect()
}

fn attr_value(ty: CK_ATTRIBUTE_TYPE, raw: &[u8]) -> Vec<u8> {
    match ty {
        CKA_CLASS | CKA_KEY_TYPE | CKA_VALUE_LEN if raw.len().is_multiple_of(2) => {
            (raw.first().copied().unwrap_or(0) as CK_ULONG % 48)
                .to_ne_bytes()
                .to_vec()
        }
        CKA_TOKEN | CKA_PRIVATE | CKA_SENSITIVE | CKA_EXTRACTABLE | CKA_ENCRYPT | CKA_DECRYPT
        | CKA_WRAP | CKA_UNWRAP | CKA_SIGN | CKA_VERIFY
            if !raw.len().is_multiple_of(3) =>
        {
            vec![raw[0] & 1]
        }
        _ => raw.to_vec(),
    }
}

/// Runs one call; returns its CK_RV.
///
/// SAFETY (for the unsafe calls inside): every pointer passed points to a
/// live local of the right size, or is NULL on purpose.
fn step(w: &mut World, c: &Call) -> CK_RV {
    // SAFETY: every pointer passed points to a live local of the right
    // size, or is NULL on purpose (the doc above).
    unsafe {
        match c {
            Call::Initialize => {
                // Only the thread that runs Initialize* calls sets the
                // variable (the concurrent test skips them).
                std::env::set_var("KMS_PKCS11_CONFIG", &w.config);
                let mut a: CK_C_INITIALIZE_ARGS = std::mem::zeroed();
                a.flags = CKF_OS_LOCKING_OK;
                let rv = C_Initialize(&mut a as *mut _ as *mut _);
                if rv == CKR_OK {
                    w.sessions.clear();
                    w.objects.clear();
                    let mut n: CK_ULONG = 0;
                    C_GetSlotList(1, null_mut(), &mut n);
                    w.slots = vec![0; n as usize];
                    C_GetSlotList(1, w.slots.as_mut_ptr(), &mut n);
                }
                rv
            }
            Call::InitializeNull => {
                std::env::remove_var("KMS_PKCS11_CONFIG");
                C_Initialize(null_mut())
            }
            Call::InitializeReserved(kind) => {
                // A string without NUL, or addresses nothing is mapped at:
                // reading any of them would crash the test.
                let mut no_nul = [0xFFu8; 4];
                let mut a: CK_C_INITIALIZE_ARGS = std::mem::zeroed();
                a.flags = CKF_OS_LOCKING_OK;
                a.pReserved = match kind % 3 {
                    0 => no_nul.as_mut_ptr() as *mut _,
                    1 => std::ptr::without_provenance_mut(*kind as usize | 1),
                    _ => std::ptr::without_provenance_mut(usize::MAX - *kind as usize),
                };
                C_Initialize(&mut a as *mut _ as *mut _)
            }
            Call::Finalize => C_Finalize(null_mut()),
            Call::SlotList(null) => {
                let mut n: CK_ULONG = 1;
                let mut buf = [0 as CK_SLOT_ID; 1];
                C_GetSlotList(1, if *null { null_mut() } else { buf.as_mut_ptr() }, &mut n)
            }
            Call::OpenSession(i, rw) => {
                let slot = World::pick(&w.slots, *i);
                let mut h = 0;
                let flags = CKF_SERIAL_SESSION | if *rw { CKF_RW_SESSION } else { 0 };
                let rv = C_OpenSession(slot, flags, null_mut(), None, &mut h);
                if rv == CKR_OK {
                    w.sessions.push(h);
                }
                rv
            }
            Call::CloseSession(i) => C_CloseSession(w.session(*i)),
            Call::Login(i, u, pin) => {
                let mut pin = pin.clone();
                C_Login(
                    w.session(*i),
                    (*u % 4) as CK_ULONG,
                    pin.as_mut_ptr(),
                    pin.len() as CK_ULONG,
                )
            }
            Call::Logout(i) => C_Logout(w.session(*i)),
            Call::GenerateKey(i, token, len) => {
                let mut m = CK_MECHANISM {
                    mechanism: if len % 5 == 0 {
                        CKM_GENERIC_SECRET_KEY_GEN
                    } else {
                        CKM_AES_KEY_GEN
                    },
                    pParameter: null_mut(),
                    ulParameterLen: 0,
                };
                let mut vl: CK_ULONG = [16, 24, 32, 7, 0][*len as usize % 5];
                let mut tok: CK_BBOOL = *token as u8;
                let mut ext: CK_BBOOL = len % 2;
                let mut t = [
                    CK_ATTRIBUTE {
                        type_: CKA_VALUE_LEN,
                        pValue: &mut vl as *mut _ as *mut _,
                        ulValueLen: 8,
                    },
                    CK_ATTRIBUTE {
                        type_: CKA_TOKEN,
                        pValue: &mut tok as *mut _ as *mut _,
                        ulValueLen: 1,
                    },
                    CK_ATTRIBUTE {
                        type_: CKA_EXTRACTABLE,
                        pValue: &mut ext as *mut _ as *mut _,
                        ulValueLen: 1,
                    },
                ];
                let mut h = 0;
                let rv = C_GenerateKey(w.session(*i), &mut m, t.as_mut_ptr(), 3, &mut h);
                if rv == CKR_OK {
                    w.objects.push(h);
                }
                rv
            }
            Call::CreateObject(i, attrs) => {
                let mut vals = attr_values(attrs);
                let mut t = template(&mut vals);
                let mut h = 0;
                let rv = C_CreateObject(w.session(*i), t.as_mut_ptr(), t.len() as CK_ULONG, &mut h);
                if rv == CKR_OK {
                    w.objects.push(h);
                }
                rv
            }
            Call::Find(i, attrs, max) => {
                let mut vals = attr_values(attrs);
                let mut t = template(&mut vals);
                let s = w.session(*i);
                let rv = C_FindObjectsInit(s, t.as_mut_ptr(), t.len() as CK_ULONG);
                let mut out = vec![0 as CK_OBJECT_HANDLE; *max as usize % 4];
                let mut n = 0;
                let rv2 = C_FindObjects(s, out.as_mut_ptr(), out.len() as CK_ULONG, &mut n);
                let rv3 = C_FindObjectsFinal(s);
                assert!(n as usize <= out.len());
                w.objects.extend(&out[..n as usize]);
                [rv, rv2, rv3]
                    .into_iter()
                    .find(|r| *r == CKR_GENERAL_ERROR)
                    .unwrap_or(rv)
            }
            Call::GetAttributes(i, o, attrs) => {
                let mut bufs: Vec<Vec<u8>> = attrs
                    .iter()
                    .map(|(_, n)| vec![0u8; n.unwrap_or(0) as usize % 40])
                    .collect();
                let mut t: Vec<CK_ATTRIBUTE> = attrs
                    .iter()
                    .zip(bufs.iter_mut())
                    .map(|((ty, n), b)| CK_ATTRIBUTE {
                        type_: ATTRS[*ty as usize % ATTRS.len()],
                        pValue: if n.is_some() {
                            b.as_mut_ptr() as *mut _
                        } else {
                            null_mut()
                        },
                        ulValueLen: b.len() as CK_ULONG,
                    })
                    .collect();
                C_GetAttributeValue(
                    w.session(*i),
                    w.object(*o),
                    t.as_mut_ptr(),
                    t.len() as CK_ULONG,
                )
            }
            Call::CryptInit(i, m, k, enc) => {
                let mut iv = [0u8; 16];
                let mut g = CK_GCM_PARAMS {
                    pIv: iv.as_mut_ptr(),
                    ulIvLen: 12 + (*m as CK_ULONG % 3 == 2) as CK_ULONG,
                    ulIvBits: 0,
                    pAAD: null_mut(),
                    ulAADLen: 0,
                    ulTagBits: [128, 96, 64][*m as usize % 3],
                };
                let mech = MECHS[*m as usize % MECHS.len()];
                let (p, n): (*mut std::ffi::c_void, CK_ULONG) = match mech {
                    CKM_AES_GCM => (
                        &mut g as *mut _ as *mut _,
                        std::mem::size_of::<CK_GCM_PARAMS>() as CK_ULONG,
                    ),
                    CKM_AES_CBC_PAD => (iv.as_mut_ptr() as *mut _, 16),
                    _ => (null_mut(), 0),
                };
                let mut mm = CK_MECHANISM {
                    mechanism: mech,
                    pParameter: p,
                    ulParameterLen: n,
                };
                if *enc {
                    C_EncryptInit(w.session(*i), &mut mm, w.object(*k))
                } else {
                    C_DecryptInit(w.session(*i), &mut mm, w.object(*k))
                }
            }
            Call::Crypt(i, data, cap, enc) => {
                let mut d = data.clone();
                let mut out = vec![0u8; 128];
                let mut n: CK_ULONG = cap.unwrap_or(0) as CK_ULONG % 128;
                let op = if cap.is_some() {
                    out.as_mut_ptr()
                } else {
                    null_mut()
                };
                let f = if *enc { C_Encrypt } else { C_Decrypt };
                let rv = f(
                    w.session(*i),
                    d.as_mut_ptr(),
                    d.len() as CK_ULONG,
                    op,
                    &mut n,
                );
                if rv == CKR_OK && cap.is_some() {
                    assert!(n as usize <= (cap.unwrap() as usize % 128));
                }
                rv
            }
            Call::Update(i, data, enc) => {
                let mut d = data.clone();
                let mut n: CK_ULONG = 64;
                let mut out = [0u8; 64];
                let f = if *enc {
                    C_EncryptUpdate
                } else {
                    C_DecryptUpdate
                };
                f(
                    w.session(*i),
                    d.as_mut_ptr(),
                    d.len() as CK_ULONG,
                    out.as_mut_ptr(),
                    &mut n,
                )
            }
            Call::Final(i, cap, enc) => {
                let mut out = vec![0u8; 128];
                let mut n: CK_ULONG = cap.unwrap_or(0) as CK_ULONG % 128;
                let op = if cap.is_some() {
                    out.as_mut_ptr()
                } else {
                    null_mut()
                };
                let f = if *enc { C_EncryptFinal } else { C_DecryptFinal };
                f(w.session(*i), op, &mut n)
            }
            Call::Sign(i, k, data) => {
                let mut m = CK_MECHANISM {
                    mechanism: CKM_SHA256_HMAC,
                    pParameter: null_mut(),
                    ulParameterLen: 0,
                };
                let s = w.session(*i);
                let rv = C_SignInit(s, &mut m, w.object(*k));
                let mut d = data.clone();
                let mut out = [0u8; 32];
                let mut n: CK_ULONG = 32;
                let rv2 = C_Sign(
                    s,
                    d.as_mut_ptr(),
                    d.len() as CK_ULONG,
                    out.as_mut_ptr(),
                    &mut n,
                );
                if rv2 == CKR_GENERAL_ERROR {
                    rv2
                } else {
                    rv
                }
            }
            Call::Verify(i, k, data, sig) => {
                let mut m = CK_MECHANISM {
                    mechanism: CKM_SHA256_HMAC,
                    pParameter: null_mut(),
                    ulParameterLen: 0,
                };
                let s = w.session(*i);
                let rv = C_VerifyInit(s, &mut m, w.object(*k));
                let (mut d, mut g) = (data.clone(), sig.clone());
                let rv2 = C_Verify(
                    s,
                    d.as_mut_ptr(),
                    d.len() as CK_ULONG,
                    g.as_mut_ptr(),
                    g.len() as CK_ULONG,
                );
                if rv2 == CKR_GENERAL_ERROR {
                    rv2
                } else {
                    rv
                }
            }
            Call::Digest(i, data, cap) => {
                let mut m = CK_MECHANISM {
                    mechanism: CKM_SHA256,
                    pParameter: null_mut(),
                    ulParameterLen: 0,
                };
                let s = w.session(*i);
                let rv = C_DigestInit(s, &mut m);
                let mut d = data.clone();
                let mut out = [0u8; 64];
                let mut n: CK_ULONG = cap.unwrap_or(0) as CK_ULONG % 64;
                let op = if cap.is_some() {
                    out.as_mut_ptr()
                } else {
                    null_mut()
                };
                let rv2 = C_Digest(s, d.as_mut_ptr(), d.len() as CK_ULONG, op, &mut n);
                if rv2 == CKR_GENERAL_ERROR {
                    rv2
                } else {
                    rv
                }
            }
            Call::Wrap(i, m, kek, key, cap) => {
                let mech = [
                    CKM_AES_KEY_WRAP,
                    CKM_AES_KEY_WRAP_PAD,
                    CKM_AES_KEY_WRAP_KWP,
                    CKM_SHA256,
                ][*m as usize % 4];
                let mut mm = CK_MECHANISM {
                    mechanism: mech,
                    pParameter: null_mut(),
                    ulParameterLen: 0,
                };
                let mut out = vec![0u8; 64];
                let mut n: CK_ULONG = cap.unwrap_or(0) as CK_ULONG % 64;
                let op = if cap.is_some() {
                    out.as_mut_ptr()
                } else {
                    null_mut()
                };
                C_WrapKey(
                    w.session(*i),
                    &mut mm,
                    w.object(*kek),
                    w.object(*key),
                    op,
                    &mut n,
                )
            }
            Call::Unwrap(i, m, kek, data) => {
                let mech =
                    [CKM_AES_KEY_WRAP, CKM_AES_KEY_WRAP_PAD, CKM_AES_KEY_WRAP_KWP][*m as usize % 3];
                let mut mm = CK_MECHANISM {
                    mechanism: mech,
                    pParameter: null_mut(),
                    ulParameterLen: 0,
                };
                let mut class = CKO_SECRET_KEY;
                let mut kt = CKK_AES;
                let mut t = [
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
                ];
                let mut d = data.clone();
                let mut h = 0;
                let rv = C_UnwrapKey(
                    w.session(*i),
                    &mut mm,
                    w.object(*kek),
                    d.as_mut_ptr(),
                    d.len() as CK_ULONG,
                    t.as_mut_ptr(),
                    2,
                    &mut h,
                );
                if rv == CKR_OK {
                    w.objects.push(h);
                }
                rv
            }
            Call::Destroy(i, o) => C_DestroyObject(w.session(*i), w.object(*o)),
            Call::Random(i, n) => {
                let mut out = [0u8; 256];
                C_GenerateRandom(w.session(*i), out.as_mut_ptr(), *n as CK_ULONG)
            }
        }
    }
}

/// The module is one per process: the tests of this file take turns.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// A configuration whose only server is unreachable.
fn dead_config(dir: &Path) -> PathBuf {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let cfg = dir.join("c.toml");
    std::fs::write(
        &cfg,
        format!(
            "servers = [\"127.0.0.1:{port}\"]\napi_key = \"k1:d7cY_5k8HbBGkZpoy2hGmvkxg83QDBXsA_nFXDfTk2E\"\ninsecure = true\nenclaves = [\"a\", \"b\"]\ntimeout_ms = 500\nlog_level = \"off\"\n"
        ),
    )
    .unwrap();
    cfg
}

/// Random calls from four threads at once on one initialized module (no
/// C_Initialize or C_Finalize among them): no crash, no deadlock (a
/// watchdog aborts the process after 120 s), no CKR_GENERAL_ERROR.
#[test]
fn concurrent_random_calls_never_crash() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let config = dead_config(dir.path());
    let finished = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let f2 = finished.clone();
    std::thread::spawn(move || {
        // A watchdog, not synchronization: 1200 ticks of 100 ms = 120 s.
        for _ in 0..1200 {
            std::thread::sleep(std::time::Duration::from_millis(100));
            if f2.load(std::sync::atomic::Ordering::Relaxed) {
                return;
            }
        }
        eprintln!("concurrent_random_calls_never_crash: deadlock, aborting");
        std::process::abort();
    });
    let mut w0 = World {
        config: config.clone(),
        slots: vec![],
        sessions: vec![],
        objects: vec![],
    };
    assert_eq!(step(&mut w0, &Call::Initialize), CKR_OK);
    let slots = w0.slots.clone();
    std::thread::scope(|sc| {
        for t in 0..4u64 {
            let (config, slots) = (config.clone(), slots.clone());
            sc.spawn(move || {
                let mut seed = [0u8; 32];
                seed[0] = t as u8;
                let mut runner = TestRunner::new_with_rng(
                    ProptestConfig::default(),
                    proptest::test_runner::TestRng::from_seed(
                        proptest::test_runner::RngAlgorithm::ChaCha,
                        &seed,
                    ),
                );
                let mut w = World {
                    config,
                    slots,
                    sessions: vec![],
                    objects: vec![],
                };
                for c in [
                    Call::OpenSession(0, true),
                    Call::GenerateKey(0, false, 2),
                    Call::OpenSession(1, false),
                ] {
                    step(&mut w, &c);
                }
                for i in 0..400u64 {
                    let c = call().new_tree(&mut runner).unwrap().current();
                    if matches!(
                        c,
                        Call::Initialize
                            | Call::InitializeNull
                            | Call::InitializeReserved(_)
                            | Call::Finalize
                    ) {
                        continue;
                    }
                    let rv = step(&mut w, &c);
                    assert_ne!(rv, CKR_GENERAL_ERROR, "thread {t}, call {i}: {c:?}");
                }
            });
        }
    });
    // SAFETY: no pointer arguments.
    assert_eq!(unsafe { C_Finalize(null_mut()) }, CKR_OK);
    finished.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// The slot ids of enclaves `a` and `b` (the configuration of
/// [`dead_config`]), in name order: FNV-1a of the name, 31 bits
/// (docs/pkcs11.md), computed by hand -- FNV-1a("a") = 0xe40c292c,
/// FNV-1a("b") = 0xe70c2de5.
const SLOTS_A_B: [CK_SLOT_ID; 2] = [0x640c_292c, 0x670c_2de5];

/// Slot ids are the documented fixed values, not just stable ones, and
/// each token's serial number is its slot id in hex.
#[test]
fn slot_ids_are_fnv1a_of_the_enclave_names() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let config = dead_config(dir.path());
    std::env::set_var("KMS_PKCS11_CONFIG", &config);
    // SAFETY: valid pointers to locals.
    unsafe {
        let mut a: CK_C_INITIALIZE_ARGS = std::mem::zeroed();
        a.flags = CKF_OS_LOCKING_OK;
        assert_eq!(C_Initialize(&mut a as *mut _ as *mut _), CKR_OK);
        let mut n: CK_ULONG = 0;
        assert_eq!(C_GetSlotList(1, null_mut(), &mut n), CKR_OK);
        assert_eq!(n, 2);
        let mut slots = [0; 2];
        assert_eq!(C_GetSlotList(1, slots.as_mut_ptr(), &mut n), CKR_OK);
        assert_eq!(slots, SLOTS_A_B);
        for (slot, label) in SLOTS_A_B.iter().zip(["a", "b"]) {
            let mut ti: CK_TOKEN_INFO = std::mem::zeroed();
            assert_eq!(C_GetTokenInfo(*slot, &mut ti), CKR_OK);
            let text = |b: &[u8]| String::from_utf8_lossy(b).trim_end().to_string();
            assert_eq!(text(&ti.label), label);
            assert_eq!(text(&ti.serialNumber), format!("{slot:016x}"));
        }
        assert_eq!(C_Finalize(null_mut()), CKR_OK);
    }
}

#[test]
fn random_call_sequences_never_crash() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    // Without a configuration in the environment, a NULL-argument
    // C_Initialize reads KMS_* variables: make sure they are unusable.
    std::env::remove_var("KMS_PKCS11_CONFIG");
    std::env::remove_var("KMS_API_KEY");
    std::env::remove_var("MINIO_KMS_API_KEY");
    let config = dead_config(dir.path());
    let runner_cfg = ProptestConfig {
        cases: 96,
        max_shrink_iters: 200,
        ..ProptestConfig::default()
    };
    proptest!(runner_cfg, |(calls in prop::collection::vec(call(), 1..40))| {
        let mut w = World { config: config.clone(), slots: vec![], sessions: vec![], objects: vec![] };
        // Most sequences start from an initialized module with a session
        // and a session AES key, so that the random calls reach deep states.
        let prelude = if calls.len() % 4 == 0 {
            vec![]
        } else {
            vec![Call::Initialize, Call::OpenSession(0, true), Call::GenerateKey(0, false, 2), Call::GenerateKey(0, false, 1)]
        };
        for c in prelude.iter().chain(&calls) {
            let rv = step(&mut w, c);
            if rv == CKR_OK {
                let i = match c {
                    Call::OpenSession(..) => 0,
                    Call::GenerateKey(..) | Call::CreateObject(..) | Call::Unwrap(..) => 1,
                    Call::Crypt(..) | Call::Final(..) | Call::Sign(..) | Call::Wrap(..) => 2,
                    _ => 3,
                };
                if i < 3 {
                    REACHED[i].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
            let env_init = matches!(c, Call::InitializeNull);
            prop_assert!(
                rv != CKR_GENERAL_ERROR || env_init,
                "{c:?} returned CKR_GENERAL_ERROR (a panic?) in {calls:?}"
            );
            if matches!(c, Call::InitializeReserved(_)) {
                prop_assert_eq!(rv, CKR_ARGUMENTS_BAD, "{:?} in {:?}", c, calls);
            }
        }
        // The module still works: finalize, initialize, use a session key.
        // SAFETY: valid pointers to locals.
        unsafe {
            // Initialized or not, depending on the sequence.
            let rv = C_Finalize(null_mut());
            prop_assert!(
                rv == CKR_OK || rv == CKR_CRYPTOKI_NOT_INITIALIZED,
                "C_Finalize after {:?}: {:#x}", calls, rv
            );
            std::env::set_var("KMS_PKCS11_CONFIG", &config);
            let mut a: CK_C_INITIALIZE_ARGS = std::mem::zeroed();
            prop_assert_eq!(C_Initialize(&mut a as *mut _ as *mut _), CKR_OK);
            let mut n: CK_ULONG = 0;
            prop_assert_eq!(C_GetSlotList(1, null_mut(), &mut n), CKR_OK);
            prop_assert_eq!(n, 2);
            let mut slots = [0; 2];
            prop_assert_eq!(C_GetSlotList(1, slots.as_mut_ptr(), &mut n), CKR_OK);
            prop_assert_eq!(slots, SLOTS_A_B);
            let mut h = 0;
            prop_assert_eq!(C_OpenSession(slots[0], CKF_SERIAL_SESSION, null_mut(), None, &mut h), CKR_OK);
            let mut out = [0u8; 8];
            prop_assert_eq!(C_GenerateRandom(h, out.as_mut_ptr(), 8), CKR_OK);
            prop_assert_eq!(C_Finalize(null_mut()), CKR_OK);
        }
    });
    let reached: Vec<usize> = REACHED
        .iter()
        .map(|r| r.load(std::sync::atomic::Ordering::Relaxed))
        .collect();
    eprintln!(
        "successful calls: open session {}, make key {}, crypto {}",
        reached[0], reached[1], reached[2]
    );
    assert!(
        reached.iter().all(|n| *n > 0),
        "deep states never reached: {reached:?}"
    );
}
