//! Login: `C_Login` and `C_Logout` for a slot's token.
//!
//! Invariants:
//! - Login state is per slot, not per session, as PKCS#11 says: at most one
//!   user type (`CKU_USER` or `CKU_SO`) is logged in to a slot at a time,
//!   and it ends with `C_Logout` or when the slot's last session closes.
//! - The SO cannot log in while a read-only session is open on the slot.
//! - login = "api-key": the PIN is an API key. It becomes the slot's
//!   client, with a new epoch, and must pass a KEY:LIST probe before the
//!   login is recorded; a failed probe leaves the slot without a client (a
//!   403 is `CKR_PIN_INCORRECT`). The slot's key cache is then emptied.
//!   Logging out drops the client and every cluster-key object of the
//!   slot.
//! - login = "pin": the PIN must equal the configured `user_pin` (for
//!   `CKU_USER` and `CKU_SO` alike; compared in constant time), else
//!   `CKR_PIN_INCORRECT`. Cluster keys are private objects until then.
//! - Otherwise login only changes what is visible (private objects) and the
//!   session states: the configured API key is used throughout.

use std::sync::atomic::Ordering;

use cryptoki_sys::*;
use kms_client::{proto, ApiKey, Command};

use super::io::{make_client, SlotClient, NEXT_EPOCH};
use super::objects::KeyCache;
use super::slot::Slot;
use super::Module;
use crate::config::LoginMode;
use crate::error::{Error, Result};

impl Module {
    pub fn login(&self, slot: usize, user: CK_USER_TYPE, pin: &[u8]) -> Result<()> {
        let s = &self.slots[slot];
        match user {
            CKU_USER | CKU_SO => {}
            CKU_CONTEXT_SPECIFIC => return Err(Error::Ck(CKR_OPERATION_NOT_INITIALIZED)),
            _ => return Err(Error::Ck(CKR_USER_TYPE_INVALID)),
        }
        {
            let cur = *s.login.lock();
            match cur {
                Some(u) if u == user => return Err(Error::Ck(CKR_USER_ALREADY_LOGGED_IN)),
                Some(_) => return Err(Error::Ck(CKR_USER_ANOTHER_ALREADY_LOGGED_IN)),
                None => {}
            }
        }
        if user == CKU_SO {
            let (all, rw) = self.session_counts(slot);
            if all > rw {
                return Err(Error::Ck(CKR_SESSION_READ_ONLY_EXISTS));
            }
        }
        if self.cfg.login == LoginMode::Pin {
            // The configured PIN, compared in constant time (the lengths
            // are not secret).
            let want = self
                .cfg
                .user_pin
                .as_deref()
                .map_or(&[][..], |p| p.as_slice());
            if !bool::from(subtle::ConstantTimeEq::ct_eq(pin, want)) || want.is_empty() {
                return Err(Error::Ck(CKR_PIN_INCORRECT));
            }
        }
        if self.cfg.login == LoginMode::ApiKey {
            let text = std::str::from_utf8(pin).map_err(|_| Error::Ck(CKR_PIN_INCORRECT))?;
            let key = ApiKey::parse(text.trim()).map_err(|_| Error::Ck(CKR_PIN_INCORRECT))?;
            let shared = make_client(self.rt(), &self.cfg, &key)?;
            *s.client.write() = Some(SlotClient {
                epoch: NEXT_EPOCH.fetch_add(1, Ordering::Relaxed),
                shared,
                combiner: Default::default(),
            });
            // Check the key: it must be able to use the enclave.
            let probe: Result<proto::ListKeysResponse> = self.call(
                slot,
                Command::KeyList,
                &proto::ListRequest {
                    prefix: String::new(),
                    continue_at: String::new(),
                    limit: 1,
                },
            );
            if let Err(e) = probe {
                *s.client.write() = None;
                return Err(match e {
                    Error::Remote(r) if r.status() == Some(403) => Error::Ck(CKR_PIN_INCORRECT),
                    e => e,
                });
            }
            *s.cache.lock() = KeyCache::default();
        }
        *s.login.lock() = Some(user);
        Ok(())
    }

    pub fn logout(&self, slot: usize) -> Result<()> {
        if s_login(&self.slots[slot]).is_none() {
            return Err(Error::Ck(CKR_USER_NOT_LOGGED_IN));
        }
        self.logout_slot(slot);
        Ok(())
    }

    pub(super) fn logout_slot(&self, slot: usize) {
        let s = &self.slots[slot];
        *s.login.lock() = None;
        if self.cfg.login == LoginMode::ApiKey {
            *s.client.write() = None;
            let mut c = s.cache.lock();
            let gone = c.handles();
            *c = KeyCache::default();
            drop(c);
            let mut o = self.objects.write();
            for h in gone {
                o.remove(&h);
            }
        }
    }

    pub fn logged_in(&self, slot: usize) -> bool {
        s_login(&self.slots[slot]).is_some()
    }
}

fn s_login(s: &Slot) -> Option<CK_USER_TYPE> {
    *s.login.lock()
}
