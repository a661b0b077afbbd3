//! The module's state between `C_Initialize` and `C_Finalize`: configuration,
//! the cluster clients, slots (one per enclave), sessions and objects.
//!
//! Network I/O runs on the calling thread: each thread that makes a cluster
//! call gets its own current-thread runtime and client (kept-alive
//! connections per thread), so a call needs no hand-off between threads. A
//! caller that is itself inside a Tokio runtime uses the module's shared
//! runtime from a scoped thread instead.
//!
//! Locking: the global state is an `Arc` behind a read-write lock taken only
//! to clone the `Arc` (and, for writing, by `C_Initialize`/`C_Finalize`).
//! Sessions have a mutex each; the object table and each slot's key cache
//! have their own. No lock is held across a network call except a session's
//! own mutex (a session is used by one thread at a time) and a slot's cache
//! refresh lock (so that many threads do not list the same keys at once).
//!
//! The pieces, each with its invariants at its top:
//!
//! | file | what |
//! |---|---|
//! | `mod.rs` | [`Module`]: the state of one initialized module, and how it is made |
//! | `state.rs` | the process-wide module: `C_Initialize`, `C_Finalize`, fork |
//! | `io.rs` | network calls to an enclave: per-thread runtimes, failover |
//! | `slot.rs` | slots (enclaves) and their tokens |
//! | `session.rs` | session handles, their mode and operation state |
//! | `login.rs` | `C_Login`, `C_Logout` and API keys as PINs |
//! | `objects.rs` | the object cache: handles of cluster keys and session objects, search |
//! | `keys.rs` | creating, generating, importing and destroying keys |
//! | `stored.rs` | certificates and data objects; setting and copying attributes |
//!
//! (`ops.rs` adds the cryptographic operations to [`Module`].)

mod coalesce;
mod io;
mod keys;
mod login;
mod objects;
mod session;
mod slot;
mod state;
mod stored;

pub use session::Session;
pub use slot::{slot_id, Slot};
pub use state::{finalize, get, initialize};

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use cryptoki_sys::*;
use parking_lot::{Mutex, RwLock};

use crate::config::Config;
use crate::error::{Error, Result};
use crate::object::KeyObject;

static NEXT_MODULE_ID: AtomicU64 = AtomicU64::new(1);

/// The module between `C_Initialize` and `C_Finalize`.
pub struct Module {
    id: u64,
    pub cfg: Config,
    rt: Option<tokio::runtime::Runtime>,
    pub slots: Vec<Slot>,
    /// Open sessions, with their slot and read-write flag readable without
    /// taking a session's lock (held during its network calls).
    sessions: RwLock<HashMap<CK_SESSION_HANDLE, session::SessionEntry>>,
    objects: RwLock<HashMap<CK_OBJECT_HANDLE, Arc<KeyObject>>>,
    next_handle: AtomicU64,
}

impl Drop for Module {
    fn drop(&mut self) {
        // Never blocks, so that it is safe from any thread, even one inside
        // another Tokio runtime.
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

impl Module {
    fn new(cfg: Config, no_threads: bool) -> Result<Self> {
        let rt = if no_threads {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
        } else {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_name("kms-pkcs11")
                .enable_all()
                .build()
        }
        .map_err(|e| Error::Config(format!("cannot start the I/O runtime: {e}")))?;
        let client = match &cfg.api_key {
            Some(k) => Some(io::SlotClient {
                epoch: 0,
                shared: io::make_client(&rt, &cfg, k)?,
                combiner: Default::default(),
            }),
            None => None,
        };
        let enclaves = match (&cfg.enclaves, &client) {
            (Some(list), _) => list.clone(),
            (None, Some(c)) => {
                let c = c.shared.clone();
                io::run_blocking(&rt, io::list_enclaves(&c)).map_err(|e| {
                    Error::Config(format!(
                        "cannot list the enclaves ({e}); name them with 'enclaves' in the \
                         configuration file or KMS_ENCLAVE"
                    ))
                })?
            }
            (None, None) => unreachable!("checked by Config"),
        };
        let mut enclaves = enclaves;
        enclaves.sort();
        enclaves.dedup();
        let mut slots: Vec<Slot> = Vec::with_capacity(enclaves.len());
        for e in enclaves {
            let mut id = slot_id(&e);
            while slots.iter().any(|s| s.id == id) {
                id = (id + 1) & 0x7fff_ffff;
            }
            slots.push(Slot {
                id,
                enclave: e,
                client: RwLock::new(client.clone()),
                login: Mutex::new(None),
                cache: Mutex::new(objects::KeyCache::default()),
            });
        }
        Ok(Self {
            id: NEXT_MODULE_ID.fetch_add(1, Ordering::Relaxed),
            cfg,
            rt: Some(rt),
            slots,
            sessions: RwLock::new(HashMap::new()),
            objects: RwLock::new(HashMap::new()),
            next_handle: AtomicU64::new(1),
        })
    }

    fn rt(&self) -> &tokio::runtime::Runtime {
        self.rt.as_ref().expect("runtime lives until drop")
    }

    fn handle(&self) -> CK_ULONG {
        self.next_handle.fetch_add(1, Ordering::Relaxed) as CK_ULONG
    }
}
