//! Object management (PKCS#11 3.0 section 5.7), search included: keys
//! (cluster and session), certificates and data objects; copy and set
//! where the specification allows (`module/stored.rs`). Templates are read through
//! [`util::template`](super::util::template) and attribute values written
//! back through [`util::attribute_values`](super::util::attribute_values).

// Input from the network or from a C caller must never panic here: no
// unwrap, expect or unchecked indexing (tests excepted).
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]

use cryptoki_sys::*;

use super::util::*;
use super::{entry, m, ok};
use crate::error::Error;

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
    o: CK_OBJECT_HANDLE,
    t: *mut CK_ATTRIBUTE,
    n: CK_ULONG,
    ph: *mut CK_OBJECT_HANDLE,
) -> CK_RV {
    entry("C_CopyObject", || {
        let m = m()?;
        m.session(s)?;
        // SAFETY: checked by `template`.
        let t = unsafe { template(t, n) }?;
        if ph.is_null() {
            return Err(Error::Ck(CKR_ARGUMENTS_BAD));
        }
        let h = m.copy_object(s, o, &t)?;
        // SAFETY: non-NULL.
        unsafe { put(ph, h) }?;
        Ok(CKR_OK)
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
    t: *mut CK_ATTRIBUTE,
    n: CK_ULONG,
) -> CK_RV {
    entry("C_SetAttributeValue", || {
        let m = m()?;
        m.session(s)?;
        // SAFETY: checked by `template`.
        let t = unsafe { template(t, n) }?;
        ok(m.set_attributes(s, o, &t))
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
