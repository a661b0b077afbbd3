//! Slots and tokens: one slot per enclave, each with one token.
//!
//! Invariants:
//! - The slots are fixed between `C_Initialize` and `C_Finalize`: made once
//!   by `Module::new` from the configured or listed enclaves (sorted,
//!   without duplicates), so a slot's index in `Module::slots` is stable and
//!   is what sessions, objects and the rest of the module use.
//! - Slot ids are [`slot_id`] of the enclave name (stable across processes
//!   and restarts), made unique by taking the next id on a collision.
//! - A slot's `client` can be `None` only with login = "api-key": before
//!   the first `C_Login` when no API key is configured, and after every
//!   logout (see `login.rs`). Its `login` and `cache` are those of its
//!   token.

use cryptoki_sys::*;
use parking_lot::{Mutex, RwLock};

use super::io::SlotClient;
use super::objects::KeyCache;
use super::Module;
use crate::error::{Error, Result};

/// One slot: an enclave of the cluster.
pub struct Slot {
    pub id: CK_SLOT_ID,
    pub enclave: String,
    /// The credentials of this slot: the configured API key, or (login =
    /// "api-key") the one given as PIN at `C_Login`.
    pub(super) client: RwLock<Option<SlotClient>>,
    /// Who is logged in to the token (`CKU_USER`, `CKU_SO`), if anyone.
    pub(super) login: Mutex<Option<CK_USER_TYPE>>,
    /// Cluster keys by name, and when they were listed.
    pub(super) cache: Mutex<KeyCache>,
}

/// A stable slot id for an enclave: FNV-1a of its name, 31 bits.
pub fn slot_id(enclave: &str) -> CK_SLOT_ID {
    let mut h: u32 = 0x811c_9dc5;
    for b in enclave.bytes() {
        h ^= b as u32;
        h = h.wrapping_mul(0x0100_0193);
    }
    (h & 0x7fff_ffff) as CK_SLOT_ID
}

impl Module {
    /// The index of a slot by id.
    pub fn slot(&self, id: CK_SLOT_ID) -> Result<usize> {
        self.slots
            .iter()
            .position(|s| s.id == id)
            .ok_or(Error::Ck(CKR_SLOT_ID_INVALID))
    }

    /// The `CK_TOKEN_INFO` flags of every token.
    pub fn token_flags(&self) -> CK_FLAGS {
        let mut f = CKF_TOKEN_INITIALIZED | CKF_RNG | CKF_USER_PIN_INITIALIZED;
        if self.cfg.private_keys() {
            f |= CKF_LOGIN_REQUIRED;
        }
        f
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_ids_are_stable() {
        // Known answers (FNV-1a of the name, 31 bits): the same in every
        // process and release, so applications may store slot ids.
        assert_eq!(slot_id("a"), 0x640c_292c);
        assert_eq!(slot_id("b"), 0x670c_2de5);
        assert_eq!(slot_id("p11"), 0x271b_5811);
        assert_ne!(slot_id("enclave-1"), slot_id("enclave-2"));
        assert!(slot_id("x") <= 0x7fff_ffff);
    }
}
