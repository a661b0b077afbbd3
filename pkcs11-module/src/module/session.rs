//! Sessions: handles, their slot and mode, and their operation state.
//!
//! Invariants:
//! - Session handles come from the module's one counter (shared with
//!   object handles) and are never reused while the module lives.
//! - A session's slot and read-write flag never change; they are kept
//!   twice, in its [`SessionEntry`], so that they can be read without the
//!   session's mutex, which is held for the whole of an operation (network
//!   calls included): a session is used by one thread at a time.
//! - A session's operation state ([`Ops`]) and search results live under
//!   its mutex and die with it.
//! - Closing a session destroys its session objects; closing a slot's last
//!   session logs the slot out (login is per token in PKCS#11).
//! - No read-only session is opened while the SO is logged in.
//!
//! `C_GenerateRandom` is here too: it needs nothing but a valid session.

use std::sync::Arc;

use cryptoki_sys::*;
use parking_lot::Mutex;

use super::Module;
use crate::error::{Error, Result};
use crate::ops::Ops;

/// An open session.
pub struct Session {
    pub slot: usize,
    pub rw: bool,
    pub ops: Ops,
    /// Results of `C_FindObjectsInit` not yet returned.
    pub found: Option<Vec<CK_OBJECT_HANDLE>>,
}

pub(super) struct SessionEntry {
    pub(super) slot: usize,
    pub(super) rw: bool,
    pub(super) session: Arc<Mutex<Session>>,
}

impl Module {
    pub fn open_session(&self, slot: usize, rw: bool) -> Result<CK_SESSION_HANDLE> {
        if !rw && *self.slots[slot].login.lock() == Some(CKU_SO) {
            return Err(Error::Ck(CKR_SESSION_READ_WRITE_SO_EXISTS));
        }
        let h = self.handle();
        let session = Arc::new(Mutex::new(Session {
            slot,
            rw,
            ops: Ops::default(),
            found: None,
        }));
        self.sessions
            .write()
            .insert(h, SessionEntry { slot, rw, session });
        Ok(h)
    }

    /// A session by handle.
    pub fn session(&self, h: CK_SESSION_HANDLE) -> Result<Arc<Mutex<Session>>> {
        self.sessions
            .read()
            .get(&h)
            .map(|e| e.session.clone())
            .ok_or(Error::Ck(CKR_SESSION_HANDLE_INVALID))
    }

    /// The slot of a session, without taking its lock.
    pub fn session_slot(&self, h: CK_SESSION_HANDLE) -> Result<usize> {
        self.sessions
            .read()
            .get(&h)
            .map(|e| e.slot)
            .ok_or(Error::Ck(CKR_SESSION_HANDLE_INVALID))
    }

    /// Sessions open on a slot: (all, read-write).
    pub fn session_counts(&self, slot: usize) -> (usize, usize) {
        let s = self.sessions.read();
        let mut all = 0;
        let mut rw = 0;
        for e in s.values().filter(|e| e.slot == slot) {
            all += 1;
            rw += e.rw as usize;
        }
        (all, rw)
    }

    /// `CK_SESSION_INFO.state` of a session.
    pub fn session_state(&self, s: &Session) -> CK_STATE {
        match (*self.slots[s.slot].login.lock(), s.rw) {
            (Some(CKU_SO), _) => CKS_RW_SO_FUNCTIONS,
            (Some(_), true) => CKS_RW_USER_FUNCTIONS,
            (Some(_), false) => CKS_RO_USER_FUNCTIONS,
            (None, true) => CKS_RW_PUBLIC_SESSION,
            (None, false) => CKS_RO_PUBLIC_SESSION,
        }
    }

    pub fn close_session(&self, h: CK_SESSION_HANDLE) -> Result<()> {
        let e = self
            .sessions
            .write()
            .remove(&h)
            .ok_or(Error::Ck(CKR_SESSION_HANDLE_INVALID))?;
        self.objects.write().retain(|_, o| o.owner() != Some(h));
        if self.session_counts(e.slot).0 == 0 {
            self.logout_slot(e.slot);
        }
        Ok(())
    }

    pub fn close_all_sessions(&self, slot: usize) {
        let handles: Vec<_> = self
            .sessions
            .read()
            .iter()
            .filter(|(_, e)| e.slot == slot)
            .map(|(h, _)| *h)
            .collect();
        for h in handles {
            let _ = self.close_session(h);
        }
    }

    pub(super) fn close_all(&self) {
        for i in 0..self.slots.len() {
            self.close_all_sessions(i);
        }
    }

    /// Fills `buf` with random bytes from the operating system.
    pub fn random(&self, sh: CK_SESSION_HANDLE, buf: &mut [u8]) -> Result<()> {
        self.session(sh)?;
        rand::RngCore::try_fill_bytes(&mut rand::rngs::OsRng, buf)
            .map_err(|_| Error::Ck(CKR_DEVICE_ERROR))
    }
}
