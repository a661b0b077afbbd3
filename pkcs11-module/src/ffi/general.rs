//! General-purpose functions (PKCS#11 3.0 section 5.4): `C_Initialize`,
//! `C_Finalize`, `C_GetInfo`, `C_GetFunctionList` and the 3.0 interfaces
//! (`C_GetInterfaceList`, `C_GetInterface`; the tables are in [`super`]).
//!
//! `C_Initialize` never looks at what `pReserved` points to (only whether
//! it is NULL); `C_GetInterface` reads the caller's name no further than
//! [`util::name_is`](super::util::name_is) needs.

// Input from the network or from a C caller must never panic here: no
// unwrap, expect or unchecked indexing (tests excepted).
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]

use std::ffi::c_void;

use cryptoki_sys::*;

use super::util::*;
use super::{entry, m, ok, FUNCTION_LIST, INTERFACES, LIB_VERSION};
use crate::error::Error;
use crate::log::Level;
use crate::module;

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
