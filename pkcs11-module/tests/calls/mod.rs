//! PKCS#11 calls with random arguments, run through the exported C
//! functions: shared by the property test `sequences.rs` and the
//! coverage-guided fuzz target `fuzz/fuzz_targets/pkcs11_calls.rs` (which
//! derives `Arbitrary` for [`Call`] under `cfg(fuzzing)`).
#![allow(unsafe_code, dead_code)]

use std::path::PathBuf;
use std::ptr::null_mut;

use cryptoki_sys::*;
use kms_pkcs11::ffi::*;

/// One C call (or a small group: init, use, final) with its arguments
/// drawn from small integers that pick handles, mechanisms and sizes.
#[derive(Debug, Clone)]
#[cfg_attr(fuzzing, derive(arbitrary::Arbitrary))]
pub enum Call {
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
    /// Key-pair generation: the kind picks the mechanism and template
    /// (EC P-256, Ed25519, ML-DSA-44, a bad curve, RSA-2048 rarely).
    GenerateKeyPair(u8, u8, bool),
    /// An asymmetric sign with a mechanism and a parameter of random size.
    SignAsym(u8, u8, u8, Vec<u8>, Option<u8>),
}

pub const ATTRS: &[CK_ATTRIBUTE_TYPE] = &[
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
pub const MECHS: &[CK_MECHANISM_TYPE] = &[
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
    CKM_AES_ECB,
    CKM_AES_CBC,
    CKM_AES_CTR,
];

/// HMAC mechanisms of `Sign` and `Verify` (picked by the input length).
const HMACS: &[CK_MECHANISM_TYPE] = &[
    CKM_SHA256_HMAC,
    CKM_SHA_1_HMAC,
    CKM_SHA384_HMAC,
    CKM_SHA512_HMAC,
];

fn hex_bytes(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap_or(0))
        .collect()
}

/// State of the run: handles seen, to pick from (or a bogus one).
pub struct World {
    pub config: PathBuf,
    pub slots: Vec<CK_SLOT_ID>,
    pub sessions: Vec<CK_SESSION_HANDLE>,
    pub objects: Vec<CK_OBJECT_HANDLE>,
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
pub fn step(w: &mut World, c: &Call) -> CK_RV {
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
                // Counter bits: valid, 0, or past 128.
                let mut c = CK_AES_CTR_PARAMS {
                    ulCounterBits: [128, 8, 0, 129][(*m as usize / MECHS.len()) % 4],
                    cb: [0xff; 16],
                };
                let (p, n): (*mut std::ffi::c_void, CK_ULONG) = match mech {
                    CKM_AES_CTR => (
                        &mut c as *mut _ as *mut _,
                        std::mem::size_of::<CK_AES_CTR_PARAMS>() as CK_ULONG - (*m as CK_ULONG % 2),
                    ),
                    CKM_AES_CBC => (iv.as_mut_ptr() as *mut _, 15 + (*m as CK_ULONG % 2)),
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
                    mechanism: HMACS[data.len() % HMACS.len()],
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
                    mechanism: HMACS[sig.len() % HMACS.len()],
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
                    mechanism: [CKM_SHA256, CKM_SHA_1, CKM_SHA384, CKM_SHA512][data.len() % 4],
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
            Call::GenerateKeyPair(i, kind, token) => {
                // DER OIDs: P-256; a curve nobody supports (P-521).
                let mut p256 = hex_bytes("06082a8648ce3d030107");
                let mut p521 = hex_bytes("06052b81040023");
                let mut ed = b"edwards25519".to_vec();
                let mut bits: CK_ULONG = 2048;
                let mut set: CK_ULONG = 1;
                let mut tok: CK_BBOOL = *token as u8;
                let attr = |t, v: &mut Vec<u8>| CK_ATTRIBUTE {
                    type_: t,
                    pValue: v.as_mut_ptr() as *mut _,
                    ulValueLen: v.len() as CK_ULONG,
                };
                let (mech, first) = match kind % 8 {
                    0 | 1 => (CKM_EC_KEY_PAIR_GEN, attr(CKA_EC_PARAMS, &mut p256)),
                    2 | 3 => (CKM_EC_EDWARDS_KEY_PAIR_GEN, attr(CKA_EC_PARAMS, &mut ed)),
                    4 => (CKM_EC_KEY_PAIR_GEN, attr(CKA_EC_PARAMS, &mut p521)),
                    5 | 6 => (
                        CKM_ML_DSA_KEY_PAIR_GEN,
                        CK_ATTRIBUTE {
                            type_: CKA_PARAMETER_SET,
                            pValue: &mut set as *mut _ as *mut _,
                            ulValueLen: (8 - (*kind as CK_ULONG % 3)) as CK_ULONG,
                        },
                    ),
                    _ => (
                        CKM_RSA_PKCS_KEY_PAIR_GEN,
                        CK_ATTRIBUTE {
                            type_: CKA_MODULUS_BITS,
                            pValue: &mut bits as *mut _ as *mut _,
                            ulValueLen: 8,
                        },
                    ),
                };
                let mut m = CK_MECHANISM {
                    mechanism: mech,
                    pParameter: null_mut(),
                    ulParameterLen: 0,
                };
                let mut public = [
                    first,
                    CK_ATTRIBUTE {
                        type_: CKA_TOKEN,
                        pValue: &mut tok as *mut _ as *mut _,
                        ulValueLen: 1,
                    },
                ];
                let mut private = [CK_ATTRIBUTE {
                    type_: CKA_TOKEN,
                    pValue: &mut tok as *mut _ as *mut _,
                    ulValueLen: 1,
                }];
                let (mut hp, mut hq) = (0, 0);
                let rv = C_GenerateKeyPair(
                    w.session(*i),
                    &mut m,
                    public.as_mut_ptr(),
                    2,
                    private.as_mut_ptr(),
                    1,
                    &mut hp,
                    &mut hq,
                );
                if rv == CKR_OK {
                    w.objects.push(hp);
                    w.objects.push(hq);
                }
                rv
            }
            Call::SignAsym(i, k, mech, data, cap) => {
                let mechs = [
                    CKM_ECDSA,
                    CKM_ECDSA_SHA256,
                    CKM_EDDSA,
                    CKM_RSA_PKCS,
                    CKM_SHA256_RSA_PKCS,
                    CKM_RSA_PKCS_PSS,
                    CKM_SHA256_RSA_PKCS_PSS,
                    CKM_ML_DSA,
                ];
                // A parameter of a random size, mostly the right one for
                // PSS (24 bytes) and ML-DSA contexts (24 bytes).
                let mut param = vec![0u8; [0, 24, 24, 7, 40][*mech as usize % 5]];
                let mut m = CK_MECHANISM {
                    mechanism: mechs[*mech as usize % mechs.len()],
                    pParameter: if param.is_empty() {
                        null_mut()
                    } else {
                        param.as_mut_ptr() as *mut _
                    },
                    ulParameterLen: param.len() as CK_ULONG,
                };
                let s = w.session(*i);
                let rv = C_SignInit(s, &mut m, w.object(*k));
                let mut d = data.clone();
                let mut out = vec![0u8; 5000];
                let mut n: CK_ULONG = cap.map_or(5000, |c| c as CK_ULONG * 20);
                let rv2 = C_Sign(
                    s,
                    d.as_mut_ptr(),
                    d.len() as CK_ULONG,
                    out.as_mut_ptr(),
                    &mut n,
                );
                if rv2 == CKR_OK {
                    assert!(n as usize <= out.len());
                }
                if rv2 == CKR_GENERAL_ERROR {
                    rv2
                } else {
                    rv
                }
            }
            Call::Random(i, n) => {
                let mut out = [0u8; 256];
                C_GenerateRandom(w.session(*i), out.as_mut_ptr(), *n as CK_ULONG)
            }
        }
    }
}
