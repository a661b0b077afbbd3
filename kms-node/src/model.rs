//! The in-memory state of a node: enclaves, keys, identities and policies.
//!
//! The state is a persistent (structurally shared) data structure: the writer
//! clones it in O(1), applies a group of log entries to the clone, makes them
//! durable, and only then publishes the clone. Readers load the published
//! state without locks and never observe an entry that is not durable.

use std::sync::Arc;

use imbl::{HashMap, OrdMap};
use kms_client::Identity;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::asym::AsymType;
use crate::crypto::{KeyMaterial, KeyType};
use crate::policy::Policy;

/// Seconds since the Unix epoch and nanoseconds, as chosen by the proposer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Time {
    pub secs: i64,
    pub nanos: u32,
}

impl Time {
    pub fn now() -> Self {
        let d = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Time {
            secs: d.as_secs() as i64,
            nanos: d.subsec_nanos(),
        }
    }

    pub fn to_proto(self) -> prost_types::Timestamp {
        prost_types::Timestamp {
            seconds: self.secs,
            nanos: self.nanos as i32,
        }
    }
}

/// Who did something: an identity, or the node itself.
pub type Actor = String;

/// The privilege of an identity, as kms-go numbers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Privilege {
    SysAdmin = 1,
    Admin = 2,
    User = 3,
}

impl Privilege {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "SysAdmin" | "sysadmin" => Some(Privilege::SysAdmin),
            "Admin" | "admin" => Some(Privilege::Admin),
            "User" | "user" | "" => Some(Privilege::User),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Privilege::SysAdmin => "SysAdmin",
            Privilege::Admin => "Admin",
            Privilege::User => "User",
        }
    }
}

/// The versions of a key, ascending by number: a shared slice, copied on
/// write. A key has a handful of versions, so a copy per change costs less
/// than a tree, and an unchanged ring costs 32 bytes instead of a B-tree
/// node of 1.6 KB (imbl's OrdMap allocates 64 slots even for one entry).
pub struct Versions<T>(Arc<[(u32, Arc<T>)]>);

impl<T> Clone for Versions<T> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<T> Default for Versions<T> {
    fn default() -> Self {
        Self(Arc::from(Vec::new()))
    }
}

impl<T> Versions<T> {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn get(&self, v: &u32) -> Option<&Arc<T>> {
        self.0
            .binary_search_by_key(v, |(n, _)| *n)
            .ok()
            .map(|i| &self.0[i].1)
    }

    /// The highest version.
    pub fn latest(&self) -> Option<&Arc<T>> {
        self.0.last().map(|(_, v)| v)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn keys(&self) -> impl DoubleEndedIterator<Item = &u32> {
        self.0.iter().map(|(n, _)| n)
    }

    pub fn values(&self) -> impl DoubleEndedIterator<Item = &Arc<T>> {
        self.0.iter().map(|(_, v)| v)
    }

    /// Versions numbered `from` and above, ascending.
    pub fn from(&self, from: u32) -> impl DoubleEndedIterator<Item = (&u32, &Arc<T>)> {
        let i = self.0.partition_point(|(n, _)| *n < from);
        self.0[i..].iter().map(|(n, v)| (n, v))
    }

    /// Adds or replaces version `n`.
    pub fn insert(&mut self, n: u32, v: Arc<T>) {
        let mut all: Vec<_> = self.0.iter().cloned().collect();
        match all.binary_search_by_key(&n, |(k, _)| *k) {
            Ok(i) => all[i].1 = v,
            Err(i) => all.insert(i, (n, v)),
        }
        self.0 = Arc::from(all);
    }

    /// Removes version `n`; returns it if it was there.
    pub fn remove(&mut self, n: &u32) -> Option<Arc<T>> {
        let i = self.0.binary_search_by_key(n, |(k, _)| *k).ok()?;
        let mut all: Vec<_> = self.0.iter().cloned().collect();
        let (_, v) = all.remove(i);
        self.0 = Arc::from(all);
        Some(v)
    }
}

impl<T> FromIterator<(u32, Arc<T>)> for Versions<T> {
    fn from_iter<I: IntoIterator<Item = (u32, Arc<T>)>>(it: I) -> Self {
        let mut all: Vec<_> = it.into_iter().collect();
        all.sort_by_key(|(n, _)| *n);
        all.dedup_by_key(|(n, _)| *n);
        Self(Arc::from(all))
    }
}

/// One version of a key, with its secret.
pub struct KeyVersion {
    pub version: u32,
    pub secret: Zeroizing<[u8; 32]>,
    pub created_at: Time,
    pub created_by: Actor,
    pub imported: bool,
    /// Derived state used by encrypt/decrypt/MAC.
    pub material: KeyMaterial,
}

impl KeyVersion {
    pub fn new(
        key_type: KeyType,
        version: u32,
        secret: &[u8; 32],
        created_at: Time,
        created_by: Actor,
        imported: bool,
    ) -> Self {
        Self {
            version,
            secret: Zeroizing::new(*secret),
            created_at,
            created_by,
            imported,
            material: KeyMaterial::new(key_type, version, secret),
        }
    }
}

/// A named key: its versions. The highest version is used for encryption.
#[derive(Clone)]
pub struct KeyRing {
    pub name: String,
    pub key_type: KeyType,
    pub versions: Versions<KeyVersion>,
    /// The next version number; never decreases, so a deleted version's number
    /// is never reused.
    pub next_version: u32,
}

impl KeyRing {
    pub fn latest(&self) -> Option<&Arc<KeyVersion>> {
        self.versions.latest()
    }

    /// A deleted key is kept as a tombstone without versions, so that its
    /// version numbers are never reused; it is invisible to every command.
    pub fn is_deleted(&self) -> bool {
        self.versions.is_empty()
    }
}

/// The stored form of a key ring (sealed under the root key on disk).
#[derive(Serialize, Deserialize)]
pub struct KeyRingRecord {
    pub key_type: KeyType,
    pub next_version: u32,
    pub versions: Vec<KeyVersionRecord>,
}

#[derive(Serialize, Deserialize)]
pub struct KeyVersionRecord {
    pub version: u32,
    pub secret: [u8; 32],
    pub created_at: Time,
    pub created_by: Actor,
    pub imported: bool,
}

impl Drop for KeyVersionRecord {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.secret);
    }
}

impl KeyRing {
    pub fn to_record(&self) -> KeyRingRecord {
        KeyRingRecord {
            key_type: self.key_type,
            next_version: self.next_version,
            versions: self
                .versions
                .values()
                .map(|v| KeyVersionRecord {
                    version: v.version,
                    secret: *v.secret,
                    created_at: v.created_at,
                    created_by: v.created_by.clone(),
                    imported: v.imported,
                })
                .collect(),
        }
    }

    pub fn from_record(name: String, r: &KeyRingRecord) -> Self {
        let versions = r
            .versions
            .iter()
            .map(|v| {
                (
                    v.version,
                    Arc::new(KeyVersion::new(
                        r.key_type,
                        v.version,
                        &v.secret,
                        v.created_at,
                        v.created_by.clone(),
                        v.imported,
                    )),
                )
            })
            .collect();
        Self {
            name,
            key_type: r.key_type,
            versions,
            next_version: r.next_version,
        }
    }
}

/// One version of an asymmetric key: the private key, parsed for signing,
/// and its public key (SubjectPublicKeyInfo DER).
pub struct AsymVersion {
    pub version: u32,
    pub key: crate::asym::PrivateKey,
    pub spki: Vec<u8>,
    pub created_at: Time,
    pub created_by: Actor,
    pub imported: bool,
}

impl AsymVersion {
    /// Parses a version from the PKCS#8 DER the cluster stores; the type
    /// must be the ring's.
    pub fn from_pkcs8(
        key_type: AsymType,
        version: u32,
        pkcs8: &[u8],
        created_at: Time,
        created_by: Actor,
        imported: bool,
    ) -> Result<Self, String> {
        let key = crate::asym::PrivateKey::from_pkcs8_der(pkcs8).map_err(|e| e.to_string())?;
        if key.key_type() != key_type {
            return Err(format!(
                "the key is {}, not {}",
                key.key_type().name(),
                key_type.name()
            ));
        }
        let spki = key.public_key_der();
        Ok(Self {
            version,
            key,
            spki,
            created_at,
            created_by,
            imported,
        })
    }
}

/// A named asymmetric key (a key pair per version). Asymmetric keys share
/// the enclave's key names with secret keys but live apart, so that the
/// kms-go commands (KEY:LIST, KEY:STATUS), whose clients know only secret
/// key types, never see them.
#[derive(Clone)]
pub struct AsymRing {
    pub name: String,
    pub key_type: AsymType,
    pub versions: Versions<AsymVersion>,
    pub next_version: u32,
}

impl AsymRing {
    pub fn latest(&self) -> Option<&Arc<AsymVersion>> {
        self.versions.latest()
    }

    /// A deleted key keeps a tombstone so that its version numbers are never reused.
    pub fn is_deleted(&self) -> bool {
        self.versions.is_empty()
    }

    pub fn to_record(&self) -> AsymRingRecord {
        AsymRingRecord {
            key_type: self.key_type,
            next_version: self.next_version,
            versions: self
                .versions
                .values()
                .map(|v| AsymVersionRecord {
                    version: v.version,
                    pkcs8: v.key.to_pkcs8_der().to_vec(),
                    created_at: v.created_at,
                    created_by: v.created_by.clone(),
                    imported: v.imported,
                })
                .collect(),
        }
    }

    pub fn from_record(name: String, r: &AsymRingRecord) -> Result<Self, String> {
        let mut versions = Vec::with_capacity(r.versions.len());
        for v in &r.versions {
            let av = AsymVersion::from_pkcs8(
                r.key_type,
                v.version,
                &v.pkcs8,
                v.created_at,
                v.created_by.clone(),
                v.imported,
            )
            .map_err(|e| format!("version {}: {e}", v.version))?;
            versions.push((v.version, Arc::new(av)));
        }
        let versions = versions.into_iter().collect();
        Ok(Self {
            name,
            key_type: r.key_type,
            versions,
            next_version: r.next_version,
        })
    }
}

/// The stored form of an asymmetric key (record `S\0enclave\0name`,
/// sealed under the root key like every record; docs/formats.md).
#[derive(Serialize, Deserialize)]
pub struct AsymRingRecord {
    pub key_type: AsymType,
    pub next_version: u32,
    pub versions: Vec<AsymVersionRecord>,
}

#[derive(Serialize, Deserialize)]
pub struct AsymVersionRecord {
    pub version: u32,
    /// The private key, PKCS#8 DER (docs/asymmetric.md).
    pub pkcs8: Vec<u8>,
    pub created_at: Time,
    pub created_by: Actor,
    pub imported: bool,
}

impl Drop for AsymVersionRecord {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.pkcs8);
    }
}

/// A token object of the PKCS#11 module (a certificate, a data object):
/// its class and attributes, stored as the module gives them (attribute
/// type to value bytes; docs/pkcs11.md), replicated like everything else.
/// The server checks only sizes: the objects are not key material.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectRecord {
    pub class: u64,
    pub attributes: std::collections::BTreeMap<u64, Vec<u8>>,
    pub created_at: Time,
    pub created_by: Actor,
}

/// A policy stored in an enclave.
#[derive(Clone, Serialize, Deserialize)]
pub struct PolicyRecord {
    pub policy: Policy,
    pub created_at: Time,
    pub created_by: Actor,
}

/// An identity known to the cluster.
#[derive(Clone, Serialize, Deserialize)]
pub struct IdentityRecord {
    pub privilege: Privilege,
    /// The enclave of Admin and User identities; `None` for SysAdmins.
    pub enclave: Option<String>,
    pub policy: Option<String>,
    pub created_at: Time,
    pub created_by: Actor,
}

/// An enclave: an isolated namespace of keys, policies and identities.
#[derive(Clone)]
pub struct Enclave {
    pub name: String,
    pub created_at: Time,
    pub created_by: Actor,
    pub keys: OrdMap<String, Arc<KeyRing>>,
    /// Asymmetric keys; their names are unique across `keys` and `asym`.
    pub asym: OrdMap<String, Arc<AsymRing>>,
    /// Token objects of the PKCS#11 module (certificates, data objects).
    pub objects: OrdMap<String, Arc<ObjectRecord>>,
    pub policies: OrdMap<String, Arc<PolicyRecord>>,
}

impl Enclave {
    /// Whether a live key (secret or asymmetric) has this name.
    pub fn has_key(&self, name: &str) -> bool {
        self.keys.get(name).is_some_and(|r| !r.is_deleted())
            || self.asym.get(name).is_some_and(|r| !r.is_deleted())
    }
}

/// The stored form of an enclave's own record.
#[derive(Serialize, Deserialize)]
pub struct EnclaveRecord {
    pub created_at: Time,
    pub created_by: Actor,
}

/// The cluster's membership: node id to the address clients and peers use.
/// `epoch` counts membership changes (replicated ones and operator `edit`s).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterRecord {
    pub members: std::collections::BTreeMap<u32, String>,
    pub epoch: u64,
}

/// The whole replicated state.
#[derive(Clone, Default)]
pub struct State {
    pub enclaves: OrdMap<String, Arc<Enclave>>,
    pub cluster: ClusterRecord,
    pub identities: HashMap<Identity, Arc<IdentityRecord>>,
    /// Index of the last log entry applied.
    pub applied: u64,
}

impl State {
    pub fn enclave(&self, name: &str) -> Option<&Arc<Enclave>> {
        self.enclaves.get(name)
    }

    pub fn key_count(&self) -> usize {
        self.enclaves
            .values()
            .map(|e| e.keys.values().filter(|k| !k.is_deleted()).count())
            .sum()
    }
}

/// Validates an enclave, key or policy name: 1 to 128 bytes of
/// `[A-Za-z0-9._-:+=@]`, not `.` or `..`.
pub fn validate_name(kind: &str, name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err(format!("{kind} name must not be empty"));
    }
    if name.len() > 128 {
        return Err(format!(
            "{kind} name is {} bytes long, the maximum is 128",
            name.len()
        ));
    }
    if name == "." || name == ".." {
        return Err(format!("{kind} name '{name}' is reserved"));
    }
    if let Some(c) = name.chars().find(|c| {
        !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':' | '+' | '=' | '@'))
    }) {
        return Err(format!(
            "{kind} name contains the character {c:?}; allowed are letters, digits and . _ - : + = @"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in [
            "a",
            "key-1",
            "minio-default-key",
            "a.b_c:d+e=f@g",
            &"x".repeat(128),
        ] {
            validate_name("key", ok).unwrap();
        }
        for bad in [
            "",
            ".",
            "..",
            "a/b",
            "a b",
            "ä",
            "a\0",
            &"x".repeat(129),
            "a\\b",
            "a%2f",
        ] {
            assert!(validate_name("key", bad).is_err(), "{bad:?}");
        }
    }
}
