//! The process-wide module: `C_Initialize`, `C_Finalize`, and fork.
//!
//! Invariants:
//! - [`STATE`] is `None` before `C_Initialize` and after `C_Finalize`, else
//!   the one [`Module`] with the pid of the process that initialized it.
//!   [`get`] hands out the module only to that process: a forked child sees
//!   itself uninitialized (`CKR_CRYPTOKI_NOT_INITIALIZED`) until it calls
//!   `C_Initialize` again.
//! - A module inherited through fork is leaked (`mem::forget`), never
//!   dropped: its runtime threads do not exist in the child and its
//!   connections belong to the parent.
//! - The lock is taken for writing only by `C_Initialize` and
//!   `C_Finalize`, and for reading only to clone the `Arc`: no lock here is
//!   held during a call. `C_Finalize` closes the sessions after releasing
//!   it; calls still running keep their `Arc` and finish on the old module.

use std::sync::Arc;

use cryptoki_sys::*;
use parking_lot::RwLock;

use super::Module;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::log::Level;

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_initialized() {
        assert_eq!(
            get().err().map(|e| e.rv()),
            Some(CKR_CRYPTOKI_NOT_INITIALIZED)
        );
        assert_eq!(finalize().unwrap_err().rv(), CKR_CRYPTOKI_NOT_INITIALIZED);
    }
}
