//! Durable storage: RocksDB in the data directory.
//!
//! Column families (see docs/formats.md for the byte layout):
//! - `meta`: format version, node identity, the root key sealed by each HSM,
//!   the index of the last applied log entry, the node's TLS key (sealed).
//! - `log`: log entries by big-endian index, sealed under the root key.
//! - `state`: one record per enclave, key ring, policy and identity, sealed
//!   under the root key with the record's own key as associated data.
//!
//! Every change to `log`, `state` and the applied index is one RocksDB
//! `WriteBatch` written with `sync`: a crash at any instant leaves either all
//! of a group of entries or none of it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use hsm_backends::Hsm;
use kms_client::Identity;
use rocksdb::{
    ColumnFamilyDescriptor, Direction, IteratorMode, Options, WriteBatch, WriteOptions, DB,
};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::change::{Change, Touch};
use crate::codec;
use crate::crypto::RootKey;
use crate::model::{
    AsymRing, AsymRingRecord, ClusterRecord, Enclave, EnclaveRecord, IdentityRecord, KeyRing,
    KeyRingRecord, ObjectRecord, PolicyRecord, State,
};
use crate::replication::core::{Durable, Entry as LogEntry};

const CF_META: &str = "meta";
const CF_LOG: &str = "log";
const CF_STATE: &str = "state";
const FORMAT: &[u8] = b"kms-store-v1";
const ROOT_CONTEXT: &[u8] = b"kms/v1/root-key";
/// Log entries kept behind the applied index (older ones are covered by the state).
pub const LOG_RETAIN: u64 = 10_000;

/// Why the store could not be opened or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0}")]
    Sealed(String),
    #[error("storage error: {0}")]
    Db(#[from] rocksdb::Error),
    #[error("corrupt record {key}: {why}")]
    Corrupt { key: String, why: String },
    #[error("{0}")]
    Io(String),
    #[error("{0}")]
    Exists(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Refused(String),
}

/// Non-secret facts about this node, stored in `meta/node`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeMeta {
    pub node_id: u32,
    pub created_at: crate::model::Time,
}

/// One entry of the replicated log.
#[derive(Debug, Serialize, Deserialize)]
pub struct Entry {
    pub term: u64,
    pub change: Change,
}

pub struct Store {
    db: DB,
    root: RootKey,
    /// The root key itself, to seal it under another HSM (`add-hsm`).
    root_secret: Zeroizing<[u8; 32]>,
    /// Serializes changes to the sealed root key entries (check, then write).
    hsm_lock: parking_lot::Mutex<()>,
    dir: PathBuf,
}

fn seal_root(hsm: &dyn Hsm, secret: &[u8; 32]) -> Result<Vec<u8>, StoreError> {
    hsm.seal(secret, ROOT_CONTEXT).map_err(|e| {
        StoreError::Sealed(format!(
            "cannot seal the root key with HSM {}: {e}",
            hsm.name()
        ))
    })
}

/// The sealed root key entries: (HSM name, sealed root key).
fn root_entries(
    db: &DB,
    meta: &rocksdb::ColumnFamily,
) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
    let mut out = Vec::new();
    for item in db.iterator_cf(meta, IteratorMode::From(b"root/", Direction::Forward)) {
        let (k, v) = item?;
        let Some(name) = k.strip_prefix(b"root/") else {
            break;
        };
        out.push((String::from_utf8_lossy(name).into_owned(), v.to_vec()));
    }
    Ok(out)
}

/// What [`Store::open`] found.
pub struct Opened {
    pub store: Arc<Store>,
    pub state: State,
    pub meta: NodeMeta,
    pub created: bool,
    pub hsms: Vec<String>,
}

fn cfs() -> Vec<ColumnFamilyDescriptor> {
    [CF_META, CF_LOG, CF_STATE]
        .into_iter()
        .map(|n| ColumnFamilyDescriptor::new(n, Options::default()))
        .collect()
}

fn db_options() -> Options {
    let mut o = Options::default();
    o.create_if_missing(true);
    o.create_missing_column_families(true);
    o.set_keep_log_file_num(3);
    o.set_max_total_wal_size(64 << 20);
    o
}

fn root_entry_key(hsm_name: &str) -> Vec<u8> {
    format!("root/{hsm_name}").into_bytes()
}

// ---- record keys ----

pub fn enclave_key(e: &str) -> Vec<u8> {
    [b"E\0", e.as_bytes()].concat()
}
pub fn key_key(e: &str, k: &str) -> Vec<u8> {
    [b"K\0", e.as_bytes(), b"\0", k.as_bytes()].concat()
}
/// An asymmetric key's record (`S` sorts after `E`: records are imported
/// in key order, enclaves first).
pub fn asym_key(e: &str, k: &str) -> Vec<u8> {
    [b"S\0", e.as_bytes(), b"\0", k.as_bytes()].concat()
}
/// A token object's record (`O` sorts after `E`).
pub fn object_key(e: &str, o: &str) -> Vec<u8> {
    [b"O\0", e.as_bytes(), b"\0", o.as_bytes()].concat()
}
pub fn policy_key(e: &str, p: &str) -> Vec<u8> {
    [b"P\0", e.as_bytes(), b"\0", p.as_bytes()].concat()
}
pub fn cluster_key() -> Vec<u8> {
    b"C\0cluster".to_vec()
}
pub fn identity_key(i: &Identity) -> Vec<u8> {
    [b"I\0".as_slice(), i.to_string().as_bytes()].concat()
}
fn log_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}
/// The associated data a log entry is sealed with.
fn log_ad(index: u64) -> Vec<u8> {
    [b"log/".as_slice(), &log_key(index)].concat()
}

/// The plaintext (encoded, not yet sealed) value of a record, if it exists in `st`.
fn record_value(st: &State, key: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    let mut parts = key[2..].split(|b| *b == 0);
    let s = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    match key[0] {
        b'E' => {
            let e = st.enclave(&s(parts.next()?))?;
            Some(Zeroizing::new(codec::encode(&EnclaveRecord {
                created_at: e.created_at,
                created_by: e.created_by.clone(),
            })))
        }
        b'K' => {
            let e = st.enclave(&s(parts.next()?))?;
            let ring = e.keys.get(&s(parts.next()?))?;
            Some(Zeroizing::new(codec::encode(&ring.to_record())))
        }
        b'O' => {
            let e = st.enclave(&s(parts.next()?))?;
            let o = e.objects.get(&s(parts.next()?))?;
            Some(Zeroizing::new(codec::encode(o.as_ref())))
        }
        b'S' => {
            let e = st.enclave(&s(parts.next()?))?;
            let ring = e.asym.get(&s(parts.next()?))?;
            Some(Zeroizing::new(codec::encode(&ring.to_record())))
        }
        b'P' => {
            let e = st.enclave(&s(parts.next()?))?;
            let p = e.policies.get(&s(parts.next()?))?;
            Some(Zeroizing::new(codec::encode(p.as_ref())))
        }
        b'I' => {
            let id = Identity::parse(&s(parts.next()?)).ok()?;
            let r = st.identities.get(&id)?;
            Some(Zeroizing::new(codec::encode(r.as_ref())))
        }
        b'C' if !st.cluster.members.is_empty() => Some(Zeroizing::new(codec::encode(&st.cluster))),
        _ => None,
    }
}

/// Every record of `st` as (record key, encoded value): the content of a backup.
pub fn export_records(st: &State) -> Vec<(Vec<u8>, Zeroizing<Vec<u8>>)> {
    let mut keys = Vec::new();
    for (en, e) in st.enclaves.iter() {
        keys.push(enclave_key(en));
        keys.extend(e.keys.keys().map(|k| key_key(en, k)));
        keys.extend(e.asym.keys().map(|k| asym_key(en, k)));
        keys.extend(e.objects.keys().map(|o| object_key(en, o)));
        keys.extend(e.policies.keys().map(|p| policy_key(en, p)));
    }
    keys.extend(st.identities.keys().map(identity_key));
    keys.push(cluster_key());
    par_map(keys, |k| record_value(st, &k).map(|v| (k, v)))
        .into_iter()
        .flatten()
        .collect()
}

/// One decoded state record, ready to be put into a [`State`].
enum Parsed {
    Enclave(String, EnclaveRecord),
    Key(String, String, KeyRing),
    Object(String, String, ObjectRecord),
    Asym(String, String, AsymRing),
    Policy(String, String, PolicyRecord),
    Cluster(ClusterRecord),
    Identity(Identity, IdentityRecord),
}

fn corrupt(k: &[u8], why: String) -> StoreError {
    StoreError::Corrupt {
        key: String::from_utf8_lossy(k).replace('\0', "/"),
        why,
    }
}

/// Decodes one record (key, encoded value). Independent of every other
/// record, so a large state is decoded on every core ([`par_map`]).
fn parse_record(k: &[u8], v: &[u8]) -> Result<Parsed, StoreError> {
    if k.len() < 3 || k[1] != 0 {
        return Err(corrupt(k, "malformed record key".into()));
    }
    let text = std::str::from_utf8(&k[2..]).map_err(|_| corrupt(k, "key is not UTF-8".into()))?;
    let mut parts = text.splitn(2, '\0');
    let first = parts.next().unwrap_or_default().to_string();
    let second = parts.next().map(str::to_string);
    Ok(match (k[0], second) {
        (b'E', None) => Parsed::Enclave(first, codec::decode(v).map_err(|e| corrupt(k, e))?),
        (b'K', Some(name)) => {
            let r: KeyRingRecord = codec::decode(v).map_err(|e| corrupt(k, e))?;
            let ring = KeyRing::from_record(name.clone(), &r);
            Parsed::Key(first, name, ring)
        }
        (b'O', Some(name)) => {
            Parsed::Object(first, name, codec::decode(v).map_err(|e| corrupt(k, e))?)
        }
        (b'S', Some(name)) => {
            let r: AsymRingRecord = codec::decode(v).map_err(|e| corrupt(k, e))?;
            let ring = AsymRing::from_record(name.clone(), &r).map_err(|e| corrupt(k, e))?;
            Parsed::Asym(first, name, ring)
        }
        (b'P', Some(name)) => {
            Parsed::Policy(first, name, codec::decode(v).map_err(|e| corrupt(k, e))?)
        }
        (b'C', None) => Parsed::Cluster(codec::decode(v).map_err(|e| corrupt(k, e))?),
        (b'I', None) => {
            let id = Identity::parse(&first).map_err(|e| corrupt(k, e.to_string()))?;
            Parsed::Identity(id, codec::decode(v).map_err(|e| corrupt(k, e))?)
        }
        _ => return Err(corrupt(k, "unknown record kind".into())),
    })
}

/// Puts decoded records, in key order (an enclave before its contents),
/// into a new state.
fn assemble(parsed: impl Iterator<Item = (Vec<u8>, Parsed)>) -> Result<State, StoreError> {
    let mut st = State::default();
    fn enclave<'a>(st: &'a mut State, e: &str, k: &[u8]) -> Result<&'a mut Enclave, StoreError> {
        st.enclaves
            .get_mut(e)
            .map(Arc::make_mut)
            .ok_or_else(|| corrupt(k, "record of unknown enclave".into()))
    }
    for (k, p) in parsed {
        match p {
            Parsed::Enclave(name, r) => {
                st.enclaves.insert(
                    name.clone(),
                    Arc::new(Enclave {
                        name,
                        created_at: r.created_at,
                        created_by: r.created_by,
                        keys: Default::default(),
                        asym: Default::default(),
                        objects: Default::default(),
                        policies: Default::default(),
                    }),
                );
            }
            Parsed::Key(e, name, ring) => {
                enclave(&mut st, &e, &k)?.keys.insert(name, Arc::new(ring));
            }
            Parsed::Object(e, name, r) => {
                enclave(&mut st, &e, &k)?.objects.insert(name, Arc::new(r));
            }
            Parsed::Asym(e, name, ring) => {
                enclave(&mut st, &e, &k)?.asym.insert(name, Arc::new(ring));
            }
            Parsed::Policy(e, name, r) => {
                enclave(&mut st, &e, &k)?.policies.insert(name, Arc::new(r));
            }
            Parsed::Cluster(r) => st.cluster = r,
            Parsed::Identity(id, r) => {
                st.identities.insert(id, Arc::new(r));
            }
        }
    }
    Ok(st)
}

/// Applies `f` to every item on every core (scoped threads), keeping the
/// order. Loading, copying and re-sealing a million keys is CPU-bound work
/// per record: a node with a million keys starts, and sends or installs a
/// snapshot, in a fraction of the time one thread would take.
pub fn par_map<T: Send, U: Send>(items: Vec<T>, f: impl Fn(T) -> U + Sync) -> Vec<U> {
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(16);
    if threads == 1 || items.len() < 4096 {
        return items.into_iter().map(f).collect();
    }
    let per = items.len().div_ceil(threads);
    let mut chunks: Vec<Vec<T>> = Vec::with_capacity(threads);
    let mut it = items.into_iter();
    loop {
        let c: Vec<T> = it.by_ref().take(per).collect();
        if c.is_empty() {
            break;
        }
        chunks.push(c);
    }
    let f = &f;
    std::thread::scope(|s| {
        let handles: Vec<_> = chunks
            .into_iter()
            .map(|c| s.spawn(move || c.into_iter().map(f).collect::<Vec<U>>()))
            .collect();
        let mut out = Vec::new();
        for h in handles {
            // A panic in `f` is a bug: pass it on.
            out.extend(h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)));
        }
        out
    })
}

/// Rebuilds a state from records sorted by key (enclaves sort before keys and policies).
pub fn import_records<'a>(
    records: impl Iterator<Item = (&'a [u8], &'a [u8])>,
) -> Result<State, StoreError> {
    let records: Vec<_> = records.collect();
    let parsed = par_map(records, |(k, v)| Ok((k.to_vec(), parse_record(k, v)?)))
        .into_iter()
        .collect::<Result<Vec<_>, StoreError>>()?;
    assemble(parsed.into_iter())
}

impl Store {
    /// Opens (or creates) the store in `dir`, unsealing its root key with
    /// the first of `hsms` that holds a sealed root key entry. A new store's
    /// root key is sealed by every one of `hsms`.
    ///
    /// When the store exists, the root key is checked with a read-only open
    /// first, so a wrong HSM changes nothing on disk.
    pub fn open(dir: &Path, hsms: &[Arc<dyn Hsm>]) -> Result<Opened, StoreError> {
        let db_dir = dir.join("db");
        let exists = db_dir.join("CURRENT").exists();
        if !exists {
            return Self::create(dir, &db_dir, hsms);
        }
        let (root, hsms) = {
            let scratch = tempfile::tempdir().map_err(|e| StoreError::Io(e.to_string()))?;
            let mut o = Options::default();
            o.set_db_log_dir(scratch.path());
            let ro = DB::open_cf_for_read_only(&o, &db_dir, [CF_META, CF_LOG, CF_STATE], false)?;
            Self::unseal_root(&ro, hsms, dir)?
        };
        let db = DB::open_cf_descriptors(&db_options(), &db_dir, cfs())?;
        let store = Store {
            db,
            root: RootKey::new(&root),
            root_secret: root,
            hsm_lock: Default::default(),
            dir: dir.to_path_buf(),
        };
        let meta: NodeMeta = store
            .get_meta(b"node")?
            .ok_or_else(|| StoreError::Corrupt {
                key: "meta/node".into(),
                why: "missing".into(),
            })
            .and_then(|b| {
                codec::decode(&b).map_err(|why| StoreError::Corrupt {
                    key: "meta/node".into(),
                    why,
                })
            })?;
        let mut state = store.load_state()?;
        state.applied = store.applied()?;
        Ok(Opened {
            store: Arc::new(store),
            state,
            meta,
            created: false,
            hsms,
        })
    }

    fn unseal_root(
        db: &DB,
        hsms: &[Arc<dyn Hsm>],
        dir: &Path,
    ) -> Result<(Zeroizing<[u8; 32]>, Vec<String>), StoreError> {
        let meta = db.cf_handle(CF_META).expect("cf exists");
        match db.get_cf(meta, b"format")? {
            Some(f) if f == FORMAT => {}
            Some(f) => {
                return Err(StoreError::Io(format!(
                    "data directory {} has unsupported format '{}'",
                    dir.display(),
                    String::from_utf8_lossy(&f)
                )))
            }
            None => {
                return Err(StoreError::Io(format!(
                    "data directory {} is not a KMS store",
                    dir.display()
                )))
            }
        }
        let entries = root_entries(db, meta)?;
        let names: Vec<String> = entries.iter().map(|(n, _)| n.clone()).collect();
        let configured: Vec<String> = hsms.iter().map(|h| h.name()).collect();
        let mut failures = Vec::new();
        for hsm in hsms {
            let Some((_, sealed)) = entries.iter().find(|(n, _)| *n == hsm.name()) else {
                continue;
            };
            match hsm.unseal(sealed, ROOT_CONTEXT) {
                Ok(secret) => {
                    let secret: [u8; 32] = secret.as_slice().try_into().map_err(|_| {
                        StoreError::Sealed("sealed root key has the wrong length".into())
                    })?;
                    return Ok((Zeroizing::new(secret), names));
                }
                Err(e) => failures.push(format!("{}: {e}", hsm.name())),
            }
        }
        if failures.is_empty() {
            return Err(StoreError::Sealed(format!(
                "cannot unseal data directory {}: it is sealed by HSM {} but the configured HSM is {} \
                 (is KMS_HSM_KEY, or the PKCS#11 HSM's key, the one this node was created with?)",
                dir.display(),
                names.join(", "),
                configured.join(", ")
            )));
        }
        Err(StoreError::Sealed(format!(
            "cannot unseal data directory {}: {}",
            dir.display(),
            failures.join("; ")
        )))
    }

    /// Creates a store: built in `db.new` and renamed to `db` once complete,
    /// so that a crash during the first start leaves no half-made store.
    fn create(dir: &Path, final_dir: &Path, hsms: &[Arc<dyn Hsm>]) -> Result<Opened, StoreError> {
        let db_dir = &dir.join("db.new");
        let _ = std::fs::remove_dir_all(db_dir);
        // A `db` without `CURRENT` is the leftover of an interrupted first start
        // of an older version: nothing was ever acknowledged from it.
        if final_dir.exists() {
            std::fs::remove_dir_all(final_dir).map_err(|e| {
                StoreError::Io(format!(
                    "cannot remove incomplete {}: {e}",
                    final_dir.display()
                ))
            })?;
        }
        std::fs::create_dir_all(db_dir)
            .map_err(|e| StoreError::Io(format!("cannot create {}: {e}", db_dir.display())))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
        }
        let secret = crate::crypto::random_key();
        let mut sealed = Vec::new();
        for hsm in hsms {
            sealed.push((hsm.name(), seal_root(hsm.as_ref(), &secret)?));
        }
        let db = DB::open_cf_descriptors(&db_options(), db_dir, cfs())?;
        let store = Store {
            db,
            root: RootKey::new(&secret),
            root_secret: secret.clone(),
            hsm_lock: Default::default(),
            dir: dir.to_path_buf(),
        };
        let meta = NodeMeta {
            node_id: loop {
                let id = rand::random::<u32>();
                if id != 0 {
                    break id;
                }
            },
            created_at: crate::model::Time::now(),
        };
        let mut wb = WriteBatch::default();
        let m = store.cf(CF_META);
        wb.put_cf(m, b"node", codec::encode(&meta));
        for (name, s) in &sealed {
            wb.put_cf(m, root_entry_key(name), s);
        }
        wb.put_cf(m, b"applied", 0u64.to_be_bytes());
        // `format` last in the batch is irrelevant (the batch is atomic), but it
        // is the marker that the store is complete.
        wb.put_cf(m, b"format", FORMAT);
        store.write(wb)?;
        drop(store);
        std::fs::rename(db_dir, final_dir).map_err(|e| {
            StoreError::Io(format!(
                "cannot rename {} to {}: {e}",
                db_dir.display(),
                final_dir.display()
            ))
        })?;
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        let db = DB::open_cf_descriptors(&db_options(), final_dir, cfs())?;
        let store = Store {
            db,
            root: RootKey::new(&secret),
            root_secret: secret,
            hsm_lock: Default::default(),
            dir: dir.to_path_buf(),
        };
        Ok(Opened {
            store: Arc::new(store),
            state: State::default(),
            meta,
            created: true,
            hsms: sealed.into_iter().map(|(n, _)| n).collect(),
        })
    }

    fn cf(&self, name: &str) -> &rocksdb::ColumnFamily {
        self.db
            .cf_handle(name)
            .expect("column families are created at open")
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Names of the HSMs holding a sealed root key entry.
    pub fn hsm_entries(&self) -> Result<Vec<String>, StoreError> {
        Ok(root_entries(&self.db, self.cf(CF_META))?
            .into_iter()
            .map(|(n, _)| n)
            .collect())
    }

    /// Seals the root key under `hsm` (replacing its entry if `overwrite`).
    /// The HSM must unseal what it sealed before the entry is written.
    pub fn add_hsm(&self, hsm: &dyn Hsm, overwrite: bool) -> Result<(), StoreError> {
        let _serial = self.hsm_lock.lock();
        let key = root_entry_key(&hsm.name());
        if !overwrite && self.get_meta(&key)?.is_some() {
            return Err(StoreError::Exists(format!(
                "HSM {} already seals this node",
                hsm.name()
            )));
        }
        let sealed = seal_root(hsm, &self.root_secret)?;
        let back = hsm.unseal(&sealed, ROOT_CONTEXT).map_err(|e| {
            StoreError::Sealed(format!(
                "HSM {} cannot unseal what it sealed: {e}",
                hsm.name()
            ))
        })?;
        // Constant time: these are the root key's bytes.
        if !bool::from(subtle::ConstantTimeEq::ct_eq(
            back.as_slice(),
            self.root_secret.as_slice(),
        )) {
            return Err(StoreError::Sealed(format!(
                "HSM {} returned another root key",
                hsm.name()
            )));
        }
        let mut wb = WriteBatch::default();
        wb.put_cf(self.cf(CF_META), key, sealed);
        self.write(wb)
    }

    /// Removes an HSM's sealed root key entry. Refused when no entry of a
    /// currently configured HSM would remain: the node could not start again.
    pub fn remove_hsm(&self, name: &str, configured: &[String]) -> Result<(), StoreError> {
        let _serial = self.hsm_lock.lock();
        let entries = self.hsm_entries()?;
        if !entries.iter().any(|n| n == name) {
            return Err(StoreError::NotFound(format!(
                "HSM {name} does not seal this node (sealed by: {})",
                entries.join(", ")
            )));
        }
        if !entries.iter().any(|n| n != name && configured.contains(n)) {
            return Err(StoreError::Refused(format!(
                "removing HSM {name} would leave no configured HSM able to unseal this node; add another with `kms add-hsm` first"
            )));
        }
        let mut wb = WriteBatch::default();
        wb.delete_cf(self.cf(CF_META), root_entry_key(name));
        self.write(wb)
    }

    fn get_meta(&self, k: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.db.get_cf(self.cf(CF_META), k)?)
    }

    fn applied(&self) -> Result<u64, StoreError> {
        let b = self.get_meta(b"applied")?.unwrap_or_else(|| vec![0; 8]);
        let a: [u8; 8] = b.as_slice().try_into().map_err(|_| StoreError::Corrupt {
            key: "meta/applied".into(),
            why: "bad length".into(),
        })?;
        Ok(u64::from_be_bytes(a))
    }

    /// A node-local secret sealed under the root key in `meta` (e.g. the TLS key).
    pub fn local_secret(&self, name: &str) -> Result<Option<Zeroizing<Vec<u8>>>, StoreError> {
        let key = format!("secret/{name}");
        match self.get_meta(key.as_bytes())? {
            None => Ok(None),
            Some(b) => {
                self.root
                    .unseal(key.as_bytes(), &b)
                    .map(Some)
                    .map_err(|e| StoreError::Corrupt {
                        key,
                        why: e.to_string(),
                    })
            }
        }
    }

    pub fn put_local_secret(&self, name: &str, value: &[u8]) -> Result<(), StoreError> {
        let key = format!("secret/{name}");
        let mut wb = WriteBatch::default();
        wb.put_cf(
            self.cf(CF_META),
            key.as_bytes(),
            self.root.seal(key.as_bytes(), value),
        );
        self.write(wb)
    }

    /// Reads every state record, then unseals and decodes them on every core.
    fn load_state(&self) -> Result<State, StoreError> {
        let mut sealed = Vec::new();
        for item in self.db.iterator_cf(self.cf(CF_STATE), IteratorMode::Start) {
            sealed.push(item?);
        }
        let parsed = par_map(sealed, |(k, v)| {
            let plain = self
                .root
                .unseal(&k, &v)
                .map_err(|e| corrupt(&k, e.to_string()))?;
            let p = parse_record(&k, &plain)?;
            Ok((k.into_vec(), p))
        })
        .into_iter()
        .collect::<Result<Vec<_>, StoreError>>()?;
        assemble(parsed.into_iter())
    }

    /// Adds a log entry at `index` to the batch.
    pub fn stage_entry(&self, wb: &mut WriteBatch, index: u64, entry: &Entry) {
        let k = log_key(index);
        let ctx = log_ad(index);
        let plain = Zeroizing::new(codec::encode(entry));
        wb.put_cf(self.cf(CF_LOG), k, self.root.seal(&ctx, &plain));
    }

    /// Adds the records `touches` names, as they are in `st`, to the batch.
    pub fn stage_touches(&self, wb: &mut WriteBatch, st: &State, touches: &[Touch]) {
        let cf = self.cf(CF_STATE);
        for t in touches {
            let key = match t {
                Touch::Enclave(e) => enclave_key(e),
                Touch::Key(e, k) => key_key(e, k),
                Touch::AsymKey(e, k) => asym_key(e, k),
                Touch::Policy(e, p) => policy_key(e, p),
                Touch::Identity(i) => identity_key(i),
                Touch::Cluster => cluster_key(),
                Touch::Object(e, o) => object_key(e, o),
                Touch::DropEnclave(e) => {
                    wb.delete_cf(cf, enclave_key(e));
                    for kind in [b'K', b'O', b'P', b'S'] {
                        let from = [&[kind, 0][..], e.as_bytes(), b"\0"].concat();
                        let to = [&[kind, 0][..], e.as_bytes(), b"\x01"].concat();
                        wb.delete_range_cf(cf, from, to);
                    }
                    continue;
                }
            };
            match record_value(st, &key) {
                Some(v) => wb.put_cf(cf, &key, self.root.seal(&key, &v)),
                None => wb.delete_cf(cf, &key),
            }
        }
    }

    /// Records the applied index.
    pub fn stage_applied(&self, wb: &mut WriteBatch, applied: u64) {
        wb.put_cf(self.cf(CF_META), b"applied", applied.to_be_bytes());
    }

    /// Records the replication term and vote.
    pub fn stage_hard_state(&self, wb: &mut WriteBatch, term: u64, voted_for: Option<u32>) {
        wb.put_cf(self.cf(CF_META), b"hard", codec::encode(&(term, voted_for)));
    }

    /// Deletes the log entries `from..=to`. Point deletes, not range
    /// tombstones: thousands of overlapping range tombstones make RocksDB's
    /// recovery quadratic.
    pub fn stage_delete_log(&self, wb: &mut WriteBatch, from: u64, to: u64) {
        let log = self.cf(CF_LOG);
        for index in from..=to {
            wb.delete_cf(log, log_key(index));
        }
    }

    /// Records that the log starts after `index` (whose entry had `term`).
    pub fn stage_snap(&self, wb: &mut WriteBatch, index: u64, term: u64) {
        wb.put_cf(self.cf(CF_META), b"snap", codec::encode(&(index, term)));
    }

    /// Marks this node as removed from its cluster, with the reason.
    pub fn set_removed(&self, why: &str) -> Result<(), StoreError> {
        let mut wb = WriteBatch::default();
        wb.put_cf(self.cf(CF_META), b"removed", why.as_bytes());
        self.write(wb)
    }

    /// Why this node was removed from its cluster, if it was.
    pub fn removed(&self) -> Result<Option<String>, StoreError> {
        Ok(self
            .get_meta(b"removed")?
            .map(|b| String::from_utf8_lossy(&b).into_owned()))
    }

    /// The replication state that survives restarts: term and vote, the
    /// log after the last compaction point, the applied index.
    pub fn durable(&self, applied: u64) -> Result<Durable<Change>, StoreError> {
        let corrupt = |key: &str, why: String| StoreError::Corrupt {
            key: key.into(),
            why,
        };
        let (term, voted_for): (u64, Option<u32>) = match self.get_meta(b"hard")? {
            Some(b) => codec::decode(&b).map_err(|e| corrupt("meta/hard", e))?,
            // A store from before replication: every entry had term 1.
            None => (1, None),
        };
        let mut log = Vec::new();
        let mut first = None;
        for item in self.db.iterator_cf(self.cf(CF_LOG), IteratorMode::Start) {
            let (k, v) = item?;
            let index = u64::from_be_bytes(
                k.as_ref()
                    .try_into()
                    .map_err(|_| corrupt("log", "malformed index".into()))?,
            );
            first.get_or_insert(index);
            let e = self.open_entry(index, &v)?;
            log.push(LogEntry {
                term: e.term,
                payload: match e.change {
                    Change::Noop => None,
                    c => Some(c),
                },
            });
        }
        let (snap_index, snap_term) = match self.get_meta(b"snap")? {
            Some(b) => codec::decode(&b).map_err(|e| corrupt("meta/snap", e))?,
            None => (first.map_or(applied, |f| f - 1), 1),
        };
        if let Some(f) = first {
            if f != snap_index + 1 {
                return Err(corrupt(
                    "log",
                    format!("log starts at {f}, expected {}", snap_index + 1),
                ));
            }
        }
        Ok(Durable {
            term,
            voted_for,
            log,
            applied,
            snap_index,
            snap_term,
        })
    }

    /// Replaces every state record with those of `st` (restore from backup, snapshot).
    pub fn stage_replace_all(&self, wb: &mut WriteBatch, st: &State) {
        let cf = self.cf(CF_STATE);
        wb.delete_range_cf(cf, [0u8].as_slice(), [0xffu8; 8].as_slice());
        let sealed = par_map(export_records(st), |(k, v)| {
            let s = self.root.seal(&k, &v);
            (k, s)
        });
        for (k, s) in sealed {
            wb.put_cf(cf, &k, s);
        }
    }

    /// Flushes the memtables to table files, so that the next start need
    /// not replay the write-ahead log (with a million keys, seconds), then
    /// stops RocksDB's background work (flushes, compactions) and waits for
    /// it; called once no more writes will come, before the process exits.
    pub fn close(&self) {
        let cfs: Vec<_> = [CF_META, CF_LOG, CF_STATE]
            .iter()
            .map(|n| self.cf(n))
            .collect();
        if let Err(e) = self
            .db
            .flush_cfs_opt(&cfs, &rocksdb::FlushOptions::default())
        {
            tracing::warn!(error = %e, "cannot flush the store at shutdown; the next start replays its log");
        }
        self.db.cancel_all_background_work(true);
    }

    /// Writes a batch durably (fsync of the write-ahead log).
    pub fn write(&self, wb: WriteBatch) -> Result<(), StoreError> {
        let mut wo = WriteOptions::default();
        wo.set_sync(true);
        self.db.write_opt(wb, &wo)?;
        Ok(())
    }

    /// Reads a log entry (for tests and, later, replication).
    pub fn entry(&self, index: u64) -> Result<Option<Entry>, StoreError> {
        match self.db.get_cf(self.cf(CF_LOG), log_key(index))? {
            Some(v) => self.open_entry(index, &v).map(Some),
            None => Ok(None),
        }
    }

    /// Unseals and decodes the stored log entry `index`.
    fn open_entry(&self, index: u64, sealed: &[u8]) -> Result<Entry, StoreError> {
        let ctx = log_ad(index);
        let plain = self
            .root
            .unseal(&ctx, sealed)
            .map_err(|e| StoreError::Corrupt {
                key: format!("log/{index}"),
                why: e.to_string(),
            })?;
        codec::decode(&plain).map_err(|why| StoreError::Corrupt {
            key: format!("log/{index}"),
            why,
        })
    }
}
