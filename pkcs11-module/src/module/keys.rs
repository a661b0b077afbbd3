//! Making and destroying keys: `C_CreateObject`, `C_GenerateKey`, the
//! store step of `C_UnwrapKey`, and `C_DestroyObject`.
//!
//! Invariants:
//! - A token key (`CKA_TOKEN` true) is a cluster key: it needs a read-write
//!   session, is a 32-byte AES key, and is named by its label, else its id
//!   (UTF-8), else a random `p11-` name. The cluster refusing the name (400
//!   or 409) is the template's fault (`CKR_ATTRIBUTE_VALUE_INVALID`). Once
//!   made, it enters the object cache through `add_cluster_key`, so a later
//!   listing keeps its handle.
//! - Any other key is a session object of the calling session, held in
//!   memory (its value zeroized on drop).
//! - A template with `CKA_PRIVATE` true is refused while the slot is logged
//!   out when the key is stored by `store_key` (create, unwrap, session-key
//!   generation). A generated token key is not stored there: whether a
//!   cluster key is private follows the login mode, not its template.
//! - Destroying a cluster key deletes every version of it (KEY:DELETE) and
//!   removes it from the slot's cache before its handle is freed.
//! - A key pair (`C_GenerateKeyPair`) with `CKA_TOKEN` true (or absent) is
//!   a cluster key (KEY:CREATE with its asymmetric type), named as token
//!   secret keys are; its objects enter the cache through
//!   `add_cluster_pair`. With `CKA_TOKEN` false it is a session key pair:
//!   two session objects of the calling session, generated and used in
//!   the module (`crate::local`), the private key sensitive and never
//!   extractable. A type the slot hides (`hide_key_types`) is not made.

use cryptoki_sys::*;
use kms_client::{proto, Command};

use super::Module;
use crate::error::{Error, Result};
use crate::log::Level;
use crate::object::{Attr, KeyTemplate};

impl Module {
    /// `C_CreateObject`: a session secret key from its value, or a cluster
    /// key imported from its 32 bytes (`CKA_TOKEN` true).
    pub fn create_object(
        &self,
        sh: CK_SESSION_HANDLE,
        template: &[Attr],
    ) -> Result<CK_OBJECT_HANDLE> {
        let class = template
            .iter()
            .rev()
            .find(|a| a.ty == CKA_CLASS)
            .and_then(|a| a.as_ulong().ok());
        if class.is_some_and(crate::stored::is_stored_class) {
            return self.create_stored(sh, template);
        }
        let t = KeyTemplate::parse(template)?;
        if t.class.is_none() {
            return Err(Error::invalid(
                CKR_TEMPLATE_INCOMPLETE,
                "template",
                "CKA_CLASS is missing",
            ));
        }
        let key_type = t.key_type.ok_or_else(|| {
            Error::invalid(
                CKR_TEMPLATE_INCOMPLETE,
                "template",
                "CKA_KEY_TYPE is missing",
            )
        })?;
        let value = t.value.clone().ok_or_else(|| {
            Error::invalid(CKR_TEMPLATE_INCOMPLETE, "template", "CKA_VALUE is missing")
        })?;
        if t.value_len.is_some() {
            return Err(Error::invalid(
                CKR_ATTRIBUTE_READ_ONLY,
                "template",
                "CKA_VALUE_LEN is implied by CKA_VALUE",
            ));
        }
        check_value(key_type, value.len())?;
        self.store_key(sh, &t, key_type, value, false)
    }

    /// Stores a key made by create or unwrap: in the cluster (`CKA_TOKEN`
    /// true, KEY:IMPORT) or in memory.
    pub fn store_key(
        &self,
        sh: CK_SESSION_HANDLE,
        t: &KeyTemplate,
        key_type: CK_KEY_TYPE,
        value: zeroize::Zeroizing<Vec<u8>>,
        local: bool,
    ) -> Result<CK_OBJECT_HANDLE> {
        let sess = self.session(sh)?;
        let s = sess.lock();
        if t.private == Some(true) && !self.logged_in(s.slot) {
            return Err(Error::Ck(CKR_USER_NOT_LOGGED_IN));
        }
        if t.token == Some(true) {
            // An import: the bytes become the secret of the cluster key's
            // first version. PKCS#11 mechanisms on cluster keys use keys
            // derived from that secret (docs/pkcs11.md), as KEY:ENCRYPT and
            // KEY:MAC do.
            if !s.rw {
                return Err(Error::Ck(CKR_SESSION_READ_ONLY));
            }
            t.check_cluster_key()?;
            if key_type != CKK_AES || value.len() != 32 {
                return Err(Error::invalid(
                    CKR_TEMPLATE_INCONSISTENT,
                    "template",
                    "cluster keys are 32-byte AES keys",
                ));
            }
            let name = cluster_key_name(t)?;
            let req = proto::ImportKeyRequest {
                name: name.clone(),
                r#type: "AES256".into(),
                key: value.to_vec(),
            };
            let _: proto::Empty = self
                .call(s.slot, Command::KeyImport, &req)
                .map_err(create_error)?;
            crate::log!(
                Level::Info,
                "imported cluster key '{name}' in slot {}",
                s.slot
            );
            return Ok(self.add_cluster_key(s.slot, &name));
        }
        let obj = t.session_key(s.slot, key_type, value, sh, local);
        Ok(self.add_session_object(obj))
    }

    /// `C_GenerateKey`.
    pub fn generate_key(
        &self,
        sh: CK_SESSION_HANDLE,
        mech: &crate::mech::Mech,
        template: &[Attr],
    ) -> Result<CK_OBJECT_HANDLE> {
        use crate::mech::Mech;
        let t = KeyTemplate::parse(template)?;
        if t.value.is_some() {
            return Err(Error::invalid(
                CKR_ATTRIBUTE_READ_ONLY,
                "template",
                "CKA_VALUE cannot be given to C_GenerateKey",
            ));
        }
        let key_type = match mech {
            Mech::AesKeyGen => CKK_AES,
            Mech::GenericSecretKeyGen => CKK_GENERIC_SECRET,
            _ => return Err(Error::Ck(CKR_MECHANISM_INVALID)),
        };
        if t.key_type.is_some_and(|k| k != key_type) {
            return Err(Error::invalid(
                CKR_TEMPLATE_INCONSISTENT,
                "template",
                "CKA_KEY_TYPE does not match the mechanism",
            ));
        }
        let len = t.value_len.ok_or_else(|| {
            Error::invalid(
                CKR_TEMPLATE_INCOMPLETE,
                "template",
                "CKA_VALUE_LEN is missing",
            )
        })?;
        check_value(key_type, len).map_err(|_| {
            Error::invalid(
                CKR_ATTRIBUTE_VALUE_INVALID,
                "CKA_VALUE_LEN",
                format!("{len} bytes is not a valid key length"),
            )
        })?;
        if t.token == Some(true) {
            let sess = self.session(sh)?;
            let s = sess.lock();
            if !s.rw {
                return Err(Error::Ck(CKR_SESSION_READ_ONLY));
            }
            t.check_cluster_key()?;
            if key_type != CKK_AES || len != 32 {
                return Err(Error::invalid(
                    CKR_ATTRIBUTE_VALUE_INVALID,
                    "CKA_VALUE_LEN",
                    "cluster keys are AES-256: CKA_VALUE_LEN must be 32",
                ));
            }
            let name = cluster_key_name(&t)?;
            let req = proto::CreateKeyRequest {
                name: name.clone(),
                r#type: "AES256".into(),
                add_version: false,
            };
            let _: proto::Empty = self
                .call(s.slot, Command::KeyCreate, &req)
                .map_err(create_error)?;
            crate::log!(
                Level::Info,
                "created cluster key '{name}' in slot {}",
                s.slot
            );
            return Ok(self.add_cluster_key(s.slot, &name));
        }
        let mut value = zeroize::Zeroizing::new(vec![0u8; len]);
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut value);
        self.store_key(sh, &t, key_type, value, true)
    }

    /// `C_GenerateKeyPair`: an asymmetric cluster key (KEY:CREATE with the
    /// cluster type), named like token secret keys; returns the (public,
    /// private) handles.
    pub fn generate_key_pair(
        &self,
        sh: CK_SESSION_HANDLE,
        mech: &crate::mech::Mech,
        public: &[Attr],
        private: &[Attr],
    ) -> Result<(CK_OBJECT_HANDLE, CK_OBJECT_HANDLE)> {
        let t = crate::asym::parse_pair_templates(mech.ty(), public, private)?;
        let kind = t.kind.ok_or(Error::Ck(CKR_TEMPLATE_INCOMPLETE))?;
        let sess = self.session(sh)?;
        let s = sess.lock();
        if self.cfg.hides(&self.slots[s.slot].enclave, kind.name()) {
            return Err(Error::invalid(
                CKR_TEMPLATE_INCONSISTENT,
                "template",
                format!("this slot hides {} keys (hide_key_types)", kind.name()),
            ));
        }
        if t.private == Some(true) && !self.logged_in(s.slot) {
            return Err(Error::Ck(CKR_USER_NOT_LOGGED_IN));
        }
        if t.token == Some(false) {
            let (der, spki) = crate::local::generate(kind)?;
            let info = crate::asym::PairInfo::from_spki(kind, 0, &spki)
                .map_err(|e| Error::invalid(CKR_FUNCTION_FAILED, "session key pair", e))?;
            let info = std::sync::Arc::new(info);
            let name = match (t.label.as_ref(), t.id.as_ref()) {
                (Some(l), _) => l.clone(),
                (None, Some(i)) => i.clone(),
                (None, None) => Vec::new(),
            };
            let make = |class, value: zeroize::Zeroizing<Vec<u8>>| {
                let mut o = crate::object::KeyObject::pair_object(
                    s.slot,
                    "",
                    info.clone(),
                    class,
                    t.private == Some(true),
                );
                o.label = t.label.clone().unwrap_or_else(|| name.clone());
                o.id = t.id.clone().unwrap_or_else(|| name.clone());
                o.store = crate::object::Store::Local {
                    value: crate::locked::LockedBytes::new(&value),
                    session: sh,
                };
                o
            };
            let hq = self.add_session_object(make(CKO_PRIVATE_KEY, der));
            let hp = self.add_session_object(make(CKO_PUBLIC_KEY, Default::default()));
            crate::log!(
                Level::Info,
                "generated a session key pair ({}) in slot {}",
                kind.name(),
                s.slot
            );
            return Ok((hp, hq));
        }
        if !s.rw {
            return Err(Error::Ck(CKR_SESSION_READ_ONLY));
        }
        let name = key_name(t.label.as_ref(), t.id.as_ref())?;
        let req = proto::CreateKeyRequest {
            name: name.clone(),
            r#type: kind.name().into(),
            add_version: false,
        };
        let _: proto::Empty = self
            .call(s.slot, Command::KeyCreate, &req)
            .map_err(create_error)?;
        crate::log!(
            Level::Info,
            "created cluster key pair '{name}' ({}) in slot {}",
            kind.name(),
            s.slot
        );
        let info = self.fetch_pair(s.slot, &name, kind, 0)?;
        let (hp, hq) = self.add_cluster_pair(s.slot, &name, info);
        Ok((hq, hp))
    }

    /// `C_DestroyObject`: a session object, or a cluster key (KEY:DELETE of
    /// every version). The private key of an asymmetric cluster key
    /// deletes it (both objects go); its public key cannot be destroyed
    /// alone (`CKR_ACTION_PROHIBITED`).
    pub fn destroy_object(&self, sh: CK_SESSION_HANDLE, h: CK_OBJECT_HANDLE) -> Result<()> {
        let sess = self.session(sh)?;
        let s = sess.lock();
        let o = self.object(&s, h)?;
        if o.stored.is_some() {
            return self.destroy_stored(&s, h, &o);
        }
        if o.pair.is_some() && o.class == CKO_PUBLIC_KEY && o.is_token() {
            return Err(Error::invalid(
                CKR_ACTION_PROHIBITED,
                "object",
                "the public key of a cluster key pair goes with its private key",
            ));
        }
        if let Some(name) = o.cluster_name() {
            if !s.rw {
                return Err(Error::Ck(CKR_SESSION_READ_ONLY));
            }
            let req = proto::DeleteKeyRequest {
                name: name.to_string(),
                version: 0,
                all_versions: true,
            };
            let _: proto::Empty = self.call(s.slot, Command::KeyDelete, &req)?;
            crate::log!(
                Level::Info,
                "deleted cluster key '{name}' in slot {}",
                s.slot
            );
            let mut cache = self.slots[s.slot].cache.lock();
            cache.keys.remove(name);
            if let Some(p) = cache.pairs.remove(name) {
                let mut objects = self.objects.write();
                objects.remove(&p.private);
                objects.remove(&p.public);
            }
        }
        self.objects.write().remove(&h);
        Ok(())
    }
}

/// A cluster error of KEY:CREATE or KEY:IMPORT: an invalid name (400) or a
/// name in use (409) is the template's fault.
fn create_error(e: Error) -> Error {
    match e {
        Error::Remote(r) if matches!(r.status(), Some(400 | 409)) => Error::invalid(
            CKR_ATTRIBUTE_VALUE_INVALID,
            "CKA_LABEL",
            format!("the cluster refused the key name: {r}"),
        ),
        e => e,
    }
}

/// The cluster key name of a new token key: its label, else its id as
/// UTF-8, else a random name.
fn cluster_key_name(t: &KeyTemplate) -> Result<String> {
    key_name(t.label.as_ref(), t.id.as_ref())
}

/// A new cluster key's name: `label`, else `id` as UTF-8, else a random
/// `p11-` name.
fn key_name(label: Option<&Vec<u8>>, id: Option<&Vec<u8>>) -> Result<String> {
    let raw = label
        .filter(|l| !l.is_empty())
        .or(id.filter(|l| !l.is_empty()));
    match raw {
        Some(b) => String::from_utf8(b.clone()).map_err(|_| {
            Error::invalid(
                CKR_ATTRIBUTE_VALUE_INVALID,
                "CKA_LABEL",
                "a cluster key name must be UTF-8",
            )
        }),
        None => {
            let mut b = [0u8; 8];
            rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut b);
            Ok(format!(
                "p11-{}",
                b.iter().map(|x| format!("{x:02x}")).collect::<String>()
            ))
        }
    }
}

/// Checks a secret key's length for its type.
fn check_value(key_type: CK_KEY_TYPE, len: usize) -> Result<()> {
    let ok = match key_type {
        CKK_AES => matches!(len, 16 | 24 | 32),
        CKK_GENERIC_SECRET | CKK_SHA256_HMAC => (1..=512).contains(&len),
        _ => {
            return Err(Error::invalid(
                CKR_ATTRIBUTE_VALUE_INVALID,
                "CKA_KEY_TYPE",
                format!(
                    "key type {key_type:#x} is not supported: use CKK_AES or CKK_GENERIC_SECRET"
                ),
            ))
        }
    };
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            CKR_ATTRIBUTE_VALUE_INVALID,
            "CKA_VALUE",
            format!("{len} bytes is not a valid length for this key type"),
        ))
    }
}
