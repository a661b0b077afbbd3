//! Message digesting (PKCS#11 3.0 section 5.10), over the shared operation
//! drivers of [`super`]. `C_DigestKey` is not supported (no key value
//! leaves the cluster).

// Input from the network or from a C caller must never panic here: no
// unwrap, expect or unchecked indexing (tests excepted).
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]

use cryptoki_sys::*;

use super::{entry, m, op_finish, op_init, op_update};
use crate::error::Error;
use crate::ops::Kind;

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
