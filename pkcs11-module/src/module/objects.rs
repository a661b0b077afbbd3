//! The object cache: handles of cluster keys and session objects.
//!
//! Invariants:
//! - The module's object table maps every live object handle to its
//!   [`KeyObject`]; each slot's [`KeyCache`] maps the names of the cluster
//!   keys last listed (or created here) to their handles: one for a secret
//!   key, two (private and public key) for an asymmetric key, which show
//!   the public key of the version listed (a new version replaces the
//!   objects under the same handles). A cluster key
//!   keeps its handle across refreshes for as long as it is listed; a key
//!   no longer listed loses its handle, and a handle is never reused.
//! - Lock order: a slot's cache lock before the object table's lock, never
//!   the other way round. The cache lock is held across the KEY:LIST calls
//!   of a refresh, so that concurrent callers do not list the same keys.
//! - The cache is refreshed at most once per `refresh` interval (or when
//!   forced). If the cluster cannot be reached, the last list is kept; an
//!   identity not allowed KEY:LIST sees no cluster keys; a missing enclave
//!   is `CKR_TOKEN_NOT_PRESENT`.
//! - An object is visible to a session of its own slot only, and a private
//!   one only while the slot is logged in; anything else is
//!   `CKR_OBJECT_HANDLE_INVALID` (`CKR_KEY_HANDLE_INVALID` for a key).
//! - Session objects belong to their session and are destroyed with it
//!   (`session.rs`).
//! - A refresh also lists the enclave's token certificates and data
//!   objects (OBJECT:LIST, every page; `stored.rs`), kept by name in the
//!   cache like keys: a listed object keeps its handle (its attributes are
//!   replaced), an object no longer listed loses it. An identity not
//!   allowed OBJECT:LIST sees none; a failed listing keeps the last one.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use cryptoki_sys::*;
use kms_client::{proto, Command};

use super::session::Session;
use super::Module;
use crate::asym::{AsymKind, PairInfo};
use crate::error::{Error, Result};
use crate::log::Level;
use crate::object::{Attr, AttrOut, KeyObject, Store};
use crate::stored::{is_stored_class, StoredObject};

/// A slot's cluster keys: their handles by name, and when they were last
/// listed (`None`: not yet, or, with login = "api-key", not since the last
/// login or logout).
#[derive(Default)]
pub(super) struct KeyCache {
    pub(super) fetched: Option<Instant>,
    /// Secret keys.
    pub(super) keys: BTreeMap<String, CK_OBJECT_HANDLE>,
    /// Asymmetric keys: their two objects.
    pub(super) pairs: BTreeMap<String, PairHandles>,
    /// Token certificates and data objects, by their name in the store.
    pub(super) objects: BTreeMap<String, CK_OBJECT_HANDLE>,
    /// Records of the store not shown (logged once each).
    pub(super) unreadable: std::collections::BTreeSet<String>,
}

/// The objects of an asymmetric cluster key, and the key version they show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct PairHandles {
    pub(super) version: u32,
    pub(super) private: CK_OBJECT_HANDLE,
    pub(super) public: CK_OBJECT_HANDLE,
}

impl KeyCache {
    /// Every object handle of the cache.
    pub(super) fn handles(&self) -> Vec<CK_OBJECT_HANDLE> {
        let mut v: Vec<_> = self.keys.values().copied().collect();
        v.extend(self.objects.values().copied());
        for p in self.pairs.values() {
            v.push(p.private);
            v.push(p.public);
        }
        v
    }
}

impl Module {
    /// Lists the slot's cluster keys if the cache is older than the refresh
    /// interval, and updates the object table.
    pub fn refresh(&self, slot: usize, force: bool) -> Result<()> {
        let s = &self.slots[slot];
        if s.client.read().is_none() {
            return Ok(()); // not logged in (login = "api-key"): no token objects
        }
        let mut cache = s.cache.lock();
        if !force
            && cache
                .fetched
                .is_some_and(|t| t.elapsed() < self.cfg.refresh)
        {
            return Ok(());
        }
        // KEY:LISTALL shows secret and asymmetric keys; an identity not
        // allowed it falls back to KEY:LIST (secret keys only).
        let listed = match self.list_keys(slot, Command::KeyListAll) {
            Err(Error::Remote(e)) if e.status() == Some(403) => {
                crate::log!(
                    Level::Info,
                    "enclave '{}': KEY:LISTALL not allowed, listing secret keys only",
                    s.enclave
                );
                self.list_keys(slot, Command::KeyList)
            }
            r => r,
        };
        let keys = match listed {
            Ok(k) => k,
            // An identity whose policy does not allow KEY:LIST sees no
            // cluster keys, but can still use its session keys.
            Err(Error::Remote(e)) if e.status() == Some(403) => {
                crate::log!(
                    Level::Warn,
                    "enclave '{}': not allowed to list keys; no cluster keys are shown",
                    s.enclave
                );
                Vec::new()
            }
            Err(Error::Remote(e)) if e.status() == Some(404) => {
                return Err(Error::Ck(CKR_TOKEN_NOT_PRESENT));
            }
            // The cluster cannot be reached: keep showing the keys of
            // the last listing (their operations fail or fail over on
            // their own), and try again after the refresh interval.
            Err(e) if cache.fetched.is_some() => {
                crate::log!(
                    Level::Warn,
                    "enclave '{}': cannot list keys ({e}); showing the last list",
                    s.enclave
                );
                cache.fetched = Some(Instant::now());
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        let (pairs, keys): (Vec<_>, Vec<_>) = keys
            .into_iter()
            .filter(|k| !self.cfg.hides(&s.enclave, &k.r#type))
            .partition(|k| AsymKind::parse(&k.r#type).is_some());
        // The public halves of new keys and of new versions (KEY:PUBLICKEY),
        // before the object table is locked.
        let mut fresh = Vec::new();
        let mut kept = Vec::new();
        for k in pairs {
            let Some(kind) = AsymKind::parse(&k.r#type) else {
                continue;
            };
            match cache.pairs.get(&k.name) {
                Some(p) if p.version == k.version => kept.push(k.name),
                _ => match self.fetch_pair(slot, &k.name, kind, k.version) {
                    Ok(info) => fresh.push((k.name, info)),
                    Err(e) => crate::log!(
                        Level::Warn,
                        "enclave '{}': key '{}' is not shown: {e}",
                        s.enclave,
                        k.name
                    ),
                },
            }
        }
        // Certificates and data objects (OBJECT:LIST): `None` keeps the
        // last list.
        let stored = match self.list_stored(slot) {
            Ok(v) => Some(v),
            Err(Error::Remote(e)) if e.status() == Some(403) => {
                crate::log!(
                    Level::Warn,
                    "enclave '{}': not allowed to list token objects; none are shown",
                    s.enclave
                );
                Some(Vec::new())
            }
            Err(e) => {
                crate::log!(
                    Level::Warn,
                    "enclave '{}': cannot list token objects ({e}); showing the last list",
                    s.enclave
                );
                None
            }
        };
        let private = self.cfg.private_keys();
        let mut objects = self.objects.write();
        if let Some(list) = stored {
            let mut next = BTreeMap::new();
            for r in list {
                let attrs: Vec<(u64, Vec<u8>)> = r
                    .attributes
                    .into_iter()
                    .map(|a| (a.r#type, a.value))
                    .collect();
                let o = match StoredObject::from_record(r.class, &attrs) {
                    Ok(o) => o,
                    Err(why) if cache.unreadable.insert(r.name.clone()) => {
                        crate::log!(
                            Level::Warn,
                            "enclave '{}': token object '{}' is not shown: {why}",
                            s.enclave,
                            r.name
                        );
                        continue;
                    }
                    Err(_) => continue,
                };
                let h = match cache.objects.remove(&r.name) {
                    Some(h) if objects.contains_key(&h) => h,
                    _ => self.handle(),
                };
                let store = Store::Object {
                    name: r.name.clone(),
                };
                objects.insert(h, Arc::new(KeyObject::stored_object(slot, o, store)));
                next.insert(r.name, h);
            }
            for (_, gone) in std::mem::replace(&mut cache.objects, next) {
                objects.remove(&gone);
            }
        }
        let mut next_pairs = BTreeMap::new();
        for name in kept {
            if let Some(p) = cache.pairs.remove(&name) {
                next_pairs.insert(name, p);
            }
        }
        for (name, info) in fresh {
            let old = cache.pairs.remove(&name);
            let p = self.insert_pair(&mut objects, slot, &name, info, private, old);
            next_pairs.insert(name, p);
        }
        for (_, gone) in std::mem::replace(&mut cache.pairs, next_pairs) {
            objects.remove(&gone.private);
            objects.remove(&gone.public);
        }
        let mut next = BTreeMap::new();
        for k in keys {
            let h = match cache.keys.remove(&k.name) {
                Some(h) if objects.contains_key(&h) => h,
                _ => {
                    let h = self.handle();
                    objects.insert(
                        h,
                        Arc::new(KeyObject::cluster(slot, &k.name, &k.r#type, private)),
                    );
                    h
                }
            };
            next.insert(k.name, h);
        }
        for (_, gone) in std::mem::replace(&mut cache.keys, next) {
            objects.remove(&gone);
        }
        cache.fetched = Some(Instant::now());
        Ok(())
    }

    /// Every page of a key listing (KEY:LISTALL or KEY:LIST).
    fn list_keys(&self, slot: usize, cmd: Command) -> Result<Vec<proto::KeyStatusResponse>> {
        let mut keys = Vec::new();
        let mut continue_at = String::new();
        for _ in 0..100_000 {
            let page: proto::ListKeysResponse = self.call(
                slot,
                cmd,
                &proto::ListRequest {
                    prefix: String::new(),
                    continue_at: continue_at.clone(),
                    limit: 0,
                },
            )?;
            keys.extend(page.keys);
            if page.continue_at.is_empty() {
                break;
            }
            continue_at = page.continue_at;
        }
        Ok(keys)
    }

    /// The public half of `version` (0: the latest) of the asymmetric key
    /// `name` (KEY:PUBLICKEY), checked against its listed type.
    pub(super) fn fetch_pair(
        &self,
        slot: usize,
        name: &str,
        kind: AsymKind,
        version: u32,
    ) -> Result<PairInfo> {
        let r: proto::PublicKeyResponse = self.call(
            slot,
            Command::KeyPublicKey,
            &proto::PublicKeyRequest {
                name: name.into(),
                version,
            },
        )?;
        if AsymKind::parse(&r.r#type) != Some(kind) {
            crate::log!(
                Level::Error,
                "KEY:PUBLICKEY of '{name}' is of type '{}', listed as {}: CKR_DEVICE_ERROR",
                r.r#type,
                kind.name()
            );
            return Err(Error::Ck(CKR_DEVICE_ERROR));
        }
        PairInfo::from_spki(kind, r.version, &r.public_key).map_err(|e| {
            crate::log!(
                Level::Error,
                "KEY:PUBLICKEY of '{name}': {e}: CKR_DEVICE_ERROR"
            );
            Error::Ck(CKR_DEVICE_ERROR)
        })
    }

    /// Puts the two objects of an asymmetric key in the object table, under
    /// the handles it had (`old`) if any.
    fn insert_pair(
        &self,
        objects: &mut std::collections::HashMap<CK_OBJECT_HANDLE, Arc<KeyObject>>,
        slot: usize,
        name: &str,
        info: PairInfo,
        private: bool,
        old: Option<PairHandles>,
    ) -> PairHandles {
        let version = info.version;
        let info = Arc::new(info);
        let (hp, hq) = match old {
            Some(o) => (o.private, o.public),
            None => (self.handle(), self.handle()),
        };
        objects.insert(
            hp,
            Arc::new(KeyObject::pair_object(
                slot,
                name,
                info.clone(),
                CKO_PRIVATE_KEY,
                private,
            )),
        );
        objects.insert(
            hq,
            Arc::new(KeyObject::pair_object(
                slot,
                name,
                info,
                CKO_PUBLIC_KEY,
                private,
            )),
        );
        PairHandles {
            version,
            private: hp,
            public: hq,
        }
    }

    /// Adds an asymmetric cluster key this module just created: (private,
    /// public) handles.
    pub(super) fn add_cluster_pair(
        &self,
        slot: usize,
        name: &str,
        info: PairInfo,
    ) -> (CK_OBJECT_HANDLE, CK_OBJECT_HANDLE) {
        let s = &self.slots[slot];
        let mut cache = s.cache.lock();
        let private = self.cfg.private_keys();
        let old = cache.pairs.remove(name);
        let p = self.insert_pair(&mut self.objects.write(), slot, name, info, private, old);
        cache.pairs.insert(name.to_string(), p);
        (p.private, p.public)
    }

    /// Adds a cluster key this module just created.
    pub fn add_cluster_key(&self, slot: usize, name: &str) -> CK_OBJECT_HANDLE {
        let s = &self.slots[slot];
        let mut cache = s.cache.lock();
        if let Some(h) = cache.keys.get(name) {
            return *h;
        }
        let h = self.handle();
        let private = self.cfg.private_keys();
        self.objects.write().insert(
            h,
            Arc::new(KeyObject::cluster(slot, name, "AES256", private)),
        );
        cache.keys.insert(name.to_string(), h);
        h
    }

    /// Adds a session object.
    pub fn add_session_object(&self, obj: KeyObject) -> CK_OBJECT_HANDLE {
        let h = self.handle();
        self.objects.write().insert(h, Arc::new(obj));
        h
    }

    /// An object visible to session `s` (same slot; private ones only when
    /// logged in).
    pub fn object(&self, s: &Session, h: CK_OBJECT_HANDLE) -> Result<Arc<KeyObject>> {
        let o = self
            .objects
            .read()
            .get(&h)
            .cloned()
            .ok_or(Error::Ck(CKR_OBJECT_HANDLE_INVALID))?;
        if o.slot != s.slot || (o.private && !self.logged_in(s.slot)) {
            return Err(Error::Ck(CKR_OBJECT_HANDLE_INVALID));
        }
        Ok(o)
    }

    /// A key for an operation: like [`Module::object`], with the key error code.
    /// (A certificate or data object is no key: `CKR_KEY_HANDLE_INVALID`.)
    pub fn key(&self, s: &Session, h: CK_OBJECT_HANDLE) -> Result<Arc<KeyObject>> {
        match self.object(s, h) {
            Ok(o) if o.stored.is_none() => Ok(o),
            Ok(_) | Err(Error::Ck(CKR_OBJECT_HANDLE_INVALID)) => {
                Err(Error::Ck(CKR_KEY_HANDLE_INVALID))
            }
            Err(e) => Err(e),
        }
    }

    pub fn find_init(&self, sh: CK_SESSION_HANDLE, template: &[Attr]) -> Result<()> {
        let sess = self.session(sh)?;
        let mut s = sess.lock();
        if s.found.is_some() {
            return Err(Error::Ck(CKR_OPERATION_ACTIVE));
        }
        // A search for a class the token never holds finds nothing
        // without asking the cluster.
        let key_class = |v: &[u8]| {
            [CKO_SECRET_KEY, CKO_PRIVATE_KEY, CKO_PUBLIC_KEY]
                .iter()
                .any(|c| v == c.to_ne_bytes())
                || <[u8; std::mem::size_of::<CK_ULONG>()]>::try_from(v)
                    .is_ok_and(|b| is_stored_class(CK_ULONG::from_ne_bytes(b)))
        };
        let wants_token = !template.iter().any(|a| {
            (a.ty == CKA_TOKEN && a.value == [0]) || (a.ty == CKA_CLASS && !key_class(&a.value))
        });
        if wants_token {
            self.refresh(s.slot, false)?;
        }
        let logged_in = self.logged_in(s.slot);
        let mut found: Vec<(CK_OBJECT_HANDLE, Vec<u8>)> = self
            .objects
            .read()
            .iter()
            .filter(|(_, o)| o.slot == s.slot && (!o.private || logged_in) && o.matches(template))
            .map(|(h, o)| (*h, o.label.clone()))
            .collect();
        found.sort_by(|a, b| (&a.1, a.0).cmp(&(&b.1, b.0)));
        // Returned by popping from the end: reverse for label order.
        s.found = Some(found.into_iter().rev().map(|(h, _)| h).collect());
        Ok(())
    }

    pub fn find(&self, sh: CK_SESSION_HANDLE, max: usize) -> Result<Vec<CK_OBJECT_HANDLE>> {
        let sess = self.session(sh)?;
        let mut s = sess.lock();
        let found = s
            .found
            .as_mut()
            .ok_or(Error::Ck(CKR_OPERATION_NOT_INITIALIZED))?;
        let mut out = Vec::with_capacity(max.min(found.len()));
        while out.len() < max {
            match found.pop() {
                Some(h) => out.push(h),
                None => break,
            }
        }
        Ok(out)
    }

    pub fn find_final(&self, sh: CK_SESSION_HANDLE) -> Result<()> {
        let sess = self.session(sh)?;
        let mut s = sess.lock();
        s.found
            .take()
            .map(drop)
            .ok_or(Error::Ck(CKR_OPERATION_NOT_INITIALIZED))
    }

    pub fn get_attributes(
        &self,
        sh: CK_SESSION_HANDLE,
        h: CK_OBJECT_HANDLE,
        types: &[CK_ATTRIBUTE_TYPE],
    ) -> Result<Vec<AttrOut>> {
        let sess = self.session(sh)?;
        let s = sess.lock();
        let o = self.object(&s, h)?;
        Ok(types.iter().map(|t| o.get(*t)).collect())
    }

    pub fn object_size(&self, sh: CK_SESSION_HANDLE, h: CK_OBJECT_HANDLE) -> Result<usize> {
        let sess = self.session(sh)?;
        let s = sess.lock();
        let o = self.object(&s, h)?;
        if let Some(st) = &o.stored {
            return Ok(st.size());
        }
        Ok(o.value_len + o.label.len() + o.id.len() + 64)
    }
}
