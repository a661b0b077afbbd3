//! Slot and token management (PKCS#11 3.0 section 5.5): slots are the
//! cluster's enclaves, fixed between `C_Initialize` and `C_Finalize`, so
//! `C_WaitForSlotEvent` never has an event. Tokens cannot be initialized
//! and PINs cannot be set here (enclaves and API keys are managed with the
//! `kms` CLI).

// Input from the network or from a C caller must never panic here: no
// unwrap, expect or unchecked indexing (tests excepted).
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]

use std::ffi::c_void;

use cryptoki_sys::*;

use super::util::*;
use super::{entry, m, LIB_VERSION};
use crate::error::Error;
use crate::mech;

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
