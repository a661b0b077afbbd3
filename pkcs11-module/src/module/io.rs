//! Network I/O: sending a command to a slot's enclave.
//!
//! Each thread that makes a cluster call gets its own current-thread
//! runtime and client (kept-alive connections per thread), so a call needs
//! no hand-off between threads. A caller that is itself inside a Tokio
//! runtime (where `block_on` is not allowed), or a configuration with
//! `shared_io`, uses the module's shared runtime instead, from a scoped
//! thread if need be ([`run_blocking`]).
//!
//! Invariants:
//! - A thread's [`Local`] belongs to one module instance (`module_id`) in
//!   one process (`pid`). One of another instance is dropped and remade;
//!   one inherited through fork is leaked, never dropped (its sockets are
//!   the parent's).
//! - Per-thread clients are keyed by the login epoch of the
//!   [`SlotClient`] they were made from; epochs are never reused, so a
//!   client of an ended login is never used again. A thread keeps at most
//!   16 of them.
//! - Only reads are retried on another server after a request was cut off
//!   (`Interrupted`): a write is sent at most once. Connection failures
//!   before sending fail over inside the client.
//! - No module lock is held here: [`Module::call`] clones the slot's
//!   client under its read lock and releases it before any I/O.
//! - Reads from concurrent threads to one slot under one login are
//!   coalesced into batched requests (`coalesce.rs`); writes never are.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};

use cryptoki_sys::*;
use kms_client::{proto, ApiKey, Client, ClientConfig, Command};

use super::coalesce::{Combiner, Frame, Outcome};
use super::Module;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::log::Level;

/// A slot's client, numbered so that per-thread clients made from an older
/// login are not used after a new one.
#[derive(Clone)]
pub(super) struct SlotClient {
    pub(super) epoch: u64,
    /// A client on the module's shared runtime (for callers that are inside
    /// a Tokio runtime themselves, and for setup). Per-thread clients are
    /// made from it and share its record of failed servers.
    pub(super) shared: Client,
    /// The queue that coalesces this login's concurrent reads.
    pub(super) combiner: Arc<Combiner<kms_client::Error>>,
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

/// Login epochs: 0 is the configured API key; each `C_Login` (login =
/// "api-key") takes the next, never reused.
pub(super) static NEXT_EPOCH: AtomicU64 = AtomicU64::new(1);

impl Module {
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
        } else if cmd.is_write() || !self.cfg.coalesce {
            self.on_local(&sc, send)?
        } else {
            let batch = |frames: &[Frame<'_>]| {
                let mut body = BytesMut::new();
                for f in frames {
                    body.put_u16(f.cmd);
                    body.put_u32(f.payload.len() as u32);
                    body.extend_from_slice(f.payload);
                }
                let body = body.freeze();
                self.on_local(&sc, |client| async move {
                    let mut attempt = 0;
                    loop {
                        match client.send(Some(enclave), body.clone()).await {
                            Err(kms_client::Error::Interrupted(e)) if attempt < retries => {
                                crate::log!(
                                    Level::Info,
                                    "{cmd} (a batch): {e}; retrying on another server"
                                );
                                attempt += 1;
                            }
                            r => return r.and_then(|b| split_frames(&b)),
                        }
                    }
                })
                .unwrap_or_else(|e| Err(kms_client::Error::Transport(e.to_string())))
            };
            match sc.combiner.call(cmd as u16, req.encode_to_vec(), batch) {
                Outcome::Done(payload) => Resp::decode(payload)
                    .map_err(|e| kms_client::Error::Protocol(format!("{cmd}: {e}"))),
                Outcome::Failed(e) => Err(e),
                // Its batch failed as a whole: this call's own answer.
                Outcome::Alone => self.on_local(&sc, send)?,
            }
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
}

/// The frames of a response body, as (command id, payload).
fn split_frames(body: &Bytes) -> std::result::Result<Vec<(u16, Bytes)>, kms_client::Error> {
    let mut out = Vec::new();
    for f in kms_client::frame::frames(body) {
        let f = f.map_err(|e| kms_client::Error::Protocol(e.to_string()))?;
        out.push((f.id, body.slice_ref(f.payload)));
    }
    Ok(out)
}

/// Runs a future on `rt` from a caller's thread, or, if the caller is itself
/// inside a Tokio runtime (where `block_on` is not allowed), from a scoped
/// thread.
pub(super) fn run_blocking<F: std::future::Future + Send>(
    rt: &tokio::runtime::Runtime,
    f: F,
) -> F::Output
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

pub(super) fn make_client(
    rt: &tokio::runtime::Runtime,
    cfg: &Config,
    key: &ApiKey,
) -> Result<Client> {
    let _g = rt.enter();
    Client::new(ClientConfig {
        endpoints: cfg.endpoints.clone(),
        api_key: key.clone(),
        trust: cfg.trust.clone(),
        timeout: cfg.timeout,
    })
    .map_err(|e| Error::Config(format!("client: {e}")))
}

pub(super) async fn list_enclaves(c: &Client) -> Result<Vec<String>, kms_client::Error> {
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
