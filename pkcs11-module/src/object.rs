//! Key objects and their attributes, templates and matching.
//!
//! Token objects are the cluster's keys, shown with fixed attributes
//! (docs/pkcs11.md): `CKA_LABEL` and `CKA_ID` = the key name, sensitive, not
//! extractable; secret keys allow every usage, asymmetric keys are a
//! private and a public key object ([`crate::asym`]). Session objects are AES or generic
//! secret keys held in the module's memory (zeroized on drop).

use cryptoki_sys::*;
use zeroize::Zeroizing;

use crate::asym::PairInfo;
use crate::error::{Error, Result};
use crate::stored::StoredObject;

/// One attribute of a caller's template: its type and raw value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attr {
    pub ty: CK_ATTRIBUTE_TYPE,
    pub value: Vec<u8>,
}

impl Attr {
    pub fn new(ty: CK_ATTRIBUTE_TYPE, value: Vec<u8>) -> Self {
        Self { ty, value }
    }
    pub fn bool(ty: CK_ATTRIBUTE_TYPE, v: bool) -> Self {
        Self::new(ty, vec![v as u8])
    }
    pub fn ulong(ty: CK_ATTRIBUTE_TYPE, v: CK_ULONG) -> Self {
        Self::new(ty, v.to_ne_bytes().to_vec())
    }

    /// The value as a CK_BBOOL.
    pub fn as_bool(&self) -> Result<bool> {
        match self.value.as_slice() {
            [b] => Ok(*b != 0),
            _ => Err(Error::invalid(
                CKR_ATTRIBUTE_VALUE_INVALID,
                "attribute",
                format!("{:#x} must be a 1-byte CK_BBOOL", self.ty),
            )),
        }
    }

    /// The value as a CK_ULONG.
    pub fn as_ulong(&self) -> Result<CK_ULONG> {
        let b: [u8; std::mem::size_of::<CK_ULONG>()] =
            self.value.as_slice().try_into().map_err(|_| {
                Error::invalid(
                    CKR_ATTRIBUTE_VALUE_INVALID,
                    "attribute",
                    format!("{:#x} must be a CK_ULONG", self.ty),
                )
            })?;
        Ok(CK_ULONG::from_ne_bytes(b))
    }
}

/// What one attribute of `C_GetAttributeValue` answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttrOut {
    Value(Vec<u8>),
    /// `CKA_VALUE` of a sensitive or unextractable key.
    Sensitive,
    /// The object has no such attribute.
    Invalid,
}

/// Where a key's material lives.
#[derive(Clone)]
pub enum Store {
    /// A cluster key: operations go to the cluster.
    Cluster { name: String },
    /// A token certificate or data object stored in the enclave (OBJECT:*)
    /// under this name ([`crate::stored`]).
    Object { name: String },
    /// A session key in the module's memory (locked and left out of core
    /// dumps, [`crate::locked`]), owned by a session.
    Local {
        value: crate::locked::LockedBytes,
        session: CK_SESSION_HANDLE,
    },
}

/// An object: a key, or (with `stored`) a certificate or data object.
#[derive(Clone)]
pub struct KeyObject {
    pub slot: usize,
    pub key_type: CK_KEY_TYPE,
    pub label: Vec<u8>,
    pub id: Vec<u8>,
    pub value_len: usize,
    pub private: bool,
    pub sensitive: bool,
    pub extractable: bool,
    pub encrypt: bool,
    pub decrypt: bool,
    pub wrap: bool,
    pub unwrap: bool,
    pub sign: bool,
    pub verify: bool,
    pub local: bool,
    pub always_sensitive: bool,
    pub never_extractable: bool,
    pub store: Store,
    /// `CKO_SECRET_KEY`, or `CKO_PRIVATE_KEY` / `CKO_PUBLIC_KEY` for the
    /// two objects of an asymmetric cluster key.
    pub class: CK_OBJECT_CLASS,
    /// The public half of an asymmetric cluster key (both of its objects).
    pub pair: Option<std::sync::Arc<PairInfo>>,
    /// `CKA_MODIFIABLE` and `CKA_COPYABLE` (true for session secret keys
    /// only; stored objects keep theirs in `stored`).
    pub modifiable: bool,
    pub copyable: bool,
    /// A certificate or data object: its attributes.
    pub stored: Option<std::sync::Arc<StoredObject>>,
}

impl KeyObject {
    /// The object of a cluster key `name` of the cluster type `cluster_type`.
    pub fn cluster(slot: usize, name: &str, cluster_type: &str, private: bool) -> Self {
        let key_type = if cluster_type.eq_ignore_ascii_case("chacha20") {
            CKK_CHACHA20
        } else {
            CKK_AES
        };
        Self {
            slot,
            key_type,
            label: name.as_bytes().to_vec(),
            id: name.as_bytes().to_vec(),
            value_len: 32,
            private,
            sensitive: true,
            extractable: false,
            encrypt: true,
            decrypt: true,
            wrap: key_type == CKK_AES,
            unwrap: key_type == CKK_AES,
            sign: true,
            verify: true,
            local: true,
            always_sensitive: true,
            never_extractable: true,
            store: Store::Cluster { name: name.into() },
            class: CKO_SECRET_KEY,
            pair: None,
            modifiable: false,
            copyable: false,
            stored: None,
        }
    }

    /// One of the two objects (`class` `CKO_PRIVATE_KEY` or
    /// `CKO_PUBLIC_KEY`) of the asymmetric cluster key `name`. Public keys
    /// are never private objects; private keys are private as secret
    /// cluster keys are (with login = "api-key").
    pub fn pair_object(
        slot: usize,
        name: &str,
        info: std::sync::Arc<PairInfo>,
        class: CK_OBJECT_CLASS,
        private: bool,
    ) -> Self {
        let is_private = class == CKO_PRIVATE_KEY;
        Self {
            slot,
            key_type: info.kind.key_type(),
            label: name.as_bytes().to_vec(),
            id: name.as_bytes().to_vec(),
            value_len: info.spki.len(),
            private: private && is_private,
            sensitive: is_private,
            extractable: false,
            encrypt: !is_private && info.kind.is_rsa(),
            decrypt: is_private && info.kind.is_rsa(),
            wrap: false,
            unwrap: false,
            sign: is_private,
            verify: !is_private,
            local: true,
            always_sensitive: is_private,
            never_extractable: is_private,
            store: Store::Cluster { name: name.into() },
            class,
            pair: Some(info),
            modifiable: false,
            copyable: false,
            stored: None,
        }
    }

    /// A certificate or data object: a token object in the enclave's store
    /// (`Store::Object`) or a session object (`Store::Local`, no value).
    pub fn stored_object(slot: usize, o: StoredObject, store: Store) -> Self {
        Self {
            slot,
            key_type: CK_UNAVAILABLE_INFORMATION,
            label: o.label(),
            id: o.id(),
            value_len: 0,
            private: o.private(),
            sensitive: false,
            extractable: false,
            encrypt: false,
            decrypt: false,
            wrap: false,
            unwrap: false,
            sign: false,
            verify: false,
            local: false,
            always_sensitive: false,
            never_extractable: false,
            store,
            class: o.class,
            pair: None,
            modifiable: o.modifiable(),
            copyable: o.copyable(),
            stored: Some(std::sync::Arc::new(o)),
        }
    }

    /// The name of a token certificate or data object in the store.
    pub fn object_name(&self) -> Option<&str> {
        match &self.store {
            Store::Object { name } => Some(name),
            _ => None,
        }
    }

    pub fn is_token(&self) -> bool {
        matches!(self.store, Store::Cluster { .. } | Store::Object { .. })
    }

    /// The cluster key name, for token objects.
    pub fn cluster_name(&self) -> Option<&str> {
        match &self.store {
            Store::Cluster { name } => Some(name),
            Store::Local { .. } | Store::Object { .. } => None,
        }
    }

    /// The key bytes, for session objects.
    pub fn value(&self) -> Option<&[u8]> {
        match &self.store {
            Store::Local { value, .. } if self.stored.is_none() => Some(value),
            _ => None,
        }
    }

    /// The session owning a session object.
    pub fn owner(&self) -> Option<CK_SESSION_HANDLE> {
        match &self.store {
            Store::Local { session, .. } => Some(*session),
            Store::Cluster { .. } | Store::Object { .. } => None,
        }
    }

    /// One attribute's value.
    pub fn get(&self, ty: CK_ATTRIBUTE_TYPE) -> AttrOut {
        if let Some(p) = &self.pair {
            return p.attr(self, self.class == CKO_PRIVATE_KEY, ty);
        }
        if let Some(o) = &self.stored {
            return o.get(self.is_token(), ty);
        }
        let b = |v: bool| AttrOut::Value(vec![v as u8]);
        let u = |v: CK_ULONG| AttrOut::Value(v.to_ne_bytes().to_vec());
        match ty {
            CKA_CLASS => u(CKO_SECRET_KEY),
            CKA_KEY_TYPE => u(self.key_type),
            CKA_TOKEN => b(self.is_token()),
            CKA_PRIVATE => b(self.private),
            CKA_LABEL => AttrOut::Value(self.label.clone()),
            CKA_ID => AttrOut::Value(self.id.clone()),
            CKA_VALUE_LEN => u(self.value_len as CK_ULONG),
            CKA_VALUE => match self.value() {
                Some(v) if !self.sensitive && self.extractable => AttrOut::Value(v.to_vec()),
                _ => AttrOut::Sensitive,
            },
            CKA_SENSITIVE => b(self.sensitive),
            CKA_EXTRACTABLE => b(self.extractable),
            CKA_ENCRYPT => b(self.encrypt),
            CKA_DECRYPT => b(self.decrypt),
            CKA_WRAP => b(self.wrap),
            CKA_UNWRAP => b(self.unwrap),
            CKA_SIGN => b(self.sign),
            CKA_VERIFY => b(self.verify),
            CKA_DERIVE => b(false),
            CKA_LOCAL => b(self.local),
            CKA_ALWAYS_SENSITIVE => b(self.always_sensitive),
            CKA_NEVER_EXTRACTABLE => b(self.never_extractable),
            CKA_MODIFIABLE => b(self.modifiable),
            CKA_COPYABLE => b(self.copyable),
            CKA_DESTROYABLE => b(true),
            CKA_TRUSTED => b(false),
            CKA_WRAP_WITH_TRUSTED => b(false),
            CKA_ALWAYS_AUTHENTICATE => b(false),
            CKA_START_DATE | CKA_END_DATE | CKA_SUBJECT => AttrOut::Value(Vec::new()),
            CKA_KEY_GEN_MECHANISM => u(if self.local {
                CKM_AES_KEY_GEN
            } else {
                CK_UNAVAILABLE_INFORMATION
            }),
            CKA_CHECK_VALUE => AttrOut::Value(Vec::new()),
            _ => AttrOut::Invalid,
        }
    }

    /// Whether every attribute of `template` has the given value.
    pub fn matches(&self, template: &[Attr]) -> bool {
        template.iter().all(|a| match self.get(a.ty) {
            AttrOut::Value(v) => v == a.value,
            AttrOut::Sensitive | AttrOut::Invalid => false,
        })
    }
}

/// The attributes a caller may give when creating, generating or unwrapping
/// a secret key, read from a template.
#[derive(Debug, Default)]
pub struct KeyTemplate {
    pub class: Option<CK_OBJECT_CLASS>,
    pub key_type: Option<CK_KEY_TYPE>,
    pub token: Option<bool>,
    pub private: Option<bool>,
    pub label: Option<Vec<u8>>,
    pub id: Option<Vec<u8>>,
    pub value: Option<Zeroizing<Vec<u8>>>,
    pub value_len: Option<usize>,
    pub sensitive: Option<bool>,
    pub extractable: Option<bool>,
    pub encrypt: Option<bool>,
    pub decrypt: Option<bool>,
    pub wrap: Option<bool>,
    pub unwrap: Option<bool>,
    pub sign: Option<bool>,
    pub verify: Option<bool>,
    pub modifiable: Option<bool>,
    pub copyable: Option<bool>,
}

impl KeyTemplate {
    /// Reads a template; unknown or read-only attributes are errors, a
    /// duplicate with another value is `CKR_TEMPLATE_INCONSISTENT`.
    pub fn parse(template: &[Attr]) -> Result<Self> {
        let mut t = KeyTemplate::default();
        for (i, a) in template.iter().enumerate() {
            if template[..i]
                .iter()
                .any(|p| p.ty == a.ty && p.value != a.value)
            {
                return Err(Error::invalid(
                    CKR_TEMPLATE_INCONSISTENT,
                    "template",
                    format!("attribute {:#x} given twice with different values", a.ty),
                ));
            }
            match a.ty {
                CKA_CLASS => t.class = Some(a.as_ulong()?),
                CKA_KEY_TYPE => t.key_type = Some(a.as_ulong()?),
                CKA_TOKEN => t.token = Some(a.as_bool()?),
                CKA_PRIVATE => t.private = Some(a.as_bool()?),
                CKA_LABEL => t.label = Some(a.value.clone()),
                CKA_ID => t.id = Some(a.value.clone()),
                CKA_VALUE => t.value = Some(Zeroizing::new(a.value.clone())),
                CKA_VALUE_LEN => {
                    let n = a.as_ulong()?;
                    t.value_len = Some(usize::try_from(n).map_err(|_| {
                        Error::invalid(CKR_ATTRIBUTE_VALUE_INVALID, "CKA_VALUE_LEN", "too large")
                    })?)
                }
                CKA_SENSITIVE => t.sensitive = Some(a.as_bool()?),
                CKA_EXTRACTABLE => t.extractable = Some(a.as_bool()?),
                CKA_ENCRYPT => t.encrypt = Some(a.as_bool()?),
                CKA_DECRYPT => t.decrypt = Some(a.as_bool()?),
                CKA_WRAP => t.wrap = Some(a.as_bool()?),
                CKA_UNWRAP => t.unwrap = Some(a.as_bool()?),
                CKA_SIGN => t.sign = Some(a.as_bool()?),
                CKA_VERIFY => t.verify = Some(a.as_bool()?),
                CKA_MODIFIABLE => t.modifiable = Some(a.as_bool()?),
                CKA_COPYABLE => t.copyable = Some(a.as_bool()?),
                // Accepted when they state what the module does anyway.
                CKA_DERIVE | CKA_TRUSTED | CKA_WRAP_WITH_TRUSTED => {
                    if a.as_bool()? {
                        return Err(Error::invalid(
                            CKR_ATTRIBUTE_VALUE_INVALID,
                            "template",
                            format!("attribute {:#x} cannot be true here", a.ty),
                        ));
                    }
                }
                CKA_DESTROYABLE => {
                    if !a.as_bool()? {
                        return Err(Error::invalid(
                            CKR_ATTRIBUTE_VALUE_INVALID,
                            "template",
                            "every object is destroyable",
                        ));
                    }
                }
                CKA_START_DATE | CKA_END_DATE => {}
                CKA_LOCAL
                | CKA_ALWAYS_SENSITIVE
                | CKA_NEVER_EXTRACTABLE
                | CKA_KEY_GEN_MECHANISM => {
                    return Err(Error::invalid(
                        CKR_ATTRIBUTE_READ_ONLY,
                        "template",
                        format!("attribute {:#x} is read-only", a.ty),
                    ))
                }
                other => {
                    return Err(Error::invalid(
                        CKR_ATTRIBUTE_TYPE_INVALID,
                        "template",
                        format!("attribute {other:#x} is not supported on secret keys"),
                    ))
                }
            }
        }
        if t.class.is_some_and(|c| c != CKO_SECRET_KEY) {
            return Err(Error::invalid(
                CKR_TEMPLATE_INCONSISTENT,
                "template",
                "only secret keys (CKO_SECRET_KEY) are supported",
            ));
        }
        Ok(t)
    }

    /// A session key object from this template and `value`.
    pub fn session_key(
        &self,
        slot: usize,
        key_type: CK_KEY_TYPE,
        value: Zeroizing<Vec<u8>>,
        session: CK_SESSION_HANDLE,
        local: bool,
    ) -> KeyObject {
        let sensitive = self.sensitive.unwrap_or(false);
        let extractable = self.extractable.unwrap_or(true);
        let is_aes = key_type == CKK_AES;
        KeyObject {
            slot,
            key_type,
            label: self.label.clone().unwrap_or_default(),
            id: self.id.clone().unwrap_or_default(),
            value_len: value.len(),
            private: self.private.unwrap_or(false),
            sensitive,
            extractable,
            encrypt: self.encrypt.unwrap_or(is_aes),
            decrypt: self.decrypt.unwrap_or(is_aes),
            wrap: self.wrap.unwrap_or(is_aes),
            unwrap: self.unwrap.unwrap_or(is_aes),
            sign: self.sign.unwrap_or(true),
            verify: self.verify.unwrap_or(true),
            local,
            always_sensitive: local && sensitive,
            never_extractable: local && !extractable,
            store: Store::Local {
                value: crate::locked::LockedBytes::new(&value),
                session,
            },
            class: CKO_SECRET_KEY,
            pair: None,
            modifiable: self.modifiable.unwrap_or(true),
            copyable: self.copyable.unwrap_or(true),
            stored: None,
        }
    }

    /// Checks that a template for a cluster key asks nothing the cluster
    /// cannot give: an unextractable key with every usage (it is always
    /// sensitive; asking for an unsensitive one is not an error).
    pub fn check_cluster_key(&self) -> Result<()> {
        let inconsistent = |why: &str| {
            Err(Error::invalid(
                CKR_TEMPLATE_INCONSISTENT,
                "template",
                format!("cluster keys {why}"),
            ))
        };
        // CKA_SENSITIVE false is accepted: the key is better protected than
        // asked (tools such as pkcs11-tool send it by default).
        if self.modifiable == Some(true) || self.copyable == Some(true) {
            return Err(Error::invalid(
                CKR_ATTRIBUTE_VALUE_INVALID,
                "template",
                "cluster keys are neither modifiable nor copyable",
            ));
        }
        if self.extractable == Some(true) {
            return inconsistent("are never extractable");
        }
        for v in [
            self.encrypt,
            self.decrypt,
            self.wrap,
            self.unwrap,
            self.sign,
            self.verify,
        ] {
            if v == Some(false) {
                return inconsistent("allow every usage: a usage attribute cannot be false");
            }
        }
        if self.key_type.is_some_and(|t| t != CKK_AES) {
            return inconsistent("made through PKCS#11 are AES keys");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_key_attributes() {
        let k = KeyObject::cluster(0, "k1", "AES256", false);
        assert_eq!(
            k.get(CKA_CLASS),
            AttrOut::Value(CKO_SECRET_KEY.to_ne_bytes().to_vec())
        );
        assert_eq!(k.get(CKA_LABEL), AttrOut::Value(b"k1".to_vec()));
        assert_eq!(k.get(CKA_VALUE), AttrOut::Sensitive);
        assert_eq!(k.get(CKA_EXTRACTABLE), AttrOut::Value(vec![0]));
        assert_eq!(k.get(CKA_MODULUS), AttrOut::Invalid);
        assert!(k.matches(&[
            Attr::ulong(CKA_CLASS, CKO_SECRET_KEY),
            Attr::bool(CKA_TOKEN, true)
        ]));
        assert!(!k.matches(&[Attr::new(CKA_LABEL, b"k2".to_vec())]));
        assert!(!k.matches(&[Attr::new(CKA_VALUE, vec![0; 32])]));
        let c = KeyObject::cluster(0, "c", "ChaCha20", false);
        assert_eq!(c.key_type, CKK_CHACHA20);
        assert!(!c.wrap);
    }

    #[test]
    fn templates() {
        let t = KeyTemplate::parse(&[
            Attr::ulong(CKA_CLASS, CKO_SECRET_KEY),
            Attr::bool(CKA_TOKEN, true),
            Attr::ulong(CKA_VALUE_LEN, 32),
            Attr::new(CKA_LABEL, b"x".to_vec()),
        ])
        .unwrap();
        assert_eq!(t.value_len, Some(32));
        assert!(t.check_cluster_key().is_ok());
        let rv = |a: &[Attr]| KeyTemplate::parse(a).unwrap_err().rv();
        assert_eq!(
            rv(&[Attr::new(CKA_TOKEN, vec![1, 2])]),
            CKR_ATTRIBUTE_VALUE_INVALID
        );
        assert_eq!(
            rv(&[Attr::new(CKA_MODULUS, vec![1])]),
            CKR_ATTRIBUTE_TYPE_INVALID
        );
        assert_eq!(rv(&[Attr::bool(CKA_LOCAL, true)]), CKR_ATTRIBUTE_READ_ONLY);
        assert_eq!(
            rv(&[Attr::ulong(CKA_CLASS, CKO_PUBLIC_KEY)]),
            CKR_TEMPLATE_INCONSISTENT
        );
        assert_eq!(
            rv(&[Attr::bool(CKA_TOKEN, true), Attr::bool(CKA_TOKEN, false)]),
            CKR_TEMPLATE_INCONSISTENT
        );
        let t = KeyTemplate::parse(&[Attr::bool(CKA_EXTRACTABLE, true)]).unwrap();
        assert_eq!(
            t.check_cluster_key().unwrap_err().rv(),
            CKR_TEMPLATE_INCONSISTENT
        );
    }
}
