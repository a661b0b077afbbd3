//! The C boundary: every PKCS#11 entry point, the function lists and the
//! 3.0 interfaces. Each entry point reads its arguments and writes its
//! answers only through [`util`] (NULL checks first; every write checked
//! against the caller's capacity by [`util::copy_out`]), calls the safe
//! library inside a panic boundary ([`entry`]), and maps its `Result` to a
//! `CK_RV`. Nothing else in the crate uses `unsafe`.
//!
//! # Safety
//! The exported functions are called by PKCS#11 applications, which must
//! follow the PKCS#11 rules for the pointers they pass; the module checks
//! what it can (NULL, lengths, handles) and never trusts the rest beyond the
//! lengths given.

// Input from the network or from a C caller must never panic here: no
// unwrap, expect or unchecked indexing (tests excepted).
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]
#![allow(non_snake_case, clippy::missing_safety_doc)]

pub mod util;

use std::ffi::c_void;
use std::panic::AssertUnwindSafe;

use cryptoki_sys::*;

use crate::error::{rv_name, Error, Result};
use crate::log::Level;
use crate::mech::{self, Mech};
use crate::module::{self, Module};
use crate::ops::Kind;
use util::*;

const LIB_VERSION: CK_VERSION = CK_VERSION { major: 0, minor: 1 };

/// The panic boundary: runs `f`, maps its error to a `CK_RV`, and turns a
/// panic into `CKR_GENERAL_ERROR` with a log line.
fn entry(name: &'static str, f: impl FnOnce() -> Result<CK_RV>) -> CK_RV {
    match std::panic::catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(rv)) => rv,
        Ok(Err(e)) => {
            let rv = e.rv();
            match &e {
                Error::Ck(_) | Error::BufferTooSmall(_) => {
                    crate::log!(Level::Debug, "{name}: {} ({rv:#x})", rv_name(rv))
                }
                _ => crate::log!(Level::Info, "{name}: {} ({rv:#x}): {e}", rv_name(rv)),
            }
            rv
        }
        Err(p) => {
            let what = p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            crate::log!(Level::Error, "{name}: internal error (panic: {what})");
            CKR_GENERAL_ERROR
        }
    }
}

/// The initialized module.
fn m() -> Result<std::sync::Arc<Module>> {
    module::get()
}

fn ok(r: Result<()>) -> Result<CK_RV> {
    r.map(|()| CKR_OK)
}

// ---- general ----

#[no_mangle]
pub unsafe extern "C" fn C_Initialize(args: *mut c_void) -> CK_RV {
    entry("C_Initialize", || {
        let mut no_threads = false;
        // SAFETY: a non-NULL argument is a CK_C_INITIALIZE_ARGS; NULL is
        // checked by `read`.
        if let Some(a) = unsafe { read(args as *const CK_C_INITIALIZE_ARGS) } {
            // PKCS#11 says pReserved must be NULL. Only its value is looked
            // at: whatever it points to is never read.
            if !a.pReserved.is_null() {
                crate::log!(
                    Level::Error,
                    "C_Initialize: pReserved is not NULL (CKR_ARGUMENTS_BAD); \
                     name a configuration file with KMS_PKCS11_CONFIG"
                );
                return Err(Error::Ck(CKR_ARGUMENTS_BAD));
            }
            let fns = [
                a.CreateMutex.is_some(),
                a.DestroyMutex.is_some(),
                a.LockMutex.is_some(),
                a.UnlockMutex.is_some(),
            ];
            if fns.iter().any(|f| *f) && !fns.iter().all(|f| *f) {
                return Err(Error::Ck(CKR_ARGUMENTS_BAD));
            }
            // The module uses the operating system's locks: with mutex
            // functions, the caller must allow that.
            if fns[0] && a.flags & CKF_OS_LOCKING_OK == 0 {
                return Err(Error::Ck(CKR_CANT_LOCK));
            }
            no_threads = a.flags & CKF_LIBRARY_CANT_CREATE_OS_THREADS != 0;
        }
        ok(module::initialize(no_threads))
    })
}

#[no_mangle]
pub unsafe extern "C" fn C_Finalize(reserved: *mut c_void) -> CK_RV {
    entry("C_Finalize", || {
        if !reserved.is_null() {
            return Err(Error::Ck(CKR_ARGUMENTS_BAD));
        }
        ok(module::finalize())
    })
}

#[no_mangle]
pub unsafe extern "C" fn C_GetInfo(info: *mut CK_INFO) -> CK_RV {
    entry("C_GetInfo", || {
        m()?;
        // SAFETY: checked by `put`.
        unsafe {
            put(
                info,
                CK_INFO {
                    cryptokiVersion: CK_VERSION {
                        major: 2,
                        minor: 40,
                    },
                    manufacturerID: padded("kms"),
                    flags: 0,
                    libraryDescription: padded("KMS cluster PKCS#11 module"),
                    libraryVersion: LIB_VERSION,
                },
            )
        }?;
        Ok(CKR_OK)
    })
}

#[no_mangle]
pub unsafe extern "C" fn C_GetFunctionList(pp: *mut *mut CK_FUNCTION_LIST) -> CK_RV {
    entry("C_GetFunctionList", || {
        // SAFETY: checked by `put`.
        unsafe { put(pp, &FUNCTION_LIST as *const _ as *mut CK_FUNCTION_LIST) }?;
        Ok(CKR_OK)
    })
}

// ---- slots and tokens ----

#[no_mangle]
pub unsafe extern "C" fn C_GetSlotList(
    _present: CK_BBOOL,
    p: *mut CK_SLOT_ID,
    pn: *mut CK_ULONG,
) -> CK_RV {
    entry("C_GetSlotList", || {
        let m = m()?;
        let ids: Vec<CK_SLOT_ID> = m.slots.iter().map(|s| s.id).collect();
        // SAFETY: checked by `list`.
        unsafe { list(&ids, p, pn) }
    })
}

#[no_mangle]
pub unsafe extern "C" fn C_GetSlotInfo(id: CK_SLOT_ID, info: *mut CK_SLOT_INFO) -> CK_RV {
    entry("C_GetSlotInfo", || {
        let m = m()?;
        let slot = m
            .slots
            .get(m.slot(id)?)
            .ok_or(Error::Ck(CKR_SLOT_ID_INVALID))?;
        let v = CK_SLOT_INFO {
            slotDescription: padded(&format!("KMS enclave {}", slot.enclave)),
            manufacturerID: padded("kms"),
            flags: CKF_TOKEN_PRESENT,
            hardwareVersion: LIB_VERSION,
            firmwareVersion: LIB_VERSION,
        };
        // SAFETY: checked by `put`.
        unsafe { put(info, v) }?;
        Ok(CKR_OK)
    })
}

#[no_mangle]
pub unsafe extern "C" fn C_GetTokenInfo(id: CK_SLOT_ID, info: *mut CK_TOKEN_INFO) -> CK_RV {
    entry("C_GetTokenInfo", || {
        let m = m()?;
        let idx = m.slot(id)?;
        let slot = m.slots.get(idx).ok_or(Error::Ck(CKR_SLOT_ID_INVALID))?;
        let (all, rw) = m.session_counts(idx);
        let v = CK_TOKEN_INFO {
            label: padded(&slot.enclave),
            manufacturerID: padded("kms"),
            model: padded("kms-enclave"),
            serialNumber: padded(&format!("{:016x}", slot.id)),
            flags: m.token_flags(),
            ulMaxSessionCount: CK_EFFECTIVELY_INFINITE,
            ulSessionCount: all as CK_ULONG,
            ulMaxRwSessionCount: CK_EFFECTIVELY_INFINITE,
            ulRwSessionCount: rw as CK_ULONG,
            ulMaxPinLen: 256,
            ulMinPinLen: 0,
            ulTotalPublicMemory: CK_UNAVAILABLE_INFORMATION,
            ulFreePublicMemory: CK_UNAVAILABLE_INFORMATION,
            ulTotalPrivateMemory: CK_UNAVAILABLE_INFORMATION,
            ulFreePrivateMemory: CK_UNAVAILABLE_INFORMATION,
            hardwareVersion: LIB_VERSION,
            firmwareVersion: LIB_VERSION,
            utcTime: [b' '; 16],
        };
        // SAFETY: checked by `put`.
        unsafe { put(info, v) }?;
        Ok(CKR_OK)
    })
}

#[no_mangle]
pub unsafe extern "C" fn C_GetMechanismList(
    id: CK_SLOT_ID,
    p: *mut CK_MECHANISM_TYPE,
    pn: *mut CK_ULONG,
) -> CK_RV {
    entry("C_GetMechanismList", || {
        let m = m()?;
        m.slot(id)?;
        // SAFETY: checked by `list`.
        unsafe { list(mech::LIST, p, pn) }
    })
}

#[no_mangle]
pub unsafe extern "C" fn C_GetMechanismInfo(
    id: CK_SLOT_ID,
    ty: CK_MECHANISM_TYPE,
    info: *mut CK_MECHANISM_INFO,
) -> CK_RV {
    entry("C_GetMechanismInfo", || {
        let m = m()?;
        m.slot(id)?;
        let (min, max, flags) = mech::info(ty).ok_or(Error::Ck(CKR_MECHANISM_INVALID))?;
        let v = CK_MECHANISM_INFO {
            ulMinKeySize: min,
            ulMaxKeySize: max,
            flags,
        };
        // SAFETY: checked by `put`.
        unsafe { put(info, v) }?;
        Ok(CKR_OK)
    })
}

#[no_mangle]
pub unsafe extern "C" fn C_InitToken(
    id: CK_SLOT_ID,
    _pin: *mut CK_UTF8CHAR,
    _n: CK_ULONG,
    _label: *mut CK_UTF8CHAR,
) -> CK_RV {
    entry("C_InitToken", || {
        let m = m()?;
        m.slot(id)?;
        // An enclave is made and deleted with the kms CLI, not here.
        Err(Error::Ck(CKR_FUNCTION_NOT_SUPPORTED))
    })
}

#[no_mangle]
pub unsafe extern "C" fn C_InitPIN(
    s: CK_SESSION_HANDLE,
    _p: *mut CK_UTF8CHAR,
    _n: CK_ULONG,
) -> CK_RV {
    entry("C_InitPIN", || {
        m()?.session(s)?;
        Err(Error::Ck(CKR_FUNCTION_NOT_SUPPORTED))
    })
}

#[no_mangle]
pub unsafe extern "C" fn C_SetPIN(
    s: CK_SESSION_HANDLE,
    _a: *mut CK_UTF8CHAR,
    _an: CK_ULONG,
    _b: *mut CK_UTF8CHAR,
    _bn: CK_ULONG,
) -> CK_RV {
    entry("C_SetPIN", || {
        m()?.session(s)?;
        Err(Error::Ck(CKR_FUNCTION_NOT_SUPPORTED))
    })
}

// ---- sessions ----

#[no_mangle]
pub unsafe extern "C" fn C_OpenSession(
    id: CK_SLOT_ID,
    flags: CK_FLAGS,
    _app: *mut c_void,
    _notify: CK_NOTIFY,
    ph: *mut CK_SESSION_HANDLE,
) -> CK_RV {
    entry("C_OpenSession", || {
        let m = m()?;
        let slot = m.slot(id)?;
        if flags & CKF_SERIAL_SESSION == 0 {
            return Err(Error::Ck(CKR_SESSION_PARALLEL_NOT_SUPPORTED));
        }
        if ph.is_null() {
            return Err(Error::Ck(CKR_ARGUMENTS_BAD));
        }
        let h = m.open_session(slot, flags & CKF_RW_SESSION != 0)?;
        // SAFETY: non-NULL.
        unsafe { put(ph, h) }?;
        Ok(CKR_OK)
    })
}

#[no_mangle]
pub unsafe extern "C" fn C_CloseSession(s: CK_SESSION_HANDLE) -> CK_RV {
    entry("C_CloseSession", || ok(m()?.close_session(s)))
}

#[no_mangle]
pub unsafe extern "C" fn C_CloseAllSessions(id: CK_SLOT_ID) -> CK_RV {
    entry("C_CloseAllSessions", || {
        let m = m()?;
        let slot = m.slot(id)?;
        m.close_all_sessions(slot);
        Ok(CKR_OK)
    })
}

#[no_mangle]
pub unsafe extern "C" fn C_GetSessionInfo(
    s: CK_SESSION_HANDLE,
    info: *mut CK_SESSION_INFO,
) -> CK_RV {
    entry("C_GetSessionInfo", || {
        let m = m()?;
        let sess = m.session(s)?;
        let sess = sess.lock();
        let v = CK_SESSION_INFO {
            slotID: m
                .slots
                .get(sess.slot)
                .map(|s| s.id)
                .ok_or(Error::Ck(CKR_GENERAL_ERROR))?,
            state: m.session_state(&sess),
            flags: CKF_SERIAL_SESSION | if sess.rw { CKF_RW_SESSION } else { 0 },
            ulDeviceError: 0,
        };
        // SAFETY: checked by `put`.
        unsafe { put(info, v) }?;
        Ok(CKR_OK)
    })
}

#[no_mangle]
pub unsafe extern "C" fn C_GetOperationState(
    s: CK_SESSION_HANDLE,
    _p: *mut CK_BYTE,
    _n: *mut CK_ULONG,
) -> CK_RV {
    entry("C_GetOperationState", || {
        m()?.session(s)?;
        Err(Error::Ck(CKR_FUNCTION_NOT_SUPPORTED))
    })
}

#[no_mangle]
pub unsafe extern "C" fn C_SetOperationState(
    s: CK_SESSION_HANDLE,
    _p: *mut CK_BYTE,
    _n: CK_ULONG,
    _a: CK_OBJECT_HANDLE,
    _b: CK_OBJECT_HANDLE,
) -> CK_RV {
    entry("C_SetOperationState", || {
        m()?.session(s)?;
        Err(Error::Ck(CKR_FUNCTION_NOT_SUPPORTED))
    })
}

#[no_mangle]
pub unsafe extern "C" fn C_Login(
    s: CK_SESSION_HANDLE,
    user: CK_USER_TYPE,
    pin: *mut CK_UTF8CHAR,
    n: CK_ULONG,
) -> CK_RV {
    entry("C_Login", || {
        let m = m()?;
        let slot = m.session_slot(s)?;
        // SAFETY: checked by `input`.
        let pin = unsafe { input(pin, n) }?;
        ok(m.login(slot, user, pin))
    })
}

#[no_mangle]
pub unsafe extern "C" fn C_Logout(s: CK_SESSION_HANDLE) -> CK_RV {
    entry("C_Logout", || {
        let m = m()?;
        let slot = m.session_slot(s)?;
        ok(m.logout(slot))
    })
}

// ---- objects ----

#[no_mangle]
pub unsafe extern "C" fn C_CreateObject(
    s: CK_SESSION_HANDLE,
    t: *mut CK_ATTRIBUTE,
    n: CK_ULONG,
    ph: *mut CK_OBJECT_HANDLE,
) -> CK_RV {
    entry("C_CreateObject", || {
        let m = m()?;
        m.session(s)?;
        // SAFETY: checked by `template`.
        let t = unsafe { template(t, n) }?;
        if ph.is_null() {
            return Err(Error::Ck(CKR_ARGUMENTS_BAD));
        }
        let h = m.create_object(s, &t)?;
        // SAFETY: non-NULL.
        unsafe { put(ph, h) }?;
        Ok(CKR_OK)
    })
}

#[no_mangle]
pub unsafe extern "C" fn C_CopyObject(
    s: CK_SESSION_HANDLE,
    _o: CK_OBJECT_HANDLE,
    _t: *mut CK_ATTRIBUTE,
    _n: CK_ULONG,
    _ph: *mut CK_OBJECT_HANDLE,
) -> CK_RV {
    entry("C_CopyObject", || {
        m()?.session(s)?;
        Err(Error::Ck(CKR_FUNCTION_NOT_SUPPORTED))
    })
}

#[no_mangle]
pub unsafe extern "C" fn C_DestroyObject(s: CK_SESSION_HANDLE, o: CK_OBJECT_HANDLE) -> CK_RV {
    entry("C_DestroyObject", || ok(m()?.destroy_object(s, o)))
}

#[no_mangle]
pub unsafe extern "C" fn C_GetObjectSize(
    s: CK_SESSION_HANDLE,
    o: CK_OBJECT_HANDLE,
    pn: *mut CK_ULONG,
) -> CK_RV {
    entry("C_GetObjectSize", || {
        let n = m()?.object_size(s, o)?;
        // SAFETY: checked by `put`.
        unsafe { put(pn, n as CK_ULONG) }?;
        Ok(CKR_OK)
    })
}

#[no_mangle]
pub unsafe extern "C" fn C_GetAttributeValue(
    s: CK_SESSION_HANDLE,
    o: CK_OBJECT_HANDLE,
    t: *mut CK_ATTRIBUTE,
    n: CK_ULONG,
) -> CK_RV {
    entry("C_GetAttributeValue", || {
        let m = m()?;
        if n > 0 && t.is_null() {
            m.session(s)?;
            return Err(Error::Ck(CKR_ARGUMENTS_BAD));
        }
        // SAFETY: checked by `attribute_values`; the caller promises `n`
        // attributes at `t`.
        unsafe { attribute_values(t, n, |types| m.get_attributes(s, o, types)) }
    })
}

#[no_mangle]
pub unsafe extern "C" fn C_SetAttributeValue(
    s: CK_SESSION_HANDLE,
    o: CK_OBJECT_HANDLE,
    _t: *mut CK_ATTRIBUTE,
    _n: CK_ULONG,
) -> CK_RV {
    entry("C_SetAttributeValue", || {
        let m = m()?;
        m.get_attributes(s, o, &[])?;
        // Cluster keys and session keys are not modifiable (CKA_MODIFIABLE false).
        Err(Error::Ck(CKR_ACTION_PROHIBITED))
    })
}

#[no_mangle]
pub unsafe extern "C" fn C_FindObjectsInit(
    s: CK_SESSION_HANDLE,
    t: *mut CK_ATTRIBUTE,
    n: CK_ULONG,
) -> CK_RV {
    entry("C_FindObjectsInit", || {
        let m = m()?;
        m.session(s)?;
        // SAFETY: checked by `template`.
        let t = unsafe { template(t, n) }?;
        ok(m.find_init(s, &t))
    })
}

#[no_mangle]
pub unsafe extern "C" fn C_FindObjects(
    s: CK_SESSION_HANDLE,
    p: *mut CK_OBJECT_HANDLE,
    max: CK_ULONG,
    pn: *mut CK_ULONG,
) -> CK_RV {
    entry("C_FindObjects", || {
        let m = m()?;
        m.session(s)?;
        if pn.is_null() || (p.is_null() && max > 0) {
            return Err(Error::Ck(CKR_ARGUMENTS_BAD));
        }
        let max = usize::try_from(max).unwrap_or(usize::MAX);
        let found = m.find(s, max)?;
        // SAFETY: the caller's buffer holds `max` handles; checked against
        // the length by `copy_out`.
        unsafe { copy_out(found.as_slice(), p, Some(max)) }?;
        // SAFETY: non-NULL.
        unsafe { put(pn, found.len() as CK_ULONG) }?;
        Ok(CKR_OK)
    })
}

#[no_mangle]
pub unsafe extern "C" fn C_FindObjectsFinal(s: CK_SESSION_HANDLE) -> CK_RV {
    entry("C_FindObjectsFinal", || ok(m()?.find_final(s)))
}

// ---- encrypt, decrypt, sign, verify, digest ----

unsafe fn op_init(
    name: &'static str,
    s: CK_SESSION_HANDLE,
    mech: *mut CK_MECHANISM,
    key: Option<CK_OBJECT_HANDLE>,
    kind: Kind,
) -> CK_RV {
    entry(name, || {
        let m = m()?;
        m.session(s)?;
        // SAFETY: checked by `mechanism`.
        let mech = unsafe { mechanism(mech) }?;
        ok(m.op_init(s, kind, mech, key))
    })
}

/// A single-part call (`data` given) or a `*Final` call.
unsafe fn op_finish(
    name: &'static str,
    s: CK_SESSION_HANDLE,
    data: Option<(*const CK_BYTE, CK_ULONG)>,
    out: *mut CK_BYTE,
    out_len: *mut CK_ULONG,
    kind: Kind,
) -> CK_RV {
    entry(name, || {
        let m = m()?;
        m.session(s)?;
        // SAFETY: checked by the helpers.
        let args = unsafe {
            let data = match data {
                Some((p, n)) => input(p, n).map(Some),
                None => Ok(None),
            };
            data.and_then(|d| Ok((d, capacity(out, out_len)?)))
        };
        // Bad arguments end the operation, like every error but
        // CKR_BUFFER_TOO_SMALL.
        let (data, cap) = args.inspect_err(|_| m.op_cancel(s, kind))?;
        // SAFETY: `capacity` checked the pointers; `deliver` checks the
        // output against `cap`.
        unsafe { deliver(m.op_finish(s, kind, data, cap), cap, out, out_len) }
    })
}

/// An `*Update` call that may return output (encrypt, decrypt): it never
/// does. With a NULL output buffer it is a size query and consumes nothing.
unsafe fn op_update_out(
    name: &'static str,
    s: CK_SESSION_HANDLE,
    data: *const CK_BYTE,
    n: CK_ULONG,
    out: *mut CK_BYTE,
    out_len: *mut CK_ULONG,
    kind: Kind,
) -> CK_RV {
    entry(name, || {
        let m = m()?;
        m.session(s)?;
        if out_len.is_null() {
            return Err(Error::Ck(CKR_ARGUMENTS_BAD));
        }
        // SAFETY: checked by `input`.
        let data = unsafe { input(data, n) }?;
        if out.is_null() {
            m.op_active(s, kind)?;
        } else {
            m.op_update(s, kind, data)?;
        }
        // SAFETY: non-NULL.
        unsafe { put(out_len, 0) }?;
        Ok(CKR_OK)
    })
}

unsafe fn op_update(
    name: &'static str,
    s: CK_SESSION_HANDLE,
    data: *const CK_BYTE,
    n: CK_ULONG,
    kind: Kind,
) -> CK_RV {
    entry(name, || {
        let m = m()?;
        m.session(s)?;
        // SAFETY: checked by `input`.
        let data = unsafe { input(data, n) }?;
        ok(m.op_update(s, kind, data))
    })
}

#[no_mangle]
pub unsafe extern "C" fn C_EncryptInit(
    s: CK_SESSION_HANDLE,
    mech: *mut CK_MECHANISM,
    key: CK_OBJECT_HANDLE,
) -> CK_RV {
    op_init("C_EncryptInit", s, mech, Some(key), Kind::Encrypt)
}

#[no_mangle]
pub unsafe extern "C" fn C_Encrypt(
    s: CK_SESSION_HANDLE,
    data: *mut CK_BYTE,
    n: CK_ULONG,
    out: *mut CK_BYTE,
    out_len: *mut CK_ULONG,
) -> CK_RV {
    op_finish("C_Encrypt", s, Some((data, n)), out, out_len, Kind::Encrypt)
}

#[no_mangle]
pub unsafe extern "C" fn C_EncryptUpdate(
    s: CK_SESSION_HANDLE,
    data: *mut CK_BYTE,
    n: CK_ULONG,
    out: *mut CK_BYTE,
    out_len: *mut CK_ULONG,
) -> CK_RV {
    op_update_out("C_EncryptUpdate", s, data, n, out, out_len, Kind::Encrypt)
}

#[no_mangle]
pub unsafe extern "C" fn C_EncryptFinal(
    s: CK_SESSION_HANDLE,
    out: *mut CK_BYTE,
    out_len: *mut CK_ULONG,
) -> CK_RV {
    op_finish("C_EncryptFinal", s, None, out, out_len, Kind::Encrypt)
}

#[no_mangle]
pub unsafe extern "C" fn C_DecryptInit(
    s: CK_SESSION_HANDLE,
    mech: *mut CK_MECHANISM,
    key: CK_OBJECT_HANDLE,
) -> CK_RV {
    op_init("C_DecryptInit", s, mech, Some(key), Kind::Decrypt)
}

#[no_mangle]
pub unsafe extern "C" fn C_Decrypt(
    s: CK_SESSION_HANDLE,
    data: *mut CK_BYTE,
    n: CK_ULONG,
    out: *mut CK_BYTE,
    out_len: *mut CK_ULONG,
) -> CK_RV {
    op_finish("C_Decrypt", s, Some((data, n)), out, out_len, Kind::Decrypt)
}

#[no_mangle]
pub unsafe extern "C" fn C_DecryptUpdate(
    s: CK_SESSION_HANDLE,
    data: *mut CK_BYTE,
    n: CK_ULONG,
    out: *mut CK_BYTE,
    out_len: *mut CK_ULONG,
) -> CK_RV {
    op_update_out("C_DecryptUpdate", s, data, n, out, out_len, Kind::Decrypt)
}

#[no_mangle]
pub unsafe extern "C" fn C_DecryptFinal(
    s: CK_SESSION_HANDLE,
    out: *mut CK_BYTE,
    out_len: *mut CK_ULONG,
) -> CK_RV {
    op_finish("C_DecryptFinal", s, None, out, out_len, Kind::Decrypt)
}

#[no_mangle]
pub unsafe extern "C" fn C_DigestInit(s: CK_SESSION_HANDLE, mech: *mut CK_MECHANISM) -> CK_RV {
    op_init("C_DigestInit", s, mech, None, Kind::Digest)
}

#[no_mangle]
pub unsafe extern "C" fn C_Digest(
    s: CK_SESSION_HANDLE,
    data: *mut CK_BYTE,
    n: CK_ULONG,
    out: *mut CK_BYTE,
    out_len: *mut CK_ULONG,
) -> CK_RV {
    op_finish("C_Digest", s, Some((data, n)), out, out_len, Kind::Digest)
}

#[no_mangle]
pub unsafe extern "C" fn C_DigestUpdate(
    s: CK_SESSION_HANDLE,
    data: *mut CK_BYTE,
    n: CK_ULONG,
) -> CK_RV {
    op_update("C_DigestUpdate", s, data, n, Kind::Digest)
}

#[no_mangle]
pub unsafe extern "C" fn C_DigestKey(s: CK_SESSION_HANDLE, _key: CK_OBJECT_HANDLE) -> CK_RV {
    entry("C_DigestKey", || {
        m()?.session(s)?;
        Err(Error::Ck(CKR_FUNCTION_NOT_SUPPORTED))
    })
}

#[no_mangle]
pub unsafe extern "C" fn C_DigestFinal(
    s: CK_SESSION_HANDLE,
    out: *mut CK_BYTE,
    out_len: *mut CK_ULONG,
) -> CK_RV {
    op_finish("C_DigestFinal", s, None, out, out_len, Kind::Digest)
}

#[no_mangle]
pub unsafe extern "C" fn C_SignInit(
    s: CK_SESSION_HANDLE,
    mech: *mut CK_MECHANISM,
    key: CK_OBJECT_HANDLE,
) -> CK_RV {
    op_init("C_SignInit", s, mech, Some(key), Kind::Sign)
}

#[no_mangle]
pub unsafe extern "C" fn C_Sign(
    s: CK_SESSION_HANDLE,
    data: *mut CK_BYTE,
    n: CK_ULONG,
    out: *mut CK_BYTE,
    out_len: *mut CK_ULONG,
) -> CK_RV {
    op_finish("C_Sign", s, Some((data, n)), out, out_len, Kind::Sign)
}

#[no_mangle]
pub unsafe extern "C" fn C_SignUpdate(
    s: CK_SESSION_HANDLE,
    data: *mut CK_BYTE,
    n: CK_ULONG,
) -> CK_RV {
    op_update("C_SignUpdate", s, data, n, Kind::Sign)
}

#[no_mangle]
pub unsafe extern "C" fn C_SignFinal(
    s: CK_SESSION_HANDLE,
    out: *mut CK_BYTE,
    out_len: *mut CK_ULONG,
) -> CK_RV {
    op_finish("C_SignFinal", s, None, out, out_len, Kind::Sign)
}

#[no_mangle]
pub unsafe extern "C" fn C_VerifyInit(
    s: CK_SESSION_HANDLE,
    mech: *mut CK_MECHANISM,
    key: CK_OBJECT_HANDLE,
) -> CK_RV {
    op_init("C_VerifyInit", s, mech, Some(key), Kind::Verify)
}

#[no_mangle]
pub unsafe extern "C" fn C_Verify(
    s: CK_SESSION_HANDLE,
    data: *mut CK_BYTE,
    n: CK_ULONG,
    sig: *mut CK_BYTE,
    sig_len: CK_ULONG,
) -> CK_RV {
    entry("C_Verify", || {
        let m = m()?;
        m.session(s)?;
        // SAFETY: checked by `input`.
        let args = unsafe { input(data, n).and_then(|d| Ok((d, input(sig, sig_len)?))) };
        let (data, sig) = args.inspect_err(|_| m.op_cancel(s, Kind::Verify))?;
        ok(m.verify_finish(s, Some(data), sig))
    })
}

#[no_mangle]
pub unsafe extern "C" fn C_VerifyUpdate(
    s: CK_SESSION_HANDLE,
    data: *mut CK_BYTE,
    n: CK_ULONG,
) -> CK_RV {
    op_update("C_VerifyUpdate", s, data, n, Kind::Verify)
}

#[no_mangle]
pub unsafe extern "C" fn C_VerifyFinal(
    s: CK_SESSION_HANDLE,
    sig: *mut CK_BYTE,
    sig_len: CK_ULONG,
) -> CK_RV {
    entry("C_VerifyFinal", || {
        let m = m()?;
        m.session(s)?;
        // SAFETY: checked by `input`.
        let sig = unsafe { input(sig, sig_len) }.inspect_err(|_| m.op_cancel(s, Kind::Verify))?;
        ok(m.verify_finish(s, None, sig))
    })
}

// ---- keys ----

#[no_mangle]
pub unsafe extern "C" fn C_GenerateKey(
    s: CK_SESSION_HANDLE,
    mech: *mut CK_MECHANISM,
    t: *mut CK_ATTRIBUTE,
    n: CK_ULONG,
    ph: *mut CK_OBJECT_HANDLE,
) -> CK_RV {
    entry("C_GenerateKey", || {
        let m = m()?;
        m.session(s)?;
        // SAFETY: checked by the helpers.
        let (mech, t) = unsafe { (mechanism(mech)?, template(t, n)?) };
        if ph.is_null() {
            return Err(Error::Ck(CKR_ARGUMENTS_BAD));
        }
        let h = m.generate_key(s, &mech, &t)?;
        // SAFETY: non-NULL.
        unsafe { put(ph, h) }?;
        Ok(CKR_OK)
    })
}

#[no_mangle]
pub unsafe extern "C" fn C_WrapKey(
    s: CK_SESSION_HANDLE,
    mech: *mut CK_MECHANISM,
    wrapping: CK_OBJECT_HANDLE,
    key: CK_OBJECT_HANDLE,
    out: *mut CK_BYTE,
    out_len: *mut CK_ULONG,
) -> CK_RV {
    entry("C_WrapKey", || {
        let m = m()?;
        m.session(s)?;
        // SAFETY: checked by the helpers.
        unsafe {
            let mech: Mech = mechanism(mech)?;
            let cap = capacity(out, out_len)?;
            deliver(m.wrap_key(s, mech, wrapping, key, cap), cap, out, out_len)
        }
    })
}

#[no_mangle]
pub unsafe extern "C" fn C_UnwrapKey(
    s: CK_SESSION_HANDLE,
    mech: *mut CK_MECHANISM,
    unwrapping: CK_OBJECT_HANDLE,
    wrapped: *mut CK_BYTE,
    wrapped_len: CK_ULONG,
    t: *mut CK_ATTRIBUTE,
    n: CK_ULONG,
    ph: *mut CK_OBJECT_HANDLE,
) -> CK_RV {
    entry("C_UnwrapKey", || {
        let m = m()?;
        m.session(s)?;
        // SAFETY: checked by the helpers.
        let (mech, wrapped, t) = unsafe {
            (
                mechanism(mech)?,
                input(wrapped, wrapped_len)?,
                template(t, n)?,
            )
        };
        if ph.is_null() {
            return Err(Error::Ck(CKR_ARGUMENTS_BAD));
        }
        let h = m.unwrap_key(s, mech, unwrapping, wrapped, &t)?;
        // SAFETY: non-NULL.
        unsafe { put(ph, h) }?;
        Ok(CKR_OK)
    })
}

#[no_mangle]
pub unsafe extern "C" fn C_SeedRandom(
    s: CK_SESSION_HANDLE,
    _p: *mut CK_BYTE,
    _n: CK_ULONG,
) -> CK_RV {
    entry("C_SeedRandom", || {
        m()?.session(s)?;
        // The operating system's generator takes no seed.
        Err(Error::Ck(CKR_RANDOM_SEED_NOT_SUPPORTED))
    })
}

#[no_mangle]
pub unsafe extern "C" fn C_GenerateRandom(
    s: CK_SESSION_HANDLE,
    p: *mut CK_BYTE,
    n: CK_ULONG,
) -> CK_RV {
    entry("C_GenerateRandom", || {
        let m = m()?;
        m.session(s)?;
        if n == 0 {
            return Ok(CKR_OK);
        }
        if p.is_null() || n > (1 << 30) {
            return Err(Error::Ck(CKR_ARGUMENTS_BAD));
        }
        // SAFETY: non-NULL; the caller promises `n` writable bytes, which
        // `fill` writes through `copy_out`.
        ok(unsafe { fill(p, n, |buf| m.random(s, buf)) })
    })
}

#[no_mangle]
pub unsafe extern "C" fn C_GetFunctionStatus(s: CK_SESSION_HANDLE) -> CK_RV {
    entry("C_GetFunctionStatus", || {
        m()?.session(s)?;
        Ok(CKR_FUNCTION_NOT_PARALLEL)
    })
}

#[no_mangle]
pub unsafe extern "C" fn C_CancelFunction(s: CK_SESSION_HANDLE) -> CK_RV {
    entry("C_CancelFunction", || {
        m()?.session(s)?;
        Ok(CKR_FUNCTION_NOT_PARALLEL)
    })
}

#[no_mangle]
pub unsafe extern "C" fn C_WaitForSlotEvent(
    flags: CK_FLAGS,
    _slot: *mut CK_SLOT_ID,
    _r: *mut c_void,
) -> CK_RV {
    entry("C_WaitForSlotEvent", || {
        m()?;
        // Slots never change between C_Initialize and C_Finalize: there is
        // never an event, and waiting for one is not supported.
        if flags & CKF_DONT_BLOCK != 0 {
            Ok(CKR_NO_EVENT)
        } else {
            Err(Error::Ck(CKR_FUNCTION_NOT_SUPPORTED))
        }
    })
}

#[no_mangle]
pub unsafe extern "C" fn C_LoginUser(
    s: CK_SESSION_HANDLE,
    user: CK_USER_TYPE,
    pin: *mut CK_UTF8CHAR,
    n: CK_ULONG,
    _name: *mut CK_UTF8CHAR,
    _name_len: CK_ULONG,
) -> CK_RV {
    C_Login(s, user, pin, n)
}

#[no_mangle]
pub unsafe extern "C" fn C_SessionCancel(s: CK_SESSION_HANDLE, flags: CK_FLAGS) -> CK_RV {
    entry("C_SessionCancel", || {
        let m = m()?;
        let sess = m.session(s)?;
        let mut sess = sess.lock();
        let o = &mut sess.ops;
        if flags & (CKF_ENCRYPT | CKF_WRAP) != 0 {
            o.encrypt = None;
        }
        if flags & (CKF_DECRYPT | CKF_UNWRAP) != 0 {
            o.decrypt = None;
        }
        if flags & CKF_SIGN != 0 {
            o.sign = None;
        }
        if flags & CKF_VERIFY != 0 {
            o.verify = None;
        }
        if flags & CKF_DIGEST != 0 {
            o.digest = None;
        }
        if flags & CKF_FIND_OBJECTS != 0 {
            sess.found = None;
        }
        Ok(CKR_OK)
    })
}

/// Defines entry points that this module does not support: they answer
/// `CKR_FUNCTION_NOT_SUPPORTED` whatever their arguments.
macro_rules! unsupported {
    ($( $name:ident ( $($arg:ident : $ty:ty),* ); )*) => {
        $(
            #[no_mangle]
            pub unsafe extern "C" fn $name($($arg: $ty),*) -> CK_RV {
                $( let _ = $arg; )*
                CKR_FUNCTION_NOT_SUPPORTED
            }
        )*
    };
}

unsupported! {
    C_SignRecoverInit(a: CK_SESSION_HANDLE, b: *mut CK_MECHANISM, c: CK_OBJECT_HANDLE);
    C_SignRecover(a: CK_SESSION_HANDLE, b: *mut CK_BYTE, c: CK_ULONG, d: *mut CK_BYTE, e: *mut CK_ULONG);
    C_VerifyRecoverInit(a: CK_SESSION_HANDLE, b: *mut CK_MECHANISM, c: CK_OBJECT_HANDLE);
    C_VerifyRecover(a: CK_SESSION_HANDLE, b: *mut CK_BYTE, c: CK_ULONG, d: *mut CK_BYTE, e: *mut CK_ULONG);
    C_DigestEncryptUpdate(a: CK_SESSION_HANDLE, b: *mut CK_BYTE, c: CK_ULONG, d: *mut CK_BYTE, e: *mut CK_ULONG);
    C_DecryptDigestUpdate(a: CK_SESSION_HANDLE, b: *mut CK_BYTE, c: CK_ULONG, d: *mut CK_BYTE, e: *mut CK_ULONG);
    C_SignEncryptUpdate(a: CK_SESSION_HANDLE, b: *mut CK_BYTE, c: CK_ULONG, d: *mut CK_BYTE, e: *mut CK_ULONG);
    C_DecryptVerifyUpdate(a: CK_SESSION_HANDLE, b: *mut CK_BYTE, c: CK_ULONG, d: *mut CK_BYTE, e: *mut CK_ULONG);
    C_GenerateKeyPair(a: CK_SESSION_HANDLE, b: *mut CK_MECHANISM, c: *mut CK_ATTRIBUTE, d: CK_ULONG, e: *mut CK_ATTRIBUTE, f: CK_ULONG, g: *mut CK_OBJECT_HANDLE, h: *mut CK_OBJECT_HANDLE);
    C_DeriveKey(a: CK_SESSION_HANDLE, b: *mut CK_MECHANISM, c: CK_OBJECT_HANDLE, d: *mut CK_ATTRIBUTE, e: CK_ULONG, f: *mut CK_OBJECT_HANDLE);
    C_MessageEncryptInit(a: CK_SESSION_HANDLE, b: *mut CK_MECHANISM, c: CK_OBJECT_HANDLE);
    C_EncryptMessage(a: CK_SESSION_HANDLE, b: *mut c_void, c: CK_ULONG, d: *mut CK_BYTE, e: CK_ULONG, f: *mut CK_BYTE, g: CK_ULONG, h: *mut CK_BYTE, i: *mut CK_ULONG);
    C_EncryptMessageBegin(a: CK_SESSION_HANDLE, b: *mut c_void, c: CK_ULONG, d: *mut CK_BYTE, e: CK_ULONG);
    C_EncryptMessageNext(a: CK_SESSION_HANDLE, b: *mut c_void, c: CK_ULONG, d: *mut CK_BYTE, e: CK_ULONG, f: *mut CK_BYTE, g: *mut CK_ULONG, h: CK_FLAGS);
    C_MessageEncryptFinal(a: CK_SESSION_HANDLE);
    C_MessageDecryptInit(a: CK_SESSION_HANDLE, b: *mut CK_MECHANISM, c: CK_OBJECT_HANDLE);
    C_DecryptMessage(a: CK_SESSION_HANDLE, b: *mut c_void, c: CK_ULONG, d: *mut CK_BYTE, e: CK_ULONG, f: *mut CK_BYTE, g: CK_ULONG, h: *mut CK_BYTE, i: *mut CK_ULONG);
    C_DecryptMessageBegin(a: CK_SESSION_HANDLE, b: *mut c_void, c: CK_ULONG, d: *mut CK_BYTE, e: CK_ULONG);
    C_DecryptMessageNext(a: CK_SESSION_HANDLE, b: *mut c_void, c: CK_ULONG, d: *mut CK_BYTE, e: CK_ULONG, f: *mut CK_BYTE, g: *mut CK_ULONG, h: CK_FLAGS);
    C_MessageDecryptFinal(a: CK_SESSION_HANDLE);
    C_MessageSignInit(a: CK_SESSION_HANDLE, b: *mut CK_MECHANISM, c: CK_OBJECT_HANDLE);
    C_SignMessage(a: CK_SESSION_HANDLE, b: *mut c_void, c: CK_ULONG, d: *mut CK_BYTE, e: CK_ULONG, f: *mut CK_BYTE, g: *mut CK_ULONG);
    C_SignMessageBegin(a: CK_SESSION_HANDLE, b: *mut c_void, c: CK_ULONG);
    C_SignMessageNext(a: CK_SESSION_HANDLE, b: *mut c_void, c: CK_ULONG, d: *mut CK_BYTE, e: CK_ULONG, f: *mut CK_BYTE, g: *mut CK_ULONG);
    C_MessageSignFinal(a: CK_SESSION_HANDLE);
    C_MessageVerifyInit(a: CK_SESSION_HANDLE, b: *mut CK_MECHANISM, c: CK_OBJECT_HANDLE);
    C_VerifyMessage(a: CK_SESSION_HANDLE, b: *mut c_void, c: CK_ULONG, d: *mut CK_BYTE, e: CK_ULONG, f: *mut CK_BYTE, g: CK_ULONG);
    C_VerifyMessageBegin(a: CK_SESSION_HANDLE, b: *mut c_void, c: CK_ULONG);
    C_VerifyMessageNext(a: CK_SESSION_HANDLE, b: *mut c_void, c: CK_ULONG, d: *mut CK_BYTE, e: CK_ULONG, f: *mut CK_BYTE, g: CK_ULONG);
    C_MessageVerifyFinal(a: CK_SESSION_HANDLE);
}

// ---- function lists and interfaces ----

macro_rules! function_list {
    ($ty:ident, $version:expr; $($extra:ident),*) => {
        $ty {
            version: $version,
            C_Initialize: Some(C_Initialize),
            C_Finalize: Some(C_Finalize),
            C_GetInfo: Some(C_GetInfo),
            C_GetFunctionList: Some(C_GetFunctionList),
            C_GetSlotList: Some(C_GetSlotList),
            C_GetSlotInfo: Some(C_GetSlotInfo),
            C_GetTokenInfo: Some(C_GetTokenInfo),
            C_GetMechanismList: Some(C_GetMechanismList),
            C_GetMechanismInfo: Some(C_GetMechanismInfo),
            C_InitToken: Some(C_InitToken),
            C_InitPIN: Some(C_InitPIN),
            C_SetPIN: Some(C_SetPIN),
            C_OpenSession: Some(C_OpenSession),
            C_CloseSession: Some(C_CloseSession),
            C_CloseAllSessions: Some(C_CloseAllSessions),
            C_GetSessionInfo: Some(C_GetSessionInfo),
            C_GetOperationState: Some(C_GetOperationState),
            C_SetOperationState: Some(C_SetOperationState),
            C_Login: Some(C_Login),
            C_Logout: Some(C_Logout),
            C_CreateObject: Some(C_CreateObject),
            C_CopyObject: Some(C_CopyObject),
            C_DestroyObject: Some(C_DestroyObject),
            C_GetObjectSize: Some(C_GetObjectSize),
            C_GetAttributeValue: Some(C_GetAttributeValue),
            C_SetAttributeValue: Some(C_SetAttributeValue),
            C_FindObjectsInit: Some(C_FindObjectsInit),
            C_FindObjects: Some(C_FindObjects),
            C_FindObjectsFinal: Some(C_FindObjectsFinal),
            C_EncryptInit: Some(C_EncryptInit),
            C_Encrypt: Some(C_Encrypt),
            C_EncryptUpdate: Some(C_EncryptUpdate),
            C_EncryptFinal: Some(C_EncryptFinal),
            C_DecryptInit: Some(C_DecryptInit),
            C_Decrypt: Some(C_Decrypt),
            C_DecryptUpdate: Some(C_DecryptUpdate),
            C_DecryptFinal: Some(C_DecryptFinal),
            C_DigestInit: Some(C_DigestInit),
            C_Digest: Some(C_Digest),
            C_DigestUpdate: Some(C_DigestUpdate),
            C_DigestKey: Some(C_DigestKey),
            C_DigestFinal: Some(C_DigestFinal),
            C_SignInit: Some(C_SignInit),
            C_Sign: Some(C_Sign),
            C_SignUpdate: Some(C_SignUpdate),
            C_SignFinal: Some(C_SignFinal),
            C_SignRecoverInit: Some(C_SignRecoverInit),
            C_SignRecover: Some(C_SignRecover),
            C_VerifyInit: Some(C_VerifyInit),
            C_Verify: Some(C_Verify),
            C_VerifyUpdate: Some(C_VerifyUpdate),
            C_VerifyFinal: Some(C_VerifyFinal),
            C_VerifyRecoverInit: Some(C_VerifyRecoverInit),
            C_VerifyRecover: Some(C_VerifyRecover),
            C_DigestEncryptUpdate: Some(C_DigestEncryptUpdate),
            C_DecryptDigestUpdate: Some(C_DecryptDigestUpdate),
            C_SignEncryptUpdate: Some(C_SignEncryptUpdate),
            C_DecryptVerifyUpdate: Some(C_DecryptVerifyUpdate),
            C_GenerateKey: Some(C_GenerateKey),
            C_GenerateKeyPair: Some(C_GenerateKeyPair),
            C_WrapKey: Some(C_WrapKey),
            C_UnwrapKey: Some(C_UnwrapKey),
            C_DeriveKey: Some(C_DeriveKey),
            C_SeedRandom: Some(C_SeedRandom),
            C_GenerateRandom: Some(C_GenerateRandom),
            C_GetFunctionStatus: Some(C_GetFunctionStatus),
            C_CancelFunction: Some(C_CancelFunction),
            C_WaitForSlotEvent: Some(C_WaitForSlotEvent),
            $( $extra: Some($extra), )*
        }
    };
}

static FUNCTION_LIST: CK_FUNCTION_LIST =
    function_list!(CK_FUNCTION_LIST, CK_VERSION { major: 2, minor: 40 };);

static FUNCTION_LIST_3_0: CK_FUNCTION_LIST_3_0 = function_list!(
    CK_FUNCTION_LIST_3_0, CK_VERSION { major: 3, minor: 0 };
    C_GetInterfaceList, C_GetInterface, C_LoginUser, C_SessionCancel,
    C_MessageEncryptInit, C_EncryptMessage, C_EncryptMessageBegin, C_EncryptMessageNext,
    C_MessageEncryptFinal, C_MessageDecryptInit, C_DecryptMessage, C_DecryptMessageBegin,
    C_DecryptMessageNext, C_MessageDecryptFinal, C_MessageSignInit, C_SignMessage,
    C_SignMessageBegin, C_SignMessageNext, C_MessageSignFinal, C_MessageVerifyInit,
    C_VerifyMessage, C_VerifyMessageBegin, C_VerifyMessageNext, C_MessageVerifyFinal
);

static INTERFACE_NAME: &[u8] = b"PKCS 11\0";

/// The interfaces offered: 3.0 first (the default), then 2.40.
fn interfaces() -> [CK_INTERFACE; 2] {
    [
        CK_INTERFACE {
            pInterfaceName: INTERFACE_NAME.as_ptr() as *mut CK_UTF8CHAR,
            pFunctionList: &FUNCTION_LIST_3_0 as *const _ as *mut c_void,
            flags: 0,
        },
        CK_INTERFACE {
            pInterfaceName: INTERFACE_NAME.as_ptr() as *mut CK_UTF8CHAR,
            pFunctionList: &FUNCTION_LIST as *const _ as *mut c_void,
            flags: 0,
        },
    ]
}

/// Storage that outlives the call for `C_GetInterface`'s returned pointer.
struct Interfaces([CK_INTERFACE; 2]);
// SAFETY: the pointers inside point to immutable statics.
unsafe impl Sync for Interfaces {}
// SAFETY: as above.
unsafe impl Send for Interfaces {}
static INTERFACES: std::sync::LazyLock<Interfaces> =
    std::sync::LazyLock::new(|| Interfaces(interfaces()));

#[no_mangle]
pub unsafe extern "C" fn C_GetInterfaceList(p: *mut CK_INTERFACE, pn: *mut CK_ULONG) -> CK_RV {
    entry("C_GetInterfaceList", || {
        // SAFETY: checked by `list`.
        unsafe { list(&INTERFACES.0, p, pn) }
    })
}

#[no_mangle]
pub unsafe extern "C" fn C_GetInterface(
    name: *mut CK_UTF8CHAR,
    version: *mut CK_VERSION,
    pp: *mut *mut CK_INTERFACE,
    flags: CK_FLAGS,
) -> CK_RV {
    entry("C_GetInterface", || {
        if pp.is_null() {
            return Err(Error::Ck(CKR_ARGUMENTS_BAD));
        }
        // SAFETY: a non-NULL name is NUL-terminated; `name_is` reads no
        // further than the first byte that differs.
        if !name.is_null() && !unsafe { name_is(name, b"PKCS 11") } {
            return Err(Error::Ck(CKR_ARGUMENTS_BAD));
        }
        // No interface is fork-safe: a child must call C_Initialize again.
        if flags != 0 {
            return Err(Error::Ck(CKR_ARGUMENTS_BAD));
        }
        // SAFETY: NULL or a CK_VERSION; checked by `read`.
        let idx = match unsafe { read(version) } {
            None => 0,
            Some(CK_VERSION { major: 3, minor: 0 }) => 0,
            Some(CK_VERSION { major: 2, .. }) => 1,
            Some(_) => return Err(Error::Ck(CKR_ARGUMENTS_BAD)),
        };
        // SAFETY: non-NULL; the interface lives in a static.
        let i = INTERFACES.0.get(idx).ok_or(Error::Ck(CKR_GENERAL_ERROR))?;
        // SAFETY: as above.
        unsafe { put(pp, i as *const _ as *mut CK_INTERFACE) }?;
        Ok(CKR_OK)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_non_null_reserved_pointer_is_arguments_bad_and_never_read() {
        let mut garbage = [0xFFu8; 4];
        for reserved in [
            garbage.as_mut_ptr() as *mut c_void,
            // 0x1 (c_void has size 1).
            std::ptr::null_mut::<c_void>().wrapping_add(1),
            std::ptr::without_provenance_mut(usize::MAX),
        ] {
            // SAFETY: the arguments are a valid local; `reserved` is never
            // dereferenced (a read of 0x1 would crash the test).
            let rv = unsafe {
                let mut a: CK_C_INITIALIZE_ARGS = std::mem::zeroed();
                a.flags = CKF_OS_LOCKING_OK;
                a.pReserved = reserved;
                C_Initialize(&mut a as *mut _ as *mut c_void)
            };
            assert_eq!(rv, CKR_ARGUMENTS_BAD);
            assert_eq!(
                m().err().map(|e| e.rv()),
                Some(CKR_CRYPTOKI_NOT_INITIALIZED)
            );
        }
        assert_eq!(garbage, [0xFF; 4]);
    }
}
