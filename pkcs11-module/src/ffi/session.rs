//! Session management and login (PKCS#11 3.0 sections 5.6 and 5.17):
//! sessions are serial only (`CKF_SERIAL_SESSION`), operation state cannot
//! be saved or restored, and no function runs in parallel
//! (`C_GetFunctionStatus` and `C_CancelFunction` answer
//! `CKR_FUNCTION_NOT_PARALLEL`). Login is per slot, as PKCS#11 says; the
//! PIN is read only through [`util::input`](super::util::input).

// Input from the network or from a C caller must never panic here: no
// unwrap, expect or unchecked indexing (tests excepted).
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]

use std::ffi::c_void;

use cryptoki_sys::*;

use super::util::*;
use super::{entry, m, ok};
use crate::error::Error;

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
pub unsafe extern "C" fn C_Logout(s: CK_SESSION_HANDLE) -> CK_RV {
    entry("C_Logout", || {
        let m = m()?;
        let slot = m.session_slot(s)?;
        ok(m.logout(slot))
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
