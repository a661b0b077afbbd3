//! Certificates and data objects ([`crate::stored`]), and the object
//! management calls that change objects: `C_CreateObject` of those
//! classes, `C_SetAttributeValue`, `C_CopyObject`, and `C_DestroyObject`
//! of those classes.
//!
//! Invariants:
//! - A token certificate or data object (`CKA_TOKEN` true) lives in the
//!   enclave's token-object store under a name made once by
//!   [`object_name`] (OBJECT:CREATE); the slot's cache maps that name to
//!   its handle (`KeyCache::objects`), refreshed with the keys (OBJECT:LIST,
//!   every page). A set writes the whole object (OBJECT:SET), a destroy
//!   deletes it (OBJECT:DELETE); the store answering 404 means the object
//!   went elsewhere: its handle goes and the call is
//!   `CKR_OBJECT_HANDLE_INVALID`.
//! - Session certificates and data objects are `Store::Local` objects with
//!   no value, owned by their session like session keys.
//! - Writing a token object needs a read-write session; making or showing a
//!   private one needs a login. The object table is updated only after the
//!   store accepted the write.
//! - Cluster keys are never changed: a set that gives an attribute its
//!   current value (such as SunPKCS11's `CKA_ID` = alias on a key whose
//!   name is the alias) succeeds, any other change is
//!   `CKR_ACTION_PROHIBITED`, and a copy is `CKR_ACTION_PROHIBITED` (the
//!   key material never leaves the cluster).

use std::sync::Arc;

use cryptoki_sys::*;
use kms_client::{proto, Command};
use zeroize::Zeroizing;

use super::session::Session;
use super::Module;
use crate::error::{Error, Result};
use crate::log::Level;
use crate::object::{Attr, AttrOut, KeyObject, KeyTemplate, Store};
use crate::stored::{object_name, StoredObject};

/// A store error of an object write: a refused value (400) is the
/// template's fault, a refusal by policy (403) is `CKR_ACTION_PROHIBITED`,
/// a missing object (404) a stale handle.
fn object_error(e: Error) -> Error {
    match e {
        Error::Remote(r) => match r.status() {
            Some(400 | 413) => Error::invalid(
                CKR_ATTRIBUTE_VALUE_INVALID,
                "object",
                format!("the cluster refused the object: {r}"),
            ),
            Some(403) => Error::invalid(
                CKR_ACTION_PROHIBITED,
                "object",
                format!("the cluster's policy refuses it: {r}"),
            ),
            Some(404) => Error::Ck(CKR_OBJECT_HANDLE_INVALID),
            _ => Error::Remote(r),
        },
        e => e,
    }
}

#[allow(clippy::unnecessary_cast)] // CK_ULONG is 32 bits on some platforms
fn object_request(name: &str, o: &StoredObject) -> proto::ObjectRequest {
    proto::ObjectRequest {
        name: name.to_string(),
        class: o.class as u64,
        attributes: o
            .record()
            .into_iter()
            .map(|(r#type, value)| proto::ObjectAttribute { r#type, value })
            .collect(),
    }
}

impl Module {
    fn is_so(&self, slot: usize) -> bool {
        *self.slots[slot].login.lock() == Some(CKU_SO)
    }

    /// `C_CreateObject` of a certificate or data object.
    pub(super) fn create_stored(
        &self,
        sh: CK_SESSION_HANDLE,
        template: &[Attr],
    ) -> Result<CK_OBJECT_HANDLE> {
        let sess = self.session(sh)?;
        let s = sess.lock();
        let c = StoredObject::create(template, self.is_so(s.slot))?;
        self.store_stored(&s, sh, c.object, c.token)
    }

    /// Stores a new certificate or data object: in the enclave (`token`)
    /// or as a session object of `sh`.
    fn store_stored(
        &self,
        s: &Session,
        sh: CK_SESSION_HANDLE,
        o: StoredObject,
        token: bool,
    ) -> Result<CK_OBJECT_HANDLE> {
        if o.private() && !self.logged_in(s.slot) {
            return Err(Error::Ck(CKR_USER_NOT_LOGGED_IN));
        }
        if !token {
            let store = Store::Local {
                value: crate::locked::LockedBytes::new(&[]),
                session: sh,
            };
            return Ok(self.add_session_object(KeyObject::stored_object(s.slot, o, store)));
        }
        if !s.rw {
            return Err(Error::Ck(CKR_SESSION_READ_ONLY));
        }
        // A random suffix makes a name in use (409) all but impossible;
        // try a few before giving up.
        let mut name = String::new();
        for attempt in 0..3 {
            name = object_name(o.class, &o.label(), &o.id());
            match self.call::<_, proto::Empty>(
                s.slot,
                Command::ObjectCreate,
                &object_request(&name, &o),
            ) {
                Ok(_) => break,
                Err(Error::Remote(r)) if r.status() == Some(409) && attempt < 2 => continue,
                Err(e) => return Err(object_error(e)),
            }
        }
        crate::log!(
            Level::Info,
            "created token object '{name}' in slot {}",
            s.slot
        );
        let mut cache = self.slots[s.slot].cache.lock();
        let h = self.handle();
        self.objects.write().insert(
            h,
            Arc::new(KeyObject::stored_object(
                s.slot,
                o,
                Store::Object { name: name.clone() },
            )),
        );
        cache.objects.insert(name, h);
        Ok(h)
    }

    /// Forgets a token object the store no longer has.
    fn forget_stored(&self, slot: usize, name: &str, h: CK_OBJECT_HANDLE) {
        let mut cache = self.slots[slot].cache.lock();
        cache.objects.remove(name);
        self.objects.write().remove(&h);
    }

    /// `C_DestroyObject` of a certificate or data object.
    pub(super) fn destroy_stored(
        &self,
        s: &Session,
        h: CK_OBJECT_HANDLE,
        o: &KeyObject,
    ) -> Result<()> {
        if o.stored.as_ref().is_some_and(|x| !x.destroyable()) {
            return Err(Error::invalid(
                CKR_ACTION_PROHIBITED,
                "object",
                "the object is not destroyable (CKA_DESTROYABLE false)",
            ));
        }
        if let Some(name) = o.object_name() {
            if !s.rw {
                return Err(Error::Ck(CKR_SESSION_READ_ONLY));
            }
            let r: Result<proto::Empty> = self.call(
                s.slot,
                Command::ObjectDelete,
                &proto::DeleteObjectRequest {
                    name: name.to_string(),
                },
            );
            if let Err(e) = r {
                let e = object_error(e);
                if e.rv() == CKR_OBJECT_HANDLE_INVALID {
                    self.forget_stored(s.slot, name, h);
                }
                return Err(e);
            }
            crate::log!(
                Level::Info,
                "deleted token object '{name}' in slot {}",
                s.slot
            );
            self.forget_stored(s.slot, name, h);
            return Ok(());
        }
        self.objects.write().remove(&h);
        Ok(())
    }

    /// `C_SetAttributeValue`.
    pub fn set_attributes(
        &self,
        sh: CK_SESSION_HANDLE,
        h: CK_OBJECT_HANDLE,
        template: &[Attr],
    ) -> Result<()> {
        let sess = self.session(sh)?;
        let s = sess.lock();
        let o = self.object(&s, h)?;
        let next = if let Some(st) = &o.stored {
            let (n, _) = st.changed(o.is_token(), template, false, self.is_so(s.slot))?;
            if n == **st {
                return Ok(());
            }
            if n.private() && !self.logged_in(s.slot) {
                return Err(Error::Ck(CKR_USER_NOT_LOGGED_IN));
            }
            if let Some(name) = o.object_name() {
                if !s.rw {
                    return Err(Error::Ck(CKR_SESSION_READ_ONLY));
                }
                let r: Result<proto::Empty> =
                    self.call(s.slot, Command::ObjectSet, &object_request(name, &n));
                if let Err(e) = r {
                    let e = object_error(e);
                    if e.rv() == CKR_OBJECT_HANDLE_INVALID {
                        self.forget_stored(s.slot, name, h);
                    }
                    return Err(e);
                }
            }
            KeyObject::stored_object(o.slot, n, o.store.clone())
        } else {
            let n = changed_key(&o, template, false)?;
            if n.is_none() {
                return Ok(());
            }
            n.map(|(k, _)| k).ok_or(Error::Ck(CKR_GENERAL_ERROR))?
        };
        // Replaced under the same handle, unless destroyed meanwhile.
        let _cache = self.slots[s.slot].cache.lock();
        let mut objects = self.objects.write();
        if let Some(slot) = objects.get_mut(&h) {
            *slot = Arc::new(next);
        }
        Ok(())
    }

    /// `C_CopyObject`.
    pub fn copy_object(
        &self,
        sh: CK_SESSION_HANDLE,
        h: CK_OBJECT_HANDLE,
        template: &[Attr],
    ) -> Result<CK_OBJECT_HANDLE> {
        let sess = self.session(sh)?;
        let s = sess.lock();
        let o = self.object(&s, h)?;
        if !o.copyable {
            return Err(Error::invalid(
                CKR_ACTION_PROHIBITED,
                "object",
                if o.cluster_name().is_some() {
                    "cluster keys cannot be copied: their material never leaves the cluster"
                } else {
                    "the object is not copyable (CKA_COPYABLE false)"
                },
            ));
        }
        if let Some(st) = &o.stored {
            let (n, token) = st.changed(o.is_token(), template, true, self.is_so(s.slot))?;
            return self.store_stored(&s, sh, n, token.unwrap_or(o.is_token()));
        }
        // A session secret key.
        let (mut k, token) = match changed_key(&o, template, true)? {
            Some(x) => x,
            None => ((*o).clone(), None),
        };
        if k.private && !self.logged_in(s.slot) {
            return Err(Error::Ck(CKR_USER_NOT_LOGGED_IN));
        }
        if token == Some(true) {
            // Into the cluster: an import of the key's bytes (KEY:IMPORT),
            // as C_CreateObject with CKA_TOKEN true.
            let value = Zeroizing::new(k.value().map(<[u8]>::to_vec).unwrap_or_default());
            let t = KeyTemplate {
                token: Some(true),
                label: Some(k.label.clone()),
                id: Some(k.id.clone()),
                ..KeyTemplate::default()
            };
            drop(s);
            return self.store_key(sh, &t, k.key_type, value, false);
        }
        if let Store::Local { session, .. } = &mut k.store {
            *session = sh;
        }
        Ok(self.add_session_object(k))
    }

    /// Every page of OBJECT:LIST.
    pub(super) fn list_stored(&self, slot: usize) -> Result<Vec<proto::ObjectResponse>> {
        let mut out = Vec::new();
        let mut continue_at = String::new();
        for _ in 0..100_000 {
            let page: proto::ListObjectsResponse = self.call(
                slot,
                Command::ObjectList,
                &proto::ListRequest {
                    prefix: String::new(),
                    continue_at: continue_at.clone(),
                    limit: 0,
                },
            )?;
            out.extend(page.objects);
            if page.continue_at.is_empty() {
                break;
            }
            continue_at = page.continue_at;
        }
        Ok(out)
    }
}

/// A set (`copy` false) or copy template applied to a key object: `None`
/// when nothing changes; else the new object and, for a copy, the
/// `CKA_TOKEN` asked. Cluster keys change nothing; session secret keys may
/// change their label, id and usages, become sensitive or unextractable,
/// and on a copy also `CKA_PRIVATE`, `CKA_MODIFIABLE`, `CKA_COPYABLE`
/// (to false) and `CKA_TOKEN`.
fn changed_key(
    o: &KeyObject,
    template: &[Attr],
    copy: bool,
) -> Result<Option<(KeyObject, Option<bool>)>> {
    let mut k = o.clone();
    let mut token = None;
    let mut changed = false;
    for (i, a) in template.iter().enumerate() {
        if template
            .iter()
            .take(i)
            .any(|p| p.ty == a.ty && p.value != a.value)
        {
            return Err(Error::invalid(
                CKR_TEMPLATE_INCONSISTENT,
                "template",
                format!("attribute {:#x} given twice with different values", a.ty),
            ));
        }
        let current = o.get(a.ty);
        if current == AttrOut::Invalid {
            return Err(Error::invalid(
                CKR_ATTRIBUTE_TYPE_INVALID,
                "template",
                format!("the object has no attribute {:#x}", a.ty),
            ));
        }
        if copy && a.ty == CKA_TOKEN {
            token = Some(a.as_bool()?);
            continue;
        }
        if current == AttrOut::Value(a.value.clone()) {
            continue;
        }
        if o.cluster_name().is_some() || (!copy && !o.modifiable) {
            return Err(Error::invalid(
                CKR_ACTION_PROHIBITED,
                "object",
                if o.cluster_name().is_some() {
                    "cluster keys cannot be changed (CKA_MODIFIABLE false)"
                } else {
                    "the object is not modifiable (CKA_MODIFIABLE false)"
                },
            ));
        }
        let read_only = || {
            Err(Error::invalid(
                CKR_ATTRIBUTE_READ_ONLY,
                "template",
                format!("attribute {:#x} cannot be changed", a.ty),
            ))
        };
        match a.ty {
            CKA_LABEL => k.label = a.value.clone(),
            CKA_ID => k.id = a.value.clone(),
            CKA_ENCRYPT => k.encrypt = a.as_bool()?,
            CKA_DECRYPT => k.decrypt = a.as_bool()?,
            CKA_WRAP => k.wrap = a.as_bool()?,
            CKA_UNWRAP => k.unwrap = a.as_bool()?,
            CKA_SIGN => k.sign = a.as_bool()?,
            CKA_VERIFY => k.verify = a.as_bool()?,
            // One way only: sensitive, unextractable, uncopyable.
            CKA_SENSITIVE if a.as_bool()? => k.sensitive = true,
            CKA_EXTRACTABLE if !a.as_bool()? => k.extractable = false,
            CKA_COPYABLE if !a.as_bool()? => k.copyable = false,
            CKA_PRIVATE if copy => k.private = a.as_bool()?,
            CKA_MODIFIABLE if copy => k.modifiable = a.as_bool()?,
            _ => return read_only(),
        }
        changed = true;
    }
    Ok((changed || token.is_some()).then_some((k, token)))
}
