//! Key management (PKCS#11 3.0 section 5.14): generating secret keys and
//! key pairs (cluster keys), wrapping and unwrapping secret keys. Key
//! derivation is not supported.

// Input from the network or from a C caller must never panic here: no
// unwrap, expect or unchecked indexing (tests excepted).
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]

use cryptoki_sys::*;

use super::util::*;
use super::{entry, m};
use crate::error::Error;
use crate::mech::Mech;

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
pub unsafe extern "C" fn C_GenerateKeyPair(
    s: CK_SESSION_HANDLE,
    mech: *mut CK_MECHANISM,
    pt: *mut CK_ATTRIBUTE,
    pn: CK_ULONG,
    qt: *mut CK_ATTRIBUTE,
    qn: CK_ULONG,
    ph_pub: *mut CK_OBJECT_HANDLE,
    ph_priv: *mut CK_OBJECT_HANDLE,
) -> CK_RV {
    entry("C_GenerateKeyPair", || {
        let m = m()?;
        m.session(s)?;
        // SAFETY: checked by the helpers.
        let (mech, pt, qt) = unsafe { (mechanism(mech)?, template(pt, pn)?, template(qt, qn)?) };
        if ph_pub.is_null() || ph_priv.is_null() {
            return Err(Error::Ck(CKR_ARGUMENTS_BAD));
        }
        let (hp, hq) = m.generate_key_pair(s, &mech, &pt, &qt)?;
        // SAFETY: non-NULL.
        unsafe { put(ph_pub, hp) }?;
        // SAFETY: non-NULL.
        unsafe { put(ph_priv, hq) }?;
        Ok(CKR_OK)
    })
}

unsupported! {
    C_DeriveKey(a: CK_SESSION_HANDLE, b: *mut CK_MECHANISM, c: CK_OBJECT_HANDLE, d: *mut CK_ATTRIBUTE, e: CK_ULONG, f: *mut CK_OBJECT_HANDLE);
}
