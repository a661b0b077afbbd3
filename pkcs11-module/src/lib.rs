//! `libkms_pkcs11.so`: the KMS cluster's enclaves as PKCS#11 slots.
//!
//! - [`ffi`]: the thin C boundary (the only `unsafe` code), one file per
//!   PKCS#11 chapter: every entry point checks its pointers (through
//!   [`ffi::util`], the only code touching caller memory), runs the safe
//!   library behind a panic boundary and maps its error to a `CK_RV`.
//! - [`module`]: state between `C_Initialize` and `C_Finalize`, one file per
//!   concern: the process-wide state, network I/O, slots (one per enclave),
//!   sessions, login, the object cache and key creation.
//! - [`ops`]: encrypt, decrypt, sign, verify, digest, wrap and unwrap.
//! - [`object`], [`mech`]: attributes, templates, mechanisms.
//! - [`asym`]: asymmetric cluster keys as key pairs (types, public halves,
//!   attributes, key-pair templates).
//! - [`config`], [`log`], [`error`].
//!
//! See docs/pkcs11.md for configuration, objects and mechanisms.
#![deny(unsafe_code)]

pub mod asym;
pub mod config;
pub mod error;
#[allow(unsafe_code)]
pub mod ffi;
pub mod local;
#[allow(unsafe_code)]
pub mod locked;
pub mod log;
pub mod mech;
pub mod module;
pub mod object;
pub mod ops;
pub mod stored;

pub use error::Error;
pub use mech::CKM_KMS_CIPHERTEXT;
