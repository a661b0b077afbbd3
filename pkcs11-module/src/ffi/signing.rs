//! Signing and MACing, verifying signatures and MACs (PKCS#11 3.0 sections
//! 5.11 and 5.12), over the shared operation drivers of [`super`].
//! Signatures with recovery and message-based signing (3.0) are not
//! supported.

// Input from the network or from a C caller must never panic here: no
// unwrap, expect or unchecked indexing (tests excepted).
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]

use std::ffi::c_void;

use cryptoki_sys::*;

use super::util::*;
use super::{entry, m, ok, op_finish, op_init, op_update};
use crate::ops::Kind;

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

unsupported! {
    C_SignRecoverInit(a: CK_SESSION_HANDLE, b: *mut CK_MECHANISM, c: CK_OBJECT_HANDLE);
    C_SignRecover(a: CK_SESSION_HANDLE, b: *mut CK_BYTE, c: CK_ULONG, d: *mut CK_BYTE, e: *mut CK_ULONG);
    C_VerifyRecoverInit(a: CK_SESSION_HANDLE, b: *mut CK_MECHANISM, c: CK_OBJECT_HANDLE);
    C_VerifyRecover(a: CK_SESSION_HANDLE, b: *mut CK_BYTE, c: CK_ULONG, d: *mut CK_BYTE, e: *mut CK_ULONG);
}

// Message-based signing and verifying (3.0).
unsupported! {
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
