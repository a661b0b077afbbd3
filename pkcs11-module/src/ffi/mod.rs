//! The C boundary: every PKCS#11 entry point, the function lists and the
//! 3.0 interfaces. Each entry point reads its arguments and writes its
//! answers only through [`util`] (NULL checks first; every write checked
//! against the caller's capacity by [`util::copy_out`]), calls the safe
//! library inside a panic boundary ([`entry`]), and maps its `Result` to a
//! `CK_RV`. Nothing else in the crate uses `unsafe`.
//!
//! The entry points are grouped by chapter of the PKCS#11 3.0 specification
//! (as in latchset/kryoptic's `src/fns/`):
//!
//! | file | functions |
//! |---|---|
//! | `general.rs` | `C_Initialize`, `C_Finalize`, `C_GetInfo`, `C_GetFunctionList`, `C_GetInterfaceList`, `C_GetInterface` |
//! | `token.rs` | slots, tokens, mechanisms, `C_InitToken`, PINs, `C_WaitForSlotEvent` |
//! | `session.rs` | sessions, login, operation state, parallel functions |
//! | `object.rs` | object management and search |
//! | `encryption.rs` | encrypt, decrypt (and the unsupported message-based and dual-function calls) |
//! | `digest.rs` | digest |
//! | `signing.rs` | sign and verify, MACs included |
//! | `keymgmt.rs` | generate, wrap, unwrap (derive and key pairs unsupported) |
//! | `random.rs` | `C_SeedRandom`, `C_GenerateRandom` |
//! | [`util`] (`util.rs`) | the only code that reads or writes caller memory |
//!
//! This file holds what they share: the panic boundary ([`entry`]), the
//! drivers of multi-part operations (`op_*`), the `unsupported!` macro, and
//! the function-list and interface tables. Every entry point is re-exported
//! here, so `kms_pkcs11::ffi::C_*` names them all.
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

mod digest;
mod encryption;
mod general;
mod keymgmt;
mod object;
mod random;
mod session;
mod signing;
mod token;

pub use digest::*;
pub use encryption::*;
pub use general::*;
pub use keymgmt::*;
pub use object::*;
pub use random::*;
pub use session::*;
pub use signing::*;
pub use token::*;

use std::ffi::c_void;
use std::panic::AssertUnwindSafe;

use cryptoki_sys::*;

use crate::error::{rv_name, Error, Result};
use crate::log::Level;
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

// ---- the drivers of encrypt, decrypt, sign, verify and digest ----

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
