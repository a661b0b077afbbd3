//! Random number generation (PKCS#11 3.0 section 5.15): the operating
//! system's generator, which takes no seed. Random bytes reach the caller
//! a chunk at a time through [`util::fill`](super::util::fill).

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
pub unsafe extern "C" fn C_SeedRandom(
    s: CK_SESSION_HANDLE,
    _p: *mut CK_BYTE,
    _n: CK_ULONG,
) -> CK_RV {
    entry("C_SeedRandom", || {
        m()?.session(s)?;
        // The operating system's generator takes no seed.
        Err(Error::Ck(CKR_RANDOM_SEED_NOT_SUPPORTED))
    })
}

#[no_mangle]
pub unsafe extern "C" fn C_GenerateRandom(
    s: CK_SESSION_HANDLE,
    p: *mut CK_BYTE,
    n: CK_ULONG,
) -> CK_RV {
    entry("C_GenerateRandom", || {
        let m = m()?;
        m.session(s)?;
        if n == 0 {
            return Ok(CKR_OK);
        }
        if p.is_null() || n > (1 << 30) {
            return Err(Error::Ck(CKR_ARGUMENTS_BAD));
        }
        // SAFETY: non-NULL; the caller promises `n` writable bytes, which
        // `fill` writes through `copy_out`.
        ok(unsafe { fill(p, n, |buf| m.random(s, buf)) })
    })
}
