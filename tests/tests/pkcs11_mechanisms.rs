//! The module's mechanisms through the real `libkms_pkcs11.so` over a live
//! node, called through the C functions so that every return code is
//! exact:
//!
//! - known answers on session keys: AES-ECB, AES-CBC, AES-CTR (NIST SP
//!   800-38A F.1, F.2, F.5 with AES-128 and AES-256), HMAC-SHA-1 (RFC
//!   2202), HMAC-SHA-256/384/512 (RFC 4231), SHA-1/256/384/512 (FIPS 180,
//!   "abc"), single- and multi-part with uneven parts;
//! - the same mechanisms on a cluster key (through the cluster), checked
//!   against each other (CBC with a zero IV = ECB on one block, CTR of zeros
//!   = ECB of the counter blocks) and against the session-key results;
//! - bad arguments: IV and CTR parameter lengths, counter bits, counter
//!   wrap, data lengths, NULL pointers, wrong key types;
//! - `C_GetMechanismInfo` walked over the whole `C_GetMechanismList`:
//!   every flag a mechanism claims is exercised with keys of its minimum
//!   and maximum size, and every operation it does not claim is refused
//!   with `CKR_MECHANISM_INVALID`;
//! - session key pairs (`CKA_TOKEN` false) of every type;
//! - `login = "pin"` and `login = "api-key"` with wrong and right PINs;
//! - `hide_key_types` with the libp11 OpenSSL engine;
//! - `pkcs11-tool --list-mechanisms` and `--test`.

use std::path::Path;
use std::process::Command;
use std::ptr::null_mut;
use std::sync::Mutex;

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use cryptoki_sys::*;
use kms_tests::ok;
use kms_tests::pkcs11::{module_path, write_config, KmsNode, ENCLAVE};

static SERIAL: Mutex<()> = Mutex::new(());

const CKM_KMS_CIPHERTEXT: CK_MECHANISM_TYPE = 0xCB4D_0001;
const P256: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
const P384: &[u8] = &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22];

fn h(s: &str) -> Vec<u8> {
    hex::decode(s.replace([' ', '\n'], "")).unwrap()
}

type R<T> = Result<T, CK_RV>;

fn ck(rv: CK_RV) -> R<()> {
    if rv == CKR_OK {
        Ok(())
    } else {
        Err(rv)
    }
}

/// A mechanism with its parameter bytes (and the buffers they point to).
struct M {
    ty: CK_MECHANISM_TYPE,
    param: Vec<u8>,
    _keep: Vec<Vec<u8>>,
}

fn m(ty: CK_MECHANISM_TYPE) -> M {
    M {
        ty,
        param: Vec::new(),
        _keep: Vec::new(),
    }
}

fn mp(ty: CK_MECHANISM_TYPE, param: &[u8]) -> M {
    M {
        ty,
        param: param.to_vec(),
        _keep: Vec::new(),
    }
}

fn ms<T>(ty: CK_MECHANISM_TYPE, v: &T, keep: Vec<Vec<u8>>) -> M {
    // SAFETY: reads the bytes of a live, plain C struct.
    let b = unsafe { std::slice::from_raw_parts(v as *const T as *const u8, size_of::<T>()) };
    M {
        ty,
        param: b.to_vec(),
        _keep: keep,
    }
}

fn ctr(cb: [u8; 16], bits: CK_ULONG) -> M {
    ms(
        CKM_AES_CTR,
        &CK_AES_CTR_PARAMS {
            ulCounterBits: bits,
            cb,
        },
        vec![],
    )
}

fn gcm(iv: &[u8], tag_bits: CK_ULONG) -> M {
    let iv = iv.to_vec();
    let p = CK_GCM_PARAMS {
        pIv: iv.as_ptr() as *mut _,
        ulIvLen: iv.len() as _,
        ulIvBits: (iv.len() * 8) as _,
        pAAD: null_mut(),
        ulAADLen: 0,
        ulTagBits: tag_bits,
    };
    ms(CKM_AES_GCM, &p, vec![iv])
}

fn pss(ty: CK_MECHANISM_TYPE, hash: CK_MECHANISM_TYPE, mgf: CK_ULONG, salt: CK_ULONG) -> M {
    ms(
        ty,
        &CK_RSA_PKCS_PSS_PARAMS {
            hashAlg: hash,
            mgf,
            sLen: salt,
        },
        vec![],
    )
}

fn oaep() -> M {
    ms(
        CKM_RSA_PKCS_OAEP,
        &CK_RSA_PKCS_OAEP_PARAMS {
            hashAlg: CKM_SHA256,
            mgf: CKG_MGF1_SHA256,
            source: CKZ_DATA_SPECIFIED,
            pSourceData: null_mut(),
            ulSourceDataLen: 0,
        },
        vec![],
    )
}

impl M {
    fn raw(&self) -> CK_MECHANISM {
        CK_MECHANISM {
            mechanism: self.ty,
            pParameter: if self.param.is_empty() {
                null_mut()
            } else {
                self.param.as_ptr() as *mut _
            },
            ulParameterLen: self.param.len() as _,
        }
    }
}

/// A template with owned values.
struct T {
    attrs: Vec<CK_ATTRIBUTE>,
    _keep: Vec<Vec<u8>>,
}

enum V {
    B(bool),
    U(CK_ULONG),
    D(Vec<u8>),
}

fn t(list: Vec<(CK_ATTRIBUTE_TYPE, V)>) -> T {
    let mut keep = Vec::new();
    let mut attrs = Vec::new();
    for (ty, v) in list {
        let b = match v {
            V::B(b) => vec![b as u8],
            V::U(u) => u.to_ne_bytes().to_vec(),
            V::D(d) => d,
        };
        attrs.push(CK_ATTRIBUTE {
            type_: ty,
            pValue: b.as_ptr() as *mut _,
            ulValueLen: b.len() as _,
        });
        keep.push(b);
    }
    T { attrs, _keep: keep }
}

struct Ctx {
    p11: Pkcs11,
    slot: Slot,
    f: &'static CK_FUNCTION_LIST,
}

fn load(config: &Path) -> Ctx {
    let p11 = Pkcs11::new(module_path()).expect("load module");
    std::env::set_var("KMS_PKCS11_CONFIG", config);
    p11.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .expect("C_Initialize");
    let slot = p11
        .get_slots_with_token()
        .unwrap()
        .into_iter()
        .find(|s| p11.get_token_info(*s).unwrap().label() == ENCLAVE)
        .expect("a slot for the enclave");
    // SAFETY: loads the module under test again (the same library instance,
    // kept loaded for the process) for its function list.
    let f = unsafe {
        let lib = Box::leak(Box::new(cryptoki_sys::Pkcs11::new(module_path()).unwrap()));
        let mut fl: *mut CK_FUNCTION_LIST = null_mut();
        assert_eq!(lib.C_GetFunctionList(&mut fl), CKR_OK);
        &*fl
    };
    Ctx { p11, slot, f }
}

fn session(c: &Ctx) -> Session {
    c.p11.open_rw_session(c.slot).unwrap()
}

/// Every call below goes through the C functions with live locals only.
impl Ctx {
    fn init(&self, sh: CK_SESSION_HANDLE, kind: u8, mech: &M, key: CK_OBJECT_HANDLE) -> R<()> {
        let mut mm = mech.raw();
        let f = self.f;
        // SAFETY: live locals.
        ck(unsafe {
            match kind {
                b'e' => f.C_EncryptInit.unwrap()(sh, &mut mm, key),
                b'd' => f.C_DecryptInit.unwrap()(sh, &mut mm, key),
                b's' => f.C_SignInit.unwrap()(sh, &mut mm, key),
                b'v' => f.C_VerifyInit.unwrap()(sh, &mut mm, key),
                _ => f.C_DigestInit.unwrap()(sh, &mut mm),
            }
        })
    }

    /// A single-part encrypt ('e'), decrypt ('d'), sign ('s') or digest
    /// ('h'), with a size query first.
    fn one(
        &self,
        sh: CK_SESSION_HANDLE,
        kind: u8,
        mech: &M,
        key: CK_OBJECT_HANDLE,
        data: &[u8],
    ) -> R<Vec<u8>> {
        self.init(sh, kind, mech, key)?;
        let f = self.f;
        let call = match kind {
            b'e' => f.C_Encrypt.unwrap(),
            b'd' => f.C_Decrypt.unwrap(),
            b's' => f.C_Sign.unwrap(),
            _ => f.C_Digest.unwrap(),
        };
        let mut d = data.to_vec();
        let mut len: CK_ULONG = 0;
        // SAFETY: live locals.
        unsafe {
            ck(call(sh, d.as_mut_ptr(), d.len() as _, null_mut(), &mut len))?;
            let mut out = vec![0u8; len as usize];
            ck(call(
                sh,
                d.as_mut_ptr(),
                d.len() as _,
                out.as_mut_ptr(),
                &mut len,
            ))?;
            out.truncate(len as usize);
            Ok(out)
        }
    }

    /// The same in parts.
    fn multi(
        &self,
        sh: CK_SESSION_HANDLE,
        kind: u8,
        mech: &M,
        key: CK_OBJECT_HANDLE,
        parts: &[&[u8]],
    ) -> R<Vec<u8>> {
        self.init(sh, kind, mech, key)?;
        let f = self.f;
        let mut out = Vec::new();
        // SAFETY: live locals.
        unsafe {
            for p in parts {
                let mut d = p.to_vec();
                match kind {
                    b'e' | b'd' => {
                        let mut buf = vec![0u8; d.len() + 64];
                        let mut len = buf.len() as CK_ULONG;
                        let upd = if kind == b'e' {
                            f.C_EncryptUpdate.unwrap()
                        } else {
                            f.C_DecryptUpdate.unwrap()
                        };
                        ck(upd(
                            sh,
                            d.as_mut_ptr(),
                            d.len() as _,
                            buf.as_mut_ptr(),
                            &mut len,
                        ))?;
                        out.extend_from_slice(&buf[..len as usize]);
                    }
                    b's' => ck(f.C_SignUpdate.unwrap()(sh, d.as_mut_ptr(), d.len() as _))?,
                    _ => ck(f.C_DigestUpdate.unwrap()(sh, d.as_mut_ptr(), d.len() as _))?,
                }
            }
            let fin = match kind {
                b'e' => f.C_EncryptFinal.unwrap(),
                b'd' => f.C_DecryptFinal.unwrap(),
                b's' => f.C_SignFinal.unwrap(),
                _ => f.C_DigestFinal.unwrap(),
            };
            let mut len: CK_ULONG = 0;
            ck(fin(sh, null_mut(), &mut len))?;
            let mut buf = vec![0u8; len as usize];
            ck(fin(sh, buf.as_mut_ptr(), &mut len))?;
            out.extend_from_slice(&buf[..len as usize]);
        }
        Ok(out)
    }

    fn verify(
        &self,
        sh: CK_SESSION_HANDLE,
        mech: &M,
        key: CK_OBJECT_HANDLE,
        data: &[u8],
        sig: &[u8],
    ) -> R<()> {
        self.init(sh, b'v', mech, key)?;
        let (mut d, mut s) = (data.to_vec(), sig.to_vec());
        // SAFETY: live locals.
        ck(unsafe {
            self.f.C_Verify.unwrap()(
                sh,
                d.as_mut_ptr(),
                d.len() as _,
                s.as_mut_ptr(),
                s.len() as _,
            )
        })
    }

    fn verify_multi(
        &self,
        sh: CK_SESSION_HANDLE,
        mech: &M,
        key: CK_OBJECT_HANDLE,
        parts: &[&[u8]],
        sig: &[u8],
    ) -> R<()> {
        self.init(sh, b'v', mech, key)?;
        // SAFETY: live locals.
        unsafe {
            for p in parts {
                let mut d = p.to_vec();
                ck(self.f.C_VerifyUpdate.unwrap()(
                    sh,
                    d.as_mut_ptr(),
                    d.len() as _,
                ))?;
            }
            let mut s = sig.to_vec();
            ck(self.f.C_VerifyFinal.unwrap()(
                sh,
                s.as_mut_ptr(),
                s.len() as _,
            ))
        }
    }

    fn create(&self, sh: CK_SESSION_HANDLE, tpl: T) -> R<CK_OBJECT_HANDLE> {
        let mut tpl = tpl;
        let mut hd = 0;
        // SAFETY: live locals.
        ck(unsafe {
            self.f.C_CreateObject.unwrap()(
                sh,
                tpl.attrs.as_mut_ptr(),
                tpl.attrs.len() as _,
                &mut hd,
            )
        })?;
        Ok(hd)
    }

    fn gen(&self, sh: CK_SESSION_HANDLE, mech: &M, tpl: T) -> R<CK_OBJECT_HANDLE> {
        let mut tpl = tpl;
        let mut mm = mech.raw();
        let mut hd = 0;
        // SAFETY: live locals.
        ck(unsafe {
            self.f.C_GenerateKey.unwrap()(
                sh,
                &mut mm,
                tpl.attrs.as_mut_ptr(),
                tpl.attrs.len() as _,
                &mut hd,
            )
        })?;
        Ok(hd)
    }

    fn gen_pair(
        &self,
        sh: CK_SESSION_HANDLE,
        mech: &M,
        public: T,
        private: T,
    ) -> R<(CK_OBJECT_HANDLE, CK_OBJECT_HANDLE)> {
        let (mut pu, mut pr) = (public, private);
        let mut mm = mech.raw();
        let (mut hp, mut hq) = (0, 0);
        // SAFETY: live locals.
        ck(unsafe {
            self.f.C_GenerateKeyPair.unwrap()(
                sh,
                &mut mm,
                pu.attrs.as_mut_ptr(),
                pu.attrs.len() as _,
                pr.attrs.as_mut_ptr(),
                pr.attrs.len() as _,
                &mut hp,
                &mut hq,
            )
        })?;
        Ok((hp, hq))
    }

    fn wrap(
        &self,
        sh: CK_SESSION_HANDLE,
        mech: &M,
        wrapping: CK_OBJECT_HANDLE,
        key: CK_OBJECT_HANDLE,
    ) -> R<Vec<u8>> {
        let mut mm = mech.raw();
        let mut len: CK_ULONG = 0;
        let w = self.f.C_WrapKey.unwrap();
        // SAFETY: live locals.
        unsafe {
            ck(w(sh, &mut mm, wrapping, key, null_mut(), &mut len))?;
            let mut out = vec![0u8; len as usize];
            ck(w(sh, &mut mm, wrapping, key, out.as_mut_ptr(), &mut len))?;
            out.truncate(len as usize);
            Ok(out)
        }
    }

    fn unwrap(
        &self,
        sh: CK_SESSION_HANDLE,
        mech: &M,
        key: CK_OBJECT_HANDLE,
        wrapped: &[u8],
        tpl: T,
    ) -> R<CK_OBJECT_HANDLE> {
        let mut tpl = tpl;
        let mut mm = mech.raw();
        let mut w = wrapped.to_vec();
        let mut hd = 0;
        // SAFETY: live locals.
        ck(unsafe {
            self.f.C_UnwrapKey.unwrap()(
                sh,
                &mut mm,
                key,
                w.as_mut_ptr(),
                w.len() as _,
                tpl.attrs.as_mut_ptr(),
                tpl.attrs.len() as _,
                &mut hd,
            )
        })?;
        Ok(hd)
    }

    fn attr(
        &self,
        sh: CK_SESSION_HANDLE,
        o: CK_OBJECT_HANDLE,
        ty: CK_ATTRIBUTE_TYPE,
    ) -> R<Vec<u8>> {
        let mut a = CK_ATTRIBUTE {
            type_: ty,
            pValue: null_mut(),
            ulValueLen: 0,
        };
        let g = self.f.C_GetAttributeValue.unwrap();
        // SAFETY: live locals.
        unsafe {
            ck(g(sh, o, &mut a, 1))?;
            let mut v = vec![0u8; a.ulValueLen as usize];
            a.pValue = v.as_mut_ptr() as *mut _;
            ck(g(sh, o, &mut a, 1))?;
            Ok(v)
        }
    }

    fn find(&self, sh: CK_SESSION_HANDLE, label: &str) -> Vec<CK_OBJECT_HANDLE> {
        let mut tpl = t(vec![(CKA_LABEL, V::D(label.as_bytes().to_vec()))]);
        let mut out = vec![0; 16];
        let mut n: CK_ULONG = 0;
        // SAFETY: live locals.
        unsafe {
            assert_eq!(
                self.f.C_FindObjectsInit.unwrap()(sh, tpl.attrs.as_mut_ptr(), tpl.attrs.len() as _),
                CKR_OK
            );
            assert_eq!(
                self.f.C_FindObjects.unwrap()(sh, out.as_mut_ptr(), 16, &mut n),
                CKR_OK
            );
            assert_eq!(self.f.C_FindObjectsFinal.unwrap()(sh), CKR_OK);
        }
        out.truncate(n as usize);
        out
    }

    fn mechanisms(&self) -> Vec<CK_MECHANISM_TYPE> {
        let id = self.slot.id() as CK_SLOT_ID;
        let mut n: CK_ULONG = 0;
        // SAFETY: live locals.
        unsafe {
            assert_eq!(
                self.f.C_GetMechanismList.unwrap()(id, null_mut(), &mut n),
                CKR_OK
            );
            let mut v = vec![0; n as usize];
            assert_eq!(
                self.f.C_GetMechanismList.unwrap()(id, v.as_mut_ptr(), &mut n),
                CKR_OK
            );
            v
        }
    }

    fn info(&self, mech: CK_MECHANISM_TYPE) -> CK_MECHANISM_INFO {
        // SAFETY: live locals.
        unsafe {
            let mut i: CK_MECHANISM_INFO = std::mem::zeroed();
            assert_eq!(
                self.f.C_GetMechanismInfo.unwrap()(self.slot.id() as _, mech, &mut i),
                CKR_OK
            );
            i
        }
    }
}

/// A session AES key with the value `v`.
fn aes_key(c: &Ctx, sh: CK_SESSION_HANDLE, v: &[u8]) -> CK_OBJECT_HANDLE {
    c.create(
        sh,
        t(vec![
            (CKA_CLASS, V::U(CKO_SECRET_KEY)),
            (CKA_KEY_TYPE, V::U(CKK_AES)),
            (CKA_TOKEN, V::B(false)),
            (CKA_VALUE, V::D(v.to_vec())),
        ]),
    )
    .unwrap()
}

fn hmac_key(c: &Ctx, sh: CK_SESSION_HANDLE, v: &[u8]) -> CK_OBJECT_HANDLE {
    c.create(
        sh,
        t(vec![
            (CKA_CLASS, V::U(CKO_SECRET_KEY)),
            (CKA_KEY_TYPE, V::U(CKK_GENERIC_SECRET)),
            (CKA_TOKEN, V::B(false)),
            (CKA_VALUE, V::D(v.to_vec())),
        ]),
    )
    .unwrap()
}

// NIST SP 800-38A, appendix F.
const SP_PT: &str = "6bc1bee22e409f96e93d7e117393172a ae2d8a571e03ac9c9eb76fac45af8e51
                     30c81c46a35ce411e5fbc1191a0a52ef f69f2445df4f9b17ad2b417be66c3710";
const SP_K128: &str = "2b7e151628aed2a6abf7158809cf4f3c";
const SP_K256: &str = "603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4";
const SP_IV: &str = "000102030405060708090a0b0c0d0e0f";
const SP_CB: &str = "f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff";
/// (key, mechanism, ciphertext): F.1.1, F.1.5, F.2.1, F.2.5, F.5.1, F.5.5.
const SP_VECTORS: &[(&str, CK_MECHANISM_TYPE, &str)] = &[
    (
        SP_K128,
        CKM_AES_ECB,
        "3ad77bb40d7a3660a89ecaf32466ef97 f5d3d58503b9699de785895a96fdbaaf
         43b1cd7f598ece23881b00e3ed030688 7b0c785e27e8ad3f8223207104725dd4",
    ),
    (
        SP_K256,
        CKM_AES_ECB,
        "f3eed1bdb5d2a03c064b5a7e3db181f8 591ccb10d410ed26dc5ba74a31362870
         b6ed21b99ca6f4f9f153e7b1beafed1d 23304b7a39f9f3ff067d8d8f9e24ecc7",
    ),
    (
        SP_K128,
        CKM_AES_CBC,
        "7649abac8119b246cee98e9b12e9197d 5086cb9b507219ee95db113a917678b2
         73bed6b8e3c1743b7116e69e22229516 3ff1caa1681fac09120eca307586e1a7",
    ),
    (
        SP_K256,
        CKM_AES_CBC,
        "f58c4c04d6e5f1ba779eabfb5f7bfbd6 9cfc4e967edb808d679f777bc6702c7d
         39f23369a9d9bacfa530e26304231461 b2eb05e2c39be9fcda6c19078c6a9d1b",
    ),
    (
        SP_K128,
        CKM_AES_CTR,
        "874d6191b620e3261bef6864990db6ce 9806f66b7970fdff8617187bb9fffdff
         5ae4df3edbd5d35e5b4f09020db03eab 1e031dda2fbe03d1792170a0f3009cee",
    ),
    (
        SP_K256,
        CKM_AES_CTR,
        "601ec313775789a5b7a7f504bbf3d228 f443e3ca4d62b59aca84e990cacaf5c5
         2b0930daa23de94ce87017ba2d84988d dfc9c58db67aada613c2dd08457941a6",
    ),
];

fn sp_mech(ty: CK_MECHANISM_TYPE) -> M {
    match ty {
        CKM_AES_ECB => m(CKM_AES_ECB),
        CKM_AES_CBC => mp(CKM_AES_CBC, &h(SP_IV)),
        _ => ctr(h(SP_CB).try_into().unwrap(), 128),
    }
}

// FIPS 180 "abc".
const ABC: &[(CK_MECHANISM_TYPE, &str)] = &[
    (CKM_SHA_1, "a9993e364706816aba3e25717850c26c9cd0d89d"),
    (
        CKM_SHA256,
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
    ),
    (
        CKM_SHA384,
        "cb00753f45a35e8bb5a03d699ac65007272c32ab0eded1631a8b605a43ff5bed\
         8086072ba1e7cc2358baeca134c825a7",
    ),
    (
        CKM_SHA512,
        "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a\
         2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f",
    ),
];

// RFC 2202 test 2 (SHA-1) and RFC 4231 test 2: key "Jefe".
const JEFE: &[(CK_MECHANISM_TYPE, &str)] = &[
    (CKM_SHA_1_HMAC, "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79"),
    (
        CKM_SHA256_HMAC,
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
    ),
    (
        CKM_SHA384_HMAC,
        "af45d2e376484031617f78d2b58a6b1b9c7ef464f5a01b47e42ec3736322445e\
         8e2240ca5e69e2c78b3239ecfab21649",
    ),
    (
        CKM_SHA512_HMAC,
        "164b7a7bfcf819e2e395fbe73b56e0a387bd64222e831fd610270cd7ea250554\
         9758bf75c05a994a6d034f65f8f0e6fdcaeab1a34d4a6b4b636e070a38bce737",
    ),
];
const JEFE_MSG: &[u8] = b"what do ya want for nothing?";

#[test]
fn known_answers_on_session_keys() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let node = KmsNode::start("");
    let c = load(&node.config);
    let s = session(&c);
    let sh = s.handle();
    let pt = h(SP_PT);
    for (k, ty, ct) in SP_VECTORS {
        let key = aes_key(&c, sh, &h(k));
        let ct = h(ct);
        let mech = sp_mech(*ty);
        assert_eq!(c.one(sh, b'e', &mech, key, &pt).unwrap(), ct, "{ty:#x}");
        assert_eq!(c.one(sh, b'd', &mech, key, &ct).unwrap(), pt, "{ty:#x}");
        // Multi-part with parts that cut blocks.
        let parts: [&[u8]; 4] = [&pt[..5], &pt[5..32], &[], &pt[32..]];
        assert_eq!(
            c.multi(sh, b'e', &mech, key, &parts).unwrap(),
            ct,
            "{ty:#x}"
        );
        let cparts: [&[u8]; 3] = [&ct[..17], &ct[17..49], &ct[49..]];
        assert_eq!(
            c.multi(sh, b'd', &mech, key, &cparts).unwrap(),
            pt,
            "{ty:#x}"
        );
        if *ty == CKM_AES_CTR {
            // CTR takes any length: a prefix of the known answer.
            assert_eq!(c.one(sh, b'e', &mech, key, &pt[..37]).unwrap(), ct[..37]);
            assert_eq!(
                c.multi(sh, b'd', &mech, key, &[&ct[..3], &ct[3..37]])
                    .unwrap(),
                pt[..37]
            );
        } else {
            // ECB and CBC take whole blocks only.
            assert_eq!(
                c.one(sh, b'e', &mech, key, &pt[..63]),
                Err(CKR_DATA_LEN_RANGE)
            );
            assert_eq!(
                c.one(sh, b'd', &mech, key, &ct[..63]),
                Err(CKR_ENCRYPTED_DATA_LEN_RANGE)
            );
            assert_eq!(
                c.multi(sh, b'e', &mech, key, &[&pt[..16], &pt[16..47]]),
                Err(CKR_DATA_LEN_RANGE)
            );
            assert_eq!(
                c.multi(sh, b'd', &mech, key, &[&ct[..40]]),
                Err(CKR_ENCRYPTED_DATA_LEN_RANGE)
            );
            // Empty input is zero blocks.
            assert_eq!(c.one(sh, b'e', &mech, key, &[]).unwrap(), Vec::<u8>::new());
        }
    }
    // Digests, single and multi-part.
    for (ty, want) in ABC {
        assert_eq!(
            c.one(sh, b'h', &m(*ty), 0, b"abc").unwrap(),
            h(want),
            "{ty:#x}"
        );
        assert_eq!(
            c.multi(sh, b'h', &m(*ty), 0, &[b"a", b"", b"bc"]).unwrap(),
            h(want),
            "{ty:#x}"
        );
    }
    // HMAC, single and multi-part, sign and verify.
    let jefe = hmac_key(&c, sh, b"Jefe");
    for (ty, want) in JEFE {
        let mech = m(*ty);
        let want = h(want);
        assert_eq!(
            c.one(sh, b's', &mech, jefe, JEFE_MSG).unwrap(),
            want,
            "{ty:#x}"
        );
        assert_eq!(
            c.multi(sh, b's', &mech, jefe, &[&JEFE_MSG[..4], &JEFE_MSG[4..]])
                .unwrap(),
            want
        );
        c.verify(sh, &mech, jefe, JEFE_MSG, &want).unwrap();
        c.verify_multi(sh, &mech, jefe, &[&JEFE_MSG[..9], &JEFE_MSG[9..]], &want)
            .unwrap();
        let mut bad = want.clone();
        bad[0] ^= 1;
        assert_eq!(
            c.verify(sh, &mech, jefe, JEFE_MSG, &bad),
            Err(CKR_SIGNATURE_INVALID)
        );
        assert_eq!(
            c.verify(sh, &mech, jefe, JEFE_MSG, &want[1..]),
            Err(CKR_SIGNATURE_LEN_RANGE)
        );
    }
    drop(s);
    c.p11.finalize().unwrap();
}

#[test]
fn cluster_keys_and_bad_arguments() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let node = KmsNode::start("");
    let c = load(&node.config);
    let s = session(&c);
    let sh = s.handle();
    let key = c
        .gen(
            sh,
            &m(CKM_AES_KEY_GEN),
            t(vec![
                (CKA_TOKEN, V::B(true)),
                (CKA_VALUE_LEN, V::U(32)),
                (CKA_LABEL, V::D(b"modes".to_vec())),
            ]),
        )
        .unwrap();
    let pt = h(SP_PT);
    let iv: [u8; 16] = h(SP_IV).try_into().unwrap();
    let cb: [u8; 16] = h(SP_CB).try_into().unwrap();
    for mech in [
        m(CKM_AES_ECB),
        mp(CKM_AES_CBC, &iv),
        ctr(cb, 128),
        ctr(cb, 16),
    ] {
        let ct = c.one(sh, b'e', &mech, key, &pt).unwrap();
        assert_eq!(ct.len(), 64);
        assert_ne!(ct, pt);
        assert_eq!(c.one(sh, b'd', &mech, key, &ct).unwrap(), pt);
        let parts: [&[u8]; 3] = [&pt[..7], &pt[7..33], &pt[33..]];
        assert_eq!(c.multi(sh, b'e', &mech, key, &parts).unwrap(), ct);
        assert_eq!(
            c.multi(sh, b'd', &mech, key, &[&ct[..1], &ct[1..]])
                .unwrap(),
            pt
        );
    }
    // The modes agree with each other under the cluster key.
    let ecb = c.one(sh, b'e', &m(CKM_AES_ECB), key, &pt).unwrap();
    let cbc0 = c
        .one(sh, b'e', &mp(CKM_AES_CBC, &[0; 16]), key, &pt[..16])
        .unwrap();
    assert_eq!(cbc0, ecb[..16]);
    let mut counters = Vec::new();
    for i in 0..4u128 {
        counters.extend_from_slice(&(u128::from_be_bytes(cb) + i).to_be_bytes());
    }
    let keystream = c.one(sh, b'e', &m(CKM_AES_ECB), key, &counters).unwrap();
    assert_eq!(
        c.one(sh, b'e', &ctr(cb, 128), key, &[0u8; 64]).unwrap(),
        keystream
    );
    // CBC by hand from ECB.
    let mut chain = iv;
    let mut cbc = Vec::new();
    for block in pt.chunks(16) {
        let x: Vec<u8> = block.iter().zip(chain).map(|(a, b)| a ^ b).collect();
        let y = c.one(sh, b'e', &m(CKM_AES_ECB), key, &x).unwrap();
        chain = y.clone().try_into().unwrap();
        cbc.extend(y);
    }
    assert_eq!(
        c.one(sh, b'e', &mp(CKM_AES_CBC, &iv), key, &pt).unwrap(),
        cbc
    );

    // HMAC through the cluster: every hash, verified by the cluster and
    // by length.
    let mut macs = Vec::new();
    for (ty, len) in [
        (CKM_SHA_1_HMAC, 20),
        (CKM_SHA256_HMAC, 32),
        (CKM_SHA384_HMAC, 48),
        (CKM_SHA512_HMAC, 64),
    ] {
        let mech = m(ty);
        let mac = c.one(sh, b's', &mech, key, b"message").unwrap();
        assert_eq!(mac.len(), len, "{ty:#x}");
        assert_eq!(
            c.multi(sh, b's', &mech, key, &[b"mes", b"sage"]).unwrap(),
            mac
        );
        c.verify(sh, &mech, key, b"message", &mac).unwrap();
        c.verify_multi(sh, &mech, key, &[b"m", b"essage"], &mac)
            .unwrap();
        assert_eq!(
            c.verify(sh, &mech, key, b"messagE", &mac),
            Err(CKR_SIGNATURE_INVALID)
        );
        assert_eq!(
            c.verify(sh, &mech, key, b"message", &mac[..len - 1]),
            Err(CKR_SIGNATURE_LEN_RANGE)
        );
        macs.push(mac);
    }
    // Four hashes, four different MACs; SHA-256 is KEY:MAC's.
    macs.sort();
    macs.dedup();
    assert_eq!(macs.len(), 4);

    // ---- bad arguments: exact codes ----
    let aes = aes_key(&c, sh, &[7; 16]);
    let generic = hmac_key(&c, sh, &[7; 16]);
    for k in [key, aes] {
        // Block modes: whole blocks only.
        assert_eq!(
            c.one(sh, b'e', &m(CKM_AES_ECB), k, &pt[..15]),
            Err(CKR_DATA_LEN_RANGE)
        );
        assert_eq!(
            c.one(sh, b'd', &m(CKM_AES_ECB), k, &pt[..17]),
            Err(CKR_ENCRYPTED_DATA_LEN_RANGE)
        );
        assert_eq!(
            c.one(sh, b'e', &mp(CKM_AES_CBC, &iv), k, &pt[..33]),
            Err(CKR_DATA_LEN_RANGE)
        );
        assert_eq!(
            c.one(sh, b'd', &mp(CKM_AES_CBC, &iv), k, &pt[..1]),
            Err(CKR_ENCRYPTED_DATA_LEN_RANGE)
        );
        // IVs and CTR parameters.
        for kind in [b'e', b'd'] {
            assert_eq!(
                c.init(sh, kind, &mp(CKM_AES_CBC, &iv[..15]), k),
                Err(CKR_MECHANISM_PARAM_INVALID)
            );
            assert_eq!(
                c.init(sh, kind, &m(CKM_AES_CBC), k),
                Err(CKR_MECHANISM_PARAM_INVALID)
            );
            assert_eq!(
                c.init(sh, kind, &mp(CKM_AES_CBC, &[0; 17]), k),
                Err(CKR_MECHANISM_PARAM_INVALID)
            );
            assert_eq!(
                c.init(sh, kind, &mp(CKM_AES_ECB, &iv), k),
                Err(CKR_MECHANISM_PARAM_INVALID)
            );
            assert_eq!(
                c.init(sh, kind, &mp(CKM_AES_CTR, &iv), k),
                Err(CKR_MECHANISM_PARAM_INVALID)
            );
            assert_eq!(
                c.init(sh, kind, &m(CKM_AES_CTR), k),
                Err(CKR_MECHANISM_PARAM_INVALID)
            );
            assert_eq!(
                c.init(sh, kind, &ctr(cb, 0), k),
                Err(CKR_MECHANISM_PARAM_INVALID)
            );
            assert_eq!(
                c.init(sh, kind, &ctr(cb, 129), k),
                Err(CKR_MECHANISM_PARAM_INVALID)
            );
            assert_eq!(
                c.init(sh, kind, &ctr(cb, CK_ULONG::MAX), k),
                Err(CKR_MECHANISM_PARAM_INVALID)
            );
        }
        // A counter of 8 bits at 0xff has one block left.
        let top = ctr([0xff; 16], 8);
        assert_eq!(c.one(sh, b'e', &top, k, &pt[..16]).unwrap().len(), 16);
        assert_eq!(c.one(sh, b'e', &top, k, &pt[..17]), Err(CKR_DATA_LEN_RANGE));
        assert_eq!(
            c.one(sh, b'd', &top, k, &pt[..17]),
            Err(CKR_ENCRYPTED_DATA_LEN_RANGE)
        );
        assert_eq!(
            c.multi(sh, b'e', &top, k, &[&pt[..10], &pt[10..20]]),
            Err(CKR_DATA_LEN_RANGE)
        );
        // Not for signing, digests or wrapping.
        assert_eq!(
            c.init(sh, b's', &m(CKM_AES_ECB), k),
            Err(CKR_MECHANISM_INVALID)
        );
        assert_eq!(
            c.init(sh, b'h', &ctr(cb, 128), 0),
            Err(CKR_MECHANISM_INVALID)
        );
        assert_eq!(
            c.wrap(sh, &m(CKM_AES_ECB), k, generic),
            Err(CKR_MECHANISM_INVALID)
        );
        assert_eq!(
            c.wrap(sh, &mp(CKM_AES_CBC, &iv), k, generic),
            Err(CKR_MECHANISM_INVALID)
        );
        assert_eq!(
            c.init(sh, b'e', &m(CKM_SHA_1_HMAC), k),
            Err(CKR_MECHANISM_INVALID)
        );
    }
    // Wrong keys: a generic secret does not encrypt (its CKA_ENCRYPT is
    // false), an EC private key neither; an EC key makes no HMAC, an AES
    // key no ECDSA signature.
    assert_eq!(
        c.init(sh, b'e', &m(CKM_AES_ECB), generic),
        Err(CKR_KEY_FUNCTION_NOT_PERMITTED)
    );
    assert_eq!(
        c.init(sh, b'd', &ctr(cb, 128), generic),
        Err(CKR_KEY_FUNCTION_NOT_PERMITTED)
    );
    let (ec_pub, ec) = c
        .gen_pair(
            sh,
            &m(CKM_EC_KEY_PAIR_GEN),
            t(vec![
                (CKA_TOKEN, V::B(false)),
                (CKA_EC_PARAMS, V::D(P256.to_vec())),
            ]),
            t(vec![(CKA_TOKEN, V::B(false))]),
        )
        .unwrap();
    assert_eq!(
        c.init(sh, b'e', &m(CKM_AES_ECB), ec),
        Err(CKR_KEY_FUNCTION_NOT_PERMITTED)
    );
    assert_eq!(
        c.init(sh, b's', &m(CKM_SHA384_HMAC), ec),
        Err(CKR_KEY_TYPE_INCONSISTENT)
    );
    assert_eq!(
        c.init(sh, b'v', &m(CKM_SHA512_HMAC), ec_pub),
        Err(CKR_KEY_TYPE_INCONSISTENT)
    );
    assert_eq!(
        c.init(sh, b's', &m(CKM_ECDSA), aes),
        Err(CKR_KEY_TYPE_INCONSISTENT)
    );
    // HMAC and digests take no parameter.
    assert_eq!(
        c.init(sh, b's', &mp(CKM_SHA_1_HMAC, &[1]), generic),
        Err(CKR_MECHANISM_PARAM_INVALID)
    );
    assert_eq!(
        c.init(sh, b'h', &mp(CKM_SHA512, &[1]), 0),
        Err(CKR_MECHANISM_PARAM_INVALID)
    );
    // NULL pointers, each on a fresh session (whether a failed call ends
    // the operation is not what is checked here).
    let f = c.f;
    // SAFETY: deliberate NULL pointers; everything else is live.
    unsafe {
        let s2 = session(&c);
        let sh = s2.handle();
        let mut bad = CK_MECHANISM {
            mechanism: CKM_AES_CTR,
            pParameter: null_mut(),
            ulParameterLen: size_of::<CK_AES_CTR_PARAMS>() as _,
        };
        assert_eq!(
            f.C_EncryptInit.unwrap()(sh, &mut bad, aes),
            CKR_MECHANISM_PARAM_INVALID
        );
        bad.mechanism = CKM_AES_CBC;
        bad.ulParameterLen = 16;
        assert_eq!(
            f.C_DecryptInit.unwrap()(sh, &mut bad, aes),
            CKR_MECHANISM_PARAM_INVALID
        );
        assert_eq!(
            f.C_EncryptInit.unwrap()(sh, null_mut(), aes),
            CKR_ARGUMENTS_BAD
        );
        assert_eq!(f.C_DigestInit.unwrap()(sh, null_mut()), CKR_ARGUMENTS_BAD);
        assert_eq!(
            f.C_SignInit.unwrap()(sh, null_mut(), generic),
            CKR_ARGUMENTS_BAD
        );
        assert_eq!(
            f.C_VerifyInit.unwrap()(sh, null_mut(), generic),
            CKR_ARGUMENTS_BAD
        );
        drop(s2);
        let s2 = session(&c);
        let sh = s2.handle();
        let mut sha1 = m(CKM_SHA_1).raw();
        assert_eq!(f.C_DigestInit.unwrap()(sh, &mut sha1), CKR_OK);
        let mut len: CK_ULONG = 0;
        assert_eq!(
            f.C_Digest.unwrap()(sh, null_mut(), 3, null_mut(), &mut len),
            CKR_ARGUMENTS_BAD
        );
        drop(s2);
        let s2 = session(&c);
        let sh = s2.handle();
        let mut ecb = m(CKM_AES_ECB).raw();
        assert_eq!(f.C_EncryptInit.unwrap()(sh, &mut ecb, aes), CKR_OK);
        let mut d = [0u8; 16];
        assert_eq!(
            f.C_Encrypt.unwrap()(sh, d.as_mut_ptr(), 16, null_mut(), null_mut()),
            CKR_ARGUMENTS_BAD
        );
        drop(s2);
        let s2 = session(&c);
        let sh = s2.handle();
        let mut hm = m(CKM_SHA384_HMAC).raw();
        assert_eq!(f.C_SignInit.unwrap()(sh, &mut hm, generic), CKR_OK);
        assert_eq!(
            f.C_SignUpdate.unwrap()(sh, null_mut(), 5),
            CKR_ARGUMENTS_BAD
        );
        drop(s2);
        // A short buffer keeps the operation; the right size finishes it.
        let s2 = session(&c);
        let sh = s2.handle();
        assert_eq!(f.C_SignInit.unwrap()(sh, &mut hm, generic), CKR_OK);
        let mut msg = *b"abc";
        assert_eq!(f.C_SignUpdate.unwrap()(sh, msg.as_mut_ptr(), 3), CKR_OK);
        let mut out = [0u8; 48];
        let mut len: CK_ULONG = 47;
        assert_eq!(
            f.C_SignFinal.unwrap()(sh, out.as_mut_ptr(), &mut len),
            CKR_BUFFER_TOO_SMALL
        );
        assert_eq!(len, 48);
        assert_eq!(
            f.C_SignInit.unwrap()(sh, &mut hm, generic),
            CKR_OPERATION_ACTIVE
        );
        assert_eq!(
            f.C_SignFinal.unwrap()(sh, out.as_mut_ptr(), &mut len),
            CKR_OK
        );
        assert_eq!(len, 48);
        assert_eq!(
            out.to_vec(),
            c.one(sh, b's', &m(CKM_SHA384_HMAC), generic, b"abc")
                .unwrap()
        );
        drop(s2);
    }
    drop(s);
    c.p11.finalize().unwrap();
}

/// What the walk needs of a mechanism: how to get a key of a size, the
/// mechanism with its parameters, and the input of an operation.
fn key_for(
    c: &Ctx,
    sh: CK_SESSION_HANDLE,
    ty: CK_MECHANISM_TYPE,
    size: CK_ULONG,
    cluster_aes: CK_OBJECT_HANDLE,
) -> Option<(CK_OBJECT_HANDLE, CK_OBJECT_HANDLE)> {
    let pair = |gen: CK_MECHANISM_TYPE, extra: Vec<(CK_ATTRIBUTE_TYPE, V)>| {
        let mut public = vec![(CKA_TOKEN, V::B(false))];
        public.extend(extra);
        let (p, q) = c
            .gen_pair(sh, &m(gen), t(public), t(vec![(CKA_TOKEN, V::B(false))]))
            .unwrap_or_else(|rv| panic!("session pair {gen:#x} size {size}: {rv:#x}"));
        Some((q, p))
    };
    match ty {
        CKM_AES_GCM | CKM_AES_CBC_PAD | CKM_AES_CBC | CKM_AES_ECB | CKM_AES_CTR
        | CKM_AES_KEY_WRAP | CKM_AES_KEY_WRAP_PAD | CKM_AES_KEY_WRAP_KWP => {
            let k = aes_key(c, sh, &vec![3u8; size as usize]);
            Some((k, k))
        }
        CKM_KMS_CIPHERTEXT => {
            assert_eq!(size, 32);
            Some((cluster_aes, cluster_aes))
        }
        CKM_SHA_1_HMAC | CKM_SHA256_HMAC | CKM_SHA384_HMAC | CKM_SHA512_HMAC => {
            let k = hmac_key(c, sh, &vec![5u8; size as usize]);
            Some((k, k))
        }
        CKM_ECDSA | CKM_ECDSA_SHA256 | CKM_ECDSA_SHA384 | CKM_ECDSA_SHA512 => pair(
            CKM_EC_KEY_PAIR_GEN,
            vec![(
                CKA_EC_PARAMS,
                V::D(if size == 256 { P256 } else { P384 }.to_vec()),
            )],
        ),
        CKM_EDDSA => pair(CKM_EC_EDWARDS_KEY_PAIR_GEN, vec![]),
        CKM_ML_DSA => pair(
            CKM_ML_DSA_KEY_PAIR_GEN,
            vec![(CKA_PARAMETER_SET, V::U(size))],
        ),
        CKM_RSA_PKCS
        | CKM_SHA256_RSA_PKCS
        | CKM_SHA384_RSA_PKCS
        | CKM_SHA512_RSA_PKCS
        | CKM_RSA_PKCS_PSS
        | CKM_SHA256_RSA_PKCS_PSS
        | CKM_SHA384_RSA_PKCS_PSS
        | CKM_SHA512_RSA_PKCS_PSS
        | CKM_RSA_PKCS_OAEP => {
            // One RSA pair per size for all RSA mechanisms.
            pair(
                CKM_RSA_PKCS_KEY_PAIR_GEN,
                vec![(CKA_MODULUS_BITS, V::U(size))],
            )
        }
        _ => None,
    }
}

fn mech_for(ty: CK_MECHANISM_TYPE) -> M {
    match ty {
        CKM_AES_GCM => gcm(&[1; 12], 128),
        CKM_AES_CBC_PAD | CKM_AES_CBC => mp(ty, &[2; 16]),
        CKM_AES_CTR => ctr([4; 16], 128),
        CKM_RSA_PKCS_PSS => pss(ty, CKM_SHA256, CKG_MGF1_SHA256, 32),
        CKM_SHA256_RSA_PKCS_PSS => pss(ty, CKM_SHA256, CKG_MGF1_SHA256, 32),
        CKM_SHA384_RSA_PKCS_PSS => pss(ty, CKM_SHA384, CKG_MGF1_SHA384, 48),
        CKM_SHA512_RSA_PKCS_PSS => pss(ty, CKM_SHA512, CKG_MGF1_SHA512, 64),
        CKM_RSA_PKCS_OAEP => oaep(),
        _ => m(ty),
    }
}

/// The message a signature mechanism signs in the walk.
fn sign_input(ty: CK_MECHANISM_TYPE) -> Vec<u8> {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(b"walk").to_vec();
    match ty {
        CKM_ECDSA | CKM_RSA_PKCS_PSS => digest,
        CKM_RSA_PKCS => {
            let mut v = h("3031300d060960864801650304020105000420");
            v.extend(digest);
            v
        }
        _ => b"walk the mechanism list".to_vec(),
    }
}

#[test]
fn mechanism_info_is_what_the_module_does() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let node = KmsNode::start("");
    let c = load(&node.config);
    let s = session(&c);
    let sh = s.handle();
    let cluster_aes = c
        .gen(
            sh,
            &m(CKM_AES_KEY_GEN),
            t(vec![
                (CKA_TOKEN, V::B(true)),
                (CKA_VALUE_LEN, V::U(32)),
                (CKA_LABEL, V::D(b"walk".to_vec())),
            ]),
        )
        .unwrap();
    let spare_aes = aes_key(&c, sh, &[9; 32]);
    // An extractable session secret to wrap.
    let secret = hmac_key(&c, sh, &[0x5a; 32]);
    let list = c.mechanisms();
    assert_eq!(list.len(), 38, "{list:x?}");
    for new in [
        CKM_AES_ECB,
        CKM_AES_CBC,
        CKM_AES_CTR,
        CKM_SHA_1_HMAC,
        CKM_SHA384_HMAC,
        CKM_SHA512_HMAC,
        CKM_SHA_1,
        CKM_SHA384,
        CKM_SHA512,
    ] {
        assert!(list.contains(&new), "{new:#x}");
    }
    let ops = [
        (CKF_ENCRYPT, b'e'),
        (CKF_DECRYPT, b'd'),
        (CKF_SIGN, b's'),
        (CKF_VERIFY, b'v'),
        (CKF_DIGEST, b'h'),
    ];
    let mut done = 0;
    for &ty in &list {
        let info = c.info(ty);
        let f = info.flags;
        let mech = mech_for(ty);
        // Operations not claimed are refused, whatever the key.
        for (flag, kind) in ops {
            if f & flag == 0 {
                assert_eq!(
                    c.init(sh, kind, &mech, spare_aes),
                    Err(CKR_MECHANISM_INVALID),
                    "{ty:#x} does not claim {flag:#x}"
                );
            }
        }
        if f & CKF_GENERATE == 0 {
            assert_eq!(
                c.gen(sh, &mech, t(vec![])),
                Err(CKR_MECHANISM_INVALID),
                "{ty:#x}"
            );
        }
        if f & CKF_GENERATE_KEY_PAIR == 0 {
            assert_eq!(
                c.gen_pair(sh, &mech, t(vec![]), t(vec![])),
                Err(CKR_MECHANISM_INVALID),
                "{ty:#x}"
            );
        }
        if f & CKF_WRAP == 0 {
            assert_eq!(
                c.wrap(sh, &mech, spare_aes, secret),
                Err(CKR_MECHANISM_INVALID),
                "{ty:#x}"
            );
        }
        if f & CKF_UNWRAP == 0 {
            let tpl = t(vec![
                (CKA_CLASS, V::U(CKO_SECRET_KEY)),
                (CKA_KEY_TYPE, V::U(CKK_GENERIC_SECRET)),
                (CKA_TOKEN, V::B(false)),
            ]);
            assert_eq!(
                c.unwrap(sh, &mech, spare_aes, &[0; 40], tpl),
                Err(CKR_MECHANISM_INVALID),
                "{ty:#x}"
            );
        }
        // Claimed operations work at the minimum and maximum key size.
        let sizes: Vec<CK_ULONG> = if info.ulMinKeySize == info.ulMaxKeySize {
            vec![info.ulMinKeySize]
        } else {
            vec![info.ulMinKeySize, info.ulMaxKeySize]
        };
        for &size in &sizes {
            if f & CKF_DIGEST != 0 {
                let want = ABC.iter().find(|(t, _)| *t == ty).unwrap().1;
                assert_eq!(c.one(sh, b'h', &mech, 0, b"abc").unwrap(), h(want));
                done += 1;
            }
            if f & CKF_GENERATE != 0 {
                let len = if ty == CKM_GENERIC_SECRET_KEY_GEN {
                    size / 8
                } else {
                    size
                };
                let k = c
                    .gen(
                        sh,
                        &mech,
                        t(vec![(CKA_TOKEN, V::B(false)), (CKA_VALUE_LEN, V::U(len))]),
                    )
                    .unwrap_or_else(|rv| panic!("{ty:#x} size {size}: {rv:#x}"));
                assert_eq!(c.attr(sh, k, CKA_VALUE).unwrap().len(), len as usize);
                // One past the range is refused.
                let over = len + if ty == CKM_AES_KEY_GEN { 8 } else { 1 };
                if size == info.ulMaxKeySize {
                    assert!(c
                        .gen(
                            sh,
                            &mech,
                            t(vec![(CKA_TOKEN, V::B(false)), (CKA_VALUE_LEN, V::U(over))])
                        )
                        .is_err());
                }
                done += 1;
            }
            if f & CKF_GENERATE_KEY_PAIR != 0 {
                let extra = match ty {
                    CKM_EC_KEY_PAIR_GEN => {
                        vec![(
                            CKA_EC_PARAMS,
                            V::D(if size == 256 { P256 } else { P384 }.to_vec()),
                        )]
                    }
                    CKM_RSA_PKCS_KEY_PAIR_GEN => vec![(CKA_MODULUS_BITS, V::U(size))],
                    CKM_ML_DSA_KEY_PAIR_GEN => vec![(CKA_PARAMETER_SET, V::U(size))],
                    _ => vec![],
                };
                let mut public = vec![(CKA_TOKEN, V::B(false))];
                public.extend(extra);
                let (p, _) = c
                    .gen_pair(sh, &mech, t(public), t(vec![(CKA_TOKEN, V::B(false))]))
                    .unwrap_or_else(|rv| panic!("{ty:#x} size {size}: {rv:#x}"));
                assert_eq!(c.attr(sh, p, CKA_TOKEN).unwrap(), [0]);
                done += 1;
            }
            let Some((key, public)) = key_for(&c, sh, ty, size, cluster_aes) else {
                continue;
            };
            if f & CKF_ENCRYPT != 0 && ty == CKM_RSA_PKCS_OAEP {
                // RSA-OAEP: the module encrypts with the public key object,
                // OpenSSL with the exported public key; the private key
                // object decrypts both.
                let ct = c
                    .one(sh, b'e', &mech, public, b"oaep by the module")
                    .unwrap_or_else(|rv| panic!("{ty:#x}: {rv:#x}"));
                assert_eq!(ct.len() * 8, size as usize);
                assert_eq!(
                    c.one(sh, b'd', &mech, key, &ct).unwrap(),
                    b"oaep by the module"
                );
                assert_eq!(
                    c.one(sh, b'e', &mech, key, b"x"),
                    Err(CKR_KEY_FUNCTION_NOT_PERMITTED),
                    "the private key object does not encrypt"
                );
                assert_eq!(
                    c.one(sh, b'e', &mech, public, &vec![0u8; size as usize / 8 - 65]),
                    Err(CKR_DATA_LEN_RANGE),
                    "one byte over k - 2 hLen - 2"
                );
                let ct = openssl_oaep_sha256(
                    &c.attr(sh, public, CKA_PUBLIC_KEY_INFO).unwrap(),
                    b"oaep walk",
                );
                assert_eq!(ct.len() * 8, size as usize);
                assert_eq!(c.one(sh, b'd', &mech, key, &ct).unwrap(), b"oaep walk");
                done += 1;
            } else if f & CKF_ENCRYPT != 0 {
                assert!(f & CKF_DECRYPT != 0);
                let data = [0x11u8; 32];
                let ct = c
                    .one(sh, b'e', &mech, key, &data)
                    .unwrap_or_else(|rv| panic!("{ty:#x}: {rv:#x}"));
                assert_eq!(c.one(sh, b'd', &mech, key, &ct).unwrap(), data);
                done += 1;
            } else if f & CKF_DECRYPT != 0 {
                // RSA-OAEP: OpenSSL encrypts with the public key.
                assert_eq!(ty, CKM_RSA_PKCS_OAEP);
                let ct = openssl_oaep_sha256(
                    &c.attr(sh, public, CKA_PUBLIC_KEY_INFO).unwrap(),
                    b"oaep walk",
                );
                assert_eq!(ct.len() * 8, size as usize);
                assert_eq!(c.one(sh, b'd', &mech, key, &ct).unwrap(), b"oaep walk");
                done += 1;
            }
            if f & CKF_SIGN != 0 {
                assert!(f & CKF_VERIFY != 0);
                let msg = sign_input(ty);
                let sig = c
                    .one(sh, b's', &mech, key, &msg)
                    .unwrap_or_else(|rv| panic!("{ty:#x} size {size}: {rv:#x}"));
                c.verify(sh, &mech, public, &msg, &sig)
                    .unwrap_or_else(|rv| panic!("{ty:#x}: {rv:#x}"));
                let mut bad = sig.clone();
                let last = bad.len() - 1;
                bad[last / 2] ^= 0x10;
                assert_eq!(
                    c.verify(sh, &mech, public, &msg, &bad),
                    Err(CKR_SIGNATURE_INVALID),
                    "{ty:#x}"
                );
                done += 1;
            }
            if f & CKF_WRAP != 0 {
                assert!(f & CKF_UNWRAP != 0);
                let wrapped = c
                    .wrap(sh, &mech, key, secret)
                    .unwrap_or_else(|rv| panic!("{ty:#x}: {rv:#x}"));
                let k = c
                    .unwrap(
                        sh,
                        &mech,
                        key,
                        &wrapped,
                        t(vec![
                            (CKA_CLASS, V::U(CKO_SECRET_KEY)),
                            (CKA_KEY_TYPE, V::U(CKK_GENERIC_SECRET)),
                            (CKA_TOKEN, V::B(false)),
                        ]),
                    )
                    .unwrap();
                assert_eq!(c.attr(sh, k, CKA_VALUE).unwrap(), [0x5a; 32]);
                done += 1;
            }
        }
    }
    eprintln!("{} mechanisms, {done} claimed operations done", list.len());
    // 4 digests, 4 key generations, 7 key-pair generations, 17 round
    // trips, 2 OAEP round trips, 35 signatures, 10 wraps.
    assert_eq!(done, 79);
    drop(s);
    c.p11.finalize().unwrap();
}

#[test]
fn session_key_pairs_live_with_their_session() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let node = KmsNode::start("");
    let c = load(&node.config);
    let s = session(&c);
    let sh = s.handle();
    let (p, q) = c
        .gen_pair(
            sh,
            &m(CKM_EC_KEY_PAIR_GEN),
            t(vec![
                (CKA_TOKEN, V::B(false)),
                (CKA_EC_PARAMS, V::D(P384.to_vec())),
                (CKA_LABEL, V::D(b"mine".to_vec())),
            ]),
            t(vec![
                (CKA_TOKEN, V::B(false)),
                (CKA_LABEL, V::D(b"mine".to_vec())),
            ]),
        )
        .unwrap();
    assert_eq!(c.attr(sh, q, CKA_TOKEN).unwrap(), [0]);
    assert_eq!(
        c.attr(sh, q, CKA_CLASS).unwrap(),
        CKO_PRIVATE_KEY.to_ne_bytes()
    );
    assert_eq!(c.attr(sh, q, CKA_VALUE), Err(CKR_ATTRIBUTE_SENSITIVE));
    assert_eq!(c.attr(sh, q, CKA_EXTRACTABLE).unwrap(), [0]);
    assert_eq!(c.attr(sh, p, CKA_EC_PARAMS).unwrap(), P384);
    assert_eq!(c.attr(sh, p, CKA_EC_POINT).unwrap().len(), 2 + 97);
    assert_eq!(c.find(sh, "mine").len(), 2);
    // Not a cluster key.
    let listed = ok(&node.server.cli(None, &["ls-key", "-e", ENCLAVE]));
    assert!(!listed.contains("mine"), "{listed}");
    // ECDSA-SHA384 checked by OpenSSL.
    let sig = c
        .one(sh, b's', &m(CKM_ECDSA_SHA384), q, b"session pair")
        .unwrap();
    assert_eq!(sig.len(), 96);
    let spki = c.attr(sh, p, CKA_PUBLIC_KEY_INFO).unwrap();
    let pk = openssl::pkey::PKey::public_key_from_der(&spki).unwrap();
    let (r, s2) = sig.split_at(48);
    let der = openssl::ecdsa::EcdsaSig::from_private_components(
        openssl::bn::BigNum::from_slice(r).unwrap(),
        openssl::bn::BigNum::from_slice(s2).unwrap(),
    )
    .unwrap()
    .to_der()
    .unwrap();
    let mut v = openssl::sign::Verifier::new(openssl::hash::MessageDigest::sha384(), &pk).unwrap();
    assert!(v.verify_oneshot(&der, b"session pair").unwrap());
    // Both objects of a session pair can be destroyed (the public first).
    let f = c.f;
    // SAFETY: live handles.
    unsafe {
        assert_eq!(f.C_DestroyObject.unwrap()(sh, p), CKR_OK);
    }
    assert_eq!(c.attr(sh, p, CKA_TOKEN), Err(CKR_OBJECT_HANDLE_INVALID));
    c.one(sh, b's', &m(CKM_ECDSA), q, &[1; 48]).unwrap();
    // Mixed CKA_TOKEN is inconsistent.
    assert_eq!(
        c.gen_pair(
            sh,
            &m(CKM_EC_EDWARDS_KEY_PAIR_GEN),
            t(vec![(CKA_TOKEN, V::B(false))]),
            t(vec![(CKA_TOKEN, V::B(true))]),
        ),
        Err(CKR_TEMPLATE_INCONSISTENT)
    );
    // A read-only session can make session key pairs.
    let ro = c.p11.open_ro_session(c.slot).unwrap();
    let (_, edq) = c
        .gen_pair(
            ro.handle(),
            &m(CKM_EC_EDWARDS_KEY_PAIR_GEN),
            t(vec![
                (CKA_TOKEN, V::B(false)),
                (CKA_LABEL, V::D(b"ro".to_vec())),
            ]),
            t(vec![(CKA_TOKEN, V::B(false))]),
        )
        .unwrap();
    assert_eq!(
        c.one(ro.handle(), b's', &m(CKM_EDDSA), edq, b"x")
            .unwrap()
            .len(),
        64
    );
    assert_eq!(c.find(sh, "ro").len(), 2);
    // Closing the session destroys its pairs.
    drop(ro);
    assert!(c.find(sh, "ro").is_empty());
    assert_eq!(c.attr(sh, edq, CKA_CLASS), Err(CKR_OBJECT_HANDLE_INVALID));
    assert_eq!(c.find(sh, "mine").len(), 1);
    drop(s);
    c.p11.finalize().unwrap();
}

#[test]
fn static_pin_and_api_key_logins() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let node = KmsNode::start("user_pin = \"s3cret-PIN\"\n");
    ok(&node
        .server
        .cli(None, &["add-key", "--enclave", ENCLAVE, "pinned"]));
    let c = load(&node.config);
    let info = c.p11.get_token_info(c.slot).unwrap();
    assert!(info.login_required());
    let s = session(&c);
    let sh = s.handle();
    // Before login the cluster key is not visible.
    assert!(c.find(sh, "pinned").is_empty());
    for wrong in ["s3cret-PIN ", "s3cret-pin", "s3cret-PI", "", "s3cret-PIN\n"] {
        match s.login(UserType::User, Some(&AuthPin::new(wrong.into()))) {
            Err(cryptoki::error::Error::Pkcs11(rv, _)) => {
                assert_eq!(rv, cryptoki::error::RvError::PinIncorrect, "{wrong:?}")
            }
            other => panic!("{wrong:?}: {other:?}"),
        }
    }
    assert!(c.find(sh, "pinned").is_empty());
    s.login(UserType::User, Some(&AuthPin::new("s3cret-PIN".into())))
        .unwrap();
    let found = c.find(sh, "pinned");
    assert_eq!(found.len(), 1);
    assert_eq!(c.attr(sh, found[0], CKA_PRIVATE).unwrap(), [1]);
    c.one(sh, b's', &m(CKM_SHA_1_HMAC), found[0], b"x").unwrap();
    s.logout().unwrap();
    assert!(c.find(sh, "pinned").is_empty());
    drop(s);
    c.p11.finalize().unwrap();

    // The PIN from a file.
    let pin = node.tmp.path().join("p11.pin");
    std::fs::write(&pin, "from-a-file\n").unwrap();
    let cfg2 = node.tmp.path().join("pin-file.toml");
    write_config(
        &cfg2,
        &[node.server.url()],
        &node.server.root_key,
        &format!("login = \"pin\"\nuser_pin_file = \"{}\"\n", pin.display()),
    );
    let c = load(&cfg2);
    let s = session(&c);
    assert!(s
        .login(UserType::User, Some(&AuthPin::new("s3cret-PIN".into())))
        .is_err());
    s.login(UserType::User, Some(&AuthPin::new("from-a-file".into())))
        .unwrap();
    assert_eq!(c.find(s.handle(), "pinned").len(), 1);
    drop(s);
    c.p11.finalize().unwrap();

    // login = "api-key": a wrong key (malformed or unknown) is a wrong PIN.
    let cfg3 = node.tmp.path().join("api-key.toml");
    std::fs::write(
        &cfg3,
        format!(
            "servers = [\"{}\"]\ninsecure = true\nlogin = \"api-key\"\nenclaves = [\"{ENCLAVE}\"]\n",
            node.server.url()
        ),
    )
    .unwrap();
    let c = load(&cfg3);
    let s = session(&c);
    let unknown = kms_client::ApiKey::generate();
    for wrong in [
        "garbage".to_string(),
        "k1:".to_string(),
        unknown.to_secret_string().to_string(),
    ] {
        match s.login(UserType::User, Some(&AuthPin::new(wrong.clone().into()))) {
            Err(cryptoki::error::Error::Pkcs11(rv, _)) => {
                assert_eq!(
                    rv,
                    cryptoki::error::RvError::PinIncorrect,
                    "{}",
                    wrong.len()
                )
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(c.find(s.handle(), "pinned").is_empty());
    let right = node.server.root_key.to_secret_string().to_string();
    s.login(UserType::User, Some(&AuthPin::new(right.into())))
        .unwrap();
    assert_eq!(c.find(s.handle(), "pinned").len(), 1);
    drop(s);
    c.p11.finalize().unwrap();
}

fn engine_sign(dir: &Path, cfg: &Path, label: &str) -> std::process::Output {
    let engine = Path::new("/usr/lib/x86_64-linux-gnu/engines-3/pkcs11.so");
    let conf = dir.join("engine.cnf");
    std::fs::write(
        &conf,
        format!(
            "openssl_conf = init\n[init]\nengines = engines\n[engines]\npkcs11 = p11\n\
             [p11]\nengine_id = pkcs11\ndynamic_path = {}\nMODULE_PATH = {}\nPIN = 1234\ninit = 0\n",
            engine.display(),
            module_path().display()
        ),
    )
    .unwrap();
    let digest = dir.join("digest");
    use sha2::Digest;
    std::fs::write(&digest, sha2::Sha256::digest(b"libp11")).unwrap();
    let sig = dir.join(format!("{label}.sig"));
    Command::new("openssl")
        .env("OPENSSL_CONF", &conf)
        .env("KMS_PKCS11_CONFIG", cfg)
        .args([
            "pkeyutl", "-engine", "pkcs11", "-keyform", "engine", "-sign", "-in",
        ])
        .arg(&digest)
        .arg("-out")
        .arg(&sig)
        .arg("-inkey")
        .arg(format!(
            "pkcs11:token={ENCLAVE};object={label};type=private"
        ))
        .output()
        .unwrap()
}

#[test]
fn hidden_key_types_let_libp11_use_the_token() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let node = KmsNode::start("");
    for (ty, name) in [("ec-p256", "eck"), ("ed25519", "edk"), ("ml-dsa-65", "mlk")] {
        ok(&node
            .server
            .cli(None, &["add-key", "--enclave", ENCLAVE, "--type", ty, name]));
    }
    let dir = node.tmp.path();
    let hidden = dir.join("hidden.toml");
    write_config(
        &hidden,
        &[node.server.url()],
        &node.server.root_key,
        "hide_key_types = [\"ED25519\", \"ml-dsa-65\"]\n",
    );
    // Through the module: the hidden keys are not there.
    let c = load(&hidden);
    let s = session(&c);
    let sh = s.handle();
    assert_eq!(c.find(sh, "eck").len(), 2);
    assert!(c.find(sh, "edk").is_empty());
    assert!(c.find(sh, "mlk").is_empty());
    assert_eq!(
        c.gen_pair(sh, &m(CKM_EC_EDWARDS_KEY_PAIR_GEN), t(vec![]), t(vec![])),
        Err(CKR_TEMPLATE_INCONSISTENT)
    );
    drop(s);
    c.p11.finalize().unwrap();
    // A per-slot list replaces the global one.
    let per_slot = dir.join("per-slot.toml");
    write_config(
        &per_slot,
        &[node.server.url()],
        &node.server.root_key,
        &format!("hide_key_types = [\"EC-P256\"]\n[slot.\"{ENCLAVE}\"]\nhide_key_types = [\"ML-DSA-65\"]\n"),
    );
    let c = load(&per_slot);
    let s = session(&c);
    assert_eq!(c.find(s.handle(), "eck").len(), 2);
    assert_eq!(c.find(s.handle(), "edk").len(), 2);
    assert!(c.find(s.handle(), "mlk").is_empty());
    drop(s);
    c.p11.finalize().unwrap();

    if !Path::new("/usr/lib/x86_64-linux-gnu/engines-3/pkcs11.so").exists() {
        panic!("libengine-pkcs11-openssl is not installed: scripts/setup.sh --test");
    }
    // libp11 0.4.12 cannot use a token that shows an Ed25519 key...
    let o = engine_sign(dir, &node.config, "eck");
    assert!(
        !o.status.success(),
        "libp11 with an Ed25519 key on the token worked"
    );
    // ... and can with the option.
    let o = engine_sign(dir, &hidden, "eck");
    assert!(
        o.status.success(),
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    let sig = std::fs::read(dir.join("eck.sig")).unwrap();
    assert!(sig.len() > 64 && sig[0] == 0x30, "a DER ECDSA signature");
}

#[test]
fn pkcs11_tool_lists_and_tests_the_mechanisms() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let node = KmsNode::start("");
    ok(&node
        .server
        .cli(None, &["add-key", "--enclave", ENCLAVE, "tool-aes"]));
    let tool = || {
        let mut c = Command::new("pkcs11-tool");
        c.env("KMS_PKCS11_CONFIG", &node.config)
            .arg("--module")
            .arg(module_path())
            .args(["--token-label", ENCLAVE]);
        c
    };
    let out = tool().arg("--list-mechanisms").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{text}");
    for line in [
        "AES-ECB, keySize={16,32}, encrypt, decrypt",
        "AES-CBC, keySize={16,32}, encrypt, decrypt",
        "AES-CTR, keySize={16,32}, encrypt, decrypt",
        "SHA-1-HMAC, keySize={1,512}, sign, verify",
        "SHA384-HMAC, keySize={1,512}, sign, verify",
        "SHA512-HMAC, keySize={1,512}, sign, verify",
        "SHA-1, digest",
        "SHA384, digest",
        "SHA512, digest",
    ] {
        assert!(text.contains(line), "missing {line:?} in:\n{text}");
    }
    let out = tool()
        .args(["--login", "--pin", "1234", "--test"])
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{text}");
    assert!(out.status.success(), "{text}");
    assert!(text.contains("No errors"), "{text}");
    // pkcs11-tool's own digests and HMAC (SHA-1 digest of "abc").
    let input = node.tmp.path().join("abc");
    std::fs::write(&input, b"abc").unwrap();
    let out = tool()
        .args(["--hash", "-m", "SHA-1", "--input-file"])
        .arg(&input)
        .arg("--output-file")
        .arg(node.tmp.path().join("abc.sha1"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read(node.tmp.path().join("abc.sha1")).unwrap(),
        h("a9993e364706816aba3e25717850c26c9cd0d89d")
    );
}

/// RSA-OAEP (SHA-256, MGF1-SHA-256) encryption by OpenSSL with the public
/// key `spki` (SubjectPublicKeyInfo DER).
fn openssl_oaep_sha256(spki: &[u8], msg: &[u8]) -> Vec<u8> {
    let pk = openssl::pkey::PKey::public_key_from_der(spki).unwrap();
    let mut ctx = openssl::pkey_ctx::PkeyCtx::new(&pk).unwrap();
    ctx.encrypt_init().unwrap();
    ctx.set_rsa_padding(openssl::rsa::Padding::PKCS1_OAEP)
        .unwrap();
    ctx.set_rsa_oaep_md(openssl::md::Md::sha256()).unwrap();
    ctx.set_rsa_mgf1_md(openssl::md::Md::sha256()).unwrap();
    let mut ct = Vec::new();
    ctx.encrypt_to_vec(msg, &mut ct).unwrap();
    ct
}

/// The mappings of this process holding `needle`: (VmFlags, start address).
fn mappings_holding(needle: &[u8]) -> Vec<(String, usize)> {
    use std::os::unix::fs::FileExt;
    let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
    let mem = std::fs::File::open("/proc/self/mem").unwrap();
    let mut found = Vec::new();
    let mut range = None;
    for line in smaps.lines() {
        if let Some((r, rest)) = line.split_once(' ') {
            if let Some((a, b)) = r.split_once('-') {
                if let (Ok(a), Ok(b)) = (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16))
                {
                    // Readable private anonymous or heap mappings, under 64 MiB.
                    range = (rest.starts_with("rw") && b - a <= 64 << 20).then_some((a, b));
                    continue;
                }
            }
        }
        if let (Some(flags), Some((a, b))) = (line.strip_prefix("VmFlags:"), range) {
            let mut buf = vec![0u8; b - a];
            if mem.read_exact_at(&mut buf, a as u64).is_ok()
                && buf.windows(needle.len()).any(|w| w == needle)
            {
                found.push((flags.trim().to_string(), a));
            }
        }
    }
    found
}

#[test]
fn session_keys_live_in_locked_dump_excluded_memory() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let node = KmsNode::start("");
    let c = load(&node.config);
    let s = session(&c);
    let sh = s.handle();
    let value: [u8; 32] = rand::random();
    let key = aes_key(&c, sh, &value);
    let held = mappings_holding(&value);
    let secret_pages: Vec<_> = held
        .iter()
        .filter(|(f, _)| f.split(' ').any(|x| x == "dd"))
        .collect();
    assert_eq!(
        secret_pages.len(),
        1,
        "the key's value in dump-excluded memory: {held:?}"
    );
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    if root {
        assert!(
            secret_pages[0].0.split(' ').any(|x| x == "lo"),
            "not locked: {}",
            secret_pages[0].0
        );
    } else {
        println!("not root: the lock (VmFlags lo) depends on this user's limit and is not checked");
    }
    // The key works from there, and destroying the object zeroes its slot.
    let ct = c
        .one(sh, b'e', &sp_mech(CKM_AES_ECB), key, &[0u8; 16])
        .unwrap();
    assert_eq!(ct.len(), 16);
    let f = c.f;
    // SAFETY: a live session and object handle.
    assert_eq!(unsafe { f.C_DestroyObject.unwrap()(sh, key) }, CKR_OK);
    let after = mappings_holding(&value);
    assert!(
        after.iter().all(|(f, _)| !f.split(' ').any(|x| x == "dd")),
        "the destroyed key's value is still in the secret pages: {after:?}"
    );
}
