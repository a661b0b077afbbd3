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

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use cryptoki_sys::*;
use kms_client::{proto, ApiKey, Client, ClientConfig, Command};
use parking_lot::{Mutex, RwLock};

use crate::config::{Config, LoginMode};
use crate::error::{Error, Result};
use crate::log::Level;
use crate::object::{Attr, AttrOut, KeyObject, KeyTemplate};
use crate::ops::Ops;

/// The module state: `None` before `C_Initialize` and after `C_Finalize`;
/// with the pid that initialized it, so that a forked child sees itself
/// uninitialized and must call `C_Initialize` again.
static STATE: RwLock<Option<(u32, Arc<Module>)>> = RwLock::new(None);

/// The initialized module (`CKR_CRYPTOKI_NOT_INITIALIZED` otherwise).
pub fn get() -> Result<Arc<Module>> {
    match &*STATE.read() {
        Some((pid, m)) if *pid == std::process::id() => Ok(m.clone()),
        _ => Err(Error::Ck(CKR_CRYPTOKI_NOT_INITIALIZED)),
    }
}

/// `C_Initialize`: reads the configuration ([`Config::load`]: the file named
/// by `KMS_PKCS11_CONFIG`, else the `KMS_*` variables), starts the runtime,
/// and lists the slots. A bad configuration is [`Error::Config`], which
/// `C_Initialize` returns as `CKR_GENERAL_ERROR`, with one log line.
///
/// `no_threads`: the application passed `CKF_LIBRARY_CANT_CREATE_OS_THREADS`
/// (p11-kit and GnuTLS always do): the shared runtime then has no worker
/// threads of its own (calls do their I/O on the caller's thread anyway).
pub fn initialize(no_threads: bool) -> Result<()> {
    let mut st = STATE.write();
    if let Some((pid, old)) = st.take() {
        if pid == std::process::id() {
            *st = Some((pid, old));
            return Err(Error::Ck(CKR_CRYPTOKI_ALREADY_INITIALIZED));
        }
        // A forked child: the parent's runtime threads do not exist here, and
        // its connections belong to the parent. Leak the state rather than
        // run destructors that would wait for threads or touch sockets.
        std::mem::forget(old);
    }
    let cfg = Config::load().inspect_err(|e| crate::log!(Level::Error, "C_Initialize: {e}"))?;
    crate::log::configure(cfg.log_level, cfg.log_file.as_deref());
    let m = Module::new(cfg, no_threads)
        .inspect_err(|e| crate::log!(Level::Error, "C_Initialize: {e}"))?;
    crate::log!(
        Level::Info,
        "initialized from {}: {} server(s), {} slot(s)",
        m.cfg.source,
        m.cfg.endpoints.len(),
        m.slots.len()
    );
    *st = Some((std::process::id(), Arc::new(m)));
    Ok(())
}

/// `C_Finalize`.
pub fn finalize() -> Result<()> {
    let mut st = STATE.write();
    match st.take() {
        Some((pid, m)) if pid == std::process::id() => {
            drop(st);
            m.close_all();
            drop(m);
            Ok(())
        }
        Some((_, m)) => {
            std::mem::forget(m);
            Err(Error::Ck(CKR_CRYPTOKI_NOT_INITIALIZED))
        }
        None => Err(Error::Ck(CKR_CRYPTOKI_NOT_INITIALIZED)),
    }
}

/// One slot: an enclave of the cluster.
pub struct Slot {
    pub id: CK_SLOT_ID,
    pub enclave: String,
    /// The credentials of this slot: the configured API key, or (login =
    /// "api-key") the one given as PIN at `C_Login`.
    client: RwLock<Option<SlotClient>>,
    /// Who is logged in to the token (`CKU_USER`, `CKU_SO`), if anyone.
    login: Mutex<Option<CK_USER_TYPE>>,
    /// Cluster keys by name, and when they were listed.
    cache: Mutex<KeyCache>,
}

/// A slot's client, numbered so that per-thread clients made from an older
/// login are not used after a new one.
#[derive(Clone)]
struct SlotClient {
    epoch: u64,
    /// A client on the module's shared runtime (for callers that are inside
    /// a Tokio runtime themselves, and for setup). Per-thread clients are
    /// made from it and share its record of failed servers.
    shared: Client,
}

/// Per-thread I/O state: a current-thread runtime and the clients (with
/// their kept-alive connections) of the calling thread, so that a call does
/// its network I/O on the caller's own thread with no hand-off to another
/// thread. Belongs to one module instance (`module_id`) in one process.
struct Local {
    module_id: u64,
    pid: u32,
    rt: tokio::runtime::Runtime,
    /// By login epoch (0: the configured API key, shared by every slot).
    clients: HashMap<u64, Client>,
}

thread_local! {
    static LOCAL: std::cell::RefCell<Option<Local>> = const { std::cell::RefCell::new(None) };
}

static NEXT_MODULE_ID: AtomicU64 = AtomicU64::new(1);
static NEXT_EPOCH: AtomicU64 = AtomicU64::new(1);

#[derive(Default)]
struct KeyCache {
    fetched: Option<Instant>,
    keys: BTreeMap<String, CK_OBJECT_HANDLE>,
}

/// An open session.
pub struct Session {
    pub slot: usize,
    pub rw: bool,
    pub ops: Ops,
    /// Results of `C_FindObjectsInit` not yet returned.
    pub found: Option<Vec<CK_OBJECT_HANDLE>>,
}

struct SessionEntry {
    slot: usize,
    rw: bool,
    session: Arc<Mutex<Session>>,
}

/// The module between `C_Initialize` and `C_Finalize`.
pub struct Module {
    id: u64,
    pub cfg: Config,
    rt: Option<tokio::runtime::Runtime>,
    pub slots: Vec<Slot>,
    /// Open sessions, with their slot and read-write flag readable without
    /// taking a session's lock (held during its network calls).
    sessions: RwLock<HashMap<CK_SESSION_HANDLE, SessionEntry>>,
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

/// A stable slot id for an enclave: FNV-1a of its name, 31 bits.
pub fn slot_id(enclave: &str) -> CK_SLOT_ID {
    let mut h: u32 = 0x811c_9dc5;
    for b in enclave.bytes() {
        h ^= b as u32;
        h = h.wrapping_mul(0x0100_0193);
    }
    (h & 0x7fff_ffff) as CK_SLOT_ID
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
            Some(k) => Some(SlotClient {
                epoch: 0,
                shared: make_client(&rt, &cfg, k)?,
            }),
            None => None,
        };
        let enclaves = match (&cfg.enclaves, &client) {
            (Some(list), _) => list.clone(),
            (None, Some(c)) => {
                let c = c.shared.clone();
                run_blocking(&rt, list_enclaves(&c)).map_err(|e| {
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
                cache: Mutex::new(KeyCache::default()),
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

    // ---- network ----

    /// Runs a future on the module's runtime from a caller's thread (or, if
    /// the caller is itself inside a Tokio runtime, from a scoped thread).
    fn block_on<F: std::future::Future + Send>(&self, f: F) -> F::Output
    where
        F::Output: Send,
    {
        run_blocking(self.rt(), f)
    }

    /// Sends one command to the slot's enclave, with failover: the client
    /// fails over on connection errors; a request cut off after it was sent
    /// is retried on another server too, since every command the module
    /// sends for a crypto operation is a read.
    pub fn call<Req, Resp>(&self, slot: usize, cmd: Command, req: &Req) -> Result<Resp>
    where
        Req: prost::Message + Sync,
        Resp: prost::Message + Default + Send,
    {
        let s = &self.slots[slot];
        let sc = s
            .client
            .read()
            .clone()
            .ok_or(Error::Ck(CKR_USER_NOT_LOGGED_IN))?;
        let retries = if cmd.is_write() {
            0
        } else {
            self.cfg.endpoints.len()
        };
        let enclave = s.enclave.as_str();
        let send = |client: Client| async move {
            let mut attempt = 0;
            loop {
                match client.call::<Req, Resp>(Some(enclave), cmd, req).await {
                    Err(kms_client::Error::Interrupted(e)) if attempt < retries => {
                        crate::log!(Level::Info, "{cmd}: {e}; retrying on another server");
                        attempt += 1;
                    }
                    r => return r,
                }
            }
        };
        let r = if self.cfg.shared_io || tokio::runtime::Handle::try_current().is_ok() {
            // The caller is inside a Tokio runtime (no block_on there), or
            // the diagnostic switch asks for the shared runtime.
            self.block_on(send(sc.shared.clone()))
        } else {
            self.on_local(&sc, send)?
        };
        r.map_err(|e| {
            // A refusal of the caller's input or rights is the application's
            // business (Info); an unreachable or failing cluster is not.
            let level = match e.status() {
                Some(400..=499) => Level::Info,
                _ => Level::Warn,
            };
            crate::log!(level, "{cmd} in enclave '{enclave}': {e}");
            Error::Remote(e)
        })
    }

    /// Runs `f(client)` on the calling thread's own runtime, with that
    /// thread's client for the slot's login (made on first use).
    fn on_local<F, Fut>(&self, sc: &SlotClient, f: F) -> Result<Fut::Output>
    where
        F: FnOnce(Client) -> Fut,
        Fut: std::future::Future,
    {
        LOCAL.with(|cell| {
            let mut cell = cell.borrow_mut();
            let pid = std::process::id();
            if cell
                .as_ref()
                .is_some_and(|l| l.module_id != self.id || l.pid != pid)
            {
                let old = cell.take().expect("checked");
                if old.pid == pid {
                    drop(old);
                } else {
                    // Inherited through fork: the sockets are the parent's.
                    std::mem::forget(old);
                }
            }
            if cell.is_none() {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| {
                        crate::log!(Level::Error, "cannot start a per-thread runtime: {e}");
                        Error::Ck(CKR_DEVICE_ERROR)
                    })?;
                *cell = Some(Local {
                    module_id: self.id,
                    pid,
                    rt,
                    clients: HashMap::new(),
                });
            }
            let local = cell.as_mut().expect("set above");
            let client = match local.clients.get(&sc.epoch) {
                Some(c) => c.clone(),
                None => {
                    // Clients of logins that ended are never asked for again.
                    if local.clients.len() >= 16 {
                        local.clients.clear();
                    }
                    let c = {
                        let _g = local.rt.enter();
                        sc.shared.with_own_connections()
                    };
                    local.clients.insert(sc.epoch, c.clone());
                    c
                }
            };
            Ok(local.rt.block_on(f(client)))
        })
    }

    // ---- slots ----

    /// The index of a slot by id.
    pub fn slot(&self, id: CK_SLOT_ID) -> Result<usize> {
        self.slots
            .iter()
            .position(|s| s.id == id)
            .ok_or(Error::Ck(CKR_SLOT_ID_INVALID))
    }

    /// The `CK_TOKEN_INFO` flags of every token.
    pub fn token_flags(&self) -> CK_FLAGS {
        let mut f = CKF_TOKEN_INITIALIZED | CKF_RNG | CKF_USER_PIN_INITIALIZED;
        if self.cfg.login == LoginMode::ApiKey {
            f |= CKF_LOGIN_REQUIRED;
        }
        f
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

    // ---- sessions ----

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

    fn close_all(&self) {
        for i in 0..self.slots.len() {
            self.close_all_sessions(i);
        }
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

    // ---- login ----

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
        if self.cfg.login == LoginMode::ApiKey {
            let text = std::str::from_utf8(pin).map_err(|_| Error::Ck(CKR_PIN_INCORRECT))?;
            let key = ApiKey::parse(text.trim()).map_err(|_| Error::Ck(CKR_PIN_INCORRECT))?;
            let shared = make_client(self.rt(), &self.cfg, &key)?;
            *s.client.write() = Some(SlotClient {
                epoch: NEXT_EPOCH.fetch_add(1, Ordering::Relaxed),
                shared,
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

    fn logout_slot(&self, slot: usize) {
        let s = &self.slots[slot];
        *s.login.lock() = None;
        if self.cfg.login == LoginMode::ApiKey {
            *s.client.write() = None;
            let mut c = s.cache.lock();
            let gone: Vec<_> = c.keys.values().copied().collect();
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

    // ---- objects ----

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
        let mut keys = Vec::new();
        let mut continue_at = String::new();
        for _ in 0..100_000 {
            let page: Result<proto::ListKeysResponse> = self.call(
                slot,
                Command::KeyList,
                &proto::ListRequest {
                    prefix: String::new(),
                    continue_at: continue_at.clone(),
                    limit: 0,
                },
            );
            let page = match page {
                Ok(p) => p,
                // An identity whose policy does not allow KEY:LIST sees no
                // cluster keys, but can still use its session keys.
                Err(Error::Remote(e)) if e.status() == Some(403) => {
                    crate::log!(
                        Level::Warn,
                        "enclave '{}': not allowed to list keys; no cluster keys are shown",
                        s.enclave
                    );
                    keys.clear();
                    break;
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
            keys.extend(page.keys);
            if page.continue_at.is_empty() {
                break;
            }
            continue_at = page.continue_at;
        }
        let private = self.cfg.login == LoginMode::ApiKey;
        let mut objects = self.objects.write();
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

    /// Adds a cluster key this module just created.
    pub fn add_cluster_key(&self, slot: usize, name: &str) -> CK_OBJECT_HANDLE {
        let s = &self.slots[slot];
        let mut cache = s.cache.lock();
        if let Some(h) = cache.keys.get(name) {
            return *h;
        }
        let h = self.handle();
        let private = self.cfg.login == LoginMode::ApiKey;
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
    pub fn key(&self, s: &Session, h: CK_OBJECT_HANDLE) -> Result<Arc<KeyObject>> {
        self.object(s, h).map_err(|e| match e {
            Error::Ck(CKR_OBJECT_HANDLE_INVALID) => Error::Ck(CKR_KEY_HANDLE_INVALID),
            e => e,
        })
    }

    pub fn find_init(&self, sh: CK_SESSION_HANDLE, template: &[Attr]) -> Result<()> {
        let sess = self.session(sh)?;
        let mut s = sess.lock();
        if s.found.is_some() {
            return Err(Error::Ck(CKR_OPERATION_ACTIVE));
        }
        // Only secret keys exist: a search for another class finds nothing
        // without asking the cluster.
        let wants_token = !template.iter().any(|a| {
            (a.ty == CKA_TOKEN && a.value == [0])
                || (a.ty == CKA_CLASS && a.value != CKO_SECRET_KEY.to_ne_bytes())
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
        Ok(o.value_len + o.label.len() + o.id.len() + 64)
    }

    /// `C_CreateObject`: a session secret key from its value, or a cluster
    /// key imported from its 32 bytes (`CKA_TOKEN` true).
    pub fn create_object(
        &self,
        sh: CK_SESSION_HANDLE,
        template: &[Attr],
    ) -> Result<CK_OBJECT_HANDLE> {
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

    /// `C_DestroyObject`: a session object, or a cluster key (KEY:DELETE of
    /// every version).
    pub fn destroy_object(&self, sh: CK_SESSION_HANDLE, h: CK_OBJECT_HANDLE) -> Result<()> {
        let sess = self.session(sh)?;
        let s = sess.lock();
        let o = self.object(&s, h)?;
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
            self.slots[s.slot].cache.lock().keys.remove(name);
        }
        self.objects.write().remove(&h);
        Ok(())
    }

    /// Fills `buf` with random bytes from the operating system.
    pub fn random(&self, sh: CK_SESSION_HANDLE, buf: &mut [u8]) -> Result<()> {
        self.session(sh)?;
        rand::RngCore::try_fill_bytes(&mut rand::rngs::OsRng, buf)
            .map_err(|_| Error::Ck(CKR_DEVICE_ERROR))
    }
}

/// Runs a future on `rt` from a caller's thread, or, if the caller is itself
/// inside a Tokio runtime (where `block_on` is not allowed), from a scoped
/// thread.
fn run_blocking<F: std::future::Future + Send>(rt: &tokio::runtime::Runtime, f: F) -> F::Output
where
    F::Output: Send,
{
    if tokio::runtime::Handle::try_current().is_ok() {
        std::thread::scope(|s| {
            s.spawn(|| rt.block_on(f))
                .join()
                .unwrap_or_else(|p| std::panic::resume_unwind(p))
        })
    } else {
        rt.block_on(f)
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

fn s_login(s: &Slot) -> Option<CK_USER_TYPE> {
    *s.login.lock()
}

/// The cluster key name of a new token key: its label, else its id as
/// UTF-8, else a random name.
fn cluster_key_name(t: &KeyTemplate) -> Result<String> {
    let raw = t
        .label
        .as_ref()
        .filter(|l| !l.is_empty())
        .or(t.id.as_ref().filter(|l| !l.is_empty()));
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

fn make_client(rt: &tokio::runtime::Runtime, cfg: &Config, key: &ApiKey) -> Result<Client> {
    let _g = rt.enter();
    Client::new(ClientConfig {
        endpoints: cfg.endpoints.clone(),
        api_key: key.clone(),
        trust: cfg.trust.clone(),
        timeout: cfg.timeout,
    })
    .map_err(|e| Error::Config(format!("client: {e}")))
}

async fn list_enclaves(c: &Client) -> Result<Vec<String>, kms_client::Error> {
    let mut out = Vec::new();
    let mut continue_at = String::new();
    for _ in 0..100_000 {
        let page: proto::ListEnclavesResponse = c
            .call(
                None,
                Command::EnclaveList,
                &proto::ListRequest {
                    prefix: String::new(),
                    continue_at: continue_at.clone(),
                    limit: 0,
                },
            )
            .await?;
        out.extend(page.enclaves.into_iter().map(|e| e.name));
        if page.continue_at.is_empty() {
            break;
        }
        continue_at = page.continue_at;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_ids_are_stable() {
        assert_eq!(slot_id("enclave-1"), slot_id("enclave-1"));
        assert_ne!(slot_id("enclave-1"), slot_id("enclave-2"));
        assert!(slot_id("x") <= 0x7fff_ffff);
    }

    #[test]
    fn not_initialized() {
        assert_eq!(
            get().err().map(|e| e.rv()),
            Some(CKR_CRYPTOKI_NOT_INITIALIZED)
        );
        assert_eq!(finalize().unwrap_err().rv(), CKR_CRYPTOKI_NOT_INITIALIZED);
    }
}
