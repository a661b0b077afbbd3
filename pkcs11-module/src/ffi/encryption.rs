//! Encryption and decryption (PKCS#11 3.0 sections 5.8 and 5.9), over the
//! shared operation drivers of [`super`]. Message-based encryption (3.0)
//! and the dual-function calls (section 5.13) are not supported.

// Input from the network or from a C caller must never panic here: no
// unwrap, expect or unchecked indexing (tests excepted).
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]

use std::ffi::c_void;

use cryptoki_sys::*;

use super::{op_finish, op_init, op_update_out};
use crate::ops::Kind;

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

unsupported! {
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
}

// Dual-function cryptographic functions (section 5.13).
unsupported! {
    C_DigestEncryptUpdate(a: CK_SESSION_HANDLE, b: *mut CK_BYTE, c: CK_ULONG, d: *mut CK_BYTE, e: *mut CK_ULONG);
    C_DecryptDigestUpdate(a: CK_SESSION_HANDLE, b: *mut CK_BYTE, c: CK_ULONG, d: *mut CK_BYTE, e: *mut CK_ULONG);
    C_SignEncryptUpdate(a: CK_SESSION_HANDLE, b: *mut CK_BYTE, c: CK_ULONG, d: *mut CK_BYTE, e: *mut CK_ULONG);
    C_DecryptVerifyUpdate(a: CK_SESSION_HANDLE, b: *mut CK_BYTE, c: CK_ULONG, d: *mut CK_BYTE, e: *mut CK_ULONG);
}
