//! The replicated state changes and the deterministic function that applies
//! them to the state.
//!
//! This is the one path through which the state changes: a proposer (the API
//! handler) builds a [`Change`], filling in everything non-deterministic (key
//! material, timestamps, the acting identity); the change is appended to the
//! log; [`apply`] then validates it against the state and mutates it. `apply`
//! is a pure function of the state and the change, so every replica that
//! applies the same log reaches the same state and the same outcome. A change
//! that fails validation is still a log entry: it applies as a no-op with an
//! explicit error outcome (e.g. two concurrent creations of one key: the
//! second gets "key already exists").

use std::sync::Arc;

use imbl::OrdMap;
use kms_client::Identity;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::asym::AsymType;
use crate::crypto::KeyType;
use crate::model::{
    Actor, AsymRing, AsymVersion, Enclave, IdentityRecord, KeyRing, KeyVersion, ObjectRecord,
    PolicyRecord, Privilege, State, Time, Versions,
};
use crate::policy::Policy;

/// 32 secret bytes inside a log entry; zeroized on drop, never printed.
#[derive(Clone, Serialize, Deserialize)]
pub struct Secret(pub [u8; 32]);

impl Drop for Secret {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.0);
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// Secret bytes of any length inside a log entry (an asymmetric private
/// key's PKCS#8 DER); zeroized on drop, never printed.
#[derive(Clone, Serialize, Deserialize)]
pub struct SecretBytes(pub Vec<u8>);

impl Drop for SecretBytes {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.0);
    }
}

impl std::fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretBytes(..)")
    }
}

impl Secret {
    pub fn random() -> Self {
        let k: Zeroizing<[u8; 32]> = crate::crypto::random_key();
        Secret(*k)
    }
}

/// A state change, as stored in the log.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Change {
    CreateEnclave {
        name: String,
        at: Time,
        by: Actor,
    },
    DeleteEnclave {
        name: String,
    },
    CreateKey {
        enclave: String,
        name: String,
        key_type: KeyType,
        secret: Secret,
        imported: bool,
        at: Time,
        by: Actor,
    },
    AddKeyVersion {
        enclave: String,
        name: String,
        secret: Secret,
        at: Time,
        by: Actor,
    },
    /// Deletes one version (`version` 0: the latest); the key goes when its last version goes.
    DeleteKeyVersion {
        enclave: String,
        name: String,
        version: u32,
    },
    DeleteKey {
        enclave: String,
        name: String,
    },
    CreatePolicy {
        enclave: String,
        name: String,
        policy: Policy,
        at: Time,
        by: Actor,
    },
    DeletePolicy {
        enclave: String,
        name: String,
    },
    AssignPolicy {
        enclave: String,
        identity: Identity,
        policy: String,
    },
    CreateIdentity {
        enclave: Option<String>,
        identity: Identity,
        privilege: Privilege,
        policy: Option<String>,
        at: Time,
        by: Actor,
    },
    DeleteIdentity {
        enclave: Option<String>,
        identity: Identity,
    },
    /// The whole state was replaced from a backup (the records are not in the log).
    Restored {
        records: u64,
    },
    /// The entry a new leader appends; changes nothing.
    Noop,
    /// Adds node `id` (reachable at `addr`) to the cluster, or updates its address.
    SetMember {
        id: u32,
        addr: String,
    },
    /// Removes node `id` from the cluster.
    RemoveMember {
        id: u32,
    },
    // New variants go last: the log and the golden fixtures encode a
    // variant by its position.
    /// Creates an asymmetric key whose first version is `pkcs8` (generated
    /// or imported by the node that took the request).
    CreateAsymKey {
        enclave: String,
        name: String,
        key_type: AsymType,
        pkcs8: SecretBytes,
        imported: bool,
        at: Time,
        by: Actor,
    },
    /// Adds a version (a new key pair of the ring's type) to an asymmetric key.
    AddAsymKeyVersion {
        enclave: String,
        name: String,
        pkcs8: SecretBytes,
        at: Time,
        by: Actor,
    },
    /// Creates a token object (`replace`: or replaces its attributes).
    PutObject {
        enclave: String,
        name: String,
        class: u64,
        attributes: std::collections::BTreeMap<u64, Vec<u8>>,
        replace: bool,
        at: Time,
        by: Actor,
    },
    DeleteObject {
        enclave: String,
        name: String,
    },
}

impl Change {
    /// (enclave, name) for audit records; never key material.
    pub fn subject(&self) -> (Option<&str>, String) {
        match self {
            Change::CreateEnclave { name, .. } | Change::DeleteEnclave { name } => {
                (Some(name), String::new())
            }
            Change::CreateKey { enclave, name, .. }
            | Change::AddKeyVersion { enclave, name, .. }
            | Change::CreateAsymKey { enclave, name, .. }
            | Change::AddAsymKeyVersion { enclave, name, .. }
            | Change::PutObject { enclave, name, .. }
            | Change::DeleteObject { enclave, name }
            | Change::DeleteKeyVersion { enclave, name, .. }
            | Change::DeleteKey { enclave, name }
            | Change::CreatePolicy { enclave, name, .. }
            | Change::DeletePolicy { enclave, name } => (Some(enclave), name.clone()),
            Change::AssignPolicy {
                enclave, identity, ..
            } => (Some(enclave), identity.to_string()),
            Change::CreateIdentity {
                enclave, identity, ..
            }
            | Change::DeleteIdentity { enclave, identity } => {
                (enclave.as_deref(), identity.to_string())
            }
            Change::Restored { .. } | Change::Noop => (None, String::new()),
            Change::SetMember { id, .. } | Change::RemoveMember { id } => (None, id.to_string()),
        }
    }
}

/// Why a change did not apply. Messages match kms-go's well-known errors
/// where one exists, because clients compare them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum ApplyError {
    #[error("enclave already exists")]
    EnclaveExists,
    #[error("enclave does not exist")]
    EnclaveNotFound,
    #[error("key already exists")]
    KeyExists,
    #[error("key does not exist")]
    KeyNotFound,
    #[error("key version {0} does not exist")]
    VersionNotFound(u32),
    #[error("policy already exists")]
    PolicyExists,
    #[error("policy does not exist")]
    PolicyNotFound,
    #[error("identity already exists")]
    IdentityExists,
    #[error("identity does not exist")]
    IdentityNotFound,
    #[error("object already exists")]
    ObjectExists,
    #[error("object does not exist")]
    ObjectNotFound,
    #[error("{0}")]
    Invalid(String),
}

impl ApplyError {
    pub fn status(&self) -> u16 {
        match self {
            ApplyError::EnclaveExists
            | ApplyError::KeyExists
            | ApplyError::PolicyExists
            | ApplyError::IdentityExists
            | ApplyError::ObjectExists => 409,
            ApplyError::Invalid(_) => 400,
            _ => 404,
        }
    }
}

/// A stored record touched by a change; the store writes its new value (or deletes it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Touch {
    Enclave(String),
    Key(String, String),
    Policy(String, String),
    Identity(Identity),
    /// The enclave and everything in it is gone.
    DropEnclave(String),
    /// The cluster membership record.
    Cluster,
    /// A token object.
    Object(String, String),
    /// An asymmetric key.
    AsymKey(String, String),
}

/// `v`, a new version number, unless the key has used every one.
fn usable_version(v: u32) -> Result<u32, ApplyError> {
    if v == u32::MAX {
        return Err(ApplyError::Invalid(
            "key has reached the maximum number of versions".into(),
        ));
    }
    Ok(v)
}

/// The version a deletion names: `requested`, or (0) the latest.
fn named_version(requested: u32, latest: Option<u32>) -> u32 {
    if requested == 0 {
        latest.unwrap_or(0)
    } else {
        requested
    }
}

fn enclave_mut<'a>(st: &'a mut State, name: &str) -> Result<&'a mut Enclave, ApplyError> {
    st.enclaves
        .get_mut(name)
        .map(Arc::make_mut)
        .ok_or(ApplyError::EnclaveNotFound)
}

/// Applies `change` to `st`, returning the records to persist.
pub fn apply(st: &mut State, change: &Change) -> Result<Vec<Touch>, ApplyError> {
    match change {
        Change::CreateEnclave { name, at, by } => {
            if st.enclaves.contains_key(name) {
                return Err(ApplyError::EnclaveExists);
            }
            st.enclaves.insert(
                name.clone(),
                Arc::new(Enclave {
                    name: name.clone(),
                    created_at: *at,
                    created_by: by.clone(),
                    keys: OrdMap::new(),
                    asym: OrdMap::new(),
                    objects: OrdMap::new(),
                    policies: OrdMap::new(),
                }),
            );
            Ok(vec![Touch::Enclave(name.clone())])
        }
        Change::DeleteEnclave { name } => {
            if st.enclaves.remove(name).is_none() {
                return Err(ApplyError::EnclaveNotFound);
            }
            let gone: Vec<Identity> = st
                .identities
                .iter()
                .filter(|(_, r)| r.enclave.as_deref() == Some(name.as_str()))
                .map(|(i, _)| i.clone())
                .collect();
            let mut touches = vec![Touch::DropEnclave(name.clone())];
            for i in gone {
                st.identities.remove(&i);
                touches.push(Touch::Identity(i));
            }
            Ok(touches)
        }
        Change::CreateKey {
            enclave,
            name,
            key_type,
            secret,
            imported,
            at,
            by,
        } => {
            let e = enclave_mut(st, enclave)?;
            if e.asym.get(name).is_some_and(|r| !r.is_deleted()) {
                return Err(ApplyError::KeyExists);
            }
            // A deleted key leaves a tombstone (a ring without versions) so that
            // re-creating it never reuses a version number.
            let first = match e.keys.get(name) {
                Some(r) if !r.is_deleted() => return Err(ApplyError::KeyExists),
                Some(r) => r.next_version,
                None => 1,
            };
            let first = usable_version(first)?;
            let v = KeyVersion::new(*key_type, first, &secret.0, *at, by.clone(), *imported);
            let ring = KeyRing {
                name: name.clone(),
                key_type: *key_type,
                versions: [(first, Arc::new(v))].into_iter().collect(),
                next_version: first + 1,
            };
            e.keys.insert(name.clone(), Arc::new(ring));
            Ok(vec![Touch::Key(enclave.clone(), name.clone())])
        }
        Change::AddKeyVersion {
            enclave,
            name,
            secret,
            at,
            by,
        } => {
            let e = enclave_mut(st, enclave)?;
            let ring = e
                .keys
                .get_mut(name)
                .filter(|r| !r.is_deleted())
                .map(Arc::make_mut)
                .ok_or(ApplyError::KeyNotFound)?;
            let v = usable_version(ring.next_version)?;
            ring.versions.insert(
                v,
                Arc::new(KeyVersion::new(
                    ring.key_type,
                    v,
                    &secret.0,
                    *at,
                    by.clone(),
                    false,
                )),
            );
            ring.next_version = v + 1;
            Ok(vec![Touch::Key(enclave.clone(), name.clone())])
        }
        Change::DeleteKeyVersion {
            enclave,
            name,
            version,
        } => {
            let e = enclave_mut(st, enclave)?;
            if let Some(ring) = e
                .asym
                .get_mut(name)
                .filter(|r| !r.is_deleted())
                .map(Arc::make_mut)
            {
                let v = named_version(*version, ring.latest().map(|v| v.version));
                if ring.versions.remove(&v).is_none() {
                    return Err(ApplyError::VersionNotFound(v));
                }
                return Ok(vec![Touch::AsymKey(enclave.clone(), name.clone())]);
            }
            let ring = e
                .keys
                .get_mut(name)
                .filter(|r| !r.is_deleted())
                .map(Arc::make_mut)
                .ok_or(ApplyError::KeyNotFound)?;
            let v = named_version(*version, ring.latest().map(|v| v.version));
            if ring.versions.remove(&v).is_none() {
                return Err(ApplyError::VersionNotFound(v));
            }
            Ok(vec![Touch::Key(enclave.clone(), name.clone())])
        }
        Change::DeleteKey { enclave, name } => {
            let e = enclave_mut(st, enclave)?;
            if let Some(ring) = e
                .asym
                .get_mut(name)
                .filter(|r| !r.is_deleted())
                .map(Arc::make_mut)
            {
                ring.versions = Versions::new();
                return Ok(vec![Touch::AsymKey(enclave.clone(), name.clone())]);
            }
            let ring = e
                .keys
                .get_mut(name)
                .filter(|r| !r.is_deleted())
                .map(Arc::make_mut)
                .ok_or(ApplyError::KeyNotFound)?;
            ring.versions = Versions::new();
            Ok(vec![Touch::Key(enclave.clone(), name.clone())])
        }
        Change::CreatePolicy {
            enclave,
            name,
            policy,
            at,
            by,
        } => {
            let e = enclave_mut(st, enclave)?;
            // Creating a policy that exists replaces it (kms-go semantics:
            // POLICY:CREATE updates), keeping its assignments.
            e.policies.insert(
                name.clone(),
                Arc::new(PolicyRecord {
                    policy: policy.clone(),
                    created_at: *at,
                    created_by: by.clone(),
                }),
            );
            Ok(vec![Touch::Policy(enclave.clone(), name.clone())])
        }
        Change::DeletePolicy { enclave, name } => {
            let e = enclave_mut(st, enclave)?;
            if e.policies.remove(name).is_none() {
                return Err(ApplyError::PolicyNotFound);
            }
            Ok(vec![Touch::Policy(enclave.clone(), name.clone())])
        }
        Change::AssignPolicy {
            enclave,
            identity,
            policy,
        } => {
            let e = st
                .enclaves
                .get(enclave)
                .ok_or(ApplyError::EnclaveNotFound)?;
            if !e.policies.contains_key(policy) {
                return Err(ApplyError::PolicyNotFound);
            }
            let rec = st
                .identities
                .get_mut(identity)
                .map(Arc::make_mut)
                .ok_or(ApplyError::IdentityNotFound)?;
            if rec.enclave.as_deref() != Some(enclave.as_str()) {
                return Err(ApplyError::IdentityNotFound);
            }
            if rec.privilege != Privilege::User {
                return Err(ApplyError::Invalid(format!(
                    "policies apply to User identities; this identity is {}",
                    rec.privilege.name()
                )));
            }
            rec.policy = Some(policy.clone());
            Ok(vec![Touch::Identity(identity.clone())])
        }
        Change::CreateIdentity {
            enclave,
            identity,
            privilege,
            policy,
            at,
            by,
        } => {
            if st.identities.contains_key(identity) {
                return Err(ApplyError::IdentityExists);
            }
            match (privilege, enclave) {
                (Privilege::SysAdmin, None) => {}
                (Privilege::SysAdmin, Some(_)) => {
                    return Err(ApplyError::Invalid(
                        "SysAdmin identities belong to no enclave".into(),
                    ))
                }
                (_, None) => {
                    return Err(ApplyError::Invalid(
                        "Admin and User identities need an enclave".into(),
                    ))
                }
                (_, Some(e)) => {
                    let e = st.enclaves.get(e).ok_or(ApplyError::EnclaveNotFound)?;
                    if let Some(p) = policy {
                        if *privilege != Privilege::User {
                            return Err(ApplyError::Invalid(
                                "only User identities have policies".into(),
                            ));
                        }
                        if !e.policies.contains_key(p) {
                            return Err(ApplyError::PolicyNotFound);
                        }
                    }
                }
            }
            st.identities.insert(
                identity.clone(),
                Arc::new(IdentityRecord {
                    privilege: *privilege,
                    enclave: enclave.clone(),
                    policy: policy.clone(),
                    created_at: *at,
                    created_by: by.clone(),
                }),
            );
            Ok(vec![Touch::Identity(identity.clone())])
        }
        Change::DeleteIdentity { enclave, identity } => {
            match st.identities.get(identity) {
                Some(r) if r.enclave == *enclave => {}
                _ => return Err(ApplyError::IdentityNotFound),
            }
            st.identities.remove(identity);
            Ok(vec![Touch::Identity(identity.clone())])
        }
        Change::CreateAsymKey {
            enclave,
            name,
            key_type,
            pkcs8,
            imported,
            at,
            by,
        } => {
            let e = enclave_mut(st, enclave)?;
            if e.keys.get(name).is_some_and(|r| !r.is_deleted()) {
                return Err(ApplyError::KeyExists);
            }
            let first = match e.asym.get(name) {
                Some(r) if !r.is_deleted() => return Err(ApplyError::KeyExists),
                Some(r) => r.next_version,
                None => 1,
            };
            let first = usable_version(first)?;
            let v = AsymVersion::from_pkcs8(*key_type, first, &pkcs8.0, *at, by.clone(), *imported)
                .map_err(ApplyError::Invalid)?;
            let ring = AsymRing {
                name: name.clone(),
                key_type: *key_type,
                versions: [(first, Arc::new(v))].into_iter().collect(),
                next_version: first + 1,
            };
            e.asym.insert(name.clone(), Arc::new(ring));
            Ok(vec![Touch::AsymKey(enclave.clone(), name.clone())])
        }
        Change::AddAsymKeyVersion {
            enclave,
            name,
            pkcs8,
            at,
            by,
        } => {
            let e = enclave_mut(st, enclave)?;
            let ring = e
                .asym
                .get_mut(name)
                .filter(|r| !r.is_deleted())
                .map(Arc::make_mut)
                .ok_or(ApplyError::KeyNotFound)?;
            let v = usable_version(ring.next_version)?;
            let av = AsymVersion::from_pkcs8(ring.key_type, v, &pkcs8.0, *at, by.clone(), false)
                .map_err(ApplyError::Invalid)?;
            ring.versions.insert(v, Arc::new(av));
            ring.next_version = v + 1;
            Ok(vec![Touch::AsymKey(enclave.clone(), name.clone())])
        }
        Change::PutObject {
            enclave,
            name,
            class,
            attributes,
            replace,
            at,
            by,
        } => {
            let e = enclave_mut(st, enclave)?;
            let created = match e.objects.get(name) {
                Some(_) if !*replace => return Err(ApplyError::ObjectExists),
                Some(o) => (o.created_at, o.created_by.clone()),
                None if *replace => return Err(ApplyError::ObjectNotFound),
                None => (*at, by.clone()),
            };
            e.objects.insert(
                name.clone(),
                Arc::new(ObjectRecord {
                    class: *class,
                    attributes: attributes.clone(),
                    created_at: created.0,
                    created_by: created.1,
                }),
            );
            Ok(vec![Touch::Object(enclave.clone(), name.clone())])
        }
        Change::DeleteObject { enclave, name } => {
            let e = enclave_mut(st, enclave)?;
            if e.objects.remove(name).is_none() {
                return Err(ApplyError::ObjectNotFound);
            }
            Ok(vec![Touch::Object(enclave.clone(), name.clone())])
        }
        Change::Restored { .. } | Change::Noop => Ok(vec![]),
        Change::SetMember { id, addr } => {
            if addr.is_empty() {
                return Err(ApplyError::Invalid("node address must not be empty".into()));
            }
            let c = &mut st.cluster;
            c.members.insert(*id, addr.clone());
            c.epoch += 1;
            Ok(vec![Touch::Cluster])
        }
        Change::RemoveMember { id } => {
            let c = &mut st.cluster;
            if c.members.remove(id).is_none() {
                return Err(ApplyError::Invalid(format!("node {id} is not a member")));
            }
            c.epoch += 1;
            Ok(vec![Touch::Cluster])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t() -> Time {
        Time { secs: 1, nanos: 0 }
    }

    fn create_key(e: &str, n: &str) -> Change {
        Change::CreateKey {
            enclave: e.into(),
            name: n.into(),
            key_type: KeyType::Aes256,
            secret: Secret([7; 32]),
            imported: false,
            at: t(),
            by: "test".into(),
        }
    }

    #[test]
    fn keys_and_versions() {
        let mut st = State::default();
        assert_eq!(
            apply(&mut st, &create_key("e", "k")).unwrap_err(),
            ApplyError::EnclaveNotFound
        );
        apply(
            &mut st,
            &Change::CreateEnclave {
                name: "e".into(),
                at: t(),
                by: "x".into(),
            },
        )
        .unwrap();
        apply(&mut st, &create_key("e", "k")).unwrap();
        assert_eq!(
            apply(&mut st, &create_key("e", "k")).unwrap_err(),
            ApplyError::KeyExists
        );
        let add = Change::AddKeyVersion {
            enclave: "e".into(),
            name: "k".into(),
            secret: Secret([8; 32]),
            at: t(),
            by: "x".into(),
        };
        apply(&mut st, &add).unwrap();
        let ring = st.enclave("e").unwrap().keys.get("k").unwrap().clone();
        assert_eq!(ring.latest().unwrap().version, 2);
        // Delete version 2: the latest is 1 again, but the next new version is 3.
        apply(
            &mut st,
            &Change::DeleteKeyVersion {
                enclave: "e".into(),
                name: "k".into(),
                version: 2,
            },
        )
        .unwrap();
        apply(&mut st, &add).unwrap();
        let ring = st.enclave("e").unwrap().keys.get("k").unwrap().clone();
        assert_eq!(
            ring.versions.keys().copied().collect::<Vec<_>>(),
            vec![1, 3]
        );
        // Deleting the whole key and creating it again never reuses a number.
        apply(
            &mut st,
            &Change::DeleteKey {
                enclave: "e".into(),
                name: "k".into(),
            },
        )
        .unwrap();
        assert_eq!(
            apply(
                &mut st,
                &Change::DeleteKey {
                    enclave: "e".into(),
                    name: "k".into()
                }
            )
            .unwrap_err(),
            ApplyError::KeyNotFound
        );
        assert_eq!(apply(&mut st, &add).unwrap_err(), ApplyError::KeyNotFound);
        apply(&mut st, &create_key("e", "k")).unwrap();
        let ring = st.enclave("e").unwrap().keys.get("k").unwrap().clone();
        assert_eq!(ring.versions.keys().copied().collect::<Vec<_>>(), vec![4]);
        assert_eq!(
            apply(
                &mut st,
                &Change::DeleteKeyVersion {
                    enclave: "e".into(),
                    name: "k".into(),
                    version: 2
                }
            )
            .unwrap_err(),
            ApplyError::VersionNotFound(2)
        );
    }

    #[test]
    fn deleting_an_enclave_removes_its_identities() {
        let mut st = State::default();
        apply(
            &mut st,
            &Change::CreateEnclave {
                name: "e".into(),
                at: t(),
                by: "x".into(),
            },
        )
        .unwrap();
        let id = kms_client::ApiKey::generate().identity();
        apply(
            &mut st,
            &Change::CreateIdentity {
                enclave: Some("e".into()),
                identity: id.clone(),
                privilege: Privilege::Admin,
                policy: None,
                at: t(),
                by: "x".into(),
            },
        )
        .unwrap();
        let touches = apply(&mut st, &Change::DeleteEnclave { name: "e".into() }).unwrap();
        assert!(touches.contains(&Touch::Identity(id.clone())));
        assert!(st.identities.get(&id).is_none());
    }

    #[test]
    fn failed_change_leaves_state_untouched() {
        let mut st = State::default();
        apply(
            &mut st,
            &Change::CreateEnclave {
                name: "e".into(),
                at: t(),
                by: "x".into(),
            },
        )
        .unwrap();
        let before = st.enclave("e").unwrap().keys.len();
        let id = kms_client::ApiKey::generate().identity();
        assert!(apply(
            &mut st,
            &Change::AssignPolicy {
                enclave: "e".into(),
                identity: id,
                policy: "p".into()
            }
        )
        .is_err());
        assert_eq!(st.enclave("e").unwrap().keys.len(), before);
    }
}
